#!/bin/sh
# gofmt, go vet and staticcheck over the Go modules (bindings/go and its nested modules). staticcheck is
# installed into the build tree with `go install` (from the Go module proxy) the first time. Skipped
# (exit 77) without Go, or when staticcheck cannot be installed (no network), saying so.
set -eu
build=$(cd "$1" && pwd)
src=$2
staticcheck_version=v0.8.2 # staticcheck 2026.2.2
export PATH="$PATH:/usr/local/go/bin:/usr/lib/go/bin"
if ! command -v go >/dev/null 2>&1; then
  echo "SKIPPED: Go is not installed"
  exit 77
fi
export PKG_CONFIG_PATH="$build/pkgconfig" GOBIN="$build/gobin"
unformatted=$(gofmt -l "$src/bindings/go")
if [ -n "$unformatted" ]; then
  echo "gofmt would change these files (run gofmt -w):"
  echo "$unformatted"
  exit 1
fi
modules=$(cd "$src/bindings/go" && find . -name go.mod -exec dirname {} \; | sort)
for mod in $modules; do
  (cd "$src/bindings/go/$mod" && echo "== go vet $mod" && go vet ./...)
done
if [ ! -x "$GOBIN/staticcheck" ] && ! go install "honnef.co/go/tools/cmd/staticcheck@$staticcheck_version"; then
  echo "SKIPPED: staticcheck could not be installed (go install honnef.co/go/tools/cmd/staticcheck@$staticcheck_version)"
  exit 77
fi
for mod in $modules; do
  (cd "$src/bindings/go/$mod" && echo "== staticcheck $mod" && "$GOBIN/staticcheck" ./...)
done

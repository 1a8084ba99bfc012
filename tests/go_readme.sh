#!/bin/sh
# Follows the README's Go section as a user outside this repository would: installs the library into a
# fresh prefix, then builds and runs every ```go block of README.md as its own module's main.go, with the
# environment the README gives (absolute PKG_CONFIG_PATH, an rpath through CGO_LDFLAGS, a replace
# directive pointing at this checkout). Blocks that import purecbslot are built with CGO_ENABLED=0 and
# run with LD_LIBRARY_PATH. Skipped (exit 77) without Go or pkg-config.
set -eu
build=$(cd "$1" && pwd)
src=$2
export PATH="$PATH:/usr/local/go/bin:/usr/lib/go/bin"
for tool in go pkg-config; do
  if ! command -v $tool >/dev/null 2>&1; then
    echo "SKIPPED: $tool is not installed"
    exit 77
  fi
done
work="$build/go-readme"
rm -rf "$work"
mkdir -p "$work"
. "$src/tests/install/prefix.sh"
install_prefix "$build" "$work/prefix"
export GOFLAGS=-count=1
# every ```go block, one file each
awk -v dir="$work" '
  /^```go$/ { n++; file = sprintf("%s/snippet%d.go", dir, n); inblock = 1; next }
  /^```/ && inblock { inblock = 0; close(file); next }
  inblock { print > file }
' "$src/README.md"
count=0
for snippet in "$work"/snippet*.go; do
  [ -e "$snippet" ] || break
  count=$((count + 1))
  name=$(basename "$snippet" .go)
  mod="$work/$name"
  mkdir -p "$mod"
  cp "$snippet" "$mod/main.go"
  echo "== $name: $(sed -n 1p "$snippet")"
  cd "$mod"
  go mod init "example.com/$name" >/dev/null 2>&1
  go mod edit -replace "github.com/cbslot/cbslot/bindings/go=$src/bindings/go"
  if grep -q purecbslot main.go; then
    go mod edit -replace "github.com/cbslot/cbslot/bindings/go/purecbslot=$src/bindings/go/purecbslot"
    go mod tidy
    CGO_ENABLED=0 go build -o prog .
    LD_LIBRARY_PATH="$libdir" ./prog
  else
    go mod tidy
    CGO_ENABLED=1 CGO_LDFLAGS="-Wl,-rpath,$libdir" go build -o prog .
    ./prog
  fi
  cd "$work"
done
if [ "$count" -lt 2 ]; then
  echo "expected at least 2 Go programs in README.md, found $count"
  exit 1
fi
echo "$count README Go programs built and ran"

#!/bin/sh
# Runs the Go binding's tests (bindings/go): under GOGC=1 and cgo's strict pointer checks
# (GODEBUG=cgocheck=2 before Go 1.21; GOEXPERIMENT=cgocheck2 since, when the GODEBUG form was removed),
# then again under the race detector. (The README's programs are built and run by go_readme.sh.) Skipped (exit 77) when Go is not installed.
set -eu
build=$(cd "$1" && pwd)
src=$2
export PATH="$PATH:/usr/local/go/bin:/usr/lib/go/bin"
if ! command -v go >/dev/null 2>&1; then
  echo "SKIPPED: Go is not installed (the Go binding needs Go 1.19+: sudo apt-get install -y golang-go)"
  exit 77
fi
export PKG_CONFIG_PATH="$build/pkgconfig" CGO_ENABLED=1 GOFLAGS=-count=1
cd "$src/bindings/go"
minor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
if [ "${minor:-0}" -ge 21 ]; then strict=GOEXPERIMENT=cgocheck2; else strict=GODEBUG=cgocheck=2; fi
env GOGC=1 "$strict" go test -v ./...
go test -race -short ./...

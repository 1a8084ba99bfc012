#!/bin/sh
# Runs the no-cgo Go binding's tests (bindings/go/purecbslot, through purego) with CGO_ENABLED=0 and
# GOGC=1, then runs its benchmarks a few times each. Arguments: the cmake build directory, the source
# directory. Skipped (exit 77) without Go 1.25+ (purego v0.11.3 needs it).
set -eu
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
export PATH="$PATH:/usr/local/go/bin:/usr/lib/go/bin"
if ! command -v go >/dev/null 2>&1; then
  echo "SKIPPED: Go is not installed (the no-cgo binding needs Go 1.25+)"
  exit 77
fi
version=$(go env GOVERSION)
minor=$(echo "$version" | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
if [ "${minor:-0}" -lt 25 ]; then
  echo "SKIPPED: $version is older than go1.25, which purego needs"
  exit 77
fi
# libcbslot.so.0 is found by the dynamic loader; cargo's output dir is named after the profile
lib="$build/cargo/release"
if [ ! -e "$lib/libcbslot.so.0" ] && [ -e "$build/cargo/debug/libcbslot.so.0" ]; then
  lib="$build/cargo/debug"
fi
export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" CGO_ENABLED=0 GOFLAGS=-count=1
cd "$src/bindings/go/purecbslot"
go vet ./...
GOGC=1 go test -v ./...
go test -run '^$' -bench . -benchtime 2000x ./...

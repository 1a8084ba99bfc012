#!/bin/sh
# What cbslot costs on disk: the installed libraries (no debug info), the separate debug info, and a C
# program linked statically against libcbslot.a (dynamic glibc, and fully static), stripped, with
# -ffunction-sections -Wl,--gc-sections. Usage: scripts/sizes.sh BUILD_DIR (built).
set -eu
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$src/tests/install/prefix.sh"
install_prefix "$build" "$work/p" debug
cflags="-O2 -ffunction-sections -fdata-sections -Wl,--gc-sections -s"
# shellcheck disable=SC2046,SC2086
cc $cflags "$src/tests/install/consumer.c" -o "$work/prog" $(pkg-config --cflags cbslot) "$libdir/libcbslot.a" \
   $(pkg-config --static --libs-only-l cbslot | sed 's/-lcbslot//')
# shellcheck disable=SC2046,SC2086
cc -static $cflags "$src/tests/install/consumer.c" -o "$work/prog_static" \
   $(pkg-config --static --cflags --libs cbslot) 2>/dev/null
"$work/prog" >/dev/null && "$work/prog_static" >/dev/null
size() { stat -c %s "$1" | awk '{ printf "%.2f MB (%d bytes)", $1 / 1e6, $1 }'; }
real=$(readlink -f "$libdir/libcbslot.so")
echo "| file | size |"
echo "|---|---|"
echo "| installed \`$(basename "$real")\` (no debug info) | $(size "$real") |"
echo "| its debug info, \`.debug/$(basename "$real").debug\` (component \`debug\`) | $(size "$libdir/.debug/$(basename "$real").debug") |"
echo "| installed \`libcbslot.a\` (no debug info) | $(size "$libdir/libcbslot.a") |"
echo "| C program with libcbslot.a, dynamic glibc, stripped, --gc-sections | $(size "$work/prog") |"
echo "| the same, fully static (\`cc -static\`) | $(size "$work/prog_static") |"

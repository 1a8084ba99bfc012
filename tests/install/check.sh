#!/bin/sh
# Installs the build tree into a scratch prefix, then builds and runs consumers against the installed tree
# only: with pkg-config (shared and --static) and with find_package(cbslot CONFIG).
set -eu
build=$1
here=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" >/dev/null
libdir=$(dirname "$(find "$prefix" -name cbslot.pc)")/..

echo "installed files:"; (cd "$prefix" && find . \( -type f -o -type l \) | sort | sed 's/^/  /')
real=$(readlink "$libdir/libcbslot.so")
[ -f "$libdir/$(readlink "$libdir/$real")" ] || { echo "FAIL: libcbslot.so link chain is broken"; exit 1; }

export PKG_CONFIG_PATH="$libdir/pkgconfig"
cc -Wall -Wextra -Wpedantic -Werror "$here/consumer.c" -o "$work/pc_shared" \
   $(pkg-config --cflags --libs cbslot) -Wl,-rpath,"$libdir"
"$work/pc_shared"
cc -Wall -Wextra -Wpedantic -Werror "$here/consumer.c" -o "$work/pc_static" \
   $(pkg-config --cflags cbslot) "$libdir/libcbslot.a" $(pkg-config --libs-only-other --libs-only-l --static cbslot | sed 's/-lcbslot//')
"$work/pc_static"
! ldd "$work/pc_static" | grep -q cbslot || { echo "FAIL: static consumer loads libcbslot.so"; exit 1; }

cmake -S "$here" -B "$work/cm" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/cm" >/dev/null
"$work/cm/consumer_shared"
"$work/cm/consumer_static"
echo "install_consumer: pkg-config (shared, static) and find_package (shared, static) consumers passed"

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

# a VDE3-style program: VDE3's header names from the installed compatibility directory, nothing else changed
cat > "$work/vde3_style.c" <<'C'
#include <vde3.h>
#include <vde3/context.h>
static void cb(int fd, short events, void *arg) { (void)fd; (void)events; (void)arg; }
int main(void) {
  event_cb f = cb;
  vde_context *ctx;
  if (vde_context_new(&ctx) != 0) return 1;
  struct timeval tv = {1, 0};
  void *t = vde_context_timeout_add(ctx, VDE_EV_PERSIST, &tv, f, 0); /* not initialised: NULL */
  vde_context_delete(ctx);
  return t == 0 ? 0 : 1;
}
C
cc -Wall -Wextra -Wpedantic -Werror -I"$(pkg-config --variable=includedir cbslot)/cbslot-vde3" "$work/vde3_style.c" \
   -o "$work/vde3_style" $(pkg-config --cflags --libs cbslot) -Wl,-rpath,"$libdir"
"$work/vde3_style"

cmake -S "$here" -B "$work/cm" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/cm" >/dev/null
"$work/cm/consumer_shared"
"$work/cm/consumer_static"
echo "install_consumer: pkg-config (shared, static), VDE3-style and find_package (shared, static) consumers passed"

#!/bin/sh
# Installs the build tree into a scratch prefix, then builds and runs consumers against the installed tree
# only: with pkg-config (shared, and fully static with `cc -static` and `pkg-config --static`) and with
# find_package(cbslot CONFIG) (shared, static, fully static). Checks that the installed libraries carry no
# debug info and that the `debug` component gives it back to gdb.
set -eu
build=$1
here=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
. "$here/prefix.sh"
install_prefix "$build" "$prefix"

echo "installed files:"; (cd "$prefix" && find . \( -type f -o -type l \) | sort | sed 's/^/  /')
real=$(readlink "$libdir/libcbslot.so")
[ -f "$libdir/$(readlink "$libdir/$real")" ] || { echo "FAIL: libcbslot.so link chain is broken"; exit 1; }

# a fully static program has no dynamic section (no interpreter, no DT_NEEDED)
fully_static() { readelf -d "$1" | grep -q "no dynamic section" || { echo "FAIL: $1 is not fully static"; exit 1; }; }
cc -Wall -Wextra -Wpedantic -Werror "$here/consumer.c" -o "$work/pc_shared" \
   $(pkg-config --cflags --libs cbslot) -Wl,-rpath,"$libdir"
"$work/pc_shared"
# fully static, the plain pkg-config way (glibc warns that getpwuid_r/getaddrinfo, which Rust's std links
# but cbslot never calls, would need glibc's shared libraries at run time)
cc -static -Wall -Wextra -Wpedantic -Werror "$here/consumer.c" -o "$work/pc_static" \
   $(pkg-config --static --cflags --libs cbslot) 2>"$work/static.log" || { cat "$work/static.log"; exit 1; }
grep -v "statically linked applications requires at runtime\|in function .std::" "$work/static.log" || true
fully_static "$work/pc_static"
for source in memfd file; do CBSLOT_TRAMPOLINES=$source "$work/pc_static"; done

# installed files: no debug info; the debug component is found by gdb through the debug link
for f in "$libdir/$(readlink "$libdir/$real")" "$libdir/libcbslot.a"; do
  if readelf -S "$f" | grep -q '\.debug_'; then echo "FAIL: $f carries debug info"; exit 1; fi
done
if command -v gdb >/dev/null 2>&1; then
  install_prefix "$build" "$prefix" debug
  gdb -batch -ex 'info line cb_handle_new' "$libdir/$(readlink "$libdir/$real")" 2>&1 | grep -q 'src/ffi/' ||
    { echo "FAIL: gdb finds no line information for the installed library with the debug component"; exit 1; }
  echo "gdb finds the debug component"
fi

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
"$work/cm/consumer_fully_static"
fully_static "$work/cm/consumer_fully_static"
! ldd "$work/cm/consumer_static" | grep -q cbslot || { echo "FAIL: static consumer loads libcbslot.so"; exit 1; }
echo "install_consumer: pkg-config (shared, fully static), VDE3-style and find_package (shared, static, fully static) consumers passed"

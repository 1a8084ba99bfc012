#!/bin/sh
# Only cb_* and vde_* symbols (and the two names of the GDB JIT interface) may be exported from the shared library, and the contract's functions must be;
# the header may only define names in cbslot's namespaces (cb_, CB_, CBSLOT_, vde_, VDE_).
set -eu
lib=$1
header=$2
# names the header defines: macros, typedef names, enumerators, functions (cbindgen's layout: one per line)
names=$(sed -n -e 's/^#define \([A-Za-z_0-9]*\).*/\1/p' \
               -e 's/^typedef .*(\*\([A-Za-z_0-9]*\)).*/\1/p' \
               -e 's/^typedef [^(]* \**\([A-Za-z_0-9]*\);$/\1/p' \
               -e 's/^} \([A-Za-z_0-9]*\);$/\1/p' \
               -e 's/^  \([A-Za-z_0-9]*\) = .*,$/\1/p' \
               -e '/^typedef/!s/^[A-Za-z].*[ *]\([A-Za-z_0-9]*\)(.*/\1/p' "$header" | sort -u)
[ "$(printf '%s\n' "$names" | grep -c .)" -ge 20 ] || { echo "FAIL: could not read the names in $header"; exit 1; }
badh=$(printf '%s\n' "$names" | grep -Ev '^(cb_|CB_|CBSLOT_|vde_|VDE_)' || true)
if [ -n "$badh" ]; then
  echo "FAIL: $header defines names outside cbslot's namespaces:"; printf '%s\n' "$badh"; exit 1
fi
syms=$(nm -D --defined-only "$lib" | awk '{print $3}')
bad=$(printf '%s\n' "$syms" | grep -Ev '^(cb_|vde_|__jit_debug_descriptor$|__jit_debug_register_code$)' || true)
if [ -n "$bad" ]; then
  echo "FAIL: $lib exports symbols outside cb_*/vde_*:"; printf '%s\n' "$bad"; exit 1
fi
for f in cb_status_str cb_last_error cb_version cb_handle_new cb_handle_get cb_handle_retain cb_handle_release \
         cb_register cb_unregister cb_unregister_wait cb_barrier cb_set_stale_handler cb_get_stats cb_set_limit \
         cb_set_watermark; do
  printf '%s\n' "$syms" | grep -qx "$f" || { echo "FAIL: $f is not exported"; exit 1; }
done
soname=$(objdump -p "$lib" | awk '/SONAME/ {print $2}')
readelf -d "$lib" | grep -q 'FLAGS_1.*NODELETE' || { echo "FAIL: not linked -z nodelete"; exit 1; }
case $soname in libcbslot.so.[0-9]*) ;; *) echo "FAIL: SONAME is '$soname'"; exit 1;; esac
echo "exported: $(printf '%s\n' "$syms" | wc -l) symbols, all cb_*/vde_*; SONAME $soname"
echo "header: $(printf '%s\n' "$names" | wc -l) names, all in cbslot's namespaces"

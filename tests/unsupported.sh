#!/bin/sh
# The library as built for a platform without callback entries or the built-in loop (forced here with
# -DCBSLOT_FORCE_UNSUPPORTED=ON): the Rust API test, then the C, C++ and gdb tests in a build tree of their
# own. What the platform lacks must be reported Skipped, never Failed; what it has must pass; the demo must
# say what it skipped and exit 0.
#   sh tests/unsupported.sh <source-dir> <scratch-dir>
set -u
[ $# -eq 2 ] || { echo "usage: sh tests/unsupported.sh <source-dir> <scratch-dir>" >&2; exit 2; }
src=$(cd "$1" && pwd) || exit 1
mkdir -p "$2" || exit 1
scratch=$(cd "$2" && pwd) || exit 1
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
unset CBSLOT_UPDATE_HEADER
fail() { echo "FAIL: $*"; exit 1; }

echo "== the Rust API on the unsupported build"
CARGO_TARGET_DIR="$scratch/cargo" RUSTFLAGS="--cfg cbslot_force_unsupported -D warnings" \
  cargo test --locked --release --test unsupported --manifest-path "$src/Cargo.toml" || fail "cargo test --test unsupported"

echo "== configure and build"
cmake -S "$src" -B "$scratch/build" -DCBSLOT_FORCE_UNSUPPORTED=ON -DCBSLOT_CARGO_TARGET_DIR="$scratch/cargo" \
  >"$scratch/configure.log" 2>&1 || { cat "$scratch/configure.log"; fail "configure"; }
grep '^-- cbslot:' "$scratch/configure.log"
grep -q 'built-in loop: OFF' "$scratch/configure.log" || fail "configure did not report the missing parts"
RUSTFLAGS="-D warnings" cmake --build "$scratch/build" -j2 >"$scratch/build.log" 2>&1 ||
  { tail -n 40 "$scratch/build.log"; fail "build"; }

echo "== the demo"
out=$("$scratch/build/cbslot-demo" 2>&1) || { printf '%s\n' "$out"; fail "the demo exited $?"; }
printf '%s\n' "$out"
printf '%s\n' "$out" | grep -q 'not available on .*cbslot_force_unsupported' || fail "the demo did not print cb_last_error()"
printf '%s\n' "$out" | grep -q '^skipped: ' || fail "the demo did not say what it skipped"

echo "== C, C++ and gdb tests"
(cd "$scratch/build" && ctest -L '^(c|cpp|gdb)$' -j2 --output-on-failure) >"$scratch/ctest.log" 2>&1
rc=$?
grep -E 'Test +#|tests passed' "$scratch/ctest.log"
[ $rc -eq 0 ] || { cat "$scratch/ctest.log" | tail -n 60; fail "a test failed on the unsupported build"; }
# those that need entries are skipped; those of the parts every platform has pass
for t in c/test_cb_signatures c/test_cb_core c/test_loop cpp/test_cpp cpp/test_unwind gdb/backtrace; do
  grep -Eq "Test +#[0-9]+: $t \.+\*\*\*Skipped" "$scratch/ctest.log" || fail "$t was not reported Skipped"
done
for t in c/test_handles c/test_queue c/test_vde_context c/test_lifetimes c/test_status; do
  grep -Eq "Test +#[0-9]+: $t \.+ +Passed" "$scratch/ctest.log" || fail "$t did not pass"
done
echo "unsupported.sh: passed"

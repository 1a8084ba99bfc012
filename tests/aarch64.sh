#!/bin/sh
# The C suite on aarch64 Linux, cross-built and run under qemu-user (timings mean nothing there; results do),
# the C++ unwinding test, runs with 64 KiB pages, and the library built with -Zbranch-protection=bti,pac-ret
# (nightly, -Zbuild-std) run by tests built with -mbranch-protection=standard. qemu's default CPU has BTI and
# pointer authentication, so entries are mapped as BTI-guarded pages and pac-ret is enforced.
#   sh tests/aarch64.sh <source-dir> <scratch-dir>
# Exit 0: all passed. 1: a failure. 77: skipped, with a "SKIPPED: why" line naming what to install.
set -u
[ $# -eq 2 ] || { echo "usage: sh tests/aarch64.sh <source-dir> <scratch-dir>" >&2; exit 2; }
src=$(cd "$1" && pwd) || exit 1
mkdir -p "$2" || exit 1
scratch=$(cd "$2" && pwd) || exit 1
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
TARGET=aarch64-unknown-linux-gnu
skip() { echo "SKIPPED: $*"; exit 77; }
missing=""
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || missing="$missing gcc-aarch64-linux-gnu"
[ -d /usr/aarch64-linux-gnu/lib ] || missing="$missing libc6-dev-arm64-cross"
command -v qemu-aarch64 >/dev/null 2>&1 || missing="$missing qemu-user"
[ -z "$missing" ] || skip "missing packages (sudo apt-get install -y$missing)"
rustup target list --installed 2>/dev/null | grep -qx $TARGET ||
  skip "the Rust target is not installed (rustup target add $TARGET)"

echo "== cross-building libcbslot for $TARGET"
export CARGO_TARGET_DIR="$scratch/cargo" CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
unset CBSLOT_UPDATE_HEADER
cargo build --locked --release --target $TARGET --manifest-path "$src/Cargo.toml" || exit 1
lib="$CARGO_TARGET_DIR/$TARGET/release"
ln -sf libcbslot.so "$lib/libcbslot.so.0"
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu LD_LIBRARY_PATH="$lib" CBSLOT_STRESS_SECONDS=2

failed=""
echo "== Rust unit tests under qemu-aarch64 (stub layout, unwind templates, the JIT image, ...)"
if CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64" cargo test --locked --release --lib --target $TARGET \
     --manifest-path "$src/Cargo.toml" >"$scratch/rust-unit.log" 2>&1; then
  echo "   PASS rust unit: $(grep 'test result' "$scratch/rust-unit.log" | tail -n 1)"
else
  echo "   FAIL rust unit"; tail -n 30 "$scratch/rust-unit.log"; failed="$failed rust-unit"
fi
build() { # NAME SOURCE [FLAGS...]
  name=$1 source=$2; shift 2
  aarch64-linux-gnu-gcc -O1 -g -Wall "$@" -I"$src/include" "$source" -L"$lib" -lcbslot -lpthread -o "$scratch/$name"
}
run() { # LABEL ENV... -- PROGRAM ARGS...: passes on exit 0
  label=$1; shift
  out=$(env "$@" 2>&1); rc=$?
  if [ $rc -eq 0 ]; then echo "   PASS $label: $(printf '%s\n' "$out" | tail -n 1)"
  else echo "   FAIL $label (exit $rc)"; printf '%s\n' "$out" | tail -n 20; failed="$failed $label"; fi
}
for t in test_handles test_cb_signatures test_cb_lifecycle test_cb_threads test_cb_real_apis test_cb_many \
         test_queue test_stress test_fork_exit test_cb_core; do
  build $t "$src/c-tests/$t.c" || { failed="$failed $t(build)"; continue; }
done
build test_aapcs64 "$src/tests/aarch64/test_aapcs64.c" || failed="$failed test_aapcs64(build)"

echo "== C tests under qemu-aarch64"
for t in test_aapcs64 test_handles test_cb_signatures test_cb_lifecycle test_cb_threads test_cb_real_apis \
         test_cb_many test_queue test_stress; do
  run $t timeout 600 qemu-aarch64 "$scratch/$t"
done
for s in memfd file; do run "test_cb_signatures[$s]" CBSLOT_TRAMPOLINES=$s timeout 300 qemu-aarch64 "$scratch/test_cb_signatures"; done
# qemu-user 7.2 (Debian 12) aborts a forked child that starts a thread ("qemu_plugin_vcpu_init_hook:
# assertion failed"), so the fork tests run without the reclaimer thread, and test_cb_core's cases run one
# by one in-process, leaving out the one that forks with the reclaimer running.
run "test_fork_exit (reclaim delay 0)" CBSLOT_RECLAIM_DELAY_MS=0 timeout 300 qemu-aarch64 "$scratch/test_fork_exit"
for c in $(sed -n 's/^ *CASE(\([A-Za-z0-9_]*\)),*$/\1/p' "$src/c-tests/test_cb_core.c"); do
  case $c in fork_child_reclaimer) echo "   SKIP test_cb_core/$c (qemu-user cannot start a thread in a forked child)"; continue ;; esac
  run "test_cb_core/$c" timeout 120 qemu-aarch64 "$scratch/test_cb_core" "$c"
done
# without membarrier (forced off) entries are refused: the mprotect fallback is no barrier on arm64
out=$(CBSLOT_BARRIER=mprotect timeout 120 qemu-aarch64 "$scratch/test_aapcs64" 2>&1)
if [ $? -ne 0 ] && printf '%s\n' "$out" | grep -q 'CB_ERR_SYSTEM' && printf '%s\n' "$out" | grep -q 'need membarrier'; then
  echo "   PASS entries refused without membarrier"
else
  echo "   FAIL entries without membarrier were not refused"; printf '%s\n' "$out" | tail -n 5; failed="$failed no-membarrier"
fi
echo "== with 64 KiB pages"
for t in test_aapcs64 test_cb_signatures test_cb_lifecycle test_cb_many; do
  run "$t[64k]" QEMU_PAGESIZE=65536 timeout 600 qemu-aarch64 "$scratch/$t"
done

echo "== C++: unwinding through entries (exceptions, pthread_exit, _Unwind_Backtrace)"
if command -v aarch64-linux-gnu-g++ >/dev/null 2>&1; then
  if aarch64-linux-gnu-g++ -std=c++17 -O1 -g -Wall -rdynamic -I"$src/include" "$src/cpp-tests/test_unwind.cpp" \
       -L"$lib" -lcbslot -lpthread -ldl -o "$scratch/test_unwind"; then
    run test_unwind timeout 600 qemu-aarch64 "$scratch/test_unwind"
  else failed="$failed test_unwind(build)"; fi
else
  echo "   SKIP test_unwind: no aarch64 C++ compiler (sudo apt-get install -y g++-aarch64-linux-gnu)"
fi

echo "== branch protection: the library built with -Zbranch-protection=bti,pac-ret"
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "   SKIP: no nightly toolchain (rustup toolchain install nightly --component rust-src)"
elif ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src' &&
     ! rustup component add rust-src --toolchain nightly >/dev/null 2>&1; then
  echo "   SKIP: rust-src is missing for nightly (rustup component add rust-src --toolchain nightly)"
else
  # std is rebuilt with the same flags (rustc refuses to mix); target-only flags, so build scripts build
  if CARGO_TARGET_DIR="$scratch/cargo-bp" CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-Zbranch-protection=bti,pac-ret" \
       cargo +nightly build -Zbuild-std=std,panic_unwind --release --target $TARGET --manifest-path "$src/Cargo.toml" \
       >"$scratch/bp-build.log" 2>&1; then
    lib="$scratch/cargo-bp/$TARGET/release"
    ln -sf libcbslot.so "$lib/libcbslot.so.0"
    if aarch64-linux-gnu-objdump -d "$lib/libcbslot.so" | grep -q paciasp; then
      for t in test_cb_signatures test_cb_lifecycle test_cb_threads; do
        build "$t-bp" "$src/c-tests/$t.c" -mbranch-protection=standard && run "$t[bti,pac-ret]" LD_LIBRARY_PATH="$lib" timeout 600 qemu-aarch64 "$scratch/$t-bp" || failed="$failed $t-bp"
      done
      build test_aapcs64-bp "$src/tests/aarch64/test_aapcs64.c" -mbranch-protection=standard &&
        run "test_aapcs64[bti,pac-ret]" LD_LIBRARY_PATH="$lib" timeout 600 qemu-aarch64 "$scratch/test_aapcs64-bp"
      if command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 &&
         aarch64-linux-gnu-g++ -mbranch-protection=standard -std=c++17 -O1 -g -rdynamic -I"$src/include" \
           "$src/cpp-tests/test_unwind.cpp" -L"$lib" -lcbslot -lpthread -ldl -o "$scratch/test_unwind-bp"; then
        run "test_unwind[bti,pac-ret]" LD_LIBRARY_PATH="$lib" timeout 600 qemu-aarch64 "$scratch/test_unwind-bp"
      fi
    else
      echo "   FAIL: the library has no paciasp: the flags did not reach it"; failed="$failed branch-protection"
    fi
  else
    tail -n 30 "$scratch/bp-build.log"; failed="$failed branch-protection(build)"
  fi
fi
if [ -n "$failed" ]; then echo "aarch64.sh: FAILED:$failed"; exit 1; fi
echo "aarch64.sh: all passed"

#!/bin/sh
# The library builds for systems other than Linux: macOS (x86_64, arm64) and FreeBSD, as a staticlib (no
# linker for those systems needed), warnings as errors. Entries and the loop are not there; handles, contexts
# and the queue are (see tests/unsupported.sh for how that build behaves).
#   sh tests/other_targets.sh <source-dir> <scratch-dir>
# Exit 0: all built. 1: a build failed. 77: skipped, saying which target could not be installed and how.
set -u
[ $# -eq 2 ] || { echo "usage: sh tests/other_targets.sh <source-dir> <scratch-dir>" >&2; exit 2; }
src=$(cd "$1" && pwd) || exit 1
mkdir -p "$2" || exit 1
scratch=$(cd "$2" && pwd) || exit 1
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
unset CBSLOT_UPDATE_HEADER
targets="x86_64-apple-darwin aarch64-apple-darwin x86_64-unknown-freebsd"
missing=""
for t in $targets; do
  rustup target list --installed 2>/dev/null | grep -qx "$t" && continue
  echo "== rustup target add $t"
  rustup target add "$t" >/dev/null 2>&1 || missing="$missing $t"
done
[ -z "$missing" ] || { echo "SKIPPED: the Rust targets could not be installed (rustup target add$missing)"; exit 77; }
failed=""
for t in $targets; do
  echo "== $t"
  if CARGO_TARGET_DIR="$scratch/cargo" RUSTFLAGS="-D warnings" cargo rustc --locked --lib --crate-type staticlib \
       --target "$t" --manifest-path "$src/Cargo.toml" >"$scratch/$t.log" 2>&1 &&
     [ -f "$scratch/cargo/$t/debug/libcbslot.a" ]; then
    echo "   built $(du -h "$scratch/cargo/$t/debug/libcbslot.a" | cut -f1) libcbslot.a"
  else
    tail -n 30 "$scratch/$t.log"; failed="$failed $t"
  fi
done
[ -z "$failed" ] || { echo "other_targets.sh: FAILED:$failed"; exit 1; }
echo "other_targets.sh: all built"

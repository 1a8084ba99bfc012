#!/bin/sh
# rustfmt and clippy over the crate (src/, tests/*.rs, build.rs), warnings denied.
#   sh tests/rust_lint.sh [<source-dir> [<cargo-target-dir>]]
# <source-dir> defaults to this script's parent directory; <cargo-target-dir> to a `lint` directory under
# $CARGO_TARGET_DIR (or under <source-dir>/target), so the lint build never waits for the main build's lock.
# Exits 77 (CTest's skip code) when clippy or rustfmt is not installed, unless CI is set: CI must not skip.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "${1:-$here/..}" && pwd)
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
CARGO_TARGET_DIR=${2:-${CARGO_TARGET_DIR:-$src/target}/lint}
export CARGO_TARGET_DIR
unset CBSLOT_UPDATE_HEADER

for tool in clippy fmt; do
  if ! cargo "$tool" --version >/dev/null 2>&1; then
    echo "cargo $tool is not installed; fix: rustup component add clippy rustfmt"
    if [ -n "${CI:-}" ]; then
      exit 1
    fi
    exit 77
  fi
done

cd "$src"
echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets --locked -- -D warnings (target dir $CARGO_TARGET_DIR)"
cargo clippy --all-targets --locked -- -D warnings
echo "rust lint: clean"

#!/usr/bin/env bash
# cbslot's one entry point for people and CI.
#   ./build.sh demo    build the library and run the demo (the main job)
#   ./build.sh test    build everything and run the whole test suite under CTest
#   ./build.sh bench   build and run the benchmarks (figures for the README)
#   ./build.sh report  run every benchmark; write bench/results.md and bench/chart.svg
#   ./build.sh docs [DIR]  the API reference from the headers: HTML and man pages (default DIR: build/docs)
# System packages that are missing are installed when run as root; otherwise the exact command is printed.
set -euo pipefail
cd "$(dirname "$0")"
BUILD_DIR=${CBSLOT_BUILD_DIR:-build}
JOBS=${CBSLOT_JOBS:-$(nproc 2>/dev/null || echo 2)}

die() { echo "build.sh: $*" >&2; exit 1; }

# ensure_packages WHAT:PACKAGE ...: WHAT is a command that must be on PATH, or an absolute path that must
# exist; install the PACKAGEs of those that are missing.
ensure_packages() {
  local missing=() pair what
  for pair in "$@"; do
    what=${pair%%:*}
    if [[ $what == /* ]]; then [ -e "$what" ]; else command -v "$what" >/dev/null 2>&1; fi || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "build.sh: installing missing packages: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    die "missing system packages. Install them with:
    sudo apt-get install -y ${missing[*]}"
  fi
}

# optional_packages WHAT:PACKAGE ...: like ensure_packages when root; otherwise only says what is missing
# (the tests that need it are skipped, saying so).
optional_packages() {
  if [ "$(id -u)" -eq 0 ]; then ensure_packages "$@"; return; fi
  local pair what
  for pair in "$@"; do
    what=${pair%%:*}
    if [[ $what == /* ]]; then [ -e "$what" ]; else command -v "$what" >/dev/null 2>&1; fi ||
      echo "build.sh: ${pair#*:} is not installed; its tests will be skipped (sudo apt-get install -y ${pair#*:})"
  done
}

# Rust: the crate's rust-version or newer (distribution packages are often older: Debian 12's are 1.63).
ensure_rust() {
  [ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
  local need have rustup="install a current toolchain with rustup:
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y && . \"\$HOME/.cargo/env\"
(with rustup already installed: rustup update stable)"
  need=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
  command -v cargo >/dev/null 2>&1 || die "Rust $need or newer is needed and cargo was not found; $rustup"
  have=$(rustc --version 2>/dev/null | sed -n 's/^rustc \([0-9][0-9.]*\).*/\1/p')
  [ -n "$have" ] || die "cargo is there but \`rustc --version\` failed; $rustup"
  [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" = "$need" ] ||
    die "Rust $need or newer is needed; $(command -v rustc) is $have; $rustup"
}

configure() {
  ensure_rust
  ensure_packages cc:gcc make:make cmake:cmake "$@"
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
}

case "${1:-}" in
  demo)
    configure
    cmake --build "$BUILD_DIR" -j "$JOBS" --target cbslot-demo
    "$BUILD_DIR/cbslot-demo"
    ;;
  test)
    # the whole suite (C, Rust, C++, Go, packaging, the C suite under valgrind and on aarch64 under qemu), then the C suite again
    # built with ASan+UBSan
    configure pkg-config:pkgconf nm:binutils valgrind:valgrind
    optional_packages doxygen:doxygen /usr/include/event2/event.h:libevent-dev g++:g++ aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu \
      /usr/aarch64-linux-gnu/lib:libc6-dev-arm64-cross qemu-aarch64:qemu-user aarch64-linux-gnu-g++:g++-aarch64-linux-gnu
    # the aarch64 suite's Rust target (its test is skipped, saying so, when it cannot be added)
    command -v rustup >/dev/null 2>&1 && { rustup target list --installed | grep -qx aarch64-unknown-linux-gnu ||
      rustup target add aarch64-unknown-linux-gnu || true; }
    # the lints' toolchain components (rust/lint says what to run when they cannot be added)
    command -v rustup >/dev/null 2>&1 && { rustup component add clippy rustfmt >/dev/null 2>&1 || true; }
    cmake -S . -B "$BUILD_DIR" >/dev/null   # pick up libevent if it was just installed
    cmake --build "$BUILD_DIR" -j "$JOBS"
    (cd "$BUILD_DIR" && ctest --output-on-failure -j "$JOBS")
    cmake -S . -B "$BUILD_DIR-sanitize" -DCMAKE_BUILD_TYPE=Debug -DCBSLOT_SANITIZE=ON \
          -DCBSLOT_CARGO_TARGET_DIR="$PWD/$BUILD_DIR/cargo" >/dev/null
    cmake --build "$BUILD_DIR-sanitize" -j "$JOBS"
    cd "$BUILD_DIR-sanitize" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
      ctest --output-on-failure -j "$JOBS" -L '^c$'
    ;;
  bench)
    configure pkg-config:pkgconf "/usr/include/$(gcc -print-multiarch)/ffi.h:libffi-dev"
    cmake -S . -B "$BUILD_DIR" >/dev/null   # pick up libffi if it was just installed
    cmake --build "$BUILD_DIR" -j "$JOBS" --target bench_handles bench_handles_static bench_callbacks bench_queue
    "$BUILD_DIR/bench_handles" "${2:-1}"
    echo
    "$BUILD_DIR/bench_handles_static" "${2:-1}"
    echo
    "$BUILD_DIR/bench_callbacks" "${2:-1}"
    echo
    "$BUILD_DIR/bench_queue" "${2:-1}"
    if command -v go >/dev/null 2>&1; then
      echo
      scripts/go_bench.sh "$BUILD_DIR" 5
    fi
    echo
    sh scripts/sizes.sh "$BUILD_DIR"
    ;;
  report)
    configure pkg-config:pkgconf "/usr/include/$(gcc -print-multiarch)/ffi.h:libffi-dev"
    cmake -S . -B "$BUILD_DIR" >/dev/null
    cmake --build "$BUILD_DIR" -j "$JOBS" --target bench_handles bench_callbacks bench_queue
    scripts/report.sh "$BUILD_DIR"
    ;;
  docs)
    ensure_packages doxygen:doxygen
    sh tests/doxygen.sh . "${2:-$BUILD_DIR/docs}"
    ;;
  *)
    echo "usage: ./build.sh demo | test | bench [scale] | report | docs [dir]" >&2
    exit 2
    ;;
esac

#!/bin/sh
# Builds every C and C++ code block of README.md against a fresh install, as a user would:
#   sh tests/readme_snippets.sh BUILD_DIR SOURCE_DIR
# BUILD_DIR is a CMake build tree whose library is built; it is installed into BUILD_DIR/readme-snippets/prefix.
# A ```c or ```cpp block containing `main(` is a complete program: it is compiled with warnings as errors
# (C11 / C++17) through pkg-config, linked with an rpath to the prefix, and run; it must exit 0. Any other
# block must compile as a translation unit (-fsyntax-only), with <cbslot.h> (C) or <cbslot.hpp> (C++)
# included first when the block does not include it. Skipped (exit 77) without pkg-config; C++ blocks are
# skipped, saying so, without a C++ compiler.
set -eu
if [ $# -ne 2 ]; then
  echo "usage: $0 BUILD_DIR SOURCE_DIR" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
if ! command -v pkg-config >/dev/null 2>&1; then
  echo "SKIPPED: pkg-config is not installed (sudo apt-get install -y pkgconf)"
  exit 77
fi
cc=${CC:-cc}
cxx=${CXX:-g++}
have_cxx=1
if ! command -v "$cxx" >/dev/null 2>&1; then
  have_cxx=0
  echo "note: no C++ compiler ($cxx): the C++ blocks are skipped (sudo apt-get install -y g++)"
fi
# run a program with a time limit when timeout(1) is there
run() {
  if command -v timeout >/dev/null 2>&1; then timeout 60 "$@"; else "$@"; fi
}

work="$build/readme-snippets"
rm -rf "$work"
mkdir -p "$work"
. "$src/tests/install/prefix.sh"
install_prefix "$build" "$work/prefix"
cflags=$(pkg-config --cflags cbslot)
libs=$(pkg-config --libs cbslot)

# a C or C++ block under any other fence (```C, ```c++, ```h, indented, with attributes) would be skipped
# below: refuse it instead
odd=$(grep -nE '^[[:space:]]*```[[:space:]]*([Cc]|[Cc]\+\+|[Cc][Pp][Pp]|[Cc][Xx][Xx]|[Cc][Cc]|[Hh]|[Hh][Pp][Pp])([^A-Za-z0-9+#-].*)?$' \
  "$src/README.md" | grep -vE '^[0-9]+:```(c|cpp)$' || true)
if [ -n "$odd" ]; then
  echo "FAIL: README.md has C/C++ blocks this test would not build (write their fences as \`\`\`c or \`\`\`cpp):"
  echo "$odd"
  exit 1
fi
# every ```c and ```cpp block, one file each, numbered in README order
awk -v dir="$work" '
  /^```(c|cpp)$/ { n++; ext = substr($0, 4); file = sprintf("%s/block%02d.%s", dir, n, ext); inblock = 1; next }
  /^```/ && inblock { inblock = 0; close(file); next }
  inblock { print > file }
' "$src/README.md"

programs=0 fragments=0 cxx_skipped=0
for block in "$work"/block*.c "$work"/block*.cpp; do
  [ -e "$block" ] || continue
  name=$(basename "$block")
  case "$block" in
    *.cpp)
      lang=C++ std=-std=c++17 header=cbslot.hpp compiler=$cxx
      if [ "$have_cxx" -eq 0 ]; then
        echo "== $name (C++): $(sed -n 1p "$block")"
        echo "   SKIPPED: no C++ compiler"
        cxx_skipped=$((cxx_skipped + 1))
        continue
      fi
      ;;
    *)
      lang=C std=-std=c11 header=cbslot.h compiler=$cc
      ;;
  esac
  echo "== $name ($lang): $(sed -n 1p "$block")"
  if grep -q 'main(' "$block"; then
    # shellcheck disable=SC2086 # the pkg-config flags are lists of words
    "$compiler" $std -Wall -Wextra -Werror $cflags "$block" -o "$block.bin" $libs -Wl,-rpath,"$libdir"
    if ! run "$block.bin" >"$block.out" 2>&1; then
      cat "$block.out"
      echo "FAIL: $name exited with an error (its output is above)"
      exit 1
    fi
    sed 's/^/   | /' "$block.out"
    programs=$((programs + 1))
  else
    unit="$block.unit.$([ "$lang" = C ] && echo c || echo cpp)"
    if grep -q "#include <$header>" "$block"; then
      cp "$block" "$unit"
    else
      { echo "#include <$header>"; cat "$block"; } >"$unit"
    fi
    # shellcheck disable=SC2086
    "$compiler" $std -Wall -Wextra -Werror $cflags -fsyntax-only "$unit"
    echo "   compiles"
    fragments=$((fragments + 1))
  fi
done

c_programs=$(for f in "$work"/block*.c; do [ -e "$f" ] && grep -l 'main(' "$f"; done | wc -l)
if [ "$c_programs" -lt 1 ]; then
  echo "FAIL: expected at least 1 complete C program (a \`\`\`c block with main) in README.md, found none"
  exit 1
fi
echo "README snippets: $programs program(s) built and ran, $fragments fragment(s) compiled$(
  [ "$cxx_skipped" -gt 0 ] && echo ", $cxx_skipped C++ block(s) skipped (no C++ compiler)")"

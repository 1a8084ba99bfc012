#!/bin/sh
# Builds cbslot's API reference with Doxygen (docs/Doxyfile) and fails on any Doxygen warning: an
# undocumented declaration in a public header, a broken \ref, a malformed command.
#   sh tests/doxygen.sh SOURCE_DIR OUTPUT_DIR
# writes OUTPUT_DIR/html/index.html, the section-3 man pages OUTPUT_DIR/man/man3/*.3 and
# OUTPUT_DIR/doxygen-warnings.log (empty on success). It is both the CTest check and `./build.sh docs`.
set -eu
if [ $# -ne 2 ]; then
  echo "usage: $0 SOURCE_DIR OUTPUT_DIR" >&2
  exit 2
fi
if ! command -v doxygen >/dev/null 2>&1; then
  echo "SKIPPED: doxygen not installed (sudo apt-get install -y doxygen)"
  exit 77
fi
src=$(cd "$1" && pwd)
mkdir -p "$2"
out=$(cd "$2" && pwd)
version=$(sed -n 's/^#define CBSLOT_VERSION "\([^"]*\)".*/\1/p' "$src/include/cbslot.h")
[ -n "$version" ] || { echo "FAIL: no CBSLOT_VERSION in $src/include/cbslot.h"; exit 1; }

# Pages of declarations that no longer exist must not survive from an earlier run.
rm -rf "$out/html" "$out/man"
log=$out/doxygen-warnings.log
: >"$log"
rc=0
(cd "$src" && CBSLOT_DOCS_DIR=$out CBSLOT_VERSION=$version doxygen docs/Doxyfile) || rc=$?
if [ -s "$log" ]; then
  # doxygen repeats some warnings once per output format
  awk '!seen[$0]++' "$log"
  echo "FAIL: doxygen reported $(awk '!seen[$0]++' "$log" | grep -c .) warning(s) (above; all of them in $log)"
  exit 1
fi
if [ "$rc" -ne 0 ]; then
  echo "FAIL: doxygen exited with status $rc"
  exit 1
fi
# Man pages. MAN_LINKS gives every documented name a one-line page (".so man3/<page>.3"): keep those of
# the C API, so that `man cb_register` opens cbslot.h(3), and drop the rest (C++ members and struct fields
# such as close, error, get or live would shadow the system's pages once installed).
man3=$out/man/man3
for f in "$man3"/*.3; do
  case $(basename "$f" .3) in
    cb_* | CB_* | CBSLOT_* | vde_* | VDE_* | event_cb) ;;
    *) if [ "$(wc -l <"$f")" -le 2 ] && head -n 1 "$f" | grep -q '^\.so '; then rm -f "$f"; fi ;;
  esac
done
# Doxygen names the page of cbslot::callback<R(Args...)> after the specialization (with a space and
# parentheses): give it the plain name.
if [ -f "$man3/cbslot_callback_ R(Args...)_.3" ]; then
  mv "$man3/cbslot_callback_ R(Args...)_.3" "$man3/cbslot_callback.3"
fi

# <vde3/context.h>'s page is named after the file alone: context.h(3) is too generic a name to install.
if [ -f "$man3/context.h.3" ]; then
  mv "$man3/context.h.3" "$man3/vde3_context.h.3"
  grep -l '^\.so man3/context\.h\.3$' "$man3"/*.3 | while read -r f; do echo ".so man3/vde3_context.h.3" >"$f"; done
fi

[ -f "$out/html/index.html" ] || { echo "FAIL: no $out/html/index.html"; exit 1; }
[ -f "$out/man/man3/cbslot.h.3" ] || { echo "FAIL: no man page $out/man/man3/cbslot.h.3"; exit 1; }
echo "OK: API reference in $out/html/index.html, man pages in $man3 ($(ls "$man3" | wc -l) pages and links)"

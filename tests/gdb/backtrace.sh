#!/bin/sh
# gdb sees through entries: a breakpoint in a callback shows the caller's frames below it (the entry's code is
# announced to gdb with its unwind information). Skipped, saying so, without gdb.
#   sh tests/gdb/backtrace.sh <path of the backtrace program>
set -u
prog=$1
command -v gdb >/dev/null 2>&1 || { echo "SKIPPED: gdb is not installed (sudo apt-get install -y gdb)"; exit 77; }
"$prog" || exit $?   # runs without gdb first; exits 77, saying why, where the library has no entries
status=0
for kind in tracked untracked; do
  arg=""; [ $kind = untracked ] && arg=untracked
  out=$(gdb -nx -batch -ex 'break the_callback' -ex "run $arg" -ex bt "$prog" 2>&1)
  echo "== $kind entry"; printf '%s\n' "$out" | grep '^#'
  # frame 0 is the callback; the caller and main must follow
  printf '%s\n' "$out" | grep -q '^#0 .*the_callback' || { echo "FAIL: did not stop in the_callback"; status=1; }
  printf '%s\n' "$out" | grep -Eq '^#[1-3] .*the_caller' || { echo "FAIL: the caller's frame is missing"; status=1; }
  printf '%s\n' "$out" | grep -Eq '^#[2-4] .*main' || { echo "FAIL: main's frame is missing"; status=1; }
  if [ $kind = tracked ]; then
    printf '%s\n' "$out" | grep -q '^#1 .*cbslot_dispatch' || { echo "FAIL: the entry's frame is not named"; status=1; }
  fi
done
exit $status

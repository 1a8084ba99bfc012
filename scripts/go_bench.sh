#!/bin/sh
# Runs the Go benchmarks of both packages and purego's own beside them, COUNT times each, and prints the
# median ns/op of each benchmark (with min and max, and allocs/op), as benchstat would summarize them.
#   scripts/go_bench.sh BUILD_DIR [COUNT]
set -eu
build=$(cd "$1" && pwd)
count=${2:-5}
cd "$(dirname "$0")/../bindings/go"
export PKG_CONFIG_PATH="$build/pkgconfig"
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
echo "Go: $(go env GOVERSION) $(go env GOOS)/$(go env GOARCH), $count runs each"
(cd cbslot && go test -run '^$' -bench . -benchmem -count "$count") >>"$raw"
(cd purecbslot && CGO_ENABLED=0 LD_LIBRARY_PATH="$build/cargo/release" \
  go test -run '^$' -bench . -benchmem -count "$count" | sed 's/^Benchmark/BenchmarkNoCgo/') >>"$raw"
# purego's callbacks cannot be freed and stop at 2000 per process: 1000 of them, once
(cd benchpurego && go test -run '^$' -bench . -benchmem -benchtime 1000x -count 1) >>"$raw"
grep '^Benchmark' "$raw" | awk '
  {
    name = $1; sub(/-[0-9]+$/, "", name)
    for (i = 3; i < NF; i++) {
      if ($(i + 1) == "ns/op") ns[name] = ns[name] " " $i
      if ($(i + 1) == "allocs/op") allocs[name] = $i
      if ($(i + 1) == "ns/callback") ns[name] = ns[name] " " $i
    }
    if (!(name in seen)) { seen[name] = 1; order[++n] = name }
  }
  END {
    printf "%-52s %10s %20s %9s\n", "benchmark", "median ns", "min-max", "allocs/op"
    for (k = 1; k <= n; k++) {
      m = split(substr(ns[order[k]], 2), v, " ")
      for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
      med = (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
      printf "%-52s %10.1f %20s %9s\n", order[k], med, v[1] "-" v[m], allocs[order[k]]
    }
  }'

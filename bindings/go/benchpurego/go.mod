module github.com/cbslot/cbslot/bindings/go/benchpurego

// purego's own NewCallback, measured beside cbslot's (scripts/go_bench.sh). A process can create only
// 2000 purego callbacks, so this runs alone, once.
go 1.25.0

require github.com/ebitengine/purego v0.11.3

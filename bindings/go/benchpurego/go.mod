module github.com/cbslot/cbslot/bindings/go/benchpurego

// A separate module so the binding itself depends on nothing: this one measures purego's NewCallback
// beside cbslot's in the same run.
go 1.25.0

replace github.com/cbslot/cbslot/bindings/go => ../

require (
	github.com/cbslot/cbslot/bindings/go v0.0.0-00010101000000-000000000000
	github.com/ebitengine/purego v0.11.3
)

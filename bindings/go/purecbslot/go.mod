module github.com/cbslot/cbslot/bindings/go/purecbslot

// A separate module: it needs purego (and Go 1.25, purego's minimum); the cgo binding needs nothing.
go 1.25.0

replace github.com/cbslot/cbslot/bindings/go => ../

require (
	github.com/cbslot/cbslot/bindings/go v0.0.0-00010101000000-000000000000
	github.com/ebitengine/purego v0.11.3
)

module github.com/cbslot/cbslot/bindings/go

// Go 1.19 or newer (Debian 12's golang-go is 1.19; tested with 1.26). Standard library and cgo only.
go 1.19

//go:build go1.24

package cbslot

import "runtime"

// autoFree holds the cleanup AutoFree added (runtime.AddCleanup, Go 1.24 and later).
type autoFree struct {
	cleanup runtime.Cleanup
	set     bool
}

func (a *autoFree) start(c *Callback) {
	if !a.set {
		a.cleanup = runtime.AddCleanup(c, unregister, c.handle)
		a.set = true
	}
}

func (a *autoFree) stop(*Callback) {
	if a.set {
		a.cleanup.Stop()
		a.set = false
	}
}

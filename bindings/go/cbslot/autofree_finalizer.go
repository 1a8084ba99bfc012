//go:build !go1.24

package cbslot

import "runtime"

// autoFree marks a callback that AutoFree gave a finalizer (before Go 1.24, which has no AddCleanup).
type autoFree struct{ set bool }

func (a *autoFree) start(c *Callback) {
	if !a.set {
		a.set = true
		runtime.SetFinalizer(c, func(c *Callback) { unregister(c.handle) })
	}
}

func (a *autoFree) stop(c *Callback) {
	if a.set {
		runtime.SetFinalizer(c, nil)
		a.set = false
	}
}

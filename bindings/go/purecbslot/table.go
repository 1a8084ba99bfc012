package purecbslot

import (
	"sync"
	"sync/atomic"
)

// keyTable gives Go values small integer keys (from 1) that C can hold. get takes no lock: dispatchers
// call it on every callback call, from any thread. add and remove take mu; a removed key is handed out
// again later.
type keyTable[T any] struct {
	mu    sync.Mutex
	pages atomic.Pointer[[]*keyPage[T]] // replaced whole when it grows; old copies stay valid
	spare []uintptr                     // removed keys
	high  uintptr                       // largest key handed out
	count int                           // values held
}

const pageBits = 10

// keyPage holds the values of 1<<pageBits consecutive keys.
type keyPage[T any] [1 << pageBits]atomic.Pointer[T]

// cell is where key's value lives, or nil if key was never handed out.
func (t *keyTable[T]) cell(key uintptr) *atomic.Pointer[T] {
	ps := t.pages.Load()
	n := key - 1 // key 0 wraps around: out of range
	if ps == nil || n>>pageBits >= uintptr(len(*ps)) {
		return nil
	}
	return &(*ps)[n>>pageBits][n&(1<<pageBits-1)]
}

// add stores v under a free key and returns the key.
func (t *keyTable[T]) add(v *T) uintptr {
	t.mu.Lock()
	defer t.mu.Unlock()
	var key uintptr
	if n := len(t.spare); n > 0 {
		key = t.spare[n-1]
		t.spare = t.spare[:n-1]
	} else {
		t.high++
		key = t.high
		if t.cell(key) == nil {
			var ps []*keyPage[T]
			if old := t.pages.Load(); old != nil {
				ps = append(ps, *old...)
			}
			ps = append(ps, new(keyPage[T]))
			t.pages.Store(&ps)
		}
	}
	t.cell(key).Store(v)
	t.count++
	return key
}

// get returns key's value, or nil.
func (t *keyTable[T]) get(key uintptr) *T {
	if c := t.cell(key); c != nil {
		return c.Load()
	}
	return nil
}

// remove takes key's value out and returns it, or nil if there is none.
func (t *keyTable[T]) remove(key uintptr) *T {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.cell(key)
	if c == nil {
		return nil
	}
	v := c.Swap(nil)
	if v != nil {
		t.spare = append(t.spare, key)
		t.count--
	}
	return v
}

// len is the number of values held.
func (t *keyTable[T]) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.count
}

package cbslot

/*
#include <cbslot.h>
#include <errno.h>
#include <stdint.h>
#include <sys/time.h>

static void cbslot_go_fire(uintptr_t cb, int fd, short events, uintptr_t arg) {
  ((vde_event_cb)cb)(fd, events, (void *)arg);
}
static uintptr_t cbslot_go_add(vde_context *ctx, int fd, short events, const struct timeval *tv, uintptr_t cb) {
  void *ev = fd < 0 ? vde_context_timeout_add(ctx, events, tv, (vde_event_cb)cb, NULL)
                    : vde_context_event_add(ctx, fd, events, tv, (vde_event_cb)cb, NULL);
  return (uintptr_t)ev;
}
static void cbslot_go_del(vde_context *ctx, uintptr_t ev, int timeout) {
  errno = 0;
  if (timeout)
    vde_context_timeout_del(ctx, (void *)ev);
  else
    vde_context_event_del(ctx, (void *)ev);
}
static int64_t cbslot_go_timeval_us(uintptr_t tv) {
  const struct timeval *t = (const struct timeval *)tv;
  return t ? (int64_t)t->tv_sec * 1000000 + t->tv_usec : -1;
}
*/
import "C"

import (
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// The VDE3 event flags.
const (
	EvTimeout int16 = C.VDE_EV_TIMEOUT
	EvRead    int16 = C.VDE_EV_READ
	EvWrite   int16 = C.VDE_EV_WRITE
	EvPersist int16 = C.VDE_EV_PERSIST
)

// Loop is cbslot's built-in epoll event loop.
type Loop struct{ p *C.cb_loop }

// NewLoop creates a built-in loop.
func NewLoop() (*Loop, error) {
	l := &Loop{}
	if err := call(func() C.cb_status { return C.cb_status(C.cb_loop_new(&l.p)) }); err != nil {
		return nil, err
	}
	return l, nil
}

// Run runs the loop on this goroutine's thread until Stop or until nothing is registered.
func (l *Loop) Run() error {
	return call(func() C.cb_status { return C.cb_status(C.cb_loop_run(l.p)) })
}

// RunOnce runs one round, waiting up to timeout (negative: until something is due); returns the callbacks run.
func (l *Loop) RunOnce(timeout time.Duration) (int, error) {
	ms := C.int(-1)
	if timeout >= 0 {
		ms = C.int(timeout / time.Millisecond)
	}
	var n C.size_t
	err := call(func() C.cb_status { return C.cb_status(C.cb_loop_run_once(l.p, ms, &n)) })
	return int(n), err
}

// Stop makes Run return; callable from any goroutine and from callbacks.
func (l *Loop) Stop() error {
	return call(func() C.cb_status { return C.cb_status(C.cb_loop_stop(l.p)) })
}

// Free frees the loop (not while it runs).
func (l *Loop) Free() error {
	return call(func() C.cb_status { return C.cb_status(C.cb_loop_free(l.p)) })
}

// EventHandler is a VDE3 event loop written in Go. Each func becomes a bare C function pointer through
// NewCallback. `timeout` is a C `const struct timeval *` (see TimevalDuration); `cb` and `arg` are the C
// callback and argument to call back with FireEvent; the returned token is given back to EventDel /
// TimeoutDel exactly once.
type EventHandler struct {
	EventAdd   func(fd int32, events int16, timeout unsafe.Pointer, cb, arg uintptr) uintptr
	EventDel   func(ev uintptr)
	TimeoutAdd func(timeout unsafe.Pointer, events int16, cb, arg uintptr) uintptr
	TimeoutDel func(tout uintptr)
}

// TimevalDuration reads a C `const struct timeval *` (negative for NULL).
func TimevalDuration(tv unsafe.Pointer) time.Duration {
	us := C.cbslot_go_timeval_us(C.uintptr_t(uintptr(tv)))
	if us < 0 {
		return -1
	}
	return time.Duration(us) * time.Microsecond
}

// FireEvent calls a VDE3 event callback that an EventHandler was given.
func FireEvent(cb uintptr, fd int32, events int16, arg uintptr) {
	C.cbslot_go_fire(C.uintptr_t(cb), C.int(fd), C.short(events), C.uintptr_t(arg))
}

// Context is a VDE3 context (vde_context). It keeps its own copy of the handler it was given.
type Context struct {
	ctx     *C.vde_context
	mu      sync.Mutex
	handler []*Callback           // an EventHandler's four funcs, freed at Close
	events  map[uintptr]*Callback // token -> the Go callback behind it
	closed  bool
}

// Token names an event or timeout registered through a Context.
type Token uintptr

// NewLoopContext creates a context whose events run on the built-in loop l.
func NewLoopContext(l *Loop) (*Context, error) {
	// Go memory on purpose: the context copies it, so it may be collected as soon as init returns
	h := new(C.vde_event_handler)
	if err := call(func() C.cb_status { return C.cb_status(C.cb_loop_handler(l.p, h)) }); err != nil {
		return nil, err
	}
	return newContext(h, nil)
}

// NewContext creates a context whose events go to a loop implemented in Go.
func NewContext(eh *EventHandler) (*Context, error) {
	fns := []interface{}{eh.EventAdd, eh.EventDel, eh.TimeoutAdd, eh.TimeoutDel}
	cbs := make([]*Callback, 0, 4)
	for _, f := range fns {
		cb, err := NewCallback(f)
		if err != nil {
			for _, c := range cbs {
				c.Free()
			}
			return nil, err
		}
		cbs = append(cbs, cb)
	}
	h := new(C.vde_event_handler) // dropped after init: the context has its own copy
	*(*[4]uintptr)(unsafe.Pointer(h)) = [4]uintptr{cbs[0].Ptr(), cbs[1].Ptr(), cbs[2].Ptr(), cbs[3].Ptr()}
	return newContext(h, cbs)
}

func vdeErr(what string, errno error) error {
	return &Error{Status: ErrInvalidArg, Detail: what + ": " + errno.Error() + ": " + C.GoString(C.cb_last_error())}
}

func newContext(h *C.vde_event_handler, handler []*Callback) (*Context, error) {
	c := &Context{handler: handler, events: make(map[uintptr]*Callback)}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if r, err := C.vde_context_new(&c.ctx); r != 0 {
		return nil, vdeErr("vde_context_new", err)
	}
	if r, err := C.vde_context_init(c.ctx, h, nil); r != 0 {
		C.vde_context_delete(c.ctx)
		return nil, vdeErr("vde_context_init", err)
	}
	return c, nil
}

// EventAdd watches fd for events (EvRead, EvWrite, EvPersist), with an optional timeout (0: none);
// cb runs on the loop's thread. Without EvPersist the event ends after it fires once.
func (c *Context) EventAdd(fd int, events int16, timeout time.Duration, cb func(fd int, events int16)) (Token, error) {
	return c.add(fd, events, timeout, cb)
}

// TimeoutAdd runs cb(-1, EvTimeout) after timeout (repeatedly with EvPersist).
func (c *Context) TimeoutAdd(timeout time.Duration, events int16, cb func(fd int, events int16)) (Token, error) {
	return c.add(-1, events, timeout, cb)
}

func (c *Context) add(fd int, events int16, timeout time.Duration, cb func(fd int, events int16)) (Token, error) {
	var self *Callback
	var token uintptr
	gocb, err := NewCallback(func(fd int32, what int16, arg uintptr) {
		cb(int(fd), what)
		if events&EvPersist == 0 { // a one-shot: cbslot ended it, free its Go func too
			c.forget(token, self)
		}
	})
	if err != nil {
		return 0, err
	}
	self = gocb
	tv := C.struct_timeval{tv_sec: C.long(timeout / time.Second), tv_usec: C.long((timeout % time.Second) / time.Microsecond)}
	c.mu.Lock()
	defer c.mu.Unlock()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var ptv *C.struct_timeval
	if fd < 0 || timeout > 0 {
		ptv = &tv
	}
	ev, errno := C.cbslot_go_add(c.ctx, C.int(fd), C.short(events), ptv, C.uintptr_t(gocb.Ptr()))
	if ev == 0 {
		gocb.Free()
		return 0, vdeErr("vde_context_event_add", errno)
	}
	token = uintptr(ev)
	c.events[token] = gocb
	return Token(token), nil
}

func (c *Context) forget(token uintptr, cb *Callback) {
	c.mu.Lock()
	if c.events[token] == cb {
		delete(c.events, token)
	}
	c.mu.Unlock()
	cb.Free()
}

// EventDel deletes an event (safe from inside its own callback).
func (c *Context) EventDel(ev Token) error { return c.del(ev, false) }

// TimeoutDel deletes a timeout (safe from inside its own callback).
func (c *Context) TimeoutDel(ev Token) error { return c.del(ev, true) }

func (c *Context) del(ev Token, timeout bool) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	t := C.int(0)
	if timeout {
		t = 1
	}
	_, errno := C.cbslot_go_del(c.ctx, C.uintptr_t(ev), t)
	if errno != nil && errno != syscall.Errno(0) {
		return vdeErr("vde_context_event_del", errno)
	}
	c.mu.Lock()
	cb := c.events[uintptr(ev)]
	delete(c.events, uintptr(ev))
	c.mu.Unlock()
	if cb != nil {
		cb.Free()
	}
	return nil
}

// Close finishes the context (every event still registered ends) and deletes it, then frees its Go funcs.
func (c *Context) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return &Error{Status: ErrInvalidArg, Detail: "the context was already closed"}
	}
	c.closed = true
	c.mu.Unlock()
	C.vde_context_delete(c.ctx)
	c.mu.Lock()
	for t, cb := range c.events {
		delete(c.events, t)
		cb.Free()
	}
	c.mu.Unlock()
	for _, cb := range c.handler {
		cb.Free()
	}
	return nil
}

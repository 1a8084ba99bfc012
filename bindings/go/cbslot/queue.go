package cbslot

/*
#include <cbslot.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// Events drained by one cbslot call are collected here (C memory), then read by Go in one go: no
// C->Go callback per event.
typedef struct cbslot_go_event {
  uint64_t sink;
  size_t off, len;
} cbslot_go_event;
typedef struct cbslot_go_batch {
  cbslot_go_event *ev;
  size_t n, cap;
  char *buf;
  size_t used, size;
} cbslot_go_batch;
typedef struct cbslot_go_sink {
  cbslot_go_batch *batch;
  uint64_t id;
} cbslot_go_sink;

static void cbslot_go_collect(void *ud, const void *data, size_t len) {
  cbslot_go_sink *s = ud;
  cbslot_go_batch *b = s->batch;
  if (b->n == b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 256;
    cbslot_go_event *ev = realloc(b->ev, cap * sizeof *ev);
    if (!ev) return; // out of memory: the event is lost (counted as delivered by cbslot)
    b->ev = ev;
    b->cap = cap;
  }
  if (b->used + len > b->size) {
    size_t size = b->size ? b->size : 65536;
    while (size < b->used + len) size *= 2;
    char *buf = realloc(b->buf, size);
    if (!buf) return;
    b->buf = buf;
    b->size = size;
  }
  memcpy(b->buf + b->used, data, len);
  b->ev[b->n++] = (cbslot_go_event){s->id, b->used, len};
  b->used += len;
}
static void cbslot_go_sink_free(void *ud) { free(ud); }

static cb_status cbslot_go_sink_new(cb_queue *q, cbslot_go_batch *b, uint64_t id, cb_handle *out) {
  cbslot_go_sink *s = malloc(sizeof *s);
  if (!s) return CB_ERR_NO_MEMORY;
  s->batch = b;
  s->id = id;
  cb_status st = cb_queue_sink_register(q, cbslot_go_collect, s, cbslot_go_sink_free, out);
  if (st) free(s);
  return st;
}
static cb_status cbslot_go_drain(cb_queue *q, cbslot_go_batch *b, size_t max) {
  b->n = 0;
  b->used = 0;
  return cb_queue_drain(q, max, 0, NULL);
}
static cb_status cbslot_go_post(cb_handle sink, uintptr_t data, size_t len) {
  return cb_queue_post(sink, (const void *)data, len);
}
static cb_status cbslot_go_entry(cb_handle sink, int len_type, uintptr_t *out) {
  cb_fn e = NULL;
  cb_status s = cb_queue_sink_entry(sink, len_type, &e);
  *out = (uintptr_t)e;
  return s;
}
static int cbslot_go_dup_fd(cb_queue *q) {
  int fd = -1;
  return cb_queue_fd(q, &fd) == CB_OK ? dup(fd) : -1;
}
static void cbslot_go_batch_free(cbslot_go_batch *b) {
  free(b->ev);
  free(b->buf);
  free(b);
}
*/
import "C"

import (
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Queue is a cross-thread delivery queue: C threads post copies of events (cb_queue_post or a sink's bare
// entry), and they arrive in Go on the Events channel, drained in batches by one goroutine that waits on
// the queue's eventfd through Go's poller. No C->Go callback runs per event.
type Queue struct {
	q      *C.cb_queue
	batch  *C.cbslot_go_batch
	mu     sync.Mutex  // one drain at a time into the batch
	sinks  table[Sink] // sink id -> *Sink
	batchv []Event     // DrainBatch's reused batch
	final  *[]Event    // set by Close for the pump: the last events, then the channel closes
	events chan Event
	start  sync.Once
	done   chan struct{}
	quit   chan struct{} // closed by Close(false): the pump stops sending
	closed int32
	file   *os.File
}

// Event is one delivered event: the sink it was posted to and a Go copy of its bytes.
type Event struct {
	Sink *Sink
	Data []byte
}

// Sink is where producers post. Its Handle is what C code needs (cb_queue_post, or Entry's pointer).
type Sink struct {
	q  *Queue
	h  C.cb_handle
	id uintptr
}

// NewQueue creates a queue holding up to capacity events (rounded up to a power of two).
func NewQueue(capacity int) (*Queue, error) {
	q := &Queue{done: make(chan struct{}), quit: make(chan struct{})}
	q.batch = (*C.cbslot_go_batch)(C.calloc(1, C.size_t(unsafe.Sizeof(C.cbslot_go_batch{}))))
	if err := call(func() C.cb_status { return C.cb_status(C.cb_queue_new(C.size_t(capacity), &q.q)) }); err != nil {
		C.cbslot_go_batch_free(q.batch)
		return nil, err
	}
	return q, nil
}

// NewSink registers a sink on the queue.
func (q *Queue) NewSink() (*Sink, error) {
	s := &Sink{q: q}
	id := q.sinks.put(s)
	s.id = id
	if err := call(func() C.cb_status { return C.cbslot_go_sink_new(q.q, q.batch, C.uint64_t(id), &s.h) }); err != nil {
		q.sinks.take(id)
		return nil, err
	}
	return s, nil
}

// Handle is the sink's cbslot handle, for C producers (cb_queue_post).
func (s *Sink) Handle() uint64 { return uint64(s.h) }

// Post posts a copy of data (never blocks: ErrCapacity when full).
func (s *Sink) Post(data []byte) error {
	var p uintptr
	if len(data) > 0 {
		p = uintptr(unsafe.Pointer(&data[0]))
	}
	err := call(func() C.cb_status { return C.cbslot_go_post(s.h, C.uintptr_t(p), C.size_t(len(data))) })
	runtime.KeepAlive(data)
	return err
}

// Entry returns a bare C function pointer `int entry(const void *data, int len)` (intLen) or
// `int entry(const void *data, size_t len)` that posts to the sink, for C libraries that only take such a
// callback and call it from their own threads. The entry returns 1 when it posted and 0 when it did not
// (queue full or closed, sink closed, negative length; also a stale call after the sink is closed).
func (s *Sink) Entry(intLen bool) (uintptr, error) {
	lt := C.int(C.CB_QUEUE_LEN_SIZE_T)
	if intLen {
		lt = C.CB_QUEUE_LEN_INT
	}
	var e C.uintptr_t
	err := call(func() C.cb_status { return C.cbslot_go_entry(s.h, lt, &e) })
	return uintptr(e), err
}

// Close unregisters the sink: its events not yet delivered are dropped.
func (s *Sink) Close() error {
	s.q.mu.Lock() // no drain in progress: none of its events is between C and Go
	defer s.q.mu.Unlock()
	err := call(func() C.cb_status { return C.cb_status(C.cb_queue_sink_unregister(s.h)) })
	if err == nil {
		s.q.sinks.take(s.id)
	}
	return err
}

// drain delivers up to max events into Go values.
func (q *Queue) drain(max int) ([]Event, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.drainLocked(max)
}

func (q *Queue) drainLocked(max int) ([]Event, error) {
	if q.q == nil {
		return nil, errClosedQueue()
	}
	if err := call(func() C.cb_status { return C.cbslot_go_drain(q.q, q.batch, C.size_t(max)) }); err != nil {
		return nil, err
	}
	return q.collect(false), nil
}

// collect turns the C batch into Events (q.mu held): into a new slice over a Go copy of the data, or,
// when reuse, into q.batchv over the C buffer itself (valid until the next drain).
func (q *Queue) collect(reuse bool) []Event {
	n := int(q.batch.n)
	if n == 0 {
		return nil
	}
	evs := unsafe.Slice(q.batch.ev, n)
	var all []byte
	var out []Event
	if reuse {
		all = unsafe.Slice((*byte)(unsafe.Pointer(q.batch.buf)), int(q.batch.used))
		if cap(q.batchv) < n {
			q.batchv = make([]Event, n)
		}
		out = q.batchv[:n]
	} else {
		all = C.GoBytes(unsafe.Pointer(q.batch.buf), C.int(q.batch.used))
		out = make([]Event, n)
	}
	var sink *Sink
	lastID := ^C.uint64_t(0)
	for i, e := range evs {
		if e.sink != lastID { // events of one sink tend to come in runs
			sink, lastID = q.sinks.get(uintptr(e.sink)), e.sink
		}
		out[i] = Event{Sink: sink, Data: all[e.off : e.off+e.len : e.off+e.len]}
	}
	q.batch.n, q.batch.used = 0, 0
	return out
}

// DrainBatch delivers up to max pending events to fn in one batch, without waiting, and returns how
// many it delivered. Nothing is allocated: the batch and every Event's Data point into a buffer that the
// next drain reuses, so they are valid only until fn returns (copy what you keep). fn must not drain or
// close this queue or close its sinks (they wait for the drain to end). This is the cheapest way to take events from C threads into Go: one cgo call and
// one Go call per batch instead of a C->Go callback per event.
func (q *Queue) DrainBatch(max int, fn func([]Event)) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.q == nil {
		return 0, errClosedQueue()
	}
	runtime.LockOSThread()
	err := statusErr(C.cbslot_go_drain(q.q, q.batch, C.size_t(max)))
	runtime.UnlockOSThread()
	if err != nil {
		return 0, err
	}
	evs := q.collect(true)
	if len(evs) > 0 {
		fn(evs)
	}
	return len(evs), nil
}

// Drain delivers up to max pending events now, without waiting (for callers that poll instead of Events).
func (q *Queue) Drain(max int) ([]Event, error) { return q.drain(max) }

// Events returns the channel events arrive on. The first call starts the goroutine that waits on the
// queue's eventfd through Go's poller and drains batches of up to 256 into the channel. The channel is
// closed after Close has delivered what was pending.
func (q *Queue) Events() <-chan Event {
	q.start.Do(func() {
		q.events = make(chan Event, 1024)
		fd := C.cbslot_go_dup_fd(q.q)
		q.file = os.NewFile(uintptr(fd), "cbslot-queue")
		go q.pump()
	})
	if q.events == nil { // closed before it started
		return closedEvents
	}
	return q.events
}

var closedEvents = func() chan Event { c := make(chan Event); close(c); return c }()

func (q *Queue) pump() {
	defer close(q.done)
	defer close(q.events)
	rc, err := q.file.SyscallConn()
	if err != nil {
		return
	}
	for {
		var evs []Event
		var final bool
		rerr := rc.Read(func(uintptr) bool {
			q.mu.Lock()
			if q.final != nil { // Close has run: what it collected is the last of it
				evs, final = *q.final, true
			} else {
				evs, _ = q.drainLocked(256)
			}
			q.mu.Unlock()
			return len(evs) > 0 || final
		})
		for _, e := range evs {
			select {
			case q.events <- e:
			case <-q.quit: // Close(false): nobody has to receive what is left
				return
			}
		}
		if rerr != nil || final {
			return
		}
	}
}

// Close closes the queue: producers are refused from now on; pending events are delivered to the Events
// channel (if it was started; keep receiving until it is closed) when deliverPending, else dropped, and
// so are events the channel still holds back. Then the queue is freed; Drain, DrainBatch and a second
// Close return an *Error with status ErrClosed.
func (q *Queue) Close(deliverPending bool) error {
	if !atomic.CompareAndSwapInt32(&q.closed, 0, 1) {
		return errClosedQueue()
	}
	q.start.Do(func() { q.events = nil }) // Events() after Close starts nothing
	pumping := q.events != nil
	d := C.int(0)
	if deliverPending && pumping {
		d = 1
	} else {
		close(q.quit)
	}
	q.mu.Lock()
	err := call(func() C.cb_status { return C.cb_status(C.cb_queue_close(q.q, d)) })
	pending := q.collect(false)
	if pumping {
		q.final = &pending // the pump sends them, then closes the channel (the closed queue's fd wakes it)
	}
	q.mu.Unlock()
	if pumping {
		<-q.done
		q.file.Close()
	}
	q.mu.Lock()
	C.cb_queue_free(q.q)
	C.cbslot_go_batch_free(q.batch)
	q.q, q.batch = nil, nil
	q.mu.Unlock()
	return err
}

func errClosedQueue() error { return &Error{Status: ErrClosed, Detail: "the queue was closed"} }

// Stats returns the queue's counters (posted, delivered, dropped, full_rejections, high_water, pending).
func (q *Queue) Stats() (posted, delivered, dropped, fullRejections, highWater, pending uint64) {
	var s C.cb_queue_stats
	C.cb_queue_get_stats(q.q, &s)
	return uint64(s.posted), uint64(s.delivered), uint64(s.dropped), uint64(s.full_rejections), uint64(s.high_water), uint64(s.pending)
}

//! The cross-thread delivery queue: producers on any thread post copies of byte payloads to *sinks*; the
//! consumer drains batches on the thread it chooses; an eventfd is readable exactly when events are
//! pending, for epoll / libevent / Go's poller.
//!
//! * The ring is a bounded multi-producer queue of 64-byte cells (Vyukov's sequence-numbered ring):
//!   posting is one compare-and-swap on the enqueue position, a copy into the cell and one release store.
//!   Payloads of up to [`INLINE`] bytes live in the cell (no allocation); larger ones are copied to the heap
//!   *before* a cell is claimed, so a failed allocation loses nothing.
//! * Closing is a bit in the enqueue position, so "closed" and "enqueued" are decided by the same CAS: no
//!   post is accepted after `close` returns. Close first wakes every blocked caller (a drain waiting on the
//!   fd, posts waiting for room), then takes the consumer side.
//! * The eventfd is only touched when the consumer goes idle (it resets the fd and arms a flag) and by the
//!   first post after that (it sees the flag and writes the fd): busy queues make no system calls.
//! * Queues and sinks live in [`Table`]s. A post validates its sink (no write), reads the sink's queue
//!   handle from a side table and *pins* the queue ([`Table::pin`]: a per-thread marker, no reference
//!   count); freeing a queue closes it (so every post leaves it) and then waits out pinned posts before the
//!   table lets go of it. Everything else (drains, close, registration) holds a guard.
//! * A sink's user destroy runs in its `Drop`: once, when the last guard goes, so after any delivery to it
//!   that is still running. Unregistering removes its handle at once; its queued events are dropped (and
//!   counted) when reached.

use crate::callback::{CALLBACKS, RawFn};
use crate::error::{Error, abort_on_panic, set_last_error};
use crate::handle::{Kind, Slot};
use crate::segvec::SegVec;
use crate::sys::{self, EventFd};
use crate::table::Table;
use core::cell::Cell;
use core::ffi::{c_int, c_void};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*, fence};
use parking_lot::{Condvar, Mutex, ReentrantMutex};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Payloads of up to this many bytes are copied into the queue's own cells (no allocation); larger ones
/// are copied to the heap.
pub const CB_QUEUE_INLINE_BYTES: u32 = 40;
/// Largest capacity `cb_queue_new` accepts (events); the cells take 64 bytes each.
pub const CB_QUEUE_MAX_CAPACITY: usize = 1 << 30;

/// Queue counters, filled by `cb_queue_get_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct cb_queue_stats {
    /// Events accepted by posts.
    pub posted: u64,
    /// Events delivered to a sink.
    pub delivered: u64,
    /// Events dropped: their sink was unregistered first, or the queue was closed without delivering.
    pub dropped: u64,
    /// Posts refused because the queue was full (each `cb_queue_post_wait` retry counts).
    pub full_rejections: u64,
    /// Most events pending at once, as sampled by the consumer (when a drain starts and ends, every 64
    /// events within it, at close) and by `cb_queue_get_stats`: a post does not write it, so producers
    /// share no counter. Pending events only leave through a drain, so the peak before a drain is exact.
    pub high_water: u64,
    /// Events pending now.
    pub pending: u64,
    /// Events the queue holds (the capacity asked for, rounded up to a power of two, at least 2).
    pub capacity: u64,
}

pub(crate) const INLINE: usize = CB_QUEUE_INLINE_BYTES as usize;
const CLOSED: u64 = 1 << 63;

pub(crate) type SinkFn = unsafe extern "C" fn(*mut c_void, *const c_void, usize);
type DestroyFn = unsafe extern "C" fn(*mut c_void);

#[repr(C, align(64))]
struct Cell64 {
    seq: AtomicU64,
    sink: Cell<u64>,
    len: Cell<usize>,
    data: core::cell::UnsafeCell<[u8; INLINE]>,
}

pub(crate) struct Queue {
    cells: Box<[Cell64]>,
    mask: u64,
    /// Next position to fill; bit 63 = closed.
    enqueue: AtomicU64,
    /// Next position to read (written by the consumer only).
    dequeue: AtomicU64,
    consumer: ReentrantMutex<()>,
    fd: EventFd,
    /// The consumer is idle and has reset the fd: the next post must write it.
    armed: AtomicBool,
    /// A post wrote the fd (set after the write): the consumer must reset it again even if it finds itself
    /// armed, since the write may have landed after its last reset.
    signalled: AtomicBool,
    /// Producers waiting for room (`post_wait`).
    waiters: AtomicUsize,
    room: (Mutex<()>, Condvar),
    delivered: AtomicU64,
    dropped: AtomicU64,
    full: AtomicU64,
    high_water: AtomicU64,
    /// Its sinks' handles (for close). Registration and close decide under this lock.
    sinks: Mutex<Vec<u64>>,
    /// Thread id of the thread draining right now (0 = none), for `post_wait`'s deadlock check.
    drainer: AtomicU64,
}

// SAFETY: a cell's plain fields are written by the one producer that claimed it and read by the consumer
// after the release/acquire handshake on `seq`.
unsafe impl Sync for Queue {}
// SAFETY: the cells own their payloads (plain bytes, or boxes of bytes): nothing in a queue is tied to a
// thread.
unsafe impl Send for Queue {}

impl Drop for Queue {
    fn drop(&mut self) {
        // no post is inside it any more (see `free`): drop the payloads still queued
        let end = *self.enqueue.get_mut() & !CLOSED;
        for pos in *self.dequeue.get_mut()..end {
            self.take_payload(&self.cells[(pos & self.mask) as usize]);
        }
    }
}

struct Sink {
    func: SinkFn,
    userdata: usize,
    destroy: Option<DestroyFn>,
    /// Set once the sink is registered: only then is `destroy` the sink's to run.
    armed: AtomicBool,
    queue: Arc<Queue>,
    /// Bare entries made for this sink (`cb_queue_sink_entry`); unregistered with it.
    entries: Mutex<Vec<u64>>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        for h in self.entries.get_mut().drain(..) {
            let _ = CALLBACKS.unregister(h);
        }
        if let Some(destroy) = self.destroy.filter(|_| *self.armed.get_mut()) {
            // SAFETY: the user's destroy with the user's pointer, exactly once (a sink is dropped once).
            unsafe { destroy(self.userdata as *mut c_void) };
        }
    }
}

static QUEUE_SLOTS: SegVec<Slot> = SegVec::new();
static QUEUES: Table<Queue> = Table::pinnable(Kind::Queue, &QUEUE_SLOTS);
static SINK_SLOTS: SegVec<Slot> = SegVec::new();
static SINKS: Table<Sink> = Table::new(Kind::Sink, &SINK_SLOTS);
/// Sink slot index -> handle of its queue. Never freed, so a post may read it before it knows the sink is
/// live (it validates before and after).
static SINK_QUEUE: SegVec<AtomicU64> = SegVec::new();

/// Sinks removed so far (unregistered, or ended by close), so a drain knows when its cached guards need a
/// look. Written once per removal, read once per delivered event.
static SINK_REMOVALS: AtomicU64 = AtomicU64::new(0);

/// Removes a sink's handle; the caller drops the guard (the sink's destroy runs with the last one).
fn remove_sink(sink: u64) -> Result<Arc<Sink>, Error> {
    let s = SINKS.remove(sink)?;
    SINK_REMOVALS.fetch_add(1, SeqCst);
    Ok(s)
}

const NOT_A_SINK: &str = "is not a live sink (unregistered, or its queue closed)";

/// A guard for the queue named by `handle`.
pub(crate) fn get(handle: u64) -> Result<Arc<Queue>, Error> {
    QUEUES.get(handle).map_err(|_| Error::InvalidArg("not a live cb_queue (NULL, freed or garbage)"))
}

/// A boxed slice of `n` items made by `f`, or `NoMemory` naming `what`.
fn try_collect<T>(n: usize, what: &'static str, f: impl FnMut(usize) -> T) -> Result<Box<[T]>, Error> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::NoMemory(what))?;
    v.extend((0..n).map(f));
    Ok(v.into_boxed_slice())
}

pub(crate) fn new_queue(capacity: usize) -> Result<u64, Error> {
    if capacity == 0 || capacity > CB_QUEUE_MAX_CAPACITY {
        return Err(Error::InvalidArg("capacity must be 1 .. CB_QUEUE_MAX_CAPACITY (2^30) events"));
    }
    // a sequence-numbered ring needs two cells at least: with one, a released cell looks written
    let n = capacity.next_power_of_two().max(2);
    let fd = EventFd::new().ok_or(Error::NoMemory("eventfd failed (out of descriptors?)"))?;
    let cells = try_collect(n, "the queue's cells (64 bytes per event of capacity)", |i| Cell64 {
        seq: AtomicU64::new(i as u64),
        sink: Cell::new(0),
        len: Cell::new(0),
        data: core::cell::UnsafeCell::new([0; INLINE]),
    })?;
    QUEUES.insert(Arc::new(Queue {
        cells,
        mask: n as u64 - 1,
        enqueue: AtomicU64::new(0),
        dequeue: AtomicU64::new(0),
        consumer: ReentrantMutex::new(()),
        fd,
        armed: AtomicBool::new(true), // empty, fd not readable: the first post writes it
        signalled: AtomicBool::new(false),
        waiters: AtomicUsize::new(0),
        room: (Mutex::new(()), Condvar::new()),
        delivered: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        full: AtomicU64::new(0),
        high_water: AtomicU64::new(0),
        sinks: Mutex::new(Vec::new()),
        drainer: AtomicU64::new(0),
    }))
}

pub(crate) fn sink_register(
    queue: u64,
    func: SinkFn,
    userdata: *mut c_void,
    destroy: Option<DestroyFn>,
) -> Result<u64, Error> {
    let q = get(queue)?;
    let entries = Mutex::new(Vec::new());
    let sink = Arc::new(Sink {
        func,
        userdata: userdata as usize,
        destroy,
        armed: AtomicBool::new(false),
        queue: q.clone(),
        entries,
    });
    // under the lock close takes the sinks with: a register either sees the queue closed or is ended by close
    let mut sinks = q.sinks.lock();
    if q.is_closed() {
        return Err(Error::Closed("the queue is closed"));
    }
    sinks.try_reserve(1).map_err(|_| Error::NoMemory("growing the queue's sink list"))?;
    let h = SINKS.insert(sink.clone())?;
    let Some(cell) = SINK_QUEUE.get_or_grow(h as u32) else {
        drop(SINKS.remove(h));
        return Err(Error::NoMemory("growing the sink table"));
    };
    cell.store(queue, Release);
    sink.armed.store(true, Relaxed);
    // our own guard goes while close is still shut out: the table's reference is the sink's last, so a
    // close that takes the list right after this ends the sink before it returns
    drop(sink);
    sinks.push(h);
    Ok(h)
}

/// Unregisters a sink: its handle is invalid at once; its pending events are dropped when reached; its
/// destroy runs when no delivery to it is running any more (here, or when that delivery returns).
pub(crate) fn sink_unregister(sink: u64) -> Result<(), Error> {
    let s = remove_sink(sink).map_err(|_| Error::InvalidHandle(sink, NOT_A_SINK))?;
    s.queue.sinks.lock().retain(|&x| x != sink);
    Ok(())
}

/// The handle of the queue a live sink belongs to. No write.
fn queue_of(sink: u64) -> Result<u64, Error> {
    if !SINKS.is_live(sink) {
        return Err(crate::handle::check_kind(sink, Kind::Sink)
            .err()
            .unwrap_or(Error::InvalidHandle(sink, NOT_A_SINK)));
    }
    // a live sink's queue was stored before its handle was handed out; live again after the read means
    // the slot was not reused in between (its generation would have changed)
    let q = SINK_QUEUE.get(sink as u32).map_or(0, |c| c.load(Acquire));
    if q == 0 || !SINKS.is_live(sink) {
        return Err(Error::InvalidHandle(sink, NOT_A_SINK));
    }
    Ok(q)
}

/// Posts a copy of `data` to `sink`. With `wait`, waits up to that long for room.
pub(crate) fn post(sink: u64, data: &[u8], wait: Option<Duration>) -> Result<(), Error> {
    let q = QUEUES.pin(queue_of(sink)?).map_err(|_| Error::InvalidHandle(sink, NOT_A_SINK))?;
    match q.try_post(sink, data) {
        Err(Error::Capacity(_)) if wait.is_some() => q.post_wait(sink, data, wait.expect("checked")),
        other => other,
    }
}

/// Makes a bare entry for `sink`: `entry(data, len)` posts a copy.
pub(crate) fn entry(sink: u64, len_is_int: bool) -> Result<usize, Error> {
    let s = SINKS.get(sink).map_err(|_| Error::InvalidHandle(sink, NOT_A_SINK))?;
    // SAFETY: erasing the signature for `register`; the entry is called as `int entry(const void *data, int or
    // size_t len)`, which runs the function with the sink's handle in front, as it is declared.
    let f: RawFn = unsafe {
        if len_is_int {
            core::mem::transmute::<unsafe extern "C" fn(*mut c_void, *const c_void, c_int) -> c_int, RawFn>(
                entry_post_int,
            )
        } else {
            core::mem::transmute::<unsafe extern "C" fn(*mut c_void, *const c_void, usize) -> c_int, RawFn>(
                entry_post_size,
            )
        }
    };
    // registered before taking the entry list's lock: registering may run the user's watermark function
    let (h, entry) = CALLBACKS.register(f, sink as usize as *mut c_void, None, 0)?;
    let mut entries = s.entries.lock();
    if entries.try_reserve(1).is_err() {
        drop(entries);
        let _ = CALLBACKS.unregister(h);
        return Err(Error::NoMemory("growing the sink's entry list"));
    }
    entries.push(h);
    drop(entries);
    // unregistered meanwhile: the entry goes with the sink's last guard (ours, soon)
    if !SINKS.is_live(sink) {
        return Err(Error::InvalidHandle(sink, NOT_A_SINK));
    }
    Ok(entry)
}

/// Frees a queue: closes it (dropping pending events) if needed, makes its handle invalid, and waits until
/// no post is inside it; the memory goes with the last guard (a drain still running keeps it).
pub(crate) fn free(handle: u64) -> Result<(), Error> {
    match get(handle)?.close(false) {
        Ok(()) | Err(Error::Closed(_)) => {}
        Err(e) => return Err(e),
    }
    QUEUES.remove(handle).map(drop).map_err(|e| match e {
        Error::WouldDeadlock(_) => e,
        _ => Error::InvalidArg("not a live cb_queue (freed twice?)"),
    })
}

impl Queue {
    fn is_closed(&self) -> bool {
        self.enqueue.load(SeqCst) & CLOSED != 0
    }

    fn try_post(&self, sink: u64, data: &[u8]) -> Result<(), Error> {
        // a large payload is copied before a cell is claimed: if memory runs out, nothing is lost
        let boxed = if data.len() > INLINE {
            let mut v = Vec::new();
            v.try_reserve_exact(data.len()).map_err(|_| Error::NoMemory("copying the payload"))?;
            v.extend_from_slice(data);
            Some(v.into_boxed_slice())
        } else {
            None
        };
        // SeqCst: a post_wait that announced itself in `waiters` must see a close that did not see it
        let mut pos = self.enqueue.load(SeqCst);
        let cell = loop {
            if pos & CLOSED != 0 {
                return Err(Error::Closed("the queue is closed"));
            }
            let cell = &self.cells[(pos & self.mask) as usize];
            let seq = cell.seq.load(Acquire);
            if seq == pos {
                match self.enqueue.compare_exchange_weak(pos, pos + 1, SeqCst, Relaxed) {
                    Ok(_) => break cell,
                    Err(now) => pos = now,
                }
            } else if seq < pos {
                self.full.fetch_add(1, Relaxed);
                return Err(Error::Capacity("the queue is full"));
            } else {
                pos = self.enqueue.load(Relaxed);
            }
        };
        cell.sink.set(sink);
        cell.len.set(data.len());
        // SAFETY: this cell is ours until the release store below.
        unsafe {
            let dst = cell.data.get() as *mut u8;
            match boxed {
                None => core::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()),
                Some(b) => (dst as *mut *mut [u8]).write_unaligned(Box::into_raw(b)),
            }
        }
        cell.seq.store(pos + 1, Release);
        // the consumer went idle: wake its fd (pairs with the SeqCst store + load in `idle`)
        if self.armed.load(SeqCst) && self.armed.swap(false, SeqCst) {
            self.fd.signal();
            self.signalled.store(true, SeqCst);
        }
        Ok(())
    }

    fn post_wait(&self, sink: u64, data: &[u8], wait: Duration) -> Result<(), Error> {
        if self.drainer.load(Relaxed) == sys::thread_id() {
            return Err(Error::WouldDeadlock("the queue is full and this thread is its consumer"));
        }
        let deadline = Instant::now() + wait;
        let (lock, cv) = &self.room;
        let mut g = lock.lock();
        self.waiters.fetch_add(1, SeqCst);
        let out = loop {
            match self.try_post(sink, data) {
                Err(Error::Capacity(_)) => {}
                other => break other,
            }
            if cv.wait_until(&mut g, deadline).timed_out() {
                break match self.try_post(sink, data) {
                    Err(Error::Capacity(_)) => Err(Error::Timeout("the queue stayed full until the timeout")),
                    other => other,
                };
            }
        };
        self.waiters.fetch_sub(1, SeqCst);
        out
    }

    /// Wakes every `post_wait` so it tries again (room was made, or the queue closed).
    fn wake_waiters(&self) {
        // orders the cells released (or the close) before the load, against post_wait's announce-then-try
        fence(SeqCst);
        if self.waiters.load(SeqCst) != 0 {
            let _g = self.room.0.lock();
            self.room.1.notify_all();
        }
    }

    /// Frees a cell's boxed payload, if any, and hands the cell back to producers.
    fn take_payload(&self, cell: &Cell64) {
        if cell.len.get() > INLINE {
            // SAFETY: boxed in try_post; taken once.
            drop(unsafe { Box::from_raw((cell.data.get() as *const *mut [u8]).read_unaligned()) });
        }
    }

    fn release_cell(&self, cell: &Cell64, pos: u64) {
        self.take_payload(cell);
        cell.seq.store(pos + self.mask + 1, Release);
    }

    /// Delivers up to `max` events on this thread. Returns how many were delivered (dropped ones are counted
    /// in the stats, not here).
    pub(crate) fn drain(&self, max: usize, wait: Option<Duration>) -> Result<usize, Error> {
        let _consumer = self.consumer.lock();
        let me = sys::thread_id();
        let outer = self.drainer.swap(me, Relaxed) != me;
        let deadline = wait.map(|w| Instant::now() + w);
        let mut delivered = 0;
        let mut waited = false;
        self.sample_pending();
        // guards for the sinks of recent events, so events that alternate between a few sinks look each up once
        let mut held: [Option<(u64, Arc<Sink>)>; 4] = Default::default();
        let (mut next_held, mut last) = (0, 0);
        let mut seen_removals = SINK_REMOVALS.load(SeqCst);
        loop {
            while delivered < max {
                let pos = self.dequeue.load(Relaxed);
                let cell = &self.cells[(pos & self.mask) as usize];
                if cell.seq.load(Acquire) != pos + 1 {
                    if self.enqueue.load(SeqCst) & !CLOSED == pos {
                        break; // empty
                    }
                    // a producer has claimed the head cell and is still copying into it. Wait for it rather
                    // than sleep: it checked the idle flag before we could set it, so it would not wake us.
                    while cell.seq.load(Acquire) != pos + 1 {
                        std::thread::yield_now();
                    }
                }
                if pos % 64 == 0 {
                    self.sample_pending();
                }
                self.dequeue.store(pos + 1, Relaxed);
                let sink = cell.sink.get();
                let len = cell.len.get();
                // SAFETY: published by the release store we acquired.
                let ptr = unsafe {
                    if len <= INLINE {
                        cell.data.get() as *const u8
                    } else {
                        (*(cell.data.get() as *const *mut [u8])) as *const u8
                    }
                };
                let is = |g: &Option<(u64, Arc<Sink>)>| g.as_ref().is_some_and(|(h, _)| *h == sink);
                // the sink of the previous event first: runs of events to one sink are the common case
                let i = match if is(&held[last]) { Some(last) } else { held.iter().position(is) } {
                    Some(i) => i,
                    None => {
                        // dropping the guard replaced may run that sink's destroy: no event of ours is in use
                        next_held = (next_held + 1) % held.len();
                        held[next_held] = SINKS.get(sink).ok().map(|s| (sink, s));
                        next_held
                    }
                };
                // A sink unregistered since its guard was checked (on another thread, or by the sink itself)
                // gets no more events, and its guard goes now, so its destroy runs right after the delivery
                // that was in progress. Unregisters are counted, so a run with none costs one load.
                let removals = SINK_REMOVALS.load(SeqCst);
                if removals != seen_removals {
                    seen_removals = removals;
                    for g in held.iter_mut().filter(|g| g.as_ref().is_some_and(|(h, _)| !SINKS.is_live(*h))) {
                        *g = None;
                    }
                }
                last = i;
                match &held[i] {
                    Some((_, s)) => {
                        // the payload stays valid during the call: the cell is released after it
                        // SAFETY: the sink's own function and userdata.
                        unsafe { (s.func)(s.userdata as *mut c_void, ptr as *const c_void, len) };
                        self.delivered.fetch_add(1, Relaxed);
                        delivered += 1;
                    }
                    None => {
                        self.dropped.fetch_add(1, Relaxed);
                    }
                }
                self.release_cell(cell, pos);
            }
            self.wake_waiters();
            if delivered > 0 || delivered >= max || self.is_closed() {
                break;
            }
            // nothing yet: wait on the fd for the first event, if asked to
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => break,
            };
            // after a wake-up that brought nothing, the fd may be readable from a producer's write that
            // landed late (before it could flag it): reset it whatever the flags say
            if self.idle(waited) && !self.is_closed() {
                held = Default::default(); // hold no sink while waiting
                self.fd.wait_readable(Some(left)); // a post or close makes it readable
                waited = true;
            }
            if left.is_zero() {
                break;
            }
        }
        drop(held);
        self.sample_pending();
        if self.empty() {
            // a drain that found nothing may have been called for a readable fd with nothing behind it
            self.idle(delivered == 0);
        }
        if outer {
            self.drainer.store(0, Relaxed);
        }
        Ok(delivered)
    }

    /// The consumer found the queue empty: make the fd unreadable and arm the first post to write it.
    /// Returns true if the queue is (still) empty, false if a post slipped in (the fd stays readable).
    /// Without `force`, an armed queue whose fd no post has written since is left as it is (no system call).
    fn idle(&self, force: bool) -> bool {
        if self.is_closed() {
            return self.empty(); // a closed queue's fd stays readable
        }
        if !force && self.armed.load(SeqCst) && !self.signalled.load(SeqCst) {
            return self.empty(); // armed, and no write since: the fd is not readable
        }
        self.signalled.store(false, SeqCst);
        self.fd.reset();
        self.armed.store(true, SeqCst);
        fence(SeqCst);
        if self.is_closed() {
            // closed after the check above: its signal may have been the one just reset
            self.fd.signal();
            return self.empty();
        }
        if self.empty() {
            return true;
        }
        // a post came in between: keep the fd readable, unless that post already saw `armed`
        if self.armed.swap(false, SeqCst) {
            self.fd.signal();
        }
        false
    }

    fn empty(&self) -> bool {
        self.dequeue.load(Relaxed) == self.enqueue.load(SeqCst) & !CLOSED
    }

    pub(crate) fn fd(&self) -> c_int {
        self.fd.raw()
    }

    /// Records the events pending now in the high-water mark; returns (posted so far, pending now).
    fn sample_pending(&self) -> (u64, u64) {
        let enq = self.enqueue.load(Acquire) & !CLOSED;
        let pending = enq - self.dequeue.load(Relaxed).min(enq);
        self.high_water.fetch_max(pending, Relaxed);
        (enq, pending)
    }

    pub(crate) fn stats(&self) -> cb_queue_stats {
        let (posted, pending) = self.sample_pending();
        cb_queue_stats {
            posted,
            delivered: self.delivered.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            full_rejections: self.full.load(Relaxed),
            high_water: self.high_water.load(Relaxed),
            pending,
            capacity: self.mask + 1,
        }
    }

    /// Closes: refuses producers from now on and wakes every blocked caller; delivers (on this thread) or
    /// drops what is pending; then unregisters every sink (their destroys run once, when no delivery to
    /// them runs any more). Closing twice is an error.
    pub(crate) fn close(&self, deliver: bool) -> Result<(), Error> {
        let before = self.enqueue.fetch_or(CLOSED, SeqCst);
        if before & CLOSED != 0 {
            return Err(Error::Closed("the queue was already closed"));
        }
        // before taking the consumer side: a drain blocked on the fd holds it until it wakes
        self.fd.signal();
        self.wake_waiters();
        let _consumer = self.consumer.lock();
        // posts that won their CAS before the close may still be writing their cell: wait for them
        let end = before & !CLOSED;
        for pos in self.dequeue.load(Relaxed)..end {
            let cell = &self.cells[(pos & self.mask) as usize];
            while cell.seq.load(Acquire) != pos + 1 {
                std::thread::yield_now();
            }
        }
        self.sample_pending();
        if deliver {
            self.drain(usize::MAX, None)?;
        }
        let mut pos = self.dequeue.load(Relaxed);
        while pos < end {
            self.release_cell(&self.cells[(pos & self.mask) as usize], pos);
            self.dropped.fetch_add(1, Relaxed);
            pos += 1;
        }
        self.dequeue.store(pos, Relaxed);
        let sinks: Vec<u64> = core::mem::take(&mut *self.sinks.lock());
        for s in sinks {
            drop(remove_sink(s)); // fails only for a sink being unregistered right now
        }
        self.fd.signal(); // readable for good: a consumer waiting on it finds the queue closed
        Ok(())
    }
}

unsafe extern "C" fn entry_post_int(ud: *mut c_void, data: *const c_void, len: c_int) -> c_int {
    if len < 0 {
        set_last_error("cb_queue entry", format_args!("negative length {len}"));
        return 0;
    }
    entry_post(ud, data, len as usize)
}

unsafe extern "C" fn entry_post_size(ud: *mut c_void, data: *const c_void, len: usize) -> c_int {
    entry_post(ud, data, len)
}

/// A bare entry's body: 1 when posted, 0 when not (a stale call through the entry also returns 0).
fn entry_post(ud: *mut c_void, data: *const c_void, len: usize) -> c_int {
    abort_on_panic("panic while posting through a queue entry", || {
        // SAFETY: the caller's buffer of `len` bytes, read before the post returns.
        match unsafe { payload(NonNull::new(data.cast_mut()), len) }
            .and_then(|bytes| post(ud as usize as u64, bytes, None))
        {
            Ok(()) => 1,
            Err(e) => {
                set_last_error("cb_queue entry", format_args!("{e}"));
                0
            }
        }
    })
}

/// The caller's `len` bytes at `data` as a slice (`data` may be NULL when `len` is 0).
///
/// # Safety
/// `data` points to `len` readable bytes for the life of the slice.
pub(crate) unsafe fn payload<'a>(data: Option<NonNull<c_void>>, len: usize) -> Result<&'a [u8], Error> {
    if len == 0 {
        return Ok(&[]);
    }
    let data = data.ok_or(Error::NullArg("data"))?;
    if len > isize::MAX as usize {
        return Err(Error::InvalidArg("len is larger than PTRDIFF_MAX"));
    }
    // SAFETY: the caller's promise, and the length is one a slice may have.
    Ok(unsafe { core::slice::from_raw_parts(data.cast::<u8>().as_ptr(), len) })
}

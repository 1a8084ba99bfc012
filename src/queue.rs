//! The cross-thread delivery queue: producers on any thread post copies of byte payloads to *sinks*; the
//! consumer drains batches on the thread it chooses; an eventfd is readable exactly when events are
//! pending, for epoll / libevent / Go's poller.
//!
//! * The ring is a bounded multi-producer queue of 64-byte cells (Vyukov's sequence-numbered ring):
//!   posting is one compare-and-swap on the enqueue position, a copy into the cell and one release store.
//!   Payloads of up to [`INLINE`] bytes live in the cell (no allocation); larger ones are boxed.
//! * Closing is a bit in the enqueue position, so "closed" and "enqueued" are decided by the same CAS: no
//!   post is accepted after `close` returns.
//! * The eventfd is only touched when the consumer goes idle (it resets the fd and arms a flag) and by the
//!   first post after that (it sees the flag and writes the fd): busy queues make no system calls.
//! * Sinks are handles. A post reads its sink's queue from a side table after validating the handle
//!   (seqlock, no write), then marks the thread as inside that queue ([`inflight::enter`]) and validates
//!   again; freeing a queue invalidates its sinks and waits out a grace period before the memory goes, so
//!   the post path needs no reference count.
//! * Delivery holds a reference to the sink while its function runs; an event whose sink is gone is dropped
//!   and counted. The consumer side is a re-entrant lock: one consumer thread at a time, and a sink may
//!   drain re-entrantly (it continues from the head of the queue).

use crate::callback::{CALLBACKS, RawFn, inflight};
use crate::error::Error;
use crate::ffi::cb_queue_stats;
use crate::handle::{Kind, Registry, Slot};
use crate::segvec::SegVec;
use core::cell::Cell;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*, fence};
use parking_lot::{Condvar, Mutex, ReentrantMutex};
use std::time::{Duration, Instant};

/// Payload bytes kept inside a cell; larger payloads are copied to the heap.
pub(crate) const INLINE: usize = crate::ffi::CB_QUEUE_INLINE_BYTES as usize;
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
    fd: c_int,
    /// The consumer is idle and has reset the fd: the next post must write it.
    armed: AtomicBool,
    /// Producers waiting for room (`post_wait`).
    waiters: AtomicUsize,
    room: (Mutex<()>, Condvar),
    delivered: AtomicU64,
    dropped: AtomicU64,
    full: AtomicU64,
    high_water: AtomicU64,
    /// The queue's own handle, and its sinks (for close and free).
    handle: AtomicU64,
    sinks: Mutex<Vec<u64>>,
    /// Thread id of the thread draining right now (0 = none), for `post_wait`'s deadlock check.
    drainer: AtomicU64,
}

// SAFETY: a cell's plain fields are written by the one producer that claimed it and read by the consumer
// after the release/acquire handshake on `seq`.
unsafe impl Sync for Queue {}
unsafe impl Send for Queue {}

struct Sink {
    func: SinkFn,
    userdata: usize,
    destroy: Option<DestroyFn>,
    /// Bare entries made for this sink (`cb_queue_sink_entry`); unregistered with it.
    entries: Mutex<Vec<u64>>,
}

static QUEUE_SLOTS: SegVec<Slot> = SegVec::new();
static QUEUES: Registry = Registry::new(Kind::Queue, &QUEUE_SLOTS);
static SINK_SLOTS: SegVec<Slot> = SegVec::new();
static SINKS: Registry = Registry::new(Kind::Sink, &SINK_SLOTS);
/// Sink slot index -> address of its queue. Never freed, so a post may read it before it knows the sink
/// is live (it validates before and after).
static SINK_QUEUE: SegVec<AtomicUsize> = SegVec::new();

fn thread_id() -> u64 {
    // SAFETY: plain system call.
    unsafe { libc::syscall(libc::SYS_gettid) as u64 }
}

unsafe extern "C" fn drop_sink(p: *mut c_void) {
    // SAFETY: registered from Box::into_raw in `sink_register`.
    let sink = unsafe { Box::from_raw(p as *mut Sink) };
    for h in sink.entries.lock().drain(..) {
        let _ = CALLBACKS.unregister(h);
    }
    if let Some(destroy) = sink.destroy {
        // SAFETY: the user's destroy, exactly once (the registry runs this once).
        unsafe { destroy(sink.userdata as *mut c_void) };
    }
}

unsafe extern "C" fn drop_queue(p: *mut c_void) {
    // SAFETY: registered from Box::into_raw in `new_queue`.
    let q = unsafe { Box::from_raw(p as *mut Queue) };
    // no post can be inside it any more (see `free`); drop what is left
    let mut pos = q.dequeue.load(Relaxed);
    let end = q.enqueue.load(Relaxed) & !CLOSED;
    while pos < end {
        q.take_payload(&q.cells[(pos & q.mask) as usize]);
        pos += 1;
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(q.fd) };
}

/// Runs `f` on the queue named by `handle`, holding a reference meanwhile.
pub(crate) fn with_queue<T>(handle: u64, f: impl FnOnce(&Queue) -> Result<T, Error>) -> Result<T, Error> {
    // SAFETY: QUEUES only holds boxed `Queue`s.
    unsafe { QUEUES.with_ref(handle, f) }.unwrap_or(Err(Error::InvalidArg("not a live cb_queue (NULL, freed or garbage)")))
}

pub(crate) fn new_queue(capacity: usize) -> Result<u64, Error> {
    if capacity == 0 || capacity > 1 << 30 {
        return Err(Error::InvalidArg("capacity must be 1 .. 2^30 events"));
    }
    let n = capacity.next_power_of_two();
    // SAFETY: plain system call.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(Error::NoMemory("eventfd failed (out of descriptors?)"));
    }
    let cells: Box<[Cell64]> = (0..n as u64)
        .map(|i| Cell64 { seq: AtomicU64::new(i), sink: Cell::new(0), len: Cell::new(0), data: core::cell::UnsafeCell::new([0; INLINE]) })
        .collect();
    let q = Box::new(Queue {
        cells,
        mask: n as u64 - 1,
        enqueue: AtomicU64::new(0),
        dequeue: AtomicU64::new(0),
        consumer: ReentrantMutex::new(()),
        fd,
        armed: AtomicBool::new(true), // empty, fd not readable: the first post writes it
        waiters: AtomicUsize::new(0),
        room: (Mutex::new(()), Condvar::new()),
        delivered: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        full: AtomicU64::new(0),
        high_water: AtomicU64::new(0),
        handle: AtomicU64::new(0),
        sinks: Mutex::new(Vec::new()),
        drainer: AtomicU64::new(0),
    });
    let raw = Box::into_raw(q);
    let h = QUEUES.insert(raw as *mut c_void, Some(drop_queue)).inspect_err(|_| {
        // SAFETY: not registered, still ours.
        unsafe { drop_queue(raw as *mut c_void) };
    })?;
    // SAFETY: registered above; alive until freed.
    unsafe { &*raw }.handle.store(h, Relaxed);
    Ok(h)
}

pub(crate) fn sink_register(queue: u64, func: SinkFn, userdata: *mut c_void, destroy: Option<DestroyFn>) -> Result<u64, Error> {
    with_queue(queue, |q| {
        if q.enqueue.load(Acquire) & CLOSED != 0 {
            return Err(Error::Closed("the queue is closed"));
        }
        let sink = Box::into_raw(Box::new(Sink { func, userdata: userdata as usize, destroy, entries: Mutex::new(Vec::new()) }));
        let mut sinks = q.sinks.lock();
        // registered without a destroy until its queue is known, so a failure here takes nothing of the user's
        let h = SINKS.insert(sink as *mut c_void, None).inspect_err(|_| {
            // SAFETY: not registered, still ours.
            drop(unsafe { Box::from_raw(sink) });
        })?;
        let Some(cell) = SINK_QUEUE.get_or_grow(h as u32) else {
            let _ = SINKS.release(h);
            // SAFETY: no longer registered, still ours.
            drop(unsafe { Box::from_raw(sink) });
            return Err(Error::NoMemory("growing the sink table"));
        };
        cell.store(q as *const Queue as usize, Release);
        SINKS.set_destroy(h, drop_sink);
        sinks.push(h);
        Ok(h)
    })
}

/// Unregisters a sink: its pending events are dropped when reached; its destroy runs once no delivery to
/// it is in progress.
pub(crate) fn sink_unregister(sink: u64) -> Result<(), Error> {
    let q = queue_of(sink)?;
    let _inside = inflight::enter(q);
    if SINKS.get(sink).is_err() {
        return Err(Error::InvalidHandle(sink, "is not a live sink (unregistered, or its queue closed)"));
    }
    // SAFETY: alive while we are inside it and the sink was live after we entered (see `post`).
    unsafe { &*(q as *const Queue) }.sinks.lock().retain(|&s| s != sink);
    SINKS.release(sink).map_err(|_| Error::InvalidHandle(sink, "was already unregistered"))
}

fn queue_of(sink: u64) -> Result<usize, Error> {
    SINKS.get(sink).map_err(|e| match e {
        Error::InvalidHandle(h, why) if why.starts_with("is stale") => {
            Error::InvalidHandle(h, "is not a live sink (unregistered, or its queue closed)")
        }
        e => e,
    })?;
    // a live sink's queue was stored before its handle was handed out
    Ok(SINK_QUEUE.get(sink as u32).map_or(0, |c| c.load(Acquire))).and_then(|q| {
        if q == 0 { Err(Error::InvalidHandle(sink, "is not a live sink")) } else { Ok(q) }
    })
}

/// The handle of the queue a live sink belongs to.
pub(crate) fn queue_handle_of_sink(sink: u64) -> Result<u64, Error> {
    let q = queue_of(sink)?;
    let _inside = inflight::enter(q);
    SINKS.get(sink).map_err(|_| Error::InvalidHandle(sink, "is not a live sink"))?;
    // SAFETY: alive while we are inside it (see `post`).
    Ok(unsafe { &*(q as *const Queue) }.handle.load(Relaxed))
}

/// Posts a copy of `data` to `sink`. With `wait`, waits up to that long for room.
pub(crate) fn post(sink: u64, data: &[u8], wait: Option<Duration>) -> Result<(), Error> {
    let q = queue_of(sink)?;
    let _inside = inflight::enter(q);
    // validate again now that the queue cannot be freed under us (see the module docs)
    SINKS.get(sink).map_err(|_| Error::InvalidHandle(sink, "is not a live sink (unregistered, or its queue closed)"))?;
    // SAFETY: alive: its sinks are only invalidated before a grace period that would see `_inside`.
    let q = unsafe { &*(q as *const Queue) };
    match q.try_post(sink, data) {
        Err(Error::Capacity(_)) if wait.is_some() => q.post_wait(sink, data, wait.expect("checked")),
        other => other,
    }
}

impl Queue {
    fn try_post(&self, sink: u64, data: &[u8]) -> Result<(), Error> {
        let mut pos = self.enqueue.load(Relaxed);
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
            if data.len() <= INLINE {
                core::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len());
            } else {
                let boxed: Box<[u8]> = data.into();
                (dst as *mut *mut [u8]).write_unaligned(Box::into_raw(boxed));
            }
        }
        cell.seq.store(pos + 1, Release);
        let pending = (pos + 1).saturating_sub(self.dequeue.load(Relaxed));
        if pending > self.high_water.load(Relaxed) {
            self.high_water.fetch_max(pending, Relaxed);
        }
        // the consumer went idle: wake its fd (pairs with the SeqCst store + load in `idle`)
        if self.armed.load(SeqCst) && self.armed.swap(false, SeqCst) {
            self.signal();
        }
        Ok(())
    }

    fn post_wait(&self, sink: u64, data: &[u8], wait: Duration) -> Result<(), Error> {
        if self.drainer.load(Relaxed) == thread_id() {
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

    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes to our eventfd.
        unsafe { libc::write(self.fd, (&one as *const u64).cast(), 8) };
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
        let me = thread_id();
        let outer = self.drainer.swap(me, Relaxed) != me;
        let deadline = wait.map(|w| Instant::now() + w);
        let mut delivered = 0;
        let mut held: Option<(u64, &Sink)> = None;
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
                self.dequeue.store(pos + 1, Relaxed);
                let sink = cell.sink.get();
                let len = cell.len.get();
                // SAFETY: published by the release store we acquired.
                let ptr = unsafe {
                    if len <= INLINE { cell.data.get() as *const u8 } else { (*(cell.data.get() as *const *mut [u8])) as *const u8 }
                };
                if held.is_none_or(|(h, _)| h != sink) {
                    if let Some((h, _)) = held.take() {
                        let _ = SINKS.release(h);
                    }
                    if SINKS.retain(sink).is_ok() {
                        // SAFETY: retained; SINKS only holds boxed `Sink`s.
                        held = Some((sink, unsafe { &*(SINKS.get(sink).expect("retained") as *const Sink) }));
                    }
                }
                match held {
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
            if self.waiters.load(SeqCst) != 0 {
                let _g = self.room.0.lock();
                self.room.1.notify_all();
            }
            if delivered > 0 || delivered >= max || self.enqueue.load(Acquire) & CLOSED != 0 {
                break;
            }
            // nothing yet: wait on the fd for the first event, if asked to
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => break,
            };
            if self.idle() {
                let mut pfd = libc::pollfd { fd: self.fd, events: libc::POLLIN, revents: 0 };
                let ms = left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as c_int;
                // SAFETY: one pollfd on our eventfd.
                unsafe { libc::poll(&mut pfd, 1, ms) };
            }
            if left.is_zero() {
                break;
            }
        }
        if let Some((h, _)) = held {
            let _ = SINKS.release(h);
        }
        if self.dequeue.load(Relaxed) == self.enqueue.load(SeqCst) & !CLOSED {
            self.idle();
        }
        if outer {
            self.drainer.store(0, Relaxed);
        }
        Ok(delivered)
    }

    /// The consumer found the queue empty: make the fd unreadable and arm the first post to write it.
    /// Returns true if the queue is (still) empty, false if a post slipped in (the fd stays readable).
    fn idle(&self) -> bool {
        if self.enqueue.load(Acquire) & CLOSED != 0 {
            return self.empty(); // a closed queue's fd stays readable
        }
        if self.armed.load(SeqCst) {
            return self.empty();
        }
        let mut buf = 0u64;
        // SAFETY: reading our eventfd (non-blocking): it is unreadable afterwards.
        unsafe { libc::read(self.fd, (&mut buf as *mut u64).cast(), 8) };
        self.armed.store(true, SeqCst);
        fence(SeqCst);
        if self.empty() {
            return true;
        }
        // a post came in between: keep the fd readable, unless that post already saw `armed`
        if self.armed.swap(false, SeqCst) {
            self.signal();
        }
        false
    }

    fn empty(&self) -> bool {
        self.dequeue.load(Relaxed) == self.enqueue.load(SeqCst) & !CLOSED
    }

    pub(crate) fn fd(&self) -> c_int {
        self.fd
    }

    pub(crate) fn stats(&self) -> cb_queue_stats {
        let enq = self.enqueue.load(Acquire) & !CLOSED;
        cb_queue_stats {
            posted: enq,
            delivered: self.delivered.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            full_rejections: self.full.load(Relaxed),
            high_water: self.high_water.load(Relaxed),
            pending: enq - self.dequeue.load(Relaxed).min(enq),
            capacity: self.mask + 1,
        }
    }

    /// Closes: refuses producers from now on; delivers (on this thread) or drops what is pending; then
    /// unregisters every sink (their destroys run once). Closing twice is an error.
    pub(crate) fn close(&self, deliver: bool) -> Result<(), Error> {
        let _consumer = self.consumer.lock();
        let before = self.enqueue.fetch_or(CLOSED, SeqCst);
        if before & CLOSED != 0 {
            return Err(Error::Closed("the queue was already closed"));
        }
        // posts that won their CAS before the close may still be writing their cell: wait for them
        let end = before & !CLOSED;
        for pos in self.dequeue.load(Relaxed)..end {
            let cell = &self.cells[(pos & self.mask) as usize];
            while cell.seq.load(Acquire) != pos + 1 {
                std::thread::yield_now();
            }
        }
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
            let _ = SINKS.release(s);
        }
        self.signal(); // a consumer blocked on the fd wakes up and finds the queue closed
        Ok(())
    }

    /// Makes a bare entry for `sink`: `entry(data, len)` posts a copy.
    pub(crate) fn entry(&self, sink: u64, len_is_int: bool) -> Result<usize, Error> {
        // SAFETY: the real signatures, with the sink handle in front.
        let f: RawFn = unsafe {
            if len_is_int {
                core::mem::transmute(entry_post_int as unsafe extern "C" fn(_, _, _) -> _)
            } else {
                core::mem::transmute(entry_post_size as unsafe extern "C" fn(_, _, _) -> _)
            }
        };
        // SAFETY: SINKS only holds boxed `Sink`s.
        unsafe {
            SINKS.with_ref(sink, |s: &Sink| -> Result<usize, Error> {
                let (h, entry) = CALLBACKS.register(f, sink as usize as *mut c_void, None)?;
                s.entries.lock().push(h);
                Ok(entry)
            })
        }
        .unwrap_or(Err(Error::InvalidHandle(sink, "is not a live sink")))
    }
}

/// Frees a queue: closes it (dropping pending events) if needed, waits until no post is inside it, frees.
pub(crate) fn free(handle: u64) -> Result<(), Error> {
    let addr = with_queue(handle, |q| {
        match q.close(false) {
            Ok(()) | Err(Error::Closed(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(q as *const Queue as usize)
    })?;
    // its sinks are invalid now; a post that got in before that is marked inside it: wait those out
    inflight::wait_until_no_one_inside(addr);
    QUEUES.release(handle).map_err(|_| Error::InvalidArg("not a live cb_queue (freed twice?)"))
}

unsafe extern "C" fn entry_post_int(ud: *mut c_void, data: *const c_void, len: c_int) -> c_int {
    if len < 0 {
        crate::error::set_last_error("cb_queue entry", format_args!("negative length {len}"));
        return -1;
    }
    entry_post(ud, data, len as usize)
}

unsafe extern "C" fn entry_post_size(ud: *mut c_void, data: *const c_void, len: usize) -> c_int {
    entry_post(ud, data, len)
}

fn entry_post(ud: *mut c_void, data: *const c_void, len: usize) -> c_int {
    let run = || {
        if data.is_null() && len != 0 {
            return Err(Error::NullArg("data"));
        }
        // SAFETY: the caller's buffer of `len` bytes.
        let bytes = if len == 0 { &[][..] } else { unsafe { core::slice::from_raw_parts(data as *const u8, len) } };
        post(ud as usize as u64, bytes, None)
    };
    match std::panic::catch_unwind(run) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            crate::error::set_last_error("cb_queue entry", format_args!("{e}"));
            -1
        }
        Err(_) => crate::callback::fatal("panic while posting through a queue entry"),
    }
}

//! The callback slot table: `cb_register` binds `fn` + `userdata` to a unique bare C function pointer (an
//! *entry*: a trampoline stub), and `cb_unregister` retires it safely while other threads may be inside it.
//!
//! * Storage: blocks of [`arch::SLOTS_PER_BLOCK`] stubs ([`tramp`]), mapped on demand, never unmapped, each
//!   of one kind (tracked or untracked entries) with its unwind information registered ([`unwind`]).
//!   Slot `i` lives in block `i / SLOTS_PER_BLOCK`. Per-slot control data (`Meta`: state word and destroy)
//!   is kept apart from the `{fn, userdata}` data slot the stub reads.
//! * Life of a tracked slot: `free` → `live` (register) → `pending` (unregister: `fn` cleared, so new calls
//!   are stale) → destroyed once no thread is inside it (a grace period, [`inflight`]) → quarantined at the
//!   back of its kind's FIFO → reused once more than [`QUARANTINE`] slots are queued behind it. An untracked
//!   slot is destroyed in `unregister` itself (its caller promised that no call is in flight).
//! * Grace periods are batched. One runs on the unregistering thread when [`BATCH`] unregisters are
//!   pending. Besides, by default, a reclaimer thread (started by the first unregister) runs one about half
//!   the reclaim delay after a slot becomes pending, and again every half delay while some stay in flight;
//!   with the delay set to 0 there is no such thread. `cb_barrier` / `cb_unregister_wait` run one when they
//!   need it.
//!   `destroy(userdata)` runs on the thread running the grace period, outside every lock.

pub(crate) mod arch;
mod gdbjit;
mod tramp;
mod unwind;

use crate::error::{Error, abort_on_panic, fatal};
use crate::handle::{GEN_MAX, Kind, check_kind, pack};
use crate::inflight;
use crate::segvec::{SegVec, Zeroed};
use crate::sys::{ForkLock, FutexMutex};
use core::cell::Cell;
use core::ffi::c_void;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};
use parking_lot::Mutex;
use parking_lot::lock_api::RawMutex as _;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use arch::{SLOT_BYTES, SLOT_OFFSET, SLOTS_PER_BLOCK, STUB_BYTES, TABLE_BYTES, TABLES, TRACKED, UNTRACKED};

/// Callback entries work on this platform (trampolines for its architecture and OS were built in).
pub(crate) const SUPPORTED: bool = arch::SUPPORTED;

/// Freed callback slots wait in a FIFO quarantine until this many later freed slots have queued behind
/// them; only then is an entry reused for a new registration, so a late call is caught as stale meanwhile.
pub const CB_QUARANTINE_SLOTS: u32 = 4096;

/// A grace period (which runs the due destroy notifications) starts at the latest when this many
/// unregisters are pending, and whenever `cb_barrier` or `cb_unregister_wait` needs one.
pub const CB_GRACE_BATCH: u32 = 256;

/// `cb_register_ex` flag: an *untracked* entry. See `cb_register_ex`.
pub const CB_REGISTER_UNTRACKED: u32 = 1;

/// The reclaim delay a process starts with, in milliseconds (see `cb_set_reclaim_delay`), unless the
/// environment variable `CBSLOT_RECLAIM_DELAY_MS` says otherwise.
pub const CB_RECLAIM_DELAY_DEFAULT_MS: u32 = 10;

/// The longest reclaim delay `cb_set_reclaim_delay` accepts: one hour.
pub const CB_RECLAIM_DELAY_MAX_MS: u32 = 3_600_000;

/// Callback-table counters, filled by `cb_get_stats`. Fields may be added at the end in later versions.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct cb_stats {
    /// Registered callbacks that have not been unregistered.
    pub live: u64,
    /// Highest `live` seen.
    pub peak: u64,
    /// Slots mapped so far (live + pending + quarantined + never used); grows on demand.
    pub capacity: u64,
    /// Successful `cb_register` calls.
    pub registered_total: u64,
    /// Successful `cb_unregister` / `cb_unregister_wait` calls.
    pub unregistered_total: u64,
    /// destroy notifications run (or due with a NULL destroy) for unregistered callbacks.
    pub destroyed_total: u64,
    /// Unregistered callbacks whose destroy has not run yet (`unregistered_total - destroyed_total`).
    pub pending_destroy: u64,
    /// Calls through entries whose registration was gone.
    pub stale_calls: u64,
}

const QUARANTINE: usize = CB_QUARANTINE_SLOTS as usize;
const BATCH: usize = CB_GRACE_BATCH as usize;

/// A registration's function, userdata destroy, watermark and stale handlers, as C gives them.
pub(crate) type RawFn = unsafe extern "C" fn();
pub(crate) type DestroyFn = unsafe extern "C" fn(*mut c_void);
pub(crate) type StaleFn = unsafe extern "C" fn(Option<RawFn>, *mut c_void);
pub(crate) type WatermarkFn = unsafe extern "C" fn(u64, *mut c_void);

const FREE: u32 = 0;
const LIVE: u32 = 1;
const PENDING: u32 = 2;

struct Meta {
    /// handle's upper half (kind | generation) << 32 | status; a free slot holds its next generation, a
    /// never-used one 0.
    state: AtomicU64,
    destroy: AtomicUsize,
}

// SAFETY: atomics only; zero = a never-used free slot.
unsafe impl Zeroed for Meta {}

/// The `{fn, userdata}` pair a stub's dispatcher reads.
#[repr(C)]
struct DataSlot {
    func: AtomicUsize,
    userdata: AtomicUsize,
}

struct Watermark {
    threshold: u64,
    func: WatermarkFn,
    arg: usize,
    armed: bool,
}

/// Which unregisters (numbered in order) have had their destroy run.
struct Done {
    base: u64,
    flags: VecDeque<bool>,
}

impl Done {
    fn next_seq(&self) -> u64 {
        self.base + self.flags.len() as u64
    }
    fn push(&mut self) -> u64 {
        self.flags.push_back(false);
        self.next_seq() - 1
    }
    /// Marks `seq` done (again: a no-op).
    fn mark(&mut self, seq: u64) {
        match seq.checked_sub(self.base).and_then(|i| self.flags.get_mut(i as usize)) {
            Some(flag) => *flag = true,
            None => return,
        }
        while self.flags.front() == Some(&true) {
            self.flags.pop_front();
            self.base += 1;
        }
    }
    fn is_done(&self, seq: u64) -> bool {
        seq < self.base || self.flags.get((seq - self.base) as usize) == Some(&true)
    }
}

/// The slots of one kind of entry: its quarantine and the part of its newest block not handed out yet.
#[derive(Default)]
struct Pool {
    quarantine: VecDeque<u32>,
    next: u64,
    end: u64,
}

/// The reclaimer thread's settings and identity.
struct Reclaimer {
    /// Milliseconds; `None` until first needed (then `CBSLOT_RECLAIM_DELAY_MS` or the default).
    delay_ms: Option<u32>,
    /// The running reclaimer's number; a reclaimer that finds another number here (or none) exits.
    running: Option<u64>,
    /// The number the next reclaimer gets.
    started: u64,
    /// The process is exiting: no reclaimer from now on.
    exiting: bool,
}

/// Where blocks are mapped from, once a register has needed one.
enum SourceState {
    /// Not opened yet, or the last try failed for a reason that can pass.
    Unopened,
    Open(tramp::Source),
    /// Opening failed for a reason that will not pass (no /proc and no memfd, a source that does not hold
    /// the library's code): every later register gets this error at once.
    Refused(Error),
}

struct Inner {
    source: SourceState,
    blocks: u64,
    pools: [Pool; TABLES],
    pending: Vec<(u32, u64)>,
    /// Unregisters since the last grace period started (what triggers the next one).
    since_grace: usize,
    done: Done,
    /// Destroys due (their grace period has passed) that no thread has started yet: any thread that runs
    /// destroys or waits for them takes from here, oldest first.
    ready: VecDeque<Due>,
    /// Destroys some thread is inside right now.
    running: Vec<u64>,
    /// Waits (`wait_done`) in progress inside destroys, on any thread: only such a destroy can be waiting
    /// for a slot some other waiter is inside.
    nested_waits: usize,
    /// Counters, kept in the C API's own shape (`pending_destroy` and `stale_calls` are filled on read).
    stats: cb_stats,
    limit: u64,
    watermark: Option<Watermark>,
    reclaimer: Reclaimer,
}

pub(crate) struct Callbacks {
    inner: ForkLock<Inner>,
    /// Held while a grace period decides what to destroy (not while destroys run).
    grace: ForkLock<()>,
    /// Separate all-zero statics, so their 512 KiB chunk tables land in .bss, not in the library file.
    meta: &'static SegVec<Meta>,
    /// Block number → address of its code | its kind.
    blocks: &'static SegVec<AtomicUsize>,
    stale_calls: AtomicU64,
    stale_handler: Mutex<(Option<StaleFn>, usize)>,
}

pub(crate) static CALLBACKS: Callbacks = Callbacks::new();
/// Wakes the reclaimer: when a slot becomes pending with none before it, and when it must stop.
static RECLAIM_WAKE: crate::sys::Futex = crate::sys::Futex::new();
static META: SegVec<Meta> = SegVec::new();
static BLOCKS: SegVec<AtomicUsize> = SegVec::new();

/// A destroy notification due: `(destroy, userdata, unregister seq)`.
type Due = (usize, usize, u64);

thread_local! {
    /// How many destroy notifications this thread is inside (a plain counter: no destructor, so it works
    /// in thread-exit destructors too).
    static IN_DESTROY: Cell<usize> = const { Cell::new(0) };
}

thread_local! {
    /// This thread's part of `Inner::nested_waits`.
    static NESTED_WAITS: Cell<usize> = const { Cell::new(0) };
}

/// One wait inside a destroy, counted in `Inner::nested_waits` (and this thread's share) while it lasts.
struct NestedWait<'a>(&'a Callbacks);

impl<'a> NestedWait<'a> {
    fn enter(callbacks: &'a Callbacks) -> Self {
        callbacks.inner.lock().nested_waits += 1;
        let _ = NESTED_WAITS.try_with(|n| n.set(n.get() + 1));
        NestedWait(callbacks)
    }
}

impl Drop for NestedWait<'_> {
    fn drop(&mut self) {
        let _ = NESTED_WAITS.try_with(|n| n.set(n.get().saturating_sub(1)));
        let mut g = self.0.inner.lock();
        g.nested_waits = g.nested_waits.saturating_sub(1);
    }
}

fn in_destroy() -> bool {
    IN_DESTROY.try_with(Cell::get).unwrap_or(0) > 0
}

fn state(tag: u32, status: u32) -> u64 {
    (tag as u64) << 32 | status as u64
}

impl Callbacks {
    const fn new() -> Self {
        Callbacks {
            inner: ForkLock::const_new(
                FutexMutex::INIT,
                Inner {
                    source: SourceState::Unopened,
                    blocks: 0,
                    pools: [const { Pool { quarantine: VecDeque::new(), next: 0, end: 0 } }; TABLES],
                    pending: Vec::new(),
                    since_grace: 0,
                    done: Done { base: 0, flags: VecDeque::new() },
                    ready: VecDeque::new(),
                    running: Vec::new(),
                    nested_waits: 0,
                    stats: cb_stats {
                        live: 0,
                        peak: 0,
                        capacity: 0,
                        registered_total: 0,
                        unregistered_total: 0,
                        destroyed_total: 0,
                        pending_destroy: 0,
                        stale_calls: 0,
                    },
                    limit: 0,
                    watermark: None,
                    reclaimer: Reclaimer { delay_ms: None, running: None, started: 0, exiting: false },
                },
            ),
            grace: ForkLock::const_new(FutexMutex::INIT, ()),
            meta: &META,
            blocks: &BLOCKS,
            stale_calls: AtomicU64::new(0),
            stale_handler: Mutex::new((None, 0)),
        }
    }

    fn block_word(&self, index: u32) -> usize {
        let block = index as usize / SLOTS_PER_BLOCK;
        self.blocks.get(block as u32).map_or(0, |b| b.load(Acquire))
    }

    fn block_code(&self, index: u32) -> usize {
        self.block_word(index) & !(TABLES - 1)
    }

    fn kind_of(&self, index: u32) -> usize {
        self.block_word(index) & (TABLES - 1)
    }

    /// The entry (stub address) of slot `index`.
    fn entry(&self, index: u32) -> usize {
        self.block_code(index) + SLOT_OFFSET + (index as usize % SLOTS_PER_BLOCK) * STUB_BYTES
    }

    fn data(&self, index: u32) -> &DataSlot {
        let addr = self.data_addr(index);
        // SAFETY: the slot's block is mapped (the slot was handed out) and never unmapped; two atomics.
        unsafe { &*(addr as *const DataSlot) }
    }

    fn data_addr(&self, index: u32) -> usize {
        self.block_code(index) + TABLE_BYTES + SLOT_OFFSET + (index as usize % SLOTS_PER_BLOCK) * SLOT_BYTES
    }

    /// Takes a slot index of `kind`: the oldest quarantined one once the quarantine is full, else a fresh
    /// one, mapping a new block when the kind's newest is used up.
    fn take_slot(&self, g: &mut Inner, kind: usize) -> Result<u32, Error> {
        if g.pools[kind].quarantine.len() > QUARANTINE {
            return Ok(g.pools[kind].quarantine.pop_front().expect("non-empty"));
        }
        if g.pools[kind].next == g.pools[kind].end {
            let first = g.blocks * SLOTS_PER_BLOCK as u64;
            if first + SLOTS_PER_BLOCK as u64 > crate::handle::MAX_SLOTS {
                return Err(Error::Capacity("every callback slot index is in use"));
            }
            if let SourceState::Refused(e) = g.source {
                return Err(e);
            }
            if let SourceState::Unopened = g.source {
                init_process();
                if !inflight::heavy_barrier_orders_others() {
                    // the dispatchers record calls with plain stores: only a real process-wide barrier orders them
                    return Err(Error::System(
                        "entries on this CPU need membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), Linux 4.14+ (and CBSLOT_BARRIER unset)",
                        libc::ENOSYS,
                    ));
                }
                match tramp::Source::open() {
                    Ok(source) => g.source = SourceState::Open(source),
                    Err(e) => {
                        // cb_register promises that a later call tries again when the cause can pass
                        if !tramp::can_pass(e) {
                            g.source = SourceState::Refused(e);
                        }
                        return Err(e);
                    }
                }
            }
            let cell = self.blocks.get_or_grow(g.blocks as u32).ok_or(Error::NoMemory("growing the block table"))?;
            let SourceState::Open(source) = &g.source else { unreachable!("opened above") };
            let code = source.map_block(kind)?;
            unwind::register_block(kind, code);
            cell.store(code | kind, Release);
            g.blocks += 1;
            g.stats.capacity += SLOTS_PER_BLOCK as u64;
            g.pools[kind].next = first;
            g.pools[kind].end = first + SLOTS_PER_BLOCK as u64;
        }
        let index = g.pools[kind].next as u32;
        self.meta.get_or_grow(index).ok_or(Error::NoMemory("growing the callback table"))?;
        g.pools[kind].next += 1;
        Ok(index)
    }

    pub(crate) fn register(
        &self,
        func: RawFn,
        userdata: *mut c_void,
        destroy: Option<DestroyFn>,
        flags: u32,
    ) -> Result<(u64, usize), Error> {
        if flags & !CB_REGISTER_UNTRACKED != 0 {
            return Err(Error::InvalidArg("unknown flag bits (the only flag is CB_REGISTER_UNTRACKED)"));
        }
        if !arch::SUPPORTED {
            return Err(Error::Unsupported(concat!(
                "callback trampolines are not implemented for ",
                env!("CBSLOT_TARGET")
            )));
        }
        let kind = if flags & CB_REGISTER_UNTRACKED != 0 { UNTRACKED } else { TRACKED };
        let mut g = self.inner.lock();
        if g.limit != 0 && g.stats.live >= g.limit {
            return Err(Error::Capacity("the callback limit set with cb_set_limit is reached"));
        }
        let index = self.take_slot(&mut g, kind)?;
        let meta = self.meta.get(index).expect("grown in take_slot");
        let generation = ((meta.state.load(Relaxed) >> 32) as u32 & GEN_MAX).max(1);
        let handle = pack(Kind::Callback, index, generation);
        meta.destroy.store(destroy.map_or(0, |f| f as usize), Relaxed);
        meta.state.store(state((handle >> 32) as u32, LIVE), Release);
        let data = self.data(index);
        data.userdata.store(userdata as usize, Relaxed);
        data.func.store(func as usize, Release); // callable from here on
        let s = &mut g.stats;
        s.live += 1;
        s.registered_total += 1;
        s.peak = s.peak.max(s.live);
        let live = s.live;
        let fire = g.watermark.as_mut().filter(|w| w.armed && live >= w.threshold).map(|w| {
            w.armed = false;
            (w.func, w.arg)
        });
        let entry = self.entry(index);
        drop(g);
        if let Some((func, arg)) = fire {
            // SAFETY: a watermark function the caller installed.
            unsafe { func(live, arg as *mut c_void) };
        }
        Ok((handle, entry))
    }

    /// Looks up a live callback handle; the error says what is wrong with it.
    fn check(&self, handle: u64) -> Result<u32, Error> {
        let (_, index) = check_kind(handle, Kind::Callback)?;
        let s = self.meta.get(index).map_or(0, |meta| meta.state.load(Acquire));
        if s == 0 {
            return Err(Error::InvalidHandle(handle, "was never issued (no registration ever used its slot)"));
        }
        if (s >> 32) as u32 == (handle >> 32) as u32 {
            match s as u32 {
                LIVE => return Ok(index),
                PENDING => return Err(Error::InvalidHandle(handle, "was already unregistered")),
                _ => {}
            }
        }
        Err(Error::InvalidHandle(handle, "is stale: its callback was unregistered"))
    }

    /// Frees a slot whose destroy is about to run: the next generation, or retired for good if the
    /// generations are used up. Returns its destroy and userdata.
    fn free_slot(&self, g: &mut Inner, index: u32) -> (usize, usize) {
        let meta = self.meta.get(index).expect("a slot that was handed out");
        let generation = (meta.state.load(Relaxed) >> 32) as u32 & GEN_MAX;
        meta.state.store(state(generation + 1, FREE), Release);
        if generation < GEN_MAX {
            g.pools[self.kind_of(index)].quarantine.push_back(index);
        }
        (meta.destroy.load(Relaxed), self.data(index).userdata.load(Relaxed))
    }

    /// Unregisters; returns the unregister's sequence number (for waiting on its destroy).
    pub(crate) fn unregister(&self, handle: u64) -> Result<u64, Error> {
        let index = self.check(handle)?;
        let mut g = self.inner.lock();
        let meta = self.meta.get(index).expect("checked");
        // re-check under the lock: another thread may have unregistered it since
        if meta
            .state
            .compare_exchange(
                state((handle >> 32) as u32, LIVE),
                state((handle >> 32) as u32, PENDING),
                AcqRel,
                Relaxed,
            )
            .is_err()
        {
            drop(g);
            return Err(self.check(handle).err().unwrap_or(Error::InvalidHandle(handle, "was already unregistered")));
        }
        self.data(index).func.store(0, Release); // new calls now take the stale path
        let seq = g.done.push();
        let s = &mut g.stats;
        s.live -= 1;
        s.unregistered_total += 1;
        let live = s.live;
        if let Some(w) = g.watermark.as_mut().filter(|w| live < w.threshold) {
            w.armed = true;
        }
        if self.kind_of(index) == UNTRACKED {
            // no call is in flight, by the registration's promise: destroy now, on this thread
            let (destroy, userdata) = self.free_slot(&mut g, index);
            if destroy == 0 {
                g.done.mark(seq);
                g.stats.destroyed_total += 1;
            } else {
                g.running.push(seq);
                drop(g);
                self.run_destroy((destroy, userdata, seq));
                Self::mark_finished(&mut self.inner.lock(), seq);
            }
            return Ok(seq);
        }
        g.pending.push((index, seq));
        g.since_grace += 1;
        // counting new unregisters, not pending ones, so slots kept in flight do not make every later
        // unregister pay for a grace period
        let batch_full = g.since_grace >= BATCH;
        // a full batch is run here, as with no reclaimer: under a stream of unregisters that costs this thread
        // one barrier per batch, where the reclaimer's barrier would interrupt this thread's CPU as well
        let first = g.pending.len() == 1 || g.reclaimer.running.is_none();
        let wake = !batch_full && first && self.reclaimer(&mut g);
        let inline = batch_full;
        drop(g);
        if wake {
            RECLAIM_WAKE.bump();
        }
        if inline {
            self.grace_period();
        }
        Ok(seq)
    }

    /// True if a reclaimer thread runs (started here if the delay asks for one and none runs); false when
    /// the delay is 0, the process is exiting, or no thread could be started (then grace periods run as with
    /// delay 0, and the next unregister tries again).
    fn reclaimer(&self, g: &mut Inner) -> bool {
        if g.reclaimer.exiting || reclaim_delay(g) == 0 {
            return false;
        }
        if g.reclaimer.running.is_none() {
            static AT_EXIT: std::sync::Once = std::sync::Once::new();
            AT_EXIT.call_once(|| {
                extern "C" fn exiting() {
                    let mut g = CALLBACKS.inner.lock();
                    g.reclaimer.exiting = true;
                    g.reclaimer.running = None;
                    drop(g);
                    RECLAIM_WAKE.bump();
                }
                // SAFETY: a plain function; the library is never unloaded (linked -z nodelete).
                unsafe { libc::atexit(exiting) };
            });
            extern "C" fn start(number: *mut c_void) -> *mut c_void {
                abort_on_panic("panic in cbslot's reclaimer thread", || CALLBACKS.reclaim_loop(number as u64));
                core::ptr::null_mut()
            }
            let number = g.reclaimer.started;
            g.reclaimer.started += 1;
            if crate::sys::spawn_detached(c"cbslot-reclaim", start, number as usize) {
                g.reclaimer.running = Some(number);
            }
        }
        g.reclaimer.running.is_some()
    }

    /// The reclaimer thread number `number`: a grace period half a delay after a slot becomes pending, and
    /// every half delay while some stay in flight; asleep while nothing is pending. Returns when it is no
    /// longer the reclaimer (the delay was set to 0, or the process is exiting).
    fn reclaim_loop(&self, number: u64) {
        // `None`: no longer the reclaimer; `Some(None)`: nothing pending; `Some(Some(w))`: half the delay
        let state = || {
            let mut g = self.inner.lock();
            (g.reclaimer.running == Some(number))
                .then(|| (!g.pending.is_empty()).then(|| Duration::from_micros(reclaim_delay(&mut g) as u64 * 500)))
        };
        loop {
            let seen = RECLAIM_WAKE.value();
            let Some(window) = state() else { return };
            if window.is_none() {
                RECLAIM_WAKE.wait(seen, None);
                continue;
            }
            // wait half a delay (the delay as it is now: it may be changed meanwhile), then a grace period
            let start = Instant::now();
            loop {
                let seen = RECLAIM_WAKE.value();
                let Some(window) = state() else { return };
                let Some(left) = window.and_then(|w| w.checked_sub(start.elapsed())).filter(|d| !d.is_zero()) else {
                    break;
                };
                RECLAIM_WAKE.wait(seen, Some(left));
            }
            self.grace_period();
        }
    }

    pub(crate) fn set_reclaim_delay(&self, ms: u32) -> Result<(), Error> {
        if ms > CB_RECLAIM_DELAY_MAX_MS {
            return Err(Error::InvalidArg("the reclaim delay is at most CB_RECLAIM_DELAY_MAX_MS (one hour)"));
        }
        let mut g = self.inner.lock();
        g.reclaimer.delay_ms = Some(ms);
        if ms == 0 {
            g.reclaimer.running = None;
        } else if !g.pending.is_empty() {
            // slots left pending by a delay of 0 get a reclaimer now
            self.reclaimer(&mut g);
        }
        drop(g);
        RECLAIM_WAKE.bump();
        Ok(())
    }

    /// One grace period: every pending slot that no thread is inside is freed and its destroy made ready;
    /// then this thread runs the ready destroys.
    fn grace_period(&self) {
        let guard = self.grace.lock();
        let batch = {
            let mut g = self.inner.lock();
            g.since_grace = 0;
            core::mem::take(&mut g.pending)
        };
        if !batch.is_empty() {
            let busy = inflight::scan();
            let mut g = self.inner.lock();
            for (index, seq) in batch {
                if busy.contains(self.data_addr(index)) {
                    g.pending.push((index, seq));
                    continue;
                }
                match self.free_slot(&mut g, index) {
                    (0, _) => {
                        g.done.mark(seq);
                        g.stats.destroyed_total += 1;
                    }
                    (destroy, userdata) => g.ready.push_back((destroy, userdata, seq)),
                }
            }
            let kept = !g.pending.is_empty();
            if kept && g.reclaimer.running.is_none() {
                // the delay may have been raised while this scan had the list out
                self.reclaimer(&mut g);
            }
            drop(g);
            // freed under the grace lock, which fork holds: an allocator that is not fork-safe (ASan's)
            // must not be inside a free of the reclaimer's when a fork copies it
            drop(busy);
            drop(guard);
            if kept {
                // a reclaimer that saw the list empty while this scan had it out sleeps with no limit
                RECLAIM_WAKE.bump();
            }
        } else {
            drop(guard);
        }
        self.run_ready();
    }

    /// Runs ready destroys, oldest first, until none is left (also ones another thread's grace period made
    /// ready: whoever is here runs them). One lock round per destroy: the previous is marked done as the
    /// next is taken.
    fn run_ready(&self) {
        let mut finished = None;
        loop {
            let mut g = self.inner.lock();
            if let Some(seq) = finished.take() {
                Self::mark_finished(&mut g, seq);
            }
            let Some(due) = g.ready.pop_front() else { return };
            g.running.push(due.2);
            drop(g);
            self.run_destroy(due);
            finished = Some(due.2);
        }
    }

    /// Runs one destroy (the caller has put it in `running` and marks it finished afterwards).
    fn run_destroy(&self, (destroy, userdata, _): Due) {
        let _ = IN_DESTROY.try_with(|d| d.set(d.get() + 1));
        // SAFETY: stored from a `DestroyFn` in `register` (never 0 here).
        let destroy: DestroyFn = unsafe { core::mem::transmute::<usize, DestroyFn>(destroy) };
        // SAFETY: the caller's destroy with the caller's userdata, exactly once.
        unsafe { destroy(userdata as *mut c_void) };
        let _ = IN_DESTROY.try_with(|d| d.set(d.get() - 1));
    }

    /// A destroy in `running` has returned.
    fn mark_finished(g: &mut Inner, seq: u64) {
        // not there if a fork happened meanwhile and the child counted it already
        if let Some(at) = g.running.iter().position(|&s| s == seq) {
            g.running.swap_remove(at);
            g.stats.destroyed_total += 1;
        }
        g.done.mark(seq);
    }

    /// Runs grace periods (and ready destroys) until the destroys of unregisters `from..to` have all run.
    /// `CB_ERR_WOULD_DEADLOCK` when one of them cannot finish while this thread waits: its callback is in
    /// flight on this thread, or — called from inside a destroy — it is running (on any thread: two
    /// destroys waiting for each other would never finish). The others have run then.
    fn wait_done(&self, from: u64, to: u64) -> Result<(), Error> {
        let nested = in_destroy();
        let _counted = nested.then(|| NestedWait::enter(self));
        // Ok(true): done; Ok(false): keep waiting
        let check = |g: &Inner| -> Result<bool, Error> {
            let mut undone = (from.max(g.done.base)..to).filter(|&s| !g.done.is_done(s));
            if !nested {
                return Ok(undone.next().is_none());
            }
            match undone.find(|s| !g.running.contains(s)) {
                Some(_) => Ok(false),
                None if (from.max(g.done.base)..to).any(|s| !g.done.is_done(s)) => Err(Error::WouldDeadlock(
                    "called from inside a destroy notification, it would wait for a destroy that is running",
                )),
                None => Ok(true),
            }
        };
        let mut round = 0u32;
        loop {
            self.run_ready();
            if check(&self.inner.lock())? {
                return Ok(());
            }
            self.grace_period();
            let g = self.inner.lock();
            if check(&g)? {
                return Ok(());
            }
            // a slot it waits for, in flight on this thread; or, while it waits for a running destroy that may
            // in turn be waiting (another nested wait is in progress) for a slot this thread is inside, any
            // pending slot in flight on this thread. (A destroy that starts such a wait later is seen on the
            // next round.)
            let others_waiting = g.nested_waits > usize::from(nested);
            let on_running =
                others_waiting && (from.max(g.done.base)..to).any(|s| !g.done.is_done(s) && g.running.contains(&s));
            let mine = |&(i, seq): &(u32, u64)| {
                (on_running || (from..to).contains(&seq)) && inflight::inside_on_this_thread(self.data_addr(i))
            };
            if g.pending.iter().any(mine) {
                return Err(Error::WouldDeadlock("a callback it waits for is running on this very thread"));
            }
            drop(g);
            inflight::backoff(&mut round);
        }
    }

    pub(crate) fn unregister_wait(&self, handle: u64) -> Result<(), Error> {
        let index = self.check(handle)?;
        if inflight::inside_on_this_thread(self.data_addr(index)) {
            return Err(Error::WouldDeadlock("called from inside this callback (use cb_unregister there)"));
        }
        let seq = self.unregister(handle)?;
        self.wait_done(seq, seq + 1)
    }

    pub(crate) fn barrier(&self) -> Result<(), Error> {
        let target = self.inner.lock().done.next_seq();
        self.wait_done(0, target)
    }

    pub(crate) fn stats(&self) -> cb_stats {
        let g = self.inner.lock();
        let mut s = g.stats;
        s.pending_destroy = s.unregistered_total - s.destroyed_total;
        s.stale_calls = self.stale_calls.load(Relaxed);
        s
    }

    pub(crate) fn set_limit(&self, max_live: u64) {
        self.inner.lock().limit = max_live;
    }

    pub(crate) fn set_watermark(
        &self,
        threshold: u64,
        func: Option<WatermarkFn>,
        arg: *mut c_void,
    ) -> Result<(), Error> {
        let mut g = self.inner.lock();
        g.watermark = match func {
            None => None,
            Some(_) if threshold == 0 => return Err(Error::InvalidArg("threshold must be at least 1")),
            Some(func) => Some(Watermark { threshold, func, arg: arg as usize, armed: g.stats.live < threshold }),
        };
        Ok(())
    }

    pub(crate) fn set_stale_handler(&self, handler: Option<StaleFn>, arg: *mut c_void) {
        *self.stale_handler.lock() = (handler, arg as usize);
    }

    /// fork safety: hold every lock across `fork()` so the child never inherits one held by a thread that
    /// does not exist there (lock order: grace, inner, segment growth).
    fn fork_prepare(&self) {
        core::mem::forget(self.grace.lock());
        core::mem::forget(self.inner.lock());
        crate::segvec::fork_prepare();
    }

    /// In a fork child: destroys that were due in the parent stay the parent's (it runs them); the child
    /// frees those slots without running them, so no destroy runs in both processes. The parent's
    /// reclaimer does not exist here: the child's first unregister starts its own.
    fn after_fork_in_child(&self) {
        let mut g = self.inner.lock();
        g.reclaimer.running = None;
        g.nested_waits = NESTED_WAITS.try_with(Cell::get).unwrap_or(0); // this thread's: the others are gone
        // ready and running destroys were taken by the parent's threads: they are the parent's too (a
        // destroy the forking thread is inside finishes here, and marking it again is a no-op)
        let inner = &mut *g;
        let taken: Vec<u64> = inner.ready.drain(..).map(|d| d.2).chain(inner.running.drain(..)).collect();
        for &seq in &taken {
            g.done.mark(seq);
        }
        g.stats.destroyed_total += taken.len() as u64;
        let pending = core::mem::take(&mut g.pending);
        for &(index, seq) in &pending {
            self.free_slot(&mut g, index);
            g.done.mark(seq);
        }
        g.stats.destroyed_total += pending.len() as u64;
    }

    fn fork_release(&self) {
        crate::segvec::fork_release();
        // SAFETY: locked in fork_prepare by this thread, guards forgotten.
        unsafe {
            self.inner.force_unlock();
            self.grace.force_unlock();
        }
    }
}

/// The reclaim delay in milliseconds, read from `CBSLOT_RECLAIM_DELAY_MS` the first time.
fn reclaim_delay(g: &mut Inner) -> u32 {
    *g.reclaimer.delay_ms.get_or_insert_with(|| {
        std::env::var("CBSLOT_RECLAIM_DELAY_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|&ms| ms <= CB_RECLAIM_DELAY_MAX_MS)
            .unwrap_or(CB_RECLAIM_DELAY_DEFAULT_MS)
    })
}

/// Once per process, before the first block: choose the barrier, install the fork handlers.
fn init_process() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        inflight::init_barrier();
        extern "C" fn prepare() {
            CALLBACKS.fork_prepare();
        }
        extern "C" fn parent() {
            CALLBACKS.fork_release();
        }
        extern "C" fn child() {
            CALLBACKS.fork_release();
            inflight::after_fork_in_child();
            CALLBACKS.after_fork_in_child();
        }
        // SAFETY: plain function pointers with no captured state.
        unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    });
}

/// The dispatcher's stale path: a call through an entry whose slot has no registration.
extern "C" fn stale_call(entry: usize) {
    abort_on_panic("panic in the stale-call path", || {
        CALLBACKS.stale_calls.fetch_add(1, Relaxed);
        let (handler, arg) = *CALLBACKS.stale_handler.lock();
        // SAFETY: a non-null code address.
        let entry_fn: Option<RawFn> = unsafe { core::mem::transmute::<usize, Option<RawFn>>(entry) };
        match handler {
            // SAFETY: a stale handler the caller installed.
            Some(h) => unsafe { h(entry_fn, arg as *mut c_void) },
            None => fatal(&format!(
                "stale call through callback entry {entry:#x}: its registration was unregistered (or never made). \
                 Install a handler with cb_set_stale_handler() to survive such calls."
            )),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_passing_source_failures_are_retried() {
        use tramp::can_pass;
        assert!(can_pass(Error::System("opening the library file", libc::EMFILE)));
        assert!(can_pass(Error::System("creating a memfd", libc::ENFILE)));
        assert!(can_pass(Error::NoMemory("mapping a block of callback trampolines")));
        assert!(!can_pass(Error::System("cannot map trampoline code", libc::ENOSYS)));
        assert!(!can_pass(Error::System("the trampoline source does not hold the library's code", libc::EIO)));
    }

    #[test]
    fn done_tracks_out_of_order_completion() {
        let mut d = Done { base: 0, flags: VecDeque::new() };
        let (a, b, c) = (d.push(), d.push(), d.push());
        d.mark(b);
        assert!(d.is_done(b) && !d.is_done(a) && d.base == 0);
        d.mark(a);
        assert_eq!(d.base, 2);
        assert!(!d.is_done(c));
        d.mark(c);
        assert_eq!((d.base, d.flags.len()), (3, 0));
    }

    /// The reclamation protocol end to end: a slot unregistered while a thread is inside it survives grace
    /// periods until that call returns; the stale path catches calls in between.
    #[cfg(cbslot_entries)]
    #[test]
    fn grace_period_waits_for_the_call_in_flight() {
        use core::sync::atomic::Ordering::SeqCst;
        use std::sync::atomic::{AtomicBool, AtomicU32};
        use std::sync::{Arc, Barrier};

        struct Ctx {
            inside: Barrier,
            leave: Barrier,
            destroyed: AtomicU32,
            returned: AtomicBool,
        }
        unsafe extern "C" fn body(ud: *mut c_void, x: i64) -> i64 {
            // SAFETY: `ud` is the test's `Ctx`, which outlives the registration (the test waits for destroy).
            let c = unsafe { &*(ud as *const Ctx) };
            c.inside.wait();
            c.leave.wait();
            x + 1
        }
        unsafe extern "C" fn destroy(ud: *mut c_void) {
            // SAFETY: as in `body`.
            let c = unsafe { &*(ud as *const Ctx) };
            assert!(c.returned.load(SeqCst), "destroy ran while the call was in flight");
            c.destroyed.fetch_add(1, SeqCst);
        }
        let ctx = Arc::new(Ctx {
            inside: Barrier::new(2),
            leave: Barrier::new(2),
            destroyed: AtomicU32::new(0),
            returned: AtomicBool::new(false),
        });
        // SAFETY: erasing the signature for `register`; the entry is called as `body` without its first argument.
        let raw: RawFn = unsafe { core::mem::transmute(body as unsafe extern "C" fn(*mut c_void, i64) -> i64) };
        let (handle, entry) = CALLBACKS.register(raw, Arc::as_ptr(&ctx) as *mut c_void, Some(destroy), 0).unwrap();
        // SAFETY: a live entry for `body`, called with `body`'s arguments after its userdata.
        let call: extern "C" fn(i64) -> i64 = unsafe { core::mem::transmute(entry) };
        let caller = {
            let ctx = ctx.clone();
            std::thread::spawn(move || {
                let r = call(41);
                ctx.returned.store(true, SeqCst);
                r
            })
        };
        ctx.inside.wait(); // the caller is inside fn now
        CALLBACKS.unregister(handle).unwrap();
        for _ in 0..3 {
            CALLBACKS.grace_period();
            assert_eq!(ctx.destroyed.load(SeqCst), 0, "destroyed while in flight");
        }
        assert!(inflight::scan().contains(CALLBACKS.data_addr(handle as u32)));
        ctx.leave.wait();
        assert_eq!(caller.join().unwrap(), 42);
        CALLBACKS.barrier().unwrap();
        assert_eq!(ctx.destroyed.load(SeqCst), 1);
        assert!(CALLBACKS.unregister(handle).is_err());
    }

    #[cfg(all(cbslot_entries, target_arch = "x86_64"))]
    #[test]
    fn stub_table_layout() {
        let all = arch::tables();
        assert_eq!(all.as_ptr() as usize % 4096, 0, "page-aligned, so it can be mapped from the file");
        for kind in 0..TABLES {
            let t = &all[kind * TABLE_BYTES..][..TABLE_BYTES];
            for k in [0usize, 1, 2, SLOTS_PER_BLOCK - 1] {
                let at = SLOT_OFFSET + k * STUB_BYTES;
                let stub = &t[at..at + STUB_BYTES];
                // endbr64 ; lea disp32(%rip), %r11 ; jmp rel32 (to the dispatcher at offset 0)
                assert_eq!(&stub[..7], &[0xf3, 0x0f, 0x1e, 0xfa, 0x4c, 0x8d, 0x1d], "stub {k}");
                let lea = i32::from_le_bytes(stub[7..11].try_into().unwrap()) as isize;
                assert_eq!((at + 11) as isize + lea, (TABLE_BYTES + at) as isize, "stub {k} reaches its slot");
                assert_eq!(stub[11], 0xe9);
                let jmp = i32::from_le_bytes(stub[12..16].try_into().unwrap()) as isize;
                assert_eq!((at + 16) as isize + jmp, 0, "kind {kind} stub {k} jumps to its dispatcher");
            }
        }
    }

    #[cfg(all(cbslot_entries, target_arch = "aarch64"))]
    #[test]
    fn stub_table_layout() {
        let all = arch::tables();
        assert_eq!(
            all.as_ptr() as usize % 65536,
            0,
            "64 KiB-aligned: mappable from the file with 4, 16 or 64 KiB pages"
        );
        for kind in 0..TABLES {
            let t = &all[kind * TABLE_BYTES..][..TABLE_BYTES];
            for k in [0usize, 1, 2, SLOTS_PER_BLOCK - 1] {
                let at = SLOT_OFFSET + k * STUB_BYTES;
                let word = |i: usize| u32::from_le_bytes(t[at + 4 * i..at + 4 * i + 4].try_into().unwrap());
                // bti c ; adr x17, <slot> ; b <dispatcher at offset 0> ; brk #0
                assert_eq!(word(0), 0xd503_245f, "kind {kind} stub {k}: bti c");
                let adr = word(1);
                assert_eq!(adr & 0x9f00_001f, 0x1000_0011, "kind {kind} stub {k}: adr x17");
                let imm = ((((adr >> 5) & 0x7_ffff) << 2 | (adr >> 29) & 3) << 11) as i32 >> 11;
                assert_eq!((at + 4) as isize + imm as isize, (TABLE_BYTES + at) as isize, "stub {k} reaches its slot");
                let b = word(2);
                assert_eq!(b & 0xfc00_0000, 0x1400_0000, "kind {kind} stub {k}: b");
                let off = (((b & 0x03ff_ffff) << 6) as i32 >> 6) * 4;
                assert_eq!((at + 8) as isize + off as isize, 0, "kind {kind} stub {k} branches to its dispatcher");
                assert_eq!(word(3), 0xd420_0000, "kind {kind} stub {k}: brk #0");
            }
        }
    }
}

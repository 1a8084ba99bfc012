//! Which objects threads are inside right now: the reader side of cbslot's grace-period protocol (the idea
//! of userspace RCU's "memb" flavour, kept per object). The callback dispatcher marks the slot it runs;
//! [`crate::table::Table::pin`] marks an object for a write-free lookup (a queue post). The per-thread
//! record is found through a TLS word that the dispatcher's assembly defines (`callback::arch`).
//!
//! ## Protocol
//! * **Call side** (the dispatcher, no lock, no atomic read-modify-write, no fence): each thread owns a
//!   [`Rec`], found through a TLS word. Entering a slot, the dispatcher bumps `depth`, writes the slot's data
//!   address into `stack[depth - 1]`, and only then loads the slot's `fn`. Leaving, it drops `depth`.
//! * **Unregister side**: clears the slot's `fn` (new calls now take the stale path), then — batched —
//!   runs [`scan`]: a process-wide barrier (`membarrier(PRIVATE_EXPEDITED)`), then a read of every record.
//!   The barrier makes every thread's earlier marker stores visible and every later `fn` load see the
//!   clear, so a slot that no record names is not inside `fn` anywhere, and never will be again.
//! * A record holds [`DEPTH_MAX`] cells in place; a thread nested deeper gets more cells a page at a time
//!   ([`deep_cell_for_dispatcher`]), kept with the record, so nesting at any depth is tracked slot by slot.
//!   Only if such a page cannot be had does the record count as "inside everything" while that deep
//!   (correct, only slower to reclaim).
//!
//! Records are never freed: a thread's record goes back to the pool when the thread exits (a pthread key
//! destructor, which also clears it, so a thread that exits inside a callback does not pin that slot), and
//! the next new thread reuses it. Scanners may therefore read any record at any time.

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering::*};
use parking_lot::Mutex;
use std::sync::Once;

/// Nesting depth a record tracks slot by slot.
pub(crate) const DEPTH_MAX: usize = 61;

/// One thread's in-flight record. The dispatcher (assembly) reads and writes `depth` and `stack` at their
/// `offset_of!` offsets.
#[repr(C, align(64))]
pub(crate) struct Rec {
    /// Callback nesting depth: `stack[..depth]`, then the deep pages, name the slots the thread is inside.
    pub(crate) depth: AtomicUsize,
    pub(crate) stack: [AtomicUsize; DEPTH_MAX],
    /// Cells for nesting deeper than `DEPTH_MAX`, one page after another; written only by the owner.
    deep: AtomicPtr<Deep>,
    /// A deep page could not be mapped: frames past the pages went to `spill`, so while `depth` exceeds
    /// what the pages hold, the record counts as inside every slot.
    lost: AtomicBool,
    spill: AtomicUsize,
    /// Objects this thread has pinned ([`pin`]), 0 = free. Apart from the callback stack, so a thread deep
    /// in callbacks neither hides a pin nor makes every object look pinned.
    pins: [AtomicUsize; PINS],
    in_use: AtomicBool,
    next: AtomicPtr<Rec>,
}

/// Pins one thread may hold at once (a queue post holds one, and runs no user code meanwhile).
const PINS: usize = 2;

/// One page of cells for deep nesting.
#[repr(C)]
struct Deep {
    next: AtomicPtr<Deep>,
    cells: [AtomicUsize; DEEP_CELLS],
}
const DEEP_CELLS: usize = 4096 / 8 - 1;

impl Rec {
    /// The slots this record names, if the thread is `depth` deep; `None` if some of them were lost.
    fn frames(&self, depth: usize) -> Option<impl Iterator<Item = &AtomicUsize>> {
        let mut deep = depth.saturating_sub(DEPTH_MAX);
        let mut page = self.deep.load(Acquire);
        let pages = core::iter::from_fn(move || {
            // SAFETY: deep pages are never freed; a null link ends the list.
            let p = unsafe { page.as_ref()? };
            let n = deep.min(DEEP_CELLS);
            (n > 0).then(|| {
                deep -= n;
                page = p.next.load(Acquire);
                &p.cells[..n]
            })
        });
        let all_there = !(self.lost.load(Acquire) && depth > DEPTH_MAX);
        all_there.then(|| self.stack[..depth.min(DEPTH_MAX)].iter().chain(pages.flatten()))
    }

    /// True if the record names `slot` (or has lost track of what it is inside).
    fn inside(&self, slot: usize, order: core::sync::atomic::Ordering) -> bool {
        match self.frames(self.depth.load(order)) {
            Some(mut frames) => frames.any(|s| s.load(order) == slot),
            None => true,
        }
    }

    fn reset(&self) {
        self.depth.store(0, Release);
        self.lost.store(false, Release);
        self.pins.iter().for_each(|p| p.store(0, Release));
    }
}

/// Every record ever made (a push-only list).
static RECORDS: AtomicPtr<Rec> = AtomicPtr::new(ptr::null_mut());
static KEY_ONCE: Once = Once::new();
static mut KEY: libc::pthread_key_t = 0;

fn records() -> impl Iterator<Item = &'static Rec> {
    let mut p = RECORDS.load(Acquire);
    core::iter::from_fn(move || {
        // SAFETY: records are leaked, never freed.
        let r = unsafe { p.as_ref()? };
        p = r.next.load(Acquire);
        Some(r)
    })
}

/// This thread's record, if it has called an entry since it started.
pub(crate) fn current() -> Option<&'static Rec> {
    // SAFETY: the TLS word holds NULL or a leaked record.
    unsafe { (*crate::callback::arch::tls_rec_slot()).as_ref() }
}

unsafe extern "C" fn thread_exit(rec: *mut libc::c_void) {
    // SAFETY: the key's value is always a leaked record.
    let rec = unsafe { &*(rec as *const Rec) };
    rec.reset();
    // SAFETY: TLS is still in place while pthread key destructors run.
    unsafe { *crate::callback::arch::tls_rec_slot() = ptr::null_mut() };
    rec.in_use.store(false, Release);
}

/// Gives the calling thread a record (reusing a free one) and publishes it in the TLS word.
pub(crate) fn acquire() -> &'static Rec {
    KEY_ONCE.call_once(|| {
        // SAFETY: KEY is written once, here, before any reader (call_once orders it).
        let rc = unsafe { libc::pthread_key_create(&raw mut KEY, Some(thread_exit)) };
        assert_eq!(rc, 0, "pthread_key_create failed");
    });
    let rec =
        records().find(|r| r.in_use.compare_exchange(false, true, Acquire, Relaxed).is_ok()).unwrap_or_else(|| {
            let r: &'static Rec = Box::leak(Box::new(Rec {
                depth: AtomicUsize::new(0),
                stack: [const { AtomicUsize::new(0) }; DEPTH_MAX],
                deep: AtomicPtr::new(ptr::null_mut()),
                lost: AtomicBool::new(false),
                spill: AtomicUsize::new(0),
                pins: [const { AtomicUsize::new(0) }; PINS],
                in_use: AtomicBool::new(true),
                next: AtomicPtr::new(ptr::null_mut()),
            }));
            let mut head = RECORDS.load(Relaxed);
            loop {
                r.next.store(head, Relaxed);
                match RECORDS.compare_exchange_weak(head, r as *const Rec as *mut Rec, Release, Relaxed) {
                    Ok(_) => break r,
                    Err(h) => head = h,
                }
            }
        });
    // SAFETY: KEY was created above; the TLS word belongs to this thread.
    unsafe {
        libc::pthread_setspecific(KEY, rec as *const Rec as *const libc::c_void);
        *crate::callback::arch::tls_rec_slot() = rec as *const Rec as *mut Rec;
    }
    rec
}

/// Called by the dispatcher on a thread's first call (all argument registers saved around it).
pub(crate) extern "C" fn acquire_for_dispatcher() -> *const Rec {
    crate::error::abort_on_panic("could not set up this thread's in-flight record", acquire)
}

/// Called by the dispatcher (all argument registers saved around it) when it has pushed a depth past the
/// record's own cells: the cell to write the slot to. Maps the next page when needed, with a system
/// call only, so it is as safe in a signal handler as the dispatcher itself.
pub(crate) extern "C" fn deep_cell_for_dispatcher() -> *const AtomicUsize {
    crate::error::abort_on_panic("could not track a deep callback", || {
        let rec = current().expect("the dispatcher has a record");
        let mut i = rec.depth.load(Relaxed) - DEPTH_MAX - 1;
        let mut link = &rec.deep;
        loop {
            let mut page = link.load(Acquire);
            if page.is_null() {
                // SAFETY: a fresh anonymous page, zeroed: a valid `Deep` (atomics and a null link).
                let fresh = unsafe {
                    let p = libc::mmap(
                        ptr::null_mut(),
                        4096,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    );
                    if p == libc::MAP_FAILED {
                        rec.lost.store(true, Release);
                        return &rec.spill as *const AtomicUsize;
                    }
                    p as *mut Deep
                };
                // a signal handler on this thread may have linked a page meanwhile: keep the first
                page = match link.compare_exchange(ptr::null_mut(), fresh, AcqRel, Acquire) {
                    Ok(_) => fresh,
                    Err(linked) => {
                        // SAFETY: our own page, never published.
                        unsafe { libc::munmap(fresh.cast(), 4096) };
                        linked
                    }
                };
            }
            // SAFETY: deep pages are never freed.
            let p = unsafe { &*page };
            if i < DEEP_CELLS {
                return &p.cells[i] as *const AtomicUsize;
            }
            i -= DEEP_CELLS;
            link = &p.next;
        }
    })
}

/// An unwinder is leaving a dispatcher frame without running its epilogue (an exception or a forced
/// unwind went through a callback): the record is popped in its place.
pub(crate) fn unwound_one() {
    if let Some(rec) = current() {
        rec.depth.store(rec.depth.load(Relaxed).saturating_sub(1), Release);
    }
}

/// Pins the object at `addr` for the calling thread until the returned guard drops: a
/// [`wait_until_unpinned`] started after this cannot miss it. The dispatcher's protocol (a plain store,
/// ordered by the waiter's process-wide barrier), for Rust code that must keep memory alive without a
/// shared read-modify-write (the queue's post path). `None` if the thread holds [`PINS`] pins already.
pub(crate) fn pin(addr: usize) -> Option<Pin> {
    let rec = current().unwrap_or_else(acquire);
    let i = rec.pins.iter().position(|p| p.load(Relaxed) == 0)?;
    rec.pins[i].store(addr, Relaxed);
    // later loads must not move above the marker: the waiter's barrier orders the rest, where it can;
    // otherwise (or while it is not chosen yet) a full fence here pairs with the waiter's own
    if barrier_orders_others() {
        core::sync::atomic::compiler_fence(SeqCst);
    } else {
        core::sync::atomic::fence(SeqCst);
    }
    Some(Pin { rec, i })
}

/// See [`pin`].
pub(crate) struct Pin {
    rec: &'static Rec,
    i: usize,
}

impl Drop for Pin {
    fn drop(&mut self) {
        // Release: every access made under the pin happens before a waiter (which loads with Acquire) sees
        // it gone, so the memory may be freed after that. On x86_64 this is the same plain store; on weaker
        // machines the barrier alone would not order our earlier loads before it.
        self.rec.pins[self.i].store(0, Release);
    }
}

/// Waits until no thread has `addr` pinned; from a thread that has it pinned itself, it would wait
/// forever, so that is the caller's to prevent ([`pinned_on_this_thread`]).
pub(crate) fn wait_until_unpinned(addr: usize) {
    let mut round = 0u32;
    loop {
        heavy_barrier();
        if !records().any(|r| r.pins.iter().any(|p| p.load(Acquire) == addr)) {
            return;
        }
        backoff(&mut round);
    }
}

/// True if the calling thread has `addr` pinned.
pub(crate) fn pinned_on_this_thread(addr: usize) -> bool {
    current().is_some_and(|r| r.pins.iter().any(|p| p.load(Relaxed) == addr))
}

/// One step of waiting for other threads: yield for the first rounds, then sleep 50 us doubling to 1.6 ms.
pub(crate) fn backoff(round: &mut u32) {
    *round += 1;
    if *round < 16 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(std::time::Duration::from_micros(50u64 << (*round - 16).min(5)));
    }
}

/// After fork, only the forking thread exists in the child: every other record is free again.
pub(crate) fn after_fork_in_child() {
    let mine = current().map_or(ptr::null(), |r| r as *const Rec);
    for r in records().filter(|r| !ptr::eq(*r, mine)) {
        r.reset();
        r.in_use.store(false, Release);
    }
}

/// Slots that were inside a call at the moment of the scan's barrier.
pub(crate) struct InFlight {
    /// Some thread lost track of its deep frames: treat every slot as in flight.
    pub(crate) all: bool,
    slots: Vec<usize>,
}

impl InFlight {
    pub(crate) fn contains(&self, slot: usize) -> bool {
        self.all || self.slots.binary_search(&slot).is_ok()
    }
}

/// The process-wide barrier, then a read of every record.
pub(crate) fn scan() -> InFlight {
    heavy_barrier();
    let mut out = InFlight { all: false, slots: Vec::new() };
    for r in records() {
        match r.frames(r.depth.load(Acquire)) {
            Some(frames) => out.slots.extend(frames.map(|s| s.load(Acquire))),
            None => out.all = true,
        }
    }
    out.slots.sort_unstable();
    out
}

/// True if the calling thread is inside the slot at data address `slot` (or has lost track of its frames).
pub(crate) fn inside_on_this_thread(slot: usize) -> bool {
    current().is_some_and(|r| r.inside(slot, Relaxed))
}

/// How the heavy barrier is made: 0 = not chosen yet, 1 = membarrier, 2 = mprotect (see below).
static BARRIER: AtomicU8 = AtomicU8::new(0);

/// Chooses the barrier once: `membarrier(PRIVATE_EXPEDITED)` when the kernel has it (Linux 4.14+) and it is
/// not forced off with `CBSLOT_BARRIER=mprotect`; otherwise the mprotect fallback.
pub(crate) fn init_barrier() {
    if BARRIER.load(Acquire) != 0 {
        return;
    }
    let forced = std::env::var_os("CBSLOT_BARRIER").is_some_and(|v| v == "mprotect");
    let ok = !forced && crate::sys::membarrier_register();
    BARRIER.store(if ok { 1 } else { 2 }, Release);
}

/// True when the heavy barrier orders every other thread's plain stores, so the light side (a
/// dispatcher's record, a [`pin`]) needs no fence of its own: membarrier, or the mprotect fallback on
/// x86_64, whose TLB shootdown interrupts the other CPUs. arm64 invalidates TLBs by broadcast, without
/// interrupting anyone, so there the fallback is no barrier for others.
pub(crate) fn heavy_barrier_orders_others() -> bool {
    init_barrier();
    barrier_orders_others()
}

/// [`heavy_barrier_orders_others`] as chosen so far (false on arm64 until the barrier is chosen).
fn barrier_orders_others() -> bool {
    BARRIER.load(Acquire) == 1 || cfg!(target_arch = "x86_64")
}

/// A full memory barrier on every thread of the process that is running now.
///
/// Fallback without membarrier: changing the protection of a page this process has touched makes the
/// kernel shoot down its TLB entry on every CPU running one of our threads, by an interrupt, which
/// serialises those CPUs (the technique of .NET's `FlushProcessWriteBuffers`).
fn heavy_barrier() {
    init_barrier();
    if BARRIER.load(Acquire) == 1 && crate::sys::membarrier() {
        return;
    }
    static PAGE: Mutex<usize> = Mutex::new(0);
    let mut page = PAGE.lock();
    // SAFETY: an anonymous page owned by this function; only touched under the lock.
    unsafe {
        if *page == 0 {
            let p = libc::mmap(ptr::null_mut(), 4096, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
            if p == libc::MAP_FAILED {
                crate::error::fatal("mmap for the barrier page failed");
            }
            *page = p as usize;
        }
        let p = *page as *mut libc::c_void;
        if libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_WRITE) != 0 {
            crate::error::fatal("mprotect for the barrier page failed");
        }
        core::ptr::write_volatile(p as *mut u8, 1);
        if libc::mprotect(p, 4096, libc::PROT_NONE) != 0 {
            crate::error::fatal("mprotect for the barrier page failed");
        }
    }
    core::sync::atomic::fence(SeqCst);
}

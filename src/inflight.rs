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
//! * A thread nested deeper than [`DEPTH_MAX`] callbacks counts the rest in `overflow`; while any thread's
//!   `overflow` is non-zero, scans report every slot as in flight (correct, only slower to reclaim).
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

/// One thread's in-flight record. The dispatcher (assembly) reads and writes `depth`, `overflow` and
/// `stack` at their `offset_of!` offsets.
#[repr(C, align(64))]
pub(crate) struct Rec {
    pub(crate) depth: AtomicUsize,
    pub(crate) overflow: AtomicUsize,
    pub(crate) stack: [AtomicUsize; DEPTH_MAX],
    /// Objects this thread has pinned ([`pin`]), 0 = free. Apart from the callback stack, so a thread deep
    /// in callbacks neither hides a pin nor makes every object look pinned.
    pins: [AtomicUsize; PINS],
    in_use: AtomicBool,
    next: AtomicPtr<Rec>,
}

/// Pins one thread may hold at once (a queue post holds one, and runs no user code meanwhile).
const PINS: usize = 2;

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
    rec.depth.store(0, Release);
    rec.overflow.store(0, Release);
    rec.pins.iter().for_each(|p| p.store(0, Release));
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
    let rec = records().find(|r| r.in_use.compare_exchange(false, true, Acquire, Relaxed).is_ok()).unwrap_or_else(|| {
        let r: &'static Rec = Box::leak(Box::new(Rec {
            depth: AtomicUsize::new(0),
            overflow: AtomicUsize::new(0),
            stack: [const { AtomicUsize::new(0) }; DEPTH_MAX],
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

/// Pins the object at `addr` for the calling thread until the returned guard drops: a
/// [`wait_until_unpinned`] started after this cannot miss it. The dispatcher's protocol (a plain store,
/// ordered by the waiter's process-wide barrier), for Rust code that must keep memory alive without a
/// shared read-modify-write (the queue's post path). `None` if the thread holds [`PINS`] pins already.
pub(crate) fn pin(addr: usize) -> Option<Pin> {
    let rec = current().unwrap_or_else(acquire);
    let i = rec.pins.iter().position(|p| p.load(Relaxed) == 0)?;
    rec.pins[i].store(addr, Relaxed);
    // later loads must not move above the marker (the waiter's barrier orders the rest)
    core::sync::atomic::compiler_fence(SeqCst);
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
        r.depth.store(0, Relaxed);
        r.overflow.store(0, Relaxed);
        r.pins.iter().for_each(|p| p.store(0, Relaxed));
        r.in_use.store(false, Release);
    }
}

/// Slots that were inside a call at the moment of the scan's barrier.
pub(crate) struct InFlight {
    /// Some thread nested past DEPTH_MAX: treat every slot as in flight.
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
        out.all |= r.overflow.load(Acquire) != 0;
        let depth = r.depth.load(Acquire).min(DEPTH_MAX);
        out.slots.extend(r.stack[..depth].iter().map(|s| s.load(Acquire)));
    }
    out.slots.sort_unstable();
    out
}

/// True if the calling thread is inside the slot at data address `slot` (or nested too deep to tell).
pub(crate) fn inside_on_this_thread(slot: usize) -> bool {
    current().is_some_and(|r| {
        let depth = r.depth.load(Relaxed).min(DEPTH_MAX);
        r.overflow.load(Relaxed) != 0 || r.stack[..depth].iter().any(|s| s.load(Relaxed) == slot)
    })
}

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

/// How the heavy barrier is made: 0 = not chosen yet, 1 = membarrier, 2 = mprotect (see below).
static BARRIER: AtomicU8 = AtomicU8::new(0);

/// Chooses the barrier once: `membarrier(PRIVATE_EXPEDITED)` when the kernel has it (Linux 4.14+) and it is
/// not forced off with `CBSLOT_BARRIER=mprotect`; otherwise the mprotect fallback.
pub(crate) fn init_barrier() {
    if BARRIER.load(Acquire) != 0 {
        return;
    }
    let forced = std::env::var_os("CBSLOT_BARRIER").is_some_and(|v| v == "mprotect");
    // SAFETY: plain system call with no pointers.
    let ok = !forced && unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) } == 0;
    BARRIER.store(if ok { 1 } else { 2 }, Release);
}

/// A full memory barrier on every thread of the process that is running now.
///
/// Fallback without membarrier: changing the protection of a page this process has touched makes the
/// kernel shoot down its TLB entry on every CPU running one of our threads, by an interrupt, which
/// serialises those CPUs (the technique of .NET's `FlushProcessWriteBuffers`).
fn heavy_barrier() {
    init_barrier();
    if BARRIER.load(Acquire) == 1 {
        // SAFETY: plain system call; registered in init_barrier.
        let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) };
        if rc == 0 {
            return;
        }
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

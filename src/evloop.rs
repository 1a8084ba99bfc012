//! cbslot's built-in event loop: a small epoll loop with fd events and one-shot / persistent timeouts, for
//! programs that have no event library. It fills a `vde_event_handler` for one loop *instance*: the four
//! VDE3 functions take no loop pointer, so each loop registers four cbslot entries whose userdata is the
//! loop's handle — cbslot's own slot table solving its own bare-function-pointer problem.
//!
//! Threading: one thread at a time runs a loop (`run` / `run_once`; a second one, or a re-entrant one from
//! a callback, is refused). Events may be added and deleted from any thread (a timeout added while the loop
//! sleeps wakes it); `stop` may be called from anywhere. Callbacks run on the loop's thread with no loop lock
//! held, so they may add and delete events, including their own.
//!
//! Memory is bounded by the live registrations: a timer is kept in an ordered set under its deadline and
//! taken out when its event is deleted, fires, or is re-armed.

use crate::callback::{CALLBACKS, RawFn};
use crate::error::{Error, abort_on_panic, set_last_error};
use crate::handle::{Kind, Slot};
use crate::segvec::SegVec;
use crate::sys::{self, Ctl, Epoll, EventFd, errno, set_errno};
use crate::table::Table;
use crate::vde::{EventCb, VDE_EV_PERSIST, VDE_EV_READ, VDE_EV_TIMEOUT, VDE_EV_WRITE, vde_event_cb, vde_event_handler};
use core::ffi::{c_int, c_short, c_void};
use core::mem::transmute;
use core::sync::atomic::{AtomicBool, Ordering::*};
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The loop works on this platform: it needs epoll and four callback entries.
pub(crate) const SUPPORTED: bool = cfg!(cbslot_linux) && crate::callback::SUPPORTED;

/// Longest timeout the loop keeps; longer ones (up to `{LONG_MAX, 999999}`) are clamped to it.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// epoll data of the loop's own wake-up eventfd (fds are tagged with their number).
const WAKE: u64 = u64::MAX;

struct Reg {
    fd: Option<c_int>,
    events: c_short,
    persistent: bool,
    /// Timeout interval: when it fires, and how often a persistent timeout repeats.
    interval: Option<Duration>,
    /// Its entry in `Inner::timers`, if armed.
    deadline: Option<Instant>,
    cb: EventCb,
    arg: usize,
}

#[derive(Default)]
struct Inner {
    /// Next registration id; ids below it were handed out (see `remove`).
    next_id: u64,
    regs: HashMap<u64, Reg>,
    /// fd -> registrations watching it, and the epoll mask armed for it.
    fds: HashMap<c_int, (Vec<u64>, u32)>,
    /// Armed timers, soonest first.
    timers: BTreeSet<(Instant, u64)>,
}

impl Inner {
    fn arm(&mut self, id: u64, interval: Option<Duration>) {
        let Some(reg) = self.regs.get_mut(&id) else { return };
        if let Some(old) = reg.deadline.take() {
            self.timers.remove(&(old, id));
        }
        // a deadline too far to represent never comes: leave it unarmed
        reg.deadline = interval.and_then(|iv| Instant::now().checked_add(iv));
        if let Some(t) = reg.deadline {
            self.timers.insert((t, id));
        }
    }

    /// Takes out a registration and its timer; the caller unwatches its fd.
    fn take(&mut self, id: u64) -> Option<Reg> {
        let reg = self.regs.remove(&id)?;
        if let Some(t) = reg.deadline {
            self.timers.remove(&(t, id));
        }
        Some(reg)
    }
}

pub(crate) struct Loop {
    epoll: Epoll,
    wake: EventFd,
    inner: Mutex<Inner>,
    stop: AtomicBool,
    /// A thread is in `run` / `run_once` (or the loop is being freed).
    running: AtomicBool,
    sleeping: AtomicBool,
    /// The four cbslot entries: (handle, entry) for event_add, event_del, timeout_add, timeout_del.
    entries: Mutex<Vec<(u64, usize)>>,
}

impl Drop for Loop {
    fn drop(&mut self) {
        for (h, _) in self.entries.get_mut().drain(..) {
            let _ = CALLBACKS.unregister(h);
        }
    }
}

static LOOP_SLOTS: SegVec<Slot> = SegVec::new();
static LOOPS: Table<Loop> = Table::new(Kind::Loop, &LOOP_SLOTS);

fn epoll_mask(events: c_short) -> u32 {
    (if events & VDE_EV_READ != 0 { sys::READ } else { 0 }) | (if events & VDE_EV_WRITE != 0 { sys::WRITE } else { 0 })
}

/// A VDE3 timeval as a duration: negative parts count as 0, microseconds are clamped to 0..999999, and the
/// whole to [`MAX_TIMEOUT`].
fn duration(tv: &libc::timeval) -> Duration {
    let secs = Duration::from_secs(tv.tv_sec.max(0) as u64);
    (secs + Duration::from_micros(tv.tv_usec.clamp(0, 999_999) as u64)).min(MAX_TIMEOUT)
}

/// A guard for the loop named by `handle`.
pub(crate) fn get(handle: u64) -> Result<Arc<Loop>, Error> {
    LOOPS.get(handle).map_err(|_| Error::InvalidArg("not a live cb_loop (NULL, freed or garbage)"))
}

/// Creates a loop and its four entries; returns its handle.
pub(crate) fn new_loop() -> Result<u64, Error> {
    let no_fd = Error::NoMemory("eventfd/epoll_ctl failed (out of descriptors?)");
    let (epoll, wake) = (Epoll::new()?, EventFd::new().ok_or(no_fd)?);
    epoll.ctl(Ctl::Add, wake.raw(), sys::READ, WAKE).map_err(|_| no_fd)?;
    let lp = Arc::new(Loop {
        epoll,
        wake,
        inner: Mutex::new(Inner { next_id: 1, ..Default::default() }),
        stop: AtomicBool::new(false),
        running: AtomicBool::new(false),
        sleeping: AtomicBool::new(false),
        entries: Mutex::new(Vec::new()),
    });
    let handle = LOOPS.insert(lp.clone())?;
    // SAFETY: erasing the signatures for `register`; each function's callers (through its entry) use its
    // real one: the VDE3 one, with the loop's handle in front (see `handler`).
    let fns: [RawFn; 4] = unsafe {
        [
            transmute::<EventAddEntry, RawFn>(entry_event_add),
            transmute::<DelEntry, RawFn>(entry_del),
            transmute::<TimeoutAddEntry, RawFn>(entry_timeout_add),
            transmute::<DelEntry, RawFn>(entry_del),
        ]
    };
    for f in fns {
        match CALLBACKS.register(f, handle as usize as *mut c_void, None, 0) {
            Ok(pair) => lp.entries.lock().push(pair),
            Err(e) => {
                drop(LOOPS.remove(handle)); // its Drop unregisters what was registered
                return Err(e);
            }
        }
    }
    Ok(handle)
}

/// The loop's four entries as the host functions of a `vde_event_handler`.
pub(crate) fn handler(handle: u64) -> Result<vde_event_handler, Error> {
    let lp = get(handle)?;
    let e = lp.entries.lock();
    // SAFETY: each entry runs its function (registered in `new_loop`, in this order) with the loop's handle
    // in front of the arguments: called as its field's VDE3 signature, it runs with its own.
    unsafe {
        Ok(vde_event_handler {
            event_add: entry_as(e[0].1),
            event_del: entry_as(e[1].1),
            timeout_add: entry_as(e[2].1),
            timeout_del: entry_as(e[3].1),
        })
    }
}

/// The callback entry at `entry` as the nullable function pointer type `F` its caller expects.
///
/// # Safety
/// `F` is an `Option` of an `extern "C"` function pointer, and the entry's function may be called through it.
unsafe fn entry_as<F>(entry: usize) -> F {
    const { assert!(size_of::<F>() == size_of::<usize>()) };
    // SAFETY: the same size (checked above), and the caller's promise about `F`.
    unsafe { core::mem::transmute_copy::<usize, F>(&entry) }
}

/// Marks the loop as run by this thread until dropped.
struct Turn<'a>(&'a AtomicBool);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.store(false, SeqCst);
    }
}

impl Loop {
    fn claim(&self) -> Result<Turn<'_>, Error> {
        if self.running.swap(true, SeqCst) {
            return Err(Error::InvalidArg(
                "the loop is already running (on another thread, or this is one of its callbacks)",
            ));
        }
        Ok(Turn(&self.running))
    }

    fn add(
        &self,
        fd: Option<c_int>,
        events: c_short,
        timeout: Option<Duration>,
        cb: EventCb,
        arg: usize,
    ) -> Result<u64, Error> {
        let mut g = self.inner.lock();
        let id = g.next_id;
        if let Some(fd) = fd {
            let (ids, mask) = g.fds.entry(fd).or_default();
            let new_mask = *mask | epoll_mask(events);
            if new_mask != *mask || ids.is_empty() {
                let op = if ids.is_empty() { Ctl::Add } else { Ctl::Modify };
                if let Err(errno) = self.epoll.ctl(op, fd, new_mask, fd as u64) {
                    if ids.is_empty() {
                        g.fds.remove(&fd);
                    }
                    set_errno(errno);
                    return Err(Error::Host("epoll_ctl refused the fd"));
                }
                *mask = new_mask;
            }
            ids.push(id);
        }
        g.next_id += 1;
        let reg =
            Reg { fd, events, persistent: events & VDE_EV_PERSIST != 0, interval: timeout, deadline: None, cb, arg };
        g.regs.insert(id, reg);
        g.arm(id, timeout);
        drop(g);
        if timeout.is_some() && self.sleeping.load(SeqCst) {
            self.wake.signal();
        }
        Ok(id)
    }

    /// Removes a registration. A token this loop handed out whose registration is gone already (a one-shot
    /// that fired, or one deleted before) is fine: there is nothing left to do. Anything else is an error.
    fn remove(&self, id: u64) -> Result<(), Error> {
        let mut g = self.inner.lock();
        if id == 0 || id >= g.next_id {
            return Err(Error::InvalidArg("not an event token of this loop"));
        }
        if let Some(fd) = g.take(id).and_then(|reg| reg.fd) {
            self.unwatch(&mut g, fd, id);
        }
        Ok(())
    }

    fn unwatch(&self, g: &mut Inner, fd: c_int, id: u64) {
        let Some((ids, _)) = g.fds.get_mut(&fd) else { return };
        ids.retain(|&i| i != id);
        let mask = ids.iter().filter_map(|i| g.regs.get(i)).fold(0, |m, r| m | epoll_mask(r.events));
        let (ids, armed) = g.fds.get_mut(&fd).expect("present");
        if ids.is_empty() {
            g.fds.remove(&fd);
            // the fd may already be closed, which is fine
            let _ = self.epoll.ctl(Ctl::Delete, fd, 0, 0);
        } else if mask != *armed {
            *armed = mask;
            let _ = self.epoll.ctl(Ctl::Modify, fd, mask, fd as u64);
        }
    }

    /// One round, refused while the loop runs elsewhere or from its own callback.
    pub(crate) fn run_once(&self, timeout: Option<Duration>) -> Result<usize, Error> {
        let _turn = self.claim()?;
        let n = if self.pending() == 0 { 0 } else { self.round(timeout) };
        self.end_stop();
        Ok(n)
    }

    /// Waits (up to `timeout`, `None` = until something is due) and dispatches what is ready.
    fn round(&self, timeout: Option<Duration>) -> usize {
        // announced before the timers and `stop` are read: an `add` or `stop` after those reads sees it and
        // wakes us; a wake-up from before (already seen by those reads) is cleared, so it does not cut the
        // next sleep short
        self.sleeping.store(true, SeqCst);
        self.wake.reset();
        let now = Instant::now();
        let next_timer = self.inner.lock().timers.first().map(|&(t, _)| t.saturating_duration_since(now));
        let wait = match (timeout, next_timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut buf = [sys::Ready::default(); sys::WAIT_BATCH];
        let evs = if self.stop.load(SeqCst) { &buf[..0] } else { self.epoll.wait(&mut buf, wait) };
        self.sleeping.store(false, SeqCst);
        let mut ready: Vec<(u64, c_int, c_short)> = Vec::new();
        let mut g = self.inner.lock();
        for ev in evs {
            if ev.data == WAKE {
                self.wake.reset();
                continue;
            }
            let fd = ev.data as c_int;
            let what = (if ev.events & sys::READ != 0 { VDE_EV_READ } else { 0 })
                | (if ev.events & sys::WRITE != 0 { VDE_EV_WRITE } else { 0 });
            for &id in g.fds.get(&fd).map_or(&[][..], |(ids, _)| &ids[..]) {
                let hit = g.regs.get(&id).map_or(0, |r| r.events & what);
                if hit != 0 {
                    ready.push((id, fd, hit));
                }
            }
        }
        let now = Instant::now();
        while let Some(&(t, id)) = g.timers.first().filter(|&&(t, _)| t <= now) {
            g.timers.remove(&(t, id));
            if let Some(r) = g.regs.get_mut(&id) {
                r.deadline = None;
                ready.push((id, r.fd.unwrap_or(-1), VDE_EV_TIMEOUT));
            }
        }
        drop(g);
        let mut dispatched = 0;
        for (id, fd, what) in ready {
            let (cb, arg) = {
                let mut g = self.inner.lock();
                let Some(r) = g.regs.get(&id) else { continue }; // deleted by an earlier callback
                let (cb, arg, persistent, interval) = (r.cb, r.arg, r.persistent, r.interval);
                if !persistent {
                    if let Some(fd) = g.take(id).and_then(|r| r.fd) {
                        self.unwatch(&mut g, fd, id);
                    }
                } else if interval.is_some() {
                    // persistent: the timeout starts again (after activity, or after it fired)
                    g.arm(id, interval);
                }
                (cb, arg)
            };
            // SAFETY: the registrant's callback with its own argument.
            unsafe { cb(fd, what, arg as *mut c_void) };
            dispatched += 1;
        }
        dispatched
    }

    /// Runs until `stop` or until no event is registered. Returns the callbacks dispatched.
    pub(crate) fn run(&self) -> Result<u64, Error> {
        let _turn = self.claim()?;
        let mut total = 0;
        while !self.stop.load(SeqCst) && self.pending() != 0 {
            total += self.round(None) as u64;
        }
        self.end_stop();
        Ok(total)
    }

    /// A stop ends one run (or makes one `run_once` not wait); it does not carry over to the next.
    fn end_stop(&self) {
        self.stop.store(false, SeqCst);
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, SeqCst);
        self.wake.signal();
    }

    pub(crate) fn pending(&self) -> usize {
        self.inner.lock().regs.len()
    }
}

/// Frees a loop (refused while it runs): its handle is invalid at once; its entries are unregistered and
/// its descriptors closed when the last call using it returns. Its registrations are dropped uncalled.
pub(crate) fn free(handle: u64) -> Result<(), Error> {
    let lp = get(handle)?;
    let _turn = lp.claim().map_err(|_| Error::InvalidArg("the loop is running: stop it first"))?;
    LOOPS.remove(handle).map(drop).map_err(|_| Error::InvalidArg("not a live cb_loop (freed twice?)"))
}

// ---- the four VDE3 functions, reached through cbslot entries whose userdata is the loop's handle ----

/// Runs one of the four functions. As VDE3 functions do, a success leaves `errno` as the caller had it
/// (a contended lock may have changed it); a failure sets it and `cb_last_error()`.
fn loop_of(ud: *mut c_void, f: impl FnOnce(&Loop) -> Result<u64, Error>) -> *mut c_void {
    let saved = errno();
    abort_on_panic("panic in the built-in loop", || match get(ud as usize as u64).and_then(|lp| f(&lp)) {
        Ok(id) => {
            set_errno(saved);
            id as usize as *mut c_void
        }
        Err(e) => {
            set_last_error("cb_loop (vde_event_handler)", format_args!("{e}"));
            if !matches!(e, Error::Host(_)) {
                set_errno(libc::EINVAL);
            }
            core::ptr::null_mut()
        }
    })
}

/// The real signatures of the four functions (the loop's handle, then VDE3's arguments).
type EventAddEntry =
    unsafe extern "C" fn(*mut c_void, c_int, c_short, *const libc::timeval, vde_event_cb, *mut c_void) -> *mut c_void;
type TimeoutAddEntry =
    unsafe extern "C" fn(*mut c_void, *const libc::timeval, c_short, vde_event_cb, *mut c_void) -> *mut c_void;
type DelEntry = unsafe extern "C" fn(*mut c_void, *mut c_void);

unsafe extern "C" fn entry_event_add(
    ud: *mut c_void,
    fd: c_int,
    events: c_short,
    tv: *const libc::timeval,
    cb: vde_event_cb,
    arg: *mut c_void,
) -> *mut c_void {
    // SAFETY: NULL or the caller's timeval, read here.
    let timeout = unsafe { tv.as_ref() }.map(duration);
    loop_of(ud, |lp| lp.add(Some(fd), events, timeout, cb.ok_or(Error::NullArg("cb"))?, arg as usize))
}

unsafe extern "C" fn entry_timeout_add(
    ud: *mut c_void,
    tv: *const libc::timeval,
    events: c_short,
    cb: vde_event_cb,
    arg: *mut c_void,
) -> *mut c_void {
    // SAFETY: NULL or the caller's timeval, read here.
    let timeout = unsafe { tv.as_ref() }.map(duration);
    loop_of(ud, |lp| {
        lp.add(
            None,
            events,
            Some(timeout.ok_or(Error::NullArg("timeout"))?),
            cb.ok_or(Error::NullArg("cb"))?,
            arg as usize,
        )
    })
}

unsafe extern "C" fn entry_del(ud: *mut c_void, ev: *mut c_void) {
    loop_of(ud, |lp| lp.remove(ev as usize as u64).map(|()| 0));
}

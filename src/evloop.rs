//! cbslot's built-in event loop: a small epoll loop with fd events and one-shot / persistent timeouts, for
//! programs that have no event library. It fills a `vde_event_handler` for one loop *instance*: the four
//! VDE3 functions take no loop pointer, so each loop registers four cbslot entries whose userdata is the
//! loop — cbslot's own slot table solving its own bare-function-pointer problem.
//!
//! Threading: run a loop on one thread at a time. Events may be added and deleted from any thread (a
//! timeout added while the loop sleeps wakes it); `stop` may be called from anywhere. Callbacks run on the
//! loop's thread with no loop lock held, so they may add and delete events, including their own.

use crate::callback::{CALLBACKS, RawFn};
use crate::error::Error;
use crate::handle::{Kind, Registry, Slot};
use crate::segvec::SegVec;
use crate::vde::{EventCb, VDE_EV_PERSIST, VDE_EV_READ, VDE_EV_TIMEOUT, VDE_EV_WRITE};
use core::ffi::{c_int, c_short, c_void};
use core::sync::atomic::{AtomicBool, Ordering::*};
use parking_lot::Mutex;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

struct Reg {
    fd: Option<c_int>,
    events: c_short,
    persistent: bool,
    /// Timeout interval: when it fires, and how often a persistent timeout repeats.
    interval: Option<Duration>,
    /// Which heap entry is current (older ones are skipped).
    timer_seq: u64,
    cb: EventCb,
    arg: usize,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    regs: HashMap<u64, Reg>,
    /// fd -> registrations watching it, and the epoll mask armed for it.
    fds: HashMap<c_int, (Vec<u64>, u32)>,
    timers: BinaryHeap<Reverse<(Instant, u64, u64)>>,
    next_seq: u64,
}

pub(crate) struct Loop {
    epfd: c_int,
    wake: c_int,
    inner: Mutex<Inner>,
    stop: AtomicBool,
    running: AtomicBool,
    sleeping: AtomicBool,
    /// The four cbslot entries: (handle, entry) for event_add, event_del, timeout_add, timeout_del.
    entries: Mutex<Vec<(u64, usize)>>,
}

static LOOP_SLOTS: SegVec<Slot> = SegVec::new();
static LOOPS: Registry = Registry::new(Kind::Loop, &LOOP_SLOTS);

unsafe extern "C" fn drop_loop(p: *mut c_void) {
    // SAFETY: registered from Box::into_raw in `new_loop`.
    let lp = unsafe { Box::from_raw(p as *mut Loop) };
    for (h, _) in lp.entries.lock().drain(..) {
        let _ = CALLBACKS.unregister(h);
    }
    // SAFETY: our own descriptors.
    unsafe {
        libc::close(lp.epfd);
        libc::close(lp.wake);
    }
}

fn epoll_mask(events: c_short) -> u32 {
    (if events & VDE_EV_READ != 0 { libc::EPOLLIN as u32 } else { 0 })
        | (if events & VDE_EV_WRITE != 0 { libc::EPOLLOUT as u32 } else { 0 })
}

fn duration(tv: *const libc::timeval) -> Option<Duration> {
    // SAFETY: a non-NULL timeval from the caller.
    let tv = unsafe { tv.as_ref()? };
    Some(Duration::from_secs(tv.tv_sec.max(0) as u64) + Duration::from_micros(tv.tv_usec.clamp(0, 999_999) as u64))
}

/// Runs `f` on the loop named by `handle`, holding a reference to it meanwhile.
pub(crate) fn with_loop<T>(handle: u64, f: impl FnOnce(&Loop) -> Result<T, Error>) -> Result<T, Error> {
    // SAFETY: LOOPS only holds boxed `Loop`s.
    unsafe { LOOPS.with_ref(handle, f) }.unwrap_or(Err(Error::InvalidArg("not a live cb_loop (NULL, freed or garbage)")))
}

/// Creates a loop and its four entries; returns its handle.
pub(crate) fn new_loop() -> Result<u64, Error> {
    // SAFETY: plain system calls.
    let (epfd, wake) = unsafe { (libc::epoll_create1(libc::EPOLL_CLOEXEC), libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)) };
    if epfd < 0 || wake < 0 {
        // SAFETY: closing what we opened.
        unsafe {
            if epfd >= 0 {
                libc::close(epfd);
            }
            if wake >= 0 {
                libc::close(wake);
            }
        }
        return Err(Error::NoMemory("epoll_create1/eventfd failed (out of descriptors?)"));
    }
    let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: u64::MAX };
    // SAFETY: valid descriptors and event.
    unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, wake, &mut ev) };
    let lp = Box::new(Loop {
        epfd,
        wake,
        inner: Mutex::new(Inner { next_id: 1, ..Default::default() }),
        stop: AtomicBool::new(false),
        running: AtomicBool::new(false),
        sleeping: AtomicBool::new(false),
        entries: Mutex::new(Vec::new()),
    });
    let raw = Box::into_raw(lp);
    let handle = LOOPS.insert(raw as *mut c_void, Some(drop_loop)).inspect_err(|_| {
        // SAFETY: not registered: still ours.
        unsafe { drop_loop(raw as *mut c_void) };
    })?;
    // SAFETY: the registry holds it until `free`.
    let lp = unsafe { &*raw };
    // SAFETY: each function's real signature is its VDE3 one with the loop's handle in front.
    let fns: [RawFn; 4] = unsafe {
        [
            core::mem::transmute(entry_event_add as unsafe extern "C" fn(_, _, _, _, _, _) -> _),
            core::mem::transmute(entry_del as unsafe extern "C" fn(_, _)),
            core::mem::transmute(entry_timeout_add as unsafe extern "C" fn(_, _, _, _, _) -> _),
            core::mem::transmute(entry_del as unsafe extern "C" fn(_, _)),
        ]
    };
    for f in fns {
        match CALLBACKS.register(f, handle as usize as *mut c_void, None) {
            Ok(pair) => lp.entries.lock().push((pair.0, pair.1)),
            Err(e) => {
                let _ = LOOPS.release(handle); // unregisters what was registered
                return Err(e);
            }
        }
    }
    Ok(handle)
}

/// The loop's four entries, in `vde_event_handler` order.
pub(crate) fn entries(handle: u64) -> Result<[usize; 4], Error> {
    with_loop(handle, |lp| {
        let e = lp.entries.lock();
        Ok([e[0].1, e[1].1, e[2].1, e[3].1])
    })
}

impl Loop {
    fn add(&self, fd: Option<c_int>, events: c_short, timeout: Option<Duration>, cb: EventCb, arg: usize) -> Result<u64, Error> {
        let mut g = self.inner.lock();
        let id = g.next_id;
        g.next_id += 1;
        if let Some(fd) = fd {
            let (ids, mask) = g.fds.entry(fd).or_default();
            let new_mask = *mask | epoll_mask(events);
            if new_mask != *mask || ids.is_empty() {
                let op = if ids.is_empty() { libc::EPOLL_CTL_ADD } else { libc::EPOLL_CTL_MOD };
                let mut ev = libc::epoll_event { events: new_mask, u64: fd as u64 };
                // SAFETY: valid epoll descriptor and event.
                if unsafe { libc::epoll_ctl(self.epfd, op, fd, &mut ev) } != 0 {
                    if ids.is_empty() {
                        g.fds.remove(&fd);
                    }
                    return Err(Error::Host("epoll_ctl refused the fd"));
                }
                *mask = new_mask;
            }
            ids.push(id);
        }
        let timer_seq = g.next_seq;
        g.next_seq += 1;
        if let Some(t) = timeout {
            g.timers.push(Reverse((Instant::now() + t, id, timer_seq)));
        }
        g.regs.insert(id, Reg { fd, events, persistent: events & VDE_EV_PERSIST != 0, interval: timeout, timer_seq, cb, arg });
        drop(g);
        if timeout.is_some() && self.sleeping.load(SeqCst) {
            self.poke();
        }
        Ok(id)
    }

    /// Removes a registration; false if there is none with that id.
    fn remove(&self, id: u64) -> bool {
        let mut g = self.inner.lock();
        let Some(reg) = g.regs.remove(&id) else { return false };
        if let Some(fd) = reg.fd {
            self.unwatch(&mut g, fd, id);
        }
        true
    }

    fn unwatch(&self, g: &mut Inner, fd: c_int, id: u64) {
        let Some((ids, _)) = g.fds.get_mut(&fd) else { return };
        ids.retain(|&i| i != id);
        let mask = ids.iter().filter_map(|i| g.regs.get(i)).fold(0, |m, r| m | epoll_mask(r.events));
        let (ids, armed) = g.fds.get_mut(&fd).expect("present");
        if ids.is_empty() {
            g.fds.remove(&fd);
            // SAFETY: valid epoll descriptor; the fd may already be closed, which is fine.
            unsafe { libc::epoll_ctl(self.epfd, libc::EPOLL_CTL_DEL, fd, core::ptr::null_mut()) };
        } else if mask != *armed {
            *armed = mask;
            let mut ev = libc::epoll_event { events: mask, u64: fd as u64 };
            // SAFETY: valid epoll descriptor and event.
            unsafe { libc::epoll_ctl(self.epfd, libc::EPOLL_CTL_MOD, fd, &mut ev) };
        }
    }

    fn poke(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes to our eventfd.
        unsafe { libc::write(self.wake, (&one as *const u64).cast(), 8) };
    }

    /// One round: wait (up to `timeout`, `None` = until something is due) and dispatch what is ready.
    pub(crate) fn run_once(&self, timeout: Option<Duration>) -> usize {
        let now = Instant::now();
        let next_timer = self.inner.lock().timers.peek().map(|Reverse((t, _, _))| t.saturating_duration_since(now));
        let wait = match (timeout, next_timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let ms = wait.map_or(-1, |d| d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as c_int);
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 64];
        self.sleeping.store(true, SeqCst);
        // SAFETY: valid epoll descriptor and buffer.
        let n = if self.stop.load(SeqCst) { 0 } else { unsafe { libc::epoll_wait(self.epfd, evs.as_mut_ptr(), 64, ms) } };
        self.sleeping.store(false, SeqCst);
        let mut ready: Vec<(u64, c_int, c_short)> = Vec::new();
        {
            let g = self.inner.lock();
            for ev in &evs[..n.max(0) as usize] {
                if ev.u64 == u64::MAX {
                    let mut buf = 0u64;
                    // SAFETY: draining our eventfd.
                    unsafe { libc::read(self.wake, (&mut buf as *mut u64).cast(), 8) };
                    continue;
                }
                let fd = ev.u64 as c_int;
                let what = (if ev.events & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 { VDE_EV_READ } else { 0 })
                    | (if ev.events & (libc::EPOLLOUT | libc::EPOLLERR) as u32 != 0 { VDE_EV_WRITE } else { 0 });
                for id in g.fds.get(&fd).map(|(ids, _)| ids.clone()).unwrap_or_default() {
                    let hit = g.regs.get(&id).map_or(0, |r| r.events & what);
                    if hit != 0 {
                        ready.push((id, fd, hit));
                    }
                }
            }
        }
        {
            let mut g = self.inner.lock();
            let now = Instant::now();
            while let Some(&Reverse((t, id, seq))) = g.timers.peek() {
                if t > now {
                    break;
                }
                g.timers.pop();
                if let Some(r) = g.regs.get(&id).filter(|r| r.timer_seq == seq) {
                    ready.push((id, r.fd.unwrap_or(-1), VDE_EV_TIMEOUT));
                }
            }
        }
        let mut dispatched = 0;
        for (id, fd, what) in ready {
            let (cb, arg) = {
                let mut g = self.inner.lock();
                let Some(r) = g.regs.get_mut(&id) else { continue }; // deleted by an earlier callback
                let (cb, arg, persistent, interval) = (r.cb, r.arg, r.persistent, r.interval);
                if !persistent {
                    let fd = r.fd;
                    g.regs.remove(&id);
                    if let Some(fd) = fd {
                        self.unwatch(&mut g, fd, id);
                    }
                } else if let Some(iv) = interval {
                    // persistent: the timeout starts again (after activity, or after it fired)
                    let seq = g.next_seq;
                    g.next_seq += 1;
                    g.regs.get_mut(&id).expect("present").timer_seq = seq;
                    g.timers.push(Reverse((Instant::now() + iv, id, seq)));
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
        if self.running.swap(true, SeqCst) {
            return Err(Error::InvalidArg("the loop is already running"));
        }
        let mut total = 0;
        while !self.stop.swap(false, SeqCst) && !self.inner.lock().regs.is_empty() {
            total += self.run_once(None) as u64;
        }
        self.running.store(false, SeqCst);
        Ok(total)
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, SeqCst);
        self.poke();
    }

    pub(crate) fn is_running(&self) -> bool {
        self.running.load(SeqCst)
    }

    pub(crate) fn pending(&self) -> usize {
        self.inner.lock().regs.len()
    }
}

/// Frees a loop (refused while it runs): unregisters its entries and closes its descriptors. Its
/// registrations are dropped without being called.
pub(crate) fn free(handle: u64) -> Result<(), Error> {
    with_loop(handle, |lp| if lp.is_running() { Err(Error::InvalidArg("the loop is running: stop it first")) } else { Ok(()) })?;
    LOOPS.release(handle).map_err(|_| Error::InvalidArg("not a live cb_loop (freed twice?)"))
}

// ---- the four VDE3 functions, reached through cbslot entries whose userdata is the loop's handle ----

fn loop_of(ud: *mut c_void, f: impl FnOnce(&Loop) -> Result<u64, Error>) -> *mut c_void {
    let run = std::panic::AssertUnwindSafe(|| with_loop(ud as usize as u64, f));
    match std::panic::catch_unwind(run) {
        Ok(Ok(id)) => id as usize as *mut c_void,
        Ok(Err(e)) => {
            crate::error::set_last_error("cb_loop (vde_event_handler)", format_args!("{e}"));
            // SAFETY: errno is thread-local.
            unsafe { *libc::__errno_location() = libc::EINVAL };
            core::ptr::null_mut()
        }
        Err(_) => crate::callback::fatal("panic in the built-in loop"),
    }
}

unsafe extern "C" fn entry_event_add(
    ud: *mut c_void,
    fd: c_int,
    events: c_short,
    tv: *const libc::timeval,
    cb: Option<EventCb>,
    arg: *mut c_void,
) -> *mut c_void {
    loop_of(ud, |lp| {
        let cb = cb.ok_or(Error::NullArg("cb"))?;
        lp.add(Some(fd), events, duration(tv), cb, arg as usize)
    })
}

unsafe extern "C" fn entry_timeout_add(
    ud: *mut c_void,
    tv: *const libc::timeval,
    events: c_short,
    cb: Option<EventCb>,
    arg: *mut c_void,
) -> *mut c_void {
    loop_of(ud, |lp| {
        let cb = cb.ok_or(Error::NullArg("cb"))?;
        let t = duration(tv).ok_or(Error::NullArg("timeout"))?;
        lp.add(None, events, Some(t), cb, arg as usize)
    })
}

unsafe extern "C" fn entry_del(ud: *mut c_void, ev: *mut c_void) {
    loop_of(ud, |lp| if lp.remove(ev as usize as u64) { Ok(0) } else { Err(Error::InvalidArg("unknown event token")) });
}

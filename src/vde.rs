//! The VDE3 context: a copy of the caller's `vde_event_handler`, and events registered through it.
//!
//! * A context is named by a generational handle dressed as a pointer (`vde_context *`), so a deleted,
//!   double-deleted or garbage context is an error (EINVAL), never a use-after-free.
//! * `init` copies the four function pointers and deep-copies `modules_path`: nothing the caller passed is
//!   referenced afterwards (a Go-allocated handler may be collected as soon as init returns).
//! * An event is a record in its own registry. The host loop is given [`fire`] as its callback and the
//!   record's *handle* as its argument, so a host that fires an event late (after delete or fini) finds an
//!   invalid handle and nothing happens. The user gets the same handle as the event's token.
//! * Every host token is given back to the host's `event_del` / `timeout_del` exactly once: on delete, at
//!   fini, or after a one-shot event has fired. Contexts and event records live in [`Table`]s: every call
//!   that uses one holds a guard, so a record stays alive while its callback runs, while the host's add is
//!   running, and while another thread deletes it or finishes its context.
//! * Host functions and user callbacks are always called with no cbslot lock held.

use crate::error::{Error, abort_on_panic};
use crate::handle::{Kind, Slot};
use crate::segvec::SegVec;
use crate::table::Table;
use core::ffi::{c_char, c_int, c_short, c_void};
use parking_lot::{Condvar, Mutex};
use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::sync::Arc;

/// Fires on timeout.
pub const VDE_EV_TIMEOUT: c_short = 0x01;
/// Fires when the fd is readable.
pub const VDE_EV_READ: c_short = 0x02;
/// Fires when the fd is writable.
pub const VDE_EV_WRITE: c_short = 0x04;
/// Keeps firing until deleted (without it, an event fires once).
pub const VDE_EV_PERSIST: c_short = 0x10;
const ALL_EVENTS: c_short = VDE_EV_TIMEOUT | VDE_EV_READ | VDE_EV_WRITE | VDE_EV_PERSIST;

/// The callback of an event or timeout: `fd` (-1 for timeouts), what happened (`VDE_EV_*`), the user's `arg`.
pub type vde_event_cb = Option<unsafe extern "C" fn(fd: c_int, events: c_short, arg: *mut c_void)>;

/// A `vde_event_cb` that is not NULL.
pub(crate) type EventCb = <vde_event_cb as IntoIterator>::Item;

/// The host event loop's four functions, as VDE3 defines them. `vde_context_init` copies the struct: it
/// may be freed (or garbage-collected) as soon as init returns.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct vde_event_handler {
    /// Watch `fd` for `events` (and/or `timeout`, may be NULL); call `cb(fd, what, arg)`; return a token.
    pub event_add: Option<
        unsafe extern "C" fn(
            fd: c_int,
            events: c_short,
            timeout: *const libc::timeval,
            cb: vde_event_cb,
            arg: *mut c_void,
        ) -> *mut c_void,
    >,
    /// Stop and free the event named by a token from `event_add`.
    pub event_del: Option<unsafe extern "C" fn(ev: *mut c_void)>,
    /// Call `cb(-1, VDE_EV_TIMEOUT, arg)` after `timeout` (repeatedly with `VDE_EV_PERSIST`); return a token.
    pub timeout_add: Option<
        unsafe extern "C" fn(
            timeout: *const libc::timeval,
            events: c_short,
            cb: vde_event_cb,
            arg: *mut c_void,
        ) -> *mut c_void,
    >,
    /// Stop and free the timeout named by a token from `timeout_add`.
    pub timeout_del: Option<unsafe extern "C" fn(tout: *mut c_void)>,
}

/// A copy of the caller's `vde_event_handler` whose four functions are all there (only [`Handler::new`]
/// makes one).
#[derive(Clone, Copy)]
pub(crate) struct Handler(vde_event_handler);

const CHECKED: &str = "Handler::new checked all four functions";

impl Handler {
    /// The handler, or `NullArg` if one of its functions is NULL.
    pub(crate) fn new(h: vde_event_handler) -> Result<Self, Error> {
        match h {
            vde_event_handler {
                event_add: Some(_),
                event_del: Some(_),
                timeout_add: Some(_),
                timeout_del: Some(_),
            } => Ok(Handler(h)),
            _ => Err(Error::NullArg("handler member (all four functions are required)")),
        }
    }

    /// The host's `event_add` (with `fd`) or `timeout_add` (without): the host's token, NULL if it failed.
    ///
    /// # Safety
    /// As the host's function requires: `timeout` is NULL or a valid timeval for the call.
    unsafe fn add(
        &self,
        fd: Option<c_int>,
        events: c_short,
        timeout: *const libc::timeval,
        arg: *mut c_void,
    ) -> *mut c_void {
        // SAFETY: the host's own functions, called as VDE3 defines them; `fire` and `arg` (an event handle)
        // stay valid for any call, however late.
        unsafe {
            match fd {
                Some(fd) => self.0.event_add.expect(CHECKED)(fd, events, timeout, Some(fire), arg),
                None => self.0.timeout_add.expect(CHECKED)(timeout, events, Some(fire), arg),
            }
        }
    }

    /// Gives `token` back to the host's `timeout_del` (`timeout`) or `event_del`.
    ///
    /// # Safety
    /// `token` came from this host's add of the same kind and is given back only this once.
    unsafe fn del(&self, timeout: bool, token: *mut c_void) {
        let del = if timeout { self.0.timeout_del } else { self.0.event_del };
        // SAFETY: the host's own del function with a token it issued, once (the caller's promise).
        unsafe { del.expect(CHECKED)(token) }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    New,
    Ready,
    Finished,
    /// `vde_context_delete` has begun: never initialised again.
    Deleted,
}

struct Inner {
    state: State,
    handler: Option<Handler>,
    modules: Vec<CString>,
    events: HashSet<u64>,
}

pub(crate) struct Context {
    inner: Mutex<Inner>,
}

/// An event or timeout registered through a context.
struct EventRec {
    context: u64,
    timeout: bool,
    persistent: bool,
    cb: EventCb,
    arg: usize,
    /// The host this event is added to (set once, before the host's add runs): its token goes back there.
    host: std::sync::OnceLock<Handler>,
    life: Mutex<Life>,
    /// Signalled when a callback of this event returns (see `Life::running`).
    returned: Condvar,
}

/// Where an event is in its life: the host token (once known) and whether it has been given back.
#[derive(Default)]
struct Life {
    token: Option<usize>,
    /// Deleted, finished by fini, or fired once (one-shot): no more user callbacks.
    done: bool,
    /// The host token has gone to the host's del function.
    given_back: bool,
    /// Threads running this event's callback now ([`thread_key`]s): del and fini on another thread wait
    /// for them, so no callback is running or starts once they return.
    running: Vec<usize>,
}

thread_local! {
    /// How many event callbacks this thread is inside (a thread inside one does not wait for others: two
    /// callbacks deleting each other's events on two threads would wait for each other forever).
    static IN_CALLBACK: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
}

/// This thread's key for `Life::running` (the address of its thread-local).
fn thread_key() -> usize {
    IN_CALLBACK.with(|c| c as *const _ as usize)
}

static CONTEXT_SLOTS: SegVec<Slot> = SegVec::new();
static CONTEXTS: Table<Context> = Table::new(Kind::Context, &CONTEXT_SLOTS);
static EVENT_SLOTS: SegVec<Slot> = SegVec::new();
static EVENTS: Table<EventRec> = Table::new(Kind::Event, &EVENT_SLOTS);

/// Creates a context; returns its handle.
pub(crate) fn new_context() -> Result<u64, Error> {
    let inner = Inner { state: State::New, handler: None, modules: Vec::new(), events: HashSet::new() };
    CONTEXTS.insert(Arc::new(Context { inner: Mutex::new(inner) }))
}

/// A guard for the context named by `handle`.
fn context(handle: u64) -> Result<Arc<Context>, Error> {
    CONTEXTS.get(handle).map_err(|_| Error::InvalidArg("not a live vde_context (NULL, deleted or garbage)"))
}

/// `vde_context_init`: copies the handler and the module paths.
///
/// # Safety
/// `modules` is NULL or a NULL-terminated array of NUL-terminated strings.
pub(crate) unsafe fn init(handle: u64, handler: Handler, modules: *const *const c_char) -> Result<(), Error> {
    let mut copied = Vec::new();
    if !modules.is_null() {
        for i in 0.. {
            // SAFETY: the caller promises a NULL-terminated array.
            let p = unsafe { *modules.add(i) };
            if p.is_null() {
                break;
            }
            // SAFETY: the caller promises NUL-terminated strings.
            copied.push(unsafe { CStr::from_ptr(p) }.to_owned());
        }
    }
    let ctx = context(handle)?;
    let mut g = ctx.inner.lock();
    // as in VDE3, a finished context may be initialised again; an initialised one may not (VDE3 returns 0
    // there and leaks what the first init set up)
    match g.state {
        State::Ready => {
            return Err(Error::InvalidArg("the context is already initialised (vde_context_fini it first)"));
        }
        State::Deleted => return Err(Error::InvalidArg("not a live vde_context (it is being deleted)")),
        State::New | State::Finished => {}
    }
    g.state = State::Ready;
    g.handler = Some(handler);
    g.modules = copied;
    Ok(())
}

/// The `i`-th module path copied at init (valid until fini or delete), or NULL.
pub(crate) fn module_path(handle: u64, i: usize) -> Result<*const c_char, Error> {
    Ok(context(handle)?.inner.lock().modules.get(i).map_or(core::ptr::null(), |s| s.as_ptr()))
}

/// `vde_context_event_add` / `vde_context_timeout_add`: returns the event's handle (the user's token).
pub(crate) fn add(
    handle: u64,
    fd: Option<c_int>,
    events: c_short,
    timeout: *const libc::timeval,
    cb: EventCb,
    arg: *mut c_void,
) -> Result<u64, Error> {
    if events & !ALL_EVENTS != 0 {
        return Err(Error::InvalidArg("unknown bits in events (allowed: VDE_EV_TIMEOUT|READ|WRITE|PERSIST)"));
    }
    let ctx = context(handle)?;
    let rec = Arc::new(EventRec {
        context: handle,
        timeout: fd.is_none(),
        persistent: events & VDE_EV_PERSIST != 0,
        cb,
        arg: arg as usize,
        host: std::sync::OnceLock::new(),
        life: Mutex::new(Life::default()),
        returned: Condvar::new(),
    });
    let ev = EVENTS.insert(rec.clone())?;
    let handler = {
        // The host, the context's state and its event set are read and changed together: fini (or a
        // fini + init with another host) either sees this event or is seen here, never half of each.
        let mut g = ctx.inner.lock();
        let Some(h) = g.handler.filter(|_| g.state == State::Ready) else {
            drop(g);
            drop(EVENTS.remove(ev));
            return Err(Error::InvalidArg("the context is not initialised (or was finished)"));
        };
        let _ = rec.host.set(h);
        g.events.insert(ev);
        h
    };
    let host_arg = ev as usize as *mut c_void;
    // SAFETY: `timeout` is the caller's, passed on to its host as VDE3 does.
    let token = unsafe { handler.add(fd, events, timeout, host_arg) };
    if token.is_null() {
        rec.life.lock().given_back = true; // nothing to give back
        finish(ev, &rec);
        ctx.inner.lock().events.remove(&ev);
        return Err(Error::Host(if fd.is_some() {
            "the host's event_add failed"
        } else {
            "the host's timeout_add failed"
        }));
    }
    let give_back = {
        let mut life = rec.life.lock();
        life.token = Some(token as usize);
        // ended (fired once, deleted, or finished by fini) before the host returned its token
        life.done && !core::mem::replace(&mut life.given_back, true)
    };
    if give_back {
        // SAFETY: the host's own token, given back once (guarded by `given_back`), to the host that issued it.
        unsafe { host_of(&rec).del(rec.timeout, token) };
    }
    Ok(ev)
}

/// The host an event was added to (set before its host add ran, so before any token).
fn host_of(rec: &EventRec) -> &Handler {
    rec.host.get().expect("set before the host's add")
}

/// Ends an event: no more callbacks (it waits for those running on other threads, unless this thread is
/// inside an event callback itself), the host token back to the host (once, if known yet), the handle
/// removed. Returns false if it had already ended (having waited all the same).
/// Callers take the event out of its context's set only after this, so a fini that does not find it there
/// knows it has ended and its callbacks on other threads have returned.
fn finish(ev: u64, rec: &EventRec) -> bool {
    let token = {
        let mut life = rec.life.lock();
        // Ended already (by a racing del, fini or the one-shot's own firing): still wait, so this del or fini
        // does not return while that ender waits for a callback running on another thread.
        let first = !core::mem::replace(&mut life.done, true);
        let me = thread_key();
        if IN_CALLBACK.with(|c| c.get()) == 0 {
            while life.running.iter().any(|&t| t != me) {
                rec.returned.wait(&mut life);
            }
        }
        if !first {
            return false;
        }
        match life.token {
            Some(t) if !life.given_back => {
                life.given_back = true;
                Some(t)
            }
            _ => None, // not known yet: `add` gives it back when the host returns it
        }
    };
    drop(EVENTS.remove(ev));
    if let Some(t) = token {
        // SAFETY: the host's own token, given back exactly once (guarded by `given_back`).
        unsafe { host_of(rec).del(rec.timeout, t as *mut c_void) };
    }
    true
}

/// `vde_context_event_del` / `vde_context_timeout_del`.
pub(crate) fn del(handle: u64, ev: u64, timeout: bool) -> Result<(), Error> {
    let ctx = context(handle)?;
    let rec = EVENTS.get(ev).map_err(|_| Error::InvalidArg("not a live event token (deleted, finished or garbage)"))?;
    if rec.context != handle {
        return Err(Error::InvalidArg("the token belongs to another context"));
    }
    if rec.timeout != timeout {
        return Err(Error::InvalidArg(if timeout {
            "the token is an fd event: delete it with vde_context_event_del"
        } else {
            "the token is a timeout: delete it with vde_context_timeout_del"
        }));
    }
    let ended = finish(ev, &rec);
    ctx.inner.lock().events.remove(&ev);
    if ended { Ok(()) } else { Err(Error::InvalidArg("the event was already deleted or finished")) }
}

/// The callback cbslot gives the host loop: `arg` is the event's handle.
pub(crate) extern "C" fn fire(fd: c_int, events: c_short, arg: *mut c_void) {
    abort_on_panic("panic while firing a vde event", || {
        let ev = arg as usize as u64;
        // a dead handle: fired after delete or fini, nothing to reach
        let Ok(rec) = EVENTS.get(ev) else { return };
        let me = thread_key();
        {
            let mut life = rec.life.lock();
            if life.done {
                return;
            }
            life.running.push(me);
        }
        IN_CALLBACK.with(|c| c.set(c.get() + 1));
        // SAFETY: the user's callback with the user's argument.
        unsafe { (rec.cb)(fd, events, rec.arg as *mut c_void) };
        IN_CALLBACK.with(|c| c.set(c.get() - 1));
        {
            let mut life = rec.life.lock();
            if let Some(i) = life.running.iter().position(|&t| t == me) {
                life.running.swap_remove(i);
            }
            rec.returned.notify_all();
        }
        if !rec.persistent {
            finish(ev, &rec);
            if let Ok(ctx) = context(rec.context) {
                ctx.inner.lock().events.remove(&ev);
            }
        }
    })
}

/// `vde_context_fini`: ends every event still registered (through the host's del functions).
pub(crate) fn fini(handle: u64) -> Result<(), Error> {
    end(&*context(handle)?, State::Finished)
}

/// `vde_context_delete`: ends the context for good (no init after this), finishes its events, then
/// removes it; the memory goes when the last call using it returns.
pub(crate) fn delete(handle: u64) -> Result<(), Error> {
    end(&*context(handle)?, State::Deleted)?;
    CONTEXTS.remove(handle).map(drop).map_err(|_| Error::InvalidArg("not a live vde_context (deleted twice?)"))
}

/// Moves a context to `to` (`Finished` or `Deleted`) and ends every event still registered, in one
/// decision under the context's lock, so no init or add can slip in between.
fn end(ctx: &Context, to: State) -> Result<(), Error> {
    let events: Vec<u64> = {
        let mut g = ctx.inner.lock();
        match (g.state, to) {
            (State::Deleted, State::Deleted) => {
                return Err(Error::InvalidArg("not a live vde_context (deleted twice?)"));
            }
            (State::Finished | State::Deleted, State::Finished) => {
                return Err(Error::InvalidArg("the context was already finished"));
            }
            // as in VDE3, this changes nothing: a later init works
            (State::New, State::Finished) => return Err(Error::InvalidArg("the context was never initialised")),
            _ => {}
        }
        g.state = to;
        g.modules.clear();
        g.events.drain().collect()
    };
    for ev in events {
        if let Ok(rec) = EVENTS.get(ev) {
            finish(ev, &rec);
        }
    }
    Ok(())
}

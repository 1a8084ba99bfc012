/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/**
 * @file cbslot.hpp
 * Header-only C++17 RAII layer over cbslot.h.
 *
 * - cbslot::callback<R(Args...)>: any callable (a lambda with captures, a functor, std::function) as a
 *   plain `R (*)(Args...)` for C APIs without a user-data argument. Move-only; unregisters in its destructor.
 * - cbslot::handle<T>: a refcounted handle to a T (copy = retain, destructor = release).
 * - cbslot::loop, cbslot::context, cbslot::queue: owners of a built-in loop, a VDE3 context and a queue.
 *
 * Every failing C call throws cbslot::error, carrying the status and cb_last_error()'s text (for the VDE3
 * context calls, the status is CB_ERR_INVALID_ARG and the text names errno).
 *
 * Exceptions never unwind into C: a callable called through a cbslot::callback runs in a noexcept
 * function, so an exception escaping it calls std::terminate(). Catch inside the callable if it may throw.
 */
#ifndef CBSLOT_HPP
#define CBSLOT_HPP

#include <cbslot.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

/** cbslot's C++ layer: RAII owners of callbacks, handles, loops, contexts and queues; failures throw cbslot::error. */
namespace cbslot {

/** A failed cbslot call: the status and the thread's cb_last_error() text at the time. */
class error : public std::runtime_error {
 public:
  /** An error for `status` whose what() is `what` (the wrapper passes cb_status_str() and cb_last_error()). */
  error(cb_status status, const std::string &what) : std::runtime_error(what), status_(status) {}
  /** The status the C call returned. */
  cb_status status() const noexcept { return status_; }

 private:
  cb_status status_;
};

// Internal helpers of this header (left out of the API reference: see EXCLUDE_SYMBOLS in docs/Doxyfile).
namespace detail {

inline void check(cb_status status) {
  if (status != CB_OK) throw error(status, std::string(cb_status_str(status)) + " -- " + cb_last_error());
}

inline void check_errno(bool failed) {
  if (failed) {
    int e = errno;
    throw error(CB_ERR_INVALID_ARG, std::string(cb_status_str(CB_ERR_INVALID_ARG)) + " (errno: " + std::strerror(e) +
                                        ") -- " + cb_last_error());
  }
}

template <class T>
constexpr bool is_int_class = std::is_integral_v<T> || std::is_pointer_v<T> || std::is_enum_v<T> ||
                              std::is_null_pointer_v<T>;
template <class T>
constexpr bool is_float_class = std::is_same_v<T, float> || std::is_same_v<T, double>;

template <class... Args>
constexpr int int_args() {
  return (0 + ... + (is_int_class<Args> ? 1 : 0));
}
template <class... Args>
constexpr int float_args() {
  return (0 + ... + (is_float_class<Args> ? 1 : 0));
}

}  // namespace detail

/// \cond
// Only the specialization for function types below is defined (and documented).
template <class Signature>
class callback;
/// \endcond

/**
 * A registration of a callable as a plain C function pointer `R (*)(Args...)`.
 *
 * Supported signatures (x86_64): up to 5 integer, enum or pointer arguments and up to 8 float/double
 * arguments; results of void, integer, enum, pointer, float or double. Anything else fails to compile.
 * The callable is moved into the registration; once the callback is unregistered and no call through it is
 * in flight, it is destroyed on cbslot's reclaimer thread, about 10 ms later (see cb_set_reclaim_delay).
 */
template <class R, class... Args>
class callback<R(Args...)> {
  static_assert(((detail::is_int_class<Args> || detail::is_float_class<Args>) && ...),
                "cbslot::callback: every argument must be an integer, enum, pointer, float or double");
  static_assert(detail::int_args<Args...>() <= 5,
                "cbslot::callback: at most 5 integer/pointer arguments (the callable's context takes the 6th "
                "register)");
  static_assert(detail::float_args<Args...>() <= 8, "cbslot::callback: at most 8 float/double arguments");
  static_assert(std::is_void_v<R> || detail::is_int_class<R> || detail::is_float_class<R>,
                "cbslot::callback: the result must be void, an integer, enum, pointer, float or double");

 public:
  /** The plain C function pointer type this callback hands out. */
  using pointer = R (*)(Args...);

  /** Registers a copy (or the moved value) of `f`. Throws cbslot::error if cb_register fails. */
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, callback>>>
  explicit callback(F &&f) {
    using Fn = std::decay_t<F>;
    static_assert(std::is_invocable_r_v<R, Fn &, Args...>, "cbslot::callback: the callable does not fit R(Args...)");
    auto owned = std::make_unique<Fn>(std::forward<F>(f));
    cb_fn entry = nullptr;
    detail::check(cb_register(reinterpret_cast<cb_fn>(&invoke<Fn>), owned.get(), &destroy<Fn>, &handle_, &entry));
    owned.release();  // now owned by the registration: destroy<Fn> frees it
    entry_ = reinterpret_cast<pointer>(entry);
  }

  /** Takes over `other`'s registration; `other` is left empty (get() is nullptr, handle() is 0). */
  callback(callback &&other) noexcept
      : handle_(std::exchange(other.handle_, 0)), entry_(std::exchange(other.entry_, nullptr)) {}
  /** Unregisters this callback's own registration (as reset()), then takes over `other`'s, leaving it empty. */
  callback &operator=(callback &&other) noexcept {
    if (this != &other) {
      reset();
      handle_ = std::exchange(other.handle_, 0);
      entry_ = std::exchange(other.entry_, nullptr);
    }
    return *this;
  }
  callback(const callback &) = delete;
  callback &operator=(const callback &) = delete;
  /** Unregisters, as reset(). */
  ~callback() { reset(); }

  /** The plain function pointer (nullptr after a move or reset). Calling it after reset is a stale call. */
  pointer get() const noexcept { return entry_; }
  /** The registration's handle (0 after a move or reset). */
  cb_handle handle() const noexcept { return handle_; }
  /** True while this owns a registration (false after a move or reset()). */
  explicit operator bool() const noexcept { return entry_ != nullptr; }

  /** Unregisters now (the callable is destroyed once no call is in flight). */
  void reset() noexcept {
    if (handle_) cb_unregister(handle_);
    handle_ = 0;
    entry_ = nullptr;
  }

 private:
  template <class Fn>
  static R invoke(void *self, Args... args) noexcept {
    return (*static_cast<Fn *>(self))(args...);
  }
  template <class Fn>
  static void destroy(void *self) noexcept {
    delete static_cast<Fn *>(self);
  }

  cb_handle handle_ = 0;
  pointer entry_ = nullptr;
};

/**
 * A reference to a T registered in cbslot's handle registry. Copying retains, destruction releases; the
 * last release deletes the T (with the deleter given to make()). value() is valid while you hold it.
 */
template <class T>
class handle {
 public:
  /**
   * Registers `object` (cb_handle_new); the handle owns it from now on. Throws cbslot::error
   * (CB_ERR_CAPACITY, CB_ERR_NO_MEMORY), and `object` is deleted then.
   */
  static handle make(std::unique_ptr<T> object) {
    cb_handle h = 0;
    detail::check(cb_handle_new(object.get(), [](void *p) { delete static_cast<T *>(p); }, &h));
    object.release();
    return handle(h);
  }
  /**
   * Takes a new reference to an existing raw handle (for handles that came through C). Throws cbslot::error
   * (CB_ERR_INVALID_HANDLE) for 0, a stale or garbage handle, or one that names a callback.
   */
  static handle retain(cb_handle raw) {
    detail::check(cb_handle_retain(raw));
    return handle(raw);
  }

  /** An empty handle: raw() is 0 and value() throws. */
  handle() = default;
  /** Another reference to `o`'s object (cb_handle_retain). Throws cbslot::error if the count is at its limit. */
  handle(const handle &o) : raw_(o.raw_) {
    if (raw_) detail::check(cb_handle_retain(raw_));
  }
  /** Takes over `o`'s reference; `o` is left empty. */
  handle(handle &&o) noexcept : raw_(std::exchange(o.raw_, 0)) {}
  /**
   * Releases the reference held so far and holds `o`'s instead (copy-and-swap: assigning from an lvalue
   * retains, and throws cbslot::error as the copy constructor does, before anything is released).
   */
  handle &operator=(handle o) noexcept {
    std::swap(raw_, o.raw_);
    return *this;
  }
  /** Releases the reference (if any); the last release deletes the object. */
  ~handle() {
    if (raw_) cb_handle_release(raw_);
  }

  /** The object. Throws cbslot::error for an empty handle. */
  T &value() const {
    void *p = nullptr;
    detail::check(cb_handle_get(raw_, &p));
    return *static_cast<T *>(p);
  }
  /** Member access to the object, as value(): throws cbslot::error for an empty handle. */
  T *operator->() const { return &value(); }
  /** The raw 64-bit handle, to pass through C (it stays valid while some cbslot::handle holds it). */
  cb_handle raw() const noexcept { return raw_; }
  /** True unless the handle is empty (default-constructed or moved from). */
  explicit operator bool() const noexcept { return raw_ != 0; }

 private:
  explicit handle(cb_handle raw) : raw_(raw) {}
  cb_handle raw_ = 0;
};

/** cbslot's built-in event loop (epoll): owns a cb_loop, freed on destruction. Not copyable. */
class loop {
 public:
  /**
   * Creates the loop (cb_loop_new). Throws cbslot::error, e.g. CB_ERR_UNSUPPORTED where cb_features() lacks
   * CB_FEATURE_LOOP.
   */
  loop() { detail::check(cb_loop_new(&loop_)); }
  loop(const loop &) = delete;
  loop &operator=(const loop &) = delete;
  /** Frees the loop (cb_loop_free); destroy the contexts using it first. Events still in it never fire. */
  ~loop() { cb_loop_free(loop_); }

  /** Its four VDE3 functions (cb_loop_handler), for a cbslot::context; valid while the loop lives. */
  vde_event_handler handler() const {
    vde_event_handler h;
    detail::check(cb_loop_handler(loop_, &h));
    return h;
  }
  /**
   * Runs the loop on this thread until stop() or until nothing is registered (cb_loop_run). Throws
   * cbslot::error if the loop is already running (on another thread, or this is one of its callbacks).
   */
  void run() { detail::check(cb_loop_run(loop_)); }
  /**
   * One round (cb_loop_run_once): waits up to `timeout_ms` (-1: until something is due; 0: polls), runs
   * what is ready, and returns how many callbacks ran. Throws cbslot::error for `timeout_ms` < -1 or a
   * loop that is already running.
   */
  size_t run_once(int timeout_ms) {
    size_t n = 0;
    detail::check(cb_loop_run_once(loop_, timeout_ms, &n));
    return n;
  }
  /**
   * Makes run() return after the current round (cb_loop_stop); callable from any thread and from callbacks.
   * A stop while the loop is not running makes the next run() return at once.
   */
  void stop() { detail::check(cb_loop_stop(loop_)); }
  /** The C loop, for what this class does not wrap (cb_loop_pending()); still owned by this object. */
  cb_loop *get() const noexcept { return loop_; }

 private:
  cb_loop *loop_ = nullptr;
};

/** A VDE3 context: created and initialised with a copy of `handler`, deleted (after fini) on destruction. */
class context {
 public:
  /**
   * Creates and initialises the context (vde_context_new(), vde_context_init()) with copies of `handler` and
   * `modules_path` (a NULL-terminated array, may be null). Throws cbslot::error (CB_ERR_INVALID_ARG, errno
   * in the text), for example when one of the handler's functions is null; nothing is left allocated then.
   */
  explicit context(const vde_event_handler &handler, char **modules_path = nullptr) {
    detail::check_errno(vde_context_new(&ctx_) != 0);
    vde_event_handler copy = handler; /* VDE3's init takes a non-const pointer; cbslot only reads it */
    if (vde_context_init(ctx_, &copy, modules_path) != 0) {
      int e = errno;
      vde_context_delete(ctx_);
      errno = e;
      detail::check_errno(true);
    }
  }
  context(const context &) = delete;
  context &operator=(const context &) = delete;
  /** vde_context_delete(): ends every event and timeout still registered (finishing the context), then frees it. */
  ~context() { vde_context_delete(ctx_); }

  /**
   * Registers `cb(fd, what, arg)` for `events` (VDE_EV_READ, VDE_EV_WRITE, VDE_EV_PERSIST) on `fd`, with an
   * optional `timeout` (vde_context_event_add). Returns cbslot's token for event_del(). Throws
   * cbslot::error (errno in the text) for bad arguments or when the host's event_add fails.
   */
  void *event_add(int fd, short events, const struct timeval *timeout, vde_event_cb cb, void *arg) {
    void *ev = vde_context_event_add(ctx_, fd, events, timeout, cb, arg);
    detail::check_errno(ev == nullptr);
    return ev;
  }
  /**
   * Registers `cb(-1, VDE_EV_TIMEOUT, arg)` to run after `timeout` (repeatedly with VDE_EV_PERSIST in
   * `events`). Takes `timeout` first, like the handler struct, and calls vde_context_timeout_add() in
   * VDE3's order. Returns the token for timeout_del(). Throws cbslot::error as event_add() does.
   */
  void *timeout_add(const struct timeval *timeout, short events, vde_event_cb cb, void *arg) {
    void *ev = vde_context_timeout_add(ctx_, events, timeout, cb, arg);
    detail::check_errno(ev == nullptr);
    return ev;
  }
  /**
   * Deletes an event from event_add() (vde_context_event_del): its callback never runs again. Throws
   * cbslot::error (EINVAL) for a token that is not a live event of this context.
   */
  void event_del(void *ev) {
    errno = 0;
    vde_context_event_del(ctx_, ev);
    detail::check_errno(errno != 0);
  }
  /** Deletes a timeout from timeout_add(), as event_del() does for events. */
  void timeout_del(void *ev) {
    errno = 0;
    vde_context_timeout_del(ctx_, ev);
    detail::check_errno(errno != 0);
  }
  /** The C context, for VDE3 code that takes a `vde_context *`; still owned by this object. */
  vde_context *get() const noexcept { return ctx_; }

 private:
  vde_context *ctx_ = nullptr;
};

/** A delivery queue; its sinks take any callable `void(const void *data, size_t len)`. */
class queue {
 public:
  /**
   * A queue of `capacity` events, rounded up to a power of two (cb_queue_new). Throws cbslot::error for
   * capacity 0 or above CB_QUEUE_MAX_CAPACITY, or CB_ERR_NO_MEMORY.
   */
  explicit queue(size_t capacity) { detail::check(cb_queue_new(capacity, &q_)); }
  queue(const queue &) = delete;
  queue &operator=(const queue &) = delete;
  /** Frees the queue (cb_queue_free): pending events are dropped, every sink's callable is destroyed. */
  ~queue() { cb_queue_free(q_); }

  /**
   * Registers a sink (cb_queue_sink_register) and returns its handle, for post() and unregister(). The
   * callable lives until the sink is unregistered or the queue closes; drain() calls it on the consumer's
   * thread. Throws cbslot::error, e.g. CB_ERR_CLOSED for a closed queue.
   */
  template <class F>
  cb_handle sink(F &&f) {
    using Fn = std::decay_t<F>;
    auto owned = std::make_unique<Fn>(std::forward<F>(f));
    cb_handle h = 0;
    detail::check(cb_queue_sink_register(
        q_, [](void *ud, const void *data, size_t len) noexcept { (*static_cast<Fn *>(ud))(data, len); },
        owned.get(), [](void *ud) { delete static_cast<Fn *>(ud); }, &h));
    owned.release();
    return h;
  }
  /**
   * Unregisters a sink (cb_queue_sink_unregister): its pending events are dropped, its callable destroyed.
   * Throws cbslot::error (CB_ERR_INVALID_HANDLE) for an unknown or already unregistered sink.
   */
  static void unregister(cb_handle sink) { detail::check(cb_queue_sink_unregister(sink)); }
  /**
   * Posts a copy of `len` bytes at `data` to `sink` without blocking (cb_queue_post), from any thread.
   * Throws cbslot::error, e.g. CB_ERR_CAPACITY when the queue is full or CB_ERR_INVALID_HANDLE for a sink
   * that was unregistered.
   */
  static void post(cb_handle sink, const void *data, size_t len) { detail::check(cb_queue_post(sink, data, len)); }
  /**
   * Delivers up to `max` pending events on this thread (cb_queue_drain), waiting up to `timeout_ms` (0: no
   * wait; -1: until one arrives or the queue closes) if none is pending; returns how many were delivered.
   * Throws cbslot::error for a bad timeout.
   */
  size_t drain(size_t max, int timeout_ms = 0) {
    size_t n = 0;
    detail::check(cb_queue_drain(q_, max, timeout_ms, &n));
    return n;
  }
  /** A descriptor readable while events are pending, for epoll and the like (cb_queue_fd). Do not read or close it. */
  int fd() const {
    int fd = -1;
    detail::check(cb_queue_fd(q_, &fd));
    return fd;
  }
  /**
   * Closes the queue (cb_queue_close): posts fail from now on, pending events are delivered on this thread
   * if `deliver_pending` (else dropped), then every sink is unregistered. Throws cbslot::error
   * (CB_ERR_CLOSED) if it was closed already.
   */
  void close(bool deliver_pending) { detail::check(cb_queue_close(q_, deliver_pending ? 1 : 0)); }
  /** The queue's counters (cb_queue_get_stats). */
  cb_queue_stats stats() const {
    cb_queue_stats s;
    detail::check(cb_queue_get_stats(q_, &s));
    return s;
  }
  /** The C queue, for C code that takes a `cb_queue *` (to drain it there, say); still owned by this object. */
  cb_queue *get() const noexcept { return q_; }

 private:
  cb_queue *q_ = nullptr;
};

}  // namespace cbslot

#endif

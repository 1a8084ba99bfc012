/* Fork and exit:
 * - fork while other threads are inside callbacks: the child can register, call and unregister (its grace
 *   periods do not wait for the parent's threads), and destroys that were due in the parent at the fork
 *   run in the parent only;
 * - a thread that exits from inside a callback does not pin it: unregister_wait still completes;
 * - a process that exits with callbacks live and calls in flight exits cleanly. */
#define _GNU_SOURCE
#include "check.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static atomic_int stop, inside;
static atomic_int destroyed_here;
static void count_destroy(void *ud) {
  (void)ud;
  atomic_fetch_add(&destroyed_here, 1);
}

static long slow(void *ud, long x) {
  (void)ud;
  atomic_fetch_add(&inside, 1);
  for (volatile int i = 0; i < 20000; i++) {
  }
  atomic_fetch_sub(&inside, 1);
  return x + 1;
}

static void *caller(void *arg) {
  long (*f)(long) = (long (*)(long))(uintptr_t)arg;
  while (!atomic_load(&stop)) f(1);
  return NULL;
}

static int wait_child(pid_t pid, int seconds) {
  for (int i = 0; i < seconds * 100; i++) {
    int status;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    usleep(10000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  return -1; /* hung */
}

static void fork_with_calls_in_flight(void) {
  cb_handle busy, due;
  cb_fn busy_e, due_e;
  CHECK_STATUS(CB_OK, cb_register((cb_fn)slow, NULL, count_destroy, &busy, &busy_e));
  CHECK_STATUS(CB_OK, cb_register((cb_fn)slow, NULL, count_destroy, &due, &due_e));
  /* `due` is unregistered while a thread is inside it, so its destroy is pending at the fork */
  pthread_t t[2];
  for (int i = 0; i < 2; i++) CHECK(pthread_create(&t[i], NULL, caller, (void *)(uintptr_t)(i ? busy_e : due_e)) == 0);
  while (atomic_load(&inside) == 0) sched_yield();
  CHECK_STATUS(CB_OK, cb_unregister(due));
  fflush(NULL);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    /* the child: only this thread exists; the parent's threads were inside `busy` and `due` */
    int ok = 1;
    /* `due` may have been destroyed before the fork already (the reclaimer runs it once its caller is
     * between calls): count only what the child runs */
    int before = atomic_load(&destroyed_here);
    cb_stats st;
    ok &= cb_get_stats(&st) == CB_OK && st.pending_destroy == 0; /* the parent's due destroy is not ours */
    ok &= ((long (*)(long))busy_e)(41) == 42;
    cb_handle mine;
    cb_fn mine_e;
    ok &= cb_register((cb_fn)slow, NULL, count_destroy, &mine, &mine_e) == CB_OK;
    ok &= ((long (*)(long))mine_e)(1) == 2;
    ok &= cb_unregister_wait(mine) == CB_OK;       /* no wait for threads that do not exist here */
    ok &= cb_unregister_wait(busy) == CB_OK;       /* the child's own copy of a live registration */
    ok &= cb_barrier() == CB_OK;
    ok &= atomic_load(&destroyed_here) - before == 2; /* mine and busy: never `due` */
    _exit(ok ? 0 : 1);
  }
  CHECK(wait_child(pid, 30) == 0);
  atomic_store(&stop, 1);
  for (int i = 0; i < 2; i++) CHECK(pthread_join(t[i], NULL) == 0);
  CHECK_STATUS(CB_OK, cb_barrier());
  CHECK(atomic_load(&destroyed_here) == 1); /* `due`, in the parent */
  CHECK_STATUS(CB_OK, cb_unregister_wait(busy));
  CHECK(atomic_load(&destroyed_here) == 2);
}

/* a thread exits from inside a callback */
static long exits_inside(void *ud, long x) {
  (void)ud;
  (void)x;
  pthread_exit(NULL);
}
static void *exiting_caller(void *arg) {
  ((long (*)(long))(uintptr_t)arg)(0);
  return NULL;
}

static void thread_exit_inside_callback(void) {
  atomic_store(&destroyed_here, 0);
  cb_handle h;
  cb_fn e;
  CHECK_STATUS(CB_OK, cb_register((cb_fn)exits_inside, NULL, count_destroy, &h, &e));
  for (int i = 0; i < 20; i++) { /* its record is given back and reused by the next thread */
    pthread_t t;
    CHECK(pthread_create(&t, NULL, exiting_caller, (void *)(uintptr_t)e) == 0);
    CHECK(pthread_join(t, NULL) == 0);
  }
  CHECK_STATUS(CB_OK, cb_unregister_wait(h)); /* would hang if an exited thread still pinned it */
  CHECK(atomic_load(&destroyed_here) == 1);
}

/* exit with callbacks live and calls in flight */
static void process_exit_with_calls_in_flight(void) {
  fflush(NULL);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    atomic_store(&stop, 0);
    cb_handle h[100];
    cb_fn e[100];
    for (int i = 0; i < 100; i++)
      if (cb_register((cb_fn)slow, NULL, count_destroy, &h[i], &e[i]) != CB_OK) _exit(2);
    pthread_t t[3];
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, caller, (void *)(uintptr_t)e[i]);
    for (int i = 50; i < 100; i++) cb_unregister(h[i]); /* some destroys pending too */
    while (atomic_load(&inside) == 0) sched_yield();
    exit(0); /* atexit handlers and static destructors run while threads are inside callbacks */
  }
  CHECK(wait_child(pid, 30) == 0);
}

static void ignore_stale(cb_fn entry, void *arg) {
  (void)entry;
  (void)arg;
}

int main(void) {
  check_require(CB_FEATURE_ENTRIES);
  cb_set_stale_handler(ignore_stale, NULL); /* the caller threads keep calling `due` after its unregister */
  fork_with_calls_in_flight();
  thread_exit_inside_callback();
  process_exit_with_calls_in_flight();
  CHECK_DONE("test_fork_exit");
}

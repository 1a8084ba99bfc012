/* The handle registry contract: happy path, refcount, destroy exactly once, destroy re-entering cbslot,
 * and every bad input (NULL, 0, garbage, stale, double) with outputs untouched on failure. */
#include "check.h"

#include <stdint.h>

typedef struct object {
  int id;
  int destroyed; /* how many times destroy ran for it */
} object;

static void destroy_object(void *p) { ((object *)p)->destroyed++; }

static void happy_path_and_refcount(void) {
  object o = {1, 0};
  cb_handle h = 0;
  CHECK_STATUS(CB_OK, cb_handle_new(&o, destroy_object, &h));
  CHECK(h != 0);
  void *p = NULL;
  CHECK_STATUS(CB_OK, cb_handle_get(h, &p));
  CHECK(p == &o);

  CHECK_STATUS(CB_OK, cb_handle_retain(h));
  CHECK_STATUS(CB_OK, cb_handle_retain(h));
  CHECK_STATUS(CB_OK, cb_handle_release(h));
  CHECK_STATUS(CB_OK, cb_handle_release(h));
  CHECK(o.destroyed == 0);
  CHECK_STATUS(CB_OK, cb_handle_get(h, &p));
  CHECK_STATUS(CB_OK, cb_handle_release(h)); /* the last reference */
  CHECK(o.destroyed == 1);

  /* the handle is dead now: every use is an error and destroy never runs again */
  p = (void *)0x1;
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_handle_get(h, &p));
  CHECK(p == (void *)0x1); /* output untouched on failure */
  CHECK_LAST_ERROR("is stale");
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_handle_retain(h));
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_handle_release(h)); /* double release */
  CHECK_LAST_ERROR("cb_handle_release");
  CHECK(o.destroyed == 1);

  /* NULL ptr and NULL destroy are allowed */
  CHECK_STATUS(CB_OK, cb_handle_new(NULL, NULL, &h));
  p = (void *)0x1;
  CHECK_STATUS(CB_OK, cb_handle_get(h, &p));
  CHECK(p == NULL);
  CHECK_STATUS(CB_OK, cb_handle_release(h));
}

static void null_outputs(void) {
  object o = {2, 0};
  CHECK_STATUS(CB_ERR_NULL_ARG, cb_handle_new(&o, destroy_object, NULL));
  CHECK_LAST_ERROR("cb_handle_new: argument `out_handle` is NULL");
  CHECK(o.destroyed == 0); /* nothing was registered, so nothing is destroyed */

  cb_handle h;
  CHECK_STATUS(CB_OK, cb_handle_new(&o, destroy_object, &h));
  CHECK_STATUS(CB_ERR_NULL_ARG, cb_handle_get(h, NULL));
  CHECK_LAST_ERROR("cb_handle_get: argument `out_ptr` is NULL");
  /* a NULL out-pointer is reported before the handle is looked at */
  CHECK_STATUS(CB_ERR_NULL_ARG, cb_handle_get(0, NULL));
  CHECK_STATUS(CB_OK, cb_handle_release(h));
  CHECK(o.destroyed == 1);
}

static void zero_and_garbage(void) {
  object o = {3, 0};
  cb_handle live;
  CHECK_STATUS(CB_OK, cb_handle_new(&o, destroy_object, &live));

  void *p = (void *)0x1;
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_handle_get(0, &p));
  CHECK_LAST_ERROR("is 0, which is never a valid handle");
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_handle_retain(0));
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_handle_release(0));

  /* hand-made garbage: wrong kind byte, generation 0, an index far past anything issued, all ones */
  const cb_handle garbage[] = {1, UINT64_MAX, 0x00000001000000ffULL, live & 0xff000000ffffffffULL,
                               (live & 0xffffffff00000000ULL) | 0xfffffff0u, live ^ (1ULL << 56),
                               live + (1ULL << 32), 0xc1ffffffffffffffULL};
  for (size_t i = 0; i < sizeof garbage / sizeof *garbage; i++) {
    CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_handle_get(garbage[i], &p));
    CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_handle_retain(garbage[i]));
    CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_handle_release(garbage[i]));
  }
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_handle_get(1, &p));
  CHECK_LAST_ERROR("is not a cbslot handle");

  /* random 64-bit values: none may crash, and none may touch the live object */
  uint64_t seed = 0x9E3779B97F4A7C15ULL;
  for (int i = 0; i < 1000000; i++) {
    cb_handle g = check_rand(&seed);
    if (i & 1) g = (g & 0x00ffffffffffffffULL) | (live & 0xff00000000000000ULL); /* right kind byte */
    if (g == live) continue;
    cb_status s = cb_handle_get(g, &p);
    CHECK(s == CB_ERR_INVALID_HANDLE);
    CHECK(cb_handle_release(g) == CB_ERR_INVALID_HANDLE);
  }
  CHECK(p == (void *)0x1);
  CHECK(o.destroyed == 0);
  CHECK_STATUS(CB_OK, cb_handle_get(live, &p));
  CHECK(p == &o);
  CHECK_STATUS(CB_OK, cb_handle_release(live));
  CHECK(o.destroyed == 1);
}

/* After a slot is reused, the old handle must fail rather than reach the new object. */
static void stale_never_reaches_a_newer_object(void) {
  enum { N = 4096 };
  static object objs[N];
  static cb_handle old[N], now[N];
  for (int i = 0; i < N; i++) CHECK_STATUS(CB_OK, cb_handle_new(&objs[i], destroy_object, &old[i]));
  for (int i = 0; i < N; i++) CHECK_STATUS(CB_OK, cb_handle_release(old[i]));
  for (int i = 0; i < N; i++) CHECK_STATUS(CB_OK, cb_handle_new(&objs[i], destroy_object, &now[i]));
  for (int i = 0; i < N; i++) {
    void *p = NULL;
    CHECK(now[i] != old[i]);
    CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_handle_get(old[i], &p));
    CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_handle_release(old[i]));
    CHECK_STATUS(CB_OK, cb_handle_get(now[i], &p));
    CHECK(p == &objs[i]);
  }
  for (int i = 0; i < N; i++) {
    CHECK_STATUS(CB_OK, cb_handle_release(now[i]));
    CHECK(objs[i].destroyed == 2);
  }
}

/* destroy may call back into cbslot: release other handles, create new ones, look at its own (dead) handle. */
typedef struct chain {
  cb_handle self;
  cb_handle next;    /* released from this object's destroy */
  cb_handle created; /* a handle made from inside destroy */
  int destroyed;
  cb_status self_get; /* what cb_handle_get(self) said from inside destroy */
} chain;

static void destroy_chain(void *p) {
  chain *c = p;
  c->destroyed++;
  void *q;
  c->self_get = cb_handle_get(c->self, &q);
  if (c->next) CHECK_STATUS(CB_OK, cb_handle_release(c->next));
  CHECK_STATUS(CB_OK, cb_handle_new(c, NULL, &c->created));
}

static void destroy_reenters(void) {
  enum { LEN = 1000 };
  static chain links[LEN];
  cb_handle next = 0;
  for (int i = LEN - 1; i >= 0; i--) { /* links[i] owns links[i+1]'s only reference */
    links[i].next = next;
    CHECK_STATUS(CB_OK, cb_handle_new(&links[i], destroy_chain, &links[i].self));
    next = links[i].self;
  }
  CHECK_STATUS(CB_OK, cb_handle_release(links[0].self)); /* 1000 nested destroys, each re-entering */
  for (int i = 0; i < LEN; i++) {
    CHECK(links[i].destroyed == 1);
    CHECK(links[i].self_get == CB_ERR_INVALID_HANDLE); /* invalid before destroy runs */
    void *q = NULL;
    CHECK_STATUS(CB_OK, cb_handle_get(links[i].created, &q));
    CHECK(q == &links[i]);
    CHECK_STATUS(CB_OK, cb_handle_release(links[i].created));
  }
}

int main(void) {
  happy_path_and_refcount();
  null_outputs();
  zero_and_garbage();
  stale_never_reaches_a_newer_object();
  destroy_reenters();
  CHECK_DONE("test_handles");
}

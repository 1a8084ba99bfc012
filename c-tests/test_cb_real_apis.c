/* Real C APIs that take a bare function pointer with no user data: qsort, bsearch, nftw. The context
 * travels in the entry. Two threads sort concurrently, each with its own context. */
#define _XOPEN_SOURCE 700
#include "check.h"

#include <ftw.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct order {
  int descending;
  long comparisons;
} order;

static int compare(void *ud, const void *a, const void *b) {
  order *o = ud;
  o->comparisons++;
  int x = *(const int *)a, y = *(const int *)b;
  int r = (x > y) - (x < y);
  return o->descending ? -r : r;
}

static void sort_with(order *o, int *v, size_t n) {
  cb_handle h;
  cb_fn entry;
  CHECK_STATUS(CB_OK, cb_register((cb_fn)compare, o, NULL, &h, &entry));
  qsort(v, n, sizeof *v, (int (*)(const void *, const void *))entry);
  CHECK_STATUS(CB_OK, cb_unregister(h));
}

static void qsort_and_bsearch(void) {
  enum { N = 1000 };
  int v[N];
  uint64_t seed = 42;
  for (int i = 0; i < N; i++) v[i] = (int)(check_rand(&seed) % 100000);
  order up = {0, 0}, down = {1, 0};
  sort_with(&up, v, N);
  for (int i = 1; i < N; i++) CHECK(v[i - 1] <= v[i]);
  CHECK(up.comparisons > N);
  sort_with(&down, v, N);
  for (int i = 1; i < N; i++) CHECK(v[i - 1] >= v[i]);
  CHECK(down.comparisons > 0);

  cb_handle h;
  cb_fn entry;
  CHECK_STATUS(CB_OK, cb_register((cb_fn)compare, &down, NULL, &h, &entry));
  for (int i = 0; i < N; i += 37) {
    int *hit = bsearch(&v[i], v, N, sizeof *v, (int (*)(const void *, const void *))entry);
    CHECK(hit != NULL && *hit == v[i]);
  }
  int missing = -1;
  CHECK(bsearch(&missing, v, N, sizeof *v, (int (*)(const void *, const void *))entry) == NULL);
  CHECK_STATUS(CB_OK, cb_unregister(h));
}

/* ---- two threads sorting at once, each through its own entry ---- */
typedef struct job {
  order o;
  int v[20000];
  int ok;
} job;

static void *sort_thread(void *arg) {
  job *j = arg;
  for (int round = 0; round < 20; round++) {
    uint64_t seed = 7 + (uint64_t)round + (uint64_t)j->o.descending * 1000;
    for (int i = 0; i < 20000; i++) j->v[i] = (int)(check_rand(&seed) % 1000000);
    cb_handle h;
    cb_fn entry;
    if (cb_register((cb_fn)compare, &j->o, NULL, &h, &entry) != CB_OK) return NULL;
    qsort(j->v, 20000, sizeof(int), (int (*)(const void *, const void *))entry);
    if (cb_unregister(h) != CB_OK) return NULL;
    for (int i = 1; i < 20000; i++)
      if (j->o.descending ? j->v[i - 1] < j->v[i] : j->v[i - 1] > j->v[i]) return NULL;
  }
  j->ok = 1;
  return NULL;
}

static void concurrent_qsort(void) {
  static job a, b;
  a.o.descending = 0;
  b.o.descending = 1;
  pthread_t ta, tb;
  CHECK(pthread_create(&ta, NULL, sort_thread, &a) == 0);
  CHECK(pthread_create(&tb, NULL, sort_thread, &b) == 0);
  CHECK(pthread_join(ta, NULL) == 0 && pthread_join(tb, NULL) == 0);
  CHECK(a.ok && b.ok);
}

/* ---- nftw: the walk's counts go to the entry's context ---- */
typedef struct walk {
  int files, dirs;
  long bytes;
} walk;

static int visit(void *ud, const char *path, const struct stat *st, int type, struct FTW *ftw) {
  walk *w = ud;
  (void)path;
  (void)ftw;
  if (type == FTW_F) {
    w->files++;
    w->bytes += st->st_size;
  } else if (type == FTW_D || type == FTW_DP) {
    w->dirs++;
  }
  return 0;
}

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
  (void)st;
  (void)type;
  (void)ftw;
  return remove(path);
}

static void nftw_walk(void) {
  char root[] = "/tmp/cbslot-nftw-XXXXXX";
  CHECK(mkdtemp(root) != NULL);
  char path[256];
  for (int d = 0; d < 3; d++) {
    snprintf(path, sizeof path, "%s/d%d", root, d);
    CHECK(mkdir(path, 0700) == 0);
    for (int f = 0; f <= d; f++) {
      snprintf(path, sizeof path, "%s/d%d/f%d", root, d, f);
      FILE *fp = fopen(path, "w");
      CHECK(fp != NULL);
      fputs("0123456789", fp);
      fclose(fp);
    }
  }
  walk w = {0, 0, 0};
  cb_handle h;
  cb_fn entry;
  CHECK_STATUS(CB_OK, cb_register((cb_fn)visit, &w, NULL, &h, &entry));
  CHECK(nftw(root, (int (*)(const char *, const struct stat *, int, struct FTW *))entry, 8, FTW_PHYS) == 0);
  CHECK_STATUS(CB_OK, cb_unregister(h));
  CHECK(w.files == 6 && w.dirs == 4 && w.bytes == 60);
  CHECK(nftw(root, rm_entry, 8, FTW_DEPTH | FTW_PHYS) == 0);
}

int main(void) {
  check_require(CB_FEATURE_ENTRIES);
  qsort_and_bsearch();
  concurrent_qsort();
  nftw_walk();
  CHECK_DONE("test_cb_real_apis");
}

/* 100,000 and then 1,000,000 live callbacks: all distinct, each reaching its own userdata, with no page
 * of the process ever writable and executable (checked in /proc/self/maps while they are live), code
 * mapped read+exec and data read+write. Then all are unregistered and destroyed exactly once. */
#include "check.h"

#include <stdint.h>

enum { MAX = 1000000 };

static unsigned char destroyed[MAX];
static cb_handle handles[MAX];
static cb_fn entries[MAX];

static long identify(void *ud, long salt) { return ((unsigned char *)ud - destroyed) * 7 + salt; }
static void destroy_cell(void *ud) { ((unsigned char *)ud)[0]++; }

static char last_path[512]; /* the file behind the mapping of the last address scanned */

/* valgrind maps its own translation cache read+write+exec: only cbslot's mappings count there
 * (check_under_valgrind) */

/* Returns the number of writable+executable mappings; sets *perms to the permissions of `addr`'s mapping. */
static int scan_maps(uintptr_t addr, char perms[5], int *mappings) {
  FILE *f = fopen("/proc/self/maps", "r");
  CHECK(f != NULL);
  char line[1024];
  int wx = 0;
  *mappings = 0;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    char p[5];
    if (sscanf(line, "%lx-%lx %4s", &lo, &hi, p) != 3) continue;
    (*mappings)++;
    if (strchr(p, 'w') && strchr(p, 'x') && !check_under_valgrind()) {
      fprintf(stderr, "W+X mapping: %s", line);
      wx++;
    }
    if (addr >= lo && addr < hi) {
      memcpy(perms, p, 5);
      char *path = strchr(line, '/');
      snprintf(last_path, sizeof last_path, "%s", path ? path : "");
    }
  }
  fclose(f);
  return wx;
}

static void live_and_check(int n) {
  cb_stats before;
  CHECK_STATUS(CB_OK, cb_get_stats(&before));
  for (int i = 0; i < n; i++) CHECK_STATUS(CB_OK, cb_register((cb_fn)identify, &destroyed[i], destroy_cell, &handles[i], &entries[i]));
  for (int i = 0; i < n; i++) CHECK(((long (*)(long))entries[i])(3) == (long)i * 7 + 3);
  /* distinct: every entry reached its own userdata above; also no two handles are equal */
  for (int i = 1; i < n; i++) CHECK(handles[i] != handles[i - 1] && entries[i] != entries[i - 1]);

  int mappings;
  for (int i = 0; i < n; i += n / 7) {
    char code[5] = "", data[5] = "";
    CHECK(scan_maps((uintptr_t)entries[i], code, &mappings) == 0);
    CHECK(strcmp(code, "r-xp") == 0);
    /* the code comes from where CBSLOT_TRAMPOLINES says (unset: the library's own file) */
    const char *source = getenv("CBSLOT_TRAMPOLINES");
    CHECK(strstr(last_path, source && !strcmp(source, "memfd") ? "/memfd:cbslot-trampolines" : "libcbslot.so"));
    CHECK(scan_maps((uintptr_t)entries[i] + 65536, data, &mappings) == 0);
    CHECK(strcmp(data, "rw-p") == 0);
  }
  cb_stats s;
  CHECK_STATUS(CB_OK, cb_get_stats(&s));
  CHECK(s.live == before.live + (uint64_t)n);
  CHECK(s.capacity >= s.live);
  printf("%d live callbacks: %d mappings in the process, capacity %llu slots, 0 W+X\n", n, mappings,
         (unsigned long long)s.capacity);

  for (int i = 0; i < n; i++) CHECK_STATUS(CB_OK, cb_unregister(handles[i]));
  CHECK_STATUS(CB_OK, cb_barrier());
  for (int i = 0; i < n; i++) CHECK(destroyed[i] == 1);
  memset(destroyed, 0, (size_t)n);
  CHECK_STATUS(CB_OK, cb_get_stats(&s));
  CHECK(s.live == before.live && s.pending_destroy == 0);
}

int main(void) {
  check_require(CB_FEATURE_ENTRIES);
  live_and_check(100000);
  live_and_check(MAX);
  CHECK_DONE("test_cb_many");
}

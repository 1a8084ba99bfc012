/* 1,000,000 live handles: all distinct, all resolve to their own object, all destroyed exactly once. */
#include "check.h"

#include <stdint.h>

enum { N = 1000000 };

static unsigned char destroyed[N];

static void destroy_cell(void *p) { destroyed[(unsigned char *)p - destroyed]++; }

int main(void) {
  cb_handle *handles = malloc(N * sizeof *handles);
  CHECK(handles != NULL);
  for (int i = 0; i < N; i++) CHECK_STATUS(CB_OK, cb_handle_new(&destroyed[i], destroy_cell, &handles[i]));
  /* every handle resolves to its own cell (so no two are equal) */
  for (int i = 0; i < N; i++) {
    void *p = NULL;
    CHECK_STATUS(CB_OK, cb_handle_get(handles[i], &p));
    CHECK(p == &destroyed[i]);
  }
  /* release every other one, check the rest still resolve, then release the rest */
  for (int i = 0; i < N; i += 2) CHECK_STATUS(CB_OK, cb_handle_release(handles[i]));
  for (int i = 0; i < N; i++) {
    void *p = NULL;
    CHECK_STATUS((i % 2) ? CB_OK : CB_ERR_INVALID_HANDLE, cb_handle_get(handles[i], &p));
    CHECK(destroyed[i] == !(i % 2));
  }
  for (int i = 1; i < N; i += 2) CHECK_STATUS(CB_OK, cb_handle_release(handles[i]));
  for (int i = 0; i < N; i++) CHECK(destroyed[i] == 1);
  free(handles);
  CHECK_DONE("test_handles_1m");
}

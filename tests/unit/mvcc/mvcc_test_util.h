/* Helpers shared by the MVCC tests. */
#ifndef KV_TEST_MVCC_UTIL_H
#define KV_TEST_MVCC_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/mvcc.h"

/* A fresh directory under $TMPDIR (or /tmp); free() the result. */
char *tu_tmpdir(void);
/* rm -rf path (a test directory). */
void tu_rmrf(const char *path);

/* Short-hands over NUL-terminated strings; abort the test on failure. */
void tu_put(struct mvcc *m, const char *k, const char *v, int64_t lease);
void tu_putb(struct mvcc *m, const void *k, size_t kl, const void *v,
	     size_t vl);
int64_t tu_del(struct mvcc *m, const char *k, const char *end);
/* Range over [k, end) (end NULL = single key) at rev. */
int tu_range(struct mvcc *m, const char *k, const char *end, int64_t rev,
	     struct mvcc_arena *a, struct mvcc_range_res *res);

bool tu_kv_eq(const struct mvcc_kv *a, const struct mvcc_kv *b);

#endif

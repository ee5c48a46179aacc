#include "mvcc_test_util.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *tu_tmpdir(void)
{
	const char *base = getenv("TMPDIR");
	char *p = malloc(4096);

	if (p == NULL)
		abort();
	snprintf(p, 4096, "%s/kv-mvcc-XXXXXX", base ? base : "/tmp");
	if (mkdtemp(p) == NULL)
		abort();
	return p;
}

static int rm_one(const char *path, const struct stat *st, int flag,
		  struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void tu_rmrf(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void tu_putb(struct mvcc *m, const void *k, size_t kl, const void *v,
	     size_t vl)
{
	struct mvcc_arena a = MVCC_ARENA_INIT;
	struct mvcc_put_req r = { 0 };
	struct mvcc_put_res res;

	r.key = k;
	r.key_len = kl;
	r.value = v;
	r.value_len = vl;
	if (mvcc_put(m, &r, &a, &res) != 0)
		abort();
	mvcc_arena_free(&a);
}

void tu_put(struct mvcc *m, const char *k, const char *v, int64_t lease)
{
	struct mvcc_arena a = MVCC_ARENA_INIT;
	struct mvcc_put_req r = { 0 };
	struct mvcc_put_res res;

	r.key = (const uint8_t *)k;
	r.key_len = strlen(k);
	r.value = (const uint8_t *)v;
	r.value_len = strlen(v);
	r.lease = lease;
	if (mvcc_put(m, &r, &a, &res) != 0)
		abort();
	mvcc_arena_free(&a);
}

int64_t tu_del(struct mvcc *m, const char *k, const char *end)
{
	struct mvcc_arena a = MVCC_ARENA_INIT;
	struct mvcc_delete_req r = { 0 };
	struct mvcc_delete_res res;

	r.key = (const uint8_t *)k;
	r.key_len = strlen(k);
	if (end != NULL) {
		r.range_end = (const uint8_t *)end;
		r.range_end_len = end[0] ? strlen(end) : 1;
	}
	if (mvcc_delete_range(m, &r, &a, &res) != 0)
		abort();
	mvcc_arena_free(&a);
	return res.deleted;
}

int tu_range(struct mvcc *m, const char *k, const char *end, int64_t rev,
	     struct mvcc_arena *a, struct mvcc_range_res *res)
{
	struct mvcc_range_req r = { 0 };

	r.key = (const uint8_t *)k;
	r.key_len = k[0] ? strlen(k) : 1;
	if (end != NULL) {
		r.range_end = (const uint8_t *)end;
		r.range_end_len = end[0] ? strlen(end) : 1;
	}
	r.revision = rev;
	return mvcc_range(m, NULL, &r, a, res);
}

bool tu_kv_eq(const struct mvcc_kv *a, const struct mvcc_kv *b)
{
	return a->key_len == b->key_len &&
	       (a->key_len == 0 || memcmp(a->key, b->key, a->key_len) == 0) &&
	       a->value_len == b->value_len &&
	       (a->value_len == 0 ||
		memcmp(a->value, b->value, a->value_len) == 0) &&
	       a->create_revision == b->create_revision &&
	       a->mod_revision == b->mod_revision &&
	       a->version == b->version && a->lease == b->lease;
}

#include "watch_test_util.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int rm_one(const char *path, const struct stat *sb, int flag,
		  struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void check(int rc, const char *what)
{
	if (rc != 0) {
		fprintf(stderr, "%s failed: %d\n", what, rc);
		abort();
	}
}

uint64_t wt_rand(uint64_t *seed)
{
	/* splitmix64 */
	uint64_t z = (*seed += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void wt_store_open(struct wt_store *st)
{
	const char *base = getenv("TMPDIR");
	struct mvcc_options o = { 0 };

	memset(st, 0, sizeof(*st));
	st->dir = malloc(4096);
	if (!st->dir)
		abort();
	snprintf(st->dir, 4096, "%s/kv-watch-XXXXXX", base ? base : "/tmp");
	if (!mkdtemp(st->dir))
		abort();
	o.initial_map_bytes = 64u << 20;
	o.quota_bytes = 1u << 30;
	check(mvcc_open(st->dir, &o, &st->m), "mvcc_open");
	check(mvcc_begin_write(st->m), "mvcc_begin_write");
	st->notified = mvcc_revision(st->m);
}

void wt_store_close(struct wt_store *st)
{
	if (mvcc_in_write(st->m))
		mvcc_abort(st->m);
	mvcc_close(st->m);
	mvcc_arena_free(&st->hist_arena);
	mvcc_arena_free(&st->arena);
	nftw(st->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(st->dir);
}

void wt_commit(struct wt_store *st)
{
	check(mvcc_commit(st->m, false), "mvcc_commit");
	check(mvcc_begin_write(st->m), "mvcc_begin_write");
	st->writes = 0;
}

int wt_history(void *data, const struct watch_history_req *req,
	       struct watch_history_res *res)
{
	struct wt_store *st = data;
	struct mvcc_events_req q = { 0 };
	struct mvcc_events_res r;
	int rc;

	st->history_calls++;
	mvcc_arena_reset(&st->hist_arena);
	q.key = req->key;
	q.key_len = req->key_len;
	q.range_end = req->range_end;
	q.range_end_len = req->range_end_len;
	q.start_revision = req->start_revision;
	q.max_events = req->max_events;
	q.prev_kv = req->prev_kv;
	rc = mvcc_events(st->m, NULL, &q, &st->hist_arena, &r);
	if (rc == KV_ECOMPACTED) {
		res->compact_revision = mvcc_compact_revision(st->m);
		return rc;
	}
	if (rc < 0)
		return rc;
	res->events = r.events;
	res->n_events = r.n_events;
	res->next_revision = r.next_revision;
	if (st->visible_rev > 0) {
		size_t n = 0;
		while (n < r.n_events &&
		       r.events[n].kv.mod_revision <= st->visible_rev)
			n++;
		res->n_events = n;
		if (res->next_revision > st->visible_rev + 1)
			res->next_revision = st->visible_rev + 1;
		if (res->next_revision < req->start_revision)
			res->next_revision = req->start_revision;
	}
	return 0;
}

void wt_notify_pending(struct wt_store *st, struct watch_registry *reg)
{
	int64_t cur = mvcc_revision(st->m);

	while (st->notified < cur) {
		int64_t rev = st->notified + 1;
		struct mvcc_events_req q = { 0 };
		struct mvcc_events_res r;
		static const uint8_t zero = 0;
		size_t n = 0;
		int rc;

		mvcc_arena_reset(&st->arena);
		q.key = &zero;
		q.key_len = 1;
		q.range_end = &zero;
		q.range_end_len = 1;
		q.start_revision = rev;
		q.max_events = 1;
		q.prev_kv = watch_wants_prev_kv(reg);
		check(mvcc_events(st->m, NULL, &q, &st->arena, &r),
		      "mvcc_events");
		while (n < r.n_events && r.events[n].kv.mod_revision == rev)
			n++;
		rc = watch_notify(reg, rev, r.events, n);
		if (rc == KV_ENOMEM && st->tolerate_nomem) {
			st->nomem_seen++;
			rc = 0;
		}
		check(rc, "watch_notify");
		st->notified = rev;
	}
}

static void after_write(struct wt_store *st)
{
	if (++st->writes >= 64)
		wt_commit(st);
}

void wt_putb(struct wt_store *st, const char *k, const void *v, size_t vl)
{
	struct mvcc_put_req r = { 0 };
	struct mvcc_put_res res;

	mvcc_arena_reset(&st->arena);
	r.key = (const uint8_t *)k;
	r.key_len = strlen(k);
	r.value = v;
	r.value_len = vl;
	check(mvcc_put(st->m, &r, &st->arena, &res), "mvcc_put");
	after_write(st);
}

void wt_put(struct wt_store *st, const char *k, const char *v)
{
	wt_putb(st, k, v, strlen(v));
}

void wt_del(struct wt_store *st, const char *k, const char *end)
{
	struct mvcc_delete_req r = { 0 };
	struct mvcc_delete_res res;

	mvcc_arena_reset(&st->arena);
	r.key = (const uint8_t *)k;
	r.key_len = strlen(k);
	if (end) {
		r.range_end = (const uint8_t *)end;
		r.range_end_len = strlen(end);
	}
	check(mvcc_delete_range(st->m, &r, &st->arena, &res), "mvcc_delete");
	after_write(st);
}

static const char *const keys[] = {
	"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9",
	"p/0", "p/1", "p/2", "p/3", "p/4", "p/5", "q/0", "q/1", "q/2", "z",
};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

void wt_random_op(struct wt_store *st, uint64_t *seed)
{
	unsigned c = (unsigned)(wt_rand(seed) % 100);
	char val[32];

	snprintf(val, sizeof(val), "v%llu",
		 (unsigned long long)(wt_rand(seed) % 1000));
	if (c < 50) {
		wt_put(st, keys[wt_rand(seed) % NKEYS], val);
	} else if (c < 65) {
		wt_del(st, keys[wt_rand(seed) % NKEYS], NULL);
	} else if (c < 72) {
		wt_del(st, "p/", "p0");
	} else {
		/* a txn of up to 4 ops on distinct keys */
		struct mvcc_request_op ops[4];
		struct mvcc_txn_req t = { 0 };
		struct mvcc_txn_res res;
		size_t n = 1 + wt_rand(seed) % 4, base = wt_rand(seed) % NKEYS;

		memset(ops, 0, sizeof(ops));
		for (size_t i = 0; i < n; i++) {
			const char *k = keys[(base + i * 3) % NKEYS];
			if (wt_rand(seed) % 3) {
				ops[i].type = MVCC_OP_PUT;
				ops[i].u.put.key = (const uint8_t *)k;
				ops[i].u.put.key_len = strlen(k);
				ops[i].u.put.value = (const uint8_t *)val;
				ops[i].u.put.value_len = strlen(val);
			} else {
				ops[i].type = MVCC_OP_DELETE_RANGE;
				ops[i].u.delete_range.key = (const uint8_t *)k;
				ops[i].u.delete_range.key_len = strlen(k);
			}
		}
		t.success = ops;
		t.n_success = n;
		mvcc_arena_reset(&st->arena);
		check(mvcc_txn(st->m, &t, &st->arena, &res), "mvcc_txn");
		after_write(st);
	}
}

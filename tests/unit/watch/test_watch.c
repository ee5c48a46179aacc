/* Watch core tests against a real MVCC store: the history callback is
 * mvcc_events, and a writer applies random puts/deletes/txns and notifies
 * the registry per revision as the server will. Every check compares what
 * each watcher received with the history mvcc_events gives for its range:
 * ordered, no duplicates, no gaps, atomic per revision, filters, prev_kv. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/crc32c.h"
#include "watch/watch.h"
#include "watch_test_util.h"

/* ---- recorder -------------------------------------------------------------- */

struct rec_ev {
	int type;
	int64_t mod_rev, create_rev, version;
	uint32_t khash, vhash;
	size_t kl, vl;
	bool has_prev;
	int64_t prev_mod;
	uint32_t prev_vhash;
	size_t resp; /* index of the response that carried it */
};

struct rec_resp {
	int64_t watch_id, hdr, compact;
	bool created, canceled, fragment;
	const char *reason;
	size_t n_events;
	size_t size;
};

struct rec {
	struct rec_resp *r;
	size_t nr, cr;
	struct rec_ev *e;
	size_t ne, ce;
	size_t undrained;
	struct watch_stream *s;
};

static uint32_t h32(const void *p, size_t n)
{
	return kv_crc32c(0, p, n);
}

static void on_response(void *data, const struct watch_response *r)
{
	struct rec *rc = data;
	struct rec_resp *rr;

	if (rc->nr == rc->cr) {
		rc->cr = rc->cr ? rc->cr * 2 : 64;
		rc->r = realloc(rc->r, rc->cr * sizeof(*rc->r));
		assert_non_null(rc->r);
	}
	rr = &rc->r[rc->nr];
	memset(rr, 0, sizeof(*rr));
	rr->watch_id = r->watch_id;
	rr->hdr = r->header_revision;
	rr->compact = r->compact_revision;
	rr->created = r->created;
	rr->canceled = r->canceled;
	rr->fragment = r->fragment;
	rr->reason = r->cancel_reason;
	rr->n_events = r->n_events;
	rr->size = r->size;
	rc->undrained += r->size;
	for (size_t i = 0; i < r->n_events; i++) {
		const struct mvcc_event *ev = r->events[i];
		struct rec_ev *e;
		if (rc->ne == rc->ce) {
			rc->ce = rc->ce ? rc->ce * 2 : 256;
			rc->e = realloc(rc->e, rc->ce * sizeof(*rc->e));
			assert_non_null(rc->e);
		}
		e = &rc->e[rc->ne++];
		memset(e, 0, sizeof(*e));
		e->type = ev->type;
		e->mod_rev = ev->kv.mod_revision;
		e->create_rev = ev->kv.create_revision;
		e->version = ev->kv.version;
		e->khash = h32(ev->kv.key, ev->kv.key_len);
		e->kl = ev->kv.key_len;
		e->vhash = h32(ev->kv.value, ev->kv.value_len);
		e->vl = ev->kv.value_len;
		if (r->prev_kv && ev->prev_kv) {
			e->has_prev = true;
			e->prev_mod = ev->prev_kv->mod_revision;
			e->prev_vhash = h32(ev->prev_kv->value,
					    ev->prev_kv->value_len);
		}
		e->resp = rc->nr;
	}
	rc->nr++;
}

static void rec_free(struct rec *rc)
{
	free(rc->r);
	free(rc->e);
	memset(rc, 0, sizeof(*rc));
}

static void rec_drain(struct rec *rc)
{
	watch_stream_drained(rc->s, rc->undrained);
	rc->undrained = 0;
}

/* Events received by watch id, in order; *resp_of gets the response
 * indexes. Returns a malloc'd array (n in *n). */
static struct rec_ev *rec_events_of(const struct rec *rc, int64_t id,
				    size_t *n)
{
	struct rec_ev *out = malloc((rc->ne + 1) * sizeof(*out));
	size_t k = 0;

	assert_non_null(out);
	for (size_t i = 0; i < rc->ne; i++)
		if (rc->r[rc->e[i].resp].watch_id == id)
			out[k++] = rc->e[i];
	*n = k;
	return out;
}

/* ---- fixture ----------------------------------------------------------------- */

struct fx {
	struct wt_store st;
	struct watch_registry *reg;
	struct rec rec[4];
};

static int fx_setup_opts(void **state, size_t max_resp, size_t max_queue)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct watch_options o = { 0 };

	assert_non_null(f);
	wt_store_open(&f->st);
	o.history = wt_history;
	o.history_data = &f->st;
	o.revision = mvcc_revision(f->st.m);
	o.progress_interval_ms = 1000;
	o.max_response_bytes = max_resp;
	o.history_batch = 50;
	assert_int_equal(watch_registry_new(&o, &f->reg), 0);
	for (int i = 0; i < 4; i++) {
		struct watch_stream_options so = { 0 };
		so.on_response = on_response;
		so.data = &f->rec[i];
		so.max_queue_bytes = max_queue;
		assert_int_equal(watch_stream_open(f->reg, &so, &f->rec[i].s),
				 0);
	}
	*state = f;
	return 0;
}

static int fx_setup(void **state)
{
	return fx_setup_opts(state, 0, SIZE_MAX);
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	watch_registry_free(f->reg);
	for (int i = 0; i < 4; i++)
		rec_free(&f->rec[i]);
	wt_store_close(&f->st);
	free(f);
	return 0;
}

static const uint8_t *S(const char *s)
{
	return (const uint8_t *)s;
}

static int64_t create(struct fx *f, int si, const char *key, const char *end,
		      int64_t start, unsigned filters, bool prev_kv)
{
	struct watch_create_req q = { 0 };
	int64_t id;

	q.key = S(key);
	q.key_len = strlen(key);
	if (end) {
		q.range_end = S(end);
		q.range_end_len = end[0] ? strlen(end) : 1; /* "" = "\0" */
	}
	q.start_revision = start;
	q.filters = filters;
	q.prev_kv = prev_kv;
	assert_int_equal(watch_create(f->rec[si].s, &q, &id), 0);
	return id;
}

static void sync_all(struct fx *f)
{
	bool more = true;
	int guard = 0;

	while (more) {
		assert_int_equal(watch_sync_step(f->reg, 1000, &more), 0);
		assert_true(++guard < 100000);
	}
}

/* ---- expected history -------------------------------------------------- */

struct wspec {
	int si;
	int64_t id;
	const char *key, *end; /* end "" = "\0" (from key); NULL = single */
	int64_t start;          /* first revision expected */
	unsigned filters;
	bool prev_kv, fragment;
	bool canceled;
	bool live;
};

static struct rec_ev *expected(struct fx *f, const struct wspec *w,
			       int64_t last, size_t *n)
{
	struct mvcc_arena a = MVCC_ARENA_INIT;
	struct rec_ev *out = NULL;
	size_t k = 0, cap = 0;
	int64_t from = w->start;

	while (from <= last) {
		struct mvcc_events_req q = { 0 };
		struct mvcc_events_res r;
		mvcc_arena_reset(&a);
		q.key = S(w->key);
		q.key_len = strlen(w->key);
		if (q.key_len == 0) {
			q.key = S("");
			q.key_len = 1; /* "\0" */
		}
		if (w->end) {
			q.range_end = S(w->end);
			q.range_end_len = w->end[0] ? strlen(w->end) : 1;
		}
		q.start_revision = from;
		q.prev_kv = true;
		assert_int_equal(mvcc_events(f->st.m, NULL, &q, &a, &r), 0);
		for (size_t i = 0; i < r.n_events; i++) {
			const struct mvcc_event *ev = &r.events[i];
			struct rec_ev *e;
			if (ev->kv.mod_revision > last)
				break;
			if (ev->type == MVCC_EVENT_PUT &&
			    (w->filters & WATCH_FILTER_NOPUT))
				continue;
			if (ev->type == MVCC_EVENT_DELETE &&
			    (w->filters & WATCH_FILTER_NODELETE))
				continue;
			if (k == cap) {
				cap = cap ? cap * 2 : 64;
				out = realloc(out, cap * sizeof(*out));
				assert_non_null(out);
			}
			e = &out[k++];
			memset(e, 0, sizeof(*e));
			e->type = ev->type;
			e->mod_rev = ev->kv.mod_revision;
			e->create_rev = ev->kv.create_revision;
			e->version = ev->kv.version;
			e->khash = h32(ev->kv.key, ev->kv.key_len);
			e->kl = ev->kv.key_len;
			e->vhash = h32(ev->kv.value, ev->kv.value_len);
			e->vl = ev->kv.value_len;
			if (w->prev_kv && ev->prev_kv) {
				e->has_prev = true;
				e->prev_mod = ev->prev_kv->mod_revision;
				e->prev_vhash = h32(ev->prev_kv->value,
						    ev->prev_kv->value_len);
			}
		}
		if (r.next_revision <= from)
			break;
		from = r.next_revision;
	}
	mvcc_arena_free(&a);
	*n = k;
	return out;
}

/* Checks one watcher: got == expected (a prefix of it when canceled),
 * and every revision inside one response unless fragmented. */
static void check_watcher(struct fx *f, const struct wspec *w)
{
	const struct rec *rc = &f->rec[w->si];
	size_t ng, ne;
	struct rec_ev *got = rec_events_of(rc, w->id, &ng);
	struct rec_ev *exp = expected(f, w, watch_revision(f->reg), &ne);

	if (w->canceled)
		assert_true(ng <= ne);
	else if (ng != ne)
		fail_msg("watch %lld (%s..%s from %lld): got %zu events, "
			 "want %zu", (long long)w->id, w->key,
			 w->end ? w->end : "-", (long long)w->start, ng, ne);
	for (size_t i = 0; i < ng; i++) {
		const struct rec_ev *g = &got[i], *e = &exp[i];
		if (g->mod_rev != e->mod_rev || g->khash != e->khash ||
		    g->type != e->type || g->vhash != e->vhash ||
		    g->vl != e->vl || g->version != e->version ||
		    g->create_rev != e->create_rev ||
		    g->has_prev != e->has_prev || g->prev_mod != e->prev_mod ||
		    g->prev_vhash != e->prev_vhash)
			fail_msg("watch %lld event %zu: got rev %lld want %lld",
				 (long long)w->id, i, (long long)g->mod_rev,
				 (long long)e->mod_rev);
		/* atomic: same revision, same response unless fragmented */
		if (i > 0 && got[i - 1].mod_rev == g->mod_rev &&
		    got[i - 1].resp != g->resp)
			assert_true(rc->r[got[i - 1].resp].fragment);
	}
	free(got);
	free(exp);
}

static const struct rec_resp *last_resp(const struct rec *rc)
{
	assert_true(rc->nr > 0);
	return &rc->r[rc->nr - 1];
}

/* ---- tests ----------------------------------------------------------------- */

/* etcd: auto ids from 0 per stream, skipping ids in use; explicit ids used
 * as given; a duplicate or an empty range is created+canceled with
 * watch_id -1 and etcd's reason; cancel answers canceled; unknown cancel
 * is ignored. */
static void test_watch_ids_and_create_errors(void **state)
{
	struct fx *f = *state;
	struct rec *rc = &f->rec[0];
	struct watch_create_req q = { 0 };
	int64_t id;

	wt_put(&f->st, "a", "1");
	wt_notify_pending(&f->st, f->reg);
	q.key = S("a");
	q.key_len = 1;
	q.watch_id = 1;
	assert_int_equal(watch_create(rc->s, &q, &id), 0);
	assert_int_equal(id, 1);
	assert_true(last_resp(rc)->created);
	assert_false(last_resp(rc)->canceled);
	assert_int_equal(last_resp(rc)->hdr, 2);
	q.watch_id = 0;
	assert_int_equal(watch_create(rc->s, &q, &id), 0);
	assert_int_equal(id, 0);
	assert_int_equal(watch_create(rc->s, &q, &id), 0);
	assert_int_equal(id, 2); /* 1 is taken */
	q.watch_id = 2;
	assert_int_equal(watch_create(rc->s, &q, &id), 0);
	assert_int_equal(id, -1);
	assert_int_equal(last_resp(rc)->watch_id, -1);
	assert_true(last_resp(rc)->created && last_resp(rc)->canceled);
	assert_string_equal(last_resp(rc)->reason, WATCH_REASON_DUPLICATE_ID);
	assert_int_equal(last_resp(rc)->hdr, 2);
	/* other streams have their own ids */
	q.watch_id = 0;
	assert_int_equal(watch_create(f->rec[1].s, &q, &id), 0);
	assert_int_equal(id, 0);
	/* key >= range_end */
	q.range_end = S("a");
	q.range_end_len = 1;
	assert_int_equal(watch_create(rc->s, &q, &id), 0);
	assert_int_equal(id, -1);
	assert_string_equal(last_resp(rc)->reason, WATCH_REASON_EMPTY_RANGE);
	assert_int_equal(watch_count(f->reg), 4);
	/* cancel */
	assert_int_equal(watch_cancel(rc->s, 0), 0);
	assert_true(last_resp(rc)->canceled);
	assert_false(last_resp(rc)->created);
	assert_int_equal(last_resp(rc)->watch_id, 0);
	assert_int_equal(last_resp(rc)->hdr, 2);
	size_t nr = rc->nr;
	assert_int_equal(watch_cancel(rc->s, 77), KV_ENOTFOUND);
	assert_int_equal(rc->nr, nr);
	/* a canceled watcher gets nothing more; the others do */
	wt_put(&f->st, "a", "2");
	wt_notify_pending(&f->st, f->reg);
	assert_int_equal(rc->nr, nr + 2); /* ids 1 and 2 */
	assert_int_equal(rc->r[nr].n_events, 1);
	/* etcd's nextID only grows: the canceled 0 is not reused */
	q.range_end_len = 0;
	assert_int_equal(watch_create(rc->s, &q, &id), 0);
	assert_int_equal(id, 3);
	assert_int_equal(watch_count(f->reg), 4);
}

/* Live delivery: single key, prefix, [a,b), from-key, all keys; filters;
 * prev_kv; a txn's events arrive in one response. */
static void test_watch_live_filters_prev_kv(void **state)
{
	struct fx *f = *state;
	struct wspec w[] = {
		{ 0, 0, "k1", NULL, 0, 0, false, false, false, true },
		{ 0, 0, "p/", "p0", 0, 0, true, false, false, true },
		{ 1, 0, "k3", "k7", 0, WATCH_FILTER_NOPUT, true, false, false,
		  true },
		{ 1, 0, "q/", "", 0, WATCH_FILTER_NODELETE, false, false,
		  false, true },
		{ 2, 0, "", "", 0, 0, true, false, false, true },
		{ 3, 0, "z", NULL, 0, WATCH_FILTER_NOPUT |
		  WATCH_FILTER_NODELETE, true, false, false, true },
	};
	uint64_t seed = 1;
	size_t n = sizeof(w) / sizeof(w[0]);

	for (size_t i = 0; i < n; i++) {
		w[i].id = create(f, w[i].si, w[i].key, w[i].end, 0,
				 w[i].filters, w[i].prev_kv);
		w[i].start = watch_revision(f->reg) + 1;
	}
	assert_true(watch_wants_prev_kv(f->reg));
	for (int i = 0; i < 400; i++) {
		wt_random_op(&f->st, &seed);
		wt_notify_pending(&f->st, f->reg);
	}
	assert_int_equal(watch_unsynced_count(f->reg), 0);
	for (size_t i = 0; i < n; i++)
		check_watcher(f, &w[i]);
	/* the "z" watcher with both filters got no events at all */
	size_t ng;
	free(rec_events_of(&f->rec[3], w[5].id, &ng));
	assert_int_equal(ng, 0);
	/* live responses carry header revision = the event revision */
	for (size_t i = 0; i < f->rec[2].ne; i++)
		assert_int_equal(f->rec[2].r[f->rec[2].e[i].resp].hdr,
				 f->rec[2].e[i].mod_rev);
}

/* A txn touching three keys: one response with the three events. */
static void test_watch_atomic_revision(void **state)
{
	struct fx *f = *state;
	struct mvcc_request_op ops[3];
	struct mvcc_txn_req t = { 0 };
	struct mvcc_txn_res res;
	const char *ks[] = { "p/1", "p/2", "p/3" };
	int64_t id = create(f, 0, "p/", "p0", 0, 0, false);

	memset(ops, 0, sizeof(ops));
	for (int i = 0; i < 3; i++) {
		ops[i].type = MVCC_OP_PUT;
		ops[i].u.put.key = S(ks[i]);
		ops[i].u.put.key_len = 3;
		ops[i].u.put.value = S("v");
		ops[i].u.put.value_len = 1;
	}
	t.success = ops;
	t.n_success = 3;
	assert_int_equal(mvcc_txn(f->st.m, &t, &f->st.arena, &res), 0);
	wt_notify_pending(&f->st, f->reg);
	assert_int_equal(f->rec[0].nr, 2);
	assert_int_equal(f->rec[0].r[1].watch_id, id);
	assert_int_equal(f->rec[0].r[1].n_events, 3);
	assert_int_equal(f->rec[0].r[1].hdr, 2);
}

/* The randomized model: watchers created at random start revisions (in
 * the past, now, the future), random interleavings of writes, notifies
 * and sync steps with random budgets, a history source that is sometimes
 * ahead of the notified revision (writes not yet notified) and sometimes
 * behind it (visible_rev), random cancels. Every watcher must end with
 * exactly its history: catch-up then live, no gap or duplicate at the
 * handoff. */
static void run_model(struct fx *f, uint64_t seed, int steps, bool slow)
{
	struct wspec w[64];
	size_t nw = 0, max_unsynced = 0;
	static const char *const ranges[][2] = {
		{ "k1", NULL }, { "k5", NULL }, { "p/", "p0" }, { "k3", "k7" },
		{ "q/", "" },   { "", "" },     { "z", NULL },  { "p/2", NULL },
	};

	for (int i = 0; i < 30; i++) {
		wt_random_op(&f->st, &seed);
		wt_notify_pending(&f->st, f->reg);
	}
	for (int step = 0; step < steps; step++) {
		unsigned c = (unsigned)(wt_rand(&seed) % 100);
		if (c < 35) {
			wt_random_op(&f->st, &seed);
		} else if (c < 55) {
			wt_notify_pending(&f->st, f->reg);
		} else if (c < 75) {
			bool more;
			if (slow) {
				/* consumers drain (or stall) at random */
				int si = (int)(wt_rand(&seed) % 4);
				if (wt_rand(&seed) % 3)
					rec_drain(&f->rec[si]);
				if (wt_rand(&seed) % 8 == 0)
					watch_stream_set_blocked(f->rec[si].s,
						wt_rand(&seed) % 2);
			}
			assert_int_equal(watch_sync_step(f->reg,
				1 + wt_rand(&seed) % 40, &more), 0);
		} else if (c < 80) {
			int64_t cur = mvcc_revision(f->st.m);
			f->st.visible_rev = (wt_rand(&seed) % 2) ?
				0 : cur - (int64_t)(wt_rand(&seed) % 5);
		} else if (c < 92 && nw < 64) {
			struct wspec *x = &w[nw++];
			size_t r = wt_rand(&seed) % 8;
			int64_t now = watch_revision(f->reg);
			int64_t start;
			unsigned k = (unsigned)(wt_rand(&seed) % 4);
			memset(x, 0, sizeof(*x));
			x->si = (int)(wt_rand(&seed) % 4);
			x->key = ranges[r][0];
			x->end = ranges[r][1];
			x->filters = (unsigned)(wt_rand(&seed) % 4);
			if (x->filters == 3)
				x->filters = 0;
			x->prev_kv = wt_rand(&seed) % 2;
			start = k == 0 ? 0 : k == 1 ? now + 2 :
				1 + (int64_t)(wt_rand(&seed) % (uint64_t)now);
			x->id = create(f, x->si, x->key, x->end, start,
				       x->filters, x->prev_kv);
			x->start = start ? start : now + 1;
			x->live = true;
		} else if (nw > 0) {
			struct wspec *x = &w[wt_rand(&seed) % nw];
			if (x->live && wt_rand(&seed) % 4 == 0) {
				assert_int_equal(watch_cancel(
					f->rec[x->si].s, x->id), 0);
				x->live = false;
				x->canceled = true;
			}
		}
		if (step % 50 == 0)
			assert_true(watch_invariants_ok(f->reg));
		if (watch_unsynced_count(f->reg) > max_unsynced)
			max_unsynced = watch_unsynced_count(f->reg);
	}
	/* slow consumers really demoted watchers (more than the few with a
	 * past start) */
	if (slow)
		assert_true(max_unsynced >= 8);
	f->st.visible_rev = 0;
	wt_notify_pending(&f->st, f->reg);
	for (int i = 0; i < 4; i++) {
		watch_stream_set_blocked(f->rec[i].s, false);
		rec_drain(&f->rec[i]);
	}
	for (int guard = 0; watch_unsynced_count(f->reg) > 0; guard++) {
		assert_true(guard < 100000);
		assert_int_equal(watch_sync_step(f->reg, 1000, NULL), 0);
		for (int i = 0; i < 4; i++)
			rec_drain(&f->rec[i]);
	}
	assert_true(watch_invariants_ok(f->reg));
	for (size_t i = 0; i < nw; i++)
		check_watcher(f, &w[i]);
}

static void test_watch_catchup_handoff_model(void **state)
{
	struct fx *f = *state;
	run_model(f, 42, 3000, false);
}

/* The same model with small stream queues (600 bytes), consumers that
 * drain at random and streams blocked and unblocked at random: watchers
 * bounce between synced and unsynced and still end with exactly their
 * history. */
static void test_watch_slow_consumer_model(void **state)
{
	struct fx *f;
	for (uint64_t s = 200; s < 206; s++) {
		fx_teardown(state);
		fx_setup_opts(state, 0, 600);
		f = *state;
		run_model(f, s, 1500, true);
	}
}

static void test_watch_catchup_handoff_seeds(void **state)
{
	struct fx *f = *state;
	for (uint64_t s = 100; s < 106; s++) {
		fx_teardown(state);
		fx_setup(state);
		f = *state;
		run_model(f, s, 800, false);
	}
}

/* A past start revision is replayed in one batch response after the
 * created response, then live continues. */
static void test_watch_past_start_then_live(void **state)
{
	struct fx *f = *state;
	struct rec *rc = &f->rec[0];
	bool more;

	wt_put(&f->st, "k1", "a"); /* 2 */
	wt_put(&f->st, "k1", "b"); /* 3 */
	wt_del(&f->st, "k1", NULL); /* 4 */
	wt_notify_pending(&f->st, f->reg);
	int64_t id = create(f, 0, "k1", NULL, 2, 0, true);
	assert_int_equal(watch_unsynced_count(f->reg), 1);
	assert_int_equal(rc->nr, 1);
	assert_true(rc->r[0].created);
	assert_int_equal(rc->r[0].hdr, 4);
	assert_int_equal(watch_sync_step(f->reg, 100, &more), 0);
	assert_false(more);
	assert_int_equal(watch_unsynced_count(f->reg), 0);
	assert_int_equal(rc->nr, 2);
	assert_int_equal(rc->r[1].watch_id, id);
	assert_int_equal(rc->r[1].n_events, 3);
	assert_int_equal(rc->r[1].hdr, 4);
	assert_true(rc->e[1].has_prev);
	assert_int_equal(rc->e[1].prev_mod, 2);
	assert_true(rc->e[2].has_prev); /* delete carries the last value */
	assert_int_equal(rc->e[2].prev_mod, 3);
	wt_put(&f->st, "k1", "c");
	wt_notify_pending(&f->st, f->reg);
	assert_int_equal(rc->nr, 3);
	assert_int_equal(rc->e[3].mod_rev, 5);
	assert_false(rc->e[3].has_prev); /* a create has no prev_kv */
	/* etcd 3.4.23 OBS: a negative start is below the compacted revision
	 * (-1 before any compaction): created, then canceled with
	 * compact_revision -1 and no header revision */
	int64_t neg = create(f, 1, "k1", NULL, -5, 0, false);
	assert_true(neg >= 0);
	sync_all(f);
	assert_int_equal(f->rec[1].nr, 2);
	assert_true(f->rec[1].r[0].created);
	assert_int_equal(f->rec[1].r[1].watch_id, neg);
	assert_true(f->rec[1].r[1].canceled);
	assert_int_equal(f->rec[1].r[1].compact, -1);
	assert_int_equal(f->rec[1].r[1].hdr, 0);
	assert_int_equal(watch_count(f->reg), 1);
}

/* start_revision < compacted revision: created, then canceled with
 * compact_revision and no header revision (etcd 3.4.23 OBS). A watcher
 * that falls behind compaction while unsynced is canceled the same way. */
static void test_watch_compacted_start(void **state)
{
	struct fx *f = *state;
	struct rec *rc = &f->rec[0];

	for (int i = 0; i < 6; i++)
		wt_put(&f->st, "k1", "x");
	wt_notify_pending(&f->st, f->reg);
	assert_int_equal(mvcc_compact(f->st.m, 4), 0);
	int64_t id = create(f, 0, "k1", NULL, 2, 0, false);
	int64_t ok = create(f, 0, "k1", NULL, 4, 0, false);
	sync_all(f);
	assert_int_equal(rc->nr, 4);
	assert_true(rc->r[0].created);
	assert_true(rc->r[1].created);
	assert_int_equal(rc->r[2].watch_id, id);
	assert_true(rc->r[2].canceled);
	assert_false(rc->r[2].created);
	assert_int_equal(rc->r[2].compact, 4);
	assert_int_equal(rc->r[2].hdr, 0);
	assert_null(rc->r[2].reason);
	assert_int_equal(rc->r[3].watch_id, ok);
	assert_int_equal(rc->r[3].n_events, 4); /* revisions 4..7 */
	assert_int_equal(watch_count(f->reg), 1);

	/* slow watcher behind compaction */
	watch_stream_set_blocked(rc->s, true);
	for (int i = 0; i < 5; i++)
		wt_put(&f->st, "k1", "y");
	wt_notify_pending(&f->st, f->reg);
	assert_int_equal(watch_unsynced_count(f->reg), 1);
	assert_int_equal(mvcc_compact(f->st.m, 10), 0);
	watch_stream_set_blocked(rc->s, false);
	sync_all(f);
	assert_true(last_resp(rc)->canceled);
	assert_int_equal(last_resp(rc)->compact, 10);
	assert_int_equal(last_resp(rc)->watch_id, ok);
	assert_int_equal(watch_count(f->reg), 0);
}

/* Progress request: watch_id -1, header = current revision, at once when
 * every watcher is synced; deferred until catch-up otherwise (and then
 * after the catch-up events, so it never claims a revision early). */
static void test_watch_progress_request(void **state)
{
	struct fx *f = *state;
	struct rec *rc = &f->rec[0];

	for (int i = 0; i < 5; i++)
		wt_put(&f->st, "k1", "x");
	wt_notify_pending(&f->st, f->reg);
	watch_progress_request(rc->s); /* no watchers: answered */
	assert_int_equal(last_resp(rc)->watch_id, -1);
	assert_int_equal(last_resp(rc)->hdr, 6);
	assert_false(last_resp(rc)->created);
	create(f, 0, "k1", NULL, 0, 0, false);
	watch_progress_request(rc->s);
	assert_int_equal(last_resp(rc)->watch_id, -1);
	assert_int_equal(last_resp(rc)->hdr, 6);
	int64_t id = create(f, 0, "k1", NULL, 2, 0, false);
	size_t nr = rc->nr;
	watch_progress_request(rc->s);
	assert_int_equal(rc->nr, nr); /* deferred */
	wt_put(&f->st, "k1", "y");
	wt_notify_pending(&f->st, f->reg);
	assert_int_equal(rc->nr, nr + 1); /* the synced one got rev 7 */
	sync_all(f);
	assert_int_equal(rc->nr, nr + 3);
	assert_int_equal(rc->r[nr + 1].watch_id, id);
	assert_int_equal(rc->r[nr + 1].n_events, 6); /* 2..7 */
	assert_int_equal(rc->r[nr + 2].watch_id, -1);
	assert_int_equal(rc->r[nr + 2].hdr, 7);
	assert_int_equal(rc->r[nr + 2].n_events, 0);
}

/* Periodic progress_notify: only watchers that asked, are synced and got
 * no events during the last interval; header revision = current. */
static void test_watch_progress_notify_periodic(void **state)
{
	struct fx *f = *state;
	struct rec *rc = &f->rec[0];
	struct watch_create_req q = { 0 };
	int64_t a, b, c, d;

	wt_put(&f->st, "k1", "x");
	wt_notify_pending(&f->st, f->reg);
	q.key = S("k1");
	q.key_len = 2;
	q.progress_notify = true;
	assert_int_equal(watch_create(rc->s, &q, &a), 0);
	q.key = S("k2");
	assert_int_equal(watch_create(rc->s, &q, &b), 0);
	q.progress_notify = false;
	assert_int_equal(watch_create(rc->s, &q, &c), 0);
	q.progress_notify = true;
	q.start_revision = 1; /* unsynced */
	assert_int_equal(watch_create(rc->s, &q, &d), 0);
	watch_tick(f->reg, 5000); /* arms the timer */
	size_t nr = rc->nr;
	watch_tick(f->reg, 5500);
	assert_int_equal(rc->nr, nr);
	wt_put(&f->st, "k1", "y"); /* a has events this interval */
	wt_notify_pending(&f->st, f->reg);
	nr = rc->nr;
	watch_tick(f->reg, 6000);
	assert_int_equal(rc->nr, nr + 1);
	assert_int_equal(rc->r[nr].watch_id, b);
	assert_int_equal(rc->r[nr].hdr, 3);
	assert_int_equal(rc->r[nr].n_events, 0);
	assert_false(rc->r[nr].created || rc->r[nr].canceled);
	/* next interval: a had no events now, both get it */
	watch_tick(f->reg, 7000);
	assert_int_equal(rc->nr, nr + 3);
	(void)c;
	(void)d;
}

/* fragment=true splits a revision bigger than the limit, each fragment
 * with at least one event and under the limit when it has several, the
 * last one with fragment=false; fragment=false gets one response. */
static void test_watch_fragment(void **state)
{
	struct fx *f = *state;
	struct rec *rc = &f->rec[0];
	struct watch_create_req q = { 0 };
	static char big[3000];
	int64_t fid, nid;

	fx_teardown(state);
	fx_setup_opts(state, 8192, SIZE_MAX);
	f = *state;
	rc = &f->rec[0];
	memset(big, 'x', sizeof(big));
	for (int i = 0; i < 10; i++) {
		char k[8];
		snprintf(k, sizeof(k), "p/%d", i);
		wt_putb(&f->st, k, big, sizeof(big));
	}
	wt_notify_pending(&f->st, f->reg);
	q.key = S("p/");
	q.key_len = 2;
	q.range_end = S("p0");
	q.range_end_len = 2;
	q.fragment = true;
	assert_int_equal(watch_create(rc->s, &q, &fid), 0);
	q.fragment = false;
	assert_int_equal(watch_create(f->rec[1].s, &q, &nid), 0);
	/* one txn deleting all ten: a revision of 10 events with prev_kv
	 * off; then catch-up of 10 puts from revision 2 for a third one */
	wt_del(&f->st, "p/", "p0");
	wt_notify_pending(&f->st, f->reg);
	assert_int_equal(f->rec[1].nr, 2);
	assert_int_equal(f->rec[1].r[1].n_events, 10);
	assert_false(f->rec[1].r[1].fragment);
	/* deletes are small: one response even with fragment */
	assert_int_equal(rc->r[rc->nr - 1].n_events, 10);
	assert_false(rc->r[rc->nr - 1].fragment);
	q.fragment = true;
	q.start_revision = 2;
	q.prev_kv = true;
	size_t first = rc->nr;
	assert_int_equal(watch_create(rc->s, &q, &fid), 0);
	sync_all(f);
	size_t total = 0, frags = 0;
	for (size_t i = first + 1; i < rc->nr; i++) {
		assert_int_equal(rc->r[i].watch_id, fid);
		assert_true(rc->r[i].n_events >= 1);
		if (rc->r[i].n_events > 1)
			assert_true(rc->r[i].size < 8192);
		total += rc->r[i].n_events;
		frags++;
		assert_int_equal(rc->r[i].fragment, i + 1 < rc->nr);
	}
	assert_int_equal(total, 20);
	assert_true(frags > 2);
	struct wspec w = { 0, fid, "p/", "p0", 2, 0, true, true, false, true };
	check_watcher(f, &w);
}

/* Slow consumer: the stream's queue fills; its watchers move to unsynced
 * instead of queueing more (memory bounded), other streams are not held
 * up, and after draining they catch up with nothing lost or repeated. */
static void test_watch_slow_consumer(void **state)
{
	struct fx *f = *state;
	uint64_t seed = 9;
	struct wspec w[4];

	fx_teardown(state);
	fx_setup_opts(state, 0, 2048);
	f = *state;
	for (int i = 0; i < 4; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].si = i;
		w[i].key = "";
		w[i].end = "";
		w[i].prev_kv = i & 1;
		w[i].id = create(f, i, "", "", 0, 0, w[i].prev_kv);
		w[i].start = watch_revision(f->reg) + 1;
		w[i].live = true;
	}
	size_t max_seen = 0;
	for (int i = 0; i < 1500; i++) {
		wt_random_op(&f->st, &seed);
		wt_notify_pending(&f->st, f->reg);
		/* streams 0 and 1 drain at once; 2 and 3 are slow */
		rec_drain(&f->rec[0]);
		rec_drain(&f->rec[1]);
		if (i % 200 == 199) {
			rec_drain(&f->rec[2]);
			assert_int_equal(watch_sync_step(f->reg, 64, NULL), 0);
		}
		if (i == 700)
			watch_stream_set_blocked(f->rec[3].s, true);
		if (watch_stream_queued(f->rec[3].s) > max_seen)
			max_seen = watch_stream_queued(f->rec[3].s);
	}
	/* bounded by the limit plus one response */
	assert_true(max_seen < 2048 + 1024);
	assert_true(watch_unsynced_count(f->reg) >= 1);
	watch_stream_set_blocked(f->rec[3].s, false);
	for (int guard = 0; watch_unsynced_count(f->reg) > 0; guard++) {
		assert_true(guard < 10000);
		for (int i = 0; i < 4; i++)
			rec_drain(&f->rec[i]);
		assert_int_equal(watch_sync_step(f->reg, 100, NULL), 0);
	}
	assert_int_equal(watch_unsynced_count(f->reg), 0);
	for (int i = 0; i < 4; i++)
		check_watcher(f, &w[i]);
}

/* Closing a stream with watchers in both sets frees everything (ASan). */
static void test_watch_stream_close(void **state)
{
	struct fx *f = *state;

	wt_put(&f->st, "k1", "x");
	wt_notify_pending(&f->st, f->reg);
	create(f, 0, "k1", NULL, 0, 0, true);
	create(f, 0, "k1", NULL, 1, 0, false);
	create(f, 0, "p/", "p0", 0, 0, false);
	create(f, 1, "p/", "p0", 0, 0, false);
	watch_stream_close(f->rec[0].s);
	f->rec[0].s = NULL;
	assert_int_equal(watch_count(f->reg), 1);
	assert_int_equal(watch_unsynced_count(f->reg), 0);
	assert_false(watch_wants_prev_kv(f->reg));
	wt_put(&f->st, "p/1", "x");
	wt_notify_pending(&f->st, f->reg);
	assert_int_equal(f->rec[1].nr, 2);
}

/* Scale: 10,000 watchers over 100 streams (single keys and prefixes, some
 * with a past start), thousands of revisions: every watcher gets exactly
 * the number of events its range had, in order, none lost. */
struct cnt_ctx {
	int64_t *last;
	size_t *count;
	int stream;
	bool bad;
};

static void on_count(void *data, const struct watch_response *r)
{
	struct cnt_ctx *c = data;
	size_t idx;

	if (r->watch_id < 0 || r->n_events == 0)
		return;
	idx = (size_t)c->stream * 100 + (size_t)r->watch_id;
	for (size_t i = 0; i < r->n_events; i++) {
		int64_t rev = r->events[i]->kv.mod_revision;
		if (rev < c->last[idx])
			c->bad = true;
		c->last[idx] = rev;
		c->count[idx]++;
	}
}

static void test_watch_scale_10k(void **state)
{
	struct fx *f = *state;
	enum { NS = 100, PER = 100, NW = NS * PER, NKEY = 500, NREV = 3000 };
	struct watch_stream *s[NS];
	struct cnt_ctx ctx[NS];
	int64_t *last = calloc(NW, sizeof(*last));
	size_t *count = calloc(NW, sizeof(*count));
	size_t *want = calloc(NW, sizeof(*want));
	size_t key_events[NKEY] = { 0 };
	uint64_t seed = 7;
	char k[16];

	assert_non_null(last);
	assert_non_null(count);
	assert_non_null(want);
	for (int i = 0; i < NS; i++) {
		struct watch_stream_options so = { 0 };
		ctx[i] = (struct cnt_ctx){ last, count, i, false };
		so.on_response = on_count;
		so.data = &ctx[i];
		so.max_queue_bytes = SIZE_MAX;
		assert_int_equal(watch_stream_open(f->reg, &so, &s[i]), 0);
	}
	/* some history first, so past starts have something to replay */
	for (int r = 0; r < 200; r++) {
		int key = (int)(wt_rand(&seed) % NKEY);
		snprintf(k, sizeof(k), "s/%03d/x", key);
		wt_put(&f->st, k, "v");
		key_events[key]++;
	}
	wt_notify_pending(&f->st, f->reg);
	int64_t now = watch_revision(f->reg);
	int wkey[NW];
	for (int i = 0; i < NW; i++) {
		struct watch_create_req q = { 0 };
		char end[16];
		int key = i % NKEY;
		wkey[i] = key;
		snprintf(k, sizeof(k), "s/%03d/x", key);
		q.key = S(k);
		q.key_len = strlen(k);
		if (i % 10 == 9) { /* prefix watcher on "s/<key>/" */
			snprintf(k, sizeof(k), "s/%03d/", key);
			snprintf(end, sizeof(end), "s/%03d0", key);
			q.key = S(k);
			q.key_len = strlen(k);
			q.range_end = S(end);
			q.range_end_len = strlen(end);
		}
		if (i % 50 == 7)
			q.start_revision = 1; /* replay everything */
		assert_int_equal(watch_create(s[i / PER], &q, NULL), 0);
		want[i] = q.start_revision ? key_events[key] : 0;
	}
	(void)now;
	assert_int_equal(watch_count(f->reg), NW);
	for (int r = 0; r < NREV; r++) {
		int key = (int)(wt_rand(&seed) % NKEY);
		snprintf(k, sizeof(k), "s/%03d/x", key);
		if (r % 10 == 3)
			wt_del(&f->st, k, NULL);
		else
			wt_put(&f->st, k, "v");
		if (mvcc_revision(f->st.m) > f->st.notified)
			for (int i = key; i < NW; i += NKEY)
				want[i]++;
		wt_notify_pending(&f->st, f->reg);
		if (r % 16 == 0)
			assert_int_equal(watch_sync_step(f->reg, 500, NULL),
					 0);
	}
	sync_all(f);
	for (int i = 0; i < NW; i++) {
		(void)wkey;
		if (count[i] != want[i])
			fail_msg("watcher %d: %zu events, want %zu", i,
				 count[i], want[i]);
	}
	for (int i = 0; i < NS; i++) {
		assert_false(ctx[i].bad);
		watch_stream_close(s[i]);
	}
	free(last);
	free(count);
	free(want);
}

/* The range index (interval treap) against brute force: thousands of
 * random [key, end), from-key and single-key watchers, created and
 * canceled at random, each event must reach exactly the watchers whose
 * range contains its key. */
struct rng_w {
	char key[8], end[8];
	int kind; /* 0 single, 1 range, 2 from-key */
	int64_t id;
	bool live;
	size_t hits;
};

static void rand_key(uint64_t *seed, char *out)
{
	size_t n = 1 + wt_rand(seed) % 3;
	for (size_t i = 0; i < n; i++)
		out[i] = (char)('a' + wt_rand(seed) % 4);
	out[n] = 0;
}

static void test_watch_range_index_matches_bruteforce(void **state)
{
	struct fx *f = *state;
	enum { NW = 3000, NEV = 600 };
	struct rng_w *w = calloc(NW, sizeof(*w));
	struct rec *rc = &f->rec[0];
	uint64_t seed = 5;
	int64_t rev = watch_revision(f->reg);

	assert_non_null(w);
	for (int i = 0; i < NW; i++) {
		struct watch_create_req q = { 0 };
		w[i].kind = (int)(wt_rand(&seed) % 3);
		rand_key(&seed, w[i].key);
		q.key = S(w[i].key);
		q.key_len = strlen(w[i].key);
		if (w[i].kind == 1) {
			rand_key(&seed, w[i].end);
			if (strcmp(w[i].end, w[i].key) <= 0)
				strcpy(w[i].end, "dddd");
			q.range_end = S(w[i].end);
			q.range_end_len = strlen(w[i].end);
		} else if (w[i].kind == 2) {
			q.range_end = S("");
			q.range_end_len = 1;
		}
		assert_int_equal(watch_create(rc->s, &q, &w[i].id), 0);
		assert_int_equal(w[i].id, i); /* auto ids 0, 1, ... */
		w[i].live = true;
	}
	for (int e = 0; e < NEV; e++) {
		char k[8];
		struct mvcc_event ev = { 0 };
		size_t before = rc->nr, want = 0;

		/* churn: cancel some, so the treap deletes too */
		for (int c = 0; c < 5; c++) {
			struct rng_w *x = &w[wt_rand(&seed) % NW];
			if (x->live) {
				assert_int_equal(watch_cancel(rc->s, x->id), 0);
				x->live = false;
			}
		}
		before = rc->nr;
		rand_key(&seed, k);
		ev.type = MVCC_EVENT_PUT;
		ev.kv.key = S(k);
		ev.kv.key_len = strlen(k);
		ev.kv.mod_revision = ++rev;
		assert_int_equal(watch_notify(f->reg, rev, &ev, 1), 0);
		for (int i = 0; i < NW; i++) {
			bool m;
			if (!w[i].live)
				continue;
			m = w[i].kind == 0 ? strcmp(k, w[i].key) == 0 :
			    w[i].kind == 2 ? strcmp(k, w[i].key) >= 0 :
			    strcmp(k, w[i].key) >= 0 && strcmp(k, w[i].end) < 0;
			if (m) {
				want++;
				w[i].hits++;
			}
		}
		assert_int_equal(rc->nr - before, want);
		if (e % 100 == 0)
			assert_true(watch_invariants_ok(f->reg));
		/* and exactly the right ids */
		for (size_t r = before; r < rc->nr; r++) {
			struct rng_w *x;
			assert_in_range(rc->r[r].watch_id, 0, NW - 1);
			x = &w[rc->r[r].watch_id];
			assert_true(x->live);
			assert_int_equal(rc->r[r].n_events, 1);
			assert_true(x->kind == 0 ? strcmp(k, x->key) == 0 :
				    x->kind == 2 ? strcmp(k, x->key) >= 0 :
				    strcmp(k, x->key) >= 0 &&
				    strcmp(k, x->end) < 0);
		}
	}
	free(w);
}

/* A snapshot install jumps the revision: synced watchers catch up the
 * skipped revisions from the new store's history, without gap. */
static void test_watch_restore_jump(void **state)
{
	struct fx *f = *state;
	struct wspec w[2] = {
		{ 0, 0, "k1", NULL, 0, 0, true, false, false, true },
		{ 1, 0, "", "", 0, 0, false, false, false, true },
	};
	uint64_t seed = 77;

	for (int i = 0; i < 20; i++) {
		wt_random_op(&f->st, &seed);
		wt_notify_pending(&f->st, f->reg);
	}
	for (int i = 0; i < 2; i++) {
		w[i].id = create(f, w[i].si, w[i].key, w[i].end, 0, 0,
				 w[i].prev_kv);
		w[i].start = watch_revision(f->reg) + 1;
	}
	wt_put(&f->st, "k1", "a");
	wt_notify_pending(&f->st, f->reg);
	int64_t far = create(f, 2, "k1", NULL, mvcc_revision(f->st.m) + 50, 0,
			     false);
	for (int i = 0; i < 30; i++)
		wt_random_op(&f->st, &seed); /* not notified */
	wt_put(&f->st, "k1", "b");
	assert_int_equal(watch_restore(f->reg, mvcc_revision(f->st.m)), 0);
	f->st.notified = mvcc_revision(f->st.m);
	assert_int_equal(watch_unsynced_count(f->reg), 2); /* not far */
	assert_int_equal(watch_restore(f->reg, 1), KV_EINVAL);
	sync_all(f);
	for (int i = 0; i < 2; i++)
		check_watcher(f, &w[i]);
	(void)far;
}

/* now_ms at open arms the periodic progress one interval later. */
static void test_watch_progress_armed_at_open(void **state)
{
	struct fx *f = *state;
	struct watch_stream_options so = { 0 };
	struct watch_stream *s;
	struct rec rc = { 0 };
	struct watch_create_req q = { 0 };

	so.on_response = on_response;
	so.data = &rc;
	so.now_ms = 10000;
	assert_int_equal(watch_stream_open(f->reg, &so, &s), 0);
	rc.s = s;
	q.key = S("x");
	q.key_len = 1;
	q.progress_notify = true;
	assert_int_equal(watch_create(s, &q, NULL), 0);
	watch_tick(f->reg, 10999);
	assert_int_equal(rc.nr, 1);
	watch_tick(f->reg, 11000);
	assert_int_equal(rc.nr, 2);
	assert_int_equal(rc.r[1].watch_id, 0);
	assert_int_equal(rc.r[1].hdr, 1);
	watch_stream_close(s);
	rec_free(&rc);
}

/* Allocation failures everywhere (creates, fan-out scratch, history
 * batches): a failed create creates nothing, a failed fan-out sends the
 * affected watchers back to history, a failed batch is retried; once
 * allocations succeed again every watcher has exactly its history. */
static void test_watch_alloc_faults(void **state)
{
	struct fx *f = *state;
	struct wspec w[40];
	size_t nw = 0, creates_failed = 0;
	uint64_t seed = 31;
	static const char *const ranges[][2] = {
		{ "k1", NULL }, { "p/", "p0" }, { "k3", "k7" }, { "", "" },
	};

	f->st.tolerate_nomem = true;
	for (int i = 0; i < 20; i++) {
		wt_random_op(&f->st, &seed);
		wt_notify_pending(&f->st, f->reg);
	}
	watch_test_fail_allocs(f->reg, 5);
	for (int step = 0; step < 1500; step++) {
		unsigned c = (unsigned)(wt_rand(&seed) % 10);
		if (c < 4) {
			wt_random_op(&f->st, &seed);
			wt_notify_pending(&f->st, f->reg);
		} else if (c < 7) {
			int rc = watch_sync_step(f->reg, 20, NULL);
			assert_true(rc == 0 || rc == KV_ENOMEM);
		} else if (c < 8 && nw < 40) {
			struct watch_create_req q = { 0 };
			struct wspec *x = &w[nw];
			size_t r = wt_rand(&seed) % 4;
			int64_t now = watch_revision(f->reg);
			size_t nr = f->rec[0].nr;
			int rc;
			memset(x, 0, sizeof(*x));
			x->key = ranges[r][0];
			x->end = ranges[r][1];
			x->prev_kv = wt_rand(&seed) % 2;
			x->start = wt_rand(&seed) % 2 ? now + 1 :
				1 + (int64_t)(wt_rand(&seed) % (uint64_t)now);
			q.key = S(x->key);
			q.key_len = strlen(x->key);
			if (x->end) {
				q.range_end = S(x->end);
				q.range_end_len = x->end[0] ? strlen(x->end) : 1;
			}
			q.start_revision = x->start;
			q.prev_kv = x->prev_kv;
			rc = watch_create(f->rec[0].s, &q, &x->id);
			if (rc == KV_ENOMEM) {
				assert_int_equal(f->rec[0].nr, nr);
				creates_failed++;
				continue;
			}
			assert_int_equal(rc, 0);
			nw++;
		}
		assert_true(watch_invariants_ok(f->reg));
	}
	watch_test_fail_allocs(f->reg, 0);
	wt_notify_pending(&f->st, f->reg);
	sync_all(f);
	assert_true(watch_invariants_ok(f->reg));
	assert_true(f->st.nomem_seen > 0);
	assert_true(creates_failed > 0);
	for (size_t i = 0; i < nw; i++)
		check_watcher(f, &w[i]);
}

/* The handoff rule, deterministically. Store at 10, registry notified up
 * to 8 (the server is mid-apply): a catch-up from 5 delivers 5..8 only,
 * joins the synced set, and gets 9 and 10 live. A history source that lags
 * (sees only up to 6) delivers 5..6 and leaves the watcher unsynced until
 * it sees the rest. */
static void test_watch_handoff_rule(void **state)
{
	struct fx *f = *state;
	struct rec *rc = &f->rec[0];
	bool more;

	for (int i = 0; i < 9; i++)
		wt_put(&f->st, "k1", "v"); /* revisions 2..10 */
	/* notify only up to 8 */
	while (f->st.notified < 8) {
		struct mvcc_event ev;
		struct mvcc_arena a = MVCC_ARENA_INIT;
		struct mvcc_events_req q = { 0 };
		struct mvcc_events_res r;
		q.key = S("k1");
		q.key_len = 2;
		q.start_revision = f->st.notified + 1;
		q.max_events = 1;
		assert_int_equal(mvcc_events(f->st.m, NULL, &q, &a, &r), 0);
		ev = r.events[0];
		assert_int_equal(watch_notify(f->reg, f->st.notified + 1, &ev,
					      1), 0);
		f->st.notified++;
		mvcc_arena_free(&a);
	}
	int64_t a = create(f, 0, "k1", NULL, 5, 0, false);
	int64_t b = create(f, 1, "k1", NULL, 5, 0, false);
	/* a: history ahead of the registry */
	watch_stream_set_blocked(f->rec[1].s, true);
	assert_int_equal(watch_sync_step(f->reg, 100, &more), 0);
	assert_false(more); /* b's stream is blocked: no work with room */
	assert_int_equal(rc->nr, 2);
	assert_int_equal(rc->r[1].watch_id, a);
	assert_int_equal(rc->r[1].n_events, 4); /* 5..8, not 9..10 */
	assert_int_equal(rc->e[3].mod_rev, 8);
	assert_int_equal(rc->r[1].hdr, 8);
	assert_int_equal(watch_unsynced_count(f->reg), 1); /* b */
	/* b: history lags at 6 */
	watch_stream_set_blocked(f->rec[1].s, false);
	f->st.visible_rev = 6;
	assert_int_equal(watch_sync_step(f->reg, 100, &more), 0);
	assert_true(more);
	assert_int_equal(f->rec[1].r[1].n_events, 2); /* 5..6 */
	assert_int_equal(watch_unsynced_count(f->reg), 1);
	f->st.visible_rev = 0;
	wt_notify_pending(&f->st, f->reg); /* 9, 10: a live, b not yet */
	assert_int_equal(rc->nr, 4);
	assert_int_equal(f->rec[1].nr, 2);
	assert_int_equal(watch_sync_step(f->reg, 100, &more), 0);
	assert_false(more);
	assert_int_equal(watch_unsynced_count(f->reg), 0);
	assert_int_equal(f->rec[1].r[2].n_events, 4); /* 7..10 */
	wt_put(&f->st, "k1", "w");
	wt_notify_pending(&f->st, f->reg);
	assert_int_equal(rc->nr, 5);
	assert_int_equal(f->rec[1].nr, 4);
	struct wspec wa = { 0, a, "k1", NULL, 5, 0, false, false, false, true };
	struct wspec wb = { 1, b, "k1", NULL, 5, 0, false, false, false, true };
	check_watcher(f, &wa);
	check_watcher(f, &wb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
			test_watch_ids_and_create_errors, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(
			test_watch_live_filters_prev_kv, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_watch_atomic_revision,
						fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_watch_past_start_then_live,
						fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_watch_handoff_rule,
						fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(
			test_watch_catchup_handoff_model, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(
			test_watch_catchup_handoff_seeds, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_watch_slow_consumer_model,
						fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_watch_compacted_start,
						fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_watch_progress_request,
						fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(
			test_watch_progress_notify_periodic, fx_setup,
			fx_teardown),
		cmocka_unit_test_setup_teardown(test_watch_fragment, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_watch_slow_consumer,
						fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_watch_stream_close,
						fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(
			test_watch_range_index_matches_bruteforce, fx_setup,
			fx_teardown),
		cmocka_unit_test_setup_teardown(test_watch_alloc_faults,
						fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_watch_restore_jump,
						fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(
			test_watch_progress_armed_at_open, fx_setup,
			fx_teardown),
		cmocka_unit_test_setup_teardown(test_watch_scale_10k, fx_setup,
						fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

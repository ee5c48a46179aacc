/* kv-watch-bench: the watch core's notify cost and memory.
 *
 *   kv-watch-bench [revisions]
 *
 * For 1, 1,000 and 10,000 watchers (spread over 100 streams) it measures
 * watch_notify() per revision (one put event each) in three layouts:
 *   distinct-keys   each watcher on its own key, events on random watched
 *                   keys (index lookup; ~1 delivery per event),
 *   same-prefix     every watcher on one prefix (pure fan-out: every event
 *                   goes to every watcher),
 *   distinct-ranges each watcher on its own [key, range_end) (range index).
 * The on_response callback only counts, so the numbers are the core's
 * cost, not encoding or I/O. Then memory per idle watcher (malloc'd bytes,
 * mallinfo2) for single-key watchers on distinct keys, single-key watchers
 * on one key, and prefix watchers on distinct prefixes. And catch-up: the
 * cost of watch_sync_step() per replayed event from a real MVCC store. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "watch/watch.h"
#include "watch_test_util.h"

static size_t delivered;

static void on_response(void *data, const struct watch_response *r)
{
	(void)data;
	delivered += r->n_events;
}

static int no_history(void *data, const struct watch_history_req *req,
		      struct watch_history_res *res)
{
	(void)data;
	res->events = NULL;
	res->n_events = 0;
	res->next_revision = req->start_revision;
	return 0;
}

enum layout { DISTINCT_KEYS, SAME_PREFIX, DISTINCT_RANGES };
static const char *const layout_name[] = { "distinct-keys", "same-prefix",
					   "distinct-ranges" };

#define NSTREAMS 100

static void setup(struct watch_registry **reg, struct watch_stream **s,
		  watch_history_fn h, void *hd, int64_t rev)
{
	struct watch_options o = { 0 };
	o.history = h;
	o.history_data = hd;
	o.revision = rev;
	if (watch_registry_new(&o, reg))
		abort();
	for (int i = 0; i < NSTREAMS; i++) {
		struct watch_stream_options so = { 0 };
		so.on_response = on_response;
		so.max_queue_bytes = SIZE_MAX;
		if (watch_stream_open(*reg, &so, &s[i]))
			abort();
	}
}

static void add_watchers(struct watch_stream **s, size_t n, enum layout l)
{
	for (size_t i = 0; i < n; i++) {
		struct watch_create_req q = { 0 };
		char k[64], e[64];
		switch (l) {
		case DISTINCT_KEYS:
			snprintf(k, sizeof(k), "/registry/pods/p%06zu", i);
			break;
		case SAME_PREFIX:
			snprintf(k, sizeof(k), "/registry/pods/");
			snprintf(e, sizeof(e), "/registry/pods0");
			break;
		case DISTINCT_RANGES:
			snprintf(k, sizeof(k), "/registry/pods/p%06zu/", i);
			snprintf(e, sizeof(e), "/registry/pods/p%06zu0", i);
			break;
		}
		q.key = (const uint8_t *)k;
		q.key_len = strlen(k);
		if (l != DISTINCT_KEYS) {
			q.range_end = (const uint8_t *)e;
			q.range_end_len = strlen(e);
		}
		if (watch_create(s[i % NSTREAMS], &q, NULL))
			abort();
	}
}

static void bench_notify(size_t nw, enum layout l, int nrev)
{
	struct watch_registry *reg;
	struct watch_stream *s[NSTREAMS];
	uint64_t seed = 1, t0, t1;
	char key[64];
	static const char val[64] = "value-of-sixty-four-bytes";
	struct mvcc_event ev;

	setup(&reg, s, no_history, NULL, 1);
	add_watchers(s, nw, l);
	delivered = 0;
	memset(&ev, 0, sizeof(ev));
	t0 = kv_now_ns();
	for (int r = 0; r < nrev; r++) {
		size_t i = wt_rand(&seed) % nw;
		if (l == DISTINCT_RANGES)
			snprintf(key, sizeof(key), "/registry/pods/p%06zu/x",
				 i);
		else
			snprintf(key, sizeof(key), "/registry/pods/p%06zu", i);
		ev.type = MVCC_EVENT_PUT;
		ev.kv.key = (const uint8_t *)key;
		ev.kv.key_len = strlen(key);
		ev.kv.value = (const uint8_t *)val;
		ev.kv.value_len = sizeof(val);
		ev.kv.mod_revision = r + 2;
		ev.kv.create_revision = 2;
		ev.kv.version = r + 1;
		if (watch_notify(reg, r + 2, &ev, 1))
			abort();
	}
	t1 = kv_now_ns();
	printf("notify  %-15s watchers=%6zu  %9.0f ns/event  %7.1f ns/delivery"
	       "  deliveries/event=%.1f\n",
	       layout_name[l], nw, (double)(t1 - t0) / nrev,
	       delivered ? (double)(t1 - t0) / (double)delivered : 0.0,
	       (double)delivered / nrev);
	watch_registry_free(reg);
}

static void bench_memory(size_t nw, enum layout l)
{
	struct watch_registry *reg;
	struct watch_stream *s[NSTREAMS];
	struct mallinfo2 a, b;

	setup(&reg, s, no_history, NULL, 1);
	/* warm the stream id tables' first allocation out of the way */
	a = mallinfo2();
	add_watchers(s, nw, l);
	b = mallinfo2();
	printf("memory  %-15s watchers=%6zu  %6.0f bytes/idle watcher "
	       "(malloc'd, incl. key, index and id table)\n",
	       l == SAME_PREFIX ? "same-prefix" : layout_name[l], nw,
	       (double)(b.uordblks - a.uordblks) / (double)nw);
	watch_registry_free(reg);
}

static void bench_catchup(void)
{
	struct wt_store st;
	struct watch_registry *reg;
	struct watch_stream *s[NSTREAMS];
	uint64_t seed = 3, t0, t1;
	struct watch_create_req q = { 0 };
	bool more = true;
	size_t steps = 0;

	wt_store_open(&st);
	for (int i = 0; i < 20000; i++)
		wt_random_op(&st, &seed);
	wt_commit(&st);
	setup(&reg, s, wt_history, &st, 0);
	st.notified = 0;
	wt_notify_pending(&st, reg);
	q.key = (const uint8_t *)"";
	q.key_len = 1;
	q.range_end = (const uint8_t *)"";
	q.range_end_len = 1;
	q.start_revision = 1;
	for (int i = 0; i < 10; i++)
		if (watch_create(s[i], &q, NULL))
			abort();
	delivered = 0;
	t0 = kv_now_ns();
	while (more) {
		if (watch_sync_step(reg, 1000, &more))
			abort();
		steps++;
	}
	t1 = kv_now_ns();
	printf("catchup 10 all-key watchers from rev 1 over %lld revisions: "
	       "%zu events in %zu steps, %.0f ns/event (incl. mvcc_events)\n",
	       (long long)watch_revision(reg), delivered, steps,
	       (double)(t1 - t0) / (double)delivered);
	watch_registry_free(reg);
	wt_store_close(&st);
}

/* Slow consumers: 10,000 single-key watchers on 100 streams, all streams
 * blocked while `nrev` revisions are applied (watchers fall back to
 * unsynced), then unblocked: cost of catching everyone up from the store. */
static void bench_slow_recovery(int nrev)
{
	struct wt_store st;
	struct watch_registry *reg;
	struct watch_stream *s[NSTREAMS];
	uint64_t seed = 5, t0, t1;
	size_t steps = 0;
	bool more = true;
	char k[64];

	wt_store_open(&st);
	setup(&reg, s, wt_history, &st, mvcc_revision(st.m));
	for (size_t i = 0; i < 10000; i++) {
		struct watch_create_req q = { 0 };
		snprintf(k, sizeof(k), "/registry/pods/p%06zu", i % 2000);
		q.key = (const uint8_t *)k;
		q.key_len = strlen(k);
		if (watch_create(s[i % NSTREAMS], &q, NULL))
			abort();
	}
	for (int i = 0; i < NSTREAMS; i++)
		watch_stream_set_blocked(s[i], true);
	for (int r = 0; r < nrev; r++) {
		snprintf(k, sizeof(k), "/registry/pods/p%06zu",
			 (size_t)(wt_rand(&seed) % 2000));
		wt_put(&st, k, "value");
		wt_notify_pending(&st, reg);
	}
	wt_commit(&st);
	size_t unsynced = watch_unsynced_count(reg);
	for (int i = 0; i < NSTREAMS; i++)
		watch_stream_set_blocked(s[i], false);
	delivered = 0;
	st.history_calls = 0;
	t0 = kv_now_ns();
	while (more) {
		if (watch_sync_step(reg, 1000, &more))
			abort();
		steps++;
	}
	t1 = kv_now_ns();
	printf("slow    10000 single-key watchers, %d revisions while blocked: "
	       "%zu unsynced, caught up %zu events in %zu steps, %zu history "
	       "calls, %.1f ms total, %.1f us/step\n",
	       nrev, unsynced, delivered, steps, st.history_calls,
	       (double)(t1 - t0) / 1e6, (double)(t1 - t0) / 1e3 / steps);
	watch_registry_free(reg);
	wt_store_close(&st);
}

int main(int argc, char **argv)
{
	int nrev = argc > 1 ? atoi(argv[1]) : 200000;
	static const size_t counts[] = { 1, 1000, 10000 };

	for (int l = 0; l < 3; l++)
		for (int c = 0; c < 3; c++) {
			int n = nrev;
			if (l == SAME_PREFIX && counts[c] >= 1000)
				n = nrev / (int)(counts[c] / 10);
			bench_notify(counts[c], (enum layout)l, n);
		}
	bench_memory(10000, DISTINCT_KEYS);
	bench_memory(10000, SAME_PREFIX);
	bench_memory(10000, DISTINCT_RANGES);
	bench_catchup();
	bench_slow_recovery(2000);
	return 0;
}

/* Helpers shared by the watch tests and the benchmark: a real MVCC store
 * in a temp dir, a history callback wired to mvcc_events, and a writer that
 * notifies the registry per revision as the server will. */
#ifndef KV_TEST_WATCH_UTIL_H
#define KV_TEST_WATCH_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/mvcc.h"
#include "watch/watch.h"

struct wt_store {
	char *dir;
	struct mvcc *m;
	struct mvcc_arena hist_arena; /* reset at each history call */
	struct mvcc_arena arena;      /* writer / notify scratch */
	/* Simulates a history source that lags (reads committed state
	 * only): events above visible_rev are hidden. <= 0: no limit. */
	int64_t visible_rev;
	int64_t notified;   /* last revision passed to watch_notify */
	unsigned writes;    /* ops since the write txn began */
	size_t history_calls;
	/* watch_notify's KV_ENOMEM is expected (allocation fault tests) */
	bool tolerate_nomem;
	size_t nomem_seen;
};

/* Opens a store in a fresh temp dir with the write txn open. */
void wt_store_open(struct wt_store *st);
void wt_store_close(struct wt_store *st);
/* The history callback: data is a struct wt_store *. */
int wt_history(void *data, const struct watch_history_req *req,
	       struct watch_history_res *res);
/* Notifies every applied revision not yet notified, each with its events
 * read back with mvcc_events (prev_kv when the registry wants it). */
void wt_notify_pending(struct wt_store *st, struct watch_registry *reg);
/* One random mutation from a small key space (puts, deletes, range
 * deletes, multi-op txns). *seed is the PRNG state. */
void wt_random_op(struct wt_store *st, uint64_t *seed);
void wt_put(struct wt_store *st, const char *k, const char *v);
void wt_putb(struct wt_store *st, const char *k, const void *v, size_t vl);
void wt_del(struct wt_store *st, const char *k, const char *end);
/* Commits and reopens the write txn (keeps txns bounded). */
void wt_commit(struct wt_store *st);
uint64_t wt_rand(uint64_t *seed);

#endif

/* watch/watch.h — etcd v3.4 watch semantics, independent of the transport.
 *
 * One struct watch_registry per member holds every watcher, indexed by key
 * range. A struct watch_stream is one gRPC Watch stream or one gateway
 * POST /v3/watch; it holds many watchers (watch_id unique per stream) and
 * receives struct watch_response values through its on_response callback.
 * The server encodes them (protobuf or JSON) and sends them.
 *
 * Threads. Everything belongs to ONE thread, the owner (kvd's loop
 * thread). No function blocks; work is bounded by the budgets given.
 * Callbacks (on_response, history) run on the owner's thread inside the
 * watch_* call that triggered them and must NOT call any watch_* function
 * of the same registry (no re-entrancy).
 *
 * Revisions. The registry knows the last revision the server notified
 * (watch_revision()). The server calls watch_notify() once for EVERY
 * revision it applies, in order, with all events of that revision.
 *
 * Synced / unsynced, and the handoff rule. Each watcher remembers next_rev,
 * the first revision it has not yet received. A watcher is SYNCED iff
 * next_rev > watch_revision(reg): it receives each notified revision
 * directly from watch_notify(). Otherwise it is UNSYNCED and catches up
 * from the history callback in watch_sync_step(): the core delivers only
 * events with revision <= watch_revision(reg) (a history source that is
 * ahead of the notified revision is clipped), and advances next_rev to
 * min(history's next_revision, watch_revision(reg) + 1). When next_rev reaches
 * watch_revision(reg) + 1 the watcher joins the synced set in the same
 * call, so the next watch_notify() (revision watch_revision(reg) + 1) is
 * the first one it gets live: no gap, no duplicate. A history source that
 * lags behind the notified revision (e.g. reads only committed state)
 * simply leaves the watcher unsynced until it catches up.
 *
 * Back-pressure. The core counts the estimated bytes of every response it
 * delivered to a stream (watch_response.size) and the owner subtracts
 * them with watch_stream_drained() once written. While a stream's queue
 * is at or above max_queue_bytes, or the owner marked it blocked
 * (watch_stream_set_blocked), a notified revision that would go to one of
 * its watchers is not delivered: that watcher becomes unsynced with
 * next_rev = that revision, and catches up from history once the stream
 * has room again. Events are never dropped, duplicated or reordered per
 * watcher; memory does not grow with a slow consumer.
 *
 * Event memory. Responses point to events (struct mvcc_event from
 * storage/mvcc.h) owned by whoever passed them in: watch_notify()'s caller
 * or the history callback. Nothing is copied per watcher: every watcher
 * receiving the same event gets a pointer to the same struct. A response
 * and everything it points to is valid only during on_response.
 *
 * Errors: 0 or a negative KV_E* (kv/errors.h).
 *
 * Wiring (server/, the only module that sees both watch/ and storage/):
 *  - startup: watch_registry_new() with revision = mvcc_revision() and a
 *    history callback calling mvcc_events() (rd NULL = the owner's view;
 *    reset a server-owned arena at the start of each call; on
 *    KV_ECOMPACTED set compact_revision = mvcc_compact_revision()).
 *  - apply: after each revision the FSM produces, call watch_notify() with
 *    that revision's events, e.g. mvcc_events(start_revision = rev,
 *    max_events = 1, prev_kv = watch_wants_prev_kv()), keeping those with
 *    mod_revision == rev. Followers do the same, so they deliver the same
 *    events in the same order. A raft snapshot install: watch_restore().
 *  - loop: watch_sync_step(reg, budget, &more) once per iteration (arm an
 *    idle/check handle while more); watch_tick() from a ~1 s timer.
 *  - gRPC Watch / POST /v3/watch: watch_stream_open() per stream;
 *    create_request -> watch_create(), cancel_request -> watch_cancel(),
 *    progress_request -> watch_progress_request(). Encode each response in
 *    on_response (header cluster/member id and raft term are the server's;
 *    header_revision 0 means leave revision out), queue it, and call
 *    watch_stream_drained(r->size) when written. Flow control closed
 *    (HTTP/2 window, socket not writable) -> watch_stream_set_blocked().
 *    Stream gone -> watch_stream_close().
 */
#ifndef KV_WATCH_WATCH_H
#define KV_WATCH_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv/errors.h"
#include "storage/mvcc.h"

struct watch_registry;
struct watch_stream;

/* etcd's WatchCreateRequest.FilterType values, as bit flags. */
#define WATCH_FILTER_NOPUT    (1u << 0)
#define WATCH_FILTER_NODELETE (1u << 1)

/* etcd's cancel reasons (exact text). */
#define WATCH_REASON_DUPLICATE_ID \
	"mvcc: duplicate watch ID provided on the WatchStream"
#define WATCH_REASON_EMPTY_RANGE "mvcc: watcher range is empty"

/* One WatchResponse. Pointers valid only during on_response. */
struct watch_response {
	/* header.revision; 0 means "leave it out" (etcd omits it in the
	 * compaction cancel). */
	int64_t header_revision;
	int64_t watch_id; /* -1 for a failed create or a progress response */
	bool created;
	bool canceled;
	bool fragment;
	int64_t compact_revision; /* 0 unless canceled by compaction */
	const char *cancel_reason; /* static text or NULL */
	/* Events in revision order; encode ev->prev_kv only when prev_kv
	 * is true (the events may carry it for other watchers). */
	const struct mvcc_event *const *events;
	size_t n_events;
	bool prev_kv;
	/* The core's estimate of the encoded protobuf size, the unit of the
	 * stream's queue accounting: pass it back to watch_stream_drained()
	 * once the response has been written. */
	size_t size;
};

/* History source: the server wires it to mvcc_events(). Fill res with the
 * events of keys in the range with revision >= req->start_revision, in
 * revision order, ending at a revision boundary, at most about
 * req->max_events (a revision is never split), with prev_kv when asked.
 * res->next_revision: where to resume (current + 1 when caught up).
 * Return 0, or KV_ECOMPACTED with res->compact_revision set when
 * start_revision < the compacted revision (compare the raw value: it may
 * be negative, and the compacted revision is -1 before any compaction, as
 * mvcc_events and etcd do), or another KV_E* (the sync step
 * stops and returns it). res->events stay valid until the next history
 * call on this registry or watch_registry_free(); the callback owns them.
 * Range conventions as struct mvcc_events_req (range_end len 0: one key;
 * "\0": every key >= key). */
struct watch_history_req {
	const uint8_t *key;
	size_t key_len;
	const uint8_t *range_end;
	size_t range_end_len;
	int64_t start_revision;
	size_t max_events;
	bool prev_kv;
};

struct watch_history_res {
	const struct mvcc_event *events;
	size_t n_events;
	int64_t next_revision;
	int64_t compact_revision; /* with KV_ECOMPACTED */
};

typedef int (*watch_history_fn)(void *data, const struct watch_history_req *req,
				struct watch_history_res *res);

struct watch_options {
	watch_history_fn history; /* required */
	void *history_data;
	/* The store's current revision when the registry is created. */
	int64_t revision;
	/* Periodic progress_notify interval; 0 = etcd's 10 min. */
	uint64_t progress_interval_ms;
	/* Fragment limit; 0 = 2 MiB. etcd uses --max-request-bytes + 512 KiB
	 * (grpcOverheadBytes): pass that when the flag is set. */
	size_t max_response_bytes;
	/* Events asked from history per call; 0 = 1000. */
	size_t history_batch;
};

/* Creates a registry; *out owns it, free with watch_registry_free() after
 * every stream is closed (or let it close them silently). */
int watch_registry_new(const struct watch_options *opts,
		       struct watch_registry **out);
/* Closes all remaining streams without sending anything, then frees. NULL
 * is allowed. */
void watch_registry_free(struct watch_registry *reg);

/* The last notified revision (the registry's "current revision"). */
int64_t watch_revision(const struct watch_registry *reg);

/* True when some watcher asked for prev_kv: the server must then pass
 * events with prev_kv filled to watch_notify(). */
bool watch_wants_prev_kv(const struct watch_registry *reg);

/* Delivers revision rev (> watch_revision(reg), else KV_EINVAL; every
 * revision must be notified, in order) to the synced watchers whose range
 * matches: one response per watcher with all its events of rev, filters
 * applied; fragmented only for fragment watchers over the size limit.
 * events[0..n) must all have kv.mod_revision == rev, in apply order, and
 * carry prev_kv (set by the caller, mvcc_events(prev_kv=true) at rev)
 * when watch_wants_prev_kv(). The events are only read during the call.
 * KV_ENOMEM leaves the registry consistent: undelivered watchers become
 * unsynced at rev and catch up from history. */
int watch_notify(struct watch_registry *reg, int64_t rev,
		 const struct mvcc_event *events, size_t n);

/* The store jumped to revision rev (> watch_revision, e.g. a raft snapshot
 * was installed) without notifying the revisions in between: every synced
 * watcher becomes unsynced from the old revision + 1 and catches up from
 * the new store's history (or is canceled with compact_revision), as
 * etcd's watchableStore.Restore does. KV_EINVAL if rev < watch_revision. */
int watch_restore(struct watch_registry *reg, int64_t rev);

/* Catches up unsynced watchers from history in shared batches (as etcd's
 * syncWatchers): each batch is ONE history call from the smallest next_rev
 * among the unsynced watchers whose stream has room (over their range when
 * they all share one, else over all keys), fanned out through the same
 * index as watch_notify(); every participant then has all its events below
 * batch_end = min(history next_revision, watch_revision + 1). Batches
 * repeat until about `budget` events were read or history makes no
 * progress. Sets *more (may be NULL) when unsynced watchers with room
 * remain, so the owner calls it again next loop iteration. Sends deferred
 * progress responses of streams that became fully synced and compaction
 * cancels. Returns 0 or the history callback's error (KV_ENOMEM: retried
 * at the next call; nothing is lost). */
int watch_sync_step(struct watch_registry *reg, size_t budget, bool *more);

/* Periodic progress: call from a timer with the owner's monotonic clock.
 * Every progress_interval_ms a stream sends, to each of its synced
 * watchers that asked for progress_notify and received no events since
 * the previous interval, a response with its watch_id, no events and
 * header revision = watch_revision(reg) (etcd's v3rpc progress ticker). */
void watch_tick(struct watch_registry *reg, uint64_t now_ms);

/* Number of watchers / unsynced watchers (diagnostics, tests). */
size_t watch_count(const struct watch_registry *reg);
size_t watch_unsynced_count(const struct watch_registry *reg);

/* ---- streams ------------------------------------------------------------ */

typedef void (*watch_response_fn)(void *data, const struct watch_response *r);

struct watch_stream_options {
	watch_response_fn on_response; /* required */
	void *data;
	/* Queue bound in watch_response.size units; 0 = 4 MiB. */
	size_t max_queue_bytes;
	/* The owner's monotonic clock at open (ms): the first periodic
	 * progress is due one interval later. 0: the first watch_tick()
	 * arms it instead. */
	uint64_t now_ms;
};

/* Opens a stream; *out is owned by the registry until
 * watch_stream_close(). */
int watch_stream_open(struct watch_registry *reg,
		      const struct watch_stream_options *opts,
		      struct watch_stream **out);
/* Removes every watcher of the stream without sending anything and frees
 * it (the transport is gone). */
void watch_stream_close(struct watch_stream *s);

/* WatchCreateRequest. Pointers are copied. */
struct watch_create_req {
	const uint8_t *key;
	size_t key_len;
	const uint8_t *range_end;
	size_t range_end_len;
	/* 0 = now (watch_revision + 1). Negative values reach the history
	 * callback as is: mvcc_events reports them compacted (they are below
	 * the compacted revision, -1 before any compaction), so the watcher
	 * is canceled with that compact_revision, as etcd 3.4 does. */
	int64_t start_revision;
	bool progress_notify;
	unsigned filters; /* WATCH_FILTER_* */
	bool prev_kv;
	int64_t watch_id; /* 0 = auto (etcd's AutoWatchID) */
	bool fragment;
};

/* Creates a watcher and sends the created response (header revision =
 * watch_revision). etcd's failed creates (duplicate watch_id, key >=
 * range_end) send created+canceled with watch_id -1 and the reason, and
 * still return 0. *id_out (may be NULL) gets the id or -1. A start
 * revision <= watch_revision makes the watcher unsynced: it catches up in
 * watch_sync_step(), or is canceled with compact_revision when history is
 * compacted. KV_ENOMEM: nothing was created or sent. */
int watch_create(struct watch_stream *s, const struct watch_create_req *req,
		 int64_t *id_out);
/* WatchCancelRequest: removes the watcher and sends canceled:true with
 * header revision. KV_ENOTFOUND (nothing sent) when the id is unknown, as
 * etcd ignores it. */
int watch_cancel(struct watch_stream *s, int64_t watch_id);
/* WatchProgressRequest: a response with watch_id -1, no events and header
 * revision = watch_revision(reg), sent at once when every watcher of the
 * stream is synced, else deferred until they are (etcd >= 3.4.25; 3.4.23
 * sent it at once, which could claim a revision before its events). */
void watch_progress_request(struct watch_stream *s);

/* The owner wrote responses totalling `bytes` (sum of their .size). */
void watch_stream_drained(struct watch_stream *s, size_t bytes);
/* The consumer is slow (e.g. HTTP/2 window closed): while blocked, the
 * stream's watchers fall back to unsynced instead of receiving more. */
void watch_stream_set_blocked(struct watch_stream *s, bool blocked);
/* Estimated queued bytes (responses delivered minus drained). */
size_t watch_stream_queued(const struct watch_stream *s);

/* Full consistency check (O(groups x watchers): tests and debug asserts
 * only): counts, lists, id tables, group refcounts, the interval treap's
 * order, heap and max-end fields, unsynced watchers behind the revision. */
bool watch_invariants_ok(const struct watch_registry *reg);

/* Test hook: from now on every `every`-th allocation point fails with
 * KV_ENOMEM (each watch_notify and history batch is one point too); 0
 * disables. */
void watch_test_fail_allocs(struct watch_registry *reg, unsigned every);

/* Estimated protobuf size of an event (mvccpb.Event); exposed for tests. */
size_t watch_event_size(const struct mvcc_event *ev, bool prev_kv);

#endif

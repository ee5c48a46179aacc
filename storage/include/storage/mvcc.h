/* storage/mvcc.h — etcd v3.4's key-value data model over LMDB.
 *
 * One struct mvcc per data directory. It keeps etcd's revision model: a
 * global revision (main, sub), per-key create_revision / mod_revision /
 * version / lease, tombstones and key generations, compaction, and the
 * history needed by watch (mvcc_events).
 *
 * Threads. Everything except the read API (mvcc_read_*, and the functions
 * given a struct mvcc_read) and mvcc_checkpoint belongs to ONE thread, the
 * owner (kvd's loop thread). Read handles may be used on any thread, one
 * thread per handle at a time; mvcc_checkpoint may run on a worker thread
 * concurrently with the owner's write transaction.
 *
 * Write transaction. The owner opens one LMDB write transaction with
 * mvcc_begin_write(), applies any number of requests (mvcc_put,
 * mvcc_delete_range, mvcc_txn, mvcc_compact, ...) and decides when to make
 * them durable with mvcc_commit(sync). Reads with rd == NULL go through the
 * open write transaction (they see its uncommitted writes), or through a
 * short internal read transaction when none is open.
 *
 * Results. Every request takes a struct mvcc_arena *: keys, values and
 * result arrays are allocated there and stay valid until the caller calls
 * mvcc_arena_reset() or mvcc_arena_free() on it. Nothing in a result points
 * into LMDB's memory.
 *
 * Errors. Functions return 0 or a negative KV_E* code (kv/errors.h):
 *   KV_EINVAL      invalid request (the result's errmsg gives etcd's text),
 *   KV_ENOTFOUND   key / lease not found (errmsg gives etcd's text),
 *   KV_ECOMPACTED  revision < compacted revision,
 *   KV_EFUTUREREV  revision > current revision,
 *   KV_EAGAIN      the write would not fit in the current map: nothing was
 *                  changed; commit, begin a new write txn (the map grows
 *                  there) and retry the same request,
 *   KV_EFULL       the store is at its quota (map cannot grow further),
 *   KV_EFAILSTOP   an earlier LMDB failure inside a write txn; the store
 *                  refuses writes until it is closed and reopened,
 *   KV_ECORRUPT, KV_EIO, KV_ENOMEM.
 * A request that fails with KV_EINVAL, KV_ENOTFOUND, KV_ECOMPACTED,
 * KV_EFUTUREREV or KV_EAGAIN changed nothing; any other failure inside a
 * write transaction is sticky (fail-stop).
 */
#ifndef KV_STORAGE_MVCC_H
#define KV_STORAGE_MVCC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv/errors.h"

struct mvcc;
struct mvcc_read;

/* ---- arena ------------------------------------------------------------ */

/* A bump allocator for results. Zero-initialise (MVCC_ARENA_INIT) before
 * first use; not thread-safe; one arena per thread. */
struct mvcc_arena_chunk;
struct mvcc_arena {
	struct mvcc_arena_chunk *head;
	size_t used_bytes; /* total handed out since the last reset */
};
#define MVCC_ARENA_INIT { NULL, 0 }

/* Returns n bytes aligned to 16, or NULL on out-of-memory. */
void *mvcc_arena_alloc(struct mvcc_arena *a, size_t n);
/* Frees everything allocated from a, keeping one chunk for reuse. */
void mvcc_arena_reset(struct mvcc_arena *a);
void mvcc_arena_free(struct mvcc_arena *a);

/* ---- open / close ----------------------------------------------------- */

struct mvcc_options {
	/* Initial LMDB map size in bytes; 0 = quota_bytes. Grows by doubling
	 * (at mvcc_begin_write) up to quota_bytes. */
	uint64_t initial_map_bytes;
	/* etcd's --quota-backend-bytes; 0 = 2 GiB. The map never exceeds it;
	 * writes past it fail with KV_EFULL. */
	uint64_t quota_bytes;
	/* etcd's --max-txn-ops; 0 = 128. */
	unsigned max_txn_ops;
	/* When true, a put with a non-zero lease fails with KV_ENOTFOUND
	 * ("etcdserver: requested lease not found") unless the lease is in the
	 * lease table (mvcc_lease_put). Off until the lessor exists. */
	bool check_leases;
	/* LMDB's MDB_WRITEMAP is on unless this is set: commits write pages
	 * in place through a shared writable map (2-4x faster puts; the data
	 * file is sized to the map, sparse). The cost: a stray pointer write
	 * in this process could reach the file. */
	bool no_writemap;
};

/* Opens (creating if needed) the store in directory dir (created 0700 if
 * missing). opts may be NULL for defaults. On success *out owns the store;
 * free with mvcc_close(). */
int mvcc_open(const char *dir, const struct mvcc_options *opts,
	      struct mvcc **out);
/* Waits until read handles and checkpoint copies running on other threads
 * have ended (they finish reading the old state), aborts an open write
 * transaction (its changes are lost), then closes. A read handle of the
 * calling thread must have ended (it would wait forever). m may be
 * NULL. */
void mvcc_close(struct mvcc *m);

/* ---- write transaction (owner thread) ---------------------------------- */

/* Opens the write transaction. KV_EBUSY if one is open. Grows the map here
 * when it is more than half full and no read handle is active. */
int mvcc_begin_write(struct mvcc *m);
/* Writes the meta records and commits; with sync, fsyncs. After this (even
 * on failure) no write transaction is open. */
int mvcc_commit(struct mvcc *m, bool sync);
/* Discards the write transaction's changes. */
void mvcc_abort(struct mvcc *m);
bool mvcc_in_write(const struct mvcc *m);

/* ---- request and result types (mirror etcd's rpc.proto) -------------- */

struct mvcc_kv {
	const uint8_t *key;
	size_t key_len;
	const uint8_t *value; /* NULL when value_len == 0 */
	size_t value_len;
	int64_t create_revision;
	int64_t mod_revision;
	int64_t version;
	int64_t lease;
};

enum mvcc_sort_order { MVCC_SORT_NONE = 0, MVCC_SORT_ASCEND = 1,
		       MVCC_SORT_DESCEND = 2 };
enum mvcc_sort_target { MVCC_SORT_KEY = 0, MVCC_SORT_VERSION = 1,
			MVCC_SORT_CREATE = 2, MVCC_SORT_MOD = 3,
			MVCC_SORT_VALUE = 4 };

/* range_end: len 0 = the single key; "\0" (len 1) = every key >= key;
 * otherwise the half-open interval [key, range_end). All pointers are the
 * caller's and only read during the call. */
struct mvcc_range_req {
	const uint8_t *key;
	size_t key_len;
	const uint8_t *range_end;
	size_t range_end_len;
	int64_t limit;    /* <= 0: no limit */
	int64_t revision; /* <= 0: current */
	enum mvcc_sort_order sort_order;
	enum mvcc_sort_target sort_target;
	bool keys_only;
	bool count_only;
	int64_t min_mod_revision, max_mod_revision;
	int64_t min_create_revision, max_create_revision;
};

struct mvcc_range_res {
	int64_t header_revision;
	struct mvcc_kv *kvs;
	size_t n_kvs;
	bool more;
	int64_t count;
	const char *errmsg; /* static etcd error text on failure, else NULL */
};

struct mvcc_put_req {
	const uint8_t *key;
	size_t key_len;
	const uint8_t *value;
	size_t value_len;
	int64_t lease;
	bool prev_kv;
	bool ignore_value;
	bool ignore_lease;
};

struct mvcc_put_res {
	int64_t header_revision;
	struct mvcc_kv *prev_kv; /* NULL when not asked or the key was new */
	const char *errmsg;
};

struct mvcc_delete_req {
	const uint8_t *key;
	size_t key_len;
	const uint8_t *range_end;
	size_t range_end_len;
	bool prev_kv;
};

struct mvcc_delete_res {
	int64_t header_revision;
	int64_t deleted;
	struct mvcc_kv *prev_kvs;
	size_t n_prev_kvs;
	const char *errmsg;
};

enum mvcc_cmp_result { MVCC_CMP_EQUAL = 0, MVCC_CMP_GREATER = 1,
		       MVCC_CMP_LESS = 2, MVCC_CMP_NOT_EQUAL = 3 };
enum mvcc_cmp_target { MVCC_CMP_VERSION = 0, MVCC_CMP_CREATE = 1,
		       MVCC_CMP_MOD = 2, MVCC_CMP_VALUE = 3,
		       MVCC_CMP_LEASE = 4 };

struct mvcc_compare {
	enum mvcc_cmp_result result;
	enum mvcc_cmp_target target;
	const uint8_t *key;
	size_t key_len;
	const uint8_t *range_end; /* same conventions as ranges */
	size_t range_end_len;
	int64_t number; /* version, create/mod revision or lease */
	const uint8_t *value; /* for MVCC_CMP_VALUE */
	size_t value_len;
};

enum mvcc_op_type { MVCC_OP_RANGE = 0, MVCC_OP_PUT = 1,
		    MVCC_OP_DELETE_RANGE = 2, MVCC_OP_TXN = 3 };

struct mvcc_txn_req;
struct mvcc_request_op {
	enum mvcc_op_type type;
	union {
		struct mvcc_range_req range;
		struct mvcc_put_req put;
		struct mvcc_delete_req delete_range;
		const struct mvcc_txn_req *txn;
	} u;
};

struct mvcc_txn_req {
	const struct mvcc_compare *compare;
	size_t n_compare;
	const struct mvcc_request_op *success;
	size_t n_success;
	const struct mvcc_request_op *failure;
	size_t n_failure;
};

struct mvcc_txn_res;
struct mvcc_response_op {
	enum mvcc_op_type type;
	union {
		struct mvcc_range_res range;
		struct mvcc_put_res put;
		struct mvcc_delete_res delete_range;
		struct mvcc_txn_res *txn;
	} u;
};

struct mvcc_txn_res {
	int64_t header_revision;
	bool succeeded;
	struct mvcc_response_op *responses; /* in op order */
	size_t n_responses;
	const char *errmsg;
};

/* ---- requests ------------------------------------------------------- */

/* Range at a revision (etcd applierV3backend.Range). rd: a read handle, or
 * NULL for the owner's view (the open write txn if any). */
int mvcc_range(struct mvcc *m, struct mvcc_read *rd,
	       const struct mvcc_range_req *req, struct mvcc_arena *a,
	       struct mvcc_range_res *res);

/* Writes; need the open write transaction (else KV_EINVAL). Each bumps the
 * revision at most once, and not at all when it changes nothing. */
int mvcc_put(struct mvcc *m, const struct mvcc_put_req *req,
	     struct mvcc_arena *a, struct mvcc_put_res *res);
int mvcc_delete_range(struct mvcc *m, const struct mvcc_delete_req *req,
		      struct mvcc_arena *a, struct mvcc_delete_res *res);
/* Validates (mvcc_txn_validate with the store's max_txn_ops), evaluates
 * every compare on the state before the txn (nested ones included, as etcd
 * does), then applies the chosen branches. A txn whose ops are all ranges
 * is read-only and may run without a write txn open. */
int mvcc_txn(struct mvcc *m, const struct mvcc_txn_req *req,
	     struct mvcc_arena *a, struct mvcc_txn_res *res);

/* etcd's request checks done before proposing (v3rpc/key.go): empty keys,
 * value/lease provided with ignore_*, op count > max_ops, duplicate keys
 * (checkIntervals). Returns 0 or KV_EINVAL with *errmsg set to the etcd
 * text. errmsg may be NULL. */
int mvcc_txn_validate(const struct mvcc_txn_req *req, unsigned max_ops,
		      const char **errmsg);

/* Logical compaction at rev (needs the write txn): ranges and events below
 * rev fail with KV_ECOMPACTED from now on. KV_ECOMPACTED if rev <= the
 * compacted revision, KV_EFUTUREREV if rev > current. The physical removal
 * of history is done by mvcc_compact_step(). */
int mvcc_compact(struct mvcc *m, int64_t rev);
/* Removes up to max_revs obsolete revisions (needs the write txn); sets
 * *done when nothing is left. Commit between steps to bound txn size. */
int mvcc_compact_step(struct mvcc *m, size_t max_revs, bool *done);

int64_t mvcc_revision(const struct mvcc *m);
/* etcd's compactMainRev: -1 until the first compaction. */
int64_t mvcc_compact_revision(const struct mvcc *m);

/* ---- events (watch catch-up) ---------------------------------------- */

enum mvcc_event_type { MVCC_EVENT_PUT = 0, MVCC_EVENT_DELETE = 1 };

struct mvcc_event {
	enum mvcc_event_type type;
	struct mvcc_kv kv; /* DELETE: only key and mod_revision are set */
	struct mvcc_kv *prev_kv; /* NULL unless asked and available */
};

struct mvcc_events_req {
	const uint8_t *key; /* range conventions as mvcc_range_req */
	size_t key_len;
	const uint8_t *range_end;
	size_t range_end_len;
	/* First revision wanted. Not etcd's watch "0 = now": the caller maps
	 * that to mvcc_revision() + 1. Values < 1 mean 1. */
	int64_t start_revision;
	size_t max_events; /* 0 = 1000 */
	size_t max_scan;   /* records examined per call; 0 = 10000 */
	bool prev_kv;
};

struct mvcc_events_res {
	struct mvcc_event *events; /* revision order, sub order inside one */
	size_t n_events;
	/* Resume with start_revision = next_revision. Equals current + 1 when
	 * the caller has caught up. */
	int64_t next_revision;
	int64_t header_revision;
};

/* Events of keys in the range with revision >= start_revision. A batch
 * ends at a revision boundary: it stops before a revision once n_events >=
 * max_events or max_scan records were examined, so the events of one
 * revision are never split; a batch may exceed max_events by the rest of
 * its last revision. KV_ECOMPACTED if start_revision < the compacted
 * revision (etcd's rule); at exactly the compacted revision only what
 * compaction keeps is returned (no tombstones, no overwritten puts; as
 * etcd after its compaction), before or after mvcc_compact_step ran, so
 * results do not depend on physical progress. prev_kv is the
 * key at mod_revision - 1 for non-create events, omitted when compacted.
 */
int mvcc_events(struct mvcc *m, struct mvcc_read *rd,
		const struct mvcc_events_req *req, struct mvcc_arena *a,
		struct mvcc_events_res *res);

/* ---- hash, meta, leases --------------------------------------------- */

/* CRC32C over every (revision, key, value, create, version, lease, flags)
 * record with revision <= rev (<= 0: current) that survives compaction,
 * then the compacted revision; the same for members with the same history
 * whether or not physical compaction has finished. */
int mvcc_hash(struct mvcc *m, struct mvcc_read *rd, int64_t rev,
	      uint32_t *hash, int64_t *compact_rev);

/* Meta and lease writes need the open write txn (KV_EINVAL otherwise) and
 * commit with it; the getters read the owner's view (the open write txn
 * if any, else the committed state). Owner thread only. */

/* Raft's applied index and term: kept in memory and written as a meta
 * record by mvcc_commit(), in the same LMDB txn as the data they
 * describe; mvcc_abort() restores the committed values. */
int mvcc_set_applied(struct mvcc *m, uint64_t index, uint64_t term);
/* The values as of the owner's view (the open write txn if any). */
void mvcc_get_applied(const struct mvcc *m, uint64_t *index, uint64_t *term);

/* An opaque blob of cluster metadata (members), at most 64 MiB. */
int mvcc_members_put(struct mvcc *m, const void *blob, size_t len);
/* *blob (in a) is NULL and *len 0 when none is stored. */
int mvcc_members_get(struct mvcc *m, struct mvcc_arena *a, const void **blob,
		     size_t *len);

/* Lease table: one opaque record per lease id (the lessor's format). */
int mvcc_lease_put(struct mvcc *m, int64_t id, const void *rec, size_t len);
/* KV_ENOTFOUND if absent. */
int mvcc_lease_del(struct mvcc *m, int64_t id);
/* KV_ENOTFOUND if absent; *rec is in a. */
int mvcc_lease_get(struct mvcc *m, int64_t id, struct mvcc_arena *a,
		   const void **rec, size_t *len);
/* All lease ids in ascending order, in a. */
int mvcc_lease_list(struct mvcc *m, struct mvcc_arena *a, int64_t **ids,
		    size_t *n);

/* ---- read handles (any thread) -------------------------------------- */

/* A consistent snapshot of the committed state. End it promptly: an open
 * read handle blocks map growth and pins old pages. */
int mvcc_read_begin(struct mvcc *m, struct mvcc_read **out);
void mvcc_read_end(struct mvcc_read *rd);
int64_t mvcc_read_revision(const struct mvcc_read *rd);

/* ---- checkpoint / restore ------------------------------------------- */

struct mvcc_checkpoint_info {
	uint32_t crc32c;  /* of the copy file */
	uint64_t size;    /* bytes */
	int64_t revision; /* store revision inside the copy */
	uint64_t applied_index, applied_term;
};

/* Writes a consistent compacted copy of the committed state to path (via
 * path.tmp, fsync, rename, dir fsync) from LMDB's own read transaction,
 * while the owner keeps writing, and its checksum to "<path>.crc". Any
 * thread. */
int mvcc_checkpoint(struct mvcc *m, const char *path,
		    struct mvcc_checkpoint_info *info);

/* Verifies the copy at path (checksum against "<path>.crc", it opens, meta
 * present) and atomically installs it as the store of data dir dir (which
 * must not be open). KV_ECORRUPT when verification fails; nothing in dir is
 * changed then. info may be NULL. */
int mvcc_restore(const char *path, const char *dir,
		 struct mvcc_checkpoint_info *info);

/* etcd's Defragment: rewrites the data file as a compacted copy (free
 * pages dropped, so mvcc_size()'s used bytes shrink), then reopens it.
 * Owner thread, no write txn open and no read handle active (else
 * KV_EBUSY); read handles are blocked while it runs. If the reopen fails
 * the store is fail-stop and only mvcc_close() is safe. */
int mvcc_defrag(struct mvcc *m);

/* ---- diagnostics ---------------------------------------------------- */

/* etcd's error text for a KV_E* code from this module ("etcdserver: mvcc:
 * required revision has been compacted", ...), or kv_strerror()'s. */
const char *mvcc_errmsg(int err);

/* Bytes used by the data file and the map size. */
void mvcc_size(struct mvcc *m, uint64_t *used, uint64_t *map_size);

/* Full consistency check (slow, owner's view): full keys strictly
 * ascending, every record decodes and re-encodes to its LMDB key, the
 * revision index maps each record's revision to it and has no extra
 * entries, versions and create revisions chain inside each generation,
 * compacted revision <= current. For asserts in tests. */
bool mvcc_invariants_ok(struct mvcc *m);

/* Test hook: the n-th LMDB write call from now (mdb_put/mdb_del inside
 * the write txn, or the commit itself) fails with KV_EIO, which makes the
 * store fail-stop. 0 disables. */
void mvcc_test_fail_after(struct mvcc *m, int n);

/* Test hook: from now on every long key's hash is 0, so all long keys
 * sharing a prefix collide. Call right after every mvcc_open of a store
 * that is only ever used this way. */
void mvcc_test_collide_hashes(struct mvcc *m);

#endif

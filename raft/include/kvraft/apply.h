/* kvraft/apply.h — kvd's replicated state machine over storage/mvcc, and
 * the translation between etcd's protobuf messages and storage/mvcc.
 *
 * Three parts:
 *
 * 1. Status table (kv_statuses): etcd's exact error strings with their gRPC
 *    codes. Every request-level failure maps to one entry.
 *
 * 2. Translation (kv_translate_*): turns an etcdserverpb request into the
 *    storage/mvcc.h request struct, runs it, and builds the protobuf-c
 *    response. Used by the state machine for writes and by the server for
 *    reads served outside raft (Range, read-only Txn) and validation
 *    (kv_validate_*) done before proposing.
 *
 *    Memory: every message, array and byte string of a response is
 *    allocated from the caller's struct mvcc_arena (zero-initialised with
 *    MVCC_ARENA_INIT). The caller frees the whole response in one call,
 *    mvcc_arena_reset() or mvcc_arena_free(); never call
 *    protobuf_c_message_free_unpacked() on it. Key/value bytes of a
 *    response point into the arena, never into the request or LMDB.
 *    Messages are initialised with their *__INIT macros, so
 *    protobuf_c_message_pack() and kvjson_encode() work on them.
 *
 *    Headers: the top-level response header carries the ids given in
 *    struct kv_header_ids and the store revision; txn sub-responses carry a
 *    header with only the revision, a nested txn's response has an empty
 *    header {} (etcd 3.4's quirks), and a historical Range reports the
 *    current revision.
 *
 * 3. The state machine (kv_apply_*): struct kv_apply implements struct
 *    kvraft_sm (kvraft/statemachine.h) over one mvcc store that it owns
 *    (it opens it, and closes/reopens it on restore).
 *
 *    Entries are applied inside one long LMDB write transaction that
 *    holds the applied index with the effects; the owner commits it with
 *    kv_apply_commit(). A commit happens only between entries, so the
 *    store always holds whole entries up to its applied index; entries at
 *    or below it are skipped (WAL replay after a restart).
 *
 *    Durability (durable_index): the applied index of the last commit
 *    that was synced (kv_apply_commit(a, true), prepare_snapshot, and the
 *    sync that kv_apply_new does once at open). An unsynced commit
 *    survives a process crash but not a power loss, so it does not count.
 *
 *    Map growth (KV_EAGAIN) in the middle of an entry: the write txn is
 *    aborted, the entries applied since the last commit are replayed from
 *    copies kept in memory (results not delivered again), committed, and
 *    the entry is applied again from its start in a fresh txn. Results are
 *    delivered only when the whole entry has been applied.
 *
 *    Quota (KV_EFULL): a write that does not fit under --quota-backend-bytes
 *    is retried once in a fresh txn (so the outcome depends on the
 *    committed state and the entry alone), then fails with NOSPACE
 *    ("etcdserver: mvcc: database space exceeded", ResourceExhausted) and
 *    hooks->on_nospace fires. The file layout of two members may differ
 *    slightly, so this local failure is not strictly deterministic; the
 *    owner must then propose AlarmRequest{ACTIVATE, self, NOSPACE}: once
 *    that replicated alarm is applied, every member refuses Put, LeaseGrant
 *    and Txns containing a Put (etcd's applierV3Capped) while Range,
 *    DeleteRange, Compaction, LeaseRevoke and delete-only Txns still work,
 *    as in etcd (checked on etcd 3.4.23 with a 1 MiB quota). Alarms are
 *    stored with the state (see KV_APPLY_ALARM_RECORD), so they survive
 *    restarts and travel in snapshots.
 *
 *    Snapshots: the file is mvcc_checkpoint()'s compacted LMDB copy, with
 *    its checksum beside it in "<path>.crc" ("crc32c=%08x size=%llu").
 *    restore() accepts a file without "<path>.crc" when given the leader's
 *    crc (it writes the side file from it), verifies the copy completely
 *    in a staging directory "<dir>.restore" (checksum, it opens, applied
 *    index/term and crc match the arguments) before closing the live
 *    store, then installs it with mvcc_restore() and reopens. On any
 *    verification failure the old state is untouched and usable. The file
 *    is copied twice (staging + install): fine for now, cheap to fix once
 *    mvcc has a verify-only call. A store copy running on another thread
 *    (a client's Snapshot) finishes before the store is closed
 *    (mvcc_close waits for it); the owner thread must hold no read
 *    handle.
 *
 *    Leases: LeaseGrant stores a 16-byte record (granted TTL, last
 *    checkpointed remaining TTL or 0; int64 LE) under the proposer's ID and
 *    adds the lease to the member's lessor (kvraft/lessor.h), which also
 *    indexes the keys put with each lease (Put, and the Puts of the branch
 *    a Txn took; ignore_lease keeps the old attachment). LeaseRevoke and
 *    LeaseExpire delete, in one revision and key order, every key of the
 *    lease whose current revision still carries it, then the lease; only
 *    the lease's own key entries are examined. Put with an unknown lease
 *    fails with "etcdserver: requested lease not found"; LeaseCheckpoint
 *    rewrites the remaining TTL. The lessor is rebuilt from the store
 *    after an open, a restore and a write-txn restart, so it always
 *    matches the owner's view. ClusterInit is accepted and not stored yet.
 *
 * Threads: everything on the owner (loop) thread, except the
 * write_snapshot callback of kv_apply_sm() and the translation of reads
 * given a struct mvcc_read (any thread, see storage/mvcc.h).
 */
#ifndef KVRAFT_APPLY_H
#define KVRAFT_APPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "etcdserverpb/rpc.pb-c.h"
#include "kv/errors.h"
#include "kvdpb/internal.pb-c.h"
#include "kvraft/lessor.h"
#include "kvraft/statemachine.h"
#include "storage/mvcc.h"

/* ---- status table ------------------------------------------------------ */

/* gRPC status codes. */
enum kv_grpc_code {
	KV_GRPC_OK = 0,
	KV_GRPC_CANCELED = 1,
	KV_GRPC_UNKNOWN = 2,
	KV_GRPC_INVALID_ARGUMENT = 3,
	KV_GRPC_DEADLINE_EXCEEDED = 4,
	KV_GRPC_NOT_FOUND = 5,
	KV_GRPC_ALREADY_EXISTS = 6,
	KV_GRPC_PERMISSION_DENIED = 7,
	KV_GRPC_RESOURCE_EXHAUSTED = 8,
	KV_GRPC_FAILED_PRECONDITION = 9,
	KV_GRPC_ABORTED = 10,
	KV_GRPC_OUT_OF_RANGE = 11,
	KV_GRPC_UNIMPLEMENTED = 12,
	KV_GRPC_INTERNAL = 13,
	KV_GRPC_UNAVAILABLE = 14,
	KV_GRPC_DATA_LOSS = 15,
	KV_GRPC_UNAUTHENTICATED = 16,
};

/* The outcome of a request as a gRPC client sees it: code 0 and msg "" on
 * success. msg is static. */
struct kv_status {
	int code; /* enum kv_grpc_code */
	const char *msg;
};

/* X(name, grpc code, etcd's exact text), etcd 3.4
 * (etcdserver/api/v3rpc/rpctypes/error.go). */
#define KV_STATUS_MAP(X)                                                     \
	X(OK, KV_GRPC_OK, "")                                                \
	X(EMPTY_KEY, KV_GRPC_INVALID_ARGUMENT,                               \
	  "etcdserver: key is not provided")                                 \
	X(KEY_NOT_FOUND, KV_GRPC_INVALID_ARGUMENT,                           \
	  "etcdserver: key not found")                                       \
	X(VALUE_PROVIDED, KV_GRPC_INVALID_ARGUMENT,                          \
	  "etcdserver: value is provided")                                   \
	X(LEASE_PROVIDED, KV_GRPC_INVALID_ARGUMENT,                          \
	  "etcdserver: lease is provided")                                   \
	X(TOO_MANY_OPS, KV_GRPC_INVALID_ARGUMENT,                            \
	  "etcdserver: too many operations in txn request")                  \
	X(DUPLICATE_KEY, KV_GRPC_INVALID_ARGUMENT,                           \
	  "etcdserver: duplicate key given in txn request")                  \
	X(INVALID_SORT_OPTION, KV_GRPC_INVALID_ARGUMENT,                     \
	  "etcdserver: invalid sort option")                                 \
	X(COMPACTED, KV_GRPC_OUT_OF_RANGE,                                   \
	  "etcdserver: mvcc: required revision has been compacted")          \
	X(FUTURE_REV, KV_GRPC_OUT_OF_RANGE,                                  \
	  "etcdserver: mvcc: required revision is a future revision")        \
	X(NO_SPACE, KV_GRPC_RESOURCE_EXHAUSTED,                              \
	  "etcdserver: mvcc: database space exceeded")                       \
	X(LEASE_NOT_FOUND, KV_GRPC_NOT_FOUND,                                \
	  "etcdserver: requested lease not found")                           \
	X(LEASE_EXIST, KV_GRPC_FAILED_PRECONDITION,                          \
	  "etcdserver: lease already exists")                                \
	X(LEASE_TTL_TOO_LARGE, KV_GRPC_OUT_OF_RANGE,                         \
	  "etcdserver: too large lease TTL")                                 \
	X(REQUEST_TOO_LARGE, KV_GRPC_INVALID_ARGUMENT,                       \
	  "etcdserver: request is too large")                                \
	X(TOO_MANY_REQUESTS, KV_GRPC_RESOURCE_EXHAUSTED,                     \
	  "etcdserver: too many requests")                                   \
	X(NOT_CAPABLE, KV_GRPC_UNAVAILABLE, "etcdserver: not capable")       \
	X(STORAGE, KV_GRPC_UNAVAILABLE, "etcdserver: server stopped")

enum kv_status_id {
#define KV_STATUS_ENUM(name, code, msg) KV_ST_##name,
	KV_STATUS_MAP(KV_STATUS_ENUM)
#undef KV_STATUS_ENUM
	KV_ST__COUNT
};

/* Indexed by enum kv_status_id. */
extern const struct kv_status kv_statuses[KV_ST__COUNT];

/* The status of a translation / apply outcome: err is 0 or a KV_E* code,
 * errmsg the mvcc result's errmsg (may be NULL). Request errors map by
 * text, else by code (KV_ECOMPACTED, KV_EFUTUREREV, KV_EFULL, ...); storage
 * failures map to KV_ST_STORAGE. */
struct kv_status kv_translate_status(int err, const char *errmsg);

/* Whether err (from a kv_translate_* or mvcc call) is a storage failure
 * (disk, memory, fail-stop) rather than an answer for the client. */
bool kv_translate_is_fatal(int err);

/* ---- translation -------------------------------------------------------- */

/* Ids for the top-level response header (the revision comes from the
 * store). */
struct kv_header_ids {
	uint64_t cluster_id;
	uint64_t member_id;
	uint64_t raft_term;
};

/* proto -> mvcc requests. The mvcc structs point into the proto request
 * (which must outlive them); txn translation allocates its arrays in a.
 * An unknown sort order is treated as etcd 3.4 does (no sorting); an
 * unknown sort target gives KV_EINVAL / KV_ST_INVALID_SORT_OPTION (etcd
 * 3.4 panics; 3.5 answers that). Unknown compare results / targets behave
 * as in etcd 3.4's compareKV (result: always true; target: compares
 * equal). A
 * RequestOp with no request set gives KV_EINVAL / KV_ST_KEY_NOT_FOUND
 * (etcd 3.4's checkRequestOp). 0 or KV_E*, *st set. */
int kv_translate_range_req(const Etcdserverpb__RangeRequest *r,
			   struct mvcc_range_req *out, struct kv_status *st);
void kv_translate_put_req(const Etcdserverpb__PutRequest *r,
			  struct mvcc_put_req *out);
void kv_translate_delete_req(const Etcdserverpb__DeleteRangeRequest *r,
			     struct mvcc_delete_req *out);
int kv_translate_txn_req(const Etcdserverpb__TxnRequest *r,
			 struct mvcc_arena *a, struct mvcc_txn_req *out,
			 struct kv_status *st);

/* mvcc results -> proto responses, all in a. ids NULL: a header with only
 * the revision (txn sub-responses). KV_ENOMEM or 0. */
int kv_translate_range_res(const struct mvcc_range_res *res,
			   const struct kv_header_ids *ids,
			   struct mvcc_arena *a,
			   Etcdserverpb__RangeResponse **out);
int kv_translate_put_res(const struct mvcc_put_res *res,
			 const struct kv_header_ids *ids, struct mvcc_arena *a,
			 Etcdserverpb__PutResponse **out);
int kv_translate_delete_res(const struct mvcc_delete_res *res,
			    const struct kv_header_ids *ids,
			    struct mvcc_arena *a,
			    Etcdserverpb__DeleteRangeResponse **out);
int kv_translate_txn_res(const struct mvcc_txn_res *res,
			 const struct kv_header_ids *ids, struct mvcc_arena *a,
			 Etcdserverpb__TxnResponse **out);
/* Allocates a header in a (ids NULL: all zero) with revision rev. */
Etcdserverpb__ResponseHeader *
kv_translate_header(const struct kv_header_ids *ids, int64_t rev,
		    struct mvcc_arena *a);

/* Run a request on m and build its response (all in a). Range: rd as in
 * mvcc_range (NULL: the owner's view). Put, DeleteRange, writing Txn and
 * Compaction need the owner's open write transaction (the state machine
 * does that; the server should only call Range and read-only Txn).
 * Returns 0 with *resp set, or a KV_E* code with *resp NULL and *st set:
 * request errors (KV_EINVAL, KV_ENOTFOUND, KV_ECOMPACTED, KV_EFUTUREREV,
 * KV_EFULL) changed nothing; KV_EAGAIN: map growth needed, changed
 * nothing (commit, begin, retry); anything else is a storage failure
 * (kv_translate_is_fatal). st may be NULL. */
int kv_translate_range(struct mvcc *m, struct mvcc_read *rd,
		       const Etcdserverpb__RangeRequest *req,
		       const struct kv_header_ids *ids, struct mvcc_arena *a,
		       Etcdserverpb__RangeResponse **resp,
		       struct kv_status *st);
int kv_translate_put(struct mvcc *m, const Etcdserverpb__PutRequest *req,
		     const struct kv_header_ids *ids, struct mvcc_arena *a,
		     Etcdserverpb__PutResponse **resp, struct kv_status *st);
int kv_translate_delete_range(struct mvcc *m,
			      const Etcdserverpb__DeleteRangeRequest *req,
			      const struct kv_header_ids *ids,
			      struct mvcc_arena *a,
			      Etcdserverpb__DeleteRangeResponse **resp,
			      struct kv_status *st);
int kv_translate_txn(struct mvcc *m, const Etcdserverpb__TxnRequest *req,
		     const struct kv_header_ids *ids, struct mvcc_arena *a,
		     Etcdserverpb__TxnResponse **resp, struct kv_status *st);
/* Logical compaction only (mvcc_compact); the header carries the current
 * revision, as etcd's does. */
int kv_translate_compaction(struct mvcc *m,
			    const Etcdserverpb__CompactionRequest *req,
			    const struct kv_header_ids *ids,
			    struct mvcc_arena *a,
			    Etcdserverpb__CompactionResponse **resp,
			    struct kv_status *st);

/* Whether every op of the txn (nested ones included) is a Range: such a
 * txn is served outside raft. */
bool kv_translate_txn_readonly(const Etcdserverpb__TxnRequest *req);

/* ---- validation before proposing (etcd v3rpc/key.go, lease.go) ----------- */

/* 0, or KV_EINVAL with *st set to etcd's status. st may be NULL. */
int kv_validate_range(const Etcdserverpb__RangeRequest *r,
		      struct kv_status *st);
int kv_validate_put(const Etcdserverpb__PutRequest *r, struct kv_status *st);
int kv_validate_delete_range(const Etcdserverpb__DeleteRangeRequest *r,
			     struct kv_status *st);
/* max_txn_ops: etcd's --max-txn-ops (0 = 128). Empty keys, op count
 * (nested txns get the remaining budget, as etcd's checkTxnRequest),
 * duplicate keys (checkIntervals), ignore_* misuse, sort options. May
 * return KV_ENOMEM. */
int kv_validate_txn(const Etcdserverpb__TxnRequest *r, unsigned max_txn_ops,
		    struct kv_status *st);
/* TTL above 9,000,000,000 s: KV_ERANGE / KV_ST_LEASE_TTL_TOO_LARGE. An ID
 * of 0 is fine here: the proposer must pick one before proposing (an
 * applied LeaseGrant with ID 0 fails with KV_EINVAL). */
int kv_validate_lease_grant(const Etcdserverpb__LeaseGrantRequest *r,
			    struct kv_status *st);

/* ---- the state machine --------------------------------------------------- */

struct kv_apply;

/* The replicated alarm list (etcd's alarm bucket) is stored in the mvcc
 * lease table under this reserved id until mvcc has a meta record for it;
 * the lessor must skip it in mvcc_lease_list(). Clients cannot grant,
 * revoke or attach it. */
#define KV_APPLY_ALARM_RECORD INT64_MIN

/* The outcome of one applied request, handed to the proposing member.
 * Everything it points to is valid only during the on_result call: pack
 * or copy what you need. */
struct kv_result {
	/* Headers carry cluster_id and member_id from kv_apply_options and
	 * raft_term = the entry's term; the server may overwrite them. */
	uint64_t request_id;
	Kvdpb__InternalRequest__RequestCase type;
	int err;               /* 0 or the request's KV_E* code */
	struct kv_status status; /* {0, ""} on success */
	/* The etcdserverpb response matching type (PutResponse, ...,
	 * AlarmResponse); NULL on error and for LeaseExpire / ClusterInit /
	 * an unset request. */
	const ProtobufCMessage *response;
	int64_t revision;      /* store revision after the request */
};

/* Callbacks, all on the owner thread, from inside kv_apply calls. They
 * must not call back into the same struct kv_apply. Any may be NULL. */
struct kv_apply_hooks {
	void *data;
	/* One call per request of an entry whose member_id is self, in
	 * batch order, after the whole entry has been applied (so a retry
	 * after map growth never delivers twice). */
	void (*on_result)(void *data, uint64_t request_id,
			  const struct kv_result *res);
	/* After each applied entry (command or noop): watch reads the events
	 * up to revision. */
	void (*on_applied)(void *data, uint64_t index, int64_t revision);
	/* A write failed locally with KV_EFULL (the store is at its quota):
	 * the owner should propose AlarmRequest{ACTIVATE, self, NOSPACE}, so
	 * that every member refuses writes from the same entry on. */
	void (*on_nospace)(void *data);
	/* The store was replaced by a snapshot (restore): the previous
	 * struct mvcc pointer is gone; m is the new one. */
	void (*on_restored)(void *data, struct mvcc *m);
};

struct kv_apply_options {
	/* The store: dir and mvcc options (NULL: defaults). kv_apply forces
	 * check_leases on, and lifts the store's max_txn_ops (the limit is
	 * etcd's API check, kv_validate_txn, not an apply-time rule: a lease
	 * revoke deletes all its keys in one txn). */
	const char *dir;
	const struct mvcc_options *mvcc;
	uint64_t self_member_id;
	/* Copied into response headers (the server may overwrite them). */
	uint64_t cluster_id;
	/* Revisions removed per kv_apply_compact_step (0 = 1000, etcd's
	 * --experimental-compaction-batch-limit). */
	size_t compact_batch;
};

/* Opens the store in opts->dir (syncing it once) and builds the state
 * machine. opts and hooks are copied (hooks may be NULL). *out is freed
 * with kv_apply_close(). After any fatal error (storage failure, memory)
 * every call fails with that error until the object is closed and
 * reopened (sticky, like mvcc's fail-stop). */
int kv_apply_new(const struct kv_apply_options *opts,
		 const struct kv_apply_hooks *hooks, struct kv_apply **out);
/* Aborts the open write transaction (entries applied since the last
 * kv_apply_commit are lost from the store; they are in the WAL above
 * durable_index) and closes the store. a may be NULL. */
void kv_apply_close(struct kv_apply *a);

/* The vtable for the raft node; data = a. Valid until kv_apply_close. */
struct kvraft_sm *kv_apply_sm(struct kv_apply *a);

/* The current store (for reads, watch, hash). Changes on restore (see
 * hooks->on_restored); never keep it across a restore. */
struct mvcc *kv_apply_mvcc(struct kv_apply *a);

/* Commits the open write transaction, if any (no-op otherwise); with
 * sync, fsyncs it and durable_index() advances to the applied index.
 * The owner calls it on a short timer or when kv_apply_pending_bytes()
 * grows (the WAL is the durability of record). 0 or fatal KV_E*. */
int kv_apply_commit(struct kv_apply *a, bool sync);

/* Bytes of entry payload applied since the last commit (kept in memory to
 * replay them if the map must grow mid-entry). The owner should commit
 * when this passes a bound (a few MiB) as well as on its timer. */
size_t kv_apply_pending_bytes(const struct kv_apply *a);

/* Physical compaction, bounded: removes up to compact_batch revisions
 * below the compacted revision inside the write transaction (opened if
 * needed; commit as usual). *done when nothing is left. Call it between
 * applies, on the owner thread, until done. 0 or fatal KV_E*. */
int kv_apply_compact_step(struct kv_apply *a, bool *done);

/* Whether the replicated NOSPACE alarm is active (writes are refused). */
bool kv_apply_nospace(const struct kv_apply *a);

/* The member's lease table (owned by a; valid until kv_apply_close). The
 * owner may use its leader half (promote, renew, expired, checkpoints);
 * the replicated half changes only through applied entries. */
struct kv_lessor *kv_apply_lessor(struct kv_apply *a);
/* The keys currently attached to lease id, sorted by key, as keys-only
 * records (no values); the array and the key bytes are in ar. Owner
 * thread, between entries. */
int kv_apply_lease_keys(struct kv_apply *a, int64_t id,
			struct mvcc_arena *ar, struct mvcc_kv **kvs,
			size_t *n);

#endif

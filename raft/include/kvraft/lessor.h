/* kvraft/lessor.h — the in-memory lease table of one member.
 *
 * Two halves, one structure:
 *
 * 1. Replicated state, changed only by the state machine (apply.c) as it
 *    applies entries, so every member holds the same: the leases (id,
 *    granted TTL, last checkpointed remaining TTL) and, per lease, the keys
 *    put with it. The store (mvcc lease table + each key's lease field) is
 *    the source of truth; kv_lessor_load_* rebuild this from it after an
 *    open, a restore or an aborted write transaction.
 *
 *    Keys are indexed by key: one entry per key ever put with a lease that
 *    has not been revoked or re-put without a lease since. A delete does
 *    not detach (the entry stays until its lease ends or the key is put
 *    again), so every user checks a key's current lease in the store:
 *    "the keys of lease L" = entries of L whose stored lease is still L.
 *
 * 2. Leader-only timing (etcd's primary lessor): on the leader every lease
 *    has an expiry on the monotonic clock (kv_now_ms); elsewhere none.
 *    kv_lessor_promote gives every lease its remaining TTL (the
 *    checkpointed one if set, else the granted TTL) plus a grace period;
 *    kv_lessor_demote forgets expiries. Expired leases are handed to the
 *    owner (kv_lessor_expired), which proposes their revoke through raft.
 *
 * Not thread-safe: the owner's (loop) thread only.
 */
#ifndef KVRAFT_LESSOR_H
#define KVRAFT_LESSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* etcd's MaxLeaseTTL: 9,000,000,000 s. */
#define KV_LEASE_MAX_TTL 9000000000LL

struct kv_lessor;

struct kv_lease_info {
	int64_t id;
	int64_t ttl;       /* granted, seconds */
	int64_t remaining; /* last checkpoint, seconds; 0 = none */
	/* Leader only: milliseconds left (0 if expired); -1 elsewhere. */
	int64_t left_ms;
	size_t nkeys; /* key entries (some may be stale, see above) */
};

int kv_lessor_new(struct kv_lessor **out);
void kv_lessor_free(struct kv_lessor *l);

/* ---- replicated half (state machine) ---------------------------------- */

/* Adds lease id, or updates ttl/remaining of an existing one (timing
 * kept). On the leader a new lease expires ttl seconds from now. */
int kv_lessor_grant(struct kv_lessor *l, int64_t id, int64_t ttl,
		    int64_t remaining);
/* Sets the checkpointed remaining TTL (no effect on a live expiry). */
void kv_lessor_checkpoint(struct kv_lessor *l, int64_t id,
			  int64_t remaining);
/* Forgets lease id and its key entries. */
void kv_lessor_revoke(struct kv_lessor *l, int64_t id);
/* Key was put with lease (0: without one): moves its entry. A lease that
 * is not in the table is treated as 0. */
int kv_lessor_attach(struct kv_lessor *l, const void *key, size_t len,
		     int64_t lease);
bool kv_lessor_exists(const struct kv_lessor *l, int64_t id);
size_t kv_lessor_count(const struct kv_lessor *l);

/* The key entries of lease id: calls fn for each (key valid during the
 * call) until fn returns non-zero, which is returned. */
int kv_lessor_keys(const struct kv_lessor *l, int64_t id,
		   int (*fn)(void *arg, const void *key, size_t len),
		   void *arg);
/* Every lease id, ascending, into a malloc'd array (*ids NULL when n 0). */
int kv_lessor_ids(const struct kv_lessor *l, int64_t **ids, size_t *n);
/* 0, or KV_ENOTFOUND. */
int kv_lessor_info(const struct kv_lessor *l, int64_t id,
		   struct kv_lease_info *out);

/* Rebuild: begin marks every lease stale and drops every key entry;
 * grants and attaches follow; end drops leases still stale. Leases that
 * survive keep their timing. */
void kv_lessor_load_begin(struct kv_lessor *l);
void kv_lessor_load_end(struct kv_lessor *l);

/* ---- leader half --------------------------------------------------------- */

/* This member leads: every lease expires after its remaining TTL (the
 * checkpoint if any, else the granted TTL) plus extend_ms from now. */
void kv_lessor_promote(struct kv_lessor *l, uint64_t extend_ms);
/* No longer leads: no expiries. */
void kv_lessor_demote(struct kv_lessor *l);
bool kv_lessor_primary(const struct kv_lessor *l);

/* etcd's Renew on the leader: the lease's TTL from now. Returns the
 * granted TTL, or 0 when the lease is unknown or already expired (its
 * revoke is on its way). *clear_cp tells that the replicated remaining
 * TTL is set and should be cleared with a checkpoint of 0 (so a later
 * leader does not cut the renewed lease short). */
int64_t kv_lessor_renew(struct kv_lessor *l, int64_t id, bool *clear_cp);

/* Up to max leases whose expiry passed and whose revoke was not asked
 * for in the last retry_ms, into ids; marks them asked. Leader only. */
size_t kv_lessor_expired(struct kv_lessor *l, int64_t *ids, size_t max,
			 uint64_t retry_ms);

/* Leader only: up to max leases whose remaining TTL is above interval_ms
 * and that were not checkpointed in the last interval_ms, with their
 * remaining TTL in whole seconds (rounded up); examines at most scan
 * leases per call, round robin. */
size_t kv_lessor_checkpoints(struct kv_lessor *l, uint64_t interval_ms,
			     size_t scan, int64_t *ids, int64_t *remaining,
			     size_t max);

/* Bytes of memory held (table, leases, key entries), for benchmarks. */
size_t kv_lessor_memory(const struct kv_lessor *l);

#endif

/* storage/mvcc_internal.h — private to storage/mvcc*.c.
 *
 * LMDB layout (one environment, four named databases):
 *   "kv"    key   = encoded key (below), custom comparator cmp_ekey
 *           value = flags u8 (1 tombstone, 2 long key) | create i64le |
 *                   version i64le | lease i64le |
 *                   [long: full key length u32le | full key] | value
 *   "rev"   key   = main u64be | sub u64be      (memcmp order = revision)
 *           value = the "kv" encoded key of that revision's record
 *   "meta"  "format" u32 | "maxkey" u32 | "rev" i64 | "compact" i64 |
 *           "cpos" main,sub (physical compaction cursor) |
 *           "applied" index,term | "members" blob
 *   "lease" key = lease id u64be, value = opaque record
 *
 * Encoded key ("kv" key):
 *   short user key (len <= short_max = maxkeysize - 25):
 *       key | 0x00 | main u64be | sub u64be
 *   long user key: key[0 .. short_max) | fnv1a64(key) be | 0x01 | main | sub
 * The tag byte always sits 17 bytes from the end. cmp_ekey orders by
 * (visible key bytes, then shorter first, short before long, hash, rev),
 * which agrees with full-key byte order everywhere except inside a group
 * of long keys sharing their first short_max bytes; such a group is
 * contiguous and the iterator re-sorts it by full key (full keys are in the
 * value). Hash collisions only interleave records inside a group, so they
 * are harmless: every reader checks the full key.
 */
#ifndef KV_STORAGE_MVCC_INTERNAL_H
#define KV_STORAGE_MVCC_INTERNAL_H

#include <lmdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "storage/mvcc.h"

#define MVCC_REC_HDR 25
#define MVCC_F_TOMB 1u
#define MVCC_F_LONG 2u
#define MVCC_FORMAT 1u
#define MVCC_EKEY_MAX 512

struct mvcc {
	MDB_env *env;
	MDB_dbi dbi_kv, dbi_rev, dbi_meta, dbi_lease;
	char *dir;
	size_t short_max; /* longest user key stored whole in the LMDB key */
	size_t pagesize;
	uint64_t map_size, quota;
	unsigned max_txn_ops;
	bool check_leases;
	bool writemap;

	/* Owner view; with a write txn open it includes its changes. */
	MDB_txn *wtxn;
	MDB_cursor *wcur; /* "kv" cursor of wtxn, for point lookups */
	int64_t rev;
	int64_t compact_rev;
	int64_t cpos_main, cpos_sub;
	uint64_t applied_index, applied_term;
	/* Committed values, restored on abort. */
	int64_t c_rev, c_compact_rev, c_cpos_main, c_cpos_sub;
	uint64_t c_applied_index, c_applied_term;

	/* Per-request revision bookkeeping (etcd storeTxnWrite). */
	int64_t begin_rev;
	int64_t nchanges;

	/* Space accounting for the open write txn. */
	uint64_t used_at_begin; /* bytes in use when it began */
	uint64_t txn_est;       /* estimated bytes dirtied since */
	uint64_t hw_begin;      /* file high-water mark when it began */
	/* With MDB_WRITEMAP: bytes of data.mdb known to have disk blocks
	 * (posix_fallocate'd), so writes through the map never meet a hole
	 * on a full disk (SIGBUS). Kept ahead of the high-water mark. */
	uint64_t allocated;
	bool free_counted;
	bool want_grow;

	int failed; /* sticky: first fatal error, 0 if none */
	int fail_after;
	bool collide; /* test hook: every long key hashes to 0 */

	pthread_mutex_t lock; /* readers vs map growth */
	pthread_cond_t idle;  /* signalled when readers drops to 0 */
	int readers;
};

struct mvcc_read {
	struct mvcc *m;
	MDB_txn *txn;
	MDB_cursor *cur; /* "kv" cursor for point lookups */
	int64_t rev;
	int64_t compact_rev;
};

int mvcc_from_mdb(int rc);
int mvcc_read_meta(MDB_txn *txn, MDB_dbi meta, int64_t *rev,
		   int64_t *compact, uint64_t *index, uint64_t *term);

#endif

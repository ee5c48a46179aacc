/* apply.c — kvd's replicated state machine: raft entries (kvdpb
 * RequestBatch) applied to storage/mvcc inside one long-lived LMDB write
 * transaction. See kvraft/apply.h and kvraft/statemachine.h.
 *
 * Crash safety of the long write transaction. The applied index is written
 * in the same transaction as the effects, and a commit only ever happens
 * between entries, so the store always holds whole entries up to its
 * applied index. When a request needs map growth (KV_EAGAIN) in the middle
 * of an entry, committing there would store half an entry under the
 * previous applied index (a restart would apply its first half twice).
 * Instead the transaction is aborted, the entries applied since the last
 * commit are replayed from the copies kept in a->pend (quietly: their
 * results were delivered already), committed, and the entry is applied
 * again from its start in a fresh transaction with a bigger map. Results
 * are delivered only once an entry is complete.
 *
 * Entries at or below the stored applied index are skipped: after a
 * restart the node replays the WAL from durable_index() + 1, and the store
 * may already hold later (committed, unsynced) entries.
 */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "kvraft/apply.h"
#include "kvraft/lessor.h"

#define MOD "apply"

/* Revisions removed per physical compaction step (etcd 3.4's default
 * --experimental-compaction-batch-limit). */
#define DEFAULT_COMPACT_BATCH 1000
/* Keys read per page while looking for a revoked lease's keys. */
#define LEASE_SCAN_PAGE 1000
/* Fresh transactions tried for one entry before giving up. */
#define MAX_GROW_ATTEMPTS 4

/* The lease record kept in the store until the lessor issue defines its
 * own: granted TTL and remaining TTL (checkpoints), int64 little-endian. */
#define LEASE_REC_LEN 16
/* One alarm in the alarm record: member id, type (u64 LE each). */
#define ALARM_REC_LEN 16

struct pend {
	uint64_t index, term;
	uint8_t *buf; /* NULL for a noop entry */
	size_t len;
};

struct alarm {
	uint64_t member;
	int type; /* Etcdserverpb__AlarmType */
};

struct alarms {
	struct alarm *v;
	size_t n, cap;
};

struct kv_apply {
	struct kvraft_sm sm;
	struct kv_apply_hooks hooks;
	struct mvcc *m;
	char *dir;
	struct mvcc_options mopts;
	uint64_t self, cluster_id;
	size_t compact_batch;
	uint64_t durable;
	/* Entries applied since the last commit, for replay. */
	struct pend *pend;
	size_t n_pend, cap_pend, pend_bytes;
	/* Results of the entry being applied; everything in arena. */
	struct mvcc_arena arena;
	struct kv_result *res;
	size_t n_res, cap_res;
	/* Replicated alarms: a cache of the record stored in the write txn
	 * (reloaded after an abort, a restore, an open). */
	struct alarms alarms;
	/* Leases and their keys: rebuilt from the store whenever the alarm
	 * cache is (kvraft/lessor.h). */
	struct kv_lessor *lessor;
	/* The write txn was begun at the start of the current entry. */
	bool fresh;
	/* A write in this entry failed locally with KV_EFULL. */
	bool hit_full;
	/* Sticky: the first fatal error; everything fails with it after. */
	int failed;
};

/* ---- small helpers ---------------------------------------------------- */

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static bool nospace(const struct kv_apply *a)
{
	for (size_t i = 0; i < a->alarms.n; i++)
		if (a->alarms.v[i].type == ETCDSERVERPB__ALARM_TYPE__NOSPACE)
			return true;
	return false;
}

/* Loads the alarm record (owner's view) into the cache. */
static int alarms_load(struct kv_apply *a)
{
	struct mvcc_arena ar = MVCC_ARENA_INIT;
	const void *rec;
	size_t len;
	int rc;

	a->alarms.n = 0;
	rc = mvcc_lease_get(a->m, KV_APPLY_ALARM_RECORD, &ar, &rec, &len);
	if (rc == KV_ENOTFOUND) {
		rc = 0;
		goto out;
	}
	if (rc != 0)
		goto out;
	size_t n = len / ALARM_REC_LEN;
	if (n > a->alarms.cap) {
		struct alarm *v = realloc(a->alarms.v, n * sizeof(*v));
		if (v == NULL) {
			rc = KV_ENOMEM;
			goto out;
		}
		a->alarms.v = v;
		a->alarms.cap = n;
	}
	for (size_t i = 0; i < n; i++) {
		const uint8_t *p = (const uint8_t *)rec + i * ALARM_REC_LEN;
		a->alarms.v[i].member = get_le64(p);
		a->alarms.v[i].type = (int)get_le64(p + 8);
	}
	a->alarms.n = n;
out:
	mvcc_arena_free(&ar);
	return rc;
}

/* Writes the cache into the write txn (deleted when empty). */
static int alarms_save(struct kv_apply *a)
{
	uint8_t *buf;
	int rc;

	if (a->alarms.n == 0) {
		rc = mvcc_lease_del(a->m, KV_APPLY_ALARM_RECORD);
		return rc == KV_ENOTFOUND ? 0 : rc;
	}
	buf = malloc(a->alarms.n * ALARM_REC_LEN);
	if (buf == NULL)
		return KV_ENOMEM;
	for (size_t i = 0; i < a->alarms.n; i++) {
		put_le64(buf + i * ALARM_REC_LEN, a->alarms.v[i].member);
		put_le64(buf + i * ALARM_REC_LEN + 8,
			 (uint64_t)a->alarms.v[i].type);
	}
	rc = mvcc_lease_put(a->m, KV_APPLY_ALARM_RECORD, buf,
			    a->alarms.n * ALARM_REC_LEN);
	free(buf);
	return rc;
}

static struct kv_header_ids ids_of(const struct kv_apply *a, uint64_t term)
{
	struct kv_header_ids ids = { a->cluster_id, a->self, term };

	return ids;
}

static int ensure_write(struct kv_apply *a)
{
	int rc;

	if (mvcc_in_write(a->m))
		return 0;
	rc = mvcc_begin_write(a->m);
	if (rc == 0)
		a->fresh = true;
	return rc;
}

static void pend_clear(struct kv_apply *a)
{
	for (size_t i = 0; i < a->n_pend; i++)
		free(a->pend[i].buf);
	a->n_pend = 0;
	a->pend_bytes = 0;
}

static int pend_push(struct kv_apply *a, uint64_t index, uint64_t term,
		     const void *buf, size_t len)
{
	struct pend *p;

	if (a->n_pend == a->cap_pend) {
		size_t cap = a->cap_pend ? a->cap_pend * 2 : 16;
		p = realloc(a->pend, cap * sizeof(*p));
		if (p == NULL)
			return KV_ENOMEM;
		a->pend = p;
		a->cap_pend = cap;
	}
	p = &a->pend[a->n_pend];
	p->index = index;
	p->term = term;
	p->len = len;
	p->buf = NULL;
	if (buf != NULL) {
		p->buf = malloc(len ? len : 1);
		if (p->buf == NULL)
			return KV_ENOMEM;
		memcpy(p->buf, buf, len);
	}
	a->n_pend++;
	a->pend_bytes += len;
	return 0;
}

static struct kv_result *res_push(struct kv_apply *a)
{
	if (a->n_res == a->cap_res) {
		size_t cap = a->cap_res ? a->cap_res * 2 : 16;
		struct kv_result *v = realloc(a->res, cap * sizeof(*v));
		if (v == NULL)
			return NULL;
		a->res = v;
		a->cap_res = cap;
	}
	struct kv_result *r = &a->res[a->n_res++];
	memset(r, 0, sizeof(*r));
	return r;
}

/* ---- leases (minimal; the lessor issue owns the full logic) ----------- */

static bool txn_has_put(const Etcdserverpb__TxnRequest *t);

static bool ops_have_put(Etcdserverpb__RequestOp *const *ops, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (ops[i]->request_case ==
		    ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT)
			return true;
		if (ops[i]->request_case ==
			    ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN &&
		    txn_has_put(ops[i]->request_txn))
			return true;
	}
	return false;
}

/* etcd's applierV3Capped refuses a Txn with any Put under NOSPACE. */
static bool txn_has_put(const Etcdserverpb__TxnRequest *t)
{
	return ops_have_put(t->success, t->n_success) ||
	       ops_have_put(t->failure, t->n_failure);
}

static bool lease_exists(struct kv_apply *a, int64_t id, int *rc)
{
	const void *rec;
	size_t len;

	*rc = mvcc_lease_get(a->m, id, &a->arena, &rec, &len);
	if (*rc == KV_ENOTFOUND) {
		*rc = 0;
		return false;
	}
	return *rc == 0;
}

/* The lessor's copy of the lease table and key index, rebuilt from the
 * store (owner's view): every lease record, then every key with a lease. */
static int lessor_load(struct kv_apply *a)
{
	struct mvcc_arena ar = MVCC_ARENA_INIT;
	static const uint8_t nul = 0;
	const uint8_t *start = &nul;
	size_t start_len = 1;
	int64_t *ids;
	size_t n;
	int rc;

	kv_lessor_load_begin(a->lessor);
	rc = mvcc_lease_list(a->m, &ar, &ids, &n);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		const void *rec;
		size_t len;
		if (ids[i] == KV_APPLY_ALARM_RECORD)
			continue;
		rc = mvcc_lease_get(a->m, ids[i], &ar, &rec, &len);
		if (rc != 0)
			break;
		if (len < LEASE_REC_LEN) {
			rc = KV_ECORRUPT;
			break;
		}
		rc = kv_lessor_grant(a->lessor, ids[i],
				     (int64_t)get_le64(rec),
				     (int64_t)get_le64((const uint8_t *)rec +
						       8));
	}
	while (rc == 0) {
		struct mvcc_range_req rq = { 0 };
		struct mvcc_range_res rs;
		rq.key = start;
		rq.key_len = start_len;
		rq.range_end = &nul;
		rq.range_end_len = 1;
		rq.limit = LEASE_SCAN_PAGE;
		rq.keys_only = true;
		rc = mvcc_range(a->m, NULL, &rq, &ar, &rs);
		for (size_t i = 0; rc == 0 && i < rs.n_kvs; i++)
			if (rs.kvs[i].lease != 0)
				rc = kv_lessor_attach(a->lessor, rs.kvs[i].key,
						      rs.kvs[i].key_len,
						      rs.kvs[i].lease);
		if (rc != 0 || !rs.more || rs.n_kvs == 0)
			break;
		/* Resume after the last key: last + "\0". */
		const struct mvcc_kv *last = &rs.kvs[rs.n_kvs - 1];
		uint8_t *k = mvcc_arena_alloc(&ar, last->key_len + 1);
		if (k == NULL) {
			rc = KV_ENOMEM;
			break;
		}
		memcpy(k, last->key, last->key_len);
		k[last->key_len] = 0;
		start = k;
		start_len = last->key_len + 1;
	}
	kv_lessor_load_end(a->lessor);
	mvcc_arena_free(&ar);
	return rc;
}

/* The keys of one lease as found in the store; the key bytes live in
 * ar (the apply arena inside an entry, the caller's outside). */
struct lease_keys {
	struct kv_apply *a;
	struct mvcc_arena *ar;
	struct mvcc_kv *v; /* malloc'd array */
	size_t n, cap;
	int64_t id;
};

/* Keeps key if its current revision still carries the lease. */
static int collect_key(void *arg, const void *key, size_t len)
{
	struct lease_keys *lk = arg;
	struct mvcc_range_req rq = { 0 };
	struct mvcc_range_res rs;
	int rc;

	rq.key = key;
	rq.key_len = len;
	rq.keys_only = true;
	rc = mvcc_range(lk->a->m, NULL, &rq, lk->ar, &rs);
	if (rc != 0)
		return rc;
	if (rs.n_kvs != 1 || rs.kvs[0].lease != lk->id)
		return 0;
	if (lk->n == lk->cap) {
		size_t cap = lk->cap ? lk->cap * 2 : 16;
		void *v = realloc(lk->v, cap * sizeof(*lk->v));
		if (v == NULL)
			return KV_ENOMEM;
		lk->v = v;
		lk->cap = cap;
	}
	lk->v[lk->n++] = rs.kvs[0];
	return 0;
}

static int cmp_kv_key(const void *x, const void *y)
{
	const struct mvcc_kv *a = x, *b = y;
	size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
	int c = memcmp(a->key, b->key, n);
	if (c != 0)
		return c;
	return (a->key_len > b->key_len) - (a->key_len < b->key_len);
}

int kv_apply_lease_keys(struct kv_apply *a, int64_t id,
			struct mvcc_arena *ar, struct mvcc_kv **kvs,
			size_t *n)
{
	struct lease_keys lk = { a, ar, NULL, 0, 0, id };
	int rc = kv_lessor_keys(a->lessor, id, collect_key, &lk);

	*kvs = NULL;
	*n = 0;
	if (rc == 0 && lk.n > 0) {
		qsort(lk.v, lk.n, sizeof(*lk.v), cmp_kv_key);
		*kvs = mvcc_arena_alloc(ar, lk.n * sizeof(**kvs));
		if (*kvs == NULL)
			rc = KV_ENOMEM;
		else
			memcpy(*kvs, lk.v, lk.n * sizeof(**kvs));
		*n = *kvs != NULL ? lk.n : 0;
	}
	free(lk.v);
	return rc;
}

/* Deletes every key attached to lease id, in key order and one revision
 * (none if there are none), then the lease. KV_ENOTFOUND if there is no
 * such lease. Only the lease's own key entries are examined. */
static int revoke_lease(struct kv_apply *a, int64_t id)
{
	struct lease_keys lk = { a, &a->arena, NULL, 0, 0, id };
	struct mvcc_request_op *ops = NULL;
	int rc;

	if (id == KV_APPLY_ALARM_RECORD)
		return KV_ENOTFOUND;
	if (!lease_exists(a, id, &rc))
		return rc != 0 ? rc : KV_ENOTFOUND;
	rc = kv_lessor_keys(a->lessor, id, collect_key, &lk);
	if (rc != 0)
		goto out;
	if (lk.n > 0) {
		qsort(lk.v, lk.n, sizeof(*lk.v), cmp_kv_key);
		ops = calloc(lk.n, sizeof(*ops));
		if (ops == NULL) {
			rc = KV_ENOMEM;
			goto out;
		}
		for (size_t i = 0; i < lk.n; i++) {
			ops[i].type = MVCC_OP_DELETE_RANGE;
			ops[i].u.delete_range.key = lk.v[i].key;
			ops[i].u.delete_range.key_len = lk.v[i].key_len;
		}
		struct mvcc_txn_req t = { NULL, 0, ops, lk.n, NULL, 0 };
		struct mvcc_txn_res tr;
		rc = mvcc_txn(a->m, &t, &a->arena, &tr);
		if (rc != 0)
			goto out;
	}
	rc = mvcc_lease_del(a->m, id);
	if (rc == 0)
		kv_lessor_revoke(a->lessor, id);
out:
	free(ops);
	free(lk.v);
	return rc;
}

/* Moves the keys a successful Put / Txn wrote between leases. */
static int attach_put(struct kv_apply *a, const Etcdserverpb__PutRequest *p)
{
	if (p->ignore_lease)
		return 0;
	return kv_lessor_attach(a->lessor, p->key.data, p->key.len, p->lease);
}

static int attach_txn(struct kv_apply *a, const Etcdserverpb__TxnRequest *t,
		      const Etcdserverpb__TxnResponse *r)
{
	Etcdserverpb__RequestOp **ops = r->succeeded ? t->success : t->failure;
	size_t n = r->succeeded ? t->n_success : t->n_failure;
	int rc = 0;

	for (size_t i = 0; i < n && rc == 0; i++) {
		if (ops[i]->request_case ==
		    ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT)
			rc = attach_put(a, ops[i]->request_put);
		else if (ops[i]->request_case ==
				 ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN &&
			 i < r->n_responses &&
			 r->responses[i]->response_case ==
				 ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN)
			rc = attach_txn(a, ops[i]->request_txn,
					r->responses[i]->response_txn);
	}
	return rc;
}

/* ---- one request --------------------------------------------------------- */

static Etcdserverpb__AlarmMember *alarm_msg(struct kv_apply *a,
					    const struct alarm *al)
{
	Etcdserverpb__AlarmMember *m = mvcc_arena_alloc(&a->arena,
							sizeof(*m));

	if (m == NULL)
		return NULL;
	*m = (Etcdserverpb__AlarmMember)ETCDSERVERPB__ALARM_MEMBER__INIT;
	m->memberid = al->member;
	m->alarm = (Etcdserverpb__AlarmType)al->type;
	return m;
}

/* etcd's applierV3backend.Alarm over the in-memory alarm list. 3.4 sends
 * no header in alarm replies. */
static int apply_alarm(struct kv_apply *a, const Etcdserverpb__AlarmRequest *r,
		       Etcdserverpb__AlarmResponse **out)
{
	Etcdserverpb__AlarmResponse *resp;
	struct alarm want = { r->memberid, (int)r->alarm };
	size_t found = SIZE_MAX;

	resp = mvcc_arena_alloc(&a->arena, sizeof(*resp));
	if (resp == NULL)
		return KV_ENOMEM;
	*resp = (Etcdserverpb__AlarmResponse)ETCDSERVERPB__ALARM_RESPONSE__INIT;
	resp->alarms = mvcc_arena_alloc(&a->arena, (a->alarms.n + 1) *
							   sizeof(void *));
	if (resp->alarms == NULL)
		return KV_ENOMEM;
	for (size_t i = 0; i < a->alarms.n; i++)
		if (a->alarms.v[i].member == want.member &&
		    a->alarms.v[i].type == want.type)
			found = i;
	switch (r->action) {
	case ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__GET:
		for (size_t i = 0; i < a->alarms.n; i++) {
			if (want.type != ETCDSERVERPB__ALARM_TYPE__NONE &&
			    a->alarms.v[i].type != want.type)
				continue;
			resp->alarms[resp->n_alarms] =
				alarm_msg(a, &a->alarms.v[i]);
			if (resp->alarms[resp->n_alarms++] == NULL)
				return KV_ENOMEM;
		}
		break;
	case ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE:
		if (found == SIZE_MAX) {
			if (a->alarms.n == a->alarms.cap) {
				size_t cap = a->alarms.cap ? a->alarms.cap * 2
							   : 4;
				void *v = realloc(a->alarms.v,
						  cap * sizeof(struct alarm));
				if (v == NULL)
					return KV_ENOMEM;
				a->alarms.v = v;
				a->alarms.cap = cap;
			}
			a->alarms.v[a->alarms.n++] = want;
			int rc = alarms_save(a);
			if (rc != 0)
				return rc;
			KV_WARN(MOD, "alarm activated",
				"member=%" PRIx64 " alarm=%d", want.member,
				want.type);
		}
		resp->alarms[0] = alarm_msg(a, &want);
		if (resp->alarms[0] == NULL)
			return KV_ENOMEM;
		resp->n_alarms = 1;
		break;
	case ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE:
		if (found == SIZE_MAX)
			break;
		a->alarms.v[found] = a->alarms.v[--a->alarms.n];
		int rc = alarms_save(a);
		if (rc != 0)
			return rc;
		resp->alarms[0] = alarm_msg(a, &want);
		if (resp->alarms[0] == NULL)
			return KV_ENOMEM;
		resp->n_alarms = 1;
		KV_INFO(MOD, "alarm deactivated", "member=%" PRIx64 " alarm=%d",
			want.member, want.type);
		break;
	default:
		break;
	}
	*out = resp;
	return 0;
}

static int apply_lease_grant(struct kv_apply *a,
			     const Etcdserverpb__LeaseGrantRequest *r,
			     const struct kv_header_ids *ids,
			     Etcdserverpb__LeaseGrantResponse **out,
			     struct kv_status *st)
{
	Etcdserverpb__LeaseGrantResponse *resp;
	uint8_t rec[LEASE_REC_LEN];
	int rc;

	if (r->id == KV_APPLY_ALARM_RECORD) {
		*st = kv_statuses[KV_ST_LEASE_EXIST];
		return KV_EEXIST;
	}
	if (r->id == 0) {
		/* The proposer picks the ID; never 0 in an entry. */
		*st = (struct kv_status){ KV_GRPC_INVALID_ARGUMENT,
					  "etcdserver: lease ID is not set" };
		return KV_EINVAL;
	}
	if (kv_validate_lease_grant(r, st) != 0)
		return KV_ERANGE;
	if (lease_exists(a, r->id, &rc)) {
		*st = kv_statuses[KV_ST_LEASE_EXIST];
		return KV_EEXIST;
	}
	if (rc != 0)
		return rc;
	put_le64(rec, (uint64_t)r->ttl);
	put_le64(rec + 8, 0); /* no checkpoint yet */
	rc = mvcc_lease_put(a->m, r->id, rec, sizeof(rec));
	if (rc == 0)
		rc = kv_lessor_grant(a->lessor, r->id, r->ttl, 0);
	if (rc != 0)
		return rc;
	resp = mvcc_arena_alloc(&a->arena, sizeof(*resp));
	if (resp == NULL)
		return KV_ENOMEM;
	*resp = (Etcdserverpb__LeaseGrantResponse)
		ETCDSERVERPB__LEASE_GRANT_RESPONSE__INIT;
	resp->header = kv_translate_header(ids, mvcc_revision(a->m),
					   &a->arena);
	if (resp->header == NULL)
		return KV_ENOMEM;
	resp->id = r->id;
	resp->ttl = r->ttl;
	*out = resp;
	return 0;
}

static int apply_lease_checkpoint(struct kv_apply *a,
				  const Etcdserverpb__LeaseCheckpointRequest *r)
{
	int rc = 0;

	for (size_t i = 0; i < r->n_checkpoints && rc == 0; i++) {
		const Etcdserverpb__LeaseCheckpoint *c = r->checkpoints[i];
		const void *old;
		size_t len;
		uint8_t rec[LEASE_REC_LEN];
		rc = mvcc_lease_get(a->m, c->id, &a->arena, &old, &len);
		if (rc == KV_ENOTFOUND) {
			rc = 0;
			continue;
		}
		if (rc != 0)
			break;
		memset(rec, 0, sizeof(rec));
		if (len >= 8)
			memcpy(rec, old, 8);
		put_le64(rec + 8, (uint64_t)c->remaining_ttl);
		rc = mvcc_lease_put(a->m, c->id, rec, sizeof(rec));
		if (rc == 0)
			kv_lessor_checkpoint(a->lessor, c->id,
					     c->remaining_ttl);
	}
	return rc;
}

/* Applies one request into res. Returns 0 when res holds the outcome
 * (success or a request error), KV_EAGAIN when the entry must be retried
 * in a fresh, possibly bigger transaction, or a fatal KV_E*. */
static int apply_one(struct kv_apply *a, const Kvdpb__InternalRequest *r,
		     const struct kv_header_ids *ids, struct kv_result *res)
{
	const ProtobufCMessage *resp = NULL;
	struct kv_status st = kv_statuses[KV_ST_OK];
	bool capped = nospace(a);
	int rc = 0;

	res->request_id = r->id;
	res->type = r->request_case;
	switch (r->request_case) {
	case KVDPB__INTERNAL_REQUEST__REQUEST_PUT: {
		Etcdserverpb__PutResponse *p = NULL;
		if (capped)
			goto refuse;
		if (r->put->lease == KV_APPLY_ALARM_RECORD) {
			st = kv_statuses[KV_ST_LEASE_NOT_FOUND];
			rc = KV_ENOTFOUND;
			break;
		}
		rc = kv_translate_put(a->m, r->put, ids, &a->arena, &p, &st);
		if (rc == 0)
			rc = attach_put(a, r->put);
		resp = (const ProtobufCMessage *)p;
		break;
	}
	case KVDPB__INTERNAL_REQUEST__REQUEST_DELETE_RANGE: {
		Etcdserverpb__DeleteRangeResponse *p = NULL;
		rc = kv_translate_delete_range(a->m, r->delete_range, ids,
					       &a->arena, &p, &st);
		resp = (const ProtobufCMessage *)p;
		break;
	}
	case KVDPB__INTERNAL_REQUEST__REQUEST_TXN: {
		Etcdserverpb__TxnResponse *p = NULL;
		if (capped && txn_has_put(r->txn))
			goto refuse;
		rc = kv_translate_txn(a->m, r->txn, ids, &a->arena, &p, &st);
		if (rc == 0)
			rc = attach_txn(a, r->txn, p);
		resp = (const ProtobufCMessage *)p;
		break;
	}
	case KVDPB__INTERNAL_REQUEST__REQUEST_COMPACTION: {
		Etcdserverpb__CompactionResponse *p = NULL;
		rc = kv_translate_compaction(a->m, r->compaction, ids,
					     &a->arena, &p, &st);
		resp = (const ProtobufCMessage *)p;
		break;
	}
	case KVDPB__INTERNAL_REQUEST__REQUEST_LEASE_GRANT: {
		Etcdserverpb__LeaseGrantResponse *p = NULL;
		if (capped)
			goto refuse;
		rc = apply_lease_grant(a, r->lease_grant, ids, &p, &st);
		resp = (const ProtobufCMessage *)p;
		break;
	}
	case KVDPB__INTERNAL_REQUEST__REQUEST_LEASE_REVOKE: {
		Etcdserverpb__LeaseRevokeResponse *p;
		rc = revoke_lease(a, r->lease_revoke->id);
		if (rc == KV_ENOTFOUND) {
			st = kv_statuses[KV_ST_LEASE_NOT_FOUND];
			break;
		}
		if (rc != 0)
			break;
		p = mvcc_arena_alloc(&a->arena, sizeof(*p));
		if (p == NULL) {
			rc = KV_ENOMEM;
			break;
		}
		*p = (Etcdserverpb__LeaseRevokeResponse)
			ETCDSERVERPB__LEASE_REVOKE_RESPONSE__INIT;
		p->header = kv_translate_header(ids, mvcc_revision(a->m),
						&a->arena);
		if (p->header == NULL)
			rc = KV_ENOMEM;
		resp = (const ProtobufCMessage *)p;
		break;
	}
	case KVDPB__INTERNAL_REQUEST__REQUEST_LEASE_EXPIRE:
		for (size_t i = 0; i < r->lease_expire->n_ids && rc == 0; i++) {
			rc = revoke_lease(a, r->lease_expire->ids[i]);
			if (rc == KV_ENOTFOUND)
				rc = 0;
		}
		break;
	case KVDPB__INTERNAL_REQUEST__REQUEST_LEASE_CHECKPOINT: {
		Etcdserverpb__LeaseCheckpointResponse *p;
		rc = apply_lease_checkpoint(a, r->lease_checkpoint);
		if (rc != 0)
			break;
		p = mvcc_arena_alloc(&a->arena, sizeof(*p));
		if (p == NULL) {
			rc = KV_ENOMEM;
			break;
		}
		*p = (Etcdserverpb__LeaseCheckpointResponse)
			ETCDSERVERPB__LEASE_CHECKPOINT_RESPONSE__INIT;
		p->header = kv_translate_header(ids, mvcc_revision(a->m),
						&a->arena);
		if (p->header == NULL)
			rc = KV_ENOMEM;
		resp = (const ProtobufCMessage *)p;
		break;
	}
	case KVDPB__INTERNAL_REQUEST__REQUEST_ALARM: {
		Etcdserverpb__AlarmResponse *p = NULL;
		rc = apply_alarm(a, r->alarm, &p);
		resp = (const ProtobufCMessage *)p;
		break;
	}
	case KVDPB__INTERNAL_REQUEST__REQUEST_CLUSTER_INIT:
		/* Cluster identity is stored by the cluster issue. */
		break;
	default:
		st = (struct kv_status){ KV_GRPC_INVALID_ARGUMENT,
					 "etcdserver: request is not set" };
		rc = KV_EINVAL;
		break;
	}
	if (rc == KV_EAGAIN)
		return rc;
	if (rc == KV_EFULL) {
		/* At the quota. A sticky LMDB map-full closed the txn. */
		if (!mvcc_in_write(a->m))
			return KV_EFAILSTOP;
		/* Retry once where only this entry counts against the map,
		 * so the outcome depends on the committed state alone. */
		if (!a->fresh)
			return KV_EAGAIN;
		a->hit_full = true;
		st = kv_statuses[KV_ST_NO_SPACE];
	} else if (kv_translate_is_fatal(rc)) {
		return rc;
	}
	res->err = rc;
	res->status = rc == 0 ? kv_statuses[KV_ST_OK] : st;
	res->response = rc == 0 ? resp : NULL;
	res->revision = mvcc_revision(a->m);
	return 0;
refuse:
	res->err = KV_EFULL;
	res->status = kv_statuses[KV_ST_NO_SPACE];
	res->revision = mvcc_revision(a->m);
	return 0;
}

/* ---- entries ----------------------------------------------------------------- */

/* Applies one entry (buf NULL: noop) in the open (or a new) write txn.
 * quiet: a replay; no hooks. */
static int apply_entry(struct kv_apply *a, uint64_t index, uint64_t term,
		       const void *buf, size_t len, bool quiet)
{
	Kvdpb__RequestBatch *b = NULL;
	struct kv_header_ids ids = ids_of(a, term);
	int rc;

	a->n_res = 0;
	a->hit_full = false;
	if (buf != NULL) {
		b = kvdpb__request_batch__unpack(NULL, len, buf);
		if (b == NULL && !quiet)
			/* Same bytes on every member: all skip it alike. */
			KV_ERROR(MOD, "undecodable entry applied as a noop",
				 "index=%" PRIu64 " len=%zu", index, len);
	}
	rc = ensure_write(a);
	if (rc != 0)
		goto out;
	for (size_t i = 0; b != NULL && i < b->n_requests; i++) {
		const Kvdpb__InternalRequest *r = b->requests[i];
		struct kv_result tmp;
		struct kv_result *res = &tmp;
		if (r->member_id == a->self && !quiet) {
			res = res_push(a);
			if (res == NULL) {
				rc = KV_ENOMEM;
				goto out;
			}
		}
		memset(res, 0, sizeof(*res));
		rc = apply_one(a, r, &ids, res);
		if (rc != 0)
			goto out;
	}
	rc = mvcc_set_applied(a->m, index, term);
	if (rc != 0)
		goto out;
	a->fresh = false;
	if (quiet)
		goto out;
	for (size_t i = 0; i < a->n_res; i++)
		if (a->hooks.on_result != NULL)
			a->hooks.on_result(a->hooks.data, a->res[i].request_id,
					   &a->res[i]);
	if (a->hit_full && a->hooks.on_nospace != NULL)
		a->hooks.on_nospace(a->hooks.data);
	if (a->hooks.on_applied != NULL)
		a->hooks.on_applied(a->hooks.data, index, mvcc_revision(a->m));
out:
	a->n_res = 0;
	mvcc_arena_reset(&a->arena);
	if (b != NULL)
		kvdpb__request_batch__free_unpacked(b, NULL);
	return rc;
}

static int commit(struct kv_apply *a, bool sync)
{
	uint64_t index, term;
	int rc;

	if (a->failed != 0)
		return a->failed;
	mvcc_get_applied(a->m, &index, &term);
	if (!mvcc_in_write(a->m)) {
		if (!sync || a->durable >= index)
			return 0;
		/* Earlier commits were not synced: sync them now. */
		rc = mvcc_begin_write(a->m);
		if (rc != 0)
			return rc;
	}
	rc = mvcc_commit(a->m, sync);
	if (rc != 0) {
		KV_ERROR(MOD, "commit failed", "err=%s", kv_errname(rc));
		a->failed = rc;
		return rc;
	}
	pend_clear(a);
	if (sync)
		a->durable = index;
	return 0;
}

/* Mid-entry map growth: throw the txn away, replay the entries since the
 * last commit, commit them (an entry boundary) and begin a fresh txn. */
static int regrow(struct kv_apply *a)
{
	int rc;

	KV_INFO(MOD, "write txn restarted for map growth or quota",
		"replayed_entries=%zu", a->n_pend);
	mvcc_abort(a->m);
	rc = alarms_load(a);
	if (rc == 0)
		rc = lessor_load(a);
	if (rc == 0)
		rc = mvcc_begin_write(a->m);
	a->fresh = true;
	for (size_t i = 0; rc == 0 && i < a->n_pend; i++) {
		const struct pend *p = &a->pend[i];
		rc = apply_entry(a, p->index, p->term, p->buf, p->len, true);
		if (rc == KV_EAGAIN) {
			/* They fitted before in a map no bigger. */
			KV_ERROR(MOD, "replay after map growth failed",
				 "index=%" PRIu64, p->index);
			rc = KV_EINTERNAL;
		}
	}
	if (rc == 0)
		rc = commit(a, false);
	if (rc == 0)
		rc = mvcc_begin_write(a->m);
	a->fresh = true;
	return rc;
}

static int apply_retry(struct kv_apply *a, uint64_t index, uint64_t term,
		       const void *buf, size_t len)
{
	uint64_t applied, aterm;
	int rc;

	if (a->failed != 0)
		return a->failed;
	mvcc_get_applied(a->m, &applied, &aterm);
	if (index <= applied)
		return 0; /* already in the store */
	if (!mvcc_in_write(a->m))
		a->fresh = true;
	for (int attempt = 0;; attempt++) {
		rc = apply_entry(a, index, term, buf, len, false);
		if (rc != KV_EAGAIN)
			break;
		if (attempt == MAX_GROW_ATTEMPTS) {
			KV_ERROR(MOD, "entry does not fit and the map cannot "
				 "grow (read handles open?)",
				 "index=%" PRIu64 " len=%zu", index, len);
			rc = KV_EBUSY;
			break;
		}
		rc = regrow(a);
		if (rc != 0)
			break;
	}
	if (rc == 0)
		rc = pend_push(a, index, term, buf, len);
	if (rc != 0) {
		KV_ERROR(MOD, "apply failed; stopping", "index=%" PRIu64
			 " err=%s", index, kv_errname(rc));
		a->failed = rc;
	}
	return rc;
}

/* ---- struct kvraft_sm ------------------------------------------------------- */

static int sm_apply(void *data, uint64_t index, uint64_t term,
		    const void *buf, size_t len)
{
	static const uint8_t empty;

	return apply_retry(data, index, term, buf != NULL ? buf : &empty, len);
}

static int sm_apply_noop(void *data, uint64_t index, uint64_t term)
{
	return apply_retry(data, index, term, NULL, 0);
}

static void sm_applied(void *data, uint64_t *index, uint64_t *term)
{
	struct kv_apply *a = data;

	*index = 0;
	*term = 0;
	if (a->m != NULL)
		mvcc_get_applied(a->m, index, term);
}

static uint64_t sm_durable_index(void *data)
{
	struct kv_apply *a = data;

	return a->durable;
}

static int sm_prepare_snapshot(void *data, uint64_t *index, uint64_t *term)
{
	struct kv_apply *a = data;
	int rc = commit(a, true);

	sm_applied(a, index, term);
	return rc;
}

static int sm_write_snapshot(void *data, const char *path, uint64_t *index,
			     uint64_t *term, uint64_t *size, uint32_t *crc)
{
	struct kv_apply *a = data;
	struct mvcc_checkpoint_info info;
	int rc;

	if (a->m == NULL)
		return a->failed;
	rc = mvcc_checkpoint(a->m, path, &info);
	if (rc != 0)
		return rc;
	*index = info.applied_index;
	*term = info.applied_term;
	*size = info.size;
	*crc = info.crc32c;
	return 0;
}

static int rm_one(const char *p, const struct stat *sb, int flag,
		  struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static void rmrf(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* The leader's checksum, when the file came without its "<path>.crc". */
static int write_sum(const char *path, uint32_t crc)
{
	char name[4200];
	struct stat sb;
	FILE *f;

	if (snprintf(name, sizeof(name), "%s.crc", path) >= (int)sizeof(name))
		return KV_EINVAL;
	if (access(name, F_OK) == 0 || crc == 0)
		return 0;
	if (stat(path, &sb) != 0)
		return KV_ECORRUPT;
	f = fopen(name, "we");
	if (f == NULL)
		return KV_EIO;
	fprintf(f, "crc32c=%08" PRIx32 " size=%llu\n", crc,
		(unsigned long long)sb.st_size);
	return fclose(f) == 0 ? 0 : KV_EIO;
}

static int sm_restore(void *data, const char *path, uint64_t index,
		      uint64_t term, uint32_t crc)
{
	struct kv_apply *a = data;
	struct mvcc_checkpoint_info info;
	char *stage = NULL;
	uint64_t ri, rt;
	int rc;

	/* Make what is applied durable: if the swap fails we go on from it. */
	rc = commit(a, true);
	if (rc != 0)
		return rc;
	rc = write_sum(path, crc);
	if (rc != 0)
		goto out;
	/* Verify fully (checksum, it opens, its index/term) in a staging
	 * dir before touching the live store. */
	stage = malloc(strlen(a->dir) + 16);
	if (stage == NULL) {
		rc = KV_ENOMEM;
		goto out;
	}
	sprintf(stage, "%s.restore", a->dir);
	rmrf(stage);
	rc = mvcc_restore(path, stage, &info);
	rmrf(stage);
	if (rc != 0)
		goto out;
	if (info.applied_index != index || info.applied_term != term ||
	    (crc != 0 && info.crc32c != crc)) {
		KV_ERROR(MOD, "snapshot does not match its metadata",
			 "index=%" PRIu64 "/%" PRIu64 " term=%" PRIu64
			 "/%" PRIu64 " crc=%08" PRIx32 "/%08" PRIx32,
			 info.applied_index, index, info.applied_term, term,
			 info.crc32c, crc);
		rc = KV_ECORRUPT;
		goto out;
	}
	mvcc_close(a->m);
	a->m = NULL;
	rc = mvcc_restore(path, a->dir, &info);
	int orc = mvcc_open(a->dir, &a->mopts, &a->m);
	if (orc != 0) {
		KV_ERROR(MOD, "cannot reopen the store after restore",
			 "dir=%s err=%s", a->dir, kv_errname(orc));
		a->m = NULL;
		a->failed = orc;
		rc = orc;
		goto out;
	}
	if (rc != 0)
		goto out; /* the old store, reopened */
	mvcc_get_applied(a->m, &ri, &rt);
	if (ri != index || rt != term) {
		a->failed = KV_ECORRUPT; /* verified a moment ago: the disk lies */
		rc = KV_ECORRUPT;
		goto out;
	}
	pend_clear(a);
	rc = alarms_load(a);
	if (rc == 0)
		rc = lessor_load(a);
	if (rc != 0)
		goto out;
	a->durable = index;
	if (a->hooks.on_restored != NULL)
		a->hooks.on_restored(a->hooks.data, a->m);
out:
	free(stage);
	return rc;
}

/* ---- public ------------------------------------------------------------------ */

int kv_apply_new(const struct kv_apply_options *opts,
		 const struct kv_apply_hooks *hooks, struct kv_apply **out)
{
	struct kv_apply *a;
	uint64_t term;
	int rc;

	*out = NULL;
	if (opts == NULL || opts->dir == NULL)
		return KV_EINVAL;
	a = calloc(1, sizeof(*a));
	if (a == NULL)
		return KV_ENOMEM;
	a->dir = strdup(opts->dir);
	if (a->dir == NULL) {
		rc = KV_ENOMEM;
		goto err_free;
	}
	if (opts->mvcc != NULL)
		a->mopts = *opts->mvcc;
	a->mopts.check_leases = true;
	a->mopts.max_txn_ops = 1u << 30;
	if (hooks != NULL)
		a->hooks = *hooks;
	a->self = opts->self_member_id;
	a->cluster_id = opts->cluster_id;
	a->compact_batch = opts->compact_batch ? opts->compact_batch
					       : DEFAULT_COMPACT_BATCH;
	rc = kv_lessor_new(&a->lessor);
	if (rc != 0)
		goto err_free;
	rc = mvcc_open(a->dir, &a->mopts, &a->m);
	if (rc != 0)
		goto err_free;
	/* What the file holds (maybe committed without sync before a
	 * crash) is synced now, so durable_index() is the applied index. */
	rc = mvcc_begin_write(a->m);
	if (rc == 0)
		rc = mvcc_commit(a->m, true);
	if (rc == 0)
		rc = alarms_load(a);
	if (rc == 0)
		rc = lessor_load(a);
	if (rc != 0)
		goto err_close;
	mvcc_get_applied(a->m, &a->durable, &term);
	a->sm.data = a;
	a->sm.apply = sm_apply;
	a->sm.apply_noop = sm_apply_noop;
	a->sm.applied = sm_applied;
	a->sm.durable_index = sm_durable_index;
	a->sm.prepare_snapshot = sm_prepare_snapshot;
	a->sm.write_snapshot = sm_write_snapshot;
	a->sm.restore = sm_restore;
	*out = a;
	return 0;
err_close:
	mvcc_close(a->m);
	free(a->alarms.v);
err_free:
	kv_lessor_free(a->lessor);
	free(a->dir);
	free(a);
	return rc;
}

void kv_apply_close(struct kv_apply *a)
{
	if (a == NULL)
		return;
	mvcc_close(a->m);
	pend_clear(a);
	free(a->pend);
	free(a->res);
	free(a->alarms.v);
	kv_lessor_free(a->lessor);
	mvcc_arena_free(&a->arena);
	free(a->dir);
	free(a);
}

struct kv_lessor *kv_apply_lessor(struct kv_apply *a)
{
	return a->lessor;
}

struct kvraft_sm *kv_apply_sm(struct kv_apply *a)
{
	return &a->sm;
}

struct mvcc *kv_apply_mvcc(struct kv_apply *a)
{
	return a->m;
}

int kv_apply_commit(struct kv_apply *a, bool sync)
{
	return commit(a, sync);
}

size_t kv_apply_pending_bytes(const struct kv_apply *a)
{
	return a->pend_bytes;
}

int kv_apply_compact_step(struct kv_apply *a, bool *done)
{
	int rc;

	*done = false;
	if (a->failed != 0)
		return a->failed;
	if (mvcc_compact_revision(a->m) <= 0) {
		*done = true;
		return 0;
	}
	rc = ensure_write(a);
	if (rc != 0)
		return rc;
	rc = mvcc_compact_step(a->m, a->compact_batch, done);
	if ((rc == KV_EAGAIN || rc == KV_EFULL) && mvcc_in_write(a->m)) {
		/* Progress is saved: commit (an entry boundary) and go on in
		 * a new txn next time; the map grows at its begin. */
		*done = false;
		rc = commit(a, false);
	}
	if (rc != 0)
		a->failed = rc;
	return rc;
}

bool kv_apply_nospace(const struct kv_apply *a)
{
	return nospace(a);
}

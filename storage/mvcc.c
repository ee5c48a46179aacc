/* MVCC store: etcd v3.4's revisions, ranges, put/delete, txn and compaction
 * over LMDB. Layout and key encoding: mvcc_internal.h. Behaviour follows
 * etcd's mvcc/kvstore_txn.go and etcdserver/apply.go; comments name the
 * etcd function a piece mirrors where the behaviour is subtle. */
#include "storage/mvcc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/crc32c.h"
#include "common/errors.h"
#include "common/log.h"
#include "mvcc_internal.h"

#define MOD "mvcc"

static const char MSG_EMPTY_KEY[] = "etcdserver: key is not provided";
static const char MSG_KEY_NOT_FOUND[] = "etcdserver: key not found";
static const char MSG_VALUE_PROVIDED[] = "etcdserver: value is provided";
static const char MSG_LEASE_PROVIDED[] = "etcdserver: lease is provided";
static const char MSG_TOO_MANY_OPS[] =
	"etcdserver: too many operations in txn request";
static const char MSG_DUP_KEY[] =
	"etcdserver: duplicate key given in txn request";
static const char MSG_COMPACTED[] =
	"etcdserver: mvcc: required revision has been compacted";
static const char MSG_FUTURE[] =
	"etcdserver: mvcc: required revision is a future revision";
static const char MSG_NOSPACE[] = "etcdserver: mvcc: database space exceeded";
static const char MSG_LEASE_NOT_FOUND[] =
	"etcdserver: requested lease not found";

const char *mvcc_errmsg(int err)
{
	switch (err) {
	case KV_ECOMPACTED:
		return MSG_COMPACTED;
	case KV_EFUTUREREV:
		return MSG_FUTURE;
	case KV_EFULL:
		return MSG_NOSPACE;
	default:
		return kv_strerror(err);
	}
}

int mvcc_from_mdb(int rc)
{
	switch (rc) {
	case 0:
		return 0;
	case MDB_NOTFOUND:
		return KV_ENOTFOUND;
	case MDB_MAP_FULL:
		return KV_EFULL;
	case MDB_TXN_FULL:
		return KV_ETOOBIG;
	case MDB_READERS_FULL:
		return KV_EBUSY;
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_INVALID:
	case MDB_VERSION_MISMATCH:
	case MDB_INCOMPATIBLE:
	case MDB_BAD_VALSIZE:
		return KV_ECORRUPT;
	case ENOMEM:
		return KV_ENOMEM;
	default:
		if (rc > 0)
			return kv_from_errno(rc);
		return KV_EIO;
	}
}

/* ---- encodings -------------------------------------------------------- */

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

static uint64_t get_be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t fnv1a64(const uint8_t *p, size_t n)
{
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 1099511628211ull;
	}
	return h;
}

static int keycmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
	size_t n = al < bl ? al : bl;
	int c = n ? memcmp(a, b, n) : 0;

	if (c != 0)
		return c;
	return al < bl ? -1 : al > bl ? 1 : 0;
}

/* The "kv" comparator; see mvcc_internal.h. */
static int cmp_ekey(const MDB_val *a, const MDB_val *b)
{
	const uint8_t *pa = a->mv_data, *pb = b->mv_data;
	size_t la = a->mv_size, lb = b->mv_size;
	unsigned ta = pa[la - 17], tb = pb[lb - 17];
	size_t na = la - 17 - (ta ? 8 : 0), nb = lb - 17 - (tb ? 8 : 0);
	size_t n = na < nb ? na : nb;
	int c = n ? memcmp(pa, pb, n) : 0;

	if (c != 0)
		return c;
	if (na != nb)
		return na < nb ? -1 : 1;
	if (ta != tb)
		return ta < tb ? -1 : 1;
	if (ta) {
		c = memcmp(pa + na, pb + nb, 8);
		if (c != 0)
			return c;
	}
	return memcmp(pa + la - 16, pb + lb - 16, 16);
}

static bool is_long(const struct mvcc *m, size_t klen)
{
	return klen > m->short_max;
}

/* Encodes (key, main, sub). zero_hash: for a long key, put 0 in the hash
 * field (the start of its prefix group, for seeks). Returns the length. */
static size_t ekey_encode(const struct mvcc *m, const uint8_t *key,
			  size_t klen, uint64_t main, uint64_t sub,
			  bool zero_hash, uint8_t *out)
{
	size_t n;

	if (!is_long(m, klen)) {
		memcpy(out, key, klen);
		n = klen;
		out[n++] = 0;
	} else {
		memcpy(out, key, m->short_max);
		n = m->short_max;
		put_be64(out + n, zero_hash || m->collide ? 0
						      : fnv1a64(key, klen));
		n += 8;
		out[n++] = 1;
	}
	put_be64(out + n, main);
	put_be64(out + n + 8, sub);
	return n + 16;
}

static void rev_encode(uint8_t out[16], int64_t main, int64_t sub)
{
	put_be64(out, (uint64_t)main);
	put_be64(out + 8, (uint64_t)sub);
}

/* One decoded "kv" record. Pointers are into LMDB's memory: valid until
 * the next write in the txn or its end. */
struct rec {
	const uint8_t *key;
	size_t klen;
	int64_t main, sub;
	unsigned flags;
	int64_t create, version, lease;
	const uint8_t *val;
	size_t vlen;
	const uint8_t *ekey;
	size_t eklen;
};

static int rec_decode(const MDB_val *k, const MDB_val *v, struct rec *r)
{
	const uint8_t *kp = k->mv_data, *vp = v->mv_data;
	size_t kl = k->mv_size, vl = v->mv_size;

	if (kl < 17 || vl < MVCC_REC_HDR)
		return KV_ECORRUPT;
	unsigned tag = kp[kl - 17];
	r->flags = vp[0];
	r->create = (int64_t)kv_load_u64le(vp + 1);
	r->version = (int64_t)kv_load_u64le(vp + 9);
	r->lease = (int64_t)kv_load_u64le(vp + 17);
	r->main = (int64_t)get_be64(kp + kl - 16);
	r->sub = (int64_t)get_be64(kp + kl - 8);
	r->ekey = kp;
	r->eklen = kl;
	size_t off = MVCC_REC_HDR;
	if (tag == 1) {
		if (!(r->flags & MVCC_F_LONG) || vl < off + 4 || kl < 25)
			return KV_ECORRUPT;
		uint32_t fl = kv_load_u32le(vp + off);
		off += 4;
		if (vl - off < fl)
			return KV_ECORRUPT;
		r->key = vp + off;
		r->klen = fl;
		off += fl;
	} else if (tag == 0) {
		if (r->flags & MVCC_F_LONG)
			return KV_ECORRUPT;
		r->key = kp;
		r->klen = kl - 17;
	} else {
		return KV_ECORRUPT;
	}
	r->val = vp + off;
	r->vlen = vl - off;
	return 0;
}

static bool rec_live(const struct rec *r)
{
	return !(r->flags & MVCC_F_TOMB);
}

/* ---- record vectors --------------------------------------------------- */

struct recvec {
	struct rec *v;
	size_t n, cap;
};

static int recvec_push(struct recvec *rv, const struct rec *r)
{
	if (rv->n == rv->cap) {
		size_t cap = rv->cap ? rv->cap * 2 : 16;
		struct rec *nv = realloc(rv->v, cap * sizeof(*nv));
		if (nv == NULL)
			return KV_ENOMEM;
		rv->v = nv;
		rv->cap = cap;
	}
	rv->v[rv->n++] = *r;
	return 0;
}

static void recvec_free(struct recvec *rv)
{
	free(rv->v);
	rv->v = NULL;
	rv->n = rv->cap = 0;
}

/* ---- key iterator: yields every record of one full key at a time, keys in
 * byte order, records in revision order. ---------------------------------- */

struct kiter {
	const struct mvcc *m;
	MDB_cursor *cur;
	bool valid;
	MDB_val k, v;
	struct recvec run;  /* records of a short key */
	struct recvec grp;  /* a long-key group, sorted by (key, rev) */
	size_t gi;
	const struct rec *out;
	size_t nout;
};

static int kiter_open(struct kiter *it, const struct mvcc *m, MDB_txn *txn)
{
	memset(it, 0, sizeof(*it));
	it->m = m;
	return mvcc_from_mdb(mdb_cursor_open(txn, m->dbi_kv, &it->cur));
}

static void kiter_close(struct kiter *it)
{
	if (it->cur != NULL)
		mdb_cursor_close(it->cur);
	recvec_free(&it->run);
	recvec_free(&it->grp);
}

static int kiter_step(struct kiter *it, MDB_cursor_op op)
{
	int rc = mdb_cursor_get(it->cur, &it->k, &it->v, op);

	if (rc == MDB_NOTFOUND) {
		it->valid = false;
		return 0;
	}
	if (rc != 0)
		return mvcc_from_mdb(rc);
	it->valid = true;
	return 0;
}

/* Positions before the first record whose key may be >= key (the start of
 * its long-key group for long keys); klen 0 = the first record. */
static int kiter_seek(struct kiter *it, const uint8_t *key, size_t klen)
{
	uint8_t ek[MVCC_EKEY_MAX];

	it->grp.n = 0;
	it->gi = 0;
	if (klen == 0)
		return kiter_step(it, MDB_FIRST);
	it->k.mv_data = ek;
	it->k.mv_size = ekey_encode(it->m, key, klen, 0, 0, true, ek);
	return kiter_step(it, MDB_SET_RANGE);
}

static int rec_sort_cmp(const void *pa, const void *pb)
{
	const struct rec *a = pa, *b = pb;
	int c = keycmp(a->key, a->klen, b->key, b->klen);

	if (c != 0)
		return c;
	if (a->main != b->main)
		return a->main < b->main ? -1 : 1;
	return a->sub < b->sub ? -1 : a->sub > b->sub;
}

static bool same_key(const struct rec *a, const struct rec *b)
{
	return a->klen == b->klen && memcmp(a->key, b->key, a->klen) == 0;
}

/* Returns 1 with it->out/nout set, 0 at the end, or an error. */
static int kiter_next(struct kiter *it)
{
	struct rec r;
	int rc;

	if (it->gi < it->grp.n) {
		size_t s = it->gi;
		while (it->gi < it->grp.n &&
		       same_key(&it->grp.v[it->gi], &it->grp.v[s]))
			it->gi++;
		it->out = it->grp.v + s;
		it->nout = it->gi - s;
		return 1;
	}
	if (!it->valid)
		return 0;
	rc = rec_decode(&it->k, &it->v, &r);
	if (rc != 0)
		return rc;
	const uint8_t *kp = it->k.mv_data;
	if (kp[it->k.mv_size - 17] == 0) {
		it->run.n = 0;
		for (;;) {
			rc = recvec_push(&it->run, &r);
			if (rc == 0)
				rc = kiter_step(it, MDB_NEXT);
			if (rc != 0)
				return rc;
			if (!it->valid)
				break;
			struct rec r2;
			rc = rec_decode(&it->k, &it->v, &r2);
			if (rc != 0)
				return rc;
			if ((r2.flags & MVCC_F_LONG) || !same_key(&r, &r2))
				break;
			r = r2;
		}
		it->out = it->run.v;
		it->nout = it->run.n;
		return 1;
	}
	/* A long-key group: every record whose first short_max bytes match. */
	uint8_t prefix[MVCC_EKEY_MAX];
	size_t pl = it->m->short_max;
	memcpy(prefix, kp, pl);
	it->grp.n = 0;
	it->gi = 0;
	for (;;) {
		rc = recvec_push(&it->grp, &r);
		if (rc == 0)
			rc = kiter_step(it, MDB_NEXT);
		if (rc != 0)
			return rc;
		if (!it->valid)
			break;
		const uint8_t *k2 = it->k.mv_data;
		if (it->k.mv_size < 25 || k2[it->k.mv_size - 17] != 1 ||
		    memcmp(k2, prefix, pl) != 0)
			break;
		rc = rec_decode(&it->k, &it->v, &r);
		if (rc != 0)
			return rc;
	}
	qsort(it->grp.v, it->grp.n, sizeof(struct rec), rec_sort_cmp);
	return kiter_next(it);
}

/* A txn and its reusable "kv" cursor. */
struct tctx {
	MDB_txn *txn;
	MDB_cursor *cur;
};

/* Index of the newest record with main <= at, or -1. */
static ssize_t newest_at(const struct rec *recs, size_t n, int64_t at)
{
	ssize_t best = -1;

	for (size_t i = 0; i < n && recs[i].main <= at; i++)
		best = (ssize_t)i;
	return best;
}

/* The newest record of key with main <= at (tombstones included), using
 * cur, a "kv" cursor of the txn (kept per txn: opening one costs a
 * malloc). */
static int get_at(const struct mvcc *m, MDB_cursor *cur, const uint8_t *key,
		  size_t klen, int64_t at, struct rec *out, bool *found)
{
	uint8_t ek[MVCC_EKEY_MAX];
	MDB_val k, v;
	int rc;

	*found = false;
	k.mv_data = ek;
	k.mv_size = ekey_encode(m, key, klen, (uint64_t)at, UINT64_MAX, false,
				ek);
	size_t hl = k.mv_size - 16; /* the part naming key (and hash) */
	rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	if (rc == MDB_NOTFOUND)
		rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
	else if (rc == 0)
		rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
	while (rc == 0) {
		if (k.mv_size != hl + 16 || memcmp(k.mv_data, ek, hl) != 0)
			break;
		rc = rec_decode(&k, &v, out);
		if (rc != 0)
			return rc;
		if (out->main <= at && out->klen == klen &&
		    memcmp(out->key, key, klen) == 0) {
			*found = true;
			break;
		}
		rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
	}
	return rc == MDB_NOTFOUND ? 0 : mvcc_from_mdb(rc);
}

static bool range_is_all_from(const uint8_t *end, size_t elen)
{
	return elen == 1 && end[0] == 0;
}

/* Live keys at revision at in [key, end) (etcd conventions for end). Keeps
 * the first keep_max records in out, counts all in *count. */
static int scan_live(const struct mvcc *m, const struct tctx *tc,
		     const uint8_t *key,
		     size_t klen, const uint8_t *end, size_t elen, int64_t at,
		     size_t keep_max, struct recvec *out, int64_t *count)
{
	struct kiter it;
	int rc;

	*count = 0;
	if (elen == 0) {
		struct rec r;
		bool found;
		rc = get_at(m, tc->cur, key, klen, at, &r, &found);
		if (rc == 0 && found && rec_live(&r)) {
			*count = 1;
			if (keep_max > 0)
				rc = recvec_push(out, &r);
		}
		return rc;
	}
	bool to_end = range_is_all_from(end, elen);
	if (!to_end && keycmp(key, klen, end, elen) >= 0)
		return 0;
	rc = kiter_open(&it, m, tc->txn);
	if (rc == 0)
		rc = kiter_seek(&it, key, klen);
	while (rc == 0) {
		rc = kiter_next(&it);
		if (rc <= 0)
			break;
		rc = 0;
		const struct rec *r0 = &it.out[0];
		if (keycmp(r0->key, r0->klen, key, klen) < 0)
			continue;
		if (!to_end && keycmp(r0->key, r0->klen, end, elen) >= 0)
			break;
		ssize_t i = newest_at(it.out, it.nout, at);
		if (i < 0 || !rec_live(&it.out[i]))
			continue;
		if ((size_t)*count < keep_max)
			rc = recvec_push(out, &it.out[i]);
		(*count)++;
	}
	kiter_close(&it);
	return rc;
}

/* ---- arena copies ----------------------------------------------------- */

static void *dup_bytes(struct mvcc_arena *a, const uint8_t *p, size_t n,
		       int *err)
{
	if (n == 0)
		return NULL;
	void *d = mvcc_arena_alloc(a, n);
	if (d == NULL) {
		*err = KV_ENOMEM;
		return NULL;
	}
	memcpy(d, p, n);
	return d;
}

static int kv_copy(struct mvcc_arena *a, const struct rec *r, bool keys_only,
		   struct mvcc_kv *out)
{
	int err = 0;

	out->key = dup_bytes(a, r->key, r->klen, &err);
	out->key_len = r->klen;
	if (keys_only) {
		out->value = NULL;
		out->value_len = 0;
	} else {
		out->value = dup_bytes(a, r->val, r->vlen, &err);
		out->value_len = r->vlen;
	}
	out->create_revision = r->create;
	out->mod_revision = r->main;
	out->version = r->version;
	out->lease = r->lease;
	return err;
}

/* ---- sticky failure, space accounting, writes ------------------------- */

static void restore_committed(struct mvcc *m)
{
	m->rev = m->c_rev;
	m->compact_rev = m->c_compact_rev;
	m->cpos_main = m->c_cpos_main;
	m->cpos_sub = m->c_cpos_sub;
	m->applied_index = m->c_applied_index;
	m->applied_term = m->c_applied_term;
}

static int fail(struct mvcc *m, int err)
{
	if (m->failed == 0) {
		m->failed = err;
		KV_ERROR(MOD, "write failed; store is now fail-stop",
			 "err=%s dir=%s", kv_errname(err), m->dir);
	}
	if (m->wtxn != NULL) {
		mdb_txn_abort(m->wtxn);
		m->wtxn = NULL;
		m->wcur = NULL;
		restore_committed(m);
	}
	return err;
}

static int wput(struct mvcc *m, MDB_dbi dbi, MDB_val *k, MDB_val *v,
		unsigned flags)
{
	if (m->fail_after > 0 && --m->fail_after == 0)
		return fail(m, KV_EIO);
	int rc = mdb_put(m->wtxn, dbi, k, v, flags);
	if (rc != 0)
		return fail(m, mvcc_from_mdb(rc));
	return 0;
}

static int wdel(struct mvcc *m, MDB_dbi dbi, MDB_val *k)
{
	if (m->fail_after > 0 && --m->fail_after == 0)
		return fail(m, KV_EIO);
	int rc = mdb_del(m->wtxn, dbi, k, NULL);
	if (rc != 0)
		return fail(m, mvcc_from_mdb(rc));
	return 0;
}

static uint64_t count_free_pages(struct mvcc *m)
{
	MDB_cursor *cur;
	MDB_val k, v;
	uint64_t n = 0;

	if (mdb_cursor_open(m->wtxn, 0, &cur) != 0)
		return 0;
	int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	while (rc == 0) {
		/* An IDL: its first size_t is the page count. */
		if (v.mv_size >= sizeof(size_t)) {
			size_t cnt;
			memcpy(&cnt, v.mv_data, sizeof(cnt));
			n += cnt;
		}
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(cur);
	return n;
}

/* Disk blocks kept allocated beyond what a write txn may touch: covers
 * what the per-op estimate does not see (copy-on-write path copies,
 * freelist pages and the meta page at commit). Blocks are allocated in
 * ALLOC_CHUNK steps when the disk has room, else exactly. */
#define ALLOC_MARGIN (2ull << 20)
#define ALLOC_CHUNK (16ull << 20)

/* With MDB_WRITEMAP, LMDB writes dirty pages through a shared mapping of a
 * sparse data.mdb; on a full disk the kernel answers a write to a hole
 * with SIGBUS, not ENOSPC. So the file gets its blocks (posix_fallocate)
 * before LMDB may touch them: up to want bytes, never past the map. No
 * space is fail-stop with a message naming the file. */
static int ensure_allocated(struct mvcc *m, uint64_t want)
{
	if (!m->writemap || want <= m->allocated)
		return 0;
	int fd;
	if (mdb_env_get_fd(m->env, &fd) != 0)
		return KV_EINVAL;
	const uint64_t mib = 1u << 20;
	uint64_t exact = (want + mib - 1) & ~(mib - 1);
	uint64_t chunk = m->allocated + ALLOC_CHUNK;
	if (chunk < exact)
		chunk = exact;
	if (exact > m->map_size)
		exact = m->map_size;
	if (chunk > m->map_size)
		chunk = m->map_size;
	if (chunk <= m->allocated)
		return 0; /* the whole map has its blocks */
	int err = posix_fallocate(fd, (off_t)m->allocated,
				  (off_t)(chunk - m->allocated));
	uint64_t target = chunk;
	if (err == ENOSPC && exact < chunk && exact > m->allocated) {
		/* no room for a chunk ahead: what this txn needs, if any */
		err = posix_fallocate(fd, (off_t)m->allocated,
				      (off_t)(exact - m->allocated));
		target = exact;
	}
	if (err != 0) {
		KV_ERROR(MOD, err == ENOSPC ? "no space left on device for the "
					      "store; stopping"
					    : "cannot allocate store file "
					      "blocks; stopping",
			 "file=%s/data.mdb from=%llu to=%llu err=%s", m->dir,
			 (unsigned long long)m->allocated,
			 (unsigned long long)target, strerror(err));
		m->failed = KV_EIO;
		return KV_EFAILSTOP;
	}
	m->allocated = target;
	return 0;
}

/* Checks that bytes more data fit in the map before anything is changed.
 * KV_EAGAIN: commit, begin (the map grows there) and retry; KV_EFULL: at
 * the quota. */
static int reserve(struct mvcc *m, uint64_t bytes)
{
	uint64_t need = bytes * 2 + 2 * m->pagesize;

	for (;;) {
		if (m->used_at_begin + m->txn_est + need <= m->map_size) {
			m->txn_est += need;
			return ensure_allocated(m, m->hw_begin + m->txn_est +
							   ALLOC_MARGIN);
		}
		if (m->free_counted)
			break;
		m->free_counted = true;
		uint64_t fr = count_free_pages(m) * m->pagesize;
		m->used_at_begin = fr < m->used_at_begin ?
					   m->used_at_begin - fr : 0;
	}
	m->want_grow = true;
	return m->map_size < m->quota ? KV_EAGAIN : KV_EFULL;
}

static int check_writable(struct mvcc *m)
{
	if (m->failed != 0)
		return KV_EFAILSTOP;
	if (m->wtxn == NULL)
		return KV_EINVAL;
	return 0;
}

/* After a write request: errors that changed nothing pass through; any
 * other one (a failed read, no memory half-way) may have left the txn
 * partly applied, so it is fail-stop like an LMDB write error. */
static int settle(struct mvcc *m, int rc)
{
	switch (rc) {
	case 0:
	case KV_EINVAL:
	case KV_ENOTFOUND:
	case KV_ECOMPACTED:
	case KV_EFUTUREREV:
	case KV_EAGAIN:
	case KV_EFULL:
	case KV_EFAILSTOP:
		return rc;
	default:
		return m->failed ? rc : fail(m, rc);
	}
}

static size_t rec_size(const struct mvcc *m, size_t klen, size_t vlen)
{
	return MVCC_REC_HDR + vlen + (is_long(m, klen) ? 4 + klen : 0);
}

/* Writes one record at (begin_rev + 1, nchanges++) and its "rev" entry. */
static int write_rec(struct mvcc *m, const uint8_t *key, size_t klen,
		     unsigned flags, int64_t create, int64_t version,
		     int64_t lease, const uint8_t *val, size_t vlen)
{
	uint8_t ek[MVCC_EKEY_MAX], rk[16];
	int64_t main = m->begin_rev + 1, sub = m->nchanges;
	MDB_val k, v;
	int rc;

	if (is_long(m, klen))
		flags |= MVCC_F_LONG;
	k.mv_data = ek;
	k.mv_size = ekey_encode(m, key, klen, (uint64_t)main, (uint64_t)sub,
				false, ek);
	v.mv_data = NULL;
	v.mv_size = rec_size(m, klen, vlen);
	rc = wput(m, m->dbi_kv, &k, &v, MDB_RESERVE);
	if (rc != 0)
		return rc;
	uint8_t *p = v.mv_data;
	p[0] = (uint8_t)flags;
	kv_store_u64le(p + 1, (uint64_t)create);
	kv_store_u64le(p + 9, (uint64_t)version);
	kv_store_u64le(p + 17, (uint64_t)lease);
	p += MVCC_REC_HDR;
	if (flags & MVCC_F_LONG) {
		kv_store_u32le(p, (uint32_t)klen);
		memcpy(p + 4, key, klen);
		p += 4 + klen;
	}
	if (vlen)
		memcpy(p, val, vlen);
	rev_encode(rk, main, sub);
	MDB_val rkv = { 16, rk };
	MDB_val ekv = { k.mv_size, ek };
	rc = wput(m, m->dbi_rev, &rkv, &ekv, MDB_APPEND);
	if (rc != 0)
		return rc;
	m->nchanges++;
	return 0;
}

/* etcd storeTxnWrite: one request bumps the revision at most once. */
static void req_begin(struct mvcc *m)
{
	m->begin_rev = m->rev;
	m->nchanges = 0;
}

static void req_end(struct mvcc *m)
{
	if (m->nchanges > 0)
		m->rev = m->begin_rev + 1;
	m->nchanges = 0;
}

static int64_t req_read_rev(const struct mvcc *m)
{
	return m->begin_rev + (m->nchanges > 0 ? 1 : 0);
}

/* ---- views ------------------------------------------------------------ */

struct view {
	struct tctx tc;
	int64_t rev;
	int64_t compact;
	bool tmp;
};

int mvcc_read_meta(MDB_txn *txn, MDB_dbi meta, int64_t *rev,
		   int64_t *compact, uint64_t *index, uint64_t *term)
{
	MDB_val k, v;
	int rc;

	k.mv_data = "rev";
	k.mv_size = 3;
	rc = mdb_get(txn, meta, &k, &v);
	if (rc == 0 && v.mv_size == 8)
		*rev = (int64_t)kv_load_u64le(v.mv_data);
	else if (rc == MDB_NOTFOUND)
		*rev = 1;
	else
		return rc == 0 ? KV_ECORRUPT : mvcc_from_mdb(rc);
	k.mv_data = "compact";
	k.mv_size = 7;
	rc = mdb_get(txn, meta, &k, &v);
	if (rc == 0 && v.mv_size == 8)
		*compact = (int64_t)kv_load_u64le(v.mv_data);
	else if (rc == MDB_NOTFOUND)
		*compact = -1;
	else
		return rc == 0 ? KV_ECORRUPT : mvcc_from_mdb(rc);
	if (index != NULL) {
		k.mv_data = "applied";
		k.mv_size = 7;
		rc = mdb_get(txn, meta, &k, &v);
		if (rc == 0 && v.mv_size == 16) {
			*index = kv_load_u64le(v.mv_data);
			*term = kv_load_u64le((const uint8_t *)v.mv_data + 8);
		} else if (rc == MDB_NOTFOUND) {
			*index = *term = 0;
		} else {
			return rc == 0 ? KV_ECORRUPT : mvcc_from_mdb(rc);
		}
	}
	return 0;
}

static int view_open(struct mvcc *m, struct mvcc_read *rd, struct view *v)
{
	memset(v, 0, sizeof(*v));
	if (rd != NULL) {
		v->tc.txn = rd->txn;
		v->tc.cur = rd->cur;
		v->rev = rd->rev;
		v->compact = rd->compact_rev;
		return 0;
	}
	if (m->wtxn != NULL) {
		v->tc.txn = m->wtxn;
		v->tc.cur = m->wcur;
		v->rev = m->rev;
		v->compact = m->compact_rev;
		return 0;
	}
	int rc = mdb_txn_begin(m->env, NULL, MDB_RDONLY, &v->tc.txn);
	if (rc == 0) {
		rc = mdb_cursor_open(v->tc.txn, m->dbi_kv, &v->tc.cur);
		if (rc != 0)
			mdb_txn_abort(v->tc.txn);
	}
	if (rc != 0) {
		v->tc.txn = NULL;
		return mvcc_from_mdb(rc);
	}
	v->tmp = true;
	v->rev = m->rev;
	v->compact = m->compact_rev;
	return 0;
}

static void view_close(struct view *v)
{
	if (v->tmp) {
		mdb_cursor_close(v->tc.cur);
		mdb_txn_abort(v->tc.txn);
	}
	v->tc.txn = NULL;
	v->tc.cur = NULL;
}

/* ---- range ------------------------------------------------------------ */

struct sort_ctx {
	enum mvcc_sort_target target;
	bool desc;
};

static int cmp_target(const struct rec *a, const struct rec *b,
		      enum mvcc_sort_target t)
{
	int64_t x, y;

	switch (t) {
	case MVCC_SORT_KEY:
		return keycmp(a->key, a->klen, b->key, b->klen);
	case MVCC_SORT_VALUE:
		return keycmp(a->val, a->vlen, b->val, b->vlen);
	case MVCC_SORT_VERSION:
		x = a->version;
		y = b->version;
		break;
	case MVCC_SORT_CREATE:
		x = a->create;
		y = b->create;
		break;
	case MVCC_SORT_MOD:
	default:
		x = a->main;
		y = b->main;
		break;
	}
	return x < y ? -1 : x > y;
}

/* Ties keep ascending key order in both directions (what etcd's
 * insertion sort gives for small results; documented deviation for large
 * ones, where Go's unstable sort leaves tie order unspecified). */
static void sort_recs(struct rec *v, size_t n, enum mvcc_sort_target t,
		      bool desc)
{
	/* Merge sort, stable, on an input already in key order. */
	if (n < 2)
		return;
	struct rec *tmp = malloc(n * sizeof(*tmp));
	if (tmp == NULL) {
		/* Insertion sort fallback: stable, no memory. */
		for (size_t i = 1; i < n; i++) {
			struct rec x = v[i];
			size_t j = i;
			while (j > 0) {
				int c = cmp_target(&v[j - 1], &x, t);
				if (desc ? c >= 0 : c <= 0)
					break;
				v[j] = v[j - 1];
				j--;
			}
			v[j] = x;
		}
		return;
	}
	for (size_t w = 1; w < n; w *= 2) {
		for (size_t lo = 0; lo < n; lo += 2 * w) {
			size_t mid = lo + w < n ? lo + w : n;
			size_t hi = lo + 2 * w < n ? lo + 2 * w : n;
			size_t i = lo, j = mid, o = lo;
			while (i < mid && j < hi) {
				int c = cmp_target(&v[j], &v[i], t);
				bool take_j = desc ? c > 0 : c < 0;
				tmp[o++] = take_j ? v[j++] : v[i++];
			}
			while (i < mid)
				tmp[o++] = v[i++];
			while (j < hi)
				tmp[o++] = v[j++];
		}
		memcpy(v, tmp, n * sizeof(*v));
	}
	free(tmp);
}

/* etcd applierV3backend.Range over mvcc rangeKeys, at a view whose current
 * revision is cur. */
static int do_range(const struct mvcc *m, const struct tctx *tc, int64_t cur,
		    int64_t compact, const struct mvcc_range_req *req,
		    struct mvcc_arena *a, struct mvcc_range_res *res)
{
	struct recvec rv = { 0 };
	int64_t count = 0;
	int rc;

	memset(res, 0, sizeof(*res));
	if (req->key_len == 0) {
		res->errmsg = MSG_EMPTY_KEY;
		return KV_EINVAL;
	}
	if (req->revision > cur) {
		res->errmsg = MSG_FUTURE;
		return KV_EFUTUREREV;
	}
	int64_t at = req->revision <= 0 ? cur : req->revision;
	if (at < compact) {
		res->errmsg = MSG_COMPACTED;
		return KV_ECOMPACTED;
	}
	bool filters = req->min_mod_revision != 0 ||
		       req->max_mod_revision != 0 ||
		       req->min_create_revision != 0 ||
		       req->max_create_revision != 0;
	enum mvcc_sort_order order = req->sort_order;
	if (req->sort_target != MVCC_SORT_KEY && order == MVCC_SORT_NONE)
		order = MVCC_SORT_ASCEND;
	bool fetch_all = req->sort_order != MVCC_SORT_NONE || filters;
	size_t keep = SIZE_MAX;
	if (req->count_only)
		keep = 0;
	else if (!fetch_all && req->limit > 0)
		keep = (uint64_t)req->limit + 1 < SIZE_MAX ?
			       (size_t)req->limit + 1 : SIZE_MAX;
	rc = scan_live(m, tc, req->key, req->key_len, req->range_end,
		       req->range_end_len, at, keep, &rv, &count);
	if (rc != 0)
		goto out;
	/* Filters prune after the fetch (count stays the unfiltered total). */
	if (filters) {
		size_t o = 0;
		for (size_t i = 0; i < rv.n; i++) {
			const struct rec *r = &rv.v[i];
			if (req->max_mod_revision != 0 &&
			    r->main > req->max_mod_revision)
				continue;
			if (req->min_mod_revision != 0 &&
			    r->main < req->min_mod_revision)
				continue;
			if (req->max_create_revision != 0 &&
			    r->create > req->max_create_revision)
				continue;
			if (req->min_create_revision != 0 &&
			    r->create < req->min_create_revision)
				continue;
			rv.v[o++] = *r;
		}
		rv.n = o;
	}
	if (order == MVCC_SORT_ASCEND || order == MVCC_SORT_DESCEND) {
		if (!(req->sort_target == MVCC_SORT_KEY &&
		      order == MVCC_SORT_ASCEND))
			sort_recs(rv.v, rv.n, req->sort_target,
				  order == MVCC_SORT_DESCEND);
	}
	size_t n = rv.n;
	if (req->limit > 0 && n > (uint64_t)req->limit) {
		n = (size_t)req->limit;
		res->more = true;
	}
	if (n > 0) {
		res->kvs = mvcc_arena_alloc(a, n * sizeof(struct mvcc_kv));
		if (res->kvs == NULL) {
			rc = KV_ENOMEM;
			goto out;
		}
		for (size_t i = 0; i < n && rc == 0; i++)
			rc = kv_copy(a, &rv.v[i], req->keys_only, &res->kvs[i]);
		if (rc != 0)
			goto out;
	}
	res->n_kvs = n;
	res->count = count;
	res->header_revision = cur;
out:
	recvec_free(&rv);
	return rc;
}

int mvcc_range(struct mvcc *m, struct mvcc_read *rd,
	       const struct mvcc_range_req *req, struct mvcc_arena *a,
	       struct mvcc_range_res *res)
{
	struct view v;
	int rc = view_open(m, rd, &v);

	if (rc != 0) {
		memset(res, 0, sizeof(*res));
		return rc;
	}
	rc = do_range(m, &v.tc, v.rev, v.compact, req, a, res);
	view_close(&v);
	return rc;
}

/* ---- put / delete ----------------------------------------------------- */

static int check_put_req(const struct mvcc_put_req *p, const char **msg)
{
	if (p->key_len == 0)
		*msg = MSG_EMPTY_KEY;
	else if (p->ignore_value && p->value_len != 0)
		*msg = MSG_VALUE_PROVIDED;
	else if (p->ignore_lease && p->lease != 0)
		*msg = MSG_LEASE_PROVIDED;
	else
		return 0;
	return KV_EINVAL;
}

static int lease_exists(struct mvcc *m, MDB_txn *txn, int64_t id,
			bool *exists)
{
	uint8_t kb[8];
	MDB_val k = { 8, kb }, v;

	put_be64(kb, (uint64_t)id);
	int rc = mdb_get(txn, m->dbi_lease, &k, &v);
	*exists = rc == 0;
	return rc == MDB_NOTFOUND ? 0 : mvcc_from_mdb(rc);
}

/* etcd applierV3backend.Put inside the open request. in_txn: the
 * ignore_* existence check already happened on the txn's read view. */
static int apply_put(struct mvcc *m, const struct mvcc_put_req *p,
		     bool in_txn, struct mvcc_arena *a,
		     struct mvcc_put_res *res)
{
	struct rec prev;
	bool found;
	uint8_t *saved = NULL;
	int rc;

	rc = get_at(m, m->wcur, p->key, p->key_len, INT64_MAX, &prev, &found);
	if (rc != 0)
		return rc;
	bool live = found && rec_live(&prev);
	if ((p->ignore_value || p->ignore_lease) && !live && !in_txn) {
		res->errmsg = MSG_KEY_NOT_FOUND;
		return KV_ENOTFOUND;
	}
	const uint8_t *val = p->value;
	size_t vlen = p->value_len;
	int64_t lease = p->lease;
	if (p->ignore_value) {
		/* Copy: the write below may move the page it lives in. */
		vlen = live ? prev.vlen : 0;
		if (vlen > 0) {
			saved = malloc(vlen);
			if (saved == NULL)
				return KV_ENOMEM;
			memcpy(saved, prev.val, vlen);
		}
		val = saved;
	}
	if (p->ignore_lease)
		lease = live ? prev.lease : 0;
	if (p->prev_kv && live) {
		res->prev_kv = mvcc_arena_alloc(a, sizeof(*res->prev_kv));
		if (res->prev_kv == NULL) {
			rc = KV_ENOMEM;
			goto out;
		}
		rc = kv_copy(a, &prev, false, res->prev_kv);
		if (rc != 0)
			goto out;
	}
	int64_t rev = m->begin_rev + 1;
	int64_t create = live ? prev.create : rev;
	int64_t version = live ? prev.version + 1 : 1;
	if (!in_txn) {
		rc = reserve(m, rec_size(m, p->key_len, vlen) + 64);
		if (rc != 0)
			goto out;
	}
	rc = write_rec(m, p->key, p->key_len, 0, create, version, lease, val,
		       vlen);
	if (rc != 0)
		goto out;
	res->header_revision = rev;
out:
	free(saved);
	return rc;
}

int mvcc_put(struct mvcc *m, const struct mvcc_put_req *req,
	     struct mvcc_arena *a, struct mvcc_put_res *res)
{
	int rc;

	memset(res, 0, sizeof(*res));
	rc = check_put_req(req, &res->errmsg);
	if (rc != 0)
		return rc;
	rc = check_writable(m);
	if (rc != 0)
		return rc;
	if (req->lease != 0 && m->check_leases) {
		bool ok;
		rc = lease_exists(m, m->wtxn, req->lease, &ok);
		if (rc != 0)
			return rc;
		if (!ok) {
			res->errmsg = MSG_LEASE_NOT_FOUND;
			return KV_ENOTFOUND;
		}
	}
	req_begin(m);
	rc = settle(m, apply_put(m, req, false, a, res));
	if (rc == KV_EFULL)
		res->errmsg = MSG_NOSPACE;
	if (m->failed == 0)
		req_end(m);
	return rc;
}

/* etcd applierV3backend.DeleteRange inside the open request. */
static int apply_delete(struct mvcc *m, const struct mvcc_delete_req *d,
			bool in_txn, struct mvcc_arena *a,
			struct mvcc_delete_res *res)
{
	struct recvec rv = { 0 };
	struct mvcc_kv *kvs = NULL;
	int64_t count;
	int rc;

	struct tctx tc = { m->wtxn, m->wcur };
	rc = scan_live(m, &tc, d->key, d->key_len, d->range_end,
		       d->range_end_len, INT64_MAX, SIZE_MAX, &rv, &count);
	if (rc != 0)
		goto out;
	if (rv.n == 0) {
		res->header_revision = req_read_rev(m);
		goto out;
	}
	/* Copy first: the keys are needed after writes move pages. */
	kvs = mvcc_arena_alloc(a, rv.n * sizeof(*kvs));
	if (kvs == NULL) {
		rc = KV_ENOMEM;
		goto out;
	}
	uint64_t bytes = 0;
	for (size_t i = 0; i < rv.n && rc == 0; i++) {
		rc = kv_copy(a, &rv.v[i], !d->prev_kv, &kvs[i]);
		bytes += rec_size(m, rv.v[i].klen, 0) + rv.v[i].eklen + 64;
	}
	if (rc != 0)
		goto out;
	if (!in_txn) {
		rc = reserve(m, bytes);
		if (rc != 0)
			goto out;
	}
	for (size_t i = 0; i < rv.n && rc == 0; i++)
		rc = write_rec(m, kvs[i].key, kvs[i].key_len, MVCC_F_TOMB, 0, 0,
			       0, NULL, 0);
	if (rc != 0)
		goto out;
	res->deleted = (int64_t)rv.n;
	res->header_revision = m->begin_rev + 1;
	if (d->prev_kv) {
		res->prev_kvs = kvs;
		res->n_prev_kvs = rv.n;
	}
out:
	recvec_free(&rv);
	return rc;
}

int mvcc_delete_range(struct mvcc *m, const struct mvcc_delete_req *req,
		      struct mvcc_arena *a, struct mvcc_delete_res *res)
{
	int rc;

	memset(res, 0, sizeof(*res));
	if (req->key_len == 0) {
		res->errmsg = MSG_EMPTY_KEY;
		return KV_EINVAL;
	}
	rc = check_writable(m);
	if (rc != 0)
		return rc;
	req_begin(m);
	rc = settle(m, apply_delete(m, req, false, a, res));
	if (rc == KV_EFULL)
		res->errmsg = MSG_NOSPACE;
	if (m->failed == 0)
		req_end(m);
	return rc;
}

/* ---- txn validation (etcd v3rpc checkTxnRequest / checkIntervals) ----- */

struct kref {
	const uint8_t *k;
	size_t l;
};

struct kset {
	struct kref *v;
	size_t n, cap;
};

struct ival {
	const uint8_t *b, *e;
	size_t bl, el; /* el == 0: a point */
};

struct iset {
	struct ival *v;
	size_t n, cap;
};

static int grow(void **v, size_t *cap, size_t n, size_t sz)
{
	if (n < *cap)
		return 0;
	size_t nc = *cap ? *cap * 2 : 8;
	void *nv = realloc(*v, nc * sz);
	if (nv == NULL)
		return KV_ENOMEM;
	*v = nv;
	*cap = nc;
	return 0;
}

static bool kset_has(const struct kset *s, const uint8_t *k, size_t l)
{
	for (size_t i = 0; i < s->n; i++)
		if (keycmp(s->v[i].k, s->v[i].l, k, l) == 0)
			return true;
	return false;
}

static int kset_add(struct kset *s, const uint8_t *k, size_t l)
{
	if (kset_has(s, k, l))
		return 0;
	if (grow((void **)&s->v, &s->cap, s->n, sizeof(*s->v)) != 0)
		return KV_ENOMEM;
	s->v[s->n++] = (struct kref){ k, l };
	return 0;
}

static int iset_add(struct iset *s, const struct ival *iv)
{
	if (grow((void **)&s->v, &s->cap, s->n, sizeof(*s->v)) != 0)
		return KV_ENOMEM;
	s->v[s->n++] = *iv;
	return 0;
}

/* adt.IntervalTree.Intersects(point k): [b, e) contains k, taking e
 * literally (so etcd's "\0" range_end is an empty interval here). */
static bool iset_hits(const struct iset *s, const uint8_t *k, size_t l)
{
	for (size_t i = 0; i < s->n; i++) {
		const struct ival *iv = &s->v[i];
		if (iv->el == 0) {
			if (keycmp(iv->b, iv->bl, k, l) == 0)
				return true;
		} else if (keycmp(iv->b, iv->bl, k, l) <= 0 &&
			   keycmp(k, l, iv->e, iv->el) < 0) {
			return true;
		}
	}
	return false;
}

static int check_intervals(const struct mvcc_request_op *ops, size_t n,
			   struct kset *puts, struct iset *dels)
{
	int rc = 0;

	for (size_t i = 0; i < n && rc == 0; i++) {
		if (ops[i].type != MVCC_OP_DELETE_RANGE)
			continue;
		const struct mvcc_delete_req *d = &ops[i].u.delete_range;
		struct ival iv = { d->key, d->range_end, d->key_len,
				   d->range_end_len };
		rc = iset_add(dels, &iv);
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (ops[i].type != MVCC_OP_TXN || ops[i].u.txn == NULL)
			continue;
		const struct mvcc_txn_req *t = ops[i].u.txn;
		struct kset pt = { 0 }, pe = { 0 };
		struct iset dt = { 0 }, de = { 0 };
		rc = check_intervals(t->success, t->n_success, &pt, &dt);
		if (rc == 0)
			rc = check_intervals(t->failure, t->n_failure, &pe, &de);
		for (size_t j = 0; j < pt.n && rc == 0; j++) {
			if (kset_has(puts, pt.v[j].k, pt.v[j].l) ||
			    iset_hits(dels, pt.v[j].k, pt.v[j].l))
				rc = KV_EEXIST;
			else
				rc = kset_add(puts, pt.v[j].k, pt.v[j].l);
		}
		for (size_t j = 0; j < pe.n && rc == 0; j++) {
			if ((kset_has(puts, pe.v[j].k, pe.v[j].l) &&
			     !kset_has(&pt, pe.v[j].k, pe.v[j].l)) ||
			    iset_hits(dels, pe.v[j].k, pe.v[j].l))
				rc = KV_EEXIST;
			else
				rc = kset_add(puts, pe.v[j].k, pe.v[j].l);
		}
		for (size_t j = 0; j < dt.n && rc == 0; j++)
			rc = iset_add(dels, &dt.v[j]);
		for (size_t j = 0; j < de.n && rc == 0; j++)
			rc = iset_add(dels, &de.v[j]);
		free(pt.v);
		free(pe.v);
		free(dt.v);
		free(de.v);
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (ops[i].type != MVCC_OP_PUT)
			continue;
		const struct mvcc_put_req *p = &ops[i].u.put;
		if (kset_has(puts, p->key, p->key_len) ||
		    iset_hits(dels, p->key, p->key_len))
			rc = KV_EEXIST;
		else
			rc = kset_add(puts, p->key, p->key_len);
	}
	return rc;
}

static int check_txn(const struct mvcc_txn_req *t, long max_ops,
		     const char **msg);

static int check_op(const struct mvcc_request_op *op, long max_ops,
		    const char **msg)
{
	switch (op->type) {
	case MVCC_OP_RANGE:
		if (op->u.range.key_len == 0)
			break;
		return 0;
	case MVCC_OP_PUT:
		return check_put_req(&op->u.put, msg);
	case MVCC_OP_DELETE_RANGE:
		if (op->u.delete_range.key_len == 0)
			break;
		return 0;
	case MVCC_OP_TXN:
		if (op->u.txn == NULL)
			return 0;
		return check_txn(op->u.txn, max_ops, msg);
	default:
		*msg = "etcdserver: invalid request op";
		return KV_EINVAL;
	}
	*msg = MSG_EMPTY_KEY;
	return KV_EINVAL;
}

static int check_txn(const struct mvcc_txn_req *t, long max_ops,
		     const char **msg)
{
	size_t opc = t->n_compare;
	int rc;

	if (opc < t->n_success)
		opc = t->n_success;
	if (opc < t->n_failure)
		opc = t->n_failure;
	if ((long)opc > max_ops) {
		*msg = MSG_TOO_MANY_OPS;
		return KV_EINVAL;
	}
	for (size_t i = 0; i < t->n_compare; i++) {
		if (t->compare[i].key_len == 0) {
			*msg = MSG_EMPTY_KEY;
			return KV_EINVAL;
		}
	}
	for (size_t i = 0; i < t->n_success; i++) {
		rc = check_op(&t->success[i], max_ops - (long)opc, msg);
		if (rc != 0)
			return rc;
	}
	for (size_t i = 0; i < t->n_failure; i++) {
		rc = check_op(&t->failure[i], max_ops - (long)opc, msg);
		if (rc != 0)
			return rc;
	}
	return 0;
}

int mvcc_txn_validate(const struct mvcc_txn_req *req, unsigned max_ops,
		      const char **errmsg)
{
	const char *dummy;
	const char **msg = errmsg != NULL ? errmsg : &dummy;
	int rc;

	*msg = NULL;
	rc = check_txn(req, (long)max_ops, msg);
	if (rc != 0)
		return rc;
	for (int br = 0; br < 2; br++) {
		struct kset puts = { 0 };
		struct iset dels = { 0 };
		rc = br == 0 ? check_intervals(req->success, req->n_success,
					       &puts, &dels)
			     : check_intervals(req->failure, req->n_failure,
					       &puts, &dels);
		free(puts.v);
		free(dels.v);
		if (rc == KV_EEXIST) {
			*msg = MSG_DUP_KEY;
			return KV_EINVAL;
		}
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* ---- txn execution ---------------------------------------------------- */

struct path {
	bool *v;
	size_t n, cap;
};

static int cmp_i64(int64_t a, int64_t b)
{
	return a < b ? -1 : a > b;
}

/* etcd compareKV. */
static bool compare_kv(const struct mvcc_compare *c, const struct rec *r)
{
	static const struct rec zero;
	int result;

	if (r == NULL)
		r = &zero;
	switch (c->target) {
	case MVCC_CMP_VALUE:
		result = keycmp(r->val, r->vlen, c->value, c->value_len);
		break;
	case MVCC_CMP_CREATE:
		result = cmp_i64(r->create, c->number);
		break;
	case MVCC_CMP_MOD:
		result = cmp_i64(r->main, c->number);
		break;
	case MVCC_CMP_VERSION:
		result = cmp_i64(r->version, c->number);
		break;
	case MVCC_CMP_LEASE:
		result = cmp_i64(r->lease, c->number);
		break;
	default:
		result = 0;
		break;
	}
	switch (c->result) {
	case MVCC_CMP_EQUAL:
		return result == 0;
	case MVCC_CMP_NOT_EQUAL:
		return result != 0;
	case MVCC_CMP_GREATER:
		return result > 0;
	case MVCC_CMP_LESS:
		return result < 0;
	default:
		return true;
	}
}

/* etcd applyCompare: every key in the range must satisfy it; an empty
 * range compares a zero KeyValue, except that VALUE then fails. */
static int eval_compare(const struct mvcc *m, const struct tctx *tc,
			int64_t at,
			const struct mvcc_compare *c, bool *ok)
{
	struct recvec rv = { 0 };
	int64_t count;
	int rc;

	rc = scan_live(m, tc, c->key, c->key_len, c->range_end,
		       c->range_end_len, at, SIZE_MAX, &rv, &count);
	if (rc != 0)
		goto out;
	if (rv.n == 0) {
		*ok = c->target != MVCC_CMP_VALUE && compare_kv(c, NULL);
		goto out;
	}
	*ok = true;
	for (size_t i = 0; i < rv.n && *ok; i++)
		*ok = compare_kv(c, &rv.v[i]);
out:
	recvec_free(&rv);
	return rc;
}

/* etcd compareToPath: every compare, nested ones included, is evaluated
 * on the state before the txn, in pre-order. */
static int compute_path(const struct mvcc *m, const struct tctx *tc,
			int64_t at,
			const struct mvcc_txn_req *t, struct path *p)
{
	bool ok = true;
	int rc;

	for (size_t i = 0; i < t->n_compare && ok; i++) {
		rc = eval_compare(m, tc, at, &t->compare[i], &ok);
		if (rc != 0)
			return rc;
	}
	if (grow((void **)&p->v, &p->cap, p->n, sizeof(bool)) != 0)
		return KV_ENOMEM;
	p->v[p->n++] = ok;
	const struct mvcc_request_op *ops = ok ? t->success : t->failure;
	size_t n = ok ? t->n_success : t->n_failure;
	for (size_t i = 0; i < n; i++) {
		if (ops[i].type != MVCC_OP_TXN || ops[i].u.txn == NULL)
			continue;
		rc = compute_path(m, tc, at, ops[i].u.txn, p);
		if (rc != 0)
			return rc;
	}
	return 0;
}

enum precheck_kind { PRE_PUT, PRE_RANGE, PRE_ESTIMATE };

struct precheck {
	enum precheck_kind kind;
	struct mvcc *m;
	const struct tctx *tc;
	int64_t at, compact;
	const char *msg;
	uint64_t bytes;
};

static int precheck_op(struct precheck *pc, const struct mvcc_request_op *op)
{
	struct mvcc *m = pc->m;
	struct rec r;
	bool found;
	int rc;

	if (pc->kind == PRE_RANGE) {
		/* etcd checkRequestRange: a revision < 0 is compared raw. */
		if (op->type != MVCC_OP_RANGE || op->u.range.revision == 0)
			return 0;
		if (op->u.range.revision > pc->at) {
			pc->msg = MSG_FUTURE;
			return KV_EFUTUREREV;
		}
		if (op->u.range.revision < pc->compact) {
			pc->msg = MSG_COMPACTED;
			return KV_ECOMPACTED;
		}
		return 0;
	}
	if (op->type == MVCC_OP_DELETE_RANGE && pc->kind == PRE_ESTIMATE) {
		const struct mvcc_delete_req *d = &op->u.delete_range;
		struct recvec rv = { 0 };
		int64_t count;
		rc = scan_live(m, pc->tc, d->key, d->key_len, d->range_end,
			       d->range_end_len, pc->at, SIZE_MAX, &rv,
			       &count);
		for (size_t i = 0; i < rv.n; i++)
			pc->bytes += rec_size(m, rv.v[i].klen, 0) +
				     rv.v[i].eklen + 64;
		recvec_free(&rv);
		return rc;
	}
	if (op->type != MVCC_OP_PUT)
		return 0;
	const struct mvcc_put_req *p = &op->u.put;
	if (pc->kind == PRE_ESTIMATE) {
		size_t vlen = p->value_len;
		if (p->ignore_value) {
			rc = get_at(m, pc->tc->cur, p->key, p->key_len, pc->at, &r,
				    &found);
			if (rc != 0)
				return rc;
			vlen = found ? r.vlen : 0;
		}
		pc->bytes += rec_size(m, p->key_len, vlen) + 64;
		return 0;
	}
	/* etcd checkRequestPut. */
	if (p->ignore_value || p->ignore_lease) {
		rc = get_at(m, pc->tc->cur, p->key, p->key_len, pc->at, &r,
			    &found);
		if (rc != 0)
			return rc;
		if (!found || !rec_live(&r)) {
			pc->msg = MSG_KEY_NOT_FOUND;
			return KV_ENOTFOUND;
		}
	}
	if (p->lease != 0 && m->check_leases) {
		rc = lease_exists(m, pc->tc->txn, p->lease, &found);
		if (rc != 0)
			return rc;
		if (!found) {
			pc->msg = MSG_LEASE_NOT_FOUND;
			return KV_ENOTFOUND;
		}
	}
	return 0;
}

/* etcd checkRequests: walks the ops the path selects, nested first-come. */
static int precheck_walk(struct precheck *pc, const struct mvcc_txn_req *t,
			 const struct path *p, size_t *pi)
{
	bool ok = p->v[(*pi)++];
	const struct mvcc_request_op *ops = ok ? t->success : t->failure;
	size_t n = ok ? t->n_success : t->n_failure;
	int rc;

	for (size_t i = 0; i < n; i++) {
		if (ops[i].type == MVCC_OP_TXN) {
			if (ops[i].u.txn == NULL)
				continue;
			rc = precheck_walk(pc, ops[i].u.txn, p, pi);
		} else {
			rc = precheck_op(pc, &ops[i]);
		}
		if (rc != 0)
			return rc;
	}
	return 0;
}

struct exec {
	struct mvcc *m;
	const struct tctx *tc;
	bool write;
	int64_t ro_rev, compact;
	const struct path *p;
	size_t pi;
	struct mvcc_arena *a;
};

/* etcd applyTxn. */
static int exec_txn(struct exec *x, const struct mvcc_txn_req *t,
		    struct mvcc_txn_res *res)
{
	bool ok = x->p->v[x->pi++];
	const struct mvcc_request_op *ops = ok ? t->success : t->failure;
	size_t n = ok ? t->n_success : t->n_failure;
	int rc = 0;

	res->succeeded = ok;
	res->n_responses = n;
	res->responses = NULL;
	if (n == 0)
		return 0;
	res->responses = mvcc_arena_alloc(x->a, n * sizeof(*res->responses));
	if (res->responses == NULL)
		return KV_ENOMEM;
	memset(res->responses, 0, n * sizeof(*res->responses));
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct mvcc_response_op *ro = &res->responses[i];
		ro->type = ops[i].type;
		switch (ops[i].type) {
		case MVCC_OP_RANGE: {
			int64_t cur = x->write ? req_read_rev(x->m) : x->ro_rev;
			rc = do_range(x->m, x->tc, cur, x->compact,
				      &ops[i].u.range, x->a, &ro->u.range);
			break;
		}
		case MVCC_OP_PUT:
			rc = apply_put(x->m, &ops[i].u.put, true, x->a,
				       &ro->u.put);
			break;
		case MVCC_OP_DELETE_RANGE:
			rc = apply_delete(x->m, &ops[i].u.delete_range, true,
					  x->a, &ro->u.delete_range);
			break;
		case MVCC_OP_TXN: {
			struct mvcc_txn_res *sub =
				mvcc_arena_alloc(x->a, sizeof(*sub));
			if (sub == NULL) {
				rc = KV_ENOMEM;
				break;
			}
			memset(sub, 0, sizeof(*sub));
			ro->u.txn = sub;
			if (ops[i].u.txn != NULL)
				rc = exec_txn(x, ops[i].u.txn, sub);
			break;
		}
		}
	}
	return rc;
}

static bool txn_readonly(const struct mvcc_txn_req *t)
{
	for (size_t i = 0; i < t->n_success; i++)
		if (t->success[i].type != MVCC_OP_RANGE)
			return false;
	for (size_t i = 0; i < t->n_failure; i++)
		if (t->failure[i].type != MVCC_OP_RANGE)
			return false;
	return true;
}

int mvcc_txn(struct mvcc *m, const struct mvcc_txn_req *req,
	     struct mvcc_arena *a, struct mvcc_txn_res *res)
{
	struct path p = { 0 };
	struct view v = { 0 };
	bool write = !txn_readonly(req);
	int rc;

	memset(res, 0, sizeof(*res));
	rc = mvcc_txn_validate(req, m->max_txn_ops, &res->errmsg);
	if (rc != 0)
		return rc;
	if (write) {
		rc = check_writable(m);
		if (rc != 0)
			return rc;
	}
	rc = view_open(m, NULL, &v);
	if (rc != 0)
		return rc;
	rc = compute_path(m, &v.tc, v.rev, req, &p);
	if (rc != 0)
		goto out;
	struct precheck pc = { PRE_PUT, m, &v.tc, v.rev, v.compact, NULL, 0 };
	size_t pi = 0;
	if (write) {
		rc = precheck_walk(&pc, req, &p, &pi);
		if (rc != 0)
			goto out_msg;
	}
	pc.kind = PRE_RANGE;
	pi = 0;
	rc = precheck_walk(&pc, req, &p, &pi);
	if (rc != 0)
		goto out_msg;
	if (write) {
		pc.kind = PRE_ESTIMATE;
		pi = 0;
		rc = precheck_walk(&pc, req, &p, &pi);
		if (rc == 0)
			rc = reserve(m, pc.bytes);
		if (rc != 0)
			goto out_msg;
		req_begin(m);
	}
	struct exec x = { m, &v.tc, write, v.rev, v.compact, &p, 0, a };
	rc = exec_txn(&x, req, res);
	if (write) {
		rc = settle(m, rc);
		if (m->failed == 0)
			req_end(m);
		res->header_revision = m->rev;
	} else {
		res->header_revision = v.rev;
	}
	goto out;
out_msg:
	res->errmsg = pc.msg;
	if (rc == KV_EFULL)
		res->errmsg = MSG_NOSPACE;
out:
	free(p.v);
	view_close(&v);
	return rc;
}

/* ---- compaction (etcd kvstore Compact / scheduleCompaction) ----------- */

static int meta_put(struct mvcc *m, const char *name, const void *p,
		    size_t n)
{
	MDB_val k = { strlen(name), (void *)name };
	MDB_val v = { n, (void *)p };

	return wput(m, m->dbi_meta, &k, &v, 0);
}

static int meta_put_i64(struct mvcc *m, const char *name, int64_t x)
{
	uint8_t b[8];

	kv_store_u64le(b, (uint64_t)x);
	return meta_put(m, name, b, 8);
}

static int save_cpos(struct mvcc *m)
{
	uint8_t b[16];

	kv_store_u64le(b, (uint64_t)m->cpos_main);
	kv_store_u64le(b + 8, (uint64_t)m->cpos_sub);
	return meta_put(m, "cpos", b, 16);
}

int mvcc_compact(struct mvcc *m, int64_t rev)
{
	int rc = check_writable(m);

	if (rc != 0)
		return rc;
	if (rev <= m->compact_rev)
		return KV_ECOMPACTED;
	if (rev > m->rev)
		return KV_EFUTUREREV;
	rc = reserve(m, 64);
	if (rc != 0)
		return rc;
	m->compact_rev = rev;
	m->cpos_main = 0;
	m->cpos_sub = 0;
	rc = meta_put_i64(m, "compact", rev);
	if (rc == 0)
		rc = save_cpos(m);
	return rc;
}

/* Whether the record at ekey (revision main <= C) is obsolete after
 * compaction at C: a newer record of the same key with main <= C exists,
 * or it is the newest such and a tombstone. */
static int obsolete_at(struct mvcc *m, MDB_cursor *kc, const MDB_val *ekey,
		       int64_t c, bool *obsolete, size_t *bytes)
{
	MDB_val k = *ekey, v;
	struct rec r, r2;
	int rc;

	rc = mdb_cursor_get(kc, &k, &v, MDB_SET_KEY);
	if (rc != 0)
		return rc == MDB_NOTFOUND ? KV_ECORRUPT : mvcc_from_mdb(rc);
	rc = rec_decode(&k, &v, &r);
	if (rc != 0)
		return rc;
	*bytes = k.mv_size + v.mv_size;
	size_t hl = k.mv_size - 16;
	uint8_t head[MVCC_EKEY_MAX];
	memcpy(head, k.mv_data, hl);
	*obsolete = !rec_live(&r);
	for (;;) {
		rc = mdb_cursor_get(kc, &k, &v, MDB_NEXT);
		if (rc == MDB_NOTFOUND)
			return 0;
		if (rc != 0)
			return mvcc_from_mdb(rc);
		if (k.mv_size != hl + 16 || memcmp(k.mv_data, head, hl) != 0)
			return 0;
		rc = rec_decode(&k, &v, &r2);
		if (rc != 0)
			return rc;
		if (!same_key(&r, &r2))
			continue; /* a hash collision inside a long group */
		if (r2.main <= c)
			*obsolete = true; /* a newer one is kept instead */
		return 0;
	}
}

int mvcc_compact_step(struct mvcc *m, size_t max_revs, bool *done)
{
	MDB_cursor *rc_cur = NULL, *kc = NULL;
	uint8_t rk[16];
	MDB_val k, v;
	int rc = check_writable(m);

	*done = false;
	if (rc != 0)
		return rc;
	if (m->compact_rev <= 0 || m->cpos_main > m->compact_rev) {
		*done = true;
		return 0;
	}
	rc = mvcc_from_mdb(mdb_cursor_open(m->wtxn, m->dbi_rev, &rc_cur));
	if (rc == 0)
		rc = mvcc_from_mdb(mdb_cursor_open(m->wtxn, m->dbi_kv, &kc));
	for (size_t n = 0; rc == 0 && n < max_revs; n++) {
		rev_encode(rk, m->cpos_main, m->cpos_sub);
		k.mv_data = rk;
		k.mv_size = 16;
		int g = mdb_cursor_get(rc_cur, &k, &v, MDB_SET_RANGE);
		if (g == MDB_NOTFOUND) {
			m->cpos_main = m->compact_rev + 1;
			break;
		}
		if (g != 0 || k.mv_size != 16) {
			rc = g ? mvcc_from_mdb(g) : KV_ECORRUPT;
			break;
		}
		int64_t main = (int64_t)get_be64(k.mv_data);
		int64_t sub = (int64_t)get_be64((uint8_t *)k.mv_data + 8);
		if (main > m->compact_rev) {
			m->cpos_main = m->compact_rev + 1;
			break;
		}
		m->cpos_main = main;
		m->cpos_sub = sub + 1;
		uint8_t ek[MVCC_EKEY_MAX];
		if (v.mv_size > sizeof(ek) || v.mv_size < 17) {
			rc = KV_ECORRUPT;
			break;
		}
		memcpy(ek, v.mv_data, v.mv_size);
		MDB_val ekv = { v.mv_size, ek };
		bool obs = false;
		size_t bytes = 0;
		rc = obsolete_at(m, kc, &ekv, m->compact_rev, &obs, &bytes);
		if (rc != 0 || !obs)
			continue;
		rc = reserve(m, 64);
		if (rc != 0) {
			m->cpos_sub = sub; /* redo this one next time */
			break;
		}
		rc = wdel(m, m->dbi_kv, &ekv);
		if (rc == 0) {
			MDB_val rkv = { 16, rk };
			rev_encode(rk, main, sub);
			rc = wdel(m, m->dbi_rev, &rkv);
		}
	}
	if (m->failed == 0) {
		if (kc != NULL)
			mdb_cursor_close(kc);
		if (rc_cur != NULL)
			mdb_cursor_close(rc_cur);
		int rc2 = save_cpos(m);
		if (rc == 0 || rc == KV_EAGAIN)
			rc = rc2 ? rc2 : rc;
		rc = settle(m, rc);
	}
	*done = m->failed == 0 && m->cpos_main > m->compact_rev;
	if (*done)
		KV_DEBUG(MOD, "compaction finished", "rev=%lld",
			 (long long)m->compact_rev);
	return rc;
}

int64_t mvcc_revision(const struct mvcc *m)
{
	return m->rev;
}

int64_t mvcc_compact_revision(const struct mvcc *m)
{
	return m->compact_rev;
}

/* ---- events ----------------------------------------------------------- */

static bool in_range(const uint8_t *k, size_t kl, const uint8_t *key,
		     size_t klen, const uint8_t *end, size_t elen)
{
	if (elen == 0)
		return keycmp(k, kl, key, klen) == 0;
	if (keycmp(k, kl, key, klen) < 0)
		return false;
	return range_is_all_from(end, elen) || keycmp(k, kl, end, elen) < 0;
}

int mvcc_events(struct mvcc *m, struct mvcc_read *rd,
		const struct mvcc_events_req *req, struct mvcc_arena *a,
		struct mvcc_events_res *res)
{
	struct view vw;
	MDB_cursor *cur = NULL;
	struct mvcc_event *ev = NULL;
	size_t n = 0, cap = 0, scanned = 0;
	size_t max_ev = req->max_events ? req->max_events : 1000;
	size_t max_scan = req->max_scan ? req->max_scan : 10000;
	uint8_t rk[16];
	MDB_val k, v;
	int rc;

	memset(res, 0, sizeof(*res));
	rc = view_open(m, rd, &vw);
	if (rc != 0)
		return rc;
	res->header_revision = vw.rev;
	int64_t start = req->start_revision;
	if (start < vw.compact) {
		rc = KV_ECOMPACTED;
		goto out;
	}
	if (start < 1)
		start = 1;
	res->next_revision = vw.rev + 1;
	if (start > vw.rev) {
		res->next_revision = start;
		goto out;
	}
	rc = mvcc_from_mdb(mdb_cursor_open(vw.tc.txn, m->dbi_rev, &cur));
	if (rc != 0)
		goto out;
	rev_encode(rk, start, 0);
	k.mv_data = rk;
	k.mv_size = 16;
	int g = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	int64_t last_main = -1;
	for (; g == 0; g = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size != 16) {
			rc = KV_ECORRUPT;
			goto out;
		}
		int64_t main = (int64_t)get_be64(k.mv_data);
		if (main > vw.rev)
			break;
		if (main != last_main) {
			if (n >= max_ev || scanned >= max_scan) {
				res->next_revision = main;
				break;
			}
			last_main = main;
		}
		scanned++;
		MDB_val kk = v, kvv;
		rc = mvcc_from_mdb(mdb_get(vw.tc.txn, m->dbi_kv, &kk, &kvv));
		struct rec r;
		if (rc == 0)
			rc = rec_decode(&kk, &kvv, &r);
		if (rc != 0) {
			rc = rc == KV_ENOTFOUND ? KV_ECORRUPT : rc;
			goto out;
		}
		if (!in_range(r.key, r.klen, req->key, req->key_len,
			      req->range_end, req->range_end_len))
			continue;
		if (r.main <= vw.compact) {
			/* At the compacted revision itself (start == C):
			 * only what compaction keeps, whether or not the
			 * physical removal has run yet. */
			struct rec kept;
			bool found;
			rc = get_at(m, vw.tc.cur, r.key, r.klen, vw.compact,
				    &kept, &found);
			if (rc != 0)
				goto out;
			if (!found || !rec_live(&kept) || kept.main != r.main ||
			    kept.sub != r.sub)
				continue;
		}
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 64;
			struct mvcc_event *ne =
				mvcc_arena_alloc(a, nc * sizeof(*ne));
			if (ne == NULL) {
				rc = KV_ENOMEM;
				goto out;
			}
			if (n)
				memcpy(ne, ev, n * sizeof(*ne));
			ev = ne;
			cap = nc;
		}
		struct mvcc_event *e = &ev[n++];
		memset(e, 0, sizeof(*e));
		if (rec_live(&r)) {
			e->type = MVCC_EVENT_PUT;
			rc = kv_copy(a, &r, false, &e->kv);
		} else {
			e->type = MVCC_EVENT_DELETE;
			int err = 0;
			e->kv.key = dup_bytes(a, r.key, r.klen, &err);
			e->kv.key_len = r.klen;
			e->kv.mod_revision = r.main;
			rc = err;
		}
		if (rc != 0)
			goto out;
		/* etcd watch prev_kv: the key at mod_revision - 1. */
		bool create = rec_live(&r) && r.version == 1;
		if (req->prev_kv && !create && r.main - 1 >= vw.compact) {
			struct rec pr;
			bool found;
			rc = get_at(m, vw.tc.cur, r.key, r.klen, r.main - 1, &pr,
				    &found);
			if (rc != 0)
				goto out;
			if (found && rec_live(&pr)) {
				e->prev_kv = mvcc_arena_alloc(a,
							      sizeof(*e->prev_kv));
				if (e->prev_kv == NULL) {
					rc = KV_ENOMEM;
					goto out;
				}
				rc = kv_copy(a, &pr, false, e->prev_kv);
				if (rc != 0)
					goto out;
			}
		}
	}
	if (g != 0 && g != MDB_NOTFOUND)
		rc = mvcc_from_mdb(g);
out:
	if (cur != NULL)
		mdb_cursor_close(cur);
	view_close(&vw);
	if (rc != 0) {
		res->events = NULL;
		res->n_events = 0;
		return rc;
	}
	res->events = ev;
	res->n_events = n;
	return 0;
}

/* ---- hash --------------------------------------------------------------- */

static uint32_t crc_u64(uint32_t crc, uint64_t x)
{
	uint8_t b[8];

	kv_store_u64le(b, x);
	return kv_crc32c(crc, b, 8);
}

int mvcc_hash(struct mvcc *m, struct mvcc_read *rd, int64_t rev,
	      uint32_t *hash, int64_t *compact_rev)
{
	struct view vw;
	struct kiter it;
	uint32_t crc = 0;
	int rc;

	rc = view_open(m, rd, &vw);
	if (rc != 0)
		return rc;
	*compact_rev = vw.compact;
	if (rev > 0 && rev <= vw.compact) {
		rc = KV_ECOMPACTED;
		goto out;
	}
	if (rev > vw.rev) {
		rc = KV_EFUTUREREV;
		goto out;
	}
	if (rev <= 0)
		rev = vw.rev;
	rc = kiter_open(&it, m, vw.tc.txn);
	if (rc == 0)
		rc = kiter_seek(&it, NULL, 0);
	while (rc == 0) {
		rc = kiter_next(&it);
		if (rc <= 0)
			break;
		rc = 0;
		ssize_t keep = newest_at(it.out, it.nout, vw.compact);
		for (size_t i = 0; i < it.nout; i++) {
			const struct rec *r = &it.out[i];
			if (r->main > rev)
				break;
			if (r->main <= vw.compact &&
			    ((ssize_t)i != keep || !rec_live(r)))
				continue;
			crc = crc_u64(crc, (uint64_t)r->main);
			crc = crc_u64(crc, (uint64_t)r->sub);
			crc = crc_u64(crc, r->klen);
			crc = kv_crc32c(crc, r->key, r->klen);
			uint8_t f = (uint8_t)(r->flags & MVCC_F_TOMB);
			crc = kv_crc32c(crc, &f, 1);
			crc = crc_u64(crc, (uint64_t)r->create);
			crc = crc_u64(crc, (uint64_t)r->version);
			crc = crc_u64(crc, (uint64_t)r->lease);
			crc = crc_u64(crc, r->vlen);
			crc = kv_crc32c(crc, r->val, r->vlen);
		}
	}
	kiter_close(&it);
	if (rc == 0)
		*hash = crc_u64(crc, (uint64_t)vw.compact);
out:
	view_close(&vw);
	return rc;
}

/* ---- meta, members, leases ---------------------------------------------- */

int mvcc_set_applied(struct mvcc *m, uint64_t index, uint64_t term)
{
	int rc = check_writable(m);

	if (rc != 0)
		return rc;
	m->applied_index = index;
	m->applied_term = term;
	return 0;
}

void mvcc_get_applied(const struct mvcc *m, uint64_t *index, uint64_t *term)
{
	*index = m->applied_index;
	*term = m->applied_term;
}

int mvcc_members_put(struct mvcc *m, const void *blob, size_t len)
{
	int rc = check_writable(m);

	if (rc != 0)
		return rc;
	if (len > (64u << 20))
		return KV_ETOOBIG;
	rc = reserve(m, len + 64);
	if (rc != 0)
		return rc;
	return meta_put(m, "members", blob, len);
}

static int view_get(struct mvcc *m, MDB_dbi dbi, MDB_val *k,
		    struct mvcc_arena *a, const void **out, size_t *len)
{
	struct view vw;
	MDB_val v;
	int rc = view_open(m, NULL, &vw);

	*out = NULL;
	*len = 0;
	if (rc != 0)
		return rc;
	rc = mvcc_from_mdb(mdb_get(vw.tc.txn, dbi, k, &v));
	if (rc == 0) {
		*out = dup_bytes(a, v.mv_data, v.mv_size, &rc);
		*len = v.mv_size;
	}
	view_close(&vw);
	return rc;
}

int mvcc_members_get(struct mvcc *m, struct mvcc_arena *a, const void **blob,
		     size_t *len)
{
	MDB_val k = { 7, "members" };
	int rc = view_get(m, m->dbi_meta, &k, a, blob, len);

	return rc == KV_ENOTFOUND ? 0 : rc;
}

int mvcc_lease_put(struct mvcc *m, int64_t id, const void *rec, size_t len)
{
	uint8_t kb[8];
	int rc = check_writable(m);

	if (rc != 0)
		return rc;
	rc = reserve(m, len + 64);
	if (rc != 0)
		return rc;
	put_be64(kb, (uint64_t)id);
	MDB_val k = { 8, kb }, v = { len, (void *)rec };
	return wput(m, m->dbi_lease, &k, &v, 0);
}

int mvcc_lease_del(struct mvcc *m, int64_t id)
{
	uint8_t kb[8];
	MDB_val k = { 8, kb }, v;
	int rc = check_writable(m);

	if (rc != 0)
		return rc;
	put_be64(kb, (uint64_t)id);
	rc = mdb_get(m->wtxn, m->dbi_lease, &k, &v);
	if (rc != 0)
		return mvcc_from_mdb(rc);
	rc = reserve(m, 64);
	if (rc != 0)
		return rc;
	return wdel(m, m->dbi_lease, &k);
}

int mvcc_lease_get(struct mvcc *m, int64_t id, struct mvcc_arena *a,
		   const void **rec, size_t *len)
{
	uint8_t kb[8];
	MDB_val k = { 8, kb };

	put_be64(kb, (uint64_t)id);
	return view_get(m, m->dbi_lease, &k, a, rec, len);
}

int mvcc_lease_list(struct mvcc *m, struct mvcc_arena *a, int64_t **ids,
		    size_t *n)
{
	struct view vw;
	MDB_cursor *cur;
	MDB_val k, v;
	size_t cap = 0;
	int rc = view_open(m, NULL, &vw);

	*ids = NULL;
	*n = 0;
	if (rc != 0)
		return rc;
	rc = mvcc_from_mdb(mdb_cursor_open(vw.tc.txn, m->dbi_lease, &cur));
	if (rc != 0)
		goto out;
	int g = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	for (; g == 0; g = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (*n == cap) {
			size_t nc = cap ? cap * 2 : 64;
			int64_t *ni = mvcc_arena_alloc(a, nc * sizeof(*ni));
			if (ni == NULL) {
				g = ENOMEM;
				break;
			}
			if (*n)
				memcpy(ni, *ids, *n * sizeof(*ni));
			*ids = ni;
			cap = nc;
		}
		(*ids)[(*n)++] = (int64_t)get_be64(k.mv_data);
	}
	if (g != MDB_NOTFOUND)
		rc = mvcc_from_mdb(g);
	mdb_cursor_close(cur);
out:
	view_close(&vw);
	return rc;
}

/* ---- open / close / write txn ----------------------------------------- */

/* Creates and opens m->env on m->dir, opens the databases and loads the
 * meta records. On failure m->env is NULL. */
static int env_setup(struct mvcc *m)
{
	MDB_txn *txn = NULL;
	MDB_envinfo info;
	MDB_stat st;
	int rc;

	m->allocated = 0; /* a new env: blocks are checked again */
	rc = mvcc_from_mdb(mdb_env_create(&m->env));
	if (rc != 0) {
		m->env = NULL;
		return rc;
	}
	rc = mvcc_from_mdb(mdb_env_set_maxdbs(m->env, 8));
	if (rc == 0)
		rc = mvcc_from_mdb(mdb_env_set_mapsize(m->env, m->map_size));
	if (rc == 0)
		rc = mvcc_from_mdb(mdb_env_set_maxreaders(m->env, 256));
	if (rc == 0)
		rc = mvcc_from_mdb(mdb_env_open(
			m->env, m->dir,
			MDB_NOTLS | (m->writemap ? MDB_WRITEMAP : 0), 0600));
	if (rc != 0)
		goto err_env;
	mdb_env_info(m->env, &info);
	m->map_size = info.me_mapsize;
	mdb_env_stat(m->env, &st);
	m->pagesize = st.ms_psize;
	int maxkey = mdb_env_get_maxkeysize(m->env);
	if (maxkey < 64 || maxkey > MVCC_EKEY_MAX) {
		rc = KV_EUNSUPP;
		goto err_env;
	}
	m->short_max = (size_t)maxkey - 25;
	rc = mvcc_from_mdb(mdb_txn_begin(m->env, NULL, 0, &txn));
	if (rc != 0)
		goto err_env;
	rc = mvcc_from_mdb(mdb_dbi_open(txn, "kv", MDB_CREATE, &m->dbi_kv));
	if (rc == 0)
		rc = mvcc_from_mdb(mdb_set_compare(txn, m->dbi_kv, cmp_ekey));
	if (rc == 0)
		rc = mvcc_from_mdb(
			mdb_dbi_open(txn, "rev", MDB_CREATE, &m->dbi_rev));
	if (rc == 0)
		rc = mvcc_from_mdb(
			mdb_dbi_open(txn, "meta", MDB_CREATE, &m->dbi_meta));
	if (rc == 0)
		rc = mvcc_from_mdb(
			mdb_dbi_open(txn, "lease", MDB_CREATE, &m->dbi_lease));
	if (rc != 0)
		goto err_txn;
	MDB_val k = { 6, "maxkey" }, v;
	int g = mdb_get(txn, m->dbi_meta, &k, &v);
	if (g == MDB_NOTFOUND) {
		uint8_t b[4];
		kv_store_u32le(b, (uint32_t)maxkey);
		v.mv_data = b;
		v.mv_size = 4;
		rc = mvcc_from_mdb(mdb_put(txn, m->dbi_meta, &k, &v, 0));
		kv_store_u32le(b, MVCC_FORMAT);
		MDB_val fk = { 6, "format" };
		if (rc == 0)
			rc = mvcc_from_mdb(
				mdb_put(txn, m->dbi_meta, &fk, &v, 0));
	} else if (g == 0) {
		if (v.mv_size != 4 ||
		    kv_load_u32le(v.mv_data) != (uint32_t)maxkey)
			rc = KV_ECORRUPT;
	} else {
		rc = mvcc_from_mdb(g);
	}
	if (rc == 0)
		rc = mvcc_read_meta(txn, m->dbi_meta, &m->rev, &m->compact_rev,
				    &m->applied_index, &m->applied_term);
	if (rc != 0)
		goto err_txn;
	k.mv_data = "cpos";
	k.mv_size = 4;
	m->cpos_main = m->cpos_sub = 0;
	g = mdb_get(txn, m->dbi_meta, &k, &v);
	if (g == 0 && v.mv_size == 16) {
		m->cpos_main = (int64_t)kv_load_u64le(v.mv_data);
		m->cpos_sub = (int64_t)kv_load_u64le((uint8_t *)v.mv_data + 8);
	}
	rc = mvcc_from_mdb(mdb_txn_commit(txn));
	txn = NULL;
	if (rc != 0)
		goto err_env;
	m->c_rev = m->rev;
	m->c_compact_rev = m->compact_rev;
	m->c_cpos_main = m->cpos_main;
	m->c_cpos_sub = m->cpos_sub;
	m->c_applied_index = m->applied_index;
	m->c_applied_term = m->applied_term;
	return 0;
err_txn:
	if (txn != NULL)
		mdb_txn_abort(txn);
err_env:
	mdb_env_close(m->env);
	m->env = NULL;
	return rc;
}

int mvcc_open(const char *dir, const struct mvcc_options *opts,
	      struct mvcc **out)
{
	struct mvcc_options def = { 0 };
	struct mvcc *m;
	int rc;

	*out = NULL;
	if (opts == NULL)
		opts = &def;
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return kv_from_errno(errno);
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		return KV_ENOMEM;
	m->dir = strdup(dir);
	if (m->dir == NULL) {
		rc = KV_ENOMEM;
		goto err_free;
	}
	m->quota = opts->quota_bytes ? opts->quota_bytes : (2ull << 30);
	m->map_size = opts->initial_map_bytes ? opts->initial_map_bytes
					      : m->quota;
	if (m->map_size > m->quota)
		m->map_size = m->quota;
	m->max_txn_ops = opts->max_txn_ops ? opts->max_txn_ops : 128;
	m->check_leases = opts->check_leases;
	m->writemap = !opts->no_writemap;
	rc = env_setup(m);
	if (rc != 0)
		goto err_free;
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->idle, NULL);
	KV_INFO(MOD, "store opened",
		"dir=%s rev=%lld compact=%lld map=%llu", dir,
		(long long)m->rev, (long long)m->compact_rev,
		(unsigned long long)m->map_size);
	*out = m;
	return 0;
err_free:
	free(m->dir);
	free(m);
	return rc;
}

int mvcc_defrag(struct mvcc *m)
{
	char tmp[4200], data[4200];
	int rc, fd;

	if (m->failed != 0)
		return KV_EFAILSTOP;
	if (m->wtxn != NULL)
		return KV_EBUSY;
	if (snprintf(data, sizeof(data), "%s/data.mdb", m->dir) >=
	    (int)sizeof(data))
		return KV_EINVAL;
	snprintf(tmp, sizeof(tmp), "%s/data.mdb.defrag", m->dir);
	/* Held throughout: no read handle may start while the env is
	 * replaced. */
	pthread_mutex_lock(&m->lock);
	if (m->readers > 0) {
		rc = KV_EBUSY;
		goto out;
	}
	uint64_t before, after, map;
	mvcc_size(m, &before, &map);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = kv_from_errno(errno);
		goto out;
	}
	rc = mvcc_from_mdb(mdb_env_copyfd2(m->env, fd, MDB_CP_COMPACT));
	if (rc == 0 && fsync(fd) != 0)
		rc = kv_from_errno(errno);
	close(fd);
	if (rc != 0) {
		unlink(tmp);
		goto out;
	}
	mdb_env_close(m->env);
	m->env = NULL;
	if (rename(tmp, data) != 0) {
		rc = kv_from_errno(errno);
		unlink(tmp);
	} else {
		int dfd = open(m->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0 || fsync(dfd) != 0)
			rc = kv_from_errno(errno);
		if (dfd >= 0)
			close(dfd);
	}
	int rc2 = env_setup(m);
	if (rc2 != 0) {
		/* No usable env: fail-stop; only mvcc_close is safe now. */
		m->failed = rc2;
		KV_ERROR(MOD, "reopen after defragment failed", "dir=%s err=%s",
			 m->dir, kv_errname(rc2));
		rc = rc2;
		goto out;
	}
	mvcc_size(m, &after, &map);
	KV_INFO(MOD, "defragmented", "dir=%s before=%llu after=%llu", m->dir,
		(unsigned long long)before, (unsigned long long)after);
out:
	pthread_mutex_unlock(&m->lock);
	return rc;
}

void mvcc_close(struct mvcc *m)
{
	if (m == NULL)
		return;
	/* A copy on another thread (a client's snapshot, a raft snapshot)
	 * may still read the env: it finishes first. */
	pthread_mutex_lock(&m->lock);
	while (m->readers > 0)
		pthread_cond_wait(&m->idle, &m->lock);
	pthread_mutex_unlock(&m->lock);
	if (m->wtxn != NULL)
		mdb_txn_abort(m->wtxn);
	if (m->env != NULL)
		mdb_env_close(m->env);
	pthread_mutex_destroy(&m->lock);
	pthread_cond_destroy(&m->idle);
	free(m->dir);
	free(m);
}

static void maybe_grow(struct mvcc *m)
{
	MDB_envinfo info;

	mdb_env_info(m->env, &info);
	uint64_t used = ((uint64_t)info.me_last_pgno + 1) * m->pagesize;
	if (!(m->want_grow || used > m->map_size / 2) ||
	    m->map_size >= m->quota)
		return;
	pthread_mutex_lock(&m->lock);
	if (m->readers == 0) {
		uint64_t nsz = m->map_size * 2;
		while (nsz < used * 2)
			nsz *= 2;
		if (nsz > m->quota)
			nsz = m->quota;
		int rc = mdb_env_set_mapsize(m->env, nsz);
		if (rc == 0) {
			mdb_env_info(m->env, &info);
			m->map_size = info.me_mapsize;
			m->want_grow = false;
			KV_INFO(MOD, "map grown", "map=%llu used=%llu",
				(unsigned long long)m->map_size,
				(unsigned long long)used);
		} else {
			KV_WARN(MOD, "map growth failed", "err=%d", rc);
		}
	}
	pthread_mutex_unlock(&m->lock);
}

int mvcc_begin_write(struct mvcc *m)
{
	MDB_envinfo info;
	int rc;

	if (m->failed != 0)
		return KV_EFAILSTOP;
	if (m->wtxn != NULL)
		return KV_EBUSY;
	maybe_grow(m);
	rc = mdb_txn_begin(m->env, NULL, 0, &m->wtxn);
	if (rc != 0) {
		m->wtxn = NULL;
		return mvcc_from_mdb(rc);
	}
	rc = mdb_cursor_open(m->wtxn, m->dbi_kv, &m->wcur);
	if (rc != 0) {
		mdb_txn_abort(m->wtxn);
		m->wtxn = NULL;
		m->wcur = NULL;
		return mvcc_from_mdb(rc);
	}
	mdb_env_info(m->env, &info);
	m->used_at_begin = ((uint64_t)info.me_last_pgno + 1) * m->pagesize;
	m->hw_begin = m->used_at_begin;
	/* Room for the txn's first path copies, splits and freelist pages,
	 * which a per-op estimate does not see. */
	m->txn_est = 64 * (uint64_t)m->pagesize;
	m->free_counted = false;
	rc = ensure_allocated(m, m->hw_begin + m->txn_est + ALLOC_MARGIN);
	if (rc != 0) {
		mdb_cursor_close(m->wcur);
		mdb_txn_abort(m->wtxn);
		m->wtxn = NULL;
		m->wcur = NULL;
	}
	return rc;
}

int mvcc_commit(struct mvcc *m, bool sync)
{
	uint8_t b[16];
	int rc;

	if (m->failed != 0)
		return KV_EFAILSTOP;
	if (m->wtxn == NULL)
		return KV_EINVAL;
	rc = meta_put_i64(m, "rev", m->rev);
	if (rc == 0 && (m->applied_index != m->c_applied_index ||
			m->applied_term != m->c_applied_term)) {
		kv_store_u64le(b, m->applied_index);
		kv_store_u64le(b + 8, m->applied_term);
		rc = meta_put(m, "applied", b, 16);
	}
	if (rc != 0)
		return rc;
	mdb_env_set_flags(m->env, MDB_NOSYNC, sync ? 0 : 1);
	if (m->fail_after > 0 && --m->fail_after == 0)
		return fail(m, KV_EIO);
	rc = mdb_txn_commit(m->wtxn);
	m->wtxn = NULL;
	m->wcur = NULL;
	if (rc != 0)
		return fail(m, mvcc_from_mdb(rc));
	m->c_rev = m->rev;
	m->c_compact_rev = m->compact_rev;
	m->c_cpos_main = m->cpos_main;
	m->c_cpos_sub = m->cpos_sub;
	m->c_applied_index = m->applied_index;
	m->c_applied_term = m->applied_term;
	return 0;
}

void mvcc_abort(struct mvcc *m)
{
	if (m->wtxn != NULL) {
		mdb_txn_abort(m->wtxn);
		m->wtxn = NULL;
		m->wcur = NULL;
	}
	restore_committed(m);
}

bool mvcc_in_write(const struct mvcc *m)
{
	return m->wtxn != NULL;
}

void mvcc_test_fail_after(struct mvcc *m, int n)
{
	m->fail_after = n;
}

void mvcc_test_collide_hashes(struct mvcc *m)
{
	m->collide = true;
}

void mvcc_size(struct mvcc *m, uint64_t *used, uint64_t *map_size)
{
	MDB_envinfo info;

	mdb_env_info(m->env, &info);
	*used = ((uint64_t)info.me_last_pgno + 1) * m->pagesize;
	*map_size = info.me_mapsize;
}

/* ---- read handles ------------------------------------------------------ */

int mvcc_read_begin(struct mvcc *m, struct mvcc_read **out)
{
	struct mvcc_read *rd = calloc(1, sizeof(*rd));
	int rc;

	*out = NULL;
	if (rd == NULL)
		return KV_ENOMEM;
	rd->m = m;
	pthread_mutex_lock(&m->lock);
	rc = mvcc_from_mdb(mdb_txn_begin(m->env, NULL, MDB_RDONLY, &rd->txn));
	if (rc == 0)
		m->readers++;
	pthread_mutex_unlock(&m->lock);
	if (rc == 0)
		rc = mvcc_from_mdb(mdb_cursor_open(rd->txn, m->dbi_kv, &rd->cur));
	if (rc == 0)
		rc = mvcc_read_meta(rd->txn, m->dbi_meta, &rd->rev,
				    &rd->compact_rev, NULL, NULL);
	if (rc != 0) {
		if (rd->txn != NULL)
			mvcc_read_end(rd);
		else
			free(rd);
		return rc;
	}
	*out = rd;
	return 0;
}

void mvcc_read_end(struct mvcc_read *rd)
{
	if (rd == NULL)
		return;
	struct mvcc *m = rd->m;
	if (rd->cur != NULL)
		mdb_cursor_close(rd->cur);
	pthread_mutex_lock(&m->lock);
	mdb_txn_abort(rd->txn);
	if (--m->readers == 0)
		pthread_cond_broadcast(&m->idle);
	pthread_mutex_unlock(&m->lock);
	free(rd);
}

int64_t mvcc_read_revision(const struct mvcc_read *rd)
{
	return rd->rev;
}

/* ---- invariants ------------------------------------------------------- */

bool mvcc_invariants_ok(struct mvcc *m)
{
	struct view vw;
	struct kiter it;
	MDB_stat skv, srev;
	bool ok = true;
	int rc;

	if (view_open(m, NULL, &vw) != 0)
		return false;
	if (mdb_stat(vw.tc.txn, m->dbi_kv, &skv) != 0 ||
	    mdb_stat(vw.tc.txn, m->dbi_rev, &srev) != 0 ||
	    skv.ms_entries != srev.ms_entries) {
		ok = false;
		goto out;
	}
	rc = kiter_open(&it, m, vw.tc.txn);
	if (rc == 0)
		rc = kiter_seek(&it, NULL, 0);
	const uint8_t *pk = NULL;
	size_t pkl = 0;
	uint8_t *pkbuf = NULL;
	while (rc == 0 && ok) {
		rc = kiter_next(&it);
		if (rc <= 0)
			break;
		rc = 0;
		const struct rec *r = it.out;
		/* Full keys strictly increasing. */
		if (pk != NULL && keycmp(pk, pkl, r->key, r->klen) >= 0)
			ok = false;
		free(pkbuf);
		pkbuf = malloc(r->klen ? r->klen : 1);
		if (pkbuf == NULL) {
			ok = false;
			break;
		}
		memcpy(pkbuf, r->key, r->klen);
		pk = pkbuf;
		pkl = r->klen;
		/* Finished compaction left at most one live record <= C. */
		if (m->compact_rev > 0 && m->cpos_main > m->compact_rev) {
			size_t below = 0;
			for (size_t i = 0; i < it.nout; i++)
				if (it.out[i].main <= m->compact_rev &&
				    (below++ > 0 || !rec_live(&it.out[i])))
					ok = false;
		}
		for (size_t i = 0; i < it.nout && ok; i++) {
			const struct rec *x = &it.out[i];
			uint8_t ek[MVCC_EKEY_MAX], rk[16];
			size_t el = ekey_encode(m, x->key, x->klen,
						(uint64_t)x->main,
						(uint64_t)x->sub, false, ek);
			if (el != x->eklen || memcmp(ek, x->ekey, el) != 0 ||
			    x->main > vw.rev || x->main < 2)
				ok = false;
			rev_encode(rk, x->main, x->sub);
			MDB_val k = { 16, rk }, v;
			if (mdb_get(vw.tc.txn, m->dbi_rev, &k, &v) != 0 ||
			    v.mv_size != el || memcmp(v.mv_data, ek, el) != 0)
				ok = false;
			if (!rec_live(x)) {
				if (x->create || x->version || x->lease ||
				    x->vlen)
					ok = false;
			} else if (i > 0 && rec_live(&it.out[i - 1])) {
				const struct rec *p = &it.out[i - 1];
				if (x->create != p->create ||
				    x->version != p->version + 1)
					ok = false;
			} else if (i > 0) {
				if (x->version != 1 || x->create != x->main)
					ok = false;
			} else if (x->version < 1 || x->create > x->main) {
				ok = false;
			}
		}
	}
	free(pkbuf);
	kiter_close(&it);
	if (rc != 0)
		ok = false;
	if (m->compact_rev > m->rev)
		ok = false;
out:
	view_close(&vw);
	return ok;
}

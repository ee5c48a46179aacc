/* Model-based randomized test of the MVCC store.
 *
 * A small in-memory reference of etcd v3.4's semantics (per-key history
 * arrays, key sets as bitmasks) runs the same random requests as the store:
 * puts, deletes (all range_end conventions), ranges at random revisions
 * with limits, sorts and filters, txns with random compares and nested
 * txns (duplicate-key and op-count rules included), compaction at random
 * revisions with lazy physical compaction, events, commits and reopens.
 * Every result field is compared. Keys: 20, short and long ones (right
 * at the LMDB boundary, sharing a long prefix, 4 KiB), so histories and
 * long-key groups collide.
 *
 * Seed variants: every 2nd compacts rarely (long histories), every 3rd
 * starts with a 64 KiB map (KV_EAGAIN and growth), every 4th makes all
 * long-key hashes collide.
 *
 * MVCC_MODEL_OPS (default 100000) ops per seed, MVCC_MODEL_SEEDS (default
 * 4) seeds, MVCC_MODEL_SEED0 the first seed. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "mvcc_test_util.h"
#include "storage/mvcc.h"

/* ---- random ----------------------------------------------------------- */

static uint64_t rng;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static unsigned rn(unsigned n)
{
	return (unsigned)(rnd() % n);
}

/* ---- key and value tables --------------------------------------------- */

#define NK 20
#define NEXTRA 8
#define NV 8

struct bytes {
	uint8_t *p;
	size_t n;
};

static struct bytes keys[NK];       /* sorted by byte order */
static struct bytes extra[NEXTRA];  /* range bounds that are not keys */
static struct bytes vals[NV];
static size_t short_max;

static int bcmp_(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
	size_t n = al < bl ? al : bl;
	int c = n ? memcmp(a, b, n) : 0;

	if (c)
		return c;
	return al < bl ? -1 : al > bl;
}

static int key_sort(const void *x, const void *y)
{
	const struct bytes *a = x, *b = y;

	return bcmp_(a->p, a->n, b->p, b->n);
}

static struct bytes mk(const char *prefix, size_t fill_n, char fill,
		       const char *suffix)
{
	size_t pl = strlen(prefix), sl = strlen(suffix);
	struct bytes b;

	b.n = pl + fill_n + sl;
	b.p = malloc(b.n + 1);
	memcpy(b.p, prefix, pl);
	memset(b.p + pl, fill, fill_n);
	memcpy(b.p + pl + fill_n, suffix, sl);
	return b;
}

static void setup_tables(void)
{
	MDB_env *env;
	size_t P;

	mdb_env_create(&env);
	short_max = (size_t)mdb_env_get_maxkeysize(env) - 25;
	mdb_env_close(env);
	P = short_max;
	int i = 0;
	keys[i++] = mk("a", 0, 0, "");
	keys[i++] = mk("ab", 0, 0, "");
	keys[i++] = mk("abc", 0, 0, "");
	keys[i++] = mk("b", 0, 0, "");
	keys[i++] = mk("b", 0, 0, "\xff");
	keys[i++] = mk("c", 0, 0, "");
	keys[i++] = mk("c", 1, 0, ""); /* "c\0" */
	keys[i++] = mk("d", 0, 0, "");
	keys[i++] = mk("", P - 1, 'p', "");      /* short, < the group */
	keys[i++] = mk("", P, 'p', "");          /* exactly short_max */
	keys[i++] = mk("", P, 'p', "a");         /* long */
	keys[i++] = mk("", P, 'p', "b");         /* long, same group */
	keys[i++] = mk("", P, 'p', "a\x01");     /* long, same group */
	keys[i++] = mk("", P + 60, 'p', "");     /* long, all p */
	keys[i++] = mk("", 4096, 'p', "");       /* 4 KiB, same group */
	keys[i++] = mk("", P - 1, 'p', "q");     /* short, > group */
	keys[i++] = mk("", P - 1, 'p', "qz");    /* long, another group */
	keys[i++] = mk("", P - 1, 'p', "o");     /* short, < group */
	keys[i++] = mk("z", 0, 0, "");
	keys[i++] = mk("zz", 0, 0, "");
	assert_int_equal(i, NK);
	qsort(keys, NK, sizeof(keys[0]), key_sort);
	for (int j = 1; j < NK; j++)
		assert_true(key_sort(&keys[j - 1], &keys[j]) < 0);
	i = 0;
	extra[i++] = mk("", 1, 0, "");     /* "\0": all keys */
	extra[i++] = mk("a", 0, 0, "\x01");
	extra[i++] = mk("b", 0, 0, "\xff\xff");
	extra[i++] = mk("", P, 'p', "");
	extra[i - 1].p[P - 1] = 'q'; /* prefix end of the p-group */
	extra[i++] = mk("", P, 'p', "a\x00");
	extra[i - 1].n = P + 2;
	extra[i++] = mk("", P + 1, 'p', "");
	extra[i++] = mk("", 2, 'p', "");
	extra[i++] = mk("e", 0, 0, "");
	assert_int_equal(i, NEXTRA);
	vals[0] = mk("", 0, 0, "");
	vals[1] = mk("v1", 0, 0, "");
	vals[2] = mk("v2", 0, 0, "");
	vals[3] = mk("v3", 0, 0, "");
	vals[4] = mk("v", 300, 'x', "");
	vals[5] = mk("a", 0, 0, "");
	vals[6] = mk("zzz", 0, 0, "");
	vals[7] = mk("v1", 1, 0, "");
}

static int key_index(const uint8_t *k, size_t n)
{
	for (int i = 0; i < NK; i++)
		if (keys[i].n == n && memcmp(keys[i].p, k, n) == 0)
			return i;
	return -1;
}

/* ---- the reference model ---------------------------------------------- */

struct mrec {
	int64_t main, sub;
	bool tomb;
	const uint8_t *v;
	size_t vl;
	int64_t lease, create, version;
};

struct mhist {
	struct mrec *r;
	size_t n, cap;
};

struct model {
	struct mhist h[NK];
	int64_t rev, compact;
	int64_t begin, nch;
};

static void mh_push(struct mhist *h, const struct mrec *r)
{
	if (h->n == h->cap) {
		h->cap = h->cap ? h->cap * 2 : 8;
		h->r = realloc(h->r, h->cap * sizeof(*h->r));
	}
	h->r[h->n++] = *r;
}

static const struct mrec *m_get(const struct model *M, int k, int64_t at)
{
	const struct mhist *h = &M->h[k];

	for (size_t i = h->n; i-- > 0;)
		if (h->r[i].main <= at)
			return &h->r[i];
	return NULL;
}

static const struct mrec *m_live(const struct model *M, int k, int64_t at)
{
	const struct mrec *r = m_get(M, k, at);

	return r && !r->tomb ? r : NULL;
}

/* Key k in [b, e) with etcd's conventions. */
static bool m_in(int k, const uint8_t *b, size_t bl, const uint8_t *e,
		 size_t el)
{
	const struct bytes *x = &keys[k];

	if (el == 0)
		return bcmp_(x->p, x->n, b, bl) == 0;
	if (bcmp_(x->p, x->n, b, bl) < 0)
		return false;
	if (el == 1 && e[0] == 0)
		return true;
	return bcmp_(x->p, x->n, e, el) < 0;
}

static void m_kv(int k, const struct mrec *r, bool keys_only,
		 struct mvcc_kv *o)
{
	o->key = keys[k].p;
	o->key_len = keys[k].n;
	o->value = keys_only || r->vl == 0 ? NULL : r->v;
	o->value_len = keys_only ? 0 : r->vl;
	o->create_revision = r->create;
	o->mod_revision = r->main;
	o->version = r->version;
	o->lease = r->lease;
}

static int64_t sort_val(int k, const struct mrec *r, int t)
{
	switch (t) {
	case MVCC_SORT_VERSION:
		return r->version;
	case MVCC_SORT_CREATE:
		return r->create;
	case MVCC_SORT_MOD:
		return r->main;
	default:
		return k;
	}
}

static int m_range(const struct model *M, const struct mvcc_range_req *q,
		   int64_t cur, struct mvcc_arena *a,
		   struct mvcc_range_res *res)
{
	int ks[NK];
	const struct mrec *rs[NK];
	int n = 0, count = 0;

	memset(res, 0, sizeof(*res));
	if (q->revision > cur)
		return KV_EFUTUREREV;
	int64_t at = q->revision <= 0 ? cur : q->revision;
	if (at < M->compact)
		return KV_ECOMPACTED;
	for (int k = 0; k < NK; k++) {
		if (!m_in(k, q->key, q->key_len, q->range_end,
			  q->range_end_len))
			continue;
		const struct mrec *r = m_live(M, k, at);
		if (r == NULL)
			continue;
		count++;
		if (q->max_mod_revision && r->main > q->max_mod_revision)
			continue;
		if (q->min_mod_revision && r->main < q->min_mod_revision)
			continue;
		if (q->max_create_revision && r->create > q->max_create_revision)
			continue;
		if (q->min_create_revision && r->create < q->min_create_revision)
			continue;
		ks[n] = k;
		rs[n] = r;
		n++;
	}
	/* etcd fetches everything only for sort_order != NONE or filters;
	 * otherwise limit + 1 keys in key order, sorted afterwards. */
	bool filt = q->min_mod_revision || q->max_mod_revision ||
		    q->min_create_revision || q->max_create_revision;
	if (q->sort_order == MVCC_SORT_NONE && !filt && q->limit > 0 &&
	    n > q->limit + 1)
		n = (int)q->limit + 1;
	int order = q->sort_order;
	if (q->sort_target != MVCC_SORT_KEY && order == MVCC_SORT_NONE)
		order = MVCC_SORT_ASCEND;
	if (order != MVCC_SORT_NONE) {
		/* Insertion sort: stable, ties stay in key order. */
		for (int i = 1; i < n; i++) {
			int kk = ks[i];
			const struct mrec *rr = rs[i];
			int j = i;
			while (j > 0) {
				int c;
				if (q->sort_target == MVCC_SORT_VALUE)
					c = bcmp_(rs[j - 1]->v, rs[j - 1]->vl,
						  rr->v, rr->vl);
				else {
					int64_t x = sort_val(ks[j - 1],
							     rs[j - 1],
							     q->sort_target);
					int64_t y = sort_val(kk, rr,
							     q->sort_target);
					c = x < y ? -1 : x > y;
				}
				if (order == MVCC_SORT_DESCEND ? c >= 0 : c <= 0)
					break;
				ks[j] = ks[j - 1];
				rs[j] = rs[j - 1];
				j--;
			}
			ks[j] = kk;
			rs[j] = rr;
		}
	}
	if (q->count_only)
		n = 0;
	if (q->limit > 0 && n > q->limit) {
		n = (int)q->limit;
		res->more = true;
	}
	res->kvs = mvcc_arena_alloc(a, (size_t)(n + 1) * sizeof(struct mvcc_kv));
	for (int i = 0; i < n; i++)
		m_kv(ks[i], rs[i], q->keys_only, &res->kvs[i]);
	res->n_kvs = (size_t)n;
	res->count = count;
	res->header_revision = cur;
	return 0;
}

static void m_write(struct model *M, int k, bool tomb, const uint8_t *v,
		    size_t vl, int64_t lease)
{
	struct mrec r = { 0 };
	int64_t rev = M->begin + 1;
	const struct mrec *p = m_live(M, k, INT64_MAX);

	r.main = rev;
	r.sub = M->nch++;
	r.tomb = tomb;
	if (!tomb) {
		r.v = v;
		r.vl = vl;
		r.lease = lease;
		r.create = p ? p->create : rev;
		r.version = p ? p->version + 1 : 1;
	}
	mh_push(&M->h[k], &r);
}

static int m_put(struct model *M, const struct mvcc_put_req *q, bool in_txn,
		 struct mvcc_arena *a, struct mvcc_put_res *res)
{
	int k = key_index(q->key, q->key_len);
	const struct mrec *p = m_live(M, k, INT64_MAX);

	memset(res, 0, sizeof(*res));
	if (q->ignore_value && q->value_len)
		return KV_EINVAL;
	if (q->ignore_lease && q->lease)
		return KV_EINVAL;
	if ((q->ignore_value || q->ignore_lease) && !p && !in_txn)
		return KV_ENOTFOUND;
	const uint8_t *v = q->value;
	size_t vl = q->value_len;
	int64_t lease = q->lease;
	if (q->ignore_value) {
		v = p ? p->v : NULL;
		vl = p ? p->vl : 0;
	}
	if (q->ignore_lease)
		lease = p ? p->lease : 0;
	if (q->prev_kv && p) {
		res->prev_kv = mvcc_arena_alloc(a, sizeof(struct mvcc_kv));
		m_kv(k, p, false, res->prev_kv);
	}
	m_write(M, k, false, v, vl, lease);
	res->header_revision = M->begin + 1;
	return 0;
}

static int m_delete(struct model *M, const struct mvcc_delete_req *q,
		    struct mvcc_arena *a, struct mvcc_delete_res *res)
{
	int ks[NK], n = 0;

	memset(res, 0, sizeof(*res));
	for (int k = 0; k < NK; k++)
		if (m_in(k, q->key, q->key_len, q->range_end,
			 q->range_end_len) &&
		    m_live(M, k, INT64_MAX))
			ks[n++] = k;
	if (n == 0) {
		res->header_revision = M->begin + (M->nch > 0);
		return 0;
	}
	if (q->prev_kv) {
		res->prev_kvs = mvcc_arena_alloc(a, (size_t)n * sizeof(struct mvcc_kv));
		for (int i = 0; i < n; i++)
			m_kv(ks[i], m_live(M, ks[i], INT64_MAX), false,
			     &res->prev_kvs[i]);
		res->n_prev_kvs = (size_t)n;
	}
	for (int i = 0; i < n; i++)
		m_write(M, ks[i], true, NULL, 0, 0);
	res->deleted = n;
	res->header_revision = M->begin + 1;
	return 0;
}

/* Key set of a delete, taking range_end literally (etcd's interval tree). */
static uint32_t del_mask(const struct mvcc_delete_req *d)
{
	uint32_t m = 0;

	for (int k = 0; k < NK; k++) {
		const struct bytes *x = &keys[k];
		bool hit;
		if (d->range_end_len == 0)
			hit = bcmp_(x->p, x->n, d->key, d->key_len) == 0;
		else
			hit = bcmp_(d->key, d->key_len, x->p, x->n) <= 0 &&
			      bcmp_(x->p, x->n, d->range_end,
				    d->range_end_len) < 0;
		if (hit)
			m |= 1u << k;
	}
	return m;
}

static bool m_dups(const struct mvcc_request_op *ops, size_t n,
		   uint32_t *puts, uint32_t *dels)
{
	*puts = 0;
	*dels = 0;
	for (size_t i = 0; i < n; i++)
		if (ops[i].type == MVCC_OP_DELETE_RANGE)
			*dels |= del_mask(&ops[i].u.delete_range);
	for (size_t i = 0; i < n; i++) {
		if (ops[i].type != MVCC_OP_TXN)
			continue;
		uint32_t pt, dt, pe, de;
		const struct mvcc_txn_req *t = ops[i].u.txn;
		if (m_dups(t->success, t->n_success, &pt, &dt) ||
		    m_dups(t->failure, t->n_failure, &pe, &de))
			return true;
		if ((pt & *puts) || (pt & *dels))
			return true;
		*puts |= pt;
		if ((pe & *puts & ~pt) || (pe & *dels))
			return true;
		*puts |= pe;
		*dels |= dt | de;
	}
	for (size_t i = 0; i < n; i++) {
		if (ops[i].type != MVCC_OP_PUT)
			continue;
		uint32_t b = 1u << key_index(ops[i].u.put.key,
					     ops[i].u.put.key_len);
		if ((*puts | *dels) & b)
			return true;
		*puts |= b;
	}
	return false;
}

static bool m_bad_put(const struct mvcc_txn_req *t)
{
	for (int br = 0; br < 2; br++) {
		const struct mvcc_request_op *ops = br ? t->failure : t->success;
		size_t n = br ? t->n_failure : t->n_success;
		for (size_t i = 0; i < n; i++) {
			const struct mvcc_request_op *o = &ops[i];
			if (o->type == MVCC_OP_TXN && m_bad_put(o->u.txn))
				return true;
			if (o->type == MVCC_OP_PUT &&
			    ((o->u.put.ignore_value && o->u.put.value_len) ||
			     (o->u.put.ignore_lease && o->u.put.lease)))
				return true;
		}
	}
	return false;
}

static int64_t m_opc(const struct mvcc_txn_req *t)
{
	size_t o = t->n_compare;
	if (o < t->n_success)
		o = t->n_success;
	if (o < t->n_failure)
		o = t->n_failure;
	return (int64_t)o;
}

static bool m_too_many(const struct mvcc_txn_req *t, int64_t max)
{
	if (m_opc(t) > max)
		return true;
	for (int br = 0; br < 2; br++) {
		const struct mvcc_request_op *ops = br ? t->failure : t->success;
		size_t n = br ? t->n_failure : t->n_success;
		for (size_t i = 0; i < n; i++)
			if (ops[i].type == MVCC_OP_TXN &&
			    m_too_many(ops[i].u.txn, max - m_opc(t)))
				return true;
	}
	return false;
}

static bool m_cmp(const struct model *M, const struct mvcc_compare *c,
		  int64_t at)
{
	int n = 0;
	bool ok = true;

	for (int k = 0; k < NK; k++) {
		if (!m_in(k, c->key, c->key_len, c->range_end,
			  c->range_end_len))
			continue;
		const struct mrec *r = m_live(M, k, at);
		if (!r)
			continue;
		n++;
		int res;
		if (c->target == MVCC_CMP_VALUE)
			res = bcmp_(r->v, r->vl, c->value, c->value_len);
		else {
			int64_t x = c->target == MVCC_CMP_VERSION ? r->version
				  : c->target == MVCC_CMP_CREATE ? r->create
				  : c->target == MVCC_CMP_MOD    ? r->main
								 : r->lease;
			res = x < c->number ? -1 : x > c->number;
		}
		bool h = c->result == MVCC_CMP_EQUAL     ? res == 0
		       : c->result == MVCC_CMP_NOT_EQUAL ? res != 0
		       : c->result == MVCC_CMP_GREATER   ? res > 0
							 : res < 0;
		ok = ok && h;
	}
	if (n > 0)
		return ok;
	if (c->target == MVCC_CMP_VALUE)
		return false;
	int res = 0 < c->number ? -1 : 0 > c->number;
	return c->result == MVCC_CMP_EQUAL     ? res == 0
	     : c->result == MVCC_CMP_NOT_EQUAL ? res != 0
	     : c->result == MVCC_CMP_GREATER   ? res > 0
					       : res < 0;
}

/* Path as a list; nested txns read from the pre-state. */
static void m_path(const struct model *M, const struct mvcc_txn_req *t,
		   int64_t at, bool *path, size_t *np)
{
	bool ok = true;

	for (size_t i = 0; i < t->n_compare; i++)
		ok = ok && m_cmp(M, &t->compare[i], at);
	path[(*np)++] = ok;
	const struct mvcc_request_op *ops = ok ? t->success : t->failure;
	size_t n = ok ? t->n_success : t->n_failure;
	for (size_t i = 0; i < n; i++)
		if (ops[i].type == MVCC_OP_TXN)
			m_path(M, ops[i].u.txn, at, path, np);
}

/* Pre-checks over the selected ops: kind 0 puts, 1 ranges. */
static int m_pre(const struct model *M, const struct mvcc_txn_req *t,
		 const bool *path, size_t *pi, int kind)
{
	bool ok = path[(*pi)++];
	const struct mvcc_request_op *ops = ok ? t->success : t->failure;
	size_t n = ok ? t->n_success : t->n_failure;

	for (size_t i = 0; i < n; i++) {
		const struct mvcc_request_op *o = &ops[i];
		int rc = 0;
		if (o->type == MVCC_OP_TXN) {
			rc = m_pre(M, o->u.txn, path, pi, kind);
		} else if (kind == 0 && o->type == MVCC_OP_PUT &&
			   (o->u.put.ignore_value || o->u.put.ignore_lease)) {
			int k = key_index(o->u.put.key, o->u.put.key_len);
			if (!m_live(M, k, M->rev))
				rc = KV_ENOTFOUND;
		} else if (kind == 1 && o->type == MVCC_OP_RANGE &&
			   o->u.range.revision != 0) {
			if (o->u.range.revision > M->rev)
				rc = KV_EFUTUREREV;
			else if (o->u.range.revision < M->compact)
				rc = KV_ECOMPACTED;
		}
		if (rc)
			return rc;
	}
	return 0;
}

static void m_exec(struct model *M, const struct mvcc_txn_req *t, bool write,
		   const bool *path, size_t *pi, struct mvcc_arena *a,
		   struct mvcc_txn_res *res)
{
	bool ok = path[(*pi)++];
	const struct mvcc_request_op *ops = ok ? t->success : t->failure;
	size_t n = ok ? t->n_success : t->n_failure;

	res->succeeded = ok;
	res->n_responses = n;
	res->header_revision = 0;
	res->responses = mvcc_arena_alloc(a, (n + 1) * sizeof(*res->responses));
	memset(res->responses, 0, (n + 1) * sizeof(*res->responses));
	for (size_t i = 0; i < n; i++) {
		struct mvcc_response_op *r = &res->responses[i];
		r->type = ops[i].type;
		switch (ops[i].type) {
		case MVCC_OP_RANGE:
			m_range(M, &ops[i].u.range,
				write ? M->begin + (M->nch > 0) : M->rev, a,
				&r->u.range);
			break;
		case MVCC_OP_PUT:
			m_put(M, &ops[i].u.put, true, a, &r->u.put);
			break;
		case MVCC_OP_DELETE_RANGE:
			m_delete(M, &ops[i].u.delete_range, a,
				 &r->u.delete_range);
			break;
		case MVCC_OP_TXN:
			r->u.txn = mvcc_arena_alloc(a, sizeof(*r->u.txn));
			memset(r->u.txn, 0, sizeof(*r->u.txn));
			m_exec(M, ops[i].u.txn, write, path, pi, a, r->u.txn);
			break;
		}
	}
}

static bool m_readonly(const struct mvcc_txn_req *t)
{
	for (size_t i = 0; i < t->n_success; i++)
		if (t->success[i].type != MVCC_OP_RANGE)
			return false;
	for (size_t i = 0; i < t->n_failure; i++)
		if (t->failure[i].type != MVCC_OP_RANGE)
			return false;
	return true;
}

static int m_txn(struct model *M, const struct mvcc_txn_req *t,
		 struct mvcc_arena *a, struct mvcc_txn_res *res)
{
	bool path[512];
	size_t np = 0, pi;
	uint32_t p, d;
	int rc;

	memset(res, 0, sizeof(*res));
	if (m_too_many(t, 128) || m_bad_put(t))
		return KV_EINVAL;
	if (m_dups(t->success, t->n_success, &p, &d) ||
	    m_dups(t->failure, t->n_failure, &p, &d))
		return KV_EINVAL;
	bool write = !m_readonly(t);
	m_path(M, t, M->rev, path, &np);
	if (write) {
		pi = 0;
		rc = m_pre(M, t, path, &pi, 0);
		if (rc)
			return rc;
	}
	pi = 0;
	rc = m_pre(M, t, path, &pi, 1);
	if (rc)
		return rc;
	M->begin = M->rev;
	M->nch = 0;
	pi = 0;
	m_exec(M, t, write, path, &pi, a, res);
	if (M->nch)
		M->rev = M->begin + 1;
	res->header_revision = M->rev;
	return 0;
}

static int m_compact(struct model *M, int64_t rev)
{
	if (rev <= M->compact)
		return KV_ECOMPACTED;
	if (rev > M->rev)
		return KV_EFUTUREREV;
	M->compact = rev;
	for (int k = 0; k < NK; k++) {
		struct mhist *h = &M->h[k];
		ssize_t keep = -1;
		for (size_t i = 0; i < h->n && h->r[i].main <= rev; i++)
			keep = (ssize_t)i;
		if (keep < 0)
			continue;
		size_t from = h->r[keep].tomb ? (size_t)keep + 1 : (size_t)keep;
		memmove(h->r, h->r + from, (h->n - from) * sizeof(*h->r));
		h->n -= from;
	}
	return 0;
}

/* ---- comparisons ------------------------------------------------------ */

static void kv_check(const struct mvcc_kv *e, const struct mvcc_kv *g)
{
	if (e->key_len != g->key_len || e->mod_revision != g->mod_revision ||
	    e->version != g->version || e->value_len != g->value_len)
		fprintf(stderr, "kv mismatch: key %zu/%zu mod %lld/%lld ver %lld/%lld\n",
			e->key_len, g->key_len, (long long)e->mod_revision,
			(long long)g->mod_revision, (long long)e->version,
			(long long)g->version);
	assert_int_equal(e->key_len, g->key_len);
	assert_memory_equal(e->key, g->key, e->key_len);
	assert_int_equal(e->value_len, g->value_len);
	if (e->value_len)
		assert_memory_equal(e->value, g->value, e->value_len);
	assert_int_equal(e->create_revision, g->create_revision);
	assert_int_equal(e->mod_revision, g->mod_revision);
	assert_int_equal(e->version, g->version);
	assert_int_equal(e->lease, g->lease);
}

static void range_check(const struct mvcc_range_res *e,
			const struct mvcc_range_res *g)
{
	if (getenv("MVCC_MODEL_TRACE")) {
		fprintf(stderr, "range: exp n=%zu count=%lld got n=%zu count=%lld\n",
			e->n_kvs, (long long)e->count, g->n_kvs, (long long)g->count);
		for (size_t i = 0; i < e->n_kvs || i < g->n_kvs; i++)
			fprintf(stderr, "  %zu: exp %zu@%lld c%lld got %zu@%lld c%lld\n", i,
				i < e->n_kvs ? e->kvs[i].key_len : 0,
				i < e->n_kvs ? (long long)e->kvs[i].mod_revision : 0,
				i < e->n_kvs ? (long long)e->kvs[i].create_revision : 0,
				i < g->n_kvs ? g->kvs[i].key_len : 0,
				i < g->n_kvs ? (long long)g->kvs[i].mod_revision : 0,
				i < g->n_kvs ? (long long)g->kvs[i].create_revision : 0);
	}
	assert_int_equal(e->header_revision, g->header_revision);
	assert_int_equal(e->count, g->count);
	assert_int_equal(e->more, g->more);
	assert_int_equal(e->n_kvs, g->n_kvs);
	for (size_t i = 0; i < e->n_kvs; i++)
		kv_check(&e->kvs[i], &g->kvs[i]);
}

static void put_check(const struct mvcc_put_res *e,
		      const struct mvcc_put_res *g)
{
	assert_int_equal(e->header_revision, g->header_revision);
	assert_int_equal(e->prev_kv != NULL, g->prev_kv != NULL);
	if (e->prev_kv)
		kv_check(e->prev_kv, g->prev_kv);
}

static void del_check(const struct mvcc_delete_res *e,
		      const struct mvcc_delete_res *g)
{
	assert_int_equal(e->header_revision, g->header_revision);
	assert_int_equal(e->deleted, g->deleted);
	assert_int_equal(e->n_prev_kvs, g->n_prev_kvs);
	for (size_t i = 0; i < e->n_prev_kvs; i++)
		kv_check(&e->prev_kvs[i], &g->prev_kvs[i]);
}

static void txn_check(const struct mvcc_txn_res *e,
		      const struct mvcc_txn_res *g)
{
	assert_int_equal(e->header_revision, g->header_revision);
	assert_int_equal(e->succeeded, g->succeeded);
	assert_int_equal(e->n_responses, g->n_responses);
	for (size_t i = 0; i < e->n_responses; i++) {
		const struct mvcc_response_op *x = &e->responses[i],
					      *y = &g->responses[i];
		assert_int_equal(x->type, y->type);
		switch (x->type) {
		case MVCC_OP_RANGE:
			range_check(&x->u.range, &y->u.range);
			break;
		case MVCC_OP_PUT:
			put_check(&x->u.put, &y->u.put);
			break;
		case MVCC_OP_DELETE_RANGE:
			del_check(&x->u.delete_range, &y->u.delete_range);
			break;
		case MVCC_OP_TXN:
			txn_check(x->u.txn, y->u.txn);
			break;
		}
	}
}

/* ---- random requests --------------------------------------------------- */

static struct bytes rkey(void)
{
	return keys[rn(NK)];
}

static struct bytes rbound(void)
{
	return rn(4) == 0 ? extra[rn(NEXTRA)] : keys[rn(NK)];
}

static void rend(const uint8_t **e, size_t *el)
{
	unsigned c = rn(5);
	if (c <= 1) {
		*e = NULL;
		*el = 0;
	} else if (c == 2) {
		*e = extra[0].p; /* "\0" */
		*el = 1;
	} else {
		struct bytes b = rbound();
		*e = b.p;
		*el = b.n;
	}
}

static int64_t rrev(const struct model *M)
{
	switch (rn(6)) {
	case 0:
		return 0;
	case 1:
		return M->rev;
	case 2:
		return M->rev + 1;
	case 3:
		return M->compact + (int64_t)rn(3) - 1;
	case 4:
		return -1;
	default:
		return M->compact + 1 + (int64_t)rn((unsigned)(M->rev - M->compact + 1));
	}
}

static void gen_range(const struct model *M, struct mvcc_range_req *q,
		      bool historical)
{
	memset(q, 0, sizeof(*q));
	struct bytes k = rbound();
	q->key = k.p;
	q->key_len = k.n;
	rend(&q->range_end, &q->range_end_len);
	if (rn(3) == 0)
		q->limit = rn(5);
	if (historical || rn(3) == 0)
		q->revision = rrev(M);
	if (rn(3) == 0) {
		q->sort_order = rn(3);
		q->sort_target = rn(5);
	}
	q->keys_only = rn(6) == 0;
	q->count_only = rn(8) == 0;
	if (rn(5) == 0) {
		int64_t span = M->rev + 2;
		switch (rn(4)) {
		case 0:
			q->min_mod_revision = (int64_t)rn((unsigned)span);
			break;
		case 1:
			q->max_mod_revision = (int64_t)rn((unsigned)span);
			break;
		case 2:
			q->min_create_revision = (int64_t)rn((unsigned)span);
			break;
		default:
			q->max_create_revision = (int64_t)rn((unsigned)span);
			break;
		}
	}
}

static void gen_put(struct mvcc_put_req *q)
{
	memset(q, 0, sizeof(*q));
	struct bytes k = rkey(), v = vals[rn(NV)];
	q->key = k.p;
	q->key_len = k.n;
	q->value = v.p;
	q->value_len = v.n;
	q->lease = rn(4) == 0 ? (int64_t)rn(3) : 0;
	q->prev_kv = rn(2);
	if (rn(12) == 0) {
		q->ignore_value = true;
		if (rn(4))
			q->value_len = 0;
	}
	if (rn(12) == 0) {
		q->ignore_lease = true;
		if (rn(4))
			q->lease = 0;
	}
}

static void gen_del(struct mvcc_delete_req *q)
{
	memset(q, 0, sizeof(*q));
	struct bytes k = rbound();
	q->key = k.p;
	q->key_len = k.n;
	rend(&q->range_end, &q->range_end_len);
	q->prev_kv = rn(2);
}

static void gen_ops(const struct model *M, struct mvcc_arena *a, int depth,
		    struct mvcc_request_op **ops, size_t *n);

static struct mvcc_txn_req *gen_txn(const struct model *M,
				    struct mvcc_arena *a, int depth)
{
	struct mvcc_txn_req *t = mvcc_arena_alloc(a, sizeof(*t));
	memset(t, 0, sizeof(*t));
	t->n_compare = rn(4);
	struct mvcc_compare *c =
		mvcc_arena_alloc(a, (t->n_compare + 1) * sizeof(*c));
	memset(c, 0, (t->n_compare + 1) * sizeof(*c));
	for (size_t i = 0; i < t->n_compare; i++) {
		struct bytes k = rn(5) ? rkey() : rbound();
		c[i].key = k.p;
		c[i].key_len = k.n;
		if (rn(5) == 0)
			rend(&c[i].range_end, &c[i].range_end_len);
		c[i].result = rn(4);
		c[i].target = rn(5);
		switch (c[i].target) {
		case MVCC_CMP_VALUE: {
			struct bytes v = vals[rn(NV)];
			c[i].value = v.p;
			c[i].value_len = v.n;
			break;
		}
		case MVCC_CMP_VERSION:
			c[i].number = rn(4);
			break;
		case MVCC_CMP_LEASE:
			c[i].number = rn(3);
			break;
		default:
			c[i].number = rn(2) ? 0 : (int64_t)rn((unsigned)M->rev + 2);
		}
	}
	t->compare = c;
	struct mvcc_request_op *s, *f;
	gen_ops(M, a, depth, &s, &t->n_success);
	gen_ops(M, a, depth, &f, &t->n_failure);
	t->success = s;
	t->failure = f;
	return t;
}

static void gen_ops(const struct model *M, struct mvcc_arena *a, int depth,
		    struct mvcc_request_op **ops, size_t *n)
{
	*n = rn(4);
	*ops = mvcc_arena_alloc(a, (*n + 1) * sizeof(**ops));
	memset(*ops, 0, (*n + 1) * sizeof(**ops));
	for (size_t i = 0; i < *n; i++) {
		struct mvcc_request_op *o = &(*ops)[i];
		unsigned c = rn(depth < 2 ? 10 : 9);
		if (c < 3) {
			o->type = MVCC_OP_RANGE;
			gen_range(M, &o->u.range, false);
		} else if (c < 6) {
			o->type = MVCC_OP_PUT;
			gen_put(&o->u.put);
		} else if (c < 9) {
			o->type = MVCC_OP_DELETE_RANGE;
			gen_del(&o->u.delete_range);
			/* Few range deletes, or every txn is a duplicate. */
			if (rn(3))
				o->u.delete_range.range_end_len = 0;
		} else {
			o->type = MVCC_OP_TXN;
			o->u.txn = gen_txn(M, a, depth + 1);
		}
	}
}

/* ---- the driver -------------------------------------------------------- */

struct run {
	struct model M;
	struct mvcc_options opts; /* tiny initial map on some seeds */
	bool rare_compact;        /* long histories on some seeds */
	bool collide;             /* all long-key hashes collide */
	unsigned long again;      /* KV_EAGAIN retries seen */
	struct mvcc *m;
	char *dir;
	struct mvcc_arena a;
	unsigned long stats[16];
};

/* KV_EAGAIN: nothing changed; commit, begin (the map grows) and retry. */
#define RETRY(R, call)                                                   \
	({                                                               \
		int rc_;                                                 \
		while ((rc_ = (call)) == KV_EAGAIN) {                    \
			(R)->again++;                                    \
			assert_int_equal(mvcc_commit((R)->m, false), 0); \
			assert_int_equal(mvcc_begin_write((R)->m), 0);   \
		}                                                        \
		rc_;                                                     \
	})

static void reopen(struct run *R)
{
	if (mvcc_in_write(R->m))
		assert_int_equal(mvcc_commit(R->m, rn(2)), 0);
	mvcc_close(R->m);
	assert_int_equal(mvcc_open(R->dir, &R->opts, &R->m), 0);
	if (R->collide)
		mvcc_test_collide_hashes(R->m);
	assert_int_equal(mvcc_revision(R->m), R->M.rev);
	assert_int_equal(mvcc_compact_revision(R->m), R->M.compact);
}

static void ensure_write(struct run *R)
{
	if (!mvcc_in_write(R->m))
		assert_int_equal(mvcc_begin_write(R->m), 0);
}

static void full_compare(struct run *R)
{
	struct mvcc_range_req q = { 0 };
	struct mvcc_range_res e, g;
	int64_t revs[3] = { 0, R->M.rev - 1, R->M.compact + 1 };

	q.key = extra[0].p;
	q.key_len = 1;
	q.range_end = extra[0].p;
	q.range_end_len = 1;
	for (int i = 0; i < 3; i++) {
		q.revision = revs[i];
		if (q.revision > R->M.rev || q.revision < R->M.compact)
			continue;
		int re = m_range(&R->M, &q, R->M.rev, &R->a, &e);
		int rg = mvcc_range(R->m, NULL, &q, &R->a, &g);
		assert_int_equal(re, rg);
		if (re == 0)
			range_check(&e, &g);
	}
	assert_true(mvcc_invariants_ok(R->m));
}

/* Events from a random start (>= the compacted revision), with physical
 * compaction finished or not. */
struct flat {
	int k;
	const struct mrec *r;
};

static int flat_cmp(const void *x, const void *y)
{
	const struct flat *a = x, *b = y;

	if (a->r->main != b->r->main)
		return a->r->main < b->r->main ? -1 : 1;
	return a->r->sub < b->r->sub ? -1 : a->r->sub > b->r->sub;
}

static void events_compare(struct run *R)
{
	bool done = false;
	struct flat *fl = NULL;
	size_t nf = 0, cap = 0;

	/* Half the time with physical compaction unfinished: the results
	 * must not depend on it. */
	ensure_write(R);
	while (!done && rn(2))
		assert_int_equal(RETRY(R, mvcc_compact_step(R->m, 1000, &done)),
				 0);
	struct mvcc_events_req q = { 0 };
	struct bytes k = rbound();
	q.key = k.p;
	q.key_len = k.n;
	rend(&q.range_end, &q.range_end_len);
	/* From the compacted revision itself: only what compaction kept. */
	int64_t lo = R->M.compact > 1 ? R->M.compact : 1;
	if (R->M.rev - lo > 3000 && rn(4))
		lo = R->M.rev - 3000;
	q.start_revision = lo + (int64_t)rn((unsigned)(R->M.rev - lo + 2));
	q.max_events = 1 + rn(20);
	q.prev_kv = rn(2);
	for (int kk = 0; kk < NK; kk++) {
		if (!m_in(kk, q.key, q.key_len, q.range_end, q.range_end_len))
			continue;
		for (size_t i = 0; i < R->M.h[kk].n; i++) {
			if (R->M.h[kk].r[i].main < q.start_revision)
				continue;
			if (nf == cap) {
				cap = cap ? cap * 2 : 256;
				fl = realloc(fl, cap * sizeof(*fl));
			}
			fl[nf].k = kk;
			fl[nf].r = &R->M.h[kk].r[i];
			nf++;
		}
	}
	if (nf > 1)
		qsort(fl, nf, sizeof(*fl), flat_cmp);
	size_t fi = 0;
	for (;;) {
		struct mvcc_events_res g;
		mvcc_arena_reset(&R->a);
		assert_int_equal(mvcc_events(R->m, NULL, &q, &R->a, &g), 0);
		assert_int_equal(g.header_revision, R->M.rev);
		for (size_t gi = 0; gi < g.n_events; gi++) {
			assert_true(fi < nf);
			int kk = fl[fi].k;
			const struct mrec *mr = fl[fi].r;
			int64_t r = mr->main;
			fi++;
			const struct mvcc_event *ev = &g.events[gi];
			struct mvcc_kv ekv = { 0 };
			if (mr->tomb) {
				assert_int_equal(ev->type, MVCC_EVENT_DELETE);
				ekv.key = keys[kk].p;
				ekv.key_len = keys[kk].n;
				ekv.mod_revision = r;
			} else {
				assert_int_equal(ev->type, MVCC_EVENT_PUT);
				m_kv(kk, mr, false, &ekv);
			}
			kv_check(&ekv, &ev->kv);
			const struct mrec *pr = NULL;
			if (q.prev_kv && !(!mr->tomb && mr->version == 1) &&
			    r - 1 >= R->M.compact)
				pr = m_live(&R->M, kk, r - 1);
			assert_int_equal(pr != NULL, ev->prev_kv != NULL);
			if (pr) {
				struct mvcc_kv pkv;
				m_kv(kk, pr, false, &pkv);
				kv_check(&pkv, ev->prev_kv);
			}
		}
		/* The batch ended at a revision boundary. */
		if (fi < nf)
			assert_true(fl[fi].r->main >= g.next_revision);
		if (g.n_events > 0)
			assert_true(g.events[g.n_events - 1].kv.mod_revision <
				    g.next_revision);
		if (g.next_revision > R->M.rev)
			break;
		assert_true(g.next_revision > q.start_revision);
		q.start_revision = g.next_revision;
	}
	assert_int_equal(fi, nf);
	free(fl);
}

static unsigned long op_no;

static void one_op(struct run *R)
{
	struct mvcc_arena *a = &R->a;
	unsigned c = rn(1000);
	int re, rg;

	mvcc_arena_reset(a);
	op_no++;
	if (getenv("MVCC_MODEL_TRACE"))
		fprintf(stderr, "op %lu kind %u rev %lld\n", op_no, c,
			(long long)R->M.rev);
	if (c < 250) {
		struct mvcc_put_req q;
		struct mvcc_put_res e, g;
		gen_put(&q);
		ensure_write(R);
		R->M.begin = R->M.rev;
		R->M.nch = 0;
		re = m_put(&R->M, &q, false, a, &e);
		if (R->M.nch)
			R->M.rev++;
		rg = RETRY(R, mvcc_put(R->m, &q, a, &g));
		assert_int_equal(re, rg);
		if (re == 0)
			put_check(&e, &g);
		R->stats[0]++;
	} else if (c < 380) {
		struct mvcc_delete_req q;
		struct mvcc_delete_res e, g;
		gen_del(&q);
		ensure_write(R);
		R->M.begin = R->M.rev;
		R->M.nch = 0;
		re = m_delete(&R->M, &q, a, &e);
		if (R->M.nch)
			R->M.rev++;
		rg = RETRY(R, mvcc_delete_range(R->m, &q, a, &g));
		assert_int_equal(re, rg);
		if (re == 0)
			del_check(&e, &g);
		R->stats[1]++;
	} else if (c < 600) {
		struct mvcc_range_req q;
		struct mvcc_range_res e, g;
		gen_range(&R->M, &q, c >= 550);
		if (getenv("MVCC_MODEL_TRACE"))
			fprintf(stderr, "req klen %zu elen %zu lim %lld rev %lld sort %d/%d ko %d co %d mm %lld/%lld mc %lld/%lld\n",
				q.key_len, q.range_end_len, (long long)q.limit, (long long)q.revision,
				q.sort_order, q.sort_target, q.keys_only, q.count_only,
				(long long)q.min_mod_revision, (long long)q.max_mod_revision,
				(long long)q.min_create_revision, (long long)q.max_create_revision);
		re = m_range(&R->M, &q, R->M.rev, a, &e);
		rg = mvcc_range(R->m, NULL, &q, a, &g);
		assert_int_equal(re, rg);
		if (re == 0)
			range_check(&e, &g);
		R->stats[2]++;
	} else if (c < 900) {
		struct mvcc_txn_req *t = gen_txn(&R->M, a, 0);
		struct mvcc_txn_res e, g;
		if (!m_readonly(t) || rn(2))
			ensure_write(R);
		re = m_txn(&R->M, t, a, &e);
		rg = mvcc_in_write(R->m) ? RETRY(R, mvcc_txn(R->m, t, a, &g))
					 : mvcc_txn(R->m, t, a, &g);
		assert_int_equal(re, rg);
		if (re == 0)
			txn_check(&e, &g);
		R->stats[re == 0 ? 3 : 4]++;
	} else if (c < 930 && (!R->rare_compact || rn(10) == 0)) {
		int64_t rev = R->M.compact + (int64_t)rn(
			(unsigned)(R->M.rev - R->M.compact + 2));
		if (rn(10) == 0)
			rev = R->M.compact;
		ensure_write(R);
		re = m_compact(&R->M, rev);
		rg = RETRY(R, mvcc_compact(R->m, rev));
		assert_int_equal(re, rg);
		R->stats[5]++;
	} else if (c < 950) {
		bool done;
		ensure_write(R);
		assert_int_equal(RETRY(R, mvcc_compact_step(R->m, 1 + rn(50),
							      &done)), 0);
		R->stats[6]++;
	} else if (c < 975) {
		if (mvcc_in_write(R->m))
			assert_int_equal(mvcc_commit(R->m, false), 0);
		R->stats[7]++;
		/* A read handle sees the committed state, now the model's. */
		struct mvcc_read *rd;
		struct mvcc_range_req q;
		struct mvcc_range_res e, g;
		gen_range(&R->M, &q, rn(2));
		assert_int_equal(mvcc_read_begin(R->m, &rd), 0);
		assert_int_equal(mvcc_read_revision(rd), R->M.rev);
		re = m_range(&R->M, &q, R->M.rev, a, &e);
		rg = mvcc_range(R->m, rd, &q, a, &g);
		assert_int_equal(re, rg);
		if (re == 0)
			range_check(&e, &g);
		mvcc_read_end(rd);
	} else if (c < 980) {
		reopen(R);
		full_compare(R);
		R->stats[8]++;
	} else if (c < 985) {
		events_compare(R);
		R->stats[9]++;
	} else {
		full_compare(R);
	}
	assert_int_equal(mvcc_revision(R->m), R->M.rev);
}

static void run_seed(uint64_t seed, unsigned long ops)
{
	struct run R;

	memset(&R, 0, sizeof(R));
	rng = seed * 0x9e3779b97f4a7c15ull + 1;
	R.M.rev = 1;
	R.M.compact = -1;
	R.dir = tu_tmpdir();
	if (seed % 3 == 0)
		R.opts.initial_map_bytes = 64 << 10;
	R.rare_compact = seed % 2 == 0;
	R.collide = seed % 4 == 0;
	assert_int_equal(mvcc_open(R.dir, &R.opts, &R.m), 0);
	if (R.collide)
		mvcc_test_collide_hashes(R.m);
	for (unsigned long i = 0; i < ops; i++)
		one_op(&R);
	reopen(&R);
	full_compare(&R);
	events_compare(&R);
	fprintf(stderr,
		"seed %llu: %lu ops: put %lu del %lu range %lu txn %lu "
		"(rejected %lu) compact %lu steps %lu commits %lu reopens %lu "
		"events %lu eagain %lu; rev %lld\n",
		(unsigned long long)seed, ops, R.stats[0], R.stats[1],
		R.stats[2], R.stats[3], R.stats[4], R.stats[5], R.stats[6],
		R.stats[7], R.stats[8], R.stats[9], R.again, (long long)R.M.rev);
	mvcc_close(R.m);
	tu_rmrf(R.dir);
	free(R.dir);
	mvcc_arena_free(&R.a);
	for (int k = 0; k < NK; k++)
		free(R.M.h[k].r);
}

static void test_model_randomized(void **state)
{
	(void)state;
	const char *e = getenv("MVCC_MODEL_OPS");
	unsigned long ops = e ? strtoul(e, NULL, 10) : 100000;
	e = getenv("MVCC_MODEL_SEEDS");
	unsigned long seeds = e ? strtoul(e, NULL, 10) : 4;
	e = getenv("MVCC_MODEL_SEED0");
	unsigned long seed0 = e ? strtoul(e, NULL, 10) : 1;

	setup_tables();
	for (unsigned long s = 0; s < seeds; s++)
		run_seed(seed0 + s, ops);
	for (int i = 0; i < NK; i++)
		free(keys[i].p);
	for (int i = 0; i < NEXTRA; i++)
		free(extra[i].p);
	for (int i = 0; i < NV; i++)
		free(vals[i].p);
}

int main(void)
{
	kv_log_set_level(KV_LOG_WARN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_model_randomized),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* apply_translate.c — etcdserverpb messages <-> storage/mvcc requests and
 * results, etcd's status table, and the checks etcd does before proposing.
 * See kvraft/apply.h for the memory rules (everything in the caller's
 * arena). */
#include <string.h>

#include "kvraft/apply.h"

const struct kv_status kv_statuses[KV_ST__COUNT] = {
#define KV_STATUS_ROW(name, code, msg) [KV_ST_##name] = { code, msg },
	KV_STATUS_MAP(KV_STATUS_ROW)
#undef KV_STATUS_ROW
};

/* etcd's maximum lease TTL (lease.MaxLeaseTTL). */
#define MAX_LEASE_TTL 9000000000LL

/* etcd's default --max-txn-ops. */
#define DEFAULT_MAX_TXN_OPS 128u

static struct kv_status st_of(enum kv_status_id id)
{
	return kv_statuses[id];
}

static void set_st(struct kv_status *st, enum kv_status_id id)
{
	if (st != NULL)
		*st = kv_statuses[id];
}

bool kv_translate_is_fatal(int err)
{
	switch (err) {
	case 0:
	case KV_EINVAL:
	case KV_ENOTFOUND:
	case KV_ECOMPACTED:
	case KV_EFUTUREREV:
	case KV_EFULL:
	case KV_EAGAIN:
	case KV_EEXIST:
	case KV_ERANGE:
		return false;
	default:
		return true;
	}
}

struct kv_status kv_translate_status(int err, const char *errmsg)
{
	if (err == 0)
		return st_of(KV_ST_OK);
	if (errmsg != NULL) {
		for (int i = 1; i < KV_ST__COUNT; i++)
			if (strcmp(kv_statuses[i].msg, errmsg) == 0)
				return kv_statuses[i];
	}
	switch (err) {
	case KV_ECOMPACTED:
		return st_of(KV_ST_COMPACTED);
	case KV_EFUTUREREV:
		return st_of(KV_ST_FUTURE_REV);
	case KV_EFULL:
		return st_of(KV_ST_NO_SPACE);
	case KV_EINVAL:
		if (errmsg != NULL)
			return (struct kv_status){ KV_GRPC_INVALID_ARGUMENT,
						   errmsg };
		return (struct kv_status){ KV_GRPC_INVALID_ARGUMENT,
					   "etcdserver: invalid request" };
	case KV_ENOTFOUND:
		return st_of(KV_ST_KEY_NOT_FOUND);
	default:
		return st_of(KV_ST_STORAGE);
	}
}

/* Zeroed arena memory. */
static void *zalloc(struct mvcc_arena *a, size_t n)
{
	void *p = mvcc_arena_alloc(a, n ? n : 1);

	if (p != NULL)
		memset(p, 0, n ? n : 1);
	return p;
}

/* ---- proto -> mvcc ------------------------------------------------------ */

int kv_translate_range_req(const Etcdserverpb__RangeRequest *r,
			   struct mvcc_range_req *out, struct kv_status *st)
{
	memset(out, 0, sizeof(*out));
	out->key = r->key.data;
	out->key_len = r->key.len;
	out->range_end = r->range_end.data;
	out->range_end_len = r->range_end.len;
	out->limit = r->limit;
	out->revision = r->revision;
	out->keys_only = r->keys_only;
	out->count_only = r->count_only;
	out->min_mod_revision = r->min_mod_revision;
	out->max_mod_revision = r->max_mod_revision;
	out->min_create_revision = r->min_create_revision;
	out->max_create_revision = r->max_create_revision;
	if ((int)r->sort_target < 0 || (int)r->sort_target > MVCC_SORT_VALUE) {
		/* etcd 3.4 panics here; 3.5 answers this. */
		set_st(st, KV_ST_INVALID_SORT_OPTION);
		return KV_EINVAL;
	}
	out->sort_target = (enum mvcc_sort_target)r->sort_target;
	switch ((int)r->sort_order) {
	case MVCC_SORT_NONE:
	case MVCC_SORT_ASCEND:
	case MVCC_SORT_DESCEND:
		out->sort_order = (enum mvcc_sort_order)r->sort_order;
		break;
	default:
		/* etcd 3.4 fetches everything and sorts nothing: key order. */
		out->sort_order = MVCC_SORT_NONE;
		out->sort_target = MVCC_SORT_KEY;
		break;
	}
	set_st(st, KV_ST_OK);
	return 0;
}

void kv_translate_put_req(const Etcdserverpb__PutRequest *r,
			  struct mvcc_put_req *out)
{
	memset(out, 0, sizeof(*out));
	out->key = r->key.data;
	out->key_len = r->key.len;
	out->value = r->value.data;
	out->value_len = r->value.len;
	out->lease = r->lease;
	out->prev_kv = r->prev_kv;
	out->ignore_value = r->ignore_value;
	out->ignore_lease = r->ignore_lease;
}

void kv_translate_delete_req(const Etcdserverpb__DeleteRangeRequest *r,
			     struct mvcc_delete_req *out)
{
	memset(out, 0, sizeof(*out));
	out->key = r->key.data;
	out->key_len = r->key.len;
	out->range_end = r->range_end.data;
	out->range_end_len = r->range_end.len;
	out->prev_kv = r->prev_kv;
}

static int compare_req(const Etcdserverpb__Compare *c,
		       struct mvcc_compare *out, struct kv_status *st)
{
	(void)st;
	memset(out, 0, sizeof(*out));
	out->key = c->key.data;
	out->key_len = c->key.len;
	out->range_end = c->range_end.data;
	out->range_end_len = c->range_end.len;
	/* etcd 3.4 compareKV: an unknown result is true; an unknown target
	 * compares as equal. Expressed with a create revision that no key
	 * reaches (a missing key's is 0). */
	bool bad_result = (int)c->result < 0 ||
			  (int)c->result > MVCC_CMP_NOT_EQUAL;
	bool bad_target = (int)c->target < 0 ||
			  (int)c->target > MVCC_CMP_LEASE;
	if (bad_result || bad_target) {
		bool truth = bad_result ||
			     c->result == ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
		out->target = MVCC_CMP_CREATE;
		out->result = truth ? MVCC_CMP_LESS : MVCC_CMP_GREATER;
		out->number = INT64_MAX;
		return 0;
	}
	out->result = (enum mvcc_cmp_result)c->result;
	out->target = (enum mvcc_cmp_target)c->target;
	/* Go's getters: a union member of another kind reads as zero. */
	switch (c->target) {
	case ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION:
		if (c->target_union_case ==
		    ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION)
			out->number = c->version;
		break;
	case ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE:
		if (c->target_union_case ==
		    ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION)
			out->number = c->create_revision;
		break;
	case ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD:
		if (c->target_union_case ==
		    ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION)
			out->number = c->mod_revision;
		break;
	case ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE:
		if (c->target_union_case ==
		    ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE) {
			out->value = c->value.data;
			out->value_len = c->value.len;
		}
		break;
	case ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE:
		if (c->target_union_case ==
		    ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE)
			out->number = c->lease;
		break;
	default:
		break;
	}
	return 0;
}

static int ops_req(Etcdserverpb__RequestOp *const *ops, size_t n,
		   struct mvcc_arena *a, const struct mvcc_request_op **out,
		   struct kv_status *st);

static int txn_req(const Etcdserverpb__TxnRequest *r, struct mvcc_arena *a,
		   struct mvcc_txn_req *out, struct kv_status *st)
{
	struct mvcc_compare *cmp = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	if (r->n_compare > 0) {
		cmp = zalloc(a, r->n_compare * sizeof(*cmp));
		if (cmp == NULL)
			return KV_ENOMEM;
		for (size_t i = 0; i < r->n_compare; i++) {
			rc = compare_req(r->compare[i], &cmp[i], st);
			if (rc != 0)
				return rc;
		}
	}
	out->compare = cmp;
	out->n_compare = r->n_compare;
	rc = ops_req(r->success, r->n_success, a, &out->success, st);
	if (rc != 0)
		return rc;
	out->n_success = r->n_success;
	rc = ops_req(r->failure, r->n_failure, a, &out->failure, st);
	if (rc != 0)
		return rc;
	out->n_failure = r->n_failure;
	return 0;
}

static int ops_req(Etcdserverpb__RequestOp *const *ops, size_t n,
		   struct mvcc_arena *a, const struct mvcc_request_op **out,
		   struct kv_status *st)
{
	struct mvcc_request_op *v;
	int rc;

	*out = NULL;
	if (n == 0)
		return 0;
	v = zalloc(a, n * sizeof(*v));
	if (v == NULL)
		return KV_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const Etcdserverpb__RequestOp *op = ops[i];
		switch (op->request_case) {
		case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE:
			v[i].type = MVCC_OP_RANGE;
			rc = kv_translate_range_req(op->request_range,
						    &v[i].u.range, st);
			if (rc != 0)
				return rc;
			break;
		case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT:
			v[i].type = MVCC_OP_PUT;
			kv_translate_put_req(op->request_put, &v[i].u.put);
			break;
		case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
			v[i].type = MVCC_OP_DELETE_RANGE;
			kv_translate_delete_req(op->request_delete_range,
						&v[i].u.delete_range);
			break;
		case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN: {
			struct mvcc_txn_req *sub = zalloc(a, sizeof(*sub));
			if (sub == NULL)
				return KV_ENOMEM;
			rc = txn_req(op->request_txn, a, sub, st);
			if (rc != 0)
				return rc;
			v[i].type = MVCC_OP_TXN;
			v[i].u.txn = sub;
			break;
		}
		default:
			/* etcd 3.4 checkRequestOp: an op with nothing set. */
			set_st(st, KV_ST_KEY_NOT_FOUND);
			return KV_EINVAL;
		}
	}
	*out = v;
	return 0;
}

int kv_translate_txn_req(const Etcdserverpb__TxnRequest *r,
			 struct mvcc_arena *a, struct mvcc_txn_req *out,
			 struct kv_status *st)
{
	int rc = txn_req(r, a, out, st);

	if (rc == 0)
		set_st(st, KV_ST_OK);
	else if (rc == KV_ENOMEM)
		set_st(st, KV_ST_STORAGE);
	return rc;
}

static bool ops_readonly(Etcdserverpb__RequestOp *const *ops, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const Etcdserverpb__RequestOp *op = ops[i];
		if (op->request_case ==
		    ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE)
			continue;
		if (op->request_case ==
			    ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN &&
		    kv_translate_txn_readonly(op->request_txn))
			continue;
		return false;
	}
	return true;
}

bool kv_translate_txn_readonly(const Etcdserverpb__TxnRequest *req)
{
	return ops_readonly(req->success, req->n_success) &&
	       ops_readonly(req->failure, req->n_failure);
}

/* ---- mvcc -> proto -------------------------------------------------------- */

Etcdserverpb__ResponseHeader *
kv_translate_header(const struct kv_header_ids *ids, int64_t rev,
		    struct mvcc_arena *a)
{
	Etcdserverpb__ResponseHeader *h = mvcc_arena_alloc(a, sizeof(*h));

	if (h == NULL)
		return NULL;
	*h = (Etcdserverpb__ResponseHeader)ETCDSERVERPB__RESPONSE_HEADER__INIT;
	if (ids != NULL) {
		h->cluster_id = ids->cluster_id;
		h->member_id = ids->member_id;
		h->raft_term = ids->raft_term;
	}
	h->revision = rev;
	return h;
}

/* The bytes already live in a (mvcc results are allocated there). */
static ProtobufCBinaryData bin(const uint8_t *p, size_t n)
{
	ProtobufCBinaryData b = { n, n ? (uint8_t *)(uintptr_t)p : NULL };

	return b;
}

static Mvccpb__KeyValue *kv_msg(const struct mvcc_kv *kv,
				struct mvcc_arena *a)
{
	Mvccpb__KeyValue *m = mvcc_arena_alloc(a, sizeof(*m));

	if (m == NULL)
		return NULL;
	*m = (Mvccpb__KeyValue)MVCCPB__KEY_VALUE__INIT;
	m->key = bin(kv->key, kv->key_len);
	m->value = bin(kv->value, kv->value_len);
	m->create_revision = kv->create_revision;
	m->mod_revision = kv->mod_revision;
	m->version = kv->version;
	m->lease = kv->lease;
	return m;
}

static int kv_msgs(const struct mvcc_kv *kvs, size_t n, struct mvcc_arena *a,
		   Mvccpb__KeyValue ***out)
{
	Mvccpb__KeyValue **v;

	*out = NULL;
	if (n == 0)
		return 0;
	v = mvcc_arena_alloc(a, n * sizeof(*v));
	if (v == NULL)
		return KV_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		v[i] = kv_msg(&kvs[i], a);
		if (v[i] == NULL)
			return KV_ENOMEM;
	}
	*out = v;
	return 0;
}

int kv_translate_range_res(const struct mvcc_range_res *res,
			   const struct kv_header_ids *ids,
			   struct mvcc_arena *a,
			   Etcdserverpb__RangeResponse **out)
{
	Etcdserverpb__RangeResponse *r = mvcc_arena_alloc(a, sizeof(*r));

	*out = NULL;
	if (r == NULL)
		return KV_ENOMEM;
	*r = (Etcdserverpb__RangeResponse)ETCDSERVERPB__RANGE_RESPONSE__INIT;
	r->header = kv_translate_header(ids, res->header_revision, a);
	if (r->header == NULL || kv_msgs(res->kvs, res->n_kvs, a, &r->kvs))
		return KV_ENOMEM;
	r->n_kvs = r->kvs != NULL ? res->n_kvs : 0;
	r->more = res->more;
	r->count = res->count;
	*out = r;
	return 0;
}

int kv_translate_put_res(const struct mvcc_put_res *res,
			 const struct kv_header_ids *ids, struct mvcc_arena *a,
			 Etcdserverpb__PutResponse **out)
{
	Etcdserverpb__PutResponse *r = mvcc_arena_alloc(a, sizeof(*r));

	*out = NULL;
	if (r == NULL)
		return KV_ENOMEM;
	*r = (Etcdserverpb__PutResponse)ETCDSERVERPB__PUT_RESPONSE__INIT;
	r->header = kv_translate_header(ids, res->header_revision, a);
	if (r->header == NULL)
		return KV_ENOMEM;
	if (res->prev_kv != NULL) {
		r->prev_kv = kv_msg(res->prev_kv, a);
		if (r->prev_kv == NULL)
			return KV_ENOMEM;
	}
	*out = r;
	return 0;
}

int kv_translate_delete_res(const struct mvcc_delete_res *res,
			    const struct kv_header_ids *ids,
			    struct mvcc_arena *a,
			    Etcdserverpb__DeleteRangeResponse **out)
{
	Etcdserverpb__DeleteRangeResponse *r = mvcc_arena_alloc(a, sizeof(*r));

	*out = NULL;
	if (r == NULL)
		return KV_ENOMEM;
	*r = (Etcdserverpb__DeleteRangeResponse)
		ETCDSERVERPB__DELETE_RANGE_RESPONSE__INIT;
	r->header = kv_translate_header(ids, res->header_revision, a);
	if (r->header == NULL ||
	    kv_msgs(res->prev_kvs, res->n_prev_kvs, a, &r->prev_kvs))
		return KV_ENOMEM;
	r->n_prev_kvs = r->prev_kvs != NULL ? res->n_prev_kvs : 0;
	r->deleted = res->deleted;
	*out = r;
	return 0;
}

/* nested: a nested txn's header is {} (etcd 3.4 never fills it). */
static int txn_res(const struct mvcc_txn_res *res,
		   const struct kv_header_ids *ids, bool nested,
		   struct mvcc_arena *a, Etcdserverpb__TxnResponse **out)
{
	Etcdserverpb__TxnResponse *r = mvcc_arena_alloc(a, sizeof(*r));
	int rc;

	*out = NULL;
	if (r == NULL)
		return KV_ENOMEM;
	*r = (Etcdserverpb__TxnResponse)ETCDSERVERPB__TXN_RESPONSE__INIT;
	r->header = kv_translate_header(nested ? NULL : ids,
					nested ? 0 : res->header_revision, a);
	if (r->header == NULL)
		return KV_ENOMEM;
	r->succeeded = res->succeeded;
	if (res->n_responses > 0) {
		r->responses =
			mvcc_arena_alloc(a, res->n_responses * sizeof(void *));
		if (r->responses == NULL)
			return KV_ENOMEM;
	}
	for (size_t i = 0; i < res->n_responses; i++) {
		const struct mvcc_response_op *ro = &res->responses[i];
		Etcdserverpb__ResponseOp *op = mvcc_arena_alloc(a, sizeof(*op));
		if (op == NULL)
			return KV_ENOMEM;
		*op = (Etcdserverpb__ResponseOp)ETCDSERVERPB__RESPONSE_OP__INIT;
		switch (ro->type) {
		case MVCC_OP_RANGE:
			op->response_case =
				ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
			rc = kv_translate_range_res(&ro->u.range, NULL, a,
						    &op->response_range);
			break;
		case MVCC_OP_PUT:
			op->response_case =
				ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
			rc = kv_translate_put_res(&ro->u.put, NULL, a,
						  &op->response_put);
			break;
		case MVCC_OP_DELETE_RANGE:
			op->response_case =
			 ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE;
			rc = kv_translate_delete_res(&ro->u.delete_range, NULL,
						     a,
						     &op->response_delete_range);
			break;
		case MVCC_OP_TXN:
		default:
			op->response_case =
				ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN;
			rc = txn_res(ro->u.txn, NULL, true, a,
				     &op->response_txn);
			break;
		}
		if (rc != 0)
			return rc;
		r->responses[i] = op;
		r->n_responses = i + 1;
	}
	*out = r;
	return 0;
}

int kv_translate_txn_res(const struct mvcc_txn_res *res,
			 const struct kv_header_ids *ids, struct mvcc_arena *a,
			 Etcdserverpb__TxnResponse **out)
{
	return txn_res(res, ids, false, a, out);
}

/* ---- run -------------------------------------------------------------------- */

/* The status of a finished call; a failed response build is KV_ENOMEM. */
static int finish(int rc, const char *errmsg, struct kv_status *st)
{
	if (st != NULL)
		*st = kv_translate_status(rc, errmsg);
	return rc;
}

int kv_translate_range(struct mvcc *m, struct mvcc_read *rd,
		       const Etcdserverpb__RangeRequest *req,
		       const struct kv_header_ids *ids, struct mvcc_arena *a,
		       Etcdserverpb__RangeResponse **resp,
		       struct kv_status *st)
{
	struct mvcc_range_req rq;
	struct mvcc_range_res rs;
	int rc;

	*resp = NULL;
	rc = kv_validate_range(req, st);
	if (rc != 0)
		return rc;
	kv_translate_range_req(req, &rq, NULL);
	rc = mvcc_range(m, rd, &rq, a, &rs);
	if (rc != 0)
		return finish(rc, rs.errmsg, st);
	/* A historical read reports the current revision (rs does). */
	return finish(kv_translate_range_res(&rs, ids, a, resp), NULL, st);
}

int kv_translate_put(struct mvcc *m, const Etcdserverpb__PutRequest *req,
		     const struct kv_header_ids *ids, struct mvcc_arena *a,
		     Etcdserverpb__PutResponse **resp, struct kv_status *st)
{
	struct mvcc_put_req rq;
	struct mvcc_put_res rs;
	int rc;

	*resp = NULL;
	kv_translate_put_req(req, &rq);
	rc = mvcc_put(m, &rq, a, &rs);
	if (rc != 0)
		return finish(rc, rs.errmsg, st);
	return finish(kv_translate_put_res(&rs, ids, a, resp), NULL, st);
}

int kv_translate_delete_range(struct mvcc *m,
			      const Etcdserverpb__DeleteRangeRequest *req,
			      const struct kv_header_ids *ids,
			      struct mvcc_arena *a,
			      Etcdserverpb__DeleteRangeResponse **resp,
			      struct kv_status *st)
{
	struct mvcc_delete_req rq;
	struct mvcc_delete_res rs;
	int rc;

	*resp = NULL;
	kv_translate_delete_req(req, &rq);
	rc = mvcc_delete_range(m, &rq, a, &rs);
	if (rc != 0)
		return finish(rc, rs.errmsg, st);
	return finish(kv_translate_delete_res(&rs, ids, a, resp), NULL, st);
}

int kv_translate_txn(struct mvcc *m, const Etcdserverpb__TxnRequest *req,
		     const struct kv_header_ids *ids, struct mvcc_arena *a,
		     Etcdserverpb__TxnResponse **resp, struct kv_status *st)
{
	struct mvcc_txn_req rq;
	struct mvcc_txn_res rs;
	int rc;

	*resp = NULL;
	rc = kv_translate_txn_req(req, a, &rq, st);
	if (rc != 0)
		return rc;
	rc = mvcc_txn(m, &rq, a, &rs);
	if (rc != 0)
		return finish(rc, rs.errmsg, st);
	return finish(kv_translate_txn_res(&rs, ids, a, resp), NULL, st);
}

int kv_translate_compaction(struct mvcc *m,
			    const Etcdserverpb__CompactionRequest *req,
			    const struct kv_header_ids *ids,
			    struct mvcc_arena *a,
			    Etcdserverpb__CompactionResponse **resp,
			    struct kv_status *st)
{
	Etcdserverpb__CompactionResponse *r;
	int rc;

	*resp = NULL;
	rc = mvcc_compact(m, req->revision);
	if (rc != 0)
		return finish(rc, NULL, st);
	r = mvcc_arena_alloc(a, sizeof(*r));
	if (r == NULL)
		return finish(KV_ENOMEM, NULL, st);
	*r = (Etcdserverpb__CompactionResponse)
		ETCDSERVERPB__COMPACTION_RESPONSE__INIT;
	r->header = kv_translate_header(ids, mvcc_revision(m), a);
	if (r->header == NULL)
		return finish(KV_ENOMEM, NULL, st);
	*resp = r;
	return finish(0, NULL, st);
}

/* ---- validation ------------------------------------------------------------- */

int kv_validate_range(const Etcdserverpb__RangeRequest *r,
		      struct kv_status *st)
{
	struct mvcc_range_req rq;

	if (r->key.len == 0) {
		set_st(st, KV_ST_EMPTY_KEY);
		return KV_EINVAL;
	}
	return kv_translate_range_req(r, &rq, st);
}

int kv_validate_put(const Etcdserverpb__PutRequest *r, struct kv_status *st)
{
	enum kv_status_id id = KV_ST_OK;

	if (r->key.len == 0)
		id = KV_ST_EMPTY_KEY;
	else if (r->ignore_value && r->value.len != 0)
		id = KV_ST_VALUE_PROVIDED;
	else if (r->ignore_lease && r->lease != 0)
		id = KV_ST_LEASE_PROVIDED;
	set_st(st, id);
	return id == KV_ST_OK ? 0 : KV_EINVAL;
}

int kv_validate_delete_range(const Etcdserverpb__DeleteRangeRequest *r,
			     struct kv_status *st)
{
	if (r->key.len == 0) {
		set_st(st, KV_ST_EMPTY_KEY);
		return KV_EINVAL;
	}
	set_st(st, KV_ST_OK);
	return 0;
}

/* etcd 3.4 v3rpc checkTxnRequest / checkRequestOp, in their order. */
static int check_txn(const Etcdserverpb__TxnRequest *t, long max_ops,
		     struct kv_status *st);

static int check_op(const Etcdserverpb__RequestOp *op, long max_ops,
		    struct kv_status *st)
{
	switch (op->request_case) {
	case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE:
		return kv_validate_range(op->request_range, st);
	case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT:
		return kv_validate_put(op->request_put, st);
	case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
		return kv_validate_delete_range(op->request_delete_range, st);
	case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN:
		return check_txn(op->request_txn, max_ops, st);
	default:
		set_st(st, KV_ST_KEY_NOT_FOUND);
		return KV_EINVAL;
	}
}

static int check_txn(const Etcdserverpb__TxnRequest *t, long max_ops,
		     struct kv_status *st)
{
	size_t opc = t->n_compare;
	int rc;

	if (opc < t->n_success)
		opc = t->n_success;
	if (opc < t->n_failure)
		opc = t->n_failure;
	if ((long)opc > max_ops) {
		set_st(st, KV_ST_TOO_MANY_OPS);
		return KV_EINVAL;
	}
	for (size_t i = 0; i < t->n_compare; i++) {
		if (t->compare[i]->key.len == 0) {
			set_st(st, KV_ST_EMPTY_KEY);
			return KV_EINVAL;
		}
	}
	for (size_t i = 0; i < t->n_success; i++) {
		rc = check_op(t->success[i], max_ops - (long)opc, st);
		if (rc != 0)
			return rc;
	}
	for (size_t i = 0; i < t->n_failure; i++) {
		rc = check_op(t->failure[i], max_ops - (long)opc, st);
		if (rc != 0)
			return rc;
	}
	return 0;
}

int kv_validate_txn(const Etcdserverpb__TxnRequest *r, unsigned max_txn_ops,
		    struct kv_status *st)
{
	struct mvcc_arena a = MVCC_ARENA_INIT;
	struct mvcc_txn_req rq;
	const char *msg = NULL;
	int rc;

	if (max_txn_ops == 0)
		max_txn_ops = DEFAULT_MAX_TXN_OPS;
	rc = check_txn(r, (long)max_txn_ops, st);
	if (rc != 0)
		return rc;
	/* Then checkIntervals (duplicate keys), done by mvcc. */
	rc = kv_translate_txn_req(r, &a, &rq, st);
	if (rc != 0)
		goto out;
	rc = mvcc_txn_validate(&rq, max_txn_ops, &msg);
	if (rc != 0) {
		if (st != NULL)
			*st = kv_translate_status(rc, msg);
		goto out;
	}
	set_st(st, KV_ST_OK);
out:
	mvcc_arena_free(&a);
	return rc;
}

int kv_validate_lease_grant(const Etcdserverpb__LeaseGrantRequest *r,
			    struct kv_status *st)
{
	if (r->ttl > MAX_LEASE_TTL) {
		set_st(st, KV_ST_LEASE_TTL_TOO_LARGE);
		return KV_ERANGE;
	}
	set_st(st, KV_ST_OK);
	return 0;
}

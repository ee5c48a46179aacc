/* etcd's v3election service (/v3electionpb.Election and /v3/election/...): a
 * server-side clientv3/concurrency Election over the KV API, with etcd
 * 3.4's key layout (candidate key name + "/" + hex(lease)) and answers.
 *
 *  Campaign  lease 0: grant a 60 s session lease. Txn: put the key with
 *            the value if absent, else read it (and Proclaim the new
 *            value if it differs); then wait until every older key under
 *            the prefix is gone. Answers the header of that first txn and
 *            LeaderKey{name, key, rev = its create revision, lease}.
 *  Proclaim  Txn: if create_revision(key) == rev, put the value (with
 *            leader.lease; lease 0 grants a session lease, as etcd's
 *            Proclaim does); else "election: not leader".
 *  Resign    Txn: if create_revision(key) == rev, delete the key.
 *  Leader    The key with the smallest create revision under the prefix,
 *            else "election: no leader".
 *  Observe   Stream: the leader, each value it proclaims, and the next
 *            leader once it is deleted (Election.observe).
 *
 * Errors are etcd's (plain errors: gRPC Unknown, kvd_conc_fail). */
#include "server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stddef.h>

#include "common/log.h"
#include "kvjson/json.h"

#define MOD "v3election"
#define SESSION_TTL 60 /* concurrency.defaultSessionTTL */

#define ERR_NOT_LEADER "election: not leader"
#define ERR_NO_LEADER "election: no leader"
#define ERR_MISSING "\"leader\" field must be provided"

static void too_many(struct kvd_call *c)
{
	kvd_call_fail(c, KV_GRPC_RESOURCE_EXHAUSTED,
		      "etcdserver: too many requests");
}

/* A copy of len bytes (at least one byte allocated), or NULL. */
static uint8_t *dup_bytes(const uint8_t *p, size_t len)
{
	uint8_t *d = malloc(len ? len : 1);
	if (d != NULL && len > 0)
		memcpy(d, p, len);
	return d;
}

/* name + "/" and its range end. */
static int make_prefix(const ProtobufCBinaryData *name, uint8_t **pfx,
		       size_t *pfx_len, uint8_t **end, size_t *end_len)
{
	*pfx_len = name->len + 1;
	*pfx = malloc(*pfx_len);
	if (*pfx == NULL)
		return KV_ENOMEM;
	if (name->len > 0)
		memcpy(*pfx, name->data, name->len);
	(*pfx)[name->len] = '/';
	*end = kvd_prefix_end(*pfx, *pfx_len, end_len);
	if (*end == NULL) {
		free(*pfx);
		*pfx = NULL;
		return KV_ENOMEM;
	}
	return 0;
}

/* ---- Campaign ------------------------------------------------------------ */

enum camp_state {
	C_GRANT,
	C_TXN,
	C_PROCLAIM,
	C_WAIT,
	C_RESIGN, /* deleting our key after an abort or a failure */
};

struct camp_op {
	struct kvd_server *s;
	struct kvd_call *c; /* NULL once answered or gone */
	struct kvd_icall *ic;
	struct kvd_waitdel *wd;
	enum camp_state state;
	int64_t lease;
	int64_t leader_rev;
	bool created; /* our txn put the key */
	Etcdserverpb__ResponseHeader hdr; /* of the first txn */
	uint8_t *name, *value, *pfx, *end, *key;
	size_t name_len, value_len, pfx_len, end_len, key_len;
};

static void camp_free(struct camp_op *op)
{
	if (op->c != NULL) {
		op->c->on_abort = NULL;
		op->c->user = NULL;
	}
	kvd_icall_free(op->ic);
	kvd_waitdel_free(op->wd);
	free(op->name);
	free(op->value);
	free(op->pfx);
	free(op->end);
	free(op->key);
	free(op);
}

/* Election.Resign with our key and revision, then frees op. */
static void camp_resign(struct camp_op *op)
{
	Etcdserverpb__RequestOp del;
	Etcdserverpb__DeleteRangeRequest d;
	kvd_waitdel_free(op->wd);
	op->wd = NULL;
	if (op->key == NULL || op->leader_rev == 0 || !kvd_serving(op->s)) {
		camp_free(op);
		return;
	}
	op->state = C_RESIGN;
	kvd_op_delete(&del, &d, op->key, op->key_len);
	Etcdserverpb__RequestOp *then[1] = { &del };
	kvd_icall_propose(op->ic, KVDPB__INTERNAL_REQUEST__REQUEST_TXN,
			  kvd_conc_txn(op->key, op->key_len, op->leader_rev,
				       then, 1, NULL, 0));
}

static void camp_fail(struct camp_op *op, int code, const char *msg,
		      bool resign)
{
	struct kvd_call *c = op->c;
	op->c = NULL;
	if (c != NULL)
		kvd_conc_fail(c, code, msg);
	if (resign)
		camp_resign(op);
	else
		camp_free(op);
}

static void camp_done(struct camp_op *op)
{
	struct kvd_call *c = op->c;
	op->c = NULL;
	if (c != NULL) {
		V3electionpb__LeaderKey lk = V3ELECTIONPB__LEADER_KEY__INIT;
		V3electionpb__CampaignResponse r =
			V3ELECTIONPB__CAMPAIGN_RESPONSE__INIT;
		lk.name.data = op->name;
		lk.name.len = op->name_len;
		lk.key.data = op->key;
		lk.key.len = op->key_len;
		lk.rev = op->leader_rev;
		lk.lease = op->lease;
		r.header = &op->hdr;
		r.leader = &lk;
		kvd_call_respond(c, &r.base);
	}
	camp_free(op);
}

static void on_camp_abort(struct kvd_call *c)
{
	struct camp_op *op = c->user;
	op->c = NULL;
	switch (op->state) {
	case C_GRANT:
		camp_free(op);
		break;
	case C_WAIT:
		/* Campaign resigns when its context ends while waiting */
		camp_resign(op);
		break;
	case C_TXN:
	case C_PROCLAIM:
	case C_RESIGN:
		break; /* decided when the txn answers */
	}
}

static void on_camp_waited(void *data, int code, const char *msg,
			   const Etcdserverpb__ResponseHeader *hdr)
{
	struct camp_op *op = data;
	(void)hdr;
	op->wd = NULL; /* freed by kvd_waitdel after this returns */
	if (code != 0) {
		/* etcd resigns only when the client went away */
		camp_fail(op, code, msg, false);
		return;
	}
	camp_done(op);
}

static void camp_wait(struct camp_op *op)
{
	if (op->c == NULL) {
		/* the client left during a txn: take back a key we put, leave
		 * one that was there before (as etcd, whose Txn fails then) */
		if (op->created)
			camp_resign(op);
		else
			camp_free(op);
		return;
	}
	op->state = C_WAIT;
	int rv = kvd_waitdel_new(op->s, op->pfx, op->pfx_len,
				 op->leader_rev - 1, on_camp_waited, op,
				 &op->wd);
	if (rv != 0)
		camp_fail(op, KV_GRPC_RESOURCE_EXHAUSTED,
			  "etcdserver: too many requests", true);
}

static void camp_txn(struct camp_op *op)
{
	Etcdserverpb__RequestOp put, get;
	Etcdserverpb__PutRequest p;
	Etcdserverpb__RangeRequest g;
	op->key = kvd_conc_key(op->pfx, op->pfx_len, op->lease, &op->key_len);
	if (op->key == NULL) {
		camp_fail(op, KV_GRPC_RESOURCE_EXHAUSTED,
			  "etcdserver: too many requests", false);
		return;
	}
	kvd_op_put(&put, &p, op->key, op->key_len, op->value, op->value_len,
		   op->lease);
	kvd_op_range(&get, &g, op->key, op->key_len, NULL, 0, false);
	Etcdserverpb__RequestOp *then[1] = { &put };
	Etcdserverpb__RequestOp *els[1] = { &get };
	op->state = C_TXN;
	kvd_icall_propose(op->ic, KVDPB__INTERNAL_REQUEST__REQUEST_TXN,
			  kvd_conc_txn(op->key, op->key_len, 0, then, 1, els,
				       1));
}

static void camp_on_txn(struct camp_op *op)
{
	struct kvd_icall *ic = op->ic;
	if (ic->code != 0) {
		camp_fail(op, ic->code, ic->msg, false);
		return;
	}
	Etcdserverpb__TxnResponse *r = (Etcdserverpb__TxnResponse *)ic->resp;
	if (r->header != NULL) {
		op->hdr.cluster_id = r->header->cluster_id;
		op->hdr.member_id = r->header->member_id;
		op->hdr.revision = r->header->revision;
		op->hdr.raft_term = r->header->raft_term;
	}
	op->leader_rev = op->hdr.revision;
	if (r->succeeded) {
		op->created = true;
		camp_wait(op);
		return;
	}
	const Etcdserverpb__RangeResponse *mine = kvd_txn_range(r, 0);
	if (mine == NULL || mine->n_kvs == 0) {
		camp_fail(op, KV_GRPC_INTERNAL, "kvd: campaign txn failed",
			  false);
		return;
	}
	const Mvccpb__KeyValue *kv = mine->kvs[0];
	op->leader_rev = kv->create_revision;
	if (kv->value.len == op->value_len &&
	    (op->value_len == 0 ||
	     memcmp(kv->value.data, op->value, op->value_len) == 0)) {
		camp_wait(op);
		return;
	}
	if (op->c == NULL) {
		camp_free(op); /* etcd: the context ended; the key stays */
		return;
	}
	/* already a candidate with another value: Proclaim it */
	Etcdserverpb__RequestOp put;
	Etcdserverpb__PutRequest p;
	kvd_op_put(&put, &p, op->key, op->key_len, op->value, op->value_len,
		   op->lease);
	Etcdserverpb__RequestOp *then[1] = { &put };
	op->state = C_PROCLAIM;
	kvd_icall_propose(op->ic, KVDPB__INTERNAL_REQUEST__REQUEST_TXN,
			  kvd_conc_txn(op->key, op->key_len, op->leader_rev,
				       then, 1, NULL, 0));
}

static void on_camp_icall(struct kvd_icall *ic)
{
	struct camp_op *op = ic->data;
	switch (op->state) {
	case C_GRANT: {
		if (ic->code != 0) {
			camp_fail(op, ic->code, ic->msg, false);
			return;
		}
		const Etcdserverpb__LeaseGrantResponse *g =
			(const Etcdserverpb__LeaseGrantResponse *)ic->resp;
		if (g->error != NULL && g->error[0] != '\0') {
			camp_fail(op, KV_GRPC_UNKNOWN, g->error, false);
			return;
		}
		op->lease = g->id;
		camp_txn(op);
		return;
	}
	case C_TXN:
		camp_on_txn(op);
		return;
	case C_PROCLAIM: {
		if (ic->code != 0) {
			/* Campaign resigns when its Proclaim fails */
			camp_fail(op, ic->code, ic->msg, true);
			return;
		}
		const Etcdserverpb__TxnResponse *r =
			(const Etcdserverpb__TxnResponse *)ic->resp;
		if (!r->succeeded) {
			camp_fail(op, KV_GRPC_UNKNOWN, ERR_NOT_LEADER, false);
			return;
		}
		camp_wait(op);
		return;
	}
	case C_RESIGN:
		if (ic->code != 0)
			KV_WARN(MOD, "cannot resign an abandoned campaign",
				"err=%s", ic->msg);
		camp_free(op);
		return;
	case C_WAIT:
		return;
	}
}

void kvd_svc_campaign(struct kvd_server *s, struct kvd_call *c,
		      ProtobufCMessage *m)
{
	V3electionpb__CampaignRequest *req = (V3electionpb__CampaignRequest *)m;
	struct camp_op *op = calloc(1, sizeof(*op));
	if (op == NULL) {
		protobuf_c_message_free_unpacked(m, NULL);
		too_many(c);
		return;
	}
	op->s = s;
	etcdserverpb__response_header__init(&op->hdr);
	op->name_len = req->name.len;
	op->name = dup_bytes(req->name.data, req->name.len);
	op->value_len = req->value.len;
	op->value = dup_bytes(req->value.data, req->value.len);
	op->lease = req->lease;
	op->ic = kvd_icall_new(s, on_camp_icall, op);
	int rv = make_prefix(&req->name, &op->pfx, &op->pfx_len, &op->end,
			     &op->end_len);
	protobuf_c_message_free_unpacked(m, NULL);
	if (rv != 0 || op->name == NULL || op->value == NULL ||
	    op->ic == NULL) {
		camp_free(op);
		too_many(c);
		return;
	}
	op->c = c;
	c->user = op;
	c->on_abort = on_camp_abort;
	if (op->lease == 0) {
		op->state = C_GRANT;
		kvd_icall_grant(op->ic, SESSION_TTL);
	} else {
		camp_txn(op);
	}
}

/* ---- Proclaim, Resign, Leader: one request or two ---------------------- */

enum uop_kind { U_PROCLAIM, U_RESIGN, U_LEADER };

struct uop {
	struct kvd_call *c;
	struct kvd_icall *ic;
	enum uop_kind kind;
	bool granting; /* Proclaim's session lease */
	int64_t lease, rev;
	uint8_t *key, *value;
	size_t key_len, value_len;
};

static void uop_free(struct uop *u)
{
	kvd_icall_free(u->ic);
	free(u->key);
	free(u->value);
	free(u);
}

static void on_uop_abort(struct kvd_call *c)
{
	uop_free(c->user);
}

static void uop_proclaim_txn(struct uop *u)
{
	Etcdserverpb__RequestOp put;
	Etcdserverpb__PutRequest p;
	kvd_op_put(&put, &p, u->key, u->key_len, u->value, u->value_len,
		   u->lease);
	Etcdserverpb__RequestOp *then[1] = { &put };
	kvd_icall_propose(u->ic, KVDPB__INTERNAL_REQUEST__REQUEST_TXN,
			  kvd_conc_txn(u->key, u->key_len, u->rev, then, 1,
				       NULL, 0));
}

static void on_uop_done(struct kvd_icall *ic)
{
	struct uop *u = ic->data;
	struct kvd_call *c = u->c;
	if (ic->code != 0) {
		kvd_conc_fail(c, ic->code, ic->msg);
		uop_free(u);
		return;
	}
	if (u->granting) {
		const Etcdserverpb__LeaseGrantResponse *g =
			(const Etcdserverpb__LeaseGrantResponse *)ic->resp;
		if (g->error != NULL && g->error[0] != '\0') {
			kvd_conc_fail(c, KV_GRPC_UNKNOWN, g->error);
			uop_free(u);
			return;
		}
		u->granting = false;
		u->lease = g->id;
		uop_proclaim_txn(u);
		return;
	}
	switch (u->kind) {
	case U_PROCLAIM: {
		const Etcdserverpb__TxnResponse *t =
			(const Etcdserverpb__TxnResponse *)ic->resp;
		if (!t->succeeded) {
			kvd_conc_fail(c, KV_GRPC_UNKNOWN, ERR_NOT_LEADER);
			break;
		}
		V3electionpb__ProclaimResponse r =
			V3ELECTIONPB__PROCLAIM_RESPONSE__INIT;
		r.header = t->header;
		kvd_call_respond(c, &r.base);
		break;
	}
	case U_RESIGN: {
		const Etcdserverpb__TxnResponse *t =
			(const Etcdserverpb__TxnResponse *)ic->resp;
		V3electionpb__ResignResponse r =
			V3ELECTIONPB__RESIGN_RESPONSE__INIT;
		r.header = t->header;
		kvd_call_respond(c, &r.base);
		break;
	}
	case U_LEADER: {
		const Etcdserverpb__RangeResponse *g =
			(const Etcdserverpb__RangeResponse *)ic->resp;
		if (g->n_kvs == 0) {
			kvd_conc_fail(c, KV_GRPC_UNKNOWN, ERR_NO_LEADER);
			break;
		}
		V3electionpb__LeaderResponse r =
			V3ELECTIONPB__LEADER_RESPONSE__INIT;
		r.header = g->header;
		r.kv = g->kvs[0];
		kvd_call_respond(c, &r.base);
		break;
	}
	}
	uop_free(u);
}

static struct uop *uop_new(struct kvd_server *s, struct kvd_call *c,
			   enum uop_kind kind)
{
	struct uop *u = calloc(1, sizeof(*u));
	if (u == NULL)
		return NULL;
	u->kind = kind;
	u->ic = kvd_icall_new(s, on_uop_done, u);
	if (u->ic == NULL) {
		free(u);
		return NULL;
	}
	u->c = c;
	c->user = u;
	c->on_abort = on_uop_abort;
	return u;
}

void kvd_svc_proclaim(struct kvd_server *s, struct kvd_call *c,
		      ProtobufCMessage *m)
{
	V3electionpb__ProclaimRequest *req = (V3electionpb__ProclaimRequest *)m;
	if (req->leader == NULL) {
		protobuf_c_message_free_unpacked(m, NULL);
		kvd_call_fail(c, KV_GRPC_UNKNOWN, ERR_MISSING);
		return;
	}
	struct uop *u = uop_new(s, c, U_PROCLAIM);
	if (u != NULL) {
		u->key_len = req->leader->key.len;
		u->key = dup_bytes(req->leader->key.data, u->key_len);
		u->value_len = req->value.len;
		u->value = dup_bytes(req->value.data, u->value_len);
		u->lease = req->leader->lease;
		u->rev = req->leader->rev;
	}
	protobuf_c_message_free_unpacked(m, NULL);
	if (u == NULL || u->key == NULL || u->value == NULL) {
		if (u != NULL) {
			c->on_abort = NULL;
			c->user = NULL;
			uop_free(u);
		}
		too_many(c);
		return;
	}
	if (u->lease == 0) {
		/* etcd's Proclaim opens a session: lease 0 grants one */
		u->granting = true;
		kvd_icall_grant(u->ic, SESSION_TTL);
	} else {
		uop_proclaim_txn(u);
	}
}

void kvd_svc_resign(struct kvd_server *s, struct kvd_call *c,
		    ProtobufCMessage *m)
{
	V3electionpb__ResignRequest *req = (V3electionpb__ResignRequest *)m;
	if (req->leader == NULL) {
		protobuf_c_message_free_unpacked(m, NULL);
		kvd_call_fail(c, KV_GRPC_UNKNOWN, ERR_MISSING);
		return;
	}
	struct uop *u = uop_new(s, c, U_RESIGN);
	if (u == NULL) {
		protobuf_c_message_free_unpacked(m, NULL);
		too_many(c);
		return;
	}
	Etcdserverpb__RequestOp del;
	Etcdserverpb__DeleteRangeRequest d;
	kvd_op_delete(&del, &d, req->leader->key.data, req->leader->key.len);
	Etcdserverpb__RequestOp *then[1] = { &del };
	ProtobufCMessage *t = kvd_conc_txn(req->leader->key.data,
					   req->leader->key.len,
					   req->leader->rev, then, 1, NULL, 0);
	protobuf_c_message_free_unpacked(m, NULL);
	kvd_icall_propose(u->ic, KVDPB__INTERNAL_REQUEST__REQUEST_TXN, t);
}

/* The oldest candidate under name + "/" (Election.Leader). */
static ProtobufCMessage *leader_range(const ProtobufCBinaryData *name)
{
	uint8_t *pfx = NULL, *end = NULL;
	size_t pfx_len = 0, end_len = 0;
	if (make_prefix(name, &pfx, &pfx_len, &end, &end_len) != 0)
		return NULL;
	Etcdserverpb__RequestOp op;
	Etcdserverpb__RangeRequest r;
	kvd_op_range(&op, &r, pfx, pfx_len, end, end_len, true);
	ProtobufCMessage *m = kvd_pb_clone(&r.base);
	free(pfx);
	free(end);
	return m;
}

void kvd_svc_leader(struct kvd_server *s, struct kvd_call *c,
		    ProtobufCMessage *m)
{
	V3electionpb__LeaderRequest *req = (V3electionpb__LeaderRequest *)m;
	ProtobufCMessage *q = leader_range(&req->name);
	protobuf_c_message_free_unpacked(m, NULL);
	struct uop *u = q != NULL ? uop_new(s, c, U_LEADER) : NULL;
	if (u == NULL) {
		if (q != NULL)
			protobuf_c_message_free_unpacked(q, NULL);
		too_many(c);
		return;
	}
	kvd_icall_read(u->ic, q, false);
}

/* ---- Observe ------------------------------------------------------------ */

enum obs_kind { OBS_GRPC, OBS_HTTP, OBS_H2 };
enum obs_state {
	O_GET,      /* reading the current leader */
	O_WAIT_PUT, /* no leader: watching the prefix for a candidate */
	O_FOLLOW,   /* watching the leader's key */
};

struct omsg {
	struct omsg *next;
	size_t len;
	unsigned char data[];
};

struct obs_op {
	struct kvd_server *s;
	enum obs_kind kind;
	enum obs_state state;
	struct grpc_call *gc;     /* OBS_GRPC */
	struct http_request *req; /* OBS_HTTP */
	struct h2_stream *st;     /* OBS_H2 */
	struct kvd_icall *ic;
	struct kvd_kwatch *kw;
	struct omsg *qhead, *qtail;
	uint8_t *pfx, *end;
	size_t pfx_len, end_len;
	bool ended;
};

static void obs_get(struct obs_op *o);
static const struct h2_stream_handler o2_handler;

static void obs_free(struct obs_op *o)
{
	kvd_icall_free(o->ic);
	kvd_kwatch_free(o->kw);
	while (o->qhead != NULL) {
		struct omsg *m = o->qhead;
		o->qhead = m->next;
		free(m);
	}
	free(o->pfx);
	free(o->end);
	free(o);
}

/* Ends the stream (gRPC status code; the gateway just ends the body) and
 * frees o. */
static void obs_end(struct obs_op *o, int code, const char *msg)
{
	if (o->kind == OBS_GRPC) {
		struct grpc_call *gc = o->gc;
		grpc_call_set_user(gc, NULL);
		obs_free(o);
		grpc_call_finish(gc, code, msg);
	} else if (o->kind == OBS_H2) {
		struct h2_stream *st = o->st;
		h2_stream_set_handler(st, &o2_handler, NULL);
		obs_free(o);
		/* what is queued goes out first, then END_STREAM */
		if (h2_stream_end(st, NULL, 0) != 0)
			h2_stream_reset(st, H2_INTERNAL_ERROR);
	} else {
		struct http_request *req = o->req;
		req->user = NULL;
		req->on_abort = NULL;
		req->on_writable = NULL;
		obs_free(o);
		http_stream_end(req);
	}
}

/* etcd's Observe ends without an error when its observer stops; a
 * stopping member says so. */
static void obs_stop(struct obs_op *o)
{
	if (o->s->stopping)
		obs_end(o, GRPC_UNAVAILABLE, "etcdserver: server stopped");
	else
		obs_end(o, GRPC_OK, NULL);
}

/* Writes queued messages; true when the queue is empty. */
static bool obs_pump(struct obs_op *o)
{
	while (o->qhead != NULL) {
		struct omsg *m = o->qhead;
		int rv;
		if (o->kind == OBS_GRPC)
			rv = grpc_call_send(o->gc, m->data, m->len);
		else if (o->kind == OBS_H2)
			rv = h2_stream_write(o->st, m->data, m->len);
		else
			rv = http_stream_write(o->req, m->data, m->len);
		if (rv == KV_EAGAIN)
			return false;
		if (rv != 0)
			KV_DEBUG(MOD, "observe response dropped", "err=%s",
				 kv_errname(rv));
		o->qhead = m->next;
		if (o->qhead == NULL)
			o->qtail = NULL;
		free(m);
	}
	return true;
}

/* Encodes and queues one LeaderResponse; true when the transport can
 * take more now. */
static bool obs_send(struct obs_op *o, const Etcdserverpb__ResponseHeader *h,
		     const Mvccpb__KeyValue *kv)
{
	V3electionpb__LeaderResponse r = V3ELECTIONPB__LEADER_RESPONSE__INIT;
	r.header = (Etcdserverpb__ResponseHeader *)h;
	r.kv = (Mvccpb__KeyValue *)kv;
	size_t n = 0;
	struct omsg *m = kvd_stream_msg(&r.base, o->kind != OBS_GRPC,
					offsetof(struct omsg, data), &n);
	if (m != NULL)
		m->len = n;
	if (m == NULL) {
		KV_ERROR(MOD, "cannot encode an observe response", NULL);
		return true;
	}
	m->next = NULL;
	if (o->qtail != NULL)
		o->qtail->next = m;
	else
		o->qhead = m;
	o->qtail = m;
	return obs_pump(o);
}

static void obs_header(struct obs_op *o, Etcdserverpb__ResponseHeader *h,
		       int64_t revision)
{
	struct kv_header_ids ids;
	kvd_header_ids(o->s, &ids);
	etcdserverpb__response_header__init(h);
	h->cluster_id = ids.cluster_id;
	h->member_id = ids.member_id;
	h->raft_term = ids.raft_term;
	h->revision = revision;
}

static bool on_obs_watch(struct kvd_kwatch *kw, void *data,
			 const struct kvd_kwatch_resp *r)
{
	struct obs_op *o = data;
	(void)kw;
	if (r->canceled) {
		obs_stop(o);
		return false;
	}
	Etcdserverpb__ResponseHeader h;
	if (o->state == O_WAIT_PUT) {
		for (size_t i = 0; i < r->n; i++) {
			if (r->ev[i].deleted)
				continue;
			/* the first candidate: follow its key from the
			 * revision after its creation */
			const Mvccpb__KeyValue *kv = r->ev[i].kv;
			int64_t rev = kv->mod_revision;
			obs_header(o, &h, rev);
			bool more = obs_send(o, &h, kv);
			kvd_kwatch_free(o->kw);
			o->kw = NULL;
			o->state = O_FOLLOW;
			int rv = kvd_kwatch_new(o->s, kv->key.data,
						kv->key.len, NULL, 0, rev + 1,
						on_obs_watch, o, &o->kw);
			if (rv != 0) {
				obs_stop(o);
				return false;
			}
			if (!more)
				kvd_kwatch_pause(o->kw);
			return false;
		}
		return true;
	}
	bool more = true;
	for (size_t i = 0; i < r->n; i++) {
		if (r->ev[i].deleted) {
			/* the leader is gone: look for the next one */
			kvd_kwatch_free(o->kw);
			o->kw = NULL;
			obs_get(o);
			return false;
		}
		obs_header(o, &h, r->revision);
		more = obs_send(o, &h, r->ev[i].kv);
	}
	return more;
}

static void on_obs_get(struct kvd_icall *ic)
{
	struct obs_op *o = ic->data;
	if (ic->code != 0) {
		obs_stop(o);
		return;
	}
	const Etcdserverpb__RangeResponse *g =
		(const Etcdserverpb__RangeResponse *)ic->resp;
	int64_t rev = g->header != NULL ? g->header->revision : 0;
	int rv;
	if (g->n_kvs == 0) {
		o->state = O_WAIT_PUT;
		rv = kvd_kwatch_new(o->s, o->pfx, o->pfx_len, o->end,
				    o->end_len, rev, on_obs_watch, o, &o->kw);
	} else {
		const Mvccpb__KeyValue *kv = g->kvs[0];
		bool more = obs_send(o, g->header, kv);
		o->state = O_FOLLOW;
		rv = kvd_kwatch_new(o->s, kv->key.data, kv->key.len, NULL, 0,
				    rev + 1, on_obs_watch, o, &o->kw);
		if (rv == 0 && !more)
			kvd_kwatch_pause(o->kw);
	}
	if (rv != 0)
		obs_stop(o);
}

static void obs_get(struct obs_op *o)
{
	Etcdserverpb__RequestOp op;
	Etcdserverpb__RangeRequest r;
	o->state = O_GET;
	kvd_op_range(&op, &r, o->pfx, o->pfx_len, o->end, o->end_len, true);
	kvd_icall_read(o->ic, kvd_pb_clone(&r.base), false);
}

/* The transport can take more: write, then let the watcher go on. */
static void obs_writable(struct obs_op *o)
{
	if (obs_pump(o) && o->kw != NULL)
		kvd_kwatch_resume(o->kw);
}

static struct obs_op *obs_new(struct kvd_server *s,
			      const V3electionpb__LeaderRequest *req,
			      enum obs_kind kind)
{
	struct obs_op *o = calloc(1, sizeof(*o));
	if (o == NULL)
		return NULL;
	o->s = s;
	o->kind = kind;
	o->ic = kvd_icall_new(s, on_obs_get, o);
	if (o->ic == NULL ||
	    make_prefix(&req->name, &o->pfx, &o->pfx_len, &o->end,
			&o->end_len) != 0) {
		obs_free(o);
		return NULL;
	}
	return o;
}

static void og_start(struct grpc_call *gc, const unsigned char *msg,
		     size_t len, void *method_data)
{
	struct kvd_server *s = method_data;
	if (!kvd_grpc_admit(s, gc))
		return;
	if (s->watch == NULL) {
		grpc_call_finish(gc, GRPC_UNAVAILABLE,
				 "etcdserver: server stopped");
		return;
	}
	V3electionpb__LeaderRequest *req =
		v3electionpb__leader_request__unpack(NULL, len, msg);
	if (req == NULL) {
		grpc_call_finish(gc, GRPC_INTERNAL,
				 "grpc: error unmarshalling request: "
				 "proto: bad wire format");
		return;
	}
	struct obs_op *o = obs_new(s, req, OBS_GRPC);
	v3electionpb__leader_request__free_unpacked(req, NULL);
	if (o == NULL) {
		grpc_call_finish(gc, GRPC_RESOURCE_EXHAUSTED,
				 "etcdserver: too many requests");
		return;
	}
	o->gc = gc;
	grpc_call_set_user(gc, o);
	obs_get(o);
}

static void og_writable(struct grpc_call *gc)
{
	struct obs_op *o = grpc_call_user(gc);
	if (o != NULL)
		obs_writable(o);
}

static void og_cancel(struct grpc_call *gc, int status)
{
	(void)status;
	struct obs_op *o = grpc_call_user(gc);
	if (o == NULL)
		return;
	grpc_call_set_user(gc, NULL);
	obs_free(o);
}

const struct grpc_handler kvd_observe_grpc_h = {
	.on_start = og_start,
	.on_writable = og_writable,
	.on_cancel = og_cancel,
};

/* ---- POST /v3/election/observe on HTTP/1.1 ------------------------------ */

static void oh_abort(struct http_request *req)
{
	struct obs_op *o = req->user;
	req->user = NULL;
	req->on_abort = NULL;
	req->on_writable = NULL;
	if (o != NULL)
		obs_free(o);
}

static void oh_writable(struct http_request *req)
{
	struct obs_op *o = req->user;
	if (o != NULL)
		obs_writable(o);
}

void kvd_observe_http(struct kvd_server *s, struct http_request *req)
{
	if (!kvd_serving(s) || s->watch == NULL) {
		kvd_gw_h1_error(req, 503, KV_GRPC_UNAVAILABLE,
			 "etcdserver: server stopped");
		return;
	}
	char err[256];
	ProtobufCMessage *m = NULL;
	int rv = kvjson_decode_ex(&v3electionpb__leader_request__descriptor,
				  (const char *)req->body, req->body_len,
				  KVJSON_ALLOW_UNKNOWN, NULL, &m, NULL, err,
				  sizeof(err));
	if (rv != 0) {
		kvd_gw_h1_error(req, 400, KV_GRPC_INVALID_ARGUMENT, err);
		return;
	}
	struct obs_op *o =
		obs_new(s, (const V3electionpb__LeaderRequest *)m, OBS_HTTP);
	protobuf_c_message_free_unpacked(m, NULL);
	if (o == NULL) {
		kvd_gw_h1_error(req, 429, KV_GRPC_RESOURCE_EXHAUSTED,
			 "etcdserver: too many requests");
		return;
	}
	if (http_stream_begin(req, 200, kvd_gw_json_headers,
			      kvd_gw_n_json_headers) != 0) {
		obs_free(o);
		http_respond(req, 500, NULL, 0, NULL, 0);
		return;
	}
	o->req = req;
	req->user = o;
	req->on_abort = oh_abort;
	req->on_writable = oh_writable;
	obs_get(o);
}

/* ---- POST /v3/election/observe on HTTP/2 -------------------------------- */

static void o2_writable(struct h2_stream *st)
{
	struct obs_op *o = h2_stream_user(st);
	if (o != NULL)
		obs_writable(o);
}

static void o2_close(struct h2_stream *st, uint32_t code)
{
	(void)code;
	struct obs_op *o = h2_stream_user(st);
	if (o != NULL)
		obs_free(o);
}

static const struct h2_stream_handler o2_handler = {
	.on_data = kvd_gw_h2_discard,
	.on_writable = o2_writable,
	.on_close = o2_close,
};

void kvd_observe_h2(struct kvd_server *s, struct h2_stream *st,
		    const unsigned char *body, size_t len)
{
	/* the stream is ours from here on */
	h2_stream_set_handler(st, &o2_handler, NULL);
	if (!kvd_serving(s) || s->watch == NULL) {
		kvd_gw_h2_error(st, 503, KV_GRPC_UNAVAILABLE,
			 "etcdserver: server stopped");
		return;
	}
	char err[256];
	ProtobufCMessage *m = NULL;
	int rv = kvjson_decode_ex(&v3electionpb__leader_request__descriptor,
				  (const char *)body, len, KVJSON_ALLOW_UNKNOWN,
				  NULL, &m, NULL, err, sizeof(err));
	if (rv != 0) {
		kvd_gw_h2_error(st, 400, KV_GRPC_INVALID_ARGUMENT, err);
		return;
	}
	struct obs_op *o =
		obs_new(s, (const V3electionpb__LeaderRequest *)m, OBS_H2);
	protobuf_c_message_free_unpacked(m, NULL);
	if (o == NULL) {
		kvd_gw_h2_error(st, 429, KV_GRPC_RESOURCE_EXHAUSTED,
			 "etcdserver: too many requests");
		return;
	}
	if (h2_stream_respond(st, 200, kvd_gw_h2_json_headers,
			      kvd_gw_n_h2_json_headers, false) != 0) {
		obs_free(o);
		h2_stream_reset(st, H2_INTERNAL_ERROR);
		return;
	}
	o->st = st;
	h2_stream_set_handler(st, &o2_handler, o);
	obs_get(o);
}

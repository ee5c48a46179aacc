/* etcd's v3lock service (/v3lockpb.Lock and the gateway's /v3/lock/...):
 * a server-side clientv3/concurrency Mutex over the KV API, with etcd
 * 3.4's key layout.
 *
 * Lock(name, lease):
 *  1. lease 0: grant a session lease of 60 s (concurrency.NewSession; it
 *     is not kept alive, so the lock ends 60 s later unless the client
 *     keeps that lease alive);
 *  2. key = name + "/" + hex(lease); one Txn: if the key does not exist,
 *     put it (empty value, with the lease), else read it; in both cases
 *     read the oldest key under "name/". The lock is ours when there is
 *     none or it is ours (same create revision);
 *  3. else wait until every key under the prefix created before ours is
 *     deleted (kvd_waitdel) and answer with the header of the last read.
 * If the wait fails or the client goes away while waiting, the key is
 * deleted (Mutex.Unlock), as etcd does. A lock whose lease expires or is
 * revoked is released by the lessor deleting the key.
 *
 * Unlock(key): deletes the key.
 *
 * Errors are etcd's: its embedded client turns them into plain errors,
 * sent as gRPC Unknown (kvd_conc_fail). */
#include "server_internal.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define MOD "v3lock"
#define SESSION_TTL 60 /* concurrency.defaultSessionTTL */

enum lock_state {
	L_GRANT,   /* session lease being granted */
	L_TXN,     /* the put-if-absent txn in flight */
	L_WAIT,    /* waiting for older keys to go */
	L_CLEANUP, /* deleting our key after a failure or an abort */
};

struct lock_op {
	struct kvd_server *s;
	struct kvd_call *c; /* NULL once answered or gone */
	struct kvd_icall *ic;
	struct kvd_waitdel *wd;
	enum lock_state state;
	int64_t lease;
	int64_t my_rev;
	uint8_t *pfx, *end, *key;
	size_t pfx_len, end_len, key_len;
};

static void op_free(struct lock_op *op)
{
	if (op->c != NULL) {
		op->c->on_abort = NULL;
		op->c->user = NULL;
	}
	kvd_icall_free(op->ic);
	kvd_waitdel_free(op->wd);
	free(op->pfx);
	free(op->end);
	free(op->key);
	free(op);
}

/* Deletes our key (Mutex.Unlock), then frees op. The client (if any) was
 * answered already. */
static void op_cleanup(struct lock_op *op)
{
	Etcdserverpb__DeleteRangeRequest d =
		ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
	kvd_waitdel_free(op->wd);
	op->wd = NULL;
	if (op->key == NULL || op->ic == NULL || !kvd_serving(op->s)) {
		op_free(op);
		return;
	}
	op->state = L_CLEANUP;
	d.key.data = op->key;
	d.key.len = op->key_len;
	kvd_icall_propose(op->ic, KVDPB__INTERNAL_REQUEST__REQUEST_DELETE_RANGE,
			  kvd_pb_clone(&d.base));
}

static void op_fail(struct lock_op *op, int code, const char *msg,
		    bool cleanup)
{
	struct kvd_call *c = op->c;
	op->c = NULL;
	if (c != NULL)
		kvd_conc_fail(c, code, msg);
	if (cleanup)
		op_cleanup(op);
	else
		op_free(op);
}

static void op_done(struct lock_op *op, Etcdserverpb__ResponseHeader *hdr)
{
	struct kvd_call *c = op->c;
	op->c = NULL;
	if (c != NULL) {
		V3lockpb__LockResponse r = V3LOCKPB__LOCK_RESPONSE__INIT;
		r.header = hdr;
		r.key.data = op->key;
		r.key.len = op->key_len;
		kvd_call_respond(c, &r.base);
	}
	op_free(op);
}

static void on_lock_abort(struct kvd_call *c)
{
	struct lock_op *op = c->user;
	op->c = NULL;
	switch (op->state) {
	case L_GRANT:
		/* etcd leaves the granted lease to expire as well */
		op_free(op);
		break;
	case L_TXN:
		/* finish the txn: a key it created is deleted then */
		break;
	case L_WAIT:
		op_cleanup(op);
		break;
	case L_CLEANUP:
		break;
	}
}

static void on_waited(void *data, int code, const char *msg,
		      const Etcdserverpb__ResponseHeader *hdr)
{
	struct lock_op *op = data;
	op->wd = NULL; /* freed by kvd_waitdel after this returns */
	if (code != 0) {
		op_fail(op, code, msg, true);
		return;
	}
	op_done(op, (Etcdserverpb__ResponseHeader *)hdr);
}

static void start_txn(struct lock_op *op)
{
	Etcdserverpb__RequestOp put, get, own1, own2;
	Etcdserverpb__PutRequest p;
	Etcdserverpb__RangeRequest g, o1, o2;
	op->key = kvd_conc_key(op->pfx, op->pfx_len, op->lease, &op->key_len);
	if (op->key == NULL) {
		op_fail(op, KV_GRPC_RESOURCE_EXHAUSTED,
			"etcdserver: too many requests", false);
		return;
	}
	kvd_op_put(&put, &p, op->key, op->key_len, NULL, 0, op->lease);
	kvd_op_range(&own1, &o1, op->pfx, op->pfx_len, op->end, op->end_len,
		     true);
	kvd_op_range(&get, &g, op->key, op->key_len, NULL, 0, false);
	kvd_op_range(&own2, &o2, op->pfx, op->pfx_len, op->end, op->end_len,
		     true);
	Etcdserverpb__RequestOp *then[2] = { &put, &own1 };
	Etcdserverpb__RequestOp *els[2] = { &get, &own2 };
	op->state = L_TXN;
	kvd_icall_propose(op->ic, KVDPB__INTERNAL_REQUEST__REQUEST_TXN,
			  kvd_conc_txn(op->key, op->key_len, 0, then, 2, els,
				       2));
}

static void on_txn(struct lock_op *op)
{
	struct kvd_icall *ic = op->ic;
	if (ic->code != 0) {
		op_fail(op, ic->code, ic->msg, false);
		return;
	}
	Etcdserverpb__TxnResponse *r = (Etcdserverpb__TxnResponse *)ic->resp;
	const Etcdserverpb__RangeResponse *mine = kvd_txn_range(r, 0);
	const Etcdserverpb__RangeResponse *owner = kvd_txn_range(r, 1);
	op->my_rev = r->header != NULL ? r->header->revision : 0;
	if (!r->succeeded) {
		if (mine == NULL || mine->n_kvs == 0) {
			/* the key vanished between compare and read: cannot
			 * happen in one txn */
			op_fail(op, KV_GRPC_INTERNAL, "kvd: lock txn failed",
				false);
			return;
		}
		op->my_rev = mine->kvs[0]->create_revision;
	}
	if (op->c == NULL) {
		/* the client left while the txn ran: give back a key it
		 * created */
		if (r->succeeded)
			op_cleanup(op);
		else
			op_free(op);
		return;
	}
	if (owner == NULL || owner->n_kvs == 0 ||
	    owner->kvs[0]->create_revision == op->my_rev) {
		op_done(op, r->header);
		return;
	}
	op->state = L_WAIT;
	int rv = kvd_waitdel_new(op->s, op->pfx, op->pfx_len, op->my_rev - 1,
				 on_waited, op, &op->wd);
	if (rv != 0)
		op_fail(op, KV_GRPC_RESOURCE_EXHAUSTED,
			"etcdserver: too many requests", true);
}

static void on_lock_icall(struct kvd_icall *ic)
{
	struct lock_op *op = ic->data;
	switch (op->state) {
	case L_GRANT: {
		if (ic->code != 0) {
			op_fail(op, ic->code, ic->msg, false);
			return;
		}
		const Etcdserverpb__LeaseGrantResponse *g =
			(const Etcdserverpb__LeaseGrantResponse *)ic->resp;
		if (g->error != NULL && g->error[0] != '\0') {
			op_fail(op, KV_GRPC_UNKNOWN, g->error, false);
			return;
		}
		op->lease = g->id;
		start_txn(op);
		return;
	}
	case L_TXN:
		on_txn(op);
		return;
	case L_CLEANUP:
		if (ic->code != 0)
			KV_WARN(MOD, "cannot delete an abandoned lock key",
				"err=%s", ic->msg);
		op_free(op);
		return;
	case L_WAIT:
		return;
	}
}

void kvd_svc_lock(struct kvd_server *s, struct kvd_call *c,
		  ProtobufCMessage *m)
{
	V3lockpb__LockRequest *req = (V3lockpb__LockRequest *)m;
	struct lock_op *op = calloc(1, sizeof(*op));
	if (op != NULL) {
		op->s = s;
		op->pfx_len = req->name.len + 1;
		op->pfx = malloc(op->pfx_len);
		op->ic = kvd_icall_new(s, on_lock_icall, op);
	}
	if (op == NULL || op->pfx == NULL || op->ic == NULL) {
		protobuf_c_message_free_unpacked(m, NULL);
		if (op != NULL)
			op_free(op);
		kvd_call_fail(c, KV_GRPC_RESOURCE_EXHAUSTED,
			      "etcdserver: too many requests");
		return;
	}
	if (req->name.len > 0)
		memcpy(op->pfx, req->name.data, req->name.len);
	op->pfx[req->name.len] = '/';
	op->lease = req->lease;
	protobuf_c_message_free_unpacked(m, NULL);
	op->end = kvd_prefix_end(op->pfx, op->pfx_len, &op->end_len);
	if (op->end == NULL) {
		op_free(op);
		kvd_call_fail(c, KV_GRPC_RESOURCE_EXHAUSTED,
			      "etcdserver: too many requests");
		return;
	}
	op->c = c;
	c->user = op;
	c->on_abort = on_lock_abort;
	if (op->lease == 0) {
		op->state = L_GRANT;
		kvd_icall_grant(op->ic, SESSION_TTL);
	} else {
		start_txn(op);
	}
}

/* ---- Unlock ------------------------------------------------------------- */

struct unlock_op {
	struct kvd_call *c;
	struct kvd_icall *ic;
};

static void on_unlock_abort(struct kvd_call *c)
{
	struct unlock_op *op = c->user;
	kvd_icall_free(op->ic);
	free(op);
}

static void on_unlock_done(struct kvd_icall *ic)
{
	struct unlock_op *op = ic->data;
	struct kvd_call *c = op->c;
	if (ic->code != 0) {
		kvd_conc_fail(c, ic->code, ic->msg);
	} else {
		const Etcdserverpb__DeleteRangeResponse *d =
			(const Etcdserverpb__DeleteRangeResponse *)ic->resp;
		V3lockpb__UnlockResponse r = V3LOCKPB__UNLOCK_RESPONSE__INIT;
		r.header = d->header;
		kvd_call_respond(c, &r.base);
	}
	kvd_icall_free(ic);
	free(op);
}

void kvd_svc_unlock(struct kvd_server *s, struct kvd_call *c,
		    ProtobufCMessage *m)
{
	V3lockpb__UnlockRequest *req = (V3lockpb__UnlockRequest *)m;
	Etcdserverpb__DeleteRangeRequest d =
		ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
	struct kv_status st = { 0, "" };
	d.key = req->key;
	if (kv_validate_delete_range(&d, &st) != 0) {
		protobuf_c_message_free_unpacked(m, NULL);
		kvd_conc_fail(c, st.code, st.msg);
		return;
	}
	struct unlock_op *op = calloc(1, sizeof(*op));
	ProtobufCMessage *dm = kvd_pb_clone(&d.base);
	protobuf_c_message_free_unpacked(m, NULL);
	if (op != NULL)
		op->ic = kvd_icall_new(s, on_unlock_done, op);
	if (op == NULL || op->ic == NULL || dm == NULL) {
		if (dm != NULL)
			protobuf_c_message_free_unpacked(dm, NULL);
		if (op != NULL)
			kvd_icall_free(op->ic);
		free(op);
		kvd_call_fail(c, KV_GRPC_RESOURCE_EXHAUSTED,
			      "etcdserver: too many requests");
		return;
	}
	op->c = c;
	c->user = op;
	c->on_abort = on_unlock_abort;
	kvd_icall_propose(op->ic, KVDPB__INTERNAL_REQUEST__REQUEST_DELETE_RANGE,
			  dm);
}

/* kvd member wiring (server/server.h): transport <-> node <-> kv_apply,
 * proposal batching, waiters, read barriers, commit timer, shutdown. The
 * HTTP/JSON gateway is in gateway.c. */
#include "server_internal.h"

#include <errno.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"

#define MOD "server"
#define COMMIT_INTERVAL_MS 100
#define COMMIT_PENDING_BYTES ((size_t)4 << 20)
#define BATCH_FLUSH_BYTES ((size_t)8 << 20)
#define MAX_APPLY_GAP 5000
#define MAX_WAITERS 200000

/* ---- waiters ---------------------------------------------------------- */

static size_t wbucket(uint64_t id)
{
	return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 52) % KVD_WAIT_BUCKETS;
}

static void waiter_unlink(struct kvd_server *s, struct kvd_waiter *w)
{
	struct kvd_waiter **pp = &s->wtab[wbucket(w->id)];
	while (*pp != NULL && *pp != w)
		pp = &(*pp)->hnext;
	if (*pp == w)
		*pp = w->hnext;
	if (w->prev != NULL)
		w->prev->next = w->next;
	else
		s->wfirst = w->next;
	if (w->next != NULL)
		w->next->prev = w->prev;
	else
		s->wlast = w->prev;
	s->nwaiters--;
}

static struct kvd_waiter *waiter_find(struct kvd_server *s, uint64_t id)
{
	for (struct kvd_waiter *w = s->wtab[wbucket(id)]; w != NULL;
	     w = w->hnext)
		if (w->id == id)
			return w;
	return NULL;
}

static void on_waiter_abort(struct kvd_call *c)
{
	struct kvd_waiter *w = c->user;
	if (w != NULL)
		w->call = NULL;
}

/* Completes w with a status (code != 0) and frees it. */
static void waiter_fail(struct kvd_server *s, struct kvd_waiter *w,
			int code, const char *msg)
{
	waiter_unlink(s, w);
	(void)s;
	if (w->call != NULL)
		kvd_call_fail(w->call, code, msg);
	free(w);
}

uint64_t kvd_next_request_id(struct kvd_server *s)
{
	uint64_t floor = (kv_wall_us() / 1000) << 20;
	s->last_id = s->last_id + 1 > floor ? s->last_id + 1 : floor;
	return s->last_id;
}

/* ---- proposals -------------------------------------------------------- */

struct batch_prop {
	struct kvraft_propose_req pr;
	struct kvd_server *s;
	size_t n;
	uint64_t ids[];
};

/* etcd's error for a proposal that failed with a KV_E* code. */
static void propose_status(int err, int *code, const char **msg)
{
	*code = KV_GRPC_UNAVAILABLE;
	switch (err) {
	case KV_ENOLEADER:
		*msg = "etcdserver: no leader";
		break;
	case KV_ECANCELED:
		*msg = "etcdserver: leader changed";
		break;
	case KV_ETIMEOUT:
		*msg = "etcdserver: request timed out";
		break;
	case KV_ETOOBIG:
		*code = KV_GRPC_INVALID_ARGUMENT;
		*msg = "etcdserver: request is too large";
		break;
	case KV_ENOMEM:
		*code = KV_GRPC_RESOURCE_EXHAUSTED;
		*msg = "etcdserver: too many requests";
		break;
	default:
		*msg = "etcdserver: server stopped";
		break;
	}
}

static void fail_ids(struct kvd_server *s, const uint64_t *ids, size_t n,
		     int err)
{
	int code;
	const char *msg;
	propose_status(err, &code, &msg);
	for (size_t i = 0; i < n; i++) {
		struct kvd_waiter *w = waiter_find(s, ids[i]);
		if (w != NULL)
			waiter_fail(s, w, code, msg);
	}
}

/* A follower learns that an entry committed only from the leader's next
 * append, which (raft 0.15) may be a heartbeat away: a write or a
 * linearizable read on a follower would wait up to two heartbeat
 * intervals (200 ms at the defaults). When something here waits for the
 * commit index, a follower proposes an empty batch (one in flight at a
 * time): the leader appends it and sends the new commit index with it.
 * A leader needs none of this. */
static bool follower_behind(struct kvd_server *s, uint64_t index)
{
	struct kvraft_status st;
	if (s->node == NULL || s->stopping)
		return false;
	kvraft_node_status(s->node, &st);
	return st.role == KVRAFT_FOLLOWER && st.applied_index < index;
}

static void nudge(struct kvd_server *s);

static void on_nudged(struct kvraft_propose_req *pr, int status,
		      uint64_t index)
{
	struct kvd_server *s = pr->data;
	s->nudge_busy = false;
	/* A read that rode on the nudge still needs its commit index. */
	if (status == 0 && s->reads_pending > 0 && follower_behind(s, index))
		nudge(s);
}

static void nudge(struct kvd_server *s)
{
	struct kvraft_status st;
	if (s->nudge_busy || s->node == NULL || s->stopping)
		return;
	kvraft_node_status(s->node, &st);
	if (st.role != KVRAFT_FOLLOWER)
		return;
	memset(&s->nudge_pr, 0, sizeof(s->nudge_pr));
	s->nudge_pr.data = s;
	if (kvraft_node_propose(s->node, "", 0, &s->nudge_pr, on_nudged) == 0)
		s->nudge_busy = true;
}

static void on_proposed(struct kvraft_propose_req *pr, int status,
			uint64_t index)
{
	struct batch_prop *b = pr->data;
	struct kvd_server *s = b->s;
	/* status 0: results come from our own apply (on_result). */
	if (status != 0 && s->node != NULL) {
		fail_ids(s, b->ids, b->n, status);
	} else if (status != 0) {
		fail_ids(s, b->ids, b->n, KV_ECLOSED);
	} else if (follower_behind(s, index)) {
		for (size_t i = 0; i < b->n; i++) {
			if (waiter_find(s, b->ids[i]) != NULL) {
				nudge(s);
				break;
			}
		}
	}
	free(b);
}

/* Every request is a malloc'd message tree (client messages are unpacked
 * with the default allocator, the server's own built with malloc). */
static void free_pending(struct kvd_server *s)
{
	for (size_t i = 0; i < s->npending; i++)
		protobuf_c_message_free_unpacked(&s->pending[i]->base, NULL);
	s->npending = 0;
	s->pending_bytes = 0;
}

/* Turns the pending requests into one raft entry. */
static void flush_batch(struct kvd_server *s)
{
	if (s->npending == 0)
		return;
	Kvdpb__RequestBatch rb = KVDPB__REQUEST_BATCH__INIT;
	rb.n_requests = s->npending;
	rb.requests = s->pending;
	size_t len = protobuf_c_message_get_packed_size(&rb.base);
	uint8_t *buf = malloc(len ? len : 1);
	struct batch_prop *b =
		malloc(sizeof(*b) + s->npending * sizeof(uint64_t));
	if (buf == NULL || b == NULL) {
		free(buf);
		free(b);
		for (size_t i = 0; i < s->npending; i++)
			fail_ids(s, &s->pending[i]->id, 1, KV_ENOMEM);
		free_pending(s);
		return;
	}
	protobuf_c_message_pack(&rb.base, buf);
	b->s = s;
	b->n = s->npending;
	for (size_t i = 0; i < s->npending; i++)
		b->ids[i] = s->pending[i]->id;
	free_pending(s);
	memset(&b->pr, 0, sizeof(b->pr));
	b->pr.data = b;
	int rv = kvraft_node_propose(s->node, buf, len, &b->pr, on_proposed);
	free(buf);
	if (rv != 0) {
		fail_ids(s, b->ids, b->n, rv);
		free(b);
	}
}

static int enqueue_request(struct kvd_server *s, Kvdpb__InternalRequest *ir)
{
	if (s->npending == s->cap_pending) {
		size_t ncap = s->cap_pending ? s->cap_pending * 2 : 64;
		void *p = realloc(s->pending, ncap * sizeof(*s->pending));
		if (p == NULL)
			return KV_ENOMEM;
		s->pending = p;
		s->cap_pending = ncap;
	}
	s->pending[s->npending++] = ir;
	s->pending_bytes += protobuf_c_message_get_packed_size(&ir->base);
	if (s->pending_bytes >= BATCH_FLUSH_BYTES)
		flush_batch(s);
	return 0;
}

/* Drops the unknown fields protobuf-c kept while unpacking a client's
 * message, recursively, before it goes into a raft entry. etcd ignores
 * them; keeping them would replicate bytes no member needs, and
 * protobuf-c 1.4 re-packs some it cannot unpack again (a non-minimal tag
 * for field 0: tests/data/proto/crash-field0-nonminimal-tag), which would
 * make the whole entry undecodable on every member. msg was unpacked with
 * the default (malloc) allocator. */
static void strip_unknown(ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;

	for (unsigned i = 0; i < m->n_unknown_fields; i++)
		free(m->unknown_fields[i].data);
	free(m->unknown_fields);
	m->unknown_fields = NULL;
	m->n_unknown_fields = 0;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		char *base = (char *)m;

		if (f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(size_t *)(base + f->quantifier_offset);
			ProtobufCMessage **v =
				*(ProtobufCMessage ***)(base + f->offset);
			for (size_t j = 0; j < n; j++)
				if (v[j] != NULL)
					strip_unknown(v[j]);
			continue;
		}
		if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
		    *(uint32_t *)(base + f->quantifier_offset) != f->id)
			continue;
		ProtobufCMessage *sub = *(ProtobufCMessage **)(base + f->offset);
		if (sub != NULL)
			strip_unknown(sub);
	}
}

int kvd_propose_internal(struct kvd_server *s, Kvdpb__InternalRequest *ir)
{
	if (s->node == NULL || s->stopping)
		return KV_ECLOSED;
	ir->id = kvd_next_request_id(s);
	ir->member_id = s->self_id;
	return enqueue_request(s, ir);
}

void kvd_propose(struct kvd_server *s, struct kvd_call *req,
		 Kvdpb__InternalRequest__RequestCase type, ProtobufCMessage *msg)
{
	Kvdpb__InternalRequest *ir = malloc(sizeof(*ir));
	struct kvd_waiter *w = calloc(1, sizeof(*w));
	if (ir == NULL || w == NULL) {
		free(ir);
		free(w);
		protobuf_c_message_free_unpacked(msg, NULL);
		kvd_call_fail(req, KV_GRPC_RESOURCE_EXHAUSTED,
				  "etcdserver: too many requests");
		return;
	}
	strip_unknown(msg);
	kvdpb__internal_request__init(ir);
	ir->id = kvd_next_request_id(s);
	ir->member_id = s->self_id;
	ir->request_case = type;
	switch (type) {
	case KVDPB__INTERNAL_REQUEST__REQUEST_PUT:
		ir->put = (Etcdserverpb__PutRequest *)msg;
		break;
	case KVDPB__INTERNAL_REQUEST__REQUEST_DELETE_RANGE:
		ir->delete_range = (Etcdserverpb__DeleteRangeRequest *)msg;
		break;
	case KVDPB__INTERNAL_REQUEST__REQUEST_TXN:
		ir->txn = (Etcdserverpb__TxnRequest *)msg;
		break;
	case KVDPB__INTERNAL_REQUEST__REQUEST_COMPACTION:
		ir->compaction = (Etcdserverpb__CompactionRequest *)msg;
		break;
	case KVDPB__INTERNAL_REQUEST__REQUEST_ALARM:
		ir->alarm = (Etcdserverpb__AlarmRequest *)msg;
		break;
	case KVDPB__INTERNAL_REQUEST__REQUEST_LEASE_GRANT:
		ir->lease_grant = (Etcdserverpb__LeaseGrantRequest *)msg;
		break;
	case KVDPB__INTERNAL_REQUEST__REQUEST_LEASE_REVOKE:
		ir->lease_revoke = (Etcdserverpb__LeaseRevokeRequest *)msg;
		break;
	default:
		abort();
	}
	/* etcd: the marshalled internal request must fit
	 * --max-request-bytes. */
	if (protobuf_c_message_get_packed_size(&ir->base) >
	    s->cfg->max_request_bytes) {
		protobuf_c_message_free_unpacked(msg, NULL);
		free(ir);
		free(w);
		kvd_call_fail(req, KV_GRPC_INVALID_ARGUMENT,
				  "etcdserver: request is too large");
		return;
	}
	if (s->node == NULL || s->stopping) {
		protobuf_c_message_free_unpacked(msg, NULL);
		free(ir);
		free(w);
		kvd_call_fail(req, KV_GRPC_UNAVAILABLE,
				  "etcdserver: server stopped");
		return;
	}
	/* etcd refuses proposals while apply lags commit by more than 5000
	 * entries; we also bound the writes waiting here. */
	struct kvraft_status st;
	kvraft_node_status(s->node, &st);
	if (st.commit_index > st.applied_index + MAX_APPLY_GAP ||
	    s->nwaiters >= MAX_WAITERS) {
		protobuf_c_message_free_unpacked(msg, NULL);
		free(ir);
		free(w);
		kvd_call_fail(req, KV_GRPC_RESOURCE_EXHAUSTED,
				  "etcdserver: too many requests");
		return;
	}
	w->id = ir->id;
	w->s = s;
	w->call = req;
	w->deadline = uv_now(&s->loop) + s->request_timeout_ms;
	req->user = w;
	req->on_abort = on_waiter_abort;
	size_t b = wbucket(w->id);
	w->hnext = s->wtab[b];
	s->wtab[b] = w;
	w->prev = s->wlast;
	if (s->wlast != NULL)
		s->wlast->next = w;
	else
		s->wfirst = w;
	s->wlast = w;
	s->nwaiters++;
	if (enqueue_request(s, ir) != 0) {
		protobuf_c_message_free_unpacked(msg, NULL);
		free(ir);
		waiter_fail(s, w, KV_GRPC_RESOURCE_EXHAUSTED,
			    "etcdserver: too many requests");
	}
}

/* ---- kv_apply hooks ---------------------------------------------------- */

static void on_result(void *data, uint64_t request_id,
		      const struct kv_result *res)
{
	struct kvd_server *s = data;
	struct kvd_waiter *w = waiter_find(s, request_id);
	if (w == NULL)
		return; /* replayed, timed out, or not a client request */
	if (w->call == NULL || res->err != 0 || res->response == NULL) {
		if (res->err != 0 || res->response == NULL)
			waiter_fail(s, w,
				    res->status.code ? res->status.code
						     : KV_GRPC_INTERNAL,
				    res->status.msg ? res->status.msg
						    : "etcdserver: no response");
		else
			waiter_fail(s, w, 0, NULL);
		return;
	}
	waiter_unlink(s, w);
	kvd_call_respond(w->call, res->response);
	free(w);
}

static void on_applied(void *data, uint64_t index, int64_t revision)
{
	(void)index;
	kvd_watch_applied(data, revision);
}

static void on_nospace(void *data)
{
	struct kvd_server *s = data;
	s->nospace_pending = true;
}

static void on_restored(void *data, struct mvcc *m)
{
	/* we always ask kv_apply_mvcc() for the current store */
	kvd_watch_restored(data, m);
}

/* ---- reads ------------------------------------------------------------ */

struct read_op {
	struct kvraft_read_req rr;
	struct kvd_server *s;
	struct kvd_call *req;
	ProtobufCMessage *msg;
	bool txn;
};

static void on_read_abort(struct kvd_call *req)
{
	struct read_op *op = req->user;
	if (op != NULL)
		op->req = NULL;
}

void kvd_serve_read(struct kvd_server *s, struct kvd_call *req,
		    ProtobufCMessage *msg, bool txn)
{
	struct mvcc *m = kv_apply_mvcc(s->apply);
	struct kv_header_ids ids;
	struct kv_status st = { 0, "" };
	ProtobufCMessage *resp = NULL;
	int rv;

	kvd_header_ids(s, &ids);
	if (txn) {
		Etcdserverpb__TxnResponse *r = NULL;
		rv = kv_translate_txn(m, (Etcdserverpb__TxnRequest *)msg, &ids,
				      &s->arena, &r, &st);
		resp = r ? &r->base : NULL;
	} else {
		Etcdserverpb__RangeResponse *r = NULL;
		rv = kv_translate_range(m, NULL,
					(Etcdserverpb__RangeRequest *)msg,
					&ids, &s->arena, &r, &st);
		resp = r ? &r->base : NULL;
	}
	if (rv != 0 || resp == NULL) {
		if (kv_translate_is_fatal(rv) || st.code == 0)
			kvd_call_fail(req, KV_GRPC_UNAVAILABLE,
					  "etcdserver: server stopped");
		else
			kvd_call_fail(req, st.code, st.msg);
	} else {
		kvd_call_respond(req, resp);
	}
	mvcc_arena_reset(&s->arena);
}

static void on_read_ready(struct kvraft_read_req *rr, int status)
{
	struct read_op *op = rr->data;
	struct kvd_server *s = op->s;
	s->reads_pending--;
	if (op->req != NULL) {
		if (status == 0 && s->apply != NULL) {
			kvd_serve_read(s, op->req, op->msg, op->txn);
		} else {
			int code;
			const char *msg;
			propose_status(status, &code, &msg);
			kvd_call_fail(op->req, code, msg);
		}
	}
	protobuf_c_message_free_unpacked(op->msg, NULL);
	free(op);
}

void kvd_read(struct kvd_server *s, struct kvd_call *req,
	      ProtobufCMessage *msg, bool txn, bool serializable)
{
	if (serializable) {
		kvd_serve_read(s, req, msg, txn);
		protobuf_c_message_free_unpacked(msg, NULL);
		return;
	}
	struct read_op *op = calloc(1, sizeof(*op));
	if (op == NULL || s->node == NULL) {
		free(op);
		protobuf_c_message_free_unpacked(msg, NULL);
		kvd_call_fail(req, KV_GRPC_UNAVAILABLE,
				  "etcdserver: server stopped");
		return;
	}
	op->s = s;
	op->req = req;
	op->msg = msg;
	op->txn = txn;
	op->rr.data = op;
	req->user = op;
	req->on_abort = on_read_abort;
	int rv = kvraft_node_read_barrier(s->node, &op->rr, on_read_ready);
	if (rv == 0) {
		s->reads_pending++;
		nudge(s);
	} else {
		int code;
		const char *m;
		propose_status(rv, &code, &m);
		kvd_call_fail(req, code, m);
		protobuf_c_message_free_unpacked(msg, NULL);
		free(op);
	}
}

void kvd_header_ids(struct kvd_server *s, struct kv_header_ids *ids)
{
	struct kvraft_status st;
	memset(&st, 0, sizeof(st));
	if (s->node != NULL)
		kvraft_node_status(s->node, &st);
	ids->cluster_id = s->cluster_id;
	ids->member_id = s->self_id;
	ids->raft_term = st.term;
}

/* ---- loop housekeeping ----------------------------------------------- */

static void fatal_stop(struct kvd_server *s, const char *what, int rv);
static void send_attrs(struct kvd_server *s);

static void propose_nospace_alarm(struct kvd_server *s)
{
	Kvdpb__InternalRequest *ir = malloc(sizeof(*ir));
	Etcdserverpb__AlarmRequest *ar = malloc(sizeof(*ar));
	if (ir == NULL || ar == NULL) {
		free(ir);
		free(ar);
		return;
	}
	etcdserverpb__alarm_request__init(ar);
	ar->action = ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE;
	ar->memberid = s->self_id;
	ar->alarm = ETCDSERVERPB__ALARM_TYPE__NOSPACE;
	kvdpb__internal_request__init(ir);
	ir->id = kvd_next_request_id(s);
	ir->member_id = s->self_id;
	ir->request_case = KVDPB__INTERNAL_REQUEST__REQUEST_ALARM;
	ir->alarm = ar;
	if (enqueue_request(s, ir) != 0) {
		free(ir);
		free(ar);
	}
	KV_WARN(MOD, "backend quota reached: raising the NOSPACE alarm",
		"quota=%llu", (unsigned long long)s->cfg->quota_backend_bytes);
}

/* Once per loop iteration, before polling. */
static void on_prepare(uv_prepare_t *h)
{
	struct kvd_server *s = h->data;
	kvd_watch_loop(s);
	if (s->apply == NULL || s->node == NULL)
		return;
	if (s->nospace_pending && !kv_apply_nospace(s->apply)) {
		s->nospace_pending = false;
		propose_nospace_alarm(s);
	}
	flush_batch(s);
	if (kv_apply_pending_bytes(s->apply) >= COMMIT_PENDING_BYTES) {
		int rv = kv_apply_commit(s->apply, true);
		if (rv != 0)
			fatal_stop(s, "store commit failed", rv);
	}
}

/* Bounded physical compaction steps while there is work. */
static void on_idle(uv_idle_t *h)
{
	struct kvd_server *s = h->data;
	bool done = true;
	if (s->apply != NULL) {
		int rv = kv_apply_compact_step(s->apply, &done);
		if (rv != 0) {
			fatal_stop(s, "compaction failed", rv);
			done = true;
		}
	}
	if (done) {
		if (s->apply != NULL)
			s->compacted_rev =
				mvcc_compact_revision(kv_apply_mvcc(s->apply));
		uv_idle_stop(h);
	}
}

static void on_tick(uv_timer_t *t)
{
	struct kvd_server *s = t->data;
	uint64_t now = uv_now(&s->loop);
	if (s->ticks++ % 30 == 1 && !s->stopping)
		send_attrs(s);
	kvd_check_move(s, false);
	kvd_watch_tick(s);
	kvd_lease_tick(s, COMMIT_INTERVAL_MS);
	while (s->wfirst != NULL && s->wfirst->deadline <= now)
		waiter_fail(s, s->wfirst, KV_GRPC_UNAVAILABLE,
			    "etcdserver: request timed out");
	if (s->apply == NULL)
		return;
	int rv = kv_apply_commit(s->apply, true);
	if (rv != 0) {
		fatal_stop(s, "store commit failed", rv);
		return;
	}
	if (mvcc_compact_revision(kv_apply_mvcc(s->apply)) > s->compacted_rev &&
	    !uv_is_active((uv_handle_t *)&s->idle))
		uv_idle_start(&s->idle, on_idle);
}

/* ---- transport <-> node ---------------------------------------------- */

static int net_send(void *data, uint64_t to, uint8_t type, const void *body,
		    size_t len)
{
	struct kvd_server *s = data;
	if (s->transport == NULL)
		return KV_ECLOSED;
	return peer_transport_send(s->transport, to, type, body, len);
}

static void on_peer_attrs(struct kvd_server *s, uint64_t from,
			  const void *body, size_t len)
{
	if (len > 4096)
		return;
	for (size_t i = 0; i < s->cluster.n; i++) {
		if (s->cluster.members[i].id != from)
			continue;
		char *u = malloc(len + 1);
		if (u == NULL)
			return;
		memcpy(u, body, len);
		u[len] = '\0';
		free(s->client_urls[i]);
		s->client_urls[i] = u;
		return;
	}
}

static void send_attrs(struct kvd_server *s)
{
	const char *u = s->cfg->advertise_client_urls;
	for (size_t i = 0; i < s->cluster.n; i++)
		if (s->cluster.members[i].id != s->self_id &&
		    s->transport != NULL)
			(void)peer_transport_send(s->transport,
						  s->cluster.members[i].id,
						  KVD_PEER_MSG_ATTRS, u,
						  strlen(u));
}

static void on_peer_message(void *data, uint64_t from, uint8_t type,
			    const void *body, size_t len)
{
	struct kvd_server *s = data;
	if (type == KVD_PEER_MSG_ATTRS)
		on_peer_attrs(s, from, body, len);
	else if (type == KVD_PEER_MSG_LEASE_FWD ||
		 type == KVD_PEER_MSG_LEASE_RET)
		kvd_lease_peer_message(s, from, type, body, len);
	else if (s->node != NULL)
		kvraft_node_receive(s->node, from, type, body, len);
}

/* ---- shutdown ---------------------------------------------------------- */

static void close_handles(struct kvd_server *s)
{
	uv_close((uv_handle_t *)&s->tick, NULL);
	uv_close((uv_handle_t *)&s->prepare, NULL);
	uv_close((uv_handle_t *)&s->idle, NULL);
	uv_close((uv_handle_t *)&s->watch_idle, NULL);
	uv_close((uv_handle_t *)&s->sigterm, NULL);
	uv_close((uv_handle_t *)&s->sigint, NULL);
}

static void on_transport_closed(void *data);

static void on_snapshots_done(struct kvd_server *s)
{
	on_transport_closed(s);
}

static void on_transport_closed(void *data)
{
	struct kvd_server *s = data;
	s->transport = NULL;
	if (s->snap_workers > 0) {
		/* a store copy still runs on a worker: close the store after */
		s->on_snapshots_done = on_snapshots_done;
		return;
	}
	if (s->apply != NULL) {
		int rv = kv_apply_commit(s->apply, true);
		if (rv != 0) {
			KV_ERROR(MOD, "final store commit failed", "err=%s",
				 kv_errname(rv));
			s->exit_code = 1;
		}
		kv_apply_close(s->apply);
		s->apply = NULL;
	}
	close_handles(s);
	KV_INFO(MOD, "stopped", "name=%s", s->cfg->name);
}

static void on_node_closed(void *data)
{
	struct kvd_server *s = data;
	kvd_check_move(s, true);
	/* Waiters left have no connection any more. */
	while (s->wfirst != NULL)
		waiter_fail(s, s->wfirst, KV_GRPC_UNAVAILABLE,
			    "etcdserver: server stopped");
	if (s->transport != NULL)
		peer_transport_close(s->transport, on_transport_closed, s);
	else
		on_transport_closed(s);
}

static void on_clients_closed(void *data)
{
	struct kvd_server *s = data;
	s->net = NULL;
	free_pending(s);
	if (s->node != NULL) {
		struct kvraft_node *n = s->node;
		s->node = NULL;
		kvraft_node_close(n, on_node_closed, s);
	} else {
		on_node_closed(s);
	}
}

static void begin_stop(struct kvd_server *s)
{
	if (s->stopping)
		return;
	s->stopping = true;
	kvd_watch_stop(s);
	kvd_lease_stop(s);
	/* Flush what clients already sent so it can still be answered. */
	if (s->node != NULL)
		flush_batch(s);
	if (s->net != NULL)
		net_server_shutdown(s->net, 3000, on_clients_closed, s);
	else
		on_clients_closed(s);
}

static void fatal_stop(struct kvd_server *s, const char *what, int rv)
{
	KV_ERROR(MOD, what, "err=%s", kv_errname(rv));
	s->exit_code = 1;
	begin_stop(s);
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct kvd_server *s = h->data;
	KV_INFO(MOD, "stopping", "signal=%d", signum);
	begin_stop(s);
}

/* ---- startup ----------------------------------------------------------- */

/* A plaintext connection: the HTTP/2 preface means gRPC. */
static void on_client_proto(struct net_conn *c, enum net_proto proto,
			    const char *first, size_t nfirst, void *data)
{
	struct kvd_server *s = data;
	int rv;
	if (proto == NET_PROTO_H2)
		rv = grpc_attach(c, s->grpc, NULL, first, nfirst);
	else
		rv = http_attach_prefixed(c, &s->http, kvd_on_request, s,
					  first, nfirst);
	if (rv != 0)
		KV_WARN(MOD, "cannot serve a connection", "peer=%s",
			net_conn_peer(c));
}

/* TLS: ALPN "h2" is gRPC, anything else HTTP/1.1 (the JSON gateway). */
static void on_client_ready(struct net_conn *c, const char *alpn, void *data)
{
	struct kvd_server *s = data;
	int rv;
	if (alpn == NULL)
		rv = net_sniff_attach(c, on_client_proto, s);
	else if (strcmp(alpn, "h2") == 0)
		rv = grpc_attach(c, s->grpc, NULL, NULL, 0);
	else
		rv = http_attach(c, &s->http, kvd_on_request, s);
	if (rv != 0)
		KV_WARN(MOD, "cannot serve a connection", "peer=%s",
			net_conn_peer(c));
}

static int mkdir_p(const char *dir)
{
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s", dir);
	for (char *p = tmp + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
		return -1;
	return 0;
}

static int setup_tls(struct kvd_server *s)
{
	const struct kvd_config *cfg = s->cfg;
	char err[512];
	int rv;
	if (cfg->cert_file != NULL) {
		struct tls_config tc = { 0 };
		tc.cert_file = cfg->cert_file;
		tc.key_file = cfg->key_file;
		tc.trusted_ca_file = cfg->trusted_ca_file;
		tc.client_cert_auth = cfg->client_cert_auth;
		tc.alpn = "h2,http/1.1";
		rv = tls_ctx_new_server(&tc, &s->client_tls, err, sizeof(err));
		if (rv != 0) {
			KV_ERROR(MOD, "client TLS setup failed", "err=\"%s\"",
				 err);
			return rv;
		}
	}
	if (cfg->peer_cert_file != NULL) {
		struct tls_config tc = { 0 };
		tc.cert_file = cfg->peer_cert_file;
		tc.key_file = cfg->peer_key_file;
		tc.trusted_ca_file = cfg->peer_trusted_ca_file;
		tc.client_cert_auth = true;
		tc.alpn = "";
		rv = tls_ctx_new_server(&tc, &s->peer_server_tls, err,
					sizeof(err));
		if (rv == 0)
			rv = tls_ctx_new_client(&tc, &s->peer_client_tls, err,
						sizeof(err));
		if (rv != 0) {
			KV_ERROR(MOD, "peer TLS setup failed", "err=\"%s\"", err);
			return rv;
		}
	}
	return 0;
}

static int start_transport(struct kvd_server *s)
{
	struct net_url *listen = NULL;
	size_t nlisten = 0;
	struct peer_member *pm;
	int rv;

	rv = net_url_list_parse(s->cfg->listen_peer_urls, &listen, &nlisten);
	if (rv != 0)
		return rv;
	pm = calloc(s->cluster.n, sizeof(*pm));
	if (pm == NULL) {
		free(listen);
		return KV_ENOMEM;
	}
	for (size_t i = 0; i < s->cluster.n; i++) {
		const struct kvraft_member *m = &s->cluster.members[i];
		pm[i].id = m->id;
		snprintf(pm[i].name, sizeof(pm[i].name), "%s", m->name);
		rv = net_url_parse(m->urls[0], &pm[i].url);
		if (rv != 0)
			goto out;
	}
	struct peer_transport_config pc = { 0 };
	pc.loop = &s->loop;
	pc.cluster_id = s->cluster_id;
	pc.self_id = s->self_id;
	pc.listen = listen;
	pc.nlisten = nlisten;
	pc.server_tls = s->peer_server_tls;
	pc.client_tls = s->peer_client_tls;
	rv = peer_transport_new(&pc, pm, s->cluster.n, on_peer_message, s,
				&s->transport);
	if (rv != 0)
		s->transport = NULL;
out:
	free(pm);
	free(listen);
	return rv;
}

static int start_clients(struct kvd_server *s)
{
	struct net_url *urls = NULL;
	size_t n = 0;
	struct net_server_config sc = { 0 };
	int rv = net_url_list_parse(s->cfg->listen_client_urls, &urls, &n);
	if (rv != 0)
		return rv;
	sc.keepalive_s = 30;
	rv = kvd_grpc_setup(s);
	if (rv != 0) {
		free(urls);
		return rv;
	}
	rv = net_server_new(&s->loop, &sc, on_client_ready, s, &s->net);
	if (rv != 0) {
		s->net = NULL;
		free(urls);
		return rv;
	}
	for (size_t i = 0; i < n && rv == 0; i++)
		rv = net_server_listen(s->net, &urls[i], s->client_tls);
	free(urls);
	return rv;
}

static int start_store_and_node(struct kvd_server *s)
{
	const struct kvd_config *cfg = s->cfg;
	char dir[4096], err[512];
	int rv;

	/* Joining a running cluster needs runtime reconfiguration (member
	 * add), which kvd does not have yet: bootstrapping a fresh data dir
	 * from the list could disagree with the running cluster's log. */
	snprintf(dir, sizeof(dir), "%s/member", cfg->data_dir);
	if (strcmp(cfg->initial_cluster_state, "existing") == 0 &&
	    access(dir, F_OK) != 0) {
		KV_ERROR(MOD,
			 "--initial-cluster-state=existing with an empty data "
			 "dir: joining a running cluster is not supported yet",
			 "dir=%s", cfg->data_dir);
		return KV_EUNSUPP;
	}
	if (mkdir_p(cfg->data_dir) != 0) {
		KV_ERROR(MOD, "cannot create the data dir", "dir=%s err=\"%s\"",
			 cfg->data_dir, strerror(errno));
		return KV_EIO;
	}
	snprintf(dir, sizeof(dir), "%s/db", cfg->data_dir);
	struct mvcc_options mo = { 0 };
	mo.quota_bytes = cfg->quota_backend_bytes;
	mo.max_txn_ops = cfg->max_txn_ops;
	struct kv_apply_options ao = { 0 };
	ao.dir = dir;
	ao.mvcc = &mo;
	ao.self_member_id = s->self_id;
	ao.cluster_id = s->cluster_id;
	struct kv_apply_hooks hooks = { 0 };
	hooks.data = s;
	hooks.on_result = on_result;
	hooks.on_applied = on_applied;
	hooks.on_nospace = on_nospace;
	hooks.on_restored = on_restored;
	rv = kv_apply_new(&ao, &hooks, &s->apply);
	if (rv != 0) {
		s->apply = NULL;
		KV_ERROR(MOD, "cannot open the store", "dir=%s err=%s", dir,
			 kv_errname(rv));
		return rv;
	}
	rv = kvd_watch_setup(s);
	if (rv != 0) {
		KV_ERROR(MOD, "cannot create the watch registry", "err=%s",
			 kv_errname(rv));
		return rv;
	}
	/* Resume physical compaction a previous run left unfinished. */
	s->compacted_rev = INT64_MIN;

	struct kvraft_node_config nc = { 0 };
	nc.data_dir = cfg->data_dir;
	nc.name = cfg->name;
	nc.self_id = s->self_id;
	nc.cluster_id = s->cluster_id;
	nc.members = s->cluster.members;
	nc.nmembers = s->cluster.n;
	nc.heartbeat_ms = cfg->heartbeat_ms;
	nc.election_timeout_ms = cfg->election_ms;
	nc.snapshot_count = cfg->snapshot_count;
	nc.snapshot_trailing = cfg->snapshot_catchup;
	nc.request_timeout_ms = (unsigned)s->request_timeout_ms;
	nc.wal_sync = WAL_SYNC_DATA;
	s->rnet.data = s;
	s->rnet.send = net_send;
	rv = kvraft_node_new(&s->loop, &nc, kv_apply_sm(s->apply), &s->rnet,
			     &s->node, err, sizeof(err));
	if (rv != 0) {
		s->node = NULL;
		KV_ERROR(MOD, "cannot create the raft node", "err=\"%s\"", err);
		return rv;
	}
	rv = kvraft_node_start(s->node);
	if (rv != 0) {
		KV_ERROR(MOD, "cannot start raft", "err=%s", kv_errname(rv));
		return rv;
	}
	struct kvraft_status st;
	kvraft_node_status(s->node, &st);
	if (st.id != s->self_id || st.cluster_id != s->cluster_id) {
		KV_ERROR(MOD,
			 "the data dir belongs to another member or cluster "
			 "(restart with the flags it was created with)",
			 "dir_member=%llx flags_member=%llx",
			 (unsigned long long)st.id,
			 (unsigned long long)s->self_id);
		return KV_EINVAL;
	}
	return 0;
}

static void on_abort_close(void *data)
{
	(void)data;
}

static void on_abort_node_closed(void *data)
{
	struct kvd_server *s = data;
	if (s->transport != NULL) {
		peer_transport_close(s->transport, on_abort_close, NULL);
		s->transport = NULL;
	}
}

int kvd_server_run(const struct kvd_config *cfg)
{
	struct kvd_server *s = calloc(1, sizeof(*s));
	enum kv_log_level lv;
	int rv, code = 1;

	if (s == NULL)
		return 1;
	if (kv_log_parse_level(cfg->log_level, &lv) == 0)
		kv_log_set_level(lv);
	s->cfg = cfg;
	s->request_timeout_ms = 5000 + 2 * (uint64_t)cfg->election_ms;
	s->http.max_body_bytes =
		(size_t)cfg->max_request_bytes * 4 / 3 + 576 * 1024;
	/* One request at a time per connection, as Go's net/http serves
	 * etcd's gateway: a pipelined read after a write on the same
	 * connection then sees that write. */
	s->http.max_pipeline = 1;
	s->http.abort_on_eof = true;

	char err[256];
	rv = kvraft_cluster_parse(cfg->initial_cluster,
				  cfg->initial_cluster_token,
				  cfg->initial_cluster_state, &s->cluster, err,
				  sizeof(err));
	if (rv != 0) {
		KV_ERROR(MOD, "bad --initial-cluster", "err=\"%s\"", err);
		free(s);
		return 1;
	}
	const struct kvraft_member *self =
		kvraft_cluster_find(&s->cluster, cfg->name);
	s->self_id = self->id;
	s->client_urls = calloc(s->cluster.n, sizeof(char *));
	if (s->client_urls == NULL) {
		kvraft_cluster_free(&s->cluster);
		free(s);
		return 1;
	}
	s->cluster_id = s->cluster.cluster_id;
	uv_loop_init(&s->loop);
	uv_timer_init(&s->loop, &s->tick);
	uv_prepare_init(&s->loop, &s->prepare);
	uv_idle_init(&s->loop, &s->idle);
	uv_idle_init(&s->loop, &s->watch_idle);
	uv_signal_init(&s->loop, &s->sigterm);
	uv_signal_init(&s->loop, &s->sigint);
	s->tick.data = s->prepare.data = s->idle.data = s;
	s->watch_idle.data = s;
	s->sigterm.data = s->sigint.data = s;

	if (setup_tls(s) != 0)
		goto fail;
	rv = start_transport(s);
	if (rv != 0) {
		KV_ERROR(MOD, "cannot listen for peers", "urls=%s err=%s",
			 cfg->listen_peer_urls, kv_errname(rv));
		goto fail;
	}
	if (start_store_and_node(s) != 0)
		goto fail;
	rv = start_clients(s);
	if (rv != 0) {
		KV_ERROR(MOD, "cannot listen for clients", "urls=%s err=%s",
			 cfg->listen_client_urls, kv_errname(rv));
		goto fail;
	}
	uv_update_time(&s->loop);
	s->lease_tick_at = uv_now(&s->loop);
	uv_timer_start(&s->tick, on_tick, COMMIT_INTERVAL_MS,
		       COMMIT_INTERVAL_MS);
	uv_prepare_start(&s->prepare, on_prepare);
	uv_signal_start(&s->sigterm, on_signal, SIGTERM);
	uv_signal_start(&s->sigint, on_signal, SIGINT);
	KV_INFO(MOD, "serving", "name=%s member=%llx cluster=%llx clients=%s",
		cfg->name, (unsigned long long)s->self_id,
		(unsigned long long)s->cluster_id, cfg->listen_client_urls);
	uv_run(&s->loop, UV_RUN_DEFAULT);
	code = s->exit_code;
	goto out;

fail:
	/* Tear down what started, on the loop. */
	if (s->net != NULL) {
		net_server_shutdown(s->net, 0, NULL, NULL);
		s->net = NULL;
	}
	if (s->node != NULL) {
		struct kvraft_node *n = s->node;
		s->node = NULL;
		kvraft_node_close(n, on_abort_node_closed, s);
	} else if (s->transport != NULL) {
		peer_transport_close(s->transport, on_abort_close, NULL);
		s->transport = NULL;
	}
	close_handles(s);
	uv_run(&s->loop, UV_RUN_DEFAULT);
	if (s->apply != NULL) {
		kv_apply_close(s->apply);
		s->apply = NULL;
	}
	code = 1;
out:
	uv_run(&s->loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&s->loop) != 0)
		KV_WARN(MOD, "loop had open handles at exit", NULL);
	free(s->pending);
	kvd_grpc_free(s);
	kvd_watch_free(s);
	mvcc_arena_free(&s->arena);
	tls_ctx_free(s->client_tls);
	tls_ctx_free(s->peer_server_tls);
	tls_ctx_free(s->peer_client_tls);
	for (size_t i = 0; i < s->cluster.n; i++)
		free(s->client_urls[i]);
	free(s->client_urls);
	kvraft_cluster_free(&s->cluster);
	free(s);
	return code;
}

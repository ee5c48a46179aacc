/* etcd's Lease service (/etcdserverpb.Lease): Grant and Revoke go through
 * raft; KeepAlive and TimeToLive are answered by the leader's lessor
 * (kvraft/lessor.h) without touching the log, forwarded over the peer
 * transport when this member follows; Leases is answered locally.
 *
 * The leader's duties run from the tick (kvd_lease_tick): promote or
 * demote the lessor as leadership comes and goes, propose the revoke of
 * expired leases (LeaseExpire, at most etcd's 1000 leases/s), and
 * checkpoint the remaining TTL of long leases every
 * --experimental-lease-checkpoint-interval so that a new leader neither
 * extends nor cuts them by more than that interval (plus the election
 * timeout of grace every lease gets at a promotion).
 *
 * Forwarding: a follower sends KVD_PEER_MSG_LEASE_FWD = seq u64 LE, kind
 * u8, the request message; the leader answers KVD_PEER_MSG_LEASE_RET =
 * seq, gRPC code u8, then the response message (code 0) or etcd's error
 * text. The follower fills in its own header, as etcd does. */
#include "server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "storage/mvcc.h"

#define MOD "lease"

/* etcd's leaseRevokeRate: expired leases revoked per second. */
#define REVOKE_RATE 1000
/* etcd's expiredLeaseRetryInterval: ask again if the revoke got lost. */
#define REVOKE_RETRY_MS 3000
/* Checkpoints proposed per tick at most. */
#define CHECKPOINT_BATCH 64
/* Leases examined per tick for checkpoints. */
#define CHECKPOINT_SCAN 10000

enum fwd_kind { FWD_KEEPALIVE = 1, FWD_TTL = 2 };

/* A call waiting for the leader's answer. */
struct lease_fwd {
	uint64_t seq;
	enum fwd_kind kind;
	struct kvd_server *s;
	struct kvd_call *call;
	uint64_t deadline;
	struct lease_fwd *prev, *next;
};

static struct kv_lessor *lessor_of(struct kvd_server *s)
{
	return s->apply != NULL ? kv_apply_lessor(s->apply) : NULL;
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

/* etcd's minLeaseTTL: ceil(1.5 election timeouts) in seconds, counted in
 * whole heartbeats. */
static int64_t min_ttl(const struct kvd_server *s)
{
	uint64_t hb = s->cfg->heartbeat_ms ? s->cfg->heartbeat_ms : 100;
	uint64_t ticks = s->cfg->election_ms / hb;
	uint64_t ms = (3 * ticks / 2) * hb;
	return (int64_t)((ms + 999) / 1000);
}

static Etcdserverpb__ResponseHeader *header(struct kvd_server *s,
					    struct mvcc_arena *ar)
{
	struct kv_header_ids ids;
	kvd_header_ids(s, &ids);
	return kv_translate_header(&ids, mvcc_revision(kv_apply_mvcc(s->apply)),
				   ar);
}

/* Leadership as the lessor should see it: primary exactly while this
 * member leads and has applied everything of earlier terms. */
static bool sync_role(struct kvd_server *s)
{
	struct kv_lessor *l = lessor_of(s);
	struct kvraft_status st;
	if (l == NULL || s->node == NULL)
		return false;
	kvraft_node_status(s->node, &st);
	bool lead = st.role == KVRAFT_LEADER && st.leader_ready && !st.failed;
	if (lead && !kv_lessor_primary(l)) {
		kv_lessor_promote(l, s->cfg->election_ms);
		KV_INFO(MOD, "lessor promoted", "leases=%zu extend_ms=%u",
			kv_lessor_count(l), s->cfg->election_ms);
	} else if (!lead && kv_lessor_primary(l)) {
		kv_lessor_demote(l);
		KV_INFO(MOD, "lessor demoted", "leases=%zu",
			kv_lessor_count(l));
	}
	return lead;
}

static int propose_internal(struct kvd_server *s, Kvdpb__InternalRequest *ir)
{
	int rc = kvd_propose_internal(s, ir);
	if (rc != 0)
		protobuf_c_message_free_unpacked(&ir->base, NULL);
	return rc;
}

static void propose_checkpoints(struct kvd_server *s, const int64_t *ids,
				const int64_t *rem, size_t n)
{
	Kvdpb__InternalRequest *ir = calloc(1, sizeof(*ir));
	Etcdserverpb__LeaseCheckpointRequest *r = calloc(1, sizeof(*r));
	Etcdserverpb__LeaseCheckpoint **v = calloc(n, sizeof(*v));
	if (ir == NULL || r == NULL || v == NULL) {
		free(ir);
		free(r);
		free(v);
		return;
	}
	kvdpb__internal_request__init(ir);
	etcdserverpb__lease_checkpoint_request__init(r);
	ir->request_case = KVDPB__INTERNAL_REQUEST__REQUEST_LEASE_CHECKPOINT;
	ir->lease_checkpoint = r;
	r->checkpoints = v;
	for (size_t i = 0; i < n; i++) {
		v[i] = malloc(sizeof(*v[i]));
		if (v[i] == NULL)
			break;
		etcdserverpb__lease_checkpoint__init(v[i]);
		v[i]->id = ids[i];
		v[i]->remaining_ttl = rem[i];
		r->n_checkpoints++;
	}
	(void)propose_internal(s, ir);
}

/* A lease ID this member picks, as etcd's idutil generator: the low 16
 * bits of the member ID, then 48 bits counting up from the wall clock in
 * milliseconds << 8 (at most 256 a millisecond before it runs ahead),
 * kept positive. Members thus never pick the same ID at the same time,
 * and a restarted member starts above what it used before. */
static int64_t new_lease_id(struct kvd_server *s)
{
	const uint64_t low48 = ((uint64_t)1 << 48) - 1;
	uint64_t floor = ((kv_wall_us() / 1000) << 8) & low48;
	s->lease_id_seq = s->lease_id_seq + 1 > floor ? s->lease_id_seq + 1
						     : floor;
	uint64_t id = ((s->self_id & 0xffff) << 48) | (s->lease_id_seq & low48);
	return (int64_t)(id & (uint64_t)INT64_MAX);
}

/* ---- the RPCs ------------------------------------------------------------ */

void kvd_svc_lease_grant(struct kvd_server *s, struct kvd_call *c,
			 ProtobufCMessage *m)
{
	Etcdserverpb__LeaseGrantRequest *r = (Etcdserverpb__LeaseGrantRequest *)m;
	struct kv_status st = { 0, "" };
	if (kv_validate_lease_grant(r, &st) != 0) {
		protobuf_c_message_free_unpacked(m, NULL);
		kvd_fail_status(c, &st);
		return;
	}
	if (r->ttl < min_ttl(s))
		r->ttl = min_ttl(s);
	/* etcd: the server picks a positive id when the client gave none */
	if (r->id == 0) {
		struct kv_lessor *l = lessor_of(s);
		do
			r->id = new_lease_id(s);
		while (l != NULL && kv_lessor_exists(l, r->id));
	}
	kvd_propose(s, c, KVDPB__INTERNAL_REQUEST__REQUEST_LEASE_GRANT, m);
}

void kvd_svc_lease_revoke(struct kvd_server *s, struct kvd_call *c,
			  ProtobufCMessage *m)
{
	kvd_propose(s, c, KVDPB__INTERNAL_REQUEST__REQUEST_LEASE_REVOKE, m);
}

void kvd_svc_lease_leases(struct kvd_server *s, struct kvd_call *c,
			  ProtobufCMessage *m)
{
	struct mvcc_arena ar = MVCC_ARENA_INIT;
	Etcdserverpb__LeaseLeasesResponse resp =
		ETCDSERVERPB__LEASE_LEASES_RESPONSE__INIT;
	int64_t *ids = NULL;
	size_t n = 0;
	protobuf_c_message_free_unpacked(m, NULL);
	if (kv_lessor_ids(lessor_of(s), &ids, &n) != 0)
		goto nomem;
	resp.header = header(s, &ar);
	resp.leases = mvcc_arena_alloc(&ar, (n + 1) * sizeof(void *));
	if (resp.header == NULL || resp.leases == NULL)
		goto nomem;
	for (size_t i = 0; i < n; i++) {
		Etcdserverpb__LeaseStatus *ls = mvcc_arena_alloc(&ar,
								 sizeof(*ls));
		if (ls == NULL)
			goto nomem;
		etcdserverpb__lease_status__init(ls);
		ls->id = ids[i];
		resp.leases[resp.n_leases++] = ls;
	}
	kvd_call_respond(c, &resp.base);
	free(ids);
	mvcc_arena_free(&ar);
	return;
nomem:
	free(ids);
	mvcc_arena_free(&ar);
	kvd_call_fail(c, KV_GRPC_RESOURCE_EXHAUSTED,
		      "etcdserver: too many requests");
}

/* The leader's answers. */
static void keepalive_local(struct kvd_server *s, struct kvd_call *c,
			    int64_t id)
{
	struct mvcc_arena ar = MVCC_ARENA_INIT;
	Etcdserverpb__LeaseKeepAliveResponse resp =
		ETCDSERVERPB__LEASE_KEEP_ALIVE_RESPONSE__INIT;
	bool clear = false;
	resp.id = id;
	resp.ttl = kv_lessor_renew(lessor_of(s), id, &clear);
	if (clear) {
		int64_t zero = 0;
		propose_checkpoints(s, &id, &zero, 1);
	}
	resp.header = header(s, &ar);
	if (resp.header == NULL)
		kvd_call_fail(c, KV_GRPC_RESOURCE_EXHAUSTED,
			      "etcdserver: too many requests");
	else
		kvd_call_respond(c, &resp.base);
	mvcc_arena_free(&ar);
}

static void ttl_local(struct kvd_server *s, struct kvd_call *c, int64_t id,
		      bool keys)
{
	struct mvcc_arena ar = MVCC_ARENA_INIT;
	Etcdserverpb__LeaseTimeToLiveResponse resp =
		ETCDSERVERPB__LEASE_TIME_TO_LIVE_RESPONSE__INIT;
	struct kv_lease_info info;
	resp.id = id;
	resp.header = header(s, &ar);
	if (resp.header == NULL)
		goto nomem;
	if (kv_lessor_info(lessor_of(s), id, &info) != 0) {
		resp.ttl = -1; /* etcd: not an error */
	} else {
		resp.ttl = info.left_ms / 1000;
		resp.grantedttl = info.ttl;
		if (keys) {
			struct mvcc_kv *kvs;
			size_t n;
			if (kv_apply_lease_keys(s->apply, id, &ar, &kvs, &n) != 0)
				goto nomem;
			resp.keys = mvcc_arena_alloc(&ar, (n + 1) *
							  sizeof(*resp.keys));
			if (resp.keys == NULL)
				goto nomem;
			for (size_t i = 0; i < n; i++) {
				resp.keys[i].data = (uint8_t *)kvs[i].key;
				resp.keys[i].len = kvs[i].key_len;
			}
			resp.n_keys = n;
		}
	}
	kvd_call_respond(c, &resp.base);
	mvcc_arena_free(&ar);
	return;
nomem:
	mvcc_arena_free(&ar);
	kvd_call_fail(c, KV_GRPC_RESOURCE_EXHAUSTED,
		      "etcdserver: too many requests");
}

/* ---- forwarding to the leader -------------------------------------------- */

static void fwd_unlink(struct kvd_server *s, struct lease_fwd *f)
{
	if (f->prev != NULL)
		f->prev->next = f->next;
	else
		s->lease_fwd_first = f->next;
	if (f->next != NULL)
		f->next->prev = f->prev;
	else
		s->lease_fwd_last = f->prev;
}

static void fwd_abort(struct kvd_call *c)
{
	struct lease_fwd *f = c->user;
	fwd_unlink(f->s, f);
	free(f);
}

static void fwd_fail(struct kvd_server *s, struct lease_fwd *f, int code,
		     const char *msg)
{
	fwd_unlink(s, f);
	kvd_call_fail(f->call, code, msg);
	free(f);
}

static void forward(struct kvd_server *s, struct kvd_call *c,
		    enum fwd_kind kind, const ProtobufCMessage *m)
{
	struct kvraft_status st;
	kvraft_node_status(s->node, &st);
	if (st.leader == 0 || st.leader == s->self_id || s->transport == NULL) {
		/* no leader, or we lead but are not ready yet */
		kvd_call_fail(c, KV_GRPC_UNAVAILABLE,
			      st.leader == 0 ? "etcdserver: no leader"
					     : "etcdserver: leader changed");
		return;
	}
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(9 + n);
	struct lease_fwd *f = calloc(1, sizeof(*f));
	if (buf == NULL || f == NULL) {
		free(buf);
		free(f);
		kvd_call_fail(c, KV_GRPC_RESOURCE_EXHAUSTED,
			      "etcdserver: too many requests");
		return;
	}
	f->seq = ++s->lease_fwd_seq;
	f->kind = kind;
	f->s = s;
	f->call = c;
	f->deadline = uv_now(&s->loop) + s->request_timeout_ms;
	put_u64(buf, f->seq);
	buf[8] = (uint8_t)kind;
	protobuf_c_message_pack(m, buf + 9);
	int rc = peer_transport_send(s->transport, st.leader,
				     KVD_PEER_MSG_LEASE_FWD, buf, 9 + n);
	free(buf);
	if (rc != 0) {
		free(f);
		kvd_call_fail(c, KV_GRPC_UNAVAILABLE,
			      "etcdserver: leader changed");
		return;
	}
	f->prev = s->lease_fwd_last;
	if (s->lease_fwd_last != NULL)
		s->lease_fwd_last->next = f;
	else
		s->lease_fwd_first = f;
	s->lease_fwd_last = f;
	c->user = f;
	c->on_abort = fwd_abort;
}

void kvd_svc_lease_keepalive(struct kvd_server *s, struct kvd_call *c,
			     ProtobufCMessage *m)
{
	Etcdserverpb__LeaseKeepAliveRequest *r =
		(Etcdserverpb__LeaseKeepAliveRequest *)m;
	if (sync_role(s))
		keepalive_local(s, c, r->id);
	else
		forward(s, c, FWD_KEEPALIVE, m);
	protobuf_c_message_free_unpacked(m, NULL);
}

void kvd_svc_lease_ttl(struct kvd_server *s, struct kvd_call *c,
		       ProtobufCMessage *m)
{
	Etcdserverpb__LeaseTimeToLiveRequest *r =
		(Etcdserverpb__LeaseTimeToLiveRequest *)m;
	if (sync_role(s))
		ttl_local(s, c, r->id, r->keys);
	else
		forward(s, c, FWD_TTL, m);
	protobuf_c_message_free_unpacked(m, NULL);
}

/* The leader runs a forwarded request with this call and sends the
 * answer back. */
struct peer_call {
	struct kvd_call base;
	uint64_t from, seq;
};

static void pc_send(struct peer_call *pc, uint8_t code, const void *body,
		    size_t len, const ProtobufCMessage *msg)
{
	struct kvd_server *s = pc->base.s;
	size_t n = msg != NULL ? protobuf_c_message_get_packed_size(msg) : len;
	uint8_t *buf = malloc(9 + n);
	if (buf != NULL && s->transport != NULL) {
		put_u64(buf, pc->seq);
		buf[8] = code;
		if (msg != NULL)
			protobuf_c_message_pack(msg, buf + 9);
		else if (len > 0)
			memcpy(buf + 9, body, len);
		(void)peer_transport_send(s->transport, pc->from,
					  KVD_PEER_MSG_LEASE_RET, buf, 9 + n);
	}
	free(buf);
	free(pc);
}

static void pc_respond(struct kvd_call *c, const ProtobufCMessage *msg)
{
	pc_send((struct peer_call *)c, 0, NULL, 0, msg);
}

static void pc_fail(struct kvd_call *c, int code, const char *msg)
{
	pc_send((struct peer_call *)c, (uint8_t)code, msg, strlen(msg), NULL);
}

static const struct kvd_call_ops peer_call_ops = {
	.respond = pc_respond,
	.fail = pc_fail,
};

static void on_forwarded(struct kvd_server *s, uint64_t from,
			 const uint8_t *body, size_t len)
{
	if (len < 9)
		return;
	struct peer_call *pc = calloc(1, sizeof(*pc));
	if (pc == NULL)
		return;
	pc->base.ops = &peer_call_ops;
	pc->base.s = s;
	pc->from = from;
	pc->seq = get_u64(body);
	if (!kvd_serving(s) || !sync_role(s)) {
		pc_fail(&pc->base, KV_GRPC_UNAVAILABLE,
			"etcdserver: leader changed");
		return;
	}
	switch (body[8]) {
	case FWD_KEEPALIVE: {
		Etcdserverpb__LeaseKeepAliveRequest *r =
			etcdserverpb__lease_keep_alive_request__unpack(
				NULL, len - 9, body + 9);
		if (r == NULL)
			break;
		keepalive_local(s, &pc->base, r->id);
		etcdserverpb__lease_keep_alive_request__free_unpacked(r, NULL);
		return;
	}
	case FWD_TTL: {
		Etcdserverpb__LeaseTimeToLiveRequest *r =
			etcdserverpb__lease_time_to_live_request__unpack(
				NULL, len - 9, body + 9);
		if (r == NULL)
			break;
		ttl_local(s, &pc->base, r->id, r->keys);
		etcdserverpb__lease_time_to_live_request__free_unpacked(r,
									NULL);
		return;
	}
	default:
		break;
	}
	pc_fail(&pc->base, KV_GRPC_INVALID_ARGUMENT,
		"kvd: undecodable forwarded lease request");
}

static void on_returned(struct kvd_server *s, const uint8_t *body, size_t len)
{
	if (len < 9)
		return;
	uint64_t seq = get_u64(body);
	struct lease_fwd *f = s->lease_fwd_first;
	while (f != NULL && f->seq != seq)
		f = f->next;
	if (f == NULL)
		return; /* timed out or the client left */
	if (body[8] != 0) {
		char msg[256];
		size_t n = len - 9 < sizeof(msg) - 1 ? len - 9 : sizeof(msg) - 1;
		memcpy(msg, body + 9, n);
		msg[n] = '\0';
		fwd_fail(s, f, body[8], msg);
		return;
	}
	const ProtobufCMessageDescriptor *d =
		f->kind == FWD_KEEPALIVE
			? &etcdserverpb__lease_keep_alive_response__descriptor
			: &etcdserverpb__lease_time_to_live_response__descriptor;
	ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len - 9,
							body + 9);
	if (m == NULL) {
		fwd_fail(s, f, KV_GRPC_INTERNAL,
			 "kvd: undecodable lease answer from the leader");
		return;
	}
	/* etcd fills in the answering member's own header */
	Etcdserverpb__ResponseHeader **hp =
		f->kind == FWD_KEEPALIVE
			? &((Etcdserverpb__LeaseKeepAliveResponse *)m)->header
			: &((Etcdserverpb__LeaseTimeToLiveResponse *)m)->header;
	if (*hp != NULL && s->apply != NULL) {
		struct kv_header_ids ids;
		kvd_header_ids(s, &ids);
		(*hp)->cluster_id = ids.cluster_id;
		(*hp)->member_id = ids.member_id;
		(*hp)->raft_term = ids.raft_term;
		(*hp)->revision = mvcc_revision(kv_apply_mvcc(s->apply));
	}
	fwd_unlink(s, f);
	kvd_call_respond(f->call, m);
	free(f);
	protobuf_c_message_free_unpacked(m, NULL);
}

void kvd_lease_peer_message(struct kvd_server *s, uint64_t from,
			    uint8_t type, const void *body, size_t len)
{
	if (type == KVD_PEER_MSG_LEASE_FWD)
		on_forwarded(s, from, body, len);
	else if (type == KVD_PEER_MSG_LEASE_RET)
		on_returned(s, body, len);
}

/* ---- the leader's duties ------------------------------------------------- */

void kvd_lease_tick(struct kvd_server *s, uint64_t elapsed_ms)
{
	uint64_t now = uv_now(&s->loop);
	while (s->lease_fwd_first != NULL &&
	       s->lease_fwd_first->deadline <= now)
		fwd_fail(s, s->lease_fwd_first, KV_GRPC_UNAVAILABLE,
			 "etcdserver: request timed out");
	uint64_t last = s->lease_tick_at;
	s->lease_tick_at = now;
	if (!kvd_serving(s) || !sync_role(s))
		return;
	struct kv_lessor *l = lessor_of(s);
	if (now - last > s->cfg->election_ms) {
		/* The loop stalled (a slow disk, a stop signal): keep-alives
		 * may be waiting unread in sockets. Do not expire leases for
		 * our own absence (etcd #15247): restart every lease from its
		 * remaining TTL plus the grace, as a new leader would. */
		KV_WARN(MOD, "loop stalled: leases restarted from their "
			"remaining TTL", "stall_ms=%llu",
			(unsigned long long)(now - last));
		kv_lessor_demote(l);
		kv_lessor_promote(l, s->cfg->election_ms);
	}
	size_t max = (size_t)(REVOKE_RATE * elapsed_ms / 1000);
	if (max == 0)
		max = 1;
	int64_t *ids = malloc(max * sizeof(*ids));
	if (ids == NULL)
		return;
	size_t n = kv_lessor_expired(l, ids, max, REVOKE_RETRY_MS);
	if (n > 0) {
		Kvdpb__InternalRequest *ir = calloc(1, sizeof(*ir));
		Kvdpb__LeaseExpire *le = calloc(1, sizeof(*le));
		if (ir != NULL && le != NULL) {
			kvdpb__internal_request__init(ir);
			kvdpb__lease_expire__init(le);
			ir->request_case =
				KVDPB__INTERNAL_REQUEST__REQUEST_LEASE_EXPIRE;
			ir->lease_expire = le;
			le->ids = ids;
			le->n_ids = n;
			ids = NULL;
			KV_DEBUG(MOD, "leases expired", "count=%zu", n);
			(void)propose_internal(s, ir);
		} else {
			free(ir);
			free(le);
		}
	}
	free(ids);
	if (s->cfg->lease_checkpoint_ms == 0)
		return;
	int64_t cids[CHECKPOINT_BATCH], crem[CHECKPOINT_BATCH];
	n = kv_lessor_checkpoints(l, s->cfg->lease_checkpoint_ms,
				  CHECKPOINT_SCAN, cids, crem,
				  CHECKPOINT_BATCH);
	if (n > 0)
		propose_checkpoints(s, cids, crem, n);
}


/* ---- LeaseKeepAlive over gRPC -------------------------------------------- */

/* One bidirectional stream: requests are answered one at a time, in order
 * (reading pauses while one is pending), as etcd's loop does. */
struct ka_stream {
	struct kvd_call call; /* the request being answered */
	struct grpc_call *gc;
	uint8_t *out; /* an answer waiting for on_writable */
	size_t nout;
	bool busy, paused, half_closed, in_message, dead;
	struct ka_stream *prev, *next;
};

static void ka_unlink(struct kvd_server *s, struct ka_stream *ka)
{
	if (ka->prev != NULL)
		ka->prev->next = ka->next;
	else
		s->lease_streams = ka->next;
	if (ka->next != NULL)
		ka->next->prev = ka->prev;
}

/* Ends the stream; ka is freed now, or by on_message when inside it. */
static void ka_finish(struct ka_stream *ka, int code, const char *msg)
{
	struct grpc_call *gc = ka->gc;
	ka_unlink(ka->call.s, ka);
	grpc_call_set_user(gc, NULL);
	free(ka->out);
	ka->out = NULL;
	if (ka->in_message)
		ka->dead = true;
	else
		free(ka);
	grpc_call_finish(gc, code, msg);
}

static void ka_sent(struct ka_stream *ka)
{
	ka->busy = false;
	if (ka->half_closed) {
		ka_finish(ka, GRPC_OK, NULL);
		return;
	}
	if (ka->paused) {
		ka->paused = false;
		grpc_call_pause_recv(ka->gc, false);
	}
}

static void ka_flush(struct ka_stream *ka)
{
	int rc = grpc_call_send(ka->gc, ka->out, ka->nout);
	if (rc == KV_EAGAIN)
		return;
	free(ka->out);
	ka->out = NULL;
	if (rc != 0)
		ka_finish(ka, GRPC_RESOURCE_EXHAUSTED,
			  "etcdserver: too many requests");
	else
		ka_sent(ka);
}

static void ka_respond(struct kvd_call *c, const ProtobufCMessage *msg)
{
	struct ka_stream *ka = (struct ka_stream *)c;
	size_t n = protobuf_c_message_get_packed_size(msg);
	ka->out = malloc(n ? n : 1);
	if (ka->out == NULL) {
		ka_finish(ka, GRPC_RESOURCE_EXHAUSTED,
			  "etcdserver: too many requests");
		return;
	}
	ka->nout = protobuf_c_message_pack(msg, ka->out);
	ka_flush(ka);
}

static void ka_fail(struct kvd_call *c, int code, const char *msg)
{
	ka_finish((struct ka_stream *)c, code, msg);
}

static const struct kvd_call_ops ka_ops = {
	.respond = ka_respond,
	.fail = ka_fail,
};

static void ka_start(struct grpc_call *gc, const unsigned char *msg,
		     size_t len, void *data)
{
	(void)msg;
	(void)len;
	struct kvd_server *s = data;
	if (!kvd_grpc_admit(s, gc))
		return;
	struct ka_stream *ka = calloc(1, sizeof(*ka));
	if (ka == NULL) {
		grpc_call_finish(gc, GRPC_RESOURCE_EXHAUSTED,
				 "etcdserver: too many requests");
		return;
	}
	ka->call.ops = &ka_ops;
	ka->call.s = s;
	ka->gc = gc;
	ka->next = s->lease_streams;
	if (ka->next != NULL)
		ka->next->prev = ka;
	s->lease_streams = ka;
	grpc_call_set_user(gc, ka);
}

static void ka_message(struct grpc_call *gc, const unsigned char *msg,
		       size_t len)
{
	struct ka_stream *ka = grpc_call_user(gc);
	if (ka == NULL)
		return;
	ProtobufCMessage *m = protobuf_c_message_unpack(
		&etcdserverpb__lease_keep_alive_request__descriptor, NULL, len,
		msg);
	if (m == NULL) {
		ka_finish(ka, GRPC_INTERNAL,
			  "grpc: error unmarshalling request: "
			  "proto: bad wire format");
		return;
	}
	ka->busy = true;
	ka->in_message = true;
	kvd_svc_lease_keepalive(ka->call.s, &ka->call, m);
	ka->in_message = false;
	if (ka->dead) {
		free(ka);
		return;
	}
	if (ka->busy && !ka->paused) {
		ka->paused = true;
		grpc_call_pause_recv(gc, true);
	}
}

static void ka_half_close(struct grpc_call *gc)
{
	struct ka_stream *ka = grpc_call_user(gc);
	if (ka == NULL)
		return;
	if (ka->busy)
		ka->half_closed = true;
	else
		ka_finish(ka, GRPC_OK, NULL);
}

static void ka_writable(struct grpc_call *gc)
{
	struct ka_stream *ka = grpc_call_user(gc);
	if (ka != NULL && ka->out != NULL)
		ka_flush(ka);
}

static void ka_cancel(struct grpc_call *gc, int status)
{
	(void)status;
	struct ka_stream *ka = grpc_call_user(gc);
	if (ka == NULL)
		return;
	grpc_call_set_user(gc, NULL);
	ka_unlink(ka->call.s, ka);
	if (ka->busy && ka->call.on_abort != NULL)
		ka->call.on_abort(&ka->call);
	free(ka->out);
	free(ka);
}

const struct grpc_handler kvd_lease_keepalive_grpc_h = {
	.on_start = ka_start,
	.on_message = ka_message,
	.on_half_close = ka_half_close,
	.on_writable = ka_writable,
	.on_cancel = ka_cancel,
};

void kvd_lease_stop(struct kvd_server *s)
{
	while (s->lease_fwd_first != NULL)
		fwd_fail(s, s->lease_fwd_first, KV_GRPC_UNAVAILABLE,
			 "etcdserver: server stopped");
	while (s->lease_streams != NULL)
		ka_finish(s->lease_streams, GRPC_UNAVAILABLE,
			  "etcdserver: server stopped");
}

/* etcd's v3 RPCs, independent of the transport: each takes the decoded
 * request and answers a struct kvd_call (server_internal.h). gateway.c
 * (HTTP/JSON) and grpc_service.c (gRPC) decode, look the RPC up in
 * kvd_rpcs and encode the answer. */
#include "server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "storage/mvcc.h"

#define MOD "service"

bool kvd_serving(const struct kvd_server *s)
{
	return !s->stopping && s->node != NULL && s->apply != NULL;
}

bool kvd_healthy(const struct kvd_server *s)
{
	struct kvraft_status st;
	memset(&st, 0, sizeof(st));
	if (s->node != NULL)
		kvraft_node_status(s->node, &st);
	return st.leader != 0 && !st.failed &&
	       !(s->apply != NULL && kv_apply_nospace(s->apply));
}

void kvd_fail_status(struct kvd_call *c, const struct kv_status *st)
{
	if (st->code != 0)
		kvd_call_fail(c, st->code, st->msg);
	else
		kvd_call_fail(c, KV_GRPC_RESOURCE_EXHAUSTED,
			      "etcdserver: too many requests");
}

static bool fail_validation(struct kvd_call *c, ProtobufCMessage *msg, int rv,
			    const struct kv_status *st)
{
	if (rv == 0)
		return false;
	protobuf_c_message_free_unpacked(msg, NULL);
	kvd_fail_status(c, st);
	return true;
}

static void too_many(struct kvd_call *c)
{
	kvd_call_fail(c, KV_GRPC_RESOURCE_EXHAUSTED,
		      "etcdserver: too many requests");
}

static bool txn_serializable(const Etcdserverpb__TxnRequest *t)
{
	size_t n = 0;
	for (int pass = 0; pass < 2; pass++) {
		size_t cnt = pass ? t->n_failure : t->n_success;
		Etcdserverpb__RequestOp **ops = pass ? t->failure : t->success;
		for (size_t i = 0; i < cnt; i++, n++) {
			if (ops[i]->request_case !=
				    ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE ||
			    !ops[i]->request_range->serializable)
				return false;
		}
	}
	return n > 0;
}

static void svc_range(struct kvd_server *s, struct kvd_call *c,
		      ProtobufCMessage *m)
{
	struct kv_status st = { 0, "" };
	Etcdserverpb__RangeRequest *r = (Etcdserverpb__RangeRequest *)m;
	if (fail_validation(c, m, kv_validate_range(r, &st), &st))
		return;
	kvd_read(s, c, m, false, r->serializable);
}

static void svc_put(struct kvd_server *s, struct kvd_call *c,
		    ProtobufCMessage *m)
{
	struct kv_status st = { 0, "" };
	if (fail_validation(c, m,
			    kv_validate_put((Etcdserverpb__PutRequest *)m, &st),
			    &st))
		return;
	kvd_propose(s, c, KVDPB__INTERNAL_REQUEST__REQUEST_PUT, m);
}

static void svc_delete(struct kvd_server *s, struct kvd_call *c,
		       ProtobufCMessage *m)
{
	struct kv_status st = { 0, "" };
	if (fail_validation(c, m,
			    kv_validate_delete_range(
				    (Etcdserverpb__DeleteRangeRequest *)m, &st),
			    &st))
		return;
	kvd_propose(s, c, KVDPB__INTERNAL_REQUEST__REQUEST_DELETE_RANGE, m);
}

static void svc_txn(struct kvd_server *s, struct kvd_call *c,
		    ProtobufCMessage *m)
{
	struct kv_status st = { 0, "" };
	Etcdserverpb__TxnRequest *t = (Etcdserverpb__TxnRequest *)m;
	if (fail_validation(c, m, kv_validate_txn(t, s->cfg->max_txn_ops, &st),
			    &st))
		return;
	if (kv_translate_txn_readonly(t))
		kvd_read(s, c, m, true, txn_serializable(t));
	else
		kvd_propose(s, c, KVDPB__INTERNAL_REQUEST__REQUEST_TXN, m);
}

static void svc_compaction(struct kvd_server *s, struct kvd_call *c,
			   ProtobufCMessage *m)
{
	kvd_propose(s, c, KVDPB__INTERNAL_REQUEST__REQUEST_COMPACTION, m);
}

static void svc_alarm(struct kvd_server *s, struct kvd_call *c,
		      ProtobufCMessage *m)
{
	/* etcd 3.4 sends every alarm action (GET too) through raft. */
	kvd_propose(s, c, KVDPB__INTERNAL_REQUEST__REQUEST_ALARM, m);
}

static void svc_status(struct kvd_server *s, struct kvd_call *c,
		       ProtobufCMessage *m)
{
	protobuf_c_message_free_unpacked(m, NULL);
	struct kvraft_status st;
	struct kv_header_ids ids;
	struct mvcc *mv = kv_apply_mvcc(s->apply);
	uint64_t used = 0, map = 0;
	kvraft_node_status(s->node, &st);
	kvd_header_ids(s, &ids);
	mvcc_size(mv, &used, &map);
	Etcdserverpb__StatusResponse r = ETCDSERVERPB__STATUS_RESPONSE__INIT;
	r.header = kv_translate_header(&ids, mvcc_revision(mv), &s->arena);
	r.version = (char *)KVD_ETCD_SERVER_VERSION;
	r.dbsize = (int64_t)used;
	r.dbsizeinuse = (int64_t)used;
	r.leader = st.leader;
	r.raftindex = st.commit_index;
	r.raftterm = st.term;
	r.raftappliedindex = st.applied_index;
	char alarm[64];
	char *errs[1];
	if (kv_apply_nospace(s->apply)) {
		/* etcd lists the raising member; we know only that it is on. */
		snprintf(alarm, sizeof(alarm), "memberID:%llu alarm:NOSPACE ",
			 (unsigned long long)s->self_id);
		errs[0] = alarm;
		r.errors = errs;
		r.n_errors = 1;
	}
	if (r.header == NULL)
		too_many(c);
	else
		kvd_call_respond(c, &r.base);
	mvcc_arena_reset(&s->arena);
}

static void svc_member_list(struct kvd_server *s, struct kvd_call *c,
			    ProtobufCMessage *m)
{
	protobuf_c_message_free_unpacked(m, NULL);
	struct kv_header_ids ids;
	kvd_header_ids(s, &ids);
	size_t n = s->cluster.n;
	Etcdserverpb__Member *mem = calloc(n, sizeof(*mem));
	Etcdserverpb__Member **pm = calloc(n, sizeof(*pm));
	/* client URLs: our own flag, and what peers told us (ATTRS) */
	char **copies = calloc(n, sizeof(char *));
	char *(*curls)[KVRAFT_MAX_URLS] = calloc(n, sizeof(*curls));
	Etcdserverpb__ResponseHeader *h = kv_translate_header(&ids, 0, &s->arena);
	if (mem == NULL || pm == NULL || copies == NULL || curls == NULL ||
	    h == NULL) {
		too_many(c);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		struct kvraft_member *km = &s->cluster.members[i];
		const char *src = km->id == s->self_id
					  ? s->cfg->advertise_client_urls
					  : s->client_urls[i];
		etcdserverpb__member__init(&mem[i]);
		mem[i].id = km->id;
		mem[i].name = km->name;
		mem[i].n_peerurls = km->nurls;
		mem[i].peerurls = km->urls;
		if (src != NULL && (copies[i] = strdup(src)) != NULL) {
			size_t nc = 0;
			for (char *save = NULL,
				  *tok = strtok_r(copies[i], ",", &save);
			     tok != NULL && nc < KVRAFT_MAX_URLS;
			     tok = strtok_r(NULL, ",", &save))
				curls[i][nc++] = tok;
			mem[i].n_clienturls = nc;
			mem[i].clienturls = curls[i];
		}
		pm[i] = &mem[i];
	}
	Etcdserverpb__MemberListResponse r =
		ETCDSERVERPB__MEMBER_LIST_RESPONSE__INIT;
	r.header = h;
	r.n_members = n;
	r.members = pm;
	kvd_call_respond(c, &r.base);
out:
	mvcc_arena_reset(&s->arena);
	for (size_t i = 0; copies != NULL && i < n; i++)
		free(copies[i]);
	free(copies);
	free(curls);
	free(pm);
	free(mem);
}

/* The store's hash up to rev (0: current) with the compacted revision and
 * a header at the current revision (in s->arena, reset by the caller).
 * False when it answered c with etcd's error instead. */
static bool hash_at(struct kvd_server *s, struct kvd_call *c, int64_t rev,
		    uint32_t *hash, int64_t *crev,
		    Etcdserverpb__ResponseHeader **hdr)
{
	struct kv_header_ids ids;
	struct mvcc *mv = kv_apply_mvcc(s->apply);
	if (rev > mvcc_revision(mv)) {
		kvd_call_fail(c, KV_GRPC_OUT_OF_RANGE,
			      "etcdserver: mvcc: required revision is a future "
			      "revision");
		return false;
	}
	if (rev > 0 && rev < mvcc_compact_revision(mv)) {
		kvd_call_fail(c, KV_GRPC_OUT_OF_RANGE,
			      "etcdserver: mvcc: required revision has been "
			      "compacted");
		return false;
	}
	if (mvcc_hash(mv, NULL, rev, hash, crev) != 0) {
		kvd_call_fail(c, KV_GRPC_UNAVAILABLE,
			      "etcdserver: server stopped");
		return false;
	}
	kvd_header_ids(s, &ids);
	*hdr = kv_translate_header(&ids, mvcc_revision(mv), &s->arena);
	if (*hdr == NULL) {
		too_many(c);
		return false;
	}
	return true;
}

static void svc_hash(struct kvd_server *s, struct kvd_call *c,
		     ProtobufCMessage *m)
{
	Etcdserverpb__HashResponse r = ETCDSERVERPB__HASH_RESPONSE__INIT;
	int64_t crev = 0;
	protobuf_c_message_free_unpacked(m, NULL);
	if (hash_at(s, c, 0, &r.hash, &crev, &r.header))
		kvd_call_respond(c, &r.base);
	mvcc_arena_reset(&s->arena);
}

/* etcd's HashKV: the hash of the history up to a revision (0: current),
 * the compacted revision, and a header at the current revision. */
static void svc_hash_kv(struct kvd_server *s, struct kvd_call *c,
			ProtobufCMessage *m)
{
	Etcdserverpb__HashKVResponse r = ETCDSERVERPB__HASH_KVRESPONSE__INIT;
	int64_t rev = ((Etcdserverpb__HashKVRequest *)m)->revision;
	protobuf_c_message_free_unpacked(m, NULL);
	if (hash_at(s, c, rev, &r.hash, &r.compact_revision, &r.header))
		kvd_call_respond(c, &r.base);
	mvcc_arena_reset(&s->arena);
}

/* etcd's Defragment: local to the member, blocks it while the store is
 * rewritten (as etcd does), answers {} (no header in 3.4). */
static void svc_defragment(struct kvd_server *s, struct kvd_call *c,
			   ProtobufCMessage *m)
{
	protobuf_c_message_free_unpacked(m, NULL);
	if (s->snap_workers > 0) {
		/* mvcc_defrag reopens the store a worker is copying (etcd's
		 * defragment waits for the snapshot instead) */
		kvd_call_fail(c, KV_GRPC_UNAVAILABLE,
			      "kvd: a snapshot is being copied; retry the "
			      "defragment later");
		return;
	}
	int rv = kv_apply_commit(s->apply, true);
	if (rv == 0)
		rv = mvcc_defrag(kv_apply_mvcc(s->apply));
	if (rv != 0) {
		KV_ERROR(MOD, "defragment failed", "err=%s", kv_errname(rv));
		kvd_call_fail(c, KV_GRPC_UNAVAILABLE,
			      "etcdserver: server stopped");
		return;
	}
	Etcdserverpb__DefragmentResponse r =
		ETCDSERVERPB__DEFRAGMENT_RESPONSE__INIT;
	kvd_call_respond(c, &r.base);
}

static void move_done(struct kvd_server *s, struct kvd_call *c)
{
	struct kv_header_ids ids;
	kvd_header_ids(s, &ids);
	Etcdserverpb__MoveLeaderResponse r =
		ETCDSERVERPB__MOVE_LEADER_RESPONSE__INIT;
	r.header = kv_translate_header(
		&ids, s->apply ? mvcc_revision(kv_apply_mvcc(s->apply)) : 0,
		&s->arena);
	if (r.header == NULL)
		too_many(c);
	else
		kvd_call_respond(c, &r.base);
	mvcc_arena_reset(&s->arena);
}

static void on_move_abort(struct kvd_call *c)
{
	struct kvd_server *s = c->user;
	s->move_call = NULL;
}

void kvd_check_move(struct kvd_server *s, bool stopping)
{
	struct kvd_call *c = s->move_call;
	struct kvraft_status st;
	if (c == NULL)
		return;
	memset(&st, 0, sizeof(st));
	if (s->node != NULL)
		kvraft_node_status(s->node, &st);
	if (st.leader == s->move_target) {
		s->move_call = NULL;
		move_done(s, c);
	} else if (stopping) {
		s->move_call = NULL;
		kvd_call_fail(c, KV_GRPC_UNAVAILABLE,
			      "etcdserver: server stopped");
	} else if (uv_now(&s->loop) >= s->move_deadline) {
		s->move_call = NULL;
		/* etcd answers ErrTimeoutLeaderTransfer as Unknown */
		kvd_call_fail(c, KV_GRPC_UNKNOWN,
			      "etcdserver: request timed out, leader transfer "
			      "took too long");
	}
}

/* etcd's MoveLeader: on the leader only; waits until the transferee
 * leads. */
static void svc_move_leader(struct kvd_server *s, struct kvd_call *c,
			    ProtobufCMessage *m)
{
	uint64_t to = ((Etcdserverpb__MoveLeaderRequest *)m)->targetid;
	protobuf_c_message_free_unpacked(m, NULL);
	struct kvraft_status st;
	kvraft_node_status(s->node, &st);
	if (st.role != KVRAFT_LEADER) {
		kvd_call_fail(c, KV_GRPC_FAILED_PRECONDITION,
			      "etcdserver: not leader");
		return;
	}
	bool member = false;
	for (size_t i = 0; i < s->cluster.n; i++)
		member |= s->cluster.members[i].id == to;
	if (!member) {
		kvd_call_fail(c, KV_GRPC_FAILED_PRECONDITION,
			      "etcdserver: bad leader transferee");
		return;
	}
	if (to == s->self_id) {
		move_done(s, c);
		return;
	}
	if (s->move_call != NULL) {
		too_many(c);
		return;
	}
	int rv = kvraft_node_transfer(s->node, to);
	if (rv == KV_ENOLEADER) {
		kvd_call_fail(c, KV_GRPC_FAILED_PRECONDITION,
			      "etcdserver: not leader");
		return;
	}
	if (rv != 0 && rv != KV_EBUSY) {
		kvd_call_fail(c, KV_GRPC_FAILED_PRECONDITION,
			      "etcdserver: bad leader transferee");
		return;
	}
	KV_INFO(MOD, "leadership transfer starting", "to=%llx",
		(unsigned long long)to);
	s->move_call = c;
	s->move_target = to;
	s->move_deadline = uv_now(&s->loop) + s->request_timeout_ms;
	c->user = s;
	c->on_abort = on_move_abort;
}

static void svc_reconfigure(struct kvd_server *s, struct kvd_call *c,
			    ProtobufCMessage *m)
{
	(void)s;
	protobuf_c_message_free_unpacked(m, NULL);
	kvd_call_fail(c, KV_GRPC_UNIMPLEMENTED,
		      "kvd: runtime reconfiguration is not supported yet");
}

#define EP(n) "/etcdserverpb." n
#define LP(n) "/v3lockpb.Lock/" n
#define EL(n) "/v3electionpb.Election/" n
const struct kvd_rpc kvd_rpcs[] = {
	{ "kv/range", EP("KV/Range"), &etcdserverpb__range_request__descriptor,
	  svc_range },
	{ "kv/put", EP("KV/Put"), &etcdserverpb__put_request__descriptor,
	  svc_put },
	{ "kv/deleterange", EP("KV/DeleteRange"),
	  &etcdserverpb__delete_range_request__descriptor, svc_delete },
	{ "kv/txn", EP("KV/Txn"), &etcdserverpb__txn_request__descriptor,
	  svc_txn },
	{ "kv/compaction", EP("KV/Compact"),
	  &etcdserverpb__compaction_request__descriptor, svc_compaction },
	{ "maintenance/status", EP("Maintenance/Status"),
	  &etcdserverpb__status_request__descriptor, svc_status },
	{ "maintenance/hash", EP("Maintenance/Hash"),
	  &etcdserverpb__hash_request__descriptor, svc_hash },
	{ "maintenance/hash", EP("Maintenance/HashKV"),
	  &etcdserverpb__hash_kvrequest__descriptor, svc_hash_kv },
	{ "maintenance/alarm", EP("Maintenance/Alarm"),
	  &etcdserverpb__alarm_request__descriptor, svc_alarm },
	{ "maintenance/defragment", EP("Maintenance/Defragment"),
	  &etcdserverpb__defragment_request__descriptor, svc_defragment },
	{ "maintenance/transfer-leadership", EP("Maintenance/MoveLeader"),
	  &etcdserverpb__move_leader_request__descriptor, svc_move_leader },
	{ "cluster/member/list", EP("Cluster/MemberList"),
	  &etcdserverpb__member_list_request__descriptor, svc_member_list },
	{ "cluster/member/add", EP("Cluster/MemberAdd"),
	  &etcdserverpb__member_add_request__descriptor, svc_reconfigure },
	{ "cluster/member/remove", EP("Cluster/MemberRemove"),
	  &etcdserverpb__member_remove_request__descriptor, svc_reconfigure },
	{ "cluster/member/update", EP("Cluster/MemberUpdate"),
	  &etcdserverpb__member_update_request__descriptor, svc_reconfigure },
	{ "cluster/member/promote", EP("Cluster/MemberPromote"),
	  &etcdserverpb__member_promote_request__descriptor, svc_reconfigure },
	{ "lease/grant", EP("Lease/LeaseGrant"),
	  &etcdserverpb__lease_grant_request__descriptor, kvd_svc_lease_grant },
	{ "lease/revoke", EP("Lease/LeaseRevoke"),
	  &etcdserverpb__lease_revoke_request__descriptor,
	  kvd_svc_lease_revoke },
	{ "kv/lease/revoke", NULL,
	  &etcdserverpb__lease_revoke_request__descriptor,
	  kvd_svc_lease_revoke },
	{ "lease/keepalive", NULL,
	  &etcdserverpb__lease_keep_alive_request__descriptor,
	  kvd_svc_lease_keepalive },
	{ "lease/timetolive", EP("Lease/LeaseTimeToLive"),
	  &etcdserverpb__lease_time_to_live_request__descriptor,
	  kvd_svc_lease_ttl },
	{ "kv/lease/timetolive", NULL,
	  &etcdserverpb__lease_time_to_live_request__descriptor,
	  kvd_svc_lease_ttl },
	{ "lease/leases", EP("Lease/LeaseLeases"),
	  &etcdserverpb__lease_leases_request__descriptor,
	  kvd_svc_lease_leases },
	{ "kv/lease/leases", NULL,
	  &etcdserverpb__lease_leases_request__descriptor,
	  kvd_svc_lease_leases },
	{ "lock/lock", LP("Lock"), &v3lockpb__lock_request__descriptor,
	  kvd_svc_lock },
	{ "lock/unlock", LP("Unlock"), &v3lockpb__unlock_request__descriptor,
	  kvd_svc_unlock },
	{ "election/campaign", EL("Campaign"),
	  &v3electionpb__campaign_request__descriptor, kvd_svc_campaign },
	{ "election/proclaim", EL("Proclaim"),
	  &v3electionpb__proclaim_request__descriptor, kvd_svc_proclaim },
	{ "election/leader", EL("Leader"),
	  &v3electionpb__leader_request__descriptor, kvd_svc_leader },
	{ "election/resign", EL("Resign"),
	  &v3electionpb__resign_request__descriptor, kvd_svc_resign },
};
const size_t kvd_nrpcs = sizeof(kvd_rpcs) / sizeof(kvd_rpcs[0]);

/* etcd 3.4's JSON gateway over HTTP/1.1 (reference/etcd-v3-api.md §2):
 * routing, JSON decoding, validation, error bodies and status codes. */
#include "server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/buf.h"
#include "common/log.h"
#include "kvjson/json.h"
#include "storage/mvcc.h"

#define MOD "gateway"

/* grpc-gateway's CORS headers, as etcd sends them. */
#define CORS_HEADERS                                                    \
	{ "Access-Control-Allow-Headers",                               \
	  "accept, content-type, authorization" },                      \
	{ "Access-Control-Allow-Methods",                               \
	  "POST, GET, OPTIONS, PUT, DELETE" },                          \
	{ "Access-Control-Allow-Origin", "*" }

static const struct http_header json_headers[] = {
	CORS_HEADERS,
	{ "Content-Type", "application/json" },
};
static const struct http_header text_headers[] = {
	CORS_HEADERS,
	{ "Content-Type", "text/plain; charset=utf-8" },
	{ "X-Content-Type-Options", "nosniff" },
};
#define NHDR(a) (sizeof(a) / sizeof((a)[0]))

/* grpc-gateway's HTTPStatusFromCode (FailedPrecondition as Debian's 3.4
 * build: 412). */
static int http_status_of(int code)
{
	switch (code) {
	case KV_GRPC_OK:
		return 200;
	case KV_GRPC_CANCELED:
		return 408;
	case KV_GRPC_INVALID_ARGUMENT:
	case KV_GRPC_OUT_OF_RANGE:
		return 400;
	case KV_GRPC_DEADLINE_EXCEEDED:
		return 504;
	case KV_GRPC_NOT_FOUND:
		return 404;
	case KV_GRPC_ALREADY_EXISTS:
	case KV_GRPC_ABORTED:
		return 409;
	case KV_GRPC_PERMISSION_DENIED:
		return 403;
	case KV_GRPC_UNAUTHENTICATED:
		return 401;
	case KV_GRPC_RESOURCE_EXHAUSTED:
		return 429;
	case KV_GRPC_FAILED_PRECONDITION:
		return 412;
	case KV_GRPC_UNIMPLEMENTED:
		return 501;
	case KV_GRPC_UNAVAILABLE:
		return 503;
	default:
		return 500;
	}
}

void kvd_respond_error(struct kvd_server *s, struct http_request *req,
		       int code, const char *msg)
{
	(void)s;
	json_t *o = json_pack("{s:s,s:s,s:i}", "error", msg, "message", msg,
			      "code", code);
	char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	if (text == NULL) {
		http_respond(req, 500, NULL, 0, NULL, 0);
	} else {
		http_respond(req, http_status_of(code), json_headers,
			     NHDR(json_headers), text, strlen(text));
	}
	free(text);
	json_decref(o);
}

void kvd_respond_message(struct kvd_server *s, struct http_request *req,
			 const ProtobufCMessage *msg)
{
	struct kv_buf b = KV_BUF_INIT;
	if (kvjson_encode_buf(msg, &b) != 0) {
		kv_buf_free(&b);
		kvd_respond_error(s, req, KV_GRPC_INTERNAL,
				  "kvd: cannot encode the response");
		return;
	}
	http_respond(req, 200, json_headers, NHDR(json_headers), b.base, b.len);
	kv_buf_free(&b);
}

static void respond_text(struct http_request *req, int status,
			 const char *text)
{
	http_respond(req, status, text_headers, NHDR(text_headers), text,
		     strlen(text));
}

static void respond_json_text(struct http_request *req, int status,
			      const char *text)
{
	http_respond(req, status, json_headers, NHDR(json_headers), text,
		     strlen(text));
}

/* Decodes the body as desc; on error answers 400/code 3 and returns
 * NULL. */
static ProtobufCMessage *decode(struct kvd_server *s, struct http_request *req,
				const ProtobufCMessageDescriptor *desc)
{
	ProtobufCMessage *msg = NULL;
	char err[256];
	int rv = kvjson_decode_ex(desc, (const char *)req->body, req->body_len,
				  KVJSON_ALLOW_UNKNOWN, NULL, &msg, NULL, err,
				  sizeof(err));
	if (rv == 0)
		return msg;
	if (rv == KV_ETOOBIG && req->body_len > s->cfg->max_request_bytes)
		kvd_respond_error(s, req, KV_GRPC_INVALID_ARGUMENT,
				  "etcdserver: request is too large");
	else
		kvd_respond_error(s, req, KV_GRPC_INVALID_ARGUMENT, err);
	return NULL;
}

static bool fail_validation(struct kvd_server *s, struct http_request *req,
			    ProtobufCMessage *msg, int rv,
			    const struct kv_status *st)
{
	if (rv == 0)
		return false;
	protobuf_c_message_free_unpacked(msg, NULL);
	if (st->code != 0)
		kvd_respond_error(s, req, st->code, st->msg);
	else
		kvd_respond_error(s, req, KV_GRPC_RESOURCE_EXHAUSTED,
				  "etcdserver: too many requests");
	return true;
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

static void do_range(struct kvd_server *s, struct http_request *req)
{
	ProtobufCMessage *m = decode(s, req, &etcdserverpb__range_request__descriptor);
	struct kv_status st = { 0, "" };
	if (m == NULL)
		return;
	Etcdserverpb__RangeRequest *r = (Etcdserverpb__RangeRequest *)m;
	if (fail_validation(s, req, m, kv_validate_range(r, &st), &st))
		return;
	kvd_read(s, req, m, false, r->serializable);
}

static void do_put(struct kvd_server *s, struct http_request *req)
{
	ProtobufCMessage *m = decode(s, req, &etcdserverpb__put_request__descriptor);
	struct kv_status st = { 0, "" };
	if (m == NULL)
		return;
	if (fail_validation(s, req, m,
			    kv_validate_put((Etcdserverpb__PutRequest *)m, &st),
			    &st))
		return;
	kvd_propose(s, req, KVDPB__INTERNAL_REQUEST__REQUEST_PUT, m);
}

static void do_delete(struct kvd_server *s, struct http_request *req)
{
	ProtobufCMessage *m =
		decode(s, req, &etcdserverpb__delete_range_request__descriptor);
	struct kv_status st = { 0, "" };
	if (m == NULL)
		return;
	if (fail_validation(s, req, m,
			    kv_validate_delete_range(
				    (Etcdserverpb__DeleteRangeRequest *)m, &st),
			    &st))
		return;
	kvd_propose(s, req, KVDPB__INTERNAL_REQUEST__REQUEST_DELETE_RANGE, m);
}

static void do_txn(struct kvd_server *s, struct http_request *req)
{
	ProtobufCMessage *m = decode(s, req, &etcdserverpb__txn_request__descriptor);
	struct kv_status st = { 0, "" };
	if (m == NULL)
		return;
	Etcdserverpb__TxnRequest *t = (Etcdserverpb__TxnRequest *)m;
	if (fail_validation(s, req, m,
			    kv_validate_txn(t, s->cfg->max_txn_ops, &st), &st))
		return;
	if (kv_translate_txn_readonly(t))
		kvd_read(s, req, m, true, txn_serializable(t));
	else
		kvd_propose(s, req, KVDPB__INTERNAL_REQUEST__REQUEST_TXN, m);
}

static void do_compaction(struct kvd_server *s, struct http_request *req)
{
	ProtobufCMessage *m =
		decode(s, req, &etcdserverpb__compaction_request__descriptor);
	if (m == NULL)
		return;
	kvd_propose(s, req, KVDPB__INTERNAL_REQUEST__REQUEST_COMPACTION, m);
}

static void do_status(struct kvd_server *s, struct http_request *req)
{
	ProtobufCMessage *m =
		decode(s, req, &etcdserverpb__status_request__descriptor);
	if (m == NULL)
		return;
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
		kvd_respond_error(s, req, KV_GRPC_RESOURCE_EXHAUSTED,
				  "etcdserver: too many requests");
	else
		kvd_respond_message(s, req, &r.base);
	mvcc_arena_reset(&s->arena);
}

static void do_member_list(struct kvd_server *s, struct http_request *req)
{
	ProtobufCMessage *m =
		decode(s, req, &etcdserverpb__member_list_request__descriptor);
	if (m == NULL)
		return;
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
		kvd_respond_error(s, req, KV_GRPC_RESOURCE_EXHAUSTED,
				  "etcdserver: too many requests");
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
	kvd_respond_message(s, req, &r.base);
out:
	mvcc_arena_reset(&s->arena);
	for (size_t i = 0; copies != NULL && i < n; i++)
		free(copies[i]);
	free(copies);
	free(curls);
	free(pm);
	free(mem);
}

static void do_hash(struct kvd_server *s, struct http_request *req)
{
	ProtobufCMessage *m =
		decode(s, req, &etcdserverpb__hash_request__descriptor);
	if (m == NULL)
		return;
	protobuf_c_message_free_unpacked(m, NULL);
	struct kv_header_ids ids;
	struct mvcc *mv = kv_apply_mvcc(s->apply);
	uint32_t hash = 0;
	int64_t crev = 0;
	kvd_header_ids(s, &ids);
	int rv = mvcc_hash(mv, NULL, 0, &hash, &crev);
	if (rv != 0) {
		kvd_respond_error(s, req, KV_GRPC_UNAVAILABLE,
				  "etcdserver: server stopped");
		return;
	}
	Etcdserverpb__HashResponse r = ETCDSERVERPB__HASH_RESPONSE__INIT;
	r.header = kv_translate_header(&ids, mvcc_revision(mv), &s->arena);
	r.hash = hash;
	kvd_respond_message(s, req, &r.base);
	mvcc_arena_reset(&s->arena);
}

static void do_alarm(struct kvd_server *s, struct http_request *req)
{
	ProtobufCMessage *m =
		decode(s, req, &etcdserverpb__alarm_request__descriptor);
	if (m == NULL)
		return;
	/* etcd 3.4 sends every alarm action (GET too) through raft. */
	kvd_propose(s, req, KVDPB__INTERNAL_REQUEST__REQUEST_ALARM, m);
}

/* etcd's Defragment: local to the member, blocks it while the store is
 * rewritten (as etcd does), answers {} (no header in 3.4). */
static void do_defragment(struct kvd_server *s, struct http_request *req)
{
	ProtobufCMessage *m =
		decode(s, req, &etcdserverpb__defragment_request__descriptor);
	if (m == NULL)
		return;
	protobuf_c_message_free_unpacked(m, NULL);
	int rv = kv_apply_commit(s->apply, true);
	if (rv == 0)
		rv = mvcc_defrag(kv_apply_mvcc(s->apply));
	if (rv != 0) {
		KV_ERROR(MOD, "defragment failed", "err=%s", kv_errname(rv));
		kvd_respond_error(s, req, KV_GRPC_UNAVAILABLE,
				  "etcdserver: server stopped");
		return;
	}
	Etcdserverpb__DefragmentResponse r =
		ETCDSERVERPB__DEFRAGMENT_RESPONSE__INIT;
	kvd_respond_message(s, req, &r.base);
}

struct route {
	const char *path; /* after /v3/ */
	void (*fn)(struct kvd_server *s, struct http_request *req);
};

static const struct route routes[] = {
	{ "kv/range", do_range },
	{ "kv/put", do_put },
	{ "kv/deleterange", do_delete },
	{ "kv/txn", do_txn },
	{ "kv/compaction", do_compaction },
	{ "maintenance/status", do_status },
	{ "cluster/member/list", do_member_list },
	{ "maintenance/hash", do_hash },
	{ "maintenance/alarm", do_alarm },
	{ "maintenance/defragment", do_defragment },
};

/* etcd 3.4 gateway paths kvd does not serve yet: 501 Unimplemented. */
static const char *const unserved[] = {
	"watch",
	"lease/grant",
	"lease/revoke",
	"lease/keepalive",
	"lease/timetolive",
	"lease/leases",
	"kv/lease/revoke",
	"kv/lease/timetolive",
	"kv/lease/leases",
	"cluster/member/add",
	"cluster/member/remove",
	"cluster/member/update",
	"cluster/member/promote",
	"maintenance/hashkv",
	"maintenance/snapshot",
	"maintenance/transfer-leadership",
	"auth/enable",
	"auth/disable",
	"auth/authenticate",
	"election/campaign",
	"lock/lock",
	"lock/unlock",
};

void kvd_on_request(struct http_request *req, void *data)
{
	struct kvd_server *s = data;
	char path[256];
	size_t n = strcspn(req->target, "?#");
	if (n >= sizeof(path))
		n = sizeof(path) - 1;
	memcpy(path, req->target, n);
	path[n] = '\0';
	bool post = strcmp(req->method, "POST") == 0;
	bool get = strcmp(req->method, "GET") == 0 ||
		   strcmp(req->method, "HEAD") == 0;

	if (strcmp(path, "/version") == 0) {
		if (!get) {
			respond_text(req, 405, "Method Not Allowed\n");
			return;
		}
		respond_json_text(req, 200,
				  "{\"etcdserver\":\"" KVD_ETCD_SERVER_VERSION
				  "\",\"etcdcluster\":\"" KVD_ETCD_CLUSTER_VERSION
				  "\"}");
		return;
	}
	if (strcmp(path, "/health") == 0) {
		if (!get) {
			respond_text(req, 405, "Method Not Allowed\n");
			return;
		}
		struct kvraft_status st;
		memset(&st, 0, sizeof(st));
		if (s->node != NULL)
			kvraft_node_status(s->node, &st);
		bool ok = st.leader != 0 && !st.failed &&
			  !(s->apply != NULL && kv_apply_nospace(s->apply));
		respond_json_text(req, ok ? 200 : 503,
				  ok ? "{\"health\":\"true\"}"
				     : "{\"health\":\"false\"}");
		return;
	}
	const char *rest = NULL;
	if (strncmp(path, "/v3/", 4) == 0)
		rest = path + 4;
	else if (strncmp(path, "/v3beta/", 8) == 0)
		rest = path + 8;
	if (rest == NULL) {
		respond_text(req, 404, "404 page not found\n");
		return;
	}
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (strcmp(rest, routes[i].path) != 0)
			continue;
		if (!post) {
			respond_text(req, 405, "Method Not Allowed\n");
			return;
		}
		if (s->stopping || s->node == NULL || s->apply == NULL) {
			kvd_respond_error(s, req, KV_GRPC_UNAVAILABLE,
					  "etcdserver: server stopped");
			return;
		}
		routes[i].fn(s, req);
		return;
	}
	for (size_t i = 0; i < sizeof(unserved) / sizeof(unserved[0]); i++) {
		if (strcmp(rest, unserved[i]) != 0)
			continue;
		if (!post) {
			respond_text(req, 405, "Method Not Allowed\n");
			return;
		}
		kvd_respond_error(s, req, KV_GRPC_UNIMPLEMENTED,
				  "kvd: this API is not served yet");
		return;
	}
	respond_text(req, 404, "Not Found\n");
}

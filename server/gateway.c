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

/* ---- the HTTP adapter of struct kvd_call -------------------------------- */

struct http_call {
	struct kvd_call base;
	struct http_request *req;
};

static void hc_done(struct http_call *hc)
{
	hc->req->user = NULL;
	hc->req->on_abort = NULL;
	free(hc);
}

static void hc_respond(struct kvd_call *c, const ProtobufCMessage *msg)
{
	struct http_call *hc = (struct http_call *)c;
	struct http_request *req = hc->req;
	struct kvd_server *s = c->s;
	hc_done(hc);
	kvd_respond_message(s, req, msg);
}

static void hc_fail(struct kvd_call *c, int code, const char *msg)
{
	struct http_call *hc = (struct http_call *)c;
	struct http_request *req = hc->req;
	struct kvd_server *s = c->s;
	hc_done(hc);
	kvd_respond_error(s, req, code, msg);
}

static const struct kvd_call_ops http_call_ops = {
	.respond = hc_respond,
	.fail = hc_fail,
};

static void hc_abort(struct http_request *req)
{
	struct http_call *hc = req->user;
	if (hc == NULL)
		return;
	if (hc->base.on_abort != NULL)
		hc->base.on_abort(&hc->base);
	free(hc);
}

static void serve_rpc(struct kvd_server *s, struct http_request *req,
		      const struct kvd_rpc *rpc)
{
	ProtobufCMessage *m = decode(s, req, rpc->req);
	if (m == NULL)
		return;
	struct http_call *hc = calloc(1, sizeof(*hc));
	if (hc == NULL) {
		protobuf_c_message_free_unpacked(m, NULL);
		kvd_respond_error(s, req, KV_GRPC_RESOURCE_EXHAUSTED,
				  "etcdserver: too many requests");
		return;
	}
	hc->base.ops = &http_call_ops;
	hc->base.s = s;
	hc->req = req;
	req->user = hc;
	req->on_abort = hc_abort;
	rpc->fn(s, &hc->base, m);
}

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
	"maintenance/hashkv",
	"maintenance/snapshot",
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
		bool ok = kvd_healthy(s);
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
	for (size_t i = 0; i < kvd_nrpcs; i++) {
		if (kvd_rpcs[i].gateway == NULL ||
		    strcmp(rest, kvd_rpcs[i].gateway) != 0)
			continue;
		if (!post) {
			respond_text(req, 405, "Method Not Allowed\n");
			return;
		}
		if (!kvd_serving(s)) {
			kvd_respond_error(s, req, KV_GRPC_UNAVAILABLE,
					  "etcdserver: server stopped");
			return;
		}
		serve_rpc(s, req, &kvd_rpcs[i]);
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

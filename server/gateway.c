/* etcd 3.4's JSON gateway (reference/etcd-v3-api.md §2): routing, JSON
 * decoding, validation, error bodies and status codes, shared by the
 * HTTP/1.1 adapter (kvd_on_request, below) and the HTTP/2 one
 * (gateway_h2.c). */
#include "server_internal.h"

#include <stddef.h>
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

const struct http_header kvd_gw_json_headers[] = {
	CORS_HEADERS,
	{ "Content-Type", "application/json" },
};
const size_t kvd_gw_n_json_headers =
	sizeof(kvd_gw_json_headers) / sizeof(kvd_gw_json_headers[0]);
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

static void respond(struct kvd_gw_req *r, int status,
		    const struct http_header *h, size_t n, const void *body,
		    size_t len)
{
	r->ops->respond(r, status, h, n, body, len);
}

char *kvd_gw_error_body(int code, const char *msg)
{
	json_t *o = json_pack("{s:s,s:s,s:i}", "error", msg, "message", msg,
			      "code", code);
	char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return text;
}

/* etcd's error answer with the HTTP status of the gRPC code. */
static void respond_error(struct kvd_gw_req *r, int code, const char *msg)
{
	char *text = kvd_gw_error_body(code, msg);
	if (text == NULL) {
		respond(r, 500, NULL, 0, NULL, 0);
	} else {
		respond(r, http_status_of(code), kvd_gw_json_headers,
			kvd_gw_n_json_headers, text, strlen(text));
	}
	free(text);
}

void kvd_gw_h1_error(struct http_request *req, int status, int code,
		     const char *msg)
{
	char *text = kvd_gw_error_body(code, msg);
	if (text == NULL)
		http_respond(req, 500, NULL, 0, NULL, 0);
	else
		http_respond(req, status, kvd_gw_json_headers,
			     kvd_gw_n_json_headers, text, strlen(text));
	free(text);
}

void *kvd_stream_msg(const ProtobufCMessage *m, bool json, size_t hdr,
		     size_t *len)
{
	uint8_t *block;
	if (!json) {
		size_t n = protobuf_c_message_get_packed_size(m);
		block = malloc(hdr + n + 1);
		if (block != NULL)
			*len = protobuf_c_message_pack(m, block + hdr);
		return block;
	}
	struct kv_buf b = KV_BUF_INIT;
	if (kv_buf_append(&b, "{\"result\":", 10) != 0 ||
	    kvjson_encode_buf(m, &b) != 0 || kv_buf_append(&b, "}\n", 2) != 0) {
		kv_buf_free(&b);
		return NULL;
	}
	block = malloc(hdr + b.len);
	if (block != NULL) {
		memcpy(block + hdr, b.base, b.len);
		*len = b.len;
	}
	kv_buf_free(&b);
	return block;
}

static void respond_message(struct kvd_gw_req *r,
			    const ProtobufCMessage *msg)
{
	struct kv_buf b = KV_BUF_INIT;
	if (kvjson_encode_buf(msg, &b) != 0) {
		kv_buf_free(&b);
		respond_error(r, KV_GRPC_INTERNAL,
			      "kvd: cannot encode the response");
		return;
	}
	respond(r, 200, kvd_gw_json_headers, kvd_gw_n_json_headers, b.base,
		b.len);
	kv_buf_free(&b);
}

static void respond_text(struct kvd_gw_req *r, int status, const char *text)
{
	respond(r, status, text_headers, NHDR(text_headers), text,
		strlen(text));
}

static void respond_json_text(struct kvd_gw_req *r, int status,
			      const char *text)
{
	respond(r, status, kvd_gw_json_headers, kvd_gw_n_json_headers, text,
		strlen(text));
}

/* Decodes the body as desc; on error answers 400/code 3 and returns
 * NULL. */
static ProtobufCMessage *decode(struct kvd_server *s, struct kvd_gw_req *r,
				const ProtobufCMessageDescriptor *desc)
{
	ProtobufCMessage *msg = NULL;
	char err[256];
	int rv = kvjson_decode_ex(desc, (const char *)r->body, r->body_len,
				  KVJSON_ALLOW_UNKNOWN, NULL, &msg, NULL, err,
				  sizeof(err));
	if (rv == 0)
		return msg;
	if (rv == KV_ETOOBIG && r->body_len > s->cfg->max_request_bytes)
		respond_error(r, KV_GRPC_INVALID_ARGUMENT,
			      "etcdserver: request is too large");
	else
		respond_error(r, KV_GRPC_INVALID_ARGUMENT, err);
	return NULL;
}

/* ---- struct kvd_call over a gateway request ----------------------------- */

static struct kvd_gw_req *gw_of(struct kvd_call *c)
{
	return (struct kvd_gw_req *)(void *)((char *)c -
					     offsetof(struct kvd_gw_req, call));
}

static void gc_respond(struct kvd_call *c, const ProtobufCMessage *msg)
{
	struct kvd_gw_req *r = gw_of(c);
	r->pending = false;
	respond_message(r, msg);
}

static void gc_fail(struct kvd_call *c, int code, const char *msg)
{
	struct kvd_gw_req *r = gw_of(c);
	r->pending = false;
	respond_error(r, code, msg);
}

static const struct kvd_call_ops gw_call_ops = {
	.respond = gc_respond,
	.fail = gc_fail,
};

/* A streaming RPC's one answer (etcd's /v3/lease/keepalive for one
 * request). */
static void gc_respond_result(struct kvd_call *c, const ProtobufCMessage *msg)
{
	struct kvd_gw_req *r = gw_of(c);
	size_t n = 0;
	void *line = kvd_stream_msg(msg, true, 0, &n);
	r->pending = false;
	if (line == NULL)
		respond_error(r, KV_GRPC_INTERNAL,
			      "kvd: cannot encode the response");
	else
		respond(r, 200, kvd_gw_json_headers, kvd_gw_n_json_headers,
			line, n);
	free(line);
}

static const struct kvd_call_ops gw_result_ops = {
	.respond = gc_respond_result,
	.fail = gc_fail,
};

void kvd_gateway_abort(struct kvd_gw_req *r)
{
	if (!r->pending)
		return;
	r->pending = false;
	if (r->call.on_abort != NULL)
		r->call.on_abort(&r->call);
}

static void serve_rpc(struct kvd_server *s, struct kvd_gw_req *r,
		      const struct kvd_rpc *rpc)
{
	ProtobufCMessage *m = decode(s, r, rpc->req);
	if (m == NULL)
		return;
	memset(&r->call, 0, sizeof(r->call));
	r->call.ops = rpc->fn == kvd_svc_lease_keepalive ? &gw_result_ops
							 : &gw_call_ops;
	r->call.s = s;
	r->pending = true;
	rpc->fn(s, &r->call, m);
}

/* etcd 3.4 gateway paths kvd does not serve yet: 501 Unimplemented.
 * "watch" and "election/observe" are streams: a POST never gets here
 * (each transport hands it to watch_service.c / v3election.c first),
 * other methods get 405 as on every gateway path. */
static const char *const unserved[] = {
	"watch",
	"election/observe",
	"maintenance/hashkv",
	"maintenance/snapshot",
	"auth/enable",
	"auth/disable",
	"auth/authenticate",
};

void kvd_gateway_serve(struct kvd_server *s, struct kvd_gw_req *req)
{
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
			respond_error(req, KV_GRPC_UNAVAILABLE,
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
		respond_error(req, KV_GRPC_UNIMPLEMENTED,
			      "kvd: this API is not served yet");
		return;
	}
	respond_text(req, 404, "Not Found\n");
}

/* ---- the HTTP/1.1 adapter ------------------------------------------------ */

struct h1_req {
	struct kvd_gw_req base;
	struct http_request *req;
};

static void h1_respond(struct kvd_gw_req *r, int status,
		       const struct http_header *h, size_t n,
		       const void *body, size_t len)
{
	struct h1_req *hr = (struct h1_req *)r;
	struct http_request *req = hr->req;
	req->user = NULL;
	req->on_abort = NULL;
	free(hr);
	http_respond(req, status, h, n, body, len);
}

static const struct kvd_gw_ops h1_ops = { .respond = h1_respond };

static void h1_abort(struct http_request *req)
{
	struct h1_req *hr = req->user;
	if (hr == NULL)
		return;
	req->user = NULL;
	kvd_gateway_abort(&hr->base);
	free(hr);
}

void kvd_on_request(struct http_request *req, void *data)
{
	struct kvd_server *s = data;
	if (strcmp(req->method, "POST") == 0) {
		size_t n = strcspn(req->target, "?#");
		if ((n == 9 && strncmp(req->target, "/v3/watch", 9) == 0) ||
		    (n == 13 &&
		     strncmp(req->target, "/v3beta/watch", 13) == 0)) {
			kvd_watch_http(s, req);
			return;
		}
		if ((n == 20 &&
		     strncmp(req->target, "/v3/election/observe", 20) == 0) ||
		    (n == 24 &&
		     strncmp(req->target, "/v3beta/election/observe", 24) == 0)) {
			kvd_observe_http(s, req);
			return;
		}
	}
	struct h1_req *hr = calloc(1, sizeof(*hr));
	if (hr == NULL) {
		http_respond(req, 500, NULL, 0, NULL, 0);
		return;
	}
	hr->base.ops = &h1_ops;
	hr->base.method = req->method;
	hr->base.target = req->target;
	hr->base.body = req->body;
	hr->base.body_len = req->body_len;
	hr->req = req;
	req->user = hr;
	req->on_abort = h1_abort;
	kvd_gateway_serve(s, &hr->base);
}

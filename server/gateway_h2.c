/* The HTTP/2 adapter of the gateway (gateway.c): an HTTP/2 request that is
 * not gRPC (net/grpc.h hands it over with grpc_server_set_fallback, as
 * etcd's grpcHandlerFunc sends it to its HTTP mux) is collected whole,
 * bounded by the same body limit as HTTP/1.1 (413), routed by
 * kvd_gateway_serve and answered as one HTTP/2 response, except
 * POST /v3/watch and /v3/election/observe (and their /v3beta/ aliases),
 * whose open-ended answers watch_service.c and v3election.c stream on the
 * same HTTP/2 stream. */
#include "server_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/log.h"

#define MAX_RESP_HEADERS 8

struct h2_req {
	struct kvd_gw_req base;
	struct kvd_server *s;
	struct h2_stream *st;
	struct kv_buf body;
	struct kv_buf out; /* answer body waiting for on_writable */
	bool served;       /* handed to the gateway */
	bool answered;     /* respond ran (or the stream is being reset) */
	bool head;         /* HEAD: headers only */
};

/* Queues what is left of the answer body and ends the stream, or waits
 * for on_writable. */
static void flush(struct h2_req *r)
{
	if (r->out.len > 0) {
		int rc = h2_stream_write(r->st, r->out.base, r->out.len);
		if (rc == KV_EAGAIN)
			return;
		kv_buf_free(&r->out);
		if (rc != 0) {
			h2_stream_reset(r->st, H2_INTERNAL_ERROR);
			return;
		}
	}
	if (h2_stream_end(r->st, NULL, 0) != 0)
		h2_stream_reset(r->st, H2_INTERNAL_ERROR);
}

static void h2r_respond(struct kvd_gw_req *gr, int status,
			const struct http_header *h, size_t n,
			const void *body, size_t len)
{
	struct h2_req *r = (struct h2_req *)gr;
	/* lowercase names (HTTP/2), plus content-length */
	char names[MAX_RESP_HEADERS][64], clen[24];
	struct h2_header hh[MAX_RESP_HEADERS + 1];
	size_t k = 0;
	bool empty;

	r->answered = true;
	for (size_t i = 0; i < n && k < MAX_RESP_HEADERS; i++) {
		size_t j = 0;
		for (; h[i].name[j] != '\0' && j + 1 < sizeof(names[k]); j++)
			names[k][j] = (char)tolower((unsigned char)h[i].name[j]);
		names[k][j] = '\0';
		hh[k].name = names[k];
		hh[k].value = h[i].value;
		k++;
	}
	snprintf(clen, sizeof(clen), "%zu", len);
	hh[k].name = "content-length";
	hh[k].value = clen;
	k++;
	empty = len == 0 || r->head;
	if (h2_stream_respond(r->st, status, hh, k, empty) != 0) {
		h2_stream_reset(r->st, H2_INTERNAL_ERROR);
		return;
	}
	if (empty)
		return;
	if (kv_buf_append(&r->out, body, len) != 0) {
		h2_stream_reset(r->st, H2_INTERNAL_ERROR);
		return;
	}
	flush(r);
}

static const struct kvd_gw_ops h2r_ops = { .respond = h2r_respond };

/* The gateway paths whose answer is a stream of JSON lines: their
 * service takes the HTTP/2 stream over (same contract for each). */
typedef void (*stream_route_fn)(struct kvd_server *s, struct h2_stream *st,
				const unsigned char *body, size_t len);

static const struct {
	const char *path;
	stream_route_fn fn;
} stream_routes[] = {
	{ "/v3/watch", kvd_watch_h2 },
	{ "/v3beta/watch", kvd_watch_h2 },
	{ "/v3/election/observe", kvd_observe_h2 },
	{ "/v3beta/election/observe", kvd_observe_h2 },
};

static stream_route_fn stream_route(const struct h2_req *r)
{
	const char *t = r->base.target;
	size_t n = strcspn(t, "?#");
	if (strcmp(r->base.method, "POST") != 0)
		return NULL;
	size_t nr = sizeof(stream_routes) / sizeof(stream_routes[0]);
	for (size_t i = 0; i < nr; i++) {
		const char *p = stream_routes[i].path;
		if (strlen(p) == n && strncmp(t, p, n) == 0)
			return stream_routes[i].fn;
	}
	return NULL;
}

static void serve(struct h2_req *r)
{
	if (r->served || r->answered)
		return;
	r->served = true;
	stream_route_fn fn = stream_route(r);
	if (fn != NULL) {
		/* the service owns the stream from now on: its handler
		 * replaces ours, so on_close will not free r */
		fn(r->s, r->st, r->body.base, r->body.len);
		kv_buf_free(&r->body);
		kv_buf_free(&r->out);
		free(r);
		return;
	}
	/* NUL-terminated, like HTTP/1.1's body */
	if (kv_buf_append(&r->body, "", 1) != 0) {
		r->answered = true;
		h2_stream_reset(r->st, H2_INTERNAL_ERROR);
		return;
	}
	r->body.len--;
	r->base.body = r->body.base;
	r->base.body_len = r->body.len;
	kvd_gateway_serve(r->s, &r->base);
}

/* HTTP/1.1's answer for a request over the body limit (net/http1.c). */
static void too_large(struct h2_req *r)
{
	static const char text[] = "request body too large\n";
	static const struct http_header h[] = {
		{ "Content-Type", "text/plain" },
	};
	kv_buf_free(&r->body);
	h2r_respond(&r->base, 413, h, 1, text, sizeof(text) - 1);
}

static void on_data(struct h2_stream *st, const unsigned char *p, size_t n)
{
	struct h2_req *r = h2_stream_user(st);
	/* The body is buffered here, bounded by the limit: the window
	 * reopens at once. */
	h2_stream_consume(st, n);
	if (r->served || r->answered)
		return;
	if (r->body.len + n > r->s->http.max_body_bytes) {
		too_large(r);
		return;
	}
	if (kv_buf_append(&r->body, p, n) != 0) {
		r->answered = true;
		h2_stream_reset(st, H2_INTERNAL_ERROR);
	}
}

static void on_end(struct h2_stream *st)
{
	serve(h2_stream_user(st));
}

static void on_writable(struct h2_stream *st)
{
	struct h2_req *r = h2_stream_user(st);
	if (r->out.len > 0)
		flush(r);
}

static void on_close(struct h2_stream *st, uint32_t code)
{
	struct h2_req *r = h2_stream_user(st);
	(void)code;
	if (r->served && !r->answered)
		kvd_gateway_abort(&r->base);
	kv_buf_free(&r->body);
	kv_buf_free(&r->out);
	free(r);
}

static const struct h2_stream_handler h2r_handler = {
	.on_data = on_data,
	.on_end = on_end,
	.on_writable = on_writable,
	.on_close = on_close,
};

void kvd_gateway_h2_on_stream(struct h2_stream *st, void *data)
{
	struct kvd_server *s = data;
	struct h2_req *r = calloc(1, sizeof(*r));
	const char *method = h2_stream_header(st, ":method");
	const char *path = h2_stream_header(st, ":path");

	if (r == NULL) {
		h2_stream_reset(st, H2_INTERNAL_ERROR);
		return;
	}
	r->s = s;
	r->st = st;
	kv_buf_init(&r->body);
	kv_buf_init(&r->out);
	r->base.ops = &h2r_ops;
	r->base.method = method != NULL ? method : "";
	r->base.target = path != NULL ? path : "";
	r->head = method != NULL && strcmp(method, "HEAD") == 0;
	h2_stream_set_handler(st, &h2r_handler, r);
	if (method == NULL || path == NULL) {
		static const char text[] = "missing :method or :path\n";
		static const struct http_header h[] = {
			{ "Content-Type", "text/plain" },
		};
		h2r_respond(&r->base, 400, h, 1, text, sizeof(text) - 1);
		return;
	}
	if (h2_stream_remote_closed(st))
		serve(r);
}

/* ---- for the services that stream their answers -------------------------- */

const struct h2_header kvd_gw_h2_json_headers[] = {
	{ "access-control-allow-headers",
	  "accept, content-type, authorization" },
	{ "access-control-allow-methods", "POST, GET, OPTIONS, PUT, DELETE" },
	{ "access-control-allow-origin", "*" },
	{ "content-type", "application/json" },
};
const size_t kvd_gw_n_h2_json_headers =
	sizeof(kvd_gw_h2_json_headers) / sizeof(kvd_gw_h2_json_headers[0]);

void kvd_gw_h2_error(struct h2_stream *st, int status, int code,
		     const char *msg)
{
	char *text = kvd_gw_error_body(code, msg);
	char clen[24];
	struct h2_header h[] = {
		{ "content-type", "application/json" },
		{ "content-length", clen },
	};
	size_t len = text != NULL ? strlen(text) : 0;
	snprintf(clen, sizeof(clen), "%zu", len);
	if (text == NULL || h2_stream_respond(st, status, h, 2, false) != 0 ||
	    h2_stream_write(st, text, len) != 0 ||
	    h2_stream_end(st, NULL, 0) != 0)
		h2_stream_reset(st, H2_INTERNAL_ERROR);
	free(text);
}

void kvd_gw_h2_discard(struct h2_stream *st, const unsigned char *p,
		       size_t n)
{
	(void)p; /* the body was complete when the stream was handed over */
	h2_stream_consume(st, n);
}

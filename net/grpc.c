/* gRPC server framing over HTTP/2 streams; see net/grpc.h. */
#include "net/grpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/buf.h"
#include "common/log.h"
#include "kv/errors.h"
#include "net/conn.h"

#define PREFIX_LEN 5

struct method {
	char *path;
	enum grpc_kind kind;
	const struct grpc_handler *h;
	void *data;
};

struct grpc_server {
	uv_loop_t *loop;
	size_t max_recv;
	struct method *m;
	size_t n, cap;
	h2_on_stream fallback; /* non-gRPC content-types, or NULL */
	void *fallback_data;
};

struct deadline {
	uv_timer_t t;
	struct grpc_call *call;
};

struct grpc_call {
	struct grpc_server *g;
	struct h2_stream *st;
	const struct method *m;
	void *user;
	struct kv_buf in; /* request bytes not yet parsed, from in_off */
	size_t in_off;
	size_t unconsumed; /* delivered by h2, not yet acknowledged */
	struct deadline *dl;
	char ctype[64];
	unsigned depth; /* library frames using the call */
	unsigned nsent;
	bool app_owned;     /* between on_start and finish / on_cancel */
	bool finished;      /* status submitted */
	bool started, headers_sent, paused, remote_done, half_close_done;
	bool dead;          /* stream closed; free when depth drops to 0 */
	bool processing;
};

/* ---- server table -------------------------------------------------------- */

int grpc_server_new(const struct grpc_config *cfg, struct grpc_server **out)
{
	struct grpc_server *g;

	if (cfg == NULL || cfg->loop == NULL)
		return KV_EINVAL;
	g = calloc(1, sizeof(*g));
	if (g == NULL)
		return KV_ENOMEM;
	g->loop = cfg->loop;
	g->max_recv = cfg->max_recv_msg ? cfg->max_recv_msg
					: GRPC_DEFAULT_MAX_RECV;
	*out = g;
	return 0;
}

void grpc_server_free(struct grpc_server *g)
{
	if (g == NULL)
		return;
	for (size_t i = 0; i < g->n; i++)
		free(g->m[i].path);
	free(g->m);
	free(g);
}

void grpc_server_set_fallback(struct grpc_server *g, h2_on_stream fn,
			      void *data)
{
	g->fallback = fn;
	g->fallback_data = data;
}

static const struct method *lookup(const struct grpc_server *g,
				   const char *path)
{
	for (size_t i = 0; i < g->n; i++)
		if (strcmp(g->m[i].path, path) == 0)
			return &g->m[i];
	return NULL;
}

/* True when some method's service part equals path's [1, len). */
static bool service_known(const struct grpc_server *g, const char *svc,
			  size_t len)
{
	for (size_t i = 0; i < g->n; i++) {
		const char *p = g->m[i].path + 1;
		if (strncmp(p, svc, len) == 0 && p[len] == '/')
			return true;
	}
	return false;
}

int grpc_server_register(struct grpc_server *g, const char *path,
			 enum grpc_kind kind, const struct grpc_handler *h,
			 void *method_data)
{
	const char *slash;

	if (path == NULL || path[0] != '/' || h == NULL || h->on_start == NULL)
		return KV_EINVAL;
	slash = strrchr(path, '/');
	if (slash == path || slash[1] == '\0')
		return KV_EINVAL;
	if (lookup(g, path) != NULL)
		return KV_EEXIST;
	if (g->n == g->cap) {
		size_t cap = g->cap ? g->cap * 2 : 16;
		struct method *m = realloc(g->m, cap * sizeof(*m));
		if (m == NULL)
			return KV_ENOMEM;
		g->m = m;
		g->cap = cap;
	}
	g->m[g->n].path = strdup(path);
	if (g->m[g->n].path == NULL)
		return KV_ENOMEM;
	g->m[g->n].kind = kind;
	g->m[g->n].h = h;
	g->m[g->n].data = method_data;
	g->n++;
	return 0;
}

/* ---- helpers --------------------------------------------------------------- */

size_t grpc_percent_encode(const char *msg, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t k = 0, w = 0; /* needed, written */

	for (const unsigned char *p = (const unsigned char *)msg; *p; p++) {
		bool plain = *p >= 0x20 && *p <= 0x7e && *p != '%';
		size_t need = plain ? 1 : 3;
		if (w == k && k + need < cap) {
			if (plain) {
				out[w] = (char)*p;
			} else {
				out[w] = '%';
				out[w + 1] = hex[*p >> 4];
				out[w + 2] = hex[*p & 15];
			}
			w += need;
		}
		k += need;
	}
	if (cap > 0)
		out[w] = '\0';
	return k;
}

/* grpc-go's decodeTimeout, with its error texts. */
static int decode_timeout(const char *v, uint64_t *ms, char *err,
			  size_t errlen)
{
	size_t size = strlen(v);
	uint64_t n = 0;

	if (size < 2) {
		snprintf(err, errlen,
			 "transport: timeout string is too short: \"%s\"", v);
		return KV_EINVAL;
	}
	if (size > 9) {
		snprintf(err, errlen,
			 "transport: timeout string is too long: \"%s\"", v);
		return KV_EINVAL;
	}
	if (strchr("HMSmun", v[size - 1]) == NULL) {
		snprintf(err, errlen,
			 "transport: timeout unit is not recognized: \"%s\"",
			 v);
		return KV_EINVAL;
	}
	for (size_t i = 0; i + 1 < size; i++) {
		if (v[i] < '0' || v[i] > '9') {
			snprintf(err, errlen,
				 "strconv.ParseInt: parsing \"%.*s\": invalid "
				 "syntax",
				 (int)(size - 1), v);
			return KV_EINVAL;
		}
		n = n * 10 + (uint64_t)(v[i] - '0');
	}
	switch (v[size - 1]) {
	case 'H': *ms = n * 3600 * 1000; break;
	case 'M': *ms = n * 60 * 1000; break;
	case 'S': *ms = n * 1000; break;
	case 'm': *ms = n; break;
	case 'u': *ms = (n + 999) / 1000; break;
	default: *ms = (n + 999999) / 1000000; break;
	}
	return 0;
}

int grpc_parse_timeout(const char *v, uint64_t *ms)
{
	char err[64];
	return decode_timeout(v, ms, err, sizeof(err));
}

static void on_deadline_closed(uv_handle_t *h)
{
	free(h->data);
}

static void deadline_cancel(struct grpc_call *call)
{
	struct deadline *dl = call->dl;
	if (dl == NULL)
		return;
	call->dl = NULL;
	dl->call = NULL;
	uv_timer_stop(&dl->t);
	uv_close((uv_handle_t *)&dl->t, on_deadline_closed);
}

static void call_free(struct grpc_call *call)
{
	deadline_cancel(call);
	kv_buf_free(&call->in);
	free(call);
}

static void hold(struct grpc_call *call)
{
	call->depth++;
}

static void release(struct grpc_call *call)
{
	if (--call->depth == 0 && call->dead)
		call_free(call);
}

/* Submits the status: trailers after a sent response, or a trailers-only
 * answer (HEADERS with END_STREAM) with http_status. */
static int send_status(struct grpc_call *call, int http_status, int code,
		       const char *msg)
{
	char codebuf[12], enc[512];
	struct h2_header h[4];
	size_t n = 0;

	snprintf(codebuf, sizeof(codebuf), "%d", code);
	call->finished = true;
	deadline_cancel(call);
	if (!call->headers_sent) {
		h[n].name = "content-type";
		h[n++].value = call->ctype;
	}
	h[n].name = "grpc-status";
	h[n++].value = codebuf;
	/* grpc-go always sends grpc-message, empty for no message. */
	grpc_percent_encode(msg != NULL ? msg : "", enc, sizeof(enc));
	h[n].name = "grpc-message";
	h[n++].value = enc;
	if (!call->headers_sent) {
		call->headers_sent = true;
		return h2_stream_respond(call->st, http_status, h, n, true);
	}
	return h2_stream_end(call->st, h, n);
}

/* The library ends the call with an error; the handler (if it owns the
 * call) learns through on_cancel first. */
static void lib_fail(struct grpc_call *call, int code, const char *msg)
{
	if (call->finished)
		return;
	hold(call);
	KV_DEBUG("grpc", "call failed", "path=%s code=%d msg=\"%s\"",
		 call->m != NULL ? call->m->path : "-", code, msg);
	call->finished = true;
	if (call->app_owned) {
		call->app_owned = false;
		if (call->m->h->on_cancel != NULL)
			call->m->h->on_cancel(call, code);
	}
	call->finished = false;
	send_status(call, 200, code, msg);
	release(call);
}

/* ---- request processing ---------------------------------------------------- */

static bool request_streams(const struct grpc_call *call)
{
	return call->m->kind == GRPC_CLIENT_STREAMING ||
	       call->m->kind == GRPC_BIDI;
}

static void deliver(struct grpc_call *call, const unsigned char *msg,
		    size_t len)
{
	const struct grpc_handler *h = call->m->h;

	if (!request_streams(call)) {
		if (call->started)
			return; /* extra messages on a unary request: unread */
		call->started = true;
		call->app_owned = true;
		h->on_start(call, msg, len, call->m->data);
		return;
	}
	if (call->app_owned && h->on_message != NULL)
		h->on_message(call, msg, len);
}

/* Parses and delivers what is buffered, while not paused. */
static void process(struct grpc_call *call)
{
	char err[128];

	if (call->processing || call->dead)
		return;
	hold(call);
	call->processing = true;
	while (!call->paused && !call->finished) {
		size_t avail = call->in.len - call->in_off;
		const unsigned char *b;
		uint32_t len;

		if (avail < PREFIX_LEN)
			break;
		b = call->in.base + call->in_off;
		len = (uint32_t)b[1] << 24 | (uint32_t)b[2] << 16 |
		      (uint32_t)b[3] << 8 | b[4];
		if (b[0] == 1) {
			lib_fail(call, GRPC_INTERNAL,
				 "grpc: compressed flag set with identity or "
				 "empty encoding");
			break;
		}
		if (b[0] != 0) {
			snprintf(err, sizeof(err),
				 "grpc: received unexpected payload format %d",
				 b[0]);
			lib_fail(call, GRPC_INTERNAL, err);
			break;
		}
		if (len > call->g->max_recv) {
			snprintf(err, sizeof(err),
				 "grpc: received message larger than max "
				 "(%u vs. %zu)",
				 len, call->g->max_recv);
			lib_fail(call, GRPC_RESOURCE_EXHAUSTED, err);
			break;
		}
		if (avail < PREFIX_LEN + (size_t)len)
			break;
		call->in_off += PREFIX_LEN + len;
		deliver(call, b + PREFIX_LEN, len);
	}
	if (call->in_off == call->in.len) {
		kv_buf_reset(&call->in);
		call->in_off = 0;
	} else if (call->in_off > 0 && !call->paused) {
		kv_buf_consume(&call->in, call->in_off);
		call->in_off = 0;
	}
	if (!call->paused && !call->dead && call->unconsumed > 0) {
		size_t n = call->unconsumed;
		call->unconsumed = 0;
		h2_stream_consume(call->st, n);
	}
	if (!call->paused && !call->finished && call->remote_done &&
	    !call->half_close_done && call->in.len == call->in_off) {
		call->half_close_done = true;
		if (!request_streams(call)) {
			/* grpc-go: status.Convert(io.EOF) */
			if (!call->started)
				lib_fail(call, GRPC_UNKNOWN, "EOF");
		} else if (call->app_owned &&
			   call->m->h->on_half_close != NULL) {
			call->m->h->on_half_close(call);
		}
	} else if (call->remote_done && !call->finished &&
		   call->in.len > call->in_off && !call->paused &&
		   !call->half_close_done) {
		call->half_close_done = true;
		/* grpc-go: status.Convert(io.ErrUnexpectedEOF) */
		lib_fail(call, GRPC_UNKNOWN, "unexpected EOF");
	}
	call->processing = false;
	release(call);
}

/* ---- h2 stream handler ----------------------------------------------------- */

static void on_st_data(struct h2_stream *st, const unsigned char *p,
		       size_t n)
{
	struct grpc_call *call = h2_stream_user(st);

	if (call->finished || call->m == NULL) {
		h2_stream_consume(st, n);
		return;
	}
	if (kv_buf_append(&call->in, p, n) != 0) {
		h2_stream_consume(st, n);
		lib_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	call->unconsumed += n;
	process(call);
}

static void on_st_end(struct h2_stream *st)
{
	struct grpc_call *call = h2_stream_user(st);
	call->remote_done = true;
	if (call->m != NULL)
		process(call);
}

static void on_st_writable(struct h2_stream *st)
{
	struct grpc_call *call = h2_stream_user(st);
	if (!call->app_owned || call->m->h->on_writable == NULL)
		return;
	hold(call);
	call->m->h->on_writable(call);
	release(call);
}

static void on_st_close(struct h2_stream *st, uint32_t code)
{
	struct grpc_call *call = h2_stream_user(st);
	(void)code;

	hold(call);
	if (call->app_owned) {
		call->app_owned = false;
		call->finished = true;
		if (call->m->h->on_cancel != NULL)
			call->m->h->on_cancel(call, GRPC_CANCELLED);
	}
	call->dead = true;
	call->finished = true;
	deadline_cancel(call);
	release(call);
}

static const struct h2_stream_handler stream_handler = {
	.on_data = on_st_data,
	.on_end = on_st_end,
	.on_writable = on_st_writable,
	.on_close = on_st_close,
};

static void on_deadline(uv_timer_t *t)
{
	struct deadline *dl = t->data;
	struct grpc_call *call = dl->call;

	if (call == NULL)
		return;
	lib_fail(call, GRPC_DEADLINE_EXCEEDED, "context deadline exceeded");
}

/* content-type is application/grpc, optionally "+subtype" or ";params". */
static bool grpc_content_type(const char *ct, char *resp, size_t cap)
{
	static const char base[] = "application/grpc";
	size_t bl = sizeof(base) - 1, k;

	if (ct == NULL || strncmp(ct, base, bl) != 0)
		return false;
	if (ct[bl] != '\0' && ct[bl] != '+' && ct[bl] != ';')
		return false;
	k = bl;
	if (ct[bl] == '+')
		k += strcspn(ct + bl, ";");
	if (k >= cap)
		k = bl;
	memcpy(resp, ct, k);
	resp[k] = '\0';
	return true;
}

/* An answer before the call begins (grpc-go's earlyAbortStream or
 * WriteStatus without a handler). */
static void early_abort(struct grpc_call *call, int http_status, int code,
			const char *msg)
{
	KV_DEBUG("grpc", "request refused", "http=%d code=%d msg=\"%s\"",
		 http_status, code, msg);
	send_status(call, http_status, code, msg);
}

void grpc_on_stream(struct h2_stream *st, void *data)
{
	struct grpc_server *g = data;
	struct grpc_call *call;
	const char *method, *ct, *path, *enc, *tmo;
	char err[512], terr[128];
	uint64_t ms = 0;

	/* etcd's grpcHandlerFunc: only application/grpc* goes to gRPC. */
	if (g->fallback != NULL &&
	    !grpc_content_type(h2_stream_header(st, "content-type"), err,
			       sizeof(err))) {
		g->fallback(st, g->fallback_data);
		return;
	}
	call = calloc(1, sizeof(*call));
	if (call == NULL) {
		h2_stream_reset(st, H2_INTERNAL_ERROR);
		return;
	}
	call->g = g;
	call->st = st;
	snprintf(call->ctype, sizeof(call->ctype), "application/grpc");
	h2_stream_set_handler(st, &stream_handler, call);
	hold(call);

	method = h2_stream_header(st, ":method");
	ct = h2_stream_header(st, "content-type");
	path = h2_stream_header(st, ":path");
	enc = h2_stream_header(st, "grpc-encoding");
	tmo = h2_stream_header(st, "grpc-timeout");
	if (!grpc_content_type(ct, call->ctype, sizeof(call->ctype))) {
		snprintf(err, sizeof(err),
			 "invalid gRPC request content-type \"%s\"",
			 ct != NULL ? ct : "");
		early_abort(call, 415, GRPC_INVALID_ARGUMENT, err);
		goto out;
	}
	if (tmo != NULL && decode_timeout(tmo, &ms, terr, sizeof(terr)) != 0) {
		snprintf(err, sizeof(err), "malformed grpc-timeout: %s", terr);
		early_abort(call, 400, GRPC_INTERNAL, err);
		goto out;
	}
	if (method == NULL || strcmp(method, "POST") != 0) {
		snprintf(err, sizeof(err),
			 "Received a HEADERS frame with :method \"%s\" which "
			 "should be POST",
			 method != NULL ? method : "");
		early_abort(call, 405, GRPC_INTERNAL, err);
		goto out;
	}
	if (path == NULL)
		path = "";
	call->m = lookup(g, path);
	if (call->m == NULL) {
		const char *sm = path[0] == '/' ? path + 1 : path;
		const char *slash = strrchr(sm, '/');
		if (slash == NULL)
			snprintf(err, sizeof(err),
				 "malformed method name: \"%s\"", path);
		else if (!service_known(g, sm, (size_t)(slash - sm)))
			snprintf(err, sizeof(err), "unknown service %.*s",
				 (int)(slash - sm), sm);
		else
			snprintf(err, sizeof(err),
				 "unknown method %s for service %.*s",
				 slash + 1, (int)(slash - sm), sm);
		early_abort(call, 200, GRPC_UNIMPLEMENTED, err);
		goto out;
	}
	if (enc != NULL && strcmp(enc, "identity") != 0) {
		snprintf(err, sizeof(err),
			 "grpc: Decompressor is not installed for "
			 "grpc-encoding \"%s\"",
			 enc);
		early_abort(call, 200, GRPC_UNIMPLEMENTED, err);
		goto out;
	}
	if (tmo != NULL) {
		call->dl = calloc(1, sizeof(*call->dl));
		if (call->dl == NULL) {
			early_abort(call, 200, GRPC_RESOURCE_EXHAUSTED,
				    "out of memory");
			goto out;
		}
		call->dl->call = call;
		uv_timer_init(g->loop, &call->dl->t);
		call->dl->t.data = call->dl;
		uv_timer_start(&call->dl->t, on_deadline, ms, 0);
	}
	if (request_streams(call)) {
		call->started = true;
		call->app_owned = true;
		call->m->h->on_start(call, NULL, 0, call->m->data);
	}
	if (h2_stream_remote_closed(st))
		call->remote_done = true;
	process(call);
out:
	release(call);
}

int grpc_attach(struct net_conn *c, struct grpc_server *g,
		const struct h2_config *cfg, const char *first, size_t nfirst)
{
	return h2_attach(c, cfg, grpc_on_stream, g, first, nfirst);
}

/* ---- calls ------------------------------------------------------------------- */

void grpc_call_set_user(struct grpc_call *call, void *user)
{
	call->user = user;
}

void *grpc_call_user(const struct grpc_call *call)
{
	return call->user;
}

const char *grpc_call_path(const struct grpc_call *call)
{
	return call->m->path;
}

const char *grpc_call_metadata(const struct grpc_call *call,
			       const char *name)
{
	return h2_stream_header(call->st, name);
}

struct net_conn *grpc_call_conn(const struct grpc_call *call)
{
	return h2_stream_conn(call->st);
}

bool grpc_call_writable(struct grpc_call *call)
{
	return !call->finished && h2_stream_writable(call->st);
}

int grpc_call_send(struct grpc_call *call, const void *msg, size_t len)
{
	struct h2_header h = { "content-type", call->ctype };
	unsigned char prefix[PREFIX_LEN];
	struct h2_iovec v[2];
	int rc;

	if (call->finished || !call->app_owned)
		return KV_EINVAL;
	if ((call->m->kind == GRPC_UNARY ||
	     call->m->kind == GRPC_CLIENT_STREAMING) && call->nsent > 0)
		return KV_EINVAL;
	if (len > UINT32_MAX)
		return KV_EINVAL;
	hold(call);
	if (!call->headers_sent) {
		rc = h2_stream_respond(call->st, 200, &h, 1, false);
		if (rc != 0)
			goto out;
		call->headers_sent = true;
	}
	prefix[0] = 0;
	prefix[1] = (unsigned char)(len >> 24);
	prefix[2] = (unsigned char)(len >> 16);
	prefix[3] = (unsigned char)(len >> 8);
	prefix[4] = (unsigned char)len;
	v[0].base = prefix;
	v[0].len = PREFIX_LEN;
	v[1].base = msg;
	v[1].len = len;
	rc = h2_stream_writev(call->st, v, 2);
	if (rc == 0)
		call->nsent++;
out:
	release(call);
	return rc;
}

void grpc_call_pause_recv(struct grpc_call *call, bool pause)
{
	if (call->paused == pause)
		return;
	call->paused = pause;
	if (!pause)
		process(call);
}

int grpc_call_finish(struct grpc_call *call, int status, const char *msg)
{
	int rc;

	if (call->finished || !call->app_owned)
		return KV_EINVAL;
	hold(call);
	call->app_owned = false;
	rc = send_status(call, 200, status, msg);
	/* Whatever the client still sends is dropped, but acknowledged. */
	if (call->unconsumed > 0 && !call->dead) {
		size_t n = call->unconsumed;
		call->unconsumed = 0;
		h2_stream_consume(call->st, n);
	}
	release(call);
	return rc == KV_ENOMEM ? KV_ENOMEM : 0;
}

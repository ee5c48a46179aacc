/* grpc_echo_server — a demo and test server for net/h2.h and net/grpc.h:
 * gRPC over TLS (ALPN h2) and plaintext HTTP/2 prior knowledge, with
 * HTTP/1.1 still answered on the same port, without any of kvd's storage.
 * Messages are raw bytes (no protobuf).
 *
 *   /kvtest.Echo/Unary         answers with the request; "sleep:MS" answers
 *                              after MS milliseconds; "status:CODE:TEXT"
 *                              fails with that status; "whoami" answers
 *                              with the client certificate's CN ("-")
 *   /kvtest.Echo/ServerStream  request "COUNT SIZE INTERVAL_MS": COUNT
 *                              messages of SIZE bytes (each starts with
 *                              its index), INTERVAL_MS apart
 *   /kvtest.Echo/Bidi          echoes each message; OK at half-close
 *   HTTP/1.1 GET /hello        a fixed text
 *
 * SIGTERM/SIGINT: GOAWAY, lets calls finish (2 s at most), exits 0. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/log.h"
#include "kv/errors.h"
#include "net/conn.h"
#include "net/grpc.h"
#include "net/h2.h"
#include "net/http.h"
#include "net/tls.h"

struct app {
	uv_loop_t loop;
	uv_signal_t sigterm, sigint;
	struct net_server *srv;
	struct tls_ctx *tls;
	struct grpc_server *grpc;
	struct http_config http;
	bool stopping;
	unsigned long calls;
};

struct job {
	uv_timer_t timer;
	struct grpc_call *call;
	unsigned long left, seq;
	size_t size;
	uint64_t interval_ms;
	unsigned char *buf;
	size_t len;
};

static const char hello_text[] = "hello from kvd grpc echo\n";

static void on_job_closed(uv_handle_t *h)
{
	struct job *j = h->data;
	free(j->buf);
	free(j);
}

static void job_done(struct job *j)
{
	if (j->call != NULL)
		grpc_call_set_user(j->call, NULL);
	j->call = NULL;
	uv_timer_stop(&j->timer);
	uv_close((uv_handle_t *)&j->timer, on_job_closed);
}

static struct job *job_new(struct app *a, struct grpc_call *call,
			   size_t bufsize)
{
	struct job *j = calloc(1, sizeof(*j));
	if (j == NULL)
		return NULL;
	j->buf = malloc(bufsize == 0 ? 1 : bufsize);
	if (j->buf == NULL) {
		free(j);
		return NULL;
	}
	j->call = call;
	uv_timer_init(&a->loop, &j->timer);
	j->timer.data = j;
	grpc_call_set_user(call, j);
	return j;
}

static void on_cancel(struct grpc_call *call, int status)
{
	struct job *j = grpc_call_user(call);
	KV_DEBUG("echo", "call cancelled", "path=%s status=%d",
		 grpc_call_path(call), status);
	if (j != NULL) {
		j->call = NULL;
		job_done(j);
	}
}

/* ---- Unary ------------------------------------------------------------------ */

static void on_sleep_done(uv_timer_t *t)
{
	struct job *j = t->data;
	struct grpc_call *call = j->call;
	job_done(j);
	if (call != NULL) {
		grpc_call_send(call, j->buf, j->len);
		grpc_call_finish(call, GRPC_OK, NULL);
	}
}

static void unary_start(struct grpc_call *call, const unsigned char *msg,
			size_t len, void *data)
{
	struct app *a = data;
	char head[256];

	a->calls++;
	snprintf(head, sizeof(head), "%.*s", (int)(len < 255 ? len : 255),
		 msg);
	if (strncmp(head, "sleep:", 6) == 0) {
		struct job *j = job_new(a, call, len);
		if (j == NULL) {
			grpc_call_finish(call, GRPC_RESOURCE_EXHAUSTED, "oom");
			return;
		}
		memcpy(j->buf, msg, len);
		j->len = len;
		uv_timer_start(&j->timer, on_sleep_done,
			       strtoull(head + 6, NULL, 10), 0);
		return;
	}
	if (strcmp(head, "whoami") == 0) {
		struct net_conn *c = grpc_call_conn(call);
		const char *cn = c != NULL ? net_conn_peer_cn(c) : NULL;
		if (cn == NULL)
			cn = "-";
		grpc_call_send(call, cn, strlen(cn));
		grpc_call_finish(call, GRPC_OK, NULL);
		return;
	}
	if (strncmp(head, "status:", 7) == 0) {
		char *end;
		long code = strtol(head + 7, &end, 10);
		grpc_call_finish(call, (int)code, *end == ':' ? end + 1 : "");
		return;
	}
	if (grpc_call_send(call, msg, len) != 0) {
		grpc_call_finish(call, GRPC_INTERNAL, "send failed");
		return;
	}
	grpc_call_finish(call, GRPC_OK, NULL);
}

/* ---- ServerStream ----------------------------------------------------------- */

static void on_stream_timer(uv_timer_t *t);

static void stream_step(struct job *j)
{
	int burst = j->interval_ms == 0 ? 64 : 1;

	while (j->left > 0 && burst-- > 0) {
		int h = snprintf((char *)j->buf, j->size + 32, "%lu ", j->seq);
		size_t n = j->size > (size_t)h ? j->size : (size_t)h;
		int rc;
		if (n > (size_t)h)
			memset(j->buf + h, 'x', n - (size_t)h);
		rc = grpc_call_send(j->call, j->buf, n);
		if (rc == KV_EAGAIN)
			return; /* on_writable continues */
		if (rc != 0) {
			struct grpc_call *call = j->call;
			job_done(j);
			grpc_call_finish(call, GRPC_INTERNAL, "send failed");
			return;
		}
		j->seq++;
		j->left--;
	}
	if (j->left == 0) {
		struct grpc_call *call = j->call;
		job_done(j);
		grpc_call_finish(call, GRPC_OK, NULL);
		return;
	}
	uv_timer_start(&j->timer, on_stream_timer, j->interval_ms, 0);
}

static void on_stream_timer(uv_timer_t *t)
{
	stream_step(t->data);
}

static void stream_writable(struct grpc_call *call)
{
	struct job *j = grpc_call_user(call);
	if (j != NULL)
		uv_timer_start(&j->timer, on_stream_timer, 0, 0);
}

static void sstream_start(struct grpc_call *call, const unsigned char *msg,
			  size_t len, void *data)
{
	struct app *a = data;
	char req[128];
	unsigned long count = 0, interval = 0;
	size_t size = 0;
	struct job *j;

	a->calls++;
	snprintf(req, sizeof(req), "%.*s", (int)(len < 127 ? len : 127),
		 msg);
	if (sscanf(req, "%lu %zu %lu", &count, &size, &interval) < 2 ||
	    size > (16u << 20)) {
		grpc_call_finish(call, GRPC_INVALID_ARGUMENT,
				 "want \"COUNT SIZE [INTERVAL_MS]\"");
		return;
	}
	j = job_new(a, call, size + 32);
	if (j == NULL) {
		grpc_call_finish(call, GRPC_RESOURCE_EXHAUSTED, "oom");
		return;
	}
	j->left = count;
	j->size = size;
	j->interval_ms = interval;
	uv_timer_start(&j->timer, on_stream_timer, 0, 0);
}

/* ---- Bidi --------------------------------------------------------------------- */

static void bidi_start(struct grpc_call *call, const unsigned char *msg,
		       size_t len, void *data)
{
	struct app *a = data;
	(void)msg;
	(void)len;
	a->calls++;
	grpc_call_set_user(call, NULL);
}

/* A message that met KV_EAGAIN waits here (call user) with input paused
 * until on_writable. */
struct pending {
	size_t len;
	unsigned char buf[];
};

static void bidi_message(struct grpc_call *call, const unsigned char *msg,
			 size_t len)
{
	struct pending *pd;
	int rc = grpc_call_send(call, msg, len);

	if (rc == 0)
		return;
	if (rc != KV_EAGAIN) {
		grpc_call_finish(call, GRPC_INTERNAL, "send failed");
		return;
	}
	pd = malloc(sizeof(*pd) + len);
	if (pd == NULL) {
		grpc_call_finish(call, GRPC_RESOURCE_EXHAUSTED, "oom");
		return;
	}
	KV_DEBUG("echo", "send blocked, input paused", "path=%s",
		 grpc_call_path(call));
	pd->len = len;
	memcpy(pd->buf, msg, len);
	grpc_call_set_user(call, pd);
	grpc_call_pause_recv(call, true);
}

static void bidi_writable(struct grpc_call *call)
{
	struct pending *pd = grpc_call_user(call);
	int rc;

	if (pd == NULL)
		return;
	rc = grpc_call_send(call, pd->buf, pd->len);
	if (rc == KV_EAGAIN)
		return;
	grpc_call_set_user(call, NULL);
	free(pd);
	if (rc != 0) {
		grpc_call_finish(call, GRPC_INTERNAL, "send failed");
		return;
	}
	grpc_call_pause_recv(call, false);
}

static void bidi_cancel(struct grpc_call *call, int status)
{
	KV_DEBUG("echo", "call cancelled", "path=%s status=%d",
		 grpc_call_path(call), status);
	free(grpc_call_user(call));
}

static void bidi_half_close(struct grpc_call *call)
{
	grpc_call_finish(call, GRPC_OK, NULL);
}

static const struct grpc_handler unary_h = {
	.on_start = unary_start,
	.on_cancel = on_cancel,
};
static const struct grpc_handler sstream_h = {
	.on_start = sstream_start,
	.on_writable = stream_writable,
	.on_cancel = on_cancel,
};
static const struct grpc_handler bidi_h = {
	.on_start = bidi_start,
	.on_message = bidi_message,
	.on_writable = bidi_writable,
	.on_half_close = bidi_half_close,
	.on_cancel = bidi_cancel,
};

/* ---- HTTP/1.1 and dispatch -------------------------------------------------- */

static void on_request(struct http_request *req, void *data)
{
	static const struct http_header text[] = {
		{ "Content-Type", "text/plain" },
	};
	(void)data;
	if (strcmp(req->target, "/hello") == 0) {
		http_respond(req, 200, text, 1, hello_text,
			     sizeof(hello_text) - 1);
	} else {
		static const char nf[] = "not found\n";
		http_respond(req, 404, text, 1, nf, sizeof(nf) - 1);
	}
}

static void on_proto(struct net_conn *c, enum net_proto proto,
		     const char *first, size_t nfirst, void *data)
{
	struct app *a = data;
	if (proto == NET_PROTO_H2)
		grpc_attach(c, a->grpc, NULL, first, nfirst);
	else
		http_attach_prefixed(c, &a->http, on_request, a, first,
				     nfirst);
}

static void on_ready(struct net_conn *c, const char *alpn, void *data)
{
	struct app *a = data;
	if (alpn != NULL && strcmp(alpn, "h2") == 0)
		grpc_attach(c, a->grpc, NULL, NULL, 0);
	else if (alpn != NULL)
		http_attach(c, &a->http, on_request, a);
	else
		net_sniff_attach(c, on_proto, a);
}

static void on_server_done(void *data)
{
	struct app *a = data;
	a->srv = NULL;
	uv_close((uv_handle_t *)&a->sigterm, NULL);
	uv_close((uv_handle_t *)&a->sigint, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct app *a = h->data;
	if (a->stopping)
		return;
	a->stopping = true;
	KV_INFO("echo", "stopping", "signal=%d calls=%lu", signum, a->calls);
	net_server_shutdown(a->srv, 2000, on_server_done, a);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: grpc_echo_server --listen URL[,URL...] [--cert-file F "
		"--key-file F] [--trusted-ca-file F] [--client-cert-auth]\n"
		"  [--max-recv BYTES] [--max-pending-out BYTES] "
		"[--log-level LEVEL]\n");
}

int main(int argc, char **argv)
{
	struct app a;
	struct tls_config tc = { 0 };
	struct net_server_config sc = { 0 };
	struct grpc_config gc = { 0 };
	const char *listen = NULL;
	struct net_url *urls = NULL;
	size_t nurls = 0;
	bool need_tls = false;
	char err[512];
	int rc, status = 1;

	memset(&a, 0, sizeof(a));
	tc.alpn = "h2,http/1.1";
	for (int i = 1; i < argc; i++) {
		const char *o = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(o, "--client-cert-auth") == 0) {
			tc.client_cert_auth = true;
			continue;
		}
		if (v == NULL) {
			usage();
			return 2;
		}
		i++;
		if (strcmp(o, "--listen") == 0) {
			listen = v;
		} else if (strcmp(o, "--cert-file") == 0) {
			tc.cert_file = v;
		} else if (strcmp(o, "--key-file") == 0) {
			tc.key_file = v;
		} else if (strcmp(o, "--trusted-ca-file") == 0) {
			tc.trusted_ca_file = v;
		} else if (strcmp(o, "--max-recv") == 0) {
			gc.max_recv_msg = strtoull(v, NULL, 10);
		} else if (strcmp(o, "--max-pending-out") == 0) {
			sc.max_pending_out = strtoull(v, NULL, 10);
		} else if (strcmp(o, "--log-level") == 0) {
			enum kv_log_level lv;
			if (kv_log_parse_level(v, &lv) != 0) {
				usage();
				return 2;
			}
			kv_log_set_level(lv);
		} else {
			usage();
			return 2;
		}
	}
	if (listen == NULL) {
		usage();
		return 2;
	}
	if (net_url_list_parse(listen, &urls, &nurls) != 0) {
		fprintf(stderr, "bad --listen \"%s\"\n", listen);
		return 2;
	}
	for (size_t i = 0; i < nurls; i++)
		need_tls |= urls[i].tls;
	signal(SIGPIPE, SIG_IGN);
	if (need_tls) {
		rc = tls_ctx_new_server(&tc, &a.tls, err, sizeof(err));
		if (rc != 0) {
			KV_ERROR("echo", "TLS setup failed", "err=\"%s\" code=%s",
				 err, kv_errname(rc));
			goto out_urls;
		}
	}
	uv_loop_init(&a.loop);
	gc.loop = &a.loop;
	if (grpc_server_new(&gc, &a.grpc) != 0 ||
	    grpc_server_register(a.grpc, "/kvtest.Echo/Unary", GRPC_UNARY,
				 &unary_h, &a) != 0 ||
	    grpc_server_register(a.grpc, "/kvtest.Echo/ServerStream",
				 GRPC_SERVER_STREAMING, &sstream_h, &a) != 0 ||
	    grpc_server_register(a.grpc, "/kvtest.Echo/Bidi", GRPC_BIDI,
				 &bidi_h, &a) != 0)
		goto out_loop;
	if (net_server_new(&a.loop, &sc, on_ready, &a, &a.srv) != 0)
		goto out_loop;
	for (size_t i = 0; i < nurls; i++)
		if (net_server_listen(a.srv, &urls[i], a.tls) != 0)
			goto out_server;
	uv_signal_init(&a.loop, &a.sigterm);
	uv_signal_init(&a.loop, &a.sigint);
	a.sigterm.data = a.sigint.data = &a;
	uv_signal_start(&a.sigterm, on_signal, SIGTERM);
	uv_signal_start(&a.sigint, on_signal, SIGINT);
	uv_run(&a.loop, UV_RUN_DEFAULT);
	KV_INFO("echo", "stopped", NULL);
	status = 0;
	goto out_loop;

out_server:
	net_server_shutdown(a.srv, 0, NULL, NULL);
	uv_run(&a.loop, UV_RUN_DEFAULT);
out_loop:
	uv_run(&a.loop, UV_RUN_NOWAIT);
	uv_loop_close(&a.loop);
	grpc_server_free(a.grpc);
	tls_ctx_free(a.tls);
out_urls:
	free(urls);
	return status;
}

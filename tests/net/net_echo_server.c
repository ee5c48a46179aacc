/* net_echo_server — a demo and test server for net/: TLS, connections and
 * HTTP/1.1, without any of kvd's storage.
 *
 *   POST /echo         answers with the request body
 *   GET  /hello        answers with a fixed text
 *   GET  /stream?count=N&size=BYTES&interval_ms=MS
 *                      chunked answer of N pieces spread over time
 *   anything else      404
 *
 * SIGTERM/SIGINT: stops listening, lets in-flight answers finish (5 s at
 * most), exits 0. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/log.h"
#include "kv/errors.h"
#include "net/conn.h"
#include "net/http.h"
#include "net/tls.h"

struct app {
	uv_loop_t loop;
	uv_signal_t sigterm, sigint;
	struct net_server *srv;
	struct tls_ctx *tls;
	struct http_config http;
	bool stopping;
};

struct stream_job {
	uv_timer_t timer;
	struct http_request *req;
	unsigned long left, seq;
	size_t size;
	uint64_t interval_ms;
	char *piece;
};

static const char hello_text[] = "hello from kvd net\n";

static unsigned long query_ul(const char *target, const char *key,
			      unsigned long def)
{
	const char *q = strchr(target, '?');
	size_t kl = strlen(key);
	while (q != NULL) {
		q++;
		if (strncmp(q, key, kl) == 0 && q[kl] == '=')
			return strtoul(q + kl + 1, NULL, 10);
		q = strchr(q, '&');
	}
	return def;
}

static void on_job_closed(uv_handle_t *h)
{
	struct stream_job *j = h->data;
	free(j->piece);
	free(j);
}

static void job_finish(struct stream_job *j)
{
	if (j->req != NULL) {
		j->req->user = NULL;
		j->req = NULL;
	}
	uv_close((uv_handle_t *)&j->timer, on_job_closed);
}

static void on_job_timer(uv_timer_t *t)
{
	struct stream_job *j = t->data;
	int burst = j->interval_ms == 0 ? 64 : 1;

	while (j->left > 0 && burst-- > 0) {
		size_t n = j->size;
		if (n < 64) {
			n = (size_t)snprintf(j->piece, j->size + 64,
					     "piece %lu\n", j->seq);
		} else {
			int h = snprintf(j->piece, 64, "piece %lu\n", j->seq);
			memset(j->piece + h, 'x', n - (size_t)h - 1);
			j->piece[n - 1] = '\n';
		}
		int rc = http_stream_write(j->req, j->piece, n);
		if (rc == KV_EAGAIN)
			return; /* on_writable restarts the timer */
		if (rc != 0) {
			struct http_request *req = j->req;
			job_finish(j);
			http_stream_end(req);
			return;
		}
		j->seq++;
		j->left--;
	}
	if (j->left == 0) {
		struct http_request *req = j->req;
		job_finish(j);
		http_stream_end(req);
		return;
	}
	uv_timer_start(t, on_job_timer, j->interval_ms, 0);
}

static void on_stream_writable(struct http_request *req)
{
	struct stream_job *j = req->user;
	if (j != NULL)
		uv_timer_start(&j->timer, on_job_timer, 0, 0);
}

static void on_stream_abort(struct http_request *req)
{
	struct stream_job *j = req->user;
	if (j != NULL) {
		uv_timer_stop(&j->timer);
		job_finish(j);
	}
}

static void start_stream(struct app *a, struct http_request *req)
{
	static const struct http_header hdrs[] = {
		{ "Content-Type", "text/plain" },
	};
	struct stream_job *j = calloc(1, sizeof(*j));
	if (j == NULL) {
		http_respond(req, 500, NULL, 0, NULL, 0);
		return;
	}
	j->left = query_ul(req->target, "count", 5);
	j->size = query_ul(req->target, "size", 0);
	if (j->size > (16u << 20))
		j->size = 16u << 20;
	j->interval_ms = query_ul(req->target, "interval_ms", 100);
	j->piece = malloc(j->size + 64);
	if (j->piece == NULL) {
		free(j);
		http_respond(req, 500, NULL, 0, NULL, 0);
		return;
	}
	j->req = req;
	uv_timer_init(&a->loop, &j->timer);
	j->timer.data = j;
	req->user = j;
	req->on_abort = on_stream_abort;
	req->on_writable = on_stream_writable;
	http_stream_begin(req, 200, hdrs, 1);
	uv_timer_start(&j->timer, on_job_timer, 0, 0);
}

static bool path_is(const char *target, const char *path)
{
	size_t n = strlen(path);
	return strncmp(target, path, n) == 0 &&
	       (target[n] == '\0' || target[n] == '?');
}

static void on_request(struct http_request *req, void *data)
{
	static const struct http_header text[] = {
		{ "Content-Type", "text/plain" },
	};
	static const struct http_header bin[] = {
		{ "Content-Type", "application/octet-stream" },
	};
	struct app *a = data;
	bool get = strcmp(req->method, "GET") == 0 ||
		   strcmp(req->method, "HEAD") == 0;

	if (path_is(req->target, "/echo") &&
	    strcmp(req->method, "POST") == 0) {
		http_respond(req, 200, bin, 1, req->body, req->body_len);
	} else if (path_is(req->target, "/hello") && get) {
		http_respond(req, 200, text, 1, hello_text,
			     sizeof(hello_text) - 1);
	} else if (path_is(req->target, "/stream") && get) {
		start_stream(a, req);
	} else {
		static const char nf[] = "not found\n";
		http_respond(req, 404, text, 1, nf, sizeof(nf) - 1);
	}
}

static void on_ready(struct net_conn *c, const char *alpn, void *data)
{
	struct app *a = data;
	if (alpn != NULL && strcmp(alpn, "h2") == 0) {
		KV_WARN("echo", "HTTP/2 is not served yet", "peer=%s",
			net_conn_peer(c));
		net_conn_close(c, "h2 not served");
		return;
	}
	http_attach(c, &a->http, on_request, a);
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
	KV_INFO("echo", "stopping", "signal=%d", signum);
	net_server_shutdown(a->srv, 5000, on_server_done, a);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: net_echo_server --listen URL[,URL...] [--cert-file F "
		"--key-file F] [--trusted-ca-file F] [--client-cert-auth]\n"
		"  [--max-body BYTES] [--alpn LIST] [--max-pending-out BYTES]\n"
		"  [--idle-timeout-ms MS] [--log-level LEVEL]\n");
}

int main(int argc, char **argv)
{
	struct app a;
	struct tls_config tc = { 0 };
	struct net_server_config sc = { 0 };
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
		} else if (strcmp(o, "--max-body") == 0) {
			a.http.max_body_bytes = strtoull(v, NULL, 10);
		} else if (strcmp(o, "--alpn") == 0) {
			tc.alpn = v;
		} else if (strcmp(o, "--max-pending-out") == 0) {
			sc.max_pending_out = strtoull(v, NULL, 10);
		} else if (strcmp(o, "--idle-timeout-ms") == 0) {
			sc.idle_timeout_ms = strtoull(v, NULL, 10);
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
	uv_loop_close(&a.loop);
	tls_ctx_free(a.tls);
out_urls:
	free(urls);
	return status;
}

/* Unit tests for net/: the TLS engine in memory (no sockets), URL lists
 * and the HTTP/1.1 session over an in-memory transport. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "common/buf.h"
#include "kv/errors.h"
#include "net/conn.h"
#include "net/http.h"
#include "net/tls.h"

/* ---- test PKI, made with the openssl CLI in a temp dir ------------------ */

static char pki[256];

static const char *pki_path(const char *name)
{
	static char bufs[8][512];
	static int i;
	char *b = bufs[i++ % 8];
	snprintf(b, 512, "%s/%s", pki, name);
	return b;
}

static int make_pki(void **state)
{
	char cmd[4096];
	(void)state;
	snprintf(pki, sizeof(pki), "/tmp/kv-test-net-XXXXXX");
	if (mkdtemp(pki) == NULL)
		return -1;
	snprintf(cmd, sizeof(cmd),
		 "(set -e; cd %s; "
		 "ca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
		 "-nodes -days 30 -subj \"/CN=$2\" -keyout $1.key -out $1.crt "
		 "-addext basicConstraints=critical,CA:TRUE "
		 "-addext keyUsage=critical,keyCertSign,cRLSign; }; "
		 "leaf() { printf 'basicConstraints=CA:FALSE\\nkeyUsage=critical,digitalSignature\\n"
		 "extendedKeyUsage=serverAuth,clientAuth\\nsubjectAltName=IP:127.0.0.1,DNS:localhost\\n' > $1.ext; "
		 "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
		 "-subj \"/CN=$1\" -keyout $1.key -out $1.csr; "
		 "openssl x509 -req -in $1.csr -CA $2.crt -CAkey $2.key -CAcreateserial "
		 "-days 30 -extfile $1.ext -out $1.crt; }; "
		 "ca ca 'test CA'; ca other 'other CA'; "
		 "leaf server ca; leaf client ca; leaf rogue other; "
		 "echo garbage > bad.pem; cp server.key unreadable.key; "
		 "chmod 000 unreadable.key)",
		 pki);
	strcat(cmd, " >/dev/null 2>&1");
	return system(cmd) == 0 ? 0 : -1;
}

static int remove_pki(void **state)
{
	char cmd[512];
	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", pki);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---- TLS engine -------------------------------------------------------- */

static struct tls_ctx *server_ctx(bool cca, const char *alpn)
{
	struct tls_config c = {
		.cert_file = pki_path("server.crt"),
		.key_file = pki_path("server.key"),
		.trusted_ca_file = pki_path("ca.crt"),
		.client_cert_auth = cca,
		.alpn = alpn,
	};
	struct tls_ctx *ctx = NULL;
	char err[256];
	int rc = tls_ctx_new_server(&c, &ctx, err, sizeof(err));
	if (rc != 0)
		fail_msg("server ctx: %s", err);
	return ctx;
}

static struct tls_ctx *client_ctx(const char *cert, const char *alpn)
{
	char cf[64], kf[64];
	struct tls_config c = {
		.trusted_ca_file = pki_path("ca.crt"),
		.alpn = alpn,
	};
	struct tls_ctx *ctx = NULL;
	char err[256];
	if (cert != NULL) {
		snprintf(cf, sizeof(cf), "%s.crt", cert);
		snprintf(kf, sizeof(kf), "%s.key", cert);
		c.cert_file = pki_path(cf);
		c.key_file = pki_path(kf);
	}
	int rc = tls_ctx_new_client(&c, &ctx, err, sizeof(err));
	if (rc != 0)
		fail_msg("client ctx: %s", err);
	return ctx;
}

static void pump(struct tls_engine *from, struct tls_engine *to)
{
	char buf[4096];
	size_t n;
	while ((n = tls_engine_drain(from, buf, sizeof(buf))) > 0)
		assert_int_equal(tls_engine_feed(to, buf, n), 0);
}

/* Runs both handshakes until both finish or one fails. */
static void handshake(struct tls_engine *c, struct tls_engine *s, int *rc_c,
		      int *rc_s)
{
	for (int i = 0; i < 20; i++) {
		*rc_c = tls_engine_handshake(c);
		pump(c, s);
		*rc_s = tls_engine_handshake(s);
		pump(s, c);
		if ((*rc_c == 0 && *rc_s == 0) ||
		    (*rc_c != 0 && *rc_c != KV_EAGAIN) ||
		    (*rc_s != 0 && *rc_s != KV_EAGAIN))
			return;
	}
}

struct pair {
	struct tls_ctx *sctx, *cctx;
	struct tls_engine *s, *c;
	int rc_s, rc_c;
};

static void pair_open(struct pair *p, bool cca, const char *salpn,
		      const char *client_cert, const char *calpn,
		      const char *peer_name)
{
	memset(p, 0, sizeof(*p));
	p->sctx = server_ctx(cca, salpn);
	p->cctx = client_ctx(client_cert, calpn);
	assert_int_equal(tls_engine_new(p->sctx, NULL, &p->s), 0);
	assert_int_equal(tls_engine_new(p->cctx, peer_name, &p->c), 0);
	/* Contexts may go before their engines. */
	tls_ctx_free(p->sctx);
	tls_ctx_free(p->cctx);
	handshake(p->c, p->s, &p->rc_c, &p->rc_s);
}

static void pair_close(struct pair *p)
{
	tls_engine_free(p->s);
	tls_engine_free(p->c);
}

/* Reads all available plaintext from e into out. */
static int read_all(struct tls_engine *e, char *out, size_t cap, size_t *len)
{
	int rc;
	size_t n;
	*len = 0;
	while ((rc = tls_engine_read(e, out + *len, cap - *len, &n)) == 0)
		*len += n;
	return rc;
}

static void test_tls_mtls_roundtrip(void **state)
{
	struct pair p;
	char buf[256];
	size_t n;
	(void)state;

	pair_open(&p, true, NULL, "client", "h2,http/1.1", "127.0.0.1");
	assert_int_equal(p.rc_c, 0);
	assert_int_equal(p.rc_s, 0);
	assert_true(tls_engine_handshake_done(p.s));
	assert_string_equal(tls_engine_alpn(p.s), "h2");
	assert_string_equal(tls_engine_alpn(p.c), "h2");
	assert_string_equal(tls_engine_peer_cn(p.s), "client");
	assert_string_equal(tls_engine_peer_cn(p.c), "server");

	assert_int_equal(tls_engine_write(p.c, "ping", 4), 0);
	pump(p.c, p.s);
	assert_int_equal(read_all(p.s, buf, sizeof(buf), &n), KV_EAGAIN);
	assert_int_equal(n, 4);
	assert_memory_equal(buf, "ping", 4);
	assert_int_equal(tls_engine_write(p.s, "pong!", 5), 0);
	pump(p.s, p.c);
	assert_int_equal(read_all(p.c, buf, sizeof(buf), &n), KV_EAGAIN);
	assert_int_equal(n, 5);

	/* close_notify reaches the other side as KV_ECLOSED. */
	tls_engine_shutdown(p.c);
	assert_int_equal(tls_engine_write(p.c, "x", 1), KV_ECLOSED);
	pump(p.c, p.s);
	assert_int_equal(read_all(p.s, buf, sizeof(buf), &n), KV_ECLOSED);
	pair_close(&p);
}

/* Plaintext written before the handshake is delivered after it. */
static void test_tls_early_write(void **state)
{
	struct tls_ctx *sctx = server_ctx(false, NULL);
	struct tls_ctx *cctx = client_ctx(NULL, "http/1.1");
	struct tls_engine *s, *c;
	int rc_c, rc_s;
	char buf[64];
	size_t n;
	(void)state;

	assert_int_equal(tls_engine_new(sctx, NULL, &s), 0);
	assert_int_equal(tls_engine_new(cctx, "localhost", &c), 0);
	assert_int_equal(tls_engine_write(c, "early", 5), 0);
	handshake(c, s, &rc_c, &rc_s);
	assert_int_equal(rc_c, 0);
	assert_int_equal(rc_s, 0);
	pump(c, s);
	assert_int_equal(read_all(s, buf, sizeof(buf), &n), KV_EAGAIN);
	assert_int_equal(n, 5);
	assert_memory_equal(buf, "early", 5);
	assert_null(tls_engine_peer_cn(s));
	tls_engine_free(s);
	tls_engine_free(c);
	tls_ctx_free(sctx);
	tls_ctx_free(cctx);
}

static void test_tls_alpn_selection(void **state)
{
	struct pair p;
	(void)state;

	/* Server preference wins over the client's order. */
	pair_open(&p, false, "h2,http/1.1", NULL, "http/1.1,h2", "127.0.0.1");
	assert_int_equal(p.rc_s, 0);
	assert_string_equal(tls_engine_alpn(p.s), "h2");
	pair_close(&p);

	pair_open(&p, false, NULL, NULL, "http/1.1", "127.0.0.1");
	assert_int_equal(p.rc_s, 0);
	assert_string_equal(tls_engine_alpn(p.s), "http/1.1");
	pair_close(&p);

	pair_open(&p, false, "http/1.1", NULL, "h2,http/1.1", "127.0.0.1");
	assert_int_equal(p.rc_s, 0);
	assert_string_equal(tls_engine_alpn(p.c), "http/1.1");
	pair_close(&p);

	/* No overlap: no ALPN, the handshake still succeeds. */
	pair_open(&p, false, NULL, NULL, "spdy/3", "127.0.0.1");
	assert_int_equal(p.rc_s, 0);
	assert_null(tls_engine_alpn(p.s));
	pair_close(&p);

	/* The client offers nothing. */
	pair_open(&p, false, NULL, NULL, "", "127.0.0.1");
	assert_int_equal(p.rc_s, 0);
	assert_null(tls_engine_alpn(p.s));
	pair_close(&p);
}

static void test_tls_client_cert_missing(void **state)
{
	struct pair p;
	(void)state;
	pair_open(&p, true, NULL, NULL, NULL, "127.0.0.1");
	assert_int_equal(p.rc_s, KV_EPERM);
	assert_non_null(strstr(tls_engine_errmsg(p.s), "certificate"));
	/* The client learns through the alert. */
	char buf[16];
	size_t n;
	int rc = read_all(p.c, buf, sizeof(buf), &n);
	assert_true(rc == KV_EPERM || rc == KV_EPROTO);
	pair_close(&p);
}

static void test_tls_client_cert_foreign(void **state)
{
	struct pair p;
	(void)state;
	pair_open(&p, true, NULL, "rogue", NULL, "127.0.0.1");
	assert_int_equal(p.rc_s, KV_EPERM);
	assert_non_null(strstr(tls_engine_errmsg(p.s), "certificate"));
	pair_close(&p);

	/* Without client-cert-auth the same client is accepted. */
	pair_open(&p, false, NULL, "rogue", NULL, "127.0.0.1");
	assert_int_equal(p.rc_s, 0);
	assert_int_equal(p.rc_c, 0);
	pair_close(&p);
}

/* tls_engine_peer_check_host: the server side checks the verified client
 * certificate against a host or IP; without verification nothing passes. */
static void test_tls_peer_check_host(void **state)
{
	struct pair p;
	(void)state;
	pair_open(&p, true, NULL, "client", NULL, "127.0.0.1");
	assert_int_equal(p.rc_s, 0);
	assert_int_equal(tls_engine_peer_check_host(p.s, "127.0.0.1"), 0);
	assert_int_equal(tls_engine_peer_check_host(p.s, "localhost"), 0);
	assert_int_equal(tls_engine_peer_check_host(p.s, "127.0.0.2"),
			 KV_EPERM);
	assert_non_null(strstr(tls_engine_errmsg(p.s), "127.0.0.2"));
	assert_int_equal(tls_engine_peer_check_host(p.s, "::1"), KV_EPERM);
	assert_int_equal(tls_engine_peer_check_host(p.s, "other.example"),
			 KV_EPERM);
	/* The client checks the server's certificate the same way. */
	assert_int_equal(tls_engine_peer_check_host(p.c, "127.0.0.1"), 0);
	pair_close(&p);

	/* No client certificate at all (server does not ask). */
	pair_open(&p, false, NULL, NULL, NULL, "127.0.0.1");
	assert_int_equal(p.rc_s, 0);
	assert_int_equal(tls_engine_peer_check_host(p.s, "127.0.0.1"),
			 KV_EPERM);
	pair_close(&p);

	/* A certificate the server did not verify does not count. */
	pair_open(&p, false, NULL, "client", NULL, "127.0.0.1");
	assert_int_equal(p.rc_s, 0);
	assert_int_equal(tls_engine_peer_check_host(p.s, "127.0.0.1"),
			 KV_EPERM);
	assert_non_null(strstr(tls_engine_errmsg(p.s), "not verified"));
	pair_close(&p);
}

static void test_tls_server_name_checked(void **state)
{
	struct pair p;
	(void)state;
	pair_open(&p, false, NULL, NULL, NULL, "10.9.8.7");
	assert_int_equal(p.rc_c, KV_EPERM);
	assert_non_null(strstr(tls_engine_errmsg(p.c), "mismatch"));
	pair_close(&p);

	pair_open(&p, false, NULL, NULL, NULL, "other.example");
	assert_int_equal(p.rc_c, KV_EPERM);
	pair_close(&p);

	pair_open(&p, false, NULL, NULL, NULL, "localhost");
	assert_int_equal(p.rc_c, 0);
	pair_close(&p);
}

static void test_tls_garbage_input(void **state)
{
	struct tls_ctx *sctx = server_ctx(false, NULL);
	struct tls_engine *s;
	static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	char junk[512];
	(void)state;

	assert_int_equal(tls_engine_new(sctx, NULL, &s), 0);
	assert_int_equal(tls_engine_feed(s, http, sizeof(http) - 1), 0);
	assert_int_equal(tls_engine_handshake(s), KV_EPROTO);
	assert_non_null(strstr(tls_engine_errmsg(s), "http request"));
	/* Sticky. */
	assert_int_equal(tls_engine_handshake(s), KV_EPROTO);
	tls_engine_free(s);

	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (char)(i * 131 + 7);
	assert_int_equal(tls_engine_new(sctx, NULL, &s), 0);
	assert_int_equal(tls_engine_feed(s, junk, sizeof(junk)), 0);
	assert_int_equal(tls_engine_handshake(s), KV_EPROTO);
	assert_true(strlen(tls_engine_errmsg(s)) > 0);
	tls_engine_free(s);
	tls_ctx_free(sctx);
}

static void test_tls_ctx_file_errors(void **state)
{
	struct tls_ctx *ctx = NULL;
	char err[512];
	struct tls_config c = {
		.cert_file = pki_path("missing.crt"),
		.key_file = pki_path("server.key"),
	};
	(void)state;

	assert_int_equal(tls_ctx_new_server(&c, &ctx, err, sizeof(err)),
			 KV_ENOTFOUND);
	assert_non_null(strstr(err, "missing.crt"));
	assert_null(ctx);

	c.cert_file = pki_path("server.crt");
	c.key_file = pki_path("client.key");
	assert_int_equal(tls_ctx_new_server(&c, &ctx, err, sizeof(err)),
			 KV_EINVAL);
	assert_non_null(strstr(err, "does not match"));
	assert_non_null(strstr(err, "client.key"));

	c.key_file = pki_path("bad.pem");
	assert_int_equal(tls_ctx_new_server(&c, &ctx, err, sizeof(err)),
			 KV_EINVAL);
	assert_non_null(strstr(err, "bad.pem"));

	c.cert_file = pki_path("bad.pem");
	c.key_file = pki_path("server.key");
	assert_int_equal(tls_ctx_new_server(&c, &ctx, err, sizeof(err)),
			 KV_EINVAL);
	assert_non_null(strstr(err, "bad.pem"));

	if (geteuid() != 0) { /* root reads mode-000 files anyway */
		c.cert_file = pki_path("server.crt");
		c.key_file = pki_path("unreadable.key");
		assert_int_equal(tls_ctx_new_server(&c, &ctx, err,
						    sizeof(err)),
				 KV_EPERM);
		assert_non_null(strstr(err, "unreadable.key"));
	}

	c.cert_file = pki_path("server.crt");
	c.key_file = pki_path("server.key");
	c.trusted_ca_file = pki_path("nope-ca.crt");
	c.client_cert_auth = true;
	assert_int_equal(tls_ctx_new_server(&c, &ctx, err, sizeof(err)),
			 KV_ENOTFOUND);
	assert_non_null(strstr(err, "nope-ca.crt"));

	c.trusted_ca_file = NULL;
	assert_int_equal(tls_ctx_new_server(&c, &ctx, err, sizeof(err)),
			 KV_EINVAL);

	c.client_cert_auth = false;
	c.key_file = NULL;
	assert_int_equal(tls_ctx_new_server(&c, &ctx, err, sizeof(err)),
			 KV_EINVAL);

	c.key_file = pki_path("server.key");
	c.alpn = "h2,,http/1.1";
	assert_int_equal(tls_ctx_new_server(&c, &ctx, err, sizeof(err)),
			 KV_EINVAL);
}

/* ---- URLs -------------------------------------------------------------- */

static void test_url_parse(void **state)
{
	struct net_url u;
	struct net_url *v;
	size_t n;
	(void)state;

	assert_int_equal(net_url_parse("https://127.0.0.1:2379", &u), 0);
	assert_true(u.tls);
	assert_string_equal(u.host, "127.0.0.1");
	assert_int_equal(u.port, 2379);
	assert_int_equal(net_url_parse("http://[::1]:23/", &u), 0);
	assert_false(u.tls);
	assert_string_equal(u.host, "::1");
	assert_int_equal(u.port, 23);
	assert_int_equal(net_url_parse("unix://x:1", &u), KV_EINVAL);
	assert_int_equal(net_url_parse("http://host", &u), KV_EINVAL);
	assert_int_equal(net_url_parse("http://host:99999", &u), KV_EINVAL);
	assert_int_equal(net_url_parse("http://host:80/path", &u), KV_EINVAL);
	assert_int_equal(net_url_parse("http://:80", &u), KV_EINVAL);

	assert_int_equal(net_url_list_parse(
			 "https://a:1,http://127.0.0.1:2,https://[::1]:3", &v,
			 &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(v[0].host, "a");
	assert_int_equal(v[1].port, 2);
	assert_false(v[1].tls);
	assert_string_equal(v[2].host, "::1");
	free(v);
	assert_int_equal(net_url_list_parse("", &v, &n), KV_EINVAL);
	assert_int_equal(net_url_list_parse("https://a:1,", &v, &n),
			 KV_EINVAL);
	assert_int_equal(net_url_list_parse("https://a:1,,https://b:2", &v,
					    &n), KV_EINVAL);
}

/* ---- HTTP/1.1 over an in-memory transport ------------------------------ */

struct fake {
	struct kv_buf out;
	bool closed, paused, writable;
	int pause_calls;
	/* handler side */
	bool async;
	struct http_request *held[32];
	int nheld;
	int aborted;
	int writable_calls;
};

static int fake_write(void *io, const void *p, size_t n)
{
	struct fake *f = io;
	if (f->closed)
		return KV_ECLOSED;
	return kv_buf_append(&f->out, p, n);
}

static bool fake_writable(void *io)
{
	return ((struct fake *)io)->writable;
}

static void fake_pause(void *io, bool pause)
{
	struct fake *f = io;
	f->paused = pause;
	f->pause_calls++;
}

static void fake_close(void *io)
{
	((struct fake *)io)->closed = true;
}

static const struct http_io fake_io = {
	.write = fake_write,
	.writable = fake_writable,
	.pause_read = fake_pause,
	.close = fake_close,
};

/* Answers "<method> <target> <nheaders> <body>". */
static void answer(struct http_request *req)
{
	struct kv_buf b = KV_BUF_INIT;
	static const struct http_header h[] = { { "X-Test", "1" } };
	const char *te = http_request_header(req, "x-tag");
	assert_int_equal(kv_buf_printf(&b, "%s %s %zu %s ", req->method,
				       req->target, req->nheaders,
				       te ? te : "-"), 0);
	assert_int_equal(kv_buf_append(&b, req->body, req->body_len), 0);
	assert_int_equal(http_respond(req, 200, h, 1, b.base, b.len), 0);
	kv_buf_free(&b);
}

static void on_abort(struct http_request *req)
{
	struct fake *f = req->user;
	f->aborted++;
}

static void on_req(struct http_request *req, void *data)
{
	struct fake *f = data;
	req->user = f;
	req->on_abort = on_abort;
	if (f->async) {
		assert_true(f->nheld < 32);
		f->held[f->nheld++] = req;
		return;
	}
	answer(req);
}

static struct http_session *session(struct fake *f,
				    const struct http_config *cfg)
{
	struct http_session *s;
	memset(f, 0, sizeof(*f));
	f->writable = true;
	assert_int_equal(http_session_new(cfg, &fake_io, f, on_req, f, &s),
			 0);
	return s;
}

static void feed_str(struct http_session *s, const char *str)
{
	http_session_feed(s, str, strlen(str));
}

static const char *out_str(struct fake *f)
{
	assert_int_equal(kv_buf_putc(&f->out, '\0'), 0);
	f->out.len--;
	return (const char *)f->out.base;
}

static int count(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

static void test_http_simple(void **state)
{
	struct fake f;
	struct http_session *s = session(&f, NULL);
	(void)state;

	feed_str(s, "GET /hello?x=1 HTTP/1.1\r\nHost: a\r\nX-Tag: t1\r\n\r\n");
	assert_string_equal(out_str(&f),
			    "HTTP/1.1 200 OK\r\nX-Test: 1\r\n"
			    "Content-Length: 20\r\n\r\n"
			    "GET /hello?x=1 2 t1 ");
	assert_false(f.closed);
	http_session_free(s);
	kv_buf_free(&f.out);
}

static const char pipelined[] =
	"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
	"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
	"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
	"X-Tag: chunky\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
	"HEAD /d HTTP/1.1\r\nHost: h\r\n\r\n"
	"GET /e HTTP/1.1\r\nHost: h\r\nX-Tag: last\r\n\r\n";

static void test_http_pipelined_in_order(void **state)
{
	struct fake f;
	struct http_session *s = session(&f, NULL);
	const char *o;
	(void)state;

	f.async = true;
	feed_str(s, pipelined);
	assert_int_equal(f.nheld, 5);
	assert_int_equal(f.out.len, 0);
	/* Answer in reverse: nothing may go out before /a is answered. */
	for (int i = 4; i >= 1; i--)
		answer(f.held[i]);
	assert_int_equal(f.out.len, 0);
	answer(f.held[0]);
	o = out_str(&f);
	const char *a = strstr(o, "GET /a 1 -");
	const char *b = strstr(o, "POST /b 2 - hello");
	const char *c = strstr(o, "POST /c 3 chunky abcde");
	const char *e = strstr(o, "GET /e 2 last");
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(c);
	assert_non_null(e);
	assert_true(a < b && b < c && c < e);
	/* HEAD: headers only, with the body's length. */
	assert_int_equal(count(o, "HTTP/1.1 200 OK"), 5);
	assert_null(strstr(o, "HEAD /d"));
	assert_false(f.closed);
	http_session_free(s);
	kv_buf_free(&f.out);
}

/* A client that pipelines without reading: while the output is over the
 * limit, buffered requests wait instead of being answered into memory. */
static void test_http_no_dispatch_while_unwritable(void **state)
{
	struct fake f;
	struct http_session *s = session(&f, NULL);
	(void)state;

	f.async = true;
	f.writable = false;
	feed_str(s, "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n");
	assert_int_equal(f.nheld, 0);
	f.writable = true;
	http_session_writable(s);
	assert_int_equal(f.nheld, 2);
	answer(f.held[0]);
	answer(f.held[1]);
	assert_int_equal(count(out_str(&f), "HTTP/1.1 200"), 2);
	http_session_free(s);
	kv_buf_free(&f.out);
}

/* EOF while requests wait for the output to drain: they are still
 * answered, in order, and only then is the connection closed. */
static void test_http_end_with_held_requests(void **state)
{
	struct fake f;
	struct http_session *s = session(&f, NULL);
	(void)state;

	f.writable = false;
	feed_str(s, "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n");
	http_session_end(s);
	assert_false(f.closed);
	assert_true(http_session_busy(s)); /* the idle timeout must wait */
	f.writable = true;
	http_session_writable(s);
	const char *o = out_str(&f);
	assert_int_equal(count(o, "HTTP/1.1 200"), 2);
	assert_true(strstr(o, "GET /1") < strstr(o, "GET /2"));
	assert_true(f.closed);
	http_session_free(s);
	kv_buf_free(&f.out);
}

/* The same bytes split at every boundary give the same answers. */
static void test_http_split_every_byte(void **state)
{
	struct fake f;
	struct http_session *s = session(&f, NULL);
	size_t len = strlen(pipelined);
	char *expect;
	(void)state;

	feed_str(s, pipelined);
	expect = strdup(out_str(&f));
	http_session_free(s);
	kv_buf_free(&f.out);

	for (size_t i = 0; i <= len; i++) {
		for (size_t j = i; j <= len; j += 7) {
			s = session(&f, NULL);
			http_session_feed(s, pipelined, i);
			http_session_feed(s, pipelined + i, j - i);
			http_session_feed(s, pipelined + j, len - j);
			assert_string_equal(out_str(&f), expect);
			http_session_free(s);
			kv_buf_free(&f.out);
		}
	}
	/* one byte at a time */
	s = session(&f, NULL);
	for (size_t i = 0; i < len; i++)
		http_session_feed(s, pipelined + i, 1);
	assert_string_equal(out_str(&f), expect);
	http_session_free(s);
	kv_buf_free(&f.out);
	free(expect);
}

/* More requests than the pipeline limit: reading pauses, then resumes. */
static void test_http_pipeline_limit(void **state)
{
	struct http_config cfg = { .max_pipeline = 2 };
	struct fake f;
	struct http_session *s = session(&f, &cfg);
	(void)state;

	f.async = true;
	feed_str(s, "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"
		    "GET /3 HTTP/1.1\r\n\r\n");
	assert_int_equal(f.nheld, 2);
	assert_true(f.paused);
	answer(f.held[0]);
	assert_int_equal(f.nheld, 3); /* /3 parsed from held input */
	answer(f.held[1]);
	answer(f.held[2]);
	assert_false(f.paused);
	assert_int_equal(count(out_str(&f), "HTTP/1.1 200"), 3);
	assert_true(strstr(out_str(&f), "GET /2") < strstr(out_str(&f),
							  "GET /3"));
	http_session_free(s);
	kv_buf_free(&f.out);
}

static void test_http_header_too_large(void **state)
{
	struct http_config cfg = { .max_header_bytes = 256 };
	struct fake f;
	struct http_session *s = session(&f, &cfg);
	char big[600];
	(void)state;

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	feed_str(s, "GET /ok HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\nX-Big: ");
	feed_str(s, big);
	feed_str(s, "\r\n\r\n");
	const char *o = out_str(&f);
	assert_non_null(strstr(o, "GET /ok"));
	assert_non_null(strstr(o, "HTTP/1.1 431 Request Header Fields Too Large"));
	assert_true(strstr(o, "GET /ok") < strstr(o, "431"));
	assert_non_null(strstr(o, "Connection: close"));
	assert_true(f.closed);
	http_session_free(s);
	kv_buf_free(&f.out);

	/* A long URL counts too. */
	s = session(&f, &cfg);
	feed_str(s, "GET /");
	feed_str(s, big);
	assert_non_null(strstr(out_str(&f), " 431 "));
	assert_true(f.closed);
	http_session_free(s);
	kv_buf_free(&f.out);
}

static void test_http_body_too_large(void **state)
{
	struct http_config cfg = { .max_body_bytes = 10 };
	struct fake f;
	struct http_session *s = session(&f, &cfg);
	(void)state;

	feed_str(s, "POST /ok HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789");
	feed_str(s, "POST /x HTTP/1.1\r\nContent-Length: 11\r\n\r\n");
	const char *o = out_str(&f);
	assert_non_null(strstr(o, "POST /ok 1 - 0123456789"));
	assert_non_null(strstr(o, "HTTP/1.1 413 Payload Too Large"));
	assert_true(f.closed);
	http_session_free(s);
	kv_buf_free(&f.out);

	/* chunked bodies are counted as they arrive */
	s = session(&f, &cfg);
	feed_str(s, "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
		    "8\r\n01234567\r\n");
	assert_int_equal(f.out.len, 0);
	feed_str(s, "8\r\n01234567\r\n0\r\n\r\n");
	assert_non_null(strstr(out_str(&f), " 413 "));
	assert_true(f.closed);
	http_session_free(s);
	kv_buf_free(&f.out);
}

static void test_http_malformed(void **state)
{
	static const char *bad[] = {
		"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
		"FOO BAR BAZ\r\n\r\n",
		"GET / HTTP/9.9\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
	};
	(void)state;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct fake f;
		struct http_session *s = session(&f, NULL);
		feed_str(s, bad[i]);
		assert_non_null(strstr(out_str(&f), "HTTP/1.1 400 Bad Request"));
		assert_true(f.closed);
		/* later input is ignored */
		feed_str(s, "GET / HTTP/1.1\r\n\r\n");
		assert_int_equal(count(out_str(&f), "HTTP/1.1"), 1);
		http_session_free(s);
		kv_buf_free(&f.out);
	}
}

static void test_http_connection_close_and_10(void **state)
{
	struct fake f;
	struct http_session *s = session(&f, NULL);
	(void)state;

	feed_str(s, "GET /a HTTP/1.1\r\nConnection: close\r\n\r\n"
		    "GET /b HTTP/1.1\r\n\r\n");
	assert_non_null(strstr(out_str(&f), "Connection: close"));
	assert_null(strstr(out_str(&f), "GET /b"));
	assert_true(f.closed);
	http_session_free(s);
	kv_buf_free(&f.out);

	s = session(&f, NULL);
	feed_str(s, "GET /a HTTP/1.0\r\n\r\n");
	assert_non_null(strstr(out_str(&f), "Connection: close"));
	assert_true(f.closed);
	http_session_free(s);
	kv_buf_free(&f.out);

	s = session(&f, NULL);
	feed_str(s, "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
	assert_non_null(strstr(out_str(&f), "Connection: keep-alive"));
	assert_false(f.closed);
	http_session_free(s);
	kv_buf_free(&f.out);
}

/* End of input: queued answers still go out, then the session closes. */
static void test_http_end_after_requests(void **state)
{
	struct fake f;
	struct http_session *s = session(&f, NULL);
	(void)state;

	f.async = true;
	feed_str(s, "GET /a HTTP/1.1\r\n\r\n");
	assert_true(http_session_busy(s));
	http_session_end(s);
	assert_false(f.closed);
	answer(f.held[0]);
	assert_non_null(strstr(out_str(&f), "GET /a"));
	assert_true(f.closed);
	http_session_free(s);
	kv_buf_free(&f.out);

	s = session(&f, NULL);
	http_session_end(s);
	assert_true(f.closed);
	http_session_free(s);
	kv_buf_free(&f.out);
}

/* abort_on_eof (kvd's setting, as Go's server): a client that hangs up
 * while its request waits cancels it; input stays read while the pipeline
 * is full, and bytes of a next request still keep the old behaviour. */
static void test_http_abort_on_eof(void **state)
{
	struct fake f;
	struct http_config cfg = { 0 };
	(void)state;

	cfg.max_pipeline = 1;
	cfg.abort_on_eof = true;
	struct http_session *s = session(&f, &cfg);
	f.async = true;
	feed_str(s, "POST /v3/lock/lock HTTP/1.1\r\nContent-Length: 2\r\n"
		    "\r\n{}");
	assert_int_equal(f.nheld, 1);
	assert_false(f.paused); /* still reading, to see the hang-up */
	http_session_end(s);
	assert_true(f.closed);
	http_session_free(s); /* what the transport does after close */
	assert_int_equal(f.aborted, 1);
	kv_buf_free(&f.out);

	/* a pipelined request behind it: reading pauses, EOF answers both */
	s = session(&f, &cfg);
	f.async = true;
	feed_str(s, "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
	assert_int_equal(f.nheld, 1);
	assert_true(f.paused);
	http_session_end(s);
	assert_false(f.closed);
	answer(f.held[0]);
	assert_int_equal(f.nheld, 2);
	answer(f.held[1]);
	assert_true(f.closed);
	assert_int_equal(f.aborted, 0);
	assert_int_equal(count(out_str(&f), "HTTP/1.1 200"), 2);
	http_session_free(s);
	kv_buf_free(&f.out);
}

static void on_stream_writable(struct http_request *req)
{
	struct fake *f = req->user;
	f->writable_calls++;
}

static void test_http_stream(void **state)
{
	struct fake f;
	struct http_session *s = session(&f, NULL);
	struct http_request *r0, *r1;
	(void)state;

	f.async = true;
	feed_str(s, "GET /s HTTP/1.1\r\n\r\nGET /t HTTP/1.1\r\n\r\n");
	r0 = f.held[0];
	r1 = f.held[1];
	r0->on_writable = on_stream_writable;
	/* The second answer completes first and is held back. */
	answer(r1);
	assert_int_equal(http_stream_begin(r0, 200, NULL, 0), 0);
	assert_int_equal(http_stream_write(r0, "hello", 5), 0);
	f.writable = false;
	assert_int_equal(http_stream_write(r0, "more", 4), KV_EAGAIN);
	f.writable = true;
	http_session_writable(s);
	assert_int_equal(f.writable_calls, 1);
	assert_int_equal(http_stream_write(r0, "world!", 6), 0);
	assert_null(strstr(out_str(&f), "GET /t"));
	/* answering twice is refused */
	assert_int_equal(http_respond(r0, 200, NULL, 0, NULL, 0), KV_EINVAL);
	assert_int_equal(http_stream_end(r0), 0);
	assert_string_equal(out_str(&f),
			    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
			    "5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n"
			    "HTTP/1.1 200 OK\r\nX-Test: 1\r\n"
			    "Content-Length: 11\r\n\r\nGET /t 0 - ");
	http_session_free(s);
	kv_buf_free(&f.out);

	/* HTTP/1.0 streams are delimited by the close. */
	s = session(&f, NULL);
	f.async = true;
	feed_str(s, "GET /s HTTP/1.0\r\n\r\n");
	r0 = f.held[0];
	assert_int_equal(http_stream_begin(r0, 200, NULL, 0), 0);
	assert_int_equal(http_stream_write(r0, "raw", 3), 0);
	assert_int_equal(http_stream_end(r0), 0);
	assert_string_equal(out_str(&f),
			    "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nraw");
	assert_true(f.closed);
	http_session_free(s);
	kv_buf_free(&f.out);
}

static void test_http_abort_pending(void **state)
{
	struct fake f;
	struct http_session *s = session(&f, NULL);
	(void)state;

	f.async = true;
	feed_str(s, "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"
		    "GET /c HTTP/1.1\r\n");
	assert_int_equal(f.nheld, 2);
	assert_int_equal(http_stream_begin(f.held[0], 200, NULL, 0), 0);
	http_session_free(s);
	assert_int_equal(f.aborted, 2);
	kv_buf_free(&f.out);
}

/* No protocol upgrades: the request is answered, then the session closes
 * and later bytes are ignored. */
static void test_http_upgrade_refused(void **state)
{
	static const char *reqs[] = {
		"GET /u HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
		"GET /x HTTP/1.1\r\n\r\n",
		"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n"
		"GET /x HTTP/1.1\r\n\r\n",
	};
	(void)state;
	for (size_t i = 0; i < 2; i++) {
		struct fake f;
		struct http_session *s = session(&f, NULL);
		feed_str(s, reqs[i]);
		assert_int_equal(count(out_str(&f), "HTTP/1.1 200"), 1);
		assert_non_null(strstr(out_str(&f), "Connection: close"));
		assert_null(strstr(out_str(&f), "/x"));
		assert_true(f.closed);
		assert_false(http_session_busy(s));
		http_session_free(s);
		kv_buf_free(&f.out);
	}
}

/* Mutated pipelines in random pieces: whatever happens, no crash, no
 * leak, and every byte written is a whole response or a 100 Continue. */
static void test_http_random_mutations(void **state)
{
	size_t len = strlen(pipelined);
	char *buf = malloc(len);
	unsigned seed = 12345;
	(void)state;

	assert_non_null(buf);
	for (int iter = 0; iter < 3000; iter++) {
		struct fake f;
		struct http_session *s = session(&f, NULL);
		memcpy(buf, pipelined, len);
		int flips = 1 + (int)(rand_r(&seed) % 4);
		for (int k = 0; k < flips; k++)
			buf[rand_r(&seed) % len] = (char)rand_r(&seed);
		size_t off = 0;
		while (off < len) {
			size_t n = 1 + rand_r(&seed) % 40;
			if (n > len - off)
				n = len - off;
			http_session_feed(s, buf + off, n);
			off += n;
		}
		if (rand_r(&seed) % 2)
			http_session_end(s);
		if (f.out.len > 0)
			assert_memory_equal(f.out.base, "HTTP/1.1 ", 9);
		http_session_free(s);
		kv_buf_free(&f.out);
	}
	free(buf);
}

/* Random bytes into a server engine: an error, never a crash. */
static void test_tls_random_input(void **state)
{
	struct tls_ctx *sctx = server_ctx(true, NULL);
	unsigned seed = 99;
	char junk[2048];
	(void)state;

	for (int iter = 0; iter < 300; iter++) {
		struct tls_engine *e;
		size_t n = 1 + rand_r(&seed) % sizeof(junk);
		for (size_t i = 0; i < n; i++)
			junk[i] = (char)rand_r(&seed);
		if (iter % 2)
			junk[0] = 0x16; /* looks like a handshake record */
		assert_int_equal(tls_engine_new(sctx, NULL, &e), 0);
		assert_int_equal(tls_engine_feed(e, junk, n), 0);
		int rc = tls_engine_handshake(e);
		assert_true(rc == KV_EAGAIN || rc == KV_EPROTO ||
			    rc == KV_EPERM);
		tls_engine_free(e);
	}
	tls_ctx_free(sctx);
}

static void test_http_expect_continue(void **state)
{
	struct fake f;
	struct http_session *s = session(&f, NULL);
	(void)state;

	feed_str(s, "POST /e HTTP/1.1\r\nExpect: 100-continue\r\n"
		    "Content-Length: 2\r\n\r\n");
	assert_string_equal(out_str(&f), "HTTP/1.1 100 Continue\r\n\r\n");
	feed_str(s, "hi");
	assert_non_null(strstr(out_str(&f), "POST /e 2 - hi"));
	http_session_free(s);
	kv_buf_free(&f.out);
}


/* ---- connections on a real loop (loopback sockets) ------------------- */

struct lb {
	uv_loop_t loop;
	uv_timer_t guard;
	struct net_server *srv;
	struct tls_ctx *sctx, *cctx;
	struct net_conn *client;
	struct kv_buf got;
	int connect_status;
	bool connected, client_closed, done, timed_out;
	const char *expect; /* shut down once got contains this */
};

static void lb_on_request(struct http_request *req, void *data)
{
	static const char hello[] = "hi there";
	(void)data;
	if (strcmp(req->method, "POST") == 0)
		http_respond(req, 200, NULL, 0, req->body, req->body_len);
	else
		http_respond(req, 200, NULL, 0, hello, sizeof(hello) - 1);
}

static void lb_on_ready(struct net_conn *c, const char *alpn, void *data)
{
	(void)alpn;
	http_attach(c, NULL, lb_on_request, data);
}

static void lb_on_done(void *data)
{
	struct lb *t = data;
	t->done = true;
	uv_close((uv_handle_t *)&t->guard, NULL);
}

static void lb_finish(struct lb *t)
{
	if (t->srv != NULL) {
		net_server_shutdown(t->srv, 1000, lb_on_done, t);
		t->srv = NULL;
	}
}

static void lb_client_data(void *data, const char *p, size_t n)
{
	struct lb *t = data;
	assert_int_equal(kv_buf_append(&t->got, p, n), 0);
	assert_int_equal(kv_buf_putc(&t->got, '\0'), 0);
	t->got.len--;
	if (t->expect != NULL && strstr((char *)t->got.base, t->expect))
		lb_finish(t);
}

static void lb_client_close(void *data)
{
	struct lb *t = data;
	t->client_closed = true;
	lb_finish(t);
}

static const struct net_conn_handler lb_client_handler = {
	.on_data = lb_client_data,
	.on_close = lb_client_close,
};

static void lb_on_connect(struct net_conn *c, int status, const char *alpn,
			  void *data)
{
	static const char reqs[] =
		"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
		"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd";
	struct lb *t = data;
	t->connect_status = status;
	if (status != 0) {
		assert_null(c);
		lb_finish(t);
		return;
	}
	t->connected = true;
	t->client = c;
	if (alpn != NULL)
		assert_string_equal(alpn, "http/1.1");
	net_conn_set_handler(c, &lb_client_handler, t);
	assert_int_equal(net_conn_write(c, reqs, sizeof(reqs) - 1), 0);
}

static void lb_on_guard(uv_timer_t *h)
{
	struct lb *t = h->data;
	t->timed_out = true;
	lb_finish(t);
}

/* Runs one client against a loopback server; returns after the loop has
 * closed every handle. */
static void loopback(struct lb *t, bool tls, const char *client_cert,
		     const char *peer_name, bool refuse_port)
{
	struct net_url url;
	char u[64];
	uint16_t port;

	memset(t, 0, sizeof(*t));
	kv_buf_init(&t->got);
	t->expect = "abcd";
	assert_int_equal(uv_loop_init(&t->loop), 0);
	uv_timer_init(&t->loop, &t->guard);
	t->guard.data = t;
	uv_timer_start(&t->guard, lb_on_guard, 5000, 0);
	assert_int_equal(net_server_new(&t->loop, NULL, lb_on_ready, t,
					&t->srv), 0);
	if (tls) {
		t->sctx = server_ctx(true, NULL);
		t->cctx = client_ctx(client_cert, "http/1.1");
	}
	assert_int_equal(net_url_parse(tls ? "https://127.0.0.1:0"
					   : "http://127.0.0.1:0", &url), 0);
	assert_int_equal(net_server_listen(t->srv, &url, t->sctx), 0);
	port = net_server_port(t->srv, 0);
	assert_true(port > 0);
	if (refuse_port) {
		/* a port that was free a moment ago: nobody listens */
		uv_tcp_t tmp;
		struct sockaddr_in a;
		struct sockaddr_storage ss;
		int len = sizeof(ss);
		uv_tcp_init(&t->loop, &tmp);
		uv_ip4_addr("127.0.0.1", 0, &a);
		uv_tcp_bind(&tmp, (struct sockaddr *)&a, 0);
		uv_tcp_getsockname(&tmp, (struct sockaddr *)&ss, &len);
		port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		uv_close((uv_handle_t *)&tmp, NULL);
	}
	snprintf(u, sizeof(u), "%s://127.0.0.1:%u", tls ? "https" : "http",
		 port);
	assert_int_equal(net_url_parse(u, &url), 0);
	assert_int_equal(net_server_connect(t->srv, &url, t->cctx, peer_name,
					    lb_on_connect, t), 0);
	uv_run(&t->loop, UV_RUN_DEFAULT);
	assert_true(t->done);
	assert_false(t->timed_out);
	assert_int_equal(uv_loop_close(&t->loop), 0);
	tls_ctx_free(t->sctx);
	tls_ctx_free(t->cctx);
}

static void test_conn_loopback_plain(void **state)
{
	struct lb t;
	(void)state;
	loopback(&t, false, NULL, NULL, false);
	assert_int_equal(t.connect_status, 0);
	assert_non_null(strstr((char *)t.got.base, "hi there"));
	assert_true(strstr((char *)t.got.base, "hi there") <
		    strstr((char *)t.got.base, "abcd"));
	assert_true(t.client_closed);
	kv_buf_free(&t.got);
}

static void test_conn_loopback_mtls(void **state)
{
	struct lb t;
	(void)state;
	loopback(&t, true, "client", NULL, false);
	assert_int_equal(t.connect_status, 0);
	assert_non_null(strstr((char *)t.got.base, "hi there"));
	assert_non_null(strstr((char *)t.got.base, "abcd"));
	kv_buf_free(&t.got);
}

static void test_conn_loopback_refusals(void **state)
{
	struct lb t;
	(void)state;

	/* A rogue client cert: the server refuses it, no answer comes. */
	loopback(&t, true, "rogue", NULL, false);
	assert_int_equal(t.got.len, 0);
	assert_true(t.client_closed || t.connect_status != 0);
	kv_buf_free(&t.got);

	/* The server's cert does not name the address we asked for. */
	loopback(&t, true, "client", "10.1.2.3", false);
	assert_int_equal(t.connect_status, KV_EPERM);
	assert_false(t.connected);
	kv_buf_free(&t.got);

	/* Nobody listening. */
	loopback(&t, false, NULL, NULL, true);
	assert_int_equal(t.connect_status, KV_ECLOSED);
	kv_buf_free(&t.got);
}

int main(void)
{
	const struct CMUnitTest tls_tests[] = {
		cmocka_unit_test(test_tls_mtls_roundtrip),
		cmocka_unit_test(test_tls_early_write),
		cmocka_unit_test(test_tls_alpn_selection),
		cmocka_unit_test(test_tls_client_cert_missing),
		cmocka_unit_test(test_tls_client_cert_foreign),
		cmocka_unit_test(test_tls_server_name_checked),
		cmocka_unit_test(test_tls_peer_check_host),
		cmocka_unit_test(test_tls_garbage_input),
		cmocka_unit_test(test_tls_ctx_file_errors),
		cmocka_unit_test(test_tls_random_input),
		cmocka_unit_test(test_conn_loopback_plain),
		cmocka_unit_test(test_conn_loopback_mtls),
		cmocka_unit_test(test_conn_loopback_refusals),
	};
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_url_parse),
		cmocka_unit_test(test_http_simple),
		cmocka_unit_test(test_http_pipelined_in_order),
		cmocka_unit_test(test_http_no_dispatch_while_unwritable),
		cmocka_unit_test(test_http_end_with_held_requests),
		cmocka_unit_test(test_http_split_every_byte),
		cmocka_unit_test(test_http_pipeline_limit),
		cmocka_unit_test(test_http_header_too_large),
		cmocka_unit_test(test_http_body_too_large),
		cmocka_unit_test(test_http_malformed),
		cmocka_unit_test(test_http_connection_close_and_10),
		cmocka_unit_test(test_http_end_after_requests),
		cmocka_unit_test(test_http_stream),
		cmocka_unit_test(test_http_abort_pending),
		cmocka_unit_test(test_http_abort_on_eof),
		cmocka_unit_test(test_http_expect_continue),
		cmocka_unit_test(test_http_upgrade_refused),
		cmocka_unit_test(test_http_random_mutations),
	};
	/* A write to a peer that just closed must fail, not kill us. */
	signal(SIGPIPE, SIG_IGN);
	int fails = cmocka_run_group_tests_name("tls", tls_tests, make_pki,
						remove_pki);
	fails += cmocka_run_group_tests_name("http", tests, NULL, NULL);
	return fails ? 1 : 0;
}

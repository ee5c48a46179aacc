/* TCP listeners and connections on libuv, plaintext or TLS; see
 * net/conn.h. */
#include "net/conn.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "common/buf.h"
#include "common/log.h"
#include "kv/errors.h"
#include "net/tls.h"

#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

#define MAX_LISTENERS 16
#define IO_BUF_SIZE (64 * 1024)

struct net_listener {
	uv_tcp_t tcp;
	struct net_server *srv;
	struct tls_ctx *tls;
	uint16_t port;
	char url[300];
};

struct net_server {
	uv_loop_t *loop;
	struct net_server_config cfg;
	net_on_ready on_ready;
	void *data;
	struct net_listener *listeners[MAX_LISTENERS];
	size_t nlisteners;
	size_t listeners_open;
	struct net_conn *conns; /* doubly linked, open (not closing) */
	size_t nconns;
	struct net_conn *starved; /* out of read budget this wake-up */
	uv_check_t check;
	uv_idle_t idle;
	uv_timer_t grace;
	uint64_t tick;
	bool shutting, finishing;
	int handles_open;
	void (*on_done)(void *data);
	void *done_data;
	char rbuf[IO_BUF_SIZE]; /* socket reads; used within one callback */
	char pbuf[IO_BUF_SIZE]; /* decrypted plaintext */
};

struct net_conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_write_t wreq;
	uv_connect_t creq;
	struct net_server *srv;
	/* Outgoing connections: called once, when ready or failed. */
	net_on_connect on_connect;
	void *connect_data;
	int fail_rc;
	struct net_conn *prev, *next, *starved_next;
	/* The handler pointers: socket bytes in, protocol plaintext out. */
	void (*recv)(struct net_conn *c, const char *p, size_t n);
	int (*send)(struct net_conn *c, const void *p, size_t n);
	struct tls_engine *tls;
	const struct net_conn_handler *h;
	void *hdata;
	struct kv_buf out;      /* queued, not yet handed to libuv */
	struct kv_buf inflight; /* handed to libuv, write pending */
	unsigned refs;
	int handles_open;
	bool writing, reading, ready, closing, close_after_flush, eof;
	bool app_paused, out_paused, budget_paused, ended;
	bool accepted; /* from a listener (not net_server_connect) */
	uint64_t tick, last_active, bytes_in;
	size_t budget_used;
	char peer[272]; /* "ip:port" or "host:port" */
	char alpn[32];
	char peer_cn[128];
};

static void flush(struct net_conn *c);
static void tune_socket(struct net_conn *c);
static void do_close(struct net_conn *c);
static void maybe_finish_shutdown(struct net_server *s);
static int url_addr(const struct net_url *url, struct sockaddr_storage *ss);
static int from_uv(int rc);
static void on_conn_timer(uv_timer_t *t);

/* ---- reading ----------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct net_conn *c = h->data;
	(void)suggested;
	buf->base = c->srv->rbuf;
	buf->len = sizeof(c->srv->rbuf);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void on_idle(uv_idle_t *h);

static void update_reading(struct net_conn *c)
{
	bool want = !c->closing && !c->close_after_flush && !c->eof &&
		    !c->app_paused && !c->out_paused && !c->budget_paused;
	if (want == c->reading)
		return;
	if (want) {
		int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc,
				       on_read);
		if (rc != 0) {
			net_conn_abort(c, uv_strerror(rc));
			return;
		}
	} else {
		uv_read_stop((uv_stream_t *)&c->tcp);
	}
	c->reading = want;
}

/* Input ended (EOF, TLS close_notify or shutdown): let the protocol
 * finish its in-flight work. */
static void end_input(struct net_conn *c, const char *why)
{
	if (c->ended || c->closing)
		return;
	c->ended = true;
	c->eof = true;
	update_reading(c);
	if (c->ready && c->h != NULL && c->h->on_end != NULL)
		c->h->on_end(c->hdata);
	else
		net_conn_close(c, why);
}

static void conn_fail(struct net_conn *c, int rc, const char *what,
		      const char *msg)
{
	c->fail_rc = rc;
	KV_WARN("net", "connection closed", "peer=%s reason=\"%s: %s\"",
		c->peer, what, msg);
	/* Graceful, so a pending TLS alert still reaches the peer. */
	net_conn_close(c, NULL);
}

static void plain_recv(struct net_conn *c, const char *p, size_t n)
{
	if (c->h != NULL && c->h->on_data != NULL)
		c->h->on_data(c->hdata, p, n);
}

static void tls_flush(struct net_conn *c)
{
	if (tls_engine_drain_buf(c->tls, &c->out) != 0) {
		net_conn_abort(c, "out of memory");
		return;
	}
	flush(c);
}

static void become_ready(struct net_conn *c)
{
	const char *alpn = NULL;
	c->ready = true;
	if (c->tls != NULL) {
		alpn = tls_engine_alpn(c->tls);
		if (alpn != NULL)
			snprintf(c->alpn, sizeof(c->alpn), "%s", alpn);
		if (tls_engine_peer_cn(c->tls) != NULL)
			snprintf(c->peer_cn, sizeof(c->peer_cn), "%s",
				 tls_engine_peer_cn(c->tls));
		KV_DEBUG("net", "TLS handshake done",
			 "peer=%s version=%s alpn=%s cn=\"%s\"", c->peer,
			 tls_engine_version(c->tls), alpn ? alpn : "-",
			 c->peer_cn);
	}
	if (c->on_connect != NULL) {
		net_on_connect cb = c->on_connect;
		c->on_connect = NULL;
		cb(c, 0, c->alpn[0] ? c->alpn : NULL, c->connect_data);
	} else {
		c->srv->on_ready(c, c->alpn[0] ? c->alpn : NULL,
				 c->srv->data);
	}
	if (c->h == NULL && !c->closing && !c->close_after_flush)
		net_conn_close(c, "no protocol handler");
}

static void tls_recv(struct net_conn *c, const char *p, size_t n)
{
	int rc;
	size_t got;

	if (tls_engine_feed(c->tls, p, n) != 0) {
		net_conn_abort(c, "out of memory");
		return;
	}
	if (!c->ready) {
		rc = tls_engine_handshake(c->tls);
		if (rc == KV_EAGAIN) {
			tls_flush(c);
			return;
		}
		if (rc != 0) {
			if (strstr(tls_engine_errmsg(c->tls), "http request")) {
				/* Plaintext HTTP to a TLS port: say so in
				 * plaintext, as etcd (Go's net/http) does. */
				static const char msg[] =
					"HTTP/1.0 400 Bad Request\r\n\r\n"
					"Client sent an HTTP request to an "
					"HTTPS server.\n";
				(void)kv_buf_append(&c->out, msg,
						    sizeof(msg) - 1);
			}
			tls_flush(c);
			if (c->accepted && c->srv->cfg.on_tls_error != NULL)
				c->srv->cfg.on_tls_error(
					c->peer, rc, tls_engine_errmsg(c->tls),
					c->srv->data);
			conn_fail(c, rc, "TLS handshake failed",
				  tls_engine_errmsg(c->tls));
			return;
		}
		become_ready(c);
	}
	while (!c->closing && !c->close_after_flush) {
		rc = tls_engine_read(c->tls, c->srv->pbuf,
				     sizeof(c->srv->pbuf), &got);
		if (rc == 0) {
			plain_recv(c, c->srv->pbuf, got);
			continue;
		}
		if (rc == KV_ECLOSED)
			end_input(c, "peer sent close_notify");
		else if (rc != KV_EAGAIN)
			conn_fail(c, rc, "TLS error",
				  tls_engine_errmsg(c->tls));
		break;
	}
	if (!c->closing)
		tls_flush(c);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct net_conn *c = container_of(st, struct net_conn, tcp);
	struct net_server *s = c->srv;

	if (nread == 0)
		return;
	if (nread < 0) {
		if (nread != UV_EOF) {
			net_conn_abort(c, uv_strerror((int)nread));
		} else if (!c->ready) {
			c->fail_rc = KV_ECLOSED;
			/* A bare connect-and-close is a port probe (health
			 * checks, load balancers): not worth a warning. */
			kv_log(c->bytes_in > 0 ? KV_LOG_WARN : KV_LOG_DEBUG,
			       "net", "connection closed",
			       "peer=%s reason=\"EOF during TLS handshake\"",
			       c->peer);
			net_conn_abort(c, NULL);
		} else {
			end_input(c, "peer closed");
		}
		return;
	}
	c->last_active = uv_now(s->loop);
	c->bytes_in += (uint64_t)nread;
	if (c->tick != s->tick) {
		c->tick = s->tick;
		c->budget_used = 0;
	}
	c->budget_used += (size_t)nread;
	net_conn_ref(c);
	c->recv(c, buf->base, (size_t)nread);
	if (!c->closing && c->budget_used >= s->cfg.read_budget &&
	    !c->budget_paused) {
		c->budget_paused = true;
		update_reading(c);
		c->starved_next = s->starved;
		s->starved = c;
		uv_idle_start(&s->idle, on_idle);
	}
	net_conn_unref(c);
}

/* ---- writing ----------------------------------------------------------- */

static void on_write(uv_write_t *req, int status)
{
	struct net_conn *c = container_of(req, struct net_conn, wreq);
	struct net_server *s = c->srv;

	c->writing = false;
	/* Idle connections keep at most one I/O buffer's worth. */
	if (c->inflight.cap > IO_BUF_SIZE)
		kv_buf_free(&c->inflight);
	else
		kv_buf_reset(&c->inflight);
	if (c->closing)
		return;
	if (status < 0) {
		net_conn_abort(c, uv_strerror(status));
		return;
	}
	c->last_active = uv_now(s->loop);
	flush(c);
	if (c->closing)
		return;
	if (c->close_after_flush && !c->writing && c->out.len == 0) {
		do_close(c);
		return;
	}
	if (c->out_paused &&
	    net_conn_pending(c) <= s->cfg.max_pending_out / 2) {
		c->out_paused = false;
		update_reading(c);
		if (c->h != NULL && c->h->on_writable != NULL)
			c->h->on_writable(c->hdata);
	}
}

static void flush(struct net_conn *c)
{
	struct kv_buf tmp;
	uv_buf_t b;
	int rc;

	if (c->writing || c->out.len == 0 || c->closing)
		return;
	tmp = c->inflight;
	c->inflight = c->out;
	c->out = tmp;
	b = uv_buf_init((char *)c->inflight.base, (unsigned)c->inflight.len);
	rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
	if (rc != 0) {
		net_conn_abort(c, uv_strerror(rc));
		return;
	}
	c->writing = true;
}

static int plain_send(struct net_conn *c, const void *p, size_t n)
{
	return kv_buf_append(&c->out, p, n);
}

static int tls_send(struct net_conn *c, const void *p, size_t n)
{
	const char *q = p;
	/* Record-sized steps, drained as we go, so the engine's memory BIO
	 * never grows to the size of a large answer. */
	while (n > 0) {
		size_t k = n < 16384 ? n : 16384;
		int rc = tls_engine_write(c->tls, q, k);
		if (rc == 0)
			rc = tls_engine_drain_buf(c->tls, &c->out);
		if (rc != 0)
			return rc;
		q += k;
		n -= k;
	}
	return 0;
}

int net_conn_write(struct net_conn *c, const void *p, size_t n)
{
	int rc;

	if (c->closing || c->close_after_flush)
		return KV_ECLOSED;
	if (n == 0)
		return 0;
	rc = c->send(c, p, n);
	if (rc != 0)
		return rc;
	if (!c->out_paused &&
	    net_conn_pending(c) > c->srv->cfg.max_pending_out) {
		c->out_paused = true;
		update_reading(c);
	}
	flush(c);
	return 0;
}

size_t net_conn_pending(const struct net_conn *c)
{
	return c->out.len + c->inflight.len;
}

bool net_conn_writable(const struct net_conn *c)
{
	return !c->closing && !c->close_after_flush && !c->out_paused;
}

void net_conn_pause_read(struct net_conn *c, bool pause)
{
	c->app_paused = pause;
	update_reading(c);
}

/* ---- closing ----------------------------------------------------------- */

static void on_handle_close(uv_handle_t *h)
{
	struct net_conn *c = h->data;
	if (--c->handles_open > 0)
		return;
	if (c->h != NULL && c->h->on_close != NULL)
		c->h->on_close(c->hdata);
	c->h = NULL;
	net_conn_unref(c);
}

static void unlink_starved(struct net_conn *c)
{
	struct net_conn **pp = &c->srv->starved;
	while (*pp != NULL) {
		if (*pp == c) {
			*pp = c->starved_next;
			break;
		}
		pp = &(*pp)->starved_next;
	}
}

static void do_close(struct net_conn *c)
{
	struct net_server *s = c->srv;

	if (c->closing)
		return;
	c->closing = true;
	if (c->reading)
		uv_read_stop((uv_stream_t *)&c->tcp);
	c->reading = false;
	if (c->budget_paused)
		unlink_starved(c);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	s->nconns--;
	uv_timer_stop(&c->timer);
	c->handles_open = 2;
	uv_close((uv_handle_t *)&c->timer, on_handle_close);
	uv_close((uv_handle_t *)&c->tcp, on_handle_close);
	if (c->on_connect != NULL) { /* an outgoing conn that never got ready */
		net_on_connect cb = c->on_connect;
		c->on_connect = NULL;
		cb(NULL, c->fail_rc ? c->fail_rc : KV_ECLOSED, NULL,
		   c->connect_data);
	}
	maybe_finish_shutdown(s);
}

void net_conn_close(struct net_conn *c, const char *reason)
{
	if (c->closing || c->close_after_flush)
		return;
	if (reason != NULL)
		KV_DEBUG("net", "closing connection", "peer=%s reason=\"%s\"",
			 c->peer, reason);
	c->close_after_flush = true;
	update_reading(c);
	if (c->tls != NULL && tls_engine_handshake_done(c->tls)) {
		tls_engine_shutdown(c->tls);
		(void)tls_engine_drain_buf(c->tls, &c->out);
	}
	flush(c);
	if (!c->closing && !c->writing && c->out.len == 0)
		do_close(c);
}

void net_conn_abort(struct net_conn *c, const char *reason)
{
	if (c->closing)
		return;
	if (reason != NULL)
		KV_WARN("net", "connection closed", "peer=%s reason=\"%s\"",
			c->peer, reason);
	do_close(c);
}

bool net_conn_closing(const struct net_conn *c)
{
	return c->closing || c->close_after_flush;
}

void net_conn_ref(struct net_conn *c)
{
	c->refs++;
}

void net_conn_unref(struct net_conn *c)
{
	if (--c->refs > 0)
		return;
	tls_engine_free(c->tls);
	kv_buf_free(&c->out);
	kv_buf_free(&c->inflight);
	free(c);
}

void net_conn_set_handler(struct net_conn *c,
			  const struct net_conn_handler *h, void *data)
{
	c->h = h;
	c->hdata = data;
}

const char *net_conn_peer(const struct net_conn *c)
{
	return c->peer;
}

const char *net_conn_alpn(const struct net_conn *c)
{
	return c->alpn[0] ? c->alpn : NULL;
}

const char *net_conn_peer_cn(const struct net_conn *c)
{
	return c->peer_cn[0] ? c->peer_cn : NULL;
}

int net_conn_peer_check_host(struct net_conn *c, const char *host,
			     char *why, size_t whylen)
{
	int rc;

	if (c->tls == NULL || !tls_engine_handshake_done(c->tls)) {
		if (why != NULL && whylen > 0)
			snprintf(why, whylen, "not a TLS connection");
		return KV_EINVAL;
	}
	rc = tls_engine_peer_check_host(c->tls, host);
	if (rc != 0 && why != NULL && whylen > 0)
		snprintf(why, whylen, "%s", tls_engine_errmsg(c->tls));
	return rc;
}

static void on_conn_timer(uv_timer_t *t)
{
	struct net_conn *c = t->data;
	uint64_t now = uv_now(c->srv->loop);
	uint64_t idle = c->srv->cfg.idle_timeout_ms;

	if (now - c->last_active >= idle && c->ready && c->h != NULL &&
	    c->h->busy != NULL && c->h->busy(c->hdata))
		c->last_active = now; /* quiet but working: not idle */
	if (now - c->last_active >= idle) {
		KV_INFO("net", "idle timeout", "peer=%s", c->peer);
		c->fail_rc = KV_ETIMEOUT;
		net_conn_abort(c, NULL);
		return;
	}
	uv_timer_start(t, on_conn_timer, idle - (now - c->last_active), 0);
}

/* ---- accepting --------------------------------------------------------- */

static void format_peer(struct net_conn *c)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	char ip[64] = "?";
	int port = 0;

	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *a = (struct sockaddr_in *)&ss;
			uv_ip4_name(a, ip, sizeof(ip));
			port = ntohs(a->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
			uv_ip6_name(a, ip, sizeof(ip));
			port = ntohs(a->sin6_port);
		}
	}
	snprintf(c->peer, sizeof(c->peer), "%s:%d", ip, port);
}

/* TCP_NODELAY always; keepalive and user timeout when configured. */
static void tune_socket(struct net_conn *c)
{
	const struct net_server_config *cfg = &c->srv->cfg;

	uv_tcp_nodelay(&c->tcp, 1);
	if (cfg->keepalive_s > 0)
		uv_tcp_keepalive(&c->tcp, 1, cfg->keepalive_s);
#ifdef TCP_USER_TIMEOUT
	if (cfg->user_timeout_ms > 0) {
		uv_os_fd_t fd;
		unsigned ms = cfg->user_timeout_ms;
		if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
			(void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT,
					 &ms, sizeof(ms));
	}
#endif
}

/* A linked connection with both handles initialised, so every failure
 * can go through do_close. */
static struct net_conn *conn_new(struct net_server *s)
{
	struct net_conn *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->srv = s;
	c->refs = 1;
	kv_buf_init(&c->out);
	kv_buf_init(&c->inflight);
	uv_tcp_init(s->loop, &c->tcp);
	c->tcp.data = c;
	uv_timer_init(s->loop, &c->timer);
	c->timer.data = c;
	c->next = s->conns;
	if (s->conns != NULL)
		s->conns->prev = c;
	s->conns = c;
	s->nconns++;
	return c;
}

static void on_reject_close(uv_handle_t *h)
{
	free(h);
}

static void on_connection(uv_stream_t *ls, int status)
{
	struct net_listener *l = container_of(ls, struct net_listener, tcp);
	struct net_server *s = l->srv;
	struct net_conn *c;
	int rc;

	if (status < 0) {
		KV_WARN("net", "accept failed", "url=%s err=\"%s\"", l->url,
			uv_strerror(status));
		return;
	}
	c = conn_new(s);
	if (c == NULL) {
		uv_tcp_t *t = malloc(sizeof(*t));
		if (t == NULL)
			return;
		uv_tcp_init(s->loop, t);
		if (uv_accept(ls, (uv_stream_t *)t) == 0)
			KV_WARN("net", "connection refused", "reason=\"%s\"",
				"out of memory");
		uv_close((uv_handle_t *)t, on_reject_close);
		return;
	}
	if ((rc = uv_accept(ls, (uv_stream_t *)&c->tcp)) != 0) {
		KV_WARN("net", "accept failed", "url=%s err=\"%s\"", l->url,
			uv_strerror(rc));
		do_close(c);
		return;
	}
	c->accepted = true;
	tune_socket(c);
	format_peer(c);
	if (l->tls != NULL) {
		if (tls_engine_new(l->tls, NULL, &c->tls) != 0) {
			net_conn_abort(c, "out of memory");
			return;
		}
		c->recv = tls_recv;
		c->send = tls_send;
	} else {
		c->recv = plain_recv;
		c->send = plain_send;
	}
	c->last_active = uv_now(s->loop);
	uv_timer_start(&c->timer, on_conn_timer, s->cfg.idle_timeout_ms, 0);
	update_reading(c);
	if (c->tls == NULL && !c->closing)
		become_ready(c);
}

/* ---- connecting -------------------------------------------------------- */

static int url_addr(const struct net_url *url, struct sockaddr_storage *ss)
{
	const char *host = url->host;
	if (strcmp(host, "localhost") == 0)
		host = "127.0.0.1";
	if (uv_ip4_addr(host, url->port, (struct sockaddr_in *)ss) != 0 &&
	    uv_ip6_addr(host, url->port, (struct sockaddr_in6 *)ss) != 0)
		return KV_EINVAL;
	return 0;
}

static int from_uv(int rc)
{
	switch (rc) {
	case UV_EADDRINUSE: return KV_EEXIST;
	case UV_EACCES:
	case UV_EPERM: return KV_EPERM;
	case UV_EADDRNOTAVAIL:
	case UV_EINVAL: return KV_EINVAL;
	case UV_ENOMEM: return KV_ENOMEM;
	case UV_ETIMEDOUT: return KV_ETIMEOUT;
	case UV_ECONNREFUSED:
	case UV_ECONNRESET:
	case UV_EPIPE:
	case UV_EOF: return KV_ECLOSED;
	case UV_ECANCELED: return KV_ECANCELED;
	default: return KV_EIO;
	}
}

static void on_connected(uv_connect_t *req, int status)
{
	struct net_conn *c = container_of(req, struct net_conn, creq);
	int rc;

	if (c->closing)
		return;
	if (status < 0) {
		c->fail_rc = from_uv(status);
		KV_WARN("net", "connect failed", "peer=%s err=\"%s\"", c->peer,
			uv_strerror(status));
		do_close(c);
		return;
	}
	tune_socket(c);
	c->last_active = uv_now(c->srv->loop);
	update_reading(c);
	if (c->closing)
		return;
	if (c->tls == NULL) {
		become_ready(c);
		return;
	}
	rc = tls_engine_handshake(c->tls); /* the client speaks first */
	tls_flush(c);
	if (rc != KV_EAGAIN && rc != 0 && !c->closing)
		conn_fail(c, rc, "TLS handshake failed",
			  tls_engine_errmsg(c->tls));
}

int net_server_connect(struct net_server *s, const struct net_url *url,
		       struct tls_ctx *tls, const char *peer_name,
		       net_on_connect on_connect, void *data)
{
	struct sockaddr_storage ss;
	struct net_conn *c;
	int rc;

	if (s->shutting)
		return KV_ECLOSED;
	if (url_addr(url, &ss) != 0)
		return KV_EINVAL;
	if (url->tls && (tls == NULL || tls_ctx_is_server(tls)))
		return KV_EINVAL;
	c = conn_new(s);
	if (c == NULL)
		return KV_ENOMEM;
	snprintf(c->peer, sizeof(c->peer), "%s:%u", url->host, url->port);
	if (url->tls) {
		rc = tls_engine_new(tls, peer_name ? peer_name : url->host,
				    &c->tls);
		if (rc != 0)
			goto err_after_conn;
		c->recv = tls_recv;
		c->send = tls_send;
	} else {
		c->recv = plain_recv;
		c->send = plain_send;
	}
	rc = uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&ss,
			    on_connected);
	if (rc != 0) {
		rc = from_uv(rc);
		goto err_after_conn;
	}
	c->on_connect = on_connect;
	c->connect_data = data;
	c->last_active = uv_now(s->loop);
	uv_timer_start(&c->timer, on_conn_timer, s->cfg.idle_timeout_ms, 0);
	return 0;

err_after_conn:
	do_close(c);
	return rc;
}

/* ---- server ------------------------------------------------------------ */

static void on_check(uv_check_t *h)
{
	struct net_server *s = container_of(h, struct net_server, check);
	struct net_conn *c, *next;

	s->tick++;
	c = s->starved;
	s->starved = NULL;
	uv_idle_stop(&s->idle);
	for (; c != NULL; c = next) {
		next = c->starved_next;
		c->starved_next = NULL;
		c->budget_paused = false;
		c->budget_used = 0;
		update_reading(c);
	}
}

static void on_idle(uv_idle_t *h)
{
	(void)h; /* only keeps poll from blocking while conns are starved */
}

int net_server_new(uv_loop_t *loop, const struct net_server_config *cfg,
		   net_on_ready on_ready, void *data, struct net_server **out)
{
	struct net_server *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return KV_ENOMEM;
	s->loop = loop;
	if (cfg != NULL)
		s->cfg = *cfg;
	if (s->cfg.max_pending_out == 0)
		s->cfg.max_pending_out = 4u << 20;
	if (s->cfg.read_budget == 0)
		s->cfg.read_budget = 256u << 10;
	if (s->cfg.idle_timeout_ms == 0)
		s->cfg.idle_timeout_ms = 300000;
	s->on_ready = on_ready;
	s->data = data;
	uv_check_init(loop, &s->check);
	uv_check_start(&s->check, on_check);
	uv_unref((uv_handle_t *)&s->check);
	uv_idle_init(loop, &s->idle);
	uv_timer_init(loop, &s->grace);
	*out = s;
	return 0;
}

static void on_listener_close(uv_handle_t *h)
{
	struct net_listener *l = h->data;
	struct net_server *s = l->srv;
	free(l);
	s->listeners_open--;
	maybe_finish_shutdown(s);
}

static void on_bad_listener_close(uv_handle_t *h)
{
	free(h->data);
}

int net_server_listen(struct net_server *s, const struct net_url *url,
		      struct tls_ctx *tls)
{
	struct sockaddr_storage ss;
	struct net_listener *l;
	const char *host = url->host;
	int rc, len = sizeof(ss);

	if (s->nlisteners == MAX_LISTENERS || s->shutting)
		return KV_EINVAL;
	if (url->tls && (tls == NULL || !tls_ctx_is_server(tls))) {
		KV_ERROR("net", "listen failed",
			 "host=%s port=%u err=\"https URL needs a server TLS context\"",
			 url->host, url->port);
		return KV_EINVAL;
	}
	if (strcmp(host, "localhost") == 0)
		host = "127.0.0.1";
	if (url_addr(url, &ss) != 0) {
		KV_ERROR("net", "listen failed",
			 "host=%s err=\"listen address must be an IP\"",
			 url->host);
		return KV_EINVAL;
	}
	l = calloc(1, sizeof(*l));
	if (l == NULL)
		return KV_ENOMEM;
	l->srv = s;
	l->tls = url->tls ? tls : NULL;
	snprintf(l->url, sizeof(l->url), "%s://%s%s%s:%u",
		 url->tls ? "https" : "http", strchr(host, ':') ? "[" : "",
		 host, strchr(host, ':') ? "]" : "", url->port);
	l->port = url->port;
	uv_tcp_init(s->loop, &l->tcp);
	l->tcp.data = l;
	rc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&l->tcp, 511, on_connection);
	if (rc != 0) {
		KV_ERROR("net", "listen failed", "url=%s err=\"%s\"", l->url,
			 uv_strerror(rc));
		uv_close((uv_handle_t *)&l->tcp, on_bad_listener_close);
		return from_uv(rc);
	}
	if (uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len) == 0)
		l->port = ntohs(ss.ss_family == AF_INET6
				? ((struct sockaddr_in6 *)&ss)->sin6_port
				: ((struct sockaddr_in *)&ss)->sin_port);
	if (url->port == 0)
		snprintf(l->url, sizeof(l->url), "%s://%s%s%s:%u",
			 url->tls ? "https" : "http",
			 strchr(host, ':') ? "[" : "", host,
			 strchr(host, ':') ? "]" : "", l->port);
	s->listeners[s->nlisteners++] = l;
	s->listeners_open++;
	KV_INFO("net", "listening", "url=%s tls=%s", l->url,
		l->tls ? "on" : "off");
	return 0;
}

uint16_t net_server_port(const struct net_server *s, size_t i)
{
	return i < s->nlisteners && s->listeners[i] ? s->listeners[i]->port
						     : 0;
}

size_t net_server_conn_count(const struct net_server *s)
{
	return s->nconns;
}

static void on_server_handle_close(uv_handle_t *h)
{
	struct net_server *s = h->data;
	if (--s->handles_open > 0)
		return;
	if (s->on_done != NULL)
		s->on_done(s->done_data);
	free(s);
}

static void maybe_finish_shutdown(struct net_server *s)
{
	if (!s->shutting || s->finishing || s->nconns > 0 ||
	    s->listeners_open > 0)
		return;
	s->finishing = true;
	s->handles_open = 3;
	s->check.data = s->idle.data = s->grace.data = s;
	uv_close((uv_handle_t *)&s->check, on_server_handle_close);
	uv_close((uv_handle_t *)&s->idle, on_server_handle_close);
	uv_close((uv_handle_t *)&s->grace, on_server_handle_close);
}

static void on_grace(uv_timer_t *t)
{
	struct net_server *s = container_of(t, struct net_server, grace);
	while (s->conns != NULL)
		net_conn_abort(s->conns, "shutdown grace period expired");
}

void net_server_shutdown(struct net_server *s, uint64_t grace_ms,
			 void (*on_done)(void *data), void *data)
{
	struct net_conn *c, *next;

	if (s->shutting)
		return;
	s->shutting = true;
	s->on_done = on_done;
	s->done_data = data;
	KV_INFO("net", "shutting down", "conns=%zu", s->nconns);
	for (size_t i = 0; i < s->nlisteners; i++) {
		uv_close((uv_handle_t *)&s->listeners[i]->tcp,
			 on_listener_close);
		s->listeners[i] = NULL;
	}
	for (c = s->conns; c != NULL; c = next) {
		next = c->next;
		net_conn_ref(c);
		if (!c->ready)
			net_conn_abort(c, NULL);
		else
			end_input(c, "server shutting down");
		next = c->next; /* c may have unlinked; its next stays valid */
		net_conn_unref(c);
	}
	if (s->nconns > 0)
		uv_timer_start(&s->grace, on_grace, grace_ms, 0);
	maybe_finish_shutdown(s);
}

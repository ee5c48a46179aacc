/* Glue between a client connection (net/conn.h) and an HTTP/1.1 session
 * (net/http.h), like http_attach() but with input back-pressure: the
 * session dispatches every complete request it has been fed, even while
 * the connection's output is over its limit (net/http1.c process() only
 * stops at max_pipeline queued answers, and answers given at once do not
 * stay queued). A client that pipelines many reads and never reads the
 * answers would make the member build them all in one wake-up. Here input
 * is fed in small slices, and only while the connection is writable; the
 * rest waits (reading paused) until the output drains. */
#include "server_internal.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

#define FEED_SLICE 4096

struct client_conn {
	struct net_conn *c;
	struct http_session *s;
	struct kv_buf in;    /* received, not yet fed */
	bool session_paused; /* the session asked to stop reading */
	bool ended;          /* peer EOF seen, not yet passed on */
	bool closed;         /* the session closed the connection */
};

static void update_read(struct client_conn *cc)
{
	if (cc->closed)
		return;
	net_conn_pause_read(cc->c, cc->session_paused || cc->in.len > 0);
}

/* Feeds buffered input while the connection can take output. Called only
 * from the connection's callbacks, never from inside the session (feeding
 * a session that is processing would re-enter it). A session that paused
 * itself (pipeline full) still takes input: it buffers it and resumes by
 * itself, as with http_attach(). */
static void pump(struct client_conn *cc)
{
	while (cc->in.len > 0 && !cc->closed && net_conn_writable(cc->c)) {
		size_t n = cc->in.len < FEED_SLICE ? cc->in.len : FEED_SLICE;
		/* the session copies what it keeps */
		http_session_feed(cc->s, (const char *)cc->in.base, n);
		kv_buf_consume(&cc->in, n);
	}
	if (cc->in.len == 0 && cc->ended && !cc->closed) {
		cc->ended = false;
		http_session_end(cc->s);
	}
	update_read(cc);
}

static int io_write(void *io, const void *p, size_t n)
{
	return net_conn_write(((struct client_conn *)io)->c, p, n);
}

static bool io_writable(void *io)
{
	return net_conn_writable(((struct client_conn *)io)->c);
}

static void io_pause_read(void *io, bool pause)
{
	struct client_conn *cc = io;
	cc->session_paused = pause;
	update_read(cc);
}

static void io_close(void *io)
{
	struct client_conn *cc = io;
	cc->closed = true;
	net_conn_close(cc->c, "HTTP session done");
}

static void on_conn_data(void *data, const char *p, size_t n)
{
	struct client_conn *cc = data;
	if (cc->in.len == 0 && net_conn_writable(cc->c) && n <= FEED_SLICE) {
		http_session_feed(cc->s, p, n);
		update_read(cc);
		return;
	}
	if (kv_buf_append(&cc->in, p, n) != 0) {
		net_conn_abort(cc->c, "out of memory");
		return;
	}
	pump(cc);
}

static void on_conn_writable(void *data)
{
	struct client_conn *cc = data;
	http_session_writable(cc->s);
	pump(cc);
}

static void on_conn_end(void *data)
{
	struct client_conn *cc = data;
	if (cc->in.len > 0) {
		cc->ended = true; /* after the buffered requests */
		pump(cc);
		return;
	}
	http_session_end(cc->s);
}

static bool on_conn_busy(void *data)
{
	struct client_conn *cc = data;
	return cc->in.len > 0 || http_session_busy(cc->s);
}

static void on_conn_close(void *data)
{
	struct client_conn *cc = data;
	http_session_free(cc->s);
	kv_buf_free(&cc->in);
	free(cc);
}

static const struct http_io client_io = {
	.write = io_write,
	.writable = io_writable,
	.pause_read = io_pause_read,
	.close = io_close,
};

static const struct net_conn_handler client_handler = {
	.on_data = on_conn_data,
	.on_writable = on_conn_writable,
	.on_end = on_conn_end,
	.busy = on_conn_busy,
	.on_close = on_conn_close,
};

int kvd_client_attach(struct net_conn *c, const struct http_config *cfg,
		      http_on_request on_request, void *data)
{
	return kvd_client_attach_prefixed(c, cfg, on_request, data, NULL, 0);
}

int kvd_client_attach_prefixed(struct net_conn *c,
			       const struct http_config *cfg,
			       http_on_request on_request, void *data,
			       const char *first, size_t nfirst)
{
	struct client_conn *cc = calloc(1, sizeof(*cc));
	if (cc == NULL)
		goto err;
	cc->c = c;
	kv_buf_init(&cc->in);
	if (http_session_new(cfg, &client_io, cc, on_request, data, &cc->s) !=
	    0)
		goto err_after_alloc;
	net_conn_set_handler(c, &client_handler, cc);
	/* bytes read while sniffing: fed like any other input */
	if (nfirst > 0)
		on_conn_data(cc, first, nfirst);
	return 0;

err_after_alloc:
	free(cc);
err:
	net_conn_close(c, "out of memory");
	return KV_ENOMEM;
}

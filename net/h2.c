/* HTTP/2 server sessions on libnghttp2; see net/h2.h. */
#include "net/h2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "common/buf.h"
#include "common/log.h"
#include "kv/errors.h"
#include "net/conn.h"

#define DEFAULT_MAX_STREAMS 1000u
#define DEFAULT_MAX_HEADER_BYTES ((size_t)64 * 1024)
#define CONN_WINDOW (1 << 20)

struct h2_stream {
	struct h2_session *s;
	struct h2_stream *prev, *next;
	int32_t id;
	const struct h2_stream_handler *h;
	void *user;
	struct kv_buf hbuf;        /* name\0value\0 pairs */
	struct h2_header *hdrs;    /* built when the headers are complete */
	size_t nh;
	struct kv_buf out;         /* answer body not yet framed */
	size_t out_off;
	nghttp2_nv *trailers;      /* into tbuf */
	size_t ntrailers;
	struct kv_buf tbuf;
	bool headers_done, remote_closed, responded, ended, reset;
	bool deferred, blocked, end_sent;
};

struct h2_session {
	nghttp2_session *ng;
	const struct h2_io *io;
	void *io_data;
	h2_on_stream on_stream;
	void *data;
	struct h2_config cfg;
	struct h2_stream *streams;
	size_t nstreams;
	size_t out_total; /* body bytes buffered over all streams */
	struct net_conn *conn; /* set by h2_attach, else NULL */
	bool in_recv, flushing, want_flush, ending, goaway_sent, closed;
	bool failed;
	char errmsg[320];  /* why the session failed: reason + lasterr */
	char lasterr[128]; /* nghttp2's last complaint, maybe not fatal */
};

static void flush(struct h2_session *s);
static void final_goaway(struct h2_session *s);
static const uint8_t goaway_ping[8];

/* ---- streams ----------------------------------------------------------- */

static void stream_free(struct h2_stream *st)
{
	struct h2_session *s = st->s;
	if (st->prev != NULL)
		st->prev->next = st->next;
	else
		s->streams = st->next;
	if (st->next != NULL)
		st->next->prev = st->prev;
	s->nstreams--;
	s->out_total -= st->out.len - st->out_off;
	kv_buf_free(&st->hbuf);
	kv_buf_free(&st->out);
	kv_buf_free(&st->tbuf);
	free(st->hdrs);
	free(st->trailers);
	free(st);
}

static void stream_close(struct h2_stream *st, uint32_t code)
{
	if (st->h != NULL && st->h->on_close != NULL)
		st->h->on_close(st, code);
	stream_free(st);
}

void h2_stream_set_handler(struct h2_stream *st,
			   const struct h2_stream_handler *h, void *user)
{
	st->h = h;
	st->user = user;
}

void *h2_stream_user(const struct h2_stream *st)
{
	return st->user;
}

int32_t h2_stream_id(const struct h2_stream *st)
{
	return st->id;
}

struct h2_session *h2_stream_session(const struct h2_stream *st)
{
	return st->s;
}

struct net_conn *h2_stream_conn(const struct h2_stream *st)
{
	return st->s->conn;
}

const char *h2_stream_header(const struct h2_stream *st, const char *name)
{
	for (size_t i = 0; i < st->nh; i++)
		if (strcmp(st->hdrs[i].name, name) == 0)
			return st->hdrs[i].value;
	return NULL;
}

const struct h2_header *h2_stream_headers(const struct h2_stream *st,
					  size_t *n)
{
	*n = st->nh;
	return st->hdrs;
}

bool h2_stream_remote_closed(const struct h2_stream *st)
{
	return st->remote_closed;
}

void h2_stream_consume(struct h2_stream *st, size_t n)
{
	if (n == 0 || st->reset)
		return;
	nghttp2_session_consume_stream(st->s->ng, st->id, n);
	flush(st->s);
}

/* Copies headers into one buffer and an nghttp2_nv array pointing into
 * it. status > 0 adds ":status" first. */
static int build_nv(int status, const struct h2_header *hdrs, size_t n,
		    struct kv_buf *buf, nghttp2_nv **out, size_t *nout)
{
	size_t total = n + (status > 0 ? 1 : 0), k = 0;
	nghttp2_nv *nv = calloc(total == 0 ? 1 : total, sizeof(*nv));
	size_t *offs = calloc(total == 0 ? 1 : total, 2 * sizeof(size_t));
	char st[12];

	if (nv == NULL || offs == NULL)
		goto err;
	if (status > 0) {
		snprintf(st, sizeof(st), "%d", status);
		offs[0] = buf->len;
		if (kv_buf_append(buf, ":status", 8) != 0)
			goto err;
		offs[1] = buf->len;
		if (kv_buf_append(buf, st, strlen(st) + 1) != 0)
			goto err;
		k = 1;
	}
	for (size_t i = 0; i < n; i++, k++) {
		offs[2 * k] = buf->len;
		if (kv_buf_append(buf, hdrs[i].name,
				  strlen(hdrs[i].name) + 1) != 0)
			goto err;
		offs[2 * k + 1] = buf->len;
		if (kv_buf_append(buf, hdrs[i].value,
				  strlen(hdrs[i].value) + 1) != 0)
			goto err;
	}
	for (k = 0; k < total; k++) {
		nv[k].name = buf->base + offs[2 * k];
		nv[k].value = buf->base + offs[2 * k + 1];
		nv[k].namelen = strlen((char *)nv[k].name);
		nv[k].valuelen = strlen((char *)nv[k].value);
		nv[k].flags = NGHTTP2_NV_FLAG_NONE;
	}
	free(offs);
	*out = nv;
	*nout = total;
	return 0;

err:
	free(nv);
	free(offs);
	return KV_ENOMEM;
}

static bool below_limits(const struct h2_stream *st)
{
	return st->out.len - st->out_off < H2_STREAM_OUT_LIMIT &&
	       st->s->out_total < H2_SESSION_OUT_LIMIT;
}

static ssize_t on_read_body(nghttp2_session *ng, int32_t id, uint8_t *buf,
			    size_t len, uint32_t *flags,
			    nghttp2_data_source *src, void *ud)
{
	struct h2_stream *st = src->ptr;
	struct h2_session *s = ud;
	size_t avail = st->out.len - st->out_off;
	size_t n = avail < len ? avail : len;

	if (n > 0) {
		memcpy(buf, st->out.base + st->out_off, n);
		st->out_off += n;
		s->out_total -= n;
		if (st->out_off == st->out.len) {
			kv_buf_reset(&st->out);
			st->out_off = 0;
		} else if (st->out_off > 65536 &&
			   st->out_off > st->out.len / 2) {
			kv_buf_consume(&st->out, st->out_off);
			st->out_off = 0;
		}
		if (st->blocked && below_limits(st))
			s->want_flush = true;
	}
	if (st->out.len - st->out_off > 0)
		return (ssize_t)n;
	if (!st->ended) {
		if (n > 0)
			return (ssize_t)n;
		st->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	*flags |= NGHTTP2_DATA_FLAG_EOF;
	if (st->ntrailers > 0) {
		*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
		if (nghttp2_submit_trailer(ng, id, st->trailers,
					   st->ntrailers) != 0)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	return (ssize_t)n;
}

int h2_stream_respond(struct h2_stream *st, int status,
		      const struct h2_header *hdrs, size_t n, bool end_stream)
{
	nghttp2_nv *nv;
	size_t nnv;
	struct kv_buf b = KV_BUF_INIT;
	nghttp2_data_provider prd;
	int rc;

	if (st->responded || st->reset)
		return KV_EINVAL;
	if (build_nv(status, hdrs, n, &b, &nv, &nnv) != 0) {
		kv_buf_free(&b);
		return KV_ENOMEM;
	}
	prd.source.ptr = st;
	prd.read_callback = on_read_body;
	rc = nghttp2_submit_response(st->s->ng, st->id, nv, nnv,
				     end_stream ? NULL : &prd);
	free(nv);
	kv_buf_free(&b);
	if (rc != 0)
		return rc == NGHTTP2_ERR_NOMEM ? KV_ENOMEM : KV_EINVAL;
	st->responded = true;
	if (end_stream)
		st->ended = true;
	flush(st->s);
	return 0;
}

bool h2_stream_writable(struct h2_stream *st)
{
	if (below_limits(st))
		return true;
	st->blocked = true;
	return false;
}

static void resume(struct h2_stream *st)
{
	if (st->deferred) {
		st->deferred = false;
		nghttp2_session_resume_data(st->s->ng, st->id);
	}
}

int h2_stream_writev(struct h2_stream *st, const struct h2_iovec *v,
		     size_t n)
{
	size_t total = 0, len0 = st->out.len;

	if (st->reset)
		return KV_ECLOSED;
	if (!st->responded || st->ended)
		return KV_EINVAL;
	if (!h2_stream_writable(st))
		return KV_EAGAIN;
	for (size_t i = 0; i < n; i++)
		total += v[i].len;
	if (kv_buf_reserve(&st->out, total) != 0)
		return KV_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (v[i].len > 0 &&
		    kv_buf_append(&st->out, v[i].base, v[i].len) != 0) {
			st->out.len = len0; /* not reached after reserve */
			return KV_ENOMEM;
		}
	}
	st->s->out_total += total;
	resume(st);
	flush(st->s);
	return 0;
}

int h2_stream_write(struct h2_stream *st, const void *p, size_t n)
{
	struct h2_iovec v = { p, n };
	return h2_stream_writev(st, &v, 1);
}

int h2_stream_end(struct h2_stream *st, const struct h2_header *trailers,
		  size_t n)
{
	if (st->reset)
		return 0;
	if (!st->responded || st->ended)
		return KV_EINVAL;
	if (n > 0 && build_nv(0, trailers, n, &st->tbuf, &st->trailers,
			      &st->ntrailers) != 0)
		return KV_ENOMEM;
	st->ended = true;
	resume(st);
	flush(st->s);
	return 0;
}

int h2_stream_reset(struct h2_stream *st, uint32_t code)
{
	if (st->reset)
		return 0;
	st->reset = true;
	st->s->out_total -= st->out.len - st->out_off;
	kv_buf_free(&st->out);
	st->out_off = 0;
	if (nghttp2_submit_rst_stream(st->s->ng, NGHTTP2_FLAG_NONE, st->id,
				      code) != 0)
		return KV_ENOMEM;
	flush(st->s);
	return 0;
}

/* ---- nghttp2 callbacks ------------------------------------------------- */

static struct h2_stream *get_stream(struct h2_session *s, int32_t id)
{
	return nghttp2_session_get_stream_user_data(s->ng, id);
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f,
			    void *ud)
{
	struct h2_session *s = ud;
	struct h2_stream *st;

	if (f->hd.type != NGHTTP2_HEADERS ||
	    f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	st = calloc(1, sizeof(*st));
	if (st == NULL)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	st->s = s;
	st->id = f->hd.stream_id;
	st->next = s->streams;
	if (s->streams != NULL)
		s->streams->prev = st;
	s->streams = st;
	s->nstreams++;
	nghttp2_session_set_stream_user_data(ng, st->id, st);
	return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f,
		     const uint8_t *name, size_t namelen, const uint8_t *value,
		     size_t valuelen, uint8_t flags, void *ud)
{
	struct h2_session *s = ud;
	struct h2_stream *st;
	(void)ng;
	(void)flags;

	if (f->hd.type != NGHTTP2_HEADERS ||
	    f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0; /* trailers from the client: ignored */
	st = get_stream(s, f->hd.stream_id);
	if (st == NULL)
		return 0;
	if (st->hbuf.len + namelen + valuelen + 2 > s->cfg.max_header_bytes)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	if (kv_buf_append(&st->hbuf, name, namelen) != 0 ||
	    kv_buf_putc(&st->hbuf, 0) != 0 ||
	    kv_buf_append(&st->hbuf, value, valuelen) != 0 ||
	    kv_buf_putc(&st->hbuf, 0) != 0)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	st->nh++;
	return 0;
}

static int headers_complete(struct h2_session *s, struct h2_stream *st)
{
	const char *p;

	st->hdrs = calloc(st->nh == 0 ? 1 : st->nh, sizeof(*st->hdrs));
	if (st->hdrs == NULL)
		return KV_ENOMEM;
	p = (const char *)st->hbuf.base;
	for (size_t i = 0; i < st->nh; i++) {
		st->hdrs[i].name = p;
		p += strlen(p) + 1;
		st->hdrs[i].value = p;
		p += strlen(p) + 1;
	}
	st->headers_done = true;
	s->on_stream(st, s->data);
	return 0;
}

static void remote_end(struct h2_stream *st)
{
	if (st->remote_closed)
		return;
	st->remote_closed = true;
	if (st->h != NULL && st->h->on_end != NULL && !st->reset)
		st->h->on_end(st);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f,
			 void *ud)
{
	struct h2_session *s = ud;
	struct h2_stream *st;
	(void)ng;

	if (f->hd.type == NGHTTP2_PING && (f->hd.flags & NGHTTP2_FLAG_ACK) &&
	    s->ending &&
	    memcmp(f->ping.opaque_data, goaway_ping, sizeof(goaway_ping)) == 0)
		final_goaway(s);
	if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
		return 0;
	st = get_stream(s, f->hd.stream_id);
	if (st == NULL)
		return 0;
	if (f->hd.type == NGHTTP2_HEADERS && !st->headers_done &&
	    f->headers.cat == NGHTTP2_HCAT_REQUEST) {
		if (headers_complete(s, st) != 0)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
	}
	if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) && st->headers_done)
		remote_end(st);
	return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id,
			 const uint8_t *data, size_t len, void *ud)
{
	struct h2_session *s = ud;
	struct h2_stream *st = get_stream(s, id);
	(void)flags;

	nghttp2_session_consume_connection(ng, len);
	if (st == NULL || st->h == NULL || st->h->on_data == NULL ||
	    st->reset) {
		nghttp2_session_consume_stream(ng, id, len);
		return 0;
	}
	st->h->on_data(st, data, len);
	return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f,
			 void *ud)
{
	struct h2_session *s = ud;
	struct h2_stream *st;

	if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
	    !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	st = get_stream(s, f->hd.stream_id);
	if (st == NULL || st->end_sent)
		return 0;
	st->end_sent = true;
	/* The answer is complete while the peer is still sending: refuse
	 * the rest (grpc-go does the same) so the stream can close. */
	if (!st->remote_closed && !st->reset) {
		st->reset = true;
		nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, st->id,
					  NGHTTP2_NO_ERROR);
	}
	return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code,
			   void *ud)
{
	struct h2_session *s = ud;
	struct h2_stream *st = get_stream(s, id);

	if (st == NULL)
		return 0;
	nghttp2_session_set_stream_user_data(ng, id, NULL);
	if (!st->end_sent && code == NGHTTP2_NO_ERROR)
		code = NGHTTP2_CANCEL; /* reset by us before the answer ended */
	st->reset = true;
	stream_close(st, code);
	return 0;
}

static int on_error(nghttp2_session *ng, int code, const char *msg,
		    size_t len, void *ud)
{
	struct h2_session *s = ud;
	(void)ng;
	(void)code;
	KV_DEBUG("h2", "protocol error", "msg=\"%.*s\"", (int)len, msg);
	snprintf(s->lasterr, sizeof(s->lasterr), "%.*s", (int)len, msg);
	return 0;
}

/* ---- session ----------------------------------------------------------- */

static void fail(struct h2_session *s, const char *why)
{
	if (s->failed)
		return;
	s->failed = true;
	if (s->errmsg[0] == '\0')
		snprintf(s->errmsg, sizeof(s->errmsg), "%s%s%s", why,
			 s->lasterr[0] ? ": " : "", s->lasterr);
	KV_DEBUG("h2", "session failed", "reason=\"%s\"", s->errmsg);
}

static void maybe_close(struct h2_session *s)
{
	if (s->closed)
		return;
	if (!s->failed && !s->ending && s->errmsg[0] == '\0' &&
	    !nghttp2_session_want_read(s->ng) &&
	    !nghttp2_session_want_write(s->ng))
		/* nghttp2 ended the session itself (GOAWAY sent or received) */
		snprintf(s->errmsg, sizeof(s->errmsg), "%s",
			 s->lasterr[0] ? s->lasterr : "peer ended the session");
	if (s->failed ||
	    (!nghttp2_session_want_read(s->ng) &&
	     !nghttp2_session_want_write(s->ng)) ||
	    (s->ending && s->nstreams == 0 &&
	     !nghttp2_session_want_write(s->ng))) {
		s->closed = true;
		s->io->close(s->io_data);
	}
}

static bool notify_writable(struct h2_session *s)
{
	bool any = false;
	struct h2_stream *st = s->streams, *next;

	for (; st != NULL; st = next) {
		next = st->next;
		if (!st->blocked || st->reset || !below_limits(st))
			continue;
		st->blocked = false;
		if (st->h != NULL && st->h->on_writable != NULL) {
			st->h->on_writable(st);
			any = true;
		}
	}
	return any;
}

static void flush(struct h2_session *s)
{
	if (s->in_recv || s->flushing || s->closed) {
		s->want_flush = true;
		return;
	}
	s->flushing = true;
	do {
		s->want_flush = false;
		while (!s->failed && s->io->writable(s->io_data)) {
			const uint8_t *p;
			ssize_t n = nghttp2_session_mem_send(s->ng, &p);
			if (n < 0) {
				fail(s, nghttp2_strerror((int)n));
				break;
			}
			if (n == 0)
				break;
			if (s->io->write(s->io_data, p, (size_t)n) != 0) {
				fail(s, "write failed");
				break;
			}
		}
		if (!s->failed && notify_writable(s))
			s->want_flush = true;
	} while (s->want_flush && !s->failed &&
		 s->io->writable(s->io_data));
	s->flushing = false;
	maybe_close(s);
}

int h2_session_new(const struct h2_config *cfg, const struct h2_io *io,
		   void *io_data, h2_on_stream on_stream, void *data,
		   struct h2_session **out)
{
	struct h2_session *s = calloc(1, sizeof(*s));
	nghttp2_session_callbacks *cbs = NULL;
	nghttp2_option *opt = NULL;
	nghttp2_settings_entry iv[3];
	int rc = KV_ENOMEM;

	if (s == NULL)
		return KV_ENOMEM;
	if (cfg != NULL)
		s->cfg = *cfg;
	if (s->cfg.max_concurrent_streams == 0)
		s->cfg.max_concurrent_streams = DEFAULT_MAX_STREAMS;
	if (s->cfg.initial_window == 0)
		s->cfg.initial_window = NGHTTP2_INITIAL_WINDOW_SIZE;
	if (s->cfg.max_header_bytes == 0)
		s->cfg.max_header_bytes = DEFAULT_MAX_HEADER_BYTES;
	s->io = io;
	s->io_data = io_data;
	s->on_stream = on_stream;
	s->data = data;

	if (nghttp2_session_callbacks_new(&cbs) != 0)
		goto err_after_alloc;
	nghttp2_session_callbacks_set_on_begin_headers_callback(
		cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs,
							     on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
		cbs, on_data_chunk);
	nghttp2_session_callbacks_set_on_frame_send_callback(cbs,
							     on_frame_send);
	nghttp2_session_callbacks_set_on_stream_close_callback(
		cbs, on_stream_close);
	nghttp2_session_callbacks_set_error_callback2(cbs, on_error);
	if (nghttp2_option_new(&opt) != 0)
		goto err_after_cbs;
	nghttp2_option_set_no_auto_window_update(opt, 1);
	/* nghttp2's RFC 9113 section 8 checks reset streams that grpc-go
	 * (and so etcd) accepts: etcdctl's "endpoint status" sends
	 * ":authority: http://127.0.0.1:2379". The protocol layer above
	 * checks what it needs (:method, :path, content-type). */
	nghttp2_option_set_no_http_messaging(opt, 1);
	if (nghttp2_session_server_new2(&s->ng, cbs, s, opt) != 0)
		goto err_after_opt;
	iv[0].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS;
	iv[0].value = s->cfg.max_concurrent_streams;
	iv[1].settings_id = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE;
	iv[1].value = s->cfg.initial_window;
	iv[2].settings_id = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE;
	iv[2].value = (uint32_t)s->cfg.max_header_bytes;
	if (nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, 3) != 0)
		goto err_after_session;
	/* Connection-level input is acknowledged as it arrives (streams'
	 * windows bound memory), so a larger connection window costs
	 * nothing and lets several streams upload at once without waiting
	 * a round trip per 64 KiB. */
	if (nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0,
						  CONN_WINDOW) != 0)
		goto err_after_session;
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cbs);
	*out = s;
	return 0;

err_after_session:
	nghttp2_session_del(s->ng);
err_after_opt:
	nghttp2_option_del(opt);
err_after_cbs:
	nghttp2_session_callbacks_del(cbs);
err_after_alloc:
	free(s);
	return rc;
}

void h2_session_feed(struct h2_session *s, const char *p, size_t n)
{
	ssize_t rv;

	if (s->closed || s->failed)
		return;
	s->in_recv = true;
	rv = nghttp2_session_mem_recv(s->ng, (const uint8_t *)p, n);
	s->in_recv = false;
	if (rv < 0) {
		if (s->errmsg[0] == '\0')
			snprintf(s->errmsg, sizeof(s->errmsg), "%s%s%s",
				 nghttp2_strerror((int)rv),
				 s->lasterr[0] ? ": " : "", s->lasterr);
		KV_DEBUG("h2", "bad input", "reason=\"%s\"", s->errmsg);
		/* Tell the peer why before closing (GOAWAY PROTOCOL_ERROR),
		 * unless the session is already gone. */
		if (rv != NGHTTP2_ERR_NOMEM &&
		    nghttp2_session_terminate_session(
			    s->ng, NGHTTP2_PROTOCOL_ERROR) == 0) {
			s->ending = true;
			flush(s);
			if (!s->closed) {
				s->closed = true;
				s->io->close(s->io_data);
			}
			return;
		}
		fail(s, nghttp2_strerror((int)rv));
	}
	flush(s);
}

void h2_session_writable(struct h2_session *s)
{
	flush(s);
}

static const uint8_t goaway_ping[8] = { 'k', 'v', 'd', 'g', 'o', 'a', 'w',
					'y' };

/* The final GOAWAY: streams above the last one we processed are refused
 * (clients retry those elsewhere). */
static void final_goaway(struct h2_session *s)
{
	if (s->goaway_sent)
		return;
	s->goaway_sent = true;
	nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE,
			      nghttp2_session_get_last_proc_stream_id(s->ng),
			      NGHTTP2_NO_ERROR, NULL, 0);
}

void h2_session_end(struct h2_session *s)
{
	if (s->ending || s->closed)
		return;
	s->ending = true;
	/* Two steps, as grpc-go: a GOAWAY naming the largest stream id
	 * tells the client to open no more streams, then, once a PING has
	 * made the round trip, the real GOAWAY names the last stream we
	 * took, so streams the client sent meanwhile are served, not
	 * refused. Without the PING answer the first GOAWAY stands. */
	if (nghttp2_submit_shutdown_notice(s->ng) != 0 ||
	    nghttp2_submit_ping(s->ng, NGHTTP2_FLAG_NONE, goaway_ping) != 0)
		final_goaway(s);
	flush(s);
}

bool h2_session_busy(const struct h2_session *s)
{
	return s->nstreams > 0;
}

size_t h2_session_stream_count(const struct h2_session *s)
{
	return s->nstreams;
}

const char *h2_session_errmsg(const struct h2_session *s)
{
	return s->errmsg;
}

void h2_session_free(struct h2_session *s)
{
	if (s == NULL)
		return;
	s->closed = true;
	while (s->streams != NULL) {
		struct h2_stream *st = s->streams;
		nghttp2_session_set_stream_user_data(s->ng, st->id, NULL);
		st->reset = true;
		stream_close(st, NGHTTP2_CANCEL);
	}
	nghttp2_session_del(s->ng);
	free(s);
}

/* ---- glue to net/conn.h ------------------------------------------------ */

struct h2_conn {
	struct net_conn *c;
	struct h2_session *s;
};

static int io_write(void *io, const void *p, size_t n)
{
	return net_conn_write(((struct h2_conn *)io)->c, p, n);
}

static bool io_writable(void *io)
{
	return net_conn_writable(((struct h2_conn *)io)->c);
}

static void io_close(void *io)
{
	struct h2_conn *hc = io;
	const char *why = h2_session_errmsg(hc->s);
	net_conn_close(hc->c, why[0] != '\0' ? why : "HTTP/2 session done");
}

static void on_conn_data(void *data, const char *p, size_t n)
{
	h2_session_feed(((struct h2_conn *)data)->s, p, n);
}

static void on_conn_writable(void *data)
{
	h2_session_writable(((struct h2_conn *)data)->s);
}

static void on_conn_end(void *data)
{
	h2_session_end(((struct h2_conn *)data)->s);
}

static bool on_conn_busy(void *data)
{
	return h2_session_busy(((struct h2_conn *)data)->s);
}

static void on_conn_close(void *data)
{
	struct h2_conn *hc = data;
	h2_session_free(hc->s);
	free(hc);
}

static const struct h2_io conn_io = {
	.write = io_write,
	.writable = io_writable,
	.close = io_close,
};

static const struct net_conn_handler conn_handler = {
	.on_data = on_conn_data,
	.on_writable = on_conn_writable,
	.on_end = on_conn_end,
	.busy = on_conn_busy,
	.on_close = on_conn_close,
};

int h2_attach(struct net_conn *c, const struct h2_config *cfg,
	      h2_on_stream on_stream, void *data, const char *first,
	      size_t nfirst)
{
	struct h2_conn *hc = calloc(1, sizeof(*hc));
	if (hc == NULL)
		goto err;
	hc->c = c;
	if (h2_session_new(cfg, &conn_io, hc, on_stream, data, &hc->s) != 0)
		goto err_after_alloc;
	hc->s->conn = c;
	net_conn_set_handler(c, &conn_handler, hc);
	h2_session_writable(hc->s); /* our SETTINGS go out first */
	if (nfirst > 0)
		h2_session_feed(hc->s, first, nfirst);
	return 0;

err_after_alloc:
	free(hc);
err:
	net_conn_close(c, "out of memory");
	return KV_ENOMEM;
}

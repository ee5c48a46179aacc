/* HTTP/1.1 server sessions on llhttp; see net/http.h. */
#include "net/http.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>

#include "common/buf.h"
#include "common/log.h"
#include "kv/errors.h"
#include "net/conn.h"

#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

/* A non-head streaming answer may buffer this much before KV_EAGAIN. */
#define STREAM_BUFFER_LIMIT ((size_t)1 << 20)

enum req_state { REQ_PARSING, REQ_WAITING, REQ_STREAMING, REQ_DONE };

struct hdr_off {
	size_t name, value;
};

struct req {
	struct http_request pub; /* handed to the handler */
	struct http_session *s;
	struct req *next;
	enum req_state state;
	bool is_head_method, chunked, blocked, is_error;
	struct kv_buf url, hbuf, body;
	struct kv_buf out; /* answer bytes held while earlier ones finish */
	struct hdr_off *hofs;
	size_t nh, caph, mark, name_off;
	struct http_header *hdrs;
	char method[24];
};

struct http_session {
	llhttp_t parser;
	llhttp_settings_t settings;
	struct http_config cfg;
	const struct http_io *io;
	void *io_data;
	http_on_request on_request;
	void *data;
	struct req *cur;         /* being parsed */
	struct req *complete;    /* parsed, to dispatch after the pause */
	struct req *head, *tail; /* waiting for or sending answers, in order */
	unsigned queued;
	struct kv_buf in; /* input not yet parsed */
	size_t header_bytes;
	int error_status;
	bool stop_parsing, ended, closed, processing, read_paused;
};

static void process(struct http_session *s);
static void advance(struct http_session *s);

const char *http_status_text(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 412: return "Precondition Failed";
	case 413: return "Payload Too Large";
	case 415: return "Unsupported Media Type";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}

const char *http_request_header(const struct http_request *req,
				const char *name)
{
	for (size_t i = 0; i < req->nheaders; i++)
		if (strcasecmp(req->headers[i].name, name) == 0)
			return req->headers[i].value;
	return NULL;
}

/* ---- requests ---------------------------------------------------------- */

static struct req *req_new(struct http_session *s)
{
	struct req *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return NULL;
	r->s = s;
	kv_buf_init(&r->url);
	kv_buf_init(&r->hbuf);
	kv_buf_init(&r->body);
	kv_buf_init(&r->out);
	return r;
}

static void req_free(struct req *r)
{
	if (r == NULL)
		return;
	kv_buf_free(&r->url);
	kv_buf_free(&r->hbuf);
	kv_buf_free(&r->body);
	kv_buf_free(&r->out);
	free(r->hofs);
	free(r->hdrs);
	free(r);
}

static void enqueue(struct http_session *s, struct req *r)
{
	if (s->tail != NULL)
		s->tail->next = r;
	else
		s->head = r;
	s->tail = r;
	s->queued++;
}

/* Writes answer bytes: straight out for the head request, held otherwise. */
static int emit(struct req *r, const void *p, size_t n)
{
	struct http_session *s = r->s;
	if (n == 0)
		return 0;
	if (r == s->head) {
		if (s->closed)
			return KV_ECLOSED;
		return s->io->write(s->io_data, p, n);
	}
	return kv_buf_append(&r->out, p, n);
}

static void close_io(struct http_session *s)
{
	if (s->closed)
		return;
	s->closed = true;
	s->stop_parsing = true;
	s->io->close(s->io_data);
}

/* ---- llhttp callbacks -------------------------------------------------- */

static int header_budget(struct http_session *s, size_t n)
{
	s->header_bytes += n;
	if (s->header_bytes > s->cfg.max_header_bytes) {
		s->error_status = 431;
		return -1;
	}
	return 0;
}

static int on_message_begin(llhttp_t *p)
{
	struct http_session *s = p->data;
	s->header_bytes = 0;
	s->cur = req_new(s);
	if (s->cur == NULL) {
		s->error_status = 500;
		return -1;
	}
	return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
	struct http_session *s = p->data;
	if (header_budget(s, n) != 0)
		return -1;
	return kv_buf_append(&s->cur->url, at, n) == 0 ? 0 : -1;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
	struct http_session *s = p->data;
	if (header_budget(s, n) != 0)
		return -1;
	return kv_buf_append(&s->cur->hbuf, at, n) == 0 ? 0 : -1;
}

static int on_header_field_complete(llhttp_t *p)
{
	struct req *r = ((struct http_session *)p->data)->cur;
	if (kv_buf_putc(&r->hbuf, '\0') != 0)
		return -1;
	r->name_off = r->mark;
	r->mark = r->hbuf.len;
	return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
	struct http_session *s = p->data;
	struct req *r = s->cur;
	if (header_budget(s, 4) != 0 || kv_buf_putc(&r->hbuf, '\0') != 0)
		return -1;
	if (r->nh == r->caph) {
		size_t cap = r->caph ? r->caph * 2 : 16;
		struct hdr_off *h = realloc(r->hofs, cap * sizeof(*h));
		if (h == NULL)
			return -1;
		r->hofs = h;
		r->caph = cap;
	}
	r->hofs[r->nh].name = r->name_off;
	r->hofs[r->nh].value = r->mark;
	r->nh++;
	r->mark = r->hbuf.len;
	return 0;
}

static const char *parsing_header(struct req *r, const char *name)
{
	for (size_t i = 0; i < r->nh; i++)
		if (strcasecmp((char *)r->hbuf.base + r->hofs[i].name,
			       name) == 0)
			return (char *)r->hbuf.base + r->hofs[i].value;
	return NULL;
}

static int on_headers_complete(llhttp_t *p)
{
	struct http_session *s = p->data;
	struct req *r = s->cur;
	const char *expect;

	if ((p->flags & F_CONTENT_LENGTH) &&
	    p->content_length > s->cfg.max_body_bytes) {
		s->error_status = 413;
		return -1;
	}
	expect = parsing_header(r, "Expect");
	if (expect != NULL && strcasecmp(expect, "100-continue") == 0 &&
	    p->http_major == 1 && p->http_minor >= 1 && s->head == NULL &&
	    !s->closed) {
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
		(void)s->io->write(s->io_data, cont, sizeof(cont) - 1);
	}
	return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
	struct http_session *s = p->data;
	struct req *r = s->cur;
	if (r->body.len + n > s->cfg.max_body_bytes) {
		s->error_status = 413;
		return -1;
	}
	return kv_buf_append(&r->body, at, n) == 0 ? 0 : -1;
}

static int on_message_complete(llhttp_t *p)
{
	struct http_session *s = p->data;
	struct req *r = s->cur;
	struct http_request *pub = &r->pub;

	if (kv_buf_putc(&r->url, '\0') != 0 ||
	    kv_buf_putc(&r->body, '\0') != 0)
		goto err_nomem;
	r->body.len--;
	if (r->nh > 0) {
		r->hdrs = calloc(r->nh, sizeof(*r->hdrs));
		if (r->hdrs == NULL)
			goto err_nomem;
		for (size_t i = 0; i < r->nh; i++) {
			r->hdrs[i].name = (char *)r->hbuf.base +
					  r->hofs[i].name;
			r->hdrs[i].value = (char *)r->hbuf.base +
					   r->hofs[i].value;
		}
	}
	snprintf(r->method, sizeof(r->method), "%s",
		 llhttp_method_name((llhttp_method_t)llhttp_get_method(p)));
	r->is_head_method = strcmp(r->method, "HEAD") == 0;
	pub->method = r->method;
	pub->target = (char *)r->url.base;
	pub->version_major = llhttp_get_http_major(p);
	pub->version_minor = llhttp_get_http_minor(p);
	pub->headers = r->hdrs;
	pub->nheaders = r->nh;
	pub->body = r->body.base;
	pub->body_len = r->body.len;
	/* No protocol upgrades (h2c, websocket, CONNECT): such a request is
	 * answered as a plain one and the connection closes after it. */
	pub->keep_alive = llhttp_should_keep_alive(p) != 0 && !p->upgrade;
	if (!pub->keep_alive)
		s->stop_parsing = true;
	s->cur = NULL;
	r->state = REQ_WAITING;
	enqueue(s, r);
	s->complete = r;
	return HPE_PAUSED; /* dispatch outside llhttp_execute */

err_nomem:
	s->error_status = 500;
	return -1;
}

/* ---- session ----------------------------------------------------------- */

int http_session_new(const struct http_config *cfg, const struct http_io *io,
		     void *io_data, http_on_request on_request, void *data,
		     struct http_session **out)
{
	struct http_session *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return KV_ENOMEM;
	if (cfg != NULL)
		s->cfg = *cfg;
	if (s->cfg.max_header_bytes == 0)
		s->cfg.max_header_bytes = HTTP_DEFAULT_MAX_HEADER;
	if (s->cfg.max_body_bytes == 0)
		s->cfg.max_body_bytes = HTTP_DEFAULT_MAX_BODY;
	if (s->cfg.max_pipeline == 0)
		s->cfg.max_pipeline = 16;
	s->io = io;
	s->io_data = io_data;
	s->on_request = on_request;
	s->data = data;
	kv_buf_init(&s->in);
	llhttp_settings_init(&s->settings);
	s->settings.on_message_begin = on_message_begin;
	s->settings.on_url = on_url;
	s->settings.on_header_field = on_header_field;
	s->settings.on_header_field_complete = on_header_field_complete;
	s->settings.on_header_value = on_header_field; /* same buffer */
	s->settings.on_header_value_complete = on_header_value_complete;
	s->settings.on_headers_complete = on_headers_complete;
	s->settings.on_body = on_body;
	s->settings.on_message_complete = on_message_complete;
	llhttp_init(&s->parser, HTTP_REQUEST, &s->settings);
	s->parser.data = s;
	*out = s;
	return 0;
}

void http_session_free(struct http_session *s)
{
	struct req *r, *next;

	if (s == NULL)
		return;
	for (r = s->head; r != NULL; r = next) {
		next = r->next;
		if ((r->state == REQ_WAITING || r->state == REQ_STREAMING) &&
		    r->pub.on_abort != NULL)
			r->pub.on_abort(&r->pub);
		req_free(r);
	}
	req_free(s->cur);
	kv_buf_free(&s->in);
	free(s);
}

/* Queues an error answer after the earlier ones and stops parsing. */
static void fail_request(struct http_session *s, int status, const char *why)
{
	struct req *r;
	struct kv_buf b = KV_BUF_INIT;

	s->stop_parsing = true;
	kv_buf_reset(&s->in);
	req_free(s->cur);
	s->cur = NULL;
	r = req_new(s);
	if (r == NULL ||
	    kv_buf_printf(&b,
			  "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
			  "Content-Length: %zu\r\nConnection: close\r\n\r\n"
			  "%s\n",
			  status, http_status_text(status), strlen(why) + 1,
			  why) != 0) {
		req_free(r);
		kv_buf_free(&b);
		close_io(s);
		return;
	}
	r->is_error = true;
	enqueue(s, r);
	(void)emit(r, b.base, b.len);
	kv_buf_free(&b);
	r->state = REQ_DONE;
	advance(s);
}

static void update_pause(struct http_session *s)
{
	/* With abort_on_eof one read stays armed while the pipeline is full,
	 * to see the client hang up; it pauses once more bytes are held. */
	bool pause = s->stop_parsing ||
		     (s->queued >= s->cfg.max_pipeline &&
		      (!s->cfg.abort_on_eof || s->in.len > 0));
	if (pause == s->read_paused || s->closed)
		return;
	s->read_paused = pause;
	if (s->io->pause_read != NULL)
		s->io->pause_read(s->io_data, pause);
}

static void maybe_close(struct http_session *s)
{
	/* After EOF, requests still buffered (held while output was over
	 * its limit) are answered before closing. */
	if (!s->closed && s->head == NULL &&
	    ((s->ended && s->in.len == 0) ||
	     (s->stop_parsing && !s->processing)))
		close_io(s);
}

static void process(struct http_session *s)
{
	if (s->processing)
		return;
	s->processing = true;
	/* Dispatch buffered requests only while answers can be written: a
	 * client that pipelines without reading must not make us build
	 * unbounded output (http_session_writable resumes). */
	while (!s->stop_parsing && s->in.len > 0 &&
	       s->queued < s->cfg.max_pipeline &&
	       (s->io->writable == NULL || s->io->writable(s->io_data))) {
		const char *base = (const char *)s->in.base;
		llhttp_errno_t err = llhttp_execute(&s->parser, base,
						    s->in.len);
		if (err == HPE_OK) {
			kv_buf_reset(&s->in);
			break;
		}
		if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
			size_t used = (size_t)(llhttp_get_error_pos(&s->parser) -
					       base);
			struct req *r = s->complete;
			s->complete = NULL;
			kv_buf_consume(&s->in, used);
			if (err == HPE_PAUSED_UPGRADE) {
				/* not reached: upgrades stop parsing above */
				s->stop_parsing = true;
				kv_buf_reset(&s->in);
			} else {
				llhttp_resume(&s->parser);
			}
			if (r != NULL)
				s->on_request(&r->pub, s->data);
			continue;
		}
		if (s->error_status == 431)
			fail_request(s, 431, "request headers too large");
		else if (s->error_status == 413)
			fail_request(s, 413, "request body too large");
		else if (s->error_status == 500)
			fail_request(s, 500, "out of memory");
		else
			fail_request(s, 400, llhttp_errno_name(err));
	}
	s->processing = false;
	update_pause(s);
	maybe_close(s);
}

void http_session_feed(struct http_session *s, const char *p, size_t n)
{
	if (s->stop_parsing || s->closed || n == 0)
		return;
	if (kv_buf_append(&s->in, p, n) != 0) {
		fail_request(s, 500, "out of memory");
		return;
	}
	process(s);
}

void http_session_end(struct http_session *s)
{
	if (s->cfg.abort_on_eof && s->in.len == 0 && s->tail != NULL &&
	    (s->tail->state == REQ_WAITING ||
	     s->tail->state == REQ_STREAMING)) {
		/* the client hung up on what it waits for */
		close_io(s);
		return;
	}
	s->ended = true;
	process(s);
	maybe_close(s);
}

bool http_session_busy(const struct http_session *s)
{
	return s->head != NULL || (s->in.len > 0 && !s->stop_parsing);
}

void http_session_writable(struct http_session *s)
{
	struct req *r = s->head;
	if (r != NULL && r->state == REQ_STREAMING && r->blocked) {
		r->blocked = false;
		if (r->pub.on_writable != NULL)
			r->pub.on_writable(&r->pub);
	}
	/* Requests held back while output was over the limit. */
	if (!s->processing && !s->closed && s->in.len > 0)
		process(s);
}

/* Retires finished answers at the head, releasing held bytes of the next. */
static void advance(struct http_session *s)
{
	struct req *r;

	while ((r = s->head) != NULL && r->state == REQ_DONE) {
		bool close = !r->pub.keep_alive || r->is_error;
		s->head = r->next;
		if (s->head == NULL)
			s->tail = NULL;
		s->queued--;
		req_free(r);
		if (close) {
			close_io(s);
			return;
		}
		r = s->head;
		if (r != NULL && r->out.len > 0) {
			int rc = s->io->write(s->io_data, r->out.base,
					      r->out.len);
			kv_buf_free(&r->out);
			if (rc != 0) {
				close_io(s);
				return;
			}
		}
	}
	if (r != NULL && r->state == REQ_STREAMING && r->blocked &&
	    s->io->writable(s->io_data)) {
		r->blocked = false;
		if (r->pub.on_writable != NULL)
			r->pub.on_writable(&r->pub);
		return;
	}
	if (!s->processing && !s->closed) {
		process(s);
		return;
	}
	update_pause(s);
	maybe_close(s);
}

/* ---- answers ----------------------------------------------------------- */

static int write_head(struct req *r, int status,
		      const struct http_header *headers, size_t nheaders,
		      const char *framing)
{
	struct kv_buf b = KV_BUF_INIT;
	int rc;

	rc = kv_buf_printf(&b, "HTTP/1.1 %d %s\r\n", status,
			   http_status_text(status));
	for (size_t i = 0; rc == 0 && i < nheaders; i++)
		rc = kv_buf_printf(&b, "%s: %s\r\n", headers[i].name,
				   headers[i].value);
	if (rc == 0)
		rc = kv_buf_printf(&b, "%s", framing);
	if (rc == 0 && !r->pub.keep_alive)
		rc = kv_buf_printf(&b, "Connection: close\r\n");
	else if (rc == 0 && r->pub.version_minor == 0)
		rc = kv_buf_printf(&b, "Connection: keep-alive\r\n");
	if (rc == 0)
		rc = kv_buf_printf(&b, "\r\n");
	if (rc == 0)
		rc = emit(r, b.base, b.len);
	kv_buf_free(&b);
	return rc;
}

int http_respond(struct http_request *pub, int status,
		 const struct http_header *headers, size_t nheaders,
		 const void *body, size_t len)
{
	struct req *r = container_of(pub, struct req, pub);
	char framing[64];
	int rc;

	if (r->state != REQ_WAITING)
		return KV_EINVAL;
	snprintf(framing, sizeof(framing), "Content-Length: %zu\r\n", len);
	rc = write_head(r, status, headers, nheaders, framing);
	if (rc == 0 && !r->is_head_method)
		rc = emit(r, body, len);
	r->state = REQ_DONE;
	if (rc != 0)
		r->pub.keep_alive = false;
	advance(r->s);
	return rc == KV_ECLOSED ? 0 : rc;
}

int http_stream_begin(struct http_request *pub, int status,
		      const struct http_header *headers, size_t nheaders)
{
	struct req *r = container_of(pub, struct req, pub);
	int rc;

	if (r->state != REQ_WAITING)
		return KV_EINVAL;
	r->chunked = pub->version_minor >= 1;
	if (!r->chunked)
		pub->keep_alive = false; /* HTTP/1.0: ends at close */
	rc = write_head(r, status, headers, nheaders,
			r->chunked ? "Transfer-Encoding: chunked\r\n" : "");
	r->state = REQ_STREAMING;
	return rc;
}

int http_stream_write(struct http_request *pub, const void *p, size_t n)
{
	struct req *r = container_of(pub, struct req, pub);
	struct http_session *s = r->s;
	char size[32];
	int rc;

	if (r->state != REQ_STREAMING)
		return KV_EINVAL;
	if (s->closed)
		return KV_ECLOSED;
	if (n == 0 || r->is_head_method)
		return 0;
	if (r == s->head ? !s->io->writable(s->io_data)
			 : r->out.len > STREAM_BUFFER_LIMIT) {
		r->blocked = true;
		return KV_EAGAIN;
	}
	if (r->chunked) {
		snprintf(size, sizeof(size), "%zx\r\n", n);
		if ((rc = emit(r, size, strlen(size))) != 0)
			return rc;
	}
	if ((rc = emit(r, p, n)) != 0)
		return rc;
	return r->chunked ? emit(r, "\r\n", 2) : 0;
}

int http_stream_end(struct http_request *pub)
{
	struct req *r = container_of(pub, struct req, pub);
	int rc = 0;

	if (r->state != REQ_STREAMING)
		return KV_EINVAL;
	if (r->chunked && !r->is_head_method)
		rc = emit(r, "0\r\n\r\n", 5);
	r->state = REQ_DONE;
	if (rc != 0)
		r->pub.keep_alive = false;
	advance(r->s);
	return rc == KV_ECLOSED ? 0 : rc;
}

/* ---- glue to net/conn.h ------------------------------------------------ */

struct http_conn {
	struct net_conn *c;
	struct http_session *s;
};

static int io_write(void *io, const void *p, size_t n)
{
	return net_conn_write(((struct http_conn *)io)->c, p, n);
}

static bool io_writable(void *io)
{
	return net_conn_writable(((struct http_conn *)io)->c);
}

static void io_pause_read(void *io, bool pause)
{
	net_conn_pause_read(((struct http_conn *)io)->c, pause);
}

static void io_close(void *io)
{
	net_conn_close(((struct http_conn *)io)->c, "HTTP session done");
}

static void on_conn_data(void *data, const char *p, size_t n)
{
	http_session_feed(((struct http_conn *)data)->s, p, n);
}

static void on_conn_writable(void *data)
{
	http_session_writable(((struct http_conn *)data)->s);
}

static void on_conn_end(void *data)
{
	http_session_end(((struct http_conn *)data)->s);
}

static bool on_conn_busy(void *data)
{
	return http_session_busy(((struct http_conn *)data)->s);
}

static void on_conn_close(void *data)
{
	struct http_conn *hc = data;
	http_session_free(hc->s);
	free(hc);
}

static const struct http_io conn_io = {
	.write = io_write,
	.writable = io_writable,
	.pause_read = io_pause_read,
	.close = io_close,
};

static const struct net_conn_handler conn_handler = {
	.on_data = on_conn_data,
	.on_writable = on_conn_writable,
	.on_end = on_conn_end,
	.busy = on_conn_busy,
	.on_close = on_conn_close,
};

int http_attach(struct net_conn *c, const struct http_config *cfg,
		http_on_request on_request, void *data)
{
	return http_attach_prefixed(c, cfg, on_request, data, NULL, 0);
}

int http_attach_prefixed(struct net_conn *c, const struct http_config *cfg,
			 http_on_request on_request, void *data,
			 const char *first, size_t nfirst)
{
	struct http_conn *hc = calloc(1, sizeof(*hc));
	if (hc == NULL)
		goto err;
	hc->c = c;
	if (http_session_new(cfg, &conn_io, hc, on_request, data, &hc->s) != 0)
		goto err_after_alloc;
	net_conn_set_handler(c, &conn_handler, hc);
	if (nfirst > 0)
		http_session_feed(hc->s, first, nfirst);
	return 0;

err_after_alloc:
	free(hc);
err:
	net_conn_close(c, "out of memory");
	return KV_ENOMEM;
}

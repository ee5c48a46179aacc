/* fuzz_http1.c — libFuzzer target for the HTTP/1.1 server session.
 *
 * Drives an http_session (net/http.h) over an in-memory struct http_io,
 * as tests/unit/net/test_net.c does, with no sockets. Input layout:
 *   byte 0   mode: bit0 answer later (hold requests, answer after the
 *            chunk), bit1 stream answers (chunked), bit2 small limits
 *            (256 B headers, 64 B body, pipeline 2), bit3 the transport
 *            is not writable during feeds, bit4 end the session (EOF)
 *            before freeing
 *   byte 1   chunk size (0 = all at once)
 *   rest     bytes from the peer, fed in chunks
 * Invariants (abort on violation): every request has method, target and a
 * NUL-terminated body of body_len bytes and non-NULL header names and
 * values; nothing is written after close; output, when any, starts with
 * an HTTP/1.x status line; each request is answered or aborted exactly
 * once; ASan/UBSan/LeakSanitizer check memory. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "kv/errors.h"
#include "net/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_HELD 64

struct fake {
	struct kv_buf out;
	bool closed, writable;
	unsigned mode;
	struct http_request *held[MAX_HELD];
	int nheld;
	int requests, answered, aborted;
	size_t sink; /* keeps the request reads from being optimised out */
};

static void fail(const char *why)
{
	fprintf(stderr, "fuzz_http1: %s\n", why);
	abort();
}

static int fake_write(void *io, const void *p, size_t n)
{
	struct fake *f = io;

	if (f->closed)
		fail("write after close");
	return kv_buf_append(&f->out, p, n);
}

static bool fake_writable(void *io)
{
	return ((struct fake *)io)->writable;
}

static void fake_pause(void *io, bool pause)
{
	(void)io;
	(void)pause;
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

static void on_abort(struct http_request *req)
{
	struct fake *f = req->user;

	f->aborted++;
	for (int i = 0; i < f->nheld; i++)
		if (f->held[i] == req)
			f->held[i] = NULL;
}

static void touch(struct fake *f, const struct http_request *req)
{
	if (!req->method || !req->target || !req->body)
		fail("request with a NULL method, target or body");
	if (req->body[req->body_len] != '\0')
		fail("body not NUL-terminated");
	f->sink += strlen(req->method) + strlen(req->target);
	for (size_t i = 0; i < req->body_len; i++)
		f->sink += req->body[i];
	for (size_t i = 0; i < req->nheaders; i++) {
		if (!req->headers[i].name || !req->headers[i].value)
			fail("header with a NULL name or value");
		f->sink += strlen(req->headers[i].name) +
			   strlen(req->headers[i].value);
	}
	f->sink += http_request_header(req, "content-length") != NULL;
}

static void answer(struct fake *f, struct http_request *req)
{
	static const struct http_header h[] = { { "Content-Type",
						  "text/plain" } };
	int rc;

	f->answered++;
	if (f->mode & 2) {
		rc = http_stream_begin(req, 200, h, 1);
		if (rc == 0) {
			(void)http_stream_write(req, "a", 1);
			(void)http_stream_write(req, "bc", 2);
			rc = http_stream_end(req);
		}
	} else {
		rc = http_respond(req, 200, h, 1, "ok", 2);
	}
	if (rc != 0 && rc != KV_ENOMEM && rc != KV_ECLOSED && rc != KV_EAGAIN)
		fail("answer failed");
}

static void on_req(struct http_request *req, void *data)
{
	struct fake *f = data;

	f->requests++;
	touch(f, req);
	req->user = f;
	req->on_abort = on_abort;
	if ((f->mode & 1) && f->nheld < MAX_HELD) {
		f->held[f->nheld++] = req;
		return;
	}
	answer(f, req);
}

static void answer_held(struct fake *f)
{
	int n = f->nheld;

	f->nheld = 0;
	for (int i = 0; i < n; i++)
		if (f->held[i])
			answer(f, f->held[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_config cfg = { 0 };
	struct http_session *s;
	struct fake f;
	size_t chunk, off;

	if (size < 2)
		return 0;
	memset(&f, 0, sizeof(f));
	kv_buf_init(&f.out);
	f.mode = data[0];
	chunk = data[1] ? data[1] : size;
	data += 2;
	size -= 2;
	if (f.mode & 4) {
		cfg.max_header_bytes = 256;
		cfg.max_body_bytes = 64;
		cfg.max_pipeline = 2;
	}
	f.writable = !(f.mode & 8);
	if (http_session_new(&cfg, &fake_io, &f, on_req, &f, &s) != 0)
		return 0;
	for (off = 0; off < size && !f.closed; off += chunk) {
		size_t n = size - off < chunk ? size - off : chunk;

		http_session_feed(s, (const char *)data + off, n);
		answer_held(&f);
		if (!f.writable) {
			f.writable = true;
			http_session_writable(s);
			f.writable = !(f.mode & 8);
		}
	}
	if ((f.mode & 16) && !f.closed) {
		http_session_end(s);
		answer_held(&f);
	}
	f.writable = true;
	if (!f.closed)
		http_session_writable(s);
	http_session_free(s);
	if (f.answered + f.aborted < f.requests)
		fail("a request was neither answered nor aborted");
	if (f.out.len > 0 && (f.out.len < 9 ||
			      (memcmp(f.out.base, "HTTP/1.1 ", 9) != 0 &&
			       memcmp(f.out.base, "HTTP/1.0 ", 9) != 0)))
		fail("output does not start with a status line");
	kv_buf_free(&f.out);
	return 0;
}

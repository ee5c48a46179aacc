/* Unit tests for net/h2.h and net/grpc.h: a client nghttp2 session in the
 * test drives the server session in memory (no sockets). Deadlines use a
 * private libuv loop run between exchanges. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>
#include <uv.h>

#include "common/buf.h"
#include "kv/errors.h"
#include "net/grpc.h"
#include "net/h2.h"

/* ---- the in-memory client ------------------------------------------------ */

#define MAX_CSTREAMS 64

struct cstream {
	int32_t id;
	struct kv_buf req; /* request body still to send, from req_off */
	size_t req_off;
	bool req_end, deferred;
	int http_status;
	int grpc_status; /* -1 until seen */
	char grpc_message[512];
	char ctype[64];
	int header_blocks;
	struct kv_buf data; /* response body */
	bool closed;
	uint32_t close_code;
};

struct harness {
	uv_loop_t loop;
	struct grpc_server *g;
	struct h2_session *s;
	nghttp2_session *cl;
	struct kv_buf to_client;
	size_t io_limit; /* server io writable while to_client is below */
	bool io_closed;
	bool goaway;
	uint32_t goaway_code;
	int32_t goaway_last;
	struct cstream cs[MAX_CSTREAMS];
	int ncs;
};

static struct harness H;

static int io_write(void *io, const void *p, size_t n)
{
	(void)io;
	return kv_buf_append(&H.to_client, p, n);
}

static bool io_writable(void *io)
{
	(void)io;
	return !H.io_closed && H.to_client.len < H.io_limit;
}

static void io_close(void *io)
{
	(void)io;
	H.io_closed = true;
}

static const struct h2_io test_io = {
	.write = io_write,
	.writable = io_writable,
	.close = io_close,
};

static struct cstream *cstream_get(int32_t id)
{
	for (int i = 0; i < H.ncs; i++)
		if (H.cs[i].id == id)
			return &H.cs[i];
	return NULL;
}

static int cl_on_header(nghttp2_session *ng, const nghttp2_frame *f,
			const uint8_t *name, size_t namelen,
			const uint8_t *value, size_t valuelen, uint8_t flags,
			void *ud)
{
	struct cstream *c = cstream_get(f->hd.stream_id);
	(void)ng;
	(void)flags;
	(void)ud;
	if (c == NULL)
		return 0;
	if (namelen == 7 && memcmp(name, ":status", 7) == 0)
		c->http_status = atoi((const char *)value);
	else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0)
		c->grpc_status = atoi((const char *)value);
	else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0)
		snprintf(c->grpc_message, sizeof(c->grpc_message), "%.*s",
			 (int)valuelen, value);
	else if (namelen == 12 && memcmp(name, "content-type", 12) == 0)
		snprintf(c->ctype, sizeof(c->ctype), "%.*s", (int)valuelen,
			 value);
	return 0;
}

static int cl_on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f,
			    void *ud)
{
	(void)ng;
	(void)ud;
	if (f->hd.type == NGHTTP2_GOAWAY) {
		H.goaway = true;
		H.goaway_code = f->goaway.error_code;
		H.goaway_last = f->goaway.last_stream_id;
	} else if (f->hd.type == NGHTTP2_HEADERS) {
		struct cstream *c = cstream_get(f->hd.stream_id);
		if (c != NULL)
			c->header_blocks++;
	}
	return 0;
}

static int cl_on_data(nghttp2_session *ng, uint8_t flags, int32_t id,
		      const uint8_t *data, size_t len, void *ud)
{
	struct cstream *c = cstream_get(id);
	(void)ng;
	(void)flags;
	(void)ud;
	if (c != NULL)
		assert_int_equal(kv_buf_append(&c->data, data, len), 0);
	return 0;
}

static int cl_on_close(nghttp2_session *ng, int32_t id, uint32_t code,
		       void *ud)
{
	struct cstream *c = cstream_get(id);
	(void)ng;
	(void)ud;
	if (c != NULL) {
		c->closed = true;
		c->close_code = code;
	}
	return 0;
}

static ssize_t cl_read(nghttp2_session *ng, int32_t id, uint8_t *buf,
		       size_t len, uint32_t *flags, nghttp2_data_source *src,
		       void *ud)
{
	struct cstream *c = src->ptr;
	size_t avail = c->req.len - c->req_off;
	size_t n = avail < len ? avail : len;
	(void)ng;
	(void)id;
	(void)ud;
	if (n > 0)
		memcpy(buf, c->req.base + c->req_off, n);
	c->req_off += n;
	if (c->req_off == c->req.len && c->req_end)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	else if (n == 0) {
		c->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	return (ssize_t)n;
}

/* Moves bytes both ways and runs due timers until nothing moves. */
static void pump(void)
{
	for (int round = 0; round < 100000; round++) {
		bool moved = false;
		const uint8_t *p;
		ssize_t n;

		while (H.cl != NULL && !H.io_closed &&
		       (n = nghttp2_session_mem_send(H.cl, &p)) > 0) {
			h2_session_feed(H.s, (const char *)p, (size_t)n);
			moved = true;
		}
		if (H.to_client.len > 0 && H.cl != NULL) {
			size_t len = H.to_client.len;
			unsigned char *b = kv_buf_steal(&H.to_client, &len);
			n = nghttp2_session_mem_recv(H.cl, b, len);
			free(b);
			assert_true(n >= 0);
			h2_session_writable(H.s);
			moved = true;
		}
		uv_run(&H.loop, UV_RUN_NOWAIT);
		if (!moved)
			return;
	}
	fail_msg("pump did not settle");
}

/* Runs the loop (timers) for about ms milliseconds, pumping. */
static void run_for(uint64_t ms)
{
	uint64_t end = uv_now(&H.loop) + ms;
	while (uv_now(&H.loop) < end) {
		uv_sleep(5);
		uv_update_time(&H.loop);
		pump();
	}
}

static void cstream_append_msg(struct cstream *c, const void *p, size_t n,
			       unsigned char flag)
{
	unsigned char pre[5] = { flag, (unsigned char)(n >> 24),
				 (unsigned char)(n >> 16),
				 (unsigned char)(n >> 8), (unsigned char)n };
	assert_int_equal(kv_buf_append(&c->req, pre, 5), 0);
	if (n > 0)
		assert_int_equal(kv_buf_append(&c->req, p, n), 0);
}

static void cstream_kick(struct cstream *c)
{
	if (c->deferred) {
		c->deferred = false;
		nghttp2_session_resume_data(H.cl, c->id);
	}
}

static const char *authority = "localhost";

/* Opens a call; ctype/timeout may be NULL. */
static struct cstream *call_open_method(const char *method, const char *path,
					const char *ctype, const char *timeout)
{
	struct cstream *c = &H.cs[H.ncs++];
	nghttp2_nv nv[8];
	size_t n = 0;
	nghttp2_data_provider prd;

#define NV(k, v)                                                       \
	do {                                                           \
		nv[n].name = (uint8_t *)(k);                           \
		nv[n].namelen = strlen(k);                             \
		nv[n].value = (uint8_t *)(v);                          \
		nv[n].valuelen = strlen(v);                            \
		nv[n].flags = NGHTTP2_NV_FLAG_NONE;                    \
		n++;                                                   \
	} while (0)
	NV(":method", method);
	NV(":scheme", "http");
	NV(":authority", authority);
	NV(":path", path);
	if (ctype != NULL)
		NV("content-type", ctype);
	NV("te", "trailers");
	if (timeout != NULL)
		NV("grpc-timeout", timeout);
#undef NV
	memset(c, 0, sizeof(*c));
	c->grpc_status = -1;
	prd.source.ptr = c;
	prd.read_callback = cl_read;
	c->id = nghttp2_submit_request(H.cl, NULL, nv, n, &prd, NULL);
	assert_true(c->id > 0);
	return c;
}

static struct cstream *call_open(const char *path, const char *ctype,
				 const char *timeout)
{
	return call_open_method("POST", path, ctype, timeout);
}

/* Unary round trip helper: one message, then half-close. */
static struct cstream *call_unary(const char *path, const void *msg,
				  size_t len)
{
	struct cstream *c = call_open(path, "application/grpc", NULL);
	cstream_append_msg(c, msg, len, 0);
	c->req_end = true;
	pump();
	return c;
}

/* The idx-th gRPC message in c's response data, or NULL. */
static const unsigned char *resp_msg(struct cstream *c, int idx,
				     size_t *len)
{
	size_t off = 0;
	for (int i = 0; off + 5 <= c->data.len; i++) {
		const unsigned char *b = c->data.base + off;
		size_t n = (size_t)b[1] << 24 | (size_t)b[2] << 16 |
			   (size_t)b[3] << 8 | b[4];
		assert_true(off + 5 + n <= c->data.len);
		if (i == idx) {
			*len = n;
			return b + 5;
		}
		off += 5 + n;
	}
	return NULL;
}

static int resp_count(struct cstream *c)
{
	size_t len;
	int i = 0;
	while (resp_msg(c, i, &len) != NULL)
		i++;
	return i;
}

/* ---- the echo service ------------------------------------------------------ */

struct srv_state {
	struct grpc_call *held;     /* a call left unanswered */
	int cancel_status;          /* last on_cancel status, -1 none */
	int cancels;
	int eagain;                 /* KV_EAGAIN seen by the streamer */
	int messages;               /* request messages seen */
	bool pause_bidi;            /* bidi pauses on its first message */
};

static struct srv_state S;

struct streamer {
	unsigned long left;
	size_t size;
	unsigned char *buf;
};

static void on_cancel(struct grpc_call *call, int status)
{
	struct streamer *sj = grpc_call_user(call);
	if (S.held == call)
		S.held = NULL;
	S.cancel_status = status;
	S.cancels++;
	if (sj != NULL) {
		free(sj->buf);
		free(sj);
	}
}

static void unary_start(struct grpc_call *call, const unsigned char *msg,
			size_t len, void *data)
{
	(void)data;
	if (len >= 4 && memcmp(msg, "wait", 4) == 0) {
		S.held = call;
		return;
	}
	if (len >= 4 && memcmp(msg, "fail", 4) == 0) {
		grpc_call_finish(call, GRPC_NOT_FOUND, "no such thing: 100%");
		return;
	}
	assert_int_equal(grpc_call_send(call, msg, len), 0);
	assert_int_equal(grpc_call_send(call, msg, len), KV_EINVAL);
	assert_int_equal(grpc_call_finish(call, GRPC_OK, NULL), 0);
}

static void stream_pump(struct grpc_call *call)
{
	struct streamer *sj = grpc_call_user(call);
	while (sj->left > 0) {
		int rc;
		snprintf((char *)sj->buf, sj->size, "%lu", sj->left);
		rc = grpc_call_send(call, sj->buf, sj->size);
		if (rc == KV_EAGAIN) {
			S.eagain++;
			return;
		}
		assert_int_equal(rc, 0);
		sj->left--;
	}
	grpc_call_set_user(call, NULL);
	free(sj->buf);
	free(sj);
	grpc_call_finish(call, GRPC_OK, NULL);
}

/* Request "count size": count messages of size bytes. */
static void sstream_start(struct grpc_call *call, const unsigned char *msg,
			  size_t len, void *data)
{
	char req[64];
	struct streamer *sj = calloc(1, sizeof(*sj));
	(void)data;
	assert_non_null(sj);
	snprintf(req, sizeof(req), "%.*s", (int)len, msg);
	assert_int_equal(sscanf(req, "%lu %zu", &sj->left, &sj->size), 2);
	sj->buf = calloc(1, sj->size + 16);
	grpc_call_set_user(call, sj);
	stream_pump(call);
}

static void bidi_start(struct grpc_call *call, const unsigned char *msg,
		       size_t len, void *data)
{
	(void)data;
	assert_null(msg);
	assert_int_equal(len, 0);
	grpc_call_set_user(call, NULL);
}

static void bidi_message(struct grpc_call *call, const unsigned char *msg,
			 size_t len)
{
	S.messages++;
	if (S.pause_bidi) {
		S.held = call;
		grpc_call_pause_recv(call, true);
	}
	assert_int_equal(grpc_call_send(call, msg, len), 0);
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
	.on_writable = stream_pump,
	.on_cancel = on_cancel,
};
static const struct grpc_handler bidi_h = {
	.on_start = bidi_start,
	.on_message = bidi_message,
	.on_half_close = bidi_half_close,
	.on_cancel = on_cancel,
};

/* ---- fixture --------------------------------------------------------------- */

static int setup_with(size_t max_recv)
{
	nghttp2_session_callbacks *cbs;
	struct grpc_config gc = { 0 };

	memset(&H, 0, sizeof(H));
	memset(&S, 0, sizeof(S));
	S.cancel_status = -1;
	H.io_limit = (size_t)1 << 30;
	uv_loop_init(&H.loop);
	gc.loop = &H.loop;
	gc.max_recv_msg = max_recv;
	assert_int_equal(grpc_server_new(&gc, &H.g), 0);
	assert_int_equal(grpc_server_register(H.g, "/kvtest.Echo/Unary",
					      GRPC_UNARY, &unary_h, NULL),
			 0);
	assert_int_equal(grpc_server_register(H.g, "/kvtest.Echo/Unary",
					      GRPC_UNARY, &unary_h, NULL),
			 KV_EEXIST);
	assert_int_equal(grpc_server_register(H.g, "nope", GRPC_UNARY,
					      &unary_h, NULL),
			 KV_EINVAL);
	assert_int_equal(grpc_server_register(H.g, "/kvtest.Echo/ServerStream",
					      GRPC_SERVER_STREAMING,
					      &sstream_h, NULL),
			 0);
	assert_int_equal(grpc_server_register(H.g, "/kvtest.Echo/Bidi",
					      GRPC_BIDI, &bidi_h, NULL),
			 0);
	assert_int_equal(h2_session_new(NULL, &test_io, NULL, grpc_on_stream,
					H.g, &H.s),
			 0);
	nghttp2_session_callbacks_new(&cbs);
	nghttp2_session_callbacks_set_on_header_callback(cbs, cl_on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs,
							     cl_on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs,
								  cl_on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs,
							       cl_on_close);
	assert_int_equal(nghttp2_session_client_new(&H.cl, cbs, NULL), 0);
	nghttp2_session_callbacks_del(cbs);
	assert_int_equal(nghttp2_submit_settings(H.cl, NGHTTP2_FLAG_NONE,
						 NULL, 0),
			 0);
	pump();
	return 0;
}

static int setup(void **state)
{
	(void)state;
	return setup_with(0);
}

static int setup_small(void **state)
{
	(void)state;
	return setup_with(1024);
}

static int teardown(void **state)
{
	(void)state;
	if (H.s != NULL)
		h2_session_free(H.s);
	if (H.cl != NULL)
		nghttp2_session_del(H.cl);
	uv_run(&H.loop, UV_RUN_NOWAIT);
	assert_int_equal(uv_loop_close(&H.loop), 0);
	grpc_server_free(H.g);
	kv_buf_free(&H.to_client);
	for (int i = 0; i < H.ncs; i++) {
		kv_buf_free(&H.cs[i].req);
		kv_buf_free(&H.cs[i].data);
	}
	return 0;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_unary_echo(void **state)
{
	struct cstream *c;
	const unsigned char *m;
	size_t len;
	(void)state;

	c = call_unary("/kvtest.Echo/Unary", "hello", 5);
	assert_true(c->closed);
	assert_int_equal(c->close_code, 0);
	assert_int_equal(c->http_status, 200);
	assert_string_equal(c->ctype, "application/grpc");
	assert_int_equal(c->grpc_status, 0);
	assert_int_equal(c->header_blocks, 2); /* headers + trailers */
	m = resp_msg(c, 0, &len);
	assert_non_null(m);
	assert_int_equal(len, 5);
	assert_memory_equal(m, "hello", 5);
	assert_int_equal(resp_count(c), 1);

	/* etcdctl's endpoint commands send a URL as :authority. */
	authority = "http://127.0.0.1:2379";
	c = call_unary("/kvtest.Echo/Unary", "url", 3);
	authority = "localhost";
	assert_int_equal(c->grpc_status, 0);
	assert_int_equal(resp_count(c), 1);

	/* An empty message is a message. */
	c = call_unary("/kvtest.Echo/Unary", "", 0);
	assert_int_equal(c->grpc_status, 0);
	assert_int_equal(resp_count(c), 1);

	/* An error status, trailers-only, percent-encoded. */
	c = call_unary("/kvtest.Echo/Unary", "fail", 4);
	assert_int_equal(c->grpc_status, GRPC_NOT_FOUND);
	assert_string_equal(c->grpc_message, "no such thing: 100%25");
	assert_int_equal(c->header_blocks, 1);
	assert_int_equal(c->data.len, 0);
	assert_int_equal(h2_session_stream_count(H.s), 0);
}

static void test_server_streaming(void **state)
{
	struct cstream *c;
	(void)state;

	c = call_unary("/kvtest.Echo/ServerStream", "50 1000", 7);
	assert_true(c->closed);
	assert_int_equal(c->grpc_status, 0);
	assert_int_equal(resp_count(c), 50);
	for (int i = 0; i < 50; i++) {
		size_t len;
		const unsigned char *m = resp_msg(c, i, &len);
		char want[16];
		snprintf(want, sizeof(want), "%d", 50 - i);
		assert_int_equal(len, 1000);
		assert_string_equal((const char *)m, want);
	}
}

static void test_bidi(void **state)
{
	struct cstream *c;
	(void)state;

	c = call_open("/kvtest.Echo/Bidi", "application/grpc+proto", NULL);
	cstream_append_msg(c, "one", 3, 0);
	pump();
	assert_false(c->closed);
	assert_int_equal(resp_count(c), 1);
	assert_string_equal(c->ctype, "application/grpc+proto");
	cstream_append_msg(c, "two", 3, 0);
	cstream_append_msg(c, "three", 5, 0);
	cstream_kick(c);
	pump();
	assert_int_equal(resp_count(c), 3);
	assert_false(c->closed);
	c->req_end = true;
	cstream_kick(c);
	pump();
	assert_true(c->closed);
	assert_int_equal(c->grpc_status, 0);
	assert_int_equal(S.messages, 3);
}

/* Messages larger than the 64 KiB windows both ways. */
static void test_large_messages(void **state)
{
	size_t n = 1500 * 1024, len;
	unsigned char *big = malloc(n);
	struct cstream *c;
	const unsigned char *m;
	(void)state;

	for (size_t i = 0; i < n; i++)
		big[i] = (unsigned char)(i * 7);
	c = call_unary("/kvtest.Echo/Unary", big, n);
	assert_true(c->closed);
	assert_int_equal(c->grpc_status, 0);
	m = resp_msg(c, 0, &len);
	assert_int_equal(len, n);
	assert_memory_equal(m, big, n);
	free(big);

	/* Server streaming of 3 MiB total. */
	c = call_unary("/kvtest.Echo/ServerStream", "3 1048576", 9);
	assert_int_equal(c->grpc_status, 0);
	assert_int_equal(resp_count(c), 3);
}

/* A paused handler holds the client to one stream window. */
static void test_recv_flow_control(void **state)
{
	struct cstream *c;
	unsigned char chunk[16384];
	(void)state;

	memset(chunk, 'z', sizeof(chunk));
	S.pause_bidi = true;
	c = call_open("/kvtest.Echo/Bidi", "application/grpc", NULL);
	for (int i = 0; i < 40; i++) /* 640 KiB */
		cstream_append_msg(c, chunk, sizeof(chunk), 0);
	pump();
	assert_int_equal(S.messages, 1);
	assert_non_null(S.held);
	/* The client is stuck at the window, most of its data unsent. */
	assert_int_equal(nghttp2_session_get_stream_remote_window_size(H.cl,
								       c->id),
			 0);
	assert_true(c->req.len - c->req_off > 400 * 1024);

	S.pause_bidi = false;
	grpc_call_pause_recv(S.held, false);
	pump();
	assert_int_equal(S.messages, 40);
	c->req_end = true;
	cstream_kick(c);
	pump();
	assert_true(c->closed);
	assert_int_equal(c->grpc_status, 0);
	assert_int_equal(resp_count(c), 40);
}

/* A client that stops reading: the server stops producing; the streamer
 * sees KV_EAGAIN and resumes on writable. */
static void test_slow_reader(void **state)
{
	struct cstream *c;
	(void)state;

	H.io_limit = 256 * 1024;
	c = call_open("/kvtest.Echo/ServerStream", "application/grpc", NULL);
	cstream_append_msg(c, "400 65536", 9, 0); /* 25 MiB */
	c->req_end = true;
	/* Send the request without reading the answer. */
	{
		const uint8_t *p;
		ssize_t n;
		while ((n = nghttp2_session_mem_send(H.cl, &p)) > 0)
			h2_session_feed(H.s, (const char *)p, (size_t)n);
	}
	assert_true(S.eagain > 0);
	/* Bounded: the transport got at most its limit plus a frame. */
	assert_true(H.to_client.len < H.io_limit + 32 * 1024);
	pump();
	assert_true(c->closed);
	assert_int_equal(c->grpc_status, 0);
	assert_int_equal(resp_count(c), 400);
}

static void test_max_message_size(void **state)
{
	unsigned char big[2000];
	struct cstream *c;
	(void)state;

	memset(big, 1, sizeof(big));
	c = call_unary("/kvtest.Echo/Unary", big, 1024);
	assert_int_equal(c->grpc_status, 0);
	c = call_unary("/kvtest.Echo/Unary", big, sizeof(big));
	assert_true(c->closed);
	assert_int_equal(c->grpc_status, GRPC_RESOURCE_EXHAUSTED);
	assert_string_equal(c->grpc_message,
			    "grpc: received message larger than max "
			    "(2000 vs. 1024)");
	/* On a bidi stream the handler is cancelled with the status. */
	c = call_open("/kvtest.Echo/Bidi", "application/grpc", NULL);
	cstream_append_msg(c, big, 10, 0);
	cstream_append_msg(c, big, sizeof(big), 0);
	pump();
	assert_true(c->closed);
	assert_int_equal(c->grpc_status, GRPC_RESOURCE_EXHAUSTED);
	assert_int_equal(S.cancel_status, GRPC_RESOURCE_EXHAUSTED);
	assert_int_equal(resp_count(c), 1);
	assert_int_equal(h2_session_stream_count(H.s), 0);
}

static void test_compressed_flag(void **state)
{
	struct cstream *c;
	(void)state;

	c = call_open("/kvtest.Echo/Unary", "application/grpc", NULL);
	cstream_append_msg(c, "x", 1, 1);
	c->req_end = true;
	pump();
	assert_int_equal(c->grpc_status, GRPC_INTERNAL);
	assert_string_equal(c->grpc_message,
			    "grpc: compressed flag set with identity or empty "
			    "encoding");
}

static void test_bad_content_type(void **state)
{
	struct cstream *c;
	(void)state;

	c = call_open("/kvtest.Echo/Unary", "text/plain", NULL);
	cstream_append_msg(c, "x", 1, 0);
	c->req_end = true;
	pump();
	assert_true(c->closed);
	assert_int_equal(c->http_status, 415);
	assert_int_equal(c->grpc_status, GRPC_INVALID_ARGUMENT);
	assert_string_equal(c->grpc_message,
			    "invalid gRPC request content-type "
			    "\"text/plain\"");
	c = call_open_method("GET", "/kvtest.Echo/Unary", "application/grpc",
			     NULL);
	c->req_end = true;
	pump();
	assert_int_equal(c->http_status, 405);
	assert_int_equal(c->grpc_status, GRPC_INTERNAL);
	assert_string_equal(c->grpc_message,
			    "Received a HEADERS frame with :method \"GET\" "
			    "which should be POST");
	c = call_open("/kvtest.Echo/Unary", "application/grpcx", NULL);
	c->req_end = true;
	pump();
	assert_int_equal(c->http_status, 415);
	c = call_open("/kvtest.Echo/Unary", NULL, NULL);
	c->req_end = true;
	pump();
	assert_int_equal(c->http_status, 415);
	assert_int_equal(h2_session_stream_count(H.s), 0);
}

static void test_unknown_method(void **state)
{
	struct cstream *c;
	(void)state;

	c = call_unary("/kvtest.Echo/Nope", "x", 1);
	assert_true(c->closed);
	assert_int_equal(c->http_status, 200);
	assert_int_equal(c->grpc_status, GRPC_UNIMPLEMENTED);
	assert_string_equal(c->grpc_message,
			    "unknown method Nope for service kvtest.Echo");
	c = call_unary("/etcdserverpb.KV/Range", "x", 1);
	assert_int_equal(c->grpc_status, GRPC_UNIMPLEMENTED);
	assert_string_equal(c->grpc_message,
			    "unknown service etcdserverpb.KV");
	c = call_unary("/nonsense", "x", 1);
	assert_int_equal(c->grpc_status, GRPC_UNIMPLEMENTED);
	assert_string_equal(c->grpc_message,
			    "malformed method name: \"/nonsense\"");
}

static void test_timeout(void **state)
{
	struct cstream *c;
	(void)state;

	c = call_open("/kvtest.Echo/Unary", "application/grpc", "50m");
	cstream_append_msg(c, "wait", 4, 0);
	c->req_end = true;
	pump();
	assert_non_null(S.held);
	assert_false(c->closed);
	run_for(150);
	assert_true(c->closed);
	assert_null(S.held);
	assert_int_equal(S.cancel_status, GRPC_DEADLINE_EXCEEDED);
	assert_int_equal(c->grpc_status, GRPC_DEADLINE_EXCEEDED);
	assert_string_equal(c->grpc_message, "context deadline exceeded");

	/* A deadline that does not pass changes nothing. */
	c = call_open("/kvtest.Echo/Unary", "application/grpc", "10S");
	cstream_append_msg(c, "hi", 2, 0);
	c->req_end = true;
	pump();
	assert_int_equal(c->grpc_status, 0);

	/* Malformed -> 400 / INTERNAL. */
	c = call_open("/kvtest.Echo/Unary", "application/grpc", "10x");
	c->req_end = true;
	pump();
	assert_int_equal(c->http_status, 400);
	assert_int_equal(c->grpc_status, GRPC_INTERNAL);
	assert_string_equal(c->grpc_message,
			    "malformed grpc-timeout: transport: timeout unit is "
			    "not recognized: \"10x\"");
	c = call_open("/kvtest.Echo/Unary", "application/grpc", "1a2S");
	c->req_end = true;
	pump();
	assert_string_equal(c->grpc_message,
			    "malformed grpc-timeout: strconv.ParseInt: parsing "
			    "\"1a2\": invalid syntax");
	c = call_open("/kvtest.Echo/Unary", "application/grpc", "1234567890S");
	c->req_end = true;
	pump();
	assert_string_equal(c->grpc_message,
			    "malformed grpc-timeout: transport: timeout string "
			    "is too long: \"1234567890S\"");
}

static void test_parse_timeout(void **state)
{
	uint64_t ms;
	char enc[64];
	(void)state;

	assert_int_equal(grpc_parse_timeout("1H", &ms), 0);
	assert_int_equal(ms, 3600000);
	assert_int_equal(grpc_parse_timeout("2M", &ms), 0);
	assert_int_equal(ms, 120000);
	assert_int_equal(grpc_parse_timeout("3S", &ms), 0);
	assert_int_equal(ms, 3000);
	assert_int_equal(grpc_parse_timeout("99999999m", &ms), 0);
	assert_int_equal(ms, 99999999);
	assert_int_equal(grpc_parse_timeout("1500u", &ms), 0);
	assert_int_equal(ms, 2);
	assert_int_equal(grpc_parse_timeout("1n", &ms), 0);
	assert_int_equal(ms, 1);
	assert_int_equal(grpc_parse_timeout("123456789m", &ms), KV_EINVAL);
	assert_int_equal(grpc_parse_timeout("S", &ms), KV_EINVAL);
	assert_int_equal(grpc_parse_timeout("1", &ms), KV_EINVAL);
	assert_int_equal(grpc_parse_timeout("1SS", &ms), KV_EINVAL);
	assert_int_equal(grpc_parse_timeout("1s", &ms), KV_EINVAL);

	assert_int_equal(grpc_percent_encode("a b%\n\xc3\xa9", enc, sizeof(enc)),
			 15);
	assert_string_equal(enc, "a b%25%0A%C3%A9");
	assert_int_equal(grpc_percent_encode("%%%%", enc, 5), 12);
	assert_string_equal(enc, "%25");
}

static void test_rst_mid_request(void **state)
{
	struct cstream *c;
	(void)state;

	/* A unary request cut off before its message completes. */
	c = call_open("/kvtest.Echo/Unary", "application/grpc", NULL);
	c->req.len = 0;
	assert_int_equal(kv_buf_append(&c->req, "\0\0\0\x10\0ab", 7), 0);
	pump();
	nghttp2_submit_rst_stream(H.cl, NGHTTP2_FLAG_NONE, c->id,
				  NGHTTP2_CANCEL);
	pump();
	assert_true(c->closed);
	assert_int_equal(S.cancels, 0); /* the handler never started */
	assert_int_equal(h2_session_stream_count(H.s), 0);

	/* A held unary call and a bidi call: both handlers cancelled. */
	c = call_unary("/kvtest.Echo/Unary", "wait", 4);
	assert_non_null(S.held);
	nghttp2_submit_rst_stream(H.cl, NGHTTP2_FLAG_NONE, c->id,
				  NGHTTP2_CANCEL);
	pump();
	assert_null(S.held);
	assert_int_equal(S.cancel_status, GRPC_CANCELLED);
	c = call_open("/kvtest.Echo/Bidi", "application/grpc", NULL);
	cstream_append_msg(c, "one", 3, 0);
	assert_int_equal(kv_buf_append(&c->req, "\0\0\0\0\x09xy", 7), 0);
	pump();
	nghttp2_submit_rst_stream(H.cl, NGHTTP2_FLAG_NONE, c->id,
				  NGHTTP2_CANCEL);
	pump();
	assert_int_equal(S.cancels, 2);
	assert_int_equal(h2_session_stream_count(H.s), 0);
	/* The connection still works. */
	c = call_unary("/kvtest.Echo/Unary", "ok", 2);
	assert_int_equal(c->grpc_status, 0);
}

/* A unary request ended without a message. */
static void test_unary_without_message(void **state)
{
	struct cstream *c;
	(void)state;

	c = call_open("/kvtest.Echo/Unary", "application/grpc", NULL);
	c->req_end = true;
	pump();
	assert_true(c->closed);
	assert_int_equal(c->grpc_status, GRPC_UNKNOWN);
	assert_string_equal(c->grpc_message, "EOF");

	/* Or with half a message. */
	c = call_open("/kvtest.Echo/Unary", "application/grpc", NULL);
	assert_int_equal(kv_buf_append(&c->req, "\0\0\0\0\x09xy", 7), 0);
	c->req_end = true;
	pump();
	assert_int_equal(c->grpc_status, GRPC_UNKNOWN);
	assert_string_equal(c->grpc_message, "unexpected EOF");
	assert_int_equal(S.cancels, 0);
	assert_int_equal(h2_session_stream_count(H.s), 0);
}

static void test_garbage_after_preface(void **state)
{
	static const char junk[] = "this is not a frame at all, no no no "
				   "\xff\xff\xff\xff\xff\xff\xff\xff";
	(void)state;

	/* Replace the client: raw bytes. */
	nghttp2_session_del(H.cl);
	H.cl = NULL;
	h2_session_free(H.s);
	H.s = NULL;
	kv_buf_reset(&H.to_client);
	assert_int_equal(h2_session_new(NULL, &test_io, NULL, grpc_on_stream,
					H.g, &H.s),
			 0);
	h2_session_writable(H.s);
	h2_session_feed(H.s, H2_PREFACE, H2_PREFACE_LEN);
	assert_false(H.io_closed);
	h2_session_feed(H.s, junk, sizeof(junk));
	assert_true(H.io_closed);
	assert_true(h2_session_errmsg(H.s)[0] != '\0');
	/* Further input is ignored. */
	h2_session_feed(H.s, junk, sizeof(junk));

	/* And a connection without the preface. */
	h2_session_free(H.s);
	H.io_closed = false;
	kv_buf_reset(&H.to_client);
	assert_int_equal(h2_session_new(NULL, &test_io, NULL, grpc_on_stream,
					H.g, &H.s),
			 0);
	h2_session_feed(H.s, "GET / HTTP/1.1\r\n\r\n", 18);
	assert_true(H.io_closed);
}

static void test_goaway_on_shutdown(void **state)
{
	struct cstream *held, *racing, *c;
	(void)state;

	held = call_unary("/kvtest.Echo/Unary", "wait", 4);
	assert_non_null(S.held);
	h2_session_end(H.s);
	/* A call the client sends before it saw the GOAWAY is served: the
	 * final GOAWAY follows a PING round trip. */
	racing = call_open("/kvtest.Echo/Unary", "application/grpc", NULL);
	cstream_append_msg(racing, "race", 4, 0);
	racing->req_end = true;
	pump();
	assert_true(racing->closed);
	assert_int_equal(racing->grpc_status, 0);
	assert_true(H.goaway);
	assert_int_equal(H.goaway_code, NGHTTP2_NO_ERROR);
	assert_int_equal(H.goaway_last, racing->id);
	assert_false(H.io_closed); /* the open call may finish */
	/* New streams are refused. */
	c = call_unary("/kvtest.Echo/Unary", "late", 4);
	assert_true(c->closed);
	assert_int_not_equal(c->close_code, 0);
	assert_true(h2_session_busy(H.s));
	grpc_call_send(S.held, "done", 4);
	grpc_call_finish(S.held, GRPC_OK, NULL);
	S.held = NULL;
	pump();
	assert_true(held->closed);
	assert_int_equal(held->grpc_status, 0);
	assert_true(H.io_closed);
	assert_false(h2_session_busy(H.s));
}

/* Closing the session with calls open cancels their handlers. */
static void test_session_free_cancels(void **state)
{
	(void)state;
	call_unary("/kvtest.Echo/Unary", "wait", 4);
	call_open("/kvtest.Echo/Bidi", "application/grpc", "5S");
	pump();
	assert_int_equal(h2_session_stream_count(H.s), 2);
	h2_session_free(H.s);
	H.s = NULL;
	assert_int_equal(S.cancels, 2);
	assert_int_equal(S.cancel_status, GRPC_CANCELLED);
}

static void test_sniff(void **state)
{
	(void)state;
	assert_int_equal(net_proto_sniff("", 0), NET_PROTO_UNKNOWN);
	assert_int_equal(net_proto_sniff("PRI * HT", 8), NET_PROTO_UNKNOWN);
	assert_int_equal(net_proto_sniff(H2_PREFACE, H2_PREFACE_LEN),
			 NET_PROTO_H2);
	assert_int_equal(net_proto_sniff(H2_PREFACE "\0\0", 26),
			 NET_PROTO_H2);
	assert_int_equal(net_proto_sniff("POST /v3/kv/range", 17),
			 NET_PROTO_HTTP1);
	assert_int_equal(net_proto_sniff("PRI * HTTP/1.1", 14),
			 NET_PROTO_HTTP1);
	assert_int_equal(net_proto_sniff("G", 1), NET_PROTO_HTTP1);
}

/* Many concurrent streams on one connection. */
static void test_many_streams(void **state)
{
	struct cstream *c[MAX_CSTREAMS - 1];
	(void)state;

	for (int i = 0; i < MAX_CSTREAMS - 1; i++) {
		char m[16];
		int n = snprintf(m, sizeof(m), "m%d", i);
		c[i] = call_open("/kvtest.Echo/Unary", "application/grpc",
				 NULL);
		cstream_append_msg(c[i], m, (size_t)n, 0);
		c[i]->req_end = true;
	}
	pump();
	for (int i = 0; i < MAX_CSTREAMS - 1; i++) {
		size_t len;
		char m[16];
		int n = snprintf(m, sizeof(m), "m%d", i);
		const unsigned char *r = resp_msg(c[i], 0, &len);
		assert_int_equal(c[i]->grpc_status, 0);
		assert_int_equal(len, (size_t)n);
		assert_memory_equal(r, m, len);
	}
}

/* Request headers over the limit reset that stream only. */
static void test_header_limit(void **state)
{
	static char big[70 * 1024];
	nghttp2_nv nv[5];
	struct cstream *c;
	const char *names[] = { ":method", ":scheme", ":authority", ":path",
				"x-big" };
	const char *values[] = { "POST", "http", "localhost",
				 "/kvtest.Echo/Unary", big };
	(void)state;

	memset(big, 'b', sizeof(big) - 1);
	for (int i = 0; i < 5; i++) {
		nv[i].name = (uint8_t *)names[i];
		nv[i].namelen = strlen(names[i]);
		nv[i].value = (uint8_t *)values[i];
		nv[i].valuelen = strlen(values[i]);
		nv[i].flags = NGHTTP2_NV_FLAG_NONE;
	}
	c = &H.cs[H.ncs++];
	memset(c, 0, sizeof(*c));
	c->grpc_status = -1;
	c->id = nghttp2_submit_request(H.cl, NULL, nv, 5, NULL, NULL);
	assert_true(c->id > 0);
	pump();
	assert_true(c->closed);
	assert_int_not_equal(c->close_code, 0);
	assert_int_equal(h2_session_stream_count(H.s), 0);
	assert_false(H.io_closed);
	c = call_unary("/kvtest.Echo/Unary", "ok", 2);
	assert_int_equal(c->grpc_status, 0);
}

/* SETTINGS_MAX_CONCURRENT_STREAMS reaches the client, which holds a
 * third call until a stream closes (nghttp2 enforces it server-side). */
static void test_max_concurrent_streams(void **state)
{
	struct h2_config cfg = { .max_concurrent_streams = 2 };
	struct cstream *a, *b, *c;
	(void)state;

	h2_session_free(H.s);
	nghttp2_session_del(H.cl);
	H.cl = NULL;
	assert_int_equal(h2_session_new(&cfg, &test_io, NULL, grpc_on_stream,
					H.g, &H.s),
			 0);
	{
		nghttp2_session_callbacks *cbs;
		nghttp2_session_callbacks_new(&cbs);
		nghttp2_session_callbacks_set_on_header_callback(cbs,
								 cl_on_header);
		nghttp2_session_callbacks_set_on_stream_close_callback(
			cbs, cl_on_close);
		nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
			cbs, cl_on_data);
		assert_int_equal(nghttp2_session_client_new(&H.cl, cbs, NULL),
				 0);
		nghttp2_session_callbacks_del(cbs);
	}
	kv_buf_reset(&H.to_client);
	nghttp2_submit_settings(H.cl, NGHTTP2_FLAG_NONE, NULL, 0);
	pump();
	a = call_unary("/kvtest.Echo/Unary", "wait", 4);
	b = call_open("/kvtest.Echo/Bidi", "application/grpc", NULL);
	pump();
	assert_int_equal(nghttp2_session_get_remote_settings(
				 H.cl, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS),
			 2);
	c = call_open("/kvtest.Echo/Unary", "application/grpc", NULL);
	cstream_append_msg(c, "x", 1, 0);
	c->req_end = true;
	pump();
	assert_false(a->closed);
	assert_false(b->closed);
	assert_false(c->closed);
	assert_int_equal(h2_session_stream_count(H.s), 2);
	grpc_call_finish(S.held, GRPC_OK, NULL);
	S.held = NULL;
	pump();
	assert_true(a->closed);
	assert_true(c->closed);
	assert_int_equal(c->grpc_status, 0);
}

/* ---- plain HTTP/2 (no gRPC) ---------------------------------------------- */

static struct h2_stream *raw_held;
static int raw_closes;
static uint32_t raw_close_code;
static size_t raw_bytes;

static void raw_on_data(struct h2_stream *st, const unsigned char *p,
			size_t n)
{
	(void)p;
	raw_bytes += n;
	h2_stream_consume(st, n);
}

static void raw_on_close(struct h2_stream *st, uint32_t code)
{
	if (raw_held == st)
		raw_held = NULL;
	raw_closes++;
	raw_close_code = code;
}

/* Answers once the whole request body arrived. */
static void raw_on_end(struct h2_stream *st)
{
	static const struct h2_header hdrs[] = { { "x-kind", "raw" } };
	if (strcmp(h2_stream_header(st, ":path"), "/body") != 0)
		return;
	assert_true(h2_stream_remote_closed(st));
	assert_int_equal(raw_bytes, 12);
	assert_int_equal(h2_stream_write(st, "x", 1), KV_EINVAL);
	assert_int_equal(h2_stream_respond(st, 200, hdrs, 1, false), 0);
	assert_int_equal(h2_stream_write(st, "abc", 3), 0);
	assert_int_equal(h2_stream_end(st, NULL, 0), 0);
	assert_int_equal(h2_stream_end(st, NULL, 0), KV_EINVAL);
}

static const struct h2_stream_handler raw_h = {
	.on_data = raw_on_data,
	.on_end = raw_on_end,
	.on_close = raw_on_close,
};

static void raw_on_stream(struct h2_stream *st, void *data)
{
	const char *path = h2_stream_header(st, ":path");
	size_t n;
	(void)data;

	assert_non_null(h2_stream_headers(st, &n));
	assert_true(n >= 4);
	assert_null(h2_stream_conn(st));
	h2_stream_set_handler(st, &raw_h, NULL);
	assert_ptr_equal(h2_stream_user(st), NULL);
	assert_ptr_equal(h2_stream_session(st), H.s);
	if (strcmp(path, "/empty") == 0) {
		assert_int_equal(h2_stream_respond(st, 204, NULL, 0, true), 0);
		assert_int_equal(h2_stream_respond(st, 200, NULL, 0, true),
				 KV_EINVAL);
		assert_int_equal(h2_stream_write(st, "x", 1), KV_EINVAL);
	} else if (strcmp(path, "/body") == 0) {
		/* raw_on_end answers */
	} else {
		raw_held = st;
		assert_int_equal(h2_stream_respond(st, 200, NULL, 0, false),
				 0);
		assert_int_equal(h2_stream_write(st, "partial", 7), 0);
	}
}

static void test_h2_plain_streams(void **state)
{
	struct cstream *c;
	(void)state;

	raw_held = NULL;
	raw_closes = 0;
	raw_bytes = 0;
	h2_session_free(H.s);
	assert_int_equal(h2_session_new(NULL, &test_io, NULL, raw_on_stream,
					NULL, &H.s),
			 0);
	nghttp2_session_del(H.cl);
	H.cl = NULL;
	{
		nghttp2_session_callbacks *cbs;
		nghttp2_session_callbacks_new(&cbs);
		nghttp2_session_callbacks_set_on_header_callback(cbs,
								 cl_on_header);
		nghttp2_session_callbacks_set_on_stream_close_callback(
			cbs, cl_on_close);
		nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
			cbs, cl_on_data);
		assert_int_equal(nghttp2_session_client_new(&H.cl, cbs, NULL),
				 0);
		nghttp2_session_callbacks_del(cbs);
	}
	kv_buf_reset(&H.to_client);
	nghttp2_submit_settings(H.cl, NGHTTP2_FLAG_NONE, NULL, 0);

	c = call_open("/empty", NULL, NULL);
	c->req_end = true;
	pump();
	assert_true(c->closed);
	assert_int_equal(c->http_status, 204);
	assert_int_equal(c->close_code, 0);

	c = call_open("/body", NULL, NULL);
	assert_int_equal(kv_buf_append(&c->req, "request body", 12), 0);
	c->req_end = true;
	pump();
	assert_true(c->closed);
	assert_int_equal(c->http_status, 200);
	assert_int_equal(c->data.len, 3);
	assert_memory_equal(c->data.base, "abc", 3);
	assert_int_equal(raw_bytes, 12);

	/* The application resets a stream mid-answer. */
	c = call_open("/reset", NULL, NULL);
	pump();
	assert_non_null(raw_held);
	assert_int_equal(c->data.len, 7);
	{
		struct h2_stream *st = raw_held;
		assert_int_equal(h2_stream_reset(st, H2_CANCEL), 0);
		/* Still valid until on_close: writes are refused. */
		if (raw_held != NULL)
			assert_int_equal(h2_stream_write(st, "x", 1),
					 KV_ECLOSED);
	}
	pump();
	assert_true(c->closed);
	assert_int_equal(c->close_code, NGHTTP2_CANCEL);
	assert_null(raw_held);
	assert_int_equal(raw_closes, 3);
	assert_int_equal(raw_close_code, NGHTTP2_CANCEL);
	assert_int_equal(h2_session_stream_count(H.s), 0);
}

/* grpc_server_set_fallback: streams that are not gRPC go to another
 * h2_on_stream (kvd: the JSON gateway), gRPC ones still to the methods. */
static void test_grpc_fallback(void **state)
{
	struct cstream *c;
	(void)state;

	raw_held = NULL;
	raw_closes = 0;
	raw_bytes = 0;
	grpc_server_set_fallback(H.g, raw_on_stream, NULL);

	c = call_open("/body", "application/json", NULL);
	assert_int_equal(kv_buf_append(&c->req, "request body", 12), 0);
	c->req_end = true;
	pump();
	assert_true(c->closed);
	assert_int_equal(c->http_status, 200);
	assert_int_equal(c->grpc_status, -1);
	assert_int_equal(c->data.len, 3);
	assert_memory_equal(c->data.base, "abc", 3);
	/* no content-type, or one that only starts like gRPC's */
	c = call_open("/empty", NULL, NULL);
	c->req_end = true;
	pump();
	assert_int_equal(c->http_status, 204);
	c = call_open("/empty", "application/grpcx", NULL);
	c->req_end = true;
	pump();
	assert_int_equal(c->http_status, 204);
	assert_int_equal(raw_closes, 3);

	/* gRPC content-types still reach gRPC */
	c = call_unary("/kvtest.Echo/Unary", "hi", 2);
	assert_true(c->closed);
	assert_int_equal(c->grpc_status, GRPC_OK);
	c = call_open("/kvtest.Echo/Nope", "application/grpc+proto", NULL);
	c->req_end = true;
	pump();
	assert_int_equal(c->http_status, 200);
	assert_int_equal(c->grpc_status, GRPC_UNIMPLEMENTED);
	c = call_open("/kvtest.Echo/Nope", "application/grpc;charset=x",
		      NULL);
	c->req_end = true;
	pump();
	assert_int_equal(c->grpc_status, GRPC_UNIMPLEMENTED);
	assert_int_equal(raw_closes, 3);

	/* without a fallback: grpc-go's 415 again */
	grpc_server_set_fallback(H.g, NULL, NULL);
	c = call_open("/body", "text/plain", NULL);
	c->req_end = true;
	pump();
	assert_int_equal(c->http_status, 415);
	assert_int_equal(c->grpc_status, GRPC_INVALID_ARGUMENT);
	assert_int_equal(raw_closes, 3);
	assert_int_equal(h2_session_stream_count(H.s), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_timeout),
		cmocka_unit_test(test_sniff),
		cmocka_unit_test_setup_teardown(test_unary_echo, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_server_streaming, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_bidi, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_messages, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_recv_flow_control, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_slow_reader, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_max_message_size,
						setup_small, teardown),
		cmocka_unit_test_setup_teardown(test_compressed_flag, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_bad_content_type, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_unknown_method, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rst_mid_request, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_unary_without_message,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_after_preface,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_goaway_on_shutdown, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_session_free_cancels,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_streams, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_header_limit, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_h2_plain_streams, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_grpc_fallback, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_max_concurrent_streams,
						setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

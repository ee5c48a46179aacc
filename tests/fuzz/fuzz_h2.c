/* fuzz_h2.c — libFuzzer target for the HTTP/2 server session and the gRPC
 * layer on top of it (net/h2.h, net/grpc.h).
 *
 * Drives an h2_session over an in-memory struct h2_io, as
 * tests/unit/h2/test_h2.c does, with no sockets; gRPC deadlines use a
 * private libuv loop run between chunks. Input layout:
 *   byte 0   mode: bit0 the transport is not writable during feeds (made
 *            writable between chunks), bit1 end the session (GOAWAY)
 *            before freeing, bit2 hold calls and answer them after the
 *            chunk, bit3 do not prepend the connection preface, bit4 a
 *            1 KiB message limit
 *   byte 1   chunk size (0 = all at once)
 *   rest     bytes from the peer, fed in chunks (after the preface)
 * Invariants (abort on violation): nothing is written after close; the
 * output starts with a SETTINGS frame; every started call is finished or
 * cancelled exactly once; ASan/UBSan/LeakSanitizer check memory. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/buf.h"
#include "kv/errors.h"
#include "net/grpc.h"
#include "net/h2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_HELD 64

struct fake {
	struct kv_buf out;
	bool closed, writable;
	unsigned mode;
	struct grpc_call *held[MAX_HELD];
	int nheld;
	int started, ended; /* calls started; finished or cancelled */
};

static struct fake F;

static int io_write(void *io, const void *p, size_t n)
{
	(void)io;
	if (F.closed)
		abort();
	/* Keep only a bounded tail; the head is checked once. */
	if (F.out.len > (1u << 20))
		F.out.len = 9;
	return kv_buf_append(&F.out, p, n);
}

static bool io_writable(void *io)
{
	(void)io;
	return F.writable && !F.closed;
}

static void io_close(void *io)
{
	(void)io;
	F.closed = true;
}

static const struct h2_io fake_io = {
	.write = io_write,
	.writable = io_writable,
	.close = io_close,
};

static void forget(struct grpc_call *call)
{
	for (int i = 0; i < F.nheld; i++)
		if (F.held[i] == call)
			F.held[i] = F.held[--F.nheld];
}

static void finish(struct grpc_call *call, int status)
{
	forget(call);
	if (grpc_call_finish(call, status, "done\n%") != 0)
		abort();
	F.ended++;
}

static void on_cancel(struct grpc_call *call, int status)
{
	(void)status;
	forget(call);
	F.ended++;
}

static void on_start(struct grpc_call *call, const unsigned char *msg,
		     size_t len, void *data)
{
	(void)data;
	F.started++;
	if (msg != NULL) {
		int rc = grpc_call_send(call, msg, len);
		if (rc != 0 && rc != KV_EAGAIN)
			abort();
	}
	if ((F.mode & 4) && F.nheld < MAX_HELD) {
		F.held[F.nheld++] = call;
		return;
	}
	if (msg != NULL)
		finish(call, len % 17);
}

static void on_message(struct grpc_call *call, const unsigned char *msg,
		       size_t len)
{
	int rc = grpc_call_send(call, msg, len);
	bool client_streaming = strcmp(grpc_call_path(call), "/a.B/C") == 0;
	if (rc == KV_EAGAIN)
		grpc_call_pause_recv(call, true);
	else if (rc == KV_EINVAL && client_streaming)
		return; /* one response message only */
	else if (rc != 0)
		abort();
}

static void on_writable(struct grpc_call *call)
{
	grpc_call_pause_recv(call, false);
}

static void on_half_close(struct grpc_call *call)
{
	bool held = false;
	for (int i = 0; i < F.nheld; i++)
		held |= F.held[i] == call;
	if (!held)
		finish(call, 0);
}

static const struct grpc_handler unary_h = {
	.on_start = on_start,
	.on_cancel = on_cancel,
};
static const struct grpc_handler stream_h = {
	.on_start = on_start,
	.on_message = on_message,
	.on_writable = on_writable,
	.on_half_close = on_half_close,
	.on_cancel = on_cancel,
};

static struct grpc_server *make_server(uv_loop_t *loop, size_t max_recv)
{
	struct grpc_config gc = { .loop = loop, .max_recv_msg = max_recv };
	struct grpc_server *g;
	if (grpc_server_new(&gc, &g) != 0 ||
	    grpc_server_register(g, "/a.B/U", GRPC_UNARY, &unary_h, NULL) ||
	    grpc_server_register(g, "/a.B/S", GRPC_SERVER_STREAMING, &unary_h,
				 NULL) ||
	    grpc_server_register(g, "/a.B/C", GRPC_CLIENT_STREAMING,
				 &stream_h, NULL) ||
	    grpc_server_register(g, "/a.B/D", GRPC_BIDI, &stream_h, NULL))
		abort();
	return g;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uv_loop_t loop;
	static struct grpc_server *g, *gsmall;
	struct h2_session *s;
	size_t chunk, off = 0;

	if (g == NULL) {
		uv_loop_init(&loop);
		g = make_server(&loop, 0);
		gsmall = make_server(&loop, 1024);
	}
	if (size < 2)
		return 0;
	memset(&F, 0, sizeof(F));
	F.mode = data[0];
	chunk = data[1] ? data[1] : size;
	data += 2;
	size -= 2;
	F.writable = !(F.mode & 1);
	if (h2_session_new(NULL, &fake_io, NULL, grpc_on_stream,
			   (F.mode & 16) ? gsmall : g, &s) != 0)
		return 0;
	h2_session_writable(s);
	if (!(F.mode & 8))
		h2_session_feed(s, H2_PREFACE, H2_PREFACE_LEN);
	while (off < size && !F.closed) {
		size_t n = size - off < chunk ? size - off : chunk;
		h2_session_feed(s, (const char *)data + off, n);
		off += n;
		if (F.mode & 1) {
			F.writable = true;
			h2_session_writable(s);
			F.writable = false;
		}
		while (F.nheld > 0 && !F.closed)
			finish(F.held[F.nheld - 1], 0);
		uv_run(&loop, UV_RUN_NOWAIT);
	}
	if (F.mode & 2) {
		F.writable = true;
		h2_session_end(s);
	}
	/* The session's SETTINGS frame (type 4) comes first. */
	if (F.out.len >= 9 && F.out.base[3] != 4)
		abort();
	h2_session_free(s);
	uv_run(&loop, UV_RUN_NOWAIT);
	if (F.nheld != 0 || F.started != F.ended)
		abort();
	kv_buf_free(&F.out);
	return 0;
}

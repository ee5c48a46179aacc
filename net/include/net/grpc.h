/* net/grpc.h — gRPC server framing over net/h2.h streams.
 *
 * A struct grpc_server is a registration table (method path -> handler)
 * plus limits, shared by every connection of a listener. grpc_on_stream
 * is the h2_on_stream callback that serves one HTTP/2 request as a gRPC
 * call: it checks :method, content-type, grpc-encoding and grpc-timeout,
 * looks the path up, and answers malformed or unknown requests itself,
 * with grpc-go's status codes and messages (see net/README.md).
 *
 * Call lifetime. For a registered method the handler's on_start runs
 * once the request headers arrived (unary and server-streaming methods:
 * once the single request message arrived, which it receives as msg).
 * From then on the handler owns the call until it calls grpc_call_finish
 * or its on_cancel runs (RST_STREAM from the client, deadline passed,
 * connection gone, or a framing error); after either it must not touch
 * the call again. Memory is freed by the library when the HTTP/2 stream
 * closes, never while a callback of this call is running.
 *
 * Messages. Each request message is delivered whole to on_message (bytes
 * valid only during the call). grpc_call_send copies a message and frames
 * it; it says KV_EAGAIN when the stream's output is over its limit
 * (nothing queued) and on_writable runs when it may send again.
 * grpc_call_pause_recv stops delivery: the bytes wait unacknowledged, so
 * the client is held to one HTTP/2 window.
 *
 * Threads: everything runs on the loop thread that owns the connections;
 * a handler answering from another thread must hop back with
 * uv_async_send first. */
#ifndef KV_NET_GRPC_H
#define KV_NET_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/h2.h"

struct uv_loop_s;
struct grpc_server;
struct grpc_call;

/* etcd: --max-request-bytes (1.5 MiB) + 512 KiB (grpc.MaxRecvMsgSize). */
#define GRPC_DEFAULT_MAX_RECV ((size_t)2 * 1024 * 1024)

/* The status codes of the gRPC spec. */
enum grpc_status {
	GRPC_OK = 0,
	GRPC_CANCELLED = 1,
	GRPC_UNKNOWN = 2,
	GRPC_INVALID_ARGUMENT = 3,
	GRPC_DEADLINE_EXCEEDED = 4,
	GRPC_NOT_FOUND = 5,
	GRPC_ALREADY_EXISTS = 6,
	GRPC_PERMISSION_DENIED = 7,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_FAILED_PRECONDITION = 9,
	GRPC_ABORTED = 10,
	GRPC_OUT_OF_RANGE = 11,
	GRPC_UNIMPLEMENTED = 12,
	GRPC_INTERNAL = 13,
	GRPC_UNAVAILABLE = 14,
	GRPC_DATA_LOSS = 15,
	GRPC_UNAUTHENTICATED = 16,
};

enum grpc_kind {
	GRPC_UNARY,            /* one request, one response */
	GRPC_SERVER_STREAMING, /* one request, many responses */
	GRPC_CLIENT_STREAMING, /* many requests, one response */
	GRPC_BIDI,             /* many and many */
};

struct grpc_handler {
	/* The call begins. For GRPC_UNARY / GRPC_SERVER_STREAMING, msg is
	 * the request message (valid during the call); for the streaming
	 * kinds msg is NULL and messages come through on_message. Required.
	 * method_data is the pointer given to grpc_server_register. */
	void (*on_start)(struct grpc_call *call, const unsigned char *msg,
			 size_t len, void *method_data);
	/* A request message (streaming-request kinds only). */
	void (*on_message)(struct grpc_call *call, const unsigned char *msg,
			   size_t len);
	/* The client finished sending (streaming-request kinds only). */
	void (*on_half_close)(struct grpc_call *call);
	/* grpc_call_send may be retried after KV_EAGAIN. */
	void (*on_writable)(struct grpc_call *call);
	/* The call is over before the handler finished it: status is
	 * GRPC_CANCELLED (client reset, connection gone),
	 * GRPC_DEADLINE_EXCEEDED (grpc-timeout passed; the client gets that
	 * status) or the status the library sent for a bad request message
	 * (GRPC_RESOURCE_EXHAUSTED, GRPC_INTERNAL, ...). Last call. */
	void (*on_cancel)(struct grpc_call *call, int status);
};

struct grpc_config {
	/* Required for grpc-timeout deadlines (timers); the loop that runs
	 * the connections. */
	struct uv_loop_s *loop;
	/* Largest request message accepted; 0 = GRPC_DEFAULT_MAX_RECV. */
	size_t max_recv_msg;
};

/* Creates a server (method table). Returns 0 or KV_ENOMEM / KV_EINVAL
 * (no loop). *out is freed with grpc_server_free after every connection
 * using it closed. */
int grpc_server_new(const struct grpc_config *cfg, struct grpc_server **out);
void grpc_server_free(struct grpc_server *g);

/* Registers path ("/etcdserverpb.KV/Range"). h is kept by pointer (static
 * storage), method_data is passed to on_start. Returns 0, KV_EEXIST,
 * KV_EINVAL (path not "/service/method") or KV_ENOMEM. */
int grpc_server_register(struct grpc_server *g, const char *path,
			 enum grpc_kind kind, const struct grpc_handler *h,
			 void *method_data);

/* Hands every stream whose content-type is not application/grpc,
 * application/grpc+... or application/grpc;... to fn(st, data) instead of
 * answering HTTP 415 (etcd serves its JSON gateway on the same HTTP/2
 * port this way). fn gets the stream before anything was sent on it and
 * owns it as an h2_on_stream callee does (h2.h); fn NULL restores the
 * 415. Set it before connections use g. */
void grpc_server_set_fallback(struct grpc_server *g, h2_on_stream fn,
			      void *data);

/* The h2_on_stream callback; data is the struct grpc_server. */
void grpc_on_stream(struct h2_stream *st, void *data);

/* h2_attach with grpc_on_stream. */
int grpc_attach(struct net_conn *c, struct grpc_server *g,
		const struct h2_config *cfg, const char *first,
		size_t nfirst);

/* ---- calls --------------------------------------------------------------- */

void grpc_call_set_user(struct grpc_call *call, void *user);
void *grpc_call_user(const struct grpc_call *call);
/* The method path, e.g. "/kvtest.Echo/Unary". */
const char *grpc_call_path(const struct grpc_call *call);
/* A request metadata value ("token", "hasleader", ...), or NULL. Valid
 * until the call is finished or cancelled. */
const char *grpc_call_metadata(const struct grpc_call *call,
			       const char *name);

/* The connection the call came on (client address, certificate CN), or
 * NULL when the session is not on a net_conn (tests). */
struct net_conn *grpc_call_conn(const struct grpc_call *call);

/* Sends a response message (copied). The response headers go out with
 * the first message. Returns 0, KV_EAGAIN (wait for on_writable),
 * KV_EINVAL (finished, or a second message on a unary call) or
 * KV_ENOMEM. */
int grpc_call_send(struct grpc_call *call, const void *msg, size_t len);
/* True when grpc_call_send would not say KV_EAGAIN; a false answer also
 * arms on_writable. */
bool grpc_call_writable(struct grpc_call *call);
/* Stops (true) or resumes (false) on_message / on_half_close. */
void grpc_call_pause_recv(struct grpc_call *call, bool pause);
/* Ends the call with a status and a message (NULL or "" for none;
 * percent-encoded on the wire). Without any message sent this is a
 * trailers-only answer. The call belongs to the library afterwards.
 * Returns 0 or KV_EINVAL (already finished). */
int grpc_call_finish(struct grpc_call *call, int status, const char *msg);

/* Encodes msg the way grpc-message needs it (RFC 3986 percent-encoding
 * of bytes outside 0x20-0x7e and of '%'). Writes at most cap bytes
 * including a NUL; returns the full length it needed. */
size_t grpc_percent_encode(const char *msg, char *out, size_t cap);
/* Parses a grpc-timeout value ("100m", "5S"; up to 8 digits and one of
 * H M S m u n) into milliseconds (rounded up). Returns 0 or KV_EINVAL. */
int grpc_parse_timeout(const char *v, uint64_t *ms);

#endif

/* net/h2.h — HTTP/2 server sessions on libnghttp2, and protocol sniffing.
 *
 * A session turns the bytes of one connection into streams (requests) and
 * writes their answers. Like net/http.h it does no I/O itself: it writes
 * through a struct h2_io, so unit tests drive it with an in-memory client
 * and h2_attach() plugs it into a net/conn.h connection.
 *
 * Streams. h2_on_stream runs once a request's headers are complete; the
 * callee installs a struct h2_stream_handler (h2_stream_set_handler) to
 * receive the body and answers with h2_stream_respond / h2_stream_write /
 * h2_stream_end, at once or later from the loop. The handler's on_close is
 * the last call for a stream (finished, reset by the peer, refused, or the
 * connection went away): the stream is freed right after it returns.
 *
 * Flow control. Request data is delivered through on_data; the stream's
 * receive window reopens (WINDOW_UPDATE) only as the handler reports the
 * bytes processed (h2_stream_consume), so a handler that stops reading
 * holds the peer to one window (64 KiB by default) of buffered input per
 * stream. The connection-level window (1 MiB) is reopened as data
 * arrives; each stream's own window is what bounds it.
 *
 * Output. Answer data is copied into a per-stream buffer and framed by
 * nghttp2 as the peer's windows allow. h2_stream_write refuses with
 * KV_EAGAIN when the stream has H2_STREAM_OUT_LIMIT bytes buffered or the
 * session has H2_SESSION_OUT_LIMIT buffered over all streams (one write is
 * always accepted below the limits, whatever its size), then the stream's
 * on_writable runs once it may write again. Frames are produced only while
 * the transport is writable (net_conn_writable), so a peer that stops
 * reading stalls its session instead of growing server memory.
 *
 * Threads: a session and its streams belong to the loop thread. */
#ifndef KV_NET_H2_H
#define KV_NET_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct net_conn;
struct h2_session;
struct h2_stream;

/* Buffered answer bytes above which h2_stream_write says KV_EAGAIN. */
#define H2_STREAM_OUT_LIMIT ((size_t)256 * 1024)
#define H2_SESSION_OUT_LIMIT ((size_t)8 * 1024 * 1024)

/* HTTP/2 error codes used with h2_stream_reset and on_close. */
#define H2_NO_ERROR 0x0u
#define H2_PROTOCOL_ERROR 0x1u
#define H2_INTERNAL_ERROR 0x2u
#define H2_REFUSED_STREAM 0x7u
#define H2_CANCEL 0x8u

struct h2_config {
	/* SETTINGS_MAX_CONCURRENT_STREAMS; 0 = 1000. etcd advertises
	 * MaxUint32; we keep a bound because every open stream may hold
	 * up to a window of input and a partial message (see grpc.h). A
	 * thousand is far above what one client multiplexes (kube-apiserver
	 * keeps a few hundred watches per connection). */
	uint32_t max_concurrent_streams;
	/* SETTINGS_INITIAL_WINDOW_SIZE for streams; 0 = 65535. */
	uint32_t initial_window;
	/* Request header bytes (names + values) per stream; over -> the
	 * stream is reset. 0 = 64 KiB. */
	size_t max_header_bytes;
};

struct h2_header {
	const char *name;  /* lowercase; pseudo-headers start with ':' */
	const char *value;
};

struct h2_stream_handler {
	/* Request body bytes, valid only during the call. */
	void (*on_data)(struct h2_stream *st, const unsigned char *p,
			size_t n);
	/* The peer finished its half (END_STREAM); no more on_data. */
	void (*on_end)(struct h2_stream *st);
	/* The stream may write again after h2_stream_write said KV_EAGAIN. */
	void (*on_writable)(struct h2_stream *st);
	/* Last call: error_code is H2_NO_ERROR after a complete exchange,
	 * else the RST_STREAM / GOAWAY code (H2_CANCEL when the connection
	 * closed). The stream is freed when this returns. */
	void (*on_close)(struct h2_stream *st, uint32_t error_code);
};

/* A new request; its headers are readable with h2_stream_header*. Only
 * HTTP/2 framing is validated (nghttp2's HTTP messaging checks are off,
 * as grpc-go is lenient there: etcdctl sends a URL as :authority), so the
 * callee checks the pseudo-headers it needs (:method, :path). The
 * callee sets a handler (or answers at once); a stream without a handler
 * gets its data dropped and is freed silently when it closes. */
typedef void (*h2_on_stream)(struct h2_stream *st, void *data);

/* ---- streams ----------------------------------------------------------- */

void h2_stream_set_handler(struct h2_stream *st,
			   const struct h2_stream_handler *h, void *user);
void *h2_stream_user(const struct h2_stream *st);
int32_t h2_stream_id(const struct h2_stream *st);
struct h2_session *h2_stream_session(const struct h2_stream *st);
/* The connection a session runs on (h2_attach), for net_conn_peer(),
 * net_conn_peer_cn() and the like; NULL for a session made with
 * h2_session_new. Valid for the stream's life. */
struct net_conn *h2_stream_conn(const struct h2_stream *st);
/* The first request header called name (exact lowercase match; ":path",
 * ":method", "content-type", ...), or NULL. Valid for the stream's life. */
const char *h2_stream_header(const struct h2_stream *st, const char *name);
/* All request headers in arrival order; valid for the stream's life. */
const struct h2_header *h2_stream_headers(const struct h2_stream *st,
					  size_t *n);
/* True once the peer sent END_STREAM. */
bool h2_stream_remote_closed(const struct h2_stream *st);

/* Tells the session that the handler has processed n bytes delivered by
 * on_data, reopening the stream's window by n (WINDOW_UPDATE). A handler
 * that holds data back simply consumes later; the peer can then send at
 * most one window ahead. Streams without a handler consume at once. */
void h2_stream_consume(struct h2_stream *st, size_t n);

/* Response headers (":status" is added from status; names lowercase; all
 * copied). end_stream: the answer has no body and no trailers. An answer
 * that ends before the request body did resets the stream (NO_ERROR)
 * once sent, so answer from on_end to read the whole body first. Returns 0,
 * KV_EINVAL (already responded, or the stream is closing) or KV_ENOMEM. */
int h2_stream_respond(struct h2_stream *st, int status,
		      const struct h2_header *hdrs, size_t n, bool end_stream);
/* Body bytes (copied) after h2_stream_respond. Returns 0, KV_EAGAIN (over
 * the output limits; nothing queued; on_writable follows), KV_EINVAL (not
 * responded yet or already ended), KV_ECLOSED (the stream was reset) or
 * KV_ENOMEM. */
int h2_stream_write(struct h2_stream *st, const void *p, size_t n);
/* The same for several pieces queued together (all or nothing). */
struct h2_iovec {
	const void *base;
	size_t len;
};
int h2_stream_writev(struct h2_stream *st, const struct h2_iovec *v,
		     size_t n);
/* True when h2_stream_write would queue rather than say KV_EAGAIN; a
 * false answer also arms on_writable, as a KV_EAGAIN does. */
bool h2_stream_writable(struct h2_stream *st);
/* Ends the answer after the buffered body, with trailers (copied; n may
 * be 0). Returns 0, KV_EINVAL or KV_ENOMEM. If the peer has not finished
 * its half by the time the answer is sent, the stream is reset with
 * NO_ERROR (as grpc-go does), so no more request data is accepted. */
int h2_stream_end(struct h2_stream *st, const struct h2_header *trailers,
		  size_t n);
/* Resets the stream (RST_STREAM code); buffered output is dropped. The
 * handler's on_close still runs later. Returns 0 or KV_ENOMEM. */
int h2_stream_reset(struct h2_stream *st, uint32_t code);

/* ---- sans-I/O session -------------------------------------------------- */

struct h2_io {
	/* Queues bytes for the peer; returns 0 or a KV_E* code. */
	int (*write)(void *io, const void *p, size_t n);
	/* True when more output may be queued. */
	bool (*writable)(void *io);
	/* Sends what is queued, then closes. The owner frees the session
	 * later with h2_session_free (never from inside this call). */
	void (*close)(void *io);
};

/* Creates a server session and queues its SETTINGS. cfg may be NULL. io
 * and io_data must outlive the session. Returns 0 or KV_ENOMEM; *out is
 * freed with h2_session_free. */
int h2_session_new(const struct h2_config *cfg, const struct h2_io *io,
		   void *io_data, h2_on_stream on_stream, void *data,
		   struct h2_session **out);
/* Bytes from the peer, starting with the connection preface. A protocol
 * error sends GOAWAY and closes through io->close. */
void h2_session_feed(struct h2_session *s, const char *p, size_t n);
/* The transport can take output again. */
void h2_session_writable(struct h2_session *s);
/* Graceful end (shutdown or peer EOF): sends GOAWAY naming the last
 * stream accepted, lets open streams finish, then closes. */
void h2_session_end(struct h2_session *s);
/* True while streams are open. */
bool h2_session_busy(const struct h2_session *s);
/* Number of open streams. */
size_t h2_session_stream_count(const struct h2_session *s);
/* Closes every stream (their on_close runs with H2_CANCEL) and frees. */
void h2_session_free(struct h2_session *s);
/* Why the session failed ("" if it did not); valid until it is freed. */
const char *h2_session_errmsg(const struct h2_session *s);

/* Serves HTTP/2 on a connection (call from net_on_ready when ALPN chose
 * "h2", or after sniffing the preface). first/nfirst are bytes already
 * read from the connection (NULL/0 if none); they are fed at once. The
 * session is owned by the connection and freed when it closes. Returns 0
 * or KV_ENOMEM (the connection is closed then). */
int h2_attach(struct net_conn *c, const struct h2_config *cfg,
	      h2_on_stream on_stream, void *data, const char *first,
	      size_t nfirst);

/* ---- plaintext protocol detection --------------------------------------- */

/* The HTTP/2 client connection preface. */
#define H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_PREFACE_LEN 24

enum net_proto { NET_PROTO_UNKNOWN = 0, NET_PROTO_HTTP1, NET_PROTO_H2 };

/* Picks the protocol from the first n bytes of a plaintext connection:
 * NET_PROTO_H2 when they are the whole HTTP/2 preface, NET_PROTO_HTTP1 as
 * soon as they differ from it, NET_PROTO_UNKNOWN while they are a strict
 * prefix of it (read more). */
enum net_proto net_proto_sniff(const void *p, size_t n);

/* Called once the protocol is known. The callee attaches it with
 * h2_attach / http_attach_prefixed (net/http.h), or closes the connection, passing
 * first/nfirst: the bytes read while sniffing, valid during the call. */
typedef void (*net_on_proto)(struct net_conn *c, enum net_proto proto,
			     const char *first, size_t nfirst, void *data);

/* For a plaintext connection in net_on_ready: reads until the protocol is
 * known, then calls on_proto. A connection that ends first is closed.
 * Returns 0 or KV_ENOMEM (the connection is closed then). */
int net_sniff_attach(struct net_conn *c, net_on_proto on_proto, void *data);

#endif

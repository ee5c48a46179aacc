/* net/http.h — HTTP/1.1 server sessions on llhttp.
 *
 * A session parses requests from a byte stream and writes responses in
 * request order (pipelining), with keep-alive, HTTP/1.0 basics,
 * "Connection: close", Content-Length and chunked streaming responses.
 * Limits: header bytes (-> 431), body bytes (-> 413); malformed input gets
 * 400. Each of these answers is sent after the responses of earlier
 * requests, and then the connection is closed.
 *
 * The session itself does no I/O: it writes through a struct http_io, so
 * unit tests drive it with in-memory buffers and http_attach() plugs it
 * into a net/conn.h connection.
 *
 * Request lifetime: a request is handed to on_request once it is complete
 * (body included). The handler answers then or later, exactly once, with
 * http_respond() or http_stream_begin() ... http_stream_end(). The request
 * stays valid until that answer is complete, or until its on_abort hook
 * runs (the connection went away first): after either, the handler must
 * not touch it again.
 *
 * Threads: a session and its requests belong to the loop thread. */
#ifndef KV_NET_HTTP_H
#define KV_NET_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct net_conn;
struct http_session;

/* etcd's --max-request-bytes default (1.5 MiB), grown by 4/3 for the JSON
 * gateway's base64 values plus 64 KiB for the JSON around them. */
#define HTTP_DEFAULT_MAX_BODY ((size_t)1536 * 1024 * 4 / 3 + 64 * 1024)
#define HTTP_DEFAULT_MAX_HEADER ((size_t)64 * 1024)

struct http_config {
	size_t max_header_bytes; /* request line + headers; 0 = default */
	size_t max_body_bytes;   /* 0 = HTTP_DEFAULT_MAX_BODY */
	unsigned max_pipeline;   /* requests awaiting answers; 0 = 16 */
	/* As Go's net/http server: input is still read while requests await
	 * their answers, and the end of input while the last one waits (the
	 * client sent nothing more) cancels it: the connection closes and
	 * on_abort runs, so a client that hung up does not keep holding what
	 * it waited for (a lock, a watch). When false, a half-closed
	 * connection still gets its answers. */
	bool abort_on_eof;
};

struct http_header {
	const char *name;
	const char *value;
};

struct http_request {
	/* Read-only for handlers; valid for the request's lifetime. */
	const char *method; /* "GET", "POST", ... */
	const char *target; /* request target as sent: "/v3/kv/range?x=1" */
	int version_major, version_minor;
	const struct http_header *headers;
	size_t nheaders;
	const unsigned char *body; /* NUL-terminated after body_len */
	size_t body_len;
	bool keep_alive; /* the connection stays open after this answer */

	/* Set by the handler as needed. on_abort: the connection is gone
	 * before the answer completed; the request is freed right after.
	 * on_writable: a streaming answer may write again (after
	 * http_stream_write returned KV_EAGAIN). */
	void (*on_abort)(struct http_request *req);
	void (*on_writable)(struct http_request *req);
	void *user;
};

/* The handler: called once per complete request. */
typedef void (*http_on_request)(struct http_request *req, void *data);

/* The first header named name (case-insensitive), or NULL. */
const char *http_request_header(const struct http_request *req,
				const char *name);
/* The reason phrase for a status code ("Not Found"), never NULL. */
const char *http_status_text(int status);

/* A complete answer: status, extra headers (Content-Length and Connection
 * are added), and a body (copied; may be NULL when len is 0). Returns 0,
 * KV_EINVAL (already answered) or KV_ENOMEM. The request is finished (and
 * may be freed) when this returns. */
int http_respond(struct http_request *req, int status,
		 const struct http_header *headers, size_t nheaders,
		 const void *body, size_t len);

/* A streamed answer with chunked transfer encoding (HTTP/1.0: the body
 * runs until the connection closes). http_stream_write copies the data
 * and returns 0, or KV_EAGAIN when the connection's output is over its
 * limit (nothing was queued; wait for on_writable), or KV_ECLOSED.
 * http_stream_end finishes the answer; the request may be freed then. */
int http_stream_begin(struct http_request *req, int status,
		      const struct http_header *headers, size_t nheaders);
int http_stream_write(struct http_request *req, const void *p, size_t n);
int http_stream_end(struct http_request *req);

/* ---- sans-I/O session (for tests and other transports) --------------- */

struct http_io {
	/* Queues bytes for the peer; returns 0 or a KV_E* code. */
	int (*write)(void *io, const void *p, size_t n);
	/* True when more output may be queued. */
	bool (*writable)(void *io);
	/* Stops (true) or resumes (false) delivery of input. */
	void (*pause_read)(void *io, bool pause);
	/* Sends what is queued, then closes. The owner frees the session
	 * later with http_session_free (never from inside this call). */
	void (*close)(void *io);
};

/* Creates a session. cfg may be NULL. io and io_data must outlive it.
 * *out is freed with http_session_free. */
int http_session_new(const struct http_config *cfg, const struct http_io *io,
		     void *io_data, http_on_request on_request, void *data,
		     struct http_session **out);
/* Bytes from the peer (plaintext); copied as needed. */
void http_session_feed(struct http_session *s, const char *p, size_t n);
/* The transport can take output again: resumes streams and parsing. */
void http_session_writable(struct http_session *s);
/* True while a request awaits or streams its answer (the connection is
 * not idle then, even without traffic: a watch stream may be quiet). */
bool http_session_busy(const struct http_session *s);
/* No more input: answer what is queued (including requests still
 * buffered because output was over its limit), then close. */
void http_session_end(struct http_session *s);
/* Aborts unanswered requests (their on_abort runs) and frees. */
void http_session_free(struct http_session *s);

/* Serves HTTP/1.1 on a connection (call from net_on_ready). The session is
 * owned by the connection and freed when it closes. Returns 0 or
 * KV_ENOMEM (the connection is closed then). */
int http_attach(struct net_conn *c, const struct http_config *cfg,
		http_on_request on_request, void *data);

/* http_attach for a connection whose first bytes were already read (by
 * net_sniff_attach, net/h2.h); first/nfirst are fed at once and need only
 * be valid during the call. Returns 0 or KV_ENOMEM (the connection is
 * closed then). */
int http_attach_prefixed(struct net_conn *c, const struct http_config *cfg,
			 http_on_request on_request, void *data,
			 const char *first, size_t nfirst);

#endif

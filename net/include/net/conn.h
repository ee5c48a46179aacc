/* net/conn.h — TCP listeners and connections on libuv, plaintext or TLS.
 *
 * A struct net_server owns its listeners and every connection accepted on
 * them. A connection's behaviour is a pair of handler pointers (nginx
 * style): recv turns bytes from the socket into plaintext for the protocol,
 * send turns the protocol's plaintext into bytes for the socket. For TLS
 * they run the net/tls.h engine; for plaintext they copy. The protocol
 * (HTTP/1.1 today, HTTP/2 later) never knows which one it talks over.
 *
 * Flow control: output waiting for the socket is bounded. When it exceeds
 * max_pending_out the connection stops reading (no new requests arrive) and
 * net_conn_writable() turns false; when it drains below half the limit,
 * reading resumes and the handler's on_writable runs. Each wake-up reads at
 * most read_budget bytes per connection, so one busy peer cannot starve
 * the others.
 *
 * Closing is asynchronous: net_conn_close() marks the connection closing;
 * its memory is freed after libuv's close callbacks ran and the last
 * reference is dropped, at which point the handler's on_close runs.
 *
 * Threads: everything runs on the loop thread that owns the server. */
#ifndef KV_NET_CONN_H
#define KV_NET_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct tls_ctx;
struct net_conn;
struct net_server;

/* ---- URLs ------------------------------------------------------------ */

struct net_url {
	bool tls;       /* https:// (true) or http:// */
	char host[256]; /* "127.0.0.1", "::1" (no brackets), "localhost" */
	uint16_t port;
};

/* Parses "https://127.0.0.1:2379", "http://[::1]:2379" or
 * "https://localhost:2379". A port is required; a trailing "/" is allowed,
 * any other path is KV_EINVAL. Returns 0 or KV_EINVAL. */
int net_url_parse(const char *s, struct net_url *out);

/* Parses an etcd-style comma-separated list ("https://a:1,https://b:2").
 * On success *out is a malloc'd array of *n entries (caller frees it with
 * free()). Returns 0, KV_EINVAL (empty list or a bad URL) or KV_ENOMEM. */
int net_url_list_parse(const char *s, struct net_url **out, size_t *n);

/* ---- connections ----------------------------------------------------- */

/* What a protocol plugs into a connection. All optional except on_data.
 * Each gets the data pointer given to net_conn_set_handler. */
struct net_conn_handler {
	/* Plaintext from the peer, valid only during the call. */
	void (*on_data)(void *data, const char *p, size_t n);
	/* Pending output fell below the low-water mark. */
	void (*on_writable)(void *data);
	/* No more input will come (peer EOF, or the server is shutting
	 * down): finish what is in flight, then net_conn_close(). Without
	 * this hook the connection is closed gracefully at once. */
	void (*on_end)(void *data);
	/* True while the protocol has work in flight; the idle timeout
	 * only closes connections that are quiet and not busy. */
	bool (*busy)(void *data);
	/* Last call: the connection is going away; release your state. Runs
	 * from the close callback; the connection must not be used after. */
	void (*on_close)(void *data);
};

/* Installs the protocol. Called from the server's on_ready callback. */
void net_conn_set_handler(struct net_conn *c,
			  const struct net_conn_handler *h, void *data);

/* Queues plaintext for the peer (copied, encrypted for TLS). Never blocks
 * and never refuses for size: callers keep within net_conn_writable().
 * Returns 0, KV_ECLOSED when the connection is closing, or KV_ENOMEM. */
int net_conn_write(struct net_conn *c, const void *p, size_t n);

/* Bytes queued for the socket and not yet acknowledged by libuv. */
size_t net_conn_pending(const struct net_conn *c);
/* False while pending output is above the limit or the conn is closing. */
bool net_conn_writable(const struct net_conn *c);

/* The protocol asks to stop (true) or resume (false) reading, e.g. while
 * its pipeline queue is full. */
void net_conn_pause_read(struct net_conn *c, bool pause);

/* Graceful close: stops reading, sends what is queued (and a TLS
 * close_notify), then closes. reason is logged at debug level (NULL ok). */
void net_conn_close(struct net_conn *c, const char *reason);
/* Immediate close: drops queued output. The reason is logged at warn level
 * with the peer's address. */
void net_conn_abort(struct net_conn *c, const char *reason);
bool net_conn_closing(const struct net_conn *c);

/* Holds the memory beyond close (for a second owner). Every ref needs an
 * unref; the last one after close frees the connection. */
void net_conn_ref(struct net_conn *c);
void net_conn_unref(struct net_conn *c);

/* "ip:port" of the peer; valid for the connection's lifetime. */
const char *net_conn_peer(const struct net_conn *c);
/* Negotiated ALPN protocol, or NULL (plaintext or none negotiated). */
const char *net_conn_alpn(const struct net_conn *c);
/* Client certificate's CN, or NULL. */
const char *net_conn_peer_cn(const struct net_conn *c);
/* For a TLS connection after its handshake: checks that the peer's
 * certificate was verified against the context's CA and covers host (an
 * IP address or DNS name; see tls_engine_peer_check_host). Returns 0,
 * KV_EPERM (no certificate, unverified or not covering host; why is
 * written to why, which may be NULL) or KV_EINVAL (plaintext connection or
 * handshake not done). */
int net_conn_peer_check_host(struct net_conn *c, const char *host,
			     char *why, size_t whylen);

/* ---- server ---------------------------------------------------------- */

struct net_server_config {
	size_t max_pending_out;   /* default 4 MiB */
	size_t read_budget;       /* per connection per wake-up; 256 KiB */
	/* No I/O for this long, with the handler not busy, closes the
	 * connection (also bounds the TLS handshake); 0 = 300 s. */
	uint64_t idle_timeout_ms;
	/* TCP keepalive delay in seconds on every connection; 0 = off. */
	unsigned keepalive_s;
	/* Linux TCP_USER_TIMEOUT: the kernel drops a connection whose sent
	 * data stays unacknowledged this long (a dead peer with output
	 * pending); 0 = the system default (many minutes). */
	unsigned user_timeout_ms;
	/* Optional: an accepted connection's TLS handshake failed (err is
	 * KV_EPERM when the peer's certificate was refused or missing,
	 * KV_EPROTO otherwise; msg says why; peer is "ip:port"). Runs with
	 * the server's data just before the connection closes; for counting
	 * refusals. Must not call back into the server. */
	void (*on_tls_error)(const char *peer, int err, const char *msg,
			     void *data);
};

/* A connection is ready for a protocol: the TLS handshake finished (alpn
 * is the negotiated protocol or NULL) or, for plaintext, it was accepted.
 * The callback must call net_conn_set_handler() or net_conn_close(). */
typedef void (*net_on_ready)(struct net_conn *c, const char *alpn,
			     void *data);

/* Creates a server on loop. cfg may be NULL (defaults). *out is owned by
 * the loop from now on: it is freed by net_server_shutdown(). */
int net_server_new(uv_loop_t *loop, const struct net_server_config *cfg,
		   net_on_ready on_ready, void *data, struct net_server **out);

/* Listens on url. A https URL needs tls (a server context the caller keeps
 * alive until shutdown completes); http URLs ignore it. Returns 0,
 * KV_EINVAL (bad address, TLS URL without a context), KV_EEXIST (address
 * in use), KV_EPERM or KV_EIO, with a log line naming the URL. */
int net_server_listen(struct net_server *s, const struct net_url *url,
		      struct tls_ctx *tls);

/* The port actually bound by the i-th listen call (useful with port 0),
 * or 0. */
uint16_t net_server_port(const struct net_server *s, size_t i);

/* Number of open connections. */
size_t net_server_conn_count(const struct net_server *s);

/* Outgoing connections (peers, tests) live in the same server object and
 * follow the same rules as accepted ones. on_connect runs once: with the
 * ready connection (status 0; TLS handshake done, alpn negotiated or NULL;
 * the callback installs a handler as on_ready does), or with c == NULL
 * and a negative KV_E* status (KV_ECLOSED: refused or closed, KV_EPERM:
 * the server's certificate was refused, KV_EPROTO, KV_ETIMEOUT, ...). */
typedef void (*net_on_connect)(struct net_conn *c, int status,
			       const char *alpn, void *data);

/* Connects to url (an IP address or localhost). A https URL needs a client
 * TLS context (kept alive by the caller until on_connect ran); peer_name
 * (NULL: url->host) is checked against the server's certificate. Returns
 * 0 (on_connect will run) or KV_EINVAL / KV_ENOMEM / KV_ECLOSED (server
 * shutting down), and then on_connect never runs. */
int net_server_connect(struct net_server *s, const struct net_url *url,
		       struct tls_ctx *tls, const char *peer_name,
		       net_on_connect on_connect, void *data);

/* Stops accepting, asks every connection to finish (on_end), force-closes
 * those still open after grace_ms, then frees the server and calls
 * on_done(data) (may be NULL). Call once. */
void net_server_shutdown(struct net_server *s, uint64_t grace_ms,
			 void (*on_done)(void *data), void *data);

#endif

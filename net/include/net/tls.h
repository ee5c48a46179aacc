/* net/tls.h — a TLS engine independent of any event loop.
 *
 * OpenSSL runs over a pair of memory BIOs: the caller feeds ciphertext read
 * from the network in (tls_engine_feed), gets plaintext out
 * (tls_engine_read), writes plaintext (tls_engine_write) and drains the
 * ciphertext to send (tls_engine_drain). No socket, no libuv: unit tests
 * connect a client and a server engine in memory.
 *
 * Contexts are built from files the way etcd's flags name them
 * (--cert-file, --key-file, --trusted-ca-file, --client-cert-auth). TLS 1.2
 * is the minimum. A server context selects an ALPN protocol from its own
 * preference list ("h2" before "http/1.1" by default); the caller reads the
 * result with tls_engine_alpn() and dispatches.
 *
 * Threads: a context may be shared by engines on any thread once built
 * (OpenSSL SSL_CTX rules); an engine belongs to one thread.
 * Errors: functions return 0 or a negative KV_E* code; a human message (the
 * OpenSSL error string, naming the file for file errors) goes to the errbuf
 * or the engine's errmsg. */
#ifndef KV_NET_TLS_H
#define KV_NET_TLS_H

#include <stdbool.h>
#include <stddef.h>

struct kv_buf;
struct tls_ctx;
struct tls_engine;

struct tls_config {
	const char *cert_file;       /* PEM chain; required for servers */
	const char *key_file;        /* PEM key; required with cert_file */
	const char *trusted_ca_file; /* PEM CA bundle, or NULL */
	/* Server: require a client cert chaining to trusted_ca_file and fail
	 * the handshake without one. Client: ignored (a client always
	 * verifies the server when trusted_ca_file is set). */
	bool client_cert_auth;
	/* Comma-separated ALPN protocols in preference order, e.g.
	 * "h2,http/1.1" (the default when NULL). Empty string: no ALPN. */
	const char *alpn;
};

/* Builds a server (tls_ctx_new_server) or client (tls_ctx_new_client)
 * context. On success *out is owned by the caller (tls_ctx_free). On
 * failure returns KV_ENOTFOUND (a file is missing), KV_EPERM (unreadable),
 * KV_EINVAL (bad PEM, key does not match the certificate, bad config) or
 * KV_ENOMEM, and writes a message naming the file into errbuf. */
int tls_ctx_new_server(const struct tls_config *cfg, struct tls_ctx **out,
		       char *errbuf, size_t errlen);
int tls_ctx_new_client(const struct tls_config *cfg, struct tls_ctx **out,
		       char *errbuf, size_t errlen);
/* Frees the context. Engines created from it keep their own reference, so
 * the context may be freed before them. NULL is a no-op. */
void tls_ctx_free(struct tls_ctx *ctx);
bool tls_ctx_is_server(const struct tls_ctx *ctx);

/* Creates an engine. For a client context, peer_name is the server's name
 * or IP address: sent as SNI (names only) and checked against the
 * certificate's SAN when the context verifies; NULL skips both. Servers
 * pass NULL. *out is owned by the caller (tls_engine_free). */
int tls_engine_new(struct tls_ctx *ctx, const char *peer_name,
		   struct tls_engine **out);
void tls_engine_free(struct tls_engine *e);

/* Ciphertext received from the peer. Copies; returns 0 or KV_ENOMEM. */
int tls_engine_feed(struct tls_engine *e, const void *p, size_t n);

/* Advances the handshake with what was fed so far. Returns 0 once it is
 * complete, KV_EAGAIN while it needs more input (drain and send the output
 * first), KV_EPERM when the peer's certificate was refused or missing, or
 * KV_EPROTO for any other TLS failure (see tls_engine_errmsg). After an
 * error the engine is unusable except for draining a pending alert. */
int tls_engine_handshake(struct tls_engine *e);
bool tls_engine_handshake_done(const struct tls_engine *e);

/* Reads up to cap bytes of plaintext into buf, driving the handshake first
 * if needed. Returns 0 with *nread > 0, KV_EAGAIN when no plaintext is
 * available yet, KV_ECLOSED after the peer's close_notify, or an error as
 * tls_engine_handshake. */
int tls_engine_read(struct tls_engine *e, void *buf, size_t cap,
		    size_t *nread);

/* Encrypts n bytes of plaintext (copied). Before the handshake is done the
 * bytes are held and sent once it completes. Returns 0, KV_ECLOSED after
 * shutdown, or an error. The ciphertext waits in the engine until drained. */
int tls_engine_write(struct tls_engine *e, const void *p, size_t n);

/* Queues a close_notify alert. Idempotent. */
void tls_engine_shutdown(struct tls_engine *e);

/* Ciphertext waiting to be sent. */
size_t tls_engine_pending(const struct tls_engine *e);
/* Moves up to cap bytes of pending ciphertext into buf; returns the count. */
size_t tls_engine_drain(struct tls_engine *e, void *buf, size_t cap);
/* Appends all pending ciphertext to out. Returns 0 or KV_ENOMEM. */
int tls_engine_drain_buf(struct tls_engine *e, struct kv_buf *out);

/* The negotiated ALPN protocol ("h2", "http/1.1", ...) or NULL when none
 * was negotiated. Valid until the engine is freed. */
const char *tls_engine_alpn(const struct tls_engine *e);
/* The negotiated protocol version ("TLSv1.3") or NULL before handshake. */
const char *tls_engine_version(const struct tls_engine *e);
/* The peer certificate's subject common name, or NULL (no cert). Valid
 * until the engine is freed. */
const char *tls_engine_peer_cn(struct tls_engine *e);
/* Checks that the peer presented a certificate, that it was verified
 * against the context's trusted CA (a server context built with
 * client_cert_auth, or a client context with trusted_ca_file), and that it
 * covers host: an IP address ("127.0.0.1", "::1") must be one of its
 * iPAddress SANs; a name must match a dNSName SAN (wildcards in the
 * leftmost label; the subject CN only when the certificate has no DNS
 * SAN). Call after the handshake. Returns 0, KV_EPERM (no certificate, not
 * verified, or host not covered; the reason is in tls_engine_errmsg) or
 * KV_EINVAL (handshake not done). */
int tls_engine_peer_check_host(struct tls_engine *e, const char *host);
/* The message of the last error, "" when none. Valid until the next call
 * on the engine. */
const char *tls_engine_errmsg(const struct tls_engine *e);

#endif

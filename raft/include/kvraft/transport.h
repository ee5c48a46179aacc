/* kvraft/transport.h — the member-to-member channel.
 *
 * One authenticated channel between two members carries every kind of
 * member traffic, each message framed and typed: raft's messages, kvd's
 * forwarded proposals, read-index requests and snapshot streams. Frames:
 *   u32le length of (type + body) | u8 type | body
 * with a size limit (max_frame) checked before anything is buffered.
 *
 * Connections: TCP, TLS 1.2+ when the peer URLs are https:// (mutual: each
 * side presents a certificate chaining to the peer CA). After the TLS
 * handshake the dialling member sends a HELLO frame (cluster id, its member
 * id); the accepting side refuses (closes, logs why) a member id that is
 * not in the configured cluster, a wrong cluster id, or — with TLS — a
 * certificate whose SAN does not cover the host of that member's peer URL.
 * Each member dials every other member (one outgoing connection per peer
 * for sending; messages received on either direction are delivered).
 * Reconnects with exponential backoff. Per-peer send queues are bounded
 * (max_queue_bytes): when full, new messages to that peer are dropped and
 * counted (raft tolerates loss), so a dead peer never grows memory.
 * TCP_NODELAY on every socket.
 *
 * Wire format (all integers little-endian):
 *   frame  = u32 len | u8 type | body[len - 1]     (1 <= len <= max_frame)
 *   HELLO  = type 1, body = u8 version (1) | u64 cluster id | u64 member id
 * The dialler sends HELLO first; the acceptor checks it and answers with
 * its own HELLO, which the dialler checks in turn (same cluster id, member
 * id = the member it dialled). Before the HELLO exchange completes only a
 * HELLO frame (len <= 64) is accepted; afterwards a HELLO or a type 0 frame
 * is a protocol error. Any other type (2..255) is delivered. Frames are
 * sent only on the dialler's connection; the acceptor's side carries just
 * its HELLO answer, but frames arriving on either side are delivered.
 *
 * Queueing: a message sits in its peer's queue (counted against
 * max_queue_bytes) until the outgoing connection to that peer has finished
 * the HELLO exchange and can take more output; it is then handed to the
 * connection whole. The queue survives reconnects; messages already handed
 * to a connection that dies are lost (never resent, never resent in part).
 * Peers are dialled lazily, when something is queued for them.
 *
 * Refusals (wrong cluster id, unknown or own member id, certificate not
 * covering the member's peer URL host, TLS handshake failure on an
 * accepted connection, malformed or oversized frames before HELLO, a
 * HELLO answer with the wrong identity) close that connection only, log a
 * warning with the peer's address and the reason, and count refused_conns.
 *
 * Threads: everything on the loop thread given at creation. The process
 * must ignore SIGPIPE (as every libuv program writing to sockets must). */
#ifndef KVRAFT_TRANSPORT_H
#define KVRAFT_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "net/conn.h"
#include "net/tls.h"

/* Message types. 0 and 1 are the transport's own. */
enum peer_msg_type {
	PEER_MSG_HELLO = 1,             /* transport-internal handshake */
	PEER_MSG_RAFT = 2,              /* an encoded raft message */
	PEER_MSG_FORWARD = 3,           /* a proposal forwarded to the leader */
	PEER_MSG_FORWARD_RESULT = 4,    /* the leader's answer to FORWARD */
	PEER_MSG_READ_INDEX = 5,        /* follower asks the leader */
	PEER_MSG_READ_INDEX_RESULT = 6, /* leader's read index */
	PEER_MSG_SNAPSHOT = 7,          /* one chunk of a snapshot stream */
	PEER_MSG_SNAPSHOT_ACK = 8,      /* receiver's answer to a stream */
};

struct peer_member {
	uint64_t id;
	char name[64];
	struct net_url url; /* the member's (first) peer URL */
};

struct peer_transport_config {
	uv_loop_t *loop;
	uint64_t cluster_id;
	uint64_t self_id;
	const struct net_url *listen; /* --listen-peer-urls */
	size_t nlisten;
	/* Required when a listen URL (server_tls) or a member URL
	 * (client_tls) is https; borrowed, they must outlive the transport
	 * (until the close callback ran). server_tls must be built with
	 * client_cert_auth and the peer CA as trusted_ca_file: every accepted
	 * TLS connection must present a certificate verified against it and
	 * covering the host of the claimed member's peer URL, or it is
	 * refused. client_tls must have the peer CA as trusted_ca_file (the
	 * server's certificate must cover the dialled URL's host) and a
	 * cert_file/key_file to present. The ALPN setting is not used. */
	struct tls_ctx *server_tls;
	struct tls_ctx *client_tls;
	/* Largest frame: len = 1 (type) + body length. 0 = 64 MiB. */
	size_t max_frame;
	/* Per peer, bytes of whole frames (5 + body each) waiting in the
	 * queue; 0 = 64 MiB. */
	size_t max_queue_bytes;
	uint64_t backoff_min_ms; /* 0 = 50 */
	uint64_t backoff_max_ms; /* 0 = 2000 */
	/* A connection that has not finished TLS + HELLO (or any quiet
	 * connection not yet authenticated) is closed after this; 0 = 10000.
	 * Authenticated connections have no idle timeout; TCP keepalive
	 * (30 s) and a 30 s TCP user timeout (unacknowledged output) detect
	 * dead ones. */
	uint64_t handshake_timeout_ms;
};

/* Delivers one message. body is valid only during the call. Called on
 * the loop thread; may call peer_transport_send. */
typedef void (*peer_on_message)(void *data, uint64_t from, uint8_t type,
				const void *body, size_t len);

struct peer_transport;

/* Creates the transport and starts listening. members must include self
 * (its URL is not dialled); ids are non-zero and distinct. members and cfg
 * are copied. Returns 0 or KV_EINVAL / KV_EEXIST (address in use) /
 * KV_ENOMEM / KV_EIO with a log line (on failure, memory already
 * allocated is released when the loop runs next). *out is owned by the
 * caller until peer_transport_close. */
int peer_transport_new(const struct peer_transport_config *cfg,
		       const struct peer_member *members, size_t nmembers,
		       peer_on_message on_message, void *data,
		       struct peer_transport **out);

/* Replaces the member list (membership change; tests also use it to fill
 * in ports bound at port 0). Same rules as for peer_transport_new. A
 * member that is gone has its queue dropped (counted in dropped) and its
 * connections closed; a member whose URL changed is redialled and its
 * accepted connections are closed (they re-authenticate). Returns 0 or
 * KV_EINVAL / KV_ENOMEM / KV_ECLOSED, and then nothing changed. */
int peer_transport_set_members(struct peer_transport *t,
			       const struct peer_member *members,
			       size_t nmembers);

/* Queues one message for member `to` (copied). Returns 0 (queued; may
 * still be lost if the connection drops), KV_ENOTFOUND (unknown member, or
 * self), KV_EINVAL (type 0 or PEER_MSG_HELLO), KV_EBUSY (that peer's queue
 * is full: dropped), KV_ETOOBIG (1 + len over max_frame), KV_ENOMEM,
 * KV_ECLOSED (closing). */
int peer_transport_send(struct peer_transport *t, uint64_t to, uint8_t type,
			const void *body, size_t len);

/* Like peer_transport_send with the body given as two parts (header +
 * payload), to avoid a copy for large bodies. */
int peer_transport_send2(struct peer_transport *t, uint64_t to, uint8_t type,
			 const void *a, size_t alen, const void *b,
			 size_t blen);

/* Bytes queued for `to` and not yet written (for pacing snapshot
 * streams); 0 for unknown members. */
size_t peer_transport_pending(struct peer_transport *t, uint64_t to);

/* The port bound by the i-th listen URL (tests listen on port 0). */
uint16_t peer_transport_port(struct peer_transport *t, size_t i);

/* sent: frames handed to a connection; received: frames delivered;
 * dropped: frames refused with KV_EBUSY or discarded from a queue (member
 * removed, write failure); refused_conns: see above; connects: outgoing
 * connections that completed the HELLO exchange. */
struct peer_transport_stats {
	uint64_t sent, received, dropped, refused_conns, connects;
};
void peer_transport_stats(struct peer_transport *t,
			  struct peer_transport_stats *out);

/* Closes listeners and connections (queued messages are dropped; what
 * connections already hold gets up to 500 ms to flush); cb(data) runs
 * once everything is released, after which t is freed. Call once; may be
 * called from on_message (no more messages are delivered after it). */
void peer_transport_close(struct peer_transport *t, void (*cb)(void *data),
			  void *data);

#endif

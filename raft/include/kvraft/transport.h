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
 * Threads: everything on the loop thread given at creation. */
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
	/* Required when any URL is https (borrowed; outlive the transport):
	 * server side verifies client certs against the peer CA when
	 * --peer-client-cert-auth (or always, when peer certs are set —
	 * see the implementation notes). */
	struct tls_ctx *server_tls;
	struct tls_ctx *client_tls;
	size_t max_frame;       /* 0 = 64 MiB */
	size_t max_queue_bytes; /* per peer; 0 = 64 MiB */
	uint64_t backoff_min_ms; /* 0 = 50 */
	uint64_t backoff_max_ms; /* 0 = 2000 */
};

/* Delivers one message. body is valid only during the call. Called on
 * the loop thread; may call peer_transport_send. */
typedef void (*peer_on_message)(void *data, uint64_t from, uint8_t type,
				const void *body, size_t len);

struct peer_transport;

/* Creates the transport and starts listening. members must include self
 * (its URL is not dialled). Returns 0 or KV_EINVAL / KV_EEXIST (address in
 * use) / KV_ENOMEM / KV_EIO with a log line. *out is owned by the caller
 * until peer_transport_close. */
int peer_transport_new(const struct peer_transport_config *cfg,
		       const struct peer_member *members, size_t nmembers,
		       peer_on_message on_message, void *data,
		       struct peer_transport **out);

/* Queues one message for member `to` (copied). Returns 0 (queued; may
 * still be lost if the connection drops), KV_ENOTFOUND (unknown member),
 * KV_EBUSY (that peer's queue is full: dropped), KV_ETOOBIG (over
 * max_frame), KV_ECLOSED (closing). */
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

struct peer_transport_stats {
	uint64_t sent, received, dropped, refused_conns, connects;
};
void peer_transport_stats(struct peer_transport *t,
			  struct peer_transport_stats *out);

/* Closes listeners and connections; cb(data) runs once everything is
 * released, after which t is freed. */
void peer_transport_close(struct peer_transport *t, void (*cb)(void *data),
			  void *data);

#endif

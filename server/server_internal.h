/* Private to server/: the member object shared by server.c (wiring) and
 * gateway.c (HTTP/JSON). Everything runs on the loop thread. */
#ifndef KVD_SERVER_INTERNAL_H
#define KVD_SERVER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "etcdserverpb/rpc.pb-c.h"
#include "kv/errors.h"
#include "kvdpb/internal.pb-c.h"
#include "kvraft/apply.h"
#include "kvraft/ids.h"
#include "kvraft/node.h"
#include "kvraft/transport.h"
#include "net/conn.h"
#include "net/http.h"
#include "net/tls.h"
#include "server/config.h"
#include "server/server.h"

#define KVD_WAIT_BUCKETS 4096

/* Member-to-member message of kvd's own (the transport delivers types
 * 2..255; raft/ uses 2..8): body = the sender's --advertise-client-urls.
 * Sent to every peer every few seconds, so MemberList shows every
 * member's client URLs (not persisted; etcd replicates them in raft). */
#define KVD_PEER_MSG_ATTRS 64

/* A client write waiting for its result from this member's apply. Owned
 * by the registry; req is NULL once the connection went away. */
struct kvd_waiter {
	uint64_t id;
	struct kvd_server *s;
	struct http_request *req;
	uint64_t deadline; /* uv_now ms */
	struct kvd_waiter *hnext;      /* hash chain */
	struct kvd_waiter *prev, *next; /* deadline order (FIFO) */
};

struct kvd_server {
	const struct kvd_config *cfg; /* borrowed */
	uv_loop_t loop;
	uv_timer_t tick;
	uv_prepare_t prepare;
	uv_idle_t idle;
	uv_signal_t sigterm, sigint;

	struct kvraft_cluster cluster; /* from --initial-cluster */
	char **client_urls; /* per cluster.members[i]; malloc'd or NULL */
	unsigned ticks;
	uint64_t self_id, cluster_id;
	uint64_t request_timeout_ms;

	struct tls_ctx *client_tls, *peer_server_tls, *peer_client_tls;
	struct net_server *net;          /* NULL once shut down */
	struct peer_transport *transport; /* NULL once closed */
	struct kvraft_net rnet;
	struct kvraft_node *node;        /* NULL once closing */
	struct kv_apply *apply;          /* NULL once closed */
	struct http_config http;

	/* the current proposal batch */
	Kvdpb__InternalRequest **pending;
	size_t npending, cap_pending, pending_bytes;

	struct kvd_waiter *wtab[KVD_WAIT_BUCKETS];
	struct kvd_waiter *wfirst, *wlast;
	size_t nwaiters;
	uint64_t last_id;

	/* Follower "nudge": an empty entry proposed so that the leader sends
	 * an append carrying its new commit index at once (see server.c). */
	struct kvraft_propose_req nudge_pr;
	bool nudge_busy;
	size_t reads_pending; /* linearizable reads waiting on the node */

	struct mvcc_arena arena; /* responses built on the loop */
	int64_t compacted_rev;   /* physical compaction done up to */
	bool nospace_pending;
	bool stopping;
	int exit_code;
};

/* gateway.c */
void kvd_on_request(struct http_request *req, void *data);
/* Answers req with etcd's error body {"error","message","code"} and the
 * HTTP status of the gRPC code. */
void kvd_respond_error(struct kvd_server *s, struct http_request *req,
		       int code, const char *msg);
/* Answers req with msg as JSON (200). msg is only read. */
void kvd_respond_message(struct kvd_server *s, struct http_request *req,
			 const ProtobufCMessage *msg);

/* client_conn.c: http_attach() with input back-pressure (see there).
 * Returns 0 or KV_ENOMEM (the connection is closed then). */
int kvd_client_attach(struct net_conn *c, const struct http_config *cfg,
		      http_on_request on_request, void *data);

/* server.c */
uint64_t kvd_next_request_id(struct kvd_server *s);
void kvd_header_ids(struct kvd_server *s, struct kv_header_ids *ids);
/* Takes msg (decoded with the malloc allocator; freed here). */
void kvd_propose(struct kvd_server *s, struct http_request *req,
		 Kvdpb__InternalRequest__RequestCase type,
		 ProtobufCMessage *msg);
/* Takes msg (a RangeRequest, or a read-only TxnRequest when txn). */
void kvd_read(struct kvd_server *s, struct http_request *req,
	      ProtobufCMessage *msg, bool txn, bool serializable);
/* Serves a read from the local store now (msg is borrowed). */
void kvd_serve_read(struct kvd_server *s, struct http_request *req,
		    ProtobufCMessage *msg, bool txn);

#endif

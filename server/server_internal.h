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
#include "net/grpc.h"
#include "net/h2.h"
#include "net/http.h"
#include "net/tls.h"
#include "server/config.h"
#include "server/server.h"
#include "v3electionpb/v3election.pb-c.h"
#include "v3lockpb/v3lock.pb-c.h"

#define KVD_WAIT_BUCKETS 4096

/* Member-to-member message of kvd's own (the transport delivers types
 * 2..255; raft/ uses 2..8): body = the sender's --advertise-client-urls.
 * Sent to every peer every few seconds, so MemberList shows every
 * member's client URLs (not persisted; etcd replicates them in raft). */
#define KVD_PEER_MSG_ATTRS 64

/* One client call, whatever the transport (gateway.c: HTTP/JSON,
 * grpc_service.c: gRPC). The transport adapter owns the memory. The
 * service code answers exactly once, with kvd_call_respond or
 * kvd_call_fail; the call must not be touched afterwards. If the client
 * goes away first, the adapter runs on_abort (when set) and frees the
 * call right after: whoever holds the call drops it there. */
struct kvd_call;
struct kvd_call_ops {
	/* Answers with msg (only read, during the call). */
	void (*respond)(struct kvd_call *c, const ProtobufCMessage *msg);
	/* Answers with a gRPC status (KV_GRPC_*) and etcd's message. */
	void (*fail)(struct kvd_call *c, int code, const char *msg);
};
struct kvd_call {
	const struct kvd_call_ops *ops;
	struct kvd_server *s;
	/* Set by the service code while it holds the call. */
	void (*on_abort)(struct kvd_call *c);
	void *user;
};

static inline void kvd_call_respond(struct kvd_call *c,
				    const ProtobufCMessage *msg)
{
	c->on_abort = NULL;
	c->user = NULL;
	c->ops->respond(c, msg);
}

static inline void kvd_call_fail(struct kvd_call *c, int code,
				 const char *msg)
{
	c->on_abort = NULL;
	c->user = NULL;
	c->ops->fail(c, code, msg);
}

/* A client write waiting for its result from this member's apply. Owned
 * by the registry; call is NULL once the client went away. */
struct kvd_waiter {
	uint64_t id;
	struct kvd_server *s;
	struct kvd_call *call;
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

	/* MoveLeader waiting for the transferee to lead (service.c) */
	struct kvd_call *move_call;
	uint64_t move_target, move_deadline;

	struct grpc_server *grpc; /* grpc_service.c */
	struct kvd_grpc_method *grpc_methods;
	struct snapshot_job *snapshots; /* open Snapshot calls */
	unsigned snap_workers;          /* store copies on worker threads */
	/* Runs once snap_workers drops to 0 (shutdown waits for copies). */
	void (*on_snapshots_done)(struct kvd_server *s);

	/* watch_service.c */
	struct watch_registry *watch;
	struct wctx *watch_streams; /* every open watch stream */
	struct wctx *watch_dirty;   /* streams with news for the registry */
	struct mvcc_arena watch_arena, watch_notify_arena;
	uv_idle_t watch_idle; /* active while watchers catch up */

	struct mvcc_arena arena; /* responses built on the loop */
	int64_t compacted_rev;   /* physical compaction done up to */
	bool nospace_pending;
	bool stopping;
	int exit_code;
};

/* service.c: the RPCs, transport-free. Each takes the decoded request
 * (malloc allocator; freed by the service) and answers c. */
typedef void (*kvd_service_fn)(struct kvd_server *s, struct kvd_call *c,
			       ProtobufCMessage *req);
struct kvd_rpc {
	const char *gateway; /* after /v3/, or NULL */
	const char *grpc;    /* "/etcdserverpb.KV/Range" */
	const ProtobufCMessageDescriptor *req;
	kvd_service_fn fn;
};
extern const struct kvd_rpc kvd_rpcs[];
struct kvd_grpc_method {
	struct kvd_server *s;
	const struct kvd_rpc *rpc;
};
extern const size_t kvd_nrpcs;
/* True when the member can serve (not stopping, node and store open). */
bool kvd_serving(const struct kvd_server *s);
bool kvd_healthy(const struct kvd_server *s);
/* Every tick, and with stopping at shutdown: answers a MoveLeader. */
void kvd_check_move(struct kvd_server *s, bool stopping);
/* etcd's answer for a validation failure (st->code 0: too many
 * requests). */
void kvd_fail_status(struct kvd_call *c, const struct kv_status *st);

/* gateway.c: etcd's HTTP routes (JSON gateway, /health, /version), one
 * routing table for every HTTP transport. A transport adapter fills a
 * struct kvd_gw_req (request fields valid until answered or aborted) and
 * calls kvd_gateway_serve; the gateway answers exactly once through
 * ops->respond (maybe at once, maybe later from the loop) and does not
 * touch r afterwards. If the client goes away before the answer, the
 * adapter calls kvd_gateway_abort(r) and may then free r. */
struct kvd_gw_req;
struct kvd_gw_ops {
	/* The complete answer: status, headers (names as in HTTP/1.1;
	 * only read during the call) and body (len bytes, copied). */
	void (*respond)(struct kvd_gw_req *r, int status,
			const struct http_header *hdrs, size_t n,
			const void *body, size_t len);
};
struct kvd_gw_req {
	const struct kvd_gw_ops *ops;
	const char *method; /* "GET", "POST", ... */
	const char *target; /* "/v3/kv/range?x=1" */
	const unsigned char *body;
	size_t body_len;
	struct kvd_call call; /* gateway.c's, while an RPC is pending */
	bool pending;
};
void kvd_gateway_serve(struct kvd_server *s, struct kvd_gw_req *r);
void kvd_gateway_abort(struct kvd_gw_req *r);
/* The HTTP/1.1 adapter (http_on_request; data is the server). */
void kvd_on_request(struct http_request *req, void *data);

/* gateway_h2.c: the HTTP/2 adapter, the grpc_server fallback for streams
 * that are not gRPC (h2_on_stream; data is the server). */
void kvd_gateway_h2_on_stream(struct h2_stream *st, void *data);

/* grpc_service.c: the method table and the gRPC adapter. */
int kvd_grpc_setup(struct kvd_server *s);
void kvd_grpc_free(struct kvd_server *s);

/* watch_service.c: the watch registry and its two transports. */
struct mvcc;
struct wctx;
struct watch_registry;
/* After kv_apply_new: the registry at the store's revision. */
int kvd_watch_setup(struct kvd_server *s);
/* The apply hooks: an entry was applied (store at revision); the store
 * was replaced by a snapshot. */
void kvd_watch_applied(struct kvd_server *s, int64_t revision);
void kvd_watch_restored(struct kvd_server *s, struct mvcc *m);
/* Once per loop iteration: catch-up step; keeps watch_idle active while
 * there is more. */
void kvd_watch_loop(struct kvd_server *s);
/* From the tick timer: periodic progress. */
void kvd_watch_tick(struct kvd_server *s);
/* POST /v3/watch and /v3beta/watch on HTTP/1.1: a chunked answer. */
void kvd_watch_http(struct kvd_server *s, struct http_request *req);
/* The same on HTTP/2 (gateway_h2.c, once the request body is complete):
 * installs its own stream handler, so the caller's handler and user data
 * are no longer used after this returns (free them then). body is only
 * read during the call. */
void kvd_watch_h2(struct kvd_server *s, struct h2_stream *st,
		  const unsigned char *body, size_t len);
/* /etcdserverpb.Watch/Watch (method_data: the server). */
extern const struct grpc_handler kvd_watch_grpc_h;
/* Shutdown begins: ends every stream (gRPC: UNAVAILABLE). */
void kvd_watch_stop(struct kvd_server *s);
/* After the loop ended: frees the registry. */
void kvd_watch_free(struct kvd_server *s);

/* v3lock.c: /v3lockpb.Lock (etcd's v3lock: locks over the KV API). */
void kvd_svc_lock(struct kvd_server *s, struct kvd_call *c,
		  ProtobufCMessage *req);
void kvd_svc_unlock(struct kvd_server *s, struct kvd_call *c,
		    ProtobufCMessage *req);

/* v3election.c: /v3electionpb.Election (etcd's v3election). */
void kvd_svc_campaign(struct kvd_server *s, struct kvd_call *c,
		      ProtobufCMessage *req);
void kvd_svc_proclaim(struct kvd_server *s, struct kvd_call *c,
		      ProtobufCMessage *req);
void kvd_svc_leader(struct kvd_server *s, struct kvd_call *c,
		    ProtobufCMessage *req);
void kvd_svc_resign(struct kvd_server *s, struct kvd_call *c,
		    ProtobufCMessage *req);
/* /v3electionpb.Election/Observe (method_data: the server). */
extern const struct grpc_handler kvd_observe_grpc_h;
/* POST /v3/election/observe on HTTP/1.1: a chunked answer. */
void kvd_observe_http(struct kvd_server *s, struct http_request *req);

/* server.c */
uint64_t kvd_next_request_id(struct kvd_server *s);
void kvd_header_ids(struct kvd_server *s, struct kv_header_ids *ids);
/* Takes msg (decoded with the malloc allocator; freed here). */
void kvd_propose(struct kvd_server *s, struct kvd_call *c,
		 Kvdpb__InternalRequest__RequestCase type,
		 ProtobufCMessage *msg);
/* Takes msg (a RangeRequest, or a read-only TxnRequest when txn). */
void kvd_read(struct kvd_server *s, struct kvd_call *c,
	      ProtobufCMessage *msg, bool txn, bool serializable);
/* Serves a read from the local store now (msg is borrowed). */
void kvd_serve_read(struct kvd_server *s, struct kvd_call *c,
		    ProtobufCMessage *msg, bool txn);

#endif

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
/* Lease requests a follower forwards to the leader, and the answers
 * (lease_service.c). */
#define KVD_PEER_MSG_LEASE_FWD 65
#define KVD_PEER_MSG_LEASE_RET 66

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

	/* lease_service.c */
	struct lease_fwd *lease_fwd_first, *lease_fwd_last;
	uint64_t lease_fwd_seq;
	uint64_t lease_tick_at; /* uv_now of the last lease tick */
	uint64_t lease_id_seq;  /* low 48 bits of the last lease ID picked */
	struct ka_stream *lease_streams;

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
/* For the gateway's streamed answers (POST /v3/watch, /v3/election/
 * observe), which their services write themselves: the headers of a JSON
 * answer (CORS + content-type), and etcd's whole error answer
 * {"error","message","code"} with HTTP status. */
extern const struct http_header kvd_gw_json_headers[];
extern const size_t kvd_gw_n_json_headers;
void kvd_gw_h1_error(struct http_request *req, int status, int code,
		     const char *msg);
/* That body alone, malloc'd (NULL when out of memory). */
char *kvd_gw_error_body(int code, const char *msg);
/* One message of a streamed answer as a single malloc'd block: hdr bytes
 * for the caller's bookkeeping, then the message, packed (gRPC) or as the
 * gateway's line {"result":...} and a newline (json); *len is the
 * message's length. NULL when out of memory. */
void *kvd_stream_msg(const ProtobufCMessage *m, bool json, size_t hdr,
		     size_t *len);
void kvd_gateway_abort(struct kvd_gw_req *r);
/* The HTTP/1.1 adapter (http_on_request; data is the server). */
void kvd_on_request(struct http_request *req, void *data);

/* gateway_h2.c: the HTTP/2 adapter, the grpc_server fallback for streams
 * that are not gRPC (h2_on_stream; data is the server). */
void kvd_gateway_h2_on_stream(struct h2_stream *st, void *data);
/* The same for HTTP/2 streams: lowercase headers without a length (the
 * answer ends with the stream), an error answer, and an on_data that
 * discards what comes after the complete request body. */
extern const struct h2_header kvd_gw_h2_json_headers[];
extern const size_t kvd_gw_n_h2_json_headers;
void kvd_gw_h2_error(struct h2_stream *st, int status, int code,
		     const char *msg);
void kvd_gw_h2_discard(struct h2_stream *st, const unsigned char *p,
		       size_t n);

/* grpc_service.c: the method table and the gRPC adapter. */
int kvd_grpc_setup(struct kvd_server *s);
/* Whether a gRPC call may start: false (and the call finished with
 * UNAVAILABLE) when the member is stopping, or when the client asked for
 * a leader (metadata hasleader) and there is none, as etcd's
 * interceptors. */
bool kvd_grpc_admit(struct kvd_server *s, struct grpc_call *gc);
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

/* ---- v3lock / v3election block (icall.c, v3lock.c, v3election.c) ---- */

/* icall.c: a struct kvd_call run by server code instead of a client, so
 * the services above (kvd_propose, kvd_read, kvd_svc_*) can be used from
 * inside the server. Completion is always deferred to a fresh loop
 * iteration (a timer), never delivered inside the callee's stack (apply
 * hooks, read barriers). */
struct kvd_icall;
typedef void (*kvd_icall_fn)(struct kvd_icall *ic);
struct kvd_icall {
	struct kvd_call call; /* what the callee sees */
	uv_timer_t timer;     /* defers on_done */
	kvd_icall_fn on_done;
	void *data;
	bool pending; /* started, not yet answered */
	bool closing;
	/* The answer, valid in on_done and until kvd_icall_free: code 0
	 * and resp (a malloc'd copy of the response), or a gRPC status
	 * and its message. */
	int code;
	char msg[256];
	ProtobufCMessage *resp;
	/* kvd_icall_read: a copy of the request, to retry while the
	 * cluster has no leader (Unavailable) until retry_deadline, as
	 * clientv3 retries a Range. */
	ProtobufCMessage *retry_msg;
	uint64_t retry_deadline;
};
/* A new call (NULL when out of memory); on_done(ic) runs once per
 * started request, later, on the loop. */
struct kvd_icall *kvd_icall_new(struct kvd_server *s, kvd_icall_fn on_done,
				void *data);
/* Starts fn(s, &ic->call, req) (takes req, malloc'd). One request at a
 * time per icall; a finished one may start another (the previous answer
 * is freed). */
void kvd_icall_run(struct kvd_icall *ic, kvd_service_fn fn,
		   ProtobufCMessage *req);
/* kvd_propose / kvd_read through ic (take msg). A linearizable read is
 * retried (every 100 ms, for up to the request timeout) while it fails
 * with Unavailable and the member is not stopping. */
void kvd_icall_propose(struct kvd_icall *ic,
		       Kvdpb__InternalRequest__RequestCase type,
		       ProtobufCMessage *msg);
void kvd_icall_read(struct kvd_icall *ic, ProtobufCMessage *msg, bool txn);
/* Frees ic (memory goes in a close callback). A pending request is
 * dropped (the callee's on_abort runs) and on_done will not run; may be
 * called from on_done. NULL is allowed. */
void kvd_icall_free(struct kvd_icall *ic);
/* A malloc'd deep copy of m (free with protobuf_c_message_free_unpacked),
 * or NULL. Used to build requests the callees may free. */
ProtobufCMessage *kvd_pb_clone(const ProtobufCMessage *m);

/* icall.c: a one-watcher watch stream for server code (the registry of
 * watch_service.c). Responses are copied and delivered later on the loop
 * (never inside the registry's callbacks); the stream's queue drains as
 * they are consumed, so a consumer that pauses holds the watcher back
 * (it falls unsynced and catches up later), never memory. */
struct kvd_kwatch;
struct kvd_kwatch_event {
	bool deleted;
	Mvccpb__KeyValue *kv; /* key, mod_revision (and the rest for PUT) */
};
struct kvd_kwatch_resp {
	int64_t revision; /* header revision */
	bool canceled;    /* by compaction (compact_revision), or stopped */
	int64_t compact_revision;
	size_t n;
	struct kvd_kwatch_event *ev;
};
/* Returns false to pause delivery (kvd_kwatch_resume restarts it); may
 * free kw (then its return value is ignored). r valid during the call. */
typedef bool (*kvd_kwatch_fn)(struct kvd_kwatch *kw, void *data,
			      const struct kvd_kwatch_resp *r);
/* Watches [key, range_end) (range_end_len 0: key alone) from
 * start_revision. When the member begins to stop, on_resp gets a
 * canceled response with compact_revision 0. 0 or KV_ENOMEM /
 * KV_ECLOSED (no registry). */
int kvd_kwatch_new(struct kvd_server *s, const uint8_t *key, size_t key_len,
		   const uint8_t *range_end, size_t range_end_len,
		   int64_t start_revision, kvd_kwatch_fn on_resp, void *data,
		   struct kvd_kwatch **out);
/* Holds delivery back (as on_resp returning false) until resumed. */
void kvd_kwatch_pause(struct kvd_kwatch *kw);
void kvd_kwatch_resume(struct kvd_kwatch *kw);
/* Closes the watcher; memory goes in a close callback. NULL allowed. */
void kvd_kwatch_free(struct kvd_kwatch *kw);

/* icall.c: clientv3/concurrency's waitDeletes(pfx, max_create_rev): waits
 * until no key under the prefix has a create revision <= max_create_rev
 * (a linearizable Range for the newest such key, then a watch for its
 * deletion, repeated). done runs once, later, with code 0 and the header
 * of the last Range, or a gRPC status and message; the waiter is freed
 * right after done returns. */
struct kvd_waitdel;
typedef void (*kvd_waitdel_fn)(void *data, int code, const char *msg,
			       const Etcdserverpb__ResponseHeader *hdr);
int kvd_waitdel_new(struct kvd_server *s, const uint8_t *pfx, size_t len,
		    int64_t max_create_rev, kvd_waitdel_fn done, void *data,
		    struct kvd_waitdel **out);
/* Stops waiting (done will not run); frees. NULL allowed. */
void kvd_waitdel_free(struct kvd_waitdel *w);

/* icall.c helpers shared by v3lock.c and v3election.c. */
/* key = pfx + hex(lease) as Go's %x prints an int64; malloc'd, *len. */
uint8_t *kvd_conc_key(const uint8_t *pfx, size_t pfx_len, int64_t lease,
		      size_t *len);
/* etcd's prefix range end (clientv3.GetPrefixRangeEnd); malloc'd. */
uint8_t *kvd_prefix_end(const uint8_t *pfx, size_t len, size_t *end_len);
/* LeaseGrant{TTL: ttl} through ic (kvd_svc_lease_grant). */
void kvd_icall_grant(struct kvd_icall *ic, int64_t ttl);
/* RequestOps pointing at the caller's buffers (op and the request are
 * the caller's, e.g. on the stack; nothing is copied). first_create:
 * clientv3.WithFirstCreate (limit 1, ascending create revision). */
void kvd_op_put(Etcdserverpb__RequestOp *op, Etcdserverpb__PutRequest *p,
		const uint8_t *key, size_t key_len, const uint8_t *val,
		size_t val_len, int64_t lease);
void kvd_op_range(Etcdserverpb__RequestOp *op, Etcdserverpb__RangeRequest *r,
		  const uint8_t *key, size_t key_len, const uint8_t *end,
		  size_t end_len, bool first_create);
void kvd_op_delete(Etcdserverpb__RequestOp *op,
		   Etcdserverpb__DeleteRangeRequest *d, const uint8_t *key,
		   size_t key_len);
/* A malloc'd TxnRequest: If create_revision(key) == create_rev Then then
 * Else els (NULL when out of memory; kvd_icall_propose fails then). */
ProtobufCMessage *kvd_conc_txn(const uint8_t *key, size_t key_len,
			       int64_t create_rev,
			       Etcdserverpb__RequestOp **then, size_t nthen,
			       Etcdserverpb__RequestOp **els, size_t nels);
/* The i-th sub-response of a txn as a range response, or NULL. */
const Etcdserverpb__RangeResponse *
kvd_txn_range(const Etcdserverpb__TxnResponse *r, size_t i);
/* The error of an internal KV call as etcd's v3lock / v3election return
 * it: their embedded client turns every error into a plain Go error,
 * which gRPC sends as Unknown (2) with the same text. */
void kvd_conc_fail(struct kvd_call *c, int code, const char *msg);

/* lease_service.c: /etcdserverpb.Lease. */
void kvd_svc_lease_grant(struct kvd_server *s, struct kvd_call *c,
			 ProtobufCMessage *req);
void kvd_svc_lease_revoke(struct kvd_server *s, struct kvd_call *c,
			  ProtobufCMessage *req);
/* One LeaseKeepAliveRequest -> LeaseKeepAliveResponse (the gateway's
 * /v3/lease/keepalive; the gRPC stream answers each message with it). */
void kvd_svc_lease_keepalive(struct kvd_server *s, struct kvd_call *c,
			     ProtobufCMessage *req);
void kvd_svc_lease_ttl(struct kvd_server *s, struct kvd_call *c,
		       ProtobufCMessage *req);
void kvd_svc_lease_leases(struct kvd_server *s, struct kvd_call *c,
			  ProtobufCMessage *req);
/* /etcdserverpb.Lease/LeaseKeepAlive (method_data: the server). */
extern const struct grpc_handler kvd_lease_keepalive_grpc_h;
/* From the tick timer (elapsed_ms since the last): the leader's expiry
 * and checkpoints, forwarded-call timeouts. */
void kvd_lease_tick(struct kvd_server *s, uint64_t elapsed_ms);
void kvd_lease_peer_message(struct kvd_server *s, uint64_t from,
			    uint8_t type, const void *body, size_t len);
/* Shutdown begins: fails forwarded calls, ends keep-alive streams. */
void kvd_lease_stop(struct kvd_server *s);

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
/* The same on HTTP/2, as kvd_watch_h2: once the request body is complete;
 * installs its own stream handler (the caller's handler and user data are
 * no longer used after this returns); body is only read during the
 * call. */
void kvd_observe_h2(struct kvd_server *s, struct h2_stream *st,
		    const unsigned char *body, size_t len);
/* ---- end of the v3lock / v3election block ---- */

/* server.c */
uint64_t kvd_next_request_id(struct kvd_server *s);
void kvd_header_ids(struct kvd_server *s, struct kv_header_ids *ids);
/* Proposes a request of the server's own (no client waits for it): sets
 * its id and member; takes ir (malloc'd message tree) on 0. */
int kvd_propose_internal(struct kvd_server *s, Kvdpb__InternalRequest *ir);
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

/* kvraft/node.h — one raft member: canonical/raft 0.15 over our raft_io
 * (kvraft/io.h), the replicated state machine (kvraft/statemachine.h),
 * proposals with forwarding, batched linearizable read barriers and
 * snapshots through files.
 *
 * Threads: every function and callback runs on the loop thread, except
 * sm->write_snapshot (a worker thread).
 *
 * Entry encoding (RAFT_COMMAND entries proposed here):
 *   u32 LE magic 0x3142564b ("KVB1") | u32 LE payload length | payload |
 *   zero padding to a multiple of 8
 * The buffer is raft_malloc'd and its length a multiple of 8 (0.15
 * corrupts other lengths). sm->apply gets exactly the payload.
 *
 * Peer messages (bodies, little endian u64 fields unless noted):
 *   PEER_MSG_RAFT              io_codec.h message
 *   PEER_MSG_FORWARD           fwd_id | batch bytes
 *   PEER_MSG_FORWARD_RESULT    fwd_id | status (KV_E*, as i64) | index
 *   PEER_MSG_READ_INDEX        read_id
 *   PEER_MSG_READ_INDEX_RESULT read_id | status (i64) | index
 *   PEER_MSG_SNAPSHOT          see raft/node_snapshot.c
 *   PEER_MSG_SNAPSHOT_ACK      see raft/node_snapshot.c
 *
 * Read barriers: on the leader one raft_barrier serves every read queued
 * before it; reads that queue while it is in flight ride on the next
 * write this leader appends (or get the next barrier). A follower sends
 * PEER_MSG_READ_INDEX for its queued reads; the leader answers with the
 * index of that barrier/write once applied, and the follower serves the
 * reads when its applied index reaches it.
 *
 * Defects of 0.15 neutralised here: a barrier as soon as the member
 * becomes leader, and no linearizable read before it applied
 * (kvraft_node_leader_ready); padded raft_malloc'd entries; fsm->apply
 * always returns 0 (a state-machine failure fail-stops the node);
 * io.version = 2 for async snapshots; a leader does not count acks of
 * older-term entries toward commit (raft/io.c); read barriers are started
 * from the loop (a uv_idle handle), never inside a raft callback, since
 * 0.15's raft_barrier crashes when called from a barrier callback that
 * fails while leadership is being lost. */
#ifndef KVRAFT_NODE_H
#define KVRAFT_NODE_H

#include <raft.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "kvraft/ids.h"
#include "kvraft/statemachine.h"
#include "storage/wal.h"

/* How the node reaches its peers. send copies (or consumes) body before
 * returning; type is an enum peer_msg_type (kvraft/transport.h). Returns
 * 0 if queued (delivery is best effort), a negative KV_E* if it cannot
 * (the message is dropped; raft retries). Called on the loop thread. */
struct kvraft_net {
	void *data;
	int (*send)(void *data, uint64_t to, uint8_t type, const void *body,
		    size_t len);
};

struct kvraft_node_config {
	const char *data_dir;  /* <dir>/wal, <dir>/snap, <dir>/member */
	const char *name;      /* this member's name (raft address) */
	uint64_t self_id;      /* ignored on restart (read from data dir) */
	uint64_t cluster_id;   /* idem */
	/* Initial cluster (used only to bootstrap a fresh data dir; every
	 * member must be given the identical list). Borrowed for the call. */
	const struct kvraft_member *members;
	size_t nmembers;
	unsigned heartbeat_ms;        /* 0 = 100 (etcd --heartbeat-interval) */
	unsigned election_timeout_ms; /* 0 = 1000 (etcd --election-timeout) */
	uint64_t snapshot_count;      /* 0 = 100000 (etcd --snapshot-count) */
	uint64_t snapshot_trailing;   /* entries kept behind a snapshot;
				       * 0 = 5000 */
	unsigned request_timeout_ms;  /* forwards and follower reads; 0 = 7000 */
	unsigned snapshot_chunk;      /* bytes per PEER_MSG_SNAPSHOT; 0 = 1 MiB */
	enum wal_sync_mode wal_sync;  /* WAL_SYNC_DATA unless testing */
	uint64_t wal_segment_size;    /* 0 = WAL default */
	struct vfs *wal_vfs;          /* NULL = POSIX; tests inject faults */
};

struct kvraft_node;

/* ---- proposals ---- */
struct kvraft_propose_req;
/* status 0: committed and applied on the leader at index (the local state
 * machine delivers per-request results when it applies index; results
 * never cross the network). KV_ECANCELED: leadership changed before the
 * outcome was known (the entry may still commit — retry idempotently).
 * KV_ETIMEOUT: forwarded, no answer within request_timeout_ms (outcome
 * unknown). KV_ENOLEADER, KV_ECLOSED, KV_EFAILSTOP. */
typedef void (*kvraft_propose_cb)(struct kvraft_propose_req *req, int status,
				  uint64_t index);
/* Caller-allocated; untouched until its callback ran. */
struct kvraft_propose_req {
	void *data;
	/* private */
	struct kvraft_node *node;
	kvraft_propose_cb cb;
	struct raft_apply apply;
	uint64_t fwd_id, fwd_to;
	uint64_t deadline;
	struct kvraft_propose_req *prev, *next;
	struct read_batch *reads; /* reads served by this write */
};

/* ---- read barriers ---- */
struct kvraft_read_req;
/* status 0: every write committed before the barrier was requested is
 * applied locally; read the state machine now. KV_ENOLEADER, KV_ETIMEOUT,
 * KV_ECLOSED, KV_EFAILSTOP. */
typedef void (*kvraft_read_cb)(struct kvraft_read_req *req, int status);
struct kvraft_read_req {
	void *data;
	/* private */
	struct kvraft_node *node;
	kvraft_read_cb cb;
	uint64_t index;
	uint64_t deadline;
	struct kvraft_read_req *prev, *next;
};

enum kvraft_role {
	KVRAFT_FOLLOWER = 1,
	KVRAFT_CANDIDATE = 2,
	KVRAFT_LEADER = 3,
	KVRAFT_STOPPED = 4, /* not started, closing or failed */
};

struct kvraft_status {
	uint64_t id, cluster_id;
	uint64_t leader; /* 0 = unknown */
	uint64_t term;
	uint64_t commit_index, applied_index, last_index;
	uint64_t snapshot_index;
	enum kvraft_role role;
	bool leader_ready;
	bool failed;
};

/* Creates a member over cfg->data_dir (opening its WAL). sm and net are
 * borrowed and must outlive the node. On error errmsg says why. */
int kvraft_node_new(uv_loop_t *loop, const struct kvraft_node_config *cfg,
		    struct kvraft_sm *sm, struct kvraft_net *net,
		    struct kvraft_node **out, char *errmsg, size_t errlen);
/* Bootstraps a fresh data dir from cfg->members (all voters, entry 1 the
 * configuration), or restarts from an existing one; then runs raft. */
int kvraft_node_start(struct kvraft_node *n);
/* Fails every pending request (KV_ECLOSED, or KV_ECANCELED for proposals
 * raft still held), stops raft, closes the WAL and frees n; then calls
 * cb(arg). n must not be used after this call. */
void kvraft_node_close(struct kvraft_node *n, void (*cb)(void *arg),
		       void *arg);

/* An incoming peer message (body borrowed). */
void kvraft_node_receive(struct kvraft_node *n, uint64_t from, uint8_t type,
			 const void *body, size_t len);

/* Proposes one RequestBatch (len bytes at batch, copied). 0: cb will be
 * called exactly once; or a negative KV_E* (cb never called): KV_ENOLEADER
 * (no known leader), KV_ETOOBIG, KV_ENOMEM, KV_ECLOSED, KV_EFAILSTOP. */
int kvraft_node_propose(struct kvraft_node *n, const void *batch, size_t len,
			struct kvraft_propose_req *req, kvraft_propose_cb cb);

/* Linearizable read barrier, batched: every read queued before a barrier
 * (leader) or a read-index request (follower) is served by it. 0: cb will
 * be called once; KV_ECLOSED, KV_EFAILSTOP otherwise. */
int kvraft_node_read_barrier(struct kvraft_node *n,
			     struct kvraft_read_req *req, kvraft_read_cb cb);

/* True when this member leads and its post-election barrier applied in
 * the current term. */
bool kvraft_node_leader_ready(struct kvraft_node *n);
void kvraft_node_status(struct kvraft_node *n, struct kvraft_status *st);

/* Asks raft to hand leadership to member `to` (etcd's MoveLeader); the
 * caller watches kvraft_node_status for the result. 0, KV_ENOLEADER (not
 * the leader), KV_EBUSY (a transfer is under way) or KV_EINVAL (to is not
 * a voter). */
int kvraft_node_transfer(struct kvraft_node *n, uint64_t to);

/* Largest accepted batch (the WAL's limit minus the entry header). */
#define KVRAFT_MAX_BATCH (WAL_MAX_PAYLOAD - 16u)

#endif

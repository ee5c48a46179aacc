/* raft/node_internal.h — private: the node's state, shared by node.c and
 * node_snapshot.c. Loop thread only. */
#ifndef KVRAFT_NODE_INTERNAL_H
#define KVRAFT_NODE_INTERNAL_H

#include "io_codec.h"
#include "kvraft/io.h"
#include "kvraft/node.h"

struct snap_out; /* node_snapshot.c */
struct snap_in;

/* A snapshot being written by sm->write_snapshot (one at a time). */
struct snap_job {
	struct raft_buffer buf; /* the descriptor handed to raft */
	unsigned char desc[KVRAFT_DESC_SIZE];
	char path[4200];
	uint64_t index, term;
};

/* Remote read-index request waiting on the leader. */
struct remote_read {
	struct remote_read *next;
	uint64_t from, id;
};

/* One read batch: a barrier on the leader or a READ_INDEX on a follower. */
struct read_batch {
	struct raft_barrier barrier;
	struct kvraft_node *node;
	struct kvraft_read_req *reads; /* list */
	struct remote_read *remote;
	uint64_t id, to;
	bool detached; /* node closed or batch abandoned */
};

struct kvraft_node {
	uv_loop_t *loop;
	struct kvraft_node_config cfg; /* pointers not kept */
	char *dir, *name;
	struct kvraft_sm *sm;
	struct kvraft_net *net;
	struct kvraft_io *io;
	struct raft raft;
	struct raft_fsm fsm;
	bool raft_inited, started, closing, failed;
	int fail_err;
	uint64_t id, cluster_id;

	/* observed raft state */
	int last_state;
	uint64_t last_leader, last_term;
	uint64_t ready_term;
	struct raft_barrier lead_barrier;
	bool lead_barrier_inflight;
	uint64_t lead_barrier_term;

	/* forwarded proposals waiting for FORWARD_RESULT */
	struct kvraft_propose_req *fwd;
	uint64_t next_id;
	unsigned fwd_applies; /* leader-side raft_apply for peers in flight */

	/* reads */
	struct kvraft_read_req *rq_queued;  /* not yet in a batch */
	struct kvraft_read_req *rq_applied; /* follower: index known */
	struct remote_read *remote_queued;  /* leader: from followers */
	struct read_batch *batch;           /* in flight (at most one) */

	uv_timer_t sweep;
	/* kick_reads runs from here, never inside a raft callback: 0.15's
	 * raft_barrier from a barrier callback that fails because leadership
	 * is being lost dereferences freed leader state. */
	uv_idle_t kick;
	struct snap_job *snap_job;
	struct snap_out *snap_out; /* outgoing streams (list) */
	struct snap_in *snap_in;   /* incoming streams (list) */
	uint64_t next_stream;
	int snap_pending; /* received files being published on a worker */

	/* kvraft_node_transfer: one leadership transfer at a time */
	struct raft_transfer transfer;
	bool transfer_busy;

	void (*close_cb)(void *arg);
	void *close_arg;
	int close_pending;
};

void node_failstop(struct kvraft_node *n, int err, const char *what);
uint64_t node_term_of(struct raft *r, uint64_t index);

/* node_snapshot.c */
int node_snapshot_send(void *data, const struct raft_message *m);
void node_snapshot_on_chunk(struct kvraft_node *n, uint64_t from,
			    const void *body, size_t len);
void node_snapshot_on_ack(struct kvraft_node *n, uint64_t from,
			  const void *body, size_t len);
void node_snapshot_sweep(struct kvraft_node *n);
/* Aborts every stream; returns how many worker jobs are still running
 * (each calls node_close_step when done). */
int node_snapshot_close(struct kvraft_node *n);
void node_close_step(struct kvraft_node *n);

#endif

/* server/server.h — the kvd member: wires the peer transport, the raft
 * node (kvraft/node.h), the MVCC state machine (kvraft/apply.h) and the
 * client listeners serving etcd 3.4's JSON gateway over HTTP/1.1(+TLS).
 *
 * Threads: one libuv loop thread owns everything (raft, the MVCC write
 * transaction, every connection).
 *
 * Writes: validated, appended to the current proposal batch
 * (kvdpb.RequestBatch); once per loop iteration (uv_prepare) the batch is
 * proposed as one raft entry (forwarded to the leader by the node on a
 * follower). A waiter keyed by request id answers the client when this
 * member's own apply reports the result (on_result). Request ids: a
 * hybrid logical clock per member, id = max(last + 1, wall_ms << 20), so
 * ids grow across restarts unless the wall clock steps back by more than
 * the previous run's uptime; results replayed from the WAL for ids of an
 * earlier run never match a waiter.
 *
 * Reads: linearizable through kvraft_node_read_barrier (batched by the
 * node; a follower asks the leader for its read index), then served from
 * the local store; serializable reads are served at once. */
#ifndef KVD_SERVER_SERVER_H
#define KVD_SERVER_SERVER_H

#include "server/config.h"

/* Runs a member until SIGTERM/SIGINT (graceful: stops accepting, answers
 * or fails in-flight requests, closes raft and the WAL, commits and syncs
 * the store). Returns the process exit code: 0 after a clean stop, 1 when
 * startup or the store failed (the reason is logged). cfg is borrowed. */
int kvd_server_run(const struct kvd_config *cfg);

#endif

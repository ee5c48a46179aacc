/* kvraft/io.h — kvd's struct raft_io for canonical/raft 0.15: the log and
 * term/vote live in storage/wal (<dir>/wal), snapshot descriptors in
 * <dir>/snap/meta (the state itself is a file <dir>/snap/<term>-<index>.snap
 * written by the state machine), messages go out through struct kvraft_net
 * (kvraft/node.h) encoded as described in raft/io_codec.h.
 *
 * Threads: everything on the loop thread. WAL completions arrive on the
 * WAL's writer thread and are bounced to the loop with uv_async_send;
 * raft's append callbacks then run on the loop in submission order, and
 * only after the entries were fsynced. set_term/set_vote are durable when
 * they return.
 *
 * Fail-stop: after any WAL failure the io logs it, reports RAFT_IOERR to
 * the failing request, stops ticking and refuses every later request and
 * message (kvraft_io_failed() turns true). It never retries.
 *
 * Lifetime: kvraft_io_new opens the WAL; the struct raft_io is handed to
 * raft_init; raft_close closes it (its close callback runs once every
 * handle, WAL callback and worker job has finished); kvraft_io_free then
 * releases the memory (it also closes the WAL if raft never did). */
#ifndef KVRAFT_IO_H
#define KVRAFT_IO_H

#include <raft.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "storage/wal.h"

struct kvraft_net;
struct kvraft_io;

struct kvraft_io_options {
	const char *dir;         /* data dir; copied */
	struct kvraft_net *net;  /* borrowed; must outlive the io */
	enum wal_sync_mode sync; /* WAL_SYNC_DATA unless testing */
	uint64_t segment_size;   /* 0 = WAL default */
	struct vfs *vfs;         /* WAL's vfs; NULL = POSIX (tests inject
				  * faults); borrowed */
};

/* Optional hooks for the node (all on the loop thread). */
struct kvraft_io_hooks {
	void *data;
	/* After every tick, received message and batch of completions. */
	void (*on_event)(void *data);
	/* Sends an InstallSnapshot to m->server_id instead of encoding it
	 * inline; m is valid only during the call. 0 or negative KV_E*. */
	int (*send_snapshot)(void *data, const struct raft_message *m);
	/* Highest index the state machine holds durably: the WAL prefix is
	 * never dropped above it. NULL = never drop. */
	uint64_t (*durable_index)(void *data);
	/* The io failed for good (err is a KV_E*). */
	void (*on_failstop)(void *data, int err);
};

/* Opens <dir>/wal (creating dir, dir/wal, dir/snap) and reads
 * <dir>/snap/meta. 0, or KV_E* with errmsg filled (errlen bytes). */
int kvraft_io_new(uv_loop_t *loop, const struct kvraft_io_options *opts,
		  struct kvraft_io **out, char *errmsg, size_t errlen);
/* The struct raft_io to pass to raft_init (version 2: async_work). */
struct raft_io *kvraft_io_raft(struct kvraft_io *io);
void kvraft_io_set_hooks(struct kvraft_io *io,
			 const struct kvraft_io_hooks *hooks);
/* Frees io; call after raft's close finished (or if raft never used it). */
void kvraft_io_free(struct kvraft_io *io);

/* A PEER_MSG_RAFT body from peer `from`: decoded with strict bounds
 * checks and handed to raft's recv callback. Malformed bodies are logged
 * and dropped. body is borrowed. */
void kvraft_io_receive(struct kvraft_io *io, uint64_t from, const void *body,
		       size_t len);
/* Hands an already decoded message (memory as io_msg_decode allocates it)
 * to raft; ownership passes to raft (or is freed if it cannot take it). */
void kvraft_io_deliver(struct kvraft_io *io, uint64_t from,
		       struct raft_message *m);

bool kvraft_io_failed(struct kvraft_io *io);
/* Forces fail-stop (e.g. the state machine failed): the io stops ticking
 * and refuses everything from now on. err is a KV_E*. */
void kvraft_io_fail(struct kvraft_io *io, int err);
/* True once the WAL holds state (a term, entries or a snapshot). */
bool kvraft_io_has_state(struct kvraft_io *io);
/* <dir>/snap (valid while io lives). */
const char *kvraft_io_snap_dir(struct kvraft_io *io);
/* Path of the snapshot file for (term, index) into buf. */
void kvraft_io_snap_path(struct kvraft_io *io, uint64_t term, uint64_t index,
			 char *buf, size_t len);
/* The WAL (for status and tests). */
struct wal *kvraft_io_wal(struct kvraft_io *io);

#endif

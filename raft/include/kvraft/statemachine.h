/* kvraft/statemachine.h — what the raft node needs from the replicated
 * state machine (kvd's is raft/apply.c over storage/mvcc; tests may supply
 * others).
 *
 * Every call runs on the loop thread, except write_snapshot, which runs on
 * a worker thread while the loop keeps applying.
 *
 * Durability contract: the state machine keeps the applied index with the
 * state (atomically, in the same store transaction) and may commit lazily;
 * durable_index() says how far the store is durable, and the node never
 * drops WAL entries above it. On restart the node replays the WAL from
 * durable_index() + 1. */
#ifndef KVRAFT_STATEMACHINE_H
#define KVRAFT_STATEMACHINE_H

#include <stddef.h>
#include <stdint.h>

struct kvraft_sm {
	void *data;

	/* Applies one committed RAFT_COMMAND entry (a kvdpb.RequestBatch).
	 * Deterministic. Request-level errors go into the results the state
	 * machine hands to local waiters (it matches the batch's requests
	 * proposed by this member by request id); they are not failures.
	 * Returns 0, or a negative KV_E* for a local fatal failure (disk,
	 * memory): the node then stops (fail-stop), never skips the entry. */
	int (*apply)(void *data, uint64_t index, uint64_t term,
		     const void *buf, size_t len);

	/* An entry without a command (barrier, configuration change) was
	 * applied at index: advance the applied index. 0 or fatal KV_E*. */
	int (*apply_noop)(void *data, uint64_t index, uint64_t term);

	/* Index and term of the last applied entry (0, 0 for empty). */
	void (*applied)(void *data, uint64_t *index, uint64_t *term);

	/* Highest index whose effects are durable in the store. */
	uint64_t (*durable_index)(void *data);

	/* Step 1 of a snapshot, on the loop: make everything applied durable
	 * (commit + sync) and report the index/term the snapshot will hold. */
	int (*prepare_snapshot)(void *data, uint64_t *index, uint64_t *term);

	/* Step 2, on a worker thread: write a consistent copy of the state
	 * at (at least) the prepared index to path, durable (fsynced), with
	 * its checksum inside or beside it as the implementation documents;
	 * report the index/term it actually holds, its size and checksum. */
	int (*write_snapshot)(void *data, const char *path, uint64_t *index,
			      uint64_t *term, uint64_t *size, uint32_t *crc);

	/* Replaces the whole state by the snapshot file at path (received
	 * from the leader), after verifying it (checksum, it opens, its
	 * index/term match). On failure the old state is untouched. On the
	 * loop thread; may block for the file swap. */
	int (*restore)(void *data, const char *path, uint64_t index,
		       uint64_t term, uint32_t crc);
};

#endif

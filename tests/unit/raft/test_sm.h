/* An in-test replicated state machine: applies 8-byte sequence numbers,
 * keeps their list, a running hash, and persists itself to <dir>/sm.state
 * on prepare_snapshot (its durable point). Snapshot files are the same
 * serialization written from a copy taken at prepare time. */
#ifndef KV_TEST_SM_H
#define KV_TEST_SM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "kvraft/statemachine.h"

struct tsm_state {
	uint64_t index, term, count, hash;
	uint64_t *seqs;
	size_t nseqs, cap;
};

struct tsm {
	struct kvraft_sm sm;
	char path[4096]; /* durable state file */
	struct tsm_state st;
	uint64_t durable;
	struct tsm_state snap; /* copy for write_snapshot */
	pthread_mutex_t mu;
	int restores, snapshots;
	int fail_apply_at; /* apply returns KV_EIO at this index (0 = never) */
	/* write_snapshot writes the state as it is when the worker runs
	 * (later than prepared, like an MVCC checkpoint), not the copy */
	bool write_latest;
};

/* Loads <dir>/sm.state if present. */
void tsm_init(struct tsm *t, const char *dir);
void tsm_free(struct tsm *t);
bool tsm_has(const struct tsm *t, uint64_t seq);

#endif

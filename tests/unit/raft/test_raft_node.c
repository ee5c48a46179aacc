/* Three kvraft nodes over the in-memory network on one loop, with the
 * in-test state machine (test_sm.c): replication of 10,000 batches,
 * follower and leader restarts, forwarding, read barriers, snapshot
 * catch-up, fail-stop. Every wait is bounded by loop timers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kv/errors.h"
#include "kvraft/ids.h"
#include "kvraft/node.h"
#include "raft_test_util.h"
#include "storage/vfs.h"
#include "test_sm.h"

#define N 3

struct member {
	char dir[4096];
	struct tsm sm;
	struct kvraft_node *node;
	bool up;
	struct cluster *c;
	struct vfs *vfs; /* fault-injecting WAL vfs, or NULL */
};

struct cluster {
	uv_loop_t loop;
	char *root;
	struct rt_net net;
	struct kvraft_cluster ic;
	struct member m[N];
	struct kvraft_node_config cfg;
};

static void deliver(void *arg, uint64_t from, uint8_t type, const void *body,
		    size_t len)
{
	struct member *m = arg;
	if (m->up)
		kvraft_node_receive(m->node, from, type, body, len);
}

/* restart_flags_garbage: restart with no member list and a wrong self id
 * (a restart must take both from the data dir). */
static void member_start_ex(struct cluster *c, int i,
			    bool restart_flags_garbage)
{
	struct member *m = &c->m[i];
	tsm_init(&m->sm, m->dir);
	struct kvraft_node_config cfg = c->cfg;
	cfg.data_dir = m->dir;
	cfg.name = c->ic.members[i].name;
	cfg.self_id = c->ic.members[i].id;
	if (restart_flags_garbage) {
		cfg.self_id = 12345;
		cfg.members = NULL;
		cfg.nmembers = 0;
	}
	cfg.wal_vfs = m->vfs;
	char err[256];
	int rv = kvraft_node_new(&c->loop, &cfg, &m->sm.sm,
				 rt_net_add(&c->net, c->ic.members[i].id),
				 &m->node, err, sizeof(err));
	if (rv != 0)
		fail_msg("node_new: %s", err);
	m->up = true;
	rt_net_attach(&c->net, c->ic.members[i].id, deliver, m);
	assert_int_equal(kvraft_node_start(m->node), 0);
	struct kvraft_status st;
	kvraft_node_status(m->node, &st);
	assert_true(st.id == c->ic.members[i].id);
	assert_true(st.cluster_id == c->ic.cluster_id);
}

static void member_start(struct cluster *c, int i)
{
	member_start_ex(c, i, false);
}

/* Every command entry in a stopped member's WAL is a multiple of 8 bytes
 * with our header carrying the exact payload length (8). */
static void check_wal_entries(struct cluster *c, int i)
{
	char dir[4200];
	snprintf(dir, sizeof(dir), "%s/wal", c->m[i].dir);
	struct wal *w;
	assert_int_equal(wal_open(dir, NULL, &w, NULL, 0), 0);
	struct wal_info info;
	wal_info(w, &info);
	struct wal_iter *it;
	assert_int_equal(wal_iter_open(w, info.first_index, &it), 0);
	struct wal_entry e;
	int ncmd = 0, rv;
	while ((rv = wal_iter_next(it, &e)) == 1) {
		assert_int_equal(e.len % 8, 0);
		if (e.type != WAL_ENTRY_COMMAND)
			continue;
		const unsigned char *p = e.payload;
		assert_int_equal(e.len, 16);
		assert_int_equal(p[0] | p[1] << 8 | p[2] << 16 |
					 (uint32_t)p[3] << 24,
				 0x3142564bu);
		assert_int_equal(p[4], 8);
		ncmd++;
	}
	assert_int_equal(rv, 0);
	assert_true(ncmd > 0);
	wal_iter_close(it);
	assert_int_equal(wal_close(w), 0);
}

static void on_node_closed(void *arg)
{
	*(bool *)arg = true;
}

static bool flag_set(void *arg)
{
	return *(bool *)arg;
}

static void member_stop(struct cluster *c, int i)
{
	struct member *m = &c->m[i];
	if (!m->up)
		return;
	bool closed = false;
	m->up = false;
	rt_net_detach(&c->net, c->ic.members[i].id);
	kvraft_node_close(m->node, on_node_closed, &closed);
	assert_true(rt_run_until(&c->loop, flag_set, &closed, 10000));
	m->node = NULL;
	tsm_free(&m->sm);
}

static struct cluster *cluster_new(uint64_t snapshot_count,
				   uint64_t trailing)
{
	struct cluster *c = calloc(1, sizeof(*c));
	uv_loop_init(&c->loop);
	c->root = rt_mkdtemp();
	rt_net_init(&c->net, &c->loop);
	assert_int_equal(kvraft_cluster_parse("m1=http://127.0.0.1:2380,"
					      "m2=http://127.0.0.1:2381,"
					      "m3=http://127.0.0.1:2382",
					      "test", "new", &c->ic, NULL, 0),
			 0);
	c->cfg.members = c->ic.members;
	c->cfg.nmembers = c->ic.n;
	c->cfg.cluster_id = c->ic.cluster_id;
	c->cfg.heartbeat_ms = 20;
	c->cfg.election_timeout_ms = 200;
	c->cfg.snapshot_count = snapshot_count;
	c->cfg.snapshot_trailing = trailing;
	c->cfg.request_timeout_ms = 1000;
	c->cfg.snapshot_chunk = 256;
	c->cfg.wal_sync = WAL_SYNC_DATA;
	c->cfg.wal_segment_size = 16 * 1024;
	for (int i = 0; i < N; i++) {
		snprintf(c->m[i].dir, sizeof(c->m[i].dir), "%s/%s", c->root,
			 c->ic.members[i].name);
		c->m[i].c = c;
	}
	return c;
}

static void cluster_free(struct cluster *c)
{
	for (int i = 0; i < N; i++)
		member_stop(c, i);
	rt_net_close(&c->net);
	uv_run(&c->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&c->loop), 0);
	kvraft_cluster_free(&c->ic);
	rt_rmtree(c->root);
	free(c->root);
	free(c);
}

static int leader_of(struct cluster *c)
{
	for (int i = 0; i < N; i++)
		if (c->m[i].up && kvraft_node_leader_ready(c->m[i].node))
			return i;
	return -1;
}

static bool has_ready_leader(void *arg)
{
	return leader_of(arg) >= 0;
}

static int wait_leader(struct cluster *c)
{
	assert_true(rt_run_until(&c->loop, has_ready_leader, c, 10000));
	return leader_of(c);
}

/* ---- proposals ---- */

struct prop {
	struct kvraft_propose_req req;
	uint64_t seq;
	int status;
	uint64_t index;
	bool done;
	int *ndone;
};

static void on_prop(struct kvraft_propose_req *req, int status,
		    uint64_t index)
{
	struct prop *p = req->data;
	p->status = status;
	p->index = index;
	p->done = true;
	if (p->ndone)
		(*p->ndone)++;
}

struct count_wait {
	int *n;
	int want;
};

static bool count_reached(void *arg)
{
	struct count_wait *w = arg;
	return *w->n >= w->want;
}

/* Proposes seqs [from, from+count) through member i with a window of
 * in-flight requests; asserts all succeed. */
static void propose_window(struct cluster *c, int i, uint64_t from,
			   int count, int window)
{
	struct prop *ps = calloc((size_t)count, sizeof(*ps));
	int ndone = 0, next = 0;
	while (ndone < count) {
		while (next < count && next - ndone < window) {
			struct prop *p = &ps[next];
			p->seq = from + (uint64_t)next;
			p->req.data = p;
			p->ndone = &ndone;
			int rv = kvraft_node_propose(c->m[i].node, &p->seq, 8,
						     &p->req, on_prop);
			assert_int_equal(rv, 0);
			next++;
		}
		struct count_wait w = {&ndone, next};
		assert_true(rt_run_until(&c->loop, count_reached, &w, 20000));
	}
	for (int k = 0; k < count; k++) {
		assert_int_equal(ps[k].status, 0);
		assert_true(ps[k].index > 0);
	}
	free(ps);
}

static void propose_many(struct cluster *c, int i, uint64_t from, int count)
{
	propose_window(c, i, from, count, 256);
}

static bool converged(void *arg)
{
	struct cluster *c = arg;
	uint64_t idx = 0;
	int l = leader_of(c);
	if (l < 0)
		return false;
	struct kvraft_status st;
	kvraft_node_status(c->m[l].node, &st);
	idx = st.last_index;
	for (int i = 0; i < N; i++) {
		if (!c->m[i].up)
			continue;
		kvraft_node_status(c->m[i].node, &st);
		if (st.applied_index < idx)
			return false;
	}
	return true;
}

static void check_equal(struct cluster *c)
{
	assert_true(rt_run_until(&c->loop, converged, c, 20000));
	int ref = -1;
	for (int i = 0; i < N; i++) {
		if (!c->m[i].up)
			continue;
		if (ref < 0) {
			ref = i;
			continue;
		}
		assert_int_equal(c->m[i].sm.st.count, c->m[ref].sm.st.count);
		assert_true(c->m[i].sm.st.hash == c->m[ref].sm.st.hash);
	}
}

static int follower_of(struct cluster *c, int leader)
{
	for (int i = 0; i < N; i++)
		if (i != leader && c->m[i].up)
			return i;
	return -1;
}

static void test_replicate_restart_and_leader_loss(void **state)
{
	(void)state;
	struct cluster *c = cluster_new(1000000, 5000);
	for (int i = 0; i < N; i++)
		member_start(c, i);
	int l = wait_leader(c);
	propose_many(c, l, 1, 10000);
	check_equal(c);
	assert_int_equal(c->m[l].sm.st.count, 10000);

	/* a follower stops, misses entries, restarts from its data dir
	 * (its state machine is empty: it replays the WAL) */
	int f = follower_of(c, l);
	member_stop(c, f);
	check_wal_entries(c, f);
	propose_many(c, l, 10001, 500);
	member_start_ex(c, f, true);
	check_equal(c);
	assert_int_equal(c->m[f].sm.st.count, 10500);

	/* the leader stops: another member takes over, nothing committed
	 * is lost */
	member_stop(c, l);
	int l2 = wait_leader(c);
	assert_int_not_equal(l2, l);
	for (uint64_t s = 1; s <= 10500; s += 997)
		assert_true(tsm_has(&c->m[l2].sm, s));
	assert_true(c->m[l2].sm.st.count >= 10500);
	propose_many(c, l2, 20001, 300);
	member_start(c, l);
	check_equal(c);
	assert_int_equal(c->m[l].sm.st.count, 10800);
	assert_true(tsm_has(&c->m[l].sm, 20300));
	cluster_free(c);
}

/* 0.15 computes the commit index only at the leader's last stored entry;
 * a burst of proposals submitted at once must still all commit. */
static void test_burst_commits(void **state)
{
	(void)state;
	struct cluster *c = cluster_new(1000000, 5000);
	for (int i = 0; i < N; i++)
		member_start(c, i);
	int l = wait_leader(c);
	propose_window(c, l, 1, 5000, 5000);
	check_equal(c);
	cluster_free(c);
}

/* ---- forwarding and reads ---- */

struct rd {
	struct kvraft_read_req req;
	int status;
	bool done;
};

static void on_read(struct kvraft_read_req *req, int status)
{
	struct rd *r = req->data;
	r->status = status;
	r->done = true;
}

static bool prop_done(void *arg)
{
	return ((struct prop *)arg)->done;
}

static bool read_done(void *arg)
{
	return ((struct rd *)arg)->done;
}

static void test_forward_and_read_barrier(void **state)
{
	(void)state;
	struct cluster *c = cluster_new(1000000, 5000);
	for (int i = 0; i < N; i++)
		member_start(c, i);
	int l = wait_leader(c);
	int f = follower_of(c, l);
	/* a proposal on a follower is forwarded and answered */
	struct prop p = {.seq = 77};
	p.req.data = &p;
	assert_int_equal(kvraft_node_propose(c->m[f].node, &p.seq, 8, &p.req,
					     on_prop),
			 0);
	assert_true(rt_run_until(&c->loop, prop_done, &p, 5000));
	assert_int_equal(p.status, 0);
	assert_true(p.index > 1);
	assert_true(tsm_has(&c->m[l].sm, 77));

	/* a read barrier on the follower sees that write at once */
	struct rd rs[5];
	memset(rs, 0, sizeof(rs));
	for (int k = 0; k < 5; k++) {
		rs[k].req.data = &rs[k];
		assert_int_equal(kvraft_node_read_barrier(
					 c->m[f].node, &rs[k].req, on_read),
				 0);
	}
	for (int k = 0; k < 5; k++) {
		assert_true(rt_run_until(&c->loop, read_done, &rs[k], 5000));
		assert_int_equal(rs[k].status, 0);
	}
	assert_true(tsm_has(&c->m[f].sm, 77));
	/* and on the leader */
	struct rd r = {0};
	r.req.data = &r;
	assert_int_equal(kvraft_node_read_barrier(c->m[l].node, &r.req,
						  on_read),
			 0);
	assert_true(rt_run_until(&c->loop, read_done, &r, 5000));
	assert_int_equal(r.status, 0);

	/* batching: 20 follower reads cost at most a few READ_INDEX */
	uint64_t before = c->net.sent_by_type[5];
	struct rd many[20];
	memset(many, 0, sizeof(many));
	for (int k = 0; k < 20; k++) {
		many[k].req.data = &many[k];
		assert_int_equal(kvraft_node_read_barrier(
					 c->m[f].node, &many[k].req, on_read),
				 0);
	}
	for (int k = 0; k < 20; k++) {
		assert_true(
			rt_run_until(&c->loop, read_done, &many[k], 5000));
		assert_int_equal(many[k].status, 0);
	}
	assert_true(c->net.sent_by_type[5] - before <= 2);

	/* an isolated follower: forwards time out or are canceled, reads
	 * fail, and once it lost its leader proposals say KV_ENOLEADER */
	rt_net_isolate(&c->net, c->ic.members[f].id, true);
	struct prop p2 = {.seq = 78};
	p2.req.data = &p2;
	int rv = kvraft_node_propose(c->m[f].node, &p2.seq, 8, &p2.req,
				     on_prop);
	if (rv == 0) {
		assert_true(rt_run_until(&c->loop, prop_done, &p2, 5000));
		assert_true(p2.status == KV_ETIMEOUT ||
			    p2.status == KV_ECANCELED);
	}
	struct rd r2 = {0};
	r2.req.data = &r2;
	assert_int_equal(kvraft_node_read_barrier(c->m[f].node, &r2.req,
						  on_read),
			 0);
	assert_true(rt_run_until(&c->loop, read_done, &r2, 5000));
	assert_true(r2.status == KV_ETIMEOUT || r2.status == KV_ENOLEADER);
	rt_run_for(&c->loop, 600);
	struct kvraft_status st;
	kvraft_node_status(c->m[f].node, &st);
	assert_int_equal(st.leader, 0);
	struct prop p3 = {.seq = 79};
	p3.req.data = &p3;
	assert_int_equal(kvraft_node_propose(c->m[f].node, &p3.seq, 8,
					     &p3.req, on_prop),
			 KV_ENOLEADER);
	/* pre-vote: the isolated member did not disturb the leader, and
	 * does not when it comes back (its term did not grow) */
	assert_true(kvraft_node_leader_ready(c->m[l].node));
	struct kvraft_status lst;
	kvraft_node_status(c->m[l].node, &lst);
	rt_net_isolate(&c->net, c->ic.members[f].id, false);
	check_equal(c);
	struct kvraft_status lst2;
	kvraft_node_status(c->m[l].node, &lst2);
	assert_int_equal(lst2.term, lst.term);
	assert_true(kvraft_node_leader_ready(c->m[l].node));
	cluster_free(c);
}

/* ---- snapshots ---- */

static void snapshot_catch_up(bool write_latest)
{
	struct cluster *c = cluster_new(200, 50);
	for (int i = 0; i < N; i++) {
		member_start(c, i);
		c->m[i].sm.write_latest = write_latest;
	}
	int l = wait_leader(c);
	int f = follower_of(c, l);
	member_stop(c, f);
	propose_many(c, l, 1, 1500);
	uint64_t total = 1500;
	/* snapshots are taken while applying and one at a time: keep
	 * writing until one well past the follower's log exists */
	struct kvraft_status st;
	for (int round = 0; round < 100; round++) {
		kvraft_node_status(c->m[l].node, &st);
		if (st.snapshot_index >= 1000)
			break;
		propose_many(c, l, 3000 + total, 20);
		total += 20;
		rt_run_for(&c->loop, 20);
	}
	assert_true(st.snapshot_index >= 1000);
	assert_true(c->m[l].sm.snapshots > 0);
	member_start(c, f);
	check_equal(c);
	assert_true(c->m[f].sm.restores >= 1);
	assert_int_equal(c->m[f].sm.st.count, total);
	/* and it keeps up afterwards, then restarts from its snapshot */
	propose_many(c, l, 50001, 100);
	check_equal(c);
	member_stop(c, f);
	member_start(c, f);
	check_equal(c);
	assert_int_equal(c->m[f].sm.st.count, total + 100);
	cluster_free(c);
}

static void test_snapshot_catch_up(void **state)
{
	(void)state;
	snapshot_catch_up(false);
}

/* The state machine writes a later state than raft's snapshot index
 * (as an MVCC checkpoint may): the follower restores that state and
 * skips the entries it already holds. */
static void test_snapshot_catch_up_later_state(void **state)
{
	(void)state;
	snapshot_catch_up(true);
}

/* ---- fail-stop ---- */

static void test_state_machine_failure_stops_member(void **state)
{
	(void)state;
	struct cluster *c = cluster_new(1000000, 5000);
	for (int i = 0; i < N; i++)
		member_start(c, i);
	int l = wait_leader(c);
	int f = follower_of(c, l);
	c->m[f].sm.fail_apply_at = 10;
	propose_many(c, l, 1, 50);
	rt_run_for(&c->loop, 300);
	struct kvraft_status st;
	kvraft_node_status(c->m[f].node, &st);
	assert_true(st.failed);
	assert_int_equal(st.role, KVRAFT_STOPPED);
	struct prop p = {.seq = 1};
	p.req.data = &p;
	assert_int_equal(kvraft_node_propose(c->m[f].node, &p.seq, 8, &p.req,
					     on_prop),
			 KV_EFAILSTOP);
	/* the others carry on */
	propose_many(c, l, 100, 10);
	cluster_free(c);
}

/* The leader's disk fails: it fail-stops (0.15 alone would keep leading
 * after a failed write), the others elect a new leader and go on. */
static void test_leader_disk_failure(void **state)
{
	(void)state;
	struct cluster *c = cluster_new(1000000, 5000);
	for (int i = 0; i < N; i++) {
		c->m[i].vfs = vfs_fault_new(vfs_posix());
		member_start(c, i);
	}
	int l = wait_leader(c);
	propose_many(c, l, 1, 20);
	vfs_fault_arm(c->m[l].vfs, VFS_OP_SYNC, 1, KV_EIO, true);
	struct prop p = {.seq = 500};
	p.req.data = &p;
	assert_int_equal(kvraft_node_propose(c->m[l].node, &p.seq, 8, &p.req,
					     on_prop),
			 0);
	rt_run_for(&c->loop, 100);
	struct kvraft_status st;
	kvraft_node_status(c->m[l].node, &st);
	assert_true(st.failed);
	assert_false(p.done && p.status == 0 && !tsm_has(&c->m[l].sm, 500));
	int l2 = -1;
	for (int k = 0; k < 200 && (l2 < 0 || l2 == l); k++) {
		rt_run_for(&c->loop, 50);
		l2 = leader_of(c);
	}
	assert_true(l2 >= 0 && l2 != l);
	propose_many(c, l2, 1000, 20);
	assert_true(tsm_has(&c->m[l2].sm, 20));
	member_stop(c, l); /* the pending proposal ends with a callback */
	assert_true(p.done);
	if (p.status == 0)
		assert_true(tsm_has(&c->m[l2].sm, 500));
	for (int i = 0; i < N; i++) {
		struct vfs *v = c->m[i].vfs;
		member_stop(c, i);
		vfs_destroy(v);
	}
	cluster_free(c);
}

/* Hostile or garbled peer messages of every type are dropped or answered
 * with an error; the member keeps working (run under ASan). */
static void test_garbage_peer_messages(void **state)
{
	(void)state;
	struct cluster *c = cluster_new(1000000, 5000);
	for (int i = 0; i < N; i++)
		member_start(c, i);
	int l = wait_leader(c);
	int f = follower_of(c, l);
	uint64_t from = c->ic.members[l].id;
	unsigned char buf[512];
	uint64_t rng = 12345;
	for (int round = 0; round < 2000; round++) {
		size_t len = (size_t)(rng % sizeof(buf));
		for (size_t k = 0; k < len; k++) {
			rng = rng * 6364136223846793005ull + 1442695040888963407ull;
			buf[k] = (unsigned char)(rng >> 56);
		}
		/* sometimes plausible headers: small offsets and lengths */
		if (round % 3 == 0 && len >= 40) {
			memset(buf + 8, 0, 8);     /* offset 0 */
			memset(buf + 32, 0, 8);    /* meta_len 0 */
			buf[28] = (unsigned char)(round % 2);
		}
		uint8_t type = (uint8_t)(1 + round % 9);
		if (type == 3)
			continue; /* FORWARD: any bytes are a valid proposal */
		kvraft_node_receive(c->m[f].node, from, type, buf, len);
		kvraft_node_receive(c->m[l].node, c->ic.members[f].id, type,
				    buf, len);
		if (round % 100 == 0)
			rt_run_for(&c->loop, 1);
	}
	rt_run_for(&c->loop, 200);
	struct kvraft_status st;
	kvraft_node_status(c->m[f].node, &st);
	assert_false(st.failed);
	int l2 = wait_leader(c);
	propose_many(c, l2, 1, 50);
	check_equal(c);
	cluster_free(c);
}

/* Reads mixed with writes on the leader ride on the writes: few barrier
 * entries are appended, and every read completes. */
static void test_reads_ride_on_writes(void **state)
{
	(void)state;
	struct cluster *c = cluster_new(1000000, 5000);
	for (int i = 0; i < N; i++)
		member_start(c, i);
	int l = wait_leader(c);
	struct kvraft_status st0, st1;
	kvraft_node_status(c->m[l].node, &st0);
	enum { NR = 100 };
	struct prop *ps = calloc(NR, sizeof(*ps));
	struct rd *rs = calloc(NR, sizeof(*rs));
	int ndone = 0;
	for (int k = 0; k < NR; k++) {
		rs[k].req.data = &rs[k];
		assert_int_equal(kvraft_node_read_barrier(c->m[l].node,
							  &rs[k].req, on_read),
				 0);
		ps[k].seq = (uint64_t)k + 1;
		ps[k].req.data = &ps[k];
		ps[k].ndone = &ndone;
		assert_int_equal(kvraft_node_propose(c->m[l].node, &ps[k].seq,
						     8, &ps[k].req, on_prop),
				 0);
	}
	struct count_wait w = {&ndone, NR};
	assert_true(rt_run_until(&c->loop, count_reached, &w, 10000));
	for (int k = 0; k < NR; k++) {
		assert_true(rt_run_until(&c->loop, read_done, &rs[k], 5000));
		assert_int_equal(rs[k].status, 0);
		assert_int_equal(ps[k].status, 0);
	}
	kvraft_node_status(c->m[l].node, &st1);
	/* 100 writes and at most a couple of barriers */
	assert_true(st1.last_index - st0.last_index <= NR + 2);
	free(ps);
	free(rs);
	cluster_free(c);
}

/* Closing members with proposals, forwards and reads in flight: every
 * callback runs exactly once (status 0 if it made it, else an error) and
 * nothing leaks. */
static void test_close_with_requests_in_flight(void **state)
{
	(void)state;
	struct cluster *c = cluster_new(100, 20);
	for (int i = 0; i < N; i++)
		member_start(c, i);
	int l = wait_leader(c);
	int f = follower_of(c, l);
	enum { NP = 300 };
	struct prop *ps = calloc(NP, sizeof(*ps));
	struct rd *rs = calloc(NP, sizeof(*rs));
	int ndone = 0;
	for (int k = 0; k < NP; k++) {
		ps[k].seq = (uint64_t)k + 1;
		ps[k].req.data = &ps[k];
		ps[k].ndone = &ndone;
		int who = k % 2 ? l : f;
		assert_int_equal(kvraft_node_propose(c->m[who].node, &ps[k].seq,
						     8, &ps[k].req, on_prop),
				 0);
		rs[k].req.data = &rs[k];
		assert_int_equal(kvraft_node_read_barrier(c->m[who].node,
							  &rs[k].req, on_read),
				 0);
		if (k == NP / 2)
			rt_run_for(&c->loop, 5);
	}
	member_stop(c, f);
	member_stop(c, l);
	for (int k = 0; k < NP; k++) {
		assert_true(ps[k].done);
		assert_true(rs[k].done);
		if (ps[k].status != 0)
			assert_true(ps[k].status == KV_ECLOSED ||
				    ps[k].status == KV_ECANCELED);
	}
	assert_int_equal(ndone, NP);
	free(ps);
	free(rs);
	cluster_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_replicate_restart_and_leader_loss),
		cmocka_unit_test(test_burst_commits),
		cmocka_unit_test(test_forward_and_read_barrier),
		cmocka_unit_test(test_snapshot_catch_up),
		cmocka_unit_test(test_snapshot_catch_up_later_state),
		cmocka_unit_test(test_state_machine_failure_stops_member),
		cmocka_unit_test(test_leader_disk_failure),
		cmocka_unit_test(test_garbage_peer_messages),
		cmocka_unit_test(test_close_with_requests_in_flight),
		cmocka_unit_test(test_reads_ride_on_writes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

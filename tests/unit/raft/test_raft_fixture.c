/* Deterministic multi-member runs of canonical/raft 0.15 with its
 * raft_fixture (simulated time, network and disk) and a simple in-test
 * FSM: elections, leader loss, partitions with log divergence and
 * truncation. Every run ends with every member's state machine equal.
 * These pin down the library behaviour the node relies on (including the
 * barrier a new leader must append before it knows what is committed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <raft.h>
#include <raft/fixture.h>

struct tfsm {
	uint64_t count, hash, last;
};

static int tfsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf,
		      void **result)
{
	struct tfsm *t = fsm->data;
	uint64_t v;
	assert_int_equal(buf->len, 8);
	memcpy(&v, buf->base, 8);
	t->count++;
	t->hash = (t->hash ^ v) * 0x100000001b3ull;
	t->last = v;
	*result = NULL;
	return 0;
}

static int tfsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[],
			 unsigned *n)
{
	struct tfsm *t = fsm->data;
	*bufs = raft_malloc(sizeof(**bufs));
	(*bufs)[0].base = raft_malloc(sizeof(*t));
	(*bufs)[0].len = sizeof(*t);
	memcpy((*bufs)[0].base, t, sizeof(*t));
	*n = 1;
	return 0;
}

static int tfsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
	struct tfsm *t = fsm->data;
	memcpy(t, buf->base, sizeof(*t));
	raft_free(buf->base);
	return 0;
}

#define MAXN 5

struct env {
	struct raft_fixture f;
	struct raft_fsm fsms[MAXN];
	struct tfsm st[MAXN];
	unsigned n;
};

static struct env *env_new(unsigned n)
{
	struct env *e = calloc(1, sizeof(*e));
	e->n = n;
	/* 0.15: raft_fixture_initialize does not zero f->n */
	memset(&e->f, 0, sizeof(e->f));
	assert_int_equal(raft_fixture_initialize(&e->f), 0);
	for (unsigned i = 0; i < n; i++) {
		e->fsms[i].version = 1;
		e->fsms[i].data = &e->st[i];
		e->fsms[i].apply = tfsm_apply;
		e->fsms[i].snapshot = tfsm_snapshot;
		e->fsms[i].restore = tfsm_restore;
		assert_int_equal(raft_fixture_grow(&e->f, &e->fsms[i]), 0);
	}
	struct raft_configuration conf;
	assert_int_equal(raft_fixture_configuration(&e->f, n, &conf), 0);
	assert_int_equal(raft_fixture_bootstrap(&e->f, &conf), 0);
	raft_configuration_close(&conf);
	for (unsigned i = 0; i < n; i++)
		raft_set_pre_vote(raft_fixture_get(&e->f, i), true);
	assert_int_equal(raft_fixture_start(&e->f), 0);
	return e;
}

static void env_free(struct env *e)
{
	raft_fixture_close(&e->f);
	free(e);
}

struct areq {
	struct raft_apply req;
	int status;
	bool done;
};

static void on_apply(struct raft_apply *req, int status, void *result)
{
	struct areq *a = req->data;
	(void)result;
	a->status = status;
	a->done = true;
}

static void on_barrier(struct raft_barrier *req, int status)
{
	int *st = req->data;
	*st = status;
}

/* Submits value v on member i (must be leader); returns the request. */
static struct areq *submit(struct env *e, unsigned i, uint64_t v)
{
	struct areq *a = calloc(1, sizeof(*a));
	a->req.data = a;
	struct raft_buffer buf = {raft_malloc(8), 8};
	memcpy(buf.base, &v, 8);
	int rv = raft_apply(raft_fixture_get(&e->f, i), &a->req, &buf, 1,
			    on_apply);
	assert_int_equal(rv, 0);
	return a;
}

static unsigned elect(struct env *e)
{
	assert_true(raft_fixture_step_until_has_leader(&e->f, 20000));
	unsigned l = raft_fixture_leader_index(&e->f);
	/* 0.15 appends nothing on election: our node's barrier */
	int st = -1;
	struct raft_barrier *b = calloc(1, sizeof(*b));
	b->data = &st;
	assert_int_equal(
		raft_barrier(raft_fixture_get(&e->f, l), b, on_barrier), 0);
	for (int k = 0; k < 100000 && st == -1; k++)
		raft_fixture_step(&e->f);
	assert_int_equal(st, 0);
	free(b);
	return l;
}

static void converge(struct env *e)
{
	unsigned l = raft_fixture_leader_index(&e->f);
	assert_true(l < e->n);
	raft_index last = raft_last_index(raft_fixture_get(&e->f, l));
	assert_true(raft_fixture_step_until_applied(&e->f, e->n, last, 20000));
	for (unsigned i = 1; i < e->n; i++) {
		if (!raft_fixture_alive(&e->f, i))
			continue;
		assert_int_equal(e->st[i].count, e->st[0].count);
		assert_true(e->st[i].hash == e->st[0].hash);
	}
}

static void wait_done(struct env *e, struct areq **as, int n)
{
	for (int k = 0; k < n; k++)
		for (int s = 0; s < 100000 && !as[k]->done; s++)
			raft_fixture_step(&e->f);
}

static void test_election_and_replication(void **state)
{
	(void)state;
	struct env *e = env_new(3);
	unsigned l = elect(e);
	struct areq *as[50];
	for (int k = 0; k < 50; k++)
		as[k] = submit(e, l, (uint64_t)k + 1);
	wait_done(e, as, 50);
	for (int k = 0; k < 50; k++) {
		assert_int_equal(as[k]->status, 0);
		free(as[k]);
	}
	converge(e);
	assert_int_equal(e->st[0].count, 50);
	env_free(e);
}

static void test_leader_loss(void **state)
{
	(void)state;
	struct env *e = env_new(3);
	unsigned l = elect(e);
	struct areq *as[20];
	for (int k = 0; k < 20; k++)
		as[k] = submit(e, l, (uint64_t)k + 1);
	wait_done(e, as, 20);
	for (int k = 0; k < 20; k++)
		free(as[k]);
	raft_fixture_kill(&e->f, l);
	assert_true(raft_fixture_step_until_has_no_leader(&e->f, 20000) ||
		    raft_fixture_leader_index(&e->f) != l);
	unsigned l2 = elect(e);
	assert_int_not_equal(l2, l);
	for (int k = 0; k < 20; k++)
		as[k] = submit(e, l2, (uint64_t)k + 100);
	wait_done(e, as, 20);
	for (int k = 0; k < 20; k++) {
		assert_int_equal(as[k]->status, 0);
		free(as[k]);
	}
	raft_fixture_revive(&e->f, l);
	converge(e);
	assert_int_equal(e->st[l].count, 40);
	env_free(e);
}

static void isolate(struct env *e, unsigned i, bool cut)
{
	for (unsigned j = 0; j < e->n; j++) {
		if (j == i)
			continue;
		if (cut) {
			raft_fixture_disconnect(&e->f, i, j);
			raft_fixture_disconnect(&e->f, j, i);
		} else {
			raft_fixture_reconnect(&e->f, i, j);
			raft_fixture_reconnect(&e->f, j, i);
		}
	}
}

static void test_partition_divergence_truncation(void **state)
{
	(void)state;
	struct env *e = env_new(5);
	unsigned l = elect(e);
	struct areq *as[10];
	for (int k = 0; k < 10; k++)
		as[k] = submit(e, l, (uint64_t)k + 1);
	wait_done(e, as, 10);
	for (int k = 0; k < 10; k++)
		free(as[k]);
	/* the leader is cut off and appends entries no one else gets */
	isolate(e, l, true);
	struct areq *lost[5];
	for (int k = 0; k < 5; k++)
		lost[k] = submit(e, l, (uint64_t)k + 1000);
	raft_index stale_last = raft_last_index(raft_fixture_get(&e->f, l));
	/* the majority elects another leader and commits other entries at
	 * the same indexes */
	unsigned l2 = l;
	for (int s = 0; s < 200000 && l2 == l; s++) {
		raft_fixture_step(&e->f);
		for (unsigned i = 0; i < e->n; i++)
			if (i != l &&
			    raft_state(raft_fixture_get(&e->f, i)) ==
				    RAFT_LEADER)
				l2 = i;
	}
	assert_int_not_equal(l2, l);
	struct areq *as2[10];
	for (int k = 0; k < 10; k++)
		as2[k] = submit(e, l2, (uint64_t)k + 2000);
	wait_done(e, as2, 10);
	for (int k = 0; k < 10; k++) {
		assert_int_equal(as2[k]->status, 0);
		free(as2[k]);
	}
	/* heal: the old leader steps down and its divergent suffix is
	 * truncated and replaced */
	isolate(e, l, false);
	wait_done(e, lost, 5);
	for (int k = 0; k < 5; k++) {
		assert_int_equal(lost[k]->status, RAFT_LEADERSHIPLOST);
		free(lost[k]);
	}
	converge(e);
	assert_true(raft_last_index(raft_fixture_get(&e->f, l)) >= stale_last);
	assert_int_equal(e->st[l].count, 20);
	assert_int_equal(e->st[l].last, 2009);
	env_free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_election_and_replication),
		cmocka_unit_test(test_leader_loss),
		cmocka_unit_test(test_partition_divergence_truncation),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Tests of the lease table (kvraft/lessor.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "kv/errors.h"
#include "kvraft/lessor.h"

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

struct keys {
	char v[16][32];
	size_t n;
};

static int take_key(void *arg, const void *key, size_t len)
{
	struct keys *k = arg;
	assert_true(len < 32 && k->n < 16);
	memcpy(k->v[k->n], key, len);
	k->v[k->n++][len] = '\0';
	return 0;
}

static size_t nkeys(struct kv_lessor *l, int64_t id)
{
	struct kv_lease_info info;
	if (kv_lessor_info(l, id, &info) != 0)
		return SIZE_MAX;
	return info.nkeys;
}

static void test_grant_attach_revoke(void **state)
{
	(void)state;
	struct kv_lessor *l;
	assert_int_equal(kv_lessor_new(&l), 0);
	assert_int_equal(kv_lessor_grant(l, 5, 30, 0), 0);
	assert_int_equal(kv_lessor_grant(l, -3, 10, 0), 0);
	assert_true(kv_lessor_exists(l, 5));
	assert_false(kv_lessor_exists(l, 6));
	assert_int_equal(kv_lessor_count(l), 2);
	/* attach, re-attach (no duplicate), move, detach, unknown lease */
	assert_int_equal(kv_lessor_attach(l, "a", 1, 5), 0);
	assert_int_equal(kv_lessor_attach(l, "a", 1, 5), 0);
	assert_int_equal(kv_lessor_attach(l, "b", 1, 5), 0);
	assert_int_equal(kv_lessor_attach(l, "c", 1, -3), 0);
	assert_int_equal(nkeys(l, 5), 2);
	assert_int_equal(kv_lessor_attach(l, "b", 1, -3), 0);
	assert_int_equal(nkeys(l, 5), 1);
	assert_int_equal(nkeys(l, -3), 2);
	assert_int_equal(kv_lessor_attach(l, "c", 1, 0), 0);
	assert_int_equal(kv_lessor_attach(l, "d", 1, 99), 0); /* no lease 99 */
	assert_int_equal(nkeys(l, -3), 1);
	struct keys k = { .n = 0 };
	assert_int_equal(kv_lessor_keys(l, -3, take_key, &k), 0);
	assert_int_equal(k.n, 1);
	assert_string_equal(k.v[0], "b");
	int64_t *ids;
	size_t n;
	assert_int_equal(kv_lessor_ids(l, &ids, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(ids[0], -3);
	assert_int_equal(ids[1], 5);
	free(ids);
	/* revoke drops the lease and its key entries; the key is free */
	kv_lessor_revoke(l, 5);
	assert_false(kv_lessor_exists(l, 5));
	assert_int_equal(kv_lessor_attach(l, "a", 1, -3), 0);
	assert_int_equal(nkeys(l, -3), 2);
	/* many keys and leases: the tables grow */
	for (int i = 0; i < 5000; i++) {
		char key[32];
		assert_int_equal(kv_lessor_grant(l, 1000 + i % 700, 60, 0), 0);
		snprintf(key, sizeof(key), "key-%d", i);
		assert_int_equal(kv_lessor_attach(l, key, strlen(key),
						  1000 + i % 700),
				 0);
	}
	assert_int_equal(kv_lessor_count(l), 701); /* -3 and 700 */
	size_t total = 0;
	for (int i = 0; i < 700; i++)
		total += nkeys(l, 1000 + i);
	assert_int_equal(total, 5000);
	assert_true(kv_lessor_memory(l) > 5000 * 8);
	kv_lessor_free(l);
}

static void test_rebuild_keeps_timing(void **state)
{
	(void)state;
	struct kv_lessor *l;
	assert_int_equal(kv_lessor_new(&l), 0);
	assert_int_equal(kv_lessor_grant(l, 1, 100, 0), 0);
	assert_int_equal(kv_lessor_grant(l, 2, 100, 0), 0);
	assert_int_equal(kv_lessor_attach(l, "x", 1, 1), 0);
	kv_lessor_promote(l, 0);
	sleep_ms(1200);
	struct kv_lease_info before, after;
	assert_int_equal(kv_lessor_info(l, 1, &before), 0);
	assert_true(before.left_ms < 99000 && before.left_ms > 90000);
	/* rebuild: lease 1 survives (timing kept), 2 goes, 3 appears */
	kv_lessor_load_begin(l);
	assert_int_equal(nkeys(l, 1), 0);
	assert_int_equal(kv_lessor_grant(l, 1, 100, 0), 0);
	assert_int_equal(kv_lessor_grant(l, 3, 50, 0), 0);
	assert_int_equal(kv_lessor_attach(l, "x", 1, 1), 0);
	kv_lessor_load_end(l);
	assert_false(kv_lessor_exists(l, 2));
	assert_int_equal(kv_lessor_info(l, 1, &after), 0);
	assert_true(after.left_ms <= before.left_ms);
	assert_true(after.left_ms > before.left_ms - 500);
	assert_int_equal(after.nkeys, 1);
	assert_int_equal(kv_lessor_info(l, 3, &after), 0);
	assert_true(after.left_ms > 49000 && after.left_ms <= 50000);
	kv_lessor_free(l);
}

static void test_leader_expiry_renew_checkpoint(void **state)
{
	(void)state;
	struct kv_lessor *l;
	int64_t ids[8];
	bool clear;
	assert_int_equal(kv_lessor_new(&l), 0);
	assert_int_equal(kv_lessor_grant(l, 1, 1, 0), 0);
	assert_int_equal(kv_lessor_grant(l, 2, 1, 0), 0);
	assert_int_equal(kv_lessor_grant(l, 3, 600, 0), 0);
	/* checkpointed remaining TTL 2 s: a new leader uses it, not 600 */
	kv_lessor_checkpoint(l, 3, 2);
	/* followers: no expiry, renew refused */
	assert_int_equal(kv_lessor_expired(l, ids, 8, 1000), 0);
	assert_int_equal(kv_lessor_renew(l, 1, &clear), 0);
	struct kv_lease_info info;
	assert_int_equal(kv_lessor_info(l, 1, &info), 0);
	assert_int_equal(info.left_ms, -1);
	kv_lessor_promote(l, 300);
	assert_true(kv_lessor_primary(l));
	assert_int_equal(kv_lessor_expired(l, ids, 8, 1000), 0);
	sleep_ms(700);
	/* renew 2: its expiry moves a TTL from now */
	assert_int_equal(kv_lessor_renew(l, 2, &clear), 1);
	assert_false(clear);
	assert_int_equal(kv_lessor_renew(l, 3, &clear), 600);
	assert_true(clear); /* its replicated remaining TTL must be cleared */
	assert_int_equal(kv_lessor_renew(l, 3, &clear), 600);
	assert_false(clear); /* asked once a second at most */
	kv_lessor_checkpoint(l, 3, 0);
	sleep_ms(700); /* 1.4 s: 1 expired (1 s + 0.3 s grace), 2 not */
	assert_int_equal(kv_lessor_expired(l, ids, 8, 1000), 1);
	assert_int_equal(ids[0], 1);
	/* asked once; renewing an expired lease fails */
	assert_int_equal(kv_lessor_expired(l, ids, 8, 1000), 0);
	assert_int_equal(kv_lessor_renew(l, 1, &clear), 0);
	assert_int_equal(kv_lessor_info(l, 1, &info), 0);
	assert_int_equal(info.left_ms, 0);
	sleep_ms(1100);
	/* 2 expired now; 1 is asked for again after the retry interval */
	size_t n = kv_lessor_expired(l, ids, 8, 1000);
	assert_int_equal(n, 2);
	assert_true((ids[0] == 1 && ids[1] == 2) ||
		    (ids[0] == 2 && ids[1] == 1));
	/* their revokes are applied */
	kv_lessor_revoke(l, 1);
	kv_lessor_revoke(l, 2);
	/* at most max per call */
	assert_int_equal(kv_lessor_grant(l, 10, 1, 0), 0);
	assert_int_equal(kv_lessor_grant(l, 11, 1, 0), 0);
	sleep_ms(1100);
	assert_int_equal(kv_lessor_expired(l, ids, 1, 5000), 1);
	assert_int_equal(kv_lessor_expired(l, ids, 1, 5000), 1);
	assert_int_equal(kv_lessor_expired(l, ids, 1, 5000), 0);
	/* checkpoints: only leases with more than the interval left, the
	 * first one an interval after the lease was seen */
	int64_t rem[8];
	assert_int_equal(kv_lessor_checkpoints(l, 1000, 100, ids, rem, 8), 0);
	sleep_ms(1050);
	n = kv_lessor_checkpoints(l, 1000, 100, ids, rem, 8);
	assert_int_equal(n, 1);
	assert_int_equal(ids[0], 3);
	assert_true(rem[0] > 590 && rem[0] <= 600);
	/* not again within the interval */
	assert_int_equal(kv_lessor_checkpoints(l, 1000, 100, ids, rem, 8), 0);
	/* demote: no expiries, no renewals */
	kv_lessor_demote(l);
	assert_false(kv_lessor_primary(l));
	assert_int_equal(kv_lessor_expired(l, ids, 8, 0), 0);
	assert_int_equal(kv_lessor_renew(l, 3, &clear), 0);
	/* revoke of a lease in the heap */
	kv_lessor_promote(l, 0);
	kv_lessor_revoke(l, 3);
	kv_lessor_revoke(l, 10);
	assert_int_equal(kv_lessor_count(l), 1);
	kv_lessor_free(l);
}

/* Random grants, renewals and revokes against a simple model: the leases
 * handed out by expired() are exactly those whose expiry passed. */
static void test_expiry_order_model(void **state)
{
	(void)state;
	struct kv_lessor *l;
	assert_int_equal(kv_lessor_new(&l), 0);
	kv_lessor_promote(l, 0);
	unsigned seed = 7;
	bool alive[400] = { false };
	for (int i = 0; i < 400; i++) {
		int64_t ttl = 1 + (int64_t)(rand_r(&seed) % 3);
		if (rand_r(&seed) % 4 == 0)
			ttl = 1000;
		assert_int_equal(kv_lessor_grant(l, i + 1, ttl, 0), 0);
		alive[i] = ttl < 1000;
	}
	for (int i = 0; i < 400; i += 7) {
		kv_lessor_revoke(l, i + 1);
		alive[i] = false;
	}
	sleep_ms(3200);
	int64_t ids[400];
	size_t n = kv_lessor_expired(l, ids, 400, 60000);
	size_t want = 0;
	for (int i = 0; i < 400; i++)
		want += alive[i];
	assert_int_equal(n, want);
	for (size_t i = 0; i < n; i++) {
		assert_true(ids[i] >= 1 && ids[i] <= 400);
		assert_true(alive[ids[i] - 1]);
		alive[ids[i] - 1] = false; /* no duplicates */
	}
	kv_lessor_free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_grant_attach_revoke),
		cmocka_unit_test(test_rebuild_keeps_timing),
		cmocka_unit_test(test_leader_expiry_renew_checkpoint),
		cmocka_unit_test(test_expiry_order_model),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

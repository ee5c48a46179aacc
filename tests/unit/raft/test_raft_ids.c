/* etcd-compatible ids and --initial-cluster parsing. The expected ids were
 * read from a real etcd 3.4.23 (POST /v3/cluster/member/list) started with
 * the same flags; the test does not need etcd. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kv/errors.h"
#include "kvraft/ids.h"

/* etcd --name m1 --initial-cluster m1=http://127.0.0.1:23901
 *      --initial-cluster-token tok1 */
static void test_etcd_single_url(void **state)
{
	(void)state;
	struct kvraft_cluster c;
	char err[256];
	assert_int_equal(kvraft_cluster_parse("m1=http://127.0.0.1:23901",
					      "tok1", "new", &c, err,
					      sizeof(err)),
			 0);
	assert_int_equal(c.n, 1);
	assert_true(c.members[0].id == 14968835129085992673ull);
	assert_true(c.cluster_id == 15515886828571789880ull);
	kvraft_cluster_free(&c);
}

/* etcd --initial-cluster m1=http://127.0.0.1:23811,m1=http://127.0.0.1:23802
 * (two peer URLs for one member, default token "etcd-cluster") */
static void test_etcd_two_urls_default_token(void **state)
{
	(void)state;
	struct kvraft_cluster c;
	assert_int_equal(
		kvraft_cluster_parse("m1=http://127.0.0.1:23811,"
				     "m1=http://127.0.0.1:23802",
				     NULL, NULL, &c, NULL, 0),
		0);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.members[0].nurls, 2);
	assert_string_equal(c.members[0].urls[0], "http://127.0.0.1:23802");
	assert_true(c.members[0].id == 9113717002439885500ull);
	assert_true(c.cluster_id == 9192810270187157818ull);
	assert_string_equal(c.token, "etcd-cluster");
	assert_int_equal(c.state, KVRAFT_CLUSTER_NEW);
	kvraft_cluster_free(&c);
}

static void test_three_members(void **state)
{
	(void)state;
	struct kvraft_cluster c;
	assert_int_equal(kvraft_cluster_parse(
				 "a=http://10.0.0.1:2380, b=http://10.0.0.2:2380,"
				 "c=https://10.0.0.3:2380",
				 "t", "existing", &c, NULL, 0),
			 0);
	assert_int_equal(c.n, 3);
	assert_int_equal(c.state, KVRAFT_CLUSTER_EXISTING);
	uint64_t ids[3];
	for (int i = 0; i < 3; i++) {
		ids[i] = c.members[i].id;
		if (i > 0)
			assert_true(ids[i] > ids[i - 1]);
	}
	const struct kvraft_member *b = kvraft_cluster_find(&c, "b");
	assert_non_null(b);
	const char *u[] = {"http://10.0.0.2:2380"};
	assert_true(b->id == kvraft_member_id(u, 1, "t"));
	/* the cluster id does not depend on the order of the ids */
	uint64_t rev[3] = {ids[2], ids[0], ids[1]};
	assert_true(c.cluster_id == kvraft_cluster_id(rev, 3));
	kvraft_cluster_free(&c);
}

static void test_rejects(void **state)
{
	(void)state;
	struct kvraft_cluster c;
	char err[256];
	const char *bad[] = {
		"",
		"a",
		"=http://h:1",
		"a=",
		"a=ftp://h:1",
		"a=http://h",
		"a=http://h:x",
		"a=http://h:1/path",
		"a=http://h:1,b=http://h:1",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		assert_int_equal(kvraft_cluster_parse(bad[i], "t", "new", &c,
						      err, sizeof(err)),
				 KV_EINVAL);
		assert_true(strlen(err) > 0);
	}
	assert_int_equal(kvraft_cluster_parse("a=http://h:1", "t", "old", &c,
					      err, sizeof(err)),
			 KV_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_etcd_single_url),
		cmocka_unit_test(test_etcd_two_urls_default_token),
		cmocka_unit_test(test_three_members),
		cmocka_unit_test(test_rejects),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

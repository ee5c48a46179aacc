/* Named edge cases of etcd v3.4's KV semantics (etcd-v3-api.md §4) against
 * the MVCC store, plus long keys, events, hash, checkpoint/restore, map
 * growth, fail-stop and meta records. Each test opens a fresh store. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/log.h"
#include "mvcc_test_util.h"
#include "storage/mvcc.h"

struct fx {
	char *dir;
	struct mvcc *m;
	struct mvcc_arena a;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	f->dir = tu_tmpdir();
	assert_int_equal(mvcc_open(f->dir, NULL, &f->m), 0);
	assert_int_equal(mvcc_begin_write(f->m), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	if (f->m != NULL) {
		assert_true(mvcc_invariants_ok(f->m));
		mvcc_close(f->m);
	}
	mvcc_arena_free(&f->a);
	tu_rmrf(f->dir);
	free(f->dir);
	free(f);
	return 0;
}

static void reopen(struct fx *f)
{
	if (mvcc_in_write(f->m))
		assert_int_equal(mvcc_commit(f->m, true), 0);
	mvcc_close(f->m);
	assert_int_equal(mvcc_open(f->dir, NULL, &f->m), 0);
	assert_int_equal(mvcc_begin_write(f->m), 0);
}

#define S(x) ((const uint8_t *)(x))

static struct mvcc_range_req rq(const char *k, const char *end)
{
	struct mvcc_range_req r = { 0 };

	r.key = S(k);
	r.key_len = k[0] ? strlen(k) : 1;
	if (end != NULL) {
		r.range_end = S(end);
		r.range_end_len = end[0] ? strlen(end) : 1;
	}
	return r;
}

static struct mvcc_range_res get(struct fx *f, const struct mvcc_range_req *r)
{
	struct mvcc_range_res res;

	assert_int_equal(mvcc_range(f->m, NULL, r, &f->a, &res), 0);
	return res;
}

static void assert_key(const struct mvcc_kv *kv, const char *k)
{
	assert_int_equal(kv->key_len, strlen(k));
	assert_memory_equal(kv->key, k, kv->key_len);
}

static void assert_val(const struct mvcc_kv *kv, const char *v)
{
	assert_int_equal(kv->value_len, strlen(v));
	if (kv->value_len)
		assert_memory_equal(kv->value, v, kv->value_len);
}

static struct mvcc_request_op op_put(const char *k, const char *v)
{
	struct mvcc_request_op o = { 0 };

	o.type = MVCC_OP_PUT;
	o.u.put.key = S(k);
	o.u.put.key_len = strlen(k);
	o.u.put.value = S(v);
	o.u.put.value_len = strlen(v);
	return o;
}

static struct mvcc_request_op op_del(const char *k, const char *end)
{
	struct mvcc_request_op o = { 0 };

	o.type = MVCC_OP_DELETE_RANGE;
	o.u.delete_range.key = S(k);
	o.u.delete_range.key_len = strlen(k);
	if (end != NULL) {
		o.u.delete_range.range_end = S(end);
		o.u.delete_range.range_end_len = end[0] ? strlen(end) : 1;
	}
	return o;
}

static struct mvcc_request_op op_range(const char *k, const char *end)
{
	struct mvcc_request_op o = { 0 };

	o.type = MVCC_OP_RANGE;
	o.u.range = rq(k, end);
	return o;
}

static struct mvcc_compare cmp_num(const char *k, enum mvcc_cmp_target t,
				   enum mvcc_cmp_result r, int64_t n)
{
	struct mvcc_compare c = { 0 };

	c.key = S(k);
	c.key_len = strlen(k);
	c.target = t;
	c.result = r;
	c.number = n;
	return c;
}

static void finish_compaction(struct fx *f)
{
	bool done = false;

	while (!done)
		assert_int_equal(mvcc_compact_step(f->m, 7, &done), 0);
}

/* ---- 4.1 revisions ---------------------------------------------------- */

static void test_empty_store_starts_at_revision_1(void **state)
{
	struct fx *f = *state;
	struct mvcc_put_req p = { 0 };
	struct mvcc_put_res pr;

	assert_int_equal(mvcc_revision(f->m), 1);
	assert_int_equal(mvcc_compact_revision(f->m), -1);
	struct mvcc_range_req r = rq("a", NULL);
	struct mvcc_range_res res = get(f, &r);
	assert_int_equal(res.header_revision, 1);
	assert_int_equal(res.count, 0);
	p.key = S("a");
	p.key_len = 1;
	assert_int_equal(mvcc_put(f->m, &p, &f->a, &pr), 0);
	assert_int_equal(pr.header_revision, 2);
	res = get(f, &r);
	assert_int_equal(res.n_kvs, 1);
	assert_int_equal(res.kvs[0].create_revision, 2);
	assert_int_equal(res.kvs[0].mod_revision, 2);
	assert_int_equal(res.kvs[0].version, 1);
	assert_int_equal(res.kvs[0].value_len, 0);
}

static void test_txn_with_two_puts_bumps_once(void **state)
{
	struct fx *f = *state;
	struct mvcc_request_op ops[2] = { op_put("a", "1"), op_put("b", "2") };
	struct mvcc_txn_req t = { 0 };
	struct mvcc_txn_res res;

	tu_put(f->m, "x", "x", 0); /* rev 2 */
	t.success = ops;
	t.n_success = 2;
	assert_int_equal(mvcc_txn(f->m, &t, &f->a, &res), 0);
	assert_true(res.succeeded);
	assert_int_equal(res.header_revision, 3);
	assert_int_equal(res.responses[0].u.put.header_revision, 3);
	assert_int_equal(res.responses[1].u.put.header_revision, 3);
	struct mvcc_range_req r = rq("a", "c");
	struct mvcc_range_res rr = get(f, &r);
	assert_int_equal(rr.n_kvs, 2);
	assert_int_equal(rr.kvs[0].mod_revision, 3);
	assert_int_equal(rr.kvs[1].mod_revision, 3);
	assert_int_equal(mvcc_revision(f->m), 3);
}

static void test_delete_of_nothing_does_not_bump(void **state)
{
	struct fx *f = *state;
	struct mvcc_delete_req d = { 0 };
	struct mvcc_delete_res res;

	tu_put(f->m, "a", "1", 0);
	d.key = S("zz");
	d.key_len = 2;
	d.prev_kv = true;
	assert_int_equal(mvcc_delete_range(f->m, &d, &f->a, &res), 0);
	assert_int_equal(res.deleted, 0);
	assert_int_equal(res.n_prev_kvs, 0);
	assert_int_equal(res.header_revision, 2);
	assert_int_equal(mvcc_revision(f->m), 2);
	/* A range delete over nothing, too. */
	d.key = S("b");
	d.key_len = 1;
	d.range_end = S("");
	d.range_end_len = 1;
	assert_int_equal(mvcc_delete_range(f->m, &d, &f->a, &res), 0);
	assert_int_equal(res.deleted, 0);
	assert_int_equal(mvcc_revision(f->m), 2);
}

static void test_txn_read_only_branch_does_not_bump(void **state)
{
	struct fx *f = *state;
	struct mvcc_compare c = cmp_num("a", MVCC_CMP_VERSION, MVCC_CMP_EQUAL,
					 1);
	struct mvcc_request_op s[1] = { op_range("a", NULL) };
	struct mvcc_request_op fl[1] = { op_put("a", "other") };
	struct mvcc_txn_req t = { &c, 1, s, 1, fl, 1 };
	struct mvcc_txn_res res;

	tu_put(f->m, "a", "1", 0); /* rev 2 */
	assert_int_equal(mvcc_txn(f->m, &t, &f->a, &res), 0);
	assert_true(res.succeeded);
	assert_int_equal(res.header_revision, 2);
	assert_int_equal(res.responses[0].u.range.n_kvs, 1);
	assert_int_equal(res.responses[0].u.range.header_revision, 2);
	assert_int_equal(mvcc_revision(f->m), 2);
	/* A failed compare with an empty failure branch: no bump either. */
	c.number = 7;
	t.n_failure = 0;
	assert_int_equal(mvcc_txn(f->m, &t, &f->a, &res), 0);
	assert_false(res.succeeded);
	assert_int_equal(res.n_responses, 0);
	assert_int_equal(res.header_revision, 2);
	/* A txn whose delete matches nothing changes nothing. */
	struct mvcc_request_op d[1] = { op_del("nope", NULL) };
	struct mvcc_txn_req t2 = { NULL, 0, d, 1, NULL, 0 };
	assert_int_equal(mvcc_txn(f->m, &t2, &f->a, &res), 0);
	assert_int_equal(res.header_revision, 2);
	assert_int_equal(res.responses[0].u.delete_range.header_revision, 2);
	assert_int_equal(mvcc_revision(f->m), 2);
}

static void test_nested_txn_bumps_once(void **state)
{
	struct fx *f = *state;
	struct mvcc_request_op inner_ops[2] = { op_put("b", "2"),
						op_range("a", NULL) };
	struct mvcc_txn_req inner = { NULL, 0, inner_ops, 2, NULL, 0 };
	struct mvcc_request_op outer_ops[2] = { op_put("a", "1"), { 0 } };
	struct mvcc_txn_req outer = { NULL, 0, outer_ops, 2, NULL, 0 };
	struct mvcc_txn_res res;

	outer_ops[1].type = MVCC_OP_TXN;
	outer_ops[1].u.txn = &inner;
	assert_int_equal(mvcc_txn(f->m, &outer, &f->a, &res), 0);
	assert_int_equal(res.header_revision, 2);
	struct mvcc_txn_res *in = res.responses[1].u.txn;
	assert_true(in->succeeded);
	assert_int_equal(in->header_revision, 0); /* etcd leaves it empty */
	assert_int_equal(in->responses[0].u.put.header_revision, 2);
	/* The nested range sees the outer put (same write txn). */
	assert_int_equal(in->responses[1].u.range.n_kvs, 1);
	assert_int_equal(in->responses[1].u.range.header_revision, 2);
	assert_int_equal(mvcc_revision(f->m), 2);
}

static void test_version_resets_after_delete(void **state)
{
	struct fx *f = *state;

	tu_put(f->m, "k", "1", 0);      /* 2 */
	tu_put(f->m, "k", "2", 0);      /* 3 */
	assert_int_equal(tu_del(f->m, "k", NULL), 1); /* 4 */
	tu_put(f->m, "k", "3", 0);      /* 5 */
	struct mvcc_range_req r = rq("k", NULL);
	struct mvcc_range_res res = get(f, &r);
	assert_int_equal(res.kvs[0].version, 1);
	assert_int_equal(res.kvs[0].create_revision, 5);
	assert_int_equal(res.kvs[0].mod_revision, 5);
	r.revision = 3;
	res = get(f, &r);
	assert_int_equal(res.kvs[0].version, 2);
	assert_int_equal(res.kvs[0].create_revision, 2);
	r.revision = 4;
	res = get(f, &r);
	assert_int_equal(res.count, 0);
}

static void test_lease_id_stored(void **state)
{
	struct fx *f = *state;

	tu_put(f->m, "k", "v", 0x1234567890ll);
	struct mvcc_range_req r = rq("k", NULL);
	struct mvcc_range_res res = get(f, &r);
	assert_int_equal(res.kvs[0].lease, 0x1234567890ll);
	reopen(f);
	res = get(f, &r);
	assert_int_equal(res.kvs[0].lease, 0x1234567890ll);
}

/* ---- 4.2 / 4.3 ranges ------------------------------------------------- */

static void put_abc(struct fx *f)
{
	tu_put(f->m, "a", "1", 0);  /* 2 */
	tu_put(f->m, "b", "2", 0);  /* 3 */
	tu_put(f->m, "b\xff", "3", 0); /* 4 */
	tu_put(f->m, "c", "4", 0);  /* 5 */
	tu_put(f->m, "d", "5", 0);  /* 6 */
}

static void test_range_end_nul_means_all_from_key(void **state)
{
	struct fx *f = *state;

	put_abc(f);
	struct mvcc_range_req r = rq("b\xff", "");
	struct mvcc_range_res res = get(f, &r);
	assert_int_equal(res.count, 3);
	assert_key(&res.kvs[0], "b\xff");
	assert_key(&res.kvs[2], "d");
}

static void test_range_all_keys(void **state)
{
	struct fx *f = *state;

	put_abc(f);
	struct mvcc_range_req r = rq("", ""); /* key "\0", end "\0" */
	struct mvcc_range_res res = get(f, &r);
	assert_int_equal(res.count, 5);
	assert_int_equal(res.n_kvs, 5);
	assert_false(res.more);
	assert_key(&res.kvs[0], "a");
}

static void test_range_prefix_and_single_key(void **state)
{
	struct fx *f = *state;

	put_abc(f);
	/* Prefix "b": range_end "c" (b + 1). */
	struct mvcc_range_req r = rq("b", "c");
	struct mvcc_range_res res = get(f, &r);
	assert_int_equal(res.count, 2);
	assert_key(&res.kvs[1], "b\xff");
	/* Empty range_end: exactly "b". */
	r = rq("b", NULL);
	res = get(f, &r);
	assert_int_equal(res.count, 1);
	assert_key(&res.kvs[0], "b");
	assert_val(&res.kvs[0], "2");
	/* range_end <= key: nothing. */
	r = rq("c", "b");
	res = get(f, &r);
	assert_int_equal(res.count, 0);
	r = rq("c", "c");
	res = get(f, &r);
	assert_int_equal(res.count, 0);
}

static void test_range_limit_count_more(void **state)
{
	struct fx *f = *state;

	put_abc(f);
	struct mvcc_range_req r = rq("a", "c");
	r.limit = 1;
	struct mvcc_range_res res = get(f, &r);
	assert_int_equal(res.n_kvs, 1);
	assert_true(res.more);
	assert_int_equal(res.count, 3);
	r.limit = 3;
	res = get(f, &r);
	assert_int_equal(res.n_kvs, 3);
	assert_false(res.more);
	r.limit = 10;
	res = get(f, &r);
	assert_false(res.more);
}

static void test_range_keys_only_and_count_only(void **state)
{
	struct fx *f = *state;

	put_abc(f);
	struct mvcc_range_req r = rq("a", "");
	r.keys_only = true;
	struct mvcc_range_res res = get(f, &r);
	assert_int_equal(res.n_kvs, 5);
	assert_int_equal(res.kvs[0].value_len, 0);
	assert_null(res.kvs[0].value);
	assert_int_equal(res.kvs[0].version, 1);
	r.keys_only = false;
	r.count_only = true;
	r.limit = 2;
	res = get(f, &r);
	assert_int_equal(res.n_kvs, 0);
	assert_int_equal(res.count, 5);
	assert_false(res.more);
}

static void test_range_revision_errors(void **state)
{
	struct fx *f = *state;
	struct mvcc_range_res res;

	put_abc(f); /* rev 6 */
	struct mvcc_range_req r = rq("a", "");
	r.revision = 7;
	assert_int_equal(mvcc_range(f->m, NULL, &r, &f->a, &res),
			 KV_EFUTUREREV);
	assert_string_equal(res.errmsg,
			    "etcdserver: mvcc: required revision is a future "
			    "revision");
	r.revision = 3;
	res = get(f, &r);
	assert_int_equal(res.count, 2);
	assert_int_equal(res.header_revision, 6);
	assert_int_equal(mvcc_compact(f->m, 4), 0);
	assert_int_equal(mvcc_range(f->m, NULL, &r, &f->a, &res),
			 KV_ECOMPACTED);
	assert_string_equal(res.errmsg,
			    "etcdserver: mvcc: required revision has been "
			    "compacted");
	/* A read exactly at the compacted revision is allowed. */
	r.revision = 4;
	res = get(f, &r);
	assert_int_equal(res.count, 3);
	r.revision = -5; /* <= 0: current */
	res = get(f, &r);
	assert_int_equal(res.count, 5);
	/* Empty key. */
	r.key_len = 0;
	assert_int_equal(mvcc_range(f->m, NULL, &r, &f->a, &res), KV_EINVAL);
	assert_string_equal(res.errmsg, "etcdserver: key is not provided");
}

static void test_range_sort_descending_by_mod_with_limit(void **state)
{
	struct fx *f = *state;

	put_abc(f);
	tu_put(f->m, "a", "again", 0); /* 7: a is now the newest */
	struct mvcc_range_req r = rq("a", "");
	r.sort_order = MVCC_SORT_DESCEND;
	r.sort_target = MVCC_SORT_MOD;
	r.limit = 2;
	struct mvcc_range_res res = get(f, &r);
	/* Fetches everything, sorts, then truncates. */
	assert_int_equal(res.n_kvs, 2);
	assert_true(res.more);
	assert_int_equal(res.count, 5);
	assert_key(&res.kvs[0], "a");
	assert_key(&res.kvs[1], "d");
	/* Descending by key. */
	r.sort_target = MVCC_SORT_KEY;
	res = get(f, &r);
	assert_key(&res.kvs[0], "d");
	assert_key(&res.kvs[1], "c");
	/* Ascending by value; ties keep key order. */
	r.sort_order = MVCC_SORT_ASCEND;
	r.sort_target = MVCC_SORT_VERSION;
	r.limit = 0;
	res = get(f, &r);
	assert_key(&res.kvs[0], "b");
	assert_key(&res.kvs[3], "d");
	assert_key(&res.kvs[4], "a");
}

/* etcd: with sort_order NONE and a non-key target, it sorts ascending but
 * fetches only limit + 1 keys first (in key order). */
static void test_range_sort_target_without_order_limits_first(void **state)
{
	struct fx *f = *state;

	put_abc(f);
	tu_put(f->m, "a", "again", 0); /* a: mod 7 */
	struct mvcc_range_req r = rq("a", "");
	r.sort_target = MVCC_SORT_MOD;
	r.limit = 2;
	struct mvcc_range_res res = get(f, &r);
	/* limit+1 = a(7), b(3), b\xff(4) sorted by mod: b, b\xff, a. */
	assert_int_equal(res.n_kvs, 2);
	assert_true(res.more);
	assert_key(&res.kvs[0], "b");
	assert_key(&res.kvs[1], "b\xff");
}

static void test_range_mod_create_filters(void **state)
{
	struct fx *f = *state;

	put_abc(f);
	tu_put(f->m, "a", "again", 0); /* a: create 2, mod 7 */
	struct mvcc_range_req r = rq("a", "");
	r.min_mod_revision = 5;
	struct mvcc_range_res res = get(f, &r);
	assert_int_equal(res.n_kvs, 3); /* c 5, d 6, a 7 */
	assert_int_equal(res.count, 5); /* count is before filtering */
	assert_key(&res.kvs[0], "a");
	r.min_mod_revision = 0;
	r.max_create_revision = 3;
	r.limit = 1;
	res = get(f, &r);
	assert_int_equal(res.n_kvs, 1);
	assert_true(res.more);
	assert_key(&res.kvs[0], "a");
	r.max_create_revision = 0;
	r.min_create_revision = 4;
	r.max_mod_revision = 5;
	r.limit = 0;
	res = get(f, &r);
	assert_int_equal(res.n_kvs, 2); /* b\xff 4, c 5 */
}

/* ---- 4.4 put / delete ------------------------------------------------- */

static void test_put_prev_kv(void **state)
{
	struct fx *f = *state;
	struct mvcc_put_req p = { 0 };
	struct mvcc_put_res res;

	p.key = S("k");
	p.key_len = 1;
	p.value = S("v1");
	p.value_len = 2;
	p.prev_kv = true;
	assert_int_equal(mvcc_put(f->m, &p, &f->a, &res), 0);
	assert_null(res.prev_kv); /* new key: absent */
	p.value = S("v2");
	assert_int_equal(mvcc_put(f->m, &p, &f->a, &res), 0);
	assert_non_null(res.prev_kv);
	assert_val(res.prev_kv, "v1");
	assert_int_equal(res.prev_kv->mod_revision, 2);
	assert_int_equal(res.header_revision, 3);
}

static void test_put_ignore_value_and_lease(void **state)
{
	struct fx *f = *state;
	struct mvcc_put_req p = { 0 };
	struct mvcc_put_res res;

	p.key = S("k");
	p.key_len = 1;
	p.ignore_value = true;
	assert_int_equal(mvcc_put(f->m, &p, &f->a, &res), KV_ENOTFOUND);
	assert_string_equal(res.errmsg, "etcdserver: key not found");
	assert_int_equal(mvcc_revision(f->m), 1);
	p.value = S("x");
	p.value_len = 1;
	assert_int_equal(mvcc_put(f->m, &p, &f->a, &res), KV_EINVAL);
	assert_string_equal(res.errmsg, "etcdserver: value is provided");
	p.ignore_value = false;
	p.ignore_lease = true;
	p.lease = 5;
	assert_int_equal(mvcc_put(f->m, &p, &f->a, &res), KV_EINVAL);
	assert_string_equal(res.errmsg, "etcdserver: lease is provided");
	p.ignore_lease = false;
	assert_int_equal(mvcc_put(f->m, &p, &f->a, &res), 0); /* k=x lease 5 */
	/* ignore_value keeps the value, takes the new lease. */
	p.ignore_value = true;
	p.value_len = 0;
	p.lease = 9;
	assert_int_equal(mvcc_put(f->m, &p, &f->a, &res), 0);
	/* ignore_lease keeps the lease, takes the new value. */
	p.ignore_value = false;
	p.ignore_lease = true;
	p.lease = 0;
	p.value = S("y");
	p.value_len = 1;
	assert_int_equal(mvcc_put(f->m, &p, &f->a, &res), 0);
	struct mvcc_range_req r = rq("k", NULL);
	struct mvcc_range_res rr = get(f, &r);
	assert_val(&rr.kvs[0], "y");
	assert_int_equal(rr.kvs[0].lease, 9);
	assert_int_equal(rr.kvs[0].version, 3);
	r.revision = 3;
	rr = get(f, &r);
	assert_val(&rr.kvs[0], "x");
	assert_int_equal(rr.kvs[0].lease, 9);
	/* Empty key. */
	p.key_len = 0;
	assert_int_equal(mvcc_put(f->m, &p, &f->a, &res), KV_EINVAL);
	assert_string_equal(res.errmsg, "etcdserver: key is not provided");
}

static void test_put_with_unknown_lease(void **state)
{
	struct fx *f = *state;
	struct mvcc_options o = { 0 };
	struct mvcc_put_req p = { 0 };
	struct mvcc_put_res res;

	assert_int_equal(mvcc_commit(f->m, false), 0);
	mvcc_close(f->m);
	o.check_leases = true;
	assert_int_equal(mvcc_open(f->dir, &o, &f->m), 0);
	assert_int_equal(mvcc_begin_write(f->m), 0);
	p.key = S("k");
	p.key_len = 1;
	p.lease = 42;
	assert_int_equal(mvcc_put(f->m, &p, &f->a, &res), KV_ENOTFOUND);
	assert_string_equal(res.errmsg, "etcdserver: requested lease not found");
	assert_int_equal(mvcc_lease_put(f->m, 42, "rec", 3), 0);
	assert_int_equal(mvcc_put(f->m, &p, &f->a, &res), 0);
	/* In a txn, too (checked before anything is written). */
	struct mvcc_request_op ops[2] = { op_put("j", "1"), op_put("l", "2") };
	ops[1].u.put.lease = 43;
	struct mvcc_txn_req t = { NULL, 0, ops, 2, NULL, 0 };
	struct mvcc_txn_res tr;
	assert_int_equal(mvcc_txn(f->m, &t, &f->a, &tr), KV_ENOTFOUND);
	assert_string_equal(tr.errmsg, "etcdserver: requested lease not found");
	assert_int_equal(mvcc_revision(f->m), 2);
}

static void test_delete_range_prev_kvs_one_revision(void **state)
{
	struct fx *f = *state;
	struct mvcc_delete_req d = { 0 };
	struct mvcc_delete_res res;

	put_abc(f); /* 6 */
	d.key = S("b");
	d.key_len = 1;
	d.range_end = S("d");
	d.range_end_len = 1;
	d.prev_kv = true;
	assert_int_equal(mvcc_delete_range(f->m, &d, &f->a, &res), 0);
	assert_int_equal(res.deleted, 3);
	assert_int_equal(res.header_revision, 7);
	assert_int_equal(res.n_prev_kvs, 3);
	assert_key(&res.prev_kvs[0], "b");
	assert_val(&res.prev_kvs[2], "4");
	assert_int_equal(mvcc_revision(f->m), 7);
	/* One DELETE event per key, all at revision 7. */
	struct mvcc_events_req q = { 0 };
	struct mvcc_events_res ev;
	q.key = S("");
	q.key_len = 1;
	q.range_end = S("");
	q.range_end_len = 1;
	q.start_revision = 7;
	assert_int_equal(mvcc_events(f->m, NULL, &q, &f->a, &ev), 0);
	assert_int_equal(ev.n_events, 3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(ev.events[i].type, MVCC_EVENT_DELETE);
		assert_int_equal(ev.events[i].kv.mod_revision, 7);
	}
	/* Without prev_kv: none returned. */
	d.prev_kv = false;
	d.key = S("a");
	assert_int_equal(mvcc_delete_range(f->m, &d, &f->a, &res), 0);
	assert_int_equal(res.deleted, 1);
	assert_int_equal(res.n_prev_kvs, 0);
}

/* ---- 4.5 txn ---------------------------------------------------------- */

static bool run_cmp(struct fx *f, const struct mvcc_compare *c)
{
	struct mvcc_txn_req t = { c, 1, NULL, 0, NULL, 0 };
	struct mvcc_txn_res res;

	assert_int_equal(mvcc_txn(f->m, &t, &f->a, &res), 0);
	return res.succeeded;
}

static void test_txn_compare_on_missing_key(void **state)
{
	struct fx *f = *state;
	struct mvcc_compare c;

	c = cmp_num("nokey", MVCC_CMP_VERSION, MVCC_CMP_EQUAL, 0);
	assert_true(run_cmp(f, &c));
	c = cmp_num("nokey", MVCC_CMP_CREATE, MVCC_CMP_EQUAL, 0);
	assert_true(run_cmp(f, &c));
	c = cmp_num("nokey", MVCC_CMP_MOD, MVCC_CMP_EQUAL, 0);
	assert_true(run_cmp(f, &c));
	c = cmp_num("nokey", MVCC_CMP_LEASE, MVCC_CMP_EQUAL, 0);
	assert_true(run_cmp(f, &c));
	c = cmp_num("nokey", MVCC_CMP_MOD, MVCC_CMP_LESS, 1);
	assert_true(run_cmp(f, &c));
	/* VALUE on a missing key is always false, even NOT_EQUAL. */
	c = cmp_num("nokey", MVCC_CMP_VALUE, MVCC_CMP_NOT_EQUAL, 0);
	c.value = S("x");
	c.value_len = 1;
	assert_false(run_cmp(f, &c));
	c.result = MVCC_CMP_EQUAL;
	c.value_len = 0;
	assert_false(run_cmp(f, &c));
	/* A deleted key compares as missing. */
	tu_put(f->m, "k", "v", 0);
	tu_del(f->m, "k", NULL);
	c = cmp_num("k", MVCC_CMP_CREATE, MVCC_CMP_EQUAL, 0);
	assert_true(run_cmp(f, &c));
	/* Existing key: the compare ops. */
	tu_put(f->m, "k", "v", 7); /* rev 4 */
	c = cmp_num("k", MVCC_CMP_MOD, MVCC_CMP_GREATER, 3);
	assert_true(run_cmp(f, &c));
	c = cmp_num("k", MVCC_CMP_LEASE, MVCC_CMP_EQUAL, 7);
	assert_true(run_cmp(f, &c));
	c = cmp_num("k", MVCC_CMP_VALUE, MVCC_CMP_LESS, 0);
	c.value = S("w");
	c.value_len = 1;
	assert_true(run_cmp(f, &c));
	c.result = MVCC_CMP_GREATER;
	c.value = S("v");
	c.value_len = 1;
	assert_false(run_cmp(f, &c));
	/* Empty compare key is refused. */
	c.key_len = 0;
	struct mvcc_txn_req t = { &c, 1, NULL, 0, NULL, 0 };
	struct mvcc_txn_res res;
	assert_int_equal(mvcc_txn(f->m, &t, &f->a, &res), KV_EINVAL);
	assert_string_equal(res.errmsg, "etcdserver: key is not provided");
}

static void test_txn_compare_with_range_end(void **state)
{
	struct fx *f = *state;

	put_abc(f);
	struct mvcc_compare c = cmp_num("a", MVCC_CMP_VERSION, MVCC_CMP_EQUAL,
					 1);
	c.range_end = S("c");
	c.range_end_len = 1;
	assert_true(run_cmp(f, &c)); /* a, b, b\xff all version 1 */
	tu_put(f->m, "b", "x", 0);
	assert_false(run_cmp(f, &c)); /* every key must hold */
	c.range_end = S("");
	c.range_end_len = 1;
	c.result = MVCC_CMP_GREATER;
	c.number = 0;
	assert_true(run_cmp(f, &c));
	/* An empty range compares a zero KeyValue. */
	c.key = S("x");
	c.key_len = 1;
	c.range_end = S("z");
	c.result = MVCC_CMP_EQUAL;
	assert_true(run_cmp(f, &c));
}

static void test_txn_duplicate_keys(void **state)
{
	struct fx *f = *state;
	struct mvcc_txn_res res;
	const char *msg;

	/* Same key put twice. */
	struct mvcc_request_op two[2] = { op_put("a", "1"), op_put("a", "2") };
	struct mvcc_txn_req t = { NULL, 0, two, 2, NULL, 0 };
	assert_int_equal(mvcc_txn(f->m, &t, &f->a, &res), KV_EINVAL);
	assert_string_equal(res.errmsg,
			    "etcdserver: duplicate key given in txn request");
	assert_int_equal(mvcc_revision(f->m), 1);
	/* Put inside a delete range. */
	struct mvcc_request_op pd[2] = { op_del("a", "c"), op_put("b", "1") };
	t.success = pd;
	assert_int_equal(mvcc_txn_validate(&t, 128, &msg), KV_EINVAL);
	assert_string_equal(msg, "etcdserver: duplicate key given in txn request");
	/* Same in the failure branch. */
	t.success = NULL;
	t.n_success = 0;
	t.failure = pd;
	t.n_failure = 2;
	assert_int_equal(mvcc_txn_validate(&t, 128, &msg), KV_EINVAL);
	/* Overlapping deletes are fine. */
	struct mvcc_request_op dd[2] = { op_del("a", "c"), op_del("b", NULL) };
	t.failure = dd;
	assert_int_equal(mvcc_txn_validate(&t, 128, &msg), 0);
	/* Nested then/else may share a key; the outer level may not. */
	struct mvcc_request_op th[1] = { op_put("k", "1") };
	struct mvcc_request_op el[1] = { op_put("k", "2") };
	struct mvcc_txn_req inner = { NULL, 0, th, 1, el, 1 };
	struct mvcc_request_op outer[2] = { { 0 }, op_put("j", "1") };
	outer[0].type = MVCC_OP_TXN;
	outer[0].u.txn = &inner;
	struct mvcc_txn_req t2 = { NULL, 0, outer, 2, NULL, 0 };
	assert_int_equal(mvcc_txn_validate(&t2, 128, &msg), 0);
	outer[1] = op_put("k", "3");
	assert_int_equal(mvcc_txn_validate(&t2, 128, &msg), KV_EINVAL);
	outer[1] = op_del("k", NULL);
	assert_int_equal(mvcc_txn_validate(&t2, 128, &msg), KV_EINVAL);
	/* etcd takes range_end "\0" literally here: [a, "\0") is empty, so a
	 * put under it is not a duplicate. */
	struct mvcc_request_op nul[2] = { op_del("a", ""), op_put("b", "1") };
	t.success = nul;
	t.n_success = 2;
	t.n_failure = 0;
	assert_int_equal(mvcc_txn_validate(&t, 128, &msg), 0);
}

static void test_txn_too_many_ops(void **state)
{
	struct fx *f = *state;
	static struct mvcc_request_op ops[129];
	static char keys[129][8];
	struct mvcc_txn_res res;

	for (int i = 0; i < 129; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%03d", i);
		ops[i] = op_put(keys[i], "v");
	}
	struct mvcc_txn_req t = { NULL, 0, ops, 129, NULL, 0 };
	assert_int_equal(mvcc_txn(f->m, &t, &f->a, &res), KV_EINVAL);
	assert_string_equal(res.errmsg,
			    "etcdserver: too many operations in txn request");
	t.n_success = 128;
	assert_int_equal(mvcc_txn(f->m, &t, &f->a, &res), 0);
	assert_int_equal(res.header_revision, 2);
	assert_int_equal(res.n_responses, 128);
	/* Compares count too. */
	static struct mvcc_compare cs[129];
	for (int i = 0; i < 129; i++)
		cs[i] = cmp_num("a", MVCC_CMP_VERSION, MVCC_CMP_EQUAL, 0);
	struct mvcc_txn_req t2 = { cs, 129, NULL, 0, NULL, 0 };
	assert_int_equal(mvcc_txn(f->m, &t2, &f->a, &res), KV_EINVAL);
}

static void test_txn_nested_compares_see_state_before_txn(void **state)
{
	struct fx *f = *state;
	/* Outer puts a=1; inner compares version(a) == 0: it reads the state
	 * before the txn, so it succeeds although a exists by then. */
	struct mvcc_compare ic = cmp_num("a", MVCC_CMP_VERSION, MVCC_CMP_EQUAL,
					  0);
	struct mvcc_request_op ith[1] = { op_put("b", "then") };
	struct mvcc_request_op iel[1] = { op_put("b", "else") };
	struct mvcc_txn_req inner = { &ic, 1, ith, 1, iel, 1 };
	struct mvcc_request_op outer[2] = { op_put("a", "1"), { 0 } };
	outer[1].type = MVCC_OP_TXN;
	outer[1].u.txn = &inner;
	struct mvcc_txn_req t = { NULL, 0, outer, 2, NULL, 0 };
	struct mvcc_txn_res res;

	assert_int_equal(mvcc_txn(f->m, &t, &f->a, &res), 0);
	assert_true(res.responses[1].u.txn->succeeded);
	struct mvcc_range_req r = rq("b", NULL);
	struct mvcc_range_res rr = get(f, &r);
	assert_val(&rr.kvs[0], "then");
}

static void test_txn_sub_responses_and_own_writes(void **state)
{
	struct fx *f = *state;
	struct mvcc_request_op ops[4] = { op_range("a", NULL), op_put("a", "1"),
					  op_range("a", NULL),
					  op_del("zz", NULL) };
	struct mvcc_txn_req t = { NULL, 0, ops, 4, NULL, 0 };
	struct mvcc_txn_res res;

	ops[1].u.put.prev_kv = true;
	tu_put(f->m, "x", "x", 0); /* rev 2 */
	assert_int_equal(mvcc_txn(f->m, &t, &f->a, &res), 0);
	assert_int_equal(res.header_revision, 3);
	assert_int_equal(res.responses[0].u.range.header_revision, 2);
	assert_int_equal(res.responses[0].u.range.count, 0);
	assert_null(res.responses[1].u.put.prev_kv);
	assert_int_equal(res.responses[1].u.put.header_revision, 3);
	assert_int_equal(res.responses[2].u.range.header_revision, 3);
	assert_int_equal(res.responses[2].u.range.count, 1);
	assert_int_equal(res.responses[2].u.range.kvs[0].mod_revision, 3);
	/* A delete of nothing after a write reports the new revision. */
	assert_int_equal(res.responses[3].u.delete_range.header_revision, 3);
	assert_int_equal(res.responses[3].u.delete_range.deleted, 0);
}

static void test_txn_range_revision_checks(void **state)
{
	struct fx *f = *state;
	struct mvcc_request_op ops[2] = { op_put("a", "1"), op_range("a", NULL) };
	struct mvcc_txn_req t = { NULL, 0, ops, 2, NULL, 0 };
	struct mvcc_txn_res res;

	tu_put(f->m, "a", "0", 0); /* 2 */
	tu_put(f->m, "a", "0", 0); /* 3 */
	/* The range's revision is checked before the writes: 4 is future. */
	ops[1].u.range.revision = 4;
	assert_int_equal(mvcc_txn(f->m, &t, &f->a, &res), KV_EFUTUREREV);
	assert_string_equal(res.errmsg,
			    "etcdserver: mvcc: required revision is a future "
			    "revision");
	assert_int_equal(mvcc_revision(f->m), 3);
	/* Negative revision: fine before any compaction ... */
	ops[1].u.range.revision = -1;
	assert_int_equal(mvcc_txn(f->m, &t, &f->a, &res), 0);
	assert_int_equal(mvcc_revision(f->m), 4);
	/* ... compacted after one (etcd compares it raw with compactRev). */
	assert_int_equal(mvcc_compact(f->m, 2), 0);
	assert_int_equal(mvcc_txn(f->m, &t, &f->a, &res), KV_ECOMPACTED);
	ops[1].u.range.revision = 1;
	assert_int_equal(mvcc_txn(f->m, &t, &f->a, &res), KV_ECOMPACTED);
	ops[1].u.range.revision = 2;
	assert_int_equal(mvcc_txn(f->m, &t, &f->a, &res), 0);
	assert_int_equal(res.responses[1].u.range.kvs[0].mod_revision, 2);
}

/* Observed on etcd 3.4: a delete with range_end "\0" does not collide with
 * a put in the dup check, so one txn may put a key and delete it again. */
static void test_txn_put_then_delete_all_same_revision(void **state)
{
	struct fx *f = *state;
	struct mvcc_request_op inner_ops[1] = { op_range("x", NULL) };
	struct mvcc_txn_req inner = { NULL, 0, inner_ops, 1, NULL, 0 };
	struct mvcc_request_op ops[4] = { op_put("x", "1"), op_del("a", ""),
					  op_range("a", ""), { 0 } };
	struct mvcc_txn_req t = { NULL, 0, ops, 4, NULL, 0 };
	struct mvcc_txn_res res;

	ops[1].u.delete_range.prev_kv = true;
	ops[3].type = MVCC_OP_TXN;
	ops[3].u.txn = &inner;
	put_abc(f); /* a b b\xff c d, rev 6 */
	assert_int_equal(mvcc_txn(f->m, &t, &f->a, &res), 0);
	assert_int_equal(res.header_revision, 7);
	const struct mvcc_delete_res *d = &res.responses[1].u.delete_range;
	assert_int_equal(d->deleted, 6);
	assert_int_equal(d->header_revision, 7);
	assert_key(&d->prev_kvs[5], "x");
	assert_int_equal(d->prev_kvs[5].mod_revision, 7);
	assert_int_equal(res.responses[2].u.range.count, 0);
	assert_int_equal(res.responses[2].u.range.header_revision, 7);
	assert_int_equal(res.responses[3].u.txn->header_revision, 0);
	assert_int_equal(res.responses[3].u.txn->responses[0].u.range.count, 0);
	/* Events: the PUT of x, then six DELETEs, all at 7. */
	struct mvcc_events_req q = { 0 };
	struct mvcc_events_res ev;
	q.key = S("");
	q.key_len = 1;
	q.range_end = S("");
	q.range_end_len = 1;
	q.start_revision = 7;
	assert_int_equal(mvcc_events(f->m, NULL, &q, &f->a, &ev), 0);
	assert_int_equal(ev.n_events, 7);
	assert_int_equal(ev.events[0].type, MVCC_EVENT_PUT);
	assert_key(&ev.events[0].kv, "x");
	assert_int_equal(ev.events[6].type, MVCC_EVENT_DELETE);
	/* Compaction at 7 drops x entirely. */
	assert_int_equal(mvcc_compact(f->m, 7), 0);
	finish_compaction(f);
	assert_true(mvcc_invariants_ok(f->m));
}

static void test_txn_ignore_value_missing_key(void **state)
{
	struct fx *f = *state;
	struct mvcc_request_op ops[1] = { op_put("a", "") };
	struct mvcc_txn_req t = { NULL, 0, ops, 1, NULL, 0 };
	struct mvcc_txn_res res;

	ops[0].u.put.ignore_value = true;
	assert_int_equal(mvcc_txn(f->m, &t, &f->a, &res), KV_ENOTFOUND);
	assert_string_equal(res.errmsg, "etcdserver: key not found");
	assert_int_equal(mvcc_revision(f->m), 1);
}

/* ---- 4.6 compaction --------------------------------------------------- */

static void test_compact_errors(void **state)
{
	struct fx *f = *state;

	put_abc(f); /* 6 */
	assert_int_equal(mvcc_compact(f->m, 7), KV_EFUTUREREV);
	assert_string_equal(mvcc_errmsg(KV_EFUTUREREV),
			    "etcdserver: mvcc: required revision is a future "
			    "revision");
	assert_int_equal(mvcc_compact(f->m, 4), 0);
	assert_int_equal(mvcc_compact(f->m, 4), KV_ECOMPACTED);
	assert_int_equal(mvcc_compact(f->m, 3), KV_ECOMPACTED);
	assert_string_equal(mvcc_errmsg(KV_ECOMPACTED),
			    "etcdserver: mvcc: required revision has been "
			    "compacted");
	assert_int_equal(mvcc_compact(f->m, 6), 0);
	assert_int_equal(mvcc_compact_revision(f->m), 6);
	reopen(f);
	assert_int_equal(mvcc_compact_revision(f->m), 6);
	assert_int_equal(mvcc_compact(f->m, 6), KV_ECOMPACTED);
	/* Compaction does not bump the revision. */
	assert_int_equal(mvcc_revision(f->m), 6);
}

static void test_compact_keeps_newest_drops_tombstones(void **state)
{
	struct fx *f = *state;
	struct mvcc_range_res res;

	tu_put(f->m, "a", "1", 0);  /* 2 */
	tu_put(f->m, "a", "2", 0);  /* 3 */
	tu_put(f->m, "b", "1", 0);  /* 4 */
	tu_del(f->m, "b", NULL);    /* 5 */
	tu_put(f->m, "a", "3", 0);  /* 6 */
	tu_put(f->m, "c", "1", 0);  /* 7 */
	assert_int_equal(mvcc_compact(f->m, 5), 0);
	/* Logical at once: below 5 is refused even before physical removal. */
	struct mvcc_range_req r = rq("a", "");
	r.revision = 4;
	assert_int_equal(mvcc_range(f->m, NULL, &r, &f->a, &res),
			 KV_ECOMPACTED);
	/* Events from exactly 5 already omit b's tombstone (as etcd after
	 * compaction), before the physical removal. */
	struct mvcc_events_req q0 = { 0 };
	struct mvcc_events_res ev0;
	q0.key = S("");
	q0.key_len = 1;
	q0.range_end = S("");
	q0.range_end_len = 1;
	q0.start_revision = 5;
	assert_int_equal(mvcc_events(f->m, NULL, &q0, &f->a, &ev0), 0);
	assert_int_equal(ev0.n_events, 2);
	assert_int_equal(ev0.events[0].kv.mod_revision, 6);
	q0.start_revision = 4;
	assert_int_equal(mvcc_events(f->m, NULL, &q0, &f->a, &ev0),
			 KV_ECOMPACTED);
	finish_compaction(f);
	assert_true(mvcc_invariants_ok(f->m));
	r.revision = 5;
	res = get(f, &r);
	assert_int_equal(res.count, 1);
	assert_val(&res.kvs[0], "2");
	assert_int_equal(res.kvs[0].version, 2);
	assert_int_equal(res.kvs[0].create_revision, 2);
	r.revision = 0;
	res = get(f, &r);
	assert_int_equal(res.count, 2);
	assert_int_equal(res.kvs[0].version, 3);
	/* Events from 5 on: a@3 is kept (newest <= 5) but is below 5; b's
	 * tombstone at 5 is gone; 6 and 7 remain. */
	struct mvcc_events_req q = { 0 };
	struct mvcc_events_res ev;
	q.key = S("");
	q.key_len = 1;
	q.range_end = S("");
	q.range_end_len = 1;
	q.start_revision = 5;
	assert_int_equal(mvcc_events(f->m, NULL, &q, &f->a, &ev), 0);
	assert_int_equal(ev.n_events, 2);
	assert_int_equal(ev.events[0].kv.mod_revision, 6);
	reopen(f);
	assert_true(mvcc_invariants_ok(f->m));
	r.revision = 5;
	res = get(f, &r);
	assert_int_equal(res.count, 1);
}

static void test_compact_zero_on_fresh_store(void **state)
{
	struct fx *f = *state;

	/* etcd's compactMainRev starts at -1, so Compact(0) succeeds once. */
	assert_int_equal(mvcc_compact(f->m, 0), 0);
	assert_int_equal(mvcc_compact(f->m, 0), KV_ECOMPACTED);
	assert_int_equal(mvcc_compact(f->m, 1), 0);
	assert_int_equal(mvcc_compact(f->m, 2), KV_EFUTUREREV);
}

/* ---- long keys -------------------------------------------------------- */

static size_t short_max(void)
{
	return 511 - 25; /* Debian's LMDB: maxkeysize 511 */
}

struct lk {
	uint8_t *p;
	size_t n;
};

static struct lk mklk(size_t n, uint8_t fill, const char *suffix)
{
	size_t sl = strlen(suffix);
	struct lk k = { malloc(n + sl), n + sl };

	memset(k.p, fill, n);
	memcpy(k.p + n, suffix, sl);
	return k;
}

static int lk_cmp(const void *x, const void *y)
{
	const struct lk *a = x, *b = y;
	size_t n = a->n < b->n ? a->n : b->n;
	int c = memcmp(a->p, b->p, n);

	return c ? c : (a->n < b->n ? -1 : a->n > b->n);
}

static void test_long_keys_order_and_ranges(void **state)
{
	struct fx *f = *state;
	size_t P = short_max();
	struct lk ks[] = {
		mklk(1, 'k', ""),
		mklk(P - 1, 'k', ""),
		mklk(P, 'k', ""),        /* exactly at the boundary */
		mklk(P + 1, 'k', ""),    /* one past it */
		mklk(P, 'k', "\x01"),
		mklk(P + 1, 'k', ""),    /* "k"*P + "\0", set below */
		mklk(P - 1, 'k', "l"),   /* short, after the k-group */
		mklk(P - 1, 'k', "lm"),  /* long, another group */
		mklk(4096, 'k', ""),
		mklk(1 << 20, 'k', ""),  /* 1 MiB */
		mklk(1 << 20, 'k', "z"),
		mklk(P + 5, 'k', "\xff"),
		mklk(2, 'j', ""),
		mklk(600, 'l', ""),
	};
	size_t n = sizeof(ks) / sizeof(ks[0]);
	ks[5].p[P] = 0;

	for (size_t i = 0; i < n; i++) {
		char v[32];
		snprintf(v, sizeof(v), "v%zu", i);
		tu_putb(f->m, ks[i].p, ks[i].n, v, strlen(v));
	}
	/* Overwrite two long keys and delete one: history in a group. */
	tu_putb(f->m, ks[3].p, ks[3].n, "again", 5);
	tu_putb(f->m, ks[9].p, ks[9].n, "again", 5);
	struct mvcc_delete_req d = { 0 };
	struct mvcc_delete_res dr;
	d.key = ks[4].p;
	d.key_len = ks[4].n;
	assert_int_equal(mvcc_delete_range(f->m, &d, &f->a, &dr), 0);
	assert_int_equal(dr.deleted, 1);
	tu_putb(f->m, ks[4].p, ks[4].n, "back", 4);
	assert_true(mvcc_invariants_ok(f->m));
	for (int round = 0; round < 2; round++) {
		struct lk sorted[sizeof(ks) / sizeof(ks[0])];
		memcpy(sorted, ks, sizeof(ks));
		qsort(sorted, n, sizeof(sorted[0]), lk_cmp);
		/* Whole key space in order. */
		struct mvcc_range_req r = rq("", "");
		struct mvcc_range_res res = get(f, &r);
		assert_int_equal(res.n_kvs, n);
		for (size_t i = 0; i < n; i++) {
			assert_int_equal(res.kvs[i].key_len, sorted[i].n);
			assert_memory_equal(res.kvs[i].key, sorted[i].p,
					    sorted[i].n);
		}
		/* Every [a, b) between two keys. */
		for (size_t i = 0; i < n; i++) {
			for (size_t j = i; j < n; j++) {
				struct mvcc_range_req q = { 0 };
				q.key = sorted[i].p;
				q.key_len = sorted[i].n;
				q.range_end = sorted[j].p;
				q.range_end_len = sorted[j].n;
				q.keys_only = true;
				struct mvcc_range_res rr = get(f, &q);
				assert_int_equal(rr.count, (int64_t)(j - i));
				if (j > i)
					assert_int_equal(rr.kvs[0].key_len,
							 sorted[i].n);
			}
			/* Single key and history. */
			struct mvcc_range_req q = { 0 };
			q.key = sorted[i].p;
			q.key_len = sorted[i].n;
			struct mvcc_range_res rr = get(f, &q);
			assert_int_equal(rr.count, 1);
		}
		/* Prefix "k"*P: every key starting with it. */
		struct lk pre = mklk(P - 1, 'k', "l");
		struct mvcc_range_req q = { 0 };
		q.key = ks[2].p;
		q.key_len = ks[2].n;
		q.range_end = pre.p;
		q.range_end_len = pre.n;
		struct mvcc_range_res rr = get(f, &q);
		assert_int_equal(rr.count, 8);
		free(pre.p);
		/* Versions inside the group. */
		q.range_end_len = 0;
		q.key = ks[9].p;
		q.key_len = ks[9].n;
		rr = get(f, &q);
		assert_int_equal(rr.kvs[0].version, 2);
		assert_val(&rr.kvs[0], "again");
		q.key = ks[4].p;
		q.key_len = ks[4].n;
		rr = get(f, &q);
		assert_int_equal(rr.kvs[0].version, 1);
		assert_val(&rr.kvs[0], "back");
		q.revision = 3 + 4;
		rr = get(f, &q);
		assert_val(&rr.kvs[0], "v4");
		reopen(f);
	}
	/* Compaction and txn compares over long keys. */
	assert_int_equal(mvcc_compact(f->m, mvcc_revision(f->m)), 0);
	finish_compaction(f);
	assert_true(mvcc_invariants_ok(f->m));
	struct mvcc_compare c = { 0 };
	c.key = ks[10].p;
	c.key_len = ks[10].n;
	c.target = MVCC_CMP_VALUE;
	c.value = S("v10");
	c.value_len = 3;
	assert_true(run_cmp(f, &c));
	c.key = ks[9].p;
	c.key_len = ks[9].n;
	assert_false(run_cmp(f, &c));
	for (size_t i = 0; i < n; i++)
		free(ks[i].p);
}

/* ---- events ----------------------------------------------------------- */

static void test_events_put_delete_prev_kv(void **state)
{
	struct fx *f = *state;
	struct mvcc_events_req q = { 0 };
	struct mvcc_events_res ev;

	tu_put(f->m, "a", "1", 3);  /* 2 */
	tu_put(f->m, "a", "2", 0);  /* 3 */
	tu_put(f->m, "b", "1", 0);  /* 4 */
	tu_del(f->m, "a", NULL);    /* 5 */
	q.key = S("a");
	q.key_len = 1;
	q.start_revision = 2;
	q.prev_kv = true;
	assert_int_equal(mvcc_events(f->m, NULL, &q, &f->a, &ev), 0);
	assert_int_equal(ev.n_events, 3);
	assert_int_equal(ev.next_revision, 6);
	assert_int_equal(ev.header_revision, 5);
	assert_int_equal(ev.events[0].type, MVCC_EVENT_PUT);
	assert_int_equal(ev.events[0].kv.version, 1);
	assert_int_equal(ev.events[0].kv.lease, 3);
	assert_null(ev.events[0].prev_kv); /* a create has none */
	assert_non_null(ev.events[1].prev_kv);
	assert_val(ev.events[1].prev_kv, "1");
	assert_int_equal(ev.events[2].type, MVCC_EVENT_DELETE);
	assert_int_equal(ev.events[2].kv.mod_revision, 5);
	assert_int_equal(ev.events[2].kv.create_revision, 0);
	assert_int_equal(ev.events[2].kv.version, 0);
	assert_int_equal(ev.events[2].kv.value_len, 0);
	assert_val(ev.events[2].prev_kv, "2");
	/* Caught up: empty, next stays. */
	q.start_revision = 6;
	assert_int_equal(mvcc_events(f->m, NULL, &q, &f->a, &ev), 0);
	assert_int_equal(ev.n_events, 0);
	assert_int_equal(ev.next_revision, 6);
	/* Compacted start. */
	assert_int_equal(mvcc_compact(f->m, 4), 0);
	q.start_revision = 3;
	assert_int_equal(mvcc_events(f->m, NULL, &q, &f->a, &ev),
			 KV_ECOMPACTED);
	/* prev_kv omitted when mod_revision - 1 is compacted. */
	q.start_revision = 4;
	assert_int_equal(mvcc_events(f->m, NULL, &q, &f->a, &ev), 0);
	assert_int_equal(ev.n_events, 1);
	assert_non_null(ev.events[0].prev_kv); /* rev 4 = compact: allowed */
}

static void test_events_batches_keep_revisions_whole(void **state)
{
	struct fx *f = *state;
	struct mvcc_request_op ops[5] = { op_put("a", "1"), op_put("b", "1"),
					  op_put("c", "1"), op_put("d", "1"),
					  op_put("e", "1") };
	struct mvcc_txn_req t = { NULL, 0, ops, 5, NULL, 0 };
	struct mvcc_txn_res tr;
	struct mvcc_events_req q = { 0 };
	struct mvcc_events_res ev;

	tu_put(f->m, "x", "1", 0); /* 2 */
	assert_int_equal(mvcc_txn(f->m, &t, &f->a, &tr), 0); /* 3: 5 events */
	tu_put(f->m, "y", "1", 0); /* 4 */
	q.key = S("");
	q.key_len = 1;
	q.range_end = S("");
	q.range_end_len = 1;
	q.start_revision = 1;
	q.max_events = 2;
	assert_int_equal(mvcc_events(f->m, NULL, &q, &f->a, &ev), 0);
	/* rev 2 (1 event) then all 5 of rev 3, never split. */
	assert_int_equal(ev.n_events, 6);
	assert_int_equal(ev.next_revision, 4);
	for (int i = 1; i < 6; i++) {
		assert_int_equal(ev.events[i].kv.mod_revision, 3);
		assert_int_equal(ev.events[i].kv.key[0], 'a' + i - 1);
	}
	q.start_revision = ev.next_revision;
	assert_int_equal(mvcc_events(f->m, NULL, &q, &f->a, &ev), 0);
	assert_int_equal(ev.n_events, 1);
	assert_int_equal(ev.next_revision, 5);
	/* The scan budget stops at a revision boundary, too. */
	q.start_revision = 2;
	q.key = S("y");
	q.range_end_len = 0;
	q.max_scan = 1;
	assert_int_equal(mvcc_events(f->m, NULL, &q, &f->a, &ev), 0);
	assert_int_equal(ev.n_events, 0);
	assert_int_equal(ev.next_revision, 3);
}

/* ---- hash ------------------------------------------------------------- */

static void feed(struct mvcc *m, int variant)
{
	char k[16], v[16];

	for (int i = 0; i < 200; i++) {
		snprintf(k, sizeof(k), "key%d", i % 17);
		snprintf(v, sizeof(v), "val%d", i + (i == 150 ? variant : 0));
		tu_put(m, k, v, 0);
		if (i % 13 == 0)
			tu_del(m, k, NULL);
	}
}

static void test_hash_deterministic(void **state)
{
	struct fx *f = *state;
	char *dir2 = tu_tmpdir(), *dir3 = tu_tmpdir();
	struct mvcc *m2, *m3;
	uint32_t h1, h2, h3;
	int64_t c1, c2, c3;
	bool done;

	assert_int_equal(mvcc_open(dir2, NULL, &m2), 0);
	assert_int_equal(mvcc_open(dir3, NULL, &m3), 0);
	assert_int_equal(mvcc_begin_write(m2), 0);
	assert_int_equal(mvcc_begin_write(m3), 0);
	feed(f->m, 0);
	feed(m2, 0);
	feed(m3, 1);
	assert_int_equal(mvcc_hash(f->m, NULL, 0, &h1, &c1), 0);
	assert_int_equal(mvcc_hash(m2, NULL, 0, &h2, &c2), 0);
	assert_int_equal(mvcc_hash(m3, NULL, 0, &h3, &c3), 0);
	assert_int_equal(h1, h2);
	assert_int_not_equal(h1, h3);
	/* Same after compaction, whether physical removal ran or not. */
	assert_int_equal(mvcc_compact(f->m, 120), 0);
	assert_int_equal(mvcc_compact(m2, 120), 0);
	assert_int_equal(mvcc_compact_step(m2, 10, &done), 0);
	assert_false(done);
	assert_int_equal(mvcc_hash(f->m, NULL, 0, &h1, &c1), 0);
	assert_int_equal(mvcc_hash(m2, NULL, 0, &h2, &c2), 0);
	assert_int_equal(h1, h2);
	assert_int_equal(c1, 120);
	finish_compaction(f);
	assert_int_equal(mvcc_hash(f->m, NULL, 0, &h1, &c1), 0);
	assert_int_equal(h1, h2);
	/* At a past revision; compacted and future ones refused. */
	assert_int_equal(mvcc_hash(f->m, NULL, 150, &h1, &c1), 0);
	assert_int_equal(mvcc_hash(m2, NULL, 150, &h2, &c2), 0);
	assert_int_equal(h1, h2);
	uint32_t hcur;
	assert_int_equal(mvcc_hash(f->m, NULL, 0, &hcur, &c1), 0);
	assert_int_not_equal(h1, hcur);
	assert_int_equal(mvcc_hash(f->m, NULL, 120, &h1, &c1), KV_ECOMPACTED);
	assert_int_equal(mvcc_hash(f->m, NULL, 100000, &h1, &c1),
			 KV_EFUTUREREV);
	/* Survives reopen. */
	assert_int_equal(mvcc_hash(m2, NULL, 0, &h2, &c2), 0);
	assert_int_equal(mvcc_commit(m2, false), 0);
	mvcc_close(m2);
	assert_int_equal(mvcc_open(dir2, NULL, &m2), 0);
	assert_int_equal(mvcc_hash(m2, NULL, 0, &h3, &c3), 0);
	assert_int_equal(h2, h3);
	mvcc_close(m2);
	mvcc_close(m3);
	tu_rmrf(dir2);
	tu_rmrf(dir3);
	free(dir2);
	free(dir3);
}

/* ---- checkpoint / restore -------------------------------------------- */

struct ckpt_arg {
	struct mvcc *m;
	const char *path;
	struct mvcc_checkpoint_info info;
	int rc;
};

static void *ckpt_thread(void *p)
{
	struct ckpt_arg *a = p;

	a->rc = mvcc_checkpoint(a->m, a->path, &a->info);
	return NULL;
}

static void test_checkpoint_while_writing_and_restore(void **state)
{
	struct fx *f = *state;
	char path[4200], dir2[4200], buf[64];
	uint32_t hash_at, h2;
	int64_t c;

	for (int i = 0; i < 2000; i++) {
		snprintf(buf, sizeof(buf), "k%05d", i);
		tu_put(f->m, buf, "value-value-value", 0);
	}
	assert_int_equal(mvcc_set_applied(f->m, 77, 3), 0);
	assert_int_equal(mvcc_members_put(f->m, "members!", 8), 0);
	assert_int_equal(mvcc_commit(f->m, true), 0);
	int64_t rev_at = mvcc_revision(f->m);
	assert_int_equal(mvcc_hash(f->m, NULL, 0, &hash_at, &c), 0);
	snprintf(path, sizeof(path), "%s/snap.db", f->dir);
	struct ckpt_arg arg = { f->m, path, { 0 }, -1 };
	pthread_t th;
	assert_int_equal(mvcc_begin_write(f->m), 0);
	assert_int_equal(pthread_create(&th, NULL, ckpt_thread, &arg), 0);
	/* Writes continue while the copy runs (it sees none of them). */
	for (int i = 0; i < 2000; i++) {
		snprintf(buf, sizeof(buf), "k%05d", i);
		tu_put(f->m, buf, "new", 0);
		if (i % 500 == 0) {
			assert_int_equal(mvcc_commit(f->m, false), 0);
			assert_int_equal(mvcc_begin_write(f->m), 0);
		}
	}
	pthread_join(th, NULL);
	assert_int_equal(arg.rc, 0);
	/* A consistent state from when the copy's read txn began. */
	assert_true(arg.info.revision >= rev_at);
	assert_true(arg.info.revision <= mvcc_revision(f->m));
	assert_int_equal(mvcc_hash(f->m, NULL, arg.info.revision, &hash_at, &c),
			 0);
	rev_at = arg.info.revision;
	assert_int_equal(arg.info.applied_index, 77);
	assert_int_equal(arg.info.applied_term, 3);
	assert_true(arg.info.size > 0);
	/* Restore into a new dir and compare. */
	snprintf(dir2, sizeof(dir2), "%s/restored", f->dir);
	struct mvcc_checkpoint_info ri;
	assert_int_equal(mvcc_restore(path, dir2, &ri), 0);
	assert_int_equal(ri.crc32c, arg.info.crc32c);
	struct mvcc *m2;
	assert_int_equal(mvcc_open(dir2, NULL, &m2), 0);
	assert_int_equal(mvcc_revision(m2), rev_at);
	assert_true(mvcc_invariants_ok(m2));
	assert_int_equal(mvcc_hash(m2, NULL, 0, &h2, &c), 0);
	assert_int_equal(h2, hash_at);
	uint64_t idx, term;
	mvcc_get_applied(m2, &idx, &term);
	assert_int_equal(idx, 77);
	assert_int_equal(term, 3);
	const void *blob;
	size_t bl;
	assert_int_equal(mvcc_members_get(m2, &f->a, &blob, &bl), 0);
	assert_int_equal(bl, 8);
	assert_memory_equal(blob, "members!", 8);
	mvcc_close(m2);
	/* A corrupted copy is refused and the target left alone. */
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	unsigned char byte;
	assert_int_equal(pread(fd, &byte, 1, 5000), 1);
	byte ^= 0x55;
	assert_int_equal(pwrite(fd, &byte, 1, 5000), 1);
	close(fd);
	char dir3[4200];
	snprintf(dir3, sizeof(dir3), "%s/refused", f->dir);
	assert_int_equal(mvcc_restore(path, dir3, NULL), KV_ECORRUPT);
	assert_int_equal(access(dir3, F_OK), -1);
	assert_int_equal(mvcc_restore(path, dir2, NULL), KV_ECORRUPT);
	assert_int_equal(mvcc_open(dir2, NULL, &m2), 0);
	assert_int_equal(mvcc_revision(m2), rev_at);
	mvcc_close(m2);
	/* Missing checksum file: refused. */
	char sum[4300];
	snprintf(sum, sizeof(sum), "%s.crc", path);
	unlink(sum);
	assert_int_equal(mvcc_restore(path, dir3, NULL), KV_ECORRUPT);
}

/* ---- space ------------------------------------------------------------ */

static int put_retry(struct mvcc *m, const char *k, const void *v, size_t vl)
{
	struct mvcc_arena a = MVCC_ARENA_INIT;
	struct mvcc_put_req p = { 0 };
	struct mvcc_put_res res;
	int rc;

	p.key = S(k);
	p.key_len = strlen(k);
	p.value = v;
	p.value_len = vl;
	for (int tries = 0; tries < 64; tries++) {
		rc = mvcc_put(m, &p, &a, &res);
		if (rc != KV_EAGAIN)
			break;
		assert_int_equal(mvcc_commit(m, false), 0);
		assert_int_equal(mvcc_begin_write(m), 0);
	}
	mvcc_arena_free(&a);
	return rc;
}

static void test_map_growth_and_quota(void **state)
{
	struct fx *f = *state;
	struct mvcc_options o = { 0 };
	char *dir = tu_tmpdir(), k[32];
	static char val[1024];
	struct mvcc *m;
	uint64_t used, map0, map1;

	memset(val, 'v', sizeof(val));
	o.initial_map_bytes = 256 << 10;
	o.quota_bytes = 64 << 20;
	assert_int_equal(mvcc_open(dir, &o, &m), 0);
	mvcc_size(m, &used, &map0);
	assert_int_equal(mvcc_begin_write(m), 0);
	for (int i = 0; i < 8000; i++) {
		snprintf(k, sizeof(k), "key%06d", i);
		assert_int_equal(put_retry(m, k, val, sizeof(val)), 0);
		if (i % 100 == 99) {
			assert_int_equal(mvcc_commit(m, false), 0);
			assert_int_equal(mvcc_begin_write(m), 0);
		}
	}
	mvcc_size(m, &used, &map1);
	assert_true(map1 > map0);
	assert_true(used > 8000 * 1024);
	struct mvcc_range_req r = rq("key", "kez");
	r.count_only = true;
	struct mvcc_range_res res;
	assert_int_equal(mvcc_range(m, NULL, &r, &f->a, &res), 0);
	assert_int_equal(res.count, 8000);
	assert_true(mvcc_invariants_ok(m));
	/* Past the quota: KV_EFULL with etcd's NOSPACE text, store intact. */
	int rc = 0;
	for (int i = 0; i < 200000 && rc == 0; i++) {
		snprintf(k, sizeof(k), "more%07d", i);
		rc = put_retry(m, k, val, sizeof(val));
	}
	assert_int_equal(rc, KV_EFULL);
	assert_string_equal(mvcc_errmsg(rc),
			    "etcdserver: mvcc: database space exceeded");
	assert_int_equal(mvcc_commit(m, false), 0);
	/* Deletes and compaction still work and free space for new puts. */
	assert_int_equal(mvcc_begin_write(m), 0);
	int64_t del = tu_del(m, "more", "mz");
	assert_true(del > 0);
	assert_int_equal(mvcc_compact(m, mvcc_revision(m)), 0);
	bool done = false;
	while (!done) {
		rc = mvcc_compact_step(m, 1000, &done);
		if (rc == KV_EAGAIN || rc == 0) {
			assert_int_equal(mvcc_commit(m, false), 0);
			assert_int_equal(mvcc_begin_write(m), 0);
			continue;
		}
		assert_int_equal(rc, 0);
	}
	assert_int_equal(mvcc_commit(m, false), 0);
	assert_int_equal(mvcc_begin_write(m), 0);
	assert_int_equal(put_retry(m, "after", val, sizeof(val)), 0);
	assert_true(mvcc_invariants_ok(m));
	mvcc_close(m);
	tu_rmrf(dir);
	free(dir);
}

static void test_defrag_shrinks_and_keeps_data(void **state)
{
	struct fx *f = *state;
	static char val[2048];
	char k[32];
	uint64_t used0, used1, map;
	uint32_t h0, h1;
	int64_t c;
	struct mvcc_read *rd;

	memset(val, 'x', sizeof(val));
	for (int i = 0; i < 3000; i++) {
		snprintf(k, sizeof(k), "key%05d", i);
		tu_putb(f->m, k, strlen(k), val, sizeof(val));
	}
	tu_put(f->m, "keep", "me", 5);
	assert_int_equal(mvcc_commit(f->m, false), 0);
	assert_int_equal(mvcc_begin_write(f->m), 0);
	assert_int_equal(tu_del(f->m, "key", "kez"), 3000);
	assert_int_equal(mvcc_compact(f->m, mvcc_revision(f->m)), 0);
	finish_compaction(f);
	assert_int_equal(mvcc_set_applied(f->m, 9, 1), 0);
	assert_int_equal(mvcc_commit(f->m, true), 0);
	assert_int_equal(mvcc_defrag(f->m), 0); /* reuses pages, no writes */
	mvcc_size(f->m, &used0, &map);
	assert_int_equal(mvcc_hash(f->m, NULL, 0, &h0, &c), 0);
	/* Refused with a write txn open or a reader active. */
	assert_int_equal(mvcc_begin_write(f->m), 0);
	assert_int_equal(mvcc_defrag(f->m), KV_EBUSY);
	mvcc_abort(f->m);
	assert_int_equal(mvcc_read_begin(f->m, &rd), 0);
	assert_int_equal(mvcc_defrag(f->m), KV_EBUSY);
	mvcc_read_end(rd);
	reopen(f);
	mvcc_abort(f->m);
	assert_int_equal(mvcc_defrag(f->m), 0);
	mvcc_size(f->m, &used1, &map);
	assert_true(used1 <= used0);
	assert_true(used1 < 3000 * 2048 / 4);
	assert_int_equal(mvcc_hash(f->m, NULL, 0, &h1, &c), 0);
	assert_int_equal(h0, h1);
	assert_int_equal(mvcc_compact_revision(f->m), mvcc_revision(f->m));
	uint64_t idx, term;
	mvcc_get_applied(f->m, &idx, &term);
	assert_int_equal(idx, 9);
	struct mvcc_range_req r = rq("keep", NULL);
	struct mvcc_range_res res = get(f, &r);
	assert_int_equal(res.kvs[0].lease, 5);
	reopen(f);
	res = get(f, &r);
	assert_val(&res.kvs[0], "me");
	assert_true(mvcc_invariants_ok(f->m));
}

/* ---- fail-stop -------------------------------------------------------- */

static void test_fail_stop_after_lmdb_error(void **state)
{
	struct fx *f = *state;
	struct mvcc_put_req p = { 0 };
	struct mvcc_put_res res;

	tu_put(f->m, "a", "1", 0);
	assert_int_equal(mvcc_commit(f->m, true), 0);
	assert_int_equal(mvcc_begin_write(f->m), 0);
	tu_put(f->m, "b", "uncommitted", 0);
	mvcc_test_fail_after(f->m, 2); /* the rev-index write of the next put */
	p.key = S("c");
	p.key_len = 1;
	assert_int_equal(mvcc_put(f->m, &p, &f->a, &res), KV_EIO);
	assert_false(mvcc_in_write(f->m));
	assert_int_equal(mvcc_put(f->m, &p, &f->a, &res), KV_EFAILSTOP);
	assert_int_equal(mvcc_begin_write(f->m), KV_EFAILSTOP);
	assert_int_equal(mvcc_commit(f->m, true), KV_EFAILSTOP);
	assert_int_equal(mvcc_compact(f->m, 2), KV_EFAILSTOP);
	/* Reads still serve the committed state. */
	assert_int_equal(mvcc_revision(f->m), 2);
	struct mvcc_range_req r = rq("a", "");
	struct mvcc_range_res rr = get(f, &r);
	assert_int_equal(rr.count, 1);
	/* Reopen clears it; the failed txn left nothing behind. */
	mvcc_close(f->m);
	assert_int_equal(mvcc_open(f->dir, NULL, &f->m), 0);
	assert_int_equal(mvcc_revision(f->m), 2);
	assert_int_equal(mvcc_begin_write(f->m), 0);
	rr = get(f, &r);
	assert_int_equal(rr.count, 1);
	/* A failing commit is fail-stop, too. */
	tu_put(f->m, "d", "1", 0);
	mvcc_test_fail_after(f->m, 2); /* the "rev" meta put, then commit */
	assert_int_equal(mvcc_commit(f->m, true), KV_EIO);
	assert_int_equal(mvcc_begin_write(f->m), KV_EFAILSTOP);
	mvcc_close(f->m);
	assert_int_equal(mvcc_open(f->dir, NULL, &f->m), 0);
	assert_int_equal(mvcc_revision(f->m), 2);
	/* A failure half-way through a txn: none of it survives. */
	assert_int_equal(mvcc_begin_write(f->m), 0);
	struct mvcc_request_op ops[3] = { op_put("t1", "1"), op_put("t2", "2"),
					  op_put("t3", "3") };
	struct mvcc_txn_req t = { NULL, 0, ops, 3, NULL, 0 };
	struct mvcc_txn_res tr;
	mvcc_test_fail_after(f->m, 3); /* t2's record */
	assert_int_equal(mvcc_txn(f->m, &t, &f->a, &tr), KV_EIO);
	assert_int_equal(mvcc_txn(f->m, &t, &f->a, &tr), KV_EFAILSTOP);
	assert_int_equal(mvcc_revision(f->m), 2);
	mvcc_close(f->m);
	assert_int_equal(mvcc_open(f->dir, NULL, &f->m), 0);
	r = rq("t", "u");
	rr = get(f, &r);
	assert_int_equal(rr.count, 0);
	assert_int_equal(mvcc_revision(f->m), 2);
}

/* ---- meta, leases, abort, read handles ------------------------------- */

static void test_meta_applied_members_leases(void **state)
{
	struct fx *f = *state;
	uint64_t idx, term;
	const void *rec;
	size_t len;

	assert_int_equal(mvcc_set_applied(f->m, 10, 2), 0);
	tu_put(f->m, "a", "1", 0);
	assert_int_equal(mvcc_lease_put(f->m, 7, "seven", 5), 0);
	assert_int_equal(mvcc_lease_put(f->m, 3, "three", 5), 0);
	assert_int_equal(mvcc_commit(f->m, true), 0);
	/* Abort: the index and the data roll back together. */
	assert_int_equal(mvcc_begin_write(f->m), 0);
	assert_int_equal(mvcc_set_applied(f->m, 11, 2), 0);
	tu_put(f->m, "b", "1", 0);
	assert_int_equal(mvcc_lease_del(f->m, 7), 0);
	mvcc_abort(f->m);
	mvcc_get_applied(f->m, &idx, &term);
	assert_int_equal(idx, 10);
	assert_int_equal(mvcc_revision(f->m), 2);
	reopen(f);
	mvcc_get_applied(f->m, &idx, &term);
	assert_int_equal(idx, 10);
	assert_int_equal(term, 2);
	assert_int_equal(mvcc_lease_get(f->m, 7, &f->a, &rec, &len), 0);
	assert_int_equal(len, 5);
	assert_memory_equal(rec, "seven", 5);
	int64_t *ids;
	size_t n;
	assert_int_equal(mvcc_lease_list(f->m, &f->a, &ids, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(ids[0], 3);
	assert_int_equal(ids[1], 7);
	assert_int_equal(mvcc_lease_del(f->m, 7), 0);
	assert_int_equal(mvcc_lease_del(f->m, 7), KV_ENOTFOUND);
	assert_int_equal(mvcc_lease_get(f->m, 7, &f->a, &rec, &len),
			 KV_ENOTFOUND);
	assert_int_equal(mvcc_members_get(f->m, &f->a, &rec, &len), 0);
	assert_null(rec);
	assert_int_equal(len, 0);
}

static void test_read_handle_is_a_snapshot(void **state)
{
	struct fx *f = *state;
	struct mvcc_read *rd;
	struct mvcc_range_res res;

	tu_put(f->m, "a", "1", 0);
	assert_int_equal(mvcc_commit(f->m, false), 0);
	assert_int_equal(mvcc_read_begin(f->m, &rd), 0);
	assert_int_equal(mvcc_read_revision(rd), 2);
	assert_int_equal(mvcc_begin_write(f->m), 0);
	tu_put(f->m, "a", "2", 0);
	/* The owner's view sees the uncommitted write; the handle does not. */
	struct mvcc_range_req r = rq("a", NULL);
	res = get(f, &r);
	assert_val(&res.kvs[0], "2");
	assert_int_equal(mvcc_range(f->m, rd, &r, &f->a, &res), 0);
	assert_val(&res.kvs[0], "1");
	assert_int_equal(res.header_revision, 2);
	assert_int_equal(mvcc_commit(f->m, false), 0);
	assert_int_equal(mvcc_range(f->m, rd, &r, &f->a, &res), 0);
	assert_val(&res.kvs[0], "1");
	r.revision = 3;
	assert_int_equal(mvcc_range(f->m, rd, &r, &f->a, &res), KV_EFUTUREREV);
	mvcc_read_end(rd);
	/* Writes need the write txn. */
	struct mvcc_put_req p = { 0 };
	struct mvcc_put_res pr;
	p.key = S("x");
	p.key_len = 1;
	assert_int_equal(mvcc_put(f->m, &p, &f->a, &pr), KV_EINVAL);
	/* Read-only txns do not. */
	struct mvcc_request_op ops[1] = { op_range("a", NULL) };
	struct mvcc_txn_req t = { NULL, 0, ops, 1, NULL, 0 };
	struct mvcc_txn_res tr;
	assert_int_equal(mvcc_txn(f->m, &t, &f->a, &tr), 0);
	assert_int_equal(tr.header_revision, 3);
	assert_int_equal(mvcc_begin_write(f->m), 0);
}

/* Readers on other threads see whole commits only, while the owner keeps
 * writing: every commit rewrites k0..k9 with one value in one txn. */
struct reader_arg {
	struct mvcc *m;
	atomic_int *stop;
	long checks;
	int bad;
};

static void *reader_thread(void *p)
{
	struct reader_arg *ra = p;
	struct mvcc_arena a = MVCC_ARENA_INIT;

	while (!*ra->stop) {
		struct mvcc_read *rd;
		struct mvcc_range_res res;
		if (mvcc_read_begin(ra->m, &rd) != 0) {
			ra->bad++;
			break;
		}
		struct mvcc_range_req r = rq("k", "l");
		if (mvcc_range(ra->m, rd, &r, &a, &res) != 0)
			ra->bad++;
		else if (res.n_kvs == 10)
			for (size_t i = 1; i < 10; i++)
				if (res.kvs[i].value_len != res.kvs[0].value_len ||
				    memcmp(res.kvs[i].value, res.kvs[0].value,
					   res.kvs[0].value_len) != 0 ||
				    res.kvs[i].mod_revision !=
					    res.kvs[0].mod_revision)
					ra->bad++;
		if (res.header_revision != mvcc_read_revision(rd))
			ra->bad++;
		mvcc_read_end(rd);
		mvcc_arena_reset(&a);
		ra->checks++;
	}
	mvcc_arena_free(&a);
	return NULL;
}

static void test_concurrent_readers_see_whole_commits(void **state)
{
	struct fx *f = *state;
	atomic_int stop = 0;
	struct reader_arg ra[2] = { { f->m, &stop, 0, 0 },
				    { f->m, &stop, 0, 0 } };
	pthread_t th[2];
	static char keys[10][4], vals[10][16];
	struct mvcc_request_op ops[10];

	for (int i = 0; i < 10; i++)
		snprintf(keys[i], sizeof(keys[i]), "k%d", i);
	assert_int_equal(mvcc_commit(f->m, false), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, reader_thread,
						&ra[i]), 0);
	for (int round = 0; round < 500; round++) {
		assert_int_equal(mvcc_begin_write(f->m), 0);
		for (int i = 0; i < 10; i++) {
			snprintf(vals[i], sizeof(vals[i]), "v%d", round);
			ops[i] = op_put(keys[i], vals[i]);
		}
		struct mvcc_txn_req t = { NULL, 0, ops, 10, NULL, 0 };
		struct mvcc_txn_res res;
		assert_int_equal(mvcc_txn(f->m, &t, &f->a, &res), 0);
		mvcc_arena_reset(&f->a);
		assert_int_equal(mvcc_commit(f->m, false), 0);
	}
	stop = 1;
	for (int i = 0; i < 2; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(ra[i].bad, 0);
		assert_true(ra[i].checks > 0);
	}
	assert_int_equal(mvcc_begin_write(f->m), 0);
}

/* With MDB_WRITEMAP a full disk must not reach LMDB as SIGBUS (a write
 * through the map into a hole the file system cannot fill): the store
 * allocates data.mdb's blocks ahead of use and stops cleanly when it
 * cannot. The store lives on a 160 MiB tmpfs (the tests run as root, as in
 * CI), its map is 256 MiB; the writer runs in a child process. */
static int disk_full_child(const char *dir)
{
	struct mvcc_options o = { 0 };
	struct mvcc *m;
	static char val[200000];
	int rc = 0, puts = 0;

	o.initial_map_bytes = 256u << 20; /* far above the file system */
	o.quota_bytes = 256u << 20;
	if (mvcc_open(dir, &o, &m) != 0)
		return 11;
	memset(val, 'x', sizeof(val) - 1);
	for (int i = 0; i < 2000 && rc == 0; i++) {
		char k[32];
		struct mvcc_put_req p = { 0 };
		struct mvcc_put_res pr;
		struct mvcc_arena a = MVCC_ARENA_INIT;
		if (!mvcc_in_write(m) && (rc = mvcc_begin_write(m)) != 0)
			break;
		snprintf(k, sizeof(k), "big%05d", i);
		p.key = (const uint8_t *)k;
		p.key_len = strlen(k);
		p.value = (const uint8_t *)val;
		p.value_len = sizeof(val);
		rc = mvcc_put(m, &p, &a, &pr);
		mvcc_arena_free(&a);
		if (rc == 0 && i % 10 == 9) {
			rc = mvcc_commit(m, false);
			if (rc == 0)
				puts = i + 1;
		}
	}
	/* stopped cleanly, for good */
	if (rc != KV_EFAILSTOP)
		return 12;
	if (mvcc_commit(m, true) != KV_EFAILSTOP ||
	    mvcc_begin_write(m) != KV_EFAILSTOP)
		return 13;
	mvcc_close(m);
	/* everything committed is there after a reopen with room */
	if (puts < 10)
		return 14;
	return 0;
}

static void test_full_disk_is_fail_stop_not_sigbus(void **state)
{
	(void)state;
	char *dir = tu_tmpdir();
	assert_int_equal(mount("kvtest", dir, "tmpfs", 0, "size=160m"), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* die of a signal for real, not in cmocka's handler */
		signal(SIGBUS, SIG_DFL);
		signal(SIGSEGV, SIG_DFL);
		_exit(disk_full_child(dir));
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	/* reopen with room: every committed put is there */
	assert_int_equal(mount(NULL, dir, NULL, MS_REMOUNT, "size=600m"), 0);
	struct mvcc *m;
	struct mvcc_options o = { 0 };
	o.initial_map_bytes = 256u << 20;
	o.quota_bytes = 256u << 20;
	int orc = mvcc_open(dir, &o, &m);
	size_t n = 0;
	if (orc == 0) {
		struct mvcc_arena a = MVCC_ARENA_INIT;
		struct mvcc_range_res res;
		struct mvcc_range_req r = { 0 };
		static const uint8_t nul = 0;
		r.key = &nul;
		r.key_len = 1;
		r.range_end = &nul;
		r.range_end_len = 1;
		r.count_only = true;
		if (mvcc_range(m, NULL, &r, &a, &res) == 0)
			n = (size_t)res.count;
		mvcc_arena_free(&a);
		if (!mvcc_invariants_ok(m))
			orc = KV_ECORRUPT;
		mvcc_close(m);
	}
	assert_int_equal(umount(dir), 0);
	tu_rmrf(dir);
	free(dir);
	assert_int_equal(sig, 0); /* SIGBUS before the fix */
	assert_int_equal(code, 0);
	assert_int_equal(orc, 0);
	assert_true(n >= 10 && n % 10 == 0); /* whole commits only */
}

struct slow_reader {
	struct mvcc *m;
	atomic_bool started;
	atomic_bool done;
};

static void *slow_reader_main(void *arg)
{
	struct slow_reader *sr = arg;
	struct mvcc_read *rd;
	struct mvcc_arena a = MVCC_ARENA_INIT;
	struct mvcc_range_res res;
	if (mvcc_read_begin(sr->m, &rd) != 0)
		return NULL;
	atomic_store(&sr->started, true);
	usleep(300 * 1000);
	/* still a valid env: mvcc_close waits for us */
	struct mvcc_range_req r = { 0 };
	r.key = (const uint8_t *)"k";
	r.key_len = 1;
	int rc = mvcc_range(sr->m, rd, &r, &a, &res);
	atomic_store(&sr->done, rc == 0 && res.n_kvs == 1);
	mvcc_arena_free(&a);
	mvcc_read_end(rd);
	return NULL;
}

/* Closing the store while another thread still reads (a snapshot copy
 * during a raft snapshot install) waits for the reader, which keeps a
 * valid view to the end. */
static void test_close_waits_for_other_threads(void **state)
{
	struct fx *f = *state;
	tu_put(f->m, "k", "v", 0);
	assert_int_equal(mvcc_commit(f->m, true), 0);
	struct slow_reader sr = { f->m, false, false };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, slow_reader_main, &sr), 0);
	while (!atomic_load(&sr.started))
		usleep(1000);
	mvcc_close(f->m);
	f->m = NULL;
	assert_true(atomic_load(&sr.done));
	pthread_join(t, NULL);
}

/* Rewrites path's side file "<path>.crc" to match its current bytes. */
static void resum(const char *path)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	static unsigned char buf[1 << 16];
	uint32_t crc = 0;
	size_t n, total = 0;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
		crc = kv_crc32c(crc, buf, n);
		total += n;
	}
	fclose(f);
	char name[4300];
	snprintf(name, sizeof(name), "%s.crc", path);
	f = fopen(name, "w");
	assert_non_null(f);
	fprintf(f, "crc32c=%08x size=%zu\n", crc, total);
	fclose(f);
}

/* Overwrites 8 bytes at off in both LMDB meta pages (4 KiB pages). */
static void poke_metas(const char *path, size_t off, uint64_t v)
{
	int fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	for (int m = 0; m < 2; m++)
		assert_int_equal(pwrite(fd, &v, 8, (off_t)(m * 4096 + off)), 8);
	close(fd);
}

/* A snapshot whose checksum matches but whose LMDB pages are corrupt (it
 * was corrupt where it was made) is refused as corrupt; the process that
 * restores it does not crash (it did: SIGFPE on a zero page size, SIGSEGV
 * or SIGBUS on a root page past the end). */
static void test_restore_refuses_corrupt_lmdb_file(void **state)
{
	struct fx *f = *state;
	char path[4200], dir2[4200];
	for (int i = 0; i < 500; i++) {
		char k[32];
		snprintf(k, sizeof(k), "k%05d", i);
		tu_put(f->m, k, "value", 0);
	}
	assert_int_equal(mvcc_commit(f->m, true), 0);
	snprintf(path, sizeof(path), "%s/snap.db", f->dir);
	snprintf(dir2, sizeof(dir2), "%s/restored", f->dir);
	assert_int_equal(mvcc_checkpoint(f->m, path, NULL), 0);
	/* the page size (FREE_DBI's md_pad, offset 40) set to 0 */
	poke_metas(path, 40, 0);
	resum(path);
	assert_int_equal(mvcc_restore(path, dir2, NULL), KV_ECORRUPT);
	/* the main database's root (MAIN_DBI's md_root, offset 128) past
	 * the end of the file */
	assert_int_equal(mvcc_checkpoint(f->m, path, NULL), 0);
	poke_metas(path, 128, 0x7fffff);
	resum(path);
	assert_int_equal(mvcc_restore(path, dir2, NULL), KV_ECORRUPT);
	/* the genuine file restores */
	assert_int_equal(mvcc_checkpoint(f->m, path, NULL), 0);
	assert_int_equal(mvcc_restore(path, dir2, NULL), 0);
	assert_int_equal(mvcc_begin_write(f->m), 0);
}

int main(void)
{
	kv_log_set_level(KV_LOG_WARN);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_empty_store_starts_at_revision_1),
		T(test_txn_with_two_puts_bumps_once),
		T(test_delete_of_nothing_does_not_bump),
		T(test_txn_read_only_branch_does_not_bump),
		T(test_nested_txn_bumps_once),
		T(test_version_resets_after_delete),
		T(test_lease_id_stored),
		T(test_range_end_nul_means_all_from_key),
		T(test_range_all_keys),
		T(test_range_prefix_and_single_key),
		T(test_range_limit_count_more),
		T(test_range_keys_only_and_count_only),
		T(test_range_revision_errors),
		T(test_range_sort_descending_by_mod_with_limit),
		T(test_range_sort_target_without_order_limits_first),
		T(test_range_mod_create_filters),
		T(test_put_prev_kv),
		T(test_put_ignore_value_and_lease),
		T(test_put_with_unknown_lease),
		T(test_delete_range_prev_kvs_one_revision),
		T(test_txn_compare_on_missing_key),
		T(test_txn_compare_with_range_end),
		T(test_txn_duplicate_keys),
		T(test_txn_too_many_ops),
		T(test_txn_nested_compares_see_state_before_txn),
		T(test_txn_sub_responses_and_own_writes),
		T(test_txn_range_revision_checks),
		T(test_txn_put_then_delete_all_same_revision),
		T(test_txn_ignore_value_missing_key),
		T(test_compact_errors),
		T(test_compact_keeps_newest_drops_tombstones),
		T(test_compact_zero_on_fresh_store),
		T(test_long_keys_order_and_ranges),
		T(test_events_put_delete_prev_kv),
		T(test_events_batches_keep_revisions_whole),
		T(test_hash_deterministic),
		T(test_checkpoint_while_writing_and_restore),
		T(test_restore_refuses_corrupt_lmdb_file),
		T(test_map_growth_and_quota),
		T(test_defrag_shrinks_and_keeps_data),
		T(test_fail_stop_after_lmdb_error),
		cmocka_unit_test(test_full_disk_is_fail_stop_not_sigbus),
		T(test_meta_applied_members_leases),
		T(test_read_handle_is_a_snapshot),
		T(test_concurrent_readers_see_whole_commits),
		T(test_close_waits_for_other_threads),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}

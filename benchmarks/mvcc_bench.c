/* kv-mvcc-bench: micro-benchmarks of the MVCC store.
 *
 *   kv-mvcc-bench [dir] [puts]
 *
 * 1. puts/s, 256-byte values, write txns of 100 puts committed without
 *    sync (the WAL is the durability of record), then with sync;
 * 2. range of 1,000 keys (ops/s) from a read handle;
 * 3. compaction of 1M revisions (seconds), in steps of 10,000 revisions
 *    with a commit between steps.
 * dir defaults to a fresh directory under /tmp (removed afterwards). */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "storage/mvcc.h"

#define CHECK(x)                                                          \
	do {                                                              \
		int rc_ = (x);                                            \
		if (rc_ != 0) {                                           \
			fprintf(stderr, "%s:%d: %s: %s\n", __FILE__,      \
				__LINE__, #x, kv_strerror(rc_));          \
			exit(1);                                          \
		}                                                         \
	} while (0)

static uint64_t rng = 88172645463325252ull;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static int rm_one(const char *p, const struct stat *s, int f, struct FTW *w)
{
	(void)s;
	(void)f;
	(void)w;
	return remove(p);
}

static void fresh(const char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void put(struct mvcc *m, struct mvcc_arena *a, const char *k,
		const uint8_t *v, size_t vl)
{
	struct mvcc_put_req p = { 0 };
	struct mvcc_put_res res;

	p.key = (const uint8_t *)k;
	p.key_len = strlen(k);
	p.value = v;
	p.value_len = vl;
	CHECK(mvcc_put(m, &p, a, &res));
}

/* keyspace 0: sequential new keys. */
static double put_bench(const char *dir, long n, bool sync, long keyspace)
{
	struct mvcc_arena a = MVCC_ARENA_INIT;
	struct mvcc *m;
	uint8_t val[256];
	char key[32];

	memset(val, 'v', sizeof(val));
	fresh(dir);
	CHECK(mvcc_open(dir, NULL, &m));
	uint64_t t0 = kv_now_ns();
	for (long i = 0; i < n; i += 100) {
		CHECK(mvcc_begin_write(m));
		for (int j = 0; j < 100; j++) {
			uint64_t k = keyspace ? rnd() % (uint64_t)keyspace
					      : (uint64_t)(i + j);
			snprintf(key, sizeof(key), "key%012llu",
				 (unsigned long long)k);
			put(m, &a, key, val, sizeof(val));
		}
		CHECK(mvcc_commit(m, sync));
		mvcc_arena_reset(&a);
	}
	double s = (double)(kv_now_ns() - t0) / 1e9;
	mvcc_close(m);
	mvcc_arena_free(&a);
	return (double)n / s;
}

int main(int argc, char **argv)
{
	char dirbuf[64];
	const char *dir = argc > 1 ? argv[1] : NULL;
	long n = argc > 2 ? atol(argv[2]) : 1000000;
	struct mvcc_arena a = MVCC_ARENA_INIT;
	struct mvcc *m;
	uint8_t val[256];
	char key[32], end[32];

	kv_log_set_level(KV_LOG_WARN);
	memset(val, 'v', sizeof(val));
	if (dir == NULL) {
		snprintf(dirbuf, sizeof(dirbuf), "/tmp/kv-mvcc-bench-%d",
			 (int)getpid());
		dir = dirbuf;
	}

	/* 1. puts */
	double ps = put_bench(dir, n, false, 0);
	printf("put  256B, txn of 100, no sync, %ld puts, sequential new keys: %.0f puts/s\n",
	       n, ps);
	ps = put_bench(dir, n, false, n);
	printf("put  256B, txn of 100, no sync, %ld puts, random keys: %.0f puts/s\n",
	       n, ps);
	ps = put_bench(dir, n, false, 10000);
	printf("put  256B, txn of 100, no sync, %ld puts over 10k keys: %.0f puts/s\n",
	       n, ps);
	long ns = n / 20;
	ps = put_bench(dir, ns, true, ns);
	printf("put  256B, txn of 100, sync,    %ld puts (new keys): %.0f puts/s\n",
	       ns, ps);

	/* 2. ranges of 1,000 keys over 100k keys */
	fresh(dir);
	CHECK(mvcc_open(dir, NULL, &m));
	CHECK(mvcc_begin_write(m));
	for (int i = 0; i < 100000; i++) {
		snprintf(key, sizeof(key), "key%08d", i);
		put(m, &a, key, val, sizeof(val));
		if (i % 1000 == 999) {
			CHECK(mvcc_commit(m, false));
			CHECK(mvcc_begin_write(m));
			mvcc_arena_reset(&a);
		}
	}
	CHECK(mvcc_commit(m, true));
	struct mvcc_read *rd;
	CHECK(mvcc_read_begin(m, &rd));
	int iters = 2000;
	uint64_t t0 = kv_now_ns();
	for (int i = 0; i < iters; i++) {
		int s = (int)(rnd() % 99000);
		snprintf(key, sizeof(key), "key%08d", s);
		snprintf(end, sizeof(end), "key%08d", s + 1000);
		struct mvcc_range_req r = { 0 };
		struct mvcc_range_res res;
		r.key = (const uint8_t *)key;
		r.key_len = strlen(key);
		r.range_end = (const uint8_t *)end;
		r.range_end_len = strlen(end);
		CHECK(mvcc_range(m, rd, &r, &a, &res));
		if (res.n_kvs != 1000) {
			fprintf(stderr, "range returned %zu\n", res.n_kvs);
			return 1;
		}
		mvcc_arena_reset(&a);
	}
	double s = (double)(kv_now_ns() - t0) / 1e9;
	mvcc_read_end(rd);
	printf("range 1000 keys x 256B (of 100k): %.0f ranges/s (%.0f keys/s)\n",
	       iters / s, iters * 1000.0 / s);
	mvcc_close(m);

	/* 3. compaction of 1M revisions: 1M puts over 10k keys. */
	fresh(dir);
	CHECK(mvcc_open(dir, NULL, &m));
	CHECK(mvcc_begin_write(m));
	for (long i = 0; i < 1000000; i++) {
		snprintf(key, sizeof(key), "key%08ld", i % 10000);
		put(m, &a, key, val, 64);
		if (i % 1000 == 999) {
			CHECK(mvcc_commit(m, false));
			CHECK(mvcc_begin_write(m));
			mvcc_arena_reset(&a);
		}
	}
	CHECK(mvcc_commit(m, true));
	CHECK(mvcc_begin_write(m));
	t0 = kv_now_ns();
	CHECK(mvcc_compact(m, mvcc_revision(m)));
	bool done = false;
	long steps = 0;
	while (!done) {
		int rc = mvcc_compact_step(m, 10000, &done);
		if (rc != 0 && rc != KV_EAGAIN)
			CHECK(rc);
		CHECK(mvcc_commit(m, false));
		CHECK(mvcc_begin_write(m));
		steps++;
	}
	CHECK(mvcc_commit(m, true));
	s = (double)(kv_now_ns() - t0) / 1e9;
	uint64_t used, map;
	mvcc_size(m, &used, &map);
	printf("compact 1M revisions (10k keys, steps of 10k, %ld commits): %.2f s\n",
	       steps, s);
	mvcc_close(m);
	fresh(dir);
	mvcc_arena_free(&a);
	return 0;
}

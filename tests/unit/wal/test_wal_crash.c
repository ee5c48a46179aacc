/* WAL crash images, corruption and injected I/O faults.
 *
 * The log is written in three batches ([1,10], [11,25], [26,30]); the
 * last batch is the only one that may be torn by a crash. Every test
 * checks that reopening yields exactly a prefix of whole records, never a
 * partial or invented one, and that damage anywhere but the tail refuses
 * to open with a message naming the file and the byte offset. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"

#include "common/log.h"
#include "kv/errors.h"
#include "storage/vfs.h"
#include "storage/wal.h"
#include "wal_test_util.h"

#define SEG (16 * 1024)
#define LAST 30
#define SYNCED 25

/* A fault vfs that only skips syncs: crash images are built by hand or
 * by the fault vfs, never by losing the page cache, so syncing would only
 * cost time. */
static struct vfs *fast;

static int setup(void **state)
{
	*state = tu_mkdtemp();
	return 0;
}

static int teardown(void **state)
{
	tu_rmdir(*state);
	free(*state);
	return 0;
}

/* Offset of entry idx in a single-segment log starting at 1. */
static uint64_t rec_off(uint64_t idx)
{
	uint64_t off = WAL_SEG_HDR_SIZE;

	for (uint64_t i = 1; i < idx; i++)
		off += wal_rec_size(tu_len(i));
	return off;
}

static void write_log(const char *dir, struct vfs *vfs)
{
	struct wal *w = tu_open(dir, SEG, vfs);

	tu_append(w, 1, 10, 1);
	tu_append(w, 11, SYNCED, 1);
	tu_append(w, SYNCED + 1, LAST, 2);
	assert_int_equal(wal_close(w), 0);
}

/* Opens dir and checks it holds exactly [1, last]. */
static void expect_prefix(const char *dir, uint64_t last)
{
	struct wal_info info;
	struct wal *w = tu_open(dir, SEG, fast);

	wal_info(w, &info);
	if (info.last_index != last)
		fail_msg("%s: last index %" PRIu64 ", expected %" PRIu64, dir,
			 info.last_index, last);
	tu_check(w, 1, last);
	assert_int_equal(wal_close(w), 0);
}

/* Opening must fail with KV_ECORRUPT and a message naming file and
 * offset. */
static void expect_refuse(const char *dir, const char *file, uint64_t off)
{
	struct wal *w = NULL;
	char msg[512], want[64];
	int rv = wal_open(dir, NULL, &w, msg, sizeof(msg));

	if (rv != KV_ECORRUPT)
		fail_msg("expected KV_ECORRUPT, got %d (%s)", rv,
			 rv == 0 ? "opened" : msg);
	assert_null(w);
	if (strstr(msg, tu_path(dir, file)) == NULL)
		fail_msg("message does not name %s: %s", file, msg);
	snprintf(want, sizeof(want), "offset %" PRIu64 ":", off);
	if (strstr(msg, want) == NULL)
		fail_msg("message does not say '%s': %s", want, msg);
}

/* Cut the last segment at every byte offset of the last batch, once by
 * truncating the file and once by zero-filling the rest (preallocated
 * space): reopening yields the synced prefix plus exactly the records of
 * the last batch that are intact, and appending continues cleanly. */
static void test_cut_every_byte(void **state)
{
	const char *dir = *state;
	char *scratch = tu_mkdtemp();
	unsigned char *orig, *img, *meta;
	size_t len, mlen;
	uint64_t pre = rec_off(SYNCED + 1), post = rec_off(LAST + 1);
	char seg[300];

	write_log(dir, fast);
	snprintf(seg, sizeof(seg), "%s", tu_last_segment(dir));
	orig = tu_read(tu_path(dir, seg), &len);
	meta = tu_read(tu_path(dir, "meta"), &mlen);
	assert_true(len >= post);
	img = malloc(len);
	for (uint64_t cut = pre; cut <= post; cut++) {
		for (int zero_fill = 0; zero_fill < 2; zero_fill++) {
			uint64_t last = SYNCED;
			memcpy(img, orig, cut);
			memset(img + cut, 0, len - cut);
			/* Whole records: bytes identical to the original. */
			for (uint64_t i = SYNCED + 1; i <= LAST; i++) {
				uint64_t o = rec_off(i);
				uint64_t e = o + wal_rec_size(tu_len(i));
				if (!zero_fill && e > cut)
					break;
				if (memcmp(img + o, orig + o, e - o) != 0)
					break;
				last = i;
			}
			tu_rmdir(scratch);
			assert_int_equal(mkdir(scratch, 0755), 0);
			tu_write(tu_path(scratch, "meta"), meta, mlen);
			tu_write(tu_path(scratch, seg), img,
				 zero_fill ? len : cut);
			expect_prefix(scratch, last);
			if (cut % 17 == 0) {
				struct wal *w = tu_open(scratch, SEG, fast);
				tu_append(w, last + 1, last + 3, 3);
				assert_int_equal(wal_close(w), 0);
				expect_prefix(scratch, last + 3);
			}
		}
	}
	free(img);
	free(orig);
	free(meta);
	tu_rmdir(scratch);
	free(scratch);
}

/* Zeroed sectors: zeroing the first record of the last batch while the
 * rest of that batch is intact is a torn write (the batch was never
 * acknowledged); zeroing a record of an earlier batch is corruption. */
static void test_zeroed_records(void **state)
{
	const char *dir = *state;
	unsigned char *orig, *img;
	size_t len;
	char seg[300];

	write_log(dir, NULL);
	snprintf(seg, sizeof(seg), "%s", tu_last_segment(dir));
	orig = tu_read(tu_path(dir, seg), &len);
	img = malloc(len);

	/* The whole last batch zeroed: looks like preallocated space. */
	memcpy(img, orig, len);
	memset(img + rec_off(SYNCED + 1), 0, rec_off(LAST + 1) - rec_off(SYNCED + 1));
	tu_write(tu_path(dir, seg), img, len);
	expect_prefix(dir, SYNCED);

	/* First record of the last batch zeroed, the rest intact. */
	memcpy(img, orig, len);
	memset(img + rec_off(SYNCED + 1), 0, WAL_REC_HDR_SIZE);
	tu_write(tu_path(dir, seg), img, len);
	expect_prefix(dir, SYNCED);

	/* A record of the second batch zeroed: a later batch follows. */
	memcpy(img, orig, len);
	memset(img + rec_off(20), 0, rec_off(21) - rec_off(20));
	tu_write(tu_path(dir, seg), img, len);
	expect_refuse(dir, seg, rec_off(20));
	free(img);
	free(orig);
}

/* A flipped bit in a record of an earlier batch refuses to open (header
 * or payload); in the last record it is a torn tail. */
static void test_bitflip(void **state)
{
	const char *dir = *state;
	unsigned char *orig, *img;
	size_t len;
	char seg[300];
	uint64_t idxs[] = { 1, 5, 10, 11, 24, 25 };

	write_log(dir, NULL);
	snprintf(seg, sizeof(seg), "%s", tu_last_segment(dir));
	orig = tu_read(tu_path(dir, seg), &len);
	img = malloc(len);
	for (size_t k = 0; k < sizeof(idxs) / sizeof(idxs[0]); k++) {
		uint64_t o = rec_off(idxs[k]);
		uint64_t sz = WAL_REC_HDR_SIZE + tu_len(idxs[k]);
		for (uint64_t b = 0; b < sz; b += 7) {
			memcpy(img, orig, len);
			img[o + b] ^= (unsigned char)(1u << (b % 8));
			tu_write(tu_path(dir, seg), img, len);
			expect_refuse(dir, seg, o);
		}
	}
	/* Segment header. */
	memcpy(img, orig, len);
	img[9] ^= 1;
	tu_write(tu_path(dir, seg), img, len);
	expect_refuse(dir, seg, 0);
	/* The last record. */
	memcpy(img, orig, len);
	img[rec_off(LAST) + 3] ^= 0x40;
	tu_write(tu_path(dir, seg), img, len);
	expect_prefix(dir, LAST - 1);
	free(img);
	free(orig);
}

/* Damage in a segment that is not the last one, and a missing middle
 * segment, refuse to open. */
static void test_multi_segment_damage(void **state)
{
	const char *dir = *state;
	struct wal *w = tu_open(dir, 2048, NULL);
	char first[300], mid[300];
	unsigned char *p;
	size_t len;
	uint64_t f;

	for (uint64_t i = 1; i <= 100; i += 5)
		tu_append(w, i, i + 4, 1);
	assert_int_equal(wal_close(w), 0);
	assert_true(tu_nsegments(dir) >= 3);
	snprintf(first, sizeof(first), "%016x.wal", 1);
	/* The first segment's last record (a zero tail follows it). */
	p = tu_read(tu_path(dir, first), &len);
	uint64_t o = WAL_SEG_HDR_SIZE, last_o = 0;
	while (o + WAL_REC_HDR_SIZE <= len && p[o + 36] == 1) {
		last_o = o;
		o += wal_rec_size(kv_load_u32le(p + o + 32));
	}
	p[last_o + WAL_REC_HDR_SIZE - 3] ^= 2; /* entry type byte */
	tu_write(tu_path(dir, first), p, len);
	expect_refuse(dir, first, last_o);
	p[last_o + WAL_REC_HDR_SIZE - 3] ^= 2;
	tu_write(tu_path(dir, first), p, len);
	expect_prefix(dir, 100);
	free(p);

	/* The second segment removed: a gap after the first one. */
	f = 0;
	for (uint64_t i = 2; i <= 100 && f == 0; i++) {
		snprintf(mid, sizeof(mid), "%016" PRIx64 ".wal", i);
		if (access(tu_path(dir, mid), F_OK) == 0)
			f = i;
	}
	assert_true(f > 1);
	unlink(tu_path(dir, mid));
	expect_refuse(dir, first, last_o + wal_rec_size(tu_len(f - 1)));
}

struct status_req {
	struct wal_append_req req;
	int status;
	int called;
};

static void on_status(struct wal_append_req *req, int status)
{
	struct status_req *s = (struct status_req *)(void *)req;

	s->status = status;
	s->called++;
}

/* Returns wal_append's result: 0, or KV_EFAILSTOP when an earlier batch
 * has already failed (then no callback will come). */
static int append_async(struct wal *w, uint64_t from, uint64_t to,
			struct status_req *r)
{
	unsigned char bufs[8][256];
	struct wal_entry e[8];
	unsigned n = (unsigned)(to - from + 1);

	assert_true(n <= 8);
	for (unsigned i = 0; i < n; i++)
		tu_entry(&e[i], from + i, 1, bufs[i]);
	memset(r, 0, sizeof(*r));
	return wal_append(w, e, n, &r->req, on_status);
}

/* After a failure every later call reports KV_EFAILSTOP. */
static void expect_failstop(struct wal *w, uint64_t next)
{
	unsigned char buf[256];
	struct wal_entry e;

	tu_entry(&e, next, 1, buf);
	assert_int_equal(wal_append_sync(w, &e, 1), KV_EFAILSTOP);
	assert_int_equal(wal_truncate(w, next - 1), KV_EFAILSTOP);
	assert_int_equal(wal_set_term_vote(w, 9, 9), KV_EFAILSTOP);
	assert_int_equal(wal_drop_prefix(w, 1), KV_EFAILSTOP);
	assert_int_equal(wal_reset(w, 100, 1), KV_EFAILSTOP);
	struct wal_iter *it;
	struct wal_entry *ents;
	size_t n;
	assert_int_equal(wal_iter_open(w, next - 1, &it), KV_EFAILSTOP);
	assert_int_equal(wal_load(w, next - 1, &ents, &n), KV_EFAILSTOP);
	assert_true(strstr(wal_errmsg(w), "fail-stop") != NULL);
}

/* Failed write or fsync: the failing batch's callbacks report the error,
 * queued ones KV_EFAILSTOP, nothing later succeeds; no success callback
 * ever reports data that was not fsynced. */
static void test_fault_write_sync(void **state)
{
	const char *dir = *state;
	struct vfs *fv = vfs_fault_new(vfs_posix());

	for (int which = 0; which < 2; which++) {
		enum vfs_op op = which ? VFS_OP_SYNC : VFS_OP_PWRITE;
		struct status_req r[4];
		struct wal *w;
		tu_rmdir(dir);
		assert_int_equal(mkdir(dir, 0755), 0);
		vfs_fault_disarm(fv);
		w = tu_open(dir, SEG, fv);
		tu_append(w, 1, 5, 1);
		vfs_fault_arm(fv, op, 1, KV_EIO, false);
		int queued[4];
		for (int i = 0; i < 4; i++) {
			queued[i] = append_async(w, 6 + (uint64_t)i * 2,
						 7 + (uint64_t)i * 2, &r[i]);
			assert_true(queued[i] == 0 ||
				    (i > 0 && queued[i] == KV_EFAILSTOP));
		}
		assert_int_equal(queued[0], 0);
		assert_int_equal(wal_truncate(w, 6), KV_EFAILSTOP);
		for (int i = 0; i < 4; i++) {
			assert_int_equal(r[i].called, queued[i] == 0);
			if (queued[i] == 0)
				assert_true(r[i].status < 0);
		}
		assert_int_equal(r[0].status, KV_EIO);
		expect_failstop(w, 14);
		assert_non_null(strstr(wal_errmsg(w), tu_last_segment(dir)));
		assert_int_equal(wal_close(w), KV_EIO);
		/* What reached the disk is still a valid log. */
		vfs_fault_disarm(fv);
		w = tu_open(dir, SEG, NULL);
		struct wal_info info;
		wal_info(w, &info);
		assert_true(info.last_index >= 5);
		if (op == VFS_OP_PWRITE)
			assert_int_equal(info.last_index, 5);
		tu_check(w, 1, info.last_index);
		assert_int_equal(wal_close(w), 0);
	}
	vfs_destroy(fv);
}

/* Failed truncate, rename (meta), unlink (drop prefix), segment creation
 * and directory fsync are all fail-stop. */
static void test_fault_control(void **state)
{
	const char *dir = *state;
	struct vfs *fv = vfs_fault_new(vfs_posix());
	struct {
		enum vfs_op op;
		int kind;
	} cases[] = {
		{ VFS_OP_TRUNCATE, 0 }, { VFS_OP_RENAME, 1 },
		{ VFS_OP_UNLINK, 2 },   { VFS_OP_RENAME, 3 },
		{ VFS_OP_SYNC_DIR, 3 }, { VFS_OP_ALLOCATE, 3 },
		{ VFS_OP_SYNC_DIR, 1 },
	};

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct wal *w;
		struct wal_info info;
		int rv;
		tu_rmdir(dir);
		assert_int_equal(mkdir(dir, 0755), 0);
		vfs_fault_disarm(fv);
		w = tu_open(dir, 2048, fv);
		for (uint64_t i = 1; i <= 60; i += 5)
			tu_append(w, i, i + 4, 1);
		assert_int_equal(wal_set_term_vote(w, 3, 1), 0);
		vfs_fault_arm(fv, cases[c].op, 1, KV_EIO, false);
		switch (cases[c].kind) {
		case 0:
			rv = wal_truncate(w, 30);
			break;
		case 1:
			rv = wal_set_term_vote(w, 4, 2);
			break;
		case 2:
			rv = wal_drop_prefix(w, 40);
			break;
		default: {
			/* Rollover: a batch bigger than the segment's room. */
			static unsigned char big[1800];
			struct wal_entry e = { .index = 61, .term = 1,
					       .type = 1, .payload = big,
					       .len = sizeof(big) };
			rv = wal_append_sync(w, &e, 1);
			break;
		}
		}
		if (rv != KV_EIO)
			fail_msg("case %zu: got %d", c, rv);
		expect_failstop(w, 61);
		assert_int_equal(wal_close(w), KV_EIO);
		vfs_fault_disarm(fv);
		w = tu_open(dir, 2048, NULL);
		wal_info(w, &info);
		/* A failed dir fsync after the rename may still persist. */
		assert_true(info.term == 3 ||
			    (cases[c].op == VFS_OP_SYNC_DIR && info.term == 4));
		assert_true(info.last_index == 60 ||
			    (cases[c].kind == 0 && info.last_index >= 29));
		tu_check(w, info.first_index, info.last_index);
		assert_int_equal(wal_close(w), 0);
	}
	vfs_destroy(fv);
}

/* Crash in the middle of the last write (the fault vfs tears the pwrite
 * after `keep` bytes and freezes the disk): reopening yields the synced
 * prefix plus exactly the whole records that reached the disk. */
static void test_crash_torn_write(void **state)
{
	const char *dir = *state;
	struct vfs *fv = vfs_fault_new(vfs_posix());
	uint64_t pre = rec_off(SYNCED + 1), post = rec_off(LAST + 1);

	vfs_fault_skip_sync(fv, true);

	for (uint64_t keep = 0; keep <= post - pre; keep += 5) {
		struct status_req r;
		struct wal *w;
		uint64_t last = SYNCED;
		tu_rmdir(dir);
		assert_int_equal(mkdir(dir, 0755), 0);
		vfs_fault_disarm(fv);
		w = tu_open(dir, SEG, fv);
		tu_append(w, 1, 10, 1);
		tu_append(w, 11, SYNCED, 1);
		vfs_fault_crash(fv, 1, (size_t)keep);
		assert_int_equal(append_async(w, SYNCED + 1, LAST, &r), 0);
		assert_int_equal(wal_close(w), KV_EIO);
		assert_int_equal(r.called, 1);
		assert_int_equal(r.status, KV_EIO);
		assert_true(vfs_fault_crashed(fv));
		for (uint64_t i = SYNCED + 1; i <= LAST; i++) {
			/* Padding is zero, as is the preallocated space. */
			if (rec_off(i) + WAL_REC_HDR_SIZE + tu_len(i) >
			    pre + keep)
				break;
			last = i;
		}
		expect_prefix(dir, last);
	}
	vfs_destroy(fv);
}

/* ---- crash at every mutating operation of a workload ----
 *
 * The workload below runs once per crash point N: the fault vfs performs
 * the first N-1 mutating operations (file creations, writes, syncs,
 * truncations, preallocations, renames, unlinks) and drops the Nth and
 * everything after it (a write keeps its first `keep` bytes). Reopening
 * must always succeed and yield either the state before the interrupted
 * call or a state it could have reached: acknowledged entries are never
 * lost, and every entry read back is one that was written. */

enum wop { W_APPEND, W_META, W_TRUNC, W_DROP, W_RESET };

struct wstep {
	enum wop op;
	uint64_t a, b, term;
};

static const struct wstep workload[] = {
	{ W_APPEND, 1, 10, 1 },	  { W_APPEND, 11, 30, 1 },
	{ W_META, 2, 1, 0 },	  { W_APPEND, 31, 45, 2 },
	{ W_TRUNC, 38, 0, 0 },	  { W_APPEND, 38, 50, 3 },
	{ W_DROP, 20, 0, 0 },	  { W_APPEND, 51, 60, 3 },
	{ W_RESET, 70, 4, 0 },	  { W_APPEND, 71, 80, 5 },
	{ W_META, 5, 2, 0 },	  { W_APPEND, 81, 84, 5 },
};
#define NSTEPS (sizeof(workload) / sizeof(workload[0]))

struct model {
	uint64_t first, last, term, vote, snap;
	uint64_t terms[128]; /* term of entry i */
};

static int run_step(struct wal *w, const struct wstep *st)
{
	switch (st->op) {
	case W_APPEND: {
		unsigned n = (unsigned)(st->b - st->a + 1);
		struct wal_entry e[32];
		static unsigned char bufs[32][256];
		for (unsigned i = 0; i < n; i++)
			tu_entry(&e[i], st->a + i, st->term, bufs[i]);
		return wal_append_sync(w, e, n);
	}
	case W_META:
		return wal_set_term_vote(w, st->a, st->b);
	case W_TRUNC:
		return wal_truncate(w, st->a);
	case W_DROP:
		return wal_drop_prefix(w, st->a);
	default:
		return wal_reset(w, st->a, st->b);
	}
}

static void model_apply(struct model *m, const struct wstep *st,
			const struct wal_info *after)
{
	switch (st->op) {
	case W_APPEND:
		for (uint64_t i = st->a; i <= st->b; i++)
			m->terms[i] = st->term;
		m->last = st->b;
		break;
	case W_META:
		m->term = st->a;
		m->vote = st->b;
		break;
	case W_TRUNC:
		m->last = st->a - 1;
		break;
	case W_DROP:
		m->first = after->first_index;
		break;
	default:
		m->first = st->a + 1;
		m->last = st->a;
		m->snap = st->a;
		break;
	}
}

/* Checks the reopened log against the model before the interrupted step
 * (step == NULL: everything was acknowledged). vfs: the disarmed fault
 * vfs, skipping syncs for speed. */
static void check_crash_state(const char *dir, const struct model *mb,
			      const struct wstep *st, unsigned long n,
			      struct vfs *vfs)
{
	struct wal_info info;
	struct wal_entry *e;
	size_t cnt;
	struct wal *w = tu_open(dir, 2048, vfs);
	enum wop op = st ? st->op : W_META;
	uint64_t lo_first = mb->first, hi_first = mb->first;
	uint64_t lo_last = mb->last, hi_last = mb->last;

	wal_info(w, &info);
	if (st && op == W_APPEND)
		hi_last = st->b;
	if (st && op == W_TRUNC)
		lo_last = st->a - 1;
	if (st && op == W_DROP)
		hi_first = st->a + 1;
	if (st && op == W_RESET && info.snap_index == st->a) {
		/* The reset reached the meta file: the log is empty. */
		lo_first = hi_first = st->a + 1;
		lo_last = hi_last = st->a;
	}
	if (info.first_index < lo_first || info.first_index > hi_first ||
	    info.last_index < lo_last || info.last_index > hi_last)
		fail_msg("crash at op %lu (step op %d): log [%" PRIu64
			 ", %" PRIu64 "], expected first in [%" PRIu64
			 ", %" PRIu64 "], last in [%" PRIu64 ", %" PRIu64
			 "]", n, (int)op, info.first_index, info.last_index,
			 lo_first, hi_first, lo_last, hi_last);
	if (!(st && op == W_META && info.term == st->a &&
	      info.vote == st->b)) {
		assert_int_equal(info.term, mb->term);
		assert_int_equal(info.vote, mb->vote);
	}
	assert_int_equal(wal_load(w, info.first_index, &e, &cnt), 0);
	for (size_t i = 0; i < cnt; i++) {
		uint64_t idx = info.first_index + i;
		uint64_t want = idx <= mb->last ? mb->terms[idx] : st->term;
		unsigned char exp[256];
		if (st && op == W_APPEND && idx >= st->a)
			want = st->term;
		assert_int_equal(e[i].index, idx);
		if (e[i].term != want)
			fail_msg("crash at op %lu: entry %" PRIu64 " term %"
				 PRIu64 ", expected %" PRIu64, n, idx,
				 e[i].term, want);
		assert_int_equal(e[i].len, tu_len(idx));
		tu_fill(idx, exp, e[i].len);
		if (e[i].len)
			assert_memory_equal(e[i].payload, exp, e[i].len);
	}
	wal_entries_free(e, cnt);
	/* Still a working log. */
	tu_append(w, info.last_index + 1, info.last_index + 1, 9);
	assert_int_equal(wal_close(w), 0);
}

static void test_crash_every_op(void **state)
{
	const char *dir = *state;
	struct vfs *fv = vfs_fault_new(vfs_posix());
	const size_t keeps[] = { 0, 45, (size_t)1 << 30 };
	unsigned long total = 0, runs = 0;

	vfs_fault_skip_sync(fv, true);
	for (unsigned long n = 1;; n++) {
		for (size_t k = 0; k < 3; k++) {
			struct model m = { .first = 1 };
			struct wal_options o = { .vfs = fv,
						 .segment_size = 2048 };
			const struct wstep *failed = NULL;
			struct wal *w = NULL;
			unsigned long before;
			size_t i;
			int rv;
			tu_rmdir(dir);
			assert_int_equal(mkdir(dir, 0755), 0);
			vfs_fault_disarm(fv);
			before = vfs_fault_mutations(fv);
			vfs_fault_crash_op(fv, n, keeps[k]);
			rv = wal_open(dir, &o, &w, NULL, 0);
			if (rv != 0) {
				/* Crashed while creating the WAL. */
				assert_true(vfs_fault_crashed(fv));
				vfs_fault_disarm(fv);
				check_crash_state(dir, &m, NULL, n, fv);
				runs++;
				continue;
			}
			for (i = 0; i < NSTEPS; i++) {
				struct wal_info after;
				if (run_step(w, &workload[i]) != 0) {
					failed = &workload[i];
					break;
				}
				wal_info(w, &after);
				model_apply(&m, &workload[i], &after);
			}
			wal_close(w);
			if (failed == NULL) {
				/* n is past the workload's last operation. */
				assert_false(vfs_fault_crashed(fv));
				total = vfs_fault_mutations(fv) - before;
				vfs_fault_disarm(fv);
				check_crash_state(dir, &m, NULL, n, fv);
				print_message("%lu crash points, %lu runs\n",
					      total, runs);
				assert_true(total > 40);
				vfs_destroy(fv);
				return;
			}
			assert_true(vfs_fault_crashed(fv));
			vfs_fault_disarm(fv);
			check_crash_state(dir, &m, failed, n, fv);
			runs++;
			if (k == 0 && i < NSTEPS &&
			    workload[i].op != W_APPEND)
				break; /* keep only matters for writes */
		}
	}
}

/* Random bit flips (1 to 8 bits) anywhere in the segment: every byte of
 * the synced batches is covered by a checksum or a zero check, so damage
 * there refuses to open; damage only in the last batch opens with at
 * least the synced prefix; damage only in the preallocated space opens
 * with everything. Whatever opens returns exactly the written entries. */
static void test_random_flips(void **state)
{
	const char *dir = *state;
	unsigned char *orig, *img;
	uint64_t pre = rec_off(SYNCED + 1), post = rec_off(LAST + 1);
	uint64_t rng = 0x9e3779b97f4a7c15ull;
	size_t len;
	char seg[300];

	write_log(dir, fast);
	snprintf(seg, sizeof(seg), "%s", tu_last_segment(dir));
	orig = tu_read(tu_path(dir, seg), &len);
	img = malloc(len);
	for (int iter = 0; iter < 300; iter++) {
		uint64_t lo = UINT64_MAX, hi = 0;
		unsigned nflips;
		memcpy(img, orig, len);
		rng = rng * 6364136223846793005ull + 1442695040888963407ull;
		nflips = 1 + (unsigned)(rng >> 61);
		/* Aim a third of the runs at each region. */
		uint64_t base = iter % 3 == 0 ? 0 : iter % 3 == 1 ? pre : post;
		uint64_t span = iter % 3 == 0 ? post : iter % 3 == 1
				? post - pre : 64;
		for (unsigned f = 0; f < nflips; f++) {
			rng = rng * 6364136223846793005ull +
			      1442695040888963407ull;
			uint64_t at = base + (rng >> 33) % span;
			img[at] ^= (unsigned char)(1u << ((rng >> 20) & 7));
			lo = at < lo ? at : lo;
			hi = at > hi ? at : hi;
		}
		if (memcmp(img, orig, len) == 0)
			continue; /* flips cancelled out */
		tu_write(tu_path(dir, seg), img, len);
		struct wal *w = NULL;
		char msg[512];
		struct wal_info info;
		int rv = wal_open(dir, NULL, &w, msg, sizeof(msg));
		if (lo < pre) {
			if (rv != KV_ECORRUPT)
				fail_msg("flip at %" PRIu64 " not detected",
					 lo);
			continue;
		}
		if (rv != 0)
			fail_msg("flips in [%" PRIu64 ", %" PRIu64 "] refused:"
				 " %s", lo, hi, msg);
		wal_info(w, &info);
		assert_true(info.last_index >= SYNCED);
		if (lo >= post)
			assert_int_equal(info.last_index, LAST);
		tu_check(w, 1, info.last_index);
		assert_int_equal(wal_close(w), 0);
		tu_write(tu_path(dir, seg), orig, len); /* undo any cut */
	}
	free(img);
	free(orig);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_cut_every_byte, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_zeroed_records, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_bitflip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_multi_segment_damage,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_fault_write_sync, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_fault_control, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_crash_torn_write, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_crash_every_op, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_random_flips, setup,
						teardown),
	};

	int rv;

	kv_log_set_level(KV_LOG_FATAL);
	fast = vfs_fault_new(vfs_posix());
	vfs_fault_skip_sync(fast, true);
	rv = cmocka_run_group_tests(tests, NULL, NULL);
	vfs_destroy(fast);
	return rv;
}

/* fuzz_wal.c — libFuzzer target for WAL recovery (storage/wal.h).
 *
 * Writes the input as a WAL directory (a meta file and one or two
 * segments) in a private temporary directory and opens it. Input layout:
 *   byte 0     flags: bit0 write a meta file, bit1 fix up the checksums
 *              (meta, segment headers and every record header/payload
 *              that fits) so the fuzzer gets past CRC32C, bit2 split the
 *              segment bytes into two segments
 *   bytes 1-2  meta length (u16le, clamped)
 *   bytes 3-4  length of the first segment when split (u16le, clamped)
 *   rest       meta bytes, then segment bytes
 * A segment is named after the first index in its header (bytes 8..15;
 * index 1 when shorter), so the fuzzer controls names too.
 * Invariants (abort on violation): wal_open returns 0 or KV_ECORRUPT;
 * after 0 the entries iterate with consecutive indexes from first_index
 * to last_index, wal_load agrees, an append at wal_next_index succeeds,
 * and reopening succeeds with no torn tail and the appended entry last.
 * ASan/UBSan/LeakSanitizer check memory.
 *
 * tests/data/wal/crash-wal-open-snap-index-max reproduces a fixed defect:
 * a meta file with snapshot index 2^64-1 opened with first_index wrapped
 * to 0; wal_open now refuses it as corrupt. */
#include <dirent.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/log.h"
#include "kv/errors.h"
#include "storage/wal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[256];

static void fail(const char *why, const char *detail)
{
	fprintf(stderr, "fuzz_wal: %s: %s\n", why, detail ? detail : "");
	abort();
}

static uint64_t ld64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint32_t ld32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static void st32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void clear_dir(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[512];

	if (!d)
		fail("opendir", dir);
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		unlink(path);
	}
	closedir(d);
}

static void remove_dir(void)
{
	clear_dir();
	rmdir(dir);
}

static void put_file(const char *name, const unsigned char *p, size_t n)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0)
		fail("cannot write", path);
}

static void fix_segment(unsigned char *p, size_t n)
{
	size_t off = WAL_SEG_HDR_SIZE;

	if (n < WAL_SEG_HDR_SIZE)
		return;
	st32(p + 28, kv_crc32c(0, p, 28));
	while (off + WAL_REC_HDR_SIZE <= n) {
		unsigned char *r = p + off;
		uint64_t len = ld32(r + 32);
		uint64_t padded = (len + 7) & ~(uint64_t)7;

		if (off + WAL_REC_HDR_SIZE + len <= n)
			st32(r + 4, kv_crc32c(0, r + WAL_REC_HDR_SIZE,
					      (size_t)len));
		st32(r, kv_crc32c(0, r + 4, WAL_REC_HDR_SIZE - 4));
		if (padded > n - off - WAL_REC_HDR_SIZE)
			break;
		off += WAL_REC_HDR_SIZE + padded;
	}
}

static void put_segment(unsigned char *p, size_t n, bool fix)
{
	char name[32];

	if (fix)
		fix_segment(p, n);
	snprintf(name, sizeof(name), "%016" PRIx64 ".wal",
		 n >= 16 ? ld64(p + 8) : 1);
	put_file(name, p, n);
}

static const struct wal_options opts = {
	.vfs = NULL,
	.segment_size = 64 * 1024,
	.sync = WAL_SYNC_NONE,
};

static void check_open(struct wal *w)
{
	struct wal_info info, again;
	struct wal_iter *it;
	struct wal_entry ent, *ents = NULL, add;
	uint64_t expect, count = 0;
	size_t n = 0;
	unsigned long sum = 0;
	char err[512];
	int rc;

	wal_info(w, &info);
	if (info.last_index + 1 < info.first_index)
		fail("last_index + 1 < first_index", NULL);
	if (wal_next_index(w) != info.last_index + 1)
		fail("next index is not last + 1", NULL);
	rc = wal_iter_open(w, info.first_index, &it);
	if (rc != 0)
		fail("wal_iter_open(first_index) failed", kv_strerror(rc));
	expect = info.first_index;
	while ((rc = wal_iter_next(it, &ent)) == 1) {
		if (ent.index != expect)
			fail("entries out of order", NULL);
		for (size_t i = 0; i < ent.len; i++)
			sum += ((const unsigned char *)ent.payload)[i];
		expect++;
		count++;
	}
	wal_iter_close(it);
	if (rc != 0 && rc != KV_ECORRUPT)
		fail("wal_iter_next failed", kv_strerror(rc));
	if (rc == 0 && expect != info.last_index + 1)
		fail("iteration ended before last_index", NULL);
	if (rc == 0) {
		rc = wal_load(w, info.first_index, &ents, &n);
		if (rc != 0 || n != count)
			fail("wal_load disagrees with the iterator",
			     kv_strerror(rc));
		wal_entries_free(ents, n);
	}
	(void)sum;
	add.index = wal_next_index(w);
	add.term = info.term ? info.term : 1;
	add.type = WAL_ENTRY_COMMAND;
	add.payload = "x";
	add.len = 1;
	rc = wal_append_sync(w, &add, 1);
	if (rc != 0 && rc != KV_ECORRUPT)
		fail("append after open failed", kv_strerror(rc));
	if (wal_close(w) != 0 && rc == 0)
		fail("wal_close failed", NULL);
	if (rc != 0)
		return;
	rc = wal_open(dir, &opts, &w, err, sizeof(err));
	if (rc != 0)
		fail("reopen after a clean close failed", err);
	wal_info(w, &again);
	if (again.torn_at != 0 || again.last_index != add.index)
		fail("reopen lost the appended entry or found a torn tail",
		     NULL);
	wal_close(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char *buf;
	size_t mlen, s1len, rest;
	struct wal *w = NULL;
	char err[512];
	int rc;

	if (!dir[0]) {
		const char *base = getenv("TMPDIR");

		kv_log_set_level(KV_LOG_ERROR);
		atexit(remove_dir);
		snprintf(dir, sizeof(dir), "%s/fuzz_wal.XXXXXX",
			 access("/dev/shm", W_OK) == 0 ? "/dev/shm"
						       : base ? base : "/tmp");
		if (!mkdtemp(dir))
			fail("mkdtemp", dir);
	}
	if (size < 5)
		return 0;
	clear_dir();
	buf = malloc(size);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	rest = size - 5;
	mlen = (size_t)(buf[1] | buf[2] << 8);
	if (mlen > rest)
		mlen = rest;
	if (buf[0] & 1) {
		if ((buf[0] & 2) && mlen >= WAL_META_SIZE)
			st32(buf + 5 + 52, kv_crc32c(0, buf + 5, 52));
		put_file("meta", buf + 5, mlen);
	}
	rest -= mlen;
	s1len = rest;
	if (buf[0] & 4) {
		s1len = (size_t)(buf[3] | buf[4] << 8);
		if (s1len > rest)
			s1len = rest;
	}
	if (s1len > 0)
		put_segment(buf + 5 + mlen, s1len, buf[0] & 2);
	if (buf[0] & 4)
		put_segment(buf + 5 + mlen + s1len, rest - s1len, buf[0] & 2);
	free(buf);

	rc = wal_open(dir, &opts, &w, err, sizeof(err));
	if (rc == 0)
		check_open(w);
	else if (rc != KV_ECORRUPT)
		fail("wal_open returned neither 0 nor KV_ECORRUPT", err);
	return 0;
}

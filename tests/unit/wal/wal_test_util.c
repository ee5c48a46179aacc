/* Helpers shared by the WAL tests. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kv/errors.h"
#include "wal_test_util.h"

char *tu_mkdtemp(void)
{
	const char *t = getenv("TMPDIR");
	char buf[512];
	char *p;

	snprintf(buf, sizeof(buf), "%s/kvwal-XXXXXX", t && *t ? t : "/tmp");
	p = mkdtemp(buf);
	assert_non_null(p);
	return strdup(p);
}

void tu_rmdir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		unlink(tu_path(dir, de->d_name));
	}
	closedir(d);
	rmdir(dir);
}

const char *tu_path(const char *dir, const char *name)
{
	static char buf[1024];

	snprintf(buf, sizeof(buf), "%s/%s", dir, name);
	return buf;
}

size_t tu_len(uint64_t index)
{
	return (size_t)((index * 37) % 203); /* 0..202, odd sizes too */
}

void tu_fill(uint64_t index, unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (unsigned char)(index * 131 + i * 7);
}

void tu_entry(struct wal_entry *e, uint64_t index, uint64_t term,
	      unsigned char *buf)
{
	e->index = index;
	e->term = term;
	e->type = (uint8_t)(1 + index % 3);
	e->len = tu_len(index);
	tu_fill(index, buf, e->len);
	e->payload = e->len ? buf : NULL;
}

void tu_append(struct wal *w, uint64_t from, uint64_t to, uint64_t term)
{
	unsigned n = (unsigned)(to - from + 1);
	struct wal_entry *e = calloc(n, sizeof(*e));
	unsigned char *bufs = malloc((size_t)n * 256);

	assert_non_null(e);
	assert_non_null(bufs);
	for (unsigned i = 0; i < n; i++)
		tu_entry(&e[i], from + i, term, bufs + (size_t)i * 256);
	assert_int_equal(wal_append_sync(w, e, n), 0);
	free(bufs);
	free(e);
}

void tu_check(struct wal *w, uint64_t from, uint64_t to)
{
	struct wal_entry *e;
	unsigned char exp[256];
	size_t n;

	assert_int_equal(wal_load(w, from, &e, &n), 0);
	assert_int_equal(n, to + 1 - from);
	for (size_t i = 0; i < n; i++) {
		uint64_t idx = from + i;
		assert_int_equal(e[i].index, idx);
		assert_int_equal(e[i].type, 1 + idx % 3);
		assert_int_equal(e[i].len, tu_len(idx));
		tu_fill(idx, exp, e[i].len);
		if (e[i].len)
			assert_memory_equal(e[i].payload, exp, e[i].len);
	}
	wal_entries_free(e, n);
}

unsigned char *tu_read(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *p;
	long n;

	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	p = malloc((size_t)n + 1);
	assert_non_null(p);
	assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return p;
}

void tu_write(const char *path, const unsigned char *p, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(p, 1, len, f), len);
	fclose(f);
}

void tu_copy_dir(const char *src, const char *dst)
{
	DIR *d = opendir(src);
	struct dirent *de;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		char from[1024];
		unsigned char *p;
		size_t n;
		if (de->d_name[0] == '.')
			continue;
		snprintf(from, sizeof(from), "%s/%s", src, de->d_name);
		p = tu_read(from, &n);
		tu_write(tu_path(dst, de->d_name), p, n);
		free(p);
	}
	closedir(d);
}

const char *tu_last_segment(const char *dir)
{
	static char best[300];
	DIR *d = opendir(dir);
	struct dirent *de;
	uint64_t first, max = 0;
	bool found = false;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		if (wal_seg_name_parse(de->d_name, &first) &&
		    (!found || first > max)) {
			max = first;
			found = true;
			snprintf(best, sizeof(best), "%s", de->d_name);
		}
	}
	closedir(d);
	assert_true(found);
	return best;
}

size_t tu_nsegments(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	uint64_t first;
	size_t n = 0;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		n += wal_seg_name_parse(de->d_name, &first);
	closedir(d);
	return n;
}

struct wal *tu_open(const char *dir, uint64_t seg_size, struct vfs *vfs)
{
	struct wal_options o = { .vfs = vfs, .segment_size = seg_size };
	struct wal *w = NULL;
	char msg[512] = "";
	int rv = wal_open(dir, &o, &w, msg, sizeof(msg));

	if (rv != 0)
		fail_msg("wal_open(%s): %s: %s", dir, kv_errname(rv), msg);
	return w;
}

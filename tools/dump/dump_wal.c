/* kvd-dump wal DIR — print and verify a WAL directory, read-only.
 *
 * Applies the same rules as wal_open without changing anything: a torn
 * tail of the last segment is reported (wal_open would cut it) and is not
 * an error; any other bad record, a gap between segments, a bad segment
 * header or a bad meta file is corruption (exit status 1). */
#include <dirent.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/crc32c.h"
#include "storage/wal.h"

#include "dump.h"

struct ctx {
	const char *dir;
	bool quiet;
	int corrupt;
	struct wal_meta meta;
	bool have_meta;
};

static unsigned char *read_file(const char *path, uint64_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *p = NULL;
	long n;

	if (f == NULL)
		return NULL;
	if (fseeko(f, 0, SEEK_END) != 0 || (n = (long)ftello(f)) < 0)
		goto out;
	fseeko(f, 0, SEEK_SET);
	p = malloc(n ? (size_t)n : 1);
	if (p == NULL)
		goto out;
	if (fread(p, 1, (size_t)n, f) != (size_t)n) {
		free(p);
		p = NULL;
		goto out;
	}
	*len = (uint64_t)n;
out:
	fclose(f);
	return p;
}

static bool zero(const unsigned char *p, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static void corrupt(struct ctx *c, const char *path, uint64_t off,
		    const char *what)
{
	fprintf(stderr, "CORRUPT %s: offset %" PRIu64 ": %s\n", path, off,
		what);
	c->corrupt = 1;
}

static const char *type_name(uint8_t t)
{
	switch (t) {
	case WAL_ENTRY_COMMAND:
		return "command";
	case WAL_ENTRY_BARRIER:
		return "barrier";
	case WAL_ENTRY_CHANGE:
		return "change";
	default:
		return "other";
	}
}

static int dump_meta(struct ctx *c)
{
	char path[4096];
	unsigned char *p;
	uint64_t len;

	snprintf(path, sizeof(path), "%s/meta", c->dir);
	p = read_file(path, &len);
	if (p == NULL) {
		printf("meta: missing\n");
		return 0;
	}
	if (len != WAL_META_SIZE || wal_meta_decode(p, &c->meta) != 0) {
		corrupt(c, path, 0, "bad meta file (size, magic or checksum)");
	} else {
		c->have_meta = true;
		printf("meta: term=%" PRIu64 " vote=%" PRIu64 " gen=%" PRIu64
		       " snap_index=%" PRIu64 " snap_term=%" PRIu64
		       " crc=ok\n", c->meta.term, c->meta.vote, c->meta.gen,
		       c->meta.snap_index, c->meta.snap_term);
	}
	free(p);
	return 0;
}

/* Dumps one segment; returns the number of entries, sets *ok. */
static uint64_t dump_segment(struct ctx *c, const char *name, uint64_t first,
			     bool last, bool *stale)
{
	char path[4096];
	struct wal_seg_hdr sh;
	struct wal_rec_hdr h;
	unsigned char *p;
	uint64_t len, off = WAL_SEG_HDR_SIZE, expect = first;
	const char *why = NULL;

	*stale = false;
	snprintf(path, sizeof(path), "%s/%s", c->dir, name);
	p = read_file(path, &len);
	if (p == NULL) {
		fprintf(stderr, "kvd-dump: cannot read %s\n", path);
		c->corrupt = c->corrupt ? c->corrupt : 2;
		return 0;
	}
	if (len < WAL_SEG_HDR_SIZE || wal_seg_hdr_decode(p, &sh) != 0) {
		corrupt(c, path, 0, "bad segment header");
		goto out;
	}
	if (sh.first_index != first) {
		corrupt(c, path, 8, "first index in header differs from name");
		goto out;
	}
	printf("segment %s: first=%" PRIu64 " gen=%" PRIu64 " size=%" PRIu64
	       "\n", name, first, sh.gen, len);
	if (c->have_meta && sh.gen < c->meta.gen) {
		printf("  leftover of an interrupted reset (older generation;"
		       " removed on open)\n");
		*stale = true;
		goto out;
	}
	if (c->have_meta && sh.gen > c->meta.gen) {
		corrupt(c, path, 16, "segment generation newer than meta");
		goto out;
	}
	while (off < len) {
		if (len - off < WAL_REC_HDR_SIZE ||
		    zero(p + off, WAL_REC_HDR_SIZE)) {
			if (zero(p + off, len - off)) {
				printf("  %" PRIu64 " bytes of preallocated "
				       "space from offset %" PRIu64 "\n",
				       len - off, off);
				break;
			}
			why = "zeroed or short record header before data";
			goto bad;
		}
		if (wal_rec_hdr_decode(p + off, &h) != 0) {
			why = "bad record header checksum";
			goto bad;
		}
		if (h.kind != WAL_REC_KIND_ENTRY || h.len > WAL_MAX_PAYLOAD) {
			why = "bad record kind or length";
			goto bad;
		}
		if (h.index != expect) {
			corrupt(c, path, off, "index gap inside a segment");
			goto out;
		}
		if (off + wal_rec_size(h.len) > len) {
			why = "record extends past end of file";
			goto bad;
		}
		if (kv_crc32c(0, p + off + WAL_REC_HDR_SIZE, h.len) != h.dcrc) {
			why = "bad payload checksum";
			goto bad;
		}
		if (!zero(p + off + WAL_REC_HDR_SIZE + h.len,
			  wal_rec_size(h.len) - WAL_REC_HDR_SIZE - h.len)) {
			why = "non-zero record padding";
			goto bad;
		}
		if (!c->quiet)
			printf("  offset=%" PRIu64 " index=%" PRIu64
			       " term=%" PRIu64 " type=%u(%s) size=%" PRIu32
			       " batch=%" PRIu64 " crc=ok\n", off, h.index,
			       h.term, h.type, type_name(h.type), h.len,
			       h.batch_first);
		off += wal_rec_size(h.len);
		expect++;
	}
	goto out;
bad:
	if (last) {
		/* Torn tail unless a later write follows. */
		for (uint64_t q = off + 8; q + WAL_REC_HDR_SIZE <= len;
		     q += 8) {
			struct wal_rec_hdr l;
			if (wal_rec_hdr_decode(p + q, &l) != 0 ||
			    l.kind != WAL_REC_KIND_ENTRY)
				continue;
			if (l.batch_first > expect || l.index < expect) {
				char msg[256];
				snprintf(msg, sizeof(msg), "%s (entry %" PRIu64
					 "), followed by a later write at "
					 "offset %" PRIu64, why, expect, q);
				corrupt(c, path, off, msg);
				goto out;
			}
		}
		printf("  TORN TAIL at offset %" PRIu64 " (%s): the last write "
		       "was interrupted; wal_open cuts it here\n", off, why);
		goto out;
	}
	{
		char msg[256];
		snprintf(msg, sizeof(msg), "%s (entry %" PRIu64 ")", why,
			 expect);
		corrupt(c, path, off, msg);
	}
out:
	free(p);
	return expect - first;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int dump_wal_main(int argc, char **argv)
{
	struct ctx c = { 0 };
	uint64_t *firsts = NULL, prev_end = 0, total = 0;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "-q") == 0)
			c.quiet = true;
		else if (c.dir == NULL)
			c.dir = argv[i];
		else
			c.dir = NULL, i = argc;
	}
	if (c.dir == NULL) {
		fprintf(stderr, "usage: kvd-dump wal [-q] DIR\n");
		return 2;
	}
	d = opendir(c.dir);
	if (d == NULL) {
		perror(c.dir);
		return 2;
	}
	while ((de = readdir(d)) != NULL) {
		uint64_t f;
		if (!wal_seg_name_parse(de->d_name, &f))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			firsts = realloc(firsts, cap * sizeof(*firsts));
			if (firsts == NULL) {
				closedir(d);
				return 2;
			}
		}
		firsts[n++] = f;
	}
	closedir(d);
	qsort(firsts, n, sizeof(*firsts), cmp_u64);

	printf("wal %s\n", c.dir);
	dump_meta(&c);
	if (!c.have_meta && n > 0 && !c.corrupt) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/meta", c.dir);
		corrupt(&c, path, 0, "meta file missing but segments exist");
	}
	bool seen = false;
	for (size_t i = 0; i < n; i++) {
		char name[32];
		bool stale;
		uint64_t cnt;
		snprintf(name, sizeof(name), "%016" PRIx64 ".wal", firsts[i]);
		if (seen && firsts[i] != prev_end) {
			char path[4096], msg[128];
			snprintf(path, sizeof(path), "%s/%s", c.dir, name);
			snprintf(msg, sizeof(msg), "gap in indexes: expected "
				 "the segment to start at %" PRIu64, prev_end);
			corrupt(&c, path, 0, msg);
		}
		cnt = dump_segment(&c, name, firsts[i], i + 1 == n, &stale);
		if (stale)
			continue;
		seen = true;
		prev_end = firsts[i] + cnt;
		total += cnt;
	}
	printf("%zu segments, %" PRIu64 " entries", n, total);
	if (total > 0)
		printf(" (last index %" PRIu64 ")", prev_end - 1);
	printf("\n");
	free(firsts);
	if (c.corrupt == 1)
		fprintf(stderr, "kvd-dump: the WAL is corrupt (see above); "
				"kvd will refuse to open it\n");
	return c.corrupt;
}

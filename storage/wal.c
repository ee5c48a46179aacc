/* storage/wal.c — the raft log (see storage/wal.h for the contract).
 *
 * On-disk format (all integers little-endian):
 *   segment header (32 B): magic "KVDWALS1", u64 first index, u64
 *     generation, u32 zero, u32 crc32c(bytes 0..27)
 *   record (40 B header + payload padded with zeros to 8 B):
 *     u32 hcrc = crc32c(bytes 4..39), u32 dcrc = crc32c(payload),
 *     u64 index, u64 term, u64 batch_first (index of the first entry of
 *     the write that carried this record), u32 payload length, u8 kind
 *     (1 = entry), u8 entry type, u16 zero
 *   meta (56 B): magic "KVDWALM1", u64 term, vote, generation, snapshot
 *     index, snapshot term, u32 zero, u32 crc32c(bytes 0..51)
 *
 * The header checksum is separate from the payload's so a torn or flipped
 * length is detected before it is trusted. batch_first tells a torn last
 * write (every valid record after the bad one belongs to the same write)
 * from corruption of an earlier write (a later write follows it).
 * The generation is bumped by wal_reset before it unlinks the segments;
 * segments of an older generation found on open are leftovers of an
 * interrupted reset and are removed.
 *
 * Locks: mu guards the request queue, next_index, the sticky error and
 * errmsg; lock (rwlock) guards the segment table, first/last index, meta
 * and stats. Lock order: lock before mu; nobody waits for lock while
 * holding mu. Only the writer thread changes files, segments and meta; it takes
 * lock for writing only to change the table, readers (iterators) take it
 * for reading around their preads, which only touch durable records. */
#include <assert.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "kv/errors.h"
#include "storage/wal.h"

#define MOD "wal"
#define READ_CHUNK (1u << 20)
#define MAX_BATCH_BYTES (16u << 20)

enum op_kind {
	OP_APPEND = 0,
	OP_TRUNCATE,
	OP_DROP,
	OP_RESET,
	OP_META,
};

struct seg {
	uint64_t first;
	uint64_t gen;
	char *path;
	struct vfs_file *f;
	uint64_t end;   /* offset after the last record */
	uint64_t *offs; /* offs[i]: offset of entry first + i */
	size_t n, cap;
};

struct wal {
	struct vfs *vfs;
	char *dir;
	char *meta_path;
	char *meta_tmp;
	char *seg_tmp;
	struct vfs_file *lockf; /* dir/LOCK, flock'ed while open */
	uint64_t seg_size;
	enum wal_sync_mode sync;

	pthread_mutex_t mu;
	pthread_cond_t cv_work;
	pthread_cond_t cv_done;
	struct wal_append_req *qhead, *qtail;
	uint64_t next_index;
	int err;
	bool closing;
	char errmsg[512];

	pthread_rwlock_t lock;
	uint64_t epoch; /* bumped when bytes at existing offsets may change */
	struct seg **segs;
	size_t nsegs, segcap;
	uint64_t first_index, last_index;
	struct wal_meta meta;
	struct wal_stats stats;
	uint64_t torn_at;

	pthread_t thread;
	bool thread_started;
	struct kv_buf wbuf;
};

/* ---------------------------------------------------------------- format */

uint64_t wal_rec_size(uint64_t len)
{
	return WAL_REC_HDR_SIZE + ((len + 7) & ~(uint64_t)7);
}

static void seg_hdr_encode(unsigned char *p, uint64_t first, uint64_t gen)
{
	memcpy(p, WAL_SEG_MAGIC, 8);
	kv_store_u64le(p + 8, first);
	kv_store_u64le(p + 16, gen);
	kv_store_u32le(p + 24, 0);
	kv_store_u32le(p + 28, kv_crc32c(0, p, 28));
}

int wal_seg_hdr_decode(const unsigned char *p, struct wal_seg_hdr *h)
{
	if (memcmp(p, WAL_SEG_MAGIC, 8) != 0 || kv_load_u32le(p + 24) != 0 ||
	    kv_load_u32le(p + 28) != kv_crc32c(0, p, 28))
		return KV_ECORRUPT;
	h->first_index = kv_load_u64le(p + 8);
	h->gen = kv_load_u64le(p + 16);
	return 0;
}

static void meta_encode(unsigned char *p, const struct wal_meta *m)
{
	memcpy(p, WAL_META_MAGIC, 8);
	kv_store_u64le(p + 8, m->term);
	kv_store_u64le(p + 16, m->vote);
	kv_store_u64le(p + 24, m->gen);
	kv_store_u64le(p + 32, m->snap_index);
	kv_store_u64le(p + 40, m->snap_term);
	kv_store_u32le(p + 48, 0);
	kv_store_u32le(p + 52, kv_crc32c(0, p, 52));
}

int wal_meta_decode(const unsigned char *p, struct wal_meta *m)
{
	if (memcmp(p, WAL_META_MAGIC, 8) != 0 || kv_load_u32le(p + 48) != 0 ||
	    kv_load_u32le(p + 52) != kv_crc32c(0, p, 52))
		return KV_ECORRUPT;
	m->term = kv_load_u64le(p + 8);
	m->vote = kv_load_u64le(p + 16);
	m->gen = kv_load_u64le(p + 24);
	m->snap_index = kv_load_u64le(p + 32);
	m->snap_term = kv_load_u64le(p + 40);
	return 0;
}

int wal_rec_hdr_decode(const unsigned char *p, struct wal_rec_hdr *h)
{
	if (kv_load_u32le(p) != kv_crc32c(0, p + 4, WAL_REC_HDR_SIZE - 4) ||
	    p[38] != 0 || p[39] != 0)
		return KV_ECORRUPT;
	h->dcrc = kv_load_u32le(p + 4);
	h->index = kv_load_u64le(p + 8);
	h->term = kv_load_u64le(p + 16);
	h->batch_first = kv_load_u64le(p + 24);
	h->len = kv_load_u32le(p + 32);
	h->kind = p[36];
	h->type = p[37];
	return 0;
}

/* Sets batch_first and the header checksum of an encoded record. */
static void rec_seal(unsigned char *p, uint64_t batch_first)
{
	kv_store_u64le(p + 24, batch_first);
	kv_store_u32le(p, kv_crc32c(0, p + 4, WAL_REC_HDR_SIZE - 4));
}

bool wal_seg_name_parse(const char *name, uint64_t *first_index)
{
	uint64_t v = 0;

	if (strlen(name) != 20 || strcmp(name + 16, ".wal") != 0)
		return false;
	for (int i = 0; i < 16; i++) {
		char c = name[i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else
			return false;
		v = v << 4 | d;
	}
	*first_index = v;
	return true;
}

static bool all_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0)
			return false;
	return true;
}

/* --------------------------------------------------------------- helpers */

static char *path_join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	char *p = malloc(a + b + 2);

	if (p == NULL)
		return NULL;
	memcpy(p, dir, a);
	p[a] = '/';
	memcpy(p + a + 1, name, b + 1);
	return p;
}

static char *seg_path(const char *dir, uint64_t first)
{
	char name[32];

	snprintf(name, sizeof(name), "%016" PRIx64 ".wal", first);
	return path_join(dir, name);
}

/* Records context for the last error; caller holds mu or is single. */
static void set_msg(struct wal *w, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void set_msg(struct wal *w, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(w->errmsg, sizeof(w->errmsg), fmt, ap);
	va_end(ap);
}

/* Enters the fail-stop state (writer thread). Returns rv. */
static int fail(struct wal *w, int rv, const char *what, const char *path,
		uint64_t off)
{
	pthread_mutex_lock(&w->mu);
	if (w->err == 0) {
		w->err = rv;
		set_msg(w, "%s %s at offset %" PRIu64 " failed: %s (fail-stop)",
			what, path, off, kv_strerror(rv));
		KV_ERROR(MOD, "fail-stop", "op=%s file=%s offset=%" PRIu64
			 " err=%s", what, path, off, kv_errname(rv));
	}
	pthread_mutex_unlock(&w->mu);
	return rv;
}

static void seg_free(struct wal *w, struct seg *s)
{
	if (s == NULL)
		return;
	if (s->f != NULL)
		w->vfs->close(w->vfs, s->f);
	free(s->path);
	free(s->offs);
	free(s);
}

static int seg_push_off(struct seg *s, uint64_t off)
{
	if (s->n == s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 256;
		uint64_t *v = realloc(s->offs, ncap * sizeof(*v));
		if (v == NULL)
			return KV_ENOMEM;
		s->offs = v;
		s->cap = ncap;
	}
	s->offs[s->n++] = off;
	return 0;
}

static int segs_push(struct wal *w, struct seg *s)
{
	if (w->nsegs == w->segcap) {
		size_t ncap = w->segcap ? w->segcap * 2 : 8;
		struct seg **v = realloc(w->segs, ncap * sizeof(*v));
		if (v == NULL)
			return KV_ENOMEM;
		w->segs = v;
		w->segcap = ncap;
	}
	w->segs[w->nsegs++] = s;
	return 0;
}

/* Writes a whole small file durably: temp, fsync, rename, fsync dir. */
static int write_file_atomic(struct wal *w, const char *tmp, const char *path,
			     const void *buf, size_t len, const char **what)
{
	struct vfs_file *f;
	int rv;

	*what = "create";
	rv = w->vfs->open(w->vfs, tmp, VFS_RDWR | VFS_CREATE | VFS_TRUNC, &f);
	if (rv != 0)
		return rv;
	*what = "write";
	rv = w->vfs->pwrite(w->vfs, f, buf, len, 0);
	if (rv == 0) {
		*what = "fsync";
		rv = w->vfs->sync(w->vfs, f, false);
	}
	w->vfs->close(w->vfs, f);
	if (rv != 0)
		return rv;
	*what = "rename";
	rv = w->vfs->rename(w->vfs, tmp, path);
	if (rv != 0)
		return rv;
	*what = "fsync dir";
	return w->vfs->sync_dir(w->vfs, w->dir);
}

static int meta_write(struct wal *w, const struct wal_meta *m)
{
	unsigned char buf[WAL_META_SIZE];
	const char *what;
	int rv;

	meta_encode(buf, m);
	rv = write_file_atomic(w, w->meta_tmp, w->meta_path, buf, sizeof(buf),
			       &what);
	if (rv != 0)
		return fail(w, rv, what, w->meta_path, 0);
	return 0;
}

/* Creates a preallocated, durable, empty segment (writer thread). */
static int seg_create(struct wal *w, uint64_t first, struct seg **out)
{
	unsigned char hdr[WAL_SEG_HDR_SIZE];
	struct seg *s;
	const char *what = "create";
	int rv;

	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return fail(w, KV_ENOMEM, "allocate segment", w->seg_tmp, 0);
	s->first = first;
	s->gen = w->meta.gen;
	s->end = WAL_SEG_HDR_SIZE;
	s->path = seg_path(w->dir, first);
	if (s->path == NULL) {
		rv = KV_ENOMEM;
		goto err_after_alloc;
	}
	rv = w->vfs->open(w->vfs, w->seg_tmp,
			  VFS_RDWR | VFS_CREATE | VFS_TRUNC, &s->f);
	if (rv != 0)
		goto err_after_alloc;
	seg_hdr_encode(hdr, first, s->gen);
	what = "write";
	rv = w->vfs->pwrite(w->vfs, s->f, hdr, sizeof(hdr), 0);
	if (rv != 0)
		goto err_after_alloc;
	what = "preallocate";
	rv = w->vfs->allocate(w->vfs, s->f, 0, w->seg_size);
	if (rv != 0 && rv != KV_EUNSUPP)
		goto err_after_alloc;
	what = "fsync";
	rv = w->vfs->sync(w->vfs, s->f, false);
	if (rv != 0)
		goto err_after_alloc;
	what = "rename";
	rv = w->vfs->rename(w->vfs, w->seg_tmp, s->path);
	if (rv != 0)
		goto err_after_alloc;
	what = "fsync dir";
	rv = w->vfs->sync_dir(w->vfs, w->dir);
	if (rv != 0)
		goto err_after_alloc;
	*out = s;
	return 0;

err_after_alloc:
	fail(w, rv, what, s->path ? s->path : w->seg_tmp, 0);
	seg_free(w, s);
	return rv;
}

#ifndef NDEBUG
/* The segment table's invariants (caller holds lock or is single);
 * called from assert() only. */
static bool invariants_ok(const struct wal *w)
{
	if (w->nsegs == 0)
		return w->last_index + 1 == w->first_index;
	if (w->first_index != w->segs[0]->first)
		return false;
	for (size_t i = 0; i < w->nsegs; i++) {
		const struct seg *s = w->segs[i];
		if (i + 1 < w->nsegs && s->first + s->n != w->segs[i + 1]->first)
			return false;
		for (size_t k = 0; k < s->n; k++)
			if (s->offs[k] < WAL_SEG_HDR_SIZE ||
			    (k > 0 && s->offs[k] <= s->offs[k - 1]) ||
			    s->offs[k] >= s->end)
				return false;
	}
	const struct seg *l = w->segs[w->nsegs - 1];
	return w->last_index + 1 == l->first + l->n;
}
#endif

/* ---------------------------------------------------------------- writer */

/* Writes one batch of append requests (writer thread). */
static int write_batch(struct wal *w, struct wal_append_req *head,
		       struct wal_append_req *stop)
{
	struct wal_append_req *r;
	struct seg *s = w->nsegs ? w->segs[w->nsegs - 1] : NULL;
	uint64_t total = 0, first = head->first_index, n = 0;
	uint64_t off;
	int rv;

	for (r = head; r != stop; r = r->next) {
		total += r->len;
		n += r->n;
	}
	if (s != NULL) {
		assert(s->n > 0 || s->first == first);
		assert(s->first + s->n == first);
	}
	if (s == NULL || (s->n > 0 && s->end + total > w->seg_size)) {
		struct seg *ns = NULL;
		rv = seg_create(w, first, &ns);
		if (rv != 0)
			return rv;
		pthread_rwlock_wrlock(&w->lock);
		rv = segs_push(w, ns);
		if (rv == 0 && w->nsegs == 1)
			w->first_index = first;
		pthread_rwlock_unlock(&w->lock);
		if (rv != 0) {
			seg_free(w, ns);
			return fail(w, rv, "allocate segment", w->dir, 0);
		}
		s = ns;
	}

	kv_buf_reset(&w->wbuf);
	for (r = head; r != stop; r = r->next) {
		rv = kv_buf_append(&w->wbuf, r->buf, r->len);
		if (rv != 0)
			return fail(w, rv, "allocate batch", s->path, s->end);
	}
	for (off = 0; off < total;) {
		unsigned char *p = w->wbuf.base + off;
		rec_seal(p, first);
		off += wal_rec_size(kv_load_u32le(p + 32));
	}
	assert(off == total);

	rv = w->vfs->pwrite(w->vfs, s->f, w->wbuf.base, total, s->end);
	if (rv != 0)
		return fail(w, rv, "write", s->path, s->end);
	if (w->sync != WAL_SYNC_NONE) {
		rv = w->vfs->sync(w->vfs, s->f, w->sync == WAL_SYNC_DATA);
		if (rv != 0)
			return fail(w, rv, "fdatasync", s->path, s->end);
	}

	pthread_rwlock_wrlock(&w->lock);
	for (off = 0; off < total;) {
		unsigned char *p = w->wbuf.base + off;
		rv = seg_push_off(s, s->end + off);
		if (rv != 0)
			break;
		off += wal_rec_size(kv_load_u32le(p + 32));
	}
	if (rv == 0) {
		s->end += total;
		w->last_index = first + n - 1;
		w->stats.batches++;
		w->stats.syncs += w->sync != WAL_SYNC_NONE;
		w->stats.entries += n;
		w->stats.bytes += total;
	}
	assert(rv != 0 || invariants_ok(w));
	pthread_rwlock_unlock(&w->lock);
	if (rv != 0)
		return fail(w, rv, "index", s->path, s->end);
	return 0;
}

static int do_truncate(struct wal *w, uint64_t index)
{
	const char *what;
	struct seg *s;
	uint64_t off;
	int rv = 0;

	pthread_rwlock_wrlock(&w->lock);
	w->epoch++;
	if (index < w->first_index || index > w->last_index + 1) {
		rv = KV_ERANGE;
		goto out;
	}
	while (w->nsegs > 0) {
		s = w->segs[w->nsegs - 1];
		if (!(s->first > index || (s->first == index && w->nsegs > 1)))
			break;
		w->vfs->close(w->vfs, s->f);
		s->f = NULL;
		rv = w->vfs->unlink(w->vfs, s->path);
		if (rv == 0)
			rv = w->vfs->sync_dir(w->vfs, w->dir);
		if (rv != 0) {
			fail(w, rv, "unlink", s->path, 0);
			w->nsegs--;
			seg_free(w, s);
			goto out;
		}
		w->nsegs--;
		seg_free(w, s);
	}
	if (w->nsegs > 0) {
		s = w->segs[w->nsegs - 1];
		if (index < s->first + s->n) {
			off = index == s->first ? WAL_SEG_HDR_SIZE
						: s->offs[index - s->first];
			what = "truncate";
			rv = w->vfs->truncate(w->vfs, s->f, off);
			if (rv == 0 && off < w->seg_size) {
				what = "preallocate";
				rv = w->vfs->allocate(w->vfs, s->f, off,
						      w->seg_size - off);
				if (rv == KV_EUNSUPP)
					rv = 0;
			}
			if (rv == 0) {
				what = "fsync";
				rv = w->vfs->sync(w->vfs, s->f, false);
			}
			if (rv != 0) {
				fail(w, rv, what, s->path, off);
				goto out;
			}
			s->end = off;
			s->n = index - s->first;
		}
	}
	w->last_index = index - 1;
	assert(invariants_ok(w));
out:
	pthread_rwlock_unlock(&w->lock);
	return rv;
}

static int do_drop(struct wal *w, uint64_t index)
{
	int rv = 0;

	pthread_rwlock_wrlock(&w->lock);
	w->epoch++;
	while (w->nsegs > 1 && w->segs[1]->first <= index + 1) {
		struct seg *s = w->segs[0];
		w->vfs->close(w->vfs, s->f);
		s->f = NULL;
		rv = w->vfs->unlink(w->vfs, s->path);
		if (rv == 0)
			rv = w->vfs->sync_dir(w->vfs, w->dir);
		memmove(w->segs, w->segs + 1, (w->nsegs - 1) * sizeof(*w->segs));
		w->nsegs--;
		w->first_index = w->segs[0]->first;
		if (rv != 0) {
			fail(w, rv, "unlink", s->path, 0);
			seg_free(w, s);
			break;
		}
		seg_free(w, s);
	}
	assert(rv != 0 || invariants_ok(w));
	pthread_rwlock_unlock(&w->lock);
	return rv;
}

static int do_reset(struct wal *w, uint64_t snap_index, uint64_t snap_term)
{
	struct wal_meta m = w->meta;
	int rv;

	m.gen++;
	m.snap_index = snap_index;
	m.snap_term = snap_term;
	rv = meta_write(w, &m);
	if (rv != 0)
		return rv;
	pthread_rwlock_wrlock(&w->lock);
	w->epoch++;
	w->meta = m;
	for (size_t i = 0; i < w->nsegs; i++) {
		struct seg *s = w->segs[i];
		int r2;
		w->vfs->close(w->vfs, s->f);
		s->f = NULL;
		/* A segment left behind is removed on open (older gen). */
		r2 = w->vfs->unlink(w->vfs, s->path);
		if (r2 != 0 && rv == 0)
			rv = fail(w, r2, "unlink", s->path, 0);
		seg_free(w, s);
	}
	w->nsegs = 0;
	w->first_index = snap_index + 1;
	w->last_index = snap_index;
	assert(invariants_ok(w));
	pthread_rwlock_unlock(&w->lock);
	if (rv == 0) {
		rv = w->vfs->sync_dir(w->vfs, w->dir);
		if (rv != 0)
			fail(w, rv, "fsync dir", w->dir, 0);
	}
	return rv;
}

static int do_meta(struct wal *w, uint64_t term, uint64_t vote)
{
	struct wal_meta m = w->meta;
	int rv;

	m.term = term;
	m.vote = vote;
	rv = meta_write(w, &m);
	if (rv == 0) {
		pthread_rwlock_wrlock(&w->lock);
		w->meta = m;
		pthread_rwlock_unlock(&w->lock);
	}
	return rv;
}

static int do_control(struct wal *w, struct wal_append_req *r)
{
	switch (r->kind) {
	case OP_TRUNCATE:
		return do_truncate(w, r->arg1);
	case OP_DROP:
		return do_drop(w, r->arg1);
	case OP_RESET:
		return do_reset(w, r->arg1, r->arg2);
	case OP_META:
		return do_meta(w, r->arg1, r->arg2);
	default:
		assert(0);
		return KV_EINTERNAL;
	}
}

static void complete_appends(struct wal *w, struct wal_append_req *head,
			     struct wal_append_req *stop, int status)
{
	struct wal_append_req *r = head, *next;

	if (status == 0) {
		pthread_rwlock_wrlock(&w->lock);
		for (struct wal_append_req *q = head; q != stop; q = q->next)
			w->stats.appends++;
		pthread_rwlock_unlock(&w->lock);
	}
	while (r != stop) {
		next = r->next;
		free(r->buf);
		r->buf = NULL;
		r->next = NULL;
		r->cb(r, status);
		r = next;
	}
}

static void *writer_main(void *arg)
{
	struct wal *w = arg;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		struct wal_append_req *head, *stop;
		int err;

		while (w->qhead == NULL && !w->closing)
			pthread_cond_wait(&w->cv_work, &w->mu);
		if (w->qhead == NULL)
			break;
		head = w->qhead;
		if (head->kind == OP_APPEND) {
			uint64_t bytes = head->len;
			stop = head->next;
			while (stop != NULL && stop->kind == OP_APPEND &&
			       bytes + stop->len <= MAX_BATCH_BYTES) {
				bytes += stop->len;
				stop = stop->next;
			}
		} else {
			stop = head->next;
		}
		w->qhead = stop;
		if (stop == NULL)
			w->qtail = NULL;
		err = w->err;
		pthread_mutex_unlock(&w->mu);

		if (head->kind == OP_APPEND) {
			int rv = err ? KV_EFAILSTOP : write_batch(w, head, stop);
			if (w->wbuf.cap > MAX_BATCH_BYTES)
				kv_buf_free(&w->wbuf); /* after a huge entry */
			complete_appends(w, head, stop, rv);
		} else {
			int rv = err ? KV_EFAILSTOP : do_control(w, head);
			if (rv != 0 && rv != KV_EFAILSTOP && head->detached)
				/* Nobody waits: make it sticky. */
				fail(w, rv, "truncate", w->dir, head->arg1);
			pthread_mutex_lock(&w->mu);
			if (head->detached) {
				free(head);
			} else {
				head->status = rv;
				head->done = true;
				pthread_cond_broadcast(&w->cv_done);
			}
			pthread_mutex_unlock(&w->mu);
		}
		pthread_mutex_lock(&w->mu);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* Caller holds mu. */
static void enqueue(struct wal *w, struct wal_append_req *r)
{
	r->next = NULL;
	if (w->qtail != NULL)
		w->qtail->next = r;
	else
		w->qhead = r;
	w->qtail = r;
	pthread_cond_signal(&w->cv_work);
}

static int check_usable(struct wal *w)
{
	if (w->err != 0)
		return KV_EFAILSTOP;
	if (w->closing)
		return KV_ECLOSED;
	return 0;
}

/* Queues a control request and, unless detached, waits for it. A
 * detached request is heap-allocated and freed by the writer; its failure
 * is sticky, so it surfaces on the next call. */
static int run_control(struct wal *w, int kind, uint64_t a1, uint64_t a2,
		       bool detached)
{
	struct wal_append_req local, *r = &local;
	int rv;

	assert(!w->thread_started || !pthread_equal(pthread_self(), w->thread));
	pthread_mutex_lock(&w->mu);
	rv = check_usable(w);
	pthread_mutex_unlock(&w->mu);
	if (rv != 0)
		return rv;
	if (kind == OP_TRUNCATE) {
		/* Lock order: lock, then mu; never wait for lock while
		 * holding mu. The writer checks the range again. */
		pthread_rwlock_rdlock(&w->lock);
		rv = a1 < w->first_index ? KV_ERANGE : 0;
		pthread_rwlock_unlock(&w->lock);
		if (rv != 0)
			return rv;
	}
	if (detached) {
		r = malloc(sizeof(*r));
		if (r == NULL)
			return KV_ENOMEM;
	}
	memset(r, 0, sizeof(*r));
	r->kind = kind;
	r->arg1 = a1;
	r->arg2 = a2;
	r->detached = detached;
	pthread_mutex_lock(&w->mu);
	rv = check_usable(w);
	if (rv != 0)
		goto out;
	switch (kind) {
	case OP_TRUNCATE:
		if (a1 > w->next_index)
			rv = KV_ERANGE;
		if (rv != 0) {
			set_msg(w, "truncate at %" PRIu64 ": out of range",
				a1);
			goto out;
		}
		w->next_index = a1;
		break;
	case OP_RESET:
		w->next_index = a1 + 1;
		break;
	default:
		break;
	}
	enqueue(w, r);
	if (detached) {
		r = NULL; /* the writer's now */
		goto out;
	}
	while (!r->done)
		pthread_cond_wait(&w->cv_done, &w->mu);
	rv = r->status;
out:
	pthread_mutex_unlock(&w->mu);
	if (detached && r != NULL)
		free(r);
	return rv;
}

/* ------------------------------------------------------------ public API */

int wal_append(struct wal *w, const struct wal_entry *ents, unsigned n,
	       struct wal_append_req *req, wal_append_cb cb)
{
	size_t total = 0, off = 0;
	unsigned char *buf;
	int rv;

	assert(req != NULL && cb != NULL);
	if (n == 0 || ents == NULL)
		return KV_EINVAL;
	for (unsigned i = 0; i < n; i++) {
		if (ents[i].len > WAL_MAX_PAYLOAD)
			return KV_ETOOBIG;
		if (ents[i].len > 0 && ents[i].payload == NULL)
			return KV_EINVAL;
		if (i > 0 && ents[i].index != ents[i - 1].index + 1)
			return KV_EINVAL;
		total += wal_rec_size(ents[i].len);
	}
	buf = malloc(total);
	if (buf == NULL)
		return KV_ENOMEM;
	for (unsigned i = 0; i < n; i++) {
		unsigned char *p = buf + off;
		const struct wal_entry *e = &ents[i];
		size_t rs = wal_rec_size(e->len);
		kv_store_u32le(p, 0);
		kv_store_u32le(p + 4, kv_crc32c(0, e->payload, e->len));
		kv_store_u64le(p + 8, e->index);
		kv_store_u64le(p + 16, e->term);
		kv_store_u64le(p + 24, 0);
		kv_store_u32le(p + 32, (uint32_t)e->len);
		p[36] = WAL_REC_KIND_ENTRY;
		p[37] = e->type;
		p[38] = p[39] = 0;
		if (e->len > 0)
			memcpy(p + WAL_REC_HDR_SIZE, e->payload, e->len);
		memset(p + WAL_REC_HDR_SIZE + e->len, 0,
		       rs - WAL_REC_HDR_SIZE - e->len);
		off += rs;
	}
	req->next = NULL;
	req->cb = cb;
	req->buf = buf;
	req->len = total;
	req->n = n;
	req->first_index = ents[0].index;
	req->kind = OP_APPEND;
	req->status = 0;
	req->done = false;

	pthread_mutex_lock(&w->mu);
	rv = check_usable(w);
	if (rv == 0 && ents[0].index != w->next_index)
		rv = KV_EINVAL;
	if (rv == 0) {
		w->next_index += n;
		enqueue(w, req);
	}
	pthread_mutex_unlock(&w->mu);
	if (rv != 0) {
		free(buf);
		req->buf = NULL;
	}
	return rv;
}

struct sync_req {
	struct wal_append_req req;
	struct wal *w;
};

static void on_sync_append(struct wal_append_req *req, int status)
{
	struct sync_req *sr = (struct sync_req *)(void *)req;
	struct wal *w = sr->w;

	pthread_mutex_lock(&w->mu);
	req->status = status;
	req->done = true;
	pthread_cond_broadcast(&w->cv_done);
	pthread_mutex_unlock(&w->mu);
}

int wal_append_sync(struct wal *w, const struct wal_entry *ents, unsigned n)
{
	struct sync_req sr;
	int rv;

	assert(!pthread_equal(pthread_self(), w->thread));
	memset(&sr, 0, sizeof(sr));
	sr.w = w;
	rv = wal_append(w, ents, n, &sr.req, on_sync_append);
	if (rv != 0)
		return rv;
	pthread_mutex_lock(&w->mu);
	while (!sr.req.done)
		pthread_cond_wait(&w->cv_done, &w->mu);
	pthread_mutex_unlock(&w->mu);
	return sr.req.status;
}

int wal_truncate(struct wal *w, uint64_t index)
{
	return run_control(w, OP_TRUNCATE, index, 0, false);
}

int wal_truncate_async(struct wal *w, uint64_t index)
{
	return run_control(w, OP_TRUNCATE, index, 0, true);
}

int wal_drop_prefix(struct wal *w, uint64_t index)
{
	return run_control(w, OP_DROP, index, 0, false);
}

int wal_reset(struct wal *w, uint64_t snap_index, uint64_t snap_term)
{
	if (snap_index == UINT64_MAX)
		return KV_EINVAL;
	return run_control(w, OP_RESET, snap_index, snap_term, false);
}

int wal_set_term_vote(struct wal *w, uint64_t term, uint64_t vote)
{
	return run_control(w, OP_META, term, vote, false);
}

void wal_info(struct wal *w, struct wal_info *info)
{
	pthread_rwlock_rdlock(&w->lock);
	info->first_index = w->first_index;
	info->last_index = w->last_index;
	info->term = w->meta.term;
	info->vote = w->meta.vote;
	info->snap_index = w->meta.snap_index;
	info->snap_term = w->meta.snap_term;
	info->nsegments = w->nsegs;
	info->torn_at = w->torn_at;
	pthread_rwlock_unlock(&w->lock);
}

void wal_stats(struct wal *w, struct wal_stats *stats)
{
	pthread_rwlock_rdlock(&w->lock);
	*stats = w->stats;
	pthread_rwlock_unlock(&w->lock);
}

uint64_t wal_next_index(struct wal *w)
{
	uint64_t v;

	pthread_mutex_lock(&w->mu);
	v = w->next_index;
	pthread_mutex_unlock(&w->mu);
	return v;
}

const char *wal_errmsg(struct wal *w)
{
	return w->errmsg;
}

/* ------------------------------------------------------------- iterators */

struct wal_iter {
	struct wal *w;
	uint64_t next;
	/* Read-ahead window: bytes [woff, woff + wlen) of the segment whose
	 * first index is wfirst, read at epoch wepoch, all below that
	 * segment's durable end (so no write can change them until a
	 * truncate/drop/reset bumps the epoch). */
	unsigned char *buf;
	size_t cap;
	bool wvalid;
	uint64_t wfirst, woff, wepoch;
	size_t wlen;
};

/* Reads after a failure could return data that never reached the disk
 * (the page cache after a failed fsync): refuse them too. */
static int check_failed(struct wal *w)
{
	int rv;

	pthread_mutex_lock(&w->mu);
	rv = w->err ? KV_EFAILSTOP : 0;
	pthread_mutex_unlock(&w->mu);
	return rv;
}

int wal_iter_open(struct wal *w, uint64_t from, struct wal_iter **out)
{
	struct wal_iter *it;
	int rv = check_failed(w);

	if (rv != 0)
		return rv;

	pthread_rwlock_rdlock(&w->lock);
	if (from < w->first_index || from > w->last_index + 1)
		rv = KV_ERANGE;
	pthread_rwlock_unlock(&w->lock);
	if (rv != 0)
		return rv;
	it = calloc(1, sizeof(*it));
	if (it == NULL)
		return KV_ENOMEM;
	it->w = w;
	it->next = from;
	*out = it;
	return 0;
}

/* Finds the segment holding index (caller holds lock). */
static struct seg *seg_find(struct wal *w, uint64_t index)
{
	size_t lo = 0, hi = w->nsegs;

	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (w->segs[mid]->first <= index)
			lo = mid;
		else
			hi = mid;
	}
	if (w->nsegs == 0)
		return NULL;
	struct seg *s = w->segs[lo];
	if (index < s->first || index >= s->first + s->n)
		return NULL;
	return s;
}

/* Points *p at bytes [off, off + len) of s through the iterator's window
 * (caller holds lock; off + len <= s->end). */
static int iter_map(struct wal_iter *it, struct seg *s, uint64_t off,
		    size_t len, const unsigned char **p)
{
	struct wal *w = it->w;
	size_t want, nread;
	int rv;

	assert(off + len <= s->end);
	if (it->wvalid && it->wepoch == w->epoch && it->wfirst == s->first &&
	    off >= it->woff && off + len <= it->woff + it->wlen) {
		*p = it->buf + (off - it->woff);
		return 0;
	}
	it->wvalid = false;
	want = len > READ_CHUNK ? len : READ_CHUNK;
	if (want > s->end - off)
		want = (size_t)(s->end - off);
	if (want > it->cap) {
		unsigned char *nb = realloc(it->buf, want);
		if (nb == NULL)
			return KV_ENOMEM;
		it->buf = nb;
		it->cap = want;
	}
	rv = w->vfs->pread(w->vfs, s->f, it->buf, want, off, &nread);
	if (rv != 0)
		return rv;
	if (nread < len)
		return KV_ECORRUPT; /* shorter than its durable end */
	it->wvalid = true;
	it->wfirst = s->first;
	it->woff = off;
	it->wlen = nread;
	it->wepoch = w->epoch;
	*p = it->buf;
	return 0;
}

int wal_iter_next(struct wal_iter *it, struct wal_entry *ent)
{
	struct wal *w = it->w;
	const unsigned char *p;
	struct wal_rec_hdr h;
	struct seg *s;
	uint64_t off;
	int rv = check_failed(w);

	if (rv != 0)
		return rv;
	pthread_rwlock_rdlock(&w->lock);
	if (it->next < w->first_index || it->next > w->last_index) {
		rv = 0;
		goto out;
	}
	s = seg_find(w, it->next);
	if (s == NULL) {
		rv = 0;
		goto out;
	}
	off = s->offs[it->next - s->first];
	rv = iter_map(it, s, off, WAL_REC_HDR_SIZE, &p);
	if (rv == 0)
		rv = wal_rec_hdr_decode(p, &h);
	if (rv == 0 && (h.index != it->next || h.len > WAL_MAX_PAYLOAD ||
			off + wal_rec_size(h.len) > s->end))
		rv = KV_ECORRUPT;
	if (rv == 0)
		rv = iter_map(it, s, off, WAL_REC_HDR_SIZE + h.len, &p);
	if (rv == 0 &&
	    kv_crc32c(0, p + WAL_REC_HDR_SIZE, h.len) != h.dcrc)
		rv = KV_ECORRUPT;
	if (rv != 0)
		goto err_read;
	ent->index = h.index;
	ent->term = h.term;
	ent->type = h.type;
	ent->payload = h.len ? p + WAL_REC_HDR_SIZE : NULL;
	ent->len = h.len;
	it->next++;
	rv = 1;
	goto out;

err_read:
	pthread_mutex_lock(&w->mu);
	set_msg(w, "%s: offset %" PRIu64 ": read of entry %" PRIu64
		" failed: %s", s->path, off, it->next, kv_strerror(rv));
	pthread_mutex_unlock(&w->mu);
out:
	pthread_rwlock_unlock(&w->lock);
	return rv;
}

void wal_iter_close(struct wal_iter *it)
{
	if (it == NULL)
		return;
	free(it->buf);
	free(it);
}

void wal_entries_free(struct wal_entry *ents, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free((void *)ents[i].payload);
	free(ents);
}

int wal_load(struct wal *w, uint64_t from, struct wal_entry **ents,
	     size_t *n)
{
	struct wal_entry *v = NULL, e;
	size_t len = 0, cap = 0;
	struct wal_iter *it;
	int rv;

	rv = wal_iter_open(w, from, &it);
	if (rv != 0)
		return rv;
	while ((rv = wal_iter_next(it, &e)) == 1) {
		void *p = NULL;
		if (len == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			struct wal_entry *nv = realloc(v, ncap * sizeof(*nv));
			if (nv == NULL) {
				rv = KV_ENOMEM;
				break;
			}
			v = nv;
			cap = ncap;
		}
		if (e.len > 0) {
			p = malloc(e.len);
			if (p == NULL) {
				rv = KV_ENOMEM;
				break;
			}
			memcpy(p, e.payload, e.len);
		}
		e.payload = p;
		v[len++] = e;
	}
	wal_iter_close(it);
	if (rv < 0) {
		wal_entries_free(v, len);
		return rv;
	}
	*ents = v;
	*n = len;
	return 0;
}

/* ------------------------------------------------------------------ open */

/* A forward reader over one file with a growing window. */
struct rdr {
	struct vfs *vfs;
	struct vfs_file *f;
	uint64_t size;
	unsigned char *buf;
	size_t cap;
	uint64_t boff;
	size_t blen;
};

/* Points *p at len bytes at off; off + len <= size required. */
static int rd(struct rdr *r, uint64_t off, size_t len, const unsigned char **p)
{
	size_t want, nread;
	int rv;

	assert(off + len <= r->size);
	if (off >= r->boff && off + len <= r->boff + r->blen) {
		*p = r->buf + (off - r->boff);
		return 0;
	}
	want = len > READ_CHUNK ? len : READ_CHUNK;
	if (want > r->size - off)
		want = (size_t)(r->size - off);
	if (want > r->cap) {
		unsigned char *nb = realloc(r->buf, want);
		if (nb == NULL)
			return KV_ENOMEM;
		r->buf = nb;
		r->cap = want;
	}
	rv = r->vfs->pread(r->vfs, r->f, r->buf, want, off, &nread);
	if (rv != 0)
		return rv;
	r->boff = off;
	r->blen = nread;
	if (nread < len)
		return KV_EIO;
	*p = r->buf;
	return 0;
}

/* True when [off, size) is all zero (sets *rv on read errors). */
static bool rest_zero(struct rdr *r, uint64_t off, int *rv)
{
	const unsigned char *p;

	while (off < r->size) {
		size_t n = r->size - off > READ_CHUNK ? READ_CHUNK
						      : (size_t)(r->size - off);
		*rv = rd(r, off, n, &p);
		if (*rv != 0)
			return false;
		if (!all_zero(p, n))
			return false;
		off += n;
	}
	return true;
}

/* After a bad record at off (expected index expect) in the last segment:
 * finds a valid record header further on that belongs to a later write.
 * Returns 1 (found: corruption, *at set), 0 (torn tail) or < 0. */
static int later_write_follows(struct rdr *r, uint64_t off, uint64_t expect,
			       uint64_t *at, uint64_t *found_index)
{
	const unsigned char *p;
	struct wal_rec_hdr h;
	int rv;

	for (uint64_t q = off + 8; q + WAL_REC_HDR_SIZE <= r->size; q += 8) {
		rv = rd(r, q, WAL_REC_HDR_SIZE, &p);
		if (rv != 0)
			return rv;
		if (kv_load_u32le(p) == 0 && all_zero(p, WAL_REC_HDR_SIZE))
			continue;
		if (wal_rec_hdr_decode(p, &h) != 0 ||
		    h.kind != WAL_REC_KIND_ENTRY)
			continue;
		if (h.batch_first > expect || h.index < expect) {
			*at = q;
			*found_index = h.index;
			return 1;
		}
	}
	return 0;
}

/* Scans a segment's records, filling s->offs and s->end. A torn tail of
 * the last segment is cut off; anything else bad is KV_ECORRUPT. */
static int seg_scan(struct wal *w, struct seg *s, bool last)
{
	struct rdr r = { .vfs = w->vfs, .f = s->f };
	const unsigned char *p;
	struct wal_rec_hdr h;
	uint64_t off = WAL_SEG_HDR_SIZE, expect = s->first;
	const char *why = NULL;
	int rv;

	rv = w->vfs->size(w->vfs, s->f, &r.size);
	if (rv != 0) {
		set_msg(w, "%s: stat failed: %s", s->path, kv_strerror(rv));
		goto out;
	}
	while (off < r.size) {
		if (r.size - off < WAL_REC_HDR_SIZE) {
			if (rest_zero(&r, off, &rv))
				break;
			if (rv != 0)
				goto err_read;
			why = "truncated record header";
			goto bad;
		}
		rv = rd(&r, off, WAL_REC_HDR_SIZE, &p);
		if (rv != 0)
			goto err_read;
		if (all_zero(p, WAL_REC_HDR_SIZE)) {
			if (rest_zero(&r, off, &rv))
				break; /* preallocated space */
			if (rv != 0)
				goto err_read;
			why = "zeroed record header followed by data";
			goto bad;
		}
		if (wal_rec_hdr_decode(p, &h) != 0) {
			why = "bad record header checksum";
			goto bad;
		}
		if (h.kind != WAL_REC_KIND_ENTRY || h.len > WAL_MAX_PAYLOAD) {
			why = "bad record kind or length";
			goto bad;
		}
		if (h.index != expect) {
			rv = KV_ECORRUPT;
			set_msg(w, "%s: offset %" PRIu64 ": index gap: expected "
				"entry %" PRIu64 ", found %" PRIu64, s->path,
				off, expect, h.index);
			goto out;
		}
		if (off + wal_rec_size(h.len) > r.size) {
			why = "record extends past end of file";
			goto bad;
		}
		/* Payload and padding: every byte of a record is checked. */
		rv = rd(&r, off + WAL_REC_HDR_SIZE,
			(size_t)(wal_rec_size(h.len) - WAL_REC_HDR_SIZE), &p);
		if (rv != 0)
			goto err_read;
		if (kv_crc32c(0, p, h.len) != h.dcrc) {
			why = "bad payload checksum";
			goto bad;
		}
		if (!all_zero(p + h.len, (size_t)(wal_rec_size(h.len) -
						  WAL_REC_HDR_SIZE - h.len))) {
			why = "non-zero record padding";
			goto bad;
		}
		rv = seg_push_off(s, off);
		if (rv != 0)
			goto out;
		off += wal_rec_size(h.len);
		expect++;
	}
	s->end = off;
	rv = 0;
	goto out;

bad:
	if (!last) {
		rv = KV_ECORRUPT;
		set_msg(w, "%s: offset %" PRIu64 ": %s (entry %" PRIu64
			") in a segment that is not the last", s->path, off,
			why, expect);
		goto out;
	} else {
		uint64_t at = 0, idx = 0;
		rv = later_write_follows(&r, off, expect, &at, &idx);
		if (rv < 0)
			goto err_read;
		if (rv == 1) {
			rv = KV_ECORRUPT;
			set_msg(w, "%s: offset %" PRIu64 ": %s (entry %" PRIu64
				"), followed by a later write (entry %" PRIu64
				" at offset %" PRIu64 ")", s->path, off, why,
				expect, idx, at);
			goto out;
		}
	}
	/* Torn tail of the last write: cut it off durably. */
	KV_WARN(MOD, "torn tail cut", "file=%s offset=%" PRIu64
		" reason=\"%s\" entries=%" PRIu64, s->path, off, why,
		expect - s->first);
	rv = w->vfs->truncate(w->vfs, s->f, off);
	if (rv == 0)
		rv = w->vfs->sync(w->vfs, s->f, false);
	if (rv != 0) {
		set_msg(w, "%s: offset %" PRIu64 ": cutting the torn tail "
			"failed: %s", s->path, off, kv_strerror(rv));
		goto out;
	}
	w->torn_at = off;
	s->end = off;
	goto out;

err_read:
	set_msg(w, "%s: offset %" PRIu64 ": read failed: %s", s->path, off,
		kv_strerror(rv));
out:
	free(r.buf);
	return rv;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int read_meta(struct wal *w)
{
	unsigned char buf[WAL_META_SIZE];
	struct vfs_file *f;
	uint64_t size;
	size_t nread;
	int rv;

	rv = w->vfs->open(w->vfs, w->meta_path, VFS_RDONLY, &f);
	if (rv != 0) {
		set_msg(w, "%s: open failed: %s", w->meta_path,
			kv_strerror(rv));
		return rv;
	}
	rv = w->vfs->size(w->vfs, f, &size);
	if (rv == 0)
		rv = w->vfs->pread(w->vfs, f, buf, sizeof(buf), 0, &nread);
	w->vfs->close(w->vfs, f);
	if (rv != 0) {
		set_msg(w, "%s: offset 0: read failed: %s", w->meta_path,
			kv_strerror(rv));
		return rv;
	}
	if (size != WAL_META_SIZE || nread != WAL_META_SIZE) {
		set_msg(w, "%s: offset %zu: meta file has %" PRIu64
			" bytes, expected %u", w->meta_path, nread, size,
			WAL_META_SIZE);
		return KV_ECORRUPT;
	}
	if (wal_meta_decode(buf, &w->meta) != 0) {
		set_msg(w, "%s: offset 0: bad meta file (magic or checksum)",
			w->meta_path);
		return KV_ECORRUPT;
	}
	/* wal_reset never writes it: the next index would wrap to 0. */
	if (w->meta.snap_index == UINT64_MAX) {
		set_msg(w, "%s: offset 32: snapshot index %" PRIu64
			" out of range", w->meta_path, w->meta.snap_index);
		return KV_ECORRUPT;
	}
	return 0;
}

/* Opens one segment and checks its header; *stale when it belongs to an
 * older generation (leftover of an interrupted reset). */
static int seg_open(struct wal *w, uint64_t first, struct seg **out,
		    bool *stale)
{
	unsigned char hdr[WAL_SEG_HDR_SIZE];
	struct wal_seg_hdr h;
	struct seg *s;
	size_t nread;
	int rv;

	*stale = false;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return KV_ENOMEM;
	s->first = first;
	s->path = seg_path(w->dir, first);
	if (s->path == NULL) {
		rv = KV_ENOMEM;
		goto err_after_alloc;
	}
	rv = w->vfs->open(w->vfs, s->path, VFS_RDWR, &s->f);
	if (rv != 0) {
		set_msg(w, "%s: open failed: %s", s->path, kv_strerror(rv));
		goto err_after_alloc;
	}
	rv = w->vfs->pread(w->vfs, s->f, hdr, sizeof(hdr), 0, &nread);
	if (rv != 0) {
		set_msg(w, "%s: offset 0: read failed: %s", s->path,
			kv_strerror(rv));
		goto err_after_alloc;
	}
	if (nread != sizeof(hdr) || wal_seg_hdr_decode(hdr, &h) != 0) {
		rv = KV_ECORRUPT;
		set_msg(w, "%s: offset 0: bad segment header", s->path);
		goto err_after_alloc;
	}
	if (h.first_index != first) {
		rv = KV_ECORRUPT;
		set_msg(w, "%s: offset 8: header says first index %" PRIu64
			", name says %" PRIu64, s->path, h.first_index, first);
		goto err_after_alloc;
	}
	if (h.gen > w->meta.gen) {
		rv = KV_ECORRUPT;
		set_msg(w, "%s: offset 16: segment generation %" PRIu64
			" is newer than the meta file's %" PRIu64, s->path,
			h.gen, w->meta.gen);
		goto err_after_alloc;
	}
	s->gen = h.gen;
	*stale = h.gen < w->meta.gen;
	*out = s;
	return 0;
err_after_alloc:
	seg_free(w, s);
	return rv;
}

static int load_dir(struct wal *w)
{
	char **names = NULL;
	size_t nnames = 0, nfirst = 0;
	uint64_t *firsts = NULL;
	bool have_meta = false;
	int rv;

	rv = w->vfs->listdir(w->vfs, w->dir, &names, &nnames);
	if (rv != 0) {
		set_msg(w, "%s: listing failed: %s", w->dir, kv_strerror(rv));
		return rv;
	}
	firsts = calloc(nnames ? nnames : 1, sizeof(*firsts));
	if (firsts == NULL) {
		rv = KV_ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < nnames; i++) {
		uint64_t first;
		if (strcmp(names[i], "meta") == 0) {
			have_meta = true;
		} else if (strcmp(names[i], "meta.tmp") == 0 ||
			   strcmp(names[i], "seg.tmp") == 0) {
			/* Never renamed into place: holds no entries. */
			char *p = path_join(w->dir, names[i]);
			if (p == NULL) {
				rv = KV_ENOMEM;
				goto out;
			}
			rv = w->vfs->unlink(w->vfs, p);
			if (rv != 0)
				set_msg(w, "%s: unlink failed: %s", p,
					kv_strerror(rv));
			free(p);
			if (rv != 0)
				goto out;
		} else if (wal_seg_name_parse(names[i], &first)) {
			firsts[nfirst++] = first;
		}
	}
	qsort(firsts, nfirst, sizeof(*firsts), cmp_u64);

	if (have_meta) {
		rv = read_meta(w);
		if (rv != 0)
			goto out;
	} else if (nfirst > 0) {
		rv = KV_ECORRUPT;
		set_msg(w, "%s: offset 0: meta file missing but %zu segments "
			"exist", w->meta_path, nfirst);
		goto out;
	} else {
		w->meta = (struct wal_meta){ .gen = 1 };
		rv = meta_write(w, &w->meta);
		if (rv != 0)
			goto out;
	}

	for (size_t i = 0; i < nfirst; i++) {
		struct seg *s;
		bool stale;
		rv = seg_open(w, firsts[i], &s, &stale);
		if (rv != 0)
			goto out;
		if (stale) {
			KV_INFO(MOD, "removing segment of an interrupted reset",
				"file=%s gen=%" PRIu64, s->path, s->gen);
			rv = w->vfs->unlink(w->vfs, s->path);
			if (rv != 0)
				set_msg(w, "%s: unlink failed: %s", s->path,
					kv_strerror(rv));
			seg_free(w, s);
			if (rv != 0)
				goto out;
			continue;
		}
		rv = segs_push(w, s);
		if (rv != 0) {
			seg_free(w, s);
			goto out;
		}
	}
	for (size_t i = 0; i < w->nsegs; i++) {
		struct seg *s = w->segs[i];
		rv = seg_scan(w, s, i + 1 == w->nsegs);
		if (rv != 0)
			goto out;
		if (i == 0 && s->first <= w->meta.snap_index) {
			rv = KV_ECORRUPT;
			set_msg(w, "%s: offset 8: first index %" PRIu64
				" is not after the snapshot index %" PRIu64,
				s->path, s->first, w->meta.snap_index);
			goto out;
		}
		if (i > 0) {
			struct seg *prev = w->segs[i - 1];
			if (prev->first + prev->n != s->first) {
				rv = KV_ECORRUPT;
				set_msg(w, "%s: offset %" PRIu64 ": gap in "
					"indexes: ends before entry %" PRIu64
					" but %s starts at %" PRIu64,
					prev->path, prev->end,
					prev->first + prev->n, s->path,
					s->first);
				goto out;
			}
		}
	}
	if (w->nsegs > 0) {
		struct seg *s = w->segs[w->nsegs - 1];
		w->first_index = w->segs[0]->first;
		w->last_index = s->first + s->n - 1;
		if (s->end < w->seg_size) {
			rv = w->vfs->allocate(w->vfs, s->f, s->end,
					      w->seg_size - s->end);
			if (rv == KV_EUNSUPP)
				rv = 0;
			else if (rv == 0)
				rv = w->vfs->sync(w->vfs, s->f, false);
			if (rv != 0) {
				set_msg(w, "%s: preallocate failed: %s",
					s->path, kv_strerror(rv));
				goto out;
			}
		}
	} else {
		w->first_index = w->meta.snap_index + 1;
		w->last_index = w->meta.snap_index;
	}
	w->next_index = w->last_index + 1;
	assert(invariants_ok(w));
	/* Makes removals above and the LOCK file's creation durable:
	 * wal_open leaves nothing unsynced behind. */
	rv = w->vfs->sync_dir(w->vfs, w->dir);
	if (rv != 0)
		set_msg(w, "%s: fsync failed: %s", w->dir, kv_strerror(rv));
out:
	free(firsts);
	vfs_names_free(names, nnames);
	return rv;
}

static int make_dir(struct wal *w)
{
	char *parent, *slash;
	int rv;

	rv = w->vfs->mkdir(w->vfs, w->dir);
	if (rv == KV_EEXIST)
		return 0;
	if (rv != 0) {
		set_msg(w, "%s: mkdir failed: %s", w->dir, kv_strerror(rv));
		return rv;
	}
	parent = strdup(w->dir);
	if (parent == NULL)
		return KV_ENOMEM;
	slash = strrchr(parent, '/');
	if (slash == NULL)
		strcpy(parent, ".");
	else if (slash == parent)
		slash[1] = '\0';
	else
		*slash = '\0';
	rv = w->vfs->sync_dir(w->vfs, parent);
	if (rv != 0)
		set_msg(w, "%s: fsync failed: %s", parent, kv_strerror(rv));
	free(parent);
	return rv;
}

/* One process per directory: an flock on dir/LOCK, held until close. */
static int lock_dir(struct wal *w)
{
	char *p = path_join(w->dir, "LOCK");
	int rv;

	if (p == NULL)
		return KV_ENOMEM;
	rv = w->vfs->open(w->vfs, p, VFS_RDWR | VFS_CREATE, &w->lockf);
	if (rv == 0) {
		rv = w->vfs->lock(w->vfs, w->lockf);
		if (rv != 0) {
			w->vfs->close(w->vfs, w->lockf);
			w->lockf = NULL;
		}
	}
	if (rv == KV_EBUSY)
		set_msg(w, "%s: the WAL is open in another process or handle",
			p);
	else if (rv != 0)
		set_msg(w, "%s: lock failed: %s", p, kv_strerror(rv));
	free(p);
	return rv;
}

static void wal_free(struct wal *w)
{
	for (size_t i = 0; i < w->nsegs; i++)
		seg_free(w, w->segs[i]);
	free(w->segs);
	if (w->lockf != NULL)
		w->vfs->close(w->vfs, w->lockf);
	kv_buf_free(&w->wbuf);
	free(w->dir);
	free(w->meta_path);
	free(w->meta_tmp);
	free(w->seg_tmp);
	pthread_rwlock_destroy(&w->lock);
	pthread_cond_destroy(&w->cv_done);
	pthread_cond_destroy(&w->cv_work);
	pthread_mutex_destroy(&w->mu);
	free(w);
}

int wal_open(const char *dir, const struct wal_options *opts, struct wal **out,
	     char *errmsg, size_t errlen)
{
	struct wal *w;
	size_t dl;
	int rv;

	w = calloc(1, sizeof(*w));
	if (w == NULL) {
		if (errmsg != NULL && errlen > 0)
			snprintf(errmsg, errlen, "out of memory");
		return KV_ENOMEM;
	}
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv_work, NULL);
	pthread_cond_init(&w->cv_done, NULL);
	pthread_rwlock_init(&w->lock, NULL);
	kv_buf_init(&w->wbuf);
	w->vfs = opts && opts->vfs ? opts->vfs : vfs_posix();
	w->seg_size = opts && opts->segment_size ? opts->segment_size
						 : WAL_DEFAULT_SEGMENT_SIZE;
	if (w->seg_size < WAL_SEG_HDR_SIZE + WAL_REC_HDR_SIZE)
		w->seg_size = WAL_SEG_HDR_SIZE + WAL_REC_HDR_SIZE;
	w->sync = opts ? opts->sync : WAL_SYNC_DATA;
	dl = strlen(dir);
	while (dl > 1 && dir[dl - 1] == '/')
		dl--;
	w->dir = strndup(dir, dl);
	if (w->dir == NULL) {
		rv = KV_ENOMEM;
		goto err_after_alloc;
	}
	w->meta_path = path_join(w->dir, "meta");
	w->meta_tmp = path_join(w->dir, "meta.tmp");
	w->seg_tmp = path_join(w->dir, "seg.tmp");
	if (!w->meta_path || !w->meta_tmp || !w->seg_tmp) {
		rv = KV_ENOMEM;
		goto err_after_alloc;
	}
	rv = make_dir(w);
	if (rv != 0)
		goto err_after_alloc;
	rv = lock_dir(w);
	if (rv != 0)
		goto err_after_alloc;
	rv = load_dir(w);
	if (rv != 0)
		goto err_after_alloc;
	/* A failure during open is not sticky: nothing is open yet. */
	w->err = 0;
	rv = pthread_create(&w->thread, NULL, writer_main, w);
	if (rv != 0) {
		set_msg(w, "cannot start the writer thread");
		rv = KV_ENOMEM;
		goto err_after_alloc;
	}
	w->thread_started = true;
	KV_INFO(MOD, "opened", "dir=%s first=%" PRIu64 " last=%" PRIu64
		" segments=%zu term=%" PRIu64, w->dir, w->first_index,
		w->last_index, w->nsegs, w->meta.term);
	*out = w;
	return 0;

err_after_alloc:
	if (errmsg != NULL && errlen > 0)
		snprintf(errmsg, errlen, "%s",
			 w->errmsg[0] ? w->errmsg : kv_strerror(rv));
	wal_free(w);
	return rv;
}

int wal_close(struct wal *w)
{
	int rv;

	if (w == NULL)
		return 0;
	assert(!pthread_equal(pthread_self(), w->thread));
	pthread_mutex_lock(&w->mu);
	w->closing = true;
	pthread_cond_signal(&w->cv_work);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	rv = w->err;
	wal_free(w);
	return rv;
}

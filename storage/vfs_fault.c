/* storage/vfs_fault.c — a fault-injecting vfs for tests.
 *
 * Forwards every call to a base vfs (file handles are the base's own) and
 * counts calls by kind; armed faults fail the Nth call of a kind, and the
 * crash fault tears one pwrite and then freezes the disk (see vfs.h). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kv/errors.h"
#include "storage/vfs.h"

struct fault {
	unsigned long nth; /* 0 = not armed; counted from arming */
	unsigned long seen;
	int err;
	bool sticky;
	bool fired;
};

struct fault_vfs {
	struct vfs vfs; /* first: container */
	struct vfs *base;
	pthread_mutex_t mu;
	unsigned long count[VFS_OP__COUNT];
	struct fault faults[VFS_OP__COUNT];
	unsigned long crash_nth; /* 0 = none */
	unsigned long crash_seen;
	size_t crash_keep;
	unsigned long crash_op_nth; /* 0 = none */
	unsigned long crash_op_seen;
	unsigned long mutations;
	bool skip_sync;
	bool crashed;
	/* Durability bookkeeping: files written/truncated/allocated since
	 * their last sync, files closed in that state, and directory
	 * changes (create, rename, unlink, mkdir) since the last sync_dir. */
	struct vfs_file *dirty[64];
	unsigned ndirty;
	unsigned long dirty_closed;
	unsigned long dir_changes;
};

static void mark_dirty(struct fault_vfs *fv, struct vfs_file *f)
{
	pthread_mutex_lock(&fv->mu);
	for (unsigned i = 0; i < fv->ndirty; i++)
		if (fv->dirty[i] == f)
			goto out;
	if (fv->ndirty < sizeof(fv->dirty) / sizeof(fv->dirty[0]))
		fv->dirty[fv->ndirty++] = f;
out:
	pthread_mutex_unlock(&fv->mu);
}

/* Forgets f; returns true if it was dirty. */
static bool clear_dirty(struct fault_vfs *fv, struct vfs_file *f)
{
	bool was = false;

	pthread_mutex_lock(&fv->mu);
	for (unsigned i = 0; i < fv->ndirty; i++)
		if (fv->dirty[i] == f) {
			fv->dirty[i] = fv->dirty[--fv->ndirty];
			was = true;
			break;
		}
	pthread_mutex_unlock(&fv->mu);
	return was;
}

static void dir_changed(struct fault_vfs *fv)
{
	pthread_mutex_lock(&fv->mu);
	fv->dir_changes++;
	pthread_mutex_unlock(&fv->mu);
}

#define FV(v) ((struct fault_vfs *)(void *)(v))

static bool is_mutating(enum vfs_op op)
{
	return op != VFS_OP_OPEN && op != VFS_OP_PREAD;
}

/* Counts one call; returns the error to inject or 0 to forward. For a
 * crashing pwrite, *keep is set to the number of bytes to let through. */
static int check(struct fault_vfs *fv, enum vfs_op op, size_t *keep)
{
	int rv = 0;

	pthread_mutex_lock(&fv->mu);
	fv->count[op]++;
	if (is_mutating(op))
		fv->mutations++;
	if (fv->crashed && is_mutating(op)) {
		rv = KV_EIO;
		goto out;
	}
	if (fv->crash_op_nth != 0 && is_mutating(op) &&
	    ++fv->crash_op_seen == fv->crash_op_nth) {
		fv->crashed = true;
		if (op == VFS_OP_PWRITE)
			*keep = fv->crash_keep;
		rv = KV_EIO;
		goto out;
	}
	struct fault *f = &fv->faults[op];
	if (f->nth != 0) {
		f->seen++;
		if (f->seen == f->nth || (f->sticky && f->fired)) {
			f->fired = true;
			rv = f->err;
			goto out;
		}
	}
	if (op == VFS_OP_PWRITE && fv->crash_nth != 0) {
		fv->crash_seen++;
		if (fv->crash_seen == fv->crash_nth) {
			fv->crashed = true;
			*keep = fv->crash_keep;
			rv = KV_EIO;
		}
	}
out:
	pthread_mutex_unlock(&fv->mu);
	return rv;
}

static int f_open(struct vfs *vfs, const char *path, int flags,
		  struct vfs_file **out)
{
	struct fault_vfs *fv = FV(vfs);
	bool mut = (flags & (VFS_CREATE | VFS_TRUNC)) != 0;
	int rv = check(fv, VFS_OP_OPEN, NULL);

	if (rv == 0 && mut) {
		/* Creating a file changes the disk: a crash point too. */
		pthread_mutex_lock(&fv->mu);
		fv->mutations++;
		if (fv->crashed)
			rv = KV_EIO;
		else if (fv->crash_op_nth != 0 &&
			 ++fv->crash_op_seen == fv->crash_op_nth) {
			fv->crashed = true;
			rv = KV_EIO;
		}
		pthread_mutex_unlock(&fv->mu);
	}
	if (rv == 0)
		rv = fv->base->open(fv->base, path, flags, out);
	if (rv == 0 && mut)
		dir_changed(fv); /* conservatively: may have created it */
	return rv;
}

static int f_close(struct vfs *vfs, struct vfs_file *f)
{
	struct fault_vfs *fv = FV(vfs);

	if (clear_dirty(fv, f)) {
		pthread_mutex_lock(&fv->mu);
		fv->dirty_closed++;
		pthread_mutex_unlock(&fv->mu);
	}
	return fv->base->close(fv->base, f);
}

static int f_pread(struct vfs *vfs, struct vfs_file *f, void *buf, size_t len,
		   uint64_t off, size_t *nread)
{
	struct fault_vfs *fv = FV(vfs);
	int rv = check(fv, VFS_OP_PREAD, NULL);

	return rv ? rv : fv->base->pread(fv->base, f, buf, len, off, nread);
}

static int f_pwrite(struct vfs *vfs, struct vfs_file *f, const void *buf,
		    size_t len, uint64_t off)
{
	struct fault_vfs *fv = FV(vfs);
	size_t keep = (size_t)-1;
	int rv = check(fv, VFS_OP_PWRITE, &keep);

	if (rv != 0) {
		if (keep != (size_t)-1 && keep > 0)
			fv->base->pwrite(fv->base, f, buf,
					 keep < len ? keep : len, off);
		return rv;
	}
	mark_dirty(fv, f);
	return fv->base->pwrite(fv->base, f, buf, len, off);
}

static int f_sync(struct vfs *vfs, struct vfs_file *f, bool datasync)
{
	struct fault_vfs *fv = FV(vfs);
	int rv = check(fv, VFS_OP_SYNC, NULL);

	if (rv == 0 && !fv->skip_sync)
		rv = fv->base->sync(fv->base, f, datasync);
	if (rv == 0)
		clear_dirty(fv, f);
	return rv;
}

static int f_truncate(struct vfs *vfs, struct vfs_file *f, uint64_t size)
{
	struct fault_vfs *fv = FV(vfs);
	int rv = check(fv, VFS_OP_TRUNCATE, NULL);

	if (rv == 0)
		mark_dirty(fv, f);
	return rv ? rv : fv->base->truncate(fv->base, f, size);
}

static int f_allocate(struct vfs *vfs, struct vfs_file *f, uint64_t off,
		      uint64_t len)
{
	struct fault_vfs *fv = FV(vfs);
	int rv = check(fv, VFS_OP_ALLOCATE, NULL);

	if (rv == 0)
		mark_dirty(fv, f);
	return rv ? rv : fv->base->allocate(fv->base, f, off, len);
}

static int f_size(struct vfs *vfs, struct vfs_file *f, uint64_t *size)
{
	struct fault_vfs *fv = FV(vfs);

	return fv->base->size(fv->base, f, size);
}

static int f_rename(struct vfs *vfs, const char *from, const char *to)
{
	struct fault_vfs *fv = FV(vfs);
	int rv = check(fv, VFS_OP_RENAME, NULL);

	if (rv == 0)
		dir_changed(fv);
	return rv ? rv : fv->base->rename(fv->base, from, to);
}

static int f_unlink(struct vfs *vfs, const char *path)
{
	struct fault_vfs *fv = FV(vfs);
	int rv = check(fv, VFS_OP_UNLINK, NULL);

	if (rv == 0)
		dir_changed(fv);
	return rv ? rv : fv->base->unlink(fv->base, path);
}

static int f_mkdir(struct vfs *vfs, const char *path)
{
	struct fault_vfs *fv = FV(vfs);
	int rv = check(fv, VFS_OP_MKDIR, NULL);

	if (rv == 0)
		dir_changed(fv);
	return rv ? rv : fv->base->mkdir(fv->base, path);
}

static int f_sync_dir(struct vfs *vfs, const char *path)
{
	struct fault_vfs *fv = FV(vfs);
	int rv = check(fv, VFS_OP_SYNC_DIR, NULL);

	if (rv == 0 && !fv->skip_sync)
		rv = fv->base->sync_dir(fv->base, path);
	if (rv == 0) {
		pthread_mutex_lock(&fv->mu);
		fv->dir_changes = 0;
		pthread_mutex_unlock(&fv->mu);
	}
	return rv;
}

static int f_listdir(struct vfs *vfs, const char *path, char ***names,
		     size_t *n)
{
	struct fault_vfs *fv = FV(vfs);

	return fv->base->listdir(fv->base, path, names, n);
}

static int f_lock(struct vfs *vfs, struct vfs_file *f)
{
	struct fault_vfs *fv = FV(vfs);

	return fv->base->lock(fv->base, f);
}

static void f_destroy(struct vfs *vfs)
{
	struct fault_vfs *fv = FV(vfs);

	pthread_mutex_destroy(&fv->mu);
	free(fv);
}

struct vfs *vfs_fault_new(struct vfs *base)
{
	struct fault_vfs *fv = calloc(1, sizeof(*fv));

	if (fv == NULL)
		return NULL;
	fv->vfs = (struct vfs){
		.open = f_open,
		.close = f_close,
		.pread = f_pread,
		.pwrite = f_pwrite,
		.sync = f_sync,
		.truncate = f_truncate,
		.allocate = f_allocate,
		.size = f_size,
		.rename = f_rename,
		.unlink = f_unlink,
		.mkdir = f_mkdir,
		.sync_dir = f_sync_dir,
		.listdir = f_listdir,
		.lock = f_lock,
		.destroy = f_destroy,
	};
	fv->base = base;
	pthread_mutex_init(&fv->mu, NULL);
	return &fv->vfs;
}

void vfs_fault_arm(struct vfs *vfs, enum vfs_op op, unsigned long nth,
		   int err, bool sticky)
{
	struct fault_vfs *fv = FV(vfs);

	pthread_mutex_lock(&fv->mu);
	fv->faults[op] = (struct fault){ .nth = nth, .err = err,
					 .sticky = sticky };
	pthread_mutex_unlock(&fv->mu);
}

void vfs_fault_crash(struct vfs *vfs, unsigned long nth_write, size_t keep)
{
	struct fault_vfs *fv = FV(vfs);

	pthread_mutex_lock(&fv->mu);
	fv->crash_nth = nth_write;
	fv->crash_seen = 0;
	fv->crash_keep = keep;
	pthread_mutex_unlock(&fv->mu);
}

void vfs_fault_crash_op(struct vfs *vfs, unsigned long nth_op, size_t keep)
{
	struct fault_vfs *fv = FV(vfs);

	pthread_mutex_lock(&fv->mu);
	fv->crash_op_nth = nth_op;
	fv->crash_op_seen = 0;
	fv->crash_keep = keep;
	pthread_mutex_unlock(&fv->mu);
}

void vfs_fault_skip_sync(struct vfs *vfs, bool skip)
{
	struct fault_vfs *fv = FV(vfs);

	pthread_mutex_lock(&fv->mu);
	fv->skip_sync = skip;
	pthread_mutex_unlock(&fv->mu);
}

unsigned long vfs_fault_mutations(struct vfs *vfs)
{
	struct fault_vfs *fv = FV(vfs);
	unsigned long n;

	pthread_mutex_lock(&fv->mu);
	n = fv->mutations;
	pthread_mutex_unlock(&fv->mu);
	return n;
}

void vfs_fault_disarm(struct vfs *vfs)
{
	struct fault_vfs *fv = FV(vfs);

	pthread_mutex_lock(&fv->mu);
	memset(fv->faults, 0, sizeof(fv->faults));
	fv->crash_op_nth = 0;
	fv->crash_nth = 0;
	fv->crashed = false;
	pthread_mutex_unlock(&fv->mu);
}

unsigned long vfs_fault_count(struct vfs *vfs, enum vfs_op op)
{
	struct fault_vfs *fv = FV(vfs);
	unsigned long n;

	pthread_mutex_lock(&fv->mu);
	n = fv->count[op];
	pthread_mutex_unlock(&fv->mu);
	return n;
}

unsigned long vfs_fault_unsynced(struct vfs *vfs)
{
	struct fault_vfs *fv = FV(vfs);
	unsigned long n;

	pthread_mutex_lock(&fv->mu);
	n = fv->ndirty + fv->dirty_closed + (fv->dir_changes ? 1 : 0);
	pthread_mutex_unlock(&fv->mu);
	return n;
}

void vfs_fault_unsynced_reset(struct vfs *vfs)
{
	struct fault_vfs *fv = FV(vfs);

	pthread_mutex_lock(&fv->mu);
	fv->ndirty = 0;
	fv->dirty_closed = 0;
	fv->dir_changes = 0;
	pthread_mutex_unlock(&fv->mu);
}

bool vfs_fault_crashed(struct vfs *vfs)
{
	struct fault_vfs *fv = FV(vfs);
	bool c;

	pthread_mutex_lock(&fv->mu);
	c = fv->crashed;
	pthread_mutex_unlock(&fv->mu);
	return c;
}

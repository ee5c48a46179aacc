/* storage/vfs.h — the file layer under the WAL.
 *
 * A struct vfs is a small vtable of the file operations the WAL needs, so
 * tests can put a fault-injecting layer between the WAL and the disk. Two
 * implementations: vfs_posix() (the real thing, 64-bit offsets everywhere)
 * and vfs_fault_new() (wraps another vfs; fails the Nth operation of a kind
 * or "crashes" in the middle of a write).
 *
 * Conventions for every operation: return 0 or a negative KV_E* code
 * (errno translated with kv_from_errno). Paths are full paths; the vfs
 * never keeps a path pointer after the call returns. A struct vfs_file is
 * owned by the caller from open() until close(), which frees it even when
 * it reports an error. Operations on different files may run on different
 * threads at once; one file is used by one thread at a time, except pread,
 * which may run concurrently with pwrite on disjoint ranges.
 */
#ifndef KV_STORAGE_VFS_H
#define KV_STORAGE_VFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vfs_file;

/* open() flags. */
enum {
	VFS_RDONLY = 0,
	VFS_RDWR = 1 << 0,
	VFS_CREATE = 1 << 1, /* create if missing (mode 0644) */
	VFS_TRUNC = 1 << 2,  /* truncate to 0 on open */
	VFS_EXCL = 1 << 3,   /* with VFS_CREATE: fail KV_EEXIST if present */
};

struct vfs {
	/* Opens path; *out is set on success. KV_ENOTFOUND if missing and
	 * not VFS_CREATE. */
	int (*open)(struct vfs *vfs, const char *path, int flags,
		    struct vfs_file **out);
	/* Closes and frees f (always, even on error). */
	int (*close)(struct vfs *vfs, struct vfs_file *f);
	/* Reads up to len bytes at off; *nread < len only at end of file. */
	int (*pread)(struct vfs *vfs, struct vfs_file *f, void *buf,
		     size_t len, uint64_t off, size_t *nread);
	/* Writes all len bytes at off (retrying short writes); an error
	 * means an unknown prefix of the range may have reached the file. */
	int (*pwrite)(struct vfs *vfs, struct vfs_file *f, const void *buf,
		      size_t len, uint64_t off);
	/* fdatasync (datasync) or fsync. */
	int (*sync)(struct vfs *vfs, struct vfs_file *f, bool datasync);
	int (*truncate)(struct vfs *vfs, struct vfs_file *f, uint64_t size);
	/* Reserves [off, off+len) (extends the size; new bytes read as
	 * zero). KV_EUNSUPP when the file system cannot preallocate. */
	int (*allocate)(struct vfs *vfs, struct vfs_file *f, uint64_t off,
			uint64_t len);
	int (*size)(struct vfs *vfs, struct vfs_file *f, uint64_t *size);
	/* Atomically replaces to with from (rename(2)). */
	int (*rename)(struct vfs *vfs, const char *from, const char *to);
	int (*unlink)(struct vfs *vfs, const char *path);
	/* Creates a directory; KV_EEXIST if it exists. */
	int (*mkdir)(struct vfs *vfs, const char *path);
	/* fsyncs a directory, making creations/renames/unlinks in it
	 * durable. */
	int (*sync_dir)(struct vfs *vfs, const char *path);
	/* Lists the names in a directory except "." and "..". On success
	 * *names is a malloc'd array of *n malloc'd strings; free with
	 * vfs_names_free(). */
	int (*listdir)(struct vfs *vfs, const char *path, char ***names,
		       size_t *n);
	/* Takes an exclusive advisory lock on f, held until close; KV_EBUSY
	 * if another open file (in any process) holds it. */
	int (*lock)(struct vfs *vfs, struct vfs_file *f);
	/* Frees the vfs itself (NULL for the static POSIX vfs). */
	void (*destroy)(struct vfs *vfs);
};

/* The process-wide POSIX vfs. Static; never destroyed. Thread-safe. */
struct vfs *vfs_posix(void);

void vfs_names_free(char **names, size_t n);

/* Convenience wrapper: destroys vfs if it has a destroy method. */
void vfs_destroy(struct vfs *vfs);

/* ---- fault injection (tests) ----
 *
 * A fault vfs forwards to `base` (borrowed; must outlive it) and counts
 * operations by kind. Arming a fault makes the Nth (1-based, counted from
 * the moment of arming) operation of that kind fail with `err` without
 * touching the disk; with `sticky` every later operation of that kind
 * fails too. The crash fault makes the Nth pwrite write only its first
 * `keep` bytes and then puts the vfs in the crashed state: every later
 * mutating operation (pwrite, sync, truncate, allocate, rename, unlink,
 * mkdir, sync_dir) fails with KV_EIO and leaves the disk alone, so what
 * is on disk is exactly what reached it before the "power cut". The
 * counters and settings are protected by a mutex: any thread may call
 * these functions. */
enum vfs_op {
	VFS_OP_OPEN,
	VFS_OP_PREAD,
	VFS_OP_PWRITE,
	VFS_OP_SYNC,
	VFS_OP_TRUNCATE,
	VFS_OP_ALLOCATE,
	VFS_OP_RENAME,
	VFS_OP_UNLINK,
	VFS_OP_MKDIR,
	VFS_OP_SYNC_DIR,
	VFS_OP__COUNT,
};

/* Returns NULL on allocation failure. Free with vfs_destroy(). */
struct vfs *vfs_fault_new(struct vfs *base);
void vfs_fault_arm(struct vfs *vfs, enum vfs_op op, unsigned long nth,
		   int err, bool sticky);
void vfs_fault_crash(struct vfs *vfs, unsigned long nth_write, size_t keep);
/* Crash at the Nth mutating operation of any kind (counted from the
 * call; open with VFS_CREATE/VFS_TRUNC counts as mutating): a pwrite
 * writes its first `keep` bytes, any other operation is not performed;
 * then the vfs is in the crashed state as above. */
void vfs_fault_crash_op(struct vfs *vfs, unsigned long nth_op, size_t keep);
/* When skip is true, sync and sync_dir succeed without reaching the
 * disk (crash tests never lose page-cache data, so syncing only costs
 * time). */
void vfs_fault_skip_sync(struct vfs *vfs, bool skip);
/* Mutating operations forwarded or failed since creation. */
unsigned long vfs_fault_mutations(struct vfs *vfs);
/* Clears armed faults and the crashed state (counters are kept). */
void vfs_fault_disarm(struct vfs *vfs);
/* Number of operations of a kind forwarded or failed since creation. */
unsigned long vfs_fault_count(struct vfs *vfs, enum vfs_op op);
bool vfs_fault_crashed(struct vfs *vfs);
/* Durability bookkeeping, to check that a caller made its changes durable
 * before returning: the number of files written, truncated or
 * preallocated since their last sync (open or closed since), plus 1 if a
 * directory changed (file created, renamed, unlinked, mkdir) since the
 * last sync_dir. Directories are not told apart: any sync_dir clears the
 * directory state. */
unsigned long vfs_fault_unsynced(struct vfs *vfs);
void vfs_fault_unsynced_reset(struct vfs *vfs);

#endif

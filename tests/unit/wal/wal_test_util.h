/* Helpers shared by the WAL tests: scratch directories, deterministic
 * entries, whole-file copies. Not thread-safe unless stated. */
#ifndef KV_TEST_WAL_UTIL_H
#define KV_TEST_WAL_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "storage/wal.h"

/* Creates a fresh directory under $TMPDIR (or /tmp); malloc'd path. */
char *tu_mkdtemp(void);
/* Removes a flat directory and its files. */
void tu_rmdir(const char *dir);
/* Path dir/name in a static buffer (overwritten by the next call). */
const char *tu_path(const char *dir, const char *name);
/* Deterministic payload length and bytes for an index. */
size_t tu_len(uint64_t index);
void tu_fill(uint64_t index, unsigned char *p, size_t len);
/* Fills e (payload in buf, which must hold tu_len(index) bytes). */
void tu_entry(struct wal_entry *e, uint64_t index, uint64_t term,
	      unsigned char *buf);
/* Appends entries [from, to] synchronously in one batch; asserts 0. */
void tu_append(struct wal *w, uint64_t from, uint64_t to, uint64_t term);
/* Loads everything from `from` and checks it is exactly [from, to]. */
void tu_check(struct wal *w, uint64_t from, uint64_t to);
/* Reads/writes a whole file. tu_read returns malloc'd bytes. */
unsigned char *tu_read(const char *path, size_t *len);
void tu_write(const char *path, const unsigned char *p, size_t len);
/* Copies every file of src into dst (flat). */
void tu_copy_dir(const char *src, const char *dst);
/* Name of the single (or last) segment file in dir (static buffer). */
const char *tu_last_segment(const char *dir);
size_t tu_nsegments(const char *dir);
/* Opens with a small segment size; asserts success. */
struct wal *tu_open(const char *dir, uint64_t seg_size, struct vfs *vfs);

#endif

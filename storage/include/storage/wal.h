/* storage/wal.h — the raft log: segment files, CRC32C records, group commit.
 *
 * A struct wal owns one directory:
 *   meta               term, vote, generation and snapshot boundary
 *                      (checksummed; replaced by write-temp, fsync, rename,
 *                      fsync dir)
 *   <16 hex>.wal       segments, named by the index of their first entry
 *   meta.tmp, seg.tmp  leftovers of an interrupted create; removed on open
 *   LOCK               flock'ed while the WAL is open (one user per dir)
 *
 * Entries are contiguous: every append continues at wal_next_index().
 * Appends are asynchronous: a dedicated writer thread takes everything
 * queued, writes it with one pwrite and one fdatasync (group commit: one
 * batch in flight, later appends coalesce into the next batch) and then
 * calls each request's callback, in submission order, from the writer
 * thread. No callback reports success for data that was not fsynced.
 *
 * Fail-stop: after any failed write, fsync, truncate, preallocation,
 * create, rename or unlink on the write path, the WAL refuses every later
 * call with KV_EFAILSTOP, reads included (the page cache may hold data the
 * disk lost); only wal_info, wal_stats, wal_next_index, wal_errmsg and
 * wal_close still work. The batch that failed reports the original error
 * to its callbacks, queued ones KV_EFAILSTOP. Nothing is retried; reopen
 * the directory to recover from what is on disk.
 *
 * Opening scans every record. A torn tail of the last segment (partial or
 * zeroed record, bad checksum at the very end) is cut back to the last
 * whole record. Anything else — a bad record followed by a later batch,
 * a bad record in an earlier segment, a gap in indexes, a bad segment
 * header or meta file — makes wal_open fail with KV_ECORRUPT and a message
 * naming the file and byte offset. Data is never skipped or renamed away.
 *
 * Threads: wal_append and wal_append_sync may be called from any thread
 * (also from inside an append callback). The synchronous calls
 * (wal_truncate, wal_drop_prefix, wal_reset, wal_set_term_vote,
 * wal_append_sync) block the caller until their effect is durable, and are
 * ordered with the appends submitted before them; they must not be called
 * from an append callback (that is the writer thread: deadlock, asserted).
 * Iterators may be used from any thread, concurrently with appends and
 * with the synchronous calls. wal_close must not race with any other call.
 *
 * Errors: 0 or a negative KV_E* from "kv/errors.h". wal_errmsg() gives the
 * context of the last failure (file, offset, what).
 *
 * Backing raft_io (canonical/raft 0.15) with it, all on the loop thread:
 *   load          wal_open, wal_info (term, vote, snap_index/term,
 *                 first_index = start_index), wal_load(first_index), then
 *                 copy into raft_malloc'd entries
 *   set_term/vote wal_set_term_vote (durable on return: one fsync)
 *   append        wal_append with indexes from wal_next_index(); the
 *                 callback runs on the writer thread: queue the result and
 *                 uv_async_send to the loop, which calls raft's cb
 *   truncate      wal_truncate_async (ordered before later appends,
 *                 never blocks)
 *   snapshot_put  once the snapshot is durable: trailing > 0 →
 *                 wal_drop_prefix(index - trailing); trailing == 0 →
 *                 wal_reset(index, term)
 */
#ifndef KV_STORAGE_WAL_H
#define KV_STORAGE_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/vfs.h"

struct wal;

/* Largest payload of one entry; larger appends fail with KV_ETOOBIG. */
#define WAL_MAX_PAYLOAD (64u * 1024 * 1024)
#define WAL_DEFAULT_SEGMENT_SIZE (64ull * 1024 * 1024)

/* Entry types, mirroring raft's RAFT_COMMAND / RAFT_BARRIER / RAFT_CHANGE
 * (the WAL stores any uint8 and never interprets it). */
enum wal_entry_type {
	WAL_ENTRY_COMMAND = 1,
	WAL_ENTRY_BARRIER = 2,
	WAL_ENTRY_CHANGE = 3,
};

struct wal_entry {
	uint64_t index;
	uint64_t term;
	uint8_t type;
	const void *payload; /* len bytes; may be NULL when len == 0 */
	size_t len;
};

enum wal_sync_mode {
	WAL_SYNC_DATA = 0, /* fdatasync per batch (default) */
	WAL_SYNC_FULL,     /* fsync per batch */
	WAL_SYNC_NONE,     /* no sync: tests and benchmarks only; UNSAFE */
};

struct wal_options {
	struct vfs *vfs;       /* NULL = vfs_posix(); borrowed, must outlive
				* the wal */
	uint64_t segment_size; /* 0 = WAL_DEFAULT_SEGMENT_SIZE; segments are
				* preallocated to this size and rolled over
				* when a batch does not fit (a single larger
				* batch makes a larger segment) */
	enum wal_sync_mode sync;
};

/* What the WAL holds. first_index..last_index are the entries (empty when
 * last_index < first_index; then first_index == snap_index + 1 after a
 * wal_reset, or the index the log was truncated back to). */
struct wal_info {
	uint64_t first_index;
	uint64_t last_index;
	uint64_t term;
	uint64_t vote;
	uint64_t snap_index; /* set by wal_reset; 0 if never */
	uint64_t snap_term;
	uint64_t nsegments;
	uint64_t torn_at;    /* offset the last segment was cut back to at
			      * open (torn tail), 0 if it was clean */
};

struct wal_stats {
	uint64_t appends; /* wal_append calls that were written */
	uint64_t entries;
	uint64_t batches; /* writes (one per batch) */
	uint64_t syncs;   /* fdatasync/fsync calls on segments */
	uint64_t bytes;
};

/* Opens (creating if needed) the WAL in dir and starts its writer thread.
 * opts may be NULL for defaults. On failure *out is untouched and, when
 * errmsg is not NULL, a message naming the file and offset is written to
 * errmsg (errlen bytes, NUL-terminated). KV_ECORRUPT for corruption,
 * KV_EIO/KV_EFULL/... for I/O errors, KV_ENOMEM. */
int wal_open(const char *dir, const struct wal_options *opts, struct wal **out,
	     char *errmsg, size_t errlen);

/* Flushes queued appends (their callbacks run), stops and joins the
 * writer thread, closes the files and frees w. Returns the sticky error
 * if the WAL had failed, else 0. */
int wal_close(struct wal *w);

/* Snapshot of the state (durable entries only; thread-safe). */
void wal_info(struct wal *w, struct wal_info *info);
void wal_stats(struct wal *w, struct wal_stats *stats);
/* Index the next appended entry must carry (counts queued appends). */
uint64_t wal_next_index(struct wal *w);
/* Message of the last failure; valid until the next call on w. */
const char *wal_errmsg(struct wal *w);

/* An append request. Caller-allocated; must stay valid and untouched until
 * its callback has been called. `data` is the caller's. The other fields
 * are private to the WAL. */
struct wal_append_req;
typedef void (*wal_append_cb)(struct wal_append_req *req, int status);
struct wal_append_req {
	void *data;
	/* private */
	struct wal_append_req *next;
	wal_append_cb cb;
	unsigned char *buf; /* encoded records */
	size_t len;
	unsigned n;
	uint64_t first_index;
	int kind;
	int status;
	bool done;
	bool detached;
	uint64_t arg1, arg2;
};

/* Queues n >= 1 entries; ents[0].index must equal wal_next_index() and
 * the indexes must be consecutive. The payloads are copied before
 * returning (ents may be freed at once). On 0 the callback will be called
 * exactly once, from the writer thread, with 0 once the entries are
 * durable or a negative code; callbacks of successive appends run in
 * submission order. On error nothing is queued and cb is never called:
 * KV_EINVAL (n == 0 or wrong index), KV_ETOOBIG (payload over
 * WAL_MAX_PAYLOAD), KV_ENOMEM, KV_EFAILSTOP, KV_ECLOSED. */
int wal_append(struct wal *w, const struct wal_entry *ents, unsigned n,
	       struct wal_append_req *req, wal_append_cb cb);

/* wal_append and wait for durability. */
int wal_append_sync(struct wal *w, const struct wal_entry *ents, unsigned n);

/* Removes every entry >= index, after the appends queued before it
 * completed; durable on return. index may be wal_next_index() (no-op).
 * The next append continues at index. KV_ERANGE if index is below the
 * first index or above the next one. */
int wal_truncate(struct wal *w, uint64_t index);

/* Like wal_truncate, but returns once the truncation is queued, without
 * waiting (raft_io.truncate's contract: appends submitted afterwards are
 * written after it). The same range checks are made at once; a failure
 * while truncating is sticky (KV_EFAILSTOP on later calls, the errmsg
 * names file and offset). Safe to call from the loop thread. */
int wal_truncate_async(struct wal *w, uint64_t index);

/* Removes whole segments whose entries are all <= index (after a
 * snapshot at or beyond index); the segment being appended to is kept.
 * Durable on return. Entries above index are always kept; some <= index
 * may remain. */
int wal_drop_prefix(struct wal *w, uint64_t index);

/* Replaces the whole log by a snapshot boundary: every entry is removed
 * and the next append must carry snap_index + 1. Records snap_index and
 * snap_term in the meta file (reported by wal_info after reopening).
 * Durable on return (an interrupted reset completes on the next open). */
int wal_reset(struct wal *w, uint64_t snap_index, uint64_t snap_term);

/* Persists term and vote (0 = none) in the meta file; durable on return. */
int wal_set_term_vote(struct wal *w, uint64_t term, uint64_t vote);

/* Iterates durable entries from an index.
 *
 * wal_iter_open: from must be in [first_index, last_index + 1]
 * (KV_ERANGE otherwise, e.g. dropped by a snapshot). wal_iter_next returns
 * 1 and fills *ent, 0 at the end of the durable log, or a negative code
 * (KV_ECORRUPT with wal_errmsg if a record fails its checksum on read).
 * ent->payload is owned by the iterator and valid until the next
 * wal_iter_next or wal_iter_close. An iterator stops at an entry removed
 * by a concurrent truncate/drop. */
struct wal_iter;
int wal_iter_open(struct wal *w, uint64_t from, struct wal_iter **out);
int wal_iter_next(struct wal_iter *it, struct wal_entry *ent);
void wal_iter_close(struct wal_iter *it);

/* Loads entries [from, last] into a malloc'd array; each entry's payload
 * is malloc'd too (NULL when len == 0). Free with wal_entries_free().
 * *n == 0 (and *ents == NULL) when from == last + 1. Errors as
 * wal_iter_open/next. */
int wal_load(struct wal *w, uint64_t from, struct wal_entry **ents,
	     size_t *n);
void wal_entries_free(struct wal_entry *ents, size_t n);

/* ---- on-disk format, shared with kvd-dump ---- */
#define WAL_SEG_MAGIC "KVDWALS1"
#define WAL_META_MAGIC "KVDWALM1"
#define WAL_SEG_HDR_SIZE 32u
#define WAL_REC_HDR_SIZE 40u
#define WAL_META_SIZE 56u
#define WAL_REC_KIND_ENTRY 1u

/* Decoded headers, for tools. */
struct wal_seg_hdr {
	uint64_t first_index;
	uint64_t gen;
};
struct wal_rec_hdr {
	uint64_t index;
	uint64_t term;
	uint64_t batch_first;
	uint32_t len;
	uint8_t kind;
	uint8_t type;
	uint32_t dcrc;
};
struct wal_meta {
	uint64_t term;
	uint64_t vote;
	uint64_t gen;
	uint64_t snap_index;
	uint64_t snap_term;
};

/* Decoders: 0, or KV_ECORRUPT when magic/checksum/reserved bytes are bad.
 * wal_rec_hdr_decode checks the header checksum only (the payload's is
 * dcrc: compare with kv_crc32c(0, payload, len)). */
int wal_seg_hdr_decode(const unsigned char *p, struct wal_seg_hdr *h);
int wal_rec_hdr_decode(const unsigned char *p, struct wal_rec_hdr *h);
int wal_meta_decode(const unsigned char *p, struct wal_meta *m);
/* Size of a record with a payload of len bytes (header + payload padded
 * to 8). */
uint64_t wal_rec_size(uint64_t len);
/* Parses a segment file name ("%016x.wal"); false if not one. */
bool wal_seg_name_parse(const char *name, uint64_t *first_index);

#endif

/* fuzz_snapshot.c — libFuzzer target for what a member decodes when it
 * receives and installs a snapshot.
 *
 * Two decoders take bytes from outside:
 *
 *  - the chunked snapshot stream (raft/node_snapshot.c): PEER_MSG_SNAPSHOT
 *    chunks (header, the encoded InstallSnapshot "meta" in the final
 *    chunk, data) and PEER_MSG_SNAPSHOT_ACK answers, as they arrive from
 *    peers. node_snapshot.c and raft/io_codec.c are compiled in directly;
 *    the few kvraft_io functions node_snapshot.c calls (snapshot dir and
 *    path, delivery to raft) and node_close_step are stubbed below, so a
 *    zeroed struct kvraft_node with a real libuv loop (the publish step
 *    runs on its threadpool) and a recording kvraft_net is all it needs.
 *    Nothing in raft/ changes.
 *  - the snapshot file and its "<path>.crc" side file
 *    ("crc32c=%08x size=%llu"), through mvcc_restore (storage/mvcc.h),
 *    the entry point sm_restore (raft/apply.c) uses. read_sum, file_crc
 *    and inspect_copy (LMDB opening the copy) are static behind it.
 *
 * (The 56-byte snapshot descriptor and the InstallSnapshot message codec
 * are also fuzzed by fuzz_peer, as a round trip.)
 *
 * Input: byte 0 selects the mode (bit0) and options, the rest is mode
 * specific.
 *
 * Mode 0, stream. byte 0 bits 1-3 choose the outgoing chunk size (16 <<
 * n bytes). Then a list of operations, each an op byte (bits 0-2 kind,
 * bits 3-4 peer 1..3) and its operands:
 *   0 raw chunk   u16le len, len bytes -> node_snapshot_on_chunk
 *   1 raw ack     24 bytes -> node_snapshot_on_ack
 *   2 shaped      u8 flags, u16le data len, u8 meta len, u8 index, u8
 *     chunk       term, then meta bytes (unless built) and data bytes: a
 *                 chunk at the offset the receiver acknowledged last (or 0
 *                 with flags bit0), its stream id, total = offset + len
 *                 when final (bit1) else + u8 extra; bit2 puts the correct
 *                 CRC32C of the stream in the final chunk, bit3 builds a
 *                 valid InstallSnapshot meta (index/term from the
 *                 operands) instead of taking meta bytes, bit4 makes the
 *                 descriptor size disagree with total
 *   3 send        u8 index, u8 term, u16le size, size bytes: writes the
 *                 file <snap>/<term>-<index>.snap and node_snapshot_send
 *                 to the peer (the first chunk goes out)
 *   4 good ack    u8 status: acks the last chunk sent to the peer (next =
 *                 its end; status != 0 when the byte is odd)
 *   5 loop back   feeds the last chunk sent to the peer back in as a
 *                 chunk from that peer (a full send/ack/loop-back cycle
 *                 publishes the file the node sent)
 *   6,7 ignored.
 * The publish step (fsync, rename, fsync dir) runs to completion after
 * each operation.
 * Invariants (abort on violation): every message the node sends is a
 * well-formed ack (24 bytes) or chunk (header consistent: final iff meta,
 * offset + data <= total, final iff it ends at total, meta decodes as an
 * InstallSnapshot whose descriptor index/size match, CRC32C of the file in
 * the final chunk); a delivered InstallSnapshot has a valid descriptor
 * with index = last_index, and its published file holds exactly size
 * bytes with the CRC32C the final chunk carried (and, when looped back,
 * exactly the bytes that were sent); node_snapshot_close finds nothing
 * pending; no descriptor leaks; no recv-*.tmp remains after close.
 *
 * Mode 1, restore. byte 0 bit1: write the side file with the correct
 * CRC32C and size of the snapshot bytes (so LMDB gets to open them),
 * bit2: no side file at all. byte 1: side file length n, then n bytes of
 * side file (unless bit1/bit2), the rest is the snapshot file.
 * mvcc_restore(file, dir) must return 0 or KV_ECORRUPT; after 0 the
 * installed data.mdb holds exactly the snapshot bytes and info carries
 * their size and CRC32C; without a correct side file it must refuse.
 *
 * LMDB trusts its own file: a snapshot whose CRC32C matches (a member
 * sent it, or the operator restored it) is opened by LMDB, which does not
 * validate page contents. Garbage pages can crash LMDB, so mode 1 bit1 is
 * honoured only with FUZZ_SNAPSHOT_LMDB=1 (see docs/fuzzing.md).
 *
 * FUZZ_SNAPSHOT_MKSEEDS=<dir>: write the seed inputs to dir and exit
 * (tests/fuzz/corpus/fuzz_snapshot holds them). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "common/crc32c.h"
#include "common/log.h"
#include "io_codec.h"
#include "kv/errors.h"
#include "kvraft/transport.h"
#include "node_internal.h"
#include "storage/mvcc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHUNK_HDR 40u
#define NPEERS 3
#define MAX_FILE 65536u

static void fail(const char *why)
{
	fprintf(stderr, "fuzz_snapshot: %s\n", why);
	abort();
}

/* ---- stubs for what node_snapshot.c needs from raft/io.c and node.c --- */

struct kvraft_io {
	char dir[256]; /* the snapshot directory */
};

const char *kvraft_io_snap_dir(struct kvraft_io *io)
{
	return io->dir;
}

void kvraft_io_snap_path(struct kvraft_io *io, uint64_t term, uint64_t index,
			 char *buf, size_t len)
{
	snprintf(buf, len, "%s/%llu-%llu.snap", io->dir,
		 (unsigned long long)term, (unsigned long long)index);
}

void node_close_step(struct kvraft_node *n)
{
	(void)n;
	fail("node_close_step called: the harness never closes while busy");
}

/* ---- harness state --------------------------------------------------- */

static char base[256];
static uv_loop_t loop;
static struct kvraft_io io;
static struct kvraft_node node;
static bool lmdb_ok;
/* Reached-the-end counters, printed at exit with FUZZ_SNAPSHOT_VERBOSE. */
static unsigned long n_delivered, n_restored, n_sent_final;

/* Per peer (index 1..3): the last chunk the node sent to it, the receive
 * side as the harness sees it, and the file behind the last send. */
struct peer {
	unsigned char *last; /* copy of the last chunk sent to the peer */
	size_t last_len;
	uint64_t rx_stream, rx_next; /* from the node's last ack */
	uint32_t rx_crc;             /* CRC32C of the shaped data so far */
	uint32_t fin_crc;            /* crc field of the last final chunk */
	bool fin_seen;
	uint64_t tx_index, tx_term; /* file of the stream being sent */
	unsigned char *tx_data;
	size_t tx_len;
	/* file of the last send_file: becomes tx_* when the node starts a
	 * stream with it (its chunk at offset 0); a send of what is already
	 * streaming starts nothing */
	uint64_t cand_index, cand_term;
	unsigned char *cand_data;
	size_t cand_len;
	bool looped; /* the final chunk in flight was looped back */
};
static struct peer peers[NPEERS + 1];

static uint64_t ld64(const unsigned char *p)
{
	return io_get64(p);
}

static uint32_t crc_of_file(const char *path, uint64_t *size,
			    unsigned char **copy)
{
	unsigned char buf[4096];
	uint32_t crc = 0;
	size_t cap = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	*size = 0;
	if (copy)
		*copy = NULL;
	if (fd < 0)
		fail("published snapshot file is missing");
	for (;;) {
		ssize_t r = read(fd, buf, sizeof(buf));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			fail("read of published snapshot failed");
		if (r == 0)
			break;
		crc = kv_crc32c(crc, buf, (size_t)r);
		if (copy) {
			if (*size + (size_t)r > cap) {
				cap = (*size + (size_t)r) * 2;
				*copy = realloc(*copy, cap);
				if (!*copy)
					abort();
			}
			memcpy(*copy + *size, buf, (size_t)r);
		}
		*size += (uint64_t)r;
	}
	close(fd);
	return crc;
}

/* raft's side of delivery: check what node_snapshot.c hands over, free
 * it as raft would. */
void kvraft_io_deliver(struct kvraft_io *xio, uint64_t from,
		       struct raft_message *m)
{
	struct kvraft_desc d;
	char path[512];
	uint64_t size;
	unsigned char *copy = NULL;
	struct peer *p;

	if (xio != &io || from < 1 || from > NPEERS)
		fail("delivery from an unknown peer");
	p = &peers[from];
	if (m->type != RAFT_IO_INSTALL_SNAPSHOT)
		fail("delivered a message that is not InstallSnapshot");
	if (io_desc_decode(m->install_snapshot.data.base,
			   m->install_snapshot.data.len, &d) != 0)
		fail("delivered an InstallSnapshot with a bad descriptor");
	if (d.index != m->install_snapshot.last_index)
		fail("descriptor index differs from last_index");
	if (!p->fin_seen)
		fail("delivered without a final chunk from that peer");
	kvraft_io_snap_path(&io, d.term, d.index, path, sizeof(path));
	uint32_t crc = crc_of_file(path, &size, &copy);
	if (size != d.size)
		fail("published file size differs from the descriptor");
	if (crc != p->fin_crc)
		fail("published file CRC32C differs from the final chunk");
	if (p->looped && p->tx_data && d.index == p->tx_index &&
	    d.term == p->tx_term &&
	    (size != p->tx_len ||
	     (size && memcmp(copy, p->tx_data, size) != 0)))
		fail("looped-back snapshot differs from the file sent");
	free(copy);
	unlink(path);
	io_msg_release(m);
	n_delivered++;
}

/* Checks a chunk the node sends (it read the file behind p->tx_*). */
static void check_out_chunk(struct peer *p, const unsigned char *b,
			    size_t len)
{
	if (len < CHUNK_HDR)
		fail("outgoing chunk shorter than its header");
	uint64_t off = ld64(b + 8), total = ld64(b + 16), mlen = ld64(b + 32);
	uint32_t crc = io_get32(b + 24), flags = io_get32(b + 28);
	if (mlen > len - CHUNK_HDR || flags > 1 || (mlen > 0) != (flags == 1))
		fail("outgoing chunk header inconsistent");
	uint64_t dlen = len - CHUNK_HDR - mlen;
	if (off + dlen > total || (flags == 1) != (off + dlen == total))
		fail("outgoing chunk offset/total inconsistent");
	if (p->tx_data && (total != p->tx_len ||
			   memcmp(b + CHUNK_HDR + mlen, p->tx_data + off,
				  (size_t)dlen) != 0))
		fail("outgoing chunk data differs from the file");
	if (flags == 1) {
		struct raft_message m;
		struct kvraft_desc d;

		memset(&m, 0, sizeof(m));
		if (io_msg_decode(b + CHUNK_HDR, (size_t)mlen, &m) != 0)
			fail("outgoing meta does not decode");
		if (m.type != RAFT_IO_INSTALL_SNAPSHOT ||
		    io_desc_decode(m.install_snapshot.data.base,
				   m.install_snapshot.data.len, &d) != 0 ||
		    d.index != m.install_snapshot.last_index)
			fail("outgoing meta is not a valid InstallSnapshot");
		if (p->tx_data &&
		    crc != kv_crc32c(0, p->tx_data, p->tx_len))
			fail("outgoing final CRC32C differs from the file");
		io_msg_release(&m);
		n_sent_final++;
	}
}

static int net_send(void *data, uint64_t to, uint8_t type, const void *body,
		    size_t len)
{
	const unsigned char *b = body;
	struct peer *p;

	(void)data;
	if (to < 1 || to > NPEERS)
		fail("message to an unknown peer");
	p = &peers[to];
	if (type == PEER_MSG_SNAPSHOT_ACK) {
		if (len != 24)
			fail("ack is not 24 bytes");
		if (ld64(b + 16) == 0) {
			p->rx_stream = ld64(b);
			p->rx_next = ld64(b + 8);
		} else {
			if (ld64(b + 8) != 0)
				fail("failed ack with a non-zero offset");
			p->rx_next = 0;
		}
		return 0;
	}
	if (type != PEER_MSG_SNAPSHOT)
		fail("unexpected message type");
	if (len >= CHUNK_HDR && ld64(b + 8) == 0 && p->cand_data) {
		free(p->tx_data);
		p->tx_data = p->cand_data;
		p->tx_len = p->cand_len;
		p->tx_index = p->cand_index;
		p->tx_term = p->cand_term;
		p->cand_data = NULL;
	}
	check_out_chunk(p, b, len);
	free(p->last);
	p->last = malloc(len);
	if (!p->last)
		abort();
	memcpy(p->last, b, len);
	p->last_len = len;
	return 0;
}

static struct kvraft_net net = { NULL, net_send };

/* ---- input reader ---------------------------------------------------- */

struct rd {
	const uint8_t *p;
	size_t left;
};

static bool take(struct rd *r, size_t n, const uint8_t **out)
{
	if (r->left < n)
		return false;
	*out = r->p;
	r->p += n;
	r->left -= n;
	return true;
}

static bool u8(struct rd *r, unsigned *v)
{
	const uint8_t *b;

	if (!take(r, 1, &b))
		return false;
	*v = b[0];
	return true;
}

static bool u16(struct rd *r, unsigned *v)
{
	const uint8_t *b;

	if (!take(r, 2, &b))
		return false;
	*v = (unsigned)b[0] | (unsigned)b[1] << 8;
	return true;
}

/* ---- mode 0: the stream ---------------------------------------------- */

static void drain(void)
{
	while (node.snap_pending > 0)
		uv_run(&loop, UV_RUN_ONCE);
}

/* An InstallSnapshot meta for index/term describing total bytes. */
static int build_meta(uint64_t index, uint64_t term, uint64_t total,
		      uint32_t crc, unsigned char **out, size_t *len)
{
	struct raft_message m;
	struct kvraft_desc d = { index, term, total, crc, index, term };
	unsigned char desc[KVRAFT_DESC_SIZE];
	int rv;

	memset(&m, 0, sizeof(m));
	m.type = RAFT_IO_INSTALL_SNAPSHOT;
	m.install_snapshot.term = term;
	m.install_snapshot.last_index = index;
	m.install_snapshot.last_term = term;
	m.install_snapshot.conf_index = index;
	raft_configuration_init(&m.install_snapshot.conf);
	if (raft_configuration_add(&m.install_snapshot.conf, 1, "n1",
				   RAFT_VOTER) != 0)
		abort();
	io_desc_encode(&d, desc);
	m.install_snapshot.data.base = desc;
	m.install_snapshot.data.len = sizeof(desc);
	rv = io_msg_encode(&m, out, len);
	raft_configuration_close(&m.install_snapshot.conf);
	return rv;
}

static void shaped_chunk(struct rd *r, uint64_t from)
{
	struct peer *p = &peers[from];
	unsigned flags, dlen, mlen, index, term, extra = 0;
	const uint8_t *meta = NULL, *dat;
	unsigned char *built = NULL;
	size_t blen = 0;

	if (!u8(r, &flags) || !u16(r, &dlen) || !u8(r, &mlen) ||
	    !u8(r, &index) || !u8(r, &term))
		return;
	bool fresh = flags & 1, final = flags & 2;
	if (!final && !u8(r, &extra))
		return;
	if (!(flags & 8) && final && !take(r, mlen, &meta))
		return;
	if (!take(r, dlen, &dat))
		return;
	uint64_t stream = fresh ? p->rx_stream + 1 : p->rx_stream;
	uint64_t off = fresh ? 0 : p->rx_next;
	uint64_t total = off + dlen + (final ? 0 : extra);
	uint32_t crc = fresh ? 0 : p->rx_crc;
	crc = kv_crc32c(crc, dat, dlen);
	if (final && (flags & 8)) {
		uint64_t dsize = (flags & 16) ? total + 1 : total;
		if (build_meta(index, term, dsize, crc, &built, &blen) != 0)
			fail("build_meta");
		meta = built;
		mlen = (unsigned)blen;
	}
	if (!final)
		mlen = 0;
	size_t len = CHUNK_HDR + mlen + dlen;
	unsigned char *b = malloc(len);
	if (!b)
		abort();
	io_put64(b, stream);
	io_put64(b + 8, off);
	io_put64(b + 16, total);
	io_put32(b + 24, final && (flags & 4) ? crc : (final ? crc ^ 1 : 0));
	io_put32(b + 28, final ? 1 : 0);
	io_put64(b + 32, mlen);
	if (mlen)
		memcpy(b + CHUNK_HDR, meta, mlen);
	memcpy(b + CHUNK_HDR + mlen, dat, dlen);
	p->rx_crc = crc;
	if (final) {
		p->fin_crc = io_get32(b + 24);
		p->fin_seen = true;
		p->looped = false;
	}
	if (fresh)
		p->rx_stream = stream;
	node_snapshot_on_chunk(&node, from, b, len);
	free(b);
	free(built);
}

static void raw_chunk(struct rd *r, uint64_t from)
{
	unsigned n;
	const uint8_t *b;

	if (!u16(r, &n) || !take(r, n, &b))
		return;
	/* the receiver may accept it: remember what a final chunk says */
	if (n >= CHUNK_HDR && io_get32(b + 28) == 1) {
		peers[from].fin_crc = io_get32(b + 24);
		peers[from].fin_seen = true;
		peers[from].looped = false;
	}
	/* copy: the node must not rely on the input staying put */
	unsigned char *c = malloc(n ? n : 1);
	if (!c)
		abort();
	memcpy(c, b, n);
	node_snapshot_on_chunk(&node, from, c, n);
	free(c);
}

static void send_file(struct rd *r, uint64_t to)
{
	struct peer *p = &peers[to];
	unsigned index, term, n;
	const uint8_t *b;
	char path[512];
	unsigned char *meta = NULL;
	size_t mlen = 0;

	if (!u8(r, &index) || !u8(r, &term) || !u16(r, &n) ||
	    !take(r, n, &b))
		return;
	/* a new inode each time: a stream already reading the old file
	 * keeps its bytes, as with the state machine's snapshot files */
	char tmp[600];
	kvraft_io_snap_path(&io, term, index, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || (n && write(fd, b, n) != (ssize_t)n))
		fail("cannot write the snapshot file to send");
	close(fd);
	if (rename(tmp, path) != 0)
		fail("cannot rename the snapshot file to send");
	free(p->cand_data);
	p->cand_data = malloc(n ? n : 1);
	if (!p->cand_data)
		abort();
	memcpy(p->cand_data, b, n);
	p->cand_len = n;
	p->cand_index = index;
	p->cand_term = term;
	if (build_meta(index, term, n, kv_crc32c(0, b, n), &meta, &mlen) != 0)
		fail("build_meta");
	struct raft_message m;
	memset(&m, 0, sizeof(m));
	if (io_msg_decode(meta, mlen, &m) != 0)
		fail("own meta does not decode");
	m.server_id = to;
	(void)node_snapshot_send(&node, &m);
	io_msg_release(&m);
	free(meta);
}

static void good_ack(struct rd *r, uint64_t from)
{
	struct peer *p = &peers[from];
	unsigned st;
	unsigned char a[24];

	if (!u8(r, &st) || p->last == NULL)
		return;
	uint64_t mlen = ld64(p->last + 32);
	io_put64(a, ld64(p->last));
	io_put64(a + 8, ld64(p->last + 8) + (p->last_len - CHUNK_HDR - mlen));
	io_put64(a + 16, (st & 1) ? (uint64_t)(int64_t)KV_EIO : 0);
	node_snapshot_on_ack(&node, from, a, sizeof(a));
}

static void loop_back(uint64_t from)
{
	struct peer *p = &peers[from];

	if (p->last == NULL)
		return;
	unsigned char *c = malloc(p->last_len);
	size_t n = p->last_len;
	if (!c)
		abort();
	memcpy(c, p->last, n);
	if (io_get32(c + 28) == 1) {
		p->fin_crc = io_get32(c + 24);
		p->fin_seen = true;
		p->looped = true;
	}
	node_snapshot_on_chunk(&node, from, c, n);
	free(c);
}

static void rm_dir_files(const char *d, bool check_tmp)
{
	DIR *dp = opendir(d);
	struct dirent *de;
	char path[512];

	if (!dp)
		return;
	while ((de = readdir(dp)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (check_tmp && strncmp(de->d_name, "recv-", 5) == 0)
			fail("a recv-*.tmp file survived node_snapshot_close");
		snprintf(path, sizeof(path), "%s/%s", d, de->d_name);
		if (unlink(path) != 0 && (errno == EISDIR || errno == EPERM)) {
			rm_dir_files(path, false);
			rmdir(path);
		}
	}
	closedir(dp);
}

static int count_fds(void)
{
	DIR *dp = opendir("/proc/self/fd");
	int n = 0;

	if (!dp)
		return -1;
	while (readdir(dp) != NULL)
		n++;
	closedir(dp);
	return n;
}

static void stream_mode(const uint8_t *data, size_t size)
{
	struct rd r = { data + 1, size - 1 };
	unsigned op;
	int fds = count_fds();

	memset(&node, 0, sizeof(node));
	memset(peers, 0, sizeof(peers));
	node.loop = &loop;
	node.net = &net;
	node.io = &io;
	node.cfg.snapshot_chunk = 16u << ((data[0] >> 1) & 7);
	node.cfg.request_timeout_ms = 7000;
	for (int steps = 0; steps < 256 && u8(&r, &op); steps++) {
		uint64_t peer = 1 + ((op >> 3) & 3) % NPEERS;

		switch (op & 7) {
		case 0:
			raw_chunk(&r, peer);
			break;
		case 1: {
			const uint8_t *b;
			if (take(&r, 24, &b)) {
				unsigned char c[24];
				memcpy(c, b, 24);
				node_snapshot_on_ack(&node, peer, c, 24);
			}
			break;
		}
		case 2:
			shaped_chunk(&r, peer);
			break;
		case 3:
			send_file(&r, peer);
			break;
		case 4:
			good_ack(&r, peer);
			break;
		case 5:
			loop_back(peer);
			break;
		default:
			break;
		}
		drain();
	}
	node_snapshot_sweep(&node); /* nothing is old enough: a no-op */
	if (node_snapshot_close(&node) != 0)
		fail("node_snapshot_close found work pending after drain");
	if (node.snap_in != NULL || node.snap_out != NULL)
		fail("streams left after node_snapshot_close");
	rm_dir_files(io.dir, true);
	for (int i = 0; i <= NPEERS; i++) {
		free(peers[i].last);
		free(peers[i].tx_data);
		free(peers[i].cand_data);
	}
	memset(peers, 0, sizeof(peers));
	if (fds >= 0 && count_fds() != fds)
		fail("file descriptor leak");
}

/* ---- mode 1: restore -------------------------------------------------- */

static void write_file(const char *path, const void *b, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0 || (n && write(fd, b, n) != (ssize_t)n))
		fail("cannot write an input file");
	close(fd);
}

static void restore_mode(const uint8_t *data, size_t size)
{
	char snap[512], side[600], store[512], mdb[600];
	struct mvcc_checkpoint_info info;
	unsigned flags = data[0];
	size_t n, flen;
	const uint8_t *file;
	bool fixed = (flags & 2) && lmdb_ok, none = flags & 4;
	uint32_t crc;
	int rc;

	if (size < 2)
		return;
	n = data[1];
	if (n > size - 2)
		n = size - 2;
	file = data + 2 + n;
	flen = size - 2 - n;
	crc = kv_crc32c(0, file, flen);
	snprintf(snap, sizeof(snap), "%s/restore.snap", base);
	snprintf(side, sizeof(side), "%s.crc", snap);
	snprintf(store, sizeof(store), "%s/store", base);
	snprintf(mdb, sizeof(mdb), "%s/data.mdb", store);
	write_file(snap, file, flen);
	if (fixed) {
		char line[64];
		int l = snprintf(line, sizeof(line),
				 "crc32c=%08" PRIx32 " size=%zu\n", crc, flen);
		write_file(side, line, (size_t)l);
	} else if (!none) {
		write_file(side, data + 2, n);
	}
	rc = mvcc_restore(snap, store, &info);
	if (rc != 0 && rc != KV_ECORRUPT)
		fail("mvcc_restore returned neither 0 nor KV_ECORRUPT");
	if (rc == 0) {
		uint64_t got;
		unsigned char *copy;

		if (none)
			fail("restore accepted a snapshot without its .crc");
		if (info.crc32c != crc || info.size != flen)
			fail("restore info differs from the file");
		if (crc_of_file(mdb, &got, &copy) != crc || got != flen ||
		    (flen && memcmp(copy, file, flen) != 0))
			fail("installed data.mdb differs from the snapshot");
		free(copy);
		n_restored++;
	}
	rm_dir_files(store, false);
	rmdir(store);
	unlink(side);
	unlink(snap);
}

/* ---- seeds ----------------------------------------------------------- */

static void put_seed(const char *dir, const char *name, const void *b,
		     size_t n)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	write_file(path, b, n);
}

static size_t put_le16(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	return 2;
}

static void mkseeds(const char *out)
{
	unsigned char b[4096];
	size_t n;

	/* stream: send a 100-byte file to peer 1 in 32-byte chunks, ack and
	 * loop back each chunk until it is published */
	n = 0;
	b[n++] = 0 | (1 << 1); /* mode 0, chunk 32 */
	b[n++] = 3 | (0 << 3); /* send to peer 1 */
	b[n++] = 9;
	b[n++] = 2;
	n += put_le16(b + n, 100);
	for (int i = 0; i < 100; i++)
		b[n++] = (unsigned char)('a' + i % 26);
	for (int i = 0; i < 4; i++) {
		b[n++] = 5; /* loop back to ourselves as peer 1 */
		b[n++] = 4; /* ack it */
		b[n++] = 0;
	}
	put_seed(out, "stream-send-loopback", b, n);

	/* stream: two shaped chunks from peer 2, correct CRC, built meta */
	n = 0;
	b[n++] = 0;
	b[n++] = 2 | (1 << 3);
	b[n++] = 1;           /* fresh */
	n += put_le16(b + n, 8); /* data */
	b[n++] = 0;             /* meta len */
	b[n++] = 5;             /* index */
	b[n++] = 1;             /* term */
	b[n++] = 4;             /* extra */
	memcpy(b + n, "ABCDEFGH", 8);
	n += 8;
	b[n++] = 2 | (1 << 3);
	b[n++] = 2 | 4 | 8;     /* final, fix crc, build meta */
	n += put_le16(b + n, 4);
	b[n++] = 0;
	b[n++] = 5;
	b[n++] = 1;
	memcpy(b + n, "IJKL", 4);
	n += 4;
	put_seed(out, "stream-shaped", b, n);

	/* stream: a raw final chunk with a raw (empty) meta from peer 3 */
	n = 0;
	b[n++] = 0;
	b[n++] = 0 | (2 << 3);
	n += put_le16(b + n, CHUNK_HDR + 3);
	memset(b + n, 0, CHUNK_HDR);
	b[n + 16] = 3;  /* total */
	b[n + 28] = 1;  /* final */
	n += CHUNK_HDR;
	memcpy(b + n, "xyz", 3);
	n += 3;
	b[n++] = 1 | (2 << 3);
	memset(b + n, 0, 24);
	n += 24;
	put_seed(out, "stream-raw", b, n);

	/* restore: a real checkpoint and its side file */
	{
		char dir[512], path[600], side[700];
		struct mvcc *m = NULL;
		struct mvcc_options o;
		struct mvcc_checkpoint_info info;

		memset(&o, 0, sizeof(o));
		o.quota_bytes = 1 << 20;
		snprintf(dir, sizeof(dir), "%s/seedstore", base);
		snprintf(path, sizeof(path), "%s/seed.snap", base);
		snprintf(side, sizeof(side), "%s.crc", path);
		if (mvcc_open(dir, &o, &m) != 0 || mvcc_begin_write(m) != 0 ||
		    mvcc_set_applied(m, 7, 2) != 0 || mvcc_commit(m, true) != 0 ||
		    mvcc_checkpoint(m, path, &info) != 0)
			fail("cannot write the seed checkpoint");
		mvcc_close(m);
		uint64_t fsz, ssz;
		unsigned char *fb, *sb;
		crc_of_file(path, &fsz, &fb);
		crc_of_file(side, &ssz, &sb);
		unsigned char *s = malloc(2 + ssz + fsz);
		if (!s)
			abort();
		s[0] = 1;
		s[1] = (unsigned char)ssz;
		memcpy(s + 2, sb, ssz);
		memcpy(s + 2 + ssz, fb, fsz);
		put_seed(out, "restore-checkpoint", s, 2 + ssz + fsz);
		s[0] = 1 | 2;
		put_seed(out, "restore-checkpoint-fixed", s, 2 + ssz + fsz);
		free(s);
		free(fb);
		free(sb);
		rm_dir_files(dir, false);
		rmdir(dir);
		unlink(path);
		unlink(side);
	}
	{
		const char *line = "crc32c=00000000 size=0\n";
		n = 0;
		b[n++] = 1;
		b[n++] = (unsigned char)strlen(line);
		memcpy(b + n, line, strlen(line));
		n += strlen(line);
		put_seed(out, "restore-empty", b, n);
	}
}

/* ---- entry ----------------------------------------------------------- */

static void remove_base(void)
{
	if (getenv("FUZZ_SNAPSHOT_VERBOSE"))
		fprintf(stderr,
			"fuzz_snapshot: delivered %lu, final chunks sent %lu, "
			"restored %lu\n",
			n_delivered, n_sent_final, n_restored);
	rm_dir_files(base, false);
	rmdir(base);
}

static void init(void)
{
	const char *tmp = getenv("TMPDIR");
	const char *seeds = getenv("FUZZ_SNAPSHOT_MKSEEDS");

	kv_log_set_level(KV_LOG_ERROR);
	snprintf(base, sizeof(base), "%s/fuzz_snapshot.XXXXXX",
		 access("/dev/shm", W_OK) == 0 ? "/dev/shm"
					       : tmp ? tmp : "/tmp");
	if (!mkdtemp(base))
		fail("mkdtemp");
	atexit(remove_base);
	if (snprintf(io.dir, sizeof(io.dir), "%s/snap", base) >=
	    (int)sizeof(io.dir))
		fail("temporary directory name too long");
	if (mkdir(io.dir, 0700) != 0)
		fail("mkdir snap");
	if (uv_loop_init(&loop) != 0)
		fail("uv_loop_init");
	lmdb_ok = getenv("FUZZ_SNAPSHOT_LMDB") != NULL &&
		  strcmp(getenv("FUZZ_SNAPSHOT_LMDB"), "0") != 0;
	if (seeds) {
		mkseeds(seeds);
		remove_base();
		_exit(0); /* exit() would be reported as a crash by libFuzzer */
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool inited;

	if (!inited) {
		inited = true;
		init();
	}
	if (size < 1)
		return 0;
	if (data[0] & 1)
		restore_mode(data, size);
	else
		stream_mode(data, size);
	return 0;
}

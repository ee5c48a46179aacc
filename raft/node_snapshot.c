/* raft/node_snapshot.c — streaming snapshot files to lagging followers.
 *
 * raft's InstallSnapshot carries only our 40-byte descriptor; the state is
 * the file <snap>/<term>-<index>.snap. When raft sends one, the leader
 * streams that file in PEER_MSG_SNAPSHOT chunks, one in flight per peer
 * (each acknowledged before the next is read, so memory and loop time per
 * step are bounded by the chunk size):
 *
 *   chunk: u64 stream | u64 offset | u64 total | u32 crc32c of the whole
 *          file (valid in the final chunk) | u32 flags (bit0 final) |
 *          u64 meta_len | meta (the encoded InstallSnapshot message, final
 *          chunk only) | data
 *   ack:   u64 stream | u64 next offset | i64 status (0 or KV_E*)
 *
 * The receiver writes <snap>/recv-<from>.tmp, checks offsets, size and
 * CRC, fsyncs, renames it to <term>-<index>.snap, fsyncs the directory and
 * only then hands raft the InstallSnapshot (raft stores the descriptor via
 * snapshot_put and calls fsm->restore -> sm->restore(path)). Any error
 * aborts the stream; raft resends after its install-snapshot timeout. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/errors.h"
#include "common/log.h"
#include "io_codec.h"
#include "kv/errors.h"
#include "kvraft/transport.h"
#include "node_internal.h"

#define CHUNK_HDR 40u
#define FLAG_FINAL 1u

struct snap_out {
	struct snap_out *next;
	uint64_t to, stream, index;
	int fd;
	uint64_t offset, total, sent_until;
	uint32_t crc;
	unsigned char *meta;
	size_t meta_len;
	uint64_t last_activity;
};

struct snap_in {
	struct snap_in *next;
	uint64_t from, stream;
	int fd;
	uint64_t offset;
	uint32_t crc;
	uint64_t last_activity;
	char tmp[4200];
};

static void out_free(struct kvraft_node *n, struct snap_out *o)
{
	struct snap_out **pp = &n->snap_out;
	while (*pp && *pp != o)
		pp = &(*pp)->next;
	if (*pp)
		*pp = o->next;
	if (o->fd >= 0)
		close(o->fd);
	free(o->meta);
	free(o);
}

static void in_free(struct kvraft_node *n, struct snap_in *in, bool unlink_tmp)
{
	struct snap_in **pp = &n->snap_in;
	while (*pp && *pp != in)
		pp = &(*pp)->next;
	if (*pp)
		*pp = in->next;
	if (in->fd >= 0)
		close(in->fd);
	if (unlink_tmp)
		unlink(in->tmp);
	free(in);
}

/* Reads and sends the chunk at o->offset. */
static int send_chunk(struct kvraft_node *n, struct snap_out *o)
{
	uint64_t left = o->total - o->offset;
	size_t len = left < n->cfg.snapshot_chunk ? (size_t)left
						   : n->cfg.snapshot_chunk;
	bool final = o->offset + len == o->total;
	size_t meta_len = final ? o->meta_len : 0;
	unsigned char *b = malloc(CHUNK_HDR + meta_len + len);
	if (b == NULL)
		return KV_ENOMEM;
	size_t got = 0;
	while (got < len) {
		ssize_t r = pread(o->fd, b + CHUNK_HDR + meta_len + got,
				  len - got, (off_t)(o->offset + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			free(b);
			return r < 0 ? kv_from_errno(errno) : KV_ECORRUPT;
		}
		got += (size_t)r;
	}
	o->crc = kv_crc32c(o->crc, b + CHUNK_HDR + meta_len, len);
	io_put64(b, o->stream);
	io_put64(b + 8, o->offset);
	io_put64(b + 16, o->total);
	io_put32(b + 24, final ? o->crc : 0);
	io_put32(b + 28, final ? FLAG_FINAL : 0);
	io_put64(b + 32, meta_len);
	if (meta_len)
		memcpy(b + CHUNK_HDR, o->meta, meta_len);
	int rv = n->net->send(n->net->data, o->to, PEER_MSG_SNAPSHOT, b,
			      CHUNK_HDR + meta_len + len);
	free(b);
	o->sent_until = o->offset + len;
	o->last_activity = uv_now(n->loop);
	return rv;
}

int node_snapshot_send(void *data, const struct raft_message *m)
{
	struct kvraft_node *n = data;
	const struct raft_install_snapshot *s = &m->install_snapshot;
	struct kvraft_desc d;
	if (io_desc_decode(s->data.base, s->data.len, &d) != 0)
		return KV_EINVAL;
	for (struct snap_out *o = n->snap_out; o; o = o->next)
		if (o->to == m->server_id) {
			if (o->index == s->last_index)
				return 0; /* already streaming it */
			out_free(n, o);
			break;
		}
	struct snap_out *o = calloc(1, sizeof(*o));
	if (o == NULL)
		return KV_ENOMEM;
	o->fd = -1;
	char path[4200];
	kvraft_io_snap_path(n->io, d.term, d.index, path, sizeof(path));
	o->fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (o->fd < 0 || fstat(o->fd, &st) != 0) {
		KV_WARN("raft", "cannot open snapshot to send",
			"path=%s err=\"%s\"", path, strerror(errno));
		if (o->fd >= 0)
			close(o->fd);
		free(o);
		return KV_EIO;
	}
	int rv = io_msg_encode(m, &o->meta, &o->meta_len);
	if (rv != 0) {
		close(o->fd);
		free(o);
		return rv;
	}
	o->to = m->server_id;
	o->stream = ++n->next_stream;
	o->index = s->last_index;
	o->total = (uint64_t)st.st_size;
	o->next = n->snap_out;
	n->snap_out = o;
	KV_INFO("raft", "streaming snapshot", "to=%llx index=%llu size=%llu",
		(unsigned long long)o->to, (unsigned long long)o->index,
		(unsigned long long)o->total);
	rv = send_chunk(n, o);
	if (rv != 0)
		out_free(n, o);
	return rv;
}

void node_snapshot_on_ack(struct kvraft_node *n, uint64_t from,
			  const void *body, size_t len)
{
	const unsigned char *b = body;
	if (len != 24)
		return;
	uint64_t stream = io_get64(b), next = io_get64(b + 8);
	int status = (int)(int64_t)io_get64(b + 16);
	struct snap_out *o = n->snap_out;
	while (o && !(o->to == from && o->stream == stream))
		o = o->next;
	if (o == NULL)
		return;
	if (status != 0 || next != o->sent_until) {
		KV_WARN("raft", "snapshot stream aborted by receiver",
			"to=%llx err=\"%s\"", (unsigned long long)from,
			kv_strerror(status));
		out_free(n, o);
		return;
	}
	if (next == o->total) {
		KV_INFO("raft", "snapshot sent", "to=%llx index=%llu",
			(unsigned long long)from,
			(unsigned long long)o->index);
		out_free(n, o);
		return;
	}
	o->offset = next;
	if (send_chunk(n, o) != 0)
		out_free(n, o);
}

static void ack(struct kvraft_node *n, uint64_t to, uint64_t stream,
		uint64_t next, int status)
{
	unsigned char b[24];
	io_put64(b, stream);
	io_put64(b + 8, next);
	io_put64(b + 16, (uint64_t)(int64_t)status);
	n->net->send(n->net->data, to, PEER_MSG_SNAPSHOT_ACK, b, sizeof(b));
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return kv_from_errno(errno);
	int rv = fsync(fd) == 0 ? 0 : kv_from_errno(errno);
	close(fd);
	return rv;
}

/* Publishing a complete file: fsync, rename, fsync dir on a worker. */
struct fin_work {
	uv_work_t work;
	struct kvraft_node *node;
	struct snap_in *in; /* off the list, owned here */
	struct raft_message m;
	uint64_t stream, total, index;
	char path[4200];
	const char *dir;
	int status;
};

static void fin_work_fn(uv_work_t *w)
{
	struct fin_work *f = w->data;
	if (fsync(f->in->fd) != 0 || rename(f->in->tmp, f->path) != 0) {
		f->status = kv_from_errno(errno);
		return;
	}
	f->status = fsync_dir(f->dir);
}

static void fin_after(uv_work_t *w, int status)
{
	struct fin_work *f = w->data;
	struct kvraft_node *n = f->node;
	struct snap_in *in = f->in;
	uint64_t from = in->from;
	(void)status;
	n->snap_pending--;
	close(in->fd);
	in->fd = -1;
	if (f->status != 0)
		unlink(in->tmp);
	free(in);
	if (n->closing || n->failed) {
		io_msg_release(&f->m);
		free(f);
		if (n->closing)
			node_close_step(n);
		return;
	}
	if (f->status == 0) {
		KV_INFO("raft", "snapshot received",
			"from=%llx index=%llu size=%llu",
			(unsigned long long)from, (unsigned long long)f->index,
			(unsigned long long)f->total);
		kvraft_io_deliver(n->io, from, &f->m);
	} else {
		KV_WARN("raft", "cannot store received snapshot",
			"from=%llx err=\"%s\"", (unsigned long long)from,
			kv_strerror(f->status));
		io_msg_release(&f->m);
	}
	ack(n, from, f->stream, f->status == 0 ? f->total : 0, f->status);
	free(f);
}

/* The final chunk arrived and the file is complete: verify, then publish
 * it off the loop. 0 when the work was queued (it acks); else an error
 * (in is still on the list). */
static int finish_in(struct kvraft_node *n, struct snap_in *in,
		     const unsigned char *meta, size_t meta_len,
		     uint64_t total, uint32_t crc)
{
	if (in->offset != total || in->crc != crc)
		return KV_ECORRUPT;
	struct fin_work *f = calloc(1, sizeof(*f));
	if (f == NULL)
		return KV_ENOMEM;
	int rv = io_msg_decode(meta, meta_len, &f->m);
	if (rv != 0) {
		free(f);
		return rv;
	}
	struct kvraft_desc d;
	if (f->m.type != RAFT_IO_INSTALL_SNAPSHOT ||
	    io_desc_decode(f->m.install_snapshot.data.base,
			   f->m.install_snapshot.data.len, &d) != 0 ||
	    d.index != f->m.install_snapshot.last_index || d.size != total) {
		io_msg_release(&f->m);
		free(f);
		return KV_EPROTO;
	}
	kvraft_io_snap_path(n->io, d.term, d.index, f->path, sizeof(f->path));
	f->dir = kvraft_io_snap_dir(n->io);
	f->node = n;
	f->stream = in->stream;
	f->total = total;
	f->index = d.index;
	f->work.data = f;
	f->in = in;
	if (uv_queue_work(n->loop, &f->work, fin_work_fn, fin_after) != 0) {
		io_msg_release(&f->m);
		free(f);
		return KV_EIO;
	}
	/* off the list: a new stream from the same peer starts afresh */
	struct snap_in **pp = &n->snap_in;
	while (*pp && *pp != in)
		pp = &(*pp)->next;
	if (*pp)
		*pp = in->next;
	n->snap_pending++;
	return 0;
}

void node_snapshot_on_chunk(struct kvraft_node *n, uint64_t from,
			    const void *body, size_t len)
{
	const unsigned char *b = body;
	if (len < CHUNK_HDR)
		return;
	uint64_t stream = io_get64(b), offset = io_get64(b + 8),
		 total = io_get64(b + 16), meta_len = io_get64(b + 32);
	uint32_t crc = io_get32(b + 24), flags = io_get32(b + 28);
	if (meta_len > len - CHUNK_HDR || flags > FLAG_FINAL ||
	    (meta_len > 0) != ((flags & FLAG_FINAL) != 0)) {
		ack(n, from, stream, 0, KV_EPROTO);
		return;
	}
	const unsigned char *data = b + CHUNK_HDR + meta_len;
	size_t dlen = len - CHUNK_HDR - (size_t)meta_len;
	struct snap_in *in = n->snap_in;
	while (in && in->from != from)
		in = in->next;
	if (offset == 0) {
		if (in)
			in_free(n, in, true);
		in = calloc(1, sizeof(*in));
		if (in == NULL) {
			ack(n, from, stream, 0, KV_ENOMEM);
			return;
		}
		in->from = from;
		in->stream = stream;
		snprintf(in->tmp, sizeof(in->tmp), "%s/recv-%llx.tmp",
			 kvraft_io_snap_dir(n->io), (unsigned long long)from);
		in->fd = open(in->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
			      0600);
		if (in->fd < 0) {
			free(in);
			ack(n, from, stream, 0, kv_from_errno(errno));
			return;
		}
		in->next = n->snap_in;
		n->snap_in = in;
	}
	if (in == NULL || in->stream != stream || in->offset != offset ||
	    offset + dlen > total) {
		if (in && in->stream == stream)
			in_free(n, in, true);
		ack(n, from, stream, 0, KV_EPROTO);
		return;
	}
	size_t put = 0;
	while (put < dlen) {
		ssize_t w = pwrite(in->fd, data + put, dlen - put,
				   (off_t)(offset + put));
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			int e = w < 0 ? kv_from_errno(errno) : KV_EIO;
			in_free(n, in, true);
			ack(n, from, stream, 0, e);
			return;
		}
		put += (size_t)w;
	}
	in->crc = kv_crc32c(in->crc, data, dlen);
	in->offset += dlen;
	in->last_activity = uv_now(n->loop);
	if (flags & FLAG_FINAL) {
		int rv = finish_in(n, in, b + CHUNK_HDR, (size_t)meta_len,
				   total, crc);
		if (rv != 0) {
			KV_WARN("raft", "snapshot stream rejected",
				"from=%llx err=\"%s\"",
				(unsigned long long)from, kv_strerror(rv));
			in_free(n, in, true);
			ack(n, from, stream, 0, rv);
		}
		return;
	}
	ack(n, from, stream, in->offset, 0);
}

void node_snapshot_sweep(struct kvraft_node *n)
{
	uint64_t now = uv_now(n->loop);
	uint64_t limit = n->cfg.request_timeout_ms;
	struct snap_out *o = n->snap_out;
	while (o) {
		struct snap_out *next = o->next;
		if (now - o->last_activity > limit)
			out_free(n, o);
		o = next;
	}
	struct snap_in *in = n->snap_in;
	while (in) {
		struct snap_in *next = in->next;
		if (now - in->last_activity > limit)
			in_free(n, in, true);
		in = next;
	}
}

int node_snapshot_close(struct kvraft_node *n)
{
	while (n->snap_out)
		out_free(n, n->snap_out);
	while (n->snap_in)
		in_free(n, n->snap_in, true);
	return n->snap_pending; /* each fin_after steps once */
}

/* raft/io.c — struct raft_io over storage/wal; see kvraft/io.h. */
#include "kvraft/io.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/errors.h"
#include "common/log.h"
#include "io_codec.h"
#include "kv/errors.h"
#include "kvraft/node.h"
#include "kvraft/transport.h"

#define META_MAGIC "KVSNAPM1"

/* A completed request waiting for the loop (WAL appends from the writer
 * thread; sends and snapshot gets deferred so raft never sees a callback
 * from inside the call that started it). */
enum done_kind { DONE_APPEND, DONE_SEND, DONE_GET };

struct done {
	struct done *next;
	enum done_kind kind;
	int status;
	struct kvraft_io *io;
	union {
		struct {
			struct raft_io_append *req;
			raft_io_append_cb cb;
		} append;
		struct {
			struct raft_io_send *req;
			raft_io_send_cb cb;
		} send;
		struct {
			struct raft_io_snapshot_get *req;
			raft_io_snapshot_get_cb cb;
			struct raft_snapshot *snap;
		} get;
	};
	struct wal_append_req wreq;
};

struct snap_state {
	bool have;
	struct kvraft_desc desc;
	uint64_t conf_index;
	struct raft_configuration conf;
};

struct put_work {
	uv_work_t work;
	struct kvraft_io *io;
	struct raft_io_snapshot_put *req;
	raft_io_snapshot_put_cb cb;
	unsigned char *meta;
	size_t meta_len;
	struct kvraft_desc desc;
	uint64_t conf_index;
	struct raft_configuration conf; /* copy, becomes current on success */
	unsigned trailing;
	uint64_t drop_to;
	uint64_t keep_prev_index;
	int status;
	char errmsg[256];
};

struct async_job {
	uv_work_t work;
	struct kvraft_io *io;
	struct raft_io_async_work *req;
	raft_io_async_work_cb cb;
	int status;
};

struct kvraft_io {
	struct raft_io io;
	uv_loop_t *loop;
	char *dir, *wal_dir, *snap_dir;
	struct kvraft_net *net;
	struct kvraft_io_hooks hooks;
	struct wal *wal;
	raft_id id;
	uint64_t term; /* cached persisted term */
	uint64_t rng;

	uv_timer_t timer;
	uv_async_t async;
	int open_handles;
	raft_io_tick_cb tick;
	raft_io_recv_cb recv;
	raft_io_close_cb close_cb;
	bool started, closing, failed;
	int pending_work;

	pthread_mutex_t mu;
	struct done *done_head, **done_tail; /* under mu */

	struct snap_state snap;
	char addr[32];
};

static void failstop(struct kvraft_io *io, int err, const char *what)
{
	if (io->failed)
		return;
	io->failed = true;
	KV_ERROR("raft", "raft io failed, stopping (fail-stop)",
		 "what=%s err=\"%s\" detail=\"%s\"", what, kv_strerror(err),
		 io->wal ? wal_errmsg(io->wal) : "");
	if (io->started)
		uv_timer_stop(&io->timer);
	if (io->hooks.on_failstop)
		io->hooks.on_failstop(io->hooks.data, err);
}

static void push_done(struct kvraft_io *io, struct done *d)
{
	pthread_mutex_lock(&io->mu);
	d->next = NULL;
	*io->done_tail = d;
	io->done_tail = &d->next;
	pthread_mutex_unlock(&io->mu);
	uv_async_send(&io->async);
}

static void run_done(struct kvraft_io *io)
{
	for (;;) {
		pthread_mutex_lock(&io->mu);
		struct done *d = io->done_head;
		io->done_head = NULL;
		io->done_tail = &io->done_head;
		pthread_mutex_unlock(&io->mu);
		if (d == NULL)
			break;
		while (d != NULL) {
			struct done *next = d->next;
			switch (d->kind) {
			case DONE_APPEND:
				if (d->status != 0 && d->status != KV_ECLOSED)
					failstop(io, d->status, "append");
				d->append.cb(d->append.req,
					     d->status == 0 ? 0 : RAFT_IOERR);
				break;
			case DONE_SEND:
				/* raft sends TimeoutNow (leadership
				 * transfer) without a callback */
				if (d->send.cb != NULL)
					d->send.cb(d->send.req, d->status);
				break;
			case DONE_GET:
				d->get.cb(d->get.req, d->get.snap, d->status);
				break;
			}
			free(d);
			d = next;
		}
	}
}

static void on_async(uv_async_t *h)
{
	struct kvraft_io *io = h->data;
	run_done(io);
	if (!io->closing && io->hooks.on_event)
		io->hooks.on_event(io->hooks.data);
}

static void on_tick(uv_timer_t *t)
{
	struct kvraft_io *io = t->data;
	if (io->failed || io->closing)
		return;
	io->tick(&io->io);
	if (io->hooks.on_event)
		io->hooks.on_event(io->hooks.data);
}

/* ---- helpers: files ---- */

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return kv_from_errno(errno);
	int rv = fsync(fd) == 0 ? 0 : kv_from_errno(errno);
	close(fd);
	return rv;
}

static int write_file_durable(const char *dir, const char *name,
			      const unsigned char *p, size_t len)
{
	char tmp[4200], path[4200];
	snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, name);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return kv_from_errno(errno);
	size_t off = 0;
	while (off < len) {
		ssize_t n = write(fd, p + off, len - off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			close(fd);
			return kv_from_errno(e);
		}
		off += (size_t)n;
	}
	if (fsync(fd) != 0) {
		int e = errno;
		close(fd);
		return kv_from_errno(e);
	}
	close(fd);
	if (rename(tmp, path) != 0)
		return kv_from_errno(errno);
	return fsync_dir(dir);
}

/* mkdir -p (mode 0700 for what it creates). */
static int mkdir_p(const char *d)
{
	char buf[4096];
	size_t len = strlen(d);
	if (len == 0 || len >= sizeof(buf))
		return KV_EINVAL;
	memcpy(buf, d, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		char c = buf[i];
		buf[i] = '\0';
		if (mkdir(buf, 0700) != 0 && errno != EEXIST)
			return kv_from_errno(errno);
		buf[i] = c;
	}
	return 0;
}

/* meta = magic | desc | conf_index | conf_len | conf | crc32c */
static int meta_encode(const struct kvraft_desc *d, uint64_t conf_index,
		       const struct raft_configuration *c, unsigned char **out,
		       size_t *len)
{
	size_t cl = io_conf_size(c);
	size_t n = 8 + KVRAFT_DESC_SIZE + 16 + cl + 4;
	unsigned char *p = malloc(n);
	if (p == NULL)
		return KV_ENOMEM;
	memcpy(p, META_MAGIC, 8);
	io_desc_encode(d, p + 8);
	io_put64(p + 8 + KVRAFT_DESC_SIZE, conf_index);
	io_put64(p + 16 + KVRAFT_DESC_SIZE, cl);
	io_conf_encode(c, p + 24 + KVRAFT_DESC_SIZE);
	io_put32(p + n - 4, kv_crc32c(0, p, n - 4));
	*out = p;
	*len = n;
	return 0;
}

static int meta_load(struct kvraft_io *io, char *errmsg, size_t errlen)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/meta", io->snap_dir);
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		if (errno == ENOENT)
			return 0;
		snprintf(errmsg, errlen, "%s: %s", path, strerror(errno));
		return kv_from_errno(errno);
	}
	unsigned char buf[65536];
	size_t n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	int rv = KV_ECORRUPT;
	size_t base = 8 + KVRAFT_DESC_SIZE + 16;
	if (n < base + 4 || memcmp(buf, META_MAGIC, 8) != 0 ||
	    io_get32(buf + n - 4) != kv_crc32c(0, buf, n - 4))
		goto bad;
	if (io_desc_decode(buf + 8, KVRAFT_DESC_SIZE, &io->snap.desc) != 0)
		goto bad;
	io->snap.conf_index = io_get64(buf + 8 + KVRAFT_DESC_SIZE);
	uint64_t cl = io_get64(buf + 16 + KVRAFT_DESC_SIZE);
	if (cl != n - base - 4)
		goto bad;
	rv = io_conf_decode(buf + base, cl, &io->snap.conf);
	if (rv != 0)
		goto bad;
	io->snap.have = true;
	return 0;
bad:
	snprintf(errmsg, errlen, "%s: bad snapshot meta file", path);
	return rv == KV_ENOMEM ? rv : KV_ECORRUPT;
}

static int conf_copy(const struct raft_configuration *src,
		     struct raft_configuration *dst)
{
	raft_configuration_init(dst);
	for (unsigned i = 0; i < src->n; i++) {
		int rv = raft_configuration_add(dst, src->servers[i].id,
						src->servers[i].address,
						src->servers[i].role);
		if (rv != 0) {
			raft_configuration_close(dst);
			raft_configuration_init(dst);
			return RAFT_NOMEM;
		}
	}
	return 0;
}

static struct raft_snapshot *snap_export(struct kvraft_io *io)
{
	struct raft_snapshot *s = raft_calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	s->bufs = raft_calloc(1, sizeof(*s->bufs));
	unsigned char *d = raft_malloc(KVRAFT_DESC_SIZE);
	if (s->bufs == NULL || d == NULL ||
	    conf_copy(&io->snap.conf, &s->configuration) != 0) {
		raft_free(d);
		raft_free(s->bufs);
		raft_free(s);
		return NULL;
	}
	io_desc_encode(&io->snap.desc, d);
	s->index = io->snap.desc.index;
	s->term = io->snap.desc.term;
	s->configuration_index = io->snap.conf_index;
	s->bufs[0].base = d;
	s->bufs[0].len = KVRAFT_DESC_SIZE;
	s->n_bufs = 1;
	return s;
}

/* ---- raft_io methods ---- */

static int io_init(struct raft_io *rio, raft_id id, const char *address)
{
	struct kvraft_io *io = rio->impl;
	(void)address;
	io->id = id;
	io->rng ^= id * 0x9E3779B97F4A7C15ull;
	return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
	struct kvraft_io *io = h->data;
	if (--io->open_handles == 0 && io->close_cb)
		io->close_cb(&io->io);
}

static void try_finish_close(struct kvraft_io *io)
{
	if (!io->closing || io->pending_work > 0 || io->open_handles == 0 ||
	    uv_is_closing((uv_handle_t *)&io->async))
		return;
	if (io->wal != NULL) {
		wal_close(io->wal); /* flushes: the callbacks land in done */
		io->wal = NULL;
	}
	run_done(io);
	uv_close((uv_handle_t *)&io->timer, on_handle_closed);
	uv_close((uv_handle_t *)&io->async, on_handle_closed);
}

static void io_close(struct raft_io *rio, raft_io_close_cb cb)
{
	struct kvraft_io *io = rio->impl;
	io->close_cb = cb;
	io->closing = true;
	uv_timer_stop(&io->timer);
	try_finish_close(io);
}

static int io_load(struct raft_io *rio, raft_term *term, raft_id *voted_for,
		   struct raft_snapshot **snapshot, raft_index *start_index,
		   struct raft_entry *entries[], size_t *n_entries)
{
	struct kvraft_io *io = rio->impl;
	struct wal_info info;
	wal_info(io->wal, &info);
	*term = info.term;
	*voted_for = info.vote;
	io->term = info.term;
	*snapshot = NULL;
	*entries = NULL;
	*n_entries = 0;
	*start_index = 1;
	if (io->snap.have) {
		uint64_t s = io->snap.desc.index;
		/* The WAL must continue the snapshot: a crash between the
		 * meta write and wal_reset leaves an older log behind. */
		bool ok = info.last_index >= info.first_index &&
			  info.first_index <= s + 1 && info.last_index >= s;
		if (ok && info.first_index <= s) {
			struct wal_entry *e = NULL;
			size_t n = 0;
			if (wal_load(io->wal, s, &e, &n) != 0 || n == 0 ||
			    e[0].term != io->snap.desc.term)
				ok = false;
			wal_entries_free(e, n);
		}
		if (!ok && !(info.last_index < info.first_index &&
			     info.first_index == s + 1)) {
			int rv = wal_reset(io->wal, s, io->snap.desc.term);
			if (rv != 0) {
				failstop(io, rv, "reset at load");
				return RAFT_IOERR;
			}
			wal_info(io->wal, &info);
		}
		*snapshot = snap_export(io);
		if (*snapshot == NULL)
			return RAFT_NOMEM;
		*start_index = s + 1;
	}
	if (info.last_index < info.first_index)
		return 0;
	struct wal_entry *we = NULL;
	size_t n = 0;
	int rv = wal_load(io->wal, info.first_index, &we, &n);
	if (rv != 0) {
		snprintf(rio->errmsg, sizeof(rio->errmsg), "load wal: %s",
			 wal_errmsg(io->wal));
		goto err;
	}
	size_t total = 0;
	for (size_t i = 0; i < n; i++)
		total += we[i].len;
	struct raft_entry *re = raft_calloc(n, sizeof(*re));
	unsigned char *batch = raft_malloc(total > 0 ? total : 8);
	if (re == NULL || batch == NULL) {
		raft_free(re);
		raft_free(batch);
		wal_entries_free(we, n);
		rv = KV_ENOMEM;
		goto err;
	}
	size_t off = 0;
	for (size_t i = 0; i < n; i++) {
		re[i].term = we[i].term;
		re[i].type = we[i].type;
		re[i].buf.base = batch + off;
		re[i].buf.len = we[i].len;
		re[i].batch = batch;
		if (we[i].len > 0)
			memcpy(batch + off, we[i].payload, we[i].len);
		off += we[i].len;
	}
	wal_entries_free(we, n);
	*entries = re;
	*n_entries = n;
	*start_index = info.first_index;
	return 0;
err:
	if (*snapshot != NULL) {
		raft_configuration_close(&(*snapshot)->configuration);
		raft_free((*snapshot)->bufs[0].base);
		raft_free((*snapshot)->bufs);
		raft_free(*snapshot);
		*snapshot = NULL;
	}
	return rv == KV_ENOMEM ? RAFT_NOMEM : RAFT_IOERR;
}

static int io_start(struct raft_io *rio, unsigned msecs, raft_io_tick_cb tick,
		    raft_io_recv_cb recv)
{
	struct kvraft_io *io = rio->impl;
	io->tick = tick;
	io->recv = recv;
	io->started = true;
	if (io->failed)
		return RAFT_IOERR;
	uv_timer_start(&io->timer, on_tick, msecs, msecs);
	return 0;
}

static int io_bootstrap(struct raft_io *rio,
			const struct raft_configuration *conf)
{
	struct kvraft_io *io = rio->impl;
	struct wal_info info;
	wal_info(io->wal, &info);
	if (info.term != 0 || info.last_index >= info.first_index ||
	    io->snap.have || info.snap_index != 0)
		return RAFT_CANTBOOTSTRAP;
	struct raft_buffer buf;
	int rv = raft_configuration_encode(conf, &buf);
	if (rv != 0)
		return rv;
	struct wal_entry e = {.index = 1, .term = 1, .type = RAFT_CHANGE,
			      .payload = buf.base, .len = buf.len};
	rv = wal_append_sync(io->wal, &e, 1);
	raft_free(buf.base);
	if (rv == 0)
		rv = wal_set_term_vote(io->wal, 1, 0);
	if (rv != 0) {
		failstop(io, rv, "bootstrap");
		return RAFT_IOERR;
	}
	io->term = 1;
	return 0;
}

static int io_recover(struct raft_io *rio,
		      const struct raft_configuration *conf)
{
	struct kvraft_io *io = rio->impl;
	struct raft_buffer buf;
	int rv = raft_configuration_encode(conf, &buf);
	if (rv != 0)
		return rv;
	struct wal_info info;
	wal_info(io->wal, &info);
	struct wal_entry e = {.index = wal_next_index(io->wal),
			      .term = info.term,
			      .type = RAFT_CHANGE,
			      .payload = buf.base,
			      .len = buf.len};
	rv = wal_append_sync(io->wal, &e, 1);
	raft_free(buf.base);
	if (rv != 0) {
		failstop(io, rv, "recover");
		return RAFT_IOERR;
	}
	return 0;
}

static int io_set_term(struct raft_io *rio, raft_term term)
{
	struct kvraft_io *io = rio->impl;
	if (io->failed)
		return RAFT_IOERR;
	int rv = wal_set_term_vote(io->wal, term, 0);
	if (rv != 0) {
		failstop(io, rv, "set_term");
		return RAFT_IOERR;
	}
	io->term = term;
	return 0;
}

static int io_set_vote(struct raft_io *rio, raft_id server_id)
{
	struct kvraft_io *io = rio->impl;
	if (io->failed)
		return RAFT_IOERR;
	int rv = wal_set_term_vote(io->wal, io->term, server_id);
	if (rv != 0) {
		failstop(io, rv, "set_vote");
		return RAFT_IOERR;
	}
	return 0;
}

/* Term of the entry at index in raft's in-memory log (0 if not there). */
static uint64_t log_term_of(const struct raft *r, uint64_t index)
{
	const struct raft_log *l = &r->log;
	size_t n = l->back >= l->front ? l->back - l->front
				       : l->size - l->front + l->back;
	if (index > l->offset && index <= l->offset + n)
		return l->entries[(l->front + (index - l->offset - 1)) %
				  l->size]
			.term;
	if (index == l->snapshot.last_index)
		return l->snapshot.last_term;
	return 0;
}

static int io_send(struct raft_io *rio, struct raft_io_send *req,
		   const struct raft_message *m, raft_io_send_cb cb)
{
	struct kvraft_io *io = rio->impl;
	if (io->failed || io->closing)
		return RAFT_IOERR;
	struct raft_message vote;
	const struct raft *r = io->io.data;
	if (m->type == RAFT_IO_REQUEST_VOTE && r != NULL &&
	    m->request_vote.last_log_index > r->last_stored) {
		/* 0.15 campaigns with entries it has not persisted yet
		 * (fixed upstream in 0.18, PR #429): claim only what is on
		 * disk, which can only make voters stricter. */
		uint64_t t = log_term_of(r, r->last_stored);
		if (t != 0 || r->last_stored == 0) {
			vote = *m;
			vote.request_vote.last_log_index = r->last_stored;
			vote.request_vote.last_log_term = t;
			m = &vote;
		}
	}
	struct done *d = calloc(1, sizeof(*d));
	if (d == NULL)
		return RAFT_NOMEM;
	int rv;
	if (m->type == RAFT_IO_INSTALL_SNAPSHOT && io->hooks.send_snapshot) {
		rv = io->hooks.send_snapshot(io->hooks.data, m);
	} else {
		unsigned char *b;
		size_t len;
		rv = io_msg_encode(m, &b, &len);
		if (rv == 0) {
			rv = io->net->send(io->net->data, m->server_id,
					   PEER_MSG_RAFT, b, len);
			free(b);
		}
	}
	d->kind = DONE_SEND;
	d->io = io;
	d->send.req = req;
	d->send.cb = cb;
	d->status = rv == 0 ? 0 : RAFT_NOCONNECTION;
	push_done(io, d);
	return 0;
}

static void on_wal_append(struct wal_append_req *wreq, int status)
{
	struct done *d = wreq->data;
	d->status = status;
	push_done(d->io, d); /* writer thread: only the lock + async */
}

static int io_append(struct raft_io *rio, struct raft_io_append *req,
		     const struct raft_entry entries[], unsigned n,
		     raft_io_append_cb cb)
{
	struct kvraft_io *io = rio->impl;
	if (io->failed || io->closing)
		return RAFT_IOERR;
	struct done *d = calloc(1, sizeof(*d));
	struct wal_entry *we = calloc(n, sizeof(*we));
	if (d == NULL || we == NULL) {
		free(d);
		free(we);
		return RAFT_NOMEM;
	}
	uint64_t index = wal_next_index(io->wal);
	for (unsigned i = 0; i < n; i++) {
		we[i].index = index + i;
		we[i].term = entries[i].term;
		we[i].type = (uint8_t)entries[i].type;
		we[i].payload = entries[i].buf.base;
		we[i].len = entries[i].buf.len;
	}
	d->kind = DONE_APPEND;
	d->io = io;
	d->append.req = req;
	d->append.cb = cb;
	d->wreq.data = d;
	int rv = wal_append(io->wal, we, n, &d->wreq, on_wal_append);
	free(we);
	if (rv != 0) {
		free(d);
		failstop(io, rv, "append");
		return RAFT_IOERR;
	}
	return 0;
}

static int io_truncate(struct raft_io *rio, raft_index index)
{
	struct kvraft_io *io = rio->impl;
	if (io->failed)
		return RAFT_IOERR;
	int rv = wal_truncate_async(io->wal, index);
	if (rv != 0) {
		failstop(io, rv, "truncate");
		return RAFT_IOERR;
	}
	return 0;
}

static void remove_old_snapshots(struct kvraft_io *io, uint64_t keep1,
				 uint64_t keep2)
{
	DIR *dir = opendir(io->snap_dir);
	if (dir == NULL)
		return;
	struct dirent *de;
	while ((de = readdir(dir)) != NULL) {
		/* <term>-<index>.snap and the state machine's side files
		 * (<term>-<index>.snap.crc, ...) */
		unsigned long long t, i;
		int end = 0;
		if (sscanf(de->d_name, "%llu-%llu.snap%n", &t, &i, &end) != 2 ||
		    end == 0 ||
		    (de->d_name[end] != '\0' && de->d_name[end] != '.'))
			continue;
		if (i == keep1 || i == keep2)
			continue;
		char p[4200];
		snprintf(p, sizeof(p), "%s/%s", io->snap_dir, de->d_name);
		if (unlink(p) == 0)
			KV_INFO("raft", "removed old snapshot file", "file=%s keep=%llu,%llu",
				p, (unsigned long long)keep1, (unsigned long long)keep2);
	}
	closedir(dir);
}

static void put_work_fn(uv_work_t *w)
{
	struct put_work *pw = w->data;
	struct kvraft_io *io = pw->io;
	int rv = write_file_durable(io->snap_dir, "meta", pw->meta,
				    pw->meta_len);
	if (rv != 0) {
		snprintf(pw->errmsg, sizeof(pw->errmsg),
			 "write %s/meta: %s", io->snap_dir, kv_strerror(rv));
		pw->status = rv;
		return;
	}
	if (pw->trailing == 0)
		rv = wal_reset(io->wal, pw->desc.index, pw->desc.term);
	else if (pw->drop_to > 0)
		rv = wal_drop_prefix(io->wal, pw->drop_to);
	if (rv != 0) {
		snprintf(pw->errmsg, sizeof(pw->errmsg), "%s",
			 wal_errmsg(io->wal));
		pw->status = rv;
		return;
	}
	remove_old_snapshots(io, pw->desc.index, pw->keep_prev_index);
}

static void put_after_work(uv_work_t *w, int status)
{
	struct put_work *pw = w->data;
	struct kvraft_io *io = pw->io;
	(void)status;
	io->pending_work--;
	int rv = pw->status;
	if (rv == 0) {
		raft_configuration_close(&io->snap.conf);
		io->snap.conf = pw->conf;
		io->snap.desc = pw->desc;
		io->snap.conf_index = pw->conf_index;
		io->snap.have = true;
	} else {
		raft_configuration_close(&pw->conf);
		failstop(io, rv, pw->errmsg);
	}
	free(pw->meta);
	struct raft_io_snapshot_put *req = pw->req;
	raft_io_snapshot_put_cb cb = pw->cb;
	free(pw);
	cb(req, rv == 0 ? 0 : RAFT_IOERR);
	try_finish_close(io);
}

static int io_snapshot_put(struct raft_io *rio, unsigned trailing,
			   struct raft_io_snapshot_put *req,
			   const struct raft_snapshot *s,
			   raft_io_snapshot_put_cb cb)
{
	struct kvraft_io *io = rio->impl;
	if (io->failed || io->closing)
		return RAFT_IOERR;
	if (s->n_bufs != 1)
		return RAFT_INVALID;
	struct put_work *pw = calloc(1, sizeof(*pw));
	if (pw == NULL)
		return RAFT_NOMEM;
	int rv = io_desc_decode(s->bufs[0].base, s->bufs[0].len, &pw->desc);
	if (rv != 0 || pw->desc.index != s->index) {
		free(pw);
		return RAFT_INVALID;
	}
	pw->desc.term = s->term;
	if (conf_copy(&s->configuration, &pw->conf) != 0) {
		free(pw);
		return RAFT_NOMEM;
	}
	pw->conf_index = s->configuration_index;
	rv = meta_encode(&pw->desc, pw->conf_index, &pw->conf, &pw->meta,
			 &pw->meta_len);
	if (rv != 0) {
		raft_configuration_close(&pw->conf);
		free(pw);
		return RAFT_NOMEM;
	}
	pw->io = io;
	pw->req = req;
	pw->cb = cb;
	pw->trailing = trailing;
	pw->keep_prev_index = io->snap.have ? io->snap.desc.index : 0;
	if (trailing > 0 && s->index > trailing) {
		uint64_t to = s->index - trailing;
		uint64_t durable = io->hooks.durable_index
					   ? io->hooks.durable_index(
						     io->hooks.data)
					   : 0;
		pw->drop_to = to < durable ? to : durable;
	}
	pw->work.data = pw;
	rv = uv_queue_work(io->loop, &pw->work, put_work_fn, put_after_work);
	if (rv != 0) {
		raft_configuration_close(&pw->conf);
		free(pw->meta);
		free(pw);
		return RAFT_IOERR;
	}
	io->pending_work++;
	return 0;
}

static int io_snapshot_get(struct raft_io *rio,
			   struct raft_io_snapshot_get *req,
			   raft_io_snapshot_get_cb cb)
{
	struct kvraft_io *io = rio->impl;
	if (io->closing)
		return RAFT_IOERR;
	struct done *d = calloc(1, sizeof(*d));
	if (d == NULL)
		return RAFT_NOMEM;
	d->kind = DONE_GET;
	d->io = io;
	d->get.req = req;
	d->get.cb = cb;
	if (io->snap.have) {
		d->get.snap = snap_export(io);
		d->status = d->get.snap ? 0 : RAFT_NOMEM;
	}
	push_done(io, d);
	return 0;
}

static raft_time io_time(struct raft_io *rio)
{
	struct kvraft_io *io = rio->impl;
	return uv_now(io->loop);
}

static int io_random(struct raft_io *rio, int min, int max)
{
	struct kvraft_io *io = rio->impl;
	/* xorshift64*: per-io state, no global PRNG. */
	io->rng ^= io->rng >> 12;
	io->rng ^= io->rng << 25;
	io->rng ^= io->rng >> 27;
	uint64_t r = io->rng * 2685821657736338717ull;
	if (max <= min)
		return min;
	return min + (int)(r % (uint64_t)(max - min));
}

static void async_work_fn(uv_work_t *w)
{
	struct async_job *j = w->data;
	j->status = j->req->work(j->req);
}

static void async_after(uv_work_t *w, int status)
{
	struct async_job *j = w->data;
	struct kvraft_io *io = j->io;
	(void)status;
	io->pending_work--;
	struct raft_io_async_work *req = j->req;
	raft_io_async_work_cb cb = j->cb;
	int st = j->status;
	free(j);
	cb(req, st);
	try_finish_close(io);
}

static int io_async_work(struct raft_io *rio, struct raft_io_async_work *req,
			 raft_io_async_work_cb cb)
{
	struct kvraft_io *io = rio->impl;
	if (io->closing)
		return RAFT_IOERR;
	struct async_job *j = calloc(1, sizeof(*j));
	if (j == NULL)
		return RAFT_NOMEM;
	j->io = io;
	j->req = req;
	j->cb = cb;
	j->work.data = j;
	if (uv_queue_work(io->loop, &j->work, async_work_fn, async_after) !=
	    0) {
		free(j);
		return RAFT_IOERR;
	}
	io->pending_work++;
	return 0;
}

/* ---- public ---- */

static char *join(const char *a, const char *b)
{
	size_t n = strlen(a) + strlen(b) + 2;
	char *p = malloc(n);
	if (p != NULL)
		snprintf(p, n, "%s/%s", a, b);
	return p;
}

int kvraft_io_new(uv_loop_t *loop, const struct kvraft_io_options *opts,
		  struct kvraft_io **out, char *errmsg, size_t errlen)
{
	char dummy[8];
	if (errmsg == NULL) {
		errmsg = dummy;
		errlen = sizeof(dummy);
	}
	errmsg[0] = '\0';
	struct kvraft_io *io = calloc(1, sizeof(*io));
	if (io == NULL)
		return KV_ENOMEM;
	int rv = KV_ENOMEM;
	io->loop = loop;
	io->net = opts->net;
	io->dir = strdup(opts->dir);
	io->wal_dir = join(opts->dir, "wal");
	io->snap_dir = join(opts->dir, "snap");
	raft_configuration_init(&io->snap.conf);
	pthread_mutex_init(&io->mu, NULL);
	io->done_tail = &io->done_head;
	if (io->dir == NULL || io->wal_dir == NULL || io->snap_dir == NULL)
		goto err;
	if ((rv = mkdir_p(io->dir)) != 0 || (rv = mkdir_p(io->wal_dir)) != 0 ||
	    (rv = mkdir_p(io->snap_dir)) != 0) {
		snprintf(errmsg, errlen, "mkdir %s: %s", io->dir,
			 kv_strerror(rv));
		goto err;
	}
	struct wal_options wo = {.vfs = opts->vfs,
				 .sync = opts->sync,
				 .segment_size = opts->segment_size};
	rv = wal_open(io->wal_dir, &wo, &io->wal, errmsg, errlen);
	if (rv != 0)
		goto err;
	rv = meta_load(io, errmsg, errlen);
	if (rv != 0)
		goto err;
	io->rng = 0x2545F4914F6CDD1Dull ^ (uint64_t)uv_hrtime() ^
		  (uint64_t)(uintptr_t)io;
	uv_timer_init(loop, &io->timer);
	io->timer.data = io;
	uv_async_init(loop, &io->async, on_async);
	io->async.data = io;
	io->open_handles = 2;

	struct raft_io *r = &io->io;
	r->version = 2; /* 0.15 needs it for snapshot_async */
	r->impl = io;
	r->init = io_init;
	r->close = io_close;
	r->load = io_load;
	r->start = io_start;
	r->bootstrap = io_bootstrap;
	r->recover = io_recover;
	r->set_term = io_set_term;
	r->set_vote = io_set_vote;
	r->send = io_send;
	r->append = io_append;
	r->truncate = io_truncate;
	r->snapshot_put = io_snapshot_put;
	r->snapshot_get = io_snapshot_get;
	r->time = io_time;
	r->random = io_random;
	r->async_work = io_async_work;
	*out = io;
	return 0;
err:
	if (io->wal)
		wal_close(io->wal);
	raft_configuration_close(&io->snap.conf);
	pthread_mutex_destroy(&io->mu);
	free(io->dir);
	free(io->wal_dir);
	free(io->snap_dir);
	free(io);
	return rv;
}

struct raft_io *kvraft_io_raft(struct kvraft_io *io)
{
	return &io->io;
}

void kvraft_io_set_hooks(struct kvraft_io *io,
			 const struct kvraft_io_hooks *hooks)
{
	io->hooks = *hooks;
}

static void on_free_closed(uv_handle_t *h)
{
	struct kvraft_io *io = h->data;
	io->open_handles--;
}

void kvraft_io_free(struct kvraft_io *io)
{
	if (io == NULL)
		return;
	if (io->wal != NULL) {
		wal_close(io->wal);
		io->wal = NULL;
	}
	run_done(io);
	if (io->open_handles > 0) {
		/* raft never closed us: close the handles and spin the loop
		 * until they are gone. */
		io->close_cb = NULL;
		if (!uv_is_closing((uv_handle_t *)&io->timer))
			uv_close((uv_handle_t *)&io->timer, on_free_closed);
		if (!uv_is_closing((uv_handle_t *)&io->async))
			uv_close((uv_handle_t *)&io->async, on_free_closed);
		while (io->open_handles > 0)
			uv_run(io->loop, UV_RUN_ONCE);
	}
	raft_configuration_close(&io->snap.conf);
	pthread_mutex_destroy(&io->mu);
	free(io->dir);
	free(io->wal_dir);
	free(io->snap_dir);
	free(io);
}

void kvraft_io_deliver(struct kvraft_io *io, uint64_t from,
		       struct raft_message *m)
{
	if (io->failed || io->closing || !io->started) {
		io_msg_release(m);
		return;
	}
	m->server_id = from;
	snprintf(io->addr, sizeof(io->addr), "%llu", (unsigned long long)from);
	m->server_address = io->addr;
	struct raft *r = io->io.data;
	/* 0.15 commits entries of older terms by counting replicas (Figure
	 * 8). A leader's match index only advances on an acknowledgement
	 * that reaches an entry of its own term; until the follower has one,
	 * its success is clamped to the commit index, so nothing is counted
	 * for older-term entries (they commit with the leader's barrier). */
	if (m->type == RAFT_IO_APPEND_ENTRIES_RESULT && r != NULL &&
	    raft_state(r) == RAFT_LEADER &&
	    m->append_entries_result.rejected == 0 &&
	    m->append_entries_result.term == r->current_term) {
		struct raft_append_entries_result *a =
			&m->append_entries_result;
		uint64_t li = a->last_log_index;
		uint64_t last = raft_last_index(r);
		if (li > last)
			li = last;
		uint64_t t = log_term_of(r, li);
		if (t != r->current_term && a->last_log_index > r->commit_index)
			a->last_log_index = r->commit_index;
	}
	io->recv(&io->io, m);
	if (io->hooks.on_event)
		io->hooks.on_event(io->hooks.data);
}

void kvraft_io_receive(struct kvraft_io *io, uint64_t from, const void *body,
		       size_t len)
{
	if (io->failed || io->closing || !io->started)
		return;
	struct raft_message m;
	int rv = io_msg_decode(body, len, &m);
	if (rv != 0) {
		KV_WARN("raft", "dropping malformed raft message",
			"from=%llx len=%zu err=\"%s\"",
			(unsigned long long)from, len, kv_strerror(rv));
		return;
	}
	kvraft_io_deliver(io, from, &m);
}

void kvraft_io_fail(struct kvraft_io *io, int err)
{
	failstop(io, err, "requested");
}

bool kvraft_io_failed(struct kvraft_io *io)
{
	return io->failed;
}

bool kvraft_io_has_state(struct kvraft_io *io)
{
	struct wal_info info;
	wal_info(io->wal, &info);
	return info.term != 0 || info.last_index >= info.first_index ||
	       io->snap.have || info.snap_index != 0;
}

const char *kvraft_io_snap_dir(struct kvraft_io *io)
{
	return io->snap_dir;
}

void kvraft_io_snap_path(struct kvraft_io *io, uint64_t term, uint64_t index,
			 char *buf, size_t len)
{
	snprintf(buf, len, "%s/%llu-%llu.snap", io->snap_dir,
		 (unsigned long long)term, (unsigned long long)index);
}

struct wal *kvraft_io_wal(struct kvraft_io *io)
{
	return io->wal;
}

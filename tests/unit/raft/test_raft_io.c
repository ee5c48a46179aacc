/* raft_io conformance: our struct raft_io over storage/wal, driven
 * directly (no raft): append ordering, truncation, durable term/vote,
 * load after restart, bootstrap, snapshot put/get, send/receive through
 * the message codec, and the codec's bounds checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "io_codec.h"
#include "kv/errors.h"
#include "kvraft/io.h"
#include "kvraft/transport.h"
#include "raft_test_util.h"
#include "storage/vfs.h"

struct env {
	uv_loop_t loop;
	char *dir;
	struct rt_net net;
};

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	uv_loop_init(&e->loop);
	e->dir = rt_mkdtemp();
	rt_net_init(&e->net, &e->loop);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;
	rt_net_close(&e->net);
	/* bounded: after a failed assertion handles may remain open */
	for (int i = 0; i < 100 && uv_run(&e->loop, UV_RUN_NOWAIT) != 0; i++)
		;
	assert_int_equal(uv_loop_close(&e->loop), 0);
	rt_rmtree(e->dir);
	free(e->dir);
	free(e);
	return 0;
}

/* One io under test with the pieces raft would own. */
struct tio {
	struct kvraft_io *io;
	struct raft_io *r;
	uint64_t id;
	raft_term term;
	raft_id vote;
	struct raft_snapshot *snap;
	raft_index start;
	struct raft_entry *ents;
	size_t n;
	bool closed;
	int nrecv;
	struct raft_message last;
	uint64_t durable;
	int failstops;
	struct vfs *vfs;
};

/* raft owns raft_io.data (the io reads it as the struct raft *), so the
 * tests find their struct tio through this table instead. */
static struct tio *tios[8];

static struct tio *tio_of(struct raft_io *io)
{
	for (int i = 0; i < 8; i++)
		if (tios[i] && tios[i]->r == io)
			return tios[i];
	fail_msg("unknown io");
	return NULL;
}

static void on_tick(struct raft_io *io)
{
	(void)io;
}

static void free_msg(struct raft_message *m)
{
	io_msg_release(m);
}

static void on_recv(struct raft_io *io, struct raft_message *m)
{
	struct tio *t = tio_of(io);
	t->nrecv++;
	free_msg(&t->last);
	t->last = *m;
}

static uint64_t durable_hook(void *data)
{
	struct tio *t = data;
	return t->durable;
}

static void failstop_hook(void *data, int err)
{
	struct tio *t = data;
	(void)err;
	t->failstops++;
}

static void free_loaded(struct tio *t)
{
	if (t->snap) {
		raft_configuration_close(&t->snap->configuration);
		raft_free(t->snap->bufs[0].base);
		raft_free(t->snap->bufs);
		raft_free(t->snap);
		t->snap = NULL;
	}
	if (t->n > 0) {
		raft_free(t->ents[0].batch);
		raft_free(t->ents);
	}
	t->ents = NULL;
	t->n = 0;
}

static void tio_open_vfs(struct env *e, struct tio *t, const char *sub,
			 uint64_t id, struct vfs *vfs)
{
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s/%s", e->dir, sub);
	struct kvraft_io_options o = {.dir = dir,
				      .net = rt_net_add(&e->net, id),
				      .sync = WAL_SYNC_DATA,
				      .segment_size = 64 * 1024,
				      .vfs = vfs};
	memset(t, 0, sizeof(*t));
	t->id = id;
	t->vfs = vfs;
	char err[256];
	int rv = kvraft_io_new(&e->loop, &o, &t->io, err, sizeof(err));
	if (rv != 0)
		fail_msg("kvraft_io_new: %s", err);
	t->r = kvraft_io_raft(t->io);
	assert_int_equal(t->r->version, 2);
	struct kvraft_io_hooks h = {.data = t,
				    .durable_index = durable_hook,
				    .on_failstop = failstop_hook};
	kvraft_io_set_hooks(t->io, &h);
	assert_int_equal(t->r->init(t->r, id, "x"), 0);
	t->r->data = NULL;
	for (int i = 0; i < 8; i++)
		if (tios[i] == NULL || tios[i] == t) {
			tios[i] = t;
			break;
		}
	assert_int_equal(t->r->load(t->r, &t->term, &t->vote, &t->snap,
				    &t->start, &t->ents, &t->n),
			 0);
}

static void tio_open(struct env *e, struct tio *t, const char *sub,
		     uint64_t id)
{
	tio_open_vfs(e, t, sub, id, NULL);
}

static void tio_start(struct tio *t)
{
	assert_int_equal(t->r->start(t->r, 50, on_tick, on_recv), 0);
}

static void on_closed(struct raft_io *io)
{
	struct tio *t = tio_of(io);
	t->closed = true;
}

static bool is_closed(void *arg)
{
	return ((struct tio *)arg)->closed;
}

static void tio_close(struct env *e, struct tio *t)
{
	t->r->close(t->r, on_closed);
	assert_true(rt_run_until(&e->loop, is_closed, t, 10000));
	kvraft_io_free(t->io);
	free_loaded(t);
	free_msg(&t->last);
	for (int i = 0; i < 8; i++)
		if (tios[i] == t)
			tios[i] = NULL;
}

/* ---- appends ---- */

struct app {
	struct raft_io_append req;
	int *order;
	int *done;
	int seq;
	int status;
	struct raft_entry ents[3];
	unsigned n;
};

static void on_append(struct raft_io_append *req, int status)
{
	struct app *a = req->data;
	a->status = status;
	a->order[(*a->done)++] = a->seq;
}

static size_t plen(uint64_t index)
{
	return 8 * (index % 5) + (index % 3 == 0 ? 0 : 8);
}

static void fill(struct raft_entry *en, uint64_t index, uint64_t term)
{
	en->term = term;
	en->type = RAFT_COMMAND;
	en->buf.len = plen(index);
	en->buf.base = en->buf.len ? malloc(en->buf.len) : NULL;
	for (size_t i = 0; i < en->buf.len; i++)
		((unsigned char *)en->buf.base)[i] =
			(unsigned char)(index * 31 + i + term);
	en->batch = NULL;
}

static void check_entry(const struct raft_entry *en, uint64_t index,
			uint64_t term)
{
	assert_int_equal(en->term, term);
	assert_int_equal(en->type, RAFT_COMMAND);
	assert_int_equal(en->buf.len, plen(index));
	for (size_t i = 0; i < en->buf.len; i++)
		assert_int_equal(((unsigned char *)en->buf.base)[i],
				 (unsigned char)(index * 31 + i + term));
}

struct counter {
	int *done;
	int want;
};

static bool reached(void *arg)
{
	struct counter *c = arg;
	return *c->done >= c->want;
}

/* Appends [from, to] in requests of 1..3 entries without waiting, then
 * waits for every callback and checks they ran in submission order. */
static void append_range(struct env *e, struct tio *t, uint64_t from,
			 uint64_t to, uint64_t term)
{
	size_t max = (size_t)(to - from + 1);
	struct app *apps = calloc(max, sizeof(*apps));
	int *order = calloc(max, sizeof(int));
	int done = 0, nreq = 0;
	for (uint64_t i = from; i <= to;) {
		struct app *a = &apps[nreq];
		a->n = (unsigned)(1 + i % 3);
		if (i + a->n - 1 > to)
			a->n = (unsigned)(to - i + 1);
		for (unsigned k = 0; k < a->n; k++)
			fill(&a->ents[k], i + k, term);
		a->req.data = a;
		a->order = order;
		a->done = &done;
		a->seq = nreq;
		assert_int_equal(
			t->r->append(t->r, &a->req, a->ents, a->n, on_append),
			0);
		i += a->n;
		nreq++;
	}
	struct counter c = {&done, nreq};
	assert_true(rt_run_until(&e->loop, reached, &c, 20000));
	for (int i = 0; i < nreq; i++) {
		assert_int_equal(order[i], i);
		assert_int_equal(apps[i].status, 0);
		for (unsigned k = 0; k < apps[i].n; k++)
			free(apps[i].ents[k].buf.base);
	}
	free(apps);
	free(order);
}

static void check_loaded(struct tio *t, uint64_t from, uint64_t to,
			 uint64_t (*term_of)(uint64_t))
{
	assert_int_equal(t->start, from);
	assert_int_equal(t->n, to - from + 1);
	for (uint64_t i = from; i <= to; i++)
		check_entry(&t->ents[i - from], i, term_of(i));
}

static uint64_t term1(uint64_t i)
{
	(void)i;
	return 1;
}

static void test_append_order_and_reload(void **state)
{
	struct env *e = *state;
	struct tio t;
	tio_open(e, &t, "a", 1);
	assert_int_equal(t.term, 0);
	assert_int_equal(t.n, 0);
	assert_null(t.snap);
	assert_int_equal(t.start, 1);
	tio_start(&t);
	append_range(e, &t, 1, 2000, 1);
	tio_close(e, &t);

	tio_open(e, &t, "a", 1);
	check_loaded(&t, 1, 2000, term1);
	tio_close(e, &t);
}

static uint64_t term_trunc(uint64_t i)
{
	if (i >= 15)
		return 3;
	return i >= 6 ? 2 : 1;
}

static void test_truncate_then_append(void **state)
{
	struct env *e = *state;
	struct tio t;
	tio_open(e, &t, "t", 1);
	tio_start(&t);
	append_range(e, &t, 1, 10, 1);
	/* raft truncates and appends at once, without waiting */
	assert_int_equal(t.r->truncate(t.r, 6), 0);
	append_range(e, &t, 6, 20, 2);

	/* truncate entries whose appends are still in flight */
	struct app a[2];
	int order[2], done = 0;
	memset(a, 0, sizeof(a));
	for (int k = 0; k < 2; k++) {
		a[k].n = 3;
		a[k].req.data = &a[k];
		a[k].order = order;
		a[k].done = &done;
		a[k].seq = k;
	}
	for (unsigned k = 0; k < 3; k++)
		fill(&a[0].ents[k], 21 + k, 2);
	assert_int_equal(t.r->append(t.r, &a[0].req, a[0].ents, 3, on_append),
			 0);
	assert_int_equal(t.r->truncate(t.r, 15), 0);
	for (unsigned k = 0; k < 3; k++)
		fill(&a[1].ents[k], 15 + k, 3);
	assert_int_equal(t.r->append(t.r, &a[1].req, a[1].ents, 3, on_append),
			 0);
	struct counter c = {&done, 2};
	assert_true(rt_run_until(&e->loop, reached, &c, 10000));
	assert_int_equal(order[0], 0);
	assert_int_equal(order[1], 1);
	for (int k = 0; k < 2; k++) {
		assert_int_equal(a[k].status, 0);
		for (unsigned j = 0; j < 3; j++)
			free(a[k].ents[j].buf.base);
	}
	tio_close(e, &t);

	tio_open(e, &t, "t", 1);
	check_loaded(&t, 1, 17, term_trunc);
	tio_close(e, &t);
}

static void test_term_vote_durable(void **state)
{
	struct env *e = *state;
	struct tio t;
	tio_open(e, &t, "v/nested/dir", 1);
	tio_start(&t);
	assert_int_equal(t.r->set_term(t.r, 5), 0);
	assert_int_equal(t.r->set_vote(t.r, 3), 0);
	/* "crash": no close of raft, just drop the io (the WAL is durable
	 * on return of set_term/set_vote) */
	tio_close(e, &t);
	tio_open(e, &t, "v/nested/dir", 1);
	assert_int_equal(t.term, 5);
	assert_int_equal(t.vote, 3);
	tio_start(&t);
	assert_int_equal(t.r->set_term(t.r, 6), 0);
	tio_close(e, &t);
	tio_open(e, &t, "v/nested/dir", 1);
	assert_int_equal(t.term, 6);
	assert_int_equal(t.vote, 0);
	tio_close(e, &t);
}

static void test_bootstrap(void **state)
{
	struct env *e = *state;
	struct tio t;
	struct raft_configuration conf;
	raft_configuration_init(&conf);
	assert_int_equal(raft_configuration_add(&conf, 1, "1", RAFT_VOTER), 0);
	assert_int_equal(raft_configuration_add(&conf, 2, "2", RAFT_VOTER), 0);
	tio_open(e, &t, "b", 1);
	assert_int_equal(t.r->bootstrap(t.r, &conf), 0);
	assert_int_equal(t.r->bootstrap(t.r, &conf), RAFT_CANTBOOTSTRAP);
	tio_close(e, &t);
	tio_open(e, &t, "b", 1);
	assert_int_equal(t.term, 1);
	assert_int_equal(t.n, 1);
	assert_int_equal(t.start, 1);
	assert_int_equal(t.ents[0].type, RAFT_CHANGE);
	assert_int_equal(t.ents[0].buf.len % 8, 0);
	struct raft_buffer enc;
	assert_int_equal(raft_configuration_encode(&conf, &enc), 0);
	assert_int_equal(enc.len, t.ents[0].buf.len);
	assert_memory_equal(enc.base, t.ents[0].buf.base, enc.len);
	raft_free(enc.base);
	assert_int_equal(t.r->bootstrap(t.r, &conf), RAFT_CANTBOOTSTRAP);
	tio_close(e, &t);
	raft_configuration_close(&conf);
}

static void test_recover_appends_configuration(void **state)
{
	struct env *e = *state;
	struct tio t;
	tio_open(e, &t, "r", 1);
	tio_start(&t);
	append_range(e, &t, 1, 7, 1);
	struct raft_configuration conf;
	raft_configuration_init(&conf);
	assert_int_equal(raft_configuration_add(&conf, 1, "1", RAFT_VOTER), 0);
	assert_int_equal(t.r->recover(t.r, &conf), 0);
	tio_close(e, &t);
	tio_open(e, &t, "r", 1);
	assert_int_equal(t.n, 8);
	assert_int_equal(t.ents[7].type, RAFT_CHANGE);
	struct raft_buffer enc;
	assert_int_equal(raft_configuration_encode(&conf, &enc), 0);
	assert_int_equal(enc.len, t.ents[7].buf.len);
	assert_memory_equal(enc.base, t.ents[7].buf.base, enc.len);
	raft_free(enc.base);
	raft_configuration_close(&conf);
	tio_close(e, &t);
}

/* ---- snapshots ---- */

struct put {
	struct raft_io_snapshot_put req;
	int status;
	bool done;
};

static void on_put(struct raft_io_snapshot_put *req, int status)
{
	struct put *p = req->data;
	p->status = status;
	p->done = true;
}

static bool put_done(void *arg)
{
	return ((struct put *)arg)->done;
}

struct get {
	struct raft_io_snapshot_get req;
	struct raft_snapshot *snap;
	int status;
	bool done;
};

static void on_get(struct raft_io_snapshot_get *req, struct raft_snapshot *s,
		   int status)
{
	struct get *g = req->data;
	g->snap = s;
	g->status = status;
	g->done = true;
}

static bool get_done(void *arg)
{
	return ((struct get *)arg)->done;
}

static void snapshot_put(struct env *e, struct tio *t, unsigned trailing,
			 uint64_t index, uint64_t term, uint64_t size,
			 uint32_t crc)
{
	struct raft_snapshot s;
	memset(&s, 0, sizeof(s));
	s.index = index;
	s.term = term;
	raft_configuration_init(&s.configuration);
	assert_int_equal(
		raft_configuration_add(&s.configuration, 1, "a1", RAFT_VOTER),
		0);
	assert_int_equal(raft_configuration_add(&s.configuration, 2, "a2",
						RAFT_STANDBY),
			 0);
	s.configuration_index = 1;
	unsigned char d[KVRAFT_DESC_SIZE];
	struct kvraft_desc desc = {index, term, size, crc, index + 3, term};
	io_desc_encode(&desc, d);
	struct raft_buffer b = {d, sizeof(d)};
	s.bufs = &b;
	s.n_bufs = 1;
	struct put p = {.req.data = &p};
	assert_int_equal(t->r->snapshot_put(t->r, trailing, &p.req, &s, on_put),
			 0);
	assert_true(rt_run_until(&e->loop, put_done, &p, 10000));
	assert_int_equal(p.status, 0);
	raft_configuration_close(&s.configuration);
}

static void check_snapshot(const struct raft_snapshot *s, uint64_t index,
			   uint64_t term, uint64_t size, uint32_t crc)
{
	assert_non_null(s);
	assert_int_equal(s->index, index);
	assert_int_equal(s->term, term);
	assert_int_equal(s->configuration_index, 1);
	assert_int_equal(s->configuration.n, 2);
	assert_string_equal(s->configuration.servers[1].address, "a2");
	assert_int_equal(s->configuration.servers[1].role, RAFT_STANDBY);
	assert_int_equal(s->n_bufs, 1);
	struct kvraft_desc d;
	assert_int_equal(io_desc_decode(s->bufs[0].base, s->bufs[0].len, &d),
			 0);
	assert_int_equal(d.index, index);
	assert_int_equal(d.term, term);
	assert_int_equal(d.size, size);
	assert_int_equal(d.crc, crc);
	assert_int_equal(d.file_index, index + 3);
}

static void test_snapshot_put_get(void **state)
{
	struct env *e = *state;
	struct tio t;
	tio_open(e, &t, "s", 1);
	tio_start(&t);
	/* no snapshot yet */
	struct get g = {.req.data = &g};
	assert_int_equal(t.r->snapshot_get(t.r, &g.req, on_get), 0);
	assert_true(rt_run_until(&e->loop, get_done, &g, 5000));
	assert_null(g.snap);

	/* in waves: one huge coalesced batch would make a single segment */
	for (uint64_t from = 1; from <= 3000; from += 300)
		append_range(e, &t, from, from + 299, 1);
	t.durable = 2500;
	snapshot_put(e, &t, 100, 2800, 1, 4096, 0xabcdef);
	memset(&g, 0, sizeof(g));
	g.req.data = &g;
	assert_int_equal(t.r->snapshot_get(t.r, &g.req, on_get), 0);
	assert_true(rt_run_until(&e->loop, get_done, &g, 5000));
	assert_int_equal(g.status, 0);
	check_snapshot(g.snap, 2800, 1, 4096, 0xabcdef);
	struct tio tmp = {.snap = g.snap};
	free_loaded(&tmp);
	tio_close(e, &t);

	tio_open(e, &t, "s", 1);
	check_snapshot(t.snap, 2800, 1, 4096, 0xabcdef);
	/* the prefix was dropped (whole segments), but never above
	 * min(index - trailing, durable) */
	assert_true(t.start > 1);
	assert_true(t.start <= 2500);
	assert_int_equal(t.start + t.n - 1, 3000);
	for (size_t i = 0; i < t.n; i++)
		check_entry(&t.ents[i], t.start + i, 1);
	tio_start(&t);
	/* an installed snapshot (trailing 0) replaces the log */
	snapshot_put(e, &t, 0, 5000, 4, 10, 7);
	append_range(e, &t, 5001, 5010, 4);
	tio_close(e, &t);

	tio_open(e, &t, "s", 1);
	check_snapshot(t.snap, 5000, 4, 10, 7);
	assert_int_equal(t.start, 5001);
	assert_int_equal(t.n, 10);
	tio_close(e, &t);
}

/* ---- messages ---- */

static void build_messages(struct raft_message *m, int *n,
			   struct raft_entry *ents, unsigned char *payload,
			   struct raft_configuration *conf,
			   unsigned char *data)
{
	int k = 0;
	memset(m, 0, 6 * sizeof(*m));
	m[k].type = RAFT_IO_REQUEST_VOTE;
	m[k].request_vote = (struct raft_request_vote){7, 2, 100, 6, true,
						       true};
	k++;
	m[k].type = RAFT_IO_REQUEST_VOTE_RESULT;
	m[k].request_vote_result =
		(struct raft_request_vote_result){7, true, raft_tribool_false};
	k++;
	m[k].type = RAFT_IO_APPEND_ENTRIES;
	for (int i = 0; i < 3; i++) {
		ents[i].term = 7 - (unsigned)i;
		ents[i].type = (unsigned short)(RAFT_COMMAND + i);
		ents[i].buf.base = payload + 16 * i;
		ents[i].buf.len = (size_t)(8 * i);
		ents[i].batch = NULL;
	}
	for (int i = 0; i < 48; i++)
		payload[i] = (unsigned char)(i * 7);
	m[k].append_entries = (struct raft_append_entries){7, 99, 6, 98, ents,
							   3};
	k++;
	m[k].type = RAFT_IO_APPEND_ENTRIES_RESULT;
	m[k].append_entries_result =
		(struct raft_append_entries_result){7, 0, 102};
	k++;
	m[k].type = RAFT_IO_INSTALL_SNAPSHOT;
	raft_configuration_init(conf);
	raft_configuration_add(conf, 1, "one", RAFT_VOTER);
	raft_configuration_add(conf, 9, "nine", RAFT_SPARE);
	for (unsigned i = 0; i < KVRAFT_DESC_SIZE; i++)
		data[i] = (unsigned char)i;
	m[k].install_snapshot.term = 7;
	m[k].install_snapshot.last_index = 500;
	m[k].install_snapshot.last_term = 5;
	m[k].install_snapshot.conf = *conf;
	m[k].install_snapshot.conf_index = 3;
	m[k].install_snapshot.data.base = data;
	m[k].install_snapshot.data.len = KVRAFT_DESC_SIZE;
	k++;
	m[k].type = RAFT_IO_TIMEOUT_NOW;
	m[k].timeout_now = (struct raft_timeout_now){7, 200, 7};
	k++;
	*n = k;
}

static void assert_msg_equal(const struct raft_message *a,
			     const struct raft_message *b)
{
	assert_int_equal(a->type, b->type);
	switch (a->type) {
	case RAFT_IO_REQUEST_VOTE:
		assert_memory_equal(&a->request_vote, &b->request_vote,
				    sizeof(a->request_vote));
		break;
	case RAFT_IO_REQUEST_VOTE_RESULT:
		assert_int_equal(a->request_vote_result.term,
				 b->request_vote_result.term);
		assert_int_equal(a->request_vote_result.vote_granted,
				 b->request_vote_result.vote_granted);
		assert_int_equal(a->request_vote_result.pre_vote,
				 b->request_vote_result.pre_vote);
		break;
	case RAFT_IO_APPEND_ENTRIES: {
		const struct raft_append_entries *x = &a->append_entries,
						 *y = &b->append_entries;
		assert_int_equal(x->term, y->term);
		assert_int_equal(x->prev_log_index, y->prev_log_index);
		assert_int_equal(x->prev_log_term, y->prev_log_term);
		assert_int_equal(x->leader_commit, y->leader_commit);
		assert_int_equal(x->n_entries, y->n_entries);
		for (unsigned i = 0; i < x->n_entries; i++) {
			assert_int_equal(x->entries[i].term,
					 y->entries[i].term);
			assert_int_equal(x->entries[i].type,
					 y->entries[i].type);
			assert_int_equal(x->entries[i].buf.len,
					 y->entries[i].buf.len);
			if (x->entries[i].buf.len)
				assert_memory_equal(x->entries[i].buf.base,
						    y->entries[i].buf.base,
						    x->entries[i].buf.len);
			assert_non_null(y->entries[i].batch);
		}
		break;
	}
	case RAFT_IO_APPEND_ENTRIES_RESULT:
		assert_memory_equal(&a->append_entries_result,
				    &b->append_entries_result,
				    sizeof(a->append_entries_result));
		break;
	case RAFT_IO_INSTALL_SNAPSHOT: {
		const struct raft_install_snapshot *x = &a->install_snapshot,
						   *y = &b->install_snapshot;
		assert_int_equal(x->term, y->term);
		assert_int_equal(x->last_index, y->last_index);
		assert_int_equal(x->last_term, y->last_term);
		assert_int_equal(x->conf_index, y->conf_index);
		assert_int_equal(x->conf.n, y->conf.n);
		for (unsigned i = 0; i < x->conf.n; i++) {
			assert_int_equal(x->conf.servers[i].id,
					 y->conf.servers[i].id);
			assert_int_equal(x->conf.servers[i].role,
					 y->conf.servers[i].role);
			assert_string_equal(x->conf.servers[i].address,
					    y->conf.servers[i].address);
		}
		assert_int_equal(x->data.len, y->data.len);
		assert_memory_equal(x->data.base, y->data.base, x->data.len);
		break;
	}
	case RAFT_IO_TIMEOUT_NOW:
		assert_memory_equal(&a->timeout_now, &b->timeout_now,
				    sizeof(a->timeout_now));
		break;
	}
}

static void test_codec_roundtrip_and_bounds(void **state)
{
	(void)state;
	struct raft_message m[6];
	struct raft_entry ents[3];
	unsigned char payload[48], data[KVRAFT_DESC_SIZE];
	struct raft_configuration conf;
	int n;
	build_messages(m, &n, ents, payload, &conf, data);
	for (int i = 0; i < n; i++) {
		unsigned char *b;
		size_t len;
		assert_int_equal(io_msg_encode(&m[i], &b, &len), 0);
		struct raft_message d;
		assert_int_equal(io_msg_decode(b, len, &d), 0);
		assert_msg_equal(&m[i], &d);
		io_msg_release(&d);
		/* every truncation and one extra byte are rejected */
		for (size_t cut = 0; cut < len; cut++)
			assert_int_equal(io_msg_decode(b, cut, &d), KV_EPROTO);
		unsigned char *big = malloc(len + 1);
		memcpy(big, b, len);
		big[len] = 0;
		assert_int_equal(io_msg_decode(big, len + 1, &d), KV_EPROTO);
		/* flip each byte of the fixed header area: decode either
		 * fails cleanly or succeeds (no crash, no leak) */
		for (size_t k = 0; k < len && k < 200; k++) {
			memcpy(big, b, len);
			big[k] ^= 0xff;
			if (io_msg_decode(big, len, &d) == 0)
				io_msg_release(&d);
		}
		free(big);
		free(b);
	}
	/* absurd counts do not allocate */
	unsigned char evil[8 + 40];
	memset(evil, 0, sizeof(evil));
	evil[0] = KVRAFT_MSG_VERSION;
	evil[1] = RAFT_IO_APPEND_ENTRIES;
	io_put64(evil + 8 + 32, UINT64_MAX);
	struct raft_message d;
	assert_int_equal(io_msg_decode(evil, sizeof(evil), &d), KV_EPROTO);
	evil[1] = 77;
	assert_int_equal(io_msg_decode(evil, sizeof(evil), &d), KV_EPROTO);
	raft_configuration_close(&conf);
}

static void deliver_raft(void *arg, uint64_t from, uint8_t type,
			 const void *body, size_t len)
{
	struct tio *t = arg;
	assert_int_equal(type, PEER_MSG_RAFT);
	kvraft_io_receive(t->io, from, body, len);
}

struct snd {
	struct raft_io_send req;
	int done;
	int status;
};

static void on_send(struct raft_io_send *req, int status)
{
	struct snd *s = req->data;
	s->done++;
	s->status = status;
}

static bool got_recv(void *arg)
{
	struct tio *t = arg;
	return t->nrecv > 0;
}

static void test_send_receive(void **state)
{
	struct env *e = *state;
	struct tio a, b;
	tio_open(e, &a, "na", 1);
	tio_open(e, &b, "nb", 2);
	tio_start(&a);
	tio_start(&b);
	rt_net_attach(&e->net, 1, deliver_raft, &a);
	rt_net_attach(&e->net, 2, deliver_raft, &b);
	struct raft_message m[6];
	struct raft_entry ents[3];
	unsigned char payload[48], data[KVRAFT_DESC_SIZE];
	struct raft_configuration conf;
	int n;
	build_messages(m, &n, ents, payload, &conf, data);
	for (int i = 0; i < n; i++) {
		m[i].server_id = 2;
		struct snd s = {.req.data = &s};
		b.nrecv = 0;
		assert_int_equal(a.r->send(a.r, &s.req, &m[i], on_send), 0);
		/* the callback never runs inside send */
		assert_int_equal(s.done, 0);
		assert_true(rt_run_until(&e->loop, got_recv, &b, 5000));
		assert_int_equal(s.done, 1);
		assert_int_equal(s.status, 0);
		assert_int_equal(b.last.server_id, 1);
		assert_string_equal(b.last.server_address, "1");
		assert_msg_equal(&m[i], &b.last);
	}
	raft_configuration_close(&conf);
	rt_net_detach(&e->net, 1);
	rt_net_detach(&e->net, 2);
	tio_close(e, &a);
	tio_close(e, &b);
}

/* A failed fsync: the batch reports RAFT_IOERR (never success), queued
 * appends fail too, and the io refuses everything afterwards. */
static void test_wal_failure_is_failstop(void **state)
{
	struct env *e = *state;
	struct vfs *vfs = vfs_fault_new(vfs_posix());
	struct tio t;
	tio_open_vfs(e, &t, "f", 1, vfs);
	tio_start(&t);
	append_range(e, &t, 1, 5, 1);
	vfs_fault_arm(vfs, VFS_OP_SYNC, 1, KV_EIO, true);
	struct app a[3];
	int order[3], done = 0;
	memset(a, 0, sizeof(a));
	for (int k = 0; k < 3; k++) {
		a[k].n = 1;
		a[k].req.data = &a[k];
		a[k].order = order;
		a[k].done = &done;
		a[k].seq = k;
		fill(&a[k].ents[0], 6 + (uint64_t)k, 1);
		int rv = t.r->append(t.r, &a[k].req, a[k].ents, 1, on_append);
		/* once the failure is known, appends are refused at once */
		if (rv != 0) {
			assert_int_equal(rv, RAFT_IOERR);
			done++;
			order[k] = k;
			a[k].status = rv;
		}
	}
	struct counter c = {&done, 3};
	assert_true(rt_run_until(&e->loop, reached, &c, 10000));
	for (int k = 0; k < 3; k++) {
		assert_int_equal(a[k].status, RAFT_IOERR);
		free(a[k].ents[0].buf.base);
	}
	assert_true(kvraft_io_failed(t.io));
	assert_int_equal(t.failstops, 1);
	assert_int_equal(t.r->set_term(t.r, 9), RAFT_IOERR);
	assert_int_equal(t.r->set_vote(t.r, 2), RAFT_IOERR);
	assert_int_equal(t.r->truncate(t.r, 3), RAFT_IOERR);
	struct app b = {.req.data = &b, .order = order, .done = &done};
	fill(&b.ents[0], 6, 1);
	assert_int_equal(t.r->append(t.r, &b.req, b.ents, 1, on_append),
			 RAFT_IOERR);
	free(b.ents[0].buf.base);
	tio_close(e, &t);
	vfs_destroy(vfs);
	/* what was acknowledged is on disk */
	tio_open(e, &t, "f", 1);
	assert_true(t.n >= 5);
	for (size_t i = 0; i < 5; i++)
		check_entry(&t.ents[i], i + 1, 1);
	tio_close(e, &t);
}

/* 0.15 would count a follower's ack of older-term entries toward commit
 * (Figure 8). The io clamps a leader's view of such an ack to its commit
 * index; acks reaching an entry of the current term pass unchanged. */
static struct raft_message clamp_seen;
static void clamp_recv(struct raft_io *io, struct raft_message *m)
{
	(void)io;
	clamp_seen = *m;
}

static uint64_t deliver_ack(struct tio *t, uint64_t term, uint64_t rejected,
			    uint64_t last)
{
	struct raft_message m;
	memset(&m, 0, sizeof(m));
	m.type = RAFT_IO_APPEND_ENTRIES_RESULT;
	m.append_entries_result.term = term;
	m.append_entries_result.rejected = rejected;
	m.append_entries_result.last_log_index = last;
	kvraft_io_deliver(t->io, 2, &m);
	return clamp_seen.append_entries_result.last_log_index;
}

static void test_leader_ack_clamp(void **state)
{
	struct env *e = *state;
	struct tio t;
	tio_open(e, &t, "c", 1);
	assert_int_equal(t.r->start(t.r, 50, on_tick, clamp_recv), 0);
	/* a fake leader in term 5: entries 1..20 of term 3, 21..22 of 5 */
	struct raft *r = calloc(1, sizeof(*r));
	struct raft_entry ents[32];
	memset(ents, 0, sizeof(ents));
	for (int i = 0; i < 22; i++)
		ents[i].term = i < 20 ? 3 : 5;
	r->state = RAFT_LEADER;
	r->current_term = 5;
	r->commit_index = 10;
	r->log.entries = ents;
	r->log.size = 32;
	r->log.front = 0;
	r->log.back = 22;
	r->log.offset = 0;
	t.r->data = r;
	assert_int_equal(deliver_ack(&t, 5, 0, 20), 10);
	assert_int_equal(deliver_ack(&t, 5, 0, 15), 10);
	assert_int_equal(deliver_ack(&t, 5, 0, 8), 8);
	assert_int_equal(deliver_ack(&t, 5, 0, 21), 21);
	assert_int_equal(deliver_ack(&t, 5, 0, 30), 30); /* raft caps it */
	assert_int_equal(deliver_ack(&t, 5, 7, 20), 20); /* a rejection */
	assert_int_equal(deliver_ack(&t, 4, 0, 20), 20); /* stale term */
	r->state = RAFT_FOLLOWER;
	assert_int_equal(deliver_ack(&t, 5, 0, 20), 20);
	t.r->data = NULL;
	free(r);
	tio_close(e, &t);
}

/* 0.15 campaigns with unpersisted entries: a RequestVote only claims
 * what the candidate has on disk. */
static void test_vote_claims_only_persisted(void **state)
{
	struct env *e = *state;
	struct tio a, b;
	tio_open(e, &a, "va", 1);
	tio_open(e, &b, "vb", 2);
	tio_start(&a);
	tio_start(&b);
	rt_net_attach(&e->net, 1, deliver_raft, &a);
	rt_net_attach(&e->net, 2, deliver_raft, &b);
	struct raft *r = calloc(1, sizeof(*r));
	struct raft_entry ents[16];
	memset(ents, 0, sizeof(ents));
	for (int i = 0; i < 8; i++)
		ents[i].term = i < 4 ? 1 : 2;
	r->state = RAFT_CANDIDATE;
	r->current_term = 3;
	r->last_stored = 5;
	r->log.entries = ents;
	r->log.size = 16;
	r->log.back = 8;
	a.r->data = r;
	struct raft_message m;
	memset(&m, 0, sizeof(m));
	m.type = RAFT_IO_REQUEST_VOTE;
	m.server_id = 2;
	m.request_vote = (struct raft_request_vote){3, 1, 8, 2, false, false};
	struct snd s = {.req.data = &s};
	assert_int_equal(a.r->send(a.r, &s.req, &m, on_send), 0);
	assert_true(rt_run_until(&e->loop, got_recv, &b, 5000));
	assert_int_equal(b.last.request_vote.last_log_index, 5);
	assert_int_equal(b.last.request_vote.last_log_term, 2);
	/* everything persisted: unchanged */
	r->last_stored = 8;
	b.nrecv = 0;
	assert_int_equal(a.r->send(a.r, &s.req, &m, on_send), 0);
	assert_true(rt_run_until(&e->loop, got_recv, &b, 5000));
	assert_int_equal(b.last.request_vote.last_log_index, 8);
	a.r->data = NULL;
	free(r);
	rt_net_detach(&e->net, 1);
	rt_net_detach(&e->net, 2);
	tio_close(e, &a);
	tio_close(e, &b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_codec_roundtrip_and_bounds),
		cmocka_unit_test_setup_teardown(test_append_order_and_reload,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncate_then_append,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_term_vote_durable, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_bootstrap, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
			test_recover_appends_configuration, setup, teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_put_get, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_send_receive, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_wal_failure_is_failstop,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_leader_ack_clamp, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_vote_claims_only_persisted,
						setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

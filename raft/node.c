/* raft/node.c — see kvraft/node.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/log.h"
#include "io_codec.h"
#include "kv/errors.h"
#include "kvraft/transport.h"
#include "node_internal.h"

#define ENTRY_MAGIC 0x3142564bu /* "KVB1" little endian */
#define ENTRY_HDR 8u

#define container_of(p, T, m) ((T *)((char *)(p) - offsetof(T, m)))

/* ---- small list helpers (doubly linked, head pointer) ---- */

#define LIST_PUSH(head, x)                 \
	do {                               \
		(x)->prev = NULL;          \
		(x)->next = (head);        \
		if (head)                  \
			(head)->prev = (x); \
		(head) = (x);              \
	} while (0)
#define LIST_DEL(head, x)                            \
	do {                                         \
		if ((x)->prev)                       \
			(x)->prev->next = (x)->next; \
		else                                 \
			(head) = (x)->next;          \
		if ((x)->next)                       \
			(x)->next->prev = (x)->prev; \
		(x)->prev = (x)->next = NULL;        \
	} while (0)

static uint64_t now_ms(struct kvraft_node *n)
{
	return uv_now(n->loop);
}

uint64_t node_term_of(struct raft *r, uint64_t index)
{
	const struct raft_log *l = &r->log;
	size_t cnt = l->back >= l->front ? l->back - l->front
					 : l->size - l->front + l->back;
	if (index > l->offset && index <= l->offset + cnt)
		return l->entries[(l->front + (index - l->offset - 1)) %
				  l->size]
			.term;
	if (index == l->snapshot.last_index)
		return l->snapshot.last_term;
	return 0;
}

static int send_msg(struct kvraft_node *n, uint64_t to, uint8_t type,
		    const void *body, size_t len)
{
	return n->net->send(n->net->data, to, type, body, len);
}

static int from_raft(int rv)
{
	switch (rv) {
	case 0:
		return 0;
	case RAFT_NOMEM:
		return KV_ENOMEM;
	case RAFT_NOTLEADER:
		return KV_ENOLEADER;
	case RAFT_LEADERSHIPLOST:
		return KV_ECANCELED;
	case RAFT_SHUTDOWN:
	case RAFT_CANCELED:
		return KV_ECLOSED;
	case RAFT_TOOBIG:
		return KV_ETOOBIG;
	case RAFT_IOERR:
		return KV_EFAILSTOP;
	default:
		return KV_EINTERNAL;
	}
}

static uint64_t current_leader(struct kvraft_node *n)
{
	raft_id id = 0;
	const char *addr = NULL;
	if (!n->started || n->failed || n->closing)
		return 0;
	raft_leader(&n->raft, &id, &addr);
	return id;
}

static bool is_leader(struct kvraft_node *n)
{
	return n->started && !n->failed && !n->closing &&
	       raft_state(&n->raft) == RAFT_LEADER;
}

/* ---- reads ---- */

static void finish_read(struct kvraft_read_req *r, int status)
{
	r->node = NULL;
	r->cb(r, status);
}

static void fail_read_list(struct kvraft_read_req **head, int status)
{
	while (*head) {
		struct kvraft_read_req *r = *head;
		LIST_DEL(*head, r);
		finish_read(r, status);
	}
}

static void reply_read_index(struct kvraft_node *n, uint64_t to, uint64_t id,
			     int status, uint64_t index)
{
	unsigned char b[24];
	io_put64(b, id);
	io_put64(b + 8, (uint64_t)(int64_t)status);
	io_put64(b + 16, index);
	send_msg(n, to, PEER_MSG_READ_INDEX_RESULT, b, sizeof(b));
}

static void fail_remote_list(struct kvraft_node *n, struct remote_read **head,
			     int status)
{
	while (*head) {
		struct remote_read *rr = *head;
		*head = rr->next;
		if (!n->closing)
			reply_read_index(n, rr->from, rr->id, status, 0);
		free(rr);
	}
}

static void check_applied(struct kvraft_node *n)
{
	if (!n->started)
		return;
	uint64_t applied = raft_last_applied(&n->raft);
	struct kvraft_read_req *r = n->rq_applied;
	while (r) {
		struct kvraft_read_req *next = r->next;
		if (applied >= r->index) {
			LIST_DEL(n->rq_applied, r);
			finish_read(r, 0);
			if (n->closing)
				return; /* closed from the callback */
		}
		r = next;
	}
}

static void kick_reads(struct kvraft_node *n);

/* A batch's entry (its barrier, or the write it rides on) was applied at
 * index with raft status `status`. */
static void read_batch_done(struct read_batch *rb, int status, uint64_t index)
{
	struct kvraft_node *n = rb->node;
	int st = status == 0 ? 0 : KV_ENOLEADER;
	if (rb->detached || n->closing)
		st = KV_ECLOSED;
	else if (n->failed)
		st = KV_EFAILSTOP;
	if (!rb->detached && n->batch == rb)
		n->batch = NULL;
	fail_read_list(&rb->reads, st);
	while (rb->remote) {
		struct remote_read *rr = rb->remote;
		rb->remote = rr->next;
		if (!rb->detached && !n->closing)
			reply_read_index(n, rr->from, rr->id, st, index);
		free(rr);
	}
	free(rb);
	if (!n->closing)
		kick_reads(n);
}

static void on_read_barrier(struct raft_barrier *b, int status)
{
	struct read_batch *rb = container_of(b, struct read_batch, barrier);
	read_batch_done(rb, status, b->index);
}

/* A write entry was just appended by this leader: the reads queued so far
 * (a barrier is already in flight for earlier ones) are served by it
 * instead of another barrier. Returns the batch to complete from the
 * write's callback, or NULL. */
static struct read_batch *ride_write(struct kvraft_node *n)
{
	if (n->rq_queued == NULL && n->remote_queued == NULL)
		return NULL;
	if (!kvraft_node_leader_ready(n))
		return NULL;
	struct read_batch *rb = calloc(1, sizeof(*rb));
	if (rb == NULL)
		return NULL;
	rb->node = n;
	rb->reads = n->rq_queued;
	rb->remote = n->remote_queued;
	n->rq_queued = NULL;
	n->remote_queued = NULL;
	return rb;
}

static void kick_reads_now(struct kvraft_node *n);

static void on_kick(uv_idle_t *h)
{
	struct kvraft_node *n = h->data;
	uv_idle_stop(h);
	kick_reads_now(n);
}

/* Starts the next read batch soon: from the loop, outside whatever raft
 * callback we may be in (read barrier callbacks run while raft converts
 * a leader to a follower; a raft_barrier then crashes 0.15). */
static void kick_reads(struct kvraft_node *n)
{
	if (n->closing || uv_is_active((uv_handle_t *)&n->kick))
		return;
	uv_idle_start(&n->kick, on_kick);
}

/* Starts the next read batch if none is in flight. */
static void kick_reads_now(struct kvraft_node *n)
{
	if (n->batch || n->closing || n->failed || !n->started)
		return;
	if (n->rq_queued == NULL && n->remote_queued == NULL)
		return;
	if (is_leader(n)) {
		if (!kvraft_node_leader_ready(n))
			return; /* served once the election barrier applied */
		struct read_batch *rb = calloc(1, sizeof(*rb));
		if (rb == NULL)
			return; /* retried on the next event */
		rb->node = n;
		rb->reads = n->rq_queued;
		rb->remote = n->remote_queued;
		n->rq_queued = NULL;
		n->remote_queued = NULL;
		rb->barrier.data = rb;
		int rv = raft_barrier(&n->raft, &rb->barrier, on_read_barrier);
		if (rv != 0) {
			n->rq_queued = rb->reads;
			n->remote_queued = rb->remote;
			free(rb);
			return;
		}
		n->batch = rb;
		return;
	}
	/* follower: remote requests are answered "not leader" */
	fail_remote_list(n, &n->remote_queued, KV_ENOLEADER);
	uint64_t leader = current_leader(n);
	if (leader == 0 || leader == n->id || n->rq_queued == NULL)
		return;
	struct read_batch *rb = calloc(1, sizeof(*rb));
	if (rb == NULL)
		return;
	rb->node = n;
	rb->reads = n->rq_queued;
	n->rq_queued = NULL;
	rb->id = ++n->next_id;
	rb->to = leader;
	n->batch = rb;
	unsigned char b[8];
	io_put64(b, rb->id);
	send_msg(n, leader, PEER_MSG_READ_INDEX, b, sizeof(b));
}

/* A follower's batch is abandoned: its reads go back to the queue (they
 * are retried with the next leader, still bounded by their deadline). */
static void requeue_follower_batch(struct kvraft_node *n)
{
	struct read_batch *rb = n->batch;
	if (rb == NULL || rb->to == 0)
		return;
	n->batch = NULL;
	while (rb->reads) {
		struct kvraft_read_req *r = rb->reads;
		LIST_DEL(rb->reads, r);
		LIST_PUSH(n->rq_queued, r);
	}
	free(rb);
}

static void on_read_index(struct kvraft_node *n, uint64_t from,
			  const unsigned char *b, size_t len)
{
	if (len != 8)
		return;
	uint64_t id = io_get64(b);
	if (!is_leader(n)) {
		reply_read_index(n, from, id, KV_ENOLEADER, 0);
		return;
	}
	struct remote_read *rr = calloc(1, sizeof(*rr));
	if (rr == NULL) {
		reply_read_index(n, from, id, KV_ENOMEM, 0);
		return;
	}
	rr->from = from;
	rr->id = id;
	rr->next = n->remote_queued;
	n->remote_queued = rr;
	kick_reads(n);
}

static void on_read_index_result(struct kvraft_node *n, uint64_t from,
				 const unsigned char *b, size_t len)
{
	if (len != 24)
		return;
	uint64_t id = io_get64(b);
	int status = (int)(int64_t)io_get64(b + 8);
	uint64_t index = io_get64(b + 16);
	struct read_batch *rb = n->batch;
	if (rb == NULL || rb->id != id || rb->to != from)
		return; /* stale */
	n->batch = NULL;
	if (status == KV_ENOLEADER) {
		/* asked a former leader: retry with whoever leads now */
		while (rb->reads) {
			struct kvraft_read_req *r = rb->reads;
			LIST_DEL(rb->reads, r);
			LIST_PUSH(n->rq_queued, r);
		}
	} else {
		while (rb->reads) {
			struct kvraft_read_req *r = rb->reads;
			LIST_DEL(rb->reads, r);
			if (status != 0) {
				finish_read(r, status);
			} else {
				r->index = index;
				LIST_PUSH(n->rq_applied, r);
			}
		}
	}
	free(rb);
	check_applied(n);
	kick_reads(n);
}

int kvraft_node_read_barrier(struct kvraft_node *n,
			     struct kvraft_read_req *req, kvraft_read_cb cb)
{
	if (n->closing)
		return KV_ECLOSED;
	if (n->failed)
		return KV_EFAILSTOP;
	req->node = n;
	req->cb = cb;
	req->index = 0;
	req->deadline = now_ms(n) + n->cfg.request_timeout_ms;
	LIST_PUSH(n->rq_queued, req);
	kick_reads(n);
	return 0;
}

/* ---- proposals ---- */

static void *encode_entry(const void *batch, size_t len, size_t *out_len)
{
	size_t total = ENTRY_HDR + ((len + 7) & ~(size_t)7);
	unsigned char *p = raft_malloc(total);
	if (p == NULL)
		return NULL;
	io_put32(p, ENTRY_MAGIC);
	io_put32(p + 4, (uint32_t)len);
	if (len > 0)
		memcpy(p + ENTRY_HDR, batch, len);
	memset(p + ENTRY_HDR + len, 0, total - ENTRY_HDR - len);
	*out_len = total;
	return p;
}

static void on_local_apply(struct raft_apply *a, int status, void *result)
{
	struct kvraft_propose_req *req =
		container_of(a, struct kvraft_propose_req, apply);
	struct kvraft_node *n = req->node;
	(void)result;
	int st = from_raft(status);
	if (status == 0 && n->failed)
		st = KV_EFAILSTOP;
	struct read_batch *rb = req->reads;
	uint64_t index = a->index; /* req may be freed by its callback */
	req->reads = NULL;
	req->node = NULL;
	req->cb(req, st, status == 0 ? index : 0);
	if (rb)
		read_batch_done(rb, status, index);
}

/* raft_apply on this (leader) member; buf ownership passes to raft on 0. */
static int leader_apply(struct kvraft_node *n, struct raft_apply *a,
			const void *batch, size_t len, raft_apply_cb cb)
{
	struct raft_buffer buf;
	buf.base = encode_entry(batch, len, &buf.len);
	if (buf.base == NULL)
		return KV_ENOMEM;
	int rv = raft_apply(&n->raft, a, &buf, 1, cb);
	if (rv != 0) {
		raft_free(buf.base);
		return from_raft(rv);
	}
	return 0;
}

struct fwd_apply {
	struct raft_apply apply;
	struct kvraft_node *node;
	uint64_t from, id;
	struct read_batch *reads; /* riding on this write, or NULL */
};

static void reply_forward(struct kvraft_node *n, uint64_t to, uint64_t id,
			  int status, uint64_t index)
{
	unsigned char b[24];
	io_put64(b, id);
	io_put64(b + 8, (uint64_t)(int64_t)status);
	io_put64(b + 16, index);
	send_msg(n, to, PEER_MSG_FORWARD_RESULT, b, sizeof(b));
}

static void on_forward_apply(struct raft_apply *a, int status, void *result)
{
	struct fwd_apply *f = container_of(a, struct fwd_apply, apply);
	struct kvraft_node *n = f->node;
	(void)result;
	n->fwd_applies--;
	int st = from_raft(status);
	if (status == 0 && n->failed)
		st = KV_EFAILSTOP;
	if (!n->closing)
		reply_forward(n, f->from, f->id, st,
			      status == 0 ? a->index : 0);
	struct read_batch *rb = f->reads;
	uint64_t index = a->index;
	free(f);
	if (rb)
		read_batch_done(rb, status, index);
}

static void on_forward(struct kvraft_node *n, uint64_t from,
		       const unsigned char *b, size_t len)
{
	if (len < 8)
		return;
	uint64_t id = io_get64(b);
	if (!is_leader(n)) {
		reply_forward(n, from, id, KV_ENOLEADER, 0);
		return;
	}
	if (len - 8 > KVRAFT_MAX_BATCH) {
		reply_forward(n, from, id, KV_ETOOBIG, 0);
		return;
	}
	struct fwd_apply *f = calloc(1, sizeof(*f));
	if (f == NULL) {
		reply_forward(n, from, id, KV_ENOMEM, 0);
		return;
	}
	f->node = n;
	f->from = from;
	f->id = id;
	int rv = leader_apply(n, &f->apply, b + 8, len - 8, on_forward_apply);
	if (rv != 0) {
		free(f);
		reply_forward(n, from, id, rv, 0);
		return;
	}
	n->fwd_applies++;
	f->reads = ride_write(n);
}

static void finish_forward(struct kvraft_node *n,
			   struct kvraft_propose_req *req, int status,
			   uint64_t index)
{
	LIST_DEL(n->fwd, req);
	req->node = NULL;
	req->cb(req, status, index);
}

static void on_forward_result(struct kvraft_node *n, uint64_t from,
			      const unsigned char *b, size_t len)
{
	if (len != 24)
		return;
	uint64_t id = io_get64(b);
	int status = (int)(int64_t)io_get64(b + 8);
	uint64_t index = io_get64(b + 16);
	if (status > 0 || status < -1000)
		status = KV_EINTERNAL;
	for (struct kvraft_propose_req *r = n->fwd; r; r = r->next)
		if (r->fwd_id == id && r->fwd_to == from) {
			finish_forward(n, r, status, index);
			return;
		}
}

int kvraft_node_propose(struct kvraft_node *n, const void *batch, size_t len,
			struct kvraft_propose_req *req, kvraft_propose_cb cb)
{
	if (n->closing)
		return KV_ECLOSED;
	if (n->failed)
		return KV_EFAILSTOP;
	if (!n->started)
		return KV_ENOLEADER;
	if (len > KVRAFT_MAX_BATCH)
		return KV_ETOOBIG;
	req->node = n;
	req->cb = cb;
	req->fwd_id = 0;
	req->fwd_to = 0;
	req->reads = NULL;
	if (is_leader(n)) {
		req->apply.data = req;
		int rv = leader_apply(n, &req->apply, batch, len,
				      on_local_apply);
		if (rv == 0)
			req->reads = ride_write(n);
		return rv;
	}
	uint64_t leader = current_leader(n);
	if (leader == 0 || leader == n->id)
		return KV_ENOLEADER;
	unsigned char *b = malloc(8 + len);
	if (b == NULL)
		return KV_ENOMEM;
	req->fwd_id = ++n->next_id;
	req->fwd_to = leader;
	req->deadline = now_ms(n) + n->cfg.request_timeout_ms;
	io_put64(b, req->fwd_id);
	if (len > 0)
		memcpy(b + 8, batch, len);
	LIST_PUSH(n->fwd, req);
	/* A send failure is not reported here: the request times out (or
	 * is canceled when the leader changes), like a lost message. */
	send_msg(n, leader, PEER_MSG_FORWARD, b, 8 + len);
	free(b);
	return 0;
}

/* ---- leadership tracking (after every raft event) ---- */

static void on_lead_barrier(struct raft_barrier *b, int status)
{
	struct kvraft_node *n = container_of(b, struct kvraft_node,
					     lead_barrier);
	n->lead_barrier_inflight = false;
	if (n->closing)
		return; /* raft fails it while closing, before its close cb */
	if (status == 0 && is_leader(n) &&
	    n->raft.current_term == n->lead_barrier_term) {
		n->ready_term = n->lead_barrier_term;
		KV_INFO("raft", "leader ready", "id=%llx term=%llu index=%llu",
			(unsigned long long)n->id,
			(unsigned long long)n->ready_term,
			(unsigned long long)b->index);
	}
	kick_reads(n);
}

static void on_event(void *data)
{
	struct kvraft_node *n = data;
	if (n->closing || !n->started)
		return;
	int state = raft_state(&n->raft);
	uint64_t leader = current_leader(n);
	uint64_t term = n->raft.current_term;
	if (leader != n->last_leader || term != n->last_term ||
	    state != n->last_state) {
		if (leader != n->last_leader) {
			/* forwards sent to another member: outcome unknown */
			struct kvraft_propose_req *r = n->fwd;
			while (r) {
				struct kvraft_propose_req *next = r->next;
				if (r->fwd_to != leader)
					finish_forward(n, r, KV_ECANCELED, 0);
				if (n->closing)
					return;
				r = next;
			}
			requeue_follower_batch(n);
		}
		if (state != RAFT_LEADER)
			n->ready_term = 0;
		n->last_leader = leader;
		n->last_term = term;
		n->last_state = state;
	}
	if (state == RAFT_LEADER && n->ready_term != term &&
	    !n->lead_barrier_inflight) {
		/* 0.15 appends no entry of its own on election: without one,
		 * entries of older terms are not known committed and reads
		 * could be stale. */
		n->lead_barrier.data = n;
		n->lead_barrier_term = term;
		if (raft_barrier(&n->raft, &n->lead_barrier,
				 on_lead_barrier) == 0)
			n->lead_barrier_inflight = true;
	}
	kick_reads(n);
	check_applied(n);
}

static void on_sweep(uv_timer_t *t)
{
	struct kvraft_node *n = t->data;
	uint64_t now = now_ms(n);
	struct kvraft_propose_req *p = n->fwd;
	while (p) {
		struct kvraft_propose_req *next = p->next;
		if (now >= p->deadline)
			finish_forward(n, p, KV_ETIMEOUT, 0);
		if (n->closing)
			return;
		p = next;
	}
	struct kvraft_read_req **lists[] = {&n->rq_queued, &n->rq_applied};
	for (int i = 0; i < 2; i++) {
		struct kvraft_read_req *r = *lists[i];
		while (r) {
			struct kvraft_read_req *next = r->next;
			if (now >= r->deadline) {
				LIST_DEL(*lists[i], r);
				finish_read(r, current_leader(n) == 0
						       ? KV_ENOLEADER
						       : KV_ETIMEOUT);
				if (n->closing)
					return;
			}
			r = next;
		}
	}
	/* a follower's read-index request that got no answer */
	if (n->batch && n->batch->to != 0) {
		struct kvraft_read_req *r = n->batch->reads;
		while (r) {
			struct kvraft_read_req *next = r->next;
			if (now >= r->deadline) {
				LIST_DEL(n->batch->reads, r);
				finish_read(r, KV_ETIMEOUT);
				if (n->closing)
					return;
			}
			r = next;
		}
		if (n->batch->reads == NULL) {
			free(n->batch);
			n->batch = NULL;
		}
	}
	node_snapshot_sweep(n);
	on_event(n);
}

/* ---- fail-stop ---- */

void node_failstop(struct kvraft_node *n, int err, const char *what)
{
	if (n->failed)
		return;
	n->failed = true;
	n->fail_err = err;
	KV_ERROR("raft", "node stopped (fail-stop)",
		 "id=%llx what=\"%s\" err=\"%s\"", (unsigned long long)n->id,
		 what, kv_strerror(err));
	kvraft_io_fail(n->io, err);
	struct kvraft_propose_req *p;
	while ((p = n->fwd) != NULL)
		finish_forward(n, p, KV_EFAILSTOP, 0);
	fail_read_list(&n->rq_queued, KV_EFAILSTOP);
	fail_read_list(&n->rq_applied, KV_EFAILSTOP);
	fail_remote_list(n, &n->remote_queued, KV_EFAILSTOP);
	if (n->batch && n->batch->to != 0) {
		fail_read_list(&n->batch->reads, KV_EFAILSTOP);
		free(n->batch);
		n->batch = NULL;
	}
}

static void on_io_failstop(void *data, int err)
{
	node_failstop(data, err, "raft io");
}

/* ---- the raft FSM ---- */

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf,
		     void **result)
{
	struct kvraft_node *n = fsm->data;
	*result = NULL;
	if (n->failed)
		return 0; /* never stall raft; the node refuses everything */
	uint64_t index = n->raft.last_applied + 1;
	uint64_t term = node_term_of(&n->raft, index);
	const unsigned char *p = buf->base;
	if (buf->len < ENTRY_HDR || io_get32(p) != ENTRY_MAGIC ||
	    io_get32(p + 4) > buf->len - ENTRY_HDR) {
		node_failstop(n, KV_ECORRUPT, "malformed command entry");
		return 0;
	}
	uint64_t ai = 0, at = 0;
	n->sm->applied(n->sm->data, &ai, &at);
	if (index <= ai)
		return 0; /* already in the state machine (replay) */
	int rv = n->sm->apply(n->sm->data, index, term, p + ENTRY_HDR,
			      io_get32(p + 4));
	if (rv != 0)
		node_failstop(n, rv, "state machine apply");
	return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[],
			unsigned *n_bufs)
{
	struct kvraft_node *n = fsm->data;
	if (n->failed || n->snap_job != NULL)
		return RAFT_BUSY;
	uint64_t last = n->raft.last_applied;
	uint64_t ai = 0, at = 0;
	n->sm->applied(n->sm->data, &ai, &at);
	if (ai < last) {
		/* barriers/configuration entries since the last command */
		int rv = n->sm->apply_noop(n->sm->data, last,
					   node_term_of(&n->raft, last));
		if (rv != 0) {
			node_failstop(n, rv, "state machine apply_noop");
			return RAFT_IOERR;
		}
	}
	uint64_t idx = 0, term = 0;
	int rv = n->sm->prepare_snapshot(n->sm->data, &idx, &term);
	if (rv != 0) {
		node_failstop(n, rv, "state machine prepare_snapshot");
		return RAFT_IOERR;
	}
	if (idx != last) {
		KV_WARN("raft", "snapshot skipped: state machine index differs",
			"sm=%llu raft=%llu", (unsigned long long)idx,
			(unsigned long long)last);
		return RAFT_BUSY;
	}
	struct snap_job *j = calloc(1, sizeof(*j));
	if (j == NULL)
		return RAFT_NOMEM;
	j->index = idx;
	j->term = node_term_of(&n->raft, idx);
	if (j->term == 0)
		j->term = term;
	kvraft_io_snap_path(n->io, j->term, j->index, j->path,
			    sizeof(j->path));
	struct kvraft_desc d = {j->index, j->term, 0, 0, j->index, j->term};
	io_desc_encode(&d, j->desc);
	j->buf.base = j->desc;
	j->buf.len = KVRAFT_DESC_SIZE;
	n->snap_job = j;
	*bufs = &j->buf;
	*n_bufs = 1;
	return 0;
}

/* Worker thread: only the state machine's write_snapshot and the job. */
static int fsm_snapshot_async(struct raft_fsm *fsm, struct raft_buffer *bufs[],
			      unsigned *n_bufs)
{
	struct kvraft_node *n = fsm->data;
	(void)n_bufs;
	struct snap_job *j = container_of(*bufs, struct snap_job, buf);
	uint64_t idx = 0, term = 0, size = 0;
	uint32_t crc = 0;
	int rv = n->sm->write_snapshot(n->sm->data, j->path, &idx, &term,
				       &size, &crc);
	if (rv != 0)
		return RAFT_IOERR;
	if (idx < j->index)
		return RAFT_IOERR; /* must hold at least the prepared index */
	struct kvraft_desc d = {j->index, j->term, size, crc, idx, term};
	io_desc_encode(&d, j->desc);
	return 0;
}

static int fsm_snapshot_finalize(struct raft_fsm *fsm,
				 struct raft_buffer *bufs[], unsigned *n_bufs)
{
	struct kvraft_node *n = fsm->data;
	struct snap_job *j = container_of(*bufs, struct snap_job, buf);
	if (n->snap_job == j)
		n->snap_job = NULL;
	free(j);
	*bufs = NULL;
	*n_bufs = 0;
	return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
	struct kvraft_node *n = fsm->data;
	struct kvraft_desc d;
	if (io_desc_decode(buf->base, buf->len, &d) != 0) {
		node_failstop(n, KV_ECORRUPT, "bad snapshot descriptor");
		return RAFT_CORRUPT;
	}
	uint64_t ai = 0, at = 0;
	n->sm->applied(n->sm->data, &ai, &at);
	if (ai < d.file_index) {
		char path[4200];
		kvraft_io_snap_path(n->io, d.term, d.index, path,
				    sizeof(path));
		int rv = n->sm->restore(n->sm->data, path, d.file_index,
					d.file_term, d.crc);
		if (rv != 0) {
			node_failstop(n, rv, "state machine restore");
			return RAFT_IOERR;
		}
		KV_INFO("raft", "state restored from snapshot",
			"id=%llx index=%llu term=%llu",
			(unsigned long long)n->id,
			(unsigned long long)d.file_index,
			(unsigned long long)d.file_term);
	}
	raft_free(buf->base);
	return 0;
}

static uint64_t durable_hook(void *data)
{
	struct kvraft_node *n = data;
	return n->sm->durable_index(n->sm->data);
}

/* ---- identity file ---- */

static int read_member_file(struct kvraft_node *n)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/member", n->dir);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return errno == ENOENT ? KV_ENOTFOUND : kv_from_errno(errno);
	unsigned long long id = 0, cid = 0;
	int k = fscanf(f, "id=%llx cluster=%llx", &id, &cid);
	fclose(f);
	if (k != 2 || id == 0)
		return KV_ECORRUPT;
	n->id = id;
	n->cluster_id = cid;
	return 0;
}

static int write_member_file(struct kvraft_node *n)
{
	char tmp[4200], path[4200];
	snprintf(tmp, sizeof(tmp), "%s/member.tmp", n->dir);
	snprintf(path, sizeof(path), "%s/member", n->dir);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return kv_from_errno(errno);
	char buf[128];
	int len = snprintf(buf, sizeof(buf), "id=%016llx cluster=%016llx\n",
			   (unsigned long long)n->id,
			   (unsigned long long)n->cluster_id);
	int rv = 0;
	if (write(fd, buf, (size_t)len) != len || fsync(fd) != 0)
		rv = kv_from_errno(errno ? errno : EIO);
	close(fd);
	if (rv == 0 && rename(tmp, path) != 0)
		rv = kv_from_errno(errno);
	if (rv == 0) {
		int dfd = open(n->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			if (fsync(dfd) != 0)
				rv = kv_from_errno(errno);
			close(dfd);
		}
	}
	return rv;
}

/* ---- lifecycle ---- */

int kvraft_node_new(uv_loop_t *loop, const struct kvraft_node_config *cfg,
		    struct kvraft_sm *sm, struct kvraft_net *net,
		    struct kvraft_node **out, char *errmsg, size_t errlen)
{
	char dummy[8];
	if (errmsg == NULL) {
		errmsg = dummy;
		errlen = sizeof(dummy);
	}
	errmsg[0] = '\0';
	struct kvraft_node *n = calloc(1, sizeof(*n));
	if (n == NULL)
		return KV_ENOMEM;
	int rv = KV_ENOMEM;
	n->loop = loop;
	n->cfg = *cfg;
	n->cfg.members = NULL;
	n->cfg.nmembers = 0;
	n->cfg.data_dir = NULL;
	n->cfg.name = NULL;
	if (!n->cfg.heartbeat_ms)
		n->cfg.heartbeat_ms = 100;
	if (!n->cfg.election_timeout_ms)
		n->cfg.election_timeout_ms = 1000;
	if (!n->cfg.snapshot_count)
		n->cfg.snapshot_count = 100000;
	if (!n->cfg.snapshot_trailing)
		n->cfg.snapshot_trailing = 5000;
	if (!n->cfg.request_timeout_ms)
		n->cfg.request_timeout_ms = 7000;
	if (!n->cfg.snapshot_chunk)
		n->cfg.snapshot_chunk = 1u << 20;
	n->sm = sm;
	n->net = net;
	n->dir = strdup(cfg->data_dir);
	n->name = strdup(cfg->name ? cfg->name : "");
	if (n->dir == NULL || n->name == NULL)
		goto err;
	struct kvraft_io_options io_opts = {.dir = cfg->data_dir,
					    .net = net,
					    .sync = cfg->wal_sync,
					    .segment_size =
						    cfg->wal_segment_size,
					    .vfs = cfg->wal_vfs};
	rv = kvraft_io_new(loop, &io_opts, &n->io, errmsg, errlen);
	if (rv != 0)
		goto err;
	bool fresh = !kvraft_io_has_state(n->io);
	rv = read_member_file(n);
	if (rv == KV_ENOTFOUND && fresh) {
		n->id = cfg->self_id;
		n->cluster_id = cfg->cluster_id;
		rv = 0;
	} else if (rv != 0) {
		snprintf(errmsg, errlen, "%s/member: %s", n->dir,
			 kv_strerror(rv));
		goto err_after_io;
	}
	if (n->id == 0) {
		snprintf(errmsg, errlen, "member id 0");
		rv = KV_EINVAL;
		goto err_after_io;
	}
	if (fresh) {
		/* bootstrap: this member must be in the initial cluster */
		bool found = false;
		for (size_t i = 0; i < cfg->nmembers; i++)
			found |= cfg->members[i].id == n->id;
		if (!found) {
			snprintf(errmsg, errlen,
				 "member %llx is not in the initial cluster",
				 (unsigned long long)n->id);
			rv = KV_EINVAL;
			goto err_after_io;
		}
		struct raft_configuration conf;
		raft_configuration_init(&conf);
		for (size_t i = 0; i < cfg->nmembers; i++) {
			char addr[64];
			snprintf(addr, sizeof(addr), "%llx",
				 (unsigned long long)cfg->members[i].id);
			if (raft_configuration_add(&conf, cfg->members[i].id,
						   addr, RAFT_VOTER) != 0) {
				raft_configuration_close(&conf);
				snprintf(errmsg, errlen,
					 "bad initial cluster (duplicate "
					 "id?)");
				rv = KV_EINVAL;
				goto err_after_io;
			}
		}
		/* what raft_bootstrap does (it only calls io->bootstrap),
		 * before raft_init so a failure leaves nothing half built */
		struct raft_io *rio = kvraft_io_raft(n->io);
		rv = write_member_file(n);
		if (rv == 0)
			rv = rio->bootstrap(rio, &conf) == 0 ? 0 : KV_EIO;
		raft_configuration_close(&conf);
		if (rv != 0) {
			snprintf(errmsg, errlen, "bootstrap %s failed",
				 n->dir);
			goto err_after_io;
		}
	}
	struct kvraft_io_hooks hooks = {.data = n,
					.on_event = on_event,
					.send_snapshot = node_snapshot_send,
					.durable_index = durable_hook,
					.on_failstop = on_io_failstop};
	kvraft_io_set_hooks(n->io, &hooks);
	n->fsm.version = 3;
	n->fsm.data = n;
	n->fsm.apply = fsm_apply;
	n->fsm.snapshot = fsm_snapshot;
	n->fsm.restore = fsm_restore;
	n->fsm.snapshot_finalize = fsm_snapshot_finalize;
	n->fsm.snapshot_async = fsm_snapshot_async;
	char addr[64];
	snprintf(addr, sizeof(addr), "%llx", (unsigned long long)n->id);
	rv = raft_init(&n->raft, kvraft_io_raft(n->io), &n->fsm, n->id, addr);
	if (rv != 0) {
		snprintf(errmsg, errlen, "raft_init: %s",
			 rv > 0 ? raft_strerror(rv) : "bad io version");
		rv = KV_EINTERNAL;
		goto err_after_io;
	}
	n->raft_inited = true;
	n->raft.data = n;
	raft_set_heartbeat_timeout(&n->raft, n->cfg.heartbeat_ms);
	raft_set_election_timeout(&n->raft, n->cfg.election_timeout_ms);
	raft_set_snapshot_threshold(&n->raft,
				    (unsigned)n->cfg.snapshot_count);
	raft_set_snapshot_trailing(&n->raft,
				   (unsigned)n->cfg.snapshot_trailing);
	raft_set_pre_vote(&n->raft, true);
	uv_timer_init(loop, &n->sweep);
	n->sweep.data = n;
	uv_idle_init(loop, &n->kick);
	n->kick.data = n;
	*out = n;
	return 0;
err_after_io:
	kvraft_io_free(n->io);
err:
	free(n->dir);
	free(n->name);
	free(n);
	return rv;
}

int kvraft_node_start(struct kvraft_node *n)
{
	if (n->started || n->closing)
		return KV_EINVAL;
	int rv = raft_start(&n->raft);
	if (rv != 0) {
		KV_ERROR("raft", "raft_start failed", "id=%llx err=\"%s\"",
			 (unsigned long long)n->id, raft_errmsg(&n->raft));
		return rv == RAFT_NOMEM ? KV_ENOMEM : KV_EIO;
	}
	n->started = true;
	unsigned iv = n->cfg.heartbeat_ms < 50 ? n->cfg.heartbeat_ms : 50;
	uv_timer_start(&n->sweep, on_sweep, iv, iv);
	KV_INFO("raft", "member started",
		"id=%llx cluster=%llx last_index=%llu",
		(unsigned long long)n->id, (unsigned long long)n->cluster_id,
		(unsigned long long)raft_last_index(&n->raft));
	return 0;
}

void node_close_step(struct kvraft_node *n)
{
	if (--n->close_pending > 0)
		return;
	void (*cb)(void *) = n->close_cb;
	void *arg = n->close_arg;
	kvraft_io_free(n->io);
	free(n->snap_job); /* raft closed: no finalize can follow */
	free(n->dir);
	free(n->name);
	free(n);
	if (cb)
		cb(arg);
}

static void on_raft_closed(struct raft *r)
{
	struct kvraft_node *n = r->data;
	node_close_step(n);
}

static void on_sweep_closed(uv_handle_t *h)
{
	node_close_step(h->data);
}

void kvraft_node_close(struct kvraft_node *n, void (*cb)(void *arg),
		       void *arg)
{
	n->closing = true;
	n->close_cb = cb;
	n->close_arg = arg;
	struct kvraft_propose_req *p;
	while ((p = n->fwd) != NULL)
		finish_forward(n, p, KV_ECLOSED, 0);
	fail_read_list(&n->rq_queued, KV_ECLOSED);
	fail_read_list(&n->rq_applied, KV_ECLOSED);
	fail_remote_list(n, &n->remote_queued, KV_ECLOSED);
	if (n->batch) {
		if (n->batch->to != 0) {
			fail_read_list(&n->batch->reads, KV_ECLOSED);
			free(n->batch);
		} else {
			n->batch->detached = true; /* raft fails it */
		}
		n->batch = NULL;
	}
	/* one step each: the sweep timer, the kick handle, raft, snapshot
	 * streams, and the final decrement below */
	n->close_pending = 1;
	n->close_pending++;
	uv_close((uv_handle_t *)&n->sweep, on_sweep_closed);
	n->close_pending++;
	uv_close((uv_handle_t *)&n->kick, on_sweep_closed);
	n->close_pending += node_snapshot_close(n);
	n->close_pending++;
	raft_close(&n->raft, on_raft_closed);
	node_close_step(n);
}

/* ---- messages ---- */

void kvraft_node_receive(struct kvraft_node *n, uint64_t from, uint8_t type,
			 const void *body, size_t len)
{
	if (n->closing || n->failed || !n->started)
		return;
	switch (type) {
	case PEER_MSG_RAFT:
		kvraft_io_receive(n->io, from, body, len);
		return; /* the io calls on_event */
	case PEER_MSG_FORWARD:
		on_forward(n, from, body, len);
		break;
	case PEER_MSG_FORWARD_RESULT:
		on_forward_result(n, from, body, len);
		break;
	case PEER_MSG_READ_INDEX:
		on_read_index(n, from, body, len);
		break;
	case PEER_MSG_READ_INDEX_RESULT:
		on_read_index_result(n, from, body, len);
		break;
	case PEER_MSG_SNAPSHOT:
		node_snapshot_on_chunk(n, from, body, len);
		break;
	case PEER_MSG_SNAPSHOT_ACK:
		node_snapshot_on_ack(n, from, body, len);
		break;
	default:
		KV_WARN("raft", "dropping peer message of unknown type",
			"from=%llx type=%u", (unsigned long long)from, type);
		return;
	}
	if (!n->closing)
		on_event(n);
}

/* ---- status ---- */

bool kvraft_node_leader_ready(struct kvraft_node *n)
{
	return is_leader(n) && n->ready_term != 0 &&
	       n->ready_term == n->raft.current_term;
}

void kvraft_node_status(struct kvraft_node *n, struct kvraft_status *st)
{
	memset(st, 0, sizeof(*st));
	st->id = n->id;
	st->cluster_id = n->cluster_id;
	st->failed = n->failed;
	if (!n->started || n->closing || n->failed) {
		st->role = KVRAFT_STOPPED;
		return;
	}
	st->leader = current_leader(n);
	st->term = n->raft.current_term;
	st->commit_index = n->raft.commit_index;
	st->applied_index = raft_last_applied(&n->raft);
	st->last_index = raft_last_index(&n->raft);
	st->snapshot_index = n->raft.log.snapshot.last_index;
	switch (raft_state(&n->raft)) {
	case RAFT_LEADER:
		st->role = KVRAFT_LEADER;
		break;
	case RAFT_CANDIDATE:
		st->role = KVRAFT_CANDIDATE;
		break;
	case RAFT_FOLLOWER:
		st->role = KVRAFT_FOLLOWER;
		break;
	default:
		st->role = KVRAFT_STOPPED;
	}
	st->leader_ready = kvraft_node_leader_ready(n);
}

static void on_transfer_done(struct raft_transfer *req)
{
	struct kvraft_node *n = req->data;
	n->transfer_busy = false;
}

int kvraft_node_transfer(struct kvraft_node *n, uint64_t to)
{
	if (!is_leader(n))
		return KV_ENOLEADER;
	if (n->transfer_busy)
		return KV_EBUSY;
	memset(&n->transfer, 0, sizeof(n->transfer));
	n->transfer.data = n;
	if (raft_transfer(&n->raft, &n->transfer, to, on_transfer_done) != 0)
		return KV_EINVAL;
	n->transfer_busy = true;
	return 0;
}

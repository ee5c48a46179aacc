/* Server code calling the services like a client would: internal calls
 * (struct kvd_icall), one-watcher watch streams (struct kvd_kwatch) and
 * clientv3/concurrency's waitDeletes (struct kvd_waitdel), the pieces
 * v3lock.c and v3election.c are made of (server_internal.h).
 *
 * Every completion is delivered from a libuv timer of its own, so the
 * consumer never runs inside an apply hook, a read barrier or a watch
 * registry callback, and may start the next request or free the object
 * from its callback. Memory is freed in the timer's close callback. */
#include "server_internal.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "storage/mvcc.h"
#include "watch/watch.h"

#define MOD "icall"
/* How often a waiting watcher looks for the member stopping. */
#define STOP_POLL_MS 500
/* Pause between two tries of a read that found no leader. */
#define RETRY_MS 100

ProtobufCMessage *kvd_pb_clone(const ProtobufCMessage *m)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(n ? n : 1);
	if (buf == NULL)
		return NULL;
	size_t len = protobuf_c_message_pack(m, buf);
	ProtobufCMessage *c =
		protobuf_c_message_unpack(m->descriptor, NULL, len, buf);
	free(buf);
	return c;
}

/* ---- internal calls ----------------------------------------------------- */

static struct kvd_icall *icall_of(struct kvd_call *c)
{
	return (struct kvd_icall *)(void *)c; /* call is the first member */
}

static void on_icall_timer(uv_timer_t *t)
{
	struct kvd_icall *ic = t->data;
	if (ic->closing || ic->pending)
		return;
	ic->on_done(ic); /* may free ic */
}

static void icall_deliver(struct kvd_icall *ic)
{
	ic->pending = false;
	uv_timer_start(&ic->timer, on_icall_timer, 0, 0);
}

static void ic_respond(struct kvd_call *c, const ProtobufCMessage *msg)
{
	struct kvd_icall *ic = icall_of(c);
	ic->resp = kvd_pb_clone(msg);
	if (ic->resp == NULL) {
		ic->code = KV_GRPC_RESOURCE_EXHAUSTED;
		snprintf(ic->msg, sizeof(ic->msg), "%s",
			 "etcdserver: too many requests");
	} else {
		ic->code = 0;
		ic->msg[0] = '\0';
	}
	icall_deliver(ic);
}

static void on_icall_retry(uv_timer_t *t)
{
	struct kvd_icall *ic = t->data;
	ProtobufCMessage *m;
	if (ic->closing || !ic->pending)
		return;
	m = kvd_pb_clone(ic->retry_msg);
	if (m == NULL || !kvd_serving(ic->call.s)) {
		if (m != NULL)
			protobuf_c_message_free_unpacked(m, NULL);
		ic->code = KV_GRPC_UNAVAILABLE;
		snprintf(ic->msg, sizeof(ic->msg), "%s",
			 "etcdserver: server stopped");
		ic->pending = false;
		ic->on_done(ic); /* may free ic */
		return;
	}
	kvd_read(ic->call.s, &ic->call, m, false, false);
}

static void ic_fail(struct kvd_call *c, int code, const char *msg)
{
	struct kvd_icall *ic = icall_of(c);
	struct kvd_server *s = c->s;
	if (code == KV_GRPC_UNAVAILABLE && ic->retry_msg != NULL &&
	    !s->stopping && kvd_serving(s) &&
	    uv_now(&s->loop) + RETRY_MS < ic->retry_deadline) {
		/* still pending: the timer sends the read again */
		uv_timer_start(&ic->timer, on_icall_retry, RETRY_MS, 0);
		return;
	}
	ic->code = code != 0 ? code : KV_GRPC_UNKNOWN;
	snprintf(ic->msg, sizeof(ic->msg), "%s", msg ? msg : "");
	icall_deliver(ic);
}

static const struct kvd_call_ops icall_ops = {
	.respond = ic_respond,
	.fail = ic_fail,
};

struct kvd_icall *kvd_icall_new(struct kvd_server *s, kvd_icall_fn on_done,
				void *data)
{
	struct kvd_icall *ic = calloc(1, sizeof(*ic));
	if (ic == NULL)
		return NULL;
	ic->call.ops = &icall_ops;
	ic->call.s = s;
	ic->on_done = on_done;
	ic->data = data;
	uv_timer_init(&s->loop, &ic->timer);
	ic->timer.data = ic;
	return ic;
}

/* Resets the previous answer before a new request. */
static void icall_begin(struct kvd_icall *ic)
{
	assert(!ic->pending && !ic->closing);
	uv_timer_stop(&ic->timer);
	if (ic->resp != NULL)
		protobuf_c_message_free_unpacked(ic->resp, NULL);
	if (ic->retry_msg != NULL)
		protobuf_c_message_free_unpacked(ic->retry_msg, NULL);
	ic->resp = NULL;
	ic->retry_msg = NULL;
	ic->code = 0;
	ic->msg[0] = '\0';
	ic->call.on_abort = NULL;
	ic->call.user = NULL;
	ic->pending = true;
}

void kvd_icall_run(struct kvd_icall *ic, kvd_service_fn fn,
		   ProtobufCMessage *req)
{
	icall_begin(ic);
	if (req == NULL) {
		ic_fail(&ic->call, KV_GRPC_RESOURCE_EXHAUSTED,
			"etcdserver: too many requests");
		return;
	}
	if (!kvd_serving(ic->call.s)) {
		protobuf_c_message_free_unpacked(req, NULL);
		ic_fail(&ic->call, KV_GRPC_UNAVAILABLE,
			"etcdserver: server stopped");
		return;
	}
	fn(ic->call.s, &ic->call, req);
}

void kvd_icall_propose(struct kvd_icall *ic,
		       Kvdpb__InternalRequest__RequestCase type,
		       ProtobufCMessage *msg)
{
	icall_begin(ic);
	if (msg == NULL) {
		ic_fail(&ic->call, KV_GRPC_RESOURCE_EXHAUSTED,
			"etcdserver: too many requests");
		return;
	}
	kvd_propose(ic->call.s, &ic->call, type, msg);
}

void kvd_icall_read(struct kvd_icall *ic, ProtobufCMessage *msg, bool txn)
{
	icall_begin(ic);
	if (msg == NULL) {
		ic_fail(&ic->call, KV_GRPC_RESOURCE_EXHAUSTED,
			"etcdserver: too many requests");
		return;
	}
	if (!kvd_serving(ic->call.s)) {
		protobuf_c_message_free_unpacked(msg, NULL);
		ic_fail(&ic->call, KV_GRPC_UNAVAILABLE,
			"etcdserver: server stopped");
		return;
	}
	if (!txn) {
		/* on no memory for the copy, the read is simply not retried */
		ic->retry_msg = kvd_pb_clone(msg);
		struct kvd_server *s = ic->call.s;
		ic->retry_deadline = uv_now(&s->loop) + s->request_timeout_ms;
	}
	kvd_read(ic->call.s, &ic->call, msg, txn, false);
}

static void on_icall_closed(uv_handle_t *h)
{
	struct kvd_icall *ic = h->data;
	if (ic->resp != NULL)
		protobuf_c_message_free_unpacked(ic->resp, NULL);
	if (ic->retry_msg != NULL)
		protobuf_c_message_free_unpacked(ic->retry_msg, NULL);
	free(ic);
}

void kvd_icall_free(struct kvd_icall *ic)
{
	if (ic == NULL || ic->closing)
		return;
	ic->closing = true;
	if (ic->pending && ic->call.on_abort != NULL)
		ic->call.on_abort(&ic->call);
	ic->pending = false;
	uv_close((uv_handle_t *)&ic->timer, on_icall_closed);
}

/* ---- one-watcher streams ------------------------------------------------ */

struct kw_resp {
	struct kw_resp *next;
	size_t size; /* watch_response.size, drained once consumed */
	struct kvd_kwatch_resp r;
};

struct kvd_kwatch {
	struct kvd_server *s;
	struct watch_stream *ws;
	uv_timer_t timer;
	kvd_kwatch_fn on_resp;
	void *data;
	struct kw_resp *head, *tail;
	size_t undrained; /* consumed, not yet reported to the registry */
	bool paused, closing, delivering, stop_sent;
};

static void kw_resp_free(struct kw_resp *k)
{
	for (size_t i = 0; i < k->r.n; i++)
		if (k->r.ev[i].kv != NULL)
			mvccpb__key_value__free_unpacked(k->r.ev[i].kv, NULL);
	free(k->r.ev);
	free(k);
}

static Mvccpb__KeyValue *kv_copy(const struct mvcc_kv *kv)
{
	Mvccpb__KeyValue p = MVCCPB__KEY_VALUE__INIT;
	p.key.data = (uint8_t *)kv->key;
	p.key.len = kv->key_len;
	p.value.data = (uint8_t *)kv->value;
	p.value.len = kv->value_len;
	p.create_revision = kv->create_revision;
	p.mod_revision = kv->mod_revision;
	p.version = kv->version;
	p.lease = kv->lease;
	return (Mvccpb__KeyValue *)kvd_pb_clone(&p.base);
}

static void on_kw_timer(uv_timer_t *t);

/* Registry callback: copy and queue (no watch_* call allowed here). */
static void kw_on_response(void *data, const struct watch_response *r)
{
	struct kvd_kwatch *kw = data;
	struct kw_resp *k = calloc(1, sizeof(*k));
	bool ok = k != NULL;
	if (ok && r->n_events > 0) {
		k->r.ev = calloc(r->n_events, sizeof(*k->r.ev));
		ok = k->r.ev != NULL;
		for (size_t i = 0; ok && i < r->n_events; i++) {
			const struct mvcc_event *e = r->events[i];
			k->r.ev[i].deleted = e->type == MVCC_EVENT_DELETE;
			k->r.ev[i].kv = kv_copy(&e->kv);
			k->r.n = i + 1;
			ok = k->r.ev[i].kv != NULL;
		}
	}
	if (!ok) {
		/* cannot keep it: report a cancel so the consumer does not
		 * wait forever for an event it will never see */
		KV_ERROR(MOD, "out of memory copying a watch response", NULL);
		if (k != NULL)
			kw_resp_free(k);
		k = calloc(1, sizeof(*k));
		if (k == NULL) {
			kw->undrained += r->size;
			return;
		}
		k->r.canceled = true;
	}
	k->size = r->size;
	k->r.revision = r->header_revision;
	if (r->canceled) {
		k->r.canceled = true;
		k->r.compact_revision = r->compact_revision;
	}
	if (r->created && !r->canceled && r->n_events == 0) {
		/* the created response says nothing the consumer needs */
		kw->undrained += r->size;
		kw_resp_free(k);
		return;
	}
	if (kw->tail != NULL)
		kw->tail->next = k;
	else
		kw->head = k;
	kw->tail = k;
	if (!kw->paused && !kw->closing && !kw->delivering)
		uv_timer_start(&kw->timer, on_kw_timer, 0, STOP_POLL_MS);
}

static void on_kw_closed(uv_handle_t *h)
{
	struct kvd_kwatch *kw = h->data;
	while (kw->head != NULL) {
		struct kw_resp *k = kw->head;
		kw->head = k->next;
		kw_resp_free(k);
	}
	free(kw);
}

static void kw_close_now(struct kvd_kwatch *kw)
{
	if (kw->ws != NULL)
		watch_stream_close(kw->ws);
	kw->ws = NULL;
	uv_close((uv_handle_t *)&kw->timer, on_kw_closed);
}

static void on_kw_timer(uv_timer_t *t)
{
	struct kvd_kwatch *kw = t->data;
	struct kvd_server *s = kw->s;
	if (kw->closing)
		return;
	kw->delivering = true;
	while (kw->head != NULL && !kw->paused && !kw->closing) {
		struct kw_resp *k = kw->head;
		kw->head = k->next;
		if (kw->head == NULL)
			kw->tail = NULL;
		kw->undrained += k->size;
		bool more = kw->on_resp(kw, kw->data, &k->r);
		kw_resp_free(k);
		if (!more && !kw->closing)
			kw->paused = true;
	}
	if (!kw->closing && !kw->stop_sent &&
	    (s->stopping || s->watch == NULL)) {
		struct kvd_kwatch_resp r = { 0 };
		r.canceled = true;
		kw->stop_sent = true;
		(void)kw->on_resp(kw, kw->data, &r);
	}
	kw->delivering = false;
	if (kw->closing) {
		kw_close_now(kw);
		return;
	}
	if (kw->undrained > 0 && kw->ws != NULL) {
		size_t n = kw->undrained;
		kw->undrained = 0;
		watch_stream_drained(kw->ws, n); /* may queue more */
	}
	if (kw->head != NULL && !kw->paused)
		uv_timer_start(&kw->timer, on_kw_timer, 0, STOP_POLL_MS);
}

int kvd_kwatch_new(struct kvd_server *s, const uint8_t *key, size_t key_len,
		   const uint8_t *range_end, size_t range_end_len,
		   int64_t start_revision, kvd_kwatch_fn on_resp, void *data,
		   struct kvd_kwatch **out)
{
	if (s->watch == NULL || s->stopping)
		return KV_ECLOSED;
	struct kvd_kwatch *kw = calloc(1, sizeof(*kw));
	if (kw == NULL)
		return KV_ENOMEM;
	kw->s = s;
	kw->on_resp = on_resp;
	kw->data = data;
	uv_timer_init(&s->loop, &kw->timer);
	kw->timer.data = kw;
	struct watch_stream_options o = { 0 };
	o.on_response = kw_on_response;
	o.data = kw;
	o.now_ms = uv_now(&s->loop);
	int rv = watch_stream_open(s->watch, &o, &kw->ws);
	if (rv == 0) {
		struct watch_create_req q = { 0 };
		q.key = key;
		q.key_len = key_len;
		q.range_end = range_end;
		q.range_end_len = range_end_len;
		q.start_revision = start_revision;
		rv = watch_create(kw->ws, &q, NULL);
	} else {
		kw->ws = NULL;
	}
	if (rv != 0) {
		kw->closing = true;
		kw_close_now(kw);
		return rv;
	}
	uv_timer_start(&kw->timer, on_kw_timer, 0, STOP_POLL_MS);
	*out = kw;
	return 0;
}

void kvd_kwatch_pause(struct kvd_kwatch *kw)
{
	if (kw != NULL)
		kw->paused = true;
}

void kvd_kwatch_resume(struct kvd_kwatch *kw)
{
	if (kw == NULL || kw->closing || !kw->paused)
		return;
	kw->paused = false;
	if (!kw->delivering)
		uv_timer_start(&kw->timer, on_kw_timer, 0, STOP_POLL_MS);
}

void kvd_kwatch_free(struct kvd_kwatch *kw)
{
	if (kw == NULL || kw->closing)
		return;
	kw->closing = true;
	if (!kw->delivering)
		kw_close_now(kw);
}

/* ---- waitDeletes -------------------------------------------------------- */

struct kvd_waitdel {
	struct kvd_server *s;
	uint8_t *pfx, *end;
	size_t pfx_len, end_len;
	int64_t max_rev;
	kvd_waitdel_fn done;
	void *data;
	struct kvd_icall *ic;
	struct kvd_kwatch *kw;
};

static void wd_get(struct kvd_waitdel *w);

/* Ends the wait: done runs, then w is freed. */
static void wd_finish(struct kvd_waitdel *w, int code, const char *msg,
		      const Etcdserverpb__ResponseHeader *hdr)
{
	w->done(w->data, code, msg, hdr);
	kvd_waitdel_free(w);
}

static bool wd_on_watch(struct kvd_kwatch *kw, void *data,
			const struct kvd_kwatch_resp *r)
{
	struct kvd_waitdel *w = data;
	(void)kw;
	if (r->canceled) {
		if (r->compact_revision != 0)
			wd_finish(w, KV_GRPC_OUT_OF_RANGE,
				  "etcdserver: mvcc: required revision has "
				  "been compacted",
				  NULL);
		else
			wd_finish(w, KV_GRPC_UNAVAILABLE,
				  "etcdserver: server stopped", NULL);
		return false;
	}
	for (size_t i = 0; i < r->n; i++) {
		if (r->ev[i].deleted) {
			kvd_kwatch_free(w->kw);
			w->kw = NULL;
			wd_get(w);
			return false;
		}
	}
	return true;
}

static void wd_on_get(struct kvd_icall *ic)
{
	struct kvd_waitdel *w = ic->data;
	if (ic->code != 0) {
		wd_finish(w, ic->code, ic->msg, NULL);
		return;
	}
	Etcdserverpb__RangeResponse *r =
		(Etcdserverpb__RangeResponse *)ic->resp;
	if (r->n_kvs == 0) {
		wd_finish(w, 0, NULL, r->header);
		return;
	}
	const Mvccpb__KeyValue *kv = r->kvs[0];
	int64_t rev = r->header ? r->header->revision : 0;
	int rv = kvd_kwatch_new(w->s, kv->key.data, kv->key.len, NULL, 0, rev,
				wd_on_watch, w, &w->kw);
	if (rv != 0)
		wd_finish(w, KV_GRPC_UNAVAILABLE,
			  rv == KV_ENOMEM ? "etcdserver: too many requests"
					  : "etcdserver: server stopped",
			  NULL);
}

/* The newest key under the prefix created at or before max_rev
 * (clientv3.WithLastCreate + WithMaxCreateRev). */
static void wd_get(struct kvd_waitdel *w)
{
	Etcdserverpb__RangeRequest q = ETCDSERVERPB__RANGE_REQUEST__INIT;
	q.key.data = w->pfx;
	q.key.len = w->pfx_len;
	q.range_end.data = w->end;
	q.range_end.len = w->end_len;
	q.limit = 1;
	q.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND;
	q.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__CREATE;
	q.max_create_revision = w->max_rev;
	kvd_icall_read(w->ic, kvd_pb_clone(&q.base), false);
}

int kvd_waitdel_new(struct kvd_server *s, const uint8_t *pfx, size_t len,
		    int64_t max_create_rev, kvd_waitdel_fn done, void *data,
		    struct kvd_waitdel **out)
{
	struct kvd_waitdel *w = calloc(1, sizeof(*w));
	if (w == NULL)
		return KV_ENOMEM;
	w->s = s;
	w->pfx = malloc(len ? len : 1);
	w->end = kvd_prefix_end(pfx, len, &w->end_len);
	w->ic = kvd_icall_new(s, wd_on_get, w);
	if (w->pfx == NULL || w->end == NULL || w->ic == NULL) {
		kvd_icall_free(w->ic);
		free(w->pfx);
		free(w->end);
		free(w);
		return KV_ENOMEM;
	}
	memcpy(w->pfx, pfx, len);
	w->pfx_len = len;
	w->max_rev = max_create_rev;
	w->done = done;
	w->data = data;
	*out = w;
	wd_get(w);
	return 0;
}

void kvd_waitdel_free(struct kvd_waitdel *w)
{
	if (w == NULL)
		return;
	kvd_icall_free(w->ic);
	kvd_kwatch_free(w->kw);
	free(w->pfx);
	free(w->end);
	free(w);
}

/* ---- helpers ------------------------------------------------------------ */

uint8_t *kvd_conc_key(const uint8_t *pfx, size_t pfx_len, int64_t lease,
		      size_t *len)
{
	char hex[24];
	/* Go's %x of a signed LeaseID */
	if (lease < 0)
		snprintf(hex, sizeof(hex), "-%" PRIx64,
			 (uint64_t)0 - (uint64_t)lease);
	else
		snprintf(hex, sizeof(hex), "%" PRIx64, (uint64_t)lease);
	size_t n = strlen(hex);
	uint8_t *k = malloc(pfx_len + n + 1);
	if (k == NULL)
		return NULL;
	if (pfx_len > 0)
		memcpy(k, pfx, pfx_len);
	memcpy(k + pfx_len, hex, n);
	*len = pfx_len + n;
	return k;
}

uint8_t *kvd_prefix_end(const uint8_t *pfx, size_t len, size_t *end_len)
{
	uint8_t *e = malloc(len ? len : 1);
	if (e == NULL)
		return NULL;
	if (len > 0)
		memcpy(e, pfx, len);
	for (size_t i = len; i-- > 0;) {
		if (e[i] < 0xff) {
			e[i]++;
			*end_len = i + 1;
			return e;
		}
	}
	/* every byte 0xff (or empty): to the end of the key space */
	e[0] = 0;
	*end_len = 1;
	return e;
}

void kvd_conc_fail(struct kvd_call *c, int code, const char *msg)
{
	/* a stopping member says Unavailable, as etcd's closing gRPC server
	 * does, so that clients go to another member */
	bool keep = code == KV_GRPC_UNIMPLEMENTED ||
		    (code == KV_GRPC_UNAVAILABLE && c->s != NULL &&
		     c->s->stopping);
	kvd_call_fail(c, keep ? code : KV_GRPC_UNKNOWN, msg);
}

/* ---- requests of clientv3/concurrency ------------------------------------ */

void kvd_icall_grant(struct kvd_icall *ic, int64_t ttl)
{
	Etcdserverpb__LeaseGrantRequest q =
		ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
	q.ttl = ttl;
	kvd_icall_run(ic, kvd_svc_lease_grant, kvd_pb_clone(&q.base));
}

void kvd_op_put(Etcdserverpb__RequestOp *op, Etcdserverpb__PutRequest *p,
		const uint8_t *key, size_t key_len, const uint8_t *val,
		size_t val_len, int64_t lease)
{
	etcdserverpb__request_op__init(op);
	etcdserverpb__put_request__init(p);
	p->key.data = (uint8_t *)key;
	p->key.len = key_len;
	p->value.data = (uint8_t *)val;
	p->value.len = val_len;
	p->lease = lease;
	op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
	op->request_put = p;
}

void kvd_op_range(Etcdserverpb__RequestOp *op, Etcdserverpb__RangeRequest *r,
		  const uint8_t *key, size_t key_len, const uint8_t *end,
		  size_t end_len, bool first_create)
{
	etcdserverpb__request_op__init(op);
	etcdserverpb__range_request__init(r);
	r->key.data = (uint8_t *)key;
	r->key.len = key_len;
	r->range_end.data = (uint8_t *)end;
	r->range_end.len = end_len;
	if (first_create) {
		r->limit = 1;
		r->sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND;
		r->sort_target =
			ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__CREATE;
	}
	op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
	op->request_range = r;
}

void kvd_op_delete(Etcdserverpb__RequestOp *op,
		   Etcdserverpb__DeleteRangeRequest *d, const uint8_t *key,
		   size_t key_len)
{
	etcdserverpb__request_op__init(op);
	etcdserverpb__delete_range_request__init(d);
	d->key.data = (uint8_t *)key;
	d->key.len = key_len;
	op->request_case =
		ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
	op->request_delete_range = d;
}

ProtobufCMessage *kvd_conc_txn(const uint8_t *key, size_t key_len,
			       int64_t create_rev,
			       Etcdserverpb__RequestOp **then, size_t nthen,
			       Etcdserverpb__RequestOp **els, size_t nels)
{
	Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT;
	Etcdserverpb__Compare *cmps[1] = { &cmp };
	Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
	cmp.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
	cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
	cmp.key.data = (uint8_t *)key;
	cmp.key.len = key_len;
	cmp.target_union_case =
		ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
	cmp.create_revision = create_rev;
	t.n_compare = 1;
	t.compare = cmps;
	t.n_success = nthen;
	t.success = then;
	t.n_failure = nels;
	t.failure = els;
	return kvd_pb_clone(&t.base);
}

/* The range response of a txn's i-th sub-response, or NULL. */
const Etcdserverpb__RangeResponse *
kvd_txn_range(const Etcdserverpb__TxnResponse *r, size_t i)
{
	if (r == NULL || i >= r->n_responses || r->responses[i] == NULL ||
	    r->responses[i]->response_case !=
		    ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE)
		return NULL;
	return r->responses[i]->response_range;
}

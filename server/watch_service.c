/* The watch registry (watch/watch.h) wired into kvd: the apply hooks feed
 * it every revision, the loop runs its catch-up steps and its progress
 * timer, and the transports carry its streams: the gRPC bidi method
 * /etcdserverpb.Watch/Watch and the JSON gateway's POST /v3/watch on
 * HTTP/1.1 (chunked) and on HTTP/2 (a non-gRPC h2 stream; gateway_h2.c
 * hands it over), one {"result":...} line per WatchResponse, as etcd
 * 3.4's grpc-gateway writes them.
 *
 * Re-entrancy: watch/ forbids calling back into the registry from
 * on_response, so what a response asks of the registry (drained bytes,
 * blocked state) is recorded on the stream and reported by wflush()
 * after the watch_* call that produced it returned. */
#include "server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stddef.h>

#include "common/buf.h"
#include "common/log.h"
#include "kvjson/json.h"
#include "mvccpb/kv.pb-c.h"
#include "storage/mvcc.h"
#include "watch/watch.h"

#define MOD "watch"
#define SYNC_BUDGET 1000

/* One encoded response waiting for the transport. */
struct wmsg {
	struct wmsg *next;
	size_t size; /* watch_response.size, for watch_stream_drained */
	size_t len;
	unsigned char data[];
};

enum wkind { W_GRPC, W_HTTP, W_H2 };

struct wctx {
	struct kvd_server *s;
	enum wkind kind;
	struct grpc_call *gc;     /* W_GRPC */
	struct http_request *req; /* W_HTTP */
	struct h2_stream *st;     /* W_H2 */
	struct watch_stream *ws;
	struct wmsg *qhead, *qtail;
	size_t drained;        /* written, not yet reported */
	bool blocked;          /* transport full */
	bool blocked_reported; /* what the registry was told */
	bool dirty;
	struct wctx *dnext;       /* dirty list */
	struct wctx *prev, *next; /* all streams */
};

/* ---- registry <-> store -------------------------------------------------- */

static const uint8_t all_keys[1] = { 0 };

static int history(void *data, const struct watch_history_req *hq,
		   struct watch_history_res *hr)
{
	struct kvd_server *s = data;
	if (s->apply == NULL)
		return KV_EINVAL;
	struct mvcc *m = kv_apply_mvcc(s->apply);
	struct mvcc_events_req q = { 0 };
	struct mvcc_events_res r = { 0 };
	mvcc_arena_reset(&s->watch_arena);
	q.key = hq->key;
	q.key_len = hq->key_len;
	q.range_end = hq->range_end;
	q.range_end_len = hq->range_end_len;
	q.start_revision = hq->start_revision;
	q.max_events = hq->max_events;
	q.prev_kv = hq->prev_kv;
	int rv = mvcc_events(m, NULL, &q, &s->watch_arena, &r);
	if (rv == KV_ECOMPACTED) {
		hr->compact_revision = mvcc_compact_revision(m);
		return rv;
	}
	if (rv != 0)
		return rv;
	hr->events = r.events;
	hr->n_events = r.n_events;
	hr->next_revision = r.next_revision;
	return 0;
}

/* Reports what responses asked of the registry (see the top comment). */
static void wflush(struct kvd_server *s)
{
	while (s->watch_dirty != NULL) {
		struct wctx *w = s->watch_dirty;
		s->watch_dirty = w->dnext;
		w->dnext = NULL;
		w->dirty = false;
		if (w->ws == NULL)
			continue;
		if (w->drained > 0) {
			size_t n = w->drained;
			w->drained = 0;
			watch_stream_drained(w->ws, n);
		}
		if (w->blocked != w->blocked_reported) {
			w->blocked_reported = w->blocked;
			watch_stream_set_blocked(w->ws, w->blocked);
		}
	}
}

static void mark_dirty(struct wctx *w)
{
	if (w->dirty)
		return;
	w->dirty = true;
	w->dnext = w->s->watch_dirty;
	w->s->watch_dirty = w;
}

static void on_widle(uv_idle_t *h)
{
	(void)h; /* keeps the loop polling without blocking: see loop step */
}

int kvd_watch_setup(struct kvd_server *s)
{
	struct watch_options o = { 0 };
	o.history = history;
	o.history_data = s;
	o.revision = mvcc_revision(kv_apply_mvcc(s->apply));
	o.max_response_bytes = (size_t)s->cfg->max_request_bytes + 512 * 1024;
	return watch_registry_new(&o, &s->watch);
}

void kvd_watch_applied(struct kvd_server *s, int64_t revision)
{
	if (s->watch == NULL || s->apply == NULL)
		return;
	struct mvcc *m = kv_apply_mvcc(s->apply);
	for (int64_t r = watch_revision(s->watch) + 1; r <= revision; r++) {
		struct mvcc_events_req q = { 0 };
		struct mvcc_events_res res = { 0 };
		mvcc_arena_reset(&s->watch_notify_arena);
		q.key = all_keys;
		q.key_len = 1;
		q.range_end = all_keys;
		q.range_end_len = 1;
		q.start_revision = r;
		q.max_events = 1;
		q.prev_kv = watch_wants_prev_kv(s->watch);
		int rv = mvcc_events(m, NULL, &q, &s->watch_notify_arena, &res);
		if (rv != 0) {
			/* the watchers catch up from history instead */
			KV_WARN(MOD, "cannot read the events of a revision",
				"rev=%lld err=%s", (long long)r, kv_errname(rv));
			rv = watch_restore(s->watch, revision);
			if (rv != 0)
				KV_ERROR(MOD, "watch restore failed", "err=%s",
					 kv_errname(rv));
			break;
		}
		size_t n = 0;
		while (n < res.n_events && res.events[n].kv.mod_revision == r)
			n++;
		rv = watch_notify(s->watch, r, res.events, n);
		if (rv != 0 && rv != KV_ENOMEM) {
			KV_ERROR(MOD, "watch notify failed", "rev=%lld err=%s",
				 (long long)r, kv_errname(rv));
			break;
		}
	}
	mvcc_arena_reset(&s->watch_notify_arena);
	wflush(s);
}

void kvd_watch_restored(struct kvd_server *s, struct mvcc *m)
{
	if (s->watch == NULL)
		return;
	int64_t rev = mvcc_revision(m);
	if (rev > watch_revision(s->watch)) {
		int rv = watch_restore(s->watch, rev);
		if (rv != 0)
			KV_ERROR(MOD, "watch restore failed", "err=%s",
				 kv_errname(rv));
	}
	wflush(s);
}

void kvd_watch_loop(struct kvd_server *s)
{
	bool more = false;
	if (s->watch != NULL && s->apply != NULL) {
		int rv = watch_sync_step(s->watch, SYNC_BUDGET, &more);
		if (rv != 0 && rv != KV_ENOMEM)
			KV_WARN(MOD, "watch catch-up failed", "err=%s",
				kv_errname(rv));
		wflush(s);
	}
	bool active = uv_is_active((uv_handle_t *)&s->watch_idle);
	if (more && !active)
		uv_idle_start(&s->watch_idle, on_widle);
	else if (!more && active)
		uv_idle_stop(&s->watch_idle);
}

void kvd_watch_tick(struct kvd_server *s)
{
	if (s->watch == NULL)
		return;
	watch_tick(s->watch, uv_now(&s->loop));
	wflush(s);
}

/* ---- encoding ------------------------------------------------------------ */

static void kv_to_pb(const struct mvcc_kv *kv, Mvccpb__KeyValue *p)
{
	mvccpb__key_value__init(p);
	p->key.data = (uint8_t *)kv->key;
	p->key.len = kv->key_len;
	p->value.data = (uint8_t *)kv->value;
	p->value.len = kv->value_len;
	p->create_revision = kv->create_revision;
	p->mod_revision = kv->mod_revision;
	p->version = kv->version;
	p->lease = kv->lease;
}

/* Builds the WatchResponse of r in one malloc'd block (*mem). */
static int build_response(struct kvd_server *s, const struct watch_response *r,
			  Etcdserverpb__WatchResponse *out,
			  Etcdserverpb__ResponseHeader *hdr, void **mem)
{
	struct kv_header_ids ids;
	kvd_header_ids(s, &ids);
	etcdserverpb__response_header__init(hdr);
	hdr->cluster_id = ids.cluster_id;
	hdr->member_id = ids.member_id;
	hdr->raft_term = ids.raft_term;
	hdr->revision = r->header_revision;
	etcdserverpb__watch_response__init(out);
	out->header = hdr;
	out->watch_id = r->watch_id;
	out->created = r->created;
	out->canceled = r->canceled;
	out->fragment = r->fragment;
	out->compact_revision = r->compact_revision;
	if (r->cancel_reason != NULL)
		out->cancel_reason = (char *)r->cancel_reason;
	*mem = NULL;
	if (r->n_events == 0)
		return 0;
	size_t n = r->n_events;
	size_t sz = n * (sizeof(Mvccpb__Event *) + sizeof(Mvccpb__Event) +
			 2 * sizeof(Mvccpb__KeyValue));
	char *p = malloc(sz);
	if (p == NULL)
		return KV_ENOMEM;
	Mvccpb__Event **evp = (Mvccpb__Event **)(void *)p;
	Mvccpb__Event *evs = (Mvccpb__Event *)(void *)(evp + n);
	Mvccpb__KeyValue *kvs = (Mvccpb__KeyValue *)(void *)(evs + n);
	for (size_t i = 0; i < n; i++) {
		const struct mvcc_event *e = r->events[i];
		mvccpb__event__init(&evs[i]);
		evs[i].type = e->type == MVCC_EVENT_DELETE
				      ? MVCCPB__EVENT__EVENT_TYPE__DELETE
				      : MVCCPB__EVENT__EVENT_TYPE__PUT;
		kv_to_pb(&e->kv, &kvs[2 * i]);
		evs[i].kv = &kvs[2 * i];
		if (r->prev_kv && e->prev_kv != NULL) {
			kv_to_pb(e->prev_kv, &kvs[2 * i + 1]);
			evs[i].prev_kv = &kvs[2 * i + 1];
		}
		evp[i] = &evs[i];
	}
	out->n_events = n;
	out->events = evp;
	*mem = p;
	return 0;
}

static struct wmsg *encode(struct wctx *w, const struct watch_response *r)
{
	Etcdserverpb__WatchResponse m;
	Etcdserverpb__ResponseHeader hdr;
	void *mem = NULL;
	struct wmsg *msg = NULL;
	if (build_response(w->s, r, &m, &hdr, &mem) != 0)
		return NULL;
	size_t n = 0;
	msg = kvd_stream_msg(&m.base, w->kind != W_GRPC,
			     offsetof(struct wmsg, data), &n);
	if (msg != NULL)
		msg->len = n;
	free(mem);
	if (msg != NULL) {
		msg->next = NULL;
		msg->size = r->size;
	}
	return msg;
}

/* 0, KV_EAGAIN (wait for writable) or another error. */
static int transport_send(struct wctx *w, const struct wmsg *m)
{
	if (w->kind == W_GRPC)
		return grpc_call_send(w->gc, m->data, m->len);
	if (w->kind == W_H2)
		return h2_stream_write(w->st, m->data, m->len);
	return http_stream_write(w->req, m->data, m->len);
}

/* Writes queued messages until the transport is full. */
static void pump(struct wctx *w)
{
	while (w->qhead != NULL) {
		struct wmsg *m = w->qhead;
		int rv = transport_send(w, m);
		if (rv == KV_EAGAIN) {
			w->blocked = true;
			mark_dirty(w);
			return;
		}
		if (rv != 0) /* the transport is going away: on_cancel/abort */
			KV_DEBUG(MOD, "watch response dropped", "err=%s",
				 kv_errname(rv));
		w->qhead = m->next;
		if (w->qhead == NULL)
			w->qtail = NULL;
		w->drained += m->size;
		free(m);
		mark_dirty(w);
	}
	if (w->blocked) {
		w->blocked = false;
		mark_dirty(w);
	}
}

static void on_response(void *data, const struct watch_response *r)
{
	struct wctx *w = data;
	struct wmsg *m = encode(w, r);
	if (m == NULL) {
		KV_ERROR(MOD, "cannot encode a watch response", NULL);
		/* counted as written so the queue accounting stays right */
		w->drained += r->size;
		mark_dirty(w);
		return;
	}
	if (w->qtail != NULL)
		w->qtail->next = m;
	else
		w->qhead = m;
	w->qtail = m;
	if (!w->blocked)
		pump(w);
}

static struct wctx *wctx_new(struct kvd_server *s, enum wkind kind)
{
	struct wctx *w = calloc(1, sizeof(*w));
	if (w == NULL)
		return NULL;
	w->s = s;
	w->kind = kind;
	struct watch_stream_options o = { 0 };
	o.on_response = on_response;
	o.data = w;
	o.now_ms = uv_now(&s->loop);
	if (s->watch == NULL || watch_stream_open(s->watch, &o, &w->ws) != 0) {
		free(w);
		return NULL;
	}
	w->next = s->watch_streams;
	if (w->next != NULL)
		w->next->prev = w;
	s->watch_streams = w;
	return w;
}

/* The transport is gone (or being finished): forget the stream. */
static void wctx_free(struct wctx *w)
{
	struct kvd_server *s = w->s;
	if (w->ws != NULL)
		watch_stream_close(w->ws);
	w->ws = NULL;
	if (w->dirty) {
		for (struct wctx **pp = &s->watch_dirty; *pp != NULL;
		     pp = &(*pp)->dnext) {
			if (*pp == w) {
				*pp = w->dnext;
				break;
			}
		}
	}
	if (w->prev != NULL)
		w->prev->next = w->next;
	else
		s->watch_streams = w->next;
	if (w->next != NULL)
		w->next->prev = w->prev;
	while (w->qhead != NULL) {
		struct wmsg *m = w->qhead;
		w->qhead = m->next;
		free(m);
	}
	free(w);
}

/* One WatchRequest (takes nothing; rq is only read). */
static void handle_request(struct wctx *w, const Etcdserverpb__WatchRequest *rq)
{
	switch (rq->request_union_case) {
	case ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST: {
		const Etcdserverpb__WatchCreateRequest *c = rq->create_request;
		struct watch_create_req q = { 0 };
		q.key = c->key.data;
		q.key_len = c->key.len;
		q.range_end = c->range_end.data;
		q.range_end_len = c->range_end.len;
		q.start_revision = c->start_revision;
		q.progress_notify = c->progress_notify;
		for (size_t i = 0; i < c->n_filters; i++) {
			if (c->filters[i] ==
			    ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NOPUT)
				q.filters |= WATCH_FILTER_NOPUT;
			else if (c->filters[i] ==
				 ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NODELETE)
				q.filters |= WATCH_FILTER_NODELETE;
		}
		q.prev_kv = c->prev_kv;
		q.watch_id = c->watch_id;
		q.fragment = c->fragment;
		int rv = watch_create(w->ws, &q, NULL);
		if (rv != 0)
			KV_WARN(MOD, "watch create failed", "err=%s",
				kv_errname(rv));
		break;
	}
	case ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CANCEL_REQUEST:
		(void)watch_cancel(w->ws, rq->cancel_request->watch_id);
		break;
	case ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_PROGRESS_REQUEST:
		watch_progress_request(w->ws);
		break;
	default:
		break; /* etcd ignores an empty request */
	}
	wflush(w->s);
}

/* ---- gRPC /etcdserverpb.Watch/Watch ------------------------------------ */

static void wg_start(struct grpc_call *gc, const unsigned char *msg,
		     size_t len, void *method_data)
{
	struct kvd_server *s = method_data;
	(void)msg;
	(void)len;
	if (!kvd_grpc_admit(s, gc))
		return;
	if (s->watch == NULL) {
		grpc_call_finish(gc, GRPC_UNAVAILABLE,
				 "etcdserver: server stopped");
		return;
	}
	struct wctx *w = wctx_new(s, W_GRPC);
	if (w == NULL) {
		grpc_call_finish(gc, GRPC_RESOURCE_EXHAUSTED,
				 "etcdserver: too many requests");
		return;
	}
	w->gc = gc;
	grpc_call_set_user(gc, w);
}

static void wg_message(struct grpc_call *gc, const unsigned char *msg,
		       size_t len)
{
	struct wctx *w = grpc_call_user(gc);
	if (w == NULL)
		return;
	Etcdserverpb__WatchRequest *rq =
		etcdserverpb__watch_request__unpack(NULL, len, msg);
	if (rq == NULL) {
		grpc_call_set_user(gc, NULL);
		wctx_free(w);
		grpc_call_finish(gc, GRPC_INTERNAL,
				 "grpc: error unmarshalling request: "
				 "proto: bad wire format");
		return;
	}
	handle_request(w, rq);
	etcdserverpb__watch_request__free_unpacked(rq, NULL);
}

/* etcd keeps sending after the client closed its side (recvLoop ends on
 * EOF without ending the stream): nothing to do. */
static void wg_half_close(struct grpc_call *gc)
{
	(void)gc;
}

static void wg_writable(struct grpc_call *gc)
{
	struct wctx *w = grpc_call_user(gc);
	if (w == NULL)
		return;
	pump(w);
	wflush(w->s);
}

static void wg_cancel(struct grpc_call *gc, int status)
{
	(void)status;
	struct wctx *w = grpc_call_user(gc);
	if (w == NULL)
		return;
	grpc_call_set_user(gc, NULL);
	wctx_free(w);
}

const struct grpc_handler kvd_watch_grpc_h = {
	.on_start = wg_start,
	.on_message = wg_message,
	.on_half_close = wg_half_close,
	.on_writable = wg_writable,
	.on_cancel = wg_cancel,
};

/* ---- POST /v3/watch on HTTP/1.1 ---------------------------------------- */

static void wh_abort(struct http_request *req)
{
	struct wctx *w = req->user;
	req->user = NULL;
	req->on_abort = NULL;
	req->on_writable = NULL;
	if (w != NULL)
		wctx_free(w);
}

static void wh_writable(struct http_request *req)
{
	struct wctx *w = req->user;
	if (w == NULL)
		return;
	pump(w);
	wflush(w->s);
}

static bool only_space(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != ' ' && p[i] != '\n' && p[i] != '\r' && p[i] != '\t')
			return false;
	return true;
}

#define MAX_BODY_REQUESTS 1024

/* Decodes the body (one or more JSON WatchRequest values) into rqs[*n],
 * freed by the caller with free_requests. 0, or KV_EPROTO with the
 * message in err (nothing left to free). */
static int parse_body(const unsigned char *body, size_t len,
		      ProtobufCMessage **rqs, size_t *n, char *err,
		      size_t errlen)
{
	size_t nrq = 0, off = 0;
	while (off < len && !only_space(body + off, len - off)) {
		size_t used = 0;
		ProtobufCMessage *m = NULL;
		int rv = kvjson_decode_ex(&etcdserverpb__watch_request__descriptor,
					  (const char *)body + off, len - off,
					  KVJSON_FIRST_VALUE | KVJSON_ALLOW_UNKNOWN,
					  NULL, &m, &used, err, errlen);
		if (rv == 0 && (used == 0 || nrq == MAX_BODY_REQUESTS)) {
			protobuf_c_message_free_unpacked(m, NULL);
			rv = KV_EPROTO;
			snprintf(err, errlen, "too many watch requests");
		}
		if (rv != 0) {
			for (size_t i = 0; i < nrq; i++)
				protobuf_c_message_free_unpacked(rqs[i], NULL);
			return KV_EPROTO;
		}
		rqs[nrq++] = m;
		off += used;
	}
	*n = nrq;
	return 0;
}

static void free_requests(ProtobufCMessage **rqs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		protobuf_c_message_free_unpacked(rqs[i], NULL);
}

/* Runs the body's requests on a stream that is ready to send. */
static void run_requests(struct wctx *w, ProtobufCMessage **rqs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		handle_request(w, (Etcdserverpb__WatchRequest *)rqs[i]);
		protobuf_c_message_free_unpacked(rqs[i], NULL);
	}
}

void kvd_watch_http(struct kvd_server *s, struct http_request *req)
{
	if (!kvd_serving(s) || s->watch == NULL) {
		kvd_gw_h1_error(req, 503, KV_GRPC_UNAVAILABLE,
			 "etcdserver: server stopped");
		return;
	}
	ProtobufCMessage *rqs[MAX_BODY_REQUESTS];
	size_t nrq = 0;
	char err[256];
	if (parse_body(req->body, req->body_len, rqs, &nrq, err,
		       sizeof(err)) != 0) {
		kvd_gw_h1_error(req, 400, KV_GRPC_INVALID_ARGUMENT, err);
		return;
	}
	struct wctx *w = wctx_new(s, W_HTTP);
	if (w == NULL ||
	    http_stream_begin(req, 200, kvd_gw_json_headers,
			      kvd_gw_n_json_headers) != 0) {
		free_requests(rqs, nrq);
		if (w != NULL) {
			wctx_free(w);
			http_respond(req, 500, NULL, 0, NULL, 0);
		} else {
			kvd_gw_h1_error(req, 429, KV_GRPC_RESOURCE_EXHAUSTED,
				 "etcdserver: too many requests");
		}
		return;
	}
	w->req = req;
	req->user = w;
	req->on_abort = wh_abort;
	req->on_writable = wh_writable;
	run_requests(w, rqs, nrq);
}

/* ---- POST /v3/watch on HTTP/2 ------------------------------------------ */

static void w2_writable(struct h2_stream *st)
{
	struct wctx *w = h2_stream_user(st);
	if (w == NULL)
		return;
	pump(w);
	wflush(w->s);
}

static void w2_close(struct h2_stream *st, uint32_t code)
{
	(void)code;
	struct wctx *w = h2_stream_user(st);
	if (w != NULL)
		wctx_free(w);
}

static const struct h2_stream_handler w2_handler = {
	.on_data = kvd_gw_h2_discard,
	.on_writable = w2_writable,
	.on_close = w2_close,
};

void kvd_watch_h2(struct kvd_server *s, struct h2_stream *st,
		  const unsigned char *body, size_t len)
{
	/* from here on the stream is ours: what gateway_h2.c installed is
	 * gone once this returns */
	h2_stream_set_handler(st, &w2_handler, NULL);
	if (!kvd_serving(s) || s->watch == NULL) {
		kvd_gw_h2_error(st, 503, KV_GRPC_UNAVAILABLE,
			 "etcdserver: server stopped");
		return;
	}
	ProtobufCMessage *rqs[MAX_BODY_REQUESTS];
	size_t nrq = 0;
	char err[256];
	if (parse_body(body, len, rqs, &nrq, err, sizeof(err)) != 0) {
		kvd_gw_h2_error(st, 400, KV_GRPC_INVALID_ARGUMENT, err);
		return;
	}
	struct wctx *w = wctx_new(s, W_H2);
	if (w == NULL) {
		free_requests(rqs, nrq);
		kvd_gw_h2_error(st, 429, KV_GRPC_RESOURCE_EXHAUSTED,
			 "etcdserver: too many requests");
		return;
	}
	if (h2_stream_respond(st, 200, kvd_gw_h2_json_headers,
			      kvd_gw_n_h2_json_headers, false) != 0) {
		free_requests(rqs, nrq);
		wctx_free(w);
		h2_stream_reset(st, H2_INTERNAL_ERROR);
		return;
	}
	w->st = st;
	h2_stream_set_handler(st, &w2_handler, w);
	run_requests(w, rqs, nrq);
}

/* ---- shutdown ------------------------------------------------------------ */

void kvd_watch_stop(struct kvd_server *s)
{
	while (s->watch_streams != NULL) {
		struct wctx *w = s->watch_streams;
		if (w->kind == W_GRPC) {
			struct grpc_call *gc = w->gc;
			grpc_call_set_user(gc, NULL);
			wctx_free(w);
			grpc_call_finish(gc, GRPC_UNAVAILABLE,
					 "etcdserver: server stopped");
		} else if (w->kind == W_H2) {
			struct h2_stream *st = w->st;
			h2_stream_set_handler(st, &w2_handler, NULL);
			wctx_free(w);
			/* what is queued goes out first, then END_STREAM */
			if (h2_stream_end(st, NULL, 0) != 0)
				h2_stream_reset(st, H2_INTERNAL_ERROR);
		} else {
			struct http_request *req = w->req;
			req->user = NULL;
			req->on_abort = NULL;
			req->on_writable = NULL;
			wctx_free(w);
			http_stream_end(req);
		}
	}
}

void kvd_watch_free(struct kvd_server *s)
{
	/* every connection is closed by now: their on_cancel / on_abort
	 * freed the streams; anything left is only memory */
	while (s->watch_streams != NULL)
		wctx_free(s->watch_streams);
	watch_registry_free(s->watch);
	s->watch = NULL;
	mvcc_arena_free(&s->watch_arena);
	mvcc_arena_free(&s->watch_notify_arena);
}

/* watch.c — the watcher registry: range index, synced fan-out, catch-up
 * from history, back-pressure, progress, fragmentation. See watch.h. */
#include "watch/watch.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* ---- types ------------------------------------------------------------- */

enum gkind { G_SINGLE = 0, G_RANGE = 1, G_FROM = 2 /* every key >= key */ };

/* Watchers sharing one (kind, key, range_end) share a group: the key is
 * stored once and the index holds groups, not watchers. A group lives as
 * long as any watcher references it; its list holds only synced ones. */
struct group {
	struct group *hnext; /* hash chain */
	uint64_t hash;
	enum gkind kind;
	size_t refs;
	/* Range groups (G_RANGE, G_FROM) form a treap ordered by (key,
	 * address), each node keeping the group of its subtree with the
	 * greatest end: a stabbing query visits O(log n + matches) nodes. */
	struct group *tl, *tr;
	const struct group *maxend;
	uint32_t prio;
	/* its watchers, each in one of the two lists (g_prev/g_next) */
	struct watcher *synced;
	struct watcher *unsynced;
	uint8_t *key;
	size_t key_len;
	uint8_t *end;
	size_t end_len;
};

struct watcher {
	struct watch_stream *s;
	struct group *g;
	int64_t id;
	/* First revision not yet received (see watch.h). For synced
	 * watchers a lower bound used as the start filter. */
	int64_t next_rev;
	struct watcher *g_prev, *g_next; /* group's (un)synced list */
	struct watcher *u_prev, *u_next; /* registry's unsynced list */
	struct watcher *s_prev, *s_next; /* stream's list */
	struct watcher *id_next;         /* stream's id hash chain */
	/* notify scratch */
	struct watcher *touch_next;
	uint64_t mark;
	uint64_t elig; /* == reg->step: takes part in this catch-up batch */
	size_t cnt, off;
	unsigned filters;
	bool synced;
	bool prev_kv;
	bool fragment;
	bool progress_notify;
	bool had_events; /* since the last progress tick */
};

struct watch_stream {
	struct watch_registry *reg;
	struct watch_stream *prev, *next;
	watch_response_fn on_response;
	void *data;
	size_t max_queue;
	size_t queued;
	bool blocked;
	bool progress_pending;
	int64_t next_id;
	size_t n_watchers;
	size_t n_unsynced;
	struct watcher *watchers; /* s_prev/s_next */
	struct watcher **ids;     /* id hash buckets */
	size_t n_ids;             /* bucket count (power of two) */
	uint64_t next_tick_ms;    /* 0 until the first watch_tick */
};

struct pair {
	struct watcher *w;
	size_t ev;
};

struct watch_registry {
	watch_history_fn history;
	void *history_data;
	int64_t rev;
	uint64_t interval_ms;
	size_t max_resp;
	size_t batch;
	struct watch_stream *streams;
	size_t n_watchers;
	size_t n_unsynced;
	size_t n_prev_kv;
	struct watcher *unsynced_head, *unsynced_tail;
	/* group hash */
	struct group **gtab;
	size_t n_gtab, n_groups;
	/* range groups: the interval treap (see struct group) */
	struct group *rtree;
	size_t n_ranges;
	uint64_t prng;
	/* notify scratch */
	uint64_t mark;
	uint64_t step; /* catch-up batch counter */
	struct pair *pairs;
	size_t cap_pairs;
	const struct mvcc_event **ptrs;
	size_t cap_ptrs;
	/* encoded sizes of the events being notified, [2*i + prev_kv], so a
	 * fan-out to many watchers computes them once */
	const struct mvcc_event *cur_events;
	size_t cur_n;
	size_t *evsz;
	size_t cap_evsz;
	/* test hook: every fail_every-th allocation point fails */
	unsigned fail_every, fail_count;
};

#define DEFAULT_INTERVAL_MS (10u * 60u * 1000u)
/* etcd: --max-request-bytes (1.5 MiB) + grpcOverheadBytes (512 KiB) */
#define DEFAULT_MAX_RESP ((size_t)2048 * 1024)
#define DEFAULT_BATCH 1000
#define DEFAULT_MAX_QUEUE ((size_t)4 << 20)

/* ---- small helpers -------------------------------------------------------- */

/* An allocation point: true when the test hook says it fails. */
static bool fail_alloc(struct watch_registry *reg)
{
	return reg->fail_every && ++reg->fail_count % reg->fail_every == 0;
}

static uint64_t hash_bytes(uint64_t h, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 1099511628211ull;
	}
	return h;
}

static uint64_t group_hash(enum gkind kind, const uint8_t *key, size_t kl,
			   const uint8_t *end, size_t el)
{
	uint64_t h = 14695981039346656037ull ^ (uint64_t)kind;
	h = hash_bytes(h, key, kl);
	h ^= 0xff;
	h *= 1099511628211ull;
	return hash_bytes(h, end, el);
}

static int cmp_bytes(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
	size_t n = al < bl ? al : bl;
	int c = n ? memcmp(a, b, n) : 0;
	if (c)
		return c;
	return al < bl ? -1 : al > bl;
}

static bool group_matches(const struct group *g, const uint8_t *k, size_t kl)
{
	if (cmp_bytes(k, kl, g->key, g->key_len) < 0)
		return false;
	if (g->kind == G_FROM)
		return true;
	return cmp_bytes(k, kl, g->end, g->end_len) < 0;
}

static bool stream_full(const struct watch_stream *s)
{
	return s->blocked || s->queued >= s->max_queue;
}

static size_t varint_len(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static size_t field_bytes(size_t len)
{
	return 1 + varint_len(len) + len;
}

static size_t field_int(int64_t v)
{
	return v ? 1 + varint_len((uint64_t)v) : 0;
}

static size_t kv_size(const struct mvcc_kv *kv)
{
	size_t n = 0;
	if (kv->key_len)
		n += field_bytes(kv->key_len);
	n += field_int(kv->create_revision) + field_int(kv->mod_revision) +
	     field_int(kv->version) + field_int(kv->lease);
	if (kv->value_len)
		n += field_bytes(kv->value_len);
	return n;
}

size_t watch_event_size(const struct mvcc_event *ev, bool prev_kv)
{
	size_t n = ev->type ? 2 : 0;
	n += field_bytes(kv_size(&ev->kv));
	if (prev_kv && ev->prev_kv)
		n += field_bytes(kv_size(ev->prev_kv));
	return n;
}

/* Everything but the events: header (cluster/member id, revision, term),
 * watch_id, flags, compact revision, reason. */
static size_t base_size(const struct watch_response *r)
{
	size_t h = 11 + 11 + field_int(r->header_revision) + 6;
	size_t n = field_bytes(h) + field_int(r->watch_id);
	n += (r->created ? 2 : 0) + (r->canceled ? 2 : 0) +
	     (r->fragment ? 2 : 0) + field_int(r->compact_revision);
	if (r->cancel_reason)
		n += field_bytes(strlen(r->cancel_reason));
	return n;
}

/* Bytes an event adds to a WatchResponse (field 11). */
static size_t ev_bytes(const struct watch_registry *reg,
		       const struct mvcc_event *ev, bool prev_kv)
{
	uintptr_t p = (uintptr_t)ev, b = (uintptr_t)reg->cur_events;

	if (reg->cur_n && p >= b && p < b + reg->cur_n * sizeof(*ev))
		return reg->evsz[(p - b) / sizeof(*ev) * 2 + prev_kv];
	return field_bytes(watch_event_size(ev, prev_kv));
}

static void emit(struct watch_stream *s, struct watch_response *r)
{
	size_t n = base_size(r);
	for (size_t i = 0; i < r->n_events; i++)
		n += ev_bytes(s->reg, r->events[i], r->prev_kv);
	r->size = n;
	s->queued += n;
	s->on_response(s->data, r);
}

static void emit_simple(struct watch_stream *s, int64_t id, int64_t hdr_rev)
{
	struct watch_response r = { 0 };
	r.watch_id = id;
	r.header_revision = hdr_rev;
	emit(s, &r);
}

/* Sends events of watcher w, fragmenting as etcd's sendFragments does:
 * only when w asked for it, the response is at least the limit and it
 * has two or more events; each fragment holds at least one event and
 * stays under the limit when it holds more than one. */
static void send_events(struct watcher *w, int64_t hdr_rev,
			const struct mvcc_event **evs, size_t n)
{
	struct watch_registry *reg = w->s->reg;
	struct watch_response r = { 0 };
	size_t total, base, idx = 0;

	r.watch_id = w->id;
	r.header_revision = hdr_rev;
	r.prev_kv = w->prev_kv;
	r.events = evs;
	r.n_events = n;
	w->had_events = true;
	if (!w->fragment || n < 2) {
		emit(w->s, &r);
		return;
	}
	total = base_size(&r);
	for (size_t i = 0; i < n; i++)
		total += ev_bytes(reg, evs[i], w->prev_kv);
	if (total < reg->max_resp) {
		emit(w->s, &r);
		return;
	}
	r.fragment = true;
	base = base_size(&r);
	while (idx < n) {
		size_t cur = base, k = 0, start = idx;
		while (idx < n) {
			size_t es = ev_bytes(reg, evs[idx], w->prev_kv);
			if (k >= 1 && cur + es >= reg->max_resp)
				break;
			cur += es;
			k++;
			idx++;
		}
		r.events = evs + start;
		r.n_events = k;
		r.fragment = idx < n;
		emit(w->s, &r);
	}
}

/* ---- groups --------------------------------------------------------------- */

static int gtab_grow(struct watch_registry *reg)
{
	size_t nn = reg->n_gtab ? reg->n_gtab * 2 : 64;
	struct group **t = fail_alloc(reg) ? NULL : calloc(nn, sizeof(*t));
	if (!t)
		return KV_ENOMEM;
	for (size_t i = 0; i < reg->n_gtab; i++) {
		struct group *g = reg->gtab[i], *nx;
		for (; g; g = nx) {
			nx = g->hnext;
			g->hnext = t[g->hash & (nn - 1)];
			t[g->hash & (nn - 1)] = g;
		}
	}
	free(reg->gtab);
	reg->gtab = t;
	reg->n_gtab = nn;
	return 0;
}

/* ---- interval treap ------------------------------------------------------- */

/* Orders ends; G_FROM's end is +infinity. */
static int end_cmp(const struct group *a, const struct group *b)
{
	if (a->kind == G_FROM)
		return b->kind == G_FROM ? 0 : 1;
	if (b->kind == G_FROM)
		return -1;
	return cmp_bytes(a->end, a->end_len, b->end, b->end_len);
}

static bool node_less(const struct group *a, const struct group *b)
{
	int c = cmp_bytes(a->key, a->key_len, b->key, b->key_len);
	if (c)
		return c < 0;
	return (uintptr_t)a < (uintptr_t)b;
}

static void tupdate(struct group *t)
{
	t->maxend = t;
	if (t->tl && end_cmp(t->tl->maxend, t->maxend) > 0)
		t->maxend = t->tl->maxend;
	if (t->tr && end_cmp(t->tr->maxend, t->maxend) > 0)
		t->maxend = t->tr->maxend;
}

static void tsplit(struct group *t, const struct group *k, struct group **l,
		   struct group **r)
{
	if (!t) {
		*l = *r = NULL;
		return;
	}
	if (node_less(t, k)) {
		tsplit(t->tr, k, &t->tr, r);
		*l = t;
	} else {
		tsplit(t->tl, k, l, &t->tl);
		*r = t;
	}
	tupdate(t);
}

static struct group *tmerge(struct group *a, struct group *b)
{
	if (!a)
		return b;
	if (!b)
		return a;
	if (a->prio > b->prio) {
		a->tr = tmerge(a->tr, b);
		tupdate(a);
		return a;
	}
	b->tl = tmerge(a, b->tl);
	tupdate(b);
	return b;
}

static struct group *tinsert(struct group *t, struct group *n)
{
	if (!t)
		return n;
	if (n->prio > t->prio) {
		tsplit(t, n, &n->tl, &n->tr);
		tupdate(n);
		return n;
	}
	if (node_less(n, t))
		t->tl = tinsert(t->tl, n);
	else
		t->tr = tinsert(t->tr, n);
	tupdate(t);
	return t;
}

static struct group *tremove(struct group *t, struct group *n)
{
	assert(t);
	if (t == n)
		return tmerge(t->tl, t->tr);
	if (node_less(n, t))
		t->tl = tremove(t->tl, n);
	else
		t->tr = tremove(t->tr, n);
	tupdate(t);
	return t;
}

static struct group *group_find(const struct watch_registry *reg,
				enum gkind kind, const uint8_t *key, size_t kl,
				const uint8_t *end, size_t el, uint64_t h)
{
	if (!reg->n_gtab)
		return NULL;
	for (struct group *g = reg->gtab[h & (reg->n_gtab - 1)]; g;
	     g = g->hnext) {
		if (g->hash == h && g->kind == kind && g->key_len == kl &&
		    g->end_len == el && (!kl || !memcmp(g->key, key, kl)) &&
		    (!el || !memcmp(g->end, end, el)))
			return g;
	}
	return NULL;
}

static int group_get(struct watch_registry *reg, enum gkind kind,
		     const uint8_t *key, size_t kl, const uint8_t *end,
		     size_t el, struct group **out)
{
	uint64_t h = group_hash(kind, key, kl, end, el);
	struct group *g = group_find(reg, kind, key, kl, end, el, h);
	int rc;

	if (g) {
		g->refs++;
		*out = g;
		return 0;
	}
	if (reg->n_groups >= reg->n_gtab && (rc = gtab_grow(reg)) < 0)
		return rc;
	/* key and end live right after the struct: one allocation. */
	g = fail_alloc(reg) ? NULL : calloc(1, sizeof(*g) + kl + el);
	if (!g)
		return KV_ENOMEM;
	g->key = (uint8_t *)(g + 1);
	g->end = g->key + kl;
	if (kl)
		memcpy(g->key, key, kl);
	if (el)
		memcpy(g->end, end, el);
	g->key_len = kl;
	g->end_len = el;
	g->kind = kind;
	g->hash = h;
	g->refs = 1;
	g->hnext = reg->gtab[h & (reg->n_gtab - 1)];
	reg->gtab[h & (reg->n_gtab - 1)] = g;
	reg->n_groups++;
	if (kind != G_SINGLE) {
		reg->prng ^= reg->prng << 13;
		reg->prng ^= reg->prng >> 7;
		reg->prng ^= reg->prng << 17;
		g->prio = (uint32_t)(reg->prng >> 32);
		g->maxend = g;
		reg->rtree = tinsert(reg->rtree, g);
		reg->n_ranges++;
	}
	*out = g;
	return 0;
}

static void group_put(struct watch_registry *reg, struct group *g)
{
	struct group **pp;

	assert(g->refs > 0);
	if (--g->refs)
		return;
	assert(!g->synced && !g->unsynced);
	pp = &reg->gtab[g->hash & (reg->n_gtab - 1)];
	while (*pp != g)
		pp = &(*pp)->hnext;
	*pp = g->hnext;
	reg->n_groups--;
	if (g->kind != G_SINGLE) {
		reg->rtree = tremove(reg->rtree, g);
		reg->n_ranges--;
	}
	free(g);
}

/* ---- synced / unsynced sets ------------------------------------------------ */

static void glist_add(struct watcher **head, struct watcher *w)
{
	w->g_prev = NULL;
	w->g_next = *head;
	if (*head)
		(*head)->g_prev = w;
	*head = w;
}

static void glist_del(struct watcher **head, struct watcher *w)
{
	if (w->g_prev)
		w->g_prev->g_next = w->g_next;
	else
		*head = w->g_next;
	if (w->g_next)
		w->g_next->g_prev = w->g_prev;
	w->g_prev = w->g_next = NULL;
}

static void join_synced(struct watcher *w)
{
	assert(!w->synced);
	w->synced = true;
	glist_add(&w->g->synced, w);
}

static void leave_synced(struct watcher *w)
{
	assert(w->synced);
	glist_del(&w->g->synced, w);
	w->synced = false;
}

/* The registry's unsynced list (iteration order) and the group's. */
static void unsynced_append(struct watch_registry *reg, struct watcher *w)
{
	w->u_next = NULL;
	w->u_prev = reg->unsynced_tail;
	if (reg->unsynced_tail)
		reg->unsynced_tail->u_next = w;
	else
		reg->unsynced_head = w;
	reg->unsynced_tail = w;
	glist_add(&w->g->unsynced, w);
}

static void unsynced_unlink(struct watch_registry *reg, struct watcher *w)
{
	if (w->u_prev)
		w->u_prev->u_next = w->u_next;
	else
		reg->unsynced_head = w->u_next;
	if (w->u_next)
		w->u_next->u_prev = w->u_prev;
	else
		reg->unsynced_tail = w->u_prev;
	w->u_prev = w->u_next = NULL;
	glist_del(&w->g->unsynced, w);
}

static void maybe_send_progress(struct watch_stream *s)
{
	if (s->progress_pending && s->n_unsynced == 0) {
		s->progress_pending = false;
		emit_simple(s, -1, s->reg->rev);
	}
}

/* Synced watcher falls back to catch-up from revision rev. */
static void make_unsynced(struct watcher *w, int64_t rev)
{
	struct watch_registry *reg = w->s->reg;
	leave_synced(w);
	if (w->next_rev < rev)
		w->next_rev = rev;
	unsynced_append(reg, w);
	reg->n_unsynced++;
	w->s->n_unsynced++;
}

static void make_synced(struct watcher *w)
{
	struct watch_registry *reg = w->s->reg;
	unsynced_unlink(reg, w);
	reg->n_unsynced--;
	w->s->n_unsynced--;
	join_synced(w);
	maybe_send_progress(w->s);
}

/* ---- stream id table ------------------------------------------------------- */

static size_t id_slot(const struct watch_stream *s, int64_t id)
{
	uint64_t h = (uint64_t)id * 0x9e3779b97f4a7c15ull;
	return (size_t)(h >> 32) & (s->n_ids - 1);
}

static struct watcher *id_find(const struct watch_stream *s, int64_t id)
{
	if (!s->n_ids)
		return NULL;
	for (struct watcher *w = s->ids[id_slot(s, id)]; w; w = w->id_next)
		if (w->id == id)
			return w;
	return NULL;
}

static int id_reserve(struct watch_stream *s)
{
	size_t nn;
	struct watcher **t;

	if (s->n_watchers < s->n_ids)
		return 0;
	nn = s->n_ids ? s->n_ids * 2 : 8;
	t = fail_alloc(s->reg) ? NULL : calloc(nn, sizeof(*t));
	if (!t)
		return KV_ENOMEM;
	for (size_t i = 0; i < s->n_ids; i++) {
		struct watcher *w = s->ids[i], *nx;
		for (; w; w = nx) {
			size_t k = (size_t)(((uint64_t)w->id *
					     0x9e3779b97f4a7c15ull) >> 32) &
				   (nn - 1);
			nx = w->id_next;
			w->id_next = t[k];
			t[k] = w;
		}
	}
	free(s->ids);
	s->ids = t;
	s->n_ids = nn;
	return 0;
}

static void id_remove(struct watch_stream *s, struct watcher *w)
{
	struct watcher **pp = &s->ids[id_slot(s, w->id)];
	while (*pp != w)
		pp = &(*pp)->id_next;
	*pp = w->id_next;
}

/* ---- watcher lifetime ------------------------------------------------------ */

static void watcher_free(struct watcher *w)
{
	struct watch_stream *s = w->s;
	struct watch_registry *reg = s->reg;

	if (w->synced) {
		leave_synced(w);
	} else {
		unsynced_unlink(reg, w);
		reg->n_unsynced--;
		s->n_unsynced--;
	}
	id_remove(s, w);
	if (w->s_prev)
		w->s_prev->s_next = w->s_next;
	else
		s->watchers = w->s_next;
	if (w->s_next)
		w->s_next->s_prev = w->s_prev;
	s->n_watchers--;
	reg->n_watchers--;
	if (w->prev_kv)
		reg->n_prev_kv--;
	group_put(reg, w->g);
	free(w);
}

/* ---- registry -------------------------------------------------------------- */

int watch_registry_new(const struct watch_options *opts,
		       struct watch_registry **out)
{
	struct watch_registry *reg;

	if (!opts || !opts->history || !out)
		return KV_EINVAL;
	reg = calloc(1, sizeof(*reg));
	if (!reg)
		return KV_ENOMEM;
	reg->history = opts->history;
	reg->history_data = opts->history_data;
	reg->rev = opts->revision;
	reg->interval_ms = opts->progress_interval_ms ? opts->progress_interval_ms
						      : DEFAULT_INTERVAL_MS;
	reg->max_resp = opts->max_response_bytes ? opts->max_response_bytes
						 : DEFAULT_MAX_RESP;
	reg->batch = opts->history_batch ? opts->history_batch : DEFAULT_BATCH;
	reg->prng = 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)reg;
	*out = reg;
	return 0;
}

void watch_registry_free(struct watch_registry *reg)
{
	if (!reg)
		return;
	while (reg->streams)
		watch_stream_close(reg->streams);
	assert(reg->n_groups == 0);
	free(reg->gtab);
	free(reg->pairs);
	free(reg->ptrs);
	free(reg->evsz);
	free(reg);
}

int64_t watch_revision(const struct watch_registry *reg)
{
	return reg->rev;
}

bool watch_wants_prev_kv(const struct watch_registry *reg)
{
	return reg->n_prev_kv > 0;
}

size_t watch_count(const struct watch_registry *reg)
{
	return reg->n_watchers;
}

size_t watch_unsynced_count(const struct watch_registry *reg)
{
	return reg->n_unsynced;
}

/* ---- notify ---------------------------------------------------------------- */

static bool filtered(const struct watcher *w, const struct mvcc_event *ev)
{
	if (ev->type == MVCC_EVENT_PUT)
		return w->filters & WATCH_FILTER_NOPUT;
	return w->filters & WATCH_FILTER_NODELETE;
}

static int scratch_ptrs(struct watch_registry *reg, size_t n)
{
	const struct mvcc_event **p;
	size_t nc;

	if (fail_alloc(reg)) /* every use is a point, to reach notify */
		return KV_ENOMEM;
	if (n <= reg->cap_ptrs)
		return 0;
	nc = reg->cap_ptrs ? reg->cap_ptrs : 64;
	while (nc < n)
		nc *= 2;
	p = realloc(reg->ptrs, nc * sizeof(*p));
	if (!p)
		return KV_ENOMEM;
	reg->ptrs = p;
	reg->cap_ptrs = nc;
	return 0;
}

/* Collects (watcher, event) pairs from one group: its synced watchers
 * (notify) or its unsynced watchers taking part in this catch-up batch. */
static int collect(struct watch_registry *reg, struct group *g, bool catchup,
		   int64_t rev, const struct mvcc_event *ev, size_t evi,
		   size_t *np, struct watcher **touched, struct watcher **tail)
{
	struct watcher *w = catchup ? g->unsynced : g->synced;

	for (; w; w = w->g_next) {
		if (filtered(w, ev) || rev < w->next_rev ||
		    (catchup && w->elig != reg->step))
			continue;
		if (*np == reg->cap_pairs) {
			size_t nc = reg->cap_pairs ? reg->cap_pairs * 2 : 256;
			struct pair *p = fail_alloc(reg) ? NULL :
				realloc(reg->pairs, nc * sizeof(*p));
			if (!p)
				return KV_ENOMEM;
			reg->pairs = p;
			reg->cap_pairs = nc;
		}
		reg->pairs[(*np)++] = (struct pair){ w, evi };
		if (w->mark != reg->mark) {
			w->mark = reg->mark;
			w->cnt = 0;
			w->touch_next = NULL;
			if (*tail)
				(*tail)->touch_next = w;
			else
				*touched = w;
			*tail = w;
		}
		w->cnt++;
	}
	return 0;
}

/* Stabbing query: every range group containing key k. */
static int rquery(struct watch_registry *reg, struct group *t, bool catchup,
		  const uint8_t *k, size_t kl, int64_t rev,
		  const struct mvcc_event *ev, size_t evi, size_t *np,
		  struct watcher **touched, struct watcher **tail)
{
	int rc;

	while (t) {
		const struct group *m = t->maxend;
		/* every end in this subtree <= k: nothing contains k */
		if (m->kind != G_FROM &&
		    cmp_bytes(m->end, m->end_len, k, kl) <= 0)
			return 0;
		if ((rc = rquery(reg, t->tl, catchup, k, kl, rev, ev, evi, np,
				 touched, tail)) < 0)
			return rc;
		/* t and its right subtree start after k */
		if (cmp_bytes(t->key, t->key_len, k, kl) > 0)
			return 0;
		if ((catchup ? t->unsynced : t->synced) &&
		    group_matches(t, k, kl) &&
		    (rc = collect(reg, t, catchup, rev, ev, evi, np, touched,
				  tail)) < 0)
			return rc;
		t = t->tr;
	}
	return 0;
}

/* Out of memory in the middle of a fan-out: every synced watcher that
 * could match falls back to history at rev, so nothing is lost. */
static void unsync_all(struct watch_registry *reg, int64_t rev)
{
	for (size_t i = 0; i < reg->n_gtab; i++) {
		for (struct group *g = reg->gtab[i]; g; g = g->hnext) {
			struct watcher *w = g->synced, *nx;
			for (; w; w = nx) {
				nx = w->g_next;
				/* a future start stays synced: rev < it */
				if (w->next_rev <= rev)
					make_unsynced(w, rev);
			}
		}
	}
}

/* Pairs for event i of a notify or catch-up batch: the single-key group
 * by hash, range groups by the interval treap. */
static int match_event(struct watch_registry *reg, bool catchup,
		       const struct mvcc_event *ev, size_t i, size_t *np,
		       struct watcher **touched, struct watcher **tail)
{
	const uint8_t *k = ev->kv.key;
	size_t kl = ev->kv.key_len;
	int64_t rev = ev->kv.mod_revision;
	uint64_t h = group_hash(G_SINGLE, k, kl, NULL, 0);
	struct group *g = group_find(reg, G_SINGLE, k, kl, NULL, 0, h);
	int rc;

	if (g && (catchup ? g->unsynced : g->synced) &&
	    (rc = collect(reg, g, catchup, rev, ev, i, np, touched, tail)) < 0)
		return rc;
	return rquery(reg, reg->rtree, catchup, k, kl, rev, ev, i, np, touched,
		      tail);
}

/* Groups the np pairs by watcher into reg->ptrs (each touched watcher's
 * events at ptrs[w->off .. w->off + w->cnt), in event order) and caches
 * the events' encoded sizes. Undo with fanout_end(). */
static int fanout_begin(struct watch_registry *reg,
			const struct mvcc_event *events, size_t n, size_t np,
			struct watcher *touched)
{
	struct watcher *w;
	size_t off = 0;
	int rc;

	if ((rc = scratch_ptrs(reg, np)) < 0)
		return rc;
	if (np && 2 * n > reg->cap_evsz) {
		/* best effort: without it sizes are computed per watcher */
		size_t *z = realloc(reg->evsz, 2 * n * sizeof(*z));
		if (z) {
			reg->evsz = z;
			reg->cap_evsz = 2 * n;
		}
	}
	for (w = touched; w; w = w->touch_next) {
		w->off = off;
		off += w->cnt;
		w->cnt = 0;
	}
	for (size_t i = 0; i < np; i++) {
		w = reg->pairs[i].w;
		reg->ptrs[w->off + w->cnt++] = &events[reg->pairs[i].ev];
	}
	if (touched && n <= reg->cap_evsz / 2) {
		for (size_t i = 0; i < n; i++) {
			reg->evsz[2 * i] =
				field_bytes(watch_event_size(&events[i], false));
			reg->evsz[2 * i + 1] =
				field_bytes(watch_event_size(&events[i], true));
		}
		reg->cur_events = events;
		reg->cur_n = n;
	}
	return 0;
}

static void fanout_end(struct watch_registry *reg)
{
	reg->cur_events = NULL;
	reg->cur_n = 0;
}

int watch_notify(struct watch_registry *reg, int64_t rev,
		 const struct mvcc_event *events, size_t n)
{
	struct watcher *touched = NULL, *tail = NULL, *w, *nx;
	size_t np = 0;
	int rc = 0;

	if (rev <= reg->rev)
		return KV_EINVAL;
	reg->rev = rev;
	reg->mark++;
	for (size_t i = 0; i < n && rc == 0; i++) {
		assert(events[i].kv.mod_revision == rev);
		rc = match_event(reg, false, &events[i], i, &np, &touched,
				 &tail);
	}
	if (rc == 0)
		rc = fanout_begin(reg, events, n, np, touched);
	if (rc < 0) {
		unsync_all(reg, rev);
		return rc;
	}
	for (w = touched; w; w = nx) {
		nx = w->touch_next;
		if (stream_full(w->s)) {
			make_unsynced(w, rev);
			continue;
		}
		send_events(w, rev, reg->ptrs + w->off, w->cnt);
		w->next_rev = rev + 1;
	}
	fanout_end(reg);
	return 0;
}

int watch_restore(struct watch_registry *reg, int64_t rev)
{
	int64_t old = reg->rev;

	if (rev < old)
		return KV_EINVAL;
	reg->rev = rev;
	if (rev == old)
		return 0;
	/* Everything up to old was delivered to synced watchers; the rest
	 * comes from the restored store's history. */
	for (size_t i = 0; i < reg->n_gtab; i++) {
		for (struct group *g = reg->gtab[i]; g; g = g->hnext) {
			struct watcher *w = g->synced, *nx;
			for (; w; w = nx) {
				nx = w->g_next;
				if (w->next_rev <= rev)
					make_unsynced(w, old + 1);
			}
		}
	}
	return 0;
}

/* ---- catch-up -------------------------------------------------------------- */

static void send_compacted(struct watcher *w, int64_t compact_rev)
{
	struct watch_response r = { 0 };
	struct watch_stream *s = w->s;

	r.watch_id = w->id;
	r.canceled = true;
	r.compact_revision = compact_rev;
	watcher_free(w);
	emit(s, &r);
	maybe_send_progress(s);
}

/* One catch-up batch shared by every unsynced watcher whose stream has
 * room (as etcd's syncWatchers): one history read from the smallest
 * next_rev among them (over their common range when they share one group,
 * else over all keys), fanned out by the same index as notify. Every
 * participant has then received all its events below batch_end =
 * min(history's next_revision, watch_revision + 1) and moves its next_rev
 * there; those reaching watch_revision + 1 join the synced set. Sets
 * *used to the events read (at least 1), *progress when batch_end moved
 * past the start (a lagging history makes none). */
static int sync_batch(struct watch_registry *reg, size_t max_events,
		      size_t *used, bool *progress)
{
	static const uint8_t zero = 0;
	struct watch_history_req q = { 0 };
	struct watch_history_res res = { 0 };
	struct watcher *w, *nx, *touched = NULL, *tail = NULL;
	struct group *only = NULL;
	bool multi = false;
	size_t np = 0, k = 0;
	int64_t from = INT64_MAX, end;
	int rc;

	*used = 0;
	*progress = false;
	reg->step++;
	for (w = reg->unsynced_head; w; w = w->u_next) {
		if (stream_full(w->s))
			continue;
		w->elig = reg->step;
		if (w->next_rev < from)
			from = w->next_rev;
		if (!only)
			only = w->g;
		else if (only != w->g)
			multi = true;
		q.prev_kv |= w->prev_kv;
	}
	if (!only)
		return 0;
	q.key = &zero;
	q.key_len = 1;
	q.range_end = &zero;
	q.range_end_len = 1;
	if (!multi && only->kind != G_FROM) {
		q.key = only->key;
		q.key_len = only->key_len;
		q.range_end = only->kind == G_RANGE ? only->end : NULL;
		q.range_end_len = only->kind == G_RANGE ? only->end_len : 0;
	} else if (!multi) {
		q.key = only->key;
		q.key_len = only->key_len;
	}
	q.start_revision = from;
	q.max_events = max_events;
	rc = reg->history(reg->history_data, &q, &res);
	*used = res.n_events ? res.n_events : 1;
	if (rc == KV_ECOMPACTED) {
		bool any = false;
		for (w = reg->unsynced_head; w; w = nx) {
			nx = w->u_next;
			if (w->elig == reg->step &&
			    w->next_rev < res.compact_revision) {
				send_compacted(w, res.compact_revision);
				any = true;
			}
		}
		/* a source that reports compaction of no participant's start
		 * would stall us: count it as no progress */
		*progress = any;
		return 0;
	}
	if (rc < 0)
		return rc;
	reg->mark++;
	for (; k < res.n_events; k++) {
		if (res.events[k].kv.mod_revision > reg->rev)
			break; /* history ahead of notify: clip */
		if ((rc = match_event(reg, true, &res.events[k], k, &np,
				      &touched, &tail)) < 0)
			return rc;
	}
	if ((rc = fanout_begin(reg, res.events, k, np, touched)) < 0)
		return rc;
	for (w = touched; w; w = w->touch_next) {
		if (stream_full(w->s)) {
			w->elig = 0; /* not delivered: keeps its next_rev */
			continue;
		}
		send_events(w, reg->rev, reg->ptrs + w->off, w->cnt);
	}
	fanout_end(reg);
	end = res.next_revision;
	if (end > reg->rev + 1)
		end = reg->rev + 1;
	*progress = end > from;
	for (w = reg->unsynced_head; w; w = nx) {
		nx = w->u_next;
		if (w->elig != reg->step || w->next_rev >= end)
			continue;
		w->next_rev = end;
		if (end > reg->rev)
			make_synced(w);
	}
	return 0;
}

int watch_sync_step(struct watch_registry *reg, size_t budget, bool *more)
{
	size_t spent = 0;
	int rc = 0;

	while (spent < budget && reg->unsynced_head) {
		size_t used, want = budget - spent;
		bool progress;

		if (want > reg->batch)
			want = reg->batch;
		rc = sync_batch(reg, want, &used, &progress);
		if (rc < 0 || !used || !progress)
			break;
		spent += used;
	}
	if (more) {
		*more = false;
		for (struct watcher *w = reg->unsynced_head; w; w = w->u_next)
			if (!stream_full(w->s)) {
				*more = true;
				break;
			}
	}
	return rc;
}

void watch_tick(struct watch_registry *reg, uint64_t now_ms)
{
	for (struct watch_stream *s = reg->streams; s; s = s->next) {
		if (!s->next_tick_ms) {
			s->next_tick_ms = now_ms + reg->interval_ms;
			continue;
		}
		if (now_ms < s->next_tick_ms)
			continue;
		s->next_tick_ms = now_ms + reg->interval_ms;
		for (struct watcher *w = s->watchers; w; w = w->s_next) {
			if (!w->progress_notify)
				continue;
			if (w->synced && !w->had_events)
				emit_simple(s, w->id, reg->rev);
			w->had_events = false;
		}
	}
}

/* ---- streams --------------------------------------------------------------- */

int watch_stream_open(struct watch_registry *reg,
		      const struct watch_stream_options *opts,
		      struct watch_stream **out)
{
	struct watch_stream *s;

	if (!reg || !opts || !opts->on_response || !out)
		return KV_EINVAL;
	s = fail_alloc(reg) ? NULL : calloc(1, sizeof(*s));
	if (!s)
		return KV_ENOMEM;
	s->reg = reg;
	s->on_response = opts->on_response;
	s->data = opts->data;
	s->max_queue = opts->max_queue_bytes ? opts->max_queue_bytes
					     : DEFAULT_MAX_QUEUE;
	if (opts->now_ms)
		s->next_tick_ms = opts->now_ms + reg->interval_ms;
	s->next = reg->streams;
	if (reg->streams)
		reg->streams->prev = s;
	reg->streams = s;
	*out = s;
	return 0;
}

void watch_stream_close(struct watch_stream *s)
{
	struct watch_registry *reg;

	if (!s)
		return;
	reg = s->reg;
	while (s->watchers)
		watcher_free(s->watchers);
	if (s->prev)
		s->prev->next = s->next;
	else
		reg->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	free(s->ids);
	free(s);
}

static void send_failed_create(struct watch_stream *s, const char *reason)
{
	struct watch_response r = { 0 };
	r.header_revision = s->reg->rev;
	r.watch_id = -1;
	r.created = true;
	r.canceled = true;
	r.cancel_reason = reason;
	emit(s, &r);
}

int watch_create(struct watch_stream *s, const struct watch_create_req *req,
		 int64_t *id_out)
{
	static const uint8_t zero = 0;
	struct watch_registry *reg = s->reg;
	const uint8_t *key = req->key, *end = req->range_end;
	size_t kl = req->key_len, el = req->range_end_len;
	enum gkind kind = G_RANGE;
	struct watcher *w;
	int64_t id = req->watch_id;
	int rc;

	if (id_out)
		*id_out = -1;
	/* etcd v3rpc: an empty key is "\0"; range_end "\0" means >= key. */
	if (kl == 0) {
		key = &zero;
		kl = 1;
	}
	if (el == 0) {
		kind = G_SINGLE;
	} else if (el == 1 && end[0] == 0) {
		kind = G_FROM;
		el = 0;
	} else if (cmp_bytes(key, kl, end, el) >= 0) {
		send_failed_create(s, WATCH_REASON_EMPTY_RANGE);
		return 0;
	}
	if (kind != G_RANGE)
		end = NULL;
	if (id == 0) {
		while (id_find(s, s->next_id))
			s->next_id++;
		id = s->next_id;
	} else if (id_find(s, id)) {
		send_failed_create(s, WATCH_REASON_DUPLICATE_ID);
		return 0;
	}
	if ((rc = id_reserve(s)) < 0)
		return rc;
	w = fail_alloc(reg) ? NULL : calloc(1, sizeof(*w));
	if (!w)
		return KV_ENOMEM;
	if ((rc = group_get(reg, kind, key, kl, end, el, &w->g)) < 0) {
		free(w);
		return rc;
	}
	if (req->watch_id == 0)
		s->next_id++;
	w->s = s;
	w->id = id;
	w->filters = req->filters;
	w->prev_kv = req->prev_kv;
	w->fragment = req->fragment;
	w->progress_notify = req->progress_notify;
	/* etcd: 0 = now; anything else is the first revision wanted. A
	 * negative one goes to history as is: below the compacted revision
	 * (-1 before any compaction) it is canceled as compacted, as etcd
	 * 3.4 does (OBS: start -5 -> canceled, compact_revision -1). */
	w->next_rev = req->start_revision ? req->start_revision : reg->rev + 1;
	/* id table, stream list */
	w->id_next = s->ids[id_slot(s, id)];
	s->ids[id_slot(s, id)] = w;
	w->s_next = s->watchers;
	if (s->watchers)
		s->watchers->s_prev = w;
	s->watchers = w;
	s->n_watchers++;
	reg->n_watchers++;
	if (w->prev_kv)
		reg->n_prev_kv++;
	if (w->next_rev > reg->rev) {
		join_synced(w);
	} else {
		unsynced_append(reg, w);
		reg->n_unsynced++;
		s->n_unsynced++;
	}
	if (id_out)
		*id_out = id;
	{
		struct watch_response r = { 0 };
		r.header_revision = reg->rev;
		r.watch_id = id;
		r.created = true;
		emit(s, &r);
	}
	return 0;
}

int watch_cancel(struct watch_stream *s, int64_t watch_id)
{
	struct watcher *w = id_find(s, watch_id);

	if (!w)
		return KV_ENOTFOUND;
	watcher_free(w);
	{
		struct watch_response r = { 0 };
		r.header_revision = s->reg->rev;
		r.watch_id = watch_id;
		r.canceled = true;
		emit(s, &r);
	}
	maybe_send_progress(s);
	return 0;
}

void watch_progress_request(struct watch_stream *s)
{
	s->progress_pending = true;
	maybe_send_progress(s);
}

void watch_stream_drained(struct watch_stream *s, size_t bytes)
{
	s->queued = bytes >= s->queued ? 0 : s->queued - bytes;
}

void watch_stream_set_blocked(struct watch_stream *s, bool blocked)
{
	s->blocked = blocked;
}

size_t watch_stream_queued(const struct watch_stream *s)
{
	return s->queued;
}

void watch_test_fail_allocs(struct watch_registry *reg, unsigned every)
{
	reg->fail_every = every;
	reg->fail_count = 0;
}

/* ---- invariants ------------------------------------------------------------- */

static bool tree_ok(const struct group *t, const struct group *lo,
		    const struct group *hi, size_t *n)
{
	const struct group *m;

	if (!t)
		return true;
	if ((lo && !node_less(lo, t)) || (hi && !node_less(t, hi)))
		return false;
	if ((t->tl && t->tl->prio > t->prio) ||
	    (t->tr && t->tr->prio > t->prio))
		return false;
	m = t;
	if (t->tl && end_cmp(t->tl->maxend, m) > 0)
		m = t->tl->maxend;
	if (t->tr && end_cmp(t->tr->maxend, m) > 0)
		m = t->tr->maxend;
	if (end_cmp(m, t->maxend) != 0)
		return false;
	(*n)++;
	return tree_ok(t->tl, lo, t, n) && tree_ok(t->tr, t, hi, n);
}

bool watch_invariants_ok(const struct watch_registry *reg)
{
	size_t nw = 0, nu = 0, ng = 0, nr = 0, npk = 0, nsync = 0, nul = 0;

	for (const struct watch_stream *s = reg->streams; s; s = s->next) {
		size_t sw = 0, su = 0;
		for (const struct watcher *w = s->watchers; w; w = w->s_next) {
			if (w->s != s || id_find(s, w->id) != w)
				return false;
			sw++;
			if (!w->synced) {
				su++;
				if (w->next_rev > reg->rev)
					return false;
			}
			if (w->prev_kv)
				npk++;
		}
		if (sw != s->n_watchers || su != s->n_unsynced)
			return false;
		nw += sw;
		nu += su;
	}
	if (nw != reg->n_watchers || nu != reg->n_unsynced ||
	    npk != reg->n_prev_kv)
		return false;
	for (const struct watcher *w = reg->unsynced_head; w; w = w->u_next) {
		if (w->synced || (w->u_next && w->u_next->u_prev != w))
			return false;
		nul++;
	}
	if (nul != nu)
		return false;
	for (size_t i = 0; i < reg->n_gtab; i++) {
		for (const struct group *g = reg->gtab[i]; g; g = g->hnext) {
			size_t refs = 0;
			ng++;
			if ((g->hash & (reg->n_gtab - 1)) != i || !g->refs)
				return false;
			for (const struct watcher *w = g->synced; w;
			     w = w->g_next) {
				if (!w->synced || w->g != g ||
				    (w->g_next && w->g_next->g_prev != w))
					return false;
				nsync++;
			}
			for (const struct watch_stream *s = reg->streams; s;
			     s = s->next)
				for (const struct watcher *w = s->watchers; w;
				     w = w->s_next)
					refs += w->g == g;
			if (refs != g->refs)
				return false;
		}
	}
	if (ng != reg->n_groups || nsync + nu != nw)
		return false;
	if (!tree_ok(reg->rtree, NULL, NULL, &nr) || nr != reg->n_ranges)
		return false;
	return true;
}

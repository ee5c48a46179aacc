/* lessor.c — the lease table (kvraft/lessor.h).
 *
 * Leases live in a chained hash by id; on the leader they are also in a
 * binary min-heap ordered by their next deadline (the expiry, or for a
 * lease whose revoke was asked for, the time to ask again). Key entries
 * live in a chained hash by key bytes and, per lease, in a doubly linked
 * list, so revoke and TimeToLive walk only the lease's own keys.
 */
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/crc32c.h"
#include "kv/errors.h"
#include "kvraft/lessor.h"

#define NO_DEADLINE UINT64_MAX
#define NOT_IN_HEAP SIZE_MAX
/* A cleared checkpoint is asked for at most this often per lease. */
#define CLEAR_RETRY_MS 1000

struct key_ent {
	struct key_ent *hnext;
	struct key_ent *prev, *next; /* the lease's list */
	struct lease *owner;
	uint32_t hash;
	size_t len;
	uint8_t key[];
};

struct lease {
	int64_t id;
	int64_t ttl, remaining;
	uint64_t expiry;   /* NO_DEADLINE unless primary */
	uint64_t deadline; /* heap key: expiry, or when to ask again */
	uint64_t next_cp;  /* next checkpoint not before; 0: not scheduled */
	uint64_t clear_at; /* last clear-checkpoint request */
	size_t heap_i;
	bool revoking, stale;
	struct lease *hnext;
	struct key_ent *keys;
	size_t nkeys;
};

struct kv_lessor {
	struct lease **lb; /* lease buckets */
	size_t nlb, nleases;
	struct key_ent **kb; /* key buckets */
	size_t nkb, nkeys;
	size_t key_bytes;
	struct lease **heap;
	size_t nheap, capheap;
	bool primary;
	size_t cp_cursor; /* lease bucket where the checkpoint scan resumes */
};

static size_t id_slot(const struct kv_lessor *l, int64_t id)
{
	uint64_t x = (uint64_t)id * 0x9e3779b97f4a7c15ULL;
	return (size_t)(x >> 17) & (l->nlb - 1);
}

int kv_lessor_new(struct kv_lessor **out)
{
	struct kv_lessor *l = calloc(1, sizeof(*l));
	if (l == NULL)
		return KV_ENOMEM;
	l->nlb = 64;
	l->nkb = 64;
	l->lb = calloc(l->nlb, sizeof(*l->lb));
	l->kb = calloc(l->nkb, sizeof(*l->kb));
	if (l->lb == NULL || l->kb == NULL) {
		kv_lessor_free(l);
		return KV_ENOMEM;
	}
	*out = l;
	return 0;
}

static void drop_keys(struct kv_lessor *l);

void kv_lessor_free(struct kv_lessor *l)
{
	if (l == NULL)
		return;
	if (l->kb != NULL)
		drop_keys(l);
	for (size_t i = 0; l->lb != NULL && i < l->nlb; i++) {
		struct lease *e = l->lb[i];
		while (e != NULL) {
			struct lease *n = e->hnext;
			free(e);
			e = n;
		}
	}
	free(l->lb);
	free(l->kb);
	free(l->heap);
	free(l);
}

/* ---- the heap ------------------------------------------------------------ */

static void heap_set(struct kv_lessor *l, size_t i, struct lease *e)
{
	l->heap[i] = e;
	e->heap_i = i;
}

static void sift_up(struct kv_lessor *l, size_t i)
{
	struct lease *e = l->heap[i];
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (l->heap[p]->deadline <= e->deadline)
			break;
		heap_set(l, i, l->heap[p]);
		i = p;
	}
	heap_set(l, i, e);
}

static void sift_down(struct kv_lessor *l, size_t i)
{
	struct lease *e = l->heap[i];
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= l->nheap)
			break;
		if (c + 1 < l->nheap &&
		    l->heap[c + 1]->deadline < l->heap[c]->deadline)
			c++;
		if (e->deadline <= l->heap[c]->deadline)
			break;
		heap_set(l, i, l->heap[c]);
		i = c;
	}
	heap_set(l, i, e);
}

static int heap_push(struct kv_lessor *l, struct lease *e)
{
	if (l->nheap == l->capheap) {
		size_t cap = l->capheap ? l->capheap * 2 : 64;
		struct lease **v = realloc(l->heap, cap * sizeof(*v));
		if (v == NULL)
			return KV_ENOMEM;
		l->heap = v;
		l->capheap = cap;
	}
	heap_set(l, l->nheap++, e);
	sift_up(l, e->heap_i);
	return 0;
}

static void heap_remove(struct kv_lessor *l, struct lease *e)
{
	size_t i = e->heap_i;
	if (i == NOT_IN_HEAP)
		return;
	e->heap_i = NOT_IN_HEAP;
	struct lease *last = l->heap[--l->nheap];
	if (last == e)
		return;
	heap_set(l, i, last);
	sift_down(l, i);
	sift_up(l, last->heap_i);
}

static void heap_update(struct kv_lessor *l, struct lease *e,
			uint64_t deadline)
{
	e->deadline = deadline;
	sift_down(l, e->heap_i);
	sift_up(l, e->heap_i);
}

/* ---- leases -------------------------------------------------------------- */

static struct lease *find(const struct kv_lessor *l, int64_t id)
{
	struct lease *e = l->lb[id_slot(l, id)];
	while (e != NULL && e->id != id)
		e = e->hnext;
	return e;
}

static void grow_leases(struct kv_lessor *l)
{
	size_t nb = l->nlb * 2;
	struct lease **v = calloc(nb, sizeof(*v));
	if (v == NULL)
		return; /* longer chains; still correct */
	struct lease **old = l->lb;
	size_t on = l->nlb;
	l->lb = v;
	l->nlb = nb;
	for (size_t i = 0; i < on; i++) {
		struct lease *e = old[i];
		while (e != NULL) {
			struct lease *n = e->hnext;
			size_t s = id_slot(l, e->id);
			e->hnext = v[s];
			v[s] = e;
			e = n;
		}
	}
	free(old);
	l->cp_cursor = 0;
}

static uint64_t ttl_ms(int64_t s)
{
	return s > 0 ? (uint64_t)s * 1000 : 0;
}

int kv_lessor_grant(struct kv_lessor *l, int64_t id, int64_t ttl,
		    int64_t remaining)
{
	struct lease *e = find(l, id);
	if (e != NULL) {
		e->ttl = ttl;
		e->remaining = remaining;
		e->stale = false;
		return 0;
	}
	e = calloc(1, sizeof(*e));
	if (e == NULL)
		return KV_ENOMEM;
	e->id = id;
	e->ttl = ttl;
	e->remaining = remaining;
	e->expiry = NO_DEADLINE;
	e->heap_i = NOT_IN_HEAP;
	if (l->primary) {
		uint64_t now = kv_now_ms();
		e->expiry = now + ttl_ms(remaining > 0 ? remaining : ttl);
		e->deadline = e->expiry;
		if (heap_push(l, e) != 0) {
			free(e);
			return KV_ENOMEM;
		}
	}
	size_t s = id_slot(l, id);
	e->hnext = l->lb[s];
	l->lb[s] = e;
	if (++l->nleases > l->nlb)
		grow_leases(l);
	return 0;
}

void kv_lessor_checkpoint(struct kv_lessor *l, int64_t id, int64_t remaining)
{
	struct lease *e = find(l, id);
	if (e != NULL)
		e->remaining = remaining;
}

static void unlink_key(struct kv_lessor *l, struct key_ent *k)
{
	struct lease *o = k->owner;
	if (k->prev != NULL)
		k->prev->next = k->next;
	else
		o->keys = k->next;
	if (k->next != NULL)
		k->next->prev = k->prev;
	o->nkeys--;
	struct key_ent **pp = &l->kb[k->hash & (l->nkb - 1)];
	while (*pp != k)
		pp = &(*pp)->hnext;
	*pp = k->hnext;
	l->nkeys--;
	l->key_bytes -= sizeof(*k) + k->len;
	free(k);
}

static void remove_lease(struct kv_lessor *l, struct lease *e)
{
	while (e->keys != NULL)
		unlink_key(l, e->keys);
	heap_remove(l, e);
	struct lease **pp = &l->lb[id_slot(l, e->id)];
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	l->nleases--;
	free(e);
}

void kv_lessor_revoke(struct kv_lessor *l, int64_t id)
{
	struct lease *e = find(l, id);
	if (e != NULL)
		remove_lease(l, e);
}

bool kv_lessor_exists(const struct kv_lessor *l, int64_t id)
{
	return find(l, id) != NULL;
}

size_t kv_lessor_count(const struct kv_lessor *l)
{
	return l->nleases;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

int kv_lessor_ids(const struct kv_lessor *l, int64_t **ids, size_t *n)
{
	*ids = NULL;
	*n = 0;
	if (l->nleases == 0)
		return 0;
	int64_t *v = malloc(l->nleases * sizeof(*v));
	if (v == NULL)
		return KV_ENOMEM;
	size_t k = 0;
	for (size_t i = 0; i < l->nlb; i++)
		for (struct lease *e = l->lb[i]; e != NULL; e = e->hnext)
			v[k++] = e->id;
	qsort(v, k, sizeof(*v), cmp_i64);
	*ids = v;
	*n = k;
	return 0;
}

int kv_lessor_info(const struct kv_lessor *l, int64_t id,
		   struct kv_lease_info *out)
{
	const struct lease *e = find(l, id);
	if (e == NULL)
		return KV_ENOTFOUND;
	out->id = e->id;
	out->ttl = e->ttl;
	out->remaining = e->remaining;
	out->nkeys = e->nkeys;
	out->left_ms = -1;
	if (l->primary) {
		uint64_t now = kv_now_ms();
		out->left_ms = e->revoking || e->expiry <= now
				       ? 0
				       : (int64_t)(e->expiry - now);
	}
	return 0;
}

/* ---- keys ---------------------------------------------------------------- */

static void drop_keys(struct kv_lessor *l)
{
	for (size_t i = 0; i < l->nkb; i++) {
		struct key_ent *k = l->kb[i];
		while (k != NULL) {
			struct key_ent *n = k->hnext;
			free(k);
			k = n;
		}
		l->kb[i] = NULL;
	}
	for (size_t i = 0; i < l->nlb; i++)
		for (struct lease *e = l->lb[i]; e != NULL; e = e->hnext) {
			e->keys = NULL;
			e->nkeys = 0;
		}
	l->nkeys = 0;
	l->key_bytes = 0;
}

static void grow_keys(struct kv_lessor *l)
{
	size_t nb = l->nkb * 2;
	struct key_ent **v = calloc(nb, sizeof(*v));
	if (v == NULL)
		return;
	for (size_t i = 0; i < l->nkb; i++) {
		struct key_ent *k = l->kb[i];
		while (k != NULL) {
			struct key_ent *n = k->hnext;
			k->hnext = v[k->hash & (nb - 1)];
			v[k->hash & (nb - 1)] = k;
			k = n;
		}
	}
	free(l->kb);
	l->kb = v;
	l->nkb = nb;
}

int kv_lessor_attach(struct kv_lessor *l, const void *key, size_t len,
		     int64_t lease)
{
	uint32_t h = kv_crc32c(0, key, len);
	struct key_ent *k = l->kb[h & (l->nkb - 1)];
	while (k != NULL &&
	       (k->hash != h || k->len != len || memcmp(k->key, key, len) != 0))
		k = k->hnext;
	struct lease *o = lease != 0 ? find(l, lease) : NULL;
	if (k != NULL) {
		if (k->owner == o)
			return 0;
		unlink_key(l, k);
	}
	if (o == NULL)
		return 0;
	k = malloc(sizeof(*k) + len);
	if (k == NULL)
		return KV_ENOMEM;
	k->hash = h;
	k->len = len;
	memcpy(k->key, key, len);
	k->owner = o;
	k->prev = NULL;
	k->next = o->keys;
	if (o->keys != NULL)
		o->keys->prev = k;
	o->keys = k;
	o->nkeys++;
	k->hnext = l->kb[h & (l->nkb - 1)];
	l->kb[h & (l->nkb - 1)] = k;
	l->key_bytes += sizeof(*k) + len;
	if (++l->nkeys > l->nkb)
		grow_keys(l);
	return 0;
}

int kv_lessor_keys(const struct kv_lessor *l, int64_t id,
		   int (*fn)(void *arg, const void *key, size_t len),
		   void *arg)
{
	const struct lease *e = find(l, id);
	if (e == NULL)
		return 0;
	for (const struct key_ent *k = e->keys; k != NULL; k = k->next) {
		int rc = fn(arg, k->key, k->len);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* ---- rebuild ------------------------------------------------------------- */

void kv_lessor_load_begin(struct kv_lessor *l)
{
	drop_keys(l);
	for (size_t i = 0; i < l->nlb; i++)
		for (struct lease *e = l->lb[i]; e != NULL; e = e->hnext)
			e->stale = true;
}

void kv_lessor_load_end(struct kv_lessor *l)
{
	for (size_t i = 0; i < l->nlb; i++) {
		struct lease *e = l->lb[i];
		while (e != NULL) {
			struct lease *n = e->hnext;
			if (e->stale)
				remove_lease(l, e);
			e = n;
		}
	}
}

/* ---- leader -------------------------------------------------------------- */

void kv_lessor_promote(struct kv_lessor *l, uint64_t extend_ms)
{
	uint64_t now = kv_now_ms();
	l->primary = true;
	l->nheap = 0;
	for (size_t i = 0; i < l->nlb; i++)
		for (struct lease *e = l->lb[i]; e != NULL; e = e->hnext) {
			int64_t left = e->remaining > 0 ? e->remaining : e->ttl;
			e->expiry = now + ttl_ms(left) + extend_ms;
			e->deadline = e->expiry;
			e->revoking = false;
			e->next_cp = 0;
			e->heap_i = NOT_IN_HEAP;
			if (heap_push(l, e) != 0) {
				/* cannot track it: never expires here */
				e->expiry = NO_DEADLINE;
			}
		}
}

void kv_lessor_demote(struct kv_lessor *l)
{
	l->primary = false;
	for (size_t i = 0; i < l->nheap; i++) {
		l->heap[i]->heap_i = NOT_IN_HEAP;
		l->heap[i]->expiry = NO_DEADLINE;
		l->heap[i]->revoking = false;
	}
	l->nheap = 0;
}

bool kv_lessor_primary(const struct kv_lessor *l)
{
	return l->primary;
}

int64_t kv_lessor_renew(struct kv_lessor *l, int64_t id, bool *clear_cp)
{
	struct lease *e = find(l, id);
	uint64_t now = kv_now_ms();
	*clear_cp = false;
	if (e == NULL || !l->primary || e->heap_i == NOT_IN_HEAP ||
	    e->revoking || e->expiry <= now)
		return 0;
	e->expiry = now + ttl_ms(e->ttl);
	heap_update(l, e, e->expiry);
	if (e->remaining != 0 && now - e->clear_at >= CLEAR_RETRY_MS) {
		e->clear_at = now;
		*clear_cp = true;
	}
	return e->ttl;
}

size_t kv_lessor_expired(struct kv_lessor *l, int64_t *ids, size_t max,
			 uint64_t retry_ms)
{
	uint64_t now = kv_now_ms();
	size_t n = 0;
	while (n < max && l->nheap > 0 && l->heap[0]->deadline <= now) {
		struct lease *e = l->heap[0];
		e->revoking = true;
		ids[n++] = e->id;
		heap_update(l, e, now + retry_ms);
	}
	return n;
}

size_t kv_lessor_checkpoints(struct kv_lessor *l, uint64_t interval_ms,
			     size_t scan, int64_t *ids, int64_t *remaining,
			     size_t max)
{
	uint64_t now = kv_now_ms();
	size_t n = 0, seen = 0, buckets = 0;
	if (!l->primary || l->nleases == 0)
		return 0;
	while (n < max && seen < scan && buckets < l->nlb) {
		size_t b = l->cp_cursor++ & (l->nlb - 1);
		buckets++;
		for (struct lease *e = l->lb[b]; e != NULL && n < max;
		     e = e->hnext) {
			seen++;
			if (e->next_cp == 0) {
				/* first checkpoint one interval from now */
				e->next_cp = now + interval_ms;
				continue;
			}
			if (e->revoking || e->expiry == NO_DEADLINE ||
			    e->expiry <= now + interval_ms || e->next_cp > now)
				continue;
			e->next_cp = now + interval_ms;
			ids[n] = e->id;
			remaining[n] = (int64_t)((e->expiry - now + 999) / 1000);
			n++;
		}
	}
	return n;
}

size_t kv_lessor_memory(const struct kv_lessor *l)
{
	return sizeof(*l) + l->nlb * sizeof(*l->lb) +
	       l->nleases * sizeof(struct lease) + l->nkb * sizeof(*l->kb) +
	       l->key_bytes + l->capheap * sizeof(*l->heap);
}

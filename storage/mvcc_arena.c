/* Result arena for the MVCC store: a chain of chunks, bump-allocated. */
#include "storage/mvcc.h"

#include <stdlib.h>

struct mvcc_arena_chunk {
	struct mvcc_arena_chunk *next;
	size_t cap;
	size_t used;
	_Alignas(16) unsigned char data[];
};

enum { CHUNK_MIN = 64 * 1024 };

void *mvcc_arena_alloc(struct mvcc_arena *a, size_t n)
{
	struct mvcc_arena_chunk *c = a->head;
	size_t need = (n + 15) & ~(size_t)15;

	if (need < n)
		return NULL;
	if (need == 0)
		need = 16;
	if (c == NULL || c->cap - c->used < need) {
		size_t cap = need > CHUNK_MIN ? need : CHUNK_MIN;

		if (c != NULL && c->cap * 2 > cap && c->cap < (1u << 24))
			cap = c->cap * 2;
		c = malloc(sizeof(*c) + cap);
		if (c == NULL)
			return NULL;
		c->cap = cap;
		c->used = 0;
		c->next = a->head;
		a->head = c;
	}
	void *p = c->data + c->used;
	c->used += need;
	a->used_bytes += need;
	return p;
}

void mvcc_arena_reset(struct mvcc_arena *a)
{
	struct mvcc_arena_chunk *c = a->head;

	if (c == NULL)
		return;
	struct mvcc_arena_chunk *rest = c->next;
	while (rest != NULL) {
		struct mvcc_arena_chunk *next = rest->next;
		free(rest);
		rest = next;
	}
	c->next = NULL;
	c->used = 0;
	a->used_bytes = 0;
}

void mvcc_arena_free(struct mvcc_arena *a)
{
	mvcc_arena_reset(a);
	free(a->head);
	a->head = NULL;
}

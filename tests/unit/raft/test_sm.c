#include "test_sm.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "kv/errors.h"

static void push(struct tsm_state *s, uint64_t v)
{
	if (s->nseqs == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 1024;
		s->seqs = realloc(s->seqs, s->cap * sizeof(*s->seqs));
	}
	s->seqs[s->nseqs++] = v;
}

static void copy_state(struct tsm_state *dst, const struct tsm_state *src)
{
	free(dst->seqs);
	*dst = *src;
	dst->cap = src->nseqs ? src->nseqs : 1;
	dst->seqs = malloc(dst->cap * sizeof(uint64_t));
	memcpy(dst->seqs, src->seqs, src->nseqs * sizeof(uint64_t));
}

static int save(const struct tsm_state *s, const char *path, uint64_t *size,
		uint32_t *crc)
{
	size_t n = 5 * 8 + s->nseqs * 8;
	uint64_t *b = malloc(n + 8);
	b[0] = s->index;
	b[1] = s->term;
	b[2] = s->count;
	b[3] = s->hash;
	b[4] = s->nseqs;
	memcpy(b + 5, s->seqs, s->nseqs * 8);
	uint32_t c = kv_crc32c(0, b, n);
	b[5 + s->nseqs] = c;
	char tmp[4200];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return KV_EIO;
	int rv = write(fd, b, n + 8) == (ssize_t)(n + 8) && fsync(fd) == 0
			 ? 0
			 : KV_EIO;
	close(fd);
	free(b);
	if (rv == 0 && rename(tmp, path) != 0)
		rv = KV_EIO;
	if (size)
		*size = n + 8;
	if (crc)
		*crc = c;
	return rv;
}

static int load(struct tsm_state *s, const char *path, uint32_t *crc)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return KV_ENOTFOUND;
	uint64_t h[5];
	if (fread(h, 8, 5, f) != 5) {
		fclose(f);
		return KV_ECORRUPT;
	}
	uint64_t *b = malloc((5 + h[4] + 1) * 8);
	memcpy(b, h, sizeof(h));
	size_t got = fread(b + 5, 8, h[4] + 1, f);
	fclose(f);
	if (got != h[4] + 1 ||
	    kv_crc32c(0, b, (5 + h[4]) * 8) != (uint32_t)b[5 + h[4]]) {
		free(b);
		return KV_ECORRUPT;
	}
	if (crc)
		*crc = (uint32_t)b[5 + h[4]];
	free(s->seqs);
	s->index = h[0];
	s->term = h[1];
	s->count = h[2];
	s->hash = h[3];
	s->nseqs = s->cap = h[4];
	s->seqs = malloc((h[4] ? h[4] : 1) * 8);
	memcpy(s->seqs, b + 5, h[4] * 8);
	free(b);
	return 0;
}

static int sm_apply(void *data, uint64_t index, uint64_t term,
		    const void *buf, size_t len)
{
	struct tsm *t = data;
	if (t->fail_apply_at && index == (uint64_t)t->fail_apply_at)
		return KV_EIO;
	if (index <= t->st.index)
		abort(); /* the node must never re-apply */
	uint64_t seq = 0;
	if (len == 8)
		memcpy(&seq, buf, 8);
	else if (len != 0)
		abort(); /* payload must arrive unpadded */
	pthread_mutex_lock(&t->mu);
	t->st.index = index;
	t->st.term = term;
	t->st.count++;
	t->st.hash = (t->st.hash ^ seq) * 0x100000001b3ull + index;
	push(&t->st, seq);
	pthread_mutex_unlock(&t->mu);
	return 0;
}

static int sm_apply_noop(void *data, uint64_t index, uint64_t term)
{
	struct tsm *t = data;
	pthread_mutex_lock(&t->mu);
	if (index > t->st.index) {
		t->st.index = index;
		t->st.term = term;
	}
	pthread_mutex_unlock(&t->mu);
	return 0;
}

static void sm_applied(void *data, uint64_t *index, uint64_t *term)
{
	struct tsm *t = data;
	*index = t->st.index;
	*term = t->st.term;
}

static uint64_t sm_durable(void *data)
{
	struct tsm *t = data;
	return t->durable;
}

static int sm_prepare(void *data, uint64_t *index, uint64_t *term)
{
	struct tsm *t = data;
	int rv = save(&t->st, t->path, NULL, NULL);
	if (rv != 0)
		return rv;
	t->durable = t->st.index;
	pthread_mutex_lock(&t->mu);
	copy_state(&t->snap, &t->st);
	pthread_mutex_unlock(&t->mu);
	*index = t->st.index;
	*term = t->st.term;
	return 0;
}

static int sm_write(void *data, const char *path, uint64_t *index,
		    uint64_t *term, uint64_t *size, uint32_t *crc)
{
	struct tsm *t = data;
	pthread_mutex_lock(&t->mu);
	const struct tsm_state *s = t->write_latest ? &t->st : &t->snap;
	int rv = save(s, path, size, crc);
	*index = s->index;
	*term = s->term;
	t->snapshots++;
	pthread_mutex_unlock(&t->mu);
	return rv;
}

static int sm_restore(void *data, const char *path, uint64_t index,
		      uint64_t term, uint32_t crc)
{
	struct tsm *t = data;
	struct tsm_state s = {0};
	uint32_t c = 0;
	int rv = load(&s, path, &c);
	if (rv != 0 || s.index != index || s.term != term || c != crc) {
		free(s.seqs);
		return rv ? rv : KV_ECORRUPT;
	}
	pthread_mutex_lock(&t->mu);
	free(t->st.seqs);
	t->st = s;
	pthread_mutex_unlock(&t->mu);
	rv = save(&t->st, t->path, NULL, NULL);
	t->durable = t->st.index;
	t->restores++;
	return rv;
}

void tsm_init(struct tsm *t, const char *dir)
{
	memset(t, 0, sizeof(*t));
	pthread_mutex_init(&t->mu, NULL);
	snprintf(t->path, sizeof(t->path), "%s/sm.state", dir);
	if (load(&t->st, t->path, NULL) == 0)
		t->durable = t->st.index;
	t->sm.data = t;
	t->sm.apply = sm_apply;
	t->sm.apply_noop = sm_apply_noop;
	t->sm.applied = sm_applied;
	t->sm.durable_index = sm_durable;
	t->sm.prepare_snapshot = sm_prepare;
	t->sm.write_snapshot = sm_write;
	t->sm.restore = sm_restore;
}

void tsm_free(struct tsm *t)
{
	free(t->st.seqs);
	free(t->snap.seqs);
	pthread_mutex_destroy(&t->mu);
	memset(t, 0, sizeof(*t));
}

bool tsm_has(const struct tsm *t, uint64_t seq)
{
	for (size_t i = 0; i < t->st.nseqs; i++)
		if (t->st.seqs[i] == seq)
			return true;
	return false;
}

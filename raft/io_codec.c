/* raft/io_codec.c — see io_codec.h for the formats. */
#include "io_codec.h"

#include <stdlib.h>
#include <string.h>

#include "kv/errors.h"

static const char desc_magic[8] = {'K', 'V', 'S', 'N', 'A', 'P', 'D', '2'};

void io_put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

uint64_t io_get64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

void io_put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

uint32_t io_get32(const unsigned char *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

void io_desc_encode(const struct kvraft_desc *d, unsigned char *p)
{
	memcpy(p, desc_magic, 8);
	io_put64(p + 8, d->index);
	io_put64(p + 16, d->term);
	io_put64(p + 24, d->size);
	io_put32(p + 32, d->crc);
	io_put32(p + 36, 0);
	io_put64(p + 40, d->file_index);
	io_put64(p + 48, d->file_term);
}

int io_desc_decode(const void *buf, size_t len, struct kvraft_desc *d)
{
	const unsigned char *p = buf;
	if (len != KVRAFT_DESC_SIZE || memcmp(p, desc_magic, 8) != 0)
		return KV_EPROTO;
	d->index = io_get64(p + 8);
	d->term = io_get64(p + 16);
	d->size = io_get64(p + 24);
	d->crc = io_get32(p + 32);
	d->file_index = io_get64(p + 40);
	d->file_term = io_get64(p + 48);
	if (io_get32(p + 36) != 0)
		return KV_EPROTO;
	return 0;
}

size_t io_conf_size(const struct raft_configuration *c)
{
	size_t n = 8;
	for (unsigned i = 0; i < c->n; i++)
		n += 24 + strlen(c->servers[i].address);
	return n;
}

void io_conf_encode(const struct raft_configuration *c, unsigned char *p)
{
	io_put64(p, c->n);
	p += 8;
	for (unsigned i = 0; i < c->n; i++) {
		size_t al = strlen(c->servers[i].address);
		io_put64(p, c->servers[i].id);
		io_put64(p + 8, (uint64_t)c->servers[i].role);
		io_put64(p + 16, al);
		memcpy(p + 24, c->servers[i].address, al);
		p += 24 + al;
	}
}

int io_conf_decode(const unsigned char *p, size_t len,
		   struct raft_configuration *c)
{
	raft_configuration_init(c);
	if (len < 8)
		return KV_EPROTO;
	uint64_t n = io_get64(p);
	size_t off = 8;
	if (n > KVRAFT_MAX_SERVERS)
		return KV_EPROTO;
	for (uint64_t i = 0; i < n; i++) {
		if (len - off < 24)
			goto bad;
		uint64_t id = io_get64(p + off);
		uint64_t role = io_get64(p + off + 8);
		uint64_t al = io_get64(p + off + 16);
		off += 24;
		if (al > len - off || al > 4096 || role > RAFT_SPARE ||
		    id == 0)
			goto bad;
		char addr[4097];
		memcpy(addr, p + off, al);
		addr[al] = '\0';
		if (strlen(addr) != al)
			goto bad;
		off += al;
		int rv = raft_configuration_add(c, id, addr, (int)role);
		if (rv == RAFT_NOMEM) {
			raft_configuration_close(c);
			raft_configuration_init(c);
			return KV_ENOMEM;
		}
		if (rv != 0)
			goto bad;
	}
	if (off != len)
		goto bad;
	return 0;
bad:
	raft_configuration_close(c);
	raft_configuration_init(c);
	return KV_EPROTO;
}

/* A bounded reader: every get checks the remaining length. */
struct rd {
	const unsigned char *p;
	size_t len, off;
	bool bad;
};

static uint64_t rd64(struct rd *r)
{
	if (r->len - r->off < 8) {
		r->bad = true;
		return 0;
	}
	uint64_t v = io_get64(r->p + r->off);
	r->off += 8;
	return v;
}

static size_t msg_size(const struct raft_message *m)
{
	size_t n = 8;
	switch (m->type) {
	case RAFT_IO_REQUEST_VOTE:
		return n + 40;
	case RAFT_IO_REQUEST_VOTE_RESULT:
		return n + 24;
	case RAFT_IO_APPEND_ENTRIES: {
		const struct raft_append_entries *a = &m->append_entries;
		n += 40 + 24 * (size_t)a->n_entries;
		for (unsigned i = 0; i < a->n_entries; i++)
			n += a->entries[i].buf.len;
		return n;
	}
	case RAFT_IO_APPEND_ENTRIES_RESULT:
		return n + 24;
	case RAFT_IO_INSTALL_SNAPSHOT:
		return n + 48 + io_conf_size(&m->install_snapshot.conf) +
		       m->install_snapshot.data.len;
	case RAFT_IO_TIMEOUT_NOW:
		return n + 24;
	default:
		return 0;
	}
}

int io_msg_encode(const struct raft_message *m, unsigned char **out,
		  size_t *len)
{
	size_t n = msg_size(m);
	if (n == 0)
		return KV_EINVAL;
	unsigned char *b = malloc(n);
	if (b == NULL)
		return KV_ENOMEM;
	unsigned char *p = b;
	memset(p, 0, 8);
	p[0] = KVRAFT_MSG_VERSION;
	p[1] = (unsigned char)m->type;
	p += 8;
#define PUT(v)                              \
	do {                                \
		io_put64(p, (uint64_t)(v)); \
		p += 8;                     \
	} while (0)
	switch (m->type) {
	case RAFT_IO_REQUEST_VOTE: {
		const struct raft_request_vote *v = &m->request_vote;
		PUT(v->term);
		PUT(v->candidate_id);
		PUT(v->last_log_index);
		PUT(v->last_log_term);
		PUT((v->disrupt_leader ? 1u : 0u) | (v->pre_vote ? 2u : 0u));
		break;
	}
	case RAFT_IO_REQUEST_VOTE_RESULT: {
		const struct raft_request_vote_result *v =
			&m->request_vote_result;
		PUT(v->term);
		PUT(v->vote_granted ? 1 : 0);
		PUT(v->pre_vote);
		break;
	}
	case RAFT_IO_APPEND_ENTRIES: {
		const struct raft_append_entries *a = &m->append_entries;
		PUT(a->term);
		PUT(a->prev_log_index);
		PUT(a->prev_log_term);
		PUT(a->leader_commit);
		PUT(a->n_entries);
		for (unsigned i = 0; i < a->n_entries; i++) {
			PUT(a->entries[i].term);
			PUT(a->entries[i].type);
			PUT(a->entries[i].buf.len);
		}
		for (unsigned i = 0; i < a->n_entries; i++) {
			if (a->entries[i].buf.len > 0)
				memcpy(p, a->entries[i].buf.base,
				       a->entries[i].buf.len);
			p += a->entries[i].buf.len;
		}
		break;
	}
	case RAFT_IO_APPEND_ENTRIES_RESULT: {
		const struct raft_append_entries_result *a =
			&m->append_entries_result;
		PUT(a->term);
		PUT(a->rejected);
		PUT(a->last_log_index);
		break;
	}
	case RAFT_IO_INSTALL_SNAPSHOT: {
		const struct raft_install_snapshot *s = &m->install_snapshot;
		PUT(s->term);
		PUT(s->last_index);
		PUT(s->last_term);
		PUT(s->conf_index);
		size_t cl = io_conf_size(&s->conf);
		PUT(cl);
		io_conf_encode(&s->conf, p);
		p += cl;
		PUT(s->data.len);
		if (s->data.len > 0)
			memcpy(p, s->data.base, s->data.len);
		p += s->data.len;
		break;
	}
	case RAFT_IO_TIMEOUT_NOW: {
		const struct raft_timeout_now *t = &m->timeout_now;
		PUT(t->term);
		PUT(t->last_log_index);
		PUT(t->last_log_term);
		break;
	}
	}
#undef PUT
	*out = b;
	*len = (size_t)(p - b);
	return 0;
}

static int decode_entries(struct rd *r, struct raft_append_entries *a)
{
	uint64_t n = rd64(r);
	if (r->bad || n > KVRAFT_MAX_ENTRIES || n > (r->len - r->off) / 24)
		return KV_EPROTO;
	a->n_entries = (unsigned)n;
	a->entries = NULL;
	if (n == 0)
		return r->off == r->len ? 0 : KV_EPROTO;
	size_t hdr = r->off;
	size_t total = 0;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t type = io_get64(r->p + hdr + 24 * i + 8);
		uint64_t len = io_get64(r->p + hdr + 24 * i + 16);
		if (type < RAFT_COMMAND || type > RAFT_CHANGE)
			return KV_EPROTO;
		if (len > r->len - r->off - 24 * n - total)
			return KV_EPROTO;
		total += len;
	}
	if (r->off + 24 * n + total != r->len)
		return KV_EPROTO;
	struct raft_entry *ents = raft_calloc(n, sizeof(*ents));
	/* One batch for every payload (at least 8 bytes: raft requires a
	 * non-NULL batch). */
	unsigned char *batch = raft_malloc(total > 0 ? total : 8);
	if (ents == NULL || batch == NULL) {
		raft_free(ents);
		raft_free(batch);
		return KV_ENOMEM;
	}
	const unsigned char *data = r->p + r->off + 24 * n;
	if (total > 0)
		memcpy(batch, data, total);
	size_t off = 0;
	for (uint64_t i = 0; i < n; i++) {
		ents[i].term = io_get64(r->p + hdr + 24 * i);
		ents[i].type =
			(unsigned short)io_get64(r->p + hdr + 24 * i + 8);
		ents[i].buf.len = io_get64(r->p + hdr + 24 * i + 16);
		ents[i].buf.base = batch + off;
		ents[i].batch = batch;
		off += ents[i].buf.len;
	}
	r->off = r->len;
	a->entries = ents;
	return 0;
}

int io_msg_decode(const void *body, size_t len, struct raft_message *m)
{
	struct rd r = {.p = body, .len = len};
	memset(m, 0, sizeof(*m));
	if (len < 8 || r.p[0] != KVRAFT_MSG_VERSION)
		return KV_EPROTO;
	for (int i = 2; i < 8; i++)
		if (r.p[i] != 0)
			return KV_EPROTO;
	m->type = r.p[1];
	r.off = 8;
	int rv = 0;
	switch (m->type) {
	case RAFT_IO_REQUEST_VOTE: {
		struct raft_request_vote *v = &m->request_vote;
		v->term = rd64(&r);
		v->candidate_id = rd64(&r);
		v->last_log_index = rd64(&r);
		v->last_log_term = rd64(&r);
		uint64_t f = rd64(&r);
		if (f > 3)
			return KV_EPROTO;
		v->disrupt_leader = (f & 1) != 0;
		v->pre_vote = (f & 2) != 0;
		break;
	}
	case RAFT_IO_REQUEST_VOTE_RESULT: {
		struct raft_request_vote_result *v = &m->request_vote_result;
		v->term = rd64(&r);
		uint64_t g = rd64(&r);
		uint64_t pv = rd64(&r);
		if (g > 1 || pv > raft_tribool_false)
			return KV_EPROTO;
		v->vote_granted = g == 1;
		v->pre_vote = (raft_tribool)pv;
		break;
	}
	case RAFT_IO_APPEND_ENTRIES: {
		struct raft_append_entries *a = &m->append_entries;
		a->term = rd64(&r);
		a->prev_log_index = rd64(&r);
		a->prev_log_term = rd64(&r);
		a->leader_commit = rd64(&r);
		if (r.bad)
			return KV_EPROTO;
		return decode_entries(&r, a);
	}
	case RAFT_IO_APPEND_ENTRIES_RESULT: {
		struct raft_append_entries_result *a =
			&m->append_entries_result;
		a->term = rd64(&r);
		a->rejected = rd64(&r);
		a->last_log_index = rd64(&r);
		break;
	}
	case RAFT_IO_INSTALL_SNAPSHOT: {
		struct raft_install_snapshot *s = &m->install_snapshot;
		raft_configuration_init(&s->conf);
		s->term = rd64(&r);
		s->last_index = rd64(&r);
		s->last_term = rd64(&r);
		s->conf_index = rd64(&r);
		uint64_t cl = rd64(&r);
		if (r.bad || cl > r.len - r.off)
			return KV_EPROTO;
		rv = io_conf_decode(r.p + r.off, cl, &s->conf);
		if (rv != 0)
			return rv;
		r.off += cl;
		uint64_t dl = rd64(&r);
		if (r.bad || dl != r.len - r.off) {
			raft_configuration_close(&s->conf);
			return KV_EPROTO;
		}
		s->data.base = raft_malloc(dl > 0 ? dl : 8);
		if (s->data.base == NULL) {
			raft_configuration_close(&s->conf);
			return KV_ENOMEM;
		}
		if (dl > 0)
			memcpy(s->data.base, r.p + r.off, dl);
		s->data.len = dl;
		r.off += dl;
		break;
	}
	case RAFT_IO_TIMEOUT_NOW: {
		struct raft_timeout_now *t = &m->timeout_now;
		t->term = rd64(&r);
		t->last_log_index = rd64(&r);
		t->last_log_term = rd64(&r);
		break;
	}
	default:
		return KV_EPROTO;
	}
	if (r.bad || r.off != r.len) {
		io_msg_release(m);
		return KV_EPROTO;
	}
	return 0;
}

void io_msg_release(struct raft_message *m)
{
	if (m->type == RAFT_IO_APPEND_ENTRIES) {
		if (m->append_entries.n_entries > 0) {
			raft_free(m->append_entries.entries[0].batch);
			raft_free(m->append_entries.entries);
		}
		m->append_entries.entries = NULL;
		m->append_entries.n_entries = 0;
	} else if (m->type == RAFT_IO_INSTALL_SNAPSHOT) {
		raft_configuration_close(&m->install_snapshot.conf);
		raft_configuration_init(&m->install_snapshot.conf);
		raft_free(m->install_snapshot.data.base);
		m->install_snapshot.data.base = NULL;
	}
}

/* raft/ids.c — see kvraft/ids.h. */
#include "kvraft/ids.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/sha1.h"
#include "kv/errors.h"

static uint64_t be64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

uint64_t kvraft_member_id(const char *const *urls, size_t n,
			  const char *token)
{
	const char *sorted[KVRAFT_MAX_URLS];
	if (n > KVRAFT_MAX_URLS)
		n = KVRAFT_MAX_URLS;
	memcpy(sorted, urls, n * sizeof(*urls));
	qsort(sorted, n, sizeof(*sorted), cmp_str);
	struct kv_sha1 c;
	kv_sha1_init(&c);
	for (size_t i = 0; i < n; i++)
		kv_sha1_update(&c, sorted[i], strlen(sorted[i]));
	kv_sha1_update(&c, token, strlen(token));
	unsigned char d[KV_SHA1_SIZE];
	kv_sha1_final(&c, d);
	return be64(d);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

uint64_t kvraft_cluster_id(const uint64_t *ids, size_t n)
{
	uint64_t sorted[KVRAFT_MAX_MEMBERS];
	if (n > KVRAFT_MAX_MEMBERS)
		n = KVRAFT_MAX_MEMBERS;
	memcpy(sorted, ids, n * sizeof(*ids));
	qsort(sorted, n, sizeof(*sorted), cmp_u64);
	struct kv_sha1 c;
	kv_sha1_init(&c);
	for (size_t i = 0; i < n; i++) {
		unsigned char b[8];
		for (int k = 0; k < 8; k++)
			b[k] = (unsigned char)(sorted[i] >> (56 - 8 * k));
		kv_sha1_update(&c, b, 8);
	}
	unsigned char d[KV_SHA1_SIZE];
	kv_sha1_final(&c, d);
	return be64(d);
}

static bool valid_url(const char *u)
{
	const char *rest;
	if (strncmp(u, "http://", 7) == 0)
		rest = u + 7;
	else if (strncmp(u, "https://", 8) == 0)
		rest = u + 8;
	else
		return false;
	const char *colon = strrchr(rest, ':');
	if (colon == NULL || colon == rest || colon[1] == '\0')
		return false;
	for (const char *p = colon + 1; *p; p++)
		if (*p < '0' || *p > '9')
			return false;
	return strchr(rest, '/') == NULL;
}

static int cmp_member(const void *a, const void *b)
{
	const struct kvraft_member *x = a, *y = b;
	return x->id < y->id ? -1 : x->id > y->id;
}

void kvraft_cluster_free(struct kvraft_cluster *c)
{
	for (size_t i = 0; i < c->n; i++) {
		free(c->members[i].name);
		for (size_t k = 0; k < c->members[i].nurls; k++)
			free(c->members[i].urls[k]);
	}
	free(c->members);
	free(c->token);
	memset(c, 0, sizeof(*c));
}

static char *trimdup(const char *s, size_t n)
{
	while (n > 0 && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
	}
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	char *p = malloc(n + 1);
	if (p) {
		memcpy(p, s, n);
		p[n] = '\0';
	}
	return p;
}

int kvraft_cluster_parse(const char *ic, const char *token, const char *state,
			 struct kvraft_cluster *c, char *errmsg, size_t errlen)
{
	char dummy[8];
	if (errmsg == NULL) {
		errmsg = dummy;
		errlen = sizeof(dummy);
	}
	errmsg[0] = '\0';
	memset(c, 0, sizeof(*c));
	int rv = KV_EINVAL;
	if (state == NULL || strcmp(state, "new") == 0 || state[0] == '\0')
		c->state = KVRAFT_CLUSTER_NEW;
	else if (strcmp(state, "existing") == 0)
		c->state = KVRAFT_CLUSTER_EXISTING;
	else {
		snprintf(errmsg, errlen,
			 "invalid --initial-cluster-state %s (new|existing)",
			 state);
		return KV_EINVAL;
	}
	c->token = strdup(token && token[0] ? token : "etcd-cluster");
	c->members = calloc(KVRAFT_MAX_MEMBERS, sizeof(*c->members));
	if (c->token == NULL || c->members == NULL) {
		rv = KV_ENOMEM;
		goto err;
	}
	const char *p = ic ? ic : "";
	if (*p == '\0') {
		snprintf(errmsg, errlen, "empty --initial-cluster");
		goto err;
	}
	while (*p) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *eq = memchr(p, '=', len);
		if (eq == NULL) {
			snprintf(errmsg, errlen,
				 "--initial-cluster: \"%.*s\" is not name=url",
				 (int)len, p);
			goto err;
		}
		char *name = trimdup(p, (size_t)(eq - p));
		char *url = trimdup(eq + 1, len - (size_t)(eq - p) - 1);
		if (name == NULL || url == NULL) {
			free(name);
			free(url);
			rv = KV_ENOMEM;
			goto err;
		}
		if (name[0] == '\0' || !valid_url(url)) {
			snprintf(errmsg, errlen,
				 "--initial-cluster: bad member \"%s\"=\"%s\" "
				 "(want name=http(s)://host:port)",
				 name, url);
			free(name);
			free(url);
			goto err;
		}
		for (size_t i = 0; i < c->n; i++)
			for (size_t k = 0; k < c->members[i].nurls; k++)
				if (strcmp(c->members[i].urls[k], url) == 0) {
					snprintf(errmsg, errlen,
						 "--initial-cluster: URL %s "
						 "listed twice",
						 url);
					free(name);
					free(url);
					goto err;
				}
		struct kvraft_member *m = NULL;
		for (size_t i = 0; i < c->n; i++)
			if (strcmp(c->members[i].name, name) == 0)
				m = &c->members[i];
		if (m == NULL) {
			if (c->n == KVRAFT_MAX_MEMBERS) {
				snprintf(errmsg, errlen,
					 "--initial-cluster: more than %d "
					 "members",
					 KVRAFT_MAX_MEMBERS);
				free(name);
				free(url);
				goto err;
			}
			m = &c->members[c->n++];
			m->name = name;
		} else {
			free(name);
		}
		if (m->nurls == KVRAFT_MAX_URLS) {
			snprintf(errmsg, errlen,
				 "--initial-cluster: more than %d URLs for %s",
				 KVRAFT_MAX_URLS, m->name);
			free(url);
			goto err;
		}
		m->urls[m->nurls++] = url;
		p += len;
		if (*p == ',')
			p++;
	}
	uint64_t ids[KVRAFT_MAX_MEMBERS];
	for (size_t i = 0; i < c->n; i++) {
		struct kvraft_member *m = &c->members[i];
		qsort(m->urls, m->nurls, sizeof(m->urls[0]), cmp_str);
		m->id = kvraft_member_id((const char *const *)m->urls,
					 m->nurls, c->token);
		if (m->id == 0) {
			snprintf(errmsg, errlen, "member %s has id 0",
				 m->name);
			goto err;
		}
		ids[i] = m->id;
	}
	qsort(c->members, c->n, sizeof(*c->members), cmp_member);
	for (size_t i = 1; i < c->n; i++)
		if (c->members[i].id == c->members[i - 1].id) {
			snprintf(errmsg, errlen,
				 "members %s and %s have the same id",
				 c->members[i - 1].name, c->members[i].name);
			goto err;
		}
	c->cluster_id = kvraft_cluster_id(ids, c->n);
	return 0;
err:
	kvraft_cluster_free(c);
	return rv;
}

const struct kvraft_member *kvraft_cluster_find(const struct kvraft_cluster *c,
						const char *name)
{
	for (size_t i = 0; i < c->n; i++)
		if (strcmp(c->members[i].name, name) == 0)
			return &c->members[i];
	return NULL;
}

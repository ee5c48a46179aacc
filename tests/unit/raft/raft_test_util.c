#include "raft_test_util.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *rt_mkdtemp(void)
{
	const char *t = getenv("TMPDIR");
	char buf[4096];
	snprintf(buf, sizeof(buf), "%s/kvraft-test-XXXXXX", t ? t : "/tmp");
	if (mkdtemp(buf) == NULL)
		abort();
	return strdup(buf);
}

static void rmtree(const char *dir, int depth)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		char p[4096];
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		struct stat st;
		if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode) && depth < 8)
			rmtree(p, depth + 1);
		else
			unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

void rt_rmtree(const char *dir)
{
	rmtree(dir, 0);
}

struct until {
	bool expired;
};

static void on_until(uv_timer_t *t)
{
	struct until *u = t->data;
	u->expired = true;
}

static void on_close_noop(uv_handle_t *h)
{
	(void)h;
}

bool rt_run_until(uv_loop_t *loop, bool (*pred)(void *), void *arg,
		  uint64_t timeout_ms)
{
	struct until u = {false};
	uv_timer_t t;
	uv_timer_init(loop, &t);
	t.data = &u;
	uv_timer_start(&t, on_until, timeout_ms, 0);
	bool ok;
	while (!(ok = pred(arg)) && !u.expired)
		uv_run(loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&t, on_close_noop);
	uv_run(loop, UV_RUN_NOWAIT);
	return ok;
}

static bool never(void *arg)
{
	(void)arg;
	return false;
}

void rt_run_for(uv_loop_t *loop, uint64_t ms)
{
	rt_run_until(loop, never, NULL, ms);
}

struct rt_msg {
	struct rt_msg *next;
	uint64_t from, to, at;
	uint8_t type;
	size_t len;
	unsigned char body[];
};

static int find(struct rt_net *n, uint64_t id)
{
	for (int i = 0; i < n->n; i++)
		if (n->ep[i].id == id)
			return i;
	return -1;
}

static void on_deliver(uv_timer_t *t);

static void arm(struct rt_net *n)
{
	if (n->head == NULL)
		return;
	uint64_t now = uv_now(n->loop);
	uint64_t due = n->head->at > now ? n->head->at - now : 0;
	uv_timer_start(&n->timer, on_deliver, due, 0);
}

static void on_deliver(uv_timer_t *t)
{
	struct rt_net *n = t->data;
	uint64_t now = uv_now(n->loop);
	/* Bounded work per wake-up; only what was due at entry. */
	int budget = 4096;
	while (n->head != NULL && n->head->at <= now && budget-- > 0) {
		struct rt_msg *m = n->head;
		n->head = m->next;
		if (n->head == NULL)
			n->tail = NULL;
		int f = find(n, m->from), to = find(n, m->to);
		if (f >= 0 && to >= 0 && !n->cut[f][to] && n->ep[to].fn) {
			n->delivered++;
			n->ep[to].fn(n->ep[to].arg, m->from, m->type, m->body,
				     m->len);
		} else {
			n->dropped++;
		}
		free(m);
	}
	arm(n);
}

static int net_send(void *data, uint64_t to, uint8_t type, const void *body,
		    size_t len)
{
	struct rt_ep *ep = data;
	struct rt_net *n = ep->owner;
	int i = ep->idx;
	uint64_t from = ep->id;
	int f = i, t = find(n, to);
	n->sent++;
	if (type < 16)
		n->sent_by_type[type]++;
	if (t < 0 || n->cut[f][t] || n->ep[f].fn == NULL) {
		n->dropped++;
		return 0; /* dropped silently, like a lossy network */
	}
	struct rt_msg *m = malloc(sizeof(*m) + len);
	if (m == NULL)
		return -1;
	m->next = NULL;
	m->from = from;
	m->to = to;
	m->type = type;
	m->len = len;
	m->at = uv_now(n->loop) + n->delay_ms;
	if (len)
		memcpy(m->body, body, len);
	if (n->tail)
		n->tail->next = m;
	else
		n->head = m;
	n->tail = m;
	if (!uv_is_active((uv_handle_t *)&n->timer))
		arm(n);
	return 0;
}

void rt_net_init(struct rt_net *n, uv_loop_t *loop)
{
	memset(n, 0, sizeof(*n));
	n->loop = loop;
	n->delay_ms = 1;
	uv_timer_init(loop, &n->timer);
	n->timer.data = n;
}

struct kvraft_net *rt_net_add(struct rt_net *n, uint64_t id)
{
	int i = find(n, id);
	if (i < 0) {
		i = n->n++;
		n->ep[i].id = id;
	}
	n->ep[i].owner = n;
	n->ep[i].idx = i;
	n->ep[i].net.data = &n->ep[i];
	n->ep[i].net.send = net_send;
	return &n->ep[i].net;
}

void rt_net_attach(struct rt_net *n, uint64_t id, rt_deliver_fn fn,
		   void *arg)
{
	int i = find(n, id);
	if (i < 0)
		abort();
	n->ep[i].fn = fn;
	n->ep[i].arg = arg;
}

void rt_net_detach(struct rt_net *n, uint64_t id)
{
	rt_net_attach(n, id, NULL, NULL);
}

void rt_net_cut(struct rt_net *n, uint64_t a, uint64_t b, bool cut)
{
	int i = find(n, a), j = find(n, b);
	if (i < 0 || j < 0)
		abort();
	n->cut[i][j] = n->cut[j][i] = cut;
}

void rt_net_isolate(struct rt_net *n, uint64_t id, bool cut)
{
	for (int k = 0; k < n->n; k++)
		if (n->ep[k].id != id)
			rt_net_cut(n, id, n->ep[k].id, cut);
}

void rt_net_close(struct rt_net *n)
{
	while (n->head) {
		struct rt_msg *m = n->head;
		n->head = m->next;
		free(m);
	}
	n->tail = NULL;
	uv_close((uv_handle_t *)&n->timer, on_close_noop);
}

/* The member-to-member transport over net/conn.h; see kvraft/transport.h
 * for the wire format and the rules. */
#include "kvraft/transport.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/log.h"
#include "kv/errors.h"

#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

#define FRAME_HDR 5            /* u32 len + u8 type */
#define HELLO_VERSION 1
#define HELLO_BODY 17          /* version + cluster id + member id */
#define PRE_AUTH_MAX 64        /* largest len before the HELLO exchange */
#define COALESCE_MAX (64 * 1024) /* small frames are written together */
#define SCRATCH_KEEP (1u << 20)  /* larger scratch buffers are released */
#define CLOSE_GRACE_MS 500
#define KEEPALIVE_S 30
#define USER_TIMEOUT_MS 30000
#define MOD "peer"

/* One queued frame: header and body, ready to write. */
struct frame {
	struct frame *next;
	size_t len; /* FRAME_HDR + body */
	unsigned char data[];
};

enum out_state {
	OUT_IDLE,       /* no connection, may dial */
	OUT_BACKOFF,    /* waiting for the timer before dialling */
	OUT_CONNECTING, /* TCP/TLS under way */
	OUT_HELLO,      /* HELLO sent, waiting for the answer */
	OUT_READY,      /* frames flow */
};

struct peer {
	struct peer_transport *t;
	uint64_t id;
	char name[64];
	struct net_url url;
	bool removed; /* no longer a member; kept until close */
	bool dirty;   /* frames queued since the last flush */
	bool stale;   /* URL changed while connecting: redial */
	enum out_state state;
	struct pconn *out; /* outgoing connection, OUT_HELLO/OUT_READY */
	uv_timer_t timer;  /* backoff */
	uint64_t backoff_ms;
	struct frame *head, *tail;
	size_t queued; /* bytes of frames in the queue */
};

/* Our state for one net connection, accepted or dialled. Freed in the
 * connection's on_close. */
struct pconn {
	struct peer_transport *t;
	struct net_conn *c;
	struct peer *peer; /* dialled: the peer (NULL once detached) */
	uint64_t from;     /* authenticated member id; 0 before HELLO */
	bool outgoing, authed;
	struct kv_buf in; /* an incomplete frame */
	struct pconn *prev, *next;
};

struct peer_transport {
	struct peer_transport_config cfg;
	struct net_server *srv;
	struct peer **peers; /* never shrinks; removed peers are flagged */
	size_t npeers;
	struct pconn *conns;
	peer_on_message on_message;
	void *data;
	struct peer_transport_stats st;
	uint64_t rng;
	bool closing, srv_done;
	size_t live; /* pconns + open peer timers, during close */
	void (*close_cb)(void *data);
	void *close_data;
	struct kv_buf scratch;
	/* Sends during one loop iteration are written together after the
	 * poll phase (check); the idle handle keeps poll from blocking when
	 * a send comes after our check already ran. */
	uv_check_t flush_check;
	uv_idle_t flush_idle;
	bool flush_scheduled;
};

static void on_data(void *data, const char *p, size_t n);
static void on_writable(void *data);
static bool is_busy(void *data);
static void on_conn_close(void *data);

static const struct net_conn_handler handler = {
	.on_data = on_data,
	.on_writable = on_writable,
	.busy = is_busy,
	.on_close = on_conn_close,
};

static void kick(struct peer *p);
static void maybe_finish(struct peer_transport *t);

/* ---- helpers ----------------------------------------------------------- */

static uint64_t next_rand(struct peer_transport *t)
{
	/* xorshift64: jitter only, not security */
	uint64_t x = t->rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	t->rng = x;
	return x;
}

static struct peer *find_peer(struct peer_transport *t, uint64_t id)
{
	for (size_t i = 0; i < t->npeers; i++)
		if (t->peers[i]->id == id)
			return t->peers[i];
	return NULL;
}

static bool same_url(const struct net_url *a, const struct net_url *b)
{
	return a->tls == b->tls && a->port == b->port &&
	       strcmp(a->host, b->host) == 0;
}

static void drop_queue(struct peer *p)
{
	struct frame *f, *next;
	for (f = p->head; f != NULL; f = next) {
		next = f->next;
		p->t->st.dropped++;
		free(f);
	}
	p->head = p->tail = NULL;
	p->queued = 0;
}

static void release_scratch(struct peer_transport *t)
{
	if (t->scratch.cap > SCRATCH_KEEP)
		kv_buf_free(&t->scratch);
	else
		kv_buf_reset(&t->scratch);
}

static void put_hello(unsigned char *b, uint64_t cluster, uint64_t member)
{
	kv_store_u32le(b, 1 + HELLO_BODY);
	b[4] = PEER_MSG_HELLO;
	b[5] = HELLO_VERSION;
	kv_store_u64le(b + 6, cluster);
	kv_store_u64le(b + 14, member);
}

/* Logs, counts and closes a connection we do not accept. */
static void refuse(struct pconn *pc, uint64_t member, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void refuse(struct pconn *pc, uint64_t member, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	pc->t->st.refused_conns++;
	KV_WARN(MOD, "peer connection refused",
		"peer=%s member=%016" PRIx64 " dir=%s reason=\"%s\"",
		net_conn_peer(pc->c), member, pc->outgoing ? "out" : "in",
		why);
	net_conn_close(pc->c, NULL);
}

/* Closes the accepted connections authenticated as member id (but
 * `keep`). */
static void close_accepted(struct peer_transport *t, uint64_t id,
			   struct pconn *keep, const char *why)
{
	for (struct pconn *pc = t->conns; pc != NULL; pc = pc->next)
		if (pc != keep && !pc->outgoing && pc->authed &&
		    pc->from == id && !net_conn_closing(pc->c))
			net_conn_close(pc->c, why);
}

/* ---- sending ----------------------------------------------------------- */

/* Hands queued frames to the ready connection while it takes output;
 * small frames are written together. */
static void pump(struct peer *p)
{
	struct peer_transport *t = p->t;

	while (p->head != NULL && p->state == OUT_READY &&
	       net_conn_writable(p->out->c)) {
		struct frame *f = p->head;
		const void *w;
		size_t wlen, nframes = 0;
		int rc;

		kv_buf_reset(&t->scratch);
		if (f->len >= COALESCE_MAX || f->next == NULL) {
			p->head = f->next;
			w = f->data;
			wlen = f->len;
			nframes = 1;
		} else {
			while (f != NULL && f->len < COALESCE_MAX &&
			       t->scratch.len + f->len <= COALESCE_MAX) {
				if (kv_buf_append(&t->scratch, f->data,
						  f->len) != 0)
					break;
				p->head = f->next;
				p->queued -= f->len;
				free(f);
				f = p->head;
				nframes++;
			}
			if (nframes == 0)
				return; /* out of memory; retry later */
			f = NULL;
			w = t->scratch.base;
			wlen = t->scratch.len;
		}
		if (p->head == NULL)
			p->tail = NULL;
		rc = net_conn_write(p->out->c, w, wlen);
		if (f != NULL) {
			p->queued -= f->len;
			free(f);
		}
		if (rc != 0) {
			t->st.dropped += nframes;
			break;
		}
		t->st.sent += nframes;
	}
	release_scratch(t);
}

static void on_backoff(uv_timer_t *h)
{
	struct peer *p = container_of(h, struct peer, timer);
	p->state = OUT_IDLE;
	kick(p);
}

static void backoff(struct peer *p)
{
	struct peer_transport *t = p->t;
	uint64_t d = p->backoff_ms;

	d = d / 2 + next_rand(t) % (d / 2 + 1);
	p->backoff_ms *= 2;
	if (p->backoff_ms > t->cfg.backoff_max_ms)
		p->backoff_ms = t->cfg.backoff_max_ms;
	p->state = OUT_BACKOFF;
	uv_timer_start(&p->timer, on_backoff, d, 0);
}

static void on_connect(struct net_conn *c, int status, const char *alpn,
		       void *data)
{
	struct peer *p = data;
	struct peer_transport *t = p->t;
	struct pconn *pc;
	unsigned char hello[FRAME_HDR + HELLO_BODY];

	(void)alpn;
	if (status != 0) {
		p->state = OUT_IDLE;
		if (t->closing || p->removed)
			return;
		if (status == KV_EPERM) {
			/* The server's certificate: a configuration error
			 * or an impostor, worth a warning and a count. */
			t->st.refused_conns++;
			KV_WARN(MOD, "peer connection refused",
				"member=%016" PRIx64 " host=%s port=%u dir=out"
				" reason=\"server certificate not accepted\"",
				p->id, p->url.host, p->url.port);
		} else {
			KV_DEBUG(MOD, "peer connect failed",
				 "member=%016" PRIx64 " host=%s port=%u err=%s",
				 p->id, p->url.host, p->url.port,
				 kv_errname(status));
		}
		if (p->stale) {
			p->stale = false;
			kick(p);
		} else {
			backoff(p);
		}
		return;
	}
	if (t->closing || p->removed || p->stale) {
		net_conn_close(c, "peer transport closing or member changed");
		p->state = OUT_IDLE;
		p->stale = false;
		if (!t->closing)
			kick(p);
		return;
	}
	pc = calloc(1, sizeof(*pc));
	if (pc == NULL) {
		net_conn_close(c, "out of memory");
		backoff(p);
		return;
	}
	pc->t = t;
	pc->c = c;
	pc->peer = p;
	pc->outgoing = true;
	kv_buf_init(&pc->in);
	pc->next = t->conns;
	if (t->conns != NULL)
		t->conns->prev = pc;
	t->conns = pc;
	net_conn_set_handler(c, &handler, pc);
	p->out = pc;
	p->state = OUT_HELLO;
	put_hello(hello, t->cfg.cluster_id, t->cfg.self_id);
	(void)net_conn_write(c, hello, sizeof(hello));
}

static void dial(struct peer *p)
{
	struct peer_transport *t = p->t;
	int rc;

	p->state = OUT_CONNECTING;
	rc = net_server_connect(t->srv, &p->url,
				p->url.tls ? t->cfg.client_tls : NULL, NULL,
				on_connect, p);
	if (rc != 0) {
		KV_WARN(MOD, "cannot dial peer",
			"member=%016" PRIx64 " host=%s port=%u err=%s", p->id,
			p->url.host, p->url.port, kv_errname(rc));
		backoff(p);
	}
}

static void on_flush_check(uv_check_t *h)
{
	struct peer_transport *t =
		container_of(h, struct peer_transport, flush_check);

	uv_check_stop(&t->flush_check);
	uv_idle_stop(&t->flush_idle);
	t->flush_scheduled = false;
	for (size_t i = 0; i < t->npeers; i++) {
		struct peer *p = t->peers[i];
		if (p->dirty) {
			p->dirty = false;
			pump(p);
		}
	}
}

static void on_flush_idle(uv_idle_t *h)
{
	(void)h; /* only keeps poll from blocking until the check runs */
}

/* Moves the peer's queue along: dials when idle; when ready, writes what
 * this loop iteration queued once the iteration's callbacks are done. */
static void kick(struct peer *p)
{
	struct peer_transport *t = p->t;

	if (t->closing || p->removed || p->head == NULL)
		return;
	if (p->state == OUT_IDLE) {
		dial(p);
	} else if (p->state == OUT_READY) {
		p->dirty = true;
		if (!t->flush_scheduled) {
			t->flush_scheduled = true;
			uv_check_start(&t->flush_check, on_flush_check);
			uv_idle_start(&t->flush_idle, on_flush_idle);
		}
	}
}

int peer_transport_send2(struct peer_transport *t, uint64_t to, uint8_t type,
			 const void *a, size_t alen, const void *b,
			 size_t blen)
{
	struct peer *p;
	struct frame *f;
	size_t flen;

	if (t->closing)
		return KV_ECLOSED;
	if (type == 0 || type == PEER_MSG_HELLO)
		return KV_EINVAL;
	p = find_peer(t, to);
	if (p == NULL || p->removed)
		return KV_ENOTFOUND;
	if (alen >= t->cfg.max_frame || blen >= t->cfg.max_frame - alen)
		return KV_ETOOBIG; /* 1 + alen + blen > max_frame */
	flen = FRAME_HDR + alen + blen;
	if (p->queued + flen > t->cfg.max_queue_bytes) {
		t->st.dropped++;
		return KV_EBUSY;
	}
	f = malloc(sizeof(*f) + flen);
	if (f == NULL)
		return KV_ENOMEM;
	f->next = NULL;
	f->len = flen;
	kv_store_u32le(f->data, (uint32_t)(1 + alen + blen));
	f->data[4] = type;
	if (alen > 0)
		memcpy(f->data + FRAME_HDR, a, alen);
	if (blen > 0)
		memcpy(f->data + FRAME_HDR + alen, b, blen);
	if (p->tail != NULL)
		p->tail->next = f;
	else
		p->head = f;
	p->tail = f;
	p->queued += flen;
	kick(p);
	return 0;
}

int peer_transport_send(struct peer_transport *t, uint64_t to, uint8_t type,
			const void *body, size_t len)
{
	return peer_transport_send2(t, to, type, body, len, NULL, 0);
}

size_t peer_transport_pending(struct peer_transport *t, uint64_t to)
{
	struct peer *p = find_peer(t, to);
	if (p == NULL || p->removed)
		return 0;
	return p->queued + (p->out != NULL ? net_conn_pending(p->out->c) : 0);
}

/* ---- receiving --------------------------------------------------------- */

/* The acceptor's check of the dialler's HELLO. */
static bool accept_hello(struct pconn *pc, const unsigned char *body,
			 size_t len)
{
	struct peer_transport *t = pc->t;
	unsigned char hello[FRAME_HDR + HELLO_BODY];
	uint64_t cluster, id;
	struct peer *p;
	char why[200];

	if (len != HELLO_BODY || body[0] != HELLO_VERSION) {
		refuse(pc, 0, "malformed HELLO (len %zu, version %u)", len,
		       len > 0 ? (unsigned)body[0] : 0u);
		return false;
	}
	cluster = kv_load_u64le(body + 1);
	id = kv_load_u64le(body + 9);
	if (cluster != t->cfg.cluster_id) {
		refuse(pc, id, "cluster id mismatch: got %016" PRIx64
			       ", want %016" PRIx64, cluster,
		       t->cfg.cluster_id);
		return false;
	}
	if (id == t->cfg.self_id) {
		refuse(pc, id, "member id is our own");
		return false;
	}
	p = find_peer(t, id);
	if (p == NULL || p->removed) {
		refuse(pc, id, "unknown member id");
		return false;
	}
	if (net_conn_peer_check_host(pc->c, p->url.host, why, sizeof(why)) ==
	    KV_EPERM) {
		refuse(pc, id, "certificate does not identify member %s (%s)",
		       p->url.host, why);
		return false;
	}
	pc->authed = true;
	pc->from = id;
	close_accepted(t, id, pc, "replaced by a newer connection");
	KV_DEBUG(MOD, "peer connection accepted",
		 "peer=%s member=%016" PRIx64, net_conn_peer(pc->c), id);
	put_hello(hello, t->cfg.cluster_id, t->cfg.self_id);
	return net_conn_write(pc->c, hello, sizeof(hello)) == 0;
}

/* The dialler's check of the acceptor's answer. */
static bool answer_hello(struct pconn *pc, const unsigned char *body,
			 size_t len)
{
	struct peer_transport *t = pc->t;
	struct peer *p = pc->peer;
	uint64_t cluster, id;

	if (p == NULL) {
		net_conn_close(pc->c, "member changed");
		return false;
	}
	if (len != HELLO_BODY || body[0] != HELLO_VERSION) {
		refuse(pc, p->id, "malformed HELLO answer");
		return false;
	}
	cluster = kv_load_u64le(body + 1);
	id = kv_load_u64le(body + 9);
	if (cluster != t->cfg.cluster_id || id != p->id) {
		refuse(pc, p->id,
		       "peer answered as cluster %016" PRIx64
		       " member %016" PRIx64, cluster, id);
		return false;
	}
	pc->authed = true;
	pc->from = id;
	p->state = OUT_READY;
	p->backoff_ms = t->cfg.backoff_min_ms;
	t->st.connects++;
	KV_DEBUG(MOD, "peer connected", "peer=%s member=%016" PRIx64,
		 net_conn_peer(pc->c), id);
	pump(p);
	return true;
}

/* Handles one complete frame; false when the connection must stop. */
static bool on_frame(struct pconn *pc, uint8_t type,
		     const unsigned char *body, size_t len)
{
	struct peer_transport *t = pc->t;

	if (!pc->authed) {
		if (type != PEER_MSG_HELLO) {
			refuse(pc, 0, "first frame is type %u, not HELLO",
			       (unsigned)type);
			return false;
		}
		return pc->outgoing ? answer_hello(pc, body, len)
				    : accept_hello(pc, body, len);
	}
	if (type == 0 || type == PEER_MSG_HELLO) {
		KV_WARN(MOD, "peer protocol error",
			"peer=%s member=%016" PRIx64 " reason=\"frame type %u\"",
			net_conn_peer(pc->c), pc->from, (unsigned)type);
		net_conn_close(pc->c, NULL);
		return false;
	}
	t->st.received++;
	t->on_message(t->data, pc->from, type, body, len);
	return !t->closing && !net_conn_closing(pc->c);
}

/* Parses the complete frames at the start of buf; returns the bytes
 * consumed and sets *stop when the connection must not read on. Frame
 * lengths are checked as soon as the header is there, before any of the
 * body is kept. */
static size_t parse(struct pconn *pc, const unsigned char *buf, size_t n,
		    bool *stop)
{
	size_t off = 0;

	*stop = false;
	while (n - off >= 4) {
		uint32_t len = kv_load_u32le(buf + off);
		size_t limit = pc->authed ? pc->t->cfg.max_frame
					  : PRE_AUTH_MAX;
		if (len == 0 || len > limit) {
			if (!pc->authed) {
				refuse(pc, 0,
				       "frame length %" PRIu32
				       " before HELLO (max %zu)", len, limit);
			} else {
				KV_WARN(MOD, "peer frame too large",
					"peer=%s member=%016" PRIx64
					" len=%" PRIu32 " max=%zu",
					net_conn_peer(pc->c), pc->from, len,
					limit);
				net_conn_abort(pc->c, NULL);
			}
			*stop = true;
			return off;
		}
		if (n - off - 4 < len)
			break;
		off += 4 + (size_t)len;
		if (!on_frame(pc, buf[off - len], buf + off - len + 1,
			      (size_t)len - 1)) {
			*stop = true;
			return off;
		}
	}
	return off;
}

static void on_data(void *data, const char *p, size_t n)
{
	struct pconn *pc = data;
	const unsigned char *q = (const unsigned char *)p;
	size_t used;
	bool stop;

	if (pc->t->closing || net_conn_closing(pc->c))
		return;
	if (pc->in.len == 0) {
		used = parse(pc, q, n, &stop);
		if (stop)
			return;
		q += used;
		n -= used;
		if (n == 0)
			return;
	}
	if (kv_buf_append(&pc->in, q, n) != 0) {
		net_conn_abort(pc->c, "out of memory");
		return;
	}
	used = parse(pc, pc->in.base, pc->in.len, &stop);
	if (stop)
		return;
	kv_buf_consume(&pc->in, used);
	if (pc->in.len == 0 && pc->in.cap > SCRATCH_KEEP) {
		kv_buf_free(&pc->in);
	} else if (pc->in.len >= 4) {
		/* Room for the rest of this frame at once. */
		size_t want = 4 + (size_t)kv_load_u32le(pc->in.base);
		if (want > pc->in.len)
			(void)kv_buf_reserve(&pc->in, want - pc->in.len);
	}
}

static void on_writable(void *data)
{
	struct pconn *pc = data;
	if (pc->peer != NULL && pc->peer->out == pc)
		pump(pc->peer);
}

static bool is_busy(void *data)
{
	struct pconn *pc = data;
	return pc->authed; /* authenticated: no idle timeout */
}

static void on_conn_close(void *data)
{
	struct pconn *pc = data;
	struct peer_transport *t = pc->t;
	struct peer *p = pc->peer;

	if (pc->prev != NULL)
		pc->prev->next = pc->next;
	else
		t->conns = pc->next;
	if (pc->next != NULL)
		pc->next->prev = pc->prev;
	if (p != NULL && p->out == pc) {
		p->out = NULL;
		if (!t->closing && !p->removed) {
			if (!pc->authed)
				KV_WARN(MOD, "peer closed before answering HELLO",
					"peer=%s member=%016" PRIx64,
					net_conn_peer(pc->c), p->id);
			if (p->stale) {
				p->stale = false;
				p->state = OUT_IDLE;
				kick(p);
			} else {
				backoff(p);
			}
		} else {
			p->state = OUT_IDLE;
		}
	}
	kv_buf_free(&pc->in);
	free(pc);
	if (t->closing) {
		t->live--;
		maybe_finish(t);
	}
}

/* ---- accepting --------------------------------------------------------- */

static void on_ready(struct net_conn *c, const char *alpn, void *data)
{
	struct peer_transport *t = data;
	struct pconn *pc;

	(void)alpn;
	if (t->closing) {
		net_conn_close(c, "peer transport closing");
		return;
	}
	pc = calloc(1, sizeof(*pc));
	if (pc == NULL) {
		net_conn_close(c, "out of memory");
		return;
	}
	pc->t = t;
	pc->c = c;
	kv_buf_init(&pc->in);
	pc->next = t->conns;
	if (t->conns != NULL)
		t->conns->prev = pc;
	t->conns = pc;
	net_conn_set_handler(c, &handler, pc);
}

static void on_tls_error(const char *peer, int err, const char *msg,
			 void *data)
{
	struct peer_transport *t = data;
	t->st.refused_conns++;
	KV_WARN(MOD, "peer connection refused",
		"peer=%s dir=in reason=\"TLS handshake: %s\" err=%s", peer, msg,
		kv_errname(err));
}

/* ---- members ----------------------------------------------------------- */

static int check_members(const struct peer_transport_config *cfg,
			 const struct peer_member *m, size_t n)
{
	bool self = false;

	for (size_t i = 0; i < n; i++) {
		if (m[i].id == 0)
			return KV_EINVAL;
		for (size_t j = 0; j < i; j++)
			if (m[j].id == m[i].id)
				return KV_EINVAL;
		if (m[i].id == cfg->self_id) {
			self = true;
			continue;
		}
		if (m[i].url.tls && cfg->client_tls == NULL)
			return KV_EINVAL;
	}
	return self ? 0 : KV_EINVAL;
}

static void set_peer(struct peer *p, const struct peer_member *m)
{
	memcpy(p->name, m->name, sizeof(p->name));
	p->name[sizeof(p->name) - 1] = '\0';
	p->url = m->url;
}

int peer_transport_set_members(struct peer_transport *t,
			       const struct peer_member *members,
			       size_t nmembers)
{
	struct peer **arr, **fresh;
	size_t nfresh = 0, k;
	int rc;

	if (t->closing)
		return KV_ECLOSED;
	if ((rc = check_members(&t->cfg, members, nmembers)) != 0) {
		KV_ERROR(MOD, "bad peer member list", "err=%s",
			 kv_errname(rc));
		return rc;
	}
	fresh = calloc(nmembers + 1, sizeof(*fresh));
	if (fresh == NULL)
		return KV_ENOMEM;
	for (size_t i = 0; i < nmembers; i++) {
		struct peer *p;
		if (members[i].id == t->cfg.self_id ||
		    find_peer(t, members[i].id) != NULL)
			continue;
		p = calloc(1, sizeof(*p));
		if (p == NULL)
			goto err_after_fresh;
		p->t = t;
		p->id = members[i].id;
		p->backoff_ms = t->cfg.backoff_min_ms;
		set_peer(p, &members[i]);
		fresh[nfresh++] = p;
	}
	arr = realloc(t->peers, (t->npeers + nfresh + 1) * sizeof(*arr));
	if (arr == NULL)
		goto err_after_fresh;
	t->peers = arr;
	/* Nothing fails from here on. */
	for (size_t i = 0; i < t->npeers; i++) {
		struct peer *p = t->peers[i];
		const struct peer_member *m = NULL;
		for (k = 0; k < nmembers; k++)
			if (members[k].id == p->id)
				m = &members[k];
		if (m == NULL) {
			if (p->removed)
				continue;
			p->removed = true;
			drop_queue(p);
			if (p->state == OUT_BACKOFF) {
				uv_timer_stop(&p->timer);
				p->state = OUT_IDLE;
			}
			if (p->out != NULL)
				net_conn_close(p->out->c, "member removed");
			close_accepted(t, p->id, NULL, "member removed");
			KV_INFO(MOD, "peer removed", "member=%016" PRIx64,
				p->id);
			continue;
		}
		p->removed = false;
		if (!same_url(&p->url, &m->url)) {
			set_peer(p, m);
			if (p->state == OUT_CONNECTING)
				p->stale = true;
			else if (p->out != NULL)
				net_conn_close(p->out->c, "peer URL changed");
			close_accepted(t, p->id, NULL, "peer URL changed");
		} else {
			set_peer(p, m);
		}
		kick(p);
	}
	for (size_t i = 0; i < nfresh; i++) {
		uv_timer_init(t->cfg.loop, &fresh[i]->timer);
		t->peers[t->npeers++] = fresh[i];
	}
	free(fresh);
	return 0;

err_after_fresh:
	for (size_t i = 0; i < nfresh; i++)
		free(fresh[i]);
	free(fresh);
	return KV_ENOMEM;
}

/* ---- life cycle -------------------------------------------------------- */

int peer_transport_new(const struct peer_transport_config *cfg,
		       const struct peer_member *members, size_t nmembers,
		       peer_on_message on_message, void *data,
		       struct peer_transport **out)
{
	struct net_server_config ncfg;
	struct peer_transport *t;
	int rc;

	if (cfg == NULL || cfg->loop == NULL || cfg->self_id == 0 ||
	    on_message == NULL || out == NULL ||
	    (cfg->nlisten > 0 && cfg->listen == NULL) ||
	    (cfg->max_frame != 0 && cfg->max_frame < 2) ||
	    (cfg->max_frame > UINT32_MAX))
		return KV_EINVAL;
	for (size_t i = 0; i < cfg->nlisten; i++)
		if (cfg->listen[i].tls && cfg->server_tls == NULL) {
			KV_ERROR(MOD, "peer listen URL is https but no peer "
				      "server certificate is set",
				 "host=%s port=%u", cfg->listen[i].host,
				 cfg->listen[i].port);
			return KV_EINVAL;
		}
	if ((rc = check_members(cfg, members, nmembers)) != 0) {
		KV_ERROR(MOD, "bad peer member list",
			 "err=%s hint=\"ids non-zero and distinct, self "
			 "included, client TLS context for https members\"",
			 kv_errname(rc));
		return rc;
	}
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return KV_ENOMEM;
	t->cfg = *cfg;
	t->cfg.listen = NULL; /* not kept */
	if (t->cfg.max_frame == 0)
		t->cfg.max_frame = (size_t)64 << 20;
	if (t->cfg.max_queue_bytes == 0)
		t->cfg.max_queue_bytes = (size_t)64 << 20;
	if (t->cfg.backoff_min_ms == 0)
		t->cfg.backoff_min_ms = 50;
	if (t->cfg.backoff_max_ms == 0)
		t->cfg.backoff_max_ms = 2000;
	if (t->cfg.backoff_max_ms < t->cfg.backoff_min_ms)
		t->cfg.backoff_max_ms = t->cfg.backoff_min_ms;
	if (t->cfg.handshake_timeout_ms == 0)
		t->cfg.handshake_timeout_ms = 10000;
	t->on_message = on_message;
	t->data = data;
	t->rng = (uv_hrtime() ^ (cfg->self_id * 0x9e3779b97f4a7c15ull)) | 1;
	kv_buf_init(&t->scratch);

	memset(&ncfg, 0, sizeof(ncfg));
	ncfg.idle_timeout_ms = t->cfg.handshake_timeout_ms;
	ncfg.keepalive_s = KEEPALIVE_S;
	ncfg.user_timeout_ms = USER_TIMEOUT_MS;
	ncfg.on_tls_error = on_tls_error;
	rc = net_server_new(cfg->loop, &ncfg, on_ready, t, &t->srv);
	if (rc != 0) {
		free(t);
		return rc;
	}
	uv_check_init(cfg->loop, &t->flush_check);
	uv_idle_init(cfg->loop, &t->flush_idle);
	for (size_t i = 0; i < cfg->nlisten; i++) {
		rc = net_server_listen(t->srv, &cfg->listen[i],
				       cfg->server_tls);
		if (rc != 0)
			goto err_after_srv;
	}
	rc = peer_transport_set_members(t, members, nmembers);
	if (rc != 0)
		goto err_after_srv;
	t->cfg.nlisten = cfg->nlisten;
	*out = t;
	return 0;

err_after_srv:
	/* The same path as peer_transport_close, without a callback. */
	peer_transport_close(t, NULL, NULL);
	return rc;
}

uint16_t peer_transport_port(struct peer_transport *t, size_t i)
{
	if (i >= t->cfg.nlisten || t->closing)
		return 0;
	return net_server_port(t->srv, i);
}

void peer_transport_stats(struct peer_transport *t,
			  struct peer_transport_stats *out)
{
	*out = t->st;
}

static void maybe_finish(struct peer_transport *t)
{
	void (*cb)(void *data);
	void *data;

	if (!t->closing || !t->srv_done || t->live > 0)
		return;
	assert(t->conns == NULL);
	for (size_t i = 0; i < t->npeers; i++)
		free(t->peers[i]);
	free(t->peers);
	kv_buf_free(&t->scratch);
	cb = t->close_cb;
	data = t->close_data;
	free(t);
	if (cb != NULL)
		cb(data);
}

static void on_timer_close(uv_handle_t *h)
{
	struct peer *p = container_of((uv_timer_t *)h, struct peer, timer);
	struct peer_transport *t = p->t;
	t->live--;
	maybe_finish(t);
}

static void on_flush_close(uv_handle_t *h)
{
	struct peer_transport *t = h->data;
	t->live--;
	maybe_finish(t);
}

static void on_srv_done(void *data)
{
	struct peer_transport *t = data;
	t->srv_done = true;
	maybe_finish(t);
}

void peer_transport_close(struct peer_transport *t, void (*cb)(void *data),
			  void *data)
{
	assert(!t->closing);
	if (t->closing)
		return;
	t->closing = true;
	t->close_cb = cb;
	t->close_data = data;
	KV_DEBUG(MOD, "peer transport closing", "conns=%zu",
		 net_server_conn_count(t->srv));
	for (struct pconn *pc = t->conns; pc != NULL; pc = pc->next)
		t->live++;
	for (size_t i = 0; i < t->npeers; i++) {
		struct peer *p = t->peers[i];
		drop_queue(p);
		t->live++;
		uv_close((uv_handle_t *)&p->timer, on_timer_close);
	}
	t->live += 2;
	t->flush_check.data = t->flush_idle.data = t;
	uv_close((uv_handle_t *)&t->flush_check, on_flush_close);
	uv_close((uv_handle_t *)&t->flush_idle, on_flush_close);
	net_server_shutdown(t->srv, CLOSE_GRACE_MS, on_srv_done, t);
}

/* Unit tests for the peer transport (raft/transport.c): several transports
 * in one process on one loop, on 127.0.0.1 port 0, plaintext and mutual
 * TLS with a throw-away PKI made by the openssl CLI. Every wait is bounded
 * by a timer, so a hang fails the test instead of blocking ctest. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/buf.h"
#include "common/log.h"
#include "kv/errors.h"
#include "kvraft/transport.h"
#include "net/conn.h"
#include "net/tls.h"

#define WAIT_MS 10000
#define MAXN 4
#define CLUSTER 0xc1c1c1c1c1c1c1c1ull

/* ---- test PKI ---------------------------------------------------------- */

static char pki[256];

static const char *pki_path(const char *name)
{
	static char bufs[8][512];
	static int i;
	char *b = bufs[i++ % 8];
	snprintf(b, 512, "%s/%s", pki, name);
	return b;
}

static int make_pki(void **state)
{
	char cmd[4096];
	(void)state;
	snprintf(pki, sizeof(pki), "/tmp/kv-test-transport-XXXXXX");
	if (mkdtemp(pki) == NULL)
		return -1;
	snprintf(cmd, sizeof(cmd),
		 "(set -e; cd %s; "
		 "ca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
		 "-nodes -days 30 -subj \"/CN=$2\" -keyout $1.key -out $1.crt "
		 "-addext basicConstraints=critical,CA:TRUE "
		 "-addext keyUsage=critical,keyCertSign,cRLSign; }; "
		 "leaf() { printf 'basicConstraints=CA:FALSE\\nkeyUsage=critical,digitalSignature\\n"
		 "extendedKeyUsage=serverAuth,clientAuth\\nsubjectAltName=IP:127.0.0.1\\n' > $1.ext; "
		 "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
		 "-subj \"/CN=$1\" -keyout $1.key -out $1.csr; "
		 "openssl x509 -req -in $1.csr -CA $2.crt -CAkey $2.key -CAcreateserial "
		 "-days 30 -extfile $1.ext -out $1.crt; }; "
		 "ca ca 'peer CA'; ca other 'other CA'; "
		 "leaf m1 ca; leaf m2 ca; leaf m3 ca; leaf m4 ca; leaf rogue other)"
		 " >/dev/null 2>&1",
		 pki);
	return system(cmd) == 0 ? 0 : -1;
}

static int remove_pki(void **state)
{
	char cmd[512];
	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", pki);
	return system(cmd) == 0 ? 0 : -1;
}

static struct tls_ctx *make_ctx(bool server, const char *cert,
				const char *ca)
{
	char cf[64], kf[64], caf[64];
	struct tls_ctx *ctx = NULL;
	char err[256];
	int rc;

	snprintf(cf, sizeof(cf), "%s.crt", cert);
	snprintf(kf, sizeof(kf), "%s.key", cert);
	snprintf(caf, sizeof(caf), "%s.crt", ca);
	struct tls_config c = {
		.cert_file = pki_path(cf),
		.key_file = pki_path(kf),
		.trusted_ca_file = pki_path(caf),
		.client_cert_auth = server,
		.alpn = "",
	};
	rc = server ? tls_ctx_new_server(&c, &ctx, err, sizeof(err))
		    : tls_ctx_new_client(&c, &ctx, err, sizeof(err));
	if (rc != 0)
		fail_msg("tls ctx %s: %s", cert, err);
	return ctx;
}

/* ---- the loop and bounded waits --------------------------------------- */

static uv_loop_t loop;

static void on_deadline(uv_timer_t *t)
{
	*(bool *)t->data = true;
}

/* Runs the loop until pred(arg) holds or ms pass; returns pred(arg). */
static bool wait_for(bool (*pred)(void *), void *arg, uint64_t ms)
{
	uv_timer_t tm;
	bool fired = false;

	uv_timer_init(&loop, &tm);
	tm.data = &fired;
	uv_timer_start(&tm, on_deadline, ms, 0);
	while (!pred(arg) && !fired)
		uv_run(&loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&tm, NULL);
	uv_run(&loop, UV_RUN_NOWAIT); /* runs the close */
	return pred(arg);
}

static bool never(void *arg)
{
	(void)arg;
	return false;
}

static void run_for(uint64_t ms)
{
	(void)wait_for(never, NULL, ms);
}

/* ---- nodes ------------------------------------------------------------- */

struct rx {
	uint64_t from;
	uint8_t type;
	uint32_t seq;
	size_t len;
};

struct node {
	struct peer_transport *t;
	uint64_t id;
	bool tls;
	const char *cert;  /* m1.. or rogue */
	const char *ca;    /* CA the node trusts */
	struct tls_ctx *stls, *ctls;
	struct rx *rx;
	size_t nrx, caprx;
	size_t bad_bodies;
	uint32_t last_seq[16]; /* per sender id (< 16), for order */
	size_t out_of_order;
	bool closed;
	uint16_t port;
};

static void on_message(void *data, uint64_t from, uint8_t type,
		       const void *body, size_t len)
{
	struct node *n = data;
	const unsigned char *b = body;
	uint32_t seq = 0;

	if (len >= 4) {
		seq = kv_load_u32le(b);
		for (size_t i = 4; i < len; i++)
			if (b[i] != (unsigned char)(seq + i)) {
				n->bad_bodies++;
				break;
			}
	}
	if (from < 16) {
		if (seq != 0 && seq <= n->last_seq[from])
			n->out_of_order++;
		if (seq != 0)
			n->last_seq[from] = seq;
	}
	if (n->nrx == n->caprx) {
		n->caprx = n->caprx ? n->caprx * 2 : 64;
		n->rx = realloc(n->rx, n->caprx * sizeof(*n->rx));
		assert_non_null(n->rx);
	}
	n->rx[n->nrx++] = (struct rx){ from, type, seq, len };
}

/* A body of len bytes (>= 4) carrying seq and a checkable pattern. */
static unsigned char *make_body(uint32_t seq, size_t len)
{
	unsigned char *b = malloc(len < 4 ? 4 : len);
	assert_non_null(b);
	kv_store_u32le(b, seq);
	for (size_t i = 4; i < len; i++)
		b[i] = (unsigned char)(seq + i);
	return b;
}

static int send_seq(struct node *n, uint64_t to, uint32_t seq, size_t len)
{
	unsigned char *b = make_body(seq, len);
	int rc;
	/* Exercise send2 for half the messages. */
	if (len > 8 && (seq & 1))
		rc = peer_transport_send2(n->t, to, PEER_MSG_RAFT, b, 8,
					  b + 8, len - 8);
	else
		rc = peer_transport_send(n->t, to, PEER_MSG_RAFT, b, len);
	free(b);
	return rc;
}

static struct peer_transport_config base_cfg(struct node *n)
{
	struct peer_transport_config c;
	memset(&c, 0, sizeof(c));
	c.loop = &loop;
	c.cluster_id = CLUSTER;
	c.self_id = n->id;
	c.backoff_min_ms = 20;
	c.backoff_max_ms = 200;
	c.handshake_timeout_ms = 3000;
	return c;
}

static struct peer_member member(uint64_t id, bool tls, const char *host,
				 uint16_t port)
{
	struct peer_member m;
	memset(&m, 0, sizeof(m));
	m.id = id;
	snprintf(m.name, sizeof(m.name), "m%llu", (unsigned long long)id);
	m.url.tls = tls;
	snprintf(m.url.host, sizeof(m.url.host), "%s", host);
	m.url.port = port;
	return m;
}

/* Starts node n listening on 127.0.0.1:port (0: any) with only itself
 * as member; cfg may be NULL (defaults). */
static int node_try_start(struct node *n,
			  const struct peer_transport_config *cfg,
			  uint16_t port);

static void node_start(struct node *n, const struct peer_transport_config *cfg,
		       uint16_t port)
{
	assert_int_equal(node_try_start(n, cfg, port), 0);
}

/* A port below the usual ephemeral range (32768-60999) that is free now:
 * one another process's outgoing connection cannot take between our
 * close and reopen of it. Starts n there. */
static void node_start_low_port(struct node *n)
{
	uint16_t base = (uint16_t)(20000 + (uv_hrtime() / 1000) % 10000);
	for (int i = 0; i < 200; i++)
		if (node_try_start(n, NULL, (uint16_t)(base + i * 7)) == 0)
			return;
	fail_msg("no free port below 32768");
}

static int node_try_start(struct node *n,
			  const struct peer_transport_config *cfg,
			  uint16_t port)
{
	struct peer_transport_config c = cfg ? *cfg : base_cfg(n);
	struct net_url lu;
	struct peer_member self;
	int rc;

	memset(&lu, 0, sizeof(lu));
	lu.tls = n->tls;
	snprintf(lu.host, sizeof(lu.host), "127.0.0.1");
	lu.port = port;
	if (n->tls) {
		if (n->stls == NULL)
			n->stls = make_ctx(true, n->cert, n->ca);
		if (n->ctls == NULL)
			n->ctls = make_ctx(false, n->cert, n->ca);
		c.server_tls = n->stls;
		c.client_tls = n->ctls;
	}
	c.listen = &lu;
	c.nlisten = 1;
	self = member(n->id, n->tls, "127.0.0.1", port);
	rc = peer_transport_new(&c, &self, 1, on_message, n, &n->t);
	if (rc != 0) {
		n->t = NULL;
		run_for(1); /* let the failed transport release itself */
		return rc;
	}
	n->port = peer_transport_port(n->t, 0);
	assert_true(n->port != 0);
	n->closed = false;
	return 0;
}

static void on_closed(void *data)
{
	struct node *n = data;
	n->closed = true;
}

static bool is_closed(void *arg)
{
	return ((struct node *)arg)->closed;
}

static void node_stop(struct node *n)
{
	if (n->t == NULL)
		return;
	peer_transport_close(n->t, on_closed, n);
	assert_true(wait_for(is_closed, n, WAIT_MS));
	n->t = NULL;
}

static void node_free(struct node *n)
{
	node_stop(n);
	tls_ctx_free(n->stls);
	tls_ctx_free(n->ctls);
	free(n->rx);
	memset(n, 0, sizeof(*n));
}

/* Tells every node about every node (their bound ports). */
static void connect_all(struct node *ns, size_t k)
{
	struct peer_member m[MAXN];
	for (size_t i = 0; i < k; i++)
		m[i] = member(ns[i].id, ns[i].tls, "127.0.0.1", ns[i].port);
	for (size_t i = 0; i < k; i++)
		assert_int_equal(peer_transport_set_members(ns[i].t, m, k), 0);
}

struct count_arg {
	struct node *n;
	size_t want;
};

static bool has_count(void *arg)
{
	struct count_arg *a = arg;
	return a->n->nrx >= a->want;
}

static bool wait_rx(struct node *n, size_t want)
{
	struct count_arg a = { n, want };
	return wait_for(has_count, &a, WAIT_MS);
}

static struct peer_transport_stats stats(struct node *n)
{
	struct peer_transport_stats s;
	peer_transport_stats(n->t, &s);
	return s;
}

static bool has_refused(void *arg)
{
	struct node *n = arg;
	return stats(n).refused_conns > 0;
}

static int setup(void **state)
{
	(void)state;
	return uv_loop_init(&loop);
}

static void print_handle(uv_handle_t *h, void *arg)
{
	(void)arg;
	fprintf(stderr, "open handle: %s active=%d closing=%d\n",
		uv_handle_type_name(h->type), uv_is_active(h),
		uv_is_closing(h));
}

static int teardown(void **state)
{
	(void)state;
	uv_run(&loop, UV_RUN_NOWAIT);
	if (uv_loop_close(&loop) == 0)
		return 0;
	uv_walk(&loop, print_handle, NULL);
	return -1;
}

static void init_nodes(struct node *ns, size_t k, bool tls)
{
	static const char *certs[] = { "m1", "m2", "m3", "m4" };
	memset(ns, 0, k * sizeof(*ns));
	for (size_t i = 0; i < k; i++) {
		ns[i].id = i + 1;
		ns[i].tls = tls;
		ns[i].cert = certs[i];
		ns[i].ca = "ca";
	}
}

/* ---- tests ------------------------------------------------------------- */

/* Every node sends to every other one; each receives everything, from the
 * right sender, in order and intact. */
static void all_pairs(bool tls)
{
	struct node ns[3];
	const uint32_t per = 300;

	init_nodes(ns, 3, tls);
	for (int i = 0; i < 3; i++)
		node_start(&ns[i], NULL, 0);
	connect_all(ns, 3);
	for (uint32_t s = 1; s <= per; s++)
		for (int i = 0; i < 3; i++)
			for (int j = 0; j < 3; j++)
				if (i != j)
					assert_int_equal(
						send_seq(&ns[i], ns[j].id, s,
							 4 + (s * 37) % 3000),
						0);
	for (int i = 0; i < 3; i++) {
		assert_true(wait_rx(&ns[i], 2 * per));
		assert_int_equal(ns[i].nrx, 2 * per);
		assert_int_equal(ns[i].bad_bodies, 0);
		assert_int_equal(ns[i].out_of_order, 0);
		for (int j = 0; j < 3; j++)
			if (i != j)
				assert_int_equal(ns[i].last_seq[ns[j].id], per);
		struct peer_transport_stats st = stats(&ns[i]);
		assert_int_equal(st.sent, 2 * per);
		assert_int_equal(st.received, 2 * per);
		assert_int_equal(st.dropped, 0);
		assert_int_equal(st.refused_conns, 0);
		assert_int_equal(st.connects, 2);
		assert_int_equal(peer_transport_pending(ns[i].t,
							ns[(i + 1) % 3].id),
				 0);
	}
	/* Unknown member, self, reserved types. */
	assert_int_equal(peer_transport_send(ns[0].t, 42, PEER_MSG_RAFT, "x",
					     1),
			 KV_ENOTFOUND);
	assert_int_equal(peer_transport_send(ns[0].t, 1, PEER_MSG_RAFT, "x",
					     1),
			 KV_ENOTFOUND);
	assert_int_equal(peer_transport_send(ns[0].t, 2, PEER_MSG_HELLO, "x",
					     1),
			 KV_EINVAL);
	assert_int_equal(peer_transport_send(ns[0].t, 2, 0, "x", 1),
			 KV_EINVAL);
	for (int i = 0; i < 3; i++)
		node_free(&ns[i]);
}

static void test_plain_all_pairs(void **state)
{
	(void)state;
	all_pairs(false);
}

static void test_tls_all_pairs(void **state)
{
	(void)state;
	all_pairs(true);
}

/* Frames right at max_frame pass (over TLS), one byte more is refused by
 * the sender, small and large ones stay in order. */
static void test_large_frames(void **state)
{
	struct node ns[2];
	struct peer_transport_config c;
	const size_t maxf = 4u << 20;

	(void)state;
	init_nodes(ns, 2, true);
	for (int i = 0; i < 2; i++) {
		c = base_cfg(&ns[i]);
		c.max_frame = maxf;
		c.max_queue_bytes = 32u << 20;
		node_start(&ns[i], &c, 0);
	}
	connect_all(ns, 2);
	uint32_t seq = 0;
	for (int r = 0; r < 3; r++) {
		assert_int_equal(send_seq(&ns[0], 2, ++seq, maxf - 1), 0);
		assert_int_equal(send_seq(&ns[0], 2, ++seq, 100), 0);
		assert_int_equal(send_seq(&ns[0], 2, ++seq, maxf / 2 + 3), 0);
	}
	assert_int_equal(send_seq(&ns[0], 2, 999, maxf), KV_ETOOBIG);
	assert_true(peer_transport_pending(ns[0].t, 2) > 0);
	assert_true(wait_rx(&ns[1], seq));
	assert_int_equal(ns[1].nrx, seq);
	assert_int_equal(ns[1].rx[0].len, maxf - 1);
	assert_int_equal(ns[1].rx[1].len, 100);
	assert_int_equal(ns[1].bad_bodies, 0);
	assert_int_equal(ns[1].out_of_order, 0);
	for (int i = 0; i < 2; i++)
		node_free(&ns[i]);
}

/* A receiver with a smaller max_frame refuses an oversized frame by
 * closing that connection (before buffering it); later frames that fit
 * flow again over a new connection. */
static void test_frame_over_max_refused(void **state)
{
	struct node ns[2];
	struct peer_transport_config c;

	(void)state;
	init_nodes(ns, 2, false);
	c = base_cfg(&ns[0]);
	c.max_frame = 1024;
	node_start(&ns[0], &c, 0);
	c = base_cfg(&ns[1]);
	c.max_frame = 1u << 20;
	node_start(&ns[1], &c, 0);
	connect_all(ns, 2);
	assert_int_equal(send_seq(&ns[1], 1, 1, 100), 0);
	assert_true(wait_rx(&ns[0], 1));
	assert_int_equal(send_seq(&ns[1], 1, 2, 512 * 1024), 0);
	run_for(300);
	assert_int_equal(ns[0].nrx, 1);
	assert_int_equal(send_seq(&ns[1], 1, 3, 1000), 0);
	assert_true(wait_rx(&ns[0], 2));
	assert_int_equal(ns[0].rx[1].seq, 3);
	assert_true(stats(&ns[1]).connects >= 2);
	for (int i = 0; i < 2; i++)
		node_free(&ns[i]);
}

/* A member presenting a certificate from another CA is refused by the
 * acceptor's TLS handshake and counted; the others are unaffected. */
static void test_rogue_ca_refused(void **state)
{
	struct node ns[3];

	(void)state;
	init_nodes(ns, 3, true);
	ns[2].cert = "rogue"; /* trusts the peer CA, presents another */
	for (int i = 0; i < 3; i++)
		node_start(&ns[i], NULL, 0);
	connect_all(ns, 3);
	assert_int_equal(send_seq(&ns[2], 1, 1, 10), 0);
	assert_true(wait_for(has_refused, &ns[0], WAIT_MS));
	assert_int_equal(send_seq(&ns[1], 1, 1, 10), 0);
	assert_true(wait_rx(&ns[0], 1));
	run_for(200);
	assert_int_equal(ns[0].nrx, 1);
	assert_int_equal(ns[0].rx[0].from, 2);
	assert_int_equal(stats(&ns[2]).connects, 0);
	/* A rogue that trusts only its own CA refuses node 1's certificate
	 * (and counts it); node 1 still delivers nothing from it. */
	node_stop(&ns[2]);
	tls_ctx_free(ns[2].stls);
	tls_ctx_free(ns[2].ctls);
	ns[2].stls = ns[2].ctls = NULL;
	ns[2].ca = "other";
	node_start(&ns[2], NULL, 0);
	connect_all(ns, 3);
	assert_int_equal(send_seq(&ns[2], 1, 2, 10), 0);
	assert_true(wait_for(has_refused, &ns[2], WAIT_MS));
	run_for(100);
	assert_int_equal(ns[0].nrx, 1);
	assert_int_equal(stats(&ns[2]).connects, 0);
	for (int i = 0; i < 3; i++)
		node_free(&ns[i]);
}

/* A certificate from the right CA that does not cover the host of the
 * claimed member's configured peer URL is refused after the handshake. */
static void test_san_mismatch_refused(void **state)
{
	struct node ns[3];
	struct peer_member m[3];

	(void)state;
	init_nodes(ns, 3, true);
	for (int i = 0; i < 3; i++)
		node_start(&ns[i], NULL, 0);
	connect_all(ns, 3);
	/* Node 1 believes member 3 lives on 127.0.0.2, which m3.crt does
	 * not name (nobody dials it: node 1 never sends to 3). */
	m[0] = member(1, true, "127.0.0.1", ns[0].port);
	m[1] = member(2, true, "127.0.0.1", ns[1].port);
	m[2] = member(3, true, "127.0.0.2", ns[2].port);
	assert_int_equal(peer_transport_set_members(ns[0].t, m, 3), 0);
	assert_int_equal(send_seq(&ns[2], 1, 1, 10), 0);
	assert_true(wait_for(has_refused, &ns[0], WAIT_MS));
	assert_int_equal(send_seq(&ns[1], 1, 1, 10), 0);
	assert_true(wait_rx(&ns[0], 1));
	run_for(100);
	assert_int_equal(ns[0].nrx, 1);
	assert_int_equal(ns[0].rx[0].from, 2);
	for (int i = 0; i < 3; i++)
		node_free(&ns[i]);
}

/* A dialler from another cluster, and one whose member id node 1 does not
 * know, are refused and counted; nothing they send is delivered. */
static void test_wrong_cluster_and_unknown_member(void **state)
{
	struct node ns[3];
	struct peer_transport_config c;
	struct peer_member m[3];

	(void)state;
	init_nodes(ns, 3, false);
	node_start(&ns[0], NULL, 0);
	node_start(&ns[1], NULL, 0);
	c = base_cfg(&ns[2]);
	c.cluster_id = CLUSTER + 1;
	node_start(&ns[2], &c, 0);
	connect_all(ns, 3);
	assert_int_equal(send_seq(&ns[2], 1, 1, 10), 0);
	assert_true(wait_for(has_refused, &ns[0], WAIT_MS));
	assert_int_equal(ns[0].nrx, 0);
	node_stop(&ns[2]);

	/* Node 1 knows members 1 and 2 only; member 3 dials it. */
	uint64_t before = stats(&ns[0]).refused_conns;
	ns[2].closed = false;
	node_start(&ns[2], NULL, 0);
	m[0] = member(1, false, "127.0.0.1", ns[0].port);
	m[1] = member(2, false, "127.0.0.1", ns[1].port);
	assert_int_equal(peer_transport_set_members(ns[0].t, m, 2), 0);
	m[2] = member(3, false, "127.0.0.1", ns[2].port);
	assert_int_equal(peer_transport_set_members(ns[2].t, m, 3), 0);
	assert_int_equal(send_seq(&ns[2], 1, 1, 10), 0);
	struct peer_transport_stats st;
	for (int i = 0; i < 100; i++) {
		run_for(20);
		peer_transport_stats(ns[0].t, &st);
		if (st.refused_conns > before)
			break;
	}
	assert_true(st.refused_conns > before);
	assert_int_equal(ns[0].nrx, 0);
	assert_int_equal(send_seq(&ns[0], 3, 1, 10), KV_ENOTFOUND);
	/* Member 2 still gets through. */
	assert_int_equal(send_seq(&ns[1], 1, 1, 10), 0);
	assert_true(wait_rx(&ns[0], 1));
	assert_int_equal(ns[0].rx[0].from, 2);
	for (int i = 0; i < 3; i++)
		node_free(&ns[i]);
}

/* A peer that never answers: sends queue up to max_queue_bytes, then
 * KV_EBUSY and counted drops; reconnect attempts do not grow anything. */
static void test_dead_peer_queue_bounded(void **state)
{
	struct node ns[2];
	struct peer_transport_config c;
	const size_t limit = 64 * 1024;
	size_t ok = 0, busy = 0;

	(void)state;
	init_nodes(ns, 2, false);
	/* Port 1 (tcpmux): nothing listens there on loopback, and unlike a
	 * freed ephemeral port no parallel test can start listening on it. */
	uint16_t dead_port = 1;
	c = base_cfg(&ns[0]);
	c.max_queue_bytes = limit;
	node_start(&ns[0], &c, 0);
	struct peer_member m[2] = {
		member(1, false, "127.0.0.1", ns[0].port),
		member(2, false, "127.0.0.1", dead_port),
	};
	assert_int_equal(peer_transport_set_members(ns[0].t, m, 2), 0);
	for (uint32_t s = 1; s <= 200; s++) {
		int rc = send_seq(&ns[0], 2, s, 1000);
		if (rc == 0)
			ok++;
		else if (rc == KV_EBUSY)
			busy++;
		else
			fail_msg("send: %d", rc);
		assert_true(peer_transport_pending(ns[0].t, 2) <= limit);
	}
	assert_int_equal(ok, limit / 1005);
	assert_int_equal(busy, 200 - ok);
	assert_int_equal(stats(&ns[0]).dropped, busy);
	run_for(400); /* several reconnect attempts */
	assert_true(peer_transport_pending(ns[0].t, 2) <= limit);
	assert_int_equal(send_seq(&ns[0], 2, 1000, 1000), KV_EBUSY);
	assert_int_equal(stats(&ns[0]).connects, 0);
	assert_int_equal(stats(&ns[0]).sent, 0);
	for (int i = 0; i < 2; i++)
		node_free(&ns[i]);
}

static void raw_written(uv_write_t *w, int status);

/* A fake member 2 that answers HELLO and then never reads again. */
struct stuck {
	uv_tcp_t srv, conn;
	uv_write_t wreq;
	unsigned char hello[22 + 9];
	unsigned char in[64];
	size_t nin;
	bool accepted, answered;
	int closed;
};

static void stuck_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	struct stuck *st = h->data;
	(void)sz;
	*b = uv_buf_init((char *)st->in + st->nin,
			 (unsigned)(sizeof(st->in) - st->nin));
}

static void stuck_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct stuck *st = s->data;
	(void)b;
	if (n <= 0)
		return;
	st->nin += (size_t)n;
	if (st->nin < 22 || st->answered)
		return;
	/* Got node 1's HELLO: answer as member 2 and stop reading. */
	uv_read_stop(s);
	kv_store_u32le(st->hello, 18);
	st->hello[4] = PEER_MSG_HELLO;
	st->hello[5] = 1;
	kv_store_u64le(st->hello + 6, CLUSTER);
	kv_store_u64le(st->hello + 14, 2);
	/* and one message back on node 1's own (dialled) connection */
	kv_store_u32le(st->hello + 22, 5);
	st->hello[26] = PEER_MSG_READ_INDEX;
	kv_store_u32le(st->hello + 27, 77);
	uv_buf_t w = uv_buf_init((char *)st->hello, sizeof(st->hello));
	uv_write(&st->wreq, s, &w, 1, raw_written);
	st->answered = true;
}

static void stuck_on_conn(uv_stream_t *srv, int status)
{
	struct stuck *st = srv->data;
	assert_int_equal(status, 0);
	assert_false(st->accepted);
	uv_tcp_init(&loop, &st->conn);
	st->conn.data = st;
	assert_int_equal(uv_accept(srv, (uv_stream_t *)&st->conn), 0);
	/* A small receive buffer so the kernel holds little. */
	int sz = 4096;
	uv_recv_buffer_size((uv_handle_t *)&st->conn, &sz);
	st->accepted = true;
	uv_read_start((uv_stream_t *)&st->conn, stuck_alloc, stuck_read);
}

static void stuck_closed(uv_handle_t *h)
{
	((struct stuck *)h->data)->closed++;
}

static bool stuck_all_closed(void *arg)
{
	return ((struct stuck *)arg)->closed == 2;
}

/* A member that is connected but stops reading: what the transport holds
 * for it (queue + connection output) stays bounded; sends get KV_EBUSY.
 * A frame the member sends back on the dialled connection is delivered
 * as from that member. */
static void test_stuck_peer_bounded(void **state)
{
	struct node n;
	struct peer_transport_config c;
	struct stuck st;
	struct sockaddr_in a;
	int len = sizeof(a);
	const size_t limit = 256 * 1024;
	/* queue + net's output limit (4 MiB) + one 64 KiB batch */
	const size_t bound = limit + (4u << 20) + 64 * 1024;
	size_t ok = 0;

	(void)state;
	memset(&st, 0, sizeof(st));
	uv_tcp_init(&loop, &st.srv);
	st.srv.data = &st;
	uv_ip4_addr("127.0.0.1", 0, &a);
	assert_int_equal(uv_tcp_bind(&st.srv, (struct sockaddr *)&a, 0), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&st.srv, 4, stuck_on_conn),
			 0);
	uv_tcp_getsockname(&st.srv, (struct sockaddr *)&a, &len);

	init_nodes(&n, 1, false);
	c = base_cfg(&n);
	c.max_queue_bytes = limit;
	node_start(&n, &c, 0);
	struct peer_member m[2] = {
		member(1, false, "127.0.0.1", n.port),
		member(2, false, "127.0.0.1", ntohs(a.sin_port)),
	};
	assert_int_equal(peer_transport_set_members(n.t, m, 2), 0);
	/* Send until refused, letting the loop write in between. */
	for (uint32_t s = 1; s <= 100000; s++) {
		int rc = send_seq(&n, 2, s, 4000);
		if (rc == KV_EBUSY)
			break;
		assert_int_equal(rc, 0);
		ok++;
		assert_true(peer_transport_pending(n.t, 2) <= bound);
		if (s % 16 == 0)
			uv_run(&loop, UV_RUN_NOWAIT);
	}
	assert_true(st.answered);
	assert_true(ok < 100000);
	assert_true(wait_rx(&n, 1));
	assert_int_equal(n.rx[0].from, 2);
	assert_int_equal(n.rx[0].type, PEER_MSG_READ_INDEX);
	assert_int_equal(n.rx[0].seq, 77);
	assert_int_equal(stats(&n).connects, 1);
	run_for(200);
	assert_true(peer_transport_pending(n.t, 2) <= bound);
	assert_true(peer_transport_pending(n.t, 2) >= limit - 4005);
	assert_int_equal(send_seq(&n, 2, 1, 4000), KV_EBUSY);
	assert_true(stats(&n).dropped >= 2);
	node_free(&n);
	uv_close((uv_handle_t *)&st.conn, stuck_closed);
	uv_close((uv_handle_t *)&st.srv, stuck_closed);
	assert_true(wait_for(stuck_all_closed, &st, WAIT_MS));
}

/* A peer closed and recreated on the same port: the queue kept while it
 * was down and later messages are delivered over a new connection. */
static void reconnect(bool tls)
{
	struct node ns[2];

	init_nodes(ns, 2, tls);
	node_start(&ns[0], NULL, 0);
	node_start_low_port(&ns[1]);
	connect_all(ns, 2);
	assert_int_equal(send_seq(&ns[0], 2, 1, 50), 0);
	assert_true(wait_rx(&ns[1], 1));
	uint16_t port = ns[1].port;
	node_stop(&ns[1]);
	run_for(100); /* node 1 notices and backs off */
	for (uint32_t s = 2; s <= 10; s++)
		assert_int_equal(send_seq(&ns[0], 2, s, 50), 0);
	run_for(100);
	ns[1].nrx = 0;
	memset(ns[1].last_seq, 0, sizeof(ns[1].last_seq));
	node_start(&ns[1], NULL, port);
	connect_all(ns, 2);
	assert_true(wait_rx(&ns[1], 9));
	assert_int_equal(ns[1].rx[0].seq, 2);
	assert_int_equal(ns[1].out_of_order, 0);
	assert_int_equal(send_seq(&ns[0], 2, 11, 50), 0);
	assert_int_equal(send_seq(&ns[1], 1, 1, 50), 0);
	assert_true(wait_rx(&ns[1], 10));
	assert_true(wait_rx(&ns[0], 1));
	assert_int_equal(stats(&ns[0]).connects, 2);
	for (int i = 0; i < 2; i++)
		node_free(&ns[i]);
}

static void test_reconnect_plain(void **state)
{
	(void)state;
	reconnect(false);
}

static void test_reconnect_tls(void **state)
{
	(void)state;
	reconnect(true);
}

/* ---- raw sockets -------------------------------------------------------- */

struct raw {
	uv_tcp_t tcp;
	uv_connect_t creq;
	uv_write_t wreq;
	const char *bytes;
	size_t len;
	bool connected, eof, closed;
	size_t nread;
	char rbuf[4096];
};

static void raw_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
	struct raw *r = h->data;
	(void)s;
	*b = uv_buf_init(r->rbuf, sizeof(r->rbuf));
}

static void raw_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct raw *r = st->data;
	(void)b;
	if (n > 0)
		r->nread += (size_t)n;
	else if (n < 0)
		r->eof = true;
}

static void raw_written(uv_write_t *w, int status)
{
	(void)w;
	(void)status;
}

static void raw_connected(uv_connect_t *req, int status)
{
	struct raw *r = req->data;
	uv_buf_t b = uv_buf_init((char *)r->bytes, (unsigned)r->len);
	assert_int_equal(status, 0);
	r->connected = true;
	uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read);
	uv_write(&r->wreq, (uv_stream_t *)&r->tcp, &b, 1, raw_written);
}

static void raw_closed(uv_handle_t *h)
{
	((struct raw *)h->data)->closed = true;
}

static bool raw_eof(void *arg)
{
	return ((struct raw *)arg)->eof;
}

static bool raw_is_closed(void *arg)
{
	return ((struct raw *)arg)->closed;
}

/* Connects to port, writes bytes, and expects the server to close. */
static void raw_expect_close(uint16_t port, const void *bytes, size_t len)
{
	struct raw r;
	struct sockaddr_in a;

	memset(&r, 0, sizeof(r));
	r.bytes = bytes;
	r.len = len;
	uv_tcp_init(&loop, &r.tcp);
	r.tcp.data = &r;
	r.creq.data = &r;
	uv_ip4_addr("127.0.0.1", port, &a);
	assert_int_equal(uv_tcp_connect(&r.creq, &r.tcp,
					(struct sockaddr *)&a, raw_connected),
			 0);
	assert_true(wait_for(raw_eof, &r, WAIT_MS));
	uv_close((uv_handle_t *)&r.tcp, raw_closed);
	assert_true(wait_for(raw_is_closed, &r, WAIT_MS));
}

static bool raw_is_connected(void *arg)
{
	return ((struct raw *)arg)->connected;
}

static void raw_written_free(uv_write_t *w, int status)
{
	(void)status;
	free(w->data);
	free(w);
}

/* Writes n bytes on an open raw connection and lets the loop run, so the
 * transport reads them on their own. */
static void raw_send_part(struct raw *r, const void *p, size_t n)
{
	uv_write_t *w = malloc(sizeof(*w));
	void *copy = malloc(n);
	assert_non_null(w);
	assert_non_null(copy);
	memcpy(copy, p, n);
	w->data = copy;
	uv_buf_t b = uv_buf_init(copy, (unsigned)n);
	assert_int_equal(uv_write(w, (uv_stream_t *)&r->tcp, &b, 1,
				  raw_written_free),
			 0);
	run_for(30);
}

/* Frames cut at every awkward place (inside the length, right after the
 * header, inside the body, several frames in one read) are reassembled
 * and delivered whole, in order, from the member named by the HELLO. */
static void test_split_frames(void **state)
{
	struct node ns[2];
	struct raw r;
	struct sockaddr_in a;
	struct kv_buf w = KV_BUF_INIT;

	(void)state;
	init_nodes(ns, 2, false);
	for (int i = 0; i < 2; i++)
		node_start(&ns[i], NULL, 0);
	connect_all(ns, 2);
	/* HELLO as member 2, then frames 1..4 of 300, 5, 70000, 4 bytes. */
	kv_buf_put_u32le(&w, 18);
	kv_buf_putc(&w, PEER_MSG_HELLO);
	kv_buf_putc(&w, 1);
	kv_buf_put_u64le(&w, CLUSTER);
	kv_buf_put_u64le(&w, 2);
	size_t lens[4] = { 300, 5, 70000, 4 };
	size_t starts[4];
	for (uint32_t i = 0; i < 4; i++) {
		unsigned char *b = make_body(i + 1, lens[i]);
		starts[i] = w.len;
		kv_buf_put_u32le(&w, (uint32_t)(1 + lens[i]));
		kv_buf_putc(&w, PEER_MSG_FORWARD);
		kv_buf_append(&w, b, lens[i]);
		free(b);
	}
	assert_non_null(w.base);

	memset(&r, 0, sizeof(r));
	r.bytes = "";
	uv_tcp_init(&loop, &r.tcp);
	r.tcp.data = &r;
	r.creq.data = &r;
	uv_ip4_addr("127.0.0.1", ns[0].port, &a);
	assert_int_equal(uv_tcp_connect(&r.creq, &r.tcp,
					(struct sockaddr *)&a, raw_connected),
			 0);
	assert_true(wait_for(raw_is_connected, &r, WAIT_MS));
	uv_tcp_nodelay(&r.tcp, 1);
	size_t cuts[] = {
		2,                 /* inside HELLO's length */
		21,                /* HELLO minus its last byte */
		starts[0] + 5,     /* frame 1: just its header */
		starts[0] + 100,   /* inside frame 1's body */
		starts[2] + 3,     /* frames 1 and 2 end, frame 3 cut in len */
		starts[2] + 40000, /* inside frame 3 */
		w.len,             /* the rest with frame 4 */
	};
	size_t from = 0;
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		raw_send_part(&r, w.base + from, cuts[i] - from);
		from = cuts[i];
		if (i == 2) /* HELLO done: node 1 answered with its own */
			assert_int_equal(r.nread, 22);
	}
	assert_true(wait_rx(&ns[0], 4));
	for (uint32_t i = 0; i < 4; i++) {
		assert_int_equal(ns[0].rx[i].from, 2);
		assert_int_equal(ns[0].rx[i].type, PEER_MSG_FORWARD);
		assert_int_equal(ns[0].rx[i].seq, i + 1);
		assert_int_equal(ns[0].rx[i].len, lens[i]);
	}
	assert_int_equal(ns[0].bad_bodies, 0);
	assert_int_equal(stats(&ns[0]).refused_conns, 0);
	uv_close((uv_handle_t *)&r.tcp, raw_closed);
	assert_true(wait_for(raw_is_closed, &r, WAIT_MS));
	kv_buf_free(&w);
	for (int i = 0; i < 2; i++)
		node_free(&ns[i]);
}

/* Random frames after a valid HELLO (random lengths, types, cuts) never
 * crash or wedge the receiver: each connection ends in a clean close at
 * the latest at a trailing run of 0xff (a length over max_frame), and
 * the real member still gets through afterwards. */
static void test_random_after_hello(void **state)
{
	struct node ns[2];
	struct peer_transport_config c;
	unsigned char buf[22 + 600 + 700];
	uint64_t x = uv_hrtime() | 1;

	(void)state;
	init_nodes(ns, 2, false);
	c = base_cfg(&ns[0]);
	c.max_frame = 256;
	node_start(&ns[0], &c, 0);
	node_start(&ns[1], NULL, 0);
	connect_all(ns, 2);
	for (int round = 0; round < 30; round++) {
		size_t n = 22;
		kv_store_u32le(buf, 18);
		buf[4] = PEER_MSG_HELLO;
		buf[5] = 1;
		kv_store_u64le(buf + 6, CLUSTER);
		kv_store_u64le(buf + 14, 2);
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		size_t k = x % 600;
		for (size_t i = 0; i < k; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			/* mostly small lengths, so frames do get delivered */
			buf[n++] = (unsigned char)((i % 4 == 1 || i % 4 == 2 ||
						    i % 4 == 3)
						   ? (x % 3 == 0 ? x >> 8 : 0)
						   : x >> 8);
		}
		memset(buf + n, 0xff, 700);
		n += 700;
		raw_expect_close(ns[0].port, buf, n);
	}
	size_t before = ns[0].nrx;
	run_for(300); /* node 2 redials after its connection was replaced */
	assert_int_equal(send_seq(&ns[1], 1, 1000, 100), 0);
	assert_true(wait_rx(&ns[0], before + 1));
	assert_int_equal(ns[0].rx[ns[0].nrx - 1].from, 2);
	assert_int_equal(ns[0].rx[ns[0].nrx - 1].seq, 1000);
	for (int i = 0; i < 2; i++)
		node_free(&ns[i]);
}

/* Garbage from a raw socket closes only that connection, plaintext and
 * TLS; the members keep talking. Also a raw HELLO followed by a length
 * over max_frame. */
static void garbage(bool tls)
{
	struct node ns[2];
	static const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	unsigned char hello[22 + 5];

	init_nodes(ns, 2, tls);
	for (int i = 0; i < 2; i++)
		node_start(&ns[i], NULL, 0);
	connect_all(ns, 2);
	assert_int_equal(send_seq(&ns[1], 1, 1, 100), 0);
	assert_true(wait_rx(&ns[0], 1));
	uint64_t before = stats(&ns[0]).refused_conns;
	raw_expect_close(ns[0].port, junk, sizeof(junk) - 1);
	assert_true(stats(&ns[0]).refused_conns > before);
	if (!tls) {
		/* A valid HELLO as member 2, then a frame of 2 GiB. */
		kv_store_u32le(hello, 18);
		hello[4] = PEER_MSG_HELLO;
		hello[5] = 1;
		kv_store_u64le(hello + 6, CLUSTER);
		kv_store_u64le(hello + 14, 2);
		kv_store_u32le(hello + 22, 0x80000000u);
		hello[26] = PEER_MSG_RAFT;
		raw_expect_close(ns[0].port, hello, sizeof(hello));
		/* A HELLO claiming member 1 (node 1 itself). */
		kv_store_u64le(hello + 14, 1);
		raw_expect_close(ns[0].port, hello, 22);
	}
	assert_int_equal(send_seq(&ns[1], 1, 2, 100), 0);
	assert_true(wait_rx(&ns[0], 2));
	assert_int_equal(ns[0].rx[1].seq, 2);
	/* With TLS node 2's connection was never disturbed; in plaintext
	 * the raw HELLO claiming member 2 replaced it (nothing
	 * authenticates plaintext peers), so node 2 dialled again. */
	if (tls)
		assert_int_equal(stats(&ns[1]).connects, 1);
	else
		assert_int_equal(stats(&ns[1]).connects, 2);
	for (int i = 0; i < 2; i++)
		node_free(&ns[i]);
}

static void test_garbage_plain(void **state)
{
	(void)state;
	garbage(false);
}

static void test_garbage_tls(void **state)
{
	(void)state;
	garbage(true);
}

/* Closing from inside on_message, with queued output and a peer that is
 * still connecting, releases everything (ASan checks the leaks). */
static void on_message_close(void *data, uint64_t from, uint8_t type,
			     const void *body, size_t len)
{
	struct node *n = data;
	on_message(data, from, type, body, len);
	if (n->nrx == 1)
		peer_transport_close(n->t, on_closed, n);
}

static void test_close_from_callback(void **state)
{
	struct node ns[2];
	struct peer_transport_config c;
	struct net_url lu;
	struct peer_member self;

	(void)state;
	init_nodes(ns, 2, false);
	node_start(&ns[1], NULL, 0);
	c = base_cfg(&ns[0]);
	memset(&lu, 0, sizeof(lu));
	snprintf(lu.host, sizeof(lu.host), "127.0.0.1");
	c.listen = &lu;
	c.nlisten = 1;
	self = member(1, false, "127.0.0.1", 0);
	assert_int_equal(peer_transport_new(&c, &self, 1, on_message_close,
					    &ns[0], &ns[0].t),
			 0);
	ns[0].port = peer_transport_port(ns[0].t, 0);
	connect_all(ns, 2);
	for (uint32_t s = 1; s <= 5; s++)
		assert_int_equal(send_seq(&ns[0], 2, s, 100000), 0);
	assert_int_equal(send_seq(&ns[1], 1, 1, 10), 0);
	assert_int_equal(send_seq(&ns[1], 1, 2, 10), 0);
	assert_true(wait_for(is_closed, &ns[0], WAIT_MS));
	assert_int_equal(ns[0].nrx, 1);
	ns[0].t = NULL;
	for (int i = 0; i < 2; i++)
		node_free(&ns[i]);
}

/* Membership changes: a removed member can neither be sent to nor
 * connect; a member that moved to another port is redialled there; a
 * member added back works again. */
static void test_set_members(void **state)
{
	struct node ns[3];
	struct peer_member m[3];

	(void)state;
	init_nodes(ns, 3, true);
	for (int i = 0; i < 3; i++)
		node_start(&ns[i], NULL, 0);
	connect_all(ns, 3);
	assert_int_equal(send_seq(&ns[0], 2, 1, 10), 0);
	assert_int_equal(send_seq(&ns[0], 3, 1, 10), 0);
	assert_int_equal(send_seq(&ns[2], 1, 1, 10), 0);
	assert_true(wait_rx(&ns[1], 1));
	assert_true(wait_rx(&ns[2], 1));
	assert_true(wait_rx(&ns[0], 1));

	/* Remove member 3 from node 1's view. */
	m[0] = member(1, true, "127.0.0.1", ns[0].port);
	m[1] = member(2, true, "127.0.0.1", ns[1].port);
	assert_int_equal(peer_transport_set_members(ns[0].t, m, 2), 0);
	assert_int_equal(send_seq(&ns[0], 3, 2, 10), KV_ENOTFOUND);
	assert_int_equal(peer_transport_pending(ns[0].t, 3), 0);
	/* Node 1 closed node 3's connection; once node 3 has noticed, its
	 * next message makes it dial again, and node 1 refuses it. */
	run_for(100);
	assert_int_equal(send_seq(&ns[2], 1, 2, 10), 0);
	assert_true(wait_for(has_refused, &ns[0], WAIT_MS));
	assert_int_equal(ns[0].nrx, 1);

	/* Member 2 restarts on another port. */
	node_stop(&ns[1]);
	node_start(&ns[1], NULL, 0);
	connect_all(ns + 1, 1); /* node 2 knows only itself for now */
	m[1] = member(2, true, "127.0.0.1", ns[1].port);
	m[2] = member(3, true, "127.0.0.1", ns[2].port);
	assert_int_equal(peer_transport_set_members(ns[0].t, m, 3), 0);
	assert_int_equal(peer_transport_set_members(ns[1].t, m, 3), 0);
	assert_int_equal(send_seq(&ns[0], 2, 2, 10), 0);
	assert_int_equal(send_seq(&ns[0], 3, 3, 10), 0);
	assert_int_equal(send_seq(&ns[2], 1, 3, 10), 0);
	assert_true(wait_rx(&ns[1], 2));
	assert_int_equal(ns[1].rx[1].seq, 2);
	assert_true(wait_rx(&ns[2], 2));
	assert_int_equal(ns[2].rx[1].seq, 3);
	/* Member 3's message 2 went to a queue that was kept (node 3 still
	 * had node 1 as a member) and may arrive before 3. */
	assert_true(wait_rx(&ns[0], 2));
	assert_int_equal(ns[0].rx[ns[0].nrx - 1].seq, 3);
	assert_int_equal(ns[0].out_of_order, 0);
	for (int i = 0; i < 3; i++)
		node_free(&ns[i]);
}

/* Answering from inside on_message (what raft does all the time). */
static void on_message_echo(void *data, uint64_t from, uint8_t type,
			    const void *body, size_t len)
{
	struct node *n = data;
	on_message(data, from, type, body, len);
	if (type == PEER_MSG_FORWARD)
		assert_int_equal(peer_transport_send(n->t, from,
						     PEER_MSG_FORWARD_RESULT,
						     body, len),
				 0);
}

static void test_send_from_callback(void **state)
{
	struct node ns[2];
	struct peer_transport_config c;
	struct net_url lu;
	struct peer_member self;

	(void)state;
	init_nodes(ns, 2, true);
	node_start(&ns[0], NULL, 0);
	c = base_cfg(&ns[1]);
	ns[1].stls = make_ctx(true, "m2", "ca");
	ns[1].ctls = make_ctx(false, "m2", "ca");
	c.server_tls = ns[1].stls;
	c.client_tls = ns[1].ctls;
	memset(&lu, 0, sizeof(lu));
	lu.tls = true;
	snprintf(lu.host, sizeof(lu.host), "127.0.0.1");
	c.listen = &lu;
	c.nlisten = 1;
	self = member(2, true, "127.0.0.1", 0);
	assert_int_equal(peer_transport_new(&c, &self, 1, on_message_echo,
					    &ns[1], &ns[1].t),
			 0);
	ns[1].port = peer_transport_port(ns[1].t, 0);
	connect_all(ns, 2);
	for (uint32_t s = 1; s <= 200; s++) {
		unsigned char *b = make_body(s, 64);
		assert_int_equal(peer_transport_send(ns[0].t, 2,
						     PEER_MSG_FORWARD, b, 64),
				 0);
		free(b);
	}
	assert_true(wait_rx(&ns[0], 200));
	for (uint32_t i = 0; i < 200; i++) {
		assert_int_equal(ns[0].rx[i].type, PEER_MSG_FORWARD_RESULT);
		assert_int_equal(ns[0].rx[i].seq, i + 1);
	}
	assert_int_equal(ns[0].bad_bodies, 0);
	for (int i = 0; i < 2; i++)
		node_free(&ns[i]);
}

/* Bad configurations are refused up front. */
static void test_bad_config(void **state)
{
	struct node n;
	struct peer_transport_config c;
	struct peer_transport *t = NULL;
	struct peer_member m[2];

	(void)state;
	init_nodes(&n, 1, false);
	c = base_cfg(&n);
	m[0] = member(1, false, "127.0.0.1", 1);
	m[1] = member(1, false, "127.0.0.1", 2);
	/* self missing */
	assert_int_equal(peer_transport_new(&c, m + 1, 0, on_message, &n,
					    &t),
			 KV_EINVAL);
	/* duplicate ids */
	assert_int_equal(peer_transport_new(&c, m, 2, on_message, &n, &t),
			 KV_EINVAL);
	/* an https member without a client context */
	m[1] = member(2, true, "127.0.0.1", 2);
	assert_int_equal(peer_transport_new(&c, m, 2, on_message, &n, &t),
			 KV_EINVAL);
	assert_null(t);
	/* A listen address in use: KV_EEXIST, and the half-built transport
	 * releases itself when the loop runs (ASan checks). */
	struct node a, b;
	init_nodes(&a, 1, false);
	init_nodes(&b, 1, false);
	node_start(&a, NULL, 0);
	assert_int_equal(node_try_start(&b, NULL, a.port), KV_EEXIST);
	assert_null(b.t);
	node_free(&a);
	node_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_plain_all_pairs, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_tls_all_pairs, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_large_frames, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_frame_over_max_refused,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_rogue_ca_refused, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_san_mismatch_refused,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_wrong_cluster_and_unknown_member, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dead_peer_queue_bounded,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_stuck_peer_bounded, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_reconnect_plain, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_reconnect_tls, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_split_frames, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_random_after_hello, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_garbage_plain, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_garbage_tls, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_close_from_callback,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_from_callback, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_set_members, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_bad_config, setup,
						teardown),
	};
	/* Writing to a peer that just closed must be an error, not death
	 * (kvd's main ignores SIGPIPE the same way). */
	signal(SIGPIPE, SIG_IGN);
	if (getenv("KV_TEST_VERBOSE") == NULL)
		kv_log_set_level(KV_LOG_ERROR);
	return cmocka_run_group_tests_name("transport", tests, make_pki,
					   remove_pki);
}

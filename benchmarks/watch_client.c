/* watch_client — the receiving side of benchmarks/watch_latency.py: a small
 * gRPC (h2c, prior knowledge) client of etcd's Watch service in C, so that
 * the client is not what limits a 10,000-watcher fan-out. It is built by
 * watch_latency.py (cc + libnghttp2 + libprotobuf-c, with messages generated
 * by protoc-c from proto/), not by CMake.
 *
 *   watch_client HOST PORT NSTREAMS PER_STREAM KEY EXPECT TIMEOUT_S
 *
 * Opens NSTREAMS Watch streams (10 per connection), creates PER_STREAM
 * watchers on KEY in each, prints "ready" once every created response
 * arrived, then records (CLOCK_MONOTONIC ns at arrival, mod_revision) for
 * every event until EXPECT events arrived or TIMEOUT_S passed, and prints
 * them, one "ns rev" line each, then "end". Single-threaded, poll(2). */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "etcdserverpb/rpc.pb-c.h"

#define STREAMS_PER_CONN 10

struct rec {
	int64_t t;
	int64_t rev;
};

struct wstream {
	unsigned char *out; /* framed create requests */
	size_t out_len, out_off;
	unsigned char *in; /* partial gRPC message */
	size_t in_len, in_cap;
};

struct conn {
	int fd;
	nghttp2_session *s;
};

static size_t n_created, n_events, n_expect, n_recs, cap_recs;
static struct rec *recs;
static int failed;

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static ssize_t on_send(nghttp2_session *s, const uint8_t *p, size_t n,
		       int flags, void *user)
{
	struct conn *c = user;
	(void)s;
	(void)flags;
	size_t off = 0;
	while (off < n) {
		ssize_t w = write(c->fd, p + off, n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		off += (size_t)w;
	}
	return (ssize_t)n;
}

static void on_message(const unsigned char *p, size_t n, int64_t t)
{
	Etcdserverpb__WatchResponse *r =
		etcdserverpb__watch_response__unpack(NULL, n, p);
	if (r == NULL) {
		failed = 1;
		return;
	}
	if (r->created)
		n_created++;
	for (size_t i = 0; i < r->n_events; i++) {
		if (n_recs == cap_recs) {
			cap_recs = cap_recs ? 2 * cap_recs : 65536;
			recs = realloc(recs, cap_recs * sizeof(*recs));
			if (recs == NULL)
				abort();
		}
		recs[n_recs].t = t;
		recs[n_recs].rev = r->events[i]->kv ? r->events[i]->kv->mod_revision
						    : 0;
		n_recs++;
		n_events++;
	}
	etcdserverpb__watch_response__free_unpacked(r, NULL);
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id,
		   const uint8_t *p, size_t n, void *user)
{
	(void)flags;
	(void)user;
	int64_t t = now_ns();
	struct wstream *w = nghttp2_session_get_stream_user_data(s, id);
	if (w == NULL)
		return 0;
	if (w->in_len + n > w->in_cap) {
		w->in_cap = (w->in_len + n) * 2;
		w->in = realloc(w->in, w->in_cap);
		if (w->in == NULL)
			abort();
	}
	memcpy(w->in + w->in_len, p, n);
	w->in_len += n;
	size_t off = 0;
	while (w->in_len - off >= 5) {
		uint32_t len = ((uint32_t)w->in[off + 1] << 24) |
			       ((uint32_t)w->in[off + 2] << 16) |
			       ((uint32_t)w->in[off + 3] << 8) | w->in[off + 4];
		if (w->in_len - off - 5 < len)
			break;
		on_message(w->in + off + 5, len, t);
		off += 5 + (size_t)len;
	}
	memmove(w->in, w->in + off, w->in_len - off);
	w->in_len -= off;
	return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t code, void *u)
{
	(void)s;
	(void)id;
	(void)u;
	fprintf(stderr, "watch_client: stream %d closed (%u)\n", id, code);
	failed = 1;
	return 0;
}

static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf,
			 size_t len, uint32_t *flags, nghttp2_data_source *src,
			 void *user)
{
	(void)s;
	(void)id;
	(void)flags;
	(void)user;
	struct wstream *w = src->ptr;
	size_t n = w->out_len - w->out_off;
	if (n == 0)
		return NGHTTP2_ERR_DEFERRED; /* the stream stays open */
	if (n > len)
		n = len;
	memcpy(buf, w->out + w->out_off, n);
	w->out_off += n;
	return (ssize_t)n;
}

static unsigned char *framed_creates(const char *key, size_t count,
				     size_t *len)
{
	Etcdserverpb__WatchCreateRequest c;
	Etcdserverpb__WatchRequest r;
	etcdserverpb__watch_create_request__init(&c);
	etcdserverpb__watch_request__init(&r);
	c.key.data = (uint8_t *)key;
	c.key.len = strlen(key);
	r.request_union_case =
		ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
	r.create_request = &c;
	size_t m = etcdserverpb__watch_request__get_packed_size(&r);
	unsigned char *out = malloc(count * (m + 5));
	if (out == NULL)
		abort();
	for (size_t i = 0; i < count; i++) {
		unsigned char *p = out + i * (m + 5);
		p[0] = 0;
		p[1] = (unsigned char)(m >> 24);
		p[2] = (unsigned char)(m >> 16);
		p[3] = (unsigned char)(m >> 8);
		p[4] = (unsigned char)m;
		etcdserverpb__watch_request__pack(&r, p + 5);
	}
	*len = count * (m + 5);
	return out;
}

int main(int argc, char **argv)
{
	if (argc != 8) {
		fprintf(stderr, "usage: %s HOST PORT NSTREAMS PER_STREAM KEY "
				"EXPECT TIMEOUT_S\n", argv[0]);
		return 2;
	}
	const char *host = argv[1];
	int port = atoi(argv[2]);
	size_t nstreams = strtoul(argv[3], NULL, 10);
	size_t per = strtoul(argv[4], NULL, 10);
	const char *key = argv[5];
	n_expect = strtoul(argv[6], NULL, 10);
	int64_t timeout = (int64_t)atoi(argv[7]) * 1000000000;
	size_t nconns = (nstreams + STREAMS_PER_CONN - 1) / STREAMS_PER_CONN;
	struct conn *conns = calloc(nconns, sizeof(*conns));
	struct wstream *ws = calloc(nstreams, sizeof(*ws));
	struct pollfd *pfd = calloc(nconns, sizeof(*pfd));
	char authority[64];
	snprintf(authority, sizeof(authority), "%s:%d", host, port);

	nghttp2_session_callbacks *cb;
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_send_callback(cb, on_send);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);

	for (size_t i = 0; i < nconns; i++) {
		struct sockaddr_in a = { 0 };
		a.sin_family = AF_INET;
		a.sin_port = htons((uint16_t)port);
		inet_pton(AF_INET, host, &a.sin_addr);
		conns[i].fd = socket(AF_INET, SOCK_STREAM, 0);
		int one = 1;
		setsockopt(conns[i].fd, IPPROTO_TCP, TCP_NODELAY, &one,
			   sizeof(one));
		if (connect(conns[i].fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
			perror("connect");
			return 1;
		}
		nghttp2_session_client_new(&conns[i].s, cb, &conns[i]);
		nghttp2_settings_entry st[] = {
			{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 24 },
			{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1000 },
		};
		nghttp2_submit_settings(conns[i].s, NGHTTP2_FLAG_NONE, st, 2);
		nghttp2_session_set_local_window_size(conns[i].s,
						      NGHTTP2_FLAG_NONE, 0,
						      1 << 30);
		pfd[i].fd = conns[i].fd;
		pfd[i].events = POLLIN;
	}
	const nghttp2_nv hdrs[] = {
#define NV(n, v)                                                             \
	{ (uint8_t *)n, (uint8_t *)v, sizeof(n) - 1, sizeof(v) - 1,          \
	  NGHTTP2_NV_FLAG_NONE }
		NV(":method", "POST"),
		NV(":scheme", "http"),
		NV(":path", "/etcdserverpb.Watch/Watch"),
		/* pseudo-headers first (RFC 9113 8.3) */
		{ (uint8_t *)":authority", (uint8_t *)authority, 10,
		  strlen(authority), NGHTTP2_NV_FLAG_NONE },
		NV("content-type", "application/grpc"),
		NV("te", "trailers"),
#undef NV
	};
	for (size_t i = 0; i < nstreams; i++) {
		struct conn *c = &conns[i / STREAMS_PER_CONN];
		ws[i].out = framed_creates(key, per, &ws[i].out_len);
		nghttp2_data_provider dp;
		dp.source.ptr = &ws[i];
		dp.read_callback = read_body;
		if (nghttp2_submit_request(c->s, NULL, hdrs, 6, &dp, &ws[i]) < 0) {
			fprintf(stderr, "submit failed\n");
			return 1;
		}
	}
	int64_t start = now_ns();
	int ready = 0;
	unsigned char buf[1 << 16];
	while (!failed) {
		for (size_t i = 0; i < nconns; i++)
			if (nghttp2_session_send(conns[i].s) != 0)
				failed = 1;
		if (!ready && n_created >= nstreams * per) {
			ready = 1;
			start = now_ns();
			printf("ready\n");
			fflush(stdout);
		}
		if (ready && n_events >= n_expect)
			break;
		if (now_ns() - start > timeout) {
			fprintf(stderr, "watch_client: timed out (%zu created, "
					"%zu events)\n", n_created, n_events);
			break;
		}
		int rc = poll(pfd, nconns, 100);
		if (rc < 0 && errno != EINTR)
			break;
		for (size_t i = 0; rc > 0 && i < nconns; i++) {
			if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t n = read(conns[i].fd, buf, sizeof(buf));
			if (n <= 0) {
				failed = 1;
				break;
			}
			if (nghttp2_session_mem_recv(conns[i].s, buf,
						     (size_t)n) < 0)
				failed = 1;
		}
	}
	if (!ready) {
		printf("error\n");
		return 1;
	}
	for (size_t i = 0; i < n_recs; i++)
		printf("%lld %lld\n", (long long)recs[i].t,
		       (long long)recs[i].rev);
	printf("end\n");
	fflush(stdout);
	for (size_t i = 0; i < nconns; i++) {
		nghttp2_session_del(conns[i].s);
		close(conns[i].fd);
	}
	nghttp2_session_callbacks_del(cb);
	for (size_t i = 0; i < nstreams; i++) {
		free(ws[i].out);
		free(ws[i].in);
	}
	free(ws);
	free(conns);
	free(pfd);
	free(recs);
	return failed;
}

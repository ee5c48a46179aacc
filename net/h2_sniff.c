/* Plaintext protocol detection (HTTP/2 prior knowledge vs HTTP/1.1); see
 * net/h2.h. */
#include <stdlib.h>
#include <string.h>

#include "kv/errors.h"
#include "net/conn.h"
#include "net/h2.h"
#include "net/http.h"

enum net_proto net_proto_sniff(const void *p, size_t n)
{
	size_t k = n < H2_PREFACE_LEN ? n : H2_PREFACE_LEN;
	if (memcmp(p, H2_PREFACE, k) != 0)
		return NET_PROTO_HTTP1;
	return n >= H2_PREFACE_LEN ? NET_PROTO_H2 : NET_PROTO_UNKNOWN;
}

struct sniff {
	struct net_conn *c;
	net_on_proto on_proto;
	void *data;
	char buf[H2_PREFACE_LEN];
	size_t n;
	bool decided;
};

static void on_inert_data(void *data, const char *p, size_t n)
{
	(void)data;
	(void)p;
	(void)n;
}

static const struct net_conn_handler inert_handler = {
	.on_data = on_inert_data,
};

static void on_sniff_data(void *data, const char *p, size_t n)
{
	struct sniff *sn = data;
	enum net_proto proto;
	char *all;
	size_t total;

	if (sn->decided)
		return;
	total = sn->n + n;
	all = malloc(total == 0 ? 1 : total);
	if (all == NULL) {
		net_conn_abort(sn->c, "out of memory");
		return;
	}
	memcpy(all, sn->buf, sn->n);
	memcpy(all + sn->n, p, n);
	proto = net_proto_sniff(all, total);
	if (proto == NET_PROTO_UNKNOWN) {
		memcpy(sn->buf, all, total); /* total < H2_PREFACE_LEN */
		sn->n = total;
		free(all);
		return;
	}
	sn->decided = true;
	/* The callee installs the protocol's handler (or closes): ours is
	 * swapped for an inert one first, so sn can go now either way. */
	net_conn_set_handler(sn->c, &inert_handler, NULL);
	net_conn_ref(sn->c);
	sn->on_proto(sn->c, proto, all, total, sn->data);
	net_conn_unref(sn->c);
	free(all);
	free(sn);
}

static void on_sniff_end(void *data)
{
	struct sniff *sn = data;
	net_conn_close(sn->c, "closed before a request");
}

static void on_sniff_close(void *data)
{
	free(data);
}

static const struct net_conn_handler sniff_handler = {
	.on_data = on_sniff_data,
	.on_end = on_sniff_end,
	.on_close = on_sniff_close,
};

int net_sniff_attach(struct net_conn *c, net_on_proto on_proto, void *data)
{
	struct sniff *sn = calloc(1, sizeof(*sn));
	if (sn == NULL) {
		net_conn_close(c, "out of memory");
		return KV_ENOMEM;
	}
	sn->c = c;
	sn->on_proto = on_proto;
	sn->data = data;
	net_conn_set_handler(c, &sniff_handler, sn);
	return 0;
}

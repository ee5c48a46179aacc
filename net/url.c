/* etcd-style listen/advertise URL parsing; see net/conn.h. */
#include "net/conn.h"

#include <stdlib.h>
#include <string.h>

#include "kv/errors.h"

int net_url_parse(const char *s, struct net_url *out)
{
	const char *p, *host, *host_end, *port;
	char *end;
	unsigned long v;
	size_t hl;

	memset(out, 0, sizeof(*out));
	if (strncmp(s, "https://", 8) == 0) {
		out->tls = true;
		p = s + 8;
	} else if (strncmp(s, "http://", 7) == 0) {
		p = s + 7;
	} else {
		return KV_EINVAL;
	}
	if (*p == '[') {
		host = p + 1;
		host_end = strchr(host, ']');
		if (host_end == NULL || host_end[1] != ':')
			return KV_EINVAL;
		port = host_end + 2;
	} else {
		host = p;
		host_end = strchr(host, ':');
		if (host_end == NULL)
			return KV_EINVAL;
		port = host_end + 1;
	}
	hl = (size_t)(host_end - host);
	if (hl == 0 || hl >= sizeof(out->host))
		return KV_EINVAL;
	memcpy(out->host, host, hl);
	out->host[hl] = '\0';
	if (*port < '0' || *port > '9')
		return KV_EINVAL;
	v = strtoul(port, &end, 10);
	if (v > 65535 || (*end != '\0' && strcmp(end, "/") != 0))
		return KV_EINVAL;
	out->port = (uint16_t)v;
	return 0;
}

int net_url_list_parse(const char *s, struct net_url **out, size_t *n)
{
	size_t cap = 1, cnt = 0;
	struct net_url *v;
	char one[512];

	for (const char *q = s; *q; q++)
		cap += *q == ',';
	v = calloc(cap, sizeof(*v));
	if (v == NULL)
		return KV_ENOMEM;
	while (*s) {
		const char *e = strchr(s, ',');
		size_t l = e ? (size_t)(e - s) : strlen(s);
		if (l == 0 || l >= sizeof(one) || cnt == cap)
			goto err;
		memcpy(one, s, l);
		one[l] = '\0';
		if (net_url_parse(one, &v[cnt]) != 0)
			goto err;
		cnt++;
		s += l;
		if (*s == ',') {
			s++;
			if (*s == '\0')
				goto err;
		}
	}
	if (cnt == 0)
		goto err;
	*out = v;
	*n = cnt;
	return 0;
err:
	free(v);
	return KV_EINVAL;
}

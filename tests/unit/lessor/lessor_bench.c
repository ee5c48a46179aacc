/* kv-lessor-bench: the cost of N live leases in the lease table (grant,
 * attach a key each, memory, renew, the leader's expiry check with
 * nothing expired, promote, expiry of all).
 *   kv-lessor-bench [N]   (default 100000) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "kvraft/lessor.h"

static double since(uint64_t t0)
{
	return (double)(kv_now_ns() - t0) / 1e9;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 100000;
	struct kv_lessor *l;
	if (n <= 0 || kv_lessor_new(&l) != 0)
		return 2;
	int64_t *ids = malloc((size_t)n * sizeof(*ids));
	if (ids == NULL)
		return 2;
	kv_lessor_promote(l, 0);
	uint64_t t0 = kv_now_ns();
	for (long i = 0; i < n; i++)
		if (kv_lessor_grant(l, 0x100000 + i, 3600, 0) != 0)
			return 1;
	double grant = since(t0);
	t0 = kv_now_ns();
	for (long i = 0; i < n; i++) {
		char key[48];
		int len = snprintf(key, sizeof(key), "/registry/events/ns/e%ld",
				   i);
		if (kv_lessor_attach(l, key, (size_t)len, 0x100000 + i) != 0)
			return 1;
	}
	double attach = since(t0);
	t0 = kv_now_ns();
	bool clear;
	for (long i = 0; i < n; i++)
		(void)kv_lessor_renew(l, 0x100000 + (i * 7919) % n, &clear);
	double renew = since(t0);
	t0 = kv_now_ns();
	size_t none = 0;
	for (int i = 0; i < 1000; i++)
		none += kv_lessor_expired(l, ids, 1000, 3000);
	double check = since(t0) / 1000;
	t0 = kv_now_ns();
	kv_lessor_demote(l);
	kv_lessor_promote(l, 1000);
	double promote = since(t0);
	printf("leases=%ld memory=%zu bytes (%.0f B/lease incl. one key)\n", n,
	       kv_lessor_memory(l), (double)kv_lessor_memory(l) / (double)n);
	printf("grant=%.0f ns/lease attach=%.0f ns/key renew=%.0f ns "
	       "expiry_check=%.2f us (nothing due, %zu) promote=%.1f ms\n",
	       grant * 1e9 / (double)n, attach * 1e9 / (double)n,
	       renew * 1e9 / (double)n, check * 1e6, none, promote * 1e3);
	/* expire them all: TTL 1 s, then drain */
	kv_lessor_free(l);
	if (kv_lessor_new(&l) != 0)
		return 2;
	kv_lessor_promote(l, 0);
	for (long i = 0; i < n; i++)
		(void)kv_lessor_grant(l, 0x100000 + i, 1, 0);
	uint64_t wait = kv_now_ms() + 1100;
	while (kv_now_ms() < wait)
		;
	t0 = kv_now_ns();
	size_t got = 0, k;
	while ((k = kv_lessor_expired(l, ids, 1000, 60000)) > 0)
		got += k;
	printf("expired=%zu in %.1f ms (%.0f ns/lease)\n", got,
	       since(t0) * 1e3, since(t0) * 1e9 / (double)got);
	kv_lessor_free(l);
	free(ids);
	return got == (size_t)n ? 0 : 1;
}

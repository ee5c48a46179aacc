/* Self-check of kvbench's latency histogram (a ctest test): quantiles of
 * known distributions against the exact order statistics, within the
 * histogram's stated relative error (< 1/128). */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kvbench.h"

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static int check(const char *name, uint64_t *v, size_t n) {
  static struct kb_hist h;
  hist_init(&h);
  for (size_t i = 0; i < n; i++)
    hist_add(&h, v[i]);
  qsort(v, n, sizeof *v, cmp_u64);
  static const double qs[] = {0.0, 0.5, 0.9, 0.99, 0.999, 1.0};
  int bad = 0;
  for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
    size_t rank = (size_t)(qs[i] * (double)n + 0.5);
    if (rank < 1)
      rank = 1;
    if (rank > n)
      rank = n;
    uint64_t exact = v[rank - 1];
    uint64_t got = hist_quantile(&h, qs[i]);
    /* the bucket's top edge: never below the value, at most 1/128 above */
    if (got < exact || (double)(got - exact) > (double)exact / 128.0 + 1.0) {
      fprintf(stderr, "%s: q=%g exact %llu got %llu\n", name, qs[i],
              (unsigned long long)exact, (unsigned long long)got);
      bad = 1;
    }
  }
  if (h.max != v[n - 1] || h.count != n) {
    fprintf(stderr, "%s: max/count wrong\n", name);
    bad = 1;
  }
  return bad;
}

int main(void) {
  enum { N = 200000 };
  uint64_t *v = malloc(N * sizeof *v);
  struct kb_rng r;
  int bad = 0;
  rng_seed(&r, 42);
  for (size_t i = 0; i < N; i++) /* uniform 0 .. 1e9 ns */
    v[i] = rng_next(&r) % 1000000000u;
  bad |= check("uniform", v, N);
  for (size_t i = 0; i < N; i++) /* log-uniform 1 ns .. ~70 min */
    v[i] = (uint64_t)exp(rng_unit(&r) * log(4.2e12));
  bad |= check("log-uniform", v, N);
  for (size_t i = 0; i < N; i++) /* small exact values */
    v[i] = i % 300;
  bad |= check("small", v, N);
  struct kb_hist a, b;
  hist_init(&a);
  hist_init(&b);
  hist_add(&a, 1000);
  hist_add(&b, 3000000);
  hist_merge(&a, &b);
  bad |= a.count != 2 || a.max != 3000000 || hist_quantile(&a, 0.5) < 1000 ||
         hist_quantile(&a, 0.5) > 1008;
  free(v);
  printf("%s\n", bad ? "FAIL" : "ok");
  return bad;
}

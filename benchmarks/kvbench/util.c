/* kvbench: histogram, RNG, result printing, /proc sampling. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "kvbench.h"

/* ------------------------------------------------------------ histogram */

static unsigned bucket_of(uint64_t v) {
  if (v < 2 * KB_HIST_SUB)
    return (unsigned)v;
  unsigned msb = 63u - (unsigned)__builtin_clzll(v);
  unsigned shift = msb - KB_HIST_SUB_BITS;
  unsigned idx = (shift + 1) * KB_HIST_SUB + (unsigned)((v >> shift) - KB_HIST_SUB);
  return idx < KB_HIST_BUCKETS ? idx : KB_HIST_BUCKETS - 1;
}

/* Largest value that falls in bucket i. */
static uint64_t bucket_top(unsigned i) {
  if (i < 2 * KB_HIST_SUB)
    return i;
  unsigned shift = i / KB_HIST_SUB - 1;
  uint64_t lo = ((uint64_t)(i % KB_HIST_SUB) + KB_HIST_SUB) << shift;
  return lo + ((uint64_t)1 << shift) - 1;
}

void hist_init(struct kb_hist *h) {
  memset(h, 0, sizeof *h);
  h->min = UINT64_MAX;
}

void hist_add(struct kb_hist *h, uint64_t ns) {
  h->b[bucket_of(ns)]++;
  h->count++;
  h->sum += (double)ns;
  if (ns > h->max)
    h->max = ns;
  if (ns < h->min)
    h->min = ns;
}

uint64_t hist_quantile(const struct kb_hist *h, double q) {
  if (h->count == 0)
    return 0;
  uint64_t rank = (uint64_t)(q * (double)h->count + 0.5);
  if (rank < 1)
    rank = 1;
  if (rank > h->count)
    rank = h->count;
  uint64_t seen = 0;
  for (unsigned i = 0; i < KB_HIST_BUCKETS; i++) {
    seen += h->b[i];
    if (seen >= rank) {
      uint64_t v = bucket_top(i);
      return v > h->max ? h->max : v;
    }
  }
  return h->max;
}

void hist_merge(struct kb_hist *dst, const struct kb_hist *src) {
  for (unsigned i = 0; i < KB_HIST_BUCKETS; i++)
    dst->b[i] += src->b[i];
  dst->count += src->count;
  dst->sum += src->sum;
  if (src->max > dst->max)
    dst->max = src->max;
  if (src->min < dst->min)
    dst->min = src->min;
}

/* ------------------------------------------------------------ misc */

uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void rng_seed(struct kb_rng *r, uint64_t seed) {
  for (int i = 0; i < 4; i++)
    r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t rng_next(struct kb_rng *r) {
  uint64_t *s = r->s;
  uint64_t out = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return out;
}

double rng_unit(struct kb_rng *r) {
  return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* ------------------------------------------------------------ results */

static const char *const code_names[] = {
    "OK",          "Canceled",       "Unknown",           "InvalidArgument",
    "DeadlineExceeded", "NotFound",  "AlreadyExists",     "PermissionDenied",
    "ResourceExhausted", "FailedPrecondition", "Aborted",  "OutOfRange",
    "Unimplemented", "Internal",     "Unavailable",       "DataLoss",
    "Unauthenticated"};

const char *grpc_code_name(int status) {
  if (status == KB_STATUS_TRANSPORT)
    return "transport";
  if (status >= 0 && status <= 16)
    return code_names[status];
  return "other";
}

void result_init(struct kb_result *r, const char *name) {
  memset(r, 0, sizeof *r);
  r->name = name;
  hist_init(&r->hist);
}

static int code_slot(int status) {
  if (status == KB_STATUS_TRANSPORT)
    return 0;
  if (status >= 0 && status <= 16)
    return status + 1;
  return 0;
}

void result_record(struct kb_result *r, int status, uint64_t ns,
                   const char *errmsg) {
  r->requests++;
  if (status == 0) {
    hist_add(&r->hist, ns);
    return;
  }
  int k = code_slot(status);
  if (r->errors[k]++ == 0 && errmsg)
    snprintf(r->errmsg[k], sizeof r->errmsg[k], "%s", errmsg);
}

uint64_t result_errors(const struct kb_result *r) {
  uint64_t n = 0;
  for (int i = 0; i < KB_MAX_CODES; i++)
    n += r->errors[i];
  return n;
}

static double ms(uint64_t ns) { return (double)ns / 1e6; }

void result_print(const struct kb_result *r, const char *prefix) {
  const struct kb_hist *h = &r->hist;
  printf("%srequests: %llu\n", prefix, (unsigned long long)r->requests);
  printf("%serrors: %llu\n", prefix, (unsigned long long)result_errors(r));
  for (int i = 0; i < KB_MAX_CODES; i++) {
    if (r->errors[i])
      printf("%serror %s: %llu (first: %s)\n", prefix,
             grpc_code_name(i == 0 ? KB_STATUS_TRANSPORT : i - 1),
             (unsigned long long)r->errors[i], r->errmsg[i]);
  }
  printf("%sseconds: %.3f\n", prefix, r->seconds);
  printf("%sthroughput: %.1f req/s\n", prefix,
         r->seconds > 0 ? (double)r->requests / r->seconds : 0.0);
  printf("%slatency ms: p50 %.3f p90 %.3f p99 %.3f p99.9 %.3f max %.3f "
         "mean %.3f\n",
         prefix, ms(hist_quantile(h, 0.5)), ms(hist_quantile(h, 0.9)),
         ms(hist_quantile(h, 0.99)), ms(hist_quantile(h, 0.999)), ms(h->max),
         h->count ? h->sum / (double)h->count / 1e6 : 0.0);
}

int rss_sample(int pid, struct kb_rss *out) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  out->rss_kb = out->hwm_kb = -1;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "VmRSS:", 6) == 0)
      out->rss_kb = strtol(line + 6, NULL, 10);
    else if (strncmp(line, "VmHWM:", 6) == 0)
      out->hwm_kb = strtol(line + 6, NULL, 10);
  }
  fclose(f);
  return 0;
}

void print_client_cpu(double wall_s) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    return;
  double u = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
  double s = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
  printf("client cpu: user %.2f s sys %.2f s (%.0f %% of one core over the "
         "run)\n",
         u, s, wall_s > 0 ? 100.0 * (u + s) / wall_s : 0.0);
}

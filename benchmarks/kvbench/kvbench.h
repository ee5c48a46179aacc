/* kvbench — internal header shared by the benchmark's files.
 *
 * kvbench is a single-threaded gRPC client: one libuv loop owns every
 * connection, stream and timer. Nothing here is thread-safe and nothing
 * needs to be. */
#ifndef KVBENCH_H
#define KVBENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>
#include <uv.h>

#include "etcdserverpb/rpc.pb-c.h"

/* ------------------------------------------------------------ histogram */

/* Log-bucket latency histogram over nanoseconds: 128 sub-buckets per
 * power of two (relative error < 0.8 %), values up to 2^42 ns (~73 min).
 * Plain counters; no allocation. */
#define KB_HIST_SUB_BITS 7
#define KB_HIST_SUB (1u << KB_HIST_SUB_BITS)
#define KB_HIST_BUCKETS ((42 - KB_HIST_SUB_BITS + 1) * KB_HIST_SUB)

struct kb_hist {
  uint64_t count;
  uint64_t max;
  uint64_t min;
  double sum;
  uint64_t b[KB_HIST_BUCKETS];
};

void hist_init(struct kb_hist *h);
void hist_add(struct kb_hist *h, uint64_t ns);
/* The value (ns) at quantile q in [0,1]: the upper edge of the bucket that
 * holds it, clamped to the recorded max. 0 when empty. */
uint64_t hist_quantile(const struct kb_hist *h, double q);
void hist_merge(struct kb_hist *dst, const struct kb_hist *src);

/* ------------------------------------------------------------ gRPC client */

/* Transport-level failure (connection lost, stream reset, no grpc-status):
 * reported in place of a gRPC status code. */
#define KB_STATUS_TRANSPORT (-1)
#define KB_MAX_CODES 18 /* gRPC codes 0..16, plus transport */

struct kb_tls {
  const char *cacert; /* NULL: no verification unless insecure is false */
  const char *cert;
  const char *key;
  bool insecure; /* skip server certificate verification */
};

struct kb_conn;
struct kb_call;

/* Unary completion: status is the gRPC status (0 = OK) or
 * KB_STATUS_TRANSPORT; msg/len is the response message (valid only during
 * the callback; NULL when status != 0); errmsg is grpc-message or a
 * transport description (valid only during the callback, may be ""). */
typedef void (*kb_unary_cb)(void *arg, int status, const uint8_t *msg,
                            size_t len, const char *errmsg);
/* Stream message: one response message on a bidi stream (valid only
 * during the callback). */
typedef void (*kb_msg_cb)(void *arg, const uint8_t *msg, size_t len);

/* Connects (blocking: setup is not measured) to url ("http://h:p",
 * "https://h:p" or "h:p", TLS when tls is non-NULL or the scheme is https)
 * and starts HTTP/2 on loop. Returns NULL and prints why on failure. The
 * connection lives until conn_close(). */
struct kb_conn *conn_open(uv_loop_t *loop, const char *url,
                          const struct kb_tls *tls);
/* Closes the socket; calls still in flight complete with
 * KB_STATUS_TRANSPORT first. Frees the connection after the poll handle's
 * close callback. */
void conn_close(struct kb_conn *c);
bool conn_alive(const struct kb_conn *c);
/* Number of calls in flight on c. */
int conn_inflight(const struct kb_conn *c);

/* Sends one unary call: path is "/etcdserverpb.KV/Put" etc. (a static
 * string), req is packed at once (the caller keeps ownership). cb runs
 * exactly once, later, from the loop. Returns 0 or -1 (conn dead: cb is
 * not called). */
int grpc_unary(struct kb_conn *c, const char *path,
               const ProtobufCMessage *req, kb_unary_cb cb, void *arg);

/* Opens a bidi stream. on_msg runs per response message; on_close runs
 * once when the stream ends (status as for unary). */
struct kb_call *grpc_stream_open(struct kb_conn *c, const char *path,
                                 kb_msg_cb on_msg, kb_unary_cb on_close,
                                 void *arg);
/* Queues one message on an open stream. Returns 0 or -1. */
int grpc_stream_send(struct kb_call *s, const ProtobufCMessage *msg);
/* Half-closes the stream (END_STREAM after queued messages). */
void grpc_stream_end(struct kb_call *s);

/* Writes c's pending output now (normally done once per loop iteration). */
void conn_flush(struct kb_conn *c);
/* Closes the per-loop flusher handles; call after every conn_close(),
 * then run the loop once more to free them. */
void conn_loop_done(uv_loop_t *loop);

/* ------------------------------------------------------------ helpers */

uint64_t now_ns(void);
/* xoshiro256** seeded by splitmix64. */
struct kb_rng {
  uint64_t s[4];
};
void rng_seed(struct kb_rng *r, uint64_t seed);
uint64_t rng_next(struct kb_rng *r);
double rng_unit(struct kb_rng *r); /* [0,1) */

/* Results of one run, printed by report_print(). */
struct kb_result {
  const char *name;
  uint64_t requests; /* completed, including errors */
  uint64_t errors[KB_MAX_CODES]; /* index code+1 (0 = transport) */
  char errmsg[KB_MAX_CODES][160];
  struct kb_hist hist; /* successful requests only */
  double seconds;
};

void result_init(struct kb_result *r, const char *name);
void result_record(struct kb_result *r, int status, uint64_t ns,
                   const char *errmsg);
uint64_t result_errors(const struct kb_result *r);
/* Prints the summary block (requests, errors by code, throughput,
 * latency quantiles) prefixed by `prefix` on each line ("" for none). */
void result_print(const struct kb_result *r, const char *prefix);
const char *grpc_code_name(int status);
/* Prints kvbench's own CPU time since it started, and its share of
 * wall_s: the client's cost, to tell when it, not the server, is the
 * bottleneck. */
void print_client_cpu(double wall_s);

/* Server RSS sampling (--pid). */
struct kb_rss {
  long rss_kb;
  long hwm_kb;
};
int rss_sample(int pid, struct kb_rss *out);

/* apiserver-mix entry point (mix.c). */
struct kb_opts;
int mix_main(struct kb_opts *o);

/* Global options shared by every subcommand (main.c parses them). */
struct kb_opts {
  const char *endpoints;
  int conns;
  int clients;
  long total;
  int key_size;
  int val_size;
  long key_space;
  bool sequential;
  double rate;
  struct kb_tls tls;
  bool use_tls;
  int pids[8];
  int npids;
  /* range */
  const char *key;
  const char *end;
  bool serializable;
  long limit;
  bool count_only;
  bool keys_only;
  /* txn */
  int txn_ops;
  double rw_ratio;
  /* lease */
  long ttl;
  bool keep;
  bool wait_expire;
  /* mix */
  const char *tier;
  double duration;
  double multiple;
  long list_limit;
  uint64_t seed;
  int apiservers;
  int inflight;
};

#endif

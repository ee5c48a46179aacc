/* kvbench — etcd-benchmark-style workloads against kvd or real etcd.
 *
 * Closed-loop subcommands (put, range, txn-put, txn-mixed, lease-grant,
 * lease-keepalive) follow etcd's tools/benchmark: --clients concurrent
 * request loops spread over --conns HTTP/2 connections, --total requests in
 * all, optionally paced by --rate (requests/s across all clients; latency
 * is then measured from the actual send, as etcd's tool does).
 * apiserver-mix (mix.c) is open-loop. One thread, one libuv loop. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvbench.h"

#define P_RANGE "/etcdserverpb.KV/Range"
#define P_PUT "/etcdserverpb.KV/Put"
#define P_TXN "/etcdserverpb.KV/Txn"
#define P_GRANT "/etcdserverpb.Lease/LeaseGrant"
#define P_REVOKE "/etcdserverpb.Lease/LeaseRevoke"
#define P_KEEPALIVE "/etcdserverpb.Lease/LeaseKeepAlive"
#define P_LEASES "/etcdserverpb.Lease/LeaseLeases"

struct bench;

struct client {
  struct bench *b;
  int idx;
  struct kb_conn *conn;
  uint64_t t0;
  int kind; /* txn-mixed: 0 write, 1 read */
  int64_t lease_id;
  struct kb_call *stream;
  bool waiting; /* keep-alive sent, response pending */
  struct client *next_idle;
  char key[256];
  char key2[256];
};

struct bench {
  uv_loop_t loop;
  struct kb_opts *o;
  const char *cmd;
  struct kb_conn **conns;
  int nconns;
  struct client *clients;
  long issued, done;
  struct kb_result res;  /* main op */
  struct kb_result res2; /* txn-mixed reads / lease-grant revokes */
  bool has_res2;
  uint64_t start;
  uv_timer_t rate_timer;
  struct client *idle;
  void (*issue)(struct client *);
  struct kb_rng rng;
  uint8_t *value;
  int64_t *ids; /* lease-grant --keep: every granted ID */
  long nids;
  long setup_pending;
  long setup_failures;
  bool finished;
};

/* ------------------------------------------------------------ closed loop */

static void client_next(struct client *cl);

static void finish(struct bench *b) {
  if (b->finished)
    return;
  b->finished = true;
  b->res.seconds = (double)(now_ns() - b->start) / 1e9;
  b->res2.seconds = b->res.seconds;
  uv_stop(&b->loop);
}

static void client_done(struct client *cl, struct kb_result *r, int status,
                        const char *errmsg) {
  struct bench *b = cl->b;
  result_record(r, status, now_ns() - cl->t0, errmsg);
  if (r != &b->res && b->o->keep == false && strcmp(b->cmd, "lease-grant") == 0) {
    /* a revoke finished: it is not one of --total */
  } else {
    b->done++;
  }
  if (b->done >= b->o->total) {
    finish(b);
    return;
  }
  client_next(cl);
}

static long allowed_now(struct bench *b) {
  if (b->o->rate <= 0)
    return b->o->total;
  double t = (double)(now_ns() - b->start) / 1e9;
  long n = (long)(t * b->o->rate) + 1;
  return n < b->o->total ? n : b->o->total;
}

static void client_next(struct client *cl) {
  struct bench *b = cl->b;
  if (b->finished || b->issued >= b->o->total)
    return;
  if (b->issued >= allowed_now(b)) {
    cl->next_idle = b->idle;
    b->idle = cl;
    return;
  }
  b->issued++;
  cl->t0 = now_ns();
  b->issue(cl);
}

static void on_rate_tick(uv_timer_t *t) {
  struct bench *b = t->data;
  while (b->idle && b->issued < allowed_now(b)) {
    struct client *cl = b->idle;
    b->idle = cl->next_idle;
    client_next(cl);
  }
}

static void on_unary(void *arg, int status, const uint8_t *msg, size_t len,
                     const char *errmsg) {
  struct client *cl = arg;
  client_done(cl, &cl->b->res, status, errmsg);
}

static void send_unary(struct client *cl, const char *path,
                       const ProtobufCMessage *m, kb_unary_cb cb,
                       struct kb_result *r) {
  if (grpc_unary(cl->conn, path, m, cb, cl) < 0) {
    /* dead connection: count it, but do not spin on it */
    struct bench *b = cl->b;
    result_record(r, KB_STATUS_TRANSPORT, 0, "connection is down");
    b->done++;
    if (b->done >= b->o->total)
      finish(b);
  }
}

/* ------------------------------------------------------------ keys */

static void make_key(struct bench *b, char *out, size_t cap) {
  struct kb_opts *o = b->o;
  long idx;
  if (o->sequential)
    idx = (b->issued - 1) % (o->key_space > 0 ? o->key_space : 1);
  else
    idx = (long)(rng_next(&b->rng) % (uint64_t)(o->key_space > 0 ? o->key_space : 1));
  int w = o->key_size < (int)cap - 1 ? o->key_size : (int)cap - 1;
  snprintf(out, cap, "%0*ld", w, idx);
}

/* ------------------------------------------------------------ put */

static void issue_put(struct client *cl) {
  struct bench *b = cl->b;
  make_key(b, cl->key, sizeof cl->key);
  Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
  req.key.data = (uint8_t *)cl->key;
  req.key.len = strlen(cl->key);
  req.value.data = b->value;
  req.value.len = (size_t)b->o->val_size;
  send_unary(cl, P_PUT, &req.base, on_unary, &b->res);
}

/* ------------------------------------------------------------ range */

static void fill_range(struct bench *b, Etcdserverpb__RangeRequest *rr) {
  struct kb_opts *o = b->o;
  rr->key.data = (uint8_t *)o->key;
  rr->key.len = strlen(o->key);
  if (o->end) {
    rr->range_end.data = (uint8_t *)o->end;
    rr->range_end.len = strlen(o->end);
  }
  rr->limit = o->limit;
  rr->serializable = o->serializable;
  rr->count_only = o->count_only;
  rr->keys_only = o->keys_only;
}

static void issue_range(struct client *cl) {
  struct bench *b = cl->b;
  Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
  fill_range(b, &req);
  send_unary(cl, P_RANGE, &req.base, on_unary, &b->res);
}

/* ------------------------------------------------------------ txn-put / txn-mixed */

static void issue_txn_put(struct client *cl) {
  struct bench *b = cl->b;
  int n = b->o->txn_ops;
  char keys[64][64];
  /* a txn may not name a key twice: draw again on a duplicate */
  Etcdserverpb__PutRequest puts[64];
  Etcdserverpb__RequestOp ops[64];
  Etcdserverpb__RequestOp *opp[64];
  for (int i = 0; i < n; i++) {
    for (int tries = 0; tries < 100; tries++) {
      make_key(b, keys[i], sizeof keys[i]);
      int j = 0;
      while (j < i && strcmp(keys[j], keys[i]) != 0)
        j++;
      if (j == i)
        break;
    }
    etcdserverpb__put_request__init(&puts[i]);
    puts[i].key.data = (uint8_t *)keys[i];
    puts[i].key.len = strlen(keys[i]);
    puts[i].value.data = b->value;
    puts[i].value.len = (size_t)b->o->val_size;
    etcdserverpb__request_op__init(&ops[i]);
    ops[i].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    ops[i].request_put = &puts[i];
    opp[i] = &ops[i];
  }
  Etcdserverpb__TxnRequest req = ETCDSERVERPB__TXN_REQUEST__INIT;
  req.n_success = (size_t)n;
  req.success = opp;
  send_unary(cl, P_TXN, &req.base, on_unary, &b->res);
}

static void on_mixed(void *arg, int status, const uint8_t *msg, size_t len,
                     const char *errmsg) {
  struct client *cl = arg;
  client_done(cl, cl->kind ? &cl->b->res2 : &cl->b->res, status, errmsg);
}

static void issue_txn_mixed(struct client *cl) {
  struct bench *b = cl->b;
  struct kb_opts *o = b->o;
  Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT;
  Etcdserverpb__RequestOp *opp = &op;
  Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
  Etcdserverpb__PutRequest pr = ETCDSERVERPB__PUT_REQUEST__INIT;
  cl->kind = rng_unit(&b->rng) < o->rw_ratio / (1.0 + o->rw_ratio);
  if (cl->kind) {
    fill_range(b, &rr);
    op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    op.request_range = &rr;
  } else {
    make_key(b, cl->key, sizeof cl->key);
    pr.key.data = (uint8_t *)cl->key;
    pr.key.len = strlen(cl->key);
    pr.value.data = b->value;
    pr.value.len = (size_t)o->val_size;
    op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op.request_put = &pr;
  }
  Etcdserverpb__TxnRequest req = ETCDSERVERPB__TXN_REQUEST__INIT;
  req.n_success = 1;
  req.success = &opp;
  send_unary(cl, P_TXN, &req.base, on_mixed, cl->kind ? &b->res2 : &b->res);
}

/* ------------------------------------------------------------ lease-grant */

static void on_revoked(void *arg, int status, const uint8_t *msg, size_t len,
                       const char *errmsg) {
  struct client *cl = arg;
  client_done(cl, &cl->b->res2, status, errmsg);
}

static void on_granted(void *arg, int status, const uint8_t *msg, size_t len,
                       const char *errmsg) {
  struct client *cl = arg;
  struct bench *b = cl->b;
  int64_t id = 0;
  if (status == 0) {
    Etcdserverpb__LeaseGrantResponse *r =
        etcdserverpb__lease_grant_response__unpack(NULL, len, msg);
    if (!r) {
      status = KB_STATUS_TRANSPORT;
      errmsg = "cannot decode LeaseGrantResponse";
    } else {
      if (r->error && r->error[0]) {
        status = 2;
        errmsg = "LeaseGrantResponse.error set";
      }
      id = r->id;
      etcdserverpb__lease_grant_response__free_unpacked(r, NULL);
    }
  }
  if (b->o->keep || status != 0) {
    if (status == 0 && b->ids)
      b->ids[b->nids++] = id;
    client_done(cl, &b->res, status, errmsg);
    return;
  }
  /* count the grant, then revoke it (timed separately) */
  result_record(&b->res, status, now_ns() - cl->t0, errmsg);
  b->done++;
  Etcdserverpb__LeaseRevokeRequest req = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
  req.id = id;
  cl->t0 = now_ns();
  send_unary(cl, P_REVOKE, &req.base, on_revoked, &b->res2);
}

static void issue_grant(struct client *cl) {
  struct bench *b = cl->b;
  Etcdserverpb__LeaseGrantRequest req = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
  req.ttl = b->o->ttl;
  send_unary(cl, P_GRANT, &req.base, on_granted, &b->res);
}

/* ------------------------------------------------------------ lease-keepalive */

static void ka_send(struct client *cl);

static void on_ka_msg(void *arg, const uint8_t *msg, size_t len) {
  struct client *cl = arg;
  if (!cl->waiting)
    return;
  cl->waiting = false;
  int status = 0;
  const char *why = "";
  Etcdserverpb__LeaseKeepAliveResponse *r =
      etcdserverpb__lease_keep_alive_response__unpack(NULL, len, msg);
  if (!r) {
    status = KB_STATUS_TRANSPORT;
    why = "cannot decode LeaseKeepAliveResponse";
  } else {
    if (r->ttl <= 0) {
      status = 5; /* NotFound: the lease expired or is unknown */
      why = "keep-alive answered TTL <= 0";
    }
    etcdserverpb__lease_keep_alive_response__free_unpacked(r, NULL);
  }
  client_done(cl, &cl->b->res, status, why);
}

static void on_ka_close(void *arg, int status, const uint8_t *msg, size_t len,
                        const char *errmsg) {
  struct client *cl = arg;
  cl->stream = NULL;
  if (cl->waiting) {
    cl->waiting = false;
    client_done(cl, &cl->b->res, status ? status : KB_STATUS_TRANSPORT,
                *errmsg ? errmsg : "keep-alive stream ended");
  }
}

static void ka_send(struct client *cl) {
  struct bench *b = cl->b;
  if (!cl->stream)
    cl->stream = grpc_stream_open(cl->conn, P_KEEPALIVE, on_ka_msg,
                                  on_ka_close, cl);
  Etcdserverpb__LeaseKeepAliveRequest req =
      ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
  req.id = cl->lease_id;
  cl->waiting = true;
  if (!cl->stream || grpc_stream_send(cl->stream, &req.base) < 0) {
    cl->waiting = false;
    result_record(&b->res, KB_STATUS_TRANSPORT, 0, "cannot open stream");
    b->done++;
    if (b->done >= b->o->total)
      finish(b);
  }
}

static void on_setup_grant(void *arg, int status, const uint8_t *msg,
                           size_t len, const char *errmsg) {
  struct client *cl = arg;
  struct bench *b = cl->b;
  if (status == 0) {
    Etcdserverpb__LeaseGrantResponse *r =
        etcdserverpb__lease_grant_response__unpack(NULL, len, msg);
    if (r) {
      cl->lease_id = r->id;
      etcdserverpb__lease_grant_response__free_unpacked(r, NULL);
    }
  } else {
    fprintf(stderr, "kvbench: setup LeaseGrant failed: %s %s\n",
            grpc_code_name(status), errmsg);
    /* retry a few times: a grant that failed is a server problem worth
     * seeing above, not a reason to measure keep-alives of lease 0 */
    b->setup_failures++;
    if (status != KB_STATUS_TRANSPORT && b->setup_failures <= 5L * b->o->clients) {
      Etcdserverpb__LeaseGrantRequest req = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
      req.ttl = 100;
      if (grpc_unary(cl->conn, P_GRANT, &req.base, on_setup_grant, cl) == 0)
        return;
    }
  }
  if (--b->setup_pending == 0)
    uv_stop(&b->loop);
}

/* ------------------------------------------------------------ lease expiry wait */

struct expiry {
  struct bench *b;
  uv_timer_t timer;
  uint64_t t0;
  long count;
  bool inflight;
  bool done;
};

static int cmp_id(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static void on_leases(void *arg, int status, const uint8_t *msg, size_t len,
                      const char *errmsg) {
  struct expiry *e = arg;
  e->inflight = false;
  if (status != 0) {
    fprintf(stderr, "kvbench: LeaseLeases: %s %s\n", grpc_code_name(status),
            errmsg);
    return;
  }
  Etcdserverpb__LeaseLeasesResponse *r =
      etcdserverpb__lease_leases_response__unpack(NULL, len, msg);
  if (!r)
    return;
  /* count only our own leases: others (e.g. keep-alive runs) may live on */
  long left = 0;
  for (size_t i = 0; i < r->n_leases; i++) {
    int64_t id = r->leases[i]->id;
    if (bsearch(&id, e->b->ids, (size_t)e->b->nids, sizeof id, cmp_id))
      left++;
  }
  e->count = left;
  etcdserverpb__lease_leases_response__free_unpacked(r, NULL);
  if (e->count == 0) {
    e->done = true;
    uv_stop(&e->b->loop);
  }
}

static void on_expiry_tick(uv_timer_t *t) {
  struct expiry *e = t->data;
  if (e->inflight)
    return;
  if ((double)(now_ns() - e->t0) / 1e9 > (double)e->b->o->ttl + 600) {
    uv_stop(&e->b->loop);
    return;
  }
  Etcdserverpb__LeaseLeasesRequest req = ETCDSERVERPB__LEASE_LEASES_REQUEST__INIT;
  e->inflight = true;
  if (grpc_unary(e->b->conns[0], P_LEASES, &req.base, on_leases, e) < 0)
    uv_stop(&e->b->loop);
}

/* ------------------------------------------------------------ RSS */

static void print_rss(struct kb_opts *o, const char *when) {
  for (int i = 0; i < o->npids; i++) {
    struct kb_rss r;
    if (rss_sample(o->pids[i], &r) == 0)
      printf("rss %s pid %d: VmRSS %ld kB VmHWM %ld kB\n", when, o->pids[i],
             r.rss_kb, r.hwm_kb);
    else
      printf("rss %s pid %d: unavailable\n", when, o->pids[i]);
  }
}

/* ------------------------------------------------------------ run */

static int open_conns(struct bench *b) {
  struct kb_opts *o = b->o;
  char *eps = strdup(o->endpoints);
  char *list[64];
  int n = 0;
  for (char *t = strtok(eps, ","); t && n < 64; t = strtok(NULL, ","))
    list[n++] = t;
  if (n == 0) {
    free(eps);
    return -1;
  }
  b->nconns = o->conns;
  b->conns = calloc((size_t)b->nconns, sizeof *b->conns);
  for (int i = 0; i < b->nconns; i++) {
    b->conns[i] = conn_open(&b->loop, list[i % n],
                            o->use_tls ? &o->tls : NULL);
    if (!b->conns[i]) {
      free(eps);
      return -1;
    }
  }
  free(eps);
  return 0;
}

static void close_conns(struct bench *b) {
  for (int i = 0; i < b->nconns; i++)
    if (b->conns[i])
      conn_close(b->conns[i]);
  if (b->rate_timer.data)
    uv_close((uv_handle_t *)&b->rate_timer, NULL);
  conn_loop_done(&b->loop);
  uv_run(&b->loop, UV_RUN_DEFAULT);
  free(b->conns);
}

static int run_closed(struct kb_opts *o, const char *cmd) {
  struct bench *b = calloc(1, sizeof *b);
  int rc = 1;
  b->o = o;
  b->cmd = cmd;
  uv_loop_init(&b->loop);
  rng_seed(&b->rng, o->seed);
  b->value = malloc((size_t)o->val_size + 1);
  for (int i = 0; i < o->val_size; i++)
    b->value[i] = (uint8_t)('a' + rng_next(&b->rng) % 26);
  result_init(&b->res, cmd);
  result_init(&b->res2, cmd);
  if (strcmp(cmd, "put") == 0) {
    b->issue = issue_put;
  } else if (strcmp(cmd, "range") == 0) {
    b->issue = issue_range;
  } else if (strcmp(cmd, "txn-put") == 0) {
    b->issue = issue_txn_put;
  } else if (strcmp(cmd, "txn-mixed") == 0) {
    b->issue = issue_txn_mixed;
    b->has_res2 = true;
    b->res.name = "write";
    b->res2.name = "read";
  } else if (strcmp(cmd, "lease-grant") == 0) {
    b->issue = issue_grant;
    b->has_res2 = !o->keep;
    b->res2.name = "revoke";
  } else if (strcmp(cmd, "lease-keepalive") == 0) {
    b->issue = ka_send;
  }
  if (strcmp(cmd, "lease-grant") == 0 && o->keep)
    b->ids = calloc((size_t)o->total, sizeof *b->ids);
  if (open_conns(b) < 0)
    goto out;
  b->clients = calloc((size_t)o->clients, sizeof *b->clients);
  for (int i = 0; i < o->clients; i++) {
    b->clients[i].b = b;
    b->clients[i].idx = i;
    b->clients[i].conn = b->conns[i % b->nconns];
  }
  if (strcmp(cmd, "lease-keepalive") == 0) {
    b->setup_pending = o->clients;
    for (int i = 0; i < o->clients; i++) {
      Etcdserverpb__LeaseGrantRequest req = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
      req.ttl = 100;
      if (grpc_unary(b->clients[i].conn, P_GRANT, &req.base, on_setup_grant,
                     &b->clients[i]) < 0)
        goto out;
    }
    uv_run(&b->loop, UV_RUN_DEFAULT);
  }

  printf("kvbench %s: endpoints=%s conns=%d clients=%d total=%ld", cmd,
         o->endpoints, o->conns, o->clients, o->total);
  if (b->setup_failures)
    printf(" (setup: %ld failed LeaseGrants retried)", b->setup_failures);
  if (o->rate > 0)
    printf(" rate=%.0f", o->rate);
  printf("\n");
  print_rss(o, "before");
  long total0 = o->total;
  b->start = now_ns();
  if (o->rate > 0) {
    uv_timer_init(&b->loop, &b->rate_timer);
    b->rate_timer.data = b;
    uv_timer_start(&b->rate_timer, on_rate_tick, 1, 1);
  }
  for (int i = 0; i < o->clients; i++)
    client_next(&b->clients[i]);
  uv_run(&b->loop, UV_RUN_DEFAULT);
  if (b->rate_timer.data)
    uv_timer_stop(&b->rate_timer);
  o->total = total0;

  const char *pfx = "";
  if (b->has_res2) {
    printf("[%s]\n", b->res.name);
    pfx = "  ";
  }
  result_print(&b->res, pfx);
  if (b->has_res2) {
    printf("[%s]\n", b->res2.name);
    result_print(&b->res2, pfx);
  }
  print_client_cpu(b->res.seconds);
  print_rss(o, "after");
  uint64_t errs = result_errors(&b->res) + result_errors(&b->res2);

  if (strcmp(cmd, "lease-grant") == 0 && o->keep && o->wait_expire) {
    qsort(b->ids, (size_t)b->nids, sizeof *b->ids, cmp_id);
    struct expiry e = {.b = b, .t0 = now_ns(), .count = -1};
    uv_timer_init(&b->loop, &e.timer);
    e.timer.data = &e;
    uv_timer_start(&e.timer, on_expiry_tick, 0, 1000);
    uv_run(&b->loop, UV_RUN_DEFAULT);
    uv_timer_stop(&e.timer);
    uv_close((uv_handle_t *)&e.timer, NULL);
    double s = (double)(now_ns() - e.t0) / 1e9;
    if (e.done)
      printf("expired: all leases gone %.1f s after the last grant "
             "(TTL %ld s)\n",
             s, o->ttl);
    else
      printf("expired: NOT all gone after %.1f s (%ld left)\n", s, e.count);
    print_rss(o, "expired");
    uv_run(&b->loop, UV_RUN_NOWAIT);
  }
  rc = errs ? 2 : 0;
out:
  if (b->conns)
    close_conns(b);
  uv_loop_close(&b->loop);
  free(b->clients);
  free(b->value);
  free(b->ids);
  free(b);
  return rc;
}

/* ------------------------------------------------------------ flags */

static void usage(void) {
  fprintf(stderr,
"usage: kvbench COMMAND [flags]\n"
"commands:\n"
"  put                       Put random keys\n"
"  range KEY [END]           Range [--consistency l|s] [--limit N]\n"
"                            [--count-only] [--keys-only] [--prefix]\n"
"  txn-put                   Txn with --txn-ops puts, no compare\n"
"  txn-mixed [KEY] [--end-key E] --rw-ratio R\n"
"                            Txn-wrapped ranges and puts, reads:writes = R\n"
"  lease-grant               LeaseGrant --ttl (revoked after, unless --keep;\n"
"                            --wait-expire: poll until all expired)\n"
"  lease-keepalive           one lease per client (TTL 100), then keep-alives\n"
"                            on a bidi LeaseKeepAlive stream\n"
"  apiserver-mix --tier xs --duration S [--multiple M]\n"
"                            kube-apiserver-shaped open-loop traffic\n"
"global flags (etcd benchmark names):\n"
"  --endpoints a,b  --conns N  --clients N  --total N  --rate R\n"
"  --key-size N  --val-size N  --key-space-size N  --sequential-keys\n"
"  --cacert F --cert F --key F  --insecure-skip-tls-verify\n"
"  --pid PID[,PID...]  sample VmRSS/VmHWM of server processes\n"
"  --seed N\n");
}

enum {
  F_ENDPOINTS = 1000, F_CONNS, F_CLIENTS, F_TOTAL, F_KEYSIZE, F_VALSIZE,
  F_KEYSPACE, F_SEQ, F_RATE, F_CACERT, F_CERT, F_KEY, F_INSECURE, F_PID,
  F_CONSISTENCY, F_LIMIT, F_COUNTONLY, F_KEYSONLY, F_PREFIX, F_TXNOPS,
  F_RWRATIO, F_ENDKEY, F_TTL, F_KEEP, F_WAIT, F_TIER, F_DURATION, F_MULT,
  F_LISTLIMIT, F_SEED, F_APISERVERS, F_INFLIGHT, F_HELP
};

static const struct option longopts[] = {
    {"endpoints", required_argument, NULL, F_ENDPOINTS},
    {"conns", required_argument, NULL, F_CONNS},
    {"clients", required_argument, NULL, F_CLIENTS},
    {"total", required_argument, NULL, F_TOTAL},
    {"key-size", required_argument, NULL, F_KEYSIZE},
    {"val-size", required_argument, NULL, F_VALSIZE},
    {"key-space-size", required_argument, NULL, F_KEYSPACE},
    {"sequential-keys", no_argument, NULL, F_SEQ},
    {"rate", required_argument, NULL, F_RATE},
    {"cacert", required_argument, NULL, F_CACERT},
    {"cert", required_argument, NULL, F_CERT},
    {"key", required_argument, NULL, F_KEY},
    {"insecure-skip-tls-verify", no_argument, NULL, F_INSECURE},
    {"pid", required_argument, NULL, F_PID},
    {"consistency", required_argument, NULL, F_CONSISTENCY},
    {"limit", required_argument, NULL, F_LIMIT},
    {"count-only", no_argument, NULL, F_COUNTONLY},
    {"keys-only", no_argument, NULL, F_KEYSONLY},
    {"prefix", no_argument, NULL, F_PREFIX},
    {"txn-ops", required_argument, NULL, F_TXNOPS},
    {"rw-ratio", required_argument, NULL, F_RWRATIO},
    {"end-key", required_argument, NULL, F_ENDKEY},
    {"ttl", required_argument, NULL, F_TTL},
    {"keep", no_argument, NULL, F_KEEP},
    {"wait-expire", no_argument, NULL, F_WAIT},
    {"tier", required_argument, NULL, F_TIER},
    {"duration", required_argument, NULL, F_DURATION},
    {"multiple", required_argument, NULL, F_MULT},
    {"list-limit", required_argument, NULL, F_LISTLIMIT},
    {"seed", required_argument, NULL, F_SEED},
    {"apiservers", required_argument, NULL, F_APISERVERS},
    {"inflight", required_argument, NULL, F_INFLIGHT},
    {"help", no_argument, NULL, F_HELP},
    {NULL, 0, NULL, 0}};

static char prefix_end_buf[512];

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    usage();
    return 0;
  }
  if (argc < 2 || argv[1][0] == '-') {
    usage();
    return 64;
  }
  const char *cmd = argv[1];
  struct kb_opts o = {
      .endpoints = "127.0.0.1:2379",
      .conns = 1,
      .clients = 1,
      .total = 10000,
      .key_size = 8,
      .val_size = 8,
      .key_space = 1,
      .limit = 0,
      .txn_ops = 1,
      .rw_ratio = 1.0,
      .ttl = 100,
      .tier = "xs",
      .duration = 60,
      .multiple = 1.0,
      .list_limit = 100,
      .seed = 0x6b387321,
      .apiservers = 3,
      .inflight = 200,
  };
  bool prefix = false;
  bool limit_set = false;
  const char *end_key = NULL;
  optind = 2;
  int ch;
  while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (ch) {
    case F_ENDPOINTS: o.endpoints = optarg; break;
    case F_CONNS: o.conns = atoi(optarg); break;
    case F_CLIENTS: o.clients = atoi(optarg); break;
    case F_TOTAL: o.total = atol(optarg); break;
    case F_KEYSIZE: o.key_size = atoi(optarg); break;
    case F_VALSIZE: o.val_size = atoi(optarg); break;
    case F_KEYSPACE: o.key_space = atol(optarg); break;
    case F_SEQ: o.sequential = true; break;
    case F_RATE: o.rate = atof(optarg); break;
    case F_CACERT: o.tls.cacert = optarg; o.use_tls = true; break;
    case F_CERT: o.tls.cert = optarg; o.use_tls = true; break;
    case F_KEY: o.tls.key = optarg; break;
    case F_INSECURE: o.tls.insecure = true; break;
    case F_PID: {
      char *s = optarg;
      while (*s && o.npids < 8) {
        o.pids[o.npids++] = (int)strtol(s, &s, 10);
        if (*s == ',')
          s++;
        else
          break;
      }
      break;
    }
    case F_CONSISTENCY:
      if (strcmp(optarg, "s") == 0)
        o.serializable = true;
      else if (strcmp(optarg, "l") != 0) {
        fprintf(stderr, "kvbench: --consistency l or s\n");
        return 64;
      }
      break;
    case F_LIMIT: o.limit = atol(optarg); limit_set = true; break;
    case F_COUNTONLY: o.count_only = true; break;
    case F_KEYSONLY: o.keys_only = true; break;
    case F_PREFIX: prefix = true; break;
    case F_TXNOPS: o.txn_ops = atoi(optarg); break;
    case F_RWRATIO: o.rw_ratio = atof(optarg); break;
    case F_ENDKEY: end_key = optarg; break;
    case F_TTL: o.ttl = atol(optarg); break;
    case F_KEEP: o.keep = true; break;
    case F_WAIT: o.wait_expire = true; break;
    case F_TIER: o.tier = optarg; break;
    case F_DURATION: o.duration = atof(optarg); break;
    case F_MULT: o.multiple = atof(optarg); break;
    case F_LISTLIMIT: o.list_limit = atol(optarg); break;
    case F_SEED: o.seed = strtoull(optarg, NULL, 0); break;
    case F_APISERVERS: o.apiservers = atoi(optarg); break;
    case F_INFLIGHT: o.inflight = atoi(optarg); break;
    case F_HELP: usage(); return 0;
    default: usage(); return 64;
    }
  }
  if (o.conns < 1 || o.clients < 1 || o.total < 1 || o.key_size < 1 ||
      o.key_size > 200 || o.val_size < 0 || o.txn_ops < 1 || o.txn_ops > 64) {
    fprintf(stderr, "kvbench: bad --conns/--clients/--total/--key-size/"
                    "--val-size/--txn-ops\n");
    return 64;
  }
  if (o.tls.key && !o.tls.cert) {
    fprintf(stderr, "kvbench: --key needs --cert\n");
    return 64;
  }
  if (strstr(o.endpoints, "https://"))
    o.use_tls = true;
  if (o.use_tls && !o.tls.cacert)
    o.tls.insecure = true;

  if (strcmp(cmd, "range") == 0 || strcmp(cmd, "txn-mixed") == 0) {
    if (optind < argc)
      o.key = argv[optind++];
    if (optind < argc)
      o.end = argv[optind++];
    if (end_key)
      o.end = end_key;
    if (!o.key) {
      if (strcmp(cmd, "range") == 0) {
        fprintf(stderr, "kvbench: range needs KEY [END]\n");
        return 64;
      }
      o.key = "0"; /* txn-mixed: every generated key */
      if (!o.end)
        o.end = ":";
    }
    if (strcmp(cmd, "txn-mixed") == 0 && !limit_set)
      o.limit = 1000; /* etcd's default */
    if (prefix && !o.end) {
      size_t n = strlen(o.key);
      if (n == 0 || n >= sizeof prefix_end_buf) {
        fprintf(stderr, "kvbench: bad --prefix key\n");
        return 64;
      }
      memcpy(prefix_end_buf, o.key, n + 1);
      while (n > 0 && (unsigned char)prefix_end_buf[n - 1] == 0xff)
        prefix_end_buf[--n] = 0;
      if (n == 0) {
        fprintf(stderr, "kvbench: --prefix of all 0xff bytes\n");
        return 64;
      }
      prefix_end_buf[n - 1]++;
      o.end = prefix_end_buf;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "kvbench: unexpected argument %s\n", argv[optind]);
    return 64;
  }
  if (strcmp(cmd, "apiserver-mix") == 0)
    return mix_main(&o);
  if (strcmp(cmd, "put") == 0 || strcmp(cmd, "range") == 0 ||
      strcmp(cmd, "txn-put") == 0 || strcmp(cmd, "txn-mixed") == 0 ||
      strcmp(cmd, "lease-grant") == 0 || strcmp(cmd, "lease-keepalive") == 0)
    return run_closed(&o, cmd);
  fprintf(stderr, "kvbench: unknown command %s\n", cmd);
  usage();
  return 64;
}

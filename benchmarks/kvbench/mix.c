/* apiserver-mix: the storage-facing traffic of N kube-apiservers
 * (shared/reference/apiserver-load.md §5), open loop.
 *
 * Keyspace: tier XS = tier L ÷ 500 (300 pods, 10 nodes and node leases,
 * 20 of each controller resource, ...). Rates: §5.3's tier-L actor rates
 * (≈ 955 req/s) times --multiple. Arrivals are one Poisson process over the
 * sum of the rates (fixed seed), each arrival drawing its op type by rate:
 * the same as independent Poisson actors. Latency runs from the scheduled
 * time, so queueing behind the in-flight cap (200 per apiserver) or behind
 * a busy key (an object is updated by one writer at a time, as a
 * GuaranteedUpdate loop would) is counted.
 *
 * Request shapes (§1.2): create = Txn[MOD(K)==0 → Put], update =
 * Txn[MOD(K)==rev → Put | Range(K)], delete = Txn[MOD(K)==rev → Delete |
 * Range(K)]; 3 % of updates carry rev-1 and are retried with the returned
 * mod_revision. Event creates carry a lease from a per-apiserver lease
 * manager (LeaseGrant(3660) when older than 60 s or 1000 objects). Gets are
 * Range(K, limit 1); list pages are Range(prefix, end, limit, revision
 * pinned by the first page); count-only / keys-only polls; stale reads at
 * a revision 1–240 s old; masterleases LeaseGrant(15) + update with it.
 * Not modelled (yet): watches, compaction, NodeStatus' 16 KiB nodes are in
 * the object-update mix only. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvbench.h"

#define P_RANGE "/etcdserverpb.KV/Range"
#define P_TXN "/etcdserverpb.KV/Txn"
#define P_GRANT "/etcdserverpb.Lease/LeaseGrant"

enum res {
  R_PODS, R_NODES, R_NLEASES, R_LELEASES, R_EVENTS, R_CM, R_SECRETS, R_SVC,
  R_EPS, R_RS, R_DEPLOY, R_NS, R_MASTER, NRES
};

/* op types (= report classes), then extra report classes */
enum op {
  O_LEASE_UPD, O_OBJ_UPD, O_EVENT_CREATE, O_GET, O_CURREV, O_CREATE,
  O_DELETE, O_LIST, O_COUNT, O_KEYS, O_STALE, O_MASTER, NOPS,
  C_CONFLICT = NOPS, C_GRANT, NCLASS
};

static const char *const class_name[NCLASS] = {
    "update small (node lease)", "update object", "create event+lease",
    "get", "get-current-rev", "create pod", "delete pod",
    "list page (pinned rev)", "count-only", "keys-only", "stale-rev read",
    "masterlease grant+update", "  injected conflict try", "  LeaseGrant"};

/* tier-L rates per second (§5.3) */
static const double base_rate[NOPS] = {500, 192, 100, 80, 30, 22, 20,
                                       5,   3.5, 0.5, 2,  0.3};

struct mkey {
  uint32_t idx;
  int64_t rev;
  int64_t lease;
  bool exists;
  bool busy;
};

struct mop;

struct resource {
  const char *name;
  const char *prefix;
  int conn; /* index of the per-apiserver connection for its prefix */
  int nlive;
  int cap;
  struct mkey *keys;
  struct mop *backlog, *backlog_tail;
};

struct apisrv {
  int id;
  struct kb_conn **conns;
  int inflight;
  struct mop *q, *q_tail;
  int64_t ev_lease;
  uint64_t ev_lease_t;
  int ev_lease_objs;
  bool granting;
  uint64_t grant_t0;
  struct mop *lease_waiters;
};

struct cursor {
  bool active, busy;
  int64_t rev;
  uint8_t next[128];
  size_t next_len;
};

struct mix;

struct mop {
  struct mix *m;
  int type;
  uint64_t sched, t_try;
  struct apisrv *as;
  struct resource *r;
  struct mkey *k;
  struct cursor *cur;
  bool inject;
  bool counted; /* holds an in-flight slot */
  int tries;
  int64_t lease;
  char key[128];
  struct mop *next;
};

#define NCURSORS 32
#define REVHIST 512

struct mix {
  uv_loop_t loop;
  struct kb_opts *o;
  struct kb_rng rng;
  struct resource res[NRES];
  struct apisrv *as;
  int nas, nconn;
  struct kb_result cls[NCLASS];
  uint64_t offered[NOPS];
  double rate[NOPS], total_rate;
  uint64_t t_start, t_end, next_t;
  uv_timer_t tick;
  int rr;
  uint64_t ev_counter;
  struct cursor cursors[NCURSORS];
  int64_t last_rev;
  struct { uint64_t t; int64_t rev; } revhist[REVHIST];
  int nrev;
  uint64_t last_revsample;
  uint64_t unexpected_conflicts, injected, requests, gave_up, vanished;
  uint64_t load_errors;
  int wiped;
  long live_ops;
  uint8_t *rand;
  size_t rand_len;
  uint8_t *val;
  /* load phase */
  bool loading;
  int load_r, load_i;
  long load_inflight;
};

/* ------------------------------------------------------------ keys and values */

static void key_name(struct mix *m, int r, uint32_t i, char *out, size_t cap) {
  switch (r) {
  case R_PODS: snprintf(out, cap, "/registry/pods/ns-%03u/pod-%06u", i % 5, i); break;
  case R_NODES: snprintf(out, cap, "/registry/minions/node-%05u", i); break;
  case R_NLEASES: snprintf(out, cap, "/registry/leases/kube-node-lease/node-%05u", i); break;
  case R_LELEASES: snprintf(out, cap, "/registry/leases/kube-system/leader-%02u", i); break;
  case R_EVENTS: snprintf(out, cap, "/registry/events/ns-%03u/ev-%08x", i % 5, i); break;
  case R_CM: snprintf(out, cap, "/registry/configmaps/ns-%03u/cm-%05u", i % 5, i); break;
  case R_SECRETS: snprintf(out, cap, "/registry/secrets/ns-%03u/secret-%05u", i % 5, i); break;
  case R_SVC: snprintf(out, cap, "/registry/services/specs/ns-%03u/svc-%05u", i % 5, i); break;
  case R_EPS: snprintf(out, cap, "/registry/endpointslices/ns-%03u/eps-%05u", i % 5, i); break;
  case R_RS: snprintf(out, cap, "/registry/replicasets/ns-%03u/rs-%05u", i % 5, i); break;
  case R_DEPLOY: snprintf(out, cap, "/registry/deployments/ns-%03u/deploy-%05u", i % 5, i); break;
  case R_NS: snprintf(out, cap, "/registry/namespaces/ns-%03u", i); break;
  default: snprintf(out, cap, "/registry/masterleases/10.0.0.%u", i + 1); break;
  }
}

static double uni(struct mix *m, double a, double b) {
  return a + (b - a) * rng_unit(&m->rng);
}

static double gauss(struct mix *m) {
  double u = rng_unit(&m->rng), v = rng_unit(&m->rng);
  if (u < 1e-300)
    u = 1e-300;
  return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

static double clampd(double x, double lo, double hi) {
  return x < lo ? lo : x > hi ? hi : x;
}

/* §5.2's value-size distributions. */
static size_t value_size(struct mix *m, int r) {
  double x;
  switch (r) {
  case R_PODS:
    if (rng_unit(&m->rng) < 0.005)
      return 70 * 1024;
    x = exp(log(6144.0) + 0.5 * gauss(m));
    return (size_t)clampd(x, 2048, 65536);
  case R_NODES: return (size_t)clampd(16384 + 3072 * gauss(m), 8192, 32768);
  case R_NLEASES: return (size_t)uni(m, 350, 551);
  case R_EVENTS: return (size_t)uni(m, 600, 1537);
  case R_CM:
    x = rng_unit(&m->rng);
    if (x < 0.70) return (size_t)uni(m, 512, 2049);
    if (x < 0.95) return (size_t)uni(m, 2048, 65537);
    if (x < 0.999) return (size_t)uni(m, 65536, 524289);
    return 1000 * 1024;
  case R_SECRETS: return (size_t)uni(m, 1024, 8193);
  case R_SVC: return (size_t)uni(m, 800, 2049);
  case R_EPS: return (size_t)uni(m, 1024, 16385);
  case R_RS: case R_DEPLOY: return (size_t)uni(m, 3072, 8193);
  case R_MASTER: return 100;
  default: return 512;
  }
}

/* Fills m->val with "k8s\0" + incompressible bytes; returns the length. */
static size_t make_value(struct mix *m, int r) {
  size_t n = value_size(m, r);
  if (n < 8)
    n = 8;
  memcpy(m->val, "k8s", 4);
  size_t off = (size_t)(rng_next(&m->rng) % (m->rand_len - n));
  memcpy(m->val + 4, m->rand + off, n - 4);
  return n;
}

static void prefix_end(const char *p, char *out, size_t cap) {
  snprintf(out, cap, "%s", p);
  size_t n = strlen(out);
  out[n - 1]++;
}

/* ------------------------------------------------------------ bookkeeping */

static void start_op(struct mop *op);

static void note_rev(struct mix *m, const Etcdserverpb__ResponseHeader *h) {
  if (h && h->revision > m->last_rev)
    m->last_rev = h->revision;
}

static void as_enqueue(struct apisrv *as, struct mop *op) {
  op->next = NULL;
  if (as->q_tail)
    as->q_tail->next = op;
  else
    as->q = op;
  as->q_tail = op;
}

/* Admits op under its apiserver's in-flight cap, or queues it. */
static void admit(struct mop *op) {
  struct apisrv *as = op->as;
  if (as->inflight >= op->m->o->inflight) {
    as_enqueue(as, op);
    return;
  }
  start_op(op);
}

static void release(struct mop *op) {
  struct mix *m = op->m;
  struct apisrv *as = op->as;
  struct resource *r = op->r;
  if (op->k)
    op->k->busy = false;
  if (op->cur)
    op->cur->busy = false;
  if (op->counted)
    as->inflight--;
  m->live_ops--;
  free(op);
  /* a key of r became free: give it to r's oldest waiting op */
  if (r && r->backlog) {
    struct mop *w = r->backlog;
    r->backlog = w->next;
    if (!r->backlog)
      r->backlog_tail = NULL;
    admit(w);
  }
  while (as->q && as->inflight < m->o->inflight) {
    struct mop *w = as->q;
    as->q = w->next;
    if (!as->q)
      as->q_tail = NULL;
    start_op(w);
  }
}

static void load_next(struct mix *m);

static void op_done(struct mop *op, int status, const char *errmsg) {
  struct mix *m = op->m;
  if (m->loading) {
    if (status != 0)
      m->load_errors++;
    release(op);
    m->load_inflight--;
    load_next(m);
    return;
  }
  result_record(&m->cls[op->type], status, now_ns() - op->sched, errmsg);
  release(op);
}

/* Picks a random free key of r with exists == want (any when want < 0). */
static struct mkey *pick_key(struct mix *m, struct resource *r, int want) {
  int n = r->cap;
  for (int t = 0; t < 16; t++) {
    struct mkey *k = &r->keys[rng_next(&m->rng) % (uint64_t)n];
    if (!k->busy && (want < 0 || k->exists == (want != 0)))
      return k;
  }
  /* linear scan from a random point */
  int s = (int)(rng_next(&m->rng) % (uint64_t)n);
  for (int i = 0; i < n; i++) {
    struct mkey *k = &r->keys[(s + i) % n];
    if (!k->busy && (want < 0 || k->exists == (want != 0)))
      return k;
  }
  return NULL;
}

static void to_backlog(struct mop *op) {
  struct resource *r = op->r;
  op->next = NULL;
  if (r->backlog_tail)
    r->backlog_tail->next = op;
  else
    r->backlog = op;
  r->backlog_tail = op;
}

static int send_req(struct mop *op, const char *path, const ProtobufCMessage *msg,
                kb_unary_cb cb) {
  struct mix *m = op->m;
  int ci = op->r ? op->r->conn : 0;
  m->requests++;
  op->t_try = now_ns();
  if (grpc_unary(op->as->conns[ci], path, msg, cb, op) < 0) {
    op_done(op, KB_STATUS_TRANSPORT, "connection is down");
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------ write shapes */

static void on_txn(void *arg, int status, const uint8_t *msg, size_t len,
                   const char *errmsg);

static void send_write(struct mop *op) {
  struct mix *m = op->m;
  bool create = op->type == O_CREATE || op->type == O_EVENT_CREATE ||
                (op->k && !op->k->exists);
  bool del = op->type == O_DELETE;
  Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT;
  Etcdserverpb__Compare *cmpp = &cmp;
  cmp.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
  cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
  cmp.key.data = (uint8_t *)op->key;
  cmp.key.len = strlen(op->key);
  cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
  cmp.mod_revision = create ? 0 : op->k->rev - (op->inject ? 1 : 0);

  Etcdserverpb__PutRequest put = ETCDSERVERPB__PUT_REQUEST__INIT;
  Etcdserverpb__DeleteRangeRequest dr = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
  Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
  Etcdserverpb__RequestOp ok = ETCDSERVERPB__REQUEST_OP__INIT, fail =
                                  ETCDSERVERPB__REQUEST_OP__INIT;
  Etcdserverpb__RequestOp *okp = &ok, *failp = &fail;
  if (del) {
    dr.key = cmp.key;
    ok.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    ok.request_delete_range = &dr;
  } else {
    put.key = cmp.key;
    put.value.data = m->val;
    put.value.len = make_value(m, (int)(op->r - m->res));
    put.lease = op->lease;
    ok.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    ok.request_put = &put;
  }
  rr.key = cmp.key;
  fail.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
  fail.request_range = &rr;
  Etcdserverpb__TxnRequest txn = ETCDSERVERPB__TXN_REQUEST__INIT;
  txn.n_compare = 1;
  txn.compare = &cmpp;
  txn.n_success = 1;
  txn.success = &okp;
  if (!create) {
    txn.n_failure = 1;
    txn.failure = &failp;
  }
  send_req(op, P_TXN, &txn.base, on_txn);
}

static void on_get_after_create(void *arg, int status, const uint8_t *msg,
                                size_t len, const char *errmsg) {
  struct mop *op = arg;
  if (status == 0) {
    Etcdserverpb__RangeResponse *r =
        etcdserverpb__range_response__unpack(NULL, len, msg);
    if (r) {
      note_rev(op->m, r->header);
      if (r->n_kvs > 0 && op->k) {
        op->k->exists = true;
        op->k->rev = r->kvs[0]->mod_revision;
      }
      etcdserverpb__range_response__free_unpacked(r, NULL);
    }
  }
  op_done(op, status, errmsg);
}

static void on_txn(void *arg, int status, const uint8_t *msg, size_t len,
                   const char *errmsg) {
  struct mop *op = arg;
  struct mix *m = op->m;
  if (status != 0) {
    op_done(op, status, errmsg);
    return;
  }
  Etcdserverpb__TxnResponse *t = etcdserverpb__txn_response__unpack(NULL, len, msg);
  if (!t) {
    op_done(op, KB_STATUS_TRANSPORT, "cannot decode TxnResponse");
    return;
  }
  note_rev(m, t->header);
  int64_t rev = t->header ? t->header->revision : 0;
  bool create = op->type == O_CREATE || op->type == O_EVENT_CREATE ||
                (op->k && !op->k->exists && op->type != O_DELETE);
  if (t->succeeded) {
    etcdserverpb__txn_response__free_unpacked(t, NULL);
    if (op->k) {
      if (op->type == O_DELETE) {
        op->k->exists = false;
        op->k->rev = 0;
      } else {
        op->k->exists = true;
        op->k->rev = rev;
        op->k->lease = op->lease;
      }
    }
    op_done(op, 0, "");
    return;
  }
  /* failed compare */
  int64_t cur = 0;
  bool found = false;
  if (t->n_responses > 0 && t->responses[0]->response_case ==
                                ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE) {
    Etcdserverpb__RangeResponse *rr = t->responses[0]->response_range;
    if (rr->n_kvs > 0) {
      found = true;
      cur = rr->kvs[0]->mod_revision;
    }
  }
  etcdserverpb__txn_response__free_unpacked(t, NULL);
  if (create) {
    /* the key exists already (a previous run): learn its revision */
    m->unexpected_conflicts++;
    Etcdserverpb__RangeRequest rq = ETCDSERVERPB__RANGE_REQUEST__INIT;
    rq.key.data = (uint8_t *)op->key;
    rq.key.len = strlen(op->key);
    rq.limit = 1;
    send_req(op, P_RANGE, &rq.base, on_get_after_create);
    return;
  }
  if (op->inject) {
    if (!m->loading)
      result_record(&m->cls[C_CONFLICT], 0, now_ns() - op->t_try, "");
    op->inject = false;
  } else {
    m->unexpected_conflicts++;
  }
  if (!found) {
    /* deleted meanwhile (a masterlease whose lease expired): an update
     * recreates it, a delete is done */
    m->vanished++;
    op->k->exists = false;
    op->k->rev = 0;
    if (op->type == O_DELETE) {
      op_done(op, 0, "");
      return;
    }
  } else {
    op->k->rev = cur;
  }
  if (++op->tries > 5) {
    m->gave_up++;
    op_done(op, 10, "update retried 5 times");
    return;
  }
  send_write(op);
}

/* ------------------------------------------------------------ event leases */

static void on_event_grant(void *arg, int status, const uint8_t *msg,
                           size_t len, const char *errmsg) {
  struct apisrv *as = arg;
  struct mix *m = NULL;
  struct mop *w = as->lease_waiters;
  if (w)
    m = w->m;
  as->granting = false;
  int64_t id = 0;
  if (status == 0) {
    Etcdserverpb__LeaseGrantResponse *r =
        etcdserverpb__lease_grant_response__unpack(NULL, len, msg);
    if (r) {
      id = r->id;
      etcdserverpb__lease_grant_response__free_unpacked(r, NULL);
    }
  }
  if (m && !m->loading)
    result_record(&m->cls[C_GRANT], status, now_ns() - as->grant_t0, errmsg);
  as->ev_lease = id;
  as->ev_lease_t = now_ns();
  as->ev_lease_objs = 0;
  as->lease_waiters = NULL;
  while (w) {
    struct mop *n = w->next;
    w->lease = id;
    as->ev_lease_objs++;
    send_write(w);
    w = n;
  }
}

static void event_create(struct mop *op) {
  struct mix *m = op->m;
  struct apisrv *as = op->as;
  uint32_t n = (uint32_t)m->ev_counter++;
  key_name(m, R_EVENTS, n, op->key, sizeof op->key);
  struct resource *r = &m->res[R_EVENTS];
  struct mkey *k = &r->keys[n % (uint32_t)r->cap];
  if (!k->busy) {
    k->busy = true;
    k->idx = n;
    k->exists = false;
    op->k = k;
  }
  uint64_t now = now_ns();
  if (as->ev_lease && now - as->ev_lease_t < 60ull * 1000000000u &&
      as->ev_lease_objs < 1000) {
    op->lease = as->ev_lease;
    as->ev_lease_objs++;
    send_write(op);
    return;
  }
  op->next = as->lease_waiters;
  as->lease_waiters = op;
  if (as->granting)
    return;
  as->granting = true;
  as->grant_t0 = now;
  Etcdserverpb__LeaseGrantRequest g = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
  g.ttl = 3600 + 60;
  m->requests++;
  if (grpc_unary(as->conns[r->conn], P_GRANT, &g.base, on_event_grant, as) < 0)
    on_event_grant(as, KB_STATUS_TRANSPORT, NULL, 0, "connection is down");
}

/* ------------------------------------------------------------ masterleases */

static void on_master_grant(void *arg, int status, const uint8_t *msg,
                            size_t len, const char *errmsg) {
  struct mop *op = arg;
  struct mix *m = op->m;
  if (!m->loading)
    result_record(&m->cls[C_GRANT], status, now_ns() - op->t_try, errmsg);
  if (status != 0) {
    op_done(op, status, errmsg);
    return;
  }
  Etcdserverpb__LeaseGrantResponse *r =
      etcdserverpb__lease_grant_response__unpack(NULL, len, msg);
  if (r) {
    op->lease = r->id;
    etcdserverpb__lease_grant_response__free_unpacked(r, NULL);
  }
  send_write(op);
}

/* ------------------------------------------------------------ reads */

static void on_range(void *arg, int status, const uint8_t *msg, size_t len,
                     const char *errmsg) {
  struct mop *op = arg;
  if (status == 0) {
    Etcdserverpb__RangeResponse *r =
        etcdserverpb__range_response__unpack(NULL, len, msg);
    if (!r) {
      status = KB_STATUS_TRANSPORT;
      errmsg = "cannot decode RangeResponse";
    } else {
      note_rev(op->m, r->header);
      struct cursor *c = op->cur;
      if (c) {
        if (!c->active && r->header)
          c->rev = r->header->revision;
        if (r->more && r->n_kvs > 0 &&
            r->kvs[r->n_kvs - 1]->key.len + 1 <= sizeof c->next) {
          ProtobufCBinaryData *lk = &r->kvs[r->n_kvs - 1]->key;
          memcpy(c->next, lk->data, lk->len);
          c->next[lk->len] = 0; /* continue after the last key */
          c->next_len = lk->len + 1;
          c->active = true;
        } else {
          c->active = false;
        }
      }
      etcdserverpb__range_response__free_unpacked(r, NULL);
    }
  }
  op_done(op, status, errmsg);
}

static int64_t stale_rev(struct mix *m) {
  if (m->nrev == 0)
    return 0;
  int n = m->nrev < REVHIST ? m->nrev : REVHIST;
  uint64_t now = now_ns();
  double age = uni(m, 1, 240);
  /* newest sample at least `age` old, else the oldest we have */
  for (int i = 1; i <= n; i++) {
    int j = (m->nrev - i) % REVHIST;
    if ((double)(now - m->revhist[j].t) / 1e9 >= age)
      return m->revhist[j].rev;
  }
  return m->revhist[(m->nrev - n) % REVHIST].rev;
}

static void send_range(struct mop *op, const char *key, size_t klen,
                       const char *end, long limit, int64_t rev, bool count,
                       bool keys) {
  Etcdserverpb__RangeRequest rq = ETCDSERVERPB__RANGE_REQUEST__INIT;
  rq.key.data = (uint8_t *)key;
  rq.key.len = klen;
  if (end) {
    rq.range_end.data = (uint8_t *)end;
    rq.range_end.len = strlen(end);
  }
  rq.limit = limit;
  rq.revision = rev;
  rq.count_only = count;
  rq.keys_only = keys;
  send_req(op, P_RANGE, &rq.base, on_range);
}

/* ------------------------------------------------------------ dispatch */

static const int upd_weights[][2] = {
    {R_PODS, 120}, {R_NODES, 17}, {R_EVENTS, 20}, {R_EPS, 20}, {R_RS, 5},
    {R_DEPLOY, 5}, {R_CM, 2},     {R_SECRETS, 1}, {R_LELEASES, 5}};

static int pick_update_res(struct mix *m) {
  int tot = 0;
  for (size_t i = 0; i < sizeof upd_weights / sizeof upd_weights[0]; i++)
    tot += upd_weights[i][1];
  int x = (int)(rng_next(&m->rng) % (uint64_t)tot);
  for (size_t i = 0; i < sizeof upd_weights / sizeof upd_weights[0]; i++) {
    if (x < upd_weights[i][1])
      return upd_weights[i][0];
    x -= upd_weights[i][1];
  }
  return R_PODS;
}

static int pick_read_res(struct mix *m) {
  static const int rs[] = {R_PODS, R_PODS, R_PODS, R_NODES, R_NLEASES, R_CM,
                           R_SECRETS, R_SVC, R_EPS, R_RS, R_DEPLOY};
  return rs[rng_next(&m->rng) % (sizeof rs / sizeof rs[0])];
}

/* Starts op: takes a key (or waits in the resource's backlog), takes an
 * in-flight slot and sends the first request. */
static void start_op(struct mop *op) {
  struct mix *m = op->m;
  char end[128];
  if (!op->counted) {
    op->counted = true;
    op->as->inflight++;
  }
  switch (op->type) {
  case O_LEASE_UPD:
  case O_OBJ_UPD:
  case O_DELETE:
  case O_CREATE:
  case O_MASTER: {
    if (!op->r) {
      int r = op->type == O_LEASE_UPD ? R_NLEASES
              : op->type == O_MASTER  ? R_MASTER
              : op->type == O_OBJ_UPD ? pick_update_res(m)
                                      : R_PODS;
      op->r = &m->res[r];
    }
    int want = op->type == O_CREATE ? 0 : op->type == O_MASTER ? -1 : 1;
    struct mkey *k = pick_key(m, op->r, want);
    if (!k) {
      /* no free key: wait for one, without holding an in-flight slot */
      op->counted = false;
      op->as->inflight--;
      to_backlog(op);
      return;
    }
    k->busy = true;
    op->k = k;
    key_name(m, (int)(op->r - m->res), k->idx, op->key, sizeof op->key);
    op->lease = k->lease;
    if (op->type == O_OBJ_UPD || op->type == O_LEASE_UPD)
      op->inject = rng_unit(&m->rng) < 0.03;
    if (op->type == O_MASTER) {
      Etcdserverpb__LeaseGrantRequest g = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
      g.ttl = 15;
      send_req(op, P_GRANT, &g.base, on_master_grant);
      return;
    }
    if (op->type == O_CREATE)
      op->lease = 0;
    send_write(op);
    return;
  }
  case O_EVENT_CREATE:
    op->r = &m->res[R_EVENTS];
    event_create(op);
    return;
  case O_GET: {
    int r = pick_read_res(m);
    op->r = &m->res[r];
    key_name(m, r, (uint32_t)(rng_next(&m->rng) % (uint64_t)op->r->nlive),
             op->key, sizeof op->key);
    send_range(op, op->key, strlen(op->key), NULL, 1, 0, false, false);
    return;
  }
  case O_CURREV:
  case O_COUNT:
  case O_KEYS: {
    int r = m->rr++ % NRES;
    op->r = &m->res[r];
    prefix_end(op->r->prefix, end, sizeof end);
    send_range(op, op->r->prefix, strlen(op->r->prefix), end,
               op->type == O_CURREV ? 1 : 0, 0, op->type == O_COUNT,
               op->type == O_KEYS);
    return;
  }
  case O_LIST: {
    op->r = &m->res[R_PODS];
    struct cursor *c = NULL;
    for (int i = 0; i < NCURSORS && !c; i++)
      if (m->cursors[i].active && !m->cursors[i].busy)
        c = &m->cursors[i];
    for (int i = 0; i < NCURSORS && !c; i++)
      if (!m->cursors[i].active && !m->cursors[i].busy)
        c = &m->cursors[i];
    prefix_end(op->r->prefix, end, sizeof end);
    if (!c) {
      send_range(op, op->r->prefix, strlen(op->r->prefix), end,
                 m->o->list_limit, 0, false, false);
      return;
    }
    c->busy = true;
    op->cur = c;
    if (c->active)
      send_range(op, (const char *)c->next, c->next_len, end,
                 m->o->list_limit, c->rev, false, false);
    else
      send_range(op, op->r->prefix, strlen(op->r->prefix), end,
                 m->o->list_limit, 0, false, false);
    return;
  }
  case O_STALE: {
    op->r = &m->res[R_PODS];
    prefix_end(op->r->prefix, end, sizeof end);
    send_range(op, op->r->prefix, strlen(op->r->prefix), end, 1,
               stale_rev(m), false, false);
    return;
  }
  default:
    op_done(op, 12, "unknown op");
  }
}

static void new_op(struct mix *m, int type, uint64_t sched) {
  struct mop *op = calloc(1, sizeof *op);
  op->m = m;
  op->type = type;
  op->sched = sched;
  op->as = &m->as[rng_next(&m->rng) % (uint64_t)m->nas];
  m->live_ops++;
  m->offered[type]++;
  admit(op);
}

static int draw_type(struct mix *m) {
  double x = rng_unit(&m->rng) * m->total_rate;
  for (int i = 0; i < NOPS; i++) {
    if (x < m->rate[i])
      return i;
    x -= m->rate[i];
  }
  return O_LEASE_UPD;
}

static void on_tick(uv_timer_t *t) {
  struct mix *m = t->data;
  uint64_t now = now_ns();
  if (now - m->last_revsample >= 1000000000u && m->last_rev > 0) {
    m->revhist[m->nrev % REVHIST].t = now;
    m->revhist[m->nrev % REVHIST].rev = m->last_rev;
    m->nrev++;
    m->last_revsample = now;
  }
  int budget = 5000;
  while (m->next_t <= now && m->next_t < m->t_end && budget-- > 0) {
    new_op(m, draw_type(m), m->next_t);
    double gap = -log(1.0 - rng_unit(&m->rng)) / m->total_rate;
    m->next_t += (uint64_t)(gap * 1e9);
  }
  if (now >= m->t_end && m->live_ops == 0)
    uv_stop(&m->loop);
  if (now >= m->t_end + 30ull * 1000000000u) {
    fprintf(stderr, "kvbench: %ld ops still in flight 30 s after the end\n",
            m->live_ops);
    uv_stop(&m->loop);
  }
}

/* ------------------------------------------------------------ load phase */

static void load_next(struct mix *m) {
  while (m->load_inflight < 64) {
    while (m->load_r < NRES &&
           (m->load_r == R_EVENTS || m->load_i >= m->res[m->load_r].nlive)) {
      m->load_r++;
      m->load_i = 0;
    }
    if (m->load_r >= NRES) {
      if (m->load_inflight == 0)
        uv_stop(&m->loop);
      return;
    }
    struct resource *r = &m->res[m->load_r];
    struct mop *op = calloc(1, sizeof *op);
    op->m = m;
    op->type = O_CREATE;
    op->r = r;
    op->as = &m->as[m->load_i % m->nas];
    op->k = &r->keys[m->load_i++];
    op->k->busy = true;
    key_name(m, (int)(r - m->res), op->k->idx, op->key, sizeof op->key);
    m->live_ops++;
    m->load_inflight++;
    op->counted = true;
    op->as->inflight++;
    send_write(op);
  }
}

/* ------------------------------------------------------------ main */

static void on_wiped(void *arg, int status, const uint8_t *msg, size_t len,
                     const char *errmsg) {
  struct mix *m = arg;
  m->wiped = status;
  if (status != 0)
    fprintf(stderr, "kvbench: DeleteRange /registry/: %s %s\n",
            grpc_code_name(status), errmsg);
  uv_stop(&m->loop);
}

static const struct {
  int r;
  const char *name, *prefix;
  int live, cap;
} tier_xs[NRES] = {
    {R_PODS, "pods", "/registry/pods/", 300, 600},
    {R_NODES, "nodes", "/registry/minions/", 10, 10},
    {R_NLEASES, "node leases", "/registry/leases/", 10, 10},
    {R_LELEASES, "leader leases", "/registry/leases/", 10, 10},
    {R_EVENTS, "events", "/registry/events/", 0, 4096},
    {R_CM, "configmaps", "/registry/configmaps/", 20, 20},
    {R_SECRETS, "secrets", "/registry/secrets/", 20, 20},
    {R_SVC, "services", "/registry/services/specs/", 20, 20},
    {R_EPS, "endpointslices", "/registry/endpointslices/", 20, 20},
    {R_RS, "replicasets", "/registry/replicasets/", 10, 10},
    {R_DEPLOY, "deployments", "/registry/deployments/", 10, 10},
    {R_NS, "namespaces", "/registry/namespaces/", 5, 5},
    {R_MASTER, "masterleases", "/registry/masterleases/", 3, 3},
};

int mix_main(struct kb_opts *o) {
  if (strcmp(o->tier, "xs") != 0) {
    fprintf(stderr, "kvbench: only --tier xs is implemented\n");
    return 64;
  }
  struct mix *m = calloc(1, sizeof *m);
  int rc = 1;
  m->o = o;
  rng_seed(&m->rng, o->seed);
  uv_loop_init(&m->loop);
  m->rand_len = 2u << 20;
  m->rand = malloc(m->rand_len);
  m->val = malloc(1100 * 1024);
  for (size_t i = 0; i + 8 <= m->rand_len; i += 8) {
    uint64_t x = rng_next(&m->rng);
    memcpy(m->rand + i, &x, 8);
  }
  /* one connection per distinct prefix per apiserver (kubernetes#111622) */
  for (int i = 0; i < NRES; i++) {
    struct resource *r = &m->res[i];
    r->name = tier_xs[i].name;
    r->prefix = tier_xs[i].prefix;
    r->nlive = tier_xs[i].live;
    r->cap = tier_xs[i].cap;
    r->keys = calloc((size_t)r->cap, sizeof *r->keys);
    for (int j = 0; j < r->cap; j++)
      r->keys[j].idx = (uint32_t)j;
    r->conn = -1;
    for (int j = 0; j < i; j++)
      if (strcmp(m->res[j].prefix, r->prefix) == 0)
        r->conn = m->res[j].conn;
    if (r->conn < 0)
      r->conn = m->nconn++;
  }
  for (int i = 0; i < NCLASS; i++)
    result_init(&m->cls[i], class_name[i]);
  m->nas = o->apiservers > 0 ? o->apiservers : 1;
  m->as = calloc((size_t)m->nas, sizeof *m->as);
  char *eps = strdup(o->endpoints);
  char *list[64];
  int neps = 0;
  for (char *t = strtok(eps, ","); t && neps < 64; t = strtok(NULL, ","))
    list[neps++] = t;
  int ci = 0;
  for (int a = 0; a < m->nas; a++) {
    m->as[a].id = a;
    m->as[a].conns = calloc((size_t)m->nconn, sizeof(struct kb_conn *));
    for (int c = 0; c < m->nconn; c++) {
      m->as[a].conns[c] = conn_open(&m->loop, list[ci++ % neps],
                                    o->use_tls ? &o->tls : NULL);
      if (!m->as[a].conns[c])
        goto out;
    }
  }
  double mult = o->multiple > 0 ? o->multiple : 1.0;
  for (int i = 0; i < NOPS; i++) {
    m->rate[i] = base_rate[i] * mult;
    m->total_rate += m->rate[i];
  }
  printf("kvbench apiserver-mix: tier xs, multiple %.2f (%.0f req/s offered), "
         "duration %.0f s, seed 0x%llx, %d apiservers x %d connections, "
         "in-flight cap %d, list limit %ld, endpoints=%s\n",
         mult, m->total_rate, o->duration, (unsigned long long)o->seed, m->nas,
         m->nconn, o->inflight, o->list_limit, o->endpoints);

  /* start from an empty /registry/ so that runs are independent */
  {
    Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    d.key.data = (uint8_t *)"/registry/";
    d.key.len = 10;
    d.range_end.data = (uint8_t *)"/registry0";
    d.range_end.len = 10;
    m->wiped = -100;
    if (grpc_unary(m->as[0].conns[0], "/etcdserverpb.KV/DeleteRange", &d.base,
                   on_wiped, m) == 0)
      uv_run(&m->loop, UV_RUN_DEFAULT);
    if (m->wiped != 0)
      goto out;
  }
  /* load: create every live key with the create shape */
  uint64_t t0 = now_ns();
  m->loading = true;
  load_next(m);
  uv_run(&m->loop, UV_RUN_DEFAULT);
  m->loading = false;
  long nkeys = 0;
  for (int i = 0; i < NRES; i++)
    nkeys += m->res[i].nlive;
  printf("load: %ld keys created in %.2f s (%llu already existed, %llu "
         "errors)\n",
         nkeys, (double)(now_ns() - t0) / 1e9,
         (unsigned long long)m->unexpected_conflicts,
         (unsigned long long)m->load_errors);
  if (m->load_errors)
    goto out;
  m->unexpected_conflicts = 0;
  m->requests = 0;
  for (int i = 0; i < NRES; i++) {
    for (int j = 0; j < m->res[i].cap; j++)
      m->res[i].keys[j].busy = false;
  }

  for (int i = 0; i < o->npids; i++) {
    struct kb_rss r;
    if (rss_sample(o->pids[i], &r) == 0)
      printf("rss before pid %d: VmRSS %ld kB VmHWM %ld kB\n", o->pids[i],
             r.rss_kb, r.hwm_kb);
  }
  m->t_start = now_ns();
  m->next_t = m->t_start;
  m->t_end = m->t_start + (uint64_t)(o->duration * 1e9);
  uv_timer_init(&m->loop, &m->tick);
  m->tick.data = m;
  uv_timer_start(&m->tick, on_tick, 0, 1);
  uv_run(&m->loop, UV_RUN_DEFAULT);
  uv_timer_stop(&m->tick);
  uv_close((uv_handle_t *)&m->tick, NULL);
  double secs = o->duration;

  printf("%-28s %9s %9s %7s %8s %8s %8s %8s %8s\n", "op", "offered/s",
         "done/s", "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms",
         "max ms");
  struct kb_result all;
  result_init(&all, "all");
  for (int i = 0; i < NCLASS; i++) {
    struct kb_result *r = &m->cls[i];
    const struct kb_hist *h = &r->hist;
    char off[16] = "";
    if (i < NOPS)
      snprintf(off, sizeof off, "%.1f", (double)m->offered[i] / secs);
    printf("%-28s %9s %9.1f %7llu %8.2f %8.2f %8.2f %8.2f %8.2f\n",
           class_name[i], off, (double)r->requests / secs,
           (unsigned long long)result_errors(r), hist_quantile(h, 0.5) / 1e6,
           hist_quantile(h, 0.9) / 1e6, hist_quantile(h, 0.99) / 1e6,
           hist_quantile(h, 0.999) / 1e6, (double)h->max / 1e6);
    if (i < NOPS) {
      hist_merge(&all.hist, h);
      all.requests += r->requests;
      for (int c = 0; c < KB_MAX_CODES; c++) {
        if (r->errors[c] && !all.errors[c])
          memcpy(all.errmsg[c], r->errmsg[c], sizeof all.errmsg[c]);
        all.errors[c] += r->errors[c];
      }
    }
  }
  all.seconds = secs;
  printf("[all ops]\n");
  result_print(&all, "  ");
  printf("grpc requests: %llu (incl. retries and grants)\n",
         (unsigned long long)m->requests);
  printf("conflicts: injected %llu, unexpected %llu, gave up %llu, "
         "vanished keys %llu\n",
         (unsigned long long)m->cls[C_CONFLICT].requests,
         (unsigned long long)m->unexpected_conflicts,
         (unsigned long long)m->gave_up, (unsigned long long)m->vanished);
  print_client_cpu((double)(now_ns() - t0) / 1e9);
  for (int i = 0; i < o->npids; i++) {
    struct kb_rss r;
    if (rss_sample(o->pids[i], &r) == 0)
      printf("rss after pid %d: VmRSS %ld kB VmHWM %ld kB\n", o->pids[i],
             r.rss_kb, r.hwm_kb);
  }
  rc = result_errors(&all) ? 2 : 0;
out:
  for (int a = 0; a < m->nas; a++) {
    for (int c = 0; c < m->nconn && m->as[a].conns; c++)
      if (m->as[a].conns[c])
        conn_close(m->as[a].conns[c]);
    free(m->as[a].conns);
  }
  conn_loop_done(&m->loop);
  uv_run(&m->loop, UV_RUN_DEFAULT);
  /* ops still queued after a timeout are abandoned here */
  uv_loop_close(&m->loop);
  for (int i = 0; i < NRES; i++)
    free(m->res[i].keys);
  free(m->as);
  free(eps);
  free(m->rand);
  free(m->val);
  free(m);
  return rc;
}

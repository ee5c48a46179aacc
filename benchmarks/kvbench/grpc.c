/* kvbench's gRPC client: HTTP/2 (nghttp2's client session) over a TCP
 * socket, optionally TLS (OpenSSL, ALPN "h2"), polled by libuv.
 *
 * One kb_conn is one socket and one nghttp2 session. Output produced by
 * nghttp2 is copied into an output buffer and written with a per-wake-up
 * budget; input is fed to nghttp2 as it arrives. A call is one HTTP/2
 * stream: its request messages wait in a queue read by the data provider
 * (deferred while a bidi stream has nothing to send). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "kvbench.h"

struct msgbuf {
  struct msgbuf *next;
  size_t len, off;
  uint8_t data[];
};

struct kb_call {
  struct kb_conn *conn;
  struct kb_call *prev, *next; /* conn's list of live calls */
  int32_t stream_id;
  const char *path;
  bool bidi;
  bool end_sent;  /* local END_STREAM queued (unary: after the request) */
  bool deferred;  /* data provider returned DEFERRED */
  struct msgbuf *q_head, *q_tail;
  /* response */
  uint8_t *rbuf;
  size_t rlen, rcap;
  int http_status;
  int grpc_status; /* -2 = not seen */
  char grpc_msg[160];
  kb_unary_cb on_done;
  kb_msg_cb on_msg;
  void *arg;
};

struct kb_conn {
  uv_loop_t *loop;
  uv_poll_t poll;
  int fd;
  SSL_CTX *ctx;
  SSL *ssl;
  nghttp2_session *h2;
  char authority[128];
  const char *scheme;
  bool dead;
  bool closing;
  int poll_events;
  uint8_t *out;
  size_t out_len, out_off, out_cap;
  struct kb_call *calls;
  int ncalls;
  bool dirty; /* on the flusher's list */
  struct kb_conn *next_dirty;
};

/* Output produced by callbacks is not written at once: a connection is
 * marked dirty and flushed once per loop iteration (before and after the
 * poll phase), so that many requests share one write and nghttp2 is never
 * re-entered from its own callbacks. One flusher per loop, in loop->data. */
struct kb_flusher {
  uv_prepare_t prep;
  uv_check_t check;
  struct kb_conn *dirty;
  int open_handles;
};

/* ------------------------------------------------------------ calls */

static void call_free(struct kb_call *s) {
  struct msgbuf *m = s->q_head;
  while (m) {
    struct msgbuf *n = m->next;
    free(m);
    m = n;
  }
  free(s->rbuf);
  free(s);
}

static void call_unlink(struct kb_call *s) {
  struct kb_conn *c = s->conn;
  if (s->prev)
    s->prev->next = s->next;
  else
    c->calls = s->next;
  if (s->next)
    s->next->prev = s->prev;
  c->ncalls--;
}

/* Delivers complete gRPC frames of a bidi stream; for unary calls the
 * frames stay in rbuf until the stream closes. */
static void deliver_frames(struct kb_call *s) {
  size_t off = 0;
  while (s->rlen - off >= 5) {
    uint32_t n = ((uint32_t)s->rbuf[off + 1] << 24) |
                 ((uint32_t)s->rbuf[off + 2] << 16) |
                 ((uint32_t)s->rbuf[off + 3] << 8) | s->rbuf[off + 4];
    if (s->rlen - off - 5 < n)
      break;
    if (s->on_msg)
      s->on_msg(s->arg, s->rbuf + off + 5, n);
    off += 5 + (size_t)n;
  }
  if (off) {
    memmove(s->rbuf, s->rbuf + off, s->rlen - off);
    s->rlen -= off;
  }
}

static void call_finish(struct kb_call *s, int status, const char *why) {
  const uint8_t *msg = NULL;
  size_t len = 0;
  if (status == 0 && !s->bidi) {
    if (s->rlen >= 5) {
      uint32_t n = ((uint32_t)s->rbuf[1] << 24) | ((uint32_t)s->rbuf[2] << 16) |
                   ((uint32_t)s->rbuf[3] << 8) | s->rbuf[4];
      if (s->rbuf[0] != 0 || s->rlen - 5 < n) {
        status = KB_STATUS_TRANSPORT;
        why = s->rbuf[0] ? "compressed response" : "truncated response";
      } else {
        msg = s->rbuf + 5;
        len = n;
      }
    } else {
      /* an empty message is legal only as a zero-length frame */
      status = KB_STATUS_TRANSPORT;
      why = "no response message";
    }
  }
  if (s->on_done)
    s->on_done(s->arg, status, msg, len, why ? why : "");
}

/* ------------------------------------------------------------ nghttp2 callbacks */

static ssize_t on_read_data(nghttp2_session *h2, int32_t stream_id,
                            uint8_t *buf, size_t length, uint32_t *flags,
                            nghttp2_data_source *src, void *user) {
  struct kb_call *s = src->ptr;
  size_t n = 0;
  while (s->q_head && n < length) {
    struct msgbuf *m = s->q_head;
    size_t k = m->len - m->off;
    if (k > length - n)
      k = length - n;
    memcpy(buf + n, m->data + m->off, k);
    m->off += k;
    n += k;
    if (m->off == m->len) {
      s->q_head = m->next;
      if (!s->q_head)
        s->q_tail = NULL;
      free(m);
    }
  }
  if (!s->q_head && s->end_sent) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
  }
  if (n == 0) {
    s->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  return (ssize_t)n;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame,
                     const uint8_t *name, size_t namelen, const uint8_t *value,
                     size_t valuelen, uint8_t flags, void *user) {
  struct kb_call *s =
      nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
  if (!s)
    return 0;
  if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
    s->http_status = atoi((const char *)value);
  } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
    char tmp[16];
    size_t k = valuelen < sizeof tmp - 1 ? valuelen : sizeof tmp - 1;
    memcpy(tmp, value, k);
    tmp[k] = 0;
    s->grpc_status = atoi(tmp);
  } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
    size_t k = valuelen < sizeof s->grpc_msg - 1 ? valuelen
                                                  : sizeof s->grpc_msg - 1;
    memcpy(s->grpc_msg, value, k);
    s->grpc_msg[k] = 0;
  }
  return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user) {
  struct kb_call *s = nghttp2_session_get_stream_user_data(h2, stream_id);
  if (!s)
    return 0;
  if (s->rlen + len > s->rcap) {
    size_t cap = s->rcap ? s->rcap : 256;
    while (cap < s->rlen + len)
      cap *= 2;
    uint8_t *nb = realloc(s->rbuf, cap);
    if (!nb)
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    s->rbuf = nb;
    s->rcap = cap;
  }
  memcpy(s->rbuf + s->rlen, data, len);
  s->rlen += len;
  if (s->bidi)
    deliver_frames(s);
  return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t stream_id,
                           uint32_t error_code, void *user) {
  struct kb_call *s = nghttp2_session_get_stream_user_data(h2, stream_id);
  if (!s)
    return 0;
  nghttp2_session_set_stream_user_data(h2, stream_id, NULL);
  call_unlink(s);
  int status;
  const char *why = s->grpc_msg;
  char tmp[96];
  if (s->grpc_status >= 0) {
    status = s->grpc_status;
  } else {
    status = KB_STATUS_TRANSPORT;
    snprintf(tmp, sizeof tmp, "stream closed (http %d, h2 error %u)",
             s->http_status, error_code);
    why = tmp;
  }
  call_finish(s, status, why);
  call_free(s);
  return 0;
}

/* ------------------------------------------------------------ socket I/O */

static void conn_fail(struct kb_conn *c, const char *why);
static void update_poll(struct kb_conn *c);

/* Writes buffered output; returns 0, or -1 when the connection failed. */
static int write_out(struct kb_conn *c) {
  while (c->out_off < c->out_len) {
    size_t n = c->out_len - c->out_off;
    if (c->ssl) {
      ERR_clear_error();
      int w = SSL_write(c->ssl, c->out + c->out_off, (int)(n > (1 << 30) ? (1 << 30) : n));
      if (w <= 0) {
        int e = SSL_get_error(c->ssl, w);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
          return 0;
        conn_fail(c, "TLS write failed");
        return -1;
      }
      c->out_off += (size_t)w;
    } else {
      ssize_t w = send(c->fd, c->out + c->out_off, n, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EAGAIN || errno == EINTR)
          return 0;
        conn_fail(c, strerror(errno));
        return -1;
      }
      c->out_off += (size_t)w;
    }
  }
  c->out_off = c->out_len = 0;
  return 0;
}

/* Pulls frames from nghttp2 into the output buffer and writes them. */
static void pump(struct kb_conn *c) {
  if (c->dead)
    return;
  for (int rounds = 0; rounds < 64; rounds++) {
    if (c->out_len - c->out_off > (1u << 20))
      break; /* socket is behind: wait for writability */
    const uint8_t *data;
    ssize_t n = nghttp2_session_mem_send(c->h2, &data);
    if (n < 0) {
      conn_fail(c, nghttp2_strerror((int)n));
      return;
    }
    if (n == 0)
      break;
    if (c->out_off && c->out_off == c->out_len)
      c->out_off = c->out_len = 0;
    if (c->out_len + (size_t)n > c->out_cap) {
      if (c->out_off) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
      }
      size_t cap = c->out_cap ? c->out_cap : 65536;
      while (cap < c->out_len + (size_t)n)
        cap *= 2;
      uint8_t *nb = realloc(c->out, cap);
      if (!nb) {
        conn_fail(c, "out of memory");
        return;
      }
      c->out = nb;
      c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, data, (size_t)n);
    c->out_len += (size_t)n;
    if (c->out_len - c->out_off >= 65536 && write_out(c) < 0)
      return;
  }
  if (write_out(c) < 0)
    return;
  update_poll(c);
}

static void on_poll(uv_poll_t *h, int status, int events);

static void update_poll(struct kb_conn *c) {
  if (c->dead || c->closing)
    return;
  int ev = UV_READABLE;
  if (c->out_off < c->out_len || nghttp2_session_want_write(c->h2))
    ev |= UV_WRITABLE;
  if (ev != c->poll_events) {
    c->poll_events = ev;
    uv_poll_start(&c->poll, ev, on_poll);
  }
}

static void read_in(struct kb_conn *c) {
  uint8_t buf[65536];
  size_t budget = 4u << 20; /* bytes per wake-up */
  while (budget > 0 && !c->dead) {
    ssize_t n;
    if (c->ssl) {
      ERR_clear_error();
      int r = SSL_read(c->ssl, buf, sizeof buf);
      if (r <= 0) {
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
          return;
        conn_fail(c, e == SSL_ERROR_ZERO_RETURN ? "TLS closed by server"
                                                : "TLS read failed");
        return;
      }
      n = r;
    } else {
      n = recv(c->fd, buf, sizeof buf, 0);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
          return;
        conn_fail(c, strerror(errno));
        return;
      }
      if (n == 0) {
        conn_fail(c, "connection closed by server");
        return;
      }
    }
    ssize_t k = nghttp2_session_mem_recv(c->h2, buf, (size_t)n);
    if (k < 0) {
      conn_fail(c, nghttp2_strerror((int)k));
      return;
    }
    budget = (size_t)n > budget ? 0 : budget - (size_t)n;
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  struct kb_conn *c = h->data;
  if (status < 0) {
    conn_fail(c, uv_strerror(status));
    return;
  }
  if (events & UV_READABLE)
    read_in(c);
  pump(c);
}

void conn_flush(struct kb_conn *c) { pump(c); }

static void flush_all(struct kb_flusher *f) {
  while (f->dirty) {
    struct kb_conn *c = f->dirty;
    f->dirty = c->next_dirty;
    c->dirty = false;
    c->next_dirty = NULL;
    pump(c);
  }
}

static void on_prepare(uv_prepare_t *h) { flush_all(h->data); }
static void on_check(uv_check_t *h) { flush_all(h->data); }

static struct kb_flusher *flusher(uv_loop_t *loop) {
  struct kb_flusher *f = loop->data;
  if (f)
    return f;
  f = calloc(1, sizeof *f);
  if (!f)
    abort();
  uv_prepare_init(loop, &f->prep);
  uv_check_init(loop, &f->check);
  f->prep.data = f->check.data = f;
  uv_prepare_start(&f->prep, on_prepare);
  uv_check_start(&f->check, on_check);
  uv_unref((uv_handle_t *)&f->prep);
  uv_unref((uv_handle_t *)&f->check);
  loop->data = f;
  return f;
}

static void on_flusher_closed(uv_handle_t *h) {
  struct kb_flusher *f = h->data;
  if (--f->open_handles == 0)
    free(f);
}

void conn_loop_done(uv_loop_t *loop) {
  struct kb_flusher *f = loop->data;
  if (!f)
    return;
  loop->data = NULL;
  f->open_handles = 2;
  uv_close((uv_handle_t *)&f->prep, on_flusher_closed);
  uv_close((uv_handle_t *)&f->check, on_flusher_closed);
}

static void mark_dirty(struct kb_conn *c) {
  if (c->dirty || c->dead)
    return;
  struct kb_flusher *f = flusher(c->loop);
  c->dirty = true;
  c->next_dirty = f->dirty;
  f->dirty = c;
}

static void unmark_dirty(struct kb_conn *c) {
  if (!c->dirty)
    return;
  struct kb_flusher *f = flusher(c->loop);
  for (struct kb_conn **pp = &f->dirty; *pp; pp = &(*pp)->next_dirty) {
    if (*pp == c) {
      *pp = c->next_dirty;
      break;
    }
  }
  c->dirty = false;
}

static void on_poll_closed(uv_handle_t *h) {
  struct kb_conn *c = h->data;
  if (c->h2)
    nghttp2_session_del(c->h2);
  if (c->ssl)
    SSL_free(c->ssl);
  if (c->ctx)
    SSL_CTX_free(c->ctx);
  if (c->fd >= 0)
    close(c->fd);
  free(c->out);
  free(c);
}

static void conn_fail(struct kb_conn *c, const char *why) {
  if (c->dead)
    return;
  c->dead = true;
  if (!c->closing)
    fprintf(stderr, "kvbench: connection to %s: %s\n", c->authority, why);
  uv_poll_stop(&c->poll);
  c->poll_events = 0;
  while (c->calls) {
    struct kb_call *s = c->calls;
    nghttp2_session_set_stream_user_data(c->h2, s->stream_id, NULL);
    call_unlink(s);
    call_finish(s, KB_STATUS_TRANSPORT, why);
    call_free(s);
  }
}

void conn_close(struct kb_conn *c) {
  if (c->closing)
    return;
  c->closing = true;
  unmark_dirty(c);
  if (!c->dead) {
    nghttp2_session_terminate_session(c->h2, NGHTTP2_NO_ERROR);
    const uint8_t *data;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(c->h2, &data)) > 0) {
      if (c->ssl)
        SSL_write(c->ssl, data, (int)n);
      else if (send(c->fd, data, (size_t)n, MSG_NOSIGNAL) < 0)
        break;
    }
  }
  conn_fail(c, "closed");
  uv_close((uv_handle_t *)&c->poll, on_poll_closed);
}

bool conn_alive(const struct kb_conn *c) { return !c->dead; }
int conn_inflight(const struct kb_conn *c) { return c->ncalls; }

/* ------------------------------------------------------------ setup */

static int tcp_connect(const char *host, const char *port) {
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int rc = getaddrinfo(host, port, &hints, &res);
  if (rc != 0) {
    fprintf(stderr, "kvbench: %s:%s: %s\n", host, port, gai_strerror(rc));
    return -1;
  }
  int fd = -1;
  for (struct addrinfo *a = res; a; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0)
      continue;
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
      break;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    fprintf(stderr, "kvbench: connect %s:%s: %s\n", host, port,
            strerror(errno));
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

static void print_ssl_errors(const char *what) {
  unsigned long e;
  char buf[256];
  fprintf(stderr, "kvbench: %s\n", what);
  while ((e = ERR_get_error()) != 0) {
    ERR_error_string_n(e, buf, sizeof buf);
    fprintf(stderr, "  %s\n", buf);
  }
}

static SSL_CTX *make_ctx(const struct kb_tls *t) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx)
    return NULL;
  static const unsigned char alpn[] = {2, 'h', '2'};
  SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (t && t->cacert) {
    if (SSL_CTX_load_verify_locations(ctx, t->cacert, NULL) != 1) {
      print_ssl_errors("cannot load --cacert");
      goto err;
    }
  }
  if (t && t->cert) {
    if (SSL_CTX_use_certificate_chain_file(ctx, t->cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, t->key ? t->key : t->cert,
                                    SSL_FILETYPE_PEM) != 1) {
      print_ssl_errors("cannot load --cert/--key");
      goto err;
    }
  }
  bool verify = t && t->cacert && !t->insecure;
  SSL_CTX_set_verify(ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
  return ctx;
err:
  SSL_CTX_free(ctx);
  return NULL;
}

struct kb_conn *conn_open(uv_loop_t *loop, const char *url,
                          const struct kb_tls *tls) {
  bool use_tls = tls != NULL;
  const char *hp = url;
  if (strncmp(url, "https://", 8) == 0) {
    use_tls = true;
    hp = url + 8;
  } else if (strncmp(url, "http://", 7) == 0) {
    use_tls = false;
    hp = url + 7;
  }
  char host[100], port[16];
  const char *colon = strrchr(hp, ':');
  size_t hl = colon ? (size_t)(colon - hp) : strlen(hp);
  if (!colon || hl == 0 || hl >= sizeof host || strlen(colon + 1) >= sizeof port) {
    fprintf(stderr, "kvbench: bad endpoint %s (want [http[s]://]host:port)\n",
            url);
    return NULL;
  }
  memcpy(host, hp, hl);
  host[hl] = 0;
  snprintf(port, sizeof port, "%s", colon + 1);
  char *slash = strchr(port, '/');
  if (slash)
    *slash = 0;

  struct kb_conn *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->loop = loop;
  c->fd = -1;
  snprintf(c->authority, sizeof c->authority, "%s:%s", host, port);
  c->scheme = use_tls ? "https" : "http";
  c->fd = tcp_connect(host, port);
  if (c->fd < 0)
    goto err;
  if (use_tls) {
    c->ctx = make_ctx(tls);
    if (!c->ctx)
      goto err;
    c->ssl = SSL_new(c->ctx);
    SSL_set_fd(c->ssl, c->fd);
    struct in6_addr a6;
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1)
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host);
    else {
      SSL_set_tlsext_host_name(c->ssl, host);
      SSL_set1_host(c->ssl, host);
    }
    if (SSL_connect(c->ssl) != 1) {
      print_ssl_errors("TLS handshake failed");
      goto err;
    }
    const unsigned char *p;
    unsigned plen;
    SSL_get0_alpn_selected(c->ssl, &p, &plen);
    if (plen != 2 || memcmp(p, "h2", 2) != 0) {
      fprintf(stderr, "kvbench: %s did not select ALPN h2\n", c->authority);
      goto err;
    }
  }
  int fl = fcntl(c->fd, F_GETFL);
  fcntl(c->fd, F_SETFL, fl | O_NONBLOCK);

  nghttp2_session_callbacks *cbs;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  nghttp2_option *opt;
  nghttp2_option_new(&opt);
  /* gRPC servers allow ~100 concurrent streams by default; nghttp2 queues
   * the rest. Do not limit ourselves further. */
  nghttp2_option_set_peer_max_concurrent_streams(opt, 1u << 30);
  int rc = nghttp2_session_client_new2(&c->h2, cbs, c, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  if (rc != 0)
    goto err;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 16u << 20},
      {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, 1u << 20},
  };
  nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 3);
  nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, 1 << 30);

  uv_poll_init(loop, &c->poll, c->fd);
  c->poll.data = c;
  flusher(loop);
  pump(c);
  update_poll(c);
  return c;
err:
  if (c->ssl)
    SSL_free(c->ssl);
  if (c->ctx)
    SSL_CTX_free(c->ctx);
  if (c->fd >= 0)
    close(c->fd);
  free(c);
  return NULL;
}

/* ------------------------------------------------------------ calls */

static struct msgbuf *pack_msg(const ProtobufCMessage *m) {
  size_t n = protobuf_c_message_get_packed_size(m);
  struct msgbuf *b = malloc(sizeof *b + 5 + n);
  if (!b)
    return NULL;
  b->next = NULL;
  b->off = 0;
  b->len = 5 + n;
  b->data[0] = 0;
  b->data[1] = (uint8_t)(n >> 24);
  b->data[2] = (uint8_t)(n >> 16);
  b->data[3] = (uint8_t)(n >> 8);
  b->data[4] = (uint8_t)n;
  protobuf_c_message_pack(m, b->data + 5);
  return b;
}

static struct kb_call *call_start(struct kb_conn *c, const char *path,
                                  bool bidi, struct msgbuf *first) {
  struct kb_call *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  s->conn = c;
  s->path = path;
  s->bidi = bidi;
  s->grpc_status = -2;
  s->q_head = s->q_tail = first;
  s->end_sent = !bidi;
#define NV(n, v)                                                        \
  {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v),            \
   NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE}
  nghttp2_nv hdrs[] = {
      NV(":method", "POST"),
      NV(":scheme", c->scheme),
      NV(":path", path),
      NV(":authority", c->authority),
      NV("content-type", "application/grpc"),
      NV("te", "trailers"),
      NV("user-agent", "kvbench/0.1"),
  };
#undef NV
  nghttp2_data_provider dp;
  dp.source.ptr = s;
  dp.read_callback = on_read_data;
  int32_t id = nghttp2_submit_request(c->h2, NULL, hdrs,
                                      sizeof hdrs / sizeof hdrs[0], &dp, s);
  if (id < 0) {
    s->q_head = NULL;
    free(s);
    return NULL;
  }
  s->stream_id = id;
  s->next = c->calls;
  if (c->calls)
    c->calls->prev = s;
  c->calls = s;
  c->ncalls++;
  return s;
}

int grpc_unary(struct kb_conn *c, const char *path, const ProtobufCMessage *req,
               kb_unary_cb cb, void *arg) {
  if (c->dead)
    return -1;
  struct msgbuf *b = pack_msg(req);
  if (!b)
    return -1;
  struct kb_call *s = call_start(c, path, false, b);
  if (!s) {
    free(b);
    return -1;
  }
  s->on_done = cb;
  s->arg = arg;
  mark_dirty(c);
  return 0;
}

struct kb_call *grpc_stream_open(struct kb_conn *c, const char *path,
                                 kb_msg_cb on_msg, kb_unary_cb on_close,
                                 void *arg) {
  if (c->dead)
    return NULL;
  struct kb_call *s = call_start(c, path, true, NULL);
  if (!s)
    return NULL;
  s->on_msg = on_msg;
  s->on_done = on_close;
  s->arg = arg;
  mark_dirty(c);
  return s;
}

int grpc_stream_send(struct kb_call *s, const ProtobufCMessage *msg) {
  struct kb_conn *c = s->conn;
  if (c->dead || s->end_sent)
    return -1;
  struct msgbuf *b = pack_msg(msg);
  if (!b)
    return -1;
  if (s->q_tail)
    s->q_tail->next = b;
  else
    s->q_head = b;
  s->q_tail = b;
  if (s->deferred) {
    s->deferred = false;
    nghttp2_session_resume_data(c->h2, s->stream_id);
  }
  mark_dirty(c);
  return 0;
}

void grpc_stream_end(struct kb_call *s) {
  struct kb_conn *c = s->conn;
  if (c->dead || s->end_sent)
    return;
  s->end_sent = true;
  if (s->deferred) {
    s->deferred = false;
    nghttp2_session_resume_data(c->h2, s->stream_id);
  }
  mark_dirty(c);
}

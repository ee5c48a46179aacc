/* etcd's gRPC services (net/grpc.h) on the client port: the gRPC adapter
 * of struct kvd_call (protobuf bytes <-> the service code in service.c),
 * the streamed Maintenance/Snapshot, grpc.health.v1.Health/Check, and
 * UNIMPLEMENTED answers for the services kvd does not serve yet. */
#include "server_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/log.h"
#include "grpc/health/v1/health.pb-c.h"
#include "storage/mvcc.h"

#define MOD "grpc"
#define SNAPSHOT_CHUNK (32 * 1024)

/* ---- the gRPC adapter of struct kvd_call ------------------------------- */

struct grpc_kcall {
	struct kvd_call base;
	struct grpc_call *gc;
	uint8_t *out; /* a response waiting for on_writable */
	size_t nout;
};

/* Ends the call (gc may be freed by the library right after) and frees
 * kc. */
static void kc_finish(struct grpc_kcall *kc, int code, const char *msg)
{
	struct grpc_call *gc = kc->gc;
	grpc_call_set_user(gc, NULL);
	free(kc->out);
	free(kc);
	grpc_call_finish(gc, code, msg);
}

/* Sends kc->out and finishes, or waits for on_writable. */
static void kc_flush(struct grpc_kcall *kc)
{
	int rc = grpc_call_send(kc->gc, kc->out, kc->nout);
	if (rc == KV_EAGAIN)
		return;
	if (rc == 0)
		kc_finish(kc, GRPC_OK, NULL);
	else
		kc_finish(kc, GRPC_RESOURCE_EXHAUSTED,
			  "etcdserver: too many requests");
}

static void kc_respond(struct kvd_call *c, const ProtobufCMessage *msg)
{
	struct grpc_kcall *kc = (struct grpc_kcall *)c;
	size_t n = protobuf_c_message_get_packed_size(msg);
	kc->out = malloc(n ? n : 1);
	if (kc->out == NULL) {
		kc_finish(kc, GRPC_RESOURCE_EXHAUSTED,
			  "etcdserver: too many requests");
		return;
	}
	kc->nout = protobuf_c_message_pack(msg, kc->out);
	kc_flush(kc);
}

static void kc_fail(struct kvd_call *c, int code, const char *msg)
{
	struct grpc_kcall *kc = (struct grpc_kcall *)c;
	kc_finish(kc, code, msg);
}

static const struct kvd_call_ops grpc_call_ops = {
	.respond = kc_respond,
	.fail = kc_fail,
};

static void unary_writable(struct grpc_call *gc)
{
	struct grpc_kcall *kc = grpc_call_user(gc);
	if (kc != NULL && kc->out != NULL)
		kc_flush(kc);
}

static void unary_cancel(struct grpc_call *gc, int status)
{
	(void)status;
	struct grpc_kcall *kc = grpc_call_user(gc);
	if (kc == NULL)
		return;
	grpc_call_set_user(gc, NULL);
	if (kc->base.on_abort != NULL)
		kc->base.on_abort(&kc->base);
	free(kc->out);
	free(kc);
}

bool kvd_grpc_admit(struct kvd_server *s, struct grpc_call *gc)
{
	if (!kvd_serving(s)) {
		grpc_call_finish(gc, GRPC_UNAVAILABLE,
				 "etcdserver: server stopped");
		return false;
	}
	/* etcd's interceptor: a client that asks for a leader
	 * (clientv3.WithRequireLeader) gets "no leader" at once */
	const char *hl = grpc_call_metadata(gc, "hasleader");
	if (hl != NULL && strcmp(hl, "true") == 0) {
		struct kvraft_status st;
		kvraft_node_status(s->node, &st);
		if (st.leader == 0) {
			grpc_call_finish(gc, GRPC_UNAVAILABLE,
					 "etcdserver: no leader");
			return false;
		}
	}
	return true;
}

static void unary_start(struct grpc_call *gc, const unsigned char *msg,
			size_t len, void *method_data)
{
	const struct kvd_grpc_method *gm = method_data;
	const struct kvd_rpc *rpc = gm->rpc;
	struct kvd_server *s = gm->s;
	if (!kvd_grpc_admit(s, gc))
		return;
	ProtobufCMessage *m = protobuf_c_message_unpack(rpc->req, NULL, len,
							msg);
	if (m == NULL) {
		grpc_call_finish(gc, GRPC_INTERNAL,
				 "grpc: error unmarshalling request: "
				 "proto: bad wire format");
		return;
	}
	struct grpc_kcall *kc = calloc(1, sizeof(*kc));
	if (kc == NULL) {
		protobuf_c_message_free_unpacked(m, NULL);
		grpc_call_finish(gc, GRPC_RESOURCE_EXHAUSTED,
				 "etcdserver: too many requests");
		return;
	}
	kc->base.ops = &grpc_call_ops;
	kc->base.s = s;
	kc->gc = gc;
	grpc_call_set_user(gc, kc);
	rpc->fn(s, &kc->base, m);
}

static const struct grpc_handler unary_h = {
	.on_start = unary_start,
	.on_writable = unary_writable,
	.on_cancel = unary_cancel,
};

/* ---- grpc.health.v1.Health/Check --------------------------------------- */

static void health_start(struct grpc_call *gc, const unsigned char *msg,
			 size_t len, void *method_data)
{
	struct kvd_server *s = method_data;
	Grpc__Health__V1__HealthCheckRequest *rq =
		grpc__health__v1__health_check_request__unpack(NULL, len, msg);
	if (rq == NULL) {
		grpc_call_finish(gc, GRPC_INTERNAL,
				 "grpc: error unmarshalling request: "
				 "proto: bad wire format");
		return;
	}
	bool known = rq->service == NULL || rq->service[0] == '\0';
	grpc__health__v1__health_check_request__free_unpacked(rq, NULL);
	if (!known) {
		grpc_call_finish(gc, GRPC_NOT_FOUND, "unknown service");
		return;
	}
	Grpc__Health__V1__HealthCheckResponse r =
		GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	r.status = kvd_serving(s) && kvd_healthy(s)
			   ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
			   : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
	uint8_t buf[16];
	size_t n = grpc__health__v1__health_check_response__pack(&r, buf);
	if (grpc_call_send(gc, buf, n) == 0)
		grpc_call_finish(gc, GRPC_OK, NULL);
	else
		grpc_call_finish(gc, GRPC_UNAVAILABLE, "transport is closing");
}

static const struct grpc_handler health_h = {
	.on_start = health_start,
};

/* ---- not served yet ---------------------------------------------------- */

static void unimpl_start(struct grpc_call *gc, const unsigned char *msg,
			 size_t len, void *method_data)
{
	(void)msg;
	(void)len;
	grpc_call_finish(gc, GRPC_UNIMPLEMENTED, method_data);
}

static const struct grpc_handler unimpl_h = {
	.on_start = unimpl_start,
};

/* ---- Maintenance/Snapshot ---------------------------------------------- */

/* etcd (v3rpc/maintenance.go): the store copy in chunks with the bytes
 * still to come, then one message whose blob is the SHA-256 of all the
 * bytes sent (etcdctl snapshot restore checks it). The copy is made by
 * mvcc_checkpoint on a worker thread into a file in the data dir, which
 * is unlinked once open. */
struct snapshot_job {
	uv_work_t work;
	struct kvd_server *s;
	struct grpc_call *gc; /* NULL once cancelled */
	struct mvcc *mv;
	char path[4096];
	int rv;
	int fd;
	uint64_t size, sent;
	EVP_MD_CTX *sha;
	bool final_sent;
	struct snapshot_job *next;
};

static void snap_free(struct snapshot_job *j)
{
	struct kvd_server *s = j->s;
	for (struct snapshot_job **pp = &s->snapshots; *pp != NULL;
	     pp = &(*pp)->next) {
		if (*pp == j) {
			*pp = j->next;
			break;
		}
	}
	if (j->gc != NULL)
		grpc_call_set_user(j->gc, NULL);
	if (j->fd >= 0)
		close(j->fd);
	EVP_MD_CTX_free(j->sha);
	free(j);
}

static void snap_finish(struct snapshot_job *j, int code, const char *msg)
{
	struct grpc_call *gc = j->gc;
	snap_free(j);
	if (gc != NULL)
		grpc_call_finish(gc, code, msg);
}

static void snap_pump(struct snapshot_job *j)
{
	static unsigned char buf[SNAPSHOT_CHUNK];
	while (j->gc != NULL && grpc_call_writable(j->gc)) {
		Etcdserverpb__SnapshotResponse r =
			ETCDSERVERPB__SNAPSHOT_RESPONSE__INIT;
		unsigned char digest[EVP_MAX_MD_SIZE];
		size_t n = 0;
		if (j->sent < j->size) {
			uint64_t left = j->size - j->sent;
			size_t want = left < sizeof(buf) ? (size_t)left
							 : sizeof(buf);
			ssize_t got = pread(j->fd, buf, want, (off_t)j->sent);
			if (got <= 0) {
				KV_ERROR(MOD, "snapshot read failed", "err=\"%s\"",
					 got < 0 ? strerror(errno) : "short");
				snap_finish(j, GRPC_INTERNAL,
					    "kvd: cannot read the snapshot");
				return;
			}
			n = (size_t)got;
			EVP_DigestUpdate(j->sha, buf, n);
			j->sent += n;
			r.remaining_bytes = j->size - j->sent;
			r.blob.data = buf;
			r.blob.len = n;
		} else {
			unsigned int dl = 0;
			EVP_DigestFinal_ex(j->sha, digest, &dl);
			r.blob.data = digest;
			r.blob.len = dl;
			j->final_sent = true;
		}
		size_t plen = protobuf_c_message_get_packed_size(&r.base);
		uint8_t *p = malloc(plen);
		if (p == NULL) {
			snap_finish(j, GRPC_RESOURCE_EXHAUSTED,
				    "etcdserver: too many requests");
			return;
		}
		protobuf_c_message_pack(&r.base, p);
		int rc = grpc_call_send(j->gc, p, plen);
		free(p);
		if (rc != 0) {
			snap_finish(j, GRPC_UNAVAILABLE, "transport is closing");
			return;
		}
		if (j->final_sent) {
			snap_finish(j, GRPC_OK, NULL);
			return;
		}
	}
}

static void snap_writable(struct grpc_call *gc)
{
	struct snapshot_job *j = grpc_call_user(gc);
	if (j != NULL && j->fd >= 0)
		snap_pump(j);
}

static void snap_cancel(struct grpc_call *gc, int status)
{
	(void)status;
	struct snapshot_job *j = grpc_call_user(gc);
	if (j == NULL)
		return;
	grpc_call_set_user(gc, NULL);
	j->gc = NULL;
	if (j->fd >= 0) /* not on the worker any more */
		snap_free(j);
}

static void snap_work(uv_work_t *w)
{
	struct snapshot_job *j = w->data;
	struct mvcc_checkpoint_info info;
	j->rv = mvcc_checkpoint(j->mv, j->path, &info);
}

static void snap_remove(const char *path)
{
	char crc[4200];
	unlink(path);
	snprintf(crc, sizeof(crc), "%s.crc", path);
	unlink(crc);
}

static void snap_after(uv_work_t *w, int status)
{
	struct snapshot_job *j = w->data;
	struct kvd_server *s = j->s;
	s->snap_workers--;
	if (status != 0 || j->rv != 0) {
		KV_ERROR(MOD, "snapshot copy failed", "err=%s",
			 kv_errname(j->rv));
		snap_remove(j->path);
		j->fd = -2; /* off the worker */
		snap_finish(j, GRPC_INTERNAL, "kvd: cannot copy the store");
	} else {
		j->fd = open(j->path, O_RDONLY | O_CLOEXEC);
		struct stat sb;
		if (j->fd >= 0 && fstat(j->fd, &sb) == 0)
			j->size = (uint64_t)sb.st_size;
		snap_remove(j->path);
		if (j->fd < 0) {
			j->fd = -2;
			snap_finish(j, GRPC_INTERNAL,
				    "kvd: cannot read the snapshot");
		} else if (j->gc == NULL) {
			snap_free(j);
		} else {
			KV_INFO(MOD, "sending a snapshot", "bytes=%llu",
				(unsigned long long)j->size);
			snap_pump(j);
		}
	}
	if (s->snap_workers == 0 && s->on_snapshots_done != NULL) {
		void (*cb)(struct kvd_server *) = s->on_snapshots_done;
		s->on_snapshots_done = NULL;
		cb(s);
	}
}

static void snap_start(struct grpc_call *gc, const unsigned char *msg,
		       size_t len, void *method_data)
{
	struct kvd_server *s = method_data;
	static unsigned long seq;
	(void)msg;
	(void)len;
	if (!kvd_serving(s)) {
		grpc_call_finish(gc, GRPC_UNAVAILABLE,
				 "etcdserver: server stopped");
		return;
	}
	struct snapshot_job *j = calloc(1, sizeof(*j));
	if (j == NULL || (j->sha = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(j->sha, EVP_sha256(), NULL) != 1) {
		if (j != NULL)
			EVP_MD_CTX_free(j->sha);
		free(j);
		grpc_call_finish(gc, GRPC_RESOURCE_EXHAUSTED,
				 "etcdserver: too many requests");
		return;
	}
	/* the worker may still copy after a commit: commit first so that the
	 * copy holds every applied write */
	(void)kv_apply_commit(s->apply, true);
	j->s = s;
	j->gc = gc;
	j->fd = -1; /* on the worker */
	j->mv = kv_apply_mvcc(s->apply);
	snprintf(j->path, sizeof(j->path), "%s/snapshot-%d-%lu.tmp",
		 s->cfg->data_dir, (int)getpid(), ++seq);
	j->work.data = j;
	j->next = s->snapshots;
	s->snapshots = j;
	grpc_call_set_user(gc, j);
	if (uv_queue_work(&s->loop, &j->work, snap_work, snap_after) != 0) {
		j->fd = -2;
		snap_finish(j, GRPC_INTERNAL, "kvd: cannot copy the store");
		return;
	}
	s->snap_workers++;
}

static const struct grpc_handler snapshot_h = {
	.on_start = snap_start,
	.on_writable = snap_writable,
	.on_cancel = snap_cancel,
};

/* ---- registration ------------------------------------------------------ */

struct unserved {
	const char *path;
	enum grpc_kind kind;
	const char *msg;
};

#define AUTH_MSG "kvd: authentication is not served yet"
static const struct unserved unserved[] = {
	{ "/etcdserverpb.Auth/AuthEnable", GRPC_UNARY, AUTH_MSG },
	{ "/etcdserverpb.Auth/AuthDisable", GRPC_UNARY, AUTH_MSG },
	{ "/etcdserverpb.Auth/Authenticate", GRPC_UNARY, AUTH_MSG },
	{ "/etcdserverpb.Auth/UserAdd", GRPC_UNARY, AUTH_MSG },
	{ "/etcdserverpb.Auth/UserGet", GRPC_UNARY, AUTH_MSG },
	{ "/etcdserverpb.Auth/UserList", GRPC_UNARY, AUTH_MSG },
	{ "/etcdserverpb.Auth/UserDelete", GRPC_UNARY, AUTH_MSG },
	{ "/etcdserverpb.Auth/UserChangePassword", GRPC_UNARY, AUTH_MSG },
	{ "/etcdserverpb.Auth/UserGrantRole", GRPC_UNARY, AUTH_MSG },
	{ "/etcdserverpb.Auth/UserRevokeRole", GRPC_UNARY, AUTH_MSG },
	{ "/etcdserverpb.Auth/RoleAdd", GRPC_UNARY, AUTH_MSG },
	{ "/etcdserverpb.Auth/RoleGet", GRPC_UNARY, AUTH_MSG },
	{ "/etcdserverpb.Auth/RoleList", GRPC_UNARY, AUTH_MSG },
	{ "/etcdserverpb.Auth/RoleDelete", GRPC_UNARY, AUTH_MSG },
	{ "/etcdserverpb.Auth/RoleGrantPermission", GRPC_UNARY, AUTH_MSG },
	{ "/etcdserverpb.Auth/RoleRevokePermission", GRPC_UNARY, AUTH_MSG },
};

int kvd_grpc_setup(struct kvd_server *s)
{
	struct grpc_config gc = { 0 };
	int rv;
	gc.loop = &s->loop;
	/* etcd: grpc.MaxRecvMsgSize(--max-request-bytes + 512 KiB) */
	gc.max_recv_msg = (size_t)s->cfg->max_request_bytes + 512 * 1024;
	rv = grpc_server_new(&gc, &s->grpc);
	if (rv != 0) {
		s->grpc = NULL;
		return rv;
	}
	/* HTTP/2 requests that are not gRPC go to the JSON gateway, as in
	 * etcd's grpcHandlerFunc (curl negotiates h2 over TLS). */
	grpc_server_set_fallback(s->grpc, kvd_gateway_h2_on_stream, s);
	s->grpc_methods = calloc(kvd_nrpcs, sizeof(*s->grpc_methods));
	if (s->grpc_methods == NULL)
		return KV_ENOMEM;
	for (size_t i = 0; i < kvd_nrpcs && rv == 0; i++) {
		s->grpc_methods[i].s = s;
		s->grpc_methods[i].rpc = &kvd_rpcs[i];
		if (kvd_rpcs[i].grpc == NULL)
			continue; /* a gateway alias */
		rv = grpc_server_register(s->grpc, kvd_rpcs[i].grpc,
					  GRPC_UNARY, &unary_h,
					  &s->grpc_methods[i]);
	}
	if (rv == 0)
		rv = grpc_server_register(s->grpc,
					  "/etcdserverpb.Maintenance/Snapshot",
					  GRPC_SERVER_STREAMING, &snapshot_h, s);
	if (rv == 0)
		rv = grpc_server_register(s->grpc, "/etcdserverpb.Watch/Watch",
					  GRPC_BIDI, &kvd_watch_grpc_h, s);
	if (rv == 0)
		rv = grpc_server_register(s->grpc,
					  "/v3electionpb.Election/Observe",
					  GRPC_SERVER_STREAMING,
					  &kvd_observe_grpc_h, s);
	if (rv == 0)
		rv = grpc_server_register(s->grpc,
					  "/etcdserverpb.Lease/LeaseKeepAlive",
					  GRPC_BIDI, &kvd_lease_keepalive_grpc_h,
					  s);
	if (rv == 0)
		rv = grpc_server_register(s->grpc, "/grpc.health.v1.Health/Check",
					  GRPC_UNARY, &health_h, s);
	for (size_t i = 0;
	     i < sizeof(unserved) / sizeof(unserved[0]) && rv == 0; i++)
		rv = grpc_server_register(s->grpc, unserved[i].path,
					  unserved[i].kind, &unimpl_h,
					  (void *)unserved[i].msg);
	return rv;
}

void kvd_grpc_free(struct kvd_server *s)
{
	if (s->grpc != NULL)
		grpc_server_free(s->grpc);
	s->grpc = NULL;
	free(s->grpc_methods);
	s->grpc_methods = NULL;
}

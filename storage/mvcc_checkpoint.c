/* Checkpoints of the MVCC store (raft snapshots, `snapshot save`) and their
 * verified restore. A checkpoint is a compacted LMDB copy made from LMDB's
 * own read transaction, so the owner keeps writing meanwhile; its CRC32C
 * and size go to "<path>.crc". */
#include "storage/mvcc.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/crc32c.h"
#include "common/errors.h"
#include "common/log.h"
#include "mvcc_internal.h"

#define MOD "mvcc"

static int fsync_dir_of(const char *path)
{
	char *d = strdup(path);
	if (d == NULL)
		return KV_ENOMEM;
	char *slash = strrchr(d, '/');
	const char *dir = ".";
	if (slash == d)
		dir = "/";
	else if (slash != NULL) {
		*slash = 0;
		dir = d;
	}
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = 0;
	if (fd < 0 || fsync(fd) != 0)
		rc = kv_from_errno(errno);
	if (fd >= 0)
		close(fd);
	free(d);
	return rc;
}

static int file_crc(const char *path, uint32_t *crc, uint64_t *size)
{
	unsigned char buf[1 << 16];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int rc = 0;

	*crc = 0;
	*size = 0;
	if (fd < 0)
		return kv_from_errno(errno);
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = kv_from_errno(errno);
			break;
		}
		if (n == 0)
			break;
		*crc = kv_crc32c(*crc, buf, (size_t)n);
		*size += (uint64_t)n;
	}
	close(fd);
	return rc;
}

/* Opens a copy read-only and reads its meta; KV_ECORRUPT if it is not a
 * store. */
static int inspect_copy(const char *path, struct mvcc_checkpoint_info *info)
{
	MDB_env *env = NULL;
	MDB_txn *txn = NULL;
	MDB_dbi meta, kv;
	int64_t compact;
	int rc;

	rc = mdb_env_create(&env);
	if (rc == 0)
		rc = mdb_env_set_maxdbs(env, 8);
	if (rc == 0)
		rc = mdb_env_open(env, path,
				  MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK, 0600);
	if (rc == 0)
		rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
	if (rc == 0)
		rc = mdb_dbi_open(txn, "meta", 0, &meta);
	if (rc == 0)
		rc = mdb_dbi_open(txn, "kv", 0, &kv);
	if (rc != 0) {
		rc = KV_ECORRUPT;
		goto out;
	}
	MDB_val k = { 6, "format" }, v;
	if (mdb_get(txn, meta, &k, &v) != 0 || v.mv_size != 4 ||
	    kv_load_u32le(v.mv_data) != MVCC_FORMAT) {
		rc = KV_ECORRUPT;
		goto out;
	}
	rc = mvcc_read_meta(txn, meta, &info->revision, &compact,
			    &info->applied_index, &info->applied_term);
	if (rc != 0)
		rc = KV_ECORRUPT;
out:
	if (txn != NULL)
		mdb_txn_abort(txn);
	if (env != NULL)
		mdb_env_close(env);
	return rc;
}

/* ---- a crash-proof check of a received file --------------------------- */

/* LMDB trusts its file: a corrupt page (a zero page size, a page number
 * past the end) crashes the process that reads it (SIGFPE, SIGBUS,
 * SIGSEGV). A snapshot from a peer, or one an operator restores, may be
 * corrupt even when its checksum matches (it was corrupt where it was
 * made). So before kvd opens it, a child process reads every page that
 * can be reached: every database, every key and value byte, and the
 * free list's page numbers; a crash there is a corrupt file here. */

static volatile unsigned char touch_sink;

static void touch(const MDB_val *v)
{
	const unsigned char *p = v->mv_data;
	for (size_t i = 0; i < v->mv_size; i += 512)
		touch_sink ^= p[i];
	if (v->mv_size > 0)
		touch_sink ^= p[v->mv_size - 1];
}

/* Walks dbi; with freelist, checks its page numbers against last_pg.
 * Names of the main database's sub-databases go to names (up to 16). */
static int walk_db(MDB_txn *txn, MDB_dbi dbi, uint64_t last_pg,
		   bool freelist, char names[][64], size_t *nnames)
{
	MDB_cursor *c;
	MDB_val k, v;
	int rc = mdb_cursor_open(txn, dbi, &c);
	if (rc != 0)
		return rc;
	while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0) {
		touch(&k);
		touch(&v);
		if (freelist) {
			/* an IDL: count, then that many page numbers */
			const size_t *idl = v.mv_data;
			if (v.mv_size < sizeof(size_t) ||
			    v.mv_size != (idl[0] + 1) * sizeof(size_t)) {
				rc = MDB_CORRUPTED;
				break;
			}
			for (size_t i = 1; i <= idl[0]; i++)
				if (idl[i] > last_pg) {
					rc = MDB_CORRUPTED;
					break;
				}
			if (rc != 0)
				break;
		}
		if (names != NULL && *nnames < 16 && k.mv_size < 64) {
			memcpy(names[*nnames], k.mv_data, k.mv_size);
			names[(*nnames)++][k.mv_size] = '\0';
		}
	}
	mdb_cursor_close(c);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

static int walk_file(const char *path)
{
	MDB_env *env = NULL;
	MDB_txn *txn = NULL;
	MDB_envinfo info;
	MDB_dbi main;
	char names[16][64];
	size_t n = 0;
	int rc = mdb_env_create(&env);
	if (rc == 0)
		rc = mdb_env_set_maxdbs(env, 16);
	if (rc == 0)
		rc = mdb_env_open(env, path,
				  MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK, 0600);
	if (rc == 0)
		rc = mdb_env_info(env, &info);
	if (rc == 0)
		rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
	if (rc == 0)
		rc = walk_db(txn, 0, info.me_last_pgno, true, NULL, &n);
	if (rc == 0)
		rc = mdb_dbi_open(txn, NULL, 0, &main);
	if (rc == 0)
		rc = walk_db(txn, main, info.me_last_pgno, false, names, &n);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		MDB_dbi d;
		rc = mdb_dbi_open(txn, names[i], 0, &d);
		if (rc == 0)
			rc = walk_db(txn, d, info.me_last_pgno, false, NULL,
				     &n);
	}
	if (txn != NULL)
		mdb_txn_abort(txn);
	if (env != NULL)
		mdb_env_close(env);
	return rc;
}

static int check_in_child(const char *path)
{
	pid_t pid = fork();
	if (pid < 0)
		return kv_from_errno(errno);
	if (pid == 0) {
		/* die of what the file does to LMDB, whatever the parent
		 * installed for these */
		signal(SIGSEGV, SIG_DFL);
		signal(SIGBUS, SIG_DFL);
		signal(SIGFPE, SIG_DFL);
		signal(SIGILL, SIG_DFL);
		signal(SIGABRT, SIG_DFL);
		_exit(walk_file(path) == 0 ? 0 : 1);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return kv_from_errno(errno);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	if (WIFSIGNALED(st))
		KV_ERROR(MOD, "snapshot file is corrupt: reading it crashed",
			 "path=%s signal=%d", path, WTERMSIG(st));
	else
		KV_ERROR(MOD, "snapshot file is corrupt", "path=%s", path);
	return KV_ECORRUPT;
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return kv_from_errno(errno);
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

static int write_sum(const char *path, uint32_t crc, uint64_t size)
{
	char name[4096], tmp[4200], line[64];
	int rc = 0;

	if (snprintf(name, sizeof(name), "%s.crc", path) >= (int)sizeof(name))
		return KV_EINVAL;
	snprintf(tmp, sizeof(tmp), "%s.tmp", name);
	int n = snprintf(line, sizeof(line), "crc32c=%08" PRIx32
			 " size=%" PRIu64 "\n", crc, size);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return kv_from_errno(errno);
	rc = write_all(fd, line, (size_t)n);
	if (rc == 0 && fsync(fd) != 0)
		rc = kv_from_errno(errno);
	close(fd);
	if (rc == 0 && rename(tmp, name) != 0)
		rc = kv_from_errno(errno);
	if (rc != 0)
		unlink(tmp);
	return rc;
}

static int read_sum(const char *path, uint32_t *crc, uint64_t *size)
{
	char name[4096], line[128];

	if (snprintf(name, sizeof(name), "%s.crc", path) >= (int)sizeof(name))
		return KV_EINVAL;
	FILE *f = fopen(name, "re");
	if (f == NULL)
		return KV_ECORRUPT;
	int ok = fgets(line, sizeof(line), f) != NULL &&
		 sscanf(line, "crc32c=%" SCNx32 " size=%" SCNu64, crc, size) ==
			 2;
	fclose(f);
	return ok ? 0 : KV_ECORRUPT;
}

int mvcc_checkpoint(struct mvcc *m, const char *path,
		    struct mvcc_checkpoint_info *info)
{
	struct mvcc_checkpoint_info tmpinfo;
	char tmp[4200];
	int rc;

	if (info == NULL)
		info = &tmpinfo;
	memset(info, 0, sizeof(*info));
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return KV_EINVAL;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return kv_from_errno(errno);
	/* Counted as a reader: the map must not move under the copy. */
	pthread_mutex_lock(&m->lock);
	m->readers++;
	pthread_mutex_unlock(&m->lock);
	rc = mvcc_from_mdb(mdb_env_copyfd2(m->env, fd, MDB_CP_COMPACT));
	pthread_mutex_lock(&m->lock);
	if (--m->readers == 0)
		pthread_cond_broadcast(&m->idle);
	pthread_mutex_unlock(&m->lock);
	if (rc == 0 && fsync(fd) != 0)
		rc = kv_from_errno(errno);
	close(fd);
	if (rc == 0)
		rc = file_crc(tmp, &info->crc32c, &info->size);
	if (rc == 0)
		rc = inspect_copy(tmp, info);
	if (rc == 0)
		rc = write_sum(path, info->crc32c, info->size);
	if (rc == 0 && rename(tmp, path) != 0)
		rc = kv_from_errno(errno);
	if (rc == 0)
		rc = fsync_dir_of(path);
	if (rc != 0) {
		unlink(tmp);
		KV_WARN(MOD, "checkpoint failed", "path=%s err=%s", path,
			kv_errname(rc));
		return rc;
	}
	KV_INFO(MOD, "checkpoint written",
		"path=%s size=%" PRIu64 " crc32c=%08" PRIx32 " rev=%" PRId64,
		path, info->size, info->crc32c, info->revision);
	return 0;
}

static int copy_file(const char *src, const char *dst)
{
	unsigned char buf[1 << 16];
	int in = open(src, O_RDONLY | O_CLOEXEC);
	int rc = 0;

	if (in < 0)
		return kv_from_errno(errno);
	int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (out < 0) {
		rc = kv_from_errno(errno);
		close(in);
		return rc;
	}
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = kv_from_errno(errno);
			break;
		}
		if (n == 0)
			break;
		rc = write_all(out, buf, (size_t)n);
		if (rc != 0)
			break;
	}
	if (rc == 0 && fsync(out) != 0)
		rc = kv_from_errno(errno);
	close(out);
	close(in);
	return rc;
}

int mvcc_restore(const char *path, const char *dir,
		 struct mvcc_checkpoint_info *info)
{
	struct mvcc_checkpoint_info tmpinfo, got;
	char tmp[4200], data[4200], lock[4200];
	uint32_t want_crc;
	uint64_t want_size;
	int rc;

	if (info == NULL)
		info = &tmpinfo;
	memset(info, 0, sizeof(*info));
	if (snprintf(data, sizeof(data), "%s/data.mdb", dir) >=
	    (int)sizeof(data))
		return KV_EINVAL;
	snprintf(tmp, sizeof(tmp), "%s/data.mdb.restore", dir);
	snprintf(lock, sizeof(lock), "%s/lock.mdb", dir);
	rc = read_sum(path, &want_crc, &want_size);
	if (rc == 0)
		rc = file_crc(path, &info->crc32c, &info->size);
	if (rc == 0 && (info->crc32c != want_crc || info->size != want_size))
		rc = KV_ECORRUPT;
	if (rc == 0)
		rc = check_in_child(path);
	if (rc == 0)
		rc = inspect_copy(path, info);
	if (rc != 0)
		goto out;
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		rc = kv_from_errno(errno);
		goto out;
	}
	rc = copy_file(path, tmp);
	/* Verify what landed on disk, not what we meant to write. */
	if (rc == 0)
		rc = file_crc(tmp, &got.crc32c, &got.size);
	if (rc == 0 && (got.crc32c != want_crc || got.size != want_size))
		rc = KV_EIO;
	if (rc == 0 && rename(tmp, data) != 0)
		rc = kv_from_errno(errno);
	if (rc != 0) {
		unlink(tmp);
		goto out;
	}
	if (unlink(lock) != 0 && errno != ENOENT) {
		rc = kv_from_errno(errno);
		goto out;
	}
	rc = fsync_dir_of(data);
out:
	if (rc != 0)
		KV_WARN(MOD, "restore refused", "path=%s dir=%s err=%s", path,
			dir, kv_errname(rc));
	else
		KV_INFO(MOD, "restored", "path=%s dir=%s rev=%" PRId64, path,
			dir, info->revision);
	return rc;
}

/* storage/vfs_posix.c — the real file layer: POSIX calls, 64-bit offsets. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "common/errors.h"
#include "storage/vfs.h"

_Static_assert(sizeof(off_t) == 8, "64-bit off_t required");

struct vfs_file {
	int fd;
};

static int p_open(struct vfs *vfs, const char *path, int flags,
		  struct vfs_file **out)
{
	int oflags = O_CLOEXEC;
	struct vfs_file *f;
	int fd;

	oflags |= (flags & VFS_RDWR) ? O_RDWR : O_RDONLY;
	if (flags & VFS_CREATE)
		oflags |= O_CREAT;
	if (flags & VFS_TRUNC)
		oflags |= O_TRUNC;
	if (flags & VFS_EXCL)
		oflags |= O_EXCL;
	f = malloc(sizeof(*f));
	if (f == NULL)
		return KV_ENOMEM;
	do
		fd = open(path, oflags, 0644);
	while (fd < 0 && errno == EINTR);
	if (fd < 0) {
		int e = errno;
		free(f);
		return kv_from_errno(e);
	}
	f->fd = fd;
	*out = f;
	return 0;
}

static int p_close(struct vfs *vfs, struct vfs_file *f)
{
	int rv = close(f->fd);
	int e = errno;

	free(f);
	/* EINTR on Linux close still closes the fd; not an error here. */
	if (rv != 0 && e != EINTR)
		return kv_from_errno(e);
	return 0;
}

static int p_pread(struct vfs *vfs, struct vfs_file *f, void *buf, size_t len,
		   uint64_t off, size_t *nread)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(f->fd, (char *)buf + done, len - done,
				  (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return kv_from_errno(errno);
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	*nread = done;
	return 0;
}

static int p_pwrite(struct vfs *vfs, struct vfs_file *f, const void *buf,
		    size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pwrite(f->fd, (const char *)buf + done, len - done,
				   (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return kv_from_errno(errno);
		}
		if (n == 0)
			return KV_EIO;
		done += (size_t)n;
	}
	return 0;
}

static int p_sync(struct vfs *vfs, struct vfs_file *f, bool datasync)
{
	/* Never retried on EINTR either: after a failed fsync the state of
	 * the page cache is unknown (fsyncgate). */
	int rv = datasync ? fdatasync(f->fd) : fsync(f->fd);

	return rv == 0 ? 0 : kv_from_errno(errno);
}

static int p_truncate(struct vfs *vfs, struct vfs_file *f, uint64_t size)
{
	int rv;

	do
		rv = ftruncate(f->fd, (off_t)size);
	while (rv != 0 && errno == EINTR);
	return rv == 0 ? 0 : kv_from_errno(errno);
}

static int p_allocate(struct vfs *vfs, struct vfs_file *f, uint64_t off,
		      uint64_t len)
{
	int rv;

	do
		rv = fallocate(f->fd, 0, (off_t)off, (off_t)len);
	while (rv != 0 && errno == EINTR);
	if (rv == 0)
		return 0;
	if (errno == EOPNOTSUPP || errno == ENOSYS)
		return KV_EUNSUPP;
	return kv_from_errno(errno);
}

static int p_size(struct vfs *vfs, struct vfs_file *f, uint64_t *size)
{
	struct stat st;

	if (fstat(f->fd, &st) != 0)
		return kv_from_errno(errno);
	*size = (uint64_t)st.st_size;
	return 0;
}

static int p_rename(struct vfs *vfs, const char *from, const char *to)
{
	return rename(from, to) == 0 ? 0 : kv_from_errno(errno);
}

static int p_unlink(struct vfs *vfs, const char *path)
{
	return unlink(path) == 0 ? 0 : kv_from_errno(errno);
}

static int p_mkdir(struct vfs *vfs, const char *path)
{
	return mkdir(path, 0755) == 0 ? 0 : kv_from_errno(errno);
}

static int p_sync_dir(struct vfs *vfs, const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rv = 0;

	if (fd < 0)
		return kv_from_errno(errno);
	if (fsync(fd) != 0)
		rv = kv_from_errno(errno);
	close(fd);
	return rv;
}

static int p_listdir(struct vfs *vfs, const char *path, char ***names,
		     size_t *n)
{
	char **v = NULL;
	size_t len = 0, cap = 0;
	struct dirent *de;
	DIR *d;
	int rv = 0;

	d = opendir(path);
	if (d == NULL)
		return kv_from_errno(errno);
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (de == NULL) {
			if (errno != 0)
				rv = kv_from_errno(errno);
			break;
		}
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (len == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			char **nv = realloc(v, ncap * sizeof(*nv));
			if (nv == NULL) {
				rv = KV_ENOMEM;
				break;
			}
			v = nv;
			cap = ncap;
		}
		v[len] = strdup(de->d_name);
		if (v[len] == NULL) {
			rv = KV_ENOMEM;
			break;
		}
		len++;
	}
	closedir(d);
	if (rv != 0) {
		vfs_names_free(v, len);
		return rv;
	}
	*names = v;
	*n = len;
	return 0;
}

static int p_lock(struct vfs *vfs, struct vfs_file *f)
{
	int rv;

	do
		rv = flock(f->fd, LOCK_EX | LOCK_NB);
	while (rv != 0 && errno == EINTR);
	if (rv == 0)
		return 0;
	return errno == EWOULDBLOCK ? KV_EBUSY : kv_from_errno(errno);
}

static struct vfs posix_vfs = {
	.open = p_open,
	.close = p_close,
	.pread = p_pread,
	.pwrite = p_pwrite,
	.sync = p_sync,
	.truncate = p_truncate,
	.allocate = p_allocate,
	.size = p_size,
	.rename = p_rename,
	.unlink = p_unlink,
	.mkdir = p_mkdir,
	.sync_dir = p_sync_dir,
	.listdir = p_listdir,
	.lock = p_lock,
	.destroy = NULL,
};

struct vfs *vfs_posix(void)
{
	return &posix_vfs;
}

void vfs_names_free(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

void vfs_destroy(struct vfs *vfs)
{
	if (vfs != NULL && vfs->destroy != NULL)
		vfs->destroy(vfs);
}

/* kv-wal-bench DIR [SECONDS] — WAL append throughput vs the disk's raw
 * fdatasync rate.
 *
 * Measures, in DIR (which must be on the disk under test):
 *   raw:  pwrite + fdatasync in a loop, sequentially into freshly
 *         preallocated space (fallocate, 64 MiB at a time, like WAL
 *         segments): 4 KiB, and the byte size of each WAL batch below
 *         (what one WAL batch costs at best)
 *   wal:  wal_append_sync of batches of 1, 64 and 512 entries of 256 B
 *         (one write + one fdatasync per batch)
 *   wal pipelined: 1-entry appends with up to 256 in flight, so group
 *         commit coalesces them
 * and prints one table row per case. Each measurement runs SECONDS
 * (default 3); raw/WAL pairs run 5 rounds interleaved (median shown). */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "kv/errors.h"
#include "storage/wal.h"

#define ENTRY_SIZE 256
#define ROUNDS 5

static char base_dir[1024];
static double seconds = 3.0;

struct result {
	const char *name;
	uint64_t syncs;
	uint64_t entries;
	uint64_t bytes;
	double secs;
};

static void print_row(const struct result *r, double raw_rate)
{
	double sps = r->syncs / r->secs;

	printf("%-30s %10.0f %12.0f %9.2f %8.1f%%\n", r->name, sps,
	       r->entries / r->secs, r->bytes / r->secs / (1024.0 * 1024.0),
	       raw_rate > 0 ? 100.0 * sps / raw_rate : 100.0);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void rm_rf(const char *dir)
{
	char cmd[2048];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not remove %s\n", dir);
}

static int bench_raw(size_t wsize, struct result *r, char *name,
		     size_t namelen)
{
	char path[1200];
	unsigned char *buf = malloc(wsize);
	uint64_t t0, end, off = 0, n = 0, alloc = 0;
	const uint64_t chunk = 64ull << 20;
	int fd;

	snprintf(path, sizeof(path), "%s/raw.bench", base_dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || buf == NULL) {
		perror(path);
		free(buf);
		return -1;
	}
	memset(buf, 0xab, wsize);
	t0 = kv_now_ns();
	end = t0 + (uint64_t)(seconds * 1e9);
	while (kv_now_ns() < end) {
		/* Fresh preallocated space, as the WAL's segments: never
		 * overwrite blocks already written (that would be cheaper:
		 * no extent conversion). */
		if (off + wsize > alloc) {
			if (fallocate(fd, 0, (off_t)alloc, (off_t)chunk) != 0)
				perror("fallocate (continuing)");
			alloc += chunk;
		}
		if (pwrite(fd, buf, wsize, (off_t)off) != (ssize_t)wsize ||
		    fdatasync(fd) != 0) {
			perror("raw write");
			close(fd);
			free(buf);
			return -1;
		}
		off += wsize;
		n++;
	}
	r->secs = (kv_now_ns() - t0) / 1e9;
	snprintf(name, namelen, "raw write %zuB+fdatasync", wsize);
	r->name = name;
	r->syncs = n;
	r->entries = n;
	r->bytes = n * wsize;
	close(fd);
	unlink(path);
	free(buf);
	return 0;
}

static struct wal *open_fresh(const char *name)
{
	char dir[1200], msg[512];
	struct wal *w;
	int rv;

	snprintf(dir, sizeof(dir), "%s/%s", base_dir, name);
	rm_rf(dir);
	rv = wal_open(dir, NULL, &w, msg, sizeof(msg));
	if (rv != 0) {
		fprintf(stderr, "wal_open %s: %s\n", dir, msg);
		return NULL;
	}
	return w;
}

static int bench_batch(unsigned batch, struct result *r, char *name,
		       size_t namelen)
{
	struct wal_entry *e = calloc(batch, sizeof(*e));
	unsigned char *payload = malloc(ENTRY_SIZE);
	struct wal_stats st;
	uint64_t t0, end, index = 1;
	struct wal *w;
	int rv = 0;

	snprintf(name, namelen, "wal batch=%u x %dB", batch, ENTRY_SIZE);
	w = open_fresh("wal.bench");
	if (w == NULL || e == NULL || payload == NULL) {
		rv = -1;
		goto out;
	}
	memset(payload, 0x5a, ENTRY_SIZE);
	t0 = kv_now_ns();
	end = t0 + (uint64_t)(seconds * 1e9);
	while (kv_now_ns() < end) {
		for (unsigned i = 0; i < batch; i++)
			e[i] = (struct wal_entry){ .index = index + i,
						   .term = 1, .type = 1,
						   .payload = payload,
						   .len = ENTRY_SIZE };
		rv = wal_append_sync(w, e, batch);
		if (rv != 0) {
			fprintf(stderr, "append: %s (%s)\n", kv_strerror(rv),
				wal_errmsg(w));
			goto out;
		}
		index += batch;
	}
	r->secs = (kv_now_ns() - t0) / 1e9;
	wal_stats(w, &st);
	r->name = name;
	r->syncs = st.syncs;
	r->entries = st.entries;
	r->bytes = st.entries * ENTRY_SIZE;
out:
	if (w != NULL)
		wal_close(w);
	free(payload);
	free(e);
	return rv;
}

/* Pipelined single-entry appends: group commit at work. */
#define INFLIGHT 256

struct pipe_state {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned inflight;
	int err;
};

struct pipe_req {
	struct wal_append_req req;
	struct pipe_state *ps;
};

static void on_pipe(struct wal_append_req *req, int status)
{
	struct pipe_req *p = (struct pipe_req *)(void *)req;
	struct pipe_state *ps = p->ps;

	pthread_mutex_lock(&ps->mu);
	ps->inflight--;
	if (status != 0)
		ps->err = status;
	pthread_cond_signal(&ps->cv);
	pthread_mutex_unlock(&ps->mu);
}

static int bench_pipelined(struct result *r)
{
	struct pipe_req *reqs = calloc(INFLIGHT, sizeof(*reqs));
	struct pipe_state ps = { .inflight = 0 };
	unsigned char payload[ENTRY_SIZE];
	struct wal_stats st;
	uint64_t t0, end, index = 1;
	unsigned slot = 0;
	struct wal *w;
	int rv = 0;

	w = open_fresh("wal.bench");
	if (w == NULL || reqs == NULL) {
		free(reqs);
		return -1;
	}
	pthread_mutex_init(&ps.mu, NULL);
	pthread_cond_init(&ps.cv, NULL);
	memset(payload, 0x5a, sizeof(payload));
	t0 = kv_now_ns();
	end = t0 + (uint64_t)(seconds * 1e9);
	while (kv_now_ns() < end && rv == 0) {
		struct wal_entry e = { .index = index, .term = 1, .type = 1,
				       .payload = payload,
				       .len = ENTRY_SIZE };
		pthread_mutex_lock(&ps.mu);
		while (ps.inflight == INFLIGHT)
			pthread_cond_wait(&ps.cv, &ps.mu);
		ps.inflight++;
		pthread_mutex_unlock(&ps.mu);
		/* The slot is free: at most INFLIGHT outstanding, completed
		 * in order. */
		reqs[slot].ps = &ps;
		rv = wal_append(w, &e, 1, &reqs[slot].req, on_pipe);
		slot = (slot + 1) % INFLIGHT;
		index++;
	}
	pthread_mutex_lock(&ps.mu);
	while (ps.inflight > 0 && rv == 0)
		pthread_cond_wait(&ps.cv, &ps.mu);
	pthread_mutex_unlock(&ps.mu);
	r->secs = (kv_now_ns() - t0) / 1e9;
	wal_stats(w, &st);
	r->name = "wal pipelined 1 x 256B (256)";
	r->syncs = st.syncs;
	r->entries = st.entries;
	r->bytes = st.entries * ENTRY_SIZE;
	wal_close(w);
	pthread_cond_destroy(&ps.cv);
	pthread_mutex_destroy(&ps.mu);
	free(reqs);
	return rv || ps.err ? -1 : 0;
}

int main(int argc, char **argv)
{
	static char names[8][64];
	unsigned batches[] = { 1, 64, 512 };
	struct result raw4k, raw, r;
	char dir[1200];

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: %s DIR [SECONDS]\n", argv[0]);
		return 2;
	}
	snprintf(base_dir, sizeof(base_dir), "%s/kv-wal-bench.%d", argv[1],
		 (int)getpid());
	if (argc == 3)
		seconds = atof(argv[2]);
	if (seconds <= 0)
		seconds = 3.0;
	if (mkdir(base_dir, 0755) != 0) {
		perror(base_dir);
		return 2;
	}
	kv_log_set_level(KV_LOG_WARN);

	/* "vs raw": WAL batches per second over raw write+fdatasync of the
	 * same number of bytes per write (4 KiB for the pipelined case).
	 * Disks in VMs drift, so each pair runs ROUNDS times interleaved and
	 * the row shows the round with the median WAL/raw ratio. */
	printf("%-30s %10s %12s %9s %9s\n", "case", "syncs/s", "entries/s",
	       "MiB/s", "vs raw");
	if (bench_raw(4096, &raw4k, names[0], sizeof(names[0])) != 0)
		return 1;
	print_row(&raw4k, raw4k.syncs / raw4k.secs);
	for (size_t i = 0; i < 3; i++) {
		size_t wsize = batches[i] * (size_t)wal_rec_size(ENTRY_SIZE);
		struct result rr[ROUNDS], wr[ROUNDS];
		double ratio[ROUNDS], sorted[ROUNDS];
		size_t med = 0;
		for (int k = 0; k < ROUNDS; k++) {
			if (bench_raw(wsize, &rr[k], names[1 + 2 * i],
				      sizeof(names[0])) != 0)
				return 1;
			if (bench_batch(batches[i], &wr[k], names[2 + 2 * i],
					sizeof(names[0])))
				return 1;
			ratio[k] = (wr[k].syncs / wr[k].secs) /
				   (rr[k].syncs / rr[k].secs);
			sorted[k] = ratio[k];
		}
		qsort(sorted, ROUNDS, sizeof(double), cmp_double);
		for (int k = 0; k < ROUNDS; k++)
			if (ratio[k] == sorted[ROUNDS / 2])
				med = (size_t)k;
		raw = rr[med];
		r = wr[med];
		print_row(&raw, raw.syncs / raw.secs);
		print_row(&r, raw.syncs / raw.secs);
	}
	if (bench_pipelined(&r) != 0)
		return 1;
	print_row(&r, raw4k.syncs / raw4k.secs);
	snprintf(dir, sizeof(dir), "%s", base_dir);
	rm_rf(dir);
	return 0;
}

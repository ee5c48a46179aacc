/* kvd-dump wal: exit 0 on a good WAL (also with a torn tail), 1 with a
 * CORRUPT line naming the file and offset on corruption, 2 on usage
 * errors. Runs the built tool directly (no shell). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "storage/wal.h"
#include "wal_test_util.h"

static char tool[1024];

/* Runs kvd-dump with args; returns its exit status and stores its
 * stdout+stderr in out (NUL-terminated). */
static int run_dump(char *const args[], char *out, size_t outlen)
{
	char path[] = "/tmp/kvwal-dump-out-XXXXXX";
	int fd = mkstemp(path), status;
	pid_t pid;
	ssize_t n;

	assert_true(fd >= 0);
	unlink(path);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		execv(tool, args);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	n = pread(fd, out, outlen - 1, 0);
	out[n > 0 ? n : 0] = '\0';
	close(fd);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void test_dump(void **state)
{
	char *dir = tu_mkdtemp();
	static char out[1 << 16];
	struct wal *w = tu_open(dir, 0, NULL);
	char seg[300];
	unsigned char *p;
	size_t len;

	tu_append(w, 1, 10, 1);
	tu_append(w, 11, 20, 2);
	assert_int_equal(wal_set_term_vote(w, 2, 1), 0);
	assert_int_equal(wal_close(w), 0);

	char *good[] = { tool, "wal", dir, NULL };
	assert_int_equal(run_dump(good, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "meta: term=2 vote=1"));
	assert_non_null(strstr(out, "index=20 term=2"));
	assert_non_null(strstr(out, "20 entries (last index 20)"));

	/* Torn tail: reported, not an error. */
	snprintf(seg, sizeof(seg), "%s", tu_last_segment(dir));
	p = tu_read(tu_path(dir, seg), &len);
	uint64_t off = WAL_SEG_HDR_SIZE;
	for (uint64_t i = 1; i < 20; i++)
		off += wal_rec_size(tu_len(i));
	p[off + 5] ^= 1;
	tu_write(tu_path(dir, seg), p, len);
	assert_int_equal(run_dump(good, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "TORN TAIL"));
	p[off + 5] ^= 1;

	/* Corruption in the first batch. */
	p[WAL_SEG_HDR_SIZE + 9] ^= 4;
	tu_write(tu_path(dir, seg), p, len);
	assert_int_equal(run_dump(good, out, sizeof(out)), 1);
	char want[400];
	snprintf(want, sizeof(want), "CORRUPT %s: offset %u:",
		 tu_path(dir, seg), WAL_SEG_HDR_SIZE);
	assert_non_null(strstr(out, want));
	free(p);

	char *bad[] = { tool, "nosuch", NULL };
	assert_int_equal(run_dump(bad, out, sizeof(out)), 2);
	char *none[] = { tool, "wal", NULL };
	assert_int_equal(run_dump(none, out, sizeof(out)), 2);
	tu_rmdir(dir);
	free(dir);
}

int main(void)
{
	const char *b = getenv("KV_BUILD_DIR");
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dump),
	};

	snprintf(tool, sizeof(tool), "%s/bin/kvd-dump", b ? b : ".");
	kv_log_set_level(KV_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for common/: errors, buffers, varints, CRC32C, log. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/crc32c.h"
#include "common/errors.h"
#include "common/log.h"
#include "kv/errors.h"

static void test_strerror(void **state)
{
	(void)state;
	assert_string_equal(kv_strerror(0), "success");
	assert_string_equal(kv_strerror(KV_ENOMEM), "out of memory");
	assert_string_equal(kv_errname(KV_ECORRUPT), "CORRUPT");
	assert_string_equal(kv_strerror(-9999), "unknown error -9999");
	assert_int_equal(kv_from_errno(28 /* ENOSPC */), KV_EFULL);
}

/* Known answers: RFC 3720 appendix B.4 and the "123456789" check value. */
static void test_crc32c_vectors(void **state)
{
	unsigned char zeros[32] = {0}, ones[32], inc[32], dec[32];
	(void)state;
	memset(ones, 0xff, sizeof(ones));
	for (int i = 0; i < 32; i++) {
		inc[i] = (unsigned char)i;
		dec[i] = (unsigned char)(31 - i);
	}
	for (int hw = 0; hw < 2; hw++) {
		uint32_t (*f)(uint32_t, const void *, size_t) =
			hw ? kv_crc32c : kv_crc32c_sw;
		assert_int_equal(f(0, "123456789", 9), 0xE3069283u);
		assert_int_equal(f(0, zeros, 32), 0x8A9136AAu);
		assert_int_equal(f(0, ones, 32), 0x62A8AB43u);
		assert_int_equal(f(0, inc, 32), 0x46DD794Eu);
		assert_int_equal(f(0, dec, 32), 0x113FDB5Cu);
		assert_int_equal(f(0, "", 0), 0u);
	}
}

/* Hardware and table paths agree on every length and alignment, and
 * chaining equals one pass. */
static void test_crc32c_paths_agree(void **state)
{
	unsigned char buf[1100];
	(void)state;
	srand(42);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (unsigned char)rand();
	for (size_t off = 0; off < 9; off++) {
		for (size_t len = 0; len + off <= sizeof(buf); len += 37) {
			uint32_t a = kv_crc32c(0, buf + off, len);
			uint32_t b = kv_crc32c_sw(0, buf + off, len);
			assert_int_equal(a, b);
			size_t half = len / 3;
			uint32_t c = kv_crc32c(kv_crc32c(0, buf + off, half),
					       buf + off + half, len - half);
			assert_int_equal(a, c);
		}
	}
}

static void test_buf(void **state)
{
	struct kv_buf b = KV_BUF_INIT;
	(void)state;
	assert_int_equal(kv_buf_append(&b, "abc", 3), 0);
	assert_int_equal(kv_buf_printf(&b, "-%d-", 42), 0);
	assert_int_equal(b.len, 7);
	assert_memory_equal(b.base, "abc-42-", 7);
	assert_int_equal(b.base[b.len], '\0');
	kv_buf_consume(&b, 4);
	assert_memory_equal(b.base, "42-", 3);
	for (int i = 0; i < 100000; i++)
		assert_int_equal(kv_buf_putc(&b, (unsigned char)i), 0);
	assert_int_equal(b.len, 100003);
	size_t n;
	unsigned char *p = kv_buf_steal(&b, &n);
	assert_int_equal(n, 100003);
	assert_null(b.base);
	free(p);
	kv_buf_free(&b);
}

static void test_varint(void **state)
{
	static const uint64_t vals[] = {0, 1, 127, 128, 300, 16383, 16384,
					UINT32_MAX, (uint64_t)INT64_MAX,
					UINT64_MAX};
	struct kv_buf b = KV_BUF_INIT;
	(void)state;
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++)
		assert_int_equal(kv_buf_put_varint(&b, vals[i]), 0);
	const unsigned char *p = b.base, *end = b.base + b.len;
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		uint64_t v;
		assert_int_equal(kv_get_varint(&p, end, &v), 0);
		assert_true(v == vals[i]);
	}
	assert_ptr_equal(p, end);
	uint64_t v;
	assert_int_equal(kv_get_varint(&p, end, &v), KV_EPROTO); /* empty */
	/* 300 = ac 02 */
	kv_buf_reset(&b);
	kv_buf_put_varint(&b, 300);
	assert_int_equal(b.len, 2);
	assert_int_equal(b.base[0], 0xac);
	assert_int_equal(b.base[1], 0x02);
	/* truncated and overlong encodings are rejected */
	unsigned char trunc[] = {0x80, 0x80};
	p = trunc;
	assert_int_equal(kv_get_varint(&p, trunc + 2, &v), KV_EPROTO);
	unsigned char overlong[11];
	memset(overlong, 0xff, sizeof(overlong));
	p = overlong;
	assert_int_equal(kv_get_varint(&p, overlong + 11, &v), KV_EPROTO);
	unsigned char le[8];
	kv_store_u64le(le, 0x0102030405060708ull);
	assert_int_equal(le[0], 8);
	assert_true(kv_load_u64le(le) == 0x0102030405060708ull);
	kv_buf_free(&b);
}

static char *capture_log(enum kv_log_format fmt)
{
	char path[] = "/tmp/kvlogXXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	kv_log_set_fd(fd);
	kv_log_set_format(fmt);
	kv_log_set_level(KV_LOG_INFO);
	KV_DEBUG("test", "hidden", "x=%d", 1);
	KV_INFO("wal", "segment opened", "file=%s index=%d note=\"a b\"",
		"0001.wal", 7);
	kv_log_set_fd(2);
	kv_log_set_format(KV_LOG_LOGFMT);
	off_t n = lseek(fd, 0, SEEK_END);
	char *s = calloc(1, (size_t)n + 1);
	assert_int_equal(pread(fd, s, (size_t)n, 0), n);
	close(fd);
	return s;
}

static void test_log(void **state)
{
	enum kv_log_level l;
	(void)state;
	assert_int_equal(kv_log_parse_level("warning", &l), 0);
	assert_int_equal(l, KV_LOG_WARN);
	assert_int_equal(kv_log_parse_level("loud", &l), KV_EINVAL);

	char *s = capture_log(KV_LOG_LOGFMT);
	assert_null(strstr(s, "hidden"));
	assert_non_null(strstr(s, " level=info mod=wal msg=\"segment opened\" "
				  "file=0001.wal index=7 note=\"a b\"\n"));
	free(s);
	s = capture_log(KV_LOG_JSON);
	assert_non_null(strstr(s, "\"level\":\"info\",\"mod\":\"wal\","
				  "\"msg\":\"segment opened\",\"file\":"
				  "\"0001.wal\",\"index\":\"7\",\"note\":\"a b\"}\n"));
	free(s);
}

static void test_clock(void **state)
{
	(void)state;
	uint64_t a = kv_now_ns(), b = kv_now_ns();
	assert_true(b >= a);
	assert_true(kv_wall_us() > 1600000000ull * 1000000ull);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_strerror),
		cmocka_unit_test(test_crc32c_vectors),
		cmocka_unit_test(test_crc32c_paths_agree),
		cmocka_unit_test(test_buf),
		cmocka_unit_test(test_varint),
		cmocka_unit_test(test_log),
		cmocka_unit_test(test_clock),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

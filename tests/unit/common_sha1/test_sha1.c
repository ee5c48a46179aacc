/* SHA-1: FIPS 180 / NIST example vectors, incremental updates across block
 * boundaries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/sha1.h"

static void hex(const unsigned char *d, char *out)
{
	for (int i = 0; i < KV_SHA1_SIZE; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

static void check(const char *msg, size_t len, const char *want)
{
	unsigned char d[KV_SHA1_SIZE];
	char h[41];
	kv_sha1(msg, len, d);
	hex(d, h);
	assert_string_equal(h, want);
	/* the same bytes fed one at a time */
	struct kv_sha1 c;
	kv_sha1_init(&c);
	for (size_t i = 0; i < len; i++)
		kv_sha1_update(&c, msg + i, 1);
	kv_sha1_final(&c, d);
	hex(d, h);
	assert_string_equal(h, want);
}

static void test_fips_vectors(void **state)
{
	(void)state;
	check("abc", 3, "a9993e364706816aba3e25717850c26c9cd0d89d");
	check("", 0, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
	const char *two =
		"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	check(two, strlen(two), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
	const char *four =
		"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
		"hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
	check(four, strlen(four), "a49b2446a02c645bf419f995b67091253a04a259");
}

static void test_million_a(void **state)
{
	(void)state;
	struct kv_sha1 c;
	unsigned char chunk[1000], d[KV_SHA1_SIZE];
	char h[41];
	memset(chunk, 'a', sizeof(chunk));
	kv_sha1_init(&c);
	for (int i = 0; i < 1000; i++)
		kv_sha1_update(&c, chunk, sizeof(chunk));
	kv_sha1_final(&c, d);
	hex(d, h);
	assert_string_equal(h, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
}

static void test_lengths_around_padding(void **state)
{
	(void)state;
	/* 55, 56, 63, 64, 65 bytes of 'a' (padding edge cases), checked
	 * against values computed with sha1sum. */
	static const struct {
		size_t n;
		const char *want;
	} v[] = {
		{55, "c1c8bbdc22796e28c0e15163d20899b65621d65a"},
		{56, "c2db330f6083854c99d4b5bfb6e8f29f201be699"},
		{63, "03f09f5b158a7a8cdad920bddc29b81c18a551f5"},
		{64, "0098ba824b5c16427bd7a1122a5a442a25ec644d"},
		{65, "11655326c708d70319be2610e8a57d9a5b959d3b"},
	};
	char buf[65];
	memset(buf, 'a', sizeof(buf));
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		check(buf, v[i].n, v[i].want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fips_vectors),
		cmocka_unit_test(test_million_a),
		cmocka_unit_test(test_lengths_around_padding),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* kvd's command line (server/config.h): etcd's names, both value forms,
 * defaults, environment fallback, and the exit-code-2 cases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/config.h"

static enum kvd_parse_result parse(struct kvd_config *cfg, char *err,
				   size_t errlen, ...)
{
	char *argv[64];
	int argc = 0;
	va_list ap;
	argv[argc++] = "kvd";
	va_start(ap, errlen);
	for (char *a = va_arg(ap, char *); a != NULL; a = va_arg(ap, char *))
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	FILE *devnull = fopen("/dev/null", "w");
	enum kvd_parse_result r =
		kvd_config_parse(argc, argv, cfg, devnull, err, errlen);
	fclose(devnull);
	return r;
}

static void test_defaults(void **state)
{
	struct kvd_config c;
	char err[512] = "";
	(void)state;
	unsetenv("ETCD_NAME");
	assert_int_equal(parse(&c, err, sizeof(err), NULL), KVD_PARSE_RUN);
	assert_string_equal(c.name, "default");
	assert_string_equal(c.data_dir, "default.etcd");
	assert_int_equal(c.heartbeat_ms, 100);
	assert_int_equal(c.election_ms, 1000);
	assert_int_equal(c.snapshot_count, 100000);
	assert_int_equal(c.max_request_bytes, 1572864);
	assert_int_equal(c.quota_backend_bytes, (uint64_t)2 << 30);
	assert_int_equal(c.max_txn_ops, 128);
	assert_string_equal(c.initial_cluster, "default=http://localhost:2380");
	assert_string_equal(c.initial_cluster_state, "new");
	assert_string_equal(c.initial_cluster_token, "etcd-cluster");
	kvd_config_free(&c);
}

static void test_both_forms(void **state)
{
	struct kvd_config c;
	char err[512] = "";
	(void)state;
	assert_int_equal(
		parse(&c, err, sizeof(err), "--name", "m1",
		      "--data-dir=/tmp/x", "--heartbeat-interval=50",
		      "--election-timeout", "500", "--listen-peer-urls",
		      "http://127.0.0.1:2380", "--initial-advertise-peer-urls",
		      "http://127.0.0.1:2380", "--initial-cluster",
		      "m1=http://127.0.0.1:2380,m2=http://127.0.0.1:2381",
		      "--client-cert-auth=false", "--max-request-bytes=4096",
		      NULL),
		KVD_PARSE_RUN);
	assert_string_equal(c.name, "m1");
	assert_string_equal(c.data_dir, "/tmp/x");
	assert_int_equal(c.heartbeat_ms, 50);
	assert_int_equal(c.election_ms, 500);
	assert_int_equal(c.max_request_bytes, 4096);
	assert_false(c.client_cert_auth);
	kvd_config_free(&c);
}

static void test_env(void **state)
{
	struct kvd_config c;
	char err[512] = "";
	(void)state;
	setenv("ETCD_NAME", "envname", 1);
	assert_int_equal(parse(&c, err, sizeof(err), NULL), KVD_PARSE_RUN);
	assert_string_equal(c.name, "envname");
	kvd_config_free(&c);
	/* a flag wins over the environment */
	assert_int_equal(parse(&c, err, sizeof(err), "--name", "flag", NULL),
			 KVD_PARSE_RUN);
	assert_string_equal(c.name, "flag");
	kvd_config_free(&c);
	unsetenv("ETCD_NAME");
}

static void test_help_version(void **state)
{
	struct kvd_config c;
	char err[512] = "";
	(void)state;
	assert_int_equal(parse(&c, err, sizeof(err), "--version", NULL),
			 KVD_PARSE_EXIT);
	kvd_config_free(&c);
	assert_int_equal(parse(&c, err, sizeof(err), "--help", NULL),
			 KVD_PARSE_EXIT);
	kvd_config_free(&c);
}

static void expect_error(const char *why, ...)
{
	struct kvd_config c;
	char err[512] = "";
	char *argv[32];
	int argc = 0;
	va_list ap;
	argv[argc++] = "kvd";
	va_start(ap, why);
	for (char *a = va_arg(ap, char *); a != NULL; a = va_arg(ap, char *))
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	enum kvd_parse_result r =
		kvd_config_parse(argc, argv, &c, NULL, err, sizeof(err));
	if (r != KVD_PARSE_ERROR)
		fail_msg("%s: accepted", why);
	if (strstr(err, why) == NULL)
		fail_msg("message \"%s\" lacks \"%s\"", err, why);
	kvd_config_free(&c);
}

static void test_errors(void **state)
{
	(void)state;
	expect_error("unknown flag --bogus", "--bogus", "1", NULL);
	expect_error("needs an argument", "--name", NULL);
	expect_error("invalid value", "--heartbeat-interval", "x", NULL);
	expect_error("invalid value", "--snapshot-count=-1", NULL);
	expect_error("invalid boolean", "--client-cert-auth=maybe", NULL);
	expect_error("--cert-file", "--listen-client-urls",
		     "https://127.0.0.1:2379", NULL);
	expect_error("--client-cert-auth requires --trusted-ca-file",
		     "--client-cert-auth", NULL);
	expect_error("couldn't find local name", "--name", "x",
		     "--initial-cluster", "y=http://localhost:2380", NULL);
	expect_error("--initial-cluster-state", "--initial-cluster-state",
		     "maybe", NULL);
	expect_error("--peer-cert-file", "--listen-peer-urls",
		     "https://127.0.0.1:2380", NULL);
	expect_error("5 times", "--heartbeat-interval", "500", NULL);
	expect_error("not a valid flag", "stray", NULL);
	expect_error("--log-level", "--log-level", "loud", NULL);
	expect_error("invalid URL", "--listen-client-urls", "ftp://x", NULL);
	expect_error("--initial-advertise-peer-urls", "--name", "a",
		     "--initial-cluster", "a=http://127.0.0.1:9999", NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_both_forms),
		cmocka_unit_test(test_env),
		cmocka_unit_test(test_help_version),
		cmocka_unit_test(test_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

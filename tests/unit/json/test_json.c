/* Unit tests for kvjson: golden files captured from etcd 3.4.23's JSON
 * gateway (tests/data/json, scripts/capture-etcd-json.sh) and one test per
 * codec rule. KV_SOURCE_DIR points at the repository root. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "etcdserverpb/rpc.pb-c.h"
#include "kv/errors.h"
#include "kvdpb/internal.pb-c.h"
#include "kvjson/json.h"
#include "mvccpb/kv.pb-c.h"

/* ------------------------------------------------------------- fixtures */

#define D(sym, name) { name, &sym##__descriptor }
static const struct {
	const char *name;
	const ProtobufCMessageDescriptor *desc;
} types[] = {
	D(etcdserverpb__put_request, "etcdserverpb.PutRequest"),
	D(etcdserverpb__put_response, "etcdserverpb.PutResponse"),
	D(etcdserverpb__range_request, "etcdserverpb.RangeRequest"),
	D(etcdserverpb__range_response, "etcdserverpb.RangeResponse"),
	D(etcdserverpb__delete_range_request, "etcdserverpb.DeleteRangeRequest"),
	D(etcdserverpb__delete_range_response, "etcdserverpb.DeleteRangeResponse"),
	D(etcdserverpb__txn_request, "etcdserverpb.TxnRequest"),
	D(etcdserverpb__txn_response, "etcdserverpb.TxnResponse"),
	D(etcdserverpb__compaction_request, "etcdserverpb.CompactionRequest"),
	D(etcdserverpb__compaction_response, "etcdserverpb.CompactionResponse"),
	D(etcdserverpb__lease_grant_request, "etcdserverpb.LeaseGrantRequest"),
	D(etcdserverpb__lease_grant_response, "etcdserverpb.LeaseGrantResponse"),
	D(etcdserverpb__lease_revoke_request, "etcdserverpb.LeaseRevokeRequest"),
	D(etcdserverpb__lease_revoke_response, "etcdserverpb.LeaseRevokeResponse"),
	D(etcdserverpb__lease_time_to_live_request, "etcdserverpb.LeaseTimeToLiveRequest"),
	D(etcdserverpb__lease_time_to_live_response, "etcdserverpb.LeaseTimeToLiveResponse"),
	D(etcdserverpb__lease_leases_request, "etcdserverpb.LeaseLeasesRequest"),
	D(etcdserverpb__lease_leases_response, "etcdserverpb.LeaseLeasesResponse"),
	D(etcdserverpb__status_request, "etcdserverpb.StatusRequest"),
	D(etcdserverpb__status_response, "etcdserverpb.StatusResponse"),
	D(etcdserverpb__member_list_request, "etcdserverpb.MemberListRequest"),
	D(etcdserverpb__member_list_response, "etcdserverpb.MemberListResponse"),
	D(etcdserverpb__alarm_request, "etcdserverpb.AlarmRequest"),
	D(etcdserverpb__alarm_response, "etcdserverpb.AlarmResponse"),
	D(etcdserverpb__hash_request, "etcdserverpb.HashRequest"),
	D(etcdserverpb__hash_response, "etcdserverpb.HashResponse"),
	D(etcdserverpb__watch_request, "etcdserverpb.WatchRequest"),
	D(etcdserverpb__watch_response, "etcdserverpb.WatchResponse"),
};

static const ProtobufCMessageDescriptor *find_type(const char *name)
{
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (!strcmp(types[i].name, name))
			return types[i].desc;
	return NULL;
}

static char *data_path(const char *file)
{
	const char *root = getenv("KV_SOURCE_DIR");
	char *p = NULL;

	assert_non_null(root);
	assert_true(asprintf(&p, "%s/tests/data/json/%s", root, file) > 0);
	return p;
}

static char *slurp(const char *file, size_t *len)
{
	char *path = data_path(file), *buf;
	FILE *f = fopen(path, "rb");
	long n;

	if (!f)
		fail_msg("cannot open %s", path);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	free(path);
	*len = (size_t)n;
	return buf;
}

static json_t *parse(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
	if (!j)
		fail_msg("bad JSON in test: %s: %s", text, e.text);
	return j;
}

static void assert_json_eq(json_t *got, json_t *want, const char *what)
{
	if (!json_equal(got, want)) {
		char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS);
		char *w = json_dumps(want, JSON_COMPACT | JSON_SORT_KEYS);
		print_error("%s:\n got  %s\n want %s\n", what, g, w);
		free(g);
		free(w);
		fail();
	}
}

/* Decodes text as desc (must succeed) and returns the message. */
static ProtobufCMessage *dec_ok(const ProtobufCMessageDescriptor *desc,
				const char *text)
{
	ProtobufCMessage *m = NULL;
	char err[256];
	int rc = kvjson_decode(desc, text, strlen(text), NULL, &m, err,
			       sizeof(err));
	if (rc)
		fail_msg("decode %s of %s: %s (%d)", desc->name, text, err, rc);
	assert_non_null(m);
	return m;
}

/* Decodes text as desc, which must fail with code; returns the message. */
static void dec_fail(const ProtobufCMessageDescriptor *desc, const char *text,
		     int code, const char *msg_part)
{
	ProtobufCMessage *m = (ProtobufCMessage *)1;
	char err[256];
	int rc = kvjson_decode(desc, text, strlen(text), NULL, &m, err,
			       sizeof(err));
	if (rc != code)
		fail_msg("decode %s of %s: rc %d, want %d (%s)", desc->name,
			 text, rc, code, err);
	assert_null(m);
	if (msg_part && !strstr(err, msg_part))
		fail_msg("error \"%s\" lacks \"%s\"", err, msg_part);
}

/* Encodes m and compares with the JSON text want. */
static void enc_eq(const ProtobufCMessage *m, const char *want)
{
	json_t *got = NULL, *w = parse(want);
	assert_int_equal(kvjson_encode(m, &got), 0);
	assert_json_eq(got, w, m->descriptor->name);
	json_decref(got);
	json_decref(w);
}

/* text → message → JSON must equal want (canonical form). */
static void roundtrip_eq(const ProtobufCMessageDescriptor *desc,
			 const char *text, const char *want)
{
	ProtobufCMessage *m = dec_ok(desc, text);
	enc_eq(m, want);
	protobuf_c_message_free_unpacked(m, NULL);
}

/* message → protobuf binary → message → JSON equals the JSON of m. */
static void assert_binary_roundtrip(const ProtobufCMessage *m)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(n ? n : 1);
	ProtobufCMessage *back;
	json_t *a = NULL, *b = NULL;

	assert_non_null(buf);
	assert_int_equal(protobuf_c_message_pack(m, buf), n);
	back = protobuf_c_message_unpack(m->descriptor, NULL, n, buf);
	assert_non_null(back);
	assert_int_equal(kvjson_encode(m, &a), 0);
	assert_int_equal(kvjson_encode(back, &b), 0);
	assert_json_eq(b, a, "binary round trip");
	json_decref(a);
	json_decref(b);
	protobuf_c_message_free_unpacked(back, NULL);
	free(buf);
}

/* ------------------------------------------------------- golden files */

/* Requests sent in a non-canonical form (lowerCamel names, enum numbers,
 * a 64-bit integer as a JSON number) and their canonical re-encoding. */
static const struct {
	const char *name;
	const char *canonical;
} noncanonical[] = {
	{ "put_camel", "{\"key\":\"Zm9vMg==\",\"value\":\"djI=\",\"prev_kv\":true}" },
	{ "range_camel", "{\"key\":\"ZGlyLw==\",\"range_end\":\"ZGlyMA==\","
			 "\"count_only\":true,\"sort_order\":\"ASCEND\"}" },
	{ "txn_failure", "{\"compare\":[{\"key\":\"Zm9v\",\"target\":\"MOD\","
			 "\"result\":\"LESS\",\"mod_revision\":\"1\"}],"
			 "\"success\":[{\"request_put\":{\"key\":\"Zm9v\","
			 "\"value\":\"bmV2ZXI=\"}}],\"failure\":[{"
			 "\"request_range\":{\"key\":\"Zm9v\"}}]}" },
	{ "lease_revoke", "{\"ID\":\"7587869116563380499\"}" },
	/* Zero enum values ("KEY", "EQUAL", "VERSION", "GET") are omitted. */
	{ "txn", "{\"compare\":[{\"key\":\"Zm9v\",\"target\":\"VALUE\","
		 "\"value\":\"YmF6\"},{\"key\":\"Zm9v\",\"result\":\"GREATER\","
		 "\"version\":\"0\"}],\"success\":[{\"request_put\":{"
		 "\"key\":\"Zm9v\",\"value\":\"cXV4\",\"prev_kv\":true}},"
		 "{\"request_range\":{\"key\":\"ZGlyLw==\",\"range_end\":"
		 "\"ZGlyMA==\"}},{\"request_delete_range\":{\"key\":"
		 "\"ZGlyL2E=\"}}],\"failure\":[{\"request_range\":{\"key\":"
		 "\"Zm9v\"}}]}" },
	{ "txn_nested", "{\"compare\":[{\"key\":\"Zm9v\",\"target\":"
			"\"CREATE\",\"result\":\"NOT_EQUAL\",\"create_revision\":"
			"\"0\"}],\"success\":[{\"request_txn\":{\"compare\":[{"
			"\"key\":\"Zm9v\",\"target\":\"LEASE\",\"lease\":\"0\"}],"
			"\"success\":[{\"request_put\":{\"key\":\"bmVzdGVk\","
			"\"value\":\"eWVz\"}}]}}]}" },
	{ "alarm", "{}" },
	{ "range_prefix", "{\"key\":\"ZGlyLw==\",\"range_end\":\"ZGlyMA==\","
			  "\"limit\":\"2\",\"sort_order\":\"DESCEND\"}" },
};

static const char *canonical_for(const char *name)
{
	for (size_t i = 0; i < sizeof(noncanonical) / sizeof(noncanonical[0]); i++)
		if (!strcmp(noncanonical[i].name, name))
			return noncanonical[i].canonical;
	return NULL;
}

/* Checks one golden JSON file of message type tname. Returns whether a
 * round trip was checked. */
static int check_golden_message(const char *file, const char *tname,
				const char *canonical)
{
	const ProtobufCMessageDescriptor *desc = find_type(tname);
	size_t len;
	char *text = slurp(file, &len), err[256];
	ProtobufCMessage *m = NULL;
	json_t *want, *got = NULL;
	struct kv_buf b = KV_BUF_INIT;
	int rc;

	if (!desc)
		fail_msg("no descriptor for %s in the test table", tname);
	rc = kvjson_decode(desc, text, len, NULL, &m, err, sizeof(err));
	if (rc)
		fail_msg("%s as %s: %s", file, tname, err);
	want = canonical ? parse(canonical) : parse(text);
	assert_int_equal(kvjson_encode(m, &got), 0);
	assert_json_eq(got, want, file);
	/* The text form must parse back to the same JSON. */
	assert_int_equal(kvjson_encode_buf(m, &b), 0);
	json_decref(got);
	got = parse((const char *)b.base);
	assert_json_eq(got, want, file);
	assert_binary_roundtrip(m);
	kv_buf_free(&b);
	json_decref(got);
	json_decref(want);
	protobuf_c_message_free_unpacked(m, NULL);
	free(text);
	return 1;
}

/* An error case: etcd answered {"error","message","code"}. When code is 3
 * (InvalidArgument) the request was rejected by the gateway's decoder, so
 * ours must reject it too, and with etcd's message where we match it. */
static void check_golden_error(const char *name, const char *reqt)
{
	char file[128], *text, *rtext, err[256];
	size_t len, rlen;
	json_t *resp;
	ProtobufCMessage *m = NULL;
	int rc, code;
	const char *emsg;

	snprintf(file, sizeof(file), "%s.response.json", name);
	rtext = slurp(file, &rlen);
	resp = parse(rtext);
	code = (int)json_integer_value(json_object_get(resp, "code"));
	emsg = json_string_value(json_object_get(resp, "message"));
	assert_non_null(emsg);
	snprintf(file, sizeof(file), "%s.request.json", name);
	text = slurp(file, &len);
	rc = kvjson_decode(find_type(reqt), text, len, NULL, &m, err,
			   sizeof(err));
	if (code == 3 && strstr(emsg, "revision") == NULL) {
		if (rc != KV_EPROTO)
			fail_msg("%s: decoded although etcd said \"%s\"", name,
				 emsg);
		/* etcd's text for these, which we reproduce. */
		if (!strcmp(name, "err_wrong_type") ||
		    !strcmp(name, "err_bad_base64") ||
		    !strcmp(name, "err_bad_enum"))
			if (strncmp(err, emsg, strlen(emsg)))
				fail_msg("%s: \"%s\" vs etcd's \"%s\"", name,
					 err, emsg);
	} else {
		/* A server-side error: the request itself is well-formed. */
		assert_int_equal(rc, 0);
		protobuf_c_message_free_unpacked(m, NULL);
	}
	json_decref(resp);
	free(text);
	free(rtext);
}

static void test_golden(void **state)
{
	size_t len;
	char *manifest = slurp("cases.txt", &len), *save = NULL;
	int checked = 0, errors = 0;
	(void)state;

	for (char *line = strtok_r(manifest, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char name[64], reqt[128], respt[128], status[16], file[128];
		if (line[0] == '#')
			continue;
		assert_int_equal(sscanf(line, "%63s %127s %127s %15s", name,
					reqt, respt, status), 4);
		if (!strcmp(name, "unknown_field"))
			continue;	/* test_unknown_field_golden */
		if (!strcmp(respt, "-") && strcmp(status, "stream")) {
			check_golden_error(name, reqt);
			errors++;
			continue;
		}
		if (strcmp(reqt, "-")) {
			snprintf(file, sizeof(file), "%s.request.json", name);
			checked += check_golden_message(file, reqt,
							canonical_for(name));
		}
		if (strcmp(respt, "-")) {
			snprintf(file, sizeof(file), "%s.response.json", name);
			checked += check_golden_message(file, respt, NULL);
		}
	}
	/* The manifest must not silently shrink. */
	assert_true(checked >= 50);
	assert_true(errors >= 5);
	free(manifest);
}

/* etcd ignores unknown fields; kvjson rejects them unless told not to. */
static void test_unknown_field_golden(void **state)
{
	size_t len;
	char *text = slurp("unknown_field.request.json", &len), err[256];
	ProtobufCMessage *m = NULL;
	(void)state;

	assert_int_equal(kvjson_decode(&etcdserverpb__range_request__descriptor,
				       text, len, NULL, &m, err, sizeof(err)),
			 KV_EPROTO);
	assert_null(m);
	assert_non_null(strstr(err, "unknown field \"no_such_field\" in "
				    "etcdserverpb.RangeRequest"));
	assert_int_equal(kvjson_decode_ex(&etcdserverpb__range_request__descriptor,
					  text, len, KVJSON_ALLOW_UNKNOWN, NULL,
					  &m, NULL, err, sizeof(err)), 0);
	enc_eq(m, "{\"key\":\"Zm9v\"}");
	protobuf_c_message_free_unpacked(m, NULL);
	free(text);
}

/* ------------------------------------------------------------ the rules */

static void test_int64_as_strings(void **state)
{
	Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
	Etcdserverpb__RangeResponse r = ETCDSERVERPB__RANGE_RESPONSE__INIT;
	Etcdserverpb__HashResponse hr = ETCDSERVERPB__HASH_RESPONSE__INIT;
	(void)state;

	h.cluster_id = UINT64_MAX;
	h.revision = INT64_MIN;
	h.raft_term = 1;
	r.header = &h;
	r.count = 5;
	enc_eq(&r.base, "{\"header\":{\"cluster_id\":\"18446744073709551615\","
	       "\"revision\":\"-9223372036854775808\",\"raft_term\":\"1\"},"
	       "\"count\":\"5\"}");
	/* uint32 stays a number. */
	hr.hash = 4000000000u;
	enc_eq(&hr.base, "{\"hash\":4000000000}");

	/* Input: string or number. */
	roundtrip_eq(&etcdserverpb__range_request__descriptor,
		     "{\"limit\":10,\"revision\":\"-3\"}",
		     "{\"limit\":\"10\",\"revision\":\"-3\"}");
	roundtrip_eq(&etcdserverpb__response_header__descriptor,
		     "{\"cluster_id\":\"18446744073709551615\",\"member_id\":7}",
		     "{\"cluster_id\":\"18446744073709551615\",\"member_id\":\"7\"}");
	roundtrip_eq(&etcdserverpb__hash_response__descriptor,
		     "{\"hash\":\"4294967295\"}", "{\"hash\":4294967295}");
	dec_fail(&etcdserverpb__hash_response__descriptor,
		 "{\"hash\":4294967296}", KV_EPROTO, "out of range");
	/* uint64 beyond int64 as a bare number (Go accepts it). */
	roundtrip_eq(&etcdserverpb__member_remove_request__descriptor,
		     "{\"ID\":10276657743932975437}",
		     "{\"ID\":\"10276657743932975437\"}");
	roundtrip_eq(&etcdserverpb__member_update_request__descriptor,
		     "{\"peerURLs\":[\"x 12345678901234567890\"],"
		     "\"ID\":18446744073709551615}",
		     "{\"peerURLs\":[\"x 12345678901234567890\"],"
		     "\"ID\":\"18446744073709551615\"}");
	roundtrip_eq(&etcdserverpb__range_request__descriptor,
		     "{\"limit\":-9223372036854775808}",
		     "{\"limit\":\"-9223372036854775808\"}");
	dec_fail(&etcdserverpb__member_remove_request__descriptor,
		 "{\"ID\":18446744073709551616}", KV_EPROTO, "uint64");
	dec_fail(&etcdserverpb__range_request__descriptor,
		 "{\"limit\":-9223372036854775809}", KV_EPROTO, "int64");
	dec_fail(&etcdserverpb__range_request__descriptor,
		 "{\"limit\":123456789012345678901.5}", KV_EPROTO, NULL);
	dec_fail(&etcdserverpb__response_header__descriptor,
		 "{\"member_id\":-1}", KV_EPROTO, "uint64");
	dec_fail(&etcdserverpb__response_header__descriptor,
		 "{\"member_id\":\"-1\"}", KV_EPROTO, "uint64");
	dec_fail(&etcdserverpb__range_request__descriptor,
		 "{\"limit\":\"9223372036854775808\"}", KV_EPROTO, "int64");
	dec_fail(&etcdserverpb__range_request__descriptor,
		 "{\"limit\":1.5}", KV_EPROTO, "cannot unmarshal number");
	dec_fail(&etcdserverpb__range_request__descriptor,
		 "{\"limit\":\"1x\"}", KV_EPROTO, "limit");
	dec_fail(&etcdserverpb__range_request__descriptor,
		 "{\"limit\":\"\"}", KV_EPROTO, NULL);
	dec_fail(&etcdserverpb__range_request__descriptor,
		 "{\"limit\":\" 1\"}", KV_EPROTO, NULL);
}

static void test_camel_case_input(void **state)
{
	(void)state;
	roundtrip_eq(&etcdserverpb__txn_request__descriptor,
		     "{\"compare\":[{\"key\":\"YQ==\",\"rangeEnd\":\"Yg==\","
		     "\"target\":\"CREATE\",\"createRevision\":\"4\"}],"
		     "\"success\":[{\"requestPut\":{\"key\":\"YQ==\","
		     "\"prevKv\":true,\"ignoreLease\":true}},"
		     "{\"requestDeleteRange\":{\"key\":\"YQ==\"}}]}",
		     "{\"compare\":[{\"key\":\"YQ==\",\"range_end\":\"Yg==\","
		     "\"target\":\"CREATE\",\"create_revision\":\"4\"}],"
		     "\"success\":[{\"request_put\":{\"key\":\"YQ==\","
		     "\"prev_kv\":true,\"ignore_lease\":true}},"
		     "{\"request_delete_range\":{\"key\":\"YQ==\"}}]}");
	/* Names that are not snake_case are the same in both forms. */
	roundtrip_eq(&etcdserverpb__lease_time_to_live_response__descriptor,
		     "{\"ID\":\"1\",\"TTL\":\"2\",\"grantedTTL\":\"3\"}",
		     "{\"ID\":\"1\",\"TTL\":\"2\",\"grantedTTL\":\"3\"}");
	roundtrip_eq(&etcdserverpb__lease_checkpoint__descriptor,
		     "{\"remainingTTL\":\"9\"}", "{\"remaining_TTL\":\"9\"}");
	/* Both spellings present: the lowerCamel one wins, as in Go. */
	roundtrip_eq(&etcdserverpb__range_request__descriptor,
		     "{\"range_end\":\"YQ==\",\"rangeEnd\":\"Yg==\"}",
		     "{\"range_end\":\"Yg==\"}");
	/* Case matters otherwise. */
	dec_fail(&etcdserverpb__lease_grant_request__descriptor,
		 "{\"ttl\":\"5\"}", KV_EPROTO, "unknown field \"ttl\"");
	dec_fail(&etcdserverpb__range_request__descriptor,
		 "{\"RangeEnd\":\"YQ==\"}", KV_EPROTO, "RangeEnd");
}

static void test_base64(void **state)
{
	static const struct {
		const char *in;
		const char *out;	/* canonical; NULL: must fail */
	} cases[] = {
		{ "Zm9v", "Zm9v" },
		{ "Zg==", "Zg==" },	/* padded */
		{ "Zg", "Zg==" },	/* unpadded */
		{ "Zm8=", "Zm8=" },
		{ "Zm8", "Zm8=" },
		{ "+/+/", "+/+/" },	/* standard alphabet */
		{ "-_-_", "+/+/" },	/* URL-safe alphabet */
		{ "-_8", "+/8=" },
		{ "Zm9v\nYmFy", "Zm9vYmFy" },	/* newlines skipped, as Go */
		{ "", "" },		/* empty: omitted */
		{ "Z", NULL },		/* 1 mod 4 */
		{ "Zm9vY", NULL },
		{ "Zg=", NULL },	/* short padding */
		{ "Zg===", NULL },	/* long padding */
		{ "Zm9=v", NULL },	/* data after padding */
		{ "Zm9v=", NULL },
		{ "Zm 9v", NULL },	/* space */
		{ "Zm9*", NULL },
		{ "=", NULL },
		{ "====", NULL },
	};
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char in[64], want[64];
		json_t *s = json_string(cases[i].in);
		char *enc = json_dumps(s, JSON_ENCODE_ANY);
		snprintf(in, sizeof(in), "{\"key\":%s}", enc);
		free(enc);
		json_decref(s);
		if (cases[i].out && !cases[i].out[0]) {
			roundtrip_eq(&etcdserverpb__put_request__descriptor,
				     in, "{}");
			continue;
		}
		if (!cases[i].out) {
			dec_fail(&etcdserverpb__put_request__descriptor, in,
				 KV_EPROTO, "illegal base64 data");
			continue;
		}
		snprintf(want, sizeof(want), "{\"key\":\"%s\"}", cases[i].out);
		roundtrip_eq(&etcdserverpb__put_request__descriptor, in, want);
	}
	dec_fail(&etcdserverpb__put_request__descriptor, "{\"key\":\"!!!\"}",
		 KV_EPROTO, "illegal base64 data at input byte 0");
	dec_fail(&etcdserverpb__put_request__descriptor, "{\"key\":\"ab!c\"}",
		 KV_EPROTO, "at input byte 2");
}

/* Every byte value survives, at every padding length. */
static void test_binary_keys(void **state)
{
	uint8_t all[256];
	(void)state;

	for (int i = 0; i < 256; i++)
		all[i] = (uint8_t)i;
	for (size_t n = 0; n <= 256; n += (n < 8 ? 1 : 31)) {
		Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
		Etcdserverpb__PutRequest *back;
		struct kv_buf b = KV_BUF_INIT;
		char err[128];
		const uint8_t *src = n == 256 ? all : all + 256 - n;

		p.key.data = (uint8_t *)src;
		p.key.len = n;
		p.value.data = (uint8_t *)all;
		p.value.len = 256;
		assert_int_equal(kvjson_encode_buf(&p.base, &b), 0);
		assert_int_equal(kvjson_decode(&etcdserverpb__put_request__descriptor,
					       (const char *)b.base, b.len, NULL,
					       (ProtobufCMessage **)&back, err,
					       sizeof(err)), 0);
		assert_int_equal(back->key.len, n);
		if (n)
			assert_memory_equal(back->key.data, src, n);
		assert_int_equal(back->value.len, 256);
		assert_memory_equal(back->value.data, all, 256);
		protobuf_c_message_free_unpacked(&back->base, NULL);
		kv_buf_free(&b);
	}
}

static void test_enums(void **state)
{
	Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
	(void)state;

	roundtrip_eq(&etcdserverpb__range_request__descriptor,
		     "{\"sort_order\":2,\"sort_target\":\"MOD\"}",
		     "{\"sort_order\":\"DESCEND\",\"sort_target\":\"MOD\"}");
	/* Zero enum values are omitted. */
	roundtrip_eq(&etcdserverpb__range_request__descriptor,
		     "{\"sort_order\":\"NONE\",\"sort_target\":0}", "{}");
	/* Repeated enums, by name or number. */
	roundtrip_eq(&etcdserverpb__watch_create_request__descriptor,
		     "{\"filters\":[\"NOPUT\",1,0]}",
		     "{\"filters\":[\"NOPUT\",\"NODELETE\",\"NOPUT\"]}");
	/* Unknown numbers are kept (proto3 enums are open). */
	r.sort_order = 7;
	enc_eq(&r.base, "{\"sort_order\":7}");
	roundtrip_eq(&etcdserverpb__range_request__descriptor,
		     "{\"sort_order\":7}", "{\"sort_order\":7}");
	dec_fail(&etcdserverpb__range_request__descriptor,
		 "{\"sort_order\":\"descend\"}", KV_EPROTO,
		 "unknown value \"descend\" for enum "
		 "etcdserverpb.RangeRequest_SortOrder");
	dec_fail(&etcdserverpb__range_request__descriptor,
		 "{\"sort_order\":true}", KV_EPROTO, "cannot unmarshal bool");
	dec_fail(&etcdserverpb__range_request__descriptor,
		 "{\"sort_order\":4294967296}", KV_EPROTO, "out of range");
}

static void test_unknown_field(void **state)
{
	(void)state;
	dec_fail(&etcdserverpb__put_request__descriptor,
		 "{\"key\":\"YQ==\",\"bogus\":1}", KV_EPROTO,
		 "unknown field \"bogus\" in etcdserverpb.PutRequest");
	/* Nested: the path names where it was. */
	dec_fail(&etcdserverpb__txn_request__descriptor,
		 "{\"success\":[{},{\"request_put\":{\"kye\":\"YQ==\"}}]}",
		 KV_EPROTO, "success[1].request_put");
	dec_fail(&etcdserverpb__txn_request__descriptor,
		 "{\"success\":[{\"request_put\":{\"kye\":\"YQ==\"}}]}",
		 KV_EPROTO, "unknown field \"kye\" in etcdserverpb.PutRequest");
}

static void test_wrong_types(void **state)
{
	(void)state;
	/* etcd: "json: cannot unmarshal number into Go value of type
	 * []uint8", HTTP 400, code 3. */
	dec_fail(&etcdserverpb__put_request__descriptor, "{\"key\":1}",
		 KV_EPROTO,
		 "json: cannot unmarshal number into Go value of type []uint8");
	dec_fail(&etcdserverpb__put_request__descriptor,
		 "{\"prev_kv\":\"true\"}", KV_EPROTO,
		 "cannot unmarshal string into Go value of type bool");
	dec_fail(&etcdserverpb__put_request__descriptor, "{\"prev_kv\":1}",
		 KV_EPROTO, "bool");
	dec_fail(&etcdserverpb__put_request__descriptor, "{\"lease\":true}",
		 KV_EPROTO, "int64");
	dec_fail(&etcdserverpb__put_request__descriptor, "{\"key\":[]}",
		 KV_EPROTO, "array");
	dec_fail(&etcdserverpb__range_response__descriptor, "{\"kvs\":{}}",
		 KV_EPROTO, "[]mvccpb.KeyValue");
	dec_fail(&etcdserverpb__range_response__descriptor, "{\"header\":1}",
		 KV_EPROTO, "etcdserverpb.ResponseHeader");
	dec_fail(&etcdserverpb__range_response__descriptor,
		 "{\"kvs\":[null]}", KV_EPROTO, "kvs[0]");
	dec_fail(&etcdserverpb__range_response__descriptor,
		 "{\"kvs\":[{\"key\":\"YQ==\"},{\"key\":5}]}", KV_EPROTO,
		 "kvs[1].key");
	dec_fail(&etcdserverpb__member_list_response__descriptor,
		 "{\"members\":[{\"name\":7}]}", KV_EPROTO, "string");
	dec_fail(&etcdserverpb__member_list_response__descriptor,
		 "{\"members\":[{\"peerURLs\":[\"a\",1]}]}", KV_EPROTO,
		 "members[0].peerURLs[1]");
	dec_fail(&etcdserverpb__member_list_response__descriptor,
		 "{\"members\":[{\"name\":\"a\\u0000b\"}]}", KV_EPROTO, NULL);
	/* The top level must be an object. */
	dec_fail(&etcdserverpb__put_request__descriptor, "[]", KV_EPROTO,
		 "etcdserverpb.PutRequest");
	dec_fail(&etcdserverpb__put_request__descriptor, "\"x\"", KV_EPROTO,
		 NULL);
	/* Malformed JSON and trailing garbage. */
	dec_fail(&etcdserverpb__put_request__descriptor, "{\"key\":",
		 KV_EPROTO, "invalid JSON");
	dec_fail(&etcdserverpb__put_request__descriptor, "{} {}", KV_EPROTO,
		 "invalid JSON");
	/* Two members of one oneof. */
	dec_fail(&etcdserverpb__request_op__descriptor,
		 "{\"request_put\":{},\"request_range\":{}}", KV_EPROTO,
		 "oneof");
}

static void test_omitted_zero_values(void **state)
{
	Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
	Etcdserverpb__PutResponse p = ETCDSERVERPB__PUT_RESPONSE__INIT;
	Etcdserverpb__RangeResponse r = ETCDSERVERPB__RANGE_RESPONSE__INIT;
	Etcdserverpb__StatusResponse s = ETCDSERVERPB__STATUS_RESPONSE__INIT;
	Etcdserverpb__Compare c = ETCDSERVERPB__COMPARE__INIT;
	Mvccpb__Event ev = MVCCPB__EVENT__INIT;
	Mvccpb__KeyValue kv = MVCCPB__KEY_VALUE__INIT;
	(void)state;

	/* Unset sub-message: absent; set but empty: {}. */
	enc_eq(&p.base, "{}");
	p.header = &h;
	enc_eq(&p.base, "{\"header\":{}}");
	r.header = &h;
	r.n_kvs = 0;
	r.more = 0;
	r.count = 0;
	enc_eq(&r.base, "{\"header\":{}}");
	enc_eq(&s.base, "{}");	/* empty string, zero ints */
	/* A PUT event has no "type". */
	kv.key.data = (uint8_t *)"k";
	kv.key.len = 1;
	ev.kv = &kv;
	enc_eq(&ev.base, "{\"kv\":{\"key\":\"aw==\"}}");
	ev.type = MVCCPB__EVENT__EVENT_TYPE__DELETE;
	enc_eq(&ev.base, "{\"type\":\"DELETE\",\"kv\":{\"key\":\"aw==\"}}");
	/* A set oneof member is emitted even when zero. */
	c.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
	c.version = 0;
	enc_eq(&c.base, "{\"version\":\"0\"}");
	c.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
	c.value.len = 0;
	c.value.data = NULL;
	enc_eq(&c.base, "{\"value\":\"\"}");
	roundtrip_eq(&etcdserverpb__compare__descriptor,
		     "{\"value\":\"\",\"key\":\"\"}", "{\"value\":\"\"}");
	roundtrip_eq(&etcdserverpb__compare__descriptor,
		     "{\"lease\":0}", "{\"lease\":\"0\"}");
	/* Explicit zero values in input are omitted on output. */
	roundtrip_eq(&etcdserverpb__range_request__descriptor,
		     "{\"key\":\"\",\"limit\":\"0\",\"serializable\":false,"
		     "\"range_end\":\"\"}", "{}");
	roundtrip_eq(&etcdserverpb__member_list_response__descriptor,
		     "{\"members\":[{\"name\":\"\",\"peerURLs\":[]}]}",
		     "{\"members\":[{}]}");
	/* Empty strings inside repeated fields are kept. */
	roundtrip_eq(&etcdserverpb__status_response__descriptor,
		     "{\"errors\":[\"\",\"x\"]}", "{\"errors\":[\"\",\"x\"]}");
}

static void test_null_and_empty(void **state)
{
	ProtobufCMessage *m = NULL;
	char err[128];
	(void)state;

	roundtrip_eq(&etcdserverpb__range_request__descriptor,
		     "{\"key\":null,\"range_end\":null,\"limit\":null}", "{}");
	roundtrip_eq(&etcdserverpb__put_response__descriptor,
		     "{\"header\":null,\"prev_kv\":{}}", "{\"prev_kv\":{}}");
	roundtrip_eq(&etcdserverpb__range_response__descriptor,
		     "{\"kvs\":null}", "{}");
	roundtrip_eq(&etcdserverpb__range_request__descriptor, "null", "{}");
	roundtrip_eq(&etcdserverpb__range_request__descriptor, " \n", "{}");
	assert_int_equal(kvjson_decode(&etcdserverpb__range_request__descriptor,
				       NULL, 0, NULL, &m, err, sizeof(err)), 0);
	enc_eq(m, "{}");
	protobuf_c_message_free_unpacked(m, NULL);
	/* A nulled oneof member leaves the oneof unset. */
	roundtrip_eq(&etcdserverpb__request_op__descriptor,
		     "{\"request_put\":null,\"request_range\":{}}",
		     "{\"request_range\":{}}");
}

/* Builds {"request_txn":{"success":[ ... ]}} nested n times as a
 * RequestOp; each level is two messages deep. */
static char *nested_txn(int n)
{
	struct kv_buf b = KV_BUF_INIT;
	assert_int_equal(kv_buf_printf(&b, "{\"success\":["), 0);
	for (int i = 0; i < n; i++)
		assert_int_equal(kv_buf_printf(&b, "{\"request_txn\":{\"success\":["), 0);
	assert_int_equal(kv_buf_printf(&b, "{\"request_put\":{\"key\":\"YQ==\"}}"), 0);
	for (int i = 0; i < n; i++)
		assert_int_equal(kv_buf_printf(&b, "]}}"), 0);
	assert_int_equal(kv_buf_printf(&b, "]}"), 0);
	return (char *)kv_buf_steal(&b, NULL);
}

static void test_depth_limit(void **state)
{
	char *ok = nested_txn(KVJSON_MAX_DEPTH / 2 - 1);
	char *deep = nested_txn(KVJSON_MAX_DEPTH / 2 + 1);
	char *huge = nested_txn(5000);
	ProtobufCMessage *m;
	json_t *j = NULL;
	(void)state;

	m = dec_ok(&etcdserverpb__txn_request__descriptor, ok);
	assert_int_equal(kvjson_encode(m, &j), 0);
	json_decref(j);
	protobuf_c_message_free_unpacked(m, NULL);
	dec_fail(&etcdserverpb__txn_request__descriptor, deep, KV_ETOOBIG,
		 "nesting deeper than 64");
	/* Deeper than jansson's own limit: a JSON error, not a crash. */
	dec_fail(&etcdserverpb__txn_request__descriptor, huge, KV_EPROTO, NULL);
	free(ok);
	free(deep);
	free(huge);
}

static void test_input_size_limit(void **state)
{
	ProtobufCMessage *m = (ProtobufCMessage *)1;
	char err[128];
	(void)state;

	/* The length is checked before the text is read. */
	assert_int_equal(kvjson_decode(&etcdserverpb__put_request__descriptor,
				       "{}", KVJSON_MAX_INPUT + 1, NULL, &m,
				       err, sizeof(err)), KV_ETOOBIG);
	assert_null(m);
	assert_non_null(strstr(err, "exceeds"));
	assert_int_equal(kvjson_decode(NULL, "{}", 2, NULL, &m, err,
				       sizeof(err)), KV_EINVAL);
	assert_int_equal(kvjson_encode(NULL, NULL), KV_EINVAL);
}

/* Streamed bodies: several objects, decoded one at a time. */
static void test_first_value(void **state)
{
	const char *text = "{\"create_request\":{\"key\":\"YQ==\"}}\n"
			   "{\"progress_request\":{}}\n  ";
	size_t off = 0, used = 0;
	ProtobufCMessage *m;
	char err[128];
	int count = 0;
	(void)state;

	for (;;) {
		int rc = kvjson_decode_ex(&etcdserverpb__watch_request__descriptor,
					  text + off, strlen(text) - off,
					  KVJSON_FIRST_VALUE, NULL, &m, &used,
					  err, sizeof(err));
		if (rc == KV_ENOTFOUND)
			break;
		assert_int_equal(rc, 0);
		assert_true(used > 0);
		off += used;
		count++;
		protobuf_c_message_free_unpacked(m, NULL);
	}
	assert_int_equal(count, 2);
}

static void test_invalid_utf8_output(void **state)
{
	Etcdserverpb__Member mb = ETCDSERVERPB__MEMBER__INIT;
	(void)state;

	mb.name = "a\xff" "b\xc3";
	enc_eq(&mb.base, "{\"name\":\"a\xef\xbf\xbd" "b\xef\xbf\xbd\"}");
	mb.name = "h\xc3\xa9llo \xf0\x9f\x98\x80";
	enc_eq(&mb.base, "{\"name\":\"h\xc3\xa9llo \xf0\x9f\x98\x80\"}");
}

/* Failing allocations at every step leak nothing (ASan checks) and fail
 * cleanly with KV_ENOMEM. */
static int alloc_budget;

static void *counting_alloc(void *data, size_t size)
{
	(void)data;
	if (alloc_budget-- <= 0)
		return NULL;
	return malloc(size);
}

static void counting_free(void *data, void *p)
{
	(void)data;
	free(p);
}

static void test_alloc_failures(void **state)
{
	ProtobufCAllocator a = { counting_alloc, counting_free, NULL };
	const char *text =
		"{\"compare\":[{\"key\":\"YQ==\",\"value\":\"Yg==\","
		"\"target\":\"VALUE\"}],\"success\":[{\"request_put\":"
		"{\"key\":\"YQ==\",\"value\":\"Yg==\"}},{\"request_txn\":"
		"{\"success\":[{\"request_range\":{\"key\":\"YQ==\"}}]}}],"
		"\"failure\":[{\"request_delete_range\":{\"key\":\"YQ==\"}}]}";
	int ok_at = -1;
	(void)state;

	for (int budget = 0; budget < 200; budget++) {
		ProtobufCMessage *m = NULL;
		char err[128];
		int rc;
		alloc_budget = budget;
		rc = kvjson_decode(&etcdserverpb__txn_request__descriptor, text,
				   strlen(text), &a, &m, err, sizeof(err));
		if (rc == 0) {
			ok_at = budget;
			protobuf_c_message_free_unpacked(m, &a);
			break;
		}
		assert_int_equal(rc, KV_ENOMEM);
		assert_null(m);
	}
	assert_true(ok_at > 5);
}

/* kvd's own schema goes through the codec too (for debugging output). */
static void test_internal_schema(void **state)
{
	ProtobufCMessage *m;
	(void)state;

	roundtrip_eq(&kvdpb__request_batch__descriptor,
		     "{\"requests\":[{\"id\":\"1\",\"member_id\":\"2\",\"put\":"
		     "{\"key\":\"YQ==\"}},{\"id\":\"2\",\"lease_checkpoint\":"
		     "{\"checkpoints\":[{\"ID\":\"5\",\"remaining_TTL\":\"3\"}]}},"
		     "{\"txn\":{}}]}",
		     "{\"requests\":[{\"id\":\"1\",\"member_id\":\"2\",\"put\":"
		     "{\"key\":\"YQ==\"}},{\"id\":\"2\",\"lease_checkpoint\":"
		     "{\"checkpoints\":[{\"ID\":\"5\",\"remaining_TTL\":\"3\"}]}},"
		     "{\"txn\":{}}]}");
	m = dec_ok(&kvdpb__snapshot_meta__descriptor,
		   "{\"format_version\":1,\"raft_index\":\"10\",\"raft_term\":2,"
		   "\"members\":[{\"id\":\"1\",\"name\":\"a\",\"peer_urls\":"
		   "[\"http://x\"],\"is_learner\":true}],\"crc32c\":4294967295,"
		   "\"sha256\":\"AAEC\"}");
	assert_binary_roundtrip(m);
	protobuf_c_message_free_unpacked(m, NULL);
}

/* Decoded messages pack to the same bytes as hand-built ones. */
static void test_binary_equivalence(void **state)
{
	Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
	ProtobufCMessage *m;
	uint8_t a[64], b[64];
	size_t na, nb;
	(void)state;

	p.key.data = (uint8_t *)"foo";
	p.key.len = 3;
	p.value.data = (uint8_t *)"bar";
	p.value.len = 3;
	p.lease = 0x1234567890;
	p.prev_kv = 1;
	m = dec_ok(&etcdserverpb__put_request__descriptor,
		   "{\"key\":\"Zm9v\",\"value\":\"YmFy\",\"lease\":\"78187493520\","
		   "\"prevKv\":true}");
	na = protobuf_c_message_pack(&p.base, a);
	nb = protobuf_c_message_pack(m, b);
	assert_int_equal(na, nb);
	assert_memory_equal(a, b, na);
	protobuf_c_message_free_unpacked(m, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden),
		cmocka_unit_test(test_unknown_field_golden),
		cmocka_unit_test(test_int64_as_strings),
		cmocka_unit_test(test_camel_case_input),
		cmocka_unit_test(test_base64),
		cmocka_unit_test(test_binary_keys),
		cmocka_unit_test(test_enums),
		cmocka_unit_test(test_unknown_field),
		cmocka_unit_test(test_wrong_types),
		cmocka_unit_test(test_omitted_zero_values),
		cmocka_unit_test(test_null_and_empty),
		cmocka_unit_test(test_depth_limit),
		cmocka_unit_test(test_input_size_limit),
		cmocka_unit_test(test_first_value),
		cmocka_unit_test(test_invalid_utf8_output),
		cmocka_unit_test(test_alloc_failures),
		cmocka_unit_test(test_internal_schema),
		cmocka_unit_test(test_binary_equivalence),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* fuzz_json.c — libFuzzer target for kvjson's decoder.
 *
 * Decodes the input as several request types (strict and lenient). When a
 * decode succeeds, the message is re-encoded, the text decoded again and
 * re-encoded; both encodings must be equal JSON and both messages must
 * pack to the same protobuf bytes, which must unpack again. Any mismatch
 * aborts. ASan/UBSan catch memory errors and leaks. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etcdserverpb/rpc.pb-c.h"
#include "kv/errors.h"
#include "kvdpb/internal.pb-c.h"
#include "kvjson/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const ProtobufCMessageDescriptor *const types[] = {
	&etcdserverpb__txn_request__descriptor,
	&etcdserverpb__range_request__descriptor,
	&etcdserverpb__put_request__descriptor,
	&etcdserverpb__watch_request__descriptor,
	&etcdserverpb__delete_range_request__descriptor,
	&etcdserverpb__lease_grant_request__descriptor,
	&etcdserverpb__txn_response__descriptor,
	&etcdserverpb__watch_response__descriptor,
	&etcdserverpb__member_list_response__descriptor,
	&kvdpb__request_batch__descriptor,
};

static void die(const char *what, const ProtobufCMessageDescriptor *d,
		const char *detail)
{
	fprintf(stderr, "fuzz_json: %s for %s: %s\n", what, d->name,
		detail ? detail : "");
	abort();
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *n)
{
	uint8_t *buf;
	*n = protobuf_c_message_get_packed_size(m);
	buf = malloc(*n ? *n : 1);
	if (!buf)
		abort();
	if (protobuf_c_message_pack(m, buf) != *n)
		abort();
	return buf;
}

static void check(const ProtobufCMessageDescriptor *d, ProtobufCMessage *m1)
{
	struct kv_buf t1 = KV_BUF_INIT;
	ProtobufCMessage *m2 = NULL, *m3;
	json_t *j1 = NULL, *j2 = NULL;
	uint8_t *b1, *b2;
	size_t n1, n2;
	char err[256];
	int rc;

	rc = kvjson_encode_buf(m1, &t1);
	if (rc == KV_ENOMEM)
		goto out;
	if (rc)
		die("re-encode failed", d, kv_strerror(rc));
	rc = kvjson_decode(d, (const char *)t1.base, t1.len, NULL, &m2, err,
			   sizeof(err));
	if (rc)
		die("decode of own output failed", d, err);
	if (kvjson_encode(m1, &j1) || kvjson_encode(m2, &j2))
		die("encode failed", d, NULL);
	if (!json_equal(j1, j2))
		die("JSON round trip differs", d, (const char *)t1.base);
	b1 = pack(m1, &n1);
	b2 = pack(m2, &n2);
	if (n1 != n2 || memcmp(b1, b2, n1))
		die("protobuf bytes differ", d, (const char *)t1.base);
	m3 = protobuf_c_message_unpack(d, NULL, n1, b1);
	if (!m3)
		die("unpack of packed message failed", d, NULL);
	protobuf_c_message_free_unpacked(m3, NULL);
	free(b1);
	free(b2);
out:
	json_decref(j1);
	json_decref(j2);
	protobuf_c_message_free_unpacked(m2, NULL);
	kv_buf_free(&t1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		for (unsigned flags = 0; flags <= KVJSON_ALLOW_UNKNOWN;
		     flags += KVJSON_ALLOW_UNKNOWN) {
			ProtobufCMessage *m = NULL;
			char err[256];
			int rc = kvjson_decode_ex(types[i], (const char *)data,
						  size, flags, NULL, &m, NULL,
						  err, sizeof(err));
			if (rc == 0) {
				check(types[i], m);
				protobuf_c_message_free_unpacked(m, NULL);
			} else if (m) {
				die("failed decode left a message", types[i],
				    err);
			}
		}
	}
	return 0;
}

/* kvjson/json.h — proto3 JSON codec over protobuf-c descriptors, with the
 * conventions of etcd 3.4's JSON gateway (grpc-gateway v1 JSONPb with
 * OrigName:true).
 *
 * Output (encode):
 *   - fields under their original .proto names (create_revision, ID, TTL);
 *   - int64/uint64/sint64/(s)fixed64 as JSON strings; 32-bit ints, bools,
 *     floats as JSON numbers/booleans;
 *   - bytes as standard padded base64; enums by name (number if unknown);
 *   - zero scalars, empty strings/bytes, empty repeated fields and unset
 *     sub-messages omitted; a set but empty sub-message is "{}"; a set
 *     oneof member is always emitted, even when its value is zero.
 * Input (decode):
 *   - original name or lowerCamelCase name (rangeEnd, requestPut); when
 *     both are present the lowerCamelCase one wins, as in Go's jsonpb;
 *   - any integer as a JSON number or a decimal string;
 *   - bytes as base64, standard or URL-safe alphabet, padded or not;
 *   - enums by name or number; null means "unset" for any field;
 *   - unknown fields are an error naming the field, unless
 *     KVJSON_ALLOW_UNKNOWN is given (real etcd silently ignores them);
 *   - nesting deeper than KVJSON_MAX_DEPTH messages and inputs larger than
 *     KVJSON_MAX_INPUT bytes are refused.
 *
 * Errors: functions return 0 or a negative KV_E* code (kv/errors.h):
 * KV_EPROTO for malformed or ill-typed input, KV_ETOOBIG for oversized or
 * too-deep input, KV_EINVAL for bad arguments, KV_ENOMEM. When err is not
 * NULL a NUL-terminated human message (naming the offending field by its
 * path, e.g. "compare[0].key") is written there, truncated to errlen.
 *
 * Thread safety: no shared state; calls on distinct objects may run on any
 * thread. */
#ifndef KVJSON_JSON_H
#define KVJSON_JSON_H

#include <stddef.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "common/buf.h"

/* Maximum message nesting accepted by decode and produced by encode. */
#define KVJSON_MAX_DEPTH 64
/* Maximum JSON text accepted by decode, in bytes. */
#define KVJSON_MAX_INPUT ((size_t)64 << 20)

/* Decode flags. */
enum {
	/* Ignore unknown field names (etcd 3.4's gateway behaviour). */
	KVJSON_ALLOW_UNKNOWN = 1u << 0,
	/* Decode the first JSON value only and report in *consumed how many
	 * bytes it took; the rest of the text is left alone (for streamed
	 * request bodies holding several newline-separated objects). */
	KVJSON_FIRST_VALUE = 1u << 1,
};

/* Encodes msg as a JSON object. On success *out is a new reference the
 * caller releases with json_decref(); on failure *out is untouched.
 * msg is only read and may be freed as soon as this returns. Fails with
 * KV_EINVAL when the message is deeper than KVJSON_MAX_DEPTH. */
int kvjson_encode(const ProtobufCMessage *msg, json_t **out);

/* Encodes msg as compact JSON text appended to out (which the caller owns
 * and initialised). The text is not counted in out->len's NUL terminator;
 * a NUL is present after the text. On failure out->len is unchanged. */
int kvjson_encode_buf(const ProtobufCMessage *msg, struct kv_buf *out);

/* Decodes the JSON text [text, text+len) (need not be NUL-terminated) as
 * a message of type desc. Empty or all-whitespace text decodes to an empty
 * message, as the gateway treats an empty body. Unknown fields are an
 * error.
 *
 * On success *out is a new message whose every string, bytes buffer,
 * repeated array and sub-message was allocated separately from alloc
 * (NULL: malloc/free); the caller frees it with
 * protobuf_c_message_free_unpacked(*out, alloc). On failure *out is set
 * to NULL and nothing is leaked. */
int kvjson_decode(const ProtobufCMessageDescriptor *desc, const char *text,
		  size_t len, ProtobufCAllocator *alloc, ProtobufCMessage **out,
		  char *err, size_t errlen);

/* kvjson_decode with KVJSON_* flags. With KVJSON_FIRST_VALUE, consumed
 * (which must then be non-NULL) receives the number of bytes of text the
 * first value used; otherwise consumed may be NULL and receives len. */
int kvjson_decode_ex(const ProtobufCMessageDescriptor *desc, const char *text,
		     size_t len, unsigned flags, ProtobufCAllocator *alloc,
		     ProtobufCMessage **out, size_t *consumed, char *err,
		     size_t errlen);

/* Decodes an already parsed JSON value (an object, or null for an empty
 * message). obj is only read; ownership and results as kvjson_decode. */
int kvjson_decode_value(const ProtobufCMessageDescriptor *desc,
			const json_t *obj, unsigned flags,
			ProtobufCAllocator *alloc, ProtobufCMessage **out,
			char *err, size_t errlen);

#endif /* KVJSON_JSON_H */

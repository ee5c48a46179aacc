/* json.c — proto3 JSON codec with etcd 3.4 gateway conventions.
 *
 * Encoding walks a protobuf-c message by its descriptor and builds a jansson
 * tree. Decoding walks a jansson tree and builds a message laid out exactly
 * as protobuf_c_message_unpack() would (every string, bytes buffer,
 * repeated array and sub-message allocated separately from the caller's
 * allocator), so protobuf_c_message_free_unpacked() releases it. Each value
 * is stored into the message only once it is complete, so a failure at any
 * point leaves a message that free_unpacked can release. */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv/errors.h"
#include "kvjson/json.h"

#define MEMBER(type, msg, off) (*(type *)(void *)((char *)(msg) + (off)))

/* --------------------------------------------------------------- helpers */

static void *sys_alloc(void *data, size_t size)
{
	(void)data;
	return malloc(size);
}

static void sys_free(void *data, void *p)
{
	(void)data;
	free(p);
}

static ProtobufCAllocator sys_allocator = { sys_alloc, sys_free, NULL };

/* Bytes one element of a repeated field (or one singular value) takes. */
static size_t type_size(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_ENUM:
		return 4;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		return 8;
	case PROTOBUF_C_TYPE_FLOAT:
		return sizeof(float);
	case PROTOBUF_C_TYPE_DOUBLE:
		return sizeof(double);
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_STRING:
		return sizeof(char *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(ProtobufCMessage *);
	}
	return 0;
}

/* protoc's json_name: drop '_' and upper-case the letter after it. The
 * first letter keeps its case ("ID" stays "ID", "peerURLs" stays). */
static void camel_name(const char *name, char *out, size_t outlen)
{
	size_t o = 0;
	int up = 0;
	for (const char *p = name; *p && o + 1 < outlen; p++) {
		if (*p == '_') {
			up = 1;
			continue;
		}
		out[o++] = (up && *p >= 'a' && *p <= 'z') ? (char)(*p - 32) : *p;
		up = 0;
	}
	out[o] = '\0';
}

/* ---------------------------------------------------------------- base64 */

static const char b64_std[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static json_t *b64_encode(const uint8_t *p, size_t n)
{
	size_t olen = (n + 2) / 3 * 4;
	char *s = malloc(olen + 1);
	size_t o = 0, i = 0;
	json_t *j;

	if (!s)
		return NULL;
	for (; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		s[o++] = b64_std[v >> 18 & 63];
		s[o++] = b64_std[v >> 12 & 63];
		s[o++] = b64_std[v >> 6 & 63];
		s[o++] = b64_std[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		s[o++] = b64_std[v >> 18 & 63];
		s[o++] = b64_std[v >> 12 & 63];
		s[o++] = i + 1 < n ? b64_std[v >> 6 & 63] : '=';
		s[o++] = '=';
	}
	s[o] = '\0';
	j = json_stringn(s, o);
	free(s);
	return j;
}

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

/* Decodes standard or URL-safe base64, padded or not; '\r' and '\n' are
 * skipped as Go's decoder does. *out is malloc'd by alloc (NULL when the
 * result is empty). Returns 0 or KV_EPROTO / KV_ENOMEM. */
static int b64_decode(const char *s, size_t n, ProtobufCAllocator *alloc,
		      uint8_t **out, size_t *outlen, size_t *badpos)
{
	uint8_t *buf = NULL;
	size_t o = 0, quad = 0, pad = 0, sig = 0;
	uint32_t acc = 0;

	*out = NULL;
	*outlen = 0;
	*badpos = 0;
	if (n == 0)
		return 0;
	buf = alloc->alloc(alloc->allocator_data, n / 4 * 3 + 3);
	if (!buf)
		return KV_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		int v;
		if (c == '\r' || c == '\n')
			continue;
		if (c == '=') {
			pad++;
			quad++;
			continue;
		}
		*badpos = i;
		if (pad)	/* data after padding */
			goto bad;
		v = b64_value(c);
		if (v < 0)
			goto bad;
		acc = acc << 6 | (uint32_t)v;
		sig++;
		quad++;
		if (sig == 4) {
			buf[o++] = (uint8_t)(acc >> 16);
			buf[o++] = (uint8_t)(acc >> 8);
			buf[o++] = (uint8_t)acc;
			acc = 0;
			sig = 0;
		}
	}
	/* sig is the number of significant chars in the final group. */
	*badpos = n;
	if (sig == 1)
		goto bad;
	if (pad && (quad % 4 != 0 || pad != (sig ? 4 - sig : 99)))
		goto bad;
	if (sig == 2) {
		buf[o++] = (uint8_t)(acc >> 4);
	} else if (sig == 3) {
		buf[o++] = (uint8_t)(acc >> 10);
		buf[o++] = (uint8_t)(acc >> 2);
	}
	if (o == 0) {
		alloc->free(alloc->allocator_data, buf);
		buf = NULL;
	}
	*out = buf;
	*outlen = o;
	return 0;
bad:
	alloc->free(alloc->allocator_data, buf);
	return KV_EPROTO;
}

/* ------------------------------------------------------------------ UTF-8 */

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 if none. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
	size_t len;
	uint32_t cp;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		len = 2;
		cp = p[0] & 0x1f;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		len = 3;
		cp = p[0] & 0x0f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		len = 4;
		cp = p[0] & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* A JSON string for s; invalid UTF-8 bytes become U+FFFD, as Go does. */
static json_t *utf8_string(const char *s)
{
	size_t n = strlen(s), o = 0;
	json_t *j = json_stringn(s, n);
	char *fixed;

	if (j)
		return j;
	fixed = malloc(n * 3 + 1);
	if (!fixed)
		return NULL;
	for (size_t i = 0; i < n;) {
		size_t l = utf8_seq((const unsigned char *)s + i, n - i);
		if (l == 0) {
			memcpy(fixed + o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
		} else {
			memcpy(fixed + o, s + i, l);
			o += l;
			i += l;
		}
	}
	j = json_stringn(fixed, o);
	free(fixed);
	return j;
}

/* ----------------------------------------------------------------- encode */

static int encode_message(const ProtobufCMessage *msg, int depth, json_t **out);

/* Encodes one value of field f stored at p. */
static int encode_value(const ProtobufCFieldDescriptor *f, const void *p,
			int depth, json_t **out)
{
	char num[32];
	json_t *j = NULL;

	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		j = json_integer(*(const int32_t *)p);
		break;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		j = json_integer(*(const uint32_t *)p);
		break;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		snprintf(num, sizeof(num), "%" PRId64, *(const int64_t *)p);
		j = json_string(num);
		break;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		snprintf(num, sizeof(num), "%" PRIu64, *(const uint64_t *)p);
		j = json_string(num);
		break;
	case PROTOBUF_C_TYPE_FLOAT:
	case PROTOBUF_C_TYPE_DOUBLE: {
		double d = f->type == PROTOBUF_C_TYPE_FLOAT ?
			(double)*(const float *)p : *(const double *)p;
		if (isnan(d))
			j = json_string("NaN");
		else if (isinf(d))
			j = json_string(d > 0 ? "Infinity" : "-Infinity");
		else
			j = json_real(d);
		break;
	}
	case PROTOBUF_C_TYPE_BOOL:
		j = json_boolean(*(const protobuf_c_boolean *)p);
		break;
	case PROTOBUF_C_TYPE_ENUM: {
		int32_t v = *(const int32_t *)p;
		const ProtobufCEnumValue *ev =
			protobuf_c_enum_descriptor_get_value(f->descriptor, v);
		j = ev ? json_string(ev->name) : json_integer(v);
		break;
	}
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(char *const *)p;
		j = utf8_string(s ? s : "");
		break;
	}
	case PROTOBUF_C_TYPE_BYTES: {
		const ProtobufCBinaryData *b = p;
		j = b64_encode(b->data, b->len);
		break;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
		if (!sub)
			return encode_message(NULL, depth + 1, out);
		return encode_message(sub, depth + 1, out);
	}
	}
	if (!j)
		return KV_ENOMEM;
	*out = j;
	return 0;
}

/* True when a proto3 (no presence) singular value is its zero value. */
static bool is_zero(const ProtobufCFieldDescriptor *f, const void *p)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_ENUM:
		return *(const uint32_t *)p == 0;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		return *(const uint64_t *)p == 0;
	case PROTOBUF_C_TYPE_FLOAT:
		return *(const float *)p == 0;
	case PROTOBUF_C_TYPE_DOUBLE:
		return *(const double *)p == 0;
	case PROTOBUF_C_TYPE_BOOL:
		return !*(const protobuf_c_boolean *)p;
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(char *const *)p;
		return !s || !*s;
	}
	case PROTOBUF_C_TYPE_BYTES:
		return ((const ProtobufCBinaryData *)p)->len == 0;
	case PROTOBUF_C_TYPE_MESSAGE:
		return *(ProtobufCMessage *const *)p == NULL;
	}
	return true;
}

/* Encodes msg (NULL: an empty object) at nesting depth. */
static int encode_message(const ProtobufCMessage *msg, int depth, json_t **out)
{
	const ProtobufCMessageDescriptor *desc;
	json_t *obj, *val = NULL, *arr = NULL;
	int rc = 0;

	if (depth > KVJSON_MAX_DEPTH)
		return KV_EINVAL;
	obj = json_object();
	if (!obj)
		return KV_ENOMEM;
	if (!msg)
		goto done;
	desc = msg->descriptor;
	for (unsigned i = 0; i < desc->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &desc->fields[i];
		const char *p = (const char *)msg + f->offset;

		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = MEMBER(size_t, msg, f->quantifier_offset);
			const char *a = *(char *const *)p;
			size_t sz = type_size(f->type);
			if (n == 0 || !a)
				continue;
			arr = json_array();
			if (!arr)
				goto nomem;
			for (size_t k = 0; k < n; k++) {
				rc = encode_value(f, a + k * sz, depth, &val);
				if (rc)
					goto err;
				if (json_array_append_new(arr, val))
					goto nomem;
			}
			val = arr;
			arr = NULL;
		} else {
			if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
				if (MEMBER(uint32_t, msg, f->quantifier_offset) !=
				    f->id)
					continue;
			} else if (f->label == PROTOBUF_C_LABEL_OPTIONAL &&
				   f->type != PROTOBUF_C_TYPE_MESSAGE &&
				   f->type != PROTOBUF_C_TYPE_STRING) {
				if (!MEMBER(protobuf_c_boolean, msg,
					    f->quantifier_offset))
					continue;
			} else if (f->label != PROTOBUF_C_LABEL_REQUIRED &&
				   is_zero(f, p)) {
				continue;
			}
			rc = encode_value(f, p, depth, &val);
			if (rc)
				goto err;
		}
		if (json_object_set_new(obj, f->name, val))
			goto nomem;
		val = NULL;
	}
done:
	*out = obj;
	return 0;
nomem:
	rc = KV_ENOMEM;
err:
	json_decref(arr);
	json_decref(obj);
	return rc;
}

int kvjson_encode(const ProtobufCMessage *msg, json_t **out)
{
	if (!msg || !out)
		return KV_EINVAL;
	return encode_message(msg, 0, out);
}

int kvjson_encode_buf(const ProtobufCMessage *msg, struct kv_buf *out)
{
	json_t *j = NULL;
	char *s;
	int rc;

	if (!out)
		return KV_EINVAL;
	rc = kvjson_encode(msg, &j);
	if (rc)
		return rc;
	s = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (!s)
		return KV_ENOMEM;
	rc = kv_buf_reserve(out, strlen(s) + 1);
	if (rc == 0) {
		size_t n = strlen(s);
		memcpy(out->base + out->len, s, n + 1);
		out->len += n;
	}
	free(s);
	return rc;
}

/* ----------------------------------------------------------------- decode */

struct dec {
	ProtobufCAllocator *alloc;
	unsigned flags;
	char *err;
	size_t errlen;
	char path[256];	/* dotted field path of the value being decoded */
	size_t plen;
};

__attribute__((format(printf, 3, 4)))
static int fail(struct dec *d, int code, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	if (!d->err || d->errlen == 0)
		return code;
	va_start(ap, fmt);
	vsnprintf(d->err, d->errlen, fmt, ap);
	va_end(ap);
	n = strlen(d->err);
	if (d->plen && n + 1 < d->errlen)
		snprintf(d->err + n, d->errlen - n, " (field \"%s\")", d->path);
	return code;
}

/* Appends ".name" (or "name" at the top) or "[i]" to the path; returns
 * the previous length for path_pop. Overlong paths are truncated. */
static size_t path_push(struct dec *d, const char *name, long idx)
{
	size_t old = d->plen;
	int n;

	if (name)
		n = snprintf(d->path + d->plen, sizeof(d->path) - d->plen,
			     "%s%s", d->plen ? "." : "", name);
	else
		n = snprintf(d->path + d->plen, sizeof(d->path) - d->plen,
			     "[%ld]", idx);
	if (n > 0)
		d->plen += (size_t)n;
	if (d->plen >= sizeof(d->path))
		d->plen = sizeof(d->path) - 1;
	return old;
}

static void path_pop(struct dec *d, size_t old)
{
	d->plen = old;
	d->path[old] = '\0';
}

/* Go's name for the JSON kind of v, for error messages. */
static const char *json_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "object";
	case JSON_ARRAY:
		return "array";
	case JSON_STRING:
		return "string";
	case JSON_INTEGER:
	case JSON_REAL:
		return "number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "bool";
	case JSON_NULL:
		return "null";
	}
	return "value";
}

/* Go's name for a generated type: "pkg.Outer_Inner" for pkg.Outer.Inner. */
static const char *go_name(const char *pkg, const char *full, char *buf,
			   size_t buflen)
{
	size_t pl = strlen(pkg);
	const char *rest = full;

	if (pl && !strncmp(full, pkg, pl) && full[pl] == '.')
		rest = full + pl + 1;
	snprintf(buf, buflen, "%s%s%s", pkg, pl ? "." : "", rest);
	for (char *q = buf + (pl ? pl + 1 : 0); *q; q++)
		if (*q == '.')
			*q = '_';
	return buf;
}

/* Go's name of the target type, for "cannot unmarshal" messages. */
static const char *go_type(const ProtobufCFieldDescriptor *f, char *buf,
			   size_t buflen)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		return "int32";
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		return "uint32";
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		return "int64";
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		return "uint64";
	case PROTOBUF_C_TYPE_FLOAT:
		return "float32";
	case PROTOBUF_C_TYPE_DOUBLE:
		return "float64";
	case PROTOBUF_C_TYPE_BOOL:
		return "bool";
	case PROTOBUF_C_TYPE_STRING:
		return "string";
	case PROTOBUF_C_TYPE_BYTES:
		return "[]uint8";
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumDescriptor *ed = f->descriptor;
		return go_name(ed->package_name, ed->name, buf, buflen);
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessageDescriptor *md = f->descriptor;
		return go_name(md->package_name, md->name, buf, buflen);
	}
	}
	return "?";
}

static int type_error(struct dec *d, const ProtobufCFieldDescriptor *f,
		      const json_t *v)
{
	char tn[128];

	return fail(d, KV_EPROTO,
		    "json: cannot unmarshal %s into Go value of type %s",
		    json_kind(v), go_type(f, tn, sizeof(tn)));
}

/* Parses a decimal integer string strictly: optional '-', digits only. */
static int parse_int_string(const char *s, size_t n, bool is_signed,
			    int64_t *sv, uint64_t *uv)
{
	char *end;
	size_t i = 0;

	if (n == 0 || strlen(s) != n)
		return -1;
	if (s[0] == '-') {
		if (!is_signed)
			return -1;
		i = 1;
	}
	if (i == n)
		return -1;
	for (size_t k = i; k < n; k++)
		if (s[k] < '0' || s[k] > '9')
			return -1;
	errno = 0;
	if (is_signed)
		*sv = strtoll(s, &end, 10);
	else
		*uv = strtoull(s, &end, 10);
	if (errno == ERANGE || end != s + n)
		return -1;
	return 0;
}

/* Reads an integer from a JSON number or decimal string into a signed or
 * unsigned 64-bit value. */
static int get_integer(struct dec *d, const ProtobufCFieldDescriptor *f,
		       const json_t *v, bool is_signed, int64_t *sv,
		       uint64_t *uv)
{
	char tn[128];

	if (json_is_integer(v)) {
		json_int_t x = json_integer_value(v);
		if (is_signed) {
			*sv = x;
		} else {
			if (x < 0)
				goto range;
			*uv = (uint64_t)x;
		}
		return 0;
	}
	if (json_is_string(v)) {
		if (parse_int_string(json_string_value(v), json_string_length(v),
				     is_signed, sv, uv) == 0)
			return 0;
		return fail(d, KV_EPROTO, "invalid value \"%.40s\" for %s",
			    json_string_value(v), go_type(f, tn, sizeof(tn)));
	}
	return type_error(d, f, v);
range:
	return fail(d, KV_EPROTO, "json: cannot unmarshal number %" JSON_INTEGER_FORMAT
		    " into Go value of type %s", json_integer_value(v),
		    go_type(f, tn, sizeof(tn)));
}

static int decode_message(struct dec *d,
			  const ProtobufCMessageDescriptor *desc,
			  const json_t *obj, int depth, ProtobufCMessage **out);

/* Decodes v into one value of field f at p (zeroed or holding the
 * field's initial value). Only a complete value is stored. */
static int decode_value(struct dec *d, const ProtobufCFieldDescriptor *f,
			const json_t *v, int depth, bool in_array, void *p)
{
	ProtobufCAllocator *a = d->alloc;
	char tn[128];
	int64_t sv = 0;
	uint64_t uv = 0;
	int rc;

	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		rc = get_integer(d, f, v, true, &sv, &uv);
		if (rc)
			return rc;
		if (sv < INT32_MIN || sv > INT32_MAX)
			return fail(d, KV_EPROTO, "value %" PRId64
				    " out of range for int32", sv);
		*(int32_t *)p = (int32_t)sv;
		return 0;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		rc = get_integer(d, f, v, false, &sv, &uv);
		if (rc)
			return rc;
		if (uv > UINT32_MAX)
			return fail(d, KV_EPROTO, "value %" PRIu64
				    " out of range for uint32", uv);
		*(uint32_t *)p = (uint32_t)uv;
		return 0;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		rc = get_integer(d, f, v, true, &sv, &uv);
		if (rc)
			return rc;
		*(int64_t *)p = sv;
		return 0;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		rc = get_integer(d, f, v, false, &sv, &uv);
		if (rc)
			return rc;
		*(uint64_t *)p = uv;
		return 0;
	case PROTOBUF_C_TYPE_FLOAT:
	case PROTOBUF_C_TYPE_DOUBLE: {
		double x;
		if (json_is_number(v)) {
			x = json_number_value(v);
		} else if (json_is_string(v)) {
			const char *s = json_string_value(v);
			char *end;
			if (!strcmp(s, "NaN"))
				x = NAN;
			else if (!strcmp(s, "Infinity"))
				x = INFINITY;
			else if (!strcmp(s, "-Infinity"))
				x = -INFINITY;
			else {
				errno = 0;
				x = strtod(s, &end);
				if (!*s || *end || errno)
					return fail(d, KV_EPROTO,
						    "invalid value \"%.40s\" for %s",
						    s, go_type(f, tn, sizeof(tn)));
			}
		} else {
			return type_error(d, f, v);
		}
		if (f->type == PROTOBUF_C_TYPE_FLOAT)
			*(float *)p = (float)x;
		else
			*(double *)p = x;
		return 0;
	}
	case PROTOBUF_C_TYPE_BOOL:
		if (!json_is_boolean(v))
			return type_error(d, f, v);
		*(protobuf_c_boolean *)p = json_is_true(v);
		return 0;
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumDescriptor *ed = f->descriptor;
		if (json_is_string(v)) {
			const ProtobufCEnumValue *ev =
				protobuf_c_enum_descriptor_get_value_by_name(
					ed, json_string_value(v));
			if (!ev)
				return fail(d, KV_EPROTO,
					    "unknown value \"%.40s\" for enum %s",
					    json_string_value(v),
					    go_name(ed->package_name, ed->name,
						    tn, sizeof(tn)));
			*(int32_t *)p = ev->value;
			return 0;
		}
		if (!json_is_integer(v))
			return type_error(d, f, v);
		sv = json_integer_value(v);
		if (sv < INT32_MIN || sv > INT32_MAX)
			return fail(d, KV_EPROTO, "value %" PRId64
				    " out of range for enum %s", sv,
				    go_name(ed->package_name, ed->name, tn,
					    sizeof(tn)));
		*(int32_t *)p = (int32_t)sv;
		return 0;
	}
	case PROTOBUF_C_TYPE_STRING: {
		size_t n;
		char *s;
		if (!json_is_string(v))
			return type_error(d, f, v);
		n = json_string_length(v);
		if (memchr(json_string_value(v), '\0', n))
			return fail(d, KV_EPROTO, "string contains NUL");
		if (n == 0 && !in_array)
			return 0;	/* keep the shared empty default */
		s = a->alloc(a->allocator_data, n + 1);
		if (!s)
			return KV_ENOMEM;
		memcpy(s, json_string_value(v), n + 1);
		*(char **)p = s;
		return 0;
	}
	case PROTOBUF_C_TYPE_BYTES: {
		ProtobufCBinaryData *b = p;
		uint8_t *data;
		size_t n, bad;
		if (!json_is_string(v))
			return type_error(d, f, v);
		rc = b64_decode(json_string_value(v), json_string_length(v),
				a, &data, &n, &bad);
		if (rc == KV_EPROTO)
			return fail(d, rc, "illegal base64 data at input byte "
				    "%zu", bad);
		if (rc)
			return rc;
		b->data = data;
		b->len = n;
		return 0;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		ProtobufCMessage *sub = NULL;
		rc = decode_message(d, f->descriptor, v, depth + 1, &sub);
		if (rc)
			return rc;
		*(ProtobufCMessage **)p = sub;
		return 0;
	}
	}
	return fail(d, KV_EINVAL, "unsupported field type");
}

static bool key_is_field(const ProtobufCMessageDescriptor *desc,
			 const char *key)
{
	char camel[128];

	for (unsigned i = 0; i < desc->n_fields; i++) {
		if (!strcmp(key, desc->fields[i].name))
			return true;
		camel_name(desc->fields[i].name, camel, sizeof(camel));
		if (!strcmp(key, camel))
			return true;
	}
	return false;
}

static int decode_field(struct dec *d, const ProtobufCMessageDescriptor *desc,
			const ProtobufCFieldDescriptor *f, const json_t *v,
			int depth, ProtobufCMessage *m)
{
	char *p = (char *)m + f->offset;
	int rc;

	if (f->label == PROTOBUF_C_LABEL_REPEATED) {
		size_t n, sz = type_size(f->type);
		char tn[128];
		char *arr;
		if (!json_is_array(v))
			return fail(d, KV_EPROTO, "json: cannot unmarshal %s "
				    "into Go value of type []%s", json_kind(v),
				    go_type(f, tn, sizeof(tn)));
		n = json_array_size(v);
		if (n == 0)
			return 0;
		arr = d->alloc->alloc(d->alloc->allocator_data, n * sz);
		if (!arr)
			return KV_ENOMEM;
		memset(arr, 0, n * sz);
		/* Stored at once: zeroed elements are safe to free. */
		*(char **)p = arr;
		MEMBER(size_t, m, f->quantifier_offset) = n;
		for (size_t k = 0; k < n; k++) {
			const json_t *e = json_array_get(v, k);
			size_t old = path_push(d, NULL, (long)k);
			if (json_is_null(e))
				rc = fail(d, KV_EPROTO, "null element in array");
			else
				rc = decode_value(d, f, e, depth, true,
						  arr + k * sz);
			if (rc)
				return rc;
			path_pop(d, old);
		}
		return 0;
	}
	if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
		uint32_t *qc = &MEMBER(uint32_t, m, f->quantifier_offset);
		if (*qc != 0) {
			const ProtobufCFieldDescriptor *o =
				protobuf_c_message_descriptor_get_field(desc,
									(unsigned)*qc);
			return fail(d, KV_EPROTO, "fields \"%s\" and \"%s\" of "
				    "the same oneof are both set",
				    o ? o->name : "?", f->name);
		}
		rc = decode_value(d, f, v, depth, false, p);
		if (rc)
			return rc;
		*qc = f->id;
		return 0;
	}
	rc = decode_value(d, f, v, depth, false, p);
	if (rc)
		return rc;
	if (f->label == PROTOBUF_C_LABEL_OPTIONAL &&
	    f->type != PROTOBUF_C_TYPE_MESSAGE &&
	    f->type != PROTOBUF_C_TYPE_STRING)
		MEMBER(protobuf_c_boolean, m, f->quantifier_offset) = 1;
	return 0;
}

static int decode_message(struct dec *d,
			  const ProtobufCMessageDescriptor *desc,
			  const json_t *obj, int depth, ProtobufCMessage **out)
{
	ProtobufCMessage *m;
	size_t matched = 0;
	char camel[128];
	int rc = 0;

	*out = NULL;
	if (depth > KVJSON_MAX_DEPTH)
		return fail(d, KV_ETOOBIG, "message nesting deeper than %d",
			    KVJSON_MAX_DEPTH);
	if (!json_is_object(obj))
		return fail(d, KV_EPROTO, "json: cannot unmarshal %s into Go "
			    "value of type %s", json_kind(obj), desc->name);
	m = d->alloc->alloc(d->alloc->allocator_data, desc->sizeof_message);
	if (!m)
		return KV_ENOMEM;
	protobuf_c_message_init(desc, m);

	for (unsigned i = 0; i < desc->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &desc->fields[i];
		const json_t *vo = json_object_get(obj, f->name), *vc = NULL;
		const json_t *v;
		size_t old;

		camel_name(f->name, camel, sizeof(camel));
		if (strcmp(camel, f->name))
			vc = json_object_get(obj, camel);
		matched += (vo != NULL) + (vc != NULL);
		v = vc ? vc : vo;	/* Go's jsonpb favours the camel name */
		if (!v || json_is_null(v))
			continue;
		old = path_push(d, f->name, 0);
		rc = decode_field(d, desc, f, v, depth, m);
		if (rc)
			goto err;
		path_pop(d, old);
	}
	if (matched < json_object_size(obj) &&
	    !(d->flags & KVJSON_ALLOW_UNKNOWN)) {
		const char *key;
		const json_t *val;
		json_object_foreach((json_t *)obj, key, val) {
			if (!key_is_field(desc, key)) {
				rc = fail(d, KV_EPROTO,
					  "unknown field \"%.64s\" in %s", key,
					  desc->name);
				goto err;
			}
		}
	}
	*out = m;
	return 0;
err:
	protobuf_c_message_free_unpacked(m, d->alloc);
	return rc;
}

int kvjson_decode_value(const ProtobufCMessageDescriptor *desc,
			const json_t *obj, unsigned flags,
			ProtobufCAllocator *alloc, ProtobufCMessage **out,
			char *err, size_t errlen)
{
	struct dec d = { .alloc = alloc ? alloc : &sys_allocator,
			 .flags = flags, .err = err, .errlen = errlen };
	json_t *empty = NULL;
	int rc;

	if (err && errlen)
		err[0] = '\0';
	if (!out)
		return KV_EINVAL;
	*out = NULL;
	if (!desc || !obj ||
	    desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
		return fail(&d, KV_EINVAL, "invalid arguments");
	if (json_is_null(obj)) {
		empty = json_object();
		if (!empty)
			return KV_ENOMEM;
		obj = empty;
	}
	rc = decode_message(&d, desc, obj, 0, out);
	json_decref(empty);
	return rc;
}

/* jansson refuses integers beyond int64 ("too big integer"), but Go
 * accepts e.g. a uint64 member ID as a bare number. Returns a malloc'd copy
 * of the text with every integer literal of more than 18 digits outside
 * strings put in quotes (all integer fields accept decimal strings), or
 * NULL when out of memory. */
static char *quote_big_integers(const char *text, size_t len, size_t *outlen)
{
	char *out = malloc(len + len / 9 + 3);
	size_t o = 0;
	bool in_str = false;

	if (!out)
		return NULL;
	for (size_t i = 0; i < len;) {
		char c = text[i];
		if (in_str) {
			out[o++] = c;
			i++;
			if (c == '\\' && i < len)
				out[o++] = text[i++];
			else if (c == '"')
				in_str = false;
			continue;
		}
		if (c == '"') {
			in_str = true;
			out[o++] = c;
			i++;
			continue;
		}
		if (c == '-' || (c >= '0' && c <= '9')) {
			size_t j = i + (c == '-'), digits = 0;
			while (j < len && text[j] >= '0' && text[j] <= '9') {
				j++;
				digits++;
			}
			bool plain = j >= len || (text[j] != '.' && text[j] != 'e' &&
						  text[j] != 'E');
			if (digits > 18 && plain)
				out[o++] = '"';
			memcpy(out + o, text + i, j - i);
			o += j - i;
			if (digits > 18 && plain)
				out[o++] = '"';
			i = j;
			continue;
		}
		out[o++] = c;
		i++;
	}
	*outlen = o;
	return out;
}

int kvjson_decode_ex(const ProtobufCMessageDescriptor *desc, const char *text,
		     size_t len, unsigned flags, ProtobufCAllocator *alloc,
		     ProtobufCMessage **out, size_t *consumed, char *err,
		     size_t errlen)
{
	struct dec d = { .err = err, .errlen = errlen };
	json_error_t jerr;
	json_t *root;
	size_t i = 0;
	int rc;

	if (err && errlen)
		err[0] = '\0';
	if (!out)
		return KV_EINVAL;
	*out = NULL;
	if (!desc || (!text && len) ||
	    ((flags & KVJSON_FIRST_VALUE) && !consumed))
		return fail(&d, KV_EINVAL, "invalid arguments");
	if (consumed)
		*consumed = len;
	if (len > KVJSON_MAX_INPUT)
		return fail(&d, KV_ETOOBIG, "JSON input of %zu bytes exceeds "
			    "the limit of %zu", len, KVJSON_MAX_INPUT);
	while (i < len && (text[i] == ' ' || text[i] == '\t' ||
			   text[i] == '\n' || text[i] == '\r'))
		i++;
	if (i == len) {
		if (flags & KVJSON_FIRST_VALUE)
			return fail(&d, KV_ENOTFOUND, "no JSON value");
		return kvjson_decode_value(desc, json_null(), flags, alloc,
					   out, err, errlen);
	}
	root = json_loadb(text, len,
			  JSON_DECODE_ANY | ((flags & KVJSON_FIRST_VALUE) ?
					     JSON_DISABLE_EOF_CHECK : 0),
			  &jerr);
	if (!root && !(flags & KVJSON_FIRST_VALUE) &&
	    strstr(jerr.text, "too big")) {
		size_t qlen;
		char *quoted = quote_big_integers(text, len, &qlen);
		if (!quoted)
			return KV_ENOMEM;
		root = json_loadb(quoted, qlen, JSON_DECODE_ANY, &jerr);
		free(quoted);
	}
	if (!root)
		return fail(&d, KV_EPROTO, "invalid JSON at line %d column %d: "
			    "%s", jerr.line, jerr.column, jerr.text);
	if ((flags & KVJSON_FIRST_VALUE) && consumed)
		*consumed = (size_t)jerr.position;
	rc = kvjson_decode_value(desc, root, flags, alloc, out, err, errlen);
	json_decref(root);
	return rc;
}

int kvjson_decode(const ProtobufCMessageDescriptor *desc, const char *text,
		  size_t len, ProtobufCAllocator *alloc, ProtobufCMessage **out,
		  char *err, size_t errlen)
{
	return kvjson_decode_ex(desc, text, len, 0, alloc, out, NULL, err,
				errlen);
}

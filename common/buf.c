#include "common/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv/errors.h"

void kv_buf_init(struct kv_buf *b)
{
	b->base = NULL;
	b->len = 0;
	b->cap = 0;
}

void kv_buf_free(struct kv_buf *b)
{
	free(b->base);
	kv_buf_init(b);
}

void kv_buf_reset(struct kv_buf *b)
{
	b->len = 0;
}

int kv_buf_reserve(struct kv_buf *b, size_t n)
{
	size_t need, cap;
	unsigned char *p;

	if (n > SIZE_MAX - b->len - 1)
		return KV_ENOMEM;
	need = b->len + n + 1; /* room for a NUL after printf */
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	p = realloc(b->base, cap);
	if (p == NULL)
		return KV_ENOMEM;
	b->base = p;
	b->cap = cap;
	return 0;
}

int kv_buf_append(struct kv_buf *b, const void *p, size_t n)
{
	int rv;

	if (n == 0)
		return 0;
	rv = kv_buf_reserve(b, n);
	if (rv != 0)
		return rv;
	memcpy(b->base + b->len, p, n);
	b->len += n;
	return 0;
}

int kv_buf_putc(struct kv_buf *b, unsigned char c)
{
	return kv_buf_append(b, &c, 1);
}

int kv_buf_printf(struct kv_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n, rv;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return KV_EINVAL;
	rv = kv_buf_reserve(b, (size_t)n + 1);
	if (rv != 0)
		return rv;
	va_start(ap, fmt);
	vsnprintf((char *)b->base + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

void kv_store_u32le(void *p, uint32_t v)
{
	unsigned char *q = p;
	for (int i = 0; i < 4; i++)
		q[i] = (unsigned char)(v >> (8 * i));
}

void kv_store_u64le(void *p, uint64_t v)
{
	unsigned char *q = p;
	for (int i = 0; i < 8; i++)
		q[i] = (unsigned char)(v >> (8 * i));
}

uint32_t kv_load_u32le(const void *p)
{
	const unsigned char *q = p;
	uint32_t v = 0;
	for (int i = 0; i < 4; i++)
		v |= (uint32_t)q[i] << (8 * i);
	return v;
}

uint64_t kv_load_u64le(const void *p)
{
	const unsigned char *q = p;
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)q[i] << (8 * i);
	return v;
}

int kv_buf_put_u32le(struct kv_buf *b, uint32_t v)
{
	unsigned char t[4];
	kv_store_u32le(t, v);
	return kv_buf_append(b, t, 4);
}

int kv_buf_put_u64le(struct kv_buf *b, uint64_t v)
{
	unsigned char t[8];
	kv_store_u64le(t, v);
	return kv_buf_append(b, t, 8);
}

int kv_buf_put_varint(struct kv_buf *b, uint64_t v)
{
	unsigned char t[10];
	size_t n = 0;

	do {
		t[n] = (unsigned char)(v & 0x7f);
		v >>= 7;
		if (v)
			t[n] |= 0x80;
		n++;
	} while (v);
	return kv_buf_append(b, t, n);
}

int kv_get_varint(const unsigned char **p, const unsigned char *end,
		  uint64_t *out)
{
	const unsigned char *q = *p;
	uint64_t v = 0;

	for (int shift = 0; shift < 64; shift += 7) {
		if (q >= end)
			return KV_EPROTO;
		unsigned char c = *q++;
		if (shift == 63 && (c & 0x7e))
			return KV_EPROTO; /* overflows 64 bits */
		v |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			*p = q;
			*out = v;
			return 0;
		}
	}
	return KV_EPROTO;
}

void kv_buf_consume(struct kv_buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
		return;
	}
	memmove(b->base, b->base + n, b->len - n);
	b->len -= n;
}

unsigned char *kv_buf_steal(struct kv_buf *b, size_t *len)
{
	unsigned char *p = b->base;
	if (len)
		*len = b->len;
	kv_buf_init(b);
	return p;
}

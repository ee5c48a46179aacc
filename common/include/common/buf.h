/* common/buf.h — growable byte buffers.
 *
 * A struct kv_buf owns its memory (base, cap); len bytes are in use.
 * Appends return 0 or KV_ENOMEM and leave the buffer unchanged on failure.
 * A buffer may be moved by value; it is freed with kv_buf_free(). Pointers
 * into base stay valid until the next call that may grow the buffer. */
#ifndef KV_COMMON_BUF_H
#define KV_COMMON_BUF_H

#include <stddef.h>
#include <stdint.h>

struct kv_buf {
	unsigned char *base;
	size_t len;
	size_t cap;
};

#define KV_BUF_INIT { NULL, 0, 0 }

void kv_buf_init(struct kv_buf *b);
void kv_buf_free(struct kv_buf *b);
/* Empties the buffer, keeping its memory. */
void kv_buf_reset(struct kv_buf *b);
/* Makes room for at least n more bytes. */
int kv_buf_reserve(struct kv_buf *b, size_t n);
int kv_buf_append(struct kv_buf *b, const void *p, size_t n);
int kv_buf_putc(struct kv_buf *b, unsigned char c);
/* printf-style append; the terminating NUL is not counted in len but is
 * present in memory after base[len]. */
int kv_buf_printf(struct kv_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Fixed-width little-endian and protobuf-style varint encoders. */
int kv_buf_put_u32le(struct kv_buf *b, uint32_t v);
int kv_buf_put_u64le(struct kv_buf *b, uint64_t v);
int kv_buf_put_varint(struct kv_buf *b, uint64_t v);
/* Removes the first n bytes (n <= len). */
void kv_buf_consume(struct kv_buf *b, size_t n);
/* Hands the memory to the caller (free() it); the buffer becomes empty. */
unsigned char *kv_buf_steal(struct kv_buf *b, size_t *len);

/* Decoders over a bounded slice. Each returns 0, or KV_EPROTO when the
 * slice is too short or a varint is malformed (> 10 bytes or overflowing). */
int kv_get_varint(const unsigned char **p, const unsigned char *end,
		  uint64_t *out);
uint32_t kv_load_u32le(const void *p);
uint64_t kv_load_u64le(const void *p);
void kv_store_u32le(void *p, uint32_t v);
void kv_store_u64le(void *p, uint64_t v);

#endif

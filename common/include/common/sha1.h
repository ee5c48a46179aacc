/* common/sha1.h — SHA-1 (FIPS 180-4). Used only to derive etcd-compatible
 * member and cluster ids; not for security. Streaming, no allocation,
 * thread-safe per context. */
#ifndef KV_COMMON_SHA1_H
#define KV_COMMON_SHA1_H

#include <stddef.h>
#include <stdint.h>

#define KV_SHA1_SIZE 20

struct kv_sha1 {
	uint32_t h[5];
	uint64_t len; /* bytes hashed so far */
	unsigned char buf[64];
	size_t nbuf;
};

void kv_sha1_init(struct kv_sha1 *c);
void kv_sha1_update(struct kv_sha1 *c, const void *data, size_t len);
/* Writes the 20-byte digest; c must be re-initialised to be reused. */
void kv_sha1_final(struct kv_sha1 *c, unsigned char out[KV_SHA1_SIZE]);
/* One-shot. */
void kv_sha1(const void *data, size_t len, unsigned char out[KV_SHA1_SIZE]);

#endif

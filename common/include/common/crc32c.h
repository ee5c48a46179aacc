/* common/crc32c.h — CRC-32C (Castagnoli), as used by the WAL and snapshots.
 *
 * Uses the SSE4.2 crc32 instruction when the CPU has it and a slicing table
 * otherwise; both give identical results. Thread-safe, no allocation. */
#ifndef KV_COMMON_CRC32C_H
#define KV_COMMON_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends crc (0 to start) with len bytes at buf and returns the new CRC.
 * crc32c(crc32c(0, a), b) == crc32c(0, a || b). */
uint32_t kv_crc32c(uint32_t crc, const void *buf, size_t len);

/* The portable implementation, exposed so tests can compare both paths. */
uint32_t kv_crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* True when the hardware path is in use. */
int kv_crc32c_hw_available(void);

#endif

/* common/clock.h — time sources. Thread-safe. */
#ifndef KV_COMMON_CLOCK_H
#define KV_COMMON_CLOCK_H

#include <stdint.h>

/* Monotonic time in nanoseconds since an arbitrary start; never goes back,
 * unaffected by wall-clock jumps. Use it for timeouts and durations. */
uint64_t kv_now_ns(void);

/* Monotonic time in milliseconds. */
uint64_t kv_now_ms(void);

/* Wall-clock time in microseconds since the Unix epoch; for logs only. */
uint64_t kv_wall_us(void);

#endif

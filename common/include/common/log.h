/* common/log.h — leveled, structured logging to stderr.
 *
 * Each line is one event: a timestamp, level, module, message and
 * key=value fields, either as logfmt
 *   ts=2026-11-27T13:56:10.123456Z level=info mod=wal msg="segment opened" file=0001.wal
 * or as one JSON object per line (--log-format=json).
 *
 * The configuration (level, format, sink) is process-wide and set once at
 * start-up, before threads start; logging itself is thread-safe (one write()
 * per line). */
#ifndef KV_COMMON_LOG_H
#define KV_COMMON_LOG_H

#include <stdbool.h>
#include <stdio.h>

enum kv_log_level {
	KV_LOG_DEBUG = 0,
	KV_LOG_INFO,
	KV_LOG_WARN,
	KV_LOG_ERROR,
	KV_LOG_FATAL,
};

enum kv_log_format {
	KV_LOG_LOGFMT = 0,
	KV_LOG_JSON,
};

/* Parses "debug", "info", "warn"/"warning", "error", "fatal"/"panic"
 * (etcd's --log-level names). Returns 0 or KV_EINVAL. */
int kv_log_parse_level(const char *s, enum kv_log_level *out);
void kv_log_set_level(enum kv_log_level level);
void kv_log_set_format(enum kv_log_format fmt);
/* Redirects output to fd (default 2). For tests. */
void kv_log_set_fd(int fd);
bool kv_log_enabled(enum kv_log_level level);

/* Logs one event. fields is a printf format producing space-separated
 * key=value pairs (values with spaces must be double-quoted), or NULL. */
void kv_log(enum kv_log_level level, const char *module, const char *msg,
	    const char *fields, ...) __attribute__((format(printf, 4, 5)));

#define KV_DEBUG(mod, msg, ...)                                   \
	do {                                                      \
		if (kv_log_enabled(KV_LOG_DEBUG))                 \
			kv_log(KV_LOG_DEBUG, mod, msg, __VA_ARGS__); \
	} while (0)
#define KV_INFO(mod, msg, ...) kv_log(KV_LOG_INFO, mod, msg, __VA_ARGS__)
#define KV_WARN(mod, msg, ...) kv_log(KV_LOG_WARN, mod, msg, __VA_ARGS__)
#define KV_ERROR(mod, msg, ...) kv_log(KV_LOG_ERROR, mod, msg, __VA_ARGS__)

#endif

/*
 * kv/errors.h — kvd's error codes, shared by the server, libkv and tools.
 *
 * Every function that acts returns int: 0 on success or a negative KV_E*
 * code. Codes from errno, libuv, OpenSSL, LMDB or raft are translated where
 * they enter a module and never passed upward raw.
 */
#ifndef KV_ERRORS_H
#define KV_ERRORS_H

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define KV_API __attribute__((visibility("default")))
#else
#define KV_API
#endif

/* X(name, value, message). Values are stable: they may be logged and
 * compared across versions. */
#define KV_ERRNO_MAP(X)                                                       \
	X(NOMEM,       1, "out of memory")                                    \
	X(INVAL,       2, "invalid argument")                                 \
	X(IO,          3, "I/O error")                                        \
	X(CORRUPT,     4, "data corruption detected")                         \
	X(NOTFOUND,    5, "not found")                                        \
	X(EXIST,       6, "already exists")                                   \
	X(FULL,        7, "no space left")                                    \
	X(TOOBIG,      8, "too large")                                        \
	X(RANGE,       9, "out of range")                                     \
	X(COMPACTED,  10, "requested revision has been compacted")            \
	X(FUTUREREV,  11, "requested revision is a future revision")          \
	X(FAILSTOP,   12, "storage failed earlier and refuses further work")  \
	X(CLOSED,     13, "closed")                                           \
	X(BUSY,       14, "busy")                                             \
	X(PROTO,      15, "malformed message")                                \
	X(UNSUPP,     16, "not supported")                                    \
	X(PERM,       17, "permission denied")                                \
	X(TIMEOUT,    18, "timed out")                                        \
	X(AGAIN,      19, "try again")                                        \
	X(CANCELED,   20, "canceled")                                         \
	X(NOLEADER,   21, "no leader")                                        \
	X(INTERNAL,   22, "internal error")

enum kv_errno {
#define KV_ERR_ENUM(name, val, msg) KV_E##name = -(val),
	KV_ERRNO_MAP(KV_ERR_ENUM)
#undef KV_ERR_ENUM
};

/* Returns a static, never-NULL message for a KV_E* code (or "unknown
 * error <n>" in a static buffer for unknown codes; not thread-safe then). */
KV_API const char *kv_strerror(int err);

/* Returns the code's name without prefix ("NOMEM"), or "UNKNOWN". */
KV_API const char *kv_errname(int err);

#ifdef __cplusplus
}
#endif
#endif /* KV_ERRORS_H */

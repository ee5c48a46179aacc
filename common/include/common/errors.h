/* common/errors.h — errno translation for modules that make syscalls. */
#ifndef KV_COMMON_ERRORS_H
#define KV_COMMON_ERRORS_H

#include "kv/errors.h"

/* Maps a positive errno value to a KV_E* code (ENOMEM → KV_ENOMEM,
 * ENOSPC/EDQUOT → KV_EFULL, ENOENT → KV_ENOTFOUND, EEXIST → KV_EEXIST,
 * EINVAL → KV_EINVAL, anything else → KV_EIO). */
int kv_from_errno(int e);

#endif

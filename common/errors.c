/* One table for every KV_E* code: kv/errors.h. */
#include "kv/errors.h"

#include <stdio.h>

const char *kv_strerror(int err)
{
	static char unknown[32];

	switch (err) {
	case 0:
		return "success";
#define KV_ERR_CASE(name, val, msg) \
	case KV_E##name:            \
		return msg;
		KV_ERRNO_MAP(KV_ERR_CASE)
#undef KV_ERR_CASE
	}
	snprintf(unknown, sizeof(unknown), "unknown error %d", err);
	return unknown;
}

const char *kv_errname(int err)
{
	switch (err) {
	case 0:
		return "OK";
#define KV_ERR_NAME(name, val, msg) \
	case KV_E##name:            \
		return #name;
		KV_ERRNO_MAP(KV_ERR_NAME)
#undef KV_ERR_NAME
	}
	return "UNKNOWN";
}

#include <errno.h>

#include "common/errors.h"

int kv_from_errno(int e)
{
	switch (e) {
	case 0:
		return 0;
	case ENOMEM:
		return KV_ENOMEM;
	case ENOSPC:
	case EDQUOT:
	case EFBIG:
		return KV_EFULL;
	case ENOENT:
		return KV_ENOTFOUND;
	case EEXIST:
		return KV_EEXIST;
	case EINVAL:
		return KV_EINVAL;
	case EACCES:
	case EPERM:
		return KV_EPERM;
	case EAGAIN:
		return KV_EAGAIN;
	case ETIMEDOUT:
		return KV_ETIMEOUT;
	default:
		return KV_EIO;
	}
}

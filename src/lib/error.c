/* SPDX-License-Identifier: MIT */
#include <dmamem/error.h>

static const char *const dmm_err_text[DMM__NR_ERRORS] = {
	[DMM_OK] = "success",
	[DMM_EINVAL] = "invalid argument",
	[DMM_ENOMEM] = "out of memory: no free block satisfies the request",
	[DMM_ERANGE] = "no RAM inside the requested address window",
	[DMM_EBUSY] = "busy (pinned or in use)",
	[DMM_EAGAIN] = "temporarily unavailable, try again",
	[DMM_EEXIST] = "already exists",
	[DMM_ENOENT] = "no such object (never allocated or already freed)",
	[DMM_ENOTSUP] = "not supported in this configuration",
	[DMM_EFAULT] = "internal invariant violated",
	[DMM_ENOSPC] = "table full",
	[DMM_EPERM] = "not permitted by policy",
	[DMM_EWMARK] = "free memory below the zone watermark",
};

static const char *const dmm_err_name[DMM__NR_ERRORS] = {
	[DMM_OK] = "DMM_OK",         [DMM_EINVAL] = "DMM_EINVAL", [DMM_ENOMEM] = "DMM_ENOMEM",
	[DMM_ERANGE] = "DMM_ERANGE", [DMM_EBUSY] = "DMM_EBUSY",   [DMM_EAGAIN] = "DMM_EAGAIN",
	[DMM_EEXIST] = "DMM_EEXIST", [DMM_ENOENT] = "DMM_ENOENT", [DMM_ENOTSUP] = "DMM_ENOTSUP",
	[DMM_EFAULT] = "DMM_EFAULT", [DMM_ENOSPC] = "DMM_ENOSPC", [DMM_EPERM] = "DMM_EPERM",
	[DMM_EWMARK] = "DMM_EWMARK",
};

static int err_index(int err)
{
	if (err < 0)
		err = -err;
	return err < DMM__NR_ERRORS ? err : -1;
}

const char *dmm_strerror(int err)
{
	int i = err_index(err);
	return i < 0 ? "unknown error" : dmm_err_text[i];
}

const char *dmm_errname(int err)
{
	int i = err_index(err);
	return i < 0 ? "DMM_E?" : dmm_err_name[i];
}

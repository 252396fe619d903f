/* SPDX-License-Identifier: MIT */
/*
 * dmamem error codes.
 *
 * Every public function that can fail returns 0 on success or a negative
 * DMM_E* code. dmm_strerror() accepts either sign.
 */
#ifndef DMAMEM_ERROR_H
#define DMAMEM_ERROR_H

enum dmm_error {
	DMM_OK = 0,
	DMM_EINVAL = 1,   /* invalid argument: nothing was changed */
	DMM_ENOMEM = 2,   /* no free memory satisfies the request */
	DMM_ERANGE = 3,   /* no RAM at all inside the requested address window */
	DMM_EBUSY = 4,    /* pinned or otherwise busy */
	DMM_EAGAIN = 5,   /* transient: try again later */
	DMM_EEXIST = 6,   /* already exists / already registered */
	DMM_ENOENT = 7,   /* no such object (e.g. freeing memory never allocated) */
	DMM_ENOTSUP = 8,  /* operation not supported in this configuration */
	DMM_EFAULT = 9,   /* an internal invariant does not hold (check failure) */
	DMM_ENOSPC = 10,  /* a fixed-size table is full */
	DMM_EPERM = 11,   /* not permitted by policy */
	DMM_EWMARK = 12,  /* free memory exists but is below the watermark */
	DMM__NR_ERRORS
};

/* Human-readable text for an error code (positive or negative). Never NULL. */
const char *dmm_strerror(int err);

/* Short symbolic name ("DMM_ENOMEM") for an error code. Never NULL. */
const char *dmm_errname(int err);

#endif

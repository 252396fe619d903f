/* SPDX-License-Identifier: MIT */
/*
 * Handle table: a ready-made movable owner (like zsmalloc handles).
 *
 * Each handle names one movable page whose physical location may change:
 * users keep handles, never pfns, and lock a handle while they touch its
 * page (a locked handle is not migrated; migration of it reports "busy").
 * The table's own memory is unmovable pages from the page allocator.
 * Thread-safe (one lock per table).
 */
#ifndef DMAMEM_HANDLES_H
#define DMAMEM_HANDLES_H

#include <stdint.h>

#include "mem.h"
#include "migrate.h"

struct dmm_handles;

#define DMM_HANDLE_NONE UINT32_MAX

/*
 * Create a table of @capacity handles (1..2^24). Fails with -DMM_EINVAL or
 * the page allocator's error for the table's memory.
 */
int dmm_handles_create(struct dmm_mem *mem, uint32_t capacity, struct dmm_handles **out);

/* Free every page still held and the table itself. -DMM_EBUSY if a handle
 * is locked or its page pinned: nothing is freed then (but for a pin taken
 * while it runs: the pages freed before it are, their handles released,
 * and the table stays usable). -DMM_EINVAL for NULL. */
int dmm_handles_destroy(struct dmm_handles *h);

/*
 * Allocate a movable page and a handle for it. @gfp: DMM_GFP_ZERO,
 * DMM_GFP_ATOMIC, DMM_GFP_NOCMA. Fails with -DMM_ENOSPC (table full) or the
 * page allocator's error.
 */
int dmm_handle_alloc(struct dmm_handles *h, unsigned gfp, uint32_t *handle);

/* Free a handle and its page. -DMM_ENOENT if not allocated, -DMM_EBUSY if
 * locked or its page is pinned (nothing changes then). */
int dmm_handle_free(struct dmm_handles *h, uint32_t handle);

/* Where the handle's page is now. -DMM_ENOENT if not allocated. */
int dmm_handle_pfn(struct dmm_handles *h, uint32_t handle, dmm_pfn_t *pfn);

/* Lock the handle (the page stays put) and return a CPU pointer to its
 * contents, or NULL if the handle is not allocated. Locks nest (a count). */
void *dmm_handle_lock(struct dmm_handles *h, uint32_t handle);
int dmm_handle_unlock(struct dmm_handles *h, uint32_t handle);

struct dmm_handles_stats {
	uint32_t capacity, in_use;
	uint64_t migrated;           /* pages moved under the table's handles */
	uint64_t refused_locked;     /* migrations refused because the handle was locked */
};
void dmm_handles_get_stats(struct dmm_handles *h, struct dmm_handles_stats *st);

/* Every used handle names an allocated movable page owned by this table
 * whose private word is the handle; free list well formed. 0 or -DMM_EFAULT. */
int dmm_handles_check(struct dmm_handles *h);

#endif

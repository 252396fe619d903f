/* SPDX-License-Identifier: MIT */
/*
 * Range allocator: "N contiguous pages, physically inside [lo, hi), start
 * aligned to align, not crossing a multiple of boundary".
 *
 * It shares the buddy allocator's free pages (no separate pool): an index
 * over each zone's free pages (a bitmap and a segment tree of free runs)
 * finds a candidate in O(log n) per examined run, and the pages are taken
 * out of the buddy free lists coherently. A range never straddles a zone.
 */
#ifndef DMAMEM_RANGE_H
#define DMAMEM_RANGE_H

#include <stddef.h>

#include "constraint.h"
#include "mem.h"

/*
 * Allocate @nr_pages contiguous pages satisfying @c; store the first pfn in
 * *@pfn. Flags: DMM_GFP_ATOMIC (may use the atomic reserve), DMM_GFP_NOWMARK,
 * DMM_GFP_ZERO; migratetype flags are accepted and ignored.
 *
 * Fails with -DMM_EINVAL (nr_pages == 0, invalid constraint, boundary smaller
 * than the request, unknown flags), -DMM_ERANGE (no RAM inside [lo, hi)),
 * -DMM_EWMARK (would take the zone below its watermark), -DMM_ENOMEM (no
 * such range is free, even after draining the per-CPU caches).
 * Cost: O((1 + k) log n) where k is the number of free runs long enough but
 * unusable because of alignment or boundary; failure when no run is long
 * enough is O(log n). Context: any; never sleeps.
 */
int dmm_alloc_range(struct dmm_mem *mem, const struct dmm_constraint *c, size_t nr_pages,
		    unsigned flags, dmm_pfn_t *pfn);

/*
 * Free a range from dmm_alloc_range(). Fails with -DMM_ENOENT if @pfn is not
 * the start of a range allocation (never allocated, or freed already: of two
 * frees of one range at once, exactly one succeeds), -DMM_EINVAL if
 * @nr_pages differs,
 * -DMM_EBUSY if the range is still pinned (a dmm_page_pin() racing with the
 * free either lands first, and the free is refused, or fails) or is a
 * coherent DMA buffer (dmm_dma_free_coherent frees those), -DMM_EPERM if it
 * is memory dmamem allocated for its own use (a bounce pool, an atomic-pool
 * chunk, metadata: never a caller's to free). Nothing is changed on failure.
 */
int dmm_free_range(struct dmm_mem *mem, dmm_pfn_t pfn, size_t nr_pages);

/* Verify the range index: bitmap == buddy free pages, tree summaries ==
 * recomputed summaries. Returns 0 or -DMM_EFAULT. */
int dmm_range_check(struct dmm_mem *mem);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * Contiguous memory areas (CMA).
 *
 * An area is reserved at start-up (declared in the machine description:
 * size, optional fixed base or placement limit, alignment) and, while
 * unused, its pageblocks (migratetype CMA) serve movable allocations. A
 * contiguous request isolates a candidate range, migrates the movable pages
 * out, takes the range; on failure it tries other ranges of the area (a
 * bounded number) and then fails with the reason. Allocations in one area
 * may run concurrently on disjoint ranges.
 */
#ifndef DMAMEM_CMA_H
#define DMAMEM_CMA_H

#include <stddef.h>
#include <stdint.h>

#include "machine.h"
#include "mem.h"
#include "migrate.h"

/* dmm_cma_alloc flags */
#define DMM_CMA_UNCACHED (1u << 0)  /* for a non-coherent device: remap uncached */
#define DMM_CMA_ZERO     (1u << 1)  /* zero the contents */
#define DMM_CMA_NORETRY  (1u << 2)  /* try one candidate range only */
#define DMM_CMA_ALL      ((1u << 3) - 1)

enum dmm_cma_fail {
	DMM_CMA_FAIL_NOSPACE = 0,  /* no free range of that size/alignment in the area */
	DMM_CMA_FAIL_PINNED,       /* a long-term pinned page sits in every candidate */
	DMM_CMA_FAIL_BUSY,         /* short-term pins / concurrent isolation persisted */
	DMM_CMA_FAIL_UNMOVABLE,    /* an unmovable page sits in the range */
	DMM_CMA_FAIL_NO_TARGET,    /* nowhere to migrate movable pages to */
	DMM_CMA_FAIL_REFUSED,      /* an owner refused to move its page */
	DMM_CMA_FAIL_ATTR,         /* the memory-attribute change failed */
	DMM_NR_CMA_FAILS
};

const char *dmm_cma_fail_name(enum dmm_cma_fail f);

/* Latency histogram: bucket i holds latencies in [2^(i/4 ...)]; see dmm_cma_latency_bucket_ns. */
#define DMM_CMA_LAT_BUCKETS 160

struct dmm_cma_info {
	const char *name;
	dmm_pfn_t base_pfn;
	uint64_t nr_pages;
	uint64_t used_pages;          /* handed out by dmm_cma_alloc */
	uint64_t free_pages;          /* buddy-free pages inside the area */
	uint64_t lent_pages;          /* pages lent to movable allocations */
	int is_default;
	uint64_t allocs_tried, allocs_ok, releases;
	uint64_t ranges_tried;        /* candidate ranges examined */
	uint64_t pages_migrated;
	uint64_t pages_remapped;      /* attribute changes (uncached and back) */
	uint64_t fail[DMM_NR_CMA_FAILS];
	uint64_t lat_count, lat_max_ns, lat_sum_ns;
	uint64_t lat_p50_ns, lat_p99_ns; /* from the histogram (bucket upper bound) */
	uint64_t lat_hist[DMM_CMA_LAT_BUCKETS];
};

/* Number of areas; index of the area called @name or -DMM_ENOENT; index of
 * the default area (the declared default, else area 0) or -DMM_ENOENT. */
unsigned dmm_cma_count(const struct dmm_mem *mem);
int dmm_cma_find(const struct dmm_mem *mem, const char *name);
int dmm_cma_default(const struct dmm_mem *mem);

/*
 * Allocate @nr_pages contiguous pages from area @area, aligned to @align
 * bytes (0 = a page; a power of two). On success *@pfn is the first page.
 * Fails with -DMM_EINVAL (bad area, zero pages, more than the area, bad
 * alignment or flags), -DMM_ENOMEM (no range free in the area's own
 * accounting, or nowhere to migrate to), -DMM_EBUSY (pinned/unmovable pages
 * in every candidate range), -DMM_EAGAIN (short-term pins persisted), or the
 * attribute hook's error (DMM_CMA_UNCACHED: the range is set back to
 * write-back, since the hook may have changed part of it, and given back
 * with clean descriptors; no other candidate is tried). The reason is also
 * stored in *@why (if non-NULL) and counted. Context: may migrate pages (copies up to the request size);
 * must not be called with dmamem locks held.
 */
int dmm_cma_alloc(struct dmm_mem *mem, int area, size_t nr_pages, uint64_t align, unsigned flags,
		  dmm_pfn_t *pfn, enum dmm_cma_fail *why);

/*
 * Release a range from dmm_cma_alloc(). Fails with -DMM_ENOENT (not the start
 * of an allocation of this area), -DMM_EINVAL (wrong size or area) or
 * -DMM_EBUSY (pinned, or a coherent DMA buffer: dmm_dma_free_coherent);
 * nothing is changed on failure, and a refused release of a valid area is
 * counted in its zone's bad_free. Restores the memory attribute if it was
 * changed, before any page of the range is free again (the attribute hook
 * then runs with no dmamem lock held). Must not be called with dmamem
 * locks held.
 */
int dmm_cma_release(struct dmm_mem *mem, int area, dmm_pfn_t pfn, size_t nr_pages);

int dmm_cma_get_info(struct dmm_mem *mem, int area, struct dmm_cma_info *info);

/* Upper bound (ns) of latency histogram bucket @i. */
uint64_t dmm_cma_latency_bucket_ns(unsigned i);

/* Walk every area's invariants: its pageblocks are CMA (or isolated by an
 * allocation in progress), its bitmap agrees with the page states of the
 * ranges handed out, counts match. 0 or -DMM_EFAULT. */
int dmm_cma_check(struct dmm_mem *mem);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * Zoned buddy page allocator.
 *
 * Orders 0..DMM_MAX_ORDER, free lists per migratetype, pageblocks of
 * 2^DMM_PAGEBLOCK_ORDER pages grouped by mobility with fallback/stealing,
 * min/low/high watermarks with an atomic reserve, lowmem_reserve protection,
 * a low-zone policy (fallback or reserved) and per-CPU caches for orders
 * 0..DMM_PCP_MAX_ORDER so the common path takes no zone lock.
 *
 * Every allocation carries an explicit physical constraint. DMM_GFP_DMA and
 * DMM_GFP_DMA32 are only shorthands for "below dma_limit" / "below
 * dma32_limit" when no constraint is given.
 */
#ifndef DMAMEM_PAGE_ALLOC_H
#define DMAMEM_PAGE_ALLOC_H

#include <stdint.h>

#include "constraint.h"
#include "mem.h"

#define DMM_MAX_ORDER 10
#define DMM_NR_ORDERS (DMM_MAX_ORDER + 1)
#define DMM_PAGEBLOCK_ORDER 9
#define DMM_PAGEBLOCK_PAGES ((uint64_t)1 << DMM_PAGEBLOCK_ORDER)
#define DMM_PCP_MAX_ORDER 3

/* Allocation flags. */
#define DMM_GFP_MOVABLE      (1u << 0)  /* migratetype movable */
#define DMM_GFP_RECLAIMABLE  (1u << 1)  /* migratetype reclaimable */
#define DMM_GFP_ATOMIC       (1u << 2)  /* cannot sleep: may dip into the atomic reserve */
#define DMM_GFP_DMA          (1u << 3)  /* shorthand: below dma_limit */
#define DMM_GFP_DMA32        (1u << 4)  /* shorthand: below dma32_limit */
#define DMM_GFP_ZERO         (1u << 5)  /* zero the contents */
#define DMM_GFP_NOCACHE      (1u << 6)  /* bypass the per-CPU caches */
#define DMM_GFP_NOWMARK      (1u << 7)  /* ignore watermarks (emergency/internal) */
#define DMM_GFP_NOCMA        (1u << 8)  /* never from a contiguous area (long-term pins) */
#define DMM_GFP_PACKED       (1u << 9)  /* small objects: packed class wanted (slab.h) */
#define DMM_GFP_ALL          ((1u << 10) - 1)

/* Failure reasons counted per zone (index into dmm_zone_stats.fail). */
enum dmm_fail_reason {
	DMM_FAIL_NOMEM = 0,     /* no free block of the order / no fitting range */
	DMM_FAIL_WMARK,         /* free memory below the watermark */
	DMM_FAIL_RANGE,         /* constraint outside this zone's RAM */
	DMM_FAIL_LOWMEM_POLICY, /* skipped: low zone reserved */
	DMM_NR_FAIL_REASONS
};

struct dmm_zone_stats {
	uint64_t alloc_ok;         /* buddy allocations served from this zone */
	uint64_t free_ok;
	uint64_t pcp_alloc;        /* served from a per-CPU cache */
	uint64_t pcp_free;
	uint64_t pcp_refill;       /* batched refills */
	uint64_t pcp_drain;        /* batched drains */
	uint64_t fallback;         /* allocations served from another migratetype */
	uint64_t steal_block;      /* pageblocks claimed by fallback */
	uint64_t range_ok;
	uint64_t range_free;
	uint64_t range_pages;      /* pages handed out by the range allocator */
	uint64_t wmark_low_events; /* low-watermark crossings reported */
	uint64_t fail[DMM_NR_FAIL_REASONS];
	uint64_t bad_free;         /* rejected frees (double free, wrong order, ...) */
};

struct dmm_zone_info {
	enum dmm_zone_type type;
	const char *name;               /* "DMA", "DMA32", "Normal" */
	dmm_pfn_t start_pfn;            /* first pfn of the zone's span */
	dmm_pfn_t end_pfn;              /* one past the last pfn */
	uint64_t spanned;               /* end_pfn - start_pfn */
	uint64_t present;               /* RAM pages */
	uint64_t managed;               /* pages given to the buddy allocator */
	uint64_t free;                  /* free in the buddy lists (not per-CPU) */
	uint64_t pcp;                   /* pages held in per-CPU caches */
	uint64_t wmark_min, wmark_low, wmark_high;
	uint64_t protection[DMM_NR_ZONE_TYPES]; /* lowmem_reserve by class zone type */
	uint64_t free_blocks[DMM_NR_ORDERS];                         /* by order */
	uint64_t free_blocks_mt[DMM_NR_MIGRATETYPES][DMM_NR_ORDERS]; /* by type, order */
	uint64_t pageblocks_mt[DMM_NR_MIGRATETYPES];
	struct dmm_zone_stats stats;
};

/*
 * Allocate 2^@order contiguous pages satisfying @c (NULL = anywhere, or the
 * DMA/DMA32 shorthands in @flags). On success stores the first pfn in *@pfn.
 *
 * Zones that lie entirely inside the constraint are tried highest first
 * through the buddy lists (per-CPU cache for order <= DMM_PCP_MAX_ORDER);
 * a zone that only partly overlaps the window, or an alignment/boundary the
 * buddy's natural alignment does not give, is served by the range allocator.
 *
 * Fails with: -DMM_EINVAL (order > DMM_MAX_ORDER, unknown flags, invalid
 * constraint, both a constraint and DMA shorthands, pfn NULL); -DMM_ERANGE (no
 * RAM inside the window); -DMM_EWMARK (free pages exist only below the
 * watermark); -DMM_ENOMEM (no block satisfies the request).
 * Context: any; never sleeps.
 */
int dmm_page_alloc(struct dmm_mem *mem, unsigned order, const struct dmm_constraint *c,
		   unsigned flags, dmm_pfn_t *pfn);

/*
 * Free a block from dmm_page_alloc(). Fails with -DMM_ENOENT if @pfn is not
 * the head of an allocated buddy block (never allocated, already freed, or a
 * range allocation; of two frees of one block at once exactly one succeeds:
 * the block's state goes from DMM_PAGE_ALLOC to DMM_PAGE_FREEING by one
 * compare-and-swap), -DMM_EINVAL if @order differs from the allocation's,
 * -DMM_EBUSY if the page is still pinned (a dmm_page_pin() racing with the
 * free either lands first, and the free is refused, or fails) or belongs to
 * the small-object allocator (a slab, or a large dmm_kmalloc object:
 * dmm_kfree frees those), -DMM_EPERM if it is memory dmamem allocated for
 * its own use (a device record, an IO page table, metadata: never a
 * caller's to free). Nothing is changed on failure.
 */
int dmm_page_free(struct dmm_mem *mem, dmm_pfn_t pfn, unsigned order);

/* Return every page held in per-CPU caches to the buddy lists. */
void dmm_page_drain_pcp(struct dmm_mem *mem);

/* Number of zones present; zones are indexed 0..n-1 in address order. */
unsigned dmm_mem_nr_zones(const struct dmm_mem *mem);
int dmm_zone_get_info(struct dmm_mem *mem, unsigned zone, struct dmm_zone_info *out);
/* Index of the zone of @type, or -DMM_ENOENT if absent. */
int dmm_zone_index(const struct dmm_mem *mem, enum dmm_zone_type type);
const char *dmm_zone_name(enum dmm_zone_type type);
const char *dmm_migratetype_name(enum dmm_migratetype mt);
const char *dmm_fail_reason_name(enum dmm_fail_reason r);

/* Total free pages (buddy lists) over all zones. */
uint64_t dmm_mem_free_pages(struct dmm_mem *mem);

/*
 * Low-watermark hook: called (outside every lock, on the allocating thread)
 * when a zone's free pages drop below its low watermark; re-armed once the
 * zone climbs back above high. One hook per memory map; NULL removes it.
 */
typedef void (*dmm_wmark_hook_fn)(void *arg, struct dmm_mem *mem, unsigned zone,
				  uint64_t free_pages);
int dmm_page_set_wmark_hook(struct dmm_mem *mem, dmm_wmark_hook_fn fn, void *arg);

/*
 * Walk every invariant of the buddy allocator: free lists well linked, every
 * free head free with the list's order and migratetype and inside its zone,
 * no two free blocks overlap, free counts match, per-CPU lists consistent,
 * the range index agrees with the buddy lists. Takes every lock.
 * Returns 0 or -DMM_EFAULT (and logs what failed).
 */
int dmm_page_alloc_check(struct dmm_mem *mem);

/* Watermark arithmetic (exposed for tests and tools): given each zone's
 * managed pages, compute min/low/high as Linux 6.x does. */
void dmm_calc_watermarks(uint64_t min_free_kbytes, uint32_t scale_factor, unsigned nr,
			 const uint64_t *managed, uint64_t *min, uint64_t *low, uint64_t *high);
/* lowmem_reserve as Linux computes it: out[i][j] = pages zone type i keeps
 * from requests whose class zone is j (> i); indexed by zone type. */
void dmm_calc_lowmem_reserve(const uint32_t ratio[DMM_NR_ZONE_TYPES],
			     const uint64_t managed[DMM_NR_ZONE_TYPES],
			     uint64_t out[DMM_NR_ZONE_TYPES][DMM_NR_ZONE_TYPES]);
/* Linux's default min_free_kbytes = sqrt(16 * lowmem_kbytes), clamped. */
uint64_t dmm_default_min_free_kbytes(uint64_t managed_pages);

#endif

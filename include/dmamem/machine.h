/* SPDX-License-Identifier: MIT */
/*
 * Machine description: what RAM exists where, and the low-memory limits.
 *
 * Zones are derived from this description, never from architecture
 * constants: DMA = [0, dma_limit), DMA32 = [dma_limit, dma32_limit),
 * NORMAL = [dma32_limit, end). A zone with no RAM is absent.
 */
#ifndef DMAMEM_MACHINE_H
#define DMAMEM_MACHINE_H

#include <stdint.h>

#include "constraint.h"

#define DMM_MAX_REGIONS 32
#define DMM_MACHINE_NAME_MAX 48

/*
 * Upper bounds of the per-CPU cache settings, in pages. One order-0 request
 * on an empty cache moves a whole batch from the zone under its lock, and a
 * cache keeps up to high pages (plus a batch) out of the zone's free count,
 * watermarks included, on every CPU. Linux's own batch is at most 63 pages
 * (96 through the old percpu_pagelist_fraction); a batch is capped at a
 * pageblock (512 pages, 2 MiB), and high at 8 such batches (16 MiB), which
 * also holds the automatic high mark (6 x batch) of any batch.
 */
#define DMM_PCP_BATCH_MAX 512u
#define DMM_PCP_HIGH_MAX 4096u

enum dmm_zone_type { DMM_ZONE_DMA = 0, DMM_ZONE_DMA32, DMM_ZONE_NORMAL, DMM_NR_ZONE_TYPES };

enum dmm_lowmem_policy {
	/* Ordinary allocations may fall back into the low (DMA) zone once the
	 * higher zones are below their watermarks: the classic behaviour,
	 * tempered only by the lowmem_reserve ratios. */
	DMM_LOWMEM_FALLBACK = 0,
	/* The low zone is out of ordinary fallback; it serves only requests
	 * whose constraint lies entirely below dma_limit. */
	DMM_LOWMEM_RESERVED = 1,
};

struct dmm_region {
	dmm_phys_t base;
	uint64_t size;
};

#define DMM_MAX_CMA_AREAS 8
#define DMM_CMA_NAME_MAX 16

/* How eagerly movable allocations use the free pages of contiguous areas. */
enum dmm_cma_policy {
	/* Linux's rule: CMA first once it holds more than half the zone's free
	 * pages, otherwise only when ordinary movable memory is exhausted. */
	DMM_CMA_POLICY_HALF = 0,
	DMM_CMA_POLICY_FIRST,   /* always CMA first for movable requests */
	DMM_CMA_POLICY_LAST,    /* only when ordinary memory is exhausted */
	DMM_CMA_POLICY_NEVER,   /* never lend the areas out */
};

/* Small-object alignment policy (see slab.h). */
enum dmm_kmalloc_policy {
	DMM_KMALLOC_ALIGNED = 0,
	DMM_KMALLOC_PACKED_ON_REQUEST,
	DMM_KMALLOC_PACKED,
};

/* A contiguous memory area reserved at start-up and lent to movable pages. */
struct dmm_cma_decl {
	char name[DMM_CMA_NAME_MAX];
	uint64_t size;          /* bytes (rounded up to 2 MiB pageblocks) */
	dmm_phys_t base;        /* fixed placement, or 0 = anywhere */
	dmm_phys_t limit;       /* place entirely below this address (0 = none) */
	uint64_t align;         /* placement alignment (>= 2 MiB; 0 = 2 MiB) */
	int is_default;         /* the area devices use when they name none */
};

struct dmm_machine {
	char name[DMM_MACHINE_NAME_MAX];
	unsigned nr_ram;                          /* RAM regions, any order, no overlap */
	struct dmm_region ram[DMM_MAX_REGIONS];
	unsigned nr_reserved;                     /* firmware/kernel-reserved ranges inside RAM */
	struct dmm_region reserved[DMM_MAX_REGIONS];
	uint32_t page_size;                       /* must be 4096 */
	uint32_t cache_line;                      /* CPU cache line size, power of two */
	uint32_t dma_min_align;                   /* DMA minimum alignment (>= cache_line) */
	dmm_phys_t dma_limit;                     /* 0 = no DMA zone */
	dmm_phys_t dma32_limit;                   /* 0 = no DMA32 zone (usually 4 GiB) */
	enum dmm_lowmem_policy lowmem_policy;
	uint64_t min_free_kbytes;                 /* 0 = derive as Linux does */
	uint32_t watermark_scale_factor;          /* in 1/10000 of zone size; 0 = 10 */
	/* lowmem_reserve_ratio[z]: a lower zone z keeps managed(higher)/ratio
	 * pages from allocations that could have used a higher zone.
	 * 0 = no protection. */
	uint32_t lowmem_reserve_ratio[DMM_NR_ZONE_TYPES];
	uint32_t pcp_batch;                       /* per-CPU refill batch; 0 = auto; <= DMM_PCP_BATCH_MAX */
	uint32_t pcp_high;                        /* per-CPU high mark; 0 = auto; <= DMM_PCP_HIGH_MAX */
	unsigned nr_cma;                          /* contiguous memory areas */
	struct dmm_cma_decl cma[DMM_MAX_CMA_AREAS];
	enum dmm_cma_policy cma_policy;
	/* Long-term pins migrate a page out of a contiguous area first (as
	 * Linux does for FOLL_LONGTERM). 0 turns that protection off. */
	int longterm_pin_migrate;
	enum dmm_kmalloc_policy kmalloc_policy;
};

/* Fill @m with defaults (4 KiB pages, 64-byte lines, 4 GiB DMA32 limit,
 * Linux's lowmem_reserve ratios 256/256/32, fallback policy, no RAM). */
void dmm_machine_defaults(struct dmm_machine *m);

/*
 * Validate a description. Fails with -DMM_EINVAL if: page_size != 4096, a
 * region is empty or wraps, regions overlap, a line size or alignment is not
 * a power of two, dma32_limit < dma_limit (when both set), a zone limit is
 * not a multiple of 2 MiB (the pageblock size), no RAM page exists, RAM
 * spans more than 8 TiB,
 * the low-zone policy is unknown, pcp_batch exceeds DMM_PCP_BATCH_MAX or
 * pcp_high DMM_PCP_HIGH_MAX, a reserved range lies outside RAM, or a
 * contiguous area is malformed
 * (zero size, non-power-of-two alignment, fixed base not pageblock-aligned,
 * two default areas, unknown policy).
 */
int dmm_machine_validate(const struct dmm_machine *m);

/* Total bytes of RAM (whole pages only). */
uint64_t dmm_machine_ram_bytes(const struct dmm_machine *m);

#endif

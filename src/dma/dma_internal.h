/* SPDX-License-Identifier: MIT */
/* Private structures of the DMA layer (src/dma/). */
#ifndef DMM_DMA_INTERNAL_H
#define DMM_DMA_INTERNAL_H

#include <dmamem/dma.h>
#include <dmamem/dma_debug.h>

#include "mm/mm_internal.h"

#define DMM_DEV_NAME_MAX 32

struct tlb_pool;

/* Hot counters per CPU slot, so two CPUs mapping for one device do not
 * bounce a cache line on every map. */
#define DMM_DEV_PCPU 16
struct dmm_dev_pcpu {
	/* one cache line: only the first member carries the alignment (an
	 * _Alignas on a declarator list would align every counter) */
	_Alignas(64) uint64_t maps;
	uint64_t unmaps, map_bytes, syncs, clean_bytes, inval_bytes, flush_bytes, bounced_maps;
};

struct dmm_device {
	struct dmm_mem *mem;
	char name[DMM_DEV_NAME_MAX];
	struct dmm_device_desc desc;      /* name points at name[] */
	struct dmm_device *parent;
	uint32_t nr_children;             /* atomic */
	dmm_pfn_t self_pfn;               /* the page holding this structure */
	struct dmm_constraint lim[2];     /* effective bus limits: [0] streaming, [1] coherent */
	int debug_mode;                   /* -1 follow global, 0 off, 1 on (atomic) */
	int last_error;                   /* last failed map's reason (atomic) */
	struct dmm_dma_stats st;          /* atomic counters (cold ones) */
	struct dmm_dev_pcpu pcpu[DMM_DEV_PCPU];
	struct tlb_pool *restricted_pool; /* swiotlb.c: this device's own pool */
};

static inline struct dmm_dev_pcpu *dmm__dev_pcpu(struct dmm_device *dev)
{
	const struct dmm_platform *p = &dev->mem->plat;
	unsigned cpu = p->cpu_id ? p->cpu_id(p->ctx) : 0;
	return &dev->pcpu[cpu % DMM_DEV_PCPU];
}

static inline void dmm__dstat(uint64_t *c, uint64_t v)
{
	__atomic_fetch_add(c, v, __ATOMIC_RELAXED);
}

/* device.c / direct.c */
unsigned dmm__dev_phys_windows(const struct dmm_device *dev, const struct dmm_constraint *c,
			       struct dmm_constraint *out, unsigned max);
/* Bus address of [pa, pa + size) if the device reaches all of it. */
int dmm__dev_reach(struct dmm_device *dev, dmm_phys_t pa, uint64_t size, dmm_dma_addr_t *bus);

/* swiotlb.c */
int dmm__swiotlb_map(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir,
		     dmm_phys_t *tlb_pa);
/* The bounce pool holding @pa, or NULL. O(log pools). */
struct tlb_pool *dmm__swiotlb_pool_of(struct dmm_mem *mem, dmm_phys_t pa);
int dmm__swiotlb_ready(struct dmm_mem *mem);
int dmm__swiotlb_forced(struct dmm_mem *mem);
/* @pool: the pool of @tlb_pa if known, else NULL (looked up). */
void dmm__swiotlb_sync(struct dmm_device *dev, struct tlb_pool *pool, dmm_phys_t tlb_pa, size_t size,
		       enum dmm_dma_dir dir, int to_device);
void dmm__swiotlb_unmap(struct dmm_device *dev, struct tlb_pool *pool, dmm_phys_t tlb_pa, size_t size,
			enum dmm_dma_dir dir);

/* Mapping types tracked by DMA debug. */
enum dmm__dbg_type { DMM__DBG_SINGLE = 0, DMM__DBG_SG, DMM__DBG_COHERENT };

/* debug.c: hooks called by direct.c / device.c (cheap when debug is off). */
int dmm__dbg_on(const struct dmm_device *dev);
void dmm__dbg_map(struct dmm_device *dev, enum dmm__dbg_type type, dmm_dma_addr_t dma, dmm_phys_t pa,
		  uint64_t size, enum dmm_dma_dir dir, const void *site);
/* Returns 0 if the unmap matches a mapping (which is removed), else a rule. */
void dmm__dbg_unmap(struct dmm_device *dev, enum dmm__dbg_type type, dmm_dma_addr_t dma,
		    uint64_t size, enum dmm_dma_dir dir, const void *site);
void dmm__dbg_sync(struct dmm_device *dev, dmm_dma_addr_t dma, uint64_t size, enum dmm_dma_dir dir,
		   int for_device, const void *site);
void dmm__dbg_checked(struct dmm_device *dev, dmm_dma_addr_t dma);
/* Coherent free: 0 if it matches an allocation (removed), 1 if nothing is
 * tracked there (reported; perhaps allocated before debugging was on: the
 * caller's own checks decide), else -DMM_EINVAL / -DMM_ENOENT after
 * reporting. When debug is off, returns 0. */
int dmm__dbg_free_coherent(struct dmm_device *dev, dmm_dma_addr_t dma, uint64_t size, dmm_phys_t pa,
			   const void *cpu, const void *site);
void dmm__dbg_device_gone(struct dmm_device *dev);

/* pool.c: coherent atomic pools. alloc: -DMM_ENOTSUP if no pool serves the
 * device, -DMM_ENOMEM (pool exhausted), -DMM_EINVAL; free: 1 if @pa is not
 * pool memory, else 0 or -DMM_ENOENT / -DMM_EINVAL. poll: run a wanted
 * refill when there is no defer hook (process context only). */
int dmm__atomic_pool_alloc(struct dmm_device *dev, uint64_t pages, dmm_pfn_t *pfn);
int dmm__atomic_pool_free(struct dmm_device *dev, dmm_phys_t pa, uint64_t pages);
void dmm__atomic_pool_poll(struct dmm_mem *mem);

#endif

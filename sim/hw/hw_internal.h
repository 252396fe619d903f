/* SPDX-License-Identifier: MIT */
/*
 * Hardware model internals shared by hw.c, cache.c, dma_engine.c and iommu.c.
 *
 * Functions named *_locked expect hw->lock to be held by the caller.
 */
#ifndef DMM_SIM_HW_INTERNAL_H
#define DMM_SIM_HW_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hw.h"

/* One cached line: hash chain, LRU links, tag, dirty bit, the data. */
struct hw_line {
	struct hw_line *hnext;
	struct hw_line *lru_prev;   /* towards the most recently used end */
	struct hw_line *lru_next;   /* towards the least recently used end */
	dmm_phys_t tag;             /* line address */
	bool dirty;
	unsigned char data[];       /* hw->line bytes */
};

/* Line nodes come from chunks of this many, recycled through a free list. */
#define HW_LINES_PER_CHUNK 256u

struct hw_chunk {
	struct hw_chunk *next;
	_Alignas(16) unsigned char mem[];
};

struct hw_iommu;

/* A RAM extent (adjacent machine regions merged). */
struct hw_ram {
	dmm_phys_t start;
	dmm_phys_t end;
};

/* Sparse attribute map entry: key = pfn + 1 (0 = empty slot). */
struct hw_attr_ent {
	uint64_t key;
	uint8_t attr;
};

struct dmm_hw {
	struct dmm_platform plat;          /* the model's hooks, ctx = this */
	struct dmm_hosted *hosted;
	const struct dmm_platform *hp;     /* the hosted hooks underneath */
	struct dmm_machine m;
	struct dmm_hw_opts opts;

	unsigned nr_ram;
	struct hw_ram ram[DMM_MAX_REGIONS]; /* sorted, disjoint, not adjacent */
	uintptr_t v0;                      /* host address of p0 */
	dmm_phys_t p0;                     /* lowest RAM address */

	uint32_t line;                     /* line size, power of two */
	size_t node_size;                  /* sizeof(struct hw_line) + line, aligned */

	pthread_mutex_t lock;

	/* cache: hash of lines, LRU list, node allocator */
	struct hw_line **buckets;
	size_t nbuckets;                   /* power of two */
	unsigned bucket_shift;             /* 64 - log2(nbuckets) */
	struct hw_line *mru, *lru;
	uint64_t nr_lines, nr_dirty;
	struct hw_line *free_nodes;
	struct hw_chunk *chunks;
	uint64_t rng;

	/* non-WB pages */
	struct hw_attr_ent *attr;
	size_t attr_cap;                   /* power of two, or 0 */
	size_t attr_used;

	struct dmm_hw_stats st;

	dmm_hw_observer_fn obs;
	void *obs_ctx;

	struct dmm_hw_dev *devs;           /* registered devices */

	struct hw_iommu *iommu;            /* iommu.c; NULL = none (set once, atomically) */
};

struct dmm_hw_dev {
	struct dmm_hw *hw;
	struct dmm_hw_dev *next, *prev;
	char name[DMM_HW_DEV_NAME_MAX];
	unsigned addr_bits;
	uint64_t mask;
	bool coherent;
	unsigned nr_ranges;
	struct dmm_dma_range ranges[DMM_MAX_DMA_RANGES];
	dmm_hw_translate_fn xlate;
	void *xlate_ctx;
	/* IOMMU attachment (iommu.c): written under hw->lock and the IOMMU's
	 * lock, read under the IOMMU's lock */
	uint32_t io_domain;                /* 0 = not attached */
	bool io_identity;
	dmm_phys_t io_root;
	/* under hw->lock */
	struct dmm_hw_dev_stats st;
	struct dmm_hw_dev_event ev[DMM_HW_DEV_EVENTS];
	uint64_t ev_total;
};

/* ---- hw.c ------------------------------------------------------------------- */
bool hw_is_ram(const struct dmm_hw *hw, dmm_phys_t pa, uint64_t len);
/* Bytes of RAM contiguous from @pa (0 if @pa is not RAM). */
uint64_t hw_ram_run(const struct dmm_hw *hw, dmm_phys_t pa);
unsigned char *hw_ram_ptr(const struct dmm_hw *hw, dmm_phys_t pa);
enum dmm_memattr hw_attr_locked(const struct dmm_hw *hw, dmm_pfn_t pfn);
void hw_log(struct dmm_hw *hw, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
unsigned hw_cpu_id(struct dmm_hw *hw);
void hw_notify(struct dmm_hw *hw, const struct dmm_hw_access *a);

static inline void hw_lock(struct dmm_hw *hw)
{
	pthread_mutex_lock(&hw->lock);
}

static inline void hw_unlock(struct dmm_hw *hw)
{
	pthread_mutex_unlock(&hw->lock);
}

/* ---- cache.c ---------------------------------------------------------------- */
int hw_cache_init(struct dmm_hw *hw);
void hw_cache_fini(struct dmm_hw *hw);
struct hw_line *hw_line_find_locked(struct dmm_hw *hw, dmm_phys_t tag);
/* Lines overlapping [pa, pa + len) that are cached (for attribute changes). */
uint64_t hw_lines_cached_locked(struct dmm_hw *hw, dmm_phys_t pa, uint64_t len);
int hw_cache_check_locked(struct dmm_hw *hw);
void hw_platform_cache_hooks(struct dmm_platform *p);
/* Coherent device accesses to RAM [pa, pa + n): reads take dirty lines from
 * the cache, writes go to RAM and update cached copies. *@hits counts lines. */
void hw_snoop_read_locked(struct dmm_hw *hw, dmm_phys_t pa, unsigned char *buf, size_t n,
			  uint64_t *hits);
void hw_snoop_write_locked(struct dmm_hw *hw, dmm_phys_t pa, const unsigned char *buf, size_t n,
			   uint64_t *hits);

/* ---- dma_engine.c ----------------------------------------------------------- */
void hw_devs_destroy_all(struct dmm_hw *hw);

/* ---- iommu.c ---------------------------------------------------------------- */

/* Which pass of the engine asks for a translation (see hw.h, IOMMU). */
enum hw_xlate_pass {
	HW_XLATE_CHECK = 0,    /* pass 1 of an access: everything counted */
	HW_XLATE_PERFORM,      /* pass 2: only a fault is recorded */
	HW_XLATE_PROBE,        /* dmm_hw_dev_resolve(): nothing recorded, IOTLB untouched */
};

/* The translate hook the IOMMU installs (a direct call counts as a check). */
int hw_iommu_xlate(void *ctx, struct dmm_hw_dev *dev, dmm_dma_addr_t bus, int write,
		   dmm_phys_t *pa, uint64_t *run);
/* What the engine calls when dev->xlate is hw_iommu_xlate. */
int hw_iommu_translate(struct dmm_hw_dev *dev, dmm_dma_addr_t bus, int write,
		       enum hw_xlate_pass pass, dmm_phys_t *pa, uint64_t *run);
void hw_iommu_fini(struct dmm_hw *hw);
/* IOTLB invariants; takes the IOMMU's lock (call without hw->lock). */
int hw_iommu_check(struct dmm_hw *hw);

#endif

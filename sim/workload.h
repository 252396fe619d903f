/* SPDX-License-Identifier: MIT */
/*
 * Seeded page-allocator workloads, run against a struct dmm_mem.
 *
 * Each workload drives dmm_page_alloc()/dmm_alloc_range() and the matching
 * frees from a seeded PRNG, checks every block it receives (inside its
 * constraint, naturally aligned when it is a buddy block, every page RAM in
 * one zone and owned by nobody else, descriptors in the allocated state, a
 * GFP_ZERO block really zero) and writes a per-block pattern into the first
 * and last page that is verified when the block is freed. At the end it
 * records each zone's state, runs dmm_page_alloc_check()/dmm_range_check(),
 * frees everything and checks again. Hosted code: the bookkeeping lives in
 * host memory, not in the managed RAM.
 *
 * Workloads:
 *   mixed     orders 0..10 weighted towards small, movable / unmovable /
 *             reclaimable, some range and constrained requests below the
 *             low limits; the live set swings between 60 % and 90 % of
 *             managed memory and blocks are freed in random order.
 *   lowmem    the low-zone policy demonstration: fill memory above the low
 *             limit, then put ordinary unmovable order-0..3 pressure (with
 *             churn) on the machine so it falls back into the low zone if
 *             the policy allows, then ask for 1 MiB ranges below the limit.
 *   fragment  fill with random sizes, free half at random, then measure the
 *             largest contiguous allocations still possible.
 *   camera    contiguous memory areas under load: a page-cache-like user
 *             keeps memory nearly full of movable pages (a dmm_handles table,
 *             every page filled with a per-handle pattern, continuous churn
 *             and re-verification through dmm_handle_lock), while a
 *             camera-like user streams in sessions: it allocates a queue of
 *             large frames from a contiguous area (dmm_cma_alloc, migrating
 *             the lent pages out), writes and verifies them, releases them.
 *             Optionally an RDMA-like user holds long-term pins on a share
 *             of the page cache (pin_pct). One thread, deterministic
 *             (default), or two (page cache + pins | camera). At the end
 *             every handle's contents are verified, pins dropped, and the
 *             page, range, area and handle-table checks run.
 *   dma       what an IOMMU buys a 32-bit device: a NIC-like 32-bit device
 *             (packet buffers of 64..1500 bytes from dmm_kmalloc or the page
 *             allocator, wherever memory is, plus 64 KiB coherent rings) and
 *             a 64-bit storage-like device (scatterlists of 8..64 pages),
 *             each run direct (bounce buffers) and/or behind the IOMMU with
 *             the same seeded operations. Every transfer moves real bytes
 *             through the hardware model and is verified. Needs a machine
 *             built on the model: dmm_workload_run_dma().
 */
#ifndef DMM_SIM_WORKLOAD_H
#define DMM_SIM_WORKLOAD_H

#include <stdint.h>

#include <dmamem/cma.h>
#include <dmamem/dma.h>
#include <dmamem/error.h>
#include <dmamem/machine.h>
#include <dmamem/migrate.h>
#include <dmamem/mem.h>
#include <dmamem/page_alloc.h>

struct dmm_workload_opts {
	uint64_t seed;        /* PRNG seed; one thread + one seed = one exact sequence */
	uint64_t ops;         /* operation budget; 0 = the workload's default for the machine */
	unsigned threads;     /* mixed only: threads sharing the budget (0 or 1 = caller's) */
	uint64_t check_every; /* also run both checks every N operations (0 = only at the end) */
	unsigned requests;    /* lowmem: 1 MiB range requests (0 = default) */
	/* camera */
	const char *cma_area; /* area the camera allocates from (NULL = the default area) */
	uint64_t frames;      /* contiguous allocations to make (0 = 32) */
	uint64_t frame_bytes; /* frame size (0 = area / 8, within 8..32 MiB and area / queue) */
	unsigned queue;       /* frames held at once in a streaming session (0 = 4) */
	uint64_t churn;       /* page-cache operations before each camera step (0 = 256) */
	uint64_t cache_bytes; /* page-cache size (0 = 4 x the areas, at least 256 MiB;
				 UINT64_MAX = all the room of the zones holding an area) */
	double pin_pct;       /* % of the page cache held long-term pinned (0 = no pinning) */
	int uncached;         /* frames remapped uncached: 1 yes, 0 no, -1 auto (non-coherent
				 machines, i.e. dma_min_align > cache_line) */
	/* dma */
	int iommu;            /* enum dmm_workload_iommu: which variants run (0 = both) */
	int iommu_flush;      /* enum dmm_iommu_flush of the IOMMU variant (0 = strict) */
	int iova_align;       /* enum dmm_iova_align of the IOMMU variant (0 = pow2) */
};

/* dmm_workload_opts.iommu */
enum dmm_workload_iommu {
	DMM_WL_IOMMU_BOTH = 0, /* direct first, then behind the IOMMU, same seed */
	DMM_WL_IOMMU_OFF,      /* direct only (bounce buffers) */
	DMM_WL_IOMMU_ON,       /* behind the IOMMU only */
};

/* Defaults: seed 1, everything else automatic. */
void dmm_workload_opts_init(struct dmm_workload_opts *o);

struct dmm_workload_lowmem {
	int low_zone;               /* enum dmm_zone_type of the zone below the limit */
	dmm_phys_t limit;           /* requests are below this address */
	uint64_t prefill_pages;     /* pages taken above the limit to exhaust higher zones */
	uint64_t pressure_blocks;   /* ordinary order-0..3 blocks held at request time */
	uint64_t pressure_pages;
	uint64_t low_zone_taken;    /* of those, pages inside the low zone */
	uint64_t low_zone_free;     /* low zone's free pages just before the requests */
	uint64_t low_zone_managed;
	unsigned requests;          /* 1 MiB range requests made */
	unsigned requests_ok;
	int first_error;            /* first failed request's code (0 = none failed) */
};

struct dmm_workload_fragment {
	uint64_t fill_pages;        /* live pages when the fill stopped */
	uint64_t held_pages;        /* live pages after freeing half the blocks */
	uint64_t free_pages;        /* buddy-free pages at measurement */
	uint64_t largest_range;     /* longest range allocatable anywhere (pages) */
	uint64_t largest_range_zone[DMM_NR_ZONE_TYPES]; /* ... inside each zone (by zone index) */
	uint64_t order_blocks[DMM_NR_ORDERS]; /* blocks of each order obtainable (9 and 10 measured) */
};

struct dmm_workload_camera {
	int area;                   /* index of the camera's area */
	uint64_t frame_pages;       /* pages per frame */
	uint64_t frame_align;       /* bytes */
	unsigned queue;             /* frames per session */
	uint64_t sessions;
	uint64_t frames;            /* allocations attempted by the camera */
	int uncached;               /* frames were allocated DMM_CMA_UNCACHED */
	uint64_t churn_per_step;
	/* the page cache */
	unsigned nr_scope_zones;    /* zones holding an area: the page cache fills them */
	uint64_t ballast_pages;     /* taken up front outside the page cache's room (untouched) */
	uint64_t target_handles;    /* page-cache level kept by the churn */
	uint64_t fill_handles;      /* level reached by the initial fill */
	uint64_t handles_peak, handles_end;
	uint64_t handle_allocs, handle_allocs_ok, handle_frees; /* the whole run: fill,
				       churn, reclaim for the camera, regrowth */
	uint64_t churn_ops;         /* page-cache operations (free and/or allocate) */
	uint64_t churn_allocs, churn_allocs_ok, churn_frees; /* ... made by those operations */
	uint64_t samples;           /* pages re-verified during the run (every 4th churn
				       operation, and every page before it is freed) */
	uint64_t sample_errors;     /* of those, with a damaged pattern */
	uint64_t final_verified;    /* every handle at the end */
	uint64_t final_errors;
	uint64_t handles_migrated;  /* dmm_handles_get_stats() */
	uint64_t handles_refused_locked;
	uint64_t lent_after_fill;   /* pages of the camera's area lent to movable pages */
	uint64_t lent_end;          /* ... when the operations ended */
	/* the camera */
	uint64_t cma_tried, cma_ok;
	uint64_t cma_fail[DMM_NR_CMA_FAILS];
	uint64_t frame_writes, frame_checks, frame_errors; /* whole-frame pattern passes */
	uint64_t frame_outside;     /* a frame outside its area or misaligned */
	/* long-term pins */
	double pin_pct;
	int longterm_pin_migrate;   /* the machine's setting during the run */
	uint64_t pins_wanted;       /* pin requests (initial set + turnover) */
	uint64_t pins_taken, pins_failed, pins_retried;
	uint64_t pin_fail[DMM_NR_MIGRATE_REASONS];
	uint64_t pins_held_end;     /* pinned pages when the operations ended */
	uint64_t pins_in_areas_end; /* ... of them inside a contiguous area */
	uint64_t unpins, unpin_errors;
	uint64_t pinned_moved;      /* a pinned page found at another pfn: always a bug */
	struct dmm_migrate_stats mig; /* migration over the run (dmm_migrate_get_stats delta) */
	int handles_check_end;      /* dmm_handles_check() with everything held */
};

#define DMM_WL_DMA_DEVICES 2    /* devices of the dma workload (per variant) */
#define DMM_WL_DMA_MAX (2 * DMM_WL_DMA_DEVICES)

/* One device of one variant of the dma workload. */
struct dmm_workload_dma_dev {
	char name[32];
	unsigned mask_bits;         /* streaming and coherent mask */
	int iommu;                  /* 0 direct, 1 behind the IOMMU (DMM_IOMMU_DMA) */
	int coherent;
	unsigned depth;             /* transfers in flight at most */
	uint64_t transfers;         /* buffers (NIC) or requests (storage) the workload started */
	uint64_t completed;         /* ... that were mapped, moved and unmapped */
	uint64_t maps;              /* successful map calls (single buffers and scatterlists) */
	uint64_t sg_maps;           /* of which scatterlists */
	uint64_t sg_entries;        /* pieces in those lists */
	uint64_t sg_segments;       /* DMA segments they were mapped to */
	uint64_t bounced_maps;      /* dmm_dma_stats.bounced_maps */
	uint64_t bytes_moved;       /* payload bytes the device read or wrote */
	uint64_t map_failed;        /* failed map calls (results, not errors) */
	uint64_t map_fail[DMM__NR_ERRORS];   /* ... by error code (index = -code) */
	uint64_t alloc_failed;      /* buffers the workload could not allocate */
	/* memory below 4 GiB (dmm_dma_stats) */
	uint64_t low_now_bytes;     /* low_pages * page + low_bounce_bytes when the operations ended */
	uint64_t low_peak_bytes;    /* low_peak_bytes over the variant */
	uint64_t coherent_low_pages;/* low_pages (coherent buffers below 4 GiB) when the operations ended */
	uint64_t coherent_bytes;    /* coherent buffers held for the whole run */
	/* errors */
	uint64_t data_errors;       /* a transfer (or descriptor) whose bytes came out wrong */
	uint64_t faults;            /* device accesses the model refused */
	uint64_t mask_violations;   /* a bus address (end) beyond the device's mask */
	/* behind the IOMMU (dmm_device_iommu_stats; IOTLB figures from the model,
	 * counted around this device's accesses) */
	uint64_t iova_allocs, iova_cache_hits;
	uint64_t iova_ranges;       /* IOVA ranges in the tree when the operations ended */
	uint64_t iova_tree_depth;   /* ... and the tree's height */
	uint64_t iova_largest_free; /* largest free IOVA gap then (pages) */
	uint64_t invalidations;     /* IOTLB invalidation requests */
	uint64_t fq_flushes, fq_timeouts;
	uint64_t pt_tables_end;    /* IO page-table pages when the operations ended */
	uint64_t iotlb_hits, iotlb_misses, iotlb_stale, iommu_faults;
	int iommu_check_end;        /* dmm_device_iommu_check() with the mappings live */
	int iommu_check_final;      /* ... after everything was unmapped */
};

struct dmm_workload_dma {
	int iommu;                  /* enum dmm_workload_iommu */
	int flush;                  /* enum dmm_iommu_flush */
	int iova_align;             /* enum dmm_iova_align */
	int coherent;               /* devices snoop (0 on machines with dma_min_align > cache_line) */
	uint64_t ops;               /* transfers per variant */
	unsigned nr_variants;       /* 1 or 2 */
	int variant_iommu[2];       /* 0 direct, 1 IOMMU, in the order they ran */
	uint64_t variant_ns[2];     /* elapsed time of each variant's operations */
	unsigned nr_devs;           /* nr_variants x DMM_WL_DMA_DEVICES, grouped by device:
				       dev[d * nr_variants + v] */
	struct dmm_workload_dma_dev dev[DMM_WL_DMA_MAX];
	/* bounce buffers (machine-wide; set up when the direct variant runs) */
	int swiotlb;                /* set up */
	uint64_t swiotlb_bytes;     /* pool bytes at the end (the default pools lie
				       below dma32_limit) */
	uint64_t swiotlb_pools;
	uint64_t swiotlb_high_water_slots, swiotlb_slot_size;
	uint64_t swiotlb_bounced_to_device, swiotlb_bounced_from_device;
	uint64_t swiotlb_fail_full;
	int swiotlb_check;          /* dmm_swiotlb_check() at the end */
	/* the small-object allocator keeps slabs and per-CPU magazines: the
	 * pages they held before and after the run, and live objects */
	uint64_t slab_pages_start, slab_pages_end;
	uint64_t kmalloc_live_start, kmalloc_live_end;
	int slab_check;             /* dmm_slab_check() at the end */
	int hw_check;               /* dmm_hw_check() at the end */
	uint64_t hw_dirty_discarded;/* the model's dirty lines dropped by an invalidate */
	uint64_t data_errors, faults, mask_violations, iotlb_stale; /* totals */
};

struct dmm_workload_result {
	const char *workload;       /* static name */
	uint64_t seed;
	unsigned threads;
	uint64_t ops;               /* allocation and free calls made (teardown excluded) */
	uint64_t page_allocs;       /* dmm_page_alloc() calls */
	uint64_t page_allocs_ok;
	uint64_t range_allocs;      /* dmm_alloc_range() calls */
	uint64_t range_allocs_ok;
	uint64_t frees_ok;          /* frees during the operations */
	uint64_t teardown_frees;    /* frees of what was still held at the end */
	uint64_t alloc_fail[DMM__NR_ERRORS]; /* failed allocations by error code (index = -code) */
	uint64_t free_fail[DMM__NR_ERRORS];  /* rejected frees by error code: always a bug */
	uint64_t constraint_violations; /* block outside its constraint or not naturally aligned */
	uint64_t descriptor_errors; /* a page of a block not RAM, not in the allocated state, or in another zone */
	uint64_t overlaps;          /* a page handed out while already held */
	uint64_t corruptions;       /* pattern damaged at free, or GFP_ZERO memory not zero */
	uint64_t peak_live_pages;
	uint64_t end_live_pages;    /* live pages when the operations ended */
	uint64_t managed_pages;     /* sum of the zones' managed pages */
	uint64_t start_free_pages;  /* buddy-free pages before the run (caches drained) */
	uint64_t final_free_pages;  /* ... after everything was freed (caches drained) */
	uint64_t elapsed_ns;        /* the operations, without the final teardown */
	uint64_t teardown_ns;
	uint64_t checks_run;        /* periodic checks (check_every) */
	uint64_t checks_failed;
	int page_check_end;         /* dmm_page_alloc_check() with the live set held */
	int range_check_end;        /* dmm_range_check() with the live set held */
	int page_check_final;       /* ... after everything was freed */
	int range_check_final;
	int cma_check_end;          /* dmm_cma_check() with the live set held */
	int cma_check_final;        /* ... after everything was freed */
	unsigned nr_zones;
	struct dmm_zone_info zone[DMM_NR_ZONE_TYPES]; /* when the operations ended */
	unsigned nr_cma;
	struct dmm_cma_info cma[DMM_MAX_CMA_AREAS];   /* when the operations ended (statistics
							 are cumulative; name points into the
							 memory map, valid while it lives) */
	int cma_zone[DMM_MAX_CMA_AREAS];              /* index into zone[] of each area */
	struct dmm_workload_camera camera;
	struct dmm_workload_lowmem lowmem;
	struct dmm_workload_fragment fragment;
	struct dmm_workload_dma dma;
};

/* NULL-terminated list of workload names, default first. */
const char *const *dmm_workload_names(void);

/* One-line description of @name, or NULL if there is no such workload. */
const char *dmm_workload_describe(const char *name);

/*
 * dmm_workload_run() - run workload @name (NULL = "mixed") on @mem.
 *
 * @mem should be otherwise idle: the run assumes it is the only user, so
 * that the final free-page count can be compared with the starting one.
 * *@r is filled in whenever the run happened, even if it found errors;
 * use dmm_workload_result_ok() to judge it.
 *
 * "dma" needs the hardware model: use dmm_workload_run_dma() (-DMM_ENOTSUP here).
 *
 * Fails with -DMM_EINVAL (NULL @mem, @o or @r, unknown workload, threads >
 * 64, a camera option out of range), -DMM_ENOTSUP (threads > 1 for a
 * workload other than mixed, threads > 2 for camera; lowmem on a machine
 * without a low zone below a higher one; camera on a machine without a
 * contiguous area), -DMM_ENOENT (camera: no area called @o->cma_area),
 * -DMM_ENOMEM (host memory for the bookkeeping, or no memory for the
 * handle table), -DMM_EAGAIN (a thread could not start).
 * Context: process context; creates threads when @o->threads > 1.
 */
int dmm_workload_run(struct dmm_mem *mem, const char *name, const struct dmm_workload_opts *o,
		     struct dmm_workload_result *r);

/* 1 if workload @name needs a machine built on the hardware model
 * (dmm_hw_mem_create) and dmm_workload_run_dma(): "dma". */
int dmm_workload_needs_hw(const char *name);

struct dmm_hw;

/*
 * dmm_workload_run_dma() - the "dma" workload on @mem built on model @hw
 * (dmm_hw_mem_create). Sets up bounce buffers (dmm_swiotlb_init with
 * defaults, once) when the direct variant runs and enables the model's
 * IOMMU (defaults) when the IOMMU variant does. Variants run one after the
 * other on the same machine with the same seed; each creates its devices,
 * runs o->ops transfers (0 = 20000), drains and destroys them. One thread.
 * @mem should be otherwise idle. Fails with -DMM_EINVAL (NULL, threads > 1,
 * an option out of range), -DMM_ENOMEM (host memory) or the error of a
 * device creation or of the bounce-buffer set-up; *@r is filled in whenever
 * the run happened.
 */
int dmm_workload_run_dma(struct dmm_hw *hw, struct dmm_mem *mem, const struct dmm_workload_opts *o,
			 struct dmm_workload_result *r);

/*
 * 1 if @r shows no error: no constraint violation, descriptor error,
 * overlap, corruption or rejected free, every check passed and every page
 * came back (final_free_pages == start_free_pages); for camera also no
 * damaged page or frame, no frame outside its area, no pinned page that
 * moved, no failed unpin and a clean handle-table check; for dma no data
 * error, device fault, bus address beyond a mask or stale IOTLB hit, every
 * IOMMU, swiotlb, slab and model check clean, no kmalloc object left, and
 * every page back except those the slab caches kept (final free pages +
 * slab pages gained == start free pages).
 */
int dmm_workload_result_ok(const struct dmm_workload_result *r);

#endif

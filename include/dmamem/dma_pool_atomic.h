/* SPDX-License-Identifier: MIT */
/*
 * Coherent atomic pools: already-uncached memory for coherent allocations
 * that cannot sleep.
 *
 * A coherent buffer for a non-coherent device must be flushed out of the CPU
 * caches and have its linear mapping made uncached; changing a memory
 * attribute may sleep (page-table splits, TLB shootdowns), so a caller that
 * cannot sleep (DMM_GFP_ATOMIC) needs memory that was remapped beforehand.
 * These pools hold such memory, one per physical constraint the machine
 * distinguishes:
 *
 *   DMM_ATOMIC_POOL_DMA    below dma_limit    (if RAM lies below and above it)
 *   DMM_ATOMIC_POOL_DMA32  below dma32_limit  (if RAM lies below and above it)
 *   DMM_ATOMIC_POOL_ANY    anywhere           (always)
 *
 * A pool that would hold the same memory as a wider one is not created.
 * dmm_dma_alloc_coherent(dev, ..., DMM_GFP_ATOMIC) for a non-coherent device
 * takes from the least restricted pool whose whole span lies inside one of
 * the device's physical windows (a 30-bit device on a Raspberry Pi 4 uses
 * the DMA pool, a 32-bit device on a PC the DMA32 pool, a 64-bit device the
 * ANY pool). Pools are not fallbacks for each other: when that pool is
 * empty the request fails rather than drain a narrower pool, which belongs
 * to the devices that need it. dmm_dma_free_coherent() recognises pool memory by
 * an address lookup over the pools' chunks (O(log chunks), lock-free) and
 * gives it back to its pool.
 *
 * A pool is a set of chunks (power-of-two page counts, aligned to their
 * size, from the range allocator) and a buddy allocator over them: an
 * allocation is a power-of-two page count aligned to its size, like the page
 * allocator's, found in O(orders) without sleeping. The pool's bookkeeping
 * lives in separate pages, never in the device-visible memory.
 *
 * Growth. When an allocation leaves a pool's free bytes below its threshold
 * (or finds it exhausted), one background refill is queued through the
 * platform's defer hook; it adds chunks (range allocator, flushed, remapped
 * uncached) until the pool is above the threshold again or at its maximum.
 * The atomic path never allocates pages, maintains caches or changes memory
 * attributes. Without a defer hook nothing grows in the background: a
 * wanted refill then runs synchronously in the next non-atomic call of
 * dmm_dma_alloc_coherent() or dmm_dma_atomic_pool_refill(), never on the
 * atomic path.
 */
#ifndef DMAMEM_DMA_POOL_ATOMIC_H
#define DMAMEM_DMA_POOL_ATOMIC_H

#include <stdint.h>

#include "constraint.h"
#include "mem.h"

enum dmm_atomic_pool_kind {
	DMM_ATOMIC_POOL_DMA = 0,
	DMM_ATOMIC_POOL_DMA32,
	DMM_ATOMIC_POOL_ANY,
	DMM_NR_ATOMIC_POOLS
};

/* dmm_atomic_pool_cfg.initial: do not create this pool. */
#define DMM_ATOMIC_POOL_NONE UINT64_MAX

/* Largest chunk (and so largest allocation): 2^16 pages, 256 MiB. */
#define DMM_ATOMIC_POOL_MAX_ORDER 16
/* Chunks per pool. */
#define DMM_ATOMIC_POOL_MAX_CHUNKS 64

/* Sizes in bytes; 0 = default. Every size is rounded up to whole pages
 * (initial and step further to a power of two of pages) before it is used
 * or compared, so sizes that are in order in bytes are in order in pages. */
struct dmm_atomic_pool_cfg {
	/* Initial size, rounded up to a power-of-two number of pages (one
	 * chunk). Default: Linux's atomic_pool_size (128 KiB per GiB of RAM,
	 * at least 128 KiB, at most 4 MiB, rounded up to a power of two as
	 * Linux's get_order() does) but at most 1/32 of the RAM below the
	 * pool's limit (rounded down to a power of two pages).
	 * DMM_ATOMIC_POOL_NONE: no pool. */
	uint64_t initial;
	/* Queue a refill when free bytes drop below this (rounded up to
	 * pages: free pages below that many). Default: half the initial
	 * size. */
	uint64_t threshold;
	/* Bytes one refill chunk adds (rounded up to a power of two pages; a
	 * refill after a failed larger request adds at least that much).
	 * Default: the initial size. */
	uint64_t step;
	/* The pool never grows beyond this, rounded up to pages (a value in
	 * the last page below 2^64 to that page's start). Default: 16 x
	 * initial, but at most 1/8 of the RAM below the pool's limit (never
	 * below initial). */
	uint64_t max;
};

struct dmm_atomic_pool_opts {
	struct dmm_atomic_pool_cfg pool[DMM_NR_ATOMIC_POOLS];
};

/*
 * Create the pools the machine has (@o NULL = every default) and fill each
 * with its initial chunk. Process context (allocates, flushes, remaps).
 * Fails with -DMM_EINVAL (bad options: threshold or initial above max,
 * initial or step above the largest chunk; sizes are compared in bytes
 * rounded up to pages, so none near 2^64 wraps to a small one),
 * -DMM_EEXIST (already initialised), or
 * the allocator's / set_memattr's error for the initial chunks (nothing is
 * left allocated then).
 */
int dmm_dma_atomic_pool_init(struct dmm_mem *mem, const struct dmm_atomic_pool_opts *o);

/*
 * Give every chunk back (attribute restored to write-back) and forget the
 * pools. Waits for queued refills (defer_flush). -DMM_EBUSY (nothing
 * changed) if a pool still has allocations, or a background refill that
 * has not run yet (a platform without defer_flush cannot wait for it: call
 * again once it has); -DMM_ENOENT if never
 * initialised. Chunks are dmamem's own memory, which refuses every pin
 * (dmm_page_pin: -DMM_EPERM), so no pin can hold one back. Must not race
 * with allocations.
 */
int dmm_dma_atomic_pool_destroy(struct dmm_mem *mem);

/*
 * Run the refill every pool below its threshold wants, now, on the calling
 * thread (process context). For embedders without a defer hook, and for
 * tests. Returns the number of chunks added, or -DMM_ENOENT.
 */
int dmm_dma_atomic_pool_refill(struct dmm_mem *mem);

struct dmm_atomic_pool_stats {
	int present;                /* the machine has this pool */
	int background;             /* refills run in the background (defer hook present) */
	dmm_phys_t limit;           /* chunks lie below this address (DMM_PHYS_MAX: anywhere) */
	uint64_t size;              /* bytes in the pool (every chunk) */
	uint64_t free;              /* bytes free */
	uint64_t high_water;        /* most bytes in use at once */
	uint64_t threshold, step, max; /* effective configuration, bytes */
	uint32_t chunks;
	uint64_t allocs, frees;
	uint64_t failures;          /* atomic requests the pool could not serve (-DMM_ENOMEM) */
	uint64_t refills_queued;    /* background refills handed to the defer hook */
	uint64_t refills_done;      /* refills that ran (background or synchronous) */
	uint64_t refills_sync;      /* ... of which ran synchronously (no defer hook) */
	uint64_t grow_failures;     /* chunks a refill could not add (no memory, remap failed, full) */
	uint64_t bytes_remapped;    /* bytes flushed and made uncached for the pool */
};

/* Statistics of one pool (present = 0 for a pool the machine lacks).
 * -DMM_EINVAL, -DMM_ENOENT (not initialised). */
int dmm_dma_atomic_pool_get_stats(struct dmm_mem *mem, enum dmm_atomic_pool_kind k,
				  struct dmm_atomic_pool_stats *st);

const char *dmm_atomic_pool_name(enum dmm_atomic_pool_kind k);

/*
 * Walk every invariant: free lists well linked, each free block a free head
 * of its order, aligned, inside its chunk, no two free buddies left
 * unmerged, every chunk page covered by exactly one block, counts agree,
 * every chunk below its pool's limit, a range allocation of its size and in
 * the address index exactly once, the index sorted without overlap.
 * Returns 0 (also when never initialised) or -DMM_EFAULT (and logs).
 */
int dmm_dma_atomic_pool_check(struct dmm_mem *mem);

#endif

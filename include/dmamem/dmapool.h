/* SPDX-License-Identifier: MIT */
/*
 * Small-block DMA pools (descriptor rings, command blocks, status words):
 * fixed-size blocks carved from coherent buffers of one device, in the
 * manner of Linux's dmapool.
 *
 * Every block is aligned to the pool's alignment and never crosses the
 * pool's boundary, both in bus addresses. The pool's bookkeeping (which
 * blocks are free) lives in memory from the page allocator, never in the
 * coherent buffers, so a device writing outside its blocks cannot corrupt
 * the allocator. Allocation and free are O(1) on the common path (a block
 * from a chunk with free blocks; finding a block's chunk is one hash
 * probe). One lock per pool.
 */
#ifndef DMAMEM_DMAPOOL_H
#define DMAMEM_DMAPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "dma.h"

#define DMM_DMA_POOL_NAME_MAX 32

struct dmm_dma_pool;

struct dmm_dma_pool_stats {
	char name[DMM_DMA_POOL_NAME_MAX];
	uint64_t size;             /* requested block size */
	uint64_t stride;           /* distance between blocks (size rounded up to the alignment) */
	uint64_t align, boundary;  /* as created (align 0 became 8) */
	uint64_t chunk_bytes;      /* bytes of one chunk (power of two, >= one page) */
	uint64_t blocks_per_chunk;
	uint64_t chunks;           /* coherent buffers held */
	uint64_t pages;            /* pages of those buffers (including alignment slack) */
	uint64_t blocks_total;     /* chunks x blocks_per_chunk */
	uint64_t in_use;           /* blocks allocated now */
	uint64_t high_water;       /* most blocks ever allocated at once */
	uint64_t allocs, frees;
	uint64_t fail_nomem;       /* allocations that needed a chunk and could not get one */
	uint64_t fail_atomic;      /* of those, atomic requests refused by the coherent allocator */
	uint64_t fail_invalid;     /* rejected frees and arguments */
	uint64_t misaligned_chunks; /* chunks that had to be over-allocated to be aligned */
	uint64_t meta_bytes;       /* page-allocator memory holding the pool's own bookkeeping */
};

/*
 * Create a pool of @size-byte blocks for @dev. @align: power of two >= 8
 * (0 = 8); @boundary: 0 (none) or a power of two >= @size that no block
 * crosses (in bus addresses). @name is copied (up to 31 characters).
 * Nothing is allocated from the device until the first block is asked for.
 * Fails with -DMM_EINVAL (bad arguments, @dev a bus, blocks larger than
 * 4 MiB, a block stride (@size rounded up to @align) larger than the
 * device's coherent segment boundary, or a device whose coherent segment
 * boundary is below a page: it gets no coherent buffer at all) or the
 * page allocator's error for
 * the pool's own page. Chunks never exceed that device boundary, so with a
 * small one they hold fewer blocks.
 */
int dmm_dma_pool_create(struct dmm_device *dev, const char *name, size_t size, size_t align,
			size_t boundary, struct dmm_dma_pool **out);

/*
 * Allocate one block: *@cpu gets its CPU address, *@dma its bus address.
 * @gfp: DMM_GFP_ZERO (zero the block), DMM_GFP_ATOMIC (cannot sleep). A
 * free block is always served, atomic or not; when the pool must grow, the
 * error of dmm_dma_alloc_coherent() is returned (for instance -DMM_ENOTSUP
 * for an atomic request on a non-coherent device without an atomic pool),
 * or -DMM_ENOSPC if the pool's bookkeeping cannot grow. -DMM_EINVAL for
 * bad arguments. Nothing changes on failure.
 */
int dmm_dma_pool_alloc(struct dmm_dma_pool *pool, unsigned gfp, void **cpu, dmm_dma_addr_t *dma);

/*
 * Give a block back. -DMM_ENOENT: @dma is in none of the pool's chunks, or
 * the block is already free; -DMM_EINVAL: @dma is not at a block's start,
 * or @cpu is not the block's CPU address. Nothing changes on failure.
 * Chunks are kept until the pool is destroyed.
 */
int dmm_dma_pool_free(struct dmm_dma_pool *pool, void *cpu, dmm_dma_addr_t dma);

/*
 * Destroy the pool and give every chunk back to the device. -DMM_EBUSY if
 * blocks are still allocated (they are logged; nothing is freed, the pool
 * stays usable), or if the device refuses a chunk's coherent free (a page
 * of it is pinned: the other chunks are given back, the refused ones stay
 * and the pool stays usable with them; destroy it again after the unpin);
 * -DMM_EINVAL for NULL. Destroy a device's pools before the device.
 */
int dmm_dma_pool_destroy(struct dmm_dma_pool *pool);

/*
 * Walk the pool's invariants: every chunk aligned and reachable through its
 * bus address, its CPU and bus addresses naming the same memory page by
 * page (also for a chunk mapped page by page behind an IOMMU; this needs
 * the platform's virt_to_phys for CPU addresses outside the linear map),
 * free bitmaps within bounds, free counts, the list of chunks
 * with free blocks, the address index finding every chunk, the totals.
 * Returns 0 or -DMM_EFAULT (and logs what failed).
 */
int dmm_dma_pool_check(struct dmm_dma_pool *pool);

int dmm_dma_pool_get_stats(struct dmm_dma_pool *pool, struct dmm_dma_pool_stats *st);
const char *dmm_dma_pool_name(const struct dmm_dma_pool *pool);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * classic_dmapool: the baseline of bench_dmapool. A rebuild of the design of
 * Linux's mm/dmapool.c since 6.3, written for this benchmark:
 *
 *  - chunks ("pages") of one device's coherent memory, each described by a
 *    small header in ordinary memory (Linux: struct dma_page, kmalloc'ed):
 *    list link, CPU address, bus address;
 *  - a block is at least 16 bytes (it must hold the free-list entry),
 *    rounded up to the alignment; blocks are laid out in address order and
 *    never cross the boundary (a block that would is skipped to the next
 *    boundary);
 *  - the free blocks form one pool-wide singly linked list threaded through
 *    the blocks themselves: the first 16 bytes of a free block hold the next
 *    free block's CPU address and the block's own bus address (Linux:
 *    struct dma_block). Allocation pops the head, free pushes the block:
 *    O(1), no search, no validation of the freed address (Linux checks
 *    only with DMAPOOL_DEBUG);
 *  - one lock per pool (a ticket spinlock, as dmamem's hosted lock and
 *    Linux's spinlock); a new chunk is allocated with the lock dropped.
 *
 * The bookkeeping lives in the blocks, so it costs almost no memory, but a
 * device that writes past its block into a free neighbour rewrites the free
 * list: the next allocations hand out whatever address the device wrote.
 * dmamem keeps its free bitmaps in page-allocator memory instead; the
 * benchmark measures both sides of that trade.
 *
 * Chunks come from dmm_dma_alloc_coherent() on the same device as dmamem's
 * pool and have the size the bench passes (dmamem's chunk size for the same
 * geometry), so both designs hold the same memory but for the 16-byte
 * minimum block. Hosted code, not part of the library. Thread-safe (one lock).
 */
#ifndef DMM_BENCH_CLASSIC_DMAPOOL_H
#define DMM_BENCH_CLASSIC_DMAPOOL_H

#include <stddef.h>
#include <stdint.h>

#include <dmamem/dma.h>

struct classic_dma_pool;

/* A pool of @size-byte blocks aligned to @align (a power of two), none
 * crossing @boundary (0: the chunk), in chunks of @chunk_bytes (a power of
 * two at least the stride). 0 or -1. */
int classic_dma_pool_create(struct dmm_device *dev, size_t size, size_t align, size_t boundary, size_t chunk_bytes,
			    struct classic_dma_pool **out);

/* One block (zeroed if @zero); NULL if no chunk could be had. */
void *classic_dma_pool_alloc(struct classic_dma_pool *pool, int zero, dmm_dma_addr_t *dma);

void classic_dma_pool_free(struct classic_dma_pool *pool, void *cpu, dmm_dma_addr_t dma);

/* Gives every chunk back. -1 if blocks are still allocated (nothing freed). */
int classic_dma_pool_destroy(struct classic_dma_pool *pool);

/* The benchmark's probe (not part of the design): would the next allocation
 * hand out one of the pool's blocks (its bus address may still be wrong)?
 * Walks the chunk headers; never dereferences the free-list head. */
int classic_dma_pool_head_ok(struct classic_dma_pool *pool);

/* The benchmark's probe: 1 if @cpu is a block's start in one of the pool's
 * chunks, with its true bus address in *@dma; else 0. */
int classic_dma_pool_block_dma(struct classic_dma_pool *pool, const void *cpu, dmm_dma_addr_t *dma);

struct classic_dma_pool_stats {
	uint64_t stride;       /* distance between blocks */
	uint64_t chunks, pages, blocks_total, in_use;
	uint64_t meta_bytes;   /* the pool and its chunk headers (ordinary memory) */
};

void classic_dma_pool_get_stats(struct classic_dma_pool *pool, struct classic_dma_pool_stats *st);

#endif

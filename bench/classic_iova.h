/* SPDX-License-Identifier: MIT */
/*
 * classic_iova: the baseline of bench_iova. A rebuild of the classic Linux
 * IOVA allocator (drivers/iommu/iova.c of the red-black tree era), written
 * for this benchmark:
 *
 *  - a red-black tree (libbsd's <bsd/sys/tree.h> macros) of the allocated
 *    ranges [pfn_lo, pfn_hi], plus an anchor node at pfn ~0 so the walk
 *    always has a node above the limit;
 *  - top-down allocation below a limit: start at a cached node
 *    (cached32_node for requests limited to the 32-bit boundary, cached_node
 *    for the others), walk rb_prev while the gap below the current node is
 *    too small; the candidate start is (high - size) rounded down to the
 *    alignment (size-aligned requests: the power of two >= size);
 *  - if that walk reaches the bottom, one retry from the node at the limit
 *    down to just above the cached node (the part the first walk skipped);
 *  - cached nodes updated on alloc (the new node) and on free (a free of the
 *    cached node, or of a range at or above it, moves it to the next node);
 *  - max32_alloc_size: the smallest size whose search failed; requests
 *    limited to 32 bits of that size or larger fail at once, until a free
 *    below the 32-bit boundary resets it;
 *  - one lock for everything (a pthread mutex; Linux has a spinlock).
 *
 * Not rebuilt: the per-CPU range caches (rcache) and the flush queue; this
 * is the slow path (the tree) only. Node memory is malloc()ed (Linux: a
 * kmem_cache), outside the lock as in Linux. Pages are 4 KiB.
 *
 * Hosted code, not part of the library. Thread-safe (one lock).
 */
#ifndef DMM_BENCH_CLASSIC_IOVA_H
#define DMM_BENCH_CLASSIC_IOVA_H

#include <stddef.h>
#include <stdint.h>

struct classic_iova_domain;

/* A domain whose lowest usable pfn is @start_pfn (>= 1) and whose 32-bit
 * boundary is @dma_32bit_pfn (Linux: 1 << (32 - PAGE_SHIFT), i.e. 1 << 20;
 * the self-test uses a smaller one). 0, or -1 (no memory). */
int classic_iova_domain_create(uint64_t start_pfn, uint64_t dma_32bit_pfn,
			       struct classic_iova_domain **out);
/* Frees the domain and every range still allocated. */
void classic_iova_domain_destroy(struct classic_iova_domain *d);

/*
 * Linux's alloc_iova(): @size pages ending at or below @limit_pfn
 * (inclusive). @size_aligned: aligned to the power of two >= @size (the
 * size itself is not rounded: callers wanting Linux's cached sizes round
 * first with classic_iova_roundup_pow2()). 0 and *@pfn, or -1 (no space,
 * size 0, or no memory for the node).
 */
int classic_iova_alloc(struct classic_iova_domain *d, uint64_t size, uint64_t limit_pfn, int size_aligned,
		       uint64_t *pfn);
/* Linux's free_iova(): free the range containing @pfn. 0, or -1 if none. */
int classic_iova_free(struct classic_iova_domain *d, uint64_t pfn);
/* The range containing @pfn. 0, or -1 if none. */
int classic_iova_find(struct classic_iova_domain *d, uint64_t pfn, uint64_t *pfn_lo, uint64_t *pfn_hi);

static inline uint64_t classic_iova_roundup_pow2(uint64_t n)
{
	return n <= 1 ? 1 : (uint64_t)1 << (64 - __builtin_clzll(n - 1));
}

struct classic_iova_stats {
	uint64_t allocs, frees;     /* successful ones */
	uint64_t fail;              /* failed allocations (fast fails included) */
	uint64_t fast_fail;         /* of which: refused by the max32_alloc_size check */
	uint64_t retries;           /* searches that retried from the limit */
	uint64_t search_steps;      /* tree nodes visited by allocation walks (rb_prev
				       steps + the descent of the retry) */
	uint64_t ranges, pages;     /* allocated now (the anchor not counted) */
	uint64_t max32_alloc_size;  /* now */
	uint64_t cached_pfn_lo, cached32_pfn_lo;  /* where the cached nodes are (~0: anchor) */
};
void classic_iova_get_stats(struct classic_iova_domain *d, struct classic_iova_stats *st);

/*
 * Verify the tree: in order and not overlapping, every range at or above
 * start_pfn, the anchor last, red-black rules and parent links, counts, and
 * both cached nodes in the tree. 0, or -1 with the fault in @why.
 */
int classic_iova_check(struct classic_iova_domain *d, char *why, size_t len);

/*
 * Self-test: random allocations and frees (@ops of them, seeded) on small
 * domains checked against a page bitmap: every range inside its limit,
 * aligned, overlapping nothing live; every failure under one limit a real
 * lack of space (brute force); classic_iova_check() along the way. 0, or -1
 * with the fault in @why.
 */
int classic_iova_selftest(uint64_t seed, long ops, char *why, size_t len);

#endif

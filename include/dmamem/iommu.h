/* SPDX-License-Identifier: MIT */
/*
 * The IOMMU path: IOVA allocator, IO page tables, IOMMU-backed DMA domains.
 *
 * A device behind an IOMMU (dmm_device_desc.iommu = DMM_IOMMU_DMA) does not
 * see physical addresses. Its DMA API calls allocate I/O virtual addresses
 * (IOVAs) below its mask from a per-device domain, and map them onto the
 * pages in an IO page table the IOMMU walks. "The device reaches 4 GiB" then
 * means "its mappings live below 4 GiB in IOVA space": the pages themselves
 * come from anywhere, and the page allocator never learns about the mask.
 *
 * ---- IOVA allocator -------------------------------------------------------------
 *
 * A domain hands out ranges of whole pages in [base, limit]. Slow path: a
 * balanced search tree of the allocated ranges, each node also keeping the
 * largest free gap in its subtree, so a search below any limit costs
 * O(log n) however full the space is (no linear walk near exhaustion).
 * Fast path: per-CPU magazines of recently freed ranges by power-of-two size
 * class (1..DMM_IOVA_CACHE_CLASSES pages) with a shared depot of full
 * magazines, kept apart for ranges below 4 GiB and above, bounded in the
 * pages they hold and trimmed when idle.
 *
 * ---- IO page table format (what the IOMMU model walks) ------------------------------
 *
 * Four levels of 512 64-bit entries, one 4 KiB page each, indexing IOVA
 * bits [47:39], [38:30], [29:21], [20:12]. Entry bits:
 *
 *   0      VALID
 *   1      READ   the device may read memory through this entry (leaves)
 *   2      WRITE  the device may write memory through this entry (leaves)
 *   3      LEAF   a page (level 3), a 2 MiB block (level 2) or a 1 GiB block
 *                 (level 1); clear = pointer to the next table (levels 0..2)
 *   4      FIRST  software: first page of a mapping (ignored by the IOMMU)
 *   5      LAST   software: last page of a mapping (ignored by the IOMMU)
 *   6      COHERENT software, with FIRST: the mapping is a coherent buffer
 *                 (freed only by dmm_dma_free_coherent, never by a
 *                 streaming unmap; ignored by the IOMMU)
 *   12..51 physical address of the page, block or next-level table
 *
 * Tables are zeroed pages from the page allocator. A table entry is
 * installed with one atomic compare-and-swap; leaf entries are written with
 * atomic stores, so an IOMMU walking concurrently sees either the old or the
 * new entry.
 */
#ifndef DMAMEM_IOMMU_H
#define DMAMEM_IOMMU_H

#include <stddef.h>
#include <stdint.h>

#include "dma.h"
#include "mem.h"

/* ---- IOVA allocator ------------------------------------------------------------ */

#define DMM_IOVA_CACHE_CLASSES 6   /* cached sizes: 1, 2, 4, ..., 32 pages */
#define DMM_IOVA_GUARD_MAX 16

enum dmm_iova_align {
	DMM_IOVA_ALIGN_POW2 = 0,   /* aligned to the size rounded up to a power of two; sizes up
				      to 32 pages (the cached classes) also rounded up (Linux) */
	DMM_IOVA_ALIGN_PAGE,       /* size rounded up to pages, page-aligned */
};

struct dmm_iova_opts {
	enum dmm_iova_align align;
	unsigned guard_pages;      /* pages left unallocated after every range (0..16) */
	int low32_first;           /* try below 4 GiB first, then the full limit */
	int no_cache;              /* no per-CPU caches: every call takes the tree */
	uint32_t mag_size;         /* ranges per magazine (0 = 32, at most 128) */
	uint32_t depot_max;        /* full magazines per class and band in the depot (0 = 8) */
	uint64_t cache_max_pages;  /* IOVA pages the caches may hold in all (0 = 16384: 64 MiB):
				      half for the depot, half shared equally by the CPU slots */
	uint64_t idle_trim_ns;     /* the DMA layer calls dmm_iova_trim() this often (0 = 1 s) */
};

void dmm_iova_opts_default(struct dmm_iova_opts *o);

struct dmm_iova_domain;

/*
 * A domain over IOVAs [base, limit] (inclusive byte addresses; base and
 * limit + 1 page-aligned, limit < 2^48). Page 0 is never handed out, so 0
 * is never a valid IOVA. Its memory comes from the page allocator.
 * -DMM_EINVAL (bad bounds or options), -DMM_ENOMEM.
 */
int dmm_iova_domain_create(struct dmm_mem *mem, dmm_dma_addr_t base, dmm_dma_addr_t limit,
			   const struct dmm_iova_opts *o, struct dmm_iova_domain **out);
/* Frees the domain; ranges still allocated are forgotten (counted as leaks
 * in the log). */
void dmm_iova_domain_destroy(struct dmm_iova_domain *d);

/*
 * Allocate a range for @size bytes (rounded as the domain's policy says)
 * ending at or below @limit (inclusive; clipped to the domain's). *@iova is
 * its first byte. -DMM_EINVAL (size 0, limit below the domain), -DMM_ENOSPC
 * (no room below the limit), -DMM_ENOMEM (no memory for the tree node).
 * Atomic context.
 */
int dmm_iova_alloc(struct dmm_iova_domain *d, uint64_t size, dmm_dma_addr_t limit, dmm_dma_addr_t *iova);
/* Free what dmm_iova_alloc(@size) returned. -DMM_ENOENT (no such range: nothing
 * changed) when the range goes through the tree; the per-CPU cache path
 * trusts its callers (the DMA layer checks its mappings first). */
int dmm_iova_free(struct dmm_iova_domain *d, dmm_dma_addr_t iova, uint64_t size);
/* The allocated range containing @iova: its start and size in bytes (as
 * rounded). -DMM_ENOENT if free. A range sitting in a per-CPU cache is still
 * allocated to the tree and is reported. O(log n). */
int dmm_iova_find(struct dmm_iova_domain *d, dmm_dma_addr_t iova, dmm_dma_addr_t *start, uint64_t *size);
/* The size dmm_iova_alloc(@size) really takes (policy rounding, no guard). */
uint64_t dmm_iova_rounded(const struct dmm_iova_domain *d, uint64_t size);

/* Return to the tree the magazines of every CPU slot that made no cache
 * operation since the previous call, and the depot's if no slot used it
 * since then (everything with @all). Returns the pages given back. */
uint64_t dmm_iova_trim(struct dmm_iova_domain *d, int all);

struct dmm_iova_stats {
	uint64_t allocs, frees;
	uint64_t cache_hits;       /* allocations served by a magazine */
	uint64_t cache_misses;     /* cacheable allocations that went to the tree */
	uint64_t uncacheable;      /* sizes above the largest class (always the tree) */
	uint64_t cache_frees;      /* frees kept in a magazine */
	uint64_t depot_swaps;      /* magazines exchanged with the depot */
	uint64_t cache_flushes;    /* magazines emptied into the tree (full depot, bound, trim) */
	uint64_t low32_fallbacks;  /* low32_first: requests that had to go above 4 GiB */
	uint64_t fail_nospace, fail_nomem, fail_invalid, free_unknown;
	uint64_t ranges;           /* ranges in the tree (cached ones included) */
	uint64_t allocated_pages;  /* pages in the tree's ranges (guards included) */
	uint64_t cached_ranges, cached_pages;  /* held by the magazines and depot */
	uint64_t span_pages;       /* pages the domain covers */
	uint64_t largest_free;     /* largest free gap (pages) */
	uint64_t free_gaps;        /* number of free gaps */
	uint64_t tree_depth;       /* height of the tree */
	uint64_t search_steps;     /* tree nodes visited by searches (cost counter) */
	uint64_t search_fallbacks; /* exact searches that hit their step budget */
};
void dmm_iova_get_stats(struct dmm_iova_domain *d, struct dmm_iova_stats *st);

/* Verify the tree (order, no overlap, gap summaries, balance, counts) and
 * the caches (every cached range allocated in the tree, in its band and
 * class, the bound respected). 0 or -DMM_EINVAL after logging the fault. */
int dmm_iova_check(struct dmm_iova_domain *d);

/* ---- IO page tables ------------------------------------------------------------- */

#define DMM_IOPTE_VALID  (1ull << 0)
#define DMM_IOPTE_READ   (1ull << 1)
#define DMM_IOPTE_WRITE  (1ull << 2)
#define DMM_IOPTE_LEAF   (1ull << 3)
#define DMM_IOPTE_FIRST  (1ull << 4)
#define DMM_IOPTE_LAST   (1ull << 5)
#define DMM_IOPTE_COHERENT (1ull << 6)
#define DMM_IOPTE_ADDR   0x000ffffffffff000ull
#define DMM_IOPT_LEVELS  4
#define DMM_IOPT_VA_BITS 48

/* dmm_iopt_map() permissions */
#define DMM_IOMMU_READ  1u    /* the device reads memory (TO_DEVICE) */
#define DMM_IOMMU_WRITE 2u    /* the device writes memory (FROM_DEVICE) */

struct dmm_iopt;

int dmm_iopt_create(struct dmm_mem *mem, struct dmm_iopt **out);
/* Frees every table (mappings left are dropped). */
void dmm_iopt_destroy(struct dmm_iopt *pt);
/* Physical address of the top-level table (what the IOMMU is given). */
dmm_phys_t dmm_iopt_root(const struct dmm_iopt *pt);

/*
 * Map [iova, iova + size) to [pa, pa + size) with @prot (READ|WRITE, at
 * least one). Page-aligned; 2 MiB / 1 GiB blocks where iova, pa and size
 * allow. @flags: DMM_IOPTE_FIRST / DMM_IOPTE_LAST marks for the first and
 * last page, DMM_IOPTE_COHERENT (with FIRST) on the first. The physical
 * range must be RAM. -DMM_EINVAL (misaligned, outside 48 bits, not RAM), -DMM_EEXIST
 * (something already mapped there: nothing changed), -DMM_ENOMEM (a table
 * page: what was mapped by this call is undone).
 */
int dmm_iopt_map(struct dmm_iopt *pt, dmm_dma_addr_t iova, dmm_phys_t pa, uint64_t size, unsigned prot,
		 uint64_t flags);
/* Unmap [iova, iova + size); blocks partly inside are split first.
 * Returns the bytes that were mapped, or -DMM_ENOMEM (a split needed a table). */
int64_t dmm_iopt_unmap(struct dmm_iopt *pt, dmm_dma_addr_t iova, uint64_t size);
/* Software walk: the entry behind @iova. 0 and *pa (+ *prot, *pte, *level
 * when not NULL), or -DMM_ENOENT. */
int dmm_iopt_lookup(const struct dmm_iopt *pt, dmm_dma_addr_t iova, dmm_phys_t *pa, unsigned *prot,
		    uint64_t *pte, unsigned *level);

struct dmm_iopt_stats {
	uint64_t tables;           /* table pages in use */
	uint64_t pages_4k, blocks_2m, blocks_1g;  /* leaf entries now (counted by a walk) */
	uint64_t splits;           /* blocks split by partial unmaps */
};
void dmm_iopt_get_stats(const struct dmm_iopt *pt, struct dmm_iopt_stats *st);
/* Walk every table: entries well formed, blocks aligned, leaves with a
 * permission and on RAM, the table count right. */
int dmm_iopt_check(const struct dmm_iopt *pt);

/* ---- IOMMU domains of devices ----------------------------------------------------- */

/* dmm_device_desc.iommu */
enum dmm_iommu_mode {
	DMM_IOMMU_NONE = 0,        /* direct: bus = phys (+ offset / ranges) */
	DMM_IOMMU_DMA,             /* translated: IOVAs from a domain, IO page tables */
	DMM_IOMMU_IDENTITY,        /* passthrough: the IOMMU maps IOVA = phys */
};

enum dmm_iommu_flush {
	DMM_IOMMU_STRICT = 0,      /* invalidate the IOTLB on every unmap */
	DMM_IOMMU_DEFERRED,        /* flush queue: one invalidation per batch, IOVAs reused only after it */
};

struct dmm_iommu_opts {
	enum dmm_iommu_flush flush; /* untrusted devices are always strict */
	struct dmm_iova_opts iova;
	uint32_t fq_size;          /* deferred: unmaps queued before a flush (0 = 256) */
	uint64_t fq_timeout_ns;    /* deferred: a queued unmap waits at most this (0 = 10 ms) */
};

void dmm_iommu_opts_default(struct dmm_iommu_opts *o);

/* What a device's IOMMU domain looks like to the IOMMU hardware. */
struct dmm_iommu_info {
	enum dmm_iommu_mode mode;
	uint32_t domain_id;        /* tag of the domain's IOTLB entries (nonzero) */
	dmm_phys_t root;           /* top-level table (DMM_IOMMU_DMA) */
	dmm_dma_addr_t iova_limit; /* highest IOVA of the domain */
};
/* -DMM_EINVAL if @dev is not behind an IOMMU. */
int dmm_device_iommu_info(const struct dmm_device *dev, struct dmm_iommu_info *out);

struct dmm_iommu_stats {
	uint64_t maps, unmaps;
	uint64_t mapped_pages;     /* IOVA pages mapped now */
	uint64_t invalidations;    /* IOTLB invalidation requests sent */
	uint64_t fq_queued, fq_flushes, fq_timeouts;
	uint64_t fq_pending;       /* unmapped IOVAs waiting for a flush */
	uint64_t bounced;          /* untrusted sub-page buffers bounced (in mappings handed out) */
	uint64_t fail_iova, fail_pgtable, fail_unmap;
	struct dmm_iova_stats iova;
	struct dmm_iopt_stats pt;
};
/* -DMM_EINVAL if @dev is not behind a translating IOMMU domain. */
int dmm_device_iommu_stats(struct dmm_device *dev, struct dmm_iommu_stats *st);
/* Deferred mode: invalidate now and release every queued IOVA. */
void dmm_device_iommu_flush(struct dmm_device *dev);
/* dmm_iova_check + dmm_iopt_check of the device's domain, plus the
 * mapping count. 0, or -DMM_EINVAL. Call it while no map or unmap of the
 * device runs: the page table's count and the domain's per-CPU counts of
 * mapped pages move one after the other, so a check between the two
 * steps of a map reports a mismatch that is not there. */
int dmm_device_iommu_check(struct dmm_device *dev);

#endif

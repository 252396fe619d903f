/* SPDX-License-Identifier: MIT */
/*
 * Zoned buddy page allocator.
 *
 * Theory. A binary buddy system (Knowlton 1965; Knuth TAOCP vol. 1, 2.5):
 * free memory is a set of naturally aligned blocks of 2^k pages, k in
 * 0..DMM_MAX_ORDER, one free list per order. Allocation of order k takes the
 * smallest free block of order >= k and splits it, returning the upper
 * halves to the lists; freeing merges a block with its buddy (pfn ^ 2^k)
 * while the buddy is free and of the same order. Both are O(MAX_ORDER).
 * Internal fragmentation is below 50 %; external fragmentation is what the
 * rest of this file fights:
 *
 *  - Mobility grouping. Memory is grouped in pageblocks of 2^9 pages, each
 *    with a migratetype (unmovable, movable, reclaimable, CMA, isolate), and
 *    each order has one free list per migratetype. A request is served from
 *    its own type first. Otherwise it falls back: it first tries to *claim*
 *    a whole pageblock of another type (largest free block first, if the
 *    block is big or the request is unmovable/reclaimable, and at least
 *    half the pageblock is free or already of the requested type), so that
 *    unmovable data gathers in few pageblocks instead of scattering across
 *    movable memory; only then does it *steal* a single block (smallest
 *    first) without changing the pageblock's type. Invariant: every free
 *    block is on the list of its pageblock's type, and blocks above the
 *    pageblock order never merge across pageblocks of different types nor
 *    across isolated pageblocks.
 *
 *  - Zones and watermarks. Zones are derived from address limits. Each has
 *    min/low/high watermarks computed as Linux does from min_free_kbytes;
 *    ordinary requests keep the zone above min, DMM_GFP_ATOMIC requests may
 *    use half of it (the atomic reserve). Only free pages the request could
 *    take count: never those of isolated pageblocks, those of contiguous
 *    areas only for owned movable requests. Falling back from a higher zone
 *    into a lower one must also leave lowmem_reserve[classzone] pages there.
 *    A hook is told when a zone drops below low (re-armed above high).
 *
 *  - Low-zone policy. With DMM_LOWMEM_RESERVED the DMA zone is out of the
 *    fallback path entirely: only requests whose window lies below
 *    dma_limit reach it.
 *
 *  - Per-CPU caches. Orders 0..DMM_PCP_MAX_ORDER of the unmovable, movable
 *    and reclaimable types are served from a per-CPU cache refilled and
 *    drained in batches under the zone lock, so the common path takes only
 *    its CPU's (uncontended) lock. Pages in a cache are allocated from the
 *    buddy's point of view (state PCP); a failed request drains every cache
 *    and retries once.
 *
 *  - Constraints. A request whose window covers whole zones and whose
 *    alignment/boundary the buddy's natural alignment satisfies goes through
 *    the lists; any other (a limit in the middle of a zone, alignment above
 *    the block size) is served by the range allocator in range.c, which
 *    takes pages from the same free lists.
 */
#include "mm/mm_internal.h"

/* Marks of a user a free block never carries: the free paths refuse a
 * head with one (dmm_page_free, dmm_free_range), and their owners clear
 * them before they free. */
#define FREE_NEVER_FLAGS (DMM_PGF_SLAB | DMM_PGF_KLARGE | DMM_PGF_COHERENT | DMM_PGF_INTERNAL)

static const char *const zone_names[DMM_NR_ZONE_TYPES] = { "DMA", "DMA32", "Normal" };
static const char *const mt_names[DMM_NR_MIGRATETYPES] = { "Unmovable", "Movable", "Reclaimable",
							   "CMA", "Isolate" };
static const char *const fail_names[DMM_NR_FAIL_REASONS] = { "nomem", "watermark", "range",
							     "lowmem-policy" };

/* Fallback order per requested type (Linux's fallbacks[]). */
static const uint8_t fallbacks[DMM_PCP_NR_MT][2] = {
	[DMM_MT_UNMOVABLE] = { DMM_MT_RECLAIMABLE, DMM_MT_MOVABLE },
	[DMM_MT_MOVABLE] = { DMM_MT_RECLAIMABLE, DMM_MT_UNMOVABLE },
	[DMM_MT_RECLAIMABLE] = { DMM_MT_UNMOVABLE, DMM_MT_MOVABLE },
};

const char *dmm_zone_name(enum dmm_zone_type t)
{
	return (unsigned)t < DMM_NR_ZONE_TYPES ? zone_names[t] : "?";
}

const char *dmm_migratetype_name(enum dmm_migratetype mt)
{
	return (unsigned)mt < DMM_NR_MIGRATETYPES ? mt_names[mt] : "?";
}

const char *dmm_fail_reason_name(enum dmm_fail_reason r)
{
	return (unsigned)r < DMM_NR_FAIL_REASONS ? fail_names[r] : "?";
}

/* ---- counters read without the lock ----------------------------------------- */

static inline uint64_t zone_free(const struct dmm_zone *z)
{
	return __atomic_load_n(&z->free, __ATOMIC_RELAXED);
}

void dmm__zone_set_free(struct dmm_zone *z, uint64_t v)
{
	__atomic_store_n(&z->free, v, __ATOMIC_RELAXED);
}

static inline void stat_inc(uint64_t *c)
{
	__atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

/* Pageblock types are written under the zone lock and read anywhere. */
static inline unsigned pageblock_mt(const struct dmm_mem *mem, dmm_pfn_t pfn)
{
	const struct dmm_page *pb = dmm__pageblock_head(mem, pfn);
	if (!pb)
		__builtin_unreachable(); /* every RAM page's pageblock has a descriptor */
	return __atomic_load_n(&pb->pb_mt, __ATOMIC_RELAXED);
}

static void set_pageblock_mt(struct dmm_zone *z, dmm_pfn_t pfn, unsigned mt)
{
	struct dmm_page *pb = dmm__pageblock_head(z->mem, pfn);
	z->pageblocks_mt[pb->pb_mt]--;
	__atomic_store_n(&pb->pb_mt, (uint8_t)mt, __ATOMIC_RELAXED);
	z->pageblocks_mt[mt]++;
}

unsigned dmm__pageblock_mt(const struct dmm_mem *mem, dmm_pfn_t pfn)
{
	return pageblock_mt(mem, pfn);
}

/* ---- free lists ------------------------------------------------------------- */

void dmm__add_free_locked(struct dmm_zone *z, struct dmm_page *pg, unsigned order, unsigned mt)
{
	struct dmm_page **head = &z->free_list[order][mt];

	DMM_ASSERT_INT(z->mem, dmm__state(pg) == DMM_PAGE_TAIL);
	DMM_ASSERT_INT(z->mem, !(pg->pfn & (((uint64_t)1 << order) - 1)));
	dmm__set_state(pg, DMM_PAGE_FREE);
	dmm__set_order(pg, order);
	dmm__set_mt(pg, (uint8_t)mt);
	pg->prev = (struct dmm_page *)0;
	pg->next = *head;
	if (*head)
		(*head)->prev = pg;
	*head = pg;
	z->nr_free[order][mt]++;
	dmm__zone_set_free(z, z->free + ((uint64_t)1 << order));
	if (mt == DMM_MT_CMA)
		__atomic_store_n(&z->free_cma, z->free_cma + ((uint64_t)1 << order), __ATOMIC_RELAXED);
	else if (mt == DMM_MT_ISOLATE)
		__atomic_store_n(&z->free_isolate, z->free_isolate + ((uint64_t)1 << order), __ATOMIC_RELAXED);
}

void dmm__del_free_locked(struct dmm_zone *z, struct dmm_page *pg)
{
	unsigned order = dmm__order(pg), mt = dmm__mt(pg);

	DMM_ASSERT_INT(z->mem, dmm__state(pg) == DMM_PAGE_FREE);
	if (pg->prev)
		pg->prev->next = pg->next;
	else
		z->free_list[order][mt] = pg->next;
	if (pg->next)
		pg->next->prev = pg->prev;
	pg->next = pg->prev = (struct dmm_page *)0;
	dmm__set_state(pg, DMM_PAGE_TAIL);
	z->nr_free[order][mt]--;
	dmm__zone_set_free(z, z->free - ((uint64_t)1 << order));
	if (mt == DMM_MT_CMA)
		__atomic_store_n(&z->free_cma, z->free_cma - ((uint64_t)1 << order), __ATOMIC_RELAXED);
	else if (mt == DMM_MT_ISOLATE)
		__atomic_store_n(&z->free_isolate, z->free_isolate - ((uint64_t)1 << order), __ATOMIC_RELAXED);
}

/*
 * The range index covers the free pages of ordinary pageblocks only: free
 * pages of contiguous areas (CMA) and of isolated pageblocks are never handed
 * out by the range allocator. Bits are set when pages become free in an
 * ordinary pageblock and when a pageblock is unisolated; cleared when pages
 * are allocated (harmless if already clear) and when a pageblock is isolated.
 */
static inline bool mt_indexed(unsigned mt)
{
	return mt < DMM_MT_CMA;
}

void dmm__init_free_block(struct dmm_zone *z, dmm_pfn_t pfn, unsigned order)
{
	struct dmm_page *pg = dmm__pfn_page(z->mem, pfn);
	unsigned mt = pageblock_mt(z->mem, pfn);

	dmm__add_free_locked(z, pg, order, mt);
	if (mt_indexed(mt))
		dmm__rt_set_bits(&z->rt, pfn, (uint64_t)1 << order); /* summaries built once after */
}

/* The free buddy of [pfn, pfn + 2^order) if it may merge, else NULL. */
static struct dmm_page *mergeable_buddy(struct dmm_zone *z, dmm_pfn_t pfn, unsigned order)
{
	dmm_pfn_t bpfn = pfn ^ ((dmm_pfn_t)1 << order);
	struct dmm_page *b;

	if (bpfn < z->start_pfn || bpfn >= z->end_pfn)
		return (struct dmm_page *)0;
	b = dmm__pfn_page(z->mem, bpfn);
	if (!b || dmm__state(b) != DMM_PAGE_FREE || dmm__order(b) != order || b->zone != z->idx)
		return (struct dmm_page *)0;
	/* Above the pageblock size, merge only blocks of the same type, and
	 * never isolated ones: each isolated pageblock gets its own type back
	 * on its own, so its free pages must stay inside it. */
	if (order >= DMM_PAGEBLOCK_ORDER) {
		unsigned mt = pageblock_mt(z->mem, pfn);
		if (mt == DMM_MT_ISOLATE || mt != pageblock_mt(z->mem, bpfn))
			return (struct dmm_page *)0;
	}
	return b;
}

/* Free one block with merging; the range index is the caller's business. */
static void free_one_locked(struct dmm_zone *z, dmm_pfn_t pfn, unsigned order)
{
	while (order < DMM_MAX_ORDER) {
		struct dmm_page *b = mergeable_buddy(z, pfn, order);
		if (!b)
			break;
		dmm__del_free_locked(z, b);
		pfn &= ~((dmm_pfn_t)1 << order);
		order++;
	}
	dmm__add_free_locked(z, dmm__pfn_page(z->mem, pfn), order, pageblock_mt(z->mem, pfn));
}

void dmm__free_block_locked(struct dmm_zone *z, dmm_pfn_t pfn, unsigned order)
{
	struct dmm_page *pg = dmm__pfn_page(z->mem, pfn);

	/* A block larger than a pageblock may span pageblocks whose types
	 * differ by now (a range allocation, or a claim while it was in use),
	 * or isolated ones: free it pageblock by pageblock so each part joins
	 * its own type. */
	if (order > DMM_PAGEBLOCK_ORDER) {
		unsigned mt = pageblock_mt(z->mem, pfn);
		for (uint64_t b = DMM_PAGEBLOCK_PAGES; b < ((uint64_t)1 << order); b += DMM_PAGEBLOCK_PAGES) {
			if (mt == DMM_MT_ISOLATE || pageblock_mt(z->mem, pfn + b) != mt) {
				for (uint64_t c = 0; c < ((uint64_t)1 << order); c += DMM_PAGEBLOCK_PAGES)
					dmm__free_block_locked(z, pfn + c, DMM_PAGEBLOCK_ORDER);
				return;
			}
		}
	}

	dmm__set_state(pg, DMM_PAGE_TAIL);
	pg->next = pg->prev = (struct dmm_page *)0;
	if (mt_indexed(pageblock_mt(z->mem, pfn)))
		dmm__rt_mark(&z->rt, pfn, (uint64_t)1 << order, true);
	free_one_locked(z, pfn, order);
}

struct dmm_page *dmm__free_head_of(struct dmm_zone *z, dmm_pfn_t pfn)
{
	for (unsigned k = 0; k <= DMM_MAX_ORDER; k++) {
		dmm_pfn_t h = pfn & ~(((dmm_pfn_t)1 << k) - 1);
		struct dmm_page *pg;
		if (h < z->start_pfn)
			break;
		pg = dmm__pfn_page(z->mem, h);
		if (pg && dmm__state(pg) == DMM_PAGE_FREE && dmm__order(pg) >= k)
			return pg;
	}
	return (struct dmm_page *)0;
}

/* Split a block of order @high down to @low, freeing the upper halves. */
static void expand(struct dmm_zone *z, dmm_pfn_t pfn, unsigned low, unsigned high, unsigned mt)
{
	while (high > low) {
		high--;
		dmm__add_free_locked(z, dmm__pfn_page(z->mem, pfn + ((dmm_pfn_t)1 << high)), high, mt);
	}
}

static struct dmm_page *rmqueue_smallest(struct dmm_zone *z, unsigned order, unsigned mt)
{
	for (unsigned o = order; o <= DMM_MAX_ORDER; o++) {
		struct dmm_page *pg = z->free_list[o][mt];
		if (!pg)
			continue;
		dmm__del_free_locked(z, pg);
		expand(z, pg->pfn, order, o, mt);
		return pg;
	}
	return (struct dmm_page *)0;
}

/*
 * Try to convert the pageblock holding @pfn to @mt: possible when at least
 * half of it is free or already allocated as @mt. Moves its free blocks.
 */
static bool try_claim_block(struct dmm_zone *z, dmm_pfn_t pfn, unsigned mt)
{
	dmm_pfn_t start = dmm_align_down(pfn, DMM_PAGEBLOCK_PAGES);
	dmm_pfn_t end = start + DMM_PAGEBLOCK_PAGES;
	uint64_t free = 0, alike = 0;
	unsigned old = pageblock_mt(z->mem, pfn);

	if (old == DMM_MT_CMA || old == DMM_MT_ISOLATE)
		return false;
	for (dmm_pfn_t p = dmm_max64(start, z->start_pfn); p < end && p < z->end_pfn;) {
		struct dmm_page *pg = dmm__pfn_page(z->mem, p);
		uint64_t n = 1;
		if (dmm__state(pg) == DMM_PAGE_FREE) {
			n = (uint64_t)1 << dmm__order(pg);
			free += n;
		} else if (dmm__state(pg) == DMM_PAGE_ALLOC || dmm__state(pg) == DMM_PAGE_PCP) {
			n = (uint64_t)1 << dmm__order(pg);
			if (dmm__state(pg) == DMM_PAGE_ALLOC &&
			    (dmm__mt(pg) == mt || (mt != DMM_MT_MOVABLE && dmm__mt(pg) != DMM_MT_MOVABLE)))
				alike += n;
		}
		p += n;
	}
	if (free + alike < DMM_PAGEBLOCK_PAGES / 2)
		return false;
	set_pageblock_mt(z, start, mt);
	for (dmm_pfn_t p = dmm_max64(start, z->start_pfn); p < end && p < z->end_pfn;) {
		struct dmm_page *pg = dmm__pfn_page(z->mem, p);
		uint64_t n = 1;
		if (dmm__state(pg) == DMM_PAGE_FREE) {
			unsigned o = dmm__order(pg);
			n = (uint64_t)1 << o;
			dmm__del_free_locked(z, pg);
			dmm__add_free_locked(z, pg, o, mt);
		} else if (dmm__state(pg) == DMM_PAGE_ALLOC || dmm__state(pg) == DMM_PAGE_PCP) {
			n = (uint64_t)1 << dmm__order(pg);
		}
		p += n;
	}
	z->stats.steal_block++;
	return true;
}

static struct dmm_page *rmqueue_fallback(struct dmm_zone *z, unsigned order, unsigned mt)
{
	/* Claim: largest block first, converting whole pageblocks. */
	for (int o = DMM_MAX_ORDER; o >= (int)order; o--) {
		for (unsigned i = 0; i < 2; i++) {
			unsigned f = fallbacks[mt][i];
			struct dmm_page *pg = z->free_list[o][f];
			if (!pg)
				continue;
			if (o >= DMM_PAGEBLOCK_ORDER) {
				dmm_pfn_t pfn = pg->pfn;
				for (uint64_t b = 0; b < ((uint64_t)1 << o); b += DMM_PAGEBLOCK_PAGES)
					set_pageblock_mt(z, pfn + b, mt);
				dmm__del_free_locked(z, pg);
				dmm__add_free_locked(z, pg, (unsigned)o, mt);
				z->stats.steal_block++;
				z->stats.fallback++;
				return rmqueue_smallest(z, order, mt);
			}
			if ((o >= DMM_PAGEBLOCK_ORDER / 2 || mt != DMM_MT_MOVABLE) &&
			    try_claim_block(z, pg->pfn, mt)) {
				z->stats.fallback++;
				return rmqueue_smallest(z, order, mt);
			}
		}
	}
	/* Steal: smallest block, the pageblock keeps its type. */
	for (unsigned o = order; o <= DMM_MAX_ORDER; o++) {
		for (unsigned i = 0; i < 2; i++) {
			unsigned f = fallbacks[mt][i];
			struct dmm_page *pg = z->free_list[o][f];
			if (!pg)
				continue;
			dmm__del_free_locked(z, pg);
			expand(z, pg->pfn, order, o, f);
			z->stats.fallback++;
			return pg;
		}
	}
	return (struct dmm_page *)0;
}

/*
 * Take a block of 2^order pages of type @mt from the lists (lock held).
 * Movable requests may use contiguous-area pageblocks, as eagerly as the
 * machine's CMA policy says (Linux's rule: first once CMA holds more than
 * half of the zone's free pages, else only when all else failed).
 */
/* Should an owned movable request try contiguous-area pages first? */
static inline bool cma_first(const struct dmm_zone *z)
{
	enum dmm_cma_policy pol = z->mem->machine.cma_policy;
	uint64_t cma = __atomic_load_n(&z->free_cma, __ATOMIC_RELAXED);

	return pol == DMM_CMA_POLICY_FIRST ||
	       (pol == DMM_CMA_POLICY_HALF && cma > __atomic_load_n(&z->free, __ATOMIC_RELAXED) / 2);
}

static struct dmm_page *rmqueue_locked(struct dmm_zone *z, unsigned order, unsigned mt,
				       bool allow_cma)
{
	struct dmm_page *pg = (struct dmm_page *)0;
	enum dmm_cma_policy pol = z->mem->machine.cma_policy;
	bool cma = allow_cma && mt == DMM_MT_MOVABLE && z->free_cma && pol != DMM_CMA_POLICY_NEVER;

	if (cma && cma_first(z))
		pg = rmqueue_smallest(z, order, DMM_MT_CMA);
	if (!pg)
		pg = rmqueue_smallest(z, order, mt);
	if (!pg)
		pg = rmqueue_fallback(z, order, mt);
	if (!pg && cma)
		pg = rmqueue_smallest(z, order, DMM_MT_CMA);
	if (pg)
		dmm__rt_mark(&z->rt, pg->pfn, (uint64_t)1 << order, false);
	return pg;
}

/* ---- pageblock isolation ----------------------------------------------------- */

int dmm__isolate_pageblock_locked(struct dmm_zone *z, dmm_pfn_t pfn)
{
	dmm_pfn_t start = dmm_align_down(pfn, DMM_PAGEBLOCK_PAGES);
	dmm_pfn_t end = dmm_min64(start + DMM_PAGEBLOCK_PAGES, z->end_pfn);
	struct dmm_page *pb = dmm__pageblock_head(z->mem, start);
	struct dmm_page *h;

	if (pb->pb_mt == DMM_MT_ISOLATE)
		return -DMM_EAGAIN;
	/* A free block larger than a pageblock is split at pageblock size. */
	h = dmm__free_head_of(z, dmm_max64(start, z->start_pfn));
	if (h && dmm__order(h) > DMM_PAGEBLOCK_ORDER) {
		dmm_pfn_t hs = h->pfn;
		uint64_t size = (uint64_t)1 << dmm__order(h);
		dmm__del_free_locked(z, h);
		for (uint64_t b = 0; b < size; b += DMM_PAGEBLOCK_PAGES)
			dmm__add_free_locked(z, dmm__pfn_page(z->mem, hs + b), DMM_PAGEBLOCK_ORDER,
					     pageblock_mt(z->mem, hs + b));
	}
	pb->pb_saved = pb->pb_mt;
	set_pageblock_mt(z, start, DMM_MT_ISOLATE);
	for (dmm_pfn_t p = dmm_max64(start, z->start_pfn); p < end;) {
		struct dmm_page *pg = dmm__pfn_page(z->mem, p);
		uint64_t n = 1;
		if (dmm__state(pg) == DMM_PAGE_FREE) {
			unsigned o = dmm__order(pg);
			n = (uint64_t)1 << o;
			dmm__del_free_locked(z, pg);
			dmm__add_free_locked(z, pg, o, DMM_MT_ISOLATE);
			if (mt_indexed(pb->pb_saved))
				dmm__rt_mark(&z->rt, p, n, false);
		}
		p += n;
	}
	return 0;
}

void dmm__unisolate_pageblock_locked(struct dmm_zone *z, dmm_pfn_t pfn)
{
	dmm_pfn_t start = dmm_align_down(pfn, DMM_PAGEBLOCK_PAGES);
	dmm_pfn_t end = dmm_min64(start + DMM_PAGEBLOCK_PAGES, z->end_pfn);
	struct dmm_page *pb = dmm__pageblock_head(z->mem, start);

	DMM_ASSERT_INT(z->mem, pb->pb_mt == DMM_MT_ISOLATE);
	set_pageblock_mt(z, start, pb->pb_saved);
	/* Give every isolated free block back with merging. */
	for (dmm_pfn_t p = dmm_max64(start, z->start_pfn); p < end; p++) {
		struct dmm_page *pg = dmm__pfn_page(z->mem, p);
		if (dmm__state(pg) == DMM_PAGE_FREE && dmm__mt(pg) == DMM_MT_ISOLATE) {
			unsigned o = dmm__order(pg);
			dmm__del_free_locked(z, pg);
			if (mt_indexed(pb->pb_mt))
				dmm__rt_mark(&z->rt, p, (uint64_t)1 << o, true);
			free_one_locked(z, p, o);
		}
	}
}

/* ---- watermarks --------------------------------------------------------------- */

uint64_t dmm_default_min_free_kbytes(uint64_t managed_pages)
{
	uint64_t kb = managed_pages * (DMM_PAGE_SIZE / 1024) * 16, r = 0;

	if (managed_pages > UINT64_MAX / ((DMM_PAGE_SIZE / 1024) * 16))
		return 262144; /* far above the clamp; the product would wrap */
	/* integer square root, bit by bit */
	for (uint64_t bit = (uint64_t)1 << 62; bit; bit >>= 2) {
		if (kb >= r + bit) {
			kb -= r + bit;
			r = (r >> 1) + bit;
		} else {
			r >>= 1;
		}
	}
	if (r < 128)
		r = 128;
	if (r > 262144)
		r = 262144;
	return r;
}

/* floor(a * b / c) for a < c, without a 128-bit product: long
 * multiplication by the bits of b, keeping quotient and remainder mod c. */
static uint64_t mul_div_small(uint64_t a, uint64_t b, uint64_t c)
{
	uint64_t q = 0, r = 0;

	for (int i = 63; i >= 0; i--) {
		q <<= 1;
		if (r >= c - r) {
			r -= c - r;
			q++;
		} else {
			r += r;
		}
		if ((b >> i) & 1) {
			if (r >= c - a) {
				r -= c - a;
				q++;
			} else {
				r += a;
			}
		}
	}
	return q;
}

void dmm_calc_watermarks(uint64_t min_free_kbytes, uint32_t scale_factor, unsigned nr,
			 const uint64_t *managed, uint64_t *min, uint64_t *low, uint64_t *high)
{
	uint64_t pages_min = min_free_kbytes / (DMM_PAGE_SIZE / 1024), lowmem = 0;

	for (unsigned i = 0; i < nr; i++)
		lowmem += managed[i];
	for (unsigned i = 0; i < nr; i++) {
		/* pages_min * managed / lowmem, which must not wrap for a huge
		 * min_free_kbytes: managed <= lowmem, so the quotient part
		 * stays below pages_min */
		uint64_t tmp = lowmem ? pages_min / lowmem * managed[i] +
						mul_div_small(pages_min % lowmem, managed[i], lowmem)
				      : 0;
		uint64_t delta = dmm_max64(tmp >> 2, managed[i] * scale_factor / 10000);
		min[i] = tmp;
		low[i] = tmp + delta;
		high[i] = tmp + 2 * delta;
	}
}

void dmm_calc_lowmem_reserve(const uint32_t ratio[DMM_NR_ZONE_TYPES],
			     const uint64_t managed[DMM_NR_ZONE_TYPES],
			     uint64_t out[DMM_NR_ZONE_TYPES][DMM_NR_ZONE_TYPES])
{
	for (unsigned i = 0; i < DMM_NR_ZONE_TYPES; i++) {
		uint64_t sum = 0;
		bool clear = !ratio[i] || !managed[i];
		for (unsigned j = 0; j <= i; j++)
			out[i][j] = 0;
		for (unsigned j = i + 1; j < DMM_NR_ZONE_TYPES; j++) {
			sum += managed[j];
			out[i][j] = clear ? 0 : sum / ratio[i];
		}
	}
}

/* Pageblocks of @z by type (those whose first descriptor exists). */
static void count_pageblocks(const struct dmm_mem *mem, const struct dmm_zone *z, uint64_t *out)
{
	for (unsigned mt = 0; mt < DMM_NR_MIGRATETYPES; mt++)
		out[mt] = 0;
	for (dmm_pfn_t p = dmm_align_down(z->start_pfn, DMM_PAGEBLOCK_PAGES); p < z->end_pfn;
	     p += DMM_PAGEBLOCK_PAGES) {
		const struct dmm_page *b = dmm__pfn_page(mem, p);
		if (b)
			out[b->pb_mt]++;
	}
}

void dmm__zones_init_watermarks(struct dmm_mem *mem)
{
	const struct dmm_machine *m = &mem->machine;
	uint64_t managed[DMM_NR_ZONE_TYPES] = { 0 }, mins[DMM_NR_ZONE_TYPES],
		 lows[DMM_NR_ZONE_TYPES], highs[DMM_NR_ZONE_TYPES];
	uint64_t reserve[DMM_NR_ZONE_TYPES][DMM_NR_ZONE_TYPES];
	uint64_t min_kb = m->min_free_kbytes ? m->min_free_kbytes
					     : dmm_default_min_free_kbytes(mem->managed_pages);
	uint32_t scale = m->watermark_scale_factor ? m->watermark_scale_factor : 10;

	for (unsigned i = 0; i < mem->nr_zones; i++)
		managed[mem->zones[i].type] = mem->zones[i].managed;
	dmm_calc_watermarks(min_kb, scale, DMM_NR_ZONE_TYPES, managed, mins, lows, highs);
	dmm_calc_lowmem_reserve(m->lowmem_reserve_ratio, managed, reserve);
	for (unsigned i = 0; i < mem->nr_zones; i++) {
		struct dmm_zone *z = &mem->zones[i];
		z->wmark[0] = mins[z->type];
		z->wmark[1] = lows[z->type];
		z->wmark[2] = highs[z->type];
		for (unsigned j = 0; j < DMM_NR_ZONE_TYPES; j++)
			z->lowmem_reserve[j] = reserve[z->type][j];
		z->wmark_armed = 1;
		count_pageblocks(mem, z, z->pageblocks_mt);
	}
}

int dmm__zone_wmark_check(const struct dmm_zone *z, uint64_t nr_pages, unsigned flags,
			  enum dmm_zone_type classzone)
{
	uint64_t mark, free = zone_free(z);
	uint64_t iso = __atomic_load_n(&z->free_isolate, __ATOMIC_RELAXED);

	/* Free pages of isolated pageblocks serve no request. */
	free = free > iso ? free - iso : 0;
	/* Pages of contiguous areas serve owned movable requests only. */
	if (flags & DMM_GFP_NOCMA) {
		uint64_t cma = __atomic_load_n(&z->free_cma, __ATOMIC_RELAXED);
		free = free > cma ? free - cma : 0;
	}
	if (free < nr_pages)
		return -DMM_ENOMEM;
	if (flags & DMM_GFP_NOWMARK)
		return 0;
	mark = z->wmark[0];
	if (flags & DMM_GFP_ATOMIC)
		mark -= mark / 2;
	if (classzone > z->type)
		mark += z->lowmem_reserve[classzone];
	return free >= nr_pages + mark ? 0 : -DMM_EWMARK;
}

void dmm__wmark_after_alloc(struct dmm_zone *z)
{
	struct dmm_mem *mem = z->mem;
	uint64_t free = zone_free(z);

	if (free >= z->wmark[1] || !__atomic_load_n(&z->wmark_armed, __ATOMIC_RELAXED))
		return;
	if (!__atomic_exchange_n(&z->wmark_armed, 0, __ATOMIC_ACQ_REL))
		return;
	stat_inc(&z->stats.wmark_low_events);
	if (mem->wmark_hook)
		mem->wmark_hook(mem->wmark_hook_arg, mem, z->idx, free);
}

void dmm__wmark_after_free(struct dmm_zone *z)
{
	if (zone_free(z) > z->wmark[2] && !__atomic_load_n(&z->wmark_armed, __ATOMIC_RELAXED))
		__atomic_store_n(&z->wmark_armed, 1, __ATOMIC_RELAXED);
}

int dmm_page_set_wmark_hook(struct dmm_mem *mem, dmm_wmark_hook_fn fn, void *arg)
{
	if (!mem)
		return -DMM_EINVAL;
	mem->wmark_hook = fn;
	mem->wmark_hook_arg = arg;
	return 0;
}

/* ---- per-CPU caches ----------------------------------------------------------- */

static uint32_t zone_batchsize(const struct dmm_zone *z)
{
	uint64_t batch = dmm_min64(z->managed >> 10, (1u << 20) / DMM_PAGE_SIZE) / 4;

	if (batch < 1)
		batch = 1;
	batch = ((uint64_t)1 << dmm_ilog2(batch + batch / 2)) - 1;
	return (uint32_t)(batch < 1 ? 1 : batch);
}

void dmm__pcp_init(struct dmm_mem *mem)
{
	for (unsigned i = 0; i < mem->nr_zones; i++) {
		struct dmm_zone *z = &mem->zones[i];
		z->pcp_batch = mem->machine.pcp_batch ? mem->machine.pcp_batch : zone_batchsize(z);
		z->pcp_high = mem->machine.pcp_high ? mem->machine.pcp_high : 6 * z->pcp_batch;
		if (z->pcp_high < z->pcp_batch)
			z->pcp_high = z->pcp_batch;
		for (unsigned c = 0; c < mem->plat.nr_cpus; c++)
			mem->plat.lock_init(mem->plat.ctx, &z->pcp[c].lock);
	}
}

static inline struct dmm_pcp *this_pcp(struct dmm_zone *z)
{
	const struct dmm_platform *p = &z->mem->plat;
	unsigned cpu = p->cpu_id ? p->cpu_id(p->ctx) : 0;
	return &z->pcp[cpu < p->nr_cpus ? cpu : cpu % p->nr_cpus];
}

static inline void pcp_push(struct dmm_pcp *pcp, struct dmm_page *pg, unsigned order, unsigned mt)
{
	dmm__set_state(pg, DMM_PAGE_PCP);
	dmm__set_order(pg, order);
	dmm__set_mt(pg, (uint8_t)mt);
	pg->next = pcp->list[order][mt];
	pcp->list[order][mt] = pg;
	pcp->nr[order][mt]++;
	__atomic_store_n(&pcp->count, pcp->count + ((uint64_t)1 << order), __ATOMIC_RELAXED);
}

static inline struct dmm_page *pcp_pop(struct dmm_pcp *pcp, unsigned order, unsigned mt)
{
	struct dmm_page *pg = pcp->list[order][mt];
	if (!pg)
		return pg;
	pcp->list[order][mt] = pg->next;
	pg->next = (struct dmm_page *)0;
	pcp->nr[order][mt]--;
	__atomic_store_n(&pcp->count, pcp->count - ((uint64_t)1 << order), __ATOMIC_RELAXED);
	return pg;
}

/* Give up to @pages pages (all if ~0) from @pcp back to the zone (both locks held). */
static void pcp_drain_locked(struct dmm_zone *z, struct dmm_pcp *pcp, uint64_t pages)
{
	uint64_t done = 0;

	for (unsigned o = 0; o < DMM_NR_PCP_ORDERS && done < pages; o++) {
		for (unsigned mt = 0; mt < DMM_PCP_NR_LISTS && done < pages; mt++) {
			struct dmm_page *pg;
			while (done < pages && (pg = pcp_pop(pcp, o, mt))) {
				dmm__free_block_locked(z, pg->pfn, o);
				done += (uint64_t)1 << o;
			}
		}
	}
	pcp->drain++;
}

/* The per-CPU list a page of pageblock type @pb goes to when freed. */
static inline unsigned pcp_list_of(unsigned pb)
{
	DMM_ASSERT(0, pb < DMM_PCP_NR_LISTS || pb == DMM_MT_CMA);
	return pb == DMM_MT_CMA ? DMM_PCP_CMA : pb;
}

/*
 * Per-CPU allocation. An owned movable request (@allow_cma) may take pages
 * of contiguous areas, which sit on their own list: it looks at that list
 * first or last as the CMA policy says. A refill takes a batch from the
 * zone and files every page by its pageblock type.
 */
static struct dmm_page *pcp_alloc(struct dmm_zone *z, unsigned order, unsigned mt, bool allow_cma)
{
	struct dmm_pcp *pcp = this_pcp(z);
	struct dmm_page *pg;
	unsigned first = mt, second = mt;

	if (allow_cma && mt == DMM_MT_MOVABLE && z->mem->nr_cma &&
	    z->mem->machine.cma_policy != DMM_CMA_POLICY_NEVER) {
		if (cma_first(z))
			first = DMM_PCP_CMA;
		else
			second = DMM_PCP_CMA;
	}
	dmm__lock(z->mem, &pcp->lock);
	pg = pcp_pop(pcp, order, first);
	if (!pg) {
		uint64_t n = dmm_max64(1, z->pcp_batch >> order);
		dmm__lock(z->mem, &z->lock);
		for (uint64_t i = 0; i < n; i++) {
			struct dmm_page *b = rmqueue_locked(z, order, mt, allow_cma);
			if (!b)
				break;
			pcp_push(pcp, b, order,
				 pageblock_mt(z->mem, b->pfn) == DMM_MT_CMA ? DMM_PCP_CMA : mt);
		}
		dmm__unlock(z->mem, &z->lock);
		pcp->refill++;
		pg = pcp_pop(pcp, order, first);
		if (!pg && second != first)
			pg = pcp_pop(pcp, order, second);
	}
	if (pg)
		pcp->alloc++;
	dmm__unlock(z->mem, &pcp->lock);
	return pg;
}

/* @pb: the page's pageblock type read once by the caller (never ISOLATE:
 * pages of isolated pageblocks bypass the caches). */
static void pcp_free(struct dmm_zone *z, struct dmm_page *pg, unsigned order, unsigned pb)
{
	struct dmm_pcp *pcp = this_pcp(z);
	unsigned list = pcp_list_of(pb);

	dmm__lock(z->mem, &pcp->lock);
	pcp_push(pcp, pg, order, list);
	pcp->free++;
	if (pcp->count > z->pcp_high) {
		dmm__lock(z->mem, &z->lock);
		pcp_drain_locked(z, pcp, z->pcp_batch);
		dmm__unlock(z->mem, &z->lock);
	}
	dmm__unlock(z->mem, &pcp->lock);
}

void dmm__drain_zone_pcp(struct dmm_zone *z)
{
	for (unsigned c = 0; c < z->mem->plat.nr_cpus; c++) {
		struct dmm_pcp *pcp = &z->pcp[c];
		dmm__lock(z->mem, &pcp->lock);
		if (pcp->count) {
			dmm__lock(z->mem, &z->lock);
			pcp_drain_locked(z, pcp, ~(uint64_t)0);
			dmm__unlock(z->mem, &z->lock);
		}
		dmm__unlock(z->mem, &pcp->lock);
	}
	dmm__wmark_after_free(z);
}

void dmm_page_drain_pcp(struct dmm_mem *mem)
{
	if (!mem)
		return;
	for (unsigned i = 0; i < mem->nr_zones; i++)
		dmm__drain_zone_pcp(&mem->zones[i]);
}

uint64_t dmm__zone_pcp_pages(struct dmm_zone *z)
{
	uint64_t n = 0;
	for (unsigned c = 0; c < z->mem->plat.nr_cpus; c++)
		n += __atomic_load_n(&z->pcp[c].count, __ATOMIC_RELAXED);
	return n;
}

/* ---- allocation entry points ----------------------------------------------- */

static unsigned gfp_migratetype(unsigned flags)
{
	if (flags & DMM_GFP_MOVABLE)
		return DMM_MT_MOVABLE;
	if (flags & DMM_GFP_RECLAIMABLE)
		return DMM_MT_RECLAIMABLE;
	return DMM_MT_UNMOVABLE;
}

/* Fill in an allocated head; the state goes last, so a lock-free scanner
 * that sees ALLOC also sees the owner and the movable flag, and a pinner
 * the library's mark (@internal: on every page of the block). */
static void mark_allocated(struct dmm_mem *mem, struct dmm_page *pg, unsigned order, unsigned mt,
			   const struct dmm_movable_owner *owner, bool internal)
{
	if (internal)
		dmm__lib_mark(mem, pg->pfn, (uint64_t)1 << order);
	dmm__set_order(pg, order);
	dmm__set_mt(pg, (uint8_t)mt);
	pg->refcount = 1;
	/* The pin counts are left alone: a free page holds none, but a
	 * pinner that read the block before it was freed may hold a count for
	 * an instant (it takes it back once it sees the state); storing 0
	 * over it would make its decrement wrap. */
	pg->next = pg->prev = (struct dmm_page *)0;
	if (owner) {
		dmm__set_owner(pg, owner);
		dmm__set_private(pg, 0);
		__atomic_fetch_or(&pg->flags, (uint8_t)DMM_PGF_MOVABLE, __ATOMIC_RELAXED);
	} else if (dmm__owner(pg) || dmm__private(pg)) {
		dmm__set_owner(pg, (void *)0);
		dmm__set_private(pg, 0);
	}
	dmm__set_state(pg, DMM_PAGE_ALLOC);
}

/* Resolve @c / DMA shorthands into a validated constraint. */
static int resolve_constraint(const struct dmm_mem *mem, const struct dmm_constraint *c,
			      unsigned flags, struct dmm_constraint *out)
{
	const struct dmm_machine *m = &mem->machine;

	if (c) {
		if (flags & (DMM_GFP_DMA | DMM_GFP_DMA32))
			return -DMM_EINVAL;
		if (dmm_constraint_validate(c))
			return -DMM_EINVAL;
		*out = *c;
		return 0;
	}
	*out = DMM_CONSTRAINT_ANY;
	if ((flags & DMM_GFP_DMA) && (flags & DMM_GFP_DMA32))
		return -DMM_EINVAL;
	if (flags & DMM_GFP_DMA)
		out->hi = m->dma_limit ? m->dma_limit : (m->dma32_limit ? m->dma32_limit : DMM_PHYS_MAX);
	else if (flags & DMM_GFP_DMA32)
		out->hi = m->dma32_limit ? m->dma32_limit : DMM_PHYS_MAX;
	return 0;
}

int dmm__constraint_pfns(const struct dmm_mem *mem, const struct dmm_constraint *c,
			 dmm_pfn_t *lo, dmm_pfn_t *hi)
{
	*lo = dmm_align_up(c->lo, DMM_PAGE_SIZE) >> DMM_PAGE_SHIFT;
	if (c->lo > DMM_PHYS_MAX - DMM_PAGE_SIZE)
		return -DMM_ERANGE;
	*hi = c->hi >> DMM_PAGE_SHIFT;
	if (*hi <= *lo || dmm__ram_pages_in(&mem->machine, *lo, *hi) == 0)
		return -DMM_ERANGE;
	return 0;
}

/* Highest zone intersecting [lo, hi): the "class zone" for lowmem_reserve. */
int dmm__class_zone(const struct dmm_mem *mem, dmm_pfn_t lo, dmm_pfn_t hi)
{
	for (int i = (int)mem->nr_zones - 1; i >= 0; i--)
		if (mem->zones[i].start_pfn < hi && mem->zones[i].end_pfn > lo)
			return i;
	return -1;
}

/* May zone @z serve a request whose class zone is @cz under the low-zone policy? */
bool dmm__lowmem_policy_allows(const struct dmm_mem *mem, const struct dmm_zone *z,
			       const struct dmm_zone *cz)
{
	return mem->machine.lowmem_policy != DMM_LOWMEM_RESERVED || z->type != DMM_ZONE_DMA ||
	       cz == z;
}

int dmm__count_invalid(struct dmm_mem *mem)
{
	if (mem)
		stat_inc(&mem->fail_invalid);
	return -DMM_EINVAL;
}

int dmm__count_range(struct dmm_mem *mem)
{
	stat_inc(&mem->fail_range);
	return -DMM_ERANGE;
}

int dmm__count_fail(struct dmm_mem *mem, int ci, dmm_pfn_t lo, dmm_pfn_t hi, bool saw_wmark)
{
	struct dmm_zone *cz = &mem->zones[ci];
	const struct dmm_zone *low = &mem->zones[0];

	stat_inc(&cz->stats.fail[saw_wmark ? DMM_FAIL_WMARK : DMM_FAIL_NOMEM]);
	/* Say so when the reserved low zone might have served it: it lies in
	 * the window and the policy kept the request out. */
	if (mem->machine.lowmem_policy == DMM_LOWMEM_RESERVED && ci > 0 &&
	    low->type == DMM_ZONE_DMA && low->start_pfn < hi && low->end_pfn > lo &&
	    !dmm__lowmem_policy_allows(mem, low, cz))
		stat_inc(&cz->stats.fail[DMM_FAIL_LOWMEM_POLICY]);
	return saw_wmark ? -DMM_EWMARK : -DMM_ENOMEM;
}

/* Serve 2^order pages from zone @z (watermark already checked). */
static struct dmm_page *zone_alloc(struct dmm_zone *z, unsigned order, unsigned mt, unsigned flags,
				   bool allow_cma, bool through_lists, dmm_pfn_t lo, dmm_pfn_t hi,
				   uint64_t align_pages, uint64_t boundary_pages)
{
	struct dmm_page *pg = (struct dmm_page *)0;
	dmm_pfn_t got;

	if (through_lists) {
		if (order <= DMM_PCP_MAX_ORDER && mt < DMM_PCP_NR_MT && !(flags & DMM_GFP_NOCACHE))
			return pcp_alloc(z, order, mt, allow_cma);
		dmm__lock(z->mem, &z->lock);
		pg = rmqueue_locked(z, order, mt, allow_cma);
		if (pg)
			__atomic_fetch_add(&z->stats.alloc_ok, 1, __ATOMIC_RELAXED);
		dmm__unlock(z->mem, &z->lock);
		return pg;
	}
	if (dmm__range_take_in_zone(z, dmm_max64(lo, z->start_pfn), dmm_min64(hi, z->end_pfn),
				    (uint64_t)1 << order, align_pages, boundary_pages, &got))
		return pg;
	__atomic_fetch_add(&z->stats.alloc_ok, 1, __ATOMIC_RELAXED);
	return dmm__pfn_page(z->mem, got);
}

int dmm_page_alloc(struct dmm_mem *mem, unsigned order, const struct dmm_constraint *c,
		   unsigned flags, dmm_pfn_t *pfn)
{
	if (flags & DMM_GFP__INTERNAL) /* the library's own request flag, no caller's */
		return dmm__count_invalid(mem);
	return dmm__page_alloc_owned(mem, order, c, flags, (const struct dmm_movable_owner *)0, pfn);
}

int dmm__lib_page_alloc(struct dmm_mem *mem, unsigned order, const struct dmm_constraint *c, unsigned flags,
			dmm_pfn_t *pfn)
{
	return dmm__page_alloc_owned(mem, order, c, flags | DMM_GFP__INTERNAL, (const struct dmm_movable_owner *)0,
				     pfn);
}

int dmm__page_alloc_owned(struct dmm_mem *mem, unsigned order, const struct dmm_constraint *c,
			  unsigned flags, const struct dmm_movable_owner *owner, dmm_pfn_t *pfn)
{
	struct dmm_constraint k;
	dmm_pfn_t lo, hi;
	uint64_t nr, align_pages, boundary_pages;
	unsigned mt;
	int ci;
	bool natural, allow_cma, saw_wmark = false;

	if (!mem || !pfn || order > DMM_MAX_ORDER || (flags & ~(DMM_GFP_ALL | DMM_GFP__INTERNAL)))
		return dmm__count_invalid(mem);
	if ((flags & DMM_GFP_MOVABLE) && (flags & DMM_GFP_RECLAIMABLE))
		return dmm__count_invalid(mem);
	if ((flags & DMM_GFP__INTERNAL) && (owner || (flags & DMM_GFP_MOVABLE)))
		return dmm__count_invalid(mem); /* the library's memory never moves */
	nr = (uint64_t)1 << order;
	if (!c && !(flags & (DMM_GFP_DMA | DMM_GFP_DMA32))) {
		/* Common case: anywhere. Every zone qualifies, highest first. */
		lo = 0;
		hi = ~(dmm_pfn_t)0;
		align_pages = nr;
		boundary_pages = 0;
		ci = (int)mem->nr_zones - 1;
	} else {
		if (resolve_constraint(mem, c, flags, &k))
			return dmm__count_invalid(mem);
		if (k.boundary && k.boundary < nr * DMM_PAGE_SIZE)
			return dmm__count_invalid(mem);
		if (dmm__constraint_pfns(mem, &k, &lo, &hi))
			return dmm__count_range(mem);
		align_pages = dmm_max64(nr, k.align >> DMM_PAGE_SHIFT);
		boundary_pages = k.boundary >> DMM_PAGE_SHIFT;
		ci = dmm__class_zone(mem, lo, hi);
	}
	natural = align_pages == nr;
	mt = gfp_migratetype(flags);
	allow_cma = owner && mt == DMM_MT_MOVABLE && !(flags & DMM_GFP_NOCMA) &&
		    mem->machine.cma_policy != DMM_CMA_POLICY_NEVER;

	/* Second attempt only after draining the per-CPU caches. */
	for (int attempt = 0; attempt < 2; attempt++) {
		struct dmm_zone *cz = &mem->zones[ci];
		uint64_t held = 0;

		for (int i = ci; i >= 0; i--) {
			struct dmm_zone *z = &mem->zones[i];
			struct dmm_page *pg;
			bool whole;
			int wm;

			if (z->start_pfn >= hi || z->end_pfn <= lo || !dmm__lowmem_policy_allows(mem, z, cz))
				continue;
			whole = natural && z->start_pfn >= lo && z->end_pfn <= hi;
			/* free area pages count only for a request that may take
			 * them: an owned movable one through the lists */
			wm = dmm__zone_wmark_check(z, nr, flags | (allow_cma && whole ? 0 : DMM_GFP_NOCMA),
						   cz->type);
			if (wm) {
				saw_wmark |= wm == -DMM_EWMARK;
				continue;
			}
			pg = zone_alloc(z, order, mt, flags, allow_cma, whole, lo, hi, align_pages,
					boundary_pages);
			if (!pg)
				continue;
			mark_allocated(mem, pg, order, mt, owner, (flags & DMM_GFP__INTERNAL) != 0);
			if (flags & DMM_GFP_ZERO)
				dmm__zero_pages(mem, pg->pfn, nr);
			dmm__wmark_after_alloc(z);
			*pfn = pg->pfn;
			return 0;
		}
		for (int i = ci; i >= 0; i--)
			held += dmm__zone_pcp_pages(&mem->zones[i]);
		if (!held)
			break;
		for (int i = ci; i >= 0; i--)
			dmm__drain_zone_pcp(&mem->zones[i]);
	}
	return dmm__count_fail(mem, ci, lo, hi, saw_wmark);
}

static struct dmm_zone *zone_of_page(struct dmm_mem *mem, const struct dmm_page *pg)
{
	return pg->zone < mem->nr_zones ? &mem->zones[pg->zone] : (struct dmm_zone *)0;
}

/* The rest of a free of the buddy block @pg, of @order, claimed (FREEING). */
static inline __attribute__((always_inline)) void free_claimed(struct dmm_mem *mem, struct dmm_zone *z,
								       struct dmm_page *pg, dmm_pfn_t pfn, unsigned order)
{
	unsigned pb;

	pg->refcount = 0;
	if (dmm__owner(pg))
		dmm__set_owner(pg, (void *)0);
	if (dmm__private(pg))
		dmm__set_private(pg, 0);
	/* Only movable pages carry flags: keep the locked RMW off the common path. */
	if (__atomic_load_n(&pg->flags, __ATOMIC_RELAXED) & (DMM_PGF_MOVABLE | DMM_PGF_MIGRATING))
		__atomic_fetch_and(&pg->flags, (uint8_t)~(DMM_PGF_MOVABLE | DMM_PGF_MIGRATING),
				   __ATOMIC_RELEASE);
	pb = pageblock_mt(mem, pfn); /* once: isolation may change it under us */
	if (order <= DMM_PCP_MAX_ORDER && pb != DMM_MT_ISOLATE) {
		pcp_free(z, pg, order, pb);
	} else {
		dmm__lock(mem, &z->lock);
		dmm__free_block_locked(z, pfn, order);
		z->stats.free_ok++;
		dmm__unlock(mem, &z->lock);
	}
	dmm__wmark_after_free(z);
}

int dmm_page_free(struct dmm_mem *mem, dmm_pfn_t pfn, unsigned order)
{
	struct dmm_page *pg;
	struct dmm_zone *z;
	int err;

	if (!mem)
		return -DMM_EINVAL;
	pg = dmm_pfn_to_page(mem, pfn);
	if (!pg)
		return -DMM_ENOENT;
	z = zone_of_page(mem, pg);
	if (!z)
		return -DMM_ENOENT;
	if (dmm__state(pg) != DMM_PAGE_ALLOC) {
		stat_inc(&z->stats.bad_free);
		return -DMM_ENOENT;
	}
	if (order > DMM_MAX_ORDER || dmm__order(pg) != order) {
		stat_inc(&z->stats.bad_free);
		/* a free of the block by another, since the state was read
		 * (and before the order was), may have merged it with its
		 * buddy, so that its order changed: that free came first */
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		return dmm__state(pg) != DMM_PAGE_ALLOC ? -DMM_ENOENT : -DMM_EINVAL;
	}
	if (__atomic_load_n(&pg->flags, __ATOMIC_RELAXED) & FREE_NEVER_FLAGS) {
		/* the small-object allocator's (a slab, or a large object:
		 * dmm_kfree gives those back), or a coherent DMA buffer
		 * (dmm_dma_free_coherent), or the library's own memory */
		stat_inc(&z->stats.bad_free);
		return (__atomic_load_n(&pg->flags, __ATOMIC_RELAXED) & DMM_PGF_INTERNAL) ? -DMM_EPERM : -DMM_EBUSY;
	}
	/* claimed (FREEING), or refused: freed at once by another, or pinned */
	if ((err = dmm__free_claim(pg, DMM_PAGE_ALLOC)) != 0) {
		stat_inc(&z->stats.bad_free);
		return err;
	}
	free_claimed(mem, z, pg, pfn, order);
	return 0;
}

/* ---- frees in two steps ------------------------------------------------------- */

/* The claim of dmm__free_begin, uncounted. */
static int claim_for_free(struct dmm_mem *mem, struct dmm_zone *z, struct dmm_page *pg, uint8_t from)
{
	int err;

	if (from == DMM_PAGE_RANGE) {
		/* as dmm_free_range: under the zone lock, where a range's
		 * state changes; a contiguous area's range is not the range
		 * allocator's */
		dmm__lock(mem, &z->lock);
		err = pg->owner ? -DMM_ENOENT : dmm__free_claim(pg, from);
		dmm__unlock(mem, &z->lock);
		return err;
	}
	return from == DMM_PAGE_ALLOC ? dmm__free_claim(pg, from) : -DMM_ENOENT;
}

int dmm__free_begin(struct dmm_mem *mem, struct dmm_page *pg, uint8_t from)
{
	struct dmm_zone *z = zone_of_page(mem, pg);
	int err;

	if (!z)
		return -DMM_ENOENT;
	err = claim_for_free(mem, z, pg, from);
	if (err)
		stat_inc(&z->stats.bad_free);
	return err;
}

void dmm__free_cancel(struct dmm_page *pg, uint8_t from)
{
	dmm__set_state(pg, from);
}

void dmm__free_finish(struct dmm_mem *mem, struct dmm_page *pg, uint8_t from)
{
	struct dmm_zone *z = zone_of_page(mem, pg);

	if (from == DMM_PAGE_RANGE)
		dmm__range_free_claimed(mem, z, pg);
	else
		free_claimed(mem, z, pg, pg->pfn, dmm__order(pg));
}

/* ---- the library's own memory --------------------------------------------------- */

void dmm__lib_mark(struct dmm_mem *mem, dmm_pfn_t pfn, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		__atomic_fetch_or(&dmm__pfn_page(mem, pfn + i)->flags, (uint8_t)DMM_PGF_INTERNAL, __ATOMIC_RELAXED);
}

int dmm__lib_free_begin(struct dmm_mem *mem, struct dmm_page *pg, uint8_t from)
{
	struct dmm_zone *z = pg ? zone_of_page(mem, pg) : (struct dmm_zone *)0;
	int err;

	if (!z || !(__atomic_load_n(&pg->flags, __ATOMIC_ACQUIRE) & DMM_PGF_INTERNAL) ||
	    dmm__state(pg) != from) {
		err = -DMM_ENOENT;
		goto bad;
	}
	/* No pin stays on the library's memory: dmm_page_pin refuses a page
	 * with the mark, and one that read the page before the mark was set
	 * (before it was allocated) finds it once it has counted itself and
	 * takes its count back. A claim that sees such a passing count is
	 * refused: wait for it to go. */
	while ((err = claim_for_free(mem, z, pg, from)) == -DMM_EBUSY)
		__asm__ __volatile__("" ::: "memory");
	if (!err)
		return 0;
bad:
	if (z)
		stat_inc(&z->stats.bad_free);
	dmm_log(mem, DMM_LOG_ERR, "free of the library's memory at pfn %llu: %s (state %u)",
		pg ? (unsigned long long)pg->pfn : 0ull, dmm_errname(err), pg ? dmm__state(pg) : 0u);
	return err;
}

void dmm__lib_free_finish(struct dmm_mem *mem, struct dmm_page *pg, uint8_t from)
{
	uint64_t n = from == DMM_PAGE_RANGE ? dmm__private(pg) : (uint64_t)1 << dmm__order(pg);

	/* claimed (FREEING): a pinner that finds the mark gone finds the
	 * block being freed (-DMM_EAGAIN), then free */
	for (uint64_t i = 0; i < n; i++)
		__atomic_fetch_and(&dmm__pfn_page(mem, pg->pfn + i)->flags, (uint8_t)~DMM_PGF_INTERNAL,
				   __ATOMIC_RELEASE);
	dmm__free_finish(mem, pg, from);
}

/* Size check, claim, mark off, free: 0, or (a bug) -DMM_ENOENT/-DMM_EINVAL. */
static int lib_free(struct dmm_mem *mem, dmm_pfn_t pfn, uint8_t from, uint64_t size)
{
	struct dmm_page *pg = dmm_pfn_to_page(mem, pfn);
	int err;

	if (pg && dmm__state(pg) == from &&
	    (from == DMM_PAGE_RANGE ? dmm__private(pg) : (uint64_t)dmm__order(pg)) != size) {
		dmm_log(mem, DMM_LOG_ERR, "free of the library's memory at pfn %llu: %llu, allocated %llu",
			(unsigned long long)pfn, (unsigned long long)size,
			(unsigned long long)(from == DMM_PAGE_RANGE ? dmm__private(pg) : dmm__order(pg)));
		if (pg->zone < mem->nr_zones)
			stat_inc(&mem->zones[pg->zone].stats.bad_free);
		return -DMM_EINVAL;
	}
	err = dmm__lib_free_begin(mem, pg, from);
	if (err)
		return err;
	dmm__lib_free_finish(mem, pg, from);
	return 0;
}

int dmm__lib_page_free(struct dmm_mem *mem, dmm_pfn_t pfn, unsigned order)
{
	return lib_free(mem, pfn, DMM_PAGE_ALLOC, order);
}

int dmm__lib_free_range(struct dmm_mem *mem, dmm_pfn_t pfn, uint64_t nr_pages)
{
	return lib_free(mem, pfn, DMM_PAGE_RANGE, nr_pages);
}

/* ---- information ---------------------------------------------------------------- */

unsigned dmm_mem_nr_zones(const struct dmm_mem *mem)
{
	return mem ? mem->nr_zones : 0;
}

int dmm_zone_index(const struct dmm_mem *mem, enum dmm_zone_type type)
{
	if (!mem || (unsigned)type >= DMM_NR_ZONE_TYPES)
		return -DMM_EINVAL;
	return mem->zone_of_type[type] < 0 ? -DMM_ENOENT : mem->zone_of_type[type];
}

uint64_t dmm_mem_free_pages(struct dmm_mem *mem)
{
	uint64_t n = 0;
	if (!mem)
		return 0;
	for (unsigned i = 0; i < mem->nr_zones; i++)
		n += zone_free(&mem->zones[i]);
	return n;
}

int dmm_zone_get_info(struct dmm_mem *mem, unsigned zone, struct dmm_zone_info *out)
{
	struct dmm_zone *z;
	uint64_t pcp_alloc = 0, pcp_free = 0, pcp_refill = 0, pcp_drain = 0, pcp_pages = 0;

	if (!mem || !out || zone >= mem->nr_zones)
		return -DMM_EINVAL;
	z = &mem->zones[zone];
	for (unsigned c = 0; c < mem->plat.nr_cpus; c++) {
		struct dmm_pcp *pcp = &z->pcp[c];
		dmm__lock(mem, &pcp->lock);
		pcp_alloc += pcp->alloc;
		pcp_free += pcp->free;
		pcp_refill += pcp->refill;
		pcp_drain += pcp->drain;
		pcp_pages += pcp->count;
		dmm__unlock(mem, &pcp->lock);
	}
	dmm_memset(out, 0, sizeof(*out));
	dmm__lock(mem, &z->lock);
	out->type = z->type;
	out->name = dmm_zone_name(z->type);
	out->start_pfn = z->start_pfn;
	out->end_pfn = z->end_pfn;
	out->spanned = z->end_pfn - z->start_pfn;
	out->present = z->present;
	out->managed = z->managed;
	out->free = z->free;
	out->pcp = pcp_pages;
	out->wmark_min = z->wmark[0];
	out->wmark_low = z->wmark[1];
	out->wmark_high = z->wmark[2];
	for (unsigned t = 0; t < DMM_NR_ZONE_TYPES; t++)
		out->protection[t] = z->lowmem_reserve[t];
	for (unsigned o = 0; o < DMM_NR_ORDERS; o++)
		for (unsigned mt = 0; mt < DMM_NR_MIGRATETYPES; mt++) {
			out->free_blocks_mt[mt][o] = z->nr_free[o][mt];
			out->free_blocks[o] += z->nr_free[o][mt];
		}
	for (unsigned mt = 0; mt < DMM_NR_MIGRATETYPES; mt++)
		out->pageblocks_mt[mt] = z->pageblocks_mt[mt];
	{
		const uint64_t *src = (const uint64_t *)&z->stats;
		uint64_t *dst = (uint64_t *)&out->stats;
		for (size_t i = 0; i < sizeof(z->stats) / sizeof(uint64_t); i++)
			dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
	}
	dmm__unlock(mem, &z->lock);
	out->stats.alloc_ok += pcp_alloc;
	out->stats.free_ok += pcp_free;
	out->stats.pcp_alloc = pcp_alloc;
	out->stats.pcp_free = pcp_free;
	out->stats.pcp_refill = pcp_refill;
	out->stats.pcp_drain = pcp_drain;
	return 0;
}

/* ---- invariant walk --------------------------------------------------------------- */

#define CHECK(mem, cond, ...)                                     \
	do {                                                      \
		if (!(cond)) {                                    \
			dmm_log(mem, DMM_LOG_ERR, __VA_ARGS__);   \
			err = -DMM_EFAULT;                        \
			goto out;                                 \
		}                                                 \
	} while (0)

static int check_zone_locked(struct dmm_mem *mem, struct dmm_zone *z)
{
	uint64_t total = 0, indexed = 0, heads = 0, listed = 0, pcp_total = 0, cma = 0, iso = 0,
		 pb[DMM_NR_MIGRATETYPES] = { 0 };
	int err = 0;

	for (unsigned o = 0; o < DMM_NR_ORDERS; o++) {
		for (unsigned mt = 0; mt < DMM_NR_MIGRATETYPES; mt++) {
			uint64_t n = 0;
			struct dmm_page *prev = (struct dmm_page *)0;
			for (struct dmm_page *pg = z->free_list[o][mt]; pg; pg = pg->next) {
				uint64_t size = (uint64_t)1 << o;
				CHECK(mem, pg->prev == prev, "check: zone %s order %u: broken back link at pfn %llu",
				      dmm_zone_name(z->type), o, (unsigned long long)pg->pfn);
				CHECK(mem, dmm__state(pg) == DMM_PAGE_FREE && dmm__order(pg) == o && dmm__mt(pg) == mt,
				      "check: pfn %llu on list (%u,%u) has state %u order %u mt %u",
				      (unsigned long long)pg->pfn, o, mt, dmm__state(pg), dmm__order(pg), dmm__mt(pg));
				CHECK(mem, !(__atomic_load_n(&pg->flags, __ATOMIC_RELAXED) & FREE_NEVER_FLAGS),
				      "check: free block pfn %llu still marked as a user's (flags %#x)",
				      (unsigned long long)pg->pfn, (unsigned)pg->flags);
				CHECK(mem, !(pg->pfn & (size - 1)) && pg->pfn >= z->start_pfn &&
					       pg->pfn + size <= z->end_pfn && pg->zone == z->idx,
				      "check: free block pfn %llu order %u misplaced", (unsigned long long)pg->pfn, o);
				CHECK(mem, mt != DMM_MT_ISOLATE || o <= DMM_PAGEBLOCK_ORDER,
				      "check: isolated free block pfn %llu of order %u spans pageblocks",
				      (unsigned long long)pg->pfn, o);
				for (uint64_t b = 0; b < size; b += DMM_PAGEBLOCK_PAGES)
					CHECK(mem, pageblock_mt(mem, pg->pfn + b) == mt,
					      "check: free block pfn %llu (mt %u) in pageblock of type %u",
					      (unsigned long long)pg->pfn, mt, pageblock_mt(mem, pg->pfn + b));
				for (uint64_t i = 0; i < size; i++) {
					CHECK(mem, dmm__rt_test(&z->rt, pg->pfn + i) == mt_indexed(mt),
					      "check: free pfn %llu (%s) %s the range index",
					      (unsigned long long)(pg->pfn + i), dmm_migratetype_name(mt),
					      mt_indexed(mt) ? "missing from" : "wrongly in");
					CHECK(mem,
					      !(__atomic_load_n(&pg[i].flags, __ATOMIC_RELAXED) & DMM_PGF_INTERNAL),
					      "check: free pfn %llu still marked as the library's",
					      (unsigned long long)(pg->pfn + i));
				}
				total += size;
				if (mt_indexed(mt))
					indexed += size;
				if (mt == DMM_MT_CMA)
					cma += size;
				else if (mt == DMM_MT_ISOLATE)
					iso += size;
				n++;
				prev = pg;
			}
			CHECK(mem, n == z->nr_free[o][mt], "check: list (%u,%u) has %llu blocks, count says %llu",
			      o, mt, (unsigned long long)n, (unsigned long long)z->nr_free[o][mt]);
			listed += n;
		}
	}
	CHECK(mem, total == z->free, "check: zone %s lists hold %llu pages, free says %llu",
	      dmm_zone_name(z->type), (unsigned long long)total, (unsigned long long)z->free);
	CHECK(mem, cma == z->free_cma && iso == z->free_isolate,
	      "check: zone %s area/isolated lists hold %llu/%llu pages, counts say %llu/%llu",
	      dmm_zone_name(z->type), (unsigned long long)cma, (unsigned long long)iso,
	      (unsigned long long)z->free_cma, (unsigned long long)z->free_isolate);
	/* Bits set == pages listed and every listed page has its bit: no overlap. */
	CHECK(mem, dmm__rt_popcount(&z->rt) == indexed,
	      "check: zone %s range index has %llu free pages, ordinary lists %llu", dmm_zone_name(z->type),
	      (unsigned long long)dmm__rt_popcount(&z->rt), (unsigned long long)indexed);

	for (unsigned c = 0; c < mem->plat.nr_cpus; c++) {
		struct dmm_pcp *pcp = &z->pcp[c];
		uint64_t pages = 0;
		for (unsigned o = 0; o < DMM_NR_PCP_ORDERS; o++)
			for (unsigned mt = 0; mt < DMM_PCP_NR_LISTS; mt++) {
				uint64_t n = 0;
				for (struct dmm_page *pg = pcp->list[o][mt]; pg; pg = pg->next) {
					CHECK(mem, dmm__state(pg) == DMM_PAGE_PCP && dmm__order(pg) == o && pg->zone == z->idx,
					      "check: pcp page pfn %llu bad state %u order %u",
					      (unsigned long long)pg->pfn, dmm__state(pg), dmm__order(pg));
					CHECK(mem, !dmm__rt_test(&z->rt, pg->pfn),
					      "check: pcp page pfn %llu also marked free", (unsigned long long)pg->pfn);
					CHECK(mem, !(__atomic_load_n(&pg->flags, __ATOMIC_RELAXED) & FREE_NEVER_FLAGS),
					      "check: pcp page pfn %llu still marked as a user's (flags %#x)",
					      (unsigned long long)pg->pfn, (unsigned)pg->flags);
					for (uint64_t i = 1; i < ((uint64_t)1 << o); i++)
						CHECK(mem,
						      !(__atomic_load_n(&pg[i].flags, __ATOMIC_RELAXED) &
							DMM_PGF_INTERNAL),
						      "check: pcp pfn %llu still marked as the library's",
						      (unsigned long long)(pg->pfn + i));
					n++;
					pages += (uint64_t)1 << o;
				}
				CHECK(mem, n == pcp->nr[o][mt], "check: pcp list count mismatch");
			}
		CHECK(mem, pages == pcp->count, "check: pcp count %llu != %llu", (unsigned long long)pcp->count,
		      (unsigned long long)pages);
		pcp_total += pages;
	}
	(void)pcp_total;

	/* Every FREE head in the zone is on a list; pageblock counts agree. */
	count_pageblocks(mem, z, pb);
	for (unsigned mt = 0; mt < DMM_NR_MIGRATETYPES; mt++)
		CHECK(mem, pb[mt] == z->pageblocks_mt[mt], "check: zone %s has %llu pageblocks of type %s, count %llu",
		      dmm_zone_name(z->type), (unsigned long long)pb[mt], dmm_migratetype_name(mt),
		      (unsigned long long)z->pageblocks_mt[mt]);
	for (dmm_pfn_t p = z->start_pfn; p < z->end_pfn; p++) {
		struct dmm_page *pg = dmm__pfn_page(mem, p);
		uint8_t st, f;

		if (!pg)
			continue;
		st = dmm__state(pg);
		f = __atomic_load_n(&pg->flags, __ATOMIC_RELAXED);
		if (st == DMM_PAGE_FREE)
			heads++;
		/* The library's mark: only on allocated pages (a page popped
		 * from a per-CPU list still reads PCP until its head is
		 * stored; the listed ones were checked above), and on no
		 * block a user marks as its own. */
		CHECK(mem, !(f & DMM_PGF_INTERNAL) || (st != DMM_PAGE_FREE && st != DMM_PAGE_RESERVED),
		      "check: pfn %llu in state %u marked as the library's", (unsigned long long)p, st);
		CHECK(mem,
		      !(f & DMM_PGF_INTERNAL) || !(f & ((FREE_NEVER_FLAGS & ~DMM_PGF_INTERNAL) | DMM_PGF_MOVABLE)),
		      "check: pfn %llu marked as the library's and a user's (flags %#x)", (unsigned long long)p,
		      (unsigned)f);
	}
	CHECK(mem, heads == listed, "check: zone %s has %llu free heads, %llu listed", dmm_zone_name(z->type),
	      (unsigned long long)heads, (unsigned long long)listed);
	err = dmm__rt_check_zone(mem, z);
out:
	return err;
}

int dmm_page_alloc_check(struct dmm_mem *mem)
{
	int err = 0;

	if (!mem)
		return -DMM_EINVAL;
	for (unsigned i = 0; i < mem->nr_zones && !err; i++) {
		struct dmm_zone *z = &mem->zones[i];
		for (unsigned c = 0; c < mem->plat.nr_cpus; c++)
			dmm__lock(mem, &z->pcp[c].lock);
		dmm__lock(mem, &z->lock);
		err = check_zone_locked(mem, z);
		dmm__unlock(mem, &z->lock);
		for (unsigned c = mem->plat.nr_cpus; c-- > 0;)
			dmm__unlock(mem, &z->pcp[c].lock);
	}
	return err;
}

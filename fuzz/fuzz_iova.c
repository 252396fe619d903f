/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: random sequences of IOVA allocator operations (dmm_iova_*)
 * against a reference model, one domain per input.
 *
 * The machine (created once): 32 MiB of RAM, one CPU; it only provides the
 * pages of the domain, its tree nodes and magazines. The first bytes of an
 * input choose the domain: alignment policy (POW2 / PAGE), 0..3 guard
 * pages, low32_first, no_cache (a quarter of the inputs), small magazines,
 * depot and cache bound (1..512 pages) so that swaps, full depots and the
 * bound are reached, and one of four shapes: a few thousand pages at the
 * bottom (base 0 or a few pages: exhaustion), a few thousand to 260 k pages
 * across 4 GiB (both cache bands), 8..64 GiB from the bottom (2 M..16 M
 * pages), or a few thousand to 260 k pages above 4 GiB (32-bit limits are
 * refused). The rest is read as operations: alloc (1 byte .. 400 pages, a
 * new size or that of a cached or live range; limit = the domain's, 4 GiB
 * - 1, or a random page-aligned or ragged end; alone, in bursts of up to 64,
 * or up to 128 to fill the space), free of live ranges (alone, in bursts,
 * or runs of neighbours out of every few: misaligned gaps), alloc/free
 * cycles of one request (the magazines and the depot), a free of a live
 * range with a wrong size or start and a double free (only through the
 * tree path: a cacheable size with caches on goes to the per-CPU cache
 * without consulting the tree, which trusts its caller), dmm_iova_find on
 * live, cached and random addresses, trim (all or idle), and invalid
 * arguments (size 0, a limit below the domain, an unaligned iova, frees
 * outside the domain, domains that may not be created).
 *
 * The reference: a bitmap of the pages held by live ranges and their guard
 * pages, the live list, and the ranges sitting in the caches ("ghosts").
 * A free that the stats count as cached (cache_frees + 1) makes a ghost;
 * after every operation each ghost is looked up (a cached range stays
 * allocated in the tree, so dmm_iova_find reports it exactly; a flushed one
 * is gone) and the ghosts must then account for exactly the stats' cached
 * ranges and pages. Checked after every call: dmm_iova_check(); the
 * domain's ranges, allocated pages (guards included), cached ranges/pages,
 * largest free gap and number of gaps equal what the reference says; every
 * counter (allocs, frees, failures by reason, cache hits + misses +
 * uncacheable = valid requests). After every operation: the page
 * allocator's free pages + slab pages unchanged apart from the domain's own
 * pages. Every returned range is inside the domain, never page 0, ends at
 * or below its limit (its guard may extend above the limit but not above
 * the domain), is aligned as the policy says (POW2: to its size rounded up
 * to a power of two; PAGE: to a page), has the rounded size (as
 * dmm_iova_rounded says), and overlaps neither a live range nor
 * a guard nor (unless the allocation flushed the caches) a cached range; a
 * cache hit returns exactly a cached range of its size, and a tree
 * allocation whose searches did not run out of budget is the highest fit
 * (below 4 GiB first with low32_first). An ENOSPC (and a search that failed
 * before the caches were flushed and the request retried) is confirmed by
 * a brute-force scan of the bitmap (see oracle_no_fit: exact unless the
 * search fell back after 256 nodes, then what the fallback guarantees). An
 * idle trim after no cache operation must empty the caches. Any
 * violation aborts. At the end of each input everything is freed, the
 * caches trimmed, the domain must be empty, and after its destruction the
 * page allocator and the small-object allocator must be back where they
 * were (free + slab pages, live objects).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dmamem/dmamem.h>
#include <dmamem/hosted.h>
#include <dmamem/iommu.h>

#include "fuzz_target.h"

#define PG ((uint64_t)DMM_PAGE_SIZE)
#define MiB ((uint64_t)1 << 20)
#define GiB ((uint64_t)1 << 30)
#define PFN_4G ((dmm_pfn_t)1 << (32 - DMM_PAGE_SHIFT))
#define SPACE_PAGES ((uint64_t)16 << 20) /* 64 GiB: no domain reaches above */
/* More live ranges than the search's 256-node budget, so that its fallback
 * runs (see oracle_no_fit for what that does to the ENOSPC check). */
#define MAX_LIVE 512
#define MAX_GHOST 1024                 /* > the largest cache bound chosen (512 pages) */
#define NR_RECENT 8
#define NO_IOVA ((dmm_dma_addr_t)0xdead000000000123ull) /* must survive a failed alloc */
#define SEARCH_BUDGET 256              /* src/iommu/iova.c: nodes a search visits before its fallback */

struct rng {
	dmm_pfn_t pfn;
	uint64_t pages;  /* rounded size (no guard) */
	uint64_t size;   /* bytes asked for */
};

struct counts {
	uint64_t inputs, ops, alloc_ok, cache_hits, placements, nospace,
		flush_retries, fallbacks, frees, cached_frees, bad_calls, finds, trims, domains[4];
};

static struct {
	int ready;
	struct dmm_machine m;
	struct dmm_hosted *hosted;
	struct dmm_mem *mem;
	uint64_t base_total;    /* free + slab pages of the idle machine */
	uint64_t base_objs;     /* live small objects of the idle machine */
	uint64_t dom_pages;     /* pages the domain itself takes from the page allocator */

	/* the domain of this input */
	struct dmm_iova_domain *d;
	struct dmm_iova_opts o;
	dmm_dma_addr_t base, limit;
	dmm_pfn_t start, end;   /* pages that may be handed out */
	uint64_t g;             /* guard pages */
	int pow2, cache_on, kind;

	/* the reference */
	uint64_t resv[SPACE_PAGES / 64]; /* pages of live ranges and their guards */
	struct rng live[MAX_LIVE];       /* sorted by pfn */
	unsigned nl;
	uint64_t live_pages;             /* their pages, guards included */
	struct rng ghost[MAX_GHOST];     /* freed into the caches (sorted by pfn) */
	unsigned ng;
	struct rng merged[MAX_LIVE + MAX_GHOST];
	struct rng recent[NR_RECENT];    /* freed through the tree, for double frees */
	unsigned nr_recent;
	int cache_dirty;                 /* a cache operation since the last trim */
	dmm_pfn_t last_alloc;            /* first page of the last range allocated */

	/* what the domain's counters must say */
	uint64_t e_allocs, e_frees, e_cache_frees, e_nospace, e_invalid, e_unknown, e_requests;
	struct dmm_iova_stats st;        /* after the last check */

	uint64_t step;
	struct counts cnt;
} F;

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "fuzz_iova: step %llu: ", (unsigned long long)F.step);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr,
		"\n  domain [%#llx, %#llx] (pages %#llx..%#llx) align %s guard %llu low32_first %d no_cache %d "
		"mag_size %u depot_max %u cache_max_pages %llu; %u live, %u cached\n",
		(unsigned long long)F.base, (unsigned long long)F.limit, (unsigned long long)F.start,
		(unsigned long long)F.end, F.pow2 ? "pow2" : "page", (unsigned long long)F.g, F.o.low32_first,
		F.o.no_cache, F.o.mag_size, F.o.depot_max, (unsigned long long)F.o.cache_max_pages, F.nl, F.ng);
	abort();
}

/* the operation log (DMM_FUZZ_TRACE) */
#define trace(...) dmm_fuzz_trace(F.step, __VA_ARGS__)

/* ---- input reader ---------------------------------------------------------- */

/* the input reader (struct rd, u8/u16/u32) is in fuzz_target.h */

/* ---- the machine and its page accounting --------------------------------------- */

static void setup(void)
{
	struct dmm_machine *m = &F.m;
	dmm_machine_defaults(m);
	snprintf(m->name, sizeof(m->name), "fuzz-iova");
	m->ram[0] = (struct dmm_region){ 0, 32 * MiB };
	m->nr_ram = 1;
	if (dmm_hosted_mem_create(m, 1, &F.hosted, &F.mem))
		die("cannot create the memory map");
	F.ready = 1;
}

static uint64_t total_free(void)
{
	uint64_t n = 0;
	for (unsigned z = 0; z < dmm_mem_nr_zones(F.mem); z++) {
		struct dmm_zone_info zi;
		if (dmm_zone_get_info(F.mem, z, &zi))
			die("zone_get_info(%u) failed", z);
		n += zi.free + zi.pcp;
	}
	return n;
}

/* The small-object allocator keeps slabs (an empty one per class, and those
 * holding objects in its per-CPU magazines) and include/dmamem/slab.h has
 * no call to shrink them; instead of a tolerance, count them: free pages +
 * slab pages is what must be conserved, and live objects must come back to
 * their count. */
static void slab_usage(uint64_t *pages, uint64_t *objs)
{
	*pages = *objs = 0;
	for (unsigned s = 0; s < DMM_KMALLOC_NR_SETS; s++)
		for (unsigned c = 0; c < DMM_KMALLOC_NR_CLASSES; c++) {
			struct dmm_slab_class_info ci;
			if (dmm_slab_class_info(F.mem, s, c, &ci))
				die("slab_class_info(%u, %u) failed", s, c);
			*pages += ci.slabs << ci.slab_order;
			*objs += ci.objects;
		}
}

static uint64_t mem_total(void)
{
	uint64_t pages, objs;
	slab_usage(&pages, &objs);
	return total_free() + pages;
}

static uint64_t slab_objects(void)
{
	uint64_t pages, objs;
	slab_usage(&pages, &objs);
	return objs;
}

/* ---- the reference ----------------------------------------------------------- */

static int resv_test(dmm_pfn_t p)
{
	return (int)((F.resv[p >> 6] >> (p & 63)) & 1);
}

static void resv_set(dmm_pfn_t lo, uint64_t n, int on)
{
	for (dmm_pfn_t p = lo; p < lo + n; p++) {
		if (on)
			F.resv[p >> 6] |= 1ull << (p & 63);
		else
			F.resv[p >> 6] &= ~(1ull << (p & 63));
	}
}

static int resv_any(dmm_pfn_t lo, uint64_t n)
{
	for (dmm_pfn_t p = lo; p < lo + n; p++)
		if (resv_test(p))
			return 1;
	return 0;
}

static uint64_t pow2_up(uint64_t n)
{
	uint64_t p = 1;
	while (p < n)
		p <<= 1;
	return p;
}

static int is_pow2(uint64_t x)
{
	return x && !(x & (x - 1));
}

/* Pages a request of @size bytes takes (POW2 rounds the cached sizes, up to
 * 32 pages, to a power of two; larger ones keep their page count). */
static uint64_t m_pages(uint64_t size)
{
	uint64_t p = size / PG + (size % PG != 0);
	if (F.pow2 && p <= 32)
		p = pow2_up(p);
	return p;
}

static uint64_t m_align(uint64_t pages)
{
	return F.pow2 ? pow2_up(pages) : 1;
}

/* A free of this size goes to the per-CPU cache first (no tree lookup). */
static int m_cacheable(uint64_t pages)
{
	return F.cache_on && is_pow2(pages) && pages <= 32;
}

static int m_alloc_invalid(uint64_t size, dmm_dma_addr_t limit)
{
	return !size || size > ((uint64_t)1 << 48) || limit < ((F.start + 1) << DMM_PAGE_SHIFT) - 1;
}

/* The last page every byte of which is at or below @limit, clipped. */
static dmm_pfn_t m_lim(dmm_dma_addr_t limit)
{
	if (limit >= ((F.end + 1) << DMM_PAGE_SHIFT) - 1)
		return F.end;
	return ((limit + 1) >> DMM_PAGE_SHIFT) - 1;
}

static unsigned lower_bound(const struct rng *a, unsigned n, dmm_pfn_t pfn)
{
	unsigned lo = 0, hi = n;
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		if (a[mid].pfn < pfn)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void list_insert(struct rng *a, unsigned *n, unsigned cap, struct rng x, const char *what)
{
	if (*n >= cap)
		die("%s list full", what);
	unsigned i = lower_bound(a, *n, x.pfn);
	memmove(&a[i + 1], &a[i], (*n - i) * sizeof(*a));
	a[i] = x;
	(*n)++;
}

static void list_remove(struct rng *a, unsigned *n, unsigned i)
{
	memmove(&a[i], &a[i + 1], (*n - i - 1) * sizeof(*a));
	(*n)--;
}

/* The entry of @a whose pages (guard excluded) contain @p, or -1. */
static int covering(const struct rng *a, unsigned n, dmm_pfn_t p)
{
	unsigned i = lower_bound(a, n, p + 1);
	if (i && p < a[i - 1].pfn + a[i - 1].pages)
		return (int)(i - 1);
	return -1;
}

static int find_exact(const struct rng *a, unsigned n, dmm_pfn_t pfn, uint64_t pages)
{
	unsigned i = lower_bound(a, n, pfn);
	return i < n && a[i].pfn == pfn && a[i].pages == pages ? (int)i : -1;
}

/* Live ranges (and the ghosts) merged in address order into F.merged. */
static unsigned build_merged(int with_ghosts)
{
	unsigned i = 0, j = 0, k = 0, ng = with_ghosts ? F.ng : 0;
	while (i < F.nl || j < ng) {
		if (j == ng || (i < F.nl && F.live[i].pfn < F.ghost[j].pfn))
			F.merged[k++] = F.live[i++];
		else
			F.merged[k++] = F.ghost[j++];
	}
	return k;
}

/*
 * The highest fit for @pages aligned to @a ending at or below page @lim,
 * in the space left by the live ranges (and the ghosts): a block of
 * pages + guard pages, all free, inside the domain, its first page aligned,
 * its last non-guard page at or below @lim; only in free gaps (between two
 * ranges with their guards, or the domain's ends) of at least @min_gap
 * pages before the limit clips them. Walks the gaps from the top:
 * O(live + ghosts).
 */
static int best_fit_in(uint64_t pages, uint64_t a, dmm_pfn_t lim, int with_ghosts, uint64_t min_gap,
		       dmm_pfn_t *out)
{
	uint64_t len = pages + F.g;
	unsigned n = build_merged(with_ghosts);
	dmm_pfn_t top = (lim + F.g < F.end ? lim + F.g : F.end) + 1; /* blocks end at or below */

	for (unsigned i = n + 1; i-- > 0;) {
		dmm_pfn_t gs = i ? F.merged[i - 1].pfn + F.merged[i - 1].pages + F.g : F.start;
		dmm_pfn_t ge = i < n ? F.merged[i].pfn : F.end + 1;
		if (ge - gs < min_gap)
			continue;
		if (ge > top)
			ge = top;
		if (ge > gs && ge - gs >= len) {
			dmm_pfn_t s = (ge - len) / a * a;
			if (s >= gs) {
				*out = s;
				return 1;
			}
		}
	}
	return 0;
}

static int best_fit(uint64_t pages, uint64_t a, dmm_pfn_t lim, int with_ghosts, dmm_pfn_t *out)
{
	return best_fit_in(pages, a, lim, with_ghosts, 0, out);
}

/*
 * Brute force over the bitmap (the ENOSPC oracle): is there any page s,
 * aligned to @a, with the pages + guard pages from s all free and inside
 * the domain and page s + pages - 1 at or below @lim? *@out: the highest.
 */
static int brute_fit(uint64_t pages, uint64_t a, dmm_pfn_t lim, dmm_pfn_t *out)
{
	uint64_t len = pages + F.g, run = 0;
	dmm_pfn_t top = lim + F.g < F.end ? lim + F.g : F.end;
	int found = 0;

	for (dmm_pfn_t p = F.start; p <= top; p++) {
		if (!(p & 63) && p + 63 <= top && !F.resv[p >> 6]) {
			/* 64 free pages at once: the highest aligned block of the
			 * run that ends in them, if it starts inside the run */
			dmm_pfn_t run_start = p - run;
			run += 64;
			if (run >= len) {
				dmm_pfn_t s = (p + 64 - len) / a * a;
				if (s >= run_start) {
					*out = s;
					found = 1;
				}
			}
			p += 63;
			continue;
		}
		run = resv_test(p) ? 0 : run + 1;
		if (run >= len && (p + 1 - len) % a == 0) {
			*out = p + 1 - len;
			found = 1;
		}
	}
	return found;
}

/*
 * Every ghost (a range freed into the caches) still cached? A cached range
 * stays allocated in the tree and dmm_iova_find reports it exactly; one the
 * caches gave back to the tree (full depot, bound, trim, a flush before
 * ENOSPC) is gone, and may have been handed out again (then it overlaps a
 * live range). Ghosts are kept disjoint from live ranges and from each other.
 */
static uint64_t settle(void)
{
	uint64_t pages = 0;
	for (unsigned i = 0; i < F.ng;) {
		struct rng gh = F.ghost[i];
		dmm_dma_addr_t s = 0;
		uint64_t z = 0;
		if (resv_any(gh.pfn, gh.pages + F.g)) {
			list_remove(F.ghost, &F.ng, i);
			continue;
		}
		int rc = dmm_iova_find(F.d, gh.pfn << DMM_PAGE_SHIFT, &s, &z);
		if (rc == -DMM_ENOENT) {
			list_remove(F.ghost, &F.ng, i);
			continue;
		}
		if (rc || s != gh.pfn << DMM_PAGE_SHIFT || z != gh.pages << DMM_PAGE_SHIFT)
			die("find(%#llx), a range freed into the caches: %s [%#llx, +%#llx), nobody holds that",
			    (unsigned long long)(gh.pfn << DMM_PAGE_SHIFT), dmm_errname(rc), (unsigned long long)s,
			    (unsigned long long)z);
		pages += gh.pages;
		i++;
	}
	return pages;
}

/* Everything the domain reports must be what the reference says. @now:
 * the stats just taken after the operation (NULL: take them; neither the
 * check nor the lookups change them). */
static void check_all_st(const char *after, const struct dmm_iova_stats *now)
{
	struct dmm_iova_stats st;
	uint64_t gp, largest = 0, gaps = 0;
	int rc = dmm_iova_check(F.d);

	if (rc)
		die("after %s: dmm_iova_check: %s", after, dmm_errname(rc));
	gp = settle();
	if (now)
		st = *now;
	else
		dmm_iova_get_stats(F.d, &st);
#define WANT(field, v)                                                                                        \
	do {                                                                                                  \
		if (st.field != (uint64_t)(v))                                                                \
			die("after %s: stats." #field " %llu, want %llu", after, (unsigned long long)st.field, \
			    (unsigned long long)(v));                                                         \
	} while (0)
	WANT(ranges, F.nl + F.ng);
	WANT(cached_ranges, F.ng);
	WANT(cached_pages, gp);
	WANT(allocated_pages, F.live_pages + gp + F.ng * F.g);
	WANT(span_pages, F.end - F.start + 1);
	WANT(allocs, F.e_allocs);
	WANT(frees, F.e_frees);
	WANT(cache_frees, F.e_cache_frees);
	WANT(fail_nospace, F.e_nospace);
	WANT(fail_invalid, F.e_invalid);
	WANT(free_unknown, F.e_unknown);
	WANT(fail_nomem, 0);
	WANT(cache_hits + st.cache_misses + st.uncacheable, F.e_requests);
	if (!F.cache_on) {
		WANT(cache_hits, 0);
		WANT(cache_misses, 0);
	}
	/* the tree's gaps: between the domain's first page, every range (live
	 * or cached) with its guard, and the end of the domain */
	dmm_pfn_t prev = F.start;
	for (unsigned i = 0, j = 0;; ) {
		const struct rng *x;
		if (i < F.nl && (j == F.ng || F.live[i].pfn < F.ghost[j].pfn))
			x = &F.live[i++];
		else if (j < F.ng)
			x = &F.ghost[j++];
		else
			x = NULL;
		dmm_pfn_t ge = x ? x->pfn : F.end + 1;
		if (ge < prev)
			die("after %s: reference ranges overlap at %#llx", after, (unsigned long long)ge);
		if (ge > prev) {
			gaps++;
			if (ge - prev > largest)
				largest = ge - prev;
		}
		if (!x)
			break;
		prev = x->pfn + x->pages + F.g;
	}
	WANT(largest_free, largest);
	WANT(free_gaps, gaps);
#undef WANT
	F.st = st;
}

/* No page leaves the page allocator except into slabs, apart from the
 * domain's own (after every operation). */
static void check_pages(const char *after)
{
	uint64_t t = mem_total();
	if (t + F.dom_pages != F.base_total)
		die("after %s: free + slab pages %llu, want %llu", after, (unsigned long long)t,
		    (unsigned long long)(F.base_total - F.dom_pages));
}

static void check_all(const char *after)
{
	check_all_st(after, NULL);
}

/* ---- requests ---------------------------------------------------------------- */

/* 1 byte .. 400 pages: sub-page and ragged sizes, the cached classes, larger. */
static uint64_t gen_size(struct rd *r)
{
	uint64_t v = u16(r);
	switch (v & 3) {
	case 0:
		return 1 + (v >> 2) % (4 * PG);
	case 1:
		return (1 + (v >> 2) % 32) * PG;
	case 2:
		return (1 + (v >> 2) % 64) * PG - (u8(r) * 16) % PG;
	default:
		return (33 + (v >> 2) % 368) * PG - u8(r);
	}
}

/* A size whose rounded pages a free sends to the tree. */
static uint64_t uncacheable(uint64_t size)
{
	while (m_cacheable(m_pages(size)))
		size = F.pow2 ? 33 * PG + size % PG : size + PG;
	return size;
}

static dmm_dma_addr_t gen_limit(struct rd *r)
{
	uint64_t v = u8(r), span = F.end - F.start + 1;
	switch (v & 3) {
	case 0:
		return v & 4 ? F.limit : ((uint64_t)1 << 48) - 1; /* the domain's, or above (clipped) */
	case 1:
		return 4 * GiB - 1;
	default: {
		/* an end inside the domain, often near its bottom so that the
		 * space below it fills up; sometimes ragged (the last page is
		 * only partly below it) */
		uint64_t off = u32(r) >> ((v >> 3) % 24);
		dmm_pfn_t p = F.start + off % span;
		dmm_dma_addr_t l = ((p + 1) << DMM_PAGE_SHIFT) - 1;
		if ((v & 3) == 3 && (v & 0x80))
			l -= 1 + u8(r) * 8;
		return l;
	}
	}
}

/* ---- operations ---------------------------------------------------------------- */

static void remember_freed(struct rng x)
{
	F.recent[F.nr_recent++ % NR_RECENT] = x;
}

static unsigned nr_recent(void)
{
	return F.nr_recent < NR_RECENT ? F.nr_recent : NR_RECENT;
}

static void free_live(unsigned i, int rounded)
{
	struct rng l = F.live[i];
	struct dmm_iova_stats a;
	uint64_t size = rounded ? l.pages << DMM_PAGE_SHIFT : l.size;
	int rc = dmm_iova_free(F.d, l.pfn << DMM_PAGE_SHIFT, size);

	trace("free %#llx size %#llx (%llu pages) -> %s", (unsigned long long)(l.pfn << DMM_PAGE_SHIFT),
	      (unsigned long long)size, (unsigned long long)l.pages, dmm_errname(rc));
	if (rc)
		die("free of live range %#llx size %#llx (%llu pages): %s",
		    (unsigned long long)(l.pfn << DMM_PAGE_SHIFT), (unsigned long long)size,
		    (unsigned long long)l.pages, dmm_errname(rc));
	dmm_iova_get_stats(F.d, &a);
	uint64_t cf = a.cache_frees - F.st.cache_frees;
	if (cf > 1 || (cf && !m_cacheable(l.pages)))
		die("free of %llu pages counted %llu cache frees", (unsigned long long)l.pages,
		    (unsigned long long)cf);
	if (m_cacheable(l.pages))
		F.cache_dirty = 1;
	list_remove(F.live, &F.nl, i);
	resv_set(l.pfn, l.pages + F.g, 0);
	F.live_pages -= l.pages + F.g;
	if (cf) {
		list_insert(F.ghost, &F.ng, MAX_GHOST, l, "ghost");
		F.e_cache_frees++;
		F.cnt.cached_frees++;
	} else {
		remember_freed(l);
	}
	F.e_frees++;
	F.cnt.frees++;
	check_all_st("free", &a);
}

/*
 * What the search counters prove. A tree search (src/iommu/iova.c,
 * tree_alloc) is exact and complete (the highest aligned block of pages +
 * guard pages in any gap, below the limit) as long as it visits at most
 * 256 nodes (SEARCH_BUDGET; the node where it finds a fit may be the
 * 256th). An exact search that gives up has spent all 256 steps without a
 * fit, then falls back (search_fallbacks + 1) to a search among gaps of at
 * least pages + guard + align - 1 pages, which visits at least one node
 * (and if that finds nothing either, the exact search once more, without a
 * budget): a search without a fallback costs at most 256 steps, one with a
 * fallback at least 257. One allocation runs
 * up to @searches tree searches (32-bit first, then the full limit; again
 * after a cache flush), and search_steps counts their steps, so:
 *
 *  - steps <= 256: no search fell back; every one was exact and complete;
 *  - steps > 256 * searches: at least one did (and search_fallbacks must
 *    say so); at most steps / 257 did.
 *
 * (search_steps is what decides: search_fallbacks is checked, not trusted.)
 */
struct search_cost {
	uint64_t steps, fallbacks;   /* counted during the call */
	uint64_t fb_lo;              /* searches that fell back, at least */
};

static void check_search_cost(struct search_cost *sc, unsigned searches, const char *what)
{
	uint64_t lo = sc->steps > (uint64_t)SEARCH_BUDGET * searches ? 1 : 0, hi = sc->steps / (SEARCH_BUDGET + 1);
	if (sc->fallbacks < lo || sc->fallbacks > hi)
		die("%s: search_fallbacks went up by %llu after %llu search steps in at most %u searches: want "
		    "%llu..%llu",
		    what, (unsigned long long)sc->fallbacks, (unsigned long long)sc->steps, searches,
		    (unsigned long long)lo, (unsigned long long)hi);
	sc->fb_lo = sc->fallbacks > lo ? sc->fallbacks : lo;
}

static int search_exact(const struct search_cost *sc)
{
	return sc->steps <= SEARCH_BUDGET;
}

/*
 * A search that failed must have had nothing to find: a tree search that
 * found nothing within its budget, nor in its fallback, ends with an exact
 * search without a budget, so a failure is always complete. Checked by
 * brute force over the bitmap and by the gap walk, which must agree.
 *
 * Guard pages follow the range and must lie inside the domain but may
 * extend above the limit: both oracles ask for exactly that.
 * @with_ghosts: the tree also held the cached ranges (a search before the
 * caches were flushed).
 */
static void oracle_no_fit(uint64_t pages, uint64_t a, dmm_pfn_t lim, int with_ghosts, const char *what)
{
	dmm_pfn_t s = 0, s2 = 0;
	int gf = best_fit(pages, a, lim, with_ghosts, &s2), bf = gf;

	if (!with_ghosts) {
		bf = brute_fit(pages, a, lim, &s);
		if (bf != gf || (bf && s != s2))
			die("the oracles disagree: brute force %d %#llx, gap walk %d %#llx", bf, (unsigned long long)s,
			    gf, (unsigned long long)s2);
	}
	if (bf)
		die("%s: alloc of %llu pages (align %llu, guard %llu) below page %#llx failed, but pages "
		    "[%#llx, %#llx) are free",
		    what, (unsigned long long)pages, (unsigned long long)a, (unsigned long long)F.g,
		    (unsigned long long)lim, (unsigned long long)s2, (unsigned long long)(s2 + pages + F.g));
	F.cnt.nospace++;
}

/* Where a tree allocation must land: the highest fit, below 4 GiB first
 * with low32_first (when the limit is above and the domain below). */
static int expected_place(uint64_t pages, uint64_t a, dmm_pfn_t lim, int with_ghosts, dmm_pfn_t *want, int *low_failed)
{
	int low_try = F.o.low32_first && lim >= PFN_4G && F.start < PFN_4G;
	*low_failed = 0;
	if (low_try) {
		if (best_fit(pages, a, PFN_4G - 1, with_ghosts, want))
			return 1;
		*low_failed = 1;
	}
	return best_fit(pages, a, lim, with_ghosts, want);
}

static int do_alloc(uint64_t size, dmm_dma_addr_t limit, int rounded_free)
{
	dmm_dma_addr_t iova = NO_IOVA;
	struct dmm_iova_stats b, a;

	if (F.nl == MAX_LIVE) /* keep room */
		free_live((unsigned)(F.step % F.nl), rounded_free);
	b = F.st;
	int rc = dmm_iova_alloc(F.d, size, limit, &iova);
	trace("alloc size %#llx limit %#llx -> %s %#llx", (unsigned long long)size, (unsigned long long)limit,
	      dmm_errname(rc), (unsigned long long)iova);
	if (m_alloc_invalid(size, limit)) {
		if (rc != -DMM_EINVAL || iova != NO_IOVA)
			die("alloc of %#llx bytes below %#llx: %s %#llx, want EINVAL and no address",
			    (unsigned long long)size, (unsigned long long)limit, dmm_errname(rc),
			    (unsigned long long)iova);
		F.e_invalid++;
		F.cnt.bad_calls++;
		check_all("invalid alloc");
		return rc;
	}
	F.e_requests++;

	uint64_t pages = m_pages(size), al = m_align(pages), len = pages + F.g;
	dmm_pfn_t lim = m_lim(limit);
	int low_try = F.o.low32_first && lim >= PFN_4G && F.start < PFN_4G;
	if (dmm_iova_rounded(F.d, size) != pages << DMM_PAGE_SHIFT)
		die("rounded(%#llx) = %#llx, want %llu pages", (unsigned long long)size,
		    (unsigned long long)dmm_iova_rounded(F.d, size), (unsigned long long)pages);
	if (m_cacheable(pages))
		F.cache_dirty = 1;
	dmm_iova_get_stats(F.d, &a);
	uint64_t hits = a.cache_hits - b.cache_hits, flushes = a.cache_flushes - b.cache_flushes;
	uint64_t low_fb = a.low32_fallbacks - b.low32_fallbacks;
	struct search_cost sc = { a.search_steps - b.search_steps, a.search_fallbacks - b.search_fallbacks, 0 };
	/* tree searches: none after a cache hit; one per limit tried (32-bit
	 * first, then the full limit), twice when the caches were flushed */
	unsigned rounds = hits ? 0 : rc == -DMM_ENOSPC ? (F.cache_on ? 2u : 1u) : flushes ? 2u : 1u;
	check_search_cost(&sc, rounds * (low_try ? 2u : 1u), "alloc");
	F.cnt.fallbacks += sc.fb_lo;

	if (rc == -DMM_ENOSPC) {
		if (iova != NO_IOVA)
			die("failed alloc wrote %#llx", (unsigned long long)iova);
		if (hits)
			die("ENOSPC after a cache hit");
		if (F.cache_on && a.cached_ranges)
			die("ENOSPC with %llu ranges still cached: the caches were not flushed",
			    (unsigned long long)a.cached_ranges);
		if (low_fb)
			die("ENOSPC: %llu 32-bit fallbacks counted (only requests served above 4 GiB count)",
			    (unsigned long long)low_fb);
		if (F.cache_on)
			F.cache_dirty = 0; /* the flush was a trim of everything */
		F.ng = 0;
		F.e_nospace++;
		oracle_no_fit(pages, al, lim, 0, "ENOSPC");
		check_all_st("alloc ENOSPC", &a);
		return rc;
	}
	if (rc)
		die("alloc of %#llx bytes below %#llx: unexpected %s", (unsigned long long)size,
		    (unsigned long long)limit, dmm_errname(rc));

	dmm_pfn_t s = iova >> DMM_PAGE_SHIFT, want = 0;
	int low_failed = 0;
	if (iova & (PG - 1))
		die("iova %#llx not page-aligned", (unsigned long long)iova);
	if (!s)
		die("page 0 handed out");
	if (s < F.start || s + len - 1 > F.end)
		die("range %#llx + %llu pages (+%llu guard) outside the domain", (unsigned long long)iova,
		    (unsigned long long)pages, (unsigned long long)F.g);
	if (s + pages - 1 > lim)
		die("range %#llx + %llu pages ends above the limit %#llx (page %#llx)", (unsigned long long)iova,
		    (unsigned long long)pages, (unsigned long long)limit, (unsigned long long)lim);
	if (s % al)
		die("range %#llx of %llu pages not aligned to %llu pages", (unsigned long long)iova,
		    (unsigned long long)pages, (unsigned long long)al);
	if (resv_any(s, len)) {
		dmm_pfn_t p = s;
		while (!resv_test(p))
			p++;
		die("range %#llx + %llu pages (+%llu guard) overlaps a live range or guard at page %#llx",
		    (unsigned long long)iova, (unsigned long long)pages, (unsigned long long)F.g,
		    (unsigned long long)p);
	}
	if (hits) {
		int gi = find_exact(F.ghost, F.ng, s, pages);
		if (hits != 1 || !m_cacheable(pages) || flushes || low_fb || sc.steps)
			die("cache hit: %llu hits, %llu pages, %llu flushes, %llu 32-bit fallbacks",
			    (unsigned long long)hits, (unsigned long long)pages, (unsigned long long)flushes,
			    (unsigned long long)low_fb);
		if (gi < 0)
			die("cache hit %#llx + %llu pages: not a range that was freed into the caches",
			    (unsigned long long)iova, (unsigned long long)pages);
		list_remove(F.ghost, &F.ng, (unsigned)gi);
		F.cnt.cache_hits++;
	} else if (!flushes) {
		/* the first search succeeded, with the cached ranges in the tree */
		for (unsigned i = 0; i < F.ng; i++)
			if (F.ghost[i].pfn < s + len && s < F.ghost[i].pfn + F.ghost[i].pages + F.g)
				die("range %#llx + %llu pages overlaps the cached range %#llx + %llu",
				    (unsigned long long)iova, (unsigned long long)pages,
				    (unsigned long long)(F.ghost[i].pfn << DMM_PAGE_SHIFT),
				    (unsigned long long)F.ghost[i].pages);
		if (search_exact(&sc)) {
			/* exact searches that stayed within their budget: the highest fit */
			if (!expected_place(pages, al, lim, 1, &want, &low_failed))
				die("alloc succeeded at %#llx but the reference has no fit", (unsigned long long)iova);
			if (want != s)
				die("range of %llu pages (align %llu) placed at page %#llx, the highest fit is %#llx",
				    (unsigned long long)pages, (unsigned long long)al, (unsigned long long)s,
				    (unsigned long long)want);
			if (low_fb != (uint64_t)low_failed)
				die("%llu 32-bit fallbacks counted, want %d", (unsigned long long)low_fb, low_failed);
			F.cnt.placements++;
		}
	} else {
		/* the first search failed (no fit among the live and the cached
		 * ranges); the caches were flushed and the second succeeded */
		if (!F.cache_on)
			die("cache flush in a domain without caches");
		if (a.cached_ranges)
			die("%llu ranges cached after a flush", (unsigned long long)a.cached_ranges);
		oracle_no_fit(pages, al, lim, 1, "search before the cache flush");
		F.ng = 0;
		F.cache_dirty = 0;
		F.cnt.flush_retries++;
		if (search_exact(&sc)) {
			if (!expected_place(pages, al, lim, 0, &want, &low_failed))
				die("alloc succeeded at %#llx but the reference has no fit", (unsigned long long)iova);
			if (want != s)
				die("range of %llu pages (align %llu) placed at page %#llx after a flush, the highest "
				    "fit is %#llx",
				    (unsigned long long)pages, (unsigned long long)al, (unsigned long long)s,
				    (unsigned long long)want);
			if (low_fb != (uint64_t)low_failed)
				die("%llu 32-bit fallbacks counted after a flush, want %d", (unsigned long long)low_fb,
				    low_failed);
			F.cnt.placements++;
		}
	}
	struct rng x = { s, pages, size };
	list_insert(F.live, &F.nl, MAX_LIVE, x, "live");
	resv_set(s, len, 1);
	F.live_pages += len;
	F.last_alloc = s;
	F.e_allocs++;
	F.cnt.alloc_ok++;
	check_all_st("alloc", &a);
	return 0;
}

/* A size: new, or one of a cached range (a likely cache hit) or of a live
 * range (the same class again). */
static uint64_t pick_size(struct rd *r)
{
	uint64_t sel = u8(r);
	if ((sel & 3) == 1 && F.ng)
		return F.ghost[(sel >> 2) % F.ng].size;
	if ((sel & 3) == 2 && F.nl)
		return F.live[(sel >> 2) % F.nl].size;
	return gen_size(r);
}

/* One request, or a burst of the same request (up to 64, or up to 128 to
 * fill the space), until the first failure. */
static void op_alloc(struct rd *r, unsigned max)
{
	uint64_t size = pick_size(r);
	dmm_dma_addr_t limit = gen_limit(r);
	unsigned n = max > 1 ? 1 + (unsigned)((u8(r) * max) >> 8) : 1;
	for (unsigned k = 0; k < n; k++)
		if (do_alloc(size, limit, (int)(k & 1)))
			break;
}

static void op_free(struct rd *r, int burst)
{
	unsigned n = burst ? 1 + (unsigned)(u8(r) % 64) : 1;
	uint64_t v = u8(r);
	for (unsigned k = 0; k < n && F.nl; k++)
		free_live((unsigned)((v + k * 7) % F.nl), (int)((v >> 7) & 1));
}

/* Free runs of 1..4 neighbours (in address order) out of every 2..8 live
 * ranges: many gaps, several ranges long, whose ends are aligned to the
 * ranges' sizes but not to larger requests' (misfits, which make the
 * search visit more nodes and fall back). */
static void op_sieve(struct rd *r)
{
	uint64_t v = u8(r);
	unsigned run = 1 + (unsigned)(v & 3), step = run + 1 + (unsigned)((v >> 2) & 3);
	for (unsigned i = (unsigned)((v >> 4) % step); i < F.nl; i += step - run)
		for (unsigned k = 0; k < run && i < F.nl; k++)
			free_live(i, (int)(v >> 7));
}

/* Allocate and free the same request over and over (a driver's buffer
 * cycle): the magazines' fast path, and swaps with the depot when several
 * are in flight. */
static void op_churn(struct rd *r)
{
	uint64_t size = pick_size(r);
	dmm_dma_addr_t limit = gen_limit(r);
	unsigned n = 1 + (unsigned)(u8(r) % 64), depth = 1 + (unsigned)(u8(r) % 8);
	dmm_pfn_t ring[8];
	unsigned held = 0;
	for (unsigned k = 0; k < n; k++) {
		if (held == depth || (held && !(k % 3))) {
			/* free the oldest range of the cycle (if still live) */
			int i = find_exact(F.live, F.nl, ring[0], m_pages(size));
			if (i >= 0)
				free_live((unsigned)i, (int)(k & 1));
			memmove(ring, ring + 1, --held * sizeof(ring[0]));
		}
		if (do_alloc(size, limit, 0))
			break;
		ring[held++] = F.last_alloc;
	}
}

/* A refused call: its error, and (check_all against an unchanged reference)
 * nothing changed. */
static void expect(int rc, int want, const char *what)
{
	F.cnt.bad_calls++;
	trace("bad: %s -> %s", what, dmm_errname(rc));
	if (rc != want)
		die("%s: %s, want %s", what, dmm_errname(rc), dmm_errname(want));
	if (want == -DMM_EINVAL)
		F.e_invalid++;
	else
		F.e_unknown++;
	check_all(what);
}

/* Free a live range with a wrong size or start, through the tree path. */
static void op_wrong_free(struct rd *r)
{
	if (!F.nl)
		return;
	struct rng l = F.live[u8(r) % F.nl];
	uint64_t sel = u8(r), size = uncacheable(gen_size(r));
	dmm_pfn_t pfn = l.pfn;

	if (sel & 1) {
		/* inside the range, in its guard, or just beyond */
		pfn = l.pfn + 1 + u16(r) % (l.pages + F.g + 8);
		if (find_exact(F.live, F.nl, pfn, m_pages(size)) >= 0)
			return; /* that is another range: a legitimate free */
	} else {
		while (m_pages(size) == l.pages)
			size = uncacheable(size + PG);
	}
	int rc = dmm_iova_free(F.d, pfn << DMM_PAGE_SHIFT, size);
	expect(rc, -DMM_ENOENT, sel & 1 ? "free at a wrong start" : "free with a wrong size");
	dmm_dma_addr_t s = 0;
	uint64_t z = 0;
	rc = dmm_iova_find(F.d, l.pfn << DMM_PAGE_SHIFT, &s, &z);
	if (rc || s != l.pfn << DMM_PAGE_SHIFT || z != l.pages << DMM_PAGE_SHIFT)
		die("live range %#llx lost after a refused free: %s", (unsigned long long)(l.pfn << DMM_PAGE_SHIFT),
		    dmm_errname(rc));
}

/* Free again a range freed through the tree. */
static void op_double_free(struct rd *r)
{
	if (!nr_recent())
		return;
	struct rng x = F.recent[u8(r) % nr_recent()];
	if (m_cacheable(x.pages))
		return; /* would go to the per-CPU cache, which trusts its caller */
	if (find_exact(F.live, F.nl, x.pfn, x.pages) >= 0)
		return; /* handed out again since: a legitimate free */
	expect(dmm_iova_free(F.d, x.pfn << DMM_PAGE_SHIFT, x.size), -DMM_ENOENT, "double free");
}

static void op_find(struct rd *r)
{
	uint64_t sel = u8(r);
	dmm_dma_addr_t addr, s = NO_IOVA;
	uint64_t z = 0x5a5a;

	if ((sel & 3) == 0 && F.nl) {
		/* a live range: anywhere in it, its guard, the page after */
		struct rng l = F.live[u16(r) % F.nl];
		addr = (l.pfn << DMM_PAGE_SHIFT) + u32(r) % ((l.pages + F.g + 1) << DMM_PAGE_SHIFT);
	} else if ((sel & 3) == 1 && F.ng) {
		struct rng l = F.ghost[u16(r) % F.ng];
		addr = (l.pfn << DMM_PAGE_SHIFT) + u32(r) % ((l.pages + F.g + 1) << DMM_PAGE_SHIFT);
	} else {
		/* anywhere in or around the domain */
		uint64_t span = F.end - F.start + 1;
		uint64_t off = ((u32(r) % (span + 32)) << DMM_PAGE_SHIFT) | (u8(r) << 4);
		addr = F.base + off >= 16 * PG ? F.base + off - 16 * PG : off;
	}
	dmm_pfn_t p = addr >> DMM_PAGE_SHIFT;
	const struct rng *hit = NULL;
	int i = covering(F.live, F.nl, p), cached = 0;
	if (i >= 0)
		hit = &F.live[i];
	else if ((i = covering(F.ghost, F.ng, p)) >= 0)
		hit = &F.ghost[i], cached = 1;
	int rc = dmm_iova_find(F.d, addr, (sel & 4) ? NULL : &s, (sel & 8) ? NULL : &z);
	trace("find %#llx -> %s %#llx %#llx", (unsigned long long)addr, dmm_errname(rc), (unsigned long long)s,
	      (unsigned long long)z);
	F.cnt.finds++;
	if (hit) {
		if (rc || (!(sel & 4) && s != hit->pfn << DMM_PAGE_SHIFT) ||
		    (!(sel & 8) && z != hit->pages << DMM_PAGE_SHIFT))
			die("find(%#llx): %s [%#llx, +%#llx), want the %s range [%#llx, +%#llx)",
			    (unsigned long long)addr, dmm_errname(rc), (unsigned long long)s, (unsigned long long)z,
			    cached ? "cached" : "live",
			    (unsigned long long)(hit->pfn << DMM_PAGE_SHIFT),
			    (unsigned long long)(hit->pages << DMM_PAGE_SHIFT));
	} else if (rc != -DMM_ENOENT || s != NO_IOVA || z != 0x5a5a) {
		die("find(%#llx) of a free page: %s [%#llx, +%#llx), want ENOENT", (unsigned long long)addr,
		    dmm_errname(rc), (unsigned long long)s, (unsigned long long)z);
	}
	check_all("find");
}

static void op_trim(struct rd *r)
{
	int all = (int)(u8(r) & 1);
	uint64_t before = F.st.cached_pages;
	uint64_t back = dmm_iova_trim(F.d, all);
	struct dmm_iova_stats a;

	dmm_iova_get_stats(F.d, &a);
	trace("trim %s -> %llu pages", all ? "all" : "idle", (unsigned long long)back);
	F.cnt.trims++;
	if (back != before - a.cached_pages)
		die("trim returned %llu pages, the caches went from %llu to %llu", (unsigned long long)back,
		    (unsigned long long)before, (unsigned long long)a.cached_pages);
	/* with no cache operation since the previous trim, the slot and the
	 * depot are idle: an idle trim empties them too */
	if ((all || !F.cache_dirty) && a.cached_pages)
		die("trim(%s) left %llu pages cached", all ? "all" : "idle", (unsigned long long)a.cached_pages);
	F.cache_dirty = 0;
	check_all_st("trim", &a);
}

static void op_bad(struct rd *r)
{
	uint64_t sub = u8(r) % 10;
	dmm_dma_addr_t iova = NO_IOVA;

	switch (sub) {
	case 0:
		expect(dmm_iova_alloc(F.d, 0, F.limit, &iova), -DMM_EINVAL, "alloc of 0 bytes");
		break;
	case 1: { /* a limit below the domain's first page */
		dmm_dma_addr_t lim = u32(r) % (((F.start + 1) << DMM_PAGE_SHIFT) - 1);
		expect(dmm_iova_alloc(F.d, PG, lim, &iova), -DMM_EINVAL, "alloc below the domain");
		break;
	}
	case 2:
		expect(dmm_iova_alloc(F.d, ((uint64_t)1 << 48) + 1 + u16(r), F.limit, &iova), -DMM_EINVAL,
		       "alloc above 48 bits");
		break;
	case 3:
		expect(dmm_iova_alloc(F.d, PG, F.limit, NULL), -DMM_EINVAL, "alloc with iova NULL");
		break;
	case 4: { /* an unaligned iova: a live range's start + a few bytes, or anywhere */
		dmm_dma_addr_t a = F.nl ? F.live[u8(r) % F.nl].pfn << DMM_PAGE_SHIFT : F.base + (u16(r) << 12);
		a += 1 + u16(r) % (PG - 1);
		expect(dmm_iova_free(F.d, a, PG), -DMM_EINVAL, "free of an unaligned iova");
		break;
	}
	case 5: {
		dmm_dma_addr_t a = F.nl ? F.live[u8(r) % F.nl].pfn << DMM_PAGE_SHIFT : F.base + PG;
		expect(dmm_iova_free(F.d, a, 0), -DMM_EINVAL, "free of 0 bytes");
		break;
	}
	case 6: /* outside the domain: below (or page 0), above */
		if (F.start > 1 && (u8(r) & 1))
			expect(dmm_iova_free(F.d, (F.start - 1 - u16(r) % (F.start - 1)) << DMM_PAGE_SHIFT, PG),
			       -DMM_ENOENT, "free below the domain");
		else if (u8(r) & 1)
			expect(dmm_iova_free(F.d, 0, PG), -DMM_ENOENT, "free of page 0");
		else
			expect(dmm_iova_free(F.d, (F.end + 1 + u16(r)) << DMM_PAGE_SHIFT, PG), -DMM_ENOENT,
			       "free above the domain");
		break;
	case 7: { /* a range that would run past the end of the domain (checked before any cache) */
		uint64_t k = u8(r) % 8;
		if (k > F.end - F.start)
			return;
		expect(dmm_iova_free(F.d, (F.end - k) << DMM_PAGE_SHIFT, (k + 1) * PG + 1), -DMM_ENOENT,
		       "free running past the end of the domain");
		break;
	}
	case 8: { /* dmm_iova_rounded, and a find outside the domain */
		uint64_t size = gen_size(r);
		if (dmm_iova_rounded(F.d, size) != m_pages(size) << DMM_PAGE_SHIFT || dmm_iova_rounded(F.d, 0))
			die("rounded(%#llx) = %#llx, want %llu pages", (unsigned long long)size,
			    (unsigned long long)dmm_iova_rounded(F.d, size), (unsigned long long)m_pages(size));
		dmm_dma_addr_t a = u8(r) & 1 ? (F.end + 1) << DMM_PAGE_SHIFT : 0;
		if (dmm_iova_find(F.d, a + u8(r), NULL, NULL) != -DMM_ENOENT)
			die("find(%#llx) outside the domain found something", (unsigned long long)a);
		F.cnt.bad_calls++;
		check_all("rounded");
		break;
	}
	default: { /* a domain that may not be created: refused, nothing allocated */
		struct dmm_iova_opts o;
		struct dmm_iova_domain *d = (struct dmm_iova_domain *)&o;
		dmm_dma_addr_t base = 0, limit = 4 * GiB - 1;
		uint64_t t = mem_total();
		dmm_iova_opts_default(&o);
		switch (u8(r) % 8) {
		case 0: base = 1 + u16(r) % (PG - 1); break;                 /* base unaligned */
		case 1: limit = 4 * GiB + u16(r) % (PG - 1); break;          /* limit + 1 unaligned */
		case 2: base = 8 * GiB; limit = base - 1 - (u8(r) << 12); break; /* limit below base */
		case 3: limit = ((uint64_t)1 << 48) + (u8(r) << 12) + PG - 1; break; /* above 48 bits */
		case 4: o.guard_pages = DMM_IOVA_GUARD_MAX + 1 + (unsigned)u8(r); break;
		case 5: o.mag_size = 129 + (uint32_t)u8(r); break;
		case 6: o.depot_max = 1025 + (uint32_t)u16(r); break;
		default: o.align = (enum dmm_iova_align)(2 + u8(r) % 8); break;
		}
		int rc = dmm_iova_domain_create(F.mem, base, limit, &o, &d);
		F.cnt.bad_calls++;
		if (rc != -DMM_EINVAL || d)
			die("domain_create [%#llx, %#llx] guard %u mag %u depot %u align %d: %s, want EINVAL",
			    (unsigned long long)base, (unsigned long long)limit, o.guard_pages, o.mag_size,
			    o.depot_max, (int)o.align, dmm_errname(rc));
		if (mem_total() != t)
			die("a refused domain_create changed the free pages");
		break;
	}
	}
}

/* ---- the domain of an input ----------------------------------------------------------- */

static void open_domain(struct rd *r)
{
	uint64_t b0 = u8(r), b1 = u8(r), b2 = u8(r), sp = u16(r), pos = u8(r), span;
	struct dmm_iova_opts *o = &F.o;

	dmm_iova_opts_default(o);
	o->align = b0 & 1 ? DMM_IOVA_ALIGN_PAGE : DMM_IOVA_ALIGN_POW2;
	o->low32_first = (int)((b0 >> 1) & 1);
	o->no_cache = ((b0 >> 2) & 3) == 0;
	o->guard_pages = (unsigned)((b0 >> 4) & 3);
	o->mag_size = (b1 & 7) == 7 ? 0 : 1 + (uint32_t)(b1 & 7);          /* 1..7, or the default 32 */
	o->depot_max = ((b1 >> 3) & 3) == 3 ? 0 : 1 + (uint32_t)((b1 >> 3) & 3); /* 1..3, or 8 */
	o->cache_max_pages = b2 & 0x80 ? (uint64_t)64 << ((b2 >> 5) & 3) : 1 + (b2 & 0x7f);
	F.kind = (int)(b0 >> 6);
	switch (F.kind) {
	case 0: /* a few thousand pages at the bottom */
		F.base = (pos & 3) * PG;
		span = 1024 + sp % 8192;
		F.limit = F.base + span * PG - 1;
		break;
	case 1: /* across 4 GiB: both bands */
		span = 4096 + sp * 4;
		F.base = (PFN_4G - 1 - pos * (span - 2) / 255) * PG;
		F.limit = F.base + span * PG - 1;
		break;
	case 2: /* from the bottom to 8..64 GiB */
		F.base = (pos & 3) * PG;
		F.limit = (2 + sp % 15) * 4 * GiB - 1;
		break;
	default: /* above 4 GiB only */
		span = 2048 + sp * 4;
		F.base = 4 * GiB + (pos % 56) * GiB + (pos & 7) * PG;
		F.limit = F.base + span * PG - 1;
		break;
	}
	F.pow2 = o->align == DMM_IOVA_ALIGN_POW2;
	F.cache_on = !o->no_cache;
	F.g = o->guard_pages;
	F.start = F.base >> DMM_PAGE_SHIFT ? F.base >> DMM_PAGE_SHIFT : 1;
	F.end = F.limit >> DMM_PAGE_SHIFT;
	if (F.end >= SPACE_PAGES)
		die("domain above the reference's space");
	F.cnt.domains[F.kind]++;

	uint64_t t = mem_total();
	int rc = dmm_iova_domain_create(F.mem, F.base, F.limit, o, &F.d);
	trace("domain [%#llx, %#llx] %s guard %llu low32_first %d no_cache %d mag %u depot %u cache_max %llu -> %s",
	      (unsigned long long)F.base, (unsigned long long)F.limit, F.pow2 ? "pow2" : "page",
	      (unsigned long long)F.g, o->low32_first, o->no_cache, o->mag_size, o->depot_max,
	      (unsigned long long)o->cache_max_pages, dmm_errname(rc));
	if (rc || !F.d)
		die("domain_create: %s", dmm_errname(rc));
	F.dom_pages = t - mem_total();
	if (!F.dom_pages)
		die("the domain took no pages");
	F.nl = F.ng = F.nr_recent = 0;
	F.live_pages = 0;
	F.cache_dirty = 0;
	F.e_allocs = F.e_frees = F.e_cache_frees = F.e_nospace = F.e_invalid = F.e_unknown = F.e_requests = 0;
	memset(&F.st, 0, sizeof(F.st));
	check_all("domain_create");
}

static void close_domain(void)
{
	while (F.nl)
		free_live(F.nl - 1, (int)(F.step & 1));
	uint64_t cached = F.st.cached_pages, back = dmm_iova_trim(F.d, 1);
	if (back != cached)
		die("teardown: trim returned %llu pages, %llu were cached", (unsigned long long)back,
		    (unsigned long long)cached);
	F.cache_dirty = 0;
	check_all("teardown");
	if (F.st.ranges || F.st.allocated_pages || F.st.cached_ranges)
		die("teardown: %llu ranges, %llu pages left", (unsigned long long)F.st.ranges,
		    (unsigned long long)F.st.allocated_pages);
	dmm_iova_domain_destroy(F.d);
	F.d = NULL;
	dmm_page_drain_pcp(F.mem);
	if (mem_total() != F.base_total)
		die("teardown: free + slab pages %llu, want %llu", (unsigned long long)mem_total(),
		    (unsigned long long)F.base_total);
	if (slab_objects() != F.base_objs)
		die("teardown: %llu small objects live, want %llu (leaked nodes or magazines)",
		    (unsigned long long)slab_objects(), (unsigned long long)F.base_objs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rd r = { data, size };
	if (!F.ready) {
		setup();
		dmm_page_drain_pcp(F.mem);
		F.base_total = mem_total();
		F.base_objs = slab_objects();
	}
	F.cnt.inputs++;
	F.step++;
	open_domain(&r);
	while (r.n) {
		F.step++;
		F.cnt.ops++;
		uint64_t op = u8(&r) % 16;
		if (op < 3)
			op_alloc(&r, 1);
		else if (op == 3)
			op_alloc(&r, 64);
		else if (op == 4)
			op_alloc(&r, 128);
		else if (op < 7)
			op_free(&r, 0);
		else if (op == 7)
			op_free(&r, 1);
		else if (op == 8)
			op_sieve(&r);
		else if (op == 9)
			op_churn(&r);
		else if (op == 10)
			op_wrong_free(&r);
		else if (op == 11)
			op_double_free(&r);
		else if (op == 12)
			op_find(&r);
		else if (op == 13)
			op_trim(&r);
		else
			op_bad(&r);
		check_pages("operation");
	}
	close_domain();
	return 0;
}

void dmm_fuzz_print_summary(const char *prog)
{
	const struct counts *c = &F.cnt;
	printf("%s: %llu inputs (domains: %llu low, %llu across 4 GiB, %llu wide, %llu high), %llu operations: "
	       "%llu allocs ok (%llu from the caches, %llu after a cache flush; %llu placements checked "
	       "against the highest fit); %llu failed searches confirmed by brute force; %llu searches that fell "
	       "back (at least); %llu frees (%llu into the caches); "
	       "%llu finds; %llu trims; %llu bad calls refused\n",
	       prog, (unsigned long long)c->inputs, (unsigned long long)c->domains[0],
	       (unsigned long long)c->domains[1], (unsigned long long)c->domains[2],
	       (unsigned long long)c->domains[3], (unsigned long long)c->ops, (unsigned long long)c->alloc_ok,
	       (unsigned long long)c->cache_hits, (unsigned long long)c->flush_retries,
	       (unsigned long long)c->placements, (unsigned long long)c->nospace,
	       (unsigned long long)c->fallbacks, (unsigned long long)c->frees, (unsigned long long)c->cached_frees,
	       (unsigned long long)c->finds, (unsigned long long)c->trims, (unsigned long long)c->bad_calls);
}

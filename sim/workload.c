/* SPDX-License-Identifier: MIT */
/*
 * Seeded page-allocator workloads (see workload.h for what each one does).
 *
 * Every block a workload holds is a struct wl_block in a host array (the
 * "live set"); freeing picks a random element and swap-removes it, so frees
 * come in random order. Ownership of every page is also tracked in a shared
 * atomic bitmap over [min_pfn, max_pfn): a page handed out while its bit is
 * set means the allocator gave the same memory to two owners.
 *
 * Block checks on allocation:
 *   - the block satisfies the request's constraint (window, alignment,
 *     boundary; GFP_DMA/DMA32 shorthands as their limits) and a buddy
 *     block is naturally aligned;
 *   - every page has a descriptor, the head is ALLOC (buddy) or RANGE, the
 *     others TAIL, all in one zone;
 *   - GFP_ZERO blocks read zero where the pattern goes.
 * The pattern: 64 bytes at the start of the first page and 64 bytes at the
 * end of the last page, derived from a per-block token; verified at free.
 *
 * PRNG: xoshiro256** (Blackman and Vigna) seeded through splitmix64, one
 * stream per thread, so a single-threaded run is reproducible exactly.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dmamem/cma.h>
#include <dmamem/constraint.h>
#include <dmamem/error.h>
#include <dmamem/handles.h>
#include <dmamem/mem.h>
#include <dmamem/migrate.h>
#include <dmamem/page_alloc.h>
#include <dmamem/range.h>
#include <dmamem/iommu.h>
#include <dmamem/slab.h>
#include <dmamem/swiotlb.h>

#include "dma_sim.h"
#include "workload.h"

#define WL_MAX_THREADS 64
#define WL_RANGE_BLOCK 0xffu     /* wl_block.order of a range allocation */
#define WL_PATTERN_WORDS 8       /* 64 bytes at each end */
#define WL_FAIL_STREAK 64        /* consecutive failures that mean "full" */
#define WL_MAX_WINDOWS 6

enum { WL_MIXED, WL_LOWMEM, WL_FRAGMENT, WL_CAMERA, WL_DMA };

static const char *const wl_names[] = { "mixed", "lowmem", "fragment", "camera", "dma", NULL };
static const char *const wl_descr[] = {
	"mixed orders 0..10 (mostly small), movable/unmovable/reclaimable, range and "
	"constrained requests below the low limits; live set swings between 60% and 90% of memory",
	"low-zone policy demonstration: exhaust the higher zones, put unmovable order-0..3 "
	"pressure on the machine, then request 1 MiB ranges below the low limit",
	"fill with random sizes, free half at random, then measure the largest contiguous "
	"allocations still possible",
	"camera streaming: queues of large frames from a contiguous area while a page cache "
	"keeps memory nearly full of movable pages (--pin: long-term pins too)",
	"what an IOMMU buys a 32-bit device: a 32-bit NIC and a 64-bit storage device, "
	"direct (bounce buffers) and behind the IOMMU, same seeded transfers, every byte verified",
};

/* ------------------------------------------------------------------------ */
/* PRNG                                                                      */

struct wl_rng {
	uint64_t s[4];
};

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void rng_seed(struct wl_rng *r, uint64_t seed, unsigned stream)
{
	uint64_t x = seed ^ ((uint64_t)stream * 0xd1342543de82ef95ULL);

	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(struct wl_rng *r)
{
	uint64_t *s = r->s;
	uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return res;
}

/* Uniform in [0, n), n > 0 (Lemire's multiply-shift; bias < n / 2^64). */
static uint64_t rng_below(struct wl_rng *r, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)rng_next(r) * n) >> 64);
}

static bool rng_permille(struct wl_rng *r, unsigned p)
{
	return rng_below(r, 1000) < p;
}

/* ------------------------------------------------------------------------ */
/* State                                                                     */

struct wl_block {
	dmm_pfn_t pfn;
	uint64_t token;
	uint32_t npages;
	uint8_t order;  /* buddy order, or WL_RANGE_BLOCK */
	uint8_t pad[3];
};

struct wl_set {
	struct wl_block *b;
	size_t n, cap;
	uint64_t pages;
};

/* Shared by every thread of a run. */
struct wl_shared {
	struct dmm_mem *mem;
	const struct dmm_machine *m;
	dmm_pfn_t min_pfn, max_pfn;
	_Atomic uint64_t *owned;             /* bit per pfn in [min_pfn, max_pfn) */
	uint64_t managed;
	uint64_t check_every;
	atomic_uint_fast64_t checks_run, checks_failed;
	/* Address windows for constrained requests. */
	unsigned nr_windows;
	struct dmm_constraint window[WL_MAX_WINDOWS];
	bool has_dma, has_dma32;
};

/* One per thread. */
struct wl_ctx {
	struct wl_shared *sh;
	struct dmm_mem *mem;
	struct wl_rng rng;
	unsigned tid;
	uint64_t next_id;
	uint64_t ops_budget;
	uint64_t lo_pages, hi_pages;         /* mixed: live-set swing */
	struct wl_set live;
	struct wl_set aux;                   /* lowmem: prefill; fragment: probes */
	bool oom;                            /* host allocation failed */
	struct dmm_workload_result r;        /* this thread's counters */
};

static uint64_t wl_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool set_push(struct wl_ctx *x, struct wl_set *s, const struct wl_block *b)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 1024;
		struct wl_block *nb = realloc(s->b, cap * sizeof(*nb));

		if (!nb) {
			x->oom = true;
			return false;
		}
		s->b = nb;
		s->cap = cap;
	}
	s->b[s->n++] = *b;
	s->pages += b->npages;
	return true;
}

/* ------------------------------------------------------------------------ */
/* Ownership bitmap                                                          */

/* Set (or clear) the bits of [pfn, pfn + n). Returns true if every bit was
 * clear before (set) or set before (clear). */
static bool own_update(struct wl_shared *sh, dmm_pfn_t pfn, uint64_t n, bool set)
{
	uint64_t i = pfn - sh->min_pfn, end = i + n;
	bool ok = true;

	if (pfn < sh->min_pfn || pfn + n > sh->max_pfn)
		return false;
	while (i < end) {
		uint64_t bit = i & 63, len = 64 - bit;
		uint64_t mask, old;

		if (len > end - i)
			len = end - i;
		mask = (len == 64 ? ~0ULL : ((1ULL << len) - 1)) << bit;
		if (set) {
			old = atomic_fetch_or_explicit(&sh->owned[i >> 6], mask, memory_order_relaxed);
			ok &= (old & mask) == 0;
		} else {
			old = atomic_fetch_and_explicit(&sh->owned[i >> 6], ~mask, memory_order_relaxed);
			ok &= (old & mask) == mask;
		}
		i += len;
	}
	return ok;
}

/* ------------------------------------------------------------------------ */
/* Patterns                                                                  */

static uint64_t pattern_word(uint64_t token, unsigned i, bool tail)
{
	uint64_t w = token + (uint64_t)(i + 1) * 0x9e3779b97f4a7c15ULL;

	return tail ? ~rotl(w, 17) : w;
}

static void pattern_ends(struct dmm_mem *mem, const struct wl_block *b, uint64_t **head,
			 uint64_t **tail)
{
	unsigned char *first = dmm_pfn_to_virt(mem, b->pfn);
	unsigned char *last = dmm_pfn_to_virt(mem, b->pfn + b->npages - 1);

	*head = first ? (uint64_t *)(void *)first : NULL;
	*tail = last ? (uint64_t *)(void *)(last + DMM_PAGE_SIZE) - WL_PATTERN_WORDS : NULL;
}

static bool pattern_zero(const uint64_t *head, const uint64_t *tail)
{
	for (unsigned i = 0; i < WL_PATTERN_WORDS; i++)
		if (head[i] || tail[i])
			return false;
	return true;
}

static void pattern_write(uint64_t *head, uint64_t *tail, uint64_t token)
{
	for (unsigned i = 0; i < WL_PATTERN_WORDS; i++) {
		head[i] = pattern_word(token, i, false);
		tail[i] = pattern_word(token, i, true);
	}
}

static bool pattern_ok(const uint64_t *head, const uint64_t *tail, uint64_t token)
{
	for (unsigned i = 0; i < WL_PATTERN_WORDS; i++)
		if (head[i] != pattern_word(token, i, false) || tail[i] != pattern_word(token, i, true))
			return false;
	return true;
}

/* ------------------------------------------------------------------------ */
/* Allocation and free with checks                                           */

static void count_fail(uint64_t *tab, int rc)
{
	unsigned i = (unsigned)(rc < 0 ? -rc : rc);

	tab[i < DMM__NR_ERRORS ? i : 0]++;
}

/* Descriptors of a fresh block: head ALLOC/RANGE, the rest TAIL, one zone. */
static bool descriptors_ok(struct dmm_mem *mem, dmm_pfn_t pfn, uint64_t n)
{
	const struct dmm_page *h = dmm_pfn_to_page(mem, pfn);

	if (!h || (h->state != DMM_PAGE_ALLOC && h->state != DMM_PAGE_RANGE))
		return false;
	for (uint64_t i = 1; i < n; i++) {
		const struct dmm_page *pg = dmm_pfn_to_page(mem, pfn + i);

		if (!pg || pg->state != DMM_PAGE_TAIL || pg->zone != h->zone)
			return false;
	}
	return true;
}

/*
 * Check a block just returned for a request with effective constraint @c
 * (NULL = anywhere), take ownership, write its pattern and add it to @s.
 */
static void accept_block(struct wl_ctx *x, struct wl_set *s, dmm_pfn_t pfn, uint64_t n,
			 unsigned order, const struct dmm_constraint *c, unsigned flags)
{
	struct wl_block b = { .pfn = pfn, .npages = (uint32_t)n, .order = (uint8_t)order };
	uint64_t *head, *tail;

	b.token = x->r.seed ^ ((uint64_t)x->tid << 56) ^ (x->next_id++ * 0x2545f4914f6cdd1dULL);
	if (c && !dmm_constraint_ok(c, dmm_pfn_to_phys(pfn), n << DMM_PAGE_SHIFT))
		x->r.constraint_violations++;
	if (order != WL_RANGE_BLOCK && (pfn & (n - 1)))
		x->r.constraint_violations++;
	if (!descriptors_ok(x->mem, pfn, n))
		x->r.descriptor_errors++;
	if (!own_update(x->sh, pfn, n, true))
		x->r.overlaps++;
	pattern_ends(x->mem, &b, &head, &tail);
	if (!head || !tail) {
		x->r.descriptor_errors++; /* not RAM: nothing to write to */
	} else {
		if ((flags & DMM_GFP_ZERO) && !pattern_zero(head, tail))
			x->r.corruptions++;
		pattern_write(head, tail, b.token);
	}
	if (!set_push(x, s, &b)) {
		/* No room to remember it: give it back now. */
		own_update(x->sh, pfn, n, false);
		if (order == WL_RANGE_BLOCK)
			dmm_free_range(x->mem, pfn, (size_t)n);
		else
			dmm_page_free(x->mem, pfn, order);
		return;
	}
	if (x->live.pages + x->aux.pages > x->r.peak_live_pages)
		x->r.peak_live_pages = x->live.pages + x->aux.pages;
}

/* Both checks every check_every operations (first thread only). */
static void wl_periodic_check(struct wl_ctx *x)
{
	struct wl_shared *sh = x->sh;

	if (!sh->check_every || x->tid != 0 || x->r.ops % sh->check_every)
		return;
	atomic_fetch_add(&sh->checks_run, 1u);
	if (dmm_page_alloc_check(x->mem) || dmm_range_check(x->mem))
		atomic_fetch_add(&sh->checks_failed, 1u);
}

/* dmm_page_alloc() of order @order; @eff is the constraint to verify. */
static int wl_page_alloc(struct wl_ctx *x, struct wl_set *s, unsigned order,
			 const struct dmm_constraint *c, unsigned flags,
			 const struct dmm_constraint *eff)
{
	dmm_pfn_t pfn;
	int rc;

	x->r.ops++;
	x->r.page_allocs++;
	rc = dmm_page_alloc(x->mem, order, c, flags, &pfn);
	if (rc) {
		count_fail(x->r.alloc_fail, rc);
	} else {
		x->r.page_allocs_ok++;
		accept_block(x, s, pfn, (uint64_t)1 << order, order, eff, flags);
	}
	wl_periodic_check(x);
	return rc;
}

static int wl_range_alloc(struct wl_ctx *x, struct wl_set *s, const struct dmm_constraint *c,
			  uint64_t n, unsigned flags)
{
	dmm_pfn_t pfn;
	int rc;

	x->r.ops++;
	x->r.range_allocs++;
	rc = dmm_alloc_range(x->mem, c, (size_t)n, flags, &pfn);
	if (rc) {
		count_fail(x->r.alloc_fail, rc);
	} else {
		x->r.range_allocs_ok++;
		accept_block(x, s, pfn, n, WL_RANGE_BLOCK, c, flags);
	}
	wl_periodic_check(x);
	return rc;
}

/* Verify and free element @i of @s (swap-remove). */
static void wl_free_at(struct wl_ctx *x, struct wl_set *s, size_t i)
{
	struct wl_block b = s->b[i];
	uint64_t *head, *tail;
	int rc;

	s->b[i] = s->b[--s->n];
	s->pages -= b.npages;
	pattern_ends(x->mem, &b, &head, &tail);
	if (head && tail && !pattern_ok(head, tail, b.token))
		x->r.corruptions++;
	if (!own_update(x->sh, b.pfn, b.npages, false))
		x->r.overlaps++;
	x->r.ops++;
	if (b.order == WL_RANGE_BLOCK)
		rc = dmm_free_range(x->mem, b.pfn, b.npages);
	else
		rc = dmm_page_free(x->mem, b.pfn, b.order);
	if (rc)
		count_fail(x->r.free_fail, rc);
	else
		x->r.frees_ok++;
	wl_periodic_check(x);
}

static void wl_free_random(struct wl_ctx *x, struct wl_set *s)
{
	if (s->n)
		wl_free_at(x, s, (size_t)rng_below(&x->rng, s->n));
}

static void wl_free_all(struct wl_ctx *x, struct wl_set *s)
{
	while (s->n)
		wl_free_random(x, s);
}

static unsigned random_mt_flags(struct wl_ctx *x)
{
	uint64_t u = rng_below(&x->rng, 100);

	return u < 60 ? DMM_GFP_MOVABLE : u < 90 ? 0u : DMM_GFP_RECLAIMABLE;
}

/* ------------------------------------------------------------------------ */
/* mixed                                                                     */

/* Orders by count, per mille: mostly small, but big blocks carry most pages
 * (mean ~119 pages), so large machines fill in a bounded number of blocks. */
static const uint16_t mixed_order_weight[DMM_NR_ORDERS] = {
	300, 120, 100, 100, 60, 50, 50, 50, 50, 60, 60,
};

static unsigned mixed_order(struct wl_ctx *x)
{
	uint64_t u = rng_below(&x->rng, 1000);
	unsigned o = 0;

	while (o < DMM_MAX_ORDER && u >= mixed_order_weight[o])
		u -= mixed_order_weight[o++];
	return o;
}

static const struct dmm_constraint *pick_window(struct wl_ctx *x)
{
	return &x->sh->window[rng_below(&x->rng, x->sh->nr_windows)];
}

/* One allocation of the mixed workload. */
static int mixed_alloc(struct wl_ctx *x)
{
	const struct dmm_machine *m = x->sh->m;
	unsigned flags = random_mt_flags(x);
	uint64_t u = rng_below(&x->rng, 1000);
	unsigned order;

	if (rng_permille(&x->rng, 50))
		flags |= DMM_GFP_ATOMIC;
	/* GFP_ZERO only on small blocks (below), as zeroing touches every page. */
	if (rng_permille(&x->rng, 50))
		flags |= DMM_GFP_ZERO;

	if (u < 60) {
		/* Range request: 1..512 pages, skewed small. */
		struct dmm_constraint c = *pick_window(x);
		uint64_t n = 1 + rng_below(&x->rng, 1ULL << rng_below(&x->rng, 10));
		uint64_t bytes = n << DMM_PAGE_SHIFT, p2 = DMM_PAGE_SIZE;
		uint64_t a = rng_below(&x->rng, 10);

		while (p2 < bytes)
			p2 <<= 1;
		c.align = a < 5 ? 0 : a < 8 ? 64 * 1024 : p2;
		if (rng_permille(&x->rng, 300))
			c.boundary = p2 << rng_below(&x->rng, 3);
		if (n > 16)
			flags &= ~DMM_GFP_ZERO;
		return wl_range_alloc(x, &x->live, &c, n,
				      flags & (DMM_GFP_ATOMIC | DMM_GFP_ZERO | DMM_GFP_MOVABLE));
	}
	if (u < 120) {
		/* Constrained page allocation, orders 0..3. */
		uint64_t k = rng_below(&x->rng, 10);

		order = (unsigned)rng_below(&x->rng, 4);
		struct dmm_constraint c;

		if (k < 2 && x->sh->has_dma) {
			c = dmm_constraint_below(m->dma_limit);
			return wl_page_alloc(x, &x->live, order, NULL, flags | DMM_GFP_DMA, &c);
		}
		if (k < 6 && x->sh->has_dma32) {
			c = dmm_constraint_below(m->dma32_limit);
			return wl_page_alloc(x, &x->live, order, NULL, flags | DMM_GFP_DMA32, &c);
		}
		c = *pick_window(x);
		/* Sometimes an alignment beyond the natural one. */
		if (rng_permille(&x->rng, 300))
			c.align = DMM_PAGE_SIZE << (order + 1 + rng_below(&x->rng, 3));
		return wl_page_alloc(x, &x->live, order, &c, flags, &c);
	}
	order = mixed_order(x);
	if (order > 3)
		flags &= ~DMM_GFP_ZERO;
	return wl_page_alloc(x, &x->live, order, NULL, flags, NULL);
}

static void mixed_loop(struct wl_ctx *x)
{
	bool grow = true;
	unsigned streak = 0;

	while (x->r.ops < x->ops_budget && !x->oom) {
		bool alloc = !x->live.n || rng_permille(&x->rng, grow ? 750 : 250);

		if (alloc) {
			if (mixed_alloc(x)) {
				if (++streak >= 16)
					grow = false;
			} else {
				streak = 0;
			}
		} else {
			wl_free_random(x, &x->live);
		}
		if (grow && x->live.pages >= x->hi_pages)
			grow = false;
		else if (!grow && x->live.pages <= x->lo_pages)
			grow = true;
	}
}

static void *mixed_thread(void *arg)
{
	mixed_loop(arg);
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* lowmem                                                                    */

static unsigned alloc_until_full(struct wl_ctx *x, struct wl_set *s, unsigned order,
				 const struct dmm_constraint *c, unsigned flags, uint64_t cap)
{
	unsigned n = 0;

	while (!x->oom && n < cap && wl_page_alloc(x, s, order, c, flags, c) == 0)
		n++;
	return n;
}

/* Unmovable order-0..3 pressure until WL_FAIL_STREAK failures in a row. */
static void lowmem_pressure_fill(struct wl_ctx *x)
{
	unsigned streak = 0;

	while (streak < WL_FAIL_STREAK && !x->oom) {
		if (wl_page_alloc(x, &x->live, (unsigned)rng_below(&x->rng, 4), NULL, 0, NULL))
			streak++;
		else
			streak = 0;
	}
}

static int run_lowmem(struct wl_ctx *x, const struct dmm_workload_opts *o)
{
	struct dmm_workload_lowmem *lm = &x->r.lowmem;
	const struct dmm_machine *m = x->sh->m;
	struct dmm_zone_info zi;
	struct dmm_constraint above, below;
	int lz;
	uint64_t churn;

	/* The low zone: DMA if present, else DMA32 if a zone lies above it. */
	lz = dmm_zone_index(x->mem, DMM_ZONE_DMA);
	lm->low_zone = DMM_ZONE_DMA;
	lm->limit = m->dma_limit;
	if (lz < 0) {
		lz = dmm_zone_index(x->mem, DMM_ZONE_DMA32);
		lm->low_zone = DMM_ZONE_DMA32;
		lm->limit = m->dma32_limit;
	}
	if (lz < 0 || (unsigned)lz + 1 >= dmm_mem_nr_zones(x->mem))
		return -DMM_ENOTSUP;
	dmm_zone_get_info(x->mem, (unsigned)lz, &zi);
	lm->low_zone_managed = zi.managed;
	lm->requests = o->requests;
	if (!lm->requests) {
		/* Half the low zone in 1 MiB requests, 1..32. */
		uint64_t half_mib = (zi.managed << DMM_PAGE_SHIFT) >> 21;

		lm->requests = half_mib < 1 ? 1u : half_mib > 32 ? 32u : (unsigned)half_mib;
	}

	/* 1. Exhaust the zones above the limit, big blocks first so that a
	 *    64 GiB machine takes a few thousand allocations, not millions. */
	above = (struct dmm_constraint){ lm->limit, DMM_PHYS_MAX, 0, 0, 0, 0 };
	for (int order = DMM_MAX_ORDER; order >= 0 && !x->oom; order--)
		alloc_until_full(x, &x->aux, (unsigned)order, &above, 0, UINT32_MAX);
	lm->prefill_pages = x->aux.pages;

	/* 2. Ordinary unmovable pressure: it can only go into the low zone,
	 *    and only if the policy lets it. Churn (random frees and new
	 *    allocations of mixed orders) splits the zone's large free blocks
	 *    the way a long-running system does. */
	lowmem_pressure_fill(x);
	churn = o->ops ? o->ops : 4 * (uint64_t)x->live.n + 10000;
	for (uint64_t i = 0; i < churn && !x->oom; i++) {
		if (x->live.n && rng_permille(&x->rng, 500))
			wl_free_random(x, &x->live);
		else
			wl_page_alloc(x, &x->live, (unsigned)rng_below(&x->rng, 4), NULL, 0, NULL);
	}
	lowmem_pressure_fill(x);

	lm->pressure_blocks = x->live.n;
	lm->pressure_pages = x->live.pages;
	for (size_t i = 0; i < x->live.n; i++)
		if (dmm_pfn_to_phys(x->live.b[i].pfn) < lm->limit)
			lm->low_zone_taken += x->live.b[i].npages;
	dmm_zone_get_info(x->mem, (unsigned)lz, &zi);
	lm->low_zone_free = zi.free + zi.pcp;

	/* 3. The device's turn: 1 MiB ranges below the limit. */
	below = dmm_constraint_below(lm->limit);
	for (unsigned i = 0; i < lm->requests && !x->oom; i++) {
		int rc = wl_range_alloc(x, &x->aux, &below, 256, 0);

		if (!rc)
			lm->requests_ok++;
		else if (!lm->first_error)
			lm->first_error = rc;
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* fragment                                                                  */

/* Longest range satisfying @c that can be allocated (watermarks ignored:
 * this measures contiguity), by bisection; each probe is freed at once. */
static uint64_t largest_range(struct wl_ctx *x, const struct dmm_constraint *c, uint64_t limit)
{
	uint64_t ok = 0, bad = limit + 1;

	while (bad - ok > 1 && !x->oom) {
		uint64_t mid = ok + (bad - ok) / 2;

		if (wl_range_alloc(x, &x->aux, c, mid, DMM_GFP_NOWMARK) == 0) {
			ok = mid;
			wl_free_at(x, &x->aux, x->aux.n - 1);
		} else {
			bad = mid;
		}
	}
	return ok;
}

static int run_fragment(struct wl_ctx *x, const struct dmm_workload_opts *o)
{
	struct dmm_workload_fragment *fr = &x->r.fragment;
	uint64_t cap = o->ops ? o->ops : UINT64_MAX;
	unsigned streak = 0;
	size_t half;

	/* 1. Fill with random sizes (orders 0..10, uniform) and types until
	 *    WL_FAIL_STREAK requests in a row fail: memory is full. */
	while (streak < WL_FAIL_STREAK && x->r.ops < cap && !x->oom) {
		unsigned order = (unsigned)rng_below(&x->rng, DMM_NR_ORDERS);

		if (wl_page_alloc(x, &x->live, order, NULL, random_mt_flags(x), NULL))
			streak++;
		else
			streak = 0;
	}
	fr->fill_pages = x->live.pages;

	/* 2. Free half of the blocks, in random order. */
	half = x->live.n / 2;
	while (x->live.n > half)
		wl_free_random(x, &x->live);
	fr->held_pages = x->live.pages;

	/* 3. Measure, with the per-CPU caches drained so every free page counts. */
	dmm_page_drain_pcp(x->mem);
	fr->free_pages = dmm_mem_free_pages(x->mem);
	fr->largest_range = largest_range(x, &DMM_CONSTRAINT_ANY, fr->free_pages);
	for (unsigned z = 0; z < dmm_mem_nr_zones(x->mem); z++) {
		struct dmm_zone_info zi;
		struct dmm_constraint c = DMM_CONSTRAINT_ANY;

		dmm_zone_get_info(x->mem, z, &zi);
		c.lo = dmm_pfn_to_phys(zi.start_pfn);
		c.hi = dmm_pfn_to_phys(zi.end_pfn);
		fr->largest_range_zone[z] = largest_range(x, &c, zi.free);
	}
	for (unsigned order = DMM_MAX_ORDER - 1; order <= DMM_MAX_ORDER && !x->oom; order++) {
		size_t mark = x->aux.n;

		fr->order_blocks[order] = alloc_until_full(x, &x->aux, order, &DMM_CONSTRAINT_ANY,
							   DMM_GFP_MOVABLE | DMM_GFP_NOWMARK,
							   UINT32_MAX);
		while (x->aux.n > mark)
			wl_free_at(x, &x->aux, x->aux.n - 1);
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* camera                                                                    */

#define CAM_WORDS (DMM_PAGE_SIZE / sizeof(uint64_t))
#define CAM_NONE UINT32_MAX
#define CAM_PIN_TRIES 4

struct cam_buf {
	dmm_pfn_t pfn;
	uint64_t token;
	bool held;
};

/*
 * State of a camera run. The page-cache side (handles, tokens, pins) is
 * touched only by the page-cache thread, the frames only by the camera
 * thread; the two write disjoint fields of res. With one thread both sides
 * run on ctx[0], interleaved.
 */
struct wl_cam {
	struct wl_ctx *pcx;                  /* page cache and pins */
	struct wl_ctx *ccx;                  /* camera */
	struct dmm_mem *mem;
	struct dmm_workload_camera *res;
	struct dmm_handles *h;
	int area;
	dmm_pfn_t area_lo, area_hi;          /* the camera's area */
	unsigned nr_areas;
	dmm_pfn_t alo[DMM_MAX_CMA_AREAS], ahi[DMM_MAX_CMA_AREAS];
	uint64_t frame_pages, align;
	unsigned queue, cma_flags;
	uint64_t frames, sessions, churn_per_step, gap;
	uint64_t reclaim;                    /* page-cache pages given up per session */
	bool threaded;
	/* page cache */
	uint32_t cap;
	uint64_t target;
	uint64_t *tok;                       /* per handle: pattern token */
	uint32_t *live, *pos;                /* live handles; pos[h] = index in live */
	uint32_t nlive;
	uint8_t *pinned;
	dmm_pfn_t *pin_pfn;
	uint32_t *pins;                      /* pinned handles */
	uint32_t npins;
	uint64_t events_seen;                /* camera events handled (two threads) */
	/* camera */
	struct cam_buf *buf;
	uint64_t pace;                       /* churn_done the next camera step waits for */
	/* shared */
	atomic_uint_fast64_t churn_done;
	/* Camera events, numbered from 1: 2s + 1 = session s starts, 2s + 2 =
	 * it ended. The page-cache side handles them in order. */
	atomic_uint_fast64_t events;
	atomic_uint_fast64_t events_done;
	atomic_bool camera_done;
	atomic_bool pc_stopped;              /* the page-cache thread gave up (host memory) */
};

static inline uint64_t page_word(uint64_t token, unsigned i)
{
	return token ^ ((uint64_t)(i + 1) * 0x9e3779b97f4a7c15ULL);
}

static void page_fill(uint64_t *p, uint64_t token)
{
	for (unsigned i = 0; i < CAM_WORDS; i++)
		p[i] = page_word(token, i);
}

static bool page_ok(const uint64_t *p, uint64_t token)
{
	uint64_t diff = 0;

	for (unsigned i = 0; i < CAM_WORDS; i++)
		diff |= p[i] ^ page_word(token, i);
	return diff == 0;
}

/* A fresh token: unique per allocation (the thread's counter) and seed
 * dependent. */
static uint64_t cam_token(struct wl_ctx *x)
{
	uint64_t n = ++x->next_id ^ ((uint64_t)x->tid << 56);

	return splitmix64(&n) ^ rng_next(&x->rng);
}

/* ---- the page cache ----------------------------------------------------- */

static void pc_add(struct wl_cam *c, uint32_t h)
{
	c->pos[h] = c->nlive;
	c->live[c->nlive++] = h;
	if (c->nlive > c->res->handles_peak)
		c->res->handles_peak = c->nlive;
}

static void pc_remove(struct wl_cam *c, uint32_t h)
{
	uint32_t i = c->pos[h], last = c->live[--c->nlive];

	c->live[i] = last;
	c->pos[last] = i;
	c->pos[h] = CAM_NONE;
}

/* Lock @h, check its page against its token, unlock. */
static bool pc_verify(struct wl_cam *c, uint32_t h)
{
	const uint64_t *p = dmm_handle_lock(c->h, h);
	bool ok;

	if (!p)
		return false;
	ok = page_ok(p, c->tok[h]);
	if (dmm_handle_unlock(c->h, h))
		ok = false;
	return ok;
}

/* Allocate a handle and fill its page. 0 or the allocator's error. */
static int pc_alloc(struct wl_cam *c)
{
	struct wl_ctx *x = c->pcx;
	uint32_t h;
	uint64_t *p;
	int rc;

	c->res->handle_allocs++;
	x->r.ops++;
	rc = dmm_handle_alloc(c->h, 0, &h);
	if (rc) {
		count_fail(x->r.alloc_fail, rc);
		wl_periodic_check(x);
		return rc;
	}
	c->res->handle_allocs_ok++;
	c->tok[h] = cam_token(x);
	p = dmm_handle_lock(c->h, h);
	if (!p) {
		x->r.descriptor_errors++;
	} else {
		page_fill(p, c->tok[h]);
		dmm_handle_unlock(c->h, h);
	}
	pc_add(c, h);
	wl_periodic_check(x);
	return 0;
}

/* Verify and free a random handle that is not pinned. */
static void pc_free_random(struct wl_cam *c)
{
	struct wl_ctx *x = c->pcx;
	uint32_t h = CAM_NONE;
	int rc;

	for (int tries = 0; tries < 16 && c->nlive; tries++) {
		uint32_t k = c->live[rng_below(&x->rng, c->nlive)];

		if (!c->pinned[k]) {
			h = k;
			break;
		}
	}
	if (h == CAM_NONE)
		return;
	c->res->samples++;
	if (!pc_verify(c, h))
		c->res->sample_errors++;
	pc_remove(c, h);
	x->r.ops++;
	rc = dmm_handle_free(c->h, h);
	if (rc)
		count_fail(x->r.free_fail, rc);
	else
		c->res->handle_frees++;
	wl_periodic_check(x);
}

/*
 * Long-term pin @h's page. The pin takes a pfn, so look it up, pin, and
 * look again: on two threads the camera may have moved the page in
 * between, then the pin is dropped and retried.
 */
static void pc_pin(struct wl_cam *c, uint32_t h)
{
	struct dmm_workload_camera *res = c->res;

	res->pins_wanted++;
	for (int t = 0; t < CAM_PIN_TRIES; t++) {
		enum dmm_migrate_reason why = DMM_MIGRATE_MOVED;
		dmm_pfn_t pfn, got, now;
		int rc;

		if (dmm_handle_pfn(c->h, h, &pfn))
			break;
		rc = dmm_page_pin(c->mem, pfn, DMM_PIN_LONGTERM, &got, &why);
		if (rc == -DMM_EAGAIN || rc == -DMM_ENOENT) {
			res->pins_retried++;
			continue;
		}
		if (rc) {
			res->pins_failed++;
			res->pin_fail[(unsigned)why < DMM_NR_MIGRATE_REASONS ? why : DMM_MIGRATE_BUSY]++;
			return;
		}
		if (dmm_handle_pfn(c->h, h, &now) || now != got) {
			dmm_page_unpin(c->mem, got, DMM_PIN_LONGTERM);
			res->pins_retried++;
			continue;
		}
		c->pinned[h] = 1;
		c->pin_pfn[h] = got;
		c->pins[c->npins++] = h;
		res->pins_taken++;
		return;
	}
	res->pins_failed++;
	res->pin_fail[DMM_MIGRATE_BUSY]++;
}

static void pc_unpin_at(struct wl_cam *c, uint32_t i)
{
	uint32_t h = c->pins[i];
	dmm_pfn_t now;

	if (dmm_handle_pfn(c->h, h, &now) || now != c->pin_pfn[h])
		c->res->pinned_moved++;
	if (dmm_page_unpin(c->mem, c->pin_pfn[h], DMM_PIN_LONGTERM))
		c->res->unpin_errors++;
	else
		c->res->unpins++;
	c->pinned[h] = 0;
	c->pins[i] = c->pins[--c->npins];
}

/* A random live handle that is not pinned, or CAM_NONE. */
static uint32_t pc_pick_unpinned(struct wl_cam *c)
{
	for (int tries = 0; tries < 16 && c->nlive; tries++) {
		uint32_t h = c->live[rng_below(&c->pcx->rng, c->nlive)];

		if (!c->pinned[h])
			return h;
	}
	return CAM_NONE;
}

/*
 * The RDMA-like user at the start of each camera session: the first time
 * it registers pin_pct % of the page cache; later it drops an eighth of its
 * pins and takes as many new ones (registrations come and go).
 */
static void pc_pin_turnover(struct wl_cam *c, uint64_t session)
{
	uint32_t want;

	if (c->res->pin_pct <= 0)
		return;
	if (session == 0) {
		want = (uint32_t)((double)c->nlive * c->res->pin_pct / 100.0);
	} else {
		want = c->npins / 8;
		for (uint32_t i = 0; i < want && c->npins; i++)
			pc_unpin_at(c, (uint32_t)rng_below(&c->pcx->rng, c->npins));
	}
	for (uint32_t i = 0; i < want; i++) {
		uint32_t h = pc_pick_unpinned(c);

		if (h == CAM_NONE)
			break;
		pc_pin(c, h);
	}
}

/*
 * A session starts: the page cache gives up as much memory as the camera's
 * queue needs (reclaim: random pages, verified as they go), then the
 * pinning user's turnover (its pins may need free memory to migrate a page
 * out of an area first). A session ended: the page cache grows back into the
 * memory the camera released, so memory stays nearly full and the next
 * session finds the area lent out again.
 */
static void pc_event(struct wl_cam *c, uint64_t ev)
{
	uint64_t s = (ev - 1) / 2;

	if (ev & 1) {
		c->target = c->target > c->reclaim ? c->target - c->reclaim : 0;
		while (c->nlive > c->target) {
			uint32_t n = c->nlive;

			pc_free_random(c);
			if (c->nlive == n)
				break; /* only pinned pages left */
		}
		pc_pin_turnover(c, s);
	} else {
		unsigned streak = 0;

		c->target += c->reclaim;
		while (c->nlive < c->target && streak < WL_FAIL_STREAK && !c->pcx->oom)
			streak = pc_alloc(c) ? streak + 1 : 0;
	}
}

/* One page-cache operation: free one (at the target level), allocate one,
 * and re-verify a random page. */
static void pc_churn_op(struct wl_cam *c)
{
	struct dmm_workload_camera *res = c->res;
	uint64_t a0 = res->handle_allocs, ok0 = res->handle_allocs_ok, f0 = res->handle_frees;

	if (c->nlive >= c->target)
		pc_free_random(c);
	if (c->nlive < c->target)
		pc_alloc(c);
	res->churn_allocs += res->handle_allocs - a0;
	res->churn_allocs_ok += res->handle_allocs_ok - ok0;
	res->churn_frees += res->handle_frees - f0;
	if (c->nlive && (c->res->churn_ops & 3) == 0) {
		uint32_t h = c->live[rng_below(&c->pcx->rng, c->nlive)];

		c->res->samples++;
		if (!pc_verify(c, h))
			c->res->sample_errors++;
	}
	c->res->churn_ops++;
	atomic_fetch_add_explicit(&c->churn_done, 1u, memory_order_release);
}

/* ---- the camera ---------------------------------------------------------- */

static void frame_fill(struct wl_cam *c, const struct cam_buf *b)
{
	for (uint64_t i = 0; i < c->frame_pages; i++) {
		uint64_t *p = dmm_pfn_to_virt(c->mem, b->pfn + i);

		if (p)
			page_fill(p, b->token + i);
	}
	c->res->frame_writes++;
}

static void frame_check(struct wl_cam *c, const struct cam_buf *b)
{
	bool ok = true;

	for (uint64_t i = 0; i < c->frame_pages && ok; i++) {
		const uint64_t *p = dmm_pfn_to_virt(c->mem, b->pfn + i);

		ok = p && page_ok(p, b->token + i);
	}
	c->res->frame_checks++;
	if (!ok)
		c->res->frame_errors++;
}

/* Wait for (two threads) or do (one thread) the page-cache work that comes
 * before the next camera step. */
static void cam_pace(struct wl_cam *c, uint64_t ops)
{
	c->pace += ops;
	if (!c->threaded) {
		while (atomic_load_explicit(&c->churn_done, memory_order_relaxed) < c->pace &&
		       !c->pcx->oom)
			pc_churn_op(c);
		return;
	}
	while (atomic_load_explicit(&c->churn_done, memory_order_acquire) < c->pace &&
	       !atomic_load_explicit(&c->pc_stopped, memory_order_acquire)) {
		struct timespec ts = { 0, 20000 };

		nanosleep(&ts, NULL);
	}
}

static void cam_alloc(struct wl_cam *c, struct cam_buf *b)
{
	struct wl_ctx *x = c->ccx;
	enum dmm_cma_fail why = DMM_CMA_FAIL_NOSPACE;
	dmm_pfn_t pfn;
	int rc;

	b->held = false;
	c->res->cma_tried++;
	x->r.ops++;
	rc = dmm_cma_alloc(c->mem, c->area, (size_t)c->frame_pages, c->align, c->cma_flags, &pfn,
			   &why);
	if (rc) {
		count_fail(x->r.alloc_fail, rc);
		c->res->cma_fail[(unsigned)why < DMM_NR_CMA_FAILS ? why : DMM_CMA_FAIL_NOSPACE]++;
		wl_periodic_check(x);
		return;
	}
	c->res->cma_ok++;
	if (pfn < c->area_lo || pfn + c->frame_pages > c->area_hi ||
	    (dmm_pfn_to_phys(pfn) & (c->align - 1)))
		c->res->frame_outside++;
	if (!descriptors_ok(c->mem, pfn, c->frame_pages))
		x->r.descriptor_errors++;
	if (!own_update(x->sh, pfn, c->frame_pages, true))
		x->r.overlaps++;
	b->pfn = pfn;
	b->token = cam_token(x);
	b->held = true;
	frame_fill(c, b);
	wl_periodic_check(x);
}

static void cam_release(struct wl_cam *c, struct cam_buf *b)
{
	struct wl_ctx *x = c->ccx;
	int rc;

	if (!b->held)
		return;
	frame_check(c, b);
	if (!own_update(x->sh, b->pfn, c->frame_pages, false))
		x->r.overlaps++;
	x->r.ops++;
	rc = dmm_cma_release(c->mem, c->area, b->pfn, (size_t)c->frame_pages);
	if (rc)
		count_fail(x->r.free_fail, rc);
	else
		x->r.frees_ok++;
	b->held = false;
	wl_periodic_check(x);
}

/*
 * Streaming sessions: allocate the queue (each frame written as it
 * arrives), capture (each frame rewritten once), check and release the
 * queue; the page cache gives memory up before a session and grows back
 * into the area after it.
 */
/* The page-cache side stopped early (host memory ran out). */
static bool cam_abort(struct wl_cam *c)
{
	if (c->threaded)
		return atomic_load_explicit(&c->pc_stopped, memory_order_acquire);
	return c->pcx->oom;
}

/* Tell the page-cache side about event @ev and, if asked, wait until it is
 * handled (one thread: handle it here). */
static void cam_event(struct wl_cam *c, uint64_t ev, bool wait)
{
	if (!c->threaded) {
		pc_event(c, ev);
		return;
	}
	atomic_store_explicit(&c->events, ev, memory_order_release);
	while (wait && atomic_load_explicit(&c->events_done, memory_order_acquire) < ev &&
	       !atomic_load_explicit(&c->pc_stopped, memory_order_acquire)) {
		struct timespec ts = { 0, 20000 };

		nanosleep(&ts, NULL);
	}
}

static void cam_run(struct wl_cam *c)
{
	for (uint64_t s = 0; s < c->sessions && !cam_abort(c); s++) {
		/* frames of this session: a full queue, or what is left of --frames */
		uint64_t left = c->frames - s * c->queue;
		unsigned n = left < c->queue ? (unsigned)left : c->queue;

		cam_event(c, 2 * s + 1, true);
		for (unsigned b = 0; b < n; b++) {
			cam_pace(c, c->churn_per_step);
			cam_alloc(c, &c->buf[b]);
		}
		for (unsigned b = 0; b < n; b++) {
			cam_pace(c, c->churn_per_step);
			if (c->buf[b].held) {
				c->buf[b].token = cam_token(c->ccx);
				frame_fill(c, &c->buf[b]);
			}
		}
		for (unsigned b = 0; b < n; b++) {
			cam_pace(c, c->churn_per_step);
			cam_release(c, &c->buf[b]);
		}
		cam_event(c, 2 * s + 2, false);
		cam_pace(c, c->gap);
	}
	atomic_store_explicit(&c->camera_done, true, memory_order_release);
}

static void *cam_thread(void *arg)
{
	cam_run(arg);
	return NULL;
}

/* Page-cache thread of a two-thread run: churn until the camera is done,
 * doing the pin turnover when a session starts. */
static void pc_thread_loop(struct wl_cam *c)
{
	while (!atomic_load_explicit(&c->camera_done, memory_order_acquire) && !c->pcx->oom) {
		uint64_t ev = atomic_load_explicit(&c->events, memory_order_acquire);

		while (c->events_seen < ev) {
			pc_event(c, ++c->events_seen);
			atomic_store_explicit(&c->events_done, c->events_seen, memory_order_release);
		}
		pc_churn_op(c);
	}
	/* the camera's last event (the page cache grows back) */
	while (!c->pcx->oom && c->events_seen < atomic_load_explicit(&c->events, memory_order_acquire))
		pc_event(c, ++c->events_seen);
	atomic_store_explicit(&c->pc_stopped, true, memory_order_release);
}

/* ---- set-up and teardown ------------------------------------------------- */

static bool pfn_in_areas(const struct wl_cam *c, dmm_pfn_t pfn)
{
	for (unsigned i = 0; i < c->nr_areas; i++)
		if (pfn >= c->alo[i] && pfn < c->ahi[i])
			return true;
	return false;
}

/* Zone index of @pfn, or -1. */
static int zone_of_pfn(struct dmm_mem *mem, dmm_pfn_t pfn)
{
	for (unsigned z = 0; z < dmm_mem_nr_zones(mem); z++) {
		struct dmm_zone_info zi;

		dmm_zone_get_info(mem, z, &zi);
		if (pfn >= zi.start_pfn && pfn < zi.end_pfn)
			return (int)z;
	}
	return -1;
}

/*
 * Ballast: take zone @z down to @leave free pages outside its contiguous
 * areas (@cma_free of its free pages are in areas, which unmovable blocks
 * never use) with untouched unmovable blocks, largest first. It stands for
 * the memory other users hold, so that a run writes only the page cache.
 */
static void cam_ballast_zone(struct wl_ctx *x, unsigned z, uint64_t leave, uint64_t cma_free)
{
	struct dmm_zone_info zi;
	struct dmm_constraint c;
	uint64_t free;

	dmm_zone_get_info(x->mem, z, &zi);
	c = (struct dmm_constraint){ dmm_pfn_to_phys(zi.start_pfn), dmm_pfn_to_phys(zi.end_pfn),
				     0, 0, 0, 0 };
	free = zi.free > cma_free ? zi.free - cma_free : 0;
	for (int order = DMM_MAX_ORDER; order >= 0 && !x->oom; order--) {
		uint64_t n = (uint64_t)1 << order;

		while (free >= leave + n && !x->oom &&
		       wl_page_alloc(x, &x->aux, (unsigned)order, &c, DMM_GFP_NOCACHE, &c) == 0)
			free -= n;
	}
}

static int cam_setup(struct wl_cam *c, const struct dmm_workload_opts *o)
{
	struct dmm_mem *mem = c->mem;
	struct dmm_workload_camera *res = c->res;
	const struct dmm_machine *m = dmm_mem_machine(mem);
	struct dmm_cma_info ai;
	bool scope[DMM_NR_ZONE_TYPES] = { false };
	uint64_t cma_free[DMM_NR_ZONE_TYPES] = { 0 }, keep[DMM_NR_ZONE_TYPES] = { 0 };
	uint64_t zavail[DMM_NR_ZONE_TYPES] = { 0 };
	unsigned nz = dmm_mem_nr_zones(mem), top;
	uint64_t area_bytes, fb, avail = 0, all_areas = 0, want, cap;
	int rc;

	c->nr_areas = dmm_cma_count(mem);
	if (!c->nr_areas)
		return -DMM_ENOTSUP;
	c->area = o->cma_area ? dmm_cma_find(mem, o->cma_area) : dmm_cma_default(mem);
	if (c->area < 0)
		return -DMM_ENOENT;
	for (unsigned i = 0; i < c->nr_areas; i++) {
		int zi;

		dmm_cma_get_info(mem, (int)i, &ai);
		c->alo[i] = ai.base_pfn;
		c->ahi[i] = ai.base_pfn + ai.nr_pages;
		zi = zone_of_pfn(mem, ai.base_pfn);
		if (zi >= 0 && zi < DMM_NR_ZONE_TYPES) {
			scope[zi] = true;
			cma_free[zi] += ai.free_pages;
		}
		all_areas += ai.nr_pages;
	}
	c->area_lo = c->alo[c->area];
	c->area_hi = c->ahi[c->area];
	res->area = c->area;

	/* Frames: area / 8 within 8..32 MiB, at most area / queue. */
	c->queue = o->queue ? o->queue : 4;
	area_bytes = (c->area_hi - c->area_lo) << DMM_PAGE_SHIFT;
	fb = o->frame_bytes;
	if (!fb) {
		fb = area_bytes / 8;
		fb = fb < (8u << 20) ? (8u << 20) : fb > (32u << 20) ? (32u << 20) : fb;
		if (fb > area_bytes / c->queue)
			fb = area_bytes / c->queue;
	}
	c->frame_pages = (fb + DMM_PAGE_SIZE - 1) >> DMM_PAGE_SHIFT;
	if (!c->frame_pages || c->frame_pages > c->area_hi - c->area_lo)
		return -DMM_EINVAL;
	/* Linux's CMA alignment: the buffer's order, at most 1 MiB (CONFIG_CMA_ALIGNMENT 8). */
	c->align = DMM_PAGE_SIZE;
	while (c->align < (c->frame_pages << DMM_PAGE_SHIFT) && c->align < (1u << 20))
		c->align <<= 1;
	c->frames = o->frames ? o->frames : 32;
	c->sessions = (c->frames + c->queue - 1) / c->queue; /* the last one may be short */
	c->churn_per_step = o->churn ? o->churn : 256;
	c->gap = c->churn_per_step * c->queue;
	c->reclaim = c->queue * c->frame_pages;
	res->frame_pages = c->frame_pages;
	res->frame_align = c->align;
	res->queue = c->queue;
	res->sessions = c->sessions;
	res->churn_per_step = c->churn_per_step;
	res->uncached = o->uncached > 0 || (o->uncached < 0 && m->dma_min_align > m->cache_line);
	c->cma_flags = res->uncached ? DMM_CMA_UNCACHED : 0;
	res->pin_pct = o->pin_pct;
	res->longterm_pin_migrate = m->longterm_pin_migrate;

	/*
	 * The page cache lives in the zones holding an area, down to their
	 * watermarks (less the protection lowmem_reserve keeps from requests
	 * that could use the highest zone); it is @want pages (default four
	 * times the areas, at least 256 MiB), shared among those zones by
	 * their room. Ballast takes the other zones down to their high
	 * watermark and the rest of the room in the zones with an area. Before
	 * each session the page cache gives up the camera's queue.
	 */
	dmm_page_drain_pcp(mem);
	top = nz - 1;
	for (unsigned z = 0; z < nz && z < DMM_NR_ZONE_TYPES; z++) {
		struct dmm_zone_info zi, ti;

		dmm_zone_get_info(mem, z, &zi);
		dmm_zone_get_info(mem, top, &ti);
		keep[z] = zi.wmark_high + (z == top ? 0 : zi.protection[ti.type]);
		if (!scope[z])
			continue;
		res->nr_scope_zones++;
		zavail[z] = zi.free > keep[z] ? zi.free - keep[z] : 0;
		avail += zavail[z];
	}
	want = o->cache_bytes ? o->cache_bytes >> DMM_PAGE_SHIFT : 4 * all_areas;
	if (!o->cache_bytes && want < ((uint64_t)256 << (20 - DMM_PAGE_SHIFT)))
		want = (uint64_t)256 << (20 - DMM_PAGE_SHIFT);
	if (want > avail)
		want = avail;
	if (want > ((uint64_t)1 << 24) - 1)
		want = ((uint64_t)1 << 24) - 1;
	for (unsigned z = 0; z < nz && z < DMM_NR_ZONE_TYPES; z++) {
		uint64_t share, room;

		if (!scope[z]) {
			cam_ballast_zone(c->pcx, z, keep[z], 0);
			continue;
		}
		share = avail ? (uint64_t)((double)want * (double)zavail[z] / (double)avail) : 0;
		room = share > cma_free[z] ? share - cma_free[z] : 0;
		if (zavail[z] > share)
			cam_ballast_zone(c->pcx, z, keep[z] + room, cma_free[z]);
	}
	cap = want;
	res->ballast_pages = c->pcx->aux.pages;
	if (cap < 16)
		cap = 16;
	rc = dmm_handles_create(mem, (uint32_t)cap, &c->h);
	if (rc)
		return rc;
	/* the table's own pages come out of the same memory */
	{
		uint64_t table = (cap * 16 + DMM_PAGE_SIZE - 1) >> DMM_PAGE_SHIFT;

		c->target = cap > table ? cap - table : 1;
	}
	c->cap = (uint32_t)cap;
	res->target_handles = c->target;

	c->tok = calloc(cap, sizeof(*c->tok));
	c->live = calloc(cap, sizeof(*c->live));
	c->pos = malloc(cap * sizeof(*c->pos));
	c->pinned = calloc(cap, 1);
	c->pin_pfn = calloc(cap, sizeof(*c->pin_pfn));
	c->pins = calloc(cap, sizeof(*c->pins));
	c->buf = calloc(c->queue, sizeof(*c->buf));
	if (!c->tok || !c->live || !c->pos || !c->pinned || !c->pin_pfn || !c->pins || !c->buf)
		return -DMM_ENOMEM;
	memset(c->pos, 0xff, cap * sizeof(*c->pos));
	return 0;
}

/* Fill the page cache up to its target (64 failures in a row end it early). */
static void cam_fill(struct wl_cam *c)
{
	unsigned streak = 0;

	while (c->nlive < c->target && streak < WL_FAIL_STREAK && !c->pcx->oom) {
		if (pc_alloc(c))
			streak++;
		else
			streak = 0;
	}
	c->res->fill_handles = c->nlive;
}

static uint64_t area_lent(struct dmm_mem *mem, int area)
{
	struct dmm_cma_info ai;

	return dmm_cma_get_info(mem, area, &ai) ? 0 : ai.lent_pages;
}

static int run_camera(struct wl_shared *sh, struct wl_ctx *ctx, unsigned threads,
		      const struct dmm_workload_opts *o, struct wl_cam *c)
{
	struct dmm_migrate_stats m0, m1;
	pthread_t tid;
	int rc;

	c->mem = sh->mem;
	c->pcx = &ctx[0];
	c->ccx = threads > 1 ? &ctx[1] : &ctx[0];
	c->res = &ctx[0].r.camera;
	c->threaded = threads > 1;
	atomic_init(&c->churn_done, 0u);
	atomic_init(&c->events, 0u);
	atomic_init(&c->events_done, 0u);
	atomic_init(&c->camera_done, false);
	atomic_init(&c->pc_stopped, false);
	dmm_migrate_get_stats(c->mem, &m0);

	rc = cam_setup(c, o);
	if (rc)
		return rc;
	cam_fill(c);
	c->res->lent_after_fill = area_lent(c->mem, c->area);

	if (!c->threaded) {
		cam_run(c);
	} else {
		if (pthread_create(&tid, NULL, cam_thread, c))
			return -DMM_EAGAIN;
		pc_thread_loop(c);
		pthread_join(tid, NULL);
	}

	/* The state the operations left. */
	dmm_migrate_get_stats(c->mem, &m1);
	{
		const uint64_t *a = (const uint64_t *)&m0, *b = (const uint64_t *)&m1;
		uint64_t *d = (uint64_t *)&c->res->mig;

		for (size_t i = 0; i < sizeof(m1) / sizeof(uint64_t); i++)
			d[i] = b[i] - a[i];
	}
	c->res->handles_end = c->nlive;
	c->res->lent_end = area_lent(c->mem, c->area);
	c->res->pins_held_end = c->npins;
	for (uint32_t i = 0; i < c->npins; i++)
		if (pfn_in_areas(c, c->pin_pfn[c->pins[i]]))
			c->res->pins_in_areas_end++;
	{
		struct dmm_handles_stats hs;

		dmm_handles_get_stats(c->h, &hs);
		c->res->handles_migrated = hs.migrated;
		c->res->handles_refused_locked = hs.refused_locked;
	}
	return 0;
}

/* With the checks done: verify every page, drop the pins and the frames,
 * free the page cache. */
static void cam_teardown(struct wl_cam *c)
{
	if (c->h) {
		for (uint32_t i = 0; i < c->nlive; i++) {
			c->res->final_verified++;
			if (!pc_verify(c, c->live[i]))
				c->res->final_errors++;
		}
		while (c->npins)
			pc_unpin_at(c, c->npins - 1);
	}
	if (c->buf)
		for (unsigned b = 0; b < c->queue; b++)
			cam_release(c, &c->buf[b]);
	if (c->h) {
		dmm_handles_destroy(c->h);
		c->h = NULL;
		c->nlive = 0;
	}
	free(c->tok);
	free(c->live);
	free(c->pos);
	free(c->pinned);
	free(c->pin_pfn);
	free(c->pins);
	free(c->buf);
}

/* ------------------------------------------------------------------------ */
/* Driver                                                                    */

static void merge_result(struct dmm_workload_result *d, const struct dmm_workload_result *s)
{
	d->ops += s->ops;
	d->page_allocs += s->page_allocs;
	d->page_allocs_ok += s->page_allocs_ok;
	d->range_allocs += s->range_allocs;
	d->range_allocs_ok += s->range_allocs_ok;
	d->frees_ok += s->frees_ok;
	for (unsigned i = 0; i < DMM__NR_ERRORS; i++) {
		d->alloc_fail[i] += s->alloc_fail[i];
		d->free_fail[i] += s->free_fail[i];
	}
	d->constraint_violations += s->constraint_violations;
	d->descriptor_errors += s->descriptor_errors;
	d->overlaps += s->overlaps;
	d->corruptions += s->corruptions;
	d->peak_live_pages += s->peak_live_pages; /* per-thread peaks: an upper bound */
	d->end_live_pages += s->end_live_pages;
}

/* Address windows for constrained requests: below each low limit, above
 * 4 GiB, and the middle half of the physical span. */
static void build_windows(struct wl_shared *sh)
{
	const struct dmm_machine *m = sh->m;
	dmm_phys_t lo = dmm_pfn_to_phys(sh->min_pfn), hi = dmm_pfn_to_phys(sh->max_pfn);
	dmm_phys_t q = (hi - lo) / 4 & ~(DMM_PAGE_SIZE - 1);

	sh->has_dma = m->dma_limit && dmm_zone_index(sh->mem, DMM_ZONE_DMA) >= 0;
	sh->has_dma32 = m->dma32_limit && dmm_zone_index(sh->mem, DMM_ZONE_DMA32) >= 0;
	sh->nr_windows = 0;
	if (sh->has_dma)
		sh->window[sh->nr_windows++] = dmm_constraint_below(m->dma_limit);
	if (sh->has_dma32 || (m->dma32_limit && m->dma32_limit > lo))
		sh->window[sh->nr_windows++] = dmm_constraint_below(m->dma32_limit);
	if (m->dma32_limit && hi > m->dma32_limit)
		sh->window[sh->nr_windows++] =
			(struct dmm_constraint){ m->dma32_limit, DMM_PHYS_MAX, 0, 0, 0, 0 };
	if (q)
		sh->window[sh->nr_windows++] = (struct dmm_constraint){ lo + q, hi - q, 0, 0, 0, 0 };
	if (!sh->nr_windows)
		sh->window[sh->nr_windows++] = DMM_CONSTRAINT_ANY;
}

void dmm_workload_opts_init(struct dmm_workload_opts *o)
{
	if (!o)
		return;
	memset(o, 0, sizeof(*o));
	o->seed = 1;
	o->uncached = -1;
}

const char *const *dmm_workload_names(void)
{
	return wl_names;
}

const char *dmm_workload_describe(const char *name)
{
	for (unsigned i = 0; name && wl_names[i]; i++)
		if (strcmp(name, wl_names[i]) == 0)
			return wl_descr[i];
	return NULL;
}

static void ctx_init(struct wl_ctx *x, struct wl_shared *sh, const struct dmm_workload_opts *o,
		     unsigned tid)
{
	memset(x, 0, sizeof(*x));
	x->sh = sh;
	x->mem = sh->mem;
	x->tid = tid;
	x->r.seed = o->seed;
	rng_seed(&x->rng, o->seed, tid);
}

static void ctx_fini(struct wl_ctx *x)
{
	free(x->live.b);
	free(x->aux.b);
}

static int run_mixed(struct wl_shared *sh, struct wl_ctx *ctx, unsigned threads,
		     const struct dmm_workload_opts *o)
{
	uint64_t ops = o->ops;
	pthread_t tids[WL_MAX_THREADS];
	unsigned started = 1;
	int err = 0;

	if (!ops) {
		/* Enough for a few swings of the live set, 100k..4M. */
		ops = sh->managed / 119 * 8;
		ops = ops < 100000 ? 100000 : ops > 4000000 ? 4000000 : ops;
	}
	for (unsigned t = 0; t < threads; t++) {
		ctx[t].ops_budget = ops / threads + (t < ops % threads);
		ctx[t].lo_pages = sh->managed / 100 * 60 / threads;
		ctx[t].hi_pages = sh->managed / 100 * 90 / threads;
	}
	for (unsigned t = 1; t < threads; t++) {
		if (pthread_create(&tids[t], NULL, mixed_thread, &ctx[t])) {
			err = -DMM_EAGAIN;
			break;
		}
		started++;
	}
	if (!err)
		mixed_loop(&ctx[0]);
	for (unsigned t = 1; t < started; t++)
		pthread_join(tids[t], NULL);
	return err;
}

int dmm_workload_run(struct dmm_mem *mem, const char *name, const struct dmm_workload_opts *o,
		     struct dmm_workload_result *r)
{
	struct dmm_mem_info info;
	struct wl_shared sh;
	struct wl_cam cam;
	struct wl_ctx *ctx;
	unsigned threads, wl = 0;
	uint64_t t0, t1, nwords;
	int err = 0;

	if (!mem || !o || !r)
		return -DMM_EINVAL;
	if (!name)
		name = wl_names[0];
	while (wl_names[wl] && strcmp(name, wl_names[wl]) != 0)
		wl++;
	if (!wl_names[wl])
		return -DMM_EINVAL;
	if (wl == WL_DMA)
		return -DMM_ENOTSUP; /* needs the hardware model: dmm_workload_run_dma() */
	threads = o->threads ? o->threads : 1;
	if (threads > WL_MAX_THREADS)
		return -DMM_EINVAL;
	if (threads > 1 && wl != WL_MIXED && !(wl == WL_CAMERA && threads == 2))
		return -DMM_ENOTSUP;
	if (wl == WL_CAMERA &&
	    (o->pin_pct < 0 || o->pin_pct > 100 || o->queue > 1024 || o->uncached > 1))
		return -DMM_EINVAL;

	memset(r, 0, sizeof(*r));
	memset(&sh, 0, sizeof(sh));
	memset(&cam, 0, sizeof(cam));
	r->workload = wl_names[wl];
	r->seed = o->seed;
	r->threads = threads;

	dmm_mem_get_info(mem, &info);
	sh.mem = mem;
	sh.m = dmm_mem_machine(mem);
	sh.min_pfn = info.min_pfn;
	sh.max_pfn = info.max_pfn;
	sh.check_every = o->check_every;
	atomic_init(&sh.checks_run, 0u);
	atomic_init(&sh.checks_failed, 0u);
	r->nr_zones = dmm_mem_nr_zones(mem);
	for (unsigned z = 0; z < r->nr_zones && z < DMM_NR_ZONE_TYPES; z++) {
		struct dmm_zone_info zi;

		dmm_zone_get_info(mem, z, &zi);
		sh.managed += zi.managed;
	}
	r->managed_pages = sh.managed;
	build_windows(&sh);

	nwords = (sh.max_pfn - sh.min_pfn + 63) / 64;
	sh.owned = calloc(nwords ? nwords : 1, sizeof(*sh.owned));
	ctx = calloc(threads, sizeof(*ctx));
	if (!sh.owned || !ctx) {
		free((void *)sh.owned);
		free(ctx);
		return -DMM_ENOMEM;
	}
	for (unsigned t = 0; t < threads; t++)
		ctx_init(&ctx[t], &sh, o, t);

	dmm_page_drain_pcp(mem);
	r->start_free_pages = dmm_mem_free_pages(mem);

	t0 = wl_now();
	if (wl == WL_MIXED)
		err = run_mixed(&sh, ctx, threads, o);
	else if (wl == WL_LOWMEM)
		err = run_lowmem(&ctx[0], o);
	else if (wl == WL_FRAGMENT)
		err = run_fragment(&ctx[0], o);
	else
		err = run_camera(&sh, ctx, threads, o, &cam);
	t1 = wl_now();
	r->elapsed_ns = t1 - t0;
	if (wl == WL_CAMERA && (err == -DMM_ENOTSUP || err == -DMM_ENOENT || err == -DMM_EINVAL)) {
		/* The camera could not start: nothing ran, give back its set-up. */
		cam_teardown(&cam);
		for (unsigned t = 0; t < threads; t++) {
			wl_free_all(&ctx[t], &ctx[t].aux);
			ctx_fini(&ctx[t]);
		}
		free(ctx);
		free((void *)sh.owned);
		return err;
	}

	/* The state the operations left, then the checks with it in place. */
	for (unsigned t = 0; t < threads; t++) {
		ctx[t].r.end_live_pages = ctx[t].live.pages + ctx[t].aux.pages;
		merge_result(r, &ctx[t].r);
	}
	r->lowmem = ctx[0].r.lowmem;
	r->fragment = ctx[0].r.fragment;
	r->camera = ctx[0].r.camera;
	if (wl == WL_CAMERA) {
		r->peak_live_pages += r->camera.handles_peak;
		r->end_live_pages += r->camera.handles_end;
	}
	for (unsigned z = 0; z < r->nr_zones && z < DMM_NR_ZONE_TYPES; z++)
		dmm_zone_get_info(mem, z, &r->zone[z]);
	r->nr_cma = dmm_cma_count(mem);
	for (unsigned a = 0; a < r->nr_cma && a < DMM_MAX_CMA_AREAS; a++) {
		dmm_cma_get_info(mem, (int)a, &r->cma[a]);
		r->cma_zone[a] = -1;
		for (unsigned z = 0; z < r->nr_zones && z < DMM_NR_ZONE_TYPES; z++)
			if (r->cma[a].base_pfn >= r->zone[z].start_pfn &&
			    r->cma[a].base_pfn < r->zone[z].end_pfn)
				r->cma_zone[a] = (int)z;
	}
	r->page_check_end = dmm_page_alloc_check(mem);
	r->range_check_end = dmm_range_check(mem);
	r->cma_check_end = dmm_cma_check(mem);
	if (wl == WL_CAMERA) {
		r->camera.handles_check_end = cam.h ? dmm_handles_check(cam.h) : 0;
		/* Verify every page, unpin, free the page cache (counted as teardown). */
		cam_teardown(&cam);
		r->camera.final_verified = ctx[0].r.camera.final_verified;
		r->camera.final_errors = ctx[0].r.camera.final_errors;
		r->camera.unpins = ctx[0].r.camera.unpins;
		r->camera.unpin_errors = ctx[0].r.camera.unpin_errors;
		r->camera.pinned_moved = ctx[0].r.camera.pinned_moved;
		r->camera.frame_checks = ctx[0].r.camera.frame_checks;
		r->camera.frame_errors = ctx[0].r.camera.frame_errors;
		r->teardown_frees += r->camera.handles_end;
	}

	/* Give everything back and check again. */
	for (unsigned t = 0; t < threads; t++) {
		struct dmm_workload_result before = ctx[t].r;

		wl_free_all(&ctx[t], &ctx[t].live);
		wl_free_all(&ctx[t], &ctx[t].aux);
		/* Teardown frees are counted apart; their checks count as usual. */
		r->teardown_frees += ctx[t].r.frees_ok - before.frees_ok;
		r->corruptions += ctx[t].r.corruptions - before.corruptions;
		r->overlaps += ctx[t].r.overlaps - before.overlaps;
		for (unsigned i = 0; i < DMM__NR_ERRORS; i++)
			r->free_fail[i] += ctx[t].r.free_fail[i] - before.free_fail[i];
		if (ctx[t].oom && !err)
			err = -DMM_ENOMEM;
	}
	dmm_page_drain_pcp(mem);
	r->final_free_pages = dmm_mem_free_pages(mem);
	r->page_check_final = dmm_page_alloc_check(mem);
	r->range_check_final = dmm_range_check(mem);
	r->cma_check_final = dmm_cma_check(mem);
	r->teardown_ns = wl_now() - t1;
	r->checks_run = atomic_load(&sh.checks_run);
	r->checks_failed = atomic_load(&sh.checks_failed);

	for (unsigned t = 0; t < threads; t++)
		ctx_fini(&ctx[t]);
	free(ctx);
	free((void *)sh.owned);
	return err;
}

static int dma_result_ok(const struct dmm_workload_result *r)
{
	const struct dmm_workload_dma *d = &r->dma;

	for (unsigned i = 0; i < d->nr_devs && i < DMM_WL_DMA_MAX; i++)
		if (d->dev[i].iommu_check_end || d->dev[i].iommu_check_final)
			return 0;
	for (unsigned i = 0; i < DMM__NR_ERRORS; i++)
		if (r->free_fail[i])
			return 0;
	return !d->data_errors && !d->faults && !d->mask_violations && !d->iotlb_stale &&
	       !d->swiotlb_check && !d->slab_check && !d->hw_check &&
	       d->kmalloc_live_end == d->kmalloc_live_start && !r->checks_failed &&
	       !r->page_check_end && !r->range_check_end && !r->cma_check_end &&
	       !r->page_check_final && !r->range_check_final && !r->cma_check_final &&
	       r->final_free_pages + d->slab_pages_end == r->start_free_pages + d->slab_pages_start;
}

int dmm_workload_result_ok(const struct dmm_workload_result *r)
{
	if (!r)
		return 0;
	if (r->workload && strcmp(r->workload, "dma") == 0)
		return dma_result_ok(r);
	for (unsigned i = 0; i < DMM__NR_ERRORS; i++)
		if (r->free_fail[i])
			return 0;
	if (r->camera.sample_errors || r->camera.final_errors || r->camera.frame_errors ||
	    r->camera.frame_outside || r->camera.pinned_moved || r->camera.unpin_errors ||
	    r->camera.handles_check_end)
		return 0;
	return !r->constraint_violations && !r->descriptor_errors && !r->overlaps &&
	       !r->corruptions && !r->checks_failed && !r->page_check_end && !r->range_check_end &&
	       !r->cma_check_end && !r->page_check_final && !r->range_check_final &&
	       !r->cma_check_final && r->final_free_pages == r->start_free_pages;
}

/* ------------------------------------------------------------------------ */
/* dma: what an IOMMU buys a 32-bit device                                   */
/*
 * Two devices per variant, created on the model by dmm_sim_device_create():
 *
 *   nic32   32-bit masks, four 64 KiB coherent rings held for the whole run
 *           (TX and RX descriptors written by the CPU, TX and RX completions
 *           written by the device); packets of 64..1500 bytes, from
 *           dmm_kmalloc() (3 in 4) or a page of the page allocator at a
 *           DMA-aligned offset, wherever they land; TX or RX at random.
 *   stor64  64-bit masks; requests of 8..64 whole pages from the page
 *           allocator as a scatterlist, write (TO_DEVICE) or read
 *           (FROM_DEVICE) at random.
 *
 * A transfer is posted (buffer allocated, CPU pattern written for TO_DEVICE,
 * mapped, for the NIC a descriptor written into its ring) and completed later
 * in FIFO order (the device reads the descriptor through the ring's bus
 * address, reads or writes the payload through the mapping, writes a
 * completion the CPU reads; unmap; for FROM_DEVICE the CPU reads the payload;
 * everything compared with the pattern). Each step posts one transfer on the
 * NIC (9 in 10) or the storage device and completes 0..2 of that device's
 * oldest (one first if its queue is full: 64 packets, 8 requests), so queue
 * depths wander. All random numbers of a transfer are drawn before anything
 * can fail, so both variants run the same sequence with the same seed.
 *
 * Before a buffer goes back to the allocator its lines are written back and
 * dropped from the model's cache (the library reuses freed memory through
 * its raw view, which a real CPU would see coherently).
 */

#define DW_OPS_DEFAULT 20000u
#define DW_RINGS 4
#define DW_RING_BYTES (64u * 1024)
#define DW_DESC 16u
#define DW_NIC_DEPTH 64u
#define DW_STOR_DEPTH 8u
#define DW_SG_MIN 8u
#define DW_SG_MAX 64u
#define DW_NIC_PERMILLE 900u
#define DW_KMALLOC_PERMILLE 750u

enum { DW_NIC = 0, DW_STOR = 1 };

struct dw_xfer {
	uint64_t token;
	dmm_dma_addr_t dma;          /* NIC: the mapping */
	uint32_t len;                /* NIC: bytes; storage: pieces */
	uint32_t slot;               /* NIC: ring slot */
	enum dmm_dma_dir dir;
	int nseg;                    /* storage: DMA segments */
	void *obj;                   /* NIC: the kmalloc object, or NULL (a page) */
	dmm_pfn_t pfn;               /* NIC: the page */
	uint32_t off;                /* NIC: offset in the page */
	dmm_phys_t pa;               /* NIC: the buffer */
	dmm_pfn_t pages[DW_SG_MAX];  /* storage */
	struct dmm_sg sg[DW_SG_MAX];
};

struct dw_dev {
	struct dmm_sim_dev sd;
	bool created;
	bool iommu;
	int kind;
	uint64_t mask;
	unsigned depth;
	struct dw_xfer *q;           /* FIFO of depth entries */
	unsigned qh, qn;
	void *ring_cpu[DW_RINGS];
	dmm_dma_addr_t ring_dma[DW_RINGS];
	unsigned nr_rings;
	uint64_t seq;                /* descriptors written */
	struct dmm_workload_dma_dev *res;
};

struct dw_desc {
	uint64_t a;                  /* TX/RX: the payload's bus address; completion: token */
	uint32_t len;
	uint32_t tag;                /* TX/RX: low token bits; completion: status 1 */
};

struct dw_run {
	struct dmm_hw *hw;
	struct dmm_mem *mem;
	const struct dmm_machine *m;
	const struct dmm_workload_opts *o;
	struct dmm_workload_result *r;
	struct wl_rng rng;
	uint64_t tok_state;
	uint32_t align;              /* page-fragment offsets: dma_min_align */
	int coherent;
	unsigned char *ref, *buf;    /* DW_SG_MAX pages each */
	uint64_t live_pages;         /* pages the workload holds (page allocator) */
	uint64_t steps;
};

static inline uint64_t dw_word(uint64_t token, uint64_t i)
{
	uint64_t z = token + (i + 1) * 0x9e3779b97f4a7c15ULL;

	z = (z ^ (z >> 31)) * 0xbf58476d1ce4e5b9ULL;
	return z ^ (z >> 29);
}

/* The byte stream of @token, bytes [0, len). */
static void dw_pattern(unsigned char *b, size_t len, uint64_t token)
{
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t w = dw_word(token, i / 8);
		memcpy(b + i, &w, 8);
	}
	if (i < len) {
		uint64_t w = dw_word(token, i / 8);
		memcpy(b + i, &w, len - i);
	}
}

static uint64_t dw_slab_pages(struct dmm_mem *mem, uint64_t *live)
{
	uint64_t pages = 0;

	*live = 0;
	for (unsigned s = 0; s < DMM_KMALLOC_NR_SETS; s++)
		for (unsigned c = 0; c < DMM_KMALLOC_NR_CLASSES; c++) {
			struct dmm_slab_class_info ci;

			if (dmm_slab_class_info(mem, s, c, &ci))
				continue;
			pages += ci.slabs << ci.slab_order;
			*live += ci.objects;
		}
	return pages;
}

static bool dw_in_mask(uint64_t mask, dmm_dma_addr_t a, uint64_t len)
{
	return len && a <= mask && len - 1 <= mask - a;
}

/* A device access, with the model's IOTLB figures attributed to @d. */
static int dw_dev_io(struct dw_run *w, struct dw_dev *d, bool write, dmm_dma_addr_t a, void *b,
		     size_t len)
{
	struct dmm_hw_iommu_stats s0, s1;
	int rc;

	if (d->iommu)
		dmm_hw_iommu_get_stats(w->hw, &s0);
	rc = write ? dmm_hw_dev_write(d->sd.hw, a, b, len) : dmm_hw_dev_read(d->sd.hw, a, b, len);
	if (d->iommu) {
		dmm_hw_iommu_get_stats(w->hw, &s1);
		d->res->iotlb_hits += s1.iotlb_hits - s0.iotlb_hits;
		d->res->iotlb_misses += s1.iotlb_misses - s0.iotlb_misses;
		d->res->iotlb_stale += s1.stale_hits - s0.stale_hits;
		d->res->iommu_faults += (s1.faults_unmapped + s1.faults_perm) -
					(s0.faults_unmapped + s0.faults_perm);
	}
	if (rc)
		d->res->faults++;
	return rc;
}

/* Write back and drop the lines of a buffer, then give it back. */
static void dw_flush(struct dw_run *w, dmm_phys_t pa, size_t len)
{
	dmm_hw_cache_maint(w->hw, DMM_CACHE_FLUSH, pa, len);
}

static void dw_page_free(struct dw_run *w, dmm_pfn_t pfn)
{
	int rc;

	dw_flush(w, dmm_pfn_to_phys(pfn), DMM_PAGE_SIZE);
	rc = dmm_page_free(w->mem, pfn, 0);
	if (rc)
		count_fail(w->r->free_fail, rc);
	else
		w->r->frees_ok++;
	w->live_pages--;
}

static int dw_page_alloc(struct dw_run *w, dmm_pfn_t *pfn)
{
	int rc;

	w->r->page_allocs++;
	rc = dmm_page_alloc(w->mem, 0, NULL, 0, pfn);
	if (rc) {
		count_fail(w->r->alloc_fail, rc);
		return rc;
	}
	w->r->page_allocs_ok++;
	if (++w->live_pages > w->r->peak_live_pages)
		w->r->peak_live_pages = w->live_pages;
	return 0;
}

static void dw_nic_free_buf(struct dw_run *w, struct dw_xfer *x)
{
	if (x->obj) {
		int rc;

		dw_flush(w, x->pa, x->len);
		rc = dmm_kfree(w->mem, x->obj);
		if (rc)
			count_fail(w->r->free_fail, rc);
		else
			w->r->frees_ok++;
	} else {
		dw_page_free(w, x->pfn);
	}
}

static void dw_map_failed(struct dw_dev *d, int rc)
{
	d->res->map_failed++;
	count_fail(d->res->map_fail, rc);
}

static void dw_nic_post(struct dw_run *w, struct dw_dev *d)
{
	struct dw_xfer *x = &d->q[(d->qh + d->qn) % d->depth];
	uint64_t u = rng_below(&w->rng, 3);
	uint32_t len = u == 0 ? 64 + (uint32_t)rng_below(&w->rng, 64)
		       : u == 1 ? 1500
				: 64 + (uint32_t)rng_below(&w->rng, 1500 - 64 + 1);
	bool tx = rng_below(&w->rng, 2) == 0;
	bool km = rng_permille(&w->rng, DW_KMALLOC_PERMILLE);
	uint64_t offr = rng_next(&w->rng);
	struct dw_desc desc;
	int rc;

	x->token = splitmix64(&w->tok_state);
	x->len = len;
	x->dir = tx ? DMM_DMA_TO_DEVICE : DMM_DMA_FROM_DEVICE;
	x->obj = NULL;
	d->res->transfers++;
	if (km) {
		rc = dmm_kmalloc(w->mem, len, 0, &x->obj);
		if (!rc && dmm_hw_virt_to_phys(w->hw, x->obj, &x->pa)) {
			dmm_kfree(w->mem, x->obj);
			rc = -DMM_EFAULT;
		}
		if (rc) {
			x->obj = NULL;
			count_fail(w->r->alloc_fail, rc);
			d->res->alloc_failed++;
			return;
		}
	} else {
		uint32_t slots = (uint32_t)((DMM_PAGE_SIZE - len) / w->align + 1);

		if (dw_page_alloc(w, &x->pfn)) {
			d->res->alloc_failed++;
			return;
		}
		x->off = (uint32_t)(offr % slots) * w->align;
		x->pa = dmm_pfn_to_phys(x->pfn) + x->off;
	}
	if (tx) {
		dw_pattern(w->ref, len, x->token);
		if (dmm_hw_cpu_write(w->hw, x->pa, w->ref, len))
			d->res->data_errors++;
	}
	x->dma = x->obj ? dmm_dma_map_single(d->sd.dev, x->obj, len, x->dir)
			: dmm_dma_map_page(d->sd.dev, x->pfn, x->off, len, x->dir);
	rc = dmm_dma_mapping_error(d->sd.dev, x->dma);
	if (rc) {
		dw_map_failed(d, rc);
		dw_nic_free_buf(w, x);
		return;
	}
	d->res->maps++;
	if (!dw_in_mask(d->mask, x->dma, len))
		d->res->mask_violations++;
	x->slot = (uint32_t)(d->seq++ % (DW_RING_BYTES / DW_DESC));
	desc = (struct dw_desc){ x->dma, len, (uint32_t)x->token };
	if (dmm_hw_cpu_write_virt(w->hw, (unsigned char *)d->ring_cpu[tx ? 0 : 1] + x->slot * DW_DESC,
				  &desc, sizeof(desc)))
		d->res->data_errors++;
	d->qn++;
}

static void dw_nic_complete(struct dw_run *w, struct dw_dev *d)
{
	struct dw_xfer *x = &d->q[d->qh];
	bool tx = x->dir == DMM_DMA_TO_DEVICE, bad = false, fault = false;
	size_t off = (size_t)x->slot * DW_DESC;
	struct dw_desc desc, want = { x->dma, x->len, (uint32_t)x->token }, comp;

	d->qh = (d->qh + 1) % d->depth;
	d->qn--;
	/* the device fetches the descriptor through the ring's bus address */
	if (dw_dev_io(w, d, false, d->ring_dma[tx ? 0 : 1] + off, &desc, sizeof(desc)))
		fault = true;
	else if (memcmp(&desc, &want, sizeof(desc)) != 0)
		bad = true;
	dw_pattern(w->ref, x->len, x->token);
	if (tx) {
		if (dw_dev_io(w, d, false, x->dma, w->buf, x->len)) {
			fault = true;
		} else {
			d->res->bytes_moved += x->len;
			bad |= memcmp(w->buf, w->ref, x->len) != 0;
		}
	} else {
		if (dw_dev_io(w, d, true, x->dma, w->ref, x->len))
			fault = true;
		else
			d->res->bytes_moved += x->len;
	}
	/* the device posts a completion; the CPU reads it */
	comp = (struct dw_desc){ x->token, x->len, 1 };
	if (dw_dev_io(w, d, true, d->ring_dma[tx ? 2 : 3] + off, &comp, sizeof(comp)))
		fault = true;
	else if (dmm_hw_cpu_read_virt(w->hw, (unsigned char *)d->ring_cpu[tx ? 2 : 3] + off, &desc,
				      sizeof(desc)) ||
		 memcmp(&desc, &comp, sizeof(desc)) != 0)
		bad = true;
	if (x->obj)
		dmm_dma_unmap_single(d->sd.dev, x->dma, x->len, x->dir);
	else
		dmm_dma_unmap_page(d->sd.dev, x->dma, x->len, x->dir);
	if (!tx && !fault &&
	    (dmm_hw_cpu_read(w->hw, x->pa, w->buf, x->len) || memcmp(w->buf, w->ref, x->len) != 0))
		bad = true;
	if (bad)
		d->res->data_errors++;
	d->res->completed++;
	dw_nic_free_buf(w, x);
}

static void dw_stor_free(struct dw_run *w, struct dw_xfer *x, unsigned n)
{
	for (unsigned k = 0; k < n; k++)
		dw_page_free(w, x->pages[k]);
}

static void dw_stor_post(struct dw_run *w, struct dw_dev *d)
{
	struct dw_xfer *x = &d->q[(d->qh + d->qn) % d->depth];
	unsigned n = DW_SG_MIN + (unsigned)rng_below(&w->rng, DW_SG_MAX - DW_SG_MIN + 1);
	bool tx = rng_below(&w->rng, 2) == 0;
	int nseg;

	x->token = splitmix64(&w->tok_state);
	x->len = n;
	x->dir = tx ? DMM_DMA_TO_DEVICE : DMM_DMA_FROM_DEVICE;
	d->res->transfers++;
	for (unsigned k = 0; k < n; k++)
		if (dw_page_alloc(w, &x->pages[k])) {
			dw_stor_free(w, x, k);
			d->res->alloc_failed++;
			return;
		}
	dmm_sg_init(x->sg, n);
	for (unsigned k = 0; k < n; k++)
		dmm_sg_set_page(&x->sg[k], x->pages[k], 0, DMM_PAGE_SIZE);
	if (tx) {
		dw_pattern(w->ref, (size_t)n * DMM_PAGE_SIZE, x->token);
		for (unsigned k = 0; k < n; k++)
			if (dmm_hw_cpu_write(w->hw, dmm_pfn_to_phys(x->pages[k]), w->ref + (size_t)k * DMM_PAGE_SIZE,
					     DMM_PAGE_SIZE))
				d->res->data_errors++;
	}
	nseg = dmm_dma_map_sg(d->sd.dev, x->sg, n, x->dir);
	if (nseg <= 0) {
		dw_map_failed(d, nseg ? nseg : -DMM_EINVAL);
		dw_stor_free(w, x, n);
		return;
	}
	x->nseg = nseg;
	d->res->maps++;
	d->res->sg_maps++;
	d->res->sg_entries += n;
	d->res->sg_segments += (uint64_t)nseg;
	for (int s = 0; s < nseg; s++)
		if (!dw_in_mask(d->mask, x->sg[s].dma_address, x->sg[s].dma_length))
			d->res->mask_violations++;
	d->qn++;
}

static void dw_stor_complete(struct dw_run *w, struct dw_dev *d)
{
	struct dw_xfer *x = &d->q[d->qh];
	bool tx = x->dir == DMM_DMA_TO_DEVICE, bad = false, fault = false;
	size_t total = (size_t)x->len * DMM_PAGE_SIZE, off = 0;

	d->qh = (d->qh + 1) % d->depth;
	d->qn--;
	dw_pattern(w->ref, total, x->token);
	for (int s = 0; s < x->nseg && !fault; s++) {
		size_t l = x->sg[s].dma_length;

		if (off + l > total) {
			bad = true;
			break;
		}
		if (dw_dev_io(w, d, !tx, x->sg[s].dma_address, tx ? w->buf + off : w->ref + off, l))
			fault = true;
		else
			d->res->bytes_moved += l;
		off += l;
	}
	if (!fault && off != total)
		bad = true;
	dmm_dma_unmap_sg(d->sd.dev, x->sg, x->len, x->dir);
	if (!fault && !bad) {
		if (!tx)
			for (unsigned k = 0; k < x->len && !bad; k++)
				if (dmm_hw_cpu_read(w->hw, dmm_pfn_to_phys(x->pages[k]),
						    w->buf + (size_t)k * DMM_PAGE_SIZE, DMM_PAGE_SIZE))
					bad = true;
		if (memcmp(w->buf, w->ref, total) != 0)
			bad = true;
	}
	if (bad)
		d->res->data_errors++;
	d->res->completed++;
	dw_stor_free(w, x, x->len);
}

static void dw_post(struct dw_run *w, struct dw_dev *d)
{
	if (d->kind == DW_NIC)
		dw_nic_post(w, d);
	else
		dw_stor_post(w, d);
}

static void dw_complete(struct dw_run *w, struct dw_dev *d)
{
	if (d->kind == DW_NIC)
		dw_nic_complete(w, d);
	else
		dw_stor_complete(w, d);
}

static void dw_periodic_check(struct dw_run *w)
{
	uint64_t every = w->o->check_every;

	if (!every || ++w->steps % every)
		return;
	w->r->checks_run++;
	if (dmm_page_alloc_check(w->mem) || dmm_range_check(w->mem))
		w->r->checks_failed++;
}

static int dw_dev_create(struct dw_run *w, struct dw_dev *d, int kind, bool iommu,
			 const struct dmm_iommu_opts *io, struct dmm_workload_dma_dev *res)
{
	struct dmm_device_desc desc;
	int rc;

	memset(d, 0, sizeof(*d));
	memset(res, 0, sizeof(*res));
	d->kind = kind;
	d->iommu = iommu;
	d->res = res;
	d->mask = DMM_DMA_BIT_MASK(kind == DW_NIC ? 32 : 64);
	d->depth = kind == DW_NIC ? DW_NIC_DEPTH : DW_STOR_DEPTH;
	snprintf(res->name, sizeof(res->name), "%s", kind == DW_NIC ? "nic32" : "stor64");
	res->mask_bits = kind == DW_NIC ? 32 : 64;
	res->iommu = iommu;
	res->coherent = w->coherent;
	res->depth = d->depth;
	res->iommu_check_end = res->iommu_check_final = 0;
	d->q = calloc(d->depth, sizeof(*d->q));
	if (!d->q)
		return -DMM_ENOMEM;
	memset(&desc, 0, sizeof(desc));
	desc.name = res->name;
	desc.dma_mask = d->mask;
	desc.coherent = w->coherent;
	desc.cma_area = DMM_DEVICE_CMA_DEFAULT;
	desc.iommu = iommu ? DMM_IOMMU_DMA : DMM_IOMMU_NONE;
	desc.iommu_opts = iommu ? io : NULL;
	rc = dmm_sim_device_create(w->mem, w->hw, &desc, NULL, &d->sd);
	if (rc) {
		free(d->q);
		d->q = NULL;
		return rc;
	}
	d->created = true;
	if (kind != DW_NIC)
		return 0;
	/* the rings: zeroed, within the coherent mask, held for the whole run */
	for (unsigned i = 0; i < DW_RINGS; i++) {
		rc = dmm_dma_alloc_coherent(d->sd.dev, DW_RING_BYTES, 0, &d->ring_cpu[i], &d->ring_dma[i]);
		if (rc)
			return rc;
		d->nr_rings++;
		res->coherent_bytes += DW_RING_BYTES;
		if (!dw_in_mask(d->mask, d->ring_dma[i], DW_RING_BYTES))
			res->mask_violations++;
		if (dw_dev_io(w, d, false, d->ring_dma[i], w->buf, DW_RING_BYTES)) {
			continue;
		}
		for (size_t k = 0; k < DW_RING_BYTES; k++)
			if (w->buf[k]) {
				res->data_errors++;
				break;
			}
	}
	return 0;
}

/* Release what the device holds (rings), final statistics, destroy. */
static int dw_dev_destroy(struct dw_run *w, struct dw_dev *d)
{
	struct dmm_workload_dma_dev *res = d->res;
	struct dmm_dma_stats st;
	int rc = 0;

	if (!d->created) {
		free(d->q);
		return 0;
	}
	while (d->qn)
		dw_complete(w, d);
	for (unsigned i = 0; i < d->nr_rings; i++) {
		int e = dmm_dma_free_coherent(d->sd.dev, DW_RING_BYTES, d->ring_cpu[i], d->ring_dma[i]);

		if (e && !rc)
			rc = e;
	}
	d->nr_rings = 0;
	dmm_device_get_stats(d->sd.dev, &st);
	res->bounced_maps = st.bounced_maps;
	res->low_peak_bytes = st.low_peak_bytes;
	if (d->iommu) {
		struct dmm_iommu_stats is;

		dmm_device_iommu_flush(d->sd.dev);
		if (!dmm_device_iommu_stats(d->sd.dev, &is)) {
			res->iova_allocs = is.iova.allocs;
			res->iova_cache_hits = is.iova.cache_hits;
			res->invalidations = is.invalidations;
			res->fq_flushes = is.fq_flushes;
			res->fq_timeouts = is.fq_timeouts;
			if (is.mapped_pages)
				res->iommu_check_final = -DMM_EBUSY;
		}
		if (!res->iommu_check_final)
			res->iommu_check_final = dmm_device_iommu_check(d->sd.dev);
	}
	{
		int e = dmm_sim_device_destroy(&d->sd);

		if (e && !rc)
			rc = e;
	}
	d->created = false;
	free(d->q);
	d->q = NULL;
	return rc;
}

/* The state when the operations ended: low memory, IOVA space, checks. */
static void dw_snapshot(struct dw_dev *d)
{
	struct dmm_workload_dma_dev *res = d->res;
	struct dmm_dma_stats st;

	dmm_device_get_stats(d->sd.dev, &st);
	res->low_now_bytes = st.low_pages * DMM_PAGE_SIZE + st.low_bounce_bytes;
	res->coherent_low_pages = st.low_pages;
	if (d->iommu) {
		struct dmm_iommu_stats is;

		if (!dmm_device_iommu_stats(d->sd.dev, &is)) {
			res->iova_ranges = is.iova.ranges;
			res->iova_tree_depth = is.iova.tree_depth;
			res->iova_largest_free = is.iova.largest_free;
			res->pt_tables_end = is.pt.tables;
		}
		res->iommu_check_end = dmm_device_iommu_check(d->sd.dev);
	}
}

static int dw_variant(struct dw_run *w, unsigned v, bool iommu, uint64_t ops)
{
	struct dmm_workload_dma *res = &w->r->dma;
	struct dmm_iommu_opts io;
	struct dw_dev dev[DMM_WL_DMA_DEVICES];
	unsigned nv = res->nr_variants;
	uint64_t t0;
	int rc = 0;

	memset(dev, 0, sizeof(dev));
	dmm_iommu_opts_default(&io);
	io.flush = (enum dmm_iommu_flush)w->o->iommu_flush;
	io.iova.align = (enum dmm_iova_align)w->o->iova_align;
	rng_seed(&w->rng, w->o->seed, 0);
	w->tok_state = w->o->seed ^ 0x6a09e667f3bcc909ULL;
	res->variant_iommu[v] = iommu;
	for (int k = 0; k < DMM_WL_DMA_DEVICES && !rc; k++)
		rc = dw_dev_create(w, &dev[k], k, iommu, &io, &res->dev[(unsigned)k * nv + v]);
	if (!rc) {
		t0 = wl_now();
		for (uint64_t i = 0; i < ops; i++) {
			struct dw_dev *d = &dev[rng_permille(&w->rng, DW_NIC_PERMILLE) ? DW_NIC : DW_STOR];
			uint64_t k;

			if (d->qn == d->depth)
				dw_complete(w, d);
			dw_post(w, d);
			for (k = rng_below(&w->rng, 3); k && d->qn; k--)
				dw_complete(w, d);
			dw_periodic_check(w);
		}
		res->variant_ns[v] = wl_now() - t0;
		/* the state the operations left, the checks with it in place */
		for (int k = 0; k < DMM_WL_DMA_DEVICES; k++)
			dw_snapshot(&dev[k]);
		{
			int e;

			if ((e = dmm_page_alloc_check(w->mem)) && !w->r->page_check_end)
				w->r->page_check_end = e;
			if ((e = dmm_range_check(w->mem)) && !w->r->range_check_end)
				w->r->range_check_end = e;
			if ((e = dmm_cma_check(w->mem)) && !w->r->cma_check_end)
				w->r->cma_check_end = e;
			if (res->swiotlb && (e = dmm_swiotlb_check(w->mem)) && !res->swiotlb_check)
				res->swiotlb_check = e;
		}
		w->r->end_live_pages = w->live_pages;
		for (unsigned z = 0; z < w->r->nr_zones && z < DMM_NR_ZONE_TYPES; z++)
			dmm_zone_get_info(w->mem, z, &w->r->zone[z]);
		w->r->nr_cma = dmm_cma_count(w->mem);
		for (unsigned a = 0; a < w->r->nr_cma && a < DMM_MAX_CMA_AREAS; a++) {
			dmm_cma_get_info(w->mem, (int)a, &w->r->cma[a]);
			w->r->cma_zone[a] = -1;
			for (unsigned z = 0; z < w->r->nr_zones && z < DMM_NR_ZONE_TYPES; z++)
				if (w->r->cma[a].base_pfn >= w->r->zone[z].start_pfn &&
				    w->r->cma[a].base_pfn < w->r->zone[z].end_pfn)
					w->r->cma_zone[a] = (int)z;
		}
	}
	/* drain the queues (counted as teardown), release the rings, destroy */
	{
		uint64_t frees = w->r->frees_ok;

		for (int k = DMM_WL_DMA_DEVICES - 1; k >= 0; k--) {
			int e = dw_dev_destroy(w, &dev[k]);

			if (e && !rc)
				rc = e;
		}
		w->r->teardown_frees += w->r->frees_ok - frees;
		w->r->frees_ok = frees;
	}
	return rc;
}

int dmm_workload_needs_hw(const char *name)
{
	return name && strcmp(name, "dma") == 0;
}

int dmm_workload_run_dma(struct dmm_hw *hw, struct dmm_mem *mem, const struct dmm_workload_opts *o,
			 struct dmm_workload_result *r)
{
	struct dmm_workload_dma *res;
	struct dw_run w;
	uint64_t ops, t0, t1;
	bool variants[2];
	unsigned nv = 0;
	int err = 0;

	if (!hw || !mem || !o || !r)
		return -DMM_EINVAL;
	if (o->threads > 1 || o->iommu < DMM_WL_IOMMU_BOTH || o->iommu > DMM_WL_IOMMU_ON ||
	    (o->iommu_flush != DMM_IOMMU_STRICT && o->iommu_flush != DMM_IOMMU_DEFERRED) ||
	    (o->iova_align != DMM_IOVA_ALIGN_POW2 && o->iova_align != DMM_IOVA_ALIGN_PAGE))
		return -DMM_EINVAL;
	memset(r, 0, sizeof(*r));
	memset(&w, 0, sizeof(w));
	res = &r->dma;
	r->workload = wl_names[WL_DMA];
	r->seed = o->seed;
	r->threads = 1;
	w.hw = hw;
	w.mem = mem;
	w.m = dmm_mem_machine(mem);
	w.o = o;
	w.r = r;
	w.coherent = !(w.m->dma_min_align > w.m->cache_line);
	w.align = w.m->dma_min_align > 8 ? w.m->dma_min_align : 8;
	ops = o->ops ? o->ops : DW_OPS_DEFAULT;
	res->iommu = o->iommu;
	res->flush = o->iommu_flush;
	res->iova_align = o->iova_align;
	res->coherent = w.coherent;
	res->ops = ops;
	variants[0] = o->iommu != DMM_WL_IOMMU_ON;  /* direct */
	variants[1] = o->iommu != DMM_WL_IOMMU_OFF; /* IOMMU */
	res->nr_variants = (unsigned)variants[0] + (unsigned)variants[1];
	res->nr_devs = res->nr_variants * DMM_WL_DMA_DEVICES;
	r->nr_zones = dmm_mem_nr_zones(mem);
	for (unsigned z = 0; z < r->nr_zones && z < DMM_NR_ZONE_TYPES; z++) {
		struct dmm_zone_info zi;

		dmm_zone_get_info(mem, z, &zi);
		r->managed_pages += zi.managed;
	}
	w.ref = malloc((size_t)DW_SG_MAX * DMM_PAGE_SIZE);
	w.buf = malloc((size_t)DW_SG_MAX * DMM_PAGE_SIZE);
	if (!w.ref || !w.buf) {
		free(w.ref);
		free(w.buf);
		return -DMM_ENOMEM;
	}

	/* bounce buffers for the direct variant, the IOMMU for the other */
	if (variants[0]) {
		err = dmm_swiotlb_init(mem, NULL);
		if (err == -DMM_EEXIST)
			err = 0;
		res->swiotlb = !err;
	}
	if (!err && variants[1] && !dmm_hw_iommu_present(hw)) {
		err = dmm_hw_iommu_enable(hw, NULL);
		if (err == -DMM_EEXIST)
			err = 0;
	}
	if (err) {
		free(w.ref);
		free(w.buf);
		return err;
	}
	dmm_page_drain_pcp(mem);
	r->start_free_pages = dmm_mem_free_pages(mem);
	res->slab_pages_start = dw_slab_pages(mem, &res->kmalloc_live_start);

	t0 = wl_now();
	for (unsigned v = 0; v < 2 && !err; v++)
		if (variants[v])
			err = dw_variant(&w, nv++, v == 1, ops);
	t1 = wl_now();
	r->elapsed_ns = 0;
	for (unsigned v = 0; v < nv; v++)
		r->elapsed_ns += res->variant_ns[v];

	/* totals, then everything back and the final checks */
	for (unsigned i = 0; i < res->nr_devs; i++) {
		const struct dmm_workload_dma_dev *dv = &res->dev[i];

		res->data_errors += dv->data_errors;
		res->faults += dv->faults;
		res->mask_violations += dv->mask_violations;
		res->iotlb_stale += dv->iotlb_stale;
		r->ops += dv->transfers;
	}
	if (res->swiotlb) {
		struct dmm_swiotlb_stats ss;
		struct dmm_swiotlb_opts so;
		int e;

		dmm_swiotlb_trim(mem);
		dmm_swiotlb_get_stats(mem, &ss);
		dmm_swiotlb_opts_default(mem, &so);
		res->swiotlb_pools = ss.pools;
		res->swiotlb_slot_size = so.slot_size;
		res->swiotlb_bytes = ss.total_slots * so.slot_size;
		res->swiotlb_high_water_slots = ss.high_water_slots;
		res->swiotlb_bounced_to_device = ss.bounced_to_device;
		res->swiotlb_bounced_from_device = ss.bounced_from_device;
		res->swiotlb_fail_full = ss.fail_full;
		if ((e = dmm_swiotlb_check(mem)) && !res->swiotlb_check)
			res->swiotlb_check = e;
	}
	dmm_page_drain_pcp(mem);
	r->final_free_pages = dmm_mem_free_pages(mem);
	res->slab_pages_end = dw_slab_pages(mem, &res->kmalloc_live_end);
	r->page_check_final = dmm_page_alloc_check(mem);
	r->range_check_final = dmm_range_check(mem);
	r->cma_check_final = dmm_cma_check(mem);
	res->slab_check = dmm_slab_check(mem);
	res->hw_check = dmm_hw_check(hw);
	{
		struct dmm_hw_stats hs;

		dmm_hw_get_stats(hw, &hs);
		res->hw_dirty_discarded = hs.dirty_discarded;
	}
	r->teardown_ns = wl_now() - t1 + (t1 - t0 - r->elapsed_ns);
	free(w.ref);
	free(w.buf);
	return err;
}

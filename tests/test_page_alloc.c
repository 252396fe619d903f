/* SPDX-License-Identifier: MIT */
/*
 * Zoned buddy page allocator: orders, constraints, contents, zeroing, DMA
 * shorthands, migratetype grouping, watermarks and the atomic reserve, the
 * low-watermark hook, per-CPU caches, and bad input that must change nothing.
 */
#include <pthread.h>
#include <sched.h>

#include "tu.h"

/*
 * Both checks run after every allocation and free, except inside bulk fills
 * of thousands of pages, which check every CHECK_PERIOD_BULK steps (and at
 * the end): the full walk costs O(pages).
 */
#define CHECK_PERIOD_BULK 64
static unsigned check_period = 1;
static unsigned check_count;

static void step_checks(struct dmm_mem *mem)
{
	if (++check_count % check_period == 0)
		assert_checks(mem);
}

struct blk {
	dmm_pfn_t pfn;
	unsigned order;
	uint64_t salt;
};

struct snap {
	uint64_t free[DMM_NR_ZONE_TYPES], pcp[DMM_NR_ZONE_TYPES];
	uint64_t bad_free, alloc_ok, pcp_alloc, pcp_free, pcp_refill, pcp_drain;
	uint64_t fail[DMM_NR_FAIL_REASONS];
	uint64_t total;
};

static void take_snap(struct dmm_mem *mem, struct snap *s)
{
	memset(s, 0, sizeof(*s));
	for (unsigned z = 0; z < dmm_mem_nr_zones(mem); z++) {
		struct dmm_zone_info zi;
		assert_ok(dmm_zone_get_info(mem, z, &zi));
		s->free[z] = zi.free;
		s->pcp[z] = zi.pcp;
		s->total += zi.free + zi.pcp;
		s->bad_free += zi.stats.bad_free;
		s->alloc_ok += zi.stats.alloc_ok;
		s->pcp_alloc += zi.stats.pcp_alloc;
		s->pcp_free += zi.stats.pcp_free;
		s->pcp_refill += zi.stats.pcp_refill;
		s->pcp_drain += zi.stats.pcp_drain;
		for (unsigned r = 0; r < DMM_NR_FAIL_REASONS; r++)
			s->fail[r] += zi.stats.fail[r];
	}
}

/* Nothing changed: free and per-CPU counts of every zone, and the checks. */
static void assert_unchanged(struct dmm_mem *mem, const struct snap *before)
{
	struct snap now;
	take_snap(mem, &now);
	for (unsigned z = 0; z < DMM_NR_ZONE_TYPES; z++) {
		assert_int_equal(now.free[z], before->free[z]);
		assert_int_equal(now.pcp[z], before->pcp[z]);
	}
	assert_checks(mem);
}

/*
 * Allocate, then check everything about the result: natural alignment, the
 * constraint (explicit, or the one the DMA shorthands stand for), RAM, not
 * already ours, a head page in the ALLOC state with the order, and that the
 * free pages dropped by exactly the block's size.
 */
static int alloc_checked(struct tu_env *e, unsigned order, const struct dmm_constraint *c,
			 unsigned flags, struct blk *b)
{
	struct snap s0, s1;
	dmm_pfn_t pfn = 0;
	uint64_t n = 1ull << order;
	int rc;

	take_snap(e->mem, &s0);
	rc = dmm_page_alloc(e->mem, order, c, flags, &pfn);
	step_checks(e->mem);
	take_snap(e->mem, &s1);
	if (rc) {
		assert_true(rc == -DMM_ENOMEM || rc == -DMM_EWMARK || rc == -DMM_ERANGE);
		assert_int_equal(s1.total, s0.total);
		return rc;
	}
	assert_int_equal(pfn & (n - 1), 0);
	if (c)
		assert_true(dmm_constraint_ok(c, dmm_pfn_to_phys(pfn), n << DMM_PAGE_SHIFT));
	if (flags & DMM_GFP_DMA)
		assert_true(dmm_pfn_to_phys(pfn + n) <= e->m.dma_limit);
	if (flags & DMM_GFP_DMA32)
		assert_true(dmm_pfn_to_phys(pfn + n) <= e->m.dma32_limit);
	tu_own(e, pfn, n);
	struct dmm_page *pg = dmm_pfn_to_page(e->mem, pfn);
	assert_non_null(pg);
	assert_int_equal(pg->state, DMM_PAGE_ALLOC);
	assert_int_equal(pg->order, order);
	for (uint64_t i = 1; i < n; i++)
		assert_int_equal(dmm_pfn_to_page(e->mem, pfn + i)->state, DMM_PAGE_TAIL);
	/* every page of the block is in the head's zone */
	assert_int_equal(dmm_pfn_to_page(e->mem, pfn + n - 1)->zone, pg->zone);
	assert_int_equal(s1.total, s0.total - n);
	b->pfn = pfn;
	b->order = order;
	b->salt = pfn * 31 + order;
	return 0;
}

static void free_checked(struct tu_env *e, const struct blk *b)
{
	struct snap s0, s1;
	take_snap(e->mem, &s0);
	assert_ok(dmm_page_free(e->mem, b->pfn, b->order));
	step_checks(e->mem);
	take_snap(e->mem, &s1);
	assert_int_equal(s1.total, s0.total + (1ull << b->order));
	tu_disown(e, b->pfn, 1ull << b->order);
}

/* Free everything, drain, and require every page back. */
static void free_all(struct tu_env *e, struct blk *blks, size_t n, int verify)
{
	if (n > 256)
		check_period = CHECK_PERIOD_BULK;
	for (size_t i = 0; i < n; i++) {
		if (verify)
			tu_verify(e->mem, blks[i].pfn, 1ull << blks[i].order, blks[i].salt, verify > 1);
		free_checked(e, &blks[i]);
	}
	check_period = 1;
	assert_checks(e->mem);
	dmm_page_drain_pcp(e->mem);
	assert_checks(e->mem);
	for (unsigned z = 0; z < dmm_mem_nr_zones(e->mem); z++) {
		struct dmm_zone_info zi;
		assert_ok(dmm_zone_get_info(e->mem, z, &zi));
		assert_int_equal(zi.pcp, 0);
		assert_int_equal(zi.free, zi.managed);
	}
	assert_int_equal(tu_zone_free_all(e->mem), e->free0);
}

/* Is there a free buddy block (of order >= @order) with an aligned
 * 2^@order sub-block inside @c? The oracle for ENOMEM on the buddy path. */
static int free_block_exists(struct tu_env *e, unsigned order, const struct dmm_constraint *c)
{
	uint64_t n = 1ull << order;
	for (dmm_pfn_t p = e->info.min_pfn; p < e->info.max_pfn; p++) {
		struct dmm_page *pg = dmm_pfn_to_page(e->mem, p);
		if (!pg || pg->state != DMM_PAGE_FREE || pg->order < order)
			continue;
		for (dmm_pfn_t s = p; s < p + (1ull << pg->order); s += n)
			if (!c || dmm_constraint_ok(c, dmm_pfn_to_phys(s), n << DMM_PAGE_SHIFT))
				return 1;
	}
	return 0;
}

static void test_orders_and_constraints(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	static struct blk blks[512];
	size_t nb = 0;
	(void)state;
	tu_machine_holes(&m);
	e = tu_env_create(&m, 1);

	const struct dmm_constraint below24 = dmm_constraint_below(24 * MiB); /* mid-DMA32 */
	const struct dmm_constraint win = { 20 * MiB, 36 * MiB, 0, 0, 0, 0 };
	const struct dmm_constraint high = { 4 * GiB + 4 * MiB, DMM_PHYS_MAX, 0, 0, 0, 0 };
	const struct dmm_constraint below5 = dmm_constraint_below(5 * MiB); /* mid-DMA */
	const struct dmm_constraint *cs[] = { NULL, &below24, &win, &high, &below5 };
	const unsigned fl[] = { 0, DMM_GFP_MOVABLE, DMM_GFP_RECLAIMABLE, DMM_GFP_DMA, DMM_GFP_DMA32,
				DMM_GFP_NOCACHE | DMM_GFP_MOVABLE };

	/* Orders 0..4 stay allocated to the end (their contents are verified
	 * after everything else); higher orders are freed after each order so
	 * that every request here is satisfiable. */
	for (unsigned order = 0; order <= DMM_MAX_ORDER; order++) {
		size_t first = nb;
		for (size_t ci = 0; ci < sizeof(cs) / sizeof(cs[0]); ci++) {
			assert_true(nb < 512);
			int rc = alloc_checked(e, order, cs[ci], 0, &blks[nb]);
			/* below 5 MiB, 1 MiB-aligned blocks may be broken up by the
			 * small blocks already taken, 2 MiB ones never exist */
			if (cs[ci] == &below5 && order >= 8) {
				if (order >= 9)
					assert_rc(rc, -DMM_ENOMEM);
				if (rc)
					continue;
			}
			if (rc == -DMM_ENOMEM && !free_block_exists(e, order, cs[ci]))
				continue; /* legitimately none left */
			if (rc) {
				print_error("order %u, constraint %zu: %s\n", order, ci, dmm_errname(rc));
				fail();
			}
			tu_fill(e->mem, blks[nb].pfn, 1ull << order, blks[nb].salt, 1);
			nb++;
		}
		for (size_t fi = 0; fi < sizeof(fl) / sizeof(fl[0]); fi++) {
			assert_true(nb < 512);
			int rc = alloc_checked(e, order, NULL, fl[fi], &blks[nb]);
			if (rc == -DMM_ENOMEM) {
				/* only if no block of the order is left below the limit */
				struct dmm_constraint lim = dmm_constraint_below(
					fl[fi] & DMM_GFP_DMA ? m.dma_limit : fl[fi] & DMM_GFP_DMA32 ? m.dma32_limit
												: DMM_PHYS_MAX);
				if (!free_block_exists(e, order, &lim))
					continue;
			}
			if (rc) {
				print_error("order %u, flags %#x: %s\n", order, fl[fi], dmm_errname(rc));
				fail();
			}
			tu_fill(e->mem, blks[nb].pfn, 1ull << order, blks[nb].salt, 1);
			nb++;
		}
		if (order > 4) {
			for (size_t i = first; i < nb; i++) {
				tu_verify(e->mem, blks[i].pfn, 1ull << blks[i].order, blks[i].salt, 1);
				free_checked(e, &blks[i]);
			}
			nb = first;
		}
	}
	/* alignment stricter than natural, and a boundary */
	{
		struct dmm_constraint a = { 0, DMM_PHYS_MAX, 256 * KiB, 0, 0, 0 };
		struct dmm_constraint b = { 0, DMM_PHYS_MAX, 0, 64 * KiB, 0, 0 };
		struct dmm_constraint ab = { 17 * MiB, 30 * MiB, 128 * KiB, 128 * KiB, 0, 0 };
		for (unsigned order = 0; order <= 4; order++) {
			assert_ok(alloc_checked(e, order, &a, 0, &blks[nb]));
			assert_int_equal(dmm_pfn_to_phys(blks[nb].pfn) & (256 * KiB - 1), 0);
			tu_fill(e->mem, blks[nb].pfn, 1ull << order, blks[nb].salt, 1);
			nb++;
			assert_ok(alloc_checked(e, order, &b, 0, &blks[nb]));
			tu_fill(e->mem, blks[nb].pfn, 1ull << order, blks[nb].salt, 1);
			nb++;
			assert_ok(alloc_checked(e, order, &ab, DMM_GFP_MOVABLE, &blks[nb]));
			tu_fill(e->mem, blks[nb].pfn, 1ull << order, blks[nb].salt, 1);
			nb++;
		}
	}
	/* all contents survived every later allocation */
	for (size_t i = 0; i < nb; i++)
		tu_verify(e->mem, blks[i].pfn, 1ull << blks[i].order, blks[i].salt, 1);
	free_all(e, blks, nb, 0);
	tu_env_destroy(e);
}

/* Fill all of memory with order-@order blocks under @c until failure. */
static size_t fill_until_fail(struct tu_env *e, unsigned order, const struct dmm_constraint *c,
			      unsigned flags, struct blk *blks, size_t max, int *last_rc)
{
	size_t n = 0;
	int rc = 0;
	check_period = CHECK_PERIOD_BULK;
	while (n < max) {
		rc = alloc_checked(e, order, c, flags, &blks[n]);
		if (rc)
			break;
		n++;
	}
	check_period = 1;
	assert_checks(e->mem);
	assert_true(n < max);
	*last_rc = rc;
	return n;
}

static void test_zero_and_contents(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	static struct blk blks[20000];
	size_t nb;
	int rc;
	(void)state;
	tu_machine_holes(&m);
	e = tu_env_create(&m, 1);

	/* dirty every free page */
	nb = fill_until_fail(e, 0, NULL, DMM_GFP_NOWMARK, blks, 20000, &rc);
	assert_rc(rc, -DMM_ENOMEM);
	assert_int_equal(nb, e->free0);
	for (size_t i = 0; i < nb; i++)
		memset(dmm_pfn_to_virt(e->mem, blks[i].pfn), 0xff, DMM_PAGE_SIZE);
	free_all(e, blks, nb, 0);
	nb = 0;

	/* zeroed blocks of every order, from the per-CPU caches and the lists */
	for (int round = 0; round < 3; round++) {
		for (unsigned order = 0; order <= DMM_MAX_ORDER; order++) {
			unsigned f = DMM_GFP_ZERO | (round == 1 ? DMM_GFP_NOCACHE : 0) |
				     (round == 2 ? DMM_GFP_MOVABLE : 0);
			assert_ok(alloc_checked(e, order, NULL, f, &blks[nb]));
			assert_true(tu_is_zero(e->mem, blks[nb].pfn, 1ull << order));
			tu_fill(e->mem, blks[nb].pfn, 1ull << order, blks[nb].salt, 1);
			nb++;
		}
		/* give them back dirty: the next round must zero them again */
		free_all(e, blks, nb, 2);
		nb = 0;
	}
	/* zeroed allocations straight from the per-CPU cache that just got a dirty page */
	for (int i = 0; i < 64; i++) {
		assert_ok(alloc_checked(e, 0, NULL, 0, &blks[0]));
		memset(dmm_pfn_to_virt(e->mem, blks[0].pfn), 0x5a, DMM_PAGE_SIZE);
		free_checked(e, &blks[0]);
		assert_ok(alloc_checked(e, 0, NULL, DMM_GFP_ZERO, &blks[0]));
		assert_true(tu_is_zero(e->mem, blks[0].pfn, 1));
		free_checked(e, &blks[0]);
	}
	tu_env_destroy(e);
}

static void test_dma_shorthands(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	static struct blk blks[20000];
	size_t nb, n2;
	int rc;
	struct dmm_zone_info dma, dma32;
	(void)state;
	tu_machine_holes(&m);
	e = tu_env_create(&m, 1);
	assert_ok(dmm_zone_get_info(e->mem, 0, &dma));
	assert_int_equal(dma.type, DMM_ZONE_DMA);

	/* DMA: every block below dma_limit (checked in alloc_checked); the
	 * whole DMA zone can be taken (down to its watermark) */
	nb = fill_until_fail(e, 2, NULL, DMM_GFP_DMA, blks, 20000, &rc);
	assert_true(rc == -DMM_EWMARK || rc == -DMM_ENOMEM);
	assert_true(nb * 4 + dma.wmark_high + 64 >= dma.managed);
	assert_int_equal(dmm_pfn_to_page(e->mem, blks[0].pfn)->zone, 0);
	/* the DMA zone's counters saw them */
	{
		struct dmm_zone_info zi;
		assert_ok(dmm_zone_get_info(e->mem, 0, &zi));
		assert_true(zi.stats.alloc_ok + zi.stats.pcp_alloc >= nb);
		assert_true(zi.free + zi.pcp < dma.wmark_high + 64);
		assert_true(zi.stats.fail[DMM_FAIL_NOMEM] + zi.stats.fail[DMM_FAIL_WMARK] >= 1);
	}
	/* DMA32 shorthand: below 4 GiB, and DMA32 has room */
	assert_ok(dmm_zone_get_info(e->mem, 1, &dma32));
	n2 = fill_until_fail(e, 0, NULL, DMM_GFP_DMA32 | DMM_GFP_MOVABLE, blks + nb, 20000 - nb, &rc);
	assert_true(rc == -DMM_EWMARK || rc == -DMM_ENOMEM);
	assert_true(n2 + dma32.wmark_high + 64 >= dma32.managed);
	nb += n2;
	/* Normal is untouched by all of that */
	{
		struct dmm_zone_info zi;
		assert_ok(dmm_zone_get_info(e->mem, 2, &zi));
		assert_int_equal(zi.free + zi.pcp, zi.managed);
	}
	free_all(e, blks, nb, 0);
	tu_env_destroy(e);
}

static void test_explicit_limit(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	static struct blk blks[20000];
	size_t nb = 0;
	int rc;
	(void)state;
	tu_machine_holes(&m);
	e = tu_env_create(&m, 1);

	/* a limit in the middle of DMA32: everything lands below it, and the
	 * window [16 MiB, 20 MiB) can be exhausted page by page */
	const struct dmm_constraint w = { 16 * MiB, 20 * MiB, 0, 0, 0, 0 };
	nb = fill_until_fail(e, 0, &w, DMM_GFP_NOWMARK, blks, 20000, &rc);
	assert_rc(rc, -DMM_ENOMEM);
	assert_int_equal(nb, 4 * MiB / DMM_PAGE_SIZE);
	/* order 3 inside [1 MiB, 24 MiB) */
	const struct dmm_constraint c = { 1 * MiB, 24 * MiB, 0, 0, 0, 0 };
	size_t n2 = fill_until_fail(e, 3, &c, DMM_GFP_NOWMARK | DMM_GFP_MOVABLE, blks + nb, 20000 - nb, &rc);
	assert_rc(rc, -DMM_ENOMEM);
	/* 23 MiB minus the 256 KiB reserved at 2 MiB, minus the 4 MiB above */
	assert_int_equal(n2, (23 * MiB - 256 * KiB - 4 * MiB) / (8 * DMM_PAGE_SIZE));
	nb += n2;
	free_all(e, blks, nb, 0);
	tu_env_destroy(e);
}

static void test_migratetype_grouping(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	static struct blk blks[4096];
	size_t nb = 0;
	uint8_t *unmov_pb;
	unsigned unmov_blocks = 0;
	struct dmm_zone_info zi;
	(void)state;
	tu_machine(&m, "flat64");
	tu_add_ram(&m, 0, 64 * MiB);
	e = tu_env_create(&m, 1);
	unmov_pb = calloc(e->npfn / DMM_PAGEBLOCK_PAGES + 1, 1);

	/* 1 unmovable for every 7 movable pages: 512 unmovable pages in all */
	for (int i = 0; i < 4096; i++) {
		unsigned f = (i % 8 == 0) ? 0 : DMM_GFP_MOVABLE;
		assert_ok(alloc_checked(e, 0, NULL, f, &blks[nb]));
		if (!f)
			unmov_pb[blks[nb].pfn / DMM_PAGEBLOCK_PAGES] = 1;
		nb++;
	}
	for (size_t i = 0; i <= e->npfn / DMM_PAGEBLOCK_PAGES; i++)
		unmov_blocks += unmov_pb[i];
	/* 512 pages fit one pageblock; allow some slack, but not scattering
	 * over the 8 pageblocks the 4096 pages span */
	if (unmov_blocks > 3) {
		print_error("unmovable pages spread over %u pageblocks\n", unmov_blocks);
		fail();
	}
	assert_ok(dmm_zone_get_info(e->mem, 0, &zi));
	assert_true(zi.pageblocks_mt[DMM_MT_UNMOVABLE] >= 1);
	assert_true(zi.pageblocks_mt[DMM_MT_UNMOVABLE] <= 3);
	{
		uint64_t pbs = 0;
		for (unsigned t = 0; t < DMM_NR_MIGRATETYPES; t++)
			pbs += zi.pageblocks_mt[t];
		/* every pageblock of the zone has a type */
		assert_true(pbs >= zi.managed / DMM_PAGEBLOCK_PAGES);
		assert_true(pbs <= zi.spanned / DMM_PAGEBLOCK_PAGES + 1);
	}
	/* the unmovable pages' pageblocks are marked unmovable */
	for (size_t i = 0; i < nb; i += 8) {
		dmm_pfn_t pb = blks[i].pfn & ~(DMM_PAGEBLOCK_PAGES - 1);
		assert_int_equal(dmm_pfn_to_page(e->mem, pb)->pb_mt, DMM_MT_UNMOVABLE);
	}
	free(unmov_pb);
	free_all(e, blks, nb, 0);
	tu_env_destroy(e);
}

static void normal_only(struct dmm_machine *m)
{
	tu_machine(m, "normal32");
	tu_add_ram(m, 4 * GiB, 32 * MiB);
	m->min_free_kbytes = 1024; /* min = 256 pages */
}

static void test_watermarks(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	static struct blk blks[10000];
	size_t nb = 0, n;
	int rc;
	struct dmm_zone_info zi;
	struct snap s;
	(void)state;
	normal_only(&m);
	e = tu_env_create(&m, 1);
	assert_ok(dmm_zone_get_info(e->mem, 0, &zi));
	assert_int_equal(zi.wmark_min, 256);
	assert_true(zi.wmark_low > zi.wmark_min && zi.wmark_high > zi.wmark_low);

	/* ordinary allocations stop at the watermark, with EWMARK */
	n = fill_until_fail(e, 0, NULL, 0, blks, 10000, &rc);
	assert_rc(rc, -DMM_EWMARK);
	nb += n;
	assert_ok(dmm_zone_get_info(e->mem, 0, &zi));
	assert_true(zi.free + zi.pcp > 0);
	assert_true(zi.free <= zi.wmark_low);
	assert_true(zi.stats.fail[DMM_FAIL_WMARK] >= 1);
	/* and keep failing, for every order, changing nothing */
	take_snap(e->mem, &s);
	for (unsigned o = 0; o <= 3; o++) {
		dmm_pfn_t pfn;
		assert_rc(dmm_page_alloc(e->mem, o, NULL, DMM_GFP_MOVABLE, &pfn), -DMM_EWMARK);
		assert_rc(dmm_page_alloc(e->mem, o, NULL, DMM_GFP_NOCACHE, &pfn), -DMM_EWMARK);
		assert_unchanged(e->mem, &s);
	}

	/* atomic allocations dip into the reserve */
	n = fill_until_fail(e, 0, NULL, DMM_GFP_ATOMIC, blks + nb, 10000 - nb, &rc);
	assert_true(n >= 1);
	assert_true(n < zi.wmark_min); /* but not all of it */
	assert_rc(rc, -DMM_EWMARK);
	nb += n;
	/* NOWMARK takes the rest, then ENOMEM with nothing left at all */
	n = fill_until_fail(e, 0, NULL, DMM_GFP_NOWMARK, blks + nb, 10000 - nb, &rc);
	assert_true(n >= 1);
	assert_rc(rc, -DMM_ENOMEM);
	nb += n;
	assert_ok(dmm_zone_get_info(e->mem, 0, &zi));
	assert_int_equal(zi.free, 0);
	assert_int_equal(zi.pcp, 0);
	assert_int_equal(nb, e->free0);
	assert_true(zi.stats.fail[DMM_FAIL_NOMEM] >= 1);
	free_all(e, blks, nb, 0);
	tu_env_destroy(e);
}

struct hook_log {
	unsigned calls;
	unsigned zone;
	uint64_t free_pages;
	uint64_t info_free; /* zone free seen from inside the hook */
	struct dmm_mem *mem;
};

/* The hook runs outside every lock: it may query the zone (which takes its
 * lock) and even allocate and free; under a held lock this would hang. */
static void wmark_hook(void *arg, struct dmm_mem *mem, unsigned zone, uint64_t free_pages)
{
	struct hook_log *h = arg;
	struct dmm_zone_info zi;
	dmm_pfn_t pfn;
	h->calls++;
	h->zone = zone;
	h->free_pages = free_pages;
	h->mem = mem;
	h->info_free = dmm_zone_get_info(mem, zone, &zi) == 0 ? zi.free : UINT64_MAX;
	if (dmm_page_alloc(mem, 0, NULL, DMM_GFP_ATOMIC | DMM_GFP_NOCACHE, &pfn) == 0)
		dmm_page_free(mem, pfn, 0);
}

static void test_wmark_hook(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	static struct blk blks[10000];
	size_t nb = 0;
	struct hook_log log = { 0, 99, 0, 0, NULL };
	struct dmm_zone_info zi;
	(void)state;
	normal_only(&m);
	e = tu_env_create(&m, 1);
	assert_ok(dmm_page_set_wmark_hook(e->mem, wmark_hook, &log));
	assert_ok(dmm_zone_get_info(e->mem, 0, &zi));

	for (int round = 1; round <= 2; round++) {
		/* allocate until the zone is below low: the hook fires exactly once */
		for (;;) {
			assert_ok(alloc_checked(e, 0, NULL, 0, &blks[nb]));
			nb++;
			assert_ok(dmm_zone_get_info(e->mem, 0, &zi));
			if (zi.free < zi.wmark_low)
				break;
			assert_int_equal(log.calls, round - 1);
		}
		assert_int_equal(log.calls, round);
		assert_int_equal(log.zone, 0);
		assert_ptr_equal(log.mem, e->mem);
		assert_true(log.free_pages < zi.wmark_low);
		assert_true(log.info_free < zi.wmark_low);
		/* further allocations below low do not fire it again */
		for (int i = 0; i < 16; i++) {
			if (alloc_checked(e, 0, NULL, 0, &blks[nb]) == 0)
				nb++;
		}
		assert_int_equal(log.calls, round);
		assert_ok(dmm_zone_get_info(e->mem, 0, &zi));
		assert_int_equal(zi.stats.wmark_low_events, (uint64_t)round);
		/* back above high re-arms it */
		free_all(e, blks, nb, 0);
		nb = 0;
		assert_int_equal(log.calls, round);
	}
	/* removed: never called again */
	assert_ok(dmm_page_set_wmark_hook(e->mem, NULL, NULL));
	for (;;) {
		assert_ok(alloc_checked(e, 0, NULL, 0, &blks[nb]));
		nb++;
		assert_ok(dmm_zone_get_info(e->mem, 0, &zi));
		if (zi.free < zi.wmark_low)
			break;
	}
	assert_int_equal(log.calls, 2);
	free_all(e, blks, nb, 0);
	tu_env_destroy(e);
}

static void test_pcp(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	static struct blk blks[256];
	struct snap s0, s1;
	(void)state;
	tu_machine(&m, "flat64");
	tu_add_ram(&m, 0, 64 * MiB);
	e = tu_env_create(&m, 1);

	/* order 0..3 without NOCACHE go through the per-CPU cache */
	take_snap(e->mem, &s0);
	for (int i = 0; i < 64; i++)
		assert_ok(alloc_checked(e, (unsigned)i % (DMM_PCP_MAX_ORDER + 1), NULL,
					i & 4 ? DMM_GFP_MOVABLE : 0, &blks[i]));
	take_snap(e->mem, &s1);
	assert_int_equal(s1.pcp_alloc - s0.pcp_alloc, 64);
	assert_true(s1.pcp_refill > s0.pcp_refill);
	for (int i = 0; i < 64; i++)
		free_checked(e, &blks[i]);
	take_snap(e->mem, &s0);
	assert_int_equal(s0.pcp_free - s1.pcp_free, 64);
	assert_true(s0.pcp[0] > 0); /* something stays cached */
	/* after a refill, the next allocation comes from the cache without
	 * touching the lists */
	dmm_page_drain_pcp(e->mem);
	assert_ok(alloc_checked(e, 0, NULL, 0, &blks[0]));
	take_snap(e->mem, &s0);
	assert_true(s0.pcp[0] > 0);
	assert_ok(alloc_checked(e, 0, NULL, 0, &blks[1]));
	take_snap(e->mem, &s1);
	assert_int_equal(s1.free[0], s0.free[0]);
	assert_int_equal(s1.pcp[0], s0.pcp[0] - 1);
	free_checked(e, &blks[1]);
	free_checked(e, &blks[0]);

	/* NOCACHE bypasses it: the buddy lists pay exactly, the cache is untouched */
	for (unsigned o = 0; o <= DMM_PCP_MAX_ORDER; o++) {
		take_snap(e->mem, &s0);
		assert_ok(alloc_checked(e, o, NULL, DMM_GFP_NOCACHE, &blks[o]));
		take_snap(e->mem, &s1);
		assert_int_equal(s1.pcp_alloc, s0.pcp_alloc);
		assert_int_equal(s1.pcp[0], s0.pcp[0]);
		assert_int_equal(s1.free[0], s0.free[0] - (1u << o));
	}
	/* orders above the per-CPU range never use it */
	take_snap(e->mem, &s0);
	assert_ok(alloc_checked(e, DMM_PCP_MAX_ORDER + 1, NULL, 0, &blks[10]));
	take_snap(e->mem, &s1);
	assert_int_equal(s1.pcp_alloc, s0.pcp_alloc);
	assert_int_equal(s1.pcp[0], s0.pcp[0]);
	assert_int_equal(s1.free[0], s0.free[0] - (1u << (DMM_PCP_MAX_ORDER + 1)));
	free_checked(e, &blks[10]);
	for (unsigned o = 0; o <= DMM_PCP_MAX_ORDER; o++)
		free_checked(e, &blks[o]);

	/* drain empties the caches */
	take_snap(e->mem, &s0);
	assert_true(s0.pcp[0] > 0);
	dmm_page_drain_pcp(e->mem);
	assert_checks(e->mem);
	take_snap(e->mem, &s1);
	assert_int_equal(s1.pcp[0], 0);
	assert_int_equal(s1.free[0], s0.free[0] + s0.pcp[0]);
	assert_true(s1.pcp_drain > s0.pcp_drain);
	assert_int_equal(s1.total, e->free0);
	/* draining twice is harmless */
	dmm_page_drain_pcp(e->mem);
	assert_unchanged(e->mem, &s1);

	/* many frees overflow the cache's high mark: it drains in batches */
	take_snap(e->mem, &s0);
	for (int i = 0; i < 256; i++)
		assert_ok(alloc_checked(e, 0, NULL, 0, &blks[i]));
	for (int i = 0; i < 256; i++)
		free_checked(e, &blks[i]);
	take_snap(e->mem, &s1);
	assert_int_equal(s1.total, e->free0);
	free_all(e, blks, 0, 0);
	tu_env_destroy(e);
}

/* Extreme inputs do not wrap: a min_free_kbytes beyond the machine gives
 * watermarks beyond the machine (every ordinary request refused), not tiny
 * ones, and a huge page count clamps the default high. */
static void test_watermark_extremes(void **state)
{
	uint64_t managed[3] = { 3000, 100000, 1000000 };
	uint64_t mn[3], lo[3], hi[3];
	(void)state;
	assert_int_equal(dmm_default_min_free_kbytes(1ull << 58), 262144);
	assert_int_equal(dmm_default_min_free_kbytes(1ull << 62), 262144);
	assert_int_equal(dmm_default_min_free_kbytes(UINT64_MAX), 262144);
	dmm_calc_watermarks(1ull << 62, 10, 3, managed, mn, lo, hi);
	for (unsigned z = 0; z < 3; z++) {
		uint64_t want = (uint64_t)((unsigned __int128)(1ull << 60) * managed[z] / 1103000);
		assert_int_equal(mn[z], want);
		assert_int_equal(lo[z], mn[z] + mn[z] / 4);
		assert_int_equal(hi[z], lo[z] + mn[z] / 4);
	}
	dmm_calc_watermarks(UINT64_MAX, 10, 3, managed, mn, lo, hi);
	for (unsigned z = 0; z < 3; z++) {
		assert_true(mn[z] > managed[z]);
		assert_true(lo[z] >= mn[z] && hi[z] >= lo[z]);
	}
	{
		struct dmm_machine m;
		struct tu_env *e;
		struct dmm_zone_info zi;
		dmm_pfn_t p;
		tu_machine(&m, "huge-min-free");
		tu_add_ram(&m, 0, 64 * MiB);
		m.min_free_kbytes = 1ull << 62;
		e = tu_env_create(&m, 1);
		assert_ok(dmm_zone_get_info(e->mem, 0, &zi));
		assert_true(zi.wmark_min > zi.managed);
		assert_rc(dmm_page_alloc(e->mem, 0, NULL, 0, &p), -DMM_EWMARK);
		assert_rc(dmm_page_alloc(e->mem, 0, NULL, DMM_GFP_ATOMIC, &p), -DMM_EWMARK);
		assert_ok(dmm_page_alloc(e->mem, 0, NULL, DMM_GFP_NOWMARK, &p));
		assert_ok(dmm_page_free(e->mem, p, 0));
		dmm_page_drain_pcp(e->mem);
		assert_checks(e->mem);
		tu_env_destroy(e);
	}
}

static void test_watermark_math(void **state)
{
	(void)state;
	/* Linux: sqrt(16 * lowmem_kbytes), clamped to [128, 262144] */
	assert_int_equal(dmm_default_min_free_kbytes(16384), 1024);       /* 64 MiB */
	assert_int_equal(dmm_default_min_free_kbytes(262144), 4096);      /* 1 GiB */
	assert_int_equal(dmm_default_min_free_kbytes(1), 128);            /* clamp low */
	assert_int_equal(dmm_default_min_free_kbytes(1ull << 34), 262144); /* clamp high */
	{
		/* one zone takes all of min; low/high add max(min/4, managed * sf / 10000) */
		uint64_t managed[3] = { 3000, 100000, 1000000 };
		uint64_t mn[3], lo[3], hi[3];
		dmm_calc_watermarks(4096, 10, 1, managed + 2, mn, lo, hi);
		assert_int_equal(mn[0], 1024);
		assert_int_equal(lo[0], 1024 + 1000);
		assert_int_equal(hi[0], 1024 + 2000);
		dmm_calc_watermarks(4096, 10, 3, managed, mn, lo, hi);
		assert_int_equal(mn[0], 1024 * 3000 / 1103000);
		assert_int_equal(mn[1], 1024 * 100000 / 1103000);
		assert_int_equal(mn[2], 1024 * 1000000 / 1103000);
		for (unsigned z = 0; z < 3; z++) {
			uint64_t gap = managed[z] * 10 / 10000;
			if (mn[z] / 4 > gap)
				gap = mn[z] / 4;
			assert_int_equal(lo[z], mn[z] + gap);
			assert_int_equal(hi[z], lo[z] + gap);
		}
		assert_int_equal(lo[2] - mn[2], 1000);
		/* min/4 dominates when the scale factor gives less */
		dmm_calc_watermarks(65536, 10, 3, managed, mn, lo, hi);
		assert_int_equal(mn[2], 16384ull * 1000000 / 1103000);
		assert_int_equal(lo[2] - mn[2], mn[2] / 4);
		/* a larger scale factor widens the gaps */
		dmm_calc_watermarks(4096, 100, 3, managed, mn, lo, hi);
		assert_int_equal(lo[2] - mn[2], 10000);
	}
	/* the zones of a machine with an explicit min_free_kbytes use exactly that */
	{
		struct dmm_machine m;
		struct tu_env *e;
		uint64_t managed[3], mn[3], lo[3], hi[3];
		struct dmm_zone_info zi[3];
		tu_machine_holes(&m);
		m.min_free_kbytes = 2048;
		m.watermark_scale_factor = 50;
		e = tu_env_create(&m, 1);
		for (unsigned z = 0; z < 3; z++) {
			assert_ok(dmm_zone_get_info(e->mem, z, &zi[z]));
			managed[z] = zi[z].managed;
		}
		dmm_calc_watermarks(2048, 50, 3, managed, mn, lo, hi);
		for (unsigned z = 0; z < 3; z++) {
			assert_int_equal(zi[z].wmark_min, mn[z]);
			assert_int_equal(zi[z].wmark_low, lo[z]);
			assert_int_equal(zi[z].wmark_high, hi[z]);
			/* lowmem_reserve: managed of the zones above / this zone's ratio */
			for (unsigned c = 0; c < DMM_NR_ZONE_TYPES; c++) {
				uint64_t above = 0;
				for (unsigned j = z + 1; j <= c; j++)
					above += managed[j];
				assert_int_equal(zi[z].protection[c], c > z ? above / m.lowmem_reserve_ratio[z] : 0);
			}
		}
		tu_env_destroy(e);
	}
}

/* ---- bad input ------------------------------------------------------------- */

static void test_bad_alloc_args(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct snap s;
	dmm_pfn_t pfn = 0;
	struct dmm_constraint c;
	struct blk keep;
	(void)state;
	tu_machine_holes(&m);
	e = tu_env_create(&m, 1);
	/* some state to preserve: a cached page, an allocated block */
	assert_ok(alloc_checked(e, 0, NULL, 0, &keep));
	free_checked(e, &keep);
	assert_ok(alloc_checked(e, 5, NULL, 0, &keep));
	tu_fill(e->mem, keep.pfn, 32, keep.salt, 1);
	take_snap(e->mem, &s);

	assert_rc(dmm_page_alloc(e->mem, DMM_MAX_ORDER + 1, NULL, 0, &pfn), -DMM_EINVAL);
	assert_unchanged(e->mem, &s);
	assert_rc(dmm_page_alloc(e->mem, 64, NULL, 0, &pfn), -DMM_EINVAL);
	assert_rc(dmm_page_alloc(e->mem, ~0u, NULL, 0, &pfn), -DMM_EINVAL);
	assert_unchanged(e->mem, &s);
	assert_rc(dmm_page_alloc(e->mem, 0, NULL, DMM_GFP_ALL + 1, &pfn), -DMM_EINVAL);
	assert_rc(dmm_page_alloc(e->mem, 0, NULL, 1u << 31, &pfn), -DMM_EINVAL);
	assert_unchanged(e->mem, &s);
	c = (struct dmm_constraint){ 8 * MiB, 8 * MiB, 0, 0, 0, 0 };
	assert_rc(dmm_page_alloc(e->mem, 0, &c, 0, &pfn), -DMM_EINVAL);
	c = (struct dmm_constraint){ 16 * MiB, 8 * MiB, 0, 0, 0, 0 };
	assert_rc(dmm_page_alloc(e->mem, 0, &c, 0, &pfn), -DMM_EINVAL);
	c = (struct dmm_constraint){ 0, DMM_PHYS_MAX, 3 * 4096, 0, 0, 0 };
	assert_rc(dmm_page_alloc(e->mem, 0, &c, 0, &pfn), -DMM_EINVAL); /* alignment not pow2 */
	c = (struct dmm_constraint){ 0, DMM_PHYS_MAX, 0, 5 * 4096, 0, 0 };
	assert_rc(dmm_page_alloc(e->mem, 0, &c, 0, &pfn), -DMM_EINVAL);
	assert_unchanged(e->mem, &s);
	/* a constraint and a DMA shorthand at once */
	c = dmm_constraint_below(32 * MiB);
	assert_rc(dmm_page_alloc(e->mem, 0, &c, DMM_GFP_DMA, &pfn), -DMM_EINVAL);
	assert_rc(dmm_page_alloc(e->mem, 0, &c, DMM_GFP_DMA32, &pfn), -DMM_EINVAL);
	assert_unchanged(e->mem, &s);
	/* pfn NULL */
	assert_rc(dmm_page_alloc(e->mem, 0, NULL, 0, NULL), -DMM_EINVAL);
	assert_rc(dmm_page_alloc(e->mem, 4, NULL, 0, NULL), -DMM_EINVAL);
	assert_unchanged(e->mem, &s);
	/* windows without RAM: a hole, above the end */
	c = (struct dmm_constraint){ 0xa0000, 0x100000, 0, 0, 0, 0 };
	assert_rc(dmm_page_alloc(e->mem, 0, &c, 0, &pfn), -DMM_ERANGE);
	c = (struct dmm_constraint){ 5 * GiB, 6 * GiB, 0, 0, 0, 0 };
	assert_rc(dmm_page_alloc(e->mem, 0, &c, 0, &pfn), -DMM_ERANGE);
	c = (struct dmm_constraint){ 0, 4096, 0, 0, 0, 0 }; /* page 0 is a hole */
	assert_rc(dmm_page_alloc(e->mem, 0, &c, 0, &pfn), -DMM_ERANGE);
	assert_unchanged(e->mem, &s);
	/* a window too small for the order is not satisfiable */
	c = (struct dmm_constraint){ 20 * MiB, 20 * MiB + 8192, 0, 0, 0, 0 };
	assert_rc(dmm_page_alloc(e->mem, 2, &c, 0, &pfn), -DMM_ENOMEM);
	assert_unchanged(e->mem, &s);
	/* a boundary smaller than the block can never be met */
	c = (struct dmm_constraint){ 0, DMM_PHYS_MAX, 0, 8192, 0, 0 };
	{
		int rc = dmm_page_alloc(e->mem, 3, &c, 0, &pfn);
		assert_true(rc == -DMM_EINVAL || rc == -DMM_ENOMEM);
	}
	assert_unchanged(e->mem, &s);
	/* zone info out of range */
	{
		struct dmm_zone_info zi;
		assert_rc(dmm_zone_get_info(e->mem, 3, &zi), -DMM_EINVAL);
		assert_rc(dmm_zone_get_info(e->mem, 0, NULL), -DMM_EINVAL);
	}
	tu_verify(e->mem, keep.pfn, 32, keep.salt, 1);
	free_checked(e, &keep);
	tu_env_destroy(e);

	/* RAM starting at 2 GiB: a limit below it is out of range */
	tu_machine(&m, "high-base");
	tu_add_ram(&m, 0x80000000ull, 32 * MiB);
	e = tu_env_create(&m, 1);
	take_snap(e->mem, &s);
	c = dmm_constraint_below(0x40000000ull);
	assert_rc(dmm_page_alloc(e->mem, 0, &c, 0, &pfn), -DMM_ERANGE);
	c = dmm_constraint_below(0x80000000ull);
	assert_rc(dmm_page_alloc(e->mem, 0, &c, 0, &pfn), -DMM_ERANGE);
	assert_unchanged(e->mem, &s);
	/* one page above the base is enough */
	c = dmm_constraint_below(0x80000000ull + 4096);
	assert_ok(alloc_checked(e, 0, &c, DMM_GFP_NOWMARK, &keep));
	assert_int_equal(keep.pfn, 0x80000);
	free_checked(e, &keep);
	tu_env_destroy(e);
}

static void test_bad_free(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct snap s, s2;
	struct blk a = { 0 }, b = { 0 }, cached = { 0 }, buddy = { 0 };
	dmm_pfn_t r;
	(void)state;
	tu_machine_holes(&m);
	e = tu_env_create(&m, 1);

	assert_ok(alloc_checked(e, 3, NULL, 0, &a));
	assert_ok(alloc_checked(e, 5, NULL, 0, &b));
	assert_ok(alloc_checked(e, 2, NULL, 0, &cached));
	assert_ok(alloc_checked(e, 6, NULL, 0, &buddy));
	{
		struct dmm_constraint c = DMM_CONSTRAINT_ANY;
		assert_ok(dmm_alloc_range(e->mem, &c, 7, 0, &r));
		tu_own(e, r, 7);
	}
	tu_fill(e->mem, a.pfn, 8, a.salt, 1);
	tu_fill(e->mem, b.pfn, 32, b.salt, 1);
	tu_fill(e->mem, r, 7, 77, 1);
	free_checked(e, &cached); /* now in a per-CPU cache */
	free_checked(e, &buddy);  /* back in the buddy lists */
	assert_checks(e->mem);
	take_snap(e->mem, &s);

	/* double free: from the per-CPU cache and from the buddy lists */
	assert_rc(dmm_page_free(e->mem, cached.pfn, cached.order), -DMM_ENOENT);
	assert_unchanged(e->mem, &s);
	assert_rc(dmm_page_free(e->mem, buddy.pfn, buddy.order), -DMM_ENOENT);
	assert_unchanged(e->mem, &s);
	/* a page never allocated */
	{
		dmm_pfn_t never = 0;
		for (dmm_pfn_t p = e->info.min_pfn; p < e->info.max_pfn; p++) {
			struct dmm_page *pg = dmm_pfn_to_page(e->mem, p);
			if (pg && pg->state == DMM_PAGE_FREE && pg->order >= 2) {
				never = p;
				break;
			}
		}
		assert_true(never != 0);
		assert_rc(dmm_page_free(e->mem, never, 0), -DMM_ENOENT);
		assert_rc(dmm_page_free(e->mem, never + 1, 0), -DMM_ENOENT); /* tail of a free block */
		assert_unchanged(e->mem, &s);
	}
	/* tail pages of an allocated block */
	assert_rc(dmm_page_free(e->mem, b.pfn + 1, 0), -DMM_ENOENT);
	assert_rc(dmm_page_free(e->mem, b.pfn + 16, 4), -DMM_ENOENT);
	assert_rc(dmm_page_free(e->mem, b.pfn + 31, 0), -DMM_ENOENT);
	assert_unchanged(e->mem, &s);
	/* wrong order */
	assert_rc(dmm_page_free(e->mem, b.pfn, 4), -DMM_EINVAL);
	assert_rc(dmm_page_free(e->mem, b.pfn, 6), -DMM_EINVAL);
	assert_rc(dmm_page_free(e->mem, b.pfn, 0), -DMM_EINVAL);
	assert_rc(dmm_page_free(e->mem, b.pfn, DMM_MAX_ORDER + 1), -DMM_EINVAL);
	assert_rc(dmm_page_free(e->mem, a.pfn, 2), -DMM_EINVAL);
	assert_unchanged(e->mem, &s);
	/* a range allocation is not a buddy block */
	assert_rc(dmm_page_free(e->mem, r, 0), -DMM_ENOENT);
	assert_rc(dmm_page_free(e->mem, r, 3), -DMM_ENOENT);
	assert_rc(dmm_page_free(e->mem, r + 1, 0), -DMM_ENOENT);
	assert_unchanged(e->mem, &s);
	/* and a buddy block is not a range */
	assert_rc(dmm_free_range(e->mem, b.pfn, 32), -DMM_ENOENT);
	assert_unchanged(e->mem, &s);
	/* pfns that are not RAM: holes, reserved, metadata, beyond the end */
	assert_rc(dmm_page_free(e->mem, 0, 0), -DMM_ENOENT);
	assert_rc(dmm_page_free(e->mem, 0x9f, 0), -DMM_ENOENT);
	assert_rc(dmm_page_free(e->mem, 0xa0, 0), -DMM_ENOENT);
	assert_rc(dmm_page_free(e->mem, (2 * MiB) >> DMM_PAGE_SHIFT, 0), -DMM_ENOENT);
	assert_rc(dmm_page_free(e->mem, e->info.max_pfn - 1, 0), -DMM_ENOENT); /* metadata */
	assert_rc(dmm_page_free(e->mem, e->info.max_pfn, 0), -DMM_ENOENT);
	assert_rc(dmm_page_free(e->mem, (dmm_pfn_t)1 << 40, 0), -DMM_ENOENT);
	assert_rc(dmm_page_free(e->mem, UINT64_MAX, 0), -DMM_ENOENT);
	assert_unchanged(e->mem, &s);
	/* rejected frees are counted */
	take_snap(e->mem, &s2);
	assert_true(s2.bad_free >= s.bad_free + 10);

	/* nothing was corrupted: contents intact, the real frees work */
	tu_verify(e->mem, a.pfn, 8, a.salt, 1);
	tu_verify(e->mem, b.pfn, 32, b.salt, 1);
	tu_verify(e->mem, r, 7, 77, 1);
	free_checked(e, &a);
	free_checked(e, &b);
	assert_ok(dmm_free_range(e->mem, r, 7));
	tu_disown(e, r, 7);
	/* and freeing them a second time is refused */
	assert_rc(dmm_page_free(e->mem, a.pfn, 3), -DMM_ENOENT);
	assert_rc(dmm_page_free(e->mem, b.pfn, 5), -DMM_ENOENT);
	assert_rc(dmm_free_range(e->mem, r, 7), -DMM_ENOENT);
	free_all(e, NULL, 0, 0);
	tu_env_destroy(e);
}

/* ---- frees racing frees and pins ----------------------------------------------- */

struct race_mem {
	struct dmm_hosted *h;
	struct dmm_mem *mem;
};

/* A 64 MiB machine whose lock hook can run a call right before a lock,
 * with an 8 MiB contiguous area. */
static void race_mem_create(struct race_mem *r, const char *name, unsigned nr_cpus)
{
	struct dmm_machine m;
	struct dmm_platform p;

	tu_race_platform(&m, name, nr_cpus, &r->h, &p);
	m.nr_cma = 1;
	snprintf(m.cma[0].name, sizeof(m.cma[0].name), "area");
	m.cma[0].size = 8 * MiB;
	assert_ok(dmm_mem_create(&m, &p, &r->mem));
}

static void race_mem_destroy(struct race_mem *r)
{
	dmm_mem_destroy(r->mem);
	dmm_hosted_destroy(r->h);
}

struct page_call {
	struct dmm_mem *mem;
	dmm_pfn_t pfn;
	unsigned order;
	int rc;
};

static void page_free_call(void *arg)
{
	struct page_call *c = arg;
	c->rc = dmm_page_free(c->mem, c->pfn, c->order);
}

/*
 * Two frees of one block at once, forced: the second overtakes the first
 * right before the first takes its first lock (the per-CPU cache's for
 * orders up to DMM_PCP_MAX_ORDER, the zone's above). Exactly one frees the
 * block; the other is refused with -DMM_ENOENT and counted.
 */
static void test_concurrent_double_free(void **state)
{
	static const unsigned orders[] = { 0, 2, DMM_PCP_MAX_ORDER, DMM_PCP_MAX_ORDER + 1, 7 };
	struct race_mem r;
	uint64_t free0, bad0;
	(void)state;

	race_mem_create(&r, "free-race", 1);
	free0 = tu_zone_free_all(r.mem);
	bad0 = tu_zone_bad_frees(r.mem);
	for (unsigned i = 0; i < sizeof(orders) / sizeof(orders[0]); i++) {
		struct page_call nested = { r.mem, 0, orders[i], 1 };
		unsigned fired = tu_race()->fired;
		int rc;

		assert_ok(dmm_page_alloc(r.mem, orders[i], NULL, 0, &nested.pfn));
		tu_race_arm(page_free_call, &nested);
		rc = dmm_page_free(r.mem, nested.pfn, orders[i]);
		assert_int_equal(tu_race()->fired, fired + 1);
		tu_assert_one_free(nested.pfn, rc, nested.rc);
		assert_checks(r.mem);
		assert_int_equal(tu_zone_bad_frees(r.mem), bad0 + i + 1);
	}
	dmm_page_drain_pcp(r.mem);
	assert_int_equal(tu_zone_free_all(r.mem), free0);
	race_mem_destroy(&r);
}

/*
 * Two threads, one block, every round: thread 0 allocates the block (a
 * page, a range when @range is 1, a range of contiguous area 0 when 2), then both start together and do their
 * part: thread 0 frees it, thread 1 frees it too (@pin 0) or pins it
 * (@pin 1). Thread 0 then judges the round and cleans up.
 */
struct duel {
	struct dmm_mem *mem;
	struct tu_spin_barrier bar;
	unsigned rounds;
	int range, pin;
	unsigned order; /* of the block (@range 0, @pin 0) */
	dmm_pfn_t pfn;
	int rc[2];
	int stop;
	char why[160];
	unsigned both_refused; /* rounds where the free and the pin each saw the other */
};

#define DUEL_PAGES 3

static int duel_free(struct duel *d)
{
	if (d->range == 2)
		return dmm_cma_release(d->mem, 0, d->pfn, DUEL_PAGES);
	return d->range ? dmm_free_range(d->mem, d->pfn, DUEL_PAGES) : dmm_page_free(d->mem, d->pfn, d->order);
}

/* Thread 0's verdict on a round; 0 = fine, the block is free again. */
static int duel_judge(struct duel *d)
{
	int fr = d->rc[0], other = d->rc[1];

	if (!d->pin) {
		if ((fr == 0) == (other == 0) || (fr ? fr : other) != -DMM_ENOENT) {
			snprintf(d->why, sizeof(d->why), "two frees of %llu at once: %s and %s",
				 (unsigned long long)d->pfn, dmm_errname(fr), dmm_errname(other));
			return -1;
		}
		return 0;
	}
	if (fr == 0 && other == 0) {
		snprintf(d->why, sizeof(d->why), "%llu pinned and freed at once", (unsigned long long)d->pfn);
		return -1;
	}
	if (other == 0) {
		/* the pin came first: the free was refused, the block still ours */
		if (fr != -DMM_EBUSY) {
			snprintf(d->why, sizeof(d->why), "free of a pinned block: %s", dmm_errname(fr));
			return -1;
		}
		if (dmm_page_unpin(d->mem, d->pfn, 0) || duel_free(d)) {
			snprintf(d->why, sizeof(d->why), "unpin and free after a refused free failed");
			return -1;
		}
		return 0;
	}
	/* the pin failed: it saw the block leaving (or, if it also made the
	 * free back off, the block is still allocated) */
	if (other != -DMM_ENOENT && other != -DMM_EAGAIN) {
		snprintf(d->why, sizeof(d->why), "pin of a block being freed: %s", dmm_errname(other));
		return -1;
	}
	if (fr == -DMM_EBUSY) {
		d->both_refused++;
		if (duel_free(d)) {
			snprintf(d->why, sizeof(d->why), "free after a backed-off pin failed");
			return -1;
		}
		return 0;
	}
	if (fr) {
		snprintf(d->why, sizeof(d->why), "free raced by a pin: %s", dmm_errname(fr));
		return -1;
	}
	return 0;
}

static void *duel_thread0(void *arg)
{
	struct duel *d = arg;
	struct dmm_constraint any = DMM_CONSTRAINT_ANY;

	for (unsigned i = 0; i < d->rounds; i++) {
		int rc = d->range == 2 ? dmm_cma_alloc(d->mem, 0, DUEL_PAGES, 0, 0, &d->pfn, NULL)
			 : d->range ? dmm_alloc_range(d->mem, &any, DUEL_PAGES, 0, &d->pfn)
				    : dmm_page_alloc(d->mem, d->order, NULL, 0, &d->pfn);
		if (rc) {
			snprintf(d->why, sizeof(d->why), "allocation failed: %s", dmm_errname(rc));
			__atomic_store_n(&d->stop, 1, __ATOMIC_RELAXED);
		}
		tu_spin_wait(&d->bar);
		if (__atomic_load_n(&d->stop, __ATOMIC_RELAXED))
			break;
		d->rc[0] = duel_free(d);
		tu_spin_wait(&d->bar);
		if (duel_judge(d))
			__atomic_store_n(&d->stop, 1, __ATOMIC_RELAXED);
		tu_spin_wait(&d->bar);
		if (__atomic_load_n(&d->stop, __ATOMIC_RELAXED))
			break;
	}
	return NULL;
}

static void *duel_thread1(void *arg)
{
	struct duel *d = arg;
	dmm_pfn_t pinned;

	for (unsigned i = 0; i < d->rounds; i++) {
		tu_spin_wait(&d->bar);
		if (__atomic_load_n(&d->stop, __ATOMIC_RELAXED))
			break;
		d->rc[1] = d->pin ? dmm_page_pin(d->mem, d->pfn, 0, &pinned, NULL) : duel_free(d);
		tu_spin_wait(&d->bar);
		tu_spin_wait(&d->bar);
		if (__atomic_load_n(&d->stop, __ATOMIC_RELAXED))
			break;
	}
	return NULL;
}

static void duel_run(struct dmm_mem *mem, int range, int pin, unsigned order, unsigned rounds)
{
	struct duel d;
	pthread_t t[2];
	uint64_t free0;

	memset(&d, 0, sizeof(d));
	d.mem = mem;
	d.rounds = rounds;
	d.range = range;
	d.pin = pin;
	d.order = order;
	free0 = tu_zone_free_all(mem);
	assert_int_equal(pthread_create(&t[0], NULL, duel_thread0, &d), 0);
	assert_int_equal(pthread_create(&t[1], NULL, duel_thread1, &d), 0);
	assert_int_equal(pthread_join(t[0], NULL), 0);
	assert_int_equal(pthread_join(t[1], NULL), 0);
	if (d.stop)
		fail_msg("%s %s, round: %s", range == 2 ? "area range" : range ? "range" : order ? "block" : "page",
			 pin ? "free vs pin" : "free vs free", d.why);
	dmm_page_drain_pcp(mem);
	assert_checks(mem);
	assert_int_equal(tu_zone_free_all(mem), free0);
}

/* The same with two threads really at once, many rounds (the interleaving
 * is not forced: a race the forced test does not reach shows here). */
static void test_concurrent_double_free_threads(void **state)
{
	struct race_mem r;
	(void)state;

	race_mem_create(&r, "free-race-threads", 2);
	duel_run(r.mem, 0, 0, 0, 50000);
	race_mem_destroy(&r);
}

/*
 * The same with a block above the per-CPU caches' orders, which a free
 * merges with its free buddy at once, changing the order its head page
 * says: the free that loses the race, having read the state before the
 * winner took the block and the order after it merged it, must still be
 * refused with -DMM_ENOENT (it came second), not -DMM_EINVAL (a wrong
 * order).
 */
static void test_concurrent_double_free_merged_threads(void **state)
{
	struct race_mem r;
	(void)state;

	race_mem_create(&r, "free-merge-race-threads", 2);
	duel_run(r.mem, 0, 0, DMM_PCP_MAX_ORDER + 1, 50000);
	race_mem_destroy(&r);
}

struct pin_call {
	struct dmm_mem *mem;
	dmm_pfn_t pfn;
	int rc;
};

static void page_pin_call(void *arg)
{
	struct pin_call *c = arg;
	dmm_pfn_t pinned;
	c->rc = dmm_page_pin(c->mem, c->pfn, 0, &pinned, NULL);
}

/*
 * A pin and a free of one block at once, forced: the pin runs right before
 * the free takes its first lock, after the free has looked at the pins.
 * Never both: either the pin lands first and the free is refused with
 * -DMM_EBUSY, or the pin sees the block leaving and fails.
 */
static void test_pin_free_race(void **state)
{
	static const unsigned orders[] = { 0, DMM_PCP_MAX_ORDER, DMM_PCP_MAX_ORDER + 2 };
	struct race_mem r;
	uint64_t free0;
	(void)state;

	race_mem_create(&r, "pin-free-race", 1);
	free0 = tu_zone_free_all(r.mem);
	for (unsigned i = 0; i < sizeof(orders) / sizeof(orders[0]); i++) {
		struct pin_call pin = { r.mem, 0, 1 };
		int rc;

		assert_ok(dmm_page_alloc(r.mem, orders[i], NULL, 0, &pin.pfn));
		tu_race_arm(page_pin_call, &pin);
		rc = dmm_page_free(r.mem, pin.pfn, orders[i]);
		if (rc == 0 && pin.rc == 0)
			fail_msg("order-%u block %llu pinned while it was freed", orders[i],
				 (unsigned long long)pin.pfn);
		if (pin.rc == 0) {
			assert_rc(rc, -DMM_EBUSY);
			assert_ok(dmm_page_unpin(r.mem, pin.pfn, 0));
			assert_ok(dmm_page_free(r.mem, pin.pfn, orders[i]));
		} else {
			assert_ok(rc);
			assert_true(pin.rc == -DMM_ENOENT || pin.rc == -DMM_EAGAIN);
		}
		assert_checks(r.mem);
	}
	dmm_page_drain_pcp(r.mem);
	assert_int_equal(tu_zone_free_all(r.mem), free0);
	race_mem_destroy(&r);
}

/* Pins and frees of pages and ranges from two threads really at once: the
 * pin may check the state before the free claims the block and count
 * itself after the free looked at the pins; that window has no lock to
 * stop in, so it is only reached by running, many rounds. */
static void test_pin_free_race_threads(void **state)
{
	struct race_mem r;
	(void)state;

	race_mem_create(&r, "pin-free-threads", 2);
	duel_run(r.mem, 0, 1, 0, 50000);
	duel_run(r.mem, 1, 1, 0, 50000);
	duel_run(r.mem, 2, 1, 0, 50000);
	race_mem_destroy(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_orders_and_constraints),
		cmocka_unit_test(test_zero_and_contents),
		cmocka_unit_test(test_dma_shorthands),
		cmocka_unit_test(test_explicit_limit),
		cmocka_unit_test(test_migratetype_grouping),
		cmocka_unit_test(test_watermarks),
		cmocka_unit_test(test_wmark_hook),
		cmocka_unit_test(test_pcp),
		cmocka_unit_test(test_watermark_math),
		cmocka_unit_test(test_watermark_extremes),
		cmocka_unit_test(test_bad_alloc_args),
		cmocka_unit_test(test_bad_free),
		cmocka_unit_test(test_concurrent_double_free),
		cmocka_unit_test(test_concurrent_double_free_threads),
		cmocka_unit_test(test_concurrent_double_free_merged_threads),
		cmocka_unit_test(test_pin_free_race),
		cmocka_unit_test(test_pin_free_race_threads),
	};
	return cmocka_run_group_tests_name("page_alloc", tests, NULL, NULL);
}

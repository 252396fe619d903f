/* SPDX-License-Identifier: MIT */
/*
 * Movable pages, migration, pinning and the handle table.
 *
 * A test owner (an array of slots, each naming one movable page) lets the
 * tests refuse isolation or migration on purpose; the handle table is the
 * ready-made owner. Every test verifies page contents after pages moved and
 * runs the allocator checks after each step.
 */
#include <pthread.h>

#include "tu.h"

#define OWNER_SLOTS 4096

struct test_owner {
	struct dmm_movable_owner owner;
	dmm_pfn_t slot[OWNER_SLOTS];
	int refuse_isolate, refuse_migrate;
	unsigned isolated, migrated, putback;
};

static int o_isolate(void *ctx, struct dmm_mem *mem, dmm_pfn_t pfn)
{
	struct test_owner *o = ctx;
	(void)mem;
	(void)pfn;
	if (o->refuse_isolate)
		return -DMM_EPERM;
	o->isolated++;
	return 0;
}

static int o_migrate(void *ctx, struct dmm_mem *mem, dmm_pfn_t old_pfn, dmm_pfn_t new_pfn)
{
	struct test_owner *o = ctx;
	(void)mem;
	if (o->refuse_migrate)
		return -DMM_EPERM;
	for (unsigned i = 0; i < OWNER_SLOTS; i++)
		if (o->slot[i] == old_pfn) {
			o->slot[i] = new_pfn;
			o->migrated++;
			return 0;
		}
	return -DMM_ENOENT;
}

static void o_putback(void *ctx, struct dmm_mem *mem, dmm_pfn_t pfn)
{
	struct test_owner *o = ctx;
	(void)mem;
	(void)pfn;
	o->putback++;
}

static const struct dmm_movable_ops o_ops = { o_isolate, o_migrate, o_putback };

static void owner_init(struct test_owner *o)
{
	memset(o, 0, sizeof(*o));
	o->owner.ops = &o_ops;
	o->owner.ctx = o;
}

/* Contents that do not depend on where the page lives (it moves). */
static void fill_slot(struct dmm_mem *mem, dmm_pfn_t pfn, unsigned i)
{
	uint64_t *w = dmm_pfn_to_virt(mem, pfn);
	for (size_t k = 0; k < DMM_PAGE_SIZE / 8; k++)
		w[k] = ((uint64_t)i << 32) ^ (k * 0x9e3779b97f4a7c15ull);
}

static void verify_slot(struct dmm_mem *mem, dmm_pfn_t pfn, unsigned i)
{
	const uint64_t *w = dmm_pfn_to_virt(mem, pfn);
	for (size_t k = 0; k < DMM_PAGE_SIZE / 8; k++)
		if (w[k] != (((uint64_t)i << 32) ^ (k * 0x9e3779b97f4a7c15ull)))
			fail_msg("slot %u at pfn %#llx lost word %zu", i, (unsigned long long)pfn, k);
}

/* 64 MiB machine, one zone, a 16 MiB area. */
static void small_machine(struct dmm_machine *m)
{
	tu_machine(m, "test-migrate");
	tu_add_ram(m, 0, 64 * MiB);
	m->dma32_limit = 0;
	m->nr_cma = 1;
	snprintf(m->cma[0].name, sizeof(m->cma[0].name), "cam");
	m->cma[0].size = 16 * MiB;
	m->cma[0].is_default = 1;
}

/* The 2 MiB block holding @pfn, if it holds no reserved (metadata) page. */
static int clean_block(struct dmm_mem *mem, dmm_pfn_t pfn, dmm_phys_t *lo)
{
	dmm_pfn_t b = pfn & ~(dmm_pfn_t)511;
	for (dmm_pfn_t p = b; p < b + 512; p++) {
		struct dmm_page *pg = dmm_pfn_to_page(mem, p);
		if (!pg || pg->state == DMM_PAGE_RESERVED)
			return 0;
	}
	*lo = dmm_pfn_to_phys(b);
	return 1;
}

/* A slot whose 2 MiB block is free of reserved pages. */
static unsigned clean_slot(struct dmm_mem *mem, const struct test_owner *o, unsigned n, dmm_phys_t *lo)
{
	for (unsigned i = 0; i < n; i++)
		if (clean_block(mem, o->slot[i], lo))
			return i;
	fail_msg("no slot outside the metadata blocks");
	return 0;
}

#define assert_all_checks(mem)                  \
	do {                                    \
		assert_checks(mem);             \
		assert_ok(dmm_cma_check(mem));  \
	} while (0)

static void test_movable_alloc_and_migrate_range(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	static struct test_owner o;
	struct dmm_migrate_report rep;
	struct dmm_migrate_failure fails[8];
	dmm_phys_t lo = 0, hi = 0;
	(void)state;

	small_machine(&m);
	m.nr_cma = 0;
	e = tu_env_create(&m, 1);
	owner_init(&o);
	for (unsigned i = 0; i < 256; i++) {
		assert_ok(dmm_page_alloc_movable(e->mem, &o.owner, 0, &o.slot[i]));
		fill_slot(e->mem, o.slot[i], i);
	}
	assert_all_checks(e->mem);
	/* empty a 2 MiB block holding owned pages */
	clean_slot(e->mem, &o, 256, &lo);
	hi = lo + 2 * MiB;
	memset(&rep, 0, sizeof(rep));
	rep.failures = fails;
	rep.failures_cap = 8;
	assert_ok(dmm_migrate_range(e->mem, lo, hi, &rep));
	assert_true(rep.moved > 0);
	assert_int_equal(rep.nr_failures, 0);
	for (unsigned i = 0; i < 256; i++) {
		dmm_phys_t pa = dmm_pfn_to_phys(o.slot[i]);
		assert_true(pa < lo || pa >= hi);   /* nothing owned left inside */
		verify_slot(e->mem, o.slot[i], i); /* contents moved with the page */
	}
	assert_int_equal(o.migrated, rep.moved);
	assert_all_checks(e->mem);

	/* an owner that refuses: reported per page, contents untouched */
	o.refuse_isolate = 1;
	clean_slot(e->mem, &o, 256, &lo);
	hi = lo + 2 * MiB;
	memset(&rep, 0, sizeof(rep));
	rep.failures = fails;
	rep.failures_cap = 8;
	assert_rc(dmm_migrate_range(e->mem, lo, hi, &rep), -DMM_EBUSY);
	assert_true(rep.failed[DMM_MIGRATE_REFUSED] > 0);
	assert_true(rep.nr_failures > 0);
	assert_int_equal(fails[0].reason, DMM_MIGRATE_REFUSED);
	o.refuse_isolate = 0;
	o.refuse_migrate = 1;
	{
		unsigned before = o.putback;
		memset(&rep, 0, sizeof(rep));
		assert_rc(dmm_migrate_range(e->mem, lo, hi, &rep), -DMM_EBUSY);
		assert_true(rep.failed[DMM_MIGRATE_REFUSED] > 0);
		assert_true(o.putback > before); /* told to keep its page */
	}
	o.refuse_migrate = 0;
	for (unsigned i = 0; i < 256; i++)
		verify_slot(e->mem, o.slot[i], i);
	assert_all_checks(e->mem);

	/* an unmovable page and a long-term pin are reported as such */
	{
		dmm_pfn_t u, pinned;
		enum dmm_migrate_reason why;
		assert_ok(dmm_page_alloc(e->mem, 0, NULL, 0, &u));
		lo = dmm_pfn_to_phys(u) & ~(2 * MiB - 1);
		memset(&rep, 0, sizeof(rep));
		assert_rc(dmm_migrate_range(e->mem, lo, lo + 2 * MiB, &rep), -DMM_EBUSY);
		assert_true(rep.failed[DMM_MIGRATE_UNMOVABLE] > 0);
		assert_ok(dmm_page_free(e->mem, u, 0));

		unsigned k = clean_slot(e->mem, &o, 256, &lo);
		assert_ok(dmm_page_pin(e->mem, o.slot[k], DMM_PIN_LONGTERM, &pinned, &why));
		assert_int_equal(pinned, o.slot[k]); /* not in an area: pinned in place */
		memset(&rep, 0, sizeof(rep));
		assert_rc(dmm_migrate_range(e->mem, lo, lo + 2 * MiB, &rep), -DMM_EBUSY);
		assert_true(rep.failed[DMM_MIGRATE_PINNED] >= 1);
		assert_int_equal(o.slot[k], pinned); /* it did not move */
		/* freeing a pinned page is refused */
		assert_rc(dmm_page_free(e->mem, pinned, 0), -DMM_EBUSY);
		assert_ok(dmm_page_unpin(e->mem, pinned, DMM_PIN_LONGTERM));
		assert_rc(dmm_page_unpin(e->mem, pinned, DMM_PIN_LONGTERM), -DMM_ENOENT);
	}
	/* bad input changes nothing */
	assert_rc(dmm_migrate_range(e->mem, 4096, 4096, NULL), -DMM_EINVAL);
	assert_rc(dmm_migrate_range(e->mem, 100, 8192, NULL), -DMM_EINVAL);
	assert_rc(dmm_migrate_range(e->mem, 1 * GiB, 2 * GiB, NULL), -DMM_ERANGE);
	memset(&rep, 0, sizeof(rep));
	rep.failures_cap = 4; /* capacity without an array */
	assert_rc(dmm_migrate_range(e->mem, 0, 2 * MiB, &rep), -DMM_EINVAL);
	assert_rc(dmm_page_alloc_movable(e->mem, NULL, 0, &o.slot[300]), -DMM_EINVAL);
	assert_rc(dmm_page_alloc_movable(e->mem, &o.owner, DMM_GFP_DMA, &o.slot[300]), -DMM_EINVAL);
	assert_rc(dmm_page_pin(e->mem, o.slot[0], 0x80, &lo, NULL), -DMM_EINVAL);
	assert_rc(dmm_page_pin(e->mem, e->base + e->npfn + 100, 0, &lo, NULL), -DMM_ENOENT);

	for (unsigned i = 0; i < 256; i++)
		assert_ok(dmm_page_free(e->mem, o.slot[i], 0));
	assert_all_checks(e->mem);
	tu_env_destroy(e);
}

static void test_short_pin_retries(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	static struct test_owner o;
	struct dmm_migrate_report rep;
	dmm_pfn_t p;
	dmm_phys_t lo = 0;
	(void)state;

	small_machine(&m);
	m.nr_cma = 0;
	e = tu_env_create(&m, 1);
	owner_init(&o);
	for (unsigned i = 0; i < 64; i++)
		assert_ok(dmm_page_alloc_movable(e->mem, &o.owner, 0, &o.slot[i]));
	{
		unsigned k = clean_slot(e->mem, &o, 64, &lo);
		dmm_pfn_t t = o.slot[0];
		o.slot[0] = o.slot[k];
		o.slot[k] = t;
	}
	assert_ok(dmm_page_pin(e->mem, o.slot[0], 0, &p, NULL));
	assert_int_equal(p, o.slot[0]);
	memset(&rep, 0, sizeof(rep));
	assert_rc(dmm_migrate_range(e->mem, lo, lo + 2 * MiB, &rep), -DMM_EBUSY);
	assert_true(rep.retries > 0); /* a short pin is retried ... */
	assert_int_equal(rep.failed[DMM_MIGRATE_BUSY], 1); /* ... then reported busy */
	assert_ok(dmm_page_unpin(e->mem, p, 0));
	assert_ok(dmm_migrate_range(e->mem, lo, lo + 2 * MiB, &rep));
	assert_true(rep.moved >= 1);
	assert_true(o.slot[0] != p);
	for (unsigned i = 0; i < 64; i++)
		assert_ok(dmm_page_free(e->mem, o.slot[i], 0));
	assert_all_checks(e->mem);
	tu_env_destroy(e);
}

static void test_handles(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct dmm_handles *h;
	struct dmm_handles_stats st;
	static uint32_t hs[2000];
	dmm_pfn_t p;
	(void)state;

	small_machine(&m);
	m.cma_policy = DMM_CMA_POLICY_FIRST;
	e = tu_env_create(&m, 1);
	assert_rc(dmm_handles_create(e->mem, 0, &h), -DMM_EINVAL);
	assert_ok(dmm_handles_create(e->mem, 2000, &h));
	for (uint32_t i = 0; i < 2000; i++) {
		uint8_t *v;
		assert_ok(dmm_handle_alloc(h, 0, &hs[i]));
		v = dmm_handle_lock(h, hs[i]);
		assert_non_null(v);
		memset(v, (int)(i & 0xff), DMM_PAGE_SIZE);
		assert_ok(dmm_handle_unlock(h, hs[i]));
		assert_ok(dmm_handles_check(h));
	}
	/* policy "first": the owned movable pages went into the area */
	assert_ok(dmm_handle_pfn(h, hs[0], &p));
	assert_non_null(dmm_pfn_to_page(e->mem, p));
	assert_true(dmm_pfn_to_page(e->mem, p)->cma != 0);
	/* table full, bad handles, locked handles */
	{
		uint32_t x;
		assert_rc(dmm_handle_alloc(h, 0, &x), -DMM_ENOSPC);
		assert_rc(dmm_handle_free(h, 2000), -DMM_ENOENT);
		assert_null(dmm_handle_lock(h, 5000));
		assert_non_null(dmm_handle_lock(h, hs[3]));
		assert_rc(dmm_handle_free(h, hs[3]), -DMM_EBUSY);
		assert_ok(dmm_handle_unlock(h, hs[3]));
		assert_rc(dmm_handle_unlock(h, hs[3]), -DMM_ENOENT);
	}
	/* a locked handle is not migrated; the others move and keep their bytes */
	{
		struct dmm_migrate_report rep;
		dmm_pfn_t before, after;
		struct dmm_cma_info ci;
		assert_ok(dmm_cma_get_info(e->mem, 0, &ci));
		assert_non_null(dmm_handle_lock(h, hs[1]));
		assert_ok(dmm_handle_pfn(h, hs[1], &before));
		memset(&rep, 0, sizeof(rep));
		assert_rc(dmm_migrate_range(e->mem, dmm_pfn_to_phys(ci.base_pfn),
					    dmm_pfn_to_phys(ci.base_pfn + ci.nr_pages), &rep),
			  -DMM_EBUSY);
		assert_int_equal(rep.failed[DMM_MIGRATE_BUSY], 1);
		assert_ok(dmm_handle_pfn(h, hs[1], &after));
		assert_int_equal(before, after);
		assert_ok(dmm_handle_unlock(h, hs[1]));
		dmm_handles_get_stats(h, &st);
		assert_true(st.migrated > 0);
		assert_true(st.refused_locked > 0);
	}
	for (uint32_t i = 0; i < 2000; i++) {
		const uint8_t *v = dmm_handle_lock(h, hs[i]);
		assert_non_null(v);
		assert_int_equal(v[0], i & 0xff);
		assert_int_equal(v[DMM_PAGE_SIZE - 1], i & 0xff);
		assert_ok(dmm_handle_unlock(h, hs[i]));
	}
	assert_ok(dmm_handles_check(h));
	for (uint32_t i = 0; i < 2000; i += 2)
		assert_ok(dmm_handle_free(h, hs[i]));
	assert_rc(dmm_handle_free(h, hs[0]), -DMM_ENOENT);
	assert_ok(dmm_handles_check(h));
	dmm_handles_destroy(h);
	dmm_page_drain_pcp(e->mem);
	assert_all_checks(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), e->free0);
	tu_env_destroy(e);
}

/* Free pages of isolated pageblocks cannot be allocated, so they do not
 * lift a zone above its watermark: with the zone at its atomic reserve, a
 * migration out of a pageblock whose other pages are free (and isolated)
 * finds no target instead of taking the reserve's pages. */
static void test_isolated_free_pages_not_counted(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct dmm_handles *ht;
	struct dmm_migrate_report rep;
	struct dmm_zone_info zi;
	static dmm_pfn_t held[16384];
	size_t n = 0, kept = 0, outside = 300;
	uint32_t h;
	dmm_pfn_t x, p, pb;
	int rc;
	(void)state;
	tu_machine(&m, "iso-wmark");
	tu_add_ram(&m, 0, 64 * MiB);
	m.min_free_kbytes = 4096;
	e = tu_env_create(&m, 1);
	assert_ok(dmm_handles_create(e->mem, 16, &ht));
	assert_ok(dmm_handle_alloc(ht, 0, &h));
	assert_ok(dmm_handle_pfn(ht, h, &x));
	pb = x & ~(DMM_PAGEBLOCK_PAGES - 1);
	dmm_page_drain_pcp(e->mem);
	/* every page taken; then the rest of the handle's pageblock given back */
	while ((rc = dmm_page_alloc(e->mem, 0, NULL, DMM_GFP_NOWMARK | DMM_GFP_NOCACHE, &p)) == 0) {
		assert_true(n < sizeof(held) / sizeof(held[0]));
		held[n++] = p;
	}
	assert_rc(rc, -DMM_ENOMEM);
	for (size_t i = 0; i < n; i++) {
		if ((held[i] & ~(DMM_PAGEBLOCK_PAGES - 1)) == pb)
			assert_ok(dmm_page_free(e->mem, held[i], 0));
		else
			held[kept++] = held[i];
	}
	/* and fewer ordinary free pages outside it than the atomic reserve */
	while (outside--)
		assert_ok(dmm_page_free(e->mem, held[--kept], 0));
	dmm_page_drain_pcp(e->mem);
	assert_ok(dmm_zone_get_info(e->mem, 0, &zi));
	assert_true(zi.free - (n - kept - 300) < zi.wmark_min / 2);
	assert_true(zi.free > zi.wmark_min / 2 + 1);
	memset(&rep, 0, sizeof(rep));
	assert_rc(dmm_migrate_range(e->mem, dmm_pfn_to_phys(pb), dmm_pfn_to_phys(pb + DMM_PAGEBLOCK_PAGES),
				    &rep),
		  -DMM_EBUSY);
	assert_int_equal(rep.moved, 0);
	assert_int_equal(rep.failed[DMM_MIGRATE_NO_TARGET], 1);
	assert_ok(dmm_handle_pfn(ht, h, &p));
	assert_int_equal(p, x);
	assert_checks(e->mem);
	dmm_handles_destroy(ht);
	for (size_t i = 0; i < kept; i++)
		assert_ok(dmm_page_free(e->mem, held[i], 0));
	dmm_page_drain_pcp(e->mem);
	assert_checks(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), e->free0);
	tu_env_destroy(e);
}

/* Freeing a handle whose page is pinned is refused and changes nothing: the
 * handle still names its page, which is freed once unpinned. */
static void test_handle_free_pinned(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct dmm_handles *h;
	struct dmm_handles_stats st;
	uint32_t x, y;
	dmm_pfn_t p, q, pinned;
	(void)state;

	small_machine(&m);
	m.nr_cma = 0;
	e = tu_env_create(&m, 1);
	assert_ok(dmm_handles_create(e->mem, 4, &h));
	assert_ok(dmm_handle_alloc(h, 0, &x));
	assert_ok(dmm_handle_pfn(h, x, &p));
	for (unsigned lt = 0; lt <= 1; lt++) {
		unsigned f = lt ? DMM_PIN_LONGTERM : 0;
		assert_ok(dmm_page_pin(e->mem, p, f, &pinned, NULL));
		assert_int_equal(pinned, p);
		assert_rc(dmm_handle_free(h, x), -DMM_EBUSY);
		assert_ok(dmm_handle_pfn(h, x, &q)); /* still allocated */
		assert_int_equal(q, p);
		dmm_handles_get_stats(h, &st);
		assert_int_equal(st.in_use, 1);
		assert_ok(dmm_handles_check(h));
		assert_ok(dmm_page_unpin(e->mem, p, f));
	}
	/* the refused handle was not handed out again */
	assert_ok(dmm_handle_alloc(h, 0, &y));
	assert_true(y != x);
	assert_ok(dmm_handle_free(h, y));
	assert_ok(dmm_handle_free(h, x));
	assert_rc(dmm_handle_pfn(h, x, &q), -DMM_ENOENT);
	assert_ok(dmm_handles_check(h));
	dmm_handles_destroy(h);
	dmm_page_drain_pcp(e->mem);
	assert_all_checks(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), e->free0);
	tu_env_destroy(e);
}

/* ---- migrations that meet a handle half-way through its allocation --------- */

/* Platform hooks wrapped: the table's lock is the first lock initialised
 * after arming; a range migration runs just before that lock is taken for
 * the countdown-th time (as another thread's would). */
static struct {
	struct dmm_platform real;
	int arm_init;
	struct dmm_lock *table;
	int countdown;
	struct dmm_mem *mem;
	dmm_phys_t lo, hi;
	int rc, ran;
	struct dmm_migrate_report rep;
} hk;

static void hk_lock_init(void *ctx, struct dmm_lock *l)
{
	if (hk.arm_init) {
		hk.arm_init = 0;
		hk.table = l;
	}
	hk.real.lock_init(ctx, l);
}

static void hk_lock(void *ctx, struct dmm_lock *l)
{
	if (l == hk.table && hk.countdown > 0 && --hk.countdown == 0) {
		memset(&hk.rep, 0, sizeof(hk.rep));
		hk.rc = dmm_migrate_range(hk.mem, hk.lo, hk.hi, &hk.rep);
		hk.ran++;
	}
	hk.real.lock(ctx, l);
}

static void test_handle_alloc_meets_migration(void **state)
{
	struct dmm_machine m;
	struct dmm_hosted *hosted;
	struct dmm_platform p;
	struct dmm_mem *mem = NULL;
	struct dmm_handles *h;
	uint32_t x;
	dmm_pfn_t pfn;
	uint8_t *v;
	uint64_t free0;
	(void)state;

	memset(&hk, 0, sizeof(hk));
	tu_hosted_platform(&m, "handles-race", 1, &hosted, &p);
	hk.real = p;
	p.lock_init = hk_lock_init;
	p.lock = hk_lock;
	assert_ok(dmm_mem_create(&m, &p, &mem));
	dmm_page_drain_pcp(mem);
	free0 = dmm_mem_free_pages(mem);
	hk.mem = mem;
	hk.lo = 0;
	hk.hi = 64 * MiB;
	hk.arm_init = 1;
	assert_ok(dmm_handles_create(mem, 16, &h));
	assert_non_null(hk.table);

	/* between the page allocation and the entry naming it: the page is
	 * the table's but not yet any handle's, a passing state (busy), not a
	 * refusal */
	hk.countdown = 2;
	assert_ok(dmm_handle_alloc(h, 0, &x));
	assert_int_equal(hk.ran, 1);
	assert_int_equal(hk.rep.failed[DMM_MIGRATE_REFUSED], 0);
	assert_true(hk.rep.failed[DMM_MIGRATE_BUSY] >= 1);
	assert_ok(dmm_handles_check(h));
	v = dmm_handle_lock(h, x);
	assert_non_null(v);
	memset(v, 0xa5, DMM_PAGE_SIZE);
	assert_ok(dmm_handle_unlock(h, x));

	/* a migration just before the free takes the lock: the page moves
	 * with its bytes, and the free frees where it went */
	assert_ok(dmm_handle_pfn(h, x, &pfn));
	hk.countdown = 1;
	hk.lo = dmm_pfn_to_phys(pfn) & ~(dmm_phys_t)(2 * MiB - 1);
	hk.hi = hk.lo + 2 * MiB;
	assert_ok(dmm_handle_free(h, x));
	assert_int_equal(hk.ran, 2);
	assert_int_equal(hk.rep.failed[DMM_MIGRATE_REFUSED], 0);
	assert_int_equal(hk.rep.moved, 1);
	assert_ok(dmm_handles_check(h));

	dmm_handles_destroy(h);
	dmm_page_drain_pcp(mem);
	assert_checks(mem);
	assert_int_equal(dmm_mem_free_pages(mem), free0);
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(hosted);
}

/* A range that spans holes (pfns without RAM, sections without any) and
 * one that reaches to the top of the address space: the holes are not
 * pages, so they are neither failures nor scanned, and the walk is bounded
 * by the memory map, not by the argument. */
static void test_migrate_range_holes(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	static struct test_owner o;
	struct dmm_migrate_report rep;
	dmm_pfn_t in_ram = 0;
	(void)state;

	tu_machine_holes(&m); /* RAM [1 MiB, 40 MiB) and [4 GiB, 4 GiB + 24 MiB) */
	e = tu_env_create(&m, 1);
	owner_init(&o);
	/* one movable page at 36 MiB .. 40 MiB, to be moved out */
	for (unsigned i = 0; i < OWNER_SLOTS && !in_ram; i++) {
		assert_ok(dmm_page_alloc_movable(e->mem, &o.owner, 0, &o.slot[i]));
		fill_slot(e->mem, o.slot[i], i);
		if (o.slot[i] >= (36 * MiB >> DMM_PAGE_SHIFT) && o.slot[i] < (40 * MiB >> DMM_PAGE_SHIFT))
			in_ram = o.slot[i];
	}
	memset(&rep, 0, sizeof(rep));
	assert_ok(dmm_migrate_range(e->mem, 36 * MiB, 4 * GiB + 2 * MiB, &rep));
	assert_int_equal(rep.failed[DMM_MIGRATE_UNMOVABLE], 0);
	assert_true(rep.scanned <= (4 * MiB + 2 * MiB) / DMM_PAGE_SIZE);
	if (in_ram)
		assert_true(rep.moved >= 1);
	/* to the top of the physical address space: done in one walk of RAM */
	memset(&rep, 0, sizeof(rep));
	assert_rc(dmm_migrate_range(e->mem, 36 * MiB, DMM_PHYS_MAX & ~(dmm_phys_t)(DMM_PAGE_SIZE - 1), &rep),
		  -DMM_EBUSY); /* the metadata at the top of RAM is reserved */
	assert_true(rep.scanned <= e->npfn);
	assert_true(rep.failed[DMM_MIGRATE_UNMOVABLE] <= e->info.reserved_pages);
	for (unsigned i = 0; i < OWNER_SLOTS && o.slot[i]; i++) {
		verify_slot(e->mem, o.slot[i], i);
		assert_ok(dmm_page_free(e->mem, o.slot[i], 0));
	}
	assert_all_checks(e->mem);
	tu_env_destroy(e);
}

/* Destroying a table while one of its pages is pinned (or a handle locked)
 * is refused and changes nothing; once unpinned and unlocked it goes. */
static void test_handles_destroy_busy(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct dmm_handles *h;
	uint32_t x, y;
	dmm_pfn_t p, q, pinned;
	uint8_t *v;
	(void)state;

	small_machine(&m);
	m.cma_policy = DMM_CMA_POLICY_FIRST;
	e = tu_env_create(&m, 1);
	assert_ok(dmm_handles_create(e->mem, 8, &h));
	assert_ok(dmm_handle_alloc(h, 0, &x));
	assert_ok(dmm_handle_alloc(h, 0, &y));
	assert_ok(dmm_handle_pfn(h, x, &p));
	v = dmm_handle_lock(h, x);
	assert_non_null(v);
	memset(v, 0x3c, DMM_PAGE_SIZE);
	assert_ok(dmm_handle_unlock(h, x));
	assert_ok(dmm_page_pin(e->mem, p, 0, &pinned, NULL));
	assert_rc(dmm_handles_destroy(h), -DMM_EBUSY);
	assert_ok(dmm_handle_pfn(h, x, &q)); /* the table and its handles are still there */
	assert_int_equal(q, p);
	assert_ok(dmm_handle_pfn(h, y, &q));
	assert_ok(dmm_handles_check(h));
	assert_ok(dmm_page_unpin(e->mem, p, 0));
	/* a locked handle: the same */
	assert_non_null(dmm_handle_lock(h, y));
	assert_rc(dmm_handles_destroy(h), -DMM_EBUSY);
	assert_ok(dmm_handle_unlock(h, y));
	/* the page still moves with its bytes: its owner is alive */
	{
		struct dmm_cma_info ci;
		struct dmm_migrate_report rep;
		assert_ok(dmm_cma_get_info(e->mem, 0, &ci));
		memset(&rep, 0, sizeof(rep));
		assert_ok(dmm_migrate_range(e->mem, dmm_pfn_to_phys(ci.base_pfn),
					    dmm_pfn_to_phys(ci.base_pfn + ci.nr_pages), &rep));
		v = dmm_handle_lock(h, x);
		assert_non_null(v);
		assert_int_equal(v[0], 0x3c);
		assert_int_equal(v[DMM_PAGE_SIZE - 1], 0x3c);
		assert_ok(dmm_handle_unlock(h, x));
	}
	assert_ok(dmm_handles_destroy(h));
	dmm_page_drain_pcp(e->mem);
	assert_all_checks(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), e->free0);
	tu_env_destroy(e);
}

/* A thread that reads a pin counter until told to stop and counts the
 * reads that saw 0 (what a migration's pin check would have seen). */
struct pin_watch {
	const uint16_t *ctr;
	int stop;
	uint64_t reads, zeros;
};

static void *pin_watch_main(void *arg)
{
	struct pin_watch *w = arg;

	while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
		if (__atomic_load_n(w->ctr, __ATOMIC_SEQ_CST) == 0)
			w->zeros++;
		__atomic_store_n(&w->reads, w->reads + 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

/* A page pinned to the counter's maximum: the next pin is refused with
 * -DMM_ENOSPC and the count never passes through 0 (a migration checking
 * the pins at that moment would take a pinned page). */
static void test_pin_count_limit(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	(void)state;

	small_machine(&m);
	m.nr_cma = 0;
	e = tu_env_create(&m, 1);
	for (unsigned f = 0; f <= DMM_PIN_LONGTERM; f++) {
		struct dmm_page *pg;
		struct pin_watch w;
		pthread_t t;
		dmm_pfn_t pfn, pinned;
		const uint16_t *ctr;

		assert_ok(dmm_page_alloc(e->mem, 0, NULL, 0, &pfn));
		pg = dmm_pfn_to_page(e->mem, pfn);
		ctr = f ? &pg->lt_pins : &pg->pins;
		for (unsigned i = 0; i < UINT16_MAX; i++)
			assert_ok(dmm_page_pin(e->mem, pfn, f, &pinned, NULL));
		assert_int_equal(*ctr, UINT16_MAX);

		memset(&w, 0, sizeof(w));
		w.ctr = ctr;
		assert_int_equal(pthread_create(&t, NULL, pin_watch_main, &w), 0);
		while (!__atomic_load_n(&w.reads, __ATOMIC_RELAXED))
			;
		for (unsigned i = 0; i < 200000; i++)
			assert_rc(dmm_page_pin(e->mem, pfn, f, &pinned, NULL), -DMM_ENOSPC);
		__atomic_store_n(&w.stop, 1, __ATOMIC_RELEASE);
		pthread_join(t, NULL);
		assert_int_equal(w.zeros, 0);
		assert_int_equal(*ctr, UINT16_MAX);
		assert_int_equal(f ? pg->pins : pg->lt_pins, 0);

		assert_rc(dmm_page_free(e->mem, pfn, 0), -DMM_EBUSY);
		for (unsigned i = 0; i < UINT16_MAX; i++)
			assert_ok(dmm_page_unpin(e->mem, pfn, f));
		assert_rc(dmm_page_unpin(e->mem, pfn, f), -DMM_ENOENT);
		assert_ok(dmm_page_free(e->mem, pfn, 0));
	}
	assert_all_checks(e->mem);
	tu_env_destroy(e);
}

/* ---- a migration meets a free that a pin refuses ------------------------------- */

/*
 * The owner's freeing thread in the race below: frees the page over and
 * over. Each free claims the page (FREEING), finds the pin and puts it
 * back (ALLOC): the page is FREEING for a moment at a time.
 */
struct refused_frees {
	struct dmm_mem *mem;
	dmm_pfn_t pfn;
	pthread_t t;
	int stop;
	uint64_t other;
	int other_rc;
};

static void *refused_frees_main(void *arg)
{
	struct refused_frees *f = arg;

	while (!__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE)) {
		int rc = dmm_page_free(f->mem, f->pfn, 0);
		if (rc != -DMM_EBUSY) {
			f->other++;
			f->other_rc = rc;
		}
	}
	return NULL;
}

/* The owner: isolating its page, it is in the middle of freeing it, so it
 * refuses (-DMM_EAGAIN); a pinner has counted itself on the page and not
 * yet looked at the migration's claim (it would then back off), so each
 * of the owner's frees is refused for that pin. */
struct freeing_owner {
	struct dmm_movable_owner owner;
	struct refused_frees f;
	int started;
};

static int fo_isolate(void *ctx, struct dmm_mem *mem, dmm_pfn_t pfn)
{
	struct freeing_owner *o = ctx;
	struct dmm_page *pg = dmm_pfn_to_page(mem, pfn);

	if (pfn != o->f.pfn || o->started)
		return -DMM_EAGAIN;
	o->started = 1;
	__atomic_add_fetch(&pg->pins, 1, __ATOMIC_SEQ_CST); /* the pinner, half-way */
	assert_int_equal(pthread_create(&o->f.t, NULL, refused_frees_main, &o->f), 0);
	/* return while one of the frees is deciding (FREEING) */
	while (__atomic_load_n(&pg->state, __ATOMIC_SEQ_CST) != DMM_PAGE_FREEING)
		;
	return -DMM_EAGAIN;
}

static int fo_migrate(void *ctx, struct dmm_mem *mem, dmm_pfn_t old_pfn, dmm_pfn_t new_pfn)
{
	(void)ctx;
	(void)mem;
	(void)old_pfn;
	(void)new_pfn;
	return -DMM_EPERM;
}

static void fo_putback(void *ctx, struct dmm_mem *mem, dmm_pfn_t pfn)
{
	(void)ctx;
	(void)mem;
	(void)pfn;
}

static const struct dmm_movable_ops fo_ops = { fo_isolate, fo_migrate, fo_putback };

/*
 * A migration claims a page (MIGRATING), its owner refuses to isolate it,
 * and meanwhile a free of the page claims it (FREEING) and is refused for
 * a pin. The migration must not take the passing FREEING for the page
 * having been given back (which clears the claim): it drops its claim,
 * and the page, still allocated, can be pinned and migrated later.
 * Real threads: the owner returns from isolate while it sees one of the
 * frees FREEING, which lasts a few instructions, so a round may miss it.
 */
static void test_migration_meets_refused_free(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	static struct freeing_owner o;
	unsigned stuck = 0, rounds = 400;
	int stuck_rc = 0;
	(void)state;

	small_machine(&m);
	m.nr_cma = 0;
	e = tu_env_create(&m, 2);
	for (unsigned i = 0; i < rounds && !stuck; i++) {
		struct dmm_page *pg;
		dmm_pfn_t pfn, pinned;
		dmm_phys_t pa;
		int rc;

		memset(&o, 0, sizeof(o));
		o.owner.ops = &fo_ops;
		o.owner.ctx = &o;
		assert_ok(dmm_page_alloc_movable(e->mem, &o.owner, 0, &pfn));
		pg = dmm_pfn_to_page(e->mem, pfn);
		o.f.mem = e->mem;
		o.f.pfn = pfn;
		pa = dmm_pfn_to_phys(pfn);
		assert_rc(dmm_migrate_range(e->mem, pa, pa + DMM_PAGE_SIZE, NULL), -DMM_EBUSY);
		assert_int_equal(o.started, 1);
		__atomic_store_n(&o.f.stop, 1, __ATOMIC_RELEASE);
		assert_int_equal(pthread_join(o.f.t, NULL), 0);
		if (o.f.other)
			fail_msg("round %u: a free of a pinned page returned %s", i, dmm_errname(o.f.other_rc));
		__atomic_sub_fetch(&pg->pins, 1, __ATOMIC_SEQ_CST); /* the pinner backs off */
		assert_int_equal(pg->state, DMM_PAGE_ALLOC);
		rc = dmm_page_pin(e->mem, pfn, 0, &pinned, NULL);
		if (__atomic_load_n(&pg->flags, __ATOMIC_SEQ_CST) & DMM_PGF_MIGRATING) {
			stuck = i + 1;
			stuck_rc = rc;
		} else {
			assert_ok(rc);
		}
		if (!rc)
			assert_ok(dmm_page_unpin(e->mem, pfn, 0));
		assert_ok(dmm_page_free(e->mem, pfn, 0));
	}
	if (stuck)
		fail_msg("round %u: the migration left its claim on a page a refused free had "
			 "passed through (a pin now returns %s)", stuck, dmm_errname(stuck_rc));
	dmm_page_drain_pcp(e->mem);
	assert_all_checks(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), e->free0);
	tu_env_destroy(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_movable_alloc_and_migrate_range),
		cmocka_unit_test(test_short_pin_retries),
		cmocka_unit_test(test_pin_count_limit),
		cmocka_unit_test(test_handles),
		cmocka_unit_test(test_handle_free_pinned),
		cmocka_unit_test(test_handle_alloc_meets_migration),
		cmocka_unit_test(test_migrate_range_holes),
		cmocka_unit_test(test_handles_destroy_busy),
		cmocka_unit_test(test_isolated_free_pages_not_counted),
		cmocka_unit_test(test_migration_meets_refused_free),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: MIT */
/*
 * Low-zone policy. With "fallback", ordinary unmovable allocations spill
 * into the 16 MiB DMA zone once DMA32 runs low and leave an ISA-style device
 * without a 1 MiB buffer; with "reserved" the DMA zone stays out of ordinary
 * fallback and the same request succeeds.
 */
#include "tu.h"

#define NBLK 40000

struct filled {
	dmm_pfn_t pfn[NBLK];
	size_t n;
	int last_rc;
};

static void small_pc(struct dmm_machine *m, enum dmm_lowmem_policy policy)
{
	/* a PC in miniature: the 640 KiB hole, a 16 MiB ISA DMA zone, DMA32 above */
	tu_machine(m, "small-pc");
	tu_add_ram(m, 0, 0x9f000);
	tu_add_ram(m, 1 * MiB, 95 * MiB);
	tu_add_reserved(m, 0, 4096);
	m->dma_limit = 16 * MiB;
	m->lowmem_policy = policy;
}

/* Unmovable order-0 allocations without any constraint until one fails. */
static void fill_unmovable(struct tu_env *e, struct filled *f)
{
	f->n = 0;
	for (;;) {
		int rc = dmm_page_alloc(e->mem, 0, NULL, 0, &f->pfn[f->n]);
		if (rc) {
			f->last_rc = rc;
			break;
		}
		tu_own(e, f->pfn[f->n], 1);
		f->n++;
		assert_true(f->n < NBLK);
		if (f->n % 1024 == 0)
			assert_checks(e->mem);
	}
	assert_checks(e->mem);
}

static void release(struct tu_env *e, struct filled *f)
{
	for (size_t i = 0; i < f->n; i++) {
		assert_ok(dmm_page_free(e->mem, f->pfn[i], 0));
		tu_disown(e, f->pfn[i], 1);
	}
	dmm_page_drain_pcp(e->mem);
	assert_checks(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), e->free0);
}

static uint64_t dma_zone_free(struct tu_env *e, struct dmm_zone_info *zi)
{
	assert_ok(dmm_zone_get_info(e->mem, (unsigned)dmm_zone_index(e->mem, DMM_ZONE_DMA), zi));
	return zi->free + zi->pcp;
}

static void test_fallback_starves_isa(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	static struct filled f;
	struct dmm_zone_info dma;
	const struct dmm_constraint isa = dmm_constraint_below(16 * MiB);
	dmm_pfn_t pfn;
	(void)state;
	small_pc(&m, DMM_LOWMEM_FALLBACK);
	e = tu_env_create(&m, 1);
	assert_int_equal(dmm_zone_index(e->mem, DMM_ZONE_DMA), 0);
	uint64_t dma0 = dma_zone_free(e, &dma);
	assert_true(dma0 > 3800);

	/* before: the 1 MiB ISA buffer is there */
	assert_ok(dmm_alloc_range(e->mem, &isa, 256, 0, &pfn));
	assert_ok(dmm_free_range(e->mem, pfn, 256));

	fill_unmovable(e, &f);
	assert_true(f.last_rc == -DMM_EWMARK || f.last_rc == -DMM_ENOMEM);
	/* the DMA zone was used by ordinary allocations... */
	uint64_t left = dma_zone_free(e, &dma);
	size_t in_dma = 0;
	for (size_t i = 0; i < f.n; i++)
		in_dma += dmm_pfn_to_phys(f.pfn[i]) < 16 * MiB;
	assert_true(in_dma > dma0 / 2);
	assert_true(left < 256);
	/* ...so the device's 1 MiB below 16 MiB is gone, even ignoring watermarks */
	{
		int rc = dmm_alloc_range(e->mem, &isa, 256, 0, &pfn);
		assert_true(rc == -DMM_ENOMEM || rc == -DMM_EWMARK);
		assert_rc(dmm_alloc_range(e->mem, &isa, 256, DMM_GFP_NOWMARK, &pfn), -DMM_ENOMEM);
	}
	assert_checks(e->mem);
	release(e, &f);
	tu_env_destroy(e);
}

static void test_reserved_keeps_isa(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	static struct filled f;
	struct dmm_zone_info dma;
	const struct dmm_constraint isa = dmm_constraint_below(16 * MiB);
	dmm_pfn_t pfn, p2;
	uint64_t policy_fails = 0;
	(void)state;
	small_pc(&m, DMM_LOWMEM_RESERVED);
	e = tu_env_create(&m, 1);
	uint64_t dma0 = dma_zone_free(e, &dma);

	fill_unmovable(e, &f);
	assert_true(f.last_rc == -DMM_EWMARK || f.last_rc == -DMM_ENOMEM);
	/* no ordinary allocation landed below 16 MiB */
	for (size_t i = 0; i < f.n; i++)
		assert_true(dmm_pfn_to_phys(f.pfn[i]) >= 16 * MiB);
	assert_int_equal(dma_zone_free(e, &dma), dma0);
	for (unsigned z = 0; z < dmm_mem_nr_zones(e->mem); z++) {
		struct dmm_zone_info zi;
		assert_ok(dmm_zone_get_info(e->mem, z, &zi));
		policy_fails += zi.stats.fail[DMM_FAIL_LOWMEM_POLICY];
	}
	assert_true(policy_fails >= 1);

	/* the device's 1 MiB below 16 MiB is still there, ordinary flags */
	assert_ok(dmm_alloc_range(e->mem, &isa, 256, 0, &pfn));
	assert_true(dmm_constraint_ok(&isa, dmm_pfn_to_phys(pfn), 1 * MiB));
	/* explicit low constraints (the shorthand, a page allocation) are served */
	assert_ok(dmm_page_alloc(e->mem, 2, NULL, DMM_GFP_DMA, &p2));
	assert_true(dmm_pfn_to_phys(p2 + 4) <= 16 * MiB);
	assert_ok(dmm_page_free(e->mem, p2, 2));
	assert_ok(dmm_page_alloc(e->mem, 0, &isa, 0, &p2));
	assert_true(dmm_pfn_to_phys(p2) < 16 * MiB);
	assert_ok(dmm_page_free(e->mem, p2, 0));
	/* a constraint reaching above the low zone does not get into it */
	{
		const struct dmm_constraint below32 = dmm_constraint_below(32 * MiB);
		int rc = dmm_page_alloc(e->mem, 0, &below32, 0, &p2);
		if (rc == 0) {
			assert_true(dmm_pfn_to_phys(p2) >= 16 * MiB);
			assert_ok(dmm_page_free(e->mem, p2, 0));
		} else {
			assert_true(rc == -DMM_EWMARK || rc == -DMM_ENOMEM);
		}
	}
	/* the same for a range request reaching above the low zone */
	{
		const struct dmm_constraint below32 = dmm_constraint_below(32 * MiB);
		int rc = dmm_alloc_range(e->mem, &below32, 4, 0, &p2);
		if (rc == 0) {
			assert_true(dmm_pfn_to_phys(p2) >= 16 * MiB);
			assert_ok(dmm_free_range(e->mem, p2, 4));
		} else {
			assert_true(rc == -DMM_EWMARK || rc == -DMM_ENOMEM);
		}
	}
	assert_ok(dmm_free_range(e->mem, pfn, 256));
	assert_checks(e->mem);
	/* the low zone still has everything but the ranges it served */
	assert_int_equal(dma_zone_free(e, &dma), dma0);
	release(e, &f);
	tu_env_destroy(e);
}

static uint64_t fails(struct tu_env *e, enum dmm_fail_reason r)
{
	uint64_t n = 0;
	for (unsigned z = 0; z < dmm_mem_nr_zones(e->mem); z++) {
		struct dmm_zone_info zi;
		assert_ok(dmm_zone_get_info(e->mem, z, &zi));
		n += zi.stats.fail[r];
	}
	return n;
}

/* A failure is put down to the reserved low zone only when that zone lies
 * in the request's window: a request above it would not have been served
 * there under any policy. */
static void test_policy_failure_only_when_low_zone_in_window(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	const struct dmm_constraint high = { 4 * GiB, 5 * GiB, 0, 0, 0, 0 };
	const struct dmm_constraint below32 = dmm_constraint_below(64 * MiB);
	dmm_pfn_t p;
	uint64_t nomem, policy;
	(void)state;
	small_pc(&m, DMM_LOWMEM_RESERVED);
	tu_add_ram(&m, 4 * GiB, 64 * MiB);
	e = tu_env_create(&m, 1);
	nomem = fails(e, DMM_FAIL_NOMEM);
	policy = fails(e, DMM_FAIL_LOWMEM_POLICY);
	/* more than the high window holds: no fit, nothing to do with the low zone */
	assert_rc(dmm_alloc_range(e->mem, &high, 64 * 256, 0, &p), -DMM_ENOMEM);
	assert_int_equal(fails(e, DMM_FAIL_NOMEM), nomem + 1);
	assert_int_equal(fails(e, DMM_FAIL_LOWMEM_POLICY), policy);
	assert_rc(dmm_page_alloc(e->mem, DMM_MAX_ORDER, &high, DMM_GFP_NOWMARK, &p), 0);
	assert_ok(dmm_page_free(e->mem, p, DMM_MAX_ORDER));
	/* a window reaching into the low zone that the policy kept out: counted */
	assert_rc(dmm_alloc_range(e->mem, &below32, 56 * 256, 0, &p), -DMM_ENOMEM);
	assert_int_equal(fails(e, DMM_FAIL_NOMEM), nomem + 2);
	assert_int_equal(fails(e, DMM_FAIL_LOWMEM_POLICY), policy + 1);
	dmm_page_drain_pcp(e->mem);
	assert_checks(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), e->free0);
	tu_env_destroy(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fallback_starves_isa),
		cmocka_unit_test(test_reserved_keeps_isa),
		cmocka_unit_test(test_policy_failure_only_when_low_zone_in_window),
	};
	return cmocka_run_group_tests_name("lowmem_policy", tests, NULL, NULL);
}

/* SPDX-License-Identifier: MIT */
/*
 * IO page tables: 4 KiB pages, 2 MiB and 1 GiB blocks where aligned,
 * permissions, FIRST/LAST marks, a second map over a mapping refused with
 * nothing changed, partial unmaps splitting blocks, bad arguments, and the
 * table walk check after every step.
 */
#include <stdbool.h>

#include "tu_dma.h"

#include <dmamem/iommu.h>

#define PG 4096ull

static void test_pages_and_blocks(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_iopt *pt;
	struct dmm_iopt_stats st;
	struct dmm_constraint c = DMM_CONSTRAINT_ANY;
	dmm_pfn_t big, small;
	dmm_phys_t pa, got;
	unsigned prot, level;
	uint64_t pte;

	(void)state;
	assert_ok(dmm_iopt_create(e->mem, &pt));
	assert_true(dmm_iopt_root(pt) != 0);
	/* 1 GiB of RAM aligned to 1 GiB, and a few pages */
	c.align = 1ull << 30;
	assert_ok(dmm_alloc_range(e->mem, &c, (1ull << 30) / PG, 0, &big));
	assert_ok(dmm_page_alloc(e->mem, 2, NULL, 0, &small));
	pa = dmm_pfn_to_phys(big);

	/* 1 GiB + 2 MiB + 3 pages: one 1 GiB block, one 2 MiB block, 3 pages */
	assert_ok(dmm_iopt_map(pt, 1ull << 32, pa, 1ull << 30, DMM_IOMMU_READ, DMM_IOPTE_FIRST | DMM_IOPTE_LAST));
	assert_ok(dmm_iopt_map(pt, (1ull << 32) + (1ull << 30), pa + (2ull << 20), 2ull << 20,
			       DMM_IOMMU_READ | DMM_IOMMU_WRITE, 0));
	assert_ok(dmm_iopt_map(pt, 0x10000, dmm_pfn_to_phys(small), 3 * PG, DMM_IOMMU_WRITE,
			       DMM_IOPTE_FIRST | DMM_IOPTE_LAST));
	dmm_iopt_get_stats(pt, &st);
	assert_int_equal(st.blocks_1g, 1);
	assert_int_equal(st.blocks_2m, 1);
	assert_int_equal(st.pages_4k, 3);
	assert_ok(dmm_iopt_check(pt));

	assert_ok(dmm_iopt_lookup(pt, (1ull << 32) + 12345678, &got, &prot, &pte, &level));
	assert_int_equal(got, pa + 12345678);
	assert_int_equal(prot, DMM_IOMMU_READ);
	assert_int_equal(level, 1);
	assert_true(pte & DMM_IOPTE_FIRST);
	assert_true(pte & DMM_IOPTE_LAST);
	assert_ok(dmm_iopt_lookup(pt, (1ull << 32) + (1ull << 30) + 4097, &got, &prot, NULL, &level));
	assert_int_equal(got, pa + (2ull << 20) + 4097);
	assert_int_equal(level, 2);
	assert_int_equal(prot, DMM_IOMMU_READ | DMM_IOMMU_WRITE);
	assert_ok(dmm_iopt_lookup(pt, 0x10000 + 2 * PG + 5, &got, &prot, &pte, &level));
	assert_int_equal(got, dmm_pfn_to_phys(small) + 2 * PG + 5);
	assert_int_equal(level, 3);
	assert_true(pte & DMM_IOPTE_LAST);
	assert_false(pte & DMM_IOPTE_FIRST);
	assert_rc(dmm_iopt_lookup(pt, 0x10000 + 3 * PG, &got, NULL, NULL, NULL), -DMM_ENOENT);

	/* mapping over something mapped: refused, nothing changed */
	assert_rc(dmm_iopt_map(pt, 0xe000, dmm_pfn_to_phys(small), 4 * PG, DMM_IOMMU_READ, 0), -DMM_EEXIST);
	assert_rc(dmm_iopt_lookup(pt, 0xe000, &got, NULL, NULL, NULL), -DMM_ENOENT);
	assert_rc(dmm_iopt_map(pt, (1ull << 32) + (8ull << 20), pa, 2ull << 20, DMM_IOMMU_READ, 0), -DMM_EEXIST);
	dmm_iopt_get_stats(pt, &st);
	assert_int_equal(st.pages_4k, 3);
	assert_ok(dmm_iopt_check(pt));

	/* bad arguments */
	assert_rc(dmm_iopt_map(pt, 0x20001, pa, PG, DMM_IOMMU_READ, 0), -DMM_EINVAL);
	assert_rc(dmm_iopt_map(pt, 0x20000, pa, PG, 0, 0), -DMM_EINVAL);
	assert_rc(dmm_iopt_map(pt, 1ull << 48, pa, PG, DMM_IOMMU_READ, 0), -DMM_EINVAL);
	assert_rc(dmm_iopt_map(pt, 0x20000, 1ull << 50, PG, DMM_IOMMU_READ, 0), -DMM_EINVAL); /* not RAM */
	assert_rc(dmm_iopt_map(pt, 0x20000, pa, PG, DMM_IOMMU_READ, 1ull << 9), -DMM_EINVAL);
	assert_rc((int)dmm_iopt_unmap(pt, 0x20001, PG), -DMM_EINVAL);

	/* a partial unmap splits the 1 GiB block, then a 2 MiB one */
	assert_int_equal(dmm_iopt_unmap(pt, (1ull << 32) + (4ull << 20) + PG, PG), (int64_t)PG);
	dmm_iopt_get_stats(pt, &st);
	assert_int_equal(st.blocks_1g, 0);
	assert_int_equal(st.blocks_2m, 512 - 1 + 1); /* 511 of the split + the other block */
	assert_int_equal(st.pages_4k, 3 + 511);
	assert_int_equal(st.splits, 2);
	assert_ok(dmm_iopt_check(pt));
	assert_rc(dmm_iopt_lookup(pt, (1ull << 32) + (4ull << 20) + PG, &got, NULL, NULL, NULL), -DMM_ENOENT);
	assert_ok(dmm_iopt_lookup(pt, (1ull << 32) + (4ull << 20) + 2 * PG + 7, &got, NULL, NULL, &level));
	assert_int_equal(got, pa + (4ull << 20) + 2 * PG + 7);
	assert_int_equal(level, 3);
	assert_ok(dmm_iopt_lookup(pt, (1ull << 32) + (700ull << 20), &got, NULL, &pte, &level));
	assert_int_equal(got, pa + (700ull << 20));
	assert_int_equal(level, 2);
	assert_false(pte & (DMM_IOPTE_FIRST | DMM_IOPTE_LAST));

	/* unmapping everything gives back what was mapped (the hole excepted) */
	assert_int_equal(dmm_iopt_unmap(pt, 1ull << 32, (1ull << 30) + (2ull << 20)),
			 (int64_t)((1ull << 30) + (2ull << 20) - PG));
	assert_int_equal(dmm_iopt_unmap(pt, 0x10000, 3 * PG), (int64_t)(3 * PG));
	dmm_iopt_get_stats(pt, &st);
	assert_int_equal(st.pages_4k + st.blocks_2m + st.blocks_1g, 0);
	assert_ok(dmm_iopt_check(pt));
	/* the same IOVAs can be mapped again: a 2 MiB block where the entry is
	 * empty, pages where a table was left by the split (tables are kept) */
	assert_ok(dmm_iopt_map(pt, 1ull << 32, pa, 2ull << 20, DMM_IOMMU_READ, 0));
	assert_ok(dmm_iopt_map(pt, (1ull << 32) + (4ull << 20), pa + (4ull << 20), 2ull << 20, DMM_IOMMU_READ, 0));
	dmm_iopt_get_stats(pt, &st);
	assert_int_equal(st.blocks_2m, 1);
	assert_int_equal(st.pages_4k, 512);
	assert_ok(dmm_iopt_check(pt));

	dmm_iopt_destroy(pt);
	assert_ok(dmm_free_range(e->mem, big, (1ull << 30) / PG));
	assert_ok(dmm_page_free(e->mem, small, 2));
	assert_checks(e->mem);
	tu_env_destroy(e);
}

/* Randomized: pages mapped and unmapped in many places, compared with a
 * reference, the walk check after every step. */
static void test_random(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_iopt *pt;
	enum { N = 512 };
	static dmm_phys_t ref[N];
	dmm_pfn_t pool;
	uint64_t s = 7;

	(void)state;
	assert_ok(dmm_iopt_create(e->mem, &pt));
	assert_ok(dmm_page_alloc(e->mem, 9, NULL, 0, &pool));
	memset(ref, 0, sizeof(ref));
	for (int k = 0; k < 3000; k++) {
		unsigned i = (unsigned)tu_rand_below(&s, N), n = 1 + (unsigned)tu_rand_below(&s, 8);
		/* IOVA page i of a sparse space: 8 regions 1 GiB apart */
		dmm_dma_addr_t iova = ((dmm_dma_addr_t)(i / 64) << 30) + (i % 64) * PG;
		if (i % 64 + n > 64)
			n = 64 - i % 64;
		if (tu_rand_below(&s, 2)) {
			bool free = true;
			for (unsigned j = 0; j < n; j++)
				free = free && !ref[i + j];
			dmm_phys_t pa = dmm_pfn_to_phys(pool) + tu_rand_below(&s, 512 - n) * PG;
			int rc = dmm_iopt_map(pt, iova, pa, n * PG, DMM_IOMMU_READ, 0);
			assert_rc(rc, free ? 0 : -DMM_EEXIST);
			for (unsigned j = 0; free && j < n; j++)
				ref[i + j] = pa + j * PG;
		} else {
			int64_t want = 0;
			for (unsigned j = 0; j < n; j++)
				if (ref[i + j]) {
					want += (int64_t)PG;
					ref[i + j] = 0;
				}
			assert_int_equal(dmm_iopt_unmap(pt, iova, n * PG), want);
		}
		for (unsigned j = 0; j < n; j++) {
			dmm_phys_t got;
			int rc = dmm_iopt_lookup(pt, iova + j * PG, &got, NULL, NULL, NULL);
			if (ref[i + j]) {
				assert_ok(rc);
				assert_int_equal(got, ref[i + j]);
			} else {
				assert_rc(rc, -DMM_ENOENT);
			}
		}
		assert_ok(dmm_iopt_check(pt));
	}
	dmm_iopt_destroy(pt);
	assert_ok(dmm_page_free(e->mem, pool, 9));
	assert_checks(e->mem);
	tu_env_destroy(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pages_and_blocks),
		cmocka_unit_test(test_random),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

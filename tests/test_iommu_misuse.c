/* SPDX-License-Identifier: MIT */
/*
 * Misuse behind an IOMMU, and what DMA debug says about it: an unmap of an
 * address outside the domain (whose page-table index bits alias a live
 * mapping) is refused and touches nothing; a streaming unmap of a coherent
 * buffer is refused, and the buffer is still freed normally; debug reports
 * a double or wrong-length scatterlist unmap the IOMMU refuses, keeps its
 * entry when the IOMMU refuses a wrong-size unmap (so the later correct
 * unmap is not called a double unmap, and a mapping never unmapped is a
 * leak at removal), and accepts the free of a coherent buffer built page
 * by page. Also the IOVA allocator (ENOSPC only when no aligned fit
 * exists; low32_fallbacks counts only requests served above 4 GiB), the
 * scatterlist page count with a segment boundary, and dmm_iopt_map of a
 * physical range running through a hole.
 */
#include "tu_dma.h"

#include <dmamem/dma_debug.h>
#include <dmamem/iommu.h>

#define PG 4096ull

static struct tu_env *env64(void)
{
	struct dmm_machine m;

	tu_machine(&m, "misuse");
	tu_add_ram(&m, 0, 64 * MiB);
	return tu_env_create(&m, 2);
}

static struct dmm_device *iommu_dev(struct tu_env *e, const char *name, unsigned bits, uint64_t boundary)
{
	struct dmm_device_desc d = tu_desc(name, bits, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;

	d.iommu = DMM_IOMMU_DMA;
	d.limits.boundary = boundary;
	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	return dev;
}

static uint64_t fail_unmaps(struct dmm_device *dev)
{
	struct dmm_dma_stats s;

	dmm_device_get_stats(dev, &s);
	return s.fail_unmap;
}

/* dma + 2^48 indexes the same leaf as dma: refused, the mapping intact */
static void test_unmap_outside_domain(void **state)
{
	struct tu_env *e = env64();
	struct dmm_device *dev = iommu_dev(e, "nic", 64, 0);
	struct dmm_iommu_stats is;
	dmm_dma_addr_t dma;
	dmm_phys_t pa;
	dmm_pfn_t pfn;

	(void)state;
	assert_ok(dmm_page_alloc(e->mem, 0, NULL, 0, &pfn));
	dma = dmm_dma_map_page(dev, pfn, 0, PG, DMM_DMA_BIDIRECTIONAL);
	assert_ok(dmm_dma_mapping_error(dev, dma));
	dmm_dma_unmap_phys(dev, dma + (1ull << 48), PG, DMM_DMA_BIDIRECTIONAL);
	assert_int_equal(fail_unmaps(dev), 1);
	assert_ok(dmm_dma_bus_to_phys(dev, dma, &pa));
	assert_int_equal(pa, dmm_pfn_to_phys(pfn));
	assert_ok(dmm_device_iommu_check(dev));
	dmm_dma_unmap_phys(dev, dma, PG, DMM_DMA_BIDIRECTIONAL);
	assert_int_equal(fail_unmaps(dev), 1);
	assert_true(dmm_dma_bus_to_phys(dev, dma, &pa) != 0);
	assert_ok(dmm_device_iommu_stats(dev, &is));
	assert_int_equal(is.mapped_pages, 0);
	assert_ok(dmm_page_free(e->mem, pfn, 0));
	assert_ok(dmm_device_destroy(dev));
	tu_env_destroy(e);
}

/* a streaming unmap of a coherent buffer (one page, then several) is
 * refused; the coherent free of a streaming mapping too */
static void test_unmap_coherent_refused(void **state)
{
	struct tu_env *e = env64();
	struct dmm_device *dev = iommu_dev(e, "nic", 32, 0);
	static const size_t sizes[] = { PG, 3 * PG };
	dmm_dma_addr_t dma;
	dmm_phys_t pa;
	dmm_pfn_t pfn;
	void *cpu;

	(void)state;
	for (unsigned i = 0; i < 2; i++) {
		assert_ok(dmm_dma_alloc_coherent(dev, sizes[i], 0, &cpu, &dma));
		dmm_dma_unmap_single(dev, dma, sizes[i], DMM_DMA_BIDIRECTIONAL);
		assert_int_equal(fail_unmaps(dev), i + 1);
		assert_ok(dmm_dma_bus_to_phys(dev, dma, &pa));
		assert_ok(dmm_device_iommu_check(dev));
		assert_ok(dmm_dma_free_coherent(dev, sizes[i], cpu, dma));
	}
	assert_ok(dmm_page_alloc(e->mem, 0, NULL, 0, &pfn));
	dma = dmm_dma_map_page(dev, pfn, 0, PG, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(dev, dma));
	assert_true(dmm_dma_free_coherent(dev, PG, dmm_pfn_to_virt(e->mem, pfn), dma) < 0);
	assert_ok(dmm_dma_bus_to_phys(dev, dma, &pa));
	dmm_dma_unmap_page(dev, dma, PG, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_page_free(e->mem, pfn, 0));
	assert_ok(dmm_device_destroy(dev));
	tu_env_destroy(e);
}

/* pieces moved up to the next boundary leave unmapped gaps: not counted */
static void test_sg_boundary_pages(void **state)
{
	struct tu_env *e = env64();
	struct dmm_device *dev = iommu_dev(e, "bnd", 32, 4 * PG);
	struct dmm_iommu_stats is;
	struct dmm_sg sg[2];
	dmm_pfn_t pfn;

	(void)state;
	assert_ok(dmm_page_alloc(e->mem, 3, NULL, 0, &pfn));
	dmm_sg_init(sg, 2);
	dmm_sg_set_phys(&sg[0], dmm_pfn_to_phys(pfn), 2 * PG);
	dmm_sg_set_phys(&sg[1], dmm_pfn_to_phys(pfn + 4), 3 * PG); /* would cross: moved to a boundary */
	assert_true(dmm_dma_map_sg(dev, sg, 2, DMM_DMA_TO_DEVICE) > 0);
	assert_ok(dmm_device_iommu_stats(dev, &is));
	assert_int_equal(is.mapped_pages, 5);
	assert_int_equal(is.pt.pages_4k + (is.pt.blocks_2m << 9), 5);
	assert_ok(dmm_device_iommu_check(dev));
	dmm_dma_unmap_sg(dev, sg, 2, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_device_iommu_stats(dev, &is));
	assert_int_equal(is.mapped_pages, 0);
	assert_ok(dmm_device_iommu_check(dev));
	assert_ok(dmm_page_free(e->mem, pfn, 3));
	assert_ok(dmm_device_destroy(dev));
	tu_env_destroy(e);
}

/* scatterlist misuse the IOMMU refuses is reported by debug, as on a
 * direct-mapped device */
static void test_debug_sg_refused(void **state)
{
	struct tu_env *e = env64();
	struct dmm_device *dev;
	struct dmm_sg sg[3], saved[3], after[3];
	uint64_t c[DMM_NR_DBG_RULES];
	dmm_pfn_t pfn;

	(void)state;
	assert_ok(dmm_dma_debug_enable(e->mem, 1));
	dev = iommu_dev(e, "nic", 64, 0);
	assert_ok(dmm_page_alloc(e->mem, 2, NULL, 0, &pfn));
	dmm_sg_init(sg, 3);
	for (unsigned i = 0; i < 3; i++)
		dmm_sg_set_phys(&sg[i], dmm_pfn_to_phys(pfn) + i * PG + 256, 512);
	assert_int_equal(dmm_dma_map_sg(dev, sg, 3, DMM_DMA_TO_DEVICE), 3);
	memcpy(saved, sg, sizeof(sg));
	dmm_dma_debug_reset(e->mem);
	/* two entries of three: refused, reported, the mapping still tracked */
	dmm_dma_unmap_sg(dev, sg, 2, DMM_DMA_TO_DEVICE);
	dmm_dma_debug_counts(e->mem, c);
	assert_int_equal(c[DMM_DBG_UNMAP_WRONG_SIZE], 1);
	assert_int_equal(dmm_dma_debug_total(e->mem), 1);
	assert_int_equal(dmm_dma_debug_active(e->mem, dev), 3);
	/* the right list: no report */
	memcpy(sg, saved, sizeof(sg));
	dmm_dma_debug_reset(e->mem);
	dmm_dma_unmap_sg(dev, sg, 3, DMM_DMA_TO_DEVICE);
	assert_int_equal(dmm_dma_debug_total(e->mem), 0);
	assert_int_equal(dmm_dma_debug_active(e->mem, dev), 0);
	memcpy(after, sg, sizeof(sg));
	/* the same list again: a double unmap */
	memcpy(sg, saved, sizeof(sg));
	dmm_dma_unmap_sg(dev, sg, 3, DMM_DMA_TO_DEVICE);
	dmm_dma_debug_counts(e->mem, c);
	assert_int_equal(c[DMM_DBG_DOUBLE_UNMAP], 1);
	/* the list as the unmap left it: nothing mapped there */
	memcpy(sg, after, sizeof(sg));
	dmm_dma_unmap_sg(dev, sg, 3, DMM_DMA_TO_DEVICE);
	dmm_dma_debug_counts(e->mem, c);
	assert_int_equal(c[DMM_DBG_UNMAP_NOT_MAPPED], 1);
	assert_ok(dmm_page_free(e->mem, pfn, 2));
	assert_ok(dmm_device_destroy(dev));
	tu_env_destroy(e);
}

/* a wrong-size unmap the IOMMU refuses: debug keeps the entry */
static void test_debug_wrong_size_refused(void **state)
{
	struct tu_env *e = env64();
	struct dmm_device *dev;
	uint64_t c[DMM_NR_DBG_RULES];
	dmm_dma_addr_t a, b;
	dmm_phys_t pa;
	dmm_pfn_t pfn;

	(void)state;
	assert_ok(dmm_dma_debug_enable(e->mem, 1));
	dev = iommu_dev(e, "nic", 64, 0);
	assert_ok(dmm_page_alloc(e->mem, 2, NULL, 0, &pfn));
	a = dmm_dma_map_page(dev, pfn, 0, 2 * PG, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(dev, a));
	b = dmm_dma_map_page(dev, pfn + 2, 0, 2 * PG, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(dev, b));
	dmm_dma_unmap_phys(dev, a, PG, DMM_DMA_TO_DEVICE); /* wrong size */
	assert_ok(dmm_dma_bus_to_phys(dev, a, &pa));
	dmm_dma_debug_counts(e->mem, c);
	assert_int_equal(c[DMM_DBG_UNMAP_WRONG_SIZE], 1);
	assert_int_equal(dmm_dma_debug_active(e->mem, dev), 2);
	dmm_dma_debug_reset(e->mem);
	dmm_dma_unmap_phys(dev, a, 2 * PG, DMM_DMA_TO_DEVICE); /* the right one */
	assert_int_equal(dmm_dma_debug_total(e->mem), 0);
	assert_true(dmm_dma_bus_to_phys(dev, a, &pa) != 0);
	dmm_dma_unmap_phys(dev, b, PG, DMM_DMA_TO_DEVICE); /* wrong size, then never unmapped */
	dmm_dma_debug_reset(e->mem);
	dmm_dma_unmap_phys(dev, b, 2 * PG, DMM_DMA_TO_DEVICE);
	assert_int_equal(dmm_dma_debug_total(e->mem), 0);
	b = dmm_dma_map_page(dev, pfn + 2, 0, 2 * PG, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(dev, b));
	dmm_dma_unmap_phys(dev, b, PG, DMM_DMA_TO_DEVICE);
	dmm_dma_debug_reset(e->mem);
	assert_ok(dmm_device_destroy(dev)); /* b still mapped: a leak */
	dmm_dma_debug_counts(e->mem, c);
	assert_int_equal(c[DMM_DBG_LEAK_AT_REMOVE], 1);
	assert_ok(dmm_page_free(e->mem, pfn, 2));
	tu_env_destroy(e);
}

/* a coherent buffer of scattered pages has a vmap CPU address: its free is
 * accepted by debug */
static void test_debug_vmap_coherent_free(void **state)
{
	enum { NP = 20000 };
	static dmm_pfn_t held[NP];
	struct tu_env *e = env64();
	struct dmm_device *dev;
	dmm_dma_addr_t dma;
	dmm_phys_t p0, p1;
	unsigned n = 0;
	void *cpu;

	(void)state;
	if (!dmm_mem_platform(e->mem)->vmap) {
		tu_env_destroy(e);
		skip();
	}
	assert_ok(dmm_dma_debug_enable(e->mem, 1));
	dev = iommu_dev(e, "gpu", 32, 0);
	while (n < NP && dmm_page_alloc(e->mem, 0, NULL, DMM_GFP_NOWMARK, &held[n]) == 0)
		n++;
	assert_true(n < NP);
	for (unsigned i = 0; i < n; i += 2)
		assert_ok(dmm_page_free(e->mem, held[i], 0));
	dmm_page_drain_pcp(e->mem);
	assert_ok(dmm_dma_alloc_coherent(dev, 16 * PG, 0, &cpu, &dma));
	assert_ok(dmm_dma_bus_to_phys(dev, dma, &p0));
	assert_ok(dmm_dma_bus_to_phys(dev, dma + PG, &p1));
	assert_true(p1 != p0 + PG); /* scattered: a vmap */
	memset(cpu, 0x5a, 16 * PG);
	/* the wrong CPU address is still refused */
	assert_rc(dmm_dma_free_coherent(dev, 16 * PG, dmm_pfn_to_virt(e->mem, dmm_phys_to_pfn(p0)), dma),
		  -DMM_EINVAL);
	dmm_dma_debug_reset(e->mem);
	assert_ok(dmm_dma_free_coherent(dev, 16 * PG, cpu, dma));
	assert_int_equal(dmm_dma_debug_total(e->mem), 0);
	for (unsigned i = 1; i < n; i += 2)
		assert_ok(dmm_page_free(e->mem, held[i], 0));
	assert_ok(dmm_device_destroy(dev));
	tu_env_destroy(e);
}

/* 600 misaligned gaps exhaust the search budget; a 2-aligned fit lies low */
static void test_iova_exact_fit_after_fallback(void **state)
{
	const uint64_t N = 4096;
	struct tu_env *e = env64();
	struct dmm_iova_opts o;
	struct dmm_iova_domain *d;
	dmm_dma_addr_t a;

	(void)state;
	dmm_iova_opts_default(&o);
	o.no_cache = 1;
	assert_ok(dmm_iova_domain_create(e->mem, 0, N * PG - 1, &o, &d));
	for (uint64_t i = 1; i < N; i++)
		assert_ok(dmm_iova_alloc(d, PG, ~0ull, &a));
	for (uint64_t k = N / 4 - 600; k < N / 4; k++) {
		assert_ok(dmm_iova_free(d, (4 * k + 1) * PG, PG));
		assert_ok(dmm_iova_free(d, (4 * k + 2) * PG, PG));
	}
	assert_ok(dmm_iova_free(d, 8 * PG, PG));
	assert_ok(dmm_iova_free(d, 9 * PG, PG));
	assert_ok(dmm_iova_check(d));
	assert_ok(dmm_iova_alloc(d, 2 * PG, ~0ull, &a));
	assert_int_equal(a, 8 * PG);
	assert_ok(dmm_iova_check(d));
	/* and nothing fits now: ENOSPC */
	assert_rc(dmm_iova_alloc(d, 2 * PG, ~0ull, &a), -DMM_ENOSPC);
	dmm_iova_domain_destroy(d);
	tu_env_destroy(e);
}

/* a request served below 4 GiB after the caches were flushed is no
 * fallback */
static void test_iova_low32_fallbacks(void **state)
{
	const uint64_t G4 = 4ull << 30;
	struct tu_env *e = env64();
	struct dmm_iova_opts o;
	struct dmm_iova_domain *d;
	struct dmm_iova_stats s0, s1;
	dmm_dma_addr_t a[32], x;
	int k = -1, k2 = -1;

	(void)state;
	dmm_iova_opts_default(&o);
	o.low32_first = 1;
	assert_ok(dmm_iova_domain_create(e->mem, G4 - 16 * PG, G4 + 16 * PG - 1, &o, &d));
	for (int i = 0; i < 32; i++) {
		assert_ok(dmm_iova_alloc(d, PG, ~0ull, &a[i]));
		if (a[i] == G4 - 16 * PG)
			k = i;
		if (a[i] == G4 - 15 * PG)
			k2 = i;
	}
	assert_true(k >= 0 && k2 >= 0);
	dmm_iova_get_stats(d, &s0);
	assert_int_equal(s0.low32_fallbacks, 16); /* the 16 served above 4 GiB */
	assert_ok(dmm_iova_free(d, a[k], PG));
	assert_ok(dmm_iova_free(d, a[k2], PG)); /* into a per-CPU cache */
	assert_ok(dmm_iova_alloc(d, 2 * PG, ~0ull, &x));
	assert_true(x + 2 * PG <= G4);
	dmm_iova_get_stats(d, &s1);
	assert_int_equal(s1.low32_fallbacks, s0.low32_fallbacks);
	assert_rc(dmm_iova_alloc(d, 2 * PG, ~0ull, &x), -DMM_ENOSPC); /* full: no fallback either */
	dmm_iova_get_stats(d, &s1);
	assert_int_equal(s1.low32_fallbacks, s0.low32_fallbacks);
	assert_ok(dmm_iova_check(d));
	dmm_iova_domain_destroy(d);
	tu_env_destroy(e);
}

/* a physical range through a hole is no RAM: refused */
static void test_iopt_map_hole(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct dmm_iopt *pt;
	struct dmm_mem_info i0, i1;

	(void)state;
	tu_machine(&m, "hole");
	tu_add_ram(&m, 0, 64 * MiB);
	tu_add_ram(&m, 64 * MiB + 2 * PG, 64 * MiB - 2 * PG);
	e = tu_env_create(&m, 2);
	assert_ok(dmm_iopt_create(e->mem, &pt));
	dmm_mem_get_info(e->mem, &i0);
	assert_rc(dmm_iopt_map(pt, 0x100000, 64 * MiB - PG, 4 * PG, DMM_IOMMU_READ, 0), -DMM_EINVAL);
	dmm_mem_get_info(e->mem, &i1);
	assert_int_equal(i1.fail_invalid, i0.fail_invalid + 1);
	assert_ok(dmm_iopt_check(pt));
	assert_ok(dmm_iopt_map(pt, 0x100000, 64 * MiB - PG, PG, DMM_IOMMU_READ, 0));
	assert_ok(dmm_iopt_check(pt));
	dmm_iopt_destroy(pt);
	tu_env_destroy(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unmap_outside_domain),
		cmocka_unit_test(test_unmap_coherent_refused),
		cmocka_unit_test(test_sg_boundary_pages),
		cmocka_unit_test(test_debug_sg_refused),
		cmocka_unit_test(test_debug_wrong_size_refused),
		cmocka_unit_test(test_debug_vmap_coherent_free),
		cmocka_unit_test(test_iova_exact_fit_after_fallback),
		cmocka_unit_test(test_iova_low32_fallbacks),
		cmocka_unit_test(test_iopt_map_hole),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

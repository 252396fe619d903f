/* SPDX-License-Identifier: MIT */
/*
 * Regression tests for defects found in review of the DMA layer and the
 * contiguous areas: address wrap in scatterlists, dma-ranges validation
 * and reach, scatterlist merge overflow, boundary of coherent buffers from
 * an area, cache state of uncached area buffers, and DMA debug switched on
 * while buffers are live.
 */
#include "tu_dma.h"

#include "dma_sim.h"

/* A scatterlist piece that wraps the top of the address space is not RAM:
 * map_sg must reject it (map_phys does). */
static void test_sg_piece_wraps(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device_desc d = tu_desc("wrap", 64, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	struct dmm_sg sg[1];
	(void)state;

	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	dmm_sg_init(sg, 1);
	dmm_sg_set_phys(&sg[0], DMM_PHYS_MAX - 4095, 8192); /* [2^64 - 4 KiB, 4 KiB) */
	assert_rc(dmm_dma_map_sg(dev, sg, 1, DMM_DMA_TO_DEVICE), -DMM_EINVAL);
	/* and the single path agrees */
	assert_true(dmm_dma_map_phys(dev, DMM_PHYS_MAX - 4095, 8192, DMM_DMA_TO_DEVICE) ==
		    DMM_DMA_MAPPING_ERROR);
	assert_ok(dmm_device_destroy(dev));
	tu_env_destroy(e);
}

/* Two dma-ranges that overlap on the bus side make bus -> physical
 * ambiguous: the header promises -DMM_EINVAL for overlapping ranges. */
static void test_ranges_overlap_on_bus(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device_desc d = tu_desc("ovl", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev = NULL;
	(void)state;

	d.nr_ranges = 2;
	d.ranges[0] = (struct dmm_dma_range){ 1 * GiB, 0, 256 * MiB };
	d.ranges[1] = (struct dmm_dma_range){ 2 * GiB, 128 * MiB, 256 * MiB }; /* bus [128M, 384M) overlaps */
	assert_rc(dmm_device_create(e->mem, &d, NULL, &dev), -DMM_EINVAL);
	tu_env_destroy(e);
}

/* A buffer whose ends both translate, with bus addresses the right distance
 * apart, but whose middle lies in a gap between two dma-ranges is not
 * reachable. */
static void test_reach_across_range_gap(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device_desc d = tu_desc("gap", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	struct dmm_sg sg[1];
	dmm_dma_addr_t b;
	(void)state;

	d.nr_ranges = 2;
	d.ranges[0] = (struct dmm_dma_range){ 1 * GiB, 1 * GiB, 256 * MiB };
	d.ranges[1] = (struct dmm_dma_range){ 1 * GiB + 258 * MiB, 1 * GiB + 258 * MiB, 256 * MiB };
	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	/* [1G + 256M - 4K, 1G + 258M + 4K): the 2 MiB in the middle are in no range */
	b = dmm_dma_map_phys(dev, 1 * GiB + 256 * MiB - 4096, 2 * MiB + 8192, DMM_DMA_TO_DEVICE);
	assert_true(b == DMM_DMA_MAPPING_ERROR);
	assert_rc(dmm_dma_mapping_error(dev, b), -DMM_ERANGE);
	dmm_sg_init(sg, 1);
	dmm_sg_set_phys(&sg[0], 1 * GiB + 256 * MiB - 4096, (uint32_t)(2 * MiB + 8192));
	assert_rc(dmm_dma_map_sg(dev, sg, 1, DMM_DMA_TO_DEVICE), -DMM_ERANGE);
	/* inside one range it still works */
	b = dmm_dma_map_phys(dev, 1 * GiB + 4096, 8192, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(dev, b));
	dmm_dma_unmap_phys(dev, b, 8192, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_device_destroy(dev));
	tu_env_destroy(e);
}

/* Merging contiguous pieces without a maximum segment size must not
 * overflow the 32-bit dma_length. */
static void test_sg_merge_length_overflow(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device_desc d = tu_desc("big", 64, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	struct dmm_sg sg[2];
	uint64_t total = 0;
	int n;
	(void)state;

	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	dmm_sg_init(sg, 2);
	dmm_sg_set_phys(&sg[0], 5 * GiB, (uint32_t)(3 * GiB));
	dmm_sg_set_phys(&sg[1], 8 * GiB, (uint32_t)(3 * GiB));
	n = dmm_dma_map_sg(dev, sg, 2, DMM_DMA_TO_DEVICE);
	assert_true(n >= 1);
	for (int i = 0; i < n; i++)
		total += sg[i].dma_length;
	assert_int_equal(total, 6 * GiB);
	assert_int_equal(n, 2);
	dmm_dma_unmap_sg(dev, sg, 2, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_device_destroy(dev));
	tu_env_destroy(e);
}

/* A coherent buffer from the device's contiguous area honours the
 * segment boundary, as buddy and range allocations do. */
static void test_coherent_from_area_honours_boundary(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device_desc d = tu_desc("bnd", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	struct dmm_dma_stats st;
	int area = dmm_cma_default(e->mem);
	dmm_pfn_t first;
	void *cpu;
	dmm_dma_addr_t dma;
	(void)state;

	assert_true(area >= 0);
	d.cma_area = DMM_DEVICE_CMA_DEFAULT;
	d.limits.boundary = 128 * KiB;
	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	/* 24 pages taken first: the next free run starts 96 KiB into the area */
	assert_ok(dmm_cma_alloc(e->mem, area, 24, 0, 0, &first, NULL));
	assert_ok(dmm_dma_alloc_coherent(dev, 64 * KiB, 0, &cpu, &dma));
	dmm_device_get_stats(dev, &st);
	assert_int_equal(st.coherent_from_cma, 1);
	assert_int_equal(dma / (128 * KiB), (dma + 64 * KiB - 1) / (128 * KiB));
	assert_ok(dmm_dma_free_coherent(dev, 64 * KiB, cpu, dma));
	assert_ok(dmm_cma_release(e->mem, area, first, 24));
	assert_ok(dmm_device_destroy(dev));
	assert_ok(dmm_cma_check(e->mem));
	tu_env_destroy(e);
}

/* An uncached coherent buffer from a contiguous area for a non-coherent
 * device: no dirty line of its old cacheable life may stay in the cache to
 * be written back later over what the device put in RAM. */
static void test_uncached_area_buffer_flushed(void **state)
{
	struct dmm_machine m;
	struct dmm_hw_opts o;
	struct dmm_hw *hw;
	struct dmm_mem *mem;
	struct dmm_sim_dev sd;
	struct dmm_device_desc d = tu_desc("cam", 64, 0, DMM_DEVICE_CMA_NONE);
	struct dmm_dma_stats st;
	static uint8_t old[64 * 1024], want[64 * 1024], got[64 * 1024];
	int area;
	dmm_pfn_t pfn;
	void *cpu;
	dmm_dma_addr_t dma;
	dmm_phys_t pa;
	(void)state;

	tu_profile("phone", &m);
	dmm_hw_opts_default(&o);
	o.nr_cpus = 2;
	o.prefetch = 0;
	o.log_level = DMM_LOG_ERR;
	assert_ok(dmm_hw_mem_create(&m, &o, &hw, &mem));
	area = dmm_cma_default(mem);
	assert_true(area >= 0);

	/* the range had a cacheable life: the CPU wrote it (dirty lines) */
	assert_ok(dmm_cma_alloc(mem, area, 16, 0, 0, &pfn, NULL));
	memset(old, 0xee, sizeof(old));
	assert_ok(dmm_hw_cpu_write(hw, dmm_pfn_to_phys(pfn), old, sizeof(old)));
	assert_ok(dmm_cma_release(mem, area, pfn, 16));

	d.cma_area = DMM_DEVICE_CMA_DEFAULT;
	assert_ok(dmm_sim_device_create(mem, hw, &d, NULL, &sd));
	assert_ok(dmm_dma_alloc_coherent(sd.dev, sizeof(want), 0, &cpu, &dma));
	dmm_device_get_stats(sd.dev, &st);
	assert_int_equal(st.coherent_from_cma, 1);
	assert_ok(dmm_hw_virt_to_phys(hw, cpu, &pa));
	assert_int_equal(pa, dmm_pfn_to_phys(pfn)); /* the same range */
	for (size_t off = 0; off < sizeof(want); off += 64)
		assert_int_not_equal(dmm_hw_line_state(hw, pa + off), DMM_HW_LINE_DIRTY);

	/* the device fills it; whatever the cache does later, the CPU reads it */
	for (size_t i = 0; i < sizeof(want); i++)
		want[i] = (uint8_t)(i * 13u + 7u);
	assert_ok(dmm_hw_dev_write(sd.hw, dma, want, sizeof(want)));
	assert_ok(dmm_hw_cache_maint(hw, DMM_CACHE_FLUSH, pa, sizeof(want))); /* evict whatever is cached */
	assert_ok(dmm_hw_cpu_read(hw, pa, got, sizeof(got)));
	assert_memory_equal(got, want, sizeof(want));

	assert_ok(dmm_dma_free_coherent(sd.dev, sizeof(want), cpu, dma));
	assert_ok(dmm_sim_device_destroy(&sd));
	assert_ok(dmm_cma_check(mem));
	dmm_hw_mem_destroy(hw, mem);
}

/* DMA debug switched on while a coherent buffer is live: the correct free
 * of that buffer still frees it (debug reports, it does not leak). */
static void test_debug_enabled_after_alloc_free_works(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device_desc d = tu_desc("late", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	struct dmm_dma_stats st;
	void *cpu;
	dmm_dma_addr_t dma;
	(void)state;

	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	assert_ok(dmm_dma_alloc_coherent(dev, 8 * KiB, 0, &cpu, &dma));
	assert_ok(dmm_dma_debug_enable(e->mem, 1));
	assert_ok(dmm_dma_free_coherent(dev, 8 * KiB, cpu, dma));
	dmm_device_get_stats(dev, &st);
	assert_int_equal(st.coherent_frees, 1);
	/* a real double free is still refused */
	assert_rc(dmm_dma_free_coherent(dev, 8 * KiB, cpu, dma), -DMM_ENOENT);
	assert_ok(dmm_device_destroy(dev));
	assert_checks(e->mem);
	tu_env_destroy(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sg_piece_wraps),
		cmocka_unit_test(test_ranges_overlap_on_bus),
		cmocka_unit_test(test_reach_across_range_gap),
		cmocka_unit_test(test_sg_merge_length_overflow),
		cmocka_unit_test(test_coherent_from_area_honours_boundary),
		cmocka_unit_test(test_uncached_area_buffer_flushed),
		cmocka_unit_test(test_debug_enabled_after_alloc_free_works),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

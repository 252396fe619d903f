/* SPDX-License-Identifier: MIT */
/*
 * DMA API on the hosted platform: devices and buses, limits and their
 * intersection, bus offsets and dma-ranges, coherent allocations placed by
 * mask, streaming maps and their errors, scatterlist merging, and every DMA
 * debug rule that needs no hardware model (each triggered by a purposeful
 * misuse, and silent for correct use). Cache behaviour and device accesses
 * are tested against the hardware model in test_dma_hw.c.
 */
#include <pthread.h>

#include "tu_dma.h"


#define assert_all_checks(mem)                 \
	do {                                   \
		assert_checks(mem);            \
		assert_ok(dmm_cma_check(mem)); \
	} while (0)

static void test_devices_and_limits(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device *bus, *dev, *d2;
	struct dmm_device_desc b = tu_desc("pci0", 32, 1, DMM_DEVICE_CMA_DEFAULT), d = tu_desc("nic", 64, 1, DMM_DEVICE_CMA_DEFAULT);
	struct dmm_constraint c;
	dmm_phys_t pa;
	(void)state;

	b.is_bus = 1;
	b.limits.boundary = 1 * MiB;
	b.limits.max_segs = 8;
	assert_ok(dmm_device_create(e->mem, &b, NULL, &bus));
	d.limits.align = 64 * KiB;
	d.limits.max_seg_size = 64 * KiB;
	d.limits.max_segs = 128;
	assert_ok(dmm_device_create(e->mem, &d, bus, &dev));
	/* the bus is narrower than its device: the lowest window wins */
	assert_ok(dmm_device_limits(dev, 0, &c));
	assert_int_equal(c.hi, 4 * GiB);
	assert_int_equal(c.align, 64 * KiB);
	assert_int_equal(c.boundary, 1 * MiB);
	assert_int_equal(c.max_seg_size, 64 * KiB);
	assert_int_equal(c.max_segs, 8);
	assert_string_equal(dmm_device_name(dev), "nic");
	/* a bus with children cannot go away */
	assert_rc(dmm_device_destroy(bus), -DMM_EBUSY);
	/* a device cannot parent another */
	assert_rc(dmm_device_create(e->mem, &d, dev, &d2), -DMM_EINVAL);

	/* bad descriptions */
	{
		struct dmm_device_desc x = tu_desc("x", 32, 1, DMM_DEVICE_CMA_DEFAULT);
		x.dma_mask = 0;
		assert_rc(dmm_device_create(e->mem, &x, NULL, &d2), -DMM_EINVAL);
		x = tu_desc("x", 32, 1, DMM_DEVICE_CMA_DEFAULT);
		x.coherent_mask = DMM_DMA_BIT_MASK(40);
		assert_rc(dmm_device_create(e->mem, &x, NULL, &d2), -DMM_EINVAL);
		x = tu_desc("x", 32, 1, DMM_DEVICE_CMA_DEFAULT);
		x.limits.align = 3000;
		assert_rc(dmm_device_create(e->mem, &x, NULL, &d2), -DMM_EINVAL);
		x = tu_desc(NULL, 32, 1, DMM_DEVICE_CMA_DEFAULT);
		assert_rc(dmm_device_create(e->mem, &x, NULL, &d2), -DMM_EINVAL);
		x = tu_desc("x", 32, 1, DMM_DEVICE_CMA_DEFAULT);
		x.nr_ranges = 2;
		x.ranges[0] = (struct dmm_dma_range){ 0, 0, 1 * GiB };
		x.ranges[1] = (struct dmm_dma_range){ 512 * MiB, 2 * GiB, 1 * GiB }; /* overlaps */
		assert_rc(dmm_device_create(e->mem, &x, NULL, &d2), -DMM_EINVAL);
		x = tu_desc("x", 32, 1, DMM_DEVICE_CMA_DEFAULT);
		x.iommu = 3; /* no such mode */
		assert_rc(dmm_device_create(e->mem, &x, NULL, &d2), -DMM_EINVAL);
		x = tu_desc("x", 32, 1, DMM_DEVICE_CMA_DEFAULT);
		x.iommu = 1;
		x.bus_offset = (int64_t)(1 * GiB); /* no offsets behind an IOMMU */
		assert_rc(dmm_device_create(e->mem, &x, NULL, &d2), -DMM_EINVAL);
		x = tu_desc("x", 32, 1, DMM_DEVICE_CMA_DEFAULT);
		x.bus_offset = (int64_t)(64 * GiB); /* every bus address beyond the mask */
		assert_rc(dmm_device_create(e->mem, &x, NULL, &d2), -DMM_ERANGE);
		x = tu_desc("x", 32, 1, DMM_DEVICE_CMA_DEFAULT);
		x.cma_area = 7;
		assert_rc(dmm_device_create(e->mem, &x, NULL, &d2), -DMM_EINVAL);
	}

	/* every field is honoured by coherent allocations: window (the bus),
	 * alignment (the device), boundary (the bus) */
	for (int i = 0; i < 64; i++) {
		void *cpu;
		dmm_dma_addr_t cb;
		size_t size = (size_t)(i % 7 + 1) * 12 * KiB;
		assert_ok(dmm_dma_alloc_coherent(dev, size, 0, &cpu, &cb));
		assert_true(cb + size <= 4 * GiB);
		assert_int_equal(cb % (64 * KiB), 0);
		assert_int_equal(cb / MiB, (cb + size - 1) / MiB);
		assert_ok(dmm_dma_free_coherent(dev, size, cpu, cb));
	}
	/* translation: identity here */
	assert_int_equal(dmm_dma_phys_to_bus(dev, 0x12345000), 0x12345000);
	assert_ok(dmm_dma_bus_to_phys(dev, 0x12345000, &pa));
	assert_int_equal(pa, 0x12345000);
	assert_ok(dmm_device_destroy(dev));
	assert_ok(dmm_device_destroy(bus));
	assert_all_checks(e->mem);
	tu_env_destroy(e);
}

static void test_offsets_and_ranges(void **state)
{
	struct tu_env *e = tu_env_profile("rpi4");
	struct dmm_device *dev, *legacy;
	struct dmm_device_desc d = tu_desc("vc4", 32, 0, DMM_DEVICE_CMA_DEFAULT), l = tu_desc("legacy", 32, 1, DMM_DEVICE_CMA_DEFAULT);
	dmm_phys_t pa;
	dmm_dma_addr_t bus;
	void *cpu;
	(void)state;

	/* The Pi 4's legacy peripherals see the low 1 GiB at bus 0xc0000000. */
	l.nr_ranges = 1;
	l.ranges[0] = (struct dmm_dma_range){ 0, 0xc0000000, 1 * GiB };
	assert_ok(dmm_device_create(e->mem, &l, NULL, &legacy));
	assert_int_equal(dmm_dma_phys_to_bus(legacy, 0x1000), 0xc0001000);
	assert_int_equal(dmm_dma_phys_to_bus(legacy, 1 * GiB), DMM_DMA_MAPPING_ERROR);
	assert_ok(dmm_dma_bus_to_phys(legacy, 0xc0002000, &pa));
	assert_int_equal(pa, 0x2000);
	assert_rc(dmm_dma_bus_to_phys(legacy, 0x1000, &pa), -DMM_ERANGE);
	/* coherent memory lands inside the range, addressed through it */
	for (int i = 0; i < 16; i++) {
		assert_ok(dmm_dma_alloc_coherent(legacy, 8192, 0, &cpu, &bus));
		assert_true(bus >= 0xc0000000 && bus + 8192 <= 0x100000000ull);
		assert_ok(dmm_dma_bus_to_phys(legacy, bus, &pa));
		assert_true(pa + 8192 <= 1 * GiB);
		assert_ptr_equal(cpu, dmm_pfn_to_virt(e->mem, dmm_phys_to_pfn(pa)));
		assert_ok(dmm_dma_free_coherent(legacy, 8192, cpu, bus));
	}
	/* a streaming map of memory above 1 GiB is out of its reach */
	{
		dmm_pfn_t hi;
		struct dmm_constraint above = { 2 * GiB, DMM_PHYS_MAX, 0, 0, 0, 0 };
		assert_ok(dmm_page_alloc(e->mem, 0, &above, 0, &hi));
		bus = dmm_dma_map_page(legacy, hi, 0, 4096, DMM_DMA_TO_DEVICE);
		assert_int_equal(bus, DMM_DMA_MAPPING_ERROR);
		assert_rc(dmm_dma_mapping_error(legacy, bus), -DMM_ERANGE);
		assert_ok(dmm_page_free(e->mem, hi, 0));
	}
	/* a negative bus offset */
	d.bus_offset = -(int64_t)(1 * GiB);
	d.dma_mask = DMM_DMA_BIT_MASK(32);
	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	assert_int_equal(dmm_dma_phys_to_bus(dev, 1 * GiB + 4096), 4096);
	assert_ok(dmm_dma_alloc_coherent(dev, 4096, 0, &cpu, &bus));
	assert_ok(dmm_dma_bus_to_phys(dev, bus, &pa));
	assert_true(pa >= 1 * GiB && bus < 4 * GiB);
	assert_ok(dmm_dma_free_coherent(dev, 4096, cpu, bus));
	assert_ok(dmm_device_destroy(dev));
	assert_ok(dmm_device_destroy(legacy));
	assert_all_checks(e->mem);
	tu_env_destroy(e);
}

/* A 30-bit device on the Pi only ever gets memory below 1 GiB; a 32-bit
 * device on the PC below 4 GiB; a 64-bit device's coherent memory takes
 * nothing below 4 GiB. */
static void test_coherent_placement(void **state)
{
	static const struct {
		const char *profile;
		unsigned bits;
		uint64_t limit;
	} cases[] = { { "rpi4", 30, 1 * GiB }, { "pc", 32, 4 * GiB }, { "pc", 64, DMM_PHYS_MAX } };
	(void)state;

	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		struct tu_env *e = tu_env_profile(cases[k].profile);
		struct dmm_device *dev;
		struct dmm_device_desc d = tu_desc("dev", cases[k].bits, k != 1, DMM_DEVICE_CMA_DEFAULT);
		static void *cpu[200];
		static dmm_dma_addr_t bus[200];
		static size_t sz[200];
		struct dmm_dma_stats st;
		uint64_t s = 99;

		d.cma_area = DMM_DEVICE_CMA_NONE;
		assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
		for (int i = 0; i < 200; i++) {
			dmm_phys_t pa;
			sz[i] = (size_t)(1 + tu_rand(&s) % (64 * KiB));
			assert_ok(dmm_dma_alloc_coherent(dev, sz[i], 0, &cpu[i], &bus[i]));
			assert_ok(dmm_dma_bus_to_phys(dev, bus[i], &pa));
			assert_true(pa + sz[i] <= cases[k].limit);
			if (cases[k].limit == DMM_PHYS_MAX)
				assert_true(pa >= 4 * GiB); /* no low memory for a 64-bit device */
			for (size_t b = 0; b < sz[i]; b += 512)
				assert_int_equal(((uint8_t *)cpu[i])[b], 0); /* zeroed */
			memset(cpu[i], 0xa5, sz[i]);
		}
		dmm_device_get_stats(dev, &st);
		assert_int_equal(st.coherent_allocs, 200);
		if (cases[k].limit == DMM_PHYS_MAX)
			assert_int_equal(st.low_pages, 0);
		else
			assert_true(st.low_pages > 0);
		assert_all_checks(e->mem);
		for (int i = 0; i < 200; i++)
			assert_ok(dmm_dma_free_coherent(dev, sz[i], cpu[i], bus[i]));
		dmm_device_get_stats(dev, &st);
		assert_int_equal(st.low_pages, 0);
		/* non-coherent atomic requests need the atomic pool */
		{
			struct dmm_device *nc;
			struct dmm_device_desc n = tu_desc("nc", 32, 0, DMM_DEVICE_CMA_DEFAULT);
			void *c;
			dmm_dma_addr_t b;
			assert_ok(dmm_device_create(e->mem, &n, NULL, &nc));
			assert_rc(dmm_dma_alloc_coherent(nc, 4096, DMM_GFP_ATOMIC, &c, &b), -DMM_ENOTSUP);
			assert_ok(dmm_device_destroy(nc));
		}
		assert_ok(dmm_device_destroy(dev));
		dmm_page_drain_pcp(e->mem);
		assert_all_checks(e->mem);
		assert_int_equal(tu_zone_free_all(e->mem), e->free0);
		tu_env_destroy(e);
	}
}

static void test_coherent_from_area_uncached(void **state)
{
	struct tu_env *e = tu_env_profile("phone");
	struct dmm_device *dev;
	struct dmm_device_desc d = tu_desc("isp", 64, 0, DMM_DEVICE_CMA_DEFAULT);
	struct dmm_hosted_stats h0, h1;
	struct dmm_dma_stats st;
	struct dmm_cma_info ci;
	void *cpu;
	dmm_dma_addr_t bus;
	dmm_phys_t pa;
	(void)state;

	d.cma_area = dmm_cma_find(e->mem, "camera");
	assert_true(d.cma_area >= 0);
	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	dmm_hosted_get_stats(e->hosted, &h0);
	assert_ok(dmm_dma_alloc_coherent(dev, 8 * MiB, 0, &cpu, &bus));
	dmm_hosted_get_stats(e->hosted, &h1);
	assert_ok(dmm_dma_bus_to_phys(dev, bus, &pa));
	assert_ok(dmm_cma_get_info(e->mem, d.cma_area, &ci));
	assert_true(dmm_phys_to_pfn(pa) >= ci.base_pfn &&
		    dmm_phys_to_pfn(pa) + 2048 <= ci.base_pfn + ci.nr_pages);
	assert_int_equal(h1.memattr_calls, h0.memattr_calls + 1); /* made uncached */
	dmm_device_get_stats(dev, &st);
	assert_int_equal(st.coherent_from_cma, 1);
	/* a small one comes from the page allocator, also uncached */
	{
		void *c2;
		dmm_dma_addr_t b2;
		assert_ok(dmm_dma_alloc_coherent(dev, 4096, 0, &c2, &b2));
		dmm_hosted_get_stats(e->hosted, &h0);
		assert_int_equal(h0.memattr_calls, h1.memattr_calls + 1);
		assert_rc(dmm_dma_free_coherent(dev, 8192, c2, b2), -DMM_EINVAL); /* wrong size: kept */
		assert_ok(dmm_dma_free_coherent(dev, 4096, c2, b2));
	}
	assert_ok(dmm_dma_free_coherent(dev, 8 * MiB, cpu, bus));
	assert_ok(dmm_device_destroy(dev));
	assert_all_checks(e->mem);
	tu_env_destroy(e);
}

static void test_streaming_and_sg(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device *dev;
	struct dmm_device_desc d = tu_desc("disk", 32, 1, DMM_DEVICE_CMA_DEFAULT);
	struct dmm_sg sg[8];
	dmm_pfn_t base, hi;
	dmm_dma_addr_t bus;
	const struct dmm_constraint low = dmm_constraint_below(4 * GiB);
	const struct dmm_constraint high = { 4 * GiB, DMM_PHYS_MAX, 0, 0, 0, 0 };
	int n;
	(void)state;

	d.limits.max_seg_size = 16 * KiB;
	d.limits.boundary = 64 * KiB;
	d.limits.max_segs = 4;
	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	assert_ok(dmm_page_alloc(e->mem, 5, &low, 0, &base)); /* 128 KiB, 128 KiB aligned */
	assert_ok(dmm_page_alloc(e->mem, 0, &high, 0, &hi));

	/* single maps */
	bus = dmm_dma_map_page(dev, base, 100, 1000, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(dev, bus));
	assert_int_equal(bus, dmm_pfn_to_phys(base) + 100);
	dmm_dma_unmap_page(dev, bus, 1000, DMM_DMA_TO_DEVICE);
	bus = dmm_dma_map_single(dev, dmm_pfn_to_virt(e->mem, base), 4096, DMM_DMA_FROM_DEVICE);
	assert_ok(dmm_dma_mapping_error(dev, bus));
	dmm_dma_sync_single_for_cpu(dev, bus, 4096, DMM_DMA_FROM_DEVICE);
	dmm_dma_sync_single_for_device(dev, bus, 4096, DMM_DMA_FROM_DEVICE);
	dmm_dma_unmap_single(dev, bus, 4096, DMM_DMA_FROM_DEVICE);
	/* out of reach: no bounce layer yet */
	bus = dmm_dma_map_page(dev, hi, 0, 4096, DMM_DMA_TO_DEVICE);
	assert_rc(dmm_dma_mapping_error(dev, bus), -DMM_ERANGE);
	/* bad input */
	bus = dmm_dma_map_page(dev, base, 0, 0, DMM_DMA_TO_DEVICE);
	assert_rc(dmm_dma_mapping_error(dev, bus), -DMM_EINVAL);
	bus = dmm_dma_map_page(dev, base, 0, 4096, DMM_DMA_NONE);
	assert_rc(dmm_dma_mapping_error(dev, bus), -DMM_EINVAL);
	bus = dmm_dma_map_phys(dev, 0xa0000, 4096, DMM_DMA_TO_DEVICE); /* a hole */
	assert_rc(dmm_dma_mapping_error(dev, bus), -DMM_EINVAL);
	/* RAM that runs into a hole: the 639 KiB region's partial last page,
	 * the PCI hole at 3 GiB */
	bus = dmm_dma_map_phys(dev, 0x9e000, 8192, DMM_DMA_TO_DEVICE);
	assert_rc(dmm_dma_mapping_error(dev, bus), -DMM_EINVAL);
	bus = dmm_dma_map_phys(dev, 0xbffff000ull, 8192, DMM_DMA_FROM_DEVICE);
	assert_rc(dmm_dma_mapping_error(dev, bus), -DMM_EINVAL);
	/* a page number or offset past the physical address space */
	bus = dmm_dma_map_page(dev, (dmm_pfn_t)1 << 60, 0, 4096, DMM_DMA_TO_DEVICE);
	assert_rc(dmm_dma_mapping_error(dev, bus), -DMM_EINVAL);
	bus = dmm_dma_map_page(dev, base, SIZE_MAX - 100, 64, DMM_DMA_TO_DEVICE);
	assert_rc(dmm_dma_mapping_error(dev, bus), -DMM_EINVAL);
	/* a long buffer inside one region */
	bus = dmm_dma_map_phys(dev, 0x100000, 1 * MiB, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(dev, bus));
	assert_int_equal(bus, 0x100000);
	dmm_dma_unmap_phys(dev, bus, 1 * MiB, DMM_DMA_TO_DEVICE);
	bus = dmm_dma_map_single(dev, &bus, 8, DMM_DMA_TO_DEVICE); /* not managed RAM */
	assert_rc(dmm_dma_mapping_error(dev, bus), -DMM_EINVAL);

	/* scatterlists: contiguous pieces merge up to the maximum segment size */
	dmm_sg_init(sg, 8);
	for (unsigned i = 0; i < 4; i++)
		dmm_sg_set_page(&sg[i], base + 2 * i, 0, 8192); /* 4 x 8 KiB, contiguous */
	n = dmm_dma_map_sg(dev, sg, 4, DMM_DMA_TO_DEVICE);
	assert_int_equal(n, 2);
	assert_int_equal(sg[0].dma_address, dmm_pfn_to_phys(base));
	assert_int_equal(sg[0].dma_length, 16 * KiB);
	assert_int_equal(sg[1].dma_address, dmm_pfn_to_phys(base) + 16 * KiB);
	assert_int_equal(sg[1].dma_length, 16 * KiB);
	assert_int_equal(sg[2].dma_length, 0);
	dmm_dma_sync_sg_for_cpu(dev, sg, 4, DMM_DMA_TO_DEVICE);
	dmm_dma_sync_sg_for_device(dev, sg, 4, DMM_DMA_TO_DEVICE);
	dmm_dma_unmap_sg(dev, sg, 4, DMM_DMA_TO_DEVICE);
	/* never merged across the 64 KiB boundary */
	dmm_sg_init(sg, 8);
	dmm_sg_set_page(&sg[0], base + 14, 0, 8192); /* 56..64 KiB */
	dmm_sg_set_page(&sg[1], base + 16, 0, 4096); /* 64..68 KiB */
	n = dmm_dma_map_sg(dev, sg, 2, DMM_DMA_BIDIRECTIONAL);
	assert_int_equal(n, 2);
	dmm_dma_unmap_sg(dev, sg, 2, DMM_DMA_BIDIRECTIONAL);
	/* errors: a piece crossing the boundary, too long, too many segments,
	 * out of reach; nothing stays mapped */
	dmm_sg_init(sg, 8);
	dmm_sg_set_page(&sg[0], base + 15, 0, 8192);
	assert_rc(dmm_dma_map_sg(dev, sg, 1, DMM_DMA_TO_DEVICE), -DMM_EINVAL);
	dmm_sg_set_page(&sg[0], base, 0, 32768);
	assert_rc(dmm_dma_map_sg(dev, sg, 1, DMM_DMA_TO_DEVICE), -DMM_EINVAL);
	for (unsigned i = 0; i < 5; i++)
		dmm_sg_set_page(&sg[i], base + 4 * i, 0, 4096); /* 5 separate segments */
	assert_rc(dmm_dma_map_sg(dev, sg, 5, DMM_DMA_TO_DEVICE), -DMM_EINVAL);
	dmm_sg_set_page(&sg[0], hi, 0, 4096);
	assert_rc(dmm_dma_map_sg(dev, sg, 1, DMM_DMA_TO_DEVICE), -DMM_ERANGE);
	assert_rc(dmm_dma_map_sg(dev, sg, 0, DMM_DMA_TO_DEVICE), -DMM_EINVAL);
	assert_rc(dmm_dma_map_sg(dev, NULL, 1, DMM_DMA_TO_DEVICE), -DMM_EINVAL);

	assert_ok(dmm_page_free(e->mem, base, 5));
	assert_ok(dmm_page_free(e->mem, hi, 0));
	assert_ok(dmm_device_destroy(dev));
	assert_all_checks(e->mem);
	tu_env_destroy(e);
}

/* ---- DMA debug ------------------------------------------------------------------- */

static uint64_t count(struct dmm_mem *mem, enum dmm_dma_debug_rule r)
{
	uint64_t c[DMM_NR_DBG_RULES];
	dmm_dma_debug_counts(mem, c);
	return c[r];
}

/* @fn triggers exactly one report of @rule (and nothing else). */
#define expect_rule(mem, rule, stmt)                                                   \
	do {                                                                           \
		uint64_t before_ = count(mem, rule), total_ = dmm_dma_debug_total(mem); \
		stmt;                                                                  \
		assert_int_equal(count(mem, rule), before_ + 1);                       \
		assert_int_equal(dmm_dma_debug_total(mem), total_ + 1);                \
	} while (0)

static void test_debug_rules(void **state)
{
	struct tu_env *e = tu_env_profile("phone");
	struct dmm_device *dev, *nc;
	struct dmm_device_desc d = tu_desc("eth", 64, 1, DMM_DEVICE_CMA_DEFAULT), n = tu_desc("dsp", 64, 0, DMM_DEVICE_CMA_DEFAULT);
	struct dmm_dma_debug_report rep[4];
	dmm_pfn_t buf;
	dmm_phys_t pa;
	dmm_dma_addr_t bus;
	void *cpu;
	(void)state;

	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	assert_ok(dmm_device_create(e->mem, &n, NULL, &nc));
	assert_ok(dmm_page_alloc(e->mem, 2, NULL, 0, &buf));
	pa = dmm_pfn_to_phys(buf);
	assert_int_equal(dmm_dma_debug_enabled(dev), 0);
	assert_ok(dmm_dma_debug_enable(e->mem, 1));
	assert_int_equal(dmm_dma_debug_enabled(dev), 1);

	/* correct use is silent */
	bus = dmm_dma_map_phys(dev, pa, 4096, DMM_DMA_BIDIRECTIONAL);
	assert_ok(dmm_dma_mapping_error(dev, bus));
	dmm_dma_sync_single_for_cpu(dev, bus + 128, 256, DMM_DMA_BIDIRECTIONAL);
	dmm_dma_sync_single_for_device(dev, bus + 128, 256, DMM_DMA_BIDIRECTIONAL);
	assert_int_equal(dmm_dma_debug_active(e->mem, dev), 1);
	dmm_dma_unmap_phys(dev, bus, 4096, DMM_DMA_BIDIRECTIONAL);
	assert_ok(dmm_dma_alloc_coherent(dev, 4096, 0, &cpu, &bus));
	assert_ok(dmm_dma_free_coherent(dev, 4096, cpu, bus));
	assert_int_equal(dmm_dma_debug_total(e->mem), 0);
	assert_int_equal(dmm_dma_debug_active(e->mem, NULL), 0);

	/* each rule, by a purposeful misuse */
	expect_rule(e->mem, DMM_DBG_UNMAP_NOT_MAPPED,
		    dmm_dma_unmap_phys(dev, pa + 8192, 4096, DMM_DMA_TO_DEVICE));
	bus = dmm_dma_map_phys(dev, pa, 4096, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(dev, bus));
	dmm_dma_unmap_phys(dev, bus, 4096, DMM_DMA_TO_DEVICE);
	expect_rule(e->mem, DMM_DBG_DOUBLE_UNMAP, dmm_dma_unmap_phys(dev, bus, 4096, DMM_DMA_TO_DEVICE));

	bus = dmm_dma_map_phys(dev, pa, 4096, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(dev, bus));
	expect_rule(e->mem, DMM_DBG_UNMAP_WRONG_SIZE, dmm_dma_unmap_phys(dev, bus, 2048, DMM_DMA_TO_DEVICE));
	bus = dmm_dma_map_phys(dev, pa, 4096, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(dev, bus));
	expect_rule(e->mem, DMM_DBG_UNMAP_WRONG_DIR, dmm_dma_unmap_phys(dev, bus, 4096, DMM_DMA_FROM_DEVICE));

	bus = dmm_dma_map_phys(dev, pa, 4096, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(dev, bus));
	expect_rule(e->mem, DMM_DBG_SYNC_OUTSIDE,
		    dmm_dma_sync_single_for_cpu(dev, bus + 2048, 4096, DMM_DMA_TO_DEVICE));
	expect_rule(e->mem, DMM_DBG_SYNC_WRONG_DIR,
		    dmm_dma_sync_single_for_cpu(dev, bus, 4096, DMM_DMA_FROM_DEVICE));
	dmm_dma_unmap_phys(dev, bus, 4096, DMM_DMA_TO_DEVICE);

	bus = dmm_dma_map_phys(dev, pa, 4096, DMM_DMA_TO_DEVICE); /* never checked */
	expect_rule(e->mem, DMM_DBG_ERROR_NOT_CHECKED, dmm_dma_unmap_phys(dev, bus, 4096, DMM_DMA_TO_DEVICE));

	/* sg unmapped as a single */
	{
		struct dmm_sg sg[1];
		dmm_sg_init(sg, 1);
		dmm_sg_set_phys(&sg[0], pa, 4096);
		assert_int_equal(dmm_dma_map_sg(dev, sg, 1, DMM_DMA_TO_DEVICE), 1);
		expect_rule(e->mem, DMM_DBG_UNMAP_WRONG_TYPE,
			    dmm_dma_unmap_phys(dev, sg[0].dma_address, 4096, DMM_DMA_TO_DEVICE));
	}

	assert_ok(dmm_dma_alloc_coherent(dev, 8192, 0, &cpu, &bus));
	expect_rule(e->mem, DMM_DBG_FREE_COHERENT_WRONG,
		    assert_rc(dmm_dma_free_coherent(dev, 4096, cpu, bus), -DMM_EINVAL));
	expect_rule(e->mem, DMM_DBG_FREE_NOT_ALLOCATED,
		    assert_rc(dmm_dma_free_coherent(dev, 8192, cpu, bus + 8192), -DMM_ENOENT));
	assert_ok(dmm_dma_free_coherent(dev, 8192, cpu, bus)); /* still intact: the right free works */

	/* a non-coherent FROM_DEVICE buffer sharing cache lines */
	expect_rule(e->mem, DMM_DBG_CACHELINE_SHARED, {
		bus = dmm_dma_map_phys(nc, pa + 100, 200, DMM_DMA_FROM_DEVICE);
		assert_ok(dmm_dma_mapping_error(nc, bus));
	});
	{
		uint64_t line = dmm_mem_machine(e->mem)->dma_min_align;
		dmm_dma_addr_t b2;
		/* a second mapping in the same line: overlap (and shared) */
		uint64_t o0 = count(e->mem, DMM_DBG_CACHELINE_OVERLAP);
		b2 = dmm_dma_map_phys(nc, pa + 300, 10, DMM_DMA_FROM_DEVICE);
		assert_ok(dmm_dma_mapping_error(nc, b2));
		assert_int_equal(count(e->mem, DMM_DBG_CACHELINE_OVERLAP), o0 + 1);
		dmm_dma_unmap_phys(nc, b2, 10, DMM_DMA_FROM_DEVICE);
		/* aligned buffers are fine; TO_DEVICE never invalidates */
		uint64_t t0 = dmm_dma_debug_total(e->mem);
		b2 = dmm_dma_map_phys(nc, pa + 4096, line * 2, DMM_DMA_FROM_DEVICE);
		assert_ok(dmm_dma_mapping_error(nc, b2));
		dmm_dma_unmap_phys(nc, b2, line * 2, DMM_DMA_FROM_DEVICE);
		b2 = dmm_dma_map_phys(nc, pa + 8192 + 7, 33, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(nc, b2));
		dmm_dma_unmap_phys(nc, b2, 33, DMM_DMA_TO_DEVICE);
		assert_int_equal(dmm_dma_debug_total(e->mem), t0);
	}

	/* leaks when the device goes away: the live mapping above */
	expect_rule(e->mem, DMM_DBG_LEAK_AT_REMOVE, assert_ok(dmm_device_destroy(nc)));

	/* reports name the device, the buffer, the rule and the site */
	assert_int_equal(dmm_dma_debug_reports(e->mem, rep, 4), 4);
	assert_int_equal(rep[3].rule, DMM_DBG_LEAK_AT_REMOVE);
	assert_string_equal(rep[3].device, "dsp");
	assert_int_equal(rep[3].phys, pa + 100);
	assert_int_equal(rep[3].size, 200);
	assert_non_null(rep[3].site);
	assert_true(rep[3].seq > rep[2].seq);
	dmm_dma_debug_dump(e->mem);

	/* per-device switch: off for this device, nothing reported */
	assert_ok(dmm_dma_debug_device(dev, 0));
	{
		uint64_t t0 = dmm_dma_debug_total(e->mem);
		dmm_dma_unmap_phys(dev, pa + 12288, 4096, DMM_DMA_TO_DEVICE);
		assert_int_equal(dmm_dma_debug_total(e->mem), t0);
	}
	assert_rc(dmm_dma_debug_device(dev, 2), -DMM_EINVAL);
	dmm_dma_debug_reset(e->mem);
	assert_int_equal(dmm_dma_debug_total(e->mem), 0);
	assert_ok(dmm_page_free(e->mem, buf, 2));
	assert_ok(dmm_device_destroy(dev));
	assert_all_checks(e->mem);
	tu_env_destroy(e);
}

/* dmm_dma_free_coherent frees only what dmm_dma_alloc_coherent gave (a
 * page the caller allocated, one page or a range, is refused and stays);
 * the page allocator does not take a coherent buffer back; sizes past the
 * largest buffer are refused before they wrap */
/* A set_memattr hook that makes the first half of an uncached change and
 * then fails (while attr_fail is set); attributes recorded per page. */
#define ATTR_PAGES (64 * MiB / DMM_PAGE_SIZE)
static uint8_t attr_of[ATTR_PAGES];
static int attr_fail;
static unsigned attr_calls;

static int attr_hook(void *ctx, dmm_phys_t pa, size_t len, enum dmm_memattr attr)
{
	dmm_pfn_t p = dmm_phys_to_pfn(pa);
	uint64_t n = len / DMM_PAGE_SIZE;
	(void)ctx;

	attr_calls++;
	assert_true(p + n <= ATTR_PAGES);
	if (attr == DMM_MEMATTR_UC && attr_fail)
		n /= 2;
	for (uint64_t i = 0; i < n; i++)
		attr_of[p + i] = (uint8_t)attr;
	return attr == DMM_MEMATTR_UC && attr_fail ? -DMM_ENOMEM : 0;
}

/* A coherent allocation for a non-coherent device whose uncached remap
 * fails: an error, counted, and no page left uncached or allocated. */
static void test_coherent_memattr_failure(void **state)
{
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_platform p;
	struct dmm_mem *mem = NULL;
	struct dmm_device_desc d = tu_desc("dsp", 32, 0, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	struct dmm_dma_stats st;
	dmm_dma_addr_t bus;
	uint64_t free0, bad;
	void *cpu = NULL;
	(void)state;

	memset(attr_of, DMM_MEMATTR_WB, sizeof(attr_of));
	attr_fail = 1;
	tu_hosted_platform(&m, "memattr", 1, &h, &p);
	p.set_memattr = attr_hook;
	assert_ok(dmm_mem_create(&m, &p, &mem));
	assert_ok(dmm_device_create(mem, &d, NULL, &dev));
	dmm_page_drain_pcp(mem);
	free0 = tu_zone_free_all(mem);
	for (size_t size = 4096; size <= 5 * 4096; size += 4096) { /* an order-block, a range */
		assert_rc(dmm_dma_alloc_coherent(dev, size, 0, &cpu, &bus), -DMM_ENOMEM);
		bad = 0;
		for (uint64_t i = 0; i < ATTR_PAGES; i++)
			bad += attr_of[i] != DMM_MEMATTR_WB;
		assert_int_equal(bad, 0);
	}
	dmm_device_get_stats(dev, &st);
	assert_int_equal(st.fail_nomem, 5);
	assert_int_equal(st.coherent_allocs, 0);
	dmm_page_drain_pcp(mem);
	assert_int_equal(tu_zone_free_all(mem), free0);
	assert_checks(mem);
	/* with a working hook the same allocation succeeds, uncached */
	attr_fail = 0;
	assert_ok(dmm_dma_alloc_coherent(dev, 4096, 0, &cpu, &bus));
	{
		dmm_phys_t pa;
		assert_ok(dmm_dma_bus_to_phys(dev, bus, &pa));
		assert_int_equal(attr_of[dmm_phys_to_pfn(pa)], DMM_MEMATTR_UC);
	}
	assert_ok(dmm_dma_free_coherent(dev, 4096, cpu, bus));
	assert_ok(dmm_device_destroy(dev));
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(h);
}

/* A coherent buffer of a non-coherent device with a pinned page: its free
 * is refused (-DMM_EBUSY) and the buffer stays as it was, marked and
 * uncached; after the unpin it frees, back to write-back. */
static void test_free_coherent_pinned(void **state)
{
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_platform p;
	struct dmm_mem *mem = NULL;
	struct dmm_device_desc d = tu_desc("dsp", 32, 0, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	struct dmm_dma_stats st;
	uint64_t free0;
	(void)state;

	memset(attr_of, DMM_MEMATTR_WB, sizeof(attr_of));
	attr_fail = 0;
	tu_hosted_platform(&m, "pinned-coherent", 1, &h, &p);
	p.set_memattr = attr_hook;
	assert_ok(dmm_mem_create(&m, &p, &mem));
	assert_ok(dmm_device_create(mem, &d, NULL, &dev));
	dmm_page_drain_pcp(mem);
	free0 = tu_zone_free_all(mem);
	for (size_t size = 4096; size <= 3 * 4096; size += 2 * 4096) { /* an order-block, a range */
		dmm_dma_addr_t bus;
		dmm_phys_t pa;
		dmm_pfn_t pinned;
		void *cpu;
		uint64_t n = size / DMM_PAGE_SIZE;
		unsigned calls;

		assert_ok(dmm_dma_alloc_coherent(dev, size, 0, &cpu, &bus));
		assert_ok(dmm_dma_bus_to_phys(dev, bus, &pa));
		assert_ok(dmm_page_pin(mem, dmm_phys_to_pfn(pa), 0, &pinned, NULL));
		calls = attr_calls;
		assert_rc(dmm_dma_free_coherent(dev, size, cpu, bus), -DMM_EBUSY);
		assert_int_equal(attr_calls, calls); /* refused before any change */
		for (uint64_t i = 0; i < n; i++)
			assert_int_equal(attr_of[dmm_phys_to_pfn(pa) + i], DMM_MEMATTR_UC);
		/* still a coherent buffer: the page allocator refuses it */
		if (n == 1)
			assert_rc(dmm_page_free(mem, dmm_phys_to_pfn(pa), 0), -DMM_EBUSY);
		else
			assert_rc(dmm_free_range(mem, dmm_phys_to_pfn(pa), n), -DMM_EBUSY);
		assert_ok(dmm_page_unpin(mem, pinned, 0));
		assert_ok(dmm_dma_free_coherent(dev, size, cpu, bus));
		for (uint64_t i = 0; i < n; i++)
			assert_int_equal(attr_of[dmm_phys_to_pfn(pa) + i], DMM_MEMATTR_WB);
	}
	dmm_device_get_stats(dev, &st);
	assert_int_equal(st.coherent_allocs, 2);
	assert_int_equal(st.coherent_frees, 2);
	dmm_page_drain_pcp(mem);
	assert_int_equal(tu_zone_free_all(mem), free0);
	assert_checks(mem);
	assert_ok(dmm_device_destroy(dev));
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(h);
}

/* A coherent free without an IOMMU, two-step: in the window where the
 * buffer is made write-back it is claimed (a pin fails with -DMM_EAGAIN,
 * a second free finds nothing, every check holds); afterwards the pages
 * are free and counted exactly as by dmm_page_free / dmm_free_range. */
static struct dmm_mem *fw_mem;
static struct dmm_device *fw_dev;
static dmm_phys_t fw_pa;
static size_t fw_size;
static void *fw_cpu;
static dmm_dma_addr_t fw_bus;
static unsigned fw_seen;

static int fw_hook(void *ctx, dmm_phys_t pa, size_t len, enum dmm_memattr attr)
{
	struct dmm_mem *mem = fw_mem;
	dmm_pfn_t pinned;
	(void)ctx;
	(void)len;

	if (attr != DMM_MEMATTR_WB || !mem || pa != fw_pa)
		return 0;
	fw_mem = NULL;
	fw_seen++;
	assert_rc(dmm_page_pin(mem, dmm_phys_to_pfn(pa), 0, &pinned, NULL), -DMM_EAGAIN);
	assert_rc(dmm_dma_free_coherent(fw_dev, fw_size, fw_cpu, fw_bus), -DMM_ENOENT);
	assert_checks(mem);
	return 0;
}

static void zone_sums(struct dmm_mem *mem, uint64_t *free_ok, uint64_t *range_free, uint64_t *bad)
{
	*free_ok = *range_free = *bad = 0;
	for (unsigned z = 0; z < dmm_mem_nr_zones(mem); z++) {
		struct dmm_zone_info zi;
		assert_ok(dmm_zone_get_info(mem, z, &zi));
		*free_ok += zi.stats.free_ok;
		*range_free += zi.stats.range_free;
		*bad += zi.stats.bad_free;
	}
}

static void test_free_coherent_two_step(void **state)
{
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_platform p;
	struct dmm_mem *mem = NULL;
	struct dmm_device_desc d = tu_desc("dsp", 32, 0, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	uint64_t free0;
	(void)state;

	tu_hosted_platform(&m, "two-step", 1, &h, &p);
	p.set_memattr = fw_hook;
	assert_ok(dmm_mem_create(&m, &p, &mem));
	assert_ok(dmm_device_create(mem, &d, NULL, &dev));
	dmm_page_drain_pcp(mem);
	free0 = tu_zone_free_all(mem);
	for (size_t pages = 1; pages <= 5; pages++) { /* orders 0, 1, 2; ranges of 3 and 5 */
		uint64_t f0, r0, b0, f1, r1, b1;

		fw_size = pages * DMM_PAGE_SIZE;
		assert_ok(dmm_dma_alloc_coherent(dev, fw_size, 0, &fw_cpu, &fw_bus));
		assert_ok(dmm_dma_bus_to_phys(dev, fw_bus, &fw_pa));
		zone_sums(mem, &f0, &r0, &b0);
		fw_mem = mem;
		fw_dev = dev;
		fw_seen = 0;
		assert_ok(dmm_dma_free_coherent(dev, fw_size, fw_cpu, fw_bus));
		assert_int_equal(fw_seen, 1);
		zone_sums(mem, &f1, &r1, &b1);
		assert_int_equal(b1, b0);
		if (pages & (pages - 1)) {
			assert_int_equal(r1, r0 + 1);
			assert_int_equal(f1, f0);
		} else {
			assert_int_equal(f1, f0 + 1);
			assert_int_equal(r1, r0);
		}
		assert_rc(dmm_dma_free_coherent(dev, fw_size, fw_cpu, fw_bus), -DMM_ENOENT);
		dmm_page_drain_pcp(mem);
		assert_int_equal(tu_zone_free_all(mem), free0);
		assert_checks(mem);
	}
	assert_ok(dmm_device_destroy(dev));
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(h);
}

static void test_free_coherent_misuse(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device_desc d = tu_desc("nic", 64, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	struct dmm_dma_stats st;
	dmm_dma_addr_t bus;
	dmm_pfn_t pfn, r;
	void *cpu;

	(void)state;
	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	assert_ok(dmm_page_alloc(e->mem, 0, NULL, 0, &pfn));
	bus = dmm_dma_map_page(dev, pfn, 0, 4096, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(dev, bus));
	assert_rc(dmm_dma_free_coherent(dev, 4096, dmm_pfn_to_virt(e->mem, pfn), bus), -DMM_ENOENT);
	dmm_dma_unmap_page(dev, bus, 4096, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_page_free(e->mem, pfn, 0)); /* still the caller's */
	const struct dmm_constraint any = { 0, DMM_PHYS_MAX, 0, 0, 0, 0 };
	assert_ok(dmm_alloc_range(e->mem, &any, 3, 0, &r));
	assert_rc(dmm_dma_free_coherent(dev, 3 * 4096, dmm_pfn_to_virt(e->mem, r),
					dmm_dma_phys_to_bus(dev, dmm_pfn_to_phys(r))),
		  -DMM_ENOENT);
	assert_ok(dmm_free_range(e->mem, r, 3));
	for (size_t size = 4096; size <= 3 * 4096; size += 2 * 4096) {
		assert_ok(dmm_dma_alloc_coherent(dev, size, 0, &cpu, &bus));
		dmm_phys_t pa;
		assert_ok(dmm_dma_bus_to_phys(dev, bus, &pa));
		pfn = dmm_phys_to_pfn(pa);
		if (size == 4096)
			assert_rc(dmm_page_free(e->mem, pfn, 0), -DMM_EBUSY);
		else
			assert_rc(dmm_free_range(e->mem, pfn, 3), -DMM_EBUSY);
		dmm_device_get_stats(dev, &st);
		assert_rc(dmm_dma_free_coherent(dev, SIZE_MAX, cpu, bus), -DMM_EINVAL);
		assert_rc(dmm_dma_free_coherent(dev, SIZE_MAX - 4095, cpu, bus), -DMM_EINVAL);
		assert_ok(dmm_dma_free_coherent(dev, size, cpu, bus));
		assert_rc(dmm_dma_free_coherent(dev, size, cpu, bus), -DMM_ENOENT); /* twice */
	}
	assert_rc(dmm_dma_alloc_coherent(dev, SIZE_MAX - 4095, 0, &cpu, &bus), -DMM_EINVAL);
	assert_ok(dmm_device_destroy(dev));
	assert_all_checks(e->mem);
	tu_env_destroy(e);
}

/*
 * Two threads free one coherent buffer at once, every round (both leave a
 * spinning barrier together): exactly one frees it, the other is refused
 * with -DMM_ENOENT, and the refused one leaves the pages alone. The check
 * after each round fails if a free page still carries the coherent mark
 * (which the loser used to put back after the winner had freed the page:
 * the next user of the page could then not free it).
 */
struct coherent_duel {
	struct dmm_device *dev;
	struct tu_spin_barrier bar;
	unsigned rounds;
	size_t size;
	void *cpu;
	dmm_dma_addr_t bus;
	int rc1;
};

static void *coherent_duel_thread(void *arg)
{
	struct coherent_duel *d = arg;

	for (unsigned i = 0; i < d->rounds; i++) {
		tu_spin_wait(&d->bar); /* the buffer is there */
		d->rc1 = dmm_dma_free_coherent(d->dev, d->size, d->cpu, d->bus);
		tu_spin_wait(&d->bar); /* both frees done */
	}
	return NULL;
}

static void test_free_coherent_race(void **state)
{
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_platform p;
	struct dmm_mem *mem = NULL;
	struct dmm_device_desc desc = tu_desc("nic", 64, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	struct dmm_dma_stats st;
	uint64_t free0;
	(void)state;

	tu_hosted_platform(&m, "coherent-race", 2, &h, &p);
	assert_ok(dmm_mem_create(&m, &p, &mem));
	assert_ok(dmm_device_create(mem, &desc, NULL, &dev));
	dmm_page_drain_pcp(mem);
	free0 = tu_zone_free_all(mem);
	for (size_t size = 4096; size <= 3 * 4096; size += 2 * 4096) { /* a page, a range */
		struct coherent_duel d = { .dev = dev, .rounds = 1500, .size = size };
		pthread_t t;
		int failed = 0;

		assert_int_equal(pthread_create(&t, NULL, coherent_duel_thread, &d), 0);
		for (unsigned i = 0; i < d.rounds; i++) {
			int rc0, rc1;
			if (!failed)
				assert_ok(dmm_dma_alloc_coherent(dev, size, 0, &d.cpu, &d.bus));
			tu_spin_wait(&d.bar);
			rc0 = failed ? 0 : dmm_dma_free_coherent(dev, size, d.cpu, d.bus);
			tu_spin_wait(&d.bar);
			rc1 = d.rc1;
			if (failed)
				continue;
			/* judged after the other thread is past its free; it
			 * waits at the barrier of the next round */
			if ((rc0 == 0) == (rc1 == 0) || (rc0 ? rc0 : rc1) != -DMM_ENOENT ||
			    dmm_page_alloc_check(mem) || dmm_range_check(mem)) {
				failed = 1; /* let the thread finish its rounds first */
				print_error("round %u, %zu bytes: frees returned %s and %s\n", i, size, dmm_errname(rc0),
					    dmm_errname(rc1));
				d.cpu = NULL; /* the thread's remaining frees are refused */
			}
		}
		assert_int_equal(pthread_join(t, NULL), 0);
		assert_false(failed);
	}
	dmm_device_get_stats(dev, &st);
	assert_int_equal(st.coherent_frees, 3000);
	assert_int_equal(st.coherent_allocs, 3000);
	dmm_page_drain_pcp(mem);
	assert_int_equal(tu_zone_free_all(mem), free0);
	assert_checks(mem);
	assert_ok(dmm_device_destroy(dev));
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(h);
}

/*
 * A coherent free racing a page free of the same page (misuse: the page
 * allocator refuses a coherent buffer while it carries the mark, but the
 * coherent free takes the mark off before it frees). When the page free
 * wins in that window, the coherent free finds the page gone
 * (-DMM_ENOENT) and must leave it unmarked: a free page with the coherent
 * mark fails the page allocator's check, and its next user could not free
 * it.
 */
struct misuse_duel {
	struct dmm_mem *mem;
	struct tu_spin_barrier bar;
	unsigned rounds;
	dmm_pfn_t pfn;
	int rc1;
};

static void *misuse_duel_thread(void *arg)
{
	struct misuse_duel *d = arg;

	for (unsigned i = 0; i < d->rounds; i++) {
		tu_spin_wait(&d->bar);
		d->rc1 = dmm_page_free(d->mem, d->pfn, 0);
		tu_spin_wait(&d->bar);
	}
	return NULL;
}

static void test_free_coherent_vs_page_free(void **state)
{
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_platform p;
	struct dmm_mem *mem = NULL;
	struct dmm_device_desc desc = tu_desc("nic", 64, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	struct misuse_duel d = { .rounds = 3000 };
	pthread_t t;
	uint64_t free0;
	unsigned lost = 0;
	int failed = 0;
	(void)state;

	tu_hosted_platform(&m, "coherent-misuse", 2, &h, &p);
	assert_ok(dmm_mem_create(&m, &p, &mem));
	assert_ok(dmm_device_create(mem, &desc, NULL, &dev));
	dmm_page_drain_pcp(mem);
	free0 = tu_zone_free_all(mem);
	d.mem = mem;
	d.pfn = (dmm_pfn_t)-1;
	assert_int_equal(pthread_create(&t, NULL, misuse_duel_thread, &d), 0);
	for (unsigned i = 0; i < d.rounds; i++) {
		dmm_dma_addr_t bus = 0;
		dmm_phys_t pa;
		void *cpu = NULL;
		int rc0;

		if (!failed) {
			assert_ok(dmm_dma_alloc_coherent(dev, 4096, 0, &cpu, &bus));
			assert_ok(dmm_dma_bus_to_phys(dev, bus, &pa));
			d.pfn = dmm_phys_to_pfn(pa);
		}
		tu_spin_wait(&d.bar);
		rc0 = failed ? 0 : dmm_dma_free_coherent(dev, 4096, cpu, bus);
		tu_spin_wait(&d.bar);
		if (failed)
			continue;
		/* exactly one of the two frees the page */
		if ((rc0 == 0) == (d.rc1 == 0) || dmm_page_alloc_check(mem)) {
			failed = 1;
			print_error("round %u: coherent free %s, page free %s\n", i, dmm_errname(rc0),
				    dmm_errname(d.rc1));
			d.pfn = (dmm_pfn_t)-1; /* the thread's remaining frees are refused */
		}
		lost += rc0 != 0;
	}
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_false(failed);
	print_message("%u of %u rounds won by the page free\n", lost, d.rounds);
	dmm_page_drain_pcp(mem);
	assert_int_equal(tu_zone_free_all(mem), free0);
	assert_checks(mem);
	assert_ok(dmm_device_destroy(dev));
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_devices_and_limits),
		cmocka_unit_test(test_offsets_and_ranges),
		cmocka_unit_test(test_coherent_placement),
		cmocka_unit_test(test_coherent_from_area_uncached),
		cmocka_unit_test(test_streaming_and_sg),
		cmocka_unit_test(test_debug_rules),
		cmocka_unit_test(test_free_coherent_misuse),
		cmocka_unit_test(test_coherent_memattr_failure),
		cmocka_unit_test(test_free_coherent_race),
		cmocka_unit_test(test_free_coherent_vs_page_free),
		cmocka_unit_test(test_free_coherent_pinned),
		cmocka_unit_test(test_free_coherent_two_step),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

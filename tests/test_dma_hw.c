/* SPDX-License-Identifier: MIT */
/*
 * The DMA API against the hardware model: data round trips in every
 * direction on coherent and non-coherent devices, what a forgotten sync does
 * (stale data, lost data) exactly as on real hardware, the small-object
 * corruption (two objects in one cache line), and the DMA debug rules that
 * need to see accesses: the CPU touching a buffer the device owns, a device
 * touching memory it has no mapping for, an address truncated by the
 * device's address bits.
 */
#include "tu_dma.h"

#include "dma_sim.h"

struct hwenv {
	struct dmm_hw *hw;
	struct dmm_mem *mem;
};

static void hwenv_create(struct hwenv *e, const char *profile, int prefetch)
{
	struct dmm_machine m;
	struct dmm_hw_opts o;

	tu_profile(profile, &m);
	dmm_hw_opts_default(&o);
	o.nr_cpus = 2;
	o.prefetch = prefetch;
	o.log_level = DMM_LOG_ERR;
	assert_ok(dmm_hw_mem_create(&m, &o, &e->hw, &e->mem));
	assert_ok(dmm_dma_debug_enable(e->mem, 1));
	dmm_sim_attach_debug(e->hw, e->mem);
}

static void hwenv_destroy(struct hwenv *e)
{
	dmm_sim_attach_debug(e->hw, NULL);
	assert_checks(e->mem);
	assert_ok(dmm_hw_check(e->hw));
	dmm_hw_mem_destroy(e->hw, e->mem);
}

static uint64_t count(struct dmm_mem *mem, enum dmm_dma_debug_rule r)
{
	uint64_t c[DMM_NR_DBG_RULES];
	dmm_dma_debug_counts(mem, c);
	return c[r];
}

static void pattern(uint8_t *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(seed * 131u + i * 7u);
}

static dmm_phys_t buffer(struct hwenv *e, unsigned order)
{
	dmm_pfn_t p;
	assert_ok(dmm_page_alloc(e->mem, order, NULL, 0, &p));
	return dmm_pfn_to_phys(p);
}

/* Every direction, both kinds of device, single and scatterlist: the bytes
 * arrive and no debug rule fires. */
static void test_round_trips(void **state)
{
	(void)state;
	for (int coherent = 0; coherent <= 1; coherent++) {
		struct hwenv e;
		struct dmm_sim_dev sd;
		struct dmm_device_desc d = tu_desc(coherent ? "coh" : "noncoh", 64, coherent, DMM_DEVICE_CMA_NONE);
		static uint8_t want[16384], got[16384];
		dmm_phys_t pa;
		dmm_dma_addr_t bus;

		hwenv_create(&e, "phone", 1);
		assert_ok(dmm_sim_device_create(e.mem, e.hw, &d, NULL, &sd));
		pa = buffer(&e, 2);

		/* TO_DEVICE: CPU writes, device reads */
		pattern(want, 16384, 1);
		assert_ok(dmm_hw_cpu_write(e.hw, pa, want, 16384));
		bus = dmm_dma_map_phys(sd.dev, pa, 16384, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(sd.dev, bus));
		assert_ok(dmm_hw_dev_read(sd.hw, bus, got, 16384));
		assert_memory_equal(got, want, 16384);
		dmm_dma_unmap_phys(sd.dev, bus, 16384, DMM_DMA_TO_DEVICE);

		/* FROM_DEVICE: the CPU read the buffer before (lines cached) */
		assert_ok(dmm_hw_cpu_read(e.hw, pa, got, 16384));
		bus = dmm_dma_map_phys(sd.dev, pa, 16384, DMM_DMA_FROM_DEVICE);
		assert_ok(dmm_dma_mapping_error(sd.dev, bus));
		pattern(want, 16384, 2);
		assert_ok(dmm_hw_dev_write(sd.hw, bus, want, 16384));
		dmm_dma_unmap_phys(sd.dev, bus, 16384, DMM_DMA_FROM_DEVICE);
		assert_ok(dmm_hw_cpu_read(e.hw, pa, got, 16384));
		assert_memory_equal(got, want, 16384);

		/* BIDIRECTIONAL: device reads, transforms, writes back */
		pattern(want, 4096, 3);
		assert_ok(dmm_hw_cpu_write(e.hw, pa, want, 4096));
		bus = dmm_dma_map_phys(sd.dev, pa, 4096, DMM_DMA_BIDIRECTIONAL);
		assert_ok(dmm_dma_mapping_error(sd.dev, bus));
		assert_ok(dmm_hw_dev_read(sd.hw, bus, got, 4096));
		assert_memory_equal(got, want, 4096);
		for (size_t i = 0; i < 4096; i++)
			got[i] ^= 0x5a;
		assert_ok(dmm_hw_dev_write(sd.hw, bus, got, 4096));
		dmm_dma_unmap_phys(sd.dev, bus, 4096, DMM_DMA_BIDIRECTIONAL);
		assert_ok(dmm_hw_cpu_read(e.hw, pa, want, 4096));
		assert_memory_equal(got, want, 4096);

		/* a scatterlist, FROM_DEVICE, with sync_for_cpu in the middle */
		{
			struct dmm_sg sg[4];
			int n;
			dmm_sg_init(sg, 4);
			for (unsigned i = 0; i < 4; i++)
				dmm_sg_set_phys(&sg[i], pa + (3 - i) * 4096, 4096); /* backwards: 4 segments */
			n = dmm_dma_map_sg(sd.dev, sg, 4, DMM_DMA_FROM_DEVICE);
			assert_int_equal(n, 4);
			for (int i = 0; i < n; i++) {
				pattern(want, 4096, 10u + (unsigned)i);
				assert_ok(dmm_hw_dev_write(sd.hw, sg[i].dma_address, want, 4096));
			}
			dmm_dma_sync_sg_for_cpu(sd.dev, sg, 4, DMM_DMA_FROM_DEVICE);
			for (int i = 0; i < n; i++) {
				pattern(want, 4096, 10u + (unsigned)i);
				assert_ok(dmm_hw_cpu_read(e.hw, sg[i].phys, got, 4096));
				assert_memory_equal(got, want, 4096);
			}
			dmm_dma_sync_sg_for_device(sd.dev, sg, 4, DMM_DMA_FROM_DEVICE);
			dmm_dma_unmap_sg(sd.dev, sg, 4, DMM_DMA_FROM_DEVICE);
		}

		/* a coherent buffer: no maintenance needed in either direction */
		{
			void *cpu;
			dmm_dma_addr_t cb;
			dmm_phys_t cpa;
			assert_ok(dmm_dma_alloc_coherent(sd.dev, 8192, 0, &cpu, &cb));
			assert_ok(dmm_dma_bus_to_phys(sd.dev, cb, &cpa));
			if (!coherent)
				assert_int_equal(dmm_hw_memattr(e.hw, cpa), DMM_MEMATTR_UC);
			pattern(want, 8192, 4);
			assert_ok(dmm_hw_cpu_write(e.hw, cpa, want, 8192));
			assert_ok(dmm_hw_dev_read(sd.hw, cb, got, 8192));
			assert_memory_equal(got, want, 8192);
			pattern(want, 8192, 5);
			assert_ok(dmm_hw_dev_write(sd.hw, cb, want, 8192));
			assert_ok(dmm_hw_cpu_read(e.hw, cpa, got, 8192));
			assert_memory_equal(got, want, 8192);
			assert_ok(dmm_dma_free_coherent(sd.dev, 8192, cpu, cb));
			assert_int_equal(dmm_hw_memattr(e.hw, cpa), DMM_MEMATTR_WB);
		}
		assert_int_equal(dmm_dma_debug_total(e.mem), 0);
		assert_ok(dmm_page_free(e.mem, dmm_phys_to_pfn(pa), 2));
		assert_ok(dmm_sim_device_destroy(&sd));
		hwenv_destroy(&e);
	}
}

/* Forgetting a sync on a non-coherent device does what hardware does. */
static void test_forgotten_syncs(void **state)
{
	struct hwenv e;
	struct dmm_sim_dev sd;
	struct dmm_device_desc d = tu_desc("cam", 64, 0, DMM_DEVICE_CMA_NONE);
	uint8_t a[256], b[256];
	dmm_phys_t pa;
	dmm_dma_addr_t bus;
	(void)state;

	hwenv_create(&e, "phone", 0);
	assert_ok(dmm_sim_device_create(e.mem, e.hw, &d, NULL, &sd));
	pa = buffer(&e, 0);

	/* 1. stale data: the device wrote, the CPU reads without sync_for_cpu
	 *    and sees what its cache (filled by a speculative fetch) holds */
	memset(a, 0x11, sizeof(a));
	assert_ok(dmm_hw_cpu_write(e.hw, pa, a, sizeof(a)));
	bus = dmm_dma_map_phys(sd.dev, pa, 256, DMM_DMA_BIDIRECTIONAL);
	assert_ok(dmm_dma_mapping_error(sd.dev, bus));
	assert_true(dmm_hw_prefetch(e.hw, pa, 256) >= 0); /* the CPU speculates */
	memset(a, 0x22, sizeof(a));
	assert_ok(dmm_hw_dev_write(sd.hw, bus, a, sizeof(a)));
	dmm_dma_debug_device(sd.dev, 0); /* the misuse below is the point here */
	assert_ok(dmm_hw_cpu_read(e.hw, pa, b, sizeof(b)));
	assert_int_equal(b[0], 0x11); /* stale */
	dmm_dma_debug_device(sd.dev, -1);
	dmm_dma_sync_single_for_cpu(sd.dev, bus, 256, DMM_DMA_BIDIRECTIONAL);
	assert_ok(dmm_hw_cpu_read(e.hw, pa, b, sizeof(b)));
	assert_int_equal(b[0], 0x22); /* after the sync: the device's data */

	/* 2. the CPU writes while the device owns the buffer and forgets
	 *    sync_for_device: the device reads the old bytes, debug says so */
	dmm_dma_sync_single_for_device(sd.dev, bus, 256, DMM_DMA_BIDIRECTIONAL);
	memset(a, 0x33, sizeof(a));
	{
		uint64_t c0 = count(e.mem, DMM_DBG_CPU_OWNED_BY_DEVICE);
		assert_ok(dmm_hw_cpu_write(e.hw, pa, a, sizeof(a)));
		assert_int_equal(count(e.mem, DMM_DBG_CPU_OWNED_BY_DEVICE), c0 + 1);
	}
	assert_ok(dmm_hw_dev_read(sd.hw, bus, b, sizeof(b)));
	assert_int_equal(b[0], 0x22); /* the CPU's 0x33 is still in its cache */
	dmm_dma_sync_single_for_device(sd.dev, bus, 256, DMM_DMA_BIDIRECTIONAL);
	assert_ok(dmm_hw_dev_read(sd.hw, bus, b, sizeof(b)));
	assert_int_equal(b[0], 0x33);
	dmm_dma_unmap_phys(sd.dev, bus, 256, DMM_DMA_BIDIRECTIONAL);

	/* 3. the same on a coherent device needs nothing */
	{
		struct dmm_sim_dev cd;
		struct dmm_device_desc c = tu_desc("gpu", 64, 1, DMM_DEVICE_CMA_NONE);
		assert_ok(dmm_sim_device_create(e.mem, e.hw, &c, NULL, &cd));
		bus = dmm_dma_map_phys(cd.dev, pa, 256, DMM_DMA_BIDIRECTIONAL);
		assert_ok(dmm_dma_mapping_error(cd.dev, bus));
		assert_true(dmm_hw_prefetch(e.hw, pa, 256) >= 0);
		memset(a, 0x44, sizeof(a));
		assert_ok(dmm_hw_dev_write(cd.hw, bus, a, sizeof(a)));
		dmm_dma_unmap_phys(cd.dev, bus, 256, DMM_DMA_BIDIRECTIONAL);
		assert_ok(dmm_hw_cpu_read(e.hw, pa, b, sizeof(b)));
		assert_int_equal(b[0], 0x44);
		assert_ok(dmm_sim_device_destroy(&cd));
	}
	assert_ok(dmm_page_free(e.mem, dmm_phys_to_pfn(pa), 0));
	assert_ok(dmm_sim_device_destroy(&sd));
	hwenv_destroy(&e);
}

/* Two small objects share a cache line; one is mapped FROM_DEVICE for a
 * non-coherent device while the CPU writes the other. Invalidating the
 * line at unmap throws the neighbour's update away; debug reports it. */
static void test_small_object_corruption(void **state)
{
	struct hwenv e;
	struct dmm_sim_dev sd;
	struct dmm_device_desc d = tu_desc("uart", 64, 0, DMM_DEVICE_CMA_NONE);
	uint8_t v[32];
	dmm_phys_t pa, obj_a, obj_b;
	dmm_dma_addr_t bus;
	uint64_t shared0;
	(void)state;

	hwenv_create(&e, "phone", 0);
	assert_ok(dmm_sim_device_create(e.mem, e.hw, &d, NULL, &sd));
	pa = buffer(&e, 0);
	obj_a = pa;      /* a 32-byte receive buffer */
	obj_b = pa + 32; /* its neighbour, in the same cache line */
	memset(v, 0xb0, 32);
	assert_ok(dmm_hw_cpu_write(e.hw, obj_b, v, 32));

	shared0 = count(e.mem, DMM_DBG_CACHELINE_SHARED);
	bus = dmm_dma_map_phys(sd.dev, obj_a, 32, DMM_DMA_FROM_DEVICE);
	assert_ok(dmm_dma_mapping_error(sd.dev, bus));
	assert_int_equal(count(e.mem, DMM_DBG_CACHELINE_SHARED), shared0 + 1); /* reported */

	memset(v, 0xb1, 32);
	assert_ok(dmm_hw_cpu_write(e.hw, obj_b, v, 32)); /* the neighbour is updated... */
	assert_int_equal(dmm_hw_line_state(e.hw, obj_b), DMM_HW_LINE_DIRTY);
	memset(v, 0xa1, 32);
	assert_ok(dmm_hw_dev_write(sd.hw, bus, v, 32)); /* ...while the device receives */
	dmm_dma_unmap_phys(sd.dev, bus, 32, DMM_DMA_FROM_DEVICE);

	assert_ok(dmm_hw_cpu_read(e.hw, obj_a, v, 32));
	assert_int_equal(v[0], 0xa1); /* the received data is there */
	assert_ok(dmm_hw_cpu_read(e.hw, obj_b, v, 32));
	assert_int_equal(v[0], 0xb0); /* the neighbour's update is lost */
	{
		struct dmm_hw_stats st;
		dmm_hw_get_stats(e.hw, &st);
		assert_true(st.dirty_discarded > 0);
	}
	assert_ok(dmm_page_free(e.mem, dmm_phys_to_pfn(pa), 0));
	assert_ok(dmm_sim_device_destroy(&sd));
	hwenv_destroy(&e);
}

/* Accesses the debug layer sees through the model. */
static void test_access_rules(void **state)
{
	struct hwenv e;
	struct dmm_sim_dev sd, narrow;
	struct dmm_device_desc d = tu_desc("nic", 64, 1, DMM_DEVICE_CMA_NONE), n = tu_desc("dma32", 32, 1, DMM_DEVICE_CMA_NONE);
	uint8_t v[64];
	dmm_phys_t pa, high;
	dmm_dma_addr_t bus;
	uint64_t c0;
	(void)state;

	hwenv_create(&e, "pc", 0);
	assert_ok(dmm_sim_device_create(e.mem, e.hw, &d, NULL, &sd));
	assert_ok(dmm_sim_device_create(e.mem, e.hw, &n, NULL, &narrow));
	pa = buffer(&e, 0);

	/* a device touching memory it has no mapping for */
	c0 = count(e.mem, DMM_DBG_DEVICE_NO_MAPPING);
	assert_ok(dmm_hw_dev_read(sd.hw, pa, v, 64));
	assert_int_equal(count(e.mem, DMM_DBG_DEVICE_NO_MAPPING), c0 + 1);

	/* a device writing a TO_DEVICE mapping */
	bus = dmm_dma_map_phys(sd.dev, pa, 4096, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(sd.dev, bus));
	c0 = count(e.mem, DMM_DBG_DEVICE_WRONG_DIR);
	assert_ok(dmm_hw_dev_write(sd.hw, bus, v, 64));
	assert_int_equal(count(e.mem, DMM_DBG_DEVICE_WRONG_DIR), c0 + 1);
	/* the device touching it after the CPU took it back */
	dmm_dma_sync_single_for_cpu(sd.dev, bus, 4096, DMM_DMA_TO_DEVICE);
	c0 = count(e.mem, DMM_DBG_DEVICE_CPU_OWNED);
	assert_ok(dmm_hw_dev_read(sd.hw, bus, v, 64));
	assert_int_equal(count(e.mem, DMM_DBG_DEVICE_CPU_OWNED), c0 + 1);
	dmm_dma_unmap_phys(sd.dev, bus, 4096, DMM_DMA_TO_DEVICE);

	/* a 32-bit device handed a physical address above 4 GiB (a driver
	 * that skipped the mapping): the bus drops the high bits */
	{
		const struct dmm_constraint above = { 4 * GiB, DMM_PHYS_MAX, 0, 0, 0, 0 };
		dmm_pfn_t p;
		assert_ok(dmm_page_alloc(e.mem, 0, &above, 0, &p));
		high = dmm_pfn_to_phys(p);
		c0 = count(e.mem, DMM_DBG_ADDRESS_TRUNCATED);
		dmm_hw_dev_read(narrow.hw, high, v, 64); /* may fault if the truncated address is no RAM */
		assert_int_equal(count(e.mem, DMM_DBG_ADDRESS_TRUNCATED), c0 + 1);
		{
			struct dmm_hw_dev_stats st;
			dmm_hw_dev_get_stats(narrow.hw, &st);
			assert_int_equal(st.truncations, 1);
		}
		/* the API never hands such an address out: out of reach */
		bus = dmm_dma_map_phys(narrow.dev, high, 64, DMM_DMA_TO_DEVICE);
		assert_rc(dmm_dma_mapping_error(narrow.dev, bus), -DMM_ERANGE);
		assert_ok(dmm_page_free(e.mem, p, 0));
	}
	assert_ok(dmm_page_free(e.mem, dmm_phys_to_pfn(pa), 0));
	assert_ok(dmm_sim_device_destroy(&narrow));
	assert_ok(dmm_sim_device_destroy(&sd));
	hwenv_destroy(&e);
}

/* A bus with a device on it cannot be destroyed: both halves of the bus
 * stay as they were (its engine still moves data) until the child is
 * gone; then it goes, once, and a second destroy is refused. */
static void test_destroy_busy_bus(void **state)
{
	struct hwenv e;
	struct dmm_sim_dev bus, child;
	struct dmm_device_desc b = tu_desc("bus", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device_desc c = tu_desc("nic", 64, 1, DMM_DEVICE_CMA_NONE);
	uint8_t a[64], got[64];
	dmm_phys_t pa;
	(void)state;

	hwenv_create(&e, "pc", 0);
	b.is_bus = 1;
	assert_ok(dmm_sim_device_create(e.mem, e.hw, &b, NULL, &bus));
	assert_ok(dmm_sim_device_create(e.mem, e.hw, &c, bus.dev, &child));
	assert_rc(dmm_sim_device_destroy(&bus), -DMM_EBUSY);
	assert_non_null(bus.dev);
	assert_non_null(bus.hw);
	/* the bus's engine is still there and still works */
	{
		dmm_pfn_t p;
		assert_ok(dmm_page_alloc(e.mem, 0, NULL, DMM_GFP_DMA32, &p));
		pa = dmm_pfn_to_phys(p);
	}
	pattern(a, sizeof(a), 5);
	assert_ok(dmm_hw_ram_write(e.hw, pa, a, sizeof(a)));
	assert_ok(dmm_hw_dev_read(bus.hw, pa, got, sizeof(got)));
	assert_memory_equal(a, got, sizeof(a));
	assert_ok(dmm_page_free(e.mem, dmm_phys_to_pfn(pa), 0));

	assert_ok(dmm_sim_device_destroy(&child));
	assert_ok(dmm_sim_device_destroy(&bus));
	assert_rc(dmm_sim_device_destroy(&bus), -DMM_EINVAL);
	hwenv_destroy(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trips),
		cmocka_unit_test(test_forgotten_syncs),
		cmocka_unit_test(test_small_object_corruption),
		cmocka_unit_test(test_access_rules),
		cmocka_unit_test(test_destroy_busy_bus),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

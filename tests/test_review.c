/* SPDX-License-Identifier: MIT */
/*
 * Regression tests for defects found in review of the DMA layer and the
 * contiguous areas: address wrap in scatterlists, dma-ranges validation
 * and reach, scatterlist merge overflow, boundary of coherent buffers from
 * an area, cache state of uncached area buffers, and DMA debug switched on
 * while buffers are live. Then the bounce buffers and the IOMMU: an unmap
 * inside a bounced mapping behind an IOMMU, the unmap count of a refused
 * unmap, a transient pool too small for its run, the page allocator and a
 * live coherent buffer behind an IOMMU, and the per-device order of
 * deferred mappings (also when an unmap serves the queue while a callback
 * runs).
 */
#include <pthread.h>

#include "tu_dma.h"

#include <dmamem/iommu.h>
#include <dmamem/swiotlb.h>

#include "dma_sim.h"

/* 64 MiB low and 64 MiB above 4 GiB, on a platform that may be adjusted
 * first (@adjust NULL: the hosted one as it is). */
static struct dmm_mem *two_banks(struct dmm_hosted **h, void (*adjust)(struct dmm_platform *p))
{
	struct dmm_machine m;
	struct dmm_platform p;
	struct dmm_mem *mem;

	tu_machine(&m, "banks");
	tu_add_ram(&m, 0, 64 * MiB);
	tu_add_ram(&m, 4 * GiB, 64 * MiB);
	assert_ok(dmm_hosted_create(&m, 2, DMM_LOG_WARN, h));
	p = *dmm_hosted_platform(*h);
	if (adjust)
		adjust(&p);
	assert_ok(dmm_mem_create(&m, &p, &mem));
	return mem;
}

static void banks_destroy(struct dmm_hosted *h, struct dmm_mem *mem)
{
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(h);
}

static dmm_phys_t high_page(struct dmm_mem *mem, unsigned order)
{
	const struct dmm_constraint above = { 4 * GiB, DMM_PHYS_MAX, 0, 0, 0, 0 };
	dmm_pfn_t pfn;

	assert_ok(dmm_page_alloc(mem, order, &above, 0, &pfn));
	return dmm_pfn_to_phys(pfn);
}

static struct dmm_device *dev_make(struct dmm_mem *mem, const char *name, unsigned bits, int iommu, int untrusted)
{
	struct dmm_device_desc d = tu_desc(name, bits, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;

	d.iommu = iommu ? DMM_IOMMU_DMA : DMM_IOMMU_NONE;
	d.untrusted = untrusted;
	assert_ok(dmm_device_create(mem, &d, NULL, &dev));
	return dev;
}

/* Behind an IOMMU, an unmap inside a bounced mapping is refused before the
 * IOMMU mapping is touched; the right unmap then frees the slots. */
static void test_iommu_unmap_inside_bounced(void **state)
{
	struct dmm_hosted *h;
	struct dmm_mem *mem = two_banks(&h, NULL);
	struct dmm_swiotlb_stats st;
	struct dmm_device *dev;
	dmm_dma_addr_t a;
	dmm_phys_t pa, back;
	(void)state;

	assert_ok(dmm_swiotlb_init(mem, NULL));
	dev = dev_make(mem, "tb", 64, 1, 1);
	pa = high_page(mem, 0);
	a = dmm_dma_map_phys(dev, pa + 1000, 200, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(dev, a));
	dmm_dma_unmap_phys(dev, a + 8, 192, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_bus_to_phys(dev, a, &back));
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.used_slots, 2);
	dmm_dma_unmap_phys(dev, a, 200, DMM_DMA_TO_DEVICE);
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.used_slots, 0);
	assert_ok(dmm_swiotlb_check(mem));
	assert_ok(dmm_device_iommu_check(dev));
	assert_ok(dmm_page_free(mem, dmm_phys_to_pfn(pa), 0));
	assert_ok(dmm_device_destroy(dev));
	banks_destroy(h, mem);
}

/* A refused unmap (inside a bounced mapping) is no unmap in the device's
 * statistics. */
static void test_refused_unmap_not_counted(void **state)
{
	(void)state;
	for (int coherent = 0; coherent < 2; coherent++) {
		struct dmm_hosted *h;
		struct dmm_mem *mem = two_banks(&h, NULL);
		struct dmm_device_desc d = tu_desc("nic32", 32, coherent, DMM_DEVICE_CMA_NONE);
		struct dmm_device *dev;
		struct dmm_dma_stats ds;
		dmm_dma_addr_t a;
		dmm_phys_t pa;

		assert_ok(dmm_swiotlb_init(mem, NULL));
		assert_ok(dmm_device_create(mem, &d, NULL, &dev));
		pa = high_page(mem, 0);
		a = dmm_dma_map_phys(dev, pa + 100, 200, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(dev, a));
		dmm_dma_unmap_phys(dev, a + 8, 192, DMM_DMA_TO_DEVICE);
		dmm_device_get_stats(dev, &ds);
		assert_int_equal(ds.unmaps, 0);
		assert_int_equal(ds.fail_invalid, 1);
		dmm_dma_unmap_phys(dev, a, 200, DMM_DMA_TO_DEVICE);
		dmm_device_get_stats(dev, &ds);
		assert_int_equal(ds.unmaps, ds.maps);
		assert_ok(dmm_swiotlb_check(mem));
		assert_ok(dmm_page_free(mem, dmm_phys_to_pfn(pa), 0));
		assert_ok(dmm_device_destroy(dev));
		banks_destroy(h, mem);
	}
}

/* Bounce buffers of 64 KiB (2 KiB slots) with align_mask 0x3fff and @room
 * more allowed under max_bytes (@max_slots per map, 0: the default), full:
 * a 32-bit device maps 32 buffers at *@pa (32 KiB above 4 GiB) into @full. */
static void aligned_full(struct dmm_mem *mem, uint64_t room, uint32_t max_slots, struct dmm_swiotlb_opts *o,
			 struct dmm_device **dev, dmm_phys_t *pa, dmm_dma_addr_t *full)
{
	dmm_swiotlb_opts_default(mem, o);
	o->initial_bytes = 64 * KiB;
	o->max_bytes = 64 * KiB + room;
	if (max_slots)
		o->max_slots_per_map = max_slots;
	o->align_mask = 0x3fff;
	o->grow_threshold_pct = 100;
	o->transient_idle_ns = 1;
	assert_ok(dmm_swiotlb_init(mem, o));
	*dev = dev_make(mem, "nic32", 32, 0, 0);
	*pa = high_page(mem, 3);
	for (int i = 0; i < 32; i++) {
		full[i] = dmm_dma_map_phys(*dev, *pa + (uint64_t)(i % 8) * 2048, 100, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(*dev, full[i]));
	}
}

/* With align_mask above the slot size and little room under max_bytes, a
 * transient pool that cannot hold the run is not made, or goes back: none
 * stays published. */
static void test_transient_pool_not_stuck(void **state)
{
	struct dmm_hosted *h;
	struct dmm_mem *mem = two_banks(&h, NULL);
	struct dmm_swiotlb_opts o;
	struct dmm_swiotlb_stats st;
	struct dmm_device *dev;
	dmm_dma_addr_t full[32], a;
	dmm_phys_t pa;
	(void)state;

	aligned_full(mem, 8 * KiB, 0, &o, &dev, &pa, full);
	for (int x = 0; x < 8; x++) {
		a = dmm_dma_map_phys(dev, pa + (uint64_t)x * 2048, 100, DMM_DMA_TO_DEVICE);
		if (dmm_dma_mapping_error(dev, a) == 0)
			dmm_dma_unmap_phys(dev, a, 100, DMM_DMA_TO_DEVICE);
		dmm_swiotlb_trim(mem);
		dmm_swiotlb_get_stats(mem, &st);
		assert_int_equal(st.transient_pools, 0);
		assert_true(st.total_slots * o.slot_size <= o.max_bytes);
		assert_ok(dmm_swiotlb_check(mem));
	}
	for (int i = 0; i < 32; i++)
		dmm_dma_unmap_phys(dev, full[i], 100, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_swiotlb_check(mem));
	assert_ok(dmm_page_free(mem, dmm_phys_to_pfn(pa), 3));
	assert_ok(dmm_device_destroy(dev));
	banks_destroy(h, mem);
}

/* Behind an IOMMU too, the page allocator refuses a live coherent buffer
 * (contiguous); dmm_dma_free_coherent then frees it. */
static void test_iommu_coherent_pages_refused(void **state)
{
	struct dmm_hosted *h;
	struct dmm_mem *mem = two_banks(&h, NULL);
	struct dmm_device *dev = dev_make(mem, "dev", 64, 1, 0);
	dmm_dma_addr_t dma;
	dmm_phys_t pa;
	void *cpu;
	(void)state;

	assert_ok(dmm_dma_alloc_coherent(dev, 4096, 0, &cpu, &dma));
	assert_ok(dmm_dma_bus_to_phys(dev, dma, &pa));
	assert_rc(dmm_page_free(mem, dmm_phys_to_pfn(pa), 0), -DMM_EBUSY);
	assert_ok(dmm_dma_free_coherent(dev, 4096, cpu, dma));
	assert_ok(dmm_page_alloc_check(mem));
	assert_ok(dmm_device_destroy(dev));
	banks_destroy(h, mem);
}

static char order_log[8];
static int order_n;

static void order_cb(void *arg, dmm_dma_addr_t dma, int err)
{
	(void)dma;
	assert_int_equal(err, 0);
	order_log[__atomic_fetch_add(&order_n, 1, __ATOMIC_SEQ_CST)] = (char)('0' + (int)(uintptr_t)arg);
}

/* 32 slots mapped by @dev (2 KiB each): the pool is full. */
static void fill_pool(struct dmm_mem *mem, struct dmm_device *dev, dmm_phys_t pa, dmm_dma_addr_t *b)
{
	struct dmm_swiotlb_opts o;

	dmm_swiotlb_opts_default(mem, &o);
	o.initial_bytes = 64 * KiB;
	o.no_transient = 1;
	o.grow_threshold_pct = 100;
	assert_ok(dmm_swiotlb_init(mem, &o));
	for (int i = 0; i < 32; i++) {
		b[i] = dmm_dma_map_phys(dev, pa, 2048, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(dev, b[i]));
	}
}

/* A request that would fit now waits behind its device's earlier one. */
static void test_deferred_order_with_room(void **state)
{
	struct dmm_hosted *h;
	struct dmm_mem *mem = two_banks(&h, NULL);
	struct dmm_device *dev;
	dmm_dma_addr_t b[32];
	dmm_phys_t pa;
	(void)state;

	dev = dev_make(mem, "nic32", 32, 0, 0);
	pa = high_page(mem, 2);
	order_n = 0;
	fill_pool(mem, dev, pa, b);
	assert_ok(dmm_dma_map_phys_deferred(dev, pa, 8192, DMM_DMA_TO_DEVICE, order_cb, (void *)1));
	dmm_dma_unmap_phys(dev, b[0], 2048, DMM_DMA_TO_DEVICE); /* one slot: not enough for 1 */
	assert_ok(dmm_dma_map_phys_deferred(dev, pa, 2048, DMM_DMA_TO_DEVICE, order_cb, (void *)2));
	assert_int_equal(order_n, 0); /* 2 would fit, but waits */
	for (int i = 1; i < 4; i++)
		dmm_dma_unmap_phys(dev, b[i], 2048, DMM_DMA_TO_DEVICE);
	assert_int_equal(order_n, 1); /* 1 took the four slots */
	dmm_dma_unmap_phys(dev, b[4], 2048, DMM_DMA_TO_DEVICE);
	order_log[order_n] = 0;
	assert_string_equal(order_log, "12");
	assert_ok(dmm_swiotlb_check(mem));
	banks_destroy(h, mem);
}

/* An unmap on another thread serves the queue while request 1's callback
 * is about to run: request 2 (same device) still completes after it. The
 * platform's unlock hook runs that unmap right after request 1 is mapped. */
static struct dmm_platform order_base;
static struct dmm_lock *order_lock;
static int order_recording, order_armed, order_unlocks;
static struct dmm_device *order_dev;
static dmm_dma_addr_t order_b[32];

static void *order_unmapper(void *arg)
{
	(void)arg;
	dmm_dma_unmap_phys(order_dev, order_b[1], 2048, DMM_DMA_TO_DEVICE);
	return NULL;
}

static void order_lock_hook(void *ctx, struct dmm_lock *l)
{
	if (order_recording && !order_lock)
		order_lock = l;
	order_base.lock(ctx, l);
}

static void order_unlock_hook(void *ctx, struct dmm_lock *l)
{
	order_base.unlock(ctx, l);
	if (order_armed && l == order_lock && ++order_unlocks == 2) {
		pthread_t t;
		order_armed = 0;
		assert_int_equal(pthread_create(&t, NULL, order_unmapper, NULL), 0);
		pthread_join(t, NULL);
	}
}

static void order_adjust(struct dmm_platform *p)
{
	order_base = *p;
	p->lock = order_lock_hook;
	p->unlock = order_unlock_hook;
}

static void test_deferred_order_during_callback(void **state)
{
	struct dmm_hosted *h;
	struct dmm_mem *mem;
	struct dmm_swiotlb_stats st;
	dmm_phys_t pa;
	(void)state;

	order_lock = NULL;
	order_unlocks = 0;
	order_n = 0;
	mem = two_banks(&h, order_adjust);
	order_dev = dev_make(mem, "nic32", 32, 0, 0);
	pa = high_page(mem, 0);
	fill_pool(mem, order_dev, pa, order_b);
	order_recording = 1;
	dmm_swiotlb_get_stats(mem, &st); /* the first lock it takes: the pools' lock */
	order_recording = 0;
	assert_non_null(order_lock);
	assert_ok(dmm_dma_map_phys_deferred(order_dev, pa, 2048, DMM_DMA_TO_DEVICE, order_cb, (void *)1));
	assert_ok(dmm_dma_map_phys_deferred(order_dev, pa, 2048, DMM_DMA_TO_DEVICE, order_cb, (void *)2));
	order_armed = 1;
	dmm_dma_unmap_phys(order_dev, order_b[0], 2048, DMM_DMA_TO_DEVICE);
	order_armed = 0;
	order_log[order_n] = 0;
	assert_string_equal(order_log, "12");
	assert_ok(dmm_swiotlb_check(mem));
	banks_destroy(h, mem);
}

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

/* A request that needs no bounce, queued behind its device's waiting one,
 * completes after it (not refused as if it had to fit a pool). */
static int nb_calls, nb_err;

static void nb_cb(void *arg, dmm_dma_addr_t dma, int err)
{
	(void)arg;
	(void)dma;
	nb_calls++;
	nb_err = err;
}

static void test_deferred_unbounced_behind_waiting(void **state)
{
	const struct dmm_constraint below = { 0, 4 * GiB, 0, 0, 0, 0 };
	struct dmm_hosted *h;
	struct dmm_mem *mem = two_banks(&h, NULL);
	struct dmm_device *dev = dev_make(mem, "nic32", 32, 0, 0);
	dmm_dma_addr_t b[32];
	dmm_phys_t hi = high_page(mem, 2), lo;
	dmm_pfn_t pfn;
	(void)state;

	assert_ok(dmm_page_alloc(mem, 5, &below, 0, &pfn)); /* 128 KiB the device reaches */
	lo = dmm_pfn_to_phys(pfn);
	fill_pool(mem, dev, hi, b);
	nb_calls = 0;
	assert_ok(dmm_dma_map_phys_deferred(dev, lo, 128 * KiB, DMM_DMA_TO_DEVICE, nb_cb, NULL));
	assert_int_equal(nb_calls, 1); /* nothing waiting: at once */
	assert_int_equal(nb_err, 0);
	nb_calls = 0;
	assert_ok(dmm_dma_map_phys_deferred(dev, hi, 2048, DMM_DMA_TO_DEVICE, nb_cb, NULL)); /* waits */
	assert_ok(dmm_dma_map_phys_deferred(dev, lo, 128 * KiB, DMM_DMA_TO_DEVICE, nb_cb, NULL));
	assert_int_equal(nb_calls, 0);
	dmm_dma_unmap_phys(dev, b[0], 2048, DMM_DMA_TO_DEVICE);
	assert_int_equal(nb_calls, 2);
	assert_int_equal(nb_err, 0);
	assert_ok(dmm_swiotlb_check(mem));
	banks_destroy(h, mem);
}

/* With align_mask above the slot and room for one aligned run under
 * max_bytes, the transient pool holds it (one area). */
static void test_transient_pool_holds_aligned_run(void **state)
{
	struct dmm_hosted *h;
	struct dmm_mem *mem = two_banks(&h, NULL);
	struct dmm_swiotlb_opts o;
	struct dmm_device *dev;
	dmm_dma_addr_t full[32], a;
	dmm_phys_t pa;
	(void)state;

	aligned_full(mem, 32 * KiB, 8, &o, &dev, &pa, full);
	a = dmm_dma_map_phys(dev, pa + 0x800, 16 * KiB, DMM_DMA_TO_DEVICE); /* 8 slots at bits 0x800 */
	assert_ok(dmm_dma_mapping_error(dev, a));
	assert_int_equal(a & 0x3fff, 0x800);
	assert_ok(dmm_swiotlb_check(mem));
	dmm_dma_unmap_phys(dev, a, 16 * KiB, DMM_DMA_TO_DEVICE);
	for (int i = 0; i < 32; i++)
		dmm_dma_unmap_phys(dev, full[i], 100, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_swiotlb_check(mem));
	banks_destroy(h, mem);
}

/* Another device maps, without bouncing, memory inside a bounce mapping:
 * its unmap is its own (not refused, counted), with or without an IOMMU. */
static void test_unmap_of_memory_in_another_bounce(void **state)
{
	(void)state;
	for (int iommu = 0; iommu < 2; iommu++) {
		struct dmm_hosted *h;
		struct dmm_mem *mem = two_banks(&h, NULL);
		struct dmm_device *nic, *other;
		struct dmm_dma_stats ds;
		dmm_dma_addr_t a, g;
		dmm_phys_t pa, tlb, back;

		assert_ok(dmm_swiotlb_init(mem, NULL));
		nic = dev_make(mem, "nic32", 32, 0, 0);
		other = dev_make(mem, "other", 64, iommu, 0);
		pa = high_page(mem, 1);
		a = dmm_dma_map_phys(nic, pa, 8192, DMM_DMA_BIDIRECTIONAL);
		assert_ok(dmm_dma_mapping_error(nic, a));
		assert_ok(dmm_dma_bus_to_phys(nic, a, &tlb));
		g = dmm_dma_map_phys(other, tlb + 4096, 256, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(other, g));
		dmm_dma_unmap_phys(other, g, 256, DMM_DMA_TO_DEVICE);
		dmm_device_get_stats(other, &ds);
		assert_int_equal(ds.unmaps, ds.maps);
		assert_int_equal(ds.fail_invalid, 0);
		assert_int_equal(ds.fail_unmap, 0);
		if (iommu)
			assert_true(dmm_dma_bus_to_phys(other, g, &back) != 0);
		dmm_dma_unmap_phys(nic, a, 8192, DMM_DMA_BIDIRECTIONAL);
		assert_ok(dmm_swiotlb_check(mem));
		assert_ok(dmm_page_free(mem, dmm_phys_to_pfn(pa), 1));
		assert_ok(dmm_device_destroy(other));
		assert_ok(dmm_device_destroy(nic));
		banks_destroy(h, mem);
	}
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
		cmocka_unit_test(test_iommu_unmap_inside_bounced),
		cmocka_unit_test(test_refused_unmap_not_counted),
		cmocka_unit_test(test_transient_pool_not_stuck),
		cmocka_unit_test(test_iommu_coherent_pages_refused),
		cmocka_unit_test(test_deferred_order_with_room),
		cmocka_unit_test(test_deferred_order_during_callback),
		cmocka_unit_test(test_deferred_unbounced_behind_waiting),
		cmocka_unit_test(test_transient_pool_holds_aligned_run),
		cmocka_unit_test(test_unmap_of_memory_in_another_bounce),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: MIT */
/*
 * Pins of the library's own memory. What dmamem allocates for itself
 * (bounce pools, coherent atomic-pool chunks and so the buffers served from
 * them, IO page tables, device records, IOVA domains, DMA-pool records,
 * handle tables) refuses every pin with -DMM_EPERM, counted in
 * pins_refused_internal: nothing else changes (no pin count, no statistic,
 * the descriptor as it was, every check holding), the memory keeps working
 * and its free goes through. The public frees refuse it too. Pins of the
 * callers' memory (page and range allocations, direct coherent buffers,
 * small objects) work as before. A pinner racing with the allocation and
 * the free of a device record never pins it, and the record's free is
 * never refused.
 */
#include <pthread.h>

#include "tu_dma.h"

#include <dmamem/handles.h>
#include <dmamem/iommu.h>

#include "dma/dma_internal.h"

#define NOT_PINNED ((dmm_pfn_t)0xdead)
#define NO_REASON ((enum dmm_migrate_reason)77)

static void flush(struct dmm_mem *mem)
{
	const struct dmm_platform *p = dmm_mem_platform(mem);
	if (p->defer_flush)
		p->defer_flush(p->ctx);
}

/* The page holding the library's structure at @va. */
static dmm_pfn_t pfn_of(struct dmm_mem *mem, const void *va)
{
	const struct dmm_platform *p = dmm_mem_platform(mem);
	dmm_phys_t pa;
	assert_non_null(p->virt_to_phys);
	assert_ok(p->virt_to_phys(p->ctx, va, &pa));
	return dmm_phys_to_pfn(pa);
}

/* Everything a refused pin must leave as it was. */
struct snap {
	struct dmm_migrate_stats mig;
	struct dmm_zone_info zone[DMM_NR_ZONE_TYPES];
	struct dmm_mem_info info;
	struct dmm_page pg;
};

static void take_snap(struct dmm_mem *mem, dmm_pfn_t pfn, struct snap *s)
{
	memset(s, 0, sizeof(*s));
	dmm_migrate_get_stats(mem, &s->mig);
	for (unsigned z = 0; z < dmm_mem_nr_zones(mem); z++)
		assert_ok(dmm_zone_get_info(mem, z, &s->zone[z]));
	dmm_mem_get_info(mem, &s->info);
	s->info.init_ns = 0;
	s->info.cpu_slow_enters = s->info.cpu_syncs = 0; /* the zone reports may enter sections */
	assert_non_null(dmm_pfn_to_page(mem, pfn));
	s->pg = *dmm_pfn_to_page(mem, pfn);
}

/*
 * @pfn is a page of the library's own memory: a short-term and a
 * long-term pin are each refused with -DMM_EPERM, the counter goes up by
 * one per pin, and nothing else changes: *pinned and *why untouched, no
 * pin count on the page, its descriptor, the zones and the migration
 * statistics as they were, both allocator checks holding.
 */
static void assert_pin_refused(struct dmm_mem *mem, dmm_pfn_t pfn)
{
	struct snap a, b;

	flush(mem); /* no background refill or growth while we compare */
	assert_checks(mem);
	take_snap(mem, pfn, &a);
	for (unsigned f = 0; f < 2; f++) {
		dmm_pfn_t pinned = NOT_PINNED;
		enum dmm_migrate_reason why = NO_REASON;

		assert_rc(dmm_page_pin(mem, pfn, f ? DMM_PIN_LONGTERM : 0, &pinned, &why), -DMM_EPERM);
		assert_int_equal(pinned, NOT_PINNED);
		assert_int_equal(why, NO_REASON);
		take_snap(mem, pfn, &b);
		assert_int_equal(b.mig.pins_refused_internal, a.mig.pins_refused_internal + 1);
		b.mig.pins_refused_internal--;
		assert_memory_equal(&b.mig, &a.mig, sizeof(a.mig));
		assert_memory_equal(b.zone, a.zone, sizeof(a.zone));
		assert_memory_equal(&b.info, &a.info, sizeof(a.info));
		assert_memory_equal(&b.pg, &a.pg, sizeof(a.pg));
		assert_int_equal(b.pg.pins, 0);
		assert_int_equal(b.pg.lt_pins, 0);
		a.mig.pins_refused_internal++;
	}
	assert_rc(dmm_page_unpin(mem, pfn, 0), -DMM_ENOENT);
	assert_rc(dmm_page_unpin(mem, pfn, DMM_PIN_LONGTERM), -DMM_ENOENT);
	assert_checks(mem);
}

/* Free pages (lists and per-CPU caches) once the caches are drained. */
static uint64_t free_now(struct dmm_mem *mem)
{
	flush(mem);
	assert_int_equal(dmm_slab_shrink(mem), 0);
	dmm_page_drain_pcp(mem);
	return tu_zone_free_all(mem);
}

static void fill(uint8_t *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(seed * 29u + i * 13u);
}

static void expect(const uint8_t *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		if (b[i] != (uint8_t)(seed * 29u + i * 13u))
			fail_msg("byte %zu: %#x, want %#x", i, b[i], (uint8_t)(seed * 29u + i * 13u));
}

/* A page above 4 GiB: a 32-bit device's mappings of it bounce. */
static dmm_pfn_t high_page(struct dmm_mem *mem)
{
	struct dmm_constraint c = DMM_CONSTRAINT_ANY;
	dmm_pfn_t pfn;
	c.lo = 4 * GiB;
	assert_ok(dmm_page_alloc(mem, 0, &c, 0, &pfn));
	return pfn;
}

/*
 * Bounce pools: the page of a mapping's bounce buffer, in the default pool
 * and in a transient pool, refuses pins; the mapping still carries the data
 * both ways, unmaps, and the transient pool goes back to the page allocator
 * when it is idle, every page of it.
 */
static void test_bounce_pool(void **state)
{
	(void)state;
	for (int transient = 0; transient < 2; transient++) {
		struct tu_env *e = tu_env_profile("pc");
		struct dmm_device_desc d = tu_desc("dma32", 32, 1, DMM_DEVICE_CMA_NONE);
		struct dmm_swiotlb_opts o;
		struct dmm_swiotlb_stats st;
		struct dmm_device *dev;
		dmm_dma_addr_t bus;
		dmm_phys_t tlb;
		dmm_pfn_t buf;
		uint64_t free0;

		dmm_swiotlb_opts_default(e->mem, &o);
		o.initial_bytes = transient ? 0 : 256 * KiB;
		o.transient_idle_ns = 1;
		assert_ok(dmm_swiotlb_init(e->mem, &o));
		assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
		buf = high_page(e->mem);
		free0 = free_now(e->mem);
		fill(dmm_pfn_to_virt(e->mem, buf), DMM_PAGE_SIZE, 1);
		bus = dmm_dma_map_phys(dev, dmm_pfn_to_phys(buf), DMM_PAGE_SIZE, DMM_DMA_BIDIRECTIONAL);
		assert_ok(dmm_dma_mapping_error(dev, bus));
		assert_ok(dmm_dma_bus_to_phys(dev, bus, &tlb));
		assert_int_equal(dmm_swiotlb_is_bounce(e->mem, tlb), 1);
		dmm_swiotlb_get_stats(e->mem, &st);
		assert_int_equal(st.transient_pools, (uint64_t)transient);

		assert_pin_refused(e->mem, dmm_phys_to_pfn(tlb));
		assert_ok(dmm_swiotlb_check(e->mem));

		/* the mapping still works: the device saw the buffer, the CPU
		 * sees what the device wrote */
		expect(dmm_pfn_to_virt(e->mem, dmm_phys_to_pfn(tlb)), DMM_PAGE_SIZE, 1);
		fill(dmm_pfn_to_virt(e->mem, dmm_phys_to_pfn(tlb)), DMM_PAGE_SIZE, 2);
		dmm_dma_unmap_phys(dev, bus, DMM_PAGE_SIZE, DMM_DMA_BIDIRECTIONAL);
		expect(dmm_pfn_to_virt(e->mem, buf), DMM_PAGE_SIZE, 2);
		assert_ok(dmm_swiotlb_check(e->mem));

		dmm_swiotlb_trim(e->mem);
		dmm_swiotlb_get_stats(e->mem, &st);
		assert_int_equal(st.transient_pools, 0);
		assert_int_equal(st.transient_released, st.transient_created);
		assert_int_equal(st.transient_created, (uint64_t)transient);
		/* the transient pool and its bookkeeping are back, every page */
		assert_int_equal(free_now(e->mem), free0);
		assert_ok(dmm_swiotlb_check(e->mem));
		assert_ok(dmm_page_free(e->mem, buf, 0));
		assert_ok(dmm_device_destroy(dev));
		assert_checks(e->mem);
		tu_env_destroy(e);
	}
}

/*
 * Coherent atomic pools: the page of a buffer served from a pool (one at a
 * chunk's first page, one inside a chunk) refuses pins; the buffer keeps
 * its bytes, its coherent free returns 0, the pool's check holds and the
 * pool serves the same block again; the destroy gives every page back.
 */
static void test_atomic_pool_buffer(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device_desc d = tu_desc("nc", 32, 0, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	dmm_dma_addr_t bus[2], again;
	dmm_phys_t pa[2], pa2;
	void *cpu[2], *cpu2;
	uint64_t free0;
	(void)state;

	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	free0 = free_now(e->mem);
	assert_ok(dmm_dma_atomic_pool_init(e->mem, NULL));
	flush(e->mem);
	for (int i = 0; i < 2; i++) {
		assert_ok(dmm_dma_alloc_coherent(dev, 4 * KiB, DMM_GFP_ATOMIC, &cpu[i], &bus[i]));
		assert_ok(dmm_dma_bus_to_phys(dev, bus[i], &pa[i]));
		fill(cpu[i], 4 * KiB, 3 + (unsigned)i);
	}
	/* the first block of a fresh pool starts its chunk: the range's head */
	assert_int_equal(dmm_pfn_to_page(e->mem, dmm_phys_to_pfn(pa[0]))->state, DMM_PAGE_RANGE);
	assert_int_equal(dmm_pfn_to_page(e->mem, dmm_phys_to_pfn(pa[1]))->state, DMM_PAGE_TAIL);
	for (int i = 0; i < 2; i++) {
		assert_pin_refused(e->mem, dmm_phys_to_pfn(pa[i]));
		assert_ok(dmm_dma_atomic_pool_check(e->mem));
	}
	for (int i = 0; i < 2; i++) {
		expect(cpu[i], 4 * KiB, 3 + (unsigned)i);
		assert_ok(dmm_dma_free_coherent(dev, 4 * KiB, cpu[i], bus[i]));
		assert_ok(dmm_dma_atomic_pool_check(e->mem));
		assert_checks(e->mem);
	}
	/* the block is the pool's again */
	assert_ok(dmm_dma_alloc_coherent(dev, 4 * KiB, DMM_GFP_ATOMIC, &cpu2, &again));
	assert_ok(dmm_dma_bus_to_phys(dev, again, &pa2));
	assert_int_equal(pa2, pa[0]);
	assert_ok(dmm_dma_free_coherent(dev, 4 * KiB, cpu2, again));
	assert_ok(dmm_dma_atomic_pool_check(e->mem));
	flush(e->mem);
	assert_ok(dmm_dma_atomic_pool_destroy(e->mem));
	assert_int_equal(free_now(e->mem), free0);
	assert_ok(dmm_device_destroy(dev));
	assert_checks(e->mem);
	tu_env_destroy(e);
}

/*
 * IO page tables: every table on the walk to a mapping (the root the IOMMU
 * is given, and the three below it) refuses pins; the translation stays,
 * and the page table's destroy gives every table back. A device's domain:
 * its root table and its IOVA domain record refuse pins, and the device's
 * destroy gives everything back.
 */
static void test_io_page_tables(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device_desc d = tu_desc("iommu-nic", 32, 1, DMM_DEVICE_CMA_NONE);
	const dmm_dma_addr_t iova = 0x12345000ull;
	struct dmm_iommu_info info;
	struct dmm_iopt_stats ps;
	struct dmm_iova_domain *dom;
	struct dmm_iova_opts io;
	struct dmm_device *dev;
	struct dmm_iopt *pt;
	dmm_pfn_t data, table[DMM_IOPT_LEVELS];
	dmm_phys_t got;
	uint64_t free0;
	(void)state;

	free0 = free_now(e->mem);
	assert_ok(dmm_page_alloc(e->mem, 0, NULL, 0, &data));
	assert_ok(dmm_iopt_create(e->mem, &pt));
	assert_ok(dmm_iopt_map(pt, iova, dmm_pfn_to_phys(data), DMM_PAGE_SIZE, DMM_IOMMU_READ | DMM_IOMMU_WRITE,
			       DMM_IOPTE_FIRST | DMM_IOPTE_LAST));
	table[0] = dmm_phys_to_pfn(dmm_iopt_root(pt));
	for (unsigned l = 1; l < DMM_IOPT_LEVELS; l++) {
		const uint64_t *t = dmm_pfn_to_virt(e->mem, table[l - 1]);
		unsigned idx = (unsigned)(iova >> (12 + 9 * (DMM_IOPT_LEVELS - l))) & 511;
		assert_true(t[idx] & 1);           /* valid */
		assert_false(t[idx] & (1ull << 3)); /* a table, no leaf */
		table[l] = dmm_phys_to_pfn(t[idx] & DMM_IOPTE_ADDR);
	}
	dmm_iopt_get_stats(pt, &ps);
	assert_int_equal(ps.tables, DMM_IOPT_LEVELS);
	for (unsigned l = 0; l < DMM_IOPT_LEVELS; l++)
		assert_pin_refused(e->mem, table[l]);
	assert_ok(dmm_iopt_check(pt));
	assert_ok(dmm_iopt_lookup(pt, iova + 8, &got, NULL, NULL, NULL));
	assert_int_equal(got, dmm_pfn_to_phys(data) + 8);
	assert_int_equal(dmm_iopt_unmap(pt, iova, DMM_PAGE_SIZE), (int64_t)DMM_PAGE_SIZE);
	dmm_iopt_destroy(pt);
	assert_ok(dmm_page_free(e->mem, data, 0));
	assert_int_equal(free_now(e->mem), free0);

	/* an IOVA domain's record */
	dmm_iova_opts_default(&io);
	assert_ok(dmm_iova_domain_create(e->mem, 0x100000, 0xffffffffull, &io, &dom));
	assert_pin_refused(e->mem, pfn_of(e->mem, dom));
	assert_ok(dmm_iova_check(dom));
	dmm_iova_domain_destroy(dom);
	assert_int_equal(free_now(e->mem), free0);

	/* a device's domain */
	d.iommu = DMM_IOMMU_DMA;
	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	assert_ok(dmm_device_iommu_info(dev, &info));
	assert_pin_refused(e->mem, dmm_phys_to_pfn(info.root));
	assert_pin_refused(e->mem, pfn_of(e->mem, dev));
	assert_ok(dmm_device_iommu_check(dev));
	assert_ok(dmm_device_destroy(dev));
	assert_int_equal(free_now(e->mem), free0);
	assert_checks(e->mem);
	tu_env_destroy(e);
}

/*
 * The library's own small-object allocations (the IOMMU's flush queues,
 * IOVA magazines and depots, page-table records): one past the largest
 * class is its own memory, which refuses pins (a large dmm_kmalloc object
 * is the public page allocator's, which a pin would keep from its free);
 * a small one comes from the caches. Both go back whole.
 */
static void test_lib_kmalloc(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	uint64_t free0;
	dmm_phys_t pa;
	void *big, *small;
	(void)state;

	free0 = free_now(e->mem);
	assert_ok(dmm__lib_kmalloc(e->mem, 3 * DMM_PAGE_SIZE + 5, 0, &big));
	assert_ok(dmm__virt_to_phys(e->mem, big, &pa));
	for (unsigned i = 0; i < 4; i++)
		assert_pin_refused(e->mem, dmm_phys_to_pfn(pa) + i);
	fill(big, 3 * DMM_PAGE_SIZE + 5, 1);
	assert_ok(dmm__lib_kmalloc(e->mem, 100, 0, &small));
	assert_int_equal(dmm_ksize(e->mem, small), 128);
	dmm__lib_kfree(e->mem, small);
	dmm__lib_kfree(e->mem, big);
	assert_int_equal(free_now(e->mem), free0);
	assert_checks(e->mem);
	assert_ok(dmm_slab_check(e->mem));
	tu_env_destroy(e);
}

/*
 * The record of a device's IOMMU domain has a counter block per CPU: on a
 * machine of 128 CPUs it is more than the largest small object. It is the
 * library's own memory all the same: its pages refuse pins, and the
 * device's destroy gives every page back (a pinned large kmalloc object
 * would refuse its dmm_kfree, and the domain's record would be lost).
 */
static void test_iommu_domain_many_cpus(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct dmm_device_desc d = tu_desc("iommu-nic", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	dmm_dma_addr_t dma;
	dmm_pfn_t data;
	uint64_t free0;
	(void)state;

	tu_profile("pc", &m);
	e = tu_env_create(&m, 128);
	free0 = free_now(e->mem);
	d.iommu = DMM_IOMMU_DMA;
	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	assert_non_null(dev->iommu);
	assert_pin_refused(e->mem, pfn_of(e->mem, dev->iommu));
	/* the domain works */
	assert_ok(dmm_page_alloc(e->mem, 0, NULL, 0, &data));
	dma = dmm_dma_map_phys(dev, dmm_pfn_to_phys(data), 64, DMM_DMA_TO_DEVICE);
	assert_true(dma != DMM_DMA_MAPPING_ERROR);
	assert_ok(dmm_device_iommu_check(dev));
	dmm_dma_unmap_phys(dev, dma, 64, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_page_free(e->mem, data, 0));
	assert_ok(dmm_device_destroy(dev));
	assert_int_equal(free_now(e->mem), free0);
	assert_checks(e->mem);
	tu_env_destroy(e);
}

/*
 * Records: a device's, a DMA pool's, a handle table's refuse pins; each is
 * still usable and its destroy returns 0 and gives its pages back. The
 * public frees refuse the library's memory (-DMM_EPERM, counted as a
 * rejected free, nothing changed), and the public allocators refuse the
 * library's own request flag.
 */
static void test_records(void **state)
{
	const struct dmm_constraint any = DMM_CONSTRAINT_ANY;
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device_desc d = tu_desc("nic", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	struct dmm_dma_pool *pool;
	struct dmm_handles *h;
	struct dmm_mem_info mi0, mi1;
	struct snap a, b;
	dmm_dma_addr_t dma;
	dmm_pfn_t rec, pfn = NOT_PINNED;
	uint64_t free0, bad0;
	uint32_t hd;
	void *cpu;
	(void)state;

	free0 = free_now(e->mem);
	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	rec = pfn_of(e->mem, dev);
	assert_pin_refused(e->mem, rec);

	/* the range allocator does not free it for a caller (a record is a
	 * range: as many pages as its per-CPU counters take) */
	take_snap(e->mem, rec, &a);
	bad0 = tu_zone_bad_frees(e->mem);
	assert_rc(dmm_free_range(e->mem, rec, 1), -DMM_EPERM);
	assert_int_equal(tu_zone_bad_frees(e->mem), bad0 + 1);
	take_snap(e->mem, rec, &b);
	assert_memory_equal(&b.pg, &a.pg, sizeof(a.pg));
	assert_checks(e->mem);

	/* nor does it hand out the library's mark */
	dmm_mem_get_info(e->mem, &mi0);
	assert_rc(dmm_page_alloc(e->mem, 0, NULL, 1u << 31, &pfn), -DMM_EINVAL);
	assert_rc(dmm_alloc_range(e->mem, &any, 1, 1u << 31, &pfn), -DMM_EINVAL);
	dmm_mem_get_info(e->mem, &mi1);
	assert_int_equal(mi1.fail_invalid, mi0.fail_invalid + 2);
	assert_int_equal(pfn, NOT_PINNED);

	assert_ok(dmm_dma_pool_create(dev, "desc", 64, 64, 0, &pool));
	assert_pin_refused(e->mem, pfn_of(e->mem, pool));
	assert_ok(dmm_dma_pool_alloc(pool, 0, &cpu, &dma));
	assert_ok(dmm_dma_pool_free(pool, cpu, dma));
	assert_ok(dmm_dma_pool_check(pool));
	assert_ok(dmm_dma_pool_destroy(pool));

	assert_ok(dmm_handles_create(e->mem, 16, &h));
	assert_pin_refused(e->mem, pfn_of(e->mem, h));
	assert_ok(dmm_handle_alloc(h, 0, &hd));
	assert_ok(dmm_handles_check(h));
	assert_ok(dmm_handle_free(h, hd));
	assert_ok(dmm_handles_destroy(h));

	assert_ok(dmm_device_destroy(dev));
	assert_int_equal(free_now(e->mem), free0);
	assert_checks(e->mem);
	tu_env_destroy(e);
}

/*
 * The callers' memory pins as before: a buddy block, a range, a small
 * object's page and a direct coherent buffer (whose free is then refused
 * with -DMM_EBUSY until the unpin); the counter of refused pins stays.
 */
static void test_callers_memory_pins(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device_desc d = tu_desc("nic", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_constraint any = DMM_CONSTRAINT_ANY;
	struct dmm_migrate_stats m0, m1;
	struct dmm_device *dev;
	dmm_pfn_t blk, rng, pinned;
	dmm_dma_addr_t bus;
	dmm_phys_t pa;
	void *obj, *cpu;
	(void)state;

	dmm_migrate_get_stats(e->mem, &m0);
	assert_ok(dmm_page_alloc(e->mem, 2, NULL, 0, &blk));
	assert_ok(dmm_alloc_range(e->mem, &any, 3, 0, &rng));
	assert_ok(dmm_kmalloc(e->mem, 64, 0, &obj));
	for (unsigned f = 0; f < 2; f++) {
		unsigned flags = f ? DMM_PIN_LONGTERM : 0;
		const struct dmm_platform *p = dmm_mem_platform(e->mem);
		dmm_phys_t opa;

		assert_ok(dmm_page_pin(e->mem, blk, flags, &pinned, NULL));
		assert_int_equal(pinned, blk);
		assert_rc(dmm_page_free(e->mem, blk, 2), -DMM_EBUSY);
		assert_ok(dmm_page_unpin(e->mem, blk, flags));
		assert_ok(dmm_page_pin(e->mem, rng, flags, &pinned, NULL));
		assert_rc(dmm_free_range(e->mem, rng, 3), -DMM_EBUSY);
		assert_ok(dmm_page_unpin(e->mem, rng, flags));
		assert_ok(p->virt_to_phys(p->ctx, obj, &opa));
		/* a small object's slab: its first page is the slab's head */
		if (dmm_pfn_to_page(e->mem, dmm_phys_to_pfn(opa))->state == DMM_PAGE_ALLOC) {
			assert_ok(dmm_page_pin(e->mem, dmm_phys_to_pfn(opa), flags, &pinned, NULL));
			assert_ok(dmm_page_unpin(e->mem, dmm_phys_to_pfn(opa), flags));
		}
		assert_checks(e->mem);
	}
	dmm_kfree(e->mem, obj);
	assert_ok(dmm_page_free(e->mem, blk, 2));
	assert_ok(dmm_free_range(e->mem, rng, 3));

	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	for (size_t size = DMM_PAGE_SIZE; size <= 3 * DMM_PAGE_SIZE; size += 2 * DMM_PAGE_SIZE) {
		assert_ok(dmm_dma_alloc_coherent(dev, size, 0, &cpu, &bus));
		assert_ok(dmm_dma_bus_to_phys(dev, bus, &pa));
		assert_ok(dmm_page_pin(e->mem, dmm_phys_to_pfn(pa), 0, &pinned, NULL));
		assert_rc(dmm_dma_free_coherent(dev, size, cpu, bus), -DMM_EBUSY);
		assert_ok(dmm_page_unpin(e->mem, pinned, 0));
		assert_ok(dmm_dma_free_coherent(dev, size, cpu, bus));
	}
	assert_ok(dmm_device_destroy(dev));
	dmm_migrate_get_stats(e->mem, &m1);
	assert_int_equal(m1.pins_refused_internal, m0.pins_refused_internal);
	assert_checks(e->mem);
	tu_env_destroy(e);
}

/*
 * A pinner and the allocation and free of library memory at once: one
 * thread creates and destroys devices (a record page each, the same page
 * over and over through its per-CPU cache), the other pins whatever page
 * the last record had. No pin lands (the page is a record, -DMM_EPERM, or
 * free, -DMM_ENOENT, or being freed, -DMM_EAGAIN), every destroy returns
 * 0, and the refusals are counted exactly.
 */
struct race {
	struct dmm_mem *mem;
	dmm_pfn_t rec;      /* the last record's page (atomic) */
	int done;           /* the pinner finished (atomic) */
	uint64_t rounds, refused_free, pinned, eperm, other;
};

static void *race_records(void *arg)
{
	struct race *r = arg;
	struct dmm_device_desc d = tu_desc("churn", 32, 1, DMM_DEVICE_CMA_NONE);

	while (!__atomic_load_n(&r->done, __ATOMIC_ACQUIRE)) {
		struct dmm_device *dev;
		if (dmm_device_create(r->mem, &d, NULL, &dev))
			continue;
		__atomic_store_n(&r->rec, pfn_of(r->mem, dev), __ATOMIC_RELEASE);
		if (dmm_device_destroy(dev))
			r->refused_free++;
		r->rounds++;
	}
	return NULL;
}

static void *race_pins(void *arg)
{
	struct race *r = arg;

	while (!__atomic_load_n(&r->rec, __ATOMIC_ACQUIRE))
		sched_yield();
	for (int i = 0; i < 200000; i++) {
		dmm_pfn_t pinned;
		int rc = dmm_page_pin(r->mem, __atomic_load_n(&r->rec, __ATOMIC_ACQUIRE), 0, &pinned, NULL);
		if (rc == 0) {
			r->pinned++;
			dmm_page_unpin(r->mem, pinned, 0);
		} else if (rc == -DMM_EPERM) {
			r->eperm++;
		} else if (rc != -DMM_ENOENT && rc != -DMM_EAGAIN) {
			r->other++;
		}
	}
	__atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void test_pin_races_record(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_migrate_stats m0, m1;
	struct race r;
	pthread_t a, b;
	uint64_t free0;
	(void)state;

	memset(&r, 0, sizeof(r));
	r.mem = e->mem;
	free0 = free_now(e->mem);
	dmm_migrate_get_stats(e->mem, &m0);
	assert_int_equal(pthread_create(&a, NULL, race_records, &r), 0);
	assert_int_equal(pthread_create(&b, NULL, race_pins, &r), 0);
	assert_int_equal(pthread_join(b, NULL), 0);
	assert_int_equal(pthread_join(a, NULL), 0);
	dmm_migrate_get_stats(e->mem, &m1);
	print_message("records: %llu created and destroyed; pins: %llu refused (the library's), %llu landed\n",
		      (unsigned long long)r.rounds, (unsigned long long)r.eperm, (unsigned long long)r.pinned);
	assert_int_equal(r.pinned, 0);
	assert_int_equal(r.refused_free, 0);
	assert_int_equal(r.other, 0);
	assert_true(r.rounds > 0);
	assert_int_equal(m1.pins_refused_internal, m0.pins_refused_internal + r.eperm);
	assert_int_equal(free_now(e->mem), free0);
	assert_checks(e->mem);
	tu_env_destroy(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bounce_pool),
		cmocka_unit_test(test_atomic_pool_buffer),
		cmocka_unit_test(test_io_page_tables),
		cmocka_unit_test(test_iommu_domain_many_cpus),
		cmocka_unit_test(test_lib_kmalloc),
		cmocka_unit_test(test_records),
		cmocka_unit_test(test_callers_memory_pins),
		cmocka_unit_test(test_pin_races_record),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

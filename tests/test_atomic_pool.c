/* SPDX-License-Identifier: MIT */
/*
 * Coherent atomic pools on the hosted platform: atomic coherent allocations
 * for non-coherent devices come from pre-remapped memory (no attribute
 * change, no cache maintenance on the atomic path), from the pool that
 * matches the device's reach; frees go back to the pool; the background
 * refill grows a pool that fell below its threshold; exhaustion fails with
 * -DMM_ENOMEM and counts; without a defer hook only non-atomic callers grow
 * the pools; bad input; pins of a chunk's pages refused (the library's own
 * memory), changing nothing; two threads. Every step is followed by the page
 * allocator's, the range index's and the pools' own checks.
 */
#include <pthread.h>

#include "tu_dma.h"


#define check_all(mem)                                        \
	do {                                                  \
		assert_checks(mem);                           \
		assert_ok(dmm_dma_atomic_pool_check(mem));    \
	} while (0)

static void flush(struct dmm_mem *mem)
{
	const struct dmm_platform *p = dmm_mem_platform(mem);
	if (p->defer_flush)
		p->defer_flush(p->ctx);
}

static struct dmm_atomic_pool_stats pstats(struct dmm_mem *mem, enum dmm_atomic_pool_kind k)
{
	struct dmm_atomic_pool_stats st;
	assert_ok(dmm_dma_atomic_pool_get_stats(mem, k, &st));
	return st;
}

static dmm_phys_t phys_of(struct dmm_device *dev, dmm_dma_addr_t bus)
{
	dmm_phys_t pa;
	assert_ok(dmm_dma_bus_to_phys(dev, bus, &pa));
	return pa;
}

/* One atomic allocation that must come from pool @k without touching
 * memory attributes or caches; returns its physical address. */
static dmm_phys_t atomic_from(struct tu_env *e, struct dmm_device *dev, enum dmm_atomic_pool_kind k,
			      size_t size, void **cpu, dmm_dma_addr_t *bus)
{
	struct dmm_atomic_pool_stats s0 = pstats(e->mem, k), s1;
	struct dmm_hosted_stats h0, h1;
	struct dmm_dma_stats d0, d1;
	dmm_phys_t pa;

	flush(e->mem); /* no refill may run while we count attribute changes */
	dmm_hosted_get_stats(e->hosted, &h0);
	dmm_device_get_stats(dev, &d0);
	assert_ok(dmm_dma_alloc_coherent(dev, size, DMM_GFP_ATOMIC, cpu, bus));
	dmm_hosted_get_stats(e->hosted, &h1);
	dmm_device_get_stats(dev, &d1);
	s1 = pstats(e->mem, k);
	assert_int_equal(s1.allocs, s0.allocs + 1);
	pa = phys_of(dev, *bus);
	assert_true(pa + size <= s1.limit);
	assert_ptr_equal(*cpu, dmm_pfn_to_virt(e->mem, dmm_phys_to_pfn(pa)));
	if (s1.free >= s1.threshold) {
		/* no refill was queued: the atomic path changed no attribute */
		assert_int_equal(h1.memattr_calls, h0.memattr_calls);
	}
	assert_int_equal(d1.cache_flush_bytes, d0.cache_flush_bytes);
	for (size_t b = 0; b < size; b += 64)
		assert_int_equal(((uint8_t *)*cpu)[b], 0);
	memset(*cpu, 0x5a, size);
	check_all(e->mem);
	return pa;
}

static void test_reach_and_uncached(void **state)
{
	(void)state;
	/* Raspberry Pi 4: a 30-bit device gets the DMA pool (below 1 GiB) */
	{
		struct tu_env *e = tu_env_profile("rpi4");
		struct dmm_device *emmc, *pcie;
		struct dmm_device_desc d30 = tu_desc("emmc2", 30, 0, DMM_DEVICE_CMA_NONE), d64 = tu_desc("pcie", 64, 0, DMM_DEVICE_CMA_NONE);
		struct dmm_hosted_stats h0, h1;
		struct dmm_atomic_pool_stats st;
		void *cpu[8];
		dmm_dma_addr_t bus[8];
		uint64_t free_pages;

		assert_ok(dmm_device_create(e->mem, &d30, NULL, &emmc));
		assert_ok(dmm_device_create(e->mem, &d64, NULL, &pcie));
		dmm_hosted_get_stats(e->hosted, &h0);
		assert_ok(dmm_dma_atomic_pool_init(e->mem, NULL));
		dmm_hosted_get_stats(e->hosted, &h1);
		check_all(e->mem);
		for (int k = 0; k < DMM_NR_ATOMIC_POOLS; k++) {
			st = pstats(e->mem, (enum dmm_atomic_pool_kind)k);
			assert_true(st.present);
			assert_true(st.background);
			/* 8 GiB: 128 KiB per GiB, as Linux sizes it */
			assert_int_equal(st.size, 1 * MiB);
			assert_int_equal(st.free, st.size);
			assert_int_equal(st.bytes_remapped, st.size);
			assert_int_equal(st.chunks, 1);
		}
		assert_int_equal(pstats(e->mem, DMM_ATOMIC_POOL_DMA).limit, 1 * GiB);
		assert_int_equal(pstats(e->mem, DMM_ATOMIC_POOL_DMA32).limit, 4 * GiB);
		assert_int_equal(pstats(e->mem, DMM_ATOMIC_POOL_ANY).limit, DMM_PHYS_MAX);
		/* the pools were remapped once each, at init */
		assert_int_equal(h1.memattr_calls, h0.memattr_calls + 3);

		free_pages = tu_zone_free_all(e->mem);
		for (int i = 0; i < 8; i++) {
			dmm_phys_t pa = atomic_from(e, emmc, DMM_ATOMIC_POOL_DMA, (size_t)(i % 3 + 1) * 4096, &cpu[i],
						    &bus[i]);
			assert_true(pa + 3 * 4096 <= 1 * GiB);
			/* aligned to its power-of-two size, like the page allocator */
			assert_int_equal(pa % ((i % 3 + 1) == 3 ? 16384 : (uint64_t)(i % 3 + 1) * 4096), 0);
		}
		/* the page allocator was not involved */
		assert_int_equal(tu_zone_free_all(e->mem), free_pages);
		st = pstats(e->mem, DMM_ATOMIC_POOL_DMA);
		assert_int_equal(st.allocs, 8);
		assert_true(st.high_water >= 8 * 4096);
		assert_int_equal(pstats(e->mem, DMM_ATOMIC_POOL_DMA32).allocs, 0);
		/* a 64-bit device takes the pool of memory nobody else needs */
		{
			void *c;
			dmm_dma_addr_t b;
			dmm_phys_t pa = atomic_from(e, pcie, DMM_ATOMIC_POOL_ANY, 8192, &c, &b);
			assert_true(pa >= 4 * GiB);
			assert_ok(dmm_dma_free_coherent(pcie, 8192, c, b));
			check_all(e->mem);
		}
		/* frees go back to the pool, not to the page allocator */
		for (int i = 0; i < 8; i++) {
			assert_ok(dmm_dma_free_coherent(emmc, (size_t)(i % 3 + 1) * 4096, cpu[i], bus[i]));
			check_all(e->mem);
		}
		assert_int_equal(tu_zone_free_all(e->mem), free_pages);
		st = pstats(e->mem, DMM_ATOMIC_POOL_DMA);
		assert_int_equal(st.frees, 8);
		assert_int_equal(st.free, st.size);
		/* memory handed out again is zeroed (atomic_from checks) */
		{
			void *c;
			dmm_dma_addr_t b;
			atomic_from(e, emmc, DMM_ATOMIC_POOL_DMA, 12288, &c, &b);
			assert_ok(dmm_dma_free_coherent(emmc, 12288, c, b));
		}
		/* a coherent device's atomic request does not use the pools */
		{
			struct dmm_device *coh;
			struct dmm_device_desc dc = tu_desc("coh", 30, 1, DMM_DEVICE_CMA_NONE);
			void *c;
			dmm_dma_addr_t b;
			assert_ok(dmm_device_create(e->mem, &dc, NULL, &coh));
			assert_ok(dmm_dma_alloc_coherent(coh, 4096, DMM_GFP_ATOMIC, &c, &b));
			assert_int_equal(pstats(e->mem, DMM_ATOMIC_POOL_DMA).allocs, 9);
			assert_ok(dmm_dma_free_coherent(coh, 4096, c, b));
			assert_ok(dmm_device_destroy(coh));
		}
		check_all(e->mem);
		assert_ok(dmm_device_destroy(emmc));
		assert_ok(dmm_device_destroy(pcie));
		assert_ok(dmm_dma_atomic_pool_destroy(e->mem));
		dmm_page_drain_pcp(e->mem);
		check_all(e->mem);
		assert_int_equal(tu_zone_free_all(e->mem), e->free0);
		tu_env_destroy(e);
	}
	/* PC: 32-bit devices get the DMA32 pool, ISA devices the DMA pool */
	{
		struct tu_env *e = tu_env_profile("pc");
		struct dmm_device *nic, *isa;
		struct dmm_device_desc d32 = tu_desc("nic", 32, 0, DMM_DEVICE_CMA_NONE), d24 = tu_desc("isa", 24, 0, DMM_DEVICE_CMA_NONE);
		void *c;
		dmm_dma_addr_t b;
		dmm_phys_t pa;

		assert_ok(dmm_device_create(e->mem, &d32, NULL, &nic));
		assert_ok(dmm_device_create(e->mem, &d24, NULL, &isa));
		assert_ok(dmm_dma_atomic_pool_init(e->mem, NULL));
		/* 16 GiB: 2 MiB, but the 16 MiB DMA zone gets at most 1/32 of itself */
		assert_int_equal(pstats(e->mem, DMM_ATOMIC_POOL_DMA32).size, 2 * MiB);
		assert_int_equal(pstats(e->mem, DMM_ATOMIC_POOL_DMA).size, 256 * KiB);
		pa = atomic_from(e, nic, DMM_ATOMIC_POOL_DMA32, 20000, &c, &b);
		assert_true(pa + 20000 <= 4 * GiB);
		assert_ok(dmm_dma_free_coherent(nic, 20000, c, b));
		check_all(e->mem);
		pa = atomic_from(e, isa, DMM_ATOMIC_POOL_DMA, 4096, &c, &b);
		assert_true(pa + 4096 <= 16 * MiB);
		assert_ok(dmm_dma_free_coherent(isa, 4096, c, b));
		check_all(e->mem);
		assert_ok(dmm_device_destroy(nic));
		assert_ok(dmm_device_destroy(isa));
		tu_env_destroy(e);
	}
	/* phone: no DMA zone, so no DMA pool */
	{
		struct tu_env *e = tu_env_profile("phone");
		struct dmm_atomic_pool_stats st;
		assert_ok(dmm_dma_atomic_pool_init(e->mem, NULL));
		st = pstats(e->mem, DMM_ATOMIC_POOL_DMA);
		assert_false(st.present);
		assert_int_equal(st.size, 0);
		assert_true(pstats(e->mem, DMM_ATOMIC_POOL_DMA32).present);
		assert_true(pstats(e->mem, DMM_ATOMIC_POOL_ANY).present);
		check_all(e->mem);
		tu_env_destroy(e);
	}
}

/* Small DMA32 pool on the PC profile: 64 KiB, refill below 32 KiB by
 * 64 KiB, at most 256 KiB. */
static struct dmm_atomic_pool_opts small_opts(void)
{
	struct dmm_atomic_pool_opts o;
	memset(&o, 0, sizeof(o));
	o.pool[DMM_ATOMIC_POOL_DMA32].initial = 64 * KiB;
	o.pool[DMM_ATOMIC_POOL_DMA32].threshold = 32 * KiB;
	o.pool[DMM_ATOMIC_POOL_DMA32].step = 64 * KiB;
	o.pool[DMM_ATOMIC_POOL_DMA32].max = 256 * KiB;
	return o;
}

static void test_refill_and_exhaustion(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_atomic_pool_opts o = small_opts();
	struct dmm_device *nic;
	struct dmm_device_desc d = tu_desc("nic", 32, 0, DMM_DEVICE_CMA_NONE);
	struct dmm_atomic_pool_stats st;
	struct dmm_dma_stats ds;
	void *cpu[64];
	dmm_dma_addr_t bus[64];
	int n = 0, rc;
	(void)state;

	assert_ok(dmm_device_create(e->mem, &d, NULL, &nic));
	assert_ok(dmm_dma_atomic_pool_init(e->mem, &o));
	check_all(e->mem);
	st = pstats(e->mem, DMM_ATOMIC_POOL_DMA32);
	assert_int_equal(st.size, 64 * KiB);
	assert_int_equal(st.threshold, 32 * KiB);
	assert_int_equal(st.max, 256 * KiB);

	/* 48 KiB in use leaves 16 KiB: below the threshold, one refill queued */
	for (; n < 3; n++) {
		assert_ok(dmm_dma_alloc_coherent(nic, 16 * KiB, DMM_GFP_ATOMIC, &cpu[n], &bus[n]));
		assert_true(phys_of(nic, bus[n]) + 16 * KiB <= 4 * GiB);
	}
	flush(e->mem);
	check_all(e->mem);
	st = pstats(e->mem, DMM_ATOMIC_POOL_DMA32);
	assert_int_equal(st.refills_queued, 1);
	assert_int_equal(st.refills_done, 1);
	assert_int_equal(st.chunks, 2);
	assert_int_equal(st.size, 128 * KiB);
	assert_int_equal(st.free, 80 * KiB);
	assert_int_equal(st.bytes_remapped, 128 * KiB);

	/* a request larger than any chunk fails at once, and the refill after
	 * it adds a chunk large enough */
	rc = dmm_dma_alloc_coherent(nic, 128 * KiB, DMM_GFP_ATOMIC, &cpu[n], &bus[n]);
	assert_rc(rc, -DMM_ENOMEM);
	flush(e->mem);
	check_all(e->mem);
	st = pstats(e->mem, DMM_ATOMIC_POOL_DMA32);
	assert_int_equal(st.failures, 1);
	assert_int_equal(st.size, 256 * KiB);
	assert_ok(dmm_dma_alloc_coherent(nic, 128 * KiB, DMM_GFP_ATOMIC, &cpu[n], &bus[n]));
	assert_int_equal(phys_of(nic, bus[n]) % (128 * KiB), 0);
	n++;
	check_all(e->mem);

	/* at its maximum the pool runs dry: -DMM_ENOMEM, counted, nothing grows */
	while ((rc = dmm_dma_alloc_coherent(nic, 4 * KiB, DMM_GFP_ATOMIC, &cpu[n], &bus[n])) == 0) {
		n++;
		assert_true(n < 64);
		flush(e->mem);
	}
	assert_rc(rc, -DMM_ENOMEM);
	flush(e->mem);
	check_all(e->mem);
	st = pstats(e->mem, DMM_ATOMIC_POOL_DMA32);
	assert_int_equal(st.size, 256 * KiB);
	assert_int_equal(st.free, 0);
	assert_int_equal(st.high_water, 256 * KiB);
	assert_int_equal(st.failures, 2);
	assert_int_equal(n, 3 + 1 + (256 - 48 - 128) / 4);
	dmm_device_get_stats(nic, &ds);
	assert_int_equal(ds.fail_nomem, 2);
	assert_int_equal(ds.fail_atomic, 0);
	/* ... and a request above the maximum can never be served */
	assert_rc(dmm_dma_alloc_coherent(nic, 512 * KiB, DMM_GFP_ATOMIC, &cpu[n], &bus[n]), -DMM_ENOMEM);
	flush(e->mem);
	assert_int_equal(pstats(e->mem, DMM_ATOMIC_POOL_DMA32).size, 256 * KiB);

	/* contents survive, everything goes back */
	for (int i = 0; i < n; i++)
		memset(cpu[i], i, 4096);
	for (int i = n - 1; i >= 0; i--) {
		size_t sz = i < 3 ? 16 * KiB : i == 3 ? 128 * KiB : 4 * KiB;
		assert_int_equal(((uint8_t *)cpu[i])[100], (uint8_t)i);
		assert_ok(dmm_dma_free_coherent(nic, sz, cpu[i], bus[i]));
		check_all(e->mem);
	}
	st = pstats(e->mem, DMM_ATOMIC_POOL_DMA32);
	assert_int_equal(st.free, st.size);
	assert_int_equal(st.allocs, st.frees);
	assert_ok(dmm_device_destroy(nic));
	assert_ok(dmm_dma_atomic_pool_destroy(e->mem));
	dmm_page_drain_pcp(e->mem);
	check_all(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), e->free0);
	tu_env_destroy(e);
}

/* Without a defer hook nothing grows in the background: the refill waits
 * for a caller that may sleep. */
static void test_no_background_worker(void **state)
{
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_platform p;
	struct dmm_mem *mem;
	struct dmm_atomic_pool_opts o = small_opts();
	struct dmm_device *nic, *coh;
	struct dmm_device_desc d = tu_desc("nic", 32, 0, DMM_DEVICE_CMA_NONE), dc = tu_desc("disk", 64, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_atomic_pool_stats st;
	void *cpu[4], *c;
	dmm_dma_addr_t bus[4], b;
	(void)state;

	tu_profile("pc", &m);
	assert_ok(dmm_hosted_create(&m, 2, DMM_LOG_WARN, &h));
	p = *dmm_hosted_platform(h);
	p.defer = NULL;
	p.defer_flush = NULL;
	assert_ok(dmm_mem_create(&m, &p, &mem));
	assert_ok(dmm_device_create(mem, &d, NULL, &nic));
	assert_ok(dmm_device_create(mem, &dc, NULL, &coh));
	assert_ok(dmm_dma_atomic_pool_init(mem, &o));
	st = pstats(mem, DMM_ATOMIC_POOL_DMA32);
	assert_false(st.background);

	for (int i = 0; i < 3; i++)
		assert_ok(dmm_dma_alloc_coherent(nic, 16 * KiB, DMM_GFP_ATOMIC, &cpu[i], &bus[i]));
	check_all(mem);
	st = pstats(mem, DMM_ATOMIC_POOL_DMA32);
	assert_int_equal(st.refills_queued, 0);
	assert_int_equal(st.size, 64 * KiB); /* atomic callers never grow it */
	/* the next caller that may sleep runs the wanted refill */
	assert_ok(dmm_dma_alloc_coherent(coh, 4096, 0, &c, &b));
	check_all(mem);
	st = pstats(mem, DMM_ATOMIC_POOL_DMA32);
	assert_int_equal(st.refills_sync, 1);
	assert_int_equal(st.size, 128 * KiB);
	assert_ok(dmm_dma_free_coherent(coh, 4096, c, b));
	/* or an explicit refill */
	assert_ok(dmm_dma_alloc_coherent(nic, 64 * KiB, DMM_GFP_ATOMIC, &cpu[3], &bus[3]));
	assert_int_equal(dmm_dma_atomic_pool_refill(mem), 1);
	check_all(mem);
	st = pstats(mem, DMM_ATOMIC_POOL_DMA32);
	assert_int_equal(st.size, 192 * KiB);
	assert_int_equal(st.refills_sync, 2);
	assert_int_equal(dmm_dma_atomic_pool_refill(mem), 0); /* nothing wanted */
	for (int i = 0; i < 4; i++)
		assert_ok(dmm_dma_free_coherent(nic, i < 3 ? 16 * KiB : 64 * KiB, cpu[i], bus[i]));
	check_all(mem);
	assert_ok(dmm_dma_atomic_pool_destroy(mem));
	assert_ok(dmm_device_destroy(nic));
	assert_ok(dmm_device_destroy(coh));
	check_all(mem);
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(h);
}

static void test_bad_input(void **state)
{
	struct tu_env *e = tu_env_profile("rpi4");
	struct dmm_atomic_pool_opts o;
	struct dmm_atomic_pool_stats st;
	struct dmm_device *dev, *odd;
	struct dmm_device_desc d = tu_desc("emmc2", 30, 0, DMM_DEVICE_CMA_NONE);
	struct dmm_dma_stats ds;
	void *cpu, *c2;
	dmm_dma_addr_t bus, b2;
	(void)state;

	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	/* before init: the old behaviour, and nothing to check or destroy */
	assert_rc(dmm_dma_alloc_coherent(dev, 4096, DMM_GFP_ATOMIC, &cpu, &bus), -DMM_ENOTSUP);
	dmm_device_get_stats(dev, &ds);
	assert_int_equal(ds.fail_atomic, 1);
	assert_rc(dmm_dma_atomic_pool_get_stats(e->mem, DMM_ATOMIC_POOL_DMA, &st), -DMM_ENOENT);
	assert_rc(dmm_dma_atomic_pool_destroy(e->mem), -DMM_ENOENT);
	assert_rc(dmm_dma_atomic_pool_refill(e->mem), -DMM_ENOENT);
	assert_ok(dmm_dma_atomic_pool_check(e->mem));

	/* bad options change nothing */
	assert_rc(dmm_dma_atomic_pool_init(NULL, NULL), -DMM_EINVAL);
	memset(&o, 0, sizeof(o));
	o.pool[DMM_ATOMIC_POOL_DMA].initial = 1 * MiB;
	o.pool[DMM_ATOMIC_POOL_DMA].max = 512 * KiB;
	assert_rc(dmm_dma_atomic_pool_init(e->mem, &o), -DMM_EINVAL);
	memset(&o, 0, sizeof(o));
	o.pool[DMM_ATOMIC_POOL_DMA32].threshold = 64 * MiB;
	o.pool[DMM_ATOMIC_POOL_DMA32].max = 8 * MiB;
	assert_rc(dmm_dma_atomic_pool_init(e->mem, &o), -DMM_EINVAL);
	memset(&o, 0, sizeof(o));
	o.pool[DMM_ATOMIC_POOL_ANY].initial = 512 * MiB; /* above the largest chunk */
	assert_rc(dmm_dma_atomic_pool_init(e->mem, &o), -DMM_EINVAL);
	assert_rc(dmm_dma_atomic_pool_get_stats(e->mem, DMM_ATOMIC_POOL_DMA, &st), -DMM_ENOENT);
	dmm_page_drain_pcp(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), e->free0 - 1); /* the device's page */

	/* only the DMA pool, with a given size */
	memset(&o, 0, sizeof(o));
	o.pool[DMM_ATOMIC_POOL_DMA].initial = 30 * KiB; /* rounds up to 32 KiB */
	o.pool[DMM_ATOMIC_POOL_DMA32].initial = DMM_ATOMIC_POOL_NONE;
	o.pool[DMM_ATOMIC_POOL_ANY].initial = DMM_ATOMIC_POOL_NONE;
	assert_ok(dmm_dma_atomic_pool_init(e->mem, &o));
	assert_rc(dmm_dma_atomic_pool_init(e->mem, &o), -DMM_EEXIST);
	assert_rc(dmm_dma_atomic_pool_get_stats(e->mem, DMM_NR_ATOMIC_POOLS, &st), -DMM_EINVAL);
	assert_rc(dmm_dma_atomic_pool_get_stats(e->mem, DMM_ATOMIC_POOL_DMA, NULL), -DMM_EINVAL);
	assert_int_equal(pstats(e->mem, DMM_ATOMIC_POOL_DMA).size, 32 * KiB);
	assert_false(pstats(e->mem, DMM_ATOMIC_POOL_ANY).present);
	assert_string_equal(dmm_atomic_pool_name(DMM_ATOMIC_POOL_DMA32), "DMA32");
	check_all(e->mem);

	/* a 64-bit device takes the least restricted pool there is: here the DMA one */
	{
		struct dmm_device_desc x = tu_desc("wide", 64, 0, DMM_DEVICE_CMA_NONE);
		struct dmm_device *w;
		assert_ok(dmm_device_create(e->mem, &x, NULL, &w));
		atomic_from(e, w, DMM_ATOMIC_POOL_DMA, 4096, &cpu, &bus);
		assert_ok(dmm_dma_free_coherent(w, 4096, cpu, bus));
		assert_ok(dmm_device_destroy(w));
	}
	/* no pool within reach: a 64-bit device behind a bus offset that puts
	 * physical 0 out of its reach */
	{
		struct dmm_device_desc x = tu_desc("high", 64, 0, DMM_DEVICE_CMA_NONE);
		struct dmm_device *w;
		x.limits.lo = 2 * GiB;
		assert_ok(dmm_device_create(e->mem, &x, NULL, &w));
		assert_rc(dmm_dma_alloc_coherent(w, 4096, DMM_GFP_ATOMIC, &cpu, &bus), -DMM_ENOTSUP);
		dmm_device_get_stats(w, &ds);
		assert_int_equal(ds.fail_atomic, 1);
		assert_ok(dmm_device_destroy(w));
	}
	/* a device whose window starts above the pool's memory cannot use it */
	{
		struct dmm_device_desc x = tu_desc("odd", 30, 0, DMM_DEVICE_CMA_NONE);
		x.limits.lo = 512 * MiB;
		assert_ok(dmm_device_create(e->mem, &x, NULL, &odd));
		assert_rc(dmm_dma_alloc_coherent(odd, 4096, DMM_GFP_ATOMIC, &cpu, &bus), -DMM_ENOTSUP);
		assert_ok(dmm_device_destroy(odd));
	}
	/* a boundary smaller than the block */
	{
		struct dmm_device_desc x = tu_desc("bnd", 30, 0, DMM_DEVICE_CMA_NONE);
		x.limits.boundary = 8 * KiB;
		assert_ok(dmm_device_create(e->mem, &x, NULL, &odd));
		assert_rc(dmm_dma_alloc_coherent(odd, 12 * KiB, DMM_GFP_ATOMIC, &cpu, &bus), -DMM_EINVAL);
		assert_ok(dmm_dma_alloc_coherent(odd, 8 * KiB, DMM_GFP_ATOMIC, &cpu, &bus));
		assert_int_equal(phys_of(odd, bus) / (8 * KiB), (phys_of(odd, bus) + 8 * KiB - 1) / (8 * KiB));
		assert_ok(dmm_dma_free_coherent(odd, 8 * KiB, cpu, bus));
		assert_ok(dmm_device_destroy(odd));
	}
	/* an alignment larger than the buffer takes a larger block */
	{
		struct dmm_device_desc x = tu_desc("aln", 30, 0, DMM_DEVICE_CMA_NONE);
		x.limits.align = 16 * KiB;
		assert_ok(dmm_device_create(e->mem, &x, NULL, &odd));
		assert_ok(dmm_dma_alloc_coherent(odd, 4 * KiB, DMM_GFP_ATOMIC, &cpu, &bus));
		assert_ok(dmm_dma_alloc_coherent(odd, 4 * KiB, DMM_GFP_ATOMIC, &c2, &b2));
		assert_int_equal(bus % (16 * KiB), 0);
		assert_int_equal(b2 % (16 * KiB), 0);
		assert_ok(dmm_dma_free_coherent(odd, 4 * KiB, cpu, bus));
		assert_ok(dmm_dma_free_coherent(odd, 4 * KiB, c2, b2));
		assert_ok(dmm_device_destroy(odd));
	}
	check_all(e->mem);

	/* wrong frees change nothing */
	assert_ok(dmm_dma_alloc_coherent(dev, 8 * KiB, DMM_GFP_ATOMIC, &cpu, &bus));
	assert_ok(dmm_dma_alloc_coherent(dev, 4 * KiB, DMM_GFP_ATOMIC, &c2, &b2));
	st = pstats(e->mem, DMM_ATOMIC_POOL_DMA);
	assert_rc(dmm_dma_free_coherent(dev, 16 * KiB, cpu, bus), -DMM_EINVAL);   /* wrong size */
	assert_rc(dmm_dma_free_coherent(dev, 4 * KiB, cpu, bus), -DMM_EINVAL);    /* wrong size */
	assert_rc(dmm_dma_free_coherent(dev, 8 * KiB, c2, bus), -DMM_EINVAL);     /* wrong CPU address */
	assert_rc(dmm_dma_free_coherent(dev, 4 * KiB, (uint8_t *)cpu + 4096, bus + 4096),
		  -DMM_ENOENT);                                                   /* inside a block */
	assert_int_equal(pstats(e->mem, DMM_ATOMIC_POOL_DMA).free, st.free);
	check_all(e->mem);
	assert_rc(dmm_dma_atomic_pool_destroy(e->mem), -DMM_EBUSY); /* still in use */
	assert_ok(dmm_dma_free_coherent(dev, 8 * KiB, cpu, bus));
	assert_rc(dmm_dma_free_coherent(dev, 8 * KiB, cpu, bus), -DMM_ENOENT); /* double free */
	assert_ok(dmm_dma_free_coherent(dev, 4 * KiB, c2, b2));
	check_all(e->mem);
	st = pstats(e->mem, DMM_ATOMIC_POOL_DMA);
	assert_int_equal(st.free, st.size);
	flush(e->mem);
	assert_ok(dmm_dma_atomic_pool_destroy(e->mem));
	assert_ok(dmm_device_destroy(dev));
	dmm_page_drain_pcp(e->mem);
	check_all(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), e->free0);
	tu_env_destroy(e);
}

/* Byte counts near 2^64 are refused, not wrapped to a few pages: a
 * threshold above any maximum, an initial size or a step above the largest
 * chunk. Nothing is set up, the refusal is counted. */
static void test_huge_options(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_atomic_pool_opts o;
	struct dmm_atomic_pool_stats st;
	struct dmm_mem_info mi0, mi1;
	const uint64_t huge[] = { UINT64_MAX - 1, UINT64_MAX - DMM_PAGE_SIZE + 1, UINT64_MAX - DMM_PAGE_SIZE,
				  (uint64_t)1 << 63 };
	uint64_t free0;
	(void)state;

	dmm_page_drain_pcp(e->mem);
	free0 = tu_zone_free_all(e->mem);
	for (size_t i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
		for (unsigned field = 0; field < 3; field++) {
			memset(&o, 0, sizeof(o));
			if (field == 0)
				o.pool[DMM_ATOMIC_POOL_ANY].threshold = huge[i];
			else if (field == 1)
				o.pool[DMM_ATOMIC_POOL_ANY].initial = huge[i];
			else
				o.pool[DMM_ATOMIC_POOL_ANY].step = huge[i];
			dmm_mem_get_info(e->mem, &mi0);
			assert_rc(dmm_dma_atomic_pool_init(e->mem, &o), -DMM_EINVAL);
			dmm_mem_get_info(e->mem, &mi1);
			assert_int_equal(mi1.fail_invalid, mi0.fail_invalid + 1);
			assert_rc(dmm_dma_atomic_pool_get_stats(e->mem, DMM_ATOMIC_POOL_ANY, &st), -DMM_ENOENT);
		}
	}
	/* the largest chunk itself is accepted as initial size and step */
	memset(&o, 0, sizeof(o));
	o.pool[DMM_ATOMIC_POOL_ANY].step = (uint64_t)DMM_PAGE_SIZE << DMM_ATOMIC_POOL_MAX_ORDER;
	o.pool[DMM_ATOMIC_POOL_DMA].initial = DMM_ATOMIC_POOL_NONE;
	o.pool[DMM_ATOMIC_POOL_DMA32].initial = DMM_ATOMIC_POOL_NONE;
	assert_ok(dmm_dma_atomic_pool_init(e->mem, &o));
	assert_int_equal(pstats(e->mem, DMM_ATOMIC_POOL_ANY).step, (uint64_t)DMM_PAGE_SIZE << DMM_ATOMIC_POOL_MAX_ORDER);
	check_all(e->mem);
	flush(e->mem);
	assert_ok(dmm_dma_atomic_pool_destroy(e->mem));
	dmm_page_drain_pcp(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), free0);
	tu_env_destroy(e);
}

/* A free whose size wraps to zero pages (SIZE_MAX) is refused and leaves
 * the pool's one-page block allocated; the right size frees it. */
static void test_free_wrapped_size(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device_desc d = tu_desc("nic", 64, 0, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	struct dmm_atomic_pool_stats a, b;
	void *cpu;
	dmm_dma_addr_t bus;
	(void)state;

	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	assert_ok(dmm_dma_atomic_pool_init(e->mem, NULL));
	atomic_from(e, dev, DMM_ATOMIC_POOL_ANY, 4096, &cpu, &bus);
	a = pstats(e->mem, DMM_ATOMIC_POOL_ANY);
	assert_true(dmm_dma_free_coherent(dev, SIZE_MAX, cpu, bus) < 0);
	assert_true(dmm_dma_free_coherent(dev, SIZE_MAX - DMM_PAGE_SIZE + 2, cpu, bus) < 0);
	b = pstats(e->mem, DMM_ATOMIC_POOL_ANY);
	assert_int_equal(b.frees, a.frees);
	assert_int_equal(b.free, a.free);
	check_all(e->mem);
	assert_ok(dmm_dma_free_coherent(dev, 4096, cpu, bus));
	assert_int_equal(pstats(e->mem, DMM_ATOMIC_POOL_ANY).frees, a.frees + 1);
	check_all(e->mem);
	flush(e->mem);
	assert_ok(dmm_dma_atomic_pool_destroy(e->mem));
	assert_ok(dmm_device_destroy(dev));
	tu_env_destroy(e);
}

/* ---- two threads ------------------------------------------------------------------ */

struct worker {
	struct tu_env *e;
	struct dmm_device *dev;
	uint64_t seed;
	unsigned steps;
	unsigned retried;   /* allocations that had to wait for the refill */
	int failed;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	void *cpu[4] = { 0 };
	dmm_dma_addr_t bus[4];
	size_t sz[4];
	uint8_t tag[4];

	for (unsigned i = 0; i < w->steps && !w->failed; i++) {
		unsigned k = (unsigned)tu_rand_below(&w->seed, 4);
		if (cpu[k]) {
			for (size_t b = 0; b < sz[k]; b += 256)
				if (((uint8_t *)cpu[k])[b] != tag[k])
					w->failed = 1; /* someone else wrote into our buffer */
			if (dmm_dma_free_coherent(w->dev, sz[k], cpu[k], bus[k]))
				w->failed = 2;
			cpu[k] = NULL;
			continue;
		}
		sz[k] = (size_t)(1 + tu_rand_below(&w->seed, 16 * KiB));
		for (int tries = 0;; tries++) {
			int rc = dmm_dma_alloc_coherent(w->dev, sz[k], DMM_GFP_ATOMIC, &cpu[k], &bus[k]);
			if (!rc)
				break;
			if (rc != -DMM_ENOMEM || tries > 1000) {
				w->failed = 3;
				break;
			}
			/* a caller that may wait: let the refill catch up */
			w->retried++;
			flush(w->e->mem);
		}
		if (w->failed)
			break;
		tag[k] = (uint8_t)tu_rand(&w->seed);
		memset(cpu[k], tag[k], sz[k]);
		if (i % 512 == 0 && dmm_dma_atomic_pool_check(w->e->mem))
			w->failed = 4;
	}
	for (int k = 0; k < 4; k++)
		if (cpu[k] && dmm_dma_free_coherent(w->dev, sz[k], cpu[k], bus[k]))
			w->failed = 5;
	return NULL;
}

static void test_two_threads(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_atomic_pool_opts o;
	struct dmm_device *dev[2];
	struct dmm_device_desc d0 = tu_desc("nic0", 32, 0, DMM_DEVICE_CMA_NONE), d1 = tu_desc("nic1", 32, 0, DMM_DEVICE_CMA_NONE);
	struct worker w[2];
	pthread_t t[2];
	struct dmm_atomic_pool_stats st;
	const char *env = getenv("DMM_STRESS_STEPS");
	unsigned steps = env ? (unsigned)strtoul(env, NULL, 0) / 4 : 40000;
	(void)state;

	memset(&o, 0, sizeof(o));
	o.pool[DMM_ATOMIC_POOL_DMA32].initial = 32 * KiB; /* far too small: it must grow */
	o.pool[DMM_ATOMIC_POOL_DMA32].threshold = 96 * KiB;
	o.pool[DMM_ATOMIC_POOL_DMA32].step = 64 * KiB;
	o.pool[DMM_ATOMIC_POOL_DMA32].max = 1 * MiB;
	assert_ok(dmm_device_create(e->mem, &d0, NULL, &dev[0]));
	assert_ok(dmm_device_create(e->mem, &d1, NULL, &dev[1]));
	assert_ok(dmm_dma_atomic_pool_init(e->mem, &o));
	for (int i = 0; i < 2; i++) {
		w[i] = (struct worker){ e, dev[i], 0x1234567ull + (uint64_t)i * 77, steps, 0, 0 };
		assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	flush(e->mem);
	for (int i = 0; i < 2; i++)
		assert_int_equal(w[i].failed, 0);
	check_all(e->mem);
	st = pstats(e->mem, DMM_ATOMIC_POOL_DMA32);
	print_message("two threads: %u + %u steps, pool %llu KiB in %u chunks, high water %llu KiB, "
		      "%llu refills, %u + %u allocations waited for one\n",
		      steps, steps, (unsigned long long)(st.size >> 10), st.chunks,
		      (unsigned long long)(st.high_water >> 10), (unsigned long long)st.refills_done, w[0].retried,
		      w[1].retried);
	assert_true(st.chunks > 1); /* grown in the background */
	assert_true(st.refills_queued >= 1);
	assert_true(st.size <= st.max);
	assert_int_equal(st.free, st.size);
	assert_int_equal(st.allocs, st.frees);
	assert_ok(dmm_dma_atomic_pool_destroy(e->mem));
	assert_ok(dmm_device_destroy(dev[0]));
	assert_ok(dmm_device_destroy(dev[1]));
	dmm_page_drain_pcp(e->mem);
	check_all(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), e->free0);
	tu_env_destroy(e);
}

/* Threshold and maximum are both rounded up to whole pages, so values that
 * compare as they should in bytes compare the same way in pages: a
 * threshold of 8 KiB + 1 (3 pages) fits under a maximum of 12 KiB - 1
 * (3 pages), and so does an initial 16 KiB under a maximum of 16 KiB - 1. */
static void test_option_rounding(void **state)
{
	static const struct {
		uint64_t initial, threshold, max;
		int ok;
		uint64_t want_threshold, want_max; /* bytes, if ok */
	} cases[] = {
		{ 8 * KiB, 8 * KiB + 1, 12 * KiB - 1, 1, 12 * KiB, 12 * KiB },
		{ 8 * KiB, 8 * KiB + 1, 8 * KiB + 1, 1, 12 * KiB, 12 * KiB },
		{ 8 * KiB, 12 * KiB, 12 * KiB, 1, 12 * KiB, 12 * KiB },
		{ 16 * KiB, 0, 16 * KiB - 1, 1, 8 * KiB, 16 * KiB },
		{ 8 * KiB, 12 * KiB + 1, 12 * KiB, 0, 0, 0 },  /* 4 pages above 3 */
		{ 16 * KiB, 0, 12 * KiB, 0, 0, 0 },            /* 4 pages above 3 */
		{ 8 * KiB, 0, UINT64_MAX, 1, 4 * KiB, UINT64_MAX - DMM_PAGE_SIZE + 1 },
	};
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_atomic_pool_opts o;
	uint64_t free0;
	(void)state;

	dmm_page_drain_pcp(e->mem);
	free0 = tu_zone_free_all(e->mem);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct dmm_atomic_pool_stats st;

		memset(&o, 0, sizeof(o));
		o.pool[DMM_ATOMIC_POOL_DMA].initial = DMM_ATOMIC_POOL_NONE;
		o.pool[DMM_ATOMIC_POOL_DMA32].initial = DMM_ATOMIC_POOL_NONE;
		o.pool[DMM_ATOMIC_POOL_ANY].initial = cases[i].initial;
		o.pool[DMM_ATOMIC_POOL_ANY].threshold = cases[i].threshold;
		o.pool[DMM_ATOMIC_POOL_ANY].max = cases[i].max;
		if (!cases[i].ok) {
			assert_rc(dmm_dma_atomic_pool_init(e->mem, &o), -DMM_EINVAL);
			continue;
		}
		assert_ok(dmm_dma_atomic_pool_init(e->mem, &o));
		st = pstats(e->mem, DMM_ATOMIC_POOL_ANY);
		assert_int_equal(st.size, cases[i].initial);
		assert_int_equal(st.threshold, cases[i].want_threshold);
		assert_int_equal(st.max, cases[i].want_max);
		assert_true(st.size <= st.max);
		check_all(e->mem);
		flush(e->mem);
		assert_ok(dmm_dma_atomic_pool_destroy(e->mem));
	}
	dmm_page_drain_pcp(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), free0);
	tu_env_destroy(e);
}

/*
 * A pool chunk is the library's own memory: a pin of any page of it (the
 * first page of a buffer that started there, a page inside the chunk,
 * short-term or long-term) is refused with -DMM_EPERM and counted, and
 * changes nothing: no pin count, no rejected free, every pool as it was,
 * no attribute changed. The buffer's free then goes through, and the
 * destroy gives every chunk back, write-back again: the page allocator has
 * every page it had.
 */
static void test_chunk_refuses_pins(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device_desc d = tu_desc("nc", 32, 0, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	struct dmm_atomic_pool_stats st0[DMM_NR_ATOMIC_POOLS];
	struct dmm_hosted_stats h0, h1;
	struct dmm_migrate_stats m0, m1;
	dmm_pfn_t pfn, pinned = 0;
	dmm_dma_addr_t bus;
	uint64_t free0, bad0, chunks = 0;
	void *cpu;
	(void)state;

	assert_int_equal(dmm_slab_shrink(e->mem), 0);
	dmm_page_drain_pcp(e->mem);
	free0 = tu_zone_free_all(e->mem);
	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	assert_ok(dmm_dma_atomic_pool_init(e->mem, NULL));
	pfn = dmm_phys_to_pfn(atomic_from(e, dev, DMM_ATOMIC_POOL_DMA32, 4 * KiB, &cpu, &bus));
	for (unsigned k = 0; k < DMM_NR_ATOMIC_POOLS; k++) {
		st0[k] = pstats(e->mem, (enum dmm_atomic_pool_kind)k);
		chunks += st0[k].chunks;
	}
	dmm_hosted_get_stats(e->hosted, &h0);
	dmm_migrate_get_stats(e->mem, &m0);
	bad0 = tu_zone_bad_frees(e->mem);

	for (unsigned f = 0; f < 2; f++) {
		unsigned flags = f ? DMM_PIN_LONGTERM : 0;
		assert_rc(dmm_page_pin(e->mem, pfn, flags, &pinned, NULL), -DMM_EPERM); /* the buffer's page */
		assert_rc(dmm_page_pin(e->mem, pfn + 1, flags, &pinned, NULL), -DMM_EPERM); /* inside the chunk */
	}
	assert_int_equal(pinned, 0);
	dmm_migrate_get_stats(e->mem, &m1);
	assert_int_equal(m1.pins_refused_internal, m0.pins_refused_internal + 4);
	assert_int_equal(m1.longterm_pins, m0.longterm_pins);
	assert_int_equal(m1.longterm_pin_migrations, m0.longterm_pin_migrations);
	assert_int_equal(dmm_pfn_to_page(e->mem, pfn)->pins, 0);
	assert_int_equal(dmm_pfn_to_page(e->mem, pfn)->lt_pins, 0);
	assert_rc(dmm_page_unpin(e->mem, pfn, 0), -DMM_ENOENT);
	assert_int_equal(tu_zone_bad_frees(e->mem), bad0);
	dmm_hosted_get_stats(e->hosted, &h1);
	assert_int_equal(h1.memattr_calls, h0.memattr_calls);
	for (unsigned k = 0; k < DMM_NR_ATOMIC_POOLS; k++) {
		struct dmm_atomic_pool_stats st = pstats(e->mem, (enum dmm_atomic_pool_kind)k);
		assert_memory_equal(&st, &st0[k], sizeof(st));
	}
	check_all(e->mem);

	/* the buffer still works and goes back to its pool */
	for (size_t b = 0; b < 4 * KiB; b++)
		assert_int_equal(((uint8_t *)cpu)[b], 0x5a);
	assert_ok(dmm_dma_free_coherent(dev, 4 * KiB, cpu, bus));
	check_all(e->mem);

	/* the range allocator refuses to free the chunk (the first buffer
	 * started at its first page), changing nothing */
	assert_int_equal(dmm_pfn_to_page(e->mem, pfn)->state, DMM_PAGE_RANGE);
	bad0 = tu_zone_bad_frees(e->mem);
	assert_rc(dmm_free_range(e->mem, pfn, dmm_pfn_to_page(e->mem, pfn)->private), -DMM_EPERM);
	assert_int_equal(tu_zone_bad_frees(e->mem), bad0 + 1);
	check_all(e->mem);

	flush(e->mem);
	dmm_hosted_get_stats(e->hosted, &h0);
	assert_ok(dmm_dma_atomic_pool_destroy(e->mem));
	dmm_hosted_get_stats(e->hosted, &h1);
	assert_int_equal(h1.memattr_calls, h0.memattr_calls + chunks); /* each chunk write-back again */
	assert_rc(dmm_dma_atomic_pool_destroy(e->mem), -DMM_ENOENT);
	assert_ok(dmm_device_destroy(dev));
	assert_int_equal(dmm_slab_shrink(e->mem), 0);
	dmm_page_drain_pcp(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), free0);
	assert_checks(e->mem);
	tu_env_destroy(e);
}

/*
 * A free must name the size the allocation asked for, not only one of the
 * same block order: a 12 KiB buffer (a 16 KiB block) freed as 16 KiB, or
 * as 12 KiB + 1, was taken, and the device's low-memory count went down by
 * four pages where it had gone up by three (below zero: it wrapped). Now
 * refused (-DMM_EINVAL), nothing changed; the same with an alignment that
 * raises the block's order. The right size frees it.
 */
static void test_free_size_within_block(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device *nic, *aln;
	struct dmm_device_desc d = tu_desc("nic", 32, 0, DMM_DEVICE_CMA_NONE);
	struct dmm_device_desc x = tu_desc("aln", 32, 0, DMM_DEVICE_CMA_NONE);
	struct dmm_atomic_pool_stats s0, s1;
	struct dmm_dma_stats d0, d1;
	void *cpu;
	dmm_dma_addr_t bus;
	(void)state;

	assert_ok(dmm_device_create(e->mem, &d, NULL, &nic));
	x.limits.align = 16 * KiB;
	assert_ok(dmm_device_create(e->mem, &x, NULL, &aln));
	assert_ok(dmm_dma_atomic_pool_init(e->mem, NULL));
	flush(e->mem);

	assert_ok(dmm_dma_alloc_coherent(nic, 12 * KiB, DMM_GFP_ATOMIC, &cpu, &bus));
	flush(e->mem);
	check_all(e->mem);
	s0 = pstats(e->mem, DMM_ATOMIC_POOL_DMA32);
	dmm_device_get_stats(nic, &d0);
	assert_int_equal(d0.low_pages, 3);
	assert_rc(dmm_dma_free_coherent(nic, 16 * KiB, cpu, bus), -DMM_EINVAL);
	assert_rc(dmm_dma_free_coherent(nic, 12 * KiB + 1, cpu, bus), -DMM_EINVAL);
	assert_rc(dmm_dma_free_coherent(nic, 8 * KiB, cpu, bus), -DMM_EINVAL);
	check_all(e->mem);
	s1 = pstats(e->mem, DMM_ATOMIC_POOL_DMA32);
	dmm_device_get_stats(nic, &d1);
	assert_int_equal(s1.free, s0.free);
	assert_int_equal(s1.frees, s0.frees);
	assert_int_equal(d1.low_pages, 3);
	assert_int_equal(d1.coherent_frees, d0.coherent_frees);
	assert_ok(dmm_dma_free_coherent(nic, 12 * KiB, cpu, bus));
	dmm_device_get_stats(nic, &d1);
	assert_int_equal(d1.low_pages, 0);

	/* 4 KiB aligned to 16 KiB: a 16 KiB block, but a 4 KiB buffer */
	assert_ok(dmm_dma_alloc_coherent(aln, 4 * KiB, DMM_GFP_ATOMIC, &cpu, &bus));
	flush(e->mem);
	assert_rc(dmm_dma_free_coherent(aln, 16 * KiB, cpu, bus), -DMM_EINVAL);
	dmm_device_get_stats(aln, &d1);
	assert_int_equal(d1.low_pages, 1);
	assert_ok(dmm_dma_free_coherent(aln, 4 * KiB, cpu, bus));
	dmm_device_get_stats(aln, &d1);
	assert_int_equal(d1.low_pages, 0);
	check_all(e->mem);
	s1 = pstats(e->mem, DMM_ATOMIC_POOL_DMA32);
	assert_int_equal(s1.free, s1.size);
	assert_int_equal(s1.allocs, s1.frees);

	flush(e->mem);
	assert_ok(dmm_dma_atomic_pool_destroy(e->mem));
	assert_ok(dmm_device_destroy(nic));
	assert_ok(dmm_device_destroy(aln));
	dmm_page_drain_pcp(e->mem);
	check_all(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), e->free0);
	tu_env_destroy(e);
}

/*
 * A platform may queue background work (defer) without a way to wait for
 * it (no defer_flush). A refill queued then has not run when the pools are
 * destroyed: the destroy must refuse (-DMM_EBUSY, nothing changed) rather
 * than free the pools' state under it, and go through once it has run,
 * also when a synchronous refill ran in between (it clears the pool's
 * "refill wanted" flag, not the queued job). Before, the destroy returned
 * 0 and the refill ran later on the freed state, adding a chunk nobody
 * would ever give back.
 */
static void test_destroy_with_refill_queued(void **state)
{
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_platform p;
	struct dmm_mem *mem;
	struct dmm_atomic_pool_opts o = small_opts();
	struct dmm_device *nic;
	struct dmm_device_desc d = tu_desc("nic", 32, 0, DMM_DEVICE_CMA_NONE);
	struct dmm_atomic_pool_stats st;
	void *cpu[3];
	dmm_dma_addr_t bus[3];
	uint64_t free0;
	(void)state;

	tu_profile("pc", &m);
	assert_ok(dmm_hosted_create(&m, 2, DMM_LOG_WARN, &h));
	p = *dmm_hosted_platform(h);
	p.defer = tu_hold_defer;
	p.defer_flush = NULL;
	assert_ok(dmm_mem_create(&m, &p, &mem));
	tu_held()->jobs = 0;
	dmm_page_drain_pcp(mem);
	free0 = tu_zone_free_all(mem);
	assert_ok(dmm_device_create(mem, &d, NULL, &nic));
	assert_ok(dmm_dma_atomic_pool_init(mem, &o));
	for (int i = 0; i < 3; i++) /* 48 of 64 KiB: below the threshold, a refill queued */
		assert_ok(dmm_dma_alloc_coherent(nic, 16 * KiB, DMM_GFP_ATOMIC, &cpu[i], &bus[i]));
	assert_int_equal(tu_held()->jobs, 1);
	for (int i = 0; i < 3; i++)
		assert_ok(dmm_dma_free_coherent(nic, 16 * KiB, cpu[i], bus[i]));
	check_all(mem);
	assert_rc(dmm_dma_atomic_pool_destroy(mem), -DMM_EBUSY);
	st = pstats(mem, DMM_ATOMIC_POOL_DMA32);
	assert_int_equal(st.size, 64 * KiB);
	tu_hold_flush(NULL);
	check_all(mem);
	st = pstats(mem, DMM_ATOMIC_POOL_DMA32);
	assert_int_equal(st.refills_done, 1);
	assert_ok(dmm_dma_atomic_pool_destroy(mem));
	check_all(mem);

	/* a refill run synchronously meanwhile ends the pool's "wanted" flag,
	 * not the queued job */
	assert_ok(dmm_dma_atomic_pool_init(mem, &o));
	for (int i = 0; i < 3; i++)
		assert_ok(dmm_dma_alloc_coherent(nic, 16 * KiB, DMM_GFP_ATOMIC, &cpu[i], &bus[i]));
	assert_int_equal(tu_held()->jobs, 1);
	assert_int_equal(dmm_dma_atomic_pool_refill(mem), 1);
	for (int i = 0; i < 3; i++)
		assert_ok(dmm_dma_free_coherent(nic, 16 * KiB, cpu[i], bus[i]));
	check_all(mem);
	assert_rc(dmm_dma_atomic_pool_destroy(mem), -DMM_EBUSY);
	tu_hold_flush(NULL);
	assert_ok(dmm_dma_atomic_pool_destroy(mem));
	assert_ok(dmm_device_destroy(nic));
	dmm_page_drain_pcp(mem);
	check_all(mem);
	assert_int_equal(tu_zone_free_all(mem), free0);
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reach_and_uncached),
		cmocka_unit_test(test_refill_and_exhaustion),
		cmocka_unit_test(test_no_background_worker),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_chunk_refuses_pins),
		cmocka_unit_test(test_huge_options),
		cmocka_unit_test(test_option_rounding),
		cmocka_unit_test(test_free_wrapped_size),
		cmocka_unit_test(test_free_size_within_block),
		cmocka_unit_test(test_destroy_with_refill_queued),
		cmocka_unit_test(test_two_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

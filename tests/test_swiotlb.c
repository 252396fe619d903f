/* SPDX-License-Identifier: MIT */
/*
 * Bounce buffers against the hardware model: data arrives in every
 * direction through a bounce buffer (the device only ever sees the bounce
 * address), offsets within align_mask are kept, copies happen exactly when
 * the direction needs them, a full pool fails with its reason or defers,
 * transient pools come and go, the default pool grows in the background,
 * restricted pools are never left, and the small-object corruption does not
 * happen under the packed policy because the mapping bounces. Per-CPU
 * caches of freed runs: warm reuse, counts, alignment, drained when a pool
 * runs out (from any CPU), two threads, double unmaps refused.
 */
#include <pthread.h>
#include <sched.h>

#include "tu_dma.h"

#include "dma_sim.h"
#include "dma/dma_internal.h"

struct hwenv {
	struct dmm_hw *hw;
	struct dmm_mem *mem;
};

static void hwenv_create(struct hwenv *e, const char *profile, int policy)
{
	struct dmm_machine m;
	struct dmm_hw_opts o;

	tu_profile(profile, &m);
	if (policy >= 0)
		m.kmalloc_policy = (enum dmm_kmalloc_policy)policy;
	dmm_hw_opts_default(&o);
	o.nr_cpus = 2;
	o.log_level = DMM_LOG_ERR;
	assert_ok(dmm_hw_mem_create(&m, &o, &e->hw, &e->mem));
}

#define assert_all_checks(mem)                    \
	do {                                      \
		assert_checks(mem);               \
		assert_ok(dmm_swiotlb_check(mem)); \
	} while (0)

static void hwenv_destroy(struct hwenv *e)
{
	assert_all_checks(e->mem);
	assert_ok(dmm_hw_check(e->hw));
	dmm_hw_mem_destroy(e->hw, e->mem);
}

static void fill(uint8_t *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(seed * 29u + i * 13u);
}

static dmm_phys_t high_buffer(struct hwenv *e, unsigned order)
{
	const struct dmm_constraint above = { 4 * GiB, DMM_PHYS_MAX, 0, 0, 0, 0 };
	dmm_pfn_t p;
	assert_ok(dmm_page_alloc(e->mem, order, &above, 0, &p));
	return dmm_pfn_to_phys(p);
}

static void test_round_trips_through_bounce(void **state)
{
	(void)state;
	for (int coherent = 0; coherent <= 1; coherent++) {
		struct hwenv e;
		struct dmm_sim_dev sd;
		struct dmm_device_desc d = tu_desc("dma32", 32, coherent, DMM_DEVICE_CMA_NONE);
		struct dmm_swiotlb_opts o;
		struct dmm_swiotlb_stats st;
		static uint8_t want[8192], got[8192];
		dmm_phys_t pa;
		dmm_dma_addr_t bus;

		hwenv_create(&e, "pc", -1);
		dmm_swiotlb_opts_default(e.mem, &o);
		o.initial_bytes = 1 * MiB;
		o.align_mask = 0xfff; /* keep the offset within a page, as NVMe needs */
		assert_ok(dmm_swiotlb_init(e.mem, &o));
		assert_rc(dmm_swiotlb_init(e.mem, &o), -DMM_EEXIST);
		assert_ok(dmm_sim_device_create(e.mem, e.hw, &d, NULL, &sd));
		pa = high_buffer(&e, 1) + 100; /* above 4 GiB: out of reach */

		/* TO_DEVICE */
		fill(want, 5000, 1);
		assert_ok(dmm_hw_cpu_write(e.hw, pa, want, 5000));
		bus = dmm_dma_map_phys(sd.dev, pa, 5000, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(sd.dev, bus));
		assert_true(bus + 5000 <= 4 * GiB);
		assert_int_equal(bus & 0xfff, pa & 0xfff);
		assert_true(dmm_swiotlb_is_bounce(e.mem, bus));
		assert_ok(dmm_hw_dev_read(sd.hw, bus, got, 5000));
		assert_memory_equal(got, want, 5000);
		dmm_dma_unmap_phys(sd.dev, bus, 5000, DMM_DMA_TO_DEVICE);

		/* FROM_DEVICE: nothing copied in, everything copied back */
		dmm_swiotlb_get_stats(e.mem, &st);
		{
			uint64_t to0 = st.bounced_to_device;
			bus = dmm_dma_map_phys(sd.dev, pa, 5000, DMM_DMA_FROM_DEVICE);
			assert_ok(dmm_dma_mapping_error(sd.dev, bus));
			dmm_swiotlb_get_stats(e.mem, &st);
			assert_int_equal(st.bounced_to_device, to0);
		}
		fill(want, 5000, 2);
		assert_ok(dmm_hw_dev_write(sd.hw, bus, want, 5000));
		dmm_dma_unmap_phys(sd.dev, bus, 5000, DMM_DMA_FROM_DEVICE);
		assert_ok(dmm_hw_cpu_read(e.hw, pa, got, 5000));
		assert_memory_equal(got, want, 5000);

		/* BIDIRECTIONAL with syncs in the middle */
		bus = dmm_dma_map_phys(sd.dev, pa, 4096, DMM_DMA_BIDIRECTIONAL);
		assert_ok(dmm_dma_mapping_error(sd.dev, bus));
		fill(want, 4096, 3);
		assert_ok(dmm_hw_dev_write(sd.hw, bus, want, 4096));
		dmm_dma_sync_single_for_cpu(sd.dev, bus, 4096, DMM_DMA_BIDIRECTIONAL);
		assert_ok(dmm_hw_cpu_read(e.hw, pa, got, 4096));
		assert_memory_equal(got, want, 4096);
		fill(want, 4096, 4);
		assert_ok(dmm_hw_cpu_write(e.hw, pa, want, 4096));
		dmm_dma_sync_single_for_device(sd.dev, bus, 4096, DMM_DMA_BIDIRECTIONAL);
		assert_ok(dmm_hw_dev_read(sd.hw, bus, got, 4096));
		assert_memory_equal(got, want, 4096);
		dmm_dma_unmap_phys(sd.dev, bus, 4096, DMM_DMA_BIDIRECTIONAL);

		dmm_swiotlb_get_stats(e.mem, &st);
		assert_int_equal(st.used_slots, 0);
		assert_true(st.high_water_slots >= 3);
		assert_int_equal(st.bounced_to_device, 5000 + 4096 + 4096);
		assert_int_equal(st.bounced_from_device, 5000 + 4096 + 4096);
		{
			struct dmm_dma_stats ds;
			dmm_device_get_stats(sd.dev, &ds);
			assert_int_equal(ds.bounced_maps, 3);
		}
		assert_ok(dmm_page_free(e.mem, dmm_phys_to_pfn(pa), 1));
		assert_ok(dmm_sim_device_destroy(&sd));
		hwenv_destroy(&e);
	}
}

static int deferred_calls;
static dmm_dma_addr_t deferred_bus;

static void deferred_cb(void *arg, dmm_dma_addr_t dma, int err)
{
	(void)arg;
	assert_int_equal(err, 0);
	deferred_bus = dma;
	deferred_calls++;
}

static void test_full_deferred_transient_growth(void **state)
{
	struct hwenv e;
	struct dmm_sim_dev sd;
	struct dmm_device_desc d = tu_desc("dma32", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_swiotlb_opts o;
	struct dmm_swiotlb_stats st;
	dmm_phys_t pa;
	dmm_dma_addr_t bus[40];
	(void)state;

	hwenv_create(&e, "pc", -1);
	dmm_swiotlb_opts_default(e.mem, &o);
	o.initial_bytes = 64 * KiB; /* 32 slots */
	o.no_transient = 1;
	o.grow_threshold_pct = 100; /* no growth: show a full pool */
	assert_ok(dmm_swiotlb_init(e.mem, &o));
	assert_ok(dmm_sim_device_create(e.mem, e.hw, &d, NULL, &sd));
	pa = high_buffer(&e, 4);

	for (int i = 0; i < 32; i++) {
		bus[i] = dmm_dma_map_phys(sd.dev, pa + (uint64_t)i * 2048, 2048, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(sd.dev, bus[i]));
		assert_ok(dmm_swiotlb_check(e.mem));
	}
	bus[32] = dmm_dma_map_phys(sd.dev, pa + 32 * 2048, 2048, DMM_DMA_TO_DEVICE);
	assert_rc(dmm_dma_mapping_error(sd.dev, bus[32]), -DMM_ENOSPC); /* bounce buffer full */
	assert_int_equal(dmm_swiotlb_device_failures(sd.dev), 1);
	/* a caller that can wait: completed by the next unmap */
	deferred_calls = 0;
	assert_ok(dmm_dma_map_phys_deferred(sd.dev, pa + 32 * 2048, 2048, DMM_DMA_TO_DEVICE, deferred_cb, NULL));
	assert_int_equal(deferred_calls, 0);
	dmm_dma_unmap_phys(sd.dev, bus[0], 2048, DMM_DMA_TO_DEVICE);
	assert_int_equal(deferred_calls, 1);
	assert_true(dmm_swiotlb_is_bounce(e.mem, deferred_bus));
	dmm_dma_unmap_phys(sd.dev, deferred_bus, 2048, DMM_DMA_TO_DEVICE);
	for (int i = 1; i < 32; i++)
		dmm_dma_unmap_phys(sd.dev, bus[i], 2048, DMM_DMA_TO_DEVICE);
	dmm_swiotlb_get_stats(e.mem, &st);
	assert_int_equal(st.used_slots, 0);
	assert_int_equal(st.deferred_queued, 1);
	assert_int_equal(st.deferred_done, 1);
	assert_int_equal(st.fail_full, 1); /* the failed map (the deferred request waited: no failure) */
	assert_ok(dmm_page_free(e.mem, dmm_phys_to_pfn(pa), 4));
	assert_ok(dmm_sim_device_destroy(&sd));
	hwenv_destroy(&e);

	/* transient pools on the spot, released when idle; background growth */
	hwenv_create(&e, "pc", -1);
	dmm_swiotlb_opts_default(e.mem, &o);
	o.initial_bytes = 64 * KiB;
	o.transient_idle_ns = 1;
	o.grow_threshold_pct = 50;
	o.grow_bytes = 256 * KiB;
	assert_ok(dmm_swiotlb_init(e.mem, &o));
	assert_ok(dmm_sim_device_create(e.mem, e.hw, &d, NULL, &sd));
	pa = high_buffer(&e, 4);
	for (int i = 0; i < 40; i++) {
		bus[i] = dmm_dma_map_phys(sd.dev, pa + (uint64_t)i * 1024, 2048, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(sd.dev, bus[i]));
	}
	dmm_mem_platform(e.mem)->defer_flush(dmm_mem_platform(e.mem)->ctx);
	dmm_swiotlb_get_stats(e.mem, &st);
	assert_true(st.grow_done >= 1 || st.transient_created >= 1);
	assert_true(st.pools >= 2);
	assert_ok(dmm_swiotlb_check(e.mem));
	for (int i = 0; i < 40; i++)
		dmm_dma_unmap_phys(sd.dev, bus[i], 2048, DMM_DMA_TO_DEVICE);
	dmm_swiotlb_trim(e.mem);
	dmm_swiotlb_get_stats(e.mem, &st);
	assert_int_equal(st.transient_pools, 0);
	assert_int_equal(st.transient_released, st.transient_created);
	/* the counters of released pools stay in the totals */
	assert_int_equal(st.maps, 40);
	assert_int_equal(st.unmaps, 40);
	assert_int_equal(st.bounced_to_device, 40 * 2048);
	assert_int_equal(st.bounced_from_device, 0);
	assert_int_equal(dmm_swiotlb_device_failures(sd.dev), 0);
	assert_ok(dmm_page_free(e.mem, dmm_phys_to_pfn(pa), 4));
	assert_ok(dmm_sim_device_destroy(&sd));
	hwenv_destroy(&e);
}

static void test_restricted_and_untrusted(void **state)
{
	struct hwenv e;
	struct dmm_sim_dev r, u;
	struct dmm_device_desc rd = tu_desc("restricted", 64, 1, DMM_DEVICE_CMA_NONE), ud = tu_desc("thunderbolt", 64, 1, DMM_DEVICE_CMA_NONE);
	dmm_pfn_t p;
	dmm_dma_addr_t bus;
	(void)state;

	hwenv_create(&e, "pc", -1);
	assert_rc(dmm_swiotlb_restricted_pool(NULL, 64 * KiB), -DMM_EINVAL);
	assert_ok(dmm_swiotlb_init(e.mem, NULL));
	assert_ok(dmm_sim_device_create(e.mem, e.hw, &rd, NULL, &r));
	ud.untrusted = 1;
	assert_ok(dmm_sim_device_create(e.mem, e.hw, &ud, NULL, &u));
	assert_ok(dmm_swiotlb_restricted_pool(r.dev, 128 * KiB));
	assert_rc(dmm_swiotlb_restricted_pool(r.dev, 128 * KiB), -DMM_EINVAL); /* one per device */
	assert_ok(dmm_page_alloc(e.mem, 0, NULL, 0, &p));
	/* even a reachable buffer goes through the device's own pool */
	bus = dmm_dma_map_page(r.dev, p, 0, 4096, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(r.dev, bus));
	assert_true(bus != dmm_pfn_to_phys(p));
	assert_true(dmm_swiotlb_is_bounce(e.mem, bus));
	dmm_dma_unmap_page(r.dev, bus, 4096, DMM_DMA_TO_DEVICE);
	/* an untrusted device: a partial page bounces, a whole page does not */
	bus = dmm_dma_map_page(u.dev, p, 64, 100, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(u.dev, bus));
	assert_true(dmm_swiotlb_is_bounce(e.mem, bus));
	dmm_dma_unmap_page(u.dev, bus, 100, DMM_DMA_TO_DEVICE);
	bus = dmm_dma_map_page(u.dev, p, 0, 4096, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(u.dev, bus));
	assert_int_equal(bus, dmm_pfn_to_phys(p));
	dmm_dma_unmap_page(u.dev, bus, 4096, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_page_free(e.mem, p, 0));
	assert_ok(dmm_sim_device_destroy(&u));
	assert_ok(dmm_sim_device_destroy(&r));
	hwenv_destroy(&e);
}

/* The small-object corruption of test_dma_hw, with packed objects and
 * bounce buffers: the mapping bounces, so the neighbour survives. */
static void test_packed_objects_bounce(void **state)
{
	struct hwenv e;
	struct dmm_sim_dev sd;
	struct dmm_device_desc d = tu_desc("uart", 64, 0, DMM_DEVICE_CMA_NONE);
	uint8_t v[32];
	void *a, *b;
	dmm_phys_t pa_a, pa_b;
	dmm_dma_addr_t bus;
	(void)state;

	hwenv_create(&e, "phone", DMM_KMALLOC_PACKED);
	assert_ok(dmm_swiotlb_init(e.mem, NULL));
	{
		struct dmm_swiotlb_stats st;
		dmm_swiotlb_get_stats(e.mem, &st);
		/* sized for small unaligned objects: ~1 MiB per GiB, not 64 MiB */
		assert_true(st.total_slots * 2048 <= 8 * MiB);
	}
	assert_ok(dmm_sim_device_create(e.mem, e.hw, &d, NULL, &sd));
	assert_ok(dmm_kmalloc(e.mem, 32, 0, &a));
	assert_ok(dmm_kmalloc(e.mem, 32, 0, &b));
	assert_ok(dmm_hw_virt_to_phys(e.hw, a, &pa_a));
	assert_ok(dmm_hw_virt_to_phys(e.hw, b, &pa_b));
	assert_true(dmm_kmalloc_needs_bounce(e.mem, a, 32));
	memset(v, 0xb0, 32);
	assert_ok(dmm_hw_cpu_write(e.hw, pa_b, v, 32));
	bus = dmm_dma_map_phys(sd.dev, pa_a, 32, DMM_DMA_FROM_DEVICE);
	assert_ok(dmm_dma_mapping_error(sd.dev, bus));
	assert_true(dmm_swiotlb_is_bounce(e.mem, bus));
	memset(v, 0xb1, 32);
	assert_ok(dmm_hw_cpu_write(e.hw, pa_b, v, 32)); /* the neighbour is updated... */
	memset(v, 0xa1, 32);
	assert_ok(dmm_hw_dev_write(sd.hw, bus, v, 32)); /* ...while the device receives */
	dmm_dma_unmap_phys(sd.dev, bus, 32, DMM_DMA_FROM_DEVICE);
	assert_ok(dmm_hw_cpu_read(e.hw, pa_a, v, 32));
	assert_int_equal(v[0], 0xa1);
	assert_ok(dmm_hw_cpu_read(e.hw, pa_b, v, 32));
	assert_int_equal(v[0], 0xb1); /* the neighbour's update survives */
	assert_ok(dmm_kfree(e.mem, a));
	assert_ok(dmm_kfree(e.mem, b));
	assert_ok(dmm_sim_device_destroy(&sd));
	hwenv_destroy(&e);
}

struct worker {
	struct hwenv *e;
	struct dmm_sim_dev *sd;
	dmm_phys_t pa;
	int failed;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	uint8_t want[1500], got[1500];

	for (int i = 0; i < 2000; i++) {
		size_t len = (size_t)(100 + (i * 37) % 1400);
		dmm_dma_addr_t bus;
		fill(want, len, (unsigned)i);
		dmm_hw_cpu_write(w->e->hw, w->pa, want, len);
		bus = dmm_dma_map_phys(w->sd->dev, w->pa, len, DMM_DMA_BIDIRECTIONAL);
		if (dmm_dma_mapping_error(w->sd->dev, bus)) {
			w->failed = 1;
			continue;
		}
		if (dmm_hw_dev_read(w->sd->hw, bus, got, len) || memcmp(got, want, len))
			w->failed = 2;
		dmm_dma_unmap_phys(w->sd->dev, bus, len, DMM_DMA_BIDIRECTIONAL);
	}
	return NULL;
}

/* Two threads bouncing through @sd at once; each checks every round trip. */
static void run_two_workers(struct hwenv *e, struct dmm_sim_dev *sd)
{
	struct worker w[2];
	pthread_t t[2];

	for (int i = 0; i < 2; i++) {
		w[i].e = e;
		w[i].sd = sd;
		w[i].pa = high_buffer(e, 0);
		w[i].failed = 0;
		assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < 2; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(w[i].failed, 0);
		assert_ok(dmm_page_free(e->mem, dmm_phys_to_pfn(w[i].pa), 0));
	}
}

static void test_two_threads(void **state)
{
	struct hwenv e;
	struct dmm_sim_dev sd;
	struct dmm_device_desc d = tu_desc("dma32", 32, 1, DMM_DEVICE_CMA_NONE);
	(void)state;

	hwenv_create(&e, "pc", -1);
	assert_ok(dmm_swiotlb_init(e.mem, NULL));
	assert_ok(dmm_sim_device_create(e.mem, e.hw, &d, NULL, &sd));
	run_two_workers(&e, &sd);
	assert_ok(dmm_sim_device_destroy(&sd));
	hwenv_destroy(&e);
}

/* Scatterlists bounce piece by piece; data in both directions. */
static void test_sg_bounce(void **state)
{
	struct hwenv e;
	struct dmm_sim_dev sd;
	struct dmm_device_desc d = tu_desc("dma32", 32, 0, DMM_DEVICE_CMA_NONE);
	struct dmm_sg sg[3];
	static uint8_t want[3][3000], got[3000];
	dmm_phys_t hi, lo;
	int n;
	(void)state;

	hwenv_create(&e, "pc", -1);
	assert_ok(dmm_swiotlb_init(e.mem, NULL));
	assert_ok(dmm_sim_device_create(e.mem, e.hw, &d, NULL, &sd));
	hi = high_buffer(&e, 2);
	{
		dmm_pfn_t p;
		assert_ok(dmm_page_alloc(e.mem, 1, &(struct dmm_constraint){ 0, 4 * GiB, 0, 0, 0, 0 }, 0, &p));
		lo = dmm_pfn_to_phys(p);
	}
	dmm_sg_init(sg, 3);
	dmm_sg_set_phys(&sg[0], hi + 10, 3000);  /* out of reach: bounces */
	dmm_sg_set_phys(&sg[1], lo, 3000);       /* reachable: mapped directly */
	dmm_sg_set_phys(&sg[2], hi + 8192, 3000);
	for (int i = 0; i < 3; i++) {
		fill(want[i], 3000, 10u + (unsigned)i);
		assert_ok(dmm_hw_cpu_write(e.hw, sg[i].phys, want[i], 3000));
	}
	n = dmm_dma_map_sg(sd.dev, sg, 3, DMM_DMA_BIDIRECTIONAL);
	assert_int_equal(n, 3);
	assert_true(dmm_swiotlb_is_bounce(e.mem, sg[0].dma_address));
	assert_int_equal(sg[1].dma_address, lo);
	assert_true(dmm_swiotlb_is_bounce(e.mem, sg[2].dma_address));
	for (int i = 0; i < 3; i++) {
		assert_ok(dmm_hw_dev_read(sd.hw, sg[i].dma_address, got, 3000));
		assert_memory_equal(got, want[i], 3000);
		fill(want[i], 3000, 20u + (unsigned)i);
		assert_ok(dmm_hw_dev_write(sd.hw, sg[i].dma_address, want[i], 3000));
	}
	dmm_dma_unmap_sg(sd.dev, sg, 3, DMM_DMA_BIDIRECTIONAL);
	for (int i = 0; i < 3; i++) {
		assert_ok(dmm_hw_cpu_read(e.hw, sg[i].phys, got, 3000));
		assert_memory_equal(got, want[i], 3000);
	}
	{
		struct dmm_swiotlb_stats st;
		dmm_swiotlb_get_stats(e.mem, &st);
		assert_int_equal(st.used_slots, 0);
	}
	assert_ok(dmm_page_free(e.mem, dmm_phys_to_pfn(hi), 2));
	assert_ok(dmm_page_free(e.mem, dmm_phys_to_pfn(lo), 1));
	assert_ok(dmm_sim_device_destroy(&sd));
	hwenv_destroy(&e);
}

/* An untrusted device reading past its bounced buffer sees zeros, never
 * an earlier mapping's bytes; forced bouncing takes every device. */
static void test_untrusted_sees_only_its_bytes_and_forced(void **state)
{
	struct hwenv e;
	struct dmm_sim_dev u, t;
	struct dmm_device_desc ud = tu_desc("thunderbolt", 64, 1, DMM_DEVICE_CMA_NONE), td = tu_desc("trusted", 64, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_swiotlb_opts o;
	uint8_t secret[2048], got[2048];
	dmm_pfn_t p;
	dmm_dma_addr_t bus;
	(void)state;

	hwenv_create(&e, "pc", -1);
	dmm_swiotlb_opts_default(e.mem, &o);
	o.initial_bytes = 64 * KiB;
	o.nr_areas = 1;
	assert_ok(dmm_swiotlb_init(e.mem, &o));
	ud.untrusted = 1;
	assert_ok(dmm_sim_device_create(e.mem, e.hw, &ud, NULL, &u));
	assert_ok(dmm_sim_device_create(e.mem, e.hw, &td, NULL, &t));
	assert_ok(dmm_page_alloc(e.mem, 0, NULL, 0, &p));
	/* a secret passes through a slot for a trusted device (forced below) */
	memset(secret, 0x5e, sizeof(secret));
	assert_ok(dmm_hw_cpu_write(e.hw, dmm_pfn_to_phys(p), secret, sizeof(secret)));
	bus = dmm_dma_map_page(u.dev, p, 0, 2048, DMM_DMA_TO_DEVICE); /* partial page: bounces */
	assert_ok(dmm_dma_mapping_error(u.dev, bus));
	dmm_dma_unmap_page(u.dev, bus, 2048, DMM_DMA_TO_DEVICE);
	/* now a 16-byte buffer for the untrusted device lands in the same slots */
	memset(secret, 0x11, 16);
	assert_ok(dmm_hw_cpu_write(e.hw, dmm_pfn_to_phys(p) + 2048, secret, 16));
	bus = dmm_dma_map_page(u.dev, p, 2048, 16, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(u.dev, bus));
	assert_true(dmm_swiotlb_is_bounce(e.mem, bus));
	assert_ok(dmm_hw_dev_read(u.hw, bus, got, 2048 - (bus & 2047)));
	assert_int_equal(got[0], 0x11);
	for (size_t i = 16; i < 2048 - (bus & 2047); i++)
		assert_int_equal(got[i], 0); /* beyond its buffer: zeros */
	dmm_dma_unmap_page(u.dev, bus, 16, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_page_free(e.mem, p, 0));
	assert_ok(dmm_sim_device_destroy(&u));
	assert_ok(dmm_sim_device_destroy(&t));
	hwenv_destroy(&e);

	/* forced bouncing: every device, every buffer */
	hwenv_create(&e, "pc", -1);
	dmm_swiotlb_opts_default(e.mem, &o);
	o.force = 1;
	assert_ok(dmm_swiotlb_init(e.mem, &o));
	assert_ok(dmm_sim_device_create(e.mem, e.hw, &td, NULL, &t));
	assert_ok(dmm_page_alloc(e.mem, 0, NULL, 0, &p));
	memset(secret, 0x77, sizeof(secret));
	assert_ok(dmm_hw_cpu_write(e.hw, dmm_pfn_to_phys(p), secret, sizeof(secret)));
	bus = dmm_dma_map_page(t.dev, p, 0, 4096, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(t.dev, bus));
	assert_true(dmm_swiotlb_is_bounce(e.mem, bus));
	assert_ok(dmm_hw_dev_read(t.hw, bus, got, 2048));
	assert_memory_equal(got, secret, 2048);
	dmm_dma_unmap_page(t.dev, bus, 4096, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_page_free(e.mem, p, 0));
	assert_ok(dmm_sim_device_destroy(&t));
	hwenv_destroy(&e);
}

/* Policy (1): aligned objects never share a line: no corruption, no report.
 * Policy (2): a caller that wrongly packs gets a debug report. Bad unmaps
 * are reported. */
static void test_policies_and_debug(void **state)
{
	(void)state;
	for (int pol = DMM_KMALLOC_ALIGNED; pol <= DMM_KMALLOC_PACKED_ON_REQUEST; pol++) {
		struct hwenv e;
		struct dmm_sim_dev sd;
		struct dmm_device_desc d = tu_desc("uart", 64, 0, DMM_DEVICE_CMA_NONE);
		uint64_t c[DMM_NR_DBG_RULES];
		uint8_t v[32];
		void *a, *b;
		dmm_phys_t pa_a, pa_b;
		dmm_dma_addr_t bus;

		hwenv_create(&e, "phone", pol);
		assert_ok(dmm_swiotlb_init(e.mem, NULL));
		assert_ok(dmm_dma_debug_enable(e.mem, 1));
		assert_ok(dmm_sim_device_create(e.mem, e.hw, &d, NULL, &sd));
		assert_ok(dmm_kmalloc(e.mem, 32, DMM_GFP_PACKED, &a)); /* policy 2: wrongly packed */
		assert_ok(dmm_kmalloc(e.mem, 32, DMM_GFP_PACKED, &b));
		assert_ok(dmm_hw_virt_to_phys(e.hw, a, &pa_a));
		assert_ok(dmm_hw_virt_to_phys(e.hw, b, &pa_b));
		memset(v, 0xb0, 32);
		assert_ok(dmm_hw_cpu_write(e.hw, pa_b, v, 32));
		bus = dmm_dma_map_phys(sd.dev, pa_a, 32, DMM_DMA_FROM_DEVICE);
		assert_ok(dmm_dma_mapping_error(sd.dev, bus));
		memset(v, 0xb1, 32);
		assert_ok(dmm_hw_cpu_write(e.hw, pa_b, v, 32));
		memset(v, 0xa1, 32);
		assert_ok(dmm_hw_dev_write(sd.hw, bus, v, 32));
		dmm_dma_unmap_phys(sd.dev, bus, 32, DMM_DMA_FROM_DEVICE);
		assert_ok(dmm_hw_cpu_read(e.hw, pa_b, v, 32));
		dmm_dma_debug_counts(e.mem, c);
		if (pol == DMM_KMALLOC_ALIGNED) {
			assert_int_equal(v[0], 0xb1); /* separate lines: nothing lost */
			assert_int_equal(c[DMM_DBG_CACHELINE_SHARED], 0);
		} else {
			assert_int_equal(v[0], 0xb0); /* packed by request, not bounced: lost... */
			assert_int_equal(c[DMM_DBG_CACHELINE_SHARED], 1); /* ...and reported */
		}
		/* unmap of an address from no pool and never mapped: reported */
		dmm_dma_unmap_phys(sd.dev, 0x12340000, 64, DMM_DMA_TO_DEVICE);
		dmm_dma_debug_counts(e.mem, c);
		assert_int_equal(c[DMM_DBG_UNMAP_NOT_MAPPED], 1);
		assert_ok(dmm_kfree(e.mem, a));
		assert_ok(dmm_kfree(e.mem, b));
		assert_ok(dmm_sim_device_destroy(&sd));
		hwenv_destroy(&e);
	}
}

/* A burst from 2 threads while the background worker keeps up: no failure. */
static void test_growth_under_burst(void **state)
{
	struct hwenv e;
	struct dmm_sim_dev sd;
	struct dmm_device_desc d = tu_desc("dma32", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_swiotlb_opts o;
	struct dmm_swiotlb_stats st;
	(void)state;

	hwenv_create(&e, "pc", -1);
	dmm_swiotlb_opts_default(e.mem, &o);
	o.initial_bytes = 256 * KiB;
	o.grow_threshold_pct = 25;
	o.grow_bytes = 1 * MiB;
	o.no_transient = 1; /* only the worker may add memory */
	assert_ok(dmm_swiotlb_init(e.mem, &o));
	assert_ok(dmm_sim_device_create(e.mem, e.hw, &d, NULL, &sd));
	run_two_workers(&e, &sd);
	dmm_swiotlb_get_stats(e.mem, &st);
	assert_int_equal(st.fail_full, 0);
	assert_ok(dmm_sim_device_destroy(&sd));
	hwenv_destroy(&e);
}

/* ---- per-CPU caches of freed runs ------------------------------------------------ */

/* A pc machine with bounce pools set up by @o (initial_bytes etc.) and a
 * 32-bit device: every buffer above 4 GiB bounces. */
static void cache_env(struct hwenv *e, struct dmm_sim_dev *sd, int coherent, const struct dmm_swiotlb_opts *o)
{
	struct dmm_device_desc d = tu_desc("dma32", 32, coherent, DMM_DEVICE_CMA_NONE);

	hwenv_create(e, "pc", -1);
	assert_ok(dmm_swiotlb_init(e->mem, o));
	assert_ok(dmm_sim_device_create(e->mem, e->hw, &d, NULL, sd));
}

static void cache_opts(struct dmm_swiotlb_opts *o, uint64_t bytes)
{
	dmm_swiotlb_opts_default(NULL, o);
	o->initial_bytes = bytes;
	o->grow_threshold_pct = 100; /* no background growth: the pool stays as made */
	o->no_transient = 1;
}

static void assert_tlb_counts(struct dmm_mem *mem, uint64_t used, uint64_t cached)
{
	struct dmm_swiotlb_stats st;

	assert_ok(dmm_swiotlb_check(mem));
	dmm_swiotlb_get_stats(mem, &st);
	if (st.used_slots != used || st.cached_slots != cached) {
		print_error("used_slots %llu cached_slots %llu, want %llu and %llu\n",
			    (unsigned long long)st.used_slots, (unsigned long long)st.cached_slots,
			    (unsigned long long)used, (unsigned long long)cached);
		fail();
	}
	assert_true(st.high_water_slots >= used + cached);
	assert_true(st.used_slots + st.cached_slots <= st.total_slots);
}

/* Map @len bytes of @pa for @dir through @sd and check the data crosses
 * the bounce buffer in the direction's sense; returns the bus address
 * (still mapped: the caller unmaps with unmap_checked). */
static dmm_dma_addr_t map_checked(struct hwenv *e, struct dmm_sim_dev *sd, dmm_phys_t pa, size_t len,
				  enum dmm_dma_dir dir, unsigned seed)
{
	static uint8_t want[8192], got[8192];
	dmm_dma_addr_t bus;

	assert_true(len <= sizeof(want));
	fill(want, len, seed);
	assert_ok(dmm_hw_cpu_write(e->hw, pa, want, len));
	bus = dmm_dma_map_phys(sd->dev, pa, len, dir);
	assert_ok(dmm_dma_mapping_error(sd->dev, bus));
	assert_true(dmm_swiotlb_is_bounce(e->mem, bus));
	assert_true(bus + len <= 4 * GiB);
	if (dir != DMM_DMA_FROM_DEVICE) {
		/* copied in at map */
		assert_ok(dmm_hw_dev_read(sd->hw, bus, got, len));
		assert_memory_equal(got, want, len);
	}
	return bus;
}

static void unmap_checked(struct hwenv *e, struct dmm_sim_dev *sd, dmm_phys_t pa, dmm_dma_addr_t bus, size_t len,
			  enum dmm_dma_dir dir, unsigned seed)
{
	static uint8_t want[8192], got[8192];

	assert_true(len <= sizeof(want));
	if (dir != DMM_DMA_TO_DEVICE) {
		fill(want, len, seed + 1000);
		assert_ok(dmm_hw_dev_write(sd->hw, bus, want, len));
	} else {
		fill(want, len, seed); /* what map_checked wrote: nothing copied back */
	}
	dmm_dma_unmap_phys(sd->dev, bus, len, dir);
	assert_ok(dmm_hw_cpu_read(e->hw, pa, got, len));
	assert_memory_equal(got, want, len);
}

/*
 * One thread maps and unmaps 1-slot and 2-slot buffers: the unmap parks the
 * run in the CPU's cache (cached, not used), the next map of that length
 * takes the same slots back (same bounce address), the data is right in
 * every direction and the byte counters count the cached path. A run too
 * long for the caches goes back to its area, and the area's next mapping
 * reuses it (warm).
 */
static void test_run_cache_warm_reuse(void **state)
{
	(void)state;
	for (int coherent = 0; coherent <= 1; coherent++) {
		static const enum dmm_dma_dir dirs[3] = { DMM_DMA_TO_DEVICE, DMM_DMA_FROM_DEVICE, DMM_DMA_BIDIRECTIONAL };
		struct hwenv e;
		struct dmm_sim_dev sd;
		struct dmm_swiotlb_opts o;
		struct dmm_swiotlb_stats st;
		uint64_t to_dev = 0, from_dev = 0, maps = 0;
		dmm_dma_addr_t bus0, busb, x, y, z;
		dmm_phys_t pa;

		cache_opts(&o, 1 * MiB);
		cache_env(&e, &sd, coherent, &o);
		pa = high_buffer(&e, 2); /* 16 KiB above 4 GiB */
		assert_tlb_counts(e.mem, 0, 0);

		/* the first map comes from the area, its unmap parks the run */
		bus0 = map_checked(&e, &sd, pa + 100, 64, DMM_DMA_TO_DEVICE, 1);
		to_dev += 64;
		maps++;
		assert_tlb_counts(e.mem, 1, 0);
		unmap_checked(&e, &sd, pa + 100, bus0, 64, DMM_DMA_TO_DEVICE, 1);
		assert_tlb_counts(e.mem, 0, 1);
		dmm_swiotlb_get_stats(e.mem, &st);
		assert_int_equal(st.high_water_slots, 1);

		/* 1-slot mappings of every direction and size: always the same slot */
		for (unsigned i = 0; i < 24; i++) {
			enum dmm_dma_dir dir = dirs[i % 3];
			size_t len = (size_t)(1 + (i * 389u) % 2048);
			dmm_phys_t at = pa + 100 + i * 8;
			dmm_dma_addr_t b;

			dmm_swiotlb_get_stats(e.mem, &st);
			{
				uint64_t to0 = st.bounced_to_device;
				b = map_checked(&e, &sd, at, len, dir, 10 + i);
				dmm_swiotlb_get_stats(e.mem, &st);
				/* copied in exactly when the direction says */
				assert_int_equal(st.bounced_to_device - to0, dir == DMM_DMA_FROM_DEVICE ? 0 : len);
			}
			assert_int_equal(b, bus0); /* warm: the run this CPU freed last */
			assert_tlb_counts(e.mem, 1, 0);
			unmap_checked(&e, &sd, at, b, len, dir, 10 + i);
			assert_tlb_counts(e.mem, 0, 1);
			maps++;
			if (dir != DMM_DMA_FROM_DEVICE)
				to_dev += len;
			if (dir != DMM_DMA_TO_DEVICE)
				from_dev += len;
		}
		dmm_swiotlb_get_stats(e.mem, &st);
		assert_int_equal(st.high_water_slots, 1); /* a cached run is counted once */
		assert_int_equal(st.maps, maps);
		assert_int_equal(st.unmaps, maps);
		assert_int_equal(st.bounced_to_device, to_dev);
		assert_int_equal(st.bounced_from_device, from_dev);

		/* 2-slot runs have a cache of their own */
		busb = map_checked(&e, &sd, pa, 4096, DMM_DMA_TO_DEVICE, 50);
		assert_int_not_equal(busb, bus0);
		assert_int_equal(busb & 2047, 0);
		assert_tlb_counts(e.mem, 2, 1);
		unmap_checked(&e, &sd, pa, busb, 4096, DMM_DMA_TO_DEVICE, 50);
		assert_tlb_counts(e.mem, 0, 3);
		dmm_swiotlb_get_stats(e.mem, &st);
		assert_int_equal(st.high_water_slots, 3);
		assert_int_equal(map_checked(&e, &sd, pa, 3000, DMM_DMA_FROM_DEVICE, 51), busb);
		assert_tlb_counts(e.mem, 2, 1);
		unmap_checked(&e, &sd, pa, busb, 3000, DMM_DMA_FROM_DEVICE, 51);
		assert_int_equal(map_checked(&e, &sd, pa + 8, 40, DMM_DMA_BIDIRECTIONAL, 52), bus0);
		assert_tlb_counts(e.mem, 1, 2);
		unmap_checked(&e, &sd, pa + 8, bus0, 40, DMM_DMA_BIDIRECTIONAL, 52);
		assert_tlb_counts(e.mem, 0, 3);
		/* several at once: each its own run, LIFO back from the cache */
		{
			dmm_dma_addr_t b[5];
			for (unsigned i = 0; i < 5; i++) {
				b[i] = map_checked(&e, &sd, pa + i * 2048, 2048, DMM_DMA_TO_DEVICE, 60 + i);
				for (unsigned k = 0; k < i; k++)
					assert_int_not_equal(b[i], b[k]);
			}
			assert_int_equal(b[0], bus0);
			assert_tlb_counts(e.mem, 5, 2);
			for (unsigned i = 0; i < 5; i++)
				unmap_checked(&e, &sd, pa + i * 2048, b[i], 2048, DMM_DMA_TO_DEVICE, 60 + i);
			assert_tlb_counts(e.mem, 0, 7);
			dmm_swiotlb_get_stats(e.mem, &st);
			assert_int_equal(st.high_water_slots, 7);
			for (unsigned i = 5; i-- > 0;) /* the last freed comes first */
				assert_int_equal(map_checked(&e, &sd, pa + i * 2048, 2048, DMM_DMA_TO_DEVICE, 70 + i), b[i]);
			dmm_swiotlb_get_stats(e.mem, &st);
			assert_int_equal(st.high_water_slots, 7); /* taken from the cache: not reserved again */
			for (unsigned i = 5; i-- > 0;)
				unmap_checked(&e, &sd, pa + i * 2048, b[i], 2048, DMM_DMA_TO_DEVICE, 70 + i);
			assert_tlb_counts(e.mem, 0, 7);
		}

		/* 3 slots are not cached: back to the area, whose next mapping reuses them */
		x = map_checked(&e, &sd, pa, 5000, DMM_DMA_TO_DEVICE, 80);
		y = map_checked(&e, &sd, pa + 8192, 5000, DMM_DMA_TO_DEVICE, 81);
		assert_int_not_equal(x, y);
		assert_tlb_counts(e.mem, 6, 7);
		unmap_checked(&e, &sd, pa, x, 5000, DMM_DMA_TO_DEVICE, 80);
		assert_tlb_counts(e.mem, 3, 7);
		z = map_checked(&e, &sd, pa, 5000, DMM_DMA_BIDIRECTIONAL, 82);
		assert_int_equal(z, x); /* the area's hint moved back to the freed run */
		unmap_checked(&e, &sd, pa, z, 5000, DMM_DMA_BIDIRECTIONAL, 82);
		unmap_checked(&e, &sd, pa + 8192, y, 5000, DMM_DMA_TO_DEVICE, 81);
		assert_tlb_counts(e.mem, 0, 7);

		assert_ok(dmm_page_free(e.mem, dmm_phys_to_pfn(pa), 2));
		assert_ok(dmm_sim_device_destroy(&sd));
		hwenv_destroy(&e);
	}
}

/* A cached run keeps the original's offset within align_mask: a run whose
 * address disagrees with the new buffer on those bits is not taken. */
static void test_run_cache_keeps_alignment(void **state)
{
	struct hwenv e;
	struct dmm_sim_dev sd;
	struct dmm_swiotlb_opts o;
	dmm_dma_addr_t a, b, c;
	dmm_phys_t pa;
	(void)state;

	cache_opts(&o, 1 * MiB);
	o.align_mask = 0xfff; /* the offset within a 4 KiB page survives */
	cache_env(&e, &sd, 1, &o);
	pa = high_buffer(&e, 1);
	a = map_checked(&e, &sd, pa + 16, 64, DMM_DMA_TO_DEVICE, 1);
	assert_int_equal(a & 0xfff, 16);
	unmap_checked(&e, &sd, pa + 16, a, 64, DMM_DMA_TO_DEVICE, 1);
	assert_tlb_counts(e.mem, 0, 1);
	/* bit 11 differs: the cached (even) slot would lose the offset */
	b = map_checked(&e, &sd, pa + 2048 + 8, 64, DMM_DMA_FROM_DEVICE, 2);
	assert_int_equal(b & 0xfff, 2048 + 8);
	assert_tlb_counts(e.mem, 1, 1);
	unmap_checked(&e, &sd, pa + 2048 + 8, b, 64, DMM_DMA_FROM_DEVICE, 2);
	assert_tlb_counts(e.mem, 0, 2);
	/* the newest cached run is odd: an even buffer still gets an even slot */
	c = map_checked(&e, &sd, pa + 24, 100, DMM_DMA_BIDIRECTIONAL, 3);
	assert_int_equal(c & 0xfff, 24);
	assert_true(c != a + 8); /* a's run is parked, not in the area */
	assert_tlb_counts(e.mem, 1, 2);
	/* an odd buffer gets the cached odd run back */
	assert_int_equal(map_checked(&e, &sd, pa + 2048 + 8, 64, DMM_DMA_TO_DEVICE, 4), b);
	assert_tlb_counts(e.mem, 2, 1);
	unmap_checked(&e, &sd, pa + 2048 + 8, b, 64, DMM_DMA_TO_DEVICE, 4);
	unmap_checked(&e, &sd, pa + 24, c, 100, DMM_DMA_BIDIRECTIONAL, 3);
	assert_tlb_counts(e.mem, 0, 3);
	/* the newest is even now: an even buffer gets it back, offset kept */
	assert_int_equal(map_checked(&e, &sd, pa + 40, 64, DMM_DMA_FROM_DEVICE, 5), c + 16);
	unmap_checked(&e, &sd, pa + 40, c + 16, 64, DMM_DMA_FROM_DEVICE, 5);
	assert_tlb_counts(e.mem, 0, 3);
	assert_ok(dmm_swiotlb_check(e.mem));
	assert_ok(dmm_page_free(e.mem, dmm_phys_to_pfn(pa), 1));
	assert_ok(dmm_sim_device_destroy(&sd));
	hwenv_destroy(&e);
}

/* Map @len-byte buffers (pa + i * len) until the pool is full; returns how
 * many, checking the pool after each. */
static unsigned map_until_full(struct hwenv *e, struct dmm_sim_dev *sd, dmm_phys_t pa, size_t len,
			       dmm_dma_addr_t *bus, unsigned max)
{
	unsigned n = 0;

	for (;;) {
		dmm_dma_addr_t b = dmm_dma_map_phys(sd->dev, pa + (uint64_t)n * len, len, DMM_DMA_TO_DEVICE);
		int err = dmm_dma_mapping_error(sd->dev, b);
		assert_ok(dmm_swiotlb_check(e->mem));
		if (err) {
			assert_rc(err, -DMM_ENOSPC);
			return n;
		}
		assert_true(n < max);
		assert_true(dmm_swiotlb_is_bounce(e->mem, b));
		for (unsigned k = 0; k < n; k++) /* no slot handed out twice */
			assert_true(b + len <= bus[k] || bus[k] + len <= b);
		bus[n++] = b;
	}
}

static void unmap_all(struct hwenv *e, struct dmm_sim_dev *sd, dmm_dma_addr_t *bus, unsigned n, size_t len)
{
	for (unsigned i = 0; i < n; i++) {
		dmm_dma_unmap_phys(sd->dev, bus[i], len, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_swiotlb_check(e->mem));
	}
}

/*
 * A small pool filled with 1-slot mappings and emptied: its runs are parked
 * in the CPU's cache (the overflow goes back). 2-slot mappings must still
 * get every slot: the map takes the cached runs back when the areas have
 * no room. And the other way round, with the whole pool parked as 2-slot
 * runs.
 */
static void test_run_cache_drained_when_full(void **state)
{
	struct hwenv e;
	struct dmm_sim_dev sd;
	struct dmm_swiotlb_opts o;
	struct dmm_swiotlb_stats st;
	static dmm_dma_addr_t bus[64];
	uint64_t total, fails;
	unsigned n;
	dmm_phys_t pa;
	(void)state;

	cache_opts(&o, 64 * KiB);
	cache_env(&e, &sd, 1, &o);
	pa = high_buffer(&e, 5); /* 128 KiB above 4 GiB */
	dmm_swiotlb_get_stats(e.mem, &st);
	total = st.total_slots;
	assert_int_equal(total, 32);

	n = map_until_full(&e, &sd, pa, 2048, bus, 64);
	assert_int_equal(n, total);
	assert_tlb_counts(e.mem, total, 0);
	unmap_all(&e, &sd, bus, n, 2048);
	dmm_swiotlb_get_stats(e.mem, &st);
	assert_int_equal(st.used_slots, 0);
	assert_true(st.cached_slots > 0);          /* parked... */
	assert_true(st.cached_slots <= total / 2); /* ...but a full cache gave half back */
	assert_int_equal(st.high_water_slots, total);
	fails = st.fail_full;
	assert_int_equal(fails, 1);

	/* 2-slot mappings: half of the pool free, the other half parked as 1-slot runs */
	n = map_until_full(&e, &sd, pa, 4096, bus, 64);
	assert_int_equal(n, total / 2); /* every slot: the cached runs were taken back */
	assert_tlb_counts(e.mem, total, 0);
	dmm_swiotlb_get_stats(e.mem, &st);
	assert_int_equal(st.fail_full, fails + 1); /* only the map that found the pool truly full */
	fails = st.fail_full;
	unmap_all(&e, &sd, bus, n, 4096);
	/* 16 runs of 2 slots fit in the cache (TLB_CACHE_RUNS): the whole pool
	 * is parked, the areas have not one free slot */
	dmm_swiotlb_get_stats(e.mem, &st);
	assert_int_equal(st.used_slots, 0);
	assert_int_equal(st.cached_slots, total);

	/* 1-slot mappings must get every slot again */
	n = map_until_full(&e, &sd, pa, 2048, bus, 64);
	assert_int_equal(n, total);
	assert_tlb_counts(e.mem, total, 0);
	unmap_all(&e, &sd, bus, n, 2048);
	dmm_swiotlb_get_stats(e.mem, &st);
	assert_int_equal(st.fail_full, fails + 1);
	fails = st.fail_full;
	assert_int_equal(st.used_slots, 0);
	assert_int_equal(st.high_water_slots, total);
	assert_int_equal(st.maps, st.unmaps);
	assert_int_equal(st.maps, 2 * total + total / 2);

	/* held mappings of both lengths, from the cache and the area at once:
	 * the data of each is its own */
	{
		static uint8_t want[4096], got[4096];
		size_t len[20];
		for (unsigned i = 0; i < 20; i++) {
			len[i] = (i % 3 == 2) ? 4096 : 2048; /* 27 slots in all */
			fill(want, len[i], 300 + i);
			assert_ok(dmm_hw_cpu_write(e.hw, pa + (uint64_t)i * 4096, want, len[i]));
			bus[i] = dmm_dma_map_phys(sd.dev, pa + (uint64_t)i * 4096, len[i], DMM_DMA_TO_DEVICE);
			assert_ok(dmm_dma_mapping_error(sd.dev, bus[i]));
			assert_ok(dmm_swiotlb_check(e.mem));
		}
		for (unsigned i = 0; i < 20; i++) {
			fill(want, len[i], 300 + i);
			assert_ok(dmm_hw_dev_read(sd.hw, bus[i], got, len[i]));
			assert_memory_equal(got, want, len[i]);
			dmm_dma_unmap_phys(sd.dev, bus[i], len[i], DMM_DMA_TO_DEVICE);
			assert_ok(dmm_swiotlb_check(e.mem));
		}
		dmm_swiotlb_get_stats(e.mem, &st);
		assert_int_equal(st.used_slots, 0);
		assert_int_equal(st.fail_full, fails);
	}

	assert_ok(dmm_page_free(e.mem, dmm_phys_to_pfn(pa), 5));
	assert_ok(dmm_sim_device_destroy(&sd));
	hwenv_destroy(&e);
}

/* Two threads, alive together (so they may sit on different CPUs), each
 * map @count buffers of @len bytes, wait for the other (the pool is full
 * then), and unmap them: their runs are parked in their CPUs' caches. */
struct parker {
	struct hwenv *e;
	struct dmm_sim_dev *sd;
	pthread_barrier_t *bar;
	dmm_phys_t pa;
	size_t len;
	unsigned count;
	int failed;
};

static void *parker_main(void *arg)
{
	struct parker *w = arg;
	dmm_dma_addr_t b[32];

	for (unsigned i = 0; i < w->count; i++) {
		b[i] = dmm_dma_map_phys(w->sd->dev, w->pa + i * w->len, w->len, DMM_DMA_TO_DEVICE);
		if (dmm_dma_mapping_error(w->sd->dev, b[i]))
			w->failed = 1;
	}
	pthread_barrier_wait(w->bar);
	for (unsigned i = 0; i < w->count && !w->failed; i++)
		dmm_dma_unmap_phys(w->sd->dev, b[i], w->len, DMM_DMA_TO_DEVICE);
	return NULL;
}

static void park_from_two_threads(struct hwenv *e, struct dmm_sim_dev *sd, dmm_phys_t pa, size_t len, unsigned count)
{
	struct parker w[2];
	pthread_t t[2];
	pthread_barrier_t bar;

	assert_true(count <= 32);
	assert_int_equal(pthread_barrier_init(&bar, NULL, 2), 0);
	for (int i = 0; i < 2; i++) {
		w[i] = (struct parker){ e, sd, &bar, pa + (uint64_t)i * 64 * KiB, len, count, 0 };
		assert_int_equal(pthread_create(&t[i], NULL, parker_main, &w[i]), 0);
	}
	for (int i = 0; i < 2; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(w[i].failed, 0);
	}
	pthread_barrier_destroy(&bar);
	assert_ok(dmm_swiotlb_check(e->mem));
}

/*
 * Runs parked by other threads (on this CPU or the other one) must all be
 * reachable from here: a map that finds the areas empty takes every CPU's
 * cached runs back. 2-slot runs first (every run starts at an even slot,
 * so no slot is stranded), then 1-slot runs mapped in any interleaving.
 */
static void test_run_cache_drained_across_cpus(void **state)
{
	struct hwenv e;
	struct dmm_sim_dev sd;
	struct dmm_swiotlb_opts o;
	struct dmm_swiotlb_stats st;
	static dmm_dma_addr_t bus[64];
	unsigned n;
	dmm_phys_t pa;
	(void)state;

	cache_opts(&o, 64 * KiB);
	cache_env(&e, &sd, 1, &o);
	pa = high_buffer(&e, 5);

	/* 2 x 8 runs of 2 slots: the whole pool parked, on one CPU or two */
	park_from_two_threads(&e, &sd, pa, 4096, 8);
	dmm_swiotlb_get_stats(e.mem, &st);
	assert_int_equal(st.used_slots, 0);
	assert_int_equal(st.cached_slots, 32);
	n = map_until_full(&e, &sd, pa, 4096, bus, 64);
	assert_int_equal(n, 16);
	assert_tlb_counts(e.mem, 32, 0);
	unmap_all(&e, &sd, bus, n, 4096); /* now all parked on this CPU */
	assert_tlb_counts(e.mem, 0, 32);

	/* 2 x 16 runs of 1 slot: the threads need this CPU's runs first */
	park_from_two_threads(&e, &sd, pa, 2048, 16);
	dmm_swiotlb_get_stats(e.mem, &st);
	assert_int_equal(st.used_slots, 0);
	/* 32 if they ran on two CPUs (every slot parked), 16 if on one */
	assert_true(st.cached_slots == 32 || st.cached_slots == 16);
	if (st.cached_slots != 32)
		print_message("note: both threads shared one CPU slot\n");
	n = map_until_full(&e, &sd, pa, 2048, bus, 64);
	assert_int_equal(n, 32);
	assert_tlb_counts(e.mem, 32, 0);
	unmap_all(&e, &sd, bus, n, 2048);
	dmm_swiotlb_get_stats(e.mem, &st);
	assert_int_equal(st.used_slots, 0);
	assert_int_equal(st.fail_full, 2);
	assert_int_equal(st.maps, 16 + 16 + 32 + 32);
	assert_int_equal(st.unmaps, st.maps);
	assert_int_equal(st.high_water_slots, 32);
	assert_ok(dmm_page_free(e.mem, dmm_phys_to_pfn(pa), 5));
	assert_ok(dmm_sim_device_destroy(&sd));
	hwenv_destroy(&e);
}

/* Small buffers from two threads: every round trip checked, the pool
 * checked from a third thread all along. */
struct small_worker {
	struct hwenv *e;
	struct dmm_sim_dev *sd;
	dmm_phys_t pa;
	unsigned seed;
	int failed;
	uint64_t maps, to_dev, from_dev;
	int *finished; /* atomic: workers done */
};

static void *small_worker_main(void *arg)
{
	struct small_worker *w = arg;
	uint8_t want[3000], got[3000];
	uint64_t s = w->seed;

	for (unsigned i = 0; i < 4000 && !w->failed; i++) {
		/* 64 bytes mostly (1 slot), now and then 3000 (2 slots) */
		size_t len = (i % 16 == 15) ? 3000 : 64;
		dmm_phys_t at = w->pa + tu_rand_below(&s, 4096 - len);
		enum dmm_dma_dir dir = (enum dmm_dma_dir)tu_rand_below(&s, 3);
		dmm_dma_addr_t bus;

		for (size_t k = 0; k < len; k++)
			want[k] = (uint8_t)(w->seed * 31u + i * 7u + k);
		if (dmm_hw_cpu_write(w->e->hw, at, want, len)) {
			w->failed = 1;
			break;
		}
		bus = dmm_dma_map_phys(w->sd->dev, at, len, dir);
		if (dmm_dma_mapping_error(w->sd->dev, bus) || !dmm_swiotlb_is_bounce(w->e->mem, bus)) {
			w->failed = 2;
			break;
		}
		w->maps++;
		if (dir != DMM_DMA_FROM_DEVICE) {
			w->to_dev += len;
			if (dmm_hw_dev_read(w->sd->hw, bus, got, len) || memcmp(got, want, len))
				w->failed = 3;
		}
		if (dir != DMM_DMA_TO_DEVICE) {
			w->from_dev += len;
			for (size_t k = 0; k < len; k++)
				want[k] = (uint8_t)~want[k];
			if (dmm_hw_dev_write(w->sd->hw, bus, want, len))
				w->failed = 4;
		}
		dmm_dma_unmap_phys(w->sd->dev, bus, len, dir);
		if (dmm_hw_cpu_read(w->e->hw, at, got, len) || memcmp(got, want, len))
			w->failed = 5;
	}
	__atomic_fetch_add(w->finished, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void test_run_cache_two_threads(void **state)
{
	(void)state;
	for (int coherent = 0; coherent <= 1; coherent++) {
		struct hwenv e;
		struct dmm_sim_dev sd;
		struct dmm_swiotlb_opts o;
		struct dmm_swiotlb_stats st;
		struct small_worker w[2];
		pthread_t t[2];
		uint64_t maps = 0, to_dev = 0, from_dev = 0;
		unsigned checks = 0;
		int finished = 0;

		cache_opts(&o, 256 * KiB);
		cache_env(&e, &sd, coherent, &o);
		for (int i = 0; i < 2; i++) {
			w[i] = (struct small_worker){ &e, &sd, high_buffer(&e, 0), 17u + (unsigned)i * 40u, 0, 0, 0, 0, &finished };
			assert_int_equal(pthread_create(&t[i], NULL, small_worker_main, &w[i]), 0);
		}
		/* the check holds every CPU: it must always find the pool whole */
		do {
			assert_ok(dmm_swiotlb_check(e.mem));
			checks++;
			sched_yield();
		} while (__atomic_load_n(&finished, __ATOMIC_ACQUIRE) < 2);
		print_message("%u concurrent checks\n", checks);
		for (int i = 0; i < 2; i++) {
			assert_int_equal(pthread_join(t[i], NULL), 0);
			assert_int_equal(w[i].failed, 0);
			assert_int_equal(w[i].maps, 4000);
			maps += w[i].maps;
			to_dev += w[i].to_dev;
			from_dev += w[i].from_dev;
			assert_ok(dmm_page_free(e.mem, dmm_phys_to_pfn(w[i].pa), 0));
		}
		assert_ok(dmm_swiotlb_check(e.mem));
		dmm_swiotlb_get_stats(e.mem, &st);
		assert_int_equal(st.maps, maps);
		assert_int_equal(st.unmaps, maps);
		assert_int_equal(st.used_slots, 0);
		assert_true(st.cached_slots > 0);
		assert_true(st.cached_slots <= 2 * 16 * (1 + 2)); /* 2 CPUs, 16 runs of each length */
		assert_true(st.high_water_slots >= st.cached_slots);
		assert_true(st.high_water_slots <= st.total_slots);
		assert_int_equal(st.bounced_to_device, to_dev);
		assert_int_equal(st.bounced_from_device, from_dev);
		assert_int_equal(st.fail_full, 0);
		assert_ok(dmm_sim_device_destroy(&sd));
		hwenv_destroy(&e);
	}
}

static void assert_same_tlb_stats(const struct dmm_swiotlb_stats *a, const struct dmm_swiotlb_stats *b)
{
	assert_int_equal(a->used_slots, b->used_slots);
	assert_int_equal(a->cached_slots, b->cached_slots);
	assert_int_equal(a->high_water_slots, b->high_water_slots);
	assert_int_equal(a->maps, b->maps);
	assert_int_equal(a->unmaps, b->unmaps);
	assert_int_equal(a->bounced_to_device, b->bounced_to_device);
	assert_int_equal(a->bounced_from_device, b->bounced_from_device);
}

/*
 * A cached run is no mapping: unmapping its address again (any direction,
 * and the second slot of a 2-slot run) changes nothing, copies nothing
 * back over what the CPU wrote since, and the run is still handed out
 * once.
 */
static void test_run_cache_double_unmap(void **state)
{
	(void)state;
	for (int coherent = 0; coherent <= 1; coherent++) {
		static const enum dmm_dma_dir dirs[3] = { DMM_DMA_FROM_DEVICE, DMM_DMA_TO_DEVICE, DMM_DMA_BIDIRECTIONAL };
		struct hwenv e;
		struct dmm_sim_dev sd;
		struct dmm_swiotlb_opts o;
		struct dmm_swiotlb_stats st0, st1;
		static uint8_t mine[8192], got[8192];
		static const size_t lens[3] = { 64, 4096, 5000 };
		dmm_dma_addr_t a, b, c;
		dmm_phys_t pa;

		cache_opts(&o, 1 * MiB);
		cache_env(&e, &sd, coherent, &o);
		pa = high_buffer(&e, 2);

		for (int li = 0; li < 3; li++) {
			size_t len = lens[li];
			unsigned slots = (unsigned)((len + 2047) / 2048);
			a = map_checked(&e, &sd, pa, len, DMM_DMA_FROM_DEVICE, 1);
			unmap_checked(&e, &sd, pa, a, len, DMM_DMA_FROM_DEVICE, 1);
			assert_ok(dmm_swiotlb_check(e.mem));
			/* the CPU owns its buffer again and writes to it */
			fill(mine, len, 99);
			assert_ok(dmm_hw_cpu_write(e.hw, pa, mine, len));
			dmm_swiotlb_get_stats(e.mem, &st0);
			if (slots <= 2)
				assert_true(st0.cached_slots >= slots); /* parked */
			for (int d = 0; d < 3; d++) {
				dmm_dma_unmap_phys(sd.dev, a, len, dirs[d]);
				assert_ok(dmm_swiotlb_check(e.mem));
				dmm_swiotlb_get_stats(e.mem, &st1);
				assert_same_tlb_stats(&st0, &st1);
			}
			if (slots > 1) { /* the second slot of the run */
				dmm_dma_unmap_phys(sd.dev, a + 2048, len - 2048, DMM_DMA_FROM_DEVICE);
				assert_ok(dmm_swiotlb_check(e.mem));
				dmm_swiotlb_get_stats(e.mem, &st1);
				assert_same_tlb_stats(&st0, &st1);
			}
			assert_ok(dmm_hw_cpu_read(e.hw, pa, got, len));
			assert_memory_equal(got, mine, len); /* nothing copied back */

			/* the run goes to one mapping only */
			b = map_checked(&e, &sd, pa, len, DMM_DMA_TO_DEVICE, 2);
			c = map_checked(&e, &sd, pa + 8192, len, DMM_DMA_BIDIRECTIONAL, 3);
			assert_true(b + len <= c || c + len <= b);
			assert_int_equal(b, a); /* warm: the same slots */
			assert_ok(dmm_swiotlb_check(e.mem));
			dmm_swiotlb_get_stats(e.mem, &st1);
			assert_int_equal(st1.used_slots, 2 * slots);
			unmap_checked(&e, &sd, pa + 8192, c, len, DMM_DMA_BIDIRECTIONAL, 3);
			unmap_checked(&e, &sd, pa, b, len, DMM_DMA_TO_DEVICE, 2);
			assert_ok(dmm_swiotlb_check(e.mem));
			dmm_swiotlb_get_stats(e.mem, &st1);
			assert_int_equal(st1.used_slots, 0);
			assert_int_equal(st1.maps, st1.unmaps);
		}
		assert_ok(dmm_page_free(e.mem, dmm_phys_to_pfn(pa), 2));
		assert_ok(dmm_sim_device_destroy(&sd));
		hwenv_destroy(&e);
	}
}

/* A user-space host (thread sections, the express paths) with @cpus CPUs:
 * an 8 GiB machine from address 0, DMA32 below 4 GiB, so half of its RAM
 * is out of a 32-bit device's reach. */
/* 8 GiB of RAM from 0: half of it beyond a 32-bit device's reach */
static void machine_8g(struct dmm_machine *m, const char *name)
{
	dmm_machine_defaults(m);
	snprintf(m->name, sizeof(m->name), "%s", name);
	m->dma32_limit = 4 * GiB;
	m->nr_ram = 1;
	m->ram[0].base = 0;
	m->ram[0].size = 8 * GiB;
}

static struct dmm_mem *hosted_8g_cpus(const char *name, unsigned cpus, struct dmm_hosted **h)
{
	struct dmm_machine m;
	struct dmm_mem *mem;

	machine_8g(&m, name);
	assert_ok(dmm_hosted_mem_create(&m, cpus, h, &mem));
	return mem;
}

static struct dmm_mem *hosted_8g(const char *name, struct dmm_hosted **h)
{
	return hosted_8g_cpus(name, 2, h);
}

/* hosted_8g with a default pool of @bytes that never changes size (no
 * transient pools, no growth) */
static struct dmm_mem *hosted_8g_fixed_pool(const char *name, uint64_t bytes, struct dmm_hosted **h)
{
	struct dmm_mem *mem = hosted_8g(name, h);
	struct dmm_swiotlb_opts o;

	dmm_swiotlb_opts_default(mem, &o);
	o.initial_bytes = bytes;
	o.no_transient = 1;
	o.grow_threshold_pct = 100;
	assert_ok(dmm_swiotlb_init(mem, &o));
	return mem;
}

/* One run of test_express_matches_general: a user-space host (thread
 * sections), a coherent 32-bit device, a fixed sequence of maps of every
 * size, direction and entry point, some held at once. */
struct express_run {
	dmm_dma_addr_t bus[256];
	uint64_t bounced, to_dev, from_dev, bytes; /* expected */
	struct dmm_dma_stats ds;
	struct dmm_swiotlb_stats ts;
};

static void express_run(int debug, struct express_run *out)
{
	static const size_t sizes[] = { 1, 64, 100, 2048, 2049, 4000, 4096, 5000, 12000 };
	static const enum dmm_dma_dir dirs[3] = { DMM_DMA_TO_DEVICE, DMM_DMA_FROM_DEVICE, DMM_DMA_BIDIRECTIONAL };
	const struct dmm_constraint above = { 4 * GiB, DMM_PHYS_MAX, 0, 0, 0, 0 };
	const struct dmm_constraint below = { 0, 4 * GiB, 0, 0, 0, 0 };
	struct dmm_hosted *h;
	struct dmm_mem *mem;
	struct dmm_mem_info mi;
	struct dmm_swiotlb_opts o;
	struct dmm_device_desc d = tu_desc("nic32", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	dmm_pfn_t hi, lo;
	uint8_t *hv, *lv, want[12000];
	dmm_dma_addr_t held[4];
	size_t hsz[4];
	dmm_phys_t hpa[4];
	enum dmm_dma_dir hdir[4];
	unsigned nheld = 0;

	mem = hosted_8g("express", &h);
	dmm_mem_get_info(mem, &mi);
	assert_string_equal(mi.cpu_sections, "threads");
	dmm_swiotlb_opts_default(mem, &o);
	o.initial_bytes = 1 * MiB;
	o.no_transient = 1;
	assert_ok(dmm_swiotlb_init(mem, &o));
	if (debug)
		assert_ok(dmm_dma_debug_enable(mem, 1));
	assert_ok(dmm_device_create(mem, &d, NULL, &dev));
	assert_ok(dmm_page_alloc(mem, 2, &above, 0, &hi));
	assert_ok(dmm_page_alloc(mem, 2, &below, 0, &lo));
	hv = dmm_pfn_to_virt(mem, hi);
	lv = dmm_pfn_to_virt(mem, lo);
	for (unsigned i = 0; i < 256; i++) {
		size_t len = sizes[i % 9], off = (i * 72u) % 4000;
		enum dmm_dma_dir dir = dirs[(i / 9) % 3];
		int low = i % 7 == 3; /* a buffer the device reaches: no bounce */
		dmm_pfn_t pfn = low ? lo : hi;
		uint8_t *v = (low ? lv : hv) + off;
		dmm_phys_t pa = dmm_pfn_to_phys(pfn) + off;
		dmm_dma_addr_t bus;

		fill(want, len, i);
		memcpy(v, want, len);
		out->bytes += len;
		if (!low) {
			out->bounced++;
			out->to_dev += dir != DMM_DMA_FROM_DEVICE ? len : 0;
			out->from_dev += dir != DMM_DMA_TO_DEVICE ? len : 0;
		}
		if (i % 3 == 0)
			bus = dmm_dma_map_phys(dev, pa, len, dir);
		else if (i % 3 == 1)
			bus = dmm_dma_map_page(dev, pfn, off, len, dir);
		else
			bus = dmm_dma_map_single(dev, v, len, dir);
		assert_ok(dmm_dma_mapping_error(dev, bus));
		out->bus[i] = bus;
		if (low) {
			assert_int_equal(bus, pa);
		} else {
			uint8_t *bv = (uint8_t *)dmm_pfn_to_virt(mem, dmm_phys_to_pfn(bus)) + (bus & (DMM_PAGE_SIZE - 1));
			assert_true(dmm_swiotlb_is_bounce(mem, bus));
			if (dir != DMM_DMA_FROM_DEVICE)
				assert_memory_equal(bv, want, len); /* copied in */
			if (dir != DMM_DMA_TO_DEVICE) {
				fill(want, len, i + 1000); /* the device writes */
				memcpy(bv, want, len);
			}
		}
		assert_ok(dmm_swiotlb_check(mem));
		if (i % 5 == 4 && nheld < 4) { /* keep it a while */
			held[nheld] = bus;
			hsz[nheld] = len;
			hpa[nheld] = pa;
			hdir[nheld++] = dir;
			continue;
		}
		dmm_dma_unmap_phys(dev, bus, len, dir);
		assert_memory_equal(v, want, len); /* copied back exactly when the direction says */
		if (i % 31 == 30)
			while (nheld) {
				nheld--;
				dmm_dma_unmap_phys(dev, held[nheld], hsz[nheld], hdir[nheld]);
				(void)hpa[nheld];
			}
		assert_ok(dmm_swiotlb_check(mem));
	}
	while (nheld) {
		nheld--;
		dmm_dma_unmap_phys(dev, held[nheld], hsz[nheld], hdir[nheld]);
	}
	dmm_device_get_stats(dev, &out->ds);
	dmm_swiotlb_get_stats(mem, &out->ts);
	assert_int_equal(out->ds.maps, 256);
	assert_int_equal(out->ds.unmaps, 256);
	assert_int_equal(out->ds.map_bytes, out->bytes);
	assert_int_equal(out->ds.bounced_maps, out->bounced);
	assert_int_equal(out->ts.maps, out->bounced);
	assert_int_equal(out->ts.unmaps, out->bounced);
	assert_int_equal(out->ts.bounced_to_device, out->to_dev);
	assert_int_equal(out->ts.bounced_from_device, out->from_dev);
	assert_int_equal(out->ds.low_bounce_bytes, 0);
	assert_int_equal(out->ts.used_slots, 0);
	if (debug)
		assert_int_equal(dmm_dma_debug_total(mem), 0);
	assert_ok(dmm_swiotlb_check(mem));
	assert_ok(dmm_device_destroy(dev));
	assert_ok(dmm_page_free(mem, hi, 2));
	assert_ok(dmm_page_free(mem, lo, 2));
	assert_checks(mem);
	dmm_hosted_mem_destroy(h, mem);
}

/* The express paths (DMA debug off) and the general path (debug on) hand
 * out the same bounce addresses, move the same bytes and count the same. */
static void test_express_matches_general(void **state)
{
	static struct express_run r[2];
	(void)state;

	memset(r, 0, sizeof(r));
	express_run(0, &r[0]);
	express_run(1, &r[1]);
	assert_memory_equal(r[0].bus, r[1].bus, sizeof(r[0].bus));
	assert_int_equal(r[0].ds.maps, r[1].ds.maps);
	assert_int_equal(r[0].ds.unmaps, r[1].ds.unmaps);
	assert_int_equal(r[0].ds.map_bytes, r[1].ds.map_bytes);
	assert_int_equal(r[0].ds.bounced_maps, r[1].ds.bounced_maps);
	assert_true(r[0].ds.bounced_maps > 200);
	assert_int_equal(r[0].ds.low_peak_bytes, r[1].ds.low_peak_bytes);
	assert_true(r[0].ds.low_peak_bytes > 0);
	assert_int_equal(r[0].ts.maps, r[1].ts.maps);
	assert_int_equal(r[0].ts.unmaps, r[1].ts.unmaps);
	assert_int_equal(r[0].ts.bounced_to_device, r[1].ts.bounced_to_device);
	assert_int_equal(r[0].ts.bounced_from_device, r[1].ts.bounced_from_device);
	assert_int_equal(r[0].ts.high_water_slots, r[1].ts.high_water_slots);
	assert_int_equal(r[0].ts.cached_slots, r[1].ts.cached_slots);
}

/* A restricted pool that comes first in the index (the lowest base) is
 * still its device's alone: another device's short path must not take the
 * runs that device's unmaps parked in it. */
static void test_restricted_pool_first_in_index(void **state)
{
	const struct dmm_constraint low16 = { 0, 16 * MiB, 0, 0, 0, 0 };
	const struct dmm_constraint above = { 4 * GiB, DMM_PHYS_MAX, 0, 0, 0, 0 };
	struct dmm_hosted *h;
	struct dmm_mem *mem;
	struct dmm_swiotlb_opts o;
	struct dmm_device_desc rd = tu_desc("restricted", 64, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device_desc nd = tu_desc("nic32", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *r, *n;
	dmm_pfn_t blk, p, q;
	dmm_dma_addr_t rb, nb, rb2;
	(void)state;

	mem = hosted_8g("restricted-first", &h);
	dmm_swiotlb_opts_default(mem, &o);
	o.initial_bytes = 1 * MiB;
	o.no_transient = 1;
	/* keep the default pool out of the low 8 MiB, where the restricted
	 * pool goes: first in the index */
	assert_ok(dmm_alloc_range(mem, &low16, 2048, 0, &blk));
	assert_ok(dmm_swiotlb_init(mem, &o));
	assert_ok(dmm_free_range(mem, blk, 2048));
	rd.limits.hi = 16 * MiB;
	assert_ok(dmm_device_create(mem, &rd, NULL, &r));
	assert_ok(dmm_device_create(mem, &nd, NULL, &n));
	assert_ok(dmm_swiotlb_restricted_pool(r, 1 * MiB));
	assert_ok(dmm_page_alloc(mem, 0, NULL, 0, &p));
	assert_ok(dmm_page_alloc(mem, 0, &above, 0, &q));

	rb = dmm_dma_map_page(r, p, 0, 100, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(r, rb));
	assert_true(rb < 8 * MiB && dmm_swiotlb_is_bounce(mem, rb));
	dmm_dma_unmap_page(r, rb, 100, DMM_DMA_TO_DEVICE); /* parks the run in the restricted pool's cache */
	nb = dmm_dma_map_page(n, q, 0, 100, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(n, nb));
	assert_true(dmm_swiotlb_is_bounce(mem, nb));
	assert_true(nb >= 8 * MiB); /* the default pool, not the restricted one */
	rb2 = dmm_dma_map_page(r, p, 0, 100, DMM_DMA_TO_DEVICE);
	assert_int_equal(rb2, rb); /* its run was still there */
	dmm_dma_unmap_page(r, rb2, 100, DMM_DMA_TO_DEVICE);
	dmm_dma_unmap_page(n, nb, 100, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_swiotlb_check(mem));
	assert_ok(dmm_page_free(mem, p, 0));
	assert_ok(dmm_page_free(mem, q, 0));
	assert_ok(dmm_device_destroy(n));
	assert_ok(dmm_device_destroy(r));
	assert_checks(mem);
	dmm_hosted_mem_destroy(h, mem);
}

/* The short paths look first in the lowest pool with run caches that the
 * index names. A pool grown below the first one must take that place at
 * once: the next mapping goes to the new pool (the general path takes the
 * pools in address order), its unmap parks the run there and the short
 * path's next map takes it back, while the run parked in the older pool
 * stays where it is. */
static void test_grown_pool_below_becomes_first(void **state)
{
	const struct dmm_constraint low16 = { 0, 16 * MiB, 0, 0, 0, 0 };
	const struct dmm_constraint above = { 4 * GiB, DMM_PHYS_MAX, 0, 0, 0, 0 };
	struct dmm_hosted *h;
	struct dmm_mem *mem;
	struct dmm_swiotlb_opts o;
	struct dmm_swiotlb_stats st;
	struct dmm_device_desc nd = tu_desc("nic32", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *n;
	dmm_pfn_t blk, q;
	dmm_dma_addr_t old, big, nb, nb2;
	(void)state;

	mem = hosted_8g("grown-first", &h);
	dmm_swiotlb_opts_default(mem, &o);
	o.initial_bytes = 256 * KiB; /* 128 slots */
	o.grow_bytes = 1 * MiB;
	o.grow_threshold_pct = 1; /* the first area mapping asks for growth */
	o.no_transient = 1;
	/* the first pool goes above 16 MiB; the grown one, below it */
	assert_ok(dmm_alloc_range(mem, &low16, 4096, 0, &blk));
	assert_ok(dmm_swiotlb_init(mem, &o));
	assert_ok(dmm_free_range(mem, blk, 4096));
	assert_ok(dmm_device_create(mem, &nd, NULL, &n));
	assert_ok(dmm_page_alloc(mem, 2, &above, 0, &q));

	/* a run parked in the first pool's cache of this CPU */
	old = dmm_dma_map_page(n, q, 0, 100, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(n, old));
	assert_true(old >= 16 * MiB);
	dmm_dma_unmap_page(n, old, 100, DMM_DMA_TO_DEVICE);
	/* three slots come from an area, which is past the threshold */
	big = dmm_dma_map_page(n, q, 0, 5000, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(n, big));
	dmm_mem_platform(mem)->defer_flush(dmm_mem_platform(mem)->ctx);
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.grow_done, 1);
	assert_int_equal(st.pools, 2);
	assert_ok(dmm_swiotlb_check(mem)); /* the index names the new pool */

	nb = dmm_dma_map_page(n, q, 0, 100, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(n, nb));
	assert_true(dmm_swiotlb_is_bounce(mem, nb));
	assert_true(nb < 16 * MiB); /* the new pool, not the run cached in the old one */
	dmm_dma_unmap_page(n, nb, 100, DMM_DMA_TO_DEVICE);
	nb2 = dmm_dma_map_page(n, q, 0, 100, DMM_DMA_TO_DEVICE);
	assert_int_equal(nb2, nb); /* taken back from the new pool's cache */
	assert_tlb_counts(mem, 3 + 1, 1);
	dmm_dma_unmap_page(n, nb2, 100, DMM_DMA_TO_DEVICE);
	dmm_dma_unmap_page(n, big, 5000, DMM_DMA_TO_DEVICE);
	assert_tlb_counts(mem, 0, 2);
	assert_ok(dmm_page_free(mem, q, 2));
	assert_ok(dmm_device_destroy(n));
	assert_checks(mem);
	dmm_hosted_mem_destroy(h, mem);
}

/* The express device on a thread owning its CPU slot takes the quick
 * forms of the short paths, which hand over to the long forms what needs a
 * call: a full run cache (half of it goes back to the areas), a new
 * low-memory peak, a direct mapping over several pages. Counts and caches
 * end as the long forms leave them. */
static void test_express_quick_hands_over(void **state)
{
	const struct dmm_constraint above = { 4 * GiB, DMM_PHYS_MAX, 0, 0, 0, 0 };
	const struct dmm_constraint below = { 0, 4 * GiB, 0, 0, 0, 0 };
	struct dmm_hosted *h;
	struct dmm_mem *mem;
	struct dmm_dma_stats ds;
	struct dmm_device_desc nd = tu_desc("nic32", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *n;
	dmm_pfn_t q, lo;
	dmm_dma_addr_t bus[20], d;
	(void)state;

	mem = hosted_8g_fixed_pool("quick", 1 * MiB, &h);
	assert_ok(dmm_device_create(mem, &nd, NULL, &n));
	assert_ok(dmm_page_alloc(mem, 0, &above, 0, &q));
	assert_ok(dmm_page_alloc(mem, 2, &below, 0, &lo));

	/* peaks: each of the first three maps raises it, then none */
	for (int i = 0; i < 3; i++) {
		bus[i] = dmm_dma_map_page(n, q, 0, 100, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(n, bus[i]));
		dmm_device_get_stats(n, &ds);
		assert_int_equal(ds.low_peak_bytes, (uint64_t)(i + 1) * 2048);
		assert_int_equal(ds.low_bounce_bytes, (uint64_t)(i + 1) * 2048);
	}
	for (int i = 0; i < 3; i++)
		dmm_dma_unmap_page(n, bus[i], 100, DMM_DMA_TO_DEVICE);
	bus[0] = dmm_dma_map_page(n, q, 0, 100, DMM_DMA_TO_DEVICE);
	dmm_dma_unmap_page(n, bus[0], 100, DMM_DMA_TO_DEVICE);
	dmm_device_get_stats(n, &ds);
	assert_int_equal(ds.low_peak_bytes, 3 * 2048);
	assert_int_equal(ds.low_bounce_bytes, 0);
	assert_tlb_counts(mem, 0, 3);

	/* 20 one-slot mappings back: the 17th unmap finds the cache full and
	 * gives 8 runs back first: 12 stay */
	for (int i = 0; i < 20; i++) {
		bus[i] = dmm_dma_map_page(n, q, (size_t)i * 64, 64, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(n, bus[i]));
	}
	assert_tlb_counts(mem, 20, 0);
	for (int i = 0; i < 20; i++)
		dmm_dma_unmap_page(n, bus[i], 64, DMM_DMA_TO_DEVICE);
	assert_tlb_counts(mem, 0, 12);

	/* a direct mapping of three pages: RAM checked over all of them */
	d = dmm_dma_map_page(n, lo, 100, 3 * DMM_PAGE_SIZE - 200, DMM_DMA_TO_DEVICE);
	assert_int_equal(d, dmm_pfn_to_phys(lo) + 100);
	dmm_dma_unmap_page(n, d, 3 * DMM_PAGE_SIZE - 200, DMM_DMA_TO_DEVICE);
	dmm_device_get_stats(n, &ds);
	assert_int_equal(ds.maps, 4 + 20 + 1);
	assert_int_equal(ds.unmaps, 4 + 20 + 1);
	assert_int_equal(ds.bounced_maps, 4 + 20);
	assert_int_equal(ds.map_bytes, 4 * 100 + 20 * 64 + 3 * DMM_PAGE_SIZE - 200);

	assert_ok(dmm_page_free(mem, q, 0));
	assert_ok(dmm_page_free(mem, lo, 2));
	assert_ok(dmm_device_destroy(n));
	assert_checks(mem);
	dmm_hosted_mem_destroy(h, mem);
}

/* One thread of test_many_cpus: its CPU slot is the next one handed out
 * (round-robin). They all live at once (a thread that ended would leave
 * its CPU slot to the next one, which gets its thread pointer) and take
 * turns. A bounce mapping and a direct one, mapped and unmapped; every
 * fifth thread leaves its bounce mapping for the main thread. */
static pthread_mutex_t many_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t many_cond = PTHREAD_COND_INITIALIZER;
static unsigned many_turn, many_done;

struct many_cpus_arg {
	struct dmm_mem *mem;
	struct dmm_device *dev, *io;
	dmm_pfn_t hi, lo;
	unsigned idx, cpu;
	dmm_dma_addr_t held;
};

static void *many_cpus_work(struct many_cpus_arg *a);

static void *many_cpus_thread(void *p)
{
	struct many_cpus_arg *a = p;
	void *ret;

	pthread_mutex_lock(&many_lock);
	while (many_turn != a->idx)
		pthread_cond_wait(&many_cond, &many_lock);
	pthread_mutex_unlock(&many_lock);
	ret = many_cpus_work(a);
	pthread_mutex_lock(&many_lock);
	many_done = a->idx + 1;
	pthread_cond_broadcast(&many_cond);
	pthread_mutex_unlock(&many_lock);
	return ret;
}

static void *many_cpus_work(struct many_cpus_arg *a)
{
	uint8_t *hv = (uint8_t *)dmm_pfn_to_virt(a->mem, a->hi) + a->idx * 128;
	dmm_phys_t pa = dmm_pfn_to_phys(a->hi) + a->idx * 128;
	dmm_dma_addr_t b, d;

	a->cpu = a->mem->plat.cpu_id(a->mem->plat.ctx);
	memset(hv, (int)(a->idx + 1), 100);
	b = dmm_dma_map_phys(a->dev, pa, 100, DMM_DMA_TO_DEVICE);
	if (dmm_dma_mapping_error(a->dev, b) || !dmm_swiotlb_is_bounce(a->mem, b))
		return (void *)1;
	for (unsigned i = 0; i < 100; i++)
		if (((uint8_t *)dmm_pfn_to_virt(a->mem, dmm_phys_to_pfn(b)))[(b & (DMM_PAGE_SIZE - 1)) + i] !=
		    (uint8_t)(a->idx + 1))
			return (void *)2;
	d = dmm_dma_map_page(a->dev, a->lo, a->idx * 64, 64, DMM_DMA_FROM_DEVICE);
	if (d != dmm_pfn_to_phys(a->lo) + a->idx * 64)
		return (void *)3;
	dmm_dma_unmap_page(a->dev, d, 64, DMM_DMA_FROM_DEVICE);
	/* and through an IOMMU domain (its counters are per CPU too) */
	d = dmm_dma_map_page(a->io, a->lo, a->idx * 64, 64, DMM_DMA_TO_DEVICE);
	if (dmm_dma_mapping_error(a->io, d))
		return (void *)4;
	dmm_dma_unmap_page(a->io, d, 64, DMM_DMA_TO_DEVICE);
	if (a->idx % 5 == 0)
		a->held = b;
	else
		dmm_dma_unmap_phys(a->dev, b, 100, DMM_DMA_TO_DEVICE);
	return (void *)0;
}

/* A machine of many CPUs (80: a device record of several pages, more CPUs
 * than bounce areas): the device has a counter block for every CPU, keeps
 * the express paths, and counts right however the CPUs share the work, the
 * low-memory bounce bytes included; held mappings are given back by
 * another CPU. Every CPU has a run cache in the pool, and a pool that runs
 * out takes them all back before it fails. */
static void test_many_cpus(void **state)
{
	enum { NR = 80 };
	const struct dmm_constraint above = { 4 * GiB, DMM_PHYS_MAX, 0, 0, 0, 0 };
	const struct dmm_constraint below = { 0, 4 * GiB, 0, 0, 0, 0 };
	static struct many_cpus_arg a[NR];
	pthread_t t[NR];
	void *ret;
	struct dmm_hosted *h;
	struct dmm_mem *mem;
	struct dmm_swiotlb_opts o;
	struct dmm_dma_stats ds;
	struct dmm_device_desc nd = tu_desc("nic32", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device_desc id = tu_desc("io", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_iommu_stats is;
	struct dmm_device *dev, *io;
	dmm_pfn_t hi, lo;
	unsigned held = 0;
	(void)state;

	id.iommu = DMM_IOMMU_DMA;
	mem = hosted_8g_cpus("many", NR, &h);
	dmm_swiotlb_opts_default(mem, &o);
	o.initial_bytes = 1 * MiB;
	o.no_transient = 1;
	o.grow_threshold_pct = 100; /* the pool stays as made */
	assert_ok(dmm_swiotlb_init(mem, &o));
	assert_ok(dmm_device_create(mem, &nd, NULL, &dev));
	assert_true(dmm__dev_express(dev));
	assert_ok(dmm_device_create(mem, &id, NULL, &io));
	assert_ok(dmm_page_alloc(mem, 1, &above, 0, &hi));
	assert_ok(dmm_page_alloc(mem, 0, &below, 0, &lo));
	/* NR threads at once take NR consecutive slots, every CPU once; they
	 * run one at a time, in turn */
	many_turn = NR;
	many_done = 0;
	for (unsigned i = 0; i < NR; i++) {
		a[i] = (struct many_cpus_arg){ mem, dev, io, hi, lo, i, 0, 0 };
		assert_int_equal(pthread_create(&t[i], NULL, many_cpus_thread, &a[i]), 0);
	}
	for (unsigned i = 0; i < NR; i++) {
		pthread_mutex_lock(&many_lock);
		many_turn = i;
		pthread_cond_broadcast(&many_cond);
		while (many_done != i + 1)
			pthread_cond_wait(&many_cond, &many_lock);
		pthread_mutex_unlock(&many_lock);
		assert_int_equal(pthread_join(t[i], &ret), 0);
		assert_null(ret);
		held += a[i].held != 0;
		dmm_device_get_stats(dev, &ds);
		assert_int_equal(ds.maps, 2 * (i + 1));
		assert_int_equal(ds.unmaps, 2 * (i + 1) - held);
		assert_int_equal(ds.bounced_maps, i + 1);
		assert_int_equal(ds.map_bytes, (i + 1) * (100 + 64));
		assert_int_equal(ds.low_bounce_bytes, held * 2048);
		assert_ok(dmm_swiotlb_check(mem));
		assert_ok(dmm_device_iommu_stats(io, &is));
		assert_int_equal(is.maps, i + 1);
		assert_int_equal(is.unmaps, i + 1);
		assert_ok(dmm_device_iommu_check(io));
	}
	assert_int_equal(held, NR / 5);
	{
		/* a cached run on each CPU that unmapped (the threads took
		 * consecutive slots: distinct CPUs, unless the host's slot
		 * counter wrapped in between, which the count allows for) */
		uint8_t seen[NR] = { 0 };
		unsigned cpus = 0, top = 0;
		for (unsigned i = 0; i < NR; i++)
			if (i % 5 && !seen[a[i].cpu]++) {
				cpus++;
				top = a[i].cpu > top ? a[i].cpu : top;
			}
		assert_true(top >= 64); /* CPUs past the areas' count have caches too */
		assert_tlb_counts(mem, held, cpus);
	}
	{
		/* the whole pool from one thread: the caches come back first */
		static dmm_dma_addr_t all[512];
		unsigned n = 0;
		struct dmm_swiotlb_stats ts;
		dmm_swiotlb_get_stats(mem, &ts);
		while (n < ts.total_slots - held) {
			all[n] = dmm_dma_map_phys(dev, dmm_pfn_to_phys(hi), 100, DMM_DMA_TO_DEVICE);
			assert_ok(dmm_dma_mapping_error(dev, all[n]));
			n++;
		}
		assert_tlb_counts(mem, ts.total_slots, 0);
		while (n)
			dmm_dma_unmap_phys(dev, all[--n], 100, DMM_DMA_TO_DEVICE);
	}
	for (unsigned i = 0; i < NR; i += 5)
		dmm_dma_unmap_phys(dev, a[i].held, 100, DMM_DMA_TO_DEVICE);
	dmm_device_get_stats(dev, &ds);
	assert_int_equal(ds.maps, 2 * NR + (512 - NR / 5)); /* the pool is 512 slots */
	assert_int_equal(ds.unmaps, ds.maps);
	assert_int_equal(ds.low_bounce_bytes, 0);
	/* the peak: the whole pool, mapped at once */
	assert_int_equal(ds.low_peak_bytes, 512 * 2048);
	assert_ok(dmm_device_destroy(io));
	assert_ok(dmm_page_free(mem, hi, 1));
	assert_ok(dmm_page_free(mem, lo, 0));
	assert_ok(dmm_device_destroy(dev));
	assert_checks(mem);
	dmm_hosted_mem_destroy(h, mem);
}

/* Bounce tags are unique among live devices. A device holding a bounce
 * mapping while 65535 others come and go (a 16-bit tag counted from a
 * sequence would come round to its own): the next device's tag is still
 * another, and its unmap of the first one's mapping is refused, nothing
 * freed. A device destroyed with a mapping outstanding (a leak) keeps its
 * tag: none of the next 65535 devices gets it. */
static void test_bounce_tags_unique(void **state)
{
	const struct dmm_constraint above = { 4 * GiB, DMM_PHYS_MAX, 0, 0, 0, 0 };
	struct dmm_hosted *h;
	struct dmm_mem *mem;
	struct dmm_swiotlb_stats ts;
	struct dmm_device_desc nd = tu_desc("nic32", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *a, *b, *l, *x;
	dmm_dma_addr_t ba, bl;
	dmm_pfn_t hi;
	uint16_t leaked;
	(void)state;

	mem = hosted_8g_fixed_pool("tags", 1 * MiB, &h);
	assert_ok(dmm_page_alloc(mem, 0, &above, 0, &hi));
	assert_ok(dmm_device_create(mem, &nd, NULL, &a));
	ba = dmm_dma_map_page(a, hi, 0, 100, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(a, ba));
	for (unsigned i = 0; i < 65535; i++) {
		assert_ok(dmm_device_create(mem, &nd, NULL, &x));
		assert_int_not_equal(x->tlb_tag, a->tlb_tag);
		assert_int_not_equal(x->tlb_tag, 0);
		assert_ok(dmm_device_destroy(x));
	}
	assert_ok(dmm_device_create(mem, &nd, NULL, &b));
	assert_int_not_equal(b->tlb_tag, a->tlb_tag);
	dmm_dma_unmap_page(b, ba, 100, DMM_DMA_TO_DEVICE); /* not b's mapping: no slot freed */
	dmm_swiotlb_get_stats(mem, &ts);
	assert_int_equal(ts.used_slots, 1);
	dmm_dma_unmap_page(a, ba, 100, DMM_DMA_TO_DEVICE);
	dmm_swiotlb_get_stats(mem, &ts);
	assert_int_equal(ts.used_slots, 0);

	/* a leaked mapping keeps its device's tag */
	assert_ok(dmm_device_create(mem, &nd, NULL, &l));
	leaked = l->tlb_tag;
	bl = dmm_dma_map_page(l, hi, 0, 100, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(l, bl));
	assert_ok(dmm_device_destroy(l));
	for (unsigned i = 0; i < 65535; i++) {
		assert_ok(dmm_device_create(mem, &nd, NULL, &x));
		assert_int_not_equal(x->tlb_tag, leaked);
		assert_ok(dmm_device_destroy(x));
	}
	dmm_dma_unmap_page(b, bl, 100, DMM_DMA_TO_DEVICE); /* nobody's now: refused */
	dmm_swiotlb_get_stats(mem, &ts);
	assert_int_equal(ts.used_slots, 1);
	assert_ok(dmm_swiotlb_check(mem));
	assert_ok(dmm_device_destroy(a));
	assert_ok(dmm_device_destroy(b));
	dmm_hosted_mem_destroy(h, mem);
}

/*
 * The bulk copy (lib/copy.h) in both of its forms: every size up to 520
 * bytes and sizes around the vector loop's limits and its 128-byte steps,
 * source and destination at every alignment of a vector and past it. The
 * bytes arrive in order and nothing outside [dst, dst + n) is written. On
 * x86-64 the library's choice follows the CPU's AVX2 and the info says it.
 */
static void check_copy(bool wide, size_t n, size_t so, size_t dof, uint8_t *src, uint8_t *dst, size_t cap)
{
	const size_t guard = 64;

	assert_true(so + n <= cap && guard + dof + n + guard <= cap);
	for (size_t i = 0; i < n; i++)
		src[so + i] = (uint8_t)(i * 7u + n + (i >> 8));
	memset(dst, 0xe5, guard + dof + n + guard);
	dmm__copy(wide, dst + guard + dof, src + so, n);
	assert_memory_equal(dst + guard + dof, src + so, n);
	for (size_t i = 0; i < guard + dof; i++)
		assert_int_equal(dst[i], 0xe5);
	for (size_t i = guard + dof + n; i < guard + dof + n + guard; i++)
		assert_int_equal(dst[i], 0xe5);
}

static void test_bulk_copy(void **state)
{
	static const size_t big[] = { 1023, 1024, 1025, 4095, 4096, 4097, 8191, 65535, 65536, 65537, 100003 };
	static const size_t aligns[] = { 0, 1, 7, 31, 32, 33, 100 };
	const size_t cap = 100003 + 512;
	uint8_t *src = malloc(cap), *dst = malloc(cap);
	struct dmm_hosted *h;
	struct dmm_mem *mem;
	struct dmm_mem_info mi;
	(void)state;

	assert_non_null(src);
	assert_non_null(dst);
	for (int wide = 0; wide <= (int)dmm__cpu_copy_wide(); wide++) {
		for (size_t n = 0; n <= 520; n++)
			check_copy(wide, n, n % 41, (n * 3) % 37, src, dst, cap);
		for (size_t n = 120; n <= 520; n += 8)
			for (size_t a = 0; a < DMM_ARRAY_SIZE(aligns); a++)
				for (size_t b = 0; b < DMM_ARRAY_SIZE(aligns); b++)
					check_copy(wide, n + a % 2, aligns[a], aligns[b], src, dst, cap);
		for (size_t k = 0; k < DMM_ARRAY_SIZE(big); k++)
			for (size_t a = 0; a < DMM_ARRAY_SIZE(aligns); a += 2)
				check_copy(wide, big[k], aligns[a], aligns[DMM_ARRAY_SIZE(aligns) - 1 - a], src, dst, cap);
	}
	mem = hosted_8g("copy", &h);
	dmm_mem_get_info(mem, &mi);
#if defined(__x86_64__)
	__builtin_cpu_init();
	assert_int_equal(dmm__cpu_copy_wide(), __builtin_cpu_supports("avx2") != 0);
#endif
	assert_string_equal(mi.bulk_copy, dmm__cpu_copy_wide() ? "avx2" : "memcpy");
	dmm_hosted_mem_destroy(h, mem);
	free(src);
	free(dst);
}

/* A phys_copy hook: the copy through the hosted platform's linear map. */
static struct dmm_platform g_copy_plat;
static unsigned g_copy_hook_calls;

static void copy_hook(void *ctx, dmm_phys_t dst, dmm_phys_t src, size_t len)
{
	g_copy_hook_calls++;
	memcpy(g_copy_plat.phys_to_virt(ctx, dst), g_copy_plat.phys_to_virt(ctx, src), len);
}

/*
 * The vector loop is the platform's to allow: a host that does not set
 * vector_copy (a kernel, whose code may not touch vector registers without
 * saving them) or that copies through its own phys_copy hook gets memcpy
 * whatever the CPU has, and its copies are still made.
 */
static void test_bulk_copy_needs_platform(void **state)
{
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_platform p;
	struct dmm_mem *mem;
	struct dmm_mem_info mi;
	(void)state;

	for (int k = 0; k < 3; k++) {
		dmm_pfn_t a, b;
		uint8_t *va, *vb;

		tu_hosted_platform(&m, "copy-plat", 1, &h, &p);
		assert_int_equal(p.vector_copy, 1); /* the hosted platform: user space */
		if (k == 1)
			p.vector_copy = 0;
		if (k == 2) {
			g_copy_plat = p;
			g_copy_hook_calls = 0;
			p.phys_copy = copy_hook;
		}
		assert_ok(dmm_mem_create(&m, &p, &mem));
		dmm_mem_get_info(mem, &mi);
		assert_string_equal(mi.bulk_copy, k == 0 && dmm__cpu_copy_wide() ? "avx2" : "memcpy");
		assert_ok(dmm_page_alloc(mem, 0, NULL, 0, &a));
		assert_ok(dmm_page_alloc(mem, 0, NULL, 0, &b));
		va = dmm_pfn_to_virt(mem, a);
		vb = dmm_pfn_to_virt(mem, b);
		fill(va, DMM_PAGE_SIZE, (unsigned)k);
		memset(vb, 0, DMM_PAGE_SIZE);
		dmm__phys_copy(mem, dmm_pfn_to_phys(b) + 3, dmm_pfn_to_phys(a) + 5, 1000);
		assert_memory_equal(vb + 3, va + 5, 1000);
		assert_int_equal(vb[2], 0);
		assert_int_equal(vb[1003], 0);
		if (k == 2)
			assert_int_equal(g_copy_hook_calls, 1);
		assert_ok(dmm_page_free(mem, a, 0));
		assert_ok(dmm_page_free(mem, b, 0));
		dmm_mem_destroy(mem);
		dmm_hosted_destroy(h);
	}
}

/*
 * Bounces through the linear map (the hosted platform: the bulk copy's
 * path), at sizes around the vector loop's limits and at odd offsets, in
 * every direction: the device's view holds the buffer's bytes, the copy
 * back brings the device's bytes, and the bytes around the buffer are
 * never written.
 */
static void test_bounce_copy_sizes(void **state)
{
	static const size_t sizes[] = { 127, 128, 129, 200, 2047, 2049, 4095, 4096, 4097, 65535, 65536, 65537, 131077 };
	static const size_t offs[] = { 64, 65, 97, 4000 };
	static const enum dmm_dma_dir dirs[3] = { DMM_DMA_TO_DEVICE, DMM_DMA_FROM_DEVICE, DMM_DMA_BIDIRECTIONAL };
	const struct dmm_constraint above = { 4 * GiB, DMM_PHYS_MAX, 0, 0, 0, 0 };
	static uint8_t want[140000], dev_bytes[140000];
	struct dmm_hosted *h;
	struct dmm_mem *mem;
	struct dmm_swiotlb_opts o;
	struct dmm_swiotlb_stats st;
	struct dmm_device_desc d = tu_desc("nic32", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	uint64_t to_dev = 0, from_dev = 0;
	dmm_pfn_t hi;
	uint8_t *hv;
	(void)state;

	mem = hosted_8g("bounce-copy", &h);
	dmm_swiotlb_opts_default(mem, &o);
	o.initial_bytes = 4 * MiB;
	o.no_transient = 1;
	assert_ok(dmm_swiotlb_init(mem, &o));
	assert_ok(dmm_device_create(mem, &d, NULL, &dev));
	assert_ok(dmm_page_alloc(mem, 6, &above, 0, &hi)); /* 256 KiB */
	hv = dmm_pfn_to_virt(mem, hi);
	for (size_t si = 0; si < DMM_ARRAY_SIZE(sizes); si++)
		for (size_t oi = 0; oi < DMM_ARRAY_SIZE(offs); oi++)
			for (unsigned di = 0; di < 3; di++) {
				size_t len = sizes[si], off = offs[oi];
				enum dmm_dma_dir dir = dirs[di];
				unsigned seed = (unsigned)(si * 16 + oi * 3 + di);
				dmm_dma_addr_t bus;
				uint8_t *bv;

				memset(hv, 0x3c, 64 * 4096);
				fill(want, len, seed);
				memcpy(hv + off, want, len);
				bus = dmm_dma_map_phys(dev, dmm_pfn_to_phys(hi) + off, len, dir);
				assert_ok(dmm_dma_mapping_error(dev, bus));
				assert_true(dmm_swiotlb_is_bounce(mem, bus));
				bv = (uint8_t *)dmm_pfn_to_virt(mem, dmm_phys_to_pfn(bus)) + (bus & (DMM_PAGE_SIZE - 1));
				if (dir != DMM_DMA_FROM_DEVICE) {
					assert_memory_equal(bv, want, len);
					to_dev += len;
				}
				if (dir != DMM_DMA_TO_DEVICE) {
					fill(dev_bytes, len, seed + 500);
					memcpy(bv, dev_bytes, len); /* the device writes */
					from_dev += len;
				}
				dmm_dma_unmap_phys(dev, bus, len, dir);
				assert_memory_equal(hv + off, dir == DMM_DMA_TO_DEVICE ? want : dev_bytes, len);
				for (size_t i = 0; i < off; i++)
					assert_int_equal(hv[i], 0x3c);
				for (size_t i = off + len; i < 64 * 4096; i++)
					assert_int_equal(hv[i], 0x3c);
				assert_ok(dmm_swiotlb_check(mem));
			}
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.bounced_to_device, to_dev);
	assert_int_equal(st.bounced_from_device, from_dev);
	assert_int_equal(st.used_slots, 0);
	assert_ok(dmm_device_destroy(dev));
	assert_ok(dmm_page_free(mem, hi, 6));
	assert_checks(mem);
	dmm_hosted_mem_destroy(h, mem);
}

/*
 * An unmap at an address inside a bounced mapping (not the one the map
 * returned) is refused: nothing copied back, nothing freed, counted as an
 * invalid call of the memory map and of the device. A sync of a sub-range
 * is still fine, and the real unmap then copies everything back. Both the
 * short path (two slots) and the general path (four).
 */
static void test_unmap_inside_mapping_refused(void **state)
{
	(void)state;
	for (int coherent = 0; coherent <= 1; coherent++) {
		static const size_t lens[2] = { 4096, 8192 };
		struct hwenv e;
		struct dmm_sim_dev sd;
		struct dmm_swiotlb_opts o;
		struct dmm_swiotlb_stats st0, st1;
		struct dmm_mem_info mi0, mi1;
		struct dmm_dma_stats ds0, ds1;
		static uint8_t mine[8192], dev_bytes[8192], got[8192];
		dmm_phys_t pa;

		cache_opts(&o, 1 * MiB);
		cache_env(&e, &sd, coherent, &o);
		pa = high_buffer(&e, 2);
		for (int li = 0; li < 2; li++) {
			size_t len = lens[li], half = len / 2;
			dmm_dma_addr_t bus;

			fill(mine, len, 7);
			assert_ok(dmm_hw_cpu_write(e.hw, pa, mine, len));
			bus = dmm_dma_map_phys(sd.dev, pa, len, DMM_DMA_FROM_DEVICE);
			assert_ok(dmm_dma_mapping_error(sd.dev, bus));
			assert_true(dmm_swiotlb_is_bounce(e.mem, bus));
			fill(dev_bytes, len, 8);
			assert_ok(dmm_hw_dev_write(sd.hw, bus, dev_bytes, len));
			assert_ok(dmm_swiotlb_check(e.mem));
			dmm_swiotlb_get_stats(e.mem, &st0);
			dmm_mem_get_info(e.mem, &mi0);
			dmm_device_get_stats(sd.dev, &ds0);

			dmm_dma_unmap_phys(sd.dev, bus + half, half, DMM_DMA_FROM_DEVICE);
			assert_ok(dmm_swiotlb_check(e.mem));
			dmm_swiotlb_get_stats(e.mem, &st1);
			dmm_mem_get_info(e.mem, &mi1);
			dmm_device_get_stats(sd.dev, &ds1);
			assert_int_equal(st1.used_slots, st0.used_slots); /* still mapped */
			assert_int_equal(st1.unmaps, st0.unmaps);
			assert_int_equal(st1.bounced_from_device, st0.bounced_from_device);
			assert_int_equal(mi1.fail_invalid, mi0.fail_invalid + 1);
			assert_int_equal(ds1.fail_invalid, ds0.fail_invalid + 1);
			assert_ok(dmm_hw_cpu_read(e.hw, pa, got, len));
			assert_memory_equal(got, mine, len); /* nothing copied back */

			/* a sync may name a part of the mapping */
			dmm_dma_sync_single_for_cpu(sd.dev, bus + half, half, DMM_DMA_FROM_DEVICE);
			assert_ok(dmm_hw_cpu_read(e.hw, pa, got, len));
			assert_memory_equal(got, mine, half);
			assert_memory_equal(got + half, dev_bytes + half, half);
			assert_ok(dmm_swiotlb_check(e.mem));

			/* the real unmap: everything back, the slots free */
			dmm_dma_unmap_phys(sd.dev, bus, len, DMM_DMA_FROM_DEVICE);
			assert_ok(dmm_hw_cpu_read(e.hw, pa, got, len));
			assert_memory_equal(got, dev_bytes, len);
			assert_ok(dmm_swiotlb_check(e.mem));
			dmm_swiotlb_get_stats(e.mem, &st1);
			assert_int_equal(st1.used_slots, 0);
			assert_int_equal(st1.maps, st1.unmaps);
		}
		assert_ok(dmm_page_free(e.mem, dmm_phys_to_pfn(pa), 2));
		assert_ok(dmm_sim_device_destroy(&sd));
		hwenv_destroy(&e);
	}
}

/*
 * A transient pool never takes the pools past max_bytes: when its usual
 * size (64 KiB rounding) does not fit under the limit, a page-rounded one
 * does, and once not even that fits, the map fails as "bounce buffer full".
 */
static void test_transient_pool_within_max_bytes(void **state)
{
	struct hwenv e;
	struct dmm_sim_dev sd;
	struct dmm_device_desc d = tu_desc("dma32", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_swiotlb_opts o;
	struct dmm_swiotlb_stats st;
	dmm_dma_addr_t bus[10];
	dmm_phys_t pa;
	(void)state;

	hwenv_create(&e, "pc", -1);
	dmm_swiotlb_opts_default(e.mem, &o);
	o.initial_bytes = 64 * KiB; /* 32 slots: 8 mappings of 8 KiB */
	o.grow_threshold_pct = 100;
	o.max_bytes = 80 * KiB;
	o.transient_idle_ns = 1;
	assert_ok(dmm_swiotlb_init(e.mem, &o));
	assert_ok(dmm_sim_device_create(e.mem, e.hw, &d, NULL, &sd));
	pa = high_buffer(&e, 4);
	for (int i = 0; i < 9; i++) { /* the 9th needs a transient pool */
		bus[i] = dmm_dma_map_phys(sd.dev, pa, 8192, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(sd.dev, bus[i]));
		assert_ok(dmm_swiotlb_check(e.mem));
	}
	dmm_swiotlb_get_stats(e.mem, &st);
	assert_int_equal(st.transient_pools, 1);
	assert_true(st.total_slots * o.slot_size <= o.max_bytes);
	assert_true(st.total_slots * o.slot_size > 64 * KiB);
	/* 4 slots free at most in the transient pool, and no room for another */
	bus[9] = dmm_dma_map_phys(sd.dev, pa, 16384, DMM_DMA_TO_DEVICE);
	assert_rc(dmm_dma_mapping_error(sd.dev, bus[9]), -DMM_ENOSPC);
	assert_ok(dmm_swiotlb_check(e.mem));
	dmm_swiotlb_get_stats(e.mem, &st);
	assert_int_equal(st.transient_pools, 1);
	assert_true(st.total_slots * o.slot_size <= o.max_bytes);
	for (int i = 0; i < 9; i++)
		dmm_dma_unmap_phys(sd.dev, bus[i], 8192, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_swiotlb_check(e.mem));
	dmm_swiotlb_trim(e.mem);
	dmm_swiotlb_get_stats(e.mem, &st);
	assert_int_equal(st.used_slots, 0);
	assert_ok(dmm_page_free(e.mem, dmm_phys_to_pfn(pa), 4));
	assert_ok(dmm_sim_device_destroy(&sd));
	hwenv_destroy(&e);

	/* a limit with room: the usual 64 KiB-rounded transient pool */
	hwenv_create(&e, "pc", -1);
	o.max_bytes = 256 * KiB;
	assert_ok(dmm_swiotlb_init(e.mem, &o));
	assert_ok(dmm_sim_device_create(e.mem, e.hw, &d, NULL, &sd));
	pa = high_buffer(&e, 4);
	for (int i = 0; i < 9; i++) {
		bus[i] = dmm_dma_map_phys(sd.dev, pa, 8192, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(sd.dev, bus[i]));
	}
	dmm_swiotlb_get_stats(e.mem, &st);
	assert_int_equal(st.transient_pools, 1);
	assert_int_equal(st.total_slots * o.slot_size, 128 * KiB);
	for (int i = 0; i < 9; i++)
		dmm_dma_unmap_phys(sd.dev, bus[i], 8192, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_swiotlb_check(e.mem));
	assert_ok(dmm_page_free(e.mem, dmm_phys_to_pfn(pa), 4));
	assert_ok(dmm_sim_device_destroy(&sd));
	hwenv_destroy(&e);
}

/* A hosted machine of 64 MiB from 0 and 64 MiB above 4 GiB (DMA32 below
 * 4 GiB: a 32-bit device bounces the high half), on the hosted platform
 * *@p as the test changed it (*@h made by hooked_platform). */
static void hooked_platform(struct dmm_machine *m, struct dmm_hosted **h, struct dmm_platform *p)
{
	tu_machine(m, "swiotlb-hooks");
	tu_add_ram(m, 0, 64 * MiB);
	tu_add_ram(m, 4 * GiB, 64 * MiB);
	m->dma32_limit = 4 * GiB;
	assert_ok(dmm_hosted_create(m, 2, DMM_LOG_WARN, h));
	*p = *dmm_hosted_platform(*h);
}

static dmm_phys_t hooked_high_pages(struct dmm_mem *mem, unsigned order)
{
	const struct dmm_constraint above = { 4 * GiB, DMM_PHYS_MAX, 0, 0, 0, 0 };
	dmm_pfn_t p;
	assert_ok(dmm_page_alloc(mem, order, &above, 0, &p));
	return dmm_pfn_to_phys(p);
}

static uint64_t frozen_now = 1000000000;
static uint64_t frozen_clock(void *ctx)
{
	(void)ctx;
	return __atomic_load_n(&frozen_now, __ATOMIC_RELAXED);
}

/*
 * An idle transient pool goes back only after transient_idle_ns, also with
 * a clock that did not move since the unmap that emptied it (a coarse or
 * frozen clock): no wrap of now - idle.
 */
static void test_transient_idle_with_frozen_clock(void **state)
{
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_platform p;
	struct dmm_mem *mem;
	struct dmm_swiotlb_opts o;
	struct dmm_swiotlb_stats st;
	struct dmm_device_desc d = tu_desc("nic32", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	dmm_dma_addr_t bus[9];
	dmm_phys_t pa;
	(void)state;

	hooked_platform(&m, &h, &p);
	p.now_ns = frozen_clock;
	assert_ok(dmm_mem_create(&m, &p, &mem));
	dmm_swiotlb_opts_default(mem, &o);
	o.initial_bytes = 64 * KiB;
	o.grow_threshold_pct = 100;
	o.transient_idle_ns = 1000 * 1000 * 1000;
	assert_ok(dmm_swiotlb_init(mem, &o));
	assert_ok(dmm_device_create(mem, &d, NULL, &dev));
	pa = hooked_high_pages(mem, 4);
	for (int i = 0; i < 9; i++) { /* the 9th adds a transient pool */
		bus[i] = dmm_dma_map_phys(dev, pa, 8192, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(dev, bus[i]));
	}
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.transient_pools, 1);
	dmm_dma_unmap_phys(dev, bus[8], 8192, DMM_DMA_TO_DEVICE); /* idle now (and a trim) */
	assert_ok(dmm_swiotlb_check(mem));
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.transient_pools, 1);
	assert_int_equal(st.transient_released, 0);
	dmm_swiotlb_trim(mem); /* the same clock reading */
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.transient_pools, 1);
	__atomic_fetch_add(&frozen_now, o.transient_idle_ns / 2, __ATOMIC_RELAXED);
	dmm_swiotlb_trim(mem);
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.transient_pools, 1);
	assert_ok(dmm_swiotlb_check(mem));
	__atomic_fetch_add(&frozen_now, o.transient_idle_ns / 2, __ATOMIC_RELAXED);
	dmm_swiotlb_trim(mem); /* idle for transient_idle_ns: released */
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.transient_pools, 0);
	assert_int_equal(st.transient_released, 1);
	assert_ok(dmm_swiotlb_check(mem));
	for (int i = 0; i < 8; i++)
		dmm_dma_unmap_phys(dev, bus[i], 8192, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_swiotlb_check(mem));
	assert_ok(dmm_page_free(mem, dmm_phys_to_pfn(pa), 4));
	assert_ok(dmm_device_destroy(dev));
	assert_checks(mem);
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(h);
}

/* test_deferred_served_by_trim */
static int tr_calls, tr_err;
static dmm_dma_addr_t tr_bus;

static void tr_cb(void *arg, dmm_dma_addr_t dma, int err)
{
	(void)arg;
	tr_bus = dma;
	tr_err = err;
	tr_calls++;
}

/*
 * A deferred request larger than any pool's area waits for room under
 * max_bytes for a transient pool of its own, which an idle transient pool
 * holds: once that pool is released (a trim, past transient_idle_ns), the
 * request is tried again and made, with nothing else unmapped.
 */
static void test_deferred_served_by_trim(void **state)
{
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_platform p;
	struct dmm_mem *mem;
	struct dmm_swiotlb_opts o;
	struct dmm_swiotlb_stats st;
	struct dmm_device_desc d = tu_desc("nic32", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	dmm_dma_addr_t bus[5];
	dmm_phys_t pa;
	(void)state;

	hooked_platform(&m, &h, &p);
	p.now_ns = frozen_clock;
	assert_ok(dmm_mem_create(&m, &p, &mem));
	dmm_swiotlb_opts_default(mem, &o);
	o.initial_bytes = 64 * KiB; /* 32 slots, one area */
	o.grow_threshold_pct = 100;
	o.max_bytes = 136 * KiB;    /* the default pool, and a transient pool of 64 or 72 KiB */
	o.transient_idle_ns = 1000 * 1000;
	assert_ok(dmm_swiotlb_init(mem, &o));
	assert_ok(dmm_device_create(mem, &d, NULL, &dev));
	pa = hooked_high_pages(mem, 5);
	for (int i = 0; i < 5; i++) { /* the 5th adds a transient pool of 64 KiB */
		bus[i] = dmm_dma_map_phys(dev, pa, 16 * KiB, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(dev, bus[i]));
	}
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.transient_pools, 1);
	/* 35 slots: more than any area; a pool of its own (72 KiB) fits under
	 * max_bytes only without the transient pool */
	tr_calls = 0;
	assert_ok(dmm_dma_map_phys_deferred(dev, pa, 70 * KiB, DMM_DMA_TO_DEVICE, tr_cb, NULL));
	assert_int_equal(tr_calls, 0);
	for (int i = 0; i < 5; i++)
		dmm_dma_unmap_phys(dev, bus[i], 16 * KiB, DMM_DMA_TO_DEVICE);
	assert_int_equal(tr_calls, 0); /* the transient pool, idle, still counts */
	assert_ok(dmm_swiotlb_check(mem));
	__atomic_fetch_add(&frozen_now, 2 * o.transient_idle_ns, __ATOMIC_RELAXED);
	dmm_swiotlb_trim(mem); /* it goes: room for the request's own */
	assert_int_equal(tr_calls, 1);
	assert_ok(tr_err);
	assert_true(dmm_swiotlb_is_bounce(mem, tr_bus));
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.deferred_queued, 1);
	assert_int_equal(st.deferred_done, 1);
	assert_int_equal(st.transient_pools, 1);
	assert_ok(dmm_swiotlb_check(mem));
	dmm_dma_unmap_phys(dev, tr_bus, 70 * KiB, DMM_DMA_TO_DEVICE);
	__atomic_fetch_add(&frozen_now, 2 * o.transient_idle_ns, __ATOMIC_RELAXED);
	dmm_swiotlb_trim(mem);
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.used_slots, 0);
	assert_int_equal(st.transient_pools, 0);
	assert_ok(dmm_swiotlb_check(mem));
	assert_ok(dmm_page_free(mem, dmm_phys_to_pfn(pa), 5));
	assert_ok(dmm_device_destroy(dev));
	assert_checks(mem);
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(h);
}

/*
 * Races forced through the platform's CPU-section hooks: each CPU's
 * sections are a mutex; a thread says which CPU it is (hook_cpu); the main
 * thread (CPU 0) runs a step of thread B (CPU 1) from inside one of its own
 * hooks, at the moment the race needs, and waits for it: B never waits for
 * the main thread.
 */
static pthread_mutex_t hook_mx[2] = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER };
static __thread unsigned hook_cpu;
static uint64_t hook_clock_ns = 1000000000;
static void (*b_step_fn)(int step);
static pthread_mutex_t b_mx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t b_cv = PTHREAD_COND_INITIALIZER;
static int b_cmd, b_done;

static unsigned hook_enter(void *ctx);
static void hook_exit(void *ctx, unsigned cpu);
static void hook_sync(void *ctx, unsigned cpu, void (*fn)(void *arg), void *arg);

static uint64_t hook_clock(void *ctx)
{
	(void)ctx;
	return __atomic_add_fetch(&hook_clock_ns, 1, __ATOMIC_RELAXED);
}

/* Thread B: runs b_step_fn(step) for each step main asks for; step 0 ends it. */
static void *b_main(void *arg)
{
	(void)arg;
	hook_cpu = 1;
	for (;;) {
		int c;
		pthread_mutex_lock(&b_mx);
		while (!b_cmd)
			pthread_cond_wait(&b_cv, &b_mx);
		c = b_cmd;
		b_cmd = 0;
		pthread_mutex_unlock(&b_mx);
		if (c > 0)
			b_step_fn(c);
		pthread_mutex_lock(&b_mx);
		b_done = 1;
		pthread_cond_broadcast(&b_cv);
		pthread_mutex_unlock(&b_mx);
		if (c < 0)
			return NULL;
	}
}

/* Run step @c on thread B and wait until it is done (-1: B ends). */
static void run_on_b(int c)
{
	pthread_mutex_lock(&b_mx);
	b_cmd = c;
	b_done = 0;
	pthread_cond_broadcast(&b_cv);
	while (!b_done)
		pthread_cond_wait(&b_cv, &b_mx);
	pthread_mutex_unlock(&b_mx);
}

/* What the hooks do besides the sections (set by each test, main thread). */
static void (*hook_on_enter)(void), (*hook_on_exit)(void), (*hook_on_sync)(void);

static unsigned hook_enter(void *ctx)
{
	(void)ctx;
	if (hook_cpu == 0 && hook_on_enter)
		hook_on_enter();
	pthread_mutex_lock(&hook_mx[hook_cpu]);
	return hook_cpu;
}

static void hook_exit(void *ctx, unsigned cpu)
{
	(void)ctx;
	pthread_mutex_unlock(&hook_mx[cpu]);
	if (hook_cpu == 0 && hook_on_exit)
		hook_on_exit();
}

static void hook_sync(void *ctx, unsigned cpu, void (*fn)(void *arg), void *arg)
{
	(void)ctx;
	if (hook_cpu == 0 && hook_on_sync)
		hook_on_sync();
	pthread_mutex_lock(&hook_mx[cpu]);
	fn(arg);
	pthread_mutex_unlock(&hook_mx[cpu]);
}

/* A memory map on the hooked platform (2 CPUs, the stepping clock) and a
 * coherent 32-bit device; thread B started with @step. */
static struct dmm_mem *race_mem(struct dmm_hosted **h, pthread_t *b, void (*step)(int))
{
	struct dmm_machine m;
	struct dmm_platform p;
	struct dmm_mem *mem;

	hooked_platform(&m, h, &p);
	p.cpu_thread_slots = 0;
	p.cpu_fence = NULL;
	p.cpu_enter = hook_enter;
	p.cpu_exit = hook_exit;
	p.cpu_sync = hook_sync;
	p.now_ns = hook_clock;
	p.nr_cpus = 2;
	hook_cpu = 0;
	hook_on_enter = hook_on_exit = hook_on_sync = NULL;
	assert_ok(dmm_mem_create(&m, &p, &mem));
	b_step_fn = step;
	assert_int_equal(pthread_create(b, NULL, b_main, NULL), 0);
	return mem;
}

static void race_end(struct dmm_hosted *h, struct dmm_mem *mem, pthread_t b)
{
	hook_on_enter = hook_on_exit = hook_on_sync = NULL;
	run_on_b(-1);
	assert_int_equal(pthread_join(b, NULL), 0);
	assert_checks(mem);
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(h);
}

/* test_trim_never_frees_a_pool_in_use */
static struct dmm_mem *tr_mem;
static struct dmm_device *tr_dev;
static dmm_phys_t tr_orig;
static dmm_dma_addr_t tr_bus;
static int tr_nsync, tr_seen;

static void tr_step(int step)
{
	if (step == 1) { /* map while the trim is under way */
		tr_bus = dmm_dma_map_phys(tr_dev, tr_orig, 8192, DMM_DMA_FROM_DEVICE);
	} else { /* the device writes, the CPU takes the data */
		uint8_t *b = (uint8_t *)dmm_pfn_to_virt(tr_mem, dmm_phys_to_pfn(tr_bus)) + (tr_bus & (DMM_PAGE_SIZE - 1));
		memset(b, 0xd5, 8192);
		tr_seen = dmm_swiotlb_is_bounce(tr_mem, tr_bus);
		dmm_dma_sync_single_for_cpu(tr_dev, tr_bus, 8192, DMM_DMA_FROM_DEVICE);
	}
}

/* The trimming thread's grace periods: before the index flips B maps,
 * after it B uses its mapping. */
static void tr_on_sync(void)
{
	tr_nsync++;
	if (tr_nsync == 1)
		run_on_b(1);
	else if (tr_nsync == 3)
		run_on_b(2);
}

/*
 * dmm_swiotlb_trim() releases an idle transient pool while another CPU
 * maps: the pool is marked dying before it leaves the index, so the map
 * (which still finds it there) takes its slots elsewhere, and the mapping
 * is found through the whole release (its data reaches the CPU). The
 * transient pool lies below the default one: the first a map tries.
 */
static void test_trim_never_frees_a_pool_in_use(void **state)
{
	const struct dmm_constraint low16 = { 0, 16 * MiB, 0, 0, 0, 0 };
	struct dmm_device_desc d = tu_desc("nic32", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_hosted *h;
	struct dmm_swiotlb_opts o;
	struct dmm_swiotlb_stats st;
	dmm_dma_addr_t bus[9];
	dmm_pfn_t blk;
	pthread_t b;
	uint8_t *orig;
	(void)state;

	tr_mem = race_mem(&h, &b, tr_step);
	dmm_swiotlb_opts_default(tr_mem, &o);
	o.initial_bytes = 64 * KiB; /* 32 slots: 8 mappings of 8 KiB */
	o.grow_threshold_pct = 100;
	o.transient_idle_ns = 1000;
	/* the default pool above 16 MiB, the transient one below */
	assert_ok(dmm_alloc_range(tr_mem, &low16, 16 * MiB >> DMM_PAGE_SHIFT, 0, &blk));
	assert_ok(dmm_swiotlb_init(tr_mem, &o));
	assert_ok(dmm_free_range(tr_mem, blk, 16 * MiB >> DMM_PAGE_SHIFT));
	assert_ok(dmm_device_create(tr_mem, &d, NULL, &tr_dev));
	tr_orig = hooked_high_pages(tr_mem, 4);
	orig = (uint8_t *)dmm_pfn_to_virt(tr_mem, dmm_phys_to_pfn(tr_orig));
	memset(orig, 0, 8192);
	for (int i = 0; i < 9; i++) { /* the 9th adds a transient pool */
		bus[i] = dmm_dma_map_phys(tr_dev, tr_orig + 16384, 8192, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(tr_dev, bus[i]));
	}
	assert_true(bus[8] < bus[0]);
	dmm_dma_unmap_phys(tr_dev, bus[8], 8192, DMM_DMA_TO_DEVICE); /* the transient pool is idle */
	dmm_dma_unmap_phys(tr_dev, bus[0], 8192, DMM_DMA_TO_DEVICE); /* room in the default pool */
	assert_ok(dmm_swiotlb_check(tr_mem));
	dmm_swiotlb_get_stats(tr_mem, &st);
	assert_int_equal(st.transient_pools, 1);
	assert_int_equal(st.used_slots, 7 * 4);

	__atomic_fetch_add(&hook_clock_ns, 10 * 1000 * 1000, __ATOMIC_RELAXED); /* idle long enough */
	tr_nsync = 0;
	hook_on_sync = tr_on_sync;
	dmm_swiotlb_trim(tr_mem);
	hook_on_sync = NULL;
	assert_true(tr_nsync >= 3);
	assert_ok(dmm_dma_mapping_error(tr_dev, tr_bus));
	assert_true(tr_seen); /* found while the pool set changed */
	assert_int_equal(orig[0], 0xd5);
	assert_int_equal(orig[8191], 0xd5);
	assert_ok(dmm_swiotlb_check(tr_mem));
	dmm_swiotlb_get_stats(tr_mem, &st);
	assert_int_equal(st.transient_pools, 0);
	assert_int_equal(st.transient_released, 1);
	assert_int_equal(st.used_slots, 8 * 4);

	memset(orig, 0, 8192);
	dmm_dma_unmap_phys(tr_dev, tr_bus, 8192, DMM_DMA_FROM_DEVICE);
	assert_int_equal(orig[4096], 0xd5); /* copied back at unmap too */
	for (int i = 1; i < 8; i++)
		dmm_dma_unmap_phys(tr_dev, bus[i], 8192, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_swiotlb_check(tr_mem));
	dmm_swiotlb_get_stats(tr_mem, &st);
	assert_int_equal(st.used_slots, 0);
	assert_int_equal(st.maps, st.unmaps);
	assert_ok(dmm_page_free(tr_mem, dmm_phys_to_pfn(tr_orig), 4));
	assert_ok(dmm_device_destroy(tr_dev));
	race_end(h, tr_mem, b);
}

/* test_deferred_queue_full_during_retry */
static struct dmm_device *dq_dev;
static dmm_phys_t dq_orig;
static int dq_armed, dq_inject, dq_b_rc, dq_calls;
static dmm_dma_addr_t dq_served[64];
static unsigned dq_nserved;

static void dq_cb(void *arg, dmm_dma_addr_t dma, int err)
{
	(void)arg;
	assert_int_equal(err, 0);
	assert_true(dq_nserved < 64);
	dq_served[dq_nserved++] = dma;
	dq_calls++;
}

static void dq_step(int step)
{
	(void)step;
	dq_b_rc = dmm_dma_map_phys_deferred(dq_dev, dq_orig, 8192, DMM_DMA_TO_DEVICE, dq_cb, (void *)0x5eed);
}

/* The retry took the CPUs' caches back: at its next section B queues. */
static void dq_on_sync(void)
{
	if (dq_armed)
		dq_inject = 1;
}

static void dq_on_enter(void)
{
	if (dq_inject) {
		dq_inject = 0;
		dq_armed = 0;
		run_on_b(1);
	}
}

/*
 * A full queue while its head is being retried: B's request finds no room
 * (the retried request keeps its place) and nothing is written past the
 * queue; every queued request is served later, in order.
 */
static void test_deferred_queue_full_during_retry(void **state)
{
	struct dmm_device_desc d = tu_desc("nic32", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_hosted *h;
	struct dmm_mem *mem;
	struct dmm_swiotlb_opts o;
	struct dmm_swiotlb_stats st;
	dmm_dma_addr_t bus[32];
	unsigned unmapped = 0;
	pthread_t b;
	(void)state;

	mem = race_mem(&h, &b, dq_step);
	dmm_swiotlb_opts_default(mem, &o);
	o.initial_bytes = 64 * KiB; /* 32 slots */
	o.no_transient = 1;
	o.grow_threshold_pct = 100;
	assert_ok(dmm_swiotlb_init(mem, &o));
	assert_ok(dmm_device_create(mem, &d, NULL, &dq_dev));
	dq_orig = hooked_high_pages(mem, 4);
	for (int i = 0; i < 32; i++) {
		bus[i] = dmm_dma_map_phys(dq_dev, dq_orig, 2048, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(dq_dev, bus[i]));
	}
	dq_calls = 0;
	dq_nserved = 0;
	for (int i = 0; i < 32; i++) /* a full queue of 4-slot requests */
		assert_ok(dmm_dma_map_phys_deferred(dq_dev, dq_orig, 8192, DMM_DMA_TO_DEVICE, dq_cb, NULL));
	assert_rc(dmm_dma_map_phys_deferred(dq_dev, dq_orig, 8192, DMM_DMA_TO_DEVICE, dq_cb, NULL), -DMM_ENOSPC);
	assert_ok(dmm_swiotlb_check(mem));

	dq_b_rc = 1;
	dq_armed = 1;
	dq_inject = 0;
	hook_on_sync = dq_on_sync;
	hook_on_enter = dq_on_enter;
	dmm_dma_unmap_phys(dq_dev, bus[unmapped++], 2048, DMM_DMA_TO_DEVICE); /* 1 slot: the head still waits */
	hook_on_sync = NULL;
	hook_on_enter = NULL;
	assert_int_equal(dq_armed, 0); /* B ran in the window */
	assert_rc(dq_b_rc, -DMM_ENOSPC);
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.restricted_pools, 0);
	assert_int_equal(st.deferred_queued, 32);
	assert_int_equal(st.deferred_done, 0);
	assert_int_equal(dq_calls, 0);
	assert_ok(dmm_swiotlb_check(mem));

	/* room comes back: the 32 requests complete */
	while (unmapped < 32 || dq_nserved) {
		if (unmapped < 32)
			dmm_dma_unmap_phys(dq_dev, bus[unmapped++], 2048, DMM_DMA_TO_DEVICE);
		else
			dmm_dma_unmap_phys(dq_dev, dq_served[--dq_nserved], 8192, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_swiotlb_check(mem));
	}
	assert_int_equal(dq_calls, 32);
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.deferred_done, 32);
	assert_int_equal(st.used_slots, 0);
	assert_ok(dmm_page_free(mem, dmm_phys_to_pfn(dq_orig), 4));
	assert_ok(dmm_device_destroy(dq_dev));
	race_end(h, mem, b);
}

/* test_deferred_per_device_order */
static char dd_log[16];
static unsigned dd_nlog;
static dmm_dma_addr_t dd_bus[4];

static void dd_cb(void *arg, dmm_dma_addr_t dma, int err)
{
	unsigned k = (unsigned)(uintptr_t)arg;
	assert_int_equal(err, 0);
	assert_true(k < 4 && dd_nlog < sizeof(dd_log) - 1);
	dd_bus[k] = dma;
	dd_log[dd_nlog++] = (char)('0' + k);
}

/*
 * Deferred requests of two devices: A waits for its full restricted pool,
 * B for the default pool. A's request at the head of the queue holds up
 * none of B's; B's requests complete in their order (a small one that
 * would fit waits for the larger one queued before it). A request that no
 * pool the device may use could ever hold is refused, not queued.
 */
static void test_deferred_per_device_order(void **state)
{
	struct dmm_device_desc d = tu_desc("nic32", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_platform p;
	struct dmm_mem *mem;
	struct dmm_swiotlb_opts o;
	struct dmm_swiotlb_stats st;
	struct dmm_mem_info mi0, mi1;
	struct dmm_dma_stats ds0, ds1;
	struct dmm_device *a, *b;
	dmm_dma_addr_t ba[8], bb[7], bs[4];
	dmm_phys_t pa;
	(void)state;

	hooked_platform(&m, &h, &p);
	assert_ok(dmm_mem_create(&m, &p, &mem));
	dmm_swiotlb_opts_default(mem, &o);
	o.initial_bytes = 64 * KiB; /* 32 slots */
	o.no_transient = 1;
	o.grow_threshold_pct = 100;
	assert_ok(dmm_swiotlb_init(mem, &o));
	d.name = "A";
	assert_ok(dmm_device_create(mem, &d, NULL, &a));
	d.name = "B";
	assert_ok(dmm_device_create(mem, &d, NULL, &b));
	assert_ok(dmm_swiotlb_restricted_pool(a, 64 * KiB));
	pa = hooked_high_pages(mem, 5);
	for (int i = 0; i < 8; i++) { /* both pools full */
		ba[i] = dmm_dma_map_phys(a, pa, 8192, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(a, ba[i]));
	}
	for (int i = 0; i < 7; i++) {
		bb[i] = dmm_dma_map_phys(b, pa, 8192, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(b, bb[i]));
	}
	for (int i = 0; i < 4; i++) {
		bs[i] = dmm_dma_map_phys(b, pa, 2048, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(b, bs[i]));
	}
	dd_nlog = 0;
	memset(dd_log, 0, sizeof(dd_log));
	assert_ok(dmm_dma_map_phys_deferred(a, pa, 8192, DMM_DMA_TO_DEVICE, dd_cb, (void *)0));
	assert_ok(dmm_dma_map_phys_deferred(b, pa, 8192, DMM_DMA_TO_DEVICE, dd_cb, (void *)1));
	assert_ok(dmm_dma_map_phys_deferred(b, pa, 2048, DMM_DMA_TO_DEVICE, dd_cb, (void *)2));
	assert_int_equal(dd_nlog, 0);
	assert_ok(dmm_swiotlb_check(mem));

	/* one slot back: B's 4-slot request still waits, its 1-slot one behind it */
	dmm_dma_unmap_phys(b, bs[0], 2048, DMM_DMA_TO_DEVICE);
	assert_int_equal(dd_nlog, 0);
	assert_ok(dmm_swiotlb_check(mem));
	/* four more: both of B's, in order, past A's */
	dmm_dma_unmap_phys(b, bb[0], 8192, DMM_DMA_TO_DEVICE);
	assert_string_equal(dd_log, "12");
	assert_ok(dmm_swiotlb_check(mem));
	dmm_dma_unmap_phys(a, ba[0], 8192, DMM_DMA_TO_DEVICE);
	assert_string_equal(dd_log, "120");
	assert_ok(dmm_swiotlb_check(mem));
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.deferred_queued, 3);
	assert_int_equal(st.deferred_done, 3);

	/* 40 slots: more than any area of either pool, and no transient pool */
	dmm_mem_get_info(mem, &mi0);
	dmm_device_get_stats(a, &ds0);
	assert_rc(dmm_dma_map_phys_deferred(a, pa, 80 * KiB, DMM_DMA_TO_DEVICE, dd_cb, (void *)3), -DMM_EINVAL);
	dmm_device_get_stats(a, &ds1);
	assert_int_equal(ds1.fail_invalid, ds0.fail_invalid + 1);
	assert_rc(dmm_dma_map_phys_deferred(b, pa, 80 * KiB, DMM_DMA_TO_DEVICE, dd_cb, (void *)3), -DMM_EINVAL);
	dmm_mem_get_info(mem, &mi1);
	assert_int_equal(mi1.fail_invalid, mi0.fail_invalid + 2);
	assert_int_equal(dd_nlog, 3);
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.deferred_queued, 3);
	assert_ok(dmm_swiotlb_check(mem));

	dmm_dma_unmap_phys(a, dd_bus[0], 8192, DMM_DMA_TO_DEVICE);
	dmm_dma_unmap_phys(b, dd_bus[1], 8192, DMM_DMA_TO_DEVICE);
	dmm_dma_unmap_phys(b, dd_bus[2], 2048, DMM_DMA_TO_DEVICE);
	for (int i = 1; i < 8; i++)
		dmm_dma_unmap_phys(a, ba[i], 8192, DMM_DMA_TO_DEVICE);
	for (int i = 1; i < 7; i++)
		dmm_dma_unmap_phys(b, bb[i], 8192, DMM_DMA_TO_DEVICE);
	for (int i = 1; i < 4; i++)
		dmm_dma_unmap_phys(b, bs[i], 2048, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_swiotlb_check(mem));
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.used_slots, 0);
	assert_ok(dmm_page_free(mem, dmm_phys_to_pfn(pa), 5));
	assert_ok(dmm_device_destroy(b));
	assert_ok(dmm_device_destroy(a));
	assert_checks(mem);
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(h);
}

/* test_deferred_no_lost_wakeup */
static struct dmm_device *lw_dev;
static dmm_dma_addr_t lw_bus[32];
static int lw_armed, lw_exits = -1, lw_calls;

static void lw_cb(void *arg, dmm_dma_addr_t dma, int err)
{
	(void)arg;
	assert_int_equal(err, 0);
	lw_bus[0] = dma;
	lw_calls++;
}

static void lw_step(int step)
{
	(void)step;
	dmm_dma_unmap_phys(lw_dev, lw_bus[0], 2048, DMM_DMA_TO_DEVICE);
}

/* The failing attempt takes the CPUs' caches back (a sync), then leaves its
 * last sections: right after, B unmaps. */
static void lw_on_sync(void)
{
	if (lw_armed && lw_exits < 0)
		lw_exits = 0;
}

static void lw_on_exit(void)
{
	if (lw_armed && lw_exits >= 0 && ++lw_exits == 2) {
		lw_armed = 0;
		run_on_b(1);
	}
}

/*
 * A slot freed between a deferred request's failed attempt and its
 * queueing: the unmap sees no request to serve, so the request itself
 * tries again once queued, and completes at once.
 */
static void test_deferred_no_lost_wakeup(void **state)
{
	struct dmm_device_desc d = tu_desc("nic32", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_hosted *h;
	struct dmm_mem *mem;
	struct dmm_swiotlb_opts o;
	struct dmm_swiotlb_stats st;
	dmm_phys_t pa;
	pthread_t b;
	(void)state;

	mem = race_mem(&h, &b, lw_step);
	dmm_swiotlb_opts_default(mem, &o);
	o.initial_bytes = 64 * KiB; /* 32 slots */
	o.no_transient = 1;
	o.grow_threshold_pct = 100;
	assert_ok(dmm_swiotlb_init(mem, &o));
	assert_ok(dmm_device_create(mem, &d, NULL, &lw_dev));
	pa = hooked_high_pages(mem, 4);
	for (int i = 0; i < 32; i++) {
		lw_bus[i] = dmm_dma_map_phys(lw_dev, pa, 2048, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(lw_dev, lw_bus[i]));
	}
	lw_calls = 0;
	lw_exits = -1;
	lw_armed = 1;
	hook_on_sync = lw_on_sync;
	hook_on_exit = lw_on_exit;
	assert_ok(dmm_dma_map_phys_deferred(lw_dev, pa, 2048, DMM_DMA_TO_DEVICE, lw_cb, NULL));
	hook_on_sync = NULL;
	hook_on_exit = NULL;
	assert_int_equal(lw_armed, 0); /* B unmapped in the window */
	assert_int_equal(lw_calls, 1);
	assert_true(dmm_swiotlb_is_bounce(mem, lw_bus[0]));
	assert_ok(dmm_swiotlb_check(mem));
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.deferred_queued, 1);
	assert_int_equal(st.deferred_done, 1);
	assert_int_equal(st.used_slots, 32);
	for (int i = 0; i < 32; i++)
		dmm_dma_unmap_phys(lw_dev, lw_bus[i], 2048, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_swiotlb_check(mem));
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.used_slots, 0);
	assert_ok(dmm_page_free(mem, dmm_phys_to_pfn(pa), 4));
	assert_ok(dmm_device_destroy(lw_dev));
	race_end(h, mem, b);
}

/*
 * An untrusted device that does not snoop the CPU's caches reads memory:
 * the zeros written around its buffer must be there, not only in the
 * CPU's cache, or it reads what an earlier mapping of another device left
 * in those slots. Coherent and not, every direction; the earlier mapping
 * (a trusted device's secret, 3 slots) goes back to the area, so the
 * untrusted mapping takes the same slots.
 */
static void test_untrusted_noncoherent_sees_zeros(void **state)
{
	static const enum dmm_dma_dir dirs[3] = { DMM_DMA_TO_DEVICE, DMM_DMA_FROM_DEVICE, DMM_DMA_BIDIRECTIONAL };
	(void)state;
	for (int coherent = 0; coherent <= 1; coherent++)
		for (int di = 0; di < 3; di++) {
			struct hwenv e;
			struct dmm_sim_dev u, t;
			struct dmm_device_desc ud = tu_desc("thunderbolt", 64, coherent, DMM_DEVICE_CMA_NONE);
			struct dmm_device_desc td = tu_desc("dma32", 32, coherent, DMM_DEVICE_CMA_NONE);
			struct dmm_swiotlb_opts o;
			struct dmm_swiotlb_stats st;
			static uint8_t secret[6000], got[2048];
			dmm_phys_t hi;
			dmm_pfn_t p;
			dmm_dma_addr_t b1, bus;

			hwenv_create(&e, "pc", -1);
			dmm_swiotlb_opts_default(e.mem, &o);
			o.initial_bytes = 64 * KiB;
			o.nr_areas = 1;
			assert_ok(dmm_swiotlb_init(e.mem, &o));
			ud.untrusted = 1;
			assert_ok(dmm_sim_device_create(e.mem, e.hw, &ud, NULL, &u));
			assert_ok(dmm_sim_device_create(e.mem, e.hw, &td, NULL, &t));
			hi = high_buffer(&e, 1);
			memset(secret, 0x5e, sizeof(secret));
			assert_ok(dmm_hw_cpu_write(e.hw, hi, secret, sizeof(secret)));
			b1 = dmm_dma_map_phys(t.dev, hi, sizeof(secret), DMM_DMA_TO_DEVICE);
			assert_ok(dmm_dma_mapping_error(t.dev, b1));
			dmm_dma_unmap_phys(t.dev, b1, sizeof(secret), DMM_DMA_TO_DEVICE);
			assert_all_checks(e.mem);

			assert_ok(dmm_page_alloc(e.mem, 0, NULL, 0, &p));
			memset(secret, 0x11, 16);
			assert_ok(dmm_hw_cpu_write(e.hw, dmm_pfn_to_phys(p) + 100, secret, 16));
			bus = dmm_dma_map_page(u.dev, p, 100, 16, dirs[di]);
			assert_ok(dmm_dma_mapping_error(u.dev, bus));
			assert_true(dmm_swiotlb_is_bounce(e.mem, bus));
			assert_int_equal(bus & ~(uint64_t)2047, b1 & ~(uint64_t)2047); /* the secret's slot */
			assert_all_checks(e.mem);
			assert_ok(dmm_hw_dev_read(u.hw, bus - (bus & 2047), got, 2048));
			for (size_t i = 0; i < 2048; i++) {
				size_t at = i - (bus & 2047);
				uint8_t want = dirs[di] != DMM_DMA_FROM_DEVICE && i >= (bus & 2047) && at < 16 ? 0x11 : 0;
				if (got[i] != want)
					fail_msg("coherent %d dir %d: slot byte %zu is %#x, not %#x", coherent, (int)dirs[di], i,
						 got[i], want);
			}
			dmm_dma_unmap_page(u.dev, bus, 16, dirs[di]);
			dmm_swiotlb_get_stats(e.mem, &st);
			assert_int_equal(st.used_slots, 0);
			assert_ok(dmm_page_free(e.mem, p, 0));
			assert_ok(dmm_page_free(e.mem, dmm_phys_to_pfn(hi), 1));
			assert_ok(dmm_sim_device_destroy(&u));
			assert_ok(dmm_sim_device_destroy(&t));
			hwenv_destroy(&e);
		}
}

/*
 * A device with a deferred mapping queued cannot be destroyed: the
 * request would be made later for a device that is gone (its record freed,
 * maybe another device's by then) and its slots held by nobody. The
 * destroy is refused (-DMM_EBUSY, nothing changed); once the callback has
 * run and the mapping is unmapped, it goes through and every slot is back.
 */
static int gone_calls;
static dmm_dma_addr_t gone_bus;
static struct dmm_device *gone_dev;
static int gone_destroy_rc;

static void gone_cb(void *arg, dmm_dma_addr_t dma, int err)
{
	(void)arg;
	assert_int_equal(err, 0);
	gone_bus = dma;
	gone_calls++;
	gone_destroy_rc = dmm_device_destroy(gone_dev); /* its own request is still queued */
}

static void test_deferred_device_destroy_refused(void **state)
{
	const struct dmm_constraint above = { 4 * GiB, DMM_PHYS_MAX, 0, 0, 0, 0 };
	struct dmm_hosted *h;
	struct dmm_mem *mem;
	struct dmm_swiotlb_opts o;
	struct dmm_swiotlb_stats st;
	struct dmm_device_desc nd = tu_desc("nic32", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *a, *b;
	dmm_dma_addr_t held[64];
	unsigned n = 0;
	dmm_pfn_t hi;
	(void)state;

	mem = hosted_8g("gone", &h);
	dmm_swiotlb_opts_default(mem, &o);
	o.initial_bytes = 64 * KiB;
	o.no_transient = 1;
	o.nr_areas = 1;
	o.grow_threshold_pct = 100;
	assert_ok(dmm_swiotlb_init(mem, &o));
	assert_ok(dmm_page_alloc(mem, 4, &above, 0, &hi));
	assert_ok(dmm_device_create(mem, &nd, NULL, &a));
	assert_ok(dmm_device_create(mem, &nd, NULL, &b));
	for (;;) {
		dmm_dma_addr_t x = dmm_dma_map_page(b, hi, 0, 4096, DMM_DMA_TO_DEVICE);
		if (dmm_dma_mapping_error(b, x))
			break;
		assert_true(n < 64);
		held[n++] = x;
	}
	gone_calls = 0;
	gone_dev = a;
	assert_ok(dmm_dma_map_phys_deferred(a, dmm_pfn_to_phys(hi), 4096, DMM_DMA_TO_DEVICE, gone_cb, NULL));
	assert_int_equal(gone_calls, 0);
	assert_rc(dmm_device_destroy(a), -DMM_EBUSY);
	assert_all_checks(mem);
	/* the unmap serves it: a's mapping, made while a still exists */
	dmm_dma_unmap_page(b, held[--n], 4096, DMM_DMA_TO_DEVICE);
	assert_int_equal(gone_calls, 1);
	assert_rc(gone_destroy_rc, -DMM_EBUSY); /* from its own callback: still queued */
	assert_true(dmm_swiotlb_is_bounce(mem, gone_bus));
	assert_all_checks(mem);
	dmm_dma_unmap_page(a, gone_bus, 4096, DMM_DMA_TO_DEVICE);
	while (n)
		dmm_dma_unmap_page(b, held[--n], 4096, DMM_DMA_TO_DEVICE);
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.used_slots, 0);
	assert_int_equal(st.deferred_queued, 1);
	assert_int_equal(st.deferred_done, 1);
	assert_ok(dmm_device_destroy(a));
	assert_ok(dmm_device_destroy(b));
	assert_all_checks(mem);
	assert_ok(dmm_page_free(mem, hi, 4));
	dmm_hosted_mem_destroy(h, mem);
}

/*
 * A leaked bounce mapping keeps its device's tag even when the device's
 * map and unmap counts agree: a scatterlist's unmap counts an unmap and
 * its map no map. Before, the destroy looked at those counts, gave the
 * tag back, and the next device created got it and could unmap (free) the
 * leaked mapping as its own. (A second unmap, refused, counts as a refused
 * unmap, not as an unmap.)
 */
static void test_leaked_tag_kept_whatever_the_counts(void **state)
{
	const struct dmm_constraint above = { 4 * GiB, DMM_PHYS_MAX, 0, 0, 0, 0 };
	struct dmm_hosted *h;
	struct dmm_mem *mem;
	struct dmm_swiotlb_stats ts;
	struct dmm_dma_stats ds;
	struct dmm_device_desc nd = tu_desc("nic32", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *l1, *l2, *ok, *x;
	dmm_dma_addr_t b1, b2, b;
	struct dmm_sg sg[1];
	uint16_t t1, t2, tok;
	dmm_pfn_t hi;
	(void)state;

	mem = hosted_8g_fixed_pool("tagcount", 1 * MiB, &h);
	assert_ok(dmm_page_alloc(mem, 0, &above, 0, &hi));

	/* a list mapped and unmapped, then a single mapping leaked: 1 map, 1 unmap */
	assert_ok(dmm_device_create(mem, &nd, NULL, &l1));
	t1 = l1->tlb_tag;
	dmm_sg_init(sg, 1);
	dmm_sg_set_phys(&sg[0], dmm_pfn_to_phys(hi) + 512, 256);
	assert_int_equal(dmm_dma_map_sg(l1, sg, 1, DMM_DMA_TO_DEVICE), 1);
	dmm_dma_unmap_sg(l1, sg, 1, DMM_DMA_TO_DEVICE);
	b1 = dmm_dma_map_page(l1, hi, 0, 100, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(l1, b1));
	dmm_device_get_stats(l1, &ds);
	assert_int_equal(ds.maps, ds.unmaps);
	assert_ok(dmm_device_destroy(l1));
	assert_all_checks(mem);

	/* a mapping unmapped twice, then one leaked: 2 maps, 1 unmap, 1
	 * refused */
	assert_ok(dmm_device_create(mem, &nd, NULL, &l2));
	t2 = l2->tlb_tag;
	b = dmm_dma_map_page(l2, hi, 0, 100, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(l2, b));
	dmm_dma_unmap_page(l2, b, 100, DMM_DMA_TO_DEVICE);
	dmm_dma_unmap_page(l2, b, 100, DMM_DMA_TO_DEVICE); /* refused: nothing changes */
	b2 = dmm_dma_map_page(l2, hi, 0, 200, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(l2, b2));
	dmm_device_get_stats(l2, &ds);
	assert_int_equal(ds.maps, 2);
	assert_int_equal(ds.unmaps, 1);
	assert_int_equal(ds.fail_unmap, 1);
	assert_ok(dmm_device_destroy(l2));
	dmm_swiotlb_get_stats(mem, &ts);
	assert_int_equal(ts.used_slots, 2);

	/* a device whose mappings all came back gives its tag back */
	assert_ok(dmm_device_create(mem, &nd, NULL, &ok));
	tok = ok->tlb_tag;
	b = dmm_dma_map_page(ok, hi, 0, 100, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(ok, b));
	dmm_dma_unmap_page(ok, b, 100, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_device_destroy(ok));

	/* every tag handed out once more: never the leaked ones, and the
	 * returned one comes back; nobody frees the leaks */
	{
		bool seen_ok = false;
		for (unsigned i = 0; i < 65535; i++) {
			assert_ok(dmm_device_create(mem, &nd, NULL, &x));
			assert_int_not_equal(x->tlb_tag, t1);
			assert_int_not_equal(x->tlb_tag, t2);
			if (x->tlb_tag == tok && !seen_ok) {
				seen_ok = true;
				dmm_dma_unmap_page(x, b1, 100, DMM_DMA_TO_DEVICE);
				dmm_dma_unmap_page(x, b2, 200, DMM_DMA_TO_DEVICE);
			}
			assert_ok(dmm_device_destroy(x));
		}
		assert_true(seen_ok);
	}
	dmm_swiotlb_get_stats(mem, &ts);
	assert_int_equal(ts.used_slots, 2);
	assert_all_checks(mem);
	dmm_hosted_mem_destroy(h, mem);
}

/*
 * A restricted pool goes with its device. Before, it stayed in the pool
 * set for good: memory lost, and after 63 devices the set (64 pools) was
 * full, so no restricted, transient or grown pool could be added any more;
 * its device pointer stayed too, for a later device at the same address.
 * One that still holds a leaked mapping stays, and no device uses it.
 */
static void test_restricted_pool_goes_with_device(void **state)
{
	const struct dmm_constraint above = { 4 * GiB, DMM_PHYS_MAX, 0, 0, 0, 0 };
	struct dmm_hosted *h;
	struct dmm_mem *mem;
	struct dmm_swiotlb_stats st;
	struct dmm_device_desc nd = tu_desc("nic32", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *a, *b;
	dmm_dma_addr_t x, y, leaked;
	uint64_t free0;
	unsigned maps;
	dmm_pfn_t hi;
	(void)state;

	mem = hosted_8g_fixed_pool("restricted-gone", 256 * KiB, &h);
	assert_ok(dmm_page_alloc(mem, 2, &above, 0, &hi));
	dmm_page_drain_pcp(mem);
	free0 = tu_zone_free_all(mem);
	for (unsigned i = 0; i < 100; i++) {
		assert_ok(dmm_device_create(mem, &nd, NULL, &a));
		assert_ok(dmm_swiotlb_restricted_pool(a, 64 * KiB));
		x = dmm_dma_map_page(a, hi, 0, 100, DMM_DMA_BIDIRECTIONAL);   /* one slot: cached at unmap */
		assert_ok(dmm_dma_mapping_error(a, x));
		y = dmm_dma_map_page(a, hi, 0, 6000, DMM_DMA_TO_DEVICE);      /* three: back to the area */
		assert_ok(dmm_dma_mapping_error(a, y));
		dmm_dma_unmap_page(a, x, 100, DMM_DMA_BIDIRECTIONAL);
		dmm_dma_unmap_page(a, y, 6000, DMM_DMA_TO_DEVICE);
		dmm_swiotlb_get_stats(mem, &st);
		assert_int_equal(st.pools, 2);
		assert_int_equal(st.restricted_pools, 1);
		assert_true(st.cached_slots >= 1);
		assert_ok(dmm_device_destroy(a));
		dmm_swiotlb_get_stats(mem, &st);
		assert_int_equal(st.pools, 1);
		assert_int_equal(st.restricted_pools, 0);
		assert_int_equal(st.used_slots, 0);
		assert_int_equal(st.cached_slots, 0);
		/* the pool's counts stay in the totals */
		assert_int_equal(st.maps, 2 * (i + 1));
		assert_int_equal(st.unmaps, 2 * (i + 1));
		assert_int_equal(st.bounced_to_device, (uint64_t)(100 + 6000) * (i + 1));
		assert_int_equal(st.bounced_from_device, (uint64_t)100 * (i + 1));
		assert_all_checks(mem);
	}
	dmm_page_drain_pcp(mem);
	assert_int_equal(tu_zone_free_all(mem), free0); /* every pool's pages back */

	/* a leaked mapping keeps the pool, which no device may use any more */
	assert_ok(dmm_device_create(mem, &nd, NULL, &a));
	assert_ok(dmm_swiotlb_restricted_pool(a, 64 * KiB));
	leaked = dmm_dma_map_page(a, hi, 0, 100, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(a, leaked));
	assert_ok(dmm_device_destroy(a));
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.pools, 2);
	assert_int_equal(st.restricted_pools, 1);
	assert_int_equal(st.used_slots, 1);
	assert_ok(dmm_device_create(mem, &nd, NULL, &b)); /* (often at a's address) */
	{
		dmm_dma_addr_t held[256];
		for (maps = 0;; maps++) {
			assert_true(maps < 256);
			held[maps] = dmm_dma_map_page(b, hi, 0, 4096, DMM_DMA_TO_DEVICE);
			if (dmm_dma_mapping_error(b, held[maps]))
				break;
		}
		assert_int_equal(maps, 256 * KiB / 4096); /* the default pool only */
		assert_rc(dmm_dma_mapping_error(b, held[maps]), -DMM_ENOSPC);
		while (maps)
			dmm_dma_unmap_page(b, held[--maps], 4096, DMM_DMA_TO_DEVICE);
	}
	assert_ok(dmm_device_destroy(b));
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.used_slots, 1);
	assert_all_checks(mem);
	assert_ok(dmm_page_free(mem, hi, 2));
	dmm_hosted_mem_destroy(h, mem);
}

/*
 * max_bytes bounds all pools together, whenever they are added. A growth
 * step queued while the pools had room for it must not be added when it
 * runs if a transient pool took that room meanwhile. The platform's defer
 * hook here only queues the job; the test runs it when it wants.
 */
static void test_growth_respects_max_bytes(void **state)
{
	const struct dmm_constraint above = { 4 * GiB, DMM_PHYS_MAX, 0, 0, 0, 0 };
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_platform pl;
	struct dmm_mem *mem;
	struct dmm_swiotlb_opts o;
	struct dmm_swiotlb_stats st;
	struct dmm_device_desc nd = tu_desc("nic32", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	dmm_dma_addr_t held[40];
	unsigned n = 0;
	dmm_pfn_t hi;
	(void)state;

	machine_8g(&m, "held-grow");
	assert_ok(dmm_hosted_create(&m, 2, DMM_LOG_WARN, &h));
	pl = *dmm_hosted_platform(h);
	pl.defer = tu_hold_defer;
	pl.defer_flush = tu_hold_flush;
	assert_ok(dmm_mem_create(&m, &pl, &mem));
	tu_held()->jobs = 0;
	dmm_swiotlb_opts_default(mem, &o);
	o.initial_bytes = 64 * KiB; /* 32 slots */
	o.nr_areas = 1;
	o.grow_threshold_pct = 50;
	o.grow_bytes = 256 * KiB;
	o.max_bytes = 320 * KiB;    /* the default pool and one growth step */
	assert_ok(dmm_swiotlb_init(mem, &o));
	assert_ok(dmm_device_create(mem, &nd, NULL, &dev));
	assert_ok(dmm_page_alloc(mem, 4, &above, 0, &hi));

	/* past half full: a growth step is queued (it would fit now) */
	for (; n < 32; n++) {
		held[n] = dmm_dma_map_page(dev, hi, 0, 2048, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(dev, held[n]));
	}
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.grow_queued, 1);
	assert_int_equal(tu_held()->jobs, 1);
	/* full: a transient pool on the spot takes part of that room */
	held[n] = dmm_dma_map_page(dev, hi, 0, 2048, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(dev, held[n]));
	n++;
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.transient_created, 1);
	assert_int_equal(st.total_slots * 2048, 64 * KiB + 64 * KiB);
	/* the growth step runs now: it no longer fits */
	tu_hold_flush(NULL);
	dmm_swiotlb_get_stats(mem, &st);
	assert_true(st.total_slots * 2048 <= o.max_bytes);
	assert_int_equal(st.grow_done, 0);
	assert_ok(dmm_swiotlb_check(mem));
	assert_checks(mem);

	while (n)
		dmm_dma_unmap_page(dev, held[--n], 2048, DMM_DMA_TO_DEVICE);
	tu_hold_flush(NULL);
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.used_slots, 0);
	assert_ok(dmm_swiotlb_check(mem));
	assert_ok(dmm_device_destroy(dev));
	assert_ok(dmm_page_free(mem, hi, 4));
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(h);
}

/*
 * The bounce buffer's cache maintenance stays inside the mapping a call
 * names. A non-coherent device's unmap of a larger size than its map's, a
 * sync running past its mapping's end, an unmap inside it (refused), or a
 * sync after its unmap (nothing to sync) used to invalidate the lines
 * after it: there, a coherent device's TO_DEVICE bounce buffer held its
 * data only in the CPU's cache (a coherent device snoops, nothing is
 * cleaned), and the device then read what memory held before. Its data
 * must survive every one of those calls; the non-coherent device's own
 * copy back is still right.
 */
static void test_bad_unmap_or_sync_keeps_neighbour_lines(void **state)
{
	(void)state;
	for (int mode = 0; mode < 5; mode++) {
		struct hwenv e;
		struct dmm_sim_dev n, c;
		struct dmm_device_desc nd = tu_desc("nc32", 32, 0, DMM_DEVICE_CMA_NONE);
		struct dmm_device_desc cd = tu_desc("c32", 32, 1, DMM_DEVICE_CMA_NONE);
		struct dmm_swiotlb_opts o;
		struct dmm_swiotlb_stats st;
		static uint8_t want[2048], mine[2048], got[2048];
		dmm_phys_t hi;
		dmm_dma_addr_t bn, bc;
		bool unmapped = false;

		hwenv_create(&e, "pc", -1);
		dmm_swiotlb_opts_default(e.mem, &o);
		o.initial_bytes = 64 * KiB;
		o.nr_areas = 1;
		assert_ok(dmm_swiotlb_init(e.mem, &o));
		assert_ok(dmm_sim_device_create(e.mem, e.hw, &nd, NULL, &n));
		assert_ok(dmm_sim_device_create(e.mem, e.hw, &cd, NULL, &c));
		hi = high_buffer(&e, 2);
		bn = dmm_dma_map_phys(n.dev, hi, 2048, DMM_DMA_FROM_DEVICE);
		assert_ok(dmm_dma_mapping_error(n.dev, bn));
		fill(want, sizeof(want), 40);
		assert_ok(dmm_hw_cpu_write(e.hw, hi + 8192, want, sizeof(want)));
		bc = dmm_dma_map_phys(c.dev, hi + 8192, 2048, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(c.dev, bc));
		assert_int_equal(bc, bn + 2048); /* the next slot */
		fill(mine, sizeof(mine), 41);
		assert_ok(dmm_hw_dev_write(n.hw, bn, mine, sizeof(mine)));

		switch (mode) {
		case 0: /* another size: still ends the mapping, copies back its 2048 bytes */
			dmm_dma_unmap_phys(n.dev, bn, 4096, DMM_DMA_FROM_DEVICE);
			unmapped = true;
			break;
		case 1: /* runs past the end: nothing */
			dmm_dma_sync_single_for_cpu(n.dev, bn + 1024, 2048, DMM_DMA_FROM_DEVICE);
			break;
		case 2: /* across the end, a few bytes */
			dmm_dma_sync_single_for_cpu(n.dev, bn + 2000, 100, DMM_DMA_FROM_DEVICE);
			break;
		case 3: /* inside the mapping: refused */
			dmm_dma_unmap_phys(n.dev, bn + 1024, 2048, DMM_DMA_FROM_DEVICE);
			break;
		case 4: /* a sync after the unmap */
			dmm_dma_unmap_phys(n.dev, bn, 2048, DMM_DMA_FROM_DEVICE);
			dmm_dma_sync_single_for_cpu(n.dev, bn, 4096, DMM_DMA_FROM_DEVICE);
			unmapped = true;
			break;
		}
		assert_all_checks(e.mem);
		assert_ok(dmm_hw_dev_read(c.hw, bc, got, sizeof(got)));
		for (size_t i = 0; i < sizeof(got); i++)
			if (got[i] != want[i])
				fail_msg("mode %d: the coherent device's byte %zu is %#x, not %#x", mode, i, got[i], want[i]);
		if (!unmapped)
			dmm_dma_unmap_phys(n.dev, bn, 2048, DMM_DMA_FROM_DEVICE);
		assert_ok(dmm_hw_cpu_read(e.hw, hi, got, sizeof(got)));
		if (memcmp(got, mine, sizeof(mine)))
			fail_msg("mode %d: the non-coherent device's bytes did not come back", mode);
		dmm_dma_unmap_phys(c.dev, bc, 2048, DMM_DMA_TO_DEVICE);
		dmm_swiotlb_get_stats(e.mem, &st);
		assert_int_equal(st.used_slots, 0);
		assert_ok(dmm_page_free(e.mem, dmm_phys_to_pfn(hi), 2));
		assert_ok(dmm_sim_device_destroy(&n));
		assert_ok(dmm_sim_device_destroy(&c));
		hwenv_destroy(&e);
	}
}

static int rt_calls, rt_err;
static dmm_dma_addr_t rt_bus;

static void rt_cb(void *arg, dmm_dma_addr_t dma, int err)
{
	(void)arg;
	rt_bus = dma;
	rt_err = err;
	rt_calls++;
}

/* The failure counters of @dev and of the bounce buffers, and the calls
 * refused as invalid. */
struct fail_counts {
	uint64_t full, dev_full, dev_failures, dev_invalid, invalid;
};

static void fail_counts(struct dmm_mem *mem, struct dmm_device *dev, struct fail_counts *c)
{
	struct dmm_swiotlb_stats st;
	struct dmm_dma_stats ds;
	struct dmm_mem_info mi;

	dmm_swiotlb_get_stats(mem, &st);
	dmm_device_get_stats(dev, &ds);
	dmm_mem_get_info(mem, &mi);
	c->full = st.fail_full;
	c->dev_full = ds.fail_bounce_full;
	c->dev_failures = dmm_swiotlb_device_failures(dev);
	c->dev_invalid = ds.fail_invalid;
	c->invalid = mi.fail_invalid;
}

#define assert_fail_counts(mem, dev, full_, invalid_)                           \
	do {                                                                    \
		struct fail_counts c_;                                          \
		fail_counts(mem, dev, &c_);                                     \
		assert_int_equal(c_.full, full_);                               \
		assert_int_equal(c_.dev_full, full_);                           \
		assert_int_equal(c_.dev_failures, full_);                       \
		assert_int_equal(c_.dev_invalid, invalid_);                     \
		assert_int_equal(c_.invalid, invalid_);                         \
	} while (0)

/*
 * A deferred request that finds no room is queued, not failed: neither its
 * first try nor a retry that still finds no room counts as "bounce buffer
 * full" (for the bounce buffers or its device). Only a failure the caller
 * sees counts, once: a map that fails, a request refused as one no pool
 * could ever hold (an invalid call, and no "full").
 */
static void test_deferred_retries_are_no_failures(void **state)
{
	const struct dmm_constraint above = { 4 * GiB, DMM_PHYS_MAX, 0, 0, 0, 0 };
	struct dmm_device_desc nd = tu_desc("nic32", 32, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_hosted *h;
	struct dmm_mem *mem;
	struct dmm_device *dev;
	struct dmm_swiotlb_stats st;
	struct fail_counts c0;
	dmm_dma_addr_t bus[32], b;
	dmm_pfn_t hi;
	(void)state;

	mem = hosted_8g_fixed_pool("retries", 64 * KiB, &h); /* 32 slots */
	assert_ok(dmm_page_alloc(mem, 4, &above, 0, &hi));
	assert_ok(dmm_device_create(mem, &nd, NULL, &dev));
	fail_counts(mem, dev, &c0);
	assert_fail_counts(mem, dev, 0, c0.invalid);
	for (int i = 0; i < 32; i++) {
		bus[i] = dmm_dma_map_page(dev, hi, 0, 2048, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(dev, bus[i]));
	}
	/* a map that fails: counted once */
	b = dmm_dma_map_page(dev, hi, 0, 2048, DMM_DMA_TO_DEVICE);
	assert_rc(dmm_dma_mapping_error(dev, b), -DMM_ENOSPC);
	assert_fail_counts(mem, dev, 1, c0.invalid);

	/* a request of two slots waits: its first try and the retry once
	 * queued count nothing */
	rt_calls = 0;
	assert_ok(dmm_dma_map_phys_deferred(dev, dmm_pfn_to_phys(hi), 4096, DMM_DMA_TO_DEVICE, rt_cb, NULL));
	assert_int_equal(rt_calls, 0);
	assert_fail_counts(mem, dev, 1, c0.invalid);
	/* two slots apart come free: each unmap retries it, in vain */
	dmm_dma_unmap_page(dev, bus[0], 2048, DMM_DMA_TO_DEVICE);
	dmm_dma_unmap_page(dev, bus[2], 2048, DMM_DMA_TO_DEVICE);
	assert_int_equal(rt_calls, 0);
	assert_fail_counts(mem, dev, 1, c0.invalid);
	assert_ok(dmm_swiotlb_check(mem));
	/* the slot between them: made */
	dmm_dma_unmap_page(dev, bus[1], 2048, DMM_DMA_TO_DEVICE);
	assert_int_equal(rt_calls, 1);
	assert_ok(rt_err);
	assert_true(dmm_swiotlb_is_bounce(mem, rt_bus));
	assert_fail_counts(mem, dev, 1, c0.invalid);
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.deferred_queued, 1);
	assert_int_equal(st.deferred_done, 1);
	assert_int_equal(st.used_slots, 31);
	dmm_dma_unmap_page(dev, rt_bus, 4096, DMM_DMA_TO_DEVICE);

	/* 33 slots: more than the pool, no transient pool: refused as
	 * invalid, and no "full" */
	rt_calls = 0;
	assert_rc(dmm_dma_map_phys_deferred(dev, dmm_pfn_to_phys(hi), 66 * KiB, DMM_DMA_TO_DEVICE, rt_cb, NULL),
		  -DMM_EINVAL);
	assert_int_equal(rt_calls, 0);
	assert_fail_counts(mem, dev, 1, c0.invalid + 1);

	for (int i = 3; i < 32; i++)
		dmm_dma_unmap_page(dev, bus[i], 2048, DMM_DMA_TO_DEVICE);
	dmm_swiotlb_get_stats(mem, &st);
	assert_int_equal(st.used_slots, 0);
	assert_int_equal(st.maps, st.unmaps);
	assert_ok(dmm_device_destroy(dev));
	assert_all_checks(mem);
	assert_ok(dmm_page_free(mem, hi, 4));
	dmm_hosted_mem_destroy(h, mem);
}

/* The counters a bounce map moves, of the bounce buffers and of @dev. */
struct bounce_counts {
	uint64_t maps, unmaps, to_device, from_device, used, dev_bounced, dev_low, dev_maps;
};

static void bounce_counts(struct dmm_mem *mem, struct dmm_device *dev, struct bounce_counts *c)
{
	struct dmm_swiotlb_stats st;
	struct dmm_dma_stats ds;

	dmm_swiotlb_get_stats(mem, &st);
	dmm_device_get_stats(dev, &ds);
	c->maps = st.maps;
	c->unmaps = st.unmaps;
	c->to_device = st.bounced_to_device;
	c->from_device = st.bounced_from_device;
	c->used = st.used_slots;
	c->dev_bounced = ds.bounced_maps;
	c->dev_low = ds.low_bounce_bytes;
	c->dev_maps = ds.maps;
}

static void assert_same_bounce_counts(const struct bounce_counts *a, const struct bounce_counts *b)
{
	assert_int_equal(a->maps, b->maps);
	assert_int_equal(a->unmaps, b->unmaps);
	assert_int_equal(a->to_device, b->to_device);
	assert_int_equal(a->from_device, b->from_device);
	assert_int_equal(a->used, b->used);
	assert_int_equal(a->dev_bounced, b->dev_bounced);
	assert_int_equal(a->dev_low, b->dev_low);
	assert_int_equal(a->dev_maps, b->dev_maps);
}

/*
 * A scatterlist whose map fails after some pieces bounced gives their
 * slots back, and the statistics count no bounce: no map or unmap of the
 * bounce buffers, no byte copied in, no bounced map of the device (the
 * caller never had the mapping). The failure is counted, once, for its
 * reason. A list that maps then counts each bounced piece.
 */
static void test_failed_sg_counts_no_bounce(void **state)
{
	const struct dmm_constraint above = { 4 * GiB, DMM_PHYS_MAX, 0, 0, 0, 0 };
	(void)state;
	for (int coherent = 0; coherent <= 1; coherent++) {
		struct dmm_device_desc nd = tu_desc("nic32", 32, coherent, DMM_DEVICE_CMA_NONE);
		struct dmm_hosted *h;
		struct dmm_mem *mem;
		struct dmm_device *dev;
		struct dmm_swiotlb_stats st;
		struct dmm_dma_stats ds0, ds1;
		struct bounce_counts c0, c1;
		struct dmm_sg sg[3];
		dmm_phys_t pa;
		dmm_pfn_t hi;

		mem = hosted_8g_fixed_pool("sg-undo", 64 * KiB, &h); /* 32 slots */
		assert_ok(dmm_page_alloc(mem, 5, &above, 0, &hi));
		pa = dmm_pfn_to_phys(hi);
		assert_ok(dmm_device_create(mem, &nd, NULL, &dev));
		bounce_counts(mem, dev, &c0);
		dmm_device_get_stats(dev, &ds0);

		/* two pieces bounce, the third is of nothing: -DMM_EINVAL */
		dmm_sg_init(sg, 3);
		dmm_sg_set_phys(&sg[0], pa, 3000);
		dmm_sg_set_phys(&sg[1], pa + 8192, 5000);
		dmm_sg_set_phys(&sg[2], pa + 16384, 0);
		assert_rc(dmm_dma_map_sg(dev, sg, 3, DMM_DMA_BIDIRECTIONAL), -DMM_EINVAL);
		bounce_counts(mem, dev, &c1);
		assert_same_bounce_counts(&c0, &c1);
		dmm_device_get_stats(dev, &ds1);
		assert_int_equal(ds1.fail_invalid, ds0.fail_invalid + 1);
		assert_int_equal(ds1.sg_maps, ds0.sg_maps);
		assert_ok(dmm_swiotlb_check(mem));

		/* the third piece cannot get its 33 slots: -DMM_ENOSPC */
		dmm_sg_set_phys(&sg[2], pa + 16384, 66 * KiB);
		assert_rc(dmm_dma_map_sg(dev, sg, 3, DMM_DMA_TO_DEVICE), -DMM_ENOSPC);
		bounce_counts(mem, dev, &c1);
		assert_same_bounce_counts(&c0, &c1);
		dmm_device_get_stats(dev, &ds1);
		assert_int_equal(ds1.fail_bounce_full, ds0.fail_bounce_full + 1);
		dmm_swiotlb_get_stats(mem, &st);
		assert_int_equal(st.fail_full, 1);
		assert_true(st.high_water_slots >= 5); /* (they were taken, for a while) */
		for (int i = 0; i < 3; i++)
			assert_int_equal(sg[i].dma_address, DMM_DMA_MAPPING_ERROR);
		assert_ok(dmm_swiotlb_check(mem));

		/* a list that maps counts its two bounced pieces */
		assert_int_equal(dmm_dma_map_sg(dev, sg, 2, DMM_DMA_TO_DEVICE), 2);
		bounce_counts(mem, dev, &c1);
		assert_int_equal(c1.maps, c0.maps + 2);
		assert_int_equal(c1.to_device, c0.to_device + 8000);
		assert_int_equal(c1.dev_bounced, c0.dev_bounced + 2);
		assert_int_equal(c1.used, 5);
		dmm_dma_unmap_sg(dev, sg, 2, DMM_DMA_TO_DEVICE);
		bounce_counts(mem, dev, &c1);
		assert_int_equal(c1.unmaps, c0.unmaps + 2);
		assert_int_equal(c1.used, 0);
		assert_int_equal(c1.dev_low, 0);

		assert_ok(dmm_device_destroy(dev));
		assert_all_checks(mem);
		assert_ok(dmm_page_free(mem, hi, 5));
		dmm_hosted_mem_destroy(h, mem);
	}
}

/* What an unmap may move: the device's unmaps and refused unmaps, its
 * invalidated bytes, and the bounce buffers' counters. */
struct unmap_counts {
	uint64_t unmaps, fail_unmap, inval, tlb_unmaps, used, cached, from_device;
};

static void unmap_counts(struct dmm_mem *mem, struct dmm_device *dev, struct unmap_counts *c)
{
	struct dmm_swiotlb_stats st;
	struct dmm_dma_stats ds;

	dmm_swiotlb_get_stats(mem, &st);
	dmm_device_get_stats(dev, &ds);
	c->unmaps = ds.unmaps;
	c->fail_unmap = ds.fail_unmap;
	c->inval = ds.cache_inval_bytes;
	c->tlb_unmaps = st.unmaps;
	c->used = st.used_slots;
	c->cached = st.cached_slots;
	c->from_device = st.bounced_from_device;
}

/* @dev's unmap was refused: counted as such, and nothing else moved. */
static void assert_refused(const struct unmap_counts *a, const struct unmap_counts *b)
{
	assert_int_equal(b->unmaps, a->unmaps);
	assert_int_equal(b->fail_unmap, a->fail_unmap + 1);
	assert_int_equal(b->inval, a->inval);
	assert_int_equal(b->tlb_unmaps, a->tlb_unmaps);
	assert_int_equal(b->used, a->used);
	assert_int_equal(b->cached, a->cached);
	assert_int_equal(b->from_device, a->from_device);
}

/*
 * A second unmap of a bounce mapping (its address in a pool, where no
 * mapping is any more) is refused: it counts as a refused unmap
 * (fail_unmap), not as an unmap, and changes nothing, on the express paths
 * and the general one, in every direction, by its device or another. The
 * same for a scatterlist with a bounced piece unmapped twice: refused as a
 * whole, before its direct piece is invalidated again. (Another device's
 * unmap of memory inside a live bounce mapping is that device's own
 * business, test_review: counted as its unmap, the mapping untouched.)
 */
static void test_second_unmap_refused_uncounted(void **state)
{
	const struct dmm_constraint above = { 4 * GiB, DMM_PHYS_MAX, 0, 0, 0, 0 };
	const struct dmm_constraint below = { 0, 4 * GiB, 0, 0, 0, 0 };
	static const enum dmm_dma_dir dirs[3] = { DMM_DMA_TO_DEVICE, DMM_DMA_FROM_DEVICE, DMM_DMA_BIDIRECTIONAL };
	static const size_t lens[2] = { 100, 5000 };
	struct dmm_hosted *h;
	struct dmm_mem *mem;
	struct dmm_device *dev[2];
	struct unmap_counts c0, c1;
	dmm_pfn_t hi, lo;
	(void)state;

	mem = hosted_8g_fixed_pool("second-unmap", 256 * KiB, &h);
	assert_ok(dmm_page_alloc(mem, 1, &above, 0, &hi));
	assert_ok(dmm_page_alloc(mem, 0, &below, 0, &lo));
	for (int coherent = 0; coherent <= 1; coherent++) {
		struct dmm_device_desc nd = tu_desc(coherent ? "coh32" : "nc32", 32, coherent, DMM_DEVICE_CMA_NONE);
		assert_ok(dmm_device_create(mem, &nd, NULL, &dev[coherent]));
	}
	for (int k = 0; k < 2; k++) {
		struct dmm_device *d = dev[k], *other = dev[1 - k];
		for (int di = 0; di < 3; di++)
			for (int li = 0; li < 2; li++) {
				dmm_dma_addr_t b = dmm_dma_map_page(d, hi, 0, lens[li], dirs[di]);
				assert_ok(dmm_dma_mapping_error(d, b));
				assert_true(dmm_swiotlb_is_bounce(mem, b));
				/* another device's unmap of it: its own, the
				 * mapping untouched */
				unmap_counts(mem, other, &c0);
				dmm_dma_unmap_page(other, b, lens[li], dirs[di]);
				unmap_counts(mem, other, &c1);
				assert_int_equal(c1.unmaps, c0.unmaps + 1);
				assert_int_equal(c1.fail_unmap, c0.fail_unmap);
				assert_int_equal(c1.tlb_unmaps, c0.tlb_unmaps);
				assert_int_equal(c1.used, c0.used);
				unmap_counts(mem, d, &c0);
				dmm_dma_unmap_page(d, b, lens[li], dirs[di]);
				unmap_counts(mem, d, &c1);
				assert_int_equal(c1.unmaps, c0.unmaps + 1);
				assert_int_equal(c1.tlb_unmaps, c0.tlb_unmaps + 1);
				assert_int_equal(c1.fail_unmap, c0.fail_unmap);
				/* twice, in any direction, by any device */
				for (int dj = 0; dj < 3; dj++)
					for (int by = 0; by < 2; by++) {
						struct dmm_device *u = by ? other : d;
						unmap_counts(mem, u, &c0);
						dmm_dma_unmap_page(u, b, lens[li], dirs[dj]);
						unmap_counts(mem, u, &c1);
						assert_refused(&c0, &c1);
					}
				assert_ok(dmm_swiotlb_check(mem));
			}
	}
	/* a list of a bounced piece and a direct one, unmapped twice */
	for (int k = 0; k < 2; k++) {
		struct dmm_sg sg[2];
		dmm_sg_init(sg, 2);
		dmm_sg_set_phys(&sg[0], dmm_pfn_to_phys(hi) + 64, 3000);
		dmm_sg_set_phys(&sg[1], dmm_pfn_to_phys(lo), 4096);
		assert_int_equal(dmm_dma_map_sg(dev[k], sg, 2, DMM_DMA_FROM_DEVICE), 2);
		unmap_counts(mem, dev[k], &c0);
		dmm_dma_unmap_sg(dev[k], sg, 2, DMM_DMA_FROM_DEVICE);
		unmap_counts(mem, dev[k], &c1);
		assert_int_equal(c1.unmaps, c0.unmaps + 1);
		assert_int_equal(c1.tlb_unmaps, c0.tlb_unmaps + 1);
		unmap_counts(mem, dev[k], &c0);
		dmm_dma_unmap_sg(dev[k], sg, 2, DMM_DMA_FROM_DEVICE);
		unmap_counts(mem, dev[k], &c1);
		assert_refused(&c0, &c1);
		assert_ok(dmm_swiotlb_check(mem));
	}
	for (int k = 0; k < 2; k++)
		assert_ok(dmm_device_destroy(dev[k]));
	assert_all_checks(mem);
	assert_ok(dmm_page_free(mem, hi, 1));
	assert_ok(dmm_page_free(mem, lo, 0));
	dmm_hosted_mem_destroy(h, mem);
}

/*
 * A caller that changes a bounced piece's length between dmm_dma_map_sg()
 * and dmm_dma_unmap_sg() names another size for that piece's unmap, as a
 * single unmap may: the piece's bounce mapping still ends (its slots come
 * back: no leak), copying back what the unmap names and never more than
 * the mapping's bytes, and DMA debug reports the size. A sync names its
 * range the same way: inside the mapping it copies, past its end nothing.
 */
static void test_sg_piece_length_changed(void **state)
{
	(void)state;
	for (int debug = 0; debug <= 1; debug++)
		for (int coherent = 0; coherent <= 1; coherent++) {
			struct hwenv e;
			struct dmm_sim_dev sd;
			struct dmm_swiotlb_opts o;
			struct dmm_swiotlb_stats st0, st1;
			struct dmm_sg sg[2];
			static uint8_t mine[2][3000], devb[2][3000], got[3000];
			uint64_t c[DMM_NR_DBG_RULES];
			dmm_phys_t pa;

			cache_opts(&o, 1 * MiB);
			cache_env(&e, &sd, coherent, &o);
			if (debug)
				assert_ok(dmm_dma_debug_enable(e.mem, 1));
			pa = high_buffer(&e, 2);
			dmm_sg_init(sg, 2);
			dmm_sg_set_phys(&sg[0], pa + 64, 3000);
			dmm_sg_set_phys(&sg[1], pa + 8192, 2000);
			for (int i = 0; i < 2; i++) {
				fill(mine[i], 3000, 30u + (unsigned)i);
				assert_ok(dmm_hw_cpu_write(e.hw, sg[i].phys, mine[i], 3000));
			}
			assert_int_equal(dmm_dma_map_sg(sd.dev, sg, 2, DMM_DMA_FROM_DEVICE), 2);
			for (int i = 0; i < 2; i++) {
				assert_true(dmm_swiotlb_is_bounce(e.mem, sg[i].dma_address));
				fill(devb[i], 3000, 40u + (unsigned)i);
				assert_ok(dmm_hw_dev_write(sd.hw, sg[i].dma_address, devb[i], sg[i].dma_length));
			}
			dmm_swiotlb_get_stats(e.mem, &st0);
			assert_int_equal(st0.used_slots, 3);
			/* the caller shortens the first piece and lengthens the
			 * second (past its mapping: clamped to it) */
			sg[0].length = 1000;
			sg[1].length = 2500;
			dmm_dma_sync_sg_for_cpu(sd.dev, sg, 2, DMM_DMA_FROM_DEVICE);
			assert_ok(dmm_hw_cpu_read(e.hw, sg[0].phys, got, 3000));
			assert_memory_equal(got, devb[0], 1000); /* inside its mapping: copied */
			assert_memory_equal(got + 1000, mine[0] + 1000, 2000);
			assert_ok(dmm_hw_cpu_read(e.hw, sg[1].phys, got, 2000));
			assert_memory_equal(got, mine[1], 2000); /* past its end: nothing */
			dmm_dma_unmap_sg(sd.dev, sg, 2, DMM_DMA_FROM_DEVICE);
			dmm_swiotlb_get_stats(e.mem, &st1);
			assert_int_equal(st1.used_slots, 0); /* no leak */
			assert_int_equal(st1.unmaps, st0.unmaps + 2);
			assert_int_equal(st1.bounced_from_device, st0.bounced_from_device + 1000 + 1000 + 2000);
			assert_ok(dmm_hw_cpu_read(e.hw, sg[0].phys, got, 3000));
			assert_memory_equal(got, devb[0], 1000);
			assert_memory_equal(got + 1000, mine[0] + 1000, 2000);
			assert_ok(dmm_hw_cpu_read(e.hw, sg[1].phys, got, 2000));
			assert_memory_equal(got, devb[1], 2000);
			assert_ok(dmm_swiotlb_check(e.mem));
			if (debug) {
				dmm_dma_debug_counts(e.mem, c);
				assert_int_equal(c[DMM_DBG_UNMAP_WRONG_SIZE], 2);
				assert_int_equal(dmm_dma_debug_active(e.mem, sd.dev), 0);
			}
			assert_ok(dmm_page_free(e.mem, dmm_phys_to_pfn(pa), 2));
			assert_ok(dmm_sim_device_destroy(&sd));
			hwenv_destroy(&e);
		}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trips_through_bounce),
		cmocka_unit_test(test_full_deferred_transient_growth),
		cmocka_unit_test(test_restricted_and_untrusted),
		cmocka_unit_test(test_packed_objects_bounce),
		cmocka_unit_test(test_two_threads),
		cmocka_unit_test(test_sg_bounce),
		cmocka_unit_test(test_untrusted_sees_only_its_bytes_and_forced),
		cmocka_unit_test(test_policies_and_debug),
		cmocka_unit_test(test_growth_under_burst),
		cmocka_unit_test(test_run_cache_warm_reuse),
		cmocka_unit_test(test_run_cache_keeps_alignment),
		cmocka_unit_test(test_run_cache_drained_when_full),
		cmocka_unit_test(test_run_cache_drained_across_cpus),
		cmocka_unit_test(test_run_cache_two_threads),
		cmocka_unit_test(test_run_cache_double_unmap),
		cmocka_unit_test(test_express_matches_general),
		cmocka_unit_test(test_restricted_pool_first_in_index),
		cmocka_unit_test(test_grown_pool_below_becomes_first),
		cmocka_unit_test(test_express_quick_hands_over),
		cmocka_unit_test(test_many_cpus),
		cmocka_unit_test(test_bounce_tags_unique),
		cmocka_unit_test(test_bulk_copy),
		cmocka_unit_test(test_bounce_copy_sizes),
		cmocka_unit_test(test_bulk_copy_needs_platform),
		cmocka_unit_test(test_unmap_inside_mapping_refused),
		cmocka_unit_test(test_transient_pool_within_max_bytes),
		cmocka_unit_test(test_transient_idle_with_frozen_clock),
		cmocka_unit_test(test_deferred_served_by_trim),
		cmocka_unit_test(test_trim_never_frees_a_pool_in_use),
		cmocka_unit_test(test_deferred_queue_full_during_retry),
		cmocka_unit_test(test_deferred_per_device_order),
		cmocka_unit_test(test_deferred_no_lost_wakeup),
		cmocka_unit_test(test_untrusted_noncoherent_sees_zeros),
		cmocka_unit_test(test_deferred_device_destroy_refused),
		cmocka_unit_test(test_leaked_tag_kept_whatever_the_counts),
		cmocka_unit_test(test_restricted_pool_goes_with_device),
		cmocka_unit_test(test_growth_respects_max_bytes),
		cmocka_unit_test(test_bad_unmap_or_sync_keeps_neighbour_lines),
		cmocka_unit_test(test_deferred_retries_are_no_failures),
		cmocka_unit_test(test_failed_sg_counts_no_bounce),
		cmocka_unit_test(test_second_unmap_refused_uncounted),
		cmocka_unit_test(test_sg_piece_length_changed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

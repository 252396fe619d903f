/* SPDX-License-Identifier: MIT */
/*
 * Bounce buffers against the hardware model: data arrives in every
 * direction through a bounce buffer (the device only ever sees the bounce
 * address), offsets within align_mask are kept, copies happen exactly when
 * the direction needs them, a full pool fails with its reason or defers,
 * transient pools come and go, the default pool grows in the background,
 * restricted pools are never left, and the small-object corruption does not
 * happen under the packed policy because the mapping bounces.
 */
#include <pthread.h>

#include "tu_dma.h"

#include "dma_sim.h"

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
	assert_int_equal(st.fail_full, 2); /* the failed map and the deferred first try */
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
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

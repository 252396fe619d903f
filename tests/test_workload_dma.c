/* SPDX-License-Identifier: MIT */
/*
 * The dma workload (sim/workload.c, dmm_workload_run_dma) on the hardware
 * model: on the PC profile a 32-bit NIC-like device holds memory below
 * 4 GiB and bounces every buffer without the IOMMU, and holds none and
 * bounces nothing behind it; both variants run the same transfers; every
 * byte verified, no fault, every check clean, every page back. Also the
 * deferred flush queue on the non-coherent phone profile, the single
 * variants, reproducibility, and bad options.
 */
#include "tu_dma.h"

#include <dmamem/iommu.h>

#include "hw/hw.h"
#include "workload.h"

struct env {
	struct dmm_hw *hw;
	struct dmm_mem *mem;
};

static void env_create(struct env *e, const char *profile, uint64_t seed)
{
	struct dmm_machine m;
	struct dmm_hw_opts o;

	tu_profile(profile, &m);
	dmm_hw_opts_default(&o);
	o.nr_cpus = 2;
	o.log_level = DMM_LOG_ERR;
	o.prefetch = 1; /* as the command does: a missing invalidation shows */
	o.prefetch_seed = seed;
	assert_ok(dmm_hw_mem_create(&m, &o, &e->hw, &e->mem));
}

static void env_destroy(struct env *e)
{
	dmm_hw_mem_destroy(e->hw, e->mem);
}

static const struct dmm_workload_dma_dev *find_dev(const struct dmm_workload_result *r, const char *name,
						   int iommu)
{
	for (unsigned i = 0; i < r->dma.nr_devs; i++)
		if (strcmp(r->dma.dev[i].name, name) == 0 && r->dma.dev[i].iommu == iommu)
			return &r->dma.dev[i];
	fail_msg("no device %s (%s) in the result", name, iommu ? "iommu" : "direct");
	return NULL;
}

static void assert_clean(const struct dmm_workload_result *r)
{
	const struct dmm_workload_dma *d = &r->dma;

	assert_int_equal(d->data_errors, 0);
	assert_int_equal(d->faults, 0);
	assert_int_equal(d->mask_violations, 0);
	assert_int_equal(d->iotlb_stale, 0);
	for (unsigned i = 0; i < d->nr_devs; i++) {
		const struct dmm_workload_dma_dev *x = &d->dev[i];

		assert_int_equal(x->data_errors, 0);
		assert_int_equal(x->faults, 0);
		assert_int_equal(x->iommu_faults, 0);
		assert_int_equal(x->map_failed, 0);
		assert_int_equal(x->alloc_failed, 0);
		assert_int_equal(x->completed, x->transfers);
		assert_int_equal(x->maps, x->transfers);
		assert_true(x->bytes_moved > 0);
		assert_int_equal(x->iommu_check_end, 0);
		assert_int_equal(x->iommu_check_final, 0);
	}
	assert_int_equal(d->kmalloc_live_end, d->kmalloc_live_start);
	assert_int_equal(r->final_free_pages + d->slab_pages_end, r->start_free_pages + d->slab_pages_start);
	assert_int_equal(r->page_check_end, 0);
	assert_int_equal(r->page_check_final, 0);
	assert_int_equal(r->range_check_final, 0);
	assert_int_equal(d->slab_check, 0);
	assert_int_equal(d->hw_check, 0);
	assert_int_equal(d->swiotlb_check, 0);
	assert_true(dmm_workload_result_ok(r));
}

/* The point of the workload: what the IOMMU buys the 32-bit NIC on a PC. */
static void test_pc_both(void **state)
{
	struct dmm_workload_opts o;
	struct dmm_workload_result *r = malloc(sizeof(*r));
	const struct dmm_workload_dma_dev *nd, *ni, *sd, *si;
	struct env e;
	(void)state;

	assert_non_null(r);
	env_create(&e, "pc", 1);
	dmm_workload_opts_init(&o);
	o.ops = 3000;
	assert_ok(dmm_workload_run_dma(e.hw, e.mem, &o, r));
	assert_string_equal(r->workload, "dma");
	assert_int_equal(r->dma.nr_variants, 2);
	assert_int_equal(r->dma.nr_devs, 4);
	assert_int_equal(r->dma.variant_iommu[0], 0);
	assert_int_equal(r->dma.variant_iommu[1], 1);
	assert_true(r->dma.coherent); /* pc: dma_min_align == cache_line */
	assert_true(r->dma.swiotlb);
	assert_clean(r);

	nd = find_dev(r, "nic32", 0);
	ni = find_dev(r, "nic32", 1);
	sd = find_dev(r, "stor64", 0);
	si = find_dev(r, "stor64", 1);
	assert_int_equal(nd->mask_bits, 32);
	assert_int_equal(sd->mask_bits, 64);
	print_message("nic32 low memory at peak: direct %llu bytes (%llu of %llu maps bounced), iommu %llu\n",
		      (unsigned long long)nd->low_peak_bytes, (unsigned long long)nd->bounced_maps,
		      (unsigned long long)nd->maps, (unsigned long long)ni->low_peak_bytes);

	/* behind the IOMMU: nothing below 4 GiB, nothing bounced */
	assert_int_equal(ni->low_peak_bytes, 0);
	assert_int_equal(ni->low_now_bytes, 0);
	assert_int_equal(ni->coherent_low_pages, 0);
	assert_int_equal(ni->bounced_maps, 0);
	assert_true(ni->iova_cache_hits > 0);
	assert_true(ni->iova_allocs >= ni->maps);
	assert_true(ni->invalidations >= ni->maps); /* strict: one per unmap */
	assert_true(ni->iotlb_hits + ni->iotlb_misses > 0);
	/* direct: rings below 4 GiB and every high buffer bounced */
	assert_true(nd->low_peak_bytes > 0);
	assert_true(nd->bounced_maps > 0);
	assert_true(nd->coherent_low_pages >= 4 * 16); /* four 64 KiB rings */
	assert_true(nd->low_peak_bytes >= nd->coherent_low_pages * 4096);
	assert_true(nd->low_now_bytes <= nd->low_peak_bytes);
	assert_true(r->dma.swiotlb_bounced_to_device > 0);
	assert_true(r->dma.swiotlb_bounced_from_device > 0);

	/* the 64-bit device never needs low memory either way */
	assert_int_equal(sd->low_peak_bytes, 0);
	assert_int_equal(si->low_peak_bytes, 0);
	assert_int_equal(sd->bounced_maps, 0);
	assert_true(sd->sg_maps > 0);
	assert_true(sd->sg_entries >= 8 * sd->sg_maps);

	/* same seed, same transfers */
	assert_int_equal(nd->transfers, ni->transfers);
	assert_int_equal(nd->bytes_moved, ni->bytes_moved);
	assert_int_equal(sd->transfers, si->transfers);
	assert_int_equal(sd->sg_entries, si->sg_entries);
	assert_int_equal(sd->bytes_moved, si->bytes_moved);
	assert_int_equal(nd->transfers + sd->transfers, 3000);
	/* behind the IOMMU a list of whole pages is one IOVA segment */
	assert_int_equal(si->sg_segments, si->sg_maps);
	env_destroy(&e);
	free(r);
}

/* Non-coherent phone, deferred invalidation, page-granular IOVAs. */
static void test_phone_deferred(void **state)
{
	struct dmm_workload_opts o;
	struct dmm_workload_result *r = malloc(sizeof(*r));
	const struct dmm_workload_dma_dev *nd, *ni;
	struct env e;
	(void)state;

	assert_non_null(r);
	env_create(&e, "phone", 7);
	dmm_workload_opts_init(&o);
	o.ops = 2000;
	o.seed = 7;
	o.iommu_flush = DMM_IOMMU_DEFERRED;
	o.iova_align = DMM_IOVA_ALIGN_PAGE;
	assert_ok(dmm_workload_run_dma(e.hw, e.mem, &o, r));
	assert_false(r->dma.coherent);
	assert_int_equal(r->dma.flush, DMM_IOMMU_DEFERRED);
	assert_clean(r);
	nd = find_dev(r, "nic32", 0);
	ni = find_dev(r, "nic32", 1);
	assert_int_equal(ni->low_peak_bytes, 0);
	assert_int_equal(ni->bounced_maps, 0);
	assert_true(nd->low_peak_bytes > 0);
	assert_true(nd->bounced_maps > 0);
	/* batched: far fewer invalidations than unmaps */
	assert_true(ni->fq_flushes > 0);
	assert_true(ni->invalidations < ni->maps / 4);
	env_destroy(&e);
	free(r);
}

/* One variant at a time; the IOMMU-only run sets up no bounce buffers. */
static void test_single_variants(void **state)
{
	struct dmm_workload_opts o;
	struct dmm_workload_result *r = malloc(sizeof(*r));
	struct env e;
	(void)state;

	assert_non_null(r);
	dmm_workload_opts_init(&o);
	o.ops = 1000;

	env_create(&e, "rpi4", 1);
	o.iommu = DMM_WL_IOMMU_ON;
	assert_ok(dmm_workload_run_dma(e.hw, e.mem, &o, r));
	assert_int_equal(r->dma.nr_variants, 1);
	assert_int_equal(r->dma.nr_devs, 2);
	assert_false(r->dma.swiotlb);
	assert_clean(r);
	assert_int_equal(find_dev(r, "nic32", 1)->low_peak_bytes, 0);
	env_destroy(&e);

	env_create(&e, "rpi4", 1);
	o.iommu = DMM_WL_IOMMU_OFF;
	assert_ok(dmm_workload_run_dma(e.hw, e.mem, &o, r));
	assert_int_equal(r->dma.nr_variants, 1);
	assert_true(r->dma.swiotlb);
	assert_clean(r);
	assert_true(find_dev(r, "nic32", 0)->bounced_maps > 0);
	env_destroy(&e);
	free(r);
}

/* One seed, one thread: the same figures twice (strict mode has no timer). */
static void test_reproducible(void **state)
{
	struct dmm_workload_opts o;
	struct dmm_workload_result *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
	struct env e;
	(void)state;

	assert_non_null(a);
	assert_non_null(b);
	dmm_workload_opts_init(&o);
	o.ops = 1000;
	o.seed = 42;
	for (int i = 0; i < 2; i++) {
		env_create(&e, "phone", 42);
		assert_ok(dmm_workload_run_dma(e.hw, e.mem, &o, i ? b : a));
		env_destroy(&e);
	}
	for (unsigned i = 0; i < a->dma.nr_devs; i++) {
		const struct dmm_workload_dma_dev *x = &a->dma.dev[i], *y = &b->dma.dev[i];

		assert_int_equal(x->transfers, y->transfers);
		assert_int_equal(x->bytes_moved, y->bytes_moved);
		assert_int_equal(x->bounced_maps, y->bounced_maps);
		assert_int_equal(x->low_peak_bytes, y->low_peak_bytes);
		assert_int_equal(x->low_now_bytes, y->low_now_bytes);
		assert_int_equal(x->iova_cache_hits, y->iova_cache_hits);
		assert_int_equal(x->iotlb_hits, y->iotlb_hits);
		assert_int_equal(x->iotlb_misses, y->iotlb_misses);
	}
	assert_int_equal(a->start_free_pages, b->start_free_pages);
	assert_int_equal(a->final_free_pages, b->final_free_pages);
	free(a);
	free(b);
}

static void test_bad_calls(void **state)
{
	struct dmm_workload_opts o;
	struct dmm_workload_result *r = malloc(sizeof(*r));
	struct env e;
	(void)state;

	assert_non_null(r);
	assert_true(dmm_workload_needs_hw("dma"));
	assert_false(dmm_workload_needs_hw("mixed"));
	assert_false(dmm_workload_needs_hw(NULL));
	assert_non_null(dmm_workload_describe("dma"));
	{
		const char *const *n = dmm_workload_names();
		int found = 0;
		for (; *n; n++)
			found |= strcmp(*n, "dma") == 0;
		assert_true(found);
	}
	env_create(&e, "pc", 1);
	dmm_workload_opts_init(&o);
	assert_rc(dmm_workload_run(e.mem, "dma", &o, r), -DMM_ENOTSUP); /* needs the model */
	assert_rc(dmm_workload_run_dma(NULL, e.mem, &o, r), -DMM_EINVAL);
	assert_rc(dmm_workload_run_dma(e.hw, NULL, &o, r), -DMM_EINVAL);
	o.iommu = 7;
	assert_rc(dmm_workload_run_dma(e.hw, e.mem, &o, r), -DMM_EINVAL);
	o.iommu = 0;
	o.iommu_flush = 5;
	assert_rc(dmm_workload_run_dma(e.hw, e.mem, &o, r), -DMM_EINVAL);
	o.iommu_flush = 0;
	o.iova_align = -1;
	assert_rc(dmm_workload_run_dma(e.hw, e.mem, &o, r), -DMM_EINVAL);
	o.iova_align = 0;
	o.threads = 2;
	assert_rc(dmm_workload_run_dma(e.hw, e.mem, &o, r), -DMM_EINVAL);
	env_destroy(&e);
	free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pc_both),
		cmocka_unit_test(test_phone_deferred),
		cmocka_unit_test(test_single_variants),
		cmocka_unit_test(test_reproducible),
		cmocka_unit_test(test_bad_calls),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

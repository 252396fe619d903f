/* SPDX-License-Identifier: MIT */
/*
 * bench_iommu: streaming map + unmap through the IOMMU, strict and
 * deferred invalidation, as a ratio to the direct path in the same run.
 *
 * One 64-bit coherent device per mode (direct, IOMMU strict, IOMMU
 * deferred) maps and unmaps a buffer of 4 KiB (and 64 KiB) in a loop; the
 * figure is ns per map+unmap pair (batches timed as a whole, median of
 * --reps). Two platforms:
 *
 *   hosted      no IOTLB to invalidate: the library's own cost (IOVA
 *               allocation through the per-CPU caches, page-table writes,
 *               the flush queue)
 *   model+inv   the hardware model's IOMMU: every invalidation scans the
 *               IOTLB under the IOMMU's lock and then waits --inval-ns
 *               (default 1000 ns), standing for the completion wait of a
 *               real invalidation queue; deferred mode pays it once per
 *               flush-queue batch (256 unmaps) instead of on every unmap
 *
 * 1 and 2 threads (each its own buffer, one device).
 */
#include <pthread.h>

#include <dmamem/hosted.h>
#include <dmamem/iommu.h>

#include "bench_util.h"
#include "hw/hw.h"

struct job {
	struct dmm_device *dev;
	dmm_phys_t pa;
	size_t size;
	long n;
	uint64_t ns;
	pthread_t t;
};

static void *job_main(void *p)
{
	struct job *j = p;
	uint64_t t0 = bench_now_ns();

	for (long i = 0; i < j->n; i++) {
		dmm_dma_addr_t a = dmm_dma_map_phys(j->dev, j->pa, j->size, DMM_DMA_BIDIRECTIONAL);
		if (a == DMM_DMA_MAPPING_ERROR)
			bench_die("map failed: %s", dmm_errname(dmm_dma_mapping_error(j->dev, a)));
		dmm_dma_unmap_phys(j->dev, a, j->size, DMM_DMA_BIDIRECTIONAL);
	}
	j->ns = bench_now_ns() - t0;
	return NULL;
}

/* ns per pair per thread */
static double run(struct dmm_device *dev, const dmm_pfn_t *bufs, size_t size, unsigned threads, long n)
{
	struct job j[2];
	double ns = 0;

	for (unsigned i = 0; i < threads; i++) {
		j[i] = (struct job){ dev, dmm_pfn_to_phys(bufs[i]), size, n, 0, 0 };
		pthread_create(&j[i].t, NULL, job_main, &j[i]);
	}
	for (unsigned i = 0; i < threads; i++) {
		pthread_join(j[i].t, NULL);
		ns += (double)j[i].ns / (double)n;
	}
	return ns / threads;
}

enum { DIRECT, STRICT, DEFERRED, NMODES };
static const char *const mode_name[NMODES] = { "direct", "strict", "deferred" };

static struct dmm_device *make_dev(struct dmm_mem *mem, int mode)
{
	struct dmm_device_desc d;
	struct dmm_iommu_opts io;
	struct dmm_device *dev;

	memset(&d, 0, sizeof(d));
	d.name = mode_name[mode];
	d.dma_mask = DMM_DMA_BIT_MASK(64);
	d.coherent = 1;
	d.cma_area = DMM_DEVICE_CMA_NONE;
	dmm_iommu_opts_default(&io);
	if (mode != DIRECT) {
		d.iommu = DMM_IOMMU_DMA;
		io.flush = mode == STRICT ? DMM_IOMMU_STRICT : DMM_IOMMU_DEFERRED;
		d.iommu_opts = &io;
	}
	if (dmm_device_create(mem, &d, NULL, &dev))
		bench_die("cannot create device %s", d.name);
	return dev;
}

static void platform(struct bench_out *out, const char *pname, struct dmm_mem *mem, long reps, long n)
{
	static const size_t sizes[] = { 4096, 65536 };
	struct dmm_device *dev[NMODES];
	dmm_pfn_t bufs[2];

	for (int i = 0; i < 2; i++)
		if (dmm_page_alloc(mem, 4, NULL, 0, &bufs[i]))
			bench_die("no buffer");
	for (int m = 0; m < NMODES; m++)
		dev[m] = make_dev(mem, m);
	for (size_t si = 0; si < 2; si++)
		for (unsigned threads = 1; threads <= 2; threads++) {
			double v[NMODES][32];
			char name[128];
			long nn = sizes[si] > 4096 ? n / 4 : n;
			for (long r = 0; r < reps && r < 32; r++)
				for (int m = 0; m < NMODES; m++) {
					run(dev[m], bufs, sizes[si], threads, nn / 8); /* warm */
					v[m][r] = run(dev[m], bufs, sizes[si], threads, nn);
				}
			snprintf(name, sizeof(name), "%s, %zu KiB, %u thread%s", pname, sizes[si] / 1024, threads,
				 threads > 1 ? "s" : "");
			bench_section(out, name);
			for (int m = 0; m < NMODES; m++) {
				double med = bench_median(v[m], (size_t)reps), base = bench_median(v[DIRECT], (size_t)reps);
				snprintf(name, sizeof(name), "%s_%s_%zuK_%ut_pair", pname, mode_name[m], sizes[si] / 1024,
					 threads);
				if (m == DIRECT)
					bench_report(out, name, med, "ns", NULL, 0);
				else
					bench_report(out, name, med, "ns", "direct", med / base);
			}
		}
	for (int m = 0; m < NMODES; m++) {
		if (m != DIRECT) {
			struct dmm_iommu_stats st;
			dmm_device_iommu_flush(dev[m]);
			if (dmm_device_iommu_check(dev[m]) || dmm_device_iommu_stats(dev[m], &st))
				bench_die("IOMMU check failed");
			bench_note(out, "  %-8s %llu maps, %llu invalidations (%.4f per unmap), IOVA cache hits %.1f %%\n",
				   mode_name[m], (unsigned long long)st.maps, (unsigned long long)st.invalidations,
				   st.unmaps ? (double)st.invalidations / (double)st.unmaps : 0.0,
				   st.iova.allocs ? 100.0 * (double)st.iova.cache_hits / (double)st.iova.allocs : 0.0);
		}
		if (dmm_device_destroy(dev[m]))
			bench_die("device destroy");
	}
	for (int i = 0; i < 2; i++)
		dmm_page_free(mem, bufs[i], 4);
	if (dmm_page_alloc_check(mem) || dmm_range_check(mem))
		bench_die("invariant check failed");
}

int main(int argc, char **argv)
{
	struct bench_out out;
	struct dmm_machine m;
	int quick = bench_opt_flag(argc, argv, "--quick");
	long reps = bench_opt_long(argc, argv, "--reps", quick ? 1 : 5);
	long n = bench_opt_long(argc, argv, "--pairs", quick ? 2000 : 200000);
	long inval_ns = bench_opt_long(argc, argv, "--inval-ns", 1000);

	if (bench_opt_flag(argc, argv, "--help")) {
		printf("usage: bench_iommu [--json] [--quick] [--reps N] [--pairs N] [--inval-ns NS]\n");
		return 0;
	}
	if (reps < 1 || n < 64 || inval_ns < 0)
		bench_die("bad arguments");
	bench_out_init(&out, "iommu", argc, argv);
	bench_machine_flat(&m, "bench-iommu", 2 * BENCH_GIB);
	bench_note(&out, "\nbench_iommu: map+unmap pairs, ns per pair per thread, median of %ld runs of %ld pairs;\n"
			 "ratio = IOMMU mode / direct path in the same run\n", reps, n);
	{
		struct dmm_hosted *h;
		struct dmm_mem *mem;
		if (dmm_hosted_mem_create(&m, 2, &h, &mem))
			bench_die("cannot create the machine");
		platform(&out, "hosted", mem, reps, n);
		dmm_hosted_mem_destroy(h, mem);
	}
	{
		struct dmm_hw_opts o;
		struct dmm_hw_iommu_opts io;
		struct dmm_hw *hw;
		struct dmm_mem *mem;
		dmm_hw_opts_default(&o);
		o.nr_cpus = 2;
		o.log_level = DMM_LOG_ERR;
		if (dmm_hw_mem_create(&m, &o, &hw, &mem))
			bench_die("cannot create the modelled machine");
		dmm_hw_iommu_opts_default(&io);
		io.inval_latency_ns = (uint64_t)inval_ns;
		if (dmm_hw_iommu_enable(hw, &io))
			bench_die("cannot enable the model's IOMMU");
		bench_note(&out, "\nmodel: every IOTLB invalidation waits %ld ns\n", inval_ns);
		platform(&out, "model", mem, reps, quick ? n : n / 4);
		dmm_hw_mem_destroy(hw, mem);
	}
	return 0;
}

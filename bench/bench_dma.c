/* SPDX-License-Identifier: MIT */
/*
 * bench_dma: streaming map + unmap on the direct path, in the shape of
 * Linux's dma_map_benchmark: threads map and unmap a buffer in a loop for a
 * fixed time; report operations per second and the average ns of a map and
 * of an unmap. Buffers of 4 KiB and 64 KiB, a coherent and a non-coherent
 * device, DMA debug off and on, 1 and 2 threads. The debug overhead is
 * reported as a ratio (debug on / debug off) in the same run.
 *
 * On the hosted platform cache maintenance is a counted no-op, so the
 * non-coherent figures show the library's own cost, not a cache's.
 */
#include <pthread.h>

#include <dmamem/hosted.h>

#include "bench_util.h"

struct worker {
	struct dmm_device *dev;
	dmm_phys_t pa;
	size_t size;
	uint64_t duration_ns;
	uint64_t ops, map_ns, unmap_ns;
	pthread_t t;
};

static void *worker_main(void *p)
{
	struct worker *w = p;
	uint64_t end = bench_now_ns() + w->duration_ns;

	while (bench_now_ns() < end) {
		for (int i = 0; i < 64; i++) {
			uint64_t t0 = bench_now_ns(), t1, t2;
			dmm_dma_addr_t a = dmm_dma_map_phys(w->dev, w->pa, w->size, DMM_DMA_BIDIRECTIONAL);
			t1 = bench_now_ns();
			if (dmm_dma_mapping_error(w->dev, a))
				bench_die("map failed");
			dmm_dma_unmap_phys(w->dev, a, w->size, DMM_DMA_BIDIRECTIONAL);
			t2 = bench_now_ns();
			w->map_ns += t1 - t0;
			w->unmap_ns += t2 - t1;
			w->ops++;
		}
	}
	return NULL;
}

struct result {
	double ops_per_s, map_ns, unmap_ns;
};

static struct result run(struct dmm_mem *mem, struct dmm_device *dev, size_t size, unsigned threads,
			 uint64_t duration_ns, dmm_pfn_t *bufs)
{
	struct worker w[2];
	struct result r = { 0, 0, 0 };
	uint64_t ops = 0, map = 0, unmap = 0;

	(void)mem;
	for (unsigned i = 0; i < threads; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].dev = dev;
		w[i].pa = dmm_pfn_to_phys(bufs[i]);
		w[i].size = size;
		w[i].duration_ns = duration_ns;
		pthread_create(&w[i].t, NULL, worker_main, &w[i]);
	}
	for (unsigned i = 0; i < threads; i++) {
		pthread_join(w[i].t, NULL);
		ops += w[i].ops;
		map += w[i].map_ns;
		unmap += w[i].unmap_ns;
	}
	r.ops_per_s = (double)ops / ((double)duration_ns / 1e9);
	r.map_ns = (double)map / (double)ops;
	r.unmap_ns = (double)unmap / (double)ops;
	return r;
}

int main(int argc, char **argv)
{
	struct bench_out out;
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_mem *mem;
	int quick = bench_opt_flag(argc, argv, "--quick");
	long reps = bench_opt_long(argc, argv, "--reps", quick ? 1 : 5);
	long ms = bench_opt_long(argc, argv, "--ms", quick ? 20 : 200);
	static const size_t sizes[] = { 4096, 65536 };
	dmm_pfn_t bufs[2];

	if (bench_opt_flag(argc, argv, "--help")) {
		printf("usage: bench_dma [--json] [--quick] [--reps N] [--ms MS]\n");
		return 0;
	}
	if (reps < 1 || ms < 1)
		bench_die("bad arguments");
	bench_out_init(&out, "dma", argc, argv);
	bench_machine_flat(&m, "bench-dma", 2 * BENCH_GIB);
	if (dmm_hosted_mem_create(&m, 2, &h, &mem))
		bench_die("cannot create the machine");
	for (int i = 0; i < 2; i++)
		if (dmm_page_alloc(mem, 4, NULL, 0, &bufs[i]))
			bench_die("no buffer");
	bench_note(&out, "\nbench_dma: map+unmap, %ld ms per run, median of %ld runs\n", ms, reps);
	for (int coherent = 1; coherent >= 0; coherent--) {
		struct dmm_device_desc d;
		struct dmm_device *dev;
		memset(&d, 0, sizeof(d));
		d.name = coherent ? "coherent" : "noncoherent";
		d.dma_mask = DMM_DMA_BIT_MASK(64);
		d.coherent = coherent;
		d.cma_area = DMM_DEVICE_CMA_NONE;
		if (dmm_device_create(mem, &d, NULL, &dev))
			bench_die("cannot create the device");
		for (size_t si = 0; si < 2; si++) {
			for (unsigned threads = 1; threads <= 2; threads++) {
				double off_ops[16], on_ops[16], off_map[16], on_map[16], off_unmap[16], on_unmap[16];
				char name[96];
				double mo, mn;
				for (long r = 0; r < reps && r < 16; r++) {
					struct result a, b;
					dmm_dma_debug_device(dev, 0);
					a = run(mem, dev, sizes[si], threads, (uint64_t)ms * 1000000u, bufs);
					dmm_dma_debug_device(dev, 1);
					b = run(mem, dev, sizes[si], threads, (uint64_t)ms * 1000000u, bufs);
					dmm_dma_debug_device(dev, 0);
					off_ops[r] = a.ops_per_s;
					on_ops[r] = b.ops_per_s;
					off_map[r] = a.map_ns;
					on_map[r] = b.map_ns;
					off_unmap[r] = a.unmap_ns;
					on_unmap[r] = b.unmap_ns;
				}
				snprintf(name, sizeof(name), "%s_%zuK_%ut", d.name, sizes[si] / 1024, threads);
				bench_section(&out, name);
				mo = bench_median(off_ops, (size_t)reps);
				mn = bench_median(on_ops, (size_t)reps);
				snprintf(name, sizeof(name), "%s_%zuK_%ut_ops", d.name, sizes[si] / 1024, threads);
				bench_report(&out, name, mo, "ops/s", NULL, 0);
				snprintf(name, sizeof(name), "%s_%zuK_%ut_map", d.name, sizes[si] / 1024, threads);
				bench_report(&out, name, bench_median(off_map, (size_t)reps), "ns", NULL, 0);
				snprintf(name, sizeof(name), "%s_%zuK_%ut_unmap", d.name, sizes[si] / 1024, threads);
				bench_report(&out, name, bench_median(off_unmap, (size_t)reps), "ns", NULL, 0);
				snprintf(name, sizeof(name), "%s_%zuK_%ut_debug_ops", d.name, sizes[si] / 1024, threads);
				bench_report(&out, name, mn, "ops/s", NULL, 0);
				snprintf(name, sizeof(name), "%s_%zuK_%ut_debug_map", d.name, sizes[si] / 1024, threads);
				bench_report(&out, name, bench_median(on_map, (size_t)reps), "ns", NULL, 0);
				snprintf(name, sizeof(name), "%s_%zuK_%ut_debug_unmap", d.name, sizes[si] / 1024, threads);
				bench_report(&out, name, bench_median(on_unmap, (size_t)reps), "ns", NULL, 0);
				/* time per pair, debug on vs off */
				snprintf(name, sizeof(name), "%s_%zuK_%ut_debug_overhead", d.name, sizes[si] / 1024,
					 threads);
				bench_report(&out, name, mo / mn, "x", "debug_off", mo / mn);
			}
		}
		if (dmm_dma_debug_total(mem))
			bench_die("DMA debug reported misuse in the benchmark");
		if (dmm_device_destroy(dev))
			bench_die("device destroy");
	}
	for (int i = 0; i < 2; i++)
		dmm_page_free(mem, bufs[i], 4);
	if (dmm_page_alloc_check(mem) || dmm_range_check(mem))
		bench_die("invariant check failed");
	dmm_hosted_mem_destroy(h, mem);
	return 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * bench_init: how long dmm_mem_create() takes and how much metadata it
 * carves out of RAM, for machines of 1, 16 and 64 GiB (one RAM region from
 * 0, DMA32 limit at 4 GiB).
 *
 *   init_cold   dmm_mem_create() on a freshly mapped hosted RAM: includes
 *               the host's first-touch page faults on the metadata pages
 *               (what a process sees; a kernel at boot has no such cost).
 *   init_warm   dmm_mem_create() again on the same RAM after
 *               dmm_mem_destroy(): the metadata pages are already mapped,
 *               so this is the library's own work.
 *   metadata    dmm_mem_info.metadata_bytes / ram_pages.
 *
 * Each figure is the median of R repetitions (default 5; 3 for 64 GiB).
 * Only dmm_mem_create() is timed (not the host mmap or munmap).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dmamem/dmamem.h>
#include <dmamem/hosted.h>

#include "bench_util.h"

static double time_create(const struct dmm_machine *m, struct dmm_hosted *h,
			  struct dmm_mem_info *info)
{
	struct dmm_mem *mem;
	uint64_t t0 = bench_now_ns();
	int rc = dmm_mem_create(m, dmm_hosted_platform(h), &mem);
	uint64_t t1 = bench_now_ns();
	if (rc)
		bench_die("dmm_mem_create(%s): %s", m->name, dmm_errname(rc));
	dmm_mem_get_info(mem, info);
	dmm_mem_destroy(mem);
	return (double)(t1 - t0);
}

static void usage(void)
{
	printf("usage: bench_init [--json] [--quick] [--reps N] [--max-gib G]\n");
}

int main(int argc, char **argv)
{
	static const unsigned sizes[] = { 1, 16, 64 };
	struct bench_out out;
	int quick = bench_opt_flag(argc, argv, "--quick");
	long reps = bench_opt_long(argc, argv, "--reps", quick ? 2 : 5);
	long max_gib = bench_opt_long(argc, argv, "--max-gib", quick ? 16 : 64);

	if (bench_opt_flag(argc, argv, "--help") || bench_opt_flag(argc, argv, "-h")) {
		usage();
		return 0;
	}
	if (reps < 1 || reps > 100)
		bench_die("bad --reps");
	bench_out_init(&out, "init", argc, argv);
	bench_section(&out, "bench_init: dmm_mem_create() time and metadata (median over repetitions)");

	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		struct dmm_machine m;
		struct dmm_mem_info info;
		char name[32], metric[64];
		uint64_t bytes = sizes[s] * BENCH_GIB;
		long r_here = sizes[s] >= 64 && reps > 3 ? 3 : reps;
		if ((long)sizes[s] > max_gib)
			continue;
		double *cold = calloc((size_t)r_here, sizeof(double));
		double *warm = calloc((size_t)r_here, sizeof(double));
		double *self = calloc((size_t)r_here, sizeof(double));

		if (!cold || !warm || !self)
			bench_die("out of memory");
		snprintf(name, sizeof(name), "bench-init-%ug", sizes[s]);
		bench_machine_flat(&m, name, bytes);
		memset(&info, 0, sizeof(info));
		for (long r = 0; r < r_here; r++) {
			struct dmm_hosted *h;
			int rc = dmm_hosted_create(&m, 1, DMM_LOG_WARN, &h);
			if (rc)
				bench_die("dmm_hosted_create(%s): %s", name, dmm_errname(rc));
			cold[r] = time_create(&m, h, &info);
			self[r] = (double)info.init_ns;
			warm[r] = time_create(&m, h, &info);
			dmm_hosted_destroy(h);
		}
		double c = bench_median(cold, (size_t)r_here);
		double w = bench_median(warm, (size_t)r_here);
		double pages = (double)info.ram_pages;

		if (!out.json)
			printf("  -- %u GiB: %llu RAM pages, %llu managed, %llu metadata pages, "
			       "page descriptor %u bytes, %u zones, %ld repetitions\n",
			       sizes[s], (unsigned long long)info.ram_pages,
			       (unsigned long long)info.managed_pages,
			       (unsigned long long)info.metadata_pages, info.page_desc_size,
			       info.nr_zones, r_here);
		snprintf(metric, sizeof(metric), "%ug.init_cold", sizes[s]);
		bench_report(&out, metric, c / 1e6, "ms", NULL, 0);
		snprintf(metric, sizeof(metric), "%ug.init_cold_per_page", sizes[s]);
		bench_report(&out, metric, c / pages, "ns", NULL, 0);
		snprintf(metric, sizeof(metric), "%ug.init_warm", sizes[s]);
		bench_report(&out, metric, w / 1e6, "ms", NULL, 0);
		snprintf(metric, sizeof(metric), "%ug.init_warm_per_page", sizes[s]);
		bench_report(&out, metric, w / pages, "ns", NULL, 0);
		snprintf(metric, sizeof(metric), "%ug.metadata_per_page", sizes[s]);
		bench_report(&out, metric, (double)info.metadata_bytes / pages, "bytes", NULL, 0);
		snprintf(metric, sizeof(metric), "%ug.metadata", sizes[s]);
		bench_report(&out, metric, (double)info.metadata_bytes / (double)BENCH_MIB, "MiB", NULL, 0);
		snprintf(metric, sizeof(metric), "%ug.metadata_share", sizes[s]);
		bench_report(&out, metric, 100.0 * (double)info.metadata_bytes / (double)bytes, "%", NULL, 0);
		snprintf(metric, sizeof(metric), "%ug.page_desc_size", sizes[s]);
		bench_report(&out, metric, (double)info.page_desc_size, "bytes", NULL, 0);
		if (!out.json)
			printf("  (library's own init_ns, cold, median: %.3g ms)\n",
			       bench_median(self, (size_t)r_here) / 1e6);
		out.header_done = 1;
		free(cold);
		free(warm);
		free(self);
	}
	return 0;
}

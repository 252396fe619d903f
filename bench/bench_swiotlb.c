/* SPDX-License-Identifier: MIT */
/*
 * bench_swiotlb: cost of bouncing.
 *
 * Machine: 8 GiB of RAM from 0 (so 4 GiB lie above the 32-bit boundary),
 * hosted platform with 2 CPU slots; a coherent device with a 32-bit DMA mask;
 * the buffer is allocated above 4 GiB, so every mapping bounces through the
 * default pool (below 4 GiB). Bounce pool: 4 MiB of 2 KiB slots (2048
 * slots, 2 areas), no_transient = 1 and grow_threshold_pct = 100 so it never
 * changes size during the run.
 *
 * (a) copy cost: map + unmap of 4 KiB and 64 KiB, direction BIDIRECTIONAL
 *     (copied in at map and out at unmap) and TO_DEVICE (copied in only),
 *     against plain memcpy of the same bytes between the same two kinds of
 *     memory (the high buffer and a buffer below 4 GiB), in the same run
 *     and interleaved with ours. BIDIRECTIONAL is compared with two memcpys
 *     (in and out), TO_DEVICE with one. Pool empty apart from the mapping.
 *
 * (b) slot allocation: map + unmap of a 64-byte buffer, TO_DEVICE (so the
 *     copy is negligible and the figure is the slot search and bookkeeping),
 *     at 10 % and 90 % pool occupancy. The pool is first filled completely
 *     with 1-slot long-lived mappings, then a random subset is unmapped
 *     until the occupancy is reached, so the free slots are scattered
 *     across the pool (a pool that has been in use for a while). 1 thread
 *     and 2 threads (each on its own CPU slot, so on its own area first):
 *     pairs per second per thread.
 *
 * --cpus N: the machine's CPU count (default 2; the host's threads take
 * its CPU slots round-robin). A device has a counter block per CPU, so the
 * figures should not depend on it.
 *
 * --meta-gap N: allocate N pages of the general window before
 * dmm_swiotlb_init, so that the swiotlb's own metadata (its control block,
 * then the pool's header, slot records and run caches, all taken from the
 * general window, which starts at 4 GiB here) lies N pages further up. With
 * N = 0 (the default, the machine as booted) the control block starts at
 * 4 GiB and the pool at 0: the same address bits below 4 GiB as the slots
 * that (a) maps, which on some CPUs costs several ns per 4 KiB pair (see
 * docs/BENCHMARKS.md).
 *
 * Method: R repetitions (default 21); in each, every kind runs one batch of
 * pairs sized to ~2 ms, in a rotating order; the figure is the median over
 * repetitions of ns per pair.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>

#include <dmamem/hosted.h>

#include "bench_util.h"
#include "lib/copy.h"

#define POOL_BYTES (4 * BENCH_MIB)
#define SLOT 2048u
#define BIG (64 * 1024u)

static struct dmm_mem *g_mem;
static struct dmm_device *g_dev;
static dmm_phys_t g_hi_pa;          /* 64 KiB buffer above 4 GiB */
static uint8_t *g_hi, *g_lo;        /* CPU views: high buffer, low buffer */
static void *(*volatile g_memcpy)(void *, const void *, size_t) = memcpy;

/* ---- (a) copy cost ---------------------------------------------------------- */

enum akind { A_BIDIR = 0, A_TODEV, A_MEMCPY1, A_MEMCPY2, A_COPY1, NR_AKINDS };
static const char *const akind_name[NR_AKINDS] = { "bounce_bidir", "bounce_to_device", "memcpy_x1",
						   "memcpy_x2", "dmm_copy_x1" };
static bool g_copy_wide; /* the bounce copy's loop (lib/copy.h), as the library chose it */

static void map_pairs(dmm_phys_t pa, size_t size, enum dmm_dma_dir dir, long n)
{
	for (long i = 0; i < n; i++) {
		dmm_dma_addr_t a = dmm_dma_map_phys(g_dev, pa, size, dir);
		int rc = dmm_dma_mapping_error(g_dev, a);
		if (rc)
			bench_die("map of %zu bytes: %s", size, dmm_errname(rc));
		dmm_dma_unmap_phys(g_dev, a, size, dir);
	}
}

static void run_a(int k, size_t size, long n)
{
	switch (k) {
	case A_BIDIR:
		map_pairs(g_hi_pa, size, DMM_DMA_BIDIRECTIONAL, n);
		break;
	case A_TODEV:
		map_pairs(g_hi_pa, size, DMM_DMA_TO_DEVICE, n);
		break;
	case A_MEMCPY1:
		for (long i = 0; i < n; i++)
			g_memcpy(g_lo, g_hi, size);
		break;
	case A_MEMCPY2:
		for (long i = 0; i < n; i++) {
			g_memcpy(g_lo, g_hi, size);
			g_memcpy(g_hi, g_lo, size);
		}
		break;
	case A_COPY1:
		for (long i = 0; i < n; i++) {
			dmm__copy(g_copy_wide, g_lo, g_hi, size);
			__asm__ volatile("" : : "r"(g_lo) : "memory");
		}
		break;
	default:
		break;
	}
}

struct kind_size {
	int k;
	size_t size;
};

static void run_a_cb(const void *arg, long n)
{
	const struct kind_size *a = arg;
	run_a(a->k, a->size, n);
}

static long calibrate_a(int k, size_t size, double batch_ms)
{
	struct kind_size a = { k, size };
	return bench_calibrate(run_a_cb, &a, 64, 1l << 26, batch_ms, 200);
}

static void bench_copy(struct bench_out *out, long reps, double batch_ms)
{
	static const size_t sizes[] = { 4096, BIG };
	double *v[NR_AKINDS];
	char name[96];

	for (int k = 0; k < NR_AKINDS; k++)
		if (!(v[k] = calloc((size_t)reps, sizeof(double))))
			bench_die("out of memory");
	for (size_t si = 0; si < 2; si++) {
		size_t size = sizes[si];
		long n[NR_AKINDS];
		double med[NR_AKINDS];
		struct dmm_dma_stats st0, st1;

		for (int k = 0; k < NR_AKINDS; k++)
			n[k] = calibrate_a(k, size, batch_ms);
		dmm_device_get_stats(g_dev, &st0);
		for (long r = 0; r < reps; r++) {
			for (int j = 0; j < NR_AKINDS; j++) {
				int k = (int)((j + r) % NR_AKINDS);
				uint64_t t0 = bench_now_ns();
				run_a(k, size, n[k]);
				v[k][r] = (double)(bench_now_ns() - t0) / (double)n[k];
			}
		}
		dmm_device_get_stats(g_dev, &st1);
		if (st1.bounced_maps - st0.bounced_maps != st1.maps - st0.maps)
			bench_die("a mapping did not bounce");
		for (int k = 0; k < NR_AKINDS; k++)
			med[k] = bench_median(v[k], (size_t)reps);
		snprintf(name, sizeof(name), "(a) map+unmap with bouncing, %zu KiB, ns per pair", size / 1024);
		bench_section(out, name);
		snprintf(name, sizeof(name), "%zuK_memcpy_x1", size / 1024);
		bench_report(out, name, med[A_MEMCPY1], "ns", NULL, 0);
		snprintf(name, sizeof(name), "%zuK_memcpy_x2", size / 1024);
		bench_report(out, name, med[A_MEMCPY2], "ns", NULL, 0);
		snprintf(name, sizeof(name), "%zuK_%s", size / 1024, akind_name[A_COPY1]);
		bench_report(out, name, med[A_COPY1], "ns", akind_name[A_MEMCPY1], med[A_COPY1] / med[A_MEMCPY1]);
		snprintf(name, sizeof(name), "%zuK_%s", size / 1024, akind_name[A_TODEV]);
		bench_report(out, name, med[A_TODEV], "ns", akind_name[A_MEMCPY1],
			     med[A_TODEV] / med[A_MEMCPY1]);
		snprintf(name, sizeof(name), "%zuK_%s", size / 1024, akind_name[A_BIDIR]);
		bench_report(out, name, med[A_BIDIR], "ns", akind_name[A_MEMCPY2],
			     med[A_BIDIR] / med[A_MEMCPY2]);
		snprintf(name, sizeof(name), "%zuK_%s_GBps", size / 1024, akind_name[A_TODEV]);
		bench_report(out, name, (double)size / med[A_TODEV], "GB/s", NULL, 0);
	}
	for (int k = 0; k < NR_AKINDS; k++)
		free(v[k]);
}

/* ---- (c) the bounce copy alone ------------------------------------------------ */

/* The copy routine the bounces use (src/lib/copy.h) against memcpy, at
 * sizes from 256 bytes to 64 KiB and at four alignments of source and
 * destination (a bounce slot keeps its buffer's offset within the pool's
 * align_mask only, so the two need not share an alignment), between two
 * host buffers of 128 KiB. */
struct copy_case {
	int ours;
	size_t size, soff, doff;
};

static uint8_t *g_csrc, *g_cdst;

static void run_copy(const void *arg, long n)
{
	const struct copy_case *c = arg;
	uint8_t *d = g_cdst + c->doff;
	const uint8_t *s = g_csrc + c->soff;

	for (long i = 0; i < n; i++) {
		if (c->ours)
			dmm__copy(g_copy_wide, d, s, c->size);
		else
			g_memcpy(d, s, c->size);
		__asm__ volatile("" : : "r"(d) : "memory");
	}
}

static void bench_copy_alone(struct bench_out *out, long reps, double batch_ms)
{
	static const size_t sizes[] = { 256, 1024, 4096, 16384, BIG };
	static const size_t offs[][2] = { { 0, 0 }, { 100, 100 }, { 0, 100 }, { 100, 0 } };
	double *v[2];
	char name[96];

	if (!(v[0] = calloc((size_t)reps, sizeof(double))) || !(v[1] = calloc((size_t)reps, sizeof(double))) ||
	    !(g_csrc = aligned_alloc(4096, 2 * BIG)) || !(g_cdst = aligned_alloc(4096, 2 * BIG)))
		bench_die("out of memory");
	memset(g_csrc, 0x5a, 2 * BIG);
	memset(g_cdst, 0xa5, 2 * BIG);
	bench_section(out, "(c) the bounce copy alone (dmm_copy) against memcpy, ns per copy; src+S/dst+D: byte offsets from 4 KiB");
	for (size_t oi = 0; oi < DMM_ARRAY_SIZE(offs); oi++)
		for (size_t si = 0; si < DMM_ARRAY_SIZE(sizes); si++) {
			struct copy_case c[2];
			long n[2];

			for (int k = 0; k < 2; k++) {
				c[k] = (struct copy_case){ k, sizes[si], offs[oi][0], offs[oi][1] };
				n[k] = bench_calibrate(run_copy, &c[k], 64, 1l << 26, batch_ms / 4, 200);
			}
			for (long r = 0; r < reps; r++)
				for (int j = 0; j < 2; j++) {
					int k = (int)((j + r) % 2);
					uint64_t t0 = bench_now_ns();
					run_copy(&c[k], n[k]);
					v[k][r] = (double)(bench_now_ns() - t0) / (double)n[k];
				}
			double mm = bench_median(v[0], (size_t)reps), ours = bench_median(v[1], (size_t)reps);
			snprintf(name, sizeof(name), "copy_%zu_src+%zu_dst+%zu", sizes[si], offs[oi][0], offs[oi][1]);
			bench_report(out, name, ours, "ns", "memcpy", ours / mm);
		}
	free(v[0]);
	free(v[1]);
	free(g_csrc);
	free(g_cdst);
}

/* ---- (b) slot allocation ----------------------------------------------------- */

struct tpool {
	pthread_barrier_t start, done;
	long n;
	unsigned active; /* threads taking part in this batch */
	int quit;
	double ns[2];    /* elapsed ns of the last batch, per thread */
};

struct worker_arg {
	struct tpool *tp;
	unsigned id;
};

static void small_pairs(unsigned id, long n)
{
	/* each thread maps its own 64 bytes */
	map_pairs(g_hi_pa + (dmm_phys_t)id * 4096, 64, DMM_DMA_TO_DEVICE, n);
}

static void *worker(void *p)
{
	struct worker_arg *a = p;
	struct tpool *tp = a->tp;
	for (;;) {
		pthread_barrier_wait(&tp->start);
		if (tp->quit)
			return NULL;
		if (a->id < tp->active) {
			uint64_t t0 = bench_now_ns();
			small_pairs(a->id, tp->n);
			tp->ns[a->id] = (double)(bench_now_ns() - t0);
		}
		pthread_barrier_wait(&tp->done);
	}
}

/* One batch on @threads workers; returns pairs per second per thread (mean). */
static double batch_b(struct tpool *tp, unsigned threads, long n)
{
	double s = 0;
	tp->n = n;
	tp->active = threads;
	pthread_barrier_wait(&tp->start);
	pthread_barrier_wait(&tp->done);
	for (unsigned i = 0; i < threads; i++)
		s += (double)n / (tp->ns[i] / 1e9);
	return s / threads;
}

/* Long-lived mappings: fill the pool, then free a random subset. */
static dmm_dma_addr_t *fill_pool(uint64_t total_slots, uint64_t keep, struct bench_rng *rng)
{
	dmm_dma_addr_t *a = calloc(total_slots, sizeof(*a));
	if (!a)
		bench_die("out of memory");
	for (uint64_t i = 0; i < total_slots; i++) {
		a[i] = dmm_dma_map_phys(g_dev, g_hi_pa + 8192 + (i % 512) * 64, 64, DMM_DMA_TO_DEVICE);
		if (dmm_dma_mapping_error(g_dev, a[i]))
			bench_die("filling the pool failed at slot %llu", (unsigned long long)i);
	}
	/* Fisher-Yates: the first @keep stay mapped */
	for (uint64_t i = total_slots - 1; i > 0; i--) {
		uint64_t j = bench_rand_below(rng, i + 1);
		dmm_dma_addr_t t = a[i];
		a[i] = a[j];
		a[j] = t;
	}
	for (uint64_t i = keep; i < total_slots; i++)
		dmm_dma_unmap_phys(g_dev, a[i], 64, DMM_DMA_TO_DEVICE);
	return a;
}

static void drain_pool(dmm_dma_addr_t *a, uint64_t keep)
{
	for (uint64_t i = 0; i < keep; i++)
		dmm_dma_unmap_phys(g_dev, a[i], 64, DMM_DMA_TO_DEVICE);
	free(a);
}

static void bench_slots(struct bench_out *out, long reps, double batch_ms)
{
	static const unsigned occ[] = { 10, 90 };
	struct tpool tp;
	struct worker_arg wa[2];
	pthread_t t[2];
	struct bench_rng rng = { 42 };
	struct dmm_swiotlb_stats st;
	double ns1[2] = { 0, 0 };
	double *v1 = calloc((size_t)reps, sizeof(double)), *v2 = calloc((size_t)reps, sizeof(double));
	char name[96];

	if (!v1 || !v2)
		bench_die("out of memory");
	memset(&tp, 0, sizeof(tp));
	pthread_barrier_init(&tp.start, NULL, 3);
	pthread_barrier_init(&tp.done, NULL, 3);
	for (unsigned i = 0; i < 2; i++) {
		wa[i].tp = &tp;
		wa[i].id = i;
		pthread_create(&t[i], NULL, worker, &wa[i]);
	}
	dmm_swiotlb_get_stats(g_mem, &st);
	if (st.used_slots)
		bench_die("pool not empty before the slot test");
	for (size_t oi = 0; oi < 2; oi++) {
		uint64_t keep = st.total_slots * occ[oi] / 100;
		dmm_dma_addr_t *live = fill_pool(st.total_slots, keep, &rng);
		struct dmm_swiotlb_stats s2;
		long n = 256;

		/* calibrate on one thread */
		for (;;) {
			double pps = batch_b(&tp, 1, n);
			double dt = (double)n / pps * 1e9;
			if (dt > 2e6 || n > (1l << 24)) {
				n = bench_batch_len(1e9 / pps, batch_ms, 200);
				break;
			}
			n *= 4;
		}
		for (long r = 0; r < reps; r++) {
			if (r & 1) {
				v2[r] = batch_b(&tp, 2, n);
				v1[r] = batch_b(&tp, 1, n);
			} else {
				v1[r] = batch_b(&tp, 1, n);
				v2[r] = batch_b(&tp, 2, n);
			}
		}
		dmm_swiotlb_get_stats(g_mem, &s2);
		if (s2.pools != 1 || s2.fail_full)
			bench_die("the pool changed or ran full (%llu pools, %llu failures)",
				  (unsigned long long)s2.pools, (unsigned long long)s2.fail_full);
		if (dmm_swiotlb_check(g_mem))
			bench_die("swiotlb check failed");
		double p1 = bench_median(v1, (size_t)reps), p2 = bench_median(v2, (size_t)reps);
		ns1[oi] = 1e9 / p1;
		snprintf(name, sizeof(name), "(b) slot allocation, 64 B TO_DEVICE, %u%% occupancy (%llu of %llu slots)",
			 occ[oi], (unsigned long long)keep, (unsigned long long)st.total_slots);
		bench_section(out, name);
		snprintf(name, sizeof(name), "occ%u_1t_ns_per_pair", occ[oi]);
		bench_report(out, name, ns1[oi], "ns", NULL, 0);
		snprintf(name, sizeof(name), "occ%u_1t_pairs_per_s", occ[oi]);
		bench_report(out, name, p1, "pairs/s", NULL, 0);
		snprintf(name, sizeof(name), "occ%u_2t_pairs_per_s_per_thread", occ[oi]);
		bench_report(out, name, p2, "pairs/s", "1_thread", p2 / p1);
		drain_pool(live, keep);
	}
	bench_section(out, "(b) occupancy: 90 % vs 10 %, 1 thread, ns per pair");
	bench_report(out, "occ90_vs_occ10", ns1[1], "ns", "occ10", ns1[1] / ns1[0]);
	tp.quit = 1;
	pthread_barrier_wait(&tp.start);
	for (unsigned i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&tp.start);
	pthread_barrier_destroy(&tp.done);
	free(v1);
	free(v2);
}

int main(int argc, char **argv)
{
	struct bench_out out;
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_swiotlb_opts o;
	struct dmm_device_desc d;
	const struct dmm_constraint above = { 4 * BENCH_GIB, DMM_PHYS_MAX, 0, 0, 0, 0 };
	const struct dmm_constraint below = { 0, 4 * BENCH_GIB, 0, 0, 0, 0 };
	dmm_pfn_t hi, lo;
	int quick = bench_opt_flag(argc, argv, "--quick");
	long reps = bench_opt_long(argc, argv, "--reps", quick ? 3 : 21);
	long gap = bench_opt_long(argc, argv, "--meta-gap", 0);
	long cpus = bench_opt_long(argc, argv, "--cpus", 2);
	double batch_ms = quick ? 0.5 : 2.0;

	if (bench_opt_flag(argc, argv, "--help")) {
		printf("usage: bench_swiotlb [--json] [--quick] [--reps N] [--meta-gap PAGES] [--cpus N]\n");
		return 0;
	}
	if (reps < 1 || gap < 0 || gap > 1 << 20 || cpus < 2 || cpus > 1024)
		bench_die("bad arguments");
	bench_out_init(&out, "swiotlb", argc, argv);
	bench_machine_flat(&m, "bench-swiotlb", 8 * BENCH_GIB);
	if (dmm_hosted_mem_create(&m, (unsigned)cpus, &h, &g_mem))
		bench_die("cannot create the machine");
	if (gap) {
		const struct dmm_constraint any = DMM_CONSTRAINT_ANY;
		dmm_pfn_t pad;
		if (dmm_alloc_range(g_mem, &any, (uint64_t)gap, 0, &pad))
			bench_die("cannot allocate the metadata gap");
	}
	dmm_swiotlb_opts_default(g_mem, &o);
	o.initial_bytes = POOL_BYTES;
	o.slot_size = SLOT;
	o.nr_areas = 2;
	o.no_transient = 1;
	o.grow_threshold_pct = 100;
	if (dmm_swiotlb_init(g_mem, &o))
		bench_die("dmm_swiotlb_init failed");
	memset(&d, 0, sizeof(d));
	d.name = "dev32";
	d.dma_mask = DMM_DMA_BIT_MASK(32);
	d.coherent = 1;
	d.cma_area = DMM_DEVICE_CMA_NONE;
	if (dmm_device_create(g_mem, &d, NULL, &g_dev))
		bench_die("cannot create the device");
	if (dmm_page_alloc(g_mem, 4, &above, 0, &hi) || dmm_page_alloc(g_mem, 4, &below, 0, &lo))
		bench_die("no buffer");
	g_hi_pa = dmm_pfn_to_phys(hi);
	g_hi = dmm_pfn_to_virt(g_mem, hi);
	g_lo = dmm_pfn_to_virt(g_mem, lo);
	memset(g_hi, 0x5a, BIG);
	memset(g_lo, 0xa5, BIG);

	bench_note(&out, "\nbench_swiotlb: 8 GiB machine of %ld CPUs, 32-bit device, buffer at %#llx, pool %llu KiB of %u-byte slots, metadata gap %ld pages; median of %ld runs\n",
		   cpus, (unsigned long long)g_hi_pa, (unsigned long long)(POOL_BYTES / 1024), SLOT, gap, reps);
	{
		struct dmm_mem_info mi;
		dmm_mem_get_info(g_mem, &mi);
		g_copy_wide = strcmp(mi.bulk_copy, "avx2") == 0;
		bench_note(&out, "bounce copy: %s\n", mi.bulk_copy);
	}
	bench_copy(&out, reps, batch_ms);
	bench_slots(&out, reps, batch_ms);
	bench_copy_alone(&out, reps, batch_ms);
	{
		struct dmm_hosted_stats hs;
		struct dmm_mem_info mi;
		dmm_hosted_get_stats(h, &hs);
		dmm_mem_get_info(g_mem, &mi);
		bench_note(&out, "\nCPU-local sections (%s): %llu entered through a slot's lock; %llu cross-CPU syncs (membarrier %s)\n",
			   mi.cpu_sections, (unsigned long long)mi.cpu_slow_enters, (unsigned long long)mi.cpu_syncs,
			   hs.membarrier ? "on" : "off");
	}

	if (dmm_swiotlb_check(g_mem))
		bench_die("swiotlb check failed");
	if (dmm_device_destroy(g_dev))
		bench_die("device destroy");
	dmm_page_free(g_mem, hi, 4);
	dmm_page_free(g_mem, lo, 4);
	if (dmm_page_alloc_check(g_mem) || dmm_range_check(g_mem))
		bench_die("invariant check failed");
	dmm_hosted_mem_destroy(h, g_mem);
	return 0;
}

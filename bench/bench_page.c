/* SPDX-License-Identifier: MIT */
/*
 * bench_page: cost of a page allocation + free pair.
 *
 * Ours (dmm_page_alloc + dmm_page_free on a hosted machine):
 *   order0_pcp        order 0 through the per-CPU cache (the default path)
 *   order0_zone_lock  order 0 with DMM_GFP_NOCACHE: the allocation bypasses
 *                     the per-CPU cache and takes the zone lock
 *   order9            order 9 (2 MiB), always through the zone lock
 * Baselines, measured in the same run and interleaved with ours:
 *   glibc             aligned_alloc(4096, 4096) + free
 *   mimalloc          mi_malloc_aligned(4096, 4096) + mi_free
 *
 * mimalloc is loaded with dlopen(RTLD_LOCAL): Debian's libmimalloc.so
 * exports malloc/free/aligned_alloc itself, so linking it would silently
 * turn the glibc baseline into a second mimalloc measurement. The program
 * checks (dladdr) that aligned_alloc really resolves into libc.
 *
 * Method: R repetitions (default 41); in each, every kind runs one batch of
 * pairs sized to ~2 ms, in a rotating order; the figure is the median over
 * repetitions of ns per pair. Short batches and many repetitions let the
 * median skip the batches a noisy neighbour preempted. The 2-thread test runs two threads in
 * lock-step (barrier per batch) and reports pairs per second per thread.
 *
 * --callgrind-kind K --pairs N: set up, warm up, run exactly N pairs of K and
 * exit (for bench/callgrind.sh, which differences two runs).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dmamem/dmamem.h>
#include <dmamem/hosted.h>

#include "bench_util.h"

enum kind { K_PCP = 0, K_NOCACHE, K_ORDER9, K_GLIBC, K_MIMALLOC, NR_KINDS };

static const char *const kind_name[NR_KINDS] = {
	"order0_pcp", "order0_zone_lock", "order9", "glibc", "mimalloc",
};

static struct dmm_mem *g_mem;
static void *(*volatile g_aligned_alloc)(size_t, size_t);
static void (*volatile g_free)(void *);
static void *(*g_mi_malloc_aligned)(size_t, size_t);
static void (*g_mi_free)(void *);
static char g_mi_path[512];
static char g_libc_path[512];

static void load_baselines(void)
{
	Dl_info info;

	g_aligned_alloc = aligned_alloc;
	g_free = free;
	if (dladdr((void *)g_aligned_alloc, &info) && info.dli_fname)
		snprintf(g_libc_path, sizeof(g_libc_path), "%s", info.dli_fname);
	else
		snprintf(g_libc_path, sizeof(g_libc_path), "?");
	if (!strstr(g_libc_path, "libc.so"))
		fprintf(stderr, "bench_page: warning: aligned_alloc resolves to %s, not glibc\n",
			g_libc_path);

#ifdef DMM_MIMALLOC_LIB
	void *h = dlopen(DMM_MIMALLOC_LIB, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		fprintf(stderr, "bench_page: cannot load mimalloc (%s): %s\n", DMM_MIMALLOC_LIB,
			dlerror());
		return;
	}
	void *sym_alloc = dlsym(h, "mi_malloc_aligned");
	void *sym_free = dlsym(h, "mi_free");
	memcpy(&g_mi_malloc_aligned, &sym_alloc, sizeof(sym_alloc));
	memcpy(&g_mi_free, &sym_free, sizeof(sym_free));
	if (!g_mi_malloc_aligned || !g_mi_free) {
		g_mi_malloc_aligned = NULL;
		g_mi_free = NULL;
		return;
	}
	if (dladdr(sym_free, &info) && info.dli_fname)
		snprintf(g_mi_path, sizeof(g_mi_path), "%s", info.dli_fname);
#endif
}

static int kind_available(int k)
{
	return k != K_MIMALLOC || g_mi_malloc_aligned != NULL;
}

static void ours_pairs(unsigned order, unsigned flags, long n)
{
	for (long i = 0; i < n; i++) {
		dmm_pfn_t pfn;
		int rc = dmm_page_alloc(g_mem, order, NULL, flags, &pfn);
		if (rc)
			bench_die("dmm_page_alloc(order %u, flags %#x): %s", order, flags,
				  dmm_errname(rc));
		rc = dmm_page_free(g_mem, pfn, order);
		if (rc)
			bench_die("dmm_page_free(order %u): %s", order, dmm_errname(rc));
	}
}

static void glibc_pairs(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = g_aligned_alloc(4096, 4096);
		if (!p)
			bench_die("aligned_alloc failed");
		g_free(p);
	}
}

static void mimalloc_pairs(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = g_mi_malloc_aligned(4096, 4096);
		if (!p)
			bench_die("mi_malloc_aligned failed");
		g_mi_free(p);
	}
}

static void run_kind(int k, long n)
{
	switch (k) {
	case K_PCP:
		ours_pairs(0, 0, n);
		break;
	case K_NOCACHE:
		ours_pairs(0, DMM_GFP_NOCACHE, n);
		break;
	case K_ORDER9:
		ours_pairs(9, 0, n);
		break;
	case K_GLIBC:
		glibc_pairs(n);
		break;
	case K_MIMALLOC:
		mimalloc_pairs(n);
		break;
	default:
		break;
	}
}

/* ns per pair of one timed batch. */
static double timed_batch(int k, long n)
{
	uint64_t t0 = bench_now_ns();
	run_kind(k, n);
	return (double)(bench_now_ns() - t0) / (double)n;
}

static void run_kind_cb(const void *arg, long n)
{
	run_kind(*(const int *)arg, n);
}

/* Pairs per batch so that a batch lasts about @batch_ms. */
static long calibrate(int k, double batch_ms)
{
	return bench_calibrate(run_kind_cb, &k, 256, 1l << 26, batch_ms, 1000);
}

/* ---- two threads ---------------------------------------------------------- */

struct tpool {
	pthread_barrier_t start, done;
	int kind;
	long n;
	int quit;
	double ns[2]; /* elapsed ns of the last batch, per thread */
};

struct worker_arg {
	struct tpool *tp;
	int id;
};

static void *worker(void *p)
{
	struct worker_arg *a = p;
	struct tpool *tp = a->tp;
	for (;;) {
		pthread_barrier_wait(&tp->start);
		if (tp->quit)
			break;
		uint64_t t0 = bench_now_ns();
		run_kind(tp->kind, tp->n);
		tp->ns[a->id] = (double)(bench_now_ns() - t0);
		pthread_barrier_wait(&tp->done);
	}
	return NULL;
}

/* ---- main ----------------------------------------------------------------- */

static void build_machine(struct dmm_machine *m, uint64_t mib)
{
	/* PC-like: a 16 MiB DMA zone, RAM below the PCI hole up to 2 GiB, the
	 * rest above 4 GiB. */
	dmm_machine_defaults(m);
	snprintf(m->name, sizeof(m->name), "bench-page-%llumib", (unsigned long long)mib);
	m->dma_limit = 16 * BENCH_MIB;
	uint64_t bytes = mib * BENCH_MIB;
	uint64_t low = bytes < 2 * BENCH_GIB ? bytes : 2 * BENCH_GIB;
	m->nr_ram = 1;
	m->ram[0].base = 0;
	m->ram[0].size = low;
	if (bytes > low) {
		m->nr_ram = 2;
		m->ram[1].base = 4 * BENCH_GIB;
		m->ram[1].size = bytes - low;
	}
}

static int kind_from_name(const char *s)
{
	for (int k = 0; k < NR_KINDS; k++)
		if (!strcmp(s, kind_name[k]))
			return k;
	return -1;
}

static void usage(void)
{
	printf("usage: bench_page [--json] [--quick] [--reps N] [--batch-ms MS] [--mem-mib MIB]\n"
	       "                  [--callgrind-kind KIND --pairs N]\n"
	       "kinds: order0_pcp order0_zone_lock order9 glibc mimalloc\n");
}

int main(int argc, char **argv)
{
	struct bench_out out;
	struct dmm_machine m;
	struct dmm_hosted *hosted;
	int quick = bench_opt_flag(argc, argv, "--quick");
	long reps = bench_opt_long(argc, argv, "--reps", quick ? 7 : 41);
	double batch_ms = (double)bench_opt_long(argc, argv, "--batch-ms", 2);
	uint64_t mib = (uint64_t)bench_opt_long(argc, argv, "--mem-mib", 4096);
	const char *cg_kind = bench_opt_str(argc, argv, "--callgrind-kind", NULL);

	if (bench_opt_flag(argc, argv, "--help") || bench_opt_flag(argc, argv, "-h")) {
		usage();
		return 0;
	}
	if (reps < 1 || reps > 1000 || mib < 64)
		bench_die("bad --reps or --mem-mib");
	bench_out_init(&out, "page", argc, argv);
	load_baselines();

	build_machine(&m, mib);
	/* Two per-CPU caches: the main thread, then each worker thread of the
	 * 2-thread test, gets one (the hosted platform assigns them round-robin). */
	int rc = dmm_hosted_mem_create(&m, 2, &hosted, &g_mem);
	if (rc)
		bench_die("dmm_hosted_mem_create: %s", dmm_errname(rc));

	if (cg_kind) {
		int k = kind_from_name(cg_kind);
		long pairs = bench_opt_long(argc, argv, "--pairs", 100000);
		if (k < 0 || !kind_available(k) || pairs < 0)
			bench_die("bad --callgrind-kind or --pairs");
		run_kind(k, 1000); /* warm: per-CPU cache filled, allocator initialised */
		run_kind(k, pairs);
		dmm_hosted_mem_destroy(hosted, g_mem);
		return 0;
	}

	struct dmm_mem_info info;
	dmm_mem_get_info(g_mem, &info);
	bench_section(&out, "bench_page: alloc+free pair (median over repetitions)");
	bench_note(&out,
		   "  machine: %llu MiB RAM (%u zones), %ld repetitions x ~%.0f ms batches\n"
		   "  glibc: %s\n  mimalloc: %s\n",
		   (unsigned long long)mib, info.nr_zones, reps, batch_ms, g_libc_path,
		   g_mi_malloc_aligned ? g_mi_path : "not available");

	/* Warm up every kind, then size the batches. */
	long batch[NR_KINDS];
	for (int k = 0; k < NR_KINDS; k++) {
		if (!kind_available(k))
			continue;
		run_kind(k, 10000);
		batch[k] = calibrate(k, batch_ms);
	}

	double *res[NR_KINDS];
	for (int k = 0; k < NR_KINDS; k++) {
		res[k] = calloc((size_t)reps, sizeof(double));
		if (!res[k])
			bench_die("out of memory");
	}
	for (long r = 0; r < reps; r++) {
		for (int j = 0; j < NR_KINDS; j++) {
			int k = (int)((j + r) % NR_KINDS);
			if (kind_available(k))
				res[k][r] = timed_batch(k, batch[k]);
		}
	}

	double med[NR_KINDS], lo[NR_KINDS], hi[NR_KINDS];
	for (int k = 0; k < NR_KINDS; k++) {
		if (!kind_available(k))
			continue;
		lo[k] = bench_min(res[k], (size_t)reps);
		hi[k] = bench_max(res[k], (size_t)reps);
		med[k] = bench_median(res[k], (size_t)reps);
	}
	int have_mi = kind_available(K_MIMALLOC);

	if (have_mi)
		bench_report(&out, "order0_pcp_pair", med[K_PCP], "ns", "mimalloc",
			     med[K_PCP] / med[K_MIMALLOC]);
	bench_report(&out, "order0_pcp_pair", med[K_PCP], "ns", "glibc", med[K_PCP] / med[K_GLIBC]);
	if (have_mi)
		bench_report(&out, "order0_zone_lock_pair", med[K_NOCACHE], "ns", "mimalloc",
			     med[K_NOCACHE] / med[K_MIMALLOC]);
	bench_report(&out, "order0_zone_lock_pair", med[K_NOCACHE], "ns", "glibc",
		     med[K_NOCACHE] / med[K_GLIBC]);
	bench_report(&out, "order9_pair", med[K_ORDER9], "ns", NULL, 0);
	bench_report(&out, "glibc_aligned_alloc_4k_pair", med[K_GLIBC], "ns", NULL, 0);
	if (have_mi)
		bench_report(&out, "mimalloc_aligned_4k_pair", med[K_MIMALLOC], "ns", NULL, 0);
	if (!out.json) {
		printf("  spread (min..max over repetitions, ns/pair):");
		for (int k = 0; k < NR_KINDS; k++)
			if (kind_available(k))
				printf(" %s %.1f..%.1f;", kind_name[k], lo[k], hi[k]);
		printf("\n");
	}

	/* ---- two threads ---- */
	static const int tkinds[] = { K_PCP, K_NOCACHE, K_GLIBC, K_MIMALLOC };
	enum { NT = sizeof(tkinds) / sizeof(tkinds[0]) };
	struct tpool tp;
	struct worker_arg wa[2];
	pthread_t th[2];
	memset(&tp, 0, sizeof(tp));
	pthread_barrier_init(&tp.start, NULL, 3);
	pthread_barrier_init(&tp.done, NULL, 3);
	for (int i = 0; i < 2; i++) {
		wa[i].tp = &tp;
		wa[i].id = i;
		if (pthread_create(&th[i], NULL, worker, &wa[i]))
			bench_die("pthread_create failed");
	}
	double *rate[NT];
	for (int t = 0; t < NT; t++) {
		rate[t] = calloc((size_t)reps, sizeof(double));
		if (!rate[t])
			bench_die("out of memory");
	}
	/* warm-up round: each worker touches its per-CPU cache / heap */
	for (int t = 0; t < NT; t++) {
		if (!kind_available(tkinds[t]))
			continue;
		tp.kind = tkinds[t];
		tp.n = 10000;
		pthread_barrier_wait(&tp.start);
		pthread_barrier_wait(&tp.done);
	}
	for (long r = 0; r < reps; r++) {
		for (int j = 0; j < NT; j++) {
			int t = (int)((j + r) % NT);
			if (!kind_available(tkinds[t]))
				continue;
			tp.kind = tkinds[t];
			tp.n = batch[tkinds[t]];
			pthread_barrier_wait(&tp.start);
			pthread_barrier_wait(&tp.done);
			/* pairs per second per thread: the mean of the two threads */
			rate[t][r] = ((double)tp.n * 1e9 / tp.ns[0] + (double)tp.n * 1e9 / tp.ns[1]) / 2.0;
		}
	}
	tp.quit = 1;
	pthread_barrier_wait(&tp.start);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&tp.start);
	pthread_barrier_destroy(&tp.done);

	double trate[NT];
	for (int t = 0; t < NT; t++)
		if (kind_available(tkinds[t]))
			trate[t] = bench_median(rate[t], (size_t)reps);
	bench_section(&out, "bench_page: 2 threads, each on its own per-CPU cache (median)");
	/* index in tkinds: 0 pcp, 1 zone lock, 2 glibc, 3 mimalloc */
	double ns_pcp = 1e9 / trate[0], ns_zl = 1e9 / trate[1], ns_gl = 1e9 / trate[2];
	bench_report(&out, "order0_pcp_2t_pairs_per_sec_per_thread", trate[0], "pairs/s", NULL, 0);
	if (have_mi)
		bench_report(&out, "order0_pcp_2t_pair", ns_pcp, "ns", "mimalloc",
			     ns_pcp * trate[3] / 1e9);
	bench_report(&out, "order0_pcp_2t_pair", ns_pcp, "ns", "glibc", ns_pcp / ns_gl);
	bench_report(&out, "order0_zone_lock_2t_pairs_per_sec_per_thread", trate[1], "pairs/s",
		     NULL, 0);
	bench_report(&out, "order0_zone_lock_2t_pair", ns_zl, "ns", NULL, 0);
	bench_report(&out, "glibc_2t_pairs_per_sec_per_thread", trate[2], "pairs/s", NULL, 0);
	if (have_mi)
		bench_report(&out, "mimalloc_2t_pairs_per_sec_per_thread", trate[3], "pairs/s",
			     NULL, 0);

	/* Leave the allocator as we found it: everything back, invariants hold. */
	dmm_page_drain_pcp(g_mem);
	rc = dmm_page_alloc_check(g_mem);
	if (rc)
		bench_die("dmm_page_alloc_check after the benchmark: %s", dmm_errname(rc));
	for (int k = 0; k < NR_KINDS; k++)
		free(res[k]);
	for (int t = 0; t < NT; t++)
		free(rate[t]);
	dmm_hosted_mem_destroy(hosted, g_mem);
	return 0;
}

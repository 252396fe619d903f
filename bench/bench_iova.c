/* SPDX-License-Identifier: MIT */
/*
 * bench_iova: the IOVA allocator (dmm_iova_*) against the classic Linux
 * design (bench/classic_iova.c: red-black tree, cached nodes,
 * max32_alloc_size; the tree only, no per-CPU rcache), in the same run.
 *
 * Every dmamem domain covers [0, 4 GiB) (1M pages of 4 KiB) and every
 * request has the 32-bit limit 0xffffffff, so the classic allocator works
 * from its cached32 node. Its requests are rounded as dmamem's POW2 policy
 * and Linux's alloc_iova_fast() round them (a power of two up to 32 pages)
 * and size-aligned. Hosted platform with 2 CPU slots, a 1 GiB machine (the
 * dmamem tree nodes come from its page allocator).
 *
 * (0) self-check (also under --quick): the same random stream of
 *     allocations (1..64 pages, random limits) and frees through dmamem
 *     (POW2 and PAGE, caches on and off) and the classic allocator, each
 *     checked against a page bitmap: a range inside its limit, aligned as
 *     its policy says, overlapping nothing live, found by find(); a failure
 *     only when no fitting slot exists (dmamem always; classic under one
 *     limit, where its max32 shortcut is exact). Plus the classic
 *     allocator's own self-test (classic_iova_selftest).
 *
 * (1) pair, cache hit: dmm_iova_alloc + dmm_iova_free of 1 and 4 pages,
 *     default opts, steady state (the magazines loaded by the calibration
 *     runs), 16384 live ranges; 1 thread, and 2 threads each with its own
 *     loop on the same domain, each on its own CPU slot (checked): ns per
 *     pair per thread from the batch's wall time, 2t/1t, and the share of
 *     the batch both threads really ran at once (a warning below 80 %: a CPU
 *     was busy elsewhere). Baseline: the
 *     classic tree pair (there is no rcache in the baseline: this compares
 *     dmamem's cached pair with the classic slow path).
 *
 * (2) pair, cache miss: the same with no_cache = 1 (every call takes the
 *     tree) against the classic allocator, same sizes, same live
 *     population: 32768 ranges of log-uniform 1..16 pages allocated, then a
 *     random half freed (16384 live, holes scattered).
 *
 * (3) near exhaustion of the 32-bit space: the space filled top-down with
 *     ranges of R pages (R = 64, 16, 4, 1: about 2^14, 2^16, 2^18, 2^20 live
 *     ranges) and the pages below R with 1-page ranges; then ranges are
 *     freed at random in the lowest 2 % of the space until ~1024 pages (0.1
 *     %) are free, in max(8, 1024 / R) holes, never two neighbours (dmamem
 *     would take a double hole for a size-aligned request before an exact
 *     aligned fit higher up, and the pattern below would change). Everything
 *     above is full.
 *     The same layout in all three allocators (checked). Two patterns:
 *     "churn": free the topmost range and allocate it again (a long-lived
 *     mapping re-posted), then an alloc + free of 1 page (it lands in the
 *     highest hole). The re-post leaves the classic cached32 node at the top,
 *     so its 1-page allocation walks rb_prev across the whole full region
 *     every time (checked: the walk must visit more than half the ranges).
 *     "pair": the 1-page alloc + free alone, repeated; there the classic
 *     cached node stays next to the hole and the walk is short.
 *     Per level: ns per iteration for dmamem no_cache ("tree"), dmamem
 *     default ("cached") and classic; tree nodes visited per 1-page
 *     allocation after a re-post (dmamem search_steps; the classic walk
 *     length), a count that does not depend on the machine.
 *
 * (4) alignment policy: DMM_IOVA_ALIGN_POW2 against DMM_IOVA_ALIGN_PAGE
 *     for a NIC/NVMe-like mix of request sizes: 4096 B (1 page) 50 %,
 *     8192 B (2) 10 %, 9018 B (a jumbo frame: 3) 10 %, 64 KiB (16) 10 %,
 *     64 KiB + 512 (an unaligned 64 KiB buffer: 17) 10 %, 128 KiB + 512 (33)
 *     10 %. 16384 live ranges of that mix: allocated_pages (from
 *     dmm_iova_get_stats) and the address space they take (the domain's top
 *     down to the lowest range); then alloc + free pairs cycling through
 *     4096 sizes of the mix, default opts and no_cache. Ratios page / pow2.
 *
 * Method: R repetitions (default 21) of ~2 ms batches, the variants of a
 * figure in a rotating order within each repetition; medians.
 * dmm_iova_check() and classic_iova_check() after every set-up phase.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>

#include <dmamem/hosted.h>
#include <dmamem/iommu.h>

#include "bench_util.h"
#include "classic_iova.h"

#define PAGE DMM_PAGE_SIZE
#define LIM32 ((dmm_dma_addr_t)0xffffffffull)
#define PFN32 ((uint64_t)1 << 20)          /* pages below 4 GiB */

static struct dmm_mem *g_mem;
static const struct dmm_platform *g_plat;
static long g_reps;
static double g_batch_ms;
static int g_quick;
static uint64_t g_seed;

/* ---- the allocators behind one interface ------------------------------------- */

struct alc {
	const char *name;
	struct dmm_iova_domain *d;        /* dmamem, or NULL */
	struct classic_iova_domain *c;    /* classic, or NULL */
};

/* Pages a request of @bytes takes in the classic allocator: as dmamem's POW2
 * policy and Linux's alloc_iova_fast(), a power of two up to 32 pages. */
static uint64_t classic_pages(uint64_t bytes)
{
	uint64_t p = (bytes + PAGE - 1) / PAGE;
	return p <= 32 ? classic_iova_roundup_pow2(p) : p;
}

static inline int alc_alloc(const struct alc *a, uint64_t bytes, dmm_dma_addr_t limit, dmm_dma_addr_t *iova)
{
	if (a->d)
		return dmm_iova_alloc(a->d, bytes, limit, iova);
	uint64_t pfn;
	if (classic_iova_alloc(a->c, classic_pages(bytes), limit >> DMM_PAGE_SHIFT, 1, &pfn))
		return -DMM_ENOSPC;
	*iova = pfn << DMM_PAGE_SHIFT;
	return 0;
}

static inline int alc_free(const struct alc *a, dmm_dma_addr_t iova, uint64_t bytes)
{
	if (a->d)
		return dmm_iova_free(a->d, iova, bytes);
	return classic_iova_free(a->c, iova >> DMM_PAGE_SHIFT) ? -DMM_ENOENT : 0;
}

static uint64_t alc_rounded_pages(const struct alc *a, uint64_t bytes)
{
	return a->d ? dmm_iova_rounded(a->d, bytes) / PAGE : classic_pages(bytes);
}

static void alc_check(const struct alc *a, const char *when)
{
	char why[256];

	if (a->d) {
		if (dmm_iova_check(a->d))
			bench_die("dmm_iova_check failed (%s, %s)", a->name, when);
	} else if (classic_iova_check(a->c, why, sizeof(why))) {
		bench_die("classic_iova_check failed (%s): %s", when, why);
	}
}

static void alc_make(struct alc *a, const char *name, int classic, int no_cache, enum dmm_iova_align align)
{
	struct dmm_iova_opts o;
	int rc;

	memset(a, 0, sizeof(*a));
	a->name = name;
	if (classic) {
		if (classic_iova_domain_create(1, PFN32, &a->c))
			bench_die("out of memory");
		return;
	}
	dmm_iova_opts_default(&o);
	o.no_cache = no_cache;
	o.align = align;
	rc = dmm_iova_domain_create(g_mem, 0, LIM32, &o, &a->d);
	if (rc)
		bench_die("dmm_iova_domain_create: %s", dmm_errname(rc));
}

static void alc_destroy(struct alc *a)
{
	if (a->d)
		dmm_iova_domain_destroy(a->d);
	if (a->c)
		classic_iova_domain_destroy(a->c);
	memset(a, 0, sizeof(*a));
}

/* ---- live sets -------------------------------------------------------------------- */

struct live {
	dmm_dma_addr_t *iova;
	uint64_t *bytes;
	size_t n, cap;
};

static void live_push(struct live *l, dmm_dma_addr_t iova, uint64_t bytes)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 1024;
		l->iova = realloc(l->iova, l->cap * sizeof(*l->iova));
		l->bytes = realloc(l->bytes, l->cap * sizeof(*l->bytes));
		if (!l->iova || !l->bytes)
			bench_die("out of memory");
	}
	l->iova[l->n] = iova;
	l->bytes[l->n] = bytes;
	l->n++;
}

static void live_release(struct live *l)
{
	free(l->iova);
	free(l->bytes);
	memset(l, 0, sizeof(*l));
}

/* Free every range of @l (skipping freed ones: bytes 0) and empty it. */
static void live_free_all(const struct alc *a, struct live *l)
{
	for (size_t i = 0; i < l->n; i++)
		if (l->bytes[i] && alc_free(a, l->iova[i], l->bytes[i]))
			bench_die("%s: free of a live range failed", a->name);
	l->n = 0;
}

/* ---- (0) self-check -------------------------------------------------------------- */

#define CHK_PAGES 16384u               /* domain of the self-check: 64 MiB */

static uint64_t pow2_up(uint64_t n)
{
	return classic_iova_roundup_pow2(n);
}

/* A free slot of @n pages aligned to @al in pages [1, limit]? */
static int shadow_fits(const uint8_t *used, uint64_t limit, uint64_t n, uint64_t al)
{
	for (uint64_t a = 1; a <= limit;) {
		uint64_t b, p;
		if (used[a]) {
			a++;
			continue;
		}
		for (b = a; b + 1 <= limit && !used[b + 1]; b++)
			;
		p = (a + al - 1) / al * al;
		if (p + n - 1 <= b)
			return 1;
		a = b + 1;
	}
	return 0;
}

/*
 * The random stream on one allocator. @fixed_limit: every request below the
 * domain's top (else random limits). @complete: a failure must mean that
 * no slot fits. The classic allocator gets a domain of its own whose
 * 32-bit boundary is the top of this small space.
 */
static void check_stream(const char *name, int classic, int no_cache, enum dmm_iova_align align, int fixed_limit,
			 long ops, uint64_t seed)
{
	struct alc a;
	struct live l = { 0 };
	struct bench_rng rng = { seed };
	uint8_t *used = calloc(CHK_PAGES, 1);
	uint64_t fails = 0, oks = 0;
	struct dmm_iova_opts o;
	int rc;

	if (!used)
		bench_die("out of memory");
	memset(&a, 0, sizeof(a));
	a.name = name;
	if (classic) {
		if (classic_iova_domain_create(1, CHK_PAGES, &a.c))
			bench_die("out of memory");
	} else {
		dmm_iova_opts_default(&o);
		o.no_cache = no_cache;
		o.align = align;
		rc = dmm_iova_domain_create(g_mem, 0, (dmm_dma_addr_t)CHK_PAGES * PAGE - 1, &o, &a.d);
		if (rc)
			bench_die("dmm_iova_domain_create: %s", dmm_errname(rc));
	}
	for (long i = 0; i < ops; i++) {
		int alloc_pct = ((i / 3000) & 1) ? 35 : 75;
		if (l.n == 0 || (long)bench_rand_below(&rng, 100) < alloc_pct) {
			uint64_t pages_req = bench_rand_log(&rng, 1, 64);
			uint64_t bytes = (pages_req - 1) * PAGE + 1 + bench_rand_below(&rng, PAGE);
			uint64_t lim_pfn = CHK_PAGES - 1, n, al, pfn;
			dmm_dma_addr_t iova = 0, start;
			uint64_t fsize;
			if (!fixed_limit)
				lim_pfn = 64 + bench_rand_below(&rng, CHK_PAGES - 64);
			n = alc_rounded_pages(&a, bytes);
			al = (classic || align == DMM_IOVA_ALIGN_POW2) ? pow2_up(pages_req) : 1;
			if (n != (classic || align == DMM_IOVA_ALIGN_POW2 ? (pages_req <= 32 ? pow2_up(pages_req) : pages_req)
									   : pages_req))
				bench_die("%s: %llu bytes rounded to %llu pages", name, (unsigned long long)bytes,
					  (unsigned long long)n);
			rc = alc_alloc(&a, bytes, (lim_pfn + 1) * PAGE - 1, &iova);
			if (rc) {
				fails++;
				if (rc != -DMM_ENOSPC)
					bench_die("%s: op %ld: %s", name, i, dmm_errname(rc));
				if ((!classic || fixed_limit) && shadow_fits(used, lim_pfn, n, al))
					bench_die("%s: op %ld: %llu pages below pfn %#llx failed with room left", name, i,
						  (unsigned long long)n, (unsigned long long)lim_pfn);
				continue;
			}
			oks++;
			pfn = iova / PAGE;
			if (iova % PAGE || pfn < 1 || pfn + n - 1 > lim_pfn || pfn % al)
				bench_die("%s: op %ld: [%#llx, +%llu pages) outside [1, %#llx] or not aligned to %llu",
					  name, i, (unsigned long long)pfn, (unsigned long long)n,
					  (unsigned long long)lim_pfn, (unsigned long long)al);
			for (uint64_t p = pfn; p < pfn + n; p++) {
				if (used[p])
					bench_die("%s: op %ld: [%#llx, +%llu pages) overlaps a live range", name, i,
						  (unsigned long long)pfn, (unsigned long long)n);
				used[p] = 1;
			}
			if (a.d) {
				if (dmm_iova_find(a.d, iova + n * PAGE - 1, &start, &fsize) || start != iova ||
				    fsize != n * PAGE)
					bench_die("%s: op %ld: find does not return the new range", name, i);
			} else {
				uint64_t lo, hi;
				if (classic_iova_find(a.c, pfn + n - 1, &lo, &hi) || lo != pfn || hi != pfn + n - 1)
					bench_die("%s: op %ld: find does not return the new range", name, i);
			}
			live_push(&l, iova, bytes);
		} else {
			size_t k = (size_t)bench_rand_below(&rng, l.n);
			dmm_dma_addr_t iova = l.iova[k];
			uint64_t bytes = l.bytes[k], n = alc_rounded_pages(&a, bytes);
			if (alc_free(&a, iova, bytes))
				bench_die("%s: op %ld: free of a live range failed", name, i);
			memset(used + iova / PAGE, 0, n);
			l.n--;
			l.iova[k] = l.iova[l.n];
			l.bytes[k] = l.bytes[l.n];
		}
		if (i % 499 == 0)
			alc_check(&a, "self-check");
	}
	alc_check(&a, "self-check");
	if (ops >= 4000 && (!fails || !oks))
		bench_die("%s: the self-check did not reach its cases (%llu ok, %llu failed)", name,
			  (unsigned long long)oks, (unsigned long long)fails);
	live_free_all(&a, &l);
	if (a.d) {
		struct dmm_iova_stats st;
		dmm_iova_trim(a.d, 1);
		dmm_iova_get_stats(a.d, &st);
		if (st.ranges || st.allocated_pages || st.cached_ranges)
			bench_die("%s: %llu ranges left after freeing everything", name, (unsigned long long)st.ranges);
	} else {
		struct classic_iova_stats st;
		classic_iova_get_stats(a.c, &st);
		if (st.ranges || st.pages)
			bench_die("%s: %llu ranges left after freeing everything", name, (unsigned long long)st.ranges);
	}
	alc_check(&a, "self-check, empty");
	alc_destroy(&a);
	live_release(&l);
	free(used);
}

static void self_check(struct bench_out *out)
{
	static const struct {
		const char *name;
		int classic, no_cache;
		enum dmm_iova_align align;
	} v[] = {
		{ "dmamem pow2", 0, 0, DMM_IOVA_ALIGN_POW2 },
		{ "dmamem pow2 no_cache", 0, 1, DMM_IOVA_ALIGN_POW2 },
		{ "dmamem page", 0, 0, DMM_IOVA_ALIGN_PAGE },
		{ "dmamem page no_cache", 0, 1, DMM_IOVA_ALIGN_PAGE },
		{ "classic", 1, 0, DMM_IOVA_ALIGN_POW2 },
	};
	long ops = g_quick ? 4000 : 20000;
	char why[256];
	uint64_t t0 = bench_now_ns();

	if (classic_iova_selftest(g_seed, ops, why, sizeof(why)))
		bench_die("classic_iova_selftest: %s", why);
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		for (int fixed = 0; fixed < 2; fixed++)
			check_stream(v[i].name, v[i].classic, v[i].no_cache, v[i].align, fixed, ops,
				     g_seed + i * 2 + (uint64_t)fixed);
	bench_note(out, "\n(0) self-check: %ld random ops x 2 streams on 5 allocators passed (%.2f s)\n", ops,
		   (double)(bench_now_ns() - t0) / 1e9);
}

/* ---- thread pool (2 workers) ------------------------------------------------------ */

struct job {
	const struct alc *a;
	uint64_t bytes;
};

struct tpool {
	pthread_barrier_t start, done;
	long n;
	unsigned active;
	int quit;
	const struct job *job;
	uint64_t t0[2], t1[2];
	unsigned slot[2];   /* the hosted CPU slot each worker runs on */
	double overlap;     /* last 2-thread batch: share of its wall time both ran */
};

struct worker_arg {
	struct tpool *tp;
	unsigned id;
};

static void pairs(const struct alc *a, uint64_t bytes, long n)
{
	dmm_dma_addr_t iova;
	int rc;

	if (a->d) {
		for (long i = 0; i < n; i++) {
			rc = dmm_iova_alloc(a->d, bytes, LIM32, &iova);
			if (rc)
				bench_die("%s: alloc: %s", a->name, dmm_errname(rc));
			dmm_iova_free(a->d, iova, bytes);
		}
	} else {
		uint64_t pages = classic_pages(bytes), pfn;
		for (long i = 0; i < n; i++) {
			if (classic_iova_alloc(a->c, pages, PFN32 - 1, 1, &pfn))
				bench_die("classic: alloc failed");
			classic_iova_free(a->c, pfn);
		}
	}
}

static void *worker(void *p)
{
	struct worker_arg *w = p;
	struct tpool *tp = w->tp;

	for (;;) {
		pthread_barrier_wait(&tp->start);
		if (tp->quit)
			return NULL;
		if (w->id < tp->active) {
			tp->slot[w->id] = g_plat->cpu_id ? g_plat->cpu_id(g_plat->ctx) : 0;
			tp->t0[w->id] = bench_now_ns();
			pairs(tp->job->a, tp->job->bytes, tp->n);
			tp->t1[w->id] = bench_now_ns();
		}
		pthread_barrier_wait(&tp->done);
	}
}

/*
 * One batch of @n pairs on each of @threads workers: ns per pair per thread,
 * from the wall time between the first thread's start and the last one's
 * end (two threads that ran one after the other would show twice the
 * single-thread figure, not the same).
 */
static double batch(struct tpool *tp, const struct job *j, unsigned threads, long n)
{
	uint64_t first, last;

	tp->job = j;
	tp->n = n;
	tp->active = threads;
	pthread_barrier_wait(&tp->start);
	pthread_barrier_wait(&tp->done);
	first = tp->t0[0];
	last = tp->t1[0];
	for (unsigned i = 1; i < threads; i++) {
		if (tp->t0[i] < first)
			first = tp->t0[i];
		if (tp->t1[i] > last)
			last = tp->t1[i];
	}
	if (threads == 2) {
		uint64_t s = tp->t0[0] > tp->t0[1] ? tp->t0[0] : tp->t0[1];
		uint64_t e = tp->t1[0] < tp->t1[1] ? tp->t1[0] : tp->t1[1];
		tp->overlap = e > s && last > first ? (double)(e - s) / (double)(last - first) : 0.0;
	}
	return (double)(last - first) / (double)n;
}

static long calibrate_pool(struct tpool *tp, const struct job *j)
{
	long n = 64;

	for (;;) {
		double ns = batch(tp, j, 1, n);
		if (ns * (double)n > 2e6 || n > (1l << 24))
			return bench_batch_len(ns, g_batch_ms, 100);
		n *= 4;
	}
}

/* ---- (1) + (2): pairs, cache hit and cache miss ------------------------------------ */

/* 32768 ranges of log-uniform 1..16 pages, then a seeded random half freed. */
static void populate_random(const struct alc *a, struct live *l)
{
	struct bench_rng rng = { g_seed ^ 0x1234 };
	size_t total = 32768;

	for (size_t i = 0; i < total; i++) {
		uint64_t bytes = bench_rand_log(&rng, 1, 16) * PAGE;
		dmm_dma_addr_t iova;
		int rc = alc_alloc(a, bytes, LIM32, &iova);
		if (rc)
			bench_die("%s: populating: %s", a->name, dmm_errname(rc));
		live_push(l, iova, bytes);
	}
	for (size_t i = total; i-- > 1;) {
		size_t j = (size_t)bench_rand_below(&rng, i + 1);
		dmm_dma_addr_t t = l->iova[i];
		uint64_t b = l->bytes[i];
		l->iova[i] = l->iova[j];
		l->bytes[i] = l->bytes[j];
		l->iova[j] = t;
		l->bytes[j] = b;
	}
	for (size_t i = total / 2; i < total; i++) {
		if (alc_free(a, l->iova[i], l->bytes[i]))
			bench_die("%s: populating: free failed", a->name);
		l->bytes[i] = 0;
	}
	if (a->d)
		dmm_iova_trim(a->d, 1); /* the freed half back in the tree */
	alc_check(a, "after populating");
}

enum { P_HIT = 0, P_MISS, P_CLASSIC, NR_P };

static void bench_pairs(struct bench_out *out)
{
	struct alc a[NR_P];
	struct live l[NR_P];
	struct tpool tp;
	struct worker_arg wa[2];
	pthread_t t[2];
	static const uint64_t sizes[] = { 1, 4 };
	double *v[NR_P][2], *ov;
	char name[128];

	alc_make(&a[P_HIT], "dmamem default", 0, 0, DMM_IOVA_ALIGN_POW2);
	alc_make(&a[P_MISS], "dmamem no_cache", 0, 1, DMM_IOVA_ALIGN_POW2);
	alc_make(&a[P_CLASSIC], "classic", 1, 0, DMM_IOVA_ALIGN_POW2);
	memset(l, 0, sizeof(l));
	if (!(ov = calloc((size_t)g_reps * NR_P, sizeof(double))))
		bench_die("out of memory");
	for (int k = 0; k < NR_P; k++) {
		populate_random(&a[k], &l[k]);
		for (int th = 0; th < 2; th++)
			if (!(v[k][th] = calloc((size_t)g_reps, sizeof(double))))
				bench_die("out of memory");
	}
	{
		struct dmm_iova_stats s0, s1;
		struct classic_iova_stats c;
		dmm_iova_get_stats(a[P_HIT].d, &s0);
		dmm_iova_get_stats(a[P_MISS].d, &s1);
		classic_iova_get_stats(a[P_CLASSIC].c, &c);
		if (s0.ranges != 16384 || s1.ranges != 16384 || c.ranges != 16384)
			bench_die("populations differ: %llu, %llu, %llu live ranges", (unsigned long long)s0.ranges,
				  (unsigned long long)s1.ranges, (unsigned long long)c.ranges);
		bench_note(out,
			   "\nlive population: 16384 ranges of 1..16 pages (log-uniform), holes from a random half freed;\n"
			   "pages in ranges: dmamem %llu, classic %llu; tree depth (dmamem) %llu\n",
			   (unsigned long long)s0.allocated_pages, (unsigned long long)c.pages,
			   (unsigned long long)s0.tree_depth);
	}

	memset(&tp, 0, sizeof(tp));
	pthread_barrier_init(&tp.start, NULL, 3);
	pthread_barrier_init(&tp.done, NULL, 3);
	for (unsigned i = 0; i < 2; i++) {
		wa[i].tp = &tp;
		wa[i].id = i;
		if (pthread_create(&t[i], NULL, worker, &wa[i]))
			bench_die("pthread_create");
	}

	for (size_t si = 0; si < 2; si++) {
		uint64_t bytes = sizes[si] * PAGE;
		struct job j[NR_P];
		long n[NR_P];
		double med[NR_P][2], overlap;
		size_t nov = 0;
		struct dmm_iova_stats h0, h1;

		for (int k = 0; k < NR_P; k++) {
			j[k].a = &a[k];
			j[k].bytes = bytes;
			n[k] = calibrate_pool(&tp, &j[k]);
			batch(&tp, &j[k], 2, n[k] / 4 + 1); /* warm-up: both threads' magazines */
		}
		if (tp.slot[0] == tp.slot[1])
			bench_die("the two workers share CPU slot %u", tp.slot[0]);
		dmm_iova_get_stats(a[P_HIT].d, &h0);
		for (long r = 0; r < g_reps; r++)
			for (int q = 0; q < NR_P * 2; q++) {
				int x = (int)((q + r) % (NR_P * 2)), k = x / 2, th = x % 2;
				v[k][th][r] = batch(&tp, &j[k], (unsigned)th + 1, n[k]);
				if (th)
					ov[nov++] = tp.overlap;
			}
		dmm_iova_get_stats(a[P_HIT].d, &h1);
		overlap = 100.0 * bench_median(ov, nov);
		if (overlap < 80.0)
			bench_note(out,
				   "\nwarning: the two threads ran at the same time for only %.0f %% of a batch (median): "
				   "one CPU was busy elsewhere (or the affinity mask allows one); the 2-thread figures below mean little\n",
				   overlap);
		for (int k = 0; k < NR_P; k++) {
			for (int th = 0; th < 2; th++)
				med[k][th] = bench_median(v[k][th], (size_t)g_reps);
			alc_check(&a[k], "after the pairs");
		}

		snprintf(name, sizeof(name),
			 "(1) alloc+free pair, cache hit: %llu page%s, default opts, 16384 live ranges, ns per pair",
			 (unsigned long long)sizes[si], sizes[si] > 1 ? "s" : "");
		bench_section(out, name);
		snprintf(name, sizeof(name), "hit_%llup_1t", (unsigned long long)sizes[si]);
		bench_report(out, name, med[P_HIT][0], "ns", "classic_tree", med[P_HIT][0] / med[P_CLASSIC][0]);
		snprintf(name, sizeof(name), "hit_%llup_2t", (unsigned long long)sizes[si]);
		bench_report(out, name, med[P_HIT][1], "ns", "1_thread", med[P_HIT][1] / med[P_HIT][0]);
		bench_report(out, name, med[P_HIT][1], "ns", "classic_tree_2t", med[P_HIT][1] / med[P_CLASSIC][1]);
		snprintf(name, sizeof(name), "hit_%llup_hit_rate", (unsigned long long)sizes[si]);
		bench_report(out, name,
			     100.0 * (double)(h1.cache_hits - h0.cache_hits) /
				     (double)(h1.allocs - h0.allocs ? h1.allocs - h0.allocs : 1),
			     "%", NULL, 0);

		snprintf(name, sizeof(name),
			 "(2) alloc+free pair, cache miss: %llu page%s, no_cache = 1 (the tree), 16384 live ranges, ns per pair",
			 (unsigned long long)sizes[si], sizes[si] > 1 ? "s" : "");
		bench_section(out, name);
		snprintf(name, sizeof(name), "miss_%llup_1t", (unsigned long long)sizes[si]);
		bench_report(out, name, med[P_MISS][0], "ns", "classic_tree", med[P_MISS][0] / med[P_CLASSIC][0]);
		snprintf(name, sizeof(name), "miss_%llup_2t", (unsigned long long)sizes[si]);
		bench_report(out, name, med[P_MISS][1], "ns", "1_thread", med[P_MISS][1] / med[P_MISS][0]);
		bench_report(out, name, med[P_MISS][1], "ns", "classic_tree_2t", med[P_MISS][1] / med[P_CLASSIC][1]);
		snprintf(name, sizeof(name), "classic_tree_%llup_1t", (unsigned long long)sizes[si]);
		bench_report(out, name, med[P_CLASSIC][0], "ns", NULL, 0);
		snprintf(name, sizeof(name), "classic_tree_%llup_2t", (unsigned long long)sizes[si]);
		bench_report(out, name, med[P_CLASSIC][1], "ns", "1_thread", med[P_CLASSIC][1] / med[P_CLASSIC][0]);
		snprintf(name, sizeof(name), "pairs_%llup_2t_overlap", (unsigned long long)sizes[si]);
		bench_report(out, name, overlap, "%", NULL, 0);
	}

	tp.quit = 1;
	pthread_barrier_wait(&tp.start);
	for (unsigned i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&tp.start);
	pthread_barrier_destroy(&tp.done);
	free(ov);
	for (int k = 0; k < NR_P; k++) {
		live_free_all(&a[k], &l[k]);
		alc_check(&a[k], "emptied");
		alc_destroy(&a[k]);
		live_release(&l[k]);
		free(v[k][0]);
		free(v[k][1]);
	}
}

/* ---- (3) near exhaustion of the 32-bit space --------------------------------------- */

enum { E_TREE = 0, E_CACHED, E_CLASSIC, NR_E };
static const char *const e_name[NR_E] = { "tree", "cached", "classic" };

struct exh {
	struct alc *a;
	dmm_dma_addr_t top;      /* the topmost range (re-posted by "churn") */
	uint64_t rbytes;         /* its size */
};

static inline void exh_pair(const struct alc *a)
{
	dmm_dma_addr_t h;

	if (alc_alloc(a, PAGE, LIM32, &h))
		bench_die("%s: no hole left", a->name);
	alc_free(a, h, PAGE);
}

static inline void exh_repost(const struct exh *e)
{
	dmm_dma_addr_t t = 0;

	int rc;

	if (alc_free(e->a, e->top, e->rbytes))
		bench_die("%s: free of the top range failed", e->a->name);
	rc = alc_alloc(e->a, e->rbytes, LIM32, &t);
	if (rc || t != e->top)
		bench_die("%s: the re-posted top range moved from %#llx to %#llx (%s)", e->a->name,
			  (unsigned long long)e->top, (unsigned long long)t, dmm_errname(rc));
}

static void exh_churn(const struct exh *e, long n)
{
	for (long i = 0; i < n; i++) {
		exh_repost(e);
		exh_pair(e->a);
	}
}

static void exh_pairs(const struct exh *e, long n)
{
	for (long i = 0; i < n; i++)
		exh_pair(e->a);
}

/* Tree nodes visited by one 1-page allocation right after a re-post (mean of 8). */
static double exh_steps(const struct exh *e)
{
	double s = 0;

	for (int i = 0; i < 8; i++) {
		dmm_dma_addr_t h;
		uint64_t before, after;
		exh_repost(e);
		if (e->a->d) {
			struct dmm_iova_stats st;
			dmm_iova_get_stats(e->a->d, &st);
			before = st.search_steps;
			if (alc_alloc(e->a, PAGE, LIM32, &h))
				bench_die("no hole");
			dmm_iova_get_stats(e->a->d, &st);
			after = st.search_steps;
		} else {
			struct classic_iova_stats st;
			classic_iova_get_stats(e->a->c, &st);
			if (st.cached32_pfn_lo != e->top / PAGE)
				bench_die("classic: the cached32 node is not at the top after the re-post");
			before = st.search_steps;
			if (alc_alloc(e->a, PAGE, LIM32, &h))
				bench_die("no hole");
			classic_iova_get_stats(e->a->c, &st);
			after = st.search_steps;
		}
		alc_free(e->a, h, PAGE);
		s += (double)(after - before);
	}
	return s / 8;
}

static long exh_calibrate(const struct exh *e, int churn)
{
	long n = 1;

	for (;;) {
		uint64_t t0 = bench_now_ns();
		if (churn)
			exh_churn(e, n);
		else
			exh_pairs(e, n);
		double dt = (double)(bench_now_ns() - t0);
		if (dt > 2e6 || n > (1l << 22))
			return bench_batch_len(dt / (double)n, g_batch_ms, 1);
		n *= 4;
	}
}

struct exh_result {
	uint64_t live;
	double churn[NR_E], pair[NR_E], steps_tree, steps_classic;
};

static void bench_exhaust_level(struct bench_out *out, uint64_t r_pages, const char *label, struct exh_result *res)
{
	struct alc a[NR_E];
	struct live l[NR_E];
	struct exh e[NR_E];
	struct bench_rng rng = { g_seed ^ r_pages };
	uint64_t rbytes = r_pages * PAGE, hole_pages = 0, nholes, lo_end = PFN32 / 50;
	size_t *cand = NULL, ncand = 0;
	uint8_t *picked;
	double *vc[NR_E], *vp[NR_E];
	char name[160];
	uint64_t t0 = bench_now_ns();

	alc_make(&a[E_TREE], "dmamem no_cache", 0, 1, DMM_IOVA_ALIGN_POW2);
	alc_make(&a[E_CACHED], "dmamem default", 0, 0, DMM_IOVA_ALIGN_POW2);
	alc_make(&a[E_CLASSIC], "classic", 1, 0, DMM_IOVA_ALIGN_POW2);
	memset(l, 0, sizeof(l));

	/* fill top-down: ranges of R pages, then single pages below them */
	for (int k = 0; k < NR_E; k++) {
		dmm_dma_addr_t iova;
		while (alc_alloc(&a[k], rbytes, LIM32, &iova) == 0)
			live_push(&l[k], iova, rbytes);
		while (alc_alloc(&a[k], PAGE, LIM32, &iova) == 0)
			live_push(&l[k], iova, PAGE);
		if (l[k].n != l[0].n || memcmp(l[k].iova, l[0].iova, l[0].n * sizeof(*l[0].iova)))
			bench_die("exhaustion, R=%llu: the three allocators did not build the same layout",
				  (unsigned long long)r_pages);
	}
	if (l[0].n == 0 || l[0].iova[0] != PFN32 * PAGE - rbytes)
		bench_die("exhaustion: the fill is not top-down");
	/* holes: ranges of R pages in the lowest 2 % of the space, at random */
	cand = malloc(l[0].n * sizeof(*cand));
	if (!cand)
		bench_die("out of memory");
	for (size_t i = 0; i < l[0].n; i++)
		if (l[0].bytes[i] == rbytes && l[0].iova[i] / PAGE < lo_end)
			cand[ncand++] = i;
	nholes = 1024 / r_pages > 8 ? 1024 / r_pages : 8;
	if (nholes * 4 > ncand)
		bench_die("exhaustion: not enough candidates for holes");
	/* never two neighbours: every hole is exactly one aligned range of R
	 * pages (dmamem prefers a gap of 2R - 1 pages or more anywhere below the
	 * limit to an exact aligned fit, so a double hole would draw the
	 * re-posted top range down) */
	picked = calloc(l[0].n + 1, 1);
	if (!picked)
		bench_die("out of memory");
	for (uint64_t h = 0; h < nholes;) {
		size_t idx = cand[bench_rand_below(&rng, ncand)];
		if (picked[idx] || (idx > 0 && picked[idx - 1]) || picked[idx + 1])
			continue;
		picked[idx] = 1;
		for (int k = 0; k < NR_E; k++) {
			if (alc_free(&a[k], l[k].iova[idx], l[k].bytes[idx]))
				bench_die("exhaustion: free failed");
			l[k].bytes[idx] = 0;
		}
		hole_pages += r_pages;
		h++;
	}
	free(picked);
	free(cand);
	dmm_iova_trim(a[E_CACHED].d, 1); /* the holes back in the tree */
	res->live = l[0].n - nholes;
	for (int k = 0; k < NR_E; k++) {
		alc_check(&a[k], "after the fill");
		e[k].a = &a[k];
		e[k].top = l[k].iova[0];
		e[k].rbytes = rbytes;
		if (!(vc[k] = calloc((size_t)g_reps, sizeof(double))) ||
		    !(vp[k] = calloc((size_t)g_reps, sizeof(double))))
			bench_die("out of memory");
	}
	{
		struct dmm_iova_stats st;
		struct classic_iova_stats cs;
		dmm_iova_get_stats(a[E_TREE].d, &st);
		classic_iova_get_stats(a[E_CLASSIC].c, &cs);
		if (st.ranges != res->live || cs.ranges != res->live ||
		    st.allocated_pages != PFN32 - 1 - hole_pages || cs.pages != st.allocated_pages)
			bench_die("exhaustion: counts differ (%llu / %llu ranges, %llu / %llu pages)",
				  (unsigned long long)st.ranges, (unsigned long long)cs.ranges,
				  (unsigned long long)st.allocated_pages, (unsigned long long)cs.pages);
		bench_note(out,
			   "\n(3) %s: %llu live ranges (%llu pages each, 1-page ones at the bottom), %llu holes of %llu "
			   "pages in the lowest 2 %%, %.3f %% of the space free; dmamem tree depth %llu (set-up %.2f s)\n",
			   label, (unsigned long long)res->live, (unsigned long long)r_pages, (unsigned long long)nholes,
			   (unsigned long long)r_pages, 100.0 * (double)hole_pages / (double)PFN32,
			   (unsigned long long)st.tree_depth, (double)(bench_now_ns() - t0) / 1e9);
	}

	res->steps_tree = exh_steps(&e[E_TREE]);
	res->steps_classic = exh_steps(&e[E_CLASSIC]);
	if (res->steps_classic < (double)res->live / 2)
		bench_die("exhaustion: the classic walk visited only %.0f of %llu ranges: not the pathological pattern",
			  res->steps_classic, (unsigned long long)res->live);
	{
		long nc[NR_E], np[NR_E];
		for (int k = 0; k < NR_E; k++) {
			nc[k] = exh_calibrate(&e[k], 1);
			np[k] = exh_calibrate(&e[k], 0);
		}
		for (long r = 0; r < g_reps; r++)
			for (int q = 0; q < NR_E * 2; q++) {
				int x = (int)((q + r) % (NR_E * 2)), k = x / 2;
				uint64_t s = bench_now_ns();
				if (x % 2) {
					exh_pairs(&e[k], np[k]);
					vp[k][r] = (double)(bench_now_ns() - s) / (double)np[k];
				} else {
					exh_churn(&e[k], nc[k]);
					vc[k][r] = (double)(bench_now_ns() - s) / (double)nc[k];
				}
			}
	}
	for (int k = 0; k < NR_E; k++) {
		res->churn[k] = bench_median(vc[k], (size_t)g_reps);
		res->pair[k] = bench_median(vp[k], (size_t)g_reps);
		alc_check(&a[k], "after the exhaustion runs");
		free(vc[k]);
		free(vp[k]);
	}

	snprintf(name, sizeof(name),
		 "(3) near exhaustion, %s live ranges: ns per iteration (churn: re-post the top range + 1-page pair; pair: 1-page pair)",
		 label);
	bench_section(out, name);
	for (int k = 0; k < NR_E; k++) {
		snprintf(name, sizeof(name), "exh%s_churn_%s", label, e_name[k]);
		if (k == E_CLASSIC)
			bench_report(out, name, res->churn[k], "ns", NULL, 0);
		else
			bench_report(out, name, res->churn[k], "ns", "classic", res->churn[k] / res->churn[E_CLASSIC]);
	}
	for (int k = 0; k < NR_E; k++) {
		snprintf(name, sizeof(name), "exh%s_pair_%s", label, e_name[k]);
		if (k == E_CLASSIC)
			bench_report(out, name, res->pair[k], "ns", NULL, 0);
		else
			bench_report(out, name, res->pair[k], "ns", "classic", res->pair[k] / res->pair[E_CLASSIC]);
	}
	snprintf(name, sizeof(name), "exh%s_tree_steps_per_alloc", label);
	bench_report(out, name, res->steps_tree, "nodes", "classic", res->steps_tree / res->steps_classic);
	snprintf(name, sizeof(name), "exh%s_classic_steps_per_alloc", label);
	bench_report(out, name, res->steps_classic, "nodes", NULL, 0);
	snprintf(name, sizeof(name), "exh%s_live_ranges", label);
	bench_report(out, name, (double)res->live, "ranges", NULL, 0);

	for (int k = 0; k < NR_E; k++) {
		live_free_all(&a[k], &l[k]);
		if (a[k].d)
			dmm_iova_trim(a[k].d, 1);
		alc_check(&a[k], "emptied");
		alc_destroy(&a[k]);
		live_release(&l[k]);
	}
}

static void bench_exhaust(struct bench_out *out)
{
	static const uint64_t rs[] = { 64, 16, 4, 1 };
	static const char *const labels[] = { "16k", "64k", "256k", "1m" };
	struct exh_result res[4];
	size_t nl = g_quick ? 2 : 4, last;
	char name[128];

	for (size_t i = 0; i < nl; i++)
		bench_exhaust_level(out, rs[i], labels[i], &res[i]);
	last = nl - 1;
	snprintf(name, sizeof(name), "(3) growth from %s to %s live ranges (x; live ratio %.1f, log2 ratio %.2f)",
		 labels[0], labels[last], (double)res[last].live / (double)res[0].live,
		 log2((double)res[last].live) / log2((double)res[0].live));
	bench_section(out, name);
	bench_report(out, "exh_growth_churn_tree", res[last].churn[E_TREE] / res[0].churn[E_TREE], "x", NULL, 0);
	bench_report(out, "exh_growth_churn_cached", res[last].churn[E_CACHED] / res[0].churn[E_CACHED], "x", NULL,
		     0);
	bench_report(out, "exh_growth_churn_classic", res[last].churn[E_CLASSIC] / res[0].churn[E_CLASSIC], "x",
		     NULL, 0);
	bench_report(out, "exh_growth_tree_steps", res[last].steps_tree / res[0].steps_tree, "x", NULL, 0);
	bench_report(out, "exh_growth_classic_steps", res[last].steps_classic / res[0].steps_classic, "x", NULL, 0);
	bench_report(out, "exh_live_ratio", (double)res[last].live / (double)res[0].live, "x", NULL, 0);
}

/* ---- (4) alignment policy ------------------------------------------------------------ */

/* The NIC/NVMe-like mix: bytes and share in percent. */
static const struct {
	uint64_t bytes;
	unsigned pct;
} g_mix[] = {
	{ 4096, 50 }, { 8192, 10 }, { 9018, 10 }, { 65536, 10 }, { 65536 + 512, 10 }, { 131072 + 512, 10 },
};

static uint64_t mix_draw(struct bench_rng *r)
{
	unsigned x = (unsigned)bench_rand_below(r, 100), acc = 0;

	for (size_t i = 0; i < sizeof(g_mix) / sizeof(g_mix[0]); i++) {
		acc += g_mix[i].pct;
		if (x < acc)
			return g_mix[i].bytes;
	}
	return g_mix[0].bytes;
}

struct mix_job {
	const struct alc *a;
	const uint64_t *sizes;   /* 4096 sizes, cycled */
};

static void mix_pairs(const struct mix_job *j, long n)
{
	for (long i = 0; i < n; i++) {
		uint64_t bytes = j->sizes[i & 4095];
		dmm_dma_addr_t iova;
		int rc = dmm_iova_alloc(j->a->d, bytes, LIM32, &iova);
		if (rc)
			bench_die("%s: alloc: %s", j->a->name, dmm_errname(rc));
		dmm_iova_free(j->a->d, iova, bytes);
	}
}

static void mix_pairs_cb(const void *arg, long n)
{
	mix_pairs(arg, n);
}

enum { A_POW2 = 0, A_PAGE, A_POW2_NC, A_PAGE_NC, NR_A };

static void bench_align(struct bench_out *out)
{
	struct alc a[NR_A];
	struct live l[NR_A];
	struct mix_job j[NR_A];
	uint64_t *sizes = malloc(4096 * sizeof(*sizes));
	uint64_t nlive = g_quick ? 2048 : 16384, requested = 0, pages[NR_A], foot[NR_A];
	struct bench_rng rng = { g_seed ^ 0xa11 };
	double *v[NR_A], med[NR_A], steps[NR_A];
	long n[NR_A];
	struct dmm_iova_stats s0[NR_A], s1[NR_A];
	char name[160];

	if (!sizes)
		bench_die("out of memory");
	for (int i = 0; i < 4096; i++)
		sizes[i] = mix_draw(&rng);
	alc_make(&a[A_POW2], "dmamem pow2", 0, 0, DMM_IOVA_ALIGN_POW2);
	alc_make(&a[A_PAGE], "dmamem page", 0, 0, DMM_IOVA_ALIGN_PAGE);
	alc_make(&a[A_POW2_NC], "dmamem pow2 no_cache", 0, 1, DMM_IOVA_ALIGN_POW2);
	alc_make(&a[A_PAGE_NC], "dmamem page no_cache", 0, 1, DMM_IOVA_ALIGN_PAGE);
	memset(l, 0, sizeof(l));
	for (int k = 0; k < NR_A; k++) {
		struct bench_rng r2 = { g_seed ^ 0xb22 };
		struct dmm_iova_stats st;
		dmm_dma_addr_t lowest = LIM32 + 1;
		for (uint64_t i = 0; i < nlive; i++) {
			uint64_t bytes = mix_draw(&r2);
			dmm_dma_addr_t iova;
			int rc = alc_alloc(&a[k], bytes, LIM32, &iova);
			if (rc)
				bench_die("%s: %s", a[k].name, dmm_errname(rc));
			if (iova < lowest)
				lowest = iova;
			if (k == 0)
				requested += (bytes + PAGE - 1) / PAGE;
			live_push(&l[k], iova, bytes);
		}
		alc_check(&a[k], "after the mix fill");
		dmm_iova_get_stats(a[k].d, &st);
		pages[k] = st.allocated_pages;
		foot[k] = (LIM32 + 1 - lowest) / PAGE;
		j[k].a = &a[k];
		j[k].sizes = sizes;
		if (!(v[k] = calloc((size_t)g_reps, sizeof(double))))
			bench_die("out of memory");
	}
	for (int k = 0; k < NR_A; k++) {
		n[k] = bench_calibrate(mix_pairs_cb, &j[k], 64, 1l << 24, g_batch_ms, 100);
		dmm_iova_get_stats(a[k].d, &s0[k]);
	}
	for (long r = 0; r < g_reps; r++)
		for (int q = 0; q < NR_A; q++) {
			int k = (int)((q + r) % NR_A);
			uint64_t s = bench_now_ns();
			mix_pairs(&j[k], n[k]);
			v[k][r] = (double)(bench_now_ns() - s) / (double)n[k];
		}
	for (int k = 0; k < NR_A; k++) {
		uint64_t tree;
		med[k] = bench_median(v[k], (size_t)g_reps);
		dmm_iova_get_stats(a[k].d, &s1[k]);
		tree = (s1[k].cache_misses - s0[k].cache_misses) + (s1[k].uncacheable - s0[k].uncacheable);
		steps[k] = (double)(s1[k].search_steps - s0[k].search_steps) / (double)(tree ? tree : 1);
		alc_check(&a[k], "after the mix pairs");
	}

	snprintf(name, sizeof(name),
		 "(4) alignment policy, NIC/NVMe mix (1,2,3,16,17,33 pages: 50/10/10/10/10/10 %%), %llu live ranges",
		 (unsigned long long)nlive);
	bench_section(out, name);
	bench_report(out, "align_requested_pages", (double)requested, "pages", NULL, 0);
	bench_report(out, "align_pow2_pages", (double)pages[A_POW2], "pages", "requested",
		     (double)pages[A_POW2] / (double)requested);
	bench_report(out, "align_page_pages", (double)pages[A_PAGE], "pages", "pow2",
		     (double)pages[A_PAGE] / (double)pages[A_POW2]);
	bench_report(out, "align_pow2_footprint", (double)foot[A_POW2], "pages", "requested",
		     (double)foot[A_POW2] / (double)requested);
	bench_report(out, "align_page_footprint", (double)foot[A_PAGE], "pages", "pow2",
		     (double)foot[A_PAGE] / (double)foot[A_POW2]);
	bench_report(out, "align_pow2_pair_cached", med[A_POW2], "ns", NULL, 0);
	bench_report(out, "align_page_pair_cached", med[A_PAGE], "ns", "pow2", med[A_PAGE] / med[A_POW2]);
	bench_report(out, "align_pow2_pair_tree", med[A_POW2_NC], "ns", NULL, 0);
	bench_report(out, "align_page_pair_tree", med[A_PAGE_NC], "ns", "pow2", med[A_PAGE_NC] / med[A_POW2_NC]);
	bench_report(out, "align_pow2_tree_steps_per_alloc", steps[A_POW2_NC], "nodes", NULL, 0);
	bench_report(out, "align_page_tree_steps_per_alloc", steps[A_PAGE_NC], "nodes", "pow2",
		     steps[A_PAGE_NC] / steps[A_POW2_NC]);

	for (int k = 0; k < NR_A; k++) {
		live_free_all(&a[k], &l[k]);
		dmm_iova_trim(a[k].d, 1);
		alc_check(&a[k], "emptied");
		alc_destroy(&a[k]);
		live_release(&l[k]);
		free(v[k]);
	}
	free(sizes);
}

/* ---- main ----------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
	struct bench_out out;
	struct dmm_machine m;
	struct dmm_hosted *h;
	const char *part;
	uint64_t t0 = bench_now_ns();

	if (bench_opt_flag(argc, argv, "--help")) {
		printf("usage: bench_iova [--json] [--quick] [--reps N] [--seed S] [--part check|pairs|exhaust|align]\n");
		return 0;
	}
	g_quick = bench_opt_flag(argc, argv, "--quick");
	g_reps = bench_opt_long(argc, argv, "--reps", g_quick ? 3 : 21);
	g_seed = (uint64_t)bench_opt_long(argc, argv, "--seed", 42);
	g_batch_ms = g_quick ? 0.3 : 2.0;
	part = bench_opt_str(argc, argv, "--part", "all");
	if (g_reps < 1)
		bench_die("bad arguments");
	bench_out_init(&out, "iova", argc, argv);
	bench_machine_flat(&m, "bench-iova", BENCH_GIB);
	if (dmm_hosted_mem_create(&m, 2, &h, &g_mem))
		bench_die("cannot create the machine");
	g_plat = dmm_hosted_platform(h);

	bench_note(&out,
		   "\nbench_iova: dmm_iova_* vs the classic rb-tree allocator (bench/classic_iova.c, no rcache); "
		   "domains [0, 4 GiB), 32-bit requests; median of %ld runs\n",
		   g_reps);
	self_check(&out);
	if (!strcmp(part, "all") || !strcmp(part, "pairs"))
		bench_pairs(&out);
	if (!strcmp(part, "all") || !strcmp(part, "exhaust"))
		bench_exhaust(&out);
	if (!strcmp(part, "all") || !strcmp(part, "align"))
		bench_align(&out);

	if (dmm_page_alloc_check(g_mem) || dmm_range_check(g_mem))
		bench_die("invariant check failed");
	dmm_hosted_mem_destroy(h, g_mem);
	bench_note(&out, "\nbench_iova: %.1f s\n", (double)(bench_now_ns() - t0) / 1e9);
	return 0;
}

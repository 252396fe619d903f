/* SPDX-License-Identifier: MIT */
/*
 * bench_range: dmm_alloc_range() under fragmentation, against the classic
 * linear first-fit scan of a free-page bitmap.
 *
 * Part 1 (fill levels): a 16 GiB machine is filled to 25, 50, 75 and 95 %
 * of its managed pages by allocations of log-uniform random size (4 KiB ..
 * 16 MiB) placed at random addresses (dmm_alloc_range with a window
 * [p, p + w) around a random pfn p, the window widening only when nothing
 * fits in it). Then a fixed sequence of requests, 64 KiB .. 64 MiB
 * (log-uniform), below 4 GiB, 64 KiB aligned, failures included, is served;
 * each successful request is freed again (untimed) so the fill stays
 * constant.
 *
 * Part 2 (scaling): machines of 1, 4, 16 and 64 GiB, each a single zone (no
 * DMA/DMA32 limit, so the only thing that changes is the number of pages),
 * filled to 75 % the same way; the same kind of requests with the window
 * being the whole machine, so the searched space grows with the machine.
 *
 * Baseline: bitmap_find_next_zero_area() as in Linux (lib/bitmap.c, used by
 * CMA and many drivers): find the next zero bit, align it up, look for a set
 * bit inside the candidate run, restart after it. The bitmap mirrors the
 * allocator's occupancy exactly: it is built from the page descriptors
 * (dmm_pfn_to_page states) after every fill step and its free count is
 * checked against dmm_mem_free_pages(). Like dmm_alloc_range() it never lets
 * a run straddle a zone, so both are complete searches and must agree on
 * success or failure for every request; the number of disagreements is
 * reported (it should be 0).
 *
 * Method: R repetitions (default 5) of the whole request sequence, ours and
 * the baseline alternating per repetition (which goes first alternates too).
 * Every request is timed on its own (the clock's own cost, measured at start,
 * is subtracted). "alloc" = ns per request = the mean over the sequence,
 * median over repetitions: the cost of serving this request mix. The
 * percentiles (p50, p99, and p50 of the successful and of the failed
 * requests) are taken over per-request times that are each the median over
 * repetitions. Ours is timed for dmm_alloc_range() alone (search, taking the
 * pages out of the buddy lists, index update); the baseline for the search
 * plus bitmap_set(). Freeing is untimed on both sides.
 * All allocations use DMM_GFP_NOWMARK: this measures the search, not the
 * watermark policy.
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

#define REQ_ALIGN (64 * BENCH_KIB)
#define REQ_MIN_PAGES ((64 * BENCH_KIB) >> DMM_PAGE_SHIFT)
#define REQ_MAX_PAGES ((64 * BENCH_MIB) >> DMM_PAGE_SHIFT)
#define FILL_MAX_PAGES ((16 * BENCH_MIB) >> DMM_PAGE_SHIFT)
#define RANGE_FLAGS DMM_GFP_NOWMARK

/* ---- the baseline: linear first-fit over a bitmap (1 = in use) ----------- */

struct bmap {
	uint64_t *w;
	uint64_t nbits;
};

/* First clear bit in [start, size), or size. */
static uint64_t find_next_zero(const uint64_t *w, uint64_t size, uint64_t start)
{
	if (start >= size)
		return size;
	uint64_t i = start >> 6;
	uint64_t word = ~w[i] & (~0ull << (start & 63));
	uint64_t nw = (size + 63) >> 6;
	while (!word) {
		if (++i >= nw)
			return size;
		word = ~w[i];
	}
	uint64_t r = (i << 6) + (uint64_t)__builtin_ctzll(word);
	return r < size ? r : size;
}

/* First set bit in [start, size), or size. */
static uint64_t find_next_one(const uint64_t *w, uint64_t size, uint64_t start)
{
	if (start >= size)
		return size;
	uint64_t i = start >> 6;
	uint64_t word = w[i] & (~0ull << (start & 63));
	uint64_t nw = (size + 63) >> 6;
	while (!word) {
		if (++i >= nw)
			return size;
		word = w[i];
	}
	uint64_t r = (i << 6) + (uint64_t)__builtin_ctzll(word);
	return r < size ? r : size;
}

/*
 * Linux's bitmap_find_next_zero_area(): index of the first run of @nr clear
 * bits in [start, size) whose index is a multiple of align_mask + 1, or a
 * value > size - nr when there is none.
 */
static uint64_t bitmap_find_next_zero_area(const uint64_t *map, uint64_t size, uint64_t start,
					   uint64_t nr, uint64_t align_mask)
{
	uint64_t index, end, i;
again:
	index = find_next_zero(map, size, start);
	index = (index + align_mask) & ~align_mask;
	end = index + nr;
	if (end > size)
		return end;
	i = find_next_one(map, end, index);
	if (i < end) {
		start = i + 1;
		goto again;
	}
	return index;
}

/* Linux's bitmap_set()/bitmap_clear(): whole words where possible. */
static void bitmap_assign(uint64_t *map, uint64_t start, uint64_t nr, int used)
{
	uint64_t *p = map + (start >> 6);
	uint64_t end = start + nr;
	uint64_t mask = ~0ull << (start & 63);
	uint64_t bits_left = 64 - (start & 63);

	while (nr >= bits_left) {
		*p = used ? *p | mask : *p & ~mask;
		nr -= bits_left;
		bits_left = 64;
		mask = ~0ull;
		p++;
	}
	if (nr) {
		mask &= ~0ull >> ((64 - (end & 63)) & 63);
		*p = used ? *p | mask : *p & ~mask;
	}
}

static void bmap_set(struct bmap *b, uint64_t pfn, uint64_t n, int used)
{
	if (pfn >= b->nbits)
		return;
	if (n > b->nbits - pfn)
		n = b->nbits - pfn;
	if (n)
		bitmap_assign(b->w, pfn, n, used);
}

/* ---- machine under test --------------------------------------------------- */

struct zspan {
	dmm_pfn_t start, end;
};

struct rig {
	struct dmm_hosted *hosted;
	struct dmm_mem *mem;
	struct dmm_mem_info info;
	uint64_t managed;
	unsigned nr_zones;
	struct zspan zone[DMM_NR_ZONE_TYPES];
	int zone_order[DMM_NR_ZONE_TYPES]; /* baseline search order */
	struct bmap bm;
	uint64_t used;     /* pages allocated by the fill */
	uint64_t nr_fill;  /* fill allocations */
	uint64_t fill_tries;
	struct bench_rng rng;
};

static void rig_create(struct rig *g, uint64_t bytes, int one_zone, uint64_t seed)
{
	struct dmm_machine m;
	char name[32];

	memset(g, 0, sizeof(*g));
	snprintf(name, sizeof(name), "bench-range-%llug", (unsigned long long)(bytes / BENCH_GIB));
	if (one_zone)
		bench_machine_one_zone(&m, name, bytes);
	else
		bench_machine_flat(&m, name, bytes);
	int rc = dmm_hosted_mem_create(&m, 1, &g->hosted, &g->mem);
	if (rc)
		bench_die("dmm_hosted_mem_create(%s): %s", name, dmm_errname(rc));
	dmm_mem_get_info(g->mem, &g->info);
	g->managed = g->info.managed_pages;
	g->nr_zones = dmm_mem_nr_zones(g->mem);
	for (unsigned z = 0; z < g->nr_zones; z++) {
		struct dmm_zone_info zi;
		if (dmm_zone_get_info(g->mem, z, &zi))
			bench_die("dmm_zone_get_info(%u) failed", z);
		g->zone[z].start = zi.start_pfn;
		g->zone[z].end = zi.end_pfn;
		/* dmm_alloc_range() tries zones highest first; so does the baseline */
		g->zone_order[g->nr_zones - 1 - z] = (int)z;
	}
	g->bm.nbits = g->info.max_pfn;
	g->bm.w = calloc((size_t)((g->bm.nbits + 63) >> 6), sizeof(uint64_t));
	if (!g->bm.w)
		bench_die("out of memory for the bitmap");
	g->rng.s = seed;
}

static void rig_destroy(struct rig *g)
{
	free(g->bm.w);
	dmm_hosted_mem_destroy(g->hosted, g->mem);
	memset(g, 0, sizeof(*g));
}

/*
 * Add random allocations until @target pages are allocated. Each one has a
 * log-uniform size and is placed in a window [p, p + w) around a uniformly
 * random pfn p; w starts at twice the size and grows 4x while nothing fits.
 */
static void fill_to(struct rig *g, uint64_t target)
{
	uint64_t minp = g->info.min_pfn, maxp = g->info.max_pfn, span = maxp - minp;

	while (g->used < target) {
		uint64_t n = bench_rand_log(&g->rng, 1, FILL_MAX_PAGES);
		if (n > target - g->used)
			n = target - g->used;
		uint64_t p = minp + bench_rand_below(&g->rng, span);
		uint64_t w = 2 * n < 64 ? 64 : 2 * n;
		for (;;) {
			uint64_t lo = p, hi;
			if (w >= span) {
				lo = minp;
				hi = maxp;
			} else {
				hi = lo + w;
				if (hi > maxp) {
					hi = maxp;
					lo = hi - w;
				}
			}
			struct dmm_constraint c = { lo << DMM_PAGE_SHIFT, hi << DMM_PAGE_SHIFT, 0, 0, 0, 0 };
			dmm_pfn_t pfn;
			g->fill_tries++;
			int rc = dmm_alloc_range(g->mem, &c, (size_t)n, RANGE_FLAGS, &pfn);
			if (rc == 0) {
				g->used += n;
				g->nr_fill++;
				break;
			}
			if (rc != -DMM_ENOMEM && rc != -DMM_ERANGE && rc != -DMM_EWMARK)
				bench_die("fill: dmm_alloc_range(%llu pages in [%#llx, %#llx)): %s",
					  (unsigned long long)n, (unsigned long long)c.lo,
					  (unsigned long long)c.hi, dmm_errname(rc));
			if (w >= span) {
				if (n == 1)
					bench_die("fill: machine full at %llu of %llu pages",
						  (unsigned long long)g->used,
						  (unsigned long long)g->managed);
				n /= 2; /* nothing of this size anywhere: smaller */
				w = 2 * n < 64 ? 64 : 2 * n;
				continue;
			}
			w *= 4;
		}
	}
}

/*
 * Rebuild the bitmap from the page descriptors. Free = inside a FREE buddy
 * block; everything else (allocated, ranges, reserved, holes, per-CPU) is
 * in use. The free count must equal dmm_mem_free_pages().
 */
static void mirror_bitmap(struct rig *g)
{
	uint64_t nfree = 0;
	dmm_pfn_t pfn = 0;

	dmm_page_drain_pcp(g->mem);
	memset(g->bm.w, 0xff, (size_t)((g->bm.nbits + 63) >> 6) * sizeof(uint64_t));
	pfn = g->info.min_pfn;
	while (pfn < g->info.max_pfn) {
		struct dmm_page *pg = dmm_pfn_to_page(g->mem, pfn);
		uint64_t n = 1;
		if (pg) {
			switch (pg->state) {
			case DMM_PAGE_FREE:
				n = (uint64_t)1 << pg->order;
				bmap_set(&g->bm, pfn, n, 0);
				nfree += n;
				break;
			case DMM_PAGE_PCP:
			case DMM_PAGE_ALLOC:
				n = (uint64_t)1 << pg->order;
				break;
			case DMM_PAGE_RANGE:
				n = pg->private ? pg->private : 1;
				break;
			case DMM_PAGE_RESERVED:
				break;
			default:
				bench_die("mirror: pfn %#llx: unexpected state %u at a block head",
					  (unsigned long long)pfn, pg->state);
			}
		}
		pfn += n;
	}
	uint64_t want = dmm_mem_free_pages(g->mem);
	if (nfree != want)
		bench_die("mirror: bitmap has %llu free pages, dmm_mem_free_pages() says %llu",
			  (unsigned long long)nfree, (unsigned long long)want);
}

/* Free pages of [lo, hi) according to the bitmap. */
static uint64_t bitmap_free_in(const struct rig *g, uint64_t lo, uint64_t hi)
{
	uint64_t nfree = 0;
	for (uint64_t p = lo; p < hi && p < g->bm.nbits; p++)
		nfree += !((g->bm.w[p >> 6] >> (p & 63)) & 1);
	return nfree;
}

/* Baseline request: 1 if a run exists (stored in *pfn). */
static int baseline_alloc(const struct rig *g, uint64_t wlo, uint64_t whi, uint64_t nr,
			  uint64_t align_pages, uint64_t *pfn)
{
	for (unsigned i = 0; i < g->nr_zones; i++) {
		const struct zspan *z = &g->zone[g->zone_order[i]];
		uint64_t lo = z->start > wlo ? z->start : wlo;
		uint64_t hi = z->end < whi ? z->end : whi;
		if (lo >= hi || hi - lo < nr)
			continue;
		uint64_t idx = bitmap_find_next_zero_area(g->bm.w, hi, lo, nr, align_pages - 1);
		if (idx + nr <= hi) {
			*pfn = idx;
			return 1;
		}
	}
	return 0;
}

/* Requests where ours and the baseline disagreed, or ours changed outcome
 * between repetitions, over the whole run: either is a bug (exit status 3). */
static uint64_t g_bad_requests;

/* ---- one measured scenario -------------------------------------------------- */

/* Median cost of reading the clock twice back to back; subtracted from every
 * per-request sample. */
static double timer_overhead_ns(void)
{
	enum { N = 20001 };
	static double v[N];
	for (int i = 0; i < N; i++) {
		uint64_t t0 = bench_now_ns();
		uint64_t t1 = bench_now_ns();
		v[i] = (double)(t1 - t0);
	}
	return bench_median(v, N);
}

struct side {
	double mean;       /* ns per request: the sequence's mean, median over reps */
	double p50, p99;   /* of per-request times (each the median over reps) */
	double ok_p50;     /* median of the successful requests */
	double fail_p50;   /* median of the failed requests */
	uint64_t ok;
};

struct result {
	struct side ours, base;
	uint64_t requests, disagree, unstable;
	double window_fill; /* % of the window's RAM pages in use */
};

static double median_where(const double *per, const int *ok, size_t k, int want, double *tmp)
{
	size_t n = 0;
	for (size_t i = 0; i < k; i++)
		if (ok[i] == want)
			tmp[n++] = per[i];
	return n ? bench_median(tmp, n) : 0.0;
}

/* @t: reps x k samples; fills @sd. */
static void summarise(const double *t, const int *ok, size_t k, long reps, struct side *sd)
{
	double *tmp = calloc(k > (size_t)reps ? k : (size_t)reps, sizeof(double));
	double *per = calloc(k, sizeof(double));
	double *means = calloc((size_t)reps, sizeof(double));
	if (!tmp || !per || !means)
		bench_die("out of memory");
	for (long r = 0; r < reps; r++) {
		double sum = 0;
		for (size_t i = 0; i < k; i++)
			sum += t[(size_t)r * k + i];
		means[r] = sum / (double)k;
	}
	sd->mean = bench_median(means, (size_t)reps);
	for (size_t i = 0; i < k; i++) {
		for (long r = 0; r < reps; r++)
			tmp[r] = t[(size_t)r * k + i];
		per[i] = bench_median(tmp, (size_t)reps);
	}
	sd->ok = 0;
	for (size_t i = 0; i < k; i++)
		sd->ok += (uint64_t)ok[i];
	sd->ok_p50 = median_where(per, ok, k, 1, tmp);
	sd->fail_p50 = median_where(per, ok, k, 0, tmp);
	sd->p99 = bench_quantile(per, k, 0.99);
	sd->p50 = bench_median(per, k);
	free(tmp);
	free(per);
	free(means);
}

/*
 * Serve @k requests (log-uniform 64 KiB..64 MiB, 64 KiB aligned) inside the
 * pfn window [wlo, whi), @reps times, ours and the baseline in alternation.
 * Ours: dmm_alloc_range() timed, dmm_free_range() untimed. Baseline: search
 * + bitmap_set() timed, bitmap_clear() untimed.
 */
static void run_requests(struct rig *g, uint64_t wlo, uint64_t whi, size_t k, long reps,
			 uint64_t seed, double tover, struct result *res)
{
	uint64_t *nr = calloc(k, sizeof(*nr));
	double *ot = calloc(k * (size_t)reps, sizeof(double));
	double *bt = calloc(k * (size_t)reps, sizeof(double));
	int *ook = calloc(k, sizeof(int));
	int *bok = calloc(k, sizeof(int));
	struct bench_rng rng = { seed };
	const uint64_t align_pages = REQ_ALIGN >> DMM_PAGE_SHIFT;

	if (!nr || !ot || !bt || !ook || !bok)
		bench_die("out of memory");
	memset(res, 0, sizeof(*res));
	res->requests = k;
	for (size_t i = 0; i < k; i++) {
		nr[i] = bench_rand_log(&rng, REQ_MIN_PAGES, REQ_MAX_PAGES);
		ook[i] = -1;
	}
	uint64_t free_before = dmm_mem_free_pages(g->mem);
	struct dmm_constraint c = { wlo << DMM_PAGE_SHIFT, whi << DMM_PAGE_SHIFT, REQ_ALIGN, 0, 0, 0 };

	for (long r = 0; r < reps; r++) {
		for (int pass = 0; pass < 2; pass++) {
			int ours = (pass == 0) == ((r & 1) == 0);
			for (size_t i = 0; i < k; i++) {
				double dt;
				if (ours) {
					dmm_pfn_t pfn;
					uint64_t t0 = bench_now_ns();
					int rc = dmm_alloc_range(g->mem, &c, (size_t)nr[i], RANGE_FLAGS, &pfn);
					uint64_t t1 = bench_now_ns();
					dt = (double)(t1 - t0);
					int ok = rc == 0;
					if (rc && rc != -DMM_ENOMEM)
						bench_die("dmm_alloc_range(%llu pages): %s",
							  (unsigned long long)nr[i], dmm_errname(rc));
					if (ok) {
						if (!dmm_constraint_ok(&c, dmm_pfn_to_phys(pfn),
								       nr[i] << DMM_PAGE_SHIFT))
							bench_die("dmm_alloc_range returned pfn %#llx "
								  "outside the constraint",
								  (unsigned long long)pfn);
						rc = dmm_free_range(g->mem, pfn, (size_t)nr[i]);
						if (rc)
							bench_die("dmm_free_range: %s", dmm_errname(rc));
					}
					if (ook[i] >= 0 && ook[i] != ok)
						res->unstable++;
					ook[i] = ok;
				} else {
					uint64_t pfn = 0;
					uint64_t t0 = bench_now_ns();
					int ok = baseline_alloc(g, wlo, whi, nr[i], align_pages, &pfn);
					if (ok)
						bitmap_assign(g->bm.w, pfn, nr[i], 1);
					uint64_t t1 = bench_now_ns();
					dt = (double)(t1 - t0);
					if (ok)
						bitmap_assign(g->bm.w, pfn, nr[i], 0);
					bok[i] = ok;
				}
				dt -= tover;
				(ours ? ot : bt)[(size_t)r * k + i] = dt > 0 ? dt : 0;
			}
		}
	}
	if (dmm_mem_free_pages(g->mem) != free_before)
		bench_die("free pages changed across the request phase: %llu -> %llu",
			  (unsigned long long)free_before,
			  (unsigned long long)dmm_mem_free_pages(g->mem));

	for (size_t i = 0; i < k; i++)
		res->disagree += ook[i] != bok[i];
	summarise(ot, ook, k, reps, &res->ours);
	summarise(bt, bok, k, reps, &res->base);

	uint64_t ram = 0;
	for (unsigned z = 0; z < g->nr_zones; z++) {
		uint64_t lo = g->zone[z].start > wlo ? g->zone[z].start : wlo;
		uint64_t hi = g->zone[z].end < whi ? g->zone[z].end : whi;
		if (lo < hi)
			ram += hi - lo;
	}
	uint64_t wfree = bitmap_free_in(g, wlo, whi);
	res->window_fill = ram ? 100.0 * (double)(ram - wfree) / (double)ram : 0;

	free(nr);
	free(ot);
	free(bt);
	free(ook);
	free(bok);
}

static void check_rig(struct rig *g, int checks)
{
	if (!checks)
		return;
	int rc = dmm_range_check(g->mem);
	if (rc)
		bench_die("dmm_range_check: %s", dmm_errname(rc));
	rc = dmm_page_alloc_check(g->mem);
	if (rc)
		bench_die("dmm_page_alloc_check: %s", dmm_errname(rc));
}

static void report_result(struct bench_out *o, const char *prefix, const struct result *r)
{
	char m[96];
	const char *bl = "bitmap_first_fit";
	const struct side *u = &r->ours, *b = &r->base;

#define RPT(suffix, val, unit, base, ratio)                                  \
	do {                                                                 \
		snprintf(m, sizeof(m), "%s.%s", prefix, suffix);             \
		bench_report(o, m, val, unit, base, ratio);                  \
	} while (0)
	RPT("alloc", u->mean, "ns", bl, u->mean / b->mean);
	RPT("alloc_p50", u->p50, "ns", bl, u->p50 / b->p50);
	RPT("alloc_p99", u->p99, "ns", bl, u->p99 / b->p99);
	if (u->ok && b->ok)
		RPT("alloc_ok_p50", u->ok_p50, "ns", bl, u->ok_p50 / b->ok_p50);
	if (u->ok < r->requests && b->ok < r->requests)
		RPT("alloc_fail_p50", u->fail_p50, "ns", bl, u->fail_p50 / b->fail_p50);
	RPT("baseline", b->mean, "ns", NULL, 0);
	RPT("baseline_p50", b->p50, "ns", NULL, 0);
	RPT("baseline_p99", b->p99, "ns", NULL, 0);
	RPT("speedup", b->mean / u->mean, "x", NULL, 0);
	RPT("ok", (double)u->ok, "requests", NULL, 0);
	RPT("baseline_ok", (double)b->ok, "requests", NULL, 0);
	RPT("requests", (double)r->requests, "requests", NULL, 0);
	RPT("disagree", (double)r->disagree, "requests", NULL, 0);
	RPT("window_fill", r->window_fill, "%", NULL, 0);
#undef RPT
	g_bad_requests += r->disagree + r->unstable;
	if (r->unstable)
		bench_note(o, "  WARNING: %s: %llu requests changed outcome between repetitions\n",
			   prefix, (unsigned long long)r->unstable);
	if (r->disagree)
		bench_note(o, "  WARNING: %s: %llu requests where ours and the baseline disagree\n",
			   prefix, (unsigned long long)r->disagree);
}

static void usage(void)
{
	printf("usage: bench_range [--json] [--quick] [--reps N] [--requests K] [--seed S]\n"
	       "                   [--fill-gib G (16)] [--max-gib G (64)] [--no-check]\n"
	       "                   [--part fill|scale|all]\n");
}

int main(int argc, char **argv)
{
	struct bench_out out;
	struct rig g;
	int quick = bench_opt_flag(argc, argv, "--quick");
	long reps = bench_opt_long(argc, argv, "--reps", quick ? 3 : 5);
	long nreq = bench_opt_long(argc, argv, "--requests", quick ? 300 : 2000);
	long seed = bench_opt_long(argc, argv, "--seed", 42);
	long max_gib = bench_opt_long(argc, argv, "--max-gib", quick ? 16 : 64);
	long fill_gib = bench_opt_long(argc, argv, "--fill-gib", 16);
	int checks = !bench_opt_flag(argc, argv, "--no-check");
	const char *part = bench_opt_str(argc, argv, "--part", "all");
	int do_fill = !strcmp(part, "all") || !strcmp(part, "fill");
	int do_scale = !strcmp(part, "all") || !strcmp(part, "scale");

	if (bench_opt_flag(argc, argv, "--help") || bench_opt_flag(argc, argv, "-h")) {
		usage();
		return 0;
	}
	if (reps < 1 || nreq < 10 || max_gib < 1 || fill_gib < 1 || (!do_fill && !do_scale))
		bench_die("bad arguments (try --help)");
	bench_out_init(&out, "range", argc, argv);

	double tover = timer_overhead_ns();
	bench_note(&out, "bench_range: timer overhead %.0f ns (subtracted from every sample); "
			 "%ld repetitions; baseline: Linux bitmap_find_next_zero_area() first fit "
			 "+ bitmap_set()\n", tover, reps);

	if (do_fill) {
		static const unsigned levels[] = { 25, 50, 75, 95 };
		char title[160];
		snprintf(title, sizeof(title), "bench_range: %ld GiB machine, requests 64 KiB..64 MiB "
			 "below 4 GiB, 64 KiB aligned; ns per request (median over repetitions)",
			 fill_gib);
		bench_section(&out, title);
		uint64_t t0 = bench_now_ns();
		rig_create(&g, (uint64_t)fill_gib * BENCH_GIB, 0, (uint64_t)seed);
		for (size_t l = 0; l < sizeof(levels) / sizeof(levels[0]); l++) {
			char prefix[32];
			struct result r;
			uint64_t tf = bench_now_ns();
			fill_to(&g, g.managed * levels[l] / 100);
			mirror_bitmap(&g);
			check_rig(&g, checks);
			double fill_s = (double)(bench_now_ns() - tf) / 1e9;
			run_requests(&g, 0, (4 * BENCH_GIB) >> DMM_PAGE_SHIFT, (size_t)nreq, reps,
				     (uint64_t)seed * 1000003u + levels[l], tover, &r);
			check_rig(&g, checks);
			bench_note(&out, "  -- fill %u %%: %llu fill allocations (%llu tries, %.2f s), "
					 "window %.1f %% in use; ok: ours %llu, baseline %llu of %ld, "
					 "disagree %llu\n",
				   levels[l], (unsigned long long)g.nr_fill,
				   (unsigned long long)g.fill_tries, fill_s, r.window_fill,
				   (unsigned long long)r.ours.ok, (unsigned long long)r.base.ok, nreq,
				   (unsigned long long)r.disagree);
			snprintf(prefix, sizeof(prefix), "fill%u", levels[l]);
			report_result(&out, prefix, &r);
			out.header_done = 1;
		}
		rig_destroy(&g);
		bench_note(&out, "  (fill levels took %.1f s)\n", (double)(bench_now_ns() - t0) / 1e9);
	}

	if (do_scale) {
		static const unsigned sizes[] = { 1, 4, 16, 64 };
		struct result rs[4];
		uint64_t pages[4] = { 0 };
		size_t first = 0, last = 0;
		int have = 0;
		bench_section(&out, "bench_range: scaling at 75 % fill, one-zone machines, requests "
				    "64 KiB..64 MiB anywhere in the machine; ns per request (median over "
				    "repetitions)");
		long sreq = nreq / 2 < 10 ? 10 : nreq / 2;
		for (size_t s = 0; s < 4; s++) {
			char prefix[32];
			if ((long)sizes[s] > max_gib)
				continue;
			uint64_t t0 = bench_now_ns();
			rig_create(&g, sizes[s] * BENCH_GIB, 1, (uint64_t)seed + sizes[s]);
			fill_to(&g, g.managed * 75 / 100);
			mirror_bitmap(&g);
			check_rig(&g, checks);
			run_requests(&g, g.info.min_pfn, g.info.max_pfn, (size_t)sreq, reps,
				     (uint64_t)seed * 7919u, tover, &rs[s]);
			check_rig(&g, checks);
			pages[s] = g.info.ram_pages;
			bench_note(&out, "  -- %u GiB: %llu fill allocations, %u zones, window %.1f %% in "
					 "use; ok: ours %llu, baseline %llu of %ld, disagree %llu (%.1f s)\n",
				   sizes[s], (unsigned long long)g.nr_fill, g.nr_zones,
				   rs[s].window_fill, (unsigned long long)rs[s].ours.ok,
				   (unsigned long long)rs[s].base.ok, sreq,
				   (unsigned long long)rs[s].disagree,
				   (double)(bench_now_ns() - t0) / 1e9);
			rig_destroy(&g);
			snprintf(prefix, sizeof(prefix), "scale%ug", sizes[s]);
			report_result(&out, prefix, &rs[s]);
			out.header_done = 1;
			if (!have)
				first = s;
			last = s;
			have = 1;
		}
		if (have && last > first) {
			char m[96];
			const struct side *o0 = &rs[first].ours, *o1 = &rs[last].ours;
			const struct side *b0 = &rs[first].base, *b1 = &rs[last].base;
			bench_section(&out, "bench_range: growth from the smallest to the largest machine");
#define GROWTH(what, val)                                                                   \
	do {                                                                                \
		snprintf(m, sizeof(m), "scale.%ug_to_%ug.%s", sizes[first], sizes[last], what); \
		bench_report(&out, m, val, "x", NULL, 0);                                   \
	} while (0)
			GROWTH("log2_pages_ratio", log2((double)pages[last]) / log2((double)pages[first]));
			GROWTH("pages_ratio", (double)pages[last] / (double)pages[first]);
			GROWTH("ours_growth", o1->mean / o0->mean);
			GROWTH("ours_p50_growth", o1->p50 / o0->p50);
			if (o0->ok && o1->ok)
				GROWTH("ours_ok_p50_growth", o1->ok_p50 / o0->ok_p50);
			if (o0->fail_p50 > 0 && o1->fail_p50 > 0)
				GROWTH("ours_fail_p50_growth", o1->fail_p50 / o0->fail_p50);
			GROWTH("baseline_growth", b1->mean / b0->mean);
			GROWTH("baseline_p50_growth", b1->p50 / b0->p50);
			if (b0->fail_p50 > 0 && b1->fail_p50 > 0)
				GROWTH("baseline_fail_p50_growth", b1->fail_p50 / b0->fail_p50);
#undef GROWTH
		}
	}
	if (g_bad_requests) {
		fprintf(stderr, "bench_range: %llu requests disagreed or were unstable\n",
			(unsigned long long)g_bad_requests);
		return 3;
	}
	return 0;
}

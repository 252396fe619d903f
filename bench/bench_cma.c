/* SPDX-License-Identifier: MIT */
/*
 * bench_cma: contiguous-area allocation latency.
 *
 *  filled    an area entirely filled with movable pages (a handle table's
 *            pages, each with its own pattern): dmm_cma_alloc of 4, 16, 64
 *            and 256 MiB, which must migrate every page of the range out.
 *            Baseline in the same run: a memcpy of the same number of bytes
 *            between two touched host buffers (the lower bound of moving
 *            that much data). Goal: <= 2x the memcpy bound at 64 MiB.
 *  churn     the same while a second thread keeps allocating and freeing
 *            movable pages: p50 / p99.
 *  empty     allocation from an empty area (nothing to migrate): ns per MiB.
 *
 * After every allocation a sample of the migrated handles is checked
 * against its pattern (the run fails if a byte was lost).
 */
#include <pthread.h>
#include <stdbool.h>

#include <dmamem/hosted.h>

#include "bench_util.h"

#define AREA_MIB 512
#define RAM_MIB 1536

struct rig {
	struct dmm_hosted *hosted;
	struct dmm_mem *mem;
	struct dmm_handles *ht;
	uint32_t *handles;
	size_t n, cap;
	dmm_pfn_t area_lo, area_hi;
};

static uint8_t pattern_of(uint32_t h)
{
	return (uint8_t)(h * 131u + 7u);
}

static void rig_create(struct rig *r)
{
	struct dmm_machine m;
	struct dmm_cma_info ci;

	bench_machine_one_zone(&m, "bench-cma", (uint64_t)RAM_MIB * BENCH_MIB);
	m.nr_cma = 1;
	snprintf(m.cma[0].name, sizeof(m.cma[0].name), "camera");
	m.cma[0].size = (uint64_t)AREA_MIB * BENCH_MIB;
	m.cma[0].is_default = 1;
	m.cma_policy = DMM_CMA_POLICY_FIRST; /* movable pages fill the area first */
	if (dmm_hosted_mem_create(&m, 2, &r->hosted, &r->mem))
		bench_die("cannot create the machine");
	r->cap = (size_t)RAM_MIB * 256;
	if (dmm_handles_create(r->mem, (uint32_t)r->cap, &r->ht))
		bench_die("cannot create the handle table");
	r->handles = calloc(r->cap, sizeof(*r->handles));
	if (!r->handles)
		bench_die("out of host memory");
	r->n = 0;
	dmm_cma_get_info(r->mem, 0, &ci);
	r->area_lo = ci.base_pfn;
	r->area_hi = ci.base_pfn + ci.nr_pages;
}

static void rig_destroy(struct rig *r)
{
	dmm_handles_destroy(r->ht);
	if (dmm_page_alloc_check(r->mem) || dmm_range_check(r->mem) || dmm_cma_check(r->mem))
		bench_die("invariant check failed at teardown");
	dmm_hosted_mem_destroy(r->hosted, r->mem);
	free(r->handles);
}

static bool in_area(const struct rig *r, uint32_t h)
{
	dmm_pfn_t pfn;
	return !dmm_handle_pfn(r->ht, h, &pfn) && pfn >= r->area_lo && pfn < r->area_hi;
}

/* Free the handles that live outside the area, then fill the area again. */
static void rig_refill_n(struct rig *r, int rounds, int must);

static void rig_refill(struct rig *r)
{
	rig_refill_n(r, 64, 1);
}

/* Up to @rounds rounds; with a concurrent churn thread the area may not
 * end exactly full (@must = 0). */
static void rig_refill_n(struct rig *r, int rounds, int must)
{
	struct dmm_cma_info ci;
	size_t keep = 0;

	for (size_t i = 0; i < r->n; i++) {
		if (in_area(r, r->handles[i]))
			r->handles[keep++] = r->handles[i];
		else if (dmm_handle_free(r->ht, r->handles[i]))
			bench_die("handle free failed");
	}
	r->n = keep;
	for (int round = 0; round < rounds; round++) {
		dmm_page_drain_pcp(r->mem);
		if (dmm_cma_get_info(r->mem, 0, &ci))
			bench_die("no area");
		if (ci.free_pages == 0)
			return;
		/* policy "first": owned movable pages take area pages first */
		for (uint64_t k = 0; k < ci.free_pages; k++) {
			uint32_t h;
			uint8_t *v;
			if (r->n == r->cap || dmm_handle_alloc(r->ht, 0, &h))
				bench_die("cannot fill the area");
			v = dmm_handle_lock(r->ht, h);
			memset(v, pattern_of(h), DMM_PAGE_SIZE);
			dmm_handle_unlock(r->ht, h);
			r->handles[r->n++] = h;
		}
	}
	if (must)
		bench_die("the area does not fill up");
}

/* Check a sample of handles (every 7th) still hold their pattern. */
static void rig_verify(struct rig *r)
{
	for (size_t i = 0; i < r->n; i += 7) {
		uint32_t h = r->handles[i];
		const uint8_t *v = dmm_handle_lock(r->ht, h);
		if (!v || v[0] != pattern_of(h) || v[DMM_PAGE_SIZE - 1] != pattern_of(h))
			bench_die("handle %u lost its contents", h);
		dmm_handle_unlock(r->ht, h);
	}
}

static double time_memcpy(uint8_t *dst, const uint8_t *src, size_t bytes)
{
	uint64_t t0 = bench_now_ns();
	memcpy(dst, src, bytes);
	__asm__ __volatile__("" ::"r"(dst) : "memory");
	return (double)(bench_now_ns() - t0);
}

static double time_cma_alloc(struct rig *r, size_t pages, dmm_pfn_t *pfn)
{
	enum dmm_cma_fail why;
	uint64_t t0 = bench_now_ns();
	int err = dmm_cma_alloc(r->mem, 0, pages, 0, 0, pfn, &why);
	double dt = (double)(bench_now_ns() - t0);
	if (err)
		bench_die("dmm_cma_alloc(%zu pages) failed: %s (%s)", pages, dmm_strerror(err),
			  dmm_cma_fail_name(why));
	return dt;
}

static void bench_filled(struct bench_out *o, struct rig *r, int reps, int quick)
{
	static const unsigned sizes[] = { 4, 16, 64, 256 };
	size_t max_bytes = (size_t)256 * BENCH_MIB;
	uint8_t *a = malloc(max_bytes), *b = malloc(max_bytes);
	double *ours = calloc((size_t)reps, sizeof(double)), *base = calloc((size_t)reps, sizeof(double));

	if (!a || !b || !ours || !base)
		bench_die("out of host memory");
	memset(a, 1, max_bytes);
	memset(b, 2, max_bytes);
	bench_section(o, "allocation from an area full of movable pages (vs memcpy of the same bytes)");
	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		size_t bytes = (size_t)sizes[si] * BENCH_MIB, pages = bytes / DMM_PAGE_SIZE;
		char metric[64];
		double mo, mb;
		if (quick && sizes[si] > 16)
			break;
		for (int i = 0; i < reps; i++) {
			dmm_pfn_t pfn;
			struct dmm_cma_info ci;
			rig_refill(r);
			dmm_cma_get_info(r->mem, 0, &ci);
			if (ci.free_pages)
				bench_die("area not full before the allocation");
			base[i] = time_memcpy(b, a, bytes);
			ours[i] = time_cma_alloc(r, pages, &pfn);
			memset(dmm_pfn_to_virt(r->mem, pfn), 0x5a, bytes);
			if (dmm_cma_release(r->mem, 0, pfn, pages))
				bench_die("release failed");
			rig_verify(r);
		}
		mo = bench_median(ours, (size_t)reps);
		mb = bench_median(base, (size_t)reps);
		snprintf(metric, sizeof(metric), "filled_%uMiB", sizes[si]);
		bench_report(o, metric, mo / 1e6, "ms", "memcpy", mo / mb);
		snprintf(metric, sizeof(metric), "filled_%uMiB_memcpy", sizes[si]);
		bench_report(o, metric, mb / 1e6, "ms", NULL, 0);
		snprintf(metric, sizeof(metric), "filled_%uMiB_throughput", sizes[si]);
		bench_report(o, metric, (double)bytes / BENCH_MIB / (mo / 1e9), "MiB/s", NULL, 0);
	}
	free(a);
	free(b);
	free(ours);
	free(base);
}

struct churn_arg {
	struct rig *r;
	volatile int stop;
	uint64_t ops;
};

static void *churn_main(void *p)
{
	struct churn_arg *c = p;
	struct bench_rng rng = { 42 };
	enum { MAXH = 16384 };
	uint32_t *mine = calloc(MAXH, sizeof(uint32_t));
	size_t n = 0;

	if (!mine)
		bench_die("out of host memory");
	while (!__atomic_load_n(&c->stop, __ATOMIC_RELAXED)) {
		if (n < MAXH && (n == 0 || bench_rand_below(&rng, 2))) {
			uint32_t h;
			if (!dmm_handle_alloc(c->r->ht, 0, &h)) {
				uint8_t *v = dmm_handle_lock(c->r->ht, h);
				v[0] = pattern_of(h);
				dmm_handle_unlock(c->r->ht, h);
				mine[n++] = h;
			}
		} else {
			size_t k = (size_t)bench_rand_below(&rng, n);
			const uint8_t *v = dmm_handle_lock(c->r->ht, mine[k]);
			if (!v || v[0] != pattern_of(mine[k]))
				bench_die("churn handle %u lost its contents", mine[k]);
			dmm_handle_unlock(c->r->ht, mine[k]);
			dmm_handle_free(c->r->ht, mine[k]);
			mine[k] = mine[--n];
		}
		c->ops++;
	}
	while (n)
		dmm_handle_free(c->r->ht, mine[--n]);
	free(mine);
	return NULL;
}

static void bench_churn(struct bench_out *o, struct rig *r, int reps, int quick)
{
	static const unsigned sizes[] = { 4, 16, 64 };
	int n = reps * 4;
	double *lat = calloc((size_t)n, sizeof(double));
	struct churn_arg c = { r, 0, 0 };
	pthread_t t;
	uint64_t t0;

	if (!lat)
		bench_die("out of host memory");
	bench_section(o, "allocation from a full area under movable churn from a second thread");
	pthread_create(&t, NULL, churn_main, &c);
	t0 = bench_now_ns();
	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		size_t pages = (size_t)sizes[si] * BENCH_MIB / DMM_PAGE_SIZE;
		char metric[64];
		if (quick && sizes[si] > 16)
			break;
		for (int i = 0; i < n; i++) {
			dmm_pfn_t pfn;
			rig_refill_n(r, 4, 0); /* keep the area (nearly) full */
			lat[i] = time_cma_alloc(r, pages, &pfn);
			if (dmm_cma_release(r->mem, 0, pfn, pages))
				bench_die("release failed");
		}
		snprintf(metric, sizeof(metric), "churn_%uMiB_p50", sizes[si]);
		bench_report(o, metric, bench_quantile(lat, (size_t)n, 0.5) / 1e6, "ms", NULL, 0);
		snprintf(metric, sizeof(metric), "churn_%uMiB_p99", sizes[si]);
		bench_report(o, metric, bench_quantile(lat, (size_t)n, 0.99) / 1e6, "ms", NULL, 0);
	}
	__atomic_store_n(&c.stop, 1, __ATOMIC_RELAXED);
	pthread_join(t, NULL);
	bench_report(o, "churn_ops_per_s", (double)c.ops / ((double)(bench_now_ns() - t0) / 1e9),
		     "ops/s", NULL, 0);
	rig_verify(r);
	free(lat);
}

static void bench_empty(struct bench_out *o, int reps)
{
	struct rig r;
	static const unsigned sizes[] = { 4, 64, 256 };
	double *v = calloc((size_t)reps, sizeof(double));

	if (!v)
		bench_die("out of host memory");
	rig_create(&r);
	bench_section(o, "allocation from an empty area (no migration)");
	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		size_t pages = (size_t)sizes[si] * BENCH_MIB / DMM_PAGE_SIZE;
		char metric[64];
		for (int i = 0; i < reps; i++) {
			dmm_pfn_t pfn;
			v[i] = time_cma_alloc(&r, pages, &pfn);
			if (dmm_cma_release(r.mem, 0, pfn, pages))
				bench_die("release failed");
		}
		snprintf(metric, sizeof(metric), "empty_%uMiB_per_MiB", sizes[si]);
		bench_report(o, metric, bench_median(v, (size_t)reps) / sizes[si], "ns", NULL, 0);
	}
	rig_destroy(&r);
	free(v);
}

static void usage(void)
{
	printf("usage: bench_cma [--json] [--quick] [--reps N] [--part filled|churn|empty|all]\n");
}

int main(int argc, char **argv)
{
	struct bench_out out;
	struct rig r;
	int quick = bench_opt_flag(argc, argv, "--quick");
	long reps = bench_opt_long(argc, argv, "--reps", quick ? 2 : 5);
	const char *part = bench_opt_str(argc, argv, "--part", "all");
	int all = !strcmp(part, "all");

	if (bench_opt_flag(argc, argv, "--help") || bench_opt_flag(argc, argv, "-h")) {
		usage();
		return 0;
	}
	if (reps < 1 || reps > 1000)
		bench_die("bad --reps");
	bench_out_init(&out, "cma", argc, argv);
	bench_note(&out, "\nbench_cma: %d MiB machine, %d MiB area, %ld repetitions (median)\n", RAM_MIB,
		   AREA_MIB, reps);
	if (all || !strcmp(part, "filled") || !strcmp(part, "churn")) {
		rig_create(&r);
		if (all || !strcmp(part, "filled"))
			bench_filled(&out, &r, (int)reps, quick);
		if (all || !strcmp(part, "churn"))
			bench_churn(&out, &r, (int)reps, quick);
		rig_destroy(&r);
	}
	if (all || !strcmp(part, "empty"))
		bench_empty(&out, (int)reps);
	return 0;
}

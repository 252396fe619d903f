/* SPDX-License-Identifier: MIT */
/*
 * Shared helpers for the benchmarks (hosted code, header-only, all static):
 * a monotonic clock, medians, a seeded PRNG, machine builders and the
 * reporter that prints either a readable table or one JSON object per line:
 *
 *   {"bench": "...", "metric": "...", "value": N, "unit": "...",
 *    "baseline": "...", "ratio": R}
 *
 * ratio = ours / baseline; "baseline" and "ratio" appear only where a
 * baseline exists. For time units lower is better.
 */
#ifndef DMM_BENCH_UTIL_H
#define DMM_BENCH_UTIL_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dmamem/dmamem.h>

#define BENCH_GIB ((uint64_t)1 << 30)
#define BENCH_MIB ((uint64_t)1 << 20)
#define BENCH_KIB ((uint64_t)1 << 10)

/* ---- time --------------------------------------------------------------- */

static inline uint64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- batch sizing ------------------------------------------------------- */

/* Operations in a batch of about @batch_ms at @ns_per_op each; at least @min_n. */
static inline long bench_batch_len(double ns_per_op, double batch_ms, long min_n)
{
	double want = batch_ms * 1e6 / (ns_per_op > 0.5 ? ns_per_op : 0.5);
	return want < (double)min_n ? min_n : (long)want;
}

/* Time @run(@arg, n) for n = @n, 4n, 16n, ... until one call takes over
 * 2 ms or n passes @max_n; the batch length for @batch_ms at that rate. */
static inline long bench_calibrate(void (*run)(const void *arg, long n), const void *arg, long n,
				   long max_n, double batch_ms, long min_n)
{
	for (;;) {
		uint64_t t0 = bench_now_ns();
		run(arg, n);
		uint64_t dt = bench_now_ns() - t0;
		if (dt > 2000000 || n > max_n)
			return bench_batch_len((double)dt / (double)n, batch_ms, min_n);
		n *= 4;
	}
}

/* ---- statistics --------------------------------------------------------- */

static inline int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Median of @n values; sorts @v in place. */
static inline double bench_median(double *v, size_t n)
{
	if (n == 0)
		return 0.0;
	qsort(v, n, sizeof(*v), bench_cmp_double);
	if (n & 1)
		return v[n / 2];
	return (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

/* Value at quantile @q (0..1) of @n values; sorts @v in place. */
static inline double bench_quantile(double *v, size_t n, double q)
{
	if (n == 0)
		return 0.0;
	qsort(v, n, sizeof(*v), bench_cmp_double);
	size_t i = (size_t)(q * (double)(n - 1) + 0.5);
	return v[i < n ? i : n - 1];
}

static inline double bench_min(const double *v, size_t n)
{
	double m = n ? v[0] : 0.0;
	for (size_t i = 1; i < n; i++)
		if (v[i] < m)
			m = v[i];
	return m;
}

static inline double bench_max(const double *v, size_t n)
{
	double m = n ? v[0] : 0.0;
	for (size_t i = 1; i < n; i++)
		if (v[i] > m)
			m = v[i];
	return m;
}

/* ---- PRNG: splitmix64 (seeded, reproducible) ----------------------------- */

struct bench_rng {
	uint64_t s;
};

static inline uint64_t bench_rand(struct bench_rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [0, n), n > 0. */
static inline uint64_t bench_rand_below(struct bench_rng *r, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)bench_rand(r) * n) >> 64);
}

/* Uniform double in [0, 1). */
static inline double bench_rand_unit(struct bench_rng *r)
{
	return (double)(bench_rand(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* Log-uniform integer in [lo, hi], 1 <= lo <= hi. */
static inline uint64_t bench_rand_log(struct bench_rng *r, uint64_t lo, uint64_t hi)
{
	double a = log((double)lo), b = log((double)hi + 1.0);
	uint64_t v = (uint64_t)exp(a + (b - a) * bench_rand_unit(r));
	if (v < lo)
		v = lo;
	if (v > hi)
		v = hi;
	return v;
}

/* ---- machines ------------------------------------------------------------ */

/*
 * A plain machine: one RAM region [0, @bytes), no DMA zone, the DMA32 limit
 * at 4 GiB (so a machine above 4 GiB has DMA32 + Normal zones).
 */
static inline void bench_machine_flat(struct dmm_machine *m, const char *name, uint64_t bytes)
{
	dmm_machine_defaults(m);
	m->dma32_limit = 4 * BENCH_GIB;
	snprintf(m->name, sizeof(m->name), "%s", name);
	m->nr_ram = 1;
	m->ram[0].base = 0;
	m->ram[0].size = bytes;
}

/* One RAM region [0, @bytes) and a single zone (no DMA or DMA32 limit). */
static inline void bench_machine_one_zone(struct dmm_machine *m, const char *name, uint64_t bytes)
{
	bench_machine_flat(m, name, bytes);
	m->dma32_limit = 0;
}

/* ---- reporting ----------------------------------------------------------- */

struct bench_out {
	int json;        /* one JSON object per line on stdout */
	const char *bench;
	int header_done;
};

static inline void bench_out_init(struct bench_out *o, const char *bench, int argc, char **argv)
{
	o->json = 0;
	o->bench = bench;
	o->header_done = 0;
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--json"))
			o->json = 1;
}

/* Free-form text: on stdout in table mode, on stderr in JSON mode. */
__attribute__((format(printf, 2, 3)))
static inline void bench_note(const struct bench_out *o, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfprintf(o->json ? stderr : stdout, fmt, ap);
	va_end(ap);
	fflush(o->json ? stderr : stdout);
}

/* One figure. @baseline NULL = none (ratio ignored). */
static inline void bench_report(struct bench_out *o, const char *metric, double value,
				const char *unit, const char *baseline, double ratio)
{
	if (o->json) {
		printf("{\"bench\": \"%s\", \"metric\": \"%s\", \"value\": %.6g, \"unit\": \"%s\"",
		       o->bench, metric, value, unit);
		if (baseline)
			printf(", \"baseline\": \"%s\", \"ratio\": %.4g", baseline, ratio);
		printf("}\n");
	} else {
		if (!o->header_done) {
			printf("  %-40s %14s %-10s %-12s %9s\n", "metric", "value", "unit",
			       "baseline", "ratio");
			o->header_done = 1;
		}
		printf("  %-40s %14.6g %-10s", metric, value, unit);
		if (baseline)
			printf(" %-12s %9.4g", baseline, ratio);
		printf("\n");
	}
	fflush(stdout);
}

/* Reset the table header (a new section starts). */
static inline void bench_section(struct bench_out *o, const char *title)
{
	if (!o->json)
		printf("\n%s\n", title);
	o->header_done = 0;
}

__attribute__((noreturn, format(printf, 1, 2)))
static inline void bench_die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "bench: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

/* Integer option "--name=N" or "--name N"; returns @def if absent. */
static inline long bench_opt_long(int argc, char **argv, const char *name, long def)
{
	size_t len = strlen(name);
	for (int i = 1; i < argc; i++) {
		if (strncmp(argv[i], name, len))
			continue;
		if (argv[i][len] == '=')
			return strtol(argv[i] + len + 1, NULL, 0);
		if (argv[i][len] == '\0' && i + 1 < argc)
			return strtol(argv[i + 1], NULL, 0);
	}
	return def;
}

static inline int bench_opt_flag(int argc, char **argv, const char *name)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], name))
			return 1;
	return 0;
}

static inline const char *bench_opt_str(int argc, char **argv, const char *name, const char *def)
{
	size_t len = strlen(name);
	for (int i = 1; i < argc; i++) {
		if (strncmp(argv[i], name, len))
			continue;
		if (argv[i][len] == '=')
			return argv[i] + len + 1;
		if (argv[i][len] == '\0' && i + 1 < argc)
			return argv[i + 1];
	}
	return def;
}

#endif

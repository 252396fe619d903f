/* SPDX-License-Identifier: MIT */
/*
 * IOVA allocator: bounds and alignment of every range, both alignment
 * policies, guard pages, the 32-bit-first policy, exhaustion and reuse,
 * the per-CPU caches (hits, bands kept apart, the bound on what they hold,
 * idle trimming), invalid input, and a randomized stress run against a
 * reference map of the space with dmm_iova_check() after every step, also
 * from two threads.
 */
#include <pthread.h>

#include "tu.h"

#include <dmamem/iommu.h>

#define PG 4096ull
#define G4 (4ull << 30)

static struct tu_env *env(void)
{
	struct dmm_machine m;
	tu_machine(&m, "iova");
	tu_add_ram(&m, 0, 512 * MiB);
	return tu_env_create(&m, 2);
}

static struct dmm_iova_domain *dom(struct tu_env *e, dmm_dma_addr_t lim, const struct dmm_iova_opts *o)
{
	struct dmm_iova_domain *d;
	assert_ok(dmm_iova_domain_create(e->mem, 0, lim, o, &d));
	assert_non_null(d);
	return d;
}

static void test_invalid(void **state)
{
	struct tu_env *e = env();
	struct dmm_iova_domain *d;
	struct dmm_iova_opts o;
	dmm_dma_addr_t a = 123;

	(void)state;
	assert_rc(dmm_iova_domain_create(NULL, 0, G4 - 1, NULL, &d), -DMM_EINVAL);
	assert_rc(dmm_iova_domain_create(e->mem, 0, G4 - 1, NULL, NULL), -DMM_EINVAL);
	assert_rc(dmm_iova_domain_create(e->mem, 0, G4, NULL, &d), -DMM_EINVAL);         /* limit + 1 unaligned */
	assert_rc(dmm_iova_domain_create(e->mem, 100, G4 - 1, NULL, &d), -DMM_EINVAL);   /* base unaligned */
	assert_rc(dmm_iova_domain_create(e->mem, 0, 1ull << 48, NULL, &d), -DMM_EINVAL); /* above 48 bits */
	assert_null(d);
	dmm_iova_opts_default(&o);
	o.guard_pages = DMM_IOVA_GUARD_MAX + 1;
	assert_rc(dmm_iova_domain_create(e->mem, 0, G4 - 1, &o, &d), -DMM_EINVAL);
	dmm_iova_opts_default(&o);
	o.align = (enum dmm_iova_align)7;
	assert_rc(dmm_iova_domain_create(e->mem, 0, G4 - 1, &o, &d), -DMM_EINVAL);

	d = dom(e, G4 - 1, NULL);
	assert_rc(dmm_iova_alloc(d, 0, G4 - 1, &a), -DMM_EINVAL);
	assert_int_equal(a, 123);
	assert_rc(dmm_iova_alloc(d, PG, G4 - 1, NULL), -DMM_EINVAL);
	assert_rc(dmm_iova_alloc(d, PG, 100, &a), -DMM_EINVAL); /* below the domain's first page */
	assert_rc(dmm_iova_free(d, 12, PG), -DMM_EINVAL);      /* unaligned */
	assert_rc(dmm_iova_free(d, PG, 0), -DMM_EINVAL);
	assert_rc(dmm_iova_free(d, 1ull << 40, PG), -DMM_ENOENT); /* outside */
	/* an uncached size that was never allocated: nothing changes */
	assert_rc(dmm_iova_free(d, 1ull << 30, 1 * MiB), -DMM_ENOENT);
	assert_ok(dmm_iova_alloc(d, 1 * MiB, G4 - 1, &a));
	assert_rc(dmm_iova_free(d, a, 2 * MiB), -DMM_ENOENT); /* wrong size */
	assert_rc(dmm_iova_free(d, a + PG * 256, 1 * MiB), -DMM_ENOENT); /* wrong start */
	assert_ok(dmm_iova_check(d));
	assert_ok(dmm_iova_free(d, a, 1 * MiB));
	assert_rc(dmm_iova_free(d, a, 1 * MiB), -DMM_ENOENT); /* double free of a tree range */
	{
		struct dmm_iova_stats st;
		dmm_iova_get_stats(d, &st);
		assert_true(st.fail_invalid >= 4);
		assert_true(st.free_unknown >= 4);
		assert_int_equal(st.ranges, 0);
	}
	assert_int_equal(dmm_iova_rounded(d, 3 * PG), 4 * PG);
	assert_int_equal(dmm_iova_rounded(d, 33 * PG), 33 * PG); /* only cacheable sizes round */
	assert_ok(dmm_iova_check(d));
	dmm_iova_domain_destroy(d);
	tu_env_destroy(e);
}

/* Ranges are below their limit, aligned by policy, never overlap, never 0. */
static void test_bounds_alignment(void **state)
{
	struct tu_env *e = env();
	(void)state;
	for (int pol = 0; pol < 2; pol++) {
		struct dmm_iova_opts o;
		struct dmm_iova_domain *d;
		dmm_dma_addr_t a[64];
		uint64_t sz[64];

		dmm_iova_opts_default(&o);
		o.align = pol ? DMM_IOVA_ALIGN_PAGE : DMM_IOVA_ALIGN_POW2;
		o.no_cache = 1;
		d = dom(e, (1ull << 40) - 1, &o);
		for (int i = 0; i < 64; i++) {
			uint64_t pages = 1 + (uint64_t)(i * 7 % 45);
			dmm_dma_addr_t lim = (i & 1) ? G4 - 1 : (1ull << 40) - 1;
			sz[i] = pages * PG - (i % 3) * 100;
			assert_ok(dmm_iova_alloc(d, sz[i], lim, &a[i]));
			assert_true(a[i] != 0);
			assert_true(a[i] + dmm_iova_rounded(d, sz[i]) - 1 <= lim);
			if (pol == 0) {
				uint64_t p2 = 1;
				while (p2 < pages)
					p2 <<= 1;
				assert_int_equal(a[i] % (p2 * PG), 0);
				if (pages <= 32)
					assert_int_equal(dmm_iova_rounded(d, sz[i]), p2 * PG);
			} else {
				assert_int_equal(a[i] % PG, 0);
				assert_int_equal(dmm_iova_rounded(d, sz[i]), pages * PG);
			}
			for (int j = 0; j < i; j++) {
				uint64_t ei = a[i] + dmm_iova_rounded(d, sz[i]), ej = a[j] + dmm_iova_rounded(d, sz[j]);
				assert_true(ei <= a[j] || ej <= a[i]);
			}
			{
				dmm_dma_addr_t s;
				uint64_t n;
				assert_ok(dmm_iova_find(d, a[i] + PG * (pages - 1), &s, &n));
				assert_int_equal(s, a[i]);
				assert_int_equal(n, dmm_iova_rounded(d, sz[i]));
			}
			assert_ok(dmm_iova_check(d));
		}
		/* top-down: the first full-limit allocation sits at the top */
		assert_true(a[0] >= (1ull << 40) - 64 * PG);
		for (int i = 0; i < 64; i++) {
			assert_ok(dmm_iova_free(d, a[i], sz[i]));
			assert_ok(dmm_iova_check(d));
		}
		dmm_iova_domain_destroy(d);
	}
	tu_env_destroy(e);
}

static void test_guard_pages(void **state)
{
	struct tu_env *e = env();
	struct dmm_iova_opts o;
	struct dmm_iova_domain *d;
	dmm_dma_addr_t a[100];
	struct dmm_iova_stats st;

	(void)state;
	dmm_iova_opts_default(&o);
	o.guard_pages = 1;
	o.align = DMM_IOVA_ALIGN_PAGE;
	d = dom(e, 64 * MiB - 1, &o);
	for (int i = 0; i < 100; i++) {
		assert_ok(dmm_iova_alloc(d, PG, 64 * MiB - 1, &a[i]));
		/* the page after every range is unallocated */
		assert_rc(dmm_iova_find(d, a[i] + PG, NULL, NULL), -DMM_ENOENT);
		for (int j = 0; j < i; j++)
			assert_true(a[j] != a[i] + PG && a[i] != a[j] + PG);
	}
	dmm_iova_get_stats(d, &st);
	assert_int_equal(st.allocated_pages, 200);
	assert_ok(dmm_iova_check(d));
	for (int i = 0; i < 100; i++)
		assert_ok(dmm_iova_free(d, a[i], PG));
	dmm_iova_domain_destroy(d);
	tu_env_destroy(e);
}

static void test_low32_first(void **state)
{
	struct tu_env *e = env();
	struct dmm_iova_opts o;
	struct dmm_iova_domain *d;
	dmm_dma_addr_t a;
	struct dmm_iova_stats st;

	(void)state;
	dmm_iova_opts_default(&o);
	o.low32_first = 1;
	o.align = DMM_IOVA_ALIGN_PAGE; /* so one range can fill the 32-bit space */
	d = dom(e, (1ull << 48) - 1, &o);
	assert_ok(dmm_iova_alloc(d, 8 * PG, (1ull << 48) - 1, &a));
	assert_true(a + 8 * PG <= G4);
	assert_ok(dmm_iova_free(d, a, 8 * PG));
	dmm_iova_trim(d, 1);
	/* fill the space below 4 GiB: the next request goes above */
	{
		dmm_dma_addr_t big;
		assert_ok(dmm_iova_alloc(d, G4 - PG, G4 - 1, &big)); /* 2^20 - 1 pages, all but page 0 */
		assert_ok(dmm_iova_alloc(d, PG * 64, (1ull << 48) - 1, &a));
		assert_true(a >= G4);
		dmm_iova_get_stats(d, &st);
		assert_true(st.low32_fallbacks >= 1);
		assert_ok(dmm_iova_free(d, a, PG * 64));
		assert_ok(dmm_iova_free(d, big, G4 - PG));
	}
	assert_ok(dmm_iova_check(d));
	dmm_iova_domain_destroy(d);
	/* without the policy, full-mask requests stay above 4 GiB */
	d = dom(e, (1ull << 48) - 1, NULL);
	assert_ok(dmm_iova_alloc(d, 8 * PG, (1ull << 48) - 1, &a));
	assert_true(a >= G4);
	assert_ok(dmm_iova_free(d, a, 8 * PG));
	dmm_iova_domain_destroy(d);
	tu_env_destroy(e);
}

/* Fill a small domain page by page: exhaustion, then every freed page is
 * found again whatever its place. */
static void test_exhaustion(void **state)
{
	struct tu_env *e = env();
	struct dmm_iova_opts o;
	struct dmm_iova_domain *d;
	enum { N = 4095 }; /* 16 MiB domain, page 0 never used */
	static dmm_dma_addr_t a[N];
	dmm_dma_addr_t x;

	(void)state;
	dmm_iova_opts_default(&o);
	o.no_cache = 1;
	d = dom(e, 16 * MiB - 1, &o);
	for (int i = 0; i < N; i++)
		assert_ok(dmm_iova_alloc(d, PG, 16 * MiB - 1, &a[i]));
	assert_rc(dmm_iova_alloc(d, PG, 16 * MiB - 1, &x), -DMM_ENOSPC);
	assert_ok(dmm_iova_check(d));
	for (int k = 0; k < 50; k++) {
		int i = (k * 977) % N;
		assert_ok(dmm_iova_free(d, a[i], PG));
		assert_ok(dmm_iova_alloc(d, PG, 16 * MiB - 1, &x));
		assert_int_equal(x, a[i]);
		/* two adjacent free pages aligned to 2 make room for a 2-page range */
	}
	{
		int i = 100; /* pages a[i], a[i] + 1 page: find an aligned pair */
		dmm_dma_addr_t p = 64 * PG;
		for (i = 0; i < N; i++)
			if (a[i] == p || a[i] == p + PG)
				assert_ok(dmm_iova_free(d, a[i], PG));
		assert_ok(dmm_iova_alloc(d, 2 * PG, 16 * MiB - 1, &x));
		assert_int_equal(x, p);
		assert_ok(dmm_iova_free(d, x, 2 * PG));
		for (i = 0; i < N; i++)
			if (a[i] == p || a[i] == p + PG)
				assert_ok(dmm_iova_alloc(d, PG, 16 * MiB - 1, &a[i]));
	}
	assert_ok(dmm_iova_check(d));
	for (int i = 0; i < N; i++)
		assert_ok(dmm_iova_free(d, a[i], PG));
	{
		struct dmm_iova_stats st;
		dmm_iova_get_stats(d, &st);
		assert_int_equal(st.ranges, 0);
		assert_int_equal(st.largest_free, N);
		assert_true(st.tree_depth <= 1); /* just the sentinel */
	}
	dmm_iova_domain_destroy(d);
	tu_env_destroy(e);
}

static void test_cache(void **state)
{
	struct tu_env *e = env();
	struct dmm_iova_opts o;
	struct dmm_iova_domain *d;
	struct dmm_iova_stats st;
	dmm_dma_addr_t a, b, hi[8];

	(void)state;
	dmm_iova_opts_default(&o);
	o.cache_max_pages = 64;
	o.mag_size = 4;
	o.depot_max = 2;
	d = dom(e, (1ull << 40) - 1, &o);
	assert_ok(dmm_iova_alloc(d, PG, (1ull << 40) - 1, &a));
	assert_ok(dmm_iova_free(d, a, PG));
	assert_ok(dmm_iova_alloc(d, PG, (1ull << 40) - 1, &b));
	assert_int_equal(a, b); /* from the magazine */
	dmm_iova_get_stats(d, &st);
	assert_int_equal(st.cache_hits, 1);
	assert_int_equal(st.cache_frees, 1);
	/* the cached range stays allocated in the tree */
	assert_ok(dmm_iova_free(d, b, PG));
	assert_ok(dmm_iova_find(d, b, NULL, NULL));
	assert_ok(dmm_iova_check(d));
	/* bands: high ranges cached never serve a 32-bit request */
	for (int i = 0; i < 8; i++)
		assert_ok(dmm_iova_alloc(d, 2 * PG, (1ull << 40) - 1, &hi[i]));
	for (int i = 0; i < 8; i++) {
		assert_true(hi[i] >= G4);
		assert_ok(dmm_iova_free(d, hi[i], 2 * PG));
	}
	assert_ok(dmm_iova_alloc(d, 2 * PG, G4 - 1, &a));
	assert_true(a + 2 * PG <= G4);
	assert_ok(dmm_iova_check(d));
	/* a low free is then reused by the next 32-bit request */
	assert_ok(dmm_iova_free(d, a, 2 * PG));
	assert_ok(dmm_iova_alloc(d, 2 * PG, G4 - 1, &b));
	assert_int_equal(a, b);
	assert_ok(dmm_iova_free(d, b, 2 * PG));
	/* the bound: the caches never hold more than 64 pages */
	{
		dmm_dma_addr_t v[40];
		for (int i = 0; i < 40; i++)
			assert_ok(dmm_iova_alloc(d, 4 * PG, (1ull << 40) - 1, &v[i]));
		for (int i = 0; i < 40; i++) {
			assert_ok(dmm_iova_free(d, v[i], 4 * PG));
			dmm_iova_get_stats(d, &st);
			assert_true(st.cached_pages <= 64);
			assert_ok(dmm_iova_check(d));
		}
	}
	dmm_iova_get_stats(d, &st);
	assert_true(st.cached_pages > 0);
	/* trimming: nothing is idle yet; all = everything back to the tree */
	assert_int_equal(dmm_iova_trim(d, 0), 0);
	assert_int_equal(dmm_iova_trim(d, 1), st.cached_pages);
	dmm_iova_get_stats(d, &st);
	assert_int_equal(st.cached_pages, 0);
	assert_int_equal(st.cached_ranges, 0);
	assert_int_equal(st.ranges, 0);
	assert_ok(dmm_iova_check(d));
	dmm_iova_domain_destroy(d);

	/* idle trimming after idle_trim_ns */
	dmm_iova_opts_default(&o);
	o.idle_trim_ns = 20 * 1000 * 1000;
	d = dom(e, G4 - 1, &o);
	assert_ok(dmm_iova_alloc(d, PG, G4 - 1, &a));
	assert_ok(dmm_iova_free(d, a, PG));
	assert_int_equal(dmm_iova_trim(d, 0), 0);
	{
		struct timespec ts = { 0, 40 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	assert_int_equal(dmm_iova_trim(d, 0), 1);
	dmm_iova_get_stats(d, &st);
	assert_int_equal(st.ranges, 0);
	dmm_iova_domain_destroy(d);
	tu_env_destroy(e);
}

/* A full space whose free pages sit in the caches: a request still succeeds. */
static void test_cache_holds_last_space(void **state)
{
	struct tu_env *e = env();
	struct dmm_iova_domain *d = dom(e, 1 * MiB - 1, NULL); /* 255 pages */
	dmm_dma_addr_t a[255], x;
	int n = 0;

	(void)state;
	while (n < 255 && dmm_iova_alloc(d, PG, 1 * MiB - 1, &a[n]) == 0)
		n++;
	assert_int_equal(n, 255);
	for (int i = 0; i < n; i++)
		assert_ok(dmm_iova_free(d, a[i], PG)); /* all cached */
	assert_ok(dmm_iova_alloc(d, 64 * PG, 1 * MiB - 1, &x)); /* needs the caches flushed */
	assert_ok(dmm_iova_free(d, x, 64 * PG));
	assert_ok(dmm_iova_check(d));
	dmm_iova_domain_destroy(d);
	tu_env_destroy(e);
}

/* ---- randomized stress against a reference map -------------------------------- */

struct live {
	dmm_dma_addr_t a;
	uint64_t size, lim;
};

static void stress(struct dmm_iova_domain *d, uint64_t seed, int steps, int check_each, uint8_t *map,
		   uint64_t map_pages)
{
	struct live *lv = calloc(4096, sizeof(*lv));
	int n = 0;
	uint64_t s = seed;

	assert_non_null(lv);
	for (int k = 0; k < steps; k++) {
		if (n < 4096 && (n == 0 || tu_rand_below(&s, 100) < 55)) {
			uint64_t pages = tu_rand_below(&s, 4) ? 1 + tu_rand_below(&s, 8) : 1 + tu_rand_below(&s, 300);
			uint64_t size = pages * PG - tu_rand_below(&s, PG);
			uint64_t lim = tu_rand_below(&s, 3) ? G4 - 1 : (1ull << 36) - 1;
			dmm_dma_addr_t a;
			int rc = dmm_iova_alloc(d, size, lim, &a);
			if (rc == -DMM_ENOSPC)
				continue;
			assert_ok(rc);
			assert_true(a + dmm_iova_rounded(d, size) - 1 <= lim);
			if (map) {
				uint64_t p0 = a / PG, np = dmm_iova_rounded(d, size) / PG;
				assert_true(p0 + np <= map_pages);
				for (uint64_t p = p0; p < p0 + np; p++) {
					assert_int_equal(map[p], 0);
					map[p] = 1;
				}
			}
			lv[n++] = (struct live){ a, size, lim };
		} else {
			int i = (int)tu_rand_below(&s, (uint64_t)n);
			if (map) {
				uint64_t p0 = lv[i].a / PG, np = dmm_iova_rounded(d, lv[i].size) / PG;
				for (uint64_t p = p0; p < p0 + np; p++)
					map[p] = 0;
			}
			assert_ok(dmm_iova_free(d, lv[i].a, lv[i].size));
			lv[i] = lv[--n];
		}
		if (check_each)
			assert_ok(dmm_iova_check(d));
	}
	while (n > 0) {
		n--;
		if (map) {
			uint64_t p0 = lv[n].a / PG, np = dmm_iova_rounded(d, lv[n].size) / PG;
			for (uint64_t p = p0; p < p0 + np; p++)
				map[p] = 0;
		}
		assert_ok(dmm_iova_free(d, lv[n].a, lv[n].size));
	}
	free(lv);
}

static void test_stress_reference(void **state)
{
	struct tu_env *e = env();
	(void)state;
	for (int variant = 0; variant < 4; variant++) {
		struct dmm_iova_opts o;
		struct dmm_iova_domain *d;
		uint64_t map_pages = (1ull << 36) / PG;
		uint8_t *map = calloc(map_pages, 1);
		struct dmm_iova_stats st;

		assert_non_null(map);
		dmm_iova_opts_default(&o);
		o.align = variant & 1 ? DMM_IOVA_ALIGN_PAGE : DMM_IOVA_ALIGN_POW2;
		o.guard_pages = variant >= 2 ? 2 : 0;
		o.low32_first = variant == 3;
		o.mag_size = 8;
		o.depot_max = 2;
		o.cache_max_pages = 256;
		/* a 64 GiB space with a 4 GiB and a full limit */
		d = dom(e, (1ull << 36) - 1, &o);
		stress(d, 1000 + (uint64_t)variant, 6000, 1, o.guard_pages ? NULL : map, map_pages);
		assert_ok(dmm_iova_check(d));
		dmm_iova_trim(d, 1);
		dmm_iova_get_stats(d, &st);
		assert_int_equal(st.ranges, 0);
		assert_true(st.cache_hits > 0);
		free(map);
		dmm_iova_domain_destroy(d);
	}
	tu_env_destroy(e);
}

struct thr {
	struct dmm_iova_domain *d;
	uint64_t seed;
};

static void *thr_fn(void *arg)
{
	struct thr *t = arg;
	stress(t->d, t->seed, 20000, 0, NULL, 0);
	return NULL;
}

static void test_two_threads(void **state)
{
	struct tu_env *e = env();
	struct dmm_iova_opts o;
	struct dmm_iova_domain *d;
	pthread_t th[2];
	struct thr t[2];
	struct dmm_iova_stats st;

	(void)state;
	dmm_iova_opts_default(&o);
	o.mag_size = 8;
	o.depot_max = 2;
	d = dom(e, (1ull << 36) - 1, &o);
	for (int i = 0; i < 2; i++) {
		t[i] = (struct thr){ d, 77 + (uint64_t)i };
		assert_int_equal(pthread_create(&th[i], NULL, thr_fn, &t[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	assert_ok(dmm_iova_check(d));
	dmm_iova_trim(d, 1);
	dmm_iova_get_stats(d, &st);
	assert_int_equal(st.ranges, 0);
	assert_int_equal(st.allocs, st.frees);
	dmm_iova_domain_destroy(d);
	tu_env_destroy(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_invalid),
		cmocka_unit_test(test_bounds_alignment),
		cmocka_unit_test(test_guard_pages),
		cmocka_unit_test(test_low32_first),
		cmocka_unit_test(test_exhaustion),
		cmocka_unit_test(test_cache),
		cmocka_unit_test(test_cache_holds_last_space),
		cmocka_unit_test(test_stress_reference),
		cmocka_unit_test(test_two_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

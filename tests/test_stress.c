/* SPDX-License-Identifier: MIT */
/*
 * Stress: two threads doing random page and range allocations and frees
 * with fill patterns checked at free time and a shared ownership map that
 * catches any page handed out twice; then a single-threaded randomized run
 * that calls both checks after every step.
 */
#include <pthread.h>

#include "tu.h"

#define MAX_LIVE 256

struct item {
	dmm_pfn_t pfn;
	uint64_t nr;
	int order; /* -1 = range */
	uint64_t salt;
};

struct shared {
	struct dmm_mem *mem;
	uint8_t *owned; /* atomic bytes, one per pfn */
	dmm_pfn_t base;
	uint64_t npfn;
	dmm_phys_t dma_limit, dma32_limit;
};

struct worker {
	struct shared *sh;
	uint64_t seed;
	unsigned steps;
	struct item live[MAX_LIVE];
	unsigned nl;
	unsigned long ops, allocs, ranges, frees, fails, checks;
	char err[256]; /* first error, empty if none */
};

static void werr(struct worker *w, const char *what, dmm_pfn_t pfn, int rc)
{
	if (!w->err[0])
		snprintf(w->err, sizeof(w->err), "%s (pfn %#llx, rc %s)", what,
			 (unsigned long long)pfn, dmm_errname(rc));
}

static int claim(struct worker *w, dmm_pfn_t pfn, uint64_t n, uint8_t v)
{
	struct shared *sh = w->sh;
	if (pfn < sh->base || pfn + n > sh->base + sh->npfn) {
		werr(w, "block outside RAM", pfn, 0);
		return -1;
	}
	for (uint64_t i = 0; i < n; i++) {
		uint8_t old = __atomic_exchange_n(&sh->owned[pfn + i - sh->base], v, __ATOMIC_ACQ_REL);
		if (old == v) {
			werr(w, v ? "page handed out twice" : "page freed twice", pfn + i, 0);
			return -1;
		}
	}
	return 0;
}

/* Pattern at both ends of every page. */
static void wfill(struct dmm_mem *mem, dmm_pfn_t pfn, uint64_t n, uint64_t salt)
{
	for (uint64_t p = 0; p < n; p++) {
		uint64_t *v = dmm_pfn_to_virt(mem, pfn + p);
		v[0] = tu_token(pfn + p, salt, 0);
		v[511] = tu_token(pfn + p, salt, 511);
	}
}

static int wcheck(struct dmm_mem *mem, dmm_pfn_t pfn, uint64_t n, uint64_t salt)
{
	for (uint64_t p = 0; p < n; p++) {
		const uint64_t *v = dmm_pfn_to_virt(mem, pfn + p);
		if (v[0] != tu_token(pfn + p, salt, 0) || v[511] != tu_token(pfn + p, salt, 511))
			return -1;
	}
	return 0;
}

static void random_constraint(uint64_t *rs, struct dmm_constraint *c)
{
	*c = DMM_CONSTRAINT_ANY;
	switch (tu_rand_below(rs, 5)) {
	case 0:
		c->hi = 16 * MiB;
		break;
	case 1:
		c->lo = (tu_rand_below(rs, 40)) * MiB;
		c->hi = c->lo + (tu_rand_below(rs, 16) + 1) * MiB;
		break;
	case 2:
		c->lo = 4 * GiB;
		break;
	default:
		break;
	}
	if (tu_rand_below(rs, 4) == 0)
		c->align = DMM_PAGE_SIZE << tu_rand_below(rs, 8);
}

#define BAD_SIZE 1   /* wrong-order and tail frees of live blocks */
#define BAD_DOUBLE 2 /* double frees */

/* One random step; returns 0 or -1 on a detected error (message in w->err). */
static int step(struct worker *w, uint64_t *rs, int allow_bad)
{
	struct dmm_mem *mem = w->sh->mem;
	uint64_t op = tu_rand_below(rs, 100);
	w->ops++;
	if (op < 40 && w->nl < MAX_LIVE) {
		/* page allocation: mostly small orders, sometimes large */
		unsigned order = (unsigned)(tu_rand_below(rs, 8) == 0 ? tu_rand_below(rs, DMM_MAX_ORDER + 1)
								   : tu_rand_below(rs, 4));
		static const unsigned flag_set[] = { 0, DMM_GFP_MOVABLE, DMM_GFP_RECLAIMABLE, DMM_GFP_DMA32,
						     DMM_GFP_DMA, DMM_GFP_NOCACHE, DMM_GFP_ZERO | DMM_GFP_MOVABLE,
						     DMM_GFP_ATOMIC };
		unsigned flags = flag_set[tu_rand_below(rs, sizeof(flag_set) / sizeof(flag_set[0]))];
		struct dmm_constraint c, *cp = NULL;
		dmm_pfn_t pfn = 0;
		if (!(flags & (DMM_GFP_DMA | DMM_GFP_DMA32)) && tu_rand_below(rs, 4) == 0) {
			random_constraint(rs, &c);
			cp = &c;
		}
		int rc = dmm_page_alloc(mem, order, cp, flags, &pfn);
		if (rc) {
			if (rc != -DMM_ENOMEM && rc != -DMM_EWMARK && rc != -DMM_ERANGE) {
				werr(w, "page alloc: unexpected error", 0, rc);
				return -1;
			}
			w->fails++;
			return 0;
		}
		uint64_t n = 1ull << order;
		if (pfn & (n - 1)) {
			werr(w, "block not naturally aligned", pfn, 0);
			return -1;
		}
		if (cp && !dmm_constraint_ok(cp, dmm_pfn_to_phys(pfn), n << DMM_PAGE_SHIFT)) {
			werr(w, "block outside its constraint", pfn, 0);
			return -1;
		}
		if (((flags & DMM_GFP_DMA) && dmm_pfn_to_phys(pfn + n) > w->sh->dma_limit) ||
		    ((flags & DMM_GFP_DMA32) && dmm_pfn_to_phys(pfn + n) > w->sh->dma32_limit)) {
			werr(w, "DMA shorthand not honoured", pfn, 0);
			return -1;
		}
		if (claim(w, pfn, n, 1))
			return -1;
		if ((flags & DMM_GFP_ZERO)) {
			for (uint64_t p = 0; p < n; p++) {
				const uint64_t *v = dmm_pfn_to_virt(mem, pfn + p);
				if (v[0] || v[511] || v[100]) {
					werr(w, "GFP_ZERO block not zero", pfn + p, 0);
					return -1;
				}
			}
		}
		w->live[w->nl] = (struct item){ pfn, n, (int)order, tu_rand(rs) };
		wfill(mem, pfn, n, w->live[w->nl].salt);
		w->nl++;
		w->allocs++;
	} else if (op < 55 && w->nl < MAX_LIVE) {
		struct dmm_constraint c;
		dmm_pfn_t pfn = 0;
		uint64_t nr = tu_rand_below(rs, 8) == 0 ? tu_rand_below(rs, 1024) + 1 : tu_rand_below(rs, 16) + 1;
		random_constraint(rs, &c);
		if (tu_rand_below(rs, 4) == 0) {
			uint64_t b = 1;
			while (b < nr)
				b <<= 1;
			c.boundary = b * DMM_PAGE_SIZE * 2;
		}
		int rc = dmm_alloc_range(mem, &c, nr, tu_rand_below(rs, 2) ? DMM_GFP_ATOMIC : 0, &pfn);
		if (rc) {
			if (rc != -DMM_ENOMEM && rc != -DMM_EWMARK && rc != -DMM_ERANGE) {
				werr(w, "range alloc: unexpected error", 0, rc);
				return -1;
			}
			w->fails++;
			return 0;
		}
		if (!dmm_constraint_ok(&c, dmm_pfn_to_phys(pfn), nr << DMM_PAGE_SHIFT)) {
			werr(w, "range outside its constraint", pfn, 0);
			return -1;
		}
		if (claim(w, pfn, nr, 1))
			return -1;
		w->live[w->nl] = (struct item){ pfn, nr, -1, tu_rand(rs) };
		wfill(mem, pfn, nr, w->live[w->nl].salt);
		w->nl++;
		w->ranges++;
	} else if (op < 95 && w->nl) {
		unsigned i = (unsigned)tu_rand_below(rs, w->nl);
		struct item it = w->live[i];
		if (wcheck(mem, it.pfn, it.nr, it.salt)) {
			werr(w, "fill pattern corrupted", it.pfn, 0);
			return -1;
		}
		if (claim(w, it.pfn, it.nr, 0))
			return -1;
		int rc = it.order < 0 ? dmm_free_range(mem, it.pfn, it.nr)
				      : dmm_page_free(mem, it.pfn, (unsigned)it.order);
		if (rc) {
			werr(w, "free failed", it.pfn, rc);
			return -1;
		}
		if ((allow_bad & BAD_DOUBLE) && tu_rand_below(rs, 4) == 0) {
			/* the same free again must be refused (single-threaded only:
			 * another thread may own the block by now) */
			rc = it.order < 0 ? dmm_free_range(mem, it.pfn, it.nr)
					  : dmm_page_free(mem, it.pfn, (unsigned)it.order);
			if (rc != -DMM_ENOENT) {
				werr(w, "double free not refused with ENOENT", it.pfn, rc);
				return -1;
			}
		}
		w->live[i] = w->live[--w->nl];
		w->frees++;
	} else if (op < 97) {
		dmm_page_drain_pcp(mem);
	} else if ((allow_bad & BAD_SIZE) && w->nl) {
		/* wrong order / wrong size on a live block: refused, nothing changes */
		struct item *it = &w->live[tu_rand_below(rs, w->nl)];
		int rc = it->order < 0 ? dmm_free_range(mem, it->pfn, it->nr + 1)
				       : dmm_page_free(mem, it->pfn, (unsigned)it->order + 1);
		if (rc != -DMM_EINVAL) {
			werr(w, "wrong-size free not refused with EINVAL", it->pfn, rc);
			return -1;
		}
		if (it->nr > 1) {
			rc = it->order < 0 ? dmm_free_range(mem, it->pfn + 1, it->nr - 1)
					   : dmm_page_free(mem, it->pfn + 1, 0);
			if (rc != -DMM_ENOENT) {
				werr(w, "tail free not refused with ENOENT", it->pfn + 1, rc);
				return -1;
			}
		}
	}
	return 0;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	uint64_t rs = w->seed;
	for (unsigned i = 0; i < w->steps; i++) {
		if (step(w, &rs, BAD_SIZE))
			break;
		/* the full check takes every lock: safe to run concurrently */
		if (w->seed & 1 && i % 4096 == 0) {
			int rc = dmm_page_alloc_check(w->sh->mem);
			w->checks++;
			if (rc) {
				werr(w, "dmm_page_alloc_check failed during the run", 0, rc);
				break;
			}
		}
	}
	return NULL;
}

static void drain_worker(struct tu_env *e, struct worker *w)
{
	for (unsigned i = 0; i < w->nl; i++) {
		struct item *it = &w->live[i];
		if (wcheck(e->mem, it->pfn, it->nr, it->salt)) {
			print_error("pattern lost at pfn %#llx\n", (unsigned long long)it->pfn);
			fail();
		}
		if (it->order < 0)
			assert_ok(dmm_free_range(e->mem, it->pfn, it->nr));
		else
			assert_ok(dmm_page_free(e->mem, it->pfn, (unsigned)it->order));
		for (uint64_t p = 0; p < it->nr; p++)
			e->owned[it->pfn + p - e->base] = 0;
	}
	w->nl = 0;
}

static unsigned steps_from_env(unsigned dflt)
{
	const char *s = getenv("DMM_STRESS_STEPS");
	return s ? (unsigned)strtoul(s, NULL, 10) : dflt;
}

static void two_threads(unsigned nr_cpus, unsigned steps)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct shared sh;
	static struct worker w[2];
	pthread_t th[2];
	tu_machine_holes(&m);
	e = tu_env_create(&m, nr_cpus);
	sh = (struct shared){ e->mem, e->owned, e->base, e->npfn, m.dma_limit, m.dma32_limit };
	for (int i = 0; i < 2; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].sh = &sh;
		w[i].seed = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1) + (uint64_t)i;
		w[i].steps = steps;
		assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	for (int i = 0; i < 2; i++) {
		print_message("thread %d: %lu ops, %lu page allocs, %lu ranges, %lu frees, %lu failures, %lu checks\n",
			      i, w[i].ops, w[i].allocs, w[i].ranges, w[i].frees, w[i].fails, w[i].checks);
		if (w[i].err[0]) {
			print_error("thread %d: %s\n", i, w[i].err);
			fail();
		}
		assert_true(w[i].allocs > 100 && w[i].ranges > 100 && w[i].frees > 100);
	}
	assert_checks(e->mem);
	for (int i = 0; i < 2; i++)
		drain_worker(e, &w[i]);
	dmm_page_drain_pcp(e->mem);
	assert_checks(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), e->free0);
	tu_env_destroy(e);
}

/* Each thread on its own per-CPU cache. */
static void test_two_threads(void **state)
{
	(void)state;
	two_threads(2, steps_from_env(150000));
}

/* Both threads sharing one per-CPU cache (a thread that migrates between
 * CPUs meets another thread's cache the same way). */
static void test_two_threads_one_cpu(void **state)
{
	(void)state;
	two_threads(1, steps_from_env(150000) / 3);
}

static void test_checked_every_step(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct shared sh;
	static struct worker w;
	uint64_t rs = 42;
	unsigned steps = steps_from_env(150000) / 30;
	(void)state;
	tu_machine_holes(&m);
	e = tu_env_create(&m, 1);
	sh = (struct shared){ e->mem, e->owned, e->base, e->npfn, m.dma_limit, m.dma32_limit };
	memset(&w, 0, sizeof(w));
	w.sh = &sh;
	for (unsigned i = 0; i < steps; i++) {
		if (step(&w, &rs, BAD_SIZE | BAD_DOUBLE)) {
			print_error("step %u: %s\n", i, w.err);
			fail();
		}
		int rc1 = dmm_page_alloc_check(e->mem);
		int rc2 = dmm_range_check(e->mem);
		if (rc1 || rc2) {
			print_error("step %u: page_alloc_check %s, range_check %s\n", i, dmm_errname(rc1),
				    dmm_errname(rc2));
			fail();
		}
		/* free + cached + held by us == everything managed */
		uint64_t held = 0;
		for (unsigned j = 0; j < w.nl; j++)
			held += w.live[j].nr;
		assert_int_equal(tu_zone_free_all(e->mem) + held, e->free0);
	}
	assert_true(w.allocs > 100 && w.ranges > 100);
	drain_worker(e, &w);
	dmm_page_drain_pcp(e->mem);
	assert_checks(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), e->free0);
	tu_env_destroy(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_two_threads),
		cmocka_unit_test(test_two_threads_one_cpu),
		cmocka_unit_test(test_checked_every_step),
	};
	return cmocka_run_group_tests_name("stress", tests, NULL, NULL);
}

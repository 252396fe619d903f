/* SPDX-License-Identifier: MIT */
/*
 * Contiguous memory areas: placement, lending to movable pages, allocation
 * by migration (contents verified), pinning, policies, uncached remapping,
 * bad input, and concurrent allocation under movable churn.
 */
#include <pthread.h>

#include "tu.h"

#define assert_all_checks(mem)                  \
	do {                                    \
		assert_checks(mem);             \
		assert_ok(dmm_cma_check(mem));  \
	} while (0)

/* 128 MiB machine with holes, a 32 MiB default area below 96 MiB. */
static void cma_machine(struct dmm_machine *m, enum dmm_cma_policy pol)
{
	tu_machine(m, "test-cma");
	tu_add_ram(m, 0x1000, 0x9e000);
	tu_add_ram(m, 1 * MiB, 127 * MiB);
	m->dma_limit = 16 * MiB;
	m->dma32_limit = 0;
	m->nr_cma = 1;
	snprintf(m->cma[0].name, sizeof(m->cma[0].name), "camera");
	m->cma[0].size = 32 * MiB;
	m->cma[0].limit = 96 * MiB;
	m->cma[0].align = 4 * MiB;
	m->cma[0].is_default = 1;
	m->cma_policy = pol;
}

static uint8_t pat(uint32_t h, size_t i)
{
	return (uint8_t)(h * 31u + i * 7u + 1u);
}

/* Fill the area with handle pages (policy first); returns the count. */
static uint32_t fill_area(struct tu_env *e, struct dmm_handles *ht, uint32_t *hs, uint32_t cap)
{
	struct dmm_cma_info ci;
	uint32_t n = 0;

	for (int round = 0; round < 16; round++) {
		dmm_page_drain_pcp(e->mem);
		assert_ok(dmm_cma_get_info(e->mem, 0, &ci));
		if (!ci.free_pages)
			break;
		for (uint64_t k = 0; k < ci.free_pages && n < cap; k++) {
			uint8_t *v;
			assert_ok(dmm_handle_alloc(ht, 0, &hs[n]));
			v = dmm_handle_lock(ht, hs[n]);
			for (size_t i = 0; i < DMM_PAGE_SIZE; i += 64)
				v[i] = pat(hs[n], i);
			assert_ok(dmm_handle_unlock(ht, hs[n]));
			n++;
		}
	}
	assert_ok(dmm_cma_get_info(e->mem, 0, &ci));
	assert_int_equal(ci.free_pages, 0);
	assert_int_equal(ci.lent_pages, ci.nr_pages);
	return n;
}

static void verify_handles(struct dmm_handles *ht, const uint32_t *hs, uint32_t n)
{
	for (uint32_t k = 0; k < n; k++) {
		const uint8_t *v = dmm_handle_lock(ht, hs[k]);
		assert_non_null(v);
		for (size_t i = 0; i < DMM_PAGE_SIZE; i += 64)
			if (v[i] != pat(hs[k], i))
				fail_msg("handle %u lost byte %zu", hs[k], i);
		assert_ok(dmm_handle_unlock(ht, hs[k]));
	}
}

static void test_placement_and_validation(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct dmm_cma_info ci;
	(void)state;

	cma_machine(&m, DMM_CMA_POLICY_HALF);
	m.nr_cma = 2;
	snprintf(m.cma[1].name, sizeof(m.cma[1].name), "display");
	m.cma[1].size = 5 * MiB; /* rounded up to pageblocks */
	m.cma[1].base = 20 * MiB;
	e = tu_env_create(&m, 1);
	assert_int_equal(dmm_cma_count(e->mem), 2);
	assert_int_equal(dmm_cma_find(e->mem, "display"), 1);
	assert_rc(dmm_cma_find(e->mem, "nope"), -DMM_ENOENT);
	assert_int_equal(dmm_cma_default(e->mem), 0);
	assert_ok(dmm_cma_get_info(e->mem, 0, &ci));
	assert_int_equal(ci.nr_pages, 32 * MiB / DMM_PAGE_SIZE);
	assert_true(dmm_pfn_to_phys(ci.base_pfn + ci.nr_pages) <= 96 * MiB);
	assert_int_equal(dmm_pfn_to_phys(ci.base_pfn) % (4 * MiB), 0);
	assert_int_equal(ci.free_pages, ci.nr_pages);
	assert_true(ci.is_default);
	for (dmm_pfn_t p = ci.base_pfn; p < ci.base_pfn + ci.nr_pages; p += 97)
		assert_int_equal(dmm_pfn_to_page(e->mem, p)->cma, 1);
	assert_ok(dmm_cma_get_info(e->mem, 1, &ci));
	assert_int_equal(dmm_pfn_to_phys(ci.base_pfn), 20 * MiB);
	assert_int_equal(ci.nr_pages, 6 * MiB / DMM_PAGE_SIZE);
	assert_rc(dmm_cma_get_info(e->mem, 2, &ci), -DMM_EINVAL);
	{
		struct dmm_zone_info zi;
		assert_ok(dmm_zone_get_info(e->mem, (unsigned)dmm_zone_index(e->mem, DMM_ZONE_NORMAL), &zi));
		assert_true(zi.pageblocks_mt[DMM_MT_CMA] >= 16 + 3);
		assert_true(zi.free_blocks_mt[DMM_MT_CMA][9] + zi.free_blocks_mt[DMM_MT_CMA][10] > 0);
	}
	assert_all_checks(e->mem);
	tu_env_destroy(e);

	/* malformed declarations */
	cma_machine(&m, DMM_CMA_POLICY_HALF);
	m.cma[0].size = 0;
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
	cma_machine(&m, DMM_CMA_POLICY_HALF);
	m.cma[0].align = 3 * MiB;
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
	cma_machine(&m, DMM_CMA_POLICY_HALF);
	m.cma[0].base = 3 * MiB; /* not pageblock-aligned */
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
	cma_machine(&m, DMM_CMA_POLICY_HALF);
	m.nr_cma = 2;
	m.cma[1] = m.cma[0]; /* duplicate name and two defaults */
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
	snprintf(m.cma[1].name, sizeof(m.cma[1].name), "other");
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL); /* still two defaults */
	m.cma[1].is_default = 0;
	assert_ok(dmm_machine_validate(&m));
	cma_machine(&m, (enum dmm_cma_policy)9);
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
	/* an area that does not fit fails the memory map cleanly */
	{
		struct dmm_hosted *h;
		struct dmm_mem *mem;
		cma_machine(&m, DMM_CMA_POLICY_HALF);
		m.cma[0].size = 200 * MiB;
		assert_rc(dmm_hosted_mem_create(&m, 1, &h, &mem), -DMM_ENOMEM);
		cma_machine(&m, DMM_CMA_POLICY_HALF);
		m.cma[0].base = 126 * MiB; /* runs past the end of RAM */
		assert_rc(dmm_hosted_mem_create(&m, 1, &h, &mem), -DMM_EINVAL);
	}
}

static void test_policies(void **state)
{
	static const enum dmm_cma_policy pols[] = { DMM_CMA_POLICY_NEVER, DMM_CMA_POLICY_FIRST,
						    DMM_CMA_POLICY_LAST };
	(void)state;
	for (size_t pi = 0; pi < 3; pi++) {
		struct dmm_machine m;
		struct tu_env *e;
		struct dmm_handles *ht;
		static uint32_t hs[512];
		static dmm_pfn_t plain[512];
		unsigned in_area = 0, plain_in_area = 0;

		cma_machine(&m, pols[pi]);
		e = tu_env_create(&m, 1);
		assert_ok(dmm_handles_create(e->mem, 512, &ht));
		for (unsigned i = 0; i < 512; i++) {
			dmm_pfn_t p;
			assert_ok(dmm_handle_alloc(ht, 0, &hs[i]));
			assert_ok(dmm_handle_pfn(ht, hs[i], &p));
			in_area += dmm_pfn_to_page(e->mem, p)->cma != 0;
			/* a movable page without an owner could never move out again */
			assert_ok(dmm_page_alloc(e->mem, 0, NULL, DMM_GFP_MOVABLE, &plain[i]));
			plain_in_area += dmm_pfn_to_page(e->mem, plain[i])->cma != 0;
		}
		assert_int_equal(plain_in_area, 0);
		if (pols[pi] == DMM_CMA_POLICY_FIRST)
			assert_int_equal(in_area, 512);
		else
			assert_int_equal(in_area, 0); /* never; last: ordinary memory is plentiful */
		for (unsigned i = 0; i < 512; i++)
			assert_ok(dmm_page_free(e->mem, plain[i], 0));
		dmm_handles_destroy(ht);
		assert_all_checks(e->mem);
		tu_env_destroy(e);
	}
}

static void test_alloc_migrates_contents(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct dmm_handles *ht;
	struct dmm_cma_info ci;
	static uint32_t hs[16384];
	uint32_t n;
	dmm_pfn_t p, q;
	enum dmm_cma_fail why;
	(void)state;

	cma_machine(&m, DMM_CMA_POLICY_FIRST);
	e = tu_env_create(&m, 2);
	assert_ok(dmm_handles_create(e->mem, 16384, &ht));
	n = fill_area(e, ht, hs, 16384);
	assert_all_checks(e->mem);
	assert_ok(dmm_handles_check(ht));

	/* 8 MiB, 1 MiB-aligned, out of an area full of movable pages */
	assert_ok(dmm_cma_alloc(e->mem, 0, 2048, 1 * MiB, DMM_CMA_ZERO, &p, &why));
	assert_int_equal(dmm_pfn_to_phys(p) % MiB, 0);
	assert_ok(dmm_cma_get_info(e->mem, 0, &ci));
	assert_true(p >= ci.base_pfn && p + 2048 <= ci.base_pfn + ci.nr_pages);
	assert_true(tu_is_zero(e->mem, p, 2048));
	assert_int_equal(ci.used_pages, 2048);
	assert_true(ci.pages_migrated >= 2048);
	assert_int_equal(ci.allocs_ok, 1);
	assert_int_equal(ci.lat_count, 1);
	assert_all_checks(e->mem);
	assert_ok(dmm_handles_check(ht));
	verify_handles(ht, hs, n); /* every byte moved with its page */
	for (uint32_t k = 0; k < n; k++) {
		dmm_pfn_t hp;
		assert_ok(dmm_handle_pfn(ht, hs[k], &hp));
		assert_true(hp < p || hp >= p + 2048); /* nothing left inside the buffer */
	}
	tu_fill(e->mem, p, 2048, 77, 1);

	/* a second buffer elsewhere in the area, with the uncached attribute */
	{
		struct dmm_hosted_stats s0, s1;
		dmm_hosted_get_stats(e->hosted, &s0);
		assert_ok(dmm_cma_alloc(e->mem, 0, 1024, 0, DMM_CMA_UNCACHED, &q, &why));
		dmm_hosted_get_stats(e->hosted, &s1);
		assert_int_equal(s1.memattr_calls, s0.memattr_calls + 1);
		assert_int_equal(s1.memattr_bytes, s0.memattr_bytes + 1024 * DMM_PAGE_SIZE);
		assert_true(q + 1024 <= p || q >= p + 2048);
		assert_ok(dmm_cma_release(e->mem, 0, q, 1024));
		dmm_hosted_get_stats(e->hosted, &s0);
		assert_int_equal(s0.memattr_calls, s1.memattr_calls + 1); /* restored */
		assert_ok(dmm_cma_get_info(e->mem, 0, &ci));
		assert_int_equal(ci.pages_remapped, 2048);
	}
	tu_verify(e->mem, p, 2048, 77, 1);
	verify_handles(ht, hs, n);
	assert_ok(dmm_cma_release(e->mem, 0, p, 2048));
	assert_all_checks(e->mem);
	dmm_handles_destroy(ht);
	dmm_page_drain_pcp(e->mem);
	assert_all_checks(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), e->free0);
	tu_env_destroy(e);
}

static void test_pins(void **state)
{
	for (int protect = 0; protect <= 1; protect++) {
		struct dmm_machine m;
		struct tu_env *e;
		struct dmm_handles *ht;
		struct dmm_cma_info ci;
		static uint32_t hs[16384];
		uint32_t n, victim;
		dmm_pfn_t vp, pinned, p;
		enum dmm_migrate_reason mr;
		enum dmm_cma_fail why;
		(void)state;

		cma_machine(&m, DMM_CMA_POLICY_FIRST);
		m.longterm_pin_migrate = protect;
		e = tu_env_create(&m, 1);
		assert_ok(dmm_handles_create(e->mem, 16384, &ht));
		n = fill_area(e, ht, hs, 16384);
		assert_ok(dmm_cma_get_info(e->mem, 0, &ci));
		/* the page in the middle of the area */
		victim = DMM_HANDLE_NONE;
		for (uint32_t k = 0; k < n; k++) {
			assert_ok(dmm_handle_pfn(ht, hs[k], &vp));
			if (vp == ci.base_pfn + ci.nr_pages / 2) {
				victim = hs[k];
				break;
			}
		}
		assert_true(victim != DMM_HANDLE_NONE);
		assert_ok(dmm_page_pin(e->mem, vp, DMM_PIN_LONGTERM, &pinned, &mr));
		if (protect) {
			/* the pin moved the page out of the area first */
			assert_true(pinned < ci.base_pfn || pinned >= ci.base_pfn + ci.nr_pages);
			assert_int_equal(dmm_pfn_to_page(e->mem, pinned)->cma, 0);
			assert_ok(dmm_handle_pfn(ht, victim, &p));
			assert_int_equal(p, pinned);
			/* so the whole area can be taken */
			assert_ok(dmm_cma_alloc(e->mem, 0, ci.nr_pages, 0, 0, &p, &why));
			assert_ok(dmm_cma_release(e->mem, 0, p, ci.nr_pages));
		} else {
			assert_int_equal(pinned, vp); /* stays in the area */
			/* the whole area cannot be taken: the reason is the pin */
			assert_rc(dmm_cma_alloc(e->mem, 0, ci.nr_pages, 0, 0, &p, &why), -DMM_EBUSY);
			assert_int_equal(why, DMM_CMA_FAIL_PINNED);
			assert_ok(dmm_cma_get_info(e->mem, 0, &ci));
			assert_int_equal(ci.fail[DMM_CMA_FAIL_PINNED], 1);
			assert_int_equal(ci.used_pages, 0);
			/* half of it can: another range is picked */
			assert_ok(dmm_cma_alloc(e->mem, 0, ci.nr_pages / 2 - 512, 0, 0, &p, &why));
			assert_true(pinned < p || pinned >= p + ci.nr_pages / 2 - 512);
			assert_ok(dmm_cma_get_info(e->mem, 0, &ci));
			assert_true(ci.ranges_tried >= 2);
			assert_ok(dmm_cma_release(e->mem, 0, p, ci.nr_pages / 2 - 512));
		}
		verify_handles(ht, hs, n);
		assert_all_checks(e->mem);
		assert_ok(dmm_page_unpin(e->mem, pinned, DMM_PIN_LONGTERM));
		dmm_handles_destroy(ht);
		assert_all_checks(e->mem);
		tu_env_destroy(e);
	}
}

static void test_bad_input(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct dmm_cma_info c0, c1;
	dmm_pfn_t p, q;
	enum dmm_cma_fail why;
	uint64_t free0;
	(void)state;

	cma_machine(&m, DMM_CMA_POLICY_HALF);
	e = tu_env_create(&m, 1);
	assert_ok(dmm_cma_alloc(e->mem, 0, 256, 0, 0, &p, &why));
	assert_ok(dmm_cma_get_info(e->mem, 0, &c0));
	free0 = dmm_mem_free_pages(e->mem);

	assert_rc(dmm_cma_alloc(e->mem, 0, 0, 0, 0, &q, &why), -DMM_EINVAL);         /* zero pages */
	assert_rc(dmm_cma_alloc(e->mem, 0, 16, 3 * 4096, 0, &q, &why), -DMM_EINVAL); /* alignment */
	assert_rc(dmm_cma_alloc(e->mem, 1, 16, 0, 0, &q, &why), -DMM_EINVAL);        /* no such area */
	assert_rc(dmm_cma_alloc(e->mem, -1, 16, 0, 0, &q, &why), -DMM_EINVAL);
	assert_rc(dmm_cma_alloc(e->mem, 0, c0.nr_pages + 1, 0, 0, &q, &why), -DMM_EINVAL);
	assert_rc(dmm_cma_alloc(e->mem, 0, 16, 0, 0x80, &q, &why), -DMM_EINVAL);     /* flags */
	assert_rc(dmm_cma_alloc(e->mem, 0, 16, 0, 0, NULL, &why), -DMM_EINVAL);
	assert_rc(dmm_cma_alloc(NULL, 0, 16, 0, 0, &q, &why), -DMM_EINVAL);
	assert_rc(dmm_cma_release(e->mem, 0, p + 1, 255), -DMM_ENOENT);   /* never allocated */
	assert_rc(dmm_cma_release(e->mem, 0, p, 128), -DMM_EINVAL);       /* wrong size */
	assert_rc(dmm_cma_release(e->mem, 0, p, 0), -DMM_EINVAL);         /* zero pages */
	assert_rc(dmm_cma_release(e->mem, 1, p, 256), -DMM_EINVAL);       /* wrong area */
	assert_rc(dmm_cma_release(e->mem, 0, 1, 256), -DMM_ENOENT);       /* outside the area */
	assert_rc(dmm_page_free(e->mem, p, 0), -DMM_ENOENT);              /* not a buddy block */
	assert_rc(dmm_free_range(e->mem, p, 256), -DMM_ENOENT);           /* not a plain range */
	/* a full area: no space, said so */
	assert_rc(dmm_cma_alloc(e->mem, 0, c0.nr_pages, 0, 0, &q, &why), -DMM_ENOMEM);
	assert_int_equal(why, DMM_CMA_FAIL_NOSPACE);

	assert_ok(dmm_cma_get_info(e->mem, 0, &c1));
	assert_int_equal(c1.used_pages, c0.used_pages);
	assert_int_equal(dmm_mem_free_pages(e->mem), free0);
	assert_all_checks(e->mem);
	assert_ok(dmm_cma_release(e->mem, 0, p, 256));
	assert_rc(dmm_cma_release(e->mem, 0, p, 256), -DMM_ENOENT); /* double release */
	assert_all_checks(e->mem);
	tu_env_destroy(e);
}

/* ---- two threads: contiguous allocations against movable churn ------------ */

struct churn {
	struct tu_env *e;
	struct dmm_handles *ht;
	volatile int stop;
	uint64_t ops;
};

static void *churn_main(void *arg)
{
	struct churn *c = arg;
	static uint32_t mine[4096];
	uint32_t n = 0;
	uint64_t s = 12345;

	while (!__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE)) {
		if (n < 4096 && (n == 0 || tu_rand(&s) % 2)) {
			uint8_t *v;
			if (dmm_handle_alloc(c->ht, 0, &mine[n]))
				continue;
			v = dmm_handle_lock(c->ht, mine[n]);
			v[0] = pat(mine[n], 0);
			v[4095] = pat(mine[n], 4095);
			dmm_handle_unlock(c->ht, mine[n]);
			n++;
		} else {
			uint32_t k = (uint32_t)(tu_rand(&s) % n);
			const uint8_t *v = dmm_handle_lock(c->ht, mine[k]);
			if (!v || v[0] != pat(mine[k], 0) || v[4095] != pat(mine[k], 4095))
				abort();
			dmm_handle_unlock(c->ht, mine[k]);
			if (dmm_handle_free(c->ht, mine[k]))
				abort();
			mine[k] = mine[--n];
		}
		c->ops++;
	}
	while (n)
		if (dmm_handle_free(c->ht, mine[--n]))
			abort();
	return NULL;
}

static void test_concurrent(void **state)
{
	struct dmm_machine m;
	struct churn c;
	pthread_t t;
	struct dmm_cma_info ci;
	static uint32_t hs[16384];
	uint32_t n;
	unsigned ok = 0;
	(void)state;

	cma_machine(&m, DMM_CMA_POLICY_FIRST);
	memset(&c, 0, sizeof(c));
	c.e = tu_env_create(&m, 2);
	assert_ok(dmm_handles_create(c.e->mem, 16384 + 4096, &c.ht));
	n = fill_area(c.e, c.ht, hs, 16384);
	assert_int_equal(pthread_create(&t, NULL, churn_main, &c), 0);
	for (int i = 0; i < 40; i++) {
		dmm_pfn_t p;
		enum dmm_cma_fail why;
		size_t pages = (size_t)256 << (i % 4);
		int rc = dmm_cma_alloc(c.e->mem, 0, pages, 0, 0, &p, &why);
		if (rc == 0) {
			tu_fill(c.e->mem, p, pages, (uint64_t)i, 0);
			tu_verify(c.e->mem, p, pages, (uint64_t)i, 0);
			assert_ok(dmm_cma_release(c.e->mem, 0, p, pages));
			ok++;
		} else {
			/* only transient reasons are acceptable with churn */
			assert_true(why == DMM_CMA_FAIL_BUSY || why == DMM_CMA_FAIL_NOSPACE);
		}
		assert_ok(dmm_cma_check(c.e->mem));
	}
	__atomic_store_n(&c.stop, 1, __ATOMIC_RELEASE);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_true(ok >= 30);
	assert_true(c.ops > 0);
	assert_all_checks(c.e->mem);
	assert_ok(dmm_handles_check(c.ht));
	verify_handles(c.ht, hs, n);
	assert_ok(dmm_cma_get_info(c.e->mem, 0, &ci));
	assert_int_equal(ci.used_pages, 0);
	dmm_handles_destroy(c.ht);
	dmm_page_drain_pcp(c.e->mem);
	assert_all_checks(c.e->mem);
	assert_int_equal(tu_zone_free_all(c.e->mem), c.e->free0);
	tu_env_destroy(c.e);
}

/* With the "never" policy an owned movable page cannot use the area, so the
 * area's free pages do not lift the zone above its watermark for it: once
 * ordinary pages are down to min, the movable request is refused like any
 * other instead of taking the last ordinary pages. */
static void test_never_policy_watermark(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct dmm_handles *ht;
	static dmm_pfn_t held[32768];
	size_t n = 0;
	uint32_t hd;
	uint64_t free_before;
	dmm_pfn_t p;
	int rc;
	(void)state;

	cma_machine(&m, DMM_CMA_POLICY_NEVER);
	m.min_free_kbytes = 4096;
	e = tu_env_create(&m, 1);
	assert_ok(dmm_handles_create(e->mem, 64, &ht));
	while ((rc = dmm_page_alloc(e->mem, 0, NULL, DMM_GFP_MOVABLE | DMM_GFP_NOCACHE, &p)) == 0) {
		assert_true(n < sizeof(held) / sizeof(held[0]));
		held[n++] = p;
	}
	assert_rc(rc, -DMM_EWMARK);
	dmm_page_drain_pcp(e->mem);
	free_before = tu_zone_free_all(e->mem);
	assert_rc(dmm_handle_alloc(ht, 0, &hd), -DMM_EWMARK);
	assert_int_equal(tu_zone_free_all(e->mem), free_before);
	dmm_handles_destroy(ht);
	for (size_t i = 0; i < n; i++)
		assert_ok(dmm_page_free(e->mem, held[i], 0));
	dmm_page_drain_pcp(e->mem);
	assert_all_checks(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), e->free0);
	tu_env_destroy(e);
}

/* Two isolated pageblocks of different types (an area's and an ordinary
 * one) side by side in one order-10 block: a page freed into them while
 * isolated (the per-CPU drain of dmm_migrate_range) must not merge them
 * into one block, or giving the pageblocks back files both under one type
 * (area pages in the range index, or ordinary pages on the area's list). */
static void test_isolated_pageblocks_keep_apart(void **state)
{
	(void)state;
	for (unsigned area_high = 0; area_high < 2; area_high++) {
		struct dmm_machine m;
		struct tu_env *e;
		dmm_phys_t ordinary = area_high ? 4 * MiB : 6 * MiB;
		struct dmm_constraint c = { ordinary, ordinary + 2 * MiB, 0, 0, 0, 0 };
		dmm_pfn_t p;

		tu_machine(&m, "iso-merge");
		tu_add_ram(&m, 0, 64 * MiB);
		m.nr_cma = 1;
		snprintf(m.cma[0].name, sizeof(m.cma[0].name), "a");
		m.cma[0].size = 2 * MiB;
		m.cma[0].base = area_high ? 6 * MiB : 4 * MiB;
		e = tu_env_create(&m, 1);
		/* a page of the ordinary pageblock waits in a per-CPU cache */
		assert_ok(dmm_page_alloc(e->mem, 0, &c, 0, &p));
		assert_ok(dmm_page_free(e->mem, p, 0));
		assert_all_checks(e->mem);
		assert_ok(dmm_migrate_range(e->mem, 4 * MiB, 8 * MiB, NULL));
		assert_all_checks(e->mem);
		/* the ordinary pageblock serves the range allocator again, the area's does not */
		assert_ok(dmm_alloc_range(e->mem, &c, 512, 0, &p));
		assert_int_equal(dmm_pfn_to_phys(p), ordinary);
		assert_ok(dmm_free_range(e->mem, p, 512));
		c.lo = m.cma[0].base;
		c.hi = c.lo + 2 * MiB;
		assert_rc(dmm_alloc_range(e->mem, &c, 1, DMM_GFP_NOWMARK, &p), -DMM_ENOMEM);
		assert_all_checks(e->mem);
		assert_int_equal(tu_zone_free_all(e->mem), e->free0);
		tu_env_destroy(e);
	}
}

/* ---- a page freed by its owner while a claim reaches it -------------------- */

/* An owner whose page goes away while a migration claims it: the isolate
 * callback frees the page first (as the owner's own thread would, at that
 * very moment) and then refuses it, as the contract says: not its page. */
struct vanishing {
	struct dmm_movable_owner owner;
	dmm_pfn_t pfn;
	int freed;
};

static int v_isolate(void *ctx, struct dmm_mem *mem, dmm_pfn_t pfn)
{
	struct vanishing *v = ctx;
	if (pfn != v->pfn || v->freed)
		return -DMM_ENOENT;
	v->freed = 1;
	if (dmm_page_free(mem, pfn, 0))
		abort();
	return -DMM_ENOENT;
}

static int v_migrate(void *ctx, struct dmm_mem *mem, dmm_pfn_t old_pfn, dmm_pfn_t new_pfn)
{
	(void)ctx;
	(void)mem;
	(void)old_pfn;
	(void)new_pfn;
	return -DMM_EPERM;
}

static void v_putback(void *ctx, struct dmm_mem *mem, dmm_pfn_t pfn)
{
	(void)ctx;
	(void)mem;
	(void)pfn;
}

static const struct dmm_movable_ops v_ops = { v_isolate, v_migrate, v_putback };

static void test_page_freed_during_claim(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct vanishing v;
	struct dmm_cma_info ci;
	struct dmm_migrate_report rep;
	dmm_pfn_t p;
	enum dmm_cma_fail why;
	(void)state;

	cma_machine(&m, DMM_CMA_POLICY_FIRST);
	e = tu_env_create(&m, 1);
	assert_ok(dmm_cma_get_info(e->mem, 0, &ci));

	/* the whole area: the one lent page is gone once its owner let go of it */
	memset(&v, 0, sizeof(v));
	v.owner.ops = &v_ops;
	v.owner.ctx = &v;
	assert_ok(dmm_page_alloc_movable(e->mem, &v.owner, 0, &v.pfn));
	assert_int_equal(dmm_pfn_to_page(e->mem, v.pfn)->cma, 1);
	assert_ok(dmm_cma_alloc(e->mem, 0, ci.nr_pages, 0, 0, &p, &why));
	assert_int_equal(v.freed, 1);
	assert_ok(dmm_cma_get_info(e->mem, 0, &ci));
	assert_int_equal(ci.fail[DMM_CMA_FAIL_REFUSED], 0);
	assert_ok(dmm_cma_release(e->mem, 0, p, ci.nr_pages));
	assert_all_checks(e->mem);

	/* the same for a range migration: nothing was refused */
	memset(&v, 0, sizeof(v));
	v.owner.ops = &v_ops;
	v.owner.ctx = &v;
	assert_ok(dmm_page_alloc_movable(e->mem, &v.owner, 0, &v.pfn));
	assert_int_equal(dmm_pfn_to_page(e->mem, v.pfn)->cma, 1);
	memset(&rep, 0, sizeof(rep));
	assert_ok(dmm_migrate_range(e->mem, dmm_pfn_to_phys(ci.base_pfn),
				    dmm_pfn_to_phys(ci.base_pfn + ci.nr_pages), &rep));
	assert_int_equal(v.freed, 1);
	assert_int_equal(rep.failed[DMM_MIGRATE_REFUSED], 0);
	assert_int_equal(rep.moved, 0);
	dmm_page_drain_pcp(e->mem);
	assert_all_checks(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), e->free0);
	tu_env_destroy(e);
}

/* Rejected releases are counted like rejected frees (the zone's bad_free)
 * and change nothing. */
static void test_bad_release_counted(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct dmm_cma_info c0, c1;
	dmm_pfn_t p, pinned;
	enum dmm_cma_fail why;
	uint64_t bad0;
	(void)state;

	cma_machine(&m, DMM_CMA_POLICY_HALF);
	e = tu_env_create(&m, 1);
	assert_ok(dmm_cma_alloc(e->mem, 0, 256, 0, 0, &p, &why));
	assert_ok(dmm_cma_get_info(e->mem, 0, &c0));
	bad0 = tu_zone_bad_frees(e->mem);
	assert_rc(dmm_cma_release(e->mem, 0, p + 1, 255), -DMM_ENOENT); /* never allocated */
	assert_int_equal(tu_zone_bad_frees(e->mem), bad0 + 1);
	assert_rc(dmm_cma_release(e->mem, 0, p, 128), -DMM_EINVAL); /* wrong size */
	assert_int_equal(tu_zone_bad_frees(e->mem), bad0 + 2);
	assert_ok(dmm_page_pin(e->mem, p, 0, &pinned, NULL));
	assert_rc(dmm_cma_release(e->mem, 0, p, 256), -DMM_EBUSY); /* pinned */
	assert_int_equal(tu_zone_bad_frees(e->mem), bad0 + 3);
	assert_ok(dmm_page_unpin(e->mem, p, 0));
	assert_ok(dmm_cma_get_info(e->mem, 0, &c1));
	assert_int_equal(c1.used_pages, c0.used_pages);
	assert_int_equal(c1.releases, c0.releases);
	assert_ok(dmm_cma_release(e->mem, 0, p, 256));
	assert_int_equal(tu_zone_bad_frees(e->mem), bad0 + 3);
	assert_rc(dmm_cma_release(e->mem, 0, p, 256), -DMM_ENOENT); /* double release */
	assert_int_equal(tu_zone_bad_frees(e->mem), bad0 + 4);
	assert_all_checks(e->mem);
	tu_env_destroy(e);
}

/* A set_memattr hook that records each page's attribute and, while
 * attr_fail is set, makes an uncached change of the first half of the
 * range and then fails (a page-table split that ran out of memory). */
#define ATTR_PAGES (128 * MiB / DMM_PAGE_SIZE)
static uint8_t attr_of[ATTR_PAGES];
static int attr_fail;
static unsigned attr_calls;

static int attr_hook(void *ctx, dmm_phys_t pa, size_t len, enum dmm_memattr attr)
{
	dmm_pfn_t p = dmm_phys_to_pfn(pa);
	uint64_t n = len / DMM_PAGE_SIZE;
	(void)ctx;

	attr_calls++;
	assert_true(p + n <= ATTR_PAGES);
	if (attr == DMM_MEMATTR_UC && attr_fail) {
		for (uint64_t i = 0; i < n / 2; i++)
			attr_of[p + i] = (uint8_t)attr;
		return -DMM_ENOMEM;
	}
	for (uint64_t i = 0; i < n; i++)
		attr_of[p + i] = (uint8_t)attr;
	return 0;
}

static uint64_t pages_not_wb(void)
{
	uint64_t n = 0;
	for (uint64_t i = 0; i < ATTR_PAGES; i++)
		n += attr_of[i] != DMM_MEMATTR_WB;
	return n;
}

/* The machine of cma_machine (half policy) on the hosted platform with
 * @hook as its set_memattr hook. */
static struct dmm_mem *hooked_mem(int (*hook)(void *, dmm_phys_t, size_t, enum dmm_memattr), struct dmm_hosted **h)
{
	struct dmm_machine m;
	struct dmm_platform p;
	struct dmm_mem *mem = NULL;

	cma_machine(&m, DMM_CMA_POLICY_HALF);
	assert_ok(dmm_hosted_create(&m, 1, DMM_LOG_ERR, h));
	p = *dmm_hosted_platform(*h);
	p.set_memattr = hook;
	assert_ok(dmm_mem_create(&m, &p, &mem));
	return mem;
}

/* A failed attribute change undoes what part of it was applied, gives the
 * range back with clean descriptors, and is counted as an attr failure. */
static void test_memattr_failure_restores(void **state)
{
	struct dmm_hosted *h;
	struct dmm_mem *mem = NULL;
	struct dmm_cma_info c0, c1;
	struct dmm_page *head;
	dmm_pfn_t pfn = 0;
	enum dmm_cma_fail why = DMM_CMA_FAIL_NOSPACE;
	const uint64_t n = 1024;
	uint64_t free0;
	(void)state;

	memset(attr_of, DMM_MEMATTR_WB, sizeof(attr_of));
	attr_fail = 1;
	attr_calls = 0;
	mem = hooked_mem(attr_hook, &h);
	dmm_page_drain_pcp(mem);
	free0 = tu_zone_free_all(mem);
	assert_ok(dmm_cma_get_info(mem, 0, &c0));

	assert_rc(dmm_cma_alloc(mem, 0, n, 0, DMM_CMA_UNCACHED, &pfn, &why), -DMM_ENOMEM);
	assert_int_equal(why, DMM_CMA_FAIL_ATTR);
	assert_true(attr_calls >= 1);
	assert_int_equal(pages_not_wb(), 0); /* the half that changed is back */
	assert_ok(dmm_cma_get_info(mem, 0, &c1));
	assert_int_equal(c1.allocs_tried, c0.allocs_tried + 1);
	assert_int_equal(c1.allocs_ok, c0.allocs_ok);
	assert_int_equal(c1.fail[DMM_CMA_FAIL_ATTR], c0.fail[DMM_CMA_FAIL_ATTR] + 1);
	assert_int_equal(c1.used_pages, 0);
	assert_int_equal(c1.pages_remapped, c0.pages_remapped);
	/* the candidate (the area's first pages) is free again, descriptors clean */
	for (uint64_t i = 0; i < n; i++) {
		head = dmm_pfn_to_page(mem, c1.base_pfn + i);
		assert_null(head->owner);
		assert_int_equal(head->private, 0);
		assert_int_equal(head->refcount, 0);
		assert_int_equal(head->pins, 0);
		assert_int_equal(head->flags, 0);
	}
	assert_all_checks(mem);
	dmm_page_drain_pcp(mem);
	assert_int_equal(tu_zone_free_all(mem), free0);

	/* the same range can be had (and made uncached) once the hook works */
	attr_fail = 0;
	assert_ok(dmm_cma_alloc(mem, 0, n, 0, DMM_CMA_UNCACHED, &pfn, &why));
	assert_int_equal(pages_not_wb(), n);
	assert_ok(dmm_cma_release(mem, 0, pfn, n));
	assert_int_equal(pages_not_wb(), 0);
	assert_all_checks(mem);
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(h);
}

/* A set_memattr hook that notes, at each change back to write-back, how
 * many pages the zones have free: a release must make its range
 * write-back while the range is still its own, before any of it is free
 * (its next owner could otherwise make it uncached and then lose that to
 * the late write-back). */
static struct dmm_mem *wb_mem;
static uint64_t wb_free_seen;
static unsigned wb_calls;

static int wb_hook(void *ctx, dmm_phys_t pa, size_t len, enum dmm_memattr attr)
{
	(void)ctx;
	(void)pa;
	(void)len;
	if (attr == DMM_MEMATTR_WB && wb_mem) {
		wb_calls++;
		wb_free_seen = tu_zone_free_all(wb_mem);
	}
	return 0;
}

static void test_release_write_back_first(void **state)
{
	struct dmm_hosted *h;
	struct dmm_mem *mem = NULL;
	enum dmm_cma_fail why = DMM_CMA_FAIL_NOSPACE;
	dmm_pfn_t pfn = 0;
	const uint64_t n = 256;
	uint64_t free_held;
	(void)state;

	mem = hooked_mem(wb_hook, &h);
	dmm_page_drain_pcp(mem);
	assert_ok(dmm_cma_alloc(mem, 0, n, 0, DMM_CMA_UNCACHED, &pfn, &why));
	assert_all_checks(mem);
	free_held = tu_zone_free_all(mem);
	wb_mem = mem;
	wb_calls = 0;
	assert_ok(dmm_cma_release(mem, 0, pfn, n));
	wb_mem = NULL;
	assert_int_equal(wb_calls, 1);
	assert_int_equal(wb_free_seen, free_held); /* none of the range free yet */
	assert_int_equal(tu_zone_free_all(mem), free_held + n);
	assert_all_checks(mem);
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(h);
}

/* A release of an uncached range runs the attribute hook with no lock
 * held and the range claimed (its head FREEING, its bits still set): what
 * runs meanwhile (here: from the hook itself) must find the range
 * neither free nor pinnable nor releasable, and every check must hold. */
static struct dmm_mem *win_mem;
static dmm_pfn_t win_pfn;
static uint64_t win_n;
static unsigned win_seen;

static int win_hook(void *ctx, dmm_phys_t pa, size_t len, enum dmm_memattr attr)
{
	struct dmm_mem *mem = win_mem;
	struct dmm_cma_info ci;
	dmm_pfn_t got = 0, pinned = 0;
	enum dmm_migrate_reason r;
	(void)ctx;

	if (attr != DMM_MEMATTR_WB || !mem || dmm_phys_to_pfn(pa) != win_pfn || len != win_n * DMM_PAGE_SIZE)
		return 0;
	win_mem = NULL; /* once */
	win_seen++;
	assert_all_checks(mem);
	assert_rc(dmm_page_pin(mem, win_pfn, 0, &pinned, &r), -DMM_EAGAIN);
	assert_rc(dmm_page_pin(mem, win_pfn, DMM_PIN_LONGTERM, &pinned, &r), -DMM_EAGAIN);
	assert_rc(dmm_page_pin(mem, win_pfn + 1, 0, &pinned, &r), -DMM_ENOENT);
	assert_rc(dmm_page_unpin(mem, win_pfn, 0), -DMM_ENOENT);
	assert_rc(dmm_cma_release(mem, 0, win_pfn, win_n), -DMM_ENOENT);
	assert_ok(dmm_cma_get_info(mem, 0, &ci));
	assert_true(ci.used_pages >= win_n);
	/* the area's allocator passes the range by */
	for (int i = 0; i < 4; i++) {
		assert_ok(dmm_cma_alloc(mem, 0, win_n, 0, DMM_CMA_UNCACHED, &got, NULL));
		assert_true(got + win_n <= win_pfn || got >= win_pfn + win_n);
		assert_all_checks(mem);
		assert_ok(dmm_cma_release(mem, 0, got, win_n));
	}
	assert_rc(dmm_migrate_range(mem, dmm_pfn_to_phys(win_pfn), dmm_pfn_to_phys(win_pfn + win_n), NULL),
		  -DMM_EBUSY);
	assert_all_checks(mem);
	return 0;
}

static void test_release_window(void **state)
{
	struct dmm_hosted *h;
	struct dmm_mem *mem = NULL;
	struct dmm_cma_info a, b;
	dmm_pfn_t pfn = 0;
	const uint64_t n = 256;
	(void)state;

	mem = hooked_mem(win_hook, &h);
	dmm_page_drain_pcp(mem);
	assert_ok(dmm_cma_alloc(mem, 0, n, 0, DMM_CMA_UNCACHED, &pfn, NULL));
	assert_ok(dmm_cma_get_info(mem, 0, &a));
	win_mem = mem;
	win_pfn = pfn;
	win_n = n;
	win_seen = 0;
	assert_ok(dmm_cma_release(mem, 0, pfn, n));
	assert_int_equal(win_seen, 1);
	assert_ok(dmm_cma_get_info(mem, 0, &b));
	assert_int_equal(b.used_pages, a.used_pages - n);
	assert_int_equal(b.releases, a.releases + 5);
	assert_int_equal(b.pages_remapped, a.pages_remapped + 9 * n); /* 4 allocs, 5 releases */
	assert_all_checks(mem);
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_placement_and_validation),
		cmocka_unit_test(test_policies),
		cmocka_unit_test(test_alloc_migrates_contents),
		cmocka_unit_test(test_pins),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_concurrent),
		cmocka_unit_test(test_release_write_back_first),
		cmocka_unit_test(test_release_window),
		cmocka_unit_test(test_never_policy_watermark),
		cmocka_unit_test(test_isolated_pageblocks_keep_apart),
		cmocka_unit_test(test_page_freed_during_claim),
		cmocka_unit_test(test_bad_release_counted),
		cmocka_unit_test(test_memattr_failure_restores),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

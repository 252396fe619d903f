/* SPDX-License-Identifier: MIT */
/*
 * Small-object allocator: size classes, the three alignment policies,
 * low-memory caches, large requests, contents at both ends of every object,
 * bad input, statistics, and two threads; dmm_slab_check() after each step.
 */
#include <pthread.h>

#include "tu.h"

#define assert_slab_checks(mem)                 \
	do {                                    \
		assert_checks(mem);             \
		assert_ok(dmm_slab_check(mem)); \
	} while (0)

static struct tu_env *slab_env(enum dmm_kmalloc_policy pol)
{
	struct dmm_machine m;
	tu_machine(&m, "test-slab");
	tu_add_ram(&m, 0, 256 * MiB);
	m.dma_limit = 16 * MiB;
	m.dma32_limit = 128 * MiB;
	m.cache_line = 64;
	m.dma_min_align = 128;
	m.kmalloc_policy = pol;
	return tu_env_create(&m, 2);
}

static void stamp(void *p, size_t n, unsigned salt)
{
	uint8_t *b = p;
	b[n - 1] = (uint8_t)(salt ^ 0xa5);
	b[0] = (uint8_t)salt; /* last: a 1-byte object holds this one */
	if (n >= 16)
		b[n / 2] = (uint8_t)(salt + 7);
}

static void check_stamp(const void *p, size_t n, unsigned salt)
{
	const uint8_t *b = p;
	assert_int_equal(b[0], (uint8_t)salt);
	if (n > 1)
		assert_int_equal(b[n - 1], (uint8_t)(salt ^ 0xa5));
	if (n >= 16)
		assert_int_equal(b[n / 2], (uint8_t)(salt + 7));
}

static void test_policies_and_classes(void **state)
{
	static const enum dmm_kmalloc_policy pols[] = { DMM_KMALLOC_ALIGNED, DMM_KMALLOC_PACKED_ON_REQUEST,
							DMM_KMALLOC_PACKED };
	(void)state;
	for (size_t pi = 0; pi < 3; pi++) {
		struct tu_env *e = slab_env(pols[pi]);
		static void *obj[600];
		static size_t sz[600];
		uint64_t s = 7;

		for (unsigned i = 0; i < 600; i++) {
			unsigned flags = (i % 3 == 0) ? DMM_GFP_PACKED : 0;
			size_t want;
			sz[i] = (size_t)(1 + tu_rand(&s) % (i % 10 == 0 ? 20000 : 300));
			want = dmm_kmalloc_size_of(e->mem, sz[i], flags);
			assert_ok(dmm_kmalloc(e->mem, sz[i], flags | (i % 5 == 0 ? DMM_GFP_ZERO : 0), &obj[i]));
			assert_int_equal(dmm_ksize(e->mem, obj[i]), want);
			assert_true(want >= sz[i]);
			if (i % 5 == 0)
				for (size_t b = 0; b < sz[i]; b++)
					assert_int_equal(((uint8_t *)obj[i])[b], 0);
			/* alignment as the policy says */
			if (pols[pi] == DMM_KMALLOC_ALIGNED ||
			    (pols[pi] == DMM_KMALLOC_PACKED_ON_REQUEST && !(flags & DMM_GFP_PACKED))) {
				assert_int_equal((uintptr_t)obj[i] % 128, 0);
				assert_int_equal(want % 128, 0);
				assert_false(dmm_kmalloc_needs_bounce(e->mem, obj[i], want));
			} else {
				assert_int_equal((uintptr_t)obj[i] % 8, 0);
			}
			stamp(obj[i], sz[i], i);
			if (i % 50 == 0)
				assert_slab_checks(e->mem);
		}
		for (unsigned i = 0; i < 600; i++)
			check_stamp(obj[i], sz[i], i);
		/* a packed small object shares its DMA unit: it must bounce */
		if (pols[pi] == DMM_KMALLOC_PACKED) {
			void *a, *b;
			assert_ok(dmm_kmalloc(e->mem, 24, 0, &a));
			assert_ok(dmm_kmalloc(e->mem, 24, 0, &b));
			assert_true(dmm_kmalloc_needs_bounce(e->mem, a, 24) || dmm_kmalloc_needs_bounce(e->mem, b, 24));
			assert_ok(dmm_kfree(e->mem, a));
			assert_ok(dmm_kfree(e->mem, b));
		}
		/* the cost of alignment is counted */
		{
			struct dmm_slab_class_info ci;
			uint64_t align_waste = 0;
			for (unsigned c = 0; c < DMM_KMALLOC_NR_CLASSES; c++) {
				assert_ok(dmm_slab_class_info(e->mem, 0, c, &ci));
				align_waste += ci.align_waste_bytes;
				assert_true(ci.wasted_bytes >= ci.align_waste_bytes);
			}
			if (pols[pi] == DMM_KMALLOC_PACKED)
				assert_int_equal(align_waste, 0);
			else
				assert_true(align_waste > 0);
		}
		for (unsigned i = 0; i < 600; i++) {
			assert_ok(dmm_kfree(e->mem, obj[i]));
			if (i % 50 == 0)
				assert_slab_checks(e->mem);
		}
		assert_slab_checks(e->mem);
		tu_env_destroy(e);
	}
}

static void test_low_memory_and_large(void **state)
{
	struct tu_env *e = slab_env(DMM_KMALLOC_ALIGNED);
	const struct dmm_platform *p = dmm_mem_platform(e->mem);
	void *o[64];
	dmm_phys_t pa;
	(void)state;

	for (int i = 0; i < 64; i++) {
		unsigned f = i % 2 ? DMM_GFP_DMA : DMM_GFP_DMA32;
		assert_ok(dmm_kmalloc(e->mem, 200, f, &o[i]));
		assert_ok(p->virt_to_phys(p->ctx, o[i], &pa));
		assert_true(pa + 200 <= (i % 2 ? 16 * MiB : 128 * MiB));
	}
	for (int i = 0; i < 64; i++)
		assert_ok(dmm_kfree(e->mem, o[i]));
	/* above the caches: whole pages */
	assert_ok(dmm_kmalloc(e->mem, 3 * 4096 + 1, DMM_GFP_ZERO, &o[0]));
	assert_int_equal(dmm_ksize(e->mem, o[0]), 4 * 4096);
	assert_int_equal((uintptr_t)o[0] % 4096, 0);
	stamp(o[0], 3 * 4096 + 1, 9);
	check_stamp(o[0], 3 * 4096 + 1, 9);
	assert_ok(dmm_kfree(e->mem, o[0]));
	assert_int_equal(dmm_ksize(e->mem, o[0]), 0);
	assert_slab_checks(e->mem);
	tu_env_destroy(e);
}

static void test_bad_input(void **state)
{
	struct tu_env *e = slab_env(DMM_KMALLOC_PACKED);
	void *o, *x;
	uint64_t free0;
	dmm_pfn_t pfn;
	int local;
	(void)state;

	assert_ok(dmm_kmalloc(e->mem, 64, 0, &o));
	free0 = tu_zone_free_all(e->mem);
	assert_rc(dmm_kmalloc(e->mem, 0, 0, &x), -DMM_EINVAL);
	assert_rc(dmm_kmalloc(e->mem, 8, 1u << 30, &x), -DMM_EINVAL);
	assert_rc(dmm_kmalloc(e->mem, 8, DMM_GFP_MOVABLE, &x), -DMM_EINVAL);
	assert_rc(dmm_kmalloc(e->mem, 8, DMM_GFP_DMA | DMM_GFP_DMA32, &x), -DMM_EINVAL);
	assert_rc(dmm_kmalloc(e->mem, 8, 0, NULL), -DMM_EINVAL);
	assert_rc(dmm_kmalloc(e->mem, (size_t)8 << 30, 0, &x), -DMM_EINVAL); /* beyond the largest block */
	assert_rc(dmm_kfree(e->mem, NULL), -DMM_EINVAL);
	assert_rc(dmm_kfree(e->mem, &local), -DMM_EINVAL);          /* not managed RAM */
	assert_rc(dmm_kfree(e->mem, (uint8_t *)o + 8), -DMM_EINVAL); /* inside an object */
	assert_ok(dmm_page_alloc(e->mem, 0, NULL, 0, &pfn));
	assert_rc(dmm_kfree(e->mem, dmm_pfn_to_virt(e->mem, pfn)), -DMM_ENOENT); /* a page, not kmalloc */
	assert_int_equal(dmm_ksize(e->mem, dmm_pfn_to_virt(e->mem, pfn)), 0);
	assert_ok(dmm_page_free(e->mem, pfn, 0));
	assert_int_equal(tu_zone_free_all(e->mem), free0);
	assert_ok(dmm_kfree(e->mem, o));
	assert_rc(dmm_kfree(e->mem, o), -DMM_ENOENT); /* twice in a row */
	assert_rc(dmm_slab_class_info(e->mem, 3, 0, NULL), -DMM_EINVAL);
	assert_slab_checks(e->mem);
	tu_env_destroy(e);
}

struct worker {
	struct tu_env *e;
	unsigned seed;
	int failed;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	enum { N = 2000 };
	void **obj = calloc(N, sizeof(void *));
	size_t *sz = calloc(N, sizeof(size_t));
	uint64_t s = w->seed;

	for (int step = 0; step < 40000 && obj && sz; step++) {
		unsigned i = (unsigned)(tu_rand(&s) % N);
		if (obj[i]) {
			const uint8_t *b = obj[i];
			if (b[0] != (uint8_t)i || b[sz[i] - 1] != (uint8_t)(i ^ w->seed))
				w->failed = 2;
			if (dmm_kfree(w->e->mem, obj[i]))
				w->failed = 3;
			obj[i] = NULL;
		} else {
			sz[i] = (size_t)(2 + tu_rand(&s) % 2047); /* two stamps, at both ends */
			if (dmm_kmalloc(w->e->mem, sz[i], 0, &obj[i]))
				w->failed = 4;
			else {
				((uint8_t *)obj[i])[0] = (uint8_t)i;
				((uint8_t *)obj[i])[sz[i] - 1] = (uint8_t)(i ^ w->seed);
			}
		}
	}
	for (int i = 0; i < N && obj; i++)
		if (obj[i] && dmm_kfree(w->e->mem, obj[i]))
			w->failed = 1;
	free(obj);
	free(sz);
	return NULL;
}

static void test_two_threads(void **state)
{
	struct tu_env *e = slab_env(DMM_KMALLOC_PACKED);
	struct worker w[2] = { { e, 11, 0 }, { e, 23, 0 } };
	pthread_t t[2];
	(void)state;

	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	assert_int_equal(w[0].failed, 0);
	assert_int_equal(w[1].failed, 0);
	assert_slab_checks(e->mem);
	tu_env_destroy(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_policies_and_classes),
		cmocka_unit_test(test_low_memory_and_large),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_two_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: MIT */
/*
 * Small-object allocator: size classes, the three alignment policies,
 * low-memory caches, large requests, contents at both ends of every object,
 * bad input, statistics, magazines and depots (exact counts against a
 * model, bursts through the depot without a slab, its bound, bursts on
 * threads with shrinks alongside), two threads, more threads than CPU
 * slots (with checks, and shrinks, running alongside) and short-lived
 * threads, an empty slab whose page is pinned (kept, given back once
 * unpinned), dmm_slab_shrink() (also in the moment a kmalloc has just cut
 * a slab for itself); dmm_slab_check() after each step.
 */
#include <pthread.h>
#include <sched.h>

#include "tu.h"
#include "mm/mm_internal.h"

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

/* The word of the small-object allocator's metadata (its state, magazines
 * and depots) holding @p, or NULL: where a magazine keeps a free object
 * (white-box: the check's own corruption tests). */
static void **meta_word_of(struct dmm_mem *mem, const void *p)
{
	void **w = (void **)(void *)mem->slab;
	size_t n = (size_t)(dmm__slab_meta_size(mem->plat.nr_cpus) / sizeof(void *));

	for (size_t i = 0; i < n; i++)
		if (w[i] == p)
			return &w[i];
	return (void **)0;
}

/* dmm_slab_check looks at the objects the magazines hold: one held twice,
 * or one also free on its slab, fails it, though every count agrees; the
 * check leaves what it looked at as it was (free marks included: a second
 * free is still caught), and passes again once the magazine is mended. */
static void test_check_held_objects(void **state)
{
	struct tu_env *e = slab_env(DMM_KMALLOC_PACKED);
	void *p, *q, *x = NULL, **ep, **eq;
	uint8_t *base;
	(void)state;

	assert_ok(dmm_kmalloc(e->mem, 64, 0, &p));
	assert_ok(dmm_kmalloc(e->mem, 64, 0, &q));
	assert_ok(dmm_kfree(e->mem, p));
	assert_ok(dmm_kfree(e->mem, q));
	assert_non_null(ep = meta_word_of(e->mem, p));
	assert_non_null(eq = meta_word_of(e->mem, q));
	assert_ok(dmm_slab_check(e->mem));

	/* p twice (q's entry says p): the counts still agree */
	*eq = p;
	assert_rc(dmm_slab_check(e->mem), -DMM_EFAULT);
	assert_ptr_equal(*ep, p); /* the entries as they were */
	assert_ptr_equal(*eq, p);
	*eq = q;
	assert_ok(dmm_slab_check(e->mem));
	assert_rc(dmm_kfree(e->mem, p), -DMM_ENOENT); /* its free mark is back */
	assert_rc(dmm_kfree(e->mem, q), -DMM_ENOENT);

	/* an object of the same slab that is free on it, in q's place */
	base = (uint8_t *)((uintptr_t)p & ~(uintptr_t)(DMM_PAGE_SIZE - 1));
	for (unsigned i = 0; i < DMM_PAGE_SIZE / 64 && !x; i++)
		if (base + i * 64 != p && base + i * 64 != q && !meta_word_of(e->mem, base + i * 64))
			x = base + i * 64;
	assert_non_null(x);
	*eq = x;
	assert_rc(dmm_slab_check(e->mem), -DMM_EFAULT);
	*eq = q;
	assert_ok(dmm_slab_check(e->mem));

	/* something that is no object of the cache */
	*eq = (uint8_t *)p + 8;
	assert_rc(dmm_slab_check(e->mem), -DMM_EFAULT);
	*eq = q;
	assert_slab_checks(e->mem);
	tu_env_destroy(e);
}

/* A magazine entry whose low bits are set (no object's address: objects
 * are 8-byte aligned) fails the check, which leaves the entry and the
 * memory it points near as they were: it writes nothing through it (a live
 * object's first word, or address 0 for an entry of 2). */
static void test_check_held_misaligned(void **state)
{
	struct tu_env *e = slab_env(DMM_KMALLOC_PACKED);
	void *p, *q, *live, **eq;
	static const uintptr_t low[] = { 1, 2, 3, 6 };
	(void)state;

	assert_ok(dmm_kmalloc(e->mem, 64, 0, &live));
	assert_ok(dmm_kmalloc(e->mem, 64, 0, &p));
	assert_ok(dmm_kmalloc(e->mem, 64, 0, &q));
	*(uint64_t *)live = 0x1122334455667788ull;
	assert_ok(dmm_kfree(e->mem, p));
	assert_ok(dmm_kfree(e->mem, q));
	assert_non_null(eq = meta_word_of(e->mem, q));
	assert_ok(dmm_slab_check(e->mem));

	for (unsigned i = 0; i < sizeof(low) / sizeof(low[0]); i++) {
		void *bad = (void *)((uintptr_t)live | low[i]);
		*eq = bad;
		assert_rc(dmm_slab_check(e->mem), -DMM_EFAULT);
		assert_ptr_equal(*eq, bad);
		assert_int_equal(*(uint64_t *)live, 0x1122334455667788ull);
		/* a free object's address with low bits: its mark stays too */
		bad = (void *)((uintptr_t)p | low[i]);
		*eq = bad;
		assert_rc(dmm_slab_check(e->mem), -DMM_EFAULT);
		assert_ptr_equal(*eq, bad);
		*eq = q;
		assert_rc(dmm_kfree(e->mem, p), -DMM_ENOENT); /* p's free mark is still there */
	}
	/* an entry of 2: the note bit alone, nothing to write through */
	*eq = (void *)(uintptr_t)2;
	assert_rc(dmm_slab_check(e->mem), -DMM_EFAULT);
	assert_ptr_equal(*eq, (void *)(uintptr_t)2);
	*eq = q;
	assert_slab_checks(e->mem);
	assert_ok(dmm_kfree(e->mem, live));
	tu_env_destroy(e);
}

/* A magazine or depot entry naming a live object (of the cache, off every
 * free list, held once: every count agrees) fails the check, which writes
 * nothing to the object: its first word is the user's, whatever it holds
 * (0 as a fresh allocation leaves it, data, a free-list link's look).
 * A check that passes leaves each held object's word as it was (the free
 * mark: a second free is still refused). */
static void test_check_held_live(void **state)
{
	struct tu_env *e = slab_env(DMM_KMALLOC_PACKED);
	static const uint64_t words[] = { 0, 0x1122334455667788ull, 0x1000, 0x8 };
	struct dmm_slab_class_info ci;
	void *p, *q, *live, **ep, **eq, *d[8 * 30 + 61];
	uint32_t nd;
	(void)state;

	assert_ok(dmm_kmalloc(e->mem, 64, 0, &live));
	assert_ok(dmm_kmalloc(e->mem, 64, 0, &p));
	assert_ok(dmm_kmalloc(e->mem, 64, 0, &q));
	assert_ok(dmm_kfree(e->mem, p)); /* into the magazine's top slot */
	assert_ok(dmm_kfree(e->mem, q)); /* onto its stack */
	assert_non_null(ep = meta_word_of(e->mem, p));
	assert_non_null(eq = meta_word_of(e->mem, q));
	for (unsigned i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		*(uint64_t *)live = words[i];
		*eq = live; /* q leaks (as a live object), live is live and held */
		assert_rc(dmm_slab_check(e->mem), -DMM_EFAULT);
		assert_int_equal(*(uint64_t *)live, words[i]);
		assert_ptr_equal(*eq, live);
		*eq = q;
		assert_slab_checks(e->mem);
		assert_int_equal(*(uint64_t *)live, words[i]);
		*ep = live; /* the same in the top slot */
		assert_rc(dmm_slab_check(e->mem), -DMM_EFAULT);
		assert_int_equal(*(uint64_t *)live, words[i]);
		assert_ptr_equal(*ep, live);
		*ep = p;
		assert_slab_checks(e->mem);
	}
	assert_rc(dmm_kfree(e->mem, p), -DMM_ENOENT);
	assert_rc(dmm_kfree(e->mem, q), -DMM_ENOENT);

	/* the same through the depot: a full magazine's load goes there */
	assert_ok(dmm_slab_class_info(e->mem, 0, 3, &ci));
	nd = ci.mag_capacity + 1;
	for (uint32_t i = 0; i < nd; i++)
		assert_ok(dmm_kmalloc(e->mem, 64, 0, &d[i]));
	for (uint32_t i = 0; i < nd; i++)
		assert_ok(dmm_kfree(e->mem, d[i]));
	assert_ok(dmm_slab_class_info(e->mem, 0, 3, &ci));
	assert_int_equal(ci.depot_loads, 1);
	{
		/* d[0] is in the top slot; d[1] went with the first load (the
		 * oldest objects of the magazine's stack): no magazine entry
		 * names it, the depot's does */
		void **ed = meta_word_of(e->mem, d[1]), *held = d[1];
		assert_non_null(ed);
		*(uint64_t *)live = 0x1234567800ull;
		*ed = live;
		assert_rc(dmm_slab_check(e->mem), -DMM_EFAULT);
		assert_int_equal(*(uint64_t *)live, 0x1234567800ull);
		*ed = held;
		assert_slab_checks(e->mem);
		assert_rc(dmm_kfree(e->mem, held), -DMM_ENOENT);
	}
	assert_ok(dmm_kfree(e->mem, live));
	dmm_slab_shrink(e->mem);
	assert_slab_checks(e->mem);
	tu_env_destroy(e);
}

static dmm_pfn_t pfn_of(const struct dmm_platform *pl, const void *p);

/* The head descriptors of @mem's slabs whose cache is @owner (at most
 * @max into @heads); their number. */
static unsigned slab_heads_of(struct tu_env *e, const void *owner, struct dmm_page **heads, unsigned max)
{
	unsigned n = 0;

	for (dmm_pfn_t pfn = e->base; pfn < e->base + e->npfn; pfn++) {
		struct dmm_page *pg = dmm_pfn_to_page(e->mem, pfn);
		if (pg && dmm__state(pg) == DMM_PAGE_ALLOC && (pg->flags & DMM_PGF_SLAB) && dmm__owner(pg) == owner) {
			assert_true(n < max);
			heads[n++] = pg;
		}
	}
	return n;
}

/*
 * dmm_slab_check looks at the slab lists' structure, not only at the
 * counts: the spare must be empty (a kfree emptying it would unlink it
 * from the partial list, where it is not, and cut that list), and every
 * listed slab's back link must name the slab before it (list_del follows
 * it). Here each is corrupted with every count still in agreement (an
 * object of the spare taken off it, a live one of another slab put back
 * on that slab's free list; a back link cleared or pointing at the slab
 * itself): the check fails, and passes again once mended.
 */
static void test_check_slab_lists(void **state)
{
	struct tu_env *e = slab_env(DMM_KMALLOC_PACKED);
	const struct dmm_platform *pl = dmm_hosted_platform(e->hosted);
	struct dmm_page *heads[64], *spare = NULL, *d, *linked = NULL, *saved;
	struct dmm_slab_class_info ci;
	void *v[17], *owner, **x, *dlink;
	dmm_pfn_t pfn;
	unsigned n;
	(void)state;

	assert_ok(dmm_slab_class_info(e->mem, 0, 12, &ci));
	assert_int_equal(ci.size, 8192);
	for (unsigned i = 0; i < 17; i++)
		assert_ok(dmm_kmalloc(e->mem, 8192, 0, &v[i]));
	for (unsigned i = 0; i < 16; i++) {
		assert_ok(dmm_kfree(e->mem, v[i]));
		assert_slab_checks(e->mem);
	}
	pfn = pfn_of(pl, v[16]);
	d = dmm_pfn_to_page(e->mem, pfn & ~(((dmm_pfn_t)1 << ci.slab_order) - 1));
	owner = dmm__owner(d);
	n = slab_heads_of(e, owner, heads, 64);
	for (unsigned i = 0; i < n; i++) {
		if (!heads[i]->refcount)
			spare = heads[i];
		if (heads[i]->prev)
			linked = heads[i];
	}
	assert_non_null(spare);
	assert_non_null(linked);
	assert_true(d != spare && d->refcount > 0 && d->refcount < ci.objs_per_slab);

	/* the spare with an object off it, v[16] (from a slab of its own,
	 * partial) back on its slab */
	x = (void **)(uintptr_t)dmm__private(spare);
	dmm__set_private(spare, (uintptr_t)*x);
	spare->refcount++;
	dlink = *(void **)v[16];
	*(void **)v[16] = (void *)(uintptr_t)dmm__private(d);
	dmm__set_private(d, (uintptr_t)v[16]);
	d->refcount--;
	assert_rc(dmm_slab_check(e->mem), -DMM_EFAULT);
	d->refcount++;
	dmm__set_private(d, (uintptr_t)*(void **)v[16]);
	*(void **)v[16] = dlink;
	spare->refcount--;
	*x = (void *)(uintptr_t)dmm__private(spare);
	dmm__set_private(spare, (uintptr_t)x);
	assert_slab_checks(e->mem);

	/* a back link lost, or naming the slab itself */
	saved = linked->prev;
	linked->prev = NULL;
	assert_rc(dmm_slab_check(e->mem), -DMM_EFAULT);
	linked->prev = linked;
	assert_rc(dmm_slab_check(e->mem), -DMM_EFAULT);
	linked->prev = saved;
	assert_slab_checks(e->mem);

	assert_ok(dmm_kfree(e->mem, v[16]));
	dmm_slab_shrink(e->mem);
	assert_slab_checks(e->mem);
	tu_env_destroy(e);
}

/*
 * An object in this CPU's magazine is free however it got there: freed
 * (the free marks it), or taken off its slab by a refill (a new slab's
 * first objects, never handed out, or objects a shrink put back on their
 * slab). A kfree of any of them is refused (-DMM_ENOENT) and changes
 * nothing: the magazine does not hold it twice, no object is handed out
 * twice, the frees counted are the real ones.
 */
static void test_double_free_refilled(void **state)
{
	struct tu_env *e = slab_env(DMM_KMALLOC_PACKED);
	struct dmm_slab_class_info ci;
	static void *v[200];
	uint8_t *base;
	void *p, *q, *x;
	(void)state;

	assert_ok(dmm_slab_class_info(e->mem, 0, 3, &ci));
	assert_int_equal(ci.size, 64);
	assert_int_equal(ci.slab_order, 0);

	/* a new slab: a refill takes its first mag_batch objects, the
	 * allocation the last of them; the others sit in the magazine */
	assert_ok(dmm_kmalloc(e->mem, 64, 0, &q));
	base = (uint8_t *)((uintptr_t)q & ~(uintptr_t)(DMM_PAGE_SIZE - 1));
	assert_ptr_equal(q, base + (ci.mag_batch - 1) * 64);
	for (uint32_t i = 0; i + 1 < ci.mag_batch; i++) {
		assert_non_null(meta_word_of(e->mem, base + i * 64));
		assert_rc(dmm_kfree(e->mem, base + i * 64), -DMM_ENOENT);
		assert_slab_checks(e->mem);
	}
	assert_ok(dmm_slab_class_info(e->mem, 0, 3, &ci));
	assert_int_equal(ci.frees, 0);
	assert_int_equal(ci.cached, ci.mag_batch - 1);
	assert_int_equal(ci.double_frees, ci.mag_batch - 1);

	/* freed, put back on its slab by a shrink (q keeps the slab), then
	 * taken by a refill: in the magazine again, without a free */
	assert_ok(dmm_kmalloc(e->mem, 64, 0, &p));
	assert_ok(dmm_kfree(e->mem, p));
	assert_int_equal(dmm_slab_shrink(e->mem), 0);
	assert_slab_checks(e->mem);
	assert_ok(dmm_slab_class_info(e->mem, 0, 3, &ci));
	assert_int_equal(ci.cached, 0);
	assert_int_equal(ci.objects, 1);
	/* (put back last, p heads its slab's free list: the refill's first) */
	assert_ok(dmm_kmalloc(e->mem, 64, 0, &x));
	assert_ptr_not_equal(x, p);
	assert_rc(dmm_kfree(e->mem, p), -DMM_ENOENT);
	assert_slab_checks(e->mem);
	assert_ok(dmm_kfree(e->mem, x));
	assert_slab_checks(e->mem);

	/* no object handed out twice */
	for (unsigned i = 0; i < 200; i++) {
		assert_ok(dmm_kmalloc(e->mem, 64, 0, &v[i]));
		*(unsigned *)v[i] = i;
		if (i % 16 == 0)
			assert_slab_checks(e->mem);
	}
	for (unsigned i = 0; i < 200; i++) {
		assert_int_equal(*(unsigned *)v[i], i);
		assert_ptr_not_equal(v[i], q);
	}
	for (unsigned i = 0; i < 200; i++) {
		assert_ok(dmm_kfree(e->mem, v[i]));
		if (i % 16 == 0)
			assert_slab_checks(e->mem);
	}
	assert_ok(dmm_kfree(e->mem, q));
	assert_ok(dmm_slab_class_info(e->mem, 0, 3, &ci));
	assert_int_equal(ci.objects, 0);
	assert_int_equal(ci.frees, 203);
	assert_int_equal(ci.allocs, 203);
	assert_int_equal(ci.double_frees, ci.mag_batch);
	dmm_slab_shrink(e->mem);
	assert_slab_checks(e->mem);
	tu_env_destroy(e);
}

/* @order: 0..@n-1 in an order shuffled with @s (Fisher-Yates). */
static void shuffled_order(uint32_t *order, uint32_t n, uint64_t *s)
{
	for (uint32_t i = 0; i < n; i++)
		order[i] = i;
	for (uint32_t i = n; i > 1; i--) {
		uint32_t x = (uint32_t)tu_rand_below(s, i), y = order[i - 1];
		order[i - 1] = order[x];
		order[x] = y;
	}
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
	/* inside it: no object's start (as kfree says), in its first page too */
	for (size_t off = 8; off < 4 * 4096; off += off < 4096 ? 8 : 4096)
		assert_int_equal(dmm_ksize(e->mem, (uint8_t *)o[0] + off), 0);
	stamp(o[0], 3 * 4096 + 1, 9);
	/* and kfree refuses it there as not an object's start: counted,
	 * nothing freed */
	{
		static const size_t offs[] = { 8, 2048, 4096, 4096 + 8, 3 * 4096, 4 * 4096 - 8 };
		struct dmm_mem_info mi0, mi1;

		dmm_mem_get_info(e->mem, &mi0);
		for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++)
			assert_rc(dmm_kfree(e->mem, (uint8_t *)o[0] + offs[i]), -DMM_EINVAL);
		dmm_mem_get_info(e->mem, &mi1);
		assert_int_equal(mi1.fail_invalid - mi0.fail_invalid, sizeof(offs) / sizeof(offs[0]));
		assert_int_equal(dmm_ksize(e->mem, o[0]), 4 * 4096);
		assert_slab_checks(e->mem);
	}
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
	/* just beyond it, and sizes that round up to pages past SIZE_MAX:
	 * refused and counted, nothing allocated */
	{
		static const size_t huge[] = { ((size_t)DMM_PAGE_SIZE << DMM_MAX_ORDER) + 1, SIZE_MAX,
					       SIZE_MAX - DMM_PAGE_SIZE + 2, SIZE_MAX - DMM_PAGE_SIZE + 1,
					       ((size_t)1 << 63) + 1 };
		struct dmm_mem_info mi0, mi1;
		dmm_mem_get_info(e->mem, &mi0);
		for (unsigned i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
			x = NULL;
			assert_rc(dmm_kmalloc(e->mem, huge[i], 0, &x), -DMM_EINVAL);
			assert_rc(dmm_kmalloc(e->mem, huge[i], DMM_GFP_DMA | DMM_GFP_ZERO, &x), -DMM_EINVAL);
			assert_null(x);
			assert_int_equal(dmm_kmalloc_size_of(e->mem, huge[i], 0), 0);
			assert_int_equal(tu_zone_free_all(e->mem), free0);
			assert_slab_checks(e->mem);
		}
		dmm_mem_get_info(e->mem, &mi1);
		assert_int_equal(mi1.fail_invalid - mi0.fail_invalid, 2 * sizeof(huge) / sizeof(huge[0]));
		/* the size a request would get: 0 where kmalloc refuses it */
		assert_int_equal(dmm_kmalloc_size_of(e->mem, (size_t)DMM_PAGE_SIZE << DMM_MAX_ORDER, 0),
				 (size_t)DMM_PAGE_SIZE << DMM_MAX_ORDER);
		assert_int_equal(dmm_kmalloc_size_of(e->mem, (size_t)8 << 30, 0), 0);
		assert_int_equal(dmm_kmalloc_size_of(e->mem, ((size_t)1 << 62) + 1, 0), 0);
		assert_int_equal(dmm_kmalloc_size_of(e->mem, 8, DMM_GFP_DMA | DMM_GFP_DMA32), 0);
		assert_int_equal(dmm_kmalloc_size_of(e->mem, 8, DMM_GFP_MOVABLE), 0);
		assert_int_equal(dmm_kmalloc_size_of(e->mem, 8, 1u << 30), 0);
		assert_int_equal(dmm_kmalloc_size_of(e->mem, 8, DMM_GFP_ZERO | DMM_GFP_ATOMIC | DMM_GFP_DMA), 8);
		assert_int_equal(dmm_kmalloc_size_of(e->mem, 20000, DMM_GFP_DMA32), 32768);
	}
	assert_rc(dmm_kfree(e->mem, NULL), -DMM_EINVAL);
	assert_rc(dmm_kfree(e->mem, &local), -DMM_EINVAL);          /* not managed RAM */
	assert_rc(dmm_kfree(e->mem, (uint8_t *)o + 8), -DMM_EINVAL); /* inside an object */
	assert_ok(dmm_page_alloc(e->mem, 0, NULL, 0, &pfn));
	assert_rc(dmm_kfree(e->mem, dmm_pfn_to_virt(e->mem, pfn)), -DMM_ENOENT); /* a page, not kmalloc */
	assert_int_equal(dmm_ksize(e->mem, dmm_pfn_to_virt(e->mem, pfn)), 0);
	assert_ok(dmm_page_free(e->mem, pfn, 0));
	assert_int_equal(tu_zone_free_all(e->mem), free0);
	/* the page allocator does not free the small-object allocator's pages */
	{
		const struct dmm_platform *pl = dmm_hosted_platform(e->hosted);
		void *big;
		dmm_phys_t pa;
		assert_ok(dmm_kmalloc(e->mem, 16 * 1024, 0, &big)); /* a large object: 4 pages */
		assert_ok(pl->virt_to_phys(pl->ctx, big, &pa));
		assert_rc(dmm_page_free(e->mem, dmm_phys_to_pfn(pa), 2), -DMM_EBUSY);
		assert_ok(pl->virt_to_phys(pl->ctx, o, &pa)); /* 64 bytes: a one-page slab */
		assert_rc(dmm_page_free(e->mem, dmm_phys_to_pfn(pa), 0), -DMM_EBUSY);
		assert_slab_checks(e->mem);
		assert_ok(dmm_kfree(e->mem, big));
	}
	assert_ok(dmm_kfree(e->mem, o));
	assert_rc(dmm_kfree(e->mem, o), -DMM_ENOENT); /* twice in a row */
	/* twice, with other frees in between: still in this CPU's magazine */
	{
		void *v[12];
		for (unsigned i = 0; i < 12; i++)
			assert_ok(dmm_kmalloc(e->mem, 64, 0, &v[i]));
		for (unsigned i = 0; i < 12; i++)
			assert_ok(dmm_kfree(e->mem, v[i]));
		assert_rc(dmm_kfree(e->mem, v[0]), -DMM_ENOENT);
		assert_rc(dmm_kfree(e->mem, v[5]), -DMM_ENOENT);
		/* an object handed out again and freed once is fine, mark or not */
		assert_ok(dmm_kmalloc(e->mem, 64, 0, &x));
		assert_ok(dmm_kfree(e->mem, x));
		assert_slab_checks(e->mem);
		/* the refused frees are counted, in their class */
		{
			struct dmm_slab_class_info ci;
			assert_ok(dmm_slab_class_info(e->mem, 0, 3, &ci));
			assert_int_equal(ci.double_frees, 3);
			assert_ok(dmm_slab_class_info(e->mem, 0, 2, &ci));
			assert_int_equal(ci.double_frees, 0);
		}
	}
	assert_rc(dmm_slab_class_info(e->mem, 3, 0, NULL), -DMM_EINVAL);
	assert_slab_checks(e->mem);
	tu_env_destroy(e);
}

/*
 * A model of one class's free objects above its slabs on this CPU (the
 * only one that runs): the magazine (its top slot, then a stack of cap - 1)
 * and the depot, as stacks of object pointers (NULL: an object the slabs
 * gave, not known to the test), and how many objects are off the slabs
 * (live, in the magazine or the depot). A free goes to the top slot when
 * it is empty, else onto the stack; an allocation takes the top slot when
 * it is set, else the stack's last.
 */
struct mag_model {
	uint32_t cap, batch, dmax; /* magazine capacity (top slot and stack), a load, the depot's bound */
	void *top, *mag[61], *dep[8 * 30];
	uint32_t n, d;
	uint64_t off, live;
};

static void model_init(struct mag_model *mm, const struct dmm_slab_class_info *in)
{
	memset(mm, 0, sizeof(*mm));
	mm->cap = in->mag_capacity;
	mm->batch = in->mag_batch;
	mm->dmax = in->depot_max_loads * in->mag_batch;
	mm->live = in->objects;
	mm->off = in->objects + in->cached + in->depot_objects;
	/* an empty magazine and depot: their contents are unknown otherwise,
	 * and so is whether the magazine's objects include its top slot (the
	 * counts do not say, and the model would put the next free there) */
	assert_int_equal(in->cached, 0);
	assert_int_equal(in->depot_objects, 0);
}

/* An allocation of class @cls: the top slot if set; else an empty stack
 * takes the depot's last load, or a refill from the slabs (up to a load: as
 * many as the slabs have free, or from a new slab if they have none), and
 * the object is the stack's last. Returns the object the model expects
 * (NULL: one from the slabs). */
static void *model_alloc(struct mag_model *mm, struct dmm_mem *mem, unsigned cls)
{
	if (mm->top) {
		void *p = mm->top;
		mm->top = NULL;
		mm->live++;
		return p;
	}
	if (!mm->n) {
		if (mm->d) {
			mm->d -= mm->batch;
			memcpy(mm->mag, &mm->dep[mm->d], mm->batch * sizeof(void *));
			mm->n = mm->batch;
		} else {
			struct dmm_slab_class_info in;
			uint64_t avail;
			assert_ok(dmm_slab_class_info(mem, 0, cls, &in));
			avail = in.slabs * in.objs_per_slab - mm->off; /* free on the slabs */
			if (!avail)
				avail = in.objs_per_slab;
			mm->n = (uint32_t)(avail < mm->batch ? avail : mm->batch);
			memset(mm->mag, 0, mm->n * sizeof(void *));
			mm->off += mm->n;
		}
	}
	mm->live++;
	return mm->mag[--mm->n];
}

/* A free: into the top slot if it is empty; else onto the stack, and a
 * full magazine (top set, stack full) first hands the stack's oldest load
 * to the depot, or to the slabs when the depot holds as many as it may. */
static void model_free(struct mag_model *mm, void *p)
{
	mm->live--;
	if (!mm->top) {
		mm->top = p;
		return;
	}
	if (mm->n >= mm->cap - 1) {
		if (mm->d + mm->batch <= mm->dmax) {
			memcpy(&mm->dep[mm->d], mm->mag, mm->batch * sizeof(void *));
			mm->d += mm->batch;
		} else {
			mm->off -= mm->batch;
		}
		memmove(mm->mag, &mm->mag[mm->batch], (mm->n - mm->batch) * sizeof(void *));
		mm->n -= mm->batch;
	}
	mm->mag[mm->n++] = p;
}

/* The class's counts are the model's, and the slab check holds. */
static void model_agrees(struct dmm_mem *mem, unsigned cls, const struct mag_model *mm)
{
	struct dmm_slab_class_info in;

	assert_ok(dmm_slab_class_info(mem, 0, cls, &in));
	assert_int_equal(in.cached, mm->n + (mm->top != NULL));
	assert_int_equal(in.depot_objects, mm->d);
	assert_int_equal(in.depot_loads, mm->d / mm->batch);
	assert_int_equal(in.objects, mm->live);
	assert_int_equal(in.objects + in.cached + in.depot_objects, mm->off);
	assert_ok(dmm_slab_check(mem));
}

/*
 * Each class's magazine: a byte budget (at most 16 KiB of free objects per
 * CPU and class, at least 4 objects, no more than the magazine's 61 slots),
 * refills and drains of half of it (a load); its depot: 32 KiB of objects,
 * at most 8 loads. Freeing object after object fills this CPU's magazine
 * to its capacity; the free that finds it full first hands the oldest half
 * of its stack to the depot, or to the slabs once the depot is at its
 * bound (the first object freed stays in the top slot throughout).
 * Allocating them again empties the magazine, then takes the depot's loads
 * back, last first, then refills from the slabs. The counts (magazine,
 * depot, objects off the slabs) follow a model exactly, the objects come
 * back in the order it predicts, and the checks hold after every step.
 * An object freed again while in the magazine or in the depot is refused.
 */
static void test_magazine_capacity(void **state)
{
	struct tu_env *e = slab_env(DMM_KMALLOC_PACKED);
	uint32_t prev_cap = 0;
	static struct mag_model mm;
	(void)state;

	for (unsigned c = 0; c < DMM_KMALLOC_NR_CLASSES; c++) {
		struct dmm_slab_class_info in;
		static void *v[61 + 8 * 30 + 30 + 3];
		uint32_t cap, batch, nobj, loads;
		void *in_depot = NULL;

		assert_ok(dmm_slab_class_info(e->mem, 0, c, &in));
		cap = in.mag_capacity;
		batch = in.mag_batch;
		loads = in.depot_max_loads;
		assert_true(cap >= 4 && cap <= 61);
		assert_true((uint64_t)cap * in.size <= 16384 || cap == 4);
		assert_true((uint64_t)(cap + 1) * in.size > 16384 || cap == 61);
		assert_int_equal(batch, cap / 2);
		assert_true(loads >= 1 && loads <= 8);
		assert_true((uint64_t)loads * batch * in.size <= 32768);
		assert_true(loads == 8 || (uint64_t)(loads + 1) * batch * in.size > 32768);
		if (c)
			assert_true(cap <= prev_cap); /* larger objects, no more of them */
		prev_cap = cap;
		model_init(&mm, &in);
		/* past the magazine, the depot and a load more: some reach the slabs */
		nobj = cap + loads * batch + batch + 3;
		for (uint32_t i = 0; i < nobj; i++) {
			void *want = model_alloc(&mm, e->mem, c);
			assert_ok(dmm_kmalloc(e->mem, in.size, 0, &v[i]));
			if (want)
				assert_ptr_equal(v[i], want);
			stamp(v[i], in.size, i);
		}
		model_agrees(e->mem, c, &mm);
		for (uint32_t i = 0; i < nobj; i++) {
			check_stamp(v[i], in.size, i);
			assert_ok(dmm_kfree(e->mem, v[i]));
			model_free(&mm, v[i]);
			model_agrees(e->mem, c, &mm);
		}
		assert_int_equal(mm.d, loads * batch); /* at the bound */
		/* the last one freed is still in the magazine, an early one in the
		 * depot: a second free of either is seen and changes nothing */
		for (uint32_t i = 0; i < mm.d && !in_depot; i++)
			in_depot = mm.dep[i];
		assert_non_null(in_depot);
		{
			struct dmm_slab_class_info b, a;
			assert_ok(dmm_slab_class_info(e->mem, 0, c, &b));
			assert_rc(dmm_kfree(e->mem, v[nobj - 1]), -DMM_ENOENT);
			assert_rc(dmm_kfree(e->mem, in_depot), -DMM_ENOENT);
			assert_ok(dmm_slab_class_info(e->mem, 0, c, &a));
			assert_int_equal(a.double_frees, b.double_frees + 2); /* both counted */
		}
		model_agrees(e->mem, c, &mm);
		/* and back: the magazine, the depot's loads (last first), the slabs */
		for (uint32_t i = 0; i < nobj; i++) {
			void *want = model_alloc(&mm, e->mem, c);
			assert_ok(dmm_kmalloc(e->mem, in.size, 0, &v[i]));
			if (want)
				assert_ptr_equal(v[i], want);
			stamp(v[i], in.size, i + 7);
			model_agrees(e->mem, c, &mm);
		}
		assert_int_equal(mm.d, 0);
		for (uint32_t i = 0; i < nobj; i++) {
			check_stamp(v[i], in.size, i + 7);
			assert_ok(dmm_kfree(e->mem, v[i]));
			model_free(&mm, v[i]);
		}
		model_agrees(e->mem, c, &mm);
		assert_slab_checks(e->mem);
	}
	assert_slab_checks(e->mem);
	tu_env_destroy(e);
}

static uint64_t slab_pages(struct dmm_mem *mem);
static dmm_pfn_t pfn_of(const struct dmm_platform *pl, const void *p);

/* Objects off the slabs of a class (live, in magazines or in the depot). */
static uint64_t off_slabs(const struct dmm_slab_class_info *in)
{
	return in->objects + in->cached + in->depot_objects;
}

/* Every byte of an object of @n bytes, from (@salt, its index @j). */
static void fill_obj(void *p, size_t n, unsigned salt)
{
	for (size_t j = 0; j < n; j++)
		((uint8_t *)p)[j] = (uint8_t)(salt * 31u + j * 7u + (j >> 8));
}

static void verify_obj(const void *p, size_t n, unsigned salt)
{
	for (size_t j = 0; j < n; j++)
		if (((const uint8_t *)p)[j] != (uint8_t)(salt * 31u + j * 7u + (j >> 8)))
			fail_msg("object %p byte %zu changed", p, j);
}

/* The depots of every class of the sets other than @set hold nothing. */
static void other_depots_empty(struct dmm_mem *mem, unsigned set)
{
	for (unsigned s = 0; s < DMM_KMALLOC_NR_SETS; s++)
		for (unsigned c = 0; s != set && c < DMM_KMALLOC_NR_CLASSES; c++) {
			struct dmm_slab_class_info in;
			assert_ok(dmm_slab_class_info(mem, s, c, &in));
			assert_int_equal(in.depot_objects, 0);
		}
}

/*
 * A burst of frees larger than a magazine goes to the depot and a burst of
 * allocations takes it back, without a slab: the objects off the slabs and
 * the slab count stay what they were at every step, and the allocations
 * hand out the very objects freed (not the free objects that partial
 * slabs, each holding one live object, offer all along). A larger burst
 * fills the depot to its bound and no further (the rest goes to the
 * slabs). A shrink empties the depot and gives every page back. Each set
 * has a depot of its own (the others stay empty); every object's bytes are
 * checked before it is freed, and every check holds after every step. 64
 * bytes in the set for any memory and below dma_limit, 512 bytes below
 * dma32_limit.
 */
static void test_depot_burst(void **state)
{
	static const unsigned set[3] = { 0, 1, 2 }, cls[3] = { 3, 8, 3 };
	static const unsigned flags[3] = { 0, DMM_GFP_DMA32, DMM_GFP_DMA };
	struct tu_env *e = slab_env(DMM_KMALLOC_PACKED);
	const struct dmm_platform *pl = dmm_hosted_platform(e->hosted);
	static void *v[61 + 10 * 30], *back[61 + 10 * 30], *keep[64];
	static uint32_t order[61 + 10 * 30];
	uint64_t rs = 5;
	(void)state;

	for (unsigned t = 0; t < 3; t++) {
		struct dmm_slab_class_info in;
		uint64_t off0, slabs0, depot0;
		uint32_t b, l, dmax, nkeep = 0;
		size_t sz;

		assert_ok(dmm_slab_class_info(e->mem, set[t], cls[t], &in));
		sz = in.size;
		dmax = in.depot_max_loads * in.mag_batch;
		b = in.mag_capacity + 2 * in.mag_batch + 5; /* more than a magazine, less than it and the depot */
		l = in.mag_capacity + dmax + 2 * in.mag_batch; /* more than both */
		assert_true(b < in.mag_capacity + dmax && l <= sizeof(v) / sizeof(v[0]));

		/* partial slabs with free objects, more than any burst here: one
		 * object of each of the slabs of l objects stays, the rest back to
		 * them (the shrink empties the magazine and the depot) */
		for (uint32_t i = 0; i < l; i++)
			assert_ok(dmm_kmalloc(e->mem, sz, flags[t], &v[i]));
		for (uint32_t i = 0; i < l; i++) {
			uint32_t k = 0;
			while (k < nkeep && pfn_of(pl, keep[k]) != pfn_of(pl, v[i]))
				k++;
			if (k == nkeep && nkeep < sizeof(keep) / sizeof(keep[0])) {
				keep[nkeep++] = v[i];
				continue;
			}
			assert_ok(dmm_kfree(e->mem, v[i]));
		}
		assert_int_equal(dmm_slab_shrink(e->mem), 0);
		assert_ok(dmm_slab_class_info(e->mem, set[t], cls[t], &in));
		assert_int_equal(in.objects, nkeep);
		assert_int_equal(in.slabs, nkeep);
		assert_true(nkeep * (in.objs_per_slab - 1) >= b + 2 * in.mag_batch);

		for (uint32_t i = 0; i < b; i++) {
			assert_ok(dmm_kmalloc(e->mem, sz, flags[t], &v[i]));
			fill_obj(v[i], sz, i);
		}
		shuffled_order(order, b, &rs); /* freed in a shuffled order */
		assert_ok(dmm_slab_class_info(e->mem, set[t], cls[t], &in));
		off0 = off_slabs(&in);
		slabs0 = in.slabs;
		depot0 = in.depot_objects;
		assert_int_equal(in.objects, nkeep + b);

		/* the burst of frees: to the magazine and the depot */
		for (uint32_t i = 0; i < b; i++) {
			verify_obj(v[order[i]], sz, order[i]);
			assert_ok(dmm_kfree(e->mem, v[order[i]]));
			assert_ok(dmm_slab_class_info(e->mem, set[t], cls[t], &in));
			assert_int_equal(off_slabs(&in), off0);
			assert_int_equal(in.slabs, slabs0);
			assert_int_equal(in.objects, nkeep + b - i - 1);
			assert_slab_checks(e->mem);
		}
		assert_true(in.depot_loads >= 2);
		assert_int_equal(in.depot_objects, (uint64_t)in.depot_loads * in.mag_batch);
		other_depots_empty(e->mem, set[t]);

		/* and back: the same objects, from the magazine and the depot */
		for (uint32_t i = 0; i < b; i++) {
			uint32_t k = 0;
			assert_ok(dmm_kmalloc(e->mem, sz, flags[t], &back[i]));
			while (k < b && v[k] != back[i])
				k++;
			assert_true(k < b); /* one of those freed */
			for (uint32_t j = 0; j < i; j++)
				assert_ptr_not_equal(back[j], back[i]);
			fill_obj(back[i], sz, 1000 + i);
			assert_ok(dmm_slab_class_info(e->mem, set[t], cls[t], &in));
			assert_int_equal(off_slabs(&in), off0);
			assert_int_equal(in.slabs, slabs0);
			assert_slab_checks(e->mem);
		}
		assert_int_equal(in.depot_objects, depot0);
		for (uint32_t i = 0; i < b; i++) {
			verify_obj(back[i], sz, 1000 + i);
			assert_ok(dmm_kfree(e->mem, back[i]));
		}

		/* a burst past the magazine and the depot: the depot fills to its
		 * bound, the rest goes back to the slabs */
		for (uint32_t i = 0; i < l; i++) {
			assert_ok(dmm_kmalloc(e->mem, sz, flags[t], &v[i]));
			fill_obj(v[i], sz, 2000 + i);
		}
		for (uint32_t i = 0; i < l; i++) {
			verify_obj(v[i], sz, 2000 + i);
			assert_ok(dmm_kfree(e->mem, v[i]));
			assert_ok(dmm_slab_class_info(e->mem, set[t], cls[t], &in));
			assert_true(in.depot_loads <= in.depot_max_loads);
			if (i % 16 == 0)
				assert_slab_checks(e->mem);
		}
		assert_int_equal(in.depot_loads, in.depot_max_loads);
		assert_int_equal(in.depot_objects, dmax);
		assert_int_equal(in.objects, nkeep);
		assert_int_equal(off_slabs(&in), nkeep + in.cached + dmax); /* the rest is on the slabs */
		assert_true(in.cached <= in.mag_capacity);
		other_depots_empty(e->mem, set[t]);
		assert_slab_checks(e->mem);

		/* a shrink empties the depot (and the magazine) into the slabs and
		 * gives the slabs back */
		for (uint32_t k = 0; k < nkeep; k++)
			assert_ok(dmm_kfree(e->mem, keep[k]));
		assert_int_equal(dmm_slab_shrink(e->mem), 0);
		assert_ok(dmm_slab_class_info(e->mem, set[t], cls[t], &in));
		assert_int_equal(in.depot_loads, 0);
		assert_int_equal(in.depot_objects, 0);
		assert_int_equal(in.cached, 0);
		assert_int_equal(in.slabs, 0);
		assert_int_equal(in.allocs, in.frees);
		assert_int_equal(slab_pages(e->mem), 0);
		dmm_page_drain_pcp(e->mem);
		assert_int_equal(tu_zone_free_all(e->mem), e->free0);
		assert_slab_checks(e->mem);
	}
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

/* ---- many threads on few CPU slots ------------------------------------------------ */

/* Byte @j of an object holding (thread @tid, slot @i, generation @gen). */
static inline uint8_t pat(unsigned tid, unsigned i, unsigned gen, size_t j)
{
	return (uint8_t)(tid * 71u + i * 13u + gen * 5u + j * 3u + (j >> 8));
}

struct stress {
	struct tu_env *e;
	unsigned tid;
	unsigned ops;       /* operations to do */
	int failed;         /* first failure: 1 alloc, 2 pattern, 3 free, 4 ksize, 5 zero */
	uint64_t allocs[DMM_KMALLOC_NR_SETS], frees[DMM_KMALLOC_NR_SETS];
	int *finished;      /* atomic: workers done */
	pthread_barrier_t *start; /* or NULL */
};

/* Random kmalloc/kfree of 8..512 bytes, up to 64 live objects, each filled
 * with a pattern of its own (thread, slot, generation) and verified in full
 * before it is freed: an object handed to two owners at once, or a free
 * object written by the allocator, shows as a wrong byte. */
static void *stress_main(void *arg)
{
	enum { LIVE = 64 };
	struct stress *w = arg;
	void *obj[LIVE] = { 0 };
	size_t sz[LIVE] = { 0 };
	unsigned gen[LIVE] = { 0 }, set[LIVE] = { 0 };
	uint64_t s = 0x9e3779b97f4a7c15ull * (w->tid + 1);

	if (w->start)
		pthread_barrier_wait(w->start);
	for (unsigned op = 0; op < w->ops && !w->failed; op++) {
		unsigned i = (unsigned)tu_rand_below(&s, LIVE);
		if (obj[i]) {
			const uint8_t *b = obj[i];
			for (size_t j = 0; j < sz[i]; j++)
				if (b[j] != pat(w->tid, i, gen[i], j)) {
					w->failed = 2;
					break;
				}
			if (dmm_kfree(w->e->mem, obj[i]))
				w->failed = 3;
			w->frees[set[i]]++;
			obj[i] = NULL;
		} else {
			unsigned r = (unsigned)tu_rand_below(&s, 16), flags = 0;
			uint8_t *b;
			/* mostly the fast path; now and then the slow one (zeroing,
			 * the DMA32 caches) */
			if (r == 0)
				flags = DMM_GFP_ZERO;
			else if (r == 1)
				flags = DMM_GFP_DMA32;
			sz[i] = (size_t)(8 + tu_rand_below(&s, 505));
			if (dmm_kmalloc(w->e->mem, sz[i], flags, &obj[i])) {
				w->failed = 1;
				obj[i] = NULL;
				break;
			}
			set[i] = (flags & DMM_GFP_DMA32) ? 1 : 0;
			w->allocs[set[i]]++;
			if (dmm_ksize(w->e->mem, obj[i]) != dmm_kmalloc_size_of(w->e->mem, sz[i], flags))
				w->failed = 4;
			b = obj[i];
			if (flags & DMM_GFP_ZERO)
				for (size_t j = 0; j < sz[i]; j++)
					if (b[j])
						w->failed = 5;
			gen[i]++;
			for (size_t j = 0; j < sz[i]; j++)
				b[j] = pat(w->tid, i, gen[i], j);
		}
	}
	for (unsigned i = 0; i < LIVE; i++)
		if (obj[i]) {
			const uint8_t *b = obj[i];
			for (size_t j = 0; j < sz[i]; j++)
				if (b[j] != pat(w->tid, i, gen[i], j) && !w->failed)
					w->failed = 2;
			if (dmm_kfree(w->e->mem, obj[i]) && !w->failed)
				w->failed = 3;
			w->frees[set[i]]++;
		}
	if (w->finished)
		__atomic_fetch_add(w->finished, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* Checks from another thread while the workers run: each stops every CPU's
 * sections and must find every cache whole; a snapshot of a class never
 * counts more live objects than the workers can hold. */
/* Pages the slabs of every cache hold. */
static uint64_t slab_pages(struct dmm_mem *mem)
{
	uint64_t n = 0;

	for (unsigned set = 0; set < DMM_KMALLOC_NR_SETS; set++)
		for (unsigned c = 0; c < DMM_KMALLOC_NR_CLASSES; c++) {
			struct dmm_slab_class_info ci;
			assert_ok(dmm_slab_class_info(mem, set, c, &ci));
			n += ci.slabs << ci.slab_order;
		}
	return n;
}

struct checker {
	struct tu_env *e;
	int *finished;
	int nworkers;
	unsigned min_checks;
	unsigned checks;
	int err;         /* first failed check's code */
	int bad_snapshot;
	pthread_barrier_t *start;
	int shrink;      /* dmm_slab_shrink() before every check */
};

static void *checker_main(void *arg)
{
	struct checker *c = arg;

	pthread_barrier_wait(c->start);
	do {
		int err;
		if (c->shrink && dmm_slab_shrink(c->e->mem) && !c->err)
			c->err = -DMM_EBUSY; /* nothing is pinned */
		err = dmm_slab_check(c->e->mem);
		if (err && !c->err)
			c->err = err;
		for (unsigned set = 0; set < 2; set++)
			for (unsigned cls = 0; cls < DMM_KMALLOC_NR_CLASSES; cls++) {
				struct dmm_slab_class_info ci;
				if (dmm_slab_class_info(c->e->mem, set, cls, &ci) ||
				    ci.objects > (uint64_t)c->nworkers * 64 || ci.frees > ci.allocs)
					c->bad_snapshot = 1;
			}
		c->checks++;
		sched_yield();
	} while (c->checks < c->min_checks || __atomic_load_n(c->finished, __ATOMIC_ACQUIRE) < c->nworkers);
	return NULL;
}

/* After everything is freed: no live object in any class, and the counters
 * agree with what the workers did. */
static void assert_all_freed(struct tu_env *e, const uint64_t *allocs)
{
	for (unsigned set = 0; set < DMM_KMALLOC_NR_SETS; set++) {
		uint64_t a = 0, f = 0;
		for (unsigned cls = 0; cls < DMM_KMALLOC_NR_CLASSES; cls++) {
			struct dmm_slab_class_info ci;
			assert_ok(dmm_slab_class_info(e->mem, set, cls, &ci));
			assert_int_equal(ci.objects, 0);
			assert_int_equal(ci.allocs, ci.frees);
			assert_int_equal(ci.fail_nomem, 0);
			a += ci.allocs;
			f += ci.frees;
		}
		if (allocs) {
			assert_int_equal(a, allocs[set]); /* no count lost to a race */
			assert_int_equal(f, allocs[set]);
		}
	}
}

/*
 * 6 threads on 2 CPU slots: threads sharing a slot must take turns in its
 * sections (the magazines have no lock of their own). 6 x 60000 random
 * operations with every object verified before it is freed, and checks
 * from a seventh thread all along (under the aligned policy each after a
 * dmm_slab_shrink(), which drains the magazines the workers use). Then one
 * shrink gives every page back.
 */
static void test_more_threads_than_cpus(void **state)
{
	enum { NT = 6 };
	static const enum dmm_kmalloc_policy pols[2] = { DMM_KMALLOC_PACKED, DMM_KMALLOC_ALIGNED };
	(void)state;

	for (int pi = 0; pi < 2; pi++) {
		struct tu_env *e = slab_env(pols[pi]);
		struct stress w[NT];
		struct checker c;
		pthread_t t[NT], ct;
		uint64_t allocs[DMM_KMALLOC_NR_SETS] = { 0 };
		int finished = 0;
		pthread_barrier_t start;

		assert_int_equal(e->info.nr_cpus, 2);
		assert_int_equal(pthread_barrier_init(&start, NULL, NT + 1), 0);
		c = (struct checker){ e, &finished, NT, 20, 0, 0, 0, &start, pi == 1 };
		for (unsigned i = 0; i < NT; i++) {
			memset(&w[i], 0, sizeof(w[i]));
			w[i].e = e;
			w[i].tid = i + 1;
			w[i].ops = 60000;
			w[i].finished = &finished;
			w[i].start = &start;
			assert_int_equal(pthread_create(&t[i], NULL, stress_main, &w[i]), 0);
		}
		assert_int_equal(pthread_create(&ct, NULL, checker_main, &c), 0);
		for (unsigned i = 0; i < NT; i++) {
			assert_int_equal(pthread_join(t[i], NULL), 0);
			if (w[i].failed)
				fail_msg("thread %u failed with %d", i, w[i].failed);
			for (unsigned set = 0; set < DMM_KMALLOC_NR_SETS; set++) {
				assert_int_equal(w[i].allocs[set], w[i].frees[set]);
				allocs[set] += w[i].allocs[set];
			}
		}
		assert_int_equal(pthread_join(ct, NULL), 0);
		pthread_barrier_destroy(&start);
		assert_ok(c.err);
		assert_int_equal(c.bad_snapshot, 0);
		assert_true(c.checks >= 20);
		print_message("%u concurrent checks\n", c.checks);
		assert_slab_checks(e->mem);
		assert_all_freed(e, allocs);
		assert_int_equal(dmm_slab_shrink(e->mem), 0);
		assert_int_equal(slab_pages(e->mem), 0);
		dmm_page_drain_pcp(e->mem);
		assert_int_equal(tu_zone_free_all(e->mem), e->free0);
		assert_slab_checks(e->mem);
		assert_all_freed(e, allocs);
		tu_env_destroy(e);
	}
}

/* Short-lived threads: each leaves objects for a thread of the next wave
 * to verify and free (a free on another thread, maybe another CPU). */
#define CHURN_THREADS 200
#define CHURN_WAVE 4
#define CHURN_HANDOFF 8

struct churn {
	struct tu_env *e;
	unsigned tid;
	void *handoff[CHURN_HANDOFF];   /* left for thread tid + CHURN_WAVE */
	size_t handoff_sz[CHURN_HANDOFF];
	struct churn *from;             /* whose handoff this thread frees */
	int failed;
	uint64_t allocs;
};

static void *churn_main(void *arg)
{
	struct churn *w = arg;
	struct stress s;

	/* the previous wave's objects: intact, freed here */
	for (unsigned i = 0; w->from && i < CHURN_HANDOFF; i++) {
		const uint8_t *b = w->from->handoff[i];
		for (size_t j = 0; j < w->from->handoff_sz[i]; j++)
			if (b[j] != pat(w->from->tid, 100 + i, 0, j)) {
				w->failed = 2;
				break;
			}
		if (dmm_kfree(w->e->mem, b))
			w->failed = 3;
	}
	memset(&s, 0, sizeof(s));
	s.e = w->e;
	s.tid = w->tid;
	s.ops = 1500;
	stress_main(&s);
	if (s.failed && !w->failed)
		w->failed = s.failed;
	w->allocs = s.allocs[0] + s.allocs[1];
	for (unsigned i = 0; i < CHURN_HANDOFF; i++) {
		size_t n = 8 + (w->tid * 37u + i * 61u) % 505;
		uint8_t *b;
		if (dmm_kmalloc(w->e->mem, n, 0, &w->handoff[i])) {
			w->failed = 1;
			w->handoff[i] = NULL;
			continue;
		}
		w->allocs++;
		b = w->handoff[i];
		w->handoff_sz[i] = n;
		for (size_t j = 0; j < n; j++)
			b[j] = pat(w->tid, 100 + i, 0, j);
	}
	return NULL;
}

static void test_short_lived_threads(void **state)
{
	struct tu_env *e = slab_env(DMM_KMALLOC_PACKED);
	static struct churn w[CHURN_THREADS];
	pthread_t t[CHURN_WAVE];
	uint64_t allocs = 0;
	(void)state;

	memset(w, 0, sizeof(w));
	for (unsigned base = 0; base < CHURN_THREADS; base += CHURN_WAVE) {
		for (unsigned k = 0; k < CHURN_WAVE; k++) {
			struct churn *c = &w[base + k];
			c->e = e;
			c->tid = base + k + 1;
			c->from = base ? &w[base + k - CHURN_WAVE] : NULL;
			assert_int_equal(pthread_create(&t[k], NULL, churn_main, c), 0);
		}
		for (unsigned k = 0; k < CHURN_WAVE; k++) {
			assert_int_equal(pthread_join(t[k], NULL), 0);
			if (w[base + k].failed)
				fail_msg("thread %u failed with %d", base + k, w[base + k].failed);
			allocs += w[base + k].allocs;
		}
		if (base % 40 == 0)
			assert_slab_checks(e->mem);
	}
	/* the last wave's objects, freed here */
	for (unsigned k = CHURN_THREADS - CHURN_WAVE; k < CHURN_THREADS; k++)
		for (unsigned i = 0; i < CHURN_HANDOFF; i++) {
			const uint8_t *b = w[k].handoff[i];
			for (size_t j = 0; j < w[k].handoff_sz[i]; j++)
				assert_int_equal(b[j], pat(w[k].tid, 100 + i, 0, j));
			assert_ok(dmm_kfree(e->mem, b));
		}
	assert_slab_checks(e->mem);
	{
		uint64_t a[DMM_KMALLOC_NR_SETS] = { 0 };
		struct dmm_slab_class_info ci;
		for (unsigned cls = 0; cls < DMM_KMALLOC_NR_CLASSES; cls++) {
			assert_ok(dmm_slab_class_info(e->mem, 0, cls, &ci));
			a[0] += ci.allocs;
			assert_ok(dmm_slab_class_info(e->mem, 1, cls, &ci));
			a[1] += ci.allocs;
		}
		assert_int_equal(a[0] + a[1], allocs);
	}
	assert_all_freed(e, NULL);
	tu_env_destroy(e);
}

/* A platform that cannot turn CPU addresses into physical ones has no
 * small-object allocator: every request fails with a reason and a count,
 * and nothing is freed by mistake. */
static void test_no_address_translation(void **state)
{
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_platform p;
	struct dmm_mem *mem = NULL;
	struct dmm_mem_info mi;
	dmm_pfn_t pfn;
	void *x = NULL;
	(void)state;

	tu_hosted_platform(&m, "no-v2p", 2, &h, &p);
	p.virt_to_phys = NULL;
	assert_ok(dmm_mem_create(&m, &p, &mem));
	assert_rc(dmm_kmalloc(mem, 64, 0, &x), -DMM_EINVAL);
	assert_rc(dmm_kmalloc(mem, 8, DMM_GFP_PACKED, &x), -DMM_EINVAL);
	assert_null(x);
	assert_ok(dmm_page_alloc(mem, 0, NULL, 0, &pfn));
	assert_rc(dmm_kfree(mem, dmm_pfn_to_virt(mem, pfn)), -DMM_EINVAL);
	dmm_mem_get_info(mem, &mi);
	assert_int_equal(mi.fail_invalid, 3);
	assert_ok(dmm_page_free(mem, pfn, 0));
	assert_checks(mem);
	assert_ok(dmm_slab_check(mem));
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(h);
}

/* Objects of every class and set through kmalloc/kfree on @mem: contents,
 * ksize, a free inside an object, double frees, statistics, the checks. */
static void slab_round_trip(struct dmm_mem *mem)
{
	static const unsigned flags[] = { 0, DMM_GFP_PACKED, DMM_GFP_DMA32, DMM_GFP_DMA };
	enum { N = 400 };
	static void *obj[N];
	static size_t sz[N];
	struct dmm_slab_class_info ci;
	uint64_t s = 7, a = 0, f = 0;

	for (unsigned i = 0; i < N; i++) {
		sz[i] = (size_t)1 << (3 + i % 11); /* 8 .. 8 KiB */
		sz[i] -= (tu_rand(&s) % (sz[i] / 2)); /* and sizes between the classes */
		assert_ok(dmm_kmalloc(mem, sz[i], flags[i % 4], &obj[i]));
		assert_true(dmm_ksize(mem, obj[i]) >= sz[i]);
		stamp(obj[i], sz[i], i);
	}
	assert_rc(dmm_kfree(mem, (uint8_t *)obj[3] + 8), -DMM_EINVAL); /* inside an object */
	for (unsigned i = 0; i < N; i += 2)
		assert_ok(dmm_kfree(mem, obj[i]));
	assert_rc(dmm_kfree(mem, obj[N - 2]), -DMM_ENOENT); /* the last one freed, again */
	assert_ok(dmm_slab_check(mem));
	for (unsigned i = 1; i < N; i += 2) {
		check_stamp(obj[i], sz[i], i);
		assert_ok(dmm_kfree(mem, obj[i]));
	}
	assert_ok(dmm_slab_check(mem));
	assert_checks(mem);
	for (unsigned set = 0; set < DMM_KMALLOC_NR_SETS; set++)
		for (unsigned c = 0; c < DMM_KMALLOC_NR_CLASSES; c++) {
			assert_ok(dmm_slab_class_info(mem, set, c, &ci));
			assert_int_equal(ci.objects, 0);
			assert_int_equal(ci.allocs, ci.frees);
			a += ci.allocs;
			f += ci.frees;
		}
	assert_true(a >= N - N / 11 && a == f); /* (8 KiB ones may be large objects) */
}

/* kfree at every address of a slab that is no object's start (inside an
 * object, or in the tail a 96- or 192-byte class leaves) is refused, for
 * every class; the object's own start is accepted. */
static void test_free_inside_objects(void **state)
{
	struct tu_env *e = slab_env(DMM_KMALLOC_PACKED);
	const struct dmm_platform *pl = dmm_hosted_platform(e->hosted);
	struct dmm_mem_info mi;
	uint64_t refused = 0;
	(void)state;

	for (unsigned c = 0; c < DMM_KMALLOC_NR_CLASSES; c++) {
		struct dmm_slab_class_info ci;
		uint8_t *p, *base;
		dmm_phys_t pa;
		uint64_t bytes;

		assert_ok(dmm_slab_class_info(e->mem, 0, c, &ci));
		assert_ok(dmm_kmalloc(e->mem, ci.size, DMM_GFP_PACKED, (void **)&p));
		assert_int_equal(dmm_ksize(e->mem, p), ci.size);
		assert_ok(pl->virt_to_phys(pl->ctx, p, &pa));
		bytes = (uint64_t)DMM_PAGE_SIZE << ci.slab_order;
		base = p - (pa & (bytes - 1));
		for (uint64_t off = 0; off < bytes; off++) {
			if (off % ci.size == 0 && off / ci.size < ci.objs_per_slab)
				continue;
			assert_rc(dmm_kfree(e->mem, base + off), -DMM_EINVAL);
			assert_int_equal(dmm_ksize(e->mem, base + off), 0);
			refused++;
		}
		assert_ok(dmm_kfree(e->mem, p));
	}
	dmm_mem_get_info(e->mem, &mi);
	assert_int_equal(mi.fail_invalid, refused);
	assert_slab_checks(e->mem);
	tu_env_destroy(e);
}

/* A large object whose page is pinned: kfree is refused with the page
 * allocator's reason and changes nothing; once unpinned it frees. */
static void test_free_pinned_large(void **state)
{
	struct tu_env *e = slab_env(DMM_KMALLOC_PACKED);
	const struct dmm_platform *pl = dmm_hosted_platform(e->hosted);
	dmm_pfn_t pinned;
	dmm_phys_t pa;
	uint64_t free0;
	void *big;
	(void)state;

	free0 = tu_zone_free_all(e->mem);
	assert_ok(dmm_kmalloc(e->mem, 16 * 1024, 0, &big));
	assert_ok(pl->virt_to_phys(pl->ctx, big, &pa));
	assert_ok(dmm_page_pin(e->mem, dmm_phys_to_pfn(pa), 0, &pinned, NULL));
	assert_rc(dmm_kfree(e->mem, big), -DMM_EBUSY);
	assert_int_equal(dmm_ksize(e->mem, big), 16 * 1024); /* still a large object */
	assert_ok(dmm_page_unpin(e->mem, pinned, 0));
	assert_ok(dmm_kfree(e->mem, big));
	assert_int_equal(dmm_ksize(e->mem, big), 0);
	dmm_page_drain_pcp(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), free0);
	assert_slab_checks(e->mem);
	tu_env_destroy(e);
}

static dmm_pfn_t pfn_of(const struct dmm_platform *pl, const void *p)
{
	dmm_phys_t pa;

	assert_ok(pl->virt_to_phys(pl->ctx, p, &pa));
	return dmm_phys_to_pfn(pa);
}

/* Nothing leaked: the page allocator's free pages and the slabs' pages add
 * up to what they did (no large object nor other allocation meanwhile),
 * and every check holds. */
#define assert_no_leak(mem, total)                                                    \
	do {                                                                          \
		assert_int_equal(tu_zone_free_all(mem) + slab_pages(mem), (total));   \
		assert_slab_checks(mem);                                              \
	} while (0)

/*
 * Fill the depot of class @cls (set 0) to its bound: as many objects as
 * the depot and a magazine hold, allocated, then freed (the allocations
 * empty this CPU's magazine and the depot, the frees fill the magazine and
 * hand a load to the depot whenever it is full). From then on, until
 * something is allocated, an object freed on this CPU goes back to its
 * slab once a mag_batch of later frees has pushed it out of the magazine.
 */
static void fill_depot(struct dmm_mem *mem, unsigned cls)
{
	static void *v[8 * 30 + 61];
	struct dmm_slab_class_info ci;
	uint32_t n;

	assert_ok(dmm_slab_class_info(mem, 0, cls, &ci));
	n = ci.depot_max_loads * ci.mag_batch + ci.mag_capacity;
	assert_true(n <= sizeof(v) / sizeof(v[0]));
	for (uint32_t i = 0; i < n; i++)
		assert_ok(dmm_kmalloc(mem, ci.size, 0, &v[i]));
	for (uint32_t i = 0; i < n; i++)
		assert_ok(dmm_kfree(mem, v[i]));
	assert_ok(dmm_slab_class_info(mem, 0, cls, &ci));
	assert_int_equal(ci.depot_loads, ci.depot_max_loads);
	assert_int_equal(ci.depot_objects, (uint64_t)ci.depot_max_loads * ci.mag_batch);
}

/*
 * An empty slab whose page is pinned cannot go back to the page allocator,
 * which refuses a pinned page: it stays a slab of its cache, whole (its
 * objects free on it, its page the cache's), counted in release_busy, and
 * the next allocations take from it first. Once unpinned it goes back the
 * next time it is empty. Here: six slabs of 64-byte objects, the second
 * (full) one pinned; the first slab's objects are freed, then the pinned
 * slab's, then all but the last 64 objects (a reserve): the first slab to
 * be empty is kept as the spare, the pinned one is the second. The depot
 * is filled first, so that the frees reach the slabs past the magazine.
 */
static void test_slab_release_pinned(void **state)
{
	struct tu_env *e = slab_env(DMM_KMALLOC_PACKED);
	const struct dmm_platform *pl = dmm_hosted_platform(e->hosted);
	enum { N = 64 * 6, R = 64, M = 600 };
	static void *obj[N], *more[M];
	dmm_pfn_t slab[N], held, pinned;
	unsigned nslab = 0, in_held = 0, nmore = 0, first_held = M, more_held = 0;
	struct dmm_slab_class_info ci;
	uint64_t total, bad0, slabs0;
	(void)state;

	total = tu_zone_free_all(e->mem) + slab_pages(e->mem);
	for (unsigned i = 0; i < N; i++) {
		dmm_pfn_t p;
		unsigned k = 0;
		assert_ok(dmm_kmalloc(e->mem, 64, 0, &obj[i]));
		stamp(obj[i], 64, i);
		p = pfn_of(pl, obj[i]);
		while (k < nslab && slab[k] != p)
			k++;
		if (k == nslab)
			slab[nslab++] = p;
	}
	assert_true(nslab >= 6);
	held = slab[1];
	for (unsigned i = 0; i < N; i++)
		in_held += pfn_of(pl, obj[i]) == held;
	assert_int_equal(in_held, 64); /* full */
	assert_no_leak(e->mem, total);
	assert_ok(dmm_page_pin(e->mem, held, 0, &pinned, NULL));
	assert_int_equal(pinned, held);
	bad0 = tu_zone_bad_frees(e->mem);
	fill_depot(e->mem, 3); /* (from other slabs: these six are full) */

	/* the first slab's objects, the pinned slab's, all others but the reserve */
	for (unsigned pass = 0; pass < 3; pass++)
		for (unsigned i = 0; i < N - R; i++) {
			dmm_pfn_t p = pfn_of(pl, obj[i]);
			if ((pass == 0 && p == slab[0]) || (pass == 1 && p == held) ||
			    (pass == 2 && p != slab[0] && p != held)) {
				check_stamp(obj[i], 64, i);
				assert_ok(dmm_kfree(e->mem, obj[i]));
			}
		}
	/* refused once, and the slab is still there: its objects are objects,
	 * its page a slab the page allocator refuses */
	assert_int_equal(tu_zone_bad_frees(e->mem), bad0 + 1);
	assert_ok(dmm_slab_class_info(e->mem, 0, 3, &ci));
	assert_int_equal(ci.size, 64);
	assert_int_equal(ci.release_busy, 1);
	assert_int_equal(ci.objects, R);
	for (unsigned i = 0; i < N - R; i++)
		if (pfn_of(pl, obj[i]) == held)
			assert_int_equal(dmm_ksize(e->mem, obj[i]), 64);
	assert_rc(dmm_page_free(e->mem, held, 0), -DMM_EBUSY);
	bad0++; /* (that refusal) */
	assert_int_equal(dmm_pfn_to_page(e->mem, held)->state, DMM_PAGE_ALLOC);
	assert_no_leak(e->mem, total);

	/* the next allocations take from it (after what the CPU's magazine
	 * and the depot hold), before any new slab is cut; all of it */
	assert_ok(dmm_page_unpin(e->mem, pinned, 0));
	assert_ok(dmm_slab_class_info(e->mem, 0, 3, &ci));
	slabs0 = ci.slabs;
	while (nmore < M && more_held < 64) {
		assert_ok(dmm_kmalloc(e->mem, 64, 0, &more[nmore]));
		stamp(more[nmore], 64, 1000 + nmore);
		if (pfn_of(pl, more[nmore]) == held) {
			if (first_held == M) {
				first_held = nmore;
				assert_ok(dmm_slab_class_info(e->mem, 0, 3, &ci));
				assert_int_equal(ci.slabs, slabs0);
			}
			more_held++;
		}
		nmore++;
	}
	assert_int_equal(more_held, 64);
	assert_no_leak(e->mem, total);

	/* empty again: given back this time (the spare is there). The depot
	 * full again first (its allocations may take the spare), the other
	 * objects freed (a slab they empty is the new spare), then the pinned
	 * slab's, then the reserve, which pushes them out of the magazine */
	fill_depot(e->mem, 3);
	check_stamp(more[first_held], 64, 1000 + first_held);
	for (unsigned pass = 0; pass < 2; pass++)
		for (unsigned i = 0; i < nmore; i++)
			if ((pfn_of(pl, more[i]) == held) == (pass == 1)) {
				check_stamp(more[i], 64, 1000 + i);
				assert_ok(dmm_kfree(e->mem, more[i]));
			}
	for (unsigned i = N - R; i < N; i++) {
		check_stamp(obj[i], 64, i);
		assert_ok(dmm_kfree(e->mem, obj[i]));
	}
	assert_int_equal(dmm_ksize(e->mem, more[first_held]), 0); /* no slab there any more */
	dmm_page_drain_pcp(e->mem);
	assert_rc(dmm_page_pin(e->mem, held, 0, &pinned, NULL), -DMM_ENOENT); /* a free page */
	assert_int_equal(tu_zone_bad_frees(e->mem), bad0 + 1); /* not refused again */
	assert_ok(dmm_slab_class_info(e->mem, 0, 3, &ci));
	assert_int_equal(ci.release_busy, 1);
	assert_int_equal(ci.objects, 0);
	assert_no_leak(e->mem, total);
	tu_env_destroy(e);
}

/* Frees objects [from, to) of a list on a thread of its own (another CPU
 * slot: its magazine, not the test thread's, holds them). */
struct freer {
	struct dmm_mem *mem;
	void **obj;
	unsigned from, to;
	int failed;
};

static void *freer_main(void *arg)
{
	struct freer *f = arg;

	for (unsigned i = f->from; i < f->to; i++)
		if (dmm_kfree(f->mem, f->obj[i]))
			f->failed = 1;
	return NULL;
}

/*
 * dmm_slab_shrink() gives back everything held without use: magazines of
 * every CPU into their slabs, every empty slab (spares too) to the page
 * allocator. Four caches (64, 2048 and 8192 bytes, 64 bytes below
 * dma_limit: slabs of 1, 2 and 8 pages), objects freed on two threads; a
 * 64-byte slab and a 2048-byte one pinned. The shrink keeps exactly those
 * two (whole: still slabs, their page the cache's) and says so; they serve
 * the next allocations; after the unpins the next shrink gives them back
 * and the page allocator has every page it had. The free pages plus the
 * slabs' pages stay what they were throughout, and every check holds.
 */
static void test_slab_shrink(void **state)
{
	struct tu_env *e = slab_env(DMM_KMALLOC_PACKED);
	const struct dmm_platform *pl = dmm_hosted_platform(e->hosted);
	static const size_t size[4] = { 64, 2048, 8192, 64 };
	static const unsigned flags[4] = { 0, 0, 0, DMM_GFP_DMA };
	static const unsigned set[4] = { 0, 0, 0, 2 }, cls[4] = { 3, 10, 12, 3 };
	enum { N = 200 };
	static void *obj[4][N];
	struct dmm_slab_class_info ci;
	dmm_pfn_t pin[2], pinned;
	uint64_t free0, total;
	void *again;
	(void)state;

	assert_int_equal(dmm_slab_shrink(NULL), 0);
	assert_int_equal(dmm_slab_shrink(e->mem), 0); /* nothing to give back yet */
	assert_int_equal(slab_pages(e->mem), 0);
	dmm_page_drain_pcp(e->mem);
	free0 = tu_zone_free_all(e->mem);
	total = free0;
	for (unsigned c = 0; c < 4; c++) {
		assert_ok(dmm_slab_class_info(e->mem, set[c], cls[c], &ci));
		assert_int_equal(ci.size, size[c]);
		for (unsigned i = 0; i < N; i++) {
			assert_ok(dmm_kmalloc(e->mem, size[c], flags[c], &obj[c][i]));
			stamp(obj[c][i], size[c], c * N + i);
		}
	}
	assert_no_leak(e->mem, total);
	/* the slabs of the 101st 64-byte object and of the 51st 2048-byte one
	 * (whose slabs are 2 pages: their head) */
	pin[0] = pfn_of(pl, obj[0][100]);
	pin[1] = pfn_of(pl, obj[1][50]) & ~(dmm_pfn_t)1;
	for (unsigned k = 0; k < 2; k++) {
		assert_ok(dmm_page_pin(e->mem, pin[k], 0, &pinned, NULL));
		assert_int_equal(pinned, pin[k]);
	}
	/* half of every list freed here, half on another thread */
	for (unsigned c = 0; c < 4; c++) {
		struct freer f = { e->mem, obj[c], N / 2, N, 0 };
		pthread_t t;
		for (unsigned i = 0; i < N; i++)
			check_stamp(obj[c][i], size[c], c * N + i);
		for (unsigned i = 0; i < N / 2; i++)
			assert_ok(dmm_kfree(e->mem, obj[c][i]));
		assert_int_equal(pthread_create(&t, NULL, freer_main, &f), 0);
		assert_int_equal(pthread_join(t, NULL), 0);
		assert_false(f.failed);
	}
	assert_no_leak(e->mem, total);
	assert_true(slab_pages(e->mem) > 3); /* spares, magazines */

	assert_int_equal(dmm_slab_shrink(e->mem), 2);
	for (unsigned c = 0; c < 4; c++) {
		assert_ok(dmm_slab_class_info(e->mem, set[c], cls[c], &ci));
		assert_int_equal(ci.objects, 0);
		assert_int_equal(ci.cached, 0); /* every magazine emptied */
		assert_int_equal(ci.allocs, N);
		assert_int_equal(ci.frees, N);
		assert_int_equal(ci.slabs, c < 2 ? 1 : 0);
		assert_true(c < 2 ? ci.release_busy >= 1 : ci.release_busy == 0);
	}
	assert_int_equal(slab_pages(e->mem), 1 + 2);
	assert_int_equal(tu_zone_free_all(e->mem), free0 - 3);
	assert_int_equal(dmm_ksize(e->mem, obj[0][100]), 64); /* the pinned slabs are slabs */
	assert_int_equal(dmm_ksize(e->mem, obj[1][50]), 2048);
	assert_rc(dmm_page_free(e->mem, pin[0], 0), -DMM_EBUSY);
	assert_rc(dmm_page_free(e->mem, pin[1], 1), -DMM_EBUSY);
	assert_no_leak(e->mem, total);

	/* the next 64-byte object comes from the pinned slab, the only one;
	 * freed, it empties the slab again, which the shrink keeps again */
	assert_ok(dmm_kmalloc(e->mem, 64, 0, &again));
	assert_int_equal(pfn_of(pl, again), pin[0]);
	stamp(again, 64, 7);
	check_stamp(again, 64, 7);
	assert_ok(dmm_kfree(e->mem, again));
	assert_int_equal(dmm_slab_shrink(e->mem), 2);
	assert_int_equal(slab_pages(e->mem), 1 + 2);
	assert_no_leak(e->mem, total);

	/* unpinned: the next shrink gives them back, every page is free again */
	for (unsigned k = 0; k < 2; k++)
		assert_ok(dmm_page_unpin(e->mem, pin[k], 0));
	assert_int_equal(dmm_slab_shrink(e->mem), 0);
	assert_int_equal(slab_pages(e->mem), 0);
	dmm_page_drain_pcp(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), free0);
	for (unsigned k = 0; k < 2; k++)
		assert_rc(dmm_page_pin(e->mem, pin[k], 0, &pinned, NULL), -DMM_ENOENT); /* free pages */
	assert_int_equal(dmm_ksize(e->mem, obj[0][100]), 0);
	assert_no_leak(e->mem, total);
	tu_env_destroy(e);
}

/*
 * The moment between a kmalloc's new slab and its return, forced through
 * the lock hook on a platform without thread slots (a CPU-local section is
 * then its slot's lock, so the kmalloc's re-entry after cutting the slab
 * is a lock the hook sees, and the thread holds nothing there): while
 * armed, the first lock the kmalloc takes is its slot's, and every later
 * take of it runs in_window() first.
 */
static struct {
	void (*real_lock)(void *ctx, struct dmm_lock *l);
	void (*in_window)(struct dmm_mem *mem);
	struct dmm_mem *mem;
	struct dmm_lock *slot;
	int armed, inside;
} slot_race;

static void slot_race_lock(void *ctx, struct dmm_lock *l)
{
	if (slot_race.armed && !slot_race.inside) {
		if (!slot_race.slot) {
			slot_race.slot = l;
		} else if (l == slot_race.slot) {
			slot_race.inside = 1;
			slot_race.in_window(slot_race.mem);
			slot_race.inside = 0;
		}
	}
	slot_race.real_lock(ctx, l);
}

/* A packed machine whose sections are slot locks, its lock hook
 * slot_race_lock running @in_window (disarmed). */
static struct dmm_mem *slot_race_mem(const char *name, void (*in_window)(struct dmm_mem *mem), struct dmm_hosted **h)
{
	struct dmm_machine m;
	struct dmm_platform p;
	struct dmm_mem *mem = NULL;
	struct dmm_mem_info mi;

	tu_hosted_platform(&m, name, 2, h, &p);
	m.kmalloc_policy = DMM_KMALLOC_PACKED;
	p.cpu_thread_slots = 0; /* sections are slot locks */
	p.cpu_fence = NULL;
	slot_race.real_lock = p.lock;
	slot_race.in_window = in_window;
	slot_race.slot = NULL;
	slot_race.armed = 0;
	p.lock = slot_race_lock;
	assert_ok(dmm_mem_create(&m, &p, &mem));
	dmm_mem_get_info(mem, &mi);
	assert_string_equal(mi.cpu_sections, "locks");
	slot_race.mem = mem;
	return mem;
}

/*
 * A shrink that runs in that moment must not take the new slab away: the
 * slab is listed (empty) before the kmalloc takes its objects, under the
 * cache lock, a moment later. The kmalloc must still succeed, from the
 * slab it cut, with free memory all around (it used to give up after four
 * slabs, each taken back by the shrink: -DMM_ENOMEM, counted in
 * fail_nomem).
 */
static unsigned fresh_shrinks;

static void shrink_in_window(struct dmm_mem *mem)
{
	(void)dmm_slab_shrink(mem);
	fresh_shrinks++;
}

static void test_shrink_spares_fresh_slab(void **state)
{
	struct dmm_hosted *h;
	struct dmm_mem *mem;
	struct dmm_slab_class_info ci;
	uint64_t free0;
	void *obj = NULL;
	int rc;
	(void)state;

	mem = slot_race_mem("slab-fresh-race", shrink_in_window, &h);
	free0 = tu_zone_free_all(mem);

	fresh_shrinks = 0;
	slot_race.armed = 1;
	rc = dmm_kmalloc(mem, 64, 0, &obj);
	slot_race.armed = 0;
	assert_true(fresh_shrinks >= 1); /* the shrink ran in the window */
	assert_true(tu_zone_free_all(mem) > free0 / 2);
	assert_rc(rc, 0);
	assert_non_null(obj);
	assert_ok(dmm_slab_class_info(mem, 0, 3, &ci));
	assert_int_equal(ci.size, 64);
	assert_int_equal(ci.fail_nomem, 0);
	assert_int_equal(ci.objects, 1);
	assert_int_equal(dmm_ksize(mem, obj), 64);
	assert_ok(dmm_slab_check(mem));
	assert_ok(dmm_kfree(mem, obj));
	assert_int_equal(dmm_slab_shrink(mem), 0);
	dmm_page_drain_pcp(mem);
	assert_int_equal(tu_zone_free_all(mem), free0);
	assert_ok(dmm_slab_check(mem));
	assert_checks(mem);
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(h);
}

/*
 * The counters and the check in that moment: every object is on its slab,
 * in a magazine, in the depot or live, so nothing counts as live that no
 * kmalloc handed out, and allocs (cumulative) never goes back. They used
 * to count the new slab's first objects, taken for the magazine but not
 * yet in it, as live: 30 objects and allocations for none, allocs 30,
 * then 1.
 */
static struct {
	unsigned looks;
	uint64_t max_objects, max_allocs;
	int check;
} count_race;

static void count_in_window(struct dmm_mem *mem)
{
	struct dmm_slab_class_info ci;

	assert_ok(dmm_slab_class_info(mem, 0, 3, &ci));
	if (ci.objects > count_race.max_objects)
		count_race.max_objects = ci.objects;
	if (ci.allocs > count_race.max_allocs)
		count_race.max_allocs = ci.allocs;
	count_race.check |= dmm_slab_check(mem);
	count_race.looks++;
}

static void test_counts_new_slab(void **state)
{
	struct dmm_hosted *h;
	struct dmm_mem *mem;
	struct dmm_slab_class_info ci;
	void *obj = NULL;
	(void)state;

	mem = slot_race_mem("slab-count-race", count_in_window, &h);
	slot_race.armed = 1;
	assert_ok(dmm_kmalloc(mem, 64, 0, &obj));
	slot_race.armed = 0;
	assert_true(count_race.looks >= 1);
	assert_int_equal(count_race.check, 0);
	assert_int_equal(count_race.max_objects, 0);
	assert_int_equal(count_race.max_allocs, 0);
	assert_ok(dmm_slab_class_info(mem, 0, 3, &ci));
	assert_int_equal(ci.objects, 1);
	assert_int_equal(ci.allocs, 1);
	assert_int_equal(ci.cached, ci.mag_batch - 1);
	assert_ok(dmm_slab_check(mem));
	assert_ok(dmm_kfree(mem, obj));
	assert_int_equal(dmm_slab_shrink(mem), 0);
	assert_ok(dmm_slab_check(mem));
	assert_checks(mem);
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(h);
}

/*
 * The same on threads as they come: two threads allocate and free batches
 * of 64-byte objects (every batch empties the slabs again) while a third
 * shrinks without pause. Every kmalloc must succeed (64 MiB, almost all
 * free); it used to fail with -DMM_ENOMEM in about half the runs (the
 * lock-hook test above forces the interleaving every time).
 */
struct shrink_loop {
	struct dmm_mem *mem;
	int stop;
	unsigned long shrinks;
};

static void *shrink_loop_main(void *arg)
{
	struct shrink_loop *s = arg;

	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		(void)dmm_slab_shrink(s->mem);
		s->shrinks++;
	}
	return NULL;
}

struct batcher {
	struct dmm_mem *mem;
	unsigned rounds;
	int rc;
};

static void *batcher_main(void *arg)
{
	struct batcher *b = arg;
	void *obj[64];

	for (unsigned r = 0; r < b->rounds && !b->rc; r++) {
		unsigned n = 1 + r % 64, got = 0;
		while (got < n && !(b->rc = dmm_kmalloc(b->mem, 64, 0, &obj[got])))
			got++;
		while (got)
			if (dmm_kfree(b->mem, obj[--got]) && !b->rc)
				b->rc = 1;
	}
	return NULL;
}

static void test_shrink_concurrent_kmalloc(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct shrink_loop s;
	struct batcher b[2];
	pthread_t bt[2], st;
	(void)state;

	tu_machine(&m, "slab-shrink-threads");
	tu_add_ram(&m, 0, 64 * MiB);
	m.kmalloc_policy = DMM_KMALLOC_PACKED;
	e = tu_env_create(&m, 2);
	s = (struct shrink_loop){ e->mem, 0, 0 };
	assert_int_equal(pthread_create(&st, NULL, shrink_loop_main, &s), 0);
	for (unsigned i = 0; i < 2; i++) {
		b[i] = (struct batcher){ e->mem, 200000, 0 };
		assert_int_equal(pthread_create(&bt[i], NULL, batcher_main, &b[i]), 0);
	}
	for (unsigned i = 0; i < 2; i++)
		assert_int_equal(pthread_join(bt[i], NULL), 0);
	__atomic_store_n(&s.stop, 1, __ATOMIC_RELEASE);
	assert_int_equal(pthread_join(st, NULL), 0);
	print_message("%lu shrinks alongside\n", s.shrinks);
	for (unsigned i = 0; i < 2; i++)
		assert_rc(b[i].rc, 0);
	assert_int_equal(dmm_slab_shrink(e->mem), 0);
	assert_int_equal(slab_pages(e->mem), 0);
	dmm_page_drain_pcp(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), e->free0);
	assert_slab_checks(e->mem);
	tu_env_destroy(e);
}

/*
 * Bursts on threads, through the depot: 3 workers on 2 CPU slots, rounds
 * of two phases. First every worker allocates a burst of 600 objects
 * (three sizes, so that each class gets more than the magazines of both
 * CPUs; a quarter of them below dma32_limit) and fills every byte; then
 * every worker frees the burst of the next worker, bytes verified first,
 * in a shuffled order (so objects move from one CPU's magazine to another
 * through the depots). A fourth thread shrinks without pause through
 * every third round (each shrink empties every depot); in the other
 * rounds the depots keep what a round's frees put there, and the next
 * round's bursts must take loads from them. After each phase, with the
 * workers waiting, every check holds and the classes count exactly the
 * live objects; at the end every page goes back.
 */
enum { DB_WORKERS = 3, DB_BURST = 600, DB_ROUNDS = 30 };

struct depot_burst {
	struct tu_env *e;
	pthread_barrier_t *bar;
	unsigned tid;
	void *obj[DB_BURST];
	uint16_t sz[DB_BURST];
	uint8_t set[DB_BURST];
	struct depot_burst *next; /* whose burst this worker frees */
	uint64_t allocs[DMM_KMALLOC_NR_SETS];
	int failed; /* first failure: 1 alloc, 2 contents, 3 free */
};

static uint8_t db_byte(const struct depot_burst *w, unsigned round, unsigned i, size_t j)
{
	return (uint8_t)(w->tid * 89u + round * 17u + i * 5u + j * 3u + (j >> 8));
}

static void *depot_burst_main(void *arg)
{
	static const uint16_t sizes[3] = { 24, 64, 500 };
	struct depot_burst *w = arg;
	uint64_t s = 0x2545f4914f6cdd1dull * w->tid;
	uint32_t order[DB_BURST];

	for (unsigned r = 0; r < DB_ROUNDS; r++) {
		for (unsigned i = 0; i < DB_BURST; i++) {
			unsigned flags = tu_rand_below(&s, 4) ? 0 : DMM_GFP_DMA32;
			w->sz[i] = sizes[tu_rand_below(&s, 3)];
			w->set[i] = flags ? 1 : 0;
			if (dmm_kmalloc(w->e->mem, w->sz[i], flags, &w->obj[i])) {
				w->failed = w->failed ? w->failed : 1;
				w->obj[i] = NULL;
				continue;
			}
			w->allocs[w->set[i]]++;
			for (size_t j = 0; j < w->sz[i]; j++)
				((uint8_t *)w->obj[i])[j] = db_byte(w, r, i, j);
		}
		pthread_barrier_wait(w->bar); /* bursts allocated */
		pthread_barrier_wait(w->bar); /* checked */
		shuffled_order(order, DB_BURST, &s);
		for (uint32_t k = 0; k < DB_BURST; k++) {
			unsigned i = order[k];
			const uint8_t *b = w->next->obj[i];
			if (!b)
				continue;
			for (size_t j = 0; j < w->next->sz[i]; j++)
				if (b[j] != db_byte(w->next, r, i, j)) {
					w->failed = w->failed ? w->failed : 2;
					break;
				}
			if (dmm_kfree(w->e->mem, b))
				w->failed = w->failed ? w->failed : 3;
		}
		pthread_barrier_wait(w->bar); /* bursts freed */
		pthread_barrier_wait(w->bar); /* checked */
	}
	return NULL;
}

/* Live objects of sets 0 and 1 by the classes' counts (and each depot
 * within its bound, whole loads). */
static uint64_t live_objects(struct dmm_mem *mem)
{
	uint64_t n = 0;

	for (unsigned set = 0; set < 2; set++)
		for (unsigned c = 0; c < DMM_KMALLOC_NR_CLASSES; c++) {
			struct dmm_slab_class_info in;
			assert_ok(dmm_slab_class_info(mem, set, c, &in));
			assert_true(in.depot_loads <= in.depot_max_loads);
			assert_int_equal(in.depot_objects, (uint64_t)in.depot_loads * in.mag_batch);
			n += in.objects;
		}
	return n;
}

/* Shrinks without pause while @on is set (a shrink that keeps a slab, no
 * page being pinned, fails the test); until @stop. */
struct shrink_switch {
	struct dmm_mem *mem;
	int on, stop, failed;
	unsigned long shrinks;
};

static void *shrink_switch_main(void *arg)
{
	struct shrink_switch *s = arg;

	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		if (!__atomic_load_n(&s->on, __ATOMIC_ACQUIRE)) {
			sched_yield();
			continue;
		}
		if (dmm_slab_shrink(s->mem))
			s->failed = 1;
		s->shrinks++;
	}
	return NULL;
}

/* Loads put into and taken from the depots of sets 0 and 1. */
static void depot_traffic(struct dmm_mem *mem, uint64_t *puts, uint64_t *gets)
{
	*puts = *gets = 0;
	for (unsigned set = 0; set < 2; set++)
		for (unsigned c = 0; c < DMM_KMALLOC_NR_CLASSES; c++) {
			struct dmm_slab_class_info in;
			assert_ok(dmm_slab_class_info(mem, set, c, &in));
			*puts += in.depot_puts;
			*gets += in.depot_gets;
		}
}

static void test_depot_threads(void **state)
{
	struct tu_env *e = slab_env(DMM_KMALLOC_PACKED);
	static struct depot_burst w[DB_WORKERS];
	struct shrink_switch sl = { e->mem, 0, 0, 0, 0 };
	pthread_barrier_t bar;
	pthread_t t[DB_WORKERS], st;
	uint64_t allocs[DMM_KMALLOC_NR_SETS] = { 0 }, puts, gets, gets0, gets_calm = 0;
	(void)state;

	assert_int_equal(e->info.nr_cpus, 2);
	assert_int_equal(pthread_barrier_init(&bar, NULL, DB_WORKERS + 1), 0);
	memset(w, 0, sizeof(w));
	for (unsigned i = 0; i < DB_WORKERS; i++) {
		w[i].e = e;
		w[i].bar = &bar;
		w[i].tid = i + 1;
		w[i].next = &w[(i + 1) % DB_WORKERS];
	}
	assert_int_equal(pthread_create(&st, NULL, shrink_switch_main, &sl), 0);
	for (unsigned i = 0; i < DB_WORKERS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, depot_burst_main, &w[i]), 0);
	depot_traffic(e->mem, &puts, &gets0);
	for (unsigned r = 0; r < DB_ROUNDS; r++) {
		pthread_barrier_wait(&bar); /* bursts allocated */
		assert_slab_checks(e->mem);
		assert_int_equal(live_objects(e->mem), DB_WORKERS * DB_BURST);
		depot_traffic(e->mem, &puts, &gets);
		if (r % 3 == 1)
			gets_calm += gets - gets0; /* no shrink since the last frees */
		pthread_barrier_wait(&bar);
		pthread_barrier_wait(&bar); /* bursts freed */
		assert_slab_checks(e->mem);
		assert_int_equal(live_objects(e->mem), 0);
		/* the next round's shrinks, while the workers wait */
		depot_traffic(e->mem, &puts, &gets0);
		__atomic_store_n(&sl.on, (r + 1) % 3 == 2, __ATOMIC_RELEASE);
		pthread_barrier_wait(&bar);
	}
	for (unsigned i = 0; i < DB_WORKERS; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		if (w[i].failed)
			fail_msg("worker %u failed with %d", i, w[i].failed);
		for (unsigned set = 0; set < DMM_KMALLOC_NR_SETS; set++)
			allocs[set] += w[i].allocs[set];
	}
	__atomic_store_n(&sl.stop, 1, __ATOMIC_RELEASE);
	assert_int_equal(pthread_join(st, NULL), 0);
	pthread_barrier_destroy(&bar);
	depot_traffic(e->mem, &puts, &gets);
	print_message("%lu shrinks alongside; %llu loads put into depots, %llu taken (%llu in rounds without shrinks)\n",
		      sl.shrinks, (unsigned long long)puts, (unsigned long long)gets, (unsigned long long)gets_calm);
	assert_true(sl.shrinks > 0);
	assert_false(sl.failed);
	/* the bursts of a round after one without shrinks come from the
	 * depots as far as the magazines do not serve them */
	assert_true(gets_calm >= (DB_ROUNDS / 3) * 10);
	assert_true(puts >= gets);
	assert_slab_checks(e->mem);
	assert_all_freed(e, allocs);
	assert_int_equal(dmm_slab_shrink(e->mem), 0);
	assert_int_equal(slab_pages(e->mem), 0);
	dmm_page_drain_pcp(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), e->free0);
	assert_slab_checks(e->mem);
	tu_env_destroy(e);
}

/*
 * Two threads free one large object at once, every round (both leave a
 * spinning barrier together): exactly one frees it, the other is refused
 * with -DMM_ENOENT and leaves the pages alone. The check after each round
 * fails if a free page still carries the large-object mark (which the
 * loser used to put back after the winner had freed the page: kfree would
 * then take the page's next user's memory for a large object).
 */
struct large_duel {
	struct dmm_mem *mem;
	struct tu_spin_barrier bar;
	unsigned rounds;
	void *obj;
	int rc1;
};

static void *large_duel_thread(void *arg)
{
	struct large_duel *d = arg;

	for (unsigned i = 0; i < d->rounds; i++) {
		tu_spin_wait(&d->bar); /* the object is there */
		d->rc1 = dmm_kfree(d->mem, __atomic_load_n(&d->obj, __ATOMIC_RELAXED));
		tu_spin_wait(&d->bar); /* both frees done */
	}
	return NULL;
}

static void test_free_large_race(void **state)
{
	struct tu_env *e = slab_env(DMM_KMALLOC_PACKED);
	struct large_duel d = { .mem = e->mem, .rounds = 2000 };
	uint64_t free0;
	pthread_t t;
	int failed = 0;
	(void)state;

	dmm_page_drain_pcp(e->mem);
	free0 = tu_zone_free_all(e->mem);
	assert_int_equal(pthread_create(&t, NULL, large_duel_thread, &d), 0);
	for (unsigned i = 0; i < d.rounds; i++) {
		int rc0, rc1;
		void *obj = NULL;
		if (!failed)
			assert_ok(dmm_kmalloc(e->mem, (i & 1) ? 3 * DMM_PAGE_SIZE : 16 * 1024, 0, &obj));
		__atomic_store_n(&d.obj, obj, __ATOMIC_RELAXED);
		tu_spin_wait(&d.bar);
		rc0 = failed ? 0 : dmm_kfree(e->mem, obj);
		tu_spin_wait(&d.bar);
		rc1 = d.rc1;
		if (failed)
			continue;
		if ((rc0 == 0) == (rc1 == 0) || (rc0 ? rc0 : rc1) != -DMM_ENOENT || dmm_page_alloc_check(e->mem)) {
			failed = 1; /* let the thread finish its rounds first */
			print_error("round %u: frees returned %s and %s\n", i, dmm_errname(rc0), dmm_errname(rc1));
		}
	}
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_false(failed);
	dmm_page_drain_pcp(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), free0);
	assert_slab_checks(e->mem);
	tu_env_destroy(e);
}

/* Without the slab map kfree finds a page's cache through its descriptor:
 * a sparse physical map (more than twice as many pages as RAM) and no
 * linear map at all. A linear map that does not start at a multiple of the
 * largest slab has a map from the multiple below. The map, where there is
 * one, marks exactly the live slabs' pages (checked). */
static void test_slab_map(void **state)
{
	struct dmm_mem_info mi;
	(void)state;
	{
		struct tu_env *e = slab_env(DMM_KMALLOC_PACKED);
		assert_int_equal(e->info.slab_map_bytes, 256 * MiB / DMM_PAGE_SIZE);
		slab_round_trip(e->mem);
		tu_env_destroy(e);
	}
	{
		struct dmm_machine m;
		struct tu_env *e;
		tu_machine_holes(&m); /* 64 MiB of RAM over 4 GiB */
		m.kmalloc_policy = DMM_KMALLOC_PACKED;
		e = tu_env_create(&m, 2);
		assert_int_equal(e->info.slab_map_bytes, 0);
		slab_round_trip(e->mem);
		tu_env_destroy(e);
	}
	{
		struct dmm_machine m;
		struct tu_env *e;
		tu_machine(&m, "test-slab-16k");
		tu_add_ram(&m, 16 * KiB, 64 * MiB); /* the linear map starts there: not 32 KiB aligned */
		m.kmalloc_policy = DMM_KMALLOC_PACKED;
		e = tu_env_create(&m, 2);
		/* the map starts at 0, the largest slab's alignment below */
		assert_int_equal(e->info.slab_map_bytes, (16 * KiB + 64 * MiB) / DMM_PAGE_SIZE);
		slab_round_trip(e->mem);
		tu_env_destroy(e);
	}
	{
		struct dmm_machine m;
		struct dmm_hosted *h;
		struct dmm_platform p;
		struct dmm_mem *mem = NULL;
		tu_hosted_platform(&m, "no-linear", 2, &h, &p);
		p.linear_size = 0;
		assert_ok(dmm_mem_create(&m, &p, &mem));
		dmm_mem_get_info(mem, &mi);
		assert_int_equal(mi.slab_map_bytes, 0);
		slab_round_trip(mem);
		dmm_mem_destroy(mem);
		dmm_hosted_destroy(h);
	}
}

/* A slab given back to the page allocator leaves the map: a stale pointer
 * into it is refused (it is no small object any more), not taken into a
 * magazine. */
static void test_slab_map_cleared(void **state)
{
	struct tu_env *e = slab_env(DMM_KMALLOC_PACKED);
	enum { N = 64 * 16 }; /* 16 slabs of 64-byte objects */
	static void *obj[N];
	struct dmm_slab_class_info ci;
	unsigned stale = 0;
	(void)state;

	for (unsigned i = 0; i < N; i++)
		assert_ok(dmm_kmalloc(e->mem, 64, 0, &obj[i]));
	for (unsigned i = 0; i < N; i++)
		assert_ok(dmm_kfree(e->mem, obj[i]));
	assert_ok(dmm_slab_check(e->mem));
	for (unsigned i = 0; i < N; i++) {
		if (dmm_ksize(e->mem, obj[i]))
			continue; /* its slab is still there */
		stale++;
		assert_rc(dmm_kfree(e->mem, obj[i]), -DMM_ENOENT);
	}
	/* most slabs went back (a spare and the slabs of the objects the
	 * magazine and the depot hold, 301 of them, stay) */
	assert_true(stale >= 64 * 8);
	assert_ok(dmm_slab_class_info(e->mem, 0, 3, &ci));
	assert_int_equal(ci.size, 64);
	assert_int_equal(ci.allocs, N);
	assert_int_equal(ci.frees, N);
	assert_ok(dmm_slab_check(e->mem));
	assert_checks(e->mem);
	tu_env_destroy(e);
}

/* A linear map that starts above RAM (here at 16 KiB of RAM from 0): the
 * pages below it are mapped elsewhere (the platform's hooks, here a second
 * mapping of the same RAM), and the CPU addresses just below the linear
 * map are no RAM of theirs (the hooks refuse them). A slab on such a page
 * is freed through its own addresses; the addresses where the linear map
 * would have put it are no objects, and kfree refuses them. */
static const struct dmm_platform *low_real;
static unsigned char *low_alias; /* pages [0, 16 KiB) mapped again */

static void *low_phys_to_virt(void *ctx, dmm_phys_t pa)
{
	if (pa < 16 * KiB)
		return low_alias + pa;
	return low_real->phys_to_virt(ctx, pa);
}

static int low_virt_to_phys(void *ctx, const void *va, dmm_phys_t *pa)
{
	const unsigned char *p = va;

	if (p >= low_real->linear_virt && p < low_real->linear_virt + 16 * KiB)
		return -DMM_ERANGE; /* (the hosted RAM's own view of those pages: unused) */
	return low_real->virt_to_phys(ctx, va, pa);
}

static void test_slab_below_linear_map(void **state)
{
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_platform p;
	struct dmm_mem *mem = NULL;
	struct dmm_mem_info mi;
	const dmm_phys_t pages[4] = { 0, 4 * KiB, 8 * KiB, 12 * KiB };
	void *obj, *again = NULL;
	dmm_phys_t pa;
	(void)state;

	tu_hosted_platform(&m, "slab-below-linear", 2, &h, &p);
	m.dma_limit = 2 * MiB;
	m.kmalloc_policy = DMM_KMALLOC_PACKED;
	tu_add_reserved(&m, 16 * KiB, 2 * MiB - 16 * KiB); /* the DMA zone: pages 0-3 */
	if (!p.vmap) {
		dmm_hosted_destroy(h);
		skip();
	}
	low_real = dmm_hosted_platform(h);
	assert_ok(p.vmap(p.ctx, pages, 4, DMM_MEMATTR_WB, (void **)&low_alias));
	p.phys_to_virt = low_phys_to_virt;
	p.virt_to_phys = low_virt_to_phys;
	p.linear_virt += 16 * KiB;
	p.linear_phys += 16 * KiB;
	p.linear_size -= 16 * KiB;
	assert_ok(dmm_mem_create(&m, &p, &mem));
	dmm_mem_get_info(mem, &mi);
	assert_true(mi.slab_map_bytes > 0);

	assert_ok(dmm_kmalloc(mem, 64, DMM_GFP_DMA | DMM_GFP_ATOMIC, &obj));
	assert_ok(low_virt_to_phys(p.ctx, obj, &pa));
	assert_true(pa < 16 * KiB);
	assert_ptr_equal(obj, low_alias + pa);
	/* where the linear map would have it: not an object */
	assert_rc(dmm_kfree(mem, low_real->linear_virt + pa), -DMM_EINVAL);
	assert_ok(dmm_slab_check(mem));
	assert_ok(dmm_kfree(mem, obj));
	assert_ok(dmm_kmalloc(mem, 64, DMM_GFP_DMA | DMM_GFP_ATOMIC, &again));
	assert_ptr_equal(again, obj);
	assert_ok(dmm_kfree(mem, again));
	assert_ok(dmm_slab_check(mem));
	assert_checks(mem);
	dmm_mem_destroy(mem);
	p.vunmap(p.ctx, low_alias, 4);
	dmm_hosted_destroy(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_policies_and_classes),
		cmocka_unit_test(test_low_memory_and_large),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_check_held_objects),
		cmocka_unit_test(test_check_held_misaligned),
		cmocka_unit_test(test_check_held_live),
		cmocka_unit_test(test_check_slab_lists),
		cmocka_unit_test(test_double_free_refilled),
		cmocka_unit_test(test_magazine_capacity),
		cmocka_unit_test(test_depot_burst),
		cmocka_unit_test(test_two_threads),
		cmocka_unit_test(test_more_threads_than_cpus),
		cmocka_unit_test(test_short_lived_threads),
		cmocka_unit_test(test_no_address_translation),
		cmocka_unit_test(test_free_inside_objects),
		cmocka_unit_test(test_free_pinned_large),
		cmocka_unit_test(test_slab_release_pinned),
		cmocka_unit_test(test_slab_shrink),
		cmocka_unit_test(test_shrink_spares_fresh_slab),
		cmocka_unit_test(test_counts_new_slab),
		cmocka_unit_test(test_shrink_concurrent_kmalloc),
		cmocka_unit_test(test_depot_threads),
		cmocka_unit_test(test_free_large_race),
		cmocka_unit_test(test_slab_map),
		cmocka_unit_test(test_slab_map_cleared),
		cmocka_unit_test(test_slab_below_linear_map),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

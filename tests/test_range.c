/* SPDX-License-Identifier: MIT */
/*
 * Range allocator: every constraint field alone and combined, errors that
 * change nothing, watermarks, and a brute-force oracle under heavy
 * fragmentation (a range is found iff one exists among the free pages).
 */
#include <pthread.h>

#include "tu.h"

struct live {
	dmm_pfn_t pfn;
	uint64_t nr;
	int is_range;  /* else a buddy block of order log2(nr) */
	uint64_t salt;
};

static uint64_t total_free(struct dmm_mem *mem)
{
	return tu_zone_free_all(mem);
}

static void range_stats(struct dmm_mem *mem, uint64_t *ok, uint64_t *fr, uint64_t *pages)
{
	*ok = *fr = *pages = 0;
	for (unsigned z = 0; z < dmm_mem_nr_zones(mem); z++) {
		struct dmm_zone_info zi;
		assert_ok(dmm_zone_get_info(mem, z, &zi));
		*ok += zi.stats.range_ok;
		*fr += zi.stats.range_free;
		*pages += zi.stats.range_pages;
	}
}

/* Allocate a range and check the result against @c, the page states and
 * the ownership map; returns the rc. */
static int range_checked(struct tu_env *e, const struct dmm_constraint *c, uint64_t nr,
			 unsigned flags, dmm_pfn_t *out)
{
	uint64_t before = total_free(e->mem);
	dmm_pfn_t pfn = 0;
	int rc = dmm_alloc_range(e->mem, c, nr, flags, &pfn);
	assert_checks(e->mem);
	if (rc) {
		assert_true(rc == -DMM_ENOMEM || rc == -DMM_EWMARK || rc == -DMM_ERANGE);
		assert_int_equal(total_free(e->mem), before);
		return rc;
	}
	if (!dmm_constraint_ok(c, dmm_pfn_to_phys(pfn), nr << DMM_PAGE_SHIFT)) {
		print_error("range %#llx+%llu violates [%#llx,%#llx) align %#llx boundary %#llx\n",
			    (unsigned long long)pfn, (unsigned long long)nr, (unsigned long long)c->lo,
			    (unsigned long long)c->hi, (unsigned long long)c->align,
			    (unsigned long long)c->boundary);
		fail();
	}
	tu_own(e, pfn, nr);
	struct dmm_page *head = dmm_pfn_to_page(e->mem, pfn);
	assert_int_equal(head->state, DMM_PAGE_RANGE);
	assert_int_equal(head->private, nr);
	for (uint64_t i = 1; i < nr; i++) {
		struct dmm_page *pg = dmm_pfn_to_page(e->mem, pfn + i);
		assert_non_null(pg);
		assert_int_equal(pg->state, DMM_PAGE_TAIL);
		/* a range never straddles a zone */
		assert_int_equal(pg->zone, head->zone);
	}
	assert_int_equal(total_free(e->mem), before - nr);
	if (flags & DMM_GFP_ZERO)
		assert_true(tu_is_zero(e->mem, pfn, nr));
	*out = pfn;
	return 0;
}

static void range_free_checked(struct tu_env *e, dmm_pfn_t pfn, uint64_t nr)
{
	uint64_t before = total_free(e->mem);
	assert_ok(dmm_free_range(e->mem, pfn, nr));
	assert_checks(e->mem);
	assert_int_equal(total_free(e->mem), before + nr);
	tu_disown(e, pfn, nr);
}

static void all_back(struct tu_env *e)
{
	dmm_page_drain_pcp(e->mem);
	assert_checks(e->mem);
	assert_int_equal(total_free(e->mem), e->free0);
	for (uint64_t i = 0; i < e->npfn; i++)
		assert_int_equal(e->owned[i], 0);
}

static void test_range_fields(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct {
		struct dmm_constraint c;
		uint64_t nr;
		unsigned flags;
	} cases[] = {
		/* unaligned window ends: only whole pages inside count */
		{ { 30 * MiB + 1, 30 * MiB + 3 * 4096 + 5, 0, 0, 0, 0 }, 2, 0 },
		/* combined, in Normal (before anything else can break its 2 MiB blocks) */
		{ { 4 * GiB, 4 * GiB + 8 * MiB, 2 * MiB, 4 * MiB, 0, 0 }, 512, DMM_GFP_ZERO },
		/* each field alone */
		{ { 20 * MiB, DMM_PHYS_MAX, 0, 0, 0, 0 }, 5, 0 },               /* lo */
		{ { 4 * GiB + 1 * MiB, DMM_PHYS_MAX, 0, 0, 0, 0 }, 300, 0 },    /* lo in Normal */
		{ { 0, 3 * MiB, 0, 0, 0, 0 }, 9, 0 },                           /* hi */
		{ { 0, 0x9f000, 0, 0, 0, 0 }, 100, 0 },                         /* hi, low RAM */
		{ { 0, DMM_PHYS_MAX, 64 * KiB, 0, 0, 0 }, 3, 0 },               /* align */
		{ { 0, DMM_PHYS_MAX, 1 * MiB, 0, 0, 0 }, 1, 0 },
		{ { 0, DMM_PHYS_MAX, 4 * MiB, 0, 0, 0 }, 17, 0 },
		{ { 0, DMM_PHYS_MAX, 64, 0, 0, 0 }, 2, 0 },                     /* sub-page align */
		{ { 0, DMM_PHYS_MAX, 0, 64 * KiB, 0, 0 }, 16, 0 },              /* boundary = size */
		{ { 0, DMM_PHYS_MAX, 0, 64 * KiB, 0, 0 }, 10, 0 },
		{ { 0, DMM_PHYS_MAX, 0, 2 * MiB, 0, 0 }, 511, 0 },
		/* combined */
		{ { 17 * MiB, 30 * MiB, 32 * KiB, 256 * KiB, 0, 0 }, 33, 0 },
		{ { 1 * MiB, 16 * MiB, 1 * MiB, 1 * MiB, 0, 0 }, 256, 0 },      /* a 1 MiB ISA buffer */
		{ { 4096, 1 * MiB, 8 * KiB, 64 * KiB, 0, 0 }, 7, DMM_GFP_ZERO },
		{ { 0, 4 * GiB, 0, 0, 0, 0 }, 1000, DMM_GFP_MOVABLE | DMM_GFP_ATOMIC },
	};
	dmm_pfn_t got[sizeof(cases) / sizeof(cases[0])];
	uint64_t ok0, fr0, pg0, ok1, fr1, pg1, pages = 0;
	(void)state;
	tu_machine_holes(&m);
	e = tu_env_create(&m, 1);
	range_stats(e->mem, &ok0, &fr0, &pg0);

	/* a range never straddles a zone: 1.5 MiB across the 16 MiB line fails */
	{
		struct dmm_constraint c = { 15 * MiB, 17 * MiB, 0, 0, 0, 0 };
		dmm_pfn_t p;
		assert_rc(range_checked(e, &c, 384, DMM_GFP_NOWMARK, &p), -DMM_ENOMEM);
		assert_ok(range_checked(e, &c, 256, DMM_GFP_NOWMARK, &p));
		range_free_checked(e, p, 256);
	}
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (range_checked(e, &cases[i].c, cases[i].nr, cases[i].flags, &got[i])) {
			print_error("case %zu failed\n", i);
			fail();
		}
		tu_fill(e->mem, got[i], cases[i].nr, i, 1);
		pages += cases[i].nr;
	}
	/* the unaligned window has exactly one fit */
	assert_int_equal(got[0], ((30 * MiB) >> DMM_PAGE_SHIFT) + 1);
	range_stats(e->mem, &ok1, &fr1, &pg1);
	assert_int_equal(ok1 - ok0, sizeof(cases) / sizeof(cases[0]) + 1);
	assert_int_equal(pg1 - pg0, pages + 256);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		tu_verify(e->mem, got[i], cases[i].nr, i, 1);
		range_free_checked(e, got[i], cases[i].nr);
	}
	range_stats(e->mem, &ok1, &fr1, &pg1);
	assert_int_equal(fr1 - fr0, sizeof(cases) / sizeof(cases[0]) + 1);
	assert_int_equal(ok1 - ok0, sizeof(cases) / sizeof(cases[0]) + 1);
	all_back(e);
	tu_env_destroy(e);
}

static void test_range_errors(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct dmm_constraint c = DMM_CONSTRAINT_ANY;
	dmm_pfn_t r, p;
	uint64_t f;
	(void)state;
	tu_machine_holes(&m);
	e = tu_env_create(&m, 1);
	assert_ok(range_checked(e, &c, 7, 0, &r));
	assert_ok(dmm_page_alloc(e->mem, 3, NULL, 0, &p));
	tu_own(e, p, 8);
	f = total_free(e->mem);

#define UNCHANGED()                                           \
	do {                                                  \
		assert_int_equal(total_free(e->mem), f);      \
		assert_checks(e->mem);                        \
	} while (0)

	/* invalid arguments */
	assert_rc(dmm_alloc_range(e->mem, &c, 0, 0, &p), -DMM_EINVAL);
	UNCHANGED();
	c = (struct dmm_constraint){ 8 * MiB, 4 * MiB, 0, 0, 0, 0 };
	assert_rc(dmm_alloc_range(e->mem, &c, 1, 0, &p), -DMM_EINVAL);
	c = (struct dmm_constraint){ 0, DMM_PHYS_MAX, 12288, 0, 0, 0 };
	assert_rc(dmm_alloc_range(e->mem, &c, 1, 0, &p), -DMM_EINVAL);
	c = (struct dmm_constraint){ 0, DMM_PHYS_MAX, 0, 12288, 0, 0 };
	assert_rc(dmm_alloc_range(e->mem, &c, 1, 0, &p), -DMM_EINVAL);
	UNCHANGED();
	/* boundary smaller than the request */
	c = (struct dmm_constraint){ 0, DMM_PHYS_MAX, 0, 64 * KiB, 0, 0 };
	assert_rc(dmm_alloc_range(e->mem, &c, 17, 0, &p), -DMM_EINVAL);
	c = (struct dmm_constraint){ 0, DMM_PHYS_MAX, 0, 4096, 0, 0 };
	assert_rc(dmm_alloc_range(e->mem, &c, 2, 0, &p), -DMM_EINVAL);
	UNCHANGED();
	c = DMM_CONSTRAINT_ANY;
	assert_rc(dmm_alloc_range(e->mem, &c, 1, DMM_GFP_ALL + 1, &p), -DMM_EINVAL);
	assert_rc(dmm_alloc_range(e->mem, &c, 1, 0, NULL), -DMM_EINVAL);
	assert_rc(dmm_alloc_range(e->mem, NULL, 1, 0, &p), -DMM_EINVAL);
	UNCHANGED();
	/* no RAM in the window */
	c = (struct dmm_constraint){ 0xa0000, 0x100000, 0, 0, 0, 0 };
	assert_rc(dmm_alloc_range(e->mem, &c, 1, 0, &p), -DMM_ERANGE);
	c = (struct dmm_constraint){ 64 * MiB, 4 * GiB, 0, 0, 0, 0 };
	assert_rc(dmm_alloc_range(e->mem, &c, 1, 0, &p), -DMM_ERANGE);
	c = (struct dmm_constraint){ 8 * GiB, DMM_PHYS_MAX, 0, 0, 0, 0 };
	assert_rc(dmm_alloc_range(e->mem, &c, 1, 0, &p), -DMM_ERANGE);
	UNCHANGED();
	/* impossible: larger than any zone, larger than the window, alignment
	 * leaves no room */
	c = DMM_CONSTRAINT_ANY;
	assert_rc(dmm_alloc_range(e->mem, &c, 32 * MiB / 4096, DMM_GFP_NOWMARK, &p), -DMM_ENOMEM);
	assert_rc(dmm_alloc_range(e->mem, &c, (size_t)1 << 40, DMM_GFP_NOWMARK, &p), -DMM_ENOMEM);
	c = (struct dmm_constraint){ 16 * MiB, 20 * MiB, 0, 0, 0, 0 };
	assert_rc(dmm_alloc_range(e->mem, &c, 1025, DMM_GFP_NOWMARK, &p), -DMM_ENOMEM);
	c = (struct dmm_constraint){ 17 * MiB, 20 * MiB, 4 * MiB, 0, 0, 0 };
	assert_rc(dmm_alloc_range(e->mem, &c, 1, DMM_GFP_NOWMARK, &p), -DMM_ENOMEM);
	c = (struct dmm_constraint){ 0, 1 * MiB, 0, 0, 0, 0 }; /* 158 pages of low RAM */
	assert_rc(dmm_alloc_range(e->mem, &c, 159, DMM_GFP_NOWMARK, &p), -DMM_ENOMEM);
	UNCHANGED();

	/* bad frees */
	assert_rc(dmm_free_range(e->mem, r, 6), -DMM_EINVAL);
	assert_rc(dmm_free_range(e->mem, r, 8), -DMM_EINVAL);
	assert_rc(dmm_free_range(e->mem, r, 0), -DMM_EINVAL);
	assert_rc(dmm_free_range(e->mem, r + 1, 6), -DMM_ENOENT);  /* tail */
	assert_rc(dmm_free_range(e->mem, p, 8), -DMM_ENOENT);      /* a buddy block */
	assert_rc(dmm_free_range(e->mem, 0, 1), -DMM_ENOENT);      /* hole */
	assert_rc(dmm_free_range(e->mem, (2 * MiB) >> 12, 1), -DMM_ENOENT); /* reserved */
	assert_rc(dmm_free_range(e->mem, UINT64_MAX, 1), -DMM_ENOENT);
	{
		dmm_pfn_t never = (30 * MiB) >> 12;
		assert_false(e->owned[never - e->base]);
		assert_rc(dmm_free_range(e->mem, never, 1), -DMM_ENOENT);
	}
	UNCHANGED();
	range_free_checked(e, r, 7);
	f = total_free(e->mem);
	assert_rc(dmm_free_range(e->mem, r, 7), -DMM_ENOENT); /* double free */
	UNCHANGED();
	assert_ok(dmm_page_free(e->mem, p, 3));
	tu_disown(e, p, 8);
#undef UNCHANGED
	all_back(e);
	tu_env_destroy(e);
}

static void test_range_watermarks(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	static dmm_pfn_t pages[10000];
	size_t n = 0;
	dmm_pfn_t p, q, a;
	struct dmm_constraint any = DMM_CONSTRAINT_ANY;
	(void)state;
	tu_machine(&m, "normal32");
	tu_add_ram(&m, 4 * GiB, 32 * MiB);
	m.min_free_kbytes = 1024;
	e = tu_env_create(&m, 1);
	/* ordinary ranges stop at the watermark */
	for (;;) {
		int rc = dmm_alloc_range(e->mem, &any, 1, 0, &pages[n]);
		if (rc) {
			assert_rc(rc, -DMM_EWMARK);
			break;
		}
		tu_own(e, pages[n], 1);
		n++;
	}
	assert_checks(e->mem);
	assert_true(n + 128 < e->free0 && n + 1024 > e->free0);
	/* atomic may dip below, NOWMARK takes the rest */
	assert_ok(range_checked(e, &any, 1, DMM_GFP_ATOMIC, &a));
	assert_ok(range_checked(e, &any, 64, DMM_GFP_NOWMARK, &q));
	for (;;) {
		int rc = dmm_alloc_range(e->mem, &any, 1, DMM_GFP_NOWMARK, &p);
		if (rc) {
			assert_rc(rc, -DMM_ENOMEM);
			break;
		}
		assert_true(n < 10000);
		tu_own(e, p, 1);
		pages[n++] = p;
	}
	assert_int_equal(total_free(e->mem), 0);
	assert_int_equal(n + 65, e->free0);
	for (size_t i = 0; i < n; i++)
		range_free_checked(e, pages[i], 1);
	range_free_checked(e, a, 1);
	range_free_checked(e, q, 64);
	all_back(e);
	tu_env_destroy(e);
}

/* ---- brute-force oracle ------------------------------------------------------ */

struct oracle {
	struct tu_env *e;
	uint8_t *freemap;        /* 1 = page free (not owned, managed) */
	uint32_t *run;           /* free run length starting at pfn, within the zone */
	dmm_pfn_t zone_start[DMM_NR_ZONE_TYPES], zone_end[DMM_NR_ZONE_TYPES];
	unsigned nr_zones;
};

/* Whole-page pfn span of RAM region @i. */
static void region_pfns(const struct dmm_machine *m, unsigned i, dmm_pfn_t *s, dmm_pfn_t *en)
{
	*s = (m->ram[i].base + DMM_PAGE_SIZE - 1) >> DMM_PAGE_SHIFT;
	*en = (m->ram[i].base + m->ram[i].size) >> DMM_PAGE_SHIFT;
}

static void oracle_refresh(struct oracle *o)
{
	struct tu_env *e = o->e;
	uint64_t nfree = 0;
	for (unsigned ri = 0; ri < e->m.nr_ram; ri++) {
		dmm_pfn_t s, en;
		uint32_t r = 0;
		region_pfns(&e->m, ri, &s, &en);
		for (dmm_pfn_t pfn = en; pfn-- > s;) {
			uint64_t i = pfn - e->base;
			struct dmm_page *pg = dmm_pfn_to_page(e->mem, pfn);
			o->freemap[i] = pg && pg->state != DMM_PAGE_RESERVED && !e->owned[i];
			nfree += o->freemap[i];
			for (unsigned z = 0; z < o->nr_zones; z++)
				if (pfn + 1 == o->zone_end[z])
					r = 0;
			r = o->freemap[i] ? r + 1 : 0;
			o->run[i] = r;
		}
	}
	/* the oracle's idea of free pages is the allocator's */
	assert_int_equal(nfree, total_free(e->mem));
}

/* Does a fit exist? Also counts managed pages in the window. */
static int oracle_exists(const struct oracle *o, const struct dmm_constraint *c, uint64_t nr,
			 uint64_t *managed_in_window)
{
	const struct tu_env *e = o->e;
	uint64_t ap = c->align > DMM_PAGE_SIZE ? c->align >> DMM_PAGE_SHIFT : 1;
	uint64_t bp = c->boundary ? c->boundary >> DMM_PAGE_SHIFT : 0;
	dmm_pfn_t lo = (c->lo + DMM_PAGE_SIZE - 1) >> DMM_PAGE_SHIFT;
	dmm_pfn_t hi = c->hi == DMM_PHYS_MAX ? UINT64_MAX : c->hi >> DMM_PAGE_SHIFT;
	int found = 0;
	*managed_in_window = 0;
	for (unsigned ri = 0; ri < e->m.nr_ram; ri++) {
		dmm_pfn_t s, en;
		region_pfns(&e->m, ri, &s, &en);
		if (s < lo)
			s = lo;
		if (en > hi)
			en = hi;
		for (dmm_pfn_t pfn = s; pfn < en; pfn++) {
			struct dmm_page *pg = dmm_pfn_to_page(o->e->mem, pfn);
			if (pg && pg->state != DMM_PAGE_RESERVED)
				(*managed_in_window)++;
			if (found || pfn % ap || pfn + nr > hi)
				continue;
			if (o->run[pfn - e->base] < nr)
				continue;
			if (bp && pfn / bp != (pfn + nr - 1) / bp)
				continue;
			found = 1;
		}
	}
	return found;
}

static void random_constraint(uint64_t *rs, const struct tu_env *e, struct dmm_constraint *c,
			      uint64_t *nr)
{
	static const uint64_t sizes[] = { 1, 1, 2, 3, 4, 5, 8, 13, 16, 31, 64, 100, 256, 512, 1000, 4096 };
	*nr = sizes[tu_rand_below(rs, sizeof(sizes) / sizeof(sizes[0]))];
	*c = DMM_CONSTRAINT_ANY;
	switch (tu_rand_below(rs, 4)) {
	case 0: /* anywhere */
		break;
	case 1: /* below a limit */
		c->hi = (tu_rand_below(rs, 48) + 1) * MiB;
		break;
	case 2: { /* a window around a random page of RAM */
		unsigned ri = (unsigned)tu_rand_below(rs, e->m.nr_ram);
		dmm_pfn_t pfn = (e->m.ram[ri].base + tu_rand_below(rs, e->m.ram[ri].size)) >> DMM_PAGE_SHIFT;
		uint64_t span = (tu_rand_below(rs, 4096) + 1) * DMM_PAGE_SIZE;
		c->lo = dmm_pfn_to_phys(pfn) > span / 2 ? dmm_pfn_to_phys(pfn) - span / 2 : 0;
		c->hi = c->lo + span;
		break;
	}
	default: /* a window in Normal */
		c->lo = 4 * GiB + tu_rand_below(rs, 16) * MiB;
		c->hi = c->lo + (tu_rand_below(rs, 8) + 1) * MiB;
		break;
	}
	if (tu_rand_below(rs, 3) == 0)
		c->align = DMM_PAGE_SIZE << tu_rand_below(rs, 10);
	if (tu_rand_below(rs, 3) == 0) {
		uint64_t b = 1;
		while (b < *nr)
			b <<= 1;
		c->boundary = (b << tu_rand_below(rs, 3)) * DMM_PAGE_SIZE;
	}
	if (tu_rand_below(rs, 8) == 0) { /* ragged window ends */
		c->lo += tu_rand_below(rs, 4096);
		if (c->hi != DMM_PHYS_MAX)
			c->hi += tu_rand_below(rs, 4096);
	}
}

static void test_range_fragmented(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	static struct live lv[40000];
	size_t nl = 0;
	uint64_t rs = 0x1234567;
	struct oracle o;
	unsigned found = 0, notfound = 0;
	(void)state;
	tu_machine_holes(&m);
	e = tu_env_create(&m, 1);
	o.e = e;
	o.freemap = calloc(e->npfn, 1);
	o.run = calloc(e->npfn, sizeof(uint32_t));
	o.nr_zones = dmm_mem_nr_zones(e->mem);
	for (unsigned z = 0; z < o.nr_zones; z++) {
		struct dmm_zone_info zi;
		assert_ok(dmm_zone_get_info(e->mem, z, &zi));
		o.zone_start[z] = zi.start_pfn;
		o.zone_end[z] = zi.end_pfn;
	}

	/* take everything in blocks of 1..4 pages */
	for (int order = 2; order >= 0; order--) {
		for (;;) {
			dmm_pfn_t pfn;
			unsigned o2 = (unsigned)tu_rand_below(&rs, (uint64_t)order + 1);
			int rc = dmm_page_alloc(e->mem, o2, NULL,
						DMM_GFP_NOWMARK | (tu_rand(&rs) & 1 ? DMM_GFP_MOVABLE : 0), &pfn);
			if (rc) {
				assert_rc(rc, -DMM_ENOMEM);
				if (o2 == 0)
					break;
				continue;
			}
			tu_own(e, pfn, 1ull << o2);
			assert_true(nl < 40000);
			lv[nl++] = (struct live){ pfn, 1ull << o2, 0, 0 };
		}
	}
	assert_checks(e->mem);
	assert_int_equal(total_free(e->mem), 0);
	/* free a random half */
	for (size_t i = 0; i < nl;) {
		if (tu_rand(&rs) & 1) {
			unsigned ord = (unsigned)__builtin_ctzll(lv[i].nr);
			assert_ok(dmm_page_free(e->mem, lv[i].pfn, ord));
			tu_disown(e, lv[i].pfn, lv[i].nr);
			lv[i] = lv[--nl];
		} else {
			i++;
		}
	}
	dmm_page_drain_pcp(e->mem);
	assert_checks(e->mem);

	for (int step = 0; step < 3000; step++) {
		uint64_t op = tu_rand_below(&rs, 10);
		if (op < 6) {
			struct dmm_constraint c;
			uint64_t nr, managed;
			dmm_pfn_t pfn;
			random_constraint(&rs, e, &c, &nr);
			oracle_refresh(&o);
			int exists = oracle_exists(&o, &c, nr, &managed);
			int rc = range_checked(e, &c, nr, DMM_GFP_NOWMARK, &pfn);
			if (exists != (rc == 0)) {
				print_error("step %d: [%#llx,%#llx) align %#llx boundary %#llx nr %llu: "
					    "oracle %s, allocator %s\n",
					    step, (unsigned long long)c.lo, (unsigned long long)c.hi,
					    (unsigned long long)c.align, (unsigned long long)c.boundary,
					    (unsigned long long)nr, exists ? "fits" : "no fit",
					    dmm_errname(rc));
				fail();
			}
			if (rc == 0) {
				found++;
				/* the pages it took were free in the oracle */
				for (uint64_t i = 0; i < nr; i++)
					assert_true(o.freemap[pfn + i - e->base]);
				assert_true(nl < 40000);
				lv[nl] = (struct live){ pfn, nr, 1, tu_rand(&rs) };
				tu_fill(e->mem, pfn, nr, lv[nl].salt, 0);
				nl++;
			} else {
				notfound++;
				if (managed)
					assert_rc(rc, -DMM_ENOMEM);
				else
					assert_true(rc == -DMM_ERANGE || rc == -DMM_ENOMEM);
			}
		} else if (op < 7) {
			/* a buddy allocation in the middle: never a page a range holds */
			dmm_pfn_t pfn;
			unsigned ord = (unsigned)tu_rand_below(&rs, 4);
			if (dmm_page_alloc(e->mem, ord, NULL, DMM_GFP_NOWMARK, &pfn) == 0) {
				tu_own(e, pfn, 1ull << ord);
				assert_true(nl < 40000);
				lv[nl++] = (struct live){ pfn, 1ull << ord, 0, 0 };
			}
			assert_checks(e->mem);
		} else if (nl) {
			size_t i = (size_t)tu_rand_below(&rs, nl);
			if (lv[i].is_range) {
				tu_verify(e->mem, lv[i].pfn, lv[i].nr, lv[i].salt, 0);
				range_free_checked(e, lv[i].pfn, lv[i].nr);
			} else {
				assert_ok(dmm_page_free(e->mem, lv[i].pfn,
							(unsigned)__builtin_ctzll(lv[i].nr)));
				tu_disown(e, lv[i].pfn, lv[i].nr);
				assert_checks(e->mem);
			}
			lv[i] = lv[--nl];
			/* half the time leave freed pages in the per-CPU cache: the
			 * range allocator must drain it before giving up */
			if (tu_rand(&rs) & 1)
				dmm_page_drain_pcp(e->mem);
		}
	}
	/* the oracle was exercised both ways */
	assert_true(found > 200);
	assert_true(notfound > 200);
	for (size_t i = 0; i < nl; i++) {
		if (lv[i].is_range) {
			tu_verify(e->mem, lv[i].pfn, lv[i].nr, lv[i].salt, 0);
			range_free_checked(e, lv[i].pfn, lv[i].nr);
		} else {
			assert_ok(dmm_page_free(e->mem, lv[i].pfn, (unsigned)__builtin_ctzll(lv[i].nr)));
			tu_disown(e, lv[i].pfn, lv[i].nr);
		}
	}
	all_back(e);
	free(o.freemap);
	free(o.run);
	tu_env_destroy(e);
}

/*
 * A range spanning pageblocks of different migratetypes, freed: the pages
 * merge back into the buddy lists and every free block must sit on the
 * list of its pageblocks' type (dmm_page_alloc_check's invariant).
 */
static void test_range_free_mixed_pageblocks(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	dmm_pfn_t pfn, r, got;
	dmm_pfn_t pb = UINT64_MAX;
	(void)state;
	tu_machine(&m, "flat64");
	tu_add_ram(&m, 0, 64 * MiB);
	e = tu_env_create(&m, 1);
	/* fill memory with runs of unmovable, movable and reclaimable pages so
	 * that pageblocks of several types result, then free everything */
	{
		static dmm_pfn_t pages[20000];
		size_t n = 0;
		static const unsigned mts[] = { 0, DMM_GFP_MOVABLE, DMM_GFP_RECLAIMABLE };
		for (;;) {
			unsigned f = mts[(n / 700) % 3] | DMM_GFP_NOCACHE | DMM_GFP_NOWMARK;
			if (dmm_page_alloc(e->mem, 0, NULL, f, &pages[n]))
				break;
			n++;
			assert_true(n < 20000);
		}
		for (size_t i = 0; i < n; i++)
			assert_ok(dmm_page_free(e->mem, pages[i], 0));
		dmm_page_drain_pcp(e->mem);
		assert_checks(e->mem);
	}
	/* a max-order block whose two pageblocks have different types */
	for (dmm_pfn_t p = 0; p + 1024 <= e->info.max_pfn; p += 1024) {
		struct dmm_page *a0 = dmm_pfn_to_page(e->mem, p);
		struct dmm_page *a1 = dmm_pfn_to_page(e->mem, p + DMM_PAGEBLOCK_PAGES);
		int all_free = 1;
		for (dmm_pfn_t q = p; q < p + 1024; q++)
			if (dmm_pfn_to_page(e->mem, q)->state == DMM_PAGE_RESERVED)
				all_free = 0;
		if (all_free && a0->pb_mt != a1->pb_mt) {
			pb = p;
			break;
		}
	}
	if (pb == UINT64_MAX) {
		print_message("no max-order block with mixed pageblock types: nothing to test\n");
		tu_env_destroy(e);
		skip();
	}
	r = pb;
	(void)pfn;
	/* take exactly that block as a range, then give it back */
	struct dmm_constraint c = { dmm_pfn_to_phys(r), dmm_pfn_to_phys(r + 1024), 0, 0, 0, 0 };
	assert_ok(range_checked(e, &c, 1024, DMM_GFP_NOWMARK, &got));
	assert_int_equal(got, r);
	range_free_checked(e, got, 1024);
	/* and a range straddling the two pageblocks only partly */
	c = (struct dmm_constraint){ dmm_pfn_to_phys(r + 100), dmm_pfn_to_phys(r + 1000), 0, 0, 0, 0 };
	assert_ok(range_checked(e, &c, 900, DMM_GFP_NOWMARK, &got));
	range_free_checked(e, got, 900);
	/* a max-order page allocation of exactly that block (a window that only
	 * partly covers the zone is served through the range index) */
	c = (struct dmm_constraint){ dmm_pfn_to_phys(r), dmm_pfn_to_phys(r + 1024), 0, 0, 0, 0 };
	assert_ok(dmm_page_alloc(e->mem, DMM_MAX_ORDER, &c, DMM_GFP_NOWMARK, &got));
	assert_int_equal(got, r);
	assert_checks(e->mem);
	assert_ok(dmm_page_free(e->mem, got, DMM_MAX_ORDER));
	assert_checks(e->mem);
	all_back(e);
	tu_env_destroy(e);
}

/* Extreme but valid constraints: huge alignment and boundary, windows at
 * the top of the address space, absurd sizes. */
static void test_range_extremes(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct dmm_constraint c;
	dmm_pfn_t p;
	int rc;
	(void)state;
	tu_machine_holes(&m);
	e = tu_env_create(&m, 1);
	/* only pfn 0 is aligned to 2^62, and it is a hole */
	c = (struct dmm_constraint){ 0, DMM_PHYS_MAX, 1ull << 62, 0, 0, 0 };
	assert_rc(range_checked(e, &c, 1, DMM_GFP_NOWMARK, &p), -DMM_ENOMEM);
	assert_rc(dmm_page_alloc(e->mem, 0, &c, DMM_GFP_NOWMARK, &p), -DMM_ENOMEM);
	c.align = 1ull << 63;
	assert_rc(range_checked(e, &c, 1, DMM_GFP_NOWMARK, &p), -DMM_ENOMEM);
	/* a 2^63 boundary is no restriction at all */
	c = (struct dmm_constraint){ 0, DMM_PHYS_MAX, 0, 1ull << 63, 0, 0 };
	assert_ok(range_checked(e, &c, 100, 0, &p));
	range_free_checked(e, p, 100);
	assert_ok(dmm_page_alloc(e->mem, 3, &c, 0, &p));
	assert_ok(dmm_page_free(e->mem, p, 3));
	/* windows at the very top of the address space */
	c = (struct dmm_constraint){ UINT64_MAX - 8192, UINT64_MAX, 0, 0, 0, 0 };
	assert_rc(dmm_alloc_range(e->mem, &c, 1, 0, &p), -DMM_ERANGE);
	assert_rc(dmm_page_alloc(e->mem, 0, &c, 0, &p), -DMM_ERANGE);
	c = (struct dmm_constraint){ 1ull << 52, DMM_PHYS_MAX, 0, 0, 0, 0 };
	assert_rc(dmm_alloc_range(e->mem, &c, 1, 0, &p), -DMM_ERANGE);
	/* a window of less than one page inside RAM holds no whole page */
	c = (struct dmm_constraint){ 20 * MiB + 1, 20 * MiB + 4097, 0, 0, 0, 0 };
	rc = dmm_alloc_range(e->mem, &c, 1, 0, &p);
	assert_true(rc == -DMM_ERANGE || rc == -DMM_ENOMEM);
	/* absurd sizes */
	c = DMM_CONSTRAINT_ANY;
	rc = dmm_alloc_range(e->mem, &c, SIZE_MAX, DMM_GFP_NOWMARK, &p);
	assert_true(rc == -DMM_EINVAL || rc == -DMM_ENOMEM);
	rc = dmm_alloc_range(e->mem, &c, SIZE_MAX / 2 + 1, DMM_GFP_NOWMARK, &p);
	assert_true(rc == -DMM_EINVAL || rc == -DMM_ENOMEM);
	assert_checks(e->mem);
	assert_int_equal(total_free(e->mem), e->free0);
	tu_env_destroy(e);
}

/* A pinned range is not freed (as a pinned buddy block is not): the free is
 * refused with -DMM_EBUSY, counted, and changes nothing. */
static void test_range_free_pinned_refused(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct dmm_constraint any = DMM_CONSTRAINT_ANY;
	struct dmm_zone_info zi0, zi1;
	dmm_pfn_t p, pinned;
	uint64_t before;
	unsigned zi;
	(void)state;
	tu_machine_holes(&m);
	e = tu_env_create(&m, 1);
	for (unsigned kind = 0; kind < 2; kind++) {
		unsigned pf = kind ? DMM_PIN_LONGTERM : 0;
		assert_ok(range_checked(e, &any, 5, 0, &p));
		zi = dmm_pfn_to_page(e->mem, p)->zone;
		assert_ok(dmm_page_pin(e->mem, p, pf, &pinned, NULL));
		assert_int_equal(pinned, p);
		before = total_free(e->mem);
		assert_ok(dmm_zone_get_info(e->mem, zi, &zi0));
		assert_rc(dmm_free_range(e->mem, p, 5), -DMM_EBUSY);
		assert_ok(dmm_zone_get_info(e->mem, zi, &zi1));
		assert_int_equal(zi1.stats.bad_free, zi0.stats.bad_free + 1);
		assert_int_equal(zi1.stats.range_free, zi0.stats.range_free);
		assert_int_equal(total_free(e->mem), before);
		assert_int_equal(dmm_pfn_to_page(e->mem, p)->state, DMM_PAGE_RANGE);
		assert_checks(e->mem);
		assert_ok(dmm_page_unpin(e->mem, p, pf));
		range_free_checked(e, p, 5);
	}
	assert_checks(e->mem);
	assert_int_equal(total_free(e->mem), e->free0);
	tu_env_destroy(e);
}

/* Free pages of a contiguous area are no use to the range allocator (its
 * index leaves them out), so they do not count towards the watermark
 * either: once ordinary pages are down to the watermark, a range request is
 * refused as a page request is. */
static void test_range_wmark_leaves_out_area_pages(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct dmm_constraint any = DMM_CONSTRAINT_ANY;
	static dmm_pfn_t held[16384];
	size_t n = 0;
	dmm_pfn_t p;
	int rc;
	(void)state;
	tu_machine(&m, "range-wmark-cma");
	tu_add_ram(&m, 0, 64 * MiB);
	m.nr_cma = 1;
	snprintf(m.cma[0].name, sizeof(m.cma[0].name), "area");
	m.cma[0].size = 48 * MiB;
	m.cma[0].is_default = 1;
	m.min_free_kbytes = 4096;
	e = tu_env_create(&m, 1);
	while ((rc = dmm_page_alloc(e->mem, 0, NULL, DMM_GFP_NOCACHE, &p)) == 0) {
		assert_true(n < sizeof(held) / sizeof(held[0]));
		held[n++] = p;
	}
	assert_rc(rc, -DMM_EWMARK);
	/* the area's free pages would lift the zone far above min */
	assert_rc(dmm_alloc_range(e->mem, &any, 1, 0, &p), -DMM_EWMARK);
	assert_rc(dmm_alloc_range(e->mem, &any, 16, 0, &p), -DMM_EWMARK);
	/* NOWMARK still reaches ordinary pages */
	assert_ok(dmm_alloc_range(e->mem, &any, 1, DMM_GFP_NOWMARK, &p));
	assert_ok(dmm_free_range(e->mem, p, 1));
	assert_checks(e->mem);
	for (size_t i = 0; i < n; i++)
		assert_ok(dmm_page_free(e->mem, held[i], 0));
	dmm_page_drain_pcp(e->mem);
	assert_checks(e->mem);
	assert_int_equal(total_free(e->mem), e->free0);
	tu_env_destroy(e);
}

/* Pages sitting in another CPU's cache are found by the range allocator
 * (it drains every cache before giving up). */
struct helper_arg {
	struct dmm_mem *mem;
	dmm_pfn_t first;
	unsigned n;
	int rc;
};

static void *free_on_other_cpu(void *p)
{
	struct helper_arg *a = p;
	dmm_pfn_t x;
	/* take this thread's CPU slot with a first allocation + free */
	a->rc = dmm_page_alloc(a->mem, 0, NULL, DMM_GFP_NOWMARK, &x);
	if (a->rc)
		return NULL;
	for (unsigned i = 0; i < a->n && !a->rc; i++)
		a->rc = dmm_page_free(a->mem, a->first + i, 0);
	if (!a->rc)
		a->rc = dmm_page_free(a->mem, x, 0);
	return NULL;
}

static void test_range_drains_other_cpus(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	static dmm_pfn_t pages[8192];
	size_t n = 0;
	dmm_pfn_t got;
	pthread_t th;
	struct helper_arg a;
	(void)state;
	tu_machine(&m, "flat16");
	tu_add_ram(&m, 0, 16 * MiB);
	e = tu_env_create(&m, 2);
	/* this thread takes everything, bypassing its own cache */
	while (dmm_page_alloc(e->mem, 0, NULL, DMM_GFP_NOWMARK | DMM_GFP_NOCACHE, &pages[n]) == 0) {
		n++;
		assert_true(n < 8192);
	}
	assert_int_equal(n, e->free0);
	/* keep one page back for the helper's first allocation */
	assert_ok(dmm_page_free(e->mem, pages[n - 1], 0));
	n--;
	dmm_page_drain_pcp(e->mem);
	/* a 32-page run, 32-aligned, goes back through the other CPU's cache */
	dmm_pfn_t first = 0;
	{
		/* pages[] is in allocation order; find 32 consecutive pfns */
		uint8_t *mine = calloc(e->npfn, 1);
		for (size_t i = 0; i < n; i++)
			mine[pages[i] - e->base] = 1;
		for (dmm_pfn_t p = 64; p + 32 < e->npfn; p += 32) {
			int all = 1;
			for (unsigned k = 0; k < 32; k++)
				all &= mine[p + k];
			if (all) {
				first = p + e->base;
				break;
			}
		}
		free(mine);
	}
	assert_true(first != 0);
	a = (struct helper_arg){ e->mem, first, 32, 0 };
	assert_int_equal(pthread_create(&th, NULL, free_on_other_cpu, &a), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_ok(a.rc);
	assert_checks(e->mem);
	/* 32 contiguous pages exist only among the freed ones */
	struct dmm_constraint c = DMM_CONSTRAINT_ANY;
	assert_ok(dmm_alloc_range(e->mem, &c, 32, DMM_GFP_NOWMARK, &got));
	assert_int_equal(got, first);
	assert_checks(e->mem);
	assert_ok(dmm_free_range(e->mem, got, 32));
	for (size_t i = 0; i < n; i++)
		if (pages[i] < first || pages[i] >= first + 32)
			assert_ok(dmm_page_free(e->mem, pages[i], 0));
	dmm_page_drain_pcp(e->mem);
	assert_checks(e->mem);
	assert_int_equal(total_free(e->mem), e->free0);
	tu_env_destroy(e);
}

struct free_call {
	struct dmm_mem *mem;
	dmm_pfn_t pfn;
	uint64_t nr;
	int rc;
};

static void free_range_call(void *arg)
{
	struct free_call *c = arg;
	c->rc = dmm_free_range(c->mem, c->pfn, c->nr);
}

/*
 * Two frees of one range at once: the second free overtakes the first
 * right before the first takes the zone lock (forced through the lock
 * hook). Exactly one gives the range back; the other is refused with
 * -DMM_ENOENT and counted, and the lists stay sound.
 */
static void test_range_concurrent_double_free(void **state)
{
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_platform p;
	struct dmm_mem *mem = NULL;
	struct dmm_constraint c = DMM_CONSTRAINT_ANY;
	uint64_t free0, bad0;
	(void)state;

	tu_race_platform(&m, "range-race", 1, &h, &p);
	assert_ok(dmm_mem_create(&m, &p, &mem));
	free0 = total_free(mem);
	bad0 = tu_zone_bad_frees(mem);
	for (uint64_t i = 0; i < 8; i++) {
		struct free_call nested = { mem, 0, 5 + 9 * i, 1 };
		unsigned fired = tu_race()->fired;
		int rc;

		assert_ok(dmm_alloc_range(mem, &c, nested.nr, 0, &nested.pfn));
		tu_race_arm(free_range_call, &nested);
		rc = dmm_free_range(mem, nested.pfn, nested.nr);
		assert_int_equal(tu_race()->fired, fired + 1);
		tu_assert_one_free(nested.pfn, rc, nested.rc);
		assert_checks(mem);
		assert_int_equal(tu_zone_bad_frees(mem), bad0 + i + 1);
	}
	assert_int_equal(total_free(mem), free0);
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_range_fields),
		cmocka_unit_test(test_range_errors),
		cmocka_unit_test(test_range_watermarks),
		cmocka_unit_test(test_range_fragmented),
		cmocka_unit_test(test_range_free_mixed_pageblocks),
		cmocka_unit_test(test_range_extremes),
		cmocka_unit_test(test_range_drains_other_cpus),
		cmocka_unit_test(test_range_wmark_leaves_out_area_pages),
		cmocka_unit_test(test_range_free_pinned_refused),
		cmocka_unit_test(test_range_concurrent_double_free),
	};
	return cmocka_run_group_tests_name("range", tests, NULL, NULL);
}

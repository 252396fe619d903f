/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: random sequences of page-allocator and range-allocator
 * operations on a small machine with holes.
 *
 * The machine (created once): low RAM [4 KiB, 640 KiB), [1 MiB, 24 MiB)
 * with a firmware-reserved 64 KiB at 8 MiB, and [40 MiB, 80 MiB); the DMA
 * limit at 16 MiB and the "DMA32" limit at 32 MiB (limits are addresses,
 * any value works), so zones DMA, DMA32 and Normal with holes in two of
 * them; about 64 MiB in all, one CPU. The span is kept compact because the
 * full checks after every step cost time proportional to it.
 *
 * The input is a byte string read as operations: page alloc (order, flags,
 * constraint), page free of a live block, range alloc (lo, hi, align,
 * boundary, size), range free, drain, pattern verification, and bad input
 * (garbage pfns and orders, wrong sizes, tails, double frees, invalid
 * arguments). After every operation both dmm_page_alloc_check() and
 * dmm_range_check() must pass, free + held pages must equal the managed
 * pages, every result must satisfy its constraint, belong to nobody else and
 * keep its fill pattern, every bad call must return its specific error and
 * change nothing, and a range request that fails with ENOMEM must have no
 * fit in a brute-force scan of the free pages. Any violation aborts. At the
 * end of each input everything is freed and every page must come back.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dmamem/dmamem.h>
#include <dmamem/hosted.h>

#include "fuzz_alloc.h"

#define KiB ((uint64_t)1 << 10)
#define MiB ((uint64_t)1 << 20)
#define GiB ((uint64_t)1 << 30)
#define MAX_LIVE 128
#define NR_RECENT 8

struct live {
	dmm_pfn_t pfn;
	uint64_t nr;
	int order; /* -1 = range */
	uint64_t salt;
};

static struct {
	int ready;
	struct dmm_machine m;
	struct dmm_hosted *hosted;
	struct dmm_mem *mem;
	struct dmm_mem_info info;
	uint64_t free0;         /* free + cached pages of the idle machine */
	uint8_t *owned;         /* per pfn below max_pfn: 1 = held by a live entry */
	uint8_t *managed;       /* per pfn: 1 = a page the allocators manage */
	uint8_t *zone;          /* per pfn: zone index */
	uint32_t *managed_sum;  /* prefix sums of managed[] */
	struct live live[MAX_LIVE];
	unsigned nl;
	uint64_t held;          /* pages held by live entries */
	struct live recent[NR_RECENT]; /* recently freed, for double frees */
	unsigned nr_recent;
	uint64_t step;
	struct dmm_fuzz_counts cnt;
} F;

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "fuzz_alloc: step %llu: ", (unsigned long long)F.step);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

/* the operation log (DMM_FUZZ_TRACE) */
#define trace(...) dmm_fuzz_trace(F.step, __VA_ARGS__)

/* ---- input reader ---------------------------------------------------------- */

/* the input reader (struct rd, u8/u16/u32) is in fuzz_target.h */

/* ---- the machine ------------------------------------------------------------- */

static void setup(void)
{
	struct dmm_machine *m = &F.m;
	dmm_machine_defaults(m);
	snprintf(m->name, sizeof(m->name), "fuzz");
	m->ram[0] = (struct dmm_region){ 0x1000, 0x9f000 };
	m->ram[1] = (struct dmm_region){ 1 * MiB, 23 * MiB };
	m->ram[2] = (struct dmm_region){ 40 * MiB, 40 * MiB };
	m->nr_ram = 3;
	m->reserved[0] = (struct dmm_region){ 8 * MiB, 64 * KiB };
	m->nr_reserved = 1;
	m->dma_limit = 16 * MiB;
	m->dma32_limit = 32 * MiB;
	if (dmm_hosted_mem_create(m, 1, &F.hosted, &F.mem))
		die("cannot create the memory map");
	dmm_mem_get_info(F.mem, &F.info);
	uint64_t n = F.info.max_pfn;
	F.owned = calloc(n, 1);
	F.managed = calloc(n, 1);
	F.zone = calloc(n, 1);
	F.managed_sum = calloc(n + 1, sizeof(uint32_t));
	if (!F.owned || !F.managed || !F.zone || !F.managed_sum)
		die("out of host memory");
	for (dmm_pfn_t pfn = 0; pfn < n; pfn++) {
		struct dmm_page *pg = dmm_pfn_to_page(F.mem, pfn);
		F.managed[pfn] = pg && pg->state != DMM_PAGE_RESERVED;
		F.zone[pfn] = pg ? pg->zone : 0xff;
		F.managed_sum[pfn + 1] = F.managed_sum[pfn] + F.managed[pfn];
	}
	F.ready = 1;
}

static uint64_t total_free(void)
{
	uint64_t n = 0;
	for (unsigned z = 0; z < dmm_mem_nr_zones(F.mem); z++) {
		struct dmm_zone_info zi;
		if (dmm_zone_get_info(F.mem, z, &zi))
			die("zone_get_info(%u) failed", z);
		n += zi.free + zi.pcp;
	}
	return n;
}

/* Both checks, and (with @pending pages just allocated but not yet taken
 * into the books) free + held == the idle machine's free pages. */
static void check_all_pending(const char *after, uint64_t pending)
{
	int a = dmm_page_alloc_check(F.mem);
	int b = dmm_range_check(F.mem);
	if (a || b)
		die("after %s: page_alloc_check %s, range_check %s", after, dmm_errname(a),
		    dmm_errname(b));
	uint64_t f = total_free() + pending;
	if (f + F.held != F.free0)
		die("after %s: free %llu + held %llu != %llu", after, (unsigned long long)f,
		    (unsigned long long)F.held, (unsigned long long)F.free0);
}

static void check_all(const char *after)
{
	check_all_pending(after, 0);
}

/* Managed pages whose whole page lies in [lo, hi). */
static uint64_t managed_in(dmm_phys_t lo, dmm_phys_t hi)
{
	dmm_pfn_t a = (lo + DMM_PAGE_SIZE - 1) >> DMM_PAGE_SHIFT;
	dmm_pfn_t b = hi >> DMM_PAGE_SHIFT;
	if (lo > UINT64_MAX - DMM_PAGE_SIZE)
		return 0;
	if (b > F.info.max_pfn)
		b = F.info.max_pfn;
	return a < b ? F.managed_sum[b] - F.managed_sum[a] : 0;
}

/* ---- patterns and ownership ---------------------------------------------------- */

static uint64_t token(dmm_pfn_t pfn, uint64_t salt, unsigned which)
{
	uint64_t x = (pfn + 0x51ed) * 0x9e3779b97f4a7c15ull ^ salt ^ which;
	return x ^ (x >> 31);
}

static void fill(const struct live *l)
{
	for (uint64_t i = 0; i < l->nr; i++) {
		uint64_t *v = dmm_pfn_to_virt(F.mem, l->pfn + i);
		v[0] = token(l->pfn + i, l->salt, 0);
		v[511] = token(l->pfn + i, l->salt, 1);
	}
}

static void verify(const struct live *l)
{
	for (uint64_t i = 0; i < l->nr; i++) {
		const uint64_t *v = dmm_pfn_to_virt(F.mem, l->pfn + i);
		if (!v || v[0] != token(l->pfn + i, l->salt, 0) || v[511] != token(l->pfn + i, l->salt, 1))
			die("pattern of block %#llx+%llu lost at page %llu", (unsigned long long)l->pfn,
			    (unsigned long long)l->nr, (unsigned long long)i);
	}
}

/* Check a fresh block: RAM, managed, nobody's, one zone, descriptor state. */
static void take(const struct live *l)
{
	if (l->pfn < F.info.min_pfn || l->pfn + l->nr > F.info.max_pfn || l->pfn + l->nr < l->pfn)
		die("block %#llx+%llu outside RAM", (unsigned long long)l->pfn, (unsigned long long)l->nr);
	for (uint64_t i = 0; i < l->nr; i++) {
		dmm_pfn_t p = l->pfn + i;
		if (!F.managed[p])
			die("block %#llx+%llu contains unmanaged pfn %#llx", (unsigned long long)l->pfn,
			    (unsigned long long)l->nr, (unsigned long long)p);
		if (F.owned[p])
			die("pfn %#llx handed out twice", (unsigned long long)p);
		if (F.zone[p] != F.zone[l->pfn])
			die("block %#llx+%llu straddles zones", (unsigned long long)l->pfn,
			    (unsigned long long)l->nr);
		struct dmm_page *pg = dmm_pfn_to_page(F.mem, p);
		uint8_t want = i ? DMM_PAGE_TAIL : (l->order < 0 ? DMM_PAGE_RANGE : DMM_PAGE_ALLOC);
		if (pg->state != want)
			die("pfn %#llx state %u, want %u", (unsigned long long)p, pg->state, want);
		F.owned[p] = 1;
	}
	struct dmm_page *head = dmm_pfn_to_page(F.mem, l->pfn);
	if (l->order >= 0 && head->order != l->order)
		die("head order %u, want %d", head->order, l->order);
	if (l->order < 0 && head->private != l->nr)
		die("range head private %llu, want %llu", (unsigned long long)head->private,
		    (unsigned long long)l->nr);
	F.held += l->nr;
}

static void drop(const struct live *l)
{
	for (uint64_t i = 0; i < l->nr; i++)
		F.owned[l->pfn + i] = 0;
	F.held -= l->nr;
	F.recent[F.nr_recent++ % NR_RECENT] = *l;
}

static int is_zero(dmm_pfn_t pfn, uint64_t nr)
{
	for (uint64_t i = 0; i < nr; i++) {
		const uint64_t *v = dmm_pfn_to_virt(F.mem, pfn + i);
		for (unsigned w = 0; w < 512; w++)
			if (v[w])
				return 0;
	}
	return 1;
}

/* ---- constraints ------------------------------------------------------------- */

static int pow2(uint64_t x)
{
	return x && !(x & (x - 1));
}

/* An address in or near the machine's RAM (below 96 MiB) on a 16 KiB
 * grid, sometimes ragged, rarely far above. */
static dmm_phys_t addr(struct rd *r)
{
	uint64_t v = u16(r);
	dmm_phys_t a = (v & 0x17ff) * 16 * KiB;
	if (v & 0x4000)
		a += u8(r) * 16;
	if ((v & 0xa000) == 0xa000)
		a += 8 * GiB;
	return a;
}

static void make_constraint(struct rd *r, struct dmm_constraint *c, int allow_invalid)
{
	uint64_t kind = u8(r);
	*c = DMM_CONSTRAINT_ANY;
	switch (kind & 3) {
	case 0:
		break;
	case 1:
		c->hi = addr(r);
		if (!c->hi)
			c->hi = 64 * KiB;
		break;
	case 2:
		c->lo = addr(r);
		break;
	default:
		c->lo = addr(r);
		c->hi = addr(r);
		if (c->hi < c->lo && !(allow_invalid && (kind & 0x80))) {
			dmm_phys_t t = c->lo;
			c->lo = c->hi;
			c->hi = t;
		}
		if (c->hi == c->lo)
			c->hi += 64 * KiB;
		break;
	}
	if (kind & 4)
		c->align = (uint64_t)1 << (6 + u8(r) % 20);
	if (kind & 8)
		c->boundary = (uint64_t)1 << (12 + u8(r) % 14);
	if (allow_invalid && (kind & 0x70) == 0x70) {
		/* not a power of two */
		if (kind & 1)
			c->align = 3 * DMM_PAGE_SIZE;
		else
			c->boundary = 5 * DMM_PAGE_SIZE;
	}
}

static int constraint_valid(const struct dmm_constraint *c)
{
	return c->lo < c->hi && (!c->align || pow2(c->align)) && (!c->boundary || pow2(c->boundary));
}

/* Brute force: is there a run of @nr free managed pages in one zone inside @c? */
static int range_fit_exists(const struct dmm_constraint *c, uint64_t nr)
{
	dmm_pfn_t lo = (c->lo + DMM_PAGE_SIZE - 1) >> DMM_PAGE_SHIFT;
	dmm_pfn_t hi = c->hi >> DMM_PAGE_SHIFT;
	uint64_t ap = c->align > DMM_PAGE_SIZE ? c->align >> DMM_PAGE_SHIFT : 1;
	uint64_t bp = c->boundary >> DMM_PAGE_SHIFT;
	if (c->lo > UINT64_MAX - DMM_PAGE_SIZE)
		return 0;
	if (hi > F.info.max_pfn)
		hi = F.info.max_pfn;
	for (unsigned i = 0; i < F.m.nr_ram; i++) {
		dmm_pfn_t s = (F.m.ram[i].base + DMM_PAGE_SIZE - 1) >> DMM_PAGE_SHIFT;
		dmm_pfn_t e = (F.m.ram[i].base + F.m.ram[i].size) >> DMM_PAGE_SHIFT;
		uint64_t run = 0;
		if (s < lo)
			s = lo;
		if (e > hi)
			e = hi;
		/* run = free pages ending at pfn, within one zone */
		for (dmm_pfn_t pfn = s; pfn < e; pfn++) {
			int fr = F.managed[pfn] && !F.owned[pfn];
			if (run && F.zone[pfn] != F.zone[pfn - 1])
				run = 0;
			run = fr ? run + 1 : 0;
			if (run < nr)
				continue;
			dmm_pfn_t start = pfn + 1 - nr;
			if (start % ap)
				continue;
			if (bp && start / bp != pfn / bp)
				continue;
			return 1;
		}
	}
	return 0;
}

/* ---- operations ------------------------------------------------------------- */

static const unsigned flag_bits[] = { DMM_GFP_MOVABLE, DMM_GFP_RECLAIMABLE, DMM_GFP_ATOMIC, DMM_GFP_ZERO,
				      DMM_GFP_NOCACHE, DMM_GFP_NOWMARK };

static unsigned make_flags(uint64_t b)
{
	unsigned f = 0;
	for (unsigned i = 0; i < sizeof(flag_bits) / sizeof(flag_bits[0]); i++)
		if (b & (1u << i))
			f |= flag_bits[i];
	if ((f & DMM_GFP_MOVABLE) && (f & DMM_GFP_RECLAIMABLE))
		f &= ~DMM_GFP_RECLAIMABLE;
	return f;
}

static void op_page_alloc(struct rd *r)
{
	unsigned order = (unsigned)(u8(r) % (DMM_MAX_ORDER + 1));
	uint64_t fb = u8(r);
	unsigned flags = make_flags(fb);
	struct dmm_constraint c, *cp = NULL;
	dmm_phys_t lo = 0, hi = DMM_PHYS_MAX;
	uint64_t n = 1ull << order;
	dmm_pfn_t pfn = 0;

	if (order > 4 && (fb & 0x80)) { /* keep most blocks small */
		order &= 3;
		n = 1ull << order;
	}
	switch ((fb >> 6) & 3) {
	case 1:
		flags |= DMM_GFP_DMA;
		hi = F.m.dma_limit;
		break;
	case 2:
		flags |= DMM_GFP_DMA32;
		hi = F.m.dma32_limit;
		break;
	case 3:
		make_constraint(r, &c, 0);
		cp = &c;
		lo = c.lo;
		hi = c.hi;
		break;
	default:
		break;
	}
	uint64_t before = total_free();
	int rc = dmm_page_alloc(F.mem, order, cp, flags, &pfn);
	if (cp)
		trace("page_alloc order %u flags %#x [%#llx,%#llx) align %#llx boundary %#llx -> %s %#llx", order,
		      flags, (unsigned long long)cp->lo, (unsigned long long)cp->hi, (unsigned long long)cp->align,
		      (unsigned long long)cp->boundary, dmm_errname(rc), (unsigned long long)pfn);
	else
		trace("page_alloc order %u flags %#x -> %s %#llx", order, flags, dmm_errname(rc),
		      (unsigned long long)pfn);
	check_all_pending("page alloc", rc ? 0 : n);
	if (rc) {
		F.cnt.page_fail++;
		if (total_free() != before)
			die("failed page alloc changed the free count");
		if (rc == -DMM_ERANGE && managed_in(lo, hi))
			die("page alloc: ERANGE but the window [%#llx,%#llx) has RAM",
			    (unsigned long long)lo, (unsigned long long)hi);
		if (rc == -DMM_EWMARK && (flags & DMM_GFP_NOWMARK))
			die("page alloc: EWMARK with NOWMARK");
		if (rc == -DMM_EINVAL && cp && cp->boundary && cp->boundary < (n << DMM_PAGE_SHIFT))
			return; /* a boundary smaller than the block */
		if (rc != -DMM_ENOMEM && rc != -DMM_EWMARK && rc != -DMM_ERANGE)
			die("page alloc order %u flags %#x: unexpected %s", order, flags, dmm_errname(rc));
		return;
	}
	F.cnt.page_ok++;
	if (pfn & (n - 1))
		die("order-%u block %#llx not naturally aligned", order, (unsigned long long)pfn);
	if (cp && !dmm_constraint_ok(cp, dmm_pfn_to_phys(pfn), n << DMM_PAGE_SHIFT))
		die("order-%u block %#llx outside [%#llx,%#llx) align %#llx boundary %#llx", order,
		    (unsigned long long)pfn, (unsigned long long)cp->lo, (unsigned long long)cp->hi,
		    (unsigned long long)cp->align, (unsigned long long)cp->boundary);
	if (dmm_pfn_to_phys(pfn + n) > hi)
		die("order-%u block %#llx above the shorthand limit", order, (unsigned long long)pfn);
	struct live tmp = { pfn, n, (int)order, F.step * 7919 + pfn };
	take(&tmp);
	if (total_free() != before - n)
		die("page alloc took %llu pages, free dropped by %llu", (unsigned long long)n,
		    (unsigned long long)(before - total_free()));
	if ((flags & DMM_GFP_ZERO) && !is_zero(pfn, n))
		die("GFP_ZERO block %#llx not zero", (unsigned long long)pfn);
	if (F.nl == MAX_LIVE) { /* no room to track it: give it straight back */
		drop(&tmp);
		if (dmm_page_free(F.mem, pfn, order))
			die("immediate free failed");
		check_all("immediate free");
		return;
	}
	F.live[F.nl] = tmp;
	fill(&F.live[F.nl]);
	F.nl++;
}

static void op_range_alloc(struct rd *r)
{
	struct dmm_constraint c;
	uint64_t sz = u16(r);
	uint64_t nr = sz & 0x8000 ? (sz & 0xfff) + 1 : (sz & 0x3f) + 1;
	unsigned flags = make_flags(u8(r)) & (DMM_GFP_ATOMIC | DMM_GFP_NOWMARK | DMM_GFP_ZERO | DMM_GFP_MOVABLE);
	dmm_pfn_t pfn = 0;
	make_constraint(r, &c, 0);
	if (c.boundary && c.boundary < (nr << DMM_PAGE_SHIFT) && (sz & 0x4000))
		c.boundary = 0; /* mostly keep requests satisfiable */

	uint64_t before = total_free();
	int rc = dmm_alloc_range(F.mem, &c, nr, flags, &pfn);
	trace("alloc_range nr %llu flags %#x [%#llx,%#llx) align %#llx boundary %#llx -> %s %#llx",
	      (unsigned long long)nr, flags, (unsigned long long)c.lo, (unsigned long long)c.hi,
	      (unsigned long long)c.align, (unsigned long long)c.boundary, dmm_errname(rc), (unsigned long long)pfn);
	check_all_pending("range alloc", rc ? 0 : nr);
	if (rc) {
		F.cnt.range_fail++;
		if (total_free() != before)
			die("failed range alloc changed the free count");
		if (c.boundary && c.boundary < (nr << DMM_PAGE_SHIFT)) {
			if (rc != -DMM_EINVAL)
				die("range alloc with boundary < size: %s, want EINVAL", dmm_errname(rc));
			return;
		}
		if (rc == -DMM_ERANGE) {
			if (managed_in(c.lo, c.hi))
				die("range alloc: ERANGE but [%#llx,%#llx) has RAM", (unsigned long long)c.lo,
				    (unsigned long long)c.hi);
			return;
		}
		if (rc == -DMM_EWMARK) {
			if (flags & DMM_GFP_NOWMARK)
				die("range alloc: EWMARK with NOWMARK");
			return;
		}
		if (rc != -DMM_ENOMEM)
			die("range alloc: unexpected %s", dmm_errname(rc));
		/* ENOMEM: no fit may exist among the free pages */
		F.cnt.oracle_checks++;
		if (range_fit_exists(&c, nr))
			die("range alloc of %llu in [%#llx,%#llx) align %#llx boundary %#llx: ENOMEM "
			    "but a fit exists",
			    (unsigned long long)nr, (unsigned long long)c.lo, (unsigned long long)c.hi,
			    (unsigned long long)c.align, (unsigned long long)c.boundary);
		return;
	}
	F.cnt.range_ok++;
	if (c.boundary && c.boundary < (nr << DMM_PAGE_SHIFT))
		die("range alloc with boundary < size succeeded");
	if (!dmm_constraint_ok(&c, dmm_pfn_to_phys(pfn), nr << DMM_PAGE_SHIFT))
		die("range %#llx+%llu outside [%#llx,%#llx) align %#llx boundary %#llx",
		    (unsigned long long)pfn, (unsigned long long)nr, (unsigned long long)c.lo,
		    (unsigned long long)c.hi, (unsigned long long)c.align, (unsigned long long)c.boundary);
	struct live tmp = { pfn, nr, -1, F.step * 104729 + pfn };
	take(&tmp);
	if (total_free() != before - nr)
		die("range alloc took %llu pages, free dropped by %llu", (unsigned long long)nr,
		    (unsigned long long)(before - total_free()));
	if ((flags & DMM_GFP_ZERO) && !is_zero(pfn, nr))
		die("GFP_ZERO range %#llx not zero", (unsigned long long)pfn);
	if (F.nl == MAX_LIVE) {
		drop(&tmp);
		if (dmm_free_range(F.mem, pfn, nr))
			die("immediate range free failed");
		check_all("immediate range free");
		return;
	}
	F.live[F.nl] = tmp;
	fill(&F.live[F.nl]);
	F.nl++;
}

static void free_live(unsigned i)
{
	struct live l = F.live[i];
	verify(&l);
	uint64_t before = total_free();
	int rc = l.order < 0 ? dmm_free_range(F.mem, l.pfn, l.nr) : dmm_page_free(F.mem, l.pfn, (unsigned)l.order);
	trace("%s %#llx %llu -> %s", l.order < 0 ? "free_range" : "page_free", (unsigned long long)l.pfn,
	      (unsigned long long)(l.order < 0 ? l.nr : (uint64_t)l.order), dmm_errname(rc));
	if (rc)
		die("free of live %s %#llx+%llu: %s", l.order < 0 ? "range" : "block",
		    (unsigned long long)l.pfn, (unsigned long long)l.nr, dmm_errname(rc));
	drop(&l);
	F.live[i] = F.live[--F.nl];
	F.cnt.frees++;
	check_all("free");
	if (total_free() != before + l.nr)
		die("free of %llu pages raised free by %llu", (unsigned long long)l.nr,
		    (unsigned long long)(total_free() - before));
}

static void op_free(struct rd *r, int want_range)
{
	if (!F.nl)
		return;
	unsigned start = (unsigned)(u8(r) % F.nl);
	for (unsigned k = 0; k < F.nl; k++) {
		unsigned i = (start + k) % F.nl;
		if ((F.live[i].order < 0) == want_range) {
			free_live(i);
			return;
		}
	}
	free_live(start);
}

/* The live entry whose head is @pfn, or NULL. */
static struct live *live_head(dmm_pfn_t pfn)
{
	for (unsigned i = 0; i < F.nl; i++)
		if (F.live[i].pfn == pfn)
			return &F.live[i];
	return NULL;
}

static void expect(int rc, int want, const char *what, uint64_t before)
{
	F.cnt.bad_calls++;
	trace("bad: %s -> %s", what, dmm_errname(rc));
	if (rc != want)
		die("%s: %s, want %s", what, dmm_errname(rc), dmm_errname(want));
	check_all(what);
	if (total_free() != before)
		die("%s changed the free count", what);
}

static void op_bad(struct rd *r)
{
	uint64_t before = total_free();
	uint64_t sub = u8(r) % 12;
	struct live *l = F.nl ? &F.live[u8(r) % F.nl] : NULL;
	dmm_pfn_t pfn = 0;
	struct dmm_constraint c = DMM_CONSTRAINT_ANY;

	switch (sub) {
	case 0: { /* garbage pfn and order */
		dmm_pfn_t g = u32(r) % (F.info.max_pfn + 4096);
		unsigned o = (unsigned)(u8(r) % 16);
		struct live *h = live_head(g);
		if (h && h->order >= 0 && (unsigned)h->order == o)
			return; /* that would be a legitimate free */
		int rc = dmm_page_free(F.mem, g, o);
		if (h && h->order >= 0)
			expect(rc, -DMM_EINVAL, "free of a live block with a garbage order", before);
		else if (o > DMM_MAX_ORDER && (rc == -DMM_EINVAL || rc == -DMM_ENOENT))
			expect(rc, rc, "free of a garbage pfn with a garbage order", before);
		else
			expect(rc, -DMM_ENOENT, "free of a garbage pfn", before);
		break;
	}
	case 1: { /* garbage range free */
		dmm_pfn_t g = u32(r) % (F.info.max_pfn + 4096);
		uint64_t n = u8(r) + 1;
		struct live *h = live_head(g);
		if (h && h->order < 0 && h->nr == n)
			return;
		int rc = dmm_free_range(F.mem, g, n);
		if (h && h->order < 0)
			expect(rc, -DMM_EINVAL, "range free with a garbage size", before);
		else
			expect(rc, -DMM_ENOENT, "range free of a garbage pfn", before);
		break;
	}
	case 2: /* wrong order / size on a live entry */
		if (!l)
			return;
		if (l->order >= 0)
			expect(dmm_page_free(F.mem, l->pfn, (unsigned)(l->order + 1 + (int)(u8(r) % 4)) % 16),
			       -DMM_EINVAL, "free with the wrong order", before);
		else
			expect(dmm_free_range(F.mem, l->pfn, l->nr + 1 + u8(r)), -DMM_EINVAL,
			       "range free with the wrong size", before);
		break;
	case 3: /* a tail */
		if (!l || l->nr < 2)
			return;
		pfn = l->pfn + 1 + u16(r) % (l->nr - 1);
		if (l->order >= 0)
			expect(dmm_page_free(F.mem, pfn, 0), -DMM_ENOENT, "free of a tail page", before);
		else
			expect(dmm_free_range(F.mem, pfn, 1), -DMM_ENOENT, "range free of a tail page", before);
		break;
	case 4: /* the other kind of free */
		if (!l)
			return;
		if (l->order >= 0)
			expect(dmm_free_range(F.mem, l->pfn, l->nr), -DMM_ENOENT,
			       "range free of a buddy block", before);
		else
			expect(dmm_page_free(F.mem, l->pfn, 0), -DMM_ENOENT, "page free of a range", before);
		break;
	case 5: { /* double free of something recently freed */
		if (!F.nr_recent)
			return;
		struct live d = F.recent[u8(r) % (F.nr_recent < NR_RECENT ? F.nr_recent : NR_RECENT)];
		if (F.owned[d.pfn])
			return; /* reallocated since: freeing it would be legitimate or a tail */
		int rc = d.order < 0 ? dmm_free_range(F.mem, d.pfn, d.nr) : dmm_page_free(F.mem, d.pfn, (unsigned)d.order);
		expect(rc, -DMM_ENOENT, "double free", before);
		break;
	}
	case 6:
		expect(dmm_page_alloc(F.mem, DMM_MAX_ORDER + 1 + (unsigned)u8(r), NULL, 0, &pfn), -DMM_EINVAL,
		       "page alloc with order > max", before);
		break;
	case 7:
		expect(dmm_page_alloc(F.mem, 0, NULL, DMM_GFP_ALL + 1 + (unsigned)u16(r), &pfn), -DMM_EINVAL,
		       "page alloc with unknown flags", before);
		break;
	case 8:
		make_constraint(r, &c, 1);
		if (constraint_valid(&c))
			c.lo = c.hi; /* make it invalid */
		expect(dmm_page_alloc(F.mem, 0, &c, 0, &pfn), -DMM_EINVAL, "page alloc with an invalid constraint",
		       before);
		expect(dmm_alloc_range(F.mem, &c, 1, 0, &pfn), -DMM_EINVAL,
		       "range alloc with an invalid constraint", before);
		break;
	case 9:
		expect(dmm_page_alloc(F.mem, 0, &c, DMM_GFP_DMA, &pfn), -DMM_EINVAL,
		       "page alloc with a constraint and a shorthand", before);
		expect(dmm_page_alloc(F.mem, 0, NULL, 0, NULL), -DMM_EINVAL, "page alloc with pfn NULL", before);
		break;
	case 10:
		expect(dmm_alloc_range(F.mem, &c, 0, 0, &pfn), -DMM_EINVAL, "range alloc of 0 pages", before);
		c.boundary = (uint64_t)1 << (12 + u8(r) % 8);
		expect(dmm_alloc_range(F.mem, &c, (c.boundary >> DMM_PAGE_SHIFT) + 1 + u8(r), 0, &pfn), -DMM_EINVAL,
		       "range alloc with boundary < size", before);
		break;
	default: /* a window without RAM: the hole at 24..40 MiB, or far above */
		c.lo = u8(r) & 1 ? 24 * MiB + (u8(r) % 15) * MiB : 100 * MiB + u8(r) * MiB;
		c.hi = c.lo + MiB;
		expect(dmm_alloc_range(F.mem, &c, 1, 0, &pfn), -DMM_ERANGE, "range alloc in a hole", before);
		expect(dmm_page_alloc(F.mem, 0, &c, 0, &pfn), -DMM_ERANGE, "page alloc in a hole", before);
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rd r = { data, size };
	if (!F.ready) {
		setup();
		dmm_page_drain_pcp(F.mem);
		F.free0 = total_free();
		check_all("setup");
	}
	F.cnt.inputs++;
	F.nr_recent = 0;
	while (r.n) {
		F.step++;
		F.cnt.ops++;
		uint64_t op = u8(&r) % 16;
		if (op < 5)
			op_page_alloc(&r);
		else if (op < 8)
			op_range_alloc(&r);
		else if (op < 10)
			op_free(&r, 0);
		else if (op < 12)
			op_free(&r, 1);
		else if (op == 12) {
			dmm_page_drain_pcp(F.mem);
			check_all("drain");
		} else if (op == 13) {
			for (unsigned i = 0; i < F.nl; i++)
				verify(&F.live[i]);
		} else {
			op_bad(&r);
		}
	}
	/* everything back */
	while (F.nl)
		free_live(F.nl - 1);
	dmm_page_drain_pcp(F.mem);
	check_all("teardown");
	if (total_free() != F.free0)
		die("teardown: %llu free pages, want %llu", (unsigned long long)total_free(),
		    (unsigned long long)F.free0);
	if (F.held)
		die("teardown: %llu pages still held", (unsigned long long)F.held);
	return 0;
}

void dmm_fuzz_get_counts(struct dmm_fuzz_counts *out)
{
	*out = F.cnt;
}

void dmm_fuzz_print_summary(const char *prog)
{
	struct dmm_fuzz_counts c = F.cnt;
	printf("%s: %llu inputs, %llu operations: %llu page allocs ok, %llu failed; "
	       "%llu ranges ok, %llu failed; %llu frees; %llu bad calls refused; %llu ENOMEM "
	       "results confirmed by brute force\n",
	       prog, (unsigned long long)c.inputs, (unsigned long long)c.ops, (unsigned long long)c.page_ok,
	       (unsigned long long)c.page_fail, (unsigned long long)c.range_ok,
	       (unsigned long long)c.range_fail, (unsigned long long)c.frees,
	       (unsigned long long)c.bad_calls, (unsigned long long)c.oracle_checks);
}

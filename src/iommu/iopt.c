/* SPDX-License-Identifier: MIT */
/*
 * IO page tables: the format is specified in include/dmamem/iommu.h.
 *
 * Map picks, chunk by chunk, the largest leaf the alignment of both
 * addresses and the remaining size allow: a 1 GiB block at level 1, a
 * 2 MiB block at level 2, else a 4 KiB page at level 3. Where a table
 * already hangs at a block's place (left by earlier smaller mappings) the
 * chunk goes through that table instead. Tables are installed with a
 * compare-and-swap, so two threads mapping disjoint ranges need no lock;
 * leaves are written with release stores.
 *
 * Unmap clears leaves; a block only partly inside the range is first
 * replaced by a table of the next level holding the same translation
 * (a "split"), then the part inside is cleared. Emptied tables are kept
 * until the page table is destroyed: freeing a table while an IOMMU may
 * still be walking it needs an invalidation of its walk caches first, and
 * a table emptied once tends to be filled again.
 *
 * Table pages are metadata written only through the raw linear mapping:
 * a new table is flushed from the CPU caches first (a line dirtied by the
 * page's previous owner must not be written back over the entries later)
 * and then zeroed raw, so that an IOMMU reading memory sees exactly what
 * the entries say.
 */
#include <dmamem/iommu.h>
#include <dmamem/slab.h>

#include "dma/dma_internal.h"

#define LVL_SHIFT(l) (39u - 9u * (l))
#define LVL_SIZE(l) ((uint64_t)1 << LVL_SHIFT(l))
#define IDX(iova, l) (((iova) >> LVL_SHIFT(l)) & 511u)
#define VA_END ((uint64_t)1 << DMM_IOPT_VA_BITS)

struct dmm_iopt {
	struct dmm_mem *mem;
	dmm_phys_t root;
	struct dmm_iopt_stats st; /* atomic counters */
};

static inline void sadd(uint64_t *c, int64_t v)
{
	__atomic_fetch_add(c, (uint64_t)v, __ATOMIC_RELAXED);
}

static inline uint64_t *table(const struct dmm_iopt *pt, dmm_phys_t pa)
{
	const struct dmm_platform *p = &pt->mem->plat;
	return p->phys_to_virt(p->ctx, pa);
}

static inline uint64_t ld(const uint64_t *e)
{
	return __atomic_load_n(e, __ATOMIC_ACQUIRE);
}

static int table_alloc(struct dmm_iopt *pt, dmm_phys_t *pa)
{
	struct dmm_mem *mem = pt->mem;
	dmm_pfn_t pfn;
	int err = dmm__lib_page_alloc(mem, 0, (const struct dmm_constraint *)0, DMM_GFP_ATOMIC, &pfn);

	if (err)
		return err;
	*pa = dmm_pfn_to_phys(pfn);
	if (mem->plat.cache_maint)
		mem->plat.cache_maint(mem->plat.ctx, DMM_CACHE_FLUSH, *pa, DMM_PAGE_SIZE);
	dmm_memset(table(pt, *pa), 0, DMM_PAGE_SIZE);
	sadd(&pt->st.tables, 1);
	return 0;
}

static void table_free(struct dmm_iopt *pt, dmm_phys_t pa)
{
	/* the library's own page (table_alloc): no pin holds it, so the free
	 * cannot be refused */
	dmm__lib_page_free(pt->mem, dmm_phys_to_pfn(pa), 0);
	sadd(&pt->st.tables, -1);
}

int dmm_iopt_create(struct dmm_mem *mem, struct dmm_iopt **out)
{
	struct dmm_iopt *pt;
	void *p;
	int err;

	if (out)
		*out = (struct dmm_iopt *)0;
	if (!mem || !out)
		return -DMM_EINVAL;
	err = dmm__lib_kmalloc(mem, sizeof(*pt), 0, &p);
	if (err)
		return err;
	pt = p;
	dmm_memset(pt, 0, sizeof(*pt));
	pt->mem = mem;
	err = table_alloc(pt, &pt->root);
	if (err) {
		dmm__lib_kfree(mem, pt);
		return err;
	}
	*out = pt;
	return 0;
}

static void free_level(struct dmm_iopt *pt, dmm_phys_t tpa, unsigned level)
{
	uint64_t *t = table(pt, tpa);

	for (unsigned i = 0; level < 3 && i < 512; i++) {
		uint64_t e = ld(&t[i]);
		if ((e & DMM_IOPTE_VALID) && !(e & DMM_IOPTE_LEAF))
			free_level(pt, e & DMM_IOPTE_ADDR, level + 1);
	}
	table_free(pt, tpa);
}

void dmm_iopt_destroy(struct dmm_iopt *pt)
{
	if (!pt)
		return;
	free_level(pt, pt->root, 0);
	dmm__lib_kfree(pt->mem, pt);
}

dmm_phys_t dmm_iopt_root(const struct dmm_iopt *pt)
{
	return pt ? pt->root : 0;
}

/* The entry for @iova at @level, creating tables on the way; NULL if a
 * leaf above @level covers @iova (*blocked set) or a table could not be
 * allocated (*err set). */
static uint64_t *walk_create(struct dmm_iopt *pt, dmm_dma_addr_t iova, unsigned level, int *err)
{
	dmm_phys_t tpa = pt->root;

	for (unsigned l = 0;; l++) {
		uint64_t *e = &table(pt, tpa)[IDX(iova, l)];
		uint64_t v;
		if (l == level)
			return e;
		v = ld(e);
		if (!(v & DMM_IOPTE_VALID)) {
			dmm_phys_t n;
			uint64_t expect = 0;
			*err = table_alloc(pt, &n);
			if (*err)
				return (uint64_t *)0;
			if (__atomic_compare_exchange_n(e, &expect, n | DMM_IOPTE_VALID, false, __ATOMIC_ACQ_REL,
							__ATOMIC_ACQUIRE)) {
				v = n | DMM_IOPTE_VALID;
			} else {
				table_free(pt, n); /* another mapper won */
				v = expect;
			}
		}
		if (v & DMM_IOPTE_LEAF) {
			*err = -DMM_EEXIST;
			return (uint64_t *)0;
		}
		tpa = v & DMM_IOPTE_ADDR;
	}
}

/* The leaf covering @iova, or NULL (also past the address space, whose
 * index bits would alias a lower address); *level gets its level. */
static uint64_t *walk_leaf(const struct dmm_iopt *pt, dmm_dma_addr_t iova, unsigned *level)
{
	dmm_phys_t tpa = pt->root;

	if (iova >= VA_END)
		return (uint64_t *)0;
	for (unsigned l = 0; l < DMM_IOPT_LEVELS; l++) {
		uint64_t *e = &table(pt, tpa)[IDX(iova, l)];
		uint64_t v = ld(e);
		if (!(v & DMM_IOPTE_VALID))
			return (uint64_t *)0;
		if ((v & DMM_IOPTE_LEAF) || l == 3) {
			*level = l;
			return e;
		}
		tpa = v & DMM_IOPTE_ADDR;
	}
	return (uint64_t *)0;
}

/* Can the chunk at iova/pa of @left bytes be a block at level @l? */
static bool block_fits(dmm_dma_addr_t iova, dmm_phys_t pa, uint64_t left, unsigned l)
{
	uint64_t sz = LVL_SIZE(l);
	return !((iova | pa) & (sz - 1)) && left >= sz;
}

int dmm_iopt_map(struct dmm_iopt *pt, dmm_dma_addr_t iova, dmm_phys_t pa, uint64_t size, unsigned prot,
		 uint64_t flags)
{
	uint64_t done = 0, bits;
	int err = 0;

	if (!pt || !size || ((iova | pa | size) & (DMM_PAGE_SIZE - 1)) || iova >= VA_END || size > VA_END - iova ||
	    !prot || (prot & ~(DMM_IOMMU_READ | DMM_IOMMU_WRITE)) ||
	    (flags & ~(DMM_IOPTE_FIRST | DMM_IOPTE_LAST | DMM_IOPTE_COHERENT)) ||
	    ((flags & DMM_IOPTE_COHERENT) && !(flags & DMM_IOPTE_FIRST)) || pa + size < pa ||
	    !dmm__is_ram(pt->mem, pa, size))
		return pt ? dmm__count_invalid(pt->mem) : -DMM_EINVAL;
	bits = DMM_IOPTE_VALID | DMM_IOPTE_LEAF | dmm__iopt_prot_bits(prot);
	uint64_t *l3 = (uint64_t *)0; /* the last level-3 table used, and its 2 MiB key */
	dmm_dma_addr_t l3_key = 0;
	while (done < size) {
		uint64_t left = size - done, *e = (uint64_t *)0, v, expect = 0;
		unsigned l = 3;

		if (l3 && ((iova + done) >> LVL_SHIFT(2)) == l3_key) {
			e = &l3[IDX(iova + done, 3)]; /* same table as the previous page */
			goto have;
		}
		/* the largest block that fits, unless a table is already there */
		for (unsigned bl = 1; bl <= 2 && !e; bl++) {
			if (!block_fits(iova + done, pa + done, left, bl))
				continue;
			e = walk_create(pt, iova + done, bl, &err);
			if (!e)
				break;
			v = ld(e);
			if ((v & DMM_IOPTE_VALID) && !(v & DMM_IOPTE_LEAF))
				e = (uint64_t *)0; /* a table: go finer */
			else
				l = bl;
		}
		if (!e && !err) {
			e = walk_create(pt, iova + done, 3, &err);
			if (e) {
				l3 = e - IDX(iova + done, 3);
				l3_key = (iova + done) >> LVL_SHIFT(2);
			}
		}
		if (!e)
			break;
have:
		v = (pa + done) | bits;
		if (done == 0)
			v |= flags & (DMM_IOPTE_FIRST | DMM_IOPTE_COHERENT);
		if (done + LVL_SIZE(l) == size)
			v |= flags & DMM_IOPTE_LAST;
		if (!__atomic_compare_exchange_n(e, &expect, v, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
			err = -DMM_EEXIST;
			break;
		}
		done += LVL_SIZE(l);
	}
	if (err) {
		if (done)
			dmm_iopt_unmap(pt, iova, done);
		return err;
	}
	return 0;
}

int dmm__iopt_map4k(struct dmm_iopt *pt, dmm_dma_addr_t iova, dmm_phys_t pa, uint64_t bits)
{
	uint64_t *e, expect = 0;
	int err = 0;

	e = walk_create(pt, iova, 3, &err);
	if (!e)
		return err;
	if (!__atomic_compare_exchange_n(e, &expect, pa | bits | DMM_IOPTE_VALID | DMM_IOPTE_LEAF, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return -DMM_EEXIST;
	return 0;
}

int dmm__iopt_claim(struct dmm_iopt *pt, dmm_dma_addr_t iova, uint64_t bit)
{
	unsigned l = 0;
	uint64_t *e = walk_leaf(pt, iova, &l), v;

	if (!e)
		return -DMM_ENOENT;
	v = ld(e);
	do {
		if (!(v & DMM_IOPTE_VALID) || !(v & bit))
			return -DMM_ENOENT;
	} while (!__atomic_compare_exchange_n(e, &v, v & ~bit, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
	return 0;
}

void dmm__iopt_unclaim(struct dmm_iopt *pt, dmm_dma_addr_t iova, uint64_t bit)
{
	unsigned l = 0;
	uint64_t *e = walk_leaf(pt, iova, &l);

	if (e)
		__atomic_fetch_or(e, bit, __ATOMIC_ACQ_REL);
}

int dmm__iopt_take4k(struct dmm_iopt *pt, dmm_dma_addr_t iova, uint64_t want, uint64_t refuse, uint64_t *old)
{
	unsigned l = 0;
	uint64_t *e = walk_leaf(pt, iova, &l), v;

	if (!e || l != 3)
		return -DMM_ENOENT;
	v = ld(e);
	if ((v & want) != want || (v & refuse) ||
	    !__atomic_compare_exchange_n(e, &v, 0, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return -DMM_ENOENT;
	*old = v;
	return 0;
}

/* Replace the block at *e (level l) by a table of level l + 1 with the same
 * translation. */
static int split_block(struct dmm_iopt *pt, uint64_t *e, unsigned l)
{
	uint64_t v = ld(e), sub = LVL_SIZE(l + 1), keep = v & (DMM_IOPTE_READ | DMM_IOPTE_WRITE);
	dmm_phys_t n, base = v & DMM_IOPTE_ADDR;
	uint64_t *t;
	int err = table_alloc(pt, &n);

	if (err)
		return err;
	t = table(pt, n);
	for (unsigned i = 0; i < 512; i++) {
		uint64_t x = (base + i * sub) | DMM_IOPTE_VALID | DMM_IOPTE_LEAF | keep;
		if (i == 0)
			x |= v & (DMM_IOPTE_FIRST | DMM_IOPTE_COHERENT);
		if (i == 511)
			x |= v & DMM_IOPTE_LAST;
		t[i] = x;
	}
	if (!__atomic_compare_exchange_n(e, &v, n | DMM_IOPTE_VALID, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		table_free(pt, n);
		return 0; /* changed under us: the caller walks again */
	}
	sadd(&pt->st.splits, 1);
	return 0;
}

int64_t dmm_iopt_unmap(struct dmm_iopt *pt, dmm_dma_addr_t iova, uint64_t size)
{
	uint64_t off = 0, unmapped = 0;

	if (!pt || !size || ((iova | size) & (DMM_PAGE_SIZE - 1)) || iova >= VA_END || size > VA_END - iova)
		return pt ? dmm__count_invalid(pt->mem) : -DMM_EINVAL;
	uint64_t *l3 = (uint64_t *)0; /* the last level-3 table seen, and its 2 MiB key */
	dmm_dma_addr_t l3_key = 0;
	while (off < size) {
		dmm_dma_addr_t a = iova + off;
		unsigned l = 3;
		uint64_t *e, bsz;

		if (l3 && (a >> LVL_SHIFT(2)) == l3_key) {
			e = &l3[IDX(a, 3)];
			if (!(ld(e) & DMM_IOPTE_VALID)) {
				off += DMM_PAGE_SIZE;
				continue;
			}
		} else {
			e = walk_leaf(pt, a, &l);
			if (!e) {
				off += DMM_PAGE_SIZE;
				continue;
			}
			if (l == 3) {
				l3 = e - IDX(a, 3);
				l3_key = a >> LVL_SHIFT(2);
			}
		}
		bsz = LVL_SIZE(l);
		if ((a & (bsz - 1)) || size - off < bsz) {
			int err = split_block(pt, e, l);
			if (err)
				return err;
			continue;
		}
		__atomic_store_n(e, 0, __ATOMIC_RELEASE);
		unmapped += bsz;
		off += bsz;
	}
	return (int64_t)unmapped;
}

int dmm_iopt_lookup(const struct dmm_iopt *pt, dmm_dma_addr_t iova, dmm_phys_t *pa, unsigned *prot,
		    uint64_t *pte, unsigned *level)
{
	unsigned l = 0;
	uint64_t *e, v;

	if (!pt || iova >= VA_END)
		return -DMM_EINVAL;
	e = walk_leaf(pt, iova, &l);
	if (!e)
		return -DMM_ENOENT;
	v = ld(e);
	if (!(v & DMM_IOPTE_VALID))
		return -DMM_ENOENT;
	if (pa)
		*pa = (v & DMM_IOPTE_ADDR) + (iova & (LVL_SIZE(l) - 1));
	if (prot)
		*prot = ((v & DMM_IOPTE_READ) ? DMM_IOMMU_READ : 0) | ((v & DMM_IOPTE_WRITE) ? DMM_IOMMU_WRITE : 0);
	if (pte)
		*pte = v;
	if (level)
		*level = l;
	return 0;
}

struct pchk {
	uint64_t tables, leaves[DMM_IOPT_LEVELS];
	const char *why;
};

static void check_level(const struct dmm_iopt *pt, dmm_phys_t tpa, unsigned l, struct pchk *k)
{
	const struct dmm_page *pg = dmm_pfn_to_page(pt->mem, dmm_phys_to_pfn(tpa));
	const uint64_t *t;

	if (!pg || (tpa & (DMM_PAGE_SIZE - 1))) {
		k->why = "table not a RAM page";
		return;
	}
	k->tables++;
	t = table(pt, tpa);
	for (unsigned i = 0; i < 512 && !k->why; i++) {
		uint64_t v = ld(&t[i]);
		if (!(v & DMM_IOPTE_VALID)) {
			if (v)
				k->why = "bits set in an invalid entry";
			continue;
		}
		if (l == 3 || (v & DMM_IOPTE_LEAF)) {
			dmm_phys_t pa = v & DMM_IOPTE_ADDR;
			if (l == 0 || !(v & DMM_IOPTE_LEAF))
				k->why = "leaf at level 0, or level-3 entry without LEAF";
			else if (pa & (LVL_SIZE(l) - 1))
				k->why = "block not aligned to its size";
			else if (!(v & (DMM_IOPTE_READ | DMM_IOPTE_WRITE)))
				k->why = "leaf without permission";
			else if (!dmm_pfn_to_page(pt->mem, dmm_phys_to_pfn(pa)))
				k->why = "leaf maps memory that is not RAM";
			else
				k->leaves[l]++;
		} else {
			if (v & (DMM_IOPTE_READ | DMM_IOPTE_WRITE | DMM_IOPTE_FIRST | DMM_IOPTE_LAST | DMM_IOPTE_COHERENT |
				 ~(DMM_IOPTE_ADDR | 0xfffull)))
				k->why = "table entry with leaf bits";
			else
				check_level(pt, v & DMM_IOPTE_ADDR, l + 1, k);
		}
	}
}

/* The leaf counts come from a walk of the tables (the map and unmap paths
 * keep no shared counters). */
void dmm_iopt_get_stats(const struct dmm_iopt *pt, struct dmm_iopt_stats *out)
{
	struct pchk k = { 0 };

	if (!pt || !out)
		return;
	check_level(pt, pt->root, 0, &k);
	out->tables = __atomic_load_n(&pt->st.tables, __ATOMIC_RELAXED);
	out->blocks_1g = k.leaves[1];
	out->blocks_2m = k.leaves[2];
	out->pages_4k = k.leaves[3];
	out->splits = __atomic_load_n(&pt->st.splits, __ATOMIC_RELAXED);
}

int dmm_iopt_check(const struct dmm_iopt *pt)
{
	struct pchk k = { 0 };

	if (!pt)
		return -DMM_EINVAL;
	check_level(pt, pt->root, 0, &k);
	if (!k.why && k.tables != __atomic_load_n(&pt->st.tables, __ATOMIC_RELAXED))
		k.why = "table count disagrees with the statistics";
	if (k.why) {
		dmm_log(pt->mem, DMM_LOG_ERR, "io page table check: %s", k.why);
		return -DMM_EINVAL;
	}
	return 0;
}

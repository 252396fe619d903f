/* SPDX-License-Identifier: MIT */
/*
 * The hardware model's IOMMU (sim/hw/iommu.c): page tables written by hand
 * in the format of include/dmamem/iommu.h, walked by the model, and device
 * accesses checked with real bytes in RAM.
 *
 * Covered: 4 KiB pages, 2 MiB and 1 GiB blocks, unmapped and permission
 * faults (nothing written, the fault log), the IOTLB (hits, misses, LRU
 * eviction, what the check-then-perform double translation counts), stale
 * entries after a PTE is cleared or changed without invalidation (the device
 * still reaches the old page) and what invalidation (direct or through the
 * platform hook, ranged or domain-wide) changes, domains apart, identity
 * attach, the invalidation latency, the walker reading RAM and not the CPU
 * cache, malformed entries, bad arguments, and two devices translating on
 * two threads.
 */
#include <pthread.h>
#include <time.h>

#include "tu.h"

#include <dmamem/iommu.h>

#include "hw/hw.h"

#define IOVA ((dmm_dma_addr_t)0x10000000u)   /* where most tests map */
#define PERM_RW (DMM_IOPTE_READ | DMM_IOPTE_WRITE)

struct env {
	struct dmm_hw *hw;
	struct dmm_mem *mem;
	const struct dmm_platform *p;
};

static void env_create(struct env *e, const struct dmm_hw_iommu_opts *io)
{
	struct dmm_machine m;
	struct dmm_hw_opts o;

	tu_machine_holes(&m); /* RAM [4K, 636K), [1M, 40M), [4G, 4G + 24M) */
	dmm_hw_opts_default(&o);
	o.nr_cpus = 2;
	o.log_level = DMM_LOG_ERR;
	assert_ok(dmm_hw_mem_create(&m, &o, &e->hw, &e->mem));
	e->p = dmm_hw_platform(e->hw);
	if (io)
		assert_ok(dmm_hw_iommu_enable(e->hw, io));
}

static void env_destroy(struct env *e)
{
	assert_ok(dmm_hw_check(e->hw));
	assert_checks(e->mem);
	dmm_hw_mem_destroy(e->hw, e->mem);
}

static dmm_phys_t pages(struct env *e, unsigned order, const struct dmm_constraint *c)
{
	dmm_pfn_t pfn;

	assert_ok(dmm_page_alloc(e->mem, order, c, 0, &pfn));
	return dmm_pfn_to_phys(pfn);
}

static dmm_phys_t page(struct env *e)
{
	return pages(e, 0, NULL);
}

/* A table page, zeroed in RAM (the IOMMU reads RAM, not the cache). */
static dmm_phys_t table(struct env *e)
{
	dmm_phys_t pa = page(e);

	memset(e->p->phys_to_virt(e->p->ctx, pa), 0, DMM_PAGE_SIZE);
	return pa;
}

static uint64_t *slot(struct env *e, dmm_phys_t tbl, unsigned idx)
{
	return (uint64_t *)e->p->phys_to_virt(e->p->ctx, tbl + (dmm_phys_t)idx * 8u);
}

static void set_pte(struct env *e, dmm_phys_t tbl, unsigned idx, uint64_t v)
{
	__atomic_store_n(slot(e, tbl, idx), v, __ATOMIC_RELEASE);
}

static uint64_t get_pte(struct env *e, dmm_phys_t tbl, unsigned idx)
{
	return __atomic_load_n(slot(e, tbl, idx), __ATOMIC_ACQUIRE);
}

static unsigned idx_of(dmm_dma_addr_t iova, unsigned level)
{
	return (unsigned)((iova >> (39u - 9u * level)) & 511u);
}

/* The table at @level holding @iova's entry, creating tables on the way. */
static dmm_phys_t table_for(struct env *e, dmm_phys_t root, dmm_dma_addr_t iova, unsigned level)
{
	dmm_phys_t t = root;

	for (unsigned l = 0; l < level; l++) {
		unsigned i = idx_of(iova, l);
		uint64_t v = get_pte(e, t, i);

		if (!(v & DMM_IOPTE_VALID)) {
			dmm_phys_t n = table(e);

			v = n | DMM_IOPTE_VALID;
			set_pte(e, t, i, v);
		}
		assert_false(v & DMM_IOPTE_LEAF);
		t = v & DMM_IOPTE_ADDR;
	}
	return t;
}

/* Leaf at @level (3: 4 KiB page, 2: 2 MiB block, 1: 1 GiB block). */
static void map(struct env *e, dmm_phys_t root, dmm_dma_addr_t iova, dmm_phys_t pa, unsigned level,
		uint64_t perm)
{
	dmm_phys_t t = table_for(e, root, iova, level);

	set_pte(e, t, idx_of(iova, level), pa | perm | DMM_IOPTE_VALID | DMM_IOPTE_LEAF);
}

static void unmap(struct env *e, dmm_phys_t root, dmm_dma_addr_t iova, unsigned level)
{
	set_pte(e, table_for(e, root, iova, level), idx_of(iova, level), 0);
}

static struct dmm_hw_dev *dev_new(struct env *e, const char *name)
{
	struct dmm_hw_dev_desc d;
	struct dmm_hw_dev *dev;

	memset(&d, 0, sizeof(d));
	d.name = name;
	d.addr_bits = 64;
	assert_ok(dmm_hw_dev_create(e->hw, &d, &dev));
	return dev;
}

static void pat(unsigned char *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (unsigned char)(seed * 131u + i * 7u + 1u);
}

static void ram_pat(struct env *e, dmm_phys_t pa, size_t n, unsigned seed)
{
	unsigned char b[8192];

	assert_true(n <= sizeof(b));
	pat(b, n, seed);
	assert_ok(dmm_hw_ram_write(e->hw, pa, b, n));
}

static int ram_is(struct env *e, dmm_phys_t pa, size_t n, unsigned seed)
{
	unsigned char want[8192], got[8192];

	assert_true(n <= sizeof(want));
	pat(want, n, seed);
	assert_ok(dmm_hw_ram_read(e->hw, pa, got, n));
	return memcmp(want, got, n) == 0;
}

static int dev_write_pat(struct dmm_hw_dev *dev, dmm_dma_addr_t bus, size_t n, unsigned seed)
{
	unsigned char b[8192];

	assert_true(n <= sizeof(b));
	pat(b, n, seed);
	return dmm_hw_dev_write(dev, bus, b, n);
}

static int dev_reads_pat(struct dmm_hw_dev *dev, dmm_dma_addr_t bus, size_t n, unsigned seed)
{
	unsigned char want[8192], got[8192];

	assert_true(n <= sizeof(want));
	pat(want, n, seed);
	assert_ok(dmm_hw_dev_read(dev, bus, got, n));
	return memcmp(want, got, n) == 0;
}

static struct dmm_hw_iommu_stats stats(struct env *e)
{
	struct dmm_hw_iommu_stats st;

	dmm_hw_iommu_get_stats(e->hw, &st);
	return st;
}

/* ---- arguments, enabling, attaching ------------------------------------------ */

static void test_bad_args(void **state)
{
	struct env e;
	struct dmm_hw_iommu_opts o;
	struct dmm_hw_iommu_stats st;
	struct dmm_hw_iommu_fault f[2];
	struct dmm_hw_dev *a, *b;
	dmm_phys_t root, root2;
	uint64_t total = 99;
	(void)state;

	env_create(&e, NULL);
	a = dev_new(&e, "a");
	b = dev_new(&e, "b");
	root = table(&e);
	root2 = table(&e);

	/* no IOMMU yet */
	assert_int_equal(dmm_hw_iommu_present(e.hw), 0);
	assert_int_equal(dmm_hw_iommu_present(NULL), 0);
	assert_rc(dmm_hw_iommu_attach(a, 1, root, 0), -DMM_ENOTSUP);
	dmm_hw_iommu_detach(a);
	dmm_hw_iommu_invalidate(e.hw, 1, 0, 0);
	dmm_hw_iommu_invalidate(NULL, 1, 0, 0);
	assert_non_null(e.p->iotlb_inval);
	e.p->iotlb_inval(e.p->ctx, 1, 0, 0); /* a no-op without an IOMMU */
	memset(&st, 0xff, sizeof(st));
	dmm_hw_iommu_get_stats(e.hw, &st);
	assert_int_equal(st.translations, 0);
	assert_int_equal(st.invalidations, 0);
	dmm_hw_iommu_get_stats(e.hw, NULL);
	assert_int_equal(dmm_hw_iommu_faults(e.hw, f, 2, &total), 0);
	assert_int_equal(total, 0);

	/* enabling */
	dmm_hw_iommu_opts_default(NULL);
	dmm_hw_iommu_opts_default(&o);
	assert_int_equal(o.iotlb_entries, 64);
	assert_int_equal(o.inval_latency_ns, 0);
	assert_rc(dmm_hw_iommu_enable(NULL, &o), -DMM_EINVAL);
	o.iotlb_entries = DMM_HW_IOTLB_MAX + 1;
	assert_rc(dmm_hw_iommu_enable(e.hw, &o), -DMM_EINVAL);
	assert_int_equal(dmm_hw_iommu_present(e.hw), 0);
	assert_ok(dmm_hw_iommu_enable(e.hw, NULL));
	assert_int_equal(dmm_hw_iommu_present(e.hw), 1);
	assert_rc(dmm_hw_iommu_enable(e.hw, NULL), -DMM_EEXIST);

	/* attaching */
	assert_rc(dmm_hw_iommu_attach(NULL, 1, root, 0), -DMM_EINVAL);
	assert_rc(dmm_hw_iommu_attach(a, 0, root, 0), -DMM_EINVAL);
	assert_rc(dmm_hw_iommu_attach(a, 1, root + 8, 0), -DMM_EINVAL);      /* not aligned */
	assert_rc(dmm_hw_iommu_attach(a, 1, 2 * GiB, 0), -DMM_EINVAL);       /* not RAM */
	assert_rc(dmm_hw_iommu_attach(a, 1, (dmm_phys_t)1 << 60, 0), -DMM_EINVAL);
	assert_ok(dmm_hw_iommu_attach(a, 1, root, 0));
	/* a domain has one table: another device may join it, not with another root */
	assert_rc(dmm_hw_iommu_attach(b, 1, root2, 0), -DMM_EINVAL);
	assert_rc(dmm_hw_iommu_attach(b, 1, 0, 1), -DMM_EINVAL);
	assert_ok(dmm_hw_iommu_attach(b, 1, root, 0));
	assert_ok(dmm_hw_iommu_attach(b, 2, root2, 0)); /* re-attach elsewhere */
	assert_ok(dmm_hw_iommu_attach(a, 3, 0, 1));     /* identity: root ignored */
	dmm_hw_iommu_detach(NULL);
	dmm_hw_iommu_detach(a);
	dmm_hw_iommu_detach(a);
	assert_int_equal(dmm_hw_iommu_faults(e.hw, NULL, 2, &total), 0);
	assert_int_equal(dmm_hw_iommu_faults(NULL, f, 2, NULL), 0);
	env_destroy(&e);
}

/* ---- 4 KiB pages: data, counting -------------------------------------------- */

static void test_pages(void **state)
{
	struct env e;
	struct dmm_hw_dev *dev;
	struct dmm_hw_iommu_stats st;
	dmm_phys_t root, pa[3];
	dmm_dma_addr_t eff;
	dmm_phys_t where;
	uint64_t run;
	(void)state;

	env_create(&e, &(struct dmm_hw_iommu_opts){ 0, 0 });
	dev = dev_new(&e, "nic");
	root = table(&e);
	for (unsigned i = 0; i < 3; i++) {
		pa[i] = page(&e);
		ram_pat(&e, pa[i], 4096, 10 + i);
	}
	/* IOVA pages 0, 1, 2 scattered over physical pages 2, 0, 1 */
	map(&e, root, IOVA, pa[2], 3, PERM_RW);
	map(&e, root, IOVA + 4096, pa[0], 3, PERM_RW);
	map(&e, root, IOVA + 8192, pa[1], 3, PERM_RW);
	assert_ok(dmm_hw_iommu_attach(dev, 7, root, 0));

	/* a device write lands in the right physical page, nowhere else */
	assert_ok(dev_write_pat(dev, IOVA + 100, 200, 1));
	assert_true(ram_is(&e, pa[2] + 100, 200, 1));
	assert_true(ram_is(&e, pa[0], 4096, 10));
	assert_true(ram_is(&e, pa[1], 4096, 11));
	/* one piece, translated twice (check, perform), counted once */
	st = stats(&e);
	assert_int_equal(st.translations, 1);
	assert_int_equal(st.iotlb_misses, 1);
	assert_int_equal(st.iotlb_hits, 0);
	assert_int_equal(st.walks, 1);
	assert_int_equal(st.walk_reads, 4);
	assert_int_equal(st.iotlb_entries, 1);

	/* a device read of the other pages */
	assert_true(dev_reads_pat(dev, IOVA + 4096, 4096, 10));
	assert_true(dev_reads_pat(dev, IOVA + 8192, 4096, 11));
	st = stats(&e);
	assert_int_equal(st.translations, 3);
	assert_int_equal(st.iotlb_misses, 3);
	assert_int_equal(st.walk_reads, 12);

	/* an access over three pages: three pieces, all hits now */
	{
		unsigned char w[3 * 4096], r[4096];

		pat(w, sizeof(w), 5);
		assert_ok(dmm_hw_dev_write(dev, IOVA, w, sizeof(w)));
		assert_ok(dmm_hw_ram_read(e.hw, pa[2], r, 4096));
		assert_memory_equal(r, w, 4096);
		assert_ok(dmm_hw_ram_read(e.hw, pa[0], r, 4096));
		assert_memory_equal(r, w + 4096, 4096);
		assert_ok(dmm_hw_ram_read(e.hw, pa[1], r, 4096));
		assert_memory_equal(r, w + 8192, 4096);
	}
	st = stats(&e);
	assert_int_equal(st.translations, 6);
	assert_int_equal(st.iotlb_hits, 3);
	assert_int_equal(st.iotlb_misses, 3);
	assert_int_equal(st.walks, 3);
	assert_int_equal(st.stale_hits, 0);

	/* resolve answers without counting */
	assert_ok(dmm_hw_dev_resolve(dev, IOVA + 4096 + 12, 1, &eff, &where, &run));
	assert_int_equal(where, pa[0] + 12);
	assert_int_equal(run, 4096 - 12);
	assert_rc(dmm_hw_dev_resolve(dev, IOVA + 3 * 4096, 0, &eff, &where, &run), -DMM_EFAULT);
	assert_int_equal(stats(&e).translations, 6);
	assert_int_equal(stats(&e).faults_unmapped, 0);
	env_destroy(&e);
}

/* ---- faults ------------------------------------------------------------------- */

static void test_unmapped_faults(void **state)
{
	struct env e;
	struct dmm_hw_dev *dev;
	struct dmm_hw_iommu_stats st;
	struct dmm_hw_iommu_fault f[4];
	struct dmm_hw_dev_event ev;
	struct dmm_hw_dev_stats ds;
	dmm_phys_t root, pa;
	uint64_t total;
	unsigned char b[64];
	(void)state;

	env_create(&e, &(struct dmm_hw_iommu_opts){ 0, 0 });
	dev = dev_new(&e, "disk");
	root = table(&e);
	pa = page(&e);
	ram_pat(&e, pa, 4096, 1);
	map(&e, root, IOVA, pa, 3, PERM_RW);
	assert_ok(dmm_hw_iommu_attach(dev, 5, root, 0));

	/* nothing at all under this level-0 entry */
	assert_rc(dev_write_pat(dev, 0x8000000000ull, 64, 2), -DMM_EFAULT);
	/* the next page: its level-3 entry is empty. The write would span the
	 * mapped page and the unmapped one: nothing is written at all. */
	assert_rc(dev_write_pat(dev, IOVA + 4096 - 32, 64, 2), -DMM_EFAULT);
	assert_true(ram_is(&e, pa, 4096, 1));
	/* reads fault too */
	assert_rc(dmm_hw_dev_read(dev, IOVA + 8192, b, 8), -DMM_EFAULT);
	/* beyond the 48 bits the tables cover */
	assert_rc(dev_write_pat(dev, (dmm_dma_addr_t)1 << 48 | IOVA, 8, 2), -DMM_EFAULT);
	assert_true(ram_is(&e, pa, 4096, 1));

	st = stats(&e);
	assert_int_equal(st.faults_unmapped, 4);
	assert_int_equal(st.faults_perm, 0);
	assert_int_equal(dmm_hw_iommu_faults(e.hw, f, 4, &total), 4);
	assert_int_equal(total, 4);
	assert_int_equal(f[0].domain_id, 5);
	assert_int_equal(f[0].iova, 0x8000000000ull);
	assert_int_equal(f[0].write, 1);
	assert_int_equal(f[0].kind, DMM_HW_IOMMU_UNMAPPED);
	assert_string_equal(f[0].dev, "disk");
	assert_int_equal(f[1].iova, IOVA + 4096); /* the piece that failed */
	assert_int_equal(f[2].iova, IOVA + 8192);
	assert_int_equal(f[2].write, 0);
	assert_int_equal(f[3].iova, (dmm_dma_addr_t)1 << 48 | IOVA);
	/* the engine saw its faults too */
	dmm_hw_dev_get_stats(dev, &ds);
	assert_int_equal(ds.faults, 4);
	assert_int_equal(ds.writes, 0);
	assert_int_equal(dmm_hw_dev_events(dev, &ev, 1, NULL), 1);
	assert_int_equal(ev.kind, DMM_HW_EV_FAULT);
	/* walk reads: 1 (empty L0 slot) + 4 (page) + 4 (empty L3) + 4 (empty L3) + 0 */
	assert_int_equal(st.walk_reads, 13);

	/* the log is a ring of the last 64, oldest first */
	for (unsigned i = 0; i < 70; i++)
		assert_rc(dmm_hw_dev_read(dev, IOVA + (dmm_dma_addr_t)(i + 16) * 4096, b, 1),
			  -DMM_EFAULT);
	{
		static struct dmm_hw_iommu_fault all[DMM_HW_IOMMU_FAULTS + 4];

		assert_int_equal(dmm_hw_iommu_faults(e.hw, all, DMM_HW_IOMMU_FAULTS + 4, &total),
				 DMM_HW_IOMMU_FAULTS);
		assert_int_equal(total, 74);
		assert_int_equal(all[0].iova, IOVA + (dmm_dma_addr_t)(74 - 64 - 4 + 16) * 4096);
		assert_int_equal(all[63].iova, IOVA + (dmm_dma_addr_t)(69 + 16) * 4096);
		assert_int_equal(dmm_hw_iommu_faults(e.hw, all, 2, NULL), 2);
		assert_int_equal(all[1].iova, IOVA + (dmm_dma_addr_t)(69 + 16) * 4096);
	}
	env_destroy(&e);
}

static void test_permission_faults(void **state)
{
	struct env e;
	struct dmm_hw_dev *dev;
	struct dmm_hw_iommu_fault f;
	struct dmm_hw_iommu_stats st;
	dmm_phys_t root, ro, wo;
	dmm_dma_addr_t eff;
	dmm_phys_t where;
	uint64_t run;
	unsigned char b[16];
	(void)state;

	env_create(&e, &(struct dmm_hw_iommu_opts){ 0, 0 });
	dev = dev_new(&e, "gpu");
	root = table(&e);
	ro = page(&e);
	wo = page(&e);
	ram_pat(&e, ro, 4096, 1);
	ram_pat(&e, wo, 4096, 2);
	map(&e, root, IOVA, ro, 3, DMM_IOPTE_READ);
	map(&e, root, IOVA + 4096, wo, 3, DMM_IOPTE_WRITE);
	assert_ok(dmm_hw_iommu_attach(dev, 9, root, 0));

	/* READ-only: reads work, a write faults and changes nothing (on the
	 * walk and again from the IOTLB) */
	assert_true(dev_reads_pat(dev, IOVA, 4096, 1));
	assert_rc(dev_write_pat(dev, IOVA + 8, 8, 3), -DMM_EFAULT);
	assert_true(ram_is(&e, ro, 4096, 1));
	assert_int_equal(stats(&e).faults_perm, 1);
	assert_int_equal(dmm_hw_iommu_faults(e.hw, &f, 1, NULL), 1);
	assert_int_equal(f.kind, DMM_HW_IOMMU_PERM);
	assert_int_equal(f.write, 1);
	assert_int_equal(f.iova, IOVA + 8);
	assert_int_equal(f.domain_id, 9);
	/* WRITE-only: a read faults on the walk; the leaf is cached anyway,
	 * so the write that follows hits */
	assert_rc(dmm_hw_dev_read(dev, IOVA + 4096, b, sizeof(b)), -DMM_EFAULT);
	assert_ok(dev_write_pat(dev, IOVA + 4096, 4096, 4));
	assert_true(ram_is(&e, wo, 4096, 4));
	st = stats(&e);
	assert_int_equal(st.faults_perm, 2);
	assert_int_equal(st.faults_unmapped, 0);
	assert_int_equal(st.iotlb_misses, 2);
	assert_int_equal(st.iotlb_hits, 2);
	/* resolve tells the two faults apart, and records neither */
	assert_rc(dmm_hw_dev_resolve(dev, IOVA, 1, &eff, &where, &run), -DMM_EPERM);
	assert_rc(dmm_hw_dev_resolve(dev, IOVA + 8192, 1, &eff, &where, &run), -DMM_EFAULT);
	assert_int_equal(stats(&e).faults_perm, 2);
	assert_int_equal(stats(&e).faults_unmapped, 0);
	env_destroy(&e);
}

/* ---- blocks ------------------------------------------------------------------------ */

static void test_blocks(void **state)
{
	struct env e;
	struct dmm_hw_dev *dev;
	struct dmm_hw_iommu_stats st;
	struct dmm_constraint hi = DMM_CONSTRAINT_ANY;
	const dmm_dma_addr_t blk2m = 0x40200000u, blk1g = 0x80000000u;
	dmm_phys_t root, big, data;
	dmm_dma_addr_t eff;
	dmm_phys_t where;
	uint64_t run;
	(void)state;

	env_create(&e, &(struct dmm_hw_iommu_opts){ 0, 0 });
	dev = dev_new(&e, "dma");
	root = table(&e);
	big = pages(&e, 9, NULL); /* 2 MiB, naturally aligned */
	assert_int_equal(big & (2 * MiB - 1), 0);
	map(&e, root, blk2m, big, 2, PERM_RW);
	/* a 1 GiB block over [4 GiB, 5 GiB): only its first 24 MiB are RAM */
	hi.lo = 4 * GiB;
	data = pages(&e, 0, &hi);
	map(&e, root, blk1g, 4 * GiB, 1, PERM_RW);
	assert_ok(dmm_hw_iommu_attach(dev, 1, root, 0));

	/* 2 MiB block, at an offset inside it; one piece across 4 KiB pages */
	ram_pat(&e, big + 0x12000 - 64, 128, 1);
	assert_ok(dev_write_pat(dev, blk2m + 0x12345, 5000, 2));
	assert_true(ram_is(&e, big + 0x12345, 5000, 2));
	assert_true(ram_is(&e, big + 0x12000 - 64, 64, 1));
	assert_ok(dmm_hw_dev_resolve(dev, blk2m + 0x12345, 0, &eff, &where, &run));
	assert_int_equal(where, big + 0x12345);
	assert_int_equal(run, 2 * MiB - 0x12345);
	st = stats(&e);
	assert_int_equal(st.translations, 1);
	assert_int_equal(st.walk_reads, 3);
	/* the one IOTLB entry covers the whole block */
	assert_true(dev_reads_pat(dev, blk2m + 0x12345, 5000, 2));
	ram_pat(&e, big + 2 * MiB - 4096, 4096, 3);
	assert_true(dev_reads_pat(dev, blk2m + 2 * MiB - 4096, 4096, 3));
	st = stats(&e);
	assert_int_equal(st.iotlb_hits, 2);
	assert_int_equal(st.iotlb_misses, 1);
	assert_int_equal(st.iotlb_entries, 1);
	/* past the block: nothing mapped */
	assert_rc(dev_write_pat(dev, blk2m + 2 * MiB - 8, 16, 4), -DMM_EFAULT);
	assert_true(ram_is(&e, big + 2 * MiB - 4096, 4096, 3));

	/* 1 GiB block */
	assert_ok(dev_write_pat(dev, blk1g + (data - 4 * GiB) + 40, 1000, 5));
	assert_true(ram_is(&e, data + 40, 1000, 5));
	st = stats(&e);
	assert_int_equal(st.walk_reads, 3 + 3 + 2);
	/* inside the block but not RAM: the engine's RAM check faults */
	assert_rc(dev_write_pat(dev, blk1g + 512 * MiB, 8, 5), -DMM_EFAULT);
	assert_int_equal(stats(&e).faults_unmapped, 1); /* (the one past the 2 MiB block) */
	env_destroy(&e);
}

/* ---- the IOTLB: LRU, capacity -------------------------------------------------------- */

static void test_iotlb_lru(void **state)
{
	struct env e;
	struct dmm_hw_dev *dev;
	struct dmm_hw_iommu_stats st;
	dmm_phys_t root, pa[6];
	unsigned char b[8];
	/* page touched -> 1 if it must hit */
	static const struct {
		unsigned page, hit;
	} seq[] = {
		{ 0, 0 }, { 1, 0 }, { 2, 0 }, { 3, 0 }, /* fill 4 entries */
		{ 0, 1 },                               /* LRU order now 1 2 3 0 */
		{ 4, 0 },                               /* evicts 1 */
		{ 1, 0 },                               /* evicts 2 */
		{ 0, 1 }, { 3, 1 }, { 4, 1 },
		{ 2, 0 },                               /* evicts 1 (0, 3, 4 more recent) */
		{ 5, 0 },                               /* evicts 0 */
		{ 3, 1 },
	};
	(void)state;

	env_create(&e, &(struct dmm_hw_iommu_opts){ 4, 0 });
	dev = dev_new(&e, "lru");
	root = table(&e);
	for (unsigned i = 0; i < 6; i++) {
		pa[i] = page(&e);
		map(&e, root, IOVA + (dmm_dma_addr_t)i * 4096, pa[i], 3, PERM_RW);
	}
	assert_ok(dmm_hw_iommu_attach(dev, 2, root, 0));
	for (unsigned k = 0; k < sizeof(seq) / sizeof(seq[0]); k++) {
		struct dmm_hw_iommu_stats before = stats(&e);

		assert_ok(dmm_hw_dev_read(dev, IOVA + (dmm_dma_addr_t)seq[k].page * 4096, b, 8));
		st = stats(&e);
		if (st.iotlb_hits - before.iotlb_hits != seq[k].hit)
			fail_msg("step %u (page %u): hit %d, want %u", k, seq[k].page,
				 (int)(st.iotlb_hits - before.iotlb_hits), seq[k].hit);
		assert_ok(dmm_hw_check(e.hw));
	}
	st = stats(&e);
	assert_int_equal(st.iotlb_entries, 4);
	assert_int_equal(st.iotlb_evictions, 4);
	assert_int_equal(st.iotlb_hits + st.iotlb_misses, st.translations);
	env_destroy(&e);
}

/* ---- stale entries: the deferred-invalidation hazard ----------------------------------- */

static void test_stale_entries(void **state)
{
	struct env e;
	struct dmm_hw_dev *dev;
	struct dmm_hw_iommu_stats st;
	struct dmm_hw_iommu_fault f;
	dmm_phys_t root, old, new;
	unsigned char b[8];
	(void)state;

	env_create(&e, &(struct dmm_hw_iommu_opts){ 0, 0 });
	dev = dev_new(&e, "eth");
	root = table(&e);
	old = page(&e);
	new = page(&e);
	ram_pat(&e, old, 4096, 1);
	ram_pat(&e, new, 4096, 2);
	map(&e, root, IOVA, old, 3, PERM_RW);
	assert_ok(dmm_hw_iommu_attach(dev, 4, root, 0));
	assert_true(dev_reads_pat(dev, IOVA, 4096, 1)); /* the IOTLB holds the entry */
	assert_int_equal(stats(&e).stale_hits, 0);

	/* unmapped, not invalidated: the device still writes the old page,
	 * which the driver may already have given to someone else */
	unmap(&e, root, IOVA, 3);
	assert_ok(dev_write_pat(dev, IOVA + 16, 64, 3));
	assert_true(ram_is(&e, old + 16, 64, 3));
	st = stats(&e);
	assert_int_equal(st.stale_hits, 1);
	assert_int_equal(st.last_stale_iova, IOVA + 16);
	assert_int_equal(st.last_stale_domain, 4);
	assert_int_equal(st.faults_unmapped, 0);

	/* remapped to another page without invalidation: still the old one */
	map(&e, root, IOVA, new, 3, PERM_RW);
	assert_ok(dev_write_pat(dev, IOVA + 128, 64, 4));
	assert_true(ram_is(&e, old + 128, 64, 4));
	assert_true(ram_is(&e, new, 4096, 2));
	assert_int_equal(stats(&e).stale_hits, 2);

	/* a ranged invalidation that does not cover the page changes nothing */
	dmm_hw_iommu_invalidate(e.hw, 4, IOVA + 4096, 4096);
	dmm_hw_iommu_invalidate(e.hw, 4, IOVA - 4096, 4096);
	assert_int_equal(stats(&e).entries_dropped, 0);
	/* one covering a single byte of it drops it: now the new page */
	dmm_hw_iommu_invalidate(e.hw, 4, IOVA - 100, 101);
	st = stats(&e);
	assert_int_equal(st.invalidations, 3);
	assert_int_equal(st.invalidations_domain, 0);
	assert_int_equal(st.entries_dropped, 1);
	assert_int_equal(st.iotlb_entries, 0);
	assert_ok(dev_write_pat(dev, IOVA + 256, 64, 5));
	assert_true(ram_is(&e, new + 256, 64, 5));
	assert_true(ram_is(&e, old + 256, 64, 1));
	assert_int_equal(stats(&e).stale_hits, 2);

	/* permissions taken away without invalidation: the cached RW entry
	 * still lets the device write (stale) */
	map(&e, root, IOVA, new, 3, DMM_IOPTE_READ);
	assert_ok(dev_write_pat(dev, IOVA + 512, 8, 6));
	assert_true(ram_is(&e, new + 512, 8, 6));
	assert_int_equal(stats(&e).stale_hits, 3);
	/* permissions added are not stale (the entry is only narrower) */
	dmm_hw_iommu_invalidate(e.hw, 4, IOVA, 4096);
	assert_ok(dmm_hw_dev_read(dev, IOVA, b, 8));      /* caches R only */
	map(&e, root, IOVA, new, 3, PERM_RW);
	assert_ok(dmm_hw_dev_read(dev, IOVA, b, 8));
	assert_int_equal(stats(&e).stale_hits, 3);
	/* ... and the cached R-only entry refuses the write until invalidated */
	assert_rc(dev_write_pat(dev, IOVA, 8, 7), -DMM_EFAULT);
	assert_int_equal(stats(&e).faults_perm, 1);

	/* unmapped and invalidated through the platform hook: the access faults */
	unmap(&e, root, IOVA, 3);
	e.p->iotlb_inval(e.p->ctx, 4, IOVA, 4096);
	assert_rc(dev_write_pat(dev, IOVA + 16, 64, 8), -DMM_EFAULT);
	assert_true(ram_is(&e, old + 16, 64, 3));
	st = stats(&e);
	assert_int_equal(st.faults_unmapped, 1);
	assert_int_equal(st.invalidations, 5);
	assert_int_equal(dmm_hw_iommu_faults(e.hw, &f, 1, NULL), 1);
	assert_int_equal(f.kind, DMM_HW_IOMMU_UNMAPPED);
	assert_int_equal(f.iova, IOVA + 16);
	env_destroy(&e);
}

/* ---- domains ------------------------------------------------------------------------------ */

static void test_domains(void **state)
{
	struct env e;
	struct dmm_hw_dev *a, *b, *c;
	struct dmm_hw_iommu_stats st;
	dmm_phys_t ra, rb, pa_a, pa_b;
	(void)state;

	env_create(&e, &(struct dmm_hw_iommu_opts){ 0, 0 });
	a = dev_new(&e, "a");
	b = dev_new(&e, "b");
	c = dev_new(&e, "c");
	ra = table(&e);
	rb = table(&e);
	pa_a = page(&e);
	pa_b = page(&e);
	ram_pat(&e, pa_a, 4096, 1);
	ram_pat(&e, pa_b, 4096, 2);
	/* the same IOVA in two domains, two pages */
	map(&e, ra, IOVA, pa_a, 3, PERM_RW);
	map(&e, rb, IOVA, pa_b, 3, PERM_RW);
	assert_ok(dmm_hw_iommu_attach(a, 1, ra, 0));
	assert_ok(dmm_hw_iommu_attach(b, 2, rb, 0));
	assert_ok(dmm_hw_iommu_attach(c, 1, ra, 0)); /* shares a's domain */
	assert_ok(dev_write_pat(a, IOVA, 64, 3));
	assert_ok(dev_write_pat(b, IOVA, 64, 4));
	assert_true(ram_is(&e, pa_a, 64, 3));
	assert_true(ram_is(&e, pa_b, 64, 4));
	assert_true(dev_reads_pat(c, IOVA, 64, 3)); /* a hit on a's entry */
	st = stats(&e);
	assert_int_equal(st.iotlb_misses, 2);
	assert_int_equal(st.iotlb_hits, 1);
	assert_int_equal(st.iotlb_entries, 2);

	/* clear both tables, invalidate domain 1 only: b keeps its stale entry */
	unmap(&e, ra, IOVA, 3);
	unmap(&e, rb, IOVA, 3);
	dmm_hw_iommu_invalidate(e.hw, 1, 0, 0);
	st = stats(&e);
	assert_int_equal(st.invalidations_domain, 1);
	assert_int_equal(st.entries_dropped, 1);
	assert_int_equal(st.iotlb_entries, 1);
	assert_rc(dev_write_pat(a, IOVA, 64, 5), -DMM_EFAULT);
	assert_rc(dev_write_pat(c, IOVA, 64, 5), -DMM_EFAULT);
	assert_ok(dev_write_pat(b, IOVA, 64, 6));
	assert_true(ram_is(&e, pa_a, 64, 3));
	assert_true(ram_is(&e, pa_b, 64, 6));
	assert_int_equal(stats(&e).stale_hits, 1);
	/* a ranged invalidation of domain 1 does not touch domain 2 either */
	e.p->iotlb_inval(e.p->ctx, 1, IOVA, 4096);
	assert_ok(dev_write_pat(b, IOVA, 64, 7));
	/* domain 0: every domain */
	dmm_hw_iommu_invalidate(e.hw, 0, 0, 0);
	assert_rc(dev_write_pat(b, IOVA, 64, 8), -DMM_EFAULT);
	assert_true(ram_is(&e, pa_b, 64, 7));
	assert_int_equal(stats(&e).iotlb_entries, 0);

	/* detached: the engine is back to bus = physical */
	dmm_hw_iommu_detach(b);
	assert_ok(dev_write_pat(b, pa_b, 64, 9));
	assert_true(ram_is(&e, pa_b, 64, 9));
	env_destroy(&e);
}

static void test_identity(void **state)
{
	struct env e;
	struct dmm_hw_dev *dev;
	struct dmm_hw_iommu_stats st;
	struct dmm_hw_dev_stats ds;
	uint64_t total;
	dmm_phys_t pa;
	(void)state;

	env_create(&e, &(struct dmm_hw_iommu_opts){ 0, 0 });
	dev = dev_new(&e, "pt");
	pa = pages(&e, 1, NULL);
	assert_ok(dmm_hw_iommu_attach(dev, 3, 0, 1));
	assert_ok(dev_write_pat(dev, pa + 100, 6000, 1));
	assert_true(ram_is(&e, pa + 100, 6000, 1));
	assert_true(dev_reads_pat(dev, pa + 100, 6000, 1));
	/* not RAM: the engine's own check faults; the IOMMU records nothing */
	assert_rc(dev_write_pat(dev, 2 * GiB, 8, 1), -DMM_EFAULT);
	dmm_hw_dev_get_stats(dev, &ds);
	assert_int_equal(ds.faults, 1);
	st = stats(&e);
	assert_int_equal(st.translations, 3);
	assert_int_equal(st.iotlb_hits + st.iotlb_misses + st.walks, 0);
	assert_int_equal(st.iotlb_entries, 0);
	assert_int_equal(dmm_hw_iommu_faults(e.hw, NULL, 0, &total), 0);
	assert_int_equal(total, 0);
	env_destroy(&e);
}

/* ---- the walker reads RAM: a PTE still in a dirty CPU line is not there ---------------- */

static void test_walker_reads_ram(void **state)
{
	struct env e;
	struct dmm_hw_dev *dev;
	dmm_phys_t root, l3, pa;
	uint64_t pte;
	(void)state;

	env_create(&e, &(struct dmm_hw_iommu_opts){ 0, 0 });
	dev = dev_new(&e, "nc");
	root = table(&e);
	pa = page(&e);
	ram_pat(&e, pa, 4096, 1);
	l3 = table_for(&e, root, IOVA, 3);
	assert_ok(dmm_hw_iommu_attach(dev, 1, root, 0));
	pte = pa | PERM_RW | DMM_IOPTE_VALID | DMM_IOPTE_LEAF | DMM_IOPTE_FIRST | DMM_IOPTE_LAST;
	/* stored through the (write-back) CPU cache: RAM still holds 0 */
	assert_ok(dmm_hw_cpu_write(e.hw, l3 + idx_of(IOVA, 3) * 8u, &pte, sizeof(pte)));
	assert_rc(dev_write_pat(dev, IOVA, 64, 2), -DMM_EFAULT);
	assert_true(ram_is(&e, pa, 64, 1));
	/* cleaned to RAM: the IOMMU sees it (software bits ignored) */
	assert_ok(dmm_hw_cache_maint(e.hw, DMM_CACHE_CLEAN, l3, DMM_PAGE_SIZE));
	assert_ok(dev_write_pat(dev, IOVA, 64, 2));
	assert_true(ram_is(&e, pa, 64, 2));
	env_destroy(&e);
}

/* ---- malformed entries ------------------------------------------------------------------- */

static void test_malformed(void **state)
{
	struct env e;
	struct dmm_hw_dev *dev;
	struct dmm_hw_iommu_stats st;
	dmm_phys_t root, pa, l3, l2;
	const dmm_dma_addr_t a = IOVA, b = IOVA + 2 * MiB, c = 0x8000000000ull, d = IOVA + 4 * MiB;
	(void)state;

	env_create(&e, &(struct dmm_hw_iommu_opts){ 0, 0 });
	dev = dev_new(&e, "bad");
	root = table(&e);
	pa = page(&e);
	ram_pat(&e, pa, 4096, 1);
	/* a level-3 entry without LEAF */
	l3 = table_for(&e, root, a, 3);
	set_pte(&e, l3, idx_of(a, 3), pa | PERM_RW | DMM_IOPTE_VALID);
	/* a level-2 entry pointing at a "table" that is not RAM */
	l2 = table_for(&e, root, b, 2);
	set_pte(&e, l2, idx_of(b, 2), 2 * GiB | DMM_IOPTE_VALID);
	/* LEAF at level 0 (no 512 GiB blocks) */
	set_pte(&e, root, idx_of(c, 0), 0 | PERM_RW | DMM_IOPTE_VALID | DMM_IOPTE_LEAF);
	/* READ and WRITE without VALID */
	map(&e, root, d, pa, 3, PERM_RW);
	set_pte(&e, table_for(&e, root, d, 3), idx_of(d, 3), pa | PERM_RW | DMM_IOPTE_LEAF);
	assert_ok(dmm_hw_iommu_attach(dev, 1, root, 0));

	assert_rc(dev_write_pat(dev, a, 8, 2), -DMM_EFAULT);
	assert_rc(dev_write_pat(dev, b, 8, 2), -DMM_EFAULT);
	assert_rc(dev_write_pat(dev, c, 8, 2), -DMM_EFAULT);
	assert_rc(dev_write_pat(dev, d, 8, 2), -DMM_EFAULT);
	assert_true(ram_is(&e, pa, 4096, 1));
	st = stats(&e);
	assert_int_equal(st.faults_unmapped, 4);
	assert_int_equal(st.iotlb_entries, 0);
	assert_int_equal(st.walk_reads, 4 + 3 + 1 + 4);
	env_destroy(&e);
}

/* ---- the latency knob ----------------------------------------------------------------------- */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void test_latency(void **state)
{
	struct env e;
	const uint64_t lat = 3000000; /* 3 ms */
	uint64_t t0, t1, t2;
	(void)state;

	env_create(&e, &(struct dmm_hw_iommu_opts){ 16, lat });
	t0 = now_ns();
	dmm_hw_iommu_invalidate(e.hw, 1, 0, 4096);
	t1 = now_ns();
	e.p->iotlb_inval(e.p->ctx, 1, 0, 0);
	t2 = now_ns();
	assert_true(t1 - t0 >= lat);
	assert_true(t2 - t1 >= lat);
	assert_int_equal(stats(&e).invalidations, 2);
	env_destroy(&e);

	/* and none without the knob (a generous bound: sanitizers, loaded hosts) */
	env_create(&e, &(struct dmm_hw_iommu_opts){ 16, 0 });
	t0 = now_ns();
	for (unsigned i = 0; i < 10; i++)
		dmm_hw_iommu_invalidate(e.hw, 1, 0, 0);
	assert_true(now_ns() - t0 < 10 * lat);
	env_destroy(&e);
}

/* ---- two devices, two domains, two threads ---------------------------------------------------- */

#define MT_PAGES 6
#define MT_ITERS 3000

struct mt_arg {
	struct env *e;
	struct dmm_hw_dev *dev;
	uint32_t domain;
	dmm_phys_t pa[MT_PAGES];
	unsigned id;
	unsigned failed;
	uint64_t accesses;
	/* the last write */
	unsigned last_it, last_pg;
	size_t last_off, last_len;
};

static unsigned char mt_byte(unsigned id, unsigned it, size_t i)
{
	return (unsigned char)(it ^ i ^ (id << 7));
}

static void *mt_thread(void *p)
{
	struct mt_arg *a = p;
	uint64_t seed = 0x1234567u + a->id;

	for (unsigned it = 0; it < MT_ITERS && !a->failed; it++) {
		/* pages 0 .. MT_PAGES - 2 (an access may run into the next one);
		 * the last page is never touched */
		unsigned pg = (unsigned)tu_rand_below(&seed, MT_PAGES - 2);
		size_t off = (size_t)tu_rand_below(&seed, 4096);
		size_t len = 1 + (size_t)tu_rand_below(&seed, 4096);
		unsigned char w[4096], r[4096];
		dmm_dma_addr_t bus = IOVA + (dmm_dma_addr_t)pg * 4096 + off;

		for (size_t i = 0; i < len; i++)
			w[i] = mt_byte(a->id, it, i);
		if (dmm_hw_dev_write(a->dev, bus, w, len) || dmm_hw_dev_read(a->dev, bus, r, len) ||
		    memcmp(w, r, len) != 0)
			a->failed++;
		a->accesses += 2;
		a->last_it = it;
		a->last_pg = pg;
		a->last_off = off;
		a->last_len = len;
		if (it % 97 == 0)
			dmm_hw_iommu_invalidate(a->e->hw, a->domain, 0, 0);
		else if (it % 31 == 0)
			a->e->p->iotlb_inval(a->e->p->ctx, a->domain, bus, len);
	}
	return NULL;
}

static void test_two_threads(void **state)
{
	struct env e;
	static struct mt_arg a[2];
	struct dmm_hw_iommu_stats st;
	pthread_t t[2];
	(void)state;

	env_create(&e, &(struct dmm_hw_iommu_opts){ 8, 0 }); /* fewer entries than pages */
	for (unsigned k = 0; k < 2; k++) {
		dmm_phys_t root = table(&e);

		memset(&a[k], 0, sizeof(a[k]));
		a[k].e = &e;
		a[k].id = k;
		a[k].domain = 10 + k;
		a[k].dev = dev_new(&e, k ? "t1" : "t0");
		/* the same IOVAs in both domains, different pages */
		for (unsigned i = 0; i < MT_PAGES; i++) {
			a[k].pa[i] = page(&e);
			ram_pat(&e, a[k].pa[i], 4096, 50 + k);
			map(&e, root, IOVA + (dmm_dma_addr_t)i * 4096, a[k].pa[i], 3, PERM_RW);
		}
		assert_ok(dmm_hw_iommu_attach(a[k].dev, a[k].domain, root, 0));
	}
	for (unsigned k = 0; k < 2; k++)
		assert_int_equal(pthread_create(&t[k], NULL, mt_thread, &a[k]), 0);
	for (unsigned k = 0; k < 2; k++)
		assert_int_equal(pthread_join(t[k], NULL), 0);
	assert_int_equal(a[0].failed, 0);
	assert_int_equal(a[1].failed, 0);
	st = stats(&e);
	assert_int_equal(st.stale_hits, 0);
	assert_int_equal(st.faults_unmapped + st.faults_perm, 0);
	assert_int_equal(st.iotlb_hits + st.iotlb_misses, st.translations);
	assert_true(st.translations >= a[0].accesses + a[1].accesses);
	assert_true(st.iotlb_evictions > 0);
	assert_true(st.iotlb_entries <= 8);
	for (unsigned k = 0; k < 2; k++) {
		/* each domain's pages hold its own thread's last write ... */
		for (size_t i = 0; i < a[k].last_len; i++) {
			size_t o = a[k].last_off + i;
			unsigned char c;

			assert_ok(dmm_hw_ram_read(e.hw, a[k].pa[a[k].last_pg + o / 4096] + o % 4096, &c, 1));
			assert_int_equal(c, mt_byte(k, a[k].last_it, i));
		}
		/* ... and the page no access reached is intact */
		assert_true(ram_is(&e, a[k].pa[MT_PAGES - 1], 4096, 50 + k));
	}
	env_destroy(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_args),
		cmocka_unit_test(test_pages),
		cmocka_unit_test(test_unmapped_faults),
		cmocka_unit_test(test_permission_faults),
		cmocka_unit_test(test_blocks),
		cmocka_unit_test(test_iotlb_lru),
		cmocka_unit_test(test_stale_entries),
		cmocka_unit_test(test_domains),
		cmocka_unit_test(test_identity),
		cmocka_unit_test(test_walker_reads_ram),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_latency),
		cmocka_unit_test(test_two_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

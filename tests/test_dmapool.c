/* SPDX-License-Identifier: MIT */
/*
 * Small-block DMA pools: every block aligned and inside its boundary in bus
 * addresses, no two blocks overlapping, every offset of a chunk against
 * free (only block starts free), contents kept, zeroing, pools of a
 * 32-bit device below 4 GiB, non-coherent devices (uncached chunks, atomic
 * requests), every bad input refused with nothing changed, destroy with
 * live blocks refused, destroy with a chunk's page pinned refused (that
 * chunk kept, the pool usable), chunks within the device's segment
 * boundary, a chunk mapped page by page behind an IOMMU, two threads, and
 * a randomized run checked after every step.
 */
#include <pthread.h>

#include "tu_dma.h"
#include <dmamem/iommu.h>


static struct dmm_dma_pool_stats stats(struct dmm_dma_pool *p)
{
	struct dmm_dma_pool_stats st;
	assert_ok(dmm_dma_pool_get_stats(p, &st));
	return st;
}

/* Everything but the rejected-call counter is the same. */
static void assert_unchanged(const struct dmm_dma_pool_stats *a, const struct dmm_dma_pool_stats *b)
{
	struct dmm_dma_pool_stats x = *a, y = *b;
	x.fail_invalid = y.fail_invalid = 0;
	assert_memory_equal(&x, &y, sizeof(x));
}

/* The block is aligned, inside its boundary and the CPU and bus addresses
 * name the same bytes. */
static void check_block(struct tu_env *e, struct dmm_device *dev, const struct dmm_dma_pool_stats *st,
			void *cpu, dmm_dma_addr_t dma)
{
	dmm_phys_t pa;
	assert_int_equal(dma % st->align, 0);
	if (st->boundary)
		assert_int_equal(dma / st->boundary, (dma + st->size - 1) / st->boundary);
	assert_ok(dmm_dma_bus_to_phys(dev, dma, &pa));
	assert_ptr_equal(cpu, (uint8_t *)dmm_pfn_to_virt(e->mem, dmm_phys_to_pfn(pa)) +
				      (pa & (DMM_PAGE_SIZE - 1)));
}

static uint64_t pat(dmm_dma_addr_t dma, size_t i, uint64_t salt)
{
	return (dma + i) * 0x9e3779b97f4a7c15ull ^ salt;
}

static void fill(void *cpu, dmm_dma_addr_t dma, size_t size, uint64_t salt)
{
	uint8_t *b = cpu;
	for (size_t i = 0; i < size; i++)
		b[i] = (uint8_t)(pat(dma, i, salt) >> 56);
}

static int verify(const void *cpu, dmm_dma_addr_t dma, size_t size, uint64_t salt)
{
	const uint8_t *b = cpu;
	for (size_t i = 0; i < size; i++)
		if (b[i] != (uint8_t)(pat(dma, i, salt) >> 56))
			return 0;
	return 1;
}

static int cmp_dma(const void *a, const void *b)
{
	dmm_dma_addr_t x = *(const dmm_dma_addr_t *)a, y = *(const dmm_dma_addr_t *)b;
	return x < y ? -1 : x > y;
}

struct blk {
	void *cpu;
	dmm_dma_addr_t dma;
};

static void test_geometry(void **state)
{
	static const struct {
		size_t size, align, boundary;
	} g[] = {
		{ 8, 0, 0 },        { 24, 0, 0 },      { 64, 64, 0 },     { 100, 32, 128 },
		{ 200, 8, 256 },    { 48, 16, 64 },    { 96, 128, 128 },  { 64, 256, 64 },
		{ 512, 4096, 0 },   { 3000, 8, 4096 }, { 5000, 8, 8192 }, { 1000, 8, 1024 },
		{ 40960, 8, 0 },    { 72, 8, 65536 },  { 4096, 4096, 4096 },
	};
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device_desc d = tu_desc("nvme", 64, 1, DMM_DEVICE_CMA_DEFAULT);
	struct dmm_device *dev;
	(void)state;

	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	for (size_t k = 0; k < sizeof(g) / sizeof(g[0]); k++) {
		struct dmm_dma_pool *p;
		struct dmm_dma_pool_stats st;
		struct blk *b;
		dmm_dma_addr_t *sorted;
		uint64_t n;
		uint64_t seed = k + 1;

		assert_ok(dmm_dma_pool_create(dev, "geom", g[k].size, g[k].align, g[k].boundary, &p));
		st = stats(p);
		assert_int_equal(st.align, g[k].align ? g[k].align : 8);
		assert_true(st.blocks_per_chunk >= 1);
		assert_int_equal(st.chunks, 0); /* nothing until the first block */
		n = 3 * st.blocks_per_chunk + 5;
		if (n > 1500)
			n = 1500;
		b = calloc(n, sizeof(*b));
		sorted = calloc(n, sizeof(*sorted));
		for (uint64_t i = 0; i < n; i++) {
			assert_ok(dmm_dma_pool_alloc(p, 0, &b[i].cpu, &b[i].dma));
			check_block(e, dev, &st, b[i].cpu, b[i].dma);
			fill(b[i].cpu, b[i].dma, g[k].size, k);
			sorted[i] = b[i].dma;
		}
		assert_ok(dmm_dma_pool_check(p));
		/* no two blocks overlap */
		qsort(sorted, n, sizeof(*sorted), cmp_dma);
		for (uint64_t i = 1; i < n; i++)
			assert_true(sorted[i - 1] + g[k].size <= sorted[i]);
		for (uint64_t i = 0; i < n; i++)
			assert_true(verify(b[i].cpu, b[i].dma, g[k].size, k));
		st = stats(p);
		assert_int_equal(st.in_use, n);
		assert_int_equal(st.high_water, n);
		assert_int_equal(st.chunks, (n + st.blocks_per_chunk - 1) / st.blocks_per_chunk);
		assert_true(st.meta_bytes >= DMM_PAGE_SIZE);
		/* free in random order, checking as we go */
		for (uint64_t i = n; i > 1; i--) {
			uint64_t j = tu_rand_below(&seed, i);
			struct blk t = b[i - 1];
			b[i - 1] = b[j];
			b[j] = t;
		}
		for (uint64_t i = 0; i < n; i++) {
			assert_true(verify(b[i].cpu, b[i].dma, g[k].size, k));
			assert_ok(dmm_dma_pool_free(p, b[i].cpu, b[i].dma));
			if (i % 17 == 0)
				assert_ok(dmm_dma_pool_check(p));
		}
		st = stats(p);
		assert_int_equal(st.in_use, 0);
		assert_int_equal(st.allocs, n);
		assert_int_equal(st.frees, n);
		assert_int_equal(st.fail_invalid, 0);
		assert_ok(dmm_dma_pool_check(p));
		assert_ok(dmm_dma_pool_destroy(p));
		free(b);
		free(sorted);
		assert_checks(e->mem);
	}
	assert_ok(dmm_device_destroy(dev));
	assert_ok(dmm_cma_check(e->mem));
	assert_checks(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), e->free0); /* everything given back */
	tu_env_destroy(e);
}

/*
 * Every byte offset of a chunk against free: a block's start frees (and is
 * taken back), any other offset is refused with -DMM_EINVAL and nothing
 * changes; once with the chunk full, once with a block of it free (free
 * then finds the chunk without the index). The geometries cover each way
 * of finding a block: one segment (power-of-two stride or not), several
 * segments of a power-of-two block count (1 included) and of another
 * count. The blocks handed out must be exactly those of the documented
 * layout, block i at (i / per_seg) * boundary + (i % per_seg) * stride.
 */
static void test_every_offset(void **state)
{
	static const struct {
		size_t size, align, boundary;
		uint64_t per_seg; /* blocks per boundary segment, 0: one segment */
	} g[] = {
		{ 64, 64, 0, 0 },      { 96, 32, 0, 0 },      { 64, 64, 1024, 16 }, { 96, 32, 1024, 10 },
		{ 24, 8, 256, 10 },    { 1000, 8, 2048, 2 },  { 600, 8, 1024, 1 },  { 8, 8, 0, 0 },
	};
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device_desc d = tu_desc("nvme", 64, 1, DMM_DEVICE_CMA_DEFAULT);
	struct dmm_device *dev;
	(void)state;

	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	for (size_t k = 0; k < sizeof(g) / sizeof(g[0]); k++) {
		struct dmm_dma_pool *p;
		struct dmm_dma_pool_stats st0, st1;
		uint64_t nb, stride = (g[k].size + g[k].align - 1) & ~(uint64_t)(g[k].align - 1);
		struct blk *b, base;
		uint8_t *is_start;

		assert_ok(dmm_dma_pool_create(dev, "offsets", g[k].size, g[k].align, g[k].boundary, &p));
		assert_ok(dmm_dma_pool_alloc(p, 0, &base.cpu, &base.dma));
		st0 = stats(p);
		nb = st0.blocks_per_chunk;
		b = calloc(nb, sizeof(*b));
		is_start = calloc(st0.chunk_bytes, 1);
		b[0] = base;
		for (uint64_t i = 1; i < nb; i++)
			assert_ok(dmm_dma_pool_alloc(p, 0, &b[i].cpu, &b[i].dma));
		assert_int_equal(stats(p).chunks, 1);
		/* the layout: block i where the formula puts it */
		for (uint64_t i = 0; i < nb; i++) {
			uint64_t off = g[k].per_seg ? (i / g[k].per_seg) * g[k].boundary + (i % g[k].per_seg) * stride
						    : i * stride;
			assert_true(off + g[k].size <= st0.chunk_bytes);
			is_start[off] = 1;
		}
		for (uint64_t i = 0; i < nb; i++) {
			uint64_t off = b[i].dma - (base.dma & ~(st0.chunk_bytes - 1));
			assert_true(off < st0.chunk_bytes && is_start[off]);
			assert_ptr_equal(b[i].cpu, (uint8_t *)base.cpu - (base.dma & (st0.chunk_bytes - 1)) + off);
		}
		/* every offset, with the chunk full (free finds it through the
		 * index), then with its last block free (the chunk allocations
		 * come from, which free tries first; that block is already free) */
		for (int pass = 0; pass < 2; pass++) {
			uint8_t *c0 = (uint8_t *)base.cpu - (base.dma & (st0.chunk_bytes - 1));
			dmm_dma_addr_t d0 = base.dma & ~(st0.chunk_bytes - 1);
			uint64_t freed = 0, hole = pass ? b[nb - 1].dma - d0 : UINT64_MAX;
			if (pass)
				assert_ok(dmm_dma_pool_free(p, b[nb - 1].cpu, b[nb - 1].dma));
			st0 = stats(p);
			for (uint64_t off = 0; off < st0.chunk_bytes; off++) {
				if (off == hole) {
					assert_rc(dmm_dma_pool_free(p, c0 + off, d0 + off), -DMM_ENOENT);
				} else if (is_start[off]) {
					void *cpu;
					dmm_dma_addr_t dma;
					assert_ok(dmm_dma_pool_free(p, c0 + off, d0 + off));
					assert_ok(dmm_dma_pool_alloc(p, 0, &cpu, &dma));
					assert_ptr_equal(cpu, c0 + off);
					assert_int_equal(dma, d0 + off);
					freed++;
				} else {
					assert_rc(dmm_dma_pool_free(p, c0 + off, d0 + off), -DMM_EINVAL);
				}
			}
			assert_int_equal(freed, nb - (uint64_t)pass);
			st1 = stats(p);
			assert_int_equal(st1.fail_invalid, st0.fail_invalid + st0.chunk_bytes - nb + (uint64_t)pass);
			assert_int_equal(st1.frees, st0.frees + nb - (uint64_t)pass);
			assert_int_equal(st1.in_use, nb - (uint64_t)pass);
			assert_int_equal(st1.chunks, 1);
			if (pass) {
				assert_ok(dmm_dma_pool_alloc(p, 0, &b[nb - 1].cpu, &b[nb - 1].dma));
				assert_int_equal(b[nb - 1].dma, d0 + hole);
			}
		}
		assert_ok(dmm_dma_pool_check(p));
		for (uint64_t i = 0; i < nb; i++)
			assert_ok(dmm_dma_pool_free(p, b[i].cpu, b[i].dma));
		assert_ok(dmm_dma_pool_destroy(p));
		free(b);
		free(is_start);
	}
	assert_ok(dmm_device_destroy(dev));
	assert_checks(e->mem);
	tu_env_destroy(e);
}

/* A bus offset of one page: no multi-page chunk comes back aligned in bus
 * space, so each is over-allocated and its aligned part used. */
static void test_misaligned_chunks(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device_desc d = tu_desc("offset", 64, 1, DMM_DEVICE_CMA_DEFAULT);
	struct dmm_device *dev;
	struct dmm_dma_pool *p;
	struct dmm_dma_pool_stats st;
	struct blk b[64];
	(void)state;

	d.bus_offset = 0x1000;
	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	assert_ok(dmm_dma_pool_create(dev, "big", 3000, 8, 4096, &p));
	st = stats(p);
	assert_int_equal(st.chunk_bytes, 32 * KiB);
	for (int i = 0; i < 64; i++) {
		assert_ok(dmm_dma_pool_alloc(p, 0, &b[i].cpu, &b[i].dma));
		check_block(e, dev, &st, b[i].cpu, b[i].dma);
		fill(b[i].cpu, b[i].dma, 3000, 3);
		assert_ok(dmm_dma_pool_check(p));
	}
	st = stats(p);
	assert_int_equal(st.misaligned_chunks, st.chunks);
	assert_int_equal(st.pages, st.chunks * (2 * 32 * KiB - DMM_PAGE_SIZE) / DMM_PAGE_SIZE);
	for (int i = 0; i < 64; i++) {
		assert_true(verify(b[i].cpu, b[i].dma, 3000, 3));
		assert_ok(dmm_dma_pool_free(p, b[i].cpu, b[i].dma));
	}
	assert_ok(dmm_dma_pool_destroy(p));
	assert_ok(dmm_device_destroy(dev));
	assert_checks(e->mem);
	assert_int_equal(tu_zone_free_all(e->mem), e->free0);
	tu_env_destroy(e);
}

static void test_zeroing(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device_desc d = tu_desc("ehci", 64, 1, DMM_DEVICE_CMA_DEFAULT);
	struct dmm_device *dev;
	struct dmm_dma_pool *p;
	void *cpu, *c2;
	dmm_dma_addr_t dma, d2;
	(void)state;

	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	assert_ok(dmm_dma_pool_create(dev, "qh", 192, 64, 0, &p));
	for (int round = 0; round < 4; round++) {
		assert_ok(dmm_dma_pool_alloc(p, 0, &cpu, &dma));
		memset(cpu, 0xa5, 192);
		assert_ok(dmm_dma_pool_free(p, cpu, dma));
		assert_ok(dmm_dma_pool_alloc(p, DMM_GFP_ZERO, &c2, &d2));
		assert_ptr_equal(c2, cpu); /* the lowest free block comes back */
		assert_int_equal(d2, dma);
		for (size_t i = 0; i < 192; i++)
			assert_int_equal(((uint8_t *)c2)[i], 0);
		memset(c2, 0x5a, 192);
		/* without ZERO the old bytes stay (the caller asked for none) */
		assert_ok(dmm_dma_pool_free(p, c2, d2));
		assert_ok(dmm_dma_pool_alloc(p, 0, &cpu, &dma));
		assert_int_equal(((uint8_t *)cpu)[0], 0x5a);
		assert_ok(dmm_dma_pool_free(p, cpu, dma));
		assert_ok(dmm_dma_pool_check(p));
	}
	assert_ok(dmm_dma_pool_destroy(p));
	assert_ok(dmm_device_destroy(dev));
	assert_checks(e->mem);
	tu_env_destroy(e);
}

static void test_dma32_below_4g(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device_desc d32 = tu_desc("ahci", 32, 1, DMM_DEVICE_CMA_DEFAULT), d64 = tu_desc("nvme", 64, 1, DMM_DEVICE_CMA_DEFAULT);
	struct dmm_device *dev32, *dev64;
	struct dmm_dma_pool *p32, *p64;
	enum { N = 3000 };
	struct blk *b = calloc(2 * N, sizeof(*b));
	(void)state;

	assert_ok(dmm_device_create(e->mem, &d32, NULL, &dev32));
	assert_ok(dmm_device_create(e->mem, &d64, NULL, &dev64));
	assert_ok(dmm_dma_pool_create(dev32, "cmd", 256, 128, 4096, &p32));
	assert_ok(dmm_dma_pool_create(dev64, "sq", 256, 128, 4096, &p64));
	for (int i = 0; i < N; i++) {
		dmm_phys_t pa;
		assert_ok(dmm_dma_pool_alloc(p32, 0, &b[i].cpu, &b[i].dma));
		assert_true(b[i].dma + 256 <= 4 * GiB);
		assert_ok(dmm_dma_bus_to_phys(dev32, b[i].dma, &pa));
		assert_true(pa + 256 <= 4 * GiB);
		/* the 64-bit device takes the cheapest memory: above 4 GiB */
		assert_ok(dmm_dma_pool_alloc(p64, 0, &b[N + i].cpu, &b[N + i].dma));
		assert_true(b[N + i].dma >= 4 * GiB);
	}
	assert_ok(dmm_dma_pool_check(p32));
	assert_ok(dmm_dma_pool_check(p64));
	for (int i = 0; i < N; i++) {
		assert_ok(dmm_dma_pool_free(p32, b[i].cpu, b[i].dma));
		assert_ok(dmm_dma_pool_free(p64, b[N + i].cpu, b[N + i].dma));
	}
	assert_ok(dmm_dma_pool_destroy(p32));
	assert_ok(dmm_dma_pool_destroy(p64));
	assert_ok(dmm_device_destroy(dev32));
	assert_ok(dmm_device_destroy(dev64));
	assert_checks(e->mem);
	free(b);
	tu_env_destroy(e);
}

static void test_noncoherent(void **state)
{
	struct tu_env *e = tu_env_profile("phone");
	struct dmm_device_desc d = tu_desc("ufs", 32, 0, DMM_DEVICE_CMA_DEFAULT);
	struct dmm_device *dev;
	struct dmm_dma_pool *p;
	struct dmm_dma_pool_stats st, st2;
	struct dmm_hosted_stats h0, h1;
	struct blk *b;
	uint64_t per;
	int expect;
	(void)state;

	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	assert_ok(dmm_dma_pool_create(dev, "utrd", 32, 128, 0, &p));
	per = stats(p).blocks_per_chunk;
	b = calloc(per + 2, sizeof(*b));
	dmm_hosted_get_stats(e->hosted, &h0);
	assert_ok(dmm_dma_pool_alloc(p, 0, &b[0].cpu, &b[0].dma));
	dmm_hosted_get_stats(e->hosted, &h1);
	assert_int_equal(h1.memattr_calls, h0.memattr_calls + 1); /* the chunk is uncached */
	/* atomic requests are served while a block is free */
	for (uint64_t i = 1; i < per; i++) {
		assert_ok(dmm_dma_pool_alloc(p, DMM_GFP_ATOMIC | DMM_GFP_ZERO, &b[i].cpu, &b[i].dma));
		fill(b[i].cpu, b[i].dma, 32, 7);
	}
	dmm_hosted_get_stats(e->hosted, &h0);
	assert_int_equal(h0.memattr_calls, h1.memattr_calls); /* no new chunk */
	/* the pool is full: growing under ATOMIC returns what the coherent
	 * allocator says for such a request */
	{
		void *c;
		dmm_dma_addr_t x;
		expect = dmm_dma_alloc_coherent(dev, (size_t)stats(p).chunk_bytes, DMM_GFP_ATOMIC, &c, &x);
		if (!expect)
			assert_ok(dmm_dma_free_coherent(dev, (size_t)stats(p).chunk_bytes, c, x));
	}
	st = stats(p);
	assert_rc(dmm_dma_pool_alloc(p, DMM_GFP_ATOMIC, &b[per].cpu, &b[per].dma), expect);
	if (expect) {
		st2 = stats(p);
		assert_int_equal(st2.fail_nomem, st.fail_nomem + 1);
		assert_int_equal(st2.fail_atomic, st.fail_atomic + (expect == -DMM_ENOTSUP));
		assert_int_equal(st2.chunks, st.chunks);
		assert_int_equal(st2.in_use, st.in_use);
		/* a caller that may sleep grows the pool */
		assert_ok(dmm_dma_pool_alloc(p, 0, &b[per].cpu, &b[per].dma));
	}
	assert_int_equal(stats(p).chunks, 2);
	assert_ok(dmm_dma_pool_check(p));
	for (uint64_t i = 1; i < per; i++)
		assert_true(verify(b[i].cpu, b[i].dma, 32, 7));
	for (uint64_t i = 0; i <= per; i++)
		assert_ok(dmm_dma_pool_free(p, b[i].cpu, b[i].dma));
	dmm_hosted_get_stats(e->hosted, &h0);
	assert_ok(dmm_dma_pool_destroy(p));
	dmm_hosted_get_stats(e->hosted, &h1);
	assert_int_equal(h1.memattr_calls, h0.memattr_calls + 2); /* both chunks back to cached */
	assert_ok(dmm_device_destroy(dev));
	assert_checks(e->mem);
	free(b);
	tu_env_destroy(e);
}

/*
 * Destroy with every block free but a chunk whose page is pinned: the
 * device refuses that chunk's coherent free (-DMM_EBUSY), so the destroy is
 * refused too; the other chunks go back, the pinned one stays in the pool,
 * which stays usable (its check holds, a block comes from that chunk).
 * After the unpin the destroy goes through and the device has had every
 * chunk back, the page allocator every page. On a device without an IOMMU
 * (a coherent one and a non-coherent one) and on one behind an IOMMU.
 */
static void test_destroy_pinned_chunk(void **state)
{
	(void)state;

	for (int kind = 0; kind < 3; kind++) {
		struct tu_env *e = tu_env_profile("pc");
		struct dmm_device_desc d = tu_desc("nvme", 32, kind != 1, DMM_DEVICE_CMA_NONE);
		struct dmm_device *dev;
		struct dmm_dma_pool *p;
		struct dmm_dma_pool_stats st;
		struct dmm_dma_stats ds;
		enum { NB = 24 };
		struct blk b[NB], again;
		dmm_phys_t pa;
		dmm_pfn_t pfn, pinned;
		dmm_dma_addr_t base;
		uint64_t free0;

		if (kind == 2)
			d.iommu = DMM_IOMMU_DMA;
		assert_int_equal(dmm_slab_shrink(e->mem), 0);
		dmm_page_drain_pcp(e->mem);
		free0 = tu_zone_free_all(e->mem);
		assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
		assert_ok(dmm_dma_pool_create(dev, "sq", 512, 64, 0, &p));
		st = stats(p);
		assert_int_equal(st.chunk_bytes, DMM_PAGE_SIZE);
		assert_int_equal(st.blocks_per_chunk, 8);
		for (int i = 0; i < NB; i++) {
			assert_ok(dmm_dma_pool_alloc(p, 0, &b[i].cpu, &b[i].dma));
			fill(b[i].cpu, b[i].dma, 512, 3);
		}
		assert_int_equal(stats(p).chunks, 3);
		/* the chunk of block 8 is one page: pinned */
		base = b[8].dma & ~(dmm_dma_addr_t)(DMM_PAGE_SIZE - 1);
		assert_ok(dmm_dma_bus_to_phys(dev, base, &pa));
		pfn = dmm_phys_to_pfn(pa);
		assert_ok(dmm_page_pin(e->mem, pfn, 0, &pinned, NULL));
		for (int i = 0; i < NB; i++) {
			assert_true(verify(b[i].cpu, b[i].dma, 512, 3));
			assert_ok(dmm_dma_pool_free(p, b[i].cpu, b[i].dma));
		}

		assert_rc(dmm_dma_pool_destroy(p), -DMM_EBUSY);
		assert_ok(dmm_dma_pool_check(p));
		st = stats(p);
		assert_int_equal(st.chunks, 1);
		assert_int_equal(st.pages, 1);
		assert_int_equal(st.blocks_total, 8);
		assert_int_equal(st.in_use, 0);
		dmm_device_get_stats(dev, &ds);
		assert_int_equal(ds.coherent_allocs, 3);
		assert_int_equal(ds.coherent_frees, 2);
		assert_ok(dmm_dma_bus_to_phys(dev, base, &pa)); /* still the device's */
		assert_int_equal(dmm_phys_to_pfn(pa), pfn);
		assert_rc(dmm_page_free(e->mem, pfn, 0), -DMM_EBUSY); /* still a coherent buffer */
		/* usable: a block comes from the chunk that stayed */
		assert_ok(dmm_dma_pool_alloc(p, DMM_GFP_ZERO, &again.cpu, &again.dma));
		assert_int_equal(again.dma & ~(dmm_dma_addr_t)(DMM_PAGE_SIZE - 1), base);
		check_block(e, dev, &st, again.cpu, again.dma);
		fill(again.cpu, again.dma, 512, 9);
		assert_true(verify(again.cpu, again.dma, 512, 9));
		assert_int_equal(stats(p).in_use, 1);
		assert_rc(dmm_dma_pool_destroy(p), -DMM_EBUSY); /* a block is out */
		assert_ok(dmm_dma_pool_free(p, again.cpu, again.dma));
		assert_ok(dmm_dma_pool_check(p));
		assert_rc(dmm_dma_pool_destroy(p), -DMM_EBUSY); /* still pinned */
		assert_ok(dmm_dma_pool_check(p));

		assert_ok(dmm_page_unpin(e->mem, pinned, 0));
		assert_ok(dmm_dma_pool_destroy(p));
		dmm_device_get_stats(dev, &ds);
		assert_int_equal(ds.coherent_allocs, 3);
		assert_int_equal(ds.coherent_frees, 3);
		if (kind == 2)
			assert_ok(dmm_device_iommu_check(dev));
		assert_ok(dmm_device_destroy(dev));
		assert_int_equal(dmm_slab_shrink(e->mem), 0); /* (the IOMMU domain's small objects) */
		dmm_page_drain_pcp(e->mem);
		assert_int_equal(tu_zone_free_all(e->mem), free0);
		assert_checks(e->mem);
		tu_env_destroy(e);
	}
}

static void test_bad_input(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device_desc d = tu_desc("nic", 64, 1, DMM_DEVICE_CMA_DEFAULT), bd = tu_desc("pci", 64, 1, DMM_DEVICE_CMA_DEFAULT);
	struct dmm_device *dev, *bus;
	struct dmm_dma_pool *p, *q, *x = NULL;
	struct dmm_dma_pool_stats st0, st1;
	void *ca, *cb, *cc;
	dmm_dma_addr_t da, db, dc;
	(void)state;

	bd.is_bus = 1;
	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	assert_ok(dmm_device_create(e->mem, &bd, NULL, &bus));
	/* create */
	assert_rc(dmm_dma_pool_create(NULL, "x", 64, 0, 0, &x), -DMM_EINVAL);
	assert_rc(dmm_dma_pool_create(dev, NULL, 64, 0, 0, &x), -DMM_EINVAL);
	assert_rc(dmm_dma_pool_create(dev, "x", 64, 0, 0, NULL), -DMM_EINVAL);
	assert_rc(dmm_dma_pool_create(dev, "x", 0, 0, 0, &x), -DMM_EINVAL);
	assert_rc(dmm_dma_pool_create(dev, "x", 64, 3, 0, &x), -DMM_EINVAL);
	assert_rc(dmm_dma_pool_create(dev, "x", 64, 4, 0, &x), -DMM_EINVAL);
	assert_rc(dmm_dma_pool_create(dev, "x", 64, 0, 48, &x), -DMM_EINVAL);
	assert_rc(dmm_dma_pool_create(dev, "x", 64, 0, 32, &x), -DMM_EINVAL);
	assert_rc(dmm_dma_pool_create(dev, "x", 8 * MiB, 0, 0, &x), -DMM_EINVAL);
	assert_rc(dmm_dma_pool_create(dev, "x", 64, 8 * MiB, 0, &x), -DMM_EINVAL);
	assert_rc(dmm_dma_pool_create(bus, "x", 64, 0, 0, &x), -DMM_EINVAL);
	assert_null(x);
	assert_checks(e->mem);

	/* stride 96, 42 blocks in a 4 KiB chunk, 64 bytes of slack at its end */
	assert_ok(dmm_dma_pool_create(dev, "a-pool-with-a-name-longer-than-31-characters", 96, 32, 0, &p));
	assert_string_equal(dmm_dma_pool_name(p), "a-pool-with-a-name-longer-than-");
	assert_ok(dmm_dma_pool_create(dev, "other", 96, 32, 0, &q));
	assert_ok(dmm_dma_pool_alloc(p, 0, &ca, &da));
	assert_ok(dmm_dma_pool_alloc(p, 0, &cb, &db));
	assert_ok(dmm_dma_pool_alloc(q, 0, &cc, &dc));
	fill(ca, da, 96, 1);
	fill(cb, db, 96, 2);
	st0 = stats(p);
	assert_int_equal(st0.blocks_per_chunk, 42);

	/* alloc */
	assert_rc(dmm_dma_pool_alloc(NULL, 0, &ca, &da), -DMM_EINVAL);
	assert_rc(dmm_dma_pool_alloc(p, 0, NULL, &da), -DMM_EINVAL);
	assert_rc(dmm_dma_pool_alloc(p, 0, &ca, NULL), -DMM_EINVAL);
	assert_rc(dmm_dma_pool_alloc(p, DMM_GFP_DMA32, &ca, &da), -DMM_EINVAL);
	assert_rc(dmm_dma_pool_alloc(p, 1u << 30, &ca, &da), -DMM_EINVAL);
	st1 = stats(p);
	assert_unchanged(&st0, &st1);
	assert_int_equal(st1.fail_invalid, st0.fail_invalid + 4);
	st0 = st1;
	/* free: each refused, nothing changed */
	{
		const struct {
			void *cpu;
			dmm_dma_addr_t dma;
			int rc;
		} bad[] = {
			{ cc, dc, -DMM_ENOENT },                          /* another pool's block */
			{ ca, 0x1000, -DMM_ENOENT },                      /* no chunk there */
			{ ca, da + 4096, -DMM_ENOENT },                   /* past the chunk */
			{ (uint8_t *)ca + 8, da + 8, -DMM_EINVAL },        /* inside a block */
			{ (uint8_t *)ca + 32, da + 32, -DMM_EINVAL },      /* on the alignment, not a block */
			{ (uint8_t *)ca + 4032, da + 4032, -DMM_EINVAL },  /* the slack at the chunk's end */
			{ cb, da, -DMM_EINVAL },                          /* CPU address of another block */
			{ NULL, da, -DMM_EINVAL },
			{ (uint8_t *)ca + 5 * 96, da + 5 * 96, -DMM_ENOENT }, /* never allocated */
		};
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			assert_rc(dmm_dma_pool_free(p, bad[i].cpu, bad[i].dma), bad[i].rc);
			st1 = stats(p);
			assert_unchanged(&st0, &st1);
			assert_int_equal(st1.fail_invalid, st0.fail_invalid + i + 1);
			assert_ok(dmm_dma_pool_check(p));
		}
		assert_rc(dmm_dma_pool_free(NULL, ca, da), -DMM_EINVAL);
	}
	/* double free */
	assert_ok(dmm_dma_pool_free(p, cb, db));
	st0 = stats(p);
	assert_rc(dmm_dma_pool_free(p, cb, db), -DMM_ENOENT);
	st1 = stats(p);
	assert_unchanged(&st0, &st1);
	assert_true(verify(ca, da, 96, 1));
	assert_ok(dmm_dma_pool_check(p));

	/* destroy with a live block: refused, the pool still works */
	assert_rc(dmm_dma_pool_destroy(p), -DMM_EBUSY);
	assert_rc(dmm_dma_pool_destroy(NULL), -DMM_EINVAL);
	assert_rc(dmm_dma_pool_check(NULL), -DMM_EINVAL);
	assert_rc(dmm_dma_pool_get_stats(NULL, &st0), -DMM_EINVAL);
	assert_rc(dmm_dma_pool_get_stats(p, NULL), -DMM_EINVAL);
	st1 = stats(p);
	assert_int_equal(st1.in_use, 1);
	assert_true(verify(ca, da, 96, 1));
	assert_ok(dmm_dma_pool_alloc(p, 0, &cb, &db));
	assert_ok(dmm_dma_pool_free(p, cb, db));
	assert_ok(dmm_dma_pool_free(p, ca, da));
	assert_ok(dmm_dma_pool_check(p));
	assert_ok(dmm_dma_pool_destroy(p));
	assert_rc(dmm_dma_pool_destroy(q), -DMM_EBUSY);
	assert_ok(dmm_dma_pool_free(q, cc, dc));
	assert_ok(dmm_dma_pool_destroy(q));
	assert_ok(dmm_device_destroy(dev));
	assert_ok(dmm_device_destroy(bus));
	assert_checks(e->mem);
	tu_env_destroy(e);
}

/* ---- the device's segment boundary ------------------------------------------- */

/* A device whose coherent buffers must not cross 4 KiB: the chunk stops
 * growing at that boundary (4 KiB of 1 KiB blocks, not 8 KiB), and a block
 * stride larger than the boundary is refused at create. */
static void test_device_boundary(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device_desc d = tu_desc("bnd", 64, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	struct dmm_dma_pool *p, *x = NULL;
	struct dmm_dma_pool_stats st;
	struct dmm_mem_info mi0, mi1;
	void *cpu[8];
	dmm_dma_addr_t dma[8];
	(void)state;

	d.limits.boundary = 4096;
	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	assert_ok(dmm_dma_pool_create(dev, "desc", 1024, 0, 0, &p));
	st = stats(p);
	assert_int_equal(st.chunk_bytes, 4096);
	assert_int_equal(st.blocks_per_chunk, 4);
	for (unsigned i = 0; i < 8; i++) {
		assert_ok(dmm_dma_pool_alloc(p, 0, &cpu[i], &dma[i]));
		assert_int_equal(dma[i] / 4096, (dma[i] + 1023) / 4096);
		fill(cpu[i], dma[i], 1024, i);
	}
	assert_int_equal(stats(p).chunks, 2);
	assert_ok(dmm_dma_pool_check(p));
	for (unsigned i = 0; i < 8; i++) {
		assert_true(verify(cpu[i], dma[i], 1024, i));
		assert_ok(dmm_dma_pool_free(p, cpu[i], dma[i]));
	}
	assert_ok(dmm_dma_pool_destroy(p));

	/* a block of a whole boundary still fits; one byte more does not */
	assert_ok(dmm_dma_pool_create(dev, "page", 4096, 0, 0, &p));
	assert_int_equal(stats(p).chunk_bytes, 4096);
	assert_ok(dmm_dma_pool_alloc(p, 0, &cpu[0], &dma[0]));
	assert_ok(dmm_dma_pool_free(p, cpu[0], dma[0]));
	assert_ok(dmm_dma_pool_destroy(p));
	dmm_mem_get_info(e->mem, &mi0);
	assert_rc(dmm_dma_pool_create(dev, "x", 4097, 0, 0, &x), -DMM_EINVAL);
	assert_rc(dmm_dma_pool_create(dev, "x", 2048, 8192, 0, &x), -DMM_EINVAL); /* stride 8 KiB */
	assert_null(x);
	dmm_mem_get_info(e->mem, &mi1);
	assert_int_equal(mi1.fail_invalid, mi0.fail_invalid + 2);
	assert_ok(dmm_device_destroy(dev));
	assert_checks(e->mem);
	tu_env_destroy(e);
}

/* A device whose coherent boundary is below a page gets no coherent buffer
 * at all (a chunk is at least a page): a pool of it could never serve a
 * block, so create refuses it, whatever the block size. */
static void test_device_boundary_below_page(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device_desc d = tu_desc("tiny-bnd", 64, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_device *dev;
	struct dmm_dma_pool *x = NULL;
	struct dmm_mem_info mi0, mi1;
	void *cpu;
	dmm_dma_addr_t dma;
	(void)state;

	d.limits.boundary = 2048;
	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	/* the coherent allocator refuses every buffer of this device */
	assert_rc(dmm_dma_alloc_coherent(dev, 64, 0, &cpu, &dma), -DMM_EINVAL);
	dmm_mem_get_info(e->mem, &mi0);
	assert_rc(dmm_dma_pool_create(dev, "x", 64, 0, 0, &x), -DMM_EINVAL);
	assert_rc(dmm_dma_pool_create(dev, "x", 2048, 0, 0, &x), -DMM_EINVAL);
	assert_rc(dmm_dma_pool_create(dev, "x", 32, 32, 1024, &x), -DMM_EINVAL);
	assert_null(x);
	dmm_mem_get_info(e->mem, &mi1);
	assert_int_equal(mi1.fail_invalid, mi0.fail_invalid + 3);
	assert_ok(dmm_device_destroy(dev));
	assert_checks(e->mem);
	tu_env_destroy(e);
}

/* ---- IOMMU, fragmented memory ------------------------------------------------ */

/* Behind an IOMMU a chunk may be built page by page (every other page
 * taken) and joined by the platform's vmap: its CPU address is not in the
 * linear map. Blocks on every page of it are usable and the pool's check
 * accepts it, page by page. */
static void test_iommu_scattered_chunk(void **state)
{
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_mem *mem;
	struct dmm_device_desc d;
	struct dmm_device *dev;
	struct dmm_dma_pool *p;
	enum { NP = 20000, NB = 8 };
	static dmm_pfn_t held[NP];
	unsigned n = 0;
	void *cpu[NB];
	dmm_dma_addr_t dma[NB];
	dmm_phys_t p0, p1;
	(void)state;

	tu_machine(&m, "frag");
	tu_add_ram(&m, 0, 64 * MiB);
	assert_ok(dmm_hosted_mem_create(&m, 2, &h, &mem));
	if (!dmm_mem_platform(mem)->vmap) {
		dmm_hosted_mem_destroy(h, mem);
		skip();
	}
	d = tu_desc("iommu-nic", 32, 1, DMM_DEVICE_CMA_NONE);
	d.iommu = DMM_IOMMU_DMA;
	assert_ok(dmm_device_create(mem, &d, NULL, &dev));
	assert_ok(dmm_dma_pool_create(dev, "rx", 1024, 0, 0, &p)); /* 8 KiB chunks */
	assert_int_equal(stats(p).blocks_per_chunk, NB);
	while (n < NP && dmm_page_alloc(mem, 0, NULL, DMM_GFP_NOWMARK, &held[n]) == 0)
		n++;
	assert_true(n < NP);
	for (unsigned i = 0; i < n; i += 2)
		assert_ok(dmm_page_free(mem, held[i], 0));
	dmm_page_drain_pcp(mem);
	for (unsigned i = 0; i < NB; i++) {
		assert_ok(dmm_dma_pool_alloc(p, 0, &cpu[i], &dma[i]));
		fill(cpu[i], dma[i], 1024, i);
	}
	assert_int_equal(stats(p).chunks, 1);
	assert_ok(dmm_dma_bus_to_phys(dev, dma[0], &p0));
	assert_ok(dmm_dma_bus_to_phys(dev, dma[0] + 4096, &p1));
	assert_true(p1 != p0 + 4096); /* the chunk's pages are scattered */
	assert_ok(dmm_dma_pool_check(p));
	for (unsigned i = 0; i < NB; i++) {
		assert_true(verify(cpu[i], dma[i], 1024, i));
		assert_ok(dmm_dma_pool_free(p, cpu[i], dma[i]));
	}
	assert_ok(dmm_dma_pool_check(p));
	assert_ok(dmm_dma_pool_destroy(p));
	for (unsigned i = 1; i < n; i += 2)
		assert_ok(dmm_page_free(mem, held[i], 0));
	assert_ok(dmm_device_destroy(dev));
	dmm_hosted_mem_destroy(h, mem);
}

/* ---- two threads ------------------------------------------------------------ */

struct thr {
	struct dmm_dma_pool *pool;
	uint64_t seed, salt;
	unsigned steps;
	unsigned long errors, allocs;
};

#define THR_LIVE 96
#define THR_SIZE 40

static void *thr_main(void *arg)
{
	struct thr *t = arg;
	struct blk live[THR_LIVE];
	unsigned n = 0;

	for (unsigned s = 0; s < t->steps; s++) {
		if (n < THR_LIVE && (n == 0 || tu_rand_below(&t->seed, 100) < 55)) {
			if (dmm_dma_pool_alloc(t->pool, (s & 1) ? DMM_GFP_ZERO : 0, &live[n].cpu, &live[n].dma)) {
				t->errors++;
				continue;
			}
			if (live[n].dma % 64 || live[n].dma / 128 != (live[n].dma + THR_SIZE - 1) / 128)
				t->errors++;
			if (s & 1) {
				for (unsigned i = 0; i < THR_SIZE; i++)
					t->errors += ((uint8_t *)live[n].cpu)[i] != 0;
			}
			fill(live[n].cpu, live[n].dma, THR_SIZE, t->salt);
			n++;
			t->allocs++;
		} else {
			unsigned j = (unsigned)tu_rand_below(&t->seed, n);
			struct blk x = live[j];
			live[j] = live[--n];
			if (!verify(x.cpu, x.dma, THR_SIZE, t->salt))
				t->errors++;
			if (dmm_dma_pool_free(t->pool, x.cpu, x.dma))
				t->errors++;
		}
	}
	while (n) {
		n--;
		if (!verify(live[n].cpu, live[n].dma, THR_SIZE, t->salt) ||
		    dmm_dma_pool_free(t->pool, live[n].cpu, live[n].dma))
			t->errors++;
	}
	return NULL;
}

static void test_two_threads(void **state)
{
	struct tu_env *e = tu_env_profile("pc");
	struct dmm_device_desc d = tu_desc("xhci", 64, 1, DMM_DEVICE_CMA_DEFAULT);
	struct dmm_device *dev;
	struct dmm_dma_pool *p;
	struct dmm_dma_pool_stats st;
	struct thr t[2];
	pthread_t th[2];
	(void)state;

	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	assert_ok(dmm_dma_pool_create(dev, "trb", THR_SIZE, 64, 128, &p));
	for (int i = 0; i < 2; i++) {
		t[i] = (struct thr){ .pool = p, .seed = 0x1234u + (uint64_t)i * 77, .salt = (uint64_t)i + 5, .steps = 60000 };
		assert_int_equal(pthread_create(&th[i], NULL, thr_main, &t[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	assert_int_equal(t[0].errors, 0);
	assert_int_equal(t[1].errors, 0);
	assert_ok(dmm_dma_pool_check(p));
	st = stats(p);
	assert_int_equal(st.in_use, 0);
	assert_int_equal(st.allocs, t[0].allocs + t[1].allocs);
	assert_int_equal(st.frees, st.allocs);
	assert_true(st.high_water <= 2 * THR_LIVE);
	assert_true(st.blocks_total <= 2 * THR_LIVE + 2 * st.blocks_per_chunk);
	assert_ok(dmm_dma_pool_destroy(p));
	assert_ok(dmm_device_destroy(dev));
	assert_checks(e->mem);
	tu_env_destroy(e);
}

/* ---- randomized run, checked after every step --------------------------------- */

static void test_random_checked(void **state)
{
	struct tu_env *e = tu_env_profile("rpi4");
	struct dmm_device_desc d = tu_desc("genet", 32, 0, DMM_DEVICE_CMA_DEFAULT);
	struct dmm_device *dev;
	struct dmm_dma_pool *p;
	enum { MAXLIVE = 700, STEPS = 6000, SIZE = 72 };
	struct blk *live = calloc(MAXLIVE, sizeof(*live));
	uint64_t seed = 42, n = 0, salt = 99;
	(void)state;

	assert_ok(dmm_device_create(e->mem, &d, NULL, &dev));
	assert_ok(dmm_dma_pool_create(dev, "desc", SIZE, 16, 256, &p));
	for (unsigned s = 0; s < STEPS; s++) {
		uint64_t r = tu_rand_below(&seed, 100);
		struct dmm_dma_pool_stats st0 = stats(p), st1;
		if (n < MAXLIVE && (n == 0 || r < 50)) {
			unsigned gfp = r & 1 ? DMM_GFP_ZERO : 0;
			assert_ok(dmm_dma_pool_alloc(p, gfp, &live[n].cpu, &live[n].dma));
			check_block(e, dev, &st0, live[n].cpu, live[n].dma);
			if (gfp)
				for (unsigned i = 0; i < SIZE; i++)
					assert_int_equal(((uint8_t *)live[n].cpu)[i], 0);
			fill(live[n].cpu, live[n].dma, SIZE, salt);
			n++;
		} else if (r < 90) {
			uint64_t j = tu_rand_below(&seed, n);
			assert_true(verify(live[j].cpu, live[j].dma, SIZE, salt));
			assert_ok(dmm_dma_pool_free(p, live[j].cpu, live[j].dma));
			live[j] = live[--n];
		} else {
			/* a wrong free: a live block shifted, or a freed one again */
			uint64_t j = tu_rand_below(&seed, n);
			int rc;
			if (r & 1) {
				rc = dmm_dma_pool_free(p, (uint8_t *)live[j].cpu + 8, live[j].dma + 8);
				assert_rc(rc, -DMM_EINVAL);
			} else {
				struct blk x = live[j];
				assert_ok(dmm_dma_pool_free(p, x.cpu, x.dma));
				live[j] = live[--n];
				st0 = stats(p);
				assert_rc(dmm_dma_pool_free(p, x.cpu, x.dma), -DMM_ENOENT);
			}
			st1 = stats(p);
			assert_unchanged(&st0, &st1);
		}
		assert_ok(dmm_dma_pool_check(p));
		assert_int_equal(stats(p).in_use, n);
		if (s % 1000 == 0)
			assert_checks(e->mem);
	}
	for (uint64_t j = 0; j < n; j++) {
		assert_true(verify(live[j].cpu, live[j].dma, SIZE, salt));
		assert_ok(dmm_dma_pool_free(p, live[j].cpu, live[j].dma));
	}
	assert_ok(dmm_dma_pool_check(p));
	assert_ok(dmm_dma_pool_destroy(p));
	assert_ok(dmm_device_destroy(dev));
	assert_checks(e->mem);
	free(live);
	tu_env_destroy(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_geometry),
		cmocka_unit_test(test_every_offset),
		cmocka_unit_test(test_misaligned_chunks),
		cmocka_unit_test(test_zeroing),
		cmocka_unit_test(test_dma32_below_4g),
		cmocka_unit_test(test_noncoherent),
		cmocka_unit_test(test_destroy_pinned_chunk),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_device_boundary),
		cmocka_unit_test(test_device_boundary_below_page),
		cmocka_unit_test(test_iommu_scattered_chunk),
		cmocka_unit_test(test_two_threads),
		cmocka_unit_test(test_random_checked),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: MIT */
/*
 * The DMA API through an IOMMU, against the hardware model's IOMMU: data
 * in every direction through IOVAs below a 32-bit mask while the pages lie
 * above 4 GiB; permissions from the direction; strict unmaps fault at once;
 * deferred unmaps leave stale IOTLB entries until the flush (and IOVAs are
 * not reused before it); scatterlists mapped into one contiguous IOVA
 * range; coherent buffers from anywhere, also page by page (vmap), and
 * their free refused while a page is pinned, changing nothing (also a pin
 * and a free at once: never both succeed); an untrusted device reading
 * around its buffer sees zeros or faults, never a neighbour's bytes; identity domains; bad unmaps refused; a 32-bit device
 * doing a large workload on the PC profile uses no memory below 4 GiB
 * behind the IOMMU and plenty without; two threads.
 */
#include <pthread.h>
#include <time.h>

#include "tu_dma.h"

#include <dmamem/dma_debug.h>
#include <dmamem/iommu.h>
#include <dmamem/swiotlb.h>

#include "dma_sim.h"

#define PG 4096ull
#define G4 (4ull << 30)

struct hwenv {
	struct dmm_hw *hw;
	struct dmm_mem *mem;
};

static void hwenv_create(struct hwenv *e, const char *profile, int swiotlb)
{
	struct dmm_machine m;
	struct dmm_hw_opts o;

	tu_profile(profile, &m);
	dmm_hw_opts_default(&o);
	o.nr_cpus = 2;
	o.log_level = DMM_LOG_ERR;
	assert_ok(dmm_hw_mem_create(&m, &o, &e->hw, &e->mem));
	if (swiotlb)
		assert_ok(dmm_swiotlb_init(e->mem, NULL));
}

static void hwenv_destroy(struct hwenv *e)
{
	assert_checks(e->mem);
	assert_ok(dmm_hw_check(e->hw));
	dmm_hw_mem_destroy(e->hw, e->mem);
}

static struct dmm_sim_dev sdev(struct hwenv *e, const char *name, unsigned bits, int coherent, int mode,
			       const struct dmm_iommu_opts *io)
{
	struct dmm_device_desc d = tu_desc(name, bits, coherent, DMM_DEVICE_CMA_NONE);
	struct dmm_sim_dev s;
	d.iommu = mode;
	d.iommu_opts = io;
	assert_ok(dmm_sim_device_create(e->mem, e->hw, &d, NULL, &s));
	return s;
}

/* @pages pages above 4 GiB */
static dmm_pfn_t high_pages(struct hwenv *e, unsigned order)
{
	struct dmm_constraint c = DMM_CONSTRAINT_ANY;
	dmm_pfn_t pfn;
	c.lo = G4;
	assert_ok(dmm_page_alloc(e->mem, order, &c, 0, &pfn));
	assert_true(dmm_pfn_to_phys(pfn) >= G4);
	return pfn;
}

static void fill(struct hwenv *e, dmm_phys_t pa, size_t len, unsigned seed)
{
	unsigned char *b = malloc(len);
	for (size_t i = 0; i < len; i++)
		b[i] = (unsigned char)(seed * 31 + i * 7);
	assert_ok(dmm_hw_cpu_write(e->hw, pa, b, len));
	free(b);
}

static void expect(const unsigned char *b, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		if (b[i] != (unsigned char)(seed * 31 + i * 7))
			fail_msg("byte %zu: %#x, want %#x", i, b[i], (unsigned char)(seed * 31 + i * 7));
}

static void test_stream_roundtrip(void **state)
{
	struct hwenv e;
	(void)state;
	hwenv_create(&e, "pc", 0);
	for (int coherent = 0; coherent < 2; coherent++) {
		struct dmm_sim_dev s = sdev(&e, coherent ? "nic-c" : "nic-nc", 32, coherent, DMM_IOMMU_DMA, NULL);
		dmm_pfn_t pfn = high_pages(&e, 2);
		dmm_phys_t pa = dmm_pfn_to_phys(pfn) + 100;
		unsigned char buf[8192];
		struct dmm_dma_stats st;
		dmm_dma_addr_t a;
		dmm_phys_t back;

		/* TO_DEVICE: the device reads what the CPU wrote */
		fill(&e, pa, 6000, 1);
		a = dmm_dma_map_phys(s.dev, pa, 6000, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(s.dev, a));
		assert_true(a + 6000 <= G4);
		assert_int_equal(a & (PG - 1), 100);
		assert_ok(dmm_dma_bus_to_phys(s.dev, a + 5000, &back));
		assert_int_equal(back, pa + 5000);
		assert_ok(dmm_hw_dev_read(s.hw, a, buf, 6000));
		expect(buf, 6000, 1);
		/* read-only for the device */
		assert_rc(dmm_hw_dev_write(s.hw, a, buf, 16), -DMM_EFAULT);
		assert_ok(dmm_device_iommu_check(s.dev));
		dmm_dma_unmap_phys(s.dev, a, 6000, DMM_DMA_TO_DEVICE);
		/* strict: gone at once */
		assert_rc(dmm_hw_dev_read(s.hw, a, buf, 16), -DMM_EFAULT);

		/* FROM_DEVICE: the CPU reads what the device wrote */
		a = dmm_dma_map_phys(s.dev, pa, 6000, DMM_DMA_FROM_DEVICE);
		assert_ok(dmm_dma_mapping_error(s.dev, a));
		for (int i = 0; i < 6000; i++)
			buf[i] = (unsigned char)(2 * 31 + i * 7);
		assert_ok(dmm_hw_dev_write(s.hw, a, buf, 6000));
		assert_rc(dmm_hw_dev_read(s.hw, a, buf, 16), -DMM_EFAULT); /* write-only */
		dmm_dma_unmap_phys(s.dev, a, 6000, DMM_DMA_FROM_DEVICE);
		memset(buf, 0, sizeof(buf));
		assert_ok(dmm_hw_cpu_read(e.hw, pa, buf, 6000));
		expect(buf, 6000, 2);

		/* BIDIRECTIONAL with a sync in the middle */
		fill(&e, pa, 3000, 3);
		a = dmm_dma_map_phys(s.dev, pa, 3000, DMM_DMA_BIDIRECTIONAL);
		assert_ok(dmm_dma_mapping_error(s.dev, a));
		assert_ok(dmm_hw_dev_read(s.hw, a, buf, 3000));
		expect(buf, 3000, 3);
		for (int i = 0; i < 3000; i++)
			buf[i] = (unsigned char)(4 * 31 + i * 7);
		assert_ok(dmm_hw_dev_write(s.hw, a, buf, 3000));
		dmm_dma_sync_single_for_cpu(s.dev, a, 3000, DMM_DMA_BIDIRECTIONAL);
		memset(buf, 0, sizeof(buf));
		assert_ok(dmm_hw_cpu_read(e.hw, pa, buf, 3000));
		expect(buf, 3000, 4);
		dmm_dma_sync_single_for_device(s.dev, a, 3000, DMM_DMA_BIDIRECTIONAL);
		dmm_dma_unmap_phys(s.dev, a, 3000, DMM_DMA_BIDIRECTIONAL);

		dmm_device_get_stats(s.dev, &st);
		assert_int_equal(st.bounced_maps, 0);
		assert_int_equal(st.maps, 3);
		assert_int_equal(st.unmaps, 3);
		assert_int_equal(st.low_peak_bytes, 0);
		assert_ok(dmm_device_iommu_check(s.dev));
		assert_ok(dmm_page_free(e.mem, pfn, 2));
		assert_ok(dmm_sim_device_destroy(&s));
	}
	hwenv_destroy(&e);
}

static void test_deferred_stale(void **state)
{
	struct hwenv e;
	struct dmm_iommu_opts io;
	struct dmm_iommu_stats is;
	struct dmm_hw_iommu_stats hs;
	unsigned char buf[64];
	(void)state;

	hwenv_create(&e, "pc", 0);
	dmm_iommu_opts_default(&io);
	io.flush = DMM_IOMMU_DEFERRED;
	io.fq_timeout_ns = 5ull * 1000 * 1000 * 1000; /* only explicit flushes here */
	{
		struct dmm_sim_dev s = sdev(&e, "lazy", 32, 1, DMM_IOMMU_DMA, &io);
		dmm_pfn_t pfn = high_pages(&e, 0), pfn2 = high_pages(&e, 0);
		dmm_phys_t pa = dmm_pfn_to_phys(pfn);
		dmm_dma_addr_t a, b;

		fill(&e, pa, PG, 5);
		a = dmm_dma_map_phys(s.dev, pa, PG, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(s.dev, a));
		assert_ok(dmm_hw_dev_read(s.hw, a, buf, 64)); /* IOTLB filled */
		dmm_dma_unmap_phys(s.dev, a, PG, DMM_DMA_TO_DEVICE);
		/* the hazard: the device still reaches the page through the IOTLB */
		memset(buf, 0, sizeof(buf));
		assert_ok(dmm_hw_dev_read(s.hw, a, buf, 64));
		expect(buf, 64, 5);
		dmm_hw_iommu_get_stats(e.hw, &hs);
		assert_true(hs.stale_hits >= 1);
		/* ... but the IOVA is not handed out again before the flush */
		b = dmm_dma_map_phys(s.dev, dmm_pfn_to_phys(pfn2), PG, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(s.dev, b));
		assert_true(b != a);
		assert_ok(dmm_device_iommu_stats(s.dev, &is));
		assert_int_equal(is.fq_pending, 1);
		assert_int_equal(is.invalidations, 0);
		dmm_device_iommu_flush(s.dev);
		assert_rc(dmm_hw_dev_read(s.hw, a, buf, 64), -DMM_EFAULT);
		assert_ok(dmm_device_iommu_stats(s.dev, &is));
		assert_int_equal(is.fq_pending, 0);
		assert_int_equal(is.fq_flushes, 1);
		assert_int_equal(is.invalidations, 1);
		dmm_dma_unmap_phys(s.dev, b, PG, DMM_DMA_TO_DEVICE);
		/* a full queue flushes by itself: one invalidation per fq_size unmaps */
		for (int i = 0; i < 600; i++) {
			dmm_dma_addr_t x = dmm_dma_map_phys(s.dev, pa, 512, DMM_DMA_TO_DEVICE);
			assert_ok(dmm_dma_mapping_error(s.dev, x));
			dmm_dma_unmap_phys(s.dev, x, 512, DMM_DMA_TO_DEVICE);
		}
		assert_ok(dmm_device_iommu_stats(s.dev, &is));
		assert_true(is.invalidations <= 1 + 600 / 256 + 1);
		assert_true(is.invalidations >= 1 + 600 / 256);
		assert_ok(dmm_device_iommu_check(s.dev));
		assert_ok(dmm_page_free(e.mem, pfn, 0));
		assert_ok(dmm_page_free(e.mem, pfn2, 0));
		assert_ok(dmm_sim_device_destroy(&s));
	}
	/* the timer flushes a queue nobody touches */
	io.fq_timeout_ns = 10ull * 1000 * 1000;
	{
		struct dmm_sim_dev s = sdev(&e, "timer", 32, 1, DMM_IOMMU_DMA, &io);
		dmm_pfn_t pfn = high_pages(&e, 0);
		dmm_dma_addr_t a = dmm_dma_map_phys(s.dev, dmm_pfn_to_phys(pfn), PG, DMM_DMA_FROM_DEVICE);
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		assert_ok(dmm_dma_mapping_error(s.dev, a));
		dmm_dma_unmap_phys(s.dev, a, PG, DMM_DMA_FROM_DEVICE);
		for (int i = 0; i < 100; i++) {
			assert_ok(dmm_device_iommu_stats(s.dev, &is));
			if (!is.fq_pending)
				break;
			nanosleep(&ts, NULL);
		}
		assert_int_equal(is.fq_pending, 0);
		assert_int_equal(is.fq_timeouts, 1);
		assert_ok(dmm_page_free(e.mem, pfn, 0));
		assert_ok(dmm_sim_device_destroy(&s));
	}
	/* untrusted devices are strict whatever the options say */
	{
		struct dmm_device_desc d = tu_desc("ext", 64, 1, DMM_DEVICE_CMA_NONE);
		struct dmm_sim_dev s;
		dmm_pfn_t pfn = high_pages(&e, 0);
		dmm_dma_addr_t a;
		d.iommu = DMM_IOMMU_DMA;
		d.iommu_opts = &io;
		d.untrusted = 1;
		assert_ok(dmm_sim_device_create(e.mem, e.hw, &d, NULL, &s));
		a = dmm_dma_map_phys(s.dev, dmm_pfn_to_phys(pfn), PG, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(s.dev, a));
		assert_ok(dmm_hw_dev_read(s.hw, a, buf, 64));
		dmm_dma_unmap_phys(s.dev, a, PG, DMM_DMA_TO_DEVICE);
		assert_rc(dmm_hw_dev_read(s.hw, a, buf, 64), -DMM_EFAULT);
		assert_ok(dmm_page_free(e.mem, pfn, 0));
		assert_ok(dmm_sim_device_destroy(&s));
	}
	hwenv_destroy(&e);
}

static void test_sg_contiguous(void **state)
{
	struct hwenv e;
	struct dmm_sg sg[4];
	dmm_pfn_t pfn[4];
	unsigned char *buf = malloc(4 * PG);
	(void)state;

	hwenv_create(&e, "pc", 0);
	{
		struct dmm_sim_dev s = sdev(&e, "sg", 32, 0, DMM_IOMMU_DMA, NULL);
		int n;

		/* whole pages scattered in physical memory: one segment */
		dmm_sg_init(sg, 4);
		for (int i = 0; i < 4; i++) {
			pfn[i] = high_pages(&e, 0);
			fill(&e, dmm_pfn_to_phys(pfn[i]), PG, 10 + (unsigned)i);
			dmm_sg_set_page(&sg[i], pfn[i], 0, PG);
		}
		n = dmm_dma_map_sg(s.dev, sg, 4, DMM_DMA_TO_DEVICE);
		assert_int_equal(n, 1);
		assert_int_equal(sg[0].dma_length, 4 * PG);
		assert_true(sg[0].dma_address + 4 * PG <= G4);
		assert_ok(dmm_hw_dev_read(s.hw, sg[0].dma_address, buf, 4 * PG));
		for (int i = 0; i < 4; i++)
			expect(buf + i * PG, PG, 10 + (unsigned)i);
		assert_ok(dmm_device_iommu_check(s.dev));
		dmm_dma_unmap_sg(s.dev, sg, 4, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_device_iommu_check(s.dev));

		/* pieces with offsets: several segments, one IOVA range, data in place */
		dmm_sg_init(sg, 3);
		dmm_sg_set_page(&sg[0], pfn[0], 512, (uint32_t)(PG - 512)); /* ends at the page end */
		dmm_sg_set_page(&sg[1], pfn[1], 0, 1000);                   /* starts at 0: merges */
		dmm_sg_set_page(&sg[2], pfn[2], 64, 100);
		n = dmm_dma_map_sg(s.dev, sg, 3, DMM_DMA_FROM_DEVICE);
		assert_int_equal(n, 2);
		assert_int_equal(sg[0].dma_length, PG - 512 + 1000);
		assert_int_equal(sg[1].dma_length, 100);
		assert_int_equal(sg[1].dma_address & (PG - 1), 64);
		memset(buf, 0xab, 4 * PG);
		assert_ok(dmm_hw_dev_write(s.hw, sg[0].dma_address, buf, sg[0].dma_length));
		assert_ok(dmm_hw_dev_write(s.hw, sg[1].dma_address, buf, 100));
		dmm_dma_unmap_sg(s.dev, sg, 3, DMM_DMA_FROM_DEVICE);
		assert_ok(dmm_hw_cpu_read(e.hw, dmm_pfn_to_phys(pfn[1]), buf, PG));
		for (int i = 0; i < 1000; i++)
			assert_int_equal(buf[i], 0xab);
		expect(buf + 1000, 0, 11); /* untouched part checked below */
		{
			unsigned char ref[PG];
			for (unsigned i = 0; i < PG; i++)
				ref[i] = (unsigned char)(11 * 31 + i * 7);
			assert_memory_equal(buf + 1000, ref + 1000, PG - 1000);
		}
		/* bad unmap: a list that was never mapped */
		{
			struct dmm_dma_stats st;
			dmm_sg_set_page(&sg[0], pfn[3], 0, PG);
			sg[0].dma_address = 0x1000;
			dmm_dma_unmap_sg(s.dev, sg, 1, DMM_DMA_TO_DEVICE);
			dmm_device_get_stats(s.dev, &st);
			assert_int_equal(st.fail_unmap, 1);
		}
		assert_ok(dmm_device_iommu_check(s.dev));
		for (int i = 0; i < 4; i++)
			assert_ok(dmm_page_free(e.mem, pfn[i], 0));
		assert_ok(dmm_sim_device_destroy(&s));
	}
	/* a maximum segment size splits the contiguous range into segments */
	{
		struct dmm_device_desc d = tu_desc("segs", 32, 1, DMM_DEVICE_CMA_NONE);
		struct dmm_sim_dev s;
		d.iommu = DMM_IOMMU_DMA;
		d.limits.max_seg_size = 2 * PG;
		d.limits.boundary = 64 * 1024;
		assert_ok(dmm_sim_device_create(e.mem, e.hw, &d, NULL, &s));
		dmm_sg_init(sg, 4);
		for (int i = 0; i < 4; i++) {
			pfn[i] = high_pages(&e, 0);
			dmm_sg_set_page(&sg[i], pfn[i], 0, PG);
		}
		assert_int_equal(dmm_dma_map_sg(s.dev, sg, 4, DMM_DMA_BIDIRECTIONAL), 2);
		assert_int_equal(sg[1].dma_address, sg[0].dma_address + 2 * PG);
		dmm_dma_unmap_sg(s.dev, sg, 4, DMM_DMA_BIDIRECTIONAL);
		for (int i = 0; i < 4; i++)
			assert_ok(dmm_page_free(e.mem, pfn[i], 0));
		assert_ok(dmm_device_iommu_check(s.dev));
		assert_ok(dmm_sim_device_destroy(&s));
	}
	free(buf);
	hwenv_destroy(&e);
}

static void test_coherent_anywhere(void **state)
{
	struct hwenv e;
	unsigned char buf[64 * 1024];
	(void)state;

	hwenv_create(&e, "pc", 0);
	for (int coherent = 0; coherent < 2; coherent++) {
		struct dmm_sim_dev s = sdev(&e, "ring", 32, coherent, DMM_IOMMU_DMA, NULL);
		struct dmm_dma_stats st;
		void *cpu;
		dmm_dma_addr_t dma;
		dmm_phys_t pa;

		assert_ok(dmm_dma_alloc_coherent(s.dev, 48 * 1024, 0, &cpu, &dma));
		assert_true(dma + 48 * 1024 <= G4);
		assert_ok(dmm_dma_bus_to_phys(s.dev, dma, &pa));
		assert_true(pa >= G4); /* the pages come from high memory */
		assert_ok(dmm_hw_dev_read(s.hw, dma, buf, 48 * 1024));
		for (int i = 0; i < 48 * 1024; i++)
			assert_int_equal(buf[i], 0);
		memset(buf, 0x5a, sizeof(buf));
		assert_ok(dmm_hw_dev_write(s.hw, dma + 100, buf, 4000));
		memset(buf, 0, sizeof(buf));
		assert_ok(dmm_hw_cpu_read_virt(e.hw, (unsigned char *)cpu + 100, buf, 4000));
		for (int i = 0; i < 4000; i++)
			assert_int_equal(buf[i], 0x5a);
		dmm_device_get_stats(s.dev, &st);
		assert_int_equal(st.low_pages, 0);
		assert_rc(dmm_dma_free_coherent(s.dev, 64 * 1024, cpu, dma), -DMM_ENOENT); /* wrong size */
		assert_rc(dmm_dma_free_coherent(s.dev, 48 * 1024, cpu, dma + PG), -DMM_ENOENT);
		assert_ok(dmm_dma_free_coherent(s.dev, 48 * 1024, cpu, dma));
		assert_rc(dmm_hw_dev_read(s.hw, dma, buf, 16), -DMM_EFAULT);
		assert_ok(dmm_device_iommu_check(s.dev));
		assert_ok(dmm_sim_device_destroy(&s));
	}
	hwenv_destroy(&e);
}

/*
 * Free a coherent buffer of @size of device @s whose page @pin_at (a block
 * head: the buffer's first page, or any page of one built page by page) is
 * pinned. The free is refused with -DMM_EBUSY, twice, and changes nothing:
 * the IOVA still translates to the same pages, the device and the CPU still
 * see the bytes, a non-coherent device's pages stay uncached, the page
 * allocator still refuses the pages as a coherent buffer's, DMA debug still
 * tracks the buffer, no counter says it was freed or unmapped; the refusals
 * are counted as rejected frees, as the direct path counts them. After the
 * unpin the free goes through: the device faults, the pages are write-back
 * and free again.
 */
static void free_pinned(struct hwenv *e, struct dmm_sim_dev *s, int coherent, size_t size, unsigned pin_at,
			int scattered)
{
	const uint64_t n = size / PG;
	unsigned char *buf = malloc(size);
	dmm_phys_t pa[16];
	dmm_pfn_t pinned;
	struct dmm_dma_stats st0, st1;
	struct dmm_iommu_stats is0, is1;
	uint64_t free0, bad0;
	void *cpu;
	dmm_dma_addr_t dma;

	assert_non_null(buf);
	assert_true(n <= 16);
	assert_ok(dmm_dma_debug_device(s->dev, 1));
	/* once without a pin: the page tables and debug's records it needs
	 * stay, so that the free pages can be compared after the next */
	assert_ok(dmm_dma_alloc_coherent(s->dev, size, 0, &cpu, &dma));
	assert_ok(dmm_dma_free_coherent(s->dev, size, cpu, dma));
	dmm_page_drain_pcp(e->mem);
	free0 = tu_zone_free_all(e->mem);
	assert_ok(dmm_dma_alloc_coherent(s->dev, size, 0, &cpu, &dma));
	for (uint64_t i = 0; i < n; i++)
		assert_ok(dmm_dma_bus_to_phys(s->dev, dma + i * PG, &pa[i]));
	if (scattered)
		assert_true(pa[1] != pa[0] + PG);
	for (size_t i = 0; i < size; i++)
		buf[i] = (unsigned char)(i * 7 + 3);
	assert_ok(dmm_hw_dev_write(s->hw, dma, buf, size));
	assert_ok(dmm_page_pin(e->mem, dmm_phys_to_pfn(pa[pin_at]), 0, &pinned, NULL));
	assert_int_equal(pinned, dmm_phys_to_pfn(pa[pin_at]));
	dmm_device_get_stats(s->dev, &st0);
	assert_ok(dmm_device_iommu_stats(s->dev, &is0));
	bad0 = tu_zone_bad_frees(e->mem);

	assert_rc(dmm_dma_free_coherent(s->dev, size, cpu, dma), -DMM_EBUSY);
	assert_rc(dmm_dma_free_coherent(s->dev, size, cpu, dma), -DMM_EBUSY); /* still the whole mapping */
	assert_int_equal(tu_zone_bad_frees(e->mem), bad0 + 2);
	for (uint64_t i = 0; i < n; i++) {
		dmm_phys_t p;
		assert_ok(dmm_dma_bus_to_phys(s->dev, dma + i * PG, &p));
		assert_int_equal(p, pa[i]);
		assert_int_equal(dmm_hw_memattr(e->hw, pa[i]),
				 coherent ? DMM_MEMATTR_WB : DMM_MEMATTR_UC);
	}
	memset(buf, 0, size);
	assert_ok(dmm_hw_dev_read(s->hw, dma, buf, size));
	for (size_t i = 0; i < size; i++)
		assert_int_equal(buf[i], (unsigned char)(i * 7 + 3));
	memset(buf, 0, size);
	assert_ok(dmm_hw_cpu_read_virt(e->hw, cpu, buf, size));
	for (size_t i = 0; i < size; i++)
		assert_int_equal(buf[i], (unsigned char)(i * 7 + 3));
	for (uint64_t i = 0; i < n; i++) {
		const struct dmm_page *pg = dmm_pfn_to_page(e->mem, dmm_phys_to_pfn(pa[i]));
		if (scattered || i == 0)
			assert_int_equal(pg->state, scattered || !(n & (n - 1)) ? DMM_PAGE_ALLOC : DMM_PAGE_RANGE);
		else
			assert_int_equal(pg->state, DMM_PAGE_TAIL);
	}
	/* still a coherent buffer's pages: the page allocator refuses them */
	if (scattered)
		assert_rc(dmm_page_free(e->mem, dmm_phys_to_pfn(pa[pin_at]), 0), -DMM_EBUSY);
	else if (!(n & (n - 1)))
		assert_rc(dmm_page_free(e->mem, dmm_phys_to_pfn(pa[0]), (unsigned)__builtin_ctzll(n)), -DMM_EBUSY);
	else
		assert_rc(dmm_free_range(e->mem, dmm_phys_to_pfn(pa[0]), n), -DMM_EBUSY);
	assert_int_equal(dmm_dma_debug_active(e->mem, s->dev), 1);
	dmm_device_get_stats(s->dev, &st1);
	assert_int_equal(st1.coherent_frees, st0.coherent_frees);
	assert_int_equal(st1.fail_unmap, st0.fail_unmap);
	assert_int_equal(st1.low_pages, st0.low_pages);
	assert_ok(dmm_device_iommu_stats(s->dev, &is1));
	assert_int_equal(is1.mapped_pages, is0.mapped_pages);
	assert_int_equal(is1.unmaps, is0.unmaps);
	assert_int_equal(is1.iova.frees, is0.iova.frees);
	assert_int_equal(is1.iova.allocated_pages, is0.iova.allocated_pages);
	assert_ok(dmm_device_iommu_check(s->dev));
	assert_checks(e->mem);

	assert_ok(dmm_page_unpin(e->mem, pinned, 0));
	assert_ok(dmm_dma_free_coherent(s->dev, size, cpu, dma));
	assert_rc(dmm_hw_dev_read(s->hw, dma, buf, 16), -DMM_EFAULT);
	assert_int_equal(dmm_dma_debug_active(e->mem, s->dev), 0);
	assert_int_equal(dmm_dma_debug_total(e->mem), 0);
	dmm_device_get_stats(s->dev, &st1);
	assert_int_equal(st1.coherent_frees, st0.coherent_frees + 1);
	assert_ok(dmm_device_iommu_stats(s->dev, &is1));
	assert_int_equal(is1.mapped_pages, is0.mapped_pages - n);
	dmm_page_drain_pcp(e->mem);
	for (uint64_t i = 0; i < n; i++) {
		uint8_t st = dmm_pfn_to_page(e->mem, dmm_phys_to_pfn(pa[i]))->state;
		assert_int_equal(dmm_hw_memattr(e->hw, pa[i]), DMM_MEMATTR_WB);
		assert_true(st == DMM_PAGE_FREE || st == DMM_PAGE_TAIL); /* in a free block */
	}
	assert_int_equal(tu_zone_free_all(e->mem), free0);
	assert_ok(dmm_device_iommu_check(s->dev));
	assert_checks(e->mem);
	assert_ok(dmm_dma_debug_device(s->dev, -1));
	free(buf);
}

/* A coherent buffer behind the IOMMU with a pinned page: one block, one
 * range (3 pages), for a coherent and a non-coherent device. */
static void test_coherent_pinned(void **state)
{
	struct hwenv e;
	(void)state;

	hwenv_create(&e, "pc", 0);
	for (int coherent = 0; coherent < 2; coherent++) {
		struct dmm_sim_dev s = sdev(&e, "pinned", 32, coherent, DMM_IOMMU_DMA, NULL);
		free_pinned(&e, &s, coherent, 4 * PG, 0, 0);
		free_pinned(&e, &s, coherent, 3 * PG, 0, 0);
		free_pinned(&e, &s, coherent, PG, 0, 0);
		assert_ok(dmm_sim_device_destroy(&s));
	}
	hwenv_destroy(&e);
}

/*
 * A pin and a free of a coherent buffer behind the IOMMU at once, every
 * round (both leave a spinning barrier together): never both succeed. A
 * pin that lands makes the free -DMM_EBUSY with the buffer still mapped
 * (freed after the unpin); a free that goes through makes the pin fail
 * (-DMM_EAGAIN or -DMM_ENOENT); both may fail (the pin seen by the free's
 * claim, the claim by the pin). The domain is checked after every round,
 * the page allocator every 128th and at the end.
 */
struct pin_duel {
	struct dmm_mem *mem;
	struct tu_spin_barrier bar;
	unsigned rounds;
	dmm_pfn_t pfn;
	int rc;
};

static void *pin_duel_thread(void *arg)
{
	struct pin_duel *d = arg;
	dmm_pfn_t pinned;

	for (unsigned i = 0; i < d->rounds; i++) {
		tu_spin_wait(&d->bar); /* the buffer is there */
		d->rc = dmm_page_pin(d->mem, d->pfn, 0, &pinned, NULL);
		tu_spin_wait(&d->bar); /* pin and free done */
	}
	return NULL;
}

static void test_coherent_pin_race(void **state)
{
	struct hwenv e;
	struct dmm_sim_dev s;
	struct pin_duel d = { 0 };
	unsigned landed = 0, freed = 0;
	uint64_t free0;
	pthread_t t;
	int failed = 0;
	(void)state;

	hwenv_create(&e, "pc", 0);
	s = sdev(&e, "duel", 32, 0, DMM_IOMMU_DMA, NULL);
	d.mem = e.mem;
	d.rounds = 2000;
	for (size_t size = PG; size <= 3 * PG; size += 2 * PG) { /* the page tables it needs */
		void *cpu;
		dmm_dma_addr_t dma;
		assert_ok(dmm_dma_alloc_coherent(s.dev, size, 0, &cpu, &dma));
		assert_ok(dmm_dma_free_coherent(s.dev, size, cpu, dma));
	}
	dmm_page_drain_pcp(e.mem);
	free0 = tu_zone_free_all(e.mem);
	assert_int_equal(pthread_create(&t, NULL, pin_duel_thread, &d), 0);
	for (unsigned i = 0; i < d.rounds; i++) {
		size_t size = i & 1 ? 3 * PG : PG; /* a range, a block */
		void *cpu;
		dmm_dma_addr_t dma;
		dmm_phys_t pa = 0;
		int rc, prc;

		if (!failed) {
			assert_ok(dmm_dma_alloc_coherent(s.dev, size, 0, &cpu, &dma));
			assert_ok(dmm_dma_bus_to_phys(s.dev, dma, &pa));
		}
		d.pfn = failed ? 0 : dmm_phys_to_pfn(pa);
		tu_spin_wait(&d.bar);
		rc = failed ? 0 : dmm_dma_free_coherent(s.dev, size, cpu, dma);
		tu_spin_wait(&d.bar);
		prc = d.rc;
		if (failed)
			continue;
		if ((prc == 0 && rc != -DMM_EBUSY) || (prc != 0 && prc != -DMM_EAGAIN && prc != -DMM_ENOENT) ||
		    (rc != 0 && rc != -DMM_EBUSY)) {
			failed = 1; /* let the thread finish its rounds first */
			print_error("round %u: pin %s, free %s\n", i, dmm_errname(prc), dmm_errname(rc));
			continue;
		}
		if (rc) {
			/* refused: still mapped, freed once the pin is gone */
			dmm_phys_t p;
			if (dmm_dma_bus_to_phys(s.dev, dma, &p) || p != pa) {
				failed = 1;
				print_error("round %u: a refused free unmapped the buffer\n", i);
				continue;
			}
			if (prc == 0)
				assert_ok(dmm_page_unpin(e.mem, dmm_phys_to_pfn(pa), 0));
			assert_ok(dmm_dma_free_coherent(s.dev, size, cpu, dma));
		}
		landed += prc == 0;
		freed += rc == 0;
		if (dmm_device_iommu_check(s.dev) ||
		    (i % 128 == 0 && (dmm_page_alloc_check(e.mem) || dmm_range_check(e.mem)))) {
			failed = 1;
			print_error("round %u: a check failed\n", i);
		}
	}
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_false(failed);
	print_message("%u pins landed first, %u frees went through first\n", landed, freed);
	{
		struct dmm_iommu_stats is;
		assert_ok(dmm_device_iommu_stats(s.dev, &is));
		assert_int_equal(is.mapped_pages, 0);
	}
	assert_ok(dmm_device_iommu_check(s.dev));
	dmm_page_drain_pcp(e.mem);
	assert_int_equal(tu_zone_free_all(e.mem), free0);
	assert_ok(dmm_sim_device_destroy(&s));
	hwenv_destroy(&e);
}

/* A fragmented machine: the coherent buffer is made of scattered pages. */
static void test_coherent_scattered(void **state)
{
	struct dmm_machine m;
	struct dmm_hw_opts o;
	struct hwenv e;
	enum { NP = 20000 };
	static dmm_pfn_t held[NP];
	unsigned n = 0;
	(void)state;

	tu_machine(&m, "frag");
	tu_add_ram(&m, 0, 64 * MiB);
	m.dma_limit = 0;
	dmm_hw_opts_default(&o);
	o.nr_cpus = 2;
	o.log_level = DMM_LOG_ERR;
	assert_ok(dmm_hw_mem_create(&m, &o, &e.hw, &e.mem));
	if (!dmm_hw_platform(e.hw)->vmap) {
		dmm_hw_mem_destroy(e.hw, e.mem);
		skip();
	}
	{
		struct dmm_sim_dev s = sdev(&e, "frag", 32, 0, DMM_IOMMU_DMA, NULL);
		void *cpu;
		dmm_dma_addr_t dma;
		unsigned char buf[16 * 4096];

		/* (DMA debug's state now: free_pinned() below turns it on) */
		assert_ok(dmm_dma_debug_device(s.dev, 1));
		assert_ok(dmm_dma_debug_device(s.dev, -1));
		/* take every page, give back every other one: no two free pages touch */
		while (n < NP && dmm_page_alloc(e.mem, 0, NULL, DMM_GFP_NOWMARK, &held[n]) == 0)
			n++;
		assert_true(n < NP); /* everything taken */
		for (unsigned i = 0; i < n; i += 2)
			assert_ok(dmm_page_free(e.mem, held[i], 0));
		assert_ok(dmm_dma_alloc_coherent(s.dev, 16 * 4096, 0, &cpu, &dma));
		/* consecutive IOVAs, scattered pages, one CPU range */
		{
			dmm_phys_t p0, p1;
			assert_ok(dmm_dma_bus_to_phys(s.dev, dma, &p0));
			assert_ok(dmm_dma_bus_to_phys(s.dev, dma + PG, &p1));
			assert_true(p1 != p0 + PG);
		}
		for (unsigned i = 0; i < sizeof(buf); i++)
			buf[i] = (unsigned char)(i * 13);
		assert_ok(dmm_hw_cpu_write_virt(e.hw, cpu, buf, sizeof(buf)));
		assert_ok(dmm_hw_cpu_read_virt(e.hw, cpu, buf, 16)); /* through the vmap */
		memset(buf, 0, sizeof(buf));
		assert_ok(dmm_hw_dev_read(s.hw, dma, buf, sizeof(buf)));
		for (unsigned i = 0; i < sizeof(buf); i++)
			assert_int_equal(buf[i], (unsigned char)(i * 13));
		assert_ok(dmm_device_iommu_check(s.dev));
		{
			dmm_pfn_t pg[16];
			for (int i = 0; i < 16; i++) {
				dmm_phys_t p;
				assert_ok(dmm_dma_bus_to_phys(s.dev, dma + (uint64_t)i * PG, &p));
				pg[i] = dmm_phys_to_pfn(p);
				assert_int_equal(dmm_pfn_to_page(e.mem, pg[i])->state, DMM_PAGE_ALLOC);
			}
			assert_ok(dmm_dma_free_coherent(s.dev, 16 * 4096, cpu, dma));
			dmm_page_drain_pcp(e.mem);
			/* every page back with the buddy allocator (the neighbours are held) */
			for (int i = 0; i < 16; i++)
				assert_int_equal(dmm_pfn_to_page(e.mem, pg[i])->state, DMM_PAGE_FREE);
		}
		/* a page in the middle pinned, then the first */
		free_pinned(&e, &s, 0, 16 * 4096, 5, 1);
		free_pinned(&e, &s, 0, 16 * 4096, 0, 1);
		for (unsigned i = 1; i < n; i += 2)
			assert_ok(dmm_page_free(e.mem, held[i], 0));
		assert_ok(dmm_sim_device_destroy(&s));
	}
	hwenv_destroy(&e);
}

/* A malicious untrusted device reads around a small buffer: its own bytes
 * and zeros inside the page, a fault outside; writes around a buffer it
 * fills never reach the neighbours. */
static void test_untrusted_malicious(void **state)
{
	struct hwenv e;
	unsigned char page[PG], buf[2 * PG];
	(void)state;

	hwenv_create(&e, "pc", 1);
	{
		struct dmm_device_desc d = tu_desc("thunderbolt", 64, 1, DMM_DEVICE_CMA_NONE);
		struct dmm_sim_dev s;
		dmm_pfn_t pfn = high_pages(&e, 0);
		dmm_phys_t pa = dmm_pfn_to_phys(pfn);
		dmm_dma_addr_t a, start;
		struct dmm_iommu_stats is;

		d.iommu = DMM_IOMMU_DMA;
		d.untrusted = 1;
		assert_ok(dmm_sim_device_create(e.mem, e.hw, &d, NULL, &s));
		/* the page holds secrets around a 200-byte buffer at offset 1000 */
		memset(page, 0xee, sizeof(page));
		for (int i = 0; i < 200; i++)
			page[1000 + i] = (unsigned char)i;
		assert_ok(dmm_hw_cpu_write(e.hw, pa, page, PG));
		a = dmm_dma_map_phys(s.dev, pa + 1000, 200, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(s.dev, a));
		assert_int_equal(a & (PG - 1), 1000);
		start = a & ~(PG - 1);
		assert_ok(dmm_hw_dev_read(s.hw, start, buf, PG));
		for (unsigned i = 0; i < PG; i++)
			assert_int_equal(buf[i], i >= 1000 && i < 1200 ? (unsigned char)(i - 1000) : 0);
		assert_rc(dmm_hw_dev_read(s.hw, start + PG, buf, 16), -DMM_EFAULT);
		assert_rc(dmm_hw_dev_read(s.hw, start - 16, buf, 16), -DMM_EFAULT);
		assert_ok(dmm_device_iommu_stats(s.dev, &is));
		assert_int_equal(is.bounced, 1);
		dmm_dma_unmap_phys(s.dev, a, 200, DMM_DMA_TO_DEVICE);

		/* FROM_DEVICE: the device scribbles over the whole page */
		a = dmm_dma_map_phys(s.dev, pa + 1000, 200, DMM_DMA_FROM_DEVICE);
		assert_ok(dmm_dma_mapping_error(s.dev, a));
		memset(buf, 0x77, PG);
		assert_ok(dmm_hw_dev_write(s.hw, a & ~(PG - 1), buf, PG));
		dmm_dma_unmap_phys(s.dev, a, 200, DMM_DMA_FROM_DEVICE);
		assert_ok(dmm_hw_cpu_read(e.hw, pa, buf, PG));
		for (unsigned i = 0; i < PG; i++)
			assert_int_equal(buf[i], i >= 1000 && i < 1200 ? 0x77 : 0xee);
		/* a whole-page buffer is mapped in place, no bounce */
		a = dmm_dma_map_phys(s.dev, pa, PG, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(s.dev, a));
		assert_ok(dmm_device_iommu_stats(s.dev, &is));
		assert_int_equal(is.bounced, 2);
		dmm_dma_unmap_phys(s.dev, a, PG, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_page_free(e.mem, pfn, 0));
		assert_ok(dmm_sim_device_destroy(&s));
	}
	hwenv_destroy(&e);
}

/* The same for a device that does not snoop the caches: the zeros around
 * its buffer are in memory, not only in the CPU's cache, so the page it
 * reads never shows what another device's bounce left in those slots. */
static void test_untrusted_noncoherent_padding(void **state)
{
	struct hwenv e;
	static unsigned char secret[8192], buf[PG];
	(void)state;

	for (int coherent = 0; coherent <= 1; coherent++) {
		hwenv_create(&e, "pc", 1);
		{
			struct dmm_device_desc d = tu_desc("thunderbolt", 64, coherent, DMM_DEVICE_CMA_NONE);
			struct dmm_sim_dev s, t;
			struct dmm_device_desc td = tu_desc("dma32", 32, coherent, DMM_DEVICE_CMA_NONE);
			dmm_pfn_t hi = high_pages(&e, 1), pfn = high_pages(&e, 0);
			dmm_phys_t pa = dmm_pfn_to_phys(pfn);
			dmm_dma_addr_t a;
			struct dmm_iommu_stats is;

			d.iommu = DMM_IOMMU_DMA;
			d.untrusted = 1;
			assert_ok(dmm_sim_device_create(e.mem, e.hw, &d, NULL, &s));
			/* a trusted 32-bit device bounces a secret: 4 slots, back to their area */
			assert_ok(dmm_sim_device_create(e.mem, e.hw, &td, NULL, &t));
			memset(secret, 0x77, sizeof(secret));
			assert_ok(dmm_hw_cpu_write(e.hw, dmm_pfn_to_phys(hi), secret, sizeof(secret)));
			a = dmm_dma_map_phys(t.dev, dmm_pfn_to_phys(hi), sizeof(secret), DMM_DMA_TO_DEVICE);
			assert_ok(dmm_dma_mapping_error(t.dev, a));
			assert_true(dmm_swiotlb_is_bounce(e.mem, a));
			dmm_dma_unmap_phys(t.dev, a, sizeof(secret), DMM_DMA_TO_DEVICE);
			assert_ok(dmm_sim_device_destroy(&t));

			/* the untrusted device's 200 bytes land in a page of those slots */
			fill(&e, pa, PG, 3);
			a = dmm_dma_map_phys(s.dev, pa + 1000, 200, DMM_DMA_TO_DEVICE);
			assert_ok(dmm_dma_mapping_error(s.dev, a));
			assert_ok(dmm_device_iommu_stats(s.dev, &is));
			assert_int_equal(is.bounced, 1);
			assert_ok(dmm_hw_dev_read(s.hw, a & ~(PG - 1), buf, PG));
			for (unsigned i = 0; i < PG; i++)
				if ((i < 1000 || i >= 1200) && buf[i])
					fail_msg("coherent %d: page byte %u is %#x, not 0", coherent, i, buf[i]);
			dmm_dma_unmap_phys(s.dev, a, 200, DMM_DMA_TO_DEVICE);
			assert_checks(e.mem);
			assert_ok(dmm_swiotlb_check(e.mem));
			assert_ok(dmm_page_free(e.mem, pfn, 0));
			assert_ok(dmm_page_free(e.mem, hi, 1));
			assert_ok(dmm_sim_device_destroy(&s));
		}
		hwenv_destroy(&e);
	}
}

static void test_identity(void **state)
{
	struct hwenv e;
	struct dmm_iommu_info info;
	unsigned char buf[256];
	(void)state;

	hwenv_create(&e, "pc", 0);
	{
		struct dmm_sim_dev s = sdev(&e, "pt", 64, 1, DMM_IOMMU_IDENTITY, NULL);
		dmm_pfn_t pfn = high_pages(&e, 0);
		dmm_phys_t pa = dmm_pfn_to_phys(pfn);
		dmm_dma_addr_t a;
		assert_ok(dmm_device_iommu_info(s.dev, &info));
		assert_int_equal(info.mode, DMM_IOMMU_IDENTITY);
		assert_true(info.domain_id != 0);
		fill(&e, pa, 256, 9);
		a = dmm_dma_map_phys(s.dev, pa, 256, DMM_DMA_TO_DEVICE);
		assert_int_equal(a, pa);
		assert_ok(dmm_hw_dev_read(s.hw, a, buf, 256));
		expect(buf, 256, 9);
		dmm_dma_unmap_phys(s.dev, a, 256, DMM_DMA_TO_DEVICE);
		assert_rc(dmm_device_iommu_stats(s.dev, &(struct dmm_iommu_stats){ 0 }), -DMM_EINVAL);
		assert_ok(dmm_page_free(e.mem, pfn, 0));
		assert_ok(dmm_sim_device_destroy(&s));
	}
	{
		struct dmm_sim_dev s = sdev(&e, "plain", 64, 1, DMM_IOMMU_NONE, NULL);
		assert_rc(dmm_device_iommu_info(s.dev, &info), -DMM_EINVAL);
		assert_ok(dmm_sim_device_destroy(&s));
	}
	hwenv_destroy(&e);
}

static void test_bad_unmaps(void **state)
{
	struct hwenv e;
	struct dmm_dma_stats st;
	(void)state;

	hwenv_create(&e, "pc", 0);
	{
		struct dmm_sim_dev s = sdev(&e, "bad", 32, 1, DMM_IOMMU_DMA, NULL);
		dmm_pfn_t pfn = high_pages(&e, 2);
		dmm_phys_t pa = dmm_pfn_to_phys(pfn);
		dmm_dma_addr_t a = dmm_dma_map_phys(s.dev, pa, 3 * PG, DMM_DMA_TO_DEVICE);
		unsigned char b[16];
		assert_ok(dmm_dma_mapping_error(s.dev, a));
		dmm_dma_unmap_phys(s.dev, a + PG, 2 * PG, DMM_DMA_TO_DEVICE); /* not its start */
		dmm_dma_unmap_phys(s.dev, a, 2 * PG, DMM_DMA_TO_DEVICE);      /* too short */
		dmm_dma_unmap_phys(s.dev, a, 4 * PG, DMM_DMA_TO_DEVICE);      /* too long */
		dmm_dma_unmap_phys(s.dev, 0x7000, PG, DMM_DMA_TO_DEVICE);     /* nothing there */
		dmm_device_get_stats(s.dev, &st);
		assert_int_equal(st.fail_unmap, 4);
		assert_int_equal(st.unmaps, 0);
		/* nothing changed: the mapping still works */
		assert_ok(dmm_hw_dev_read(s.hw, a + 2 * PG, b, 16));
		assert_ok(dmm_device_iommu_check(s.dev));
		dmm_dma_unmap_phys(s.dev, a, 3 * PG, DMM_DMA_TO_DEVICE);
		dmm_dma_unmap_phys(s.dev, a, 3 * PG, DMM_DMA_TO_DEVICE); /* twice */
		dmm_device_get_stats(s.dev, &st);
		assert_int_equal(st.fail_unmap, 5);
		assert_int_equal(st.unmaps, 1);
		/* dma-ranges or offsets are refused behind an IOMMU */
		{
			struct dmm_device_desc d = tu_desc("x", 32, 1, DMM_DEVICE_CMA_NONE);
			struct dmm_device *x;
			d.iommu = DMM_IOMMU_DMA;
			d.nr_ranges = 1;
			d.ranges[0] = (struct dmm_dma_range){ 0, 0, 1 * GiB };
			assert_rc(dmm_device_create(e.mem, &d, NULL, &x), -DMM_EINVAL);
		}
		assert_ok(dmm_device_iommu_check(s.dev));
		assert_ok(dmm_page_free(e.mem, pfn, 2));
		assert_ok(dmm_sim_device_destroy(&s));
	}
	hwenv_destroy(&e);
}

/*
 * The PC profile (13 GiB above 4 GiB), a 32-bit NIC-like device: rings of
 * coherent descriptors and a stream of packet buffers taken wherever the
 * page allocator puts them (high memory first). Behind the IOMMU it holds
 * no page below 4 GiB; without it, the rings come from below 4 GiB and
 * every high buffer bounces through low bounce slots.
 */
static uint64_t low_use(struct hwenv *e, int iommu)
{
	struct dmm_sim_dev s = sdev(e, iommu ? "nic-iommu" : "nic", 32, 1, iommu ? DMM_IOMMU_DMA : 0, NULL);
	struct dmm_dma_stats st;
	void *ring[8];
	dmm_dma_addr_t rdma[8];
	unsigned char pkt[1500];

	for (int r = 0; r < 8; r++)
		assert_ok(dmm_dma_alloc_coherent(s.dev, 64 * 1024, 0, &ring[r], &rdma[r]));
	for (int i = 0; i < 2000; i++) {
		dmm_pfn_t pfn;
		dmm_dma_addr_t a;
		assert_ok(dmm_page_alloc(e->mem, 0, NULL, 0, &pfn));
		fill(e, dmm_pfn_to_phys(pfn), 1500, (unsigned)i);
		a = dmm_dma_map_phys(s.dev, dmm_pfn_to_phys(pfn), 1500, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_dma_mapping_error(s.dev, a));
		assert_true(a + 1500 <= G4);
		assert_ok(dmm_hw_dev_read(s.hw, a, pkt, 1500));
		expect(pkt, 1500, (unsigned)i);
		dmm_dma_unmap_phys(s.dev, a, 1500, DMM_DMA_TO_DEVICE);
		assert_ok(dmm_page_free(e->mem, pfn, 0));
	}
	dmm_device_get_stats(s.dev, &st);
	for (int r = 0; r < 8; r++)
		assert_ok(dmm_dma_free_coherent(s.dev, 64 * 1024, ring[r], rdma[r]));
	if (iommu) {
		assert_int_equal(st.bounced_maps, 0);
		assert_int_equal(st.low_pages, 0);
	} else {
		assert_int_equal(st.bounced_maps, 2000);
		assert_int_equal(st.low_pages, 8 * 16);
	}
	assert_ok(dmm_sim_device_destroy(&s));
	return st.low_peak_bytes;
}

static void test_low_memory_pc(void **state)
{
	struct hwenv e;
	uint64_t with, without;
	(void)state;

	hwenv_create(&e, "pc", 1);
	with = low_use(&e, 1);
	without = low_use(&e, 0);
	print_message("low memory held at peak: %llu bytes behind the IOMMU, %llu without\n",
		      (unsigned long long)with, (unsigned long long)without);
	assert_int_equal(with, 0);
	assert_true(without >= 8 * 64 * 1024 + 2048);
	hwenv_destroy(&e);
}

/* Regressions found in review: wrong unmaps that must be refused, 4 KiB
 * bounce slots with scatterlists, a piece crossing the boundary, too many
 * segments leaving nothing behind, destroying a device with a timer armed,
 * idle caches trimmed by the timer. */
static void test_review_regressions(void **state)
{
	struct hwenv e;
	struct dmm_dma_stats st;
	(void)state;

	hwenv_create(&e, "pc", 0);
	{
		struct dmm_sim_dev s = sdev(&e, "adj", 32, 1, DMM_IOMMU_DMA, NULL);
		dmm_pfn_t pfn = high_pages(&e, 2), blk;
		struct dmm_constraint c = DMM_CONSTRAINT_ANY;
		dmm_dma_addr_t a = dmm_dma_map_phys(s.dev, dmm_pfn_to_phys(pfn), 2 * PG, DMM_DMA_TO_DEVICE);
		dmm_dma_addr_t b = dmm_dma_map_phys(s.dev, dmm_pfn_to_phys(pfn) + 2 * PG, 2 * PG, DMM_DMA_TO_DEVICE);
		dmm_dma_addr_t lo = a < b ? a : b, x;
		assert_ok(dmm_dma_mapping_error(s.dev, a));
		assert_ok(dmm_dma_mapping_error(s.dev, b));
		/* next-door mappings: one unmap of both is refused */
		if ((a > b ? a - b : b - a) == 2 * PG) {
			dmm_dma_unmap_phys(s.dev, lo, 4 * PG, DMM_DMA_TO_DEVICE);
			dmm_device_get_stats(s.dev, &st);
			assert_int_equal(st.fail_unmap, 1);
		}
		dmm_dma_unmap_phys(s.dev, a, 2 * PG, DMM_DMA_TO_DEVICE);
		dmm_dma_unmap_phys(s.dev, b, 2 * PG, DMM_DMA_TO_DEVICE);
		dmm_device_get_stats(s.dev, &st);
		assert_int_equal(st.unmaps, 2);
		/* a 2 MiB block: unmapping a piece of it is refused */
		c.align = 2ull << 20;
		c.lo = G4;
		assert_ok(dmm_alloc_range(e.mem, &c, 512, 0, &blk));
		x = dmm_dma_map_phys(s.dev, dmm_pfn_to_phys(blk), 2ull << 20, DMM_DMA_BIDIRECTIONAL);
		assert_ok(dmm_dma_mapping_error(s.dev, x));
		{
			struct dmm_iommu_stats is;
			assert_ok(dmm_device_iommu_stats(s.dev, &is));
			assert_int_equal(is.pt.blocks_2m, 1);
		}
		dmm_device_get_stats(s.dev, &st);
		dmm_dma_unmap_phys(s.dev, x + 3 * PG, 2 * PG, DMM_DMA_BIDIRECTIONAL);
		dmm_dma_unmap_phys(s.dev, x, PG, DMM_DMA_BIDIRECTIONAL);
		{
			struct dmm_dma_stats st2;
			dmm_device_get_stats(s.dev, &st2);
			assert_int_equal(st2.fail_unmap, st.fail_unmap + 2);
		}
		assert_ok(dmm_device_iommu_check(s.dev));
		dmm_dma_unmap_phys(s.dev, x, 2ull << 20, DMM_DMA_BIDIRECTIONAL);
		assert_ok(dmm_device_iommu_check(s.dev));
		assert_ok(dmm_free_range(e.mem, blk, 512));
		assert_ok(dmm_page_free(e.mem, pfn, 2));
		assert_ok(dmm_sim_device_destroy(&s));
	}
	/* a piece crossing the segment boundary; too many segments */
	{
		struct dmm_device_desc d = tu_desc("bnd", 32, 1, DMM_DEVICE_CMA_NONE);
		struct dmm_sim_dev s;
		struct dmm_sg sg[4];
		dmm_pfn_t pfn = high_pages(&e, 5);
		d.iommu = DMM_IOMMU_DMA;
		d.limits.boundary = 64 * 1024;
		d.limits.max_segs = 2;
		assert_ok(dmm_sim_device_create(e.mem, e.hw, &d, NULL, &s));
		dmm_dma_debug_device(s.dev, 1);
		dmm_sg_init(sg, 4);
		dmm_sg_set_phys(&sg[0], dmm_pfn_to_phys(pfn) + 2048, 64 * 1024);
		assert_rc(dmm_dma_map_sg(s.dev, sg, 1, DMM_DMA_TO_DEVICE), -DMM_EINVAL);
		for (int i = 0; i < 4; i++)
			dmm_sg_set_phys(&sg[i], dmm_pfn_to_phys(pfn) + (uint64_t)i * 2 * PG + 8, 100);
		assert_rc(dmm_dma_map_sg(s.dev, sg, 4, DMM_DMA_TO_DEVICE), -DMM_EINVAL);
		assert_int_equal(dmm_dma_debug_active(e.mem, s.dev), 0);
		assert_ok(dmm_device_iommu_check(s.dev));
		{
			struct dmm_iommu_stats is;
			assert_ok(dmm_device_iommu_stats(s.dev, &is));
			assert_int_equal(is.mapped_pages, 0);
			assert_int_equal(is.maps, 0);
		}
		assert_int_equal(dmm_dma_map_sg(s.dev, sg, 2, DMM_DMA_TO_DEVICE), 2);
		dmm_dma_unmap_sg(s.dev, sg, 2, DMM_DMA_TO_DEVICE);
		assert_int_equal(dmm_dma_debug_active(e.mem, s.dev), 0);
		dmm_dma_debug_device(s.dev, 0);
		assert_ok(dmm_page_free(e.mem, pfn, 5));
		assert_ok(dmm_sim_device_destroy(&s));
	}
	/* devices destroyed right after deferred unmaps, timers still armed */
	{
		struct dmm_iommu_opts io;
		dmm_pfn_t pfn = high_pages(&e, 0);
		dmm_iommu_opts_default(&io);
		io.flush = DMM_IOMMU_DEFERRED;
		io.fq_timeout_ns = 1000;
		io.iova.idle_trim_ns = 1000;
		for (int i = 0; i < 50; i++) {
			struct dmm_sim_dev s = sdev(&e, "brief", 32, 1, DMM_IOMMU_DMA, &io);
			dmm_dma_addr_t a = dmm_dma_map_phys(s.dev, dmm_pfn_to_phys(pfn), PG, DMM_DMA_TO_DEVICE);
			assert_ok(dmm_dma_mapping_error(s.dev, a));
			dmm_dma_unmap_phys(s.dev, a, PG, DMM_DMA_TO_DEVICE);
			if (i & 1) {
				struct timespec ts = { 0, 2000 };
				nanosleep(&ts, NULL);
			}
			assert_ok(dmm_sim_device_destroy(&s));
		}
		assert_ok(dmm_page_free(e.mem, pfn, 0));
	}
	/* idle caches of a strict device are trimmed by the timer */
	{
		struct dmm_iommu_opts io;
		struct dmm_iommu_stats is;
		dmm_pfn_t pfn = high_pages(&e, 0);
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		struct dmm_sim_dev s;
		dmm_iommu_opts_default(&io);
		io.iova.idle_trim_ns = 5 * 1000 * 1000;
		s = sdev(&e, "idle", 32, 1, DMM_IOMMU_DMA, &io);
		for (int i = 0; i < 10; i++) {
			dmm_dma_addr_t a = dmm_dma_map_phys(s.dev, dmm_pfn_to_phys(pfn), PG, DMM_DMA_TO_DEVICE);
			assert_ok(dmm_dma_mapping_error(s.dev, a));
			dmm_dma_unmap_phys(s.dev, a, PG, DMM_DMA_TO_DEVICE);
		}
		assert_ok(dmm_device_iommu_stats(s.dev, &is));
		assert_true(is.iova.cached_pages > 0);
		for (int i = 0; i < 200 && is.iova.cached_pages; i++) {
			nanosleep(&ts, NULL);
			assert_ok(dmm_device_iommu_stats(s.dev, &is));
		}
		assert_int_equal(is.iova.cached_pages, 0);
		assert_int_equal(is.iova.ranges, 0);
		assert_ok(dmm_page_free(e.mem, pfn, 0));
		assert_ok(dmm_sim_device_destroy(&s));
	}
	hwenv_destroy(&e);
	/* 4 KiB bounce slots: a bounced scatterlist keeps one layout */
	{
		struct dmm_machine m;
		struct dmm_hw_opts o;
		struct dmm_swiotlb_opts so;
		tu_profile("pc", &m);
		dmm_hw_opts_default(&o);
		o.nr_cpus = 2;
		o.log_level = DMM_LOG_ERR;
		assert_ok(dmm_hw_mem_create(&m, &o, &e.hw, &e.mem));
		dmm_swiotlb_opts_default(e.mem, &so);
		so.slot_size = 4096;
		so.force = 1;
		assert_ok(dmm_swiotlb_init(e.mem, &so));
		{
			struct dmm_sim_dev s = sdev(&e, "slot4k", 32, 1, DMM_IOMMU_DMA, NULL);
			dmm_pfn_t pfn = high_pages(&e, 2);
			struct dmm_sg sg[2];
			unsigned char b[PG];
			dmm_sg_init(sg, 2);
			fill(&e, dmm_pfn_to_phys(pfn) + 2048, PG, 21);
			dmm_sg_set_phys(&sg[0], dmm_pfn_to_phys(pfn) + 2048, PG);
			dmm_sg_set_phys(&sg[1], dmm_pfn_to_phys(pfn) + 3 * PG, 512);
			assert_true(dmm_dma_map_sg(s.dev, sg, 2, DMM_DMA_TO_DEVICE) >= 1);
			assert_ok(dmm_device_iommu_check(s.dev));
			assert_ok(dmm_hw_dev_read(s.hw, sg[0].dma_address, b, PG));
			expect(b, PG, 21);
			dmm_dma_unmap_sg(s.dev, sg, 2, DMM_DMA_TO_DEVICE);
			dmm_device_get_stats(s.dev, &st);
			assert_int_equal(st.fail_unmap, 0);
			assert_ok(dmm_device_iommu_check(s.dev));
			assert_ok(dmm_page_free(e.mem, pfn, 2));
			assert_ok(dmm_sim_device_destroy(&s));
		}
		hwenv_destroy(&e);
	}
}

struct thr {
	struct hwenv *e;
	struct dmm_sim_dev *s;
	unsigned seed;
	int bad;
};

static void *thr_fn(void *arg)
{
	struct thr *t = arg;
	unsigned char b[3000];
	for (int i = 0; i < 3000 && !t->bad; i++) {
		dmm_pfn_t pfn;
		dmm_dma_addr_t a;
		size_t len = 100 + (size_t)((t->seed * 7919u + (unsigned)i * 104729u) % 2900);
		if (dmm_page_alloc(t->e->mem, 0, NULL, 0, &pfn)) {
			t->bad = 1;
			break;
		}
		for (size_t k = 0; k < len; k++)
			b[k] = (unsigned char)(k + (size_t)i + t->seed);
		dmm_hw_cpu_write(t->e->hw, dmm_pfn_to_phys(pfn), b, len);
		a = dmm_dma_map_phys(t->s->dev, dmm_pfn_to_phys(pfn), len, DMM_DMA_TO_DEVICE);
		if (dmm_dma_mapping_error(t->s->dev, a) || dmm_hw_dev_read(t->s->hw, a, b, len))
			t->bad = 2;
		for (size_t k = 0; k < len && !t->bad; k++)
			if (b[k] != (unsigned char)(k + (size_t)i + t->seed))
				t->bad = 3;
		dmm_dma_unmap_phys(t->s->dev, a, len, DMM_DMA_TO_DEVICE);
		dmm_page_free(t->e->mem, pfn, 0);
	}
	return NULL;
}

static void test_two_threads(void **state)
{
	struct hwenv e;
	(void)state;

	hwenv_create(&e, "pc", 0);
	for (int mode = 0; mode < 2; mode++) {
		struct dmm_iommu_opts io;
		struct dmm_sim_dev s;
		pthread_t th[2];
		struct thr t[2];
		dmm_iommu_opts_default(&io);
		io.flush = mode ? DMM_IOMMU_DEFERRED : DMM_IOMMU_STRICT;
		s = sdev(&e, "mq", 32, 0, DMM_IOMMU_DMA, &io);
		for (int i = 0; i < 2; i++) {
			t[i] = (struct thr){ &e, &s, (unsigned)i + 1, 0 };
			assert_int_equal(pthread_create(&th[i], NULL, thr_fn, &t[i]), 0);
		}
		for (int i = 0; i < 2; i++) {
			pthread_join(th[i], NULL);
			assert_int_equal(t[i].bad, 0);
		}
		dmm_device_iommu_flush(s.dev);
		assert_ok(dmm_device_iommu_check(s.dev));
		{
			struct dmm_iommu_stats is;
			assert_ok(dmm_device_iommu_stats(s.dev, &is));
			assert_int_equal(is.maps, 6000);
			assert_int_equal(is.unmaps, 6000);
			assert_int_equal(is.mapped_pages, 0);
			assert_true(is.iova.cache_hits > 0);
		}
		assert_ok(dmm_sim_device_destroy(&s));
	}
	hwenv_destroy(&e);
}

static int iw_calls, iw_err;
static dmm_dma_addr_t iw_bus;

static void iw_cb(void *arg, dmm_dma_addr_t dma, int err)
{
	(void)arg;
	iw_bus = dma;
	iw_err = err;
	iw_calls++;
}

/* @dev's failures for want of IOVA space, as the device and its domain
 * count them (they agree). */
static uint64_t iova_failures(struct dmm_device *dev)
{
	struct dmm_iommu_stats is;
	struct dmm_dma_stats ds;

	assert_ok(dmm_device_iommu_stats(dev, &is));
	dmm_device_get_stats(dev, &ds);
	assert_int_equal(is.fail_iova, ds.fail_iova);
	return ds.fail_iova;
}

/*
 * A deferred request behind the IOMMU that finds no IOVA space waits: its
 * tries (the first, and each retry an unmap of a bounce buffer makes)
 * count no IOVA failure; a map that fails counts one. Once space comes
 * free the request is made.
 */
static void test_deferred_iova_retries_are_no_failures(void **state)
{
	struct hwenv e;
	struct dmm_sim_dev s, b;
	dmm_dma_addr_t a[64], x, y;
	dmm_pfn_t pfn;
	unsigned n = 0;
	(void)state;

	hwenv_create(&e, "pc", 1);
	s = sdev(&e, "io20", 20, 1, DMM_IOMMU_DMA, NULL); /* 1 MiB of IOVA space */
	b = sdev(&e, "dma32", 32, 1, DMM_IOMMU_NONE, NULL);
	pfn = high_pages(&e, 6); /* 256 KiB */
	for (;;) {
		assert_true(n < 64);
		a[n] = dmm_dma_map_page(s.dev, pfn, 0, 256 * KiB, DMM_DMA_TO_DEVICE);
		if (dmm_dma_mapping_error(s.dev, a[n]))
			break;
		n++;
	}
	assert_true(n >= 1);
	assert_rc(dmm_dma_mapping_error(s.dev, a[n]), -DMM_ENOSPC);
	assert_int_equal(iova_failures(s.dev), 1); /* the map that failed */

	iw_calls = 0;
	assert_ok(dmm_dma_map_phys_deferred(s.dev, dmm_pfn_to_phys(pfn), 256 * KiB, DMM_DMA_TO_DEVICE, iw_cb, NULL));
	assert_int_equal(iw_calls, 0); /* queued */
	assert_int_equal(iova_failures(s.dev), 1);
	/* a bounce unmap retries it: still no room, no failure */
	x = dmm_dma_map_page(b.dev, pfn, 0, 2048, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(b.dev, x));
	assert_true(dmm_swiotlb_is_bounce(e.mem, x));
	dmm_dma_unmap_page(b.dev, x, 2048, DMM_DMA_TO_DEVICE);
	assert_int_equal(iw_calls, 0);
	assert_int_equal(iova_failures(s.dev), 1);
	/* space comes free (a strict unmap frees the IOVA at once), and the
	 * next bounce unmap makes the request */
	dmm_dma_unmap_page(s.dev, a[0], 256 * KiB, DMM_DMA_TO_DEVICE);
	assert_int_equal(iw_calls, 0);
	y = dmm_dma_map_page(b.dev, pfn, 0, 2048, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(b.dev, y));
	dmm_dma_unmap_page(b.dev, y, 2048, DMM_DMA_TO_DEVICE);
	assert_int_equal(iw_calls, 1);
	assert_ok(iw_err);
	assert_int_equal(iova_failures(s.dev), 1);
	dmm_dma_unmap_page(s.dev, iw_bus, 256 * KiB, DMM_DMA_TO_DEVICE);
	for (unsigned i = 1; i < n; i++)
		dmm_dma_unmap_page(s.dev, a[i], 256 * KiB, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_page_free(e.mem, pfn, 6));
	assert_ok(dmm_sim_device_destroy(&b));
	assert_ok(dmm_sim_device_destroy(&s));
	hwenv_destroy(&e);
}

/*
 * Behind the IOMMU, an untrusted device's map that fails after its buffer
 * bounced (the segment boundary refuses the page span; a scatterlist with
 * a piece of nothing) gives the bounce slots back and counts no bounce:
 * neither the domain's bounced count nor the bounce buffers' maps, unmaps
 * and bytes, nor the device's bounced maps. A map that succeeds counts.
 */
static void test_failed_map_counts_no_bounce(void **state)
{
	struct hwenv e;
	struct dmm_device_desc d = tu_desc("thunderbolt", 64, 1, DMM_DEVICE_CMA_NONE);
	struct dmm_sim_dev s;
	struct dmm_iommu_stats is;
	struct dmm_swiotlb_stats st;
	struct dmm_dma_stats ds0, ds;
	struct dmm_sg sg[2];
	dmm_dma_addr_t a;
	dmm_pfn_t pfn;
	dmm_phys_t pa;
	(void)state;

	hwenv_create(&e, "pc", 1);
	d.iommu = DMM_IOMMU_DMA;
	d.untrusted = 1;
	d.limits.boundary = PG;
	assert_ok(dmm_sim_device_create(e.mem, e.hw, &d, NULL, &s));
	pfn = high_pages(&e, 1);
	pa = dmm_pfn_to_phys(pfn);
	dmm_device_get_stats(s.dev, &ds0);

	/* 200 bytes at 4000 bounce, keeping the offset: two pages, across
	 * the boundary */
	a = dmm_dma_map_phys(s.dev, pa + 4000, 200, DMM_DMA_TO_DEVICE);
	assert_rc(dmm_dma_mapping_error(s.dev, a), -DMM_EINVAL);
	dmm_sg_init(sg, 2);
	dmm_sg_set_phys(&sg[0], pa + 100, 200);
	dmm_sg_set_phys(&sg[1], pa + PG, 0);
	assert_rc(dmm_dma_map_sg(s.dev, sg, 2, DMM_DMA_BIDIRECTIONAL), -DMM_EINVAL);
	assert_ok(dmm_device_iommu_stats(s.dev, &is));
	assert_int_equal(is.bounced, 0);
	assert_int_equal(is.maps, 0);
	dmm_swiotlb_get_stats(e.mem, &st);
	assert_int_equal(st.maps, 0);
	assert_int_equal(st.unmaps, 0);
	assert_int_equal(st.bounced_to_device, 0);
	assert_int_equal(st.used_slots, 0);
	dmm_device_get_stats(s.dev, &ds);
	assert_int_equal(ds.bounced_maps, ds0.bounced_maps);
	assert_int_equal(ds.maps, ds0.maps);
	assert_int_equal(ds.low_bounce_bytes, 0);
	assert_int_equal(ds.fail_invalid, ds0.fail_invalid + 2);

	/* one that maps counts */
	a = dmm_dma_map_phys(s.dev, pa + 100, 200, DMM_DMA_TO_DEVICE);
	assert_ok(dmm_dma_mapping_error(s.dev, a));
	assert_ok(dmm_device_iommu_stats(s.dev, &is));
	assert_int_equal(is.bounced, 1);
	dmm_swiotlb_get_stats(e.mem, &st);
	assert_int_equal(st.maps, 1);
	assert_int_equal(st.bounced_to_device, 200);
	dmm_dma_unmap_phys(s.dev, a, 200, DMM_DMA_TO_DEVICE);
	dmm_swiotlb_get_stats(e.mem, &st);
	assert_int_equal(st.unmaps, 1);
	assert_int_equal(st.used_slots, 0);
	assert_ok(dmm_page_free(e.mem, pfn, 1));
	assert_ok(dmm_sim_device_destroy(&s));
	hwenv_destroy(&e);
}

/*
 * A scatterlist unmap the IOMMU refuses (the list unmapped already, a
 * piece of nothing, a list of none) counts as a refused unmap, not as an
 * unmap: the device's unmaps move only for the unmap that was done.
 */
static void test_refused_sg_unmap_uncounted(void **state)
{
	struct hwenv e;
	struct dmm_sim_dev s;
	struct dmm_dma_stats a, b;
	struct dmm_sg sg[2], saved[2];
	dmm_pfn_t pfn;
	(void)state;

	hwenv_create(&e, "pc", 0);
	s = sdev(&e, "nic", 32, 1, DMM_IOMMU_DMA, NULL);
	pfn = high_pages(&e, 1);
	dmm_sg_init(sg, 2);
	dmm_sg_set_phys(&sg[0], dmm_pfn_to_phys(pfn), PG);
	dmm_sg_set_phys(&sg[1], dmm_pfn_to_phys(pfn) + PG, PG);
	assert_int_equal(dmm_dma_map_sg(s.dev, sg, 2, DMM_DMA_TO_DEVICE), 1);
	memcpy(saved, sg, sizeof(sg));
	dmm_device_get_stats(s.dev, &a);
	/* a piece of nothing, a list of none: refused, still mapped */
	sg[1].length = 0;
	dmm_dma_unmap_sg(s.dev, sg, 2, DMM_DMA_TO_DEVICE);
	memcpy(sg, saved, sizeof(sg));
	dmm_dma_unmap_sg(s.dev, sg, 0, DMM_DMA_TO_DEVICE);
	dmm_device_get_stats(s.dev, &b);
	assert_int_equal(b.unmaps, a.unmaps);
	assert_int_equal(b.fail_unmap, a.fail_unmap + 2);
	assert_ok(dmm_device_iommu_check(s.dev));
	/* the unmap */
	dmm_dma_unmap_sg(s.dev, sg, 2, DMM_DMA_TO_DEVICE);
	dmm_device_get_stats(s.dev, &b);
	assert_int_equal(b.unmaps, a.unmaps + 1);
	assert_int_equal(b.fail_unmap, a.fail_unmap + 2);
	/* twice: the list as the unmap left it, and as it was mapped */
	dmm_dma_unmap_sg(s.dev, sg, 2, DMM_DMA_TO_DEVICE);
	memcpy(sg, saved, sizeof(sg));
	dmm_dma_unmap_sg(s.dev, sg, 2, DMM_DMA_TO_DEVICE);
	dmm_device_get_stats(s.dev, &b);
	assert_int_equal(b.unmaps, a.unmaps + 1);
	assert_int_equal(b.fail_unmap, a.fail_unmap + 4);
	assert_ok(dmm_device_iommu_check(s.dev));
	assert_ok(dmm_page_free(e.mem, pfn, 1));
	assert_ok(dmm_sim_device_destroy(&s));
	hwenv_destroy(&e);
}

/*
 * Behind the IOMMU a list is one mapping whose layout unmap recomputes
 * from the pieces' lengths: a caller that changed a length so that the
 * layout no longer matches has its unmap refused (fail_unmap, not an
 * unmap; the list stays mapped, nothing leaks unseen), and the list as
 * mapped then unmaps.
 */
static void test_sg_piece_length_changed_refused(void **state)
{
	struct hwenv e;
	struct dmm_sim_dev s;
	struct dmm_dma_stats a, b;
	struct dmm_iommu_stats is;
	struct dmm_sg sg[2];
	dmm_pfn_t pfn;
	(void)state;

	hwenv_create(&e, "pc", 0);
	s = sdev(&e, "nic", 32, 1, DMM_IOMMU_DMA, NULL);
	pfn = high_pages(&e, 2);
	dmm_sg_init(sg, 2);
	dmm_sg_set_phys(&sg[0], dmm_pfn_to_phys(pfn), PG);
	dmm_sg_set_phys(&sg[1], dmm_pfn_to_phys(pfn) + PG, PG);
	assert_true(dmm_dma_map_sg(s.dev, sg, 2, DMM_DMA_TO_DEVICE) > 0);
	dmm_device_get_stats(s.dev, &a);
	sg[1].length = 2 * PG; /* a page more */
	dmm_dma_unmap_sg(s.dev, sg, 2, DMM_DMA_TO_DEVICE);
	dmm_device_get_stats(s.dev, &b);
	assert_int_equal(b.unmaps, a.unmaps);
	assert_int_equal(b.fail_unmap, a.fail_unmap + 1);
	assert_ok(dmm_device_iommu_stats(s.dev, &is));
	assert_int_equal(is.mapped_pages, 2);
	sg[1].length = PG;
	dmm_dma_unmap_sg(s.dev, sg, 2, DMM_DMA_TO_DEVICE);
	dmm_device_get_stats(s.dev, &b);
	assert_int_equal(b.unmaps, a.unmaps + 1);
	assert_ok(dmm_device_iommu_stats(s.dev, &is));
	assert_int_equal(is.mapped_pages, 0);
	assert_ok(dmm_device_iommu_check(s.dev));
	assert_ok(dmm_page_free(e.mem, pfn, 2));
	assert_ok(dmm_sim_device_destroy(&s));
	hwenv_destroy(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stream_roundtrip),
		cmocka_unit_test(test_deferred_stale),
		cmocka_unit_test(test_sg_contiguous),
		cmocka_unit_test(test_coherent_anywhere),
		cmocka_unit_test(test_coherent_scattered),
		cmocka_unit_test(test_coherent_pinned),
		cmocka_unit_test(test_coherent_pin_race),
		cmocka_unit_test(test_untrusted_malicious),
		cmocka_unit_test(test_untrusted_noncoherent_padding),
		cmocka_unit_test(test_identity),
		cmocka_unit_test(test_bad_unmaps),
		cmocka_unit_test(test_low_memory_pc),
		cmocka_unit_test(test_two_threads),
		cmocka_unit_test(test_deferred_iova_retries_are_no_failures),
		cmocka_unit_test(test_failed_map_counts_no_bounce),
		cmocka_unit_test(test_refused_sg_unmap_uncounted),
		cmocka_unit_test(test_sg_piece_length_changed_refused),
		cmocka_unit_test(test_review_regressions),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

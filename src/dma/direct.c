/* SPDX-License-Identifier: MIT */
/*
 * Direct DMA mapping: no IOMMU, bus address = physical address translated
 * by the device's bus offset or dma-ranges.
 *
 * Coherent allocations. The device's coherent limits (bus addresses) become
 * physical windows; each is tried highest first (so a 64-bit device never
 * touches low memory and a 32-bit one gets the cheapest memory it can
 * reach): a large request from the device's contiguous area when the area
 * lies inside the window, else a buddy block (power-of-two page counts) or
 * an exact range. Non-coherent devices: the buffer is zeroed through the
 * CPU, flushed out of the caches and its linear mapping made uncached.
 *
 * Streaming mappings and cache maintenance on non-coherent devices, as a
 * careful kernel does it (arm64's choice):
 *
 *   for the device (map, sync_for_device)  CLEAN the range, every direction:
 *                                          the device must see the CPU's data,
 *                                          and no dirty line may be evicted
 *                                          over what the device writes later
 *   for the CPU (unmap, sync_for_cpu)      INVALIDATE for FROM_DEVICE and
 *                                          BIDIRECTIONAL: drop lines a
 *                                          speculative fetch may have filled
 *                                          while the device owned the buffer;
 *                                          nothing for TO_DEVICE
 *
 * Invalidation works on whole cache lines: a buffer sharing a line with other
 * data loses that data's newer bytes. DMA debug reports such mappings; the
 * small-object layer avoids them by bouncing.
 */
#include "dma/dma_internal.h"

#define CMA_MIN_PAGES 16 /* coherent requests of 64 KiB and more try the area */
#define COHERENT_MAX_BYTES (((uint64_t)1 << 30) * DMM_PAGE_SIZE) /* (checked before rounding up) */


static void cache_op(struct dmm_device *dev, enum dmm_cache_op op, dmm_phys_t pa, size_t len)
{
	const struct dmm_platform *p = &dev->mem->plat;

	if (p->cache_maint)
		p->cache_maint(p->ctx, op, pa, len);
	struct dmm_dev_pcpu *c = dmm__dev_pcpu(dev);
	dmm__dstat(op == DMM_CACHE_CLEAN ? &c->clean_bytes : op == DMM_CACHE_INVALIDATE ? &c->inval_bytes
										: &c->flush_bytes,
		   len);
}

static void for_device(struct dmm_device *dev, dmm_phys_t pa, size_t len, enum dmm_dma_dir dir)
{
	(void)dir;
	if (!dev->desc.coherent)
		cache_op(dev, DMM_CACHE_CLEAN, pa, len);
}

static void for_cpu(struct dmm_device *dev, dmm_phys_t pa, size_t len, enum dmm_dma_dir dir)
{
	if (!dev->desc.coherent && dir != DMM_DMA_TO_DEVICE)
		cache_op(dev, DMM_CACHE_INVALIDATE, pa, len);
}

void dmm__dma_for_device(struct dmm_device *dev, dmm_phys_t pa, size_t len, enum dmm_dma_dir dir)
{
	for_device(dev, pa, len, dir);
}

void dmm__dma_for_cpu(struct dmm_device *dev, dmm_phys_t pa, size_t len, enum dmm_dma_dir dir)
{
	for_cpu(dev, pa, len, dir);
}

uint64_t dmm__dev_low_bounce(const struct dmm_device *dev)
{
	uint64_t sum = 0;

	for (unsigned c = 0; c < dev->mem->plat.nr_cpus; c++)
		sum += __atomic_load_n(&dev->pcpu[c].low_bounce, __ATOMIC_RELAXED);
	return sum;
}

/* Raise the peak to the low memory held now. */
void dmm__dev_low_peak(struct dmm_device *dev)
{
	uint64_t now = __atomic_load_n(&dev->st.low_pages, __ATOMIC_RELAXED) * DMM_PAGE_SIZE + dmm__dev_low_bounce(dev);
	uint64_t peak = __atomic_load_n(&dev->st.low_peak_bytes, __ATOMIC_RELAXED);

	while (now > peak && !__atomic_compare_exchange_n(&dev->st.low_peak_bytes, &peak, now, false, __ATOMIC_RELAXED,
							  __ATOMIC_RELAXED))
		;
}

/*
 * Low memory (below 4 GiB) a device holds: coherent pages in one atomic
 * counter, bounce bytes per CPU (no shared line on the bounce path). The
 * peak is raised from the sum of both when coherent pages are added and
 * when a CPU's bounce count reaches a new high of its own; the other CPUs'
 * counts are read without stopping them. With one CPU mapping this is the
 * exact peak; with several it is sampled at those moments.
 */
void dmm__dev_low(struct dmm_device *dev, int64_t coherent_pages)
{
	if (coherent_pages) {
		__atomic_fetch_add(&dev->st.low_pages, (uint64_t)coherent_pages, __ATOMIC_RELAXED);
		if (coherent_pages > 0)
			dmm__dev_low_peak(dev);
	}
}

static inline bool dir_ok(enum dmm_dma_dir dir)
{
	return (unsigned)dir <= DMM_DMA_FROM_DEVICE;
}

static uint64_t pages_below_4g(dmm_phys_t pa, uint64_t pages)
{
	const dmm_phys_t g4 = (dmm_phys_t)4 << 30;
	if (pa >= g4)
		return 0;
	return dmm_min64(pages, (g4 - pa) >> DMM_PAGE_SHIFT);
}

/* ---- coherent allocations ----------------------------------------------------- */

/* The device's area if it lies entirely inside physical window @w. */
static int area_in_window(struct dmm_device *dev, const struct dmm_constraint *w)
{
	struct dmm_cma_info ci;
	int a = dev->desc.cma_area;

	if (a == DMM_DEVICE_CMA_NONE)
		return -1;
	if (a == DMM_DEVICE_CMA_DEFAULT)
		a = dmm_cma_default(dev->mem);
	if (a < 0 || dmm_cma_get_info(dev->mem, a, &ci))
		return -1;
	if (dmm_pfn_to_phys(ci.base_pfn) < w->lo || dmm_pfn_to_phys(ci.base_pfn + ci.nr_pages) > w->hi)
		return -1;
	return a;
}

static unsigned order_of(uint64_t pages)
{
	return pages <= 1 ? 0 : 64u - (unsigned)__builtin_clzll(pages - 1);
}

int dmm_dma_alloc_coherent(struct dmm_device *dev, size_t size, unsigned gfp, void **cpu,
			   dmm_dma_addr_t *dma)
{
	const void *site = __builtin_return_address(0);
	struct dmm_constraint w[DMM_MAX_DMA_RANGES];
	struct dmm_mem *mem;
	uint64_t pages;
	unsigned nw, order;
	dmm_pfn_t pfn = 0;
	int err = -DMM_ENOMEM, from_cma = 0;

	if (!dev || !cpu || !dma || !size || dev->desc.is_bus || (gfp & ~(DMM_GFP_ATOMIC | DMM_GFP_NOWMARK))) {
		if (dev)
			dmm__dstat(&dev->st.fail_invalid, 1);
		return dmm__count_invalid(dev ? dev->mem : (struct dmm_mem *)0);
	}
	mem = dev->mem;
	if (size > COHERENT_MAX_BYTES) {
		dmm__dstat(&dev->st.fail_invalid, 1);
		return dmm__count_invalid(mem);
	}
	pages = dmm_align_up(size, DMM_PAGE_SIZE) >> DMM_PAGE_SHIFT;
	if (!dev->desc.coherent && (gfp & DMM_GFP_ATOMIC) && !dmm__iommu_translating(dev)) {
		/* an uncached buffer needs an attribute change, which may sleep:
		 * atomic callers take pre-remapped memory from the atomic pools */
		err = dmm__atomic_pool_alloc(dev, pages, &pfn);
		if (err) {
			dmm__dstat(err == -DMM_ENOTSUP  ? &dev->st.fail_atomic
				   : err == -DMM_EINVAL ? &dev->st.fail_invalid
							: &dev->st.fail_nomem,
				   1);
			return err;
		}
		goto done;
	}
	if (!(gfp & DMM_GFP_ATOMIC))
		dmm__atomic_pool_poll(mem); /* a wanted refill, when there is no background worker */
	if (dmm__iommu_translating(dev)) {
		dmm_phys_t pa0;
		uint64_t low;
		err = dmm__iommu_alloc_coherent(dev, size, gfp, cpu, dma, &pa0, &low);
		if (err) {
			dmm__dstat(err == -DMM_EINVAL ? &dev->st.fail_invalid : &dev->st.fail_nomem, 1);
			return err;
		}
		dmm__dstat(&dev->st.coherent_allocs, 1);
		dmm__dstat(&dev->st.coherent_bytes, size);
		dmm__dev_low(dev, (int64_t)low);
		if (dmm__dbg_on(dev))
			dmm__dbg_map(dev, DMM__DBG_COHERENT, *dma, pa0, size, DMM_DMA_BIDIRECTIONAL, *cpu, site);
		return 0;
	}
	order = order_of(pages);
	nw = dmm__dev_phys_windows(dev, &dev->lim[1], w, DMM_MAX_DMA_RANGES);
	for (unsigned i = 0; i < nw; i++) {
		struct dmm_constraint c = w[i];
		int a = pages >= CMA_MIN_PAGES && !(gfp & DMM_GFP_ATOMIC) ? area_in_window(dev, &c) : -1;
		uint64_t cma_align = c.align;

		c.max_seg_size = 0;
		c.max_segs = 0;
		if (a >= 0 && c.boundary) {
			/* the area knows alignment only: aligned to its power-of-two
			 * span, the buffer cannot cross a (larger) boundary */
			uint64_t span = ((uint64_t)1 << order) * DMM_PAGE_SIZE;
			if (span > c.boundary)
				a = -1;
			cma_align = dmm_max64(cma_align, span);
		}
		if (a >= 0) {
			unsigned f = DMM_CMA_ZERO | (dev->desc.coherent ? 0 : DMM_CMA_UNCACHED);
			if (!dmm_cma_alloc(mem, a, pages, cma_align, f, &pfn, (enum dmm_cma_fail *)0)) {
				from_cma = 1;
				err = 0;
				break;
			}
		}
		if (pages == ((uint64_t)1 << order) && order <= DMM_MAX_ORDER)
			err = dmm_page_alloc(mem, order, &c, DMM_GFP_ZERO | gfp, &pfn);
		else
			err = dmm_alloc_range(mem, &c, pages, DMM_GFP_ZERO | gfp, &pfn);
		if (!err)
			break;
	}
	if (nw == 0)
		err = -DMM_ERANGE;
	if (err) {
		dmm__dstat(err == -DMM_ERANGE ? &dev->st.fail_range : &dev->st.fail_nomem, 1);
		return err;
	}
	if (!dev->desc.coherent && !from_cma) {
		/* no dirty line may later be written back over the device's data */
		cache_op(dev, DMM_CACHE_FLUSH, dmm_pfn_to_phys(pfn), pages * DMM_PAGE_SIZE);
		if (mem->plat.set_memattr &&
		    (err = mem->plat.set_memattr(mem->plat.ctx, dmm_pfn_to_phys(pfn), pages * DMM_PAGE_SIZE,
						 DMM_MEMATTR_UC)) != 0) {
			/* the hook cannot say how far it got: all of it back to
			 * write-back before the pages go back */
			mem->plat.set_memattr(mem->plat.ctx, dmm_pfn_to_phys(pfn), pages * DMM_PAGE_SIZE,
					      DMM_MEMATTR_WB);
			if (pages == ((uint64_t)1 << order) && order <= DMM_MAX_ORDER)
				dmm_page_free(mem, pfn, order);
			else
				dmm_free_range(mem, pfn, pages);
			dmm__dstat(&dev->st.fail_nomem, 1);
			return err < 0 ? err : -err;
		}
	}
	/* freed by dmm_dma_free_coherent only */
	dmm__coherent_mark(dmm__pfn_page(mem, pfn), true);
done:
	*cpu = dmm_pfn_to_virt(mem, pfn);
	*dma = dmm_dma_phys_to_bus(dev, dmm_pfn_to_phys(pfn));
	dmm__dstat(&dev->st.coherent_allocs, 1);
	dmm__dstat(&dev->st.coherent_bytes, size);
	dmm__dev_low(dev, (int64_t)pages_below_4g(dmm_pfn_to_phys(pfn), pages));
	if (from_cma)
		dmm__dstat(&dev->st.coherent_from_cma, 1);
	if (dmm__dbg_on(dev))
		dmm__dbg_map(dev, DMM__DBG_COHERENT, *dma, dmm_pfn_to_phys(pfn), size, DMM_DMA_BIDIRECTIONAL, *cpu,
			     site);
	return 0;
}

static int free_coherent_pages(struct dmm_device *dev, struct dmm_page *head, dmm_phys_t pa, uint64_t pages,
			       const void *cpu, int untracked);

int dmm_dma_free_coherent(struct dmm_device *dev, size_t size, void *cpu, dmm_dma_addr_t dma)
{
	const void *site = __builtin_return_address(0);
	struct dmm__dbg_saved saved = { 0 };
	struct dmm_mem *mem;
	struct dmm_page *head;
	dmm_phys_t pa;
	uint64_t pages;
	int err, untracked = 0;

	if (!dev || !size || !cpu || size > COHERENT_MAX_BYTES) {
		if (dev)
			dmm__dstat(&dev->st.fail_invalid, 1);
		return dmm__count_invalid(dev ? dev->mem : (struct dmm_mem *)0);
	}
	mem = dev->mem;
	pages = dmm_align_up(size, DMM_PAGE_SIZE) >> DMM_PAGE_SHIFT;
	if (dmm__iommu_translating(dev)) {
		uint64_t low = 0;
		if (dmm_dma_bus_to_phys(dev, dma, &pa))
			pa = DMM_PHYS_MAX;
		if (dmm__dbg_on(dev)) {
			err = dmm__dbg_free_coherent(dev, dma, size, pa, cpu, site, &saved);
			if (err < 0)
				return err;
		}
		err = dmm__iommu_free_coherent(dev, size, cpu, dma, &low);
		if (err) {
			dmm__dbg_restore(dev, &saved); /* the buffer is still allocated */
			if (err != -DMM_EBUSY) /* (pinned: a mapping all the same) */
				dmm__dstat(&dev->st.fail_unmap, 1);
			return err;
		}
		dmm__dstat(&dev->st.coherent_frees, 1);
		dmm__dev_low(dev, -(int64_t)low);
		return 0;
	}
	if (dmm_dma_bus_to_phys(dev, dma, &pa) || (pa & (DMM_PAGE_SIZE - 1)) ||
	    !(head = dmm_pfn_to_page(mem, dmm_phys_to_pfn(pa)))) {
		if (dmm__dbg_on(dev))
			dmm__dbg_free_coherent(dev, dma, size, DMM_PHYS_MAX, cpu, site, (struct dmm__dbg_saved *)0);
		return -DMM_ENOENT;
	}
	if (dmm__dbg_on(dev)) {
		err = dmm__dbg_free_coherent(dev, dma, size, pa, cpu, site, &saved);
		if (err < 0)
			return err;
		untracked = err;
	}
	err = free_coherent_pages(dev, head, pa, pages, cpu, untracked);
	if (err) /* nothing was freed: debug keeps tracking the buffer */
		dmm__dbg_restore(dev, &saved);
	return err;
}

/* dmm_dma_free_coherent without an IOMMU: the pages of [pa, + pages) go
 * back to the allocator that gave them, if the arguments agree with it.
 * @untracked: debug did not know the buffer (a refusal is then ENOENT). */
static int free_coherent_pages(struct dmm_device *dev, struct dmm_page *head, dmm_phys_t pa, uint64_t pages,
			       const void *cpu, int untracked)
{
	struct dmm_mem *mem = dev->mem;
	const dmm_pfn_t pfn = dmm_phys_to_pfn(pa);
	const unsigned order = order_of(pages);
	uint8_t state;
	int err;

	if (dmm_pfn_to_virt(mem, pfn) != cpu)
		return untracked ? -DMM_ENOENT : -DMM_EINVAL;
	/* Which allocator served it, and does the size agree? */
	if ((err = dmm__atomic_pool_free(dev, pa, pages)) <= 0) {
		if (err)
			return untracked ? -DMM_ENOENT : err;
		goto freed;
	}
	/* not pool memory: the head of a buffer allocated here carries the
	 * mark (a page the caller got elsewhere is refused), and taking it
	 * off is the claim: of two frees of the buffer at once, the one that
	 * takes it frees the buffer; the other leaves the pages alone. The
	 * claimant checks the size against a buffer nobody else frees now,
	 * and puts the mark back if it refuses. */
	if (!dmm__coherent_claim(head))
		return -DMM_ENOENT;
	err = 0;
	state = dmm__state(head);
	if (state != DMM_PAGE_RANGE && state != DMM_PAGE_ALLOC)
		return -DMM_ENOENT; /* freed behind the mark's back (misuse, after the claim): no mark on it */
	if (state == DMM_PAGE_RANGE && !head->owner && head->private != pages)
		err = untracked ? -DMM_ENOENT : -DMM_EINVAL;
	else if (state == DMM_PAGE_ALLOC && (pages != ((uint64_t)1 << order) || head->order != order))
		err = untracked ? -DMM_ENOENT : -DMM_EINVAL;
	if (err) {
		dmm__coherent_mark(head, true);
		return err;
	}
	if (state == DMM_PAGE_RANGE && head->owner) {
		const struct dmm_cma_area *a = head->owner;
		err = dmm_cma_release(mem, (int)a->idx, pfn, pages);
	} else {
		/* the free in two steps: claimed first (a pinned page refuses
		 * it, and then nothing has changed: the buffer stays uncached),
		 * write-back again while still the buffer's, then freed */
		err = dmm__free_begin(mem, head, state);
		if (!err) {
			if (!dev->desc.coherent && mem->plat.set_memattr)
				mem->plat.set_memattr(mem->plat.ctx, pa, pages * DMM_PAGE_SIZE, DMM_MEMATTR_WB);
			dmm__free_finish(mem, head, state);
		}
	}
	if (err) {
		/* refused (pinned, wrong size): still the buffer, marked again;
		 * -DMM_ENOENT: the block was freed behind the mark's back (a
		 * page or range free of it, misuse, in the window after the
		 * claim) and is no longer the buffer: no mark on a free page */
		if (err != -DMM_ENOENT)
			dmm__coherent_mark(head, true);
		return err;
	}
freed:
	dmm__dstat(&dev->st.coherent_frees, 1);
	dmm__dev_low(dev, -(int64_t)pages_below_4g(pa, pages));
	return 0;
}

/* ---- streaming ---------------------------------------------------------------- */

static dmm_dma_addr_t map_fail(struct dmm_device *dev, int err)
{
	__atomic_store_n(&dev->last_error, err, __ATOMIC_RELAXED);
	if (err == -DMM_ERANGE)
		dmm__dstat(&dev->st.fail_range, 1);
	if (err == -DMM_EINVAL) {
		dmm__dstat(&dev->st.fail_invalid, 1);
		dmm__count_invalid(dev->mem);
	}
	return DMM_DMA_MAPPING_ERROR;
}

/*
 * Must [pa, pa + size) go through a bounce buffer? Out of reach; a device
 * with a restricted pool; bouncing forced for the machine; an untrusted
 * device and a buffer not covering whole pages (the device must not see the
 * neighbours); a non-coherent invalidating mapping of memory that is not
 * DMA-aligned when small objects are packed (they may share a line).
 */
bool dmm__must_bounce(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir, int unreachable)
{
	const struct dmm_machine *m = &dev->mem->machine;

	if (unreachable || dev->restricted_pool || dmm__swiotlb_forced(dev->mem))
		return true;
	if (dev->desc.untrusted && ((pa | size) & (DMM_PAGE_SIZE - 1)))
		return true;
	if (dev->desc.coherent || dir == DMM_DMA_TO_DEVICE || m->kmalloc_policy != DMM_KMALLOC_PACKED ||
	    !((pa | size) & (m->dma_min_align - 1)))
		return false;
	/* inside one small object whose bounds are DMA-aligned: it shares no
	 * unit with a neighbour (a 1500-byte packet in a 2 KiB object) */
	{
		dmm_phys_t os;
		uint64_t on;
		if (dmm__slab_object_of(dev->mem, pa, &os, &on) && pa + size <= os + on &&
		    !((os | on) & (m->dma_min_align - 1)))
			return false;
	}
	return true;
}

/* Bounce if needed, inside a CPU-local section of *@cpu (which a slow
 * path may leave and enter again): *map_pa is what the device will access.
 * @w: see dmm__dma_map_wait. (Inlined into both expansions of map_general,
 * as it was into its one caller: the general path's direct map, which
 * only checks here, pays no call.) */
static inline __attribute__((always_inline)) int maybe_bounce(struct dmm_device *dev, dmm_phys_t pa, size_t size,
							      enum dmm_dma_dir dir, dmm_phys_t *map_pa,
							      dmm_dma_addr_t *bus, unsigned *cpu,
							      struct dmm__map_wait *w)
{
	int err = dmm__dev_reach_fast(dev, pa, size, bus);
	dmm_phys_t tlb;

	*map_pa = pa;
	if (!dmm__must_bounce(dev, pa, size, dir, err))
		return 0;
	if (!dmm__swiotlb_ready(dev->mem))
		return err; /* no bounce buffers: only an unreachable buffer fails */
	err = dmm__swiotlb_map_in(dev, pa, size, dir, 0, &tlb, cpu, w);
	if (err)
		return err;
	err = dmm__dev_reach_fast(dev, tlb, size, bus);
	if (err) {
		/* (never handed out: neither it nor its undoing counts) */
		if (dmm__swiotlb_cancel_in(dev, tlb, dir, *cpu)) {
			dmm__cpu_exit(dev->mem, *cpu);
			dmm__swiotlb_unmap_done(dev->mem);
			*cpu = dmm__cpu_enter(dev->mem);
		}
		return err;
	}
	*map_pa = tlb;
	return 0;
}

int dmm__dev_reach(struct dmm_device *dev, dmm_phys_t pa, uint64_t size, dmm_dma_addr_t *bus)
{
	if (dmm__iommu_translating(dev)) {
		*bus = 0; /* anything can be mapped; the address comes at map time */
		return 0;
	}
	const struct dmm_constraint *l = &dev->lim[0];
	dmm_dma_addr_t b, e;

	if (!dev->desc.nr_ranges)
		return dmm__dev_reach_fast(dev, pa, size, bus);
	b = dmm_dma_phys_to_bus(dev, pa);
	e = dmm_dma_phys_to_bus(dev, pa + size - 1);
	if (b == DMM_DMA_MAPPING_ERROR || e == DMM_DMA_MAPPING_ERROR || e - b != size - 1)
		return -DMM_ERANGE;
	/* dma-ranges: no byte in between may fall in a gap between ranges */
	for (dmm_phys_t p = pa, last = pa + size - 1;;) {
		const struct dmm_dma_range *r = (const struct dmm_dma_range *)0;
		for (unsigned i = 0; i < dev->desc.nr_ranges && !r; i++) {
			const struct dmm_dma_range *q = &dev->desc.ranges[i];
			if (p >= q->cpu_start && p - q->cpu_start < q->size)
				r = q;
		}
		if (!r || r->dma_start + (p - r->cpu_start) != b + (p - pa))
			return -DMM_ERANGE;
		if (last - r->cpu_start < r->size)
			break;
		p = r->cpu_start + r->size;
	}
	if (b < l->lo || e >= l->hi)
		return -DMM_ERANGE;
	*bus = b;
	return 0;
}

bool dmm__is_ram(struct dmm_mem *mem, dmm_phys_t pa, uint64_t size)
{
	if (!size || pa + size - 1 < pa)
		return false;
	return dmm__is_ram_fast(mem, pa, size);
}

/* The general path's map: 0 and *@busp, or the error, which the caller
 * counts (map_fail); @w: see dmm__dma_map_wait. */
static inline __attribute__((always_inline)) int map_general(struct dmm_device *dev, dmm_phys_t pa, size_t size,
							     enum dmm_dma_dir dir, const void *site,
							     struct dmm__map_wait *w, dmm_dma_addr_t *busp)
{
	dmm_dma_addr_t bus;
	int err;

	dmm_phys_t map_pa;

	if (!size || !dir_ok(dir) || dev->desc.is_bus || pa + size < pa || !dmm__is_ram_fast(dev->mem, pa, size))
		return -DMM_EINVAL;
	if (dmm__iommu_translating(dev)) {
		err = dmm__iommu_map(dev, pa, size, dir, &map_pa, &bus, w);
		if (err)
			return err;
		dmm__dstat2(dev, offsetof(struct dmm_dev_pcpu, maps), 1, offsetof(struct dmm_dev_pcpu, map_bytes), size);
	} else if (!dev->desc.nr_ranges && (dmm__dev_reach_fast(dev, pa, size, &bus) || dmm__must_bounce(dev, pa, size, dir, 0)) &&
		   (bus = dmm__swiotlb_map_fast(dev, pa, size, dir)) != DMM_DMA_MAPPING_ERROR) {
		/* bounced through a run cached on this CPU, counters included */
		dmm__phys_of(dev, bus, &map_pa);
	} else {
		/* one section: the bounce slot and the counters */
		unsigned cpu = dmm__cpu_enter(dev->mem);
		err = maybe_bounce(dev, pa, size, dir, &map_pa, &bus, &cpu, w);
		if (!err) {
			dmm__dstat_in(dev, cpu, offsetof(struct dmm_dev_pcpu, maps), 1);
			dmm__dstat_in(dev, cpu, offsetof(struct dmm_dev_pcpu, map_bytes), size);
		}
		dmm__cpu_exit(dev->mem, cpu);
		if (err)
			return err;
	}
	for_device(dev, map_pa, size, dir);
	if (dmm__dbg_on(dev))
		dmm__dbg_map(dev, DMM__DBG_SINGLE, bus, pa, size, dir, (const void *)0, site);
	*busp = bus;
	return 0;
}

dmm_dma_addr_t dmm__dma_map_general(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir,
				    const void *site)
{
	dmm_dma_addr_t bus;
	int err = map_general(dev, pa, size, dir, site, (struct dmm__map_wait *)0, &bus);

	return err ? map_fail(dev, err) : bus;
}

int dmm__dma_map_wait(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir,
		      struct dmm__map_wait *w, dmm_dma_addr_t *bus)
{
	int err = map_general(dev, pa, size, dir, __builtin_return_address(0), w, bus);

	if (!err)
		return 0;
	*bus = DMM_DMA_MAPPING_ERROR;
	/* no room, noted: the request waits (its failure, if it comes,
	 * is counted then); any other failure is final: counted now */
	if (err != -DMM_ENOSPC || !(w->bounce_full || w->iova_full))
		map_fail(dev, err);
	return err;
}

/*
 * The express path of a streaming map (dmm__dev_express: a coherent device
 * whose bus addresses are physical ones), for RAM [pa, pa + size): a buffer
 * the device reaches is counted and mapped in one short section; one it
 * cannot reach (or any, when bouncing is forced) goes to the bounce
 * buffers' express path. Every other case goes to the general path, which
 * checks and does it all (and says why it fails). Each way out is a tail
 * call: these functions need no stack frame.
 */
static inline __attribute__((always_inline)) dmm_dma_addr_t map_express_ram(struct dmm_device *dev, dmm_phys_t pa,
									    size_t size, enum dmm_dma_dir dir,
									    const void *site)
{
	struct dmm_mem *mem = dev->mem;
	struct dmm_dev_pcpu *dp;
	struct dmm_cpu_thread *r;

	if (pa < dev->lim[0].lo || pa + size - 1 >= dev->lim[0].hi ||
	    __atomic_load_n(&mem->bounce_all, __ATOMIC_RELAXED))
		return dmm__swiotlb_map_express(dev, pa, size, dir, site);
	if (!dmm__cpu_try_enter(mem, &r))
		return dmm__dma_map_general(dev, pa, size, dir, site);
	dp = &dev->pcpu[r->cpu]; /* express: a block per CPU */
	dmm__pcpu_add(&dp->maps, 1);
	dmm__pcpu_add(&dp->map_bytes, size);
	dmm__cpu_leave(r);
	return pa;
}

/* The same for a buffer over several pages, checked to be RAM first: apart,
 * so that the call checking the RAM regions leaves the one-page path
 * without a frame. */
static __attribute__((noinline)) dmm_dma_addr_t map_express_span(struct dmm_device *dev, dmm_phys_t pa, size_t size,
								 enum dmm_dma_dir dir, const void *site)
{
	if (!dmm__is_ram_fast(dev->mem, pa, size))
		return dmm__dma_map_general(dev, pa, size, dir, site);
	return map_express_ram(dev, pa, size, dir, site);
}

static inline dmm_dma_addr_t map_express(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir,
					 const void *site)
{
	if (!size || !dir_ok(dir) || pa + size < pa)
		return dmm__dma_map_general(dev, pa, size, dir, site);
	if (dmm_phys_to_pfn(pa) != dmm_phys_to_pfn(pa + size - 1))
		return map_express_span(dev, pa, size, dir, site);
	if (!dmm__is_ram_page(dev->mem, dmm_phys_to_pfn(pa)))
		return dmm__dma_map_general(dev, pa, size, dir, site);
	return map_express_ram(dev, pa, size, dir, site);
}

/* A streaming map of [pa, pa + size): the express path if it serves, else
 * the general one. */
static inline dmm_dma_addr_t map_any(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir,
				     const void *site)
{
	if (__builtin_expect(dmm__dev_express(dev), 1))
		return map_express(dev, pa, size, dir, site);
	return dmm__dma_map_general(dev, pa, size, dir, site);
}

dmm_dma_addr_t dmm_dma_map_phys(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir)
{
	if (!dev)
		return DMM_DMA_MAPPING_ERROR;
	return map_any(dev, pa, size, dir, __builtin_return_address(0));
}

dmm_dma_addr_t dmm_dma_map_page(struct dmm_device *dev, dmm_pfn_t pfn, size_t offset, size_t size,
				enum dmm_dma_dir dir)
{
	dmm_phys_t pa = dmm_pfn_to_phys(pfn) + offset;

	if (!dev)
		return DMM_DMA_MAPPING_ERROR;
	/* a page number or offset past the physical address space */
	if (pfn > (DMM_PHYS_MAX >> DMM_PAGE_SHIFT) || pa < dmm_pfn_to_phys(pfn))
		return map_fail(dev, -DMM_EINVAL);
	return map_any(dev, pa, size, dir, __builtin_return_address(0));
}

dmm_dma_addr_t dmm_dma_map_single(struct dmm_device *dev, const void *cpu, size_t size, enum dmm_dma_dir dir)
{
	const struct dmm_platform *p;
	dmm_phys_t pa;

	if (!dev)
		return DMM_DMA_MAPPING_ERROR;
	p = &dev->mem->plat;
	if (!cpu || !p->virt_to_phys || dmm__virt_to_phys(dev->mem, cpu, &pa))
		return map_fail(dev, -DMM_EINVAL);
	return map_any(dev, pa, size, dir, __builtin_return_address(0));
}

int dmm_dma_mapping_error(struct dmm_device *dev, dmm_dma_addr_t dma)
{
	if (!dev)
		return -DMM_EINVAL;
	if (dma == DMM_DMA_MAPPING_ERROR) {
		int e = __atomic_load_n(&dev->last_error, __ATOMIC_RELAXED);
		return e ? e : -DMM_EINVAL;
	}
	if (dmm__dbg_on(dev))
		dmm__dbg_checked(dev, dma);
	return 0;
}

/* The CPU takes [pa, pa + size) back, in one section: the bounce pool's
 * lookup (once), stale lines of the bounce buffer dropped, copied back and
 * its slots freed, and (@count) the device's unmap counter. In a bounce
 * pool the bounce buffers do the cache maintenance, over the mapping's own
 * bytes only: a wrong size or address must not drop another mapping's
 * lines. An address in a bounce pool where no mapping is (a bounce mapping
 * unmapped already) is refused: nothing done, counted (@count) as a
 * refused unmap, not as an unmap. */
static void unmap_pa(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir, bool count)
{
	unsigned cpu = dmm__cpu_enter(dev->mem);
	struct tlb_pool *pool = dmm__swiotlb_pool_of_in(dev->mem, pa);
	int bounced = 0;

	if (pool)
		bounced = dmm__swiotlb_unmap_in(dev, pool, pa, size, dir_ok(dir) ? dir : DMM_DMA_NONE, cpu);
	if (count && bounced >= 0) /* (-1: inside one of its bounce mappings, counted as invalid) */
		dmm__dstat_in(dev, cpu, offsetof(struct dmm_dev_pcpu, unmaps), 1);
	else if (count && bounced == -2)
		dmm__dstat(&dev->st.fail_unmap, 1);
	dmm__cpu_exit(dev->mem, cpu);
	if (bounced > 0)
		dmm__swiotlb_unmap_done(dev->mem);
	else if (!pool && dir_ok(dir))
		for_cpu(dev, pa, size, dir);
}

void dmm__dma_unmap_general(struct dmm_device *dev, dmm_dma_addr_t dma, size_t size, enum dmm_dma_dir dir,
			    const void *site, bool tried)
{
	struct dmm__dbg_saved saved = { 0 };
	dmm_phys_t pa;

	if (dmm__dbg_on(dev))
		dmm__dbg_unmap(dev, DMM__DBG_SINGLE, dma, size, dir, site, &saved);
	if (dmm__iommu_translating(dev)) {
		if (!dmm__iommu_unmap(dev, dma, size, dir))
			dmm__dstat2(dev, offsetof(struct dmm_dev_pcpu, unmaps), 1, 0, 0);
		else
			dmm__dbg_restore(dev, &saved); /* refused: the mapping is still live */
		return;
	}
	if (__builtin_expect(!dev->desc.nr_ranges, 1) ? dmm__phys_of(dev, dma, &pa) : dmm_dma_bus_to_phys(dev, dma, &pa))
		return;
	if (!size || pa + size - 1 < pa)
		return;
	/* a bounce address is the pool's RAM: the short path finds its pool */
	if (!tried && (dev->desc.coherent || dir == DMM_DMA_TO_DEVICE || !dir_ok(dir)) &&
	    dmm__swiotlb_unmap_fast(dev, pa, size, dir_ok(dir) ? dir : DMM_DMA_NONE, false))
		return;
	if (!dmm__is_ram_fast(dev->mem, pa, size))
		return;
	unmap_pa(dev, pa, size, dir, true);
}

void dmm_dma_unmap_phys(struct dmm_device *dev, dmm_dma_addr_t dma, size_t size, enum dmm_dma_dir dir)
{
	const void *site = __builtin_return_address(0);

	if (!dev || dma == DMM_DMA_MAPPING_ERROR)
		return;
	/* express: bus addresses are physical, the device coherent; the
	 * bounce buffers' express path takes the general one when it cannot
	 * finish */
	if (__builtin_expect(dmm__dev_express(dev), 1) && size && dma + size - 1 >= dma) {
		dmm__swiotlb_unmap_express(dev, dma, size, dir, site);
		return;
	}
	dmm__dma_unmap_general(dev, dma, size, dir, site, false);
}

void dmm__dma_unmap_pa(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir)
{
	unmap_pa(dev, pa, size, dir, false);
}

void dmm__dma_sync_pa(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir, int to_device)
{
	struct tlb_pool *pool;

	if (!dir_ok(dir) || !dmm__is_ram(dev->mem, pa, size))
		return;
	if ((pool = dmm__swiotlb_pool_of(dev->mem, pa))) {
		/* (the cache maintenance too, inside the mapping only) */
		dmm__swiotlb_sync(dev, pool, pa, size, dir, to_device);
	} else if (to_device) {
		for_device(dev, pa, size, dir);
	} else {
		for_cpu(dev, pa, size, dir);
	}
}

static void sync_single(struct dmm_device *dev, dmm_dma_addr_t dma, size_t size, enum dmm_dma_dir dir,
			int to_device, const void *site)
{
	dmm_phys_t pa;

	if (!dev)
		return;
	if (dmm__dbg_on(dev))
		dmm__dbg_sync(dev, dma, size, dir, to_device, site);
	if (!size || !dir_ok(dir) || dmm_dma_bus_to_phys(dev, dma, &pa) || !dmm__is_ram(dev->mem, pa, size))
		return;
	if (dmm__iommu_translating(dev)) {
		/* a buffer may span pages that are not physically contiguous
		 * (coherent buffers): page by page */
		for (size_t done = 0; done < size;) {
			size_t n = dmm_min64(size - done, DMM_PAGE_SIZE - ((dma + done) & (DMM_PAGE_SIZE - 1)));
			if (dmm_dma_bus_to_phys(dev, dma + done, &pa))
				break;
			dmm__dma_sync_pa(dev, pa, n, dir, to_device);
			done += n;
		}
	} else {
		dmm__dma_sync_pa(dev, pa, size, dir, to_device);
	}
	dmm__dstat2(dev, offsetof(struct dmm_dev_pcpu, syncs), 1, 0, 0);
}

void dmm_dma_sync_single_for_cpu(struct dmm_device *dev, dmm_dma_addr_t dma, size_t size,
				 enum dmm_dma_dir dir)
{
	sync_single(dev, dma, size, dir, 0, __builtin_return_address(0));
}

void dmm_dma_sync_single_for_device(struct dmm_device *dev, dmm_dma_addr_t dma, size_t size,
				    enum dmm_dma_dir dir)
{
	sync_single(dev, dma, size, dir, 1, __builtin_return_address(0));
}

/* ---- scatterlists --------------------------------------------------------------- */

void dmm_sg_init(struct dmm_sg *sg, unsigned nents)
{
	if (sg)
		dmm_memset(sg, 0, (size_t)nents * sizeof(*sg));
}

void dmm_sg_set_phys(struct dmm_sg *sg, dmm_phys_t phys, uint32_t length)
{
	if (!sg)
		return;
	sg->phys = phys;
	sg->length = length;
	sg->dma_address = DMM_DMA_MAPPING_ERROR;
	sg->dma_length = 0;
}

void dmm_sg_set_page(struct dmm_sg *sg, dmm_pfn_t pfn, uint32_t offset, uint32_t length)
{
	dmm_sg_set_phys(sg, dmm_pfn_to_phys(pfn) + offset, length);
}

uint64_t dmm_sg_bytes(const struct dmm_sg *sg, unsigned nents)
{
	uint64_t n = 0;
	for (unsigned i = 0; sg && i < nents; i++)
		n += sg[i].length;
	return n;
}

static bool crosses(uint64_t bus, uint64_t len, uint64_t boundary)
{
	return boundary && bus / boundary != (bus + len - 1) / boundary;
}

/* Give back the bounce slots parked in dma_address by a map_sg for @dir
 * that fails with @err: the caller never had those mappings, so they count
 * as none (dmm__swiotlb_cancel). */
static int sg_undo(struct dmm_device *dev, struct dmm_sg *sg, unsigned upto, enum dmm_dma_dir dir, int err)
{
	for (unsigned j = 0; j < upto; j++) {
		if (sg[j].dma_address != DMM_DMA_MAPPING_ERROR)
			dmm__swiotlb_cancel(dev, sg[j].dma_address, dir);
		sg[j].dma_address = DMM_DMA_MAPPING_ERROR;
	}
	if (err == -DMM_EINVAL) {
		dmm__dstat(&dev->st.fail_invalid, 1);
		return dmm__count_invalid(dev->mem);
	}
	if (err == -DMM_ERANGE)
		dmm__dstat(&dev->st.fail_range, 1);
	return err;
}

int dmm_dma_map_sg(struct dmm_device *dev, struct dmm_sg *sg, unsigned nents, enum dmm_dma_dir dir)
{
	const void *site = __builtin_return_address(0);
	const struct dmm_constraint *l;
	unsigned segs = 0;
	dmm_dma_addr_t seg_bus = 0;
	uint64_t seg_len = 0, seg_max;
	bool bounced = false;

	if (!dev)
		return -DMM_EINVAL;
	l = &dev->lim[0];
	/* a merged segment must fit dma_length */
	seg_max = l->max_seg_size && l->max_seg_size < UINT32_MAX ? l->max_seg_size : UINT32_MAX;
	if (!sg || !nents || !dir_ok(dir) || dev->desc.is_bus) {
		dmm__dstat(&dev->st.fail_invalid, 1);
		return dmm__count_invalid(dev->mem);
	}
	if (dmm__iommu_translating(dev))
		return dmm__iommu_map_sg(dev, sg, nents, dir, site);
	for (unsigned i = 0; i < nents; i++)
		sg[i].dma_address = DMM_DMA_MAPPING_ERROR;
	/* Validate every piece first, bouncing those that need it (the bounce
	 * address parked in dma_address): nothing is mapped on failure. */
	for (unsigned i = 0; i < nents; i++) {
		dmm_dma_addr_t b;
		int err;
		if (!sg[i].length || !dmm__is_ram(dev->mem, sg[i].phys, sg[i].length) ||
		    (l->max_seg_size && sg[i].length > l->max_seg_size))
			return sg_undo(dev, sg, i, dir, -DMM_EINVAL);
		err = dmm__dev_reach(dev, sg[i].phys, sg[i].length, &b);
		if (dmm__must_bounce(dev, sg[i].phys, sg[i].length, dir, err) && dmm__swiotlb_ready(dev->mem)) {
			dmm_phys_t tlb;
			err = dmm__swiotlb_map(dev, sg[i].phys, sg[i].length, dir, 0, &tlb, (struct dmm__map_wait *)0);
			if (err)
				return sg_undo(dev, sg, i, dir, err);
			sg[i].dma_address = tlb;
			bounced = true;
			err = dmm__dev_reach(dev, tlb, sg[i].length, &b);
		}
		if (err)
			return sg_undo(dev, sg, i + 1, dir, err);
		if (crosses(b, sg[i].length, l->boundary))
			return sg_undo(dev, sg, i + 1, dir, -DMM_EINVAL);
		/* count the segments the merge below will produce */
		if (i && b == seg_bus + seg_len && seg_len + sg[i].length <= seg_max &&
		    !crosses(seg_bus, seg_len + sg[i].length, l->boundary)) {
			seg_len += sg[i].length;
		} else {
			segs++;
			seg_bus = b;
			seg_len = sg[i].length;
		}
	}
	if (bounced)
		segs = nents; /* bounced lists keep one segment per piece (unmap finds them) */
	if (l->max_segs && segs > l->max_segs)
		return sg_undo(dev, sg, nents, dir, -DMM_EINVAL);
	/* Map: write the segments into the first entries. */
	segs = 0;
	for (unsigned i = 0; i < nents; i++) {
		dmm_phys_t pa = sg[i].dma_address != DMM_DMA_MAPPING_ERROR ? sg[i].dma_address : sg[i].phys;
		dmm_dma_addr_t b = dmm_dma_phys_to_bus(dev, pa);
		for_device(dev, pa, sg[i].length, dir);
		if (dmm__dbg_on(dev))
			dmm__dbg_map(dev, DMM__DBG_SG, b, sg[i].phys, sg[i].length, dir, (const void *)0, site);
		if (!bounced && segs && b == sg[segs - 1].dma_address + sg[segs - 1].dma_length &&
		    (uint64_t)sg[segs - 1].dma_length + sg[i].length <= seg_max &&
		    !crosses(sg[segs - 1].dma_address, (uint64_t)sg[segs - 1].dma_length + sg[i].length,
			     l->boundary)) {
			sg[segs - 1].dma_length += sg[i].length;
		} else {
			sg[segs].dma_address = b;
			sg[segs].dma_length = sg[i].length;
			segs++;
		}
	}
	for (unsigned i = segs; i < nents; i++) {
		sg[i].dma_address = DMM_DMA_MAPPING_ERROR;
		sg[i].dma_length = 0;
	}
	dmm__dstat(&dev->st.sg_maps, 1);
	dmm__dstat(&dev->st.sg_segments_in, nents);
	dmm__dstat(&dev->st.sg_segments_out, segs);
	dmm__dstat2(dev, offsetof(struct dmm_dev_pcpu, map_bytes), dmm_sg_bytes(sg, nents), 0, 0);
	return (int)segs;
}

/* The bounce buffer of piece @e of a mapped list, if it was bounced (a
 * list with a bounced piece keeps a segment per piece): its address lies
 * in a bounce pool, and is not the piece's own. Whatever its length says
 * now: a caller that changed it names another size for the piece's unmap
 * or sync, which the bounce buffers take as they take a single unmap's
 * (never past the mapping, and the mapping still ends) and DMA debug
 * reports; were it taken for a direct piece, its slots would never come
 * back and its data never be copied. */
static bool sg_bounce(struct dmm_device *dev, const struct dmm_sg *e, dmm_dma_addr_t *bus, dmm_phys_t *tlb)
{
	dmm_phys_t p;

	if (e->dma_address == DMM_DMA_MAPPING_ERROR || e->dma_address == dmm_dma_phys_to_bus(dev, e->phys) ||
	    dmm_dma_bus_to_phys(dev, e->dma_address, &p) || !dmm__swiotlb_pool_of(dev->mem, p))
		return false;
	*bus = e->dma_address;
	*tlb = p;
	return true;
}

/* May @sg (@nents pieces) be unmapped: does a bounce mapping hold each
 * bounced piece? If one is vacant (the list was unmapped already), DMA
 * debug hears of it and the unmap is refused as a whole, counted as a
 * refused unmap: nothing changes, and no direct piece is invalidated (the
 * CPU may have written it since). */
static bool sg_unmappable(struct dmm_device *dev, struct dmm_sg *sg, unsigned nents, enum dmm_dma_dir dir,
			  const void *site)
{
	for (unsigned i = 0; i < nents; i++) {
		dmm_dma_addr_t b = 0;
		dmm_phys_t tlb = 0;
		if (sg_bounce(dev, &sg[i], &b, &tlb) && dmm__swiotlb_vacant(dev->mem, tlb)) {
			if (dmm__dbg_on(dev)) {
				struct dmm__dbg_saved saved;
				dmm__dbg_unmap(dev, DMM__DBG_SG, b, sg[i].length, dir, site, &saved);
				dmm__dbg_restore(dev, &saved); /* (refused: a live entry stays) */
			}
			dmm__dstat(&dev->st.fail_unmap, 1);
			return false;
		}
	}
	return true;
}

void dmm_dma_unmap_sg(struct dmm_device *dev, struct dmm_sg *sg, unsigned nents, enum dmm_dma_dir dir)
{
	const void *site = __builtin_return_address(0);

	if (!dev || !sg)
		return;
	if (dmm__iommu_translating(dev)) {
		if (!dmm__iommu_unmap_sg(dev, sg, nents, dir, site))
			dmm__dstat2(dev, offsetof(struct dmm_dev_pcpu, unmaps), 1, 0, 0);
		return;
	}
	if (!nents) { /* no list map_sg took */
		dmm__dstat(&dev->st.fail_unmap, 1);
		return;
	}
	if (dmm__swiotlb_ready(dev->mem) && !sg_unmappable(dev, sg, nents, dir, site))
		return;
	for (unsigned i = 0; i < nents; i++) {
		dmm_dma_addr_t b = 0;
		dmm_phys_t tlb = 0;
		if (sg_bounce(dev, &sg[i], &b, &tlb)) {
			if (dmm__dbg_on(dev))
				dmm__dbg_unmap(dev, DMM__DBG_SG, b, sg[i].length, dir, site, (struct dmm__dbg_saved *)0);
			/* (the invalidation too, over the mapping's bytes) */
			dmm__swiotlb_unmap(dev, (struct tlb_pool *)0, tlb, sg[i].length, dir_ok(dir) ? dir : DMM_DMA_NONE);
			continue;
		}
		b = dmm_dma_phys_to_bus(dev, sg[i].phys);
		if (dmm__dbg_on(dev))
			dmm__dbg_unmap(dev, DMM__DBG_SG, b, sg[i].length, dir, site, (struct dmm__dbg_saved *)0);
		if (sg[i].length && dir_ok(dir) && dmm__is_ram(dev->mem, sg[i].phys, sg[i].length))
			for_cpu(dev, sg[i].phys, sg[i].length, dir);
	}
	dmm__dstat2(dev, offsetof(struct dmm_dev_pcpu, unmaps), 1, 0, 0);
}

static void sync_sg(struct dmm_device *dev, struct dmm_sg *sg, unsigned nents, enum dmm_dma_dir dir,
		    int to_device, const void *site)
{
	if (!dev || !sg)
		return;
	if (dmm__iommu_translating(dev)) {
		dmm__iommu_sync_sg(dev, sg, nents, dir, to_device, site);
		dmm__dstat2(dev, offsetof(struct dmm_dev_pcpu, syncs), 1, 0, 0);
		return;
	}
	for (unsigned i = 0; i < nents; i++) {
		dmm_dma_addr_t b = 0;
		dmm_phys_t tlb = 0;
		bool bounced = sg_bounce(dev, &sg[i], &b, &tlb);
		if (!bounced)
			b = dmm_dma_phys_to_bus(dev, sg[i].phys);
		if (dmm__dbg_on(dev))
			dmm__dbg_sync(dev, b, sg[i].length, dir, to_device, site);
		if (!sg[i].length || !dir_ok(dir) || !dmm__is_ram(dev->mem, sg[i].phys, sg[i].length))
			continue;
		if (bounced) {
			dmm__swiotlb_sync(dev, (struct tlb_pool *)0, tlb, sg[i].length, dir, to_device);
		} else if (to_device) {
			for_device(dev, sg[i].phys, sg[i].length, dir);
		} else {
			for_cpu(dev, sg[i].phys, sg[i].length, dir);
		}
	}
	dmm__dstat2(dev, offsetof(struct dmm_dev_pcpu, syncs), 1, 0, 0);
}

void dmm_dma_sync_sg_for_cpu(struct dmm_device *dev, struct dmm_sg *sg, unsigned nents, enum dmm_dma_dir dir)
{
	sync_sg(dev, sg, nents, dir, 0, __builtin_return_address(0));
}

void dmm_dma_sync_sg_for_device(struct dmm_device *dev, struct dmm_sg *sg, unsigned nents,
				enum dmm_dma_dir dir)
{
	sync_sg(dev, sg, nents, dir, 1, __builtin_return_address(0));
}

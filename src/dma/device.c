/* SPDX-License-Identifier: MIT */
/*
 * DMA devices: descriptions, parent buses, effective limits, bus <-> physical
 * translation.
 *
 * A device's limits are a constraint descriptor in *bus* addresses: the
 * window is [limits.lo, min(limits.hi, mask + 1)), then intersected with
 * every ancestor bus's window (the lowest wins), alignment and boundary
 * (the strictest win), maximum segment size and count (the smallest win).
 * A device's own bus offset or dma-ranges describe its whole path to memory.
 * Offsets must be multiples of the device's alignment and boundary so that
 * those can be honoured in physical addresses.
 *
 * The structure itself lives in one page from the page allocator.
 */
#include "dma/dma_internal.h"

_Static_assert(sizeof(struct dmm_device) <= DMM_PAGE_SIZE, "a device must fit the page it lives in");
_Static_assert(sizeof(struct dmm_dev_pcpu) % 64 == 0, "per-CPU device counters take whole cache lines");

static uint64_t mask_end(uint64_t mask)
{
	return mask == ~(uint64_t)0 ? DMM_PHYS_MAX : mask + 1;
}

static int64_t range_offset(const struct dmm_dma_range *r)
{
	return (int64_t)(r->dma_start - r->cpu_start);
}

static int validate_desc(const struct dmm_device_desc *d)
{
	uint64_t strict;

	if (!d || !d->name || !d->name[0] || !d->dma_mask)
		return -DMM_EINVAL;
	if (d->coherent_mask > d->dma_mask)
		return -DMM_EINVAL;
	if (d->nr_ranges > DMM_MAX_DMA_RANGES)
		return -DMM_EINVAL;
	if (d->limits.align && !dmm_is_pow2(d->limits.align))
		return -DMM_EINVAL;
	if (d->limits.boundary && !dmm_is_pow2(d->limits.boundary))
		return -DMM_EINVAL;
	if (d->limits.hi && d->limits.lo >= d->limits.hi)
		return -DMM_EINVAL;
	if (d->limits.boundary && d->limits.max_seg_size > d->limits.boundary)
		return -DMM_EINVAL;
	if (d->cma_area < DMM_DEVICE_CMA_NONE)
		return -DMM_EINVAL;
	strict = dmm_max64(dmm_max64(d->limits.align, d->limits.boundary), DMM_PAGE_SIZE);
	if ((uint64_t)d->bus_offset % strict)
		return -DMM_EINVAL;
	for (unsigned i = 0; i < d->nr_ranges; i++) {
		const struct dmm_dma_range *r = &d->ranges[i];
		if (!r->size || r->cpu_start + r->size < r->cpu_start || r->dma_start + r->size < r->dma_start)
			return -DMM_EINVAL;
		if ((uint64_t)range_offset(r) % strict || (r->cpu_start | r->size) & (DMM_PAGE_SIZE - 1))
			return -DMM_EINVAL;
		for (unsigned j = 0; j < i; j++) {
			const struct dmm_dma_range *q = &d->ranges[j];
			if (r->cpu_start < q->cpu_start + q->size && q->cpu_start < r->cpu_start + r->size)
				return -DMM_EINVAL;
			if (r->dma_start < q->dma_start + q->size && q->dma_start < r->dma_start + r->size)
				return -DMM_EINVAL;
		}
	}
	return 0;
}

static void own_limits(const struct dmm_device_desc *d, int coherent, struct dmm_constraint *c)
{
	uint64_t mask = coherent && d->coherent_mask ? d->coherent_mask : d->dma_mask;

	c->lo = d->limits.lo;
	c->hi = dmm_min64(d->limits.hi ? d->limits.hi : DMM_PHYS_MAX, mask_end(mask));
	c->align = d->limits.align;
	c->boundary = d->limits.boundary;
	c->max_seg_size = d->limits.max_seg_size;
	c->max_segs = d->limits.max_segs;
}

dmm_dma_addr_t dmm_dma_phys_to_bus(const struct dmm_device *dev, dmm_phys_t pa)
{
	const struct dmm_device_desc *d;

	if (!dev || dmm__iommu_translating(dev))
		return DMM_DMA_MAPPING_ERROR; /* no fixed relation: IOVAs come from mappings */
	d = &dev->desc;
	if (!d->nr_ranges)
		return dmm__bus_of(dev, pa);
	for (unsigned i = 0; i < d->nr_ranges; i++) {
		const struct dmm_dma_range *r = &d->ranges[i];
		if (pa >= r->cpu_start && pa - r->cpu_start < r->size)
			return r->dma_start + (pa - r->cpu_start);
	}
	return DMM_DMA_MAPPING_ERROR;
}

int dmm_dma_bus_to_phys(const struct dmm_device *dev, dmm_dma_addr_t dma, dmm_phys_t *pa)
{
	const struct dmm_device_desc *d;

	if (!dev || !pa)
		return -DMM_EINVAL;
	if (dmm__iommu_translating(dev))
		return dmm__iommu_lookup(dev, dma, pa);
	d = &dev->desc;
	if (!d->nr_ranges)
		return dmm__phys_of(dev, dma, pa);
	for (unsigned i = 0; i < d->nr_ranges; i++) {
		const struct dmm_dma_range *r = &d->ranges[i];
		if (dma >= r->dma_start && dma - r->dma_start < r->size) {
			*pa = r->cpu_start + (dma - r->dma_start);
			return 0;
		}
	}
	return -DMM_ERANGE;
}

/* Physical windows reachable through @c (bus limits); highest first. */
unsigned dmm__dev_phys_windows(const struct dmm_device *dev, const struct dmm_constraint *c,
			       struct dmm_constraint *out, unsigned max);

unsigned dmm__dev_phys_windows(const struct dmm_device *dev, const struct dmm_constraint *c,
			       struct dmm_constraint *out, unsigned max)
{
	const struct dmm_device_desc *d = &dev->desc;
	unsigned n = 0;

	if (dmm__iommu_translating(dev)) {
		/* the IOMMU maps any page below the mask: all of memory */
		if (max) {
			out[0] = DMM_CONSTRAINT_ANY;
			n = 1;
		}
		return n;
	}
	if (!d->nr_ranges) {
		int64_t off = d->bus_offset;
		uint64_t lo = c->lo, hi = c->hi;
		/* phys = bus - off, clipped to the 64-bit space */
		if (off > 0) {
			lo = lo > (uint64_t)off ? lo - (uint64_t)off : 0;
			hi = hi == DMM_PHYS_MAX ? DMM_PHYS_MAX - (uint64_t)off : (hi > (uint64_t)off ? hi - (uint64_t)off : 0);
		} else if (off < 0) {
			uint64_t a = (uint64_t)-off;
			lo = lo + a < lo ? DMM_PHYS_MAX : lo + a;
			hi = hi + a < hi ? DMM_PHYS_MAX : hi + a;
		}
		if (lo < hi && max) {
			out[0] = *c;
			out[0].lo = lo;
			out[0].hi = hi;
			n = 1;
		}
		return n;
	}
	for (unsigned i = 0; i < d->nr_ranges && n < max; i++) {
		const struct dmm_dma_range *r = &d->ranges[i];
		uint64_t blo = dmm_max64(c->lo, r->dma_start);
		uint64_t bhi = dmm_min64(c->hi, r->dma_start + r->size);
		if (blo >= bhi)
			continue;
		out[n] = *c;
		out[n].lo = r->cpu_start + (blo - r->dma_start);
		out[n].hi = r->cpu_start + (bhi - r->dma_start);
		n++;
	}
	/* highest physical window first: cheapest memory first */
	for (unsigned i = 1; i < n; i++)
		for (unsigned j = i; j > 0 && out[j].lo > out[j - 1].lo; j--) {
			struct dmm_constraint t = out[j];
			out[j] = out[j - 1];
			out[j - 1] = t;
		}
	return n;
}

/*
 * Bounce tags. A device's bounce mappings carry its tag in their slot
 * records (16 bits), and an unmap or sync by another device is refused by
 * it: so no two devices hold one tag at once. A bitmap of the tags in use
 * (8 KiB of the memory map's metadata, mem->dev_tags); the search starts
 * past the last tag handed out, so a tag comes back only after the others
 * have had their turn. Tag 0 is never handed out. A device destroyed with
 * bounce mappings outstanding (leaks: they stay; the pools' records say so,
 * dmm__swiotlb_device_gone) keeps its tag for good, so no later device can
 * unmap them as its own.
 */
#define TAG_WORDS (DMM_DEV_TAGS / 64)

/* A free tag, taken: 0 and *@tag, or -DMM_ENOSPC (every tag held by a
 * device). */
static int tag_get(struct dmm_mem *mem, uint16_t *tag)
{
	uint64_t *t = mem->dev_tags;
	uint32_t start = __atomic_fetch_add(&mem->dev_seq, 1, __ATOMIC_RELAXED) % DMM_DEV_TAGS;

	for (uint32_t i = 0; i <= TAG_WORDS; i++) {
		uint32_t w = (start / 64 + i) % TAG_WORDS;
		uint64_t v = __atomic_load_n(&t[w], __ATOMIC_RELAXED);
		/* the first word's bits below the start come last (i == TAG_WORDS) */
		uint64_t skip = i == 0 ? ((uint64_t)1 << (start % 64)) - 1 : 0;

		while (~(v | skip)) {
			unsigned b = (unsigned)__builtin_ctzll(~(v | skip));
			uint64_t bit = (uint64_t)1 << b;
			v = __atomic_fetch_or(&t[w], bit, __ATOMIC_RELAXED);
			if (!(v & bit)) {
				*tag = (uint16_t)(w * 64 + b);
				return 0;
			}
		}
	}
	return -DMM_ENOSPC;
}

static void tag_put(struct dmm_mem *mem, uint16_t tag)
{
	__atomic_fetch_and(&mem->dev_tags[tag / 64], ~((uint64_t)1 << (tag % 64)), __ATOMIC_RELAXED);
}

int dmm_device_create(struct dmm_mem *mem, const struct dmm_device_desc *desc,
		      struct dmm_device *parent, struct dmm_device **out)
{
	struct dmm_device *dev;
	struct dmm_constraint lim[2];
	uint64_t pages;
	uint16_t tag;
	dmm_pfn_t pfn;
	void *va;
	int err;

	if (!mem || !out || validate_desc(desc))
		return dmm__count_invalid(mem);
	if (parent && (!parent->desc.is_bus || parent->mem != mem))
		return dmm__count_invalid(mem);
	if (desc->cma_area >= 0 && (unsigned)desc->cma_area >= dmm_cma_count(mem))
		return dmm__count_invalid(mem);
	if (desc->iommu < DMM_IOMMU_NONE || desc->iommu > DMM_IOMMU_IDENTITY ||
	    (desc->iommu && (desc->is_bus || desc->bus_offset || desc->nr_ranges)))
		return dmm__count_invalid(mem);
	for (int k = 0; k < 2; k++) {
		own_limits(desc, k, &lim[k]);
		if (parent) {
			err = dmm_constraint_intersect(&lim[k], &parent->lim[k], &lim[k]);
			if (err)
				return err == -DMM_ERANGE ? -DMM_ERANGE : dmm__count_invalid(mem);
		}
	}
	/* the record, with a counter block for every CPU */
	pages = dmm_align_up(dmm__dev_record_bytes(mem->plat.nr_cpus), DMM_PAGE_SIZE) >> DMM_PAGE_SHIFT;
	err = dmm__meta_alloc(mem, pages, 0, &pfn, &va);
	if (err)
		return err;
	if ((err = tag_get(mem, &tag)) != 0) {
		dmm__lib_free_range(mem, pfn, pages);
		return err;
	}
	dev = va;
	dev->mem = mem;
	for (unsigned i = 0; i < DMM_DEV_NAME_MAX - 1 && desc->name[i]; i++)
		dev->name[i] = desc->name[i];
	dev->desc = *desc;
	dev->desc.name = dev->name;
	dev->parent = parent;
	dev->self_pfn = pfn;
	dev->self_pages = (uint32_t)pages;
	dev->tlb_tag = tag;
	dev->lim[0] = lim[0];
	dev->lim[1] = lim[1];
	dev->debug_mode = -1;
	if (desc->iommu) {
		err = dmm__iommu_attach(dev);
		if (err) {
			tag_put(mem, tag);
			dmm__lib_free_range(mem, pfn, pages); /* the library's: never refused for a pin */
			return err;
		}
	}
	if (!desc->is_bus) {
		/* some RAM must be reachable */
		struct dmm_constraint w[DMM_MAX_DMA_RANGES];
		unsigned n = dmm__dev_phys_windows(dev, &lim[0], w, DMM_MAX_DMA_RANGES);
		bool any = false;
		for (unsigned i = 0; i < n && !any; i++)
			any = dmm__ram_pages_in(&mem->machine, dmm_align_up(w[i].lo, DMM_PAGE_SIZE) >> DMM_PAGE_SHIFT,
						w[i].hi >> DMM_PAGE_SHIFT) != 0;
		if (!any) {
			dmm__iommu_detach(dev);
			tag_put(mem, tag);
			dmm__lib_free_range(mem, pfn, pages);
			return -DMM_ERANGE;
		}
	}
	if (parent)
		__atomic_fetch_add(&parent->nr_children, 1, __ATOMIC_RELAXED);
	dmm__dev_update_express(dev);
	*out = dev;
	return 0;
}

void dmm__dev_update_express(struct dmm_device *dev)
{
	const struct dmm_device_desc *d = &dev->desc;
	bool e = d->coherent && !d->is_bus && !d->untrusted && !d->nr_ranges && !d->bus_offset && !dev->iommu &&
		 !dev->restricted_pool;

	__atomic_store_n(&dev->express, (uint8_t)e, __ATOMIC_RELAXED);
}

int dmm_device_destroy(struct dmm_device *dev)
{
	struct dmm_mem *mem;

	if (!dev)
		return -DMM_EINVAL;
	if (__atomic_load_n(&dev->nr_children, __ATOMIC_RELAXED))
		return -DMM_EBUSY;
	/* a queued deferred mapping would be made, and its callback run,
	 * for a device that is gone */
	if (dmm__swiotlb_device_busy(dev))
		return -DMM_EBUSY;
	mem = dev->mem;
	dmm__dbg_device_gone(dev);
	dmm__iommu_detach(dev);
	if (dev->parent)
		__atomic_fetch_sub(&dev->parent->nr_children, 1, __ATOMIC_RELAXED);
	/* leaked bounce mappings carry the tag: it stays taken (the device's
	 * map and unmap counts cannot say: a list's unmap counts with no map
	 * counted) */
	if (!dmm__swiotlb_device_gone(dev))
		tag_put(mem, dev->tlb_tag);
	/* the record is the library's own memory: no pin holds it, the free
	 * cannot be refused (0 unless the record is no device's) */
	return dmm__lib_free_range(mem, dev->self_pfn, dev->self_pages);
}

const char *dmm_device_name(const struct dmm_device *dev)
{
	return dev ? dev->name : "?";
}

struct dmm_mem *dmm_device_mem(const struct dmm_device *dev)
{
	return dev ? dev->mem : (struct dmm_mem *)0;
}

int dmm_device_limits(const struct dmm_device *dev, int coherent, struct dmm_constraint *out)
{
	if (!dev || !out)
		return -DMM_EINVAL;
	*out = dev->lim[coherent ? 1 : 0];
	return 0;
}

void dmm_device_get_stats(const struct dmm_device *dev, struct dmm_dma_stats *st)
{
	const uint64_t *src;
	uint64_t *dst;

	if (!dev || !st)
		return;
	src = (const uint64_t *)&dev->st;
	dst = (uint64_t *)st;
	for (size_t i = 0; i < sizeof(*st) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
	for (unsigned c = 0; c < dev->mem->plat.nr_cpus; c++) {
		const struct dmm_dev_pcpu *p = &dev->pcpu[c];
		st->maps += __atomic_load_n(&p->maps, __ATOMIC_RELAXED);
		st->unmaps += __atomic_load_n(&p->unmaps, __ATOMIC_RELAXED);
		st->map_bytes += __atomic_load_n(&p->map_bytes, __ATOMIC_RELAXED);
		st->syncs += __atomic_load_n(&p->syncs, __ATOMIC_RELAXED);
		st->cache_clean_bytes += __atomic_load_n(&p->clean_bytes, __ATOMIC_RELAXED);
		st->cache_inval_bytes += __atomic_load_n(&p->inval_bytes, __ATOMIC_RELAXED);
		st->cache_flush_bytes += __atomic_load_n(&p->flush_bytes, __ATOMIC_RELAXED);
		st->bounced_maps += __atomic_load_n(&p->bounced_maps, __ATOMIC_RELAXED);
	}
	st->low_bounce_bytes = dmm__dev_low_bounce(dev);
}

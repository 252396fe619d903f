/* SPDX-License-Identifier: MIT */
/* Private structures of the DMA layer (src/dma/). */
#ifndef DMM_DMA_INTERNAL_H
#define DMM_DMA_INTERNAL_H

#include <dmamem/dma.h>
#include <dmamem/dma_debug.h>
#include <dmamem/iommu.h>

#include "mm/mm_internal.h"

#define DMM_DEV_NAME_MAX 32

struct tlb_pool;
struct dmm_iommu_dom;

/* Hot counters of one CPU, so two CPUs mapping for one device do not
 * bounce a cache line on every map: a device has a block for every CPU
 * of the machine (its record is sized for them), which only sections of
 * that CPU write with plain adds. */
struct dmm_dev_pcpu {
	/* one cache line: only the first member carries the alignment (an
	 * _Alignas on a declarator list would align every counter) */
	_Alignas(64) uint64_t maps;
	/* bounced_maps: a bounce undone before it was handed out is taken off
	 * the undoing CPU's block (only the sum over CPUs is read, mod 2^64) */
	uint64_t unmaps, map_bytes, syncs, clean_bytes, inval_bytes, flush_bytes, bounced_maps;
	uint64_t low_bounce;   /* bounce bytes below 4 GiB taken minus given back here (mod 2^64) */
	uint64_t low_bounce_hw; /* highest low_bounce seen here (as a signed number) */
};

struct dmm_device {
	struct dmm_mem *mem;
	char name[DMM_DEV_NAME_MAX];
	struct dmm_device_desc desc;      /* name points at name[] */
	struct dmm_device *parent;
	uint32_t nr_children;             /* atomic */
	dmm_pfn_t self_pfn;               /* the pages holding this structure (dmm__meta_alloc) */
	uint32_t self_pages;
	uint16_t tlb_tag;                 /* marks its bounce mappings' records (swiotlb.c) */
	struct dmm_constraint lim[2];     /* effective bus limits: [0] streaming, [1] coherent */
	int debug_mode;                   /* -1 follow global, 0 off, 1 on (atomic) */
	int last_error;                   /* last failed map's reason (atomic) */
	struct dmm_dma_stats st;          /* atomic counters (cold ones) */
	struct tlb_pool *restricted_pool; /* swiotlb.c: this device's own pool */
	struct dmm_iommu_dom *iommu;      /* iommu.c: translating domain (DMM_IOMMU_DMA) */
	uint32_t iommu_id;                /* IOMMU domain id (any iommu mode) */
	uint8_t express;                  /* dmm__dev_express (atomic) */
	struct dmm_dev_pcpu pcpu[];       /* one per CPU (plat.nr_cpus) */
};

/* Bytes of a device's record on a machine of @nr_cpus CPUs. */
static inline uint64_t dmm__dev_record_bytes(unsigned nr_cpus)
{
	return sizeof(struct dmm_device) + (uint64_t)nr_cpus * sizeof(struct dmm_dev_pcpu);
}

/*
 * The express paths of map and unmap serve a device whose bus addresses
 * are its physical addresses: coherent, not a bus, not untrusted, no
 * IOMMU, dma-ranges, bus offset or restricted pool, and DMA debug off.
 * dmm__dev_update_express() sets the flag when the device is made and
 * clears it when a restricted pool is given; the rest cannot change.
 */
void dmm__dev_update_express(struct dmm_device *dev);
static inline bool dmm__dev_express(const struct dmm_device *dev)
{
	return __atomic_load_n(&dev->express, __ATOMIC_RELAXED) &&
	       __atomic_load_n(&dev->mem->dma_debug, __ATOMIC_RELAXED) == (void *)0;
}

/* Behind a translating IOMMU: bus addresses are IOVAs of its domain. */
static inline bool dmm__iommu_translating(const struct dmm_device *dev)
{
	return dev->iommu != (struct dmm_iommu_dom *)0;
}

static inline struct dmm_dev_pcpu *dmm__dev_pcpu(struct dmm_device *dev)
{
	const struct dmm_platform *p = &dev->mem->plat;
	unsigned cpu = p->cpu_id ? p->cpu_id(p->ctx) % p->nr_cpus : 0;
	return &dev->pcpu[cpu];
}

static inline void dmm__dstat(uint64_t *c, uint64_t v)
{
	__atomic_fetch_add(c, v, __ATOMIC_RELAXED);
}

/* A device's per-CPU counters: maps, unmaps, map_bytes, syncs, bounced_maps
 * and low_bounce are only ever updated through dmm__dstat_in/dmm__dstat2
 * (inside a section: plain adds); the cache-maintenance byte counts only
 * with atomic adds (cache_op runs inside sections of its callers). Mixing
 * the two on one counter would lose updates. */
/* Add @v to the per-CPU counter of @dev at offset @off (offsetof in struct
 * dmm_dev_pcpu), inside a CPU-local section of @cpu: a plain add, the
 * block being that CPU's own. */
static inline void dmm__dstat_in(struct dmm_device *dev, unsigned cpu, size_t off, uint64_t v)
{
	dmm__pcpu_add((uint64_t *)(void *)((unsigned char *)&dev->pcpu[cpu] + off), v);
}

/* Add to the per-CPU counters of @dev at offsets @o1, @o2 (@v2 0: only @o1)
 * in a section of its own. */
static inline void dmm__dstat2(struct dmm_device *dev, size_t o1, uint64_t v1, size_t o2, uint64_t v2)
{
	unsigned cpu = dmm__cpu_enter(dev->mem);

	dmm__dstat_in(dev, cpu, o1, v1);
	if (v2)
		dmm__dstat_in(dev, cpu, o2, v2);
	dmm__cpu_exit(dev->mem, cpu);
}

/* Bus address of @pa for a device with neither IOMMU nor dma-ranges: the
 * physical address plus the bus offset, or DMM_DMA_MAPPING_ERROR on wrap. */
static inline dmm_dma_addr_t dmm__bus_of(const struct dmm_device *dev, dmm_phys_t pa)
{
	dmm_dma_addr_t b = pa + (uint64_t)dev->desc.bus_offset;

	if ((dev->desc.bus_offset > 0 && b < pa) || (dev->desc.bus_offset < 0 && b > pa))
		return DMM_DMA_MAPPING_ERROR;
	return b;
}

/* Its inverse: 0 and *@pa, or -DMM_ERANGE on wrap. */
static inline int dmm__phys_of(const struct dmm_device *dev, dmm_dma_addr_t dma, dmm_phys_t *pa)
{
	dmm_phys_t p = dma - (uint64_t)dev->desc.bus_offset;

	if ((dev->desc.bus_offset > 0 && p > dma) || (dev->desc.bus_offset < 0 && p < dma))
		return -DMM_ERANGE;
	*pa = p;
	return 0;
}

/* Is [pa, pa + size) RAM the allocator knows (size > 0, no wrap)? A
 * buffer inside one page costs one descriptor (dmm__is_ram_page: is page
 * @p RAM?); a longer one, the RAM regions too (dmm__is_ram_span). */
static inline bool dmm__is_ram_page(struct dmm_mem *mem, dmm_pfn_t p)
{
	const struct dmm_page *pg = dmm__pfn_page(mem, p);

	return pg && !(__atomic_load_n(&pg->flags, __ATOMIC_RELAXED) & DMM_PGF_NORAM);
}
static inline bool dmm__is_ram_fast(struct dmm_mem *mem, dmm_phys_t pa, uint64_t size)
{
	dmm_pfn_t p = dmm_phys_to_pfn(pa), last = dmm_phys_to_pfn(pa + size - 1);

	if (!dmm__is_ram_page(mem, p))
		return false;
	return p == last || dmm__is_ram_span(mem, p, last);
}

/* device.c / direct.c */
unsigned dmm__dev_phys_windows(const struct dmm_device *dev, const struct dmm_constraint *c,
			       struct dmm_constraint *out, unsigned max);
/* Bus address of [pa, pa + size) if the device reaches all of it. */
int dmm__dev_reach(struct dmm_device *dev, dmm_phys_t pa, uint64_t size, dmm_dma_addr_t *bus);

/* dmm__dev_reach, inline for a device with neither IOMMU nor dma-ranges. */
static inline int dmm__dev_reach_fast(struct dmm_device *dev, dmm_phys_t pa, uint64_t size, dmm_dma_addr_t *bus)
{
	if (__builtin_expect(!dev->iommu && !dev->desc.nr_ranges, 1)) {
		dmm_dma_addr_t b = dmm__bus_of(dev, pa), e = dmm__bus_of(dev, pa + size - 1);
		if (b == DMM_DMA_MAPPING_ERROR || e == DMM_DMA_MAPPING_ERROR || e - b != size - 1 || b < dev->lim[0].lo ||
		    e >= dev->lim[0].hi)
			return -DMM_ERANGE;
		*bus = b;
		return 0;
	}
	return dmm__dev_reach(dev, pa, size, bus);
}

/*
 * A map made for a deferred request (dmm_dma_map_phys_deferred), which
 * waits when it finds no room: it is no failure of the caller's yet, so
 * the layers that would count one (no bounce slot: fail_full and the
 * device's fail_bounce_full; no IOVA space: the domain's and the device's
 * fail_iova) note it here instead, and the request counts it once if it
 * fails for good (queue full). Every other map passes NULL: counted at
 * once.
 */
struct dmm__map_wait {
	bool bounce_full; /* no bounce slot (-DMM_ENOSPC) */
	bool iova_full;   /* no IOVA space (-DMM_ENOSPC) */
};

/* swiotlb.c */
/* @granule: 0, or a power of two above the slot size (an IOMMU page): the
 * bounce then covers whole granules of its own, zero-padded, and keeps
 * the offset of @pa within the granule. @wait: NULL, or a deferred
 * request's map (-DMM_ENOSPC noted there, not counted). */
int dmm__swiotlb_map(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir,
		     uint64_t granule, dmm_phys_t *tlb_pa, struct dmm__map_wait *wait);
/* The same inside a CPU-local section of *@cpu, which it may leave and
 * enter again (then *@cpu changes) to wait or to add a pool. */
int dmm__swiotlb_map_in(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir,
			uint64_t granule, dmm_phys_t *tlb_pa, unsigned *cpu, struct dmm__map_wait *wait);
/* Mark (@on) or unmark page @pg as the head of a coherent buffer: the page
 * and range allocators refuse it while marked (DMM_PGF_COHERENT). */
static inline void dmm__coherent_mark(struct dmm_page *pg, bool on)
{
	if (on)
		__atomic_fetch_or(&pg->flags, (uint8_t)DMM_PGF_COHERENT, __ATOMIC_RELAXED);
	else
		__atomic_fetch_and(&pg->flags, (uint8_t)~DMM_PGF_COHERENT, __ATOMIC_RELAXED);
}
/* Take the coherent mark off @pg: true if this call took it (it was on). */
static inline bool dmm__coherent_claim(struct dmm_page *pg)
{
	return __atomic_fetch_and(&pg->flags, (uint8_t)~DMM_PGF_COHERENT, __ATOMIC_ACQ_REL) & DMM_PGF_COHERENT;
}
/* Does @pa lie inside a bounce mapping of @dev without being its start
 * (where an unmap is refused)? */
int dmm__swiotlb_inside(struct dmm_device *dev, dmm_phys_t pa);
/* Does @pa lie in a bounce pool but in no bounce mapping (a free slot, or
 * one parked in a CPU's cache)? An unmap of it is one of a mapping that
 * ended already (or never was). */
int dmm__swiotlb_vacant(struct dmm_mem *mem, dmm_phys_t pa);
/* Inside a section of @cpu: if @tlb_pa is the start of a bounce mapping of
 * @dev (in @pool, or looked up when NULL), copy back as @dir needs
 * (DMM_DMA_NONE: nothing), free its slots and return 1; -1 for an address
 * inside one of @dev's bounce mappings (refused, counted as invalid); -2
 * for an address in a pool that no mapping holds (dmm__swiotlb_vacant:
 * ended already; refused, nothing done, the caller counts it); else 0 (no
 * bounce pool, or another device's mapping: no bounce mapping of @dev,
 * whose direct mapping of that memory is its own business). The bounce
 * buffer's lines are invalidated
 * (FROM_DEVICE, BIDIRECTIONAL, a non-coherent device) over the bytes copied
 * back only, and only for a 1. After a 1, once out of the section, call
 * dmm__swiotlb_unmap_done(). */
int dmm__swiotlb_unmap_in(struct dmm_device *dev, struct tlb_pool *pool, dmm_phys_t tlb_pa, size_t size,
			  enum dmm_dma_dir dir, unsigned cpu);
void dmm__swiotlb_unmap_done(struct dmm_mem *mem);
/* Undo the bounce map at @tlb_pa (the address it gave) of @dev that the
 * same call made and never handed out, a later step of it having failed:
 * the slots freed (nothing copied back, no line dropped) and what the map
 * counted taken back (the pool's map, the bytes it copied in for @dir, the
 * map's direction, and the device's bounced map), so that the statistics
 * count only mappings handed out. The peaks (high_water_slots, the
 * device's low_peak_bytes) keep it: the slots were taken. Inside a section
 * of @cpu: 1 if undone (then, out of the section, dmm__swiotlb_unmap_done()),
 * 0 if @tlb_pa is no bounce mapping of @dev. */
int dmm__swiotlb_cancel_in(struct dmm_device *dev, dmm_phys_t tlb_pa, enum dmm_dma_dir dir, unsigned cpu);
/* The same in a section of its own, dmm__swiotlb_unmap_done() included. */
void dmm__swiotlb_cancel(struct dmm_device *dev, dmm_phys_t tlb_pa, enum dmm_dma_dir dir);
/* The common case of map and unmap in one short path (a device with no
 * IOMMU, dma-ranges, restricted pool or untrusted mark; one or two slots;
 * a counter block of the CPU's own; a run cached on this CPU). map returns
 * the bus address, counters included, or DMM_DMA_MAPPING_ERROR if the
 * general path must run; unmap 1 if done, 0 if not. map: the buffer is
 * known to need bouncing, and the device's map counters are counted here;
 * unmap: @dir must need no cache maintenance (a coherent device); it
 * counts the unmap and calls dmm__swiotlb_unmap_done() itself. @direct
 * (an express device, bus = phys): an address in no pool is a direct
 * mapping of RAM, and its unmap is counted and done here too. */
dmm_dma_addr_t dmm__swiotlb_map_fast(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir);
int dmm__swiotlb_unmap_fast(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir, bool direct);
/* The express device's (dmm__dev_express) map and unmap of a buffer to
 * bounce, or of any buffer (unmap): dmm__swiotlb_map_fast and _unmap_fast
 * (@direct), and when they cannot finish, the general path
 * (dmm__dma_map_general, dmm__dma_unmap_general), as a tail call. @dir as
 * the caller got it. */
dmm_dma_addr_t dmm__swiotlb_map_express(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir,
					const void *site);
void dmm__swiotlb_unmap_express(struct dmm_device *dev, dmm_dma_addr_t dma, size_t size, enum dmm_dma_dir dir,
				const void *site);
/* The bounce pool holding @pa, or NULL. O(log pools). */
struct tlb_pool *dmm__swiotlb_pool_of(struct dmm_mem *mem, dmm_phys_t pa);
/* The same inside a CPU-local section. */
struct tlb_pool *dmm__swiotlb_pool_of_in(struct dmm_mem *mem, dmm_phys_t pa);
int dmm__swiotlb_ready(struct dmm_mem *mem);
int dmm__swiotlb_forced(struct dmm_mem *mem);
/* Sync [tlb_pa, + size) of a bounce mapping of @dev: the copy @dir needs
 * and the cache maintenance of the bounce buffer, both only if the range
 * lies inside one mapping of @dev (else nothing). @pool: the pool of
 * @tlb_pa if known, else NULL (looked up). */
void dmm__swiotlb_sync(struct dmm_device *dev, struct tlb_pool *pool, dmm_phys_t tlb_pa, size_t size,
		       enum dmm_dma_dir dir, int to_device);
void dmm__swiotlb_unmap(struct dmm_device *dev, struct tlb_pool *pool, dmm_phys_t tlb_pa, size_t size,
			enum dmm_dma_dir dir);
/* Has @dev deferred mappings queued (waiting, being retried, or their
 * callback running)? Its destroy is refused then. */
int dmm__swiotlb_device_busy(struct dmm_device *dev);
/* @dev is being destroyed: 1 if bounce mappings of it are left (leaks:
 * its tag must stay taken, so that no later device unmaps them), else 0. */
int dmm__swiotlb_device_gone(struct dmm_device *dev);

/* direct.c: the general paths of a streaming map and unmap (every device,
 * every case); @site: the caller of the public function. @tried: the
 * bounce buffers' short path has already looked at @dma. */
dmm_dma_addr_t dmm__dma_map_general(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir,
				    const void *site);
/* The map of a deferred request: the general path (what the express paths
 * would do, counted the same), except that a failure for want of room
 * (-DMM_ENOSPC) is noted in *@w, neither counted nor kept as the device's
 * last error. 0 and *@bus, or the error (*@bus DMM_DMA_MAPPING_ERROR). */
int dmm__dma_map_wait(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir,
		      struct dmm__map_wait *w, dmm_dma_addr_t *bus);
void dmm__dma_unmap_general(struct dmm_device *dev, dmm_dma_addr_t dma, size_t size, enum dmm_dma_dir dir,
			    const void *site, bool tried);

/* direct.c, for the IOMMU path */
bool dmm__must_bounce(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir, int unreachable);
bool dmm__is_ram(struct dmm_mem *mem, dmm_phys_t pa, uint64_t size);
void dmm__dma_for_device(struct dmm_device *dev, dmm_phys_t pa, size_t len, enum dmm_dma_dir dir);
void dmm__dma_for_cpu(struct dmm_device *dev, dmm_phys_t pa, size_t len, enum dmm_dma_dir dir);
/* The CPU takes [pa, pa + size) back: caches, and a bounce buffer copied
 * back and released. */
void dmm__dma_unmap_pa(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir);
void dmm__dma_sync_pa(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir, int to_device);
/* Low-memory accounting: coherent pages below 4 GiB taken (> 0) or given
 * back. */
void dmm__dev_low(struct dmm_device *dev, int64_t coherent_pages);
/* Raise the device's low-memory peak to what it holds now (direct.c). */
void dmm__dev_low_peak(struct dmm_device *dev);
/* After bytes were added to @pc's low bounce count: a new high of its own
 * is recorded, and the device's peak raised. */
static inline void dmm__dev_low_bounce_high(struct dmm_device *dev, struct dmm_dev_pcpu *pc)
{
	uint64_t now = __atomic_load_n(&pc->low_bounce, __ATOMIC_RELAXED);

	if ((int64_t)now > (int64_t)__atomic_load_n(&pc->low_bounce_hw, __ATOMIC_RELAXED)) {
		__atomic_store_n(&pc->low_bounce_hw, now, __ATOMIC_RELAXED);
		dmm__dev_low_peak(dev);
	}
}
/* Bounce bytes below 4 GiB taken (> 0) or given back, inside a section of
 * @cpu: the CPU's own count, and the peak when that count reaches a new
 * high of its own. */
static inline void dmm__dev_low_bounce_in(struct dmm_device *dev, unsigned cpu, int64_t bytes)
{
	struct dmm_dev_pcpu *pc = &dev->pcpu[cpu];

	if (!bytes)
		return;
	dmm__dstat_in(dev, cpu, offsetof(struct dmm_dev_pcpu, low_bounce), (uint64_t)bytes);
	if (bytes > 0)
		dmm__dev_low_bounce_high(dev, pc);
}
/* The same on @pc, the counter block of the section's CPU. */
static inline void dmm__dev_low_bounce_own(struct dmm_device *dev, struct dmm_dev_pcpu *pc, int64_t bytes)
{
	if (!bytes)
		return;
	dmm__pcpu_add(&pc->low_bounce, (uint64_t)bytes);
	if (bytes > 0)
		dmm__dev_low_bounce_high(dev, pc);
}
/* Bounce bytes below 4 GiB @dev holds now (the sum of its CPUs' counts). */
uint64_t dmm__dev_low_bounce(const struct dmm_device *dev);

/* iopt.c, fast paths of one 4 KiB page (no argument checks): map with
 * @bits (permissions and marks), or take the leaf of @iova if it has every
 * bit of @want and none of @refuse (returned in *@old, the entry cleared). */
int dmm__iopt_map4k(struct dmm_iopt *pt, dmm_dma_addr_t iova, dmm_phys_t pa, uint64_t bits);
/* Leaf permission bits of DMM_IOMMU_READ / DMM_IOMMU_WRITE. */
static inline uint64_t dmm__iopt_prot_bits(unsigned prot)
{
	return ((prot & DMM_IOMMU_READ) ? DMM_IOPTE_READ : 0) | ((prot & DMM_IOMMU_WRITE) ? DMM_IOPTE_WRITE : 0);
}
int dmm__iopt_take4k(struct dmm_iopt *pt, dmm_dma_addr_t iova, uint64_t want, uint64_t refuse, uint64_t *old);

/* iommu.c */
int dmm__iommu_attach(struct dmm_device *dev);
void dmm__iommu_detach(struct dmm_device *dev);
int dmm__iommu_lookup(const struct dmm_device *dev, dmm_dma_addr_t dma, dmm_phys_t *pa);
/* @w: NULL, or a deferred request's map (struct dmm__map_wait). */
int dmm__iommu_map(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir, dmm_phys_t *map_pa,
		   dmm_dma_addr_t *bus, struct dmm__map_wait *w);
/* Count a failure for want of IOVA space of @dev (a deferred request's,
 * noted while it waited). */
void dmm__iommu_count_iova_full(struct dmm_device *dev);
int dmm__iommu_unmap(struct dmm_device *dev, dmm_dma_addr_t dma, size_t size, enum dmm_dma_dir dir);
int dmm__iommu_map_sg(struct dmm_device *dev, struct dmm_sg *sg, unsigned nents, enum dmm_dma_dir dir,
		      const void *site);
/* 0, or the list is no mapping of the domain: refused (counted as
 * fail_unmap), nothing changed, -DMM_EINVAL / -DMM_ENOENT. */
int dmm__iommu_unmap_sg(struct dmm_device *dev, struct dmm_sg *sg, unsigned nents, enum dmm_dma_dir dir,
			const void *site);
void dmm__iommu_sync_sg(struct dmm_device *dev, struct dmm_sg *sg, unsigned nents, enum dmm_dma_dir dir,
			int to_device, const void *site);
int dmm__iommu_alloc_coherent(struct dmm_device *dev, size_t size, unsigned gfp, void **cpu, dmm_dma_addr_t *dma,
			      dmm_phys_t *first_pa, uint64_t *low_pages);
int dmm__iommu_free_coherent(struct dmm_device *dev, size_t size, void *cpu, dmm_dma_addr_t dma,
			     uint64_t *low_pages);

/* Mapping types tracked by DMA debug. */
enum dmm__dbg_type { DMM__DBG_SINGLE = 0, DMM__DBG_SG, DMM__DBG_COHERENT };

/* debug.c: hooks called by direct.c / device.c (cheap when debug is off). */
int dmm__dbg_on_slow(const struct dmm_device *dev);
/* DMA debug applies to @dev: one load when debug was never enabled. */
static inline int dmm__dbg_on(const struct dmm_device *dev)
{
	if (__builtin_expect(__atomic_load_n(&dev->mem->dma_debug, __ATOMIC_RELAXED) == (void *)0, 1))
		return 0;
	return dmm__dbg_on_slow(dev);
}
/* @cpu: a coherent allocation's CPU address (NULL for streaming mappings). */
void dmm__dbg_map(struct dmm_device *dev, enum dmm__dbg_type type, dmm_dma_addr_t dma, dmm_phys_t pa,
		  uint64_t size, enum dmm_dma_dir dir, const void *cpu, const void *site);
/* What debug records of a mapping; also an entry removed by an unmap or
 * free that the layer below then refused (the mapping is still live):
 * dmm__dbg_restore puts it back. */
struct dmm__dbg_saved {
	dmm_dma_addr_t dma;
	dmm_phys_t pa;
	uint64_t size;
	const void *site, *cpu;
	uint8_t dir, type, checked, dev_owned, valid;
};
void dmm__dbg_restore_slow(struct dmm_device *dev, const struct dmm__dbg_saved *saved);
static inline void dmm__dbg_restore(struct dmm_device *dev, const struct dmm__dbg_saved *saved)
{
	if (saved->valid)
		dmm__dbg_restore_slow(dev, saved);
}
/* Check an unmap against the mapping at @dma, report what is wrong and
 * remove the entry (a copy in *@saved when not NULL). The number of
 * reports made. */
int dmm__dbg_unmap(struct dmm_device *dev, enum dmm__dbg_type type, dmm_dma_addr_t dma, uint64_t size,
		   enum dmm_dma_dir dir, const void *site, struct dmm__dbg_saved *saved);
/* Report @rule about @dma (no entry involved). */
void dmm__dbg_report(struct dmm_device *dev, enum dmm_dma_debug_rule rule, dmm_dma_addr_t dma, uint64_t size,
		     enum dmm_dma_dir dir, const void *site);
void dmm__dbg_sync(struct dmm_device *dev, dmm_dma_addr_t dma, uint64_t size, enum dmm_dma_dir dir,
		   int for_device, const void *site);
void dmm__dbg_checked(struct dmm_device *dev, dmm_dma_addr_t dma);
/* Coherent free: 0 if it matches an allocation (removed), 1 if nothing is
 * tracked there (reported; perhaps allocated before debugging was on: the
 * caller's own checks decide), else -DMM_EINVAL / -DMM_ENOENT after
 * reporting. When debug is off, returns 0. */
int dmm__dbg_free_coherent(struct dmm_device *dev, dmm_dma_addr_t dma, uint64_t size, dmm_phys_t pa,
			   const void *cpu, const void *site, struct dmm__dbg_saved *saved);
void dmm__dbg_device_gone(struct dmm_device *dev);

/* pool.c: coherent atomic pools. alloc: -DMM_ENOTSUP if no pool serves the
 * device, -DMM_ENOMEM (pool exhausted), -DMM_EINVAL; free: 1 if @pa is not
 * pool memory, else 0 or -DMM_ENOENT / -DMM_EINVAL. poll: run a wanted
 * refill when there is no defer hook (process context only). */
int dmm__atomic_pool_alloc(struct dmm_device *dev, uint64_t pages, dmm_pfn_t *pfn);
int dmm__atomic_pool_free(struct dmm_device *dev, dmm_phys_t pa, uint64_t pages);
/* 1 if @pa lies in an atomic pool's memory. check: 0 if a live allocation
 * of @pages starts there (nothing changes), else -DMM_ENOENT / -DMM_EINVAL. */
int dmm__atomic_pool_owns(struct dmm_device *dev, dmm_phys_t pa);
int dmm__atomic_pool_check(struct dmm_device *dev, dmm_phys_t pa, uint64_t pages);
/* iova.c: pages held by a domain's caches now. */
uint64_t dmm__iova_cached_pages(struct dmm_iova_domain *d);
/* iopt.c: take @bit off the leaf of @iova (compare-and-swap); -DMM_ENOENT
 * if it is not there (another caller took it first). */
int dmm__iopt_claim(struct dmm_iopt *pt, dmm_dma_addr_t iova, uint64_t bit);
/* Put @bit back on the leaf of @iova that a dmm__iopt_claim() of this
 * caller took it off (the mapping stays as it was). */
void dmm__iopt_unclaim(struct dmm_iopt *pt, dmm_dma_addr_t iova, uint64_t bit);
void dmm__atomic_pool_poll(struct dmm_mem *mem);

#endif

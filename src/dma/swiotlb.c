/* SPDX-License-Identifier: MIT */
/*
 * Bounce buffers.
 *
 * A pool is one physically contiguous block from the range allocator, cut
 * into slots; its metadata (this struct, its areas, one record per slot)
 * lives in pages from the range allocator too:
 *
 *   pool memory:  | slot 0 | slot 1 | ... | slot n-1 |      (slot_size each)
 *   areas:        [ area 0: slots 0..k-1 ][ area 1: k..2k-1 ] ...  one lock each
 *   slot record:  used, first slot of its mapping, and on the first slot the
 *                 original address, the size, the slot count, the offset
 *
 * A mapping takes contiguous free slots inside one area (the calling CPU's
 * first, then the others), starting at a slot whose address agrees with the
 * original buffer on the align_mask bits above the slot size; the bounce
 * address keeps the bits below it.
 *
 * Finding the pool of an address: an index (pools sorted by base) searched
 * by bisection, after a look at the pool it names as its lowest with run
 * caches that is no device's own (where most mappings are). Two index
 * buffers: a reader reads the active one inside a CPU-local section (no
 * lock, no atomic); a writer (under the pool lock) waits for a grace
 * period (every section that might still read the inactive buffer has
 * ended) before it fills that buffer, then flips. So growth and release
 * never disturb a lookup, and memory stays bounded. A
 * pool is released only once it is empty and marked dying (under all its
 * area locks, so no take is half done): every take path refuses a dying
 * pool, so it stays empty; then it is unpublished, and freed after another
 * grace period, when no section can still hold it.
 *
 * Per-CPU run caches. Runs of one or two slots (mappings up to 4 KiB with
 * 2 KiB slots: the common packet and small-buffer case) freed by a CPU go
 * to that CPU's cache of the pool, used only inside its CPU-local sections,
 * and its next mappings of that length take them back: no lock, no atomic,
 * and the slots are still in the CPU's data cache, so the bounce copy is
 * as fast as a copy between warm buffers. A cached run stays reserved in
 * its area (slot state CACHED): the areas' counts and the high-water mark
 * include at most 2 * TLB_CACHE_RUNS runs per CPU that no mapping holds. A
 * full cache gives half its runs back; an exhausted pool takes every CPU's
 * cache back (dmm__cpu_sync) before it fails or grows. Transient pools have
 * no caches (they must empty to be released). Every CPU has a cache,
 * however many there are (areas stop at MAX_AREAS: CPUs share them).
 *
 * Otherwise a mapping takes one lock (its area's) and the shared counter of
 * reserved slots; a pool's occupancy is the sum of its areas'.
 */
#include <dmamem/swiotlb.h>

#include "dma/dma_internal.h"

#define MAX_POOLS 64
#define MAX_DEFERRED 32
#define MAX_AREAS 64
#define TLB_CACHE_RUNS 16   /* per CPU and run length */
#define TLB_CACHE_LEN 2     /* runs of 1 .. TLB_CACHE_LEN slots are cached */

enum { SLOT_FREE = 0, SLOT_MAPPED = 1, SLOT_CACHED = 2 };

struct tlb_slot {
	dmm_phys_t orig;  /* first slot: the original buffer */
	uint32_t first;   /* index of the first slot of the mapping */
	uint32_t size;    /* first slot: mapping size in bytes */
	uint16_t nslots;  /* first slot: slots used */
	uint16_t off;     /* first slot: offset of the data in the first slot */
	uint8_t used;     /* SLOT_FREE, SLOT_MAPPED, or SLOT_CACHED (first slot keeps nslots) */
	uint16_t dev;     /* first slot: the mapping device's tlb_tag */
};

/* One CPU's cache of free runs in one pool (that CPU's sections only). */
struct tlb_cpu {
	_Alignas(DMM_CACHELINE) uint32_t n[TLB_CACHE_LEN];
	uint32_t run[TLB_CACHE_LEN][TLB_CACHE_RUNS]; /* first slot of each run */
	/* counters of the mappings served from the cache (read racily) */
	uint64_t maps, unmaps, to_device, from_device;
};

/* The pool's counters are its areas' and its CPU caches' summed (mod
 * 2^64): a map undone before it was handed out (dmm__swiotlb_cancel_in)
 * is taken off its run's area, wherever it was counted. */
struct tlb_area {
	_Alignas(DMM_CACHELINE) struct dmm_lock lock;
	uint32_t start, n, hint, used;
	/* counters under the area lock (summed on query) */
	uint64_t maps, unmaps, to_device, from_device;
};

struct tlb_pool {
	dmm_phys_t base;
	uint64_t bytes;
	uint32_t nslots, nr_areas;
	uint32_t grow_at;                /* slots in use in one area that make the pool look full */
	dmm_pfn_t mem_pfn, meta_pfn;
	uint64_t mem_pages, meta_pages;
	int transient, restricted;
	bool low;                        /* all of it below 4 GiB (run_low) */
	int dying;                       /* being released: no slot may be taken (atomic; set under all area locks) */
	struct dmm_device *dev;          /* restricted: its only user */
	uint64_t idle_since;             /* transient: 0, or when it last became empty, made odd (atomic) */
	struct tlb_area *areas;
	struct tlb_slot *slots;
	struct tlb_cpu *cpus;            /* nr_cpus run caches, or NULL */
};

struct tlb_index {
	_Alignas(DMM_CACHELINE) uint32_t n;
	/* the lowest pool with run caches that is no device's own, or NULL:
	 * where the short paths look first (published with the rest) */
	struct tlb_pool *cached;
	struct tlb_pool *pool[MAX_POOLS];
};

struct tlb_deferred {
	struct dmm_device *dev;
	dmm_phys_t pa;
	size_t size;
	enum dmm_dma_dir dir;
	dmm_dma_map_cb cb;
	void *arg;
	uint64_t seq;                    /* order of queueing */
	int busy;                        /* being retried (pool lock not held): it keeps its place */
};

struct dmm_swiotlb {
	/* what every map and unmap reads, in one line: the short paths touch
	 * no other line of this struct but the active index's first */
	_Alignas(DMM_CACHELINE) const struct tlb_index *cur; /* the active one of idx[] (atomic) */
	uint64_t off_mask;               /* o.align_mask within a slot: kept in the first slot */
	uint64_t run_mask;               /* o.align_mask above the slot size: a run's address must match */
	uint32_t slot_size;              /* o.slot_size */
	unsigned slot_shift;             /* log2(o.slot_size) */
	uint32_t nr_deferred;            /* atomic: requests queued, those being retried included */
	uint32_t nr_transient;           /* atomic */
	struct dmm_lock lock;            /* pool set, index writes, deferred queue */
	struct dmm_mem *mem;
	struct dmm_swiotlb_opts o;
	struct tlb_index idx[2];
	struct tlb_pool *pools[MAX_POOLS];
	uint32_t nr_pools;
	uint64_t total_bytes;
	uint64_t used_slots;             /* all pools (atomic) */
	int grow_pending;                /* atomic */
	struct tlb_deferred deferred[MAX_DEFERRED]; /* in queueing order, under the pool lock */
	uint64_t deferred_seq;           /* last seq given */
	uint64_t deferred_calls;         /* serve_deferred calls so far (pool lock) */
	dmm_pfn_t self_pfn;
	uint64_t self_pages;
	struct dmm_swiotlb_stats st;     /* atomic counters */
};

_Static_assert(__builtin_offsetof(struct dmm_swiotlb, lock) <= DMM_CACHELINE, "the short paths' fields share a line");

static inline void sadd(uint64_t *c, uint64_t v)
{
	__atomic_fetch_add(c, v, __ATOMIC_RELAXED);
}

static struct dmm_swiotlb *tlb_of(const struct dmm_mem *mem)
{
	return (struct dmm_swiotlb *)__atomic_load_n(&mem->swiotlb, __ATOMIC_ACQUIRE);
}

/* ---- options ------------------------------------------------------------------- */

void dmm_swiotlb_opts_default(const struct dmm_mem *mem, struct dmm_swiotlb_opts *o)
{
	uint64_t ram;

	if (!o)
		return;
	dmm_memset(o, 0, sizeof(*o));
	o->slot_size = 2048;
	o->max_slots_per_map = 128;
	o->grow_threshold_pct = 75;
	o->transient_idle_ns = 100 * 1000 * 1000;
	if (!mem)
		return;
	ram = mem->ram_pages << DMM_PAGE_SHIFT;
	if (mem->machine.kmalloc_policy == DMM_KMALLOC_PACKED)
		o->initial_bytes = dmm_max64(256 * 1024, ram >> 10); /* ~1 MiB per GiB */
	else
		o->initial_bytes = dmm_min64((uint64_t)64 << 20, ram >> 4);
	o->initial_bytes = dmm_align_up(o->initial_bytes, DMM_PAGE_SIZE);
}

/* ---- the index ----------------------------------------------------------------- */

/* The active index (inside a CPU-local section). */
static inline const struct tlb_index *index_get(const struct dmm_swiotlb *t)
{
	return __atomic_load_n(&t->cur, __ATOMIC_ACQUIRE);
}

static inline struct tlb_pool *index_search(const struct tlb_index *x, dmm_phys_t pa)
{
	uint32_t lo = 0, hi = x->n;

	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		struct tlb_pool *p = x->pool[mid];
		if (pa < p->base)
			hi = mid;
		else if (pa >= p->base + p->bytes)
			lo = mid + 1;
		else
			return p;
	}
	return (struct tlb_pool *)0;
}

/* index_search trying @x's cached pool first: the one most mappings use. */
static inline struct tlb_pool *index_search_cached(const struct tlb_index *x, dmm_phys_t pa)
{
	struct tlb_pool *p = x->cached;

	if (__builtin_expect(p && pa - p->base < p->bytes, 1))
		return p;
	return index_search(x, pa);
}

/* The pool index_publish names as @x's cached one. */
static struct tlb_pool *index_first_cached(const struct tlb_index *x)
{
	for (uint32_t i = 0; i < x->n; i++)
		if (x->pool[i]->cpus && !x->pool[i]->restricted)
			return x->pool[i];
	return (struct tlb_pool *)0;
}

static struct tlb_pool *index_find(struct dmm_swiotlb *t, dmm_phys_t pa)
{
	unsigned cpu = dmm__cpu_enter(t->mem);
	struct tlb_pool *found = index_search(index_get(t), pa);

	dmm__cpu_exit(t->mem, cpu);
	return found;
}

/* Slots in use in @p (the sum of its areas'). */
static uint64_t pool_used(const struct tlb_pool *p)
{
	uint64_t used = 0;

	for (uint32_t a = 0; a < p->nr_areas; a++)
		used += __atomic_load_n(&p->areas[a].used, __ATOMIC_RELAXED);
	return used;
}

/* Publish the current pool set (pool lock held). */
static void index_publish(struct dmm_swiotlb *t)
{
	struct tlb_index *x = &t->idx[__atomic_load_n(&t->cur, __ATOMIC_RELAXED) == &t->idx[0]];

	/* sections that began before the last flip may still read buffer j */
	dmm__cpu_sync_all(t->mem);
	x->n = t->nr_pools;
	for (uint32_t i = 0; i < t->nr_pools; i++)
		x->pool[i] = t->pools[i];
	for (uint32_t i = 1; i < x->n; i++) /* insertion sort by base */
		for (uint32_t k = i; k > 0 && x->pool[k]->base < x->pool[k - 1]->base; k--) {
			struct tlb_pool *p = x->pool[k];
			x->pool[k] = x->pool[k - 1];
			x->pool[k - 1] = p;
		}
	x->cached = index_first_cached(x);
	__atomic_store_n(&t->cur, x, __ATOMIC_SEQ_CST);
}

/* ---- pools ------------------------------------------------------------------------ */

/* A new pool of @bytes inside physical window @c (not yet published). */
static int pool_create(struct dmm_swiotlb *t, uint64_t bytes, const struct dmm_constraint *c, int transient,
		       struct dmm_device *dev, struct tlb_pool **out)
{
	struct dmm_mem *mem = t->mem;
	struct dmm_constraint k = *c;
	uint32_t nslots, nr_areas;
	uint64_t meta, meta_pages, mem_pages;
	dmm_pfn_t mem_pfn, meta_pfn;
	struct tlb_pool *p;
	int err;

	bytes = dmm_align_up(bytes, DMM_PAGE_SIZE);
	nslots = (uint32_t)(bytes / t->o.slot_size);
	nr_areas = t->o.nr_areas ? t->o.nr_areas : mem->plat.nr_cpus;
	if (nr_areas > MAX_AREAS)
		nr_areas = MAX_AREAS;
	if (transient)
		nr_areas = 1; /* sized for one run (transient_need): an area must hold it */
	/* an area must hold the largest mapping */
	while (nr_areas > 1 && nslots / nr_areas < t->o.max_slots_per_map)
		nr_areas--;
	meta = sizeof(*p) + DMM_CACHELINE + (uint64_t)nr_areas * sizeof(struct tlb_area) +
	       (uint64_t)nslots * sizeof(struct tlb_slot);
	if (!transient)
		meta += DMM_CACHELINE + (uint64_t)mem->plat.nr_cpus * sizeof(struct tlb_cpu);
	meta_pages = dmm_align_up(meta, DMM_PAGE_SIZE) >> DMM_PAGE_SHIFT;
	mem_pages = bytes >> DMM_PAGE_SHIFT;
	k.align = dmm_max64(k.align, DMM_PAGE_SIZE);
	k.boundary = 0;
	k.max_seg_size = 0;
	k.max_segs = 0;
	/* the library's own memory, marked before anyone can see it: no pin
	 * lands on it, so its frees are never refused */
	err = dmm__lib_alloc_range(mem, &k, mem_pages, DMM_GFP_ATOMIC, &mem_pfn);
	if (err)
		return err;
	{
		struct dmm_constraint any = DMM_CONSTRAINT_ANY;
		err = dmm__lib_alloc_range(mem, &any, meta_pages, DMM_GFP_ATOMIC, &meta_pfn);
	}
	if (err) {
		dmm__lib_free_range(mem, mem_pfn, mem_pages);
		return err;
	}
	dmm__meta_zero(mem, meta_pfn, meta_pages);
	p = dmm_pfn_to_virt(mem, meta_pfn);
	p->base = dmm_pfn_to_phys(mem_pfn);
	p->bytes = bytes;
	p->nslots = nslots;
	p->nr_areas = nr_areas;
	p->mem_pfn = mem_pfn;
	p->mem_pages = mem_pages;
	p->meta_pfn = meta_pfn;
	p->meta_pages = meta_pages;
	p->transient = transient;
	p->restricted = dev != (struct dmm_device *)0;
	p->low = p->base + bytes <= (dmm_phys_t)4 << 30;
	p->dev = dev;
	p->areas = (struct tlb_area *)dmm_align_up((uintptr_t)(p + 1), DMM_CACHELINE);
	p->slots = (struct tlb_slot *)(p->areas + nr_areas);
	if (!transient)
		p->cpus = (struct tlb_cpu *)dmm_align_up((uintptr_t)(p->slots + nslots), DMM_CACHELINE);
	for (uint32_t a = 0; a < nr_areas; a++) {
		struct tlb_area *ar = &p->areas[a];
		mem->plat.lock_init(mem->plat.ctx, &ar->lock);
		ar->start = a * (nslots / nr_areas);
		ar->n = a + 1 < nr_areas ? nslots / nr_areas : nslots - ar->start;
	}
	p->grow_at = (uint32_t)(((uint64_t)(nslots / nr_areas) * t->o.grow_threshold_pct) / 100);
	*out = p;
	return 0;
}

static void pool_destroy(struct dmm_swiotlb *t, struct tlb_pool *p)
{
	struct dmm_mem *mem = t->mem;
	dmm_pfn_t mem_pfn = p->mem_pfn, meta_pfn = p->meta_pfn;
	uint64_t mem_pages = p->mem_pages, meta_pages = p->meta_pages;

	if (mem->plat.lock_destroy)
		for (uint32_t a = 0; a < p->nr_areas; a++)
			mem->plat.lock_destroy(mem->plat.ctx, &p->areas[a].lock);
	/* the library's own memory (pool_create): never refused for a pin */
	dmm__lib_free_range(mem, mem_pfn, mem_pages);
	dmm__lib_free_range(mem, meta_pfn, meta_pages);
}

/* Add @p to the set and publish (pool lock held). */
static int pool_add_locked(struct dmm_swiotlb *t, struct tlb_pool *p)
{
	if (t->nr_pools == MAX_POOLS)
		return -DMM_ENOSPC;
	t->pools[t->nr_pools++] = p;
	__atomic_store_n(&t->total_bytes, t->total_bytes + p->bytes, __ATOMIC_RELAXED);
	index_publish(t);
	if (p->transient) {
		__atomic_fetch_add(&t->nr_transient, 1, __ATOMIC_RELAXED);
		sadd(&t->st.transient_created, 1);
	}
	return 0;
}

static void default_window(const struct dmm_swiotlb *t, struct dmm_constraint *c)
{
	*c = DMM_CONSTRAINT_ANY;
	c->hi = t->o.limit ? t->o.limit : (t->mem->machine.dma32_limit ? t->mem->machine.dma32_limit : DMM_PHYS_MAX);
}

int dmm_swiotlb_init(struct dmm_mem *mem, const struct dmm_swiotlb_opts *opts)
{
	void *va;
	struct dmm_swiotlb_opts o;
	struct dmm_swiotlb *t;
	uint64_t pages;
	dmm_pfn_t pfn;
	int err;

	if (!mem)
		return -DMM_EINVAL;
	if (opts)
		o = *opts;
	else
		dmm_swiotlb_opts_default(mem, &o);
	if (!o.slot_size)
		o.slot_size = 2048;
	if (!dmm_is_pow2(o.slot_size) || o.slot_size < 512 || o.slot_size > DMM_PAGE_SIZE ||
	    (o.initial_bytes & (DMM_PAGE_SIZE - 1)) || o.grow_threshold_pct > 100 ||
	    (o.align_mask && !dmm_is_pow2(o.align_mask + 1)))
		return dmm__count_invalid(mem);
	if (!o.max_slots_per_map)
		o.max_slots_per_map = 128;
	if (o.max_slots_per_map > 0xffff)
		return dmm__count_invalid(mem);
	if (!o.grow_threshold_pct)
		o.grow_threshold_pct = 75;
	if (!o.grow_bytes)
		o.grow_bytes = dmm_max64(o.initial_bytes, 256 * 1024);
	o.grow_bytes = dmm_align_up(o.grow_bytes, DMM_PAGE_SIZE);
	if (!o.max_bytes)
		o.max_bytes = (mem->ram_pages << DMM_PAGE_SHIFT) >> 4;
	if (!o.transient_idle_ns)
		o.transient_idle_ns = 100 * 1000 * 1000;
	if (tlb_of(mem))
		return -DMM_EEXIST;
	pages = dmm_align_up(sizeof(*t), DMM_PAGE_SIZE) >> DMM_PAGE_SHIFT;
	err = dmm__meta_alloc(mem, pages, 0, &pfn, &va);
	if (err)
		return err;
	t = va;
	t->mem = mem;
	t->o = o;
	t->slot_size = o.slot_size;
	t->slot_shift = (unsigned)__builtin_ctzll(o.slot_size);
	t->off_mask = o.align_mask & (o.slot_size - 1);
	t->run_mask = o.align_mask & ~(uint64_t)(o.slot_size - 1);
	t->cur = &t->idx[0];
	t->self_pfn = pfn;
	t->self_pages = pages;
	mem->plat.lock_init(mem->plat.ctx, &t->lock);
	if (o.initial_bytes) {
		struct dmm_constraint w;
		struct tlb_pool *p;
		default_window(t, &w);
		err = pool_create(t, o.initial_bytes, &w, 0, (struct dmm_device *)0, &p);
		if (err) {
			dmm__lib_free_range(mem, pfn, pages); /* the library's (dmm__meta_alloc): never refused */
			return err;
		}
		pool_add_locked(t, p);
	}
	if (!__atomic_compare_exchange_n(&mem->swiotlb, &(void *){ (void *)0 }, (void *)t, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		for (uint32_t i = 0; i < t->nr_pools; i++)
			pool_destroy(t, t->pools[i]);
		dmm__lib_free_range(mem, pfn, pages);
		return -DMM_EEXIST;
	}
	if (o.force)
		__atomic_store_n(&mem->bounce_all, 1, __ATOMIC_RELEASE);
	return 0;
}

int dmm_swiotlb_restricted_pool(struct dmm_device *dev, uint64_t bytes)
{
	struct dmm_swiotlb *t;
	struct dmm_constraint w[DMM_MAX_DMA_RANGES];
	struct tlb_pool *p;
	unsigned n;
	int err = -DMM_ERANGE;

	if (!dev || !bytes || (bytes & (DMM_PAGE_SIZE - 1)) || dev->restricted_pool)
		return dmm__count_invalid(dev ? dev->mem : (struct dmm_mem *)0);
	t = tlb_of(dev->mem);
	if (!t)
		return -DMM_ENOTSUP;
	n = dmm__dev_phys_windows(dev, &dev->lim[0], w, DMM_MAX_DMA_RANGES);
	for (unsigned i = 0; i < n; i++) {
		err = pool_create(t, bytes, &w[i], 0, dev, &p);
		if (!err)
			break;
	}
	if (err)
		return err;
	/* off the express path before the pool is visible: from here on the
	 * device's maps take the general path, which sees restricted_pool */
	__atomic_store_n(&dev->express, 0, __ATOMIC_RELAXED);
	dmm__lock(dev->mem, &t->lock);
	err = pool_add_locked(t, p);
	dmm__unlock(dev->mem, &t->lock);
	if (err) {
		pool_destroy(t, p);
		dmm__dev_update_express(dev);
		return err;
	}
	sadd(&t->st.restricted_pools, 1);
	dev->restricted_pool = p;
	return 0;
}

int dmm_swiotlb_is_bounce(struct dmm_mem *mem, dmm_phys_t pa)
{
	struct dmm_swiotlb *t = mem ? tlb_of(mem) : (struct dmm_swiotlb *)0;
	return t && index_find(t, pa) != (struct tlb_pool *)0;
}

/* ---- slots ----------------------------------------------------------------------- */

/* @n more slots reserved in the areas (mapped or cached): the count behind
 * the high-water mark. */
static void reserve(struct dmm_swiotlb *t, uint32_t n)
{
	uint64_t used = __atomic_add_fetch(&t->used_slots, n, __ATOMIC_RELAXED);
	uint64_t hw = __atomic_load_n(&t->st.high_water_slots, __ATOMIC_RELAXED);

	while (used > hw && !__atomic_compare_exchange_n(&t->st.high_water_slots, &hw, used, false, __ATOMIC_RELAXED,
							 __ATOMIC_RELAXED))
		;
}

static struct tlb_area *area_of(const struct tlb_pool *p, uint32_t slot)
{
	/* areas are equal but the last, which takes the remainder */
	uint32_t a = slot / p->areas[0].n;
	return &p->areas[a < p->nr_areas ? a : p->nr_areas - 1];
}

/* Free the run at @first (@n slots) in its area, which is locked. */
static void area_put(struct dmm_swiotlb *t, struct tlb_pool *p, struct tlb_area *ar, uint32_t first, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		p->slots[first + i].used = SLOT_FREE;
	p->slots[first].orig = 0;
	p->slots[first].size = 0;
	p->slots[first].nslots = 0;
	p->slots[first].off = 0;
	__atomic_store_n(&ar->used, ar->used - n, __ATOMIC_RELAXED);
	ar->hint = first - ar->start; /* reuse these slots next: warm */
	__atomic_sub_fetch(&t->used_slots, n, __ATOMIC_RELAXED);
}

/* Give the oldest @k runs of length @len in @pc back to their areas. */
static void cache_give_back(struct dmm_swiotlb *t, struct tlb_pool *p, struct tlb_cpu *pc, uint32_t len, uint32_t k)
{
	for (uint32_t i = 0; i < k; i++) {
		uint32_t first = pc->run[len - 1][i];
		struct tlb_area *ar = area_of(p, first);
		dmm__lock(t->mem, &ar->lock);
		area_put(t, p, ar, first, len);
		dmm__unlock(t->mem, &ar->lock);
	}
	for (uint32_t i = k; i < pc->n[len - 1]; i++)
		pc->run[len - 1][i - k] = pc->run[len - 1][i];
	__atomic_store_n(&pc->n[len - 1], pc->n[len - 1] - k, __ATOMIC_RELAXED);
}

struct drain_arg {
	struct dmm_swiotlb *t;
	struct tlb_pool *p;
	unsigned cpu;
};

static void drain_cpu(void *arg)
{
	struct drain_arg *d = arg;
	struct tlb_cpu *pc = &d->p->cpus[d->cpu];

	for (uint32_t len = 1; len <= TLB_CACHE_LEN; len++)
		cache_give_back(d->t, d->p, pc, len, pc->n[len - 1]);
}

/* Every CPU's cached runs of every pool @dev may use back to the areas (a
 * pool ran out: they may be what a mapping needs). Outside any section. */
static void drain_caches(struct dmm_swiotlb *t, struct dmm_device *dev)
{
	struct drain_arg d = { t, (struct tlb_pool *)0, 0 };

	dmm__lock(t->mem, &t->lock);
	for (uint32_t i = 0; i < t->nr_pools; i++) {
		d.p = t->pools[i];
		if (!d.p->cpus || (d.p->restricted && d.p->dev != dev))
			continue;
		for (d.cpu = 0; d.cpu < t->mem->plat.nr_cpus; d.cpu++)
			dmm__cpu_sync(t->mem, d.cpu, drain_cpu, &d);
	}
	dmm__unlock(t->mem, &t->lock);
}

/*
 * Take @n slots in area @a of @p for a mapping of @pa; returns the first
 * slot or -1 (also when @p is dying). Area lock held. The search starts at
 * the hint, which unmap moves back to the run it freed: the next mapping
 * reuses the slots whose lines are still in the CPU's cache (bouncing
 * copies into them), and a pool in steady use touches only as much memory
 * as it has mappings.
 */
static int64_t area_take(struct dmm_swiotlb *t, struct tlb_pool *p, struct tlb_area *a, uint32_t n,
			 dmm_phys_t pa, uint64_t granule)
{
	uint64_t slot = t->o.slot_size, unit = granule > slot ? granule : slot;
	uint64_t mask = t->o.align_mask & ~(unit - 1);
	uint32_t span, s;

	if (n > a->n || __atomic_load_n(&p->dying, __ATOMIC_RELAXED))
		return -1;
	span = a->n - n + 1; /* first slots a run of n can start at */
	s = a->hint < span ? a->hint : 0;
	for (uint32_t k = 0; k < span; k++, s = s + 1 < span ? s + 1 : 0) {
		struct tlb_slot *sl = &p->slots[a->start + s];
		uint64_t at = p->base + (uint64_t)(a->start + s) * slot;
		uint32_t i;
		if (mask && (at & mask) != (pa & mask))
			continue;
		if (unit > slot && (at & (unit - 1)))
			continue;
		for (i = 0; i < n && !sl[i].used; i++)
			;
		if (i < n) {
			s += i; /* sl[i] is taken: no run can start before it */
			if (s >= span)
				s = span - 1;
			continue;
		}
		for (i = 0; i < n; i++) {
			sl[i].used = SLOT_MAPPED;
			sl[i].first = a->start + s;
		}
		__atomic_store_n(&a->used, a->used + n, __ATOMIC_RELAXED);
		reserve(t, n);
		a->hint = s + n < span ? s + n : 0;
		return a->start + s;
	}
	return -1;
}

/* Slots [first, first + n) of @p, n <= TLB_CACHE_LEN, go to state @used. */
static inline void mark_run(struct tlb_pool *p, uint32_t first, uint32_t n, uint8_t used)
{
	_Static_assert(TLB_CACHE_LEN == 2, "a cached run is its first and last slot");
	p->slots[first].used = used;
	p->slots[first + n - 1].used = used;
}

/* The cached run of @n slots that a mapping of @pa would take from @pc (in
 * a section of the CPU owning @pc), or -1: none (also when @p is dying: a
 * dying pool has no cached run, its caches being empty, but no take path
 * may give out its slots), or none keeping the offset. Nothing changes. */
static inline int64_t cache_peek(const struct dmm_swiotlb *t, const struct tlb_pool *p, const struct tlb_cpu *pc,
				 uint32_t n, dmm_phys_t pa)
{
	uint32_t k = pc->n[n - 1], first;

	if (!k || __atomic_load_n(&p->dying, __ATOMIC_RELAXED))
		return -1;
	first = pc->run[n - 1][k - 1];
	if (((p->base + ((uint64_t)first << t->slot_shift)) ^ pa) & t->run_mask)
		return -1; /* the offset must survive the bounce: take one from the area */
	return first;
}

/* Take the run cache_peek found at @first, counted with its @copy_in bytes. */
static inline void cache_commit(struct tlb_pool *p, struct tlb_cpu *pc, uint32_t first, uint32_t n, uint64_t copy_in)
{
	__atomic_store_n(&pc->n[n - 1], pc->n[n - 1] - 1, __ATOMIC_RELAXED);
	mark_run(p, first, n, SLOT_MAPPED);
	dmm__pcpu_add(&pc->maps, 1);
	if (copy_in)
		dmm__pcpu_add(&pc->to_device, copy_in);
}

/* A cached run of @n slots for a mapping of @pa, taken; or -1. */
static inline int64_t cache_take(struct dmm_swiotlb *t, struct tlb_pool *p, struct tlb_cpu *pc, uint32_t n, dmm_phys_t pa,
				 uint64_t copy_in)
{
	int64_t first = cache_peek(t, p, pc, n, pa);

	if (first >= 0)
		cache_commit(p, pc, (uint32_t)first, n, copy_in);
	return first;
}

/* Take @n slots in @p, the area of @cpu first; *@crowded: that area is
 * past the growth threshold. */
static int64_t pool_take(struct dmm_swiotlb *t, struct tlb_pool *p, uint32_t n, dmm_phys_t pa,
			 uint64_t granule, uint64_t to_device, unsigned cpu, bool *crowded)
{
	uint32_t ai = cpu < p->nr_areas ? cpu : cpu % p->nr_areas;

	for (uint32_t k = 0; k < p->nr_areas; k++, ai = ai + 1 < p->nr_areas ? ai + 1 : 0) {
		struct tlb_area *a = &p->areas[ai];
		int64_t s;
		dmm__lock(t->mem, &a->lock);
		s = area_take(t, p, a, n, pa, granule);
		if (s >= 0) {
			if (p->transient) /* in use again: an older idle mark must not count */
				__atomic_store_n(&p->idle_since, 0, __ATOMIC_RELAXED);
			a->maps++;
			a->to_device += to_device;
			*crowded = a->used > p->grow_at;
		}
		dmm__unlock(t->mem, &a->lock);
		if (s >= 0)
			return s;
	}
	return -1;
}

static unsigned this_cpu(const struct dmm_mem *mem)
{
	return mem->plat.cpu_id ? mem->plat.cpu_id(mem->plat.ctx) : 0;
}

static bool pool_usable(const struct tlb_pool *p, struct dmm_device *dev)
{
	dmm_dma_addr_t bus;
	if (p->restricted) /* (no device's once its own is gone: device_gone) */
		return __atomic_load_n(&p->dev, __ATOMIC_RELAXED) == dev;
	return dmm__dev_reach_fast(dev, p->base, p->bytes, &bus) == 0;
}

/* Would a growth step take the pools past max_bytes? (Transient pools may
 * have been added since the step was queued.) */
static bool grow_over_max(const struct dmm_swiotlb *t)
{
	return __atomic_load_n(&t->total_bytes, __ATOMIC_RELAXED) + t->o.grow_bytes > t->o.max_bytes;
}

static void grow_worker(void *arg);

static void maybe_grow(struct dmm_swiotlb *t, const struct tlb_index *x)
{
	uint64_t used = 0, total = 0;

	for (uint32_t i = 0; i < x->n; i++) {
		struct tlb_pool *p = x->pool[i];
		if (p->restricted || p->transient)
			continue;
		used += pool_used(p);
		total += p->nslots;
	}
	if (!t->mem->plat.defer || grow_over_max(t) || used * 100 <= total * t->o.grow_threshold_pct)
		return;
	if (__atomic_exchange_n(&t->grow_pending, 1, __ATOMIC_ACQ_REL))
		return;
	if (t->mem->plat.defer(t->mem->plat.ctx, grow_worker, t))
		__atomic_store_n(&t->grow_pending, 0, __ATOMIC_RELEASE);
	else
		sadd(&t->st.grow_queued, 1);
}

static void grow_worker(void *arg)
{
	struct dmm_swiotlb *t = arg;
	struct dmm_constraint w;
	struct tlb_pool *p;

	default_window(t, &w);
	if (!grow_over_max(t) && !pool_create(t, t->o.grow_bytes, &w, 0, (struct dmm_device *)0, &p)) {
		dmm__lock(t->mem, &t->lock);
		if (grow_over_max(t) || pool_add_locked(t, p)) {
			dmm__unlock(t->mem, &t->lock);
			pool_destroy(t, p);
		} else {
			dmm__unlock(t->mem, &t->lock);
			sadd(&t->st.grow_done, 1);
		}
	}
	__atomic_store_n(&t->grow_pending, 0, __ATOMIC_RELEASE);
}

/* Bytes of [pa, pa + len) below 4 GiB. */
static uint64_t low_bytes(dmm_phys_t pa, uint64_t len)
{
	const dmm_phys_t g4 = (dmm_phys_t)4 << 30;
	return pa >= g4 ? 0 : dmm_min64(len, g4 - pa);
}

/* Bytes below 4 GiB of the run of @n slots at slot @first of @p: the
 * device's low-memory count. */
static inline uint64_t run_low(const struct dmm_swiotlb *t, const struct tlb_pool *p, uint32_t first, uint32_t n)
{
	if (__builtin_expect(p->low, 1))
		return (uint64_t)n << t->slot_shift;
	return low_bytes(p->base + ((uint64_t)first << t->slot_shift), (uint64_t)n << t->slot_shift);
}

/* Slots a bounce of [pa, pa + size) takes, and *@off, the offset of the
 * data in the first: whole granules (IOMMU pages, zero-padded) keeping the
 * offset within the granule, or (@granule 0) the bits of @pa under
 * align_mask within a slot. */
static inline uint32_t slots_for(const struct dmm_swiotlb *t, dmm_phys_t pa, size_t size, uint64_t granule,
				 uint64_t *off)
{
	if (granule) {
		*off = pa & (granule - 1);
		return (uint32_t)(dmm_align_up(*off + size, granule) >> t->slot_shift);
	}
	*off = pa & t->off_mask;
	return (uint32_t)((*off + size + t->slot_size - 1) >> t->slot_shift);
}

/* Bytes copied into the bounce buffer at map time. */
static inline uint64_t copy_in_bytes(enum dmm_dma_dir dir, size_t size)
{
	return (dir == DMM_DMA_TO_DEVICE || dir == DMM_DMA_BIDIRECTIONAL) ? size : 0;
}

/* The mapping record of slot @s (first of @n) for [pa, pa + size) of
 * @dev: the bounce address. */
static inline dmm_phys_t record_map(const struct dmm_swiotlb *t, struct tlb_pool *p, uint32_t s, dmm_phys_t pa,
				    size_t size, uint32_t n, uint64_t off, const struct dmm_device *dev)
{
	struct tlb_slot *f = &p->slots[s];

	f->dev = dev->tlb_tag;
	f->orig = pa;
	f->size = (uint32_t)size;
	f->nslots = (uint16_t)n;
	f->off = (uint16_t)off;
	return p->base + ((uint64_t)s << t->slot_shift) + off;
}

/* The device's bounce counters for a mapping of slots [s, s + n). */
static inline void count_map(const struct dmm_swiotlb *t, struct dmm_device *dev, unsigned cpu, const struct tlb_pool *p,
			     uint32_t s, uint32_t n)
{
	dmm__dstat_in(dev, cpu, offsetof(struct dmm_dev_pcpu, bounced_maps), 1);
	dmm__dev_low_bounce_in(dev, cpu, (int64_t)run_low(t, p, s, n));
}

/* One pass over the pools @dev may use, inside a section of @cpu: its cache
 * of free runs, then the areas. The slot, or -1; *@pp its pool. */
static int64_t take_in(struct dmm_swiotlb *t, struct dmm_device *dev, uint32_t n, dmm_phys_t pa, uint64_t granule,
		       uint64_t copy_in, unsigned cpu, struct tlb_pool **pp)
{
	const struct tlb_index *x = index_get(t);
	uint32_t np = dev->restricted_pool ? 1 : x->n;
	bool cacheable = n <= TLB_CACHE_LEN && !granule && !dev->desc.untrusted, crowded = false;
	struct tlb_pool *p = (struct tlb_pool *)0;
	int64_t s = -1;

	for (uint32_t i = 0; i < np && s < 0; i++) {
		p = dev->restricted_pool ? dev->restricted_pool : x->pool[i];
		if (!dev->restricted_pool && !pool_usable(p, dev))
			continue;
		if (cacheable && p->cpus && (s = cache_take(t, p, &p->cpus[cpu], n, pa, copy_in)) >= 0)
			break;
		s = pool_take(t, p, n, pa, granule, copy_in, cpu, &crowded);
	}
	if (s >= 0 && !p->transient && !p->restricted && crowded)
		maybe_grow(t, x);
	*pp = p;
	return s;
}

/* The idle mark of a pool that became empty at @now: never 0 (not idle),
 * odd, and no later than @now (but for @now 0). */
static inline uint64_t idle_stamp(uint64_t now)
{
	return now ? (now - 1) | 1 : 1;
}

/* Bytes a pool needs so that a run of @n slots fits in it whatever the
 * address bits the run must keep (align_mask above the slot, or the
 * IOMMU @granule): the run, and one slot or that alignment more. */
static uint64_t transient_need(const struct dmm_swiotlb *t, uint32_t n, uint64_t granule)
{
	uint64_t extra = dmm_max64(dmm_max64(t->o.slot_size, t->run_mask + 1), granule);

	return (uint64_t)n * t->o.slot_size + extra;
}

/* Size of a transient pool for a mapping of @n slots (transient_need):
 * rounded up to 64 KiB, so that it serves a few more, or to a page when
 * that would take the pools past max_bytes; 0 when even that does not
 * fit. Pool lock held. */
static uint64_t transient_bytes(const struct dmm_swiotlb *t, uint32_t n, uint64_t granule)
{
	uint64_t need = transient_need(t, n, granule);
	uint64_t room = t->o.max_bytes > t->total_bytes ? t->o.max_bytes - t->total_bytes : 0;

	if (dmm_align_up(need, 64 * 1024) <= room)
		return dmm_align_up(need, 64 * 1024);
	if (dmm_align_up(need, DMM_PAGE_SIZE) <= room)
		return dmm_align_up(need, DMM_PAGE_SIZE);
	return 0;
}

/* A map of @dev failed for want of bounce slots ("bounce buffer full"). */
static void count_full(struct dmm_swiotlb *t, struct dmm_device *dev)
{
	sadd(&t->st.fail_full, 1);
	dmm__dstat(&dev->st.fail_bounce_full, 1);
}

/*
 * Bounce [pa, pa + size) for @dev: *tlb_pa receives the bounce address.
 * -DMM_ENOSPC when no slot is free and no pool can be added: counted, or
 * for a deferred request's map (@wait) noted in *@wait. Inside a section of
 * *@cpu; the slow paths (taking back the CPUs' cached runs, adding a
 * transient pool) leave it and enter again.
 */
int dmm__swiotlb_map_in(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir,
			uint64_t granule, dmm_phys_t *tlb_pa, unsigned *cpu, struct dmm__map_wait *wait)
{
	struct dmm_swiotlb *t = tlb_of(dev->mem);
	uint64_t slot, off, copy_in, bytes;
	uint32_t n;
	struct tlb_pool *p = (struct tlb_pool *)0;
	int64_t s;

	if (!t)
		return -DMM_ENOTSUP;
	slot = t->o.slot_size;
	copy_in = copy_in_bytes(dir, size);
	if (granule < slot)
		granule = 0;
	n = slots_for(t, pa, size, granule, &off);
	if (n > t->o.max_slots_per_map)
		return -DMM_EINVAL;
	s = take_in(t, dev, n, pa, granule, copy_in, *cpu, &p);
	if (__builtin_expect(s < 0, 0)) {
		/* free runs may be parked in CPU caches: take them back */
		dmm__cpu_exit(dev->mem, *cpu);
		drain_caches(t, dev);
		*cpu = dmm__cpu_enter(dev->mem);
		s = take_in(t, dev, n, pa, granule, copy_in, *cpu, &p);
	}
	if (s < 0 && !dev->restricted_pool) {
		/* no room anywhere: a transient pool, on the spot */
		dmm__cpu_exit(dev->mem, *cpu);
		dmm__lock(dev->mem, &t->lock);
		if (!t->o.no_transient && (bytes = transient_bytes(t, n, granule))) {
			struct dmm_constraint w[DMM_MAX_DMA_RANGES];
			unsigned nw = dmm__dev_phys_windows(dev, &dev->lim[0], w, DMM_MAX_DMA_RANGES);
			for (unsigned i = 0; i < nw && s < 0; i++) {
				bool crowded;
				if (pool_create(t, bytes, &w[i], 1, (struct dmm_device *)0, &p))
					continue;
				if (pool_add_locked(t, p)) {
					pool_destroy(t, p);
					break;
				}
				s = pool_take(t, p, n, pa, granule, copy_in, this_cpu(dev->mem), &crowded);
				if (s >= 0) /* complete before the pool lock lets a check in */
					record_map(t, p, (uint32_t)s, pa, size, n, off, dev);
				else /* empty: idle from now, so trim gives it back */
					__atomic_store_n(&p->idle_since, idle_stamp(dmm__now(dev->mem)), __ATOMIC_RELAXED);
			}
		}
		dmm__unlock(dev->mem, &t->lock);
		*cpu = dmm__cpu_enter(dev->mem);
	}
	if (s < 0) {
		if (wait) /* the request waits: no failure yet */
			wait->bounce_full = true;
		else
			count_full(t, dev);
		return -DMM_ENOSPC;
	}
	*tlb_pa = record_map(t, p, (uint32_t)s, pa, size, n, off, dev);
	/* an untrusted device sees its own bytes and zeros, never what an
	 * earlier mapping left in these slots */
	if (dev->desc.untrusted || granule) {
		dmm_phys_t run = p->base + ((uint64_t)s << t->slot_shift);
		dmm__phys_fill(dev->mem, run, 0, (size_t)n * slot);
		/* the zeros go through the CPU's caches: a device that does
		 * not snoop them reads memory, where an earlier mapping's
		 * bytes still are, unless every line of the run is cleaned
		 * (the caller cleans only the mapping's bytes) */
		dmm__dma_for_device(dev, run, (size_t)n * slot, dir);
	}
	if (copy_in)
		dmm__phys_copy(dev->mem, *tlb_pa, pa, size);
	count_map(t, dev, *cpu, p, (uint32_t)s, n);
	return 0;
}

int dmm__swiotlb_map(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir,
		     uint64_t granule, dmm_phys_t *tlb_pa, struct dmm__map_wait *wait)
{
	unsigned cpu = dmm__cpu_enter(dev->mem);
	int err = dmm__swiotlb_map_in(dev, pa, size, dir, granule, tlb_pa, &cpu, wait);

	dmm__cpu_exit(dev->mem, cpu);
	return err;
}

/* The bounce address a mapping's map returned: its record is @f in @p. */
static inline dmm_phys_t record_start(const struct dmm_swiotlb *t, const struct tlb_pool *p, const struct tlb_slot *f)
{
	return p->base + ((uint64_t)(f - p->slots) << t->slot_shift) + f->off;
}

/* The mapping record behind bounce address @tlb_pa, or NULL. @hint: its
 * pool if the caller looked it up already. */
static inline struct tlb_slot *lookup(struct dmm_swiotlb *t, struct tlb_pool *hint, dmm_phys_t tlb_pa,
			       struct tlb_pool **pp)
{
	struct tlb_pool *p = hint ? hint : index_find(t, tlb_pa);
	uint32_t s;

	if (!p)
		return (struct tlb_slot *)0;
	s = (uint32_t)((tlb_pa - p->base) >> t->slot_shift);
	/* (a record being written by a map on another CPU may still show no
	 * slot count: only a second unmap racing that map can look at it, and
	 * it must not free a run of none) */
	if (p->slots[s].used != SLOT_MAPPED || p->slots[p->slots[s].first].used != SLOT_MAPPED ||
	    !p->slots[p->slots[s].first].nslots)
		return (struct tlb_slot *)0;
	*pp = p;
	return &p->slots[p->slots[s].first];
}

int dmm__swiotlb_inside(struct dmm_device *dev, dmm_phys_t pa)
{
	struct dmm_mem *mem = dev->mem;
	struct dmm_swiotlb *t = tlb_of(mem);
	struct tlb_pool *p;
	struct tlb_slot *f;
	unsigned cpu;
	int inside = 0;

	if (!t)
		return 0;
	cpu = dmm__cpu_enter(mem);
	p = index_search(index_get(t), pa);
	if (p && (f = lookup(t, p, pa, &p)) && f->dev == dev->tlb_tag)
		inside = record_start(t, p, f) != pa;
	dmm__cpu_exit(mem, cpu);
	return inside;
}

int dmm__swiotlb_vacant(struct dmm_mem *mem, dmm_phys_t pa)
{
	struct dmm_swiotlb *t = tlb_of(mem);
	struct tlb_pool *p;
	unsigned cpu;
	int vacant;

	if (!t)
		return 0;
	cpu = dmm__cpu_enter(mem);
	p = index_search(index_get(t), pa);
	vacant = p && !lookup(t, p, pa, &p);
	dmm__cpu_exit(mem, cpu);
	return vacant;
}

struct tlb_pool *dmm__swiotlb_pool_of(struct dmm_mem *mem, dmm_phys_t pa)
{
	struct dmm_swiotlb *t = tlb_of(mem);
	return t ? index_find(t, pa) : (struct tlb_pool *)0;
}

struct tlb_pool *dmm__swiotlb_pool_of_in(struct dmm_mem *mem, dmm_phys_t pa)
{
	struct dmm_swiotlb *t = tlb_of(mem);
	return t ? index_search(index_get(t), pa) : (struct tlb_pool *)0;
}

int dmm__swiotlb_ready(struct dmm_mem *mem)
{
	return tlb_of(mem) != (struct dmm_swiotlb *)0;
}

int dmm__swiotlb_forced(struct dmm_mem *mem)
{
	return __atomic_load_n(&mem->bounce_all, __ATOMIC_ACQUIRE); /* set once the pools exist */
}

/* Copy between the original and the bounce buffer for [tlb_pa, +size). */
void dmm__swiotlb_sync(struct dmm_device *dev, struct tlb_pool *pool, dmm_phys_t tlb_pa, size_t size,
		       enum dmm_dma_dir dir, int to_device)
{
	struct dmm_swiotlb *t = tlb_of(dev->mem);
	struct tlb_pool *p;
	struct tlb_slot *f;
	dmm_phys_t start, orig;

	if (!t || !(f = lookup(t, pool, tlb_pa, &p)) || f->dev != dev->tlb_tag)
		return; /* no bounce mapping of @dev */
	start = record_start(t, p, f);
	if (tlb_pa < start || tlb_pa + size > start + f->size)
		return; /* outside the mapping: DMA debug says so (and no line of
			 * another mapping is cleaned or dropped) */
	orig = f->orig + (tlb_pa - start);
	if (to_device) {
		if (dir == DMM_DMA_TO_DEVICE || dir == DMM_DMA_BIDIRECTIONAL) {
			dmm__phys_copy(dev->mem, tlb_pa, orig, size);
			sadd(&t->st.bounced_to_device, size);
		}
		dmm__dma_for_device(dev, tlb_pa, size, dir);
	} else {
		dmm__dma_for_cpu(dev, tlb_pa, size, dir);
		if (dir == DMM_DMA_FROM_DEVICE || dir == DMM_DMA_BIDIRECTIONAL) {
			dmm__phys_copy(dev->mem, orig, tlb_pa, size);
			sadd(&t->st.bounced_from_device, size);
		}
	}
}

static void serve_deferred(struct dmm_swiotlb *t);

/* The run at @first (@n slots) into CPU cache @pc: reserved, warm, taken
 * back without a lock. @back: bytes copied back. @room: the caller knows
 * the cache is not full (else half of it goes back to the areas first). */
static inline __attribute__((always_inline)) void cache_put(struct dmm_swiotlb *t, struct tlb_pool *p,
							    struct tlb_cpu *pc, uint32_t first, uint32_t n,
							    uint64_t back, bool room)
{
	struct tlb_slot *f = &p->slots[first];

	if (!room && __builtin_expect(pc->n[n - 1] == TLB_CACHE_RUNS, 0))
		cache_give_back(t, p, pc, n, TLB_CACHE_RUNS / 2);
	mark_run(p, first, n, SLOT_CACHED);
	f->orig = 0;
	f->size = 0;
	f->off = 0;
	pc->run[n - 1][pc->n[n - 1]] = first;
	__atomic_store_n(&pc->n[n - 1], pc->n[n - 1] + 1, __ATOMIC_RELAXED);
	dmm__pcpu_add(&pc->unmaps, 1);
	if (back)
		dmm__pcpu_add(&pc->from_device, back);
}

/* May @dev, which has no restricted pool of its own, bounce in @p?
 * pool_usable, short for the usual device (no bus offset): never another
 * device's restricted pool, and all of @p within reach. @express: @dev is
 * known to have no bus offset (dmm__dev_express). */
static inline __attribute__((always_inline)) bool pool_reachable(const struct tlb_pool *p, struct dmm_device *dev,
								 bool express)
{
	if (express || __builtin_expect(dev->desc.bus_offset == 0, 1))
		return !p->restricted && p->base >= dev->lim[0].lo && p->base + p->bytes - 1 < dev->lim[0].hi;
	return pool_usable(p, dev);
}

/* pool_reachable for a pool known not to be restricted. */
static inline __attribute__((always_inline)) bool pool_in_reach(const struct tlb_pool *p, struct dmm_device *dev,
								bool express)
{
	if (express || __builtin_expect(dev->desc.bus_offset == 0, 1))
		return p->base >= dev->lim[0].lo && p->base + p->bytes - 1 < dev->lim[0].hi;
	return pool_usable(p, dev);
}

/*
 * The short paths: a device with neither IOMMU, dma-ranges, restricted
 * pool nor untrusted mark, a counter block of each CPU's own, a mapping of
 * one or two slots, a run in this CPU's cache of the first pool it may use
 * (map) or a mapping of a cached pool (unmap); the callers have ruled out
 * an IOMMU and dma-ranges. One section, with plain loads and stores (the
 * map's copy after it). Their bodies say SHORT_NONE for "not this case":
 * the caller takes the general path, which handles every case.
 *
 * Each body has two forms. The long one (@quick false) does all of the
 * above. The quick one serves the express device (dmm__dev_express) on a
 * thread that owns its CPU slot, and calls no function but in tail
 * position, so that neither it nor its callers need a stack frame: what
 * would need a call (entering the section the long way, giving half a
 * full cache back, raising the low-memory peak, copying back at unmap, a
 * RAM check over several pages) it leaves to the long form, saying
 * SHORT_LONG before it has changed anything.
 */
enum { SHORT_DONE, SHORT_NONE, SHORT_LONG, SHORT_DIRECT };

/* Enter the short paths' section: the thread's own slot (@quick), or any
 * way. false: not entered (@quick only). */
static inline __attribute__((always_inline)) bool short_enter(struct dmm_mem *mem, bool quick,
							      struct dmm_cpu_thread **rp, unsigned *cpu)
{
	if (quick) {
		if (!dmm__cpu_try_enter(mem, rp))
			return false;
		*cpu = (*rp)->cpu;
		return true;
	}
	*cpu = dmm__cpu_enter_r(mem, rp);
	return true;
}

static inline __attribute__((always_inline)) void short_exit(struct dmm_mem *mem, bool quick,
							     struct dmm_cpu_thread *r, unsigned cpu)
{
	if (quick)
		dmm__cpu_leave(r);
	else
		dmm__cpu_exit_r(mem, r, cpu);
}

/* Map [pa, pa + size) through a cached run: SHORT_DONE and *@bp, the bounce
 * address (the copy is the caller's, after the section), or SHORT_NONE, or
 * (@quick) SHORT_LONG. */
static inline __attribute__((always_inline)) int map_short(struct dmm_device *dev, dmm_phys_t pa, size_t size,
							   enum dmm_dma_dir dir, bool quick, dmm_phys_t *bp)
{
	struct dmm_mem *mem = dev->mem;
	struct dmm_swiotlb *t = tlb_of(mem);
	const struct tlb_index *x;
	struct dmm_cpu_thread *r;
	struct dmm_dev_pcpu *dp;
	struct tlb_pool *p;
	struct tlb_cpu *pc;
	uint64_t off, low;
	unsigned cpu;
	uint32_t n;
	int64_t s;
	int ret = SHORT_NONE;

	/* (an express device is never untrusted) */
	if (!t || dev->restricted_pool || (!quick && dev->desc.untrusted))
		return SHORT_NONE;
	n = slots_for(t, pa, size, 0, &off);
	if (n > TLB_CACHE_LEN)
		return SHORT_NONE;
	if (!short_enter(mem, quick, &r, &cpu))
		return SHORT_LONG;
	x = index_get(t);
	dp = &dev->pcpu[cpu];
	/* the first pool with run caches that @dev may use (the lowest): the
	 * index's cached pool (never a restricted one) when @dev reaches it,
	 * as it usually does */
	p = x->cached;
	if (__builtin_expect(!p || !pool_in_reach(p, dev, quick), 0)) {
		for (uint32_t i = 0;; i++) {
			if (i == x->n)
				goto out;
			p = x->pool[i];
			if (p->cpus && pool_reachable(p, dev, quick))
				break;
		}
	}
	/* none cached, or none keeping the offset: the general path */
	pc = &p->cpus[cpu];
	if (__builtin_expect((s = cache_peek(t, p, pc, n, pa)) < 0, 0))
		goto out;
	low = run_low(t, p, (uint32_t)s, n);
	if (quick && low &&
	    (int64_t)(__atomic_load_n(&dp->low_bounce, __ATOMIC_RELAXED) + low) >
		    (int64_t)__atomic_load_n(&dp->low_bounce_hw, __ATOMIC_RELAXED)) {
		ret = SHORT_LONG; /* a new peak to raise (dmm__dev_low_bounce_own) */
		goto out;
	}
	cache_commit(p, pc, (uint32_t)s, n, copy_in_bytes(dir, size));
	*bp = record_map(t, p, (uint32_t)s, pa, size, n, off, dev);
	/* the device's counters, in its block of this CPU (count_map's) */
	dmm__pcpu_add(&dp->bounced_maps, 1);
	if (quick) /* no new peak: checked above */
		dmm__pcpu_add(&dp->low_bounce, low);
	else
		dmm__dev_low_bounce_own(dev, dp, (int64_t)low);
	dmm__pcpu_add(&dp->maps, 1);
	dmm__pcpu_add(&dp->map_bytes, size);
	ret = SHORT_DONE;
out:
	short_exit(mem, quick, r, cpu);
	return ret;
}

/* Copy [src, src + len) to @dst (RAM) and return @dst: the copy after a
 * quick map, as a tail call. copy_to is dmm__phys_copy's linear-map case,
 * copy_to_any the rest. */
static __attribute__((noinline)) dmm_phys_t copy_to_any(struct dmm_mem *mem, dmm_phys_t dst, dmm_phys_t src,
							 size_t len)
{
	dmm__phys_copy(mem, dst, src, len);
	return dst;
}

static __attribute__((noinline)) dmm_phys_t copy_to(struct dmm_mem *mem, dmm_phys_t dst, dmm_phys_t src, size_t len)
{
	const struct dmm_platform *pl = &mem->plat;
	uint64_t od = dst - pl->linear_phys, os = src - pl->linear_phys;

	if (__builtin_expect(pl->phys_copy || od >= pl->linear_size || os >= pl->linear_size, 0))
		return copy_to_any(mem, dst, src, len);
	dmm__copy(mem->copy_wide, pl->linear_virt + od, pl->linear_virt + os, len);
	return dst;
}

dmm_dma_addr_t dmm__swiotlb_map_fast(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir)
{
	dmm_phys_t b;

	if (map_short(dev, pa, size, dir, false, &b) != SHORT_DONE)
		return DMM_DMA_MAPPING_ERROR;
	/* the slots are this mapping's now (nothing frees them before its
	 * unmap): the copy runs outside the section */
	if (copy_in_bytes(dir, size))
		dmm__phys_copy(dev->mem, b, pa, size);
	return dmm__bus_of(dev, b); /* the pool is reachable: no wrap */
}

/* The express map's long form (map_short's SHORT_LONG). */
static __attribute__((noinline)) dmm_dma_addr_t map_express_long(struct dmm_device *dev, dmm_phys_t pa, size_t size,
								  enum dmm_dma_dir dir, const void *site)
{
	dmm_dma_addr_t bus = dmm__swiotlb_map_fast(dev, pa, size, dir);

	if (bus != DMM_DMA_MAPPING_ERROR)
		return bus;
	return dmm__dma_map_general(dev, pa, size, dir, site);
}

dmm_dma_addr_t dmm__swiotlb_map_express(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir,
					const void *site)
{
	dmm_phys_t b;
	int how = map_short(dev, pa, size, dir, true, &b);

	/* an express device's bus addresses are its physical ones */
	if (__builtin_expect(how == SHORT_DONE, 1))
		return copy_in_bytes(dir, size) ? copy_to(dev->mem, b, pa, size) : b;
	if (how == SHORT_LONG)
		return map_express_long(dev, pa, size, dir, site);
	return dmm__dma_map_general(dev, pa, size, dir, site);
}

/* Copy back as @dir needs and release the device's low-memory count for
 * the mapping whose record is @f, slot @first of @p, in a section of @cpu.
 * @tlb_pa is the mapping's start (record_start). The bytes copied back. */
static inline __attribute__((always_inline)) size_t unmap_back(struct dmm_device *dev, struct dmm_swiotlb *t,
							       struct tlb_pool *p, struct tlb_slot *f, uint32_t first,
							       dmm_phys_t tlb_pa, size_t size, enum dmm_dma_dir dir,
							       unsigned cpu)
{
	uint64_t low = run_low(t, p, first, f->nslots);
	size_t back = 0;

	if (dir == DMM_DMA_FROM_DEVICE || dir == DMM_DMA_BIDIRECTIONAL) {
		back = size < f->size ? size : f->size;
		dmm__phys_copy(dev->mem, f->orig, tlb_pa, back);
	}
	/* (giving back never raises the peak) */
	dmm__pcpu_add(&dev->pcpu[cpu].low_bounce, -low);
	return back;
}

/* unmap_back, then the slots freed, or cached when @may_cache. */
static inline void unmap_record(struct dmm_device *dev, struct dmm_swiotlb *t, struct tlb_pool *p, struct tlb_slot *f,
				uint32_t first, dmm_phys_t tlb_pa, size_t size, enum dmm_dma_dir dir, unsigned cpu,
				bool may_cache)
{
	uint32_t n = f->nslots;
	size_t back = unmap_back(dev, t, p, f, first, tlb_pa, size, dir, cpu);

	if (n <= TLB_CACHE_LEN && p->cpus && may_cache) {
		cache_put(t, p, &p->cpus[cpu], first, n, back, false);
	} else {
		struct tlb_area *ar = area_of(p, first);
		dmm__lock(dev->mem, &ar->lock);
		area_put(t, p, ar, first, n);
		ar->unmaps++;
		ar->from_device += back;
		dmm__unlock(dev->mem, &ar->lock);
		if (p->transient && pool_used(p) == 0)
			__atomic_store_n(&p->idle_since, idle_stamp(dmm__now(dev->mem)), __ATOMIC_RELAXED);
	}
}

/* Unmap @pa: SHORT_DONE (a bounce mapping: then unmap_short_after),
 * SHORT_DIRECT (@direct: an express device's direct mapping, counted),
 * SHORT_NONE, or (@quick) SHORT_LONG. */
static inline __attribute__((always_inline)) int unmap_short(struct dmm_device *dev, dmm_phys_t pa, size_t size,
							     enum dmm_dma_dir dir, bool direct, bool quick)
{
	struct dmm_mem *mem = dev->mem;
	struct dmm_swiotlb *t = tlb_of(mem);
	struct dmm_dev_pcpu *dp;
	struct tlb_pool *p;
	struct dmm_cpu_thread *r;
	struct tlb_slot *f;
	unsigned cpu;
	uint64_t at;
	uint32_t s, n;
	int ret = SHORT_NONE;

	if (!t && !direct)
		return SHORT_NONE;
	if (quick && (dir == DMM_DMA_FROM_DEVICE || dir == DMM_DMA_BIDIRECTIONAL))
		return SHORT_LONG; /* a copy back */
	if (!short_enter(mem, quick, &r, &cpu))
		return SHORT_LONG;
	dp = &dev->pcpu[cpu];
	p = t ? index_search_cached(index_get(t), pa) : (struct tlb_pool *)0;
	if (!p) {
		/* an express device's direct mapping: nothing to copy or
		 * to maintain, only the count (RAM, as the general path
		 * checks) */
		if (!direct)
			goto out;
		if (quick && dmm_phys_to_pfn(pa) != dmm_phys_to_pfn(pa + size - 1)) {
			ret = SHORT_LONG; /* dmm__is_ram_span */
			goto out;
		}
		if (!dmm__is_ram_fast(mem, pa, size))
			goto out;
		dmm__pcpu_add(&dp->unmaps, 1);
		ret = SHORT_DIRECT;
		goto out;
	}
	if (__builtin_expect(!p->cpus || __atomic_load_n(&t->nr_deferred, __ATOMIC_RELAXED), 0))
		goto out;
	/* only the address the map returned unmaps (the general path refuses
	 * and counts any other): lookup and record_start, short. That address
	 * lies in its mapping's first slot (the offset kept is below a slot),
	 * so its slot must be a mapping's first, at that offset, of one or
	 * two slots (0: a record a map on another CPU is still writing, seen
	 * only by a second unmap racing it). */
	at = pa - p->base;
	s = (uint32_t)(at >> t->slot_shift);
	f = &p->slots[s];
	if (__builtin_expect(f->used != SLOT_MAPPED || f->first != s || f->nslots - 1u >= TLB_CACHE_LEN ||
				     (at & (t->slot_size - 1)) != f->off || f->dev != dev->tlb_tag,
			     0))
		goto out;
	if (quick && __builtin_expect(p->cpus[cpu].n[f->nslots - 1] == TLB_CACHE_RUNS, 0)) {
		ret = SHORT_LONG; /* half the cache goes back to the areas */
		goto out;
	}
	/* to this CPU's cache (nr_deferred was 0) */
	n = f->nslots;
	cache_put(t, p, &p->cpus[cpu], s, n, unmap_back(dev, t, p, f, s, pa, size, dir, cpu), quick);
	dmm__pcpu_add(&dp->unmaps, 1);
	ret = SHORT_DONE;
out:
	short_exit(mem, quick, r, cpu);
	return ret;
}

/* After a bounce unmap, out of the section: does a deferred mapping wait
 * for slots, or may an idle transient pool be due back
 * (dmm__swiotlb_unmap_done)? */
static inline bool unmap_short_after(const struct dmm_mem *mem)
{
	const struct dmm_swiotlb *t = tlb_of(mem);

	return __builtin_expect(__atomic_load_n(&t->nr_deferred, __ATOMIC_RELAXED) |
					__atomic_load_n(&t->nr_transient, __ATOMIC_RELAXED),
				0);
}

int dmm__swiotlb_unmap_fast(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir, bool direct)
{
	switch (unmap_short(dev, pa, size, dir, direct, false)) {
	case SHORT_DONE:
		if (unmap_short_after(dev->mem))
			dmm__swiotlb_unmap_done(dev->mem);
		return 1;
	case SHORT_DIRECT:
		return 1;
	default:
		return 0;
	}
}

/* The express unmap's long form (unmap_short's SHORT_LONG). */
static __attribute__((noinline)) void unmap_express_long(struct dmm_device *dev, dmm_dma_addr_t dma, size_t size,
							 enum dmm_dma_dir dir, const void *site)
{
	if (!dmm__swiotlb_unmap_fast(dev, dma, size, dir, true))
		dmm__dma_unmap_general(dev, dma, size, dir, site, true);
}

void dmm__swiotlb_unmap_express(struct dmm_device *dev, dmm_dma_addr_t dma, size_t size, enum dmm_dma_dir dir,
				const void *site)
{
	/* (a direction other than the four copies nothing, as DMM_DMA_NONE) */
	switch (unmap_short(dev, dma, size, dir, true, true)) {
	case SHORT_DONE:
		if (unmap_short_after(dev->mem))
			dmm__swiotlb_unmap_done(dev->mem);
		return;
	case SHORT_DIRECT:
		return;
	case SHORT_LONG:
		unmap_express_long(dev, dma, size, dir, site);
		return;
	default:
		dmm__dma_unmap_general(dev, dma, size, dir, site, true);
		return;
	}
}

int dmm__swiotlb_unmap_in(struct dmm_device *dev, struct tlb_pool *pool, dmm_phys_t tlb_pa, size_t size,
			  enum dmm_dma_dir dir, unsigned cpu)
{
	struct dmm_swiotlb *t = tlb_of(dev->mem);
	struct tlb_pool *p;
	struct tlb_slot *f;

	if (!t || !(p = pool ? pool : index_search_cached(index_get(t), tlb_pa)))
		return 0;
	if (!(f = lookup(t, p, tlb_pa, &p)))
		return -2; /* no mapping there: ended already (refused) */
	if (f->dev != dev->tlb_tag)
		return 0; /* another device's: no bounce mapping of @dev */
	if (tlb_pa != record_start(t, p, f)) {
		/* inside a mapping, not its start: refused, nothing copied or freed */
		dmm__count_invalid(dev->mem);
		dmm__dstat(&dev->st.fail_invalid, 1);
		return -1;
	}
	/* stale lines dropped before the copy back, over the bytes it copies:
	 * a larger size must not drop the lines of the mapping after this one */
	if (dir == DMM_DMA_FROM_DEVICE || dir == DMM_DMA_BIDIRECTIONAL)
		dmm__dma_for_cpu(dev, tlb_pa, size < f->size ? size : f->size, dir);
	unmap_record(dev, t, p, f, (uint32_t)(f - p->slots), tlb_pa, size, dir, cpu,
		     !__atomic_load_n(&t->nr_deferred, __ATOMIC_RELAXED));
	return 1;
}

int dmm__swiotlb_cancel_in(struct dmm_device *dev, dmm_phys_t tlb_pa, enum dmm_dma_dir dir, unsigned cpu)
{
	struct dmm_swiotlb *t = tlb_of(dev->mem);
	struct tlb_pool *p;
	struct tlb_slot *f;
	struct tlb_area *ar;
	uint32_t first, n;
	uint64_t in;

	if (!t || !(p = index_search_cached(index_get(t), tlb_pa)) || !(f = lookup(t, p, tlb_pa, &p)) ||
	    f->dev != dev->tlb_tag || tlb_pa != record_start(t, p, f))
		return 0;
	first = (uint32_t)(f - p->slots);
	n = f->nslots;
	in = copy_in_bytes(dir, f->size);
	dmm__pcpu_add(&dev->pcpu[cpu].low_bounce, -run_low(t, p, first, n));
	dmm__dstat_in(dev, cpu, offsetof(struct dmm_dev_pcpu, bounced_maps), (uint64_t)-1);
	ar = area_of(p, first);
	dmm__lock(dev->mem, &ar->lock);
	area_put(t, p, ar, first, n);
	/* the map counted itself here or in a CPU's cache of the pool:
	 * taken off the area either way (only the sums are read) */
	ar->maps--;
	ar->to_device -= in;
	dmm__unlock(dev->mem, &ar->lock);
	if (p->transient && pool_used(p) == 0)
		__atomic_store_n(&p->idle_since, idle_stamp(dmm__now(dev->mem)), __ATOMIC_RELAXED);
	return 1;
}

void dmm__swiotlb_cancel(struct dmm_device *dev, dmm_phys_t tlb_pa, enum dmm_dma_dir dir)
{
	unsigned cpu = dmm__cpu_enter(dev->mem);
	int done = dmm__swiotlb_cancel_in(dev, tlb_pa, dir, cpu);

	dmm__cpu_exit(dev->mem, cpu);
	if (done)
		dmm__swiotlb_unmap_done(dev->mem);
}

/* (never inlined: the express unmap calls it as a tail call) */
__attribute__((noinline)) void dmm__swiotlb_unmap_done(struct dmm_mem *mem)
{
	struct dmm_swiotlb *t = tlb_of(mem);

	if (__atomic_load_n(&t->nr_deferred, __ATOMIC_RELAXED))
		serve_deferred(t);
	if (__atomic_load_n(&t->nr_transient, __ATOMIC_RELAXED))
		dmm_swiotlb_trim(mem);
}

/* Copy back as the direction needs and free the slots of @tlb_pa's mapping. */
void dmm__swiotlb_unmap(struct dmm_device *dev, struct tlb_pool *pool, dmm_phys_t tlb_pa, size_t size,
			enum dmm_dma_dir dir)
{
	unsigned cpu = dmm__cpu_enter(dev->mem);
	int done = dmm__swiotlb_unmap_in(dev, pool, tlb_pa, size, dir, cpu);

	dmm__cpu_exit(dev->mem, cpu);
	if (done > 0)
		dmm__swiotlb_unmap_done(dev->mem);
}

/* Mark @p dying if none of its slots is in use (mapped, or parked in a
 * CPU's cache: a cached run counts as used in its area, so a pool with
 * cached runs is never retired), all its area locks held so that no take
 * is half done; from then on every take path refuses it. Pool lock held.
 * true if @p is dying now. */
static bool pool_retire(struct dmm_swiotlb *t, struct tlb_pool *p)
{
	bool unused = true;

	for (uint32_t a = 0; a < p->nr_areas; a++)
		dmm__lock(t->mem, &p->areas[a].lock);
	for (uint32_t a = 0; a < p->nr_areas; a++)
		if (p->areas[a].used)
			unused = false;
	if (unused)
		__atomic_store_n(&p->dying, 1, __ATOMIC_RELAXED);
	for (uint32_t a = p->nr_areas; a-- > 0;)
		dmm__unlock(t->mem, &p->areas[a].lock);
	return unused;
}

void dmm_swiotlb_trim(struct dmm_mem *mem)
{
	struct dmm_swiotlb *t = mem ? tlb_of(mem) : (struct dmm_swiotlb *)0;
	struct tlb_pool *gone[MAX_POOLS];
	uint32_t ngone = 0;
	uint64_t now;

	if (!t)
		return;
	dmm__lock(mem, &t->lock);
	/* read under the lock: a trim that waited for it must not use a time
	 * older than the idle marks set meanwhile; a mark later than @now
	 * (another CPU's clock reading) is not due yet */
	now = dmm__now(mem);
	for (uint32_t i = 0; i < t->nr_pools;) {
		struct tlb_pool *p = t->pools[i];
		uint64_t idle = __atomic_load_n(&p->idle_since, __ATOMIC_RELAXED);
		if (p->transient && idle && now >= idle && now - idle >= t->o.transient_idle_ns &&
		    pool_retire(t, p)) {
			t->pools[i] = t->pools[--t->nr_pools];
			gone[ngone++] = p;
			continue;
		}
		i++;
	}
	if (ngone) {
		index_publish(t);
		dmm__cpu_sync_all(mem); /* no section can still see the pools */
		for (uint32_t i = 0; i < ngone; i++) {
			struct tlb_pool *p = gone[i];
			__atomic_store_n(&t->total_bytes, t->total_bytes - p->bytes, __ATOMIC_RELAXED);
			/* its counters join the totals while the pool lock still
			 * keeps dmm_swiotlb_get_stats() out */
			for (uint32_t a = 0; a < p->nr_areas; a++) {
				sadd(&t->st.maps, p->areas[a].maps);
				sadd(&t->st.unmaps, p->areas[a].unmaps);
				sadd(&t->st.bounced_to_device, p->areas[a].to_device);
				sadd(&t->st.bounced_from_device, p->areas[a].from_device);
			}
		}
	}
	dmm__unlock(mem, &t->lock);
	for (uint32_t i = 0; i < ngone; i++) {
		pool_destroy(t, gone[i]);
		__atomic_fetch_sub(&t->nr_transient, 1, __ATOMIC_RELAXED);
		sadd(&t->st.transient_released, 1);
	}
	/* the pools gone leave room under max_bytes: a deferred request
	 * waiting for a transient pool of its own may fit now, and no unmap
	 * may come to say so */
	if (ngone && __atomic_load_n(&t->nr_deferred, __ATOMIC_ACQUIRE))
		serve_deferred(t);
}

/* ---- deferred mappings --------------------------------------------------------------- */

/* Could a bounce of [pa, pa + size) for @dev (no IOMMU) ever be made: an
 * area of a pool it may use has the slots, or a transient pool could be
 * added for it (pools other than transient ones never go away, so they
 * bound the room left under max_bytes). Pool lock held. */
static bool deferred_may_fit(const struct dmm_swiotlb *t, struct dmm_device *dev, dmm_phys_t pa, size_t size)
{
	uint64_t off, fixed = 0;
	uint32_t n = slots_for(t, pa, size, 0, &off);

	for (uint32_t i = 0; i < t->nr_pools; i++) {
		const struct tlb_pool *p = t->pools[i];
		if (!p->transient)
			fixed += p->bytes;
		if (dev->restricted_pool ? p != dev->restricted_pool : !pool_usable(p, dev))
			continue;
		for (uint32_t a = 0; a < p->nr_areas; a++)
			if (p->areas[a].n >= n)
				return true;
	}
	if (dev->restricted_pool || t->o.no_transient)
		return false;
	return fixed + dmm_align_up(transient_need(t, n, 0), DMM_PAGE_SIZE) <= t->o.max_bytes;
}

/* Has @dev requests in the queue (waiting, being retried or completing)? */
static bool deferred_waiting(struct dmm_swiotlb *t, const struct dmm_device *dev)
{
	bool found = false;

	if (!__atomic_load_n(&t->nr_deferred, __ATOMIC_ACQUIRE))
		return false;
	dmm__lock(t->mem, &t->lock);
	for (uint32_t i = 0; i < t->nr_deferred && !found; i++)
		found = t->deferred[i].dev == dev;
	dmm__unlock(t->mem, &t->lock);
	return found;
}

/* ---- devices going away ------------------------------------------------------------ */

struct tag_arg {
	struct dmm_swiotlb *t;
	uint16_t tag;
	bool found;
};

/* Is there a live mapping record carrying the tag (every CPU held, the
 * pool lock held)? */
static void tag_scan(void *arg)
{
	struct tag_arg *ta = arg;
	struct dmm_swiotlb *t = ta->t;

	for (uint32_t i = 0; i < t->nr_pools && !ta->found; i++) {
		struct tlb_pool *p = t->pools[i];
		for (uint32_t a = 0; a < p->nr_areas; a++)
			dmm__lock(t->mem, &p->areas[a].lock);
		for (uint32_t s = 0; s < p->nslots && !ta->found; s++) {
			const struct tlb_slot *sl = &p->slots[s];
			ta->found = sl->used == SLOT_MAPPED && sl->first == s && sl->dev == ta->tag;
		}
		for (uint32_t a = p->nr_areas; a-- > 0;)
			dmm__unlock(t->mem, &p->areas[a].lock);
	}
}

/* The restricted pool @p of a device being destroyed, which left no
 * mapping in it: its CPUs' cached runs back to the areas, then retired,
 * unpublished and (after a grace period) taken out of the set, its
 * counters joining the totals. false (nothing changed but the caches) if
 * a slot is still in use. Pool lock held; the caller frees @p after it. */
static bool restricted_release(struct dmm_swiotlb *t, struct tlb_pool *p)
{
	struct dmm_mem *mem = t->mem;
	struct drain_arg d = { t, p, 0 };
	uint32_t i;

	for (d.cpu = 0; d.cpu < mem->plat.nr_cpus; d.cpu++)
		dmm__cpu_sync(mem, d.cpu, drain_cpu, &d);
	if (!pool_retire(t, p))
		return false;
	for (i = 0; t->pools[i] != p; i++)
		;
	t->pools[i] = t->pools[--t->nr_pools];
	index_publish(t);
	dmm__cpu_sync_all(mem); /* no section can still see the pool */
	__atomic_store_n(&t->total_bytes, t->total_bytes - p->bytes, __ATOMIC_RELAXED);
	__atomic_fetch_sub(&t->st.restricted_pools, 1, __ATOMIC_RELAXED);
	for (uint32_t a = 0; a < p->nr_areas; a++) {
		sadd(&t->st.maps, p->areas[a].maps);
		sadd(&t->st.unmaps, p->areas[a].unmaps);
		sadd(&t->st.bounced_to_device, p->areas[a].to_device);
		sadd(&t->st.bounced_from_device, p->areas[a].from_device);
	}
	for (unsigned c = 0; c < mem->plat.nr_cpus; c++) {
		sadd(&t->st.maps, p->cpus[c].maps);
		sadd(&t->st.unmaps, p->cpus[c].unmaps);
		sadd(&t->st.bounced_to_device, p->cpus[c].to_device);
		sadd(&t->st.bounced_from_device, p->cpus[c].from_device);
	}
	return true;
}

int dmm__swiotlb_device_gone(struct dmm_device *dev)
{
	struct dmm_swiotlb *t = tlb_of(dev->mem);
	struct tlb_pool *p = dev->restricted_pool, *gone = (struct tlb_pool *)0;
	struct tag_arg ta;

	if (!t)
		return 0;
	ta.t = t;
	ta.tag = dev->tlb_tag;
	ta.found = false;
	dmm__lock(dev->mem, &t->lock);
	dmm__cpu_hold_all(dev->mem, tag_scan, &ta);
	/* the device's restricted pool goes with it; one that still holds
	 * its leaked mappings stays, no device's (pool_usable) */
	if (p && !ta.found && restricted_release(t, p))
		gone = p;
	else if (p)
		__atomic_store_n(&p->dev, (struct dmm_device *)0, __ATOMIC_RELAXED);
	dev->restricted_pool = (struct tlb_pool *)0;
	dmm__unlock(dev->mem, &t->lock);
	if (gone)
		pool_destroy(t, gone);
	return ta.found;
}

int dmm__swiotlb_device_busy(struct dmm_device *dev)
{
	struct dmm_swiotlb *t = tlb_of(dev->mem);

	return t && deferred_waiting(t, dev);
}

/* A deferred request of @dev fails for good for want of the room its
 * tries noted in @w (while it could wait, they counted nothing): counted
 * now, once, as a map that failed. */
static void deferred_failed(struct dmm_swiotlb *t, struct dmm_device *dev, const struct dmm__map_wait *w)
{
	if (w->bounce_full && t)
		count_full(t, dev);
	if (w->iova_full)
		dmm__iommu_count_iova_full(dev);
	__atomic_store_n(&dev->last_error, -DMM_ENOSPC, __ATOMIC_RELAXED);
}

/* A deferred request of @dev that no pool it may use could ever hold:
 * refused, and counted once, as an invalid call (not as "bounce buffer
 * full": no room would ever make it fit). -DMM_EINVAL. */
static int deferred_never(struct dmm_device *dev)
{
	__atomic_store_n(&dev->last_error, -DMM_EINVAL, __ATOMIC_RELAXED);
	dmm__dstat(&dev->st.fail_invalid, 1);
	return dmm__count_invalid(dev->mem);
}

int dmm_dma_map_phys_deferred(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir,
			      dmm_dma_map_cb cb, void *arg)
{
	struct dmm__map_wait w = { false, false };
	struct dmm_swiotlb *t;
	dmm_dma_addr_t dma;
	bool tried;
	int err;

	if (!dev || !cb)
		return dmm__count_invalid(dev ? dev->mem : (struct dmm_mem *)0);
	t = tlb_of(dev->mem);
	/* a device's requests complete in order: while it has some waiting,
	 * this one waits behind them (untried: whether it must bounce at
	 * all, and whether it could ever fit, is found when it is tried) */
	tried = !t || !deferred_waiting(t, dev);
	if (tried) {
		/* finding no room is no failure of a request that may wait:
		 * noted in w, counted only if it cannot wait */
		err = dmm__dma_map_wait(dev, pa, size, dir, &w, &dma);
		if (err != -DMM_ENOSPC || !t) {
			if (err == -DMM_ENOSPC)
				deferred_failed(t, dev, &w); /* no bounce buffers: nothing to wait for */
			cb(arg, dma, err);
			return 0;
		}
	}
	dmm__lock(dev->mem, &t->lock);
	if (tried && !dmm__iommu_translating(dev) && !deferred_may_fit(t, dev, pa, size)) {
		dmm__unlock(dev->mem, &t->lock);
		return deferred_never(dev);
	}
	if (t->nr_deferred == MAX_DEFERRED) {
		dmm__unlock(dev->mem, &t->lock);
		if (tried)
			deferred_failed(t, dev, &w);
		return -DMM_ENOSPC;
	}
	t->deferred[t->nr_deferred].dev = dev;
	t->deferred[t->nr_deferred].pa = pa;
	t->deferred[t->nr_deferred].size = size;
	t->deferred[t->nr_deferred].dir = dir;
	t->deferred[t->nr_deferred].cb = cb;
	t->deferred[t->nr_deferred].arg = arg;
	t->deferred[t->nr_deferred].seq = ++t->deferred_seq;
	t->deferred[t->nr_deferred].busy = 0;
	__atomic_store_n(&t->nr_deferred, t->nr_deferred + 1, __ATOMIC_SEQ_CST);
	dmm__unlock(dev->mem, &t->lock);
	sadd(&t->st.deferred_queued, 1);
	/*
	 * An unmap between the failed attempt and the queueing freed slots
	 * without seeing the request: try once more. Either this retry sees
	 * the freed slots or that unmap sees the request (and serves it). The
	 * retry takes the lock of every area it searches (and, before it gives
	 * up, every CPU's cached runs through a CPU sync) after the store
	 * above, and an unmap reads nr_deferred after it released that area's
	 * lock (or its CPU section, for a run it parked): whichever comes
	 * second sees the other's writes. The fence orders the store before
	 * the retry's reads on its own.
	 */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	serve_deferred(t);
	return 0;
}

/* The queue slot of request @seq, which is queued (pool lock held). */
static uint32_t deferred_find(const struct dmm_swiotlb *t, uint64_t seq)
{
	uint32_t i = 0;

	while (t->deferred[i].seq != seq)
		i++;
	return i;
}

/* Drop queued request @i, keeping the order of the others (pool lock held). */
static void deferred_remove(struct dmm_swiotlb *t, uint32_t i)
{
	for (uint32_t k = i + 1; k < t->nr_deferred; k++)
		t->deferred[k - 1] = t->deferred[k];
	__atomic_store_n(&t->nr_deferred, t->nr_deferred - 1, __ATOMIC_SEQ_CST);
}

/* The first queued request after @cursor that may be retried now: not
 * being retried, and its device's first in the queue (a device's requests
 * complete in the order they were queued); nr_deferred if none. Pool lock
 * held. */
static uint32_t deferred_next(const struct dmm_swiotlb *t, uint64_t cursor)
{
	for (uint32_t i = 0; i < t->nr_deferred; i++) {
		const struct tlb_deferred *e = &t->deferred[i];
		uint32_t k;
		if (e->seq <= cursor || e->busy)
			continue;
		for (k = 0; k < i && t->deferred[k].dev != e->dev; k++)
			;
		if (k == i)
			return i;
	}
	return t->nr_deferred;
}

/*
 * Retry the queued requests, in queueing order (at an unmap, and once more
 * after queueing one). One that still finds no room stays where it is and
 * the later ones are tried all the same: one device's full restricted pool
 * holds up no other device (but that device's later requests). A request
 * being retried stays in the queue (busy), so it keeps its place and its
 * slot: a request queued meanwhile finds the queue as full as it is, and a
 * retry never needs room to put its request back. The callback runs
 * without the pool lock, its request still queued until it returns.
 */
static void serve_deferred(struct dmm_swiotlb *t)
{
	uint64_t cursor = 0; /* the last request tried in this pass */
	uint64_t calls;
	uint32_t i;

	dmm__lock(t->mem, &t->lock);
	calls = ++t->deferred_calls;
	for (;;) {
		struct dmm__map_wait w = { false, false };
		struct tlb_deferred d;
		dmm_dma_addr_t dma;
		int err;

		i = deferred_next(t, cursor);
		if (i == t->nr_deferred) {
			/* another call came meanwhile: it skipped the requests
			 * this one was retrying (and their devices' later ones),
			 * maybe for slots freed after the retry looked; one more
			 * pass */
			if (t->deferred_calls == calls)
				break;
			calls = t->deferred_calls;
			cursor = 0;
			continue;
		}
		t->deferred[i].busy = 1;
		d = t->deferred[i];
		cursor = d.seq;
		dmm__unlock(t->mem, &t->lock);
		err = dmm__dma_map_wait(d.dev, d.pa, d.size, d.dir, &w, &dma);
		dmm__lock(t->mem, &t->lock);
		if (err == -DMM_ENOSPC && (dmm__iommu_translating(d.dev) || deferred_may_fit(t, d.dev, d.pa, d.size))) {
			/* still no room: it keeps its place (no failure:
			 * nothing counted) */
			t->deferred[deferred_find(t, d.seq)].busy = 0;
			continue;
		}
		if (err == -DMM_ENOSPC) {
			/* no pool could ever hold it: it fails, and the device's
			 * later requests go on */
			err = deferred_never(d.dev);
		}
		/* the callback runs with the request still queued (busy), so
		 * the device's next request cannot complete before it */
		dmm__unlock(t->mem, &t->lock);
		sadd(&t->st.deferred_done, 1);
		d.cb(d.arg, dma, err);
		dmm__lock(t->mem, &t->lock);
		deferred_remove(t, deferred_find(t, d.seq));
	}
	dmm__unlock(t->mem, &t->lock);
}

/* ---- statistics and checks -------------------------------------------------------------- */

void dmm_swiotlb_get_stats(struct dmm_mem *mem, struct dmm_swiotlb_stats *st)
{
	struct dmm_swiotlb *t = mem ? tlb_of(mem) : (struct dmm_swiotlb *)0;
	const uint64_t *src;
	uint64_t *dst;

	if (!st)
		return;
	dmm_memset(st, 0, sizeof(*st));
	if (!t)
		return;
	/* under the pool lock: a released pool's counters move into t->st
	 * under it too, so each is counted once */
	dmm__lock(mem, &t->lock);
	src = (const uint64_t *)&t->st;
	dst = (uint64_t *)st;
	for (size_t i = 0; i < sizeof(*st) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
	st->pools = t->nr_pools;
	st->transient_pools = __atomic_load_n(&t->nr_transient, __ATOMIC_RELAXED);
	st->total_slots = 0;
	st->used_slots = 0;
	for (uint32_t i = 0; i < t->nr_pools; i++) {
		struct tlb_pool *p = t->pools[i];
		st->total_slots += p->nslots;
		st->used_slots += pool_used(p);
		for (unsigned c = 0; p->cpus && c < mem->plat.nr_cpus; c++) {
			const struct tlb_cpu *pc = &p->cpus[c];
			uint64_t cached = 0;
			for (uint32_t len = 1; len <= TLB_CACHE_LEN; len++)
				cached += (uint64_t)len * __atomic_load_n(&pc->n[len - 1], __ATOMIC_RELAXED);
			st->used_slots -= cached;
			st->cached_slots += cached;
			st->maps += __atomic_load_n(&pc->maps, __ATOMIC_RELAXED);
			st->unmaps += __atomic_load_n(&pc->unmaps, __ATOMIC_RELAXED);
			st->bounced_to_device += __atomic_load_n(&pc->to_device, __ATOMIC_RELAXED);
			st->bounced_from_device += __atomic_load_n(&pc->from_device, __ATOMIC_RELAXED);
		}
		for (uint32_t a = 0; a < p->nr_areas; a++) {
			dmm__lock(mem, &p->areas[a].lock);
			st->maps += p->areas[a].maps;
			st->unmaps += p->areas[a].unmaps;
			st->bounced_to_device += p->areas[a].to_device;
			st->bounced_from_device += p->areas[a].from_device;
			dmm__unlock(mem, &p->areas[a].lock);
		}
	}
	dmm__unlock(mem, &t->lock);
}

uint64_t dmm_swiotlb_device_failures(const struct dmm_device *dev)
{
	return dev ? __atomic_load_n(&dev->st.fail_bounce_full, __ATOMIC_RELAXED) : 0;
}

struct check_arg {
	struct dmm_swiotlb *t;
	int err;
};

/* One pool (its areas locked, every CPU held): slot states against the
 * mapping records, the areas' counts and the CPUs' caches. */
static int check_pool(struct dmm_swiotlb *t, struct tlb_pool *p)
{
	uint64_t cached_slots = 0, cached_runs = 0;

	if (p->dying) /* a dying pool leaves the set in the same pool-lock hold */
		return -DMM_EFAULT;
	for (uint32_t a = 0; a < p->nr_areas; a++) {
		struct tlb_area *ar = &p->areas[a];
		uint32_t aused = 0;
		for (uint32_t s = ar->start; s < ar->start + ar->n;) {
			struct tlb_slot *sl = &p->slots[s];
			if (sl->used == SLOT_FREE) {
				s++;
				continue;
			}
			if (sl->used > SLOT_CACHED || sl->first != s || !sl->nslots || s + sl->nslots > ar->start + ar->n ||
			    sl->off + sl->size > (uint64_t)sl->nslots * t->o.slot_size ||
			    (sl->used == SLOT_CACHED && (sl->size || !p->cpus)))
				return -DMM_EFAULT;
			for (uint32_t k = 1; k < sl->nslots; k++)
				if (p->slots[s + k].used != sl->used || p->slots[s + k].first != s)
					return -DMM_EFAULT;
			if (sl->used == SLOT_CACHED) {
				cached_slots += sl->nslots;
				cached_runs++;
			}
			aused += sl->nslots;
			s += sl->nslots;
		}
		if (aused != ar->used)
			return -DMM_EFAULT;
	}
	/* every CACHED run is in exactly one CPU's cache, under its length */
	for (unsigned c = 0; p->cpus && c < t->mem->plat.nr_cpus; c++) {
		const struct tlb_cpu *pc = &p->cpus[c];
		for (uint32_t len = 1; len <= TLB_CACHE_LEN; len++) {
			if (pc->n[len - 1] > TLB_CACHE_RUNS)
				return -DMM_EFAULT;
			for (uint32_t i = 0; i < pc->n[len - 1]; i++) {
				uint32_t f = pc->run[len - 1][i];
				if (f >= p->nslots || p->slots[f].used != SLOT_CACHED || p->slots[f].first != f ||
				    p->slots[f].nslots != len)
					return -DMM_EFAULT;
				cached_slots -= len;
				cached_runs--;
			}
		}
	}
	return cached_slots || cached_runs ? -DMM_EFAULT : 0;
}

static void check_all(void *arg)
{
	struct check_arg *ca = arg;
	struct dmm_swiotlb *t = ca->t;
	struct dmm_mem *mem = t->mem;
	const struct tlb_index *x = index_get(t);
	struct tlb_pool *lowest = (struct tlb_pool *)0;

	/* the cached pool is the lowest of the set with caches and no owner */
	for (uint32_t i = 0; i < t->nr_pools; i++) {
		struct tlb_pool *p = t->pools[i];
		if (p->cpus && !p->restricted && (!lowest || p->base < lowest->base))
			lowest = p;
	}
	if (x->n != t->nr_pools || x->cached != lowest)
		ca->err = -DMM_EFAULT;
	for (uint32_t i = 1; i < x->n && !ca->err; i++)
		if (x->pool[i - 1]->base + x->pool[i - 1]->bytes > x->pool[i]->base)
			ca->err = -DMM_EFAULT;
	for (uint32_t i = 0; i < t->nr_pools && !ca->err; i++) {
		struct tlb_pool *p = t->pools[i];
		for (uint32_t a = 0; a < p->nr_areas; a++)
			dmm__lock(mem, &p->areas[a].lock);
		ca->err = check_pool(t, p);
		for (uint32_t a = p->nr_areas; a-- > 0;)
			dmm__unlock(mem, &p->areas[a].lock);
		if (ca->err)
			dmm_log(mem, DMM_LOG_ERR, "swiotlb check: pool at %#llx inconsistent",
				(unsigned long long)p->base);
	}
}

int dmm_swiotlb_check(struct dmm_mem *mem)
{
	struct dmm_swiotlb *t = mem ? tlb_of(mem) : (struct dmm_swiotlb *)0;
	struct check_arg ca;

	if (!t)
		return mem ? 0 : -DMM_EINVAL;
	ca.t = t;
	ca.err = 0;
	dmm__lock(mem, &t->lock);
	dmm__cpu_hold_all(mem, check_all, &ca);
	dmm__unlock(mem, &t->lock);
	return ca.err;
}

/* SPDX-License-Identifier: MIT */
/*
 * Small-object allocator.
 *
 * Layout. Three sets of caches (any memory, below dma32_limit, below
 * dma_limit), each with one cache per size class. A cache owns slabs: blocks
 * of 2^order pages from the page allocator, cut into equal objects; free
 * objects of a slab form a list threaded through their first word. The
 * slab's head page descriptor carries the slab's state (the page allocator
 * is its only metadata store):
 *
 *     head->owner   = the cache        (every page of the slab: lookup from
 *     head->private = free-list head    any object in O(1))
 *     head->refcount= objects in use   (from the slab's point of view)
 *     flags         |= SLAB
 *
 * Slabs with free objects sit on the cache's partial list, full ones on its
 * full list (both threaded through the head descriptors), so the check can
 * walk them all; one empty slab is kept, further ones go back to the page
 * allocator. One whose page is pinned cannot go (the page allocator
 * refuses a pinned page, and the slab is claimed for the free before it is
 * taken apart): it stays on the partial list, whole, and is tried again
 * the next time it is empty. dmm_slab_shrink() empties every magazine and
 * every depot into the slabs and gives back every empty slab, the spares
 * too.
 *
 * Per-CPU magazines. Each cache has, per CPU, a magazine of up to mag_cap
 * free objects (16 KiB of them, 4..61: see MAG_BYTES), used only inside a
 * CPU-local section of that CPU (no lock, no atomic where the platform has
 * sections: see dmm__cpu_enter): allocation takes, free puts; the cache
 * lock is taken only to refill or drain half a magazine (mag_batch) at a
 * time. A magazine is a top slot and a stack (obj[], n of them): a free
 * fills the top slot if it is empty, else pushes on the stack; an
 * allocation empties the top slot if it is set, else pops the stack. So
 * an allocation and a free that alternate, the commonest pattern, pass
 * their object through the top slot and never touch n: no path loads a
 * count the other path just stored, nor stores where such a count points.
 * With a count on both paths the pair costs about a fifth more whenever
 * the size class changes from one pair to the next (the allocation's
 * loads depend on the last free of its class, which the CPU must guess
 * when the free just before was of another class; docs/BENCHMARKS.md has
 * the measurements). Refills, drains and the depot work on the stack; a
 * full magazine has the top slot set and a full stack. A magazine is as
 * large as a cache and the per-CPU
 * tables mirror the caches' layout, so a cache's magazine is at a fixed
 * distance from it. The check and the drain reach another CPU's magazine
 * through dmm__cpu_sync(). Magazines count frees (and the bytes DMA
 * alignment costs, for requests that are not packed); allocations are
 * derived (frees + live, live = objects off the slabs - in magazines - in
 * the depot), which keeps a counter off the free path.
 *
 * The depot (Bonwick's magazine layer). Each cache (each set has its own)
 * keeps, under its lock, a stack of loads of free objects: a load is what
 * a drain moves, the oldest mag_batch objects of a full magazine's stack
 * (not the top slot's, which may be older), and what an empty magazine
 * takes back, the load put last, in one copy of
 * mag_batch pointers each way (no slab is touched). Only when the depot is
 * full does a drain go to the slabs, object by object, and only when it is
 * empty does a refill come from them. Exchanges stay half a magazine, so
 * the hysteresis is the one without a depot: after any exchange the
 * magazine is half full, and alloc/free alternating at either end costs no
 * exchange at all; a whole magazine exchanged each way (with one magazine
 * per CPU, not Bonwick's two) would hand a full load back and forth when
 * two allocations and two frees alternate at the boundary. The bound is
 * DEPOT_BYTES (32 KiB) of objects per cache and at most DEPOT_LOADS (8)
 * loads: 240 objects of 8..128 bytes, 150 of 192, 120 of 256, 64 of 512,
 * down to 4 of 8 KiB; at most 299 KiB of free objects per set, 896 KiB
 * for all three (worst case, every class's depot full). The pointers live
 * in the metadata after the magazine tables (dmm__slab_meta_size: 1834 per
 * set, about 43 KiB in all), so a depot needs no allocation and can never
 * fail. A double free is looked for in the depot too (when the object
 * carries the free mark). dmm_slab_shrink() drains every depot into the
 * slabs (under the cache lock, after the magazines), before it gives back
 * the empty slabs.
 *
 * Free finds the object's cache from the pointer alone, in one load: the
 * slab map (a byte per page of the linear map, the cache's place in the
 * state, 0 for no slab) gives the cache; the object's index within its slab
 * is checked by one multiplication and a rotation, not a division.
 * The map starts at the linear map's start rounded down to the largest
 * slab. Where there is none (no linear map, or a physical map more than
 * twice as large as the RAM) the slow path looks the page descriptor's
 * owner up instead.
 *
 * Alignment policies decide which classes a request may use: the aligned
 * ones only classes that are multiples of dma_min_align, the packed ones any
 * class (8-byte minimum). The cost of alignment is counted per class.
 */
#include <dmamem/slab.h>

#include "mm/mm_internal.h"

#define KCLS_WASTE 0x40 /* a cls_tagged entry whose allocations count alignment waste */
/*
 * A magazine holds up to MAG_MAX objects (it is as large as a cache: 512
 * bytes; MAG_MAX - 1 on its stack, one in its top slot), but each class
 * uses only as many as fit a byte budget
 * (kcache.mag_cap: MAG_BYTES / size, at least MAG_MIN): small objects get
 * the most room, where a magazine round trip costs most per byte, and a
 * CPU holds at most about MAG_BYTES of free objects of a class, however
 * large they are. Refills and drains move half a magazine
 * (kcache.mag_batch).
 */
#define KCACHE_BYTES 512
#define MAG_MAX ((KCACHE_BYTES - 32) / 8 + 1) /* obj[] and top */
#define MAG_BYTES 16384u
#define MAG_MIN 4u
/*
 * A cache's depot holds loads of mag_batch free objects (what a drain of a
 * full magazine hands over and a refill of an empty one takes) up to a
 * byte budget, DEPOT_BYTES of objects, and at most DEPOT_LOADS loads
 * (which bounds its pointer store for the small classes).
 */
#define DEPOT_BYTES (2 * MAG_BYTES)
#define DEPOT_LOADS 8u

static const uint32_t class_size[DMM_KMALLOC_NR_CLASSES] = { 8,   16,  32,   64,   96,   128, 192,
							     256, 512, 1024, 2048, 4096, 8192 };

struct mag {
	_Alignas(KCACHE_BYTES) uint32_t n; /* objects in obj[] */
	/* counters of this CPU, written in its sections (summed on query);
	 * allocations are not counted but derived: frees + (taken - cached),
	 * which keeps the allocation path free of a read-modify-write */
	uint64_t frees, align_waste;
	/* the top slot: a free object or NULL. A free fills it when it is
	 * empty, an allocation takes it when it is set (each falls back to
	 * obj[]): alternating, neither loads nor stores n */
	void *top;
	void *obj[MAG_MAX - 1];
};

struct kcache {
	_Alignas(KCACHE_BYTES) struct dmm_lock lock;
	struct dmm_mem *mem;
	uint32_t size, order, objs, set, cls;
	uint32_t inv, shift;             /* size = odd * 2^shift; inv: odd's inverse mod 2^32 */
	uint32_t slab_mask;              /* slab bytes - 1: an address's offset in its slab */
	uint32_t mag_cap, mag_batch;     /* objects a magazine of this class holds; a refill or drain */
	/* written into the first word of an object put in a magazine, by a
	 * free or by a refill from the slabs (and cleared when it is handed
	 * out): a kfree that finds it there looks for the object in the
	 * magazine (a double free); anything else costs one compare. The same
	 * in every cache, kept next to what kfree loads */
	uintptr_t free_mark;
	struct dmm_page *partial, *full; /* head descriptors, linked via next/prev */
	struct dmm_page *empty;          /* one spare empty slab */
	struct dmm_slab_class_info st;   /* counters (under lock; alloc/free atomics) */
	uint64_t taken;                  /* objects off the slabs: live, in magazines or in the depot (lock) */
	/* the depot (under lock): a stack of depot_n free objects, whole loads
	 * of mag_batch, at most depot_max; its store is in the metadata after
	 * the magazine tables */
	void **depot;
	uint32_t depot_n, depot_max;
};

struct dmm_slab_state {
	/* slab map value 0 names this cache: no objects (objs 0), so no
	 * address is an object's start in it */
	struct kcache none;
	struct kcache cache[DMM_KMALLOC_NR_SETS][DMM_KMALLOC_NR_CLASSES];
	/* the policy as two bits: requests packed always / when they ask */
	bool packed_always, packed_on_request;
	/* class for a size, by (size + 7) / 8: packed [0], DMA-aligned [1]; -1 above */
	int8_t class_for[2][DMM_KMALLOC_MAX_CACHE / 8 + 1];
	/* for a request without [0] and with [1] DMM_GFP_PACKED (the policy
	 * folded into one load): its row of cls_tagged */
	const int8_t *row[2];
	/* class_for with KCLS_WASTE set in the entries of DMA-aligned rows
	 * (whose allocations count their alignment waste) */
	int8_t cls_tagged[2][DMM_KMALLOC_MAX_CACHE / 8 + 1];
	/* object bytes of a DMA-aligned class beyond the packed one, by (size + 7) / 8 */
	uint16_t waste_for[DMM_KMALLOC_MAX_CACHE / 8 + 1];
};

/*
 * The magazines follow the state, one table per CPU laid out as the
 * caches are (none, then [set][class]), and a magazine is as large as a
 * cache: the magazine of cache @k on @cpu is at a fixed distance from @k
 * (no load on the way from an object's cache to its magazine). The slab
 * map's value for a cache is its place in that layout.
 */
#define NR_KCACHES (1 + DMM_KMALLOC_NR_SETS * DMM_KMALLOC_NR_CLASSES)
#define MAG_TABLE_BYTES ((size_t)NR_KCACHES * sizeof(struct mag))
_Static_assert(sizeof(struct mag) == KCACHE_BYTES && sizeof(struct kcache) == KCACHE_BYTES,
	       "a magazine is as large as a cache");
_Static_assert(offsetof(struct dmm_slab_state, cache) == sizeof(struct kcache), "none, then the caches");
_Static_assert(NR_KCACHES <= 255, "a cache's place fits the slab map");

static inline struct mag *mag_of(const struct kcache *k, unsigned cpu)
{
	return (struct mag *)(uintptr_t)((const char *)k + sizeof(struct dmm_slab_state) + cpu * MAG_TABLE_BYTES);
}

/* Objects a magazine of objects of @size holds: MAG_BYTES of them, MAG_MIN..MAG_MAX. */
static uint32_t mag_cap_for(uint32_t size)
{
	return (uint32_t)dmm_max64(MAG_MIN, dmm_min64(MAG_MAX, MAG_BYTES / size));
}

/* Objects the depot of a cache of objects of @size holds at most: whole
 * loads (half a magazine each), DEPOT_BYTES of objects, DEPOT_LOADS loads. */
static uint32_t depot_max_for(uint32_t size)
{
	uint32_t load = mag_cap_for(size) / 2;

	return load * (uint32_t)dmm_min64(DEPOT_LOADS, DEPOT_BYTES / ((uint64_t)load * size));
}

/* Pointers the depots of one set of caches store. */
static uint64_t depot_set_slots(void)
{
	uint64_t n = 0;

	for (unsigned c = 0; c < DMM_KMALLOC_NR_CLASSES; c++)
		n += depot_max_for(class_size[c]);
	return n;
}

/* The state, the magazine tables (one per CPU), then the depots' stores. */
uint64_t dmm__slab_meta_size(unsigned nr_cpus)
{
	return sizeof(struct dmm_slab_state) +
	       (uint64_t)NR_KCACHES * nr_cpus * sizeof(struct mag) +
	       DMM_KMALLOC_NR_SETS * depot_set_slots() * sizeof(void *) +
	       KCACHE_BYTES;
}

static unsigned slab_order_for(uint32_t size)
{
	unsigned o = 0;
	while (((DMM_PAGE_SIZE << o) / size) < 4 && o < DMM_SLAB_MAX_ORDER)
		o++;
	return o;
}

uint64_t dmm__slab_map_pages(const struct dmm_mem *g)
{
	const struct dmm_platform *p = &g->plat;
	dmm_phys_t base = dmm_align_down(p->linear_phys, DMM_PAGE_SIZE << DMM_SLAB_MAX_ORDER);
	dmm_phys_t end = dmm_min64(p->linear_phys + p->linear_size, (dmm_phys_t)g->max_pfn << DMM_PAGE_SHIFT);
	uint64_t pages;

	/* (the linear map is whole pages: dmm_platform_validate) */
	if (!p->linear_size || end <= base)
		return 0;
	pages = (end - base + DMM_PAGE_SIZE - 1) >> DMM_PAGE_SHIFT;
	return pages <= 2 * g->ram_pages ? pages : 0;
}

/* The slab map's byte for @pfn, or NULL outside the map. A page the
 * linear map does not hold (below its start, when that is not a multiple
 * of the largest slab) is never marked: kfree reads the byte for an
 * address as if the linear map held the page there, and that address is
 * none of the page's. */
static inline uint8_t *slab_map_at(const struct dmm_mem *mem, dmm_pfn_t pfn)
{
	dmm_phys_t pa = dmm_pfn_to_phys(pfn);

	if (pa < mem->slab_map_phys || pa - mem->slab_map_phys >= mem->slab_map_span ||
	    pa - mem->plat.linear_phys >= mem->plat.linear_size)
		return (uint8_t *)0;
	return &mem->slab_map[(pa - mem->slab_map_phys) >> DMM_PAGE_SHIFT];
}

/* Mark (a cache's place, 1..) or clear (0) the slab map for @n pages at @pfn. */
static void slab_map_set(struct dmm_mem *mem, dmm_pfn_t pfn, uint64_t n, uint8_t v)
{
	for (uint64_t i = 0; i < n; i++) {
		uint8_t *b = slab_map_at(mem, pfn + i);
		if (b)
			__atomic_store_n(b, v, __ATOMIC_RELAXED);
	}
}

static int class_search(const struct dmm_mem *mem, size_t size, bool packed);
static inline bool packed_request(const struct dmm_mem *mem, unsigned flags);

void dmm__slab_init(struct dmm_mem *mem, void *meta)
{
	struct dmm_slab_state *s = (struct dmm_slab_state *)dmm_align_up((uintptr_t)meta, KCACHE_BYTES);
	void **store = (void **)(uintptr_t)((char *)s + sizeof(*s) + mem->plat.nr_cpus * MAG_TABLE_BYTES);

	mem->slab = s;
	s->packed_always = mem->machine.kmalloc_policy == DMM_KMALLOC_PACKED;
	s->packed_on_request = mem->machine.kmalloc_policy == DMM_KMALLOC_PACKED_ON_REQUEST;
	for (unsigned set = 0; set < DMM_KMALLOC_NR_SETS; set++)
		for (unsigned c = 0; c < DMM_KMALLOC_NR_CLASSES; c++) {
			struct kcache *k = &s->cache[set][c];
			k->mem = mem;
			k->size = class_size[c];
			k->order = slab_order_for(k->size);
			k->objs = (uint32_t)((DMM_PAGE_SIZE << k->order) / k->size);
			k->slab_mask = (uint32_t)((DMM_PAGE_SIZE << k->order) - 1);
			k->shift = (uint32_t)__builtin_ctz(k->size);
			k->inv = dmm_odd_inverse(k->size >> k->shift);
			k->mag_cap = mag_cap_for(k->size);
			k->mag_batch = k->mag_cap / 2;
			k->depot = store;
			k->depot_max = depot_max_for(k->size);
			store += k->depot_max;
			k->st.mag_capacity = k->mag_cap;
			k->st.mag_batch = k->mag_batch;
			k->st.depot_max_loads = k->depot_max / k->mag_batch;
			k->set = set;
			k->cls = c;
			k->st.size = k->size;
			k->st.slab_order = k->order;
			k->st.objs_per_slab = k->objs;
			k->st.set = set;
			mem->plat.lock_init(mem->plat.ctx, &k->lock);
		}
	for (unsigned set = 0; set < DMM_KMALLOC_NR_SETS; set++)
		for (unsigned c = 0; c < DMM_KMALLOC_NR_CLASSES; c++) /* odd: no object's address */
			s->cache[set][c].free_mark = ((uintptr_t)s * (uintptr_t)0x9e3779b97f4a7c15ull) | 1;
	for (unsigned i = 0; i <= DMM_KMALLOC_MAX_CACHE / 8; i++) {
		s->class_for[0][i] = (int8_t)class_search(mem, i ? (size_t)i * 8 : 1, true);
		s->class_for[1][i] = (int8_t)class_search(mem, i ? (size_t)i * 8 : 1, false);
		if (s->class_for[0][i] >= 0 && s->class_for[1][i] >= 0)
			s->waste_for[i] = (uint16_t)(class_size[s->class_for[1][i]] - class_size[s->class_for[0][i]]);
	}
	for (unsigned r = 0; r < 2; r++)
		for (unsigned i = 0; i <= DMM_KMALLOC_MAX_CACHE / 8; i++)
			s->cls_tagged[r][i] = (int8_t)(s->class_for[r][i] < 0 ? -1 : s->class_for[r][i] | (r ? KCLS_WASTE : 0));
	for (unsigned f = 0; f < 2; f++)
		s->row[f] = s->cls_tagged[packed_request(mem, f ? DMM_GFP_PACKED : 0) ? 0 : 1];
}

/* ---- class selection -------------------------------------------------------- */

static inline bool packed_request(const struct dmm_mem *mem, unsigned flags)
{
	return mem->slab->packed_always | (mem->slab->packed_on_request & ((flags & DMM_GFP_PACKED) != 0));
}

/* Class index for @size, packed or DMA-aligned; -1 if above the caches. */
static int class_search(const struct dmm_mem *mem, size_t size, bool packed)
{
	uint32_t a = packed ? 8 : (uint32_t)dmm_max64(mem->machine.dma_min_align, 8);

	for (int c = 0; c < DMM_KMALLOC_NR_CLASSES; c++)
		if (class_size[c] >= size && !(class_size[c] % a))
			return c;
	return -1;
}

static inline int class_of(const struct dmm_mem *mem, size_t size, bool packed)
{
	if (size > DMM_KMALLOC_MAX_CACHE)
		return -1;
	return mem->slab->class_for[packed ? 0 : 1][(size + 7) / 8];
}

/* The flags dmm_kmalloc takes. */
#define KMALLOC_FLAGS (DMM_GFP_ZERO | DMM_GFP_ATOMIC | DMM_GFP_DMA | DMM_GFP_DMA32 | DMM_GFP_PACKED)

size_t dmm_kmalloc_size_of(const struct dmm_mem *mem, size_t size, unsigned flags)
{
	int c;
	/* 0 for what dmm_kmalloc refuses: flags, or a size beyond the largest block */
	if (!mem || !size || (flags & ~KMALLOC_FLAGS) || ((flags & DMM_GFP_DMA) && (flags & DMM_GFP_DMA32)) ||
	    (uint64_t)size > (uint64_t)DMM_PAGE_SIZE << DMM_MAX_ORDER)
		return 0;
	c = class_of(mem, size, packed_request(mem, flags));
	if (c >= 0)
		return class_size[c];
	return (size_t)DMM_PAGE_SIZE << (size <= DMM_PAGE_SIZE ? 0 : 64 - __builtin_clzll((size - 1) >> DMM_PAGE_SHIFT));
}

int dmm_kmalloc_needs_bounce(const struct dmm_mem *mem, const void *ptr, size_t size)
{
	uint64_t a;
	dmm_phys_t pa, os;
	uint64_t on;

	if (!mem || !ptr)
		return 0;
	a = mem->machine.dma_min_align;
	if (!(((uintptr_t)ptr | size) & (a - 1)))
		return 0;
	/* a buffer inside one object whose bounds are DMA-aligned shares nothing */
	if (mem->plat.virt_to_phys && !mem->plat.virt_to_phys(mem->plat.ctx, ptr, &pa) &&
	    dmm__slab_object_of((struct dmm_mem *)mem, pa, &os, &on) && pa + size <= os + on && !((os | on) & (a - 1)))
		return 0;
	return 1;
}

static inline unsigned set_of(unsigned flags)
{
	return ((flags & DMM_GFP_DMA) != 0) * 2 + ((flags & DMM_GFP_DMA32) != 0);
}

/* ---- slabs -------------------------------------------------------------------- */

static void list_add(struct dmm_page **head, struct dmm_page *pg)
{
	pg->prev = (struct dmm_page *)0;
	pg->next = *head;
	if (*head)
		(*head)->prev = pg;
	*head = pg;
}

static void list_del(struct dmm_page **head, struct dmm_page *pg)
{
	if (pg->prev)
		pg->prev->next = pg->next;
	else
		*head = pg->next;
	if (pg->next)
		pg->next->prev = pg->prev;
	pg->next = pg->prev = (struct dmm_page *)0;
}

static uint8_t *slab_base(const struct kcache *k, const struct dmm_page *head)
{
	return dmm_pfn_to_virt(k->mem, head->pfn);
}

static unsigned slab_take(struct kcache *k, void **out, unsigned n);

/* A new slab on the partial list, and up to mag_batch of its objects
 * taken straight into the magazine of the caller's CPU (as far as it has
 * room) under the lock that lists it: an empty slab on the list is fair
 * game for dmm_slab_shrink(), which would otherwise give it back before
 * the caller got to it. Called with no lock held and outside any CPU-local
 * section: the page allocator may call the watermark hook, which may call
 * back into dmamem. Returns inside a section, whether it made the slab or
 * not: its CPU in *@cpu (maybe not the caller's before, and a magazine
 * maybe refilled meanwhile). The slab is cut up before it is shown, and
 * its objects leave it only for the magazine, in the same hold of the
 * lock, so every object is always on a slab's free list, in a magazine,
 * in the depot or allocated (what dmm_slab_check and dmm_slab_class_info
 * count). */
static int slab_new(struct kcache *k, unsigned flags, unsigned *cpu)
{
	static const unsigned gfp_of_set[3] = { 0, DMM_GFP_DMA32, DMM_GFP_DMA };
	struct dmm_page *head;
	struct mag *m;
	dmm_pfn_t pfn;
	uint8_t *base;
	int err;

	err = dmm_page_alloc(k->mem, k->order, (const struct dmm_constraint *)0,
			     gfp_of_set[k->set] | (flags & DMM_GFP_ATOMIC) | DMM_GFP_RECLAIMABLE, &pfn);
	if (err) {
		*cpu = dmm__cpu_enter(k->mem);
		return err;
	}
	head = dmm__pfn_page(k->mem, pfn);
	base = slab_base(k, head);
	for (uint32_t i = 0; i < k->objs; i++)
		*(void **)(base + (size_t)i * k->size) = i + 1 < k->objs ? base + (size_t)(i + 1) * k->size : (void *)0;
	dmm__set_private(head, (uintptr_t)base);
	head->refcount = 0;
	*cpu = dmm__cpu_enter(k->mem);
	m = mag_of(k, *cpu);
	dmm__lock(k->mem, &k->lock);
	for (uint64_t i = 0; i < ((uint64_t)1 << k->order); i++)
		dmm__set_owner(dmm__pfn_page(k->mem, pfn + i), k);
	slab_map_set(k->mem, pfn, (uint64_t)1 << k->order, (uint8_t)(k - &k->mem->slab->none));
	__atomic_fetch_or(&head->flags, (uint8_t)DMM_PGF_SLAB, __ATOMIC_RELAXED);
	list_add(&k->partial, head);
	k->st.slabs++;
	/* from the new slab (the partial list's head) */
	m->n += slab_take(k, m->obj + m->n, (unsigned)dmm_min64(k->mag_batch, k->mag_cap - 1 - m->n));
	dmm__unlock(k->mem, &k->lock);
	return 0;
}

/* Give the empty slab @head, off every list, back to the page allocator
 * (cache lock held). The free is claimed before the slab is taken apart,
 * as the page allocator claims a block: a pinned page refuses it
 * (-DMM_EBUSY, counted in the zone's bad_free and the class's
 * release_busy), and the slab is left whole (its objects free on it, its
 * pages the cache's and marked in the slab map). */
static int slab_release(struct kcache *k, struct dmm_page *head)
{
	dmm_pfn_t pfn = head->pfn;
	int err = dmm__free_begin(k->mem, head, DMM_PAGE_ALLOC);

	if (err) {
		k->st.release_busy++;
		return err;
	}
	k->st.slabs--;
	for (uint64_t i = 0; i < ((uint64_t)1 << k->order); i++)
		dmm__set_owner(dmm__pfn_page(k->mem, pfn + i), (void *)0);
	slab_map_set(k->mem, pfn, (uint64_t)1 << k->order, 0);
	__atomic_fetch_and(&head->flags, (uint8_t)~DMM_PGF_SLAB, __ATOMIC_RELAXED);
	dmm__set_private(head, 0);
	dmm__free_finish(k->mem, head, DMM_PAGE_ALLOC);
	return 0;
}

/* An empty slab, off every list (cache lock held): the cache's spare if
 * it has none, else back to the page allocator. One the page allocator
 * refuses (a pinned page) stays a slab of the cache, on the partial list,
 * where the next allocations take from it first; it is tried again the
 * next time it is empty. */
static void slab_retire(struct kcache *k, struct dmm_page *head)
{
	if (!k->empty)
		k->empty = head;
	else if (slab_release(k, head))
		list_add(&k->partial, head);
}

/* Take up to @n objects into @out from the slabs there are (cache lock
 * held), each with the free mark, as a magazine keeps its objects; a new
 * slab comes from slab_new(), outside the lock. */
static unsigned slab_take(struct kcache *k, void **out, unsigned n)
{
	unsigned got = 0;

	while (got < n) {
		struct dmm_page *head = k->partial;
		void *obj;
		if (!head && k->empty) {
			head = k->empty;
			k->empty = (struct dmm_page *)0;
			list_add(&k->partial, head);
		}
		if (!head)
			break;
		obj = (void *)(uintptr_t)dmm__private(head);
		dmm__set_private(head, (uintptr_t)*(void **)obj);
		/* bound for a magazine: a free object there carries the mark
		 * (a kfree of it is a double free) */
		*(uintptr_t *)obj = k->free_mark;
		head->refcount++;
		k->taken++;
		out[got++] = obj;
		if (head->refcount == k->objs) {
			list_del(&k->partial, head);
			list_add(&k->full, head);
		}
	}
	return got;
}

static struct dmm_page *head_of(struct dmm_mem *mem, const struct kcache *k, dmm_pfn_t pfn)
{
	return dmm__pfn_page(mem, pfn & ~(((dmm_pfn_t)1 << k->order) - 1));
}

/* Give one object back to its slab (cache lock held). */
static void slab_put(struct kcache *k, void *obj, struct dmm_page *head)
{
	if (head->refcount == k->objs) {
		list_del(&k->full, head);
		list_add(&k->partial, head);
	}
	*(void **)obj = (void *)(uintptr_t)dmm__private(head);
	dmm__set_private(head, (uintptr_t)obj);
	head->refcount--;
	k->taken--;
	if (head->refcount == 0) {
		list_del(&k->partial, head);
		slab_retire(k, head);
	}
}

/* ---- entry points ---------------------------------------------------------------- */

static int large_alloc(struct dmm_mem *mem, size_t size, unsigned flags, void **ptr)
{
	uint64_t pages;
	unsigned order;
	struct dmm_page *pg;
	dmm_pfn_t pfn;
	int err;

	/* beyond the largest block (and before rounding up to pages, which
	 * would wrap a size within a page of SIZE_MAX to 0) */
	if ((uint64_t)size > (uint64_t)DMM_PAGE_SIZE << DMM_MAX_ORDER)
		return dmm__count_invalid(mem);
	pages = dmm_align_up(size, DMM_PAGE_SIZE) >> DMM_PAGE_SHIFT;
	order = pages <= 1 ? 0 : 64u - (unsigned)__builtin_clzll(pages - 1);
	err = dmm_page_alloc(mem, order, (const struct dmm_constraint *)0,
			     flags & (DMM_GFP_ATOMIC | DMM_GFP_DMA | DMM_GFP_DMA32 | DMM_GFP_ZERO), &pfn);
	if (err)
		return err;
	pg = dmm__pfn_page(mem, pfn);
	__atomic_fetch_or(&pg->flags, (uint8_t)DMM_PGF_KLARGE, __ATOMIC_RELAXED);
	*ptr = dmm_pfn_to_virt(mem, pfn);
	return 0;
}

/* Take the top of magazine @m (in its CPU's section), which holds an
 * object: top if set, else the last of obj[] (n is loaded only then); its
 * free mark cleared (a live object carries none). */
static inline void *mag_take(struct mag *m)
{
	void *obj = m->top;

	if (__builtin_expect(obj != (void *)0, 1)) {
		m->top = (void *)0;
	} else {
		uint32_t n = m->n;
		obj = m->obj[n - 1];
		m->n = n - 1;
	}
	*(uintptr_t *)obj = 0;
	return obj;
}

/* Objects magazine @m holds. */
static inline uint32_t mag_held(const struct mag *m)
{
	return m->n + (m->top != (void *)0);
}

/* The counters of one allocation of @size (in @m's section); @waste: its
 * bytes due to DMA alignment, NULL for a packed request. */
static inline void count_alloc(struct mag *m, size_t size, const uint16_t *waste)
{
	if (waste)
		dmm__pcpu_add(&m->align_waste, waste[(size + 7) / 8]);
}

/* The @n objects at @objs back to their slabs (cache lock held). */
static void slabs_put(struct kcache *k, void *const *objs, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		dmm_phys_t pa = 0; /* (an object's address always translates) */
		dmm__virt_to_phys(k->mem, objs[i], &pa);
		slab_put(k, objs[i], head_of(k->mem, k, dmm_phys_to_pfn(pa)));
	}
}

/* The same, taking the cache lock. */
static void objs_put(struct kcache *k, void *const *objs, unsigned n)
{
	dmm__lock(k->mem, &k->lock);
	slabs_put(k, objs, n);
	dmm__unlock(k->mem, &k->lock);
}

/* ---- the depot (cache lock held) ------------------------------------------------ */

/* The load put last (mag_batch objects) into @out; 0 if the depot is empty. */
static unsigned depot_take(struct kcache *k, void **out)
{
	if (!k->depot_n)
		return 0;
	k->depot_n -= k->mag_batch;
	dmm_memcpy(out, k->depot + k->depot_n, k->mag_batch * sizeof(void *));
	k->st.depot_gets++;
	return k->mag_batch;
}

/* The mag_batch objects at @objs into the depot as a load; false (nothing
 * moved) if it holds as many as it may. */
static bool depot_put(struct kcache *k, void *const *objs)
{
	if (k->depot_n + k->mag_batch > k->depot_max)
		return false;
	dmm_memcpy(k->depot + k->depot_n, objs, k->mag_batch * sizeof(void *));
	k->depot_n += k->mag_batch;
	k->st.depot_puts++;
	return true;
}

/* Every load of the depot back to the slabs. */
static void depot_drain(struct kcache *k)
{
	slabs_put(k, k->depot, k->depot_n);
	k->depot_n = 0;
}

/* Does the depot hold @ptr (freed twice)? */
static bool depot_holds(const struct kcache *k, const void *ptr)
{
	for (uint32_t i = 0; i < k->depot_n; i++)
		if (k->depot[i] == ptr)
			return true;
	return false;
}

/* A refill for an empty magazine into @out: a load of the depot if it has
 * one, else up to mag_batch objects from the slabs. */
static unsigned refill(struct kcache *k, void **out)
{
	unsigned n = depot_take(k, out);

	return n ? n : slab_take(k, out, k->mag_batch);
}

static __attribute__((noinline)) int kmalloc_slow(struct dmm_mem *mem, size_t size, unsigned flags, void **ptr)
{
	struct kcache *k;
	struct mag *m;
	void *obj = (void *)0;
	bool packed;
	unsigned cpu;
	int c, err = 0;

	if (!mem || !ptr || !size || (flags & ~KMALLOC_FLAGS) ||
	    ((flags & DMM_GFP_DMA) && (flags & DMM_GFP_DMA32)) || !mem->plat.virt_to_phys)
		return dmm__count_invalid(mem);
	packed = packed_request(mem, flags);
	c = class_of(mem, size, packed);
	if (c < 0)
		return large_alloc(mem, size, flags, ptr);
	k = &mem->slab->cache[set_of(flags)][c];
	cpu = dmm__cpu_enter(mem);
	m = mag_of(k, cpu);
	for (int tries = 0; !mag_held(m) && tries < 4; tries++) {
		dmm__lock(mem, &k->lock);
		m->n = refill(k, m->obj);
		dmm__unlock(mem, &k->lock);
		if (m->n)
			break;
		/* a new slab, its pages taken outside the section: the page
		 * allocator may call the watermark hook, which may call back
		 * into dmamem. Its objects go into the magazine as it is listed
		 * (a shrink meanwhile would give an empty slab back), back in
		 * a section, maybe another CPU's */
		dmm__cpu_exit(mem, cpu);
		err = slab_new(k, flags, &cpu);
		m = mag_of(k, cpu);
		if (err)
			break;
	}
	if (!mag_held(m)) {
		dmm__lock(mem, &k->lock);
		k->st.fail_nomem++;
		dmm__unlock(mem, &k->lock);
	}
	if (__builtin_expect(mag_held(m) != 0, 1)) {
		obj = mag_take(m);
		count_alloc(m, size, packed ? (const uint16_t *)0 : mem->slab->waste_for);
	}
	dmm__cpu_exit(mem, cpu);
	if (!obj)
		return err ? err : -DMM_ENOMEM;
	if (flags & DMM_GFP_ZERO)
		dmm_memset(obj, 0, k->size);
	*ptr = obj;
	return 0;
}

/*
 * The fast path: a cached size, no flag but DMM_GFP_PACKED, this thread
 * the owner of its CPU slot (dmm__cpu_try_enter), an object in that CPU's
 * magazine. Everything else (argument errors included) goes to
 * kmalloc_slow, which checks it all; every call here is a tail call, so the
 * path needs no stack frame.
 */
int dmm_kmalloc(struct dmm_mem *mem, size_t size, unsigned flags, void **ptr)
{
	struct dmm_cpu_thread *r;
	struct mag *m;
	int c;

	/* (no virt_to_phys hook: only the slow path fills magazines, and it
	 * refuses, so the fast path finds them empty) */
	if (__builtin_expect(!mem || !ptr || size - 1 >= DMM_KMALLOC_MAX_CACHE || (flags & ~DMM_GFP_PACKED), 0))
		return kmalloc_slow(mem, size, flags, ptr);
	c = mem->slab->row[flags / DMM_GFP_PACKED][(size + 7) / 8]; /* (flags is 0 or DMM_GFP_PACKED) */
	if (__builtin_expect(c < 0 || !dmm__cpu_try_enter(mem, &r), 0))
		return kmalloc_slow(mem, size, flags, ptr);
	m = mag_of(&mem->slab->cache[0][c & ~KCLS_WASTE], r->cpu);
	if (__builtin_expect(!m->top && !m->n, 0)) {
		dmm__cpu_leave(r);
		return kmalloc_slow(mem, size, flags, ptr);
	}
	*ptr = mag_take(m);
	count_alloc(m, size, c & KCLS_WASTE ? mem->slab->waste_for : (const uint16_t *)0);
	dmm__cpu_leave(r);
	return 0;
}

/* Is @k (a page's owner) one of this allocator's caches? One unsigned
 * compare. */
static inline bool is_cache(const struct dmm_mem *mem, const void *k)
{
	return (uintptr_t)k - (uintptr_t)&mem->slab->cache[0][0] < sizeof(mem->slab->cache);
}

/*
 * Does offset @off in a slab of @k start an object? One compare checks both
 * that @off is a multiple of the size and that the object is in the slab
 * (dmm_quot_exact: objs * size is at most the slab, far below 2^32).
 */
static inline bool object_start(const struct kcache *k, uint64_t off)
{
	return off < ((uint64_t)1 << 32) && dmm_quot_exact((uint32_t)off, k->inv, k->shift) < k->objs;
}

/* The cache and slab head of @ptr, or an error (-DMM_ENOENT: RAM that is no
 * slab object; *pgp then names its page if there is one). */
static inline __attribute__((always_inline)) int lookup_pa(struct dmm_mem *mem, dmm_phys_t pa, struct kcache **kp,
							    struct dmm_page **headp, struct dmm_page **pgp)
{
	struct dmm_page *pg, *head;
	struct kcache *k;

	pg = dmm__pfn_page(mem, dmm_phys_to_pfn(pa));
	if (!pg || (__atomic_load_n(&pg->flags, __ATOMIC_RELAXED) & DMM_PGF_NORAM))
		return -DMM_EINVAL;
	*pgp = pg;
	k = dmm__owner(pg);
	if (!is_cache(mem, k))
		return -DMM_ENOENT;
	/* a slab is 2^order naturally aligned pages: its descriptors are
	 * consecutive within one section */
	head = pg - (pg->pfn & (((dmm_pfn_t)1 << k->order) - 1));
	if (!(__atomic_load_n(&head->flags, __ATOMIC_RELAXED) & DMM_PGF_SLAB) || dmm__state(head) != DMM_PAGE_ALLOC)
		return -DMM_ENOENT;
	if (!object_start(k, pa - dmm_pfn_to_phys(head->pfn)))
		return -DMM_EINVAL;
	*kp = k;
	*headp = head;
	return 0;
}

static inline __attribute__((always_inline)) int lookup(struct dmm_mem *mem, const void *ptr, struct kcache **kp,
							 struct dmm_page **headp, struct dmm_page **pgp)
{
	dmm_phys_t pa;

	if (!mem || !ptr || !mem->plat.virt_to_phys || dmm__virt_to_phys(mem, ptr, &pa))
		return -DMM_EINVAL;
	return lookup_pa(mem, pa, kp, headp, pgp);
}

static int free_large(struct dmm_mem *mem, const void *ptr, struct dmm_page *pg)
{
	if (!pg || dmm__state(pg) != DMM_PAGE_ALLOC || !(__atomic_load_n(&pg->flags, __ATOMIC_RELAXED) & DMM_PGF_KLARGE) ||
	    dmm_pfn_to_virt(mem, pg->pfn) != ptr)
		return -DMM_ENOENT;
	int err;

	/* the claim: of two frees of the object at once, the one that takes
	 * the mark off frees it; the other leaves the pages alone (it would
	 * otherwise put the mark back on pages the first had freed) */
	if (!(__atomic_fetch_and(&pg->flags, (uint8_t)~DMM_PGF_KLARGE, __ATOMIC_ACQ_REL) & DMM_PGF_KLARGE))
		return -DMM_ENOENT;
	err = dmm_page_free(mem, pg->pfn, dmm__order(pg));
	if (err) /* refused (pinned): still a large object, freed by kfree later */
		__atomic_fetch_or(&pg->flags, (uint8_t)DMM_PGF_KLARGE, __ATOMIC_RELAXED);
	return err;
}

/* Is @ptr, on page @pg, inside a live large object but not at its start?
 * Buddy blocks are naturally aligned: the head of an order-o block holding
 * @pg is at its pfn rounded down to 2^o. (Read without a lock: it only
 * picks the error an invalid free gets.) */
static bool inside_large(struct dmm_mem *mem, const void *ptr, const struct dmm_page *pg)
{
	for (unsigned o = 0; o <= DMM_MAX_ORDER; o++) {
		struct dmm_page *h = dmm__pfn_page(mem, pg->pfn & ~(((dmm_pfn_t)1 << o) - 1));

		if (h && dmm__state(h) == DMM_PAGE_ALLOC && pg->pfn - h->pfn < ((dmm_pfn_t)1 << dmm__order(h)))
			return (__atomic_load_n(&h->flags, __ATOMIC_RELAXED) & DMM_PGF_KLARGE) &&
			       dmm_pfn_to_virt(mem, h->pfn) != ptr;
	}
	return false;
}

/* Make room in the full magazine @m (in its CPU's section): the oldest
 * mag_batch objects of its stack go to the depot as a load, or back to
 * their slabs if the depot is full (the top slot keeps its object). */
static __attribute__((noinline)) void mag_drain(struct kcache *k, struct mag *m)
{
	unsigned n = k->mag_batch;

	dmm__lock(k->mem, &k->lock);
	if (!depot_put(k, m->obj))
		slabs_put(k, m->obj, n);
	dmm__unlock(k->mem, &k->lock);
	for (unsigned i = n; i < m->n; i++)
		m->obj[i - n] = m->obj[i];
	m->n -= n;
}

/* ---- shrinking ------------------------------------------------------------------ */

struct shrink {
	struct dmm_mem *mem;
	unsigned cpu;
};

/* Every magazine of one CPU back to its slabs (no section of it runs). */
static void shrink_cpu(void *arg)
{
	const struct shrink *sh = arg;
	struct kcache *first = &sh->mem->slab->cache[0][0];

	for (unsigned i = 0; i < NR_KCACHES - 1; i++) {
		struct mag *m = mag_of(&first[i], sh->cpu);
		if (m->n) {
			objs_put(&first[i], m->obj, m->n);
			m->n = 0;
		}
		if (m->top) {
			objs_put(&first[i], &m->top, 1);
			m->top = (void *)0;
		}
	}
}

/* The depot of @k back to its slabs, then every empty slab, its spare
 * too, back to the page allocator (cache lock held); those it refuses
 * (pinned) stay on the partial list. Returns how many stayed. */
static uint64_t shrink_cache(struct kcache *k)
{
	struct dmm_page *keep = (struct dmm_page *)0, *h, *next;
	uint64_t kept = 0;

	depot_drain(k);
	if (k->empty) {
		h = k->empty;
		k->empty = (struct dmm_page *)0;
		list_add(&k->partial, h);
	}
	for (h = k->partial; h; h = next) {
		next = h->next;
		if (h->refcount)
			continue;
		list_del(&k->partial, h);
		if (slab_release(k, h)) {
			list_add(&keep, h);
			kept++;
		}
	}
	for (h = keep; h; h = next) {
		next = h->next;
		list_del(&keep, h);
		list_add(&k->partial, h);
	}
	return kept;
}

uint64_t dmm_slab_shrink(struct dmm_mem *mem)
{
	struct shrink sh = { mem, 0 };
	struct kcache *first;
	uint64_t kept = 0;

	if (!mem || !mem->slab)
		return 0;
	for (sh.cpu = 0; sh.cpu < mem->plat.nr_cpus; sh.cpu++)
		dmm__cpu_sync(mem, sh.cpu, shrink_cpu, &sh);
	first = &mem->slab->cache[0][0];
	for (unsigned i = 0; i < NR_KCACHES - 1; i++) {
		dmm__lock(mem, &first[i].lock);
		kept += shrink_cache(&first[i]);
		dmm__unlock(mem, &first[i].lock);
	}
	return kept;
}

/* Is @ptr in magazine @m already: freed twice? */
static bool mag_holds(const struct mag *m, const void *ptr)
{
	if (m->top == ptr)
		return true;
	for (uint32_t i = 0; i < m->n; i++)
		if (m->obj[i] == ptr)
			return true;
	return false;
}

/* Is magazine @m full: top set and obj[] full? */
static inline bool mag_full(const struct kcache *k, const struct mag *m)
{
	return __builtin_expect(m->top != (void *)0, 0) && m->n >= k->mag_cap - 1;
}

/* Put @ptr in magazine @m, which is not full (in its CPU's section): in
 * top if it is free, else at the end of obj[] (n is loaded only then). */
static inline void mag_push(const struct kcache *k, struct mag *m, const void *ptr)
{
	*(uintptr_t *)(uintptr_t)ptr = k->free_mark;
	if (__builtin_expect(!m->top, 1)) {
		m->top = (void *)(uintptr_t)ptr;
	} else {
		uint32_t n = m->n;
		m->obj[n] = (void *)(uintptr_t)ptr;
		m->n = n + 1;
	}
	dmm__pcpu_add(&m->frees, 1);
}

/* Every free the fast path does not finish: argument errors, large
 * objects, a full magazine, a double free, a thread that does not own its
 * slot. An object that carries the free mark is looked for in this CPU's
 * magazine and in the depot: found, it is free already. */
static __attribute__((noinline)) int kfree_slow(struct dmm_mem *mem, const void *ptr)
{
	struct kcache *k;
	struct dmm_page *head, *pg = (struct dmm_page *)0;
	struct mag *m;
	unsigned cpu;
	int err = lookup(mem, ptr, &k, &head, &pg);

	if (err) {
		if (err == -DMM_ENOENT) {
			int e = free_large(mem, ptr, pg);
			if (e != -DMM_ENOENT)
				return e; /* freed, or refused by the page allocator (pinned) */
			if (pg && inside_large(mem, ptr, pg))
				return dmm__count_invalid(mem); /* not at the object's start */
		}
		return err == -DMM_EINVAL ? dmm__count_invalid(mem) : err;
	}
	cpu = dmm__cpu_enter(mem);
	m = mag_of(k, cpu);
	if (*(const uintptr_t *)ptr == k->free_mark) {
		bool twice = mag_holds(m, ptr);
		dmm__lock(mem, &k->lock);
		twice = twice || depot_holds(k, ptr);
		k->st.double_frees += twice;
		dmm__unlock(mem, &k->lock);
		if (twice) {
			dmm__cpu_exit(mem, cpu);
			return -DMM_ENOENT;
		}
	}
	if (mag_full(k, m))
		mag_drain(k, m);
	mag_push(k, m, ptr);
	dmm__cpu_exit(mem, cpu);
	return 0;
}

/*
 * The cache of the object at byte @off from the slab map's start for the
 * fast path, or NULL (the slow path then looks again and says why): one
 * load from the slab map. A page is marked exactly while it belongs to a
 * live slab (marked when the slab is made, cleared before it is freed),
 * and slabs are naturally aligned, as is the map's start, so the offset in
 * the slab needs no head descriptor.
 */
static inline struct kcache *cache_of_fast(struct dmm_mem *mem, uintptr_t off)
{
	struct kcache *k;

	if (off >= mem->slab_map_span)
		return (struct kcache *)0;
	/* (0, no slab: the empty cache "none", where nothing is an object) */
	k = &mem->slab->none + __atomic_load_n(&mem->slab_map[off >> DMM_PAGE_SHIFT], __ATOMIC_RELAXED);
	return object_start(k, off & k->slab_mask) ? k : (struct kcache *)0;
}

/* The fast path: an object inside the slab map, this thread the owner of
 * its CPU slot, room in that CPU's magazine; tail calls only. */
int dmm_kfree(struct dmm_mem *mem, const void *ptr)
{
	struct dmm_cpu_thread *r;
	struct kcache *k;
	struct mag *m;

	/* (no virt_to_phys hook: no slab exists, so no page is marked) */
	if (__builtin_expect(!mem || !ptr || !(k = cache_of_fast(mem, (uintptr_t)ptr - mem->slab_map_virt)) ||
				     !dmm__cpu_try_enter(mem, &r),
			     0))
		return kfree_slow(mem, ptr);
	m = mag_of(k, r->cpu);
	/* a full magazine, or the mark of a freed object: maybe freed twice */
	if (__builtin_expect(*(const uintptr_t *)ptr == k->free_mark || mag_full(k, m), 0)) {
		dmm__cpu_leave(r);
		return kfree_slow(mem, ptr);
	}
	mag_push(k, m, ptr);
	dmm__cpu_leave(r);
	return 0;
}

int dmm__lib_kmalloc(struct dmm_mem *mem, size_t size, unsigned flags, void **ptr)
{
	dmm_pfn_t pfn;

	if (size <= DMM_KMALLOC_MAX_CACHE)
		return dmm_kmalloc(mem, size, flags, ptr);
	return dmm__meta_alloc(mem, dmm_align_up(size, DMM_PAGE_SIZE) >> DMM_PAGE_SHIFT, flags & DMM_GFP_ATOMIC,
			       &pfn, ptr);
}

void dmm__lib_kfree(struct dmm_mem *mem, const void *ptr)
{
	struct dmm_page *pg;
	dmm_phys_t pa;

	if (ptr && !((uintptr_t)ptr & (DMM_PAGE_SIZE - 1)) && !dmm__virt_to_phys(mem, ptr, &pa) &&
	    (pg = dmm__pfn_page(mem, dmm_phys_to_pfn(pa))) &&
	    (__atomic_load_n(&pg->flags, __ATOMIC_RELAXED) & DMM_PGF_INTERNAL) && dmm__state(pg) == DMM_PAGE_RANGE) {
		/* (a range head holds its page count) */
		dmm__lib_free_range(mem, pg->pfn, dmm__private(pg));
		return;
	}
	dmm_kfree(mem, ptr);
}

size_t dmm_ksize(struct dmm_mem *mem, const void *ptr)
{
	struct kcache *k;
	struct dmm_page *head, *pg = (struct dmm_page *)0;
	int err = lookup(mem, ptr, &k, &head, &pg);

	if (!err)
		return k->size;
	/* a large object's own start only, as kfree takes it (not an
	 * address inside its first page) */
	if (pg && dmm__state(pg) == DMM_PAGE_ALLOC && (pg->flags & DMM_PGF_KLARGE) && dmm_pfn_to_virt(mem, pg->pfn) == ptr)
		return (size_t)DMM_PAGE_SIZE << dmm__order(pg);
	return 0;
}

int dmm__slab_object_of(struct dmm_mem *mem, dmm_phys_t pa, dmm_phys_t *start, uint64_t *size)
{
	struct dmm_page *pg = dmm_pfn_to_page(mem, dmm_phys_to_pfn(pa)), *head;
	struct kcache *k;
	dmm_phys_t base;

	if (!pg || !mem->slab)
		return 0;
	k = dmm__owner(pg);
	if (!is_cache(mem, k))
		return 0;
	head = head_of(mem, k, pg->pfn);
	if (!(__atomic_load_n(&head->flags, __ATOMIC_RELAXED) & DMM_PGF_SLAB))
		return 0;
	base = dmm_pfn_to_phys(head->pfn);
	*start = base + (pa - base) / k->size * k->size;
	*size = k->size;
	return 1;
}

struct class_snap {
	struct kcache *k;
	struct dmm_slab_class_info *out;
	int err;
};

/* The cache's counters and slab lists while no CPU is in a section. */
static void class_snap(void *arg)
{
	struct class_snap *cs = arg;
	struct kcache *k = cs->k;
	struct dmm_mem *mem = k->mem;
	struct dmm_slab_class_info *out = cs->out;
	uint64_t cached = 0, frees = 0, aw = 0;

	for (unsigned c = 0; c < mem->plat.nr_cpus; c++) {
		const struct mag *m = mag_of(k, c);
		cached += mag_held(m);
		frees += m->frees;
		aw += m->align_waste;
	}
	dmm__lock(mem, &k->lock);
	*out = k->st;
	/* live objects are those off the slabs and not in a magazine nor the depot */
	out->objects = k->taken - cached - k->depot_n;
	out->frees = frees;
	out->allocs = frees + out->objects;
	out->align_waste_bytes = aw;
	out->cached = cached;
	out->depot_loads = k->depot_n / k->mag_batch;
	out->depot_objects = k->depot_n;
	dmm__unlock(mem, &k->lock);
}

int dmm_slab_class_info(struct dmm_mem *mem, unsigned set, unsigned cls, struct dmm_slab_class_info *out)
{
	struct class_snap cs;

	if (!mem || !out || set >= DMM_KMALLOC_NR_SETS || cls >= DMM_KMALLOC_NR_CLASSES)
		return -DMM_EINVAL;
	cs.k = &mem->slab->cache[set][cls];
	cs.out = out;
	cs.err = 0;
	dmm__cpu_hold_all(mem, class_snap, &cs);
	return 0;
}

/* ---- invariants ------------------------------------------------------------------ */

/* The slab map's value for @pfn: 0..NR_KCACHES-1, or -1 outside the map. */
static int slab_map_get(const struct dmm_mem *mem, dmm_pfn_t pfn)
{
	const uint8_t *b = slab_map_at(mem, pfn);

	return b ? __atomic_load_n(b, __ATOMIC_RELAXED) : -1;
}

enum slab_list { ON_PARTIAL, ON_FULL, SPARE };

/* One slab of @k (its lock held) on list @l after @prev (NULL: the first;
 * the spare has no neighbours): state, owner and slab-map mark of each
 * page (*@mapped counts the marked ones), the list's back link, free
 * list, counts (a full slab's objects are all off it, a partial one's
 * not, the spare's all on it). */
static int check_slab(struct kcache *k, struct dmm_page *head, const struct dmm_page *prev, enum slab_list l,
		      uint64_t *inuse, uint64_t *mapped)
{
	struct dmm_mem *mem = k->mem;
	uint8_t *base = slab_base(k, head);
	uint32_t nfree = 0;

	if (!(head->flags & DMM_PGF_SLAB) || dmm__owner(head) != k || dmm__state(head) != DMM_PAGE_ALLOC ||
	    head->prev != prev || head->refcount > k->objs || (l == ON_FULL && head->refcount != k->objs) ||
	    (l == ON_PARTIAL && head->refcount == k->objs) || (l == SPARE && (head->refcount || head->next)))
		goto bad;
	for (uint64_t i = 0; i < ((uint64_t)1 << k->order); i++) {
		int v = slab_map_get(mem, head->pfn + i);
		if (dmm__owner(dmm__pfn_page(mem, head->pfn + i)) != k || (v >= 0 && v != k - &mem->slab->none))
			goto bad;
		*mapped += v >= 0;
	}
	for (uint8_t *o = (uint8_t *)(uintptr_t)dmm__private(head); o; o = *(uint8_t **)o) {
		if (o < base || (size_t)(o - base) % k->size || (size_t)(o - base) >= (size_t)k->objs * k->size ||
		    ++nfree > k->objs)
			goto bad;
	}
	if (nfree + head->refcount != k->objs)
		goto bad;
	*inuse += head->refcount;
	return 0;
bad:
	dmm_log(mem, DMM_LOG_ERR, "slab check: cache %u/%u slab at pfn %llu inconsistent", k->set, k->size,
		(unsigned long long)head->pfn);
	return -DMM_EFAULT;
}

/*
 * The free objects @k holds above its slabs (its CPUs' magazines and its
 * depot) must be objects of its live slabs, off their slabs' free lists,
 * each held once, and carry the free mark (a free or a refill put it
 * there; a live object, or a free one written after its free, does not).
 * The check runs with every CPU and lock held, so it may write what nobody
 * else can look at meanwhile, and does so to stay linear in the objects:
 *
 *   1. every free-list link of the cache's slabs gets TAG_FREE (links are
 *      object addresses or NULL: their low three bits are clear);
 *   2. each held object is looked up (one of the cache's) and its first
 *      word read: it must be the free mark (TAG_FREE there means it is on
 *      a free list, TAG_SEEN that it was met before: held twice; anything
 *      else, that it is no free object). The mark becomes the holding
 *      entry's address with TAG_SEEN; nothing else is written, and no
 *      entry is;
 *   3. the marks are put back: an entry wrote its object's word if that
 *      object is one of the cache's and holds the entry's own address (an
 *      entry that is no object's address is left alone, and nothing is
 *      written through it);
 *   4. the tags come off the links.
 *
 * The free mark is odd, so it is neither tag; entries are 8-byte aligned,
 * so an entry's address with TAG_SEEN is neither the mark nor a link.
 * Memory is as it was when the check returns.
 */
#define TAG_FREE ((uintptr_t)2)
#define TAG_SEEN ((uintptr_t)4)

static void tag_free_lists(struct kcache *k, uintptr_t tag)
{
	struct dmm_page *lists[3] = { k->partial, k->full, k->empty };

	for (unsigned l = 0; l < 3; l++)
		for (struct dmm_page *h = lists[l]; h; h = l == 2 ? (struct dmm_page *)0 : h->next)
			for (uintptr_t *o = (uintptr_t *)(uintptr_t)dmm__private(h); o;) {
				uintptr_t next = *o & ~TAG_FREE;
				*o = next | tag;
				o = (uintptr_t *)next;
			}
}

/* The entry holding the @i-th object of source @src (< nr_cpus: that
 * CPU's magazine, obj[] then top; nr_cpus: the depot), and their number. */
static void **held_entry(struct kcache *k, unsigned src, uint32_t i)
{
	struct mag *m;

	if (src >= k->mem->plat.nr_cpus)
		return &k->depot[i];
	m = mag_of(k, src);
	return i < m->n ? &m->obj[i] : &m->top;
}

static uint32_t held_n(const struct kcache *k, unsigned src)
{
	return src < k->mem->plat.nr_cpus ? mag_held(mag_of(k, src)) : k->depot_n;
}

static int check_held(struct kcache *k)
{
	unsigned nsrc = k->mem->plat.nr_cpus + 1;
	int err = 0;

	tag_free_lists(k, TAG_FREE);
	for (unsigned a = 0; a < nsrc; a++)
		for (uint32_t i = 0; i < held_n(k, a); i++) {
			void **e = held_entry(k, a, i);
			struct dmm_page *head, *pg;
			struct kcache *owner;
			uintptr_t *w;

			if (lookup(k->mem, *e, &owner, &head, &pg) || owner != k) {
				err = -DMM_EFAULT;
				continue;
			}
			w = (uintptr_t *)*e;
			if (*w != k->free_mark) {
				err = -DMM_EFAULT; /* held twice, free on its slab, or no free object */
				continue;
			}
			*w = (uintptr_t)e | TAG_SEEN;
		}
	for (unsigned a = 0; a < nsrc; a++)
		for (uint32_t i = 0; i < held_n(k, a); i++) {
			void **e = held_entry(k, a, i);
			uintptr_t *w = (uintptr_t *)*e;
			struct dmm_page *head, *pg;
			struct kcache *owner;

			/* only the entry that wrote the object's first word */
			if (lookup(k->mem, w, &owner, &head, &pg) || owner != k || *w != ((uintptr_t)e | TAG_SEEN))
				continue;
			*w = k->free_mark;
		}
	tag_free_lists(k, 0);
	if (err)
		dmm_log(k->mem, DMM_LOG_ERR, "slab check: cache %u/%u: a magazine or the depot holds an object twice, "
			"one that is not free of this cache, or one without the free mark", k->set, k->size);
	return err;
}

/* One cache against its counters (every CPU and its lock held); *@mapped
 * counts its pages the slab map marks. */
static int check_cache(struct kcache *k, uint64_t *mapped)
{
	struct dmm_mem *mem = k->mem;
	uint64_t inuse = 0, slabs = 0, cached = 0;
	int err = 0;

	for (struct dmm_page *h = k->partial, *prev = (struct dmm_page *)0; h && !err; prev = h, h = h->next, slabs++)
		err = check_slab(k, h, prev, ON_PARTIAL, &inuse, mapped);
	for (struct dmm_page *h = k->full, *prev = (struct dmm_page *)0; h && !err; prev = h, h = h->next, slabs++)
		err = check_slab(k, h, prev, ON_FULL, &inuse, mapped);
	if (!err && k->empty) {
		err = check_slab(k, k->empty, (struct dmm_page *)0, SPARE, &inuse, mapped);
		slabs++;
	}
	for (unsigned cpu = 0; cpu < mem->plat.nr_cpus; cpu++) {
		cached += mag_held(mag_of(k, cpu));
		if (mag_of(k, cpu)->n >= k->mag_cap)
			err = -DMM_EFAULT;
	}
	/* the depot: whole loads, within its bound */
	if (k->depot_n > k->depot_max || k->depot_n % k->mag_batch)
		err = -DMM_EFAULT;
	/* slab-side in-use = objects off the slabs (live, in magazines or in the depot) */
	if (!err && (slabs != k->st.slabs || inuse != k->taken || cached + k->depot_n > inuse)) {
		dmm_log(mem, DMM_LOG_ERR,
			"slab check: cache %u/%u: %llu slabs (count %llu), %llu in use, %llu in the depot",
			k->set, k->size, (unsigned long long)slabs, (unsigned long long)k->st.slabs,
			(unsigned long long)inuse, (unsigned long long)k->depot_n);
		err = -DMM_EFAULT;
	}
	return err ? err : check_held(k);
}

/* Every cache (all their locks held, so no slab comes or goes), then the
 * slab map: it marks exactly the pages of live slabs, each with its cache. */
static void check_all(void *arg)
{
	struct class_snap *cs = arg;
	struct dmm_mem *mem = cs->k->mem;
	struct kcache *first = &mem->slab->cache[0][0];
	uint64_t mapped[NR_KCACHES] = { 0 }, marked[NR_KCACHES] = { 0 };

	for (unsigned i = 0; i < NR_KCACHES - 1; i++)
		dmm__lock(mem, &first[i].lock);
	for (unsigned i = 0; i < NR_KCACHES - 1 && !cs->err; i++)
		cs->err = check_cache(&first[i], &mapped[i + 1]);
	for (uint64_t p = 0; p < mem->slab_map_span >> DMM_PAGE_SHIFT && !cs->err; p++) {
		uint8_t v = mem->slab_map[p];
		if (v >= NR_KCACHES)
			cs->err = -DMM_EFAULT;
		else
			marked[v]++;
	}
	for (unsigned i = 1; i < NR_KCACHES && !cs->err; i++)
		if (marked[i] != mapped[i]) {
			dmm_log(mem, DMM_LOG_ERR, "slab check: the slab map marks %llu pages of cache %u, its slabs have %llu",
				(unsigned long long)marked[i], i, (unsigned long long)mapped[i]);
			cs->err = -DMM_EFAULT;
		}
	for (unsigned i = NR_KCACHES - 1; i-- > 0;)
		dmm__unlock(mem, &first[i].lock);
}

int dmm_slab_check(struct dmm_mem *mem)
{
	struct class_snap cs = { (struct kcache *)0, (struct dmm_slab_class_info *)0, 0 };

	if (!mem)
		return -DMM_EINVAL;
	cs.k = &mem->slab->cache[0][0];
	dmm__cpu_hold_all(mem, check_all, &cs);
	return cs.err;
}

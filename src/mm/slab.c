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
 * allocator.
 *
 * Per-CPU magazines. Each cache has, per CPU, a magazine of up to 32 free
 * objects, used only inside a CPU-local section of that CPU (no lock, no
 * atomic where the platform has sections: see dmm__cpu_enter): allocation
 * pops, free pushes; the cache lock is taken only to refill or drain 16
 * objects at a time. The check and the drain reach another CPU's magazine
 * through dmm__cpu_sync().
 *
 * Free finds the object's cache from the pointer alone: linear-map address
 * to physical (an addition where the platform has a linear map), page
 * descriptor (two loads), owner; the object's index within its slab comes
 * from a multiplication by the size's reciprocal, not a division.
 *
 * Alignment policies decide which classes a request may use: the aligned
 * ones only classes that are multiples of dma_min_align, the packed ones any
 * class (8-byte minimum). The cost of alignment is counted per class.
 */
#include <dmamem/slab.h>

#include "mm/mm_internal.h"

#define MAG_SIZE 32
#define MAG_BATCH 16

static const uint32_t class_size[DMM_KMALLOC_NR_CLASSES] = { 8,   16,  32,   64,   96,   128, 192,
							     256, 512, 1024, 2048, 4096, 8192 };

struct mag {
	_Alignas(DMM_CACHELINE) uint32_t n;
	/* counters of this CPU, written in its sections (summed on query) */
	uint64_t allocs, frees, requested, align_waste; /* waste = allocs * size - requested */
	void *obj[MAG_SIZE];
};

struct kcache {
	_Alignas(DMM_CACHELINE) struct dmm_lock lock;
	struct dmm_mem *mem;
	uint32_t size, order, objs, set, cls;
	uint32_t recip;                  /* ceil(2^32 / size): offset / size by a multiply */
	struct dmm_page *partial, *full; /* head descriptors, linked via next/prev */
	struct dmm_page *empty;          /* one spare empty slab */
	struct dmm_slab_class_info st;   /* counters (under lock; alloc/free atomics) */
	struct mag *mags;                /* nr_cpus */
};

struct dmm_slab_state {
	struct kcache cache[DMM_KMALLOC_NR_SETS][DMM_KMALLOC_NR_CLASSES];
	/* the policy as two bits: requests packed always / when they ask */
	bool packed_always, packed_on_request;
	/* class for a size, by (size + 7) / 8: packed [0], DMA-aligned [1]; -1 above */
	int8_t class_for[2][DMM_KMALLOC_MAX_CACHE / 8 + 1];
	/* the row of class_for for a request without [0] and with [1]
	 * DMM_GFP_PACKED: the policy folded into one load */
	uint8_t row_for[2];
	/* written into the first word of an object put in a magazine (and
	 * cleared when it is handed out): a kfree that finds it there looks
	 * for the object in the magazine (a double free); anything else costs
	 * one compare */
	uintptr_t free_mark;
};

uint64_t dmm__slab_meta_size(unsigned nr_cpus)
{
	return sizeof(struct dmm_slab_state) +
	       (uint64_t)DMM_KMALLOC_NR_SETS * DMM_KMALLOC_NR_CLASSES * nr_cpus * sizeof(struct mag) +
	       DMM_CACHELINE;
}

static unsigned slab_order_for(uint32_t size)
{
	unsigned o = 0;
	while (((DMM_PAGE_SIZE << o) / size) < 4 && o < 3)
		o++;
	return o;
}

static int class_search(const struct dmm_mem *mem, size_t size, bool packed);
static inline bool packed_request(const struct dmm_mem *mem, unsigned flags);

void dmm__slab_init(struct dmm_mem *mem, void *meta)
{
	struct dmm_slab_state *s = (struct dmm_slab_state *)dmm_align_up((uintptr_t)meta, DMM_CACHELINE);
	struct mag *m = (struct mag *)(s + 1);

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
			k->recip = (uint32_t)((((uint64_t)1 << 32) + k->size - 1) / k->size);
			k->set = set;
			k->cls = c;
			k->st.size = k->size;
			k->st.slab_order = k->order;
			k->st.objs_per_slab = k->objs;
			k->st.set = set;
			k->mags = m;
			mem->plat.lock_init(mem->plat.ctx, &k->lock);
			m += mem->plat.nr_cpus;
		}
	s->free_mark = ((uintptr_t)s * (uintptr_t)0x9e3779b97f4a7c15ull) | 1; /* odd: no object's address */
	s->row_for[0] = packed_request(mem, 0) ? 0 : 1;
	s->row_for[1] = packed_request(mem, DMM_GFP_PACKED) ? 0 : 1;
	for (unsigned i = 0; i <= DMM_KMALLOC_MAX_CACHE / 8; i++) {
		s->class_for[0][i] = (int8_t)class_search(mem, i ? (size_t)i * 8 : 1, true);
		s->class_for[1][i] = (int8_t)class_search(mem, i ? (size_t)i * 8 : 1, false);
	}
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

size_t dmm_kmalloc_size_of(const struct dmm_mem *mem, size_t size, unsigned flags)
{
	int c;
	if (!mem || !size)
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

/* A new slab on the partial list. Called with no lock held and outside
 * any CPU-local section: the page allocator may call the watermark hook,
 * which may call back into dmamem. The slab is cut up before it is shown,
 * so every object is always on a slab's free list, in a magazine or
 * allocated (what dmm_slab_check counts). */
static int slab_new(struct kcache *k, unsigned flags)
{
	static const unsigned gfp_of_set[3] = { 0, DMM_GFP_DMA32, DMM_GFP_DMA };
	struct dmm_page *head;
	dmm_pfn_t pfn;
	uint8_t *base;
	int err;

	err = dmm_page_alloc(k->mem, k->order, (const struct dmm_constraint *)0,
			     gfp_of_set[k->set] | (flags & DMM_GFP_ATOMIC) | DMM_GFP_RECLAIMABLE, &pfn);
	if (err)
		return err;
	head = dmm__pfn_page(k->mem, pfn);
	base = slab_base(k, head);
	for (uint32_t i = 0; i < k->objs; i++)
		*(void **)(base + (size_t)i * k->size) = i + 1 < k->objs ? base + (size_t)(i + 1) * k->size : (void *)0;
	dmm__set_private(head, (uintptr_t)base);
	head->refcount = 0;
	dmm__lock(k->mem, &k->lock);
	for (uint64_t i = 0; i < ((uint64_t)1 << k->order); i++)
		dmm__set_owner(dmm__pfn_page(k->mem, pfn + i), k);
	__atomic_fetch_or(&head->flags, (uint8_t)DMM_PGF_SLAB, __ATOMIC_RELAXED);
	list_add(&k->partial, head);
	k->st.slabs++;
	dmm__unlock(k->mem, &k->lock);
	return 0;
}

static void slab_release(struct kcache *k, struct dmm_page *head)
{
	dmm_pfn_t pfn = head->pfn;

	k->st.slabs--;
	for (uint64_t i = 0; i < ((uint64_t)1 << k->order); i++)
		dmm__set_owner(dmm__pfn_page(k->mem, pfn + i), (void *)0);
	__atomic_fetch_and(&head->flags, (uint8_t)~DMM_PGF_SLAB, __ATOMIC_RELAXED);
	dmm__set_private(head, 0);
	head->refcount = 1;
	dmm_page_free(k->mem, pfn, k->order);
}

/* Take up to @n objects into @out from the slabs there are (cache lock
 * held); a new slab comes from slab_new(), outside the lock. */
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
		head->refcount++;
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
	if (head->refcount == 0) {
		list_del(&k->partial, head);
		if (!k->empty)
			k->empty = head;
		else
			slab_release(k, head);
	}
}

/* ---- entry points ---------------------------------------------------------------- */

static int large_alloc(struct dmm_mem *mem, size_t size, unsigned flags, void **ptr)
{
	uint64_t pages = dmm_align_up(size, DMM_PAGE_SIZE) >> DMM_PAGE_SHIFT;
	unsigned order = pages <= 1 ? 0 : 64u - (unsigned)__builtin_clzll(pages - 1);
	struct dmm_page *pg;
	dmm_pfn_t pfn;
	int err;

	if (order > DMM_MAX_ORDER)
		return dmm__count_invalid(mem);
	err = dmm_page_alloc(mem, order, (const struct dmm_constraint *)0,
			     flags & (DMM_GFP_ATOMIC | DMM_GFP_DMA | DMM_GFP_DMA32 | DMM_GFP_ZERO), &pfn);
	if (err)
		return err;
	pg = dmm__pfn_page(mem, pfn);
	__atomic_fetch_or(&pg->flags, (uint8_t)DMM_PGF_KLARGE, __ATOMIC_RELAXED);
	*ptr = dmm_pfn_to_virt(mem, pfn);
	return 0;
}

/* Take the last of the @n (> 0) objects of magazine @m (in its CPU's
 * section), its free mark cleared: a live object carries none. */
static inline void *mag_take(struct mag *m, uint32_t n)
{
	void *obj = m->obj[n - 1];

	m->n = n - 1;
	*(uintptr_t *)obj = 0;
	return obj;
}

/* The counters of one allocation of @size from @k (in @m's section). */
static inline void count_alloc(const struct dmm_mem *mem, const struct kcache *k, struct mag *m, size_t size,
			       bool packed)
{
	dmm__pcpu_add(&m->allocs, 1);
	dmm__pcpu_add(&m->requested, size);
	if (!packed)
		dmm__pcpu_add(&m->align_waste, k->size - class_size[class_of(mem, size, true)]);
}

static __attribute__((noinline)) int kmalloc_slow(struct dmm_mem *mem, size_t size, unsigned flags, void **ptr)
{
	const unsigned allowed = DMM_GFP_ZERO | DMM_GFP_ATOMIC | DMM_GFP_DMA | DMM_GFP_DMA32 | DMM_GFP_PACKED;
	struct kcache *k;
	struct mag *m;
	void *obj = (void *)0;
	bool packed;
	unsigned cpu;
	int c, err = 0;

	if (!mem || !ptr || !size || (flags & ~allowed) ||
	    ((flags & DMM_GFP_DMA) && (flags & DMM_GFP_DMA32)) || !mem->plat.virt_to_phys)
		return dmm__count_invalid(mem);
	packed = packed_request(mem, flags);
	c = class_of(mem, size, packed);
	if (c < 0)
		return large_alloc(mem, size, flags, ptr);
	k = &mem->slab->cache[set_of(flags)][c];
	cpu = dmm__cpu_enter(mem);
	m = &k->mags[cpu];
	for (int tries = 0; !m->n && tries < 4; tries++) {
		dmm__lock(mem, &k->lock);
		m->n = slab_take(k, m->obj, MAG_BATCH);
		dmm__unlock(mem, &k->lock);
		if (m->n)
			break;
		/* a new slab, outside the section: the page allocator may call
		 * the watermark hook, which may call back into dmamem */
		dmm__cpu_exit(mem, cpu);
		err = slab_new(k, flags);
		cpu = dmm__cpu_enter(mem);
		m = &k->mags[cpu]; /* maybe another CPU's, maybe refilled meanwhile */
		if (err)
			break;
	}
	if (!m->n) {
		dmm__lock(mem, &k->lock);
		k->st.fail_nomem++;
		dmm__unlock(mem, &k->lock);
	}
	if (__builtin_expect(m->n != 0, 1)) {
		obj = mag_take(m, m->n);
		count_alloc(mem, k, m, size, packed);
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
	struct dmm_slab_state *sl;
	struct dmm_cpu_thread *r;
	unsigned row;
	struct kcache *k;
	struct mag *m;
	uint32_t n;
	bool packed;
	int c;

	/* (no virt_to_phys hook: only the slow path fills magazines, and it
	 * refuses, so the fast path finds them empty) */
	if (__builtin_expect(!mem || !ptr || size - 1 >= DMM_KMALLOC_MAX_CACHE || (flags & ~DMM_GFP_PACKED), 0))
		return kmalloc_slow(mem, size, flags, ptr);
	sl = mem->slab;
	row = sl->row_for[(flags & DMM_GFP_PACKED) != 0];
	packed = row == 0;
	c = sl->class_for[row][(size + 7) / 8];
	if (__builtin_expect(c < 0 || !dmm__cpu_try_enter(mem, &r), 0))
		return kmalloc_slow(mem, size, flags, ptr);
	k = &sl->cache[0][c];
	m = &k->mags[r->cpu];
	n = m->n;
	if (__builtin_expect(n == 0, 0)) {
		dmm__cpu_leave(r);
		return kmalloc_slow(mem, size, flags, ptr);
	}
	*ptr = mag_take(m, n);
	count_alloc(mem, k, m, size, packed);
	dmm__cpu_leave(r);
	return 0;
}

/* Is @k (a page's owner) one of this allocator's caches? One unsigned
 * compare. */
static inline bool is_cache(const struct dmm_mem *mem, const void *k)
{
	return (uintptr_t)k - (uintptr_t)&mem->slab->cache[0][0] < sizeof(mem->slab->cache);
}

/* Does offset @off in a slab of @k start an object? The index by a
 * multiplication (exact: off < 2^15, size <= 2^13). */
static inline bool object_start(const struct kcache *k, uint64_t off)
{
	uint64_t idx = (off * k->recip) >> 32;

	return idx * k->size == off && idx < k->objs;
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
	__atomic_fetch_and(&pg->flags, (uint8_t)~DMM_PGF_KLARGE, __ATOMIC_RELAXED);
	return dmm_page_free(mem, pg->pfn, dmm__order(pg));
}

/* Give the oldest @n objects of @m back to their slabs. */
static __attribute__((noinline)) void mag_drain(struct kcache *k, struct mag *m, unsigned n)
{
	struct dmm_mem *mem = k->mem;

	dmm__lock(mem, &k->lock);
	for (unsigned i = 0; i < n; i++) {
		dmm_phys_t pa;
		dmm__virt_to_phys(mem, m->obj[i], &pa);
		slab_put(k, m->obj[i], head_of(mem, k, dmm_phys_to_pfn(pa)));
	}
	dmm__unlock(mem, &k->lock);
	for (unsigned i = n; i < m->n; i++)
		m->obj[i - n] = m->obj[i];
	m->n -= n;
}

/* Is @ptr in magazine @m (n objects) already: freed twice? */
static bool mag_holds(const struct mag *m, uint32_t n, const void *ptr)
{
	for (uint32_t i = 0; i < n; i++)
		if (m->obj[i] == ptr)
			return true;
	return false;
}

/* Put @ptr in magazine @m, which has room for it (in its CPU's section). */
static inline void mag_push(const struct dmm_slab_state *sl, struct mag *m, uint32_t n, const void *ptr)
{
	*(uintptr_t *)(uintptr_t)ptr = sl->free_mark;
	m->obj[n] = (void *)(uintptr_t)ptr;
	m->n = n + 1;
	dmm__pcpu_add(&m->frees, 1);
}

/* Every free the fast path does not finish: argument errors, large
 * objects, a full magazine, a double free, a thread that does not own its
 * slot. */
static __attribute__((noinline)) int kfree_slow(struct dmm_mem *mem, const void *ptr)
{
	struct kcache *k;
	struct dmm_page *head, *pg = (struct dmm_page *)0;
	struct mag *m;
	unsigned cpu;
	uint32_t n;
	int err = lookup(mem, ptr, &k, &head, &pg);

	if (err) {
		if (err == -DMM_ENOENT && !free_large(mem, ptr, pg))
			return 0;
		return err == -DMM_EINVAL ? dmm__count_invalid(mem) : err;
	}
	cpu = dmm__cpu_enter(mem);
	m = &k->mags[cpu];
	n = m->n;
	if (*(const uintptr_t *)ptr == mem->slab->free_mark && mag_holds(m, n, ptr)) {
		dmm__cpu_exit(mem, cpu);
		return -DMM_ENOENT;
	}
	if (n == MAG_SIZE) {
		mag_drain(k, m, MAG_BATCH);
		n = m->n;
	}
	mag_push(mem->slab, m, n, ptr);
	dmm__cpu_exit(mem, cpu);
	return 0;
}

/*
 * The cache of object @pa for the fast path, or NULL (the slow path then
 * looks again and says why). A page's owner is one of our caches exactly
 * while it belongs to a live slab of that cache (set when the slab is
 * made, cleared before it is freed), and slabs are naturally aligned, so
 * the offset in the slab needs no head descriptor.
 */
static inline struct kcache *cache_of_fast(struct dmm_mem *mem, dmm_phys_t pa)
{
	const struct dmm_page *pg = dmm__pfn_page(mem, dmm_phys_to_pfn(pa));
	struct kcache *k;

	if (!pg || !is_cache(mem, k = dmm__owner(pg)) || !object_start(k, pa & ((DMM_PAGE_SIZE << k->order) - 1)))
		return (struct kcache *)0;
	return k;
}

/* The fast path: an object inside the linear map, this thread the owner
 * of its CPU slot, room in that CPU's magazine; tail calls only. */
int dmm_kfree(struct dmm_mem *mem, const void *ptr)
{
	struct dmm_cpu_thread *r;
	struct kcache *k;
	struct mag *m;
	uintptr_t off;
	uint32_t n;

	/* (no virt_to_phys hook: no slab exists, so no page has a cache owner) */
	if (__builtin_expect(!mem || !ptr, 0))
		return kfree_slow(mem, ptr);
	off = (uintptr_t)ptr - (uintptr_t)mem->plat.linear_virt;
	if (__builtin_expect(off >= mem->plat.linear_size || !(k = cache_of_fast(mem, mem->plat.linear_phys + off)) ||
				     !dmm__cpu_try_enter(mem, &r),
			     0))
		return kfree_slow(mem, ptr);
	m = &k->mags[r->cpu];
	n = m->n;
	/* a full magazine, or the mark of a freed object: maybe freed twice */
	if (__builtin_expect(n == MAG_SIZE || *(const uintptr_t *)ptr == mem->slab->free_mark, 0)) {
		dmm__cpu_leave(r);
		return kfree_slow(mem, ptr);
	}
	mag_push(mem->slab, m, n, ptr);
	dmm__cpu_leave(r);
	return 0;
}

size_t dmm_ksize(struct dmm_mem *mem, const void *ptr)
{
	struct kcache *k;
	struct dmm_page *head, *pg = (struct dmm_page *)0;
	int err = lookup(mem, ptr, &k, &head, &pg);

	if (!err)
		return k->size;
	if (pg && dmm__state(pg) == DMM_PAGE_ALLOC && (pg->flags & DMM_PGF_KLARGE))
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
	uint64_t cached = 0, allocs = 0, frees = 0, req = 0, aw = 0;

	for (unsigned c = 0; c < mem->plat.nr_cpus; c++) {
		const struct mag *m = &k->mags[c];
		cached += m->n;
		allocs += m->allocs;
		frees += m->frees;
		req += m->requested;
		aw += m->align_waste;
	}
	dmm__lock(mem, &k->lock);
	*out = k->st;
	out->allocs = allocs;
	out->frees = frees;
	out->requested_bytes = req;
	out->wasted_bytes = allocs * k->size - req;
	out->align_waste_bytes = aw;
	out->cached = cached;
	out->objects = out->allocs - out->frees;
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

static int check_slab(struct kcache *k, struct dmm_page *head, bool full, uint64_t *inuse)
{
	struct dmm_mem *mem = k->mem;
	uint8_t *base = slab_base(k, head);
	uint32_t nfree = 0;

	if (!(head->flags & DMM_PGF_SLAB) || dmm__owner(head) != k || dmm__state(head) != DMM_PAGE_ALLOC ||
	    head->refcount > k->objs || (full && head->refcount != k->objs) || (!full && head->refcount == k->objs))
		goto bad;
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

/* One cache against its counters (every CPU held). */
static void check_cache(void *arg)
{
	struct class_snap *cs = arg;
	struct kcache *k = cs->k;
	struct dmm_mem *mem = k->mem;
	uint64_t inuse = 0, slabs = 0, cached = 0, allocs = 0, frees = 0;
	int err = 0;

	dmm__lock(mem, &k->lock);
	for (struct dmm_page *h = k->partial; h && !err; h = h->next, slabs++)
		err = check_slab(k, h, false, &inuse);
	for (struct dmm_page *h = k->full; h && !err; h = h->next, slabs++)
		err = check_slab(k, h, true, &inuse);
	if (!err && k->empty) {
		err = check_slab(k, k->empty, false, &inuse);
		slabs++;
	}
	for (unsigned cpu = 0; cpu < mem->plat.nr_cpus; cpu++) {
		cached += k->mags[cpu].n;
		allocs += k->mags[cpu].allocs;
		frees += k->mags[cpu].frees;
		if (k->mags[cpu].n > MAG_SIZE)
			err = -DMM_EFAULT;
	}
	/* slab-side in-use = live objects + magazine objects */
	if (!err && (slabs != k->st.slabs || inuse != allocs - frees + cached)) {
		dmm_log(mem, DMM_LOG_ERR, "slab check: cache %u/%u: %llu slabs (count %llu), %llu in use",
			k->set, k->size, (unsigned long long)slabs, (unsigned long long)k->st.slabs,
			(unsigned long long)inuse);
		err = -DMM_EFAULT;
	}
	dmm__unlock(mem, &k->lock);
	cs->err = err;
}

static void check_all(void *arg)
{
	struct class_snap *cs = arg;
	struct dmm_mem *mem = cs->k->mem;

	for (unsigned set = 0; set < DMM_KMALLOC_NR_SETS && !cs->err; set++)
		for (unsigned c = 0; c < DMM_KMALLOC_NR_CLASSES && !cs->err; c++) {
			cs->k = &mem->slab->cache[set][c];
			check_cache(cs);
		}
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

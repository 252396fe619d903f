/* SPDX-License-Identifier: MIT */
/*
 * Coherent atomic pools: pre-remapped (flushed, uncached) memory for
 * DMM_GFP_ATOMIC coherent allocations of non-coherent devices.
 *
 * Structure
 *
 *   struct astate (pages from the range allocator, never device-visible)
 *     pool[DMA], pool[DMA32], pool[ANY]     one per constraint the machine has
 *       lock, chunk[] (<= 64), free lists per order (0..16), counters
 *     address index: chunks of every pool sorted by physical address,
 *       read lock-free under a sequence count
 *
 *   struct chunk (its own pages): the chunk's pfn and order, and one
 *     12-byte descriptor per page of the chunk (buddy state, order, links)
 *
 * A chunk is 2^k pages aligned to its size, from the range allocator inside
 * the pool's window, flushed out of the caches and remapped uncached before
 * it is added. The buddy allocator runs over all chunks of a pool at once:
 * free lists per order hold block ids (chunk slot << 24 | page), blocks
 * merge only within their chunk. Allocation: O(orders); free: O(orders);
 * address -> chunk: O(log chunks) without a lock.
 *
 * Chunks and all bookkeeping are the library's own memory
 * (dmm__lib_alloc_range): dmm_page_pin refuses every page of them, so a
 * buffer served from a pool holds no pin when it comes back, and the
 * release of a chunk is never refused.
 *
 * Growth. An allocation that leaves free pages below the threshold (or a
 * failed one) sets the pool's refill_pending flag; the thread that set it
 * queues one background refill through the defer hook. The refill adds
 * chunks while the pool is below its threshold and under its maximum, then
 * clears the flag and re-checks (an allocation may have raced with it). A
 * refill runs under the pool's "busy" claim, so a synchronous refill and a
 * background one never grow the same pool at once. Without a defer hook the
 * flag means "wanted": the next non-atomic dmm_dma_alloc_coherent() (or
 * dmm_dma_atomic_pool_refill()) runs it.
 *
 * Lock order: pool lock -> nothing (the index lock and zone locks are taken
 * with no pool lock held).
 */
#include <dmamem/dma_pool_atomic.h>

#include "dma/dma_internal.h"

unsigned dmm__dev_phys_windows(const struct dmm_device *dev, const struct dmm_constraint *c,
			       struct dmm_constraint *out, unsigned max);

#define NR_ORDERS (DMM_ATOMIC_POOL_MAX_ORDER + 1)
#define MAX_CHUNKS DMM_ATOMIC_POOL_MAX_CHUNKS
#define IDX_CAP (DMM_NR_ATOMIC_POOLS * MAX_CHUNKS)
#define NIL UINT32_MAX
#define ID(slot, page) (((uint32_t)(slot) << 24) | (uint32_t)(page))
#define ID_SLOT(id) ((id) >> 24)
#define ID_PAGE(id) ((id) & 0xffffffu)

_Static_assert(DMM_ATOMIC_POOL_MAX_ORDER < 24, "block ids hold 24 bits of page index");
_Static_assert(MAX_CHUNKS <= 256, "block ids hold 8 bits of chunk slot");

enum { PG_TAIL = 0, PG_FREE, PG_ALLOC };

struct apage {
	uint32_t next, prev; /* free list links (block ids) */
	uint8_t state;       /* PG_*; only block heads are FREE or ALLOC */
	uint8_t order;
	uint16_t pages_m1;   /* ALLOC head: the pages asked for, minus one (the free's size must agree) */
};

_Static_assert(((uint64_t)1 << DMM_ATOMIC_POOL_MAX_ORDER) - 1 <= UINT16_MAX, "a block's page count fits pages_m1");

struct apool;

struct chunk {
	struct apool *pool;
	dmm_pfn_t pfn;          /* first page */
	unsigned order;         /* 2^order pages, aligned to that */
	unsigned slot;          /* index in pool->chunk[] */
	int live;               /* its pages are in the free lists (pool lock) */
	dmm_pfn_t meta_pfn;     /* this structure's own pages */
	uint64_t meta_pages;
	struct apage pg[];
};

struct apool {
	_Alignas(64) struct dmm_lock lock;
	struct astate *s;
	unsigned kind;
	int present;
	dmm_phys_t limit;                /* chunks lie below (DMM_PHYS_MAX: anywhere) */
	dmm_phys_t span_lo, span_hi;     /* RAM chunks may come from */
	uint64_t initial, threshold, step, max; /* pages */
	/* under the lock (size/free/nr_chunks also read atomically outside) */
	uint32_t nr_chunks;
	struct chunk *chunk[MAX_CHUNKS];
	uint32_t head[NR_ORDERS];
	uint64_t nr_free[NR_ORDERS];
	uint64_t size_pages, free_pages, high_water;
	uint64_t allocs, frees;
	/* atomic */
	uint64_t failures;
	int refill_pending;
	int busy;
	uint32_t jobs;                   /* background refills queued and not yet returned */
	unsigned want_order;             /* order + 1 of a failed request; 0 none */
	uint64_t refills_queued, refills_done, refills_sync, grow_failures, bytes_remapped;
};

struct idx_ent {
	dmm_phys_t lo, hi;
	struct chunk *ch;
};

struct astate {
	struct dmm_mem *mem;
	dmm_pfn_t self_pfn;
	uint64_t self_pages;
	struct apool pool[DMM_NR_ATOMIC_POOLS];
	_Alignas(64) struct dmm_lock idx_lock;
	uint32_t idx_seq;                /* odd while the index changes */
	uint32_t idx_n;
	dmm_phys_t idx_lo, idx_hi;       /* span of every chunk */
	struct idx_ent idx[IDX_CAP];
};

static const char *const pool_names[] = { "DMA", "DMA32", "any" };

const char *dmm_atomic_pool_name(enum dmm_atomic_pool_kind k)
{
	return (unsigned)k < DMM_NR_ATOMIC_POOLS ? pool_names[k] : "?";
}

static struct astate *state(const struct dmm_mem *mem)
{
	return (struct astate *)__atomic_load_n(&mem->dma_atomic_pool, __ATOMIC_ACQUIRE);
}

static unsigned order_of(uint64_t pages)
{
	return pages <= 1 ? 0 : 64u - (unsigned)__builtin_clzll(pages - 1);
}

#define LD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define ST(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define INC(x, v) __atomic_fetch_add(&(x), (v), __ATOMIC_RELAXED)
/* Index entries: written with release after the sequence count turned odd,
 * read with acquire before it is read again (a seqlock without fences). */
#define LDA(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define STR(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)

/* ---- address index -------------------------------------------------------------- */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

static struct chunk *idx_find(struct astate *s, dmm_phys_t pa)
{
	for (;;) {
		uint32_t seq = __atomic_load_n(&s->idx_seq, __ATOMIC_ACQUIRE);
		struct chunk *found = (struct chunk *)0;

		if (seq & 1) {
			cpu_relax();
			continue;
		}
		if (pa >= LDA(s->idx_lo) && pa < LDA(s->idx_hi)) {
			uint32_t lo = 0, hi = LDA(s->idx_n);
			if (hi > IDX_CAP)
				hi = IDX_CAP;
			while (lo < hi) {
				uint32_t mid = lo + (hi - lo) / 2;
				const struct idx_ent *e = &s->idx[mid];
				if (pa < LDA(e->lo)) {
					hi = mid;
				} else if (pa >= LDA(e->hi)) {
					lo = mid + 1;
				} else {
					found = LDA(e->ch);
					break;
				}
			}
		}
		if (__atomic_load_n(&s->idx_seq, __ATOMIC_RELAXED) == seq)
			return found;
	}
}

static void idx_write_begin(struct astate *s)
{
	dmm__lock(s->mem, &s->idx_lock);
	__atomic_store_n(&s->idx_seq, s->idx_seq + 1, __ATOMIC_RELAXED);
}

static void idx_write_end(struct astate *s)
{
	__atomic_store_n(&s->idx_seq, s->idx_seq + 1, __ATOMIC_RELEASE);
	dmm__unlock(s->mem, &s->idx_lock);
}

static void idx_set_span(struct astate *s)
{
	uint32_t n = s->idx_n;
	STR(s->idx_lo, n ? s->idx[0].lo : 0);
	STR(s->idx_hi, n ? s->idx[n - 1].hi : 0);
}

static int idx_insert(struct astate *s, struct chunk *ch)
{
	dmm_phys_t lo = dmm_pfn_to_phys(ch->pfn), hi = lo + (DMM_PAGE_SIZE << ch->order);
	uint32_t n, pos;

	idx_write_begin(s);
	n = s->idx_n;
	if (n == IDX_CAP) {
		idx_write_end(s);
		return -DMM_ENOSPC;
	}
	for (pos = n; pos > 0 && s->idx[pos - 1].lo > lo; pos--) {
		STR(s->idx[pos].lo, s->idx[pos - 1].lo);
		STR(s->idx[pos].hi, s->idx[pos - 1].hi);
		STR(s->idx[pos].ch, s->idx[pos - 1].ch);
	}
	STR(s->idx[pos].lo, lo);
	STR(s->idx[pos].hi, hi);
	STR(s->idx[pos].ch, ch);
	STR(s->idx_n, n + 1);
	idx_set_span(s);
	idx_write_end(s);
	return 0;
}

static void idx_remove(struct astate *s, struct chunk *ch)
{
	uint32_t n, i;

	idx_write_begin(s);
	n = s->idx_n;
	for (i = 0; i < n && s->idx[i].ch != ch; i++)
		;
	if (i < n) {
		for (; i + 1 < n; i++) {
			STR(s->idx[i].lo, s->idx[i + 1].lo);
			STR(s->idx[i].hi, s->idx[i + 1].hi);
			STR(s->idx[i].ch, s->idx[i + 1].ch);
		}
		STR(s->idx_n, n - 1);
		idx_set_span(s);
	}
	idx_write_end(s);
}

/* ---- buddy over the chunks (pool lock held) -------------------------------------- */

static inline struct apage *apg(struct apool *p, uint32_t id)
{
	return &p->chunk[ID_SLOT(id)]->pg[ID_PAGE(id)];
}

static void list_add(struct apool *p, uint32_t id, unsigned o)
{
	struct apage *g = apg(p, id);

	g->state = PG_FREE;
	g->order = (uint8_t)o;
	g->prev = NIL;
	g->next = p->head[o];
	if (g->next != NIL)
		apg(p, g->next)->prev = id;
	p->head[o] = id;
	p->nr_free[o]++;
}

static void list_del(struct apool *p, uint32_t id)
{
	struct apage *g = apg(p, id);
	unsigned o = g->order;

	if (g->prev != NIL)
		apg(p, g->prev)->next = g->next;
	else
		p->head[o] = g->next;
	if (g->next != NIL)
		apg(p, g->next)->prev = g->prev;
	g->state = PG_TAIL;
	g->next = g->prev = NIL;
	p->nr_free[o]--;
}

static uint32_t buddy_alloc(struct apool *p, unsigned order)
{
	unsigned o;
	uint32_t id;
	struct apage *g;

	for (o = order; o < NR_ORDERS && p->head[o] == NIL; o++)
		;
	if (o == NR_ORDERS)
		return NIL;
	id = p->head[o];
	list_del(p, id);
	while (o > order) {
		o--;
		list_add(p, id + ((uint32_t)1 << o), o);
	}
	g = apg(p, id);
	g->state = PG_ALLOC;
	g->order = (uint8_t)order;
	return id;
}

static void buddy_free(struct apool *p, struct chunk *ch, uint32_t page, unsigned o)
{
	ch->pg[page].state = PG_TAIL;
	while (o < ch->order) {
		uint32_t b = page ^ ((uint32_t)1 << o);
		const struct apage *bg = &ch->pg[b];
		if (bg->state != PG_FREE || bg->order != o)
			break;
		list_del(p, ID(ch->slot, b));
		page &= ~((uint32_t)1 << o);
		o++;
	}
	list_add(p, ID(ch->slot, page), o);
}

/* ---- growth ------------------------------------------------------------------------ */

static void refill_work(void *arg);

static bool can_grow(struct apool *p)
{
	return LD(p->nr_chunks) < MAX_CHUNKS && LD(p->size_pages) < p->max;
}

static bool want_more(struct apool *p)
{
	return can_grow(p) && (LD(p->free_pages) < p->threshold || LD(p->want_order) != 0);
}

/* Ask for a refill: queue one in the background, or (no defer hook) leave
 * it wanted for the next non-atomic caller. Callable from atomic context. */
static void kick(struct apool *p)
{
	const struct dmm_platform *pl = &p->s->mem->plat;

	if (__atomic_exchange_n(&p->refill_pending, 1, __ATOMIC_ACQ_REL))
		return; /* one refill at a time */
	if (!pl->defer)
		return;
	INC(p->jobs, 1); /* before the job can run (and end) */
	if (pl->defer(pl->ctx, refill_work, p)) {
		__atomic_fetch_sub(&p->jobs, 1, __ATOMIC_RELEASE);
		__atomic_store_n(&p->refill_pending, 0, __ATOMIC_RELEASE);
		INC(p->grow_failures, 1);
		return;
	}
	INC(p->refills_queued, 1);
}

/* Forget the failed request's order + 1 @w read before, unless a request
 * raised it since (its hint then stays for the next chunk). */
static void want_clear(struct apool *p, unsigned w)
{
	__atomic_compare_exchange_n(&p->want_order, &w, 0u, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

/* Order of the next chunk: the step, or a failed request's order, within max. */
static unsigned next_order(struct apool *p)
{
	unsigned o = order_of(p->step), w = LD(p->want_order);
	uint64_t room = p->max - LD(p->size_pages);

	if (w && w - 1 > o)
		o = w - 1;
	while (o && ((uint64_t)1 << o) > room)
		o--;
	if (w && w - 1 > o)
		want_clear(p, w); /* cannot be had under the maximum */
	return o;
}

/* Add one chunk of 2^order pages: allocate, flush, remap uncached, index,
 * free. Process context, no lock held. */
static int grow(struct apool *p, unsigned order)
{
	struct astate *s = p->s;
	struct dmm_mem *mem = s->mem;
	const struct dmm_platform *pl = &mem->plat;
	struct dmm_constraint any = DMM_CONSTRAINT_ANY, c = dmm_constraint_below(p->limit);
	uint64_t n = (uint64_t)1 << order, bytes = n * DMM_PAGE_SIZE;
	uint64_t mpages = dmm_align_up(sizeof(struct chunk) + n * sizeof(struct apage), DMM_PAGE_SIZE) >>
			  DMM_PAGE_SHIFT;
	struct chunk *ch;
	dmm_pfn_t pfn, mpfn;
	unsigned slot, w;
	int err;

	c.align = bytes;
	/* the chunk and its bookkeeping are the library's own memory: no pin
	 * lands on a page of either, so their frees are never refused */
	err = dmm__lib_alloc_range(mem, &any, mpages, 0, &mpfn);
	if (err)
		goto fail;
	dmm__meta_zero(mem, mpfn, mpages);
	err = dmm__lib_alloc_range(mem, &c, n, 0, &pfn);
	if (err)
		goto fail_meta;
	/* no dirty line may later be written back over what a device writes */
	if (pl->cache_maint)
		pl->cache_maint(pl->ctx, DMM_CACHE_FLUSH, dmm_pfn_to_phys(pfn), bytes);
	if (pl->set_memattr && (err = pl->set_memattr(pl->ctx, dmm_pfn_to_phys(pfn), bytes, DMM_MEMATTR_UC)) != 0) {
		pl->set_memattr(pl->ctx, dmm_pfn_to_phys(pfn), bytes, DMM_MEMATTR_WB);
		err = err < 0 ? err : -err;
		goto fail_chunk;
	}
	INC(p->bytes_remapped, bytes);
	ch = dmm_pfn_to_virt(mem, mpfn);
	ch->pool = p;
	ch->pfn = pfn;
	ch->order = order;
	ch->meta_pfn = mpfn;
	ch->meta_pages = mpages;
	for (uint64_t i = 0; i < n; i++)
		ch->pg[i].next = ch->pg[i].prev = NIL;

	dmm__lock(mem, &p->lock);
	if (p->nr_chunks == MAX_CHUNKS) {
		dmm__unlock(mem, &p->lock);
		err = -DMM_ENOSPC;
		goto fail_attr;
	}
	slot = p->nr_chunks;
	ch->slot = slot;
	p->chunk[slot] = ch; /* resolvable by id, not yet free */
	ST(p->nr_chunks, slot + 1);
	dmm__unlock(mem, &p->lock);

	/* index first: a block handed out must be found on free */
	err = idx_insert(s, ch);
	dmm__lock(mem, &p->lock);
	if (err) {
		/* the last slot is ours: only grow() adds chunks, one at a time */
		p->chunk[slot] = (struct chunk *)0;
		ST(p->nr_chunks, slot);
		dmm__unlock(mem, &p->lock);
		goto fail_attr;
	}
	ch->live = 1;
	list_add(p, ID(slot, 0), order);
	ST(p->size_pages, p->size_pages + n);
	ST(p->free_pages, p->free_pages + n);
	dmm__unlock(mem, &p->lock);
	w = LD(p->want_order);
	if (w && w - 1 <= order)
		want_clear(p, w);
	return 0;

fail_attr:
	if (pl->set_memattr)
		pl->set_memattr(pl->ctx, dmm_pfn_to_phys(pfn), bytes, DMM_MEMATTR_WB);
fail_chunk:
	dmm__lib_free_range(mem, pfn, n);
fail_meta:
	dmm__lib_free_range(mem, mpfn, mpages);
fail:
	INC(p->grow_failures, 1);
	dmm_log(mem, DMM_LOG_WARN, "atomic pool %s: cannot add %llu KiB: %s", pool_names[p->kind],
		(unsigned long long)(bytes >> 10), dmm_strerror(err));
	return err;
}

/* Grow while below the threshold; then release the claim and re-check. */
static unsigned refill(struct apool *p, int sync)
{
	unsigned added = 0;
	bool failed = false;

	if (__atomic_exchange_n(&p->busy, 1, __ATOMIC_ACQUIRE))
		return 0; /* the running refill re-checks when it ends */
	while (!failed && want_more(p)) {
		if (grow(p, next_order(p)))
			failed = true;
		else
			added++;
	}
	INC(p->refills_done, 1);
	if (sync)
		INC(p->refills_sync, 1);
	__atomic_store_n(&p->busy, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&p->refill_pending, 0, __ATOMIC_RELEASE);
	if (!failed && want_more(p))
		kick(p); /* allocations raced with the end of this refill */
	return added;
}

static void refill_work(void *arg)
{
	struct apool *p = arg;

	refill(p, 0);
	/* the last access: from here on a destroy may free the pool */
	__atomic_fetch_sub(&p->jobs, 1, __ATOMIC_RELEASE);
}

void dmm__atomic_pool_poll(struct dmm_mem *mem)
{
	struct astate *s = state(mem);

	if (!s || mem->plat.defer)
		return;
	for (unsigned k = 0; k < DMM_NR_ATOMIC_POOLS; k++)
		if (s->pool[k].present && __atomic_load_n(&s->pool[k].refill_pending, __ATOMIC_ACQUIRE))
			refill(&s->pool[k], 1);
}

int dmm_dma_atomic_pool_refill(struct dmm_mem *mem)
{
	struct astate *s;
	int added = 0;

	if (!mem)
		return -DMM_EINVAL;
	s = state(mem);
	if (!s)
		return -DMM_ENOENT;
	for (unsigned k = 0; k < DMM_NR_ATOMIC_POOLS; k++) {
		struct apool *p = &s->pool[k];
		if (!p->present || !want_more(p))
			continue;
		__atomic_store_n(&p->refill_pending, 1, __ATOMIC_RELEASE);
		added += (int)refill(p, 1);
	}
	return added;
}

/* ---- the atomic path ---------------------------------------------------------------- */

/* Block order for @pages on @dev: its coherent alignment is honoured by the
 * natural alignment of a larger block. -DMM_EINVAL if @pages is 0 (a size
 * that wrapped) or if its boundary is smaller than the block. */
static int dev_order(const struct dmm_device *dev, uint64_t pages, unsigned *order)
{
	const struct dmm_constraint *l = &dev->lim[1];
	unsigned o;

	if (!pages)
		return -DMM_EINVAL;
	o = order_of(dmm_max64(pages, l->align >> DMM_PAGE_SHIFT));
	if (o >= 64 - DMM_PAGE_SHIFT || (l->boundary && (DMM_PAGE_SIZE << o) > l->boundary))
		return -DMM_EINVAL;
	*order = o;
	return 0;
}

/* The least restricted pool whose whole span lies in one of the device's
 * physical windows. */
static struct apool *pick_pool(struct astate *s, const struct dmm_device *dev)
{
	struct dmm_constraint w[DMM_MAX_DMA_RANGES];
	unsigned nw = dmm__dev_phys_windows(dev, &dev->lim[1], w, DMM_MAX_DMA_RANGES);

	for (int k = DMM_NR_ATOMIC_POOLS - 1; k >= 0; k--) {
		struct apool *p = &s->pool[k];
		if (!p->present)
			continue;
		for (unsigned i = 0; i < nw; i++)
			if (w[i].lo <= p->span_lo && p->span_hi <= w[i].hi)
				return p;
	}
	return (struct apool *)0;
}

int dmm__atomic_pool_alloc(struct dmm_device *dev, uint64_t pages, dmm_pfn_t *pfn)
{
	struct dmm_mem *mem = dev->mem;
	struct astate *s = state(mem);
	struct apool *p;
	struct chunk *ch;
	uint32_t id;
	unsigned order;
	bool low;
	int err;

	if (!s)
		return -DMM_ENOTSUP;
	err = dev_order(dev, pages, &order);
	if (err)
		return err;
	p = pick_pool(s, dev);
	if (!p)
		return -DMM_ENOTSUP;
	if (order > DMM_ATOMIC_POOL_MAX_ORDER) {
		INC(p->failures, 1);
		return -DMM_ENOMEM;
	}
	dmm__lock(mem, &p->lock);
	id = buddy_alloc(p, order);
	if (id != NIL) {
		uint64_t used;
		ST(p->free_pages, p->free_pages - ((uint64_t)1 << order));
		used = p->size_pages - p->free_pages;
		if (used > p->high_water)
			p->high_water = used;
		p->allocs++;
		ch = p->chunk[ID_SLOT(id)];
		ch->pg[ID_PAGE(id)].pages_m1 = (uint16_t)(pages - 1);
	} else {
		INC(p->failures, 1);
		ch = (struct chunk *)0;
	}
	dmm__unlock(mem, &p->lock);
	if (!ch) {
		unsigned w = LD(p->want_order);
		while (w < order + 1 && !__atomic_compare_exchange_n(&p->want_order, &w, order + 1, false,
								     __ATOMIC_RELAXED, __ATOMIC_RELAXED))
			;
		if (can_grow(p))
			kick(p);
		return -DMM_ENOMEM;
	}
	low = LD(p->free_pages) < p->threshold;
	if (low && can_grow(p))
		kick(p);
	*pfn = ch->pfn + ID_PAGE(id);
	/* through the uncached mapping: nothing to flush afterwards */
	dmm__zero_pages(mem, *pfn, (uint64_t)1 << order);
	return 0;
}

int dmm__atomic_pool_free(struct dmm_device *dev, dmm_phys_t pa, uint64_t pages)
{
	struct dmm_mem *mem = dev->mem;
	struct astate *s = state(mem);
	struct chunk *ch;
	struct apool *p;
	uint64_t page;
	unsigned order;
	int err = 0;

	if (!s || !(ch = idx_find(s, pa)))
		return 1; /* not pool memory */
	/* no pin to look for: a chunk's pages refuse every pin */
	p = ch->pool;
	page = dmm_phys_to_pfn(pa) - ch->pfn;
	if (dev_order(dev, pages, &order))
		return -DMM_EINVAL;
	dmm__lock(mem, &p->lock);
	if (!ch->live || ch->pg[page].state != PG_ALLOC)
		err = -DMM_ENOENT;
	else if (ch->pg[page].order != order || ch->pg[page].pages_m1 != pages - 1)
		err = -DMM_EINVAL; /* (a size of the same order is still another size) */
	if (!err) {
		buddy_free(p, ch, (uint32_t)page, order);
		ST(p->free_pages, p->free_pages + ((uint64_t)1 << order));
		p->frees++;
	}
	dmm__unlock(mem, &p->lock);
	return err;
}

int dmm__atomic_pool_check(struct dmm_device *dev, dmm_phys_t pa, uint64_t pages)
{
	struct dmm_mem *mem = dev->mem;
	struct astate *s = state(mem);
	struct chunk *ch;
	unsigned order;
	int err = 0;

	if (!s || !(ch = idx_find(s, pa)))
		return -DMM_ENOENT;
	if (dev_order(dev, pages, &order))
		return -DMM_EINVAL;
	dmm__lock(mem, &ch->pool->lock);
	if (!ch->live || ch->pg[dmm_phys_to_pfn(pa) - ch->pfn].state != PG_ALLOC)
		err = -DMM_ENOENT;
	else if (ch->pg[dmm_phys_to_pfn(pa) - ch->pfn].order != order ||
		 ch->pg[dmm_phys_to_pfn(pa) - ch->pfn].pages_m1 != pages - 1)
		err = -DMM_EINVAL;
	dmm__unlock(mem, &ch->pool->lock);
	return err;
}

int dmm__atomic_pool_owns(struct dmm_device *dev, dmm_phys_t pa)
{
	struct astate *s = state(dev->mem);
	return s && idx_find(s, pa) ? 1 : 0;
}

/* ---- set-up, teardown, statistics ------------------------------------------------------ */

/* Pages holding @b bytes, rounded up; exact for every @b (no wrap near 2^64). */
static uint64_t bytes_to_pages(uint64_t b)
{
	return (b >> DMM_PAGE_SHIFT) + ((b & (DMM_PAGE_SIZE - 1)) != 0);
}

static uint64_t pow2_down(uint64_t x)
{
	return x ? (uint64_t)1 << dmm_ilog2(x) : 0;
}

static int configure(struct dmm_mem *mem, struct apool *p, unsigned k, const struct dmm_atomic_pool_cfg *cfg)
{
	const struct dmm_machine *m = &mem->machine;
	const uint64_t max_chunk = (uint64_t)1 << DMM_ATOMIC_POOL_MAX_ORDER;
	uint64_t below, linux_pages, init;

	p->kind = k;
	switch (k) {
	case DMM_ATOMIC_POOL_DMA:
		p->present = mem->zone_of_type[DMM_ZONE_DMA] >= 0 &&
			     (mem->zone_of_type[DMM_ZONE_DMA32] >= 0 || mem->zone_of_type[DMM_ZONE_NORMAL] >= 0);
		p->limit = m->dma_limit;
		break;
	case DMM_ATOMIC_POOL_DMA32:
		p->present = mem->zone_of_type[DMM_ZONE_DMA32] >= 0 && mem->zone_of_type[DMM_ZONE_NORMAL] >= 0;
		p->limit = m->dma32_limit;
		break;
	default:
		p->present = mem->nr_zones > 0;
		p->limit = DMM_PHYS_MAX;
		break;
	}
	if (cfg && cfg->initial == DMM_ATOMIC_POOL_NONE)
		p->present = 0;
	if (!p->present)
		return 0;
	p->span_lo = dmm_pfn_to_phys(mem->min_pfn);
	p->span_hi = dmm_min64(p->limit, dmm_pfn_to_phys(mem->max_pfn));
	below = dmm__ram_pages_in(m, 0, p->span_hi >> DMM_PAGE_SHIFT);

	/* Linux: 128 KiB per GiB of RAM, 128 KiB .. 4 MiB; here also at most
	 * 1/32 of the memory the pool draws from */
	linux_pages = dmm_min64(dmm_max64(mem->managed_pages / 8192, 32), 1024);
	init = dmm_min64((uint64_t)1 << order_of(linux_pages), pow2_down(dmm_max64(below / 32, 1)));
	if (cfg && cfg->initial) {
		if (bytes_to_pages(cfg->initial) > max_chunk)
			return -DMM_EINVAL;
		init = (uint64_t)1 << order_of(bytes_to_pages(cfg->initial));
	}
	p->initial = init;
	p->threshold = cfg && cfg->threshold ? bytes_to_pages(cfg->threshold) : dmm_max64(init / 2, 1);
	p->step = init;
	if (cfg && cfg->step) {
		if (bytes_to_pages(cfg->step) > max_chunk)
			return -DMM_EINVAL;
		p->step = (uint64_t)1 << order_of(bytes_to_pages(cfg->step));
	}
	p->max = dmm_max64(init, dmm_min64(16 * init, below / 8));
	if (cfg && cfg->max) {
		/* rounded up like the other sizes, so they compare in pages as
		 * they do in bytes; at most the last page below 2^64, so the
		 * statistics' byte value does not wrap */
		p->max = dmm_min64(bytes_to_pages(cfg->max), UINT64_MAX >> DMM_PAGE_SHIFT);
		if (p->max < init)
			return -DMM_EINVAL;
	}
	if (p->threshold > p->max)
		return -DMM_EINVAL;
	return 0;
}

/* Give a chunk back, write-back again. Chunk and bookkeeping are the
 * library's own memory (grow): no pin holds a page of them, so the claim
 * cannot be refused; it comes first all the same, so that the attribute
 * changes only for a chunk that is certainly freed (a failed claim is a
 * bug, logged: the chunk then stays out of use, uncached). */
static void release_chunk(struct astate *s, struct chunk *ch)
{
	struct dmm_mem *mem = s->mem;
	struct dmm_page *head = dmm__pfn_page(mem, ch->pfn);
	uint64_t n = (uint64_t)1 << ch->order;

	idx_remove(s, ch);
	if (dmm__lib_free_begin(mem, head, DMM_PAGE_RANGE) == 0) {
		if (mem->plat.set_memattr)
			mem->plat.set_memattr(mem->plat.ctx, dmm_pfn_to_phys(ch->pfn), n * DMM_PAGE_SIZE,
					      DMM_MEMATTR_WB);
		dmm__lib_free_finish(mem, head, DMM_PAGE_RANGE);
	}
	dmm__lib_free_range(mem, ch->meta_pfn, ch->meta_pages);
}

static void release_state(struct astate *s)
{
	struct dmm_mem *mem = s->mem;

	for (unsigned k = 0; k < DMM_NR_ATOMIC_POOLS; k++) {
		struct apool *p = &s->pool[k];
		for (uint32_t i = 0; i < p->nr_chunks; i++)
			release_chunk(s, p->chunk[i]);
		if (mem->plat.lock_destroy)
			mem->plat.lock_destroy(mem->plat.ctx, &p->lock);
	}
	if (mem->plat.lock_destroy)
		mem->plat.lock_destroy(mem->plat.ctx, &s->idx_lock);
	dmm__lib_free_range(mem, s->self_pfn, s->self_pages); /* the library's: never refused for a pin */
}

int dmm_dma_atomic_pool_init(struct dmm_mem *mem, const struct dmm_atomic_pool_opts *o)
{
	void *va;
	struct astate *s;
	uint64_t pages = dmm_align_up(sizeof(struct astate), DMM_PAGE_SIZE) >> DMM_PAGE_SHIFT;
	void *none = (void *)0;
	dmm_pfn_t pfn;
	int err;

	if (!mem)
		return -DMM_EINVAL;
	if (state(mem))
		return -DMM_EEXIST;
	err = dmm__meta_alloc(mem, pages, 0, &pfn, &va);
	if (err)
		return err;
	s = va;
	s->mem = mem;
	s->self_pfn = pfn;
	s->self_pages = pages;
	mem->plat.lock_init(mem->plat.ctx, &s->idx_lock);
	for (unsigned k = 0; k < DMM_NR_ATOMIC_POOLS; k++) {
		struct apool *p = &s->pool[k];
		p->s = s;
		for (unsigned i = 0; i < NR_ORDERS; i++)
			p->head[i] = NIL;
		mem->plat.lock_init(mem->plat.ctx, &p->lock);
	}
	for (unsigned k = 0; k < DMM_NR_ATOMIC_POOLS; k++) {
		if (configure(mem, &s->pool[k], k, o ? &o->pool[k] : (const struct dmm_atomic_pool_cfg *)0)) {
			release_state(s);
			return dmm__count_invalid(mem);
		}
	}
	for (unsigned k = 0; k < DMM_NR_ATOMIC_POOLS; k++) {
		struct apool *p = &s->pool[k];
		if (p->present && (err = grow(p, order_of(p->initial))) != 0) {
			release_state(s);
			return err;
		}
	}
	if (!__atomic_compare_exchange_n(&mem->dma_atomic_pool, &none, (void *)s, false, __ATOMIC_RELEASE,
					 __ATOMIC_ACQUIRE)) {
		release_state(s); /* a concurrent init won */
		return -DMM_EEXIST;
	}
	return 0;
}

int dmm_dma_atomic_pool_destroy(struct dmm_mem *mem)
{
	struct astate *s;

	if (!mem)
		return -DMM_EINVAL;
	s = state(mem);
	if (!s)
		return -DMM_ENOENT;
	if (mem->plat.defer_flush)
		mem->plat.defer_flush(mem->plat.ctx);
	for (unsigned k = 0; k < DMM_NR_ATOMIC_POOLS; k++) {
		struct apool *p = &s->pool[k];
		/* a background refill still queued (a platform without
		 * defer_flush, or one queued since) would run on freed state */
		if (LD(p->busy) || LD(p->free_pages) != LD(p->size_pages) ||
		    __atomic_load_n(&p->jobs, __ATOMIC_ACQUIRE))
			return -DMM_EBUSY;
	}
	/* no pin holds a chunk (the library's own memory): nothing else
	 * can refuse the release */
	__atomic_store_n(&mem->dma_atomic_pool, (void *)0, __ATOMIC_RELEASE);
	release_state(s);
	return 0;
}

int dmm_dma_atomic_pool_get_stats(struct dmm_mem *mem, enum dmm_atomic_pool_kind k,
				  struct dmm_atomic_pool_stats *st)
{
	struct astate *s;
	struct apool *p;

	if (!mem || !st || (unsigned)k >= DMM_NR_ATOMIC_POOLS)
		return -DMM_EINVAL;
	s = state(mem);
	if (!s)
		return -DMM_ENOENT;
	p = &s->pool[k];
	dmm_memset(st, 0, sizeof(*st));
	if (!p->present)
		return 0;
	st->present = 1;
	st->background = mem->plat.defer != (void *)0;
	st->limit = p->limit;
	st->threshold = p->threshold * DMM_PAGE_SIZE;
	st->step = p->step * DMM_PAGE_SIZE;
	st->max = p->max * DMM_PAGE_SIZE;
	dmm__lock(mem, &p->lock);
	st->size = p->size_pages * DMM_PAGE_SIZE;
	st->free = p->free_pages * DMM_PAGE_SIZE;
	st->high_water = p->high_water * DMM_PAGE_SIZE;
	st->chunks = p->nr_chunks;
	st->allocs = p->allocs;
	st->frees = p->frees;
	st->failures = LD(p->failures);
	dmm__unlock(mem, &p->lock);
	st->refills_queued = LD(p->refills_queued);
	st->refills_done = LD(p->refills_done);
	st->refills_sync = LD(p->refills_sync);
	st->grow_failures = LD(p->grow_failures);
	st->bytes_remapped = LD(p->bytes_remapped);
	return 0;
}

/* ---- invariants ----------------------------------------------------------------------- */

#define BAD(...)                                                         \
	do {                                                             \
		dmm_log(mem, DMM_LOG_ERR, "atomic pool check: " __VA_ARGS__); \
		err = -DMM_EFAULT;                                       \
		goto out;                                                \
	} while (0)

static int check_pool(struct astate *s, struct apool *p, uint32_t *live)
{
	struct dmm_mem *mem = s->mem;
	uint64_t listed = 0, walked = 0, size = 0;
	int err = 0;

	dmm__lock(mem, &p->lock);
	/* free lists */
	for (unsigned o = 0; o < NR_ORDERS; o++) {
		uint32_t prev = NIL;
		uint64_t n = 0;
		for (uint32_t id = p->head[o]; id != NIL; id = apg(p, id)->next) {
			const struct chunk *ch;
			uint64_t page = ID_PAGE(id);
			const struct apage *g;
			if (ID_SLOT(id) >= p->nr_chunks)
				BAD("%s: block id %#x names no chunk", pool_names[p->kind], id);
			ch = p->chunk[ID_SLOT(id)];
			if (page >= ((uint64_t)1 << ch->order) || o > ch->order || (page & (((uint64_t)1 << o) - 1)))
				BAD("%s: free block %#x order %u outside its chunk or misaligned", pool_names[p->kind],
				    id, o);
			g = &ch->pg[page];
			if (g->state != PG_FREE || g->order != o || g->prev != prev)
				BAD("%s: free list order %u: block %#x state %u order %u prev %#x", pool_names[p->kind],
				    o, id, g->state, g->order, g->prev);
			if (++n > p->size_pages)
				BAD("%s: free list order %u loops", pool_names[p->kind], o);
			listed += (uint64_t)1 << o;
			prev = id;
		}
		if (n != p->nr_free[o])
			BAD("%s: order %u lists %llu blocks, counted %llu", pool_names[p->kind], o,
			    (unsigned long long)n, (unsigned long long)p->nr_free[o]);
	}
	/* chunks: every page in exactly one block, buddies merged, placement */
	*live = 0;
	for (uint32_t i = 0; i < p->nr_chunks; i++) {
		const struct chunk *ch = p->chunk[i];
		uint64_t n;
		const struct dmm_page *head;
		dmm_phys_t lo, hi;
		if (!ch || ch->pool != p || ch->slot != i)
			BAD("%s: chunk %u is not this pool's", pool_names[p->kind], i);
		if (!ch->live)
			continue; /* being added: no block of it is free or handed out yet */
		(*live)++;
		n = (uint64_t)1 << ch->order;
		head = dmm_pfn_to_page(mem, ch->pfn);
		lo = dmm_pfn_to_phys(ch->pfn);
		hi = lo + n * DMM_PAGE_SIZE;
		if (hi > p->limit || (lo & (n * DMM_PAGE_SIZE - 1)))
			BAD("%s: chunk at %#llx above the limit or misaligned", pool_names[p->kind],
			    (unsigned long long)lo);
		if (!head || head->state != DMM_PAGE_RANGE || head->private != n || head->owner)
			BAD("%s: chunk at %#llx is not a range allocation of %llu pages", pool_names[p->kind],
			    (unsigned long long)lo, (unsigned long long)n);
		if (idx_find(s, lo) != ch || idx_find(s, hi - 1) != ch)
			BAD("%s: chunk at %#llx missing from the index", pool_names[p->kind], (unsigned long long)lo);
		for (uint64_t pg = 0; pg < n;) {
			const struct apage *g = &ch->pg[pg];
			uint64_t len = (uint64_t)1 << g->order;
			if (g->state == PG_TAIL || g->order > ch->order || (pg & (len - 1)) || pg + len > n)
				BAD("%s: chunk at %#llx page %llu: no block head (state %u order %u)",
				    pool_names[p->kind], (unsigned long long)lo, (unsigned long long)pg, g->state,
				    g->order);
			for (uint64_t t = pg + 1; t < pg + len; t++)
				if (ch->pg[t].state != PG_TAIL)
					BAD("%s: chunk at %#llx: page %llu inside a block is a head", pool_names[p->kind],
					    (unsigned long long)lo, (unsigned long long)t);
			if (g->state == PG_FREE) {
				walked += len;
				if (g->order < ch->order) {
					const struct apage *b = &ch->pg[pg ^ len];
					if (b->state == PG_FREE && b->order == g->order)
						BAD("%s: chunk at %#llx: free buddies at page %llu not merged",
						    pool_names[p->kind], (unsigned long long)lo, (unsigned long long)pg);
				}
			}
			pg += len;
		}
		size += n;
	}
	if (listed != walked || walked != p->free_pages || size != p->size_pages || p->size_pages > p->max ||
	    p->high_water > p->size_pages)
		BAD("%s: counts disagree: listed %llu walked %llu free %llu size %llu/%llu (max %llu)",
		    pool_names[p->kind], (unsigned long long)listed, (unsigned long long)walked,
		    (unsigned long long)p->free_pages, (unsigned long long)size, (unsigned long long)p->size_pages,
		    (unsigned long long)p->max);
out:
	dmm__unlock(mem, &p->lock);
	return err;
}

int dmm_dma_atomic_pool_check(struct dmm_mem *mem)
{
	struct astate *s;
	uint32_t live = 0, total = 0;
	int err = 0;

	if (!mem)
		return -DMM_EINVAL;
	s = state(mem);
	if (!s)
		return 0;
	for (unsigned k = 0; k < DMM_NR_ATOMIC_POOLS; k++) {
		if (!s->pool[k].present && s->pool[k].nr_chunks)
			return -DMM_EFAULT;
		uint32_t n;
		if ((err = check_pool(s, &s->pool[k], &n)) != 0)
			return err;
		live += n;
	}
	dmm__lock(mem, &s->idx_lock);
	/* a chunk is indexed after its slot is taken and before it goes live */
	for (unsigned k = 0; k < DMM_NR_ATOMIC_POOLS; k++)
		total += LD(s->pool[k].nr_chunks);
	if (s->idx_n < live || s->idx_n > total)
		BAD("index holds %u chunks, pools %u live of %u", s->idx_n, live, total);
	for (uint32_t i = 0; i < s->idx_n; i++) {
		const struct idx_ent *e = &s->idx[i];
		if (e->lo >= e->hi || (i && s->idx[i - 1].hi > e->lo) || e->lo != dmm_pfn_to_phys(e->ch->pfn))
			BAD("index entry %u [%#llx, %#llx) unsorted, overlapping or stale", i,
			    (unsigned long long)e->lo, (unsigned long long)e->hi);
	}
out:
	dmm__unlock(mem, &s->idx_lock);
	return err;
}

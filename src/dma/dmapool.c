/* SPDX-License-Identifier: MIT */
/*
 * Small-block DMA pools: fixed-size blocks carved from coherent buffers
 * ("chunks") of one device.
 *
 * Where things live. Device-visible memory holds blocks and nothing else;
 * every byte of bookkeeping comes from the page allocator, so a device that
 * writes past its block can corrupt a neighbouring block but never the
 * allocator (Linux's dmapool keeps its free list inside the blocks).
 *
 *   page allocator (CPU only)                   coherent buffers (device-visible)
 *   ┌ pool page ───────────────┐
 *   │ struct dmm_dma_pool      │
 *   │  lock, geometry, stats,  │
 *   │  partial: chunks with    │
 *   │  free blocks             │
 *   │ index (open addressing)  │  dma >> chunk_shift -> chunk, one probe
 *   │ directory:               │                 chunk 0 (chunk_bytes, aligned to
 *   │  chunk 0: cpu, dma ──────┼───────────────► ┌──┬──┬──┬──┬─ ─ ┬──┐  chunk_bytes
 *   │   free bitmap 1011..     │                 │b0│b1│b2│b3│    │bn│  in bus space)
 *   │   nr_free, hint, links   │                 └──┴──┴──┴──┴─ ─ ┴──┘
 *   │  chunk 1: ... ───────────┼───────────────► chunk 1 ...
 *   └──────────────────────────┘
 *   When the pool outgrows the room in its page, the index and the
 *   directory move to blocks of their own (page allocator, doubling).
 *
 * Geometry. stride = size rounded up to the alignment. A chunk is a power
 * of two of at least one page (grown up to 32 KiB so it holds 8 blocks or
 * more, but never beyond the device's coherent segment boundary, which a
 * coherent buffer may not cross; a stride larger than that boundary, or a
 * boundary below a page, is refused at create) and its bus address is
 * aligned to its size: a chunk that dmm_dma_alloc_coherent() returns
 * unaligned is given back and a larger buffer is taken, of which the
 * aligned part is used (counted in misaligned_chunks; the buddy
 * allocator's natural alignment makes this rare). With a boundary smaller
 * than the chunk, the chunk is cut into boundary-sized segments each
 * holding floor(boundary / stride) blocks; with a boundary at least as
 * large as the chunk, the aligned chunk cannot cross one. Block i lies at (i / per_seg) * seg + (i % per_seg) * stride
 * (shifts and masks where those are powers of two; free checks an offset
 * with one multiplication, dmm_quot_exact).
 *
 * Operations. Chunks with free blocks are on a doubly linked list (indices,
 * since the directory moves when it grows); allocation takes the first
 * free bit of the list head's bitmap from its hint word (a chunk has at
 * most 64 words); free finds the chunk (the list head, else through the
 * index), checks the offset, the CPU address and the bit, and sets it.
 * Both are O(1). Growing drops the lock around dmm_dma_alloc_coherent()
 * (which may change memory attributes) and retakes it to insert the chunk;
 * the directory and index double when full (amortised O(1), page
 * allocator, under the pool lock: the page allocator never sleeps). Chunks
 * are kept until destroy; a chunk the device will not take back then (a
 * pinned page: its coherent free is refused) stays, and so does the pool,
 * with its directory compacted and its index and list rebuilt.
 *
 * Cost of keeping bookkeeping out of device memory: one page for a small
 * pool (the pool, a 128-slot index and the first chunk descriptors share
 * it); beyond that, per chunk a descriptor of 56 bytes plus one bit per
 * block and at most 16 bytes of index (at most half full, doubled), the
 * directory rounded up to a power-of-two block. stats.meta_bytes reports
 * it. Linux's dmapool keeps its free list inside the blocks instead;
 * bench/bench_dmapool.c measures both designs (time, memory, a device
 * overrunning its block).
 */
#include <dmamem/dmapool.h>

#include "dma/dma_internal.h"

#define NONE UINT32_MAX
#define CHUNK_GROW_MAX ((uint64_t)32 << 10) /* grow small chunks up to this for >= 8 blocks */
#define CHUNK_MIN_BLOCKS 8
#define CHUNK_MAX ((uint64_t)DMM_PAGE_SIZE << DMM_MAX_ORDER)

struct pchunk {
	uint8_t *cpu;                 /* usable base (aligned to chunk_bytes in bus space) */
	dmm_dma_addr_t dma;
	void *alloc_cpu;              /* what dmm_dma_alloc_coherent() returned */
	dmm_dma_addr_t alloc_dma;
	uint64_t alloc_bytes;
	uint32_t nr_free;
	uint32_t hint;                /* no free bit in words below this one */
	uint32_t prev, next;          /* list of chunks with free blocks */
	uint64_t map[];               /* bit set = block free */
};

struct dmm_dma_pool {
	struct dmm_lock lock;
	struct dmm_mem *mem;
	struct dmm_device *dev;
	dmm_pfn_t self_pfn;
	uint64_t stride, chunk_bytes, seg;
	unsigned chunk_shift, seg_shift;
	uint32_t per_seg, nblocks, words;
	uint32_t stride_inv;          /* stride = odd << stride_shift; odd's inverse mod 2^32 (dmm_quot_exact) */
	unsigned stride_shift;
	unsigned per_seg_shift;       /* log2(per_seg) if per_seg_pow2 */
	bool per_seg_pow2;
	uint64_t cstride;             /* bytes per directory entry */
	uint8_t *dir;                 /* nr_chunks entries of cstride bytes */
	dmm_pfn_t dir_pfn;
	unsigned dir_order;
	bool dir_own, index_own;      /* in pages of their own (else in the pool's page) */
	uint32_t nr_chunks, dir_cap;
	uint32_t *index;              /* chunk + 1, 0 = empty */
	dmm_pfn_t index_pfn;
	unsigned index_order;
	uint32_t index_mask;
	uint32_t partial;             /* first chunk with free blocks */
	uint64_t free_blocks;
	struct dmm_dma_pool_stats st; /* under the lock */
};

/* The pool's page also holds the first index and directory, so a small pool
 * costs one page of bookkeeping. */
#define EMBED_INDEX_SLOTS 128u
#define EMBED_INDEX_OFF ((sizeof(struct dmm_dma_pool) + 63) & ~(size_t)63)
#define EMBED_DIR_OFF (EMBED_INDEX_OFF + EMBED_INDEX_SLOTS * sizeof(uint32_t))
_Static_assert(EMBED_DIR_OFF + 2 * (sizeof(struct pchunk) + 64 * sizeof(uint64_t)) <= DMM_PAGE_SIZE,
	       "the pool's page holds the pool, an index and two chunk descriptors");

static inline struct pchunk *chunk_at(const struct dmm_dma_pool *p, uint32_t i)
{
	return (struct pchunk *)(void *)(p->dir + (uint64_t)i * p->cstride);
}

_Static_assert(CHUNK_MAX <= ((uint64_t)1 << 31), "offsets in a chunk fit dmm_quot_exact");

/* Offset of block @i in its chunk: no divide unless the chunk has several
 * segments of a block count that is no power of two. */
static inline uint64_t block_off(const struct dmm_dma_pool *p, uint32_t i)
{
	if (p->nblocks == p->per_seg)
		return (uint64_t)i * p->stride;
	if (p->per_seg_pow2)
		return ((uint64_t)(i >> p->per_seg_shift) << p->seg_shift) +
		       (uint64_t)(i & (p->per_seg - 1)) * p->stride;
	return (uint64_t)(i / p->per_seg) * p->seg + (uint64_t)(i % p->per_seg) * p->stride;
}

static inline uint32_t index_slot(const struct dmm_dma_pool *p, uint64_t key)
{
	return (uint32_t)((key * 0x9e3779b97f4a7c15ull) >> 32) & p->index_mask;
}

/* Chunk holding bus address @dma, or NONE. */
static uint32_t lookup(const struct dmm_dma_pool *p, dmm_dma_addr_t dma)
{
	uint64_t key = dma >> p->chunk_shift;

	for (uint32_t s = index_slot(p, key);; s = (s + 1) & p->index_mask) {
		uint32_t e = p->index[s];
		if (!e)
			return NONE;
		if (chunk_at(p, e - 1)->dma >> p->chunk_shift == key)
			return e - 1;
	}
}

static void index_insert(struct dmm_dma_pool *p, uint32_t i)
{
	uint32_t s = index_slot(p, chunk_at(p, i)->dma >> p->chunk_shift);

	while (p->index[s])
		s = (s + 1) & p->index_mask;
	p->index[s] = i + 1;
}

static void list_del(struct dmm_dma_pool *p, uint32_t i)
{
	struct pchunk *c = chunk_at(p, i);

	if (c->prev != NONE)
		chunk_at(p, c->prev)->next = c->next;
	else
		p->partial = c->next;
	if (c->next != NONE)
		chunk_at(p, c->next)->prev = c->prev;
	c->prev = c->next = NONE;
}

static void list_push(struct dmm_dma_pool *p, uint32_t i)
{
	struct pchunk *c = chunk_at(p, i);

	c->prev = NONE;
	c->next = p->partial;
	if (p->partial != NONE)
		chunk_at(p, p->partial)->prev = i;
	p->partial = i;
}

static unsigned order_for(uint64_t bytes)
{
	unsigned o = 0;
	while (((uint64_t)DMM_PAGE_SIZE << o) < bytes)
		o++;
	return o;
}

static void *meta_alloc(struct dmm_dma_pool *p, unsigned order, unsigned gfp, dmm_pfn_t *pfn)
{
	if (order > DMM_MAX_ORDER)
		return (void *)0;
	if (dmm__lib_page_alloc(p->mem, order, (const struct dmm_constraint *)0, DMM_GFP_ZERO | (gfp & DMM_GFP_ATOMIC),
				pfn))
		return (void *)0;
	p->st.meta_bytes += (uint64_t)DMM_PAGE_SIZE << order;
	return dmm_pfn_to_virt(p->mem, *pfn);
}

static void meta_free(struct dmm_dma_pool *p, dmm_pfn_t pfn, unsigned order)
{
	dmm__lib_page_free(p->mem, pfn, order); /* the library's: never refused for a pin */
	p->st.meta_bytes -= (uint64_t)DMM_PAGE_SIZE << order;
}

/* Room for one more chunk in the directory and the index (pool lock held).
 * -DMM_ENOSPC if the bookkeeping cannot grow. */
static int reserve_one(struct dmm_dma_pool *p, unsigned gfp)
{
	if (p->nr_chunks == NONE - 1)
		return -DMM_ENOSPC;
	if (p->nr_chunks == p->dir_cap) {
		unsigned o = p->dir_own ? p->dir_order + 1 : order_for(2 * (uint64_t)p->dir_cap * p->cstride);
		dmm_pfn_t pfn;
		uint8_t *d = meta_alloc(p, o, gfp, &pfn);
		if (!d)
			return -DMM_ENOSPC;
		dmm_memcpy(d, p->dir, (size_t)(p->nr_chunks * p->cstride));
		if (p->dir_own)
			meta_free(p, p->dir_pfn, p->dir_order);
		p->dir_own = true;
		p->dir = d;
		p->dir_pfn = pfn;
		p->dir_order = o;
		p->dir_cap = (uint32_t)dmm_min64(((uint64_t)DMM_PAGE_SIZE << o) / p->cstride, NONE - 1);
	}
	if ((uint64_t)(p->nr_chunks + 1) * 2 > (uint64_t)p->index_mask + 1) {
		unsigned o = p->index_own ? p->index_order + 1 : order_for(2 * ((uint64_t)p->index_mask + 1) * sizeof(uint32_t));
		dmm_pfn_t pfn;
		uint32_t *x = meta_alloc(p, o, gfp, &pfn);
		dmm_pfn_t old_pfn = p->index_pfn;
		unsigned old_order = p->index_order;
		bool old_own = p->index_own;
		if (!x)
			return -DMM_ENOSPC;
		p->index = x;
		p->index_pfn = pfn;
		p->index_order = o;
		p->index_mask = (uint32_t)((((uint64_t)DMM_PAGE_SIZE << o) / sizeof(uint32_t)) - 1);
		p->index_own = true;
		for (uint32_t i = 0; i < p->nr_chunks; i++)
			index_insert(p, i);
		if (old_own)
			meta_free(p, old_pfn, old_order);
	}
	return 0;
}

/* ---- create / destroy ------------------------------------------------------- */

int dmm_dma_pool_create(struct dmm_device *dev, const char *name, size_t size, size_t align,
			size_t boundary, struct dmm_dma_pool **out)
{
	struct dmm_dma_pool *p;
	uint64_t stride, chunk, dev_bnd;
	dmm_pfn_t pfn;
	int err;

	if (!dev || !name || !out || !size || dev->desc.is_bus)
		return dmm__count_invalid(dev ? dev->mem : (struct dmm_mem *)0);
	if (!align)
		align = 8;
	if (!dmm_is_pow2(align) || align < 8 || align > CHUNK_MAX || size > CHUNK_MAX ||
	    (boundary && (!dmm_is_pow2(boundary) || boundary < size)))
		return dmm__count_invalid(dev->mem);
	stride = dmm_align_up(size, align);
	/* a chunk is one coherent buffer of at least a page: it cannot be
	 * larger than the device's segment boundary (a boundary below a page
	 * leaves the device no coherent buffer at all), and a block cannot
	 * span two chunks */
	dev_bnd = dev->lim[1].boundary;
	if (stride > CHUNK_MAX || (dev_bnd && (stride > dev_bnd || dev_bnd < DMM_PAGE_SIZE)))
		return dmm__count_invalid(dev->mem);
	chunk = DMM_PAGE_SIZE;
	while (chunk < stride)
		chunk <<= 1;
	while (chunk < CHUNK_GROW_MAX && chunk / stride < CHUNK_MIN_BLOCKS && (!dev_bnd || chunk < dev_bnd))
		chunk <<= 1;

	err = dmm__lib_page_alloc(dev->mem, 0, (const struct dmm_constraint *)0, 0, &pfn);
	if (err)
		return err;
	dmm__meta_zero(dev->mem, pfn, 1);
	p = dmm_pfn_to_virt(dev->mem, pfn);
	p->mem = dev->mem;
	p->dev = dev;
	p->self_pfn = pfn;
	p->stride = stride;
	p->chunk_bytes = chunk;
	p->chunk_shift = dmm_ilog2(chunk);
	if (boundary && boundary < chunk && stride < boundary) {
		p->seg = boundary;
		p->per_seg = (uint32_t)(boundary / stride);
		p->nblocks = (uint32_t)(chunk / boundary) * p->per_seg;
	} else {
		/* no boundary inside the chunk, or every block starts on one
		 * (stride >= boundary: stride is then a multiple of it) */
		p->seg = chunk;
		p->per_seg = (uint32_t)(chunk / stride);
		p->nblocks = p->per_seg;
	}
	p->seg_shift = dmm_ilog2(p->seg);
	p->per_seg_pow2 = dmm_is_pow2(p->per_seg);
	p->per_seg_shift = p->per_seg_pow2 ? dmm_ilog2(p->per_seg) : 0;
	p->stride_shift = dmm_ctz64(stride);
	p->stride_inv = dmm_odd_inverse((uint32_t)(stride >> p->stride_shift));
	p->words = (p->nblocks + 63) / 64;
	p->cstride = sizeof(struct pchunk) + (uint64_t)p->words * sizeof(uint64_t);
	p->partial = NONE;
	p->index = (uint32_t *)(void *)((uint8_t *)p + EMBED_INDEX_OFF);
	p->index_mask = EMBED_INDEX_SLOTS - 1;
	p->dir = (uint8_t *)p + EMBED_DIR_OFF;
	p->dir_cap = (uint32_t)((DMM_PAGE_SIZE - EMBED_DIR_OFF) / p->cstride);
	for (unsigned i = 0; i < DMM_DMA_POOL_NAME_MAX - 1 && name[i]; i++)
		p->st.name[i] = name[i];
	p->st.size = size;
	p->st.stride = stride;
	p->st.align = align;
	p->st.boundary = boundary;
	p->st.chunk_bytes = chunk;
	p->st.blocks_per_chunk = p->nblocks;
	p->st.meta_bytes = DMM_PAGE_SIZE;
	if (p->mem->plat.lock_init)
		p->mem->plat.lock_init(p->mem->plat.ctx, &p->lock);
	*out = p;
	return 0;
}

/* The destroy gave back every chunk but the first @kept of the directory
 * (each entirely free): the pool goes on with those, its index, list and
 * totals rebuilt. */
static void keep_chunks(struct dmm_dma_pool *p, uint32_t kept)
{
	dmm__lock(p->mem, &p->lock);
	p->nr_chunks = kept;
	p->partial = NONE;
	p->free_blocks = 0;
	p->st.chunks = kept;
	p->st.pages = 0;
	p->st.blocks_total = 0;
	for (uint64_t s = 0; s <= p->index_mask; s++)
		p->index[s] = 0;
	for (uint32_t i = 0; i < kept; i++) {
		struct pchunk *c = chunk_at(p, i);
		list_push(p, i);
		index_insert(p, i);
		p->free_blocks += c->nr_free;
		p->st.pages += c->alloc_bytes >> DMM_PAGE_SHIFT;
		p->st.blocks_total += p->nblocks;
	}
	dmm__unlock(p->mem, &p->lock);
}

int dmm_dma_pool_destroy(struct dmm_dma_pool *pool)
{
	struct dmm_mem *mem;

	if (!pool)
		return -DMM_EINVAL;
	mem = pool->mem;
	dmm__lock(mem, &pool->lock);
	if (pool->st.in_use) {
		unsigned shown = 0;
		dmm_log(mem, DMM_LOG_ERR, "dma pool %s: destroy with %llu blocks still allocated",
			pool->st.name, (unsigned long long)pool->st.in_use);
		for (uint32_t i = 0; i < pool->nr_chunks && shown < 8; i++) {
			const struct pchunk *c = chunk_at(pool, i);
			for (uint32_t b = 0; b < pool->nblocks && shown < 8; b++)
				if (!(c->map[b / 64] >> (b % 64) & 1)) {
					dmm_log(mem, DMM_LOG_ERR, "dma pool %s: leaked block dma %#llx",
						pool->st.name,
						(unsigned long long)(c->dma + block_off(pool, b)));
					shown++;
				}
		}
		dmm__unlock(mem, &pool->lock);
		return -DMM_EBUSY;
	}
	dmm__unlock(mem, &pool->lock);
	{
		uint32_t kept = 0;
		int err = 0;
		for (uint32_t i = 0; i < pool->nr_chunks; i++) {
			struct pchunk *c = chunk_at(pool, i);
			int e = dmm_dma_free_coherent(pool->dev, (size_t)c->alloc_bytes, c->alloc_cpu, c->alloc_dma);
			if (!e)
				continue;
			/* refused (a page of it pinned): the chunk stays */
			dmm_log(mem, DMM_LOG_WARN, "dma pool %s: destroy: chunk dma %#llx refused by the device (%s), kept",
				pool->st.name, (unsigned long long)c->alloc_dma, dmm_errname(e));
			if (!err)
				err = e;
			if (kept != i)
				dmm_memcpy(chunk_at(pool, kept), c, (size_t)pool->cstride); /* (kept < i: apart) */
			kept++;
		}
		if (err) {
			keep_chunks(pool, kept);
			return err;
		}
	}
	if (pool->dir_own)
		meta_free(pool, pool->dir_pfn, pool->dir_order);
	if (pool->index_own)
		meta_free(pool, pool->index_pfn, pool->index_order);
	if (mem->plat.lock_destroy)
		mem->plat.lock_destroy(mem->plat.ctx, &pool->lock);
	/* the pool record is the library's own page: never refused for a pin */
	return dmm__lib_page_free(mem, pool->self_pfn, 0);
}

/* ---- alloc / free ----------------------------------------------------------- */

/* Take the first free block of the first chunk with free blocks (lock held). */
static void take_block(struct dmm_dma_pool *p, void **cpu, dmm_dma_addr_t *dma)
{
	uint32_t i = p->partial;
	struct pchunk *c = chunk_at(p, i);
	uint32_t w = c->hint, b;
	uint64_t off;

	while (!c->map[w])
		w++;
	b = w * 64 + dmm_ctz64(c->map[w]);
	c->map[w] &= c->map[w] - 1;
	c->hint = w;
	if (--c->nr_free == 0)
		list_del(p, i);
	p->free_blocks--;
	off = block_off(p, b);
	*cpu = c->cpu + off;
	*dma = c->dma + off;
	p->st.allocs++;
	if (++p->st.in_use > p->st.high_water)
		p->st.high_water = p->st.in_use;
}

/* Get a chunk from the device, aligned to chunk_bytes in bus space. */
static int get_chunk(struct dmm_dma_pool *p, unsigned gfp, struct pchunk *c, int *misaligned)
{
	unsigned cg = gfp & DMM_GFP_ATOMIC;
	uint64_t cb = p->chunk_bytes;
	void *cpu;
	dmm_dma_addr_t dma, base;
	int err;

	*misaligned = 0;
	err = dmm_dma_alloc_coherent(p->dev, (size_t)cb, cg, &cpu, &dma);
	if (err)
		return err;
	c->alloc_bytes = cb;
	if (dma & (cb - 1)) {
		/* some placement (an area, a bus offset) gave no natural
		 * alignment: take enough to hold an aligned chunk */
		dmm_dma_free_coherent(p->dev, (size_t)cb, cpu, dma);
		c->alloc_bytes = 2 * cb - DMM_PAGE_SIZE;
		err = dmm_dma_alloc_coherent(p->dev, (size_t)c->alloc_bytes, cg, &cpu, &dma);
		if (err)
			return err;
		*misaligned = 1;
	}
	base = dmm_align_up(dma, cb);
	c->alloc_cpu = cpu;
	c->alloc_dma = dma;
	c->cpu = (uint8_t *)cpu + (base - dma);
	c->dma = base;
	return 0;
}

/*
 * Add a chunk to @pool, which has no free block; called with the lock held.
 * The coherent allocator may change memory attributes, which must not
 * happen under a spinning lock: the lock is dropped around it. Returns 0
 * with the lock held, or the error with the lock released.
 */
static __attribute__((noinline)) int grow(struct dmm_dma_pool *pool, unsigned gfp)
{
	struct dmm_mem *mem = pool->mem;
	struct pchunk nc = { 0 };
	int err, mis, got;

	dmm__unlock(mem, &pool->lock);
	err = get_chunk(pool, gfp, &nc, &mis);
	got = !err;
	dmm__lock(mem, &pool->lock);
	if (!err)
		err = reserve_one(pool, gfp);
	if (err) {
		pool->st.fail_nomem++;
		if (err == -DMM_ENOTSUP)
			pool->st.fail_atomic++;
		dmm__unlock(mem, &pool->lock);
		if (got)
			dmm_dma_free_coherent(pool->dev, (size_t)nc.alloc_bytes, nc.alloc_cpu, nc.alloc_dma);
		return err;
	}
	uint32_t i = pool->nr_chunks++;
	struct pchunk *c = chunk_at(pool, i);
	*c = nc;
	for (uint32_t w = 0; w < pool->words; w++) {
		uint32_t left = pool->nblocks - w * 64;
		c->map[w] = left >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << left) - 1);
	}
	c->nr_free = pool->nblocks;
	c->hint = 0;
	list_push(pool, i);
	index_insert(pool, i);
	pool->free_blocks += pool->nblocks;
	pool->st.chunks++;
	pool->st.pages += c->alloc_bytes >> DMM_PAGE_SHIFT;
	pool->st.blocks_total += pool->nblocks;
	pool->st.misaligned_chunks += (uint64_t)mis;
	return 0;
}

int dmm_dma_pool_alloc(struct dmm_dma_pool *pool, unsigned gfp, void **cpu, dmm_dma_addr_t *dma)
{
	struct dmm_mem *mem;
	void *bcpu;
	dmm_dma_addr_t bdma;
	int err;

	if (!pool)
		return -DMM_EINVAL;
	mem = pool->mem;
	if (!cpu || !dma || (gfp & ~(DMM_GFP_ZERO | DMM_GFP_ATOMIC))) {
		dmm__lock(mem, &pool->lock);
		pool->st.fail_invalid++;
		dmm__unlock(mem, &pool->lock);
		return dmm__count_invalid(mem);
	}
	dmm__lock(mem, &pool->lock);
	if (__builtin_expect(pool->partial == NONE, 0) && (err = grow(pool, gfp)))
		return err;
	take_block(pool, &bcpu, &bdma);
	dmm__unlock(mem, &pool->lock);
	if (gfp & DMM_GFP_ZERO)
		dmm_memset(bcpu, 0, (size_t)pool->st.size);
	*cpu = bcpu;
	*dma = bdma;
	return 0;
}

int dmm_dma_pool_free(struct dmm_dma_pool *pool, void *cpu, dmm_dma_addr_t dma)
{
	struct dmm_mem *mem;
	struct pchunk *c;
	uint64_t off, r;
	uint32_t i, b, k;
	int err = 0;

	if (!pool)
		return -DMM_EINVAL;
	mem = pool->mem;
	dmm__lock(mem, &pool->lock);
	/* the chunk allocations come from first (a block freed soon after
	 * its allocation is there), then the index */
	i = pool->partial;
	if (i == NONE || dma - chunk_at(pool, i)->dma >= pool->chunk_bytes)
		i = lookup(pool, dma);
	if (i == NONE) {
		err = -DMM_ENOENT;
		goto out;
	}
	c = chunk_at(pool, i);
	off = dma - c->dma;
	r = off & (pool->seg - 1);
	/* a block's start: r / stride exact and below per_seg (per_seg *
	 * stride <= seg < 2^31) */
	k = dmm_quot_exact((uint32_t)r, pool->stride_inv, pool->stride_shift);
	if (k >= pool->per_seg) {
		err = -DMM_EINVAL;
		goto out;
	}
	b = (uint32_t)(off >> pool->seg_shift) * pool->per_seg + k;
	if (b >= pool->nblocks || (uint8_t *)cpu != c->cpu + off) {
		err = -DMM_EINVAL;
		goto out;
	}
	if (c->map[b / 64] >> (b % 64) & 1) {
		err = -DMM_ENOENT; /* already free */
		goto out;
	}
	c->map[b / 64] |= (uint64_t)1 << (b % 64);
	if (b / 64 < c->hint)
		c->hint = b / 64;
	if (c->nr_free++ == 0)
		list_push(pool, i);
	pool->free_blocks++;
	pool->st.in_use--;
	pool->st.frees++;
out:
	if (err)
		pool->st.fail_invalid++;
	dmm__unlock(mem, &pool->lock);
	if (err == -DMM_EINVAL)
		dmm__count_invalid(mem);
	return err;
}

/* ---- check, stats ----------------------------------------------------------- */

#define BAD(...)                                                       \
	do {                                                           \
		dmm_log(mem, DMM_LOG_ERR, "dma pool check: " __VA_ARGS__); \
		err = -DMM_EFAULT;                                     \
		goto out;                                              \
	} while (0)

/* Every page of the chunk's CPU mapping holds the page its bus address
 * names. The CPU address is checked against the linear map, or else through
 * the platform's virt_to_phys: a chunk an IOMMU device got page by page is
 * mapped at consecutive CPU addresses by the platform's vmap. */
static bool chunk_addrs_agree(const struct dmm_dma_pool *p, const struct pchunk *c)
{
	for (uint64_t off = 0; off < p->chunk_bytes; off += DMM_PAGE_SIZE) {
		const uint8_t *va = c->cpu + off, *linear;
		dmm_phys_t pa, cpu_pa;
		if (dmm_dma_bus_to_phys(p->dev, c->dma + off, &pa))
			return false;
		linear = dmm_pfn_to_virt(p->mem, dmm_phys_to_pfn(pa));
		if (linear && linear + (pa & (DMM_PAGE_SIZE - 1)) == va)
			continue;
		if (dmm__virt_to_phys(p->mem, va, &cpu_pa) || cpu_pa != pa)
			return false;
	}
	return true;
}

int dmm_dma_pool_check(struct dmm_dma_pool *pool)
{
	struct dmm_mem *mem;
	uint64_t free_sum = 0, with_free = 0, listed = 0, entries = 0;
	int err = 0;

	if (!pool)
		return -DMM_EINVAL;
	mem = pool->mem;
	dmm__lock(mem, &pool->lock);
	for (uint32_t prev = NONE, i = pool->partial; i != NONE; prev = i, i = chunk_at(pool, i)->next) {
		if (i >= pool->nr_chunks || ++listed > pool->nr_chunks)
			BAD("%s: list of chunks with free blocks broken at %u", pool->st.name, i);
		if (chunk_at(pool, i)->prev != prev)
			BAD("%s: chunk %u back link", pool->st.name, i);
		if (!chunk_at(pool, i)->nr_free)
			BAD("%s: full chunk %u on the free list", pool->st.name, i);
	}
	for (uint32_t i = 0; i < pool->nr_chunks; i++) {
		const struct pchunk *c = chunk_at(pool, i);
		uint64_t bits = 0;
		for (uint32_t w = 0; w < pool->words; w++) {
			bits += (uint64_t)__builtin_popcountll(c->map[w]);
			if (w < c->hint && c->map[w])
				BAD("%s: chunk %u has free blocks below its hint", pool->st.name, i);
		}
		if (pool->nblocks % 64 && c->map[pool->words - 1] >> (pool->nblocks % 64))
			BAD("%s: chunk %u bitmap beyond its blocks", pool->st.name, i);
		if (bits != c->nr_free || c->nr_free > pool->nblocks)
			BAD("%s: chunk %u counts %u free, bitmap %llu", pool->st.name, i, c->nr_free,
			    (unsigned long long)bits);
		with_free += c->nr_free != 0;
		free_sum += c->nr_free;
		if (c->dma & (pool->chunk_bytes - 1) || c->dma < c->alloc_dma ||
		    c->dma + pool->chunk_bytes > c->alloc_dma + c->alloc_bytes ||
		    (uint64_t)(c->cpu - (uint8_t *)c->alloc_cpu) != c->dma - c->alloc_dma)
			BAD("%s: chunk %u misplaced (dma %#llx)", pool->st.name, i,
			    (unsigned long long)c->dma);
		if (!chunk_addrs_agree(pool, c))
			BAD("%s: chunk %u: bus and CPU addresses disagree", pool->st.name, i);
		if (lookup(pool, c->dma + pool->chunk_bytes - 1) != i)
			BAD("%s: chunk %u not found through the index", pool->st.name, i);
	}
	if (with_free != listed)
		BAD("%s: %llu chunks have free blocks, %llu listed", pool->st.name,
		    (unsigned long long)with_free, (unsigned long long)listed);
	for (uint64_t s = 0; s <= pool->index_mask; s++) {
		if (pool->index[s] > pool->nr_chunks)
			BAD("%s: index slot %llu names chunk %u", pool->st.name, (unsigned long long)s,
			    pool->index[s] - 1);
		entries += pool->index[s] != 0;
	}
	if (entries != pool->nr_chunks)
		BAD("%s: index holds %llu entries for %u chunks", pool->st.name, (unsigned long long)entries,
		    pool->nr_chunks);
	if (free_sum != pool->free_blocks || pool->st.chunks != pool->nr_chunks ||
	    pool->st.blocks_total != (uint64_t)pool->nr_chunks * pool->nblocks ||
	    pool->st.in_use + pool->free_blocks != pool->st.blocks_total ||
	    pool->st.allocs - pool->st.frees != pool->st.in_use || pool->st.high_water < pool->st.in_use)
		BAD("%s: totals disagree (free %llu/%llu, in use %llu, total %llu)", pool->st.name,
		    (unsigned long long)free_sum, (unsigned long long)pool->free_blocks,
		    (unsigned long long)pool->st.in_use, (unsigned long long)pool->st.blocks_total);
out:
	dmm__unlock(mem, &pool->lock);
	return err;
}

int dmm_dma_pool_get_stats(struct dmm_dma_pool *pool, struct dmm_dma_pool_stats *st)
{
	if (!pool || !st)
		return -DMM_EINVAL;
	dmm__lock(pool->mem, &pool->lock);
	*st = pool->st;
	dmm__unlock(pool->mem, &pool->lock);
	return 0;
}

const char *dmm_dma_pool_name(const struct dmm_dma_pool *pool)
{
	return pool ? pool->st.name : "?";
}

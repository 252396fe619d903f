/* SPDX-License-Identifier: MIT */
/* classic_dmapool: see classic_dmapool.h. */
#include "classic_dmapool.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <dmamem/dmamem.h>

/* A free block's first bytes (Linux: struct dma_block). */
struct cblock {
	struct cblock *next;
	dmm_dma_addr_t dma;
};

/* A chunk's header, in ordinary memory (Linux: struct dma_page). */
struct cpage {
	struct cpage *next;
	void *cpu;
	dmm_dma_addr_t dma;
	size_t bytes;
};

struct classic_dma_pool {
	atomic_uint next_ticket, owner; /* ticket spinlock */
	struct dmm_device *dev;
	size_t size, stride, boundary, chunk;
	struct cpage *pages;
	struct cblock *free;            /* head of the free list */
	uint64_t chunks, blocks_total, in_use;
};

static void lock(struct classic_dma_pool *p)
{
	unsigned t = atomic_fetch_add_explicit(&p->next_ticket, 1, memory_order_relaxed);

	while (atomic_load_explicit(&p->owner, memory_order_acquire) != t)
		sched_yield();
}

static void unlock(struct classic_dma_pool *p)
{
	atomic_store_explicit(&p->owner, atomic_load_explicit(&p->owner, memory_order_relaxed) + 1,
			      memory_order_release);
}

int classic_dma_pool_create(struct dmm_device *dev, size_t size, size_t align, size_t boundary, size_t chunk_bytes,
			    struct classic_dma_pool **out)
{
	struct classic_dma_pool *p;

	if (!dev || !size || !align || (align & (align - 1)) || !out)
		return -1;
	if (size < sizeof(struct cblock))
		size = sizeof(struct cblock);
	p = calloc(1, sizeof(*p));
	if (!p)
		return -1;
	p->dev = dev;
	p->size = size;
	p->stride = (size + align - 1) & ~(align - 1);
	p->chunk = chunk_bytes;
	p->boundary = boundary && boundary < chunk_bytes ? boundary : chunk_bytes;
	if (p->stride > p->boundary) {
		free(p);
		return -1;
	}
	atomic_init(&p->next_ticket, 0);
	atomic_init(&p->owner, 0);
	*out = p;
	return 0;
}

/* Thread the blocks of a new chunk onto the free list (lock held). */
static void add_chunk(struct classic_dma_pool *p, struct cpage *pg)
{
	size_t off = 0, next_boundary = p->boundary;
	struct cblock *first = NULL, *last = NULL;

	while (off + p->size <= pg->bytes) {
		struct cblock *b;
		if (off + p->size > next_boundary) {
			off = next_boundary;
			next_boundary += p->boundary;
			continue;
		}
		b = (struct cblock *)((uint8_t *)pg->cpu + off);
		b->dma = pg->dma + off;
		b->next = NULL;
		if (last)
			last->next = b;
		else
			first = b;
		last = b;
		p->blocks_total++;
		off += p->stride;
	}
	if (last) {
		last->next = p->free;
		p->free = first;
	}
	pg->next = p->pages;
	p->pages = pg;
	p->chunks++;
}

void *classic_dma_pool_alloc(struct classic_dma_pool *p, int zero, dmm_dma_addr_t *dma)
{
	struct cblock *b;

	lock(p);
	if (!p->free) {
		struct cpage *pg;
		void *cpu;
		dmm_dma_addr_t d;
		unlock(p);
		pg = malloc(sizeof(*pg));
		if (!pg)
			return NULL;
		if (dmm_dma_alloc_coherent(p->dev, p->chunk, 0, &cpu, &d)) {
			free(pg);
			return NULL;
		}
		pg->cpu = cpu;
		pg->dma = d;
		pg->bytes = p->chunk;
		lock(p);
		add_chunk(p, pg);
	}
	b = p->free;
	p->free = b->next;
	p->in_use++;
	unlock(p);
	*dma = b->dma;
	if (zero)
		memset(b, 0, p->size);
	return b;
}

void classic_dma_pool_free(struct classic_dma_pool *p, void *cpu, dmm_dma_addr_t dma)
{
	struct cblock *b = cpu;

	lock(p);
	b->dma = dma;
	b->next = p->free;
	p->free = b;
	p->in_use--;
	unlock(p);
}

int classic_dma_pool_destroy(struct classic_dma_pool *p)
{
	if (!p)
		return 0;
	if (p->in_use)
		return -1;
	while (p->pages) {
		struct cpage *pg = p->pages;
		p->pages = pg->next;
		dmm_dma_free_coherent(p->dev, pg->bytes, pg->cpu, pg->dma);
		free(pg);
	}
	free(p);
	return 0;
}

/* Is @cpu a block's start in one of @p's chunks? Its true bus address in
 * *@dma. Lock held. */
static int block_of(const struct classic_dma_pool *p, const void *cpu, dmm_dma_addr_t *dma)
{
	const uint8_t *c = cpu;

	for (const struct cpage *pg = p->pages; pg; pg = pg->next) {
		const uint8_t *base = pg->cpu;
		size_t off, in;
		if (c < base || c >= base + pg->bytes)
			continue;
		off = (size_t)(c - base);
		in = off % p->boundary; /* the layout restarts at each boundary */
		if (in % p->stride || in + p->size > p->boundary)
			return 0;
		*dma = pg->dma + off;
		return 1;
	}
	return 0;
}

int classic_dma_pool_block_dma(struct classic_dma_pool *p, const void *cpu, dmm_dma_addr_t *dma)
{
	int ok;

	lock(p);
	ok = block_of(p, cpu, dma);
	unlock(p);
	return ok;
}

int classic_dma_pool_head_ok(struct classic_dma_pool *p)
{
	dmm_dma_addr_t dma;
	int ok;

	lock(p);
	/* empty: the next allocation grows the pool */
	ok = !p->free || block_of(p, p->free, &dma);
	unlock(p);
	return ok;
}

void classic_dma_pool_get_stats(struct classic_dma_pool *p, struct classic_dma_pool_stats *st)
{
	lock(p);
	st->stride = p->stride;
	st->chunks = p->chunks;
	st->pages = p->chunks * (p->chunk / DMM_PAGE_SIZE);
	st->blocks_total = p->blocks_total;
	st->in_use = p->in_use;
	st->meta_bytes = sizeof(*p) + p->chunks * sizeof(struct cpage);
	unlock(p);
}

/* SPDX-License-Identifier: MIT */
/*
 * Small-object allocator: dmm_kmalloc / dmm_kfree / dmm_ksize.
 *
 * Size classes from 8 bytes to 8 KiB (Linux's kmalloc classes: 8, 16, 32,
 * 64, 96, 128, 192, 256, 512, 1k, 2k, 4k, 8k); larger requests go to the
 * page allocator. Objects live in slabs taken from the page allocator with
 * the caller's constraint (DMM_GFP_DMA / DMM_GFP_DMA32 select low-memory
 * caches). Per-CPU magazines make the common path take only its CPU's lock;
 * past a magazine, each cache's depot of magazine loads (up to 32 KiB of
 * free objects) takes and gives whole loads under the cache lock, and only
 * past the depot do objects go back to their slabs.
 *
 * Alignment policy, per machine (struct dmm_machine.kmalloc_policy), so the
 * simulator can compare them:
 *   DMM_KMALLOC_ALIGNED            every object aligned to dma_min_align
 *                                  (only classes that are multiples of it)
 *   DMM_KMALLOC_PACKED_ON_REQUEST  DMA-aligned unless the caller passes
 *                                  DMM_GFP_PACKED
 *   DMM_KMALLOC_PACKED             packed by default (8-byte minimum); the
 *                                  DMA layer bounces a mapping of an object
 *                                  that is not DMA-aligned for a
 *                                  non-coherent device
 *                                  (dmm_kmalloc_needs_bounce)
 */
#ifndef DMAMEM_SLAB_H
#define DMAMEM_SLAB_H

#include <stddef.h>
#include <stdint.h>

#include "mem.h"

#define DMM_KMALLOC_MAX_CACHE 8192u
#define DMM_KMALLOC_NR_CLASSES 13
#define DMM_KMALLOC_NR_SETS 3   /* any memory, below dma32_limit, below dma_limit */

struct dmm_slab_class_info {
	uint32_t size;              /* object size of the class */
	uint32_t slab_order;        /* pages per slab = 2^order */
	uint32_t objs_per_slab;
	uint32_t set;               /* 0 any, 1 DMA32, 2 DMA */
	uint32_t mag_capacity;      /* free objects one CPU's magazine of the class holds
				     * at most: 16 KiB of them, 4..61 objects */
	uint32_t mag_batch;         /* objects a magazine refill or drain moves (half): one
				     * load of the depot */
	uint32_t depot_max_loads;   /* loads the class's depot holds at most: 32 KiB of
				     * objects, at most 8 loads */
	uint32_t depot_loads;       /* full loads in the depot now */
	uint64_t slabs;             /* slabs held */
	uint64_t objects;           /* objects handed out (live) */
	uint64_t cached;            /* free objects in per-CPU magazines (the depot's not
				     * counted: depot_objects) */
	uint64_t depot_objects;     /* free objects in the depot (depot_loads * mag_batch) */
	uint64_t depot_puts;        /* loads full magazines handed to the depot (cumulative) */
	uint64_t depot_gets;        /* loads empty magazines took from it (cumulative) */
	uint64_t allocs, frees;     /* cumulative (allocs = frees + objects) */
	uint64_t align_waste_bytes; /* object bytes due to DMA alignment, beyond the packed
				     * class's (cumulative) */
	uint64_t fail_nomem;
	uint64_t release_busy;      /* empty slabs the page allocator would not take back (a
				     * page pinned): each stayed a slab of the class, to be
				     * given back when empty again or by dmm_slab_shrink
				     * (cumulative, every refusal) */
	uint64_t double_frees;      /* kfrees refused (-DMM_ENOENT) because the object was free
				     * already: in this CPU's magazine or the depot (cumulative) */
};

/*
 * Allocate @size bytes; *@ptr gets a CPU pointer (8-byte aligned at least,
 * dma_min_align under the aligned policies). Flags: DMM_GFP_ZERO,
 * DMM_GFP_ATOMIC, DMM_GFP_DMA, DMM_GFP_DMA32, DMM_GFP_PACKED. Fails with
 * -DMM_EINVAL (size 0, unknown flags, no virt_to_phys hook), -DMM_ENOMEM
 * (or the page allocator's reason) and counts it per class.
 */
int dmm_kmalloc(struct dmm_mem *mem, size_t size, unsigned flags, void **ptr);

/* Free. -DMM_EINVAL (not a pointer into managed RAM, or not at an object's
 * start), -DMM_ENOENT (not a kmalloc object, or a free object still in
 * this CPU's magazine of its class, up to mag_capacity of them, freed or
 * taken from its slab by a refill, or in its class's depot; an object
 * there holds a mark in its first word the check starts from; counted in
 * the class's double_frees), the page allocator's refusal for a large
 * object (-DMM_EBUSY: a page of it is pinned). Nothing is changed on
 * failure but a counter (fail_invalid for -DMM_EINVAL, double_frees). A
 * second free of an object another CPU's magazine holds, or of one back on
 * its slab, is not seen (kfree would have to wait for that CPU, or walk
 * the slab's free list). */
int dmm_kfree(struct dmm_mem *mem, const void *ptr);

/* Usable size of a live object (its class size), 0 if @ptr is not one. */
size_t dmm_ksize(struct dmm_mem *mem, const void *ptr);

/* The object size a request would get (no allocation); 0 if invalid. */
size_t dmm_kmalloc_size_of(const struct dmm_mem *mem, size_t size, unsigned flags);

/* 1 if [ptr, ptr + size) is not DMA-aligned (starts or ends inside a
 * dma_min_align unit it may share with another object) and does not lie in
 * one small object whose own bounds are DMA-aligned: a non-coherent mapping
 * of it must bounce. O(1). */
int dmm_kmalloc_needs_bounce(const struct dmm_mem *mem, const void *ptr, size_t size);

int dmm_slab_class_info(struct dmm_mem *mem, unsigned set, unsigned cls, struct dmm_slab_class_info *out);

/*
 * Give back what the small-object allocator holds without using it: every
 * CPU's magazines and every cache's depot are emptied into their slabs,
 * then every empty slab (each cache's spare too) goes back to the page
 * allocator. An empty slab whose page is pinned cannot go: it stays a slab
 * of its cache (each refusal counted in release_busy) and a later shrink,
 * or the slab being emptied again, tries again. Returns the number of
 * empty slabs that stayed for that reason (0: everything unused went back;
 * 0 too for a NULL @mem). Context: never from inside a dmamem call (it
 * waits for every CPU's allocator call in progress); takes each cache's
 * lock in turn.
 */
uint64_t dmm_slab_shrink(struct dmm_mem *mem);

/* Walk every cache: slab lists (back links; full slabs on the full list,
 * partial ones on the partial list, the spare empty), free lists inside
 * slabs (in bounds, at object boundaries, no more than free slots),
 * counts, magazines and the depot (whole loads within its bound; every object they hold one of the
 * cache's live slabs', off that slab's free list, held once, with the free
 * mark in its first word, which a live object does not carry: so every
 * object is in exactly one place, live, in a magazine, in the depot or on
 * its slab's free list). Linear in the objects and slabs; it writes
 * tags into free objects and puts them back, all while every CPU and
 * cache lock is held: memory is as it was when it returns, and it writes
 * nothing into an object it rejects. Returns 0 or -DMM_EFAULT. */
int dmm_slab_check(struct dmm_mem *mem);

#endif

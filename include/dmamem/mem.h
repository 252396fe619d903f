/* SPDX-License-Identifier: MIT */
/*
 * Physical memory map and page frame descriptors.
 *
 * dmm_mem_create() builds everything from a machine description: the section
 * table, one struct dmm_page per page of RAM, the zones with their free lists,
 * per-CPU caches and range-allocator index. All of that metadata is carved
 * from the top of the managed RAM itself (as an early boot allocator would)
 * and those pages are marked reserved; nothing comes from a host heap.
 */
#ifndef DMAMEM_MEM_H
#define DMAMEM_MEM_H

#include <stddef.h>
#include <stdint.h>

#include "constraint.h"
#include "machine.h"
#include "platform.h"

struct dmm_mem;

/* Page states (only the head page of a block carries a meaningful state;
 * the other pages of a free or allocated block are DMM_PAGE_TAIL). */
enum dmm_page_state {
	DMM_PAGE_TAIL = 0,     /* inside a block whose head carries the state */
	DMM_PAGE_RESERVED,     /* firmware, metadata, or a hole inside a section */
	DMM_PAGE_FREE,         /* head of a free buddy block (order valid) */
	DMM_PAGE_PCP,          /* sitting in a per-CPU cache */
	DMM_PAGE_ALLOC,        /* head of an allocated buddy block (order valid) */
	DMM_PAGE_RANGE,        /* head of a range allocation (nr pages in private) */
	DMM_PAGE_FREEING,      /* head of an allocated block a free has claimed (transient) */
};

enum dmm_migratetype {
	DMM_MT_UNMOVABLE = 0,
	DMM_MT_MOVABLE,
	DMM_MT_RECLAIMABLE,
	DMM_MT_CMA,
	DMM_MT_ISOLATE,
	DMM_NR_MIGRATETYPES
};

/*
 * Page frame descriptor: 56 bytes. Fields are read-only to users except
 * owner/private of pages they own (an owner may store its own data there).
 */
struct dmm_page {
	struct dmm_page *next;   /* free list / per-CPU list / owner list */
	struct dmm_page *prev;
	dmm_pfn_t pfn;
	void *owner;             /* owner cookie (later: movable operations) */
	uint64_t private;        /* range allocations: number of pages */
	uint32_t refcount;
	uint16_t pins;           /* short-term pins (I/O in flight) */
	uint16_t lt_pins;        /* long-term pins (RDMA, VFIO-style) */
	uint8_t state;           /* enum dmm_page_state */
	uint8_t order;           /* buddy order of a FREE/PCP/ALLOC head */
	uint8_t mt;              /* migratetype of the free list / allocation */
	uint8_t zone;            /* index of the zone holding the page */
	uint8_t pb_mt;           /* pageblock migratetype (first page of a block) */
	uint8_t pb_saved;        /* type to restore when the pageblock is unisolated */
	uint8_t flags;           /* DMM_PGF_* */
	uint8_t cma;             /* contiguous area index + 1 of the page, 0 = none */
};

/* dmm_page.flags visible to users */
#define DMM_PGF_MOVABLE  0x02   /* owned by a movable owner (owner = struct dmm_movable_owner *) */
#define DMM_PGF_MIGRATING 0x04  /* being migrated right now */

struct dmm_mem_info {
	uint64_t ram_pages;          /* whole pages of RAM in the description */
	uint64_t managed_pages;      /* pages handed to the allocators */
	uint64_t reserved_pages;     /* firmware-reserved + metadata pages */
	uint64_t metadata_bytes;     /* all allocator metadata, in bytes */
	uint64_t metadata_pages;     /* pages holding it */
	uint32_t page_desc_size;     /* sizeof(struct dmm_page) */
	uint32_t nr_zones;           /* zones present */
	uint32_t nr_cpus;            /* per-CPU caches */
	uint64_t init_ns;            /* time dmm_mem_create() took */
	dmm_pfn_t min_pfn, max_pfn;  /* lowest RAM pfn, one past the highest */
	uint64_t fail_invalid;       /* calls rejected with -DMM_EINVAL */
	uint64_t fail_range;         /* requests with no RAM in their window (-DMM_ERANGE) */
	const char *cpu_sections;    /* how CPU-local sections run: "hooks", "threads" or "locks" */
	uint64_t cpu_slow_enters;    /* threads: sections entered through the slot's lock */
	uint64_t cpu_syncs;          /* another CPU's caches reached (drain, check, grace period) */
	uint64_t slab_map_bytes;     /* the small-object allocator's map of the linear map's pages
				      * (one byte per page; 0: none, kfree looks pages up instead) */
	const char *bulk_copy;       /* how bounce and migration copies of 128 B..64 KiB run:
				      * "avx2" (a vector loop) or "memcpy" */
};

/*
 * Build the memory map for @m using the hooks in @p (copied).
 * Fails with -DMM_EINVAL if the description or platform is invalid,
 * -DMM_ENOMEM if the metadata does not fit in RAM.
 * Context: process context, single-threaded.
 */
int dmm_mem_create(const struct dmm_machine *m, const struct dmm_platform *p,
		   struct dmm_mem **out);

/* Retire the locks. The RAM (and the metadata in it) is the embedder's. */
void dmm_mem_destroy(struct dmm_mem *mem);

void dmm_mem_get_info(const struct dmm_mem *mem, struct dmm_mem_info *info);
const struct dmm_machine *dmm_mem_machine(const struct dmm_mem *mem);
const struct dmm_platform *dmm_mem_platform(const struct dmm_mem *mem);

/* Descriptor of @pfn, or NULL if @pfn is not a page of RAM. O(1). */
struct dmm_page *dmm_pfn_to_page(struct dmm_mem *mem, dmm_pfn_t pfn);
static inline dmm_pfn_t dmm_page_to_pfn(const struct dmm_page *pg) { return pg->pfn; }

/* CPU pointer to the contents of @pfn, or NULL if not RAM. */
void *dmm_pfn_to_virt(struct dmm_mem *mem, dmm_pfn_t pfn);

static inline dmm_phys_t dmm_pfn_to_phys(dmm_pfn_t pfn) { return pfn << DMM_PAGE_SHIFT; }
static inline dmm_pfn_t dmm_phys_to_pfn(dmm_phys_t pa) { return pa >> DMM_PAGE_SHIFT; }

/* Internal log helper exposed for the library's own modules and embedders. */
void dmm_log(const struct dmm_mem *mem, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif

/* SPDX-License-Identifier: MIT */
/*
 * Private structures of the memory map, the buddy allocator and the range
 * index. Only src/mm/ (and later layers of the library) include this.
 *
 * Lock order: per-CPU cache lock -> zone lock. The range allocator takes
 * only zone locks. Functions named *_locked expect the zone lock held.
 */
#ifndef DMM_MM_INTERNAL_H
#define DMM_MM_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <dmamem/cma.h>
#include <dmamem/error.h>
#include <dmamem/migrate.h>
#include <dmamem/mem.h>
#include <dmamem/page_alloc.h>
#include <dmamem/platform.h>
#include <dmamem/range.h>

#include "lib/assert.h"
#include "lib/bits.h"
#include "lib/copy.h"

/* Sparse memory map: sections of 2^15 pages (128 MiB), each with its own
 * descriptor array; sections without RAM have none. */
#define DMM_SECTION_SHIFT 15
#define DMM_SECTION_PAGES ((uint64_t)1 << DMM_SECTION_SHIFT)

/* dmm_page.flags */
#define DMM_PGF_NORAM 0x01   /* descriptor of a hole inside a present section */
#define DMM_PGF_SLAB 0x10    /* head of a slab (slab.c) */
#define DMM_PGF_KLARGE 0x20  /* a large dmm_kmalloc object (slab.c) */
#define DMM_PGF_COHERENT 0x40 /* head of a coherent DMA buffer (direct.c): dmm_dma_free_coherent frees it */
/* Every page of a block dmamem allocated for its own use (dmm__lib_*:
 * metadata, bounce pools, atomic-pool chunks, IO page tables, device
 * records). Set before the block's head reads as allocated, taken off only
 * by the library's own free (dmm__lib_free_finish), after its claim: no
 * pin lands on such memory (dmm_page_pin: -DMM_EPERM), and the public
 * frees refuse it (-DMM_EPERM), so the library's frees of it are never
 * refused. */
#define DMM_PGF_INTERNAL 0x80

#define DMM_ZONE_NONE 0xff
#define DMM_PCP_NR_MT 3      /* unmovable, movable, reclaimable: request types */
#define DMM_PCP_NR_LISTS 4   /* ... plus pages of contiguous areas (CMA) */
#define DMM_PCP_CMA 3
#define DMM_NR_PCP_ORDERS (DMM_PCP_MAX_ORDER + 1)
#define DMM_CACHELINE 64

/* Range index node: free-run summary of 64 << level pages. */
struct dmm_rt_node {
	uint32_t pre;   /* free pages from the left edge */
	uint32_t suf;   /* free pages up to the right edge */
	uint32_t best;  /* longest free run inside */
};

/* Range index of one zone: a bitmap of buddy-free pages (bit set = the page
 * is in a buddy free block; pages in per-CPU caches count as allocated) and a
 * segment tree of free-run summaries over the bitmap's 64-bit words. */
#define DMM_RT_DIRTY_MAX 256

struct dmm_rt {
	dmm_pfn_t base;             /* pfn of bit 0 (zone start rounded down to 64) */
	uint64_t nr_words;          /* bitmap words covering the zone span */
	uint64_t nr_leaves;         /* power of two >= nr_words */
	uint64_t *bitmap;
	struct dmm_rt_node *tree;   /* 2 * nr_leaves nodes, root at 1 */
	/* Summaries are brought up to date lazily: buddy operations only flip
	 * bits and queue the leaf; the next search (or check) recomputes the
	 * queued leaves and their ancestors once. */
	uint32_t nr_dirty;
	uint64_t dirty[DMM_RT_DIRTY_MAX];
};

struct dmm_pcp {
	_Alignas(DMM_CACHELINE) struct dmm_lock lock;
	struct dmm_page *list[DMM_NR_PCP_ORDERS][DMM_PCP_NR_LISTS]; /* singly linked via next */
	uint32_t nr[DMM_NR_PCP_ORDERS][DMM_PCP_NR_LISTS];
	uint64_t count;             /* pages held */
	uint64_t alloc, free, refill, drain;
};

struct dmm_zone {
	_Alignas(DMM_CACHELINE) struct dmm_lock lock;
	struct dmm_mem *mem;
	enum dmm_zone_type type;
	unsigned idx;
	dmm_pfn_t start_pfn, end_pfn;     /* span */
	uint64_t present, managed;
	uint64_t free;                    /* buddy-free pages; atomic loads outside the lock */
	uint64_t free_cma;
	uint64_t free_isolate;            /* free pages of isolated pageblocks (not allocatable) */
	uint64_t wmark[3];                /* min, low, high */
	uint64_t lowmem_reserve[DMM_NR_ZONE_TYPES];
	uint32_t pcp_batch, pcp_high;
	int wmark_armed;                  /* low-watermark hook armed (atomic) */
	struct dmm_page *free_list[DMM_NR_ORDERS][DMM_NR_MIGRATETYPES];
	uint64_t nr_free[DMM_NR_ORDERS][DMM_NR_MIGRATETYPES];
	uint64_t pageblocks_mt[DMM_NR_MIGRATETYPES];
	struct dmm_zone_stats stats;      /* under the lock (wmark_low_events: atomic) */
	struct dmm_pcp *pcp;              /* nr_cpus entries */
	struct dmm_rt rt;
};

struct dmm_cma_area {
	_Alignas(DMM_CACHELINE) struct dmm_lock lock;
	struct dmm_mem *mem;
	unsigned idx;
	char name[DMM_CMA_NAME_MAX];
	int is_default;
	dmm_pfn_t base;
	uint64_t count;                   /* pages */
	struct dmm_zone *zone;
	uint64_t *bitmap;                 /* bit set = handed out or being claimed */
	uint64_t used;                    /* bits set */
	uint32_t claims;                  /* claims in progress */
	uint32_t releasing;               /* releases between their claim and the give-back */
	struct dmm_cma_info st;           /* statistics (name/geometry filled on query) */
};

/* dmm_page.flags, private to the library */
#define DMM_PGF_UNCACHED 0x08   /* CMA range head: remapped uncached */

struct dmm_mem {
	struct dmm_machine machine;
	struct dmm_platform plat;
	dmm_pfn_t min_pfn, max_pfn;
	uint64_t sec_base, nr_sections;   /* section index of sections[0] */
	struct dmm_page **sections;
	unsigned nr_zones;
	struct dmm_zone zones[DMM_NR_ZONE_TYPES];
	int zone_of_type[DMM_NR_ZONE_TYPES]; /* -1 if absent */
	dmm_phys_t meta_base;             /* physical placement of the metadata */
	uint64_t meta_bytes, meta_pages;
	uint64_t ram_pages, managed_pages, reserved_pages;
	uint64_t init_ns;
	uint64_t fail_invalid, fail_range; /* atomic */
	unsigned nr_cma;
	struct dmm_cma_area *cma;         /* nr_cma areas */
	struct dmm_migrate_stats mstats;  /* atomic counters */
	struct dmm_slab_state *slab;      /* src/mm/slab.c caches */
	/* the slab map: for each page from slab_map_phys (the linear map's
	 * start, rounded down to the largest slab) on, over slab_map_span
	 * bytes, the place in the slab state of the small-object cache whose
	 * live slab holds it, else 0 (always 0 for a page the linear map does
	 * not hold whole): kfree's one load from a pointer to its
	 * cache. slab_map_virt is where slab_map_phys would be in the linear
	 * map. slab_map_span 0: no map (dmm__slab_map_pages) */
	uint8_t *slab_map;
	uint64_t slab_map_span;
	uintptr_t slab_map_virt;
	dmm_phys_t slab_map_phys;
	struct dmm_cpu_slot *cpu_slots;   /* nr_cpus: CPU-local sections (cpu.c) */
	struct dmm_cpu_thread *cpu_threads; /* DMM_CPU_NR_THREADS records (DMM_CPU_THREADS) */
	uint8_t cpu_mode;                 /* DMM_CPU_LOCKS / _HOOKS / _THREADS */
	uint8_t cpu_thread_fence;         /* threads mode: 1 the platform has cpu_fence, 2 it has not; else 0 */
	struct dmm_lock cpu_threads_lock; /* new thread records */
	uint64_t cpu_slow_enters, cpu_syncs; /* atomic counters */
	uint32_t dev_seq;                 /* devices created (atomic): where a tag search starts */
#define DMM_DEV_TAGS 65536u               /* bounce tags (16 bits): bits of dev_tags */
	uint64_t *dev_tags;               /* bounce tags in use, a bit each (device.c; atomic) */
	void *dma_debug;                  /* src/dma/debug.c state, allocated on first enable */
	void *swiotlb;                    /* src/dma/swiotlb.c state, set up by dmm_swiotlb_init */
	uint8_t bounce_all;               /* swiotlb forced for every device (atomic) */
	uint8_t copy_wide;                /* bulk copies take lib/copy.h's vector loop (AVX2 and vector_copy) */
	int dma_debug_on;                 /* global switch (atomic) */
	void *dma_atomic_pool;            /* src/dma/pool.c state, set by dmm_dma_atomic_pool_init */
	dmm_wmark_hook_fn wmark_hook;
	void *wmark_hook_arg;
};

/* ---- memmap.c ------------------------------------------------------------ */

/* Descriptor of any pfn in a present section (including holes), or NULL. */
static inline struct dmm_page *dmm__pfn_page(const struct dmm_mem *mem, dmm_pfn_t pfn)
{
	uint64_t sec = (pfn >> DMM_SECTION_SHIFT) - mem->sec_base;
	if (sec >= mem->nr_sections || !mem->sections[sec])
		return (struct dmm_page *)0;
	return &mem->sections[sec][pfn & (DMM_SECTION_PAGES - 1)];
}

/* Page states and orders are written under a lock but read by migration
 * scans without one: store them atomically. */
static inline void dmm__set_state(struct dmm_page *pg, uint8_t st)
{
	if (!pg)
		__builtin_unreachable(); /* callers pass descriptors of RAM pages */
	__atomic_store_n(&pg->state, st, __ATOMIC_RELEASE);
}

static inline uint8_t dmm__state(const struct dmm_page *pg)
{
	return __atomic_load_n(&pg->state, __ATOMIC_ACQUIRE);
}

/* Claim the block headed by @pg, in state @from, for a free: of two frees
 * at once only one moves it to DMM_PAGE_FREEING (-DMM_ENOENT for the
 * other, as if it came second). Pins are looked at only after the claim: a
 * pinner counts itself first and checks the state second (dmm_page_pin),
 * so one of the two sees the other; a pin that got in first keeps the
 * block, back in @from (-DMM_EBUSY). 0: the caller frees it. */
static inline int dmm__free_claim(struct dmm_page *pg, uint8_t from)
{
	uint8_t st = from;

	if (!__atomic_compare_exchange_n(&pg->state, &st, (uint8_t)DMM_PAGE_FREEING, false, __ATOMIC_SEQ_CST,
					 __ATOMIC_RELAXED))
		return -DMM_ENOENT;
	if (__atomic_load_n(&pg->pins, __ATOMIC_SEQ_CST) || __atomic_load_n(&pg->lt_pins, __ATOMIC_SEQ_CST)) {
		dmm__set_state(pg, from);
		return -DMM_EBUSY;
	}
	return 0;
}

static inline uint8_t dmm__order(const struct dmm_page *pg)
{
	return __atomic_load_n(&pg->order, __ATOMIC_RELAXED);
}

static inline void dmm__set_order(struct dmm_page *pg, unsigned order)
{
	__atomic_store_n(&pg->order, (uint8_t)order, __ATOMIC_RELAXED);
}

static inline uint8_t dmm__mt(const struct dmm_page *pg)
{
	return __atomic_load_n(&pg->mt, __ATOMIC_RELAXED);
}

static inline void dmm__set_mt(struct dmm_page *pg, unsigned mt)
{
	__atomic_store_n(&pg->mt, (uint8_t)mt, __ATOMIC_RELAXED);
}

/* owner and private of movable pages are read by migration while their
 * owner may be freeing the page: relaxed atomics (the owner's isolate
 * callback decides whether the page is still its own). */
static inline void *dmm__owner(const struct dmm_page *pg)
{
	return __atomic_load_n(&pg->owner, __ATOMIC_RELAXED);
}

static inline void dmm__set_owner(struct dmm_page *pg, const void *owner)
{
	__atomic_store_n(&pg->owner, (void *)owner, __ATOMIC_RELAXED);
}

static inline uint64_t dmm__private(const struct dmm_page *pg)
{
	return __atomic_load_n(&pg->private, __ATOMIC_RELAXED);
}

static inline void dmm__set_private(struct dmm_page *pg, uint64_t v)
{
	__atomic_store_n(&pg->private, v, __ATOMIC_RELAXED);
}

static inline struct dmm_page *dmm__pageblock_head(const struct dmm_mem *mem, dmm_pfn_t pfn)
{
	return dmm__pfn_page(mem, dmm_align_down(pfn, DMM_PAGEBLOCK_PAGES));
}

static inline void dmm__lock(const struct dmm_mem *mem, struct dmm_lock *l)
{
	mem->plat.lock(mem->plat.ctx, l);
}

static inline void dmm__unlock(const struct dmm_mem *mem, struct dmm_lock *l)
{
	mem->plat.unlock(mem->plat.ctx, l);
}

/* ---- CPU-local sections (src/mm/cpu.c) -------------------------------------
 * dmm__cpu_enter() returns a CPU index the caller holds until dmm__cpu_exit():
 * that CPU's caches may be used with plain loads and stores. Sections never
 * nest and never sleep. dmm__cpu_sync() runs fn(arg) while no section of
 * @cpu runs: to inspect or drain another CPU's caches, and as a grace period
 * before freeing what a section may still read. Three implementations, by
 * platform:
 *
 *  DMM_CPU_HOOKS    the platform's cpu_enter/cpu_exit/cpu_sync (a kernel:
 *                   preemption off);
 *  DMM_CPU_THREADS  cpu_thread_slots: the core runs them inline for threads.
 *                   Each thread has a record (found by hashing its thread
 *                   pointer; kept for that pointer for good, so never handed
 *                   to another thread while its own may be half-way through
 *                   an enter): its slot, its busy word and its fast flag,
 *                   one cache line. A slot has an owner record, whose fast
 *                   flag is set while nobody else holds the slot. The owner
 *                   enters with plain stores: busy = 1, a compiler barrier,
 *                   then fast must still be set. Anyone else takes the slot's
 *                   lock, clears the owner's fast, calls the platform's
 *                   cpu_fence (a process-wide barrier standing in for the
 *                   fence the owner left out: either the owner's busy store
 *                   is visible, or the owner sees fast cleared) and waits
 *                   for the owner's busy to be 0. A thread that entered that
 *                   way becomes the owner; releasing the slot sets the
 *                   owner's fast again. A thread only ever writes its own
 *                   busy word, so a stale owner cannot disturb a new one.
 *                   Two threads taking turns on one slot would pay the
 *                   barrier at every turn: when an owner loses the slot
 *                   within DMM_CPU_REBIAS_NS of getting it, the thread that
 *                   took it moves on to the next slot for its next sections;
 *                   one that has tried every slot leaves this one without
 *                   an owner instead: everyone then takes the lock (no
 *                   barrier), and after DMM_CPU_REBIAS_ENTERS such entries
 *                   the next thread becomes the owner again.
 *  DMM_CPU_LOCKS    neither: the lock of the slot cpu_id names.
 */
enum { DMM_CPU_LOCKS = 0, DMM_CPU_HOOKS, DMM_CPU_THREADS };
#define DMM_CPU_NR_THREADS 256u /* thread records per memory map */
#define DMM_CPU_PROBE 8u        /* records looked at for one thread pointer */
#define DMM_CPU_REBIAS_NS 2000000u  /* an owner losing its slot sooner: contended */
#define DMM_CPU_REBIAS_ENTERS 4096u /* locked entries before a contended slot gets an owner again */

struct dmm_cpu_thread {
	_Alignas(DMM_CACHELINE) uint32_t busy; /* its thread is inside a section */
	uint32_t fast;                         /* it owns its slot and nobody holds it */
	uint32_t cpu;                          /* the slot it uses */
	uint32_t moves;                        /* slots it left for a busy one lately */
	uintptr_t tp;                          /* its thread pointer, 0 = free */
};

struct dmm_cpu_slot {
	_Alignas(DMM_CACHELINE) struct dmm_cpu_thread *owner; /* threads: enters without the lock */
	uint32_t held;                                       /* threads: a section holds the lock */
	uint32_t locked_enters;                              /* threads, no owner: entries through the lock */
	uint64_t biased_ns;                                  /* threads: when the owner last changed */
	struct dmm_lock lock;                                /* holders (threads), the section (locks) */
};

void dmm__cpu_init(struct dmm_mem *mem);
void dmm__cpu_fini(struct dmm_mem *mem);
unsigned dmm__cpu_enter_slow(const struct dmm_mem *mem);
void dmm__cpu_exit_slow(const struct dmm_mem *mem, unsigned cpu);
void dmm__cpu_sync(const struct dmm_mem *mem, unsigned cpu, void (*fn)(void *arg), void *arg);
/* Run fn(arg) while no section of any CPU runs: cpu_sync nested over the
 * CPUs in increasing order (a consistent view of every CPU's caches). */
void dmm__cpu_hold_all(const struct dmm_mem *mem, void (*fn)(void *arg), void *arg);
/* A grace period: every section that began before this call has ended. */
void dmm__cpu_sync_all(const struct dmm_mem *mem);

static inline unsigned dmm__cpu_hash(uintptr_t tp)
{
	/* Fibonacci hashing: the top bits of the product spread thread
	 * pointers a stack size apart over the whole table */
	_Static_assert(DMM_CPU_NR_THREADS == 256, "the hash keeps 8 bits");
	return (unsigned)(((uint64_t)tp * 0x9e3779b97f4a7c15ull) >> 56);
}

/*
 * The short way in, for paths with a general way to fall back on: the
 * calling thread's record in *@rp if it owns its slot and nobody holds it
 * (threads mode): true, the section has begun, r->cpu is its CPU,
 * dmm__cpu_leave(r) ends it. false otherwise, and nothing was entered. A section entered this
 * way needs no slot at exit: while its busy word is set nobody can take
 * the slot (takers wait for it), so the slot is still its owner's and not
 * held, and clearing busy is all dmm__cpu_exit would do. Paths built on
 * it call nothing that is not a tail call, so they need no stack frame.
 */
static inline bool dmm__cpu_try_enter(const struct dmm_mem *mem, struct dmm_cpu_thread **rp)
{
#ifdef DMM_HAVE_THREAD_POINTER
	struct dmm_cpu_thread *ct = mem->cpu_threads; /* threads mode only */

	/* The thread pointer is read in threads mode only: elsewhere (a
	 * kernel's hooks, a runtime without TLS) it may name nothing
	 * readable (x86-64 reads it from %fs:0). The mode is the record
	 * table itself (loaded anyway), the fence kind read when needed: no
	 * register held across the lookup. */
	if (__builtin_expect(ct != (struct dmm_cpu_thread *)0, 1)) {
		uintptr_t tp = (uintptr_t)__builtin_thread_pointer();
		struct dmm_cpu_thread *r = &ct[dmm__cpu_hash(tp)];
		if (__builtin_expect(__atomic_load_n(&r->tp, __ATOMIC_RELAXED) == tp, 1)) {
			__atomic_store_n(&r->busy, 1, __ATOMIC_RELAXED);
			if (__builtin_expect(mem->cpu_thread_fence == 1, 1))
				__atomic_signal_fence(__ATOMIC_SEQ_CST);
			else
				__atomic_thread_fence(__ATOMIC_SEQ_CST);
			if (__builtin_expect(__atomic_load_n(&r->fast, __ATOMIC_ACQUIRE) != 0, 1)) {
				*rp = r;
				return true;
			}
			__atomic_store_n(&r->busy, 0, __ATOMIC_RELEASE);
		}
	}
#else
	(void)mem;
#endif
	*rp = (struct dmm_cpu_thread *)0;
	return false;
}

/* End a section dmm__cpu_try_enter began. */
static inline void dmm__cpu_leave(struct dmm_cpu_thread *r)
{
	__atomic_store_n(&r->busy, 0, __ATOMIC_RELEASE);
}

static inline void dmm__cpu_exit(const struct dmm_mem *mem, unsigned cpu)
{
#ifdef DMM_HAVE_THREAD_POINTER
	if (__builtin_expect(mem->cpu_mode == DMM_CPU_THREADS, 1)) {
		const struct dmm_cpu_slot *c = &mem->cpu_slots[cpu];
		/* entered as the owner (which no one can change while it is
		 * busy), not holding the slot through its lock */
		if (__builtin_expect(!c->held, 1)) {
			__atomic_store_n(&c->owner->busy, 0, __ATOMIC_RELEASE);
			return;
		}
	}
#endif
	if (mem->cpu_mode == DMM_CPU_HOOKS)
		mem->plat.cpu_exit(mem->plat.ctx, cpu);
	else
		dmm__cpu_exit_slow(mem, cpu);
}

/* dmm__cpu_enter that also says how to leave: *@rp is the thread record
 * when the short way worked (then dmm__cpu_leave), else NULL. */
static inline unsigned dmm__cpu_enter_r(const struct dmm_mem *mem, struct dmm_cpu_thread **rp)
{
	if (__builtin_expect(dmm__cpu_try_enter(mem, rp), 1))
		return (*rp)->cpu;
	if (mem->cpu_mode == DMM_CPU_HOOKS)
		return mem->plat.cpu_enter(mem->plat.ctx);
	return dmm__cpu_enter_slow(mem);
}

static inline unsigned dmm__cpu_enter(const struct dmm_mem *mem)
{
	struct dmm_cpu_thread *r;

	return dmm__cpu_enter_r(mem, &r);
}

static inline void dmm__cpu_exit_r(const struct dmm_mem *mem, struct dmm_cpu_thread *r, unsigned cpu)
{
	if (__builtin_expect(r != (struct dmm_cpu_thread *)0, 1))
		dmm__cpu_leave(r);
	else
		dmm__cpu_exit(mem, cpu);
}

/* A counter only its own CPU's sections write; readers elsewhere see a
 * whole value (relaxed), never a torn one. On x86-64 one add to memory
 * (an aligned 8-byte store is single-copy atomic there; no lock prefix:
 * nobody else writes it), where compilers split a relaxed load and store
 * into three instructions. */
static inline void dmm__pcpu_add(uint64_t *c, uint64_t v)
{
#if defined(__x86_64__)
	__asm__ __volatile__("addq %1, %0" : "+m"(*c) : "er"(v));
#else
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
#endif
}

/* ---- address translation: the platform's linear map inline, else its hooks */
static inline int dmm__virt_to_phys(const struct dmm_mem *mem, const void *va, dmm_phys_t *pa)
{
	uintptr_t off = (uintptr_t)va - (uintptr_t)mem->plat.linear_virt;

	if (__builtin_expect(off < mem->plat.linear_size, 1)) {
		*pa = mem->plat.linear_phys + off;
		return 0;
	}
	if (!mem->plat.virt_to_phys)
		return -DMM_EINVAL;
	return mem->plat.virt_to_phys(mem->plat.ctx, va, pa);
}

/* CPU pointer to @pa, which the caller knows is RAM. */
static inline void *dmm__phys_to_virt(const struct dmm_mem *mem, dmm_phys_t pa)
{
	uint64_t off = pa - mem->plat.linear_phys;

	if (__builtin_expect(off < mem->plat.linear_size, 1))
		return mem->plat.linear_virt + off;
	return mem->plat.phys_to_virt(mem->plat.ctx, pa);
}

static inline uint64_t dmm__now(const struct dmm_mem *mem)
{
	return mem->plat.now_ns ? mem->plat.now_ns(mem->plat.ctx) : 0;
}

void dmm__zero_pages(struct dmm_mem *mem, dmm_pfn_t pfn, uint64_t nr);
/* Zero pages the library keeps its own structures in (used only through
 * the linear map, never DMA'd): flushed from the CPU caches first, so that
 * no line dirtied by a previous owner is written back over them later, then
 * zeroed through the linear map. GFP_ZERO instead zeroes the way the CPU
 * does (phys_fill), which on a modelled write-back cache leaves RAM as it was. */
void dmm__meta_zero(struct dmm_mem *mem, dmm_pfn_t pfn, uint64_t nr);
/* @pages pages of metadata anywhere (a range of the library's own memory,
 * freed with dmm__lib_free_range), zeroed as dmm__meta_zero does: *@pfn
 * and the CPU address *@va. */
int dmm__meta_alloc(struct dmm_mem *mem, uint64_t pages, unsigned gfp, dmm_pfn_t *pfn, void **va);
/* CPU fill of physical memory (through the platform's phys_fill hook). */
void dmm__phys_fill(struct dmm_mem *mem, dmm_phys_t pa, int c, size_t len);
/* CPU copy of physical memory: the platform's phys_copy hook, else (RAM
 * the caller owns) through the linear map. */
static inline void dmm__phys_copy(struct dmm_mem *mem, dmm_phys_t dst, dmm_phys_t src, size_t len)
{
	void *d, *s;

	if (mem->plat.phys_copy) {
		mem->plat.phys_copy(mem->plat.ctx, dst, src, len);
		return;
	}
	d = dmm__phys_to_virt(mem, dst);
	s = dmm__phys_to_virt(mem, src);
	if (d && s)
		dmm__copy(mem->copy_wide, d, s, len);
}
uint64_t dmm__ram_pages_in(const struct dmm_machine *m, dmm_pfn_t lo, dmm_pfn_t hi);
/* Are pages [first, last] all RAM? The pages outside every RAM region are
 * exactly the holes, so a span inside one region is RAM; one that crosses
 * regions is checked page by page. */
bool dmm__is_ram_span(const struct dmm_mem *mem, dmm_pfn_t first, dmm_pfn_t last);

/* ---- page_alloc.c -------------------------------------------------------- */

/*
 * Allocation with a movable owner: only pages of owned movable allocations
 * may come from contiguous areas (only they can be migrated out again).
 * The owner and flag are set before the page becomes visible as allocated.
 */
int dmm__page_alloc_owned(struct dmm_mem *mem, unsigned order, const struct dmm_constraint *c,
			  unsigned flags, const struct dmm_movable_owner *owner, dmm_pfn_t *pfn);

/*
 * A free in two steps, for the user of a block that must tear down what
 * still refers to it (an IOMMU mapping, a slab) only once the free can no
 * longer be refused. dmm__free_begin() claims the block headed by @pg, an
 * allocated buddy block (@from DMM_PAGE_ALLOC) or range (DMM_PAGE_RANGE,
 * not a contiguous area's), exactly as dmm_page_free()/dmm_free_range()
 * claim it: 0, or -DMM_EBUSY (pinned) / -DMM_ENOENT (not in state @from),
 * counted as a rejected free, nothing changed. The caller's own mark (slab,
 * large object, coherent buffer) is not looked at: the caller takes it off
 * before the finish. While the block is claimed (DMM_PAGE_FREEING) no pin
 * lands on it (dmm_page_pin fails with -DMM_EAGAIN). Then exactly one of
 * dmm__free_cancel() (it stays allocated as it was) and dmm__free_finish()
 * (it goes back to the buddy lists, the order or the range's size read
 * from @pg).
 */
int dmm__free_begin(struct dmm_mem *mem, struct dmm_page *pg, uint8_t from);
void dmm__free_cancel(struct dmm_page *pg, uint8_t from);
void dmm__free_finish(struct dmm_mem *mem, struct dmm_page *pg, uint8_t from);

/*
 * The library's own memory (DMM_PGF_INTERNAL on every page). The
 * allocations are dmm_page_alloc() / dmm_alloc_range() with the mark set on
 * every page before the head reads as allocated, so no pin ever lands on
 * the block (dmm_page_pin refuses it) and the public frees refuse it. Free
 * them with the dmm__lib_* frees only: those take the mark off once the
 * block is claimed and cannot be refused for a pin (a pinner that read the
 * page before it was allocated may hold a count for an instant, then
 * takes it back: the claim waits for that). They fail only for a block
 * that is no such allocation (-DMM_ENOENT) or of another size or order
 * (-DMM_EINVAL): a bug of the library, logged, nothing changed.
 * dmm__lib_free_begin()/_finish() are the two-step form (dmm__free_begin),
 * for a user that must tear something down once the free is certain;
 * dmm__free_cancel() undoes the begin.
 */
#define DMM_GFP__INTERNAL (1u << 31) /* request flag of the dmm__lib_* allocations */
int dmm__lib_page_alloc(struct dmm_mem *mem, unsigned order, const struct dmm_constraint *c, unsigned flags,
			dmm_pfn_t *pfn);
int dmm__lib_alloc_range(struct dmm_mem *mem, const struct dmm_constraint *c, uint64_t nr_pages, unsigned flags,
			 dmm_pfn_t *pfn);
int dmm__lib_page_free(struct dmm_mem *mem, dmm_pfn_t pfn, unsigned order);
int dmm__lib_free_range(struct dmm_mem *mem, dmm_pfn_t pfn, uint64_t nr_pages);
int dmm__lib_free_begin(struct dmm_mem *mem, struct dmm_page *pg, uint8_t from);
void dmm__lib_free_finish(struct dmm_mem *mem, struct dmm_page *pg, uint8_t from);
/* Mark the @n pages from @pfn as the library's (allocation paths, before
 * the head's state is stored). */
void dmm__lib_mark(struct dmm_mem *mem, dmm_pfn_t pfn, uint64_t n);

/* Set up zones (spans, counts, watermarks, per-CPU caches) after the memmap. */
void dmm__zones_init_watermarks(struct dmm_mem *mem);
void dmm__pcp_init(struct dmm_mem *mem);
/* Add a free block at init (no merging: the caller passes maximal blocks). */
void dmm__init_free_block(struct dmm_zone *z, dmm_pfn_t pfn, unsigned order);

/* Buddy internals used by the range allocator (zone lock held). */
void dmm__free_block_locked(struct dmm_zone *z, dmm_pfn_t pfn, unsigned order);
void dmm__del_free_locked(struct dmm_zone *z, struct dmm_page *pg);
void dmm__add_free_locked(struct dmm_zone *z, struct dmm_page *pg, unsigned order, unsigned mt);
/* 0 if the zone may give @nr_pages; -DMM_EWMARK if only by going below its
 * watermark (+ lowmem_reserve for @classzone); -DMM_ENOMEM if it has fewer free. */
int dmm__zone_wmark_check(const struct dmm_zone *z, uint64_t nr_pages, unsigned flags,
			  enum dmm_zone_type classzone);
void dmm__zone_set_free(struct dmm_zone *z, uint64_t v);
void dmm__drain_zone_pcp(struct dmm_zone *z);
void dmm__wmark_after_alloc(struct dmm_zone *z);
void dmm__wmark_after_free(struct dmm_zone *z);
uint64_t dmm__zone_pcp_pages(struct dmm_zone *z);
int dmm__constraint_pfns(const struct dmm_mem *mem, const struct dmm_constraint *c, dmm_pfn_t *lo,
			 dmm_pfn_t *hi);
int dmm__class_zone(const struct dmm_mem *mem, dmm_pfn_t lo, dmm_pfn_t hi);
bool dmm__lowmem_policy_allows(const struct dmm_mem *mem, const struct dmm_zone *z,
			       const struct dmm_zone *cz);
/* Failure accounting: each returns the error code it counted. */
int dmm__count_invalid(struct dmm_mem *mem);
int dmm__count_range(struct dmm_mem *mem);
/* @lo, @hi: the request's window in pfns. */
int dmm__count_fail(struct dmm_mem *mem, int class_zone, dmm_pfn_t lo, dmm_pfn_t hi, bool saw_wmark);
unsigned dmm__pageblock_mt(const struct dmm_mem *mem, dmm_pfn_t pfn);
/* Isolate a pageblock (its free pages leave the allocatable lists);
 * -DMM_EAGAIN if it is isolated already. Zone lock held. */
int dmm__isolate_pageblock_locked(struct dmm_zone *z, dmm_pfn_t pfn);
void dmm__unisolate_pageblock_locked(struct dmm_zone *z, dmm_pfn_t pfn);
/* Block head containing pfn, if pfn lies in a free buddy block. */
struct dmm_page *dmm__free_head_of(struct dmm_zone *z, dmm_pfn_t pfn);

/* ---- slab.c ------------------------------------------------------------- */

struct dmm_slab_state;
#define DMM_SLAB_MAX_ORDER 3 /* slabs are at most 2^3 pages */
uint64_t dmm__slab_meta_size(unsigned nr_cpus);
/* dmm_kmalloc / dmm_kfree for the library's own objects: one larger than
 * the largest class is the library's own memory (dmm__meta_alloc, zeroed;
 * a large dmm_kmalloc object is the public page allocator's, which a
 * caller may pin), the rest come from the caches. */
int dmm__lib_kmalloc(struct dmm_mem *mem, size_t size, unsigned flags, void **ptr);
void dmm__lib_kfree(struct dmm_mem *mem, const void *ptr);
/* Pages the slab map of @g (geometry and platform known) covers: from the
 * linear map's start rounded down to the largest slab up to the end of the
 * linear map or of RAM; 0 (no map) if there is no linear map, or that
 * would be more than twice the RAM's pages (a sparse physical map: kfree
 * then looks pages up through the sections). */
uint64_t dmm__slab_map_pages(const struct dmm_mem *g);
void dmm__slab_init(struct dmm_mem *mem, void *meta);
/* The small object holding @pa, if any: 1 and its bounds, else 0. */
int dmm__slab_object_of(struct dmm_mem *mem, dmm_phys_t pa, dmm_phys_t *start, uint64_t *size);

/* ---- cma.c / migrate.c ------------------------------------------------- */

/* Pages of declared area @d (size rounded up to pageblocks). */
uint64_t dmm__cma_decl_pages(const struct dmm_cma_decl *d);
/* Place the declared areas in RAM (after descriptors, before the free
 * lists are built): marks their pages and pageblocks. */
int dmm__cma_place(struct dmm_mem *mem);
/* Migrate one movable page; on success *new_pfn is where it went. */
enum dmm_migrate_reason dmm__migrate_one(struct dmm_mem *mem, dmm_pfn_t pfn, unsigned gfp,
					 dmm_pfn_t *new_pfn);

uint64_t dmm__migrate_pages_in(struct dmm_mem *mem, dmm_pfn_t lo, dmm_pfn_t hi, unsigned gfp,
			       bool stop_early, struct dmm_migrate_report *r, dmm_pfn_t *first_bad,
			       enum dmm_migrate_reason *first_why);
/* Isolate / restore the pageblocks covering [lo, hi). -DMM_EAGAIN if one is
 * isolated already (nothing stays isolated then). */
int dmm__isolate_range(struct dmm_mem *mem, dmm_pfn_t lo, dmm_pfn_t hi);
void dmm__unisolate_range(struct dmm_mem *mem, dmm_pfn_t lo, dmm_pfn_t hi);

/* ---- range.c ------------------------------------------------------------- */

uint64_t dmm__rt_meta_words(dmm_pfn_t start, dmm_pfn_t end, uint64_t *nr_words,
			    uint64_t *nr_leaves);
void dmm__rt_setup(struct dmm_rt *rt, dmm_pfn_t start, dmm_pfn_t end, void *mem_for_words,
		   void *mem_for_tree);
/* Mark [pfn, pfn + n) buddy-free (set) or not (clear) and update summaries. */
void dmm__rt_mark(struct dmm_rt *rt, dmm_pfn_t pfn, uint64_t n, bool free);
/* Set bitmap bits only (init, before dmm__rt_build). */
void dmm__rt_set_bits(struct dmm_rt *rt, dmm_pfn_t pfn, uint64_t n);
/* Rebuild every summary from the bitmap (init). */
void dmm__rt_build(struct dmm_rt *rt);
/* Find a fit in zone z (lock held). Returns true and *out on success. */
bool dmm__rt_find_fit(struct dmm_rt *rt, dmm_pfn_t lo, dmm_pfn_t hi, uint64_t n,
		      uint64_t align_pages, uint64_t boundary_pages, dmm_pfn_t *out);
/* Take [pfn, pfn + n) out of the buddy lists (all pages must be buddy-free). */
void dmm__take_range_locked(struct dmm_zone *z, dmm_pfn_t pfn, uint64_t n);
/* Give [pfn, pfn + n) back to the buddy lists with merging. */
void dmm__give_range_locked(struct dmm_zone *z, dmm_pfn_t pfn, uint64_t n);
/* The rest of the free of the range headed by @pg of zone @z, claimed by
 * dmm__free_begin() (takes the zone lock). */
void dmm__range_free_claimed(struct dmm_mem *mem, struct dmm_zone *z, struct dmm_page *pg);
/* Find and take n pages in [lo, hi) of zone z (takes the zone lock). */
int dmm__range_take_in_zone(struct dmm_zone *z, dmm_pfn_t lo, dmm_pfn_t hi, uint64_t n,
			    uint64_t align_pages, uint64_t boundary_pages, dmm_pfn_t *out);
uint64_t dmm__rt_popcount(const struct dmm_rt *rt);
bool dmm__rt_test(const struct dmm_rt *rt, dmm_pfn_t pfn);
int dmm__rt_check_zone(const struct dmm_mem *mem, struct dmm_zone *z);

#endif

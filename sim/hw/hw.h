/* SPDX-License-Identifier: MIT */
/*
 * Hardware model: RAM, a CPU cache that behaves like one, device DMA engines.
 *
 * The model sits under the library exactly where real hardware would. It
 * builds on the hosted platform (which maps the machine's RAM into host
 * memory) and exposes its own struct dmm_platform whose cache maintenance,
 * memory attribute, phys_fill and phys_copy hooks act on the model:
 *
 *        CPU accessors                      device engines
 *   dmm_hw_cpu_read/write/fill/copy    dmm_hw_dev_read/write(bus address)
 *   platform phys_fill/phys_copy            |  truncate to addr_bits
 *              |                            |  bus -> phys (dma-ranges or
 *              v                            |  an IOMMU translate hook)
 *   +--------------------------+            |
 *   | CPU cache (write-back,   |<-- snoop --+ coherent devices only
 *   | write-allocate, sparse)  |            |
 *   +--------------------------+            |
 *              | fill / write-back          | non-coherent: RAM only
 *              v                            v
 *   +------------------------------------------------------------+
 *   | RAM: the hosted mapping (phys_to_virt is a raw view of it) |
 *   +------------------------------------------------------------+
 *
 * The CPU side is one cache shared by all CPUs (CPU caches are coherent
 * with each other on every SMP machine; the interesting incoherence is
 * between CPU and device). Lines have the machine's cache_line size, are
 * kept in a hash table (only lines actually cached cost memory) and carry a
 * dirty bit. Pages have a memory attribute: write-back (default, cached),
 * write-combining or uncached (both bypass the cache).
 *
 * A non-coherent device reads and writes RAM only: it does not see dirty
 * lines, and its writes leave any cached copy stale. Forgetting a CLEAN
 * before a device reads, or an INVALIDATE before the CPU reads what a device
 * wrote, gives wrong data in the model exactly as on real hardware, and an
 * INVALIDATE drops whole lines, dirty neighbours included.
 *
 * The raw view: phys_to_virt() of the model's platform is the hosted
 * pointer into RAM, bypassing the cache (the library keeps its metadata
 * there and never DMAs it). Code that wants modelled CPU behaviour must use
 * the dmm_hw_cpu_* accessors; memory touched both raw and through the model
 * sees each view separately (see docs/HARDWARE_MODEL.md).
 *
 * Thread safety: every function may be called from any thread; one lock
 * protects the cache, the attribute map and the statistics (the optional
 * IOMMU has its own). Observer and translate callbacks are called without
 * that lock held.
 */
#ifndef DMM_SIM_HW_H
#define DMM_SIM_HW_H

#include <stddef.h>
#include <stdint.h>

#include <dmamem/constraint.h>
#include <dmamem/dma.h>
#include <dmamem/hosted.h>
#include <dmamem/machine.h>
#include <dmamem/mem.h>
#include <dmamem/platform.h>

struct dmm_hw;
struct dmm_hw_dev;

/* ---- creation --------------------------------------------------------------- */

struct dmm_hw_opts {
	unsigned nr_cpus;          /* per-CPU slots of the hosted platform (0 = online CPUs) */
	int log_level;             /* messages above this level are dropped (-1 = silent) */
	int prefetch;              /* 1: CPU accesses speculatively pull neighbouring lines */
	uint64_t prefetch_seed;    /* seed of the prefetcher's PRNG (0 is a valid seed) */
	unsigned prefetch_distance;/* farthest line pulled, in lines from the access (0 = 8) */
	int prefetch_alias;        /* 1: speculation also pulls lines of WC/UC pages, as a
				    * CPU does when a cacheable alias (the linear map) of a
				    * remapped page still exists */
	uint64_t max_lines;        /* cache capacity in lines (0 = unlimited); LRU eviction */
	int hooks_write_through;   /* 1: the platform's phys_fill/phys_copy store to RAM too
				    * (a cached copy is updated, never left newer than RAM), so
				    * memory the library also reads raw stays consistent */
};

/* Defaults: all CPUs, warnings and errors logged, no prefetch, unlimited
 * cache, faithful write-back hooks. */
void dmm_hw_opts_default(struct dmm_hw_opts *o);

/*
 * dmm_hw_create() - build the model for machine @m.
 * @o may be NULL (defaults). Creates the hosted platform (RAM mapping,
 * worker) underneath. Fails with -DMM_EINVAL (NULL @m/@out, invalid machine,
 * nr_cpus > 1024), -DMM_ENOMEM, -DMM_EAGAIN (worker thread); *@out is NULL
 * on failure. Context: process context.
 */
int dmm_hw_create(const struct dmm_machine *m, const struct dmm_hw_opts *o, struct dmm_hw **out);

/* Destroy the devices still registered, the cache and the hosted platform.
 * A struct dmm_mem built on the model must be destroyed first. NULL ignored. */
void dmm_hw_destroy(struct dmm_hw *hw);

/* The model's hook table (valid until dmm_hw_destroy()): hosted locks, work,
 * time, log, phys_to_virt and cpu_id; the model's cache_maint, set_memattr,
 * phys_fill, phys_copy and iotlb_inval (dmm_hw_iommu_invalidate(); nothing
 * without an IOMMU). ctx is the struct dmm_hw. */
const struct dmm_platform *dmm_hw_platform(struct dmm_hw *hw);
struct dmm_hosted *dmm_hw_hosted(struct dmm_hw *hw);
const struct dmm_machine *dmm_hw_machine(const struct dmm_hw *hw);
uint32_t dmm_hw_line_size(const struct dmm_hw *hw);

/* Model + memory map in one call, like dmm_hosted_mem_create(). Both outputs
 * are NULL on failure. */
int dmm_hw_mem_create(const struct dmm_machine *m, const struct dmm_hw_opts *o,
		      struct dmm_hw **hw, struct dmm_mem **mem);
void dmm_hw_mem_destroy(struct dmm_hw *hw, struct dmm_mem *mem);

/* ---- RAM ---------------------------------------------------------------------- */

/* 1 if [pa, pa + len) is RAM throughout (len 0: pa itself), else 0. */
int dmm_hw_is_ram(const struct dmm_hw *hw, dmm_phys_t pa, uint64_t len);

/* Backdoor access to what RAM holds, ignoring the cache (a logic analyser on
 * the memory bus). 0, -DMM_EINVAL (NULL) or -DMM_EFAULT (not RAM). */
int dmm_hw_ram_read(struct dmm_hw *hw, dmm_phys_t pa, void *buf, size_t len);
int dmm_hw_ram_write(struct dmm_hw *hw, dmm_phys_t pa, const void *buf, size_t len);

/* Physical address of a pointer into the RAM mapping (phys_to_virt's
 * inverse). 0 or -DMM_EFAULT. */
int dmm_hw_virt_to_phys(const struct dmm_hw *hw, const void *va, dmm_phys_t *pa);

/* ---- CPU accesses (through the cache) ------------------------------------------ */

/*
 * CPU loads and stores. Write-back pages go through the cache: a miss fills
 * the line from RAM, a store allocates the line and marks it dirty. WC/UC
 * pages go straight to RAM (a cached line of such a page found on the way is
 * counted as an alias hazard and ignored). With prefetch on, an access may
 * also pull neighbouring lines in, clean.
 * Return 0, -DMM_EINVAL (NULL buffer with len > 0, address overflow) or
 * -DMM_EFAULT (the range is not RAM throughout: nothing is accessed).
 */
int dmm_hw_cpu_read(struct dmm_hw *hw, dmm_phys_t pa, void *buf, size_t len);
int dmm_hw_cpu_write(struct dmm_hw *hw, dmm_phys_t pa, const void *buf, size_t len);
int dmm_hw_cpu_fill(struct dmm_hw *hw, dmm_phys_t pa, int c, size_t len);
/* memmove semantics: loads from @src, stores to @dst, both through the cache. */
int dmm_hw_cpu_copy(struct dmm_hw *hw, dmm_phys_t dst, dmm_phys_t src, size_t len);
/* The same on pointers into the RAM mapping (e.g. from phys_to_virt). */
int dmm_hw_cpu_read_virt(struct dmm_hw *hw, const void *va, void *buf, size_t len);
int dmm_hw_cpu_write_virt(struct dmm_hw *hw, void *va, const void *buf, size_t len);

/* ---- cache ---------------------------------------------------------------------- */

enum dmm_hw_line_state { DMM_HW_LINE_ABSENT = 0, DMM_HW_LINE_CLEAN, DMM_HW_LINE_DIRTY };

/*
 * Maintenance by physical range, on every line that overlaps it (whole
 * lines: an INVALIDATE of a partial line drops its other bytes too).
 * CLEAN writes dirty lines back and keeps them; INVALIDATE drops lines
 * without write-back (dirty data is lost and counted); FLUSH does both.
 * This is the platform's cache_maint hook. 0 or -DMM_EINVAL (bad op or
 * the range wraps).
 */
int dmm_hw_cache_maint(struct dmm_hw *hw, enum dmm_cache_op op, dmm_phys_t pa, size_t len);

/* Write back every dirty line and empty the cache (wbinvd). */
void dmm_hw_cache_flush_all(struct dmm_hw *hw);

/*
 * Force a speculative prefetch of every line overlapping [pa, pa + len)
 * that is RAM, whatever the page attribute (a prefetch through a cacheable
 * alias): absent lines come in clean from RAM; present lines are left alone.
 * Returns the number of lines brought in, or -DMM_EINVAL.
 */
int dmm_hw_prefetch(struct dmm_hw *hw, dmm_phys_t pa, size_t len);

/* State of the line holding @pa. */
enum dmm_hw_line_state dmm_hw_line_state(struct dmm_hw *hw, dmm_phys_t pa);

/* Copy the cached data of the line holding @pa into @buf (line size bytes)
 * without any side effect; returns the line state (nothing copied if
 * absent). */
enum dmm_hw_line_state dmm_hw_line_peek(struct dmm_hw *hw, dmm_phys_t pa, void *buf);

/* ---- memory attributes ---------------------------------------------------------- */

/*
 * Set the attribute of every page overlapping [pa, pa + len) (the
 * platform's set_memattr hook). Lines of those pages that are still cached
 * stay cached (as on real hardware: the attribute change does not clean the
 * cache; the caller must FLUSH first) and are counted in
 * memattr_cached_lines. 0, -DMM_EINVAL (unknown attribute, not RAM, wraps)
 * or -DMM_ENOMEM (nothing changed).
 */
int dmm_hw_set_memattr(struct dmm_hw *hw, dmm_phys_t pa, size_t len, enum dmm_memattr attr);
enum dmm_memattr dmm_hw_memattr(struct dmm_hw *hw, dmm_phys_t pa);

/* ---- statistics, checking --------------------------------------------------------- */

struct dmm_hw_stats {
	/* state */
	uint64_t lines;               /* lines cached now */
	uint64_t dirty;               /* of which dirty */
	uint64_t peak_lines;
	uint64_t nc_pages;            /* pages whose attribute is WC or UC now */
	/* CPU traffic */
	uint64_t hits;                /* line accesses served by the cache */
	uint64_t misses;              /* line accesses that allocated a line */
	uint64_t uncached_accesses;   /* CPU accesses to WC/UC pages (per page touched) */
	uint64_t uncached_bytes;
	uint64_t writebacks;          /* dirty lines written to RAM (maintenance, eviction) */
	uint64_t evictions;           /* lines evicted for capacity */
	uint64_t dirty_discarded;     /* dirty lines dropped by INVALIDATE: data lost */
	dmm_phys_t last_discard_pa;   /* line address of the last one */
	/* prefetch and attribute aliases */
	uint64_t prefetches;          /* lines brought in by prefetch (speculative or forced) */
	uint64_t alias_prefetches;    /* of which lines of WC/UC pages (a cacheable alias) */
	uint64_t alias_hazards;       /* cached lines found by WC/UC CPU accesses */
	dmm_phys_t last_alias_pa;     /* line address of the last alias event */
	/* maintenance, by enum dmm_cache_op */
	uint64_t maint_ops[3];
	uint64_t maint_bytes[3];
	uint64_t maint_lines[3];      /* cached lines each kind acted on */
	/* memory attributes */
	uint64_t memattr_changes;     /* set_memattr calls that succeeded */
	uint64_t memattr_pages;       /* pages they covered */
	uint64_t memattr_cached_lines;/* lines still cached on pages made WC/UC */
	/* platform phys_fill/phys_copy */
	uint64_t hook_fills;
	uint64_t hook_copies;
	uint64_t hook_bytes;
	uint64_t hook_errors;         /* calls on ranges that are not RAM (ignored) */
};

void dmm_hw_get_stats(struct dmm_hw *hw, struct dmm_hw_stats *st);
/* Zero the counters (the state fields and peak restart from the current state). */
void dmm_hw_reset_stats(struct dmm_hw *hw);

/* Walk every invariant (hash chains, LRU list, counts, capacity, attribute
 * map). 0 or -DMM_EFAULT (a message is logged). */
int dmm_hw_check(struct dmm_hw *hw);

/* ---- observer ----------------------------------------------------------------------- */

enum dmm_hw_agent {
	DMM_HW_AGENT_CPU = 0,   /* dmm_hw_cpu_* accessors */
	DMM_HW_AGENT_HOOK,      /* platform phys_fill/phys_copy (the library's own copies;
				 * may be called with library locks held) */
	DMM_HW_AGENT_DEV,       /* a device DMA engine */
};

struct dmm_hw_access {
	enum dmm_hw_agent agent;
	int write;                /* 1 = store / device write to memory */
	unsigned cpu;             /* CPU accesses: the calling thread's cpu_id */
	struct dmm_hw_dev *dev;   /* device accesses */
	dmm_dma_addr_t bus;       /* device: bus address as issued for this piece */
	dmm_dma_addr_t bus_eff;   /* device: after truncation to addr_bits */
	int truncated;            /* device: bus != bus_eff */
	int fault;                /* device: no translation or not RAM; pa invalid,
				   * the access does not happen */
	dmm_phys_t pa;            /* physical address accessed */
	size_t len;
};

/*
 * Called before every access takes effect, once per CPU call (a copy is a
 * read then a write) and once per physically contiguous piece of a device
 * access (faults included). Called without the model's lock held: it may
 * query the model (line state, stats) but must not call the library when
 * agent is DMM_HW_AGENT_HOOK. NULL @fn removes it. Set it while no access
 * is in flight.
 */
typedef void (*dmm_hw_observer_fn)(void *ctx, const struct dmm_hw_access *a);
void dmm_hw_set_observer(struct dmm_hw *hw, dmm_hw_observer_fn fn, void *ctx);

/* ---- device DMA engines -------------------------------------------------------------- */

#define DMM_HW_DEV_NAME_MAX 32
#define DMM_HW_DEV_EVENTS 16   /* recent truncation/fault events kept per device */

struct dmm_hw_dev_desc {
	const char *name;
	unsigned addr_bits;        /* 1..64: address lines the engine drives */
	int coherent;              /* 1: snoops the CPU cache */
	unsigned nr_ranges;        /* 0 = identity (bus == phys) */
	struct dmm_dma_range ranges[DMM_MAX_DMA_RANGES];
};

struct dmm_hw_dev_stats {
	uint64_t reads, writes;    /* accesses completed */
	uint64_t bytes_read, bytes_written;
	uint64_t truncations;      /* accesses whose bus address lost bits */
	uint64_t faults;           /* accesses refused (no translation, not RAM) */
	uint64_t snoop_hits;       /* coherent: lines served or updated in the cache */
};

enum dmm_hw_event_kind { DMM_HW_EV_TRUNCATED = 1, DMM_HW_EV_FAULT = 2 };

struct dmm_hw_dev_event {
	enum dmm_hw_event_kind kind;
	int write;
	dmm_dma_addr_t bus;        /* the address the driver gave (start of the access) */
	dmm_dma_addr_t bus_eff;    /* truncated: first address driven after truncation;
				    * fault: the effective address that failed */
	size_t len;
};

/*
 * dmm_hw_dev_create() - a DMA engine on @hw described by @d (copied).
 * Fails with -DMM_EINVAL (NULL, addr_bits outside 1..64, more than
 * DMM_MAX_DMA_RANGES ranges, an empty or wrapping range) or -DMM_ENOMEM.
 */
int dmm_hw_dev_create(struct dmm_hw *hw, const struct dmm_hw_dev_desc *d, struct dmm_hw_dev **out);
void dmm_hw_dev_destroy(struct dmm_hw_dev *dev);
const char *dmm_hw_dev_name(const struct dmm_hw_dev *dev);

/*
 * Translation hook, for an IOMMU: map the (already truncated) bus address
 * @bus for an access of direction @write to a physical address, and say how
 * many bytes from there stay physically contiguous and translated (@run,
 * >= 1). Return 0, or a negative code (a fault: the access does not happen).
 * Replaces the dma-ranges translation; NULL restores it. Called without the
 * model's lock, possibly twice per access (check, then perform). Set it
 * while the device is idle.
 */
typedef int (*dmm_hw_translate_fn)(void *ctx, struct dmm_hw_dev *dev, dmm_dma_addr_t bus,
				   int write, dmm_phys_t *pa, uint64_t *run);
void dmm_hw_dev_set_translate(struct dmm_hw_dev *dev, dmm_hw_translate_fn fn, void *ctx);

/*
 * Device reads (memory -> @buf) and writes (@buf -> memory) at bus address
 * @bus. The address is truncated to addr_bits first (each byte's address
 * wraps as the engine's counter would; recorded as an event when bits were
 * lost), then translated. If any piece has no translation or is not RAM,
 * nothing is accessed: a fault event is recorded and -DMM_EFAULT returned.
 * Coherent devices snoop (reads see dirty lines, writes update cached
 * lines); non-coherent ones touch RAM only. 0, -DMM_EINVAL or -DMM_EFAULT.
 */
int dmm_hw_dev_read(struct dmm_hw_dev *dev, dmm_dma_addr_t bus, void *buf, size_t len);
int dmm_hw_dev_write(struct dmm_hw_dev *dev, dmm_dma_addr_t bus, const void *buf, size_t len);

/*
 * Where would an access at @bus go? Truncates and translates exactly as an
 * access would (without recording anything): *@bus_eff, *@pa and *@run (bytes
 * contiguous from there) are set on success. 0 or the fault code.
 */
int dmm_hw_dev_resolve(struct dmm_hw_dev *dev, dmm_dma_addr_t bus, int write,
		       dmm_dma_addr_t *bus_eff, dmm_phys_t *pa, uint64_t *run);

void dmm_hw_dev_get_stats(struct dmm_hw_dev *dev, struct dmm_hw_dev_stats *st);

/* Copy up to @max most recent events, oldest first; returns how many. *@total
 * (if not NULL) gets the number recorded since creation. */
unsigned dmm_hw_dev_events(struct dmm_hw_dev *dev, struct dmm_hw_dev_event *ev, unsigned max,
			   uint64_t *total);

/* ---- IOMMU ---------------------------------------------------------------------------- */

/*
 * An IOMMU in front of device engines. It walks the IO page tables whose
 * format include/dmamem/iommu.h specifies (4 levels of 512 64-bit entries,
 * IOVA bits [47:39] [38:30] [29:21] [20:12]; VALID, READ, WRITE, LEAF; 4 KiB
 * pages, 2 MiB and 1 GiB blocks) straight from RAM (never through the CPU
 * cache), with its own walker, and caches the leaves it finds in an IOTLB:
 * fully associative, LRU, tagged by domain id and the page or block base.
 *
 * An IOTLB entry is used until it is invalidated or evicted, whatever the
 * table says since: that is the hazard of unmapping without invalidating.
 * The model walks the table again on every hit (not counted as a walk) and
 * counts a stale hit when the table no longer maps the address to the same
 * physical address with at least the cached permissions; the access still
 * uses the cached entry.
 *
 * A translation faults when the walk finds no valid leaf (UNMAPPED) or the
 * leaf (cached or walked) lacks READ for a device read or WRITE for a device
 * write (PERM). The engine then refuses the whole access (-DMM_EFAULT, its own
 * fault event) and the IOMMU records the fault in its log.
 *
 * What is counted: an engine access translates each piece twice (check, then
 * perform). Only the check pass counts translations, hits, misses, walks,
 * walk reads and stale hits; the perform pass records a fault only (the
 * translation vanished in between: a concurrent invalidation). A fault
 * found by the check pass ends the access, so it is counted once.
 * dmm_hw_dev_resolve() consults the IOTLB and the table and changes and
 * counts nothing. A direct call of the translate hook counts as a check.
 *
 * Thread safety: the IOMMU has its own lock; every function may be called
 * from any thread. Attach and detach while the device is idle.
 */

#define DMM_HW_IOMMU_FAULTS 64     /* faults kept in the log */
#define DMM_HW_IOTLB_MAX 4096u     /* largest iotlb_entries */

struct dmm_hw_iommu_opts {
	unsigned iotlb_entries;    /* 0 = 64 (at most DMM_HW_IOTLB_MAX); fully associative, LRU */
	uint64_t inval_latency_ns; /* modelled completion time of one invalidation (busy
				    * wait after the entries are dropped); 0 = none */
};

/* Defaults: 64 entries, no invalidation latency. */
void dmm_hw_iommu_opts_default(struct dmm_hw_iommu_opts *o);

/*
 * dmm_hw_iommu_enable() - give the machine an IOMMU (once). @o may be NULL
 * (defaults). 0, -DMM_EINVAL (NULL @hw, too many IOTLB entries), -DMM_EEXIST
 * (already enabled), -DMM_ENOMEM.
 */
int dmm_hw_iommu_enable(struct dmm_hw *hw, const struct dmm_hw_iommu_opts *o);
/* 1 if @hw has an IOMMU, else 0 (also for NULL). */
int dmm_hw_iommu_present(const struct dmm_hw *hw);

/*
 * dmm_hw_iommu_attach() - put engine @dev behind the IOMMU in domain
 * @domain_id (nonzero) with top-level table @root (physical, page-aligned
 * RAM), or in passthrough (bus address = physical address, no walk, no
 * IOTLB) when @identity (@root is then ignored). Installs the engine's
 * translate hook; attaching again replaces the attachment. The engine keeps
 * its address truncation (addr_bits) in front of the IOMMU.
 * Devices sharing a domain id must share its root (and mode): -DMM_EINVAL
 * otherwise. IOTLB entries are tagged by domain id only: a domain id reused
 * for another table needs dmm_hw_iommu_invalidate(hw, id, 0, 0) first.
 * 0, -DMM_EINVAL (NULL, id 0, bad root), -DMM_ENOTSUP (no IOMMU).
 */
int dmm_hw_iommu_attach(struct dmm_hw_dev *dev, uint32_t domain_id, dmm_phys_t root, int identity);
/* Remove @dev from the IOMMU: its translate hook is removed (if still the
 * IOMMU's), so the engine uses its dma-ranges again. The domain's IOTLB
 * entries stay. NULL or not attached: nothing happens. */
void dmm_hw_iommu_detach(struct dmm_hw_dev *dev);

/*
 * dmm_hw_iommu_invalidate() - drop the IOTLB entries of @domain_id
 * (0 = every domain) overlapping [iova, iova + size) (size 0 = all of the
 * domain's), then busy-wait inval_latency_ns. The platform's iotlb_inval
 * hook calls this. No IOMMU (or NULL @hw): nothing happens.
 */
void dmm_hw_iommu_invalidate(struct dmm_hw *hw, uint32_t domain_id, uint64_t iova, uint64_t size);

struct dmm_hw_iommu_stats {
	uint64_t translations;     /* translation requests (check passes, see above) */
	uint64_t iotlb_hits, iotlb_misses;
	uint64_t walks;            /* table walks on a miss */
	uint64_t walk_reads;       /* table entries those walks read */
	uint64_t stale_hits;       /* hits whose entry the table no longer holds (the
				    * access still used the stale entry) */
	uint64_t last_stale_iova;  /* IOVA of the last stale hit */
	uint32_t last_stale_domain;/* and its domain */
	uint64_t faults_unmapped, faults_perm;
	uint64_t invalidations;    /* dmm_hw_iommu_invalidate() calls */
	uint64_t invalidations_domain; /* of which whole-domain ones (size 0) */
	uint64_t entries_dropped;  /* IOTLB entries those invalidations dropped */
	uint64_t iotlb_evictions;  /* entries replaced for capacity (LRU) */
	uint64_t iotlb_entries;    /* entries valid now */
};
/* All zero when @hw has no IOMMU. */
void dmm_hw_iommu_get_stats(struct dmm_hw *hw, struct dmm_hw_iommu_stats *st);

enum dmm_hw_iommu_fault_kind { DMM_HW_IOMMU_UNMAPPED = 1, DMM_HW_IOMMU_PERM = 2 };

struct dmm_hw_iommu_fault {
	uint32_t domain_id;
	uint64_t iova;             /* the (truncated) bus address of the piece that faulted */
	int write;                 /* 1 = device write to memory */
	enum dmm_hw_iommu_fault_kind kind;
	char dev[DMM_HW_DEV_NAME_MAX];
};
/* Copy up to @max most recent faults (the log keeps DMM_HW_IOMMU_FAULTS),
 * oldest first; returns how many. *@total (if not NULL) gets the number of
 * faults since the IOMMU was enabled. 0 without an IOMMU. */
unsigned dmm_hw_iommu_faults(struct dmm_hw *hw, struct dmm_hw_iommu_fault *f, unsigned max,
			     uint64_t *total);

#endif

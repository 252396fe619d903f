/* SPDX-License-Identifier: MIT */
/*
 * IOMMU: a page-table walker and an IOTLB in front of device engines.
 *
 *   engine piece ──► IOTLB lookup ──hit──► permission ──► physical address
 *   (bus address)    (domain, base)           ▲    │
 *                        │ miss               │    └─► fault (PERM)
 *                        ▼                    │
 *                    walk RAM: L0 ─► L1 ─► L2 ─► L3
 *                    (atomic loads, never the CPU cache)
 *                        │ no valid leaf ─► fault (UNMAPPED)
 *                        └─► fill the IOTLB (LRU victim when full)
 *
 * The table format is the one include/dmamem/iommu.h specifies; this walker
 * is written from that text alone (the library's own walker is not used, so
 * the two check each other). Entries are read from RAM with 64-bit atomic
 * loads: the library stores them with atomic stores and compare-and-swap to
 * host memory, and an IOMMU does not snoop a non-coherent CPU cache.
 *
 * Walk rules: an IOVA at or above 2^48 has no translation. At levels 0..2 a
 * VALID entry without LEAF points to the next table; LEAF at level 1 is a
 * 1 GiB block, at level 2 a 2 MiB block, at level 3 a 4 KiB page. LEAF at
 * level 0 and a level-3 entry without LEAF are malformed and fault as
 * unmapped, as does a table pointer outside RAM (logged). Address bits
 * below the block size in a block entry are ignored. Bits 4 and 5 are
 * software's.
 *
 * IOTLB: fully associative, iotlb_entries slots, least recently used
 * victim. An entry holds domain id, page or block base, physical base,
 * size (4 KiB, 2 MiB or 1 GiB, as the leaf was) and the leaf's READ/WRITE.
 * A valid leaf is cached even when the access that found it lacks the
 * permission (the access faults; the next one of the other direction
 * hits). Lookup takes the first entry covering the address: after a table
 * change without invalidation a page entry and a block entry may overlap.
 *
 * Staleness: on every hit the table is walked again (not counted as a
 * walk). If it no longer maps the address to the same physical address
 * with at least the entry's permissions, the hit is stale: counted, and
 * the access still goes where the entry says. That is exactly what an
 * unmap without (or before) IOTLB invalidation allows a device to do.
 *
 * Locking: one mutex (io->lock) protects the IOTLB, the counters, the fault
 * log and the devices' attachment fields. It is taken after hw->lock when
 * both are held (attach, detach) and never the other way round; translation
 * and invalidation take it alone.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dmamem/error.h>
#include <dmamem/iommu.h>

#include "hw_internal.h"

#define IO_PTE_PERM (DMM_IOPTE_READ | DMM_IOPTE_WRITE)
#define IO_TABLE_ENTRIES 512u
#define IO_VA_LIMIT ((uint64_t)1 << DMM_IOPT_VA_BITS)

struct hw_iotlb_ent {
	uint64_t iova;       /* page or block base */
	dmm_phys_t pa;       /* its physical base */
	uint64_t stamp;      /* last use (LRU) */
	uint32_t domain;     /* 0 = free slot */
	uint8_t shift;       /* 12, 21 or 30 */
	uint8_t prot;        /* DMM_IOPTE_READ | DMM_IOPTE_WRITE */
};

struct hw_iommu {
	pthread_mutex_t lock;
	struct dmm_hw *hw;
	struct dmm_hw_iommu_opts o;
	struct hw_iotlb_ent *tlb;       /* o.iotlb_entries slots */
	unsigned used;
	uint64_t clock;                 /* LRU stamps */
	struct dmm_hw_iommu_stats st;
	struct dmm_hw_iommu_fault faults[DMM_HW_IOMMU_FAULTS];
	uint64_t fault_total;
};

/* Result of a walk. */
struct io_walk {
	dmm_phys_t pa;       /* physical base of the leaf */
	unsigned shift;      /* its size */
	unsigned prot;
	unsigned reads;      /* entries read */
};

static struct hw_iommu *iommu_of(const struct dmm_hw *hw)
{
	return hw ? __atomic_load_n(&hw->iommu, __ATOMIC_ACQUIRE) : NULL;
}

/* ------------------------------------------------------------------------ */
/* The walker                                                                */

/*
 * Walk the table at @root for @iova. 0 and *@w, or -DMM_ENOENT (no valid
 * leaf); w->reads counts entries read either way. *@bad_table is set to the
 * offending address when a table pointer is not RAM.
 */
static int io_walk(const struct dmm_hw *hw, dmm_phys_t root, uint64_t iova, struct io_walk *w,
		   dmm_phys_t *bad_table)
{
	dmm_phys_t table = root;

	w->reads = 0;
	if (iova >= IO_VA_LIMIT)
		return -DMM_ENOENT;
	for (unsigned level = 0; level < DMM_IOPT_LEVELS; level++) {
		unsigned shift = 39u - 9u * level;
		uint64_t idx = (iova >> shift) & (IO_TABLE_ENTRIES - 1);
		const uint64_t *slot;
		uint64_t pte;

		if (!hw_is_ram(hw, table, DMM_PAGE_SIZE)) {
			*bad_table = table;
			return -DMM_ENOENT;
		}
		slot = (const uint64_t *)(const void *)hw_ram_ptr(hw, table + idx * sizeof(uint64_t));
		pte = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
		w->reads++;
		if (!(pte & DMM_IOPTE_VALID))
			return -DMM_ENOENT;
		if (pte & DMM_IOPTE_LEAF) {
			if (level == 0)
				return -DMM_ENOENT; /* no 512 GiB blocks */
			w->shift = shift;
			w->pa = (pte & DMM_IOPTE_ADDR) & ~(((dmm_phys_t)1 << shift) - 1);
			w->prot = (unsigned)(pte & IO_PTE_PERM);
			return 0;
		}
		if (level == DMM_IOPT_LEVELS - 1)
			return -DMM_ENOENT; /* a level-3 entry must be a leaf */
		table = pte & DMM_IOPTE_ADDR;
	}
	return -DMM_ENOENT;
}

/* ------------------------------------------------------------------------ */
/* The IOTLB                                                                 */

static inline uint64_t ent_size(const struct hw_iotlb_ent *e)
{
	return (uint64_t)1 << e->shift;
}

static struct hw_iotlb_ent *tlb_lookup(struct hw_iommu *io, uint32_t domain, uint64_t iova)
{
	for (unsigned i = 0; i < io->o.iotlb_entries; i++) {
		struct hw_iotlb_ent *e = &io->tlb[i];

		if (e->domain == domain && (iova >> e->shift) == (e->iova >> e->shift))
			return e;
	}
	return NULL;
}

static void tlb_fill(struct hw_iommu *io, uint32_t domain, uint64_t iova, const struct io_walk *w)
{
	struct hw_iotlb_ent *victim = NULL;

	for (unsigned i = 0; i < io->o.iotlb_entries; i++) {
		struct hw_iotlb_ent *e = &io->tlb[i];

		if (!e->domain) {
			victim = e;
			break;
		}
		if (!victim || e->stamp < victim->stamp)
			victim = e;
	}
	if (victim->domain)
		io->st.iotlb_evictions++;
	else
		io->used++;
	victim->domain = domain;
	victim->shift = (uint8_t)w->shift;
	victim->iova = iova & ~(((uint64_t)1 << w->shift) - 1);
	victim->pa = w->pa;
	victim->prot = (uint8_t)w->prot;
	victim->stamp = ++io->clock;
}

/* Does the table still map @iova as entry @e does (same physical address,
 * at least the same permissions)? */
static bool entry_current(const struct dmm_hw *hw, dmm_phys_t root, const struct hw_iotlb_ent *e,
			  uint64_t iova)
{
	struct io_walk w;
	dmm_phys_t bad = 0;

	if (io_walk(hw, root, iova, &w, &bad))
		return false;
	return w.pa + (iova & (((uint64_t)1 << w.shift) - 1)) == e->pa + (iova & (ent_size(e) - 1)) &&
	       (w.prot & e->prot) == e->prot;
}

static void record_fault_locked(struct hw_iommu *io, const struct dmm_hw_dev *dev, uint32_t domain,
				uint64_t iova, int write, enum dmm_hw_iommu_fault_kind kind)
{
	struct dmm_hw_iommu_fault *f = &io->faults[io->fault_total % DMM_HW_IOMMU_FAULTS];

	memset(f, 0, sizeof(*f));
	f->domain_id = domain;
	f->iova = iova;
	f->write = write;
	f->kind = kind;
	memcpy(f->dev, dev->name, sizeof(f->dev));
	io->fault_total++;
	if (kind == DMM_HW_IOMMU_PERM)
		io->st.faults_perm++;
	else
		io->st.faults_unmapped++;
}

/* ------------------------------------------------------------------------ */
/* Translation                                                               */

/**
 * hw_iommu_translate() - bus address of an attached engine -> physical
 * address and the run of bytes contiguous from there (to the end of the
 * page or block). -DMM_EFAULT (no valid leaf, or not attached any more) or
 * -DMM_EPERM (the leaf lacks the access's permission). What is counted
 * depends on @pass (see hw.h). Context: any thread, no model lock held.
 */
int hw_iommu_translate(struct dmm_hw_dev *dev, dmm_dma_addr_t bus, int write,
		       enum hw_xlate_pass pass, dmm_phys_t *pa, uint64_t *run)
{
	struct hw_iommu *io = iommu_of(dev->hw);
	const bool check = pass == HW_XLATE_CHECK, probe = pass == HW_XLATE_PROBE;
	const unsigned need = write ? (unsigned)DMM_IOPTE_WRITE : (unsigned)DMM_IOPTE_READ;
	struct hw_iotlb_ent *e;
	enum dmm_hw_iommu_fault_kind kind = DMM_HW_IOMMU_UNMAPPED;
	dmm_phys_t base, bad_table = 0;
	unsigned shift, prot;
	uint32_t domain;
	uint64_t off;

	if (!io)
		return -DMM_EFAULT;
	pthread_mutex_lock(&io->lock);
	domain = dev->io_domain;
	if (!domain) {
		/* detached under our feet: no translation (not an IOMMU fault) */
		pthread_mutex_unlock(&io->lock);
		return -DMM_EFAULT;
	}
	if (check)
		io->st.translations++;
	if (dev->io_identity) {
		pthread_mutex_unlock(&io->lock);
		*pa = bus;
		*run = UINT64_MAX - bus;
		if (!*run)
			*run = 1;
		return 0;
	}

	e = tlb_lookup(io, domain, bus);
	if (e) {
		if (!probe)
			e->stamp = ++io->clock;
		if (check) {
			io->st.iotlb_hits++;
			if (!entry_current(dev->hw, dev->io_root, e, bus)) {
				io->st.stale_hits++;
				io->st.last_stale_iova = bus;
				io->st.last_stale_domain = domain;
			}
		}
		base = e->pa;
		shift = e->shift;
		prot = e->prot;
	} else {
		struct io_walk w;
		int err = io_walk(dev->hw, dev->io_root, bus, &w, &bad_table);

		if (check) {
			io->st.iotlb_misses++;
			io->st.walks++;
			io->st.walk_reads += w.reads;
		}
		if (err) {
			kind = DMM_HW_IOMMU_UNMAPPED;
			goto fault;
		}
		if (!probe)
			tlb_fill(io, domain, bus, &w);
		base = w.pa;
		shift = w.shift;
		prot = w.prot;
	}
	if (!(prot & need)) {
		kind = DMM_HW_IOMMU_PERM;
		goto fault;
	}
	pthread_mutex_unlock(&io->lock);
	off = bus & (((uint64_t)1 << shift) - 1);
	*pa = base + off;
	*run = ((uint64_t)1 << shift) - off;
	return 0;

fault:
	if (!probe)
		record_fault_locked(io, dev, domain, bus, write, kind);
	pthread_mutex_unlock(&io->lock);
	if (bad_table)
		hw_log(dev->hw, DMM_LOG_WARN,
		       "hw: iommu: domain %u: IOVA %#llx: table pointer %#llx is not RAM", domain,
		       (unsigned long long)bus, (unsigned long long)bad_table);
	if (!probe)
		hw_log(dev->hw, DMM_LOG_DEBUG, "hw: iommu: %s: domain %u: %s %s fault at IOVA %#llx",
		       dev->name, domain, kind == DMM_HW_IOMMU_PERM ? "permission" : "translation",
		       write ? "write" : "read", (unsigned long long)bus);
	return kind == DMM_HW_IOMMU_PERM ? -DMM_EPERM : -DMM_EFAULT;
}

/* The hook installed by attach. The engine calls hw_iommu_translate() itself
 * (with the pass); anyone calling the hook directly gets a counted check. */
int hw_iommu_xlate(void *ctx, struct dmm_hw_dev *dev, dmm_dma_addr_t bus, int write,
		   dmm_phys_t *pa, uint64_t *run)
{
	(void)ctx;
	if (!dev || !pa || !run)
		return -DMM_EINVAL;
	return hw_iommu_translate(dev, bus, write, HW_XLATE_CHECK, pa, run);
}

/* ------------------------------------------------------------------------ */
/* Enabling, attaching                                                       */

void dmm_hw_iommu_opts_default(struct dmm_hw_iommu_opts *o)
{
	if (!o)
		return;
	memset(o, 0, sizeof(*o));
	o->iotlb_entries = 64;
}

/**
 * dmm_hw_iommu_enable() - see hw.h. Context: process context, before the
 * IOMMU is used.
 */
int dmm_hw_iommu_enable(struct dmm_hw *hw, const struct dmm_hw_iommu_opts *o)
{
	struct dmm_hw_iommu_opts def;
	struct hw_iommu *io;

	if (!o) {
		dmm_hw_iommu_opts_default(&def);
		o = &def;
	}
	if (!hw || o->iotlb_entries > DMM_HW_IOTLB_MAX)
		return -DMM_EINVAL;
	if (iommu_of(hw))
		return -DMM_EEXIST;
	io = calloc(1, sizeof(*io));
	if (!io)
		return -DMM_ENOMEM;
	io->hw = hw;
	io->o = *o;
	if (!io->o.iotlb_entries)
		io->o.iotlb_entries = 64;
	io->tlb = calloc(io->o.iotlb_entries, sizeof(*io->tlb));
	if (!io->tlb) {
		free(io);
		return -DMM_ENOMEM;
	}
	if (pthread_mutex_init(&io->lock, NULL) != 0) {
		free(io->tlb);
		free(io);
		return -DMM_ENOMEM;
	}

	hw_lock(hw);
	if (hw->iommu) {
		hw_unlock(hw);
		pthread_mutex_destroy(&io->lock);
		free(io->tlb);
		free(io);
		return -DMM_EEXIST;
	}
	__atomic_store_n(&hw->iommu, io, __ATOMIC_RELEASE);
	hw_unlock(hw);
	return 0;
}

int dmm_hw_iommu_present(const struct dmm_hw *hw)
{
	return iommu_of(hw) ? 1 : 0;
}

void hw_iommu_fini(struct dmm_hw *hw)
{
	struct hw_iommu *io = hw->iommu;

	if (!io)
		return;
	hw->iommu = NULL;
	pthread_mutex_destroy(&io->lock);
	free(io->tlb);
	free(io);
}

/**
 * dmm_hw_iommu_attach() - see hw.h. The device must be idle.
 */
int dmm_hw_iommu_attach(struct dmm_hw_dev *dev, uint32_t domain_id, dmm_phys_t root, int identity)
{
	struct dmm_hw *hw;
	struct hw_iommu *io;

	if (!dev || !domain_id)
		return -DMM_EINVAL;
	hw = dev->hw;
	io = iommu_of(hw);
	if (!io)
		return -DMM_ENOTSUP;
	if (identity)
		root = 0;
	else if ((root & (DMM_PAGE_SIZE - 1)) || (root & ~DMM_IOPTE_ADDR) ||
		 !hw_is_ram(hw, root, DMM_PAGE_SIZE))
		return -DMM_EINVAL;

	hw_lock(hw);
	pthread_mutex_lock(&io->lock);
	for (const struct dmm_hw_dev *o = hw->devs; o; o = o->next) {
		if (o == dev || o->io_domain != domain_id || o->xlate != hw_iommu_xlate)
			continue; /* (a device whose hook was replaced is not behind us) */
		if (o->io_identity != (identity != 0) || o->io_root != root) {
			pthread_mutex_unlock(&io->lock);
			hw_unlock(hw);
			hw_log(hw, DMM_LOG_WARN,
			       "hw: iommu: %s: domain %u is already used by %s with another table",
			       dev->name, domain_id, o->name);
			return -DMM_EINVAL;
		}
	}
	dev->io_domain = domain_id;
	dev->io_identity = identity != 0;
	dev->io_root = root;
	dev->xlate = hw_iommu_xlate;
	dev->xlate_ctx = io;
	pthread_mutex_unlock(&io->lock);
	hw_unlock(hw);
	return 0;
}

void dmm_hw_iommu_detach(struct dmm_hw_dev *dev)
{
	struct dmm_hw *hw;
	struct hw_iommu *io;

	if (!dev)
		return;
	hw = dev->hw;
	io = iommu_of(hw);
	if (!io)
		return;
	hw_lock(hw);
	pthread_mutex_lock(&io->lock);
	if (dev->xlate == hw_iommu_xlate) {
		dev->xlate = NULL;
		dev->xlate_ctx = NULL;
	}
	dev->io_domain = 0;
	dev->io_identity = false;
	dev->io_root = 0;
	pthread_mutex_unlock(&io->lock);
	hw_unlock(hw);
}

/* ------------------------------------------------------------------------ */
/* Invalidation                                                              */

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/**
 * dmm_hw_iommu_invalidate() - see hw.h. The entries are gone when the lock
 * is released; the latency is spent afterwards, without the lock (other
 * devices keep translating), before the call returns.
 * Context: any (the platform hook is called in atomic context).
 */
void dmm_hw_iommu_invalidate(struct dmm_hw *hw, uint32_t domain_id, uint64_t iova, uint64_t size)
{
	struct hw_iommu *io = iommu_of(hw);
	uint64_t last, dropped = 0;

	if (!io)
		return;
	if (!size || size - 1 > UINT64_MAX - iova)
		last = UINT64_MAX;
	else
		last = iova + (size - 1);

	pthread_mutex_lock(&io->lock);
	for (unsigned i = 0; i < io->o.iotlb_entries; i++) {
		struct hw_iotlb_ent *e = &io->tlb[i];

		if (!e->domain || (domain_id && e->domain != domain_id))
			continue;
		if (size && (e->iova > last || e->iova + (ent_size(e) - 1) < iova))
			continue;
		memset(e, 0, sizeof(*e));
		dropped++;
	}
	io->used -= (unsigned)dropped;
	io->st.invalidations++;
	if (!size)
		io->st.invalidations_domain++;
	io->st.entries_dropped += dropped;
	pthread_mutex_unlock(&io->lock);

	if (io->o.inval_latency_ns) {
		uint64_t t0 = mono_ns();

		while (mono_ns() - t0 < io->o.inval_latency_ns)
			;
	}
}

/* ------------------------------------------------------------------------ */
/* Statistics, fault log, checking                                           */

void dmm_hw_iommu_get_stats(struct dmm_hw *hw, struct dmm_hw_iommu_stats *st)
{
	struct hw_iommu *io = iommu_of(hw);

	if (!st)
		return;
	memset(st, 0, sizeof(*st));
	if (!io)
		return;
	pthread_mutex_lock(&io->lock);
	*st = io->st;
	st->iotlb_entries = io->used;
	pthread_mutex_unlock(&io->lock);
}

unsigned dmm_hw_iommu_faults(struct dmm_hw *hw, struct dmm_hw_iommu_fault *f, unsigned max,
			     uint64_t *total)
{
	struct hw_iommu *io = iommu_of(hw);
	uint64_t have, start;
	unsigned n;

	if (total)
		*total = 0;
	if (!io)
		return 0;
	pthread_mutex_lock(&io->lock);
	have = io->fault_total < DMM_HW_IOMMU_FAULTS ? io->fault_total : DMM_HW_IOMMU_FAULTS;
	n = f ? (unsigned)(have < max ? have : max) : 0;
	start = io->fault_total - n;
	for (unsigned i = 0; i < n; i++)
		f[i] = io->faults[(start + i) % DMM_HW_IOMMU_FAULTS];
	if (total)
		*total = io->fault_total;
	pthread_mutex_unlock(&io->lock);
	return n;
}

/* Every entry well formed (size, alignment, permission bits, stamp), the
 * count right, no two entries with the same tag. 0 or -DMM_EFAULT. */
int hw_iommu_check(struct dmm_hw *hw)
{
	struct hw_iommu *io = iommu_of(hw);
	unsigned used = 0;
	int err = 0;

	if (!io)
		return 0;
	pthread_mutex_lock(&io->lock);
	for (unsigned i = 0; i < io->o.iotlb_entries && !err; i++) {
		const struct hw_iotlb_ent *e = &io->tlb[i];

		if (!e->domain)
			continue;
		used++;
		if ((e->shift != 12 && e->shift != 21 && e->shift != 30) ||
		    (e->iova & (ent_size(e) - 1)) || e->iova >= IO_VA_LIMIT ||
		    (e->pa & (ent_size(e) - 1)) || (e->pa & ~DMM_IOPTE_ADDR) ||
		    (e->prot & ~IO_PTE_PERM) || e->stamp > io->clock) {
			hw_log(hw, DMM_LOG_ERR, "hw: iommu: IOTLB entry %u (domain %u, IOVA %#llx) is malformed",
			       i, e->domain, (unsigned long long)e->iova);
			err = -DMM_EFAULT;
			break;
		}
		for (unsigned j = i + 1; j < io->o.iotlb_entries; j++) {
			const struct hw_iotlb_ent *x = &io->tlb[j];

			if (x->domain == e->domain && x->iova == e->iova && x->shift == e->shift) {
				hw_log(hw, DMM_LOG_ERR, "hw: iommu: IOTLB entries %u and %u have the same tag",
				       i, j);
				err = -DMM_EFAULT;
				break;
			}
		}
	}
	if (!err && used != io->used) {
		hw_log(hw, DMM_LOG_ERR, "hw: iommu: %u IOTLB entries valid, %u counted", used, io->used);
		err = -DMM_EFAULT;
	}
	pthread_mutex_unlock(&io->lock);
	return err;
}

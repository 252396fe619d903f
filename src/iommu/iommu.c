/* SPDX-License-Identifier: MIT */
/*
 * IOMMU-backed DMA: a translating domain per device (DMM_IOMMU_DMA).
 *
 * A mapping takes an IOVA range below the device's mask from the domain's
 * allocator and maps the pages in the domain's IO page table with the
 * permission its direction needs (TO_DEVICE: read, FROM_DEVICE: write,
 * BIDIRECTIONAL: both). The first page of every mapping carries the FIRST
 * mark and the last the LAST mark, so an unmap of an address that is not
 * the start of a mapping, or with a size that does not end where the
 * mapping ends, is refused before anything changes.
 *
 * Buffers that must bounce (untrusted devices and buffers not covering
 * whole pages, restricted pools, forced bouncing, packed small objects on a
 * non-coherent device) bounce into whole pages of their own (the swiotlb
 * granule mode) that keep the buffer's offset within its page: the device
 * sees its bytes and zeros, never a neighbour's, and scatterlists keep one
 * IOVA layout computable from the CPU addresses alone.
 *
 * Unmapping: the mapping is claimed first (its IOVA range allocated with
 * that size, the marks in place, FIRST taken off atomically: a wrong or
 * concurrent second unmap is refused), then the leaves are cleared. Strict
 * mode invalidates the IOTLB for the range, gives the buffer back to the
 * CPU and frees the IOVA. Deferred mode gives the buffer back at once (a
 * bounce slot is released, as the pages themselves are) and puts the IOVA
 * in the CPU's flush queue; when the queue fills, its oldest entry is
 * older than fq_timeout_ns (the domain's timer through defer_after, and a
 * check every 64th map), or dmm_device_iommu_flush() is called, one
 * domain-wide invalidation is sent and only then are the IOVAs freed. Until
 * then the device may still reach the unmapped pages through stale IOTLB
 * entries: the price of batching, measured in docs/IOMMU.md. Untrusted
 * devices are always strict. The same timer trims idle IOVA caches every
 * idle_trim_ns while they hold anything.
 *
 * Coherent allocations take pages from anywhere (physically contiguous
 * first; page by page, joined by the platform's vmap, when memory is too
 * fragmented) and map them contiguously in IOVA space below the coherent
 * mask.
 */
#include <dmamem/iommu.h>
#include <dmamem/slab.h>

#include "dma/dma_internal.h"

#define PG DMM_PAGE_SIZE
#define FQ_DEFAULT 256
/* Flush queues per domain: one per CPU up to this many, then CPUs share
 * them (each has its own lock); a queue holds fq_size entries twice. */
#define MAX_FQ 16
#define FQ_TIMEOUT_DEFAULT (10ull * 1000 * 1000)

struct fq_ent {
	dmm_dma_addr_t iova;
	uint64_t span;
};

/* A flush queue per CPU slot, so that deferred unmaps on two CPUs do not
 * share a lock. */
struct fq_cpu {
	struct dmm_lock lock;          /* the queue */
	struct dmm_lock flush_lock;    /* one flusher at a time (owns spare) */
	uint32_t n;
	uint64_t first_ns;             /* when the oldest entry was queued (atomic) */
	struct fq_ent *q, *spare;      /* queue, and the batch being flushed */
};

struct dmm_iommu_dom {
	struct dmm_device *dev;
	struct dmm_mem *mem;
	struct dmm_iommu_opts o;
	int strict;
	uint32_t id;
	struct dmm_iova_domain *iova;
	struct dmm_iopt *pt;
	dmm_dma_addr_t limit;          /* highest IOVA */
	unsigned nr_fq;
	struct fq_cpu *fq;
	int timer;                     /* a timer is queued or running (atomic; cleared
				          as the timer's last access to the domain) */
	int dying;                     /* atomic */
	uint64_t last_trim_ns;
	dmm_pfn_t self_pfn;            /* the pages holding this record (dmm__meta_alloc) */
	uint64_t self_pages;
	struct {
		uint64_t invalidations, fq_flushes, fq_timeouts;
		uint64_t bounced, fail_iova, fail_pgtable, fail_unmap;
	} st;                          /* atomic (not on the fast path) */
	/* fast-path counters, one block per CPU (plat.nr_cpus): no line
	 * shared between CPUs */
	struct dom_pcpu {
		_Alignas(64) uint64_t maps;
		uint64_t unmaps;
		int64_t mapped_pages;
		uint64_t fq_queued;
		uint64_t calls;        /* housekeeping clock */
	} pcpu[];
};

static inline struct dom_pcpu *dpcpu(struct dmm_iommu_dom *d)
{
	const struct dmm_platform *p = &d->mem->plat;
	unsigned cpu = p->cpu_id ? p->cpu_id(p->ctx) % p->nr_cpus : 0;
	return &d->pcpu[cpu];
}

/* per-CPU counter updates: relaxed atomics on the CPU's own line */
#define PC_ADD(d, f, v) __atomic_fetch_add(&dpcpu(d)->f, (v), __ATOMIC_RELAXED)

static uint32_t next_domain_id = 1;

static inline void sadd(uint64_t *c, int64_t v)
{
	__atomic_fetch_add(c, (uint64_t)v, __ATOMIC_RELAXED);
}

void dmm_iommu_opts_default(struct dmm_iommu_opts *o)
{
	if (!o)
		return;
	*o = (struct dmm_iommu_opts){ 0 };
	o->flush = DMM_IOMMU_STRICT;
	dmm_iova_opts_default(&o->iova);
	o->fq_size = FQ_DEFAULT;
	o->fq_timeout_ns = FQ_TIMEOUT_DEFAULT;
}

static unsigned prot_of(enum dmm_dma_dir dir)
{
	return dir == DMM_DMA_TO_DEVICE ? DMM_IOMMU_READ
	       : dir == DMM_DMA_FROM_DEVICE ? DMM_IOMMU_WRITE
					    : DMM_IOMMU_READ | DMM_IOMMU_WRITE;
}

static void count_iova_fail(struct dmm_iommu_dom *d)
{
	sadd(&d->st.fail_iova, 1);
	dmm__dstat(&d->dev->st.fail_iova, 1);
}

void dmm__iommu_count_iova_full(struct dmm_device *dev)
{
	count_iova_fail(dev->iommu);
}

/* An IOVA range for @size below @limit; a failure counted, as -DMM_ENOSPC
 * (no room below the mask) or -DMM_ENOMEM. @w: a deferred request's map,
 * which waits for room: -DMM_ENOSPC noted there, not counted. */
static int iova_get(struct dmm_iommu_dom *d, uint64_t size, dmm_dma_addr_t limit, dmm_dma_addr_t *iova,
		    struct dmm__map_wait *w)
{
	int err = dmm_iova_alloc(d->iova, size, limit, iova);

	if (err) {
		err = err == -DMM_ENOMEM ? -DMM_ENOMEM : -DMM_ENOSPC;
		if (w && err == -DMM_ENOSPC)
			w->iova_full = true;
		else
			count_iova_fail(d);
	}
	return err;
}

static void iotlb_inval(struct dmm_iommu_dom *d, dmm_dma_addr_t iova, uint64_t size)
{
	const struct dmm_platform *p = &d->mem->plat;
	if (p->iotlb_inval)
		p->iotlb_inval(p->ctx, d->id, iova, size);
	sadd(&d->st.invalidations, 1);
}

/* ---- flush queue --------------------------------------------------------------- */

static struct fq_cpu *this_fq(struct dmm_iommu_dom *d)
{
	const struct dmm_platform *p = &d->mem->plat;
	unsigned cpu = p->cpu_id ? p->cpu_id(p->ctx) : 0;
	return &d->fq[cpu % d->nr_fq];
}

/*
 * Take a whole queue (swapping in the spare array), send one domain-wide
 * invalidation, then free the IOVAs: each was unmapped before it was queued,
 * so after this invalidation no IOTLB entry can still reach it.
 */
static void fq_flush_one(struct dmm_iommu_dom *d, struct fq_cpu *f, int timeout)
{
	struct fq_ent *batch;
	uint32_t n;

	dmm__lock(d->mem, &f->flush_lock);
	dmm__lock(d->mem, &f->lock);
	n = f->n;
	batch = f->q;
	f->q = f->spare;
	f->spare = batch;
	f->n = 0;
	__atomic_store_n(&f->first_ns, 0, __ATOMIC_RELAXED);
	dmm__unlock(d->mem, &f->lock);
	if (n) {
		iotlb_inval(d, 0, 0);
		for (uint32_t i = 0; i < n; i++)
			dmm_iova_free(d->iova, batch[i].iova, batch[i].span);
		sadd(&d->st.fq_flushes, 1);
		if (timeout)
			sadd(&d->st.fq_timeouts, 1);
	}
	dmm__unlock(d->mem, &f->flush_lock);
}

static void fq_flush(struct dmm_iommu_dom *d, int timeout)
{
	for (unsigned i = 0; i < d->nr_fq; i++)
		fq_flush_one(d, &d->fq[i], timeout);
}

/* Flush the queues whose oldest entry has waited @timeout_ns; returns the
 * time until the next one is due (0: nothing queued). */
static uint64_t fq_flush_expired(struct dmm_iommu_dom *d, uint64_t now)
{
	uint64_t next = 0;

	for (unsigned i = 0; i < d->nr_fq; i++) {
		uint64_t first = __atomic_load_n(&d->fq[i].first_ns, __ATOMIC_RELAXED);
		if (!first)
			continue;
		if (now - first >= d->o.fq_timeout_ns) {
			fq_flush_one(d, &d->fq[i], 1);
		} else {
			uint64_t left = d->o.fq_timeout_ns - (now - first);
			next = next && next < left ? next : left;
		}
	}
	return next;
}

static void timer_fn(void *arg);

/*
 * The domain's timer (the platform's defer_after): flushes queues that
 * waited fq_timeout_ns and trims idle IOVA caches every idle_trim_ns,
 * re-arming itself while there is something to wait for. Armed only when
 * the platform can also wait for it (defer_flush), so that detaching can.
 */
static void arm_timer(struct dmm_iommu_dom *d, uint64_t delay)
{
	const struct dmm_platform *p = &d->mem->plat;

	if (!p->defer_after || !p->defer_flush || __atomic_load_n(&d->timer, __ATOMIC_RELAXED) ||
	    __atomic_exchange_n(&d->timer, 1, __ATOMIC_ACQ_REL))
		return;
	if (p->defer_after(p->ctx, timer_fn, d, delay))
		__atomic_store_n(&d->timer, 0, __ATOMIC_RELEASE);
}

static void timer_fn(void *arg)
{
	struct dmm_iommu_dom *d = arg;
	const struct dmm_platform *p = &d->mem->plat;

	if (!__atomic_load_n(&d->dying, __ATOMIC_ACQUIRE)) {
		uint64_t now = dmm__now(d->mem), next = fq_flush_expired(d, now), trim_due;
		uint64_t since = now - __atomic_load_n(&d->last_trim_ns, __ATOMIC_RELAXED);
		if (since >= d->o.iova.idle_trim_ns) {
			__atomic_store_n(&d->last_trim_ns, now, __ATOMIC_RELAXED);
			dmm_iova_trim(d->iova, 0);
			since = 0;
		}
		/* idle caches are trimmed after two quiet periods: keep
		 * waking while they hold anything */
		trim_due = dmm__iova_cached_pages(d->iova) ? d->o.iova.idle_trim_ns - since : 0;
		if (trim_due && (!next || trim_due < next))
			next = trim_due;
		if (next && !__atomic_load_n(&d->dying, __ATOMIC_ACQUIRE) &&
		    p->defer_after(p->ctx, timer_fn, d, next) == 0)
			return; /* still armed */
	}
	__atomic_store_n(&d->timer, 0, __ATOMIC_RELEASE); /* the last access to d */
}

/* Queue an unmapped IOVA range on this CPU's queue; flush it when full. */
static void fq_push(struct dmm_iommu_dom *d, dmm_dma_addr_t iova, uint64_t span)
{
	struct fq_cpu *f = this_fq(d);
	int full, arm;

	dmm__lock(d->mem, &f->lock);
	while (f->n >= d->o.fq_size) {
		dmm__unlock(d->mem, &f->lock);
		fq_flush_one(d, f, 0);
		dmm__lock(d->mem, &f->lock);
	}
	arm = f->n == 0;
	if (arm)
		__atomic_store_n(&f->first_ns, dmm__now(d->mem), __ATOMIC_RELAXED);
	f->q[f->n++] = (struct fq_ent){ iova, span };
	full = f->n >= d->o.fq_size;
	dmm__unlock(d->mem, &f->lock);
	PC_ADD(d, fq_queued, 1);
	if (full)
		fq_flush_one(d, f, 0);
	else if (arm)
		arm_timer(d, d->o.fq_timeout_ns);
}

/* Flush an expired queue and trim idle caches: every 64th map on a CPU
 * reads the clock (the platform's timer, when there is one, does it too). */
static void housekeeping(struct dmm_iommu_dom *d)
{
	uint64_t first, now;

	if (__atomic_fetch_add(&dpcpu(d)->calls, 1, __ATOMIC_RELAXED) & 63)
		return;
	first = d->strict ? 0 : __atomic_load_n(&this_fq(d)->first_ns, __ATOMIC_RELAXED);
	now = dmm__now(d->mem);
	if (first && now - first >= d->o.fq_timeout_ns)
		fq_flush_one(d, this_fq(d), 1);
	if (now - __atomic_load_n(&d->last_trim_ns, __ATOMIC_RELAXED) >= d->o.iova.idle_trim_ns) {
		__atomic_store_n(&d->last_trim_ns, now, __ATOMIC_RELAXED);
		dmm_iova_trim(d->iova, 0);
	}
}

/* ---- domains -------------------------------------------------------------------- */

static int opts_ok(const struct dmm_iommu_opts *o)
{
	return (o->flush == DMM_IOMMU_STRICT || o->flush == DMM_IOMMU_DEFERRED) && o->fq_size <= 65536;
}

/* Give the domain's record back (dmm__iommu_attach). */
static void dom_free(struct dmm_iommu_dom *d)
{
	dmm__lib_free_range(d->mem, d->self_pfn, d->self_pages);
}

static void fq_free(struct dmm_iommu_dom *d)
{
	struct dmm_mem *mem = d->mem;

	for (unsigned i = 0; i < d->nr_fq; i++) {
		if (d->fq[i].q)
			dmm__lib_kfree(mem, d->fq[i].q);
		if (d->fq[i].spare)
			dmm__lib_kfree(mem, d->fq[i].spare);
		if (mem->plat.lock_destroy) {
			mem->plat.lock_destroy(mem->plat.ctx, &d->fq[i].lock);
			mem->plat.lock_destroy(mem->plat.ctx, &d->fq[i].flush_lock);
		}
	}
	dmm__lib_kfree(mem, d->fq);
}

int dmm__iommu_attach(struct dmm_device *dev)
{
	struct dmm_mem *mem = dev->mem;
	struct dmm_iommu_dom *d;
	dmm_dma_addr_t lo, hi;
	uint64_t pages;
	dmm_pfn_t pfn;
	void *p;
	int err;

	dev->iommu_id = __atomic_fetch_add(&next_domain_id, 1, __ATOMIC_RELAXED);
	if (dev->desc.iommu != DMM_IOMMU_DMA)
		return 0;
	/* the record, with a counter block for every CPU: the library's own
	 * memory, as the device's record (pages no pin can hold, however many
	 * CPUs make it larger than a small object) */
	pages = dmm_align_up(sizeof(*d) + (uint64_t)mem->plat.nr_cpus * sizeof(d->pcpu[0]), PG) >> DMM_PAGE_SHIFT;
	err = dmm__meta_alloc(mem, pages, 0, &pfn, &p);
	if (err)
		return err;
	d = p;
	d->self_pfn = pfn;
	d->self_pages = pages;
	d->dev = dev;
	d->mem = mem;
	if (dev->desc.iommu_opts)
		d->o = *dev->desc.iommu_opts;
	else
		dmm_iommu_opts_default(&d->o);
	if (!d->o.fq_size)
		d->o.fq_size = FQ_DEFAULT;
	if (!d->o.fq_timeout_ns)
		d->o.fq_timeout_ns = FQ_TIMEOUT_DEFAULT;
	if (!d->o.iova.idle_trim_ns)
		d->o.iova.idle_trim_ns = 1000000000ull;
	if (!opts_ok(&d->o)) {
		dom_free(d);
		return dmm__count_invalid(mem);
	}
	/* a segment boundary is kept by size-aligned IOVAs */
	if (dev->lim[0].boundary || dev->lim[1].boundary)
		d->o.iova.align = DMM_IOVA_ALIGN_POW2;
	d->strict = d->o.flush == DMM_IOMMU_STRICT || dev->desc.untrusted;
	d->id = dev->iommu_id;
	/* the IOVA space: the streaming window, within 48 bits */
	lo = dmm_align_up(dev->lim[0].lo, PG);
	hi = dev->lim[0].hi == DMM_PHYS_MAX ? DMM_PHYS_MAX : dev->lim[0].hi;
	if (hi > ((uint64_t)1 << DMM_IOPT_VA_BITS))
		hi = (uint64_t)1 << DMM_IOPT_VA_BITS;
	hi &= ~(PG - 1);
	if (hi <= lo + PG) {
		dom_free(d);
		return -DMM_ERANGE;
	}
	d->limit = hi - 1;
	d->nr_fq = mem->plat.nr_cpus ? mem->plat.nr_cpus : 1;
	if (d->nr_fq > MAX_FQ)
		d->nr_fq = MAX_FQ;
	err = dmm__lib_kmalloc(mem, sizeof(struct fq_cpu) * d->nr_fq, 0, &p);
	if (err)
		goto out_d;
	d->fq = p;
	dmm_memset(d->fq, 0, sizeof(struct fq_cpu) * d->nr_fq);
	for (unsigned i = 0; i < d->nr_fq && !err; i++) {
		err = dmm__lib_kmalloc(mem, sizeof(struct fq_ent) * d->o.fq_size, 0, &p);
		if (!err) {
			d->fq[i].q = p;
			err = dmm__lib_kmalloc(mem, sizeof(struct fq_ent) * d->o.fq_size, 0, &p);
			if (!err)
				d->fq[i].spare = p;
		}
		mem->plat.lock_init(mem->plat.ctx, &d->fq[i].lock);
		mem->plat.lock_init(mem->plat.ctx, &d->fq[i].flush_lock);
	}
	if (err)
		goto out_fq;
	err = dmm_iova_domain_create(mem, lo, d->limit, &d->o.iova, &d->iova);
	if (err)
		goto out_fq;
	err = dmm_iopt_create(mem, &d->pt);
	if (err)
		goto out_iova;
	d->last_trim_ns = dmm__now(mem);
	dev->iommu = d;
	return 0;
out_iova:
	dmm_iova_domain_destroy(d->iova);
out_fq:
	fq_free(d);
out_d:
	dom_free(d);
	return err;
}

void dmm__iommu_detach(struct dmm_device *dev)
{
	struct dmm_iommu_dom *d = dev->iommu;
	struct dmm_mem *mem;

	if (!d)
		return;
	mem = d->mem;
	__atomic_store_n(&d->dying, 1, __ATOMIC_RELEASE);
	fq_flush(d, 0);
	/* a timer queued or running: let it finish (it sees dying); it is
	 * only ever armed when defer_flush exists */
	while (__atomic_load_n(&d->timer, __ATOMIC_ACQUIRE))
		mem->plat.defer_flush(mem->plat.ctx);
	iotlb_inval(d, 0, 0);
	dmm_iopt_destroy(d->pt);
	dmm_iova_domain_destroy(d->iova);
	fq_free(d);
	dom_free(d);
	dev->iommu = (struct dmm_iommu_dom *)0;
}

int dmm__iommu_lookup(const struct dmm_device *dev, dmm_dma_addr_t dma, dmm_phys_t *pa)
{
	int err = dmm_iopt_lookup(dev->iommu->pt, dma, pa, (unsigned *)0, (uint64_t *)0, (unsigned *)0);
	return err ? -DMM_ERANGE : 0;
}

/* ---- streaming ------------------------------------------------------------------- */

static int must_bounce_iommu(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir)
{
	return dmm__must_bounce(dev, pa, size, dir, 0);
}

/* Map [pa, pa + size): IOVA, page table; bounced first if needed. */
int dmm__iommu_map(struct dmm_device *dev, dmm_phys_t pa, size_t size, enum dmm_dma_dir dir, dmm_phys_t *map_pa,
		   dmm_dma_addr_t *bus, struct dmm__map_wait *w)
{
	struct dmm_iommu_dom *d = dev->iommu;
	dmm_phys_t tlb = pa;
	uint64_t off, span;
	dmm_dma_addr_t iova;
	int bounced = 0, err;

	housekeeping(d);
	if (must_bounce_iommu(dev, pa, size, dir)) {
		if (!dmm__swiotlb_ready(dev->mem)) {
			if (dev->desc.untrusted && ((pa | size) & (PG - 1)))
				return -DMM_ENOTSUP; /* the neighbours would be exposed */
		} else {
			err = dmm__swiotlb_map(dev, pa, size, dir, PG, &tlb, w);
			if (err)
				return err;
			bounced = 1;
		}
	}
	off = tlb & (PG - 1);
	span = dmm_align_up(off + size, PG);
	if (dev->lim[0].boundary && span > dev->lim[0].boundary) {
		err = -DMM_EINVAL;
		goto undo_bounce;
	}
	err = iova_get(d, span, d->limit, &iova, w);
	if (err)
		goto undo_bounce;
	if (span == PG) {
		err = dmm__iopt_map4k(d->pt, iova, tlb - off,
				      DMM_IOPTE_FIRST | DMM_IOPTE_LAST | dmm__iopt_prot_bits(prot_of(dir)));
	} else {
		err = dmm_iopt_map(d->pt, iova, tlb - off, span, prot_of(dir), DMM_IOPTE_FIRST | DMM_IOPTE_LAST);
	}
	if (err) {
		sadd(&d->st.fail_pgtable, 1);
		dmm_iova_free(d->iova, iova, span);
		err = err == -DMM_EEXIST ? -DMM_EINVAL : err;
		goto undo_bounce;
	}
	PC_ADD(d, maps, 1);
	PC_ADD(d, mapped_pages, (int64_t)(span / PG));
	if (bounced) /* (counted once handed out) */
		sadd(&d->st.bounced, 1);
	*map_pa = tlb;
	*bus = iova + off;
	return 0;
undo_bounce:
	if (bounced) /* never handed out: counts as no bounce */
		dmm__swiotlb_cancel(dev, tlb, dir);
	return err;
}

/*
 * Claim [iova, iova + span) as exactly one mapping before unmapping it: its
 * IOVA range is allocated with that rounded size and starts at @iova, FIRST
 * marks the leaf at @iova and LAST the leaf of the last page; then FIRST is
 * taken off atomically, so of two unmaps of one mapping only one proceeds.
 * *pa: the physical address behind @iova. 0 (refused, nothing changed) or 1.
 */
static int find_mapping(struct dmm_iommu_dom *d, dmm_dma_addr_t iova, uint64_t span, bool coherent, dmm_phys_t *pa)
{
	dmm_dma_addr_t start;
	uint64_t len, first, last;

	return !dmm_iova_find(d->iova, iova, &start, &len) && start == iova &&
	       len == dmm_iova_rounded(d->iova, span) &&
	       !dmm_iopt_lookup(d->pt, iova + span - PG, (dmm_phys_t *)0, (unsigned *)0, &last, (unsigned *)0) &&
	       (last & DMM_IOPTE_LAST) && !dmm_iopt_lookup(d->pt, iova, pa, (unsigned *)0, &first, (unsigned *)0) &&
	       (first & DMM_IOPTE_FIRST) && !(first & DMM_IOPTE_COHERENT) == !coherent;
}

static int claim_mapping(struct dmm_iommu_dom *d, dmm_dma_addr_t iova, uint64_t span, bool coherent, dmm_phys_t *pa)
{
	return find_mapping(d, iova, span, coherent, pa) && dmm__iopt_claim(d->pt, iova, DMM_IOPTE_FIRST) == 0;
}

int dmm__iommu_unmap(struct dmm_device *dev, dmm_dma_addr_t dma, size_t size, enum dmm_dma_dir dir)
{
	struct dmm_iommu_dom *d = dev->iommu;
	dmm_dma_addr_t iova = dma & ~(PG - 1);
	uint64_t span;
	dmm_phys_t pa;

	if (!size || dma > d->limit || size - 1 > d->limit - dma) {
		dmm__dstat(&dev->st.fail_unmap, 1);
		return -DMM_EINVAL;
	}
	span = dmm_align_up((dma & (PG - 1)) + size, PG);
	if (dmm__swiotlb_ready(dev->mem)) {
		/* a bounced mapping unmaps only at the address its map returned
		 * (the bounce buffers refuse any other): refused before the
		 * IOMMU mapping is touched */
		dmm_phys_t lpa;
		if (!dmm_iopt_lookup(d->pt, iova, &lpa, (unsigned *)0, (uint64_t *)0, (unsigned *)0) &&
		    dmm__swiotlb_inside(dev, lpa + (dma & (PG - 1)))) {
			sadd(&d->st.fail_unmap, 1);
			dmm__dstat(&dev->st.fail_unmap, 1);
			return -DMM_EINVAL;
		}
	}
	if (span == PG) {
		/* one walk checks the marks and clears the leaf */
		uint64_t old;
		if (dmm__iopt_take4k(d->pt, iova, DMM_IOPTE_VALID | DMM_IOPTE_FIRST | DMM_IOPTE_LAST, DMM_IOPTE_COHERENT,
				     &old)) {
			sadd(&d->st.fail_unmap, 1);
			dmm__dstat(&dev->st.fail_unmap, 1);
			return -DMM_ENOENT;
		}
		pa = old & DMM_IOPTE_ADDR;
	} else {
		if (!claim_mapping(d, iova, span, false, &pa)) {
			sadd(&d->st.fail_unmap, 1);
			dmm__dstat(&dev->st.fail_unmap, 1);
			return -DMM_ENOENT;
		}
		dmm_iopt_unmap(d->pt, iova, span);
	}
	pa += dma & (PG - 1);
	PC_ADD(d, mapped_pages, -(int64_t)(span / PG));
	if (d->strict)
		iotlb_inval(d, iova, span);
	/* the device can no longer reach it (strict) or soon will not: the
	 * CPU takes the buffer back (bounce copied back, slots freed) */
	dmm__dma_unmap_pa(dev, pa, size, dir);
	if (d->strict)
		dmm_iova_free(d->iova, iova, span);
	else
		fq_push(d, iova, span);
	arm_timer(d, d->o.iova.idle_trim_ns); /* the caches will need trimming */
	PC_ADD(d, unmaps, 1);
	return 0;
}

/* ---- scatterlists ------------------------------------------------------------------- */

/*
 * The IOVA layout of a list, piece by piece: a piece starts at the running
 * offset *@cur plus its offset within its page, except that one which would
 * cross the segment boundary starts at the next boundary (the range is then
 * aligned to at least the boundary). Returns the piece's page offset in the
 * range and advances *@cur past its pages. A bounced piece keeps its offset
 * within the page, so the layout follows from the CPU side of the list.
 */
static uint64_t sg_place(const struct dmm_sg *e, uint64_t boundary, uint64_t *cur)
{
	uint64_t off = e->phys & (PG - 1), pos = *cur;

	if (boundary && (pos + off) / boundary != (pos + off + e->length - 1) / boundary)
		pos = dmm_align_up(pos, boundary);
	*cur = pos + dmm_align_up(off + e->length, PG);
	return pos;
}

/* The range's length. */
static uint64_t sg_layout(const struct dmm_sg *sg, unsigned nents, uint64_t boundary)
{
	uint64_t cur = 0;

	for (unsigned i = 0; i < nents; i++)
		sg_place(&sg[i], boundary, &cur);
	return cur;
}

int dmm__iommu_map_sg(struct dmm_device *dev, struct dmm_sg *sg, unsigned nents, enum dmm_dma_dir dir,
		      const void *site)
{
	struct dmm_iommu_dom *d = dev->iommu;
	const struct dmm_constraint *l = &dev->lim[0];
	uint64_t seg_max = l->max_seg_size && l->max_seg_size < UINT32_MAX ? l->max_seg_size : UINT32_MAX;
	uint64_t total, cur = 0, mapped = 0; /* mapped: bytes of pages (not the boundary's gaps) */
	dmm_dma_addr_t iova;
	unsigned segs = 0, nbounced = 0, i;
	int err = 0;

	housekeeping(d);
	/* validate and bounce every piece first (bounce address parked in
	 * dma_address; same page offset as the piece) */
	for (i = 0; i < nents; i++) {
		sg[i].dma_address = DMM_DMA_MAPPING_ERROR;
		if (!sg[i].length || !dmm__is_ram(dev->mem, sg[i].phys, sg[i].length) ||
		    (l->max_seg_size && sg[i].length > l->max_seg_size) ||
		    (l->boundary && (sg[i].phys & (PG - 1)) + sg[i].length > l->boundary)) {
			err = -DMM_EINVAL;
			break;
		}
		if (must_bounce_iommu(dev, sg[i].phys, sg[i].length, dir)) {
			dmm_phys_t tlb;
			if (!dmm__swiotlb_ready(dev->mem)) {
				if (dev->desc.untrusted && ((sg[i].phys | sg[i].length) & (PG - 1))) {
					err = -DMM_ENOTSUP;
					break;
				}
				continue;
			}
			err = dmm__swiotlb_map(dev, sg[i].phys, sg[i].length, dir, PG, &tlb, (struct dmm__map_wait *)0);
			if (err)
				break;
			sg[i].dma_address = tlb;
			nbounced++;
		}
	}
	if (err)
		goto undo_bounce;
	total = sg_layout(sg, nents, l->boundary);
	err = iova_get(d, total, d->limit, &iova, (struct dmm__map_wait *)0);
	if (err)
		goto undo_bounce;
	/* map each piece at its place */
	for (i = 0; i < nents; i++) {
		dmm_phys_t pa = sg[i].dma_address != DMM_DMA_MAPPING_ERROR ? sg[i].dma_address : sg[i].phys;
		uint64_t off = pa & (PG - 1), pos = sg_place(&sg[i], l->boundary, &cur);
		uint64_t flags = (i == 0 ? DMM_IOPTE_FIRST : 0) | (i == nents - 1 ? DMM_IOPTE_LAST : 0);
		err = dmm_iopt_map(d->pt, iova + pos, pa - off, cur - pos, prot_of(dir), flags);
		if (err)
			break;
		mapped += cur - pos;
	}
	if (!err && l->max_segs) {
		/* the segments the merge below makes: too many is refused
		 * before anything a caller or the device could see */
		dmm_dma_addr_t sb = 0;
		uint64_t sl = 0, at = 0;
		unsigned n = 0;
		for (unsigned k = 0; k < nents; k++) {
			dmm_dma_addr_t b = iova + sg_place(&sg[k], l->boundary, &at) + (sg[k].phys & (PG - 1));
			if (n && b == sb + sl && sl + sg[k].length <= seg_max &&
			    !(l->boundary && sb / l->boundary != (b + sg[k].length - 1) / l->boundary)) {
				sl += sg[k].length;
			} else {
				n++;
				sb = b;
				sl = sg[k].length;
			}
		}
		if (n > l->max_segs)
			err = -DMM_EINVAL;
	}
	if (err) {
		uint64_t at = 0;
		for (unsigned k = 0; k < i; k++) {
			uint64_t pos = sg_place(&sg[k], l->boundary, &at);
			dmm_iopt_unmap(d->pt, iova + pos, at - pos);
		}
		dmm_iova_free(d->iova, iova, total);
		if (err != -DMM_EINVAL)
			sadd(&d->st.fail_pgtable, 1);
		err = err == -DMM_EEXIST ? -DMM_EINVAL : err;
		i = nents;
		goto undo_bounce;
	}
	/* caches, debug, and the segments: pieces contiguous in IOVA merge */
	cur = 0;
	for (i = 0; i < nents; i++) {
		dmm_phys_t pa = sg[i].dma_address != DMM_DMA_MAPPING_ERROR ? sg[i].dma_address : sg[i].phys;
		dmm_dma_addr_t b = iova + sg_place(&sg[i], l->boundary, &cur) + (pa & (PG - 1));
		dmm__dma_for_device(dev, pa, sg[i].length, dir);
		if (dmm__dbg_on(dev))
			dmm__dbg_map(dev, DMM__DBG_SG, b, sg[i].phys, sg[i].length, dir, (const void *)0, site);
		if (segs && b == sg[segs - 1].dma_address + sg[segs - 1].dma_length &&
		    (uint64_t)sg[segs - 1].dma_length + sg[i].length <= seg_max &&
		    !(l->boundary && sg[segs - 1].dma_address / l->boundary !=
					     (b + sg[i].length - 1) / l->boundary)) {
			sg[segs - 1].dma_length += sg[i].length;
		} else {
			sg[segs].dma_address = b;
			sg[segs].dma_length = sg[i].length;
			segs++;
		}
	}
	for (i = segs; i < nents; i++) {
		sg[i].dma_address = DMM_DMA_MAPPING_ERROR;
		sg[i].dma_length = 0;
	}
	PC_ADD(d, maps, 1);
	PC_ADD(d, mapped_pages, (int64_t)(mapped / PG));
	sadd(&d->st.bounced, nbounced); /* (counted once handed out) */
	dmm__dstat(&dev->st.sg_maps, 1);
	dmm__dstat(&dev->st.sg_segments_in, nents);
	dmm__dstat(&dev->st.sg_segments_out, segs);
	dmm__dstat2(dev, offsetof(struct dmm_dev_pcpu, map_bytes), dmm_sg_bytes(sg, nents), 0, 0);
	return (int)segs;
undo_bounce:
	/* the bounces never handed out count as none */
	for (unsigned k = 0; k < i && k < nents; k++) {
		if (sg[k].dma_address != DMM_DMA_MAPPING_ERROR)
			dmm__swiotlb_cancel(dev, sg[k].dma_address, dir);
		sg[k].dma_address = DMM_DMA_MAPPING_ERROR;
	}
	if (err == -DMM_EINVAL) {
		dmm__dstat(&dev->st.fail_invalid, 1);
		return dmm__count_invalid(dev->mem);
	}
	return err;
}

/*
 * Unmap a list mapped by dmm__iommu_map_sg. The range starts at the first
 * segment's page; the pieces' places follow from their CPU addresses (a
 * bounced piece keeps its offset within the page).
 */
int dmm__iommu_unmap_sg(struct dmm_device *dev, struct dmm_sg *sg, unsigned nents, enum dmm_dma_dir dir,
			const void *site)
{
	struct dmm_iommu_dom *d = dev->iommu;
	uint64_t boundary = dev->lim[0].boundary, total, at;
	dmm_dma_addr_t iova;
	dmm_phys_t pa;

	if (!nents || sg[0].dma_address == DMM_DMA_MAPPING_ERROR) {
		dmm__dstat(&dev->st.fail_unmap, 1);
		if (nents && dmm__dbg_on(dev)) /* unmapped already, or never mapped */
			dmm__dbg_report(dev, DMM_DBG_UNMAP_NOT_MAPPED, sg[0].dma_address, sg[0].length, dir, site);
		return -DMM_EINVAL;
	}
	for (unsigned i = 0; i < nents; i++)
		if (!sg[i].length) { /* no list map_sg took */
			dmm__dstat(&dev->st.fail_unmap, 1);
			return -DMM_EINVAL;
		}
	iova = sg[0].dma_address & ~(PG - 1); /* the first piece sits at the range's start */
	total = sg_layout(sg, nents, boundary);
	if (!claim_mapping(d, iova, total, false, &pa)) {
		sadd(&d->st.fail_unmap, 1);
		dmm__dstat(&dev->st.fail_unmap, 1);
		if (dmm__dbg_on(dev)) {
			/* what debug knows of the first piece; if that matches, the
			 * list (its entries or their sizes) is not the one mapped */
			struct dmm__dbg_saved saved;
			if (!dmm__dbg_unmap(dev, DMM__DBG_SG, sg[0].dma_address, sg[0].length, dir, site, &saved))
				dmm__dbg_report(dev, DMM_DBG_UNMAP_WRONG_SIZE, sg[0].dma_address, total, dir, site);
			dmm__dbg_restore(dev, &saved);
		}
		return -DMM_ENOENT;
	}
	/* the CPU side of each piece after the range is unmapped: park the
	 * physical address of each piece in dma_address meanwhile */
	at = 0;
	for (unsigned i = 0; i < nents; i++) {
		dmm_dma_addr_t b = iova + sg_place(&sg[i], boundary, &at) + (sg[i].phys & (PG - 1));
		if (dmm__dbg_on(dev))
			dmm__dbg_unmap(dev, DMM__DBG_SG, b, sg[i].length, dir, site, (struct dmm__dbg_saved *)0);
		if (dmm_iopt_lookup(d->pt, b, &pa, (unsigned *)0, (uint64_t *)0, (unsigned *)0) == 0)
			sg[i].dma_address = pa; /* parked until the range is unmapped */
		else
			sg[i].dma_address = DMM_DMA_MAPPING_ERROR;
	}
	{
		int64_t was = dmm_iopt_unmap(d->pt, iova, total); /* the gaps held nothing */
		PC_ADD(d, mapped_pages, -(was > 0 ? was : (int64_t)0) / (int64_t)PG);
	}
	if (d->strict)
		iotlb_inval(d, iova, total);
	for (unsigned i = 0; i < nents; i++) {
		if (sg[i].dma_address != DMM_DMA_MAPPING_ERROR)
			dmm__dma_unmap_pa(dev, sg[i].dma_address, sg[i].length, dir);
		sg[i].dma_address = DMM_DMA_MAPPING_ERROR;
		sg[i].dma_length = 0;
	}
	if (d->strict)
		dmm_iova_free(d->iova, iova, total);
	else
		fq_push(d, iova, total);
	PC_ADD(d, unmaps, 1);
	return 0;
}

void dmm__iommu_sync_sg(struct dmm_device *dev, struct dmm_sg *sg, unsigned nents, enum dmm_dma_dir dir,
			int to_device, const void *site)
{
	struct dmm_iommu_dom *d = dev->iommu;
	uint64_t boundary = dev->lim[0].boundary, at = 0;
	dmm_dma_addr_t iova;

	if (!nents || sg[0].dma_address == DMM_DMA_MAPPING_ERROR)
		return;
	for (unsigned i = 0; i < nents; i++)
		if (!sg[i].length)
			return;
	iova = sg[0].dma_address & ~(PG - 1); /* the first piece sits at the range's start */
	for (unsigned i = 0; i < nents; i++) {
		dmm_dma_addr_t b = iova + sg_place(&sg[i], boundary, &at) + (sg[i].phys & (PG - 1));
		dmm_phys_t pa;
		if (dmm__dbg_on(dev))
			dmm__dbg_sync(dev, b, sg[i].length, dir, to_device, site);
		if (dmm_iopt_lookup(d->pt, b, &pa, (unsigned *)0, (uint64_t *)0, (unsigned *)0) == 0)
			dmm__dma_sync_pa(dev, pa, sg[i].length, dir, to_device);
	}
}

/* ---- coherent allocations ------------------------------------------------------------ */

static unsigned order_of(uint64_t pages)
{
	return pages <= 1 ? 0 : 64u - (unsigned)__builtin_clzll(pages - 1);
}

/* Pages for a coherent buffer: one block or range from anywhere, else page
 * by page (vmap'ed). *@va: CPU address; @pfns filled for the page-by-page case
 * (NULL return of *contig = 0). */
static int coherent_pages(struct dmm_device *dev, uint64_t pages, unsigned gfp, dmm_pfn_t *pfn, int *contig)
{
	struct dmm_mem *mem = dev->mem;
	struct dmm_constraint any = DMM_CONSTRAINT_ANY;
	unsigned order = order_of(pages);
	int err;

	*contig = 1;
	if (pages == ((uint64_t)1 << order) && order <= DMM_MAX_ORDER)
		err = dmm_page_alloc(mem, order, &any, DMM_GFP_ZERO | gfp, pfn);
	else
		err = dmm_alloc_range(mem, &any, pages, DMM_GFP_ZERO | gfp, pfn);
	return err;
}

static void free_contig(struct dmm_mem *mem, dmm_pfn_t pfn, uint64_t pages)
{
	unsigned order = order_of(pages);
	if (pages == ((uint64_t)1 << order) && order <= DMM_MAX_ORDER)
		dmm_page_free(mem, pfn, order);
	else
		dmm_free_range(mem, pfn, pages);
}

int dmm__iommu_alloc_coherent(struct dmm_device *dev, size_t size, unsigned gfp, void **cpu, dmm_dma_addr_t *dma,
			      dmm_phys_t *first_pa, uint64_t *low_pages)
{
	struct dmm_iommu_dom *d = dev->iommu;
	struct dmm_mem *mem = dev->mem;
	uint64_t pages = dmm_align_up(size, PG) >> DMM_PAGE_SHIFT, span = pages * PG, low = 0;
	dmm_dma_addr_t iova, lim;
	dmm_pfn_t pfn = 0, *list = (dmm_pfn_t *)0;
	void *va = (void *)0;
	int err, contig = 1, from_pool = 0;

	housekeeping(d);
	lim = dev->lim[1].hi == DMM_PHYS_MAX ? d->limit : dmm_min64(d->limit, dev->lim[1].hi - 1);
	if (!dev->desc.coherent && (gfp & DMM_GFP_ATOMIC)) {
		/* pre-remapped memory from the least restricted atomic pool */
		err = dmm__atomic_pool_alloc(dev, pages, &pfn);
		if (err)
			return err;
		from_pool = 1;
	} else {
		err = coherent_pages(dev, pages, gfp, &pfn, &contig);
		if (err && pages > 1 && mem->plat.vmap && !(gfp & DMM_GFP_ATOMIC)) {
			/* fragmented: page by page, joined by the platform */
			void *p;
			struct dmm_constraint any = DMM_CONSTRAINT_ANY;
			uint64_t got = 0;
			if (dmm__lib_kmalloc(mem, pages * sizeof(dmm_pfn_t), 0, &p))
				return -DMM_ENOMEM;
			list = p;
			for (; got < pages; got++)
				if (dmm_page_alloc(mem, 0, &any, DMM_GFP_ZERO | gfp, &list[got]))
					break;
			if (got == pages) {
				dmm_phys_t *pa = (dmm_phys_t *)list; /* same width: convert in place */
				for (uint64_t k = 0; k < pages; k++)
					pa[k] = dmm_pfn_to_phys(list[k]);
				err = mem->plat.vmap(mem->plat.ctx, pa, pages,
						     dev->desc.coherent ? DMM_MEMATTR_WB : DMM_MEMATTR_UC, &va);
				for (uint64_t k = 0; k < pages; k++)
					list[k] = dmm_phys_to_pfn(pa[k]);
			}
			if (got < pages || err) {
				while (got-- > 0)
					dmm_page_free(mem, list[got], 0);
				dmm__lib_kfree(mem, list);
				return err ? err : -DMM_ENOMEM;
			}
			contig = 0;
		} else if (err) {
			return err;
		}
		if (!dev->desc.coherent) {
			/* written back, then uncached: no dirty line may land
			 * over the device's data later */
			uint64_t k, nk = contig ? 1 : pages;
			for (k = 0; k < nk && !err; k++) {
				dmm_phys_t pa = dmm_pfn_to_phys(contig ? pfn : list[k]);
				uint64_t len = contig ? span : PG;
				if (mem->plat.cache_maint)
					mem->plat.cache_maint(mem->plat.ctx, DMM_CACHE_FLUSH, pa, len);
				if (mem->plat.set_memattr)
					err = mem->plat.set_memattr(mem->plat.ctx, pa, len, DMM_MEMATTR_UC);
			}
			if (err) {
				err = err < 0 ? err : -err;
				goto undo_pages; /* undo_pages puts every page back to write-back */
			}
		}
	}
	err = iova_get(d, span, lim, &iova, (struct dmm__map_wait *)0);
	if (err)
		goto undo_pages;
	if (dev->lim[1].align && (iova & (dev->lim[1].align - 1))) {
		/* the coherent alignment is larger than the IOVA policy gives */
		dmm_iova_free(d->iova, iova, span);
		err = -DMM_EINVAL;
		goto undo_pages;
	}
	if (contig) {
		err = dmm_iopt_map(d->pt, iova, dmm_pfn_to_phys(pfn), span, DMM_IOMMU_READ | DMM_IOMMU_WRITE,
				   DMM_IOPTE_FIRST | DMM_IOPTE_COHERENT | DMM_IOPTE_LAST);
	} else {
		for (uint64_t k = 0; k < pages && !err; k++) {
			err = dmm_iopt_map(d->pt, iova + k * PG, dmm_pfn_to_phys(list[k]), PG,
					   DMM_IOMMU_READ | DMM_IOMMU_WRITE,
					   (k == 0 ? DMM_IOPTE_FIRST | DMM_IOPTE_COHERENT : 0) |
						   (k == pages - 1 ? DMM_IOPTE_LAST : 0));
			if (err && k)
				dmm_iopt_unmap(d->pt, iova, k * PG);
		}
	}
	if (err) {
		dmm_iova_free(d->iova, iova, span);
		sadd(&d->st.fail_pgtable, 1);
		goto undo_pages;
	}
	for (uint64_t k = 0; k < (contig ? 1 : pages); k++) {
		dmm_phys_t pa = dmm_pfn_to_phys(contig ? pfn : list[k]);
		uint64_t n = contig ? pages : 1, g4 = (uint64_t)4 << 30;
		if (pa < g4)
			low += dmm_min64(n, (g4 - pa) >> DMM_PAGE_SHIFT);
	}
	/* the page allocator refuses a coherent buffer's pages (only
	 * dmm_dma_free_coherent gives them back) */
	if (!from_pool)
		for (uint64_t k = 0; k < (contig ? 1 : pages); k++)
			dmm__coherent_mark(dmm__pfn_page(mem, contig ? pfn : list[k]), true);
	PC_ADD(d, maps, 1);
	PC_ADD(d, mapped_pages, (int64_t)pages);
	*cpu = contig ? dmm_pfn_to_virt(mem, pfn) : va;
	*dma = iova;
	*first_pa = dmm_pfn_to_phys(contig ? pfn : list[0]);
	*low_pages = low;
	if (list)
		dmm__lib_kfree(mem, list);
	return 0;
undo_pages:
	if (from_pool) {
		dmm__atomic_pool_free(dev, dmm_pfn_to_phys(pfn), pages);
	} else if (contig) {
		if (!dev->desc.coherent && mem->plat.set_memattr)
			mem->plat.set_memattr(mem->plat.ctx, dmm_pfn_to_phys(pfn), span, DMM_MEMATTR_WB);
		free_contig(mem, pfn, pages);
	} else {
		mem->plat.vunmap(mem->plat.ctx, va, pages);
		for (uint64_t k = 0; k < pages; k++) {
			if (!dev->desc.coherent && mem->plat.set_memattr)
				mem->plat.set_memattr(mem->plat.ctx, dmm_pfn_to_phys(list[k]), PG, DMM_MEMATTR_WB);
			dmm_page_free(mem, list[k], 0);
		}
		dmm__lib_kfree(mem, list);
	}
	return err;
}

/*
 * Free a coherent buffer of a translating device. The IOVA range must be
 * one mapping of @size; its pages are found in the page table. Returns 0,
 * -DMM_ENOENT (not a mapping of that size: nothing changed), -DMM_EINVAL,
 * or -DMM_EBUSY (a page of it is pinned: nothing changed, the buffer stays
 * mapped at its IOVA as it was, uncached for a non-coherent device).
 * Order: the mapping is claimed (FIRST taken off: of two frees at once one
 * goes on), then its pages are claimed for the free as the page allocator
 * would (a pin refuses it: the claims are undone, FIRST put back); only
 * then is the IOVA unmapped, the IOTLB invalidated and the pages given
 * back. *@low_pages: pages below 4 GiB freed.
 */
int dmm__iommu_free_coherent(struct dmm_device *dev, size_t size, void *cpu, dmm_dma_addr_t dma,
			     uint64_t *low_pages)
{
	struct dmm_iommu_dom *d = dev->iommu;
	struct dmm_mem *mem = dev->mem;
	uint64_t pages = dmm_align_up(size, PG) >> DMM_PAGE_SHIFT, span = pages * PG, low = 0;
	const uint64_t g4 = (uint64_t)4 << 30;
	dmm_phys_t pa0;
	int contig, err = 0;

	if ((dma & (PG - 1)) || !find_mapping(d, dma, span, true, &pa0))
		return -DMM_ENOENT;
	contig = cpu == dmm_pfn_to_virt(mem, dmm_phys_to_pfn(pa0));
	/* everything checked before anything changes */
	if (contig) {
		/* the pages must be one allocation of this size */
		struct dmm_page *head = dmm_pfn_to_page(mem, dmm_phys_to_pfn(pa0));
		unsigned order = order_of(pages);
		int pooled = dmm__atomic_pool_owns(dev, pa0);
		uint8_t from;
		if (!head || (pooled && dmm__atomic_pool_check(dev, pa0, pages)) ||
		    (!pooled && !(head->state == DMM_PAGE_RANGE && head->private == pages) &&
		     !(head->state == DMM_PAGE_ALLOC && pages == ((uint64_t)1 << order) && head->order == order)))
			return -DMM_EINVAL;
		from = head->state == DMM_PAGE_RANGE ? DMM_PAGE_RANGE : DMM_PAGE_ALLOC;
		if (!claim_mapping(d, dma, span, true, &pa0))
			return -DMM_ENOENT;
		/* pinned? refused before the device loses the buffer */
		if (!pooled && (err = dmm__free_begin(mem, head, from)) != 0) {
			dmm__iopt_unclaim(d->pt, dma, DMM_IOPTE_FIRST);
			return err;
		}
		dmm_iopt_unmap(d->pt, dma, span);
		iotlb_inval(d, dma, span); /* the pages are freed right now */
		if (pooled) {
			err = dmm__atomic_pool_free(dev, pa0, pages);
		} else {
			if (!dev->desc.coherent && mem->plat.set_memattr)
				mem->plat.set_memattr(mem->plat.ctx, pa0, span, DMM_MEMATTR_WB);
			dmm__coherent_mark(head, false);
			dmm__free_finish(mem, head, from);
		}
		if (pa0 < g4)
			low = dmm_min64(pages, (g4 - pa0) >> DMM_PAGE_SHIFT);
	} else {
		if (!mem->plat.vunmap)
			return -DMM_EINVAL;
		{
			dmm_phys_t vpa;
			if (!mem->plat.virt_to_phys || mem->plat.virt_to_phys(mem->plat.ctx, cpu, &vpa) || vpa != pa0)
				return -DMM_EINVAL;
		}
		if (!claim_mapping(d, dma, span, true, &pa0))
			return -DMM_ENOENT;
		/* every page claimed for the free before anything changes: a
		 * pinned one refuses it, and the claims made are undone */
		for (uint64_t k = 0; k < pages; k++) {
			dmm_phys_t pa;
			if (dmm_iopt_lookup(d->pt, dma + k * PG, &pa, (unsigned *)0, (uint64_t *)0, (unsigned *)0))
				continue;
			err = dmm__free_begin(mem, dmm__pfn_page(mem, dmm_phys_to_pfn(pa)), DMM_PAGE_ALLOC);
			if (err) {
				while (k-- > 0)
					if (!dmm_iopt_lookup(d->pt, dma + k * PG, &pa, (unsigned *)0, (uint64_t *)0,
							     (unsigned *)0))
						dmm__free_cancel(dmm__pfn_page(mem, dmm_phys_to_pfn(pa)), DMM_PAGE_ALLOC);
				dmm__iopt_unclaim(d->pt, dma, DMM_IOPTE_FIRST);
				return err;
			}
		}
		for (uint64_t k = 0; k < pages; k++) {
			dmm_phys_t pa;
			if (dmm_iopt_lookup(d->pt, dma + k * PG, &pa, (unsigned *)0, (uint64_t *)0, (unsigned *)0))
				continue;
			if (!dev->desc.coherent && mem->plat.set_memattr)
				mem->plat.set_memattr(mem->plat.ctx, pa, PG, DMM_MEMATTR_WB);
			if (pa < g4)
				low++;
		}
		mem->plat.vunmap(mem->plat.ctx, cpu, pages);
		{
			/* collect the pages before the table forgets them */
			for (uint64_t k = 0; k < pages; k++) {
				dmm_phys_t pa;
				if (dmm_iopt_lookup(d->pt, dma + k * PG, &pa, (unsigned *)0, (uint64_t *)0,
						    (unsigned *)0) == 0) {
					struct dmm_page *pg = dmm__pfn_page(mem, dmm_phys_to_pfn(pa));
					dmm_iopt_unmap(d->pt, dma + k * PG, PG);
					iotlb_inval(d, dma + k * PG, PG);
					dmm__coherent_mark(pg, false);
					dmm__free_finish(mem, pg, DMM_PAGE_ALLOC);
				}
			}
		}
	}
	PC_ADD(d, mapped_pages, -(int64_t)pages);
	dmm_iova_free(d->iova, dma, span);
	PC_ADD(d, unmaps, 1);
	*low_pages = low;
	return err;
}

/* ---- information ------------------------------------------------------------------------ */

int dmm_device_iommu_info(const struct dmm_device *dev, struct dmm_iommu_info *out)
{
	if (!dev || !out || !dev->desc.iommu)
		return -DMM_EINVAL;
	*out = (struct dmm_iommu_info){ 0 };
	out->mode = (enum dmm_iommu_mode)dev->desc.iommu;
	out->domain_id = dev->iommu_id;
	if (dev->iommu) {
		out->root = dmm_iopt_root(dev->iommu->pt);
		out->iova_limit = dev->iommu->limit;
	} else {
		out->iova_limit = dev->lim[0].hi == DMM_PHYS_MAX ? DMM_PHYS_MAX : dev->lim[0].hi - 1;
	}
	return 0;
}

int dmm_device_iommu_stats(struct dmm_device *dev, struct dmm_iommu_stats *st)
{
	struct dmm_iommu_dom *d;

	if (!dev || !st || !dev->iommu)
		return -DMM_EINVAL;
	d = dev->iommu;
	*st = (struct dmm_iommu_stats){ 0 };
#define LD(f) st->f = __atomic_load_n(&d->st.f, __ATOMIC_RELAXED)
	LD(invalidations);
	LD(fq_flushes);
	LD(fq_timeouts);
	LD(bounced);
	LD(fail_iova);
	LD(fail_pgtable);
	LD(fail_unmap);
#undef LD
	{
		int64_t mp = 0;
		for (unsigned c = 0; c < d->mem->plat.nr_cpus; c++) {
			st->maps += __atomic_load_n(&d->pcpu[c].maps, __ATOMIC_RELAXED);
			st->unmaps += __atomic_load_n(&d->pcpu[c].unmaps, __ATOMIC_RELAXED);
			mp += __atomic_load_n(&d->pcpu[c].mapped_pages, __ATOMIC_RELAXED);
			st->fq_queued += __atomic_load_n(&d->pcpu[c].fq_queued, __ATOMIC_RELAXED);
		}
		st->mapped_pages = (uint64_t)mp;
	}
	for (unsigned i = 0; i < d->nr_fq; i++) {
		dmm__lock(d->mem, &d->fq[i].lock);
		st->fq_pending += d->fq[i].n;
		dmm__unlock(d->mem, &d->fq[i].lock);
	}
	dmm_iova_get_stats(d->iova, &st->iova);
	dmm_iopt_get_stats(d->pt, &st->pt);
	return 0;
}

void dmm_device_iommu_flush(struct dmm_device *dev)
{
	if (dev && dev->iommu)
		fq_flush(dev->iommu, 0);
}

int dmm_device_iommu_check(struct dmm_device *dev)
{
	struct dmm_iopt_stats ps;
	struct dmm_iommu_dom *d;
	int err;

	if (!dev || !dev->iommu)
		return -DMM_EINVAL;
	d = dev->iommu;
	err = dmm_iova_check(d->iova);
	if (!err)
		err = dmm_iopt_check(d->pt);
	dmm_iopt_get_stats(d->pt, &ps);
	int64_t mp = 0;
	for (unsigned c = 0; c < d->mem->plat.nr_cpus; c++)
		mp += __atomic_load_n(&d->pcpu[c].mapped_pages, __ATOMIC_RELAXED);
	if (!err && (int64_t)(ps.pages_4k + (ps.blocks_2m << 9) + (ps.blocks_1g << 18)) != mp) {
		dmm_log(d->mem, DMM_LOG_ERR, "iommu check: %s: mapped pages disagree with the page table",
			dev->name);
		err = -DMM_EINVAL;
	}
	return err;
}

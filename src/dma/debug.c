/* SPDX-License-Identifier: MIT */
/*
 * DMA debug: track every mapping and coherent buffer, check every unmap,
 * sync and free against it, and (fed by a hardware model) every CPU and
 * device access against who owns the buffer.
 *
 * State (allocated from the page allocator the first time debugging is
 * enabled, never from a host heap): a hash table of live entries keyed by
 * (device, bus page of the mapping's start), a free list of entries carved
 * from pages taken on demand, a ring of recently unmapped addresses (to tell
 * a double unmap from an unmap of garbage), counters per rule and a ring of
 * the last reports. One lock: this is a debugging aid, correctness first.
 * Lookups of a sync at an offset, of CPU accesses and of cache-line overlaps
 * walk the live entries (O(live mappings)).
 */
#include "dma/dma_internal.h"

#define DBG_BUCKETS 1024
#define DBG_RING 64
#define DBG_RECENT 64

struct dbg_entry {
	struct dbg_entry *next;
	struct dbg_entry *nc_next, *nc_prev; /* live non-coherent invalidating mappings */
	struct dmm_device *dev;
	/* the mapping (cpu: coherent, the CPU address the allocation
	 * returned; valid unused) */
	struct dmm__dbg_saved r;
};

struct dbg_recent {
	const struct dmm_device *dev;
	dmm_dma_addr_t dma;
};

struct dbg_state {
	struct dmm_lock lock;
	struct dbg_entry *bucket[DBG_BUCKETS];
	struct dbg_entry *free;
	struct dbg_entry *nc_head;
	uint64_t active;
	uint64_t counts[DMM_NR_DBG_RULES];
	uint64_t seq;
	uint64_t pool_pages;
	struct dmm_dma_debug_report ring[DBG_RING];
	unsigned ring_head, ring_len;
	struct dbg_recent recent[DBG_RECENT];
	unsigned recent_head;
};

static const char *const rule_names[DMM_NR_DBG_RULES] = {
	"unmap-not-mapped", "double-unmap", "unmap-wrong-size", "unmap-wrong-direction",
	"unmap-wrong-type", "sync-outside-mapping", "sync-wrong-direction", "free-coherent-wrong",
	"free-coherent-not-allocated", "mapping-error-not-checked", "leak-at-remove",
	"cacheline-shared", "cacheline-overlap", "cpu-touched-device-buffer", "device-no-mapping",
	"device-touched-cpu-buffer", "device-wrong-direction", "address-truncated",
};

static const char *const dir_names[] = { "bidirectional", "to-device", "from-device", "none" };

const char *dmm_dma_debug_rule_name(enum dmm_dma_debug_rule r)
{
	return (unsigned)r < DMM_NR_DBG_RULES ? rule_names[r] : "?";
}

static struct dbg_state *state(const struct dmm_mem *mem)
{
	return (struct dbg_state *)__atomic_load_n(&mem->dma_debug, __ATOMIC_ACQUIRE);
}

int dmm__dbg_on_slow(const struct dmm_device *dev)
{
	int mode = __atomic_load_n(&dev->debug_mode, __ATOMIC_RELAXED);

	if (!state(dev->mem))
		return 0;
	return mode == 1 || (mode < 0 && __atomic_load_n(&dev->mem->dma_debug_on, __ATOMIC_RELAXED));
}

int dmm_dma_debug_enable(struct dmm_mem *mem, int on)
{
	if (!mem)
		return -DMM_EINVAL;
	if (on && !state(mem)) {
		uint64_t pages = dmm_align_up(sizeof(struct dbg_state), DMM_PAGE_SIZE) >> DMM_PAGE_SHIFT;
		struct dbg_state *s;
		void *none = (void *)0;
		dmm_pfn_t pfn;
		void *va;
		int err = dmm__meta_alloc(mem, pages, 0, &pfn, &va);
		if (err)
			return err;
		s = va;
		mem->plat.lock_init(mem->plat.ctx, &s->lock);
		if (!__atomic_compare_exchange_n(&mem->dma_debug, &none, (void *)s, false, __ATOMIC_RELEASE,
						 __ATOMIC_ACQUIRE)) {
			/* a concurrent enable installed its state first: keep that one */
			if (mem->plat.lock_destroy)
				mem->plat.lock_destroy(mem->plat.ctx, &s->lock);
			dmm__lib_free_range(mem, pfn, pages); /* the library's: never refused for a pin */
		}
	}
	__atomic_store_n(&mem->dma_debug_on, on ? 1 : 0, __ATOMIC_RELAXED);
	return 0;
}

int dmm_dma_debug_device(struct dmm_device *dev, int mode)
{
	if (!dev || mode < -1 || mode > 1)
		return -DMM_EINVAL;
	if (mode == 1 && !state(dev->mem)) {
		int on = __atomic_load_n(&dev->mem->dma_debug_on, __ATOMIC_RELAXED);
		int err = dmm_dma_debug_enable(dev->mem, 1); /* allocate the state ... */
		if (err)
			return err;
		__atomic_store_n(&dev->mem->dma_debug_on, on, __ATOMIC_RELAXED); /* ... keep the switch */
	}
	__atomic_store_n(&dev->debug_mode, mode, __ATOMIC_RELAXED);
	return 0;
}

int dmm_dma_debug_enabled(const struct dmm_device *dev)
{
	return dev ? dmm__dbg_on(dev) : 0;
}

/* ---- entries ------------------------------------------------------------------- */

static unsigned hash(const struct dmm_device *dev, dmm_dma_addr_t dma)
{
	uint64_t k = ((uint64_t)(uintptr_t)dev >> 6) ^ (dma >> DMM_PAGE_SHIFT) * 0x9e3779b97f4a7c15ull;
	return (unsigned)(k >> 54) & (DBG_BUCKETS - 1);
}

static struct dbg_entry *entry_new(struct dmm_mem *mem, struct dbg_state *s)
{
	struct dbg_entry *e;

	if (!s->free) {
		dmm_pfn_t pfn;
		struct dbg_entry *arr;
		if (dmm__lib_page_alloc(mem, 0, (const struct dmm_constraint *)0, DMM_GFP_ATOMIC, &pfn))
			return (struct dbg_entry *)0;
		arr = dmm_pfn_to_virt(mem, pfn);
		for (size_t i = 0; i < DMM_PAGE_SIZE / sizeof(*arr); i++) {
			arr[i].next = s->free;
			s->free = &arr[i];
		}
		s->pool_pages++;
	}
	e = s->free;
	s->free = e->next;
	dmm_memset(e, 0, sizeof(*e));
	return e;
}

static bool nc_tracked(const struct dbg_entry *e)
{
	return e->r.type != DMM__DBG_COHERENT && !e->dev->desc.coherent && e->r.dir != DMM_DMA_TO_DEVICE;
}

static void entry_insert(struct dbg_state *s, struct dbg_entry *e)
{
	unsigned h = hash(e->dev, e->r.dma);
	e->next = s->bucket[h];
	s->bucket[h] = e;
	s->active++;
	if (nc_tracked(e)) {
		e->nc_prev = (struct dbg_entry *)0;
		e->nc_next = s->nc_head;
		if (s->nc_head)
			s->nc_head->nc_prev = e;
		s->nc_head = e;
	}
}

static void entry_remove(struct dbg_state *s, struct dbg_entry *e)
{
	struct dbg_entry **pp = &s->bucket[hash(e->dev, e->r.dma)];
	while (*pp && *pp != e)
		pp = &(*pp)->next;
	if (*pp)
		*pp = e->next;
	if (nc_tracked(e)) {
		if (e->nc_prev)
			e->nc_prev->nc_next = e->nc_next;
		else
			s->nc_head = e->nc_next;
		if (e->nc_next)
			e->nc_next->nc_prev = e->nc_prev;
	}
	e->next = s->free;
	s->free = e;
	s->active--;
}

/* The entry of @dev starting at exactly @dma (of @type, or any if < 0). */
static struct dbg_entry *find_exact(struct dbg_state *s, const struct dmm_device *dev, dmm_dma_addr_t dma)
{
	for (struct dbg_entry *e = s->bucket[hash(dev, dma)]; e; e = e->next)
		if (e->dev == dev && e->r.dma == dma)
			return e;
	return (struct dbg_entry *)0;
}

/* Any entry of @dev overlapping [dma, dma + size). */
static struct dbg_entry *find_overlap(struct dbg_state *s, const struct dmm_device *dev, dmm_dma_addr_t dma,
				      uint64_t size)
{
	struct dbg_entry *e = find_exact(s, dev, dma);
	if (e)
		return e;
	for (unsigned b = 0; b < DBG_BUCKETS; b++)
		for (e = s->bucket[b]; e; e = e->next)
			if (e->dev == dev && dma < e->r.dma + e->r.size && e->r.dma < dma + size)
				return e;
	return (struct dbg_entry *)0;
}

/* ---- reports ------------------------------------------------------------------- */

static void report(struct dmm_mem *mem, struct dbg_state *s, enum dmm_dma_debug_rule rule,
		   const struct dmm_device *dev, dmm_dma_addr_t dma, dmm_phys_t pa, uint64_t size,
		   enum dmm_dma_dir dir, const void *site, uint64_t expected)
{
	struct dmm_dma_debug_report *r = &s->ring[(s->ring_head + s->ring_len) % DBG_RING];

	if (s->ring_len == DBG_RING)
		s->ring_head = (s->ring_head + 1) % DBG_RING;
	else
		s->ring_len++;
	dmm_memset(r, 0, sizeof(*r));
	r->rule = rule;
	for (unsigned i = 0; dev && i < sizeof(r->device) - 1 && dev->name[i]; i++)
		r->device[i] = dev->name[i];
	r->dma = dma;
	r->phys = pa;
	r->size = size;
	r->dir = dir;
	r->site = site;
	r->seq = ++s->seq;
	r->expected = expected;
	s->counts[rule]++;
	dmm_log(mem, DMM_LOG_WARN,
		"dma-debug: %s: %s: dma %#llx phys %#llx size %llu %s (expected %llu) at %p",
		dev ? dev->name : "?", rule_names[rule], (unsigned long long)dma, (unsigned long long)pa,
		(unsigned long long)size, (unsigned)dir < 4 ? dir_names[dir] : "?", (unsigned long long)expected,
		site);
}

/* ---- hooks from the API ----------------------------------------------------------- */

static uint64_t line_size(const struct dmm_mem *mem)
{
	return dmm_max64(mem->machine.dma_min_align, mem->machine.cache_line);
}

static void check_cachelines(struct dmm_mem *mem, struct dbg_state *s, struct dmm_device *dev,
			     dmm_dma_addr_t dma, dmm_phys_t pa, uint64_t size, enum dmm_dma_dir dir,
			     const void *site)
{
	uint64_t line = line_size(mem);
	dmm_phys_t lo = dmm_align_down(pa, line), hi = dmm_align_up(pa + size, line);

	if (dev->desc.coherent || dir == DMM_DMA_TO_DEVICE)
		return;
	if ((pa | (pa + size)) & (line - 1)) {
		dmm_phys_t os;
		uint64_t on;
		/* inside one small object that fills its lines: nobody else's data */
		if (!(dmm__slab_object_of(mem, pa, &os, &on) && pa + size <= os + on && !((os | on) & (line - 1))))
			report(mem, s, DMM_DBG_CACHELINE_SHARED, dev, dma, pa, size, dir, site, line);
	}
	/* another live invalidating mapping touching the same lines */
	for (struct dbg_entry *e = s->nc_head; e; e = e->nc_next) {
		if (dmm_align_down(e->r.pa, line) < hi && lo < dmm_align_up(e->r.pa + e->r.size, line)) {
			report(mem, s, DMM_DBG_CACHELINE_OVERLAP, dev, dma, pa, size, dir, site, e->r.dma);
			return;
		}
	}
}

/* A new entry of @dev holding @r (debug lock held), or NULL when out of
 * memory. */
static struct dbg_entry *entry_add(struct dmm_mem *mem, struct dbg_state *s, struct dmm_device *dev,
				   const struct dmm__dbg_saved *r)
{
	struct dbg_entry *e = entry_new(mem, s);

	if (!e)
		return e;
	e->dev = dev;
	e->r = *r;
	entry_insert(s, e);
	return e;
}

void dmm__dbg_map(struct dmm_device *dev, enum dmm__dbg_type type, dmm_dma_addr_t dma, dmm_phys_t pa,
		  uint64_t size, enum dmm_dma_dir dir, const void *cpu, const void *site)
{
	struct dmm_mem *mem = dev->mem;
	struct dbg_state *s = state(mem);
	const struct dmm__dbg_saved r = {
		.dma = dma,
		.pa = pa,
		.size = size,
		.site = site,
		.cpu = cpu,
		.dir = (uint8_t)dir,
		.type = (uint8_t)type,
		.checked = type != DMM__DBG_SINGLE, /* map_sg returns a count, coherent an error code */
		.dev_owned = type != DMM__DBG_COHERENT,
	};

	dmm__lock(mem, &s->lock);
	if (type != DMM__DBG_COHERENT)
		check_cachelines(mem, s, dev, dma, pa, size, dir, site);
	if (!entry_add(mem, s, dev, &r)) {
		dmm__unlock(mem, &s->lock);
		dmm_log(mem, DMM_LOG_ERR, "dma-debug: out of memory, disabling");
		__atomic_store_n(&mem->dma_debug_on, 0, __ATOMIC_RELAXED);
		return;
	}
	dmm__unlock(mem, &s->lock);
}

/* Keep a copy of @e in @saved (if not NULL) before it is removed. */
static void save(const struct dbg_entry *e, struct dmm__dbg_saved *saved)
{
	if (!saved)
		return;
	*saved = e->r;
	saved->valid = 1;
}

void dmm__dbg_restore_slow(struct dmm_device *dev, const struct dmm__dbg_saved *saved)
{
	struct dmm_mem *mem = dev->mem;
	struct dbg_state *s = state(mem);
	struct dbg_entry *e;

	if (!s)
		return;
	dmm__lock(mem, &s->lock);
	e = entry_add(mem, s, dev, saved);
	dmm__unlock(mem, &s->lock);
	if (!e)
		dmm_log(mem, DMM_LOG_ERR, "dma-debug: out of memory restoring an entry");
}

void dmm__dbg_report(struct dmm_device *dev, enum dmm_dma_debug_rule rule, dmm_dma_addr_t dma, uint64_t size,
		     enum dmm_dma_dir dir, const void *site)
{
	struct dmm_mem *mem = dev->mem;
	struct dbg_state *s = state(mem);

	if (!s)
		return;
	dmm__lock(mem, &s->lock);
	report(mem, s, rule, dev, dma, DMM_PHYS_MAX, size, dir, site, 0);
	dmm__unlock(mem, &s->lock);
}

void dmm__dbg_checked(struct dmm_device *dev, dmm_dma_addr_t dma)
{
	struct dbg_state *s = state(dev->mem);
	struct dbg_entry *e;

	dmm__lock(dev->mem, &s->lock);
	e = find_exact(s, dev, dma);
	if (e)
		e->r.checked = 1;
	dmm__unlock(dev->mem, &s->lock);
}

static bool recently_unmapped(struct dbg_state *s, const struct dmm_device *dev, dmm_dma_addr_t dma)
{
	for (unsigned i = 0; i < DBG_RECENT; i++)
		if (s->recent[i].dev == dev && s->recent[i].dma == dma)
			return true;
	return false;
}

int dmm__dbg_unmap(struct dmm_device *dev, enum dmm__dbg_type type, dmm_dma_addr_t dma, uint64_t size,
		   enum dmm_dma_dir dir, const void *site, struct dmm__dbg_saved *saved)
{
	struct dmm_mem *mem = dev->mem;
	struct dbg_state *s = state(mem);
	struct dbg_entry *e;
	int n = 0;

	if (saved)
		saved->valid = 0;
	dmm__lock(mem, &s->lock);
	e = find_exact(s, dev, dma);
	if (!e || e->r.type == DMM__DBG_COHERENT) {
		enum dmm_dma_debug_rule r = e ? DMM_DBG_UNMAP_WRONG_TYPE
				     : recently_unmapped(s, dev, dma) ? DMM_DBG_DOUBLE_UNMAP
								       : DMM_DBG_UNMAP_NOT_MAPPED;
		report(mem, s, r, dev, dma, e ? e->r.pa : DMM_PHYS_MAX, size, dir, site, 0);
		dmm__unlock(mem, &s->lock);
		return 1;
	}
	if (e->r.type != type && ++n)
		report(mem, s, DMM_DBG_UNMAP_WRONG_TYPE, dev, dma, e->r.pa, size, dir, site, e->r.type);
	if (e->r.size != size && ++n)
		report(mem, s, DMM_DBG_UNMAP_WRONG_SIZE, dev, dma, e->r.pa, size, dir, site, e->r.size);
	if (e->r.dir != dir && ++n)
		report(mem, s, DMM_DBG_UNMAP_WRONG_DIR, dev, dma, e->r.pa, size, dir, site, e->r.dir);
	if (!e->r.checked && ++n) {
		report(mem, s, DMM_DBG_ERROR_NOT_CHECKED, dev, dma, e->r.pa, e->r.size, (enum dmm_dma_dir)e->r.dir,
		       e->r.site, 0);
		e->r.checked = 1; /* once, should the entry come back (dmm__dbg_restore) */
	}
	s->recent[s->recent_head].dev = dev;
	s->recent[s->recent_head].dma = dma;
	s->recent_head = (s->recent_head + 1) % DBG_RECENT;
	save(e, saved);
	entry_remove(s, e);
	dmm__unlock(mem, &s->lock);
	return n;
}

void dmm__dbg_sync(struct dmm_device *dev, dmm_dma_addr_t dma, uint64_t size, enum dmm_dma_dir dir,
		   int for_device, const void *site)
{
	struct dmm_mem *mem = dev->mem;
	struct dbg_state *s = state(mem);
	struct dbg_entry *e;

	dmm__lock(mem, &s->lock);
	e = find_overlap(s, dev, dma, size ? size : 1);
	if (!e || e->r.type == DMM__DBG_COHERENT) {
		report(mem, s, recently_unmapped(s, dev, dma) ? DMM_DBG_DOUBLE_UNMAP : DMM_DBG_UNMAP_NOT_MAPPED,
		       dev, dma, DMM_PHYS_MAX, size, dir, site, 0);
	} else {
		if (dma < e->r.dma || dma + size > e->r.dma + e->r.size)
			report(mem, s, DMM_DBG_SYNC_OUTSIDE, dev, dma, e->r.pa + (dma - e->r.dma), size, dir, site,
			       e->r.size);
		if (e->r.dir != DMM_DMA_BIDIRECTIONAL && dir != e->r.dir)
			report(mem, s, DMM_DBG_SYNC_WRONG_DIR, dev, dma, e->r.pa, size, dir, site, e->r.dir);
		e->r.dev_owned = for_device ? 1 : 0;
	}
	dmm__unlock(mem, &s->lock);
}

int dmm__dbg_free_coherent(struct dmm_device *dev, dmm_dma_addr_t dma, uint64_t size, dmm_phys_t pa,
			   const void *cpu, const void *site, struct dmm__dbg_saved *saved)
{
	struct dmm_mem *mem = dev->mem;
	struct dbg_state *s = state(mem);
	struct dbg_entry *e;
	int err = 0;

	if (saved)
		saved->valid = 0;
	dmm__lock(mem, &s->lock);
	e = find_exact(s, dev, dma);
	if (!e || e->r.type != DMM__DBG_COHERENT) {
		report(mem, s, DMM_DBG_FREE_NOT_ALLOCATED, dev, dma, pa, size, DMM_DMA_BIDIRECTIONAL, site, 0);
		/* untracked: perhaps allocated before debugging was switched on;
		 * the allocator's own checks decide (a live mapping is refused) */
		err = e ? -DMM_ENOENT : 1;
	} else if (e->r.size != size || e->r.pa != pa ||
		   (e->r.cpu ? e->r.cpu : dmm_pfn_to_virt(mem, dmm_phys_to_pfn(e->r.pa))) != cpu) {
		report(mem, s, DMM_DBG_FREE_COHERENT_WRONG, dev, dma, pa, size, DMM_DMA_BIDIRECTIONAL, site,
		       e->r.size);
		err = -DMM_EINVAL;
	} else {
		save(e, saved);
		entry_remove(s, e);
	}
	dmm__unlock(mem, &s->lock);
	return err;
}

void dmm__dbg_device_gone(struct dmm_device *dev)
{
	struct dmm_mem *mem = dev->mem;
	struct dbg_state *s = state(mem);

	if (!s)
		return;
	dmm__lock(mem, &s->lock);
	for (unsigned b = 0; b < DBG_BUCKETS; b++) {
		struct dbg_entry *e = s->bucket[b];
		while (e) {
			struct dbg_entry *next = e->next;
			if (e->dev == dev) {
				report(mem, s, DMM_DBG_LEAK_AT_REMOVE, dev, e->r.dma, e->r.pa, e->r.size,
				       (enum dmm_dma_dir)e->r.dir, e->r.site, e->r.type);
				entry_remove(s, e);
			}
			e = next;
		}
	}
	dmm__unlock(mem, &s->lock);
}

/* ---- accesses from a hardware model ------------------------------------------------ */

void dmm_dma_debug_cpu_access(struct dmm_mem *mem, dmm_phys_t pa, size_t len, int write, const void *site)
{
	struct dbg_state *s;

	if (!mem || !len || !(s = state(mem)))
		return;
	dmm__lock(mem, &s->lock);
	for (unsigned b = 0; b < DBG_BUCKETS; b++)
		for (struct dbg_entry *e = s->bucket[b]; e; e = e->next) {
			if (e->r.type == DMM__DBG_COHERENT || !e->r.dev_owned || !dmm__dbg_on(e->dev))
				continue;
			if (pa >= e->r.pa + e->r.size || e->r.pa >= pa + len)
				continue;
			if (e->r.dir == DMM_DMA_TO_DEVICE && !write)
				continue; /* reading what the device only reads is harmless */
			report(mem, s, DMM_DBG_CPU_OWNED_BY_DEVICE, e->dev, e->r.dma + (pa > e->r.pa ? pa - e->r.pa : 0), pa,
			       len, (enum dmm_dma_dir)e->r.dir, site, (uint64_t)write);
		}
	dmm__unlock(mem, &s->lock);
}

void dmm_dma_debug_device_access(struct dmm_device *dev, dmm_dma_addr_t bus, dmm_phys_t pa, size_t len,
				 int write, int truncated, dmm_dma_addr_t orig)
{
	struct dmm_mem *mem;
	struct dbg_state *s;
	struct dbg_entry *e;

	if (!dev || !len || !dmm__dbg_on(dev))
		return;
	mem = dev->mem;
	s = state(mem);
	dmm__lock(mem, &s->lock);
	if (truncated)
		report(mem, s, DMM_DBG_ADDRESS_TRUNCATED, dev, bus, pa, len, DMM_DMA_NONE, (const void *)0, orig);
	e = find_overlap(s, dev, bus, len);
	if (!e || bus < e->r.dma || bus + len > e->r.dma + e->r.size)
		report(mem, s, DMM_DBG_DEVICE_NO_MAPPING, dev, bus, pa, len, DMM_DMA_NONE, (const void *)0,
		       (uint64_t)write);
	else if (e->r.type != DMM__DBG_COHERENT && !e->r.dev_owned)
		report(mem, s, DMM_DBG_DEVICE_CPU_OWNED, dev, bus, pa, len, (enum dmm_dma_dir)e->r.dir, e->r.site,
		       (uint64_t)write);
	else if (e->r.type != DMM__DBG_COHERENT &&
		 ((write && e->r.dir == DMM_DMA_TO_DEVICE) || (!write && e->r.dir == DMM_DMA_FROM_DEVICE)))
		report(mem, s, DMM_DBG_DEVICE_WRONG_DIR, dev, bus, pa, len, (enum dmm_dma_dir)e->r.dir, e->r.site,
		       (uint64_t)write);
	dmm__unlock(mem, &s->lock);
}

/* ---- queries ---------------------------------------------------------------------- */

void dmm_dma_debug_counts(struct dmm_mem *mem, uint64_t counts[DMM_NR_DBG_RULES])
{
	struct dbg_state *s;

	if (!counts)
		return;
	for (unsigned i = 0; i < DMM_NR_DBG_RULES; i++)
		counts[i] = 0;
	if (!mem || !(s = state(mem)))
		return;
	dmm__lock(mem, &s->lock);
	for (unsigned i = 0; i < DMM_NR_DBG_RULES; i++)
		counts[i] = s->counts[i];
	dmm__unlock(mem, &s->lock);
}

uint64_t dmm_dma_debug_total(struct dmm_mem *mem)
{
	uint64_t c[DMM_NR_DBG_RULES], t = 0;
	dmm_dma_debug_counts(mem, c);
	for (unsigned i = 0; i < DMM_NR_DBG_RULES; i++)
		t += c[i];
	return t;
}

size_t dmm_dma_debug_reports(struct dmm_mem *mem, struct dmm_dma_debug_report *out, size_t max)
{
	struct dbg_state *s;
	size_t n = 0;

	if (!mem || !out || !(s = state(mem)))
		return 0;
	dmm__lock(mem, &s->lock);
	for (unsigned i = s->ring_len > max ? s->ring_len - (unsigned)max : 0; i < s->ring_len; i++)
		out[n++] = s->ring[(s->ring_head + i) % DBG_RING];
	dmm__unlock(mem, &s->lock);
	return n;
}

void dmm_dma_debug_reset(struct dmm_mem *mem)
{
	struct dbg_state *s;

	if (!mem || !(s = state(mem)))
		return;
	dmm__lock(mem, &s->lock);
	dmm_memset(s->counts, 0, sizeof(s->counts));
	s->ring_len = 0;
	s->ring_head = 0;
	dmm_memset(s->recent, 0, sizeof(s->recent));
	dmm__unlock(mem, &s->lock);
}

uint64_t dmm_dma_debug_active(struct dmm_mem *mem, const struct dmm_device *dev)
{
	struct dbg_state *s;
	uint64_t n = 0;

	if (!mem || !(s = state(mem)))
		return 0;
	dmm__lock(mem, &s->lock);
	if (!dev) {
		n = s->active;
	} else {
		for (unsigned b = 0; b < DBG_BUCKETS; b++)
			for (struct dbg_entry *e = s->bucket[b]; e; e = e->next)
				n += e->dev == dev;
	}
	dmm__unlock(mem, &s->lock);
	return n;
}

void dmm_dma_debug_dump(struct dmm_mem *mem)
{
	struct dbg_state *s;

	if (!mem || !(s = state(mem)))
		return;
	dmm__lock(mem, &s->lock);
	dmm_log(mem, DMM_LOG_INFO, "dma-debug: %llu live mappings, %llu pool pages",
		(unsigned long long)s->active, (unsigned long long)s->pool_pages);
	for (unsigned b = 0; b < DBG_BUCKETS; b++)
		for (struct dbg_entry *e = s->bucket[b]; e; e = e->next)
			dmm_log(mem, DMM_LOG_INFO, "dma-debug:   %s %s dma %#llx phys %#llx size %llu %s%s from %p",
				e->dev->name,
				e->r.type == DMM__DBG_COHERENT ? "coherent" : e->r.type == DMM__DBG_SG ? "sg" : "single",
				(unsigned long long)e->r.dma, (unsigned long long)e->r.pa, (unsigned long long)e->r.size,
				dir_names[e->r.dir & 3], e->r.dev_owned ? " (device owns)" : "", e->r.site);
	for (unsigned i = 0; i < DMM_NR_DBG_RULES; i++)
		if (s->counts[i])
			dmm_log(mem, DMM_LOG_INFO, "dma-debug:   %-28s %llu", rule_names[i],
				(unsigned long long)s->counts[i]);
	dmm__unlock(mem, &s->lock);
}

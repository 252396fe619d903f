/* SPDX-License-Identifier: MIT */
/*
 * Hardware model: creation, the platform hook table, RAM, memory attributes,
 * statistics, the observer.
 *
 * The model wraps the hosted platform: the hosted code maps the machine's
 * RAM (one MAP_NORESERVE mapping over the physical span) and provides locks,
 * deferred work, time, logging and CPU ids; the model keeps a copy of that
 * hook table with ctx pointing at itself and replaces the four hooks that
 * touch the memory system (cache_maint, set_memattr, phys_fill, phys_copy)
 * and adds iotlb_inval (the optional IOMMU, iommu.c).
 *
 * Memory attributes are per page and sparse: a hash map (open addressing,
 * linear probing, backward-shift deletion) holds the pages that are not
 * write-back, so a machine whose memory is all WB pays one empty-map test per
 * page touched.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <dmamem/error.h>

#include "hw_internal.h"

#define HW_MAX_CPUS 1024u

/* ------------------------------------------------------------------------ */
/* Logging, CPU id, observer                                                 */

void hw_log(struct dmm_hw *hw, int level, const char *fmt, ...)
{
	va_list ap;

	if (!hw->hp->log)
		return;
	va_start(ap, fmt);
	hw->hp->log(hw->hp->ctx, level, fmt, ap);
	va_end(ap);
}

unsigned hw_cpu_id(struct dmm_hw *hw)
{
	return hw->hp->cpu_id ? hw->hp->cpu_id(hw->hp->ctx) : 0u;
}

void hw_notify(struct dmm_hw *hw, const struct dmm_hw_access *a)
{
	dmm_hw_observer_fn fn = hw->obs;

	if (fn)
		fn(hw->obs_ctx, a);
}

/**
 * dmm_hw_set_observer() - install (or with @fn NULL, remove) the access
 * observer. Not synchronised with accesses: call it while none is in flight.
 */
void dmm_hw_set_observer(struct dmm_hw *hw, dmm_hw_observer_fn fn, void *ctx)
{
	if (!hw)
		return;
	hw_lock(hw);
	hw->obs = fn;
	hw->obs_ctx = fn ? ctx : NULL;
	hw_unlock(hw);
}

/* ------------------------------------------------------------------------ */
/* Hosted hooks, forwarded                                                   */

static void hw_p_lock_init(void *ctx, struct dmm_lock *l)
{
	struct dmm_hw *hw = ctx;

	hw->hp->lock_init(hw->hp->ctx, l);
}

static void hw_p_lock_destroy(void *ctx, struct dmm_lock *l)
{
	struct dmm_hw *hw = ctx;

	if (hw->hp->lock_destroy)
		hw->hp->lock_destroy(hw->hp->ctx, l);
}

static void hw_p_lock(void *ctx, struct dmm_lock *l)
{
	struct dmm_hw *hw = ctx;

	hw->hp->lock(hw->hp->ctx, l);
}

static void hw_p_unlock(void *ctx, struct dmm_lock *l)
{
	struct dmm_hw *hw = ctx;

	hw->hp->unlock(hw->hp->ctx, l);
}

static int hw_p_defer(void *ctx, void (*fn)(void *arg), void *arg)
{
	struct dmm_hw *hw = ctx;

	return hw->hp->defer ? hw->hp->defer(hw->hp->ctx, fn, arg) : -DMM_ENOTSUP;
}

static int hw_p_defer_after(void *ctx, void (*fn)(void *arg), void *arg, uint64_t delay_ns)
{
	struct dmm_hw *hw = ctx;

	return hw->hp->defer_after ? hw->hp->defer_after(hw->hp->ctx, fn, arg, delay_ns) : -DMM_ENOTSUP;
}

/* The model keeps attributes per physical page (set_memattr): the alias
 * behaves as the pages do. */
static int hw_p_vmap(void *ctx, const dmm_phys_t *pages, size_t n, enum dmm_memattr attr, void **va)
{
	struct dmm_hw *hw = ctx;

	return hw->hp->vmap(hw->hp->ctx, pages, n, attr, va);
}

static void hw_p_vunmap(void *ctx, void *va, size_t n)
{
	struct dmm_hw *hw = ctx;

	hw->hp->vunmap(hw->hp->ctx, va, n);
}

static void hw_p_defer_flush(void *ctx)
{
	struct dmm_hw *hw = ctx;

	if (hw->hp->defer_flush)
		hw->hp->defer_flush(hw->hp->ctx);
}

static uint64_t hw_p_now_ns(void *ctx)
{
	struct dmm_hw *hw = ctx;

	return hw->hp->now_ns ? hw->hp->now_ns(hw->hp->ctx) : 0u;
}

static void hw_p_log(void *ctx, int level, const char *fmt, va_list ap)
{
	struct dmm_hw *hw = ctx;

	if (hw->hp->log)
		hw->hp->log(hw->hp->ctx, level, fmt, ap);
}

static void hw_p_panic(void *ctx, const char *msg)
{
	struct dmm_hw *hw = ctx;

	if (hw->hp->panic)
		hw->hp->panic(hw->hp->ctx, msg);
	abort();
}

static int hw_p_virt_to_phys(void *ctx, const void *va, dmm_phys_t *pa)
{
	return dmm_hw_virt_to_phys((const struct dmm_hw *)ctx, va, pa) ? -DMM_ERANGE : 0;
}

static void *hw_p_phys_to_virt(void *ctx, dmm_phys_t pa)
{
	struct dmm_hw *hw = ctx;

	return hw->hp->phys_to_virt(hw->hp->ctx, pa);
}

static unsigned hw_p_cpu_id(void *ctx)
{
	return hw_cpu_id(ctx);
}

static void hw_p_cache_maint(void *ctx, enum dmm_cache_op op, dmm_phys_t pa, size_t len)
{
	(void)dmm_hw_cache_maint(ctx, op, pa, len);
}

static int hw_p_set_memattr(void *ctx, dmm_phys_t pa, size_t len, enum dmm_memattr attr)
{
	return dmm_hw_set_memattr(ctx, pa, len, attr);
}

static void hw_p_iotlb_inval(void *ctx, uint32_t domain_id, uint64_t iova, uint64_t size)
{
	dmm_hw_iommu_invalidate(ctx, domain_id, iova, size);
}

/* ------------------------------------------------------------------------ */
/* RAM                                                                       */

/* Index of the RAM extent holding @pa, or -1. */
static int ram_index(const struct dmm_hw *hw, dmm_phys_t pa)
{
	for (unsigned i = 0; i < hw->nr_ram; i++) {
		if (pa < hw->ram[i].start)
			return -1;
		if (pa < hw->ram[i].end)
			return (int)i;
	}
	return -1;
}

bool hw_is_ram(const struct dmm_hw *hw, dmm_phys_t pa, uint64_t len)
{
	int i = ram_index(hw, pa);

	if (i < 0)
		return false;
	return len <= hw->ram[i].end - pa;
}

uint64_t hw_ram_run(const struct dmm_hw *hw, dmm_phys_t pa)
{
	int i = ram_index(hw, pa);

	return i < 0 ? 0u : hw->ram[i].end - pa;
}

unsigned char *hw_ram_ptr(const struct dmm_hw *hw, dmm_phys_t pa)
{
	return (unsigned char *)(hw->v0 + (uintptr_t)(pa - hw->p0));
}

/* Copy the machine's RAM regions sorted, merging adjacent ones. */
static void hw_sort_ram(struct dmm_hw *hw, const struct dmm_machine *m)
{
	struct hw_ram r[DMM_MAX_REGIONS];
	unsigned n = 0;

	for (unsigned i = 0; i < m->nr_ram; i++) {
		struct hw_ram x = { m->ram[i].base, m->ram[i].base + m->ram[i].size };
		unsigned j = n++;

		while (j > 0 && r[j - 1].start > x.start) {
			r[j] = r[j - 1];
			j--;
		}
		r[j] = x;
	}
	hw->nr_ram = 0;
	for (unsigned i = 0; i < n; i++) {
		if (hw->nr_ram && hw->ram[hw->nr_ram - 1].end == r[i].start)
			hw->ram[hw->nr_ram - 1].end = r[i].end;
		else
			hw->ram[hw->nr_ram++] = r[i];
	}
}

int dmm_hw_is_ram(const struct dmm_hw *hw, dmm_phys_t pa, uint64_t len)
{
	return hw && hw_is_ram(hw, pa, len) ? 1 : 0;
}

/** dmm_hw_ram_read() - what RAM holds at [pa, pa + len), cache ignored. */
int dmm_hw_ram_read(struct dmm_hw *hw, dmm_phys_t pa, void *buf, size_t len)
{
	if (!hw || (!buf && len))
		return -DMM_EINVAL;
	if (!len)
		return 0;
	if (!hw_is_ram(hw, pa, len))
		return -DMM_EFAULT;
	hw_lock(hw);
	memmove(buf, hw_ram_ptr(hw, pa), len);
	hw_unlock(hw);
	return 0;
}

/** dmm_hw_ram_write() - store into RAM directly; cached lines are untouched. */
int dmm_hw_ram_write(struct dmm_hw *hw, dmm_phys_t pa, const void *buf, size_t len)
{
	if (!hw || (!buf && len))
		return -DMM_EINVAL;
	if (!len)
		return 0;
	if (!hw_is_ram(hw, pa, len))
		return -DMM_EFAULT;
	hw_lock(hw);
	memmove(hw_ram_ptr(hw, pa), buf, len);
	hw_unlock(hw);
	return 0;
}

int dmm_hw_virt_to_phys(const struct dmm_hw *hw, const void *va, dmm_phys_t *pa)
{
	uintptr_t a = (uintptr_t)va;
	dmm_phys_t p;

	if (!hw || !pa)
		return -DMM_EINVAL;
	p = hw->p0 + (dmm_phys_t)(a - hw->v0);
	if (a < hw->v0 || p < hw->p0 || !hw_is_ram(hw, p, 1)) {
		/* a second mapping of RAM pages (vmap) */
		if (hw->hp->virt_to_phys && hw->hp->virt_to_phys(hw->hp->ctx, va, &p) == 0 && hw_is_ram(hw, p, 1)) {
			*pa = p;
			return 0;
		}
		return -DMM_EFAULT;
	}
	*pa = p;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Memory attributes: sparse map pfn -> WC/UC                                */

static inline size_t attr_home(const struct dmm_hw *hw, uint64_t key)
{
	return (size_t)((key * 0x9e3779b97f4a7c15ull) >> 17) & (hw->attr_cap - 1);
}

static struct hw_attr_ent *attr_find(const struct dmm_hw *hw, dmm_pfn_t pfn)
{
	uint64_t key = pfn + 1;
	size_t i;

	if (!hw->attr_used)
		return NULL;
	for (i = attr_home(hw, key); hw->attr[i].key; i = (i + 1) & (hw->attr_cap - 1))
		if (hw->attr[i].key == key)
			return &hw->attr[i];
	return NULL;
}

enum dmm_memattr hw_attr_locked(const struct dmm_hw *hw, dmm_pfn_t pfn)
{
	const struct hw_attr_ent *e = attr_find(hw, pfn);

	return e ? (enum dmm_memattr)e->attr : DMM_MEMATTR_WB;
}

/* Insert or update; capacity must have been reserved. Returns 1 if new. */
static int attr_put(struct dmm_hw *hw, dmm_pfn_t pfn, uint8_t attr)
{
	uint64_t key = pfn + 1;
	size_t i;

	for (i = attr_home(hw, key); hw->attr[i].key; i = (i + 1) & (hw->attr_cap - 1)) {
		if (hw->attr[i].key == key) {
			hw->attr[i].attr = attr;
			return 0;
		}
	}
	hw->attr[i].key = key;
	hw->attr[i].attr = attr;
	hw->attr_used++;
	return 1;
}

/* Remove with backward shift (no tombstones). Returns 1 if it was present. */
static int attr_del(struct dmm_hw *hw, dmm_pfn_t pfn)
{
	struct hw_attr_ent *e = attr_find(hw, pfn);
	size_t mask = hw->attr_cap - 1, i, j;

	if (!e)
		return 0;
	i = (size_t)(e - hw->attr);
	hw->attr[i].key = 0;
	for (j = (i + 1) & mask; hw->attr[j].key; j = (j + 1) & mask) {
		size_t k = attr_home(hw, hw->attr[j].key);
		/* Entry j may move to the hole at i unless its home lies
		 * cyclically in (i, j]. */
		bool stays = i <= j ? (k > i && k <= j) : (k > i || k <= j);

		if (!stays) {
			hw->attr[i] = hw->attr[j];
			hw->attr[j].key = 0;
			i = j;
		}
	}
	hw->attr_used--;
	return 1;
}

/* Make room for @more entries at <= 50% load. 0 or -DMM_ENOMEM. */
static int attr_reserve(struct dmm_hw *hw, uint64_t more)
{
	uint64_t need = hw->attr_used + more;
	size_t cap = hw->attr_cap ? hw->attr_cap : 64;
	struct hw_attr_ent *old = hw->attr, *n;
	size_t old_cap = hw->attr_cap;

	if (need > (uint64_t)SIZE_MAX / 4)
		return -DMM_ENOMEM;
	if (hw->attr_cap && need * 2 <= hw->attr_cap)
		return 0;
	while ((uint64_t)cap < need * 2)
		cap *= 2;
	n = calloc(cap, sizeof(*n));
	if (!n)
		return -DMM_ENOMEM;
	hw->attr = n;
	hw->attr_cap = cap;
	hw->attr_used = 0;
	for (size_t i = 0; i < old_cap; i++)
		if (old[i].key)
			attr_put(hw, old[i].key - 1, old[i].attr);
	free(old);
	return 0;
}

/**
 * dmm_hw_set_memattr() - change the attribute of the pages overlapping
 * [pa, pa + len). Cached lines of those pages stay where they are: the
 * caller is expected to have flushed them (they are counted in
 * memattr_cached_lines, and any dirty one may later be written back over
 * what a device put in RAM). Context: any; takes the model's lock.
 */
int dmm_hw_set_memattr(struct dmm_hw *hw, dmm_phys_t pa, size_t len, enum dmm_memattr attr)
{
	dmm_pfn_t first, last;
	uint64_t npages;
	int err;

	if (!hw || (unsigned)attr > (unsigned)DMM_MEMATTR_UC)
		return -DMM_EINVAL;
	if (!len)
		return 0;
	if (!hw_is_ram(hw, pa, len))
		return -DMM_EINVAL;
	first = pa >> DMM_PAGE_SHIFT;
	last = (pa + len - 1) >> DMM_PAGE_SHIFT;
	npages = last - first + 1;

	hw_lock(hw);
	if (attr != DMM_MEMATTR_WB) {
		err = attr_reserve(hw, npages);
		if (err) {
			hw_unlock(hw);
			return err;
		}
		for (dmm_pfn_t p = first; p <= last; p++)
			attr_put(hw, p, (uint8_t)attr);
		hw->st.memattr_cached_lines +=
			hw_lines_cached_locked(hw, first << DMM_PAGE_SHIFT, npages << DMM_PAGE_SHIFT);
	} else if (hw->attr_used) {
		for (dmm_pfn_t p = first; p <= last; p++)
			attr_del(hw, p);
	}
	hw->st.memattr_changes++;
	hw->st.memattr_pages += npages;
	hw_unlock(hw);
	return 0;
}

enum dmm_memattr dmm_hw_memattr(struct dmm_hw *hw, dmm_phys_t pa)
{
	enum dmm_memattr a;

	if (!hw)
		return DMM_MEMATTR_WB;
	hw_lock(hw);
	a = hw_attr_locked(hw, pa >> DMM_PAGE_SHIFT);
	hw_unlock(hw);
	return a;
}

/* ------------------------------------------------------------------------ */
/* Creation                                                                  */

void dmm_hw_opts_default(struct dmm_hw_opts *o)
{
	if (!o)
		return;
	memset(o, 0, sizeof(*o));
	o->log_level = DMM_LOG_WARN;
	o->prefetch_distance = 8;
}

/**
 * dmm_hw_create() - see hw.h. The cache line size is the machine's
 * cache_line; lines larger than a page are refused (-DMM_EINVAL).
 */
int dmm_hw_create(const struct dmm_machine *m, const struct dmm_hw_opts *o, struct dmm_hw **out)
{
	struct dmm_hw_opts def;
	struct dmm_hw *hw;
	int err;

	if (out)
		*out = NULL;
	if (!o) {
		dmm_hw_opts_default(&def);
		o = &def;
	}
	if (!m || !out || dmm_machine_validate(m) != 0 || o->nr_cpus > HW_MAX_CPUS ||
	    m->cache_line > DMM_PAGE_SIZE || m->cache_line < 8)
		return -DMM_EINVAL;

	hw = calloc(1, sizeof(*hw));
	if (!hw)
		return -DMM_ENOMEM;
	hw->m = *m;
	hw->opts = *o;
	if (!hw->opts.prefetch_distance)
		hw->opts.prefetch_distance = 8;
	hw->line = m->cache_line;
	hw_sort_ram(hw, m);

	err = dmm_hosted_create(m, o->nr_cpus, o->log_level, &hw->hosted);
	if (err) {
		free(hw);
		return err;
	}
	hw->hp = dmm_hosted_platform(hw->hosted);
	hw->p0 = hw->ram[0].start;
	hw->v0 = (uintptr_t)hw->hp->phys_to_virt(hw->hp->ctx, hw->p0);
	if (!hw->v0) {
		err = -DMM_EFAULT;
		goto out_hosted;
	}
	if (pthread_mutex_init(&hw->lock, NULL) != 0) {
		err = -DMM_ENOMEM;
		goto out_hosted;
	}
	err = hw_cache_init(hw);
	if (err)
		goto out_mutex;

	hw->plat = (struct dmm_platform){
		.ctx = hw,
		.lock_init = hw_p_lock_init,
		.lock_destroy = hw_p_lock_destroy,
		.lock = hw_p_lock,
		.unlock = hw_p_unlock,
		.defer = hw_p_defer,
		.defer_after = hw->hp->defer_after ? hw_p_defer_after : NULL,
		.defer_flush = hw_p_defer_flush,
		.now_ns = hw_p_now_ns,
		.log = hw_p_log,
		.panic = hw_p_panic,
		.phys_to_virt = hw_p_phys_to_virt,
		.virt_to_phys = hw_p_virt_to_phys,
		.cache_maint = hw_p_cache_maint,
		.set_memattr = hw_p_set_memattr,
		.cpu_id = hw_p_cpu_id,
		.vmap = hw->hp->vmap ? hw_p_vmap : NULL,
		.vunmap = hw->hp->vunmap ? hw_p_vunmap : NULL,
		.iotlb_inval = hw_p_iotlb_inval,
		.nr_cpus = hw->hp->nr_cpus,
	};
	hw_platform_cache_hooks(&hw->plat);
	*out = hw;
	return 0;

out_mutex:
	pthread_mutex_destroy(&hw->lock);
out_hosted:
	dmm_hosted_destroy(hw->hosted);
	free(hw);
	return err;
}

void dmm_hw_destroy(struct dmm_hw *hw)
{
	if (!hw)
		return;
	hw_devs_destroy_all(hw);
	hw_iommu_fini(hw);
	hw_cache_fini(hw);
	free(hw->attr);
	pthread_mutex_destroy(&hw->lock);
	dmm_hosted_destroy(hw->hosted);
	free(hw);
}

const struct dmm_platform *dmm_hw_platform(struct dmm_hw *hw)
{
	return hw ? &hw->plat : NULL;
}

struct dmm_hosted *dmm_hw_hosted(struct dmm_hw *hw)
{
	return hw ? hw->hosted : NULL;
}

const struct dmm_machine *dmm_hw_machine(const struct dmm_hw *hw)
{
	return hw ? &hw->m : NULL;
}

uint32_t dmm_hw_line_size(const struct dmm_hw *hw)
{
	return hw ? hw->line : 0u;
}

/**
 * dmm_hw_mem_create() - the model plus a memory map on its platform. The
 * library's metadata is written through phys_to_virt (raw RAM), its page
 * zeroing and migration copies through phys_fill/phys_copy (the cache).
 */
int dmm_hw_mem_create(const struct dmm_machine *m, const struct dmm_hw_opts *o,
		      struct dmm_hw **hw, struct dmm_mem **mem)
{
	struct dmm_hw *h;
	int err;

	if (hw)
		*hw = NULL;
	if (mem)
		*mem = NULL;
	if (!m || !hw || !mem)
		return -DMM_EINVAL;
	err = dmm_hw_create(m, o, &h);
	if (err)
		return err;
	err = dmm_mem_create(m, &h->plat, mem);
	if (err) {
		*mem = NULL;
		dmm_hw_destroy(h);
		return err;
	}
	*hw = h;
	return 0;
}

void dmm_hw_mem_destroy(struct dmm_hw *hw, struct dmm_mem *mem)
{
	if (hw)
		hw_p_defer_flush(hw);
	if (mem)
		dmm_mem_destroy(mem);
	dmm_hw_destroy(hw);
}

/* ------------------------------------------------------------------------ */
/* Statistics and checking                                                   */

void dmm_hw_get_stats(struct dmm_hw *hw, struct dmm_hw_stats *st)
{
	if (!hw || !st)
		return;
	hw_lock(hw);
	*st = hw->st;
	st->lines = hw->nr_lines;
	st->dirty = hw->nr_dirty;
	st->nc_pages = hw->attr_used;
	hw_unlock(hw);
}

void dmm_hw_reset_stats(struct dmm_hw *hw)
{
	if (!hw)
		return;
	hw_lock(hw);
	memset(&hw->st, 0, sizeof(hw->st));
	hw->st.peak_lines = hw->nr_lines;
	hw_unlock(hw);
}

static int attr_check_locked(struct dmm_hw *hw)
{
	size_t used = 0;

	if (hw->attr_cap & (hw->attr_cap - 1)) {
		hw_log(hw, DMM_LOG_ERR, "hw: attribute map capacity %zu not a power of two",
		       hw->attr_cap);
		return -DMM_EFAULT;
	}
	for (size_t i = 0; i < hw->attr_cap; i++) {
		const struct hw_attr_ent *e = &hw->attr[i];

		if (!e->key)
			continue;
		used++;
		if (e->attr == DMM_MEMATTR_WB || e->attr > DMM_MEMATTR_UC ||
		    attr_find(hw, e->key - 1) != e) {
			hw_log(hw, DMM_LOG_ERR, "hw: attribute entry for pfn %#llx is bad",
			       (unsigned long long)(e->key - 1));
			return -DMM_EFAULT;
		}
	}
	if (used != hw->attr_used || (hw->attr_cap && used * 2 > hw->attr_cap)) {
		hw_log(hw, DMM_LOG_ERR, "hw: attribute map holds %zu entries, counted %zu", used,
		       hw->attr_used);
		return -DMM_EFAULT;
	}
	return 0;
}

int dmm_hw_check(struct dmm_hw *hw)
{
	int err;

	if (!hw)
		return -DMM_EINVAL;
	hw_lock(hw);
	err = hw_cache_check_locked(hw);
	if (!err)
		err = attr_check_locked(hw);
	hw_unlock(hw);
	if (!err)
		err = hw_iommu_check(hw); /* its own lock, never under hw->lock */
	return err;
}

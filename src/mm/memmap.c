/* SPDX-License-Identifier: MIT */
/*
 * Physical memory map: sections, page frame descriptors, zone spans, and the
 * placement of all allocator metadata inside the managed RAM.
 *
 * Layout. The physical address space is cut into sections of 2^15 pages
 * (128 MiB, as SPARSEMEM does). A section that holds at least one page of RAM
 * gets an array of 2^15 descriptors; the rest get none, so holes cost one
 * pointer per 128 MiB. pfn -> descriptor is two loads:
 *
 *     sections[pfn >> 15 - sec_base] + (pfn & 0x7fff)
 *
 * Metadata placement (an early boot allocator's job): everything the
 * allocators need (struct dmm_mem, the section table, the descriptor arrays,
 * per-CPU caches, range-index bitmaps and trees) is sized first, then carved
 * from the top of the highest RAM region that can hold it, and those pages
 * are marked reserved:
 *
 *   region end ->  +----------------------------+
 *                  | range index trees/bitmaps  |
 *                  | per-CPU caches             |
 *                  | descriptor arrays          |  metadata pages (reserved)
 *                  | section table              |
 *   meta_base  ->  | struct dmm_mem             |
 *                  +----------------------------+
 *                  | managed pages ...          |
 *
 * Zone spans follow Linux's definition: a zone type's address limits
 * clipped to the node span [lowest RAM pfn, highest RAM pfn + 1), so a zone
 * may span holes; "present" counts its RAM pages, "managed" those given to
 * the buddy allocator.
 */
#include <stdarg.h>

#include "mm/mm_internal.h"

void dmm_assert_fail(const struct dmm_mem *mem, const char *expr, const char *file, int line)
{
	if (mem) {
		dmm_log(mem, DMM_LOG_ERR, "assertion failed: %s (%s:%d)", expr, file, line);
		if (mem->plat.panic)
			mem->plat.panic(mem->plat.ctx, expr);
	}
	__builtin_trap();
}

void dmm_log(const struct dmm_mem *mem, int level, const char *fmt, ...)
{
	va_list ap;

	if (!mem || !mem->plat.log)
		return;
	va_start(ap, fmt);
	mem->plat.log(mem->plat.ctx, level, fmt, ap);
	va_end(ap);
}

/* ---- metadata carving ---------------------------------------------------- */

struct carve {
	uint8_t *base; /* NULL while sizing */
	uint64_t off;
};

/* Carve @size bytes; zeroed unless the caller initialises every byte itself. */
static void *carve_raw(struct carve *c, uint64_t size, uint64_t align, bool zero)
{
	void *p;

	c->off = dmm_align_up(c->off, align);
	p = c->base ? c->base + c->off : (void *)0;
	if (p && zero)
		dmm_memset(p, 0, size);
	c->off += size;
	return p;
}

static void *carve(struct carve *c, uint64_t size, uint64_t align)
{
	return carve_raw(c, size, align, true);
}

/* ---- zone geometry --------------------------------------------------------- */

static void type_limits(const struct dmm_machine *m, enum dmm_zone_type t, dmm_pfn_t *lo,
			dmm_pfn_t *hi)
{
	dmm_pfn_t dma = m->dma_limit >> DMM_PAGE_SHIFT;
	dmm_pfn_t dma32 = m->dma32_limit >> DMM_PAGE_SHIFT;

	switch (t) {
	case DMM_ZONE_DMA:
		*lo = 0;
		*hi = dma;
		break;
	case DMM_ZONE_DMA32:
		*lo = dma;
		*hi = dma32 > dma ? dma32 : dma;
		break;
	default:
		*lo = dma32 > dma ? dma32 : dma;
		*hi = ~(dmm_pfn_t)0;
		break;
	}
}

static void region_pfns(const struct dmm_region *r, dmm_pfn_t *s, dmm_pfn_t *e)
{
	*s = dmm_align_up(r->base, DMM_PAGE_SIZE) >> DMM_PAGE_SHIFT;
	*e = dmm_align_down(r->base + r->size, DMM_PAGE_SIZE) >> DMM_PAGE_SHIFT;
	if (*e < *s)
		*e = *s;
}

bool dmm__is_ram_span(const struct dmm_mem *mem, dmm_pfn_t first, dmm_pfn_t last)
{
	const struct dmm_machine *m = &mem->machine;

	for (unsigned i = 0; i < m->nr_ram; i++) {
		dmm_pfn_t s, e;
		region_pfns(&m->ram[i], &s, &e);
		if (first >= s && last < e)
			return true;
	}
	for (dmm_pfn_t p = first;; p++) {
		const struct dmm_page *pg = dmm__pfn_page(mem, p);
		if (!pg || (__atomic_load_n(&pg->flags, __ATOMIC_RELAXED) & DMM_PGF_NORAM))
			return false;
		if (p == last)
			return true;
	}
}

/* RAM pages of @m inside [lo, hi). */
uint64_t dmm__ram_pages_in(const struct dmm_machine *m, dmm_pfn_t lo, dmm_pfn_t hi)
{
	uint64_t n = 0;
	for (unsigned i = 0; i < m->nr_ram; i++) {
		dmm_pfn_t s, e;
		region_pfns(&m->ram[i], &s, &e);
		s = dmm_max64(s, lo);
		e = dmm_min64(e, hi);
		if (e > s)
			n += e - s;
	}
	return n;
}

static bool section_has_ram(const struct dmm_machine *m, uint64_t sec)
{
	dmm_pfn_t lo = sec << DMM_SECTION_SHIFT;
	return dmm__ram_pages_in(m, lo, lo + DMM_SECTION_PAGES) != 0;
}

static void compute_geometry(struct dmm_mem *g)
{
	const struct dmm_machine *m = &g->machine;

	g->min_pfn = ~(dmm_pfn_t)0;
	g->max_pfn = 0;
	for (unsigned i = 0; i < m->nr_ram; i++) {
		dmm_pfn_t s, e;
		region_pfns(&m->ram[i], &s, &e);
		if (e == s)
			continue;
		g->min_pfn = dmm_min64(g->min_pfn, s);
		g->max_pfn = dmm_max64(g->max_pfn, e);
	}
	g->ram_pages = dmm__ram_pages_in(m, 0, ~(dmm_pfn_t)0);
	g->sec_base = g->min_pfn >> DMM_SECTION_SHIFT;
	g->nr_sections = ((g->max_pfn - 1) >> DMM_SECTION_SHIFT) - g->sec_base + 1;

	g->nr_zones = 0;
	for (int t = 0; t < DMM_NR_ZONE_TYPES; t++) {
		dmm_pfn_t lo, hi;
		struct dmm_zone *z;

		g->zone_of_type[t] = -1;
		type_limits(m, (enum dmm_zone_type)t, &lo, &hi);
		lo = dmm_max64(lo, g->min_pfn);
		hi = dmm_min64(hi, g->max_pfn);
		if (hi <= lo || dmm__ram_pages_in(m, lo, hi) == 0)
			continue;
		z = &g->zones[g->nr_zones];
		z->type = (enum dmm_zone_type)t;
		z->idx = g->nr_zones;
		z->start_pfn = lo;
		z->end_pfn = hi;
		z->present = dmm__ram_pages_in(m, lo, hi);
		g->zone_of_type[t] = (int)g->nr_zones;
		g->nr_zones++;
	}
}

/* Carve (or size, when c->base is NULL) every piece of metadata. */
static struct dmm_mem *carve_all(struct carve *c, const struct dmm_mem *g)
{
	struct dmm_mem *mem = carve(c, sizeof(*mem), DMM_CACHELINE);
	struct dmm_page **sections;

	if (mem)
		*mem = *g;
	sections = carve(c, g->nr_sections * sizeof(*sections), 8);
	if (mem)
		mem->sections = sections;
	for (uint64_t s = 0; s < g->nr_sections; s++) {
		struct dmm_page *arr = (struct dmm_page *)0;
		if (section_has_ram(&g->machine, g->sec_base + s))
			arr = carve_raw(c, DMM_SECTION_PAGES * sizeof(struct dmm_page), DMM_CACHELINE,
					false); /* init_descriptors writes every one */
		if (mem)
			sections[s] = arr;
	}
	for (unsigned i = 0; i < g->nr_zones; i++) {
		const struct dmm_zone *gz = &g->zones[i];
		uint64_t nw, nl;
		struct dmm_pcp *pcp = carve(c, g->plat.nr_cpus * sizeof(struct dmm_pcp), DMM_CACHELINE);
		void *words, *tree;

		dmm__rt_meta_words(gz->start_pfn, gz->end_pfn, &nw, &nl);
		words = carve(c, nw * sizeof(uint64_t), DMM_CACHELINE);
		tree = carve(c, 2 * nl * sizeof(struct dmm_rt_node), DMM_CACHELINE);
		if (mem) {
			mem->zones[i].pcp = pcp;
			mem->zones[i].mem = mem;
			dmm__rt_setup(&mem->zones[i].rt, gz->start_pfn, gz->end_pfn, words, tree);
		}
	}
	{
		struct dmm_cpu_slot *cs = carve(c, g->plat.nr_cpus * sizeof(*cs), DMM_CACHELINE);
		struct dmm_cpu_thread *ct = (struct dmm_cpu_thread *)0;
		if (g->plat.cpu_thread_slots) /* threads mode only */
			ct = carve(c, DMM_CPU_NR_THREADS * sizeof(*ct), DMM_CACHELINE);
		if (mem) {
			mem->cpu_slots = cs;
			mem->cpu_threads = ct;
		}
	}
	{
		void *slab = carve(c, dmm__slab_meta_size(g->plat.nr_cpus), DMM_CACHELINE);
		uint64_t map_pages = dmm__slab_map_pages(g);
		uint8_t *map = map_pages ? carve(c, map_pages, DMM_CACHELINE) : (uint8_t *)0;
		if (mem) {
			mem->slab = slab; /* dmm__slab_init() fills it once locks can be made */
			mem->slab_map = map;
			mem->slab_map_span = map_pages << DMM_PAGE_SHIFT;
			mem->slab_map_phys = dmm_align_down(g->plat.linear_phys, DMM_PAGE_SIZE << DMM_SLAB_MAX_ORDER);
			mem->slab_map_virt = (uintptr_t)g->plat.linear_virt - (uintptr_t)(g->plat.linear_phys - mem->slab_map_phys);
		}
	}
	{
		/* the devices' bounce tags in use (device.c): tag 0 is none's */
		uint64_t *tags = carve(c, DMM_DEV_TAGS / 8, DMM_CACHELINE);
		if (mem) {
			mem->dev_tags = tags;
			tags[0] = 1;
		}
	}
	if (g->machine.nr_cma) {
		struct dmm_cma_area *areas =
			carve(c, g->machine.nr_cma * sizeof(struct dmm_cma_area), DMM_CACHELINE);
		if (mem) {
			mem->cma = areas;
			mem->nr_cma = g->machine.nr_cma;
		}
		for (unsigned i = 0; i < g->machine.nr_cma; i++) {
			uint64_t pages = dmm__cma_decl_pages(&g->machine.cma[i]);
			uint64_t *bitmap = carve(c, dmm_align_up(pages, 64) / 8, 8);
			if (mem) {
				areas[i].bitmap = bitmap;
				areas[i].count = pages;
			}
		}
	}
	return mem;
}

/* Highest region with room for @bytes at its top; returns the base or 0. */
static bool place_metadata(const struct dmm_machine *m, uint64_t bytes, dmm_phys_t *out)
{
	bool found = false;
	dmm_phys_t best = 0;
	uint64_t pages = dmm_align_up(bytes, DMM_PAGE_SIZE) >> DMM_PAGE_SHIFT;

	for (unsigned i = 0; i < m->nr_ram; i++) {
		dmm_pfn_t s, e;
		region_pfns(&m->ram[i], &s, &e);
		if (e - s < pages + 1) /* leave at least one page to manage */
			continue;
		if (!found || ((e - pages) << DMM_PAGE_SHIFT) > best) {
			best = (e - pages) << DMM_PAGE_SHIFT;
			found = true;
		}
	}
	*out = best;
	return found;
}

static void mark_reserved(struct dmm_mem *mem, dmm_pfn_t s, dmm_pfn_t e)
{
	for (dmm_pfn_t p = s; p < e; p++) {
		struct dmm_page *pg = dmm__pfn_page(mem, p);
		if (pg && !(pg->flags & DMM_PGF_NORAM))
			pg->state = DMM_PAGE_RESERVED;
	}
}

/*
 * Descriptors of [p, e) available as one array slice: returns the slice for
 * p and stores in *n how many pages it covers (to e or the section's end);
 * NULL (with *n pages to skip) where the section has no descriptors.
 */
static struct dmm_page *slice(struct dmm_mem *mem, dmm_pfn_t p, dmm_pfn_t e, uint64_t *n)
{
	uint64_t off = p & (DMM_SECTION_PAGES - 1);
	uint64_t sec = (p >> DMM_SECTION_SHIFT) - mem->sec_base;

	*n = dmm_min64(e - p, DMM_SECTION_PAGES - off);
	if (sec >= mem->nr_sections || !mem->sections[sec])
		return (struct dmm_page *)0;
	return &mem->sections[sec][off];
}

/* One write per descriptor for holes, one more for RAM: no lookups per page. */
static void init_descriptors(struct dmm_mem *mem)
{
	const struct dmm_machine *m = &mem->machine;

	for (uint64_t s = 0; s < mem->nr_sections; s++) {
		struct dmm_page *arr = mem->sections[s];
		dmm_pfn_t base = (mem->sec_base + s) << DMM_SECTION_SHIFT;
		if (!arr)
			continue;
		for (uint64_t i = 0; i < DMM_SECTION_PAGES; i++) {
			struct dmm_page hole = { .pfn = base + i, .state = DMM_PAGE_RESERVED,
						 .flags = DMM_PGF_NORAM, .zone = DMM_ZONE_NONE,
						 .pb_mt = DMM_MT_MOVABLE };
			arr[i] = hole;
		}
	}
	/* RAM pages: not yet free (TAIL), in their zone. */
	for (unsigned i = 0; i < m->nr_ram; i++) {
		dmm_pfn_t s, e;
		region_pfns(&m->ram[i], &s, &e);
		for (unsigned zi = 0; zi < mem->nr_zones; zi++) {
			const struct dmm_zone *z = &mem->zones[zi];
			dmm_pfn_t p = dmm_max64(s, z->start_pfn), end = dmm_min64(e, z->end_pfn);
			while (p < end) {
				uint64_t n;
				struct dmm_page *pg = slice(mem, p, end, &n);
				for (uint64_t k = 0; k < n; k++) {
					pg[k].state = DMM_PAGE_TAIL;
					pg[k].flags = 0;
					pg[k].zone = (uint8_t)zi;
				}
				p += n;
			}
		}
	}
	/* Firmware reservations and our own metadata. */
	for (unsigned i = 0; i < m->nr_reserved; i++) {
		dmm_pfn_t s = m->reserved[i].base >> DMM_PAGE_SHIFT;
		dmm_pfn_t e = dmm_align_up(m->reserved[i].base + m->reserved[i].size, DMM_PAGE_SIZE) >>
			      DMM_PAGE_SHIFT;
		mark_reserved(mem, s, e);
	}
	mark_reserved(mem, mem->meta_base >> DMM_PAGE_SHIFT,
		      (mem->meta_base >> DMM_PAGE_SHIFT) + mem->meta_pages);
}

/* Put the run [p, run) of a zone on the free lists as maximal blocks. */
static void release_run(struct dmm_mem *mem, struct dmm_zone *z, dmm_pfn_t p, dmm_pfn_t run)
{
	z->managed += run - p;
	while (p < run) {
		unsigned order = p ? dmm_ctz64(p) : DMM_MAX_ORDER;
		if (order > DMM_MAX_ORDER)
			order = DMM_MAX_ORDER;
		while (((uint64_t)1 << order) > run - p)
			order--;
		/* Blocks above a pageblock never span two types. */
		if (order > DMM_PAGEBLOCK_ORDER &&
		    dmm__pageblock_head(mem, p)->pb_mt !=
			    dmm__pageblock_head(mem, p + DMM_PAGEBLOCK_PAGES)->pb_mt)
			order = DMM_PAGEBLOCK_ORDER;
		dmm__init_free_block(z, p, order);
		p += (uint64_t)1 << order;
	}
}

/* Hand every unreserved RAM page to the buddy lists as maximal blocks. */
static void release_free_pages(struct dmm_mem *mem)
{
	mem->managed_pages = 0;
	for (unsigned i = 0; i < mem->nr_zones; i++) {
		struct dmm_zone *z = &mem->zones[i];
		dmm_pfn_t p = z->start_pfn, run_start = 0;
		bool in_run = false;

		z->managed = 0;
		while (p < z->end_pfn) {
			uint64_t n;
			struct dmm_page *pg = slice(mem, p, z->end_pfn, &n);
			for (uint64_t k = 0; k < n; k++) {
				bool avail = pg && pg[k].state == DMM_PAGE_TAIL;
				if (avail && !in_run) {
					run_start = p + k;
					in_run = true;
				} else if (!avail && in_run) {
					release_run(mem, z, run_start, p + k);
					in_run = false;
				}
			}
			p += n;
		}
		if (in_run)
			release_run(mem, z, run_start, z->end_pfn);
		mem->managed_pages += z->managed;
		dmm__rt_build(&z->rt);
	}
	mem->reserved_pages = mem->ram_pages - mem->managed_pages;
}

int dmm_mem_create(const struct dmm_machine *m, const struct dmm_platform *p, struct dmm_mem **out)
{
	struct dmm_mem g; /* geometry and sizing scratch (a few KiB of stack, once) */
	struct carve c = { 0, 0 };
	struct dmm_mem *mem;
	uint8_t *virt;
	uint64_t t0;
	int err;

	if (!out || dmm_machine_validate(m) || dmm_platform_validate(p))
		return -DMM_EINVAL;
	dmm_memset(&g, 0, sizeof(g));
	g.machine = *m;
	g.plat = *p;
	t0 = g.plat.now_ns ? g.plat.now_ns(g.plat.ctx) : 0;
	compute_geometry(&g);

	carve_all(&c, &g);
	g.meta_bytes = c.off;
	g.meta_pages = dmm_align_up(c.off, DMM_PAGE_SIZE) >> DMM_PAGE_SHIFT;
	if (!place_metadata(m, g.meta_bytes, &g.meta_base)) {
		dmm_log(&g, DMM_LOG_ERR, "memmap: %llu bytes of metadata fit in no RAM region",
			(unsigned long long)g.meta_bytes);
		return -DMM_ENOMEM;
	}
	virt = p->phys_to_virt(p->ctx, g.meta_base);
	if (!virt || p->phys_to_virt(p->ctx, g.meta_base + g.meta_bytes - 1) !=
			     virt + g.meta_bytes - 1) {
		dmm_log(&g, DMM_LOG_ERR, "memmap: phys_to_virt is not linear over the metadata");
		return -DMM_EINVAL;
	}
	c.base = virt;
	c.off = 0;
	mem = carve_all(&c, &g);

	init_descriptors(mem);
	err = dmm__cma_place(mem);
	if (err)
		return err;
	release_free_pages(mem);
	dmm__zones_init_watermarks(mem);
	dmm__pcp_init(mem);
	for (unsigned i = 0; i < mem->nr_zones; i++)
		mem->plat.lock_init(mem->plat.ctx, &mem->zones[i].lock);
	for (unsigned i = 0; i < mem->nr_cma; i++)
		mem->plat.lock_init(mem->plat.ctx, &mem->cma[i].lock);
	dmm__cpu_init(mem);
	dmm__slab_init(mem, mem->slab);
	/* the vector loop only where the host allows vector registers (not a
	 * kernel) and the copies are the core's own (no phys_copy hook) */
	mem->copy_wide = mem->plat.vector_copy && !mem->plat.phys_copy && dmm__cpu_copy_wide();
	mem->init_ns = (mem->plat.now_ns ? mem->plat.now_ns(mem->plat.ctx) : 0) - t0;
	*out = mem;
	return 0;
}

void dmm_mem_destroy(struct dmm_mem *mem)
{
	if (!mem || !mem->plat.lock_destroy)
		return;
	for (unsigned i = 0; i < mem->nr_zones; i++) {
		struct dmm_zone *z = &mem->zones[i];
		for (unsigned c = 0; c < mem->plat.nr_cpus; c++)
			mem->plat.lock_destroy(mem->plat.ctx, &z->pcp[c].lock);
		mem->plat.lock_destroy(mem->plat.ctx, &z->lock);
	}
	for (unsigned i = 0; i < mem->nr_cma; i++)
		mem->plat.lock_destroy(mem->plat.ctx, &mem->cma[i].lock);
	dmm__cpu_fini(mem);
}

void dmm_mem_get_info(const struct dmm_mem *mem, struct dmm_mem_info *info)
{
	if (!mem || !info)
		return;
	dmm_memset(info, 0, sizeof(*info));
	info->ram_pages = mem->ram_pages;
	info->managed_pages = mem->managed_pages;
	info->reserved_pages = mem->reserved_pages;
	info->metadata_bytes = mem->meta_bytes;
	info->metadata_pages = mem->meta_pages;
	info->cpu_sections = mem->cpu_mode == DMM_CPU_HOOKS ? "hooks" : mem->cpu_mode == DMM_CPU_THREADS ? "threads" : "locks";
	info->bulk_copy = mem->copy_wide ? "avx2" : "memcpy";
	info->cpu_slow_enters = __atomic_load_n(&mem->cpu_slow_enters, __ATOMIC_RELAXED);
	info->cpu_syncs = __atomic_load_n(&mem->cpu_syncs, __ATOMIC_RELAXED);
	info->page_desc_size = (uint32_t)sizeof(struct dmm_page);
	info->nr_zones = mem->nr_zones;
	info->nr_cpus = mem->plat.nr_cpus;
	info->init_ns = mem->init_ns;
	info->min_pfn = mem->min_pfn;
	info->max_pfn = mem->max_pfn;
	info->fail_invalid = __atomic_load_n(&mem->fail_invalid, __ATOMIC_RELAXED);
	info->fail_range = __atomic_load_n(&mem->fail_range, __ATOMIC_RELAXED);
	info->slab_map_bytes = mem->slab_map_span >> DMM_PAGE_SHIFT;
}

const struct dmm_machine *dmm_mem_machine(const struct dmm_mem *mem)
{
	return mem ? &mem->machine : (const struct dmm_machine *)0;
}

const struct dmm_platform *dmm_mem_platform(const struct dmm_mem *mem)
{
	return mem ? &mem->plat : (const struct dmm_platform *)0;
}

struct dmm_page *dmm_pfn_to_page(struct dmm_mem *mem, dmm_pfn_t pfn)
{
	struct dmm_page *pg;

	if (!mem)
		return (struct dmm_page *)0;
	pg = dmm__pfn_page(mem, pfn);
	if (!pg || (__atomic_load_n(&pg->flags, __ATOMIC_RELAXED) & DMM_PGF_NORAM))
		return (struct dmm_page *)0;
	return pg;
}

void *dmm_pfn_to_virt(struct dmm_mem *mem, dmm_pfn_t pfn)
{
	if (!dmm_pfn_to_page(mem, pfn))
		return (void *)0;
	return mem->plat.phys_to_virt(mem->plat.ctx, dmm_pfn_to_phys(pfn));
}

void dmm__zero_pages(struct dmm_mem *mem, dmm_pfn_t pfn, uint64_t nr)
{
	for (uint64_t i = 0; i < nr; i++) {
		void *v;
		if (mem->plat.phys_fill) {
			mem->plat.phys_fill(mem->plat.ctx, dmm_pfn_to_phys(pfn + i), 0, DMM_PAGE_SIZE);
			continue;
		}
		v = mem->plat.phys_to_virt(mem->plat.ctx, dmm_pfn_to_phys(pfn + i));
		if (v)
			dmm_memset(v, 0, DMM_PAGE_SIZE);
	}
}

void dmm__meta_zero(struct dmm_mem *mem, dmm_pfn_t pfn, uint64_t nr)
{
	if (mem->plat.cache_maint)
		mem->plat.cache_maint(mem->plat.ctx, DMM_CACHE_FLUSH, dmm_pfn_to_phys(pfn), nr * DMM_PAGE_SIZE);
	for (uint64_t i = 0; i < nr; i++) {
		void *v = mem->plat.phys_to_virt(mem->plat.ctx, dmm_pfn_to_phys(pfn + i));
		if (v)
			dmm_memset(v, 0, DMM_PAGE_SIZE);
	}
}

int dmm__meta_alloc(struct dmm_mem *mem, uint64_t pages, unsigned gfp, dmm_pfn_t *pfn, void **va)
{
	struct dmm_constraint any = DMM_CONSTRAINT_ANY;
	int err = dmm__lib_alloc_range(mem, &any, pages, gfp, pfn);

	if (err)
		return err;
	dmm__meta_zero(mem, *pfn, pages);
	*va = mem->plat.phys_to_virt(mem->plat.ctx, dmm_pfn_to_phys(*pfn));
	return 0;
}

void dmm__phys_fill(struct dmm_mem *mem, dmm_phys_t pa, int c, size_t len)
{
	if (mem->plat.phys_fill) {
		mem->plat.phys_fill(mem->plat.ctx, pa, c, len);
		return;
	}
	while (len) {
		size_t chunk = (size_t)dmm_min64(len, DMM_PAGE_SIZE - (pa & (DMM_PAGE_SIZE - 1)));
		void *v = mem->plat.phys_to_virt(mem->plat.ctx, pa);
		if (v)
			dmm_memset(v, c, chunk);
		pa += chunk;
		len -= chunk;
	}
}

_Static_assert(sizeof(struct dmm_page) <= 64, "page descriptor must stay within 64 bytes");

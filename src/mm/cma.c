/* SPDX-License-Identifier: MIT */
/*
 * Contiguous memory areas.
 *
 * Placement. Areas are declared in the machine description and placed while
 * the memory map is built, before the free lists exist: a fixed base is
 * honoured as given; otherwise the highest pageblock-aligned run of
 * unreserved RAM below the area's limit that lies in one zone is taken
 * (top-down, as memblock does). Every pageblock of an area gets migratetype
 * CMA, so its free pages serve movable allocations only.
 *
 *   area:   |CMA pb|CMA pb|CMA pb|CMA pb|CMA pb|CMA pb|
 *   bitmap:  000000 011110 000000 000000 ...        1 = handed out / claiming
 *
 * Allocation (dmm_cma_alloc):
 *   1. reserve a free, aligned run of bits in the area's bitmap (area lock,
 *      so two allocations never pick overlapping ranges);
 *   2. isolate the pageblocks covering the range (a pageblock shared with a
 *      concurrent allocation is found isolated already: that candidate is
 *      abandoned, nothing waits on anything, so nothing can deadlock);
 *   3. drain the per-CPU caches; migrate every movable page of the range out
 *      (short-term pins retried), stopping at the first page that cannot
 *      move (long-term pinned, unmovable, refused, no target);
 *   4. take the range out of the buddy lists; restore the pageblocks;
 *   5. for a non-coherent device's uncached buffer, change the linear
 *      mapping's attribute through the platform hook (undone on release).
 * On failure the bits are cleared and the next candidate starts past the
 * page that failed; at most DMM_CMA_MAX_TRIES candidates are examined.
 */
#include "mm/mm_internal.h"

#define DMM_CMA_MAX_TRIES 16

static const char *const fail_names[DMM_NR_CMA_FAILS] = {
	"no-space", "pinned", "busy", "unmovable", "no-target", "refused", "attr",
};

const char *dmm_cma_fail_name(enum dmm_cma_fail f)
{
	return (unsigned)f < DMM_NR_CMA_FAILS ? fail_names[f] : "?";
}

uint64_t dmm__cma_decl_pages(const struct dmm_cma_decl *d)
{
	return dmm_align_up(d->size, DMM_PAGEBLOCK_PAGES * DMM_PAGE_SIZE) >> DMM_PAGE_SHIFT;
}

/* ---- placement ------------------------------------------------------------------ */

/* Can [s, s + n) become an area: unreserved RAM, one zone, no other area? */
static bool placeable(struct dmm_mem *mem, dmm_pfn_t s, uint64_t n)
{
	uint8_t zone = DMM_ZONE_NONE;

	for (dmm_pfn_t p = s; p < s + n; p++) {
		struct dmm_page *pg = dmm__pfn_page(mem, p);
		if (!pg || (pg->flags & DMM_PGF_NORAM) || dmm__state(pg) != DMM_PAGE_TAIL || pg->cma)
			return false;
		if (p == s)
			zone = pg->zone;
		else if (pg->zone != zone)
			return false;
	}
	return zone != DMM_ZONE_NONE;
}

static bool find_placement(struct dmm_mem *mem, const struct dmm_cma_decl *d, uint64_t n,
			   dmm_pfn_t *out)
{
	const struct dmm_machine *m = &mem->machine;
	uint64_t align = dmm_max64(d->align, DMM_PAGEBLOCK_PAGES * DMM_PAGE_SIZE) >> DMM_PAGE_SHIFT;
	dmm_pfn_t limit = d->limit ? d->limit >> DMM_PAGE_SHIFT : ~(dmm_pfn_t)0;
	bool found = false;
	dmm_pfn_t best = 0;

	for (unsigned i = 0; i < m->nr_ram; i++) {
		dmm_pfn_t rs = dmm_align_up(m->ram[i].base, DMM_PAGE_SIZE) >> DMM_PAGE_SHIFT;
		dmm_pfn_t re = dmm_min64(dmm_align_down(m->ram[i].base + m->ram[i].size, DMM_PAGE_SIZE) >>
						 DMM_PAGE_SHIFT,
					 limit);
		dmm_pfn_t s;

		if (re < rs + n)
			continue;
		/* top-down: the highest candidate in this region that fits */
		for (s = dmm_align_down(re - n, align); s >= rs; s -= align) {
			if (found && s <= best)
				break;
			if (placeable(mem, s, n)) {
				best = s;
				found = true;
				break;
			}
			if (s < align)
				break;
		}
	}
	*out = best;
	return found;
}

int dmm__cma_place(struct dmm_mem *mem)
{
	for (unsigned i = 0; i < mem->nr_cma; i++) {
		const struct dmm_cma_decl *d = &mem->machine.cma[i];
		struct dmm_cma_area *a = &mem->cma[i];
		uint64_t n = a->count;
		dmm_pfn_t s;

		if (d->base) {
			s = d->base >> DMM_PAGE_SHIFT;
			if (!placeable(mem, s, n)) {
				dmm_log(mem, DMM_LOG_ERR, "cma: area %s at %#llx is not free RAM in one zone",
					d->name, (unsigned long long)d->base);
				return -DMM_EINVAL;
			}
		} else if (!find_placement(mem, d, n, &s)) {
			if (d->limit)
				dmm_log(mem, DMM_LOG_ERR, "cma: no room for area %s (%llu MiB below %#llx)",
					d->name, (unsigned long long)(n >> (20 - DMM_PAGE_SHIFT)),
					(unsigned long long)d->limit);
			else
				dmm_log(mem, DMM_LOG_ERR, "cma: no room for area %s (%llu MiB anywhere)", d->name,
					(unsigned long long)(n >> (20 - DMM_PAGE_SHIFT)));
			return -DMM_ENOMEM;
		}
		a->mem = mem;
		a->idx = i;
		dmm_memcpy(a->name, d->name, DMM_CMA_NAME_MAX);
		a->is_default = d->is_default;
		a->base = s;
		a->zone = &mem->zones[dmm__pfn_page(mem, s)->zone];
		for (dmm_pfn_t p = s; p < s + n; p++)
			dmm__pfn_page(mem, p)->cma = (uint8_t)(i + 1);
		for (dmm_pfn_t p = s; p < s + n; p += DMM_PAGEBLOCK_PAGES)
			dmm__pageblock_head(mem, p)->pb_mt = DMM_MT_CMA;
	}
	return 0;
}

/* ---- queries ------------------------------------------------------------------------ */

unsigned dmm_cma_count(const struct dmm_mem *mem)
{
	return mem ? mem->nr_cma : 0;
}

int dmm_cma_find(const struct dmm_mem *mem, const char *name)
{
	if (!mem || !name)
		return -DMM_EINVAL;
	for (unsigned i = 0; i < mem->nr_cma; i++) {
		const char *x = mem->cma[i].name, *y = name;
		while (*x && *x == *y) {
			x++;
			y++;
		}
		if (*x == *y)
			return (int)i;
	}
	return -DMM_ENOENT;
}

int dmm_cma_default(const struct dmm_mem *mem)
{
	if (!mem || !mem->nr_cma)
		return -DMM_ENOENT;
	for (unsigned i = 0; i < mem->nr_cma; i++)
		if (mem->cma[i].is_default)
			return (int)i;
	return 0;
}

/* ---- latency histogram: 4 buckets per power of two ------------------------------- */

static unsigned lat_bucket(uint64_t ns)
{
	unsigned e, b;
	if (ns < 4)
		return (unsigned)ns;
	e = dmm_ilog2(ns);
	b = 4 * (e - 1) + (unsigned)((ns >> (e - 2)) & 3);
	return b < DMM_CMA_LAT_BUCKETS ? b : DMM_CMA_LAT_BUCKETS - 1;
}

uint64_t dmm_cma_latency_bucket_ns(unsigned i)
{
	unsigned e;
	if (i < 4)
		return i;
	if (i >= DMM_CMA_LAT_BUCKETS)
		i = DMM_CMA_LAT_BUCKETS - 1;
	e = i / 4 + 1;
	if (e >= 63)
		return ~(uint64_t)0;
	/* bucket holds [ (4 + m) << (e - 2), (5 + m) << (e - 2) ) */
	return (((uint64_t)(4 + i % 4) + 1) << (e - 2)) - 1;
}

static uint64_t hist_percentile(const uint64_t *h, uint64_t count, unsigned pct)
{
	uint64_t want, seen = 0;
	if (!count)
		return 0;
	want = (count * pct + 99) / 100;
	for (unsigned i = 0; i < DMM_CMA_LAT_BUCKETS; i++) {
		seen += h[i];
		if (seen >= want)
			return dmm_cma_latency_bucket_ns(i);
	}
	return dmm_cma_latency_bucket_ns(DMM_CMA_LAT_BUCKETS - 1);
}

/* ---- bitmap -------------------------------------------------------------------------- */

static inline bool bit_test(const uint64_t *b, uint64_t i)
{
	return (b[i / 64] >> (i % 64)) & 1;
}

static void bits_set(uint64_t *b, uint64_t s, uint64_t n, bool v)
{
	for (uint64_t i = s; i < s + n; i++) {
		if (v)
			b[i / 64] |= (uint64_t)1 << (i % 64);
		else
			b[i / 64] &= ~((uint64_t)1 << (i % 64));
	}
}

/* First offset >= from where n clear bits start at an aligned pfn. */
static bool bits_find(const struct dmm_cma_area *a, uint64_t from, uint64_t n, uint64_t align,
		      uint64_t *out)
{
	uint64_t off = dmm_align_up(a->base + from, align) - a->base;

	while (off + n <= a->count) {
		uint64_t i;
		for (i = 0; i < n && !bit_test(a->bitmap, off + i); i++)
			;
		if (i == n) {
			*out = off;
			return true;
		}
		off = dmm_align_up(a->base + off + i + 1, align) - a->base;
	}
	return false;
}

/* ---- claiming a range ------------------------------------------------------------------ */

static enum dmm_cma_fail reason_to_fail(enum dmm_migrate_reason r)
{
	switch (r) {
	case DMM_MIGRATE_PINNED:
		return DMM_CMA_FAIL_PINNED;
	case DMM_MIGRATE_BUSY:
		return DMM_CMA_FAIL_BUSY;
	case DMM_MIGRATE_NO_TARGET:
		return DMM_CMA_FAIL_NO_TARGET;
	case DMM_MIGRATE_REFUSED:
		return DMM_CMA_FAIL_REFUSED;
	default:
		return DMM_CMA_FAIL_UNMOVABLE;
	}
}

/* Pages of [s, s + n) that lie in free buddy blocks (zone lock held). */
static uint64_t free_pages_in(struct dmm_zone *z, dmm_pfn_t s, uint64_t n)
{
	uint64_t free = 0;

	for (dmm_pfn_t p = s; p < s + n;) {
		struct dmm_page *h = dmm__free_head_of(z, p);
		dmm_pfn_t end;
		if (!h) {
			p++;
			continue;
		}
		end = dmm_min64(h->pfn + ((uint64_t)1 << dmm__order(h)), s + n);
		free += end - p;
		p = end;
	}
	return free;
}

/*
 * Isolate, empty and take [s, s + n). Returns 0, or a negative code with
 * *fail and *bad (the page that stopped it) set.
 */
static int claim_range(struct dmm_cma_area *a, dmm_pfn_t s, uint64_t n, uint64_t *migrated,
		       enum dmm_cma_fail *fail, dmm_pfn_t *bad)
{
	struct dmm_mem *mem = a->mem;
	struct dmm_zone *z = a->zone;
	enum dmm_migrate_reason why = DMM_MIGRATE_MOVED;
	int err;

	*bad = s;
	err = dmm__isolate_range(mem, s, s + n);
	if (err) {
		*fail = DMM_CMA_FAIL_BUSY;
		return -DMM_EAGAIN;
	}
	for (int pass = 0; pass < 3; pass++) {
		struct dmm_migrate_report rep;
		uint64_t left;

		dmm_memset(&rep, 0, sizeof(rep));
		dmm__drain_zone_pcp(z);
		left = dmm__migrate_pages_in(mem, s, s + n, 0, true, &rep, bad, &why);
		*migrated += rep.moved;
		if (left && why != DMM_MIGRATE_BUSY)
			break;
		dmm__lock(mem, &z->lock);
		if (!left && free_pages_in(z, s, n) == n) {
			struct dmm_page *head;
			dmm__take_range_locked(z, s, n);
			head = dmm__pfn_page(mem, s);
			dmm__set_state(head, DMM_PAGE_RANGE);
			dmm__set_order(head, 0);
			dmm__set_mt(head, DMM_MT_MOVABLE);
			head->private = n;
			head->refcount = 1;
			/* pin counts left alone, as mark_allocated (page_alloc.c) */
			head->owner = a;
			dmm__unlock(mem, &z->lock);
			dmm__unisolate_range(mem, s, s + n);
			return 0;
		}
		dmm__unlock(mem, &z->lock);
		why = DMM_MIGRATE_BUSY;
	}
	dmm__unisolate_range(mem, s, s + n);
	*fail = reason_to_fail(why);
	return *fail == DMM_CMA_FAIL_NO_TARGET ? -DMM_ENOMEM
	       : *fail == DMM_CMA_FAIL_BUSY     ? -DMM_EAGAIN
						: -DMM_EBUSY;
}

int dmm_cma_alloc(struct dmm_mem *mem, int area, size_t nr_pages, uint64_t align, unsigned flags,
		  dmm_pfn_t *pfn, enum dmm_cma_fail *why)
{
	struct dmm_cma_area *a;
	uint64_t t0, align_pages, from = 0, migrated = 0, tries = 0;
	enum dmm_cma_fail fail = DMM_CMA_FAIL_NOSPACE;
	int err = -DMM_ENOMEM;

	if (!mem || !pfn || area < 0 || (unsigned)area >= mem->nr_cma || nr_pages == 0 ||
	    (align && !dmm_is_pow2(align)) || (flags & ~DMM_CMA_ALL))
		return dmm__count_invalid(mem);
	a = &mem->cma[area];
	if (nr_pages > a->count)
		return dmm__count_invalid(mem);
	align_pages = dmm_max64(1, align >> DMM_PAGE_SHIFT);
	t0 = dmm__now(mem);

	for (;;) {
		uint64_t off;
		dmm_pfn_t s, bad;

		dmm__lock(mem, &a->lock);
		if (tries >= DMM_CMA_MAX_TRIES || !bits_find(a, from, nr_pages, align_pages, &off)) {
			dmm__unlock(mem, &a->lock);
			break;
		}
		bits_set(a->bitmap, off, nr_pages, true);
		a->used += nr_pages;
		a->claims++;
		dmm__unlock(mem, &a->lock);

		s = a->base + off;
		tries++;
		err = claim_range(a, s, nr_pages, &migrated, &fail, &bad);
		if (!err && (flags & DMM_CMA_UNCACHED) && mem->plat.set_memattr) {
			int r;
			/* no line of the range's cacheable past may stay cached
			 * (a dirty one would later be written back over RAM) */
			if (mem->plat.cache_maint)
				mem->plat.cache_maint(mem->plat.ctx, DMM_CACHE_FLUSH, dmm_pfn_to_phys(s),
						      nr_pages * DMM_PAGE_SIZE);
			r = mem->plat.set_memattr(mem->plat.ctx, dmm_pfn_to_phys(s),
						      nr_pages * DMM_PAGE_SIZE, DMM_MEMATTR_UC);
			if (r) {
				struct dmm_page *head = dmm__pfn_page(mem, s);

				/* the hook may have changed part of the range before
				 * failing: back to write-back before the pages are free */
				mem->plat.set_memattr(mem->plat.ctx, dmm_pfn_to_phys(s),
						      nr_pages * DMM_PAGE_SIZE, DMM_MEMATTR_WB);
				head->owner = (void *)0;
				dmm__lock(mem, &a->zone->lock);
				dmm__set_state(head, DMM_PAGE_TAIL);
				head->private = 0;
				head->refcount = 0;
				dmm__give_range_locked(a->zone, s, nr_pages);
				dmm__unlock(mem, &a->zone->lock);
				dmm__wmark_after_free(a->zone);
				err = r < 0 ? r : -r;
				fail = DMM_CMA_FAIL_ATTR;
			}
		}
		if (!err) {
			struct dmm_page *head = dmm__pfn_page(mem, s);
			uint64_t dt = dmm__now(mem) - t0;

			if (flags & DMM_CMA_UNCACHED)
				head->flags |= DMM_PGF_UNCACHED;
			if (flags & DMM_CMA_ZERO)
				dmm__zero_pages(mem, s, nr_pages);
			dmm__lock(mem, &a->lock);
			a->claims--;
			a->st.allocs_tried++;
			a->st.allocs_ok++;
			a->st.ranges_tried += tries;
			a->st.pages_migrated += migrated;
			if (flags & DMM_CMA_UNCACHED)
				a->st.pages_remapped += nr_pages;
			a->st.lat_count++;
			a->st.lat_sum_ns += dt;
			if (dt > a->st.lat_max_ns)
				a->st.lat_max_ns = dt;
			a->st.lat_hist[lat_bucket(dt)]++;
			dmm__unlock(mem, &a->lock);
			*pfn = s;
			if (why)
				*why = DMM_CMA_FAIL_NOSPACE;
			return 0;
		}
		dmm__lock(mem, &a->lock);
		bits_set(a->bitmap, off, nr_pages, false);
		a->used -= nr_pages;
		a->claims--;
		dmm__unlock(mem, &a->lock);
		if ((flags & DMM_CMA_NORETRY) || fail == DMM_CMA_FAIL_ATTR)
			break;
		/* next candidate: past the page that stopped this one */
		from = (bad >= s && bad < s + nr_pages ? bad : s) + 1 - a->base;
	}
	if (tries == 0) {
		fail = DMM_CMA_FAIL_NOSPACE;
		err = -DMM_ENOMEM;
	}
	dmm__lock(mem, &a->lock);
	a->st.allocs_tried++;
	a->st.ranges_tried += tries;
	a->st.pages_migrated += migrated;
	a->st.fail[fail]++;
	dmm__unlock(mem, &a->lock);
	if (why)
		*why = fail;
	return err;
}

/* A refused release, counted as a rejected free of the area's zone. */
static int bad_release(struct dmm_cma_area *a, int err)
{
	__atomic_fetch_add(&a->zone->stats.bad_free, 1, __ATOMIC_RELAXED);
	return err;
}

int dmm_cma_release(struct dmm_mem *mem, int area, dmm_pfn_t pfn, size_t nr_pages)
{
	struct dmm_cma_area *a;
	struct dmm_page *head;
	bool uncached;
	int err;

	if (!mem || area < 0 || (unsigned)area >= mem->nr_cma || nr_pages == 0)
		return dmm__count_invalid(mem);
	a = &mem->cma[area];
	if (pfn < a->base || pfn >= a->base + a->count)
		return bad_release(a, -DMM_ENOENT);
	head = dmm__pfn_page(mem, pfn);
	dmm__lock(mem, &a->lock);
	if (dmm__state(head) != DMM_PAGE_RANGE || head->owner != a) {
		dmm__unlock(mem, &a->lock);
		return bad_release(a, -DMM_ENOENT);
	}
	if (head->private != nr_pages) {
		dmm__unlock(mem, &a->lock);
		return bad_release(a, -DMM_EINVAL);
	}
	if (__atomic_load_n(&head->flags, __ATOMIC_RELAXED) & DMM_PGF_COHERENT) {
		/* a coherent DMA buffer (dmm_dma_free_coherent) */
		dmm__unlock(mem, &a->lock);
		return bad_release(a, -DMM_EBUSY);
	}
	if ((err = dmm__free_claim(head, DMM_PAGE_RANGE)) != 0) { /* -DMM_EBUSY: pinned */
		dmm__unlock(mem, &a->lock);
		return bad_release(a, err);
	}
	uncached = head->flags & DMM_PGF_UNCACHED;
	if (uncached && mem->plat.set_memattr) {
		/* write-back again while the range is still this release's
		 * (claimed: no pin, release or allocation can touch it), not
		 * after it is free: by then its next owner may have made it
		 * uncached for itself. The hook runs with no lock held, as at
		 * allocation. */
		a->releasing++;
		dmm__unlock(mem, &a->lock);
		mem->plat.set_memattr(mem->plat.ctx, dmm_pfn_to_phys(pfn), nr_pages * DMM_PAGE_SIZE,
				      DMM_MEMATTR_WB);
		dmm__lock(mem, &a->lock);
		a->releasing--;
	}
	head->flags &= (uint8_t)~DMM_PGF_UNCACHED;
	head->owner = (void *)0;
	dmm__lock(mem, &a->zone->lock);
	dmm__set_state(head, DMM_PAGE_TAIL);
	head->private = 0;
	head->refcount = 0;
	dmm__give_range_locked(a->zone, pfn, nr_pages);
	dmm__unlock(mem, &a->zone->lock);
	bits_set(a->bitmap, pfn - a->base, nr_pages, false);
	a->used -= nr_pages;
	a->st.releases++;
	if (uncached)
		a->st.pages_remapped += nr_pages;
	dmm__unlock(mem, &a->lock);
	dmm__wmark_after_free(a->zone);
	return 0;
}

int dmm_cma_get_info(struct dmm_mem *mem, int area, struct dmm_cma_info *info)
{
	struct dmm_cma_area *a;
	uint64_t free = 0;

	if (!mem || !info || area < 0 || (unsigned)area >= mem->nr_cma)
		return -DMM_EINVAL;
	a = &mem->cma[area];
	dmm__lock(mem, &a->zone->lock);
	free = free_pages_in(a->zone, a->base, a->count);
	dmm__unlock(mem, &a->zone->lock);
	dmm__lock(mem, &a->lock);
	*info = a->st;
	info->name = a->name;
	info->base_pfn = a->base;
	info->nr_pages = a->count;
	info->used_pages = a->used;
	info->free_pages = free;
	info->lent_pages = a->count >= a->used + free ? a->count - a->used - free : 0;
	info->is_default = dmm_cma_default(mem) == area;
	info->lat_p50_ns = hist_percentile(a->st.lat_hist, a->st.lat_count, 50);
	info->lat_p99_ns = hist_percentile(a->st.lat_hist, a->st.lat_count, 99);
	dmm__unlock(mem, &a->lock);
	return 0;
}

int dmm_cma_check(struct dmm_mem *mem)
{
	int err = 0;

	if (!mem)
		return -DMM_EINVAL;
	for (unsigned i = 0; i < mem->nr_cma && !err; i++) {
		struct dmm_cma_area *a = &mem->cma[i];
		uint64_t bits = 0, handed = 0;

		dmm__lock(mem, &a->lock);
		for (uint64_t k = 0; k < a->count; k++)
			bits += bit_test(a->bitmap, k) ? 1 : 0;
		if (bits != a->used) {
			dmm_log(mem, DMM_LOG_ERR, "cma check: area %s bitmap has %llu bits, used %llu", a->name,
				(unsigned long long)bits, (unsigned long long)a->used);
			err = -DMM_EFAULT;
		}
		for (dmm_pfn_t p = a->base; p < a->base + a->count && !err; p++) {
			struct dmm_page *pg = dmm__pfn_page(mem, p);
			unsigned pb = dmm__pageblock_mt(mem, p);
			if (pg->cma != i + 1 || (pb != DMM_MT_CMA && !(pb == DMM_MT_ISOLATE && a->claims))) {
				dmm_log(mem, DMM_LOG_ERR, "cma check: area %s page %llu cma %u pageblock %s", a->name,
					(unsigned long long)p, pg->cma, dmm_migratetype_name((enum dmm_migratetype)pb));
				err = -DMM_EFAULT;
				break;
			}
			if (dmm__state(pg) == DMM_PAGE_RANGE && pg->owner == a) {
				for (uint64_t k = 0; k < pg->private; k++)
					if (!bit_test(a->bitmap, p - a->base + k)) {
						dmm_log(mem, DMM_LOG_ERR, "cma check: area %s range %llu not in bitmap",
							a->name, (unsigned long long)p);
						err = -DMM_EFAULT;
						break;
					}
				handed += pg->private;
			}
		}
		/* (a release between its claim and the give-back holds bits
		 * for a range no longer handed out) */
		if (!err && (a->claims || a->releasing ? handed > a->used : handed != a->used)) {
			dmm_log(mem, DMM_LOG_ERR, "cma check: area %s hands out %llu pages, bitmap says %llu", a->name,
				(unsigned long long)handed, (unsigned long long)a->used);
			err = -DMM_EFAULT;
		}
		dmm__unlock(mem, &a->lock);
	}
	return err;
}

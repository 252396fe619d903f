/* SPDX-License-Identifier: MIT */
/*
 * Movable pages, migration and pinning.
 *
 * Protocol for moving one page P owned by a movable owner O:
 *
 *   1. claim    set MIGRATING on P (atomic); fail BUSY if already set, then
 *               check P's pins (a pinner increments first and checks
 *               MIGRATING second, so one of the two always sees the other;
 *               it checks P's state third, and a free claims P by moving
 *               its state to FREEING before it checks the pins, so no pin
 *               lands on a page being freed either)
 *   2. isolate  O->isolate(P): O stops using P and keeps it alive, or refuses
 *   3. target   allocate T (movable, outside isolated pageblocks; NOCMA for
 *               long-term pins), never from a per-CPU cache
 *   4. copy     the library copies P's bytes to T and T inherits O and P's
 *               private word
 *   5. migrate  O->migrate(P, T): O switches its references to T, or refuses
 *               (then T is freed and O->putback(P) restores the status quo)
 *   6. free P   P goes back to the buddy lists (an isolated pageblock keeps
 *               it off the allocatable lists); P stays claimed until the
 *               free clears MIGRATING, so no pin lands on P once the pin
 *               check of step 1 passed
 *
 * dmm_migrate_range() isolates the pageblocks covering the range first, so
 * no new allocation lands there while it empties it; the contiguous-area
 * allocator does the same and then takes the range.
 */
#include "mm/mm_internal.h"

#define BUSY_RETRIES 8

static const char *const reason_names[DMM_NR_MIGRATE_REASONS] = {
	"moved", "pinned", "busy", "unmovable", "no-target", "refused",
};

const char *dmm_migrate_reason_name(enum dmm_migrate_reason r)
{
	return (unsigned)r < DMM_NR_MIGRATE_REASONS ? reason_names[r] : "?";
}

static inline void stat_add(uint64_t *c, uint64_t v)
{
	__atomic_fetch_add(c, v, __ATOMIC_RELAXED);
}

static inline uint8_t page_state(const struct dmm_page *pg)
{
	return dmm__state(pg);
}

int dmm_page_alloc_movable(struct dmm_mem *mem, const struct dmm_movable_owner *owner,
			   unsigned flags, dmm_pfn_t *pfn)
{
	const unsigned allowed = DMM_GFP_ATOMIC | DMM_GFP_ZERO | DMM_GFP_NOCMA | DMM_GFP_NOCACHE;
	dmm_pfn_t p;
	int err;

	if (!mem || !pfn || !owner || !owner->ops || !owner->ops->isolate || !owner->ops->migrate ||
	    !owner->ops->putback || (flags & ~allowed))
		return dmm__count_invalid(mem);
	err = dmm__page_alloc_owned(mem, 0, (const struct dmm_constraint *)0, flags | DMM_GFP_MOVABLE,
				    owner, &p);
	if (err)
		return err;
	*pfn = p;
	return 0;
}

enum dmm_migrate_reason dmm__migrate_one(struct dmm_mem *mem, dmm_pfn_t pfn, unsigned gfp,
					 dmm_pfn_t *new_pfn)
{
	struct dmm_page *pg = dmm__pfn_page(mem, pfn), *npg;
	const struct dmm_movable_owner *owner;
	enum dmm_migrate_reason why = DMM_MIGRATE_MOVED;
	dmm_pfn_t t;
	uint8_t old;

	stat_add(&mem->mstats.attempted, 1);
	if (!pg || page_state(pg) != DMM_PAGE_ALLOC ||
	    !(__atomic_load_n(&pg->flags, __ATOMIC_ACQUIRE) & DMM_PGF_MOVABLE)) {
		why = DMM_MIGRATE_UNMOVABLE;
		goto out;
	}
	old = __atomic_fetch_or(&pg->flags, (uint8_t)DMM_PGF_MIGRATING, __ATOMIC_SEQ_CST);
	if (old & DMM_PGF_MIGRATING) {
		why = DMM_MIGRATE_BUSY;
		goto out;
	}
	if (!(old & DMM_PGF_MOVABLE)) {
		/* freed and allocated again, unmovable, since the check above */
		why = DMM_MIGRATE_UNMOVABLE;
		goto unclaim;
	}
	if (__atomic_load_n(&pg->lt_pins, __ATOMIC_SEQ_CST)) {
		why = DMM_MIGRATE_PINNED;
		goto unclaim;
	}
	if (__atomic_load_n(&pg->pins, __ATOMIC_SEQ_CST)) {
		why = DMM_MIGRATE_BUSY;
		goto unclaim;
	}
	/* Freed since the check above? (free clears the owner first) */
	owner = (const struct dmm_movable_owner *)dmm__owner(pg);
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	if (!(__atomic_load_n(&pg->flags, __ATOMIC_SEQ_CST) & DMM_PGF_MIGRATING)) {
		/* freed since the claim (the free cleared it): the owner read
		 * above may be the next user's, a slab cache or nothing */
		why = DMM_MIGRATE_BUSY;
		goto out;
	}
	if (!owner || page_state(pg) != DMM_PAGE_ALLOC) {
		why = DMM_MIGRATE_BUSY; /* being freed: transient */
		goto unclaim;
	}
	{
		int r = owner->ops->isolate(owner->ctx, mem, pfn);
		if (r) {
			uint8_t now;

			/* A free that has claimed the page (FREEING) has not
			 * decided yet: it gives the page back (clearing MIGRATING
			 * first) or finds a pin and puts it back to ALLOC, our
			 * claim still on it. It holds no lock that waits for us:
			 * wait for its decision. */
			while ((now = page_state(pg)) == DMM_PAGE_FREEING)
				__asm__ __volatile__("" ::: "memory");
			/* An owner refuses a page it no longer owns. If the page
			 * was freed since the claim (a free clears MIGRATING and
			 * the owner), that is no refusal: there is nothing left to
			 * move, and the caller's next look finds the page free.
			 * The claim went with the free: a MIGRATING flag seen now
			 * is someone else's. */
			if (now != DMM_PAGE_ALLOC || dmm__owner(pg) != owner ||
			    !(__atomic_load_n(&pg->flags, __ATOMIC_SEQ_CST) & DMM_PGF_MIGRATING)) {
				why = DMM_MIGRATE_BUSY;
				goto out;
			}
			why = r == -DMM_EAGAIN ? DMM_MIGRATE_BUSY : DMM_MIGRATE_REFUSED;
			goto unclaim;
		}
	}
	if (dmm__page_alloc_owned(mem, 0, (const struct dmm_constraint *)0,
				  gfp | DMM_GFP_MOVABLE | DMM_GFP_NOCACHE | DMM_GFP_ATOMIC, owner, &t)) {
		owner->ops->putback(owner->ctx, mem, pfn);
		why = DMM_MIGRATE_NO_TARGET;
		goto unclaim;
	}
	dmm__phys_copy(mem, dmm_pfn_to_phys(t), dmm_pfn_to_phys(pfn), DMM_PAGE_SIZE);
	npg = dmm__pfn_page(mem, t);
	dmm__set_private(npg, dmm__private(pg));
	if (owner->ops->migrate(owner->ctx, mem, pfn, t)) {
		dmm_page_free(mem, t, 0);
		owner->ops->putback(owner->ctx, mem, pfn);
		why = DMM_MIGRATE_REFUSED;
		goto unclaim;
	}
	/* The owner now uses T; P is ours to free. The claim stays until the
	 * free clears it: a pinner that got in after the pin check above sees
	 * MIGRATING and backs off, so the free's refusal of a pinned page can
	 * only be such a passing pin (never one left on P). */
	dmm__set_owner(pg, (void *)0);
	dmm__set_private(pg, 0);
	while (dmm_page_free(mem, pfn, 0) == -DMM_EBUSY)
		__asm__ __volatile__("" ::: "memory");
	stat_add(&mem->mstats.moved, 1);
	stat_add(&mem->mstats.bytes_copied, DMM_PAGE_SIZE);
	*new_pfn = t;
	return DMM_MIGRATE_MOVED;
unclaim:
	__atomic_fetch_and(&pg->flags, (uint8_t)~DMM_PGF_MIGRATING, __ATOMIC_RELEASE);
out:
	stat_add(&mem->mstats.failed[why], 1);
	return why;
}

static void report_failure(struct dmm_migrate_report *r, dmm_pfn_t pfn, enum dmm_migrate_reason why)
{
	if (!r)
		return;
	r->failed[why]++;
	if (r->failures && r->nr_failures < r->failures_cap) {
		r->failures[r->nr_failures].pfn = pfn;
		r->failures[r->nr_failures].reason = why;
		r->nr_failures++;
	}
}

/* Spin a little: a short-term pin is an I/O in flight that ends soon. */
static void backoff(const struct dmm_mem *mem, unsigned attempt)
{
	uint64_t t0 = dmm__now(mem), wait = (uint64_t)2000 << attempt;
	if (!t0)
		return;
	while (dmm__now(mem) - t0 < wait)
		__asm__ __volatile__("" ::: "memory");
}

/*
 * Migrate every allocated page in [lo, hi) (its pageblocks isolated by the
 * caller). Stops at the first page that cannot move when @stop_early.
 * Returns the number of pages that could not move; *first_bad is the first.
 */
uint64_t dmm__migrate_pages_in(struct dmm_mem *mem, dmm_pfn_t lo, dmm_pfn_t hi, unsigned gfp,
			       bool stop_early, struct dmm_migrate_report *r, dmm_pfn_t *first_bad,
			       enum dmm_migrate_reason *first_why)
{
	uint64_t bad = 0;

	for (dmm_pfn_t p = lo; p < hi;) {
		struct dmm_page *pg = dmm__pfn_page(mem, p);
		uint8_t st;
		uint64_t step = 1;
		enum dmm_migrate_reason why;
		dmm_pfn_t moved_to;

		/* holes are no pages: a section without RAM is skipped whole */
		if (!pg) {
			p = (p | (DMM_SECTION_PAGES - 1)) + 1;
			continue;
		}
		if (__atomic_load_n(&pg->flags, __ATOMIC_RELAXED) & DMM_PGF_NORAM) {
			p++;
			continue;
		}
		st = page_state(pg);
		if (r)
			r->scanned++;
		if (st == DMM_PAGE_FREE) {
			step = (uint64_t)1 << dmm__order(pg);
			step -= p & (step - 1);
			p += step;
			continue;
		}
		if (st == DMM_PAGE_TAIL) {
			p++;
			continue;
		}
		if (st == DMM_PAGE_ALLOC && (__atomic_load_n(&pg->flags, __ATOMIC_ACQUIRE) & DMM_PGF_MOVABLE)) {
			for (unsigned attempt = 0;; attempt++) {
				why = dmm__migrate_one(mem, p, gfp, &moved_to);
				if (why != DMM_MIGRATE_BUSY || attempt >= BUSY_RETRIES)
					break;
				if (r)
					r->retries++;
				backoff(mem, attempt);
			}
		} else if (st == DMM_PAGE_PCP) {
			/* freed into a per-CPU cache: the caller drains and rescans */
			why = DMM_MIGRATE_BUSY;
		} else {
			why = __atomic_load_n(&pg->lt_pins, __ATOMIC_RELAXED) ? DMM_MIGRATE_PINNED
									       : DMM_MIGRATE_UNMOVABLE;
			if (st == DMM_PAGE_ALLOC)
				step = (uint64_t)1 << dmm__order(pg);
			else if (st == DMM_PAGE_RANGE && dmm__private(pg))
				step = dmm__private(pg);
		}
		/* Freed between the scan and the claim: nothing left to move
		 * (a page parked in a per-CPU cache: the caller drains, rescans;
		 * one a free is giving back right now: transient too). */
		if (why == DMM_MIGRATE_UNMOVABLE) {
			uint8_t now = dmm__state(pg);
			if (now == DMM_PAGE_FREE || now == DMM_PAGE_TAIL) {
				p += 1;
				continue;
			}
			if (now == DMM_PAGE_PCP || now == DMM_PAGE_FREEING)
				why = DMM_MIGRATE_BUSY;
		}
		if (why == DMM_MIGRATE_MOVED) {
			if (r)
				r->moved++;
		} else {
			if (!bad) {
				if (first_bad)
					*first_bad = p;
				if (first_why)
					*first_why = why;
			}
			bad++;
			report_failure(r, p, why);
			if (stop_early)
				return bad;
		}
		p += step;
	}
	return bad;
}

/* The zone of the pageblock at @pb (that of any RAM page in it), or NULL
 * when the block holds no RAM. */
static struct dmm_zone *pageblock_zone(struct dmm_mem *mem, dmm_pfn_t pb)
{
	if (!dmm__pfn_page(mem, pb)) /* no memory map here: the whole block is absent */
		return (struct dmm_zone *)0;
	for (dmm_pfn_t p = pb; p < pb + DMM_PAGEBLOCK_PAGES; p++) {
		struct dmm_page *q = dmm__pfn_page(mem, p);
		if (q && q->zone < mem->nr_zones)
			return &mem->zones[q->zone];
	}
	return (struct dmm_zone *)0;
}

/* Isolate the pageblocks covering [lo, hi) zone by zone; undo on conflict. */
int dmm__isolate_range(struct dmm_mem *mem, dmm_pfn_t lo, dmm_pfn_t hi)
{
	dmm_pfn_t first = dmm_align_down(lo, DMM_PAGEBLOCK_PAGES);

	for (dmm_pfn_t pb = first; pb < hi; pb += DMM_PAGEBLOCK_PAGES) {
		struct dmm_zone *z = pageblock_zone(mem, pb);
		int err;

		if (!z)
			continue;
		dmm__lock(mem, &z->lock);
		err = dmm__isolate_pageblock_locked(z, pb);
		dmm__unlock(mem, &z->lock);
		if (err) {
			if (pb > first)
				dmm__unisolate_range(mem, lo, pb);
			return err;
		}
	}
	return 0;
}

void dmm__unisolate_range(struct dmm_mem *mem, dmm_pfn_t lo, dmm_pfn_t hi)
{
	for (dmm_pfn_t pb = dmm_align_down(lo, DMM_PAGEBLOCK_PAGES); pb < hi; pb += DMM_PAGEBLOCK_PAGES) {
		struct dmm_zone *z = pageblock_zone(mem, pb);

		if (!z)
			continue;
		dmm__lock(mem, &z->lock);
		if (dmm__pageblock_mt(mem, pb) == DMM_MT_ISOLATE)
			dmm__unisolate_pageblock_locked(z, pb);
		dmm__unlock(mem, &z->lock);
	}
}

int dmm_migrate_range(struct dmm_mem *mem, dmm_phys_t lo, dmm_phys_t hi,
		      struct dmm_migrate_report *report)
{
	dmm_pfn_t plo, phi;
	uint64_t bad;
	int err;

	if (!mem || lo >= hi || (lo & (DMM_PAGE_SIZE - 1)) || (hi & (DMM_PAGE_SIZE - 1)))
		return dmm__count_invalid(mem);
	if (report && report->failures_cap && !report->failures)
		return dmm__count_invalid(mem);
	plo = lo >> DMM_PAGE_SHIFT;
	phi = hi >> DMM_PAGE_SHIFT;
	if (dmm__ram_pages_in(&mem->machine, plo, phi) == 0)
		return dmm__count_range(mem);
	/* only the memory map's span holds pages: never walk past it */
	plo = dmm_max64(plo, mem->min_pfn);
	phi = dmm_min64(phi, mem->max_pfn);
	if (report) {
		struct dmm_migrate_failure *f = report->failures;
		size_t cap = report->failures_cap;
		dmm_memset(report, 0, sizeof(*report));
		report->failures = f;
		report->failures_cap = cap;
	}
	err = dmm__isolate_range(mem, plo, phi);
	if (err)
		return err;
	dmm_page_drain_pcp(mem);
	bad = dmm__migrate_pages_in(mem, plo, phi, 0, false, report, (dmm_pfn_t *)0,
				    (enum dmm_migrate_reason *)0);
	dmm__unisolate_range(mem, plo, phi);
	return bad ? -DMM_EBUSY : 0;
}

/* ---- pinning ------------------------------------------------------------------- */

/* @pg is memory dmamem allocated for its own use: no pin for it, counted. */
static inline bool lib_page(const struct dmm_page *pg)
{
	return (__atomic_load_n(&pg->flags, __ATOMIC_SEQ_CST) & DMM_PGF_INTERNAL) != 0;
}

static int refuse_lib(struct dmm_mem *mem)
{
	stat_add(&mem->mstats.pins_refused_internal, 1);
	return -DMM_EPERM;
}

int dmm_page_pin(struct dmm_mem *mem, dmm_pfn_t pfn, unsigned flags, dmm_pfn_t *pinned,
		 enum dmm_migrate_reason *why)
{
	struct dmm_page *pg;
	uint16_t *ctr, v;
	uint8_t st;

	if (!mem || !pinned || (flags & ~DMM_PIN_LONGTERM))
		return dmm__count_invalid(mem);
	pg = dmm_pfn_to_page(mem, pfn);
	if (!pg)
		return -DMM_ENOENT;
	st = page_state(pg);
	/* The library's own memory (bounce pools, atomic-pool chunks, IO page
	 * tables, metadata, device records), any page of it: the mark is set
	 * before the state reads as allocated and taken off only once the
	 * library's free has claimed the block, so a pinner that read the
	 * state has seen it. Its frees are never to be refused for a pin. */
	if (lib_page(pg))
		return refuse_lib(mem);
	if (st == DMM_PAGE_FREEING) {
		if (why)
			*why = DMM_MIGRATE_BUSY;
		return -DMM_EAGAIN; /* being freed: the free may yet be refused */
	}
	if (st != DMM_PAGE_ALLOC && st != DMM_PAGE_RANGE)
		return -DMM_ENOENT;
	if ((flags & DMM_PIN_LONGTERM) && pg->cma && mem->machine.longterm_pin_migrate) {
		enum dmm_migrate_reason r;
		dmm_pfn_t to;

		stat_add(&mem->mstats.longterm_pin_migrations, 1);
		if (st != DMM_PAGE_ALLOC || dmm__order(pg) != 0)
			r = DMM_MIGRATE_UNMOVABLE;
		else
			r = dmm__migrate_one(mem, pfn, DMM_GFP_NOCMA, &to);
		if (r != DMM_MIGRATE_MOVED) {
			stat_add(&mem->mstats.longterm_pin_failures, 1);
			if (why)
				*why = r;
			return r == DMM_MIGRATE_BUSY ? -DMM_EAGAIN : -DMM_EBUSY;
		}
		pfn = to;
		pg = dmm__pfn_page(mem, pfn);
	}
	ctr = (flags & DMM_PIN_LONGTERM) ? &pg->lt_pins : &pg->pins;
	/* Never store a wrapped count: a migration that read 0 for an
	 * instant would take a pinned page. */
	v = __atomic_load_n(ctr, __ATOMIC_RELAXED);
	do {
		if (v == UINT16_MAX)
			return -DMM_ENOSPC;
	} while (!__atomic_compare_exchange_n(ctr, &v, (uint16_t)(v + 1), false, __ATOMIC_SEQ_CST,
					      __ATOMIC_RELAXED));
	/* Lost a race with a migration of this very page: let the caller retry. */
	if (__atomic_load_n(&pg->flags, __ATOMIC_SEQ_CST) & DMM_PGF_MIGRATING) {
		__atomic_sub_fetch(ctr, 1, __ATOMIC_SEQ_CST);
		if (why)
			*why = DMM_MIGRATE_BUSY;
		return -DMM_EAGAIN;
	}
	/* A free claims the block (FREEING) first and checks the pins second:
	 * if it did not see this pin, the pin sees the block leaving. A block
	 * still being freed may yet stay (its free refused for another pin). */
	st = __atomic_load_n(&pg->state, __ATOMIC_SEQ_CST);
	if (st != DMM_PAGE_ALLOC && st != DMM_PAGE_RANGE) {
		__atomic_sub_fetch(ctr, 1, __ATOMIC_SEQ_CST);
		if (st != DMM_PAGE_FREEING)
			return -DMM_ENOENT;
		if (why)
			*why = DMM_MIGRATE_BUSY;
		return -DMM_EAGAIN;
	}
	/* Freed and allocated again, as the library's, since the look above
	 * (its mark is stored before the state just read): that free claims
	 * the block only once this count is gone. */
	if (lib_page(pg)) {
		__atomic_sub_fetch(ctr, 1, __ATOMIC_SEQ_CST);
		return refuse_lib(mem);
	}
	if (flags & DMM_PIN_LONGTERM)
		stat_add(&mem->mstats.longterm_pins, 1);
	if (why)
		*why = DMM_MIGRATE_MOVED;
	*pinned = pfn;
	return 0;
}

int dmm_page_unpin(struct dmm_mem *mem, dmm_pfn_t pfn, unsigned flags)
{
	struct dmm_page *pg;
	uint16_t *ctr, v;

	if (!mem || (flags & ~DMM_PIN_LONGTERM))
		return dmm__count_invalid(mem);
	pg = dmm_pfn_to_page(mem, pfn);
	if (!pg)
		return -DMM_ENOENT;
	ctr = (flags & DMM_PIN_LONGTERM) ? &pg->lt_pins : &pg->pins;
	v = __atomic_load_n(ctr, __ATOMIC_RELAXED);
	do {
		if (v == 0)
			return -DMM_ENOENT;
	} while (!__atomic_compare_exchange_n(ctr, &v, (uint16_t)(v - 1), false, __ATOMIC_SEQ_CST,
					      __ATOMIC_RELAXED));
	return 0;
}

void dmm_migrate_get_stats(struct dmm_mem *mem, struct dmm_migrate_stats *st)
{
	const uint64_t *src;
	uint64_t *dst;

	if (!mem || !st)
		return;
	src = (const uint64_t *)&mem->mstats;
	dst = (uint64_t *)st;
	for (size_t i = 0; i < sizeof(*st) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

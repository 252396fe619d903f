/* SPDX-License-Identifier: MIT */
/*
 * Handle table: the ready-made movable owner.
 *
 * Layout (one unmovable range from the range allocator):
 *
 *   +-----------------------+----------------------------------------+
 *   | struct dmm_handles    | ent[0] ent[1] ... ent[capacity - 1]    |
 *   +-----------------------+----------------------------------------+
 *
 * A used entry holds the pfn of its page; the page's private word holds the
 * handle, so the migration callbacks find the entry in O(1). Free entries
 * form a singly linked list through next_free. Entry state changes under
 * the table lock; a locked entry (lock count > 0) refuses isolation with
 * -DMM_EAGAIN (migration retries it later, like a short-term pin), as does
 * a page of the table no entry names (being allocated or freed), and an
 * entry being migrated makes lock/free wait for the (short) copy to end.
 * A handle's page is freed under the table lock (table lock -> per-CPU and
 * zone locks; the migration callbacks run with no dmamem lock held), and
 * the entry is released only if the page could be freed.
 */
#include <dmamem/handles.h>

#include "mm/mm_internal.h"

struct dmm_handle_ent {
	dmm_pfn_t pfn;
	uint32_t next_free;
	uint16_t locks;
	uint8_t used;
	uint8_t migrating;
};

struct dmm_handles {
	struct dmm_lock lock;
	struct dmm_mem *mem;
	struct dmm_movable_owner owner;
	uint32_t capacity, in_use, free_head;
	dmm_pfn_t table_pfn;
	uint64_t table_pages;
	uint64_t migrated, refused_locked;
	struct dmm_handle_ent ent[];
};

static int h_isolate(void *ctx, struct dmm_mem *mem, dmm_pfn_t pfn);
static int h_migrate(void *ctx, struct dmm_mem *mem, dmm_pfn_t old_pfn, dmm_pfn_t new_pfn);
static void h_putback(void *ctx, struct dmm_mem *mem, dmm_pfn_t pfn);

static const struct dmm_movable_ops handle_ops = {
	.isolate = h_isolate,
	.migrate = h_migrate,
	.putback = h_putback,
};

static inline void h_lock(struct dmm_handles *h)
{
	dmm__lock(h->mem, &h->lock);
}

static inline void h_unlock(struct dmm_handles *h)
{
	dmm__unlock(h->mem, &h->lock);
}

int dmm_handles_create(struct dmm_mem *mem, uint32_t capacity, struct dmm_handles **out)
{
	void *va;
	struct dmm_handles *h;
	uint64_t bytes, pages;
	dmm_pfn_t pfn;
	int err;

	if (!mem || !out || capacity == 0 || capacity > ((uint32_t)1 << 24))
		return dmm__count_invalid(mem);
	bytes = sizeof(*h) + (uint64_t)capacity * sizeof(struct dmm_handle_ent);
	pages = dmm_align_up(bytes, DMM_PAGE_SIZE) >> DMM_PAGE_SHIFT;
	err = dmm__meta_alloc(mem, pages, 0, &pfn, &va);
	if (err)
		return err;
	h = va;
	mem->plat.lock_init(mem->plat.ctx, &h->lock);
	h->mem = mem;
	h->owner.ops = &handle_ops;
	h->owner.ctx = h;
	h->capacity = capacity;
	h->table_pfn = pfn;
	h->table_pages = pages;
	for (uint32_t i = 0; i < capacity; i++)
		h->ent[i].next_free = i + 1 < capacity ? i + 1 : DMM_HANDLE_NONE;
	h->free_head = 0;
	*out = h;
	return 0;
}

/* Wait (spinning) until @e is not being migrated; lock held on entry and exit. */
static void wait_not_migrating(struct dmm_handles *h, struct dmm_handle_ent *e)
{
	while (e->migrating) {
		h_unlock(h);
		for (volatile int i = 0; i < 64; i++)
			;
		h_lock(h);
	}
}

/* Is the page of used entry @e pinned? (table lock held) */
static bool ent_pinned(struct dmm_handles *h, const struct dmm_handle_ent *e)
{
	const struct dmm_page *pg = dmm__pfn_page(h->mem, e->pfn);

	return __atomic_load_n(&pg->pins, __ATOMIC_SEQ_CST) || __atomic_load_n(&pg->lt_pins, __ATOMIC_SEQ_CST);
}

int dmm_handles_destroy(struct dmm_handles *h)
{
	struct dmm_mem *mem;
	int err = 0;

	if (!h)
		return -DMM_EINVAL;
	mem = h->mem;
	h_lock(h);
	/* A page that cannot be freed would outlive its owner: refuse first. */
	for (uint32_t i = 0; i < h->capacity && !err; i++) {
		struct dmm_handle_ent *e = &h->ent[i];
		wait_not_migrating(h, e);
		if (e->used && (e->locks || ent_pinned(h, e)))
			err = -DMM_EBUSY;
	}
	/* A pin can still race in: its handle (and those after it) stay. */
	for (uint32_t i = 0; i < h->capacity && !err; i++) {
		struct dmm_handle_ent *e = &h->ent[i];
		wait_not_migrating(h, e);
		if (!e->used)
			continue;
		err = dmm_page_free(mem, e->pfn, 0);
		if (!err) {
			e->used = 0;
			e->next_free = h->free_head;
			h->free_head = i;
			h->in_use--;
		}
	}
	h_unlock(h);
	if (err)
		return err;
	if (mem->plat.lock_destroy)
		mem->plat.lock_destroy(mem->plat.ctx, &h->lock);
	dmm__lib_free_range(mem, h->table_pfn, h->table_pages); /* the library's: never refused for a pin */
	return 0;
}

int dmm_handle_alloc(struct dmm_handles *h, unsigned gfp, uint32_t *handle)
{
	struct dmm_handle_ent *e;
	uint32_t idx;
	dmm_pfn_t pfn;
	int err;

	if (!h || !handle || (gfp & ~(DMM_GFP_ZERO | DMM_GFP_ATOMIC | DMM_GFP_NOCMA)))
		return dmm__count_invalid(h ? h->mem : (struct dmm_mem *)0);
	h_lock(h);
	idx = h->free_head;
	if (idx == DMM_HANDLE_NONE) {
		h_unlock(h);
		return -DMM_ENOSPC;
	}
	e = &h->ent[idx];
	h->free_head = e->next_free;
	e->next_free = DMM_HANDLE_NONE;
	e->migrating = 1; /* reserved: not visible until the page exists */
	h->in_use++;
	h_unlock(h);

	err = dmm_page_alloc_movable(h->mem, &h->owner, gfp, &pfn);
	h_lock(h);
	if (err) {
		e->migrating = 0;
		e->next_free = h->free_head;
		h->free_head = idx;
		h->in_use--;
		h_unlock(h);
		return err;
	}
	dmm__set_private(dmm__pfn_page(h->mem, pfn), idx);
	e->pfn = pfn;
	e->used = 1;
	e->locks = 0;
	e->migrating = 0;
	h_unlock(h);
	*handle = idx;
	return 0;
}

int dmm_handle_free(struct dmm_handles *h, uint32_t handle)
{
	struct dmm_handle_ent *e;
	int err;

	if (!h)
		return -DMM_EINVAL;
	if (handle >= h->capacity)
		return -DMM_ENOENT;
	e = &h->ent[handle];
	h_lock(h);
	wait_not_migrating(h, e);
	if (!e->used) {
		h_unlock(h);
		return -DMM_ENOENT;
	}
	if (e->locks) {
		h_unlock(h);
		return -DMM_EBUSY;
	}
	/* The page first: if it cannot go (pinned), the handle stays as it
	 * was. Under the lock, so no migration sees the entry half gone. */
	err = dmm_page_free(h->mem, e->pfn, 0);
	if (!err) {
		e->used = 0;
		e->next_free = h->free_head;
		h->free_head = handle;
		h->in_use--;
	}
	h_unlock(h);
	return err;
}

int dmm_handle_pfn(struct dmm_handles *h, uint32_t handle, dmm_pfn_t *pfn)
{
	int err = 0;

	if (!h || !pfn)
		return -DMM_EINVAL;
	if (handle >= h->capacity)
		return -DMM_ENOENT;
	h_lock(h);
	wait_not_migrating(h, &h->ent[handle]);
	if (h->ent[handle].used)
		*pfn = h->ent[handle].pfn;
	else
		err = -DMM_ENOENT;
	h_unlock(h);
	return err;
}

void *dmm_handle_lock(struct dmm_handles *h, uint32_t handle)
{
	struct dmm_handle_ent *e;
	dmm_pfn_t pfn;

	if (!h || handle >= h->capacity)
		return (void *)0;
	e = &h->ent[handle];
	h_lock(h);
	wait_not_migrating(h, e);
	if (!e->used || e->locks == UINT16_MAX) {
		h_unlock(h);
		return (void *)0;
	}
	e->locks++;
	pfn = e->pfn;
	h_unlock(h);
	return h->mem->plat.phys_to_virt(h->mem->plat.ctx, dmm_pfn_to_phys(pfn));
}

int dmm_handle_unlock(struct dmm_handles *h, uint32_t handle)
{
	int err = 0;

	if (!h)
		return -DMM_EINVAL;
	if (handle >= h->capacity)
		return -DMM_ENOENT;
	h_lock(h);
	if (!h->ent[handle].used || !h->ent[handle].locks)
		err = -DMM_ENOENT;
	else
		h->ent[handle].locks--;
	h_unlock(h);
	return err;
}

/* ---- movable operations ---------------------------------------------------------- */

static int h_isolate(void *ctx, struct dmm_mem *mem, dmm_pfn_t pfn)
{
	struct dmm_handles *h = ctx;
	uint64_t idx = dmm__private(dmm__pfn_page(mem, pfn));
	struct dmm_handle_ent *e;
	int err = 0;

	if (idx >= h->capacity)
		return -DMM_EINVAL;
	e = &h->ent[idx];
	h_lock(h);
	if (!e->used || e->pfn != pfn || e->migrating) {
		/* no entry names the page: it is being allocated (its private
		 * word is not the handle yet) or was freed; either passes */
		err = -DMM_EAGAIN;
	} else if (e->locks) {
		h->refused_locked++;
		err = -DMM_EAGAIN;
	} else {
		e->migrating = 1;
	}
	h_unlock(h);
	return err;
}

static int h_migrate(void *ctx, struct dmm_mem *mem, dmm_pfn_t old_pfn, dmm_pfn_t new_pfn)
{
	struct dmm_handles *h = ctx;
	uint64_t idx = dmm__private(dmm__pfn_page(mem, old_pfn));
	struct dmm_handle_ent *e = &h->ent[idx];

	h_lock(h);
	e->pfn = new_pfn;
	e->migrating = 0;
	h->migrated++;
	h_unlock(h);
	return 0;
}

static void h_putback(void *ctx, struct dmm_mem *mem, dmm_pfn_t pfn)
{
	struct dmm_handles *h = ctx;
	uint64_t idx = dmm__private(dmm__pfn_page(mem, pfn));

	h_lock(h);
	h->ent[idx].migrating = 0;
	h_unlock(h);
}

void dmm_handles_get_stats(struct dmm_handles *h, struct dmm_handles_stats *st)
{
	if (!h || !st)
		return;
	h_lock(h);
	st->capacity = h->capacity;
	st->in_use = h->in_use;
	st->migrated = h->migrated;
	st->refused_locked = h->refused_locked;
	h_unlock(h);
}

int dmm_handles_check(struct dmm_handles *h)
{
	uint32_t used = 0, free = 0, reserved = 0;
	int err = 0;

	if (!h)
		return -DMM_EINVAL;
	h_lock(h);
	for (uint32_t i = 0; i < h->capacity && !err; i++) {
		struct dmm_handle_ent *e = &h->ent[i];
		struct dmm_page *pg;
		if (!e->used) {
			reserved += e->migrating ? 1u : 0u; /* allocation in progress */
			continue;
		}
		used++;
		if (e->migrating)
			continue;
		pg = dmm_pfn_to_page(h->mem, e->pfn);
		if (!pg || dmm__state(pg) != DMM_PAGE_ALLOC ||
		    dmm__owner(pg) != &h->owner || dmm__private(pg) != i ||
		    !(__atomic_load_n(&pg->flags, __ATOMIC_ACQUIRE) & DMM_PGF_MOVABLE)) {
			dmm_log(h->mem, DMM_LOG_ERR, "handles check: handle %u -> pfn %llu not owned", i,
				(unsigned long long)e->pfn);
			err = -DMM_EFAULT;
		}
	}
	for (uint32_t i = h->free_head; i != DMM_HANDLE_NONE && !err; i = h->ent[i].next_free) {
		if (i >= h->capacity || h->ent[i].used || h->ent[i].migrating || ++free > h->capacity) {
			dmm_log(h->mem, DMM_LOG_ERR, "handles check: free list broken at %u", i);
			err = -DMM_EFAULT;
		}
	}
	if (!err && (used + free + reserved != h->capacity || used + reserved != h->in_use)) {
		dmm_log(h->mem, DMM_LOG_ERR, "handles check: %u used + %u free + %u reserved != %u (in use %u)",
			used, free, reserved, h->capacity, h->in_use);
		err = -DMM_EFAULT;
	}
	h_unlock(h);
	return err;
}

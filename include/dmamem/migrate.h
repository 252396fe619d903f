/* SPDX-License-Identifier: MIT */
/*
 * Movable pages, migration and pinning.
 *
 * An owner allocates movable pages with an operations table (in the spirit
 * of Linux's movable_operations). To move a page the library asks the owner
 * to isolate it (the owner may refuse), allocates a target page, copies the
 * contents, and asks the owner to switch its references to the new page
 * (migrate); on any failure the owner is told to put the page back. The old
 * page is then freed. Owners must serialise their own use of a page with
 * these callbacks (the ready-made handle table in handles.h does).
 *
 * Pins. A short-term pin (an I/O in flight) makes migration of the page
 * retry later; a long-term pin (RDMA, VFIO-style) makes it unmovable. A
 * long-term pin of a page in a contiguous area first migrates the page out
 * of the area (unless the machine turned that protection off) and fails with
 * -DMM_EBUSY if it cannot.
 */
#ifndef DMAMEM_MIGRATE_H
#define DMAMEM_MIGRATE_H

#include <stddef.h>
#include <stdint.h>

#include "constraint.h"
#include "mem.h"

struct dmm_movable_ops {
	/* Prepare @pfn for migration; return 0, or a negative code to refuse
	 * (-DMM_EAGAIN: busy now, retry later). Called with no dmamem lock
	 * held; must not sleep. It may race with the owner freeing @pfn: the
	 * owner must check that it still owns @pfn and refuse if not. After
	 * it returns 0 the owner must not free @pfn until migrate or putback. */
	int (*isolate)(void *ctx, struct dmm_mem *mem, dmm_pfn_t pfn);
	/* The library copied old -> new; switch references to @new_pfn.
	 * Return 0, or a negative code to refuse (then putback follows). */
	int (*migrate)(void *ctx, struct dmm_mem *mem, dmm_pfn_t old_pfn, dmm_pfn_t new_pfn);
	/* Migration of an isolated page was abandoned: it stays where it is. */
	void (*putback)(void *ctx, struct dmm_mem *mem, dmm_pfn_t pfn);
};

struct dmm_movable_owner {
	const struct dmm_movable_ops *ops;
	void *ctx;
};

/*
 * Allocate one movable page owned by @owner (which must outlive the page).
 * Flags: DMM_GFP_ATOMIC, DMM_GFP_ZERO, DMM_GFP_NOCMA; the migratetype is
 * movable. Fails like dmm_page_alloc(); -DMM_EINVAL if @owner or its ops are
 * incomplete. Free with dmm_page_free(mem, pfn, 0).
 */
int dmm_page_alloc_movable(struct dmm_mem *mem, const struct dmm_movable_owner *owner,
			   unsigned flags, dmm_pfn_t *pfn);

/* Why a page could not be moved. */
enum dmm_migrate_reason {
	DMM_MIGRATE_MOVED = 0,
	DMM_MIGRATE_PINNED,       /* long-term pinned */
	DMM_MIGRATE_BUSY,         /* short-term pinned or being migrated; retried and gave up */
	DMM_MIGRATE_UNMOVABLE,    /* allocated without a movable owner (or reserved) */
	DMM_MIGRATE_NO_TARGET,    /* no free page to move it to */
	DMM_MIGRATE_REFUSED,      /* the owner refused (isolate or migrate failed) */
	DMM_NR_MIGRATE_REASONS
};

const char *dmm_migrate_reason_name(enum dmm_migrate_reason r);

struct dmm_migrate_failure {
	dmm_pfn_t pfn;
	enum dmm_migrate_reason reason;
};

struct dmm_migrate_report {
	uint64_t scanned;                          /* pages of RAM examined (holes are skipped) */
	uint64_t moved;                            /* pages migrated */
	uint64_t failed[DMM_NR_MIGRATE_REASONS];   /* pages not moved, by reason */
	uint64_t retries;                          /* busy pages retried */
	/* Optional: filled with one entry per page that could not move. */
	struct dmm_migrate_failure *failures;
	size_t failures_cap;
	size_t nr_failures;
};

/*
 * Empty the physical range [lo, hi) (bytes, page-aligned) of movable pages:
 * its pageblocks are isolated so nothing new is allocated there, every
 * movable page is migrated out (short-term pinned pages retried a few
 * times), then the pageblocks get their type back. Free pages stay free;
 * holes (addresses without RAM) are no pages and are skipped, and nothing
 * outside the memory map's span is walked, however far @hi reaches.
 * Returns 0 if every allocated page in the range moved, -DMM_EBUSY if some
 * could not (reasons in @report), -DMM_EINVAL for a bad range, -DMM_ERANGE if
 * [lo, hi) holds no RAM, -DMM_EAGAIN if part of it is already isolated by a
 * concurrent operation (nothing was moved).
 */
int dmm_migrate_range(struct dmm_mem *mem, dmm_phys_t lo, dmm_phys_t hi,
		      struct dmm_migrate_report *report);

/* Pin flags */
#define DMM_PIN_LONGTERM (1u << 0)

/*
 * Pin the allocated page (or block head) @pfn. Short-term pins always pin in
 * place. A long-term pin of a page in a contiguous area migrates it out first
 * (if the machine's longterm_pin_migrate is on): *@pinned receives the pfn
 * the page lives at afterwards (== @pfn when it did not move). Fails with
 * -DMM_ENOENT (not an allocated page), -DMM_EAGAIN (lost a race with a
 * migration or a free of this very page, which may yet be refused: nothing
 * was pinned, try again), -DMM_EBUSY (it had to move and could not: reason
 * in *@why if non-NULL), -DMM_ENOSPC (the page already holds UINT16_MAX pins
 * of that kind: refused before the count could wrap, nothing changed),
 * -DMM_EPERM (any page of memory dmamem allocated for its own use: bounce
 * pools, coherent atomic-pool chunks and so the buffers served from them,
 * IO page tables, device records, metadata; counted in
 * pins_refused_internal, nothing changed), -DMM_EINVAL (bad flags). A pin
 * racing with a free of the page either lands first, and the free is
 * refused, or fails: never both succeed.
 */
int dmm_page_pin(struct dmm_mem *mem, dmm_pfn_t pfn, unsigned flags, dmm_pfn_t *pinned,
		 enum dmm_migrate_reason *why);

/* Drop one pin of the given kind. -DMM_ENOENT if the page holds none. */
int dmm_page_unpin(struct dmm_mem *mem, dmm_pfn_t pfn, unsigned flags);

/* Statistics of migration over the memory map's life. */
struct dmm_migrate_stats {
	uint64_t attempted, moved, bytes_copied;
	uint64_t failed[DMM_NR_MIGRATE_REASONS];
	uint64_t longterm_pins, longterm_pin_migrations, longterm_pin_failures;
	uint64_t pins_refused_internal; /* pins of the library's own memory refused (-DMM_EPERM) */
};
void dmm_migrate_get_stats(struct dmm_mem *mem, struct dmm_migrate_stats *st);

#endif

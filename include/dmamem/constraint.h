/* SPDX-License-Identifier: MIT */
/*
 * Physical constraint descriptor, shared by every allocation path.
 *
 * A constraint is a set of addresses, never a zone: "the block must lie
 * entirely inside [lo, hi), start on a multiple of align, and not cross a
 * multiple of boundary". Later layers (DMA devices, bounce pools) add segment
 * limits; the page and range allocators ignore max_seg_size and max_segs.
 */
#ifndef DMAMEM_CONSTRAINT_H
#define DMAMEM_CONSTRAINT_H

#include <stdint.h>

typedef uint64_t dmm_phys_t;
typedef uint64_t dmm_pfn_t;

#define DMM_PAGE_SHIFT 12
#define DMM_PAGE_SIZE ((uint64_t)1 << DMM_PAGE_SHIFT)
#define DMM_PHYS_MAX UINT64_MAX

struct dmm_constraint {
	dmm_phys_t lo;          /* lowest acceptable address (inclusive) */
	dmm_phys_t hi;          /* end of the window (exclusive); DMM_PHYS_MAX = none */
	uint64_t align;         /* start alignment in bytes: 0 or a power of two */
	uint64_t boundary;      /* 0, or a power of two the block must not cross */
	uint64_t max_seg_size;  /* 0 = unlimited (used by scatter-gather layers) */
	uint32_t max_segs;      /* 0 = unlimited (used by scatter-gather layers) */
};

/* Any address, page alignment, no boundary. */
#define DMM_CONSTRAINT_ANY ((struct dmm_constraint){ 0, DMM_PHYS_MAX, 0, 0, 0, 0 })

/* Everything below @limit (exclusive). */
static inline struct dmm_constraint dmm_constraint_below(dmm_phys_t limit)
{
	struct dmm_constraint c = { 0, limit, 0, 0, 0, 0 };
	return c;
}

/*
 * Validate a constraint: lo < hi, align and boundary are 0 or powers of two.
 * Returns 0 or -DMM_EINVAL.
 */
int dmm_constraint_validate(const struct dmm_constraint *c);

/*
 * Intersect two constraints: highest lo, lowest hi, strictest (largest)
 * alignment, strictest (smallest non-zero) boundary, smallest non-zero
 * segment limits. Fails with -DMM_ERANGE if the windows do not overlap,
 * -DMM_EINVAL if either input is invalid.
 */
int dmm_constraint_intersect(const struct dmm_constraint *a,
			     const struct dmm_constraint *b,
			     struct dmm_constraint *out);

/* 1 if the byte range [pa, pa + len) satisfies @c's window, alignment and boundary. */
int dmm_constraint_ok(const struct dmm_constraint *c, dmm_phys_t pa, uint64_t len);

#endif

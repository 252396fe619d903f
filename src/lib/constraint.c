/* SPDX-License-Identifier: MIT */
#include <dmamem/constraint.h>
#include <dmamem/error.h>

#include "lib/bits.h"

int dmm_constraint_validate(const struct dmm_constraint *c)
{
	if (!c || c->lo >= c->hi)
		return -DMM_EINVAL;
	if (c->align && !dmm_is_pow2(c->align))
		return -DMM_EINVAL;
	if (c->boundary && !dmm_is_pow2(c->boundary))
		return -DMM_EINVAL;
	return 0;
}

static uint64_t min_nonzero(uint64_t a, uint64_t b)
{
	if (!a)
		return b;
	if (!b)
		return a;
	return a < b ? a : b;
}

int dmm_constraint_intersect(const struct dmm_constraint *a, const struct dmm_constraint *b,
			     struct dmm_constraint *out)
{
	struct dmm_constraint r;

	if (!out || dmm_constraint_validate(a) || dmm_constraint_validate(b))
		return -DMM_EINVAL;
	r.lo = dmm_max64(a->lo, b->lo);
	r.hi = dmm_min64(a->hi, b->hi);
	if (r.lo >= r.hi)
		return -DMM_ERANGE;
	r.align = dmm_max64(a->align, b->align);
	r.boundary = min_nonzero(a->boundary, b->boundary);
	r.max_seg_size = min_nonzero(a->max_seg_size, b->max_seg_size);
	r.max_segs = (uint32_t)min_nonzero(a->max_segs, b->max_segs);
	*out = r;
	return 0;
}

int dmm_constraint_ok(const struct dmm_constraint *c, dmm_phys_t pa, uint64_t len)
{
	if (!c || !len || pa + len < pa)
		return 0;
	if (pa < c->lo || pa + len > c->hi)
		return 0;
	if (c->align && (pa & (c->align - 1)))
		return 0;
	if (c->boundary && (pa / c->boundary) != ((pa + len - 1) / c->boundary))
		return 0;
	return 1;
}

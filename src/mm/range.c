/* SPDX-License-Identifier: MIT */
/*
 * Range allocator: N contiguous pages inside [lo, hi), aligned, not crossing
 * a boundary, taken from the buddy allocator's own free pages.
 *
 * Index. Each zone keeps a bitmap of its buddy-free pages (bit set = the page
 * lies in a block on a free list) and a segment tree over the bitmap's 64-bit
 * words. Every tree node summarises the pages it covers by three numbers:
 *
 *     pre  = free pages from its left edge,
 *     suf  = free pages up to its right edge,
 *     best = longest free run inside,
 *
 * and a parent is computed from its children in O(1):
 *
 *     pre  = L.pre  == half ? half + R.pre : L.pre
 *     suf  = R.suf  == half ? half + L.suf : R.suf
 *     best = max(L.best, R.best, L.suf + R.pre)
 *
 *            [ pre | suf | best ]            root: 64 * 2^h pages
 *             /                \
 *     [pre|suf|best]     [pre|suf|best]
 *       ...                  ...
 *     w0   w1   w2   w3 ...                  leaves: one bitmap word each
 *
 * Updates. The set of free pages changes only by the pages a caller
 * allocates or frees (splitting and merging leave it unchanged), so the
 * buddy allocator marks exactly those pages. Marking flips bits and queues
 * the touched leaves (a dirty marker in the leaf avoids duplicates); the
 * summaries are recomputed when a search or check needs them, level by
 * level so that shared ancestors are computed once: an order-0 buddy
 * operation costs O(1) here, a flush of d leaves O(d log N) at most. Wide
 * marks (ranges) update their leaves and ancestors directly,
 * O(n/64 + log N).
 *
 * Search. "Leftmost run of at least n free pages in [lo, hi)" descends from
 * the root, skipping every node inside the window whose best < n and
 * carrying the free run that ends at a node's left edge: O(log N). The end
 * of a run is found the same way (first non-free page): O(log N). A run
 * [s, e) is usable if some s' >= s aligned to A has [s', s' + n) inside it
 * and not crossing a multiple of the boundary B. A run of at least
 * G = n + A - 1 pages always holds an aligned fit; with a boundary B > A a
 * run of 2G does (it either contains a whole B-window, which fits since
 * n <= B, or has a piece of at least G inside one window). So the search
 * examines the first few runs of length >= n in address order (first fit),
 * then asks for a run of length >= G (a guaranteed fit), and only if none
 * exists scans the remaining runs of length in [n, G). Cost:
 * O((1 + k) log N), k = runs long enough but unusable by alignment or
 * boundary; a request no run can satisfy fails in O(log N).
 *
 * Taking a range out of the buddy lists removes every free block overlapping
 * it and gives back the parts outside as maximal aligned blocks; freeing a
 * range frees its maximal aligned blocks with ordinary buddy merging. Ranges
 * never straddle zones.
 */
#include "mm/mm_internal.h"

#define RT_NONE (~(uint64_t)0)
#define RT_FIRST_FIT_TRIES 4

/* ---- geometry --------------------------------------------------------------- */

uint64_t dmm__rt_meta_words(dmm_pfn_t start, dmm_pfn_t end, uint64_t *nr_words, uint64_t *nr_leaves)
{
	uint64_t base = dmm_align_down(start, 64);
	uint64_t nw = (dmm_align_up(end, 64) - base) / 64;
	uint64_t nl = 1;

	while (nl < nw)
		nl <<= 1;
	*nr_words = nw;
	*nr_leaves = nl;
	return nw;
}

void dmm__rt_setup(struct dmm_rt *rt, dmm_pfn_t start, dmm_pfn_t end, void *words, void *tree)
{
	dmm__rt_meta_words(start, end, &rt->nr_words, &rt->nr_leaves);
	rt->base = dmm_align_down(start, 64);
	rt->nr_dirty = 0;
	rt->bitmap = words;
	rt->tree = tree;
}

/* ---- summaries --------------------------------------------------------------- */

static inline unsigned trailing_ones(uint64_t x)
{
	return x == ~(uint64_t)0 ? 64 : dmm_ctz64(~x);
}

static inline unsigned leading_ones(uint64_t x)
{
	return x == ~(uint64_t)0 ? 64 : dmm_clz64(~x);
}

static unsigned longest_run(uint64_t w)
{
	unsigned best = 0;

	if (w == ~(uint64_t)0)
		return 64;
	while (w) {
		unsigned r;
		w >>= dmm_ctz64(w);
		r = trailing_ones(w);
		if (r > best)
			best = r;
		if (r >= 64)
			break;
		w >>= r;
	}
	return best;
}

static inline struct dmm_rt_node leaf_summary(uint64_t w)
{
	struct dmm_rt_node n = { trailing_ones(w), leading_ones(w), longest_run(w) };
	return n;
}

static inline struct dmm_rt_node combine(const struct dmm_rt_node *l, const struct dmm_rt_node *r,
					 uint32_t half)
{
	struct dmm_rt_node n;
	uint32_t mid = l->suf + r->pre;

	n.pre = l->pre == half ? half + r->pre : l->pre;
	n.suf = r->suf == half ? half + l->suf : r->suf;
	n.best = l->best > r->best ? l->best : r->best;
	if (mid > n.best)
		n.best = mid;
	return n;
}

static inline bool node_eq(const struct dmm_rt_node *a, const struct dmm_rt_node *b)
{
	return a->pre == b->pre && a->suf == b->suf && a->best == b->best;
}

/* Recompute leaves [a, b] and their ancestors. */
static void update_leaves(struct dmm_rt *rt, uint64_t a, uint64_t b)
{
	uint64_t lo = rt->nr_leaves + a, hi = rt->nr_leaves + b;
	uint32_t half = 64;
	bool changed = false;

	for (uint64_t i = lo; i <= hi; i++) {
		struct dmm_rt_node n = leaf_summary(rt->bitmap[i - rt->nr_leaves]);
		if (!node_eq(&n, &rt->tree[i])) {
			rt->tree[i] = n;
			changed = true;
		}
	}
	while (lo > 1 && changed) {
		lo >>= 1;
		hi >>= 1;
		changed = false;
		for (uint64_t i = lo; i <= hi; i++) {
			struct dmm_rt_node n = combine(&rt->tree[2 * i], &rt->tree[2 * i + 1], half);
			if (!node_eq(&n, &rt->tree[i])) {
				rt->tree[i] = n;
				changed = true;
			}
		}
		/* A wide update must reach the root even if one level looked unchanged. */
		if (lo != hi)
			changed = true;
		half <<= 1;
	}
}

#define RT_DIRTY 0xffffffffu

/* Recompute every queued leaf and its ancestors, each node once. */
static void rt_flush(struct dmm_rt *rt)
{
	uint32_t n = rt->nr_dirty;
	uint32_t half = 64;

	if (!n)
		return;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t leaf = rt->dirty[i];
		rt->tree[rt->nr_leaves + leaf] = leaf_summary(rt->bitmap[leaf]);
		rt->dirty[i] = rt->nr_leaves + leaf;
	}
	while (n && rt->dirty[0] > 1) {
		uint32_t m = 0;
		for (uint32_t i = 0; i < n; i++) {
			uint64_t parent = rt->dirty[i] >> 1;
			if (rt->tree[parent].best == RT_DIRTY)
				continue;
			rt->tree[parent].best = RT_DIRTY;
			rt->dirty[m++] = parent;
		}
		for (uint32_t i = 0; i < m; i++) {
			uint64_t p = rt->dirty[i];
			rt->tree[p] = combine(&rt->tree[2 * p], &rt->tree[2 * p + 1], half);
		}
		half <<= 1;
		n = m;
	}
	rt->nr_dirty = 0;
}

static void set_bits(struct dmm_rt *rt, uint64_t s, uint64_t e, bool free)
{
	uint64_t ws = s / 64, we = (e - 1) / 64;

	for (uint64_t w = ws; w <= we; w++) {
		uint64_t lo = w == ws ? s % 64 : 0;
		uint64_t hi = w == we ? (e - 1) % 64 + 1 : 64;
		uint64_t mask = (hi - lo == 64) ? ~(uint64_t)0 : (((uint64_t)1 << (hi - lo)) - 1) << lo;
		if (free)
			rt->bitmap[w] |= mask;
		else
			rt->bitmap[w] &= ~mask;
	}
}

void dmm__rt_set_bits(struct dmm_rt *rt, dmm_pfn_t pfn, uint64_t n)
{
	set_bits(rt, pfn - rt->base, pfn - rt->base + n, true);
}

void dmm__rt_mark(struct dmm_rt *rt, dmm_pfn_t pfn, uint64_t n, bool free)
{
	uint64_t s = pfn - rt->base, e = s + n;
	uint64_t ws = s / 64, we = (e - 1) / 64;

	set_bits(rt, s, e, free);
	if (we - ws >= 16) {
		rt_flush(rt);
		update_leaves(rt, ws, we);
		return;
	}
	for (uint64_t w = ws; w <= we; w++) {
		struct dmm_rt_node *leaf = &rt->tree[rt->nr_leaves + w];
		if (leaf->best == RT_DIRTY)
			continue;
		if (rt->nr_dirty == DMM_RT_DIRTY_MAX)
			rt_flush(rt);
		leaf->best = RT_DIRTY;
		rt->dirty[rt->nr_dirty++] = w;
	}
}

void dmm__rt_build(struct dmm_rt *rt)
{
	uint32_t half = 64;

	rt->nr_dirty = 0;
	for (uint64_t i = 0; i < rt->nr_leaves; i++)
		rt->tree[rt->nr_leaves + i] = leaf_summary(i < rt->nr_words ? rt->bitmap[i] : 0);
	for (uint64_t level = rt->nr_leaves >> 1; level >= 1; level >>= 1) {
		for (uint64_t i = level; i < 2 * level; i++)
			rt->tree[i] = combine(&rt->tree[2 * i], &rt->tree[2 * i + 1], half);
		half <<= 1;
	}
}

bool dmm__rt_test(const struct dmm_rt *rt, dmm_pfn_t pfn)
{
	uint64_t b = pfn - rt->base;
	if (pfn < rt->base || b / 64 >= rt->nr_words)
		return false;
	return (rt->bitmap[b / 64] >> (b % 64)) & 1;
}

uint64_t dmm__rt_popcount(const struct dmm_rt *rt)
{
	uint64_t n = 0;
	for (uint64_t i = 0; i < rt->nr_words; i++)
		n += (uint64_t)__builtin_popcountll(rt->bitmap[i]);
	return n;
}

/* ---- search -------------------------------------------------------------------- */

static inline uint64_t window_mask(uint64_t nlo, uint64_t from, uint64_t to)
{
	uint64_t lo = from > nlo ? from - nlo : 0;
	uint64_t hi = to < nlo + 64 ? to - nlo : 64;
	uint64_t m = hi >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << hi) - 1;
	return m & ~(((uint64_t)1 << lo) - 1);
}

static uint64_t leaf_find(uint64_t w, uint64_t nlo, uint64_t need, uint64_t *carry)
{
	uint64_t pos = 0;

	for (;;) {
		uint64_t x = w >> pos;
		uint64_t ones = trailing_ones(x);
		if (ones > 64 - pos)
			ones = 64 - pos;
		if (*carry + ones >= need)
			return nlo + pos - *carry;
		if (pos + ones >= 64) {
			*carry += ones;
			return RT_NONE;
		}
		*carry = 0;
		pos += ones;
		x = w >> pos;
		if (!x)
			return RT_NONE;
		pos += dmm_ctz64(x);
	}
}

/*
 * Inside a node that holds a run of >= need pages (best >= need) and whose
 * run from the left edge cannot complete one (carry + pre < need), walk
 * down one path to the leftmost such run: go left while the left child holds
 * one, else the run is either across the middle or inside the right child.
 */
static uint64_t descend_find(const struct dmm_rt *rt, uint64_t node, uint64_t nlo, uint64_t len,
			     uint64_t need, uint64_t carry)
{
	while (len > 64) {
		const struct dmm_rt_node *l = &rt->tree[2 * node], *r = &rt->tree[2 * node + 1];
		uint64_t half = len / 2, c;

		if (l->best >= need) {
			node = 2 * node;
			len = half;
			continue;
		}
		c = l->pre == half ? carry + half : l->suf;
		if (c + r->pre >= need)
			return nlo + half - c;
		node = 2 * node + 1;
		nlo += half;
		carry = c;
		len = half;
	}
	return leaf_find(rt->bitmap[node - rt->nr_leaves], nlo, need, &carry);
}

/* Leftmost run of >= need free pages inside [from, to): returns its start.
 * Recursion happens only along the two window edges; every node wholly
 * inside the window is decided from its summary or by descend_find. */
static uint64_t find_rec(const struct dmm_rt *rt, uint64_t node, uint64_t nlo, uint64_t nlen,
			 uint64_t from, uint64_t to, uint64_t need, uint64_t *carry)
{
	uint64_t nhi = nlo + nlen, r;

	if (nhi <= from || nlo >= to)
		return RT_NONE;
	if (nlo >= from && nhi <= to) {
		const struct dmm_rt_node *n = &rt->tree[node];
		if (*carry + n->pre >= need)
			return nlo - *carry;
		if (n->best >= need)
			return descend_find(rt, node, nlo, nlen, need, *carry);
		*carry = n->pre == nlen ? *carry + nlen : n->suf;
		return RT_NONE;
	}
	if (nlen == 64)
		return leaf_find(rt->bitmap[node - rt->nr_leaves] & window_mask(nlo, from, to), nlo, need,
				 carry);
	r = find_rec(rt, 2 * node, nlo, nlen / 2, from, to, need, carry);
	if (r != RT_NONE)
		return r;
	return find_rec(rt, 2 * node + 1, nlo + nlen / 2, nlen / 2, from, to, need, carry);
}

static uint64_t find_run(const struct dmm_rt *rt, uint64_t from, uint64_t to, uint64_t need)
{
	uint64_t carry = 0;
	if (from >= to || to - from < need)
		return RT_NONE;
	return find_rec(rt, 1, rt->base, rt->nr_leaves * 64, from, to, need, &carry);
}

/* First page in [from, to) that is not free. */
static uint64_t zero_rec(const struct dmm_rt *rt, uint64_t node, uint64_t nlo, uint64_t nlen,
			 uint64_t from, uint64_t to)
{
	uint64_t nhi = nlo + nlen, r;

	if (nhi <= from || nlo >= to)
		return RT_NONE;
	if (nlo >= from && nhi <= to) /* the first non-free page is right after the free prefix */
		return rt->tree[node].pre == nlen ? RT_NONE : nlo + rt->tree[node].pre;
	if (nlen == 64) {
		uint64_t w = ~rt->bitmap[node - rt->nr_leaves] & window_mask(nlo, from, to);
		return w ? nlo + dmm_ctz64(w) : RT_NONE;
	}
	r = zero_rec(rt, 2 * node, nlo, nlen / 2, from, to);
	if (r != RT_NONE)
		return r;
	return zero_rec(rt, 2 * node + 1, nlo + nlen / 2, nlen / 2, from, to);
}

static uint64_t run_end(const struct dmm_rt *rt, uint64_t from, uint64_t to)
{
	uint64_t r;
	if (from >= to)
		return to;
	r = zero_rec(rt, 1, rt->base, rt->nr_leaves * 64, from, to);
	return r == RT_NONE ? to : r;
}

/* An aligned, boundary-respecting start for n pages inside [rs, re). */
static uint64_t fit_in_run(uint64_t rs, uint64_t re, uint64_t n, uint64_t align, uint64_t boundary)
{
	uint64_t s = dmm_align_up(rs, align);

	for (int i = 0; i < 3; i++) {
		if (s + n > re || s + n < s)
			return RT_NONE;
		if (!boundary || s / boundary == (s + n - 1) / boundary)
			return s;
		s = dmm_align_up(dmm_align_up(s + 1, boundary), align);
	}
	return RT_NONE;
}

bool dmm__rt_find_fit(struct dmm_rt *rt, dmm_pfn_t lo, dmm_pfn_t hi, uint64_t n,
		      uint64_t align, uint64_t boundary, dmm_pfn_t *out)
{
	uint64_t pos = lo, rs, re, s, guarantee;

	rt_flush(rt);
	if (!align)
		align = 1;
	for (int i = 0; i < RT_FIRST_FIT_TRIES; i++) {
		rs = find_run(rt, pos, hi, n);
		if (rs == RT_NONE)
			return false;
		re = run_end(rt, rs + n, hi);
		s = fit_in_run(rs, re, n, align, boundary);
		if (s != RT_NONE) {
			*out = s;
			return true;
		}
		pos = re;
	}
	guarantee = n + align - 1;
	if (boundary && align < boundary)
		guarantee *= 2;
	rs = find_run(rt, pos, hi, guarantee);
	if (rs != RT_NONE) {
		re = run_end(rt, rs + guarantee, hi);
		s = fit_in_run(rs, re, n, align, boundary);
		if (s != RT_NONE) {
			*out = s;
			return true;
		}
	}
	/* No guaranteed run: the remaining candidates are all shorter than G. */
	for (;;) {
		rs = find_run(rt, pos, hi, n);
		if (rs == RT_NONE)
			return false;
		re = run_end(rt, rs + n, hi);
		s = fit_in_run(rs, re, n, align, boundary);
		if (s != RT_NONE) {
			*out = s;
			return true;
		}
		pos = re;
	}
}

/* ---- taking and giving pages ----------------------------------------------------- */

/* Put [a, b) on the free lists as maximal aligned blocks, without merging. */
static void add_pieces(struct dmm_zone *z, dmm_pfn_t a, dmm_pfn_t b, unsigned mt)
{
	while (a < b) {
		unsigned o = a ? dmm_ctz64(a) : DMM_MAX_ORDER;
		if (o > DMM_MAX_ORDER)
			o = DMM_MAX_ORDER;
		while (((uint64_t)1 << o) > b - a)
			o--;
		dmm__add_free_locked(z, dmm__pfn_page(z->mem, a), o, mt);
		a += (uint64_t)1 << o;
	}
}

void dmm__take_range_locked(struct dmm_zone *z, dmm_pfn_t pfn, uint64_t n)
{
	dmm_pfn_t p = pfn, e = pfn + n;

	while (p < e) {
		/* Only the first block needs a search: the free blocks covering a
		 * free range are adjacent, so each later one starts where the
		 * previous one ended. */
		struct dmm_page *h = p == pfn ? dmm__free_head_of(z, p) : dmm__pfn_page(z->mem, p);
		dmm_pfn_t hs, he;
		unsigned mt;

		DMM_ASSERT(z->mem, h && dmm__state(h) == DMM_PAGE_FREE);
		hs = h->pfn;
		he = hs + ((uint64_t)1 << dmm__order(h));
		mt = dmm__mt(h);
		dmm__del_free_locked(z, h);
		add_pieces(z, hs, p, mt);
		add_pieces(z, e < he ? e : he, he, mt);
		p = e < he ? e : he;
	}
	dmm__rt_mark(&z->rt, pfn, n, false);
}

void dmm__give_range_locked(struct dmm_zone *z, dmm_pfn_t pfn, uint64_t n)
{
	dmm_pfn_t a = pfn, b = pfn + n;

	while (a < b) {
		unsigned o = a ? dmm_ctz64(a) : DMM_MAX_ORDER;
		if (o > DMM_MAX_ORDER)
			o = DMM_MAX_ORDER;
		while (((uint64_t)1 << o) > b - a)
			o--;
		dmm__free_block_locked(z, a, o);
		a += (uint64_t)1 << o;
	}
}

int dmm__range_take_in_zone(struct dmm_zone *z, dmm_pfn_t lo, dmm_pfn_t hi, uint64_t n,
			    uint64_t align_pages, uint64_t boundary_pages, dmm_pfn_t *out)
{
	dmm_pfn_t s;
	bool ok;

	dmm__lock(z->mem, &z->lock);
	ok = dmm__rt_find_fit(&z->rt, lo, hi, n, align_pages, boundary_pages, &s);
	if (ok) {
		dmm__take_range_locked(z, s, n);
		z->stats.range_pages += n;
	}
	dmm__unlock(z->mem, &z->lock);
	if (!ok)
		return -DMM_ENOMEM;
	*out = s;
	return 0;
}

/* ---- public entry points ----------------------------------------------------------- */

/* dmm_alloc_range, and with DMM_GFP__INTERNAL dmm__lib_alloc_range */
static int alloc_range(struct dmm_mem *mem, const struct dmm_constraint *c, uint64_t nr_pages, unsigned flags,
		       dmm_pfn_t *pfn)
{
	dmm_pfn_t lo, hi, got;
	uint64_t align_pages, boundary_pages;
	int ci, err;
	bool saw_wmark = false;

	if (!mem || !c || !pfn || nr_pages == 0 || (flags & ~(DMM_GFP_ALL | DMM_GFP__INTERNAL)) ||
	    (flags & (DMM_GFP_DMA | DMM_GFP_DMA32)))
		return dmm__count_invalid(mem);
	if (dmm_constraint_validate(c) || nr_pages > ((uint64_t)1 << (52 - DMM_PAGE_SHIFT)))
		return dmm__count_invalid(mem);
	if (c->boundary && c->boundary < (uint64_t)nr_pages * DMM_PAGE_SIZE)
		return dmm__count_invalid(mem);
	err = dmm__constraint_pfns(mem, c, &lo, &hi);
	if (err)
		return dmm__count_range(mem);
	align_pages = dmm_max64(1, c->align >> DMM_PAGE_SHIFT);
	boundary_pages = c->boundary >> DMM_PAGE_SHIFT;
	ci = dmm__class_zone(mem, lo, hi);

	for (int attempt = 0; attempt < 2; attempt++) {
		struct dmm_zone *cz = &mem->zones[ci];
		uint64_t held = 0;

		for (int i = ci; i >= 0; i--) {
			struct dmm_zone *z = &mem->zones[i];
			struct dmm_page *pg;

			if (z->start_pfn >= hi || z->end_pfn <= lo || !dmm__lowmem_policy_allows(mem, z, cz))
				continue;
			/* the index never holds pages of contiguous areas: they do
			 * not count towards the watermark either */
			int wm = dmm__zone_wmark_check(z, nr_pages, flags | DMM_GFP_NOCMA, cz->type);
			if (wm) {
				saw_wmark |= wm == -DMM_EWMARK;
				continue;
			}
			if (dmm__range_take_in_zone(z, dmm_max64(lo, z->start_pfn), dmm_min64(hi, z->end_pfn),
						    nr_pages, align_pages, boundary_pages, &got))
				continue;
			pg = dmm__pfn_page(mem, got);
			/* before the state: a pinner that sees RANGE sees the mark */
			if (flags & DMM_GFP__INTERNAL)
				dmm__lib_mark(mem, got, nr_pages);
			dmm__set_state(pg, DMM_PAGE_RANGE);
			dmm__set_order(pg, 0);
			dmm__set_mt(pg, DMM_MT_UNMOVABLE);
			pg->private = nr_pages;
			pg->refcount = 1;
			/* pin counts left alone, as mark_allocated (page_alloc.c) */
			pg->owner = (void *)0;
			__atomic_fetch_add(&z->stats.range_ok, 1, __ATOMIC_RELAXED);
			if (flags & DMM_GFP_ZERO)
				dmm__zero_pages(mem, got, nr_pages);
			dmm__wmark_after_alloc(z);
			*pfn = got;
			return 0;
		}
		for (int i = ci; i >= 0; i--)
			held += dmm__zone_pcp_pages(&mem->zones[i]);
		if (!held)
			break;
		for (int i = ci; i >= 0; i--)
			dmm__drain_zone_pcp(&mem->zones[i]);
	}
	return dmm__count_fail(mem, ci, lo, hi, saw_wmark);
}

int dmm_alloc_range(struct dmm_mem *mem, const struct dmm_constraint *c, size_t nr_pages,
		    unsigned flags, dmm_pfn_t *pfn)
{
	if (flags & DMM_GFP__INTERNAL) /* the library's own request flag, no caller's */
		return dmm__count_invalid(mem);
	return alloc_range(mem, c, nr_pages, flags, pfn);
}

int dmm__lib_alloc_range(struct dmm_mem *mem, const struct dmm_constraint *c, uint64_t nr_pages, unsigned flags,
			 dmm_pfn_t *pfn)
{
	return alloc_range(mem, c, nr_pages, flags | DMM_GFP__INTERNAL, pfn);
}

/* The range of @n pages headed by @pg, claimed (FREEING), back to the buddy
 * lists (zone lock held). */
static void give_claimed_locked(struct dmm_zone *z, struct dmm_page *pg, uint64_t n)
{
	dmm__set_state(pg, DMM_PAGE_TAIL);
	pg->private = 0;
	pg->refcount = 0;
	dmm__give_range_locked(z, pg->pfn, n);
	z->stats.range_free++;
}

int dmm_free_range(struct dmm_mem *mem, dmm_pfn_t pfn, size_t nr_pages)
{
	struct dmm_page *pg;
	struct dmm_zone *z;
	int err = 0;

	if (!mem)
		return -DMM_EINVAL;
	pg = dmm_pfn_to_page(mem, pfn);
	if (!pg || pg->zone >= mem->nr_zones)
		return -DMM_ENOENT;
	z = &mem->zones[pg->zone];
	/* Checked under the zone lock, where the state changes: of two frees
	 * of one range at once, the second finds it given back already. */
	dmm__lock(mem, &z->lock);
	/* a range owned by a contiguous area is released through that area */
	if (dmm__state(pg) != DMM_PAGE_RANGE || pg->owner)
		err = -DMM_ENOENT;
	else if (pg->private != nr_pages)
		err = -DMM_EINVAL;
	else if (__atomic_load_n(&pg->flags, __ATOMIC_RELAXED) & DMM_PGF_COHERENT)
		err = -DMM_EBUSY; /* a coherent DMA buffer (dmm_dma_free_coherent gives it back) */
	else if (__atomic_load_n(&pg->flags, __ATOMIC_RELAXED) & DMM_PGF_INTERNAL)
		err = -DMM_EPERM; /* the library's own memory (dmm__lib_free_range) */
	if (!err)
		err = dmm__free_claim(pg, DMM_PAGE_RANGE); /* -DMM_EBUSY: pinned */
	if (err) {
		dmm__unlock(mem, &z->lock);
		__atomic_fetch_add(&z->stats.bad_free, 1, __ATOMIC_RELAXED);
		return err;
	}
	give_claimed_locked(z, pg, nr_pages);
	dmm__unlock(mem, &z->lock);
	dmm__wmark_after_free(z);
	return 0;
}

void dmm__range_free_claimed(struct dmm_mem *mem, struct dmm_zone *z, struct dmm_page *pg)
{
	dmm__lock(mem, &z->lock);
	give_claimed_locked(z, pg, pg->private);
	dmm__unlock(mem, &z->lock);
	dmm__wmark_after_free(z);
}

/* ---- invariants ----------------------------------------------------------------------- */

int dmm__rt_check_zone(const struct dmm_mem *mem, struct dmm_zone *z)
{
	struct dmm_rt *rt = &z->rt;
	uint32_t half = 64;

	rt_flush(rt);
	for (uint64_t i = 0; i < rt->nr_leaves; i++) {
		uint64_t w = i < rt->nr_words ? rt->bitmap[i] : 0;
		struct dmm_rt_node n = leaf_summary(w);
		for (unsigned b = 0; b < 64 && w; b++) {
			dmm_pfn_t pfn = rt->base + i * 64 + b;
			if (((w >> b) & 1) && (pfn < z->start_pfn || pfn >= z->end_pfn)) {
				dmm_log(mem, DMM_LOG_ERR, "range check: pfn %llu outside zone marked free",
					(unsigned long long)pfn);
				return -DMM_EFAULT;
			}
		}
		if (!node_eq(&n, &rt->tree[rt->nr_leaves + i])) {
			dmm_log(mem, DMM_LOG_ERR, "range check: zone %s leaf %llu summary stale",
				dmm_zone_name(z->type), (unsigned long long)i);
			return -DMM_EFAULT;
		}
	}
	for (uint64_t level = rt->nr_leaves >> 1; level >= 1; level >>= 1) {
		for (uint64_t i = level; i < 2 * level; i++) {
			struct dmm_rt_node n = combine(&rt->tree[2 * i], &rt->tree[2 * i + 1], half);
			if (!node_eq(&n, &rt->tree[i])) {
				dmm_log(mem, DMM_LOG_ERR, "range check: zone %s node %llu summary stale",
					dmm_zone_name(z->type), (unsigned long long)i);
				return -DMM_EFAULT;
			}
		}
		half <<= 1;
	}
	return 0;
}

int dmm_range_check(struct dmm_mem *mem)
{
	int err = 0;

	if (!mem)
		return -DMM_EINVAL;
	for (unsigned i = 0; i < mem->nr_zones && !err; i++) {
		struct dmm_zone *z = &mem->zones[i];
		dmm__lock(mem, &z->lock);
		err = dmm__rt_check_zone(mem, z);
		/* Every range head must cover pages that are not buddy-free. */
		for (dmm_pfn_t p = z->start_pfn; p < z->end_pfn && !err; p++) {
			struct dmm_page *pg = dmm__pfn_page(mem, p);
			if (!pg || dmm__state(pg) != DMM_PAGE_RANGE)
				continue;
			if (p + pg->private > z->end_pfn) {
				dmm_log(mem, DMM_LOG_ERR, "range check: range at %llu leaves its zone",
					(unsigned long long)p);
				err = -DMM_EFAULT;
				break;
			}
			for (uint64_t k = 0; k < pg->private; k++) {
				struct dmm_page *q = dmm__pfn_page(mem, p + k);
				if (dmm__rt_test(&z->rt, p + k) || (k && dmm__state(q) != DMM_PAGE_TAIL)) {
					dmm_log(mem, DMM_LOG_ERR, "range check: page %llu of range %llu is not owned",
						(unsigned long long)(p + k), (unsigned long long)p);
					err = -DMM_EFAULT;
					break;
				}
			}
		}
		dmm__unlock(mem, &z->lock);
	}
	return err;
}

/* SPDX-License-Identifier: MIT */
/*
 * classic_iova: the classic Linux IOVA allocator (red-black tree, cached
 * nodes, max32_alloc_size), rebuilt as the baseline of bench_iova. See
 * classic_iova.h for what it is and is not.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "classic_iova.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bsd/sys/tree.h>

#define IOVA_ANCHOR (~(uint64_t)0)

struct civ {
	RB_ENTRY(civ) node;
	uint64_t pfn_lo, pfn_hi;
};

RB_HEAD(civ_tree, civ);

static int civ_cmp(const struct civ *a, const struct civ *b)
{
	return (a->pfn_lo > b->pfn_lo) - (a->pfn_lo < b->pfn_lo);
}

/* libbsd's cdefs.h leaves __unused undefined (it clashes with Linux
 * headers); the _STATIC generator needs it. Defined only around it. */
#ifndef __unused
#define __unused __attribute__((__unused__))
#define CIV_UNDEF_UNUSED
#endif
RB_GENERATE_STATIC(civ_tree, civ, node, civ_cmp)
#ifdef CIV_UNDEF_UNUSED
#undef __unused
#undef CIV_UNDEF_UNUSED
#endif

struct classic_iova_domain {
	pthread_mutex_t lock;
	struct civ_tree root;
	struct civ *cached_node;     /* where full-limit searches start */
	struct civ *cached32_node;   /* where searches limited to 32 bits start */
	uint64_t start_pfn;
	uint64_t dma_32bit_pfn;
	uint64_t max32_alloc_size;   /* smallest size that failed (below 32 bits) */
	struct civ anchor;           /* pfn_lo = pfn_hi = ~0: always the last node */
	struct classic_iova_stats st;
};

#define LEFT(n) RB_LEFT(n, node)
#define RIGHT(n) RB_RIGHT(n, node)
#define PREV(n) civ_tree_RB_PREV(n)
#define NEXT(n) civ_tree_RB_NEXT(n)

int classic_iova_domain_create(uint64_t start_pfn, uint64_t dma_32bit_pfn,
			       struct classic_iova_domain **out)
{
	struct classic_iova_domain *d = calloc(1, sizeof(*d));

	if (!d)
		return -1;
	pthread_mutex_init(&d->lock, NULL);
	RB_INIT(&d->root);
	d->start_pfn = start_pfn ? start_pfn : 1;
	d->dma_32bit_pfn = dma_32bit_pfn;
	d->max32_alloc_size = dma_32bit_pfn;
	d->anchor.pfn_lo = d->anchor.pfn_hi = IOVA_ANCHOR;
	civ_tree_RB_INSERT(&d->root, &d->anchor);
	d->cached_node = d->cached32_node = &d->anchor;
	*out = d;
	return 0;
}

void classic_iova_domain_destroy(struct classic_iova_domain *d)
{
	struct civ *n, *next;

	if (!d)
		return;
	for (n = RB_MIN(civ_tree, &d->root); n; n = next) {
		next = NEXT(n);
		civ_tree_RB_REMOVE(&d->root, n);
		if (n != &d->anchor)
			free(n);
	}
	pthread_mutex_destroy(&d->lock);
	free(d);
}

/* ---- cached nodes ---------------------------------------------------------- */

static struct civ *cached_start(struct classic_iova_domain *d, uint64_t limit_pfn)
{
	/* @limit_pfn is exclusive here, as in Linux's __alloc_and_insert_iova_range */
	return limit_pfn <= d->dma_32bit_pfn ? d->cached32_node : d->cached_node;
}

static void cached_insert_update(struct classic_iova_domain *d, struct civ *n)
{
	if (n->pfn_hi < d->dma_32bit_pfn)
		d->cached32_node = n;
	else
		d->cached_node = n;
}

/* Called before @f leaves the tree. */
static void cached_delete_update(struct classic_iova_domain *d, struct civ *f)
{
	struct civ *c = d->cached32_node;

	if (f == c || (f->pfn_hi < d->dma_32bit_pfn && f->pfn_lo >= c->pfn_lo))
		d->cached32_node = NEXT(f);
	if (f->pfn_lo < d->dma_32bit_pfn)
		d->max32_alloc_size = d->dma_32bit_pfn;
	c = d->cached_node;
	if (f->pfn_lo >= c->pfn_lo)
		d->cached_node = NEXT(f);
}

/*
 * The node to start a retry from: the lowest node whose range ends at or
 * above @limit_pfn (exclusive limit), or near it. Linux's iova_find_limit():
 * for limits above 32 bits it simply starts at the anchor.
 */
static struct civ *find_limit(struct classic_iova_domain *d, uint64_t limit_pfn)
{
	struct civ *n, *next;

	if (limit_pfn > d->dma_32bit_pfn)
		return &d->anchor;
	n = RB_ROOT(&d->root);
	while (n->pfn_hi < limit_pfn) {
		n = RIGHT(n);
		d->st.search_steps++;
	}
search_left:
	while (LEFT(n) && LEFT(n)->pfn_lo >= limit_pfn) {
		n = LEFT(n);
		d->st.search_steps++;
	}
	if (!LEFT(n))
		return n;
	next = LEFT(n);
	while (RIGHT(next)) {
		next = RIGHT(next);
		d->st.search_steps++;
		if (next->pfn_lo >= limit_pfn) {
			n = next;
			goto search_left;
		}
	}
	return n;
}

static int fls64(uint64_t x)
{
	return x ? 64 - __builtin_clzll(x) : 0;
}

/* Linux's __alloc_and_insert_iova_range(); @limit_pfn exclusive. Lock held. */
static int alloc_and_insert(struct classic_iova_domain *d, uint64_t size, uint64_t limit_pfn,
			    struct civ *new, int size_aligned)
{
	struct civ *curr, *prev;
	uint64_t new_pfn, retry_pfn;
	uint64_t align_mask = ~(uint64_t)0;
	uint64_t high_pfn = limit_pfn, low_pfn = d->start_pfn;

	if (size_aligned)
		align_mask <<= fls64(size - 1);

	if (limit_pfn <= d->dma_32bit_pfn && size >= d->max32_alloc_size) {
		d->st.fast_fail++;
		return -1;
	}
	curr = cached_start(d, limit_pfn);
	retry_pfn = curr->pfn_hi;
retry:
	do {
		if (curr->pfn_lo < high_pfn)
			high_pfn = curr->pfn_lo;
		new_pfn = (high_pfn - size) & align_mask;   /* wraps if high_pfn < size */
		prev = curr;
		curr = PREV(curr);
		d->st.search_steps++;
	} while (curr && new_pfn <= curr->pfn_hi && new_pfn >= low_pfn);

	if (high_pfn < size || new_pfn < low_pfn) {
		if (low_pfn == d->start_pfn && retry_pfn < limit_pfn) {
			/* search what lies above where the first walk started */
			high_pfn = limit_pfn;
			low_pfn = retry_pfn + 1;
			curr = find_limit(d, limit_pfn);
			d->st.retries++;
			goto retry;
		}
		d->max32_alloc_size = size;
		return -1;
	}
	new->pfn_lo = new_pfn;
	new->pfn_hi = new_pfn + size - 1;
	/* Linux descends from @prev; the BSD macros descend from the root
	 * (O(log n) either way) */
	(void)prev;
	civ_tree_RB_INSERT(&d->root, new);
	cached_insert_update(d, new);
	return 0;
}

int classic_iova_alloc(struct classic_iova_domain *d, uint64_t size, uint64_t limit_pfn, int size_aligned,
		       uint64_t *pfn)
{
	struct civ *n;
	int rc;

	if (size == 0 || limit_pfn == IOVA_ANCHOR) {
		pthread_mutex_lock(&d->lock);
		d->st.fail++;
		pthread_mutex_unlock(&d->lock);
		return -1;
	}
	n = malloc(sizeof(*n));
	if (!n)
		return -1;
	pthread_mutex_lock(&d->lock);
	rc = alloc_and_insert(d, size, limit_pfn + 1, n, size_aligned);
	if (rc == 0) {
		d->st.allocs++;
		d->st.ranges++;
		d->st.pages += size;
		*pfn = n->pfn_lo;
	} else {
		d->st.fail++;
	}
	pthread_mutex_unlock(&d->lock);
	if (rc)
		free(n);
	return rc;
}

/* Linux's private_find_iova(). Lock held. */
static struct civ *find_locked(struct classic_iova_domain *d, uint64_t pfn)
{
	struct civ *n = RB_ROOT(&d->root);

	while (n) {
		if (pfn < n->pfn_lo)
			n = LEFT(n);
		else if (pfn > n->pfn_hi)
			n = RIGHT(n);
		else
			return n == &d->anchor ? NULL : n;
	}
	return NULL;
}

int classic_iova_free(struct classic_iova_domain *d, uint64_t pfn)
{
	struct civ *n;

	pthread_mutex_lock(&d->lock);
	n = find_locked(d, pfn);
	if (!n) {
		pthread_mutex_unlock(&d->lock);
		return -1;
	}
	cached_delete_update(d, n);
	civ_tree_RB_REMOVE(&d->root, n);
	d->st.frees++;
	d->st.ranges--;
	d->st.pages -= n->pfn_hi - n->pfn_lo + 1;
	pthread_mutex_unlock(&d->lock);
	free(n);
	return 0;
}

int classic_iova_find(struct classic_iova_domain *d, uint64_t pfn, uint64_t *pfn_lo, uint64_t *pfn_hi)
{
	struct civ *n;

	pthread_mutex_lock(&d->lock);
	n = find_locked(d, pfn);
	if (n) {
		*pfn_lo = n->pfn_lo;
		*pfn_hi = n->pfn_hi;
	}
	pthread_mutex_unlock(&d->lock);
	return n ? 0 : -1;
}

void classic_iova_get_stats(struct classic_iova_domain *d, struct classic_iova_stats *st)
{
	pthread_mutex_lock(&d->lock);
	*st = d->st;
	st->max32_alloc_size = d->max32_alloc_size;
	st->cached_pfn_lo = d->cached_node->pfn_lo;
	st->cached32_pfn_lo = d->cached32_node->pfn_lo;
	pthread_mutex_unlock(&d->lock);
}

/* ---- check ------------------------------------------------------------------ */

__attribute__((format(printf, 3, 4)))
static int fault(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (why && len) {
		va_start(ap, fmt);
		vsnprintf(why, len, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* Black height of @n's subtree, or -1 after recording a fault. */
static int rb_verify(const struct civ *n, const struct civ *parent, char *why, size_t len)
{
	int l, r;

	if (!n)
		return 1;
	if (RB_PARENT(n, node) != parent)
		return fault(why, len, "node [%#llx, %#llx]: wrong parent link", (unsigned long long)n->pfn_lo,
			     (unsigned long long)n->pfn_hi);
	if (RB_COLOR(n, node) == RB_RED &&
	    ((LEFT(n) && RB_COLOR(LEFT(n), node) == RB_RED) || (RIGHT(n) && RB_COLOR(RIGHT(n), node) == RB_RED)))
		return fault(why, len, "red node [%#llx, %#llx] with a red child", (unsigned long long)n->pfn_lo,
			     (unsigned long long)n->pfn_hi);
	l = rb_verify(LEFT(n), n, why, len);
	if (l < 0)
		return -1;
	r = rb_verify(RIGHT(n), n, why, len);
	if (r < 0)
		return -1;
	if (l != r)
		return fault(why, len, "node [%#llx, %#llx]: black heights %d and %d",
			     (unsigned long long)n->pfn_lo, (unsigned long long)n->pfn_hi, l, r);
	return l + (RB_COLOR(n, node) == RB_BLACK);
}

int classic_iova_check(struct classic_iova_domain *d, char *why, size_t len)
{
	struct civ *n;
	const struct civ *prev = NULL;
	uint64_t ranges = 0, pages = 0;
	int seen_cached = 0, seen_cached32 = 0, rc = 0;

	pthread_mutex_lock(&d->lock);
	if (!RB_ROOT(&d->root) || RB_COLOR(RB_ROOT(&d->root), node) != RB_BLACK) {
		rc = fault(why, len, "no root or a red root");
		goto out;
	}
	if (rb_verify(RB_ROOT(&d->root), NULL, why, len) < 0) {
		rc = -1;
		goto out;
	}
	RB_FOREACH(n, civ_tree, &d->root) {
		if (n->pfn_lo > n->pfn_hi) {
			rc = fault(why, len, "range [%#llx, %#llx] reversed", (unsigned long long)n->pfn_lo,
				   (unsigned long long)n->pfn_hi);
			goto out;
		}
		if (prev && prev->pfn_hi >= n->pfn_lo) {
			rc = fault(why, len, "ranges [%#llx, %#llx] and [%#llx, %#llx] overlap or are out of order",
				   (unsigned long long)prev->pfn_lo, (unsigned long long)prev->pfn_hi,
				   (unsigned long long)n->pfn_lo, (unsigned long long)n->pfn_hi);
			goto out;
		}
		if (n != &d->anchor) {
			if (n->pfn_lo < d->start_pfn) {
				rc = fault(why, len, "range at %#llx below start_pfn %#llx",
					   (unsigned long long)n->pfn_lo, (unsigned long long)d->start_pfn);
				goto out;
			}
			ranges++;
			pages += n->pfn_hi - n->pfn_lo + 1;
		}
		seen_cached |= n == d->cached_node;
		seen_cached32 |= n == d->cached32_node;
		prev = n;
	}
	if (prev != &d->anchor) {
		rc = fault(why, len, "the anchor is not the last node");
		goto out;
	}
	if (!seen_cached || !seen_cached32) {
		rc = fault(why, len, "a cached node is not in the tree");
		goto out;
	}
	if (ranges != d->st.ranges || pages != d->st.pages) {
		rc = fault(why, len, "counts: %llu ranges / %llu pages in the tree, %llu / %llu counted",
			   (unsigned long long)ranges, (unsigned long long)pages, (unsigned long long)d->st.ranges,
			   (unsigned long long)d->st.pages);
		goto out;
	}
	if (d->max32_alloc_size == 0 || d->max32_alloc_size > d->dma_32bit_pfn) {
		rc = fault(why, len, "max32_alloc_size %llu out of range", (unsigned long long)d->max32_alloc_size);
		goto out;
	}
out:
	pthread_mutex_unlock(&d->lock);
	return rc;
}

/* ---- self-test -------------------------------------------------------------- */

#define ST_PAGES 8192u        /* pfns 0..8191 */
#define ST_DMA32 2048u        /* the "32-bit" boundary of the test domains */

struct st_live {
	uint64_t pfn, size;
};

static uint64_t st_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Is there a free, suitably aligned slot of @size pages in [lo, limit]? */
static int st_fits(const uint8_t *used, uint64_t lo, uint64_t limit, uint64_t size, int aligned)
{
	uint64_t align = aligned ? classic_iova_roundup_pow2(size) : 1;

	for (uint64_t a = lo; a <= limit;) {
		uint64_t b, p;
		if (used[a]) {
			a++;
			continue;
		}
		for (b = a; b + 1 <= limit && !used[b + 1]; b++)
			;
		p = (a + align - 1) / align * align;
		if (p + size - 1 <= b)
			return 1;
		a = b + 1;
	}
	return 0;
}

static int st_run(uint64_t seed, long ops, int mixed, char *why, size_t len)
{
	struct classic_iova_domain *d;
	struct classic_iova_stats st;
	uint8_t *used = calloc(ST_PAGES, 1);
	struct st_live *live = calloc(ST_PAGES, sizeof(*live));
	uint64_t nlive = 0, npages = 0, s = seed, fails = 0, oks = 0;
	int rc = -1;

	if (!used || !live || classic_iova_domain_create(1, ST_DMA32, &d)) {
		free(used);
		free(live);
		return fault(why, len, "no memory");
	}
	for (long i = 0; i < ops; i++) {
		/* alternate phases that mostly allocate and mostly free */
		int alloc_pct = ((i / 2000) & 1) ? 35 : 75;
		if (nlive == 0 || (int)(st_rand(&s) % 100) < alloc_pct) {
			uint64_t size = 1 + st_rand(&s) % (1 + (st_rand(&s) % 64));
			uint64_t limit = ST_DMA32 - 1;
			int aligned = 1;
			uint64_t pfn = 0, lo, hi;
			if (mixed) {
				limit = 64 + st_rand(&s) % (ST_PAGES - 64);
				aligned = (int)(st_rand(&s) % 4 != 0);
			}
			if (classic_iova_alloc(d, size, limit, aligned, &pfn)) {
				fails++;
				/* one limit, all aligned: a failure must be a real one. Above
				 * the 32-bit boundary there is no fast fail at all. */
				if ((!mixed || limit + 1 > ST_DMA32) && st_fits(used, 1, limit, size, aligned)) {
					fault(why, len, "op %ld: %llu pages below %#llx (aligned %d) failed with room left",
					      i, (unsigned long long)size, (unsigned long long)limit, aligned);
					goto out;
				}
				continue;
			}
			oks++;
			if (pfn < 1 || pfn + size - 1 > limit ||
			    (aligned && pfn % classic_iova_roundup_pow2(size))) {
				fault(why, len, "op %ld: [%#llx, +%llu) outside [1, %#llx] or misaligned", i,
				      (unsigned long long)pfn, (unsigned long long)size, (unsigned long long)limit);
				goto out;
			}
			for (uint64_t p = pfn; p < pfn + size; p++) {
				if (used[p]) {
					fault(why, len, "op %ld: [%#llx, +%llu) overlaps a live range", i,
					      (unsigned long long)pfn, (unsigned long long)size);
					goto out;
				}
				used[p] = 1;
			}
			if (classic_iova_find(d, pfn + size - 1, &lo, &hi) || lo != pfn || hi != pfn + size - 1) {
				fault(why, len, "op %ld: find does not return the new range", i);
				goto out;
			}
			live[nlive].pfn = pfn;
			live[nlive].size = size;
			nlive++;
			npages += size;
		} else {
			uint64_t k = st_rand(&s) % nlive;
			struct st_live r = live[k];
			/* free by any pfn inside the range, as free_iova() allows */
			if (classic_iova_free(d, r.pfn + st_rand(&s) % r.size)) {
				fault(why, len, "op %ld: free of a live range failed", i);
				goto out;
			}
			if (classic_iova_free(d, r.pfn) == 0) {
				fault(why, len, "op %ld: second free succeeded", i);
				goto out;
			}
			memset(used + r.pfn, 0, r.size);
			live[k] = live[--nlive];
			npages -= r.size;
		}
		if (i % 97 == 0 && classic_iova_check(d, why, len))
			goto out;
	}
	if (classic_iova_check(d, why, len))
		goto out;
	classic_iova_get_stats(d, &st);
	if (st.ranges != nlive || st.pages != npages) {
		fault(why, len, "stats: %llu ranges / %llu pages, the bitmap has %llu / %llu",
		      (unsigned long long)st.ranges, (unsigned long long)st.pages, (unsigned long long)nlive,
		      (unsigned long long)npages);
		goto out;
	}
	if (ops >= 10000 && (!fails || !oks || (!mixed && !st.fast_fail))) {
		fault(why, len, "the test did not reach its cases (%llu ok, %llu failed, %llu fast)",
		      (unsigned long long)oks, (unsigned long long)fails, (unsigned long long)st.fast_fail);
		goto out;
	}
	rc = 0;
out:
	classic_iova_domain_destroy(d);
	free(used);
	free(live);
	return rc;
}

/* The cached-node and max32 rules, step by step. */
static int st_rules(char *why, size_t len)
{
	struct classic_iova_domain *d;
	struct classic_iova_stats st;
	uint64_t a, b, c, x;
	int rc = -1;

	if (classic_iova_domain_create(1, ST_DMA32, &d))
		return fault(why, len, "no memory");
	/* top-down: a, b, c just below the limit, cached32 follows the newest */
	if (classic_iova_alloc(d, 1, ST_DMA32 - 1, 1, &a) || classic_iova_alloc(d, 1, ST_DMA32 - 1, 1, &b) ||
	    classic_iova_alloc(d, 1, ST_DMA32 - 1, 1, &c) || a != ST_DMA32 - 1 || b != a - 1 || c != b - 1) {
		fault(why, len, "rules: not top-down");
		goto out;
	}
	classic_iova_get_stats(d, &st);
	if (st.cached32_pfn_lo != c || st.cached_pfn_lo != IOVA_ANCHOR) {
		fault(why, len, "rules: cached32 not at the newest node");
		goto out;
	}
	/* freeing the cached node moves it to the next one */
	classic_iova_free(d, c);
	classic_iova_get_stats(d, &st);
	if (st.cached32_pfn_lo != b) {
		fault(why, len, "rules: free of the cached node did not move it up");
		goto out;
	}
	/* a free above the cached node moves it to that range's successor */
	classic_iova_free(d, a);
	classic_iova_get_stats(d, &st);
	if (st.cached32_pfn_lo != IOVA_ANCHOR) {
		fault(why, len, "rules: free above the cached node did not move it");
		goto out;
	}
	/* fill everything below the boundary; a failure sets max32, the next
	 * request of that size fails fast, a free below 32 bits resets it */
	while (classic_iova_alloc(d, 1, ST_DMA32 - 1, 1, &x) == 0)
		;
	classic_iova_get_stats(d, &st);
	if (st.max32_alloc_size != 1 || st.fast_fail != 0) {
		fault(why, len, "rules: max32_alloc_size %llu after a failure of 1 page",
		      (unsigned long long)st.max32_alloc_size);
		goto out;
	}
	if (classic_iova_alloc(d, 4, ST_DMA32 - 1, 1, &x) == 0) {
		fault(why, len, "rules: allocation in a full space");
		goto out;
	}
	classic_iova_get_stats(d, &st);
	if (st.fast_fail != 1) {
		fault(why, len, "rules: no fast fail");
		goto out;
	}
	classic_iova_free(d, 100);
	classic_iova_get_stats(d, &st);
	if (st.max32_alloc_size != ST_DMA32 || classic_iova_alloc(d, 1, ST_DMA32 - 1, 1, &x) || x != 100) {
		fault(why, len, "rules: a free below 32 bits did not reset max32_alloc_size");
		goto out;
	}
	rc = classic_iova_check(d, why, len);
out:
	classic_iova_domain_destroy(d);
	return rc;
}

int classic_iova_selftest(uint64_t seed, long ops, char *why, size_t len)
{
	if (st_rules(why, len))
		return -1;
	if (st_run(seed, ops, 0, why, len))
		return -1;
	return st_run(seed ^ 0x5555, ops, 1, why, len);
}

/* SPDX-License-Identifier: MIT */
/*
 * IOVA allocator.
 *
 * Slow path: a treap (a binary search tree kept balanced by random heap
 * priorities; expected depth O(log n)) of the allocated ranges, keyed by
 * first page. Each node also keeps the free gap just below it (from the end
 * of its predecessor, or the domain's first page) and the largest such gap
 * in its subtree. A sentinel node of length 0 just above the domain's last
 * page owns the top gap. A search for n pages aligned to a below a limit
 * walks from the root towards the highest fitting gap and skips every
 * subtree whose largest gap is too small, so the cost is O(log n) however
 * full the space is: the classic design instead starts from a cached node
 * and walks its predecessors one by one, which degrades to a linear walk
 * when the space below a 32-bit limit is nearly exhausted.
 *
 * Alignment: the search looks for the highest gap of at least n pages that
 * holds a block aligned to a. A gap of n + a - 1 pages always does, but a
 * shorter one may not, and such misfits cost extra visits; after
 * SEARCH_BUDGET visits the search gives up and looks instead for a gap of
 * n + a - 1 pages, which the summaries find in O(log n) (a lower placement,
 * counted as a fallback). With a == 1 (page policy, single pages) there are
 * no misfits.
 *
 * Fast path: per-CPU magazines of freed ranges by size class (1, 2, 4, ...,
 * 32 pages), two per class (loaded and previous, as in Bonwick's magazine
 * layer and the USENIX ATC 2015 IOVA design), and a depot of full
 * magazines. Ranges ending below 4 GiB are cached apart from higher ones
 * (bands), so a 32-bit request never misses because the cache is full of
 * high addresses. The caches never hold more than cache_max_pages pages in
 * all (a free beyond that goes to the tree), the depot keeps at most
 * depot_max magazines per class and band, and dmm_iova_trim() returns what
 * idle CPUs hold. A cached range stays allocated in the tree. Every
 * counter of the fast path lives in the CPU slot, under its lock: no clock
 * read, no atomic on a line another CPU writes.
 *
 * Locking: one lock per CPU slot for its magazines, one depot lock, one
 * tree lock; never two at once except CPU slot -> depot.
 */
#include <dmamem/iommu.h>
#include <dmamem/slab.h>

#include "dma/dma_internal.h"

#define IOVA_BANDS 2            /* 0: range ends below 4 GiB, 1: above */
#define IOVA_SLOTS_MAX 64
#define IOVA_MAG_DEFAULT 32
#define IOVA_MAG_MAX 128
#define PFN_4G ((dmm_pfn_t)1 << (32 - DMM_PAGE_SHIFT))

struct iova_node {
	dmm_pfn_t lo, hi;       /* reserved pages [lo, hi): the range and its guard */
	uint64_t pages;         /* the range itself (rounded size) */
	uint64_t gap;           /* free pages between the predecessor's hi and lo */
	uint64_t max_gap;       /* largest gap in this subtree */
	struct iova_node *l, *r;
	uint32_t prio;
};

struct iova_mag {
	uint32_t n;
	dmm_pfn_t pfn[];        /* first page of each cached range */
};

/* One CPU slot's magazines and counters, all under its lock: the fast
 * path touches no cache line another CPU writes. */
struct iova_cpu {
	_Alignas(64) struct dmm_lock lock; /* each slot on cache lines of its own */
	struct iova_mag *loaded[IOVA_BANDS][DMM_IOVA_CACHE_CLASSES];
	struct iova_mag *prev[IOVA_BANDS][DMM_IOVA_CACHE_CLASSES];
	uint64_t ops, trim_seen; /* cache operations; their count at the last trim */
	uint64_t pages, ranges;  /* held in this slot's magazines */
	uint64_t hits, misses, frees_cached, swaps;
};

struct iova_depot {
	uint32_t n;
	struct iova_mag *mag[];  /* depot_max entries: full ones and parked empties */
};

struct dmm_iova_domain {
	struct dmm_mem *mem;
	struct dmm_iova_opts o;
	dmm_pfn_t start, end;    /* pages [start, end] may be handed out */
	dmm_pfn_t self_pfn;
	uint64_t self_pages;
	_Alignas(64) struct dmm_lock tree_lock; /* the tree's line(s), apart from the read-mostly fields */
	struct iova_node *root;
	struct iova_node sentinel;
	uint32_t seed;
	uint64_t ranges, alloc_pages;   /* under tree_lock */
	struct iova_node *spare;        /* recycled tree nodes (under tree_lock) */
	uint32_t nr_spare;
	_Alignas(64) struct dmm_lock depot_lock;
	struct iova_depot *depot[IOVA_BANDS][DMM_IOVA_CACHE_CLASSES];
	uint64_t depot_pages, depot_ranges, depot_ops, depot_trim_seen; /* under depot_lock */
	uint64_t slot_max_pages, depot_max_pages; /* the bound, shared out */
	struct dmm_iova_stats st;       /* slow-path counters (atomic) */
	_Alignas(64) unsigned nr_slots;
	struct iova_cpu cpu[];
};

static inline void sadd(uint64_t *c, uint64_t v)
{
	__atomic_fetch_add(c, v, __ATOMIC_RELAXED);
}

static inline uint64_t umax(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

static uint64_t pow2_up(uint64_t n)
{
	return n <= 1 ? 1 : (uint64_t)1 << (64 - __builtin_clzll(n - 1));
}

void dmm_iova_opts_default(struct dmm_iova_opts *o)
{
	if (!o)
		return;
	*o = (struct dmm_iova_opts){ 0 };
	o->align = DMM_IOVA_ALIGN_POW2;
	o->mag_size = IOVA_MAG_DEFAULT;
	o->depot_max = 8;
	o->cache_max_pages = 16384;
	o->idle_trim_ns = 1000000000ull;
}

/* ---- sizes and classes ------------------------------------------------------- */

static uint64_t size_pages(const struct dmm_iova_domain *d, uint64_t size)
{
	uint64_t pages = (size + DMM_PAGE_SIZE - 1) >> DMM_PAGE_SHIFT;
	if (d->o.align == DMM_IOVA_ALIGN_POW2 && pages <= ((uint64_t)1 << (DMM_IOVA_CACHE_CLASSES - 1)))
		pages = pow2_up(pages);
	return pages;
}

static uint64_t align_pages(const struct dmm_iova_domain *d, uint64_t pages)
{
	return d->o.align == DMM_IOVA_ALIGN_POW2 ? pow2_up(pages) : 1;
}

/* Cache class of a range of @pages, or -1. */
static int class_of(const struct dmm_iova_domain *d, uint64_t pages)
{
	if (d->o.no_cache || (pages & (pages - 1)) || pages > ((uint64_t)1 << (DMM_IOVA_CACHE_CLASSES - 1)))
		return -1;
	return __builtin_ctzll(pages);
}

uint64_t dmm_iova_rounded(const struct dmm_iova_domain *d, uint64_t size)
{
	return d && size ? size_pages(d, size) << DMM_PAGE_SHIFT : 0;
}

/* ---- the treap ------------------------------------------------------------------ */

static inline uint64_t node_max(const struct iova_node *n)
{
	return n ? n->max_gap : 0;
}

/* Writes only what changes: a split and a merge at one key rebuild the
 * same shape (a treap's shape follows from its keys and priorities), so
 * most nodes on the path stay clean and another CPU's cache keeps them. */
static inline void pull(struct iova_node *n)
{
	uint64_t m = umax(n->gap, umax(node_max(n->l), node_max(n->r)));
	if (n->max_gap != m)
		n->max_gap = m;
}

static inline void set_child(struct iova_node **slot, struct iova_node *v)
{
	if (*slot != v)
		*slot = v;
}

static uint32_t next_prio(struct dmm_iova_domain *d)
{
	uint32_t x = d->seed;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return d->seed = x;
}

/* Split @t into keys < @key (*a) and >= @key (*b). */
static void split(struct iova_node *t, dmm_pfn_t key, struct iova_node **a, struct iova_node **b)
{
	if (!t) {
		*a = *b = (struct iova_node *)0;
	} else if (t->lo < key) {
		struct iova_node *r;
		split(t->r, key, &r, b);
		set_child(&t->r, r);
		pull(t);
		*a = t;
	} else {
		struct iova_node *l;
		split(t->l, key, a, &l);
		set_child(&t->l, l);
		pull(t);
		*b = t;
	}
}

/* Every key of @a is below every key of @b. */
static struct iova_node *merge(struct iova_node *a, struct iova_node *b)
{
	if (!a)
		return b;
	if (!b)
		return a;
	if (a->prio > b->prio) {
		set_child(&a->r, merge(a->r, b));
		pull(a);
		return a;
	}
	set_child(&b->l, merge(a, b->l));
	pull(b);
	return b;
}

static struct iova_node *rightmost(struct iova_node *t)
{
	while (t && t->r)
		t = t->r;
	return t;
}

/* Set the gap of the leftmost node of @t and repair the summaries on its path. */
static void set_leftmost_gap(struct iova_node *t, uint64_t gap)
{
	if (!t)
		return;
	if (t->l)
		set_leftmost_gap(t->l, gap);
	else if (t->gap != gap)
		t->gap = gap;
	pull(t);
}

static struct iova_node *find_node(struct iova_node *t, dmm_pfn_t pfn)
{
	while (t) {
		if (pfn < t->lo)
			t = t->l;
		else if (pfn >= t->hi && t->r)
			t = t->r;
		else
			return pfn < t->hi ? t : (struct iova_node *)0;
	}
	return t;
}

/* Insert @n (its lo/hi set) into the free space; under tree_lock. */
static void tree_insert(struct dmm_iova_domain *d, struct iova_node *n)
{
	struct iova_node *a, *b, *p;

	split(d->root, n->lo, &a, &b);
	p = rightmost(a);
	n->gap = n->lo - (p ? p->hi : d->start);
	n->l = n->r = (struct iova_node *)0;
	n->prio = next_prio(d);
	pull(n);
	{
		/* b is never empty: the sentinel is above every range */
		struct iova_node *s = b;
		while (s->l)
			s = s->l;
		set_leftmost_gap(b, s->lo - n->hi);
	}
	d->root = merge(merge(a, n), b);
	d->ranges++;
	d->alloc_pages += n->hi - n->lo;
}

/* Remove the node starting at @lo; under tree_lock. Returns it or NULL. */
static struct iova_node *tree_remove(struct dmm_iova_domain *d, dmm_pfn_t lo, uint64_t pages)
{
	struct iova_node *a, *b, *m, *c, *p, *s;

	m = find_node(d->root, lo);
	if (!m || m == &d->sentinel || m->lo != lo || m->pages != pages)
		return (struct iova_node *)0;
	split(d->root, lo, &a, &b);
	split(b, lo + 1, &m, &c);
	p = rightmost(a);
	for (s = c; s->l;)
		s = s->l;
	set_leftmost_gap(c, s->lo - (p ? p->hi : d->start));
	d->root = merge(a, c);
	d->ranges--;
	d->alloc_pages -= m->hi - m->lo;
	return m;
}

/*
 * Highest block of @n pages aligned to @a (absolute pfns) inside a gap of
 * at least @need pages and below @limit (inclusive): returns the node whose
 * gap holds it (*pfn set), or NULL. Each node visited costs one unit of
 * *@budget; at 0 the search gives up (NULL with *@budget == 0).
 */
static struct iova_node *search(struct iova_node *t, uint64_t n, uint64_t a, uint64_t need, dmm_pfn_t limit,
				dmm_pfn_t *pfn, uint64_t *budget)
{
	while (t) {
		struct iova_node *r;
		dmm_pfn_t gs, ge;

		if (!*budget)
			return (struct iova_node *)0;
		(*budget)--;
		if (t->max_gap < need)
			return (struct iova_node *)0;
		/* the right subtree's gaps all start at or above t->hi */
		if (t->r && t->hi <= limit && t->r->max_gap >= need) {
			r = search(t->r, n, a, need, limit, pfn, budget);
			if (r || !*budget)
				return r;
		}
		gs = t->lo - t->gap;
		ge = t->lo < limit + 1 ? t->lo : limit + 1;
		if (t->gap >= need && ge > gs && ge - gs >= n) {
			dmm_pfn_t s = (ge - n) & ~(a - 1);
			if (s >= gs && s + n <= ge) {
				*pfn = s;
				return t;
			}
		}
		if (!t->l || t->l->max_gap < need)
			return (struct iova_node *)0;
		t = t->l;
	}
	return (struct iova_node *)0;
}

#define SEARCH_BUDGET 256

static int tree_alloc(struct dmm_iova_domain *d, uint64_t pages, dmm_pfn_t limit, struct iova_node *n,
		      dmm_pfn_t *out)
{
	uint64_t a = align_pages(d, pages), len = pages + d->o.guard_pages, budget = SEARCH_BUDGET, steps;
	dmm_pfn_t pfn = 0;
	struct iova_node *at;

	/* The guard follows the range: the block is len pages with its first
	 * page aligned to a. First the exact search, highest fit first; only
	 * if misaligned gaps make it long, the search for a gap of len + a - 1
	 * pages, which always holds an aligned block (pure O(log n)); if there
	 * is none, the exact search without a budget, so that ENOSPC means
	 * no aligned fit at all. */
	at = search(d->root, len, a, len, limit + d->o.guard_pages, &pfn, &budget);
	steps = SEARCH_BUDGET - budget;
	if (!at && !budget) {
		budget = SEARCH_BUDGET;
		at = search(d->root, len, a, len + a - 1, limit + d->o.guard_pages, &pfn, &budget);
		steps += SEARCH_BUDGET - budget;
		sadd(&d->st.search_fallbacks, 1);
		if (!at) {
			budget = UINT64_MAX;
			at = search(d->root, len, a, len, limit + d->o.guard_pages, &pfn, &budget);
			steps += UINT64_MAX - budget;
		}
	}
	sadd(&d->st.search_steps, steps);
	if (!at)
		return -DMM_ENOSPC;
	n->lo = pfn;
	n->hi = pfn + len;
	n->pages = pages;
	tree_insert(d, n);
	*out = pfn;
	return 0;
}

/* ---- magazines ------------------------------------------------------------------- */

static unsigned band_of(dmm_pfn_t pfn, uint64_t pages)
{
	return pfn + pages <= PFN_4G ? 0 : 1;
}

static struct iova_cpu *this_cpu(struct dmm_iova_domain *d)
{
	const struct dmm_platform *p = &d->mem->plat;
	unsigned c = p->cpu_id ? p->cpu_id(p->ctx) : 0;
	return &d->cpu[c % d->nr_slots];
}

static struct iova_mag *mag_new(struct dmm_iova_domain *d)
{
	void *p;
	if (dmm__lib_kmalloc(d->mem, sizeof(struct iova_mag) + d->o.mag_size * sizeof(dmm_pfn_t), DMM_GFP_ATOMIC, &p))
		return (struct iova_mag *)0;
	((struct iova_mag *)p)->n = 0;
	return p;
}

#define SPARE_NODES 64 /* tree nodes kept for reuse: a tree pair costs no kmalloc */

/* Remove a range; its node is kept as a spare or put on @gone (freed by the
 * caller after the lock). Returns 0 or -DMM_ENOENT. Under tree_lock. */
static int tree_free_locked(struct dmm_iova_domain *d, dmm_pfn_t pfn, uint64_t pages, struct iova_node **gone)
{
	struct iova_node *m = tree_remove(d, pfn, pages);
	if (!m)
		return -DMM_ENOENT;
	if (d->nr_spare < SPARE_NODES) {
		m->l = d->spare;
		d->spare = m;
		d->nr_spare++;
	} else {
		m->l = *gone;
		*gone = m;
	}
	return 0;
}

static void free_nodes(struct dmm_iova_domain *d, struct iova_node *gone)
{
	while (gone) {
		struct iova_node *n = gone->l;
		dmm__lib_kfree(d->mem, gone);
		gone = n;
	}
}

/* Give a magazine's ranges back to the tree and empty it. */
static void mag_flush(struct dmm_iova_domain *d, struct iova_mag *m, unsigned cls)
{
	struct iova_node *gone = (struct iova_node *)0;
	uint64_t pages = (uint64_t)1 << cls;

	if (!m || !m->n)
		return;
	dmm__lock(d->mem, &d->tree_lock);
	for (uint32_t i = 0; i < m->n; i++)
		tree_free_locked(d, m->pfn[i], pages, &gone);
	dmm__unlock(d->mem, &d->tree_lock);
	m->n = 0;
	sadd(&d->st.cache_flushes, 1);
	free_nodes(d, gone);
}

/* Pop a cached range of class @cls, band @band, ending at or below @limit. */
static int cache_get(struct dmm_iova_domain *d, unsigned band, unsigned cls, dmm_pfn_t limit, dmm_pfn_t *pfn)
{
	struct iova_cpu *c = this_cpu(d);
	uint64_t pages = (uint64_t)1 << cls;
	struct iova_mag *m;
	int got = 0;

	dmm__lock(d->mem, &c->lock);
	c->ops++;
	m = c->loaded[band][cls];
	if (!m || !m->n) {
		struct iova_mag *p = c->prev[band][cls];
		if (p && p->n) {
			c->prev[band][cls] = m;
			c->loaded[band][cls] = m = p;
		} else {
			/* exchange the empty loaded magazine for a full one */
			struct iova_depot *dp = d->depot[band][cls];
			dmm__lock(d->mem, &d->depot_lock);
			for (uint32_t i = dp->n; i-- > 0;) {
				struct iova_mag *full = dp->mag[i];
				/* a full one that fits in this slot's share of the bound */
				if (!full->n || c->pages + ((uint64_t)full->n << cls) > d->slot_max_pages)
					continue;
				if (m)
					dp->mag[i] = m; /* parked empty, reused by a free */
				else
					dp->mag[i] = dp->mag[--dp->n];
				d->depot_ops++;
				d->depot_pages -= (uint64_t)full->n << cls;
				d->depot_ranges -= full->n;
				c->pages += (uint64_t)full->n << cls;
				c->ranges += full->n;
				c->loaded[band][cls] = m = full;
				c->swaps++;
				break;
			}
			dmm__unlock(d->mem, &d->depot_lock);
		}
	}
	if (m && m->n && (m->pfn[m->n - 1] + pages - 1) <= limit) {
		*pfn = m->pfn[--m->n];
		c->pages -= pages;
		c->ranges--;
		c->hits++;
		got = 1;
	}
	dmm__unlock(d->mem, &c->lock);
	return got;
}

static void count_miss(struct dmm_iova_domain *d)
{
	struct iova_cpu *c = this_cpu(d);
	dmm__lock(d->mem, &c->lock);
	c->misses++;
	dmm__unlock(d->mem, &c->lock);
}

/* Keep a freed range in the caches; 0 if the caller must free it to the tree.
 * The depot holds full magazines and parked empty ones (n == 0). A slot holds
 * at most slot_max_pages, the depot depot_max_pages: cache_max_pages in all. */
static int cache_put(struct dmm_iova_domain *d, dmm_pfn_t pfn, unsigned cls)
{
	uint64_t pages = (uint64_t)1 << cls;
	unsigned band = band_of(pfn, pages);
	struct iova_cpu *c = this_cpu(d);
	struct iova_mag *m, *flush = (struct iova_mag *)0;
	int kept = 0;

	dmm__lock(d->mem, &c->lock);
	c->ops++;
	m = c->loaded[band][cls];
	if (!m)
		m = c->loaded[band][cls] = mag_new(d);
	if (m && m->n == d->o.mag_size) {
		struct iova_mag *p = c->prev[band][cls];
		if (!p || p->n < d->o.mag_size) {
			/* previous has room (or there is none yet: the full one becomes it) */
			c->prev[band][cls] = m;
			m = c->loaded[band][cls] = p ? p : mag_new(d);
		} else {
			/* loaded and previous full: the loaded one goes to the depot */
			struct iova_depot *dp = d->depot[band][cls];
			struct iova_mag *e = (struct iova_mag *)0;
			bool room = false;
			uint64_t mp = (uint64_t)m->n << cls, mn = m->n; /* m is the depot's once unlocked */
			dmm__lock(d->mem, &d->depot_lock);
			if (d->depot_pages + mp <= d->depot_max_pages) {
				for (uint32_t i = 0; i < dp->n; i++)
					if (!dp->mag[i]->n) {
						e = dp->mag[i];
						dp->mag[i] = m;
						break;
					}
				if (!e && dp->n < d->o.depot_max) {
					dp->mag[dp->n++] = m;
					room = true;
				}
				if (e || room) {
					d->depot_ops++;
					d->depot_pages += mp;
					d->depot_ranges += m->n;
				}
			}
			dmm__unlock(d->mem, &d->depot_lock);
			if (e || room) {
				c->swaps++;
				c->pages -= mp;
				c->ranges -= mn;
				m = c->loaded[band][cls] = e ? e : mag_new(d);
			} else {
				/* depot full: this magazine's ranges go back to the
				 * tree (after the lock) and it is reused */
				flush = m;
				c->loaded[band][cls] = m = (struct iova_mag *)0;
				c->pages -= mp;
				c->ranges -= flush->n;
			}
		}
	}
	if (m && m->n < d->o.mag_size && c->pages + pages <= d->slot_max_pages) {
		m->pfn[m->n++] = pfn;
		c->pages += pages;
		c->ranges++;
		c->frees_cached++;
		kept = 1;
	}
	dmm__unlock(d->mem, &c->lock);
	if (flush) {
		mag_flush(d, flush, cls);
		dmm__lock(d->mem, &c->lock);
		if (!c->loaded[band][cls]) {
			c->loaded[band][cls] = flush;
			if (!kept && c->pages + pages <= d->slot_max_pages) {
				flush->pfn[flush->n++] = pfn;
				c->pages += pages;
				c->ranges++;
				c->frees_cached++;
				kept = 1;
			}
			flush = (struct iova_mag *)0;
		}
		dmm__unlock(d->mem, &c->lock);
		if (flush)
			dmm__lib_kfree(d->mem, flush);
	}
	return kept;
}

/* ---- domains ---------------------------------------------------------------------- */

int dmm_iova_domain_create(struct dmm_mem *mem, dmm_dma_addr_t base, dmm_dma_addr_t limit,
			   const struct dmm_iova_opts *o, struct dmm_iova_domain **out)
{
	void *va;
	struct dmm_iova_opts op;
	struct dmm_iova_domain *d;
	unsigned slots;
	uint64_t bytes, pages;
	dmm_pfn_t pfn;
	int err;

	if (out)
		*out = (struct dmm_iova_domain *)0;
	if (!mem || !out)
		return -DMM_EINVAL;
	if (o)
		op = *o;
	else
		dmm_iova_opts_default(&op);
	if (!op.mag_size)
		op.mag_size = IOVA_MAG_DEFAULT;
	if (!op.depot_max)
		op.depot_max = 8;
	if (!op.cache_max_pages)
		op.cache_max_pages = 16384;
	if (!op.idle_trim_ns)
		op.idle_trim_ns = 1000000000ull;
	if ((base & (DMM_PAGE_SIZE - 1)) || ((limit + 1) & (DMM_PAGE_SIZE - 1)) || limit <= base ||
	    limit >= ((uint64_t)1 << DMM_IOPT_VA_BITS) || op.guard_pages > DMM_IOVA_GUARD_MAX ||
	    op.mag_size > IOVA_MAG_MAX || op.depot_max > 1024 ||
	    (op.align != DMM_IOVA_ALIGN_POW2 && op.align != DMM_IOVA_ALIGN_PAGE))
		return dmm__count_invalid(mem);
	slots = mem->plat.nr_cpus ? mem->plat.nr_cpus : 1;
	if (slots > IOVA_SLOTS_MAX)
		slots = IOVA_SLOTS_MAX;
	bytes = sizeof(*d) + (uint64_t)slots * sizeof(struct iova_cpu);
	pages = dmm_align_up(bytes, DMM_PAGE_SIZE) >> DMM_PAGE_SHIFT;
	err = dmm__meta_alloc(mem, pages, 0, &pfn, &va);
	if (err)
		return err;
	d = va;
	d->mem = mem;
	d->o = op;
	d->self_pfn = pfn;
	d->self_pages = pages;
	d->nr_slots = slots;
	d->start = base >> DMM_PAGE_SHIFT;
	if (d->start == 0)
		d->start = 1; /* 0 is never a valid IOVA */
	d->end = limit >> DMM_PAGE_SHIFT;
	d->seed = 0x9e3779b9u ^ (uint32_t)pfn;
	d->depot_max_pages = op.cache_max_pages / 2;
	d->slot_max_pages = (op.cache_max_pages - d->depot_max_pages) / slots;
	d->sentinel.lo = d->sentinel.hi = d->end + 1;
	d->sentinel.gap = d->end + 1 - d->start;
	d->sentinel.prio = 0; /* at the bottom of the heap: every range sits above it */
	pull(&d->sentinel);
	d->root = &d->sentinel;
	mem->plat.lock_init(mem->plat.ctx, &d->tree_lock);
	mem->plat.lock_init(mem->plat.ctx, &d->depot_lock);
	for (unsigned i = 0; i < slots; i++)
		mem->plat.lock_init(mem->plat.ctx, &d->cpu[i].lock);
	for (unsigned b = 0; b < IOVA_BANDS; b++)
		for (unsigned c = 0; c < DMM_IOVA_CACHE_CLASSES; c++) {
			void *p;
			if (dmm__lib_kmalloc(mem, sizeof(struct iova_depot) + op.depot_max * sizeof(void *), 0, &p)) {
				d->depot[b][c] = (struct iova_depot *)0;
				dmm_iova_domain_destroy(d);
				return -DMM_ENOMEM;
			}
			d->depot[b][c] = p;
			d->depot[b][c]->n = 0;
		}
	*out = d;
	return 0;
}

static void free_tree(struct dmm_iova_domain *d, struct iova_node *t, uint64_t *leaked)
{
	while (t) {
		struct iova_node *r = t->r;
		free_tree(d, t->l, leaked);
		if (t != &d->sentinel) {
			(*leaked)++;
			dmm__lib_kfree(d->mem, t);
		}
		t = r;
	}
}

void dmm_iova_domain_destroy(struct dmm_iova_domain *d)
{
	struct dmm_mem *mem;
	uint64_t leaked = 0;

	if (!d)
		return;
	mem = d->mem;
	dmm_iova_trim(d, 1);
	for (unsigned b = 0; b < IOVA_BANDS; b++)
		for (unsigned c = 0; c < DMM_IOVA_CACHE_CLASSES; c++) {
			for (unsigned i = 0; i < d->nr_slots; i++) {
				if (d->cpu[i].loaded[b][c])
					dmm__lib_kfree(mem, d->cpu[i].loaded[b][c]);
				if (d->cpu[i].prev[b][c])
					dmm__lib_kfree(mem, d->cpu[i].prev[b][c]);
			}
			if (d->depot[b][c]) {
				for (uint32_t i = 0; i < d->depot[b][c]->n; i++)
					dmm__lib_kfree(mem, d->depot[b][c]->mag[i]);
				dmm__lib_kfree(mem, d->depot[b][c]);
			}
		}
	free_tree(d, d->root, &leaked);
	free_nodes(d, d->spare);
	if (leaked)
		dmm_log(mem, DMM_LOG_WARN, "iova: domain destroyed with %llu ranges allocated",
			(unsigned long long)leaked);
	for (unsigned i = 0; i < d->nr_slots; i++)
		mem->plat.lock_destroy ? mem->plat.lock_destroy(mem->plat.ctx, &d->cpu[i].lock) : (void)0;
	if (mem->plat.lock_destroy) {
		mem->plat.lock_destroy(mem->plat.ctx, &d->tree_lock);
		mem->plat.lock_destroy(mem->plat.ctx, &d->depot_lock);
	}
	dmm__lib_free_range(mem, d->self_pfn, d->self_pages); /* the library's: never refused for a pin */
}

/* ---- allocation --------------------------------------------------------------------- */

static int alloc_tree(struct dmm_iova_domain *d, uint64_t pages, dmm_pfn_t limit, dmm_pfn_t *pfn)
{
	/* below 4 GiB first, if the domain asks and the request allows */
	const bool low = d->o.low32_first && limit >= PFN_4G && d->start < PFN_4G;
	struct iova_node *p = (struct iova_node *)0;
	int err;

	/* a node: a spare if there is one, else from kmalloc (outside the lock) */
	dmm__lock(d->mem, &d->tree_lock);
	if (d->spare) {
		p = d->spare;
		d->spare = p->l;
		d->nr_spare--;
	}
	dmm__unlock(d->mem, &d->tree_lock);
	if (!p) {
		void *v;
		if (dmm__lib_kmalloc(d->mem, sizeof(struct iova_node), DMM_GFP_ATOMIC, &v)) {
			sadd(&d->st.fail_nomem, 1);
			return -DMM_ENOMEM;
		}
		p = v;
	}
	dmm__lock(d->mem, &d->tree_lock);
	err = low ? tree_alloc(d, pages, PFN_4G - 1, p, pfn) : -DMM_ENOSPC;
	if (err) {
		err = tree_alloc(d, pages, limit, p, pfn);
		if (!err && low)
			sadd(&d->st.low32_fallbacks, 1); /* served, above 4 GiB */
	}
	if (err && d->nr_spare < SPARE_NODES) {
		p->l = d->spare;
		d->spare = p;
		d->nr_spare++;
		p = (struct iova_node *)0;
	}
	dmm__unlock(d->mem, &d->tree_lock);
	if (err) {
		if (p)
			dmm__lib_kfree(d->mem, p);
		sadd(&d->st.fail_nospace, 1);
	}
	return err;
}

/* Give every cached range back to the tree (a request found no room). */
static uint64_t flush_all_caches(struct dmm_iova_domain *d);

int dmm_iova_alloc(struct dmm_iova_domain *d, uint64_t size, dmm_dma_addr_t limit, dmm_dma_addr_t *iova)
{
	uint64_t pages;
	dmm_pfn_t lim, pfn = 0;
	int cls, err;

	if (!d || !iova || !size || size > ((uint64_t)1 << DMM_IOPT_VA_BITS) ||
	    limit < ((d->start + 1) << DMM_PAGE_SHIFT) - 1) {
		if (d)
			sadd(&d->st.fail_invalid, 1);
		return d ? dmm__count_invalid(d->mem) : -DMM_EINVAL;
	}
	pages = size_pages(d, size);
	/* the last page whose every byte is at or below @limit */
	lim = limit >= (((d->end + 1) << DMM_PAGE_SHIFT) - 1) ? d->end : ((limit + 1) >> DMM_PAGE_SHIFT) - 1;
	cls = class_of(d, pages);
	if (cls >= 0) {
		/* a 32-bit request takes only the low band; others prefer the
		 * high band unless the domain wants 32-bit addresses first */
		bool low_ok = true, high_ok = lim >= PFN_4G;
		bool low_first = d->o.low32_first || !high_ok;
		if ((low_first && low_ok && cache_get(d, 0, (unsigned)cls, lim, &pfn)) ||
		    (high_ok && cache_get(d, 1, (unsigned)cls, lim, &pfn)) ||
		    (!low_first && cache_get(d, 0, (unsigned)cls, lim, &pfn))) {
			*iova = pfn << DMM_PAGE_SHIFT;
			return 0;
		}
		count_miss(d);
	} else {
		sadd(&d->st.uncacheable, 1);
	}
	err = alloc_tree(d, pages, lim, &pfn);
	if (err == -DMM_ENOSPC && !d->o.no_cache) {
		/* the space may be sitting in the caches */
		__atomic_fetch_sub(&d->st.fail_nospace, 1, __ATOMIC_RELAXED);
		flush_all_caches(d);
		err = alloc_tree(d, pages, lim, &pfn);
	}
	if (err)
		return err;
	sadd(&d->st.allocs, 1);
	*iova = pfn << DMM_PAGE_SHIFT;
	return 0;
}

int dmm_iova_free(struct dmm_iova_domain *d, dmm_dma_addr_t iova, uint64_t size)
{
	struct iova_node *gone = (struct iova_node *)0;
	uint64_t pages;
	dmm_pfn_t pfn;
	int cls, err;

	if (!d || !size || (iova & (DMM_PAGE_SIZE - 1))) {
		if (d)
			sadd(&d->st.fail_invalid, 1);
		return d ? dmm__count_invalid(d->mem) : -DMM_EINVAL;
	}
	pfn = iova >> DMM_PAGE_SHIFT;
	pages = size_pages(d, size);
	if (pfn < d->start || pfn > d->end || pages > d->end - pfn + 1) {
		sadd(&d->st.free_unknown, 1);
		return -DMM_ENOENT;
	}
	cls = class_of(d, pages);
	if (cls >= 0 && cache_put(d, pfn, (unsigned)cls))
		return 0;
	dmm__lock(d->mem, &d->tree_lock);
	err = tree_free_locked(d, pfn, pages, &gone);
	dmm__unlock(d->mem, &d->tree_lock);
	if (err) {
		sadd(&d->st.free_unknown, 1);
		return -DMM_ENOENT;
	}
	free_nodes(d, gone);
	sadd(&d->st.frees, 1);
	return 0;
}

int dmm_iova_find(struct dmm_iova_domain *d, dmm_dma_addr_t iova, dmm_dma_addr_t *start, uint64_t *size)
{
	struct iova_node *m;
	int err = -DMM_ENOENT;

	if (!d)
		return -DMM_EINVAL;
	dmm__lock(d->mem, &d->tree_lock);
	m = find_node(d->root, iova >> DMM_PAGE_SHIFT);
	if (m && m != &d->sentinel && (iova >> DMM_PAGE_SHIFT) < m->lo + m->pages) {
		if (start)
			*start = m->lo << DMM_PAGE_SHIFT;
		if (size)
			*size = m->pages << DMM_PAGE_SHIFT;
		err = 0;
	}
	dmm__unlock(d->mem, &d->tree_lock);
	/* a cached range is still in the tree but free for its owner: report
	 * it as found (the caches are invisible to this query) */
	return err;
}

/* ---- trimming ------------------------------------------------------------------------- */

/* Flush a slot's magazines if it saw no cache operation since the last
 * trim (or @all). */
static uint64_t trim_slot(struct dmm_iova_domain *d, struct iova_cpu *c, int all)
{
	struct iova_mag *m[IOVA_BANDS * DMM_IOVA_CACHE_CLASSES * 2];
	unsigned cl[IOVA_BANDS * DMM_IOVA_CACHE_CLASSES * 2], k = 0;
	uint64_t pages = 0;
	bool idle;

	dmm__lock(d->mem, &c->lock);
	idle = c->ops == c->trim_seen;
	c->trim_seen = c->ops;
	if (!c->pages || (!all && !idle)) {
		dmm__unlock(d->mem, &c->lock);
		return 0;
	}
	for (unsigned b = 0; b < IOVA_BANDS; b++)
		for (unsigned s = 0; s < DMM_IOVA_CACHE_CLASSES; s++) {
			if (c->loaded[b][s]) {
				m[k] = c->loaded[b][s];
				cl[k++] = s;
				c->loaded[b][s] = (struct iova_mag *)0;
			}
			if (c->prev[b][s]) {
				m[k] = c->prev[b][s];
				cl[k++] = s;
				c->prev[b][s] = (struct iova_mag *)0;
			}
		}
	c->pages = 0;
	c->ranges = 0;
	dmm__unlock(d->mem, &c->lock);
	for (unsigned i = 0; i < k; i++) {
		pages += (uint64_t)m[i]->n << cl[i];
		mag_flush(d, m[i], cl[i]);
		dmm__lib_kfree(d->mem, m[i]);
	}
	return pages;
}

/* The depot: every magazine back if no slot used it since the last trim. */
static uint64_t trim_depot(struct dmm_iova_domain *d, int all)
{
	uint64_t pages = 0;
	bool idle;

	dmm__lock(d->mem, &d->depot_lock);
	idle = d->depot_ops == d->depot_trim_seen;
	d->depot_trim_seen = d->depot_ops;
	dmm__unlock(d->mem, &d->depot_lock);
	if (!all && !idle)
		return 0;
	for (unsigned b = 0; b < IOVA_BANDS; b++)
		for (unsigned s = 0; s < DMM_IOVA_CACHE_CLASSES; s++) {
			struct iova_depot *dp = d->depot[b][s];
			for (; dp;) {
				struct iova_mag *m = (struct iova_mag *)0;
				dmm__lock(d->mem, &d->depot_lock);
				if (dp->n) {
					m = dp->mag[--dp->n];
					d->depot_pages -= (uint64_t)m->n << s;
					d->depot_ranges -= m->n;
				}
				dmm__unlock(d->mem, &d->depot_lock);
				if (!m)
					break;
				pages += (uint64_t)m->n << s;
				mag_flush(d, m, s);
				dmm__lib_kfree(d->mem, m);
			}
		}
	return pages;
}

uint64_t dmm__iova_cached_pages(struct dmm_iova_domain *d)
{
	uint64_t pages = 0;

	for (unsigned i = 0; i < d->nr_slots; i++) {
		dmm__lock(d->mem, &d->cpu[i].lock);
		pages += d->cpu[i].pages;
		dmm__unlock(d->mem, &d->cpu[i].lock);
	}
	dmm__lock(d->mem, &d->depot_lock);
	pages += d->depot_pages;
	dmm__unlock(d->mem, &d->depot_lock);
	return pages;
}

uint64_t dmm_iova_trim(struct dmm_iova_domain *d, int all)
{
	uint64_t pages = 0;

	if (!d)
		return 0;
	for (unsigned i = 0; i < d->nr_slots; i++)
		pages += trim_slot(d, &d->cpu[i], all);
	pages += trim_depot(d, all);
	return pages;
}

static uint64_t flush_all_caches(struct dmm_iova_domain *d)
{
	return dmm_iova_trim(d, 1);
}

/* ---- statistics and checks ------------------------------------------------------------- */

static void walk_stats(const struct iova_node *t, unsigned depth, uint64_t *gaps, uint64_t *largest,
		       uint64_t *maxdepth)
{
	while (t) {
		if (depth + 1 > *maxdepth)
			*maxdepth = depth + 1;
		if (t->gap) {
			(*gaps)++;
			if (t->gap > *largest)
				*largest = t->gap;
		}
		walk_stats(t->l, depth + 1, gaps, largest, maxdepth);
		t = t->r;
		depth++;
	}
}

void dmm_iova_get_stats(struct dmm_iova_domain *d, struct dmm_iova_stats *st)
{
	uint64_t gaps = 0, largest = 0, depth = 0;

	if (!d || !st)
		return;
	*st = (struct dmm_iova_stats){ 0 };
#define LD(f) st->f = __atomic_load_n(&d->st.f, __ATOMIC_RELAXED)
	LD(allocs);
	LD(frees);
	LD(uncacheable);
	LD(cache_flushes);
	LD(low32_fallbacks);
	LD(fail_nospace);
	LD(fail_nomem);
	LD(fail_invalid);
	LD(free_unknown);
	LD(search_steps);
	LD(search_fallbacks);
#undef LD
	for (unsigned i = 0; i < d->nr_slots; i++) {
		struct iova_cpu *c = &d->cpu[i];
		dmm__lock(d->mem, &c->lock);
		st->cache_hits += c->hits;
		st->cache_misses += c->misses;
		st->cache_frees += c->frees_cached;
		st->depot_swaps += c->swaps;
		st->cached_pages += c->pages;
		st->cached_ranges += c->ranges;
		dmm__unlock(d->mem, &c->lock);
	}
	dmm__lock(d->mem, &d->depot_lock);
	st->cached_pages += d->depot_pages;
	st->cached_ranges += d->depot_ranges;
	dmm__unlock(d->mem, &d->depot_lock);
	st->allocs += st->cache_hits;
	st->frees += st->cache_frees;
	st->span_pages = d->end - d->start + 1;
	dmm__lock(d->mem, &d->tree_lock);
	st->ranges = d->ranges;
	st->allocated_pages = d->alloc_pages;
	walk_stats(d->root, 0, &gaps, &largest, &depth);
	dmm__unlock(d->mem, &d->tree_lock);
	st->free_gaps = gaps;
	st->largest_free = largest;
	st->tree_depth = depth;
}

struct chk {
	struct dmm_iova_domain *d;
	dmm_pfn_t prev_hi;
	uint64_t nodes, pages;
	int bad;
	const char *why;
};

static uint64_t check_node(struct chk *k, const struct iova_node *t, uint32_t parent_prio, unsigned depth)
{
	uint64_t m;

	if (!t)
		return 0;
	if (depth > 4096) {
		k->bad = 1;
		k->why = "tree too deep (cycle?)";
		return 0;
	}
	if (t->prio > parent_prio) {
		k->bad = 1;
		k->why = "heap order of priorities";
	}
	m = check_node(k, t->l, t->prio, depth + 1);
	if (t->lo < k->prev_hi || t->hi < t->lo) {
		k->bad = 1;
		k->why = "ranges out of order or overlapping";
	} else if (t->gap != t->lo - k->prev_hi) {
		k->bad = 1;
		k->why = "gap does not match the predecessor";
	}
	if (t != &k->d->sentinel) {
		if (t->lo < k->d->start || t->hi > k->d->end + 1 || t->hi - t->lo != t->pages + k->d->o.guard_pages) {
			k->bad = 1;
			k->why = "range outside the domain or of the wrong length";
		}
		k->nodes++;
		k->pages += t->hi - t->lo;
	}
	k->prev_hi = t->hi;
	m = umax(m, t->gap);
	m = umax(m, check_node(k, t->r, t->prio, depth + 1));
	if (m != t->max_gap) {
		k->bad = 1;
		k->why = "gap summary wrong";
	}
	return m;
}

static bool cached_ok(struct dmm_iova_domain *d, dmm_pfn_t pfn, unsigned cls, unsigned band)
{
	struct iova_node *m = find_node(d->root, pfn);
	return m && m != &d->sentinel && m->lo == pfn && m->pages == ((uint64_t)1 << cls) &&
	       band_of(pfn, m->pages) == band;
}

int dmm_iova_check(struct dmm_iova_domain *d)
{
	struct chk k = { 0 };
	uint64_t cached_pages = 0;

	if (!d)
		return -DMM_EINVAL;
	k.d = d;
	k.prev_hi = d->start;
	/* the tree and every cache: take all the locks (slots, depot, tree) */
	for (unsigned i = 0; i < d->nr_slots; i++)
		dmm__lock(d->mem, &d->cpu[i].lock);
	dmm__lock(d->mem, &d->depot_lock);
	dmm__lock(d->mem, &d->tree_lock);
	check_node(&k, d->root, UINT32_MAX, 0);
	if (!k.bad && (k.prev_hi != d->end + 1 || rightmost(d->root) != &d->sentinel)) {
		k.bad = 1;
		k.why = "sentinel not last";
	}
	if (!k.bad && (k.nodes != d->ranges || k.pages != d->alloc_pages)) {
		k.bad = 1;
		k.why = "range count or page count wrong";
	}
	/* every cached range allocated in the tree, in its class and band;
	 * each holder's counts right and within its share of the bound */
	for (unsigned h = 0; h <= d->nr_slots && !k.bad; h++) {
		uint64_t ranges = 0, pages = 0;
		for (unsigned b = 0; b < IOVA_BANDS && !k.bad; b++)
			for (unsigned s = 0; s < DMM_IOVA_CACHE_CLASSES && !k.bad; s++) {
				const struct iova_depot *dp = d->depot[b][s];
				unsigned nm = h < d->nr_slots ? 2 : dp->n;
				if (dp->n > d->o.depot_max) {
					k.bad = 1;
					k.why = "depot overfull";
				}
				for (unsigned i = 0; i < nm && !k.bad; i++) {
					const struct iova_mag *m = h == d->nr_slots ? dp->mag[i]
								   : i == 0	     ? d->cpu[h].loaded[b][s]
										     : d->cpu[h].prev[b][s];
					if (!m)
						continue;
					if (m->n > d->o.mag_size) {
						k.bad = 1;
						k.why = "magazine overfull";
					}
					for (uint32_t j = 0; j < m->n && !k.bad; j++) {
						if (!cached_ok(d, m->pfn[j], s, b)) {
							k.bad = 1;
							k.why = "cached range not allocated in the tree, or in the wrong class/band";
						}
						ranges++;
						pages += (uint64_t)1 << s;
					}
				}
			}
		if (!k.bad && (h < d->nr_slots ? (ranges != d->cpu[h].ranges || pages != d->cpu[h].pages ||
						 pages > d->slot_max_pages)
					       : (ranges != d->depot_ranges || pages != d->depot_pages ||
						  pages > d->depot_max_pages))) {
			k.bad = 1;
			k.why = "cache counts wrong or above the bound";
		}
		cached_pages += pages;
	}
	if (!k.bad && cached_pages > d->o.cache_max_pages) {
		k.bad = 1;
		k.why = "caches above their bound";
	}
	dmm__unlock(d->mem, &d->tree_lock);
	dmm__unlock(d->mem, &d->depot_lock);
	for (unsigned i = d->nr_slots; i-- > 0;)
		dmm__unlock(d->mem, &d->cpu[i].lock);
	if (k.bad) {
		dmm_log(d->mem, DMM_LOG_ERR, "iova check: %s", k.why);
		return -DMM_EINVAL;
	}
	return 0;
}

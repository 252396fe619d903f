/* SPDX-License-Identifier: MIT */
/*
 * CPU cache model: write-back, write-allocate, sparse.
 *
 *   buckets[hash(line address)] -> line -> line -> ...     (chained hash)
 *   mru <-> line <-> line <-> ... <-> lru                  (LRU list)
 *
 *   struct hw_line: hash link, LRU links, tag (line address), dirty bit,
 *                   then cache_line bytes of data
 *
 * Only lines actually cached exist, so a model of a 64 GiB machine costs
 * what the test touches. Lookups are O(1) expected (the table doubles when
 * the average chain exceeds two); eviction (when max_lines is set) takes the
 * least recently used line and writes it back if dirty. Line nodes come from
 * chunks of HW_LINES_PER_CHUNK and are recycled through a free list.
 *
 * CPU accesses: a page's attribute decides. Write-back pages go through the
 * cache (a read miss fills the line from RAM; a write allocates the line,
 * filling it first unless the write covers it entirely, and marks it
 * dirty). Write-combining and uncached pages go straight to RAM; a line of
 * such a page found in the cache on the way is an alias hazard: counted and
 * ignored, as a non-snooping (Arm-like) CPU ignores it. It may still be
 * written back later, over whatever the device put in RAM.
 *
 * Maintenance works on whole lines: CLEAN writes dirty lines back, keeps
 * them; INVALIDATE drops them without write-back (dirty data lost: counted);
 * FLUSH writes back then drops. A range much larger than the cache walks
 * the LRU list instead of probing every line address.
 *
 * Speculative prefetch (opts.prefetch): after a CPU access to write-back
 * memory, a seeded xorshift PRNG picks zero to two lines up to
 * prefetch_distance lines before or after the access and pulls them in
 * clean if absent (page boundaries are no barrier: speculation goes through
 * the linear mapping). Lines of WC/UC pages are only pulled with
 * opts.prefetch_alias. dmm_hw_prefetch() forces the same thing on a range.
 */
#include <stdlib.h>
#include <string.h>

#include <dmamem/error.h>

#include "hw_internal.h"

#define HW_INITIAL_BUCKETS_SHIFT 10u
#define HW_COPY_CHUNK 256u

static inline dmm_phys_t line_of(const struct dmm_hw *hw, dmm_phys_t pa)
{
	return pa & ~(dmm_phys_t)(hw->line - 1);
}

static inline size_t bucket_of(const struct dmm_hw *hw, dmm_phys_t tag)
{
	return (size_t)((tag * 0x9e3779b97f4a7c15ull) >> hw->bucket_shift);
}

static uint64_t rng_next(struct dmm_hw *hw)
{
	uint64_t x = hw->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	hw->rng = x;
	return x * 0x2545f4914f6cdd1dull;
}

/* ------------------------------------------------------------------------ */
/* Table, LRU list, nodes                                                    */

int hw_cache_init(struct dmm_hw *hw)
{
	size_t hdr = sizeof(struct hw_line);

	hw->node_size = (hdr + hw->line + 15u) & ~(size_t)15u;
	hw->nbuckets = (size_t)1 << HW_INITIAL_BUCKETS_SHIFT;
	hw->bucket_shift = 64u - HW_INITIAL_BUCKETS_SHIFT;
	hw->buckets = calloc(hw->nbuckets, sizeof(*hw->buckets));
	if (!hw->buckets)
		return -DMM_ENOMEM;
	/* xorshift must not start at zero; any seed (0 included) is valid. */
	hw->rng = (hw->opts.prefetch_seed ^ 0x853c49e6748fea9bull) | 1u;
	return 0;
}

void hw_cache_fini(struct dmm_hw *hw)
{
	struct hw_chunk *c = hw->chunks;

	while (c) {
		struct hw_chunk *n = c->next;

		free(c);
		c = n;
	}
	hw->chunks = NULL;
	hw->free_nodes = NULL;
	free(hw->buckets);
	hw->buckets = NULL;
}

static struct hw_line *node_get(struct dmm_hw *hw)
{
	struct hw_line *ln = hw->free_nodes;

	if (!ln) {
		struct hw_chunk *c = malloc(sizeof(*c) + hw->node_size * HW_LINES_PER_CHUNK);

		if (!c)
			return NULL;
		c->next = hw->chunks;
		hw->chunks = c;
		for (unsigned i = 0; i < HW_LINES_PER_CHUNK; i++) {
			struct hw_line *n = (struct hw_line *)(void *)(c->mem + hw->node_size * i);

			n->hnext = hw->free_nodes;
			hw->free_nodes = n;
		}
		ln = hw->free_nodes;
	}
	hw->free_nodes = ln->hnext;
	return ln;
}

static void node_put(struct dmm_hw *hw, struct hw_line *ln)
{
	ln->hnext = hw->free_nodes;
	hw->free_nodes = ln;
}

static void lru_unlink(struct dmm_hw *hw, struct hw_line *ln)
{
	if (ln->lru_prev)
		ln->lru_prev->lru_next = ln->lru_next;
	else
		hw->mru = ln->lru_next;
	if (ln->lru_next)
		ln->lru_next->lru_prev = ln->lru_prev;
	else
		hw->lru = ln->lru_prev;
}

static void lru_push_mru(struct dmm_hw *hw, struct hw_line *ln)
{
	ln->lru_prev = NULL;
	ln->lru_next = hw->mru;
	if (hw->mru)
		hw->mru->lru_prev = ln;
	else
		hw->lru = ln;
	hw->mru = ln;
}

static void lru_touch(struct dmm_hw *hw, struct hw_line *ln)
{
	if (hw->mru != ln) {
		lru_unlink(hw, ln);
		lru_push_mru(hw, ln);
	}
}

/* Double the bucket array (best effort: on failure chains just grow). */
static void table_grow(struct dmm_hw *hw)
{
	size_t nb = hw->nbuckets * 2;
	struct hw_line **b = calloc(nb, sizeof(*b));

	if (!b)
		return;
	for (size_t i = 0; i < hw->nbuckets; i++) {
		struct hw_line *ln = hw->buckets[i];

		while (ln) {
			struct hw_line *next = ln->hnext;
			size_t j = (size_t)((ln->tag * 0x9e3779b97f4a7c15ull) >> (hw->bucket_shift - 1));

			ln->hnext = b[j];
			b[j] = ln;
			ln = next;
		}
	}
	free(hw->buckets);
	hw->buckets = b;
	hw->nbuckets = nb;
	hw->bucket_shift--;
}

struct hw_line *hw_line_find_locked(struct dmm_hw *hw, dmm_phys_t tag)
{
	struct hw_line *ln;

	if (!hw->nr_lines)
		return NULL;
	for (ln = hw->buckets[bucket_of(hw, tag)]; ln; ln = ln->hnext)
		if (ln->tag == tag)
			return ln;
	return NULL;
}

static void writeback(struct dmm_hw *hw, struct hw_line *ln)
{
	memcpy(hw_ram_ptr(hw, ln->tag), ln->data, hw->line);
	ln->dirty = false;
	hw->nr_dirty--;
	hw->st.writebacks++;
}

static void line_remove(struct dmm_hw *hw, struct hw_line *ln)
{
	struct hw_line **pp = &hw->buckets[bucket_of(hw, ln->tag)];

	while (*pp != ln)
		pp = &(*pp)->hnext;
	*pp = ln->hnext;
	lru_unlink(hw, ln);
	if (ln->dirty)
		hw->nr_dirty--;
	hw->nr_lines--;
	node_put(hw, ln);
}

static void evict(struct dmm_hw *hw, struct hw_line *ln)
{
	if (ln->dirty)
		writeback(hw, ln);
	hw->st.evictions++;
	line_remove(hw, ln);
}

/*
 * Allocate the line @tag (absent), evicting for capacity; fill it from RAM
 * if @fill. NULL only if no memory at all can be had (the caller then
 * accesses RAM directly, as if the line were uncacheable).
 */
static struct hw_line *line_insert(struct dmm_hw *hw, dmm_phys_t tag, bool fill)
{
	struct hw_line *ln;
	size_t b;

	if (hw->opts.max_lines && hw->nr_lines >= hw->opts.max_lines && hw->lru)
		evict(hw, hw->lru);
	ln = node_get(hw);
	if (!ln && hw->lru) {
		evict(hw, hw->lru);
		ln = node_get(hw);
	}
	if (!ln)
		return NULL;
	ln->tag = tag;
	ln->dirty = false;
	if (fill)
		memcpy(ln->data, hw_ram_ptr(hw, tag), hw->line);
	b = bucket_of(hw, tag);
	ln->hnext = hw->buckets[b];
	hw->buckets[b] = ln;
	lru_push_mru(hw, ln);
	hw->nr_lines++;
	if (hw->nr_lines > hw->st.peak_lines)
		hw->st.peak_lines = hw->nr_lines;
	if (hw->nr_lines > 2 * (uint64_t)hw->nbuckets)
		table_grow(hw);
	return ln;
}

static void mark_dirty(struct dmm_hw *hw, struct hw_line *ln)
{
	if (!ln->dirty) {
		ln->dirty = true;
		hw->nr_dirty++;
	}
}

uint64_t hw_lines_cached_locked(struct dmm_hw *hw, dmm_phys_t pa, uint64_t len)
{
	dmm_phys_t first, last;
	uint64_t n = 0, nr;

	if (!len || !hw->nr_lines)
		return 0;
	first = line_of(hw, pa);
	last = line_of(hw, pa + len - 1);
	nr = ((last - first) / hw->line) + 1;
	if (nr <= hw->nr_lines) {
		for (uint64_t i = 0; i < nr; i++)
			n += hw_line_find_locked(hw, first + i * hw->line) != NULL;
	} else {
		for (struct hw_line *ln = hw->mru; ln; ln = ln->lru_next)
			n += ln->tag >= first && ln->tag <= last;
	}
	return n;
}

/* ------------------------------------------------------------------------ */
/* CPU accesses                                                              */

enum acc_op { ACC_READ, ACC_WRITE, ACC_FILL };

struct acc {
	enum acc_op op;
	unsigned char *rbuf;       /* ACC_READ destination */
	const unsigned char *wbuf; /* ACC_WRITE source */
	int c;                     /* ACC_FILL byte */
	bool through;              /* stores also go to RAM, no allocation */
};

/* Apply a store of @n bytes (buffer offset @boff) to @dst. */
static inline void acc_store(const struct acc *a, unsigned char *dst, size_t boff, size_t n)
{
	if (a->op == ACC_WRITE)
		memmove(dst, a->wbuf + boff, n); /* the caller's buffer may be RAM too */
	else
		memset(dst, a->c, n);
}

/* [pa, pa + n) inside one write-back page. */
static void wb_access_locked(struct dmm_hw *hw, dmm_phys_t pa, size_t n, const struct acc *a,
			     size_t boff)
{
	size_t done = 0;

	while (done < n) {
		dmm_phys_t cur = pa + done;
		dmm_phys_t tag = line_of(hw, cur);
		size_t o = (size_t)(cur - tag);
		size_t k = hw->line - o;
		struct hw_line *ln;

		if (k > n - done)
			k = n - done;
		ln = hw_line_find_locked(hw, tag);
		if (ln) {
			hw->st.hits++;
			lru_touch(hw, ln);
		} else {
			hw->st.misses++;
		}
		if (a->op == ACC_READ) {
			if (!ln)
				ln = line_insert(hw, tag, true);
			memmove(a->rbuf + boff + done, ln ? ln->data + o : hw_ram_ptr(hw, cur), k);
		} else if (a->through) {
			if (ln)
				acc_store(a, ln->data + o, boff + done, k);
			acc_store(a, hw_ram_ptr(hw, cur), boff + done, k);
		} else {
			if (!ln)
				ln = line_insert(hw, tag, k != hw->line);
			if (ln) {
				acc_store(a, ln->data + o, boff + done, k);
				mark_dirty(hw, ln);
			} else {
				acc_store(a, hw_ram_ptr(hw, cur), boff + done, k);
			}
		}
		done += k;
	}
}

/* [pa, pa + n) inside one WC/UC page: RAM directly; cached lines are aliases. */
static void uc_access_locked(struct dmm_hw *hw, dmm_phys_t pa, size_t n, const struct acc *a,
			     size_t boff)
{
	hw->st.uncached_accesses++;
	hw->st.uncached_bytes += n;
	if (hw->nr_lines) {
		dmm_phys_t first = line_of(hw, pa), last = line_of(hw, pa + n - 1);

		for (dmm_phys_t t = first;; t += hw->line) {
			if (hw_line_find_locked(hw, t)) {
				hw->st.alias_hazards++;
				hw->st.last_alias_pa = t;
				hw_log(hw, DMM_LOG_DEBUG,
				       "hw: uncached access at %#llx finds a cached line (alias)",
				       (unsigned long long)t);
			}
			if (t == last)
				break;
		}
	}
	if (a->op == ACC_READ)
		memmove(a->rbuf + boff, hw_ram_ptr(hw, pa), n);
	else
		acc_store(a, hw_ram_ptr(hw, pa), boff, n);
}

static void cpu_access_locked(struct dmm_hw *hw, dmm_phys_t pa, size_t len, const struct acc *a)
{
	size_t off = 0;

	while (off < len) {
		dmm_phys_t cur = pa + off;
		uint64_t room = DMM_PAGE_SIZE - (cur & (DMM_PAGE_SIZE - 1));
		size_t n = len - off < room ? len - off : (size_t)room;

		if (hw_attr_locked(hw, cur >> DMM_PAGE_SHIFT) == DMM_MEMATTR_WB)
			wb_access_locked(hw, cur, n, a, off);
		else
			uc_access_locked(hw, cur, n, a, off);
		off += n;
	}
}

/* Pull line @tag in clean if it is RAM, absent, and allowed. 1 if pulled. */
static int prefetch_line_locked(struct dmm_hw *hw, dmm_phys_t tag, bool any_attr)
{
	enum dmm_memattr at;

	if (!hw_is_ram(hw, tag, 1) || hw_line_find_locked(hw, tag))
		return 0;
	at = hw_attr_locked(hw, tag >> DMM_PAGE_SHIFT);
	if (at != DMM_MEMATTR_WB && !any_attr)
		return 0;
	if (!line_insert(hw, tag, true))
		return 0;
	hw->st.prefetches++;
	if (at != DMM_MEMATTR_WB) {
		hw->st.alias_prefetches++;
		hw->st.last_alias_pa = tag;
	}
	return 1;
}

/* Speculation after a CPU access to [pa, pa + len). */
static void prefetch_random_locked(struct dmm_hw *hw, dmm_phys_t pa, size_t len)
{
	dmm_phys_t first, last;
	uint64_t r;
	unsigned n;

	if (!hw->opts.prefetch || !len ||
	    hw_attr_locked(hw, pa >> DMM_PAGE_SHIFT) != DMM_MEMATTR_WB)
		return;
	first = line_of(hw, pa);
	last = line_of(hw, pa + len - 1);
	r = rng_next(hw);
	n = (unsigned)(r % 3u);
	for (unsigned i = 0; i < n; i++) {
		uint64_t d, step;
		dmm_phys_t t;

		r = rng_next(hw);
		d = 1u + (r >> 1) % hw->opts.prefetch_distance;
		step = d * hw->line;
		if (r & 1u) {
			if (last > UINT64_MAX - step)
				continue;
			t = last + step;
		} else {
			if (first < step)
				continue;
			t = first - step;
		}
		prefetch_line_locked(hw, t, hw->opts.prefetch_alias != 0);
	}
}

/* Does the CPU range [pa, pa + len) stay inside RAM? */
static int cpu_range_ok(const struct dmm_hw *hw, dmm_phys_t pa, size_t len)
{
	if (pa > UINT64_MAX - len)
		return -DMM_EINVAL;
	return hw_is_ram(hw, pa, len) ? 0 : -DMM_EFAULT;
}

static void notify_cpu(struct dmm_hw *hw, enum dmm_hw_agent agent, int write, dmm_phys_t pa,
		       size_t len)
{
	struct dmm_hw_access ac;

	if (!hw->obs)
		return;
	memset(&ac, 0, sizeof(ac));
	ac.agent = agent;
	ac.write = write;
	ac.cpu = hw_cpu_id(hw);
	ac.pa = pa;
	ac.len = len;
	hw_notify(hw, &ac);
}

static int cpu_op(struct dmm_hw *hw, dmm_phys_t pa, size_t len, const struct acc *a,
		  enum dmm_hw_agent agent)
{
	int err;

	if (!hw)
		return -DMM_EINVAL;
	if (!len)
		return 0;
	err = cpu_range_ok(hw, pa, len);
	if (err)
		return err;
	notify_cpu(hw, agent, a->op != ACC_READ, pa, len);
	hw_lock(hw);
	cpu_access_locked(hw, pa, len, a);
	prefetch_random_locked(hw, pa, len);
	hw_unlock(hw);
	return 0;
}

int dmm_hw_cpu_read(struct dmm_hw *hw, dmm_phys_t pa, void *buf, size_t len)
{
	struct acc a = { .op = ACC_READ, .rbuf = buf };

	if (!buf && len)
		return -DMM_EINVAL;
	return cpu_op(hw, pa, len, &a, DMM_HW_AGENT_CPU);
}

int dmm_hw_cpu_write(struct dmm_hw *hw, dmm_phys_t pa, const void *buf, size_t len)
{
	struct acc a = { .op = ACC_WRITE, .wbuf = buf };

	if (!buf && len)
		return -DMM_EINVAL;
	return cpu_op(hw, pa, len, &a, DMM_HW_AGENT_CPU);
}

int dmm_hw_cpu_fill(struct dmm_hw *hw, dmm_phys_t pa, int c, size_t len)
{
	struct acc a = { .op = ACC_FILL, .c = c };

	return cpu_op(hw, pa, len, &a, DMM_HW_AGENT_CPU);
}

/* Copy through the cache in chunks, in the direction memmove needs. */
static void cpu_copy_locked(struct dmm_hw *hw, dmm_phys_t dst, dmm_phys_t src, size_t len,
			    bool through)
{
	unsigned char tmp[HW_COPY_CHUNK];
	bool backwards = dst > src && dst - src < len;
	size_t done = 0;

	while (done < len) {
		size_t n = len - done < sizeof(tmp) ? len - done : sizeof(tmp);
		size_t off = backwards ? len - done - n : done;
		struct acc rd = { .op = ACC_READ, .rbuf = tmp };
		struct acc wr = { .op = ACC_WRITE, .wbuf = tmp, .through = through };

		cpu_access_locked(hw, src + off, n, &rd);
		cpu_access_locked(hw, dst + off, n, &wr);
		done += n;
	}
}

static int copy_op(struct dmm_hw *hw, dmm_phys_t dst, dmm_phys_t src, size_t len, bool through,
		   enum dmm_hw_agent agent)
{
	int err;

	if (!hw)
		return -DMM_EINVAL;
	if (!len)
		return 0;
	err = cpu_range_ok(hw, src, len);
	if (!err)
		err = cpu_range_ok(hw, dst, len);
	if (err)
		return err;
	notify_cpu(hw, agent, 0, src, len);
	notify_cpu(hw, agent, 1, dst, len);
	hw_lock(hw);
	cpu_copy_locked(hw, dst, src, len, through);
	prefetch_random_locked(hw, src, len);
	prefetch_random_locked(hw, dst, len);
	hw_unlock(hw);
	return 0;
}

int dmm_hw_cpu_copy(struct dmm_hw *hw, dmm_phys_t dst, dmm_phys_t src, size_t len)
{
	return copy_op(hw, dst, src, len, false, DMM_HW_AGENT_CPU);
}

/* Page by page (a CPU address range may be a vmap of scattered pages):
 * @buf is read into (@write 0) or written from. */
static int cpu_virt(struct dmm_hw *hw, const void *va, unsigned char *buf, size_t len, int write)
{
	uintptr_t v = (uintptr_t)va;

	while (len) {
		size_t n = DMM_PAGE_SIZE - (v & (DMM_PAGE_SIZE - 1));
		dmm_phys_t pa;
		int err = dmm_hw_virt_to_phys(hw, (const void *)v, &pa);
		if (n > len)
			n = len;
		if (!err)
			err = write ? dmm_hw_cpu_write(hw, pa, buf, n) : dmm_hw_cpu_read(hw, pa, buf, n);
		if (err)
			return err;
		v += n;
		buf += n;
		len -= n;
	}
	return 0;
}

int dmm_hw_cpu_read_virt(struct dmm_hw *hw, const void *va, void *buf, size_t len)
{
	return cpu_virt(hw, va, buf, len, 0);
}

int dmm_hw_cpu_write_virt(struct dmm_hw *hw, void *va, const void *buf, size_t len)
{
	return cpu_virt(hw, va, (unsigned char *)(uintptr_t)buf, len, 1);
}

/* ------------------------------------------------------------------------ */
/* Platform hooks: the library's own CPU stores and copies                   */

/* Count one platform-hook operation: an error, or @len bytes under @done. */
static void hook_count(struct dmm_hw *hw, int err, uint64_t *done, size_t len)
{
	hw_lock(hw);
	if (err) {
		hw->st.hook_errors++;
	} else {
		(*done)++;
		hw->st.hook_bytes += len;
	}
	hw_unlock(hw);
}

static void hook_phys_fill(void *ctx, dmm_phys_t pa, int c, size_t len)
{
	struct dmm_hw *hw = ctx;
	struct acc a = { .op = ACC_FILL, .c = c, .through = hw->opts.hooks_write_through != 0 };
	int err = cpu_op(hw, pa, len, &a, DMM_HW_AGENT_HOOK);

	hook_count(hw, err, &hw->st.hook_fills, len);
	if (err)
		hw_log(hw, DMM_LOG_ERR, "hw: phys_fill on [%#llx, +%zu) which is not RAM",
		       (unsigned long long)pa, len);
}

static void hook_phys_copy(void *ctx, dmm_phys_t dst, dmm_phys_t src, size_t len)
{
	struct dmm_hw *hw = ctx;
	int err = copy_op(hw, dst, src, len, hw->opts.hooks_write_through != 0, DMM_HW_AGENT_HOOK);

	hook_count(hw, err, &hw->st.hook_copies, len);
	if (err)
		hw_log(hw, DMM_LOG_ERR, "hw: phys_copy %#llx <- %#llx (+%zu) outside RAM",
		       (unsigned long long)dst, (unsigned long long)src, len);
}

void hw_platform_cache_hooks(struct dmm_platform *p)
{
	p->phys_fill = hook_phys_fill;
	p->phys_copy = hook_phys_copy;
}

/* ------------------------------------------------------------------------ */
/* Maintenance, prefetch, queries                                            */

static void maint_line(struct dmm_hw *hw, struct hw_line *ln, enum dmm_cache_op op)
{
	hw->st.maint_lines[op]++;
	switch (op) {
	case DMM_CACHE_CLEAN:
		if (ln->dirty)
			writeback(hw, ln);
		break;
	case DMM_CACHE_INVALIDATE:
		if (ln->dirty) {
			hw->st.dirty_discarded++;
			hw->st.last_discard_pa = ln->tag;
			hw_log(hw, DMM_LOG_DEBUG, "hw: invalidate discards dirty line %#llx",
			       (unsigned long long)ln->tag);
		}
		line_remove(hw, ln);
		break;
	case DMM_CACHE_FLUSH:
		if (ln->dirty)
			writeback(hw, ln);
		line_remove(hw, ln);
		break;
	}
}

/**
 * dmm_hw_cache_maint() - see hw.h. Cost: O(lines in range) or O(lines
 * cached), whichever is smaller. Context: any; takes the model's lock.
 */
int dmm_hw_cache_maint(struct dmm_hw *hw, enum dmm_cache_op op, dmm_phys_t pa, size_t len)
{
	dmm_phys_t first, last;
	uint64_t nr;

	if (!hw || (unsigned)op > (unsigned)DMM_CACHE_FLUSH || (len && pa > UINT64_MAX - (len - 1)))
		return -DMM_EINVAL;
	hw_lock(hw);
	hw->st.maint_ops[op]++;
	hw->st.maint_bytes[op] += len;
	if (!len || !hw->nr_lines) {
		hw_unlock(hw);
		return 0;
	}
	first = line_of(hw, pa);
	last = line_of(hw, pa + (len - 1));
	nr = ((last - first) / hw->line) + 1;
	if (nr <= hw->nr_lines) {
		for (uint64_t i = 0; i < nr; i++) {
			struct hw_line *ln = hw_line_find_locked(hw, first + i * hw->line);

			if (ln)
				maint_line(hw, ln, op);
		}
	} else {
		struct hw_line *ln = hw->mru;

		while (ln) {
			struct hw_line *next = ln->lru_next;

			if (ln->tag >= first && ln->tag <= last)
				maint_line(hw, ln, op);
			ln = next;
		}
	}
	hw_unlock(hw);
	return 0;
}

void dmm_hw_cache_flush_all(struct dmm_hw *hw)
{
	if (!hw)
		return;
	hw_lock(hw);
	while (hw->lru) {
		struct hw_line *ln = hw->lru;

		if (ln->dirty)
			writeback(hw, ln);
		line_remove(hw, ln);
	}
	hw_unlock(hw);
}

int dmm_hw_prefetch(struct dmm_hw *hw, dmm_phys_t pa, size_t len)
{
	dmm_phys_t first, last;
	int n = 0;

	if (!hw || !len || pa > UINT64_MAX - (len - 1))
		return hw && !len ? 0 : -DMM_EINVAL;
	first = line_of(hw, pa);
	last = line_of(hw, pa + (len - 1));
	hw_lock(hw);
	for (dmm_phys_t t = first;; t += hw->line) {
		if (n < INT32_MAX)
			n += prefetch_line_locked(hw, t, true);
		if (t == last)
			break;
	}
	hw_unlock(hw);
	return n;
}

enum dmm_hw_line_state dmm_hw_line_state(struct dmm_hw *hw, dmm_phys_t pa)
{
	return dmm_hw_line_peek(hw, pa, NULL);
}

enum dmm_hw_line_state dmm_hw_line_peek(struct dmm_hw *hw, dmm_phys_t pa, void *buf)
{
	enum dmm_hw_line_state s = DMM_HW_LINE_ABSENT;
	struct hw_line *ln;

	if (!hw)
		return s;
	hw_lock(hw);
	ln = hw_line_find_locked(hw, line_of(hw, pa));
	if (ln) {
		s = ln->dirty ? DMM_HW_LINE_DIRTY : DMM_HW_LINE_CLEAN;
		if (buf)
			memcpy(buf, ln->data, hw->line);
	}
	hw_unlock(hw);
	return s;
}

/* ------------------------------------------------------------------------ */
/* Coherent device snooping                                                  */

void hw_snoop_read_locked(struct dmm_hw *hw, dmm_phys_t pa, unsigned char *buf, size_t n,
			  uint64_t *hits)
{
	size_t done = 0;

	if (!hw->nr_dirty) {
		memmove(buf, hw_ram_ptr(hw, pa), n);
		return;
	}
	while (done < n) {
		dmm_phys_t cur = pa + done;
		dmm_phys_t tag = line_of(hw, cur);
		size_t o = (size_t)(cur - tag), k = hw->line - o;
		struct hw_line *ln = hw_line_find_locked(hw, tag);

		if (k > n - done)
			k = n - done;
		if (ln && ln->dirty) {
			memmove(buf + done, ln->data + o, k);
			(*hits)++;
		} else {
			memmove(buf + done, hw_ram_ptr(hw, cur), k);
		}
		done += k;
	}
}

void hw_snoop_write_locked(struct dmm_hw *hw, dmm_phys_t pa, const unsigned char *buf, size_t n,
			   uint64_t *hits)
{
	size_t done = 0;

	memmove(hw_ram_ptr(hw, pa), buf, n);
	if (!hw->nr_lines)
		return;
	while (done < n) {
		dmm_phys_t cur = pa + done;
		dmm_phys_t tag = line_of(hw, cur);
		size_t o = (size_t)(cur - tag), k = hw->line - o;
		struct hw_line *ln = hw_line_find_locked(hw, tag);

		if (k > n - done)
			k = n - done;
		if (ln) {
			memmove(ln->data + o, buf + done, k);
			(*hits)++;
		}
		done += k;
	}
}

/* ------------------------------------------------------------------------ */
/* Invariants                                                                */

int hw_cache_check_locked(struct dmm_hw *hw)
{
	uint64_t lines = 0, dirty = 0, lru = 0;
	const struct hw_line *prev = NULL;

	if (!hw->nbuckets || (hw->nbuckets & (hw->nbuckets - 1)) ||
	    ((size_t)1 << (64u - hw->bucket_shift)) != hw->nbuckets) {
		hw_log(hw, DMM_LOG_ERR, "hw: bucket array of %zu is malformed", hw->nbuckets);
		return -DMM_EFAULT;
	}
	for (size_t b = 0; b < hw->nbuckets; b++) {
		for (const struct hw_line *ln = hw->buckets[b]; ln; ln = ln->hnext) {
			if (bucket_of(hw, ln->tag) != b || line_of(hw, ln->tag) != ln->tag ||
			    !hw_is_ram(hw, ln->tag, 1)) {
				hw_log(hw, DMM_LOG_ERR, "hw: line %#llx misplaced or not RAM",
				       (unsigned long long)ln->tag);
				return -DMM_EFAULT;
			}
			lines++;
			dirty += ln->dirty;
			if (lines > hw->nr_lines) {
				hw_log(hw, DMM_LOG_ERR, "hw: more lines hashed than counted (%llu)",
				       (unsigned long long)hw->nr_lines);
				return -DMM_EFAULT;
			}
		}
	}
	for (const struct hw_line *ln = hw->mru; ln; ln = ln->lru_next) {
		if (ln->lru_prev != prev || ++lru > lines) {
			hw_log(hw, DMM_LOG_ERR, "hw: LRU list broken at line %#llx",
			       (unsigned long long)ln->tag);
			return -DMM_EFAULT;
		}
		prev = ln;
	}
	if (prev != hw->lru || lines != hw->nr_lines || lru != lines || dirty != hw->nr_dirty ||
	    (hw->opts.max_lines && lines > hw->opts.max_lines) || hw->st.peak_lines < lines) {
		hw_log(hw, DMM_LOG_ERR,
		       "hw: cache counts disagree: hashed %llu, listed %llu, counted %llu; "
		       "dirty %llu vs %llu; capacity %llu",
		       (unsigned long long)lines, (unsigned long long)lru,
		       (unsigned long long)hw->nr_lines, (unsigned long long)dirty,
		       (unsigned long long)hw->nr_dirty, (unsigned long long)hw->opts.max_lines);
		return -DMM_EFAULT;
	}
	return 0;
}

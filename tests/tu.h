/* SPDX-License-Identifier: MIT */
/*
 * Test utilities shared by the cmocka tests: machine builders, a hosted
 * memory map per test, an ownership map of the pages the test holds, fill
 * patterns, and assertions that print dmamem error names.
 *
 * Everything here is static: each test executable includes it once.
 */
#ifndef DMM_TESTS_TU_H
#define DMM_TESTS_TU_H

#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dmamem/dmamem.h>
#include <dmamem/hosted.h>

#define KiB ((uint64_t)1 << 10)
#define MiB ((uint64_t)1 << 20)
#define GiB ((uint64_t)1 << 30)

/* Assert that @expr (an int return code) equals @want, naming both codes. */
#define assert_rc(expr, want)                                                              \
	do {                                                                               \
		int rc_ = (expr);                                                          \
		int want_ = (want);                                                        \
		if (rc_ != want_) {                                                        \
			print_error("%s:%d: %s = %d (%s), want %d (%s)\n", __FILE__, __LINE__, \
				    #expr, rc_, dmm_errname(rc_), want_, dmm_errname(want_));  \
			fail();                                                            \
		}                                                                          \
	} while (0)

#define assert_ok(expr) assert_rc(expr, 0)

/* The zone reports agree with themselves: free pages by order and by
 * (migratetype, order) add up to the free count. */
static inline void tu_zone_reports_consistent(struct dmm_mem *mem)
{
	for (unsigned z = 0; z < dmm_mem_nr_zones(mem); z++) {
		struct dmm_zone_info zi;
		uint64_t pages = 0;
		assert_int_equal(dmm_zone_get_info(mem, z, &zi), 0);
		for (unsigned o = 0; o <= DMM_MAX_ORDER; o++) {
			uint64_t blocks = 0;
			for (unsigned mt = 0; mt < DMM_NR_MIGRATETYPES; mt++)
				blocks += zi.free_blocks_mt[mt][o];
			assert_int_equal(blocks, zi.free_blocks[o]);
			pages += zi.free_blocks[o] << o;
		}
		assert_int_equal(pages, zi.free);
		assert_true(zi.free <= zi.managed);
		assert_true(zi.free + zi.pcp <= zi.managed);
	}
}

/* Both allocator checks must pass (and the zone reports add up). */
#define assert_checks(mem)                                   \
	do {                                                 \
		assert_ok(dmm_page_alloc_check(mem));        \
		assert_ok(dmm_range_check(mem));             \
		tu_zone_reports_consistent(mem);             \
	} while (0)

/* ---- machines ------------------------------------------------------------ */

static inline void tu_machine(struct dmm_machine *m, const char *name)
{
	dmm_machine_defaults(m);
	snprintf(m->name, sizeof(m->name), "%s", name);
}

static inline void tu_add_ram(struct dmm_machine *m, dmm_phys_t base, uint64_t size)
{
	assert_true(m->nr_ram < DMM_MAX_REGIONS);
	m->ram[m->nr_ram].base = base;
	m->ram[m->nr_ram].size = size;
	m->nr_ram++;
}

/* A 64 MiB machine, a hosted platform with @nslots CPU slots and a copy of
 * its hooks for the test to change before dmm_mem_create. */
static inline void tu_hosted_platform(struct dmm_machine *m, const char *name, unsigned nslots,
				      struct dmm_hosted **h, struct dmm_platform *p)
{
	tu_machine(m, name);
	tu_add_ram(m, 0, 64 * MiB);
	assert_ok(dmm_hosted_create(m, nslots, DMM_LOG_WARN, h));
	*p = *dmm_hosted_platform(*h);
}

/*
 * Forcing an interleaving through the lock hook. tu_race_platform() is
 * tu_hosted_platform() with the lock hook wrapped: once armed with
 * tu_race_arm(fn, arg), the next lock the library takes first runs fn(arg)
 * (before taking it, holding nothing) and disarms. A call that checks
 * something and then takes a lock is so overtaken, deterministically, by
 * another call at exactly that point: single-threaded, no timing.
 */
struct tu_race {
	void (*real_lock)(void *ctx, struct dmm_lock *l);
	void (*fn)(void *arg);
	void *arg;
	unsigned fired;
};

static inline struct tu_race *tu_race(void)
{
	static struct tu_race r;
	return &r;
}

static inline void tu_race_lock(void *ctx, struct dmm_lock *l)
{
	struct tu_race *r = tu_race();
	void (*fn)(void *) = __atomic_exchange_n(&r->fn, (void (*)(void *))0, __ATOMIC_ACQ_REL);

	if (fn) {
		r->fired++;
		fn(r->arg);
	}
	r->real_lock(ctx, l);
}

static inline void tu_race_arm(void (*fn)(void *arg), void *arg)
{
	struct tu_race *r = tu_race();
	r->arg = arg;
	__atomic_store_n(&r->fn, fn, __ATOMIC_RELEASE);
}

static inline void tu_race_platform(struct dmm_machine *m, const char *name, unsigned nslots,
				    struct dmm_hosted **h, struct dmm_platform *p)
{
	tu_hosted_platform(m, name, nslots, h, p);
	tu_race()->real_lock = p->lock;
	tu_race()->fn = (void (*)(void *))0;
	p->lock = tu_race_lock;
}

/*
 * A defer hook that only queues its job (one at a time): the test runs it
 * when it wants with tu_hold_flush(), which is also a defer_flush hook.
 * tu_held()->jobs says whether one is queued.
 */
struct tu_held {
	void (*fn)(void *arg);
	void *arg;
	unsigned jobs;
};

static inline struct tu_held *tu_held(void)
{
	static struct tu_held h;
	return &h;
}

static inline int tu_hold_defer(void *ctx, void (*fn)(void *arg), void *arg)
{
	struct tu_held *h = tu_held();

	(void)ctx;
	assert_int_equal(h->jobs, 0);
	h->fn = fn;
	h->arg = arg;
	h->jobs++;
	return 0;
}

static inline void tu_hold_flush(void *ctx)
{
	struct tu_held *h = tu_held();

	(void)ctx;
	if (h->jobs) {
		h->jobs = 0;
		h->fn(h->arg);
	}
}

/* Of two frees of the block or range at @pfn that raced, exactly one
 * succeeded (rc 0); the other was refused with -DMM_ENOENT. */
static inline void tu_assert_one_free(dmm_pfn_t pfn, int rc1, int rc2)
{
	if ((rc1 == 0) == (rc2 == 0))
		fail_msg("%llu freed by two frees at once: %s and %s", (unsigned long long)pfn, dmm_errname(rc1),
			 dmm_errname(rc2));
	assert_rc(rc1 ? rc1 : rc2, -DMM_ENOENT);
}

/* A spinning barrier for two threads: both leave it within a few cycles
 * (zero-initialised). */
struct tu_spin_barrier {
	unsigned count, phase;
};

static inline void tu_spin_wait(struct tu_spin_barrier *b)
{
	unsigned phase = __atomic_load_n(&b->phase, __ATOMIC_ACQUIRE);
	unsigned spins = 0;

	if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == 2) {
		__atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&b->phase, phase + 1, __ATOMIC_RELEASE);
		return;
	}
	while (__atomic_load_n(&b->phase, __ATOMIC_ACQUIRE) == phase)
		if (++spins % 1024 == 0)
			sched_yield();
}

static inline void tu_add_reserved(struct dmm_machine *m, dmm_phys_t base, uint64_t size)
{
	assert_true(m->nr_reserved < DMM_MAX_REGIONS);
	m->reserved[m->nr_reserved].base = base;
	m->reserved[m->nr_reserved].size = size;
	m->nr_reserved++;
}

/*
 * A small machine with holes and three zones' worth of limits:
 *   [0x1000, 0x9f000)        low RAM below 1 MiB (hole at page 0)
 *   [1 MiB, 40 MiB)          DMA (below 16 MiB) and DMA32
 *   [4 GiB, 4 GiB + 24 MiB)  Normal
 * plus a firmware-reserved range at 2 MiB.
 */
static inline void tu_machine_holes(struct dmm_machine *m)
{
	tu_machine(m, "test-holes");
	tu_add_ram(m, 0x1000, 0x9e000);
	tu_add_ram(m, 1 * MiB, 39 * MiB);
	tu_add_ram(m, 4 * GiB, 24 * MiB);
	tu_add_reserved(m, 2 * MiB, 256 * KiB);
	m->dma_limit = 16 * MiB;
	m->dma32_limit = 4 * GiB;
}

/* ---- a memory map under test, with the pages the test owns --------------- */

struct tu_env {
	struct dmm_machine m;
	struct dmm_hosted *hosted;
	struct dmm_mem *mem;
	struct dmm_mem_info info;
	dmm_pfn_t base;      /* info.min_pfn */
	uint64_t npfn;       /* info.max_pfn - info.min_pfn */
	uint8_t *owned;      /* 1 per pfn the test holds */
	uint64_t free0;      /* free + pcp pages right after creation */
};

static inline uint64_t tu_zone_free_all(struct dmm_mem *mem)
{
	uint64_t n = 0;
	for (unsigned z = 0; z < dmm_mem_nr_zones(mem); z++) {
		struct dmm_zone_info zi;
		assert_ok(dmm_zone_get_info(mem, z, &zi));
		n += zi.free + zi.pcp;
	}
	return n;
}

/* Rejected frees so far, all zones (their bad_free counters). */
static inline uint64_t tu_zone_bad_frees(struct dmm_mem *mem)
{
	uint64_t n = 0;
	for (unsigned z = 0; z < dmm_mem_nr_zones(mem); z++) {
		struct dmm_zone_info zi;
		assert_ok(dmm_zone_get_info(mem, z, &zi));
		n += zi.stats.bad_free;
	}
	return n;
}

static inline struct tu_env *tu_env_create(const struct dmm_machine *m, unsigned nr_cpus)
{
	struct tu_env *e = calloc(1, sizeof(*e));
	assert_non_null(e);
	e->m = *m;
	assert_ok(dmm_hosted_mem_create(&e->m, nr_cpus, &e->hosted, &e->mem));
	assert_non_null(e->mem);
	dmm_mem_get_info(e->mem, &e->info);
	e->base = e->info.min_pfn;
	e->npfn = e->info.max_pfn - e->info.min_pfn;
	e->owned = calloc(e->npfn, 1);
	assert_non_null(e->owned);
	e->free0 = tu_zone_free_all(e->mem);
	assert_checks(e->mem);
	return e;
}

static inline void tu_env_destroy(struct tu_env *e)
{
	if (!e)
		return;
	dmm_hosted_mem_destroy(e->hosted, e->mem);
	free(e->owned);
	free(e);
}

/* Mark [pfn, pfn + n) owned; fail if any page is already owned or not RAM. */
static inline void tu_own(struct tu_env *e, dmm_pfn_t pfn, uint64_t n)
{
	assert_true(pfn >= e->base && pfn + n <= e->base + e->npfn);
	for (uint64_t i = 0; i < n; i++) {
		struct dmm_page *pg = dmm_pfn_to_page(e->mem, pfn + i);
		if (e->owned[pfn + i - e->base]) {
			print_error("pfn %#llx handed out twice\n", (unsigned long long)(pfn + i));
			fail();
		}
		assert_non_null(pg);
		e->owned[pfn + i - e->base] = 1;
	}
}

static inline void tu_disown(struct tu_env *e, dmm_pfn_t pfn, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		assert_true(e->owned[pfn + i - e->base]);
		e->owned[pfn + i - e->base] = 0;
	}
}

/* ---- fill patterns --------------------------------------------------------- */

static inline uint64_t tu_token(dmm_pfn_t pfn, uint64_t salt, size_t i)
{
	uint64_t x = (pfn + 1) * 0x9e3779b97f4a7c15ull ^ salt ^ ((uint64_t)i << 32);
	x ^= x >> 29;
	return x;
}

/* Fill every word of [pfn, pfn + n) (full = 1) or the first and last 16
 * bytes of each page (full = 0). */
static inline void tu_fill(struct dmm_mem *mem, dmm_pfn_t pfn, uint64_t n, uint64_t salt, int full)
{
	for (uint64_t p = 0; p < n; p++) {
		uint64_t *v = dmm_pfn_to_virt(mem, pfn + p);
		size_t words = DMM_PAGE_SIZE / sizeof(uint64_t);
		assert_non_null(v);
		if (full) {
			for (size_t i = 0; i < words; i++)
				v[i] = tu_token(pfn + p, salt, i);
		} else {
			v[0] = tu_token(pfn + p, salt, 0);
			v[1] = tu_token(pfn + p, salt, 1);
			v[words - 2] = tu_token(pfn + p, salt, words - 2);
			v[words - 1] = tu_token(pfn + p, salt, words - 1);
		}
	}
}

static inline void tu_verify(struct dmm_mem *mem, dmm_pfn_t pfn, uint64_t n, uint64_t salt, int full)
{
	size_t words = DMM_PAGE_SIZE / sizeof(uint64_t);
	for (uint64_t p = 0; p < n; p++) {
		const uint64_t *v = dmm_pfn_to_virt(mem, pfn + p);
		assert_non_null(v);
		for (size_t i = 0; i < words; i++) {
			if (!full && i > 1 && i < words - 2)
				continue;
			if (v[i] != tu_token(pfn + p, salt, i)) {
				print_error("pattern lost at pfn %#llx word %zu\n",
					    (unsigned long long)(pfn + p), i);
				fail();
			}
		}
	}
}

static inline int tu_is_zero(struct dmm_mem *mem, dmm_pfn_t pfn, uint64_t n)
{
	for (uint64_t p = 0; p < n; p++) {
		const uint64_t *v = dmm_pfn_to_virt(mem, pfn + p);
		if (!v)
			return 0;
		for (size_t i = 0; i < DMM_PAGE_SIZE / sizeof(uint64_t); i++)
			if (v[i])
				return 0;
	}
	return 1;
}

/* ---- a small deterministic PRNG (xorshift64*) ------------------------------ */

static inline uint64_t tu_rand(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

static inline uint64_t tu_rand_below(uint64_t *s, uint64_t n)
{
	return n ? tu_rand(s) % n : 0;
}

#endif

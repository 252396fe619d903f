/* SPDX-License-Identifier: MIT */
/*
 * Hardware model: the CPU cache, memory attributes and device DMA engines.
 *
 * Each hazard a driver can meet on real hardware is reproduced and shown to
 * go away with the right maintenance: stale RAM read by a non-coherent
 * device, stale cache lines read by the CPU (touched or speculatively
 * prefetched), dirty neighbours lost to an invalidate, address truncation,
 * bus translation faults, cacheable aliases of uncached pages. The platform
 * hooks (phys_fill/phys_copy) are shown to be coherent with the model, also
 * when the library itself zeroes and migrates pages. dmm_hw_check() runs
 * after every step that changes the cache.
 */
#include <pthread.h>

#include "tu.h"

#include "hw/hw.h"

#define L 64u                          /* the test machine's cache line */
#define BUF ((dmm_phys_t)(8 * MiB))    /* a DMA buffer in low RAM */
#define HI_RAM ((dmm_phys_t)(4 * GiB)) /* RAM above 4 GiB */

#define assert_hw_ok(hw) assert_ok(dmm_hw_check(hw))

static struct dmm_hw *hw_new_opts(const struct dmm_hw_opts *o)
{
	struct dmm_machine m;
	struct dmm_hw *hw;

	tu_machine_holes(&m);   /* RAM [4K, 636K), [1M, 40M), [4G, 4G + 24M) */
	assert_int_equal(m.cache_line, L);
	assert_ok(dmm_hw_create(&m, o, &hw));
	assert_int_equal(dmm_hw_line_size(hw), L);
	return hw;
}

static struct dmm_hw *hw_new(void)
{
	return hw_new_opts(NULL);
}

static struct dmm_hw_dev *dev_new(struct dmm_hw *hw, const char *name, unsigned bits, int coherent)
{
	struct dmm_hw_dev_desc d;
	struct dmm_hw_dev *dev;

	memset(&d, 0, sizeof(d));
	d.name = name;
	d.addr_bits = bits;
	d.coherent = coherent;
	assert_ok(dmm_hw_dev_create(hw, &d, &dev));
	return dev;
}

static void pat(unsigned char *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (unsigned char)(seed * 131u + i * 7u + 1u);
}

/* RAM holds @n bytes of pattern @seed at @pa (the cache ignored)? */
static int ram_is(struct dmm_hw *hw, dmm_phys_t pa, size_t n, unsigned seed)
{
	unsigned char want[4096], got[4096];

	assert_true(n <= sizeof(want));
	pat(want, n, seed);
	assert_ok(dmm_hw_ram_read(hw, pa, got, n));
	return memcmp(want, got, n) == 0;
}

/* The CPU reads @n bytes of pattern @seed at @pa? */
static int cpu_is(struct dmm_hw *hw, dmm_phys_t pa, size_t n, unsigned seed)
{
	unsigned char want[4096], got[4096];

	assert_true(n <= sizeof(want));
	pat(want, n, seed);
	assert_ok(dmm_hw_cpu_read(hw, pa, got, n));
	return memcmp(want, got, n) == 0;
}

static void ram_pat(struct dmm_hw *hw, dmm_phys_t pa, size_t n, unsigned seed)
{
	unsigned char b[4096];

	assert_true(n <= sizeof(b));
	pat(b, n, seed);
	assert_ok(dmm_hw_ram_write(hw, pa, b, n));
}

static void cpu_pat(struct dmm_hw *hw, dmm_phys_t pa, size_t n, unsigned seed)
{
	unsigned char b[4096];

	assert_true(n <= sizeof(b));
	pat(b, n, seed);
	assert_ok(dmm_hw_cpu_write(hw, pa, b, n));
}

static void dev_pat(struct dmm_hw_dev *dev, dmm_dma_addr_t bus, size_t n, unsigned seed)
{
	unsigned char b[4096];

	assert_true(n <= sizeof(b));
	pat(b, n, seed);
	assert_ok(dmm_hw_dev_write(dev, bus, b, n));
}

static int dev_is(struct dmm_hw_dev *dev, dmm_dma_addr_t bus, size_t n, unsigned seed)
{
	unsigned char want[4096], got[4096];

	assert_true(n <= sizeof(want));
	pat(want, n, seed);
	assert_ok(dmm_hw_dev_read(dev, bus, got, n));
	return memcmp(want, got, n) == 0;
}

/* ---- the cache itself ------------------------------------------------------- */

static void test_cache_basics(void **state)
{
	struct dmm_hw *hw = hw_new();
	struct dmm_hw_stats st;
	unsigned char b[3 * L], line[L];
	(void)state;

	ram_pat(hw, BUF, sizeof(b), 1);
	assert_int_equal(dmm_hw_line_state(hw, BUF), DMM_HW_LINE_ABSENT);
	/* a read miss fills the line, clean */
	assert_true(cpu_is(hw, BUF + 8, 16, 0) == 0); /* (pattern 0 is not there) */
	assert_int_equal(dmm_hw_line_state(hw, BUF), DMM_HW_LINE_CLEAN);
	/* a store makes it dirty; RAM keeps the old data */
	cpu_pat(hw, BUF + 10, 2 * L, 2); /* unaligned: touches 3 lines */
	assert_int_equal(dmm_hw_line_state(hw, BUF), DMM_HW_LINE_DIRTY);
	assert_int_equal(dmm_hw_line_state(hw, BUF + L), DMM_HW_LINE_DIRTY);
	assert_int_equal(dmm_hw_line_state(hw, BUF + 2 * L), DMM_HW_LINE_DIRTY);
	assert_true(cpu_is(hw, BUF + 10, 2 * L, 2));
	assert_false(ram_is(hw, BUF + 10, 2 * L, 2));
	assert_int_equal(dmm_hw_line_peek(hw, BUF + L, line), DMM_HW_LINE_DIRTY);
	pat(b, 2 * L, 2);
	assert_memory_equal(line, b + L - 10, L);
	assert_hw_ok(hw);

	/* CLEAN writes back and keeps the lines */
	assert_ok(dmm_hw_cache_maint(hw, DMM_CACHE_CLEAN, BUF + 10, 1));
	assert_int_equal(dmm_hw_line_state(hw, BUF), DMM_HW_LINE_CLEAN);
	assert_int_equal(dmm_hw_line_state(hw, BUF + L), DMM_HW_LINE_DIRTY);
	assert_ok(dmm_hw_cache_maint(hw, DMM_CACHE_CLEAN, BUF, 3 * L));
	assert_true(ram_is(hw, BUF + 10, 2 * L, 2));
	assert_int_equal(dmm_hw_line_state(hw, BUF + 2 * L), DMM_HW_LINE_CLEAN);
	/* FLUSH drops them (nothing to write back any more) */
	assert_ok(dmm_hw_cache_maint(hw, DMM_CACHE_FLUSH, BUF, 3 * L));
	assert_int_equal(dmm_hw_line_state(hw, BUF + L), DMM_HW_LINE_ABSENT);
	dmm_hw_get_stats(hw, &st);
	assert_int_equal(st.lines, 0);
	assert_int_equal(st.dirty, 0);
	assert_int_equal(st.writebacks, 3);
	assert_int_equal(st.dirty_discarded, 0);
	assert_int_equal(st.maint_ops[DMM_CACHE_CLEAN], 2);
	assert_int_equal(st.maint_lines[DMM_CACHE_CLEAN], 4);
	assert_int_equal(st.maint_lines[DMM_CACHE_FLUSH], 3);
	assert_int_equal(st.peak_lines, 3);
	assert_true(st.misses >= 3);
	assert_true(st.hits >= 1);
	assert_hw_ok(hw);

	/* fill and copy through the cache */
	assert_ok(dmm_hw_cpu_fill(hw, BUF, 0xee, L));
	assert_ok(dmm_hw_cpu_copy(hw, BUF + 4 * L, BUF, L));
	assert_ok(dmm_hw_cpu_read(hw, BUF + 4 * L, line, L));
	for (unsigned i = 0; i < L; i++)
		assert_int_equal(line[i], 0xee);
	/* overlapping copy: memmove semantics */
	cpu_pat(hw, BUF + 8 * L, 2 * L, 3);
	assert_ok(dmm_hw_cpu_copy(hw, BUF + 8 * L + 5, BUF + 8 * L, 2 * L - 5));
	assert_true(cpu_is(hw, BUF + 8 * L + 5, 2 * L - 5, 3));

	/* pointers into the RAM mapping */
	{
		const struct dmm_platform *p = dmm_hw_platform(hw);
		unsigned char *va = p->phys_to_virt(p->ctx, BUF + 16 * L);
		dmm_phys_t pa;

		assert_non_null(va);
		assert_ok(dmm_hw_virt_to_phys(hw, va, &pa));
		assert_int_equal(pa, BUF + 16 * L);
		pat(b, L, 4);
		assert_ok(dmm_hw_cpu_write_virt(hw, va, b, L));
		assert_true(cpu_is(hw, BUF + 16 * L, L, 4));
		memset(line, 0, sizeof(line));
		assert_ok(dmm_hw_cpu_read_virt(hw, va, line, L));
		assert_memory_equal(line, b, L);
		assert_rc(dmm_hw_virt_to_phys(hw, b, &pa), -DMM_EFAULT);
	}

	/* not RAM: refused, nothing cached */
	assert_rc(dmm_hw_cpu_read(hw, 0, b, 8), -DMM_EFAULT);             /* hole at page 0 */
	assert_rc(dmm_hw_cpu_write(hw, 0x9f000 - 8, b, 16), -DMM_EFAULT); /* runs off RAM */
	assert_int_equal(dmm_hw_line_state(hw, 0x9f000 - 8), DMM_HW_LINE_ABSENT);
	assert_rc(dmm_hw_cpu_read(hw, UINT64_MAX - 4, b, 8), -DMM_EINVAL);
	assert_rc(dmm_hw_cpu_read(hw, BUF, NULL, 8), -DMM_EINVAL);
	assert_rc(dmm_hw_cache_maint(hw, (enum dmm_cache_op)7, BUF, 8), -DMM_EINVAL);
	assert_ok(dmm_hw_cpu_read(hw, BUF, NULL, 0));
	assert_int_equal(dmm_hw_is_ram(hw, 0x9f000 - 8, 8), 1);
	assert_int_equal(dmm_hw_is_ram(hw, 0x9f000 - 8, 9), 0);
	assert_int_equal(dmm_hw_is_ram(hw, HI_RAM + 24 * MiB, 1), 0);
	assert_hw_ok(hw);
	dmm_hw_destroy(hw);
}

static void test_eviction(void **state)
{
	struct dmm_hw_opts o;
	struct dmm_hw *hw;
	struct dmm_hw_stats st;
	(void)state;

	dmm_hw_opts_default(&o);
	o.max_lines = 8;
	hw = hw_new_opts(&o);
	for (unsigned i = 0; i < 16; i++)
		cpu_pat(hw, BUF + i * L, L, 100 + i);
	dmm_hw_get_stats(hw, &st);
	assert_int_equal(st.lines, 8);
	assert_int_equal(st.evictions, 8);
	assert_int_equal(st.writebacks, 8);
	/* the oldest eight were evicted and written back; the rest are dirty */
	for (unsigned i = 0; i < 8; i++) {
		assert_true(ram_is(hw, BUF + i * L, L, 100 + i));
		assert_int_equal(dmm_hw_line_state(hw, BUF + i * L), DMM_HW_LINE_ABSENT);
	}
	for (unsigned i = 8; i < 16; i++)
		assert_int_equal(dmm_hw_line_state(hw, BUF + i * L), DMM_HW_LINE_DIRTY);
	for (unsigned i = 0; i < 16; i++)
		assert_true(cpu_is(hw, BUF + i * L, L, 100 + i));
	assert_hw_ok(hw);
	/* a huge range on a small cache walks the cached lines, not the range */
	assert_ok(dmm_hw_cache_maint(hw, DMM_CACHE_FLUSH, 1 * MiB, 39 * MiB));
	dmm_hw_get_stats(hw, &st);
	assert_int_equal(st.lines, 0);
	for (unsigned i = 0; i < 16; i++)
		assert_true(ram_is(hw, BUF + i * L, L, 100 + i));
	/* many lines: the hash table grows, every line still found */
	dmm_hw_destroy(hw);
	hw = hw_new();
	for (unsigned i = 0; i < 20000; i++)
		cpu_pat(hw, BUF + (dmm_phys_t)i * L, 8, i);
	assert_hw_ok(hw);
	for (unsigned i = 0; i < 20000; i++)
		assert_int_equal(dmm_hw_line_state(hw, BUF + (dmm_phys_t)i * L), DMM_HW_LINE_DIRTY);
	dmm_hw_cache_flush_all(hw);
	for (unsigned i = 0; i < 20000; i += 97)
		assert_true(ram_is(hw, BUF + (dmm_phys_t)i * L, 8, i));
	dmm_hw_get_stats(hw, &st);
	assert_int_equal(st.lines, 0);
	assert_int_equal(st.writebacks, 20000);
	assert_hw_ok(hw);
	dmm_hw_destroy(hw);
}

/* ---- (a) CPU writes, a non-coherent device reads ----------------------------- */

static void test_noncoherent_needs_clean(void **state)
{
	struct dmm_hw *hw = hw_new();
	struct dmm_hw_dev *dev = dev_new(hw, "nc", 32, 0);
	struct dmm_hw_dev_stats ds;
	(void)state;

	ram_pat(hw, BUF, 512, 1);   /* what RAM held before */
	cpu_pat(hw, BUF, 512, 2);   /* the driver fills a TX buffer */
	/* no CLEAN: the device reads what RAM holds, not what the CPU wrote */
	assert_true(dev_is(dev, BUF, 512, 1));
	assert_false(dev_is(dev, BUF, 512, 2));
	/* CLEAN (dma_map TO_DEVICE): now it sees the new data */
	assert_ok(dmm_hw_cache_maint(hw, DMM_CACHE_CLEAN, BUF, 512));
	assert_true(dev_is(dev, BUF, 512, 2));
	dmm_hw_dev_get_stats(dev, &ds);
	assert_int_equal(ds.reads, 3);
	assert_int_equal(ds.bytes_read, 3 * 512);
	assert_int_equal(ds.snoop_hits, 0);
	assert_int_equal(ds.truncations + ds.faults, 0);
	assert_hw_ok(hw);
	dmm_hw_destroy(hw); /* destroys the device too */
}

/* ---- (b) a non-coherent device writes, the CPU has a stale line -------------- */

static void test_noncoherent_needs_invalidate(void **state)
{
	struct dmm_hw *hw = hw_new();
	struct dmm_hw_dev *dev = dev_new(hw, "nc", 32, 0);
	(void)state;

	ram_pat(hw, BUF, 256, 1);
	assert_true(cpu_is(hw, BUF, 256, 1));   /* the CPU looked at the buffer */
	dev_pat(dev, BUF, 256, 2);              /* RX: the device writes RAM */
	assert_true(ram_is(hw, BUF, 256, 2));
	assert_true(cpu_is(hw, BUF, 256, 1));   /* stale: served from the cache */
	/* INVALIDATE (dma_unmap / sync_for_cpu FROM_DEVICE) */
	assert_ok(dmm_hw_cache_maint(hw, DMM_CACHE_INVALIDATE, BUF, 256));
	assert_true(cpu_is(hw, BUF, 256, 2));

	/* the CPU never touched it, but a prefetch pulled a line in after the
	 * map-time invalidate: stale again (why unmap must invalidate too) */
	assert_ok(dmm_hw_cache_maint(hw, DMM_CACHE_INVALIDATE, BUF, 256)); /* map */
	assert_int_equal(dmm_hw_prefetch(hw, BUF + L, L), 1);             /* speculation */
	assert_int_equal(dmm_hw_prefetch(hw, BUF + L, L), 0);             /* already there */
	dev_pat(dev, BUF, 256, 3);                                        /* DMA */
	assert_false(cpu_is(hw, BUF, 256, 3));
	assert_ok(dmm_hw_cache_maint(hw, DMM_CACHE_INVALIDATE, BUF, 256)); /* unmap */
	assert_true(cpu_is(hw, BUF, 256, 3));
	assert_hw_ok(hw);
	dmm_hw_destroy(hw);
}

/* The same with the random prefetcher: only a neighbour is ever read. */
static void test_speculative_prefetch_makes_stale(void **state)
{
	struct dmm_hw_opts o;
	struct dmm_hw *hw;
	struct dmm_hw_dev *dev;
	struct dmm_hw_stats st;
	const dmm_phys_t buf = BUF + 4096, nb = buf - L; /* neighbour: the line below */
	unsigned char x[L], tries = 0;
	dmm_phys_t got = 0;
	(void)state;

	dmm_hw_opts_default(&o);
	o.prefetch = 1;
	o.prefetch_seed = 42;
	hw = hw_new_opts(&o);
	dev = dev_new(hw, "nc", 64, 0);
	ram_pat(hw, buf, 8 * L, 1);
	assert_ok(dmm_hw_cache_maint(hw, DMM_CACHE_INVALIDATE, buf, 8 * L)); /* map */
	while (!got && tries < 200) {
		assert_ok(dmm_hw_cpu_read(hw, nb, x, L)); /* the CPU works next door */
		for (unsigned i = 0; i < 8 && !got; i++)
			if (dmm_hw_line_state(hw, buf + i * L) != DMM_HW_LINE_ABSENT)
				got = buf + i * L;
		tries++;
	}
	assert_true(got != 0);
	dmm_hw_get_stats(hw, &st);
	assert_true(st.prefetches > 0);
	dev_pat(dev, buf, 8 * L, 2); /* the device fills the buffer */
	/* the prefetched line is stale; the others are not cached... unless
	 * prefetch pulled them too: compare only the line we know about */
	{
		unsigned char want_old[8 * L], cur[L];

		pat(want_old, sizeof(want_old), 1);
		assert_ok(dmm_hw_cpu_read(hw, got, cur, L));
		assert_memory_equal(cur, want_old + (got - buf), L);
	}
	assert_ok(dmm_hw_cache_maint(hw, DMM_CACHE_INVALIDATE, buf, 8 * L)); /* unmap */
	assert_true(cpu_is(hw, buf, 8 * L, 2));
	assert_hw_ok(hw);
	dmm_hw_destroy(hw);

	/* the same seed gives the same speculation */
	hw = hw_new_opts(&o);
	for (unsigned i = 0; i < tries; i++)
		assert_ok(dmm_hw_cpu_read(hw, nb, x, L));
	assert_int_not_equal(dmm_hw_line_state(hw, got), DMM_HW_LINE_ABSENT);
	dmm_hw_destroy(hw);
}

/* ---- (c) two objects in one line: INVALIDATE loses the neighbour ------------- */

static void test_invalidate_loses_neighbour(void **state)
{
	struct dmm_hw *hw = hw_new();
	struct dmm_hw_dev *dev = dev_new(hw, "nc", 32, 0);
	struct dmm_hw_stats st;
	const dmm_phys_t a = BUF, b = BUF + L / 2; /* two 32-byte objects, one line */
	(void)state;

	ram_pat(hw, a, L, 1);
	/* the CPU updates object B (dirty line) ... */
	cpu_pat(hw, b, L / 2, 2);
	/* ... while object A is mapped FROM_DEVICE: invalidate A's range */
	assert_ok(dmm_hw_cache_maint(hw, DMM_CACHE_INVALIDATE, a, L / 2));
	dev_pat(dev, a, L / 2, 3);
	assert_true(cpu_is(hw, a, L / 2, 3));   /* A arrived ... */
	assert_false(cpu_is(hw, b, L / 2, 2));  /* ... B's update is gone */
	dmm_hw_get_stats(hw, &st);
	assert_int_equal(st.dirty_discarded, 1);
	assert_int_equal(st.last_discard_pa, a);

	/* B written while the device owns A: whatever the CPU does at unmap,
	 * one of them loses. Invalidate: B lost. */
	ram_pat(hw, a, L, 1);
	assert_ok(dmm_hw_cache_maint(hw, DMM_CACHE_FLUSH, a, L / 2)); /* careful map */
	cpu_pat(hw, b, L / 2, 4);                                    /* CPU, during DMA */
	dev_pat(dev, a, L / 2, 5);                                   /* device */
	assert_ok(dmm_hw_cache_maint(hw, DMM_CACHE_INVALIDATE, a, L / 2));
	assert_true(cpu_is(hw, a, L / 2, 5));
	assert_false(cpu_is(hw, b, L / 2, 4));
	/* Clean instead: the stale copy of A in the line overwrites the device's data. */
	ram_pat(hw, a, L, 1);
	assert_ok(dmm_hw_cache_maint(hw, DMM_CACHE_FLUSH, a, L));
	cpu_pat(hw, b, L / 2, 4);
	dev_pat(dev, a, L / 2, 5);
	assert_ok(dmm_hw_cache_maint(hw, DMM_CACHE_FLUSH, a, L / 2));
	assert_true(cpu_is(hw, b, L / 2, 4));
	assert_false(cpu_is(hw, a, L / 2, 5));
	assert_false(ram_is(hw, a, L / 2, 5));
	/* objects in separate lines do not interfere */
	ram_pat(hw, a, 2 * L, 1);
	assert_ok(dmm_hw_cache_maint(hw, DMM_CACHE_FLUSH, a, 2 * L));
	cpu_pat(hw, a + L, L, 6);
	assert_ok(dmm_hw_cache_maint(hw, DMM_CACHE_INVALIDATE, a, L));
	dev_pat(dev, a, L, 7);
	assert_ok(dmm_hw_cache_maint(hw, DMM_CACHE_INVALIDATE, a, L));
	assert_true(cpu_is(hw, a, L, 7));
	assert_true(cpu_is(hw, a + L, L, 6));
	assert_hw_ok(hw);
	dmm_hw_destroy(hw);
}

/* ---- (d) a coherent device needs no maintenance ------------------------------- */

static void test_coherent_device(void **state)
{
	struct dmm_hw *hw = hw_new();
	struct dmm_hw_dev *dev = dev_new(hw, "coh", 64, 1);
	struct dmm_hw_dev_stats ds;
	struct dmm_hw_stats st;
	unsigned char half[L / 2], want[L];
	(void)state;

	ram_pat(hw, BUF, 512, 1);
	cpu_pat(hw, BUF, 512, 2);
	assert_true(dev_is(dev, BUF, 512, 2));   /* snooped the dirty lines */
	dev_pat(dev, BUF, 512, 3);
	assert_true(cpu_is(hw, BUF, 512, 3));    /* the cached copies were updated */
	assert_true(ram_is(hw, BUF, 512, 3));
	/* a device write into half of a dirty line keeps the CPU's other half */
	cpu_pat(hw, BUF + 1024, L, 4);
	pat(half, sizeof(half), 5);
	assert_ok(dmm_hw_dev_write(dev, BUF + 1024, half, sizeof(half)));
	pat(want, L, 4);
	memcpy(want, half, sizeof(half));
	{
		unsigned char got[L];

		assert_ok(dmm_hw_cpu_read(hw, BUF + 1024, got, L));
		assert_memory_equal(got, want, L);
		assert_ok(dmm_hw_cache_maint(hw, DMM_CACHE_FLUSH, BUF + 1024, L));
		assert_ok(dmm_hw_ram_read(hw, BUF + 1024, got, L));
		assert_memory_equal(got, want, L);
	}
	dmm_hw_dev_get_stats(dev, &ds);
	assert_true(ds.snoop_hits >= 8 + 8 + 1);
	dmm_hw_get_stats(hw, &st);
	assert_int_equal(st.dirty_discarded, 0);
	assert_int_equal(st.maint_ops[DMM_CACHE_INVALIDATE] + st.maint_ops[DMM_CACHE_CLEAN], 0);
	assert_hw_ok(hw);
	dmm_hw_destroy(hw);
}

/* ---- (e) address truncation -------------------------------------------------- */

static void test_truncation(void **state)
{
	struct dmm_hw *hw = hw_new();
	struct dmm_hw_dev *d32 = dev_new(hw, "dev32", 32, 0);
	struct dmm_hw_dev *d64 = dev_new(hw, "dev64", 64, 0);
	struct dmm_hw_dev *isa = dev_new(hw, "isa", 24, 0);
	const dmm_dma_addr_t hi = HI_RAM + BUF; /* 4 GiB + 8 MiB: RAM */
	struct dmm_hw_dev_event ev[DMM_HW_DEV_EVENTS];
	struct dmm_hw_dev_stats ds;
	struct dmm_hw_dev_desc bad;
	struct dmm_hw_dev *x;
	uint64_t total;
	unsigned char b[32];
	(void)state;

	ram_pat(hw, BUF, 256, 1);
	ram_pat(hw, hi, 256, 1);
	/* a 32-bit device told to write above 4 GiB writes at the address
	 * without its top bits */
	dev_pat(d32, hi, 256, 2);
	assert_true(ram_is(hw, BUF, 256, 2));
	assert_true(ram_is(hw, hi, 256, 1));
	assert_int_equal(dmm_hw_dev_events(d32, ev, DMM_HW_DEV_EVENTS, &total), 1);
	assert_int_equal(total, 1);
	assert_int_equal(ev[0].kind, DMM_HW_EV_TRUNCATED);
	assert_int_equal(ev[0].bus, hi);
	assert_int_equal(ev[0].bus_eff, BUF);
	assert_int_equal(ev[0].write, 1);
	assert_int_equal(ev[0].len, 256);
	dmm_hw_dev_get_stats(d32, &ds);
	assert_int_equal(ds.truncations, 1);
	assert_int_equal(ds.writes, 1);
	/* a 64-bit device reaches it */
	dev_pat(d64, hi, 256, 3);
	assert_true(ram_is(hw, hi, 256, 3));
	assert_int_equal(dmm_hw_dev_events(d64, ev, DMM_HW_DEV_EVENTS, NULL), 0);
	/* reads truncate too */
	assert_true(dev_is(d32, hi, 256, 2));
	dmm_hw_dev_get_stats(d32, &ds);
	assert_int_equal(ds.truncations, 2);
	/* the address counter wraps at 16 MiB: the tail goes to page 0, a
	 * hole, so the whole access faults and nothing is written */
	ram_pat(hw, 16 * MiB - 16, 32, 1);
	memset(b, 0x5a, sizeof(b));
	assert_rc(dmm_hw_dev_write(isa, 16 * MiB - 16, b, 32), -DMM_EFAULT);
	assert_true(ram_is(hw, 16 * MiB - 16, 32, 1));
	assert_int_equal(dmm_hw_dev_events(isa, ev, DMM_HW_DEV_EVENTS, &total), 2);
	assert_int_equal(ev[0].kind, DMM_HW_EV_TRUNCATED);
	assert_int_equal(ev[0].bus_eff, 0);
	assert_int_equal(ev[1].kind, DMM_HW_EV_FAULT);
	/* resolve says where an access would go, recording nothing */
	{
		dmm_dma_addr_t eff;
		dmm_phys_t pa;
		uint64_t run;

		assert_ok(dmm_hw_dev_resolve(d32, hi + 8, 0, &eff, &pa, &run));
		assert_int_equal(eff, BUF + 8);
		assert_int_equal(pa, BUF + 8);
		assert_int_equal(run, 40 * MiB - (BUF + 8));
		assert_rc(dmm_hw_dev_resolve(isa, 16 * MiB, 0, &eff, &pa, &run), -DMM_EFAULT);
		dmm_hw_dev_get_stats(d32, &ds);
		assert_int_equal(ds.truncations, 2);
	}
	/* the event ring keeps the latest DMM_HW_DEV_EVENTS */
	for (unsigned i = 0; i < DMM_HW_DEV_EVENTS + 3; i++)
		assert_ok(dmm_hw_dev_read(d32, hi + i, b, 1));
	assert_int_equal(dmm_hw_dev_events(d32, ev, DMM_HW_DEV_EVENTS, &total), DMM_HW_DEV_EVENTS);
	assert_int_equal(total, 2 + DMM_HW_DEV_EVENTS + 3);
	assert_int_equal(ev[DMM_HW_DEV_EVENTS - 1].bus, hi + DMM_HW_DEV_EVENTS + 2);
	assert_int_equal(dmm_hw_dev_events(d32, ev, 2, NULL), 2);
	assert_int_equal(ev[1].bus, hi + DMM_HW_DEV_EVENTS + 2);
	/* bad descriptors and arguments */
	memset(&bad, 0, sizeof(bad));
	bad.addr_bits = 0;
	assert_rc(dmm_hw_dev_create(hw, &bad, &x), -DMM_EINVAL);
	assert_null(x);
	bad.addr_bits = 65;
	assert_rc(dmm_hw_dev_create(hw, &bad, &x), -DMM_EINVAL);
	bad.addr_bits = 32;
	bad.nr_ranges = 1; /* an empty range */
	assert_rc(dmm_hw_dev_create(hw, &bad, &x), -DMM_EINVAL);
	bad.nr_ranges = DMM_MAX_DMA_RANGES + 1;
	assert_rc(dmm_hw_dev_create(hw, &bad, &x), -DMM_EINVAL);
	assert_rc(dmm_hw_dev_write(d64, UINT64_MAX - 4, b, 8), -DMM_EINVAL);
	assert_rc(dmm_hw_dev_read(isa, 0, b, 0), 0);
	assert_rc(dmm_hw_dev_read(d32, 0, NULL, 8), -DMM_EINVAL);
	assert_string_equal(dmm_hw_dev_name(isa), "isa");
	dmm_hw_dev_destroy(isa);
	dmm_hw_dev_destroy(d32);
	assert_hw_ok(hw);
	dmm_hw_destroy(hw);
}

/* ---- (f) bus offsets, dma-ranges, translation faults, an IOMMU hook --------- */

struct fake_iommu {
	dmm_phys_t page[4]; /* bus page i (from 0x10000000) -> this phys page, 0 = unmapped */
	unsigned calls;
};

static int fake_translate(void *ctx, struct dmm_hw_dev *dev, dmm_dma_addr_t bus, int write,
			  dmm_phys_t *pa, uint64_t *run)
{
	struct fake_iommu *io = ctx;
	uint64_t i = (bus - 0x10000000u) >> DMM_PAGE_SHIFT;
	(void)dev;
	(void)write;
	io->calls++;
	if (bus < 0x10000000u || i >= 4 || !io->page[i])
		return -DMM_EFAULT;
	*pa = io->page[i] + (bus & (DMM_PAGE_SIZE - 1));
	*run = DMM_PAGE_SIZE - (bus & (DMM_PAGE_SIZE - 1));
	return 0;
}

struct obs_log {
	unsigned n;
	struct dmm_hw_access a[64];
};

static void observer(void *ctx, const struct dmm_hw_access *a)
{
	struct obs_log *lg = ctx;

	if (lg->n < 64)
		lg->a[lg->n] = *a;
	lg->n++;
}

static void test_dma_ranges_and_faults(void **state)
{
	struct dmm_hw *hw = hw_new();
	struct dmm_hw_dev_desc d;
	struct dmm_hw_dev *dev, *mmu;
	struct dmm_hw_dev_stats ds;
	struct dmm_hw_dev_event ev[4];
	static struct obs_log lg;
	struct fake_iommu io;
	unsigned char b[64];
	(void)state;

	/* a Raspberry-Pi-like bus: low RAM at bus 0xc0000000, high RAM at
	 * bus 0x1_0000_0000 + 16 MiB; plus a range pointing at a hole */
	memset(&d, 0, sizeof(d));
	d.name = "ranged";
	d.addr_bits = 40;
	d.nr_ranges = 3;
	d.ranges[0] = (struct dmm_dma_range){ 1 * MiB, 0xc0000000u, 8 * MiB };
	d.ranges[1] = (struct dmm_dma_range){ HI_RAM, 0x100000000ull + 16 * MiB, 16 * MiB };
	d.ranges[2] = (struct dmm_dma_range){ 2 * GiB, 0x20000000u, 1 * MiB }; /* no RAM */
	assert_ok(dmm_hw_dev_create(hw, &d, &dev));
	memset(&lg, 0, sizeof(lg));
	dmm_hw_set_observer(hw, observer, &lg);

	ram_pat(hw, 1 * MiB + 0x1000, 64, 1);
	dev_pat(dev, 0xc0000000u + 0x1000, 64, 2);
	assert_true(ram_is(hw, 1 * MiB + 0x1000, 64, 2));
	assert_int_equal(lg.n, 1);
	assert_int_equal(lg.a[0].agent, DMM_HW_AGENT_DEV);
	assert_ptr_equal(lg.a[0].dev, dev);
	assert_int_equal(lg.a[0].bus, 0xc0000000u + 0x1000);
	assert_int_equal(lg.a[0].pa, 1 * MiB + 0x1000);
	assert_int_equal(lg.a[0].write, 1);
	assert_int_equal(lg.a[0].fault, 0);
	dev_pat(dev, 0x100000000ull + 16 * MiB + 0x10, 64, 3);
	assert_true(ram_is(hw, HI_RAM + 0x10, 64, 3));
	assert_true(dev_is(dev, 0x100000000ull + 16 * MiB + 0x10, 64, 3));

	/* bus addresses no range covers: fault, memory untouched */
	ram_pat(hw, 0x1000, 64, 1);
	memset(b, 0x77, sizeof(b));
	assert_rc(dmm_hw_dev_write(dev, 0x1000, b, 64), -DMM_EFAULT);      /* identity would hit RAM */
	assert_true(ram_is(hw, 0x1000, 64, 1));
	assert_rc(dmm_hw_dev_read(dev, 0x20000000u, b, 8), -DMM_EFAULT);  /* range onto a hole */
	/* an access running off the end of a range faults as a whole */
	ram_pat(hw, 9 * MiB - 16, 32, 1);
	assert_rc(dmm_hw_dev_write(dev, 0xc0000000u + 8 * MiB - 16, b, 32), -DMM_EFAULT);
	assert_true(ram_is(hw, 9 * MiB - 16, 32, 1));
	dmm_hw_dev_get_stats(dev, &ds);
	assert_int_equal(ds.faults, 3);
	assert_int_equal(ds.writes, 2);
	assert_int_equal(ds.reads, 1);
	assert_int_equal(dmm_hw_dev_events(dev, ev, 4, NULL), 3);
	assert_int_equal(ev[0].kind, DMM_HW_EV_FAULT);
	assert_int_equal(ev[0].bus, 0x1000);
	assert_int_equal(ev[2].bus, 0xc0000000u + 8 * MiB - 16);
	assert_int_equal(ev[2].bus_eff, 0xc0000000u + 8 * MiB); /* where it failed */
	assert_int_equal(lg.a[lg.n - 1].fault, 1);

	/* an IOMMU hook: bus pages scattered over physical pages */
	memset(&io, 0, sizeof(io));
	io.page[0] = 20 * MiB;
	io.page[1] = 12 * MiB;
	io.page[2] = HI_RAM + 4 * MiB;
	mmu = dev_new(hw, "behind-iommu", 32, 0);
	dmm_hw_dev_set_translate(mmu, fake_translate, &io);
	ram_pat(hw, 20 * MiB + 4096 - 32, 32, 1);
	ram_pat(hw, 12 * MiB, 32, 1);
	lg.n = 0;
	{
		unsigned char w[64], r[64];

		pat(w, 64, 9);
		assert_ok(dmm_hw_dev_write(mmu, 0x10000000u + 4096 - 32, w, 64)); /* spans 2 pages */
		assert_ok(dmm_hw_ram_read(hw, 20 * MiB + 4096 - 32, r, 32));
		assert_memory_equal(r, w, 32);
		assert_ok(dmm_hw_ram_read(hw, 12 * MiB, r, 32));
		assert_memory_equal(r, w + 32, 32);
		assert_int_equal(lg.n, 2); /* one observer call per physical piece */
		assert_int_equal(lg.a[1].pa, 12 * MiB);
		assert_int_equal(lg.a[1].bus, 0x10000000u + 4096);
		/* page 3 is unmapped: the access faults before touching page 2 */
		ram_pat(hw, HI_RAM + 4 * MiB + 4096 - 8, 8, 1);
		assert_rc(dmm_hw_dev_write(mmu, 0x10000000u + 3 * 4096 - 8, w, 16), -DMM_EFAULT);
		assert_true(ram_is(hw, HI_RAM + 4 * MiB + 4096 - 8, 8, 1));
	}
	dmm_hw_dev_set_translate(mmu, NULL, NULL); /* back to identity */
	assert_ok(dmm_hw_dev_read(mmu, 12 * MiB, b, 8));
	dmm_hw_set_observer(hw, NULL, NULL);
	assert_hw_ok(hw);
	dmm_hw_destroy(hw);
}

/* ---- (g) uncached pages and cacheable aliases -------------------------------- */

static void test_uncached_and_alias(void **state)
{
	struct dmm_hw *hw = hw_new();
	struct dmm_hw_dev *dev = dev_new(hw, "nc", 32, 0);
	struct dmm_hw_stats st;
	const dmm_phys_t uc = BUF + 64 * KiB;
	(void)state;

	assert_ok(dmm_hw_set_memattr(hw, uc, 2 * DMM_PAGE_SIZE, DMM_MEMATTR_UC));
	assert_int_equal(dmm_hw_memattr(hw, uc + DMM_PAGE_SIZE), DMM_MEMATTR_UC);
	assert_int_equal(dmm_hw_memattr(hw, uc + 2 * DMM_PAGE_SIZE), DMM_MEMATTR_WB);
	/* CPU stores go straight to RAM: the device needs no maintenance */
	cpu_pat(hw, uc, 512, 1);
	assert_int_equal(dmm_hw_line_state(hw, uc), DMM_HW_LINE_ABSENT);
	assert_true(ram_is(hw, uc, 512, 1));
	assert_true(dev_is(dev, uc, 512, 1));
	dev_pat(dev, uc, 512, 2);
	assert_true(cpu_is(hw, uc, 512, 2));
	dmm_hw_get_stats(hw, &st);
	assert_int_equal(st.lines, 0);
	assert_int_equal(st.alias_hazards, 0);
	assert_int_equal(st.nc_pages, 2);
	assert_int_equal(st.uncached_accesses, 2);
	assert_int_equal(st.uncached_bytes, 1024);

	/* a speculative fill through a cacheable alias brings a line in */
	assert_int_equal(dmm_hw_prefetch(hw, uc + L, 1), 1);
	dmm_hw_get_stats(hw, &st);
	assert_int_equal(st.alias_prefetches, 1);
	assert_int_equal(st.last_alias_pa, uc + L);
	/* the uncached access ignores it, and it is flagged */
	dev_pat(dev, uc, 512, 3);
	assert_true(cpu_is(hw, uc, 512, 3));
	dmm_hw_get_stats(hw, &st);
	assert_int_equal(st.alias_hazards, 1);
	assert_int_equal(st.last_alias_pa, uc + L);
	assert_ok(dmm_hw_cache_maint(hw, DMM_CACHE_INVALIDATE, uc, 512));

	/* the danger: a dirty line left behind when a page becomes uncached
	 * is written back later over what the device put in RAM */
	assert_ok(dmm_hw_set_memattr(hw, uc, DMM_PAGE_SIZE, DMM_MEMATTR_WB));
	cpu_pat(hw, uc, L, 4);                                         /* cached, dirty */
	assert_ok(dmm_hw_set_memattr(hw, uc, DMM_PAGE_SIZE, DMM_MEMATTR_UC)); /* no flush */
	dmm_hw_get_stats(hw, &st);
	assert_int_equal(st.memattr_cached_lines, 1);
	dev_pat(dev, uc, L, 5);
	assert_true(cpu_is(hw, uc, L, 5));  /* fine for now ... */
	dmm_hw_cache_flush_all(hw);         /* ... until the line leaves the cache */
	assert_true(cpu_is(hw, uc, L, 4));
	assert_false(ram_is(hw, uc, L, 5));

	/* WC behaves like UC for caching; WB restores caching */
	assert_ok(dmm_hw_set_memattr(hw, uc, DMM_PAGE_SIZE, DMM_MEMATTR_WC));
	cpu_pat(hw, uc, L, 6);
	assert_int_equal(dmm_hw_line_state(hw, uc), DMM_HW_LINE_ABSENT);
	assert_ok(dmm_hw_set_memattr(hw, uc, 2 * DMM_PAGE_SIZE, DMM_MEMATTR_WB));
	cpu_pat(hw, uc, L, 7);
	assert_int_equal(dmm_hw_line_state(hw, uc), DMM_HW_LINE_DIRTY);
	dmm_hw_get_stats(hw, &st);
	assert_int_equal(st.nc_pages, 0);
	assert_int_equal(st.memattr_changes, 5);
	assert_int_equal(st.memattr_pages, 2 + 1 + 1 + 1 + 2);
	/* bad input changes nothing */
	assert_rc(dmm_hw_set_memattr(hw, uc, 8, (enum dmm_memattr)9), -DMM_EINVAL);
	assert_rc(dmm_hw_set_memattr(hw, 0, 8, DMM_MEMATTR_UC), -DMM_EINVAL);
	assert_rc(dmm_hw_set_memattr(hw, 40 * MiB - 4096, 8192, DMM_MEMATTR_UC), -DMM_EINVAL);
	dmm_hw_get_stats(hw, &st);
	assert_int_equal(st.nc_pages, 0);
	/* through the platform hook */
	{
		const struct dmm_platform *p = dmm_hw_platform(hw);

		assert_ok(p->set_memattr(p->ctx, uc, 1, DMM_MEMATTR_UC));
		assert_int_equal(dmm_hw_memattr(hw, uc), DMM_MEMATTR_UC);
		assert_ok(p->set_memattr(p->ctx, uc, 1, DMM_MEMATTR_WB));
	}
	assert_hw_ok(hw);
	dmm_hw_destroy(hw);
}

/* Random speculation with a cacheable alias of an uncached page. */
static void test_speculative_alias(void **state)
{
	struct dmm_hw_opts o;
	struct dmm_hw *hw;
	struct dmm_hw_stats st;
	const dmm_phys_t uc = BUF + 64 * KiB;
	unsigned char x[L];
	unsigned i;
	(void)state;

	dmm_hw_opts_default(&o);
	o.prefetch = 1;
	o.prefetch_seed = 7;
	o.prefetch_distance = 4;
	/* without the alias option speculation never enters an UC page */
	hw = hw_new_opts(&o);
	assert_ok(dmm_hw_set_memattr(hw, uc, DMM_PAGE_SIZE, DMM_MEMATTR_UC));
	for (i = 0; i < 500; i++)
		assert_ok(dmm_hw_cpu_read(hw, uc - L, x, L));
	dmm_hw_get_stats(hw, &st);
	assert_true(st.prefetches > 0);
	assert_int_equal(st.alias_prefetches, 0);
	dmm_hw_destroy(hw);
	/* with it, lines of the uncached page appear, and are flagged */
	o.prefetch_alias = 1;
	hw = hw_new_opts(&o);
	assert_ok(dmm_hw_set_memattr(hw, uc, DMM_PAGE_SIZE, DMM_MEMATTR_UC));
	for (i = 0; i < 500 && dmm_hw_line_state(hw, uc) == DMM_HW_LINE_ABSENT; i++)
		assert_ok(dmm_hw_cpu_read(hw, uc - L, x, L));
	assert_int_equal(dmm_hw_line_state(hw, uc), DMM_HW_LINE_CLEAN);
	dmm_hw_get_stats(hw, &st);
	assert_true(st.alias_prefetches > 0);
	assert_ok(dmm_hw_cpu_read(hw, uc, x, L));
	dmm_hw_get_stats(hw, &st);
	assert_true(st.alias_hazards >= 1);
	assert_hw_ok(hw);
	dmm_hw_destroy(hw);
}

/* ---- (h) phys_fill / phys_copy hooks are coherent with the cache --------------- */

static void test_hooks_through_cache(void **state)
{
	struct dmm_hw_opts quiet;
	struct dmm_hw *hw;
	const struct dmm_platform *p;
	struct dmm_hw_stats st;
	static struct obs_log lg;
	unsigned char got[L], want[L];
	(void)state;

	dmm_hw_opts_default(&quiet);
	quiet.log_level = -1; /* the calls outside RAM below are on purpose */
	hw = hw_new_opts(&quiet);
	p = dmm_hw_platform(hw);
	/* dirty bytes in the first half of a line, fill the second half */
	ram_pat(hw, BUF, L, 1);
	cpu_pat(hw, BUF, L / 2, 2);
	p->phys_fill(p->ctx, BUF + L / 2, 0, L / 2);
	pat(want, L / 2, 2);
	memset(want + L / 2, 0, L / 2);
	assert_ok(dmm_hw_cpu_read(hw, BUF, got, L));
	assert_memory_equal(got, want, L);
	assert_int_equal(dmm_hw_line_state(hw, BUF), DMM_HW_LINE_DIRTY);
	assert_ok(dmm_hw_cache_maint(hw, DMM_CACHE_CLEAN, BUF, L));
	assert_ok(dmm_hw_ram_read(hw, BUF, got, L));
	assert_memory_equal(got, want, L);

	/* a stale clean line is overwritten, not left to shadow the zeros */
	ram_pat(hw, BUF + 4096, L, 3);
	assert_true(cpu_is(hw, BUF + 4096, L, 3));
	p->phys_fill(p->ctx, BUF + 4096, 0, 4096);
	memset(want, 0, L);
	assert_ok(dmm_hw_cpu_read(hw, BUF + 4096, got, L));
	assert_memory_equal(got, want, L);

	/* copy from a page whose newest data sits in dirty lines */
	ram_pat(hw, BUF + 8192, 4096, 4);
	cpu_pat(hw, BUF + 8192, 4096, 5);
	memset(&lg, 0, sizeof(lg));
	dmm_hw_set_observer(hw, observer, &lg);
	p->phys_copy(p->ctx, BUF + 12288, BUF + 8192, 4096);
	dmm_hw_set_observer(hw, NULL, NULL);
	assert_true(cpu_is(hw, BUF + 12288, 4096, 5));
	assert_int_equal(lg.n, 2);
	assert_int_equal(lg.a[0].agent, DMM_HW_AGENT_HOOK);
	assert_int_equal(lg.a[0].write, 0);
	assert_int_equal(lg.a[0].pa, BUF + 8192);
	assert_int_equal(lg.a[1].write, 1);
	assert_int_equal(lg.a[1].pa, BUF + 12288);
	/* write-back: RAM at the destination is not written yet */
	assert_int_equal(dmm_hw_line_state(hw, BUF + 12288), DMM_HW_LINE_DIRTY);
	assert_false(ram_is(hw, BUF + 12288, 4096, 5));
	/* uncached destination: straight to RAM */
	assert_ok(dmm_hw_set_memattr(hw, BUF + 16384, 4096, DMM_MEMATTR_UC));
	p->phys_copy(p->ctx, BUF + 16384, BUF + 8192, 4096);
	assert_true(ram_is(hw, BUF + 16384, 4096, 5));
	/* outside RAM: ignored and counted */
	p->phys_fill(p->ctx, 0, 0, 64);
	p->phys_copy(p->ctx, BUF, 0x9f000, 64);
	/* cache_maint hook = dmm_hw_cache_maint */
	p->cache_maint(p->ctx, DMM_CACHE_FLUSH, BUF, 16384);
	assert_true(ram_is(hw, BUF + 12288, 4096, 5));
	dmm_hw_get_stats(hw, &st);
	assert_int_equal(st.hook_fills, 2);
	assert_int_equal(st.hook_copies, 2);
	assert_int_equal(st.hook_errors, 2);
	assert_int_equal(st.hook_bytes, L / 2 + 4096 + 4096 + 4096);
	assert_hw_ok(hw);
	dmm_hw_destroy(hw);

	/* write-through hooks: RAM is current at once, dirty bytes still kept */
	{
		struct dmm_hw_opts o;

		dmm_hw_opts_default(&o);
		o.hooks_write_through = 1;
		hw = hw_new_opts(&o);
		p = dmm_hw_platform(hw);
		ram_pat(hw, BUF, L, 1);
		cpu_pat(hw, BUF, L / 2, 2);
		p->phys_fill(p->ctx, BUF + L / 2, 0, L / 2 + 4096);
		pat(want, L / 2, 2);
		memset(want + L / 2, 0, L / 2);
		assert_ok(dmm_hw_cpu_read(hw, BUF, got, L));
		assert_memory_equal(got, want, L);
		assert_int_equal(dmm_hw_line_state(hw, BUF), DMM_HW_LINE_DIRTY);
		assert_int_equal(dmm_hw_line_state(hw, BUF + L), DMM_HW_LINE_ABSENT);
		assert_ok(dmm_hw_ram_read(hw, BUF + L / 2, got, L / 2));
		assert_memory_equal(got, want + L / 2, L / 2);
		cpu_pat(hw, BUF + 8192, 4096, 5);
		p->phys_copy(p->ctx, BUF + 12288, BUF + 8192, 4096);
		assert_true(ram_is(hw, BUF + 12288, 4096, 5));
		assert_hw_ok(hw);
		dmm_hw_destroy(hw);
	}
}

/* The library's own zeroing and migration run through the hooks. */
struct hw_owner {
	struct dmm_movable_owner owner;
	dmm_pfn_t slot[256];
};

static int ho_isolate(void *ctx, struct dmm_mem *mem, dmm_pfn_t pfn)
{
	(void)ctx;
	(void)mem;
	(void)pfn;
	return 0;
}

static int ho_migrate(void *ctx, struct dmm_mem *mem, dmm_pfn_t old_pfn, dmm_pfn_t new_pfn)
{
	struct hw_owner *o = ctx;
	(void)mem;
	for (unsigned i = 0; i < 256; i++)
		if (o->slot[i] == old_pfn) {
			o->slot[i] = new_pfn;
			return 0;
		}
	return -DMM_ENOENT;
}

static void ho_putback(void *ctx, struct dmm_mem *mem, dmm_pfn_t pfn)
{
	(void)ctx;
	(void)mem;
	(void)pfn;
}

static const struct dmm_movable_ops ho_ops = { ho_isolate, ho_migrate, ho_putback };

static void test_library_on_the_model(void **state)
{
	struct dmm_machine m;
	struct dmm_hw *hw;
	struct dmm_mem *mem;
	struct dmm_hw_stats st;
	static struct hw_owner o;
	struct dmm_constraint c;
	struct dmm_migrate_report rep;
	unsigned k;
	dmm_pfn_t pfn, again;
	dmm_phys_t pa, lo;
	unsigned char z[4096];
	(void)state;

	tu_machine(&m, "test-hw-mem");
	tu_add_ram(&m, 0, 64 * MiB);
	m.dma32_limit = 0;
	assert_ok(dmm_hw_mem_create(&m, NULL, &hw, &mem));
	assert_ptr_equal(dmm_mem_platform(mem)->ctx, hw);

	/* GFP_ZERO on a page whose old contents sit dirty in the cache */
	c = DMM_CONSTRAINT_ANY;
	assert_ok(dmm_alloc_range(mem, &c, 1, 0, &pfn));
	pa = dmm_pfn_to_phys(pfn);
	cpu_pat(hw, pa, 4096, 1);
	assert_ok(dmm_free_range(mem, pfn, 1));
	c.lo = pa;
	c.hi = pa + DMM_PAGE_SIZE;
	assert_ok(dmm_alloc_range(mem, &c, 1, DMM_GFP_ZERO, &again));
	assert_int_equal(again, pfn);
	memset(z, 0xff, sizeof(z));
	assert_ok(dmm_hw_cpu_read(hw, pa, z, sizeof(z)));
	for (size_t i = 0; i < sizeof(z); i++)
		assert_int_equal(z[i], 0);
	assert_ok(dmm_free_range(mem, again, 1));

	/* migration copies the CPU's newest data, dirty lines included */
	memset(&o, 0, sizeof(o));
	o.owner.ops = &ho_ops;
	o.owner.ctx = &o;
	for (unsigned i = 0; i < 256; i++)
		assert_ok(dmm_page_alloc_movable(mem, &o.owner, 0, &o.slot[i]));
	k = 256; /* a page whose 2 MiB block holds no metadata */
	for (unsigned i = 0; i < 256 && k == 256; i++) {
		dmm_pfn_t b = o.slot[i] & ~(dmm_pfn_t)511;
		int clean = 1;

		for (dmm_pfn_t q = b; q < b + 512; q++) {
			struct dmm_page *pg = dmm_pfn_to_page(mem, q);

			if (!pg || pg->state == DMM_PAGE_RESERVED)
				clean = 0;
		}
		if (clean)
			k = i;
	}
	assert_true(k < 256);
	pa = dmm_pfn_to_phys(o.slot[k]);
	ram_pat(hw, pa, 4096, 2);
	cpu_pat(hw, pa, 4096, 3); /* RAM still holds pattern 2 */
	lo = pa & ~(2 * MiB - 1);
	memset(&rep, 0, sizeof(rep));
	assert_ok(dmm_migrate_range(mem, lo, lo + 2 * MiB, &rep));
	assert_true(rep.moved >= 1);
	assert_true(dmm_pfn_to_phys(o.slot[k]) != pa);
	assert_true(cpu_is(hw, dmm_pfn_to_phys(o.slot[k]), 4096, 3));
	dmm_hw_get_stats(hw, &st);
	assert_true(st.hook_copies >= 1);
	assert_true(st.hook_fills >= 1);
	assert_int_equal(st.hook_errors, 0);
	for (unsigned i = 0; i < 256; i++)
		assert_ok(dmm_page_free(mem, o.slot[i], 0));
	assert_checks(mem);
	assert_hw_ok(hw);
	dmm_hw_mem_destroy(hw, mem);
}

/* ---- the sparse attribute map against a reference ----------------------------- */

static void test_memattr_map(void **state)
{
	struct dmm_hw *hw = hw_new();
	static uint8_t ref[2048]; /* pages of [BUF, BUF + 8 MiB) */
	uint64_t seed = 12345, nc = 0;
	struct dmm_hw_stats st;
	(void)state;

	memset(ref, 0, sizeof(ref));
	for (unsigned step = 0; step < 3000; step++) {
		unsigned first = (unsigned)tu_rand_below(&seed, 2048);
		unsigned n = 1 + (unsigned)tu_rand_below(&seed, 64);
		enum dmm_memattr a = (enum dmm_memattr)tu_rand_below(&seed, 3);

		if (first + n > 2048)
			n = 2048 - first;
		assert_ok(dmm_hw_set_memattr(hw, BUF + (dmm_phys_t)first * DMM_PAGE_SIZE,
					     (size_t)n * DMM_PAGE_SIZE, a));
		memset(ref + first, (int)a, n);
		if (step % 100 == 0) {
			assert_hw_ok(hw);
			nc = 0;
			for (unsigned i = 0; i < 2048; i++) {
				assert_int_equal(dmm_hw_memattr(hw, BUF + (dmm_phys_t)i * DMM_PAGE_SIZE),
						 ref[i]);
				nc += ref[i] != DMM_MEMATTR_WB;
			}
			dmm_hw_get_stats(hw, &st);
			assert_int_equal(st.nc_pages, nc);
		}
	}
	assert_ok(dmm_hw_set_memattr(hw, BUF, 8 * MiB, DMM_MEMATTR_WB));
	dmm_hw_get_stats(hw, &st);
	assert_int_equal(st.nc_pages, 0);
	assert_hw_ok(hw);
	dmm_hw_destroy(hw);
}

/* ---- two CPUs, one cache --------------------------------------------------------- */

#define MT_LINES 1024u  /* 64 KiB, lines interleaved between the threads */
#define MT_STEPS 20000u

struct mt_arg {
	struct dmm_hw *hw;
	unsigned id;
	uint32_t seq[MT_LINES];  /* last value written to each owned line */
	int failed;
};

static void *mt_thread(void *p)
{
	struct mt_arg *a = p;
	uint64_t seed = 99 + a->id;

	for (unsigned s = 1; s <= MT_STEPS && !a->failed; s++) {
		unsigned k = (unsigned)tu_rand_below(&seed, MT_LINES / 2) * 2 + a->id;
		dmm_phys_t pa = BUF + (dmm_phys_t)k * L;
		uint32_t w[L / 4], r[L / 4];

		switch (tu_rand_below(&seed, 8)) {
		case 0:
		case 1:
		case 2:
			for (unsigned i = 0; i < L / 4; i++)
				w[i] = s ^ (k << 20) ^ i;
			if (dmm_hw_cpu_write(a->hw, pa, w, L))
				a->failed = 1;
			a->seq[k] = s;
			break;
		case 3:
		case 4:
		case 5:
			if (dmm_hw_cpu_read(a->hw, pa, r, L))
				a->failed = 1;
			for (unsigned i = 0; i < L / 4 && a->seq[k]; i++)
				if (r[i] != (a->seq[k] ^ (k << 20) ^ i))
					a->failed = 2;
			break;
		case 6: /* maintenance over both threads' lines never loses data */
			dmm_hw_cache_maint(a->hw, tu_rand_below(&seed, 2) ? DMM_CACHE_CLEAN : DMM_CACHE_FLUSH,
					   BUF + tu_rand_below(&seed, MT_LINES) * L, 4 * L);
			break;
		default:
			dmm_hw_prefetch(a->hw, BUF + tu_rand_below(&seed, MT_LINES) * L, 2 * L);
			break;
		}
	}
	return NULL;
}

static void test_two_threads(void **state)
{
	struct dmm_hw_opts o;
	struct dmm_hw *hw;
	static struct mt_arg a[2];
	pthread_t t[2];
	(void)state;

	dmm_hw_opts_default(&o);
	o.max_lines = 96; /* constant eviction */
	o.prefetch = 1;
	o.nr_cpus = 2;
	hw = hw_new_opts(&o);
	assert_ok(dmm_hw_cpu_fill(hw, BUF, 0, MT_LINES * L));
	for (unsigned i = 0; i < 2; i++) {
		memset(&a[i], 0, sizeof(a[i]));
		a[i].hw = hw;
		a[i].id = i;
		assert_int_equal(pthread_create(&t[i], NULL, mt_thread, &a[i]), 0);
	}
	for (unsigned i = 0; i < 2; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	assert_int_equal(a[0].failed, 0);
	assert_int_equal(a[1].failed, 0);
	assert_hw_ok(hw);
	/* after a full flush RAM holds every line's last write */
	dmm_hw_cache_flush_all(hw);
	for (unsigned k = 0; k < MT_LINES; k++) {
		const struct mt_arg *w = &a[k & 1];
		uint32_t r[L / 4];

		assert_ok(dmm_hw_ram_read(hw, BUF + (dmm_phys_t)k * L, r, L));
		for (unsigned i = 0; i < L / 4; i++)
			assert_int_equal(r[i], w->seq[k] ? (w->seq[k] ^ (k << 20) ^ i) : 0u);
	}
	assert_hw_ok(hw);
	dmm_hw_destroy(hw);
}

static void test_bad_create(void **state)
{
	struct dmm_machine m;
	struct dmm_hw_opts o;
	struct dmm_hw *hw;
	struct dmm_mem *mem;
	(void)state;

	tu_machine_holes(&m);
	assert_rc(dmm_hw_create(NULL, NULL, &hw), -DMM_EINVAL);
	assert_null(hw);
	assert_rc(dmm_hw_create(&m, NULL, NULL), -DMM_EINVAL);
	dmm_hw_opts_default(&o);
	o.nr_cpus = 5000;
	assert_rc(dmm_hw_create(&m, &o, &hw), -DMM_EINVAL);
	m.cache_line = 8192;
	m.dma_min_align = 8192;
	assert_rc(dmm_hw_create(&m, NULL, &hw), -DMM_EINVAL);
	m.nr_ram = 0;
	assert_rc(dmm_hw_mem_create(&m, NULL, &hw, &mem), -DMM_EINVAL);
	assert_null(hw);
	assert_null(mem);
	dmm_hw_destroy(NULL);
	dmm_hw_mem_destroy(NULL, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cache_basics),
		cmocka_unit_test(test_eviction),
		cmocka_unit_test(test_noncoherent_needs_clean),
		cmocka_unit_test(test_noncoherent_needs_invalidate),
		cmocka_unit_test(test_speculative_prefetch_makes_stale),
		cmocka_unit_test(test_invalidate_loses_neighbour),
		cmocka_unit_test(test_coherent_device),
		cmocka_unit_test(test_truncation),
		cmocka_unit_test(test_dma_ranges_and_faults),
		cmocka_unit_test(test_uncached_and_alias),
		cmocka_unit_test(test_speculative_alias),
		cmocka_unit_test(test_hooks_through_cache),
		cmocka_unit_test(test_library_on_the_model),
		cmocka_unit_test(test_memattr_map),
		cmocka_unit_test(test_two_threads),
		cmocka_unit_test(test_bad_create),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: MIT */
/*
 * bench_slab: the small-object allocator.
 *
 * 1. Speed: an alloc + free pair (allocate, free right away: the hot path)
 *    for fixed sizes 8, 64, 512 and a mixed stream (4096 pre-generated
 *    sizes, log-uniform in 8..512, cycled), and two streams of two classes
 *    (64 and 256 bytes alternating, and at random: what a changing class
 *    costs, against the fixed 64); then batches of the mixed stream
 *    (32, 256 and 1024 allocations, then as many frees in a shuffled order),
 *    where objects outlive a CPU's magazine and go back to their slabs and
 *    the working set leaves the L1 cache. Ours: dmm_kmalloc + dmm_kfree on
 *    a hosted 2 GiB machine, policy PACKED. Baselines in the same run,
 *    interleaved with ours: glibc malloc/free, mimalloc mi_malloc/mi_free and
 *    jemalloc malloc/free. mimalloc and jemalloc are loaded with
 *    dlopen(RTLD_LOCAL) (Debian's libraries export malloc/free themselves;
 *    linking them would replace the glibc baseline). libjemalloc.so.2 needs
 *    static TLS space that a dlopen'ed library rarely gets: if the first
 *    dlopen fails, the program re-executes itself once with
 *    GLIBC_TUNABLES=glibc.rtld.optional_static_tls=16384. Missing libraries
 *    are skipped. R repetitions (default 21) of ~2 ms batches in rotating
 *    order; median of ns per pair.
 *
 * 2. Memory: a phone-like population of small objects under each kmalloc
 *    policy on the phone profile (dma_min_align 128). The histogram is the
 *    active_objs of the plain kmalloc-<size> caches of
 *    profiles/data/linux-6.18-guest/slabinfo.txt (the -cg, -rcl and dma-
 *    variants left out); a class's objects get request sizes uniform in
 *    (previous class, class]. Allocated in a shuffled order; under
 *    PACKED_ON_REQUEST every other allocation (half) passes DMM_GFP_PACKED.
 *    Reported: bytes requested, sum of dmm_ksize, and bytes of the pages the
 *    slabs hold (dmm_slab_class_info).
 *
 * 3. Bouncing under PACKED on a network-like workload: phone profile, a
 *    non-coherent device with a 64-bit mask (so nothing bounces for reach),
 *    dmm_swiotlb_init with the defaults. Packets of 64 B (60 %), 576 B
 *    (15 %) and 1500 B (25 %), half received (FROM_DEVICE), half sent
 *    (TO_DEVICE): kmalloc, map_single, unmap, kfree. Reported: packets/s,
 *    bytes bounced per second, the fraction of mappings that bounced, and
 *    the fraction that bounced although the object covers whole
 *    dma_min_align units (aligned start, ksize >= size rounded up).
 *    On the hosted platform cache maintenance is a no-op, so the figures
 *    are the library's cost without a real cache's.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <unistd.h>

#include <dmamem/hosted.h>

#include "bench_util.h"
#include "profile.h"

#define NMIX 4096u

enum kind { K_OURS = 0, K_GLIBC, K_MIMALLOC, K_JEMALLOC, NR_KINDS };
static const char *const kind_name[NR_KINDS] = { "dmamem", "glibc", "mimalloc", "jemalloc" };

static struct dmm_mem *g_mem;
static void *(*volatile g_malloc)(size_t) = malloc;
static void (*volatile g_free)(void *) = free;
static void *(*g_mi_malloc)(size_t);
static void (*g_mi_free)(void *);
static void *(*g_je_malloc)(size_t);
static void (*g_je_free)(void *);
static uint32_t g_mix[NMIX];
/* two classes: 64 and 256 bytes alternating, and chosen at random */
static uint32_t g_alt[NMIX], g_rand2[NMIX];
static const uint32_t *g_stream = g_mix; /* the sizes a size-0 case cycles */

/* ---- baselines ---------------------------------------------------------------- */

static void *sym(void *h, const char *a, const char *b)
{
	void *s = dlsym(h, a);
	return s ? s : (b ? dlsym(h, b) : NULL);
}

static void load_baselines(char **argv)
{
	(void)argv;
#ifdef DMM_MIMALLOC_LIB
	{
		void *h = dlopen(DMM_MIMALLOC_LIB, RTLD_NOW | RTLD_LOCAL);
		if (h) {
			void *a = sym(h, "mi_malloc", NULL), *f = sym(h, "mi_free", NULL);
			if (a && f) {
				memcpy(&g_mi_malloc, &a, sizeof(a));
				memcpy(&g_mi_free, &f, sizeof(f));
			}
		} else {
			fprintf(stderr, "bench_slab: mimalloc skipped: %s\n", dlerror());
		}
	}
#endif
#ifdef DMM_JEMALLOC_LIB
	{
		void *h = dlopen(DMM_JEMALLOC_LIB, RTLD_NOW | RTLD_LOCAL);
		if (!h) {
			const char *e = dlerror();
			if (e && strstr(e, "static TLS") && !getenv("DMM_BENCH_REEXEC")) {
				/* once: more static TLS space for dlopen'ed libraries */
				char buf[1024];
				const char *old = getenv("GLIBC_TUNABLES");
				snprintf(buf, sizeof(buf), "%s%sglibc.rtld.optional_static_tls=16384",
					 old ? old : "", old ? ":" : "");
				setenv("GLIBC_TUNABLES", buf, 1);
				setenv("DMM_BENCH_REEXEC", "1", 1);
				execv("/proc/self/exe", argv);
			}
			fprintf(stderr, "bench_slab: jemalloc skipped: %s\n", e ? e : "?");
			return;
		}
		/* Debian's build exports malloc/free; other builds use a je_ prefix */
		void *a = sym(h, "malloc", "je_malloc"), *f = sym(h, "free", "je_free");
		if (a && f) {
			memcpy(&g_je_malloc, &a, sizeof(a));
			memcpy(&g_je_free, &f, sizeof(f));
		}
	}
#endif
}

static int kind_available(int k)
{
	return (k != K_MIMALLOC || g_mi_malloc) && (k != K_JEMALLOC || g_je_malloc);
}

/* ---- 1. speed --------------------------------------------------------------------- */

/* One allocation of @s bytes (the program stops on failure). */
static inline void *alloc_one(int k, size_t s)
{
	void *p = NULL;

	switch (k) {
	case K_OURS:
		if (dmm_kmalloc(g_mem, s, 0, &p))
			bench_die("dmm_kmalloc(%zu) failed", s);
		break;
	case K_GLIBC:
		p = g_malloc(s);
		break;
	case K_MIMALLOC:
		p = g_mi_malloc(s);
		break;
	case K_JEMALLOC:
		p = g_je_malloc(s);
		break;
	default:
		break;
	}
	if (!p)
		bench_die("%s: malloc(%zu) failed", kind_name[k], s);
	return p;
}

static inline void free_one(int k, void *p)
{
	switch (k) {
	case K_OURS:
		if (dmm_kfree(g_mem, p))
			bench_die("dmm_kfree failed");
		break;
	case K_GLIBC:
		g_free(p);
		break;
	case K_MIMALLOC:
		g_mi_free(p);
		break;
	case K_JEMALLOC:
		g_je_free(p);
		break;
	default:
		break;
	}
}

/* Batches: @batch objects allocated, then freed in the order of g_order
 * (a shuffle of 0..batch-1). */
#define MAX_BATCH 1024u
static void *g_live[MAX_BATCH];
static uint32_t g_order[MAX_BATCH];

/* @n pairs (whole batches) of @size bytes, @size 0: the mixed stream;
 * @batch 1: each object freed right after its allocation. */
static void run_kind(int k, size_t size, unsigned batch, long n)
{
	size_t mi = 0;

	if (batch <= 1) {
		for (long i = 0; i < n; i++)
			free_one(k, alloc_one(k, size ? size : g_stream[(size_t)i & (NMIX - 1)]));
		return;
	}
	for (long i = 0; i < n; i += batch) {
		for (unsigned j = 0; j < batch; j++, mi++)
			g_live[j] = alloc_one(k, size ? size : g_stream[mi & (NMIX - 1)]);
		for (unsigned j = 0; j < batch; j++)
			free_one(k, g_live[g_order[j]]);
	}
}

struct kind_size {
	int k;
	size_t size;
	unsigned batch;
};

static void run_kind_cb(const void *arg, long n)
{
	const struct kind_size *a = arg;
	run_kind(a->k, a->size, a->batch, n);
}

/* Pairs per timed run (a multiple of @batch). */
static long calibrate(int k, size_t size, unsigned batch, double batch_ms)
{
	struct kind_size a = { k, size, batch };
	long n = bench_calibrate(run_kind_cb, &a, MAX_BATCH, 1l << 26, batch_ms, MAX_BATCH);

	return (n + batch - 1) / batch * batch;
}

static void bench_speed(struct bench_out *out, long reps, double batch_ms)
{
	/* size 0: a stream (0 the mixed one; 1, 2: two classes, see g_alt) */
	static const struct {
		size_t size;
		unsigned batch, stream;
	} cases[] = { { 8, 1, 0 },   { 64, 1, 0 },  { 512, 1, 0 },	     { 0, 1, 0 },
		      { 0, 1, 1 },   { 0, 1, 2 },   { 0, 32, 0 },	     { 0, 256, 0 },
		      { 0, MAX_BATCH, 0 } };
	static const uint32_t *const streams[] = { g_mix, g_alt, g_rand2 };
	static const char *const stream_tag[] = { "mixed", "alt64_256", "rand64_256" };
	static const char *const stream_what[] = { " (log-uniform 8..512)", " (64 and 256 bytes alternating)",
						   " (64 or 256 bytes at random)" };
	struct bench_rng rng = { 11 };
	double *v[NR_KINDS];
	char name[128];

	for (int k = 0; k < NR_KINDS; k++)
		if (!(v[k] = calloc((size_t)reps, sizeof(double))))
			bench_die("out of memory");
	for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
		size_t size = cases[ci].size;
		unsigned batch = cases[ci].batch;
		long n[NR_KINDS];
		double med[NR_KINDS];
		char tag[32];

		g_stream = streams[cases[ci].stream];
		if (batch > 1)
			snprintf(tag, sizeof(tag), "batch%u_mixed", batch);
		else if (size)
			snprintf(tag, sizeof(tag), "%zuB", size);
		else
			snprintf(tag, sizeof(tag), "%s", stream_tag[cases[ci].stream]);
		/* the free order: a shuffle (Fisher-Yates) */
		for (unsigned j = 0; j < batch; j++)
			g_order[j] = j;
		for (unsigned j = batch; j > 1; j--) {
			uint32_t x = (uint32_t)bench_rand_below(&rng, j), t = g_order[j - 1];
			g_order[j - 1] = g_order[x];
			g_order[x] = t;
		}
		for (int k = 0; k < NR_KINDS; k++)
			if (kind_available(k))
				n[k] = calibrate(k, size, batch, batch_ms);
		for (long r = 0; r < reps; r++)
			for (int j = 0; j < NR_KINDS; j++) {
				int k = (int)((j + r) % NR_KINDS);
				if (!kind_available(k))
					continue;
				uint64_t t0 = bench_now_ns();
				run_kind(k, size, batch, n[k]);
				v[k][r] = (double)(bench_now_ns() - t0) / (double)n[k];
			}
		for (int k = 0; k < NR_KINDS; k++)
			med[k] = kind_available(k) ? bench_median(v[k], (size_t)reps) : 0;
		if (batch > 1)
			snprintf(name, sizeof(name),
				 "1. batches of %u allocations (log-uniform 8..512), then %u frees in a shuffled order, ns per pair",
				 batch, batch);
		else
			snprintf(name, sizeof(name), "1. alloc+free pair, %s%s, ns per pair", tag,
				 size ? "" : stream_what[cases[ci].stream]);
		bench_section(out, name);
		for (int k = 1; k < NR_KINDS; k++) {
			if (!kind_available(k))
				continue;
			snprintf(name, sizeof(name), "%s_%s", tag, kind_name[k]);
			bench_report(out, name, med[k], "ns", NULL, 0);
		}
		for (int k = 1; k < NR_KINDS; k++) {
			if (!kind_available(k))
				continue;
			snprintf(name, sizeof(name), "%s_dmamem_vs_%s", tag, kind_name[k]);
			bench_report(out, name, med[K_OURS], "ns", kind_name[k], med[K_OURS] / med[k]);
		}
	}
	for (int k = 0; k < NR_KINDS; k++)
		free(v[k]);
	if (dmm_slab_check(g_mem))
		bench_die("slab check failed");
}

/* ---- 2. memory of a phone-like population ------------------------------------------- */

/* active_objs of the plain kmalloc-<size> caches, linux-6.18-guest/slabinfo.txt */
static const struct {
	uint32_t size, objs;
} hist[] = {
	{ 8, 2048 },   { 16, 3328 },  { 32, 2161 },  { 64, 1934 }, { 96, 3402 },
	{ 128, 2944 }, { 192, 2100 }, { 256, 752 },  { 512, 839 }, { 1024, 725 },
	{ 2048, 288 }, { 4096, 286 }, { 8192, 32 },
};
#define NHIST (sizeof(hist) / sizeof(hist[0]))

static struct dmm_mem *phone_mem(enum dmm_kmalloc_policy pol, struct dmm_hosted **h)
{
	struct dmm_machine m;
	struct dmm_mem *mem;
	char err[256];

	if (dmm_profile_load("phone", &m, err, sizeof(err)))
		bench_die("profile phone: %s", err);
	m.kmalloc_policy = pol;
	if (dmm_hosted_mem_create(&m, 2, h, &mem))
		bench_die("cannot create the phone machine");
	return mem;
}

static uint64_t slab_bytes(struct dmm_mem *mem)
{
	uint64_t b = 0;
	for (unsigned s = 0; s < DMM_KMALLOC_NR_SETS; s++)
		for (unsigned c = 0; c < DMM_KMALLOC_NR_CLASSES; c++) {
			struct dmm_slab_class_info ci;
			if (dmm_slab_class_info(mem, s, c, &ci))
				continue;
			b += ci.slabs * ((uint64_t)4096 << ci.slab_order);
		}
	return b;
}

static void bench_population(struct bench_out *out, long scale)
{
	static const char *const pol_name[3] = { "aligned", "packed_on_request", "packed" };
	struct bench_rng rng = { 7 };
	size_t total = 0, k = 0;
	uint32_t *sz;
	void **obj;
	uint64_t req = 0;
	double used[3] = { 0, 0, 0 }, pages[3] = { 0, 0, 0 };
	char name[160];

	for (size_t i = 0; i < NHIST; i++)
		total += (size_t)hist[i].objs * (size_t)scale;
	sz = calloc(total, sizeof(*sz));
	obj = calloc(total, sizeof(*obj));
	if (!sz || !obj)
		bench_die("out of memory");
	for (size_t i = 0; i < NHIST; i++) {
		uint32_t lo = i ? hist[i - 1].size : 0;
		for (size_t j = 0; j < (size_t)hist[i].objs * (size_t)scale; j++)
			sz[k++] = lo + 1 + (uint32_t)bench_rand_below(&rng, hist[i].size - lo);
	}
	for (size_t i = total - 1; i > 0; i--) {
		size_t j = (size_t)bench_rand_below(&rng, i + 1);
		uint32_t t = sz[i];
		sz[i] = sz[j];
		sz[j] = t;
	}
	for (size_t i = 0; i < total; i++)
		req += sz[i];

	for (int pol = 0; pol < 3; pol++) {
		struct dmm_hosted *h;
		struct dmm_mem *mem = phone_mem((enum dmm_kmalloc_policy)pol, &h);
		uint64_t base = slab_bytes(mem), u = 0;
		for (size_t i = 0; i < total; i++) {
			unsigned fl = (pol == DMM_KMALLOC_PACKED_ON_REQUEST && (i & 1)) ? DMM_GFP_PACKED : 0;
			if (dmm_kmalloc(mem, sz[i], fl, &obj[i]))
				bench_die("dmm_kmalloc(%u) failed", sz[i]);
			u += dmm_ksize(mem, obj[i]);
		}
		used[pol] = (double)u;
		pages[pol] = (double)(slab_bytes(mem) - base);
		if (dmm_slab_check(mem))
			bench_die("slab check failed");
		for (size_t i = 0; i < total; i++)
			if (dmm_kfree(mem, obj[i]))
				bench_die("dmm_kfree failed");
		if (dmm_slab_check(mem) || dmm_page_alloc_check(mem))
			bench_die("invariant check failed");
		dmm_hosted_mem_destroy(h, mem);
	}
	snprintf(name, sizeof(name), "2. phone-like population: %zu objects, %llu bytes requested (phone, dma_min_align 128)",
		 total, (unsigned long long)req);
	bench_section(out, name);
	bench_report(out, "requested_bytes", (double)req, "B", NULL, 0);
	for (int pol = 0; pol < 3; pol++) {
		snprintf(name, sizeof(name), "%s_ksize_bytes", pol_name[pol]);
		bench_report(out, name, used[pol], "B", "packed", used[pol] / used[2]);
	}
	for (int pol = 0; pol < 3; pol++) {
		snprintf(name, sizeof(name), "%s_slab_page_bytes", pol_name[pol]);
		bench_report(out, name, pages[pol], "B", "packed", pages[pol] / pages[2]);
	}
	free(sz);
	free(obj);
}

/* ---- 3. bouncing on a network-like workload ------------------------------------------- */

static void bench_network(struct bench_out *out, long reps, long packets)
{
	struct dmm_hosted *h;
	struct dmm_mem *mem = phone_mem(DMM_KMALLOC_PACKED, &h);
	struct dmm_device_desc d;
	struct dmm_device *dev;
	struct bench_rng rng = { 11 };
	uint32_t *psz = calloc((size_t)packets, sizeof(uint32_t));
	uint8_t *pdir = calloc((size_t)packets, 1);
	double *pps = calloc((size_t)reps, sizeof(double)), *bps = calloc((size_t)reps, sizeof(double));
	uint64_t maps = 0, bounced = 0, avoidable = 0;
	const uint64_t al = 128;

	if (!psz || !pdir || !pps || !bps)
		bench_die("out of memory");
	if (dmm_swiotlb_init(mem, NULL))
		bench_die("dmm_swiotlb_init failed");
	memset(&d, 0, sizeof(d));
	d.name = "nic";
	d.dma_mask = DMM_DMA_BIT_MASK(64);
	d.coherent = 0;
	d.cma_area = DMM_DEVICE_CMA_NONE;
	if (dmm_device_create(mem, &d, NULL, &dev))
		bench_die("cannot create the device");
	for (long i = 0; i < packets; i++) {
		uint64_t r = bench_rand_below(&rng, 100);
		psz[i] = r < 60 ? 64 : r < 75 ? 576 : 1500;
		pdir[i] = (uint8_t)bench_rand_below(&rng, 2);
	}
	for (long r = 0; r < reps; r++) {
		struct dmm_swiotlb_stats s0, s1;
		struct dmm_dma_stats d0, d1;
		dmm_swiotlb_get_stats(mem, &s0);
		dmm_device_get_stats(dev, &d0);
		uint64_t t0 = bench_now_ns();
		for (long i = 0; i < packets; i++) {
			void *p;
			enum dmm_dma_dir dir = pdir[i] ? DMM_DMA_FROM_DEVICE : DMM_DMA_TO_DEVICE;
			if (dmm_kmalloc(mem, psz[i], 0, &p))
				bench_die("dmm_kmalloc failed");
			dmm_dma_addr_t a = dmm_dma_map_single(dev, p, psz[i], dir);
			if (dmm_dma_mapping_error(dev, a))
				bench_die("map failed");
			dmm_dma_unmap_single(dev, a, psz[i], dir);
			if (r == 0 && dir == DMM_DMA_FROM_DEVICE && dmm_kmalloc_needs_bounce(mem, p, psz[i]) &&
			    !((uintptr_t)p & (al - 1)) && dmm_ksize(mem, p) >= ((psz[i] + al - 1) & ~(al - 1)))
				avoidable++;
			dmm_kfree(mem, p);
		}
		uint64_t dt = bench_now_ns() - t0;
		dmm_swiotlb_get_stats(mem, &s1);
		dmm_device_get_stats(dev, &d1);
		pps[r] = (double)packets / ((double)dt / 1e9);
		bps[r] = (double)(s1.bounced_to_device - s0.bounced_to_device + s1.bounced_from_device -
				  s0.bounced_from_device) /
			 ((double)dt / 1e9);
		maps += d1.maps - d0.maps;
		bounced += d1.bounced_maps - d0.bounced_maps;
	}
	bench_section(out, "3. network-like workload, policy packed, phone, non-coherent device, swiotlb defaults");
	bench_report(out, "packets_per_s", bench_median(pps, (size_t)reps), "pkt/s", NULL, 0);
	bench_report(out, "bytes_bounced_per_s", bench_median(bps, (size_t)reps), "B/s", NULL, 0);
	bench_report(out, "bounced_fraction", (double)bounced / (double)maps, "of maps", NULL, 0);
	bench_report(out, "bounced_but_whole_units_fraction", (double)avoidable / (double)packets,
		     "of maps", NULL, 0);
	if (dmm_swiotlb_check(mem) || dmm_slab_check(mem))
		bench_die("invariant check failed");
	if (dmm_device_destroy(dev))
		bench_die("device destroy");
	dmm_hosted_mem_destroy(h, mem);
	free(psz);
	free(pdir);
	free(pps);
	free(bps);
}

int main(int argc, char **argv)
{
	struct bench_out out;
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct bench_rng rng = { 3 };
	int quick = bench_opt_flag(argc, argv, "--quick");
	long reps = bench_opt_long(argc, argv, "--reps", quick ? 3 : 21);
	long scale = bench_opt_long(argc, argv, "--scale", 1);
	long packets = bench_opt_long(argc, argv, "--packets", quick ? 20000 : 500000);
	double batch_ms = quick ? 0.5 : 2.0;

	if (bench_opt_flag(argc, argv, "--help")) {
		printf("usage: bench_slab [--json] [--quick] [--reps N] [--scale N] [--packets N]\n");
		return 0;
	}
	if (reps < 1 || scale < 1 || packets < 1)
		bench_die("bad arguments");
	load_baselines(argv);
	bench_out_init(&out, "slab", argc, argv);
	for (unsigned i = 0; i < NMIX; i++)
		g_mix[i] = (uint32_t)bench_rand_log(&rng, 8, 512);
	for (unsigned i = 0; i < NMIX; i++) {
		g_alt[i] = i & 1 ? 256 : 64;
		g_rand2[i] = bench_rand_below(&rng, 2) ? 256 : 64;
	}
	bench_machine_flat(&m, "bench-slab", 2 * BENCH_GIB);
	m.kmalloc_policy = DMM_KMALLOC_PACKED;
	if (dmm_hosted_mem_create(&m, 2, &h, &g_mem))
		bench_die("cannot create the machine");
	bench_note(&out, "\nbench_slab: median of %ld runs; baselines: glibc%s%s\n", reps,
		   g_mi_malloc ? ", mimalloc" : " (mimalloc missing)",
		   g_je_malloc ? ", jemalloc" : " (jemalloc missing)");
	bench_speed(&out, reps, batch_ms);
	dmm_hosted_mem_destroy(h, g_mem);
	bench_population(&out, scale);
	bench_network(&out, quick ? 1 : (reps < 5 ? reps : 5), packets);
	return 0;
}

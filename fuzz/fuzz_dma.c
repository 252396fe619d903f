/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: random sequences of DMA-layer operations (small objects,
 * streaming maps through the bounce buffers, syncs, coherent buffers from
 * the page allocator and the atomic pools, small-block DMA pools) against a
 * model of what is live and of every byte the CPU and the devices see.
 *
 * The machine (created once): 48 MiB of RAM from 0 (DMA zone below 16 MiB,
 * DMA32 below 32 MiB) and 16 MiB at 64 MiB, which the narrow (26-bit)
 * devices cannot reach: their buffers there bounce, as a 32-bit device's
 * above 4 GiB would (the span is kept compact because the invariant walks
 * after every step cost time proportional to it); two CPU slots, packed
 * small objects (an unaligned object bounces on a non-coherent device).
 * The hosted platform's hooks, but without deferred work (bounce pools
 * never grow in the
 * background, atomic pools refill synchronously in the next non-atomic
 * coherent allocation: nothing runs behind the model's back) and with a
 * clock the input advances (idle transient bounce pools go back when it
 * says). Bounce buffers: a 16 KiB default pool with 2 KiB slots, keeping
 * the low 8 address bits, transient pools up to 1 MiB in all. Atomic pools
 * of 32 KiB growing to 128 KiB. Devices:
 *
 *   express     coherent, 26-bit mask (the express paths; high RAM bounces)
 *   nc64        non-coherent, 64-bit (unaligned objects bounce for
 *               FROM_DEVICE and BIDIRECTIONAL)
 *   untrusted   coherent, 64-bit, untrusted (partial pages bounce)
 *   restricted  coherent, 64-bit, a 32 KiB restricted pool (all bounce)
 *   offset      non-coherent, 26-bit, bus = phys + 16 MiB
 *
 * Operations: kmalloc (1 byte .. 8 KiB, and one in eight a large object of up
 * to 24 KiB from the page allocator; ZERO / PACKED / DMA / DMA32 / ATOMIC)
 * and kfree; page buffers (order 0..2, anywhere, in the DMA or DMA32 zone or
 * the high RAM); streaming maps of part of a live object or page buffer
 * through map_single, map_phys or map_page in every direction; scatterlists
 * of 1 to 6 pieces of live buffers (some continuing the piece before them, so
 * that they merge; pieces that bounce and pieces that do not in one list; one
 * list in eight with a piece of nothing), mapped, synced whole either way and
 * unmapped (some with their bounced pieces' lengths changed first, some
 * twice); deferred maps of part of a live buffer (half of them for the
 * restricted device, whose 32 KiB pool fills; one in eight of those 40 KiB,
 * which it never holds); device writes to what the device sees (for an
 * untrusted device's bounced mapping also into the rest of its slots); CPU
 * writes; partial syncs either way; unmaps (one in four naming another size
 * or direction); coherent buffers (atomic or not) and their frees; DMA pools
 * (create, alloc, free, destroy); clock steps and trims; and bad calls.
 *
 * The model: a shadow of every live buffer's bytes and of every bounce
 * buffer's bytes, predicted at map time: the buffer's bytes for TO_DEVICE and
 * BIDIRECTIONAL, and for the untrusted device zeros everywhere else in the
 * slots the mapping holds (around the mapping, and in it for FROM_DEVICE),
 * checked over the whole run of slots after every step (another device's
 * FROM_DEVICE bounce buffer holds what its slots held: not promised, so taken
 * as found). Whether a map must bounce is predicted (out of reach, restricted
 * pool, untrusted partial page, unaligned invalidating map on a non-coherent
 * device outside an aligned object) and checked: a bounced map's bus address
 * lies in a bounce pool within the device's mask and keeps the original's low
 * bits, a direct one is the physical address plus the offset. A scatterlist's
 * pieces are mappings of the model like single ones; its segments are
 * predicted (one per piece when a piece bounced, else pieces with contiguous
 * bus addresses merged), and a list that fails (bounce buffers full, a piece
 * of nothing) leaves nothing mapped. A deferred request is answered once, in
 * its device's order: at once unless it must wait (its device has requests
 * waiting, or the bounce buffers are full: queued; one that could never fit
 * is refused with -DMM_EINVAL, or answered so if it waited), else from a
 * later unmap, of any device, whose own checks take out what the answered
 * mapping counted (the model first does what that unmap did before it); the
 * mapping joins the model, and the queue's counters agree with it. The device
 * sees the buffer after a map for TO_DEVICE and BIDIRECTIONAL; what the
 * device wrote reaches the buffer at unmap and sync_for_cpu exactly when the
 * direction says so (FROM_DEVICE, BIDIRECTIONAL), and a sync_for_device
 * copies the CPU's bytes exactly then (TO_DEVICE, BIDIRECTIONAL); nothing
 * else changes anywhere. Every buffer is checked against its constraints
 * (masks, DMA32/DMA, alignment, boundary, size class, zeroing) and against
 * every other live buffer and bounce buffer (no overlap). Statistics: bounce
 * slots in use equal the slots of the live bounced mappings, and so do the
 * bytes each device is counted as holding (low_bounce_bytes); "bounce
 * buffer full" (fail_full, each device's fail_bounce_full) counts the maps
 * and lists that failed so, once each (a deferred request waiting is no
 * failure), and the bounce maps the bounced mappings handed out (a list
 * that fails counts none of its pieces);
 * map/unmap/bounced-byte counters and device counters move by exactly one
 * operation's worth; live objects per size class and blocks per DMA pool
 * equal the model's. Bad calls (unmap inside a bounced mapping, by another
 * device, twice (a bounced mapping or list: counted as a refused unmap,
 * not as an unmap), of 0 bytes; a sync either way past the end of its mapping or
 * before its start, or by another device; kfree inside an object, of a page,
 * twice; coherent free with a wrong size, CPU address, twice or of a page;
 * DMA pool free of a foreign, freed or misaddressed block; bad kmalloc flags
 * and sizes, maps of nothing, a scatterlist with a piece of nothing, bad pool
 * geometry) return their error and change nothing: the void ones copy no
 * byte, move no bounce counter and leave the mapping live (DMA debug, which
 * would report them, stays off: it would take every device off the express
 * paths). An unmap naming another size or direction than its map's still ends
 * the mapping, copying back at most the mapped bytes in the direction the
 * unmap names (so an unmap larger than its mapping copying past it fails).
 * After every operation: dmm_page_alloc_check, dmm_range_check,
 * dmm_slab_check, dmm_swiotlb_check, dmm_dma_atomic_pool_check and
 * dmm_dma_pool_check of every live pool, and every byte of the model. At the
 * end of each input everything is unmapped (answering every deferred request)
 * and freed, the clock passes the idle time, and no bounce slot, transient
 * pool, object or page may be left (free + slab pages back where they were,
 * apart from atomic pool growth).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dmamem/dmamem.h>
#include <dmamem/hosted.h>

#include "fuzz_target.h"

#define KiB ((uint64_t)1 << 10)
#define MiB ((uint64_t)1 << 20)
#define GiB ((uint64_t)1 << 30)

#define MAX_ITEMS 40
#define MAX_MAPS 40
#define MAX_POOLS 3
#define MAX_SGL 3 /* live scatterlists */
#define MAX_SG 6  /* pieces per list */
#define MAX_DEFER 6 /* deferred mapping requests not yet answered */
#define NDEV 5
#define SLOT 2048u
#define ALIGN_MASK 0xffu
#define IDLE_NS 1000000u
/* The high RAM and the narrow devices' mask: RAM at and above HIGH is out
 * of their reach. (A machine with RAM above 4 GiB and 32-bit devices would
 * say the same, but the invariant walks after every step cost time
 * proportional to the span.) */
#define HIGH (64 * MiB)
#define LOW_BITS 26

enum { D_EXPRESS, D_NC64, D_UNTRUSTED, D_RESTRICTED, D_OFFSET };
enum { K_FREE = 0, K_KOBJ, K_PAGES, K_COH, K_BLK };

struct fdev {
	const char *name;
	struct dmm_device *d;
	uint64_t mask;
	int64_t off;
	int coherent, untrusted, restricted;
};

struct item {
	int kind;
	uint8_t *cpu;
	dmm_phys_t pa;
	size_t size;   /* bytes modelled: ksize, whole block, coherent size, block size */
	size_t req;
	uint8_t *S;    /* what the CPU must read */
	int nmaps;
	unsigned set;  /* K_KOBJ: 0 any, 1 DMA32, 2 DMA */
	unsigned order; /* K_PAGES */
	int dev;       /* K_COH */
	int atomic;    /* K_COH: from an atomic pool (2^order pages) */
	dmm_dma_addr_t dma; /* K_COH, K_BLK */
	int pool;      /* K_BLK */
};

struct map {
	int used;
	int dev, item;
	size_t off, len;
	enum dmm_dma_dir dir;
	int bounced;
	dmm_dma_addr_t bus;
	dmm_phys_t tlb;   /* what the device accesses */
	uint32_t nslots;  /* bounced: slots of its record */
	/* bounced: what the device must read, predicted at map time: the
	 * mapping's bytes, or for an untrusted device its whole run of slots
	 * (the mapping at offset dlo, zeros around it); dn bytes */
	uint8_t *D;
	size_t dlo, dn;
	int sgl;          /* a piece of scatterlist sgl - 1, or 0 */
};

/* A mapped scatterlist: the list as dmm_dma_map_sg left it, and its pieces
 * (one mapping each in the model: the bounced ones hold their own slots). */
struct fsgl {
	int used;
	int dev;
	enum dmm_dma_dir dir;
	unsigned nents, segs;
	struct dmm_sg sg[MAX_SG];
	int map[MAX_SG];
};

/* A deferred mapping request (dmm_dma_map_phys_deferred) whose callback
 * has not run yet. */
struct fdefer {
	int used;
	uint64_t seq;     /* the order of the requests */
	int dev, item;    /* item -1: a request no pool the device may use could hold */
	size_t off, len;
	enum dmm_dma_dir dir;
};

/* What the library has done, before a deferred mapping's callback runs
 * inside an unmap, that the model must have done too (settle()): the
 * unmap of single mapping j, or of the pieces of list l it has reached. */
struct settle {
	int kind; /* 0 nothing, 1 single, 2 scatterlist */
	int done; /* single: settled (its slot may hold a new mapping now) */
	int j;
	size_t size;
	enum dmm_dma_dir dir;
	int l;
	unsigned next;    /* the list's first piece not settled yet */
	uint64_t unmaps0; /* the bounce unmaps counted before the call */
	uint64_t nb, slots, back; /* bounced mappings ended, their slots, bytes copied back */
};

/* What answered deferred requests added inside other calls, which those
 * calls' counter checks take out (stats(), dev_stats(), mem_info()). */
struct dcum {
	uint64_t used, maps, to_device, invalid;
	uint64_t dev_maps[NDEV], dev_bytes[NDEV], dev_bounced[NDEV], dev_low[NDEV], dev_invalid[NDEV];
};

struct fpool {
	struct dmm_dma_pool *p;
	int dev;
	size_t size, align, boundary, stride;
	uint64_t live;
};

struct counts {
	uint64_t inputs, ops, kmallocs, kfrees, pages, maps, bounced, map_fail, unmaps, unmaps_unlike, dev_writes,
		overruns, syncs, sg_maps, sg_pieces, sg_bounced, sg_merged, sg_fail, sg_unmaps, sg_syncs, coh_allocs,
		coh_atomic, coh_fail, coh_frees, pools, blocks, block_frees, bad_calls, trims, deferred,
		deferred_queued, deferred_behind, deferred_later, deferred_never, transient_released,
		transient_created;
};

static struct {
	int ready;
	struct dmm_machine m;
	struct dmm_hosted *hosted;
	struct dmm_platform P;
	struct dmm_mem *mem;
	struct fdev dev[NDEV];
	struct item it[MAX_ITEMS];
	struct map mp[MAX_MAPS];
	struct fsgl sl[MAX_SGL];
	struct fdefer dq[MAX_DEFER];
	uint64_t dq_seq;
	uint64_t dq_queued;          /* requests the library queued (answered or not) */
	uint64_t full[NDEV];         /* maps of each device that failed for want of bounce slots */
	struct dcum dc;
	struct settle st;
	struct fpool pl[MAX_POOLS];
	uint64_t used_slots;         /* slots of the live bounced mappings */
	uint64_t class_live[DMM_KMALLOC_NR_SETS][DMM_KMALLOC_NR_CLASSES];
	uint32_t class_size[DMM_KMALLOC_NR_CLASSES];
	uint64_t base;               /* free + slab pages of the idle machine */
	uint64_t atomic_bytes;       /* atomic pools' size when base was taken */
	uint32_t atomic_chunks;
	uint64_t step;
	uint64_t rng;
	struct counts cnt;
} F;

static uint64_t fuzz_now = 1000000000;

static uint64_t fuzz_clock(void *ctx)
{
	(void)ctx;
	return fuzz_now;
}

/* The library's last messages (an invariant walk says what failed), shown
 * with a violation; refused calls it logs (a pool destroyed with blocks
 * out) are expected and stay quiet. */
#define NR_LOG 8
static char log_ring[NR_LOG][256];
static unsigned log_n;

static void fuzz_log(void *ctx, int level, const char *fmt, va_list ap)
{
	(void)ctx;
	if (level > DMM_LOG_WARN)
		return;
	vsnprintf(log_ring[log_n++ % NR_LOG], sizeof(log_ring[0]), fmt, ap);
}

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...)
{
	va_list ap;
	for (unsigned i = log_n > NR_LOG ? log_n - NR_LOG : 0; i < log_n; i++)
		fprintf(stderr, "dmamem: %s\n", log_ring[i % NR_LOG]);
	fprintf(stderr, "fuzz_dma: step %llu: ", (unsigned long long)F.step);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

/* the operation log (DMM_FUZZ_TRACE) */
#define trace(...) dmm_fuzz_trace(F.step, __VA_ARGS__)

static const char *dir_name(enum dmm_dma_dir d)
{
	static const char *n[] = { "BIDI", "TO", "FROM", "NONE" };
	return (unsigned)d < 4 ? n[d] : "?";
}

/* ---- memory helpers ----------------------------------------------------------- */

static dmm_phys_t v2p(const void *p)
{
	dmm_phys_t pa;
	if (F.P.virt_to_phys(F.P.ctx, p, &pa))
		die("virt_to_phys(%p) failed", p);
	return pa;
}

/* The CPU pointer of physical @pa (RAM regions are linear). */
static uint8_t *p2v(dmm_phys_t pa)
{
	uint8_t *v = dmm_pfn_to_virt(F.mem, dmm_phys_to_pfn(pa));
	if (!v)
		die("no virtual address for %#llx", (unsigned long long)pa);
	return v + (pa & (DMM_PAGE_SIZE - 1));
}

static uint8_t rnd8(void)
{
	uint64_t x = F.rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	F.rng = x;
	return (uint8_t)((x * 0x2545f4914f6cdd1dull) >> 56);
}

/* Random bytes into @dst and @shadow alike. */
static void scribble(uint8_t *dst, uint8_t *shadow, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t b = rnd8();
		dst[i] = b;
		if (shadow)
			shadow[i] = b;
	}
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		die("out of host memory");
	return p;
}

/* ---- the machine ---------------------------------------------------------------- */

static uint64_t total_free(void)
{
	uint64_t n = 0;
	for (unsigned z = 0; z < dmm_mem_nr_zones(F.mem); z++) {
		struct dmm_zone_info zi;
		if (dmm_zone_get_info(F.mem, z, &zi))
			die("zone_get_info(%u) failed", z);
		n += zi.free + zi.pcp;
	}
	return n;
}

static void class_info(unsigned set, unsigned cls, struct dmm_slab_class_info *ci)
{
	int rc = dmm_slab_class_info(F.mem, set, cls, ci);
	if (rc)
		die("slab_class_info(%u, %u): %s", set, cls, dmm_errname(rc));
}

static uint64_t slab_pages(void)
{
	uint64_t n = 0;
	for (unsigned s = 0; s < DMM_KMALLOC_NR_SETS; s++)
		for (unsigned c = 0; c < DMM_KMALLOC_NR_CLASSES; c++) {
			struct dmm_slab_class_info ci;
			class_info(s, c, &ci);
			n += ci.slabs << ci.slab_order;
		}
	return n;
}

static void atomic_totals(uint64_t *bytes, uint32_t *chunks)
{
	*bytes = 0;
	*chunks = 0;
	for (unsigned k = 0; k < DMM_NR_ATOMIC_POOLS; k++) {
		struct dmm_atomic_pool_stats st;
		int rc = dmm_dma_atomic_pool_get_stats(F.mem, (enum dmm_atomic_pool_kind)k, &st);
		if (rc)
			die("atomic_pool_get_stats: %s", dmm_errname(rc));
		if (st.present) {
			*bytes += st.size;
			*chunks += st.chunks;
		}
	}
}

static void make_dev(int i, const char *name, unsigned bits, int coherent, int untrusted, int64_t off)
{
	struct dmm_device_desc d;
	memset(&d, 0, sizeof(d));
	d.name = name;
	d.dma_mask = DMM_DMA_BIT_MASK(bits);
	d.coherent = coherent;
	d.untrusted = untrusted;
	d.bus_offset = off;
	d.cma_area = DMM_DEVICE_CMA_NONE;
	F.dev[i].name = name;
	F.dev[i].mask = d.dma_mask;
	F.dev[i].off = off;
	F.dev[i].coherent = coherent;
	F.dev[i].untrusted = untrusted;
	int rc = dmm_device_create(F.mem, &d, NULL, &F.dev[i].d);
	if (rc)
		die("device_create(%s): %s", name, dmm_errname(rc));
}

static void setup(void)
{
	struct dmm_machine *m = &F.m;
	int rc;

	dmm_machine_defaults(m);
	snprintf(m->name, sizeof(m->name), "fuzz-dma");
	m->ram[0] = (struct dmm_region){ 0, 48 * MiB };
	m->ram[1] = (struct dmm_region){ HIGH, 16 * MiB };
	m->nr_ram = 2;
	m->dma_limit = 16 * MiB;
	m->dma32_limit = 32 * MiB;
	m->kmalloc_policy = DMM_KMALLOC_PACKED;
	if (dmm_hosted_create(m, 2, DMM_LOG_ERR, &F.hosted))
		die("cannot create the hosted platform");
	F.P = *dmm_hosted_platform(F.hosted);
	/* nothing behind the model's back: no deferred work, the input's clock */
	F.P.defer = NULL;
	F.P.defer_after = NULL;
	F.P.defer_flush = NULL;
	F.P.now_ns = fuzz_clock;
	F.P.log = fuzz_log;
	if ((rc = dmm_mem_create(m, &F.P, &F.mem)))
		die("mem_create: %s", dmm_errname(rc));

	struct dmm_swiotlb_opts o;
	dmm_swiotlb_opts_default(F.mem, &o);
	o.initial_bytes = 16 * KiB;
	o.slot_size = SLOT;
	o.align_mask = ALIGN_MASK;
	o.max_bytes = 1 * MiB;
	o.grow_threshold_pct = 100;
	o.transient_idle_ns = IDLE_NS;
	if ((rc = dmm_swiotlb_init(F.mem, &o)))
		die("swiotlb_init: %s", dmm_errname(rc));

	struct dmm_atomic_pool_opts ao;
	memset(&ao, 0, sizeof(ao));
	for (unsigned k = 0; k < DMM_NR_ATOMIC_POOLS; k++) {
		ao.pool[k].initial = 32 * KiB;
		ao.pool[k].threshold = 16 * KiB;
		ao.pool[k].step = 32 * KiB;
		ao.pool[k].max = 128 * KiB;
	}
	if ((rc = dmm_dma_atomic_pool_init(F.mem, &ao)))
		die("atomic_pool_init: %s", dmm_errname(rc));

	make_dev(D_EXPRESS, "express", LOW_BITS, 1, 0, 0);
	make_dev(D_NC64, "nc64", 64, 0, 0, 0);
	make_dev(D_UNTRUSTED, "untrusted", 64, 1, 1, 0);
	make_dev(D_RESTRICTED, "restricted", 64, 1, 0, 0);
	make_dev(D_OFFSET, "offset", LOW_BITS, 0, 0, (int64_t)(16 * MiB));
	if ((rc = dmm_swiotlb_restricted_pool(F.dev[D_RESTRICTED].d, 32 * KiB)))
		die("restricted_pool: %s", dmm_errname(rc));
	F.dev[D_RESTRICTED].restricted = 1;

	for (unsigned c = 0; c < DMM_KMALLOC_NR_CLASSES; c++) {
		struct dmm_slab_class_info ci;
		class_info(0, c, &ci);
		F.class_size[c] = ci.size;
	}
	F.rng = 0x243f6a8885a308d3ull;
	F.ready = 1;
}

/* ---- the model ------------------------------------------------------------------- */

static int cls_of(size_t ksize)
{
	for (unsigned c = 0; c < DMM_KMALLOC_NR_CLASSES; c++)
		if (F.class_size[c] == ksize)
			return (int)c;
	return -1;
}

static int nr_items_live(void)
{
	int n = 0;
	for (int i = 0; i < MAX_ITEMS; i++)
		n += F.it[i].kind != K_FREE;
	return n;
}

static int free_item_slot(void)
{
	for (int i = 0; i < MAX_ITEMS; i++)
		if (F.it[i].kind == K_FREE)
			return i;
	return -1;
}

static int free_map_slot(void)
{
	for (int i = 0; i < MAX_MAPS; i++)
		if (!F.mp[i].used)
			return i;
	return -1;
}

static int nr_deferred(void);

/* Free mapping slots of the model, less those the deferred requests not
 * answered yet will take. */
static int map_room(void)
{
	int n = 0;
	for (int i = 0; i < MAX_MAPS; i++)
		n += !F.mp[i].used;
	return n - nr_deferred();
}

/* The @k-th live item (mod their number) satisfying @want (a bit per
 * kind), or -1. */
static int pick_item(uint64_t k, unsigned want)
{
	int c[MAX_ITEMS], n = 0;
	for (int i = 0; i < MAX_ITEMS; i++)
		if (F.it[i].kind != K_FREE && (want & (1u << F.it[i].kind)))
			c[n++] = i;
	return n ? c[k % (uint64_t)n] : -1;
}

#define PM_BOUNCED 1u /* bounced mappings only */
#define PM_SINGLE 2u  /* single mappings only (no scatterlist piece) */

static int pick_map(uint64_t k, unsigned flags)
{
	int c[MAX_MAPS], n = 0;
	for (int i = 0; i < MAX_MAPS; i++)
		if (F.mp[i].used && (!(flags & PM_BOUNCED) || F.mp[i].bounced) &&
		    (!(flags & PM_SINGLE) || !F.mp[i].sgl))
			c[n++] = i;
	return n ? c[k % (uint64_t)n] : -1;
}

static int overlaps(dmm_phys_t a, uint64_t an, dmm_phys_t b, uint64_t bn)
{
	return a < b + bn && b < a + an;
}

/* [pa, pa + n) is nobody's: no live item, no bounce buffer of a live map. */
static void check_unowned(dmm_phys_t pa, uint64_t n, const char *what, int bounce)
{
	for (int i = 0; i < MAX_ITEMS; i++)
		if (F.it[i].kind != K_FREE && overlaps(pa, n, F.it[i].pa, F.it[i].size))
			die("%s [%#llx,+%llu) overlaps live item %d (kind %d) [%#llx,+%zu)", what,
			    (unsigned long long)pa, (unsigned long long)n, i, F.it[i].kind,
			    (unsigned long long)F.it[i].pa, F.it[i].size);
	for (int i = 0; i < MAX_MAPS; i++)
		if (F.mp[i].used && F.mp[i].bounced &&
		    overlaps(pa, n, F.mp[i].tlb - (F.mp[i].tlb & ALIGN_MASK & (SLOT - 1)),
			     (uint64_t)F.mp[i].nslots * SLOT))
			die("%s [%#llx,+%llu) overlaps the bounce slots of mapping %d at %#llx", what,
			    (unsigned long long)pa, (unsigned long long)n, i, (unsigned long long)F.mp[i].tlb);
	if (!bounce && (dmm_swiotlb_is_bounce(F.mem, pa) || dmm_swiotlb_is_bounce(F.mem, pa + n - 1)))
		die("%s [%#llx,+%llu) lies in a bounce pool", what, (unsigned long long)pa, (unsigned long long)n);
}

static void verify_item(int i)
{
	const struct item *t = &F.it[i];
	if (memcmp(t->cpu, t->S, t->size)) {
		size_t k = 0;
		while (t->cpu[k] == t->S[k])
			k++;
		die("item %d (kind %d, %#llx + %zu): byte %zu is %#x, want %#x", i, t->kind,
		    (unsigned long long)t->pa, t->size, k, t->cpu[k], t->S[k]);
	}
}

/* What the device of bounced mapping @m must read at the mapping's start. */
static uint8_t *dev_bytes(const struct map *m)
{
	return m->D + m->dlo;
}

/* A bounced mapping's bytes as its device sees them (for an untrusted
 * device, its whole run of slots). */
static void verify_map(int j)
{
	const struct map *m = &F.mp[j];
	if (!m->bounced)
		return;
	const uint8_t *d = p2v(m->tlb - m->dlo);
	if (memcmp(d, m->D, m->dn)) {
		size_t k = 0;
		while (d[k] == m->D[k])
			k++;
		die("bounce buffer of mapping %d (%s, %#llx + %zu): byte %lld of the mapping is %#x, want %#x%s", j,
		    F.dev[m->dev].name, (unsigned long long)m->tlb, m->len, (long long)k - (long long)m->dlo, d[k],
		    m->D[k], k < m->dlo || k >= m->dlo + m->len ? " (in its slots, outside the mapping)" : "");
	}
}

/* The bounce statistics as the library counts them. */
static void swiotlb_raw(struct dmm_swiotlb_stats *st)
{
	dmm_swiotlb_get_stats(F.mem, st);
}

/* The same less what deferred mappings answered inside other calls added
 * (F.dc): what a call did itself shows as the difference of two. */
static void swiotlb_stats(struct dmm_swiotlb_stats *st)
{
	swiotlb_raw(st);
	st->used_slots -= F.dc.used;
	st->maps -= F.dc.maps;
	st->bounced_to_device -= F.dc.to_device;
}

static void dev_stats(struct dmm_device *dev, struct dmm_dma_stats *st)
{
	int dv = 0;
	while (dv < NDEV && F.dev[dv].d != dev)
		dv++;
	if (dv == NDEV)
		die("dev_stats: no such device");
	dmm_device_get_stats(dev, st);
	st->maps -= F.dc.dev_maps[dv];
	st->map_bytes -= F.dc.dev_bytes[dv];
	st->bounced_maps -= F.dc.dev_bounced[dv];
	st->low_bounce_bytes -= F.dc.dev_low[dv];
	st->fail_invalid -= F.dc.dev_invalid[dv];
}

static void mem_info(struct dmm_mem_info *mi)
{
	dmm_mem_get_info(F.mem, mi);
	mi->fail_invalid -= F.dc.invalid;
}

static int nr_deferred(void)
{
	int n = 0;
	for (int q = 0; q < MAX_DEFER; q++)
		n += F.dq[q].used;
	return n;
}

/* Has device @dv requests not answered yet? */
static int dev_waiting(int dv)
{
	for (int q = 0; q < MAX_DEFER; q++)
		if (F.dq[q].used && F.dq[q].dev == dv)
			return 1;
	return 0;
}

static void check_all(const char *after)
{
	int rc;
	if ((rc = dmm_page_alloc_check(F.mem)))
		die("after %s: page_alloc_check %s", after, dmm_errname(rc));
	if ((rc = dmm_range_check(F.mem)))
		die("after %s: range_check %s", after, dmm_errname(rc));
	if ((rc = dmm_slab_check(F.mem)))
		die("after %s: slab_check %s", after, dmm_errname(rc));
	if ((rc = dmm_swiotlb_check(F.mem)))
		die("after %s: swiotlb_check %s", after, dmm_errname(rc));
	if ((rc = dmm_dma_atomic_pool_check(F.mem)))
		die("after %s: atomic_pool_check %s", after, dmm_errname(rc));
	for (int p = 0; p < MAX_POOLS; p++) {
		if (!F.pl[p].p)
			continue;
		if ((rc = dmm_dma_pool_check(F.pl[p].p)))
			die("after %s: dma_pool_check(%d) %s", after, p, dmm_errname(rc));
		struct dmm_dma_pool_stats ps;
		if ((rc = dmm_dma_pool_get_stats(F.pl[p].p, &ps)))
			die("dma_pool_get_stats: %s", dmm_errname(rc));
		if (ps.in_use != F.pl[p].live)
			die("after %s: pool %d has %llu blocks in use, the model %llu", after, p,
			    (unsigned long long)ps.in_use, (unsigned long long)F.pl[p].live);
	}
	struct dmm_swiotlb_stats st;
	swiotlb_raw(&st);
	if (st.used_slots != F.used_slots)
		die("after %s: %llu bounce slots used, the live mappings hold %llu", after,
		    (unsigned long long)st.used_slots, (unsigned long long)F.used_slots);
	for (unsigned s = 0; s < DMM_KMALLOC_NR_SETS; s++)
		for (unsigned c = 0; c < DMM_KMALLOC_NR_CLASSES; c++) {
			struct dmm_slab_class_info ci;
			class_info(s, c, &ci);
			if (ci.objects != F.class_live[s][c])
				die("after %s: set %u class %u (%u bytes): %llu live objects, the model %llu", after, s,
				    c, ci.size, (unsigned long long)ci.objects, (unsigned long long)F.class_live[s][c]);
		}
	/* each device holds the slots of its live bounced mappings (all RAM
	 * is below 4 GiB) */
	for (int dv = 0; dv < NDEV; dv++) {
		uint64_t held = 0;
		struct dmm_dma_stats ds;
		for (int j = 0; j < MAX_MAPS; j++)
			if (F.mp[j].used && F.mp[j].bounced && F.mp[j].dev == dv)
				held += (uint64_t)F.mp[j].nslots * SLOT;
		dmm_device_get_stats(F.dev[dv].d, &ds);
		if (ds.low_bounce_bytes != held)
			die("after %s: %s holds %llu bytes of bounce slots, its live mappings %llu", after,
			    F.dev[dv].name, (unsigned long long)ds.low_bounce_bytes, (unsigned long long)held);
	}
	/* "bounce buffer full" counts the maps that failed so, once each: a
	 * deferred request that waits (tried, retried) is no failure */
	uint64_t full = 0;
	for (int dv = 0; dv < NDEV; dv++) {
		struct dmm_dma_stats ds;
		dmm_device_get_stats(F.dev[dv].d, &ds);
		if (ds.fail_bounce_full != F.full[dv] || dmm_swiotlb_device_failures(F.dev[dv].d) != F.full[dv])
			die("after %s: %s counts %llu maps failed for want of bounce slots, the model %llu", after,
			    F.dev[dv].name, (unsigned long long)ds.fail_bounce_full, (unsigned long long)F.full[dv]);
		full += F.full[dv];
	}
	if (st.fail_full != full)
		die("after %s: %llu maps failed for want of bounce slots, the model %llu", after,
		    (unsigned long long)st.fail_full, (unsigned long long)full);
	/* the bounce maps counted are the bounced mappings handed out */
	if (st.maps != F.cnt.bounced + F.cnt.sg_bounced)
		die("after %s: %llu bounce maps counted, %llu bounced mappings handed out", after,
		    (unsigned long long)st.maps, (unsigned long long)(F.cnt.bounced + F.cnt.sg_bounced));
	/* every queued request is answered or waiting */
	uint64_t waiting = 0;
	for (int q = 0; q < MAX_DEFER; q++)
		waiting += F.dq[q].used;
	if (st.deferred_queued != F.dq_queued || st.deferred_done + waiting != F.dq_queued)
		die("after %s: %llu deferred mappings queued, %llu answered from the queue; the model queued %llu, "
		    "%llu not answered",
		    after, (unsigned long long)st.deferred_queued, (unsigned long long)st.deferred_done,
		    (unsigned long long)F.dq_queued, (unsigned long long)waiting);
	for (int i = 0; i < MAX_ITEMS; i++)
		if (F.it[i].kind != K_FREE)
			verify_item(i);
	for (int j = 0; j < MAX_MAPS; j++)
		if (F.mp[j].used)
			verify_map(j);
}

/* ---- small objects and page buffers ------------------------------------------------ */

static void put_item(int slot, struct item *t)
{
	check_unowned(t->pa, t->size, "new buffer", 0);
	t->S = xmalloc(t->size);
	memcpy(t->S, t->cpu, t->size);
	scribble(t->cpu, t->S, t->size);
	F.it[slot] = *t;
}

static void op_kmalloc(struct rd *r)
{
	uint64_t b = u16(r), fb = u8(r);
	size_t size = b & 0x8000 ? (b & 0x1fff) + 1 : (b & 0xff) + 1;
	unsigned flags = 0;

	if ((fb & 0xe0) == 0xe0) /* one in eight: a large object (pages) */
		size = DMM_KMALLOC_MAX_CACHE + 1 + (b & 0x3fff);
	int slot = free_item_slot();
	void *p = NULL;

	if (slot < 0)
		return;
	if (fb & 1)
		flags |= DMM_GFP_ZERO;
	if (fb & 2)
		flags |= DMM_GFP_PACKED;
	if (fb & 4)
		flags |= DMM_GFP_ATOMIC;
	if ((fb & 0x18) == 0x08)
		flags |= DMM_GFP_DMA32;
	else if ((fb & 0x18) == 0x10)
		flags |= DMM_GFP_DMA;
	size_t want = dmm_kmalloc_size_of(F.mem, size, flags);
	int rc = dmm_kmalloc(F.mem, size, flags, &p);
	trace("kmalloc %zu flags %#x -> %s %p", size, flags, dmm_errname(rc), p);
	if (rc) {
		if (rc != -DMM_ENOMEM && rc != -DMM_EWMARK)
			die("kmalloc %zu flags %#x: %s", size, flags, dmm_errname(rc));
		return;
	}
	F.cnt.kmallocs++;
	size_t ks = dmm_ksize(F.mem, p);
	if (ks != want || ks < size)
		die("kmalloc %zu flags %#x: ksize %zu, size_of %zu", size, flags, ks, want);
	if ((uintptr_t)p & 7)
		die("kmalloc %zu: %p not 8-byte aligned", size, p);
	struct item t = { 0 };
	t.kind = K_KOBJ;
	t.cpu = p;
	t.pa = v2p(p);
	t.size = ks;
	t.req = size;
	t.set = flags & DMM_GFP_DMA ? 2 : flags & DMM_GFP_DMA32 ? 1 : 0;
	if (t.set == 2 && t.pa + ks > F.m.dma_limit)
		die("DMA object %#llx above the DMA limit", (unsigned long long)t.pa);
	if (t.set == 1 && t.pa + ks > F.m.dma32_limit)
		die("DMA32 object %#llx above the DMA32 limit", (unsigned long long)t.pa);
	if (dmm_phys_to_pfn(t.pa) != dmm_phys_to_pfn(t.pa + ks - 1) && ks <= DMM_PAGE_SIZE &&
	    (ks & (ks - 1)) == 0)
		die("object %#llx of %zu bytes crosses a page", (unsigned long long)t.pa, ks);
	if (flags & DMM_GFP_ZERO)
		for (size_t i = 0; i < ks; i++)
			if (((uint8_t *)p)[i])
				die("ZERO object %p: byte %zu is %#x", p, i, ((uint8_t *)p)[i]);
	int c = cls_of(ks);
	if (c < 0 && ks <= DMM_KMALLOC_MAX_CACHE)
		die("ksize %zu is no class", ks);
	if (ks > DMM_KMALLOC_MAX_CACHE && (ks & (ks - 1) || t.pa & (ks - 1)))
		die("large object %#llx of %zu bytes: not a naturally aligned block of pages",
		    (unsigned long long)t.pa, ks);
	if (c >= 0)
		F.class_live[t.set][c]++;
	put_item(slot, &t);
}

static void op_page_alloc(struct rd *r)
{
	uint64_t b = u8(r);
	unsigned order = (unsigned)(b % 3);
	struct dmm_constraint c = DMM_CONSTRAINT_ANY;
	int slot = free_item_slot();
	dmm_pfn_t pfn;

	if (slot < 0)
		return;
	switch ((b >> 2) & 3) {
	case 1:
		c.lo = HIGH;
		break;
	case 2:
		c.hi = F.m.dma32_limit;
		break;
	case 3:
		c.hi = 16 * MiB;
		break;
	default:
		break;
	}
	int rc = dmm_page_alloc(F.mem, order, &c, 0, &pfn);
	trace("page_alloc order %u [%#llx,%#llx) -> %s %#llx", order, (unsigned long long)c.lo,
	      (unsigned long long)c.hi, dmm_errname(rc), (unsigned long long)pfn);
	if (rc) {
		if (rc != -DMM_ENOMEM && rc != -DMM_EWMARK)
			die("page alloc: %s", dmm_errname(rc));
		return;
	}
	F.cnt.pages++;
	struct item t = { 0 };
	t.kind = K_PAGES;
	t.pa = dmm_pfn_to_phys(pfn);
	t.cpu = p2v(t.pa);
	t.size = DMM_PAGE_SIZE << order;
	t.order = order;
	if (!dmm_constraint_ok(&c, t.pa, t.size))
		die("page block %#llx outside its constraint", (unsigned long long)t.pa);
	put_item(slot, &t);
}

static void unmap_one(int j);
static void sg_unmap(int l, int again, unsigned relen);

/* Free live item @i (its mappings first). */
static void free_item(int i)
{
	struct item *t = &F.it[i];
	int rc = 0;

	for (int j = 0; j < MAX_MAPS; j++)
		if (F.mp[j].used && F.mp[j].item == i) {
			if (F.mp[j].sgl)
				sg_unmap(F.mp[j].sgl - 1, 0, 0); /* (the whole list) */
			else
				unmap_one(j);
		}
	verify_item(i);
	switch (t->kind) {
	case K_KOBJ: {
		int c = cls_of(t->size);
		rc = dmm_kfree(F.mem, t->cpu);
		trace("kfree %p -> %s", (void *)t->cpu, dmm_errname(rc));
		if (rc)
			die("kfree of live object %p: %s", (void *)t->cpu, dmm_errname(rc));
		if (c >= 0) /* (a large object has no class) */
			F.class_live[t->set][c]--;
		F.cnt.kfrees++;
		break;
	}
	case K_PAGES:
		rc = dmm_page_free(F.mem, dmm_phys_to_pfn(t->pa), t->order);
		trace("page_free %#llx %u -> %s", (unsigned long long)t->pa, t->order, dmm_errname(rc));
		if (rc)
			die("page free of a live block: %s", dmm_errname(rc));
		break;
	case K_COH: {
		struct dmm_dma_stats a, b;
		dev_stats(F.dev[t->dev].d, &a);
		rc = dmm_dma_free_coherent(F.dev[t->dev].d, t->req, t->cpu, t->dma);
		trace("free_coherent %s %zu %p %#llx -> %s", F.dev[t->dev].name, t->req, (void *)t->cpu,
		      (unsigned long long)t->dma, dmm_errname(rc));
		if (rc)
			die("coherent free of a live buffer: %s", dmm_errname(rc));
		dev_stats(F.dev[t->dev].d, &b);
		if (b.coherent_frees != a.coherent_frees + 1)
			die("coherent free not counted");
		F.cnt.coh_frees++;
		break;
	}
	case K_BLK:
		rc = dmm_dma_pool_free(F.pl[t->pool].p, t->cpu, t->dma);
		trace("pool_free %d %p %#llx -> %s", t->pool, (void *)t->cpu, (unsigned long long)t->dma,
		      dmm_errname(rc));
		if (rc)
			die("DMA pool free of a live block: %s", dmm_errname(rc));
		F.pl[t->pool].live--;
		F.cnt.block_frees++;
		break;
	default:
		die("free of item %d of kind %d", i, t->kind);
	}
	free(t->S);
	memset(t, 0, sizeof(*t));
}

/* Bad call bookkeeping: the error it must return. */
static void expect(int rc, int want, const char *what)
{
	F.cnt.bad_calls++;
	trace("bad: %s -> %s", what, dmm_errname(rc));
	if (rc != want)
		die("%s: %s, want %s", what, dmm_errname(rc), dmm_errname(want));
}

static void op_free(struct rd *r, unsigned want)
{
	uint64_t k = u8(r), how = u8(r);
	int i = pick_item(k, want);
	if (i < 0)
		return;
	for (int q = 0; q < MAX_DEFER; q++) /* (a deferred request will map it) */
		if (F.dq[q].used && F.dq[q].item == i)
			return;
	struct item t = F.it[i];
	free_item(i);
	/* a second free right away: refused, nothing changes */
	if (!(how & 3)) {
		uint64_t fr = total_free();
		switch (t.kind) {
		case K_KOBJ:
			/* (still in this CPU's magazine: recognised) */
			expect(dmm_kfree(F.mem, t.cpu), -DMM_ENOENT, "double kfree");
			break;
		case K_PAGES:
			expect(dmm_page_free(F.mem, dmm_phys_to_pfn(t.pa), t.order), -DMM_ENOENT, "double page free");
			break;
		case K_COH:
			expect(dmm_dma_free_coherent(F.dev[t.dev].d, t.req, t.cpu, t.dma), -DMM_ENOENT,
			       "double coherent free");
			break;
		case K_BLK:
			expect(dmm_dma_pool_free(F.pl[t.pool].p, t.cpu, t.dma), -DMM_ENOENT, "double DMA pool free");
			break;
		}
		if (total_free() != fr)
			die("a double free changed the free pages");
	}
}

/* ---- streaming mappings ------------------------------------------------------------- */

static int reach(const struct fdev *d, dmm_phys_t pa, size_t len)
{
	uint64_t b = pa + (uint64_t)d->off;
	return b + len - 1 <= d->mask;
}

/* Does a map of [pa, pa + len) of item @it for device @d bounce? */
static int must_bounce(const struct fdev *d, const struct item *t, dmm_phys_t pa, size_t len, enum dmm_dma_dir dir)
{
	unsigned al = F.m.dma_min_align;
	if (!reach(d, pa, len) || d->restricted)
		return 1;
	if (d->untrusted && ((pa | len) & (DMM_PAGE_SIZE - 1)))
		return 1;
	if (d->coherent || dir == DMM_DMA_TO_DEVICE || !((pa | len) & (al - 1)))
		return 0;
	/* inside one small object whose bounds are DMA-aligned */
	if (t->kind == K_KOBJ && t->size <= DMM_KMALLOC_MAX_CACHE && !((t->pa | t->size) & (al - 1)))
		return 0;
	return 1;
}

/* Mapping @j of [off, off + len) of item @i for device @dv, made with
 * bus address @bus (a bounce buffer if @bounce): its place checked (a
 * direct one at the buffer, a bounced one in a bounce pool, keeping the
 * low bits, in slots of nobody else's) and what its device sees
 * predicted. */
static struct map *add_map(int j, int dv, int i, size_t off, size_t len, enum dmm_dma_dir dir, int bounce,
			   dmm_dma_addr_t bus)
{
	struct fdev *d = &F.dev[dv];
	struct item *t = &F.it[i];
	dmm_phys_t pa = t->pa + off;
	if (bus + len - 1 > d->mask || bus + len - 1 < bus)
		die("map %s: bus %#llx + %zu beyond the mask", d->name, (unsigned long long)bus, len);
	dmm_phys_t tlb;
	int rc = dmm_dma_bus_to_phys(d->d, bus, &tlb);
	if (rc)
		die("bus_to_phys(%#llx): %s", (unsigned long long)bus, dmm_errname(rc));
	struct map m = { 0 };
	m.used = 1;
	m.dev = dv;
	m.item = i;
	m.off = off;
	m.len = len;
	m.dir = dir;
	m.bus = bus;
	m.tlb = tlb;
	m.bounced = bounce;
	if (!bounce) {
		if (tlb != pa || bus != pa + (uint64_t)d->off)
			die("direct map %s of %#llx: bus %#llx (phys %#llx)", d->name, (unsigned long long)pa,
			    (unsigned long long)bus, (unsigned long long)tlb);
	} else {
		uint32_t o = (uint32_t)(pa & ALIGN_MASK & (SLOT - 1));
		m.nslots = (uint32_t)((o + len + SLOT - 1) / SLOT);
		if (!dmm_swiotlb_is_bounce(F.mem, tlb) || !dmm_swiotlb_is_bounce(F.mem, tlb + len - 1))
			die("map %s of %#llx should bounce, got %#llx", d->name, (unsigned long long)pa,
			    (unsigned long long)tlb);
		if ((tlb & ALIGN_MASK) != (pa & ALIGN_MASK))
			die("bounce %#llx does not keep the low bits of %#llx", (unsigned long long)tlb,
			    (unsigned long long)pa);
		check_unowned(tlb - o, (uint64_t)m.nslots * SLOT, "bounce slots", 1);
		/* What the device sees: the buffer's bytes for TO_DEVICE and
		 * BIDIRECTIONAL. An untrusted device sees nothing else: zeros in
		 * the rest of its slots, and in the mapping for FROM_DEVICE
		 * (never what an earlier mapping left there). Another device's
		 * FROM_DEVICE bounce buffer holds whatever its slots held: not
		 * promised, taken as it is. */
		m.dlo = d->untrusted ? o : 0;
		m.dn = d->untrusted ? (size_t)m.nslots * SLOT : len;
		m.D = xmalloc(m.dn);
		memset(m.D, 0, m.dn);
		if (dir != DMM_DMA_FROM_DEVICE)
			memcpy(dev_bytes(&m), t->S + off, len);
		else if (!d->untrusted)
			memcpy(m.D, p2v(tlb), len);
		F.used_slots += m.nslots;
	}
	/* the device sees the buffer */
	if (dir != DMM_DMA_FROM_DEVICE && memcmp(p2v(tlb), t->S + off, len))
		die("map %s %s: the device does not see the buffer", d->name, dir_name(dir));
	F.mp[j] = m;
	t->nmaps++;
	return &F.mp[j];
}

static void op_map(struct rd *r)
{
	uint64_t k = u8(r), db = u8(r), ob = u16(r), lb = u16(r);
	int i = pick_item(k, 1u << K_KOBJ | 1u << K_PAGES);
	int j = free_map_slot();
	if (i < 0 || map_room() < 1)
		return;
	struct item *t = &F.it[i];
	int dv = (int)(db % NDEV);
	struct fdev *d = &F.dev[dv];
	enum dmm_dma_dir dir = (enum dmm_dma_dir)((db >> 3) & 3);
	unsigned api = (unsigned)((db >> 5) % 3);
	if (dir == DMM_DMA_NONE)
		dir = DMM_DMA_BIDIRECTIONAL;
	size_t off, len;
	if (lb & 0x8000) { /* the whole buffer */
		off = 0;
		len = t->kind == K_KOBJ ? t->req : t->size;
	} else {
		off = ob % t->size;
		len = 1 + lb % (t->size - off);
	}
	dmm_phys_t pa = t->pa + off;
	int bounce = must_bounce(d, t, pa, len, dir);
	struct dmm_swiotlb_stats s0, s1;
	struct dmm_dma_stats a, b;
	swiotlb_stats(&s0);
	dev_stats(d->d, &a);
	uint64_t dfail0 = dmm_swiotlb_device_failures(d->d);

	dmm_dma_addr_t bus;
	if (api == 0)
		bus = dmm_dma_map_single(d->d, t->cpu + off, len, dir);
	else if (api == 1)
		bus = dmm_dma_map_phys(d->d, pa, len, dir);
	else
		bus = dmm_dma_map_page(d->d, dmm_phys_to_pfn(pa), pa & (DMM_PAGE_SIZE - 1), len, dir);
	int err = dmm_dma_mapping_error(d->d, bus);
	trace("map%s %s item %d %#llx+%zu %s -> %#llx %s (bounce %d)", api == 0 ? "_single" : api == 1 ? "_phys" : "_page",
	      d->name, i, (unsigned long long)pa, len, dir_name(dir), (unsigned long long)bus, dmm_errname(err), bounce);
	swiotlb_stats(&s1);
	dev_stats(d->d, &b);
	if (err) {
		F.cnt.map_fail++;
		if (err != -DMM_ENOSPC || !bounce)
			die("map %s %#llx+%zu %s: %s (bounce %d)", d->name, (unsigned long long)pa, len, dir_name(dir),
			    dmm_errname(err), bounce);
		if (s1.used_slots != s0.used_slots || s1.maps != s0.maps || b.maps != a.maps)
			die("a failed map changed the counters");
		if (s1.fail_full != s0.fail_full + 1 || dmm_swiotlb_device_failures(d->d) != dfail0 + 1 ||
		    b.fail_bounce_full != a.fail_bounce_full + 1)
			die("bounce buffer full not counted");
		F.full[dv]++;
		return;
	}
	if (b.maps != a.maps + 1 || b.map_bytes != a.map_bytes + len)
		die("map not counted: maps %llu -> %llu", (unsigned long long)a.maps, (unsigned long long)b.maps);
	if (b.bounced_maps != a.bounced_maps + (uint64_t)bounce)
		die("bounced_maps %llu -> %llu, bounce %d", (unsigned long long)a.bounced_maps,
		    (unsigned long long)b.bounced_maps, bounce);
	struct map *m = add_map(j, dv, i, off, len, dir, bounce, bus);
	if (bounce) {
		if (s1.used_slots != s0.used_slots + m->nslots || s1.maps != s0.maps + 1)
			die("bounced map of %u slots: used slots %+lld, maps %+lld", m->nslots,
			    (long long)(s1.used_slots - s0.used_slots), (long long)(s1.maps - s0.maps));
		uint64_t in = dir != DMM_DMA_FROM_DEVICE ? len : 0;
		if (s1.bounced_to_device != s0.bounced_to_device + in)
			die("bounced_to_device %+lld, want +%llu",
			    (long long)(s1.bounced_to_device - s0.bounced_to_device), (unsigned long long)in);
		F.cnt.bounced++;
	} else if (s1.used_slots != s0.used_slots || s1.maps != s0.maps) {
		die("a direct map used bounce slots");
	}
	F.cnt.maps++;
}

/* The model's side of an unmap of mapping @j naming @size and @dir: its
 * own, or another size (not 0) or direction, which still ends the mapping
 * as its record says, copying back at most the mapped bytes in the
 * direction the unmap names. The bytes copied back; *@slots: the bounce
 * slots given back. */
static uint64_t end_map(int j, size_t size, enum dmm_dma_dir dir, uint64_t *slots)
{
	struct map *m = &F.mp[j];
	struct item *t = &F.it[m->item];
	uint64_t back = 0;

	*slots = 0;
	if (m->bounced) {
		if (dir == DMM_DMA_FROM_DEVICE || dir == DMM_DMA_BIDIRECTIONAL)
			back = size < m->len ? size : m->len;
		memcpy(t->S + m->off, dev_bytes(m), back);
		*slots = m->nslots;
		F.used_slots -= m->nslots;
		free(m->D);
	}
	t->nmaps--;
	memset(m, 0, sizeof(*m));
	return back;
}

/* The bounce counters after unmapping @nb bounced mappings of @slots slots
 * in all, @back bytes copied back. */
static void check_unmapped(const struct dmm_swiotlb_stats *s0, const struct dmm_swiotlb_stats *s1, uint64_t nb,
			   uint64_t slots, uint64_t back)
{
	if (s1->used_slots + slots != s0->used_slots || s1->unmaps != s0->unmaps + nb)
		die("unmap of %llu bounced mappings, %llu slots: used slots %+lld, unmaps %+lld",
		    (unsigned long long)nb, (unsigned long long)slots, (long long)(s1->used_slots - s0->used_slots),
		    (long long)(s1->unmaps - s0->unmaps));
	if (s1->bounced_from_device != s0->bounced_from_device + back)
		die("bounced_from_device %+lld, want +%llu",
		    (long long)(s1->bounced_from_device - s0->bounced_from_device), (unsigned long long)back);
}

/* Bring the model up to what the library has done in the unmap under way
 * (F.st): before a deferred mapping's callback runs inside it (the library
 * has copied back and freed what it unmapped so far: a single mapping, or
 * the pieces of a list up to the last bounced one it gave back, the count
 * of bounce unmaps says which), and (@all) after it. */
static void settle(int all)
{
	struct settle *x = &F.st;
	uint64_t n;

	if (x->kind == 1 && !x->done) {
		x->nb = (uint64_t)F.mp[x->j].bounced;
		x->back = end_map(x->j, x->size, x->dir, &x->slots);
		x->done = 1;
	} else if (x->kind == 2) {
		struct fsgl *L = &F.sl[x->l];
		struct dmm_swiotlb_stats st;
		swiotlb_raw(&st);
		uint64_t upto = st.unmaps - x->unmaps0;
		while (x->next < L->nents && (all || x->nb < upto)) {
			const struct map *m = &F.mp[L->map[x->next]];
			x->nb += (uint64_t)m->bounced;
			/* (the size the unmap names: the piece's length now) */
			x->back += end_map(L->map[x->next], L->sg[x->next].length, m->dir, &n);
			x->slots += n;
			x->next++;
		}
		if (x->nb != upto)
			die("unmap_sg of list %d: %llu bounce unmaps, the model %llu bounced pieces", x->l,
			    (unsigned long long)upto, (unsigned long long)x->nb);
	}
}

/* A deferred mapping's callback: the request answered in its device's
 * order, once; its mapping (made now, in whatever call serves the queue)
 * joins the model, and what it counted is set aside (F.dc) for that call's
 * checks. */
static void deferred_cb(void *arg, dmm_dma_addr_t dma, int err)
{
	struct fdefer *q = arg;
	if (q < F.dq || q >= F.dq + MAX_DEFER || !q->used)
		die("a deferred callback for no request (%p)", arg);
	struct fdev *d = &F.dev[q->dev];
	for (int o = 0; o < MAX_DEFER; o++)
		if (F.dq[o].used && F.dq[o].dev == q->dev && F.dq[o].seq < q->seq)
			die("deferred request %llu of %s answered before request %llu", (unsigned long long)q->seq,
			    d->name, (unsigned long long)F.dq[o].seq);
	trace("deferred callback: request %llu %s -> %#llx %s", (unsigned long long)q->seq, d->name,
	      (unsigned long long)dma, dmm_errname(err));
	settle(0);
	if (q->item < 0) {
		/* no pool it may use could ever hold it */
		if (err != -DMM_EINVAL || dma != DMM_DMA_MAPPING_ERROR)
			die("deferred request %llu that cannot fit: %#llx %s", (unsigned long long)q->seq,
			    (unsigned long long)dma, dmm_errname(err));
		F.dc.invalid++;
		F.dc.dev_invalid[q->dev]++;
		memset(q, 0, sizeof(*q));
		return;
	}
	if (err)
		die("deferred request %llu of %s: %s", (unsigned long long)q->seq, d->name, dmm_errname(err));
	const struct item *t = &F.it[q->item];
	int bounce = must_bounce(d, t, t->pa + q->off, q->len, q->dir);
	struct map *m = add_map(free_map_slot(), q->dev, q->item, q->off, q->len, q->dir, bounce, dma);
	F.dc.used += m->nslots;
	F.dc.maps += (uint64_t)bounce;
	F.dc.to_device += bounce && q->dir != DMM_DMA_FROM_DEVICE ? q->len : 0;
	F.dc.dev_maps[q->dev]++;
	F.dc.dev_bytes[q->dev] += q->len;
	F.dc.dev_bounced[q->dev] += (uint64_t)bounce;
	F.dc.dev_low[q->dev] += (uint64_t)m->nslots * SLOT;
	F.cnt.maps++;
	F.cnt.bounced += (uint64_t)bounce;
	memset(q, 0, sizeof(*q));
}

/* Unmap single mapping @j naming @size and @dir (end_map). */
static void unmap_as(int j, size_t size, enum dmm_dma_dir dir)
{
	struct map *m = &F.mp[j];
	struct fdev *d = &F.dev[m->dev];
	int i = m->item, nb = m->bounced;
	struct dmm_swiotlb_stats s0, s1;
	struct dmm_dma_stats a, b;
	uint64_t slots, back;

	if (m->sgl)
		die("unmap_as of scatterlist piece %d", j);
	verify_map(j);
	swiotlb_stats(&s0);
	dev_stats(d->d, &a);
	trace("unmap %s %#llx+%zu %s%s", d->name, (unsigned long long)m->bus, size, dir_name(dir),
	      size != m->len || dir != m->dir ? " (not as mapped)" : "");
	F.st = (struct settle){ .kind = 1, .j = j, .size = size, .dir = dir };
	dmm_dma_unmap_phys(d->d, m->bus, size, dir);
	settle(1);
	back = F.st.back;
	slots = F.st.slots;
	F.st.kind = 0;
	swiotlb_stats(&s1);
	dev_stats(d->d, &b);
	if (b.unmaps != a.unmaps + 1)
		die("unmap not counted");
	check_unmapped(&s0, &s1, (uint64_t)nb, slots, back);
	verify_item(i);
	F.cnt.unmaps++;
}

static void unmap_one(int j)
{
	unmap_as(j, F.mp[j].len, F.mp[j].dir);
}

/* The device of the live bounced mapping whose slots hold @tlb, or -1. */
static int slot_holder(dmm_phys_t tlb)
{
	for (int q = 0; q < MAX_MAPS; q++) {
		const struct map *x = &F.mp[q];
		if (x->used && x->bounced) {
			dmm_phys_t s = x->tlb - (x->tlb & ALIGN_MASK & (SLOT - 1));
			if (tlb >= s && tlb < s + (uint64_t)x->nslots * SLOT)
				return x->dev;
		}
	}
	return -1;
}

static void op_unmap(struct rd *r)
{
	uint64_t k = u8(r), how = u8(r);
	int j = pick_map(k, PM_SINGLE);
	if (j < 0)
		return;
	struct map m = F.mp[j];
	size_t size = m.len;
	enum dmm_dma_dir dir = m.dir;
	/* one in eight names another size (not 0), one in eight another
	 * direction than the map: the mapping ends all the same */
	if ((how & 0x1c) == 0x04) {
		const struct item *t = &F.it[m.item];
		/* (inside its slots or its buffer: RAM) */
		size_t room = m.bounced ? (size_t)m.nslots * SLOT - (size_t)(m.tlb & ALIGN_MASK & (SLOT - 1))
					: t->size - m.off;
		if (room > 1) {
			size = 1 + (how >> 5) * 131 % (room - 1);
			if (size >= m.len)
				size++;
			F.cnt.unmaps_unlike++;
		}
	} else if ((how & 0x1c) == 0x08) {
		dir = (enum dmm_dma_dir)((m.dir + 1 + (how >> 5) % 3) % 4);
		F.cnt.unmaps_unlike++;
	}
	unmap_as(j, size, dir);
	if (!(how & 3) && m.bounced) {
		/* a second unmap: refused, nothing changes */
		struct dmm_swiotlb_stats s0, s1;
		swiotlb_stats(&s0);
		/* unless the address is inside a live mapping of that device now */
		int holder = slot_holder(m.tlb);
		if (holder == m.dev)
			return;
		struct dmm_dma_stats a, b;
		dev_stats(F.dev[m.dev].d, &a);
		dmm_dma_unmap_phys(F.dev[m.dev].d, m.bus, m.len, m.dir);
		F.cnt.bad_calls++;
		trace("bad: second unmap %s %#llx", F.dev[m.dev].name, (unsigned long long)m.bus);
		swiotlb_stats(&s1);
		dev_stats(F.dev[m.dev].d, &b);
		if (s1.used_slots != s0.used_slots || s1.unmaps != s0.unmaps || s1.cached_slots != s0.cached_slots ||
		    s1.bounced_from_device != s0.bounced_from_device)
			die("a second unmap changed the bounce buffers");
		/* refused where no mapping is: counted as such, not as an unmap
		 * (inside another device's mapping now, it cannot be told from
		 * the device's own direct mapping of that memory: an unmap) */
		if (holder < 0 ? b.unmaps != a.unmaps || b.fail_unmap != a.fail_unmap + 1
			       : b.unmaps != a.unmaps + 1 || b.fail_unmap != a.fail_unmap)
			die("a second unmap (slot %s): unmaps %+lld, refused %+lld",
			    holder < 0 ? "free" : "another device's", (long long)(b.unmaps - a.unmaps),
			    (long long)(b.fail_unmap - a.fail_unmap));
	}
}

/* The device writes part of a mapping (for an untrusted device's bounced
 * mapping sometimes also the rest of its slots, which must never reach the
 * buffer). */
static void op_dev_write(struct rd *r)
{
	uint64_t k = u8(r), ob = u16(r), lb = u16(r);
	int j = pick_map(k, 0);
	if (j < 0)
		return;
	struct map *m = &F.mp[j];
	struct item *t = &F.it[m->item];
	size_t off = ob % m->len, len = 1 + lb % (m->len - off);
	uint8_t *dst = p2v(m->tlb) + off;
	trace("device write %s map %d +%zu %zu", F.dev[m->dev].name, j, off, len);
	scribble(dst, m->bounced ? dev_bytes(m) + off : t->S + m->off + off, len);
	F.cnt.dev_writes++;
	if (m->bounced && F.dev[m->dev].untrusted && (lb & 0x8000)) {
		/* the rest of the mapping's slots, before and after it (the
		 * model holds the whole run) */
		uint8_t *s = p2v(m->tlb - m->dlo);
		scribble(s, m->D, m->dlo);
		scribble(s + m->dlo + m->len, m->D + m->dlo + m->len, m->dn - m->dlo - m->len);
		F.cnt.overruns++;
	}
}

static void op_cpu_write(struct rd *r)
{
	uint64_t k = u8(r), ob = u16(r), lb = u16(r);
	int i = pick_item(k, ~0u);
	if (i < 0)
		return;
	struct item *t = &F.it[i];
	size_t off = ob % t->size, len = 1 + lb % (t->size - off);
	trace("cpu write item %d +%zu %zu", i, off, len);
	scribble(t->cpu + off, t->S + off, len);
	/* a direct mapping's device sees it (no shadow); a bounced one does not */
}

static void op_sync(struct rd *r)
{
	uint64_t k = u8(r), ob = u16(r), lb = u16(r);
	int j = pick_map(k, PM_SINGLE);
	if (j < 0)
		return;
	struct map *m = &F.mp[j];
	struct item *t = &F.it[m->item];
	struct fdev *d = &F.dev[m->dev];
	size_t off = ob % m->len, len = 1 + lb % (m->len - off);
	int for_cpu = (int)(lb >> 15);
	struct dmm_swiotlb_stats s0, s1;
	swiotlb_stats(&s0);
	verify_map(j);
	if (for_cpu)
		dmm_dma_sync_single_for_cpu(d->d, m->bus + off, len, m->dir);
	else
		dmm_dma_sync_single_for_device(d->d, m->bus + off, len, m->dir);
	trace("sync_for_%s %s map %d +%zu %zu %s", for_cpu ? "cpu" : "device", d->name, j, off, len,
	      dir_name(m->dir));
	F.cnt.syncs++;
	swiotlb_stats(&s1);
	if (s1.used_slots != s0.used_slots || s1.maps != s0.maps || s1.unmaps != s0.unmaps)
		die("a sync changed the mappings");
	if (!m->bounced)
		return;
	if (for_cpu && m->dir != DMM_DMA_TO_DEVICE)
		memcpy(t->S + m->off + off, dev_bytes(m) + off, len);
	if (!for_cpu && m->dir != DMM_DMA_FROM_DEVICE)
		memcpy(dev_bytes(m) + off, t->S + m->off + off, len);
}

/* ---- scatterlists ----------------------------------------------------------------- */

static int free_sgl_slot(void)
{
	for (int l = 0; l < MAX_SGL; l++)
		if (!F.sl[l].used)
			return l;
	return -1;
}

static int pick_sgl(uint64_t k)
{
	int c[MAX_SGL], n = 0;
	for (int l = 0; l < MAX_SGL; l++)
		if (F.sl[l].used)
			c[n++] = l;
	return n ? c[k % (uint64_t)n] : -1;
}

/*
 * Map a scatterlist of 1 .. MAX_SG pieces of live buffers (a piece
 * sometimes continuing the one before it in the same buffer, so that
 * pieces merge) for one device. Each piece bounces or not as a single
 * mapping would; a list with a bounced piece keeps one segment per piece,
 * one without merges pieces whose bus addresses are contiguous: the
 * segments are predicted exactly. One list in eight has a piece of
 * nothing (0 bytes, or a hole in RAM) somewhere: -DMM_EINVAL, after the
 * pieces before it that bounced are given back. A list whose bounce
 * buffers do not fit fails with -DMM_ENOSPC, nothing mapped either way.
 */
static void op_sg_map(struct rd *r)
{
	uint64_t db = u8(r), nb = u8(r);
	int l = free_sgl_slot();
	unsigned n = 1 + (unsigned)(nb % MAX_SG);
	if (l < 0 || map_room() < (int)n || pick_item(0, 1u << K_KOBJ | 1u << K_PAGES) < 0)
		return;
	int dv = (int)(db % NDEV);
	struct fdev *d = &F.dev[dv];
	enum dmm_dma_dir dir = (enum dmm_dma_dir)((db >> 3) & 3);
	if (dir == DMM_DMA_NONE)
		dir = DMM_DMA_BIDIRECTIONAL;
	int bad = (nb & 0xe0) == 0xe0 ? (int)((nb >> 3) % n) : -1;
	struct fsgl L = { 0 };
	int item[MAX_SG];
	size_t off[MAX_SG], len[MAX_SG];
	int bounce[MAX_SG], nbounce = 0, bounce_before_bad = 0;
	uint64_t total = 0;

	L.used = 1;
	L.dev = dv;
	L.dir = dir;
	L.nents = n;
	dmm_sg_init(L.sg, n);
	for (unsigned p = 0; p < n; p++) {
		uint64_t k = u8(r), ob = u16(r), lb = u16(r);
		if ((int)p == bad) {
			item[p] = -1;
			bounce[p] = 0;
			if (lb & 1)
				dmm_sg_set_phys(&L.sg[p], 48 * MiB + (ob << 4) % (15 * MiB), (uint32_t)(1 + lb % 4096));
			else
				dmm_sg_set_phys(&L.sg[p], F.it[pick_item(k, 1u << K_KOBJ | 1u << K_PAGES)].pa, 0);
			continue;
		}
		int i = -1;
		if ((lb & 0x4000) && p && item[p - 1] >= 0 && off[p - 1] + len[p - 1] < F.it[item[p - 1]].size) {
			/* the rest of the buffer the piece before lies in, from its end */
			i = item[p - 1];
			off[p] = off[p - 1] + len[p - 1];
			len[p] = 1 + lb % (F.it[i].size - off[p]);
		} else {
			i = pick_item(k, 1u << K_KOBJ | 1u << K_PAGES);
			const struct item *t = &F.it[i];
			if (lb & 0x8000) {
				off[p] = 0;
				len[p] = t->kind == K_KOBJ ? t->req : t->size;
			} else {
				off[p] = ob % t->size;
				len[p] = 1 + lb % (t->size - off[p]);
			}
		}
		item[p] = i;
		dmm_sg_set_phys(&L.sg[p], F.it[i].pa + off[p], (uint32_t)len[p]);
		bounce[p] = must_bounce(d, &F.it[i], F.it[i].pa + off[p], len[p], dir);
		nbounce += bounce[p];
		if (bad < 0 || (int)p < bad)
			bounce_before_bad += bounce[p];
		total += len[p];
	}

	struct dmm_swiotlb_stats s0, s1;
	struct dmm_dma_stats a, b;
	struct dmm_mem_info mi0, mi1;
	swiotlb_stats(&s0);
	dev_stats(d->d, &a);
	mem_info(&mi0);
	uint64_t dfail0 = dmm_swiotlb_device_failures(d->d);
	int waiting = nr_deferred();
	int rc = dmm_dma_map_sg(d->d, L.sg, n, dir);
	trace("map_sg %s %u pieces %s (bounce %d, bad piece %d) -> %d", d->name, n, dir_name(dir), nbounce, bad, rc);
	swiotlb_stats(&s1);
	dev_stats(d->d, &b);
	mem_info(&mi1);
	if (rc <= 0) {
		/* nothing stays mapped: the pieces that bounced are given back
		 * without a copy */
		if (s1.used_slots != s0.used_slots || b.sg_maps != a.sg_maps)
			die("a failed map_sg left something mapped: used slots %+lld",
			    (long long)(s1.used_slots - s0.used_slots));
		/* and counted no bounce: the caller never had those mappings */
		if (s1.maps != s0.maps || s1.unmaps != s0.unmaps || s1.bounced_to_device != s0.bounced_to_device ||
		    s1.bounced_from_device != s0.bounced_from_device || b.bounced_maps != a.bounced_maps)
			die("a failed map_sg counted bounces: maps %+lld, unmaps %+lld, bytes in %+lld, device's "
			    "bounced maps %+lld",
			    (long long)(s1.maps - s0.maps), (long long)(s1.unmaps - s0.unmaps),
			    (long long)(s1.bounced_to_device - s0.bounced_to_device),
			    (long long)(b.bounced_maps - a.bounced_maps));
		if (b.low_bounce_bytes != a.low_bounce_bytes)
			die("a failed map_sg kept %lld bytes of low memory",
			    (long long)(b.low_bounce_bytes - a.low_bounce_bytes));
		for (unsigned p = 0; p < n; p++)
			if (L.sg[p].dma_address != DMM_DMA_MAPPING_ERROR)
				die("a failed map_sg left piece %u at %#llx", p,
				    (unsigned long long)L.sg[p].dma_address);
		if (rc == -DMM_ENOSPC && bounce_before_bad) {
			/* once (the slots the failed list gave back let the
			 * deferred requests be tried again: those that still
			 * find no room wait, no failure) */
			uint64_t dfail1 = dmm_swiotlb_device_failures(d->d);
			uint64_t full = s1.fail_full - s0.fail_full, dfull = b.fail_bounce_full - a.fail_bounce_full;
			if (full != 1 || dfull != 1 || dfail1 != dfail0 + 1)
				die("map_sg: bounce buffer full counted %llu times (device %llu), %d requests waiting",
				    (unsigned long long)full, (unsigned long long)dfull, waiting);
			F.full[dv]++;
			F.cnt.sg_fail++;
			return;
		}
		if (rc == -DMM_EINVAL && bad >= 0) {
			if (b.fail_invalid != a.fail_invalid + 1 || mi1.fail_invalid != mi0.fail_invalid + 1)
				die("map_sg of a piece of nothing: fail_invalid %llu -> %llu",
				    (unsigned long long)a.fail_invalid, (unsigned long long)b.fail_invalid);
			expect(rc, -DMM_EINVAL, "map_sg with a piece of nothing");
			return;
		}
		die("map_sg %s of %u pieces (bounce %d, bad piece %d): %s", d->name, n, nbounce, bad, dmm_errname(rc));
	}
	if (bad >= 0)
		die("map_sg with a piece of nothing (%d) returned %d", bad, rc);

	/* the segments: one per piece when one bounced, else merged */
	struct dmm_sg want[MAX_SG];
	unsigned segs = 0;
	for (unsigned p = 0; p < n; p++) {
		dmm_dma_addr_t bus = F.it[item[p]].pa + off[p] + (uint64_t)d->off;
		if (!nbounce && segs && want[segs - 1].dma_address + want[segs - 1].dma_length == bus) {
			want[segs - 1].dma_length += (uint32_t)len[p];
			continue;
		}
		want[segs].dma_address = bounce[p] ? L.sg[p].dma_address : bus;
		want[segs].dma_length = (uint32_t)len[p];
		segs++;
	}
	if ((unsigned)rc != segs)
		die("map_sg %s of %u pieces (bounce %d): %d segments, want %u", d->name, n, nbounce, rc, segs);
	for (unsigned p = 0; p < n; p++) {
		dmm_dma_addr_t wa = p < segs ? want[p].dma_address : DMM_DMA_MAPPING_ERROR;
		uint32_t wl = p < segs ? want[p].dma_length : 0;
		if (L.sg[p].dma_address != wa || L.sg[p].dma_length != wl)
			die("map_sg %s: entry %u is %#llx + %u, want %#llx + %u", d->name, p,
			    (unsigned long long)L.sg[p].dma_address, L.sg[p].dma_length, (unsigned long long)wa, wl);
		if (L.sg[p].phys != F.it[item[p]].pa + off[p] || L.sg[p].length != len[p])
			die("map_sg changed the CPU side of entry %u", p);
	}
	uint64_t slots = 0, in = 0;
	for (unsigned p = 0; p < n; p++) {
		int j = free_map_slot();
		/* a bounced list: the bus address of each piece is its entry's */
		dmm_dma_addr_t bus = nbounce ? L.sg[p].dma_address : F.it[item[p]].pa + off[p] + (uint64_t)d->off;
		struct map *m = add_map(j, dv, item[p], off[p], len[p], dir, bounce[p], bus);
		m->sgl = l + 1;
		L.map[p] = j;
		slots += m->nslots;
		if (bounce[p] && dir != DMM_DMA_FROM_DEVICE)
			in += len[p];
	}
	if (s1.used_slots != s0.used_slots + slots || s1.maps != s0.maps + (uint64_t)nbounce ||
	    s1.bounced_to_device != s0.bounced_to_device + in)
		die("map_sg of %d bounced pieces, %llu slots: used slots %+lld, maps %+lld, bounced_to_device %+lld "
		    "(want +%llu)",
		    nbounce, (unsigned long long)slots, (long long)(s1.used_slots - s0.used_slots),
		    (long long)(s1.maps - s0.maps), (long long)(s1.bounced_to_device - s0.bounced_to_device),
		    (unsigned long long)in);
	if (b.sg_maps != a.sg_maps + 1 || b.sg_segments_in != a.sg_segments_in + n ||
	    b.sg_segments_out != a.sg_segments_out + segs || b.map_bytes != a.map_bytes + total ||
	    b.bounced_maps != a.bounced_maps + (uint64_t)nbounce || b.maps != a.maps)
		die("map_sg %s not counted as it should: sg_maps +%llu, segments +%llu/+%llu, bytes +%llu, bounced "
		    "+%llu, maps +%llu",
		    d->name, (unsigned long long)(b.sg_maps - a.sg_maps),
		    (unsigned long long)(b.sg_segments_in - a.sg_segments_in),
		    (unsigned long long)(b.sg_segments_out - a.sg_segments_out),
		    (unsigned long long)(b.map_bytes - a.map_bytes),
		    (unsigned long long)(b.bounced_maps - a.bounced_maps), (unsigned long long)(b.maps - a.maps));
	L.segs = segs;
	F.sl[l] = L;
	F.cnt.sg_maps++;
	F.cnt.sg_pieces += n;
	F.cnt.sg_bounced += (uint64_t)nbounce;
	F.cnt.sg_merged += n - segs;
}

/* Unmap list @l, as map_sg left it, with its direction: each bounced piece
 * copied back as the direction says, in the list's order. @relen (not 0):
 * the caller first changes each bounced piece's length (0 up to past its
 * mapping), naming another size for its unmap: the mapping still ends,
 * copying back at most its bytes. @again: then unmap the list once more,
 * as it was mapped: refused if a piece bounced (its bounce address is no
 * mapping any more), changing nothing. */
static void sg_unmap(int l, int again, unsigned relen)
{
	struct fsgl *L = &F.sl[l];
	struct fdev *d = &F.dev[L->dev];
	struct dmm_swiotlb_stats s0, s1;
	struct dmm_dma_stats a, b;
	int items[MAX_SG];
	struct fsgl was = *L;
	dmm_phys_t tlb[MAX_SG];
	int nb = 0;

	for (unsigned p = 0; p < L->nents; p++) {
		verify_map(L->map[p]);
		items[p] = F.mp[L->map[p]].item;
		tlb[p] = F.mp[L->map[p]].bounced ? F.mp[L->map[p]].tlb : 0;
		nb += F.mp[L->map[p]].bounced;
	}
	if (relen)
		for (unsigned p = 0; p < L->nents; p++)
			if (tlb[p]) {
				size_t len = F.mp[L->map[p]].len;
				L->sg[p].length = (uint32_t)((relen * 2654435761u + p * 977u) % (len + 64));
				trace("unmap_sg: piece %u's length %zu -> %u", p, len, L->sg[p].length);
			}
	swiotlb_stats(&s0);
	dev_stats(d->d, &a);
	trace("unmap_sg %s list %d (%u pieces, %u segments) %s", d->name, l, L->nents, L->segs, dir_name(L->dir));
	F.st = (struct settle){ .kind = 2, .l = l };
	{
		struct dmm_swiotlb_stats r0;
		swiotlb_raw(&r0);
		F.st.unmaps0 = r0.unmaps;
	}
	dmm_dma_unmap_sg(d->d, L->sg, L->nents, L->dir);
	settle(1);
	F.st.kind = 0;
	swiotlb_stats(&s1);
	dev_stats(d->d, &b);
	if (b.unmaps != a.unmaps + 1)
		die("unmap_sg not counted");
	check_unmapped(&s0, &s1, F.st.nb, F.st.slots, F.st.back);
	for (unsigned p = 0; p < L->nents; p++)
		verify_item(items[p]);
	memset(L, 0, sizeof(*L));
	F.cnt.sg_unmaps++;
	if (!again || !nb)
		return;
	/* (unless a piece's bounce slots hold a live mapping again: then it
	 * is no second unmap the library can tell) */
	for (unsigned p = 0; p < was.nents; p++)
		if (tlb[p] && slot_holder(tlb[p]) >= 0)
			return;
	swiotlb_stats(&s0);
	dev_stats(d->d, &a);
	dmm_dma_unmap_sg(d->d, was.sg, was.nents, was.dir);
	trace("bad: second unmap_sg %s (%u pieces, %d bounced)", d->name, was.nents, nb);
	F.cnt.bad_calls++;
	swiotlb_stats(&s1);
	dev_stats(d->d, &b);
	if (s1.used_slots != s0.used_slots || s1.unmaps != s0.unmaps || s1.cached_slots != s0.cached_slots ||
	    s1.bounced_from_device != s0.bounced_from_device)
		die("a second unmap_sg changed the bounce buffers");
	if (b.unmaps != a.unmaps || b.fail_unmap != a.fail_unmap + 1 || b.cache_inval_bytes != a.cache_inval_bytes)
		die("a second unmap_sg: unmaps %+lld, refused %+lld, invalidated %+lld bytes",
		    (long long)(b.unmaps - a.unmaps), (long long)(b.fail_unmap - a.fail_unmap),
		    (long long)(b.cache_inval_bytes - a.cache_inval_bytes));
}

/* Unmap a list, or sync all of it either way: each bounced piece copied in
 * the list's order, exactly as the direction says. */
static void op_sg(struct rd *r)
{
	uint64_t k = u8(r), how = u8(r);
	int l = pick_sgl(k);
	if (l < 0)
		return;
	struct fsgl *L = &F.sl[l];
	struct fdev *d = &F.dev[L->dev];
	if (!(how & 3)) {
		sg_unmap(l, (how & 0x0c) == 0x0c, (how & 0x70) == 0x70 ? (unsigned)k | 1u : 0);
		return;
	}
	int for_cpu = (int)(how >> 7);
	struct dmm_swiotlb_stats s0, s1;
	struct dmm_dma_stats a, b;
	uint64_t to = 0, from = 0;
	for (unsigned p = 0; p < L->nents; p++)
		verify_map(L->map[p]);
	swiotlb_stats(&s0);
	dev_stats(d->d, &a);
	if (for_cpu)
		dmm_dma_sync_sg_for_cpu(d->d, L->sg, L->nents, L->dir);
	else
		dmm_dma_sync_sg_for_device(d->d, L->sg, L->nents, L->dir);
	trace("sync_sg_for_%s %s list %d (%u pieces) %s", for_cpu ? "cpu" : "device", d->name, l, L->nents,
	      dir_name(L->dir));
	swiotlb_stats(&s1);
	dev_stats(d->d, &b);
	for (unsigned p = 0; p < L->nents; p++) {
		struct map *m = &F.mp[L->map[p]];
		struct item *t = &F.it[m->item];
		if (!m->bounced)
			continue;
		if (for_cpu && m->dir != DMM_DMA_TO_DEVICE) {
			memcpy(t->S + m->off, dev_bytes(m), m->len);
			from += m->len;
		}
		if (!for_cpu && m->dir != DMM_DMA_FROM_DEVICE) {
			memcpy(dev_bytes(m), t->S + m->off, m->len);
			to += m->len;
		}
	}
	if (s1.used_slots != s0.used_slots || s1.maps != s0.maps || s1.unmaps != s0.unmaps ||
	    s1.bounced_to_device != s0.bounced_to_device + to ||
	    s1.bounced_from_device != s0.bounced_from_device + from)
		die("sync_sg_for_%s: bounced %llu/%llu bytes to/from the device, want %llu/%llu",
		    for_cpu ? "cpu" : "device",
		    (unsigned long long)(s1.bounced_to_device - s0.bounced_to_device),
		    (unsigned long long)(s1.bounced_from_device - s0.bounced_from_device), (unsigned long long)to,
		    (unsigned long long)from);
	if (b.syncs != a.syncs + 1)
		die("sync_sg not counted");
	F.cnt.sg_syncs++;
}

/* ---- deferred mappings ------------------------------------------------------------- */

/*
 * A mapping that may wait for bounce slots: part of a live buffer, or (one
 * request of the restricted device in eight) 40 KiB that its pool could
 * never hold. A device with requests waiting queues the new one behind
 * them; else the map is tried now: the callback runs at once unless the
 * bounce buffers are full, when the request is queued (or refused with
 * -DMM_EINVAL, nothing queued, if it could never fit). Queued requests are
 * answered from later unmaps, in each device's order (deferred_cb).
 */
static void op_defer(struct rd *r)
{
	uint64_t k = u8(r), db = u8(r), ob = u16(r), lb = u16(r);
	/* half of them for the restricted device, whose 32 KiB pool fills */
	int dv = db & 4 ? D_RESTRICTED : (int)(db % NDEV), slot = -1;
	struct fdev *d = &F.dev[dv];
	enum dmm_dma_dir dir = (enum dmm_dma_dir)((db >> 3) & 3);
	if (dir == DMM_DMA_NONE)
		dir = DMM_DMA_BIDIRECTIONAL;
	for (int q = 0; q < MAX_DEFER && slot < 0; q++)
		if (!F.dq[q].used)
			slot = q;
	if (slot < 0 || map_room() < 1)
		return;
	struct fdefer *q = &F.dq[slot];
	int never = d->restricted && (db & 0xe0) == 0xe0;
	dmm_phys_t pa;
	q->dev = dv;
	q->dir = dir;
	if (never) {
		q->item = -1;
		pa = 1 * MiB;
		q->len = 40 * KiB; /* (RAM nobody maps: it never is) */
	} else {
		int i = pick_item(k, 1u << K_KOBJ | 1u << K_PAGES);
		if (i < 0)
			return;
		const struct item *t = &F.it[i];
		q->item = i;
		if (lb & (d->restricted ? 0xc000 : 0x8000)) { /* (most of the restricted device's: whole buffers) */
			q->off = 0;
			q->len = t->kind == K_KOBJ ? t->req : t->size;
		} else {
			q->off = ob % t->size;
			q->len = 1 + lb % (t->size - q->off);
		}
		pa = t->pa + q->off;
	}
	int waiting = dev_waiting(dv);
	q->used = 1;
	q->seq = ++F.dq_seq;
	/* (the callback may answer it, and clear *q, before the call returns) */
	const struct fdefer req = *q;
	struct dmm_swiotlb_stats r0, r1;
	struct dmm_dma_stats a, b;
	struct dmm_mem_info mi0, mi1;
	swiotlb_raw(&r0);
	dev_stats(d->d, &a);
	mem_info(&mi0);
	trace("map_phys_deferred %s %#llx+%zu %s: request %llu%s", d->name, (unsigned long long)pa, q->len,
	      dir_name(dir), (unsigned long long)q->seq, waiting ? " (behind others)" : "");
	int rc = dmm_dma_map_phys_deferred(d->d, pa, req.len, dir, deferred_cb, q);
	swiotlb_raw(&r1);
	dev_stats(d->d, &b);
	mem_info(&mi1);
	int queued = r1.deferred_queued != r0.deferred_queued;
	trace("map_phys_deferred -> %s, %s", dmm_errname(rc),
	      !q->used ? "answered" : queued ? "queued" : "refused");
	F.cnt.deferred++;
	if (r1.deferred_queued > r0.deferred_queued + 1)
		die("one deferred request queued %llu times",
		    (unsigned long long)(r1.deferred_queued - r0.deferred_queued));
	if (queued) {
		F.dq_queued++;
		F.cnt.deferred_queued++;
	}
	F.cnt.deferred_behind += (uint64_t)waiting;
	if (waiting && (!queued || rc))
		die("a deferred request of %s behind others was not queued: %s", d->name, dmm_errname(rc));
	if (never && !waiting && rc != -DMM_EINVAL)
		die("deferred request %llu that cannot fit: %s, not refused", (unsigned long long)req.seq,
		    dmm_errname(rc));
	if (rc == -DMM_EINVAL) {
		/* refused: it could never fit */
		if (!never || waiting || queued || !q->used)
			die("deferred request %llu refused (could %sfit)", (unsigned long long)req.seq,
			    never ? "never " : "");
		if (b.fail_invalid != a.fail_invalid + 1 || mi1.fail_invalid != mi0.fail_invalid + 1)
			die("a deferred request that cannot fit: fail_invalid not counted");
		memset(q, 0, sizeof(*q));
		F.cnt.deferred_never++;
		F.cnt.bad_calls++;
		return;
	}
	if (rc)
		die("map_phys_deferred %s: %s", d->name, dmm_errname(rc));
	if (!queued && q->used)
		die("deferred request %llu neither answered nor queued", (unsigned long long)req.seq);
	if (!waiting && !never && !must_bounce(d, &F.it[req.item], pa, req.len, dir) && (queued || q->used))
		die("deferred request %llu needs no bounce buffer and was queued", (unsigned long long)req.seq);
	if (queued && q->used)
		F.cnt.deferred_later++;
}

/* ---- coherent buffers -------------------------------------------------------------- */

static void op_coherent(struct rd *r)
{
	uint64_t db = u8(r), sb = u16(r);
	int slot = free_item_slot();
	if (slot < 0)
		return;
	int dv = (int)(db % NDEV);
	struct fdev *d = &F.dev[dv];
	unsigned gfp = db & 0x80 ? DMM_GFP_ATOMIC : 0;
	size_t size = sb & 0x8000 ? 1 + (sb & 0x7fff) : 1 + (sb & 0xfff);
	void *cpu = NULL;
	dmm_dma_addr_t dma = 0;
	uint64_t ab0, ab1;
	uint32_t ac0, ac1;
	atomic_totals(&ab0, &ac0);
	int rc = dmm_dma_alloc_coherent(d->d, size, gfp, &cpu, &dma);
	trace("alloc_coherent %s %zu %s -> %s %p %#llx", d->name, size, gfp ? "atomic" : "", dmm_errname(rc), cpu,
	      (unsigned long long)dma);
	atomic_totals(&ab1, &ac1);
	if (gfp && ab1 != ab0)
		die("an atomic coherent allocation grew an atomic pool");
	if (rc) {
		F.cnt.coh_fail++;
		if (rc != -DMM_ENOMEM && rc != -DMM_EWMARK)
			die("alloc_coherent %s %zu: %s", d->name, size, dmm_errname(rc));
		return;
	}
	F.cnt.coh_allocs++;
	if (gfp && !d->coherent)
		F.cnt.coh_atomic++;
	uint64_t pages = (size + DMM_PAGE_SIZE - 1) / DMM_PAGE_SIZE;
	dmm_phys_t pa;
	if ((rc = dmm_dma_bus_to_phys(d->d, dma, &pa)))
		die("coherent bus %#llx: %s", (unsigned long long)dma, dmm_errname(rc));
	if (p2v(pa) != cpu || (pa & (DMM_PAGE_SIZE - 1)))
		die("coherent buffer %p at %#llx (bus %#llx)", cpu, (unsigned long long)pa, (unsigned long long)dma);
	if (dma + size - 1 > d->mask || dma != pa + (uint64_t)d->off)
		die("coherent buffer bus %#llx + %zu beyond the mask of %s", (unsigned long long)dma, size, d->name);
	for (size_t i = 0; i < size; i++)
		if (((uint8_t *)cpu)[i])
			die("coherent buffer not zeroed at byte %zu", i);
	struct item t = { 0 };
	t.kind = K_COH;
	t.cpu = cpu;
	t.pa = pa;
	t.size = pages * DMM_PAGE_SIZE;
	t.req = size;
	t.dev = dv;
	t.dma = dma;
	t.atomic = gfp && !d->coherent;
	put_item(slot, &t);
}

/* ---- DMA pools -------------------------------------------------------------------------- */

static void op_pool(struct rd *r)
{
	uint64_t k = u8(r), a = u8(r), b = u8(r);
	int p = (int)(k % MAX_POOLS);
	struct fpool *f = &F.pl[p];
	int rc;

	if (!f->p) {
		int dv = (int)(a % NDEV);
		size_t size = 1 + (b * 3) % 600;
		size_t align = (size_t)8 << ((a >> 3) % 7);
		size_t boundary = 0;
		char name[16];
		if (a & 0x80) {
			boundary = 64;
			while (boundary < size)
				boundary <<= 1;
			boundary <<= (b >> 6) % 3;
		}
		snprintf(name, sizeof(name), "pool%d", p);
		rc = dmm_dma_pool_create(F.dev[dv].d, name, size, align, boundary, &f->p);
		trace("pool_create %d %s size %zu align %zu boundary %zu -> %s", p, F.dev[dv].name, size, align,
		      boundary, dmm_errname(rc));
		if (rc)
			die("dma_pool_create size %zu align %zu boundary %zu: %s", size, align, boundary,
			    dmm_errname(rc));
		f->dev = dv;
		f->size = size;
		f->align = align;
		f->boundary = boundary;
		f->stride = (size + align - 1) & ~(align - 1);
		f->live = 0;
		F.cnt.pools++;
		return;
	}
	if ((k & 0x30) == 0x30) { /* destroy: EBUSY while blocks are out */
		struct dmm_dma_pool_stats s0, s1;
		dmm_dma_pool_get_stats(f->p, &s0);
		rc = dmm_dma_pool_destroy(f->p);
		trace("pool_destroy %d -> %s", p, dmm_errname(rc));
		if (f->live) {
			expect(rc, -DMM_EBUSY, "destroy of a pool with blocks out");
			dmm_dma_pool_get_stats(f->p, &s1);
			if (s1.in_use != s0.in_use || s1.chunks != s0.chunks)
				die("a refused destroy changed the pool");
			return;
		}
		if (rc)
			die("pool destroy: %s", dmm_errname(rc));
		memset(f, 0, sizeof(*f));
		return;
	}
	int slot = free_item_slot();
	if (slot < 0)
		return;
	unsigned gfp = (a & 1 ? DMM_GFP_ZERO : 0) | (a & 2 ? DMM_GFP_ATOMIC : 0);
	void *cpu = NULL;
	dmm_dma_addr_t dma = 0;
	rc = dmm_dma_pool_alloc(f->p, gfp, &cpu, &dma);
	trace("pool_alloc %d gfp %#x -> %s %p %#llx", p, gfp, dmm_errname(rc), cpu, (unsigned long long)dma);
	if (rc) {
		if (rc != -DMM_ENOMEM && rc != -DMM_EWMARK)
			die("pool alloc: %s", dmm_errname(rc));
		return;
	}
	struct fdev *d = &F.dev[f->dev];
	dmm_phys_t pa;
	if ((rc = dmm_dma_bus_to_phys(d->d, dma, &pa)))
		die("block bus %#llx: %s", (unsigned long long)dma, dmm_errname(rc));
	if (p2v(pa) != cpu)
		die("block %p: bus %#llx names %#llx", cpu, (unsigned long long)dma, (unsigned long long)pa);
	if (dma & (f->align - 1))
		die("block %#llx not aligned to %zu", (unsigned long long)dma, f->align);
	if (f->boundary && dma / f->boundary != (dma + f->size - 1) / f->boundary)
		die("block %#llx + %zu crosses the boundary %zu", (unsigned long long)dma, f->size, f->boundary);
	if (dma + f->size - 1 > d->mask)
		die("block %#llx beyond the mask of %s", (unsigned long long)dma, d->name);
	if (gfp & DMM_GFP_ZERO)
		for (size_t i = 0; i < f->size; i++)
			if (((uint8_t *)cpu)[i])
				die("ZERO block not zeroed at byte %zu", i);
	struct item t = { 0 };
	t.kind = K_BLK;
	t.cpu = cpu;
	t.pa = pa;
	t.size = f->size;
	t.req = f->size;
	t.dma = dma;
	t.pool = p;
	f->live++;
	F.cnt.blocks++;
	put_item(slot, &t);
}

/* ---- bad calls ------------------------------------------------------------------------- */

static void op_bad(struct rd *r)
{
	uint64_t sub = u8(r) % 13, k = u8(r), x = u16(r);
	struct dmm_mem_info mi0, mi1;
	struct dmm_swiotlb_stats s0, s1;
	uint64_t fr0 = total_free();
	mem_info(&mi0);
	swiotlb_stats(&s0);
	int inval = 0; /* calls rejected as invalid, as the memory map counts them */

	switch (sub) {
	case 0: { /* unmap inside a bounced mapping: refused and counted */
		int j = pick_map(k, PM_BOUNCED);
		if (j < 0)
			return;
		struct map *m = &F.mp[j];
		uint32_t o = (uint32_t)(m->tlb & ALIGN_MASK & (SLOT - 1));
		uint64_t ext = (uint64_t)m->nslots * SLOT;
		uint64_t in = x % (ext - 1);
		dmm_dma_addr_t bus = m->bus - o + in;
		if (in >= o)
			bus++; /* never the mapping's own address */
		struct dmm_dma_stats a, b;
		dev_stats(F.dev[m->dev].d, &a);
		dmm_dma_unmap_phys(F.dev[m->dev].d, bus, m->len, m->dir);
		F.cnt.bad_calls++;
		trace("bad: unmap %s %#llx inside mapping %d at %#llx", F.dev[m->dev].name, (unsigned long long)bus,
		      j, (unsigned long long)m->bus);
		dev_stats(F.dev[m->dev].d, &b);
		if (b.fail_invalid != a.fail_invalid + 1 || b.unmaps != a.unmaps)
			die("unmap inside a mapping: fail_invalid %llu -> %llu, unmaps %llu -> %llu",
			    (unsigned long long)a.fail_invalid, (unsigned long long)b.fail_invalid,
			    (unsigned long long)a.unmaps, (unsigned long long)b.unmaps);
		inval = 1;
		break;
	}
	case 1: { /* unmap of a bounced mapping by another device: not its mapping */
		int j = pick_map(k, PM_BOUNCED);
		if (j < 0)
			return;
		struct map *m = &F.mp[j];
		int other = (int)((m->dev + 1 + x % (NDEV - 1)) % NDEV);
		dmm_phys_t pa;
		if (dmm_dma_bus_to_phys(F.dev[other].d, m->bus, &pa))
			return;
		for (int q = 0; q < MAX_MAPS; q++) /* (that would be another device's real unmap) */
			if (F.mp[q].used && F.mp[q].dev == other)
				return;
		dmm_dma_unmap_phys(F.dev[other].d, m->bus, m->len, m->dir);
		F.cnt.bad_calls++;
		trace("bad: unmap of mapping %d (%s) by %s", j, F.dev[m->dev].name, F.dev[other].name);
		break;
	}
	case 2: { /* kfree inside an object */
		int i = pick_item(k, 1u << K_KOBJ);
		if (i < 0 || F.it[i].size < 16)
			return;
		size_t off = 8 * (1 + x % (F.it[i].size / 8 - 1));
		/* inside a large object, in its first page half the time (the
		 * page the object's mark is on): no object starts there either */
		if (F.it[i].size > DMM_KMALLOC_MAX_CACHE && (x & 1))
			off = 8 * (1 + (x >> 1) % (DMM_PAGE_SIZE / 8 - 1));
		expect(dmm_kfree(F.mem, F.it[i].cpu + off), -DMM_EINVAL, "kfree inside an object");
		inval = 1;
		break;
	}
	case 3: { /* kfree of a page buffer or coherent buffer: not an object */
		int i = pick_item(k, 1u << K_PAGES | 1u << K_COH);
		if (i < 0)
			return;
		expect(dmm_kfree(F.mem, F.it[i].cpu), -DMM_ENOENT, "kfree of a page");
		break;
	}
	case 4: { /* coherent free with a wrong size or CPU address */
		int i = pick_item(k, 1u << K_COH);
		if (i < 0)
			return;
		struct item *t = &F.it[i];
		size_t pages = t->size / DMM_PAGE_SIZE, wrong = pages + 1 + x % 4;
		if (x & 0x100 && pages > 1)
			wrong = pages - 1 - x % (pages - 1);
		if (t->atomic) { /* an atomic pool checks the block's order */
			unsigned order = 0;
			while (((size_t)1 << order) < pages)
				order++;
			wrong = x & 0x100 && order ? 1 : (size_t)2 << order;
		}
		struct dmm_dma_stats a, b;
		dev_stats(F.dev[t->dev].d, &a);
		if (x & 0x200)
			expect(dmm_dma_free_coherent(F.dev[t->dev].d, t->req, t->cpu + DMM_PAGE_SIZE, t->dma),
			       -DMM_EINVAL, "coherent free with a wrong CPU address");
		else
			expect(dmm_dma_free_coherent(F.dev[t->dev].d, wrong * DMM_PAGE_SIZE, t->cpu, t->dma), -DMM_EINVAL,
			       "coherent free with a wrong size");
		dev_stats(F.dev[t->dev].d, &b);
		if (b.coherent_frees != a.coherent_frees)
			die("a refused coherent free was counted");
		break;
	}
	case 5: { /* coherent free of a page buffer */
		int i = pick_item(k, 1u << K_PAGES);
		if (i < 0)
			return;
		struct item *t = &F.it[i];
		int dv = (int)(x % NDEV);
		dmm_dma_addr_t bus = t->pa + (uint64_t)F.dev[dv].off;
		expect(dmm_dma_free_coherent(F.dev[dv].d, t->size, t->cpu, bus), -DMM_ENOENT,
		       "coherent free of a page buffer");
		break;
	}
	case 6: { /* DMA pool free: foreign block, misaddressed block */
		int i = pick_item(k, 1u << K_BLK);
		if (i < 0)
			return;
		struct item *t = &F.it[i];
		struct fpool *f = &F.pl[t->pool];
		if (x & 1) {
			int other = -1;
			/* (bus = phys for both: the block lies in none of the other's
			 * chunks; through an offset it might, at another block) */
			for (int q = 0; q < MAX_POOLS; q++)
				if (q != t->pool && F.pl[q].p && !F.dev[F.pl[q].dev].off && !F.dev[f->dev].off)
					other = q;
			if (other < 0)
				return;
			expect(dmm_dma_pool_free(F.pl[other].p, t->cpu, t->dma), -DMM_ENOENT, "free of a foreign block");
		} else if ((x & 2) && f->size > 1) {
			size_t off = 1 + (x >> 2) % (f->size - 1);
			expect(dmm_dma_pool_free(f->p, t->cpu + off, t->dma + off), -DMM_EINVAL,
			       "free inside a block");
		} else {
			expect(dmm_dma_pool_free(f->p, t->cpu + 8, t->dma), -DMM_EINVAL,
			       "free with a wrong CPU address");
		}
		break;
	}
	case 7: { /* kmalloc: size 0, unknown flags, DMA and DMA32 */
		void *p = NULL;
		unsigned fl = x & 1 ? DMM_GFP_DMA | DMM_GFP_DMA32 : DMM_GFP_MOVABLE;
		expect(dmm_kmalloc(F.mem, x & 2 ? 0 : 1 + x % 512, x & 2 ? 0 : fl, &p), -DMM_EINVAL, "bad kmalloc");
		inval = 1;
		break;
	}
	case 8: { /* maps of nothing: size 0, a hole, direction NONE */
		int dv = (int)(k % NDEV);
		struct dmm_dma_stats a, b;
		dev_stats(F.dev[dv].d, &a);
		dmm_dma_addr_t bus;
		if (x % 3 == 0)
			bus = dmm_dma_map_phys(F.dev[dv].d, 1 * MiB, 0, DMM_DMA_TO_DEVICE);
		else if (x % 3 == 1)
			bus = dmm_dma_map_phys(F.dev[dv].d, 48 * MiB + (x << 4) % (15 * MiB), 64, DMM_DMA_TO_DEVICE);
		else
			bus = dmm_dma_map_phys(F.dev[dv].d, 1 * MiB, 64, DMM_DMA_NONE);
		if (bus != DMM_DMA_MAPPING_ERROR)
			die("a map of nothing returned %#llx", (unsigned long long)bus);
		expect(dmm_dma_mapping_error(F.dev[dv].d, bus), -DMM_EINVAL, "map of nothing");
		dev_stats(F.dev[dv].d, &b);
		if (b.fail_invalid != a.fail_invalid + 1 || b.maps != a.maps)
			die("map of nothing: fail_invalid %llu -> %llu", (unsigned long long)a.fail_invalid,
			    (unsigned long long)b.fail_invalid);
		inval = 1;
		break;
	}
	case 10: { /* a sync not inside its mapping: past its end, or before its start (in its first
		    * slot, for a bounced one): nothing is copied */
		int j = pick_map(k, 0);
		if (j < 0)
			return;
		struct map *m = &F.mp[j];
		uint32_t o = m->bounced ? (uint32_t)(m->tlb & ALIGN_MASK & (SLOT - 1)) : 0;
		dmm_dma_addr_t bus;
		size_t n;
		if ((x & 1) && o) {
			size_t before = 1 + (x >> 2) % o;
			bus = m->bus - before;
			n = before + (x >> 10) % (m->len + 1);
		} else {
			size_t off = (x >> 2) % m->len;
			bus = m->bus + off;
			n = m->len - off + 1 + (x >> 10) % 64;
		}
		if (x & 2)
			dmm_dma_sync_single_for_cpu(F.dev[m->dev].d, bus, n, m->dir);
		else
			dmm_dma_sync_single_for_device(F.dev[m->dev].d, bus, n, m->dir);
		F.cnt.bad_calls++;
		trace("bad: sync_for_%s %s %#llx+%zu outside mapping %d %#llx+%zu", x & 2 ? "cpu" : "device",
		      F.dev[m->dev].name, (unsigned long long)bus, n, j, (unsigned long long)m->bus, m->len);
		break;
	}
	case 11: { /* a sync of a mapping by another device: not its mapping, nothing is copied */
		int j = pick_map(k, x & 1 ? 0 : PM_BOUNCED);
		if (j < 0)
			return;
		struct map *m = &F.mp[j];
		int other = (int)((m->dev + 1 + (x >> 1) % (NDEV - 1)) % NDEV);
		size_t off = (x >> 3) % m->len, n = 1 + (x >> 7) % (m->len - off);
		dmm_phys_t pa;
		if (dmm_dma_bus_to_phys(F.dev[other].d, m->bus + off, &pa))
			return;
		/* (in a bounce buffer of the other device's own: its own sync) */
		for (int q = 0; q < MAX_MAPS; q++) {
			const struct map *y = &F.mp[q];
			if (y->used && y->bounced && y->dev == other &&
			    overlaps(pa, n, y->tlb - (y->tlb & ALIGN_MASK & (SLOT - 1)), (uint64_t)y->nslots * SLOT))
				return;
		}
		if (x & 2)
			dmm_dma_sync_single_for_cpu(F.dev[other].d, m->bus + off, n, m->dir);
		else
			dmm_dma_sync_single_for_device(F.dev[other].d, m->bus + off, n, m->dir);
		F.cnt.bad_calls++;
		trace("bad: sync_for_%s of mapping %d (%s) +%zu %zu by %s", x & 2 ? "cpu" : "device", j,
		      F.dev[m->dev].name, off, n, F.dev[other].name);
		break;
	}
	case 12: { /* an unmap of 0 bytes: nothing is unmapped */
		int j = pick_map(k, 0);
		if (j < 0)
			return;
		struct map *m = &F.mp[j];
		struct dmm_dma_stats a, b;
		dev_stats(F.dev[m->dev].d, &a);
		dmm_dma_unmap_phys(F.dev[m->dev].d, m->bus, 0, m->dir);
		F.cnt.bad_calls++;
		trace("bad: unmap %s %#llx of 0 bytes", F.dev[m->dev].name, (unsigned long long)m->bus);
		dev_stats(F.dev[m->dev].d, &b);
		if (b.unmaps != a.unmaps)
			die("an unmap of 0 bytes was counted");
		break;
	}
	default: { /* DMA pools that may not be: align not a power of two, boundary below the size, size 0 */
		struct dmm_dma_pool *p = NULL;
		int dv = (int)(k % NDEV);
		if (x % 3 == 0)
			expect(dmm_dma_pool_create(F.dev[dv].d, "bad", 64, 24, 0, &p), -DMM_EINVAL, "pool align 24");
		else if (x % 3 == 1)
			expect(dmm_dma_pool_create(F.dev[dv].d, "bad", 256, 8, 128, &p), -DMM_EINVAL,
			       "pool boundary below size");
		else
			expect(dmm_dma_pool_create(F.dev[dv].d, "bad", 0, 8, 0, &p), -DMM_EINVAL, "pool of size 0");
		if (p)
			die("a refused pool create returned a pool");
		break;
	}
	}
	mem_info(&mi1);
	swiotlb_stats(&s1);
	if (inval && mi1.fail_invalid != mi0.fail_invalid + 1)
		die("bad call %llu: fail_invalid %llu -> %llu", (unsigned long long)sub,
		    (unsigned long long)mi0.fail_invalid, (unsigned long long)mi1.fail_invalid);
	if (total_free() != fr0)
		die("bad call %llu changed the free pages", (unsigned long long)sub);
	if (s1.used_slots != s0.used_slots || s1.maps != s0.maps || s1.unmaps != s0.unmaps ||
	    s1.cached_slots != s0.cached_slots || s1.bounced_from_device != s0.bounced_from_device ||
	    s1.bounced_to_device != s0.bounced_to_device)
		die("bad call %llu changed the bounce buffers", (unsigned long long)sub);
}

/* ---- the clock ------------------------------------------------------------------------- */

static void op_clock(struct rd *r)
{
	uint64_t k = u8(r);
	struct dmm_swiotlb_stats s0, s1;
	fuzz_now += (k & 0x7f) * (IDLE_NS / 32);
	swiotlb_stats(&s0);
	if (k & 0x80) {
		dmm_swiotlb_trim(F.mem);
		F.cnt.trims++;
	}
	swiotlb_stats(&s1);
	trace("clock +%llu%s: transient pools %llu -> %llu", (unsigned long long)(k & 0x7f), k & 0x80 ? ", trim" : "",
	      (unsigned long long)s0.transient_pools, (unsigned long long)s1.transient_pools);
}

/* Transient pools added (by maps that found no room) and released (by
 * trims and unmaps) so far. */
static void transient_counts(void)
{
	struct dmm_swiotlb_stats st;
	swiotlb_stats(&st);
	F.cnt.transient_created = st.transient_created;
	F.cnt.transient_released = st.transient_released;
}

/* ---- the input --------------------------------------------------------------------------- */

static void teardown(void)
{
	/* (the unmaps answer the deferred requests: their mappings go too) */
	for (;;) {
		int live = 0;
		for (int l = 0; l < MAX_SGL; l++)
			if (F.sl[l].used) {
				sg_unmap(l, 0, 0);
				live = 1;
			}
		for (int j = 0; j < MAX_MAPS; j++)
			if (F.mp[j].used) {
				unmap_one(j);
				live = 1;
			}
		if (live)
			continue;
		if (!nr_deferred())
			break;
		/* requests still waiting with nothing mapped wait for the room
		 * idle transient pools hold: released, it answers them */
		fuzz_now += 2 * IDLE_NS;
		trace("teardown: %d deferred requests wait with nothing mapped: trim", nr_deferred());
		dmm_swiotlb_trim(F.mem);
		if (nr_deferred()) /* (nothing mapped, no transient pool: each fits) */
			die("teardown: %d deferred requests not answered after a trim with nothing mapped",
			    nr_deferred());
	}
	for (int i = 0; i < MAX_ITEMS; i++)
		if (F.it[i].kind != K_FREE)
			free_item(i);
	for (int p = 0; p < MAX_POOLS; p++)
		if (F.pl[p].p) {
			int rc = dmm_dma_pool_destroy(F.pl[p].p);
			if (rc)
				die("teardown: pool destroy %s", dmm_errname(rc));
			memset(&F.pl[p], 0, sizeof(F.pl[p]));
		}
	/* idle transient pools go back once the clock has passed their time */
	fuzz_now += 2 * IDLE_NS;
	dmm_swiotlb_trim(F.mem);
	check_all("teardown");
	struct dmm_swiotlb_stats st;
	swiotlb_raw(&st);
	if (st.used_slots || st.transient_pools)
		die("teardown: %llu bounce slots used, %llu transient pools", (unsigned long long)st.used_slots,
		    (unsigned long long)st.transient_pools);
	if (nr_items_live() || F.used_slots)
		die("teardown: the model still holds something");
	transient_counts();
	/* pages: free + slab pages as before, apart from atomic pool growth */
	uint64_t ab;
	uint32_t ac;
	atomic_totals(&ab, &ac);
	uint64_t now = total_free() + slab_pages();
	uint64_t grown = (ab - F.atomic_bytes) / DMM_PAGE_SIZE, chunks = ac - F.atomic_chunks;
	if (ab < F.atomic_bytes || ac < F.atomic_chunks)
		die("teardown: an atomic pool shrank");
	if (now > F.base || F.base - now < grown || F.base - now > grown + 2 * chunks)
		die("teardown: free + slab pages %llu, want %llu less %llu pages of atomic pool growth (%llu chunks)",
		    (unsigned long long)now, (unsigned long long)F.base, (unsigned long long)grown,
		    (unsigned long long)chunks);
	F.base = now;
	F.atomic_bytes = ab;
	F.atomic_chunks = ac;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rd r = { data, size };
	if (!F.ready) {
		setup();
		F.base = total_free() + slab_pages();
		atomic_totals(&F.atomic_bytes, &F.atomic_chunks);
		check_all("setup");
	}
	F.cnt.inputs++;
	F.rng = 0x243f6a8885a308d3ull ^ (size * 0x9e3779b97f4a7c15ull);
	while (r.n) {
		F.step++;
		F.cnt.ops++;
		uint64_t op = u8(&r) % 23;
		const char *what;
		switch (op) {
		case 0:
		case 1:
		case 2:
			op_kmalloc(&r);
			what = "kmalloc";
			break;
		case 3:
			op_free(&r, 1u << K_KOBJ);
			what = "kfree";
			break;
		case 4:
			op_page_alloc(&r);
			what = "page alloc";
			break;
		case 5:
			op_free(&r, ~0u);
			what = "free";
			break;
		case 6:
		case 7:
		case 8:
			op_map(&r);
			what = "map";
			break;
		case 9:
		case 10:
			op_unmap(&r);
			what = "unmap";
			break;
		case 11:
			op_dev_write(&r);
			what = "device write";
			break;
		case 12:
			op_cpu_write(&r);
			what = "cpu write";
			break;
		case 13:
			op_sync(&r);
			what = "sync";
			break;
		case 14:
			op_coherent(&r);
			what = "coherent alloc";
			break;
		case 15:
		case 16:
			op_pool(&r);
			what = "dma pool";
			break;
		case 17:
			op_bad(&r);
			what = "bad call";
			break;
		case 18:
			op_sg_map(&r);
			what = "map_sg";
			break;
		case 19:
			op_sg(&r);
			what = "unmap_sg / sync_sg";
			break;
		case 20:
			op_defer(&r);
			what = "map_phys_deferred";
			break;
		default:
			op_clock(&r);
			what = "clock";
			break;
		}
		check_all(what);
	}
	teardown();
	return 0;
}

void dmm_fuzz_print_summary(const char *prog)
{
	const struct counts *c = &F.cnt;
	printf("%s: %llu inputs, %llu operations: %llu kmallocs, %llu kfrees, %llu page buffers; %llu maps "
	       "(%llu bounced, %llu full), %llu unmaps (%llu not as mapped), %llu device writes (%llu past an "
	       "untrusted mapping), %llu syncs; %llu scatterlists mapped (%llu pieces, %llu bounced, %llu merged; "
	       "%llu full), %llu unmapped, %llu synced; %llu deferred maps (%llu queued, %llu of them behind "
	       "others, %llu answered later, %llu could never fit); %llu coherent buffers (%llu from atomic "
	       "pools, %llu failed), %llu freed; %llu DMA pools, %llu blocks, %llu freed; %llu clock trims, %llu "
	       "transient pools added, %llu released; %llu bad calls refused\n",
	       prog, (unsigned long long)c->inputs, (unsigned long long)c->ops, (unsigned long long)c->kmallocs,
	       (unsigned long long)c->kfrees, (unsigned long long)c->pages, (unsigned long long)c->maps,
	       (unsigned long long)c->bounced, (unsigned long long)c->map_fail, (unsigned long long)c->unmaps,
	       (unsigned long long)c->unmaps_unlike,
	       (unsigned long long)c->dev_writes, (unsigned long long)c->overruns, (unsigned long long)c->syncs,
	       (unsigned long long)c->sg_maps, (unsigned long long)c->sg_pieces, (unsigned long long)c->sg_bounced,
	       (unsigned long long)c->sg_merged, (unsigned long long)c->sg_fail, (unsigned long long)c->sg_unmaps,
	       (unsigned long long)c->sg_syncs, (unsigned long long)c->deferred, (unsigned long long)c->deferred_queued,
	       (unsigned long long)c->deferred_behind, (unsigned long long)c->deferred_later,
	       (unsigned long long)c->deferred_never,
	       (unsigned long long)c->coh_allocs, (unsigned long long)c->coh_atomic, (unsigned long long)c->coh_fail,
	       (unsigned long long)c->coh_frees, (unsigned long long)c->pools, (unsigned long long)c->blocks,
	       (unsigned long long)c->block_frees, (unsigned long long)c->trims,
	       (unsigned long long)c->transient_created, (unsigned long long)c->transient_released,
	       (unsigned long long)c->bad_calls);
}

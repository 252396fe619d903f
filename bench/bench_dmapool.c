/* SPDX-License-Identifier: MIT */
/*
 * bench_dmapool: what keeping a small-block pool's bookkeeping out of
 * device-visible memory costs, against the classic design that threads the
 * free list through the free blocks (classic_dmapool.c: Linux's dmapool
 * since 6.3), on the same device and the same chunks, in the same run.
 *
 * Machine: hosted, 2 GiB of RAM from 0, 2 CPU slots; a coherent device
 * with a 64-bit mask (chunks are plain coherent allocations, no bounce, no
 * IOMMU). The classic pool gets dmamem's chunk size for the same geometry,
 * so the two hold the same memory but for the classic 16-byte minimum
 * block.
 *
 * (a) alloc + free pair (allocate, free right away: the hot path) for three
 *     geometries: 32-byte descriptors aligned to 32 within 4 KiB, 64-byte
 *     command blocks aligned to 64, 512-byte buffers aligned to 64 within
 *     4 KiB. ns per pair.
 * (b) churn: 16384 live 64-byte blocks (256 chunks); each step frees a
 *     random live block and allocates one in its place, so frees land all
 *     over the pool (dmamem finds the chunk with one hash probe and sets a
 *     bit; the classic pool pushes the block). ns per free + alloc.
 *     Method for (a) and (b): R repetitions (default 21); in each, both
 *     pools run one batch sized to ~2 ms, in alternating order; medians.
 * (c) memory: 1000 and 20000 chunks' worth of blocks allocated, block sizes
 *     8 (align 8), 64 and 256 (align 64): the pool's own bookkeeping
 *     (dmamem: dmm_dma_pool_stats.meta_bytes; classic: the pool and its
 *     chunk headers) as a share of the pages the chunks hold, and the total
 *     (chunk pages + bookkeeping) against the classic pool's for the same
 *     number of blocks.
 * (d) a device overrun: 4 chunks of 64-byte blocks all allocated, every
 *     other block freed, then the "device" writes 16 bytes past the end of
 *     8 of the blocks it owns (a status write-back one descriptor too
 *     long), each landing on the first bytes of a free neighbour. Then the
 *     free blocks are allocated again. Reported: allocations that came back
 *     with a wrong bus address, and whether the free list was lost (the
 *     next allocation would hand out memory the device chose). dmamem's
 *     pool must serve every free block correctly and pass
 *     dmm_dma_pool_check().
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dmamem/hosted.h>

#include "bench_util.h"
#include "classic_dmapool.h"

static struct dmm_mem *g_mem;
static struct dmm_device *g_dev;

enum kind { K_OURS = 0, K_CLASSIC, NR_KINDS };
static const char *const kind_name[NR_KINDS] = { "dmamem", "classic" };

struct pools {
	struct dmm_dma_pool *ours;
	struct classic_dma_pool *classic;
	uint64_t chunk_bytes;
};

/* Both pools for one geometry; the classic one with dmamem's chunk size. */
static void pools_create(struct pools *p, size_t size, size_t align, size_t boundary)
{
	struct dmm_dma_pool_stats st;
	int rc = dmm_dma_pool_create(g_dev, "bench", size, align, boundary, &p->ours);

	if (rc)
		bench_die("dmm_dma_pool_create(%zu, %zu, %zu): %s", size, align, boundary, dmm_errname(rc));
	dmm_dma_pool_get_stats(p->ours, &st);
	p->chunk_bytes = st.chunk_bytes;
	if (classic_dma_pool_create(g_dev, size, align, boundary, (size_t)st.chunk_bytes, &p->classic))
		bench_die("classic_dma_pool_create(%zu, %zu, %zu)", size, align, boundary);
}

static void pools_destroy(struct pools *p)
{
	int rc;

	if ((rc = dmm_dma_pool_check(p->ours)))
		bench_die("dmm_dma_pool_check: %s", dmm_errname(rc));
	if ((rc = dmm_dma_pool_destroy(p->ours)))
		bench_die("dmm_dma_pool_destroy: %s", dmm_errname(rc));
	if (classic_dma_pool_destroy(p->classic))
		bench_die("classic_dma_pool_destroy: blocks still allocated");
}

struct block {
	void *cpu;
	dmm_dma_addr_t dma;
};

static void alloc_one(const struct pools *p, int k, struct block *b)
{
	if (k == K_OURS) {
		int rc = dmm_dma_pool_alloc(p->ours, 0, &b->cpu, &b->dma);
		if (rc)
			bench_die("dmm_dma_pool_alloc: %s", dmm_errname(rc));
	} else if (!(b->cpu = classic_dma_pool_alloc(p->classic, 0, &b->dma))) {
		bench_die("classic_dma_pool_alloc failed");
	}
}

static void free_one(const struct pools *p, int k, const struct block *b)
{
	if (k == K_OURS) {
		int rc = dmm_dma_pool_free(p->ours, b->cpu, b->dma);
		if (rc)
			bench_die("dmm_dma_pool_free: %s", dmm_errname(rc));
	} else {
		classic_dma_pool_free(p->classic, b->cpu, b->dma);
	}
}

/* ---- (a) pairs, (b) churn ---------------------------------------------------- */

struct run_arg {
	const struct pools *p;
	int k;
	struct block *live;      /* (b): the live blocks */
	uint64_t nlive;
	struct bench_rng *rng;
};

static __attribute__((noinline)) void run_pairs(const struct run_arg *a, long n)
{
	struct block b;

	if (a->k == K_OURS) {
		for (long i = 0; i < n; i++) {
			if (dmm_dma_pool_alloc(a->p->ours, 0, &b.cpu, &b.dma))
				bench_die("dmm_dma_pool_alloc failed");
			__asm__ volatile("" : : "r"(b.cpu) : "memory");
			if (dmm_dma_pool_free(a->p->ours, b.cpu, b.dma))
				bench_die("dmm_dma_pool_free failed");
		}
	} else {
		for (long i = 0; i < n; i++) {
			if (!(b.cpu = classic_dma_pool_alloc(a->p->classic, 0, &b.dma)))
				bench_die("classic_dma_pool_alloc failed");
			__asm__ volatile("" : : "r"(b.cpu) : "memory");
			classic_dma_pool_free(a->p->classic, b.cpu, b.dma);
		}
	}
}

static __attribute__((noinline)) void run_churn(const struct run_arg *a, long n)
{
	for (long i = 0; i < n; i++) {
		struct block *b = &a->live[bench_rand_below(a->rng, a->nlive)];
		free_one(a->p, a->k, b);
		alloc_one(a->p, a->k, b);
	}
}

static void run_pairs_cb(const void *arg, long n)
{
	run_pairs(arg, n);
}

static void run_churn_cb(const void *arg, long n)
{
	run_churn(arg, n);
}

/* Medians of @reps batches of each kind (alternating order): ns per op. */
static void measure(void (*cb)(const void *, long), struct run_arg a[NR_KINDS], long reps, double batch_ms,
		    double med[NR_KINDS])
{
	long n[NR_KINDS];
	double *v = calloc((size_t)(reps * NR_KINDS), sizeof(double));

	if (!v)
		bench_die("out of memory");
	for (int k = 0; k < NR_KINDS; k++)
		n[k] = bench_calibrate(cb, &a[k], 64, 1l << 26, batch_ms, 200);
	for (long r = 0; r < reps; r++) {
		for (int j = 0; j < NR_KINDS; j++) {
			int k = (int)((j + r) % NR_KINDS);
			uint64_t t0 = bench_now_ns();
			cb(&a[k], n[k]);
			v[k * reps + r] = (double)(bench_now_ns() - t0) / (double)n[k];
		}
	}
	for (int k = 0; k < NR_KINDS; k++)
		med[k] = bench_median(&v[k * reps], (size_t)reps);
	free(v);
}

static void bench_pairs(struct bench_out *out, long reps, double batch_ms)
{
	static const struct {
		const char *name;
		size_t size, align, boundary;
	} geo[] = {
		{ "desc32", 32, 32, 4096 },
		{ "cmd64", 64, 64, 0 },
		{ "buf512", 512, 64, 4096 },
	};
	char name[64];

	bench_section(out, "(a) alloc + free pair, ns (classic: free list in the blocks)");
	for (size_t g = 0; g < sizeof(geo) / sizeof(geo[0]); g++) {
		struct pools p;
		struct run_arg a[NR_KINDS];
		double med[NR_KINDS];

		pools_create(&p, geo[g].size, geo[g].align, geo[g].boundary);
		for (int k = 0; k < NR_KINDS; k++)
			a[k] = (struct run_arg){ &p, k, NULL, 0, NULL };
		measure(run_pairs_cb, a, reps, batch_ms, med);
		snprintf(name, sizeof(name), "%s_pair_ns", geo[g].name);
		bench_report(out, name, med[K_OURS], "ns", kind_name[K_CLASSIC], med[K_OURS] / med[K_CLASSIC]);
		snprintf(name, sizeof(name), "%s_pair_ns_classic", geo[g].name);
		bench_report(out, name, med[K_CLASSIC], "ns", NULL, 0);
		pools_destroy(&p);
	}
}

static void bench_churn(struct bench_out *out, long reps, double batch_ms, uint64_t nlive)
{
	struct pools p;
	struct run_arg a[NR_KINDS];
	struct bench_rng rng[NR_KINDS] = { { 7 }, { 7 } };
	struct block *live[NR_KINDS];
	struct dmm_dma_pool_stats st;
	double med[NR_KINDS];
	char name[96];

	pools_create(&p, 64, 64, 0);
	for (int k = 0; k < NR_KINDS; k++) {
		if (!(live[k] = calloc(nlive, sizeof(struct block))))
			bench_die("out of memory");
		for (uint64_t i = 0; i < nlive; i++)
			alloc_one(&p, k, &live[k][i]);
		a[k] = (struct run_arg){ &p, k, live[k], nlive, &rng[k] };
	}
	dmm_dma_pool_get_stats(p.ours, &st);
	measure(run_churn_cb, a, reps, batch_ms, med);
	snprintf(name, sizeof(name), "(b) churn: %llu live 64-byte blocks in %llu chunks, ns per free + alloc",
		 (unsigned long long)nlive, (unsigned long long)st.chunks);
	bench_section(out, name);
	bench_report(out, "churn64_ns", med[K_OURS], "ns", kind_name[K_CLASSIC], med[K_OURS] / med[K_CLASSIC]);
	bench_report(out, "churn64_ns_classic", med[K_CLASSIC], "ns", NULL, 0);
	for (int k = 0; k < NR_KINDS; k++) {
		for (uint64_t i = 0; i < nlive; i++)
			free_one(&p, k, &live[k][i]);
		free(live[k]);
	}
	pools_destroy(&p);
}

/* ---- (c) memory -------------------------------------------------------------- */

static void bench_memory(struct bench_out *out, const uint64_t chunk_counts[2])
{
	static const struct {
		size_t size, align;
	} geo[] = { { 8, 8 }, { 64, 64 }, { 256, 64 } };
	char name[96];

	bench_section(out, "(c) bookkeeping memory: share of the chunks' pages; total (pages + bookkeeping) vs classic");
	for (size_t g = 0; g < sizeof(geo) / sizeof(geo[0]); g++) {
		for (int c = 0; c < 2; c++) {
			struct pools p;
			struct dmm_dma_pool_stats st;
			struct classic_dma_pool_stats cs;
			struct block *blk[NR_KINDS];
			uint64_t nblocks;
			double ours_total, classic_total;

			pools_create(&p, geo[g].size, geo[g].align, 0);
			{
				struct block b;
				alloc_one(&p, K_OURS, &b);
				dmm_dma_pool_get_stats(p.ours, &st);
				free_one(&p, K_OURS, &b);
			}
			nblocks = st.blocks_per_chunk * chunk_counts[c];
			for (int k = 0; k < NR_KINDS; k++) {
				if (!(blk[k] = malloc(nblocks * sizeof(struct block))))
					bench_die("out of memory");
				for (uint64_t i = 0; i < nblocks; i++)
					alloc_one(&p, k, &blk[k][i]);
			}
			dmm_dma_pool_get_stats(p.ours, &st);
			classic_dma_pool_get_stats(p.classic, &cs);
			if (st.chunks != chunk_counts[c] || st.in_use != nblocks || cs.in_use != nblocks)
				bench_die("memory test: %llu chunks for %llu blocks",
					  (unsigned long long)st.chunks, (unsigned long long)nblocks);
			ours_total = (double)(st.pages * DMM_PAGE_SIZE + st.meta_bytes);
			classic_total = (double)(cs.pages * DMM_PAGE_SIZE + cs.meta_bytes);
			snprintf(name, sizeof(name), "b%zu_%llu_chunks_meta_pct", geo[g].size,
				 (unsigned long long)chunk_counts[c]);
			bench_report(out, name, 100.0 * (double)st.meta_bytes / (double)(st.pages * DMM_PAGE_SIZE), "%",
				     NULL, 0);
			snprintf(name, sizeof(name), "b%zu_%llu_chunks_meta_pct_classic", geo[g].size,
				 (unsigned long long)chunk_counts[c]);
			bench_report(out, name, 100.0 * (double)cs.meta_bytes / (double)(cs.pages * DMM_PAGE_SIZE), "%",
				     NULL, 0);
			snprintf(name, sizeof(name), "b%zu_%llu_chunks_total_bytes", geo[g].size,
				 (unsigned long long)chunk_counts[c]);
			bench_report(out, name, ours_total, "bytes", kind_name[K_CLASSIC], ours_total / classic_total);
			for (int k = 0; k < NR_KINDS; k++) {
				for (uint64_t i = 0; i < nblocks; i++)
					free_one(&p, k, &blk[k][i]);
				free(blk[k]);
			}
			pools_destroy(&p);
		}
	}
}

/* ---- (d) device overrun ------------------------------------------------------- */

#define OVR_CHUNKS 4
#define OVR_WRITES 8

/* Is @b a block of the dmamem pool's memory with its true bus address (bus =
 * physical address on this device)? */
static int ours_block_ok(const struct block *b)
{
	uint8_t *v = dmm_pfn_to_virt(g_mem, dmm_phys_to_pfn(b->dma));
	return v && v + (b->dma & (DMM_PAGE_SIZE - 1)) == (uint8_t *)b->cpu;
}

static void bench_overrun(struct bench_out *out)
{
	/* a status write-back: a status word and a length, 16 bytes */
	static const uint64_t status[2] = { 0x0000000100000040ull, 0x00000000c0ffee00ull };
	struct pools p;
	struct dmm_dma_pool_stats st;
	struct block *blk[NR_KINDS];
	uint64_t nblocks, nfree, ok[NR_KINDS] = { 0, 0 }, wrong[NR_KINDS] = { 0, 0 }, lost_at = 0;
	int lost = 0, rc;

	pools_create(&p, 64, 64, 0);
	{
		struct block b;
		alloc_one(&p, K_OURS, &b);
		dmm_dma_pool_get_stats(p.ours, &st);
		free_one(&p, K_OURS, &b);
	}
	nblocks = st.blocks_per_chunk * OVR_CHUNKS;
	nfree = nblocks / 2;
	for (int k = 0; k < NR_KINDS; k++) {
		if (!(blk[k] = calloc(nblocks, sizeof(struct block))))
			bench_die("out of memory");
		for (uint64_t i = 0; i < nblocks; i++)
			alloc_one(&p, k, &blk[k][i]);
		for (uint64_t w = 0; w < OVR_WRITES; w++) {
			const struct block *b = &blk[k][w * (nblocks / OVR_WRITES)];
			if ((uint8_t *)b[1].cpu != (uint8_t *)b->cpu + 64)
				bench_die("overrun: %s blocks are not in address order", kind_name[k]);
		}
		/* every other block free: each kept block has a free neighbour
		 * (blocks come in address order from a fresh pool of either
		 * design) */
		for (uint64_t i = 1; i < nblocks; i += 2) {
			free_one(&p, k, &blk[k][i]);
			blk[k][i].cpu = NULL;
		}
		for (uint64_t w = 0; w < OVR_WRITES; w++)
			memcpy((uint8_t *)blk[k][w * (nblocks / OVR_WRITES)].cpu + 64, status, sizeof(status));
	}
	/* allocate the free blocks again */
	for (uint64_t i = 1; i < nblocks; i += 2) {
		struct block b;
		dmm_dma_addr_t true_dma;
		alloc_one(&p, K_OURS, &b);
		if (ours_block_ok(&b))
			ok[K_OURS]++;
		else
			wrong[K_OURS]++;
		blk[K_OURS][i] = b;
		if (lost)
			continue;
		if (!classic_dma_pool_head_ok(p.classic)) {
			/* the head is what the device wrote: popping it would
			 * hand out (and write to) memory of its choosing */
			lost = 1;
			lost_at = ok[K_CLASSIC] + wrong[K_CLASSIC];
			continue;
		}
		alloc_one(&p, K_CLASSIC, &b);
		if (classic_dma_pool_block_dma(p.classic, b.cpu, &true_dma) && true_dma == b.dma)
			ok[K_CLASSIC]++;
		else
			wrong[K_CLASSIC]++;
		blk[K_CLASSIC][i] = b;
	}
	if ((rc = dmm_dma_pool_check(p.ours)))
		bench_die("overrun: dmm_dma_pool_check: %s", dmm_errname(rc));
	if (wrong[K_OURS] || ok[K_OURS] != nfree)
		bench_die("overrun: dmamem served %llu wrong blocks", (unsigned long long)wrong[K_OURS]);
	bench_section(out, "(d) device overrun: 16 bytes past 8 blocks into free neighbours, then the free blocks "
			   "allocated again");
	bench_report(out, "overrun_free_blocks", (double)nfree, "blocks", NULL, 0);
	bench_report(out, "overrun_ours_served_right", (double)ok[K_OURS], "blocks", NULL, 0);
	bench_report(out, "overrun_ours_wrong_bus_addr", (double)wrong[K_OURS], "blocks", NULL, 0);
	bench_report(out, "overrun_classic_served_right", (double)ok[K_CLASSIC], "blocks", NULL, 0);
	bench_report(out, "overrun_classic_wrong_bus_addr", (double)wrong[K_CLASSIC], "blocks", NULL, 0);
	bench_report(out, "overrun_classic_list_lost", (double)lost, "bool", NULL, 0);
	bench_report(out, "overrun_classic_lost_after", (double)lost_at, "allocs", NULL, 0);
	/* give back what each pool handed out; the classic pool's destroy
	 * walks its chunk headers (ordinary memory, intact), not the lost
	 * free list */
	for (int k = 0; k < NR_KINDS; k++) {
		for (uint64_t i = 0; i < nblocks; i++)
			if (blk[k][i].cpu)
				free_one(&p, k, &blk[k][i]);
		free(blk[k]);
	}
	pools_destroy(&p);
}

int main(int argc, char **argv)
{
	struct bench_out out;
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_device_desc d;
	int quick = bench_opt_flag(argc, argv, "--quick");
	long reps = bench_opt_long(argc, argv, "--reps", quick ? 3 : 21);
	double batch_ms = quick ? 0.5 : 2.0;
	const uint64_t chunks_full[2] = { 1000, 20000 }, chunks_quick[2] = { 10, 100 };

	if (bench_opt_flag(argc, argv, "--help")) {
		printf("usage: bench_dmapool [--json] [--quick] [--reps N]\n");
		return 0;
	}
	if (reps < 1)
		bench_die("bad arguments");
	bench_out_init(&out, "dmapool", argc, argv);
	bench_machine_flat(&m, "bench_dmapool", 2 * BENCH_GIB);
	if (dmm_hosted_mem_create(&m, 2, &h, &g_mem))
		bench_die("dmm_hosted_mem_create failed");
	memset(&d, 0, sizeof(d));
	d.name = "coherent";
	d.dma_mask = DMM_DMA_BIT_MASK(64);
	d.coherent = 1;
	d.cma_area = DMM_DEVICE_CMA_NONE;
	if (dmm_device_create(g_mem, &d, NULL, &g_dev))
		bench_die("dmm_device_create failed");
	bench_note(&out, "bench_dmapool: 2 GiB hosted machine, coherent 64-bit device, %ld repetitions\n", reps);
	bench_pairs(&out, reps, batch_ms);
	bench_churn(&out, reps, batch_ms, quick ? 1024 : 16384);
	bench_memory(&out, quick ? chunks_quick : chunks_full);
	bench_overrun(&out);
	if (dmm_device_destroy(g_dev))
		bench_die("dmm_device_destroy failed");
	if (dmm_page_alloc_check(g_mem))
		bench_die("dmm_page_alloc_check failed");
	dmm_hosted_mem_destroy(h, g_mem);
	return 0;
}

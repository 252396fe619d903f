/* SPDX-License-Identifier: MIT */
/*
 * Bounce buffers (swiotlb).
 *
 * Pools of fixed-size slots in memory the devices can reach. A mapping that
 * must bounce takes up to max_slots_per_map contiguous slots of one pool
 * (from the calling CPU's area first, so two CPUs rarely contend), keeps the
 * original buffer's offset within align_mask, and the data is copied exactly
 * when the direction requires it: to the bounce buffer at map and at
 * sync_for_device (TO_DEVICE, BIDIRECTIONAL), back at unmap and at
 * sync_for_cpu (FROM_DEVICE, BIDIRECTIONAL). An unmap names the address
 * the map returned (an address inside a mapping is refused and counted as
 * an invalid call: nothing is copied or freed); a sync may name any part of
 * a mapping.
 *
 * A mapping bounces when the buffer is out of the device's reach, when the
 * device is untrusted and the buffer does not cover whole pages, when the
 * machine forces bouncing, and when a small object that is not DMA-aligned
 * is mapped with an invalidating direction for a non-coherent device under
 * the packed small-object policy.
 *
 * Pools start at a configurable size (0 allowed). When a map finds no room,
 * a transient pool is added on the spot; idle transient pools are given back
 * after a delay. A background worker grows the default pool before it runs
 * dry. A device may get a restricted pool its mappings never leave. Finding
 * the pool of a bounce address is a binary search over a sorted index that
 * is replaced (never edited) when pools come and go.
 */
#ifndef DMAMEM_SWIOTLB_H
#define DMAMEM_SWIOTLB_H

#include <stddef.h>
#include <stdint.h>

#include "dma.h"

struct dmm_swiotlb_opts {
	uint64_t initial_bytes;      /* default pool at start (0 allowed) */
	uint32_t slot_size;          /* power of two, 512..4096 (default 2048) */
	uint32_t max_slots_per_map;  /* contiguous slots one mapping may use (default 128) */
	uint32_t nr_areas;           /* areas per pool (0 = the platform's CPUs) */
	uint64_t align_mask;         /* address bits of the original kept in the bounce address */
	dmm_phys_t limit;            /* pools lie below this (0 = dma32_limit, else anywhere) */
	uint32_t grow_threshold_pct; /* background growth above this use (default 75) */
	uint64_t grow_bytes;         /* size of a growth step (0 = max(initial, 256 KiB)) */
	uint64_t max_bytes;          /* all pools together (0 = RAM / 16) */
	uint64_t transient_idle_ns;  /* idle transient pools released after (default 100 ms) */
	int force;                   /* bounce every mapping (confidential computing) */
	int no_transient;            /* never add transient pools (then a full pool fails) */
};

/*
 * Defaults for @mem: 2 KiB slots, 128 per mapping, one area per CPU; the
 * default pool is sized for what must bounce on this machine: about 1 MiB
 * per GiB of RAM (at least 256 KiB) when only small unaligned objects do
 * (packed small-object policy), else the classic 64 MiB capped at RAM / 16.
 */
void dmm_swiotlb_opts_default(const struct dmm_mem *mem, struct dmm_swiotlb_opts *o);

/* Set bouncing up (once). -DMM_EINVAL (bad options), -DMM_EEXIST (already),
 * or the allocator's error for the initial pool. */
int dmm_swiotlb_init(struct dmm_mem *mem, const struct dmm_swiotlb_opts *o);

/* Give @dev a restricted pool of @bytes it alone uses and never leaves.
 * dmm_device_destroy() releases it (kept, no device's, while a leaked
 * mapping of the device is in it). */
int dmm_swiotlb_restricted_pool(struct dmm_device *dev, uint64_t bytes);

/* 1 if @pa lies in a bounce pool. O(log pools). */
int dmm_swiotlb_is_bounce(struct dmm_mem *mem, dmm_phys_t pa);

struct dmm_swiotlb_stats {
	uint64_t pools, transient_pools, restricted_pools;
	uint64_t total_slots, used_slots; /* used: held by mappings */
	uint64_t cached_slots;       /* free, parked in the CPUs' caches of freed runs */
	uint64_t high_water_slots;   /* most slots out of the areas at once (mapped or cached) */
	/* mappings handed out and ended, and the bytes copied for them (a
	 * bounce undone before its map returned, as the pieces of a
	 * scatterlist whose map failed, counts in none of these; its slots
	 * count in the high-water mark: they were taken) */
	uint64_t maps, unmaps;
	uint64_t bounced_to_device, bounced_from_device; /* bytes copied */
	uint64_t fail_full;          /* maps failed for want of slots ("bounce buffer full"), once
				      * each: a deferred request that waits is no failure */
	uint64_t grow_queued, grow_done;
	uint64_t transient_created, transient_released;
	uint64_t deferred_queued, deferred_done;
};
void dmm_swiotlb_get_stats(struct dmm_mem *mem, struct dmm_swiotlb_stats *st);
/* "bounce buffer full" failures of one device (as fail_full). */
uint64_t dmm_swiotlb_device_failures(const struct dmm_device *dev);

/* Release idle transient pools now (the map/unmap paths also do it), then
 * retry the deferred mappings waiting, for which that may have made room. */
void dmm_swiotlb_trim(struct dmm_mem *mem);

/* Every pool: slot states agree with the recorded mappings and counts; the
 * index is sorted and covers exactly the live pools. 0 or -DMM_EFAULT. */
int dmm_swiotlb_check(struct dmm_mem *mem);

/*
 * A mapping that may wait for bounce slots (as FreeBSD's busdma defers a
 * load): @cb(arg, dma, err) is called once — right away if the mapping can
 * be made (or fails for another reason) and the device has no request
 * waiting, or later from an unmap that frees enough slots (or a trim that
 * releases idle transient pools, making room for one of its own). The queued
 * requests are retried in order; one that still finds no room keeps its
 * place while the later ones are tried, and a request stays queued until
 * its callback returns, so a device's requests complete in the order they
 * were made and a device waiting for its own full pool holds up no other.
 * Returns 0 if the
 * callback ran or is queued, -DMM_ENOSPC if the queue is full, -DMM_EINVAL
 * (also for a mapping that no pool the device may use could ever hold,
 * when no transient pool can be added for it: it is not queued). While a
 * request of the device is queued (its callback included),
 * dmm_device_destroy() refuses it with -DMM_EBUSY.
 *
 * A request that finds no room and waits has not failed: neither its first
 * try nor a retry that still finds no room counts as "bounce buffer full"
 * (fail_full, the device's fail_bounce_full) or, behind an IOMMU, as an
 * IOVA failure (fail_iova). A request fails, and is counted, once: refused
 * with -DMM_ENOSPC (queue full: its want of room), refused or answered
 * with -DMM_EINVAL as one that could never fit (an invalid call), or
 * answered with any other error (as that map's failure).
 */
typedef void (*dmm_dma_map_cb)(void *arg, dmm_dma_addr_t dma, int err);
int dmm_dma_map_phys_deferred(struct dmm_device *dev, dmm_phys_t pa, size_t size,
			      enum dmm_dma_dir dir, dmm_dma_map_cb cb, void *arg);

#endif

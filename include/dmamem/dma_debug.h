/* SPDX-License-Identifier: MIT */
/*
 * DMA debug: catches misuse of the DMA API.
 *
 * Switchable at run time, globally and per device (off by default). While on,
 * every mapping and coherent buffer is tracked; every unmap, sync and free is
 * checked against what was mapped. With a hardware model feeding CPU and
 * device accesses (dmm_dma_debug_cpu_access / _device_access), it also
 * catches the CPU touching a buffer the device owns, a device touching
 * memory it has no mapping for, and addresses truncated by a device's
 * address bits. Each report names the device, the buffer, the rule and the
 * caller's site; counters by rule; the last reports can be queried; a dump
 * lists everything through the platform's log hook.
 */
#ifndef DMAMEM_DMA_DEBUG_H
#define DMAMEM_DMA_DEBUG_H

#include <stddef.h>
#include <stdint.h>

#include "dma.h"

enum dmm_dma_debug_rule {
	DMM_DBG_UNMAP_NOT_MAPPED = 0, /* unmap/sync of an address never mapped */
	DMM_DBG_DOUBLE_UNMAP,         /* unmap of an address already unmapped */
	DMM_DBG_UNMAP_WRONG_SIZE,     /* unmap with a different size */
	DMM_DBG_UNMAP_WRONG_DIR,      /* unmap with a different direction */
	DMM_DBG_UNMAP_WRONG_TYPE,     /* single vs scatterlist vs coherent mixed up */
	DMM_DBG_SYNC_OUTSIDE,         /* sync range not inside the mapping */
	DMM_DBG_SYNC_WRONG_DIR,       /* sync with a direction the mapping does not allow */
	DMM_DBG_FREE_COHERENT_WRONG,  /* coherent free with the wrong size or CPU address */
	DMM_DBG_FREE_NOT_ALLOCATED,   /* coherent free of memory never allocated */
	DMM_DBG_ERROR_NOT_CHECKED,    /* mapping unmapped without dmm_dma_mapping_error() */
	DMM_DBG_LEAK_AT_REMOVE,       /* mapping or buffer left when the device went away */
	DMM_DBG_CACHELINE_SHARED,     /* non-coherent, invalidating direction, buffer shares a cache line with other data */
	DMM_DBG_CACHELINE_OVERLAP,    /* two live mappings share a cache line (non-coherent) */
	DMM_DBG_CPU_OWNED_BY_DEVICE,  /* the CPU touched a buffer the device owns */
	DMM_DBG_DEVICE_NO_MAPPING,    /* a device touched memory it has no mapping for */
	DMM_DBG_DEVICE_CPU_OWNED,     /* a device touched a mapping the CPU owns (after sync_for_cpu) */
	DMM_DBG_DEVICE_WRONG_DIR,     /* a device wrote a TO_DEVICE mapping / read a FROM_DEVICE one */
	DMM_DBG_ADDRESS_TRUNCATED,    /* an address lost bits on the device's bus */
	DMM_NR_DBG_RULES
};

const char *dmm_dma_debug_rule_name(enum dmm_dma_debug_rule r);

struct dmm_dma_debug_report {
	enum dmm_dma_debug_rule rule;
	char device[32];
	dmm_dma_addr_t dma;
	dmm_phys_t phys;
	uint64_t size;
	enum dmm_dma_dir dir;
	const void *site;          /* return address of the API call (or access site) */
	uint64_t seq;              /* report number */
	uint64_t expected;         /* rule-specific: the mapped size/direction, ... */
};

/* Global switch; allocates the tracking state the first time. -DMM_ENOMEM
 * if it cannot. */
int dmm_dma_debug_enable(struct dmm_mem *mem, int on);
/* Per device: 1 on, 0 off, -1 follow the global switch (default). */
int dmm_dma_debug_device(struct dmm_device *dev, int mode);
int dmm_dma_debug_enabled(const struct dmm_device *dev);

void dmm_dma_debug_counts(struct dmm_mem *mem, uint64_t counts[DMM_NR_DBG_RULES]);
uint64_t dmm_dma_debug_total(struct dmm_mem *mem);
/* Copy up to @max of the most recent reports (oldest first); returns how many. */
size_t dmm_dma_debug_reports(struct dmm_mem *mem, struct dmm_dma_debug_report *out, size_t max);
/* Forget counters and reports (not the tracked mappings). */
void dmm_dma_debug_reset(struct dmm_mem *mem);
/* Live tracked mappings and buffers (of @dev, or all if NULL). */
uint64_t dmm_dma_debug_active(struct dmm_mem *mem, const struct dmm_device *dev);
/* Log every live mapping and the counters through the platform's log hook. */
void dmm_dma_debug_dump(struct dmm_mem *mem);

/* Fed by a hardware model: a CPU access, a device access (@pa is the
 * physical address it reached, or DMM_PHYS_MAX if none; @truncated if the
 * bus dropped address bits; @orig the address before truncation). */
void dmm_dma_debug_cpu_access(struct dmm_mem *mem, dmm_phys_t pa, size_t len, int write,
			      const void *site);
void dmm_dma_debug_device_access(struct dmm_device *dev, dmm_dma_addr_t bus, dmm_phys_t pa,
				 size_t len, int write, int truncated, dmm_dma_addr_t orig);

#endif

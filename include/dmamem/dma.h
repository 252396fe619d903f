/* SPDX-License-Identifier: MIT */
/*
 * DMA API: devices, coherent allocations, streaming mappings, scatterlists.
 *
 * A device says what it can take as a constraint descriptor (address window
 * in bus addresses, alignment, boundary, maximum segment size, maximum
 * segments) and how bus addresses relate to physical ones (a bus offset or
 * several dma-ranges). A device may sit under a parent bus: its effective
 * descriptor is the intersection of its own and every ancestor's (lowest
 * window, strictest alignment and boundary, fewest segments).
 *
 * Ownership rules, as in every careful DMA API: after map (or
 * sync_for_device) the device owns the buffer; after unmap (or
 * sync_for_cpu) the CPU does. For non-coherent devices the library does
 * the cache maintenance each direction needs.
 */
#ifndef DMAMEM_DMA_H
#define DMAMEM_DMA_H

#include <stddef.h>
#include <stdint.h>

#include "constraint.h"
#include "mem.h"

typedef uint64_t dmm_dma_addr_t;

#define DMM_DMA_MAPPING_ERROR (~(dmm_dma_addr_t)0)
#define DMM_DMA_BIT_MASK(n) ((n) >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << (n)) - 1))
#define DMM_MAX_DMA_RANGES 4

enum dmm_dma_dir {
	DMM_DMA_BIDIRECTIONAL = 0,
	DMM_DMA_TO_DEVICE = 1,
	DMM_DMA_FROM_DEVICE = 2,
	DMM_DMA_NONE = 3,
};

/* One dma-range: CPU physical [cpu_start, cpu_start + size) appears to the
 * device at bus address dma_start. */
struct dmm_dma_range {
	dmm_phys_t cpu_start;
	dmm_dma_addr_t dma_start;
	uint64_t size;
};

/* dmm_device_desc.cma_area */
#define DMM_DEVICE_CMA_DEFAULT (-1)   /* the machine's default area */
#define DMM_DEVICE_CMA_NONE (-2)      /* never use a contiguous area */

struct dmm_device_desc {
	const char *name;          /* copied (up to 31 characters) */
	uint64_t dma_mask;         /* streaming mask: bus addresses the device can drive */
	uint64_t coherent_mask;    /* for coherent allocations (0 = dma_mask) */
	int coherent;              /* the device snoops the CPU caches */
	/* Bus addresses: dma = phys + bus_offset when nr_ranges == 0, else
	 * through the dma-ranges (phys outside every range is unreachable). */
	int64_t bus_offset;
	unsigned nr_ranges;
	struct dmm_dma_range ranges[DMM_MAX_DMA_RANGES];
	/* Further limits, in bus addresses: window [lo, hi) (hi 0 = none),
	 * alignment of coherent buffers, segment boundary, maximum segment
	 * size, maximum number of segments (0 = unlimited each). */
	struct dmm_constraint limits;
	int cma_area;              /* index, DMM_DEVICE_CMA_DEFAULT or _NONE */
	/* enum dmm_iommu_mode (iommu.h): 0 none, DMM_IOMMU_DMA translated
	 * (IOVAs below the masks, pages from anywhere), DMM_IOMMU_IDENTITY
	 * passthrough (bus = phys; the masks still apply). Behind an IOMMU,
	 * bus_offset and ranges must be 0. iommu_opts: for DMM_IOMMU_DMA
	 * (NULL = dmm_iommu_opts_default). */
	int iommu;
	const struct dmm_iommu_opts *iommu_opts;
	/* External-facing: sub-page buffers bounce (whole pages behind an
	 * IOMMU, so the device never sees neighbouring data); IOTLB always
	 * invalidated strictly. */
	int untrusted;
	int is_bus;                /* a bus: may parent other devices, maps nothing itself */
};

struct dmm_device;
struct dmm_iommu_opts;

/* Statistics of one device's DMA API use. */
struct dmm_dma_stats {
	uint64_t maps, unmaps, map_bytes, syncs;
	uint64_t sg_maps, sg_segments_in, sg_segments_out;
	uint64_t coherent_allocs, coherent_frees, coherent_bytes, coherent_from_cma;
	uint64_t cache_clean_bytes, cache_inval_bytes, cache_flush_bytes;
	uint64_t fail_range;       /* buffer out of reach (bounce layer missing) */
	uint64_t fail_nomem;       /* no memory the device can reach */
	uint64_t fail_atomic;      /* atomic coherent request, non-coherent device, no pool in reach */
	uint64_t fail_invalid;     /* rejected arguments */
	uint64_t low_pages;        /* pages below 4 GiB held by coherent allocations */
	uint64_t bounced_maps;     /* mappings handed out that went through a bounce buffer */
	uint64_t fail_bounce_full; /* "bounce buffer full" (a deferred request: only if it cannot wait, swiotlb.h) */
	uint64_t low_bounce_bytes; /* bounce-slot bytes below 4 GiB held now */
	uint64_t low_peak_bytes;   /* peak of low_pages * page size + low_bounce_bytes */
	uint64_t fail_iova;        /* IOMMU: no IOVA space below the mask (a deferred request: as above) */
	uint64_t fail_unmap;       /* unmap/free of an address that is not a mapping: refused
				    * (not counted in unmaps), as a second unmap of a bounce mapping */
};

/*
 * Create a device (or a bus, desc->is_bus) under @parent (NULL = none). Its
 * effective limits are the intersection of its own and every ancestor's.
 * Fails with -DMM_EINVAL (no name, zero mask, coherent_mask above dma_mask,
 * overlapping or empty ranges, invalid limits, parent not a bus, bad area,
 * unknown iommu mode, a bus behind an IOMMU, an IOMMU with bus offsets or
 * ranges, bad iommu_opts), -DMM_ERANGE
 * (the limits leave no reachable RAM), -DMM_ENOSPC (65535 devices live or
 * leaked: no bounce tag left, docs/DMA.md) or the page allocator's error
 * for the device's own memory (or its IOMMU domain).
 */
int dmm_device_create(struct dmm_mem *mem, const struct dmm_device_desc *desc,
		      struct dmm_device *parent, struct dmm_device **out);

/* Remove a device. Outstanding mappings and coherent buffers are leaks:
 * DMA debug reports each one; they stay allocated. -DMM_EBUSY (nothing
 * changed) if the device still has children, or deferred mappings queued
 * (dmm_dma_map_phys_deferred, swiotlb.h: until each callback has
 * returned). */
int dmm_device_destroy(struct dmm_device *dev);

const char *dmm_device_name(const struct dmm_device *dev);
struct dmm_mem *dmm_device_mem(const struct dmm_device *dev);

/* Effective limits in bus addresses (@coherent: for coherent allocations). */
int dmm_device_limits(const struct dmm_device *dev, int coherent, struct dmm_constraint *out);

/* Bus address of physical @pa for @dev, or DMM_DMA_MAPPING_ERROR (always,
 * behind a translating IOMMU: bus addresses exist only through mappings). */
dmm_dma_addr_t dmm_dma_phys_to_bus(const struct dmm_device *dev, dmm_phys_t pa);
/* Physical address behind bus address @dma (behind a translating IOMMU:
 * through its page table); -DMM_ERANGE if none. */
int dmm_dma_bus_to_phys(const struct dmm_device *dev, dmm_dma_addr_t dma, dmm_phys_t *pa);

void dmm_device_get_stats(const struct dmm_device *dev, struct dmm_dma_stats *st);

/* ---- coherent allocations ---------------------------------------------------- */

/*
 * Allocate @size bytes the device can reach through its coherent mask,
 * zeroed. The mask and limits become a physical constraint; large requests
 * come from the device's contiguous area when it lies within reach. For a
 * non-coherent device the buffer is written back from the caches and its
 * linear mapping made uncached. @gfp: DMM_GFP_ATOMIC (cannot sleep).
 * Fails with -DMM_EINVAL, -DMM_ENOMEM / -DMM_EWMARK (nothing reachable is
 * free), -DMM_ERANGE (no RAM in reach), -DMM_ENOTSUP (atomic request for a
 * non-coherent device and no atomic pool within its reach: see
 * dma_pool_atomic.h; such requests are served from those pools). Nothing is
 * left allocated on failure.
 */
int dmm_dma_alloc_coherent(struct dmm_device *dev, size_t size, unsigned gfp, void **cpu,
			   dmm_dma_addr_t *dma);

/* Free it. -DMM_EINVAL / -DMM_ENOENT (wrong size or address: nothing
 * freed; DMA debug reports it); -DMM_EBUSY (a page of it is pinned: the
 * buffer stays allocated as it was, uncached for a non-coherent device,
 * behind an IOMMU still mapped at its IOVA; free it again after the unpin).
 * A buffer served from a coherent atomic pool is never pinned: the pool's
 * chunks are dmamem's own memory, whose pages refuse every pin
 * (dmm_page_pin: -DMM_EPERM). */
int dmm_dma_free_coherent(struct dmm_device *dev, size_t size, void *cpu, dmm_dma_addr_t dma);

/* ---- streaming mappings -------------------------------------------------------- */

/*
 * Map [pa, pa + size) for @dir. Returns the bus address, or
 * DMM_DMA_MAPPING_ERROR; dmm_dma_mapping_error() then says why
 * (-DMM_EINVAL, -DMM_ERANGE: out of the device's reach and no bounce
 * buffers set up, -DMM_ENOSPC: bounce buffers full). A buffer that must
 * bounce (see swiotlb.h) is copied to a bounce slot when the direction
 * needs it. Non-coherent devices: the CPU caches are cleaned for the range.
 */
dmm_dma_addr_t dmm_dma_map_phys(struct dmm_device *dev, dmm_phys_t pa, size_t size,
				enum dmm_dma_dir dir);
dmm_dma_addr_t dmm_dma_map_page(struct dmm_device *dev, dmm_pfn_t pfn, size_t offset, size_t size,
				enum dmm_dma_dir dir);
/* A CPU pointer into managed RAM (needs the platform's virt_to_phys). */
dmm_dma_addr_t dmm_dma_map_single(struct dmm_device *dev, const void *cpu, size_t size,
				  enum dmm_dma_dir dir);

/* 0 if @dma is a valid mapping address, else the negative reason of the
 * failed map that returned it. Checking marks the mapping as checked. */
int dmm_dma_mapping_error(struct dmm_device *dev, dmm_dma_addr_t dma);

/* Unmap (ownership returns to the CPU: caches invalidated for FROM_DEVICE
 * and BIDIRECTIONAL on non-coherent devices). */
void dmm_dma_unmap_phys(struct dmm_device *dev, dmm_dma_addr_t dma, size_t size, enum dmm_dma_dir dir);
#define dmm_dma_unmap_page dmm_dma_unmap_phys
#define dmm_dma_unmap_single dmm_dma_unmap_phys

void dmm_dma_sync_single_for_cpu(struct dmm_device *dev, dmm_dma_addr_t dma, size_t size,
				 enum dmm_dma_dir dir);
void dmm_dma_sync_single_for_device(struct dmm_device *dev, dmm_dma_addr_t dma, size_t size,
				    enum dmm_dma_dir dir);

/* ---- scatterlists -------------------------------------------------------------- */

struct dmm_sg {
	dmm_phys_t phys;            /* CPU side: a physically contiguous piece */
	uint32_t length;
	uint32_t dma_length;        /* after mapping: length of the DMA segment starting here (0 = merged into an earlier one) */
	dmm_dma_addr_t dma_address; /* after mapping */
};

void dmm_sg_init(struct dmm_sg *sg, unsigned nents);
void dmm_sg_set_phys(struct dmm_sg *sg, dmm_phys_t phys, uint32_t length);
void dmm_sg_set_page(struct dmm_sg *sg, dmm_pfn_t pfn, uint32_t offset, uint32_t length);
/* Total CPU bytes of a list. */
uint64_t dmm_sg_bytes(const struct dmm_sg *sg, unsigned nents);

/*
 * Map @nents pieces. Adjacent pieces whose bus addresses are contiguous are
 * merged while the segment stays within the device's maximum segment size
 * and does not cross its segment boundary. Returns the number of DMA
 * segments (the first ones of the list carry dma_address/dma_length), or
 * -DMM_EINVAL (bad list, a piece crossing the boundary, more segments than
 * the device takes), -DMM_ERANGE (a piece out of reach), -DMM_ENOSPC (a
 * piece must bounce and the bounce buffers are full). Nothing stays mapped
 * on failure.
 */
int dmm_dma_map_sg(struct dmm_device *dev, struct dmm_sg *sg, unsigned nents, enum dmm_dma_dir dir);
/* @nents: the count passed to map_sg (not its return value). A list the
 * library can tell is not mapped (nents 0; a bounced piece whose bounce
 * slots hold no mapping any more, as after its unmap; behind an IOMMU, any
 * list that is not one mapping of its domain) is refused: nothing changes,
 * and it counts as a refused unmap (fail_unmap), not as an unmap. A piece
 * whose length changed since the map names another size, as a single
 * unmap may (DMA debug reports it): a bounced piece's mapping still ends,
 * copying back at most its bytes; behind an IOMMU a list whose layout no
 * longer matches its mapping is refused. */
void dmm_dma_unmap_sg(struct dmm_device *dev, struct dmm_sg *sg, unsigned nents, enum dmm_dma_dir dir);
void dmm_dma_sync_sg_for_cpu(struct dmm_device *dev, struct dmm_sg *sg, unsigned nents,
			     enum dmm_dma_dir dir);
void dmm_dma_sync_sg_for_device(struct dmm_device *dev, struct dmm_sg *sg, unsigned nents,
				enum dmm_dma_dir dir);

#endif

/* SPDX-License-Identifier: MIT */
#include <dmamem/error.h>
#include <dmamem/machine.h>
#include <dmamem/platform.h>

#include "lib/bits.h"

void dmm_machine_defaults(struct dmm_machine *m)
{
	if (!m)
		return;
	dmm_memset(m, 0, sizeof(*m));
	m->page_size = 4096;
	m->cache_line = 64;
	m->dma_min_align = 64;
	m->dma_limit = 0;
	m->dma32_limit = (dmm_phys_t)4 << 30;
	m->lowmem_policy = DMM_LOWMEM_FALLBACK;
	m->watermark_scale_factor = 10;
	/* Linux's sysctl_lowmem_reserve_ratio: DMA 256, DMA32 256, NORMAL 32. */
	m->lowmem_reserve_ratio[DMM_ZONE_DMA] = 256;
	m->lowmem_reserve_ratio[DMM_ZONE_DMA32] = 256;
	m->lowmem_reserve_ratio[DMM_ZONE_NORMAL] = 32;
	m->cma_policy = DMM_CMA_POLICY_HALF;
	m->longterm_pin_migrate = 1;
}

/* Whole pages of a region: [align_up(base), align_down(base + size)). */
static uint64_t region_pages(const struct dmm_region *r)
{
	uint64_t s = dmm_align_up(r->base, DMM_PAGE_SIZE);
	uint64_t e = dmm_align_down(r->base + r->size, DMM_PAGE_SIZE);
	return e > s ? (e - s) >> DMM_PAGE_SHIFT : 0;
}

static int regions_overlap(const struct dmm_region *a, const struct dmm_region *b)
{
	return a->base < b->base + b->size && b->base < a->base + a->size;
}

static int inside_ram(const struct dmm_machine *m, const struct dmm_region *r)
{
	for (unsigned i = 0; i < m->nr_ram; i++)
		if (r->base >= m->ram[i].base && r->base + r->size <= m->ram[i].base + m->ram[i].size)
			return 1;
	return 0;
}

int dmm_machine_validate(const struct dmm_machine *m)
{
	uint64_t pages = 0;

	if (!m || m->page_size != DMM_PAGE_SIZE)
		return -DMM_EINVAL;
	if (m->nr_ram == 0 || m->nr_ram > DMM_MAX_REGIONS || m->nr_reserved > DMM_MAX_REGIONS)
		return -DMM_EINVAL;
	if (!dmm_is_pow2(m->cache_line) || !dmm_is_pow2(m->dma_min_align) ||
	    m->dma_min_align < m->cache_line)
		return -DMM_EINVAL;
	if (m->dma_limit && m->dma32_limit && m->dma32_limit < m->dma_limit)
		return -DMM_EINVAL;
	/* Zone limits fall on pageblock (2 MiB) boundaries so no pageblock is
	 * shared by two zones. */
	if ((m->dma_limit & ((2u << 20) - 1)) || (m->dma32_limit & ((2u << 20) - 1)))
		return -DMM_EINVAL;
	for (unsigned i = 0; i < m->nr_ram; i++) {
		const struct dmm_region *r = &m->ram[i];
		if (r->size == 0 || r->base + r->size < r->base)
			return -DMM_EINVAL;
		/* pfns must fit the 52-bit physical space of real MMUs */
		if (r->base + r->size > ((uint64_t)1 << 52))
			return -DMM_EINVAL;
		for (unsigned j = 0; j < i; j++)
			if (regions_overlap(r, &m->ram[j]))
				return -DMM_EINVAL;
		pages += region_pages(r);
	}
	if (pages == 0)
		return -DMM_EINVAL;
	/* Range-index summaries are 32-bit page counts: keep the span below 8 TiB. */
	{
		dmm_phys_t lo = DMM_PHYS_MAX, hi = 0;
		for (unsigned i = 0; i < m->nr_ram; i++) {
			lo = dmm_min64(lo, m->ram[i].base);
			hi = dmm_max64(hi, m->ram[i].base + m->ram[i].size);
		}
		if (hi - lo > ((uint64_t)1 << 43))
			return -DMM_EINVAL;
	}
	if ((unsigned)m->lowmem_policy > DMM_LOWMEM_RESERVED)
		return -DMM_EINVAL;
	/* a refill moves a batch under the zone lock on one request; a cache
	 * keeps up to high pages away from every other CPU */
	if (m->pcp_batch > DMM_PCP_BATCH_MAX || m->pcp_high > DMM_PCP_HIGH_MAX)
		return -DMM_EINVAL;
	if (m->nr_cma > DMM_MAX_CMA_AREAS || (unsigned)m->cma_policy > DMM_CMA_POLICY_NEVER)
		return -DMM_EINVAL;
	if ((unsigned)m->kmalloc_policy > DMM_KMALLOC_PACKED)
		return -DMM_EINVAL;
	{
		unsigned defaults = 0;
		for (unsigned i = 0; i < m->nr_cma; i++) {
			const struct dmm_cma_decl *a = &m->cma[i];
			if (a->size == 0 || a->size > ((uint64_t)1 << 43))
				return -DMM_EINVAL;
			if (a->align && !dmm_is_pow2(a->align))
				return -DMM_EINVAL;
			if (a->base & ((2u << 20) - 1))
				return -DMM_EINVAL;
			if (a->name[0] == '\0' || a->name[DMM_CMA_NAME_MAX - 1] != '\0')
				return -DMM_EINVAL;
			for (unsigned j = 0; j < i; j++) {
				const char *x = a->name, *y = m->cma[j].name;
				while (*x && *x == *y) {
					x++;
					y++;
				}
				if (*x == *y)
					return -DMM_EINVAL; /* duplicate name */
			}
			defaults += a->is_default ? 1u : 0u;
		}
		if (defaults > 1)
			return -DMM_EINVAL;
	}
	for (unsigned i = 0; i < m->nr_reserved; i++) {
		const struct dmm_region *r = &m->reserved[i];
		if (r->size == 0 || r->base + r->size < r->base || !inside_ram(m, r))
			return -DMM_EINVAL;
	}
	return 0;
}

uint64_t dmm_machine_ram_bytes(const struct dmm_machine *m)
{
	uint64_t pages = 0;
	if (!m)
		return 0;
	for (unsigned i = 0; i < m->nr_ram && i < DMM_MAX_REGIONS; i++)
		pages += region_pages(&m->ram[i]);
	return pages << DMM_PAGE_SHIFT;
}

int dmm_platform_validate(const struct dmm_platform *p)
{
	if (!p || !p->lock_init || !p->lock || !p->unlock || !p->phys_to_virt)
		return -DMM_EINVAL;
	if (p->nr_cpus == 0 || p->nr_cpus > 1024)
		return -DMM_EINVAL;
	if (!p->cpu_enter != !p->cpu_exit || !p->cpu_enter != !p->cpu_sync)
		return -DMM_EINVAL; /* a section without its exit or its sync */
	if (p->cpu_thread_slots > 1 || (p->cpu_thread_slots && p->cpu_enter))
		return -DMM_EINVAL;
#ifndef DMM_HAVE_THREAD_POINTER
	if (p->cpu_thread_slots)
		return -DMM_ENOTSUP;
#endif
	/* a linear map of whole pages: the core translates a page's address
	 * inside it without a call, so a page it holds only in part would be
	 * translated past its end */
	if (p->linear_size && (!p->linear_virt || p->linear_phys + p->linear_size < p->linear_phys ||
			       ((p->linear_phys | p->linear_size | (uintptr_t)p->linear_virt) & (DMM_PAGE_SIZE - 1))))
		return -DMM_EINVAL;
	return 0;
}

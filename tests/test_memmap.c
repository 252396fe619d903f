/* SPDX-License-Identifier: MIT */
/* Physical memory map: pfn lookup, page descriptors, metadata, zones. */
#include "tu.h"

/* Is @pfn a whole page inside one of @m's RAM regions? */
static int is_ram(const struct dmm_machine *m, dmm_pfn_t pfn)
{
	dmm_phys_t pa = dmm_pfn_to_phys(pfn);
	for (unsigned i = 0; i < m->nr_ram; i++)
		if (pa >= m->ram[i].base && pa + DMM_PAGE_SIZE <= m->ram[i].base + m->ram[i].size)
			return 1;
	return 0;
}

static int is_fw_reserved(const struct dmm_machine *m, dmm_pfn_t pfn)
{
	dmm_phys_t pa = dmm_pfn_to_phys(pfn);
	for (unsigned i = 0; i < m->nr_reserved; i++)
		if (pa + DMM_PAGE_SIZE > m->reserved[i].base &&
		    pa < m->reserved[i].base + m->reserved[i].size)
			return 1;
	return 0;
}

static enum dmm_zone_type expected_type(const struct dmm_machine *m, dmm_pfn_t pfn)
{
	dmm_phys_t pa = dmm_pfn_to_phys(pfn);
	if (m->dma_limit && pa < m->dma_limit)
		return DMM_ZONE_DMA;
	if (m->dma32_limit && pa < m->dma32_limit)
		return DMM_ZONE_DMA32;
	return DMM_ZONE_NORMAL;
}

/*
 * Walk every pfn from 0 to a little past the last RAM page and check the
 * map against the description: RAM has a descriptor with the right pfn and
 * zone and a distinct, writable CPU address; holes have neither. Checks the
 * totals reported by dmm_mem_get_info and the zones against each other.
 */
static void check_map(const struct dmm_machine *m)
{
	struct tu_env *e = tu_env_create(m, 1);
	struct dmm_mem_info *in = &e->info;
	uint64_t ram = 0, reserved = 0, fw = 0, present[DMM_NR_ZONE_TYPES] = { 0 };
	dmm_pfn_t lo = UINT64_MAX, hi = 0;
	struct dmm_zone_info zi[DMM_NR_ZONE_TYPES];
	unsigned nz = dmm_mem_nr_zones(e->mem);
	int zidx[DMM_NR_ZONE_TYPES];

	assert_true(nz >= 1 && nz <= DMM_NR_ZONE_TYPES);
	assert_int_equal(nz, in->nr_zones);
	for (unsigned z = 0; z < nz; z++) {
		assert_ok(dmm_zone_get_info(e->mem, z, &zi[z]));
		assert_int_equal(dmm_zone_index(e->mem, zi[z].type), z);
		assert_string_equal(zi[z].name, dmm_zone_name(zi[z].type));
		if (z)
			assert_true(zi[z].start_pfn >= zi[z - 1].end_pfn && zi[z].type > zi[z - 1].type);
	}
	for (int t = 0; t < DMM_NR_ZONE_TYPES; t++)
		zidx[t] = dmm_zone_index(e->mem, (enum dmm_zone_type)t);

	for (unsigned i = 0; i < m->nr_ram; i++) {
		dmm_pfn_t s = (m->ram[i].base + DMM_PAGE_SIZE - 1) >> DMM_PAGE_SHIFT;
		dmm_pfn_t en = (m->ram[i].base + m->ram[i].size) >> DMM_PAGE_SHIFT;
		if (en > s) {
			lo = s < lo ? s : lo;
			hi = en > hi ? en : hi;
		}
	}
	assert_int_equal(in->min_pfn, lo);
	assert_int_equal(in->max_pfn, hi);

	/* every pfn below the map, the whole span and a margin above */
	dmm_pfn_t first = lo > 4096 ? lo - 4096 : 0;
	for (dmm_pfn_t pfn = first; pfn < hi + 4096; pfn++) {
		struct dmm_page *pg = dmm_pfn_to_page(e->mem, pfn);
		void *v = dmm_pfn_to_virt(e->mem, pfn);
		if (!is_ram(m, pfn)) {
			if (pg || v) {
				print_error("hole pfn %#llx has page %p virt %p\n",
					    (unsigned long long)pfn, (void *)pg, v);
				fail();
			}
			continue;
		}
		ram++;
		if (!pg || !v) {
			print_error("RAM pfn %#llx has page %p virt %p\n", (unsigned long long)pfn,
				    (void *)pg, v);
			fail();
		}
		assert_int_equal(pg->pfn, pfn);
		assert_int_equal(dmm_page_to_pfn(pg), pfn);
		/* page belongs to the zone of its address */
		enum dmm_zone_type t = expected_type(m, pfn);
		assert_true(zidx[t] >= 0);
		assert_int_equal(pg->zone, zidx[t]);
		assert_true(pfn >= zi[pg->zone].start_pfn && pfn < zi[pg->zone].end_pfn);
		present[t]++;
		if (pg->state == DMM_PAGE_RESERVED)
			reserved++;
		if (is_fw_reserved(m, pfn)) {
			fw++;
			assert_int_equal(pg->state, DMM_PAGE_RESERVED);
		}
		assert_true(pg->state == DMM_PAGE_RESERVED || pg->state == DMM_PAGE_FREE ||
			    pg->state == DMM_PAGE_TAIL);
		if (pg->state == DMM_PAGE_FREE) {
			assert_true(pg->order <= DMM_MAX_ORDER);
			assert_int_equal(pfn & ((1ull << pg->order) - 1), 0);
		}
	}
	/* far away pfns */
	assert_null(dmm_pfn_to_page(e->mem, (dmm_pfn_t)1 << 40));
	assert_null(dmm_pfn_to_page(e->mem, UINT64_MAX));
	assert_null(dmm_pfn_to_virt(e->mem, UINT64_MAX >> 12));

	assert_int_equal(ram, in->ram_pages);
	assert_int_equal(ram << DMM_PAGE_SHIFT, dmm_machine_ram_bytes(m));
	assert_int_equal(reserved, in->reserved_pages);
	assert_int_equal(in->managed_pages + in->reserved_pages, in->ram_pages);
	assert_true(in->reserved_pages >= in->metadata_pages + fw);
	assert_true(in->metadata_pages > 0);
	assert_true(in->metadata_bytes > 0);
	assert_true(in->metadata_pages * DMM_PAGE_SIZE >= in->metadata_bytes);
	assert_true(in->metadata_bytes >= in->ram_pages * in->page_desc_size);
	assert_int_equal(in->page_desc_size, sizeof(struct dmm_page));
	assert_true(in->page_desc_size <= 64);
	assert_int_equal(in->nr_cpus, 1);

	/* zones: present pages and managed/free totals */
	uint64_t managed = 0;
	for (unsigned z = 0; z < nz; z++) {
		assert_int_equal(zi[z].present, present[zi[z].type]);
		assert_int_equal(zi[z].spanned, zi[z].end_pfn - zi[z].start_pfn);
		assert_true(zi[z].present <= zi[z].spanned);
		assert_true(zi[z].managed <= zi[z].present);
		/* a fresh map: everything managed is free, nothing is cached */
		assert_int_equal(zi[z].free, zi[z].managed);
		assert_int_equal(zi[z].pcp, 0);
		assert_true(zi[z].wmark_min <= zi[z].wmark_low && zi[z].wmark_low <= zi[z].wmark_high);
		managed += zi[z].managed;
		/* zone limits come from the description */
		if (zi[z].type == DMM_ZONE_DMA)
			assert_true(dmm_pfn_to_phys(zi[z].end_pfn) <= m->dma_limit);
		if (zi[z].type == DMM_ZONE_DMA32) {
			assert_true(dmm_pfn_to_phys(zi[z].end_pfn) <= m->dma32_limit);
			assert_true(dmm_pfn_to_phys(zi[z].start_pfn) >= m->dma_limit);
		}
		if (zi[z].type == DMM_ZONE_NORMAL)
			assert_true(dmm_pfn_to_phys(zi[z].start_pfn) >= m->dma32_limit);
		uint64_t by_order = 0;
		for (unsigned o = 0; o <= DMM_MAX_ORDER; o++)
			by_order += zi[z].free_blocks[o] << o;
		assert_int_equal(by_order, zi[z].free);
	}
	for (int t = 0; t < DMM_NR_ZONE_TYPES; t++)
		if (!present[t])
			assert_rc(zidx[t], -DMM_ENOENT); /* empty zones are absent */
	assert_int_equal(managed, in->managed_pages);
	assert_int_equal(dmm_mem_free_pages(e->mem), in->managed_pages);
	assert_checks(e->mem);

	/* the machine and platform are kept */
	assert_int_equal(dmm_mem_machine(e->mem)->nr_ram, m->nr_ram);
	assert_non_null(dmm_mem_platform(e->mem));
	tu_env_destroy(e);
}

static void test_map_holes(void **state)
{
	struct dmm_machine m;
	(void)state;
	tu_machine_holes(&m);
	check_map(&m);
}

static void test_map_high_base(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	(void)state;
	/* an arm64 phone in miniature: RAM from 0x80000000, across 4 GiB */
	tu_machine(&m, "high-base");
	tu_add_ram(&m, 0x80000000ull, 24 * MiB);
	tu_add_ram(&m, 0xfe000000ull, 48 * MiB); /* straddles the 4 GiB line */
	check_map(&m);
	e = tu_env_create(&m, 1);
	assert_int_equal(e->info.min_pfn, 0x80000);
	assert_null(dmm_pfn_to_page(e->mem, 0x7ffff));
	assert_null(dmm_pfn_to_page(e->mem, 0));
	assert_non_null(dmm_pfn_to_page(e->mem, 0x80000));
	assert_int_equal(dmm_mem_nr_zones(e->mem), 2);
	assert_rc(dmm_zone_index(e->mem, DMM_ZONE_DMA), -DMM_ENOENT);
	assert_int_equal(dmm_zone_index(e->mem, DMM_ZONE_DMA32), 0);
	assert_int_equal(dmm_zone_index(e->mem, DMM_ZONE_NORMAL), 1);
	tu_env_destroy(e);
}

static void test_map_unaligned_regions(void **state)
{
	struct dmm_machine m;
	(void)state;
	/* regions with partial pages at either end, many small holes */
	tu_machine(&m, "ragged");
	tu_add_ram(&m, 0x1800, 0x20000);
	for (unsigned i = 0; i < 12; i++)
		tu_add_ram(&m, 8 * MiB + i * 3 * MiB + 0x10, 2 * MiB - 0x20);
	tu_add_reserved(&m, 0x4000, 0x2000);
	m.dma_limit = 16 * MiB;
	check_map(&m);
}

static void test_zones_only_normal(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct dmm_zone_info zi;
	(void)state;
	tu_machine(&m, "above-4g");
	tu_add_ram(&m, 6 * GiB, 32 * MiB);
	tu_add_ram(&m, 5 * GiB, 16 * MiB);
	m.dma_limit = 16 * MiB;
	check_map(&m);
	e = tu_env_create(&m, 1);
	assert_int_equal(dmm_mem_nr_zones(e->mem), 1);
	assert_rc(dmm_zone_index(e->mem, DMM_ZONE_DMA), -DMM_ENOENT);
	assert_rc(dmm_zone_index(e->mem, DMM_ZONE_DMA32), -DMM_ENOENT);
	assert_int_equal(dmm_zone_index(e->mem, DMM_ZONE_NORMAL), 0);
	assert_ok(dmm_zone_get_info(e->mem, 0, &zi));
	assert_int_equal(zi.type, DMM_ZONE_NORMAL);
	assert_string_equal(zi.name, "Normal");
	assert_int_equal(zi.present, 48 * MiB / DMM_PAGE_SIZE);
	assert_int_equal(zi.start_pfn, (5 * GiB) >> DMM_PAGE_SHIFT);
	assert_int_equal(zi.end_pfn, (6 * GiB + 32 * MiB) >> DMM_PAGE_SHIFT);
	assert_rc(dmm_zone_get_info(e->mem, 1, &zi), -DMM_EINVAL);
	tu_env_destroy(e);
}

static void test_zones_three(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	struct dmm_zone_info zi;
	(void)state;
	tu_machine_holes(&m);
	e = tu_env_create(&m, 1);
	assert_int_equal(dmm_mem_nr_zones(e->mem), 3);
	assert_ok(dmm_zone_get_info(e->mem, 0, &zi));
	assert_int_equal(zi.type, DMM_ZONE_DMA);
	assert_string_equal(zi.name, "DMA");
	assert_int_equal(zi.present, 0x9e + (15 * MiB >> DMM_PAGE_SHIFT));
	assert_true(zi.end_pfn <= (16 * MiB >> DMM_PAGE_SHIFT));
	assert_ok(dmm_zone_get_info(e->mem, 1, &zi));
	assert_int_equal(zi.type, DMM_ZONE_DMA32);
	assert_string_equal(zi.name, "DMA32");
	assert_int_equal(zi.present, 24 * MiB >> DMM_PAGE_SHIFT);
	assert_ok(dmm_zone_get_info(e->mem, 2, &zi));
	assert_int_equal(zi.type, DMM_ZONE_NORMAL);
	assert_string_equal(zi.name, "Normal");
	assert_int_equal(zi.present, 24 * MiB >> DMM_PAGE_SHIFT);
	/* firmware-reserved pages are not managed */
	assert_int_equal(dmm_pfn_to_page(e->mem, (2 * MiB) >> DMM_PAGE_SHIFT)->state,
			 DMM_PAGE_RESERVED);
	tu_env_destroy(e);

	/* without dma_limit there is no DMA zone; without dma32_limit no DMA32 */
	m.dma_limit = 0;
	check_map(&m);
	e = tu_env_create(&m, 1);
	assert_int_equal(dmm_mem_nr_zones(e->mem), 2);
	assert_rc(dmm_zone_index(e->mem, DMM_ZONE_DMA), -DMM_ENOENT);
	tu_env_destroy(e);
	m.dma_limit = 16 * MiB;
	m.dma32_limit = 0;
	check_map(&m);
	e = tu_env_create(&m, 1);
	assert_int_equal(dmm_mem_nr_zones(e->mem), 2);
	assert_rc(dmm_zone_index(e->mem, DMM_ZONE_DMA32), -DMM_ENOENT);
	assert_ok(dmm_zone_get_info(e->mem, 1, &zi));
	assert_int_equal(zi.type, DMM_ZONE_NORMAL);
	assert_int_equal(zi.present, 48 * MiB >> DMM_PAGE_SHIFT);
	tu_env_destroy(e);

	/* a 30-bit low zone (Raspberry Pi 4 style) with no RAM below 16 MiB */
	tu_machine(&m, "rpi-ish");
	tu_add_ram(&m, 32 * MiB, 64 * MiB);
	tu_add_ram(&m, 1 * GiB - 16 * MiB, 32 * MiB);
	m.dma_limit = 1 * GiB;
	check_map(&m);
	e = tu_env_create(&m, 1);
	assert_int_equal(dmm_mem_nr_zones(e->mem), 2);
	assert_ok(dmm_zone_get_info(e->mem, 0, &zi));
	assert_int_equal(zi.type, DMM_ZONE_DMA);
	assert_int_equal(zi.present, 80 * MiB >> DMM_PAGE_SHIFT);
	tu_env_destroy(e);

	/* RAM only above dma_limit but below 4 GiB: DMA absent */
	tu_machine(&m, "no-low");
	tu_add_ram(&m, 64 * MiB, 64 * MiB);
	m.dma_limit = 16 * MiB;
	check_map(&m);
	e = tu_env_create(&m, 1);
	assert_int_equal(dmm_mem_nr_zones(e->mem), 1);
	assert_int_equal(dmm_zone_index(e->mem, DMM_ZONE_DMA32), 0);
	tu_env_destroy(e);
}

static void test_metadata_reserved(void **state)
{
	struct dmm_machine m;
	struct tu_env *e;
	uint64_t meta = 0;
	(void)state;
	/* one region: every reserved page is metadata; it sits at the top */
	tu_machine(&m, "flat");
	tu_add_ram(&m, 0, 64 * MiB);
	e = tu_env_create(&m, 2);
	for (dmm_pfn_t pfn = 0; pfn < e->info.max_pfn; pfn++)
		if (dmm_pfn_to_page(e->mem, pfn)->state == DMM_PAGE_RESERVED)
			meta++;
	assert_int_equal(meta, e->info.metadata_pages);
	assert_int_equal(e->info.reserved_pages, e->info.metadata_pages);
	assert_int_equal(e->info.nr_cpus, 2);
	/* the metadata is carved from the top of RAM */
	for (dmm_pfn_t pfn = e->info.max_pfn - meta; pfn < e->info.max_pfn; pfn++)
		assert_int_equal(dmm_pfn_to_page(e->mem, pfn)->state, DMM_PAGE_RESERVED);
	/* and the page descriptors live inside it */
	{
		uintptr_t d = (uintptr_t)dmm_pfn_to_page(e->mem, 0);
		uintptr_t lo = (uintptr_t)dmm_pfn_to_virt(e->mem, e->info.max_pfn - meta);
		uintptr_t hi = (uintptr_t)dmm_pfn_to_virt(e->mem, e->info.max_pfn - 1) + DMM_PAGE_SIZE;
		assert_true(d >= lo && d < hi);
	}
	tu_env_destroy(e);
}

static void test_create_bad(void **state)
{
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_mem *mem = NULL;
	struct dmm_platform p;
	(void)state;
	tu_machine(&m, "ok");
	tu_add_ram(&m, 0, 16 * MiB);
	assert_ok(dmm_hosted_create(&m, 1, DMM_LOG_ERR, &h));
	p = *dmm_hosted_platform(h);

	/* invalid description */
	m.page_size = 8192;
	assert_rc(dmm_mem_create(&m, &p, &mem), -DMM_EINVAL);
	assert_null(mem);
	m.page_size = 4096;
	/* invalid platform */
	p.lock = NULL;
	assert_rc(dmm_mem_create(&m, &p, &mem), -DMM_EINVAL);
	p = *dmm_hosted_platform(h);
	assert_rc(dmm_mem_create(NULL, &p, &mem), -DMM_EINVAL);
	assert_rc(dmm_mem_create(&m, NULL, &mem), -DMM_EINVAL);
	assert_rc(dmm_mem_create(&m, &p, NULL), -DMM_EINVAL);
	dmm_hosted_destroy(h);

	/* metadata does not fit: a single page of RAM */
	tu_machine(&m, "tiny");
	tu_add_ram(&m, 0, 4096);
	assert_ok(dmm_hosted_create(&m, 1, DMM_LOG_ERR, &h));
	p = *dmm_hosted_platform(h);
	assert_rc(dmm_mem_create(&m, &p, &mem), -DMM_ENOMEM);
	dmm_hosted_destroy(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_map_holes),
		cmocka_unit_test(test_map_high_base),
		cmocka_unit_test(test_map_unaligned_regions),
		cmocka_unit_test(test_zones_only_normal),
		cmocka_unit_test(test_zones_three),
		cmocka_unit_test(test_metadata_reserved),
		cmocka_unit_test(test_create_bad),
	};
	return cmocka_run_group_tests_name("memmap", tests, NULL, NULL);
}

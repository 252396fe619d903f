/* SPDX-License-Identifier: MIT */
/*
 * The linux-6.18-guest profile against the real kernel's zoneinfo.txt
 * (profiles/data/linux-6.18-guest/, path from CMake as DMM_GUEST_ZONEINFO):
 * zone spans and page counts, watermarks from dmm_calc_watermarks() on the
 * kernel's own managed counts, and lowmem_reserve protection.
 */
#include "tu.h"

#include "profile.h"

#ifndef DMM_GUEST_ZONEINFO
#error "DMM_GUEST_ZONEINFO must name profiles/data/linux-6.18-guest/zoneinfo.txt"
#endif

#define ZI_MAX 8

struct kzone {
	char name[16];
	uint64_t start_pfn, spanned, present, managed, min, low, high;
	uint64_t protection[ZI_MAX];
	unsigned nr_protection;
	int have_start;
};

/* Parse the per-zone blocks of /proc/zoneinfo. */
static unsigned parse_zoneinfo(const char *path, struct kzone *z, unsigned max)
{
	FILE *f = fopen(path, "r");
	char line[512];
	int n = -1;
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		char name[16];
		unsigned long long v;
		int node;
		if (sscanf(line, "Node %d, zone %15s", &node, name) == 2) {
			n++;
			assert_true((unsigned)n < max);
			memset(&z[n], 0, sizeof(z[n]));
			snprintf(z[n].name, sizeof(z[n].name), "%s", name);
			continue;
		}
		if (n < 0)
			continue;
		if (sscanf(line, " pages free %llu", &v) == 1)
			continue;
		if (sscanf(line, " min %llu", &v) == 1)
			z[n].min = v;
		else if (sscanf(line, " low %llu", &v) == 1)
			z[n].low = v;
		else if (sscanf(line, " high %llu", &v) == 1)
			z[n].high = v;
		else if (sscanf(line, " spanned %llu", &v) == 1)
			z[n].spanned = v;
		else if (sscanf(line, " present %llu", &v) == 1)
			z[n].present = v;
		else if (sscanf(line, " managed %llu", &v) == 1)
			z[n].managed = v;
		else if (sscanf(line, " start_pfn: %llu", &v) == 1) {
			z[n].start_pfn = v;
			z[n].have_start = 1;
		} else if (strstr(line, "protection: (")) {
			char *p = strchr(line, '(') + 1;
			while (z[n].nr_protection < ZI_MAX) {
				char *end;
				unsigned long long x = strtoull(p, &end, 10);
				if (end == p)
					break;
				z[n].protection[z[n].nr_protection++] = x;
				p = end;
				while (*p == ',' || *p == ' ')
					p++;
			}
		}
	}
	fclose(f);
	return (unsigned)(n + 1);
}

static int type_of(const char *name)
{
	if (!strcmp(name, "DMA"))
		return DMM_ZONE_DMA;
	if (!strcmp(name, "DMA32"))
		return DMM_ZONE_DMA32;
	if (!strcmp(name, "Normal"))
		return DMM_ZONE_NORMAL;
	return -1;
}

/* Linux's setup_per_zone_lowmem_reserve() for zones indexed by type. */
static void linux_protection(const uint64_t managed[DMM_NR_ZONE_TYPES], const uint32_t ratio[DMM_NR_ZONE_TYPES],
			     uint64_t prot[DMM_NR_ZONE_TYPES][DMM_NR_ZONE_TYPES])
{
	for (unsigned i = 0; i < DMM_NR_ZONE_TYPES; i++) {
		uint64_t above = 0;
		int clear = !ratio[i] || !managed[i];
		for (unsigned j = 0; j < DMM_NR_ZONE_TYPES; j++)
			prot[i][j] = 0;
		for (unsigned j = i + 1; j < DMM_NR_ZONE_TYPES; j++) {
			above += managed[j];
			prot[i][j] = clear ? 0 : above / ratio[i];
		}
	}
}

static void test_guest_zones(void **state)
{
	struct kzone kz[ZI_MAX];
	struct dmm_machine m;
	char err[256] = "";
	struct tu_env *e;
	unsigned nk, matched = 0;
	uint64_t kmanaged[DMM_NR_ZONE_TYPES] = { 0 }, mn[DMM_NR_ZONE_TYPES], lo[DMM_NR_ZONE_TYPES],
		 hi[DMM_NR_ZONE_TYPES];
	uint64_t kprot[DMM_NR_ZONE_TYPES][DMM_NR_ZONE_TYPES], oprot[DMM_NR_ZONE_TYPES][DMM_NR_ZONE_TYPES];
	uint64_t omanaged[DMM_NR_ZONE_TYPES] = { 0 };
	struct kzone *byt[DMM_NR_ZONE_TYPES] = { NULL };
	(void)state;

	nk = parse_zoneinfo(DMM_GUEST_ZONEINFO, kz, ZI_MAX);
	assert_true(nk >= 3);
	for (unsigned i = 0; i < nk; i++) {
		int t = type_of(kz[i].name);
		if (t < 0 || !kz[i].spanned)
			continue;
		byt[t] = &kz[i];
		kmanaged[t] = kz[i].managed;
	}
	for (unsigned t = 0; t < DMM_NR_ZONE_TYPES; t++)
		assert_non_null(byt[t]);

	int rc = dmm_profile_load("linux-6.18-guest", &m, err, sizeof(err));
	if (rc)
		print_error("profile: %s\n", err);
	assert_ok(rc);
	assert_true(m.min_free_kbytes > 0);

	/* 1. the kernel's own arithmetic: watermarks from its managed counts */
	dmm_calc_watermarks(m.min_free_kbytes, m.watermark_scale_factor ? m.watermark_scale_factor : 10,
			    DMM_NR_ZONE_TYPES, kmanaged, mn, lo, hi);
	for (unsigned t = 0; t < DMM_NR_ZONE_TYPES; t++) {
		assert_int_equal(mn[t], byt[t]->min);
		assert_int_equal(lo[t], byt[t]->low);
		assert_int_equal(hi[t], byt[t]->high);
	}
	/* and lowmem_reserve: the formula reproduces its protection lines */
	linux_protection(kmanaged, m.lowmem_reserve_ratio, kprot);
	for (unsigned t = 0; t < DMM_NR_ZONE_TYPES; t++) {
		assert_true(byt[t]->nr_protection >= DMM_NR_ZONE_TYPES);
		for (unsigned c = 0; c < DMM_NR_ZONE_TYPES; c++)
			assert_int_equal(kprot[t][c], byt[t]->protection[c]);
	}

	/* 2. our memory map of the profile */
	e = tu_env_create(&m, 2);
	assert_int_equal(dmm_mem_nr_zones(e->mem), 3);
	for (unsigned z = 0; z < dmm_mem_nr_zones(e->mem); z++) {
		struct dmm_zone_info zi;
		assert_ok(dmm_zone_get_info(e->mem, z, &zi));
		struct kzone *k = byt[zi.type];
		assert_non_null(k);
		assert_string_equal(zi.name, k->name);
		assert_true(k->have_start);
		assert_int_equal(zi.start_pfn, k->start_pfn);
		assert_int_equal(zi.spanned, k->spanned);
		assert_int_equal(zi.present, k->present);
		omanaged[zi.type] = zi.managed;
		matched++;
	}
	assert_int_equal(matched, 3);
	/* protection on our own managed counts follows Linux's formula */
	linux_protection(omanaged, m.lowmem_reserve_ratio, oprot);
	dmm_calc_watermarks(m.min_free_kbytes, m.watermark_scale_factor ? m.watermark_scale_factor : 10,
			    DMM_NR_ZONE_TYPES, omanaged, mn, lo, hi);
	for (unsigned z = 0; z < dmm_mem_nr_zones(e->mem); z++) {
		struct dmm_zone_info zi;
		assert_ok(dmm_zone_get_info(e->mem, z, &zi));
		for (unsigned c = 0; c < DMM_NR_ZONE_TYPES; c++)
			assert_int_equal(zi.protection[c], oprot[zi.type][c]);
		assert_int_equal(zi.wmark_min, mn[zi.type]);
		assert_int_equal(zi.wmark_low, lo[zi.type]);
		assert_int_equal(zi.wmark_high, hi[zi.type]);
	}
	/* the profile reserves exactly what the kernel did not manage, so the
	 * managed counts, watermarks and protection are the kernel's too */
	for (unsigned z = 0; z < dmm_mem_nr_zones(e->mem); z++) {
		struct dmm_zone_info zi;
		assert_ok(dmm_zone_get_info(e->mem, z, &zi));
		struct kzone *k = byt[zi.type];
		assert_int_equal(zi.managed, k->managed);
		assert_int_equal(zi.wmark_min, k->min);
		assert_int_equal(zi.wmark_low, k->low);
		assert_int_equal(zi.wmark_high, k->high);
		for (unsigned c = 0; c < DMM_NR_ZONE_TYPES; c++)
			assert_int_equal(zi.protection[c], k->protection[c]);
	}
	tu_env_destroy(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_guest_zones),
	};
	return cmocka_run_group_tests_name("guest_profile", tests, NULL, NULL);
}

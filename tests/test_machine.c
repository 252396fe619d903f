/* SPDX-License-Identifier: MIT */
/* Machine descriptions, constraint descriptors, error strings and profile values. */
#include "tu.h"

#include "profile.h"

static void good_machine(struct dmm_machine *m)
{
	tu_machine(m, "good");
	tu_add_ram(m, 0, 64 * MiB);
	tu_add_ram(m, 4 * GiB, 64 * MiB);
	tu_add_reserved(m, 1 * MiB, 64 * KiB);
	m->dma_limit = 16 * MiB;
}

static void test_defaults(void **state)
{
	struct dmm_machine m;
	(void)state;
	memset(&m, 0xa5, sizeof(m));
	dmm_machine_defaults(&m);
	assert_int_equal(m.page_size, 4096);
	assert_int_equal(m.cache_line, 64);
	assert_true(m.dma_min_align >= m.cache_line);
	assert_int_equal(m.dma_limit, 0);
	assert_int_equal(m.dma32_limit, 4 * GiB);
	assert_int_equal(m.lowmem_policy, DMM_LOWMEM_FALLBACK);
	assert_int_equal(m.nr_ram, 0);
	assert_int_equal(m.nr_reserved, 0);
	assert_int_equal(m.lowmem_reserve_ratio[DMM_ZONE_DMA], 256);
	assert_int_equal(m.lowmem_reserve_ratio[DMM_ZONE_DMA32], 256);
	assert_int_equal(m.lowmem_reserve_ratio[DMM_ZONE_NORMAL], 32);
	/* no RAM yet: invalid */
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
}

static void test_validate_good(void **state)
{
	struct dmm_machine m;
	(void)state;
	good_machine(&m);
	assert_ok(dmm_machine_validate(&m));
	assert_int_equal(dmm_machine_ram_bytes(&m), 128 * MiB);

	/* RAM not starting at 0, regions listed out of order */
	tu_machine(&m, "high");
	tu_add_ram(&m, 0x100000000ull, 1 * GiB);
	tu_add_ram(&m, 0x80000000ull, 1 * GiB);
	assert_ok(dmm_machine_validate(&m));
	assert_int_equal(dmm_machine_ram_bytes(&m), 2 * GiB);

	/* partial pages are not counted */
	tu_machine(&m, "partial");
	tu_add_ram(&m, 0x1800, 0x10000);
	assert_ok(dmm_machine_validate(&m));
	assert_int_equal(dmm_machine_ram_bytes(&m), 0xf000);

	/* adjacent (touching) regions do not overlap */
	tu_machine(&m, "adjacent");
	tu_add_ram(&m, 0, 16 * MiB);
	tu_add_ram(&m, 16 * MiB, 16 * MiB);
	assert_ok(dmm_machine_validate(&m));

	/* dma_limit without dma32_limit, and both equal, are fine */
	good_machine(&m);
	m.dma32_limit = 0;
	assert_ok(dmm_machine_validate(&m));
	good_machine(&m);
	m.dma32_limit = m.dma_limit;
	assert_ok(dmm_machine_validate(&m));
	assert_rc(dmm_machine_validate(NULL), -DMM_EINVAL);
}

static void test_validate_bad(void **state)
{
	struct dmm_machine m;
	(void)state;

	/* overlapping regions (partial and contained) */
	good_machine(&m);
	tu_add_ram(&m, 32 * MiB, 64 * MiB);
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
	good_machine(&m);
	tu_add_ram(&m, 4 * GiB + 4 * MiB, 4096);
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
	good_machine(&m);
	tu_add_ram(&m, 0, 64 * MiB); /* identical */
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);

	/* empty region */
	good_machine(&m);
	tu_add_ram(&m, 1 * GiB, 0);
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);

	/* wrapping region */
	good_machine(&m);
	tu_add_ram(&m, UINT64_MAX - 4095, 8192);
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);

	/* RAM without a single whole page */
	tu_machine(&m, "sub-page");
	tu_add_ram(&m, 0x1800, 0x1000);
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);

	/* non-4K pages */
	good_machine(&m);
	m.page_size = 16384;
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
	good_machine(&m);
	m.page_size = 0;
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);

	/* bad line sizes / alignments */
	good_machine(&m);
	m.cache_line = 48;
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
	good_machine(&m);
	m.cache_line = 0;
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
	good_machine(&m);
	m.dma_min_align = 96;
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
	good_machine(&m);
	m.cache_line = 128;
	m.dma_min_align = 64; /* below the line size */
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);

	/* dma32_limit below dma_limit */
	good_machine(&m);
	m.dma_limit = 1 * GiB;
	m.dma32_limit = 512 * MiB;
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);

	/* reserved range outside RAM: in a hole, straddling the end, beyond */
	good_machine(&m);
	tu_add_reserved(&m, 1 * GiB, 4096);
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
	good_machine(&m);
	tu_add_reserved(&m, 64 * MiB - 4096, 8192);
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
	good_machine(&m);
	tu_add_reserved(&m, 8 * GiB, 4096);
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
	good_machine(&m);
	tu_add_reserved(&m, 8 * MiB, 0);
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);

	/* too many regions */
	good_machine(&m);
	m.nr_ram = DMM_MAX_REGIONS + 1;
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
	good_machine(&m);
	m.nr_reserved = DMM_MAX_REGIONS + 1;
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
}

/* An unknown low-zone policy is refused, not run as "fallback". */
static void test_validate_lowmem_policy(void **state)
{
	struct dmm_machine m;
	(void)state;
	good_machine(&m);
	m.lowmem_policy = DMM_LOWMEM_RESERVED;
	assert_ok(dmm_machine_validate(&m));
	m.lowmem_policy = (enum dmm_lowmem_policy)2;
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
	m.lowmem_policy = (enum dmm_lowmem_policy)-1;
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
}

static void test_constraint_validate(void **state)
{
	struct dmm_constraint c = DMM_CONSTRAINT_ANY;
	(void)state;
	assert_ok(dmm_constraint_validate(&c));
	c = dmm_constraint_below(16 * MiB);
	assert_ok(dmm_constraint_validate(&c));
	assert_int_equal(c.lo, 0);
	assert_int_equal(c.hi, 16 * MiB);

	c = (struct dmm_constraint){ 4096, 4096, 0, 0, 0, 0 };
	assert_rc(dmm_constraint_validate(&c), -DMM_EINVAL); /* lo == hi */
	c = (struct dmm_constraint){ 8192, 4096, 0, 0, 0, 0 };
	assert_rc(dmm_constraint_validate(&c), -DMM_EINVAL); /* lo > hi */
	c = (struct dmm_constraint){ 0, GiB, 3 * 4096, 0, 0, 0 };
	assert_rc(dmm_constraint_validate(&c), -DMM_EINVAL); /* align not pow2 */
	c = (struct dmm_constraint){ 0, GiB, 0, 65536 + 4096, 0, 0 };
	assert_rc(dmm_constraint_validate(&c), -DMM_EINVAL); /* boundary not pow2 */
	c = (struct dmm_constraint){ 0, GiB, 65536, 1 * MiB, 0, 0 };
	assert_ok(dmm_constraint_validate(&c));
	assert_rc(dmm_constraint_validate(NULL), -DMM_EINVAL);
}

static void test_constraint_intersect(void **state)
{
	struct dmm_constraint a = { 1 * MiB, 4 * GiB, 4096, 64 * KiB, 1 * MiB, 8 };
	struct dmm_constraint b = { 0, 16 * MiB, 65536, 0, 0, 4 };
	struct dmm_constraint r;
	(void)state;

	assert_ok(dmm_constraint_intersect(&a, &b, &r));
	assert_int_equal(r.lo, 1 * MiB);
	assert_int_equal(r.hi, 16 * MiB);
	assert_int_equal(r.align, 65536);
	assert_int_equal(r.boundary, 64 * KiB);
	assert_int_equal(r.max_seg_size, 1 * MiB);
	assert_int_equal(r.max_segs, 4);
	/* commutative */
	assert_ok(dmm_constraint_intersect(&b, &a, &r));
	assert_int_equal(r.lo, 1 * MiB);
	assert_int_equal(r.hi, 16 * MiB);
	assert_int_equal(r.align, 65536);
	assert_int_equal(r.boundary, 64 * KiB);

	/* smaller non-zero boundary wins */
	b.boundary = 8 * KiB;
	assert_ok(dmm_constraint_intersect(&a, &b, &r));
	assert_int_equal(r.boundary, 8 * KiB);

	/* disjoint windows */
	b = (struct dmm_constraint){ 4 * GiB, 8 * GiB, 0, 0, 0, 0 };
	memset(&r, 0x5a, sizeof(r));
	assert_rc(dmm_constraint_intersect(&a, &b, &r), -DMM_ERANGE);
	/* touching windows do not overlap either */
	b = (struct dmm_constraint){ 0, 1 * MiB, 0, 0, 0, 0 };
	assert_rc(dmm_constraint_intersect(&a, &b, &r), -DMM_ERANGE);

	/* invalid inputs */
	b = (struct dmm_constraint){ 0, GiB, 5, 0, 0, 0 };
	assert_rc(dmm_constraint_intersect(&a, &b, &r), -DMM_EINVAL);
	assert_rc(dmm_constraint_intersect(&b, &a, &r), -DMM_EINVAL);
	assert_rc(dmm_constraint_intersect(&a, NULL, &r), -DMM_EINVAL);
	assert_rc(dmm_constraint_intersect(&a, &a, NULL), -DMM_EINVAL);
}

static void test_constraint_ok(void **state)
{
	struct dmm_constraint c = { 1 * MiB, 16 * MiB, 64 * KiB, 1 * MiB, 0, 0 };
	(void)state;

	assert_true(dmm_constraint_ok(&c, 1 * MiB, 4096));
	assert_true(dmm_constraint_ok(&c, 1 * MiB, 1 * MiB));       /* exactly one boundary unit */
	assert_false(dmm_constraint_ok(&c, 1 * MiB, 1 * MiB + 4096)); /* crosses 2 MiB */
	assert_false(dmm_constraint_ok(&c, 1 * MiB + 4096, 4096));   /* misaligned */
	assert_true(dmm_constraint_ok(&c, 2 * MiB - 64 * KiB, 64 * KiB));
	assert_false(dmm_constraint_ok(&c, 2 * MiB - 64 * KiB, 128 * KiB));
	assert_false(dmm_constraint_ok(&c, 0, 4096));               /* below lo */
	assert_true(dmm_constraint_ok(&c, 16 * MiB - 64 * KiB, 64 * KiB)); /* ends at hi */
	assert_false(dmm_constraint_ok(&c, 16 * MiB - 64 * KiB, 64 * KiB + 4096));
	assert_false(dmm_constraint_ok(&c, 16 * MiB, 4096));        /* at hi */
	assert_false(dmm_constraint_ok(&c, 1 * MiB, 0));            /* empty */
	assert_false(dmm_constraint_ok(NULL, 1 * MiB, 4096));

	/* each field alone */
	c = DMM_CONSTRAINT_ANY;
	assert_true(dmm_constraint_ok(&c, 12345, 1));
	assert_false(dmm_constraint_ok(&c, UINT64_MAX - 10, 100)); /* wraps */
	c.align = 8192;
	assert_false(dmm_constraint_ok(&c, 4096, 4096));
	assert_true(dmm_constraint_ok(&c, 8192, 4096));
	c = DMM_CONSTRAINT_ANY;
	c.boundary = 65536;
	assert_true(dmm_constraint_ok(&c, 65536 - 4096, 4096));
	assert_false(dmm_constraint_ok(&c, 65536 - 4096, 8192));
	c = dmm_constraint_below(4 * GiB);
	assert_true(dmm_constraint_ok(&c, 4 * GiB - 4096, 4096));
	assert_false(dmm_constraint_ok(&c, 4 * GiB - 4096, 8192));
}

static void test_strerror(void **state)
{
	static const struct {
		int code;
		const char *name;
	} codes[] = {
		{ DMM_OK, "DMM_OK" },         { DMM_EINVAL, "DMM_EINVAL" }, { DMM_ENOMEM, "DMM_ENOMEM" },
		{ DMM_ERANGE, "DMM_ERANGE" }, { DMM_EBUSY, "DMM_EBUSY" },   { DMM_EAGAIN, "DMM_EAGAIN" },
		{ DMM_EEXIST, "DMM_EEXIST" }, { DMM_ENOENT, "DMM_ENOENT" }, { DMM_ENOTSUP, "DMM_ENOTSUP" },
		{ DMM_EFAULT, "DMM_EFAULT" }, { DMM_ENOSPC, "DMM_ENOSPC" }, { DMM_EPERM, "DMM_EPERM" },
		{ DMM_EWMARK, "DMM_EWMARK" },
	};
	(void)state;
	assert_int_equal(sizeof(codes) / sizeof(codes[0]), DMM__NR_ERRORS);
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		const char *s = dmm_strerror(codes[i].code);
		assert_non_null(s);
		assert_true(strlen(s) > 3);
		assert_string_not_equal(s, "unknown error");
		/* either sign gives the same text */
		assert_string_equal(s, dmm_strerror(-codes[i].code));
		assert_string_equal(dmm_errname(codes[i].code), codes[i].name);
		assert_string_equal(dmm_errname(-codes[i].code), codes[i].name);
		/* every message is distinct */
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(s, dmm_strerror(codes[j].code));
	}
	assert_non_null(strstr(dmm_strerror(-DMM_ENOMEM), "memory"));
	assert_non_null(strstr(dmm_strerror(-DMM_EWMARK), "watermark"));
	/* unknown codes are never NULL */
	assert_non_null(dmm_strerror(DMM__NR_ERRORS));
	assert_non_null(dmm_strerror(-1000));
	assert_non_null(dmm_strerror(INT32_MIN + 1));
	assert_non_null(dmm_errname(12345));
	assert_string_not_equal(dmm_errname(12345), "DMM_OK");
}

static void test_platform_validate(void **state)
{
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_platform p;
	(void)state;
	good_machine(&m);
	assert_ok(dmm_hosted_create(&m, 2, DMM_LOG_WARN, &h));
	p = *dmm_hosted_platform(h);
	assert_ok(dmm_platform_validate(&p));
	assert_int_equal(p.nr_cpus, 2);
	p.lock = NULL;
	assert_rc(dmm_platform_validate(&p), -DMM_EINVAL);
	p = *dmm_hosted_platform(h);
	p.phys_to_virt = NULL;
	assert_rc(dmm_platform_validate(&p), -DMM_EINVAL);
	p = *dmm_hosted_platform(h);
	p.nr_cpus = 0;
	assert_rc(dmm_platform_validate(&p), -DMM_EINVAL);
	assert_rc(dmm_platform_validate(NULL), -DMM_EINVAL);
	dmm_hosted_destroy(h);
}

/* min_free_kbytes is Linux's int: a larger value would overflow the
 * watermark arithmetic (pages_min x managed pages) and is refused. */
static void test_profile_min_free_kbytes(void **state)
{
	static const char *const bad[] = { "0xffffffffffffffff", "2147483648", "1T" };
	char text[256], err[256];
	struct dmm_machine m;
	(void)state;

	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "[machine]\nmin_free_kbytes = %s\n[ram]\nregion = 0 256M\n",
			 bad[i]);
		assert_rc(dmm_profile_parse_string(text, &m, err, sizeof(err)), -DMM_EINVAL);
		assert_non_null(strstr(err, "min_free_kbytes"));
		assert_non_null(strstr(err, ":2:"));
	}
	snprintf(text, sizeof(text), "[machine]\nmin_free_kbytes = 2147483647\n[ram]\nregion = 0 256M\n");
	assert_ok(dmm_profile_parse_string(text, &m, err, sizeof(err)));
	assert_int_equal(m.min_free_kbytes, 2147483647);
	snprintf(text, sizeof(text), "[machine]\nmin_free_kbytes = auto\n[ram]\nregion = 0 256M\n");
	assert_ok(dmm_profile_parse_string(text, &m, err, sizeof(err)));
	assert_int_equal(m.min_free_kbytes, 0);
}

/*
 * The per-CPU cache settings have upper bounds: a refill moves a batch from
 * the zone under its lock on a single order-0 request, and a cache keeps up
 * to high pages out of the zone's free count. pcp_batch = UINT32_MAX would
 * let one allocation pull a whole zone into one CPU's cache.
 */
static void test_validate_pcp_bounds(void **state)
{
	static const char *const bad[] = { "pcp_batch = 4294967295", "pcp_batch = 513",
					   "pcp_high = 4294967295", "pcp_high = 4097" };
	struct dmm_machine m;
	struct dmm_hosted *h = NULL;
	struct dmm_mem *mem = NULL;
	char text[256], err[256];
	(void)state;

	good_machine(&m);
	m.pcp_batch = DMM_PCP_BATCH_MAX;
	m.pcp_high = DMM_PCP_HIGH_MAX;
	assert_ok(dmm_machine_validate(&m));
	m.pcp_batch = 0; /* auto */
	m.pcp_high = 0;
	assert_ok(dmm_machine_validate(&m));

	good_machine(&m);
	m.pcp_batch = DMM_PCP_BATCH_MAX + 1;
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
	m.pcp_batch = UINT32_MAX;
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
	assert_rc(dmm_hosted_mem_create(&m, 1, &h, &mem), -DMM_EINVAL);
	good_machine(&m);
	m.pcp_high = DMM_PCP_HIGH_MAX + 1;
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
	m.pcp_high = UINT32_MAX;
	assert_rc(dmm_machine_validate(&m), -DMM_EINVAL);
	/* the automatic high mark of the largest batch is within bounds */
	assert_true(6 * DMM_PCP_BATCH_MAX <= DMM_PCP_HIGH_MAX);

	/* a profile names the key and its line */
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "[machine]\n%s\n[ram]\nregion = 0 256M\n", bad[i]);
		assert_rc(dmm_profile_parse_string(text, &m, err, sizeof(err)), -DMM_EINVAL);
		assert_non_null(strstr(err, bad[i][4] == 'b' ? "pcp_batch" : "pcp_high"));
		assert_non_null(strstr(err, ":2:"));
	}
	snprintf(text, sizeof(text), "[machine]\npcp_batch = 512\npcp_high = 4096\n[ram]\nregion = 0 256M\n");
	assert_ok(dmm_profile_parse_string(text, &m, err, sizeof(err)));
	assert_int_equal(m.pcp_batch, DMM_PCP_BATCH_MAX);
	assert_int_equal(m.pcp_high, DMM_PCP_HIGH_MAX);
}

/* Lines of up to 198 characters (inih's 200-byte buffer less the newline
 * and the terminator) are read whole; a longer one is refused, and the
 * message names the limit that holds. Also for a last line without its
 * newline. */
static void test_profile_line_length(void **state)
{
	char text[512], err[256];
	struct dmm_machine m;
	(void)state;

	for (unsigned len = 190; len <= 201; len++) {
		for (int last = 0; last < 2; last++) {
			char line[256];

			memset(line, 'x', len);
			line[0] = '#';
			line[len] = '\0';
			if (last)
				snprintf(text, sizeof(text), "[ram]\nregion = 0 256M\n%s", line);
			else
				snprintf(text, sizeof(text), "[machine]\n%s\n[ram]\nregion = 0 256M\n", line);
			err[0] = '\0';
			if (len <= 198) {
				assert_ok(dmm_profile_parse_string(text, &m, err, sizeof(err)));
				continue;
			}
			assert_rc(dmm_profile_parse_string(text, &m, err, sizeof(err)), -DMM_EINVAL);
			if (!strstr(err, "line longer than 198 characters"))
				fail_msg("%u characters: %s", len, err);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_validate_good),
		cmocka_unit_test(test_validate_bad),
		cmocka_unit_test(test_validate_lowmem_policy),
		cmocka_unit_test(test_constraint_validate),
		cmocka_unit_test(test_constraint_intersect),
		cmocka_unit_test(test_constraint_ok),
		cmocka_unit_test(test_strerror),
		cmocka_unit_test(test_platform_validate),
		cmocka_unit_test(test_profile_min_free_kbytes),
		cmocka_unit_test(test_validate_pcp_bounds),
		cmocka_unit_test(test_profile_line_length),
	};
	return cmocka_run_group_tests_name("machine", tests, NULL, NULL);
}

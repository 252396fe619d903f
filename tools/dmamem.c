/* SPDX-License-Identifier: MIT */
/*
 * dmamem: the command-line front end.
 *
 *   dmamem info      [--profile NAME] [--lowmem-policy P] [--json]
 *   dmamem run       [--profile NAME] [--workload NAME] [--seed N] [--ops N] ...
 *   dmamem profiles  [--json]
 *
 * Builds a hosted machine (host memory + pthreads) from a profile, then
 * prints its memory map or runs a seeded workload on it. Documented in
 * docs/CLI.md. Exit status: 0 success, 1 the run found an error (or the
 * machine could not be built), 2 bad usage.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include <dmamem/dmamem.h>
#include <dmamem/hosted.h>
#include <dmamem/iommu.h>

#include "hw/hw.h"
#include "profile.h"
#include "workload.h"

#define EXIT_USAGE 2
#define DEFAULT_PROFILE "pc"

static const char *prog = "dmamem";
static const char *help_hint = "dmamem --help"; /* named in usage errors */

/* ------------------------------------------------------------------------ */
/* Small JSON writer (output only)                                           */

struct jw {
	FILE *f;
	int depth;
	bool need_comma[32];
};

static void jw_indent(struct jw *j)
{
	fputc('\n', j->f);
	for (int i = 0; i < j->depth; i++)
		fputs("  ", j->f);
}

static void jw_string_raw(struct jw *j, const char *s)
{
	fputc('"', j->f);
	for (; s && *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(j->f, "\\%c", c);
		else if (c == '\n')
			fputs("\\n", j->f);
		else if (c == '\t')
			fputs("\\t", j->f);
		else if (c < 0x20)
			fprintf(j->f, "\\u%04x", c);
		else
			fputc(c, j->f);
	}
	fputc('"', j->f);
}

/* Start a member (key != NULL, inside an object) or an element. */
static void jw_key(struct jw *j, const char *key)
{
	if (j->depth > 0) {
		if (j->need_comma[j->depth])
			fputc(',', j->f);
		j->need_comma[j->depth] = true;
		jw_indent(j);
	}
	if (key) {
		jw_string_raw(j, key);
		fputs(": ", j->f);
	}
}

static void jw_open(struct jw *j, const char *key, char c)
{
	jw_key(j, key);
	fputc(c, j->f);
	j->depth++;
	j->need_comma[j->depth] = false;
}

static void jw_close(struct jw *j, char c)
{
	bool had = j->need_comma[j->depth];

	j->depth--;
	if (had)
		jw_indent(j);
	fputc(c, j->f);
	if (j->depth == 0)
		fputc('\n', j->f);
}

static void jw_obj(struct jw *j, const char *key) { jw_open(j, key, '{'); }
static void jw_arr(struct jw *j, const char *key) { jw_open(j, key, '['); }
static void jw_end_obj(struct jw *j) { jw_close(j, '}'); }
static void jw_end_arr(struct jw *j) { jw_close(j, ']'); }

static void jw_u64(struct jw *j, const char *key, uint64_t v)
{
	jw_key(j, key);
	fprintf(j->f, "%" PRIu64, v);
}

static void jw_int(struct jw *j, const char *key, long long v)
{
	jw_key(j, key);
	fprintf(j->f, "%lld", v);
}

static void jw_dbl(struct jw *j, const char *key, double v)
{
	jw_key(j, key);
	fprintf(j->f, "%.6g", v);
}

static void jw_bool(struct jw *j, const char *key, bool v)
{
	jw_key(j, key);
	fputs(v ? "true" : "false", j->f);
}

static void jw_str(struct jw *j, const char *key, const char *s)
{
	jw_key(j, key);
	if (s)
		jw_string_raw(j, s);
	else
		fputs("null", j->f);
}

/* Addresses as hex strings ("0x1000000"): JSON numbers lose precision above 2^53. */
static void jw_hex(struct jw *j, const char *key, uint64_t v)
{
	char buf[24];

	snprintf(buf, sizeof(buf), "0x%" PRIx64, v);
	jw_str(j, key, buf);
}

static void jw_u64_array(struct jw *j, const char *key, const uint64_t *v, unsigned n)
{
	jw_key(j, key);
	fputc('[', j->f);
	for (unsigned i = 0; i < n; i++)
		fprintf(j->f, "%s%" PRIu64, i ? ", " : "", v[i]);
	fputc(']', j->f);
}

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static __attribute__((format(printf, 1, 2))) void usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s'.\n", help_hint);
}

static __attribute__((format(printf, 1, 2))) void fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* A non-negative integer, decimal or 0x hex, no suffix, no sign, no blanks:
 * "010" is ten (not octal eight), and " -1" is refused rather than wrapped. */
static bool parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	int base = 10;

	if (!s || !isdigit((unsigned char)s[0]))
		return false;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
		if (!isxdigit((unsigned char)s[0]))
			return false;
	}
	errno = 0;
	v = strtoull(s, &end, base);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

/* A non-negative decimal number: digits, optionally a point and more
 * digits ("2", "0.01"); no sign, blanks, exponent, hex, inf or nan. */
static bool parse_decimal(const char *s, double *out)
{
	const char *t = s;
	char *end;
	double v;

	if (!s || !isdigit((unsigned char)*t))
		return false;
	while (isdigit((unsigned char)*t))
		t++;
	if (*t == '.') {
		t++;
		if (!isdigit((unsigned char)*t))
			return false;
		while (isdigit((unsigned char)*t))
			t++;
	}
	if (*t)
		return false;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end != t)
		return false;
	*out = v;
	return true;
}

static bool parse_uint(const char *s, unsigned max, unsigned *out)
{
	uint64_t v;

	if (!parse_u64(s, &v) || v > max)
		return false;
	*out = (unsigned)v;
	return true;
}

/* "16 MiB", "639 KiB", "3 GiB", "4095 B": exact when it divides. */
static const char *human(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	unsigned u = 0;
	double v = (double)bytes;

	while (u < 4 && bytes >= ((uint64_t)1024 << (10 * u)))
		u++;
	if (u == 0) {
		snprintf(buf, len, "%" PRIu64 " B", bytes);
		return buf;
	}
	v = (double)bytes / (double)((uint64_t)1 << (10 * u));
	if (bytes % ((uint64_t)1 << (10 * u)) == 0)
		snprintf(buf, len, "%" PRIu64 " %s", bytes >> (10 * u), units[u]);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}

static const char *policy_name(enum dmm_lowmem_policy p)
{
	return p == DMM_LOWMEM_RESERVED ? "reserved" : "fallback";
}

/* Profile description: the [machine] description key, read with inih. */
struct descr_ctx {
	char text[160];
};

static int descr_handler(void *user, const char *section, const char *name, const char *value)
{
	struct descr_ctx *d = user;

	if (strcmp(section, "machine") == 0 && strcmp(name, "description") == 0)
		snprintf(d->text, sizeof(d->text), "%s", value);
	return 1;
}

static void profile_path(const char *name, char *buf, size_t len)
{
	size_t n = strlen(name);

	if (strchr(name, '/') || (n > 4 && strcmp(name + n - 4, ".ini") == 0))
		snprintf(buf, len, "%s", name);
	else
		snprintf(buf, len, "%s/%s.ini", dmm_profile_dir(), name);
}

static void profile_description(const char *path, char *buf, size_t len)
{
	struct descr_ctx d = { "" };

	ini_parse(path, descr_handler, &d);
	snprintf(buf, len, "%s", d.text);
}

/* Options shared by info and run. */
struct machine_opts {
	const char *profile;
	int policy;           /* -1 = the profile's */
	bool have_ratio;      /* override lowmem_reserve_ratio */
	uint32_t ratio[DMM_NR_ZONE_TYPES];
	unsigned cpus;        /* 0 = online CPUs */
	int cma_policy;       /* -1 = the profile's */
	int pin_migrate;      /* -1 = the profile's */
	int log_level;
	bool json;
};

/* Long options without a short form. */
enum {
	OPT_CMA_POLICY = 1000,
	OPT_PIN_MIGRATE,
	OPT_CMA_AREA,
	OPT_FRAMES,
	OPT_FRAME_SIZE,
	OPT_QUEUE,
	OPT_CHURN,
	OPT_PIN,
	OPT_UNCACHED,
	OPT_PAGE_CACHE,
	OPT_IOMMU,
	OPT_IOMMU_FLUSH,
	OPT_IOVA_ALIGN,
};

static const char *const cma_policy_names[] = { "half", "first", "last", "never" };

static const char *cma_policy_name(enum dmm_cma_policy p)
{
	return (unsigned)p < 4 ? cma_policy_names[p] : "?";
}

/* Load the profile, apply overrides, build platform + memory map: the
 * hosted platform, or with @hw the hardware model with speculative prefetch
 * seeded with @prefetch_seed (then *@h is NULL). */
static int build_machine(const struct machine_opts *mo, struct dmm_machine *m,
			 struct dmm_hosted **h, struct dmm_hw **hw, uint64_t prefetch_seed,
			 struct dmm_mem **mem)
{
	char err[512];
	int rc;

	*h = NULL;
	if (hw)
		*hw = NULL;
	rc = dmm_profile_load(mo->profile, m, err, sizeof(err));
	if (rc) {
		fail("%s", err);
		if (rc == -DMM_ENOENT)
			fprintf(stderr, "%s: 'dmamem profiles' lists the profiles in %s\n", prog,
				dmm_profile_dir());
		return rc;
	}
	if (mo->policy >= 0)
		m->lowmem_policy = (enum dmm_lowmem_policy)mo->policy;
	if (mo->have_ratio)
		memcpy(m->lowmem_reserve_ratio, mo->ratio, sizeof(mo->ratio));
	if (mo->cma_policy >= 0)
		m->cma_policy = (enum dmm_cma_policy)mo->cma_policy;
	if (mo->pin_migrate >= 0)
		m->longterm_pin_migrate = mo->pin_migrate;
	if (hw) {
		struct dmm_hw_opts o;

		dmm_hw_opts_default(&o);
		o.nr_cpus = mo->cpus;
		o.log_level = mo->log_level;
		/* speculative prefetch, seeded: a missing invalidation shows as stale data */
		o.prefetch = 1;
		o.prefetch_seed = prefetch_seed;
		rc = dmm_hw_mem_create(m, &o, hw, mem);
		if (rc) {
			fail("cannot build '%s' on the hardware model: %s", m->name, dmm_strerror(rc));
			if (m->nr_cma && (rc == -DMM_ENOMEM || rc == -DMM_EINVAL))
				fprintf(stderr,
					"%s: note: each contiguous area must fit in unreserved RAM within one zone\n"
					"%s: (and below its limit), clear of the library's metadata at the top of RAM\n",
					prog, prog);
		}
		return rc;
	}
	rc = dmm_hosted_create(m, mo->cpus, mo->log_level, h);
	if (rc) {
		fail("cannot create the hosted platform for '%s': %s", m->name, dmm_strerror(rc));
		return rc;
	}
	rc = dmm_mem_create(m, dmm_hosted_platform(*h), mem);
	if (rc) {
		fail("cannot build the memory map of '%s': %s", m->name, dmm_strerror(rc));
		if (m->nr_cma && (rc == -DMM_ENOMEM || rc == -DMM_EINVAL))
			fprintf(stderr,
				"%s: note: each contiguous area must fit in unreserved RAM within one zone\n"
				"%s: (and below its limit), clear of the library's metadata at the top of RAM\n",
				prog, prog);
		dmm_hosted_destroy(*h);
		*h = NULL;
		return rc;
	}
	return 0;
}

/* The long options of every command that builds a machine: those
 * machine_option() takes, and --json, --verbose, --help. */
#define MACHINE_LONG_OPTIONS                                                   \
	{ "profile", required_argument, NULL, 'p' },                           \
	{ "lowmem-policy", required_argument, NULL, 'P' },                     \
	{ "lowmem-reserve-ratio", required_argument, NULL, 'R' },              \
	{ "cma-policy", required_argument, NULL, OPT_CMA_POLICY },             \
	{ "longterm-pin-migrate", required_argument, NULL, OPT_PIN_MIGRATE },  \
	{ "cpus", required_argument, NULL, 'c' },                              \
	{ "json", no_argument, NULL, 'j' },                                    \
	{ "verbose", no_argument, NULL, 'v' },                                 \
	{ "help", no_argument, NULL, 'h' }

/* Common option parsing; returns 1 if consumed, 0 if not ours, -1 on error. */
static int machine_option(int c, const char *arg, struct machine_opts *mo)
{
	switch (c) {
	case 'p':
		if (!*arg) {
			usage_error("--profile: empty profile name");
			return -1;
		}
		mo->profile = arg;
		return 1;
	case 'P':
		if (strcmp(arg, "fallback") == 0)
			mo->policy = DMM_LOWMEM_FALLBACK;
		else if (strcmp(arg, "reserved") == 0)
			mo->policy = DMM_LOWMEM_RESERVED;
		else {
			usage_error("--lowmem-policy: '%s' is not 'fallback' or 'reserved'", arg);
			return -1;
		}
		return 1;
	case 'R': {
		char buf[128], *tok, *save = NULL;
		unsigned n = 0, v;

		if (strlen(arg) >= sizeof(buf)) {
			usage_error("--lowmem-reserve-ratio: '%s' is too long for three numbers", arg);
			return -1;
		}
		snprintf(buf, sizeof(buf), "%s", arg);
		for (tok = strtok_r(buf, " ,", &save); tok; tok = strtok_r(NULL, " ,", &save)) {
			if (n == DMM_NR_ZONE_TYPES || !parse_uint(tok, UINT32_MAX, &v))
				break;
			mo->ratio[n++] = v;
		}
		if (tok || n != DMM_NR_ZONE_TYPES) {
			usage_error("--lowmem-reserve-ratio: '%s' is not three numbers such as \"256 256 32\"",
				    arg);
			return -1;
		}
		mo->have_ratio = true;
		return 1;
	}
	case OPT_CMA_POLICY:
		mo->cma_policy = -1; /* an earlier --cma-policy does not make this one valid */
		for (int i = 0; i < 4; i++)
			if (strcmp(arg, cma_policy_names[i]) == 0)
				mo->cma_policy = i;
		if (mo->cma_policy < 0) {
			usage_error("--cma-policy: '%s' is not 'half', 'first', 'last' or 'never'", arg);
			return -1;
		}
		return 1;
	case OPT_PIN_MIGRATE:
		if (strcmp(arg, "on") == 0 || strcmp(arg, "yes") == 0)
			mo->pin_migrate = 1;
		else if (strcmp(arg, "off") == 0 || strcmp(arg, "no") == 0)
			mo->pin_migrate = 0;
		else {
			usage_error("--longterm-pin-migrate: '%s' is not 'on' or 'off'", arg);
			return -1;
		}
		return 1;
	case 'c':
		if (!parse_uint(arg, 1024, &mo->cpus)) {
			usage_error("--cpus: '%s' is not a number in 0..1024", arg);
			return -1;
		}
		return 1;
	case 'v':
		mo->log_level++;
		return 1;
	case 'j':
		mo->json = true;
		return 1;
	default:
		return 0;
	}
}

static void machine_opts_init(struct machine_opts *mo)
{
	mo->profile = DEFAULT_PROFILE;
	mo->policy = -1;
	mo->have_ratio = false;
	mo->cpus = 0;
	mo->cma_policy = -1;
	mo->pin_migrate = -1;
	mo->log_level = DMM_LOG_WARN;
	mo->json = false;
}

/* ------------------------------------------------------------------------ */
/* Text output                                                               */

static void print_machine_text(const struct dmm_machine *m, const char *descr)
{
	char b1[32], b2[32];

	printf("machine  %s%s%s\n", m->name, *descr ? "  -- " : "", descr);
	printf("RAM (%s in %u region%s):\n", human(dmm_machine_ram_bytes(m), b1, sizeof(b1)),
	       m->nr_ram, m->nr_ram == 1 ? "" : "s");
	for (unsigned i = 0; i < m->nr_ram; i++)
		printf("  [0x%010" PRIx64 "-0x%010" PRIx64 "]  %s\n", m->ram[i].base,
		       m->ram[i].base + m->ram[i].size - 1, human(m->ram[i].size, b1, sizeof(b1)));
	if (m->nr_reserved) {
		printf("reserved:\n");
		for (unsigned i = 0; i < m->nr_reserved; i++)
			printf("  [0x%010" PRIx64 "-0x%010" PRIx64 "]  %s\n", m->reserved[i].base,
			       m->reserved[i].base + m->reserved[i].size - 1,
			       human(m->reserved[i].size, b1, sizeof(b1)));
	}
	printf("page size %u, cache line %u, DMA minimum alignment %u\n", m->page_size,
	       m->cache_line, m->dma_min_align);
	if (m->dma_limit)
		printf("dma_limit 0x%" PRIx64 " (%s), ", m->dma_limit,
		       human(m->dma_limit, b1, sizeof(b1)));
	else
		printf("dma_limit none, ");
	if (m->dma32_limit)
		printf("dma32_limit 0x%" PRIx64 " (%s), ", m->dma32_limit,
		       human(m->dma32_limit, b2, sizeof(b2)));
	else
		printf("dma32_limit none, ");
	printf("low-zone policy %s\n", policy_name(m->lowmem_policy));
	printf("contiguous areas %u, CMA policy %s, long-term pins migrate out of areas: %s\n",
	       m->nr_cma, cma_policy_name(m->cma_policy), m->longterm_pin_migrate ? "yes" : "no");
}

/* Index of the zone holding @pfn in @zi, or -1. */
static int zone_index_of(const struct dmm_zone_info *zi, unsigned nr, dmm_pfn_t pfn)
{
	for (unsigned z = 0; z < nr; z++)
		if (pfn >= zi[z].start_pfn && pfn < zi[z].end_pfn)
			return (int)z;
	return -1;
}

/* The areas as placed in the memory map. */
static void print_cma_text(struct dmm_mem *mem, const struct dmm_machine *m,
			   const struct dmm_zone_info *zi, unsigned nr)
{
	unsigned n = dmm_cma_count(mem);
	char b[32];

	if (!n) {
		printf("\ncontiguous memory areas: none\n");
		return;
	}
	printf("\ncontiguous memory areas (CMA policy %s, long-term pins %s)\n",
	       cma_policy_name(m->cma_policy),
	       m->longterm_pin_migrate ? "migrate pages out of the areas first"
				       : "pin pages in place (protection off)");
	printf("  %-15s %-27s %9s  %-7s %-7s %s\n", "name", "range", "size", "zone", "default",
	       "placement");
	for (unsigned i = 0; i < n; i++) {
		struct dmm_cma_info ai;
		const struct dmm_cma_decl *d = &m->cma[i];
		char place[64];
		int z;

		dmm_cma_get_info(mem, (int)i, &ai);
		z = zone_index_of(zi, nr, ai.base_pfn);
		if (d->base)
			snprintf(place, sizeof(place), "fixed");
		else if (d->limit)
			snprintf(place, sizeof(place), "below 0x%" PRIx64, d->limit);
		else
			snprintf(place, sizeof(place), "anywhere");
		printf("  %-15s [0x%010" PRIx64 "-0x%010" PRIx64 "] %9s  %-7s %-7s %s\n", ai.name,
		       dmm_pfn_to_phys(ai.base_pfn), dmm_pfn_to_phys(ai.base_pfn + ai.nr_pages) - 1,
		       human(ai.nr_pages << DMM_PAGE_SHIFT, b, sizeof(b)), z >= 0 ? zi[z].name : "?",
		       ai.is_default ? "yes" : "no", place);
	}
}

static void print_mem_text(const struct dmm_machine *m, const struct dmm_mem_info *info)
{
	char b1[32];
	uint64_t mfk = m->min_free_kbytes ? m->min_free_kbytes
					  : dmm_default_min_free_kbytes(info->managed_pages);

	printf("min_free_kbytes %" PRIu64 "%s, watermark_scale_factor %u, "
	       "lowmem_reserve_ratio %u %u %u\n",
	       mfk, m->min_free_kbytes ? "" : " (auto)",
	       m->watermark_scale_factor ? m->watermark_scale_factor : 10,
	       m->lowmem_reserve_ratio[0], m->lowmem_reserve_ratio[1], m->lowmem_reserve_ratio[2]);
	printf("\nmemory map\n");
	printf("  pages          ram %" PRIu64 ", managed %" PRIu64 ", reserved %" PRIu64
	       " (firmware + metadata)\n",
	       info->ram_pages, info->managed_pages, info->reserved_pages);
	printf("  pfn range      0x%" PRIx64 "-0x%" PRIx64 "\n", info->min_pfn, info->max_pfn);
	printf("  page descriptor %u bytes\n", info->page_desc_size);
	printf("  metadata       %s in %" PRIu64 " pages = %.1f bytes per page of RAM (%.2f %%)\n",
	       human(info->metadata_bytes, b1, sizeof(b1)), info->metadata_pages,
	       info->ram_pages ? (double)info->metadata_bytes / (double)info->ram_pages : 0.0,
	       info->ram_pages ? 100.0 * (double)info->metadata_pages / (double)info->ram_pages
			       : 0.0);
	printf("  slab map       %s (%s)\n", human(info->slab_map_bytes, b1, sizeof(b1)),
	       info->slab_map_bytes ? "one byte per page: kfree finds a cache in one load" : "none: kfree looks pages up");
	printf("  per-CPU caches %u (CPU-local sections: %s)\n", info->nr_cpus, info->cpu_sections);
	printf("  bulk copies    %s (bounce and migration copies of 128 B to 64 KiB)\n", info->bulk_copy);
	printf("  init time      %.3f ms\n", (double)info->init_ns / 1e6);
}

static void print_zone_table(const struct dmm_zone_info *zi, unsigned nr)
{
	char b[32];

	for (unsigned z = 0; z < nr; z++) {
		const struct dmm_zone_info *i = &zi[z];

		printf("\nzone %-7s [0x%010" PRIx64 "-0x%010" PRIx64 "]  %s spanned\n", i->name,
		       dmm_pfn_to_phys(i->start_pfn), dmm_pfn_to_phys(i->end_pfn) - 1,
		       human(i->spanned << DMM_PAGE_SHIFT, b, sizeof(b)));
		printf("  start_pfn %" PRIu64 ", spanned %" PRIu64 ", present %" PRIu64
		       ", managed %" PRIu64 " (%s)\n",
		       i->start_pfn, i->spanned, i->present, i->managed,
		       human(i->managed << DMM_PAGE_SHIFT, b, sizeof(b)));
		printf("  free %" PRIu64 ", in per-CPU caches %" PRIu64 "\n", i->free, i->pcp);
		printf("  watermarks min %" PRIu64 ", low %" PRIu64 ", high %" PRIu64 "\n",
		       i->wmark_min, i->wmark_low, i->wmark_high);
		printf("  protection (lowmem_reserve against DMA, DMA32, Normal allocations) %" PRIu64
		       " %" PRIu64 " %" PRIu64 "\n",
		       i->protection[0], i->protection[1], i->protection[2]);
		printf("  pageblocks");
		for (unsigned mt = 0; mt < DMM_NR_MIGRATETYPES; mt++)
			printf(" %s %" PRIu64 "%s", dmm_migratetype_name((enum dmm_migratetype)mt),
			       i->pageblocks_mt[mt], mt + 1 < DMM_NR_MIGRATETYPES ? "," : "\n");
	}
}

/* Free blocks (or pages, @pages) by order, one row per zone. */
static void print_order_table(const struct dmm_zone_info *zi, unsigned nr, bool pages)
{
	printf("\n%-7s", "order");
	for (unsigned o = 0; o < DMM_NR_ORDERS; o++)
		printf(" %8u", o);
	printf("\n");
	for (unsigned z = 0; z < nr; z++) {
		printf("%-7s", zi[z].name);
		for (unsigned o = 0; o < DMM_NR_ORDERS; o++)
			printf(" %8" PRIu64, pages ? zi[z].free_blocks[o] << o : zi[z].free_blocks[o]);
		printf("\n");
	}
}

/* Linux's unusable free space index for @order: the share of free memory in
 * blocks too small for an order-@order request. */
static double unusable_index(const struct dmm_zone_info *zi, unsigned order)
{
	uint64_t free = 0, usable = 0;

	for (unsigned o = 0; o < DMM_NR_ORDERS; o++) {
		free += zi->free_blocks[o] << o;
		if (o >= order)
			usable += zi->free_blocks[o] << o;
	}
	return free ? (double)(free - usable) / (double)free : 0.0;
}

/* ------------------------------------------------------------------------ */
/* JSON output                                                               */

static void json_machine(struct jw *j, const struct dmm_machine *m, const char *descr)
{
	jw_obj(j, "machine");
	jw_str(j, "name", m->name);
	jw_str(j, "description", descr);
	jw_u64(j, "ram_bytes", dmm_machine_ram_bytes(m));
	jw_arr(j, "ram");
	for (unsigned i = 0; i < m->nr_ram; i++) {
		jw_obj(j, NULL);
		jw_hex(j, "base", m->ram[i].base);
		jw_u64(j, "size", m->ram[i].size);
		jw_end_obj(j);
	}
	jw_end_arr(j);
	jw_arr(j, "reserved");
	for (unsigned i = 0; i < m->nr_reserved; i++) {
		jw_obj(j, NULL);
		jw_hex(j, "base", m->reserved[i].base);
		jw_u64(j, "size", m->reserved[i].size);
		jw_end_obj(j);
	}
	jw_end_arr(j);
	jw_u64(j, "page_size", m->page_size);
	jw_u64(j, "cache_line", m->cache_line);
	jw_u64(j, "dma_min_align", m->dma_min_align);
	jw_hex(j, "dma_limit", m->dma_limit);
	jw_hex(j, "dma32_limit", m->dma32_limit);
	jw_str(j, "lowmem_policy", policy_name(m->lowmem_policy));
	jw_u64(j, "min_free_kbytes", m->min_free_kbytes);
	jw_u64(j, "watermark_scale_factor", m->watermark_scale_factor);
	jw_arr(j, "lowmem_reserve_ratio");
	for (unsigned i = 0; i < DMM_NR_ZONE_TYPES; i++)
		jw_u64(j, NULL, m->lowmem_reserve_ratio[i]);
	jw_end_arr(j);
	jw_str(j, "cma_policy", cma_policy_name(m->cma_policy));
	jw_bool(j, "longterm_pin_migrate", m->longterm_pin_migrate != 0);
	jw_arr(j, "cma");
	for (unsigned i = 0; i < m->nr_cma; i++) {
		jw_obj(j, NULL);
		jw_str(j, "name", m->cma[i].name);
		jw_u64(j, "size", m->cma[i].size);
		jw_hex(j, "base", m->cma[i].base);
		jw_hex(j, "limit", m->cma[i].limit);
		jw_u64(j, "align", m->cma[i].align);
		jw_bool(j, "default", m->cma[i].is_default != 0);
		jw_end_obj(j);
	}
	jw_end_arr(j);
	jw_end_obj(j);
}

/* Percentiles come from the library's histogram as bucket upper bounds
 * (4 buckets per power of two); never show one above the maximum seen. */
static uint64_t lat_cap(uint64_t v, const struct dmm_cma_info *a)
{
	return v < a->lat_max_ns ? v : a->lat_max_ns;
}

static void json_lat(struct jw *j, const struct dmm_cma_info *a)
{
	jw_u64(j, "lat_count", a->lat_count);
	jw_u64(j, "lat_p50_ns", lat_cap(a->lat_p50_ns, a));
	jw_u64(j, "lat_p99_ns", lat_cap(a->lat_p99_ns, a));
	jw_u64(j, "lat_max_ns", a->lat_max_ns);
	jw_u64(j, "lat_mean_ns", a->lat_count ? a->lat_sum_ns / a->lat_count : 0);
}

/* One area as placed (and, in a run, its statistics). */
static void json_cma_area(struct jw *j, const struct dmm_cma_info *a, const char *zone, bool stats)
{
	jw_obj(j, NULL);
	jw_str(j, "name", a->name);
	jw_hex(j, "base", dmm_pfn_to_phys(a->base_pfn));
	jw_u64(j, "base_pfn", a->base_pfn);
	jw_u64(j, "size", a->nr_pages << DMM_PAGE_SHIFT);
	jw_u64(j, "nr_pages", a->nr_pages);
	jw_str(j, "zone", zone);
	jw_bool(j, "default", a->is_default != 0);
	jw_u64(j, "used_pages", a->used_pages);
	jw_u64(j, "free_pages", a->free_pages);
	jw_u64(j, "lent_pages", a->lent_pages);
	if (stats) {
		jw_u64(j, "allocs_tried", a->allocs_tried);
		jw_u64(j, "allocs_ok", a->allocs_ok);
		jw_u64(j, "releases", a->releases);
		jw_u64(j, "ranges_tried", a->ranges_tried);
		jw_u64(j, "pages_migrated", a->pages_migrated);
		jw_u64(j, "pages_remapped", a->pages_remapped);
		jw_obj(j, "fail");
		for (unsigned f = 0; f < DMM_NR_CMA_FAILS; f++)
			jw_u64(j, dmm_cma_fail_name((enum dmm_cma_fail)f), a->fail[f]);
		jw_end_obj(j);
		json_lat(j, a);
	}
	jw_end_obj(j);
}

static void json_mem(struct jw *j, const struct dmm_machine *m, const struct dmm_mem_info *info)
{
	jw_obj(j, "memmap");
	jw_u64(j, "ram_pages", info->ram_pages);
	jw_u64(j, "managed_pages", info->managed_pages);
	jw_u64(j, "reserved_pages", info->reserved_pages);
	jw_u64(j, "min_pfn", info->min_pfn);
	jw_u64(j, "max_pfn", info->max_pfn);
	jw_u64(j, "page_desc_size", info->page_desc_size);
	jw_u64(j, "metadata_bytes", info->metadata_bytes);
	jw_u64(j, "metadata_pages", info->metadata_pages);
	jw_dbl(j, "metadata_bytes_per_page",
	       info->ram_pages ? (double)info->metadata_bytes / (double)info->ram_pages : 0.0);
	jw_u64(j, "slab_map_bytes", info->slab_map_bytes);
	jw_u64(j, "nr_cpus", info->nr_cpus);
	jw_str(j, "cpu_sections", info->cpu_sections);
	jw_str(j, "bulk_copy", info->bulk_copy);
	jw_u64(j, "nr_zones", info->nr_zones);
	jw_u64(j, "init_ns", info->init_ns);
	jw_u64(j, "min_free_kbytes",
	       m->min_free_kbytes ? m->min_free_kbytes
				  : dmm_default_min_free_kbytes(info->managed_pages));
	jw_end_obj(j);
}

static void json_zone(struct jw *j, const struct dmm_zone_info *i)
{
	const struct dmm_zone_stats *s = &i->stats;

	jw_obj(j, NULL);
	jw_str(j, "name", i->name);
	jw_hex(j, "start", dmm_pfn_to_phys(i->start_pfn));
	jw_hex(j, "end", dmm_pfn_to_phys(i->end_pfn));
	jw_u64(j, "start_pfn", i->start_pfn);
	jw_u64(j, "end_pfn", i->end_pfn);
	jw_u64(j, "spanned", i->spanned);
	jw_u64(j, "present", i->present);
	jw_u64(j, "managed", i->managed);
	jw_u64(j, "free", i->free);
	jw_u64(j, "pcp", i->pcp);
	jw_u64(j, "min", i->wmark_min);
	jw_u64(j, "low", i->wmark_low);
	jw_u64(j, "high", i->wmark_high);
	jw_u64_array(j, "protection", i->protection, DMM_NR_ZONE_TYPES);
	jw_u64_array(j, "free_blocks", i->free_blocks, DMM_NR_ORDERS);
	jw_obj(j, "free_blocks_by_type");
	for (unsigned mt = 0; mt < DMM_NR_MIGRATETYPES; mt++)
		jw_u64_array(j, dmm_migratetype_name((enum dmm_migratetype)mt), i->free_blocks_mt[mt],
			     DMM_NR_ORDERS);
	jw_end_obj(j);
	jw_obj(j, "pageblocks");
	for (unsigned mt = 0; mt < DMM_NR_MIGRATETYPES; mt++)
		jw_u64(j, dmm_migratetype_name((enum dmm_migratetype)mt), i->pageblocks_mt[mt]);
	jw_end_obj(j);
	jw_obj(j, "stats");
	jw_u64(j, "alloc_ok", s->alloc_ok);
	jw_u64(j, "free_ok", s->free_ok);
	jw_u64(j, "pcp_alloc", s->pcp_alloc);
	jw_u64(j, "pcp_free", s->pcp_free);
	jw_u64(j, "pcp_refill", s->pcp_refill);
	jw_u64(j, "pcp_drain", s->pcp_drain);
	jw_u64(j, "fallback", s->fallback);
	jw_u64(j, "steal_block", s->steal_block);
	jw_u64(j, "range_ok", s->range_ok);
	jw_u64(j, "range_free", s->range_free);
	jw_u64(j, "range_pages", s->range_pages);
	jw_u64(j, "wmark_low_events", s->wmark_low_events);
	jw_u64(j, "bad_free", s->bad_free);
	jw_obj(j, "fail");
	for (unsigned r = 0; r < DMM_NR_FAIL_REASONS; r++)
		jw_u64(j, dmm_fail_reason_name((enum dmm_fail_reason)r), s->fail[r]);
	jw_end_obj(j);
	jw_end_obj(j);
	jw_end_obj(j);
}

/* ------------------------------------------------------------------------ */
/* info                                                                      */

static const char info_help[] =
	"Usage: dmamem info [OPTIONS]\n"
	"\n"
	"Build a machine from a profile and print its memory map: RAM regions,\n"
	"page descriptor size, metadata cost and initialisation time, the\n"
	"contiguous memory areas (name, range, size, zone, default, placement),\n"
	"and every zone with its range, start_pfn, spanned/present/managed/free\n"
	"pages, min/low/high watermarks, lowmem protection and free blocks by order.\n"
	"\n"
	"Options:\n"
	"  -p, --profile NAME        machine profile: a name from 'dmamem profiles'\n"
	"                            or a path to an .ini file (default: pc)\n"
	"  -P, --lowmem-policy POL   override the profile: fallback | reserved\n"
	"  -R, --lowmem-reserve-ratio \"A B C\"\n"
	"                            override the profile's lowmem_reserve_ratio\n"
	"      --cma-policy POL      override the profile: half | first | last | never\n"
	"      --longterm-pin-migrate on|off\n"
	"                            override the profile's longterm_pin_migrate\n"
	"  -c, --cpus N              per-CPU caches (default: online CPUs)\n"
	"  -j, --json                print one JSON object instead of text\n"
	"  -v, --verbose             print the library's messages (repeat for debug)\n"
	"  -h, --help                this text\n";

static int cmd_info(int argc, char **argv)
{
	static const struct option lo[] = {
		MACHINE_LONG_OPTIONS,
		{ NULL, 0, NULL, 0 },
	};
	struct machine_opts mo;
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_mem *mem;
	struct dmm_mem_info info;
	struct dmm_zone_info zi[DMM_NR_ZONE_TYPES];
	char path[4096], descr[160];
	unsigned nr;
	int c, rc;

	machine_opts_init(&mo);
	argv[0] = "dmamem info";
	help_hint = "dmamem info --help";
	optind = 1;
	while ((c = getopt_long(argc, argv, "p:P:R:c:jvh", lo, NULL)) != -1) {
		int r = machine_option(c, optarg, &mo);

		if (r < 0)
			return EXIT_USAGE;
		if (r)
			continue;
		if (c == 'h') {
			fputs(info_help, stdout);
			return 0;
		}
		fprintf(stderr, "Try '%s'.\n", help_hint);
		return EXIT_USAGE;
	}
	if (optind < argc) {
		usage_error("info: unexpected argument '%s'", argv[optind]);
		return EXIT_USAGE;
	}
	rc = build_machine(&mo, &m, &h, NULL, 0, &mem);
	if (rc)
		return rc == -DMM_ENOENT ? EXIT_USAGE : 1;
	profile_path(mo.profile, path, sizeof(path));
	profile_description(path, descr, sizeof(descr));
	dmm_mem_get_info(mem, &info);
	nr = dmm_mem_nr_zones(mem);
	for (unsigned z = 0; z < nr && z < DMM_NR_ZONE_TYPES; z++)
		dmm_zone_get_info(mem, z, &zi[z]);

	if (mo.json) {
		struct jw j = { .f = stdout };

		jw_obj(&j, NULL);
		jw_str(&j, "profile", path);
		json_machine(&j, &m, descr);
		json_mem(&j, &m, &info);
		jw_arr(&j, "zones");
		for (unsigned z = 0; z < nr; z++)
			json_zone(&j, &zi[z]);
		jw_end_arr(&j);
		jw_arr(&j, "cma");
		for (unsigned a = 0; a < dmm_cma_count(mem); a++) {
			struct dmm_cma_info ai;
			int z;

			dmm_cma_get_info(mem, (int)a, &ai);
			z = zone_index_of(zi, nr, ai.base_pfn);
			json_cma_area(&j, &ai, z >= 0 ? zi[z].name : NULL, false);
		}
		jw_end_arr(&j);
		jw_end_obj(&j);
	} else {
		print_machine_text(&m, descr);
		print_mem_text(&m, &info);
		print_cma_text(mem, &m, zi, nr);
		print_zone_table(zi, nr);
		printf("\nfree blocks by order (as /proc/buddyinfo):");
		print_order_table(zi, nr, false);
	}
	dmm_hosted_mem_destroy(h, mem);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* run                                                                       */

static void run_help(void)
{
	const char *const *names = dmm_workload_names();

	fputs("Usage: dmamem run [OPTIONS]\n"
	      "\n"
	      "Build a machine from a profile and run a seeded page-allocator workload\n"
	      "on it. Every block is checked against its constraint, its descriptors\n"
	      "and the other live blocks, and carries a pattern verified at free. The\n"
	      "summary shows operations, failures by reason, per-zone counters,\n"
	      "fragmentation (free pages by order) when the operations ended, time,\n"
	      "the statistics of each contiguous memory area, and the allocator\n"
	      "checks with the live set held and after freeing everything.\n"
	      "The dma workload runs on the hardware model instead: devices direct and\n"
	      "behind the IOMMU, every transferred byte verified, low memory per device.\n"
	      "Exit status 1 if any check failed.\n"
	      "\n"
	      "Options:\n"
	      "  -p, --profile NAME        machine profile (default: pc)\n"
	      "  -w, --workload NAME       workload (default: mixed), see below\n"
	      "  -s, --seed N              PRNG seed (default: 1)\n"
	      "  -n, --ops N               operation budget (default: depends on the\n"
	      "                            workload and the machine's size; not camera;\n"
	      "                            dma: transfers per variant, default 20000)\n"
	      "  -t, --threads N           mixed: threads sharing the budget (default: 1);\n"
	      "                            camera: 2 = page cache and camera on their own threads\n"
	      "  -C, --check-every N       also run the allocator checks every N\n"
	      "                            operations (default: only at the end)\n"
	      "  -r, --requests N          lowmem: 1 MiB range requests below the low\n"
	      "                            limit (default: half the low zone, 1..32)\n"
	      "      --frames N            camera: contiguous frame allocations (default 32)\n"
	      "      --frame-size SIZE     camera: frame size (default: area / 8 within\n"
	      "                            8..32 MiB, at most area / queue)\n"
	      "      --queue N             camera: frames held per streaming session (default 4)\n"
	      "      --churn N             camera: page-cache operations before each camera\n"
	      "                            step (default 256)\n"
	      "      --page-cache SIZE|all camera: page-cache size (default: 4 x the areas,\n"
	      "                            at least 256 MiB; all = every free page of the\n"
	      "                            zones holding an area)\n"
	      "      --pin PCT             camera: an RDMA-like user long-term pins PCT % of\n"
	      "                            the page cache during the run (default: none)\n"
	      "      --cma-area NAME       camera: the area to allocate from (default: the\n"
	      "                            machine's default area)\n"
	      "      --uncached yes|no|auto\n"
	      "                            camera: remap frames uncached; auto = when the\n"
	      "                            machine's DMA is non-coherent (dma_min_align >\n"
	      "                            cache_line)\n"
	      "      --iommu off|on|both   dma: run the devices direct (bounce buffers), behind\n"
	      "                            the IOMMU, or both with the same seed (default both)\n"
	      "      --iommu-flush strict|deferred\n"
	      "                            dma: IOTLB invalidation of the IOMMU variant: on every\n"
	      "                            unmap (default) or batched in a flush queue\n"
	      "      --iova-align pow2|page\n"
	      "                            dma: IOVA sizes rounded to a power of two and aligned\n"
	      "                            to it (default, as Linux), or to whole pages\n"
	      "  -P, --lowmem-policy POL   override the profile: fallback | reserved\n"
	      "  -R, --lowmem-reserve-ratio \"A B C\"\n"
	      "                            override the profile's lowmem_reserve_ratio\n"
	      "      --cma-policy POL      override the profile: half | first | last | never\n"
	      "      --longterm-pin-migrate on|off\n"
	      "                            override the profile: do long-term pins migrate\n"
	      "                            pages out of contiguous areas first?\n"
	      "  -c, --cpus N              per-CPU caches (default: online CPUs)\n"
	      "  -j, --json                print one JSON object instead of text\n"
	      "  -v, --verbose             print the library's messages\n"
	      "  -h, --help                this text\n"
	      "\n"
	      "Workloads:\n",
	      stdout);
	for (unsigned i = 0; names[i]; i++)
		printf("  %-9s %s\n", names[i], dmm_workload_describe(names[i]));
}

/* Say why the lowmem demonstration shows no difference, when it cannot. */
static void lowmem_notes(const struct dmm_machine *m, const struct dmm_workload_result *r)
{
	const struct dmm_workload_lowmem *l = &r->lowmem;
	const struct dmm_zone_info *lz = NULL, *top = NULL;

	for (unsigned z = 0; z < r->nr_zones; z++) {
		if ((int)r->zone[z].type == l->low_zone)
			lz = &r->zone[z];
		top = &r->zone[z];
	}
	if (l->low_zone != DMM_ZONE_DMA)
		printf("  note: the low-zone policy governs the DMA zone only; this machine has none,\n"
		       "        so %s is shared with ordinary allocations under either policy\n",
		       dmm_zone_name((enum dmm_zone_type)l->low_zone));
	else if (m->lowmem_policy == DMM_LOWMEM_FALLBACK && !l->low_zone_taken && lz && top &&
		 lz != top && lz->protection[top->type] + lz->wmark_min >= lz->managed)
		printf("  note: ordinary allocations never reached %s: its lowmem_reserve protection\n"
		       "        against %s allocations (%" PRIu64 " pages) exceeds the %" PRIu64
		       " pages it manages.\n"
		       "        Try --lowmem-reserve-ratio \"0 %u %u\" to see fallback without it.\n",
		       lz->name, top->name, lz->protection[top->type], lz->managed,
		       m->lowmem_reserve_ratio[1], m->lowmem_reserve_ratio[2]);
}

/* "850 ns", "12.5 us", "3.20 ms", "1.05 s" */
static const char *fmt_ns(uint64_t ns, char *buf, size_t len)
{
	if (ns < 1000)
		snprintf(buf, len, "%" PRIu64 " ns", ns);
	else if (ns < 1000000)
		snprintf(buf, len, "%.1f us", (double)ns / 1e3);
	else if (ns < 1000000000)
		snprintf(buf, len, "%.2f ms", (double)ns / 1e6);
	else
		snprintf(buf, len, "%.2f s", (double)ns / 1e9);
	return buf;
}

static double pct(uint64_t part, uint64_t whole)
{
	return whole ? 100.0 * (double)part / (double)whole : 0.0;
}

/* "pinned 12, busy 3" or "none" */
static void print_cma_fails(const uint64_t *fail)
{
	bool any = false;

	for (unsigned f = 0; f < DMM_NR_CMA_FAILS; f++) {
		if (!fail[f])
			continue;
		printf("%s%s %" PRIu64, any ? ", " : "", dmm_cma_fail_name((enum dmm_cma_fail)f),
		       fail[f]);
		any = true;
	}
	printf("%s\n", any ? "" : "none");
}

/* Per-area statistics of a run (cumulative, taken when the operations ended). */
static void print_run_cma(const struct dmm_machine *m, const struct dmm_workload_result *r)
{
	char b1[32], b2[32], b3[32], b4[32];

	if (!r->nr_cma)
		return;
	printf("\ncontiguous memory areas when the operations ended (CMA policy %s, "
	       "long-term pins migrate: %s):\n",
	       cma_policy_name(m->cma_policy), m->longterm_pin_migrate ? "yes" : "no");
	for (unsigned i = 0; i < r->nr_cma; i++) {
		const struct dmm_cma_info *a = &r->cma[i];
		int z = r->cma_zone[i];

		printf("  %s%s: [0x%010" PRIx64 "-0x%010" PRIx64 "] %s in %s\n", a->name,
		       a->is_default ? " (default)" : "", dmm_pfn_to_phys(a->base_pfn),
		       dmm_pfn_to_phys(a->base_pfn + a->nr_pages) - 1,
		       human(a->nr_pages << DMM_PAGE_SHIFT, b1, sizeof(b1)),
		       z >= 0 ? r->zone[z].name : "?");
		printf("    pages        %" PRIu64 ": %" PRIu64 " handed out, %" PRIu64
		       " lent to movable pages (%.1f %%), %" PRIu64 " free\n",
		       a->nr_pages, a->used_pages, a->lent_pages, pct(a->lent_pages, a->nr_pages),
		       a->free_pages);
		printf("    allocations  %" PRIu64 " tried, %" PRIu64 " ok (%.1f %%), %" PRIu64
		       " released; %" PRIu64 " candidate ranges examined\n",
		       a->allocs_tried, a->allocs_ok, pct(a->allocs_ok, a->allocs_tried), a->releases,
		       a->ranges_tried);
		if (a->lat_count)
			printf("    latency      p50 %s, p99 %s, max %s, mean %s (successful allocations)\n",
			       fmt_ns(lat_cap(a->lat_p50_ns, a), b1, sizeof(b1)),
			       fmt_ns(lat_cap(a->lat_p99_ns, a), b2, sizeof(b2)),
			       fmt_ns(a->lat_max_ns, b3, sizeof(b3)),
			       fmt_ns(a->lat_sum_ns / a->lat_count, b4, sizeof(b4)));
		printf("    migrated     %" PRIu64 " pages, remapped %" PRIu64 " pages\n",
		       a->pages_migrated, a->pages_remapped);
		printf("    failures     ");
		print_cma_fails(a->fail);
	}
}

static void print_camera_text(const struct dmm_workload_result *r)
{
	const struct dmm_workload_camera *c = &r->camera;
	const struct dmm_cma_info *a = (unsigned)c->area < r->nr_cma ? &r->cma[c->area] : NULL;
	const struct dmm_migrate_stats *mg = &c->mig;
	char b1[32], b2[32], b3[32];
	bool any = false;

	printf("\ncamera: area %s, frames of %s (%" PRIu64 " pages, aligned %s), queue of %u, "
	       "%" PRIu64 " sessions%s\n",
	       a ? a->name : "?", human(c->frame_pages << DMM_PAGE_SHIFT, b1, sizeof(b1)),
	       c->frame_pages, human(c->frame_align, b2, sizeof(b2)), c->queue, c->sessions,
	       c->uncached ? ", remapped uncached (non-coherent DMA)" : "");
	printf("  page cache       %" PRIu64 " handles kept (%s), %" PRIu64
	       " after the fill;\n                   ballast %" PRIu64 " pages (memory of other users: untouched blocks)\n",
	       c->target_handles, human(c->target_handles << DMM_PAGE_SHIFT, b1, sizeof(b1)),
	       c->fill_handles, c->ballast_pages);
	if (a)
		printf("  area lent        %.1f %% after the fill, %.1f %% when the operations ended\n",
		       pct(c->lent_after_fill, a->nr_pages), pct(c->lent_end, a->nr_pages));
	printf("  churn            %" PRIu64 " operations (%" PRIu64 " per camera step): %" PRIu64
	       " allocations (%" PRIu64 " ok), %" PRIu64 " frees\n",
	       c->churn_ops, c->churn_per_step, c->churn_allocs, c->churn_allocs_ok,
	       c->churn_frees);
	printf("  CMA allocations  %" PRIu64 " tried, %" PRIu64 " ok: success rate %.1f %%\n",
	       c->cma_tried, c->cma_ok, pct(c->cma_ok, c->cma_tried));
	if (a && a->lat_count)
		printf("  latency          p50 %s, p99 %s, max %s\n",
		       fmt_ns(lat_cap(a->lat_p50_ns, a), b1, sizeof(b1)),
		       fmt_ns(lat_cap(a->lat_p99_ns, a), b2, sizeof(b2)),
		       fmt_ns(a->lat_max_ns, b3, sizeof(b3)));
	printf("  failure reasons  ");
	print_cma_fails(c->cma_fail);
	printf("  migration        %" PRIu64 " pages migrated (%s copied), %" PRIu64
	       " by the handle table; not moved:",
	       mg->moved, human(mg->bytes_copied, b1, sizeof(b1)), c->handles_migrated);
	for (unsigned i = 1; i < DMM_NR_MIGRATE_REASONS; i++) {
		if (!mg->failed[i])
			continue;
		printf("%s %s %" PRIu64, any ? "," : "",
		       dmm_migrate_reason_name((enum dmm_migrate_reason)i), mg->failed[i]);
		any = true;
	}
	printf("%s\n", any ? "" : " none");
	printf("  pages remapped   %" PRIu64 "\n", a ? a->pages_remapped : 0);
	if (c->pin_pct > 0) {
		printf("  long-term pins   %.3g %% of the page cache, longterm_pin_migrate %s\n",
		       c->pin_pct, c->longterm_pin_migrate ? "on" : "off");
		printf("    taken          %" PRIu64 " of %" PRIu64 " requests, %" PRIu64
		       " failed, %" PRIu64 " retried\n",
		       c->pins_taken, c->pins_wanted, c->pins_failed, c->pins_retried);
		printf("    migrated first %" PRIu64 " (out of an area; %" PRIu64 " of them failed)\n",
		       mg->longterm_pin_migrations, mg->longterm_pin_failures);
		if (c->pins_failed) {
			printf("    failed by      ");
			any = false;
			for (unsigned i = 0; i < DMM_NR_MIGRATE_REASONS; i++) {
				if (!c->pin_fail[i])
					continue;
				printf("%s%s %" PRIu64, any ? ", " : "",
				       dmm_migrate_reason_name((enum dmm_migrate_reason)i), c->pin_fail[i]);
				any = true;
			}
			printf("\n");
		}
		printf("    held           %" PRIu64 " pinned pages when the operations ended, %" PRIu64
		       " of them inside a contiguous area; %" PRIu64 " unpinned\n",
		       c->pins_held_end, c->pins_in_areas_end, c->unpins);
	}
	printf("  contents         %" PRIu64 " pages re-verified during the run (%" PRIu64
	       " damaged), %" PRIu64 " frame passes written, %" PRIu64 " checked (%" PRIu64
	       " damaged)\n",
	       c->samples, c->sample_errors, c->frame_writes, c->frame_checks, c->frame_errors);
	printf("  verification     every handle at the end: %" PRIu64 " verified, %" PRIu64
	       " damaged%s\n",
	       c->final_verified, c->final_errors,
	       c->final_errors ? "" : " (migration lost no byte)");
}

static const char *dma_iommu_name(int v)
{
	return v == DMM_WL_IOMMU_OFF ? "off" : v == DMM_WL_IOMMU_ON ? "on" : "both";
}

static const char *dma_flush_name(int v)
{
	return v == DMM_IOMMU_DEFERRED ? "deferred" : "strict";
}

static const char *dma_align_name(int v)
{
	return v == DMM_IOVA_ALIGN_PAGE ? "page" : "pow2";
}

/* The dma workload's device entries, grouped by device (variants adjacent). */
static const struct dmm_workload_dma_dev *dma_dev(const struct dmm_workload_dma *d, unsigned k,
						  unsigned v)
{
	return &d->dev[k * d->nr_variants + v];
}

static void print_fail_codes(const char *what, const uint64_t *tab)
{
	uint64_t n = 0;

	printf("%s:", what);
	for (unsigned e = 1; e < DMM__NR_ERRORS; e++) {
		if (!tab[e])
			continue;
		n += tab[e];
		printf("\n  %-12s %10" PRIu64 "  %s", dmm_errname((int)e), tab[e], dmm_strerror((int)e));
	}
	printf("%s\n", n ? "" : " none");
}

static void print_dma_text(const struct dmm_machine *m, const struct dmm_workload_result *r)
{
	const struct dmm_workload_dma *d = &r->dma;
	unsigned nk = d->nr_variants ? d->nr_devs / d->nr_variants : 0;
	uint64_t map_fail[DMM__NR_ERRORS] = { 0 }, free_fails = 0;
	bool ok = dmm_workload_result_ok(r), any_iommu = false;
	char b1[32], b2[32], b3[32];

	printf("workload dma on %s: seed %" PRIu64 ", 1 thread, devices %s, IOMMU %s", m->name, r->seed,
	       d->coherent ? "coherent" : "non-coherent (dma_min_align > cache_line)",
	       dma_iommu_name(d->iommu));
	if (d->iommu != DMM_WL_IOMMU_OFF)
		printf(" (%s invalidation, IOVA sizes %s)", dma_flush_name(d->flush),
		       dma_align_name(d->iova_align));
	printf("\n\ntransfers       %" PRIu64 " per variant", d->ops);
	for (unsigned v = 0; v < d->nr_variants; v++)
		printf("%s %s %.3f s", v ? "," : ";", d->variant_iommu[v] ? "iommu" : "direct",
		       (double)d->variant_ns[v] / 1e9);
	printf(" (checks and teardown %.3f s)\n", (double)r->teardown_ns / 1e9);
	for (unsigned k = 0; k < nk; k++) {
		const struct dmm_workload_dma_dev *x = dma_dev(d, k, 0);

		printf("  %-13s %" PRIu64 " %s (%" PRIu64 " completed), at most %u in flight\n", x->name,
		       x->transfers, x->sg_maps || x->mask_bits == 64 ? "requests" : "packets",
		       x->completed, x->depth);
	}

	printf("\n%-7s %4s  %-6s %8s %8s %12s %12s %13s %14s %7s\n", "device", "bits", "mode", "maps",
	       "bounced", "bytes moved", "low mem now", "low mem peak", "coh low pages", "failed");
	for (unsigned k = 0; k < nk; k++)
		for (unsigned v = 0; v < d->nr_variants; v++) {
			const struct dmm_workload_dma_dev *x = dma_dev(d, k, v);

			printf("%-7s %4u  %-6s %8" PRIu64 " %8" PRIu64 " %12s %12s %13s %14" PRIu64
			       " %7" PRIu64 "\n",
			       x->name, x->mask_bits, x->iommu ? "iommu" : "direct", x->maps, x->bounced_maps,
			       human(x->bytes_moved, b1, sizeof(b1)), human(x->low_now_bytes, b2, sizeof(b2)),
			       human(x->low_peak_bytes, b3, sizeof(b3)), x->coherent_low_pages,
			       x->map_failed + x->alloc_failed);
			any_iommu |= x->iommu != 0;
			for (unsigned e = 0; e < DMM__NR_ERRORS; e++)
				map_fail[e] += x->map_fail[e];
		}

	if (any_iommu) {
		printf("\nbehind the IOMMU (IOTLB figures from the model, this device's accesses):\n");
		printf("%-7s %9s %7s %6s %7s %8s %9s %10s %8s %6s %6s\n", "device", "IOVA hit", "ranges",
		       "depth", "tables", "inval", "fq flush", "IOTLB hit", "miss", "stale", "faults");
		for (unsigned k = 0; k < nk; k++)
			for (unsigned v = 0; v < d->nr_variants; v++) {
				const struct dmm_workload_dma_dev *x = dma_dev(d, k, v);

				if (!x->iommu)
					continue;
				printf("%-7s %8.1f%% %7" PRIu64 " %6" PRIu64 " %7" PRIu64 " %8" PRIu64
				       " %9" PRIu64 " %10" PRIu64 " %8" PRIu64 " %6" PRIu64 " %6" PRIu64 "\n",
				       x->name, pct(x->iova_cache_hits, x->iova_allocs), x->iova_ranges,
				       x->iova_tree_depth, x->pt_tables_end, x->invalidations, x->fq_flushes,
				       x->iotlb_hits, x->iotlb_misses, x->iotlb_stale, x->iommu_faults);
			}
	}

	printf("\n");
	for (unsigned k = 0; k < nk; k++) {
		const struct dmm_workload_dma_dev *dir = NULL, *iom = NULL;

		for (unsigned v = 0; v < d->nr_variants; v++) {
			const struct dmm_workload_dma_dev *x = dma_dev(d, k, v);

			if (x->iommu)
				iom = x;
			else
				dir = x;
		}
		if (dma_dev(d, k, 0)->mask_bits > 32)
			continue;
		printf("%s (%u-bit):", dma_dev(d, k, 0)->name, dma_dev(d, k, 0)->mask_bits);
		if (iom)
			printf(" behind the IOMMU: %s below 4 GiB at peak%s", human(iom->low_peak_bytes, b1, sizeof(b1)),
			       dir ? ";" : "");
		if (dir) {
			printf(" direct: %s (%s of rings, %" PRIu64 " of %" PRIu64 " maps bounced",
			       human(dir->low_peak_bytes, b2, sizeof(b2)),
			       human(dir->coherent_low_pages * DMM_PAGE_SIZE, b3, sizeof(b3)), dir->bounced_maps,
			       dir->maps);
			if (d->swiotlb)
				printf(" through the machine's %s bounce pool", human(d->swiotlb_bytes, b1, sizeof(b1)));
			printf(")");
		}
		printf("\n");
	}

	if (d->swiotlb)
		printf("\nbounce buffers  %s in %" PRIu64 " pool%s below 4 GiB (set up for the direct variant),"
		       " high water %" PRIu64 " slots of %" PRIu64 " B;\n"
		       "                bounced %s to the devices, %s back; %" PRIu64 " \"full\" failures\n",
		       human(d->swiotlb_bytes, b1, sizeof(b1)), d->swiotlb_pools,
		       d->swiotlb_pools == 1 ? "" : "s", d->swiotlb_high_water_slots, d->swiotlb_slot_size,
		       human(d->swiotlb_bounced_to_device, b2, sizeof(b2)),
		       human(d->swiotlb_bounced_from_device, b3, sizeof(b3)), d->swiotlb_fail_full);
	else
		printf("\nbounce buffers  not set up (no direct variant)\n");

	printf("\n");
	print_fail_codes("failed maps by reason", map_fail);
	print_fail_codes("failed buffer allocations by reason", r->alloc_fail);

	for (unsigned e = 0; e < DMM__NR_ERRORS; e++)
		free_fails += r->free_fail[e];
	printf("\nchecks:\n");
	printf("  data errors             %" PRIu64 "\n", d->data_errors);
	printf("  device faults           %" PRIu64 "\n", d->faults);
	printf("  bus address over mask   %" PRIu64 "\n", d->mask_violations);
	if (any_iommu) {
		bool e = false, f = false;

		for (unsigned i = 0; i < d->nr_devs; i++) {
			e |= d->dev[i].iommu_check_end != 0;
			f |= d->dev[i].iommu_check_final != 0;
		}
		printf("  stale IOTLB hits        %" PRIu64 "\n", d->iotlb_stale);
		printf("  dmm_device_iommu_check  %s with the mappings live, %s after unmapping everything\n",
		       e ? "FAILED" : "ok", f ? "FAILED" : "ok");
	}
	if (d->swiotlb)
		printf("  dmm_swiotlb_check       %s\n", d->swiotlb_check ? "FAILED" : "ok");
	printf("  dmm_slab_check          %s; kmalloc objects %" PRIu64 " before, %" PRIu64 " after\n",
	       d->slab_check ? "FAILED" : "ok", d->kmalloc_live_start, d->kmalloc_live_end);
	printf("  dmm_hw_check            %s (dirty lines discarded: %" PRIu64 ")\n",
	       d->hw_check ? "FAILED" : "ok", d->hw_dirty_discarded);
	printf("  rejected frees          %" PRIu64 "\n", free_fails);
	if (r->checks_run)
		printf("  periodic checks         %" PRIu64 " run, %" PRIu64 " failed\n", r->checks_run,
		       r->checks_failed);
	printf("  dmm_page_alloc_check    %s with the live set, %s after freeing everything\n",
	       r->page_check_end ? "FAILED" : "ok", r->page_check_final ? "FAILED" : "ok");
	printf("  dmm_range_check         %s with the live set, %s after freeing everything\n",
	       r->range_check_end ? "FAILED" : "ok", r->range_check_final ? "FAILED" : "ok");
	if (r->nr_cma)
		printf("  dmm_cma_check           %s with the live set, %s after freeing everything\n",
		       r->cma_check_end ? "FAILED" : "ok", r->cma_check_final ? "FAILED" : "ok");
	{
		int64_t kept = (int64_t)d->slab_pages_end - (int64_t)d->slab_pages_start;
		bool bal = r->final_free_pages + d->slab_pages_end == r->start_free_pages + d->slab_pages_start;

		printf("  free pages              %" PRIu64 " before, %" PRIu64 " after, %" PRId64
		       " more in slab caches%s\n",
		       r->start_free_pages, r->final_free_pages, kept,
		       bal ? " (all returned)" : " (MISMATCH)");
	}
	printf("\nresult: %s\n", ok ? "ok" : "ERRORS FOUND");
}

static void json_dma(struct jw *j, const struct dmm_workload_result *r)
{
	const struct dmm_workload_dma *d = &r->dma;

	jw_obj(j, "dma");
	jw_str(j, "iommu", dma_iommu_name(d->iommu));
	jw_str(j, "iommu_flush", dma_flush_name(d->flush));
	jw_str(j, "iova_align", dma_align_name(d->iova_align));
	jw_bool(j, "coherent", d->coherent != 0);
	jw_u64(j, "ops", d->ops);
	jw_arr(j, "variants");
	for (unsigned v = 0; v < d->nr_variants; v++) {
		jw_obj(j, NULL);
		jw_str(j, "mode", d->variant_iommu[v] ? "iommu" : "direct");
		jw_u64(j, "elapsed_ns", d->variant_ns[v]);
		jw_end_obj(j);
	}
	jw_end_arr(j);
	jw_arr(j, "devices");
	for (unsigned k = 0; d->nr_variants && k < d->nr_devs / d->nr_variants; k++)
		for (unsigned v = 0; v < d->nr_variants; v++) {
			const struct dmm_workload_dma_dev *x = dma_dev(d, k, v);

			jw_obj(j, NULL);
			jw_str(j, "name", x->name);
			jw_u64(j, "mask_bits", x->mask_bits);
			jw_str(j, "mode", x->iommu ? "iommu" : "direct");
			jw_bool(j, "coherent", x->coherent != 0);
			jw_u64(j, "depth", x->depth);
			jw_u64(j, "transfers", x->transfers);
			jw_u64(j, "completed", x->completed);
			jw_u64(j, "maps", x->maps);
			jw_u64(j, "sg_maps", x->sg_maps);
			jw_u64(j, "sg_entries", x->sg_entries);
			jw_u64(j, "sg_segments", x->sg_segments);
			jw_u64(j, "bounced_maps", x->bounced_maps);
			jw_u64(j, "bytes_moved", x->bytes_moved);
			jw_u64(j, "low_now_bytes", x->low_now_bytes);
			jw_u64(j, "low_peak_bytes", x->low_peak_bytes);
			jw_u64(j, "coherent_low_pages", x->coherent_low_pages);
			jw_u64(j, "coherent_bytes", x->coherent_bytes);
			jw_u64(j, "map_failed", x->map_failed);
			jw_obj(j, "map_fail");
			for (unsigned e = 1; e < DMM__NR_ERRORS; e++)
				if (x->map_fail[e])
					jw_u64(j, dmm_errname((int)e), x->map_fail[e]);
			jw_end_obj(j);
			jw_u64(j, "alloc_failed", x->alloc_failed);
			jw_u64(j, "data_errors", x->data_errors);
			jw_u64(j, "faults", x->faults);
			jw_u64(j, "mask_violations", x->mask_violations);
			if (x->iommu) {
				jw_obj(j, "iommu");
				jw_u64(j, "iova_allocs", x->iova_allocs);
				jw_u64(j, "iova_cache_hits", x->iova_cache_hits);
				jw_dbl(j, "iova_cache_hit_rate",
				       x->iova_allocs ? (double)x->iova_cache_hits / (double)x->iova_allocs : 0.0);
				jw_u64(j, "iova_ranges", x->iova_ranges);
				jw_u64(j, "iova_tree_depth", x->iova_tree_depth);
				jw_u64(j, "iova_largest_free", x->iova_largest_free);
				jw_u64(j, "pt_tables", x->pt_tables_end);
				jw_u64(j, "invalidations", x->invalidations);
				jw_u64(j, "fq_flushes", x->fq_flushes);
				jw_u64(j, "fq_timeouts", x->fq_timeouts);
				jw_u64(j, "iotlb_hits", x->iotlb_hits);
				jw_u64(j, "iotlb_misses", x->iotlb_misses);
				jw_u64(j, "iotlb_stale_hits", x->iotlb_stale);
				jw_u64(j, "iommu_faults", x->iommu_faults);
				jw_int(j, "iommu_check_end", x->iommu_check_end);
				jw_int(j, "iommu_check_final", x->iommu_check_final);
				jw_end_obj(j);
			}
			jw_end_obj(j);
		}
	jw_end_arr(j);
	jw_obj(j, "swiotlb");
	jw_bool(j, "set_up", d->swiotlb != 0);
	jw_u64(j, "bytes", d->swiotlb_bytes);
	jw_u64(j, "pools", d->swiotlb_pools);
	jw_u64(j, "slot_size", d->swiotlb_slot_size);
	jw_u64(j, "high_water_slots", d->swiotlb_high_water_slots);
	jw_u64(j, "bounced_to_device", d->swiotlb_bounced_to_device);
	jw_u64(j, "bounced_from_device", d->swiotlb_bounced_from_device);
	jw_u64(j, "fail_full", d->swiotlb_fail_full);
	jw_int(j, "check", d->swiotlb_check);
	jw_end_obj(j);
	jw_u64(j, "data_errors", d->data_errors);
	jw_u64(j, "faults", d->faults);
	jw_u64(j, "mask_violations", d->mask_violations);
	jw_u64(j, "iotlb_stale_hits", d->iotlb_stale);
	jw_u64(j, "slab_pages_start", d->slab_pages_start);
	jw_u64(j, "slab_pages_end", d->slab_pages_end);
	jw_u64(j, "kmalloc_live_start", d->kmalloc_live_start);
	jw_u64(j, "kmalloc_live_end", d->kmalloc_live_end);
	jw_int(j, "slab_check", d->slab_check);
	jw_int(j, "hw_check", d->hw_check);
	jw_u64(j, "hw_dirty_discarded", d->hw_dirty_discarded);
	jw_end_obj(j);
}

static void print_run_text(const struct dmm_machine *m, const struct dmm_workload_result *r)
{
	if (strcmp(r->workload, "dma") == 0) {
		print_dma_text(m, r);
		return;
	}

	double secs = (double)r->elapsed_ns / 1e9;
	uint64_t fails = 0, free_fails = 0;
	bool ok = dmm_workload_result_ok(r);

	printf("workload %s on %s: seed %" PRIu64 ", %u thread%s, low-zone policy %s", r->workload,
	       m->name, r->seed, r->threads, r->threads == 1 ? "" : "s",
	       policy_name(m->lowmem_policy));
	if (m->nr_cma)
		printf(", CMA policy %s, long-term pins migrate: %s", cma_policy_name(m->cma_policy),
		       m->longterm_pin_migrate ? "yes" : "no");
	printf("\n");
	printf("\noperations      %" PRIu64 " in %.3f s (%.2f M ops/s), teardown %.3f s\n", r->ops,
	       secs, secs > 0 ? (double)r->ops / secs / 1e6 : 0.0, (double)r->teardown_ns / 1e9);
	printf("  page allocs   %" PRIu64 " (%" PRIu64 " ok)\n", r->page_allocs, r->page_allocs_ok);
	printf("  range allocs  %" PRIu64 " (%" PRIu64 " ok)\n", r->range_allocs,
	       r->range_allocs_ok);
	printf("  frees         %" PRIu64 " (and %" PRIu64 " at teardown)\n", r->frees_ok,
	       r->teardown_frees);
	printf("  live set      peak %" PRIu64 " pages (%.1f %% of %" PRIu64
	       " managed), %" PRIu64 " when the operations ended\n",
	       r->peak_live_pages,
	       r->managed_pages ? 100.0 * (double)r->peak_live_pages / (double)r->managed_pages
				: 0.0,
	       r->managed_pages, r->end_live_pages);

	printf("\nfailed allocations by reason:");
	for (unsigned e = 1; e < DMM__NR_ERRORS; e++) {
		if (!r->alloc_fail[e])
			continue;
		fails += r->alloc_fail[e];
		printf("\n  %-12s %10" PRIu64 "  %s", dmm_errname((int)e), r->alloc_fail[e],
		       dmm_strerror((int)e));
	}
	printf("%s\n", fails ? "" : " none");

	printf("\nper-zone counters (allocator):\n");
	printf("%-7s %10s %10s %10s %10s %9s %8s %9s", "zone", "alloc_ok", "pcp_alloc", "free_ok",
	       "range_ok", "fallback", "steal", "wmark_low");
	for (unsigned f = 0; f < DMM_NR_FAIL_REASONS; f++)
		printf(" %13s", dmm_fail_reason_name((enum dmm_fail_reason)f));
	printf("\n");
	for (unsigned z = 0; z < r->nr_zones; z++) {
		const struct dmm_zone_stats *s = &r->zone[z].stats;

		printf("%-7s %10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %9" PRIu64
		       " %8" PRIu64 " %9" PRIu64,
		       r->zone[z].name, s->alloc_ok, s->pcp_alloc, s->free_ok, s->range_ok,
		       s->fallback, s->steal_block, s->wmark_low_events);
		for (unsigned f = 0; f < DMM_NR_FAIL_REASONS; f++)
			printf(" %13" PRIu64, s->fail[f]);
		printf("\n");
	}

	printf("\nfragmentation when the operations ended (free pages by order):");
	print_order_table(r->zone, r->nr_zones, true);
	printf("%-7s %10s %10s %12s %12s\n", "zone", "free", "pcp", "unusable@9", "unusable@10");
	for (unsigned z = 0; z < r->nr_zones; z++)
		printf("%-7s %10" PRIu64 " %10" PRIu64 " %11.1f%% %11.1f%%\n", r->zone[z].name,
		       r->zone[z].free, r->zone[z].pcp, 100.0 * unusable_index(&r->zone[z], 9),
		       100.0 * unusable_index(&r->zone[z], 10));

	if (strcmp(r->workload, "lowmem") == 0) {
		const struct dmm_workload_lowmem *l = &r->lowmem;
		char b[32];

		printf("\nlowmem: low zone %s, limit 0x%" PRIx64 " (%s), %" PRIu64 " pages managed\n",
		       dmm_zone_name((enum dmm_zone_type)l->low_zone), l->limit,
		       human(l->limit, b, sizeof(b)), l->low_zone_managed);
		printf("  higher zones filled with   %" PRIu64 " pages\n", l->prefill_pages);
		printf("  ordinary unmovable blocks  %" PRIu64 " (%" PRIu64 " pages), %" PRIu64
		       " pages of them in the low zone\n",
		       l->pressure_blocks, l->pressure_pages, l->low_zone_taken);
		printf("  low zone free              %" PRIu64 " pages before the requests\n",
		       l->low_zone_free);
		printf("  1 MiB requests below limit %u of %u succeeded", l->requests_ok, l->requests);
		if (l->first_error)
			printf(" (first failure: %s)", dmm_errname(l->first_error));
		printf("\n");
		lowmem_notes(m, r);
	}
	if (strcmp(r->workload, "fragment") == 0) {
		const struct dmm_workload_fragment *f = &r->fragment;
		char b[32];

		printf("\nfragment: filled %" PRIu64 " pages, %" PRIu64
		       " still held after freeing half the blocks\n",
		       f->fill_pages, f->held_pages);
		printf("  free pages                 %" PRIu64 "\n", f->free_pages);
		printf("  largest range              %" PRIu64 " pages (%s)\n", f->largest_range,
		       human(f->largest_range << DMM_PAGE_SHIFT, b, sizeof(b)));
		for (unsigned z = 0; z < r->nr_zones; z++)
			printf("    in %-7s               %" PRIu64 " pages\n", r->zone[z].name,
			       f->largest_range_zone[z]);
		printf("  order-9 blocks obtainable  %" PRIu64 " (%.1f %% of free memory)\n",
		       f->order_blocks[9],
		       f->free_pages ? 100.0 * (double)(f->order_blocks[9] << 9) / (double)f->free_pages
				     : 0.0);
		printf("  order-10 blocks obtainable %" PRIu64 " (%.1f %% of free memory)\n",
		       f->order_blocks[10],
		       f->free_pages
			       ? 100.0 * (double)(f->order_blocks[10] << 10) / (double)f->free_pages
			       : 0.0);
	}

	if (strcmp(r->workload, "camera") == 0)
		print_camera_text(r);
	print_run_cma(m, r);

	for (unsigned e = 0; e < DMM__NR_ERRORS; e++)
		free_fails += r->free_fail[e];
	printf("\nchecks:\n");
	printf("  constraint violations   %" PRIu64 "\n", r->constraint_violations);
	printf("  descriptor errors       %" PRIu64 "\n", r->descriptor_errors);
	printf("  pages owned twice       %" PRIu64 "\n", r->overlaps);
	printf("  corrupted blocks        %" PRIu64 "\n", r->corruptions);
	printf("  rejected frees          %" PRIu64 "\n", free_fails);
	if (r->checks_run)
		printf("  periodic checks         %" PRIu64 " run, %" PRIu64 " failed\n",
		       r->checks_run, r->checks_failed);
	printf("  dmm_page_alloc_check    %s with the live set, %s after freeing everything\n",
	       r->page_check_end ? "FAILED" : "ok", r->page_check_final ? "FAILED" : "ok");
	printf("  dmm_range_check         %s with the live set, %s after freeing everything\n",
	       r->range_check_end ? "FAILED" : "ok", r->range_check_final ? "FAILED" : "ok");
	if (r->nr_cma)
		printf("  dmm_cma_check           %s with the live set, %s after freeing everything\n",
		       r->cma_check_end ? "FAILED" : "ok", r->cma_check_final ? "FAILED" : "ok");
	if (strcmp(r->workload, "camera") == 0) {
		const struct dmm_workload_camera *c = &r->camera;

		printf("  dmm_handles_check       %s with the page cache held\n",
		       c->handles_check_end ? "FAILED" : "ok");
		printf("  damaged pages/frames    %" PRIu64 " during the run, %" PRIu64
		       " at the end, %" PRIu64 " frames\n",
		       c->sample_errors, c->final_errors, c->frame_errors);
		printf("  frames outside area     %" PRIu64 "\n", c->frame_outside);
		if (c->pin_pct > 0)
			printf("  pinned pages moved      %" PRIu64 ", failed unpins %" PRIu64 "\n",
			       c->pinned_moved, c->unpin_errors);
	}
	printf("  free pages              %" PRIu64 " before, %" PRIu64 " after%s\n",
	       r->start_free_pages, r->final_free_pages,
	       r->final_free_pages == r->start_free_pages ? " (all returned)" : " (MISMATCH)");
	printf("\nresult: %s\n", ok ? "ok" : "ERRORS FOUND");
}

static void json_camera(struct jw *j, const struct dmm_workload_result *r)
{
	const struct dmm_workload_camera *c = &r->camera;
	const struct dmm_cma_info *a = (unsigned)c->area < r->nr_cma ? &r->cma[c->area] : NULL;
	const struct dmm_migrate_stats *mg = &c->mig;

	jw_obj(j, "camera");
	jw_str(j, "area", a ? a->name : NULL);
	jw_u64(j, "frame_bytes", c->frame_pages << DMM_PAGE_SHIFT);
	jw_u64(j, "frame_pages", c->frame_pages);
	jw_u64(j, "frame_align", c->frame_align);
	jw_u64(j, "queue", c->queue);
	jw_u64(j, "sessions", c->sessions);
	jw_bool(j, "uncached", c->uncached != 0);
	jw_u64(j, "churn_per_step", c->churn_per_step);
	jw_u64(j, "ballast_pages", c->ballast_pages);
	jw_u64(j, "target_handles", c->target_handles);
	jw_u64(j, "fill_handles", c->fill_handles);
	jw_u64(j, "handles_peak", c->handles_peak);
	jw_u64(j, "handles_end", c->handles_end);
	jw_u64(j, "lent_after_fill", c->lent_after_fill);
	jw_u64(j, "lent_end", c->lent_end);
	jw_u64(j, "churn_ops", c->churn_ops);
	jw_u64(j, "churn_allocs", c->churn_allocs);
	jw_u64(j, "churn_allocs_ok", c->churn_allocs_ok);
	jw_u64(j, "churn_frees", c->churn_frees);
	jw_u64(j, "handle_allocs", c->handle_allocs);
	jw_u64(j, "handle_allocs_ok", c->handle_allocs_ok);
	jw_u64(j, "handle_frees", c->handle_frees);
	jw_u64(j, "cma_tried", c->cma_tried);
	jw_u64(j, "cma_ok", c->cma_ok);
	jw_dbl(j, "cma_success_rate", c->cma_tried ? (double)c->cma_ok / (double)c->cma_tried : 0.0);
	if (a)
		json_lat(j, a);
	jw_obj(j, "cma_fail");
	for (unsigned f = 0; f < DMM_NR_CMA_FAILS; f++)
		jw_u64(j, dmm_cma_fail_name((enum dmm_cma_fail)f), c->cma_fail[f]);
	jw_end_obj(j);
	jw_u64(j, "pages_migrated", mg->moved);
	jw_u64(j, "bytes_copied", mg->bytes_copied);
	jw_obj(j, "migrate_failed");
	for (unsigned i = 1; i < DMM_NR_MIGRATE_REASONS; i++)
		jw_u64(j, dmm_migrate_reason_name((enum dmm_migrate_reason)i), mg->failed[i]);
	jw_end_obj(j);
	jw_u64(j, "pages_remapped", a ? a->pages_remapped : 0);
	jw_u64(j, "handles_migrated", c->handles_migrated);
	jw_u64(j, "handles_refused_locked", c->handles_refused_locked);
	jw_obj(j, "pins");
	jw_dbl(j, "pct", c->pin_pct);
	jw_bool(j, "longterm_pin_migrate", c->longterm_pin_migrate != 0);
	jw_u64(j, "wanted", c->pins_wanted);
	jw_u64(j, "taken", c->pins_taken);
	jw_u64(j, "failed", c->pins_failed);
	jw_u64(j, "retried", c->pins_retried);
	jw_u64(j, "migrated", mg->longterm_pin_migrations);
	jw_u64(j, "migrate_failed", mg->longterm_pin_failures);
	jw_obj(j, "failed_by");
	for (unsigned i = 0; i < DMM_NR_MIGRATE_REASONS; i++)
		jw_u64(j, dmm_migrate_reason_name((enum dmm_migrate_reason)i), c->pin_fail[i]);
	jw_end_obj(j);
	jw_u64(j, "held_end", c->pins_held_end);
	jw_u64(j, "in_areas_end", c->pins_in_areas_end);
	jw_u64(j, "unpins", c->unpins);
	jw_u64(j, "unpin_errors", c->unpin_errors);
	jw_u64(j, "pinned_moved", c->pinned_moved);
	jw_end_obj(j);
	jw_u64(j, "samples", c->samples);
	jw_u64(j, "sample_errors", c->sample_errors);
	jw_u64(j, "frame_writes", c->frame_writes);
	jw_u64(j, "frame_checks", c->frame_checks);
	jw_u64(j, "frame_errors", c->frame_errors);
	jw_u64(j, "frame_outside", c->frame_outside);
	jw_u64(j, "final_verified", c->final_verified);
	jw_u64(j, "final_errors", c->final_errors);
	jw_int(j, "handles_check_end", c->handles_check_end);
	jw_end_obj(j);
}

static void print_run_json(const char *path, const struct dmm_machine *m, const char *descr,
			   const struct dmm_workload_result *r)
{
	struct jw j = { .f = stdout };

	jw_obj(&j, NULL);
	jw_str(&j, "profile", path);
	json_machine(&j, m, descr);
	jw_obj(&j, "run");
	jw_str(&j, "workload", r->workload);
	jw_u64(&j, "seed", r->seed);
	jw_u64(&j, "threads", r->threads);
	jw_u64(&j, "ops", r->ops);
	jw_u64(&j, "page_allocs", r->page_allocs);
	jw_u64(&j, "page_allocs_ok", r->page_allocs_ok);
	jw_u64(&j, "range_allocs", r->range_allocs);
	jw_u64(&j, "range_allocs_ok", r->range_allocs_ok);
	jw_u64(&j, "frees_ok", r->frees_ok);
	jw_u64(&j, "teardown_frees", r->teardown_frees);
	jw_obj(&j, "alloc_fail");
	for (unsigned e = 1; e < DMM__NR_ERRORS; e++)
		if (r->alloc_fail[e])
			jw_u64(&j, dmm_errname((int)e), r->alloc_fail[e]);
	jw_end_obj(&j);
	jw_obj(&j, "free_fail");
	for (unsigned e = 0; e < DMM__NR_ERRORS; e++)
		if (r->free_fail[e])
			jw_u64(&j, dmm_errname((int)e), r->free_fail[e]);
	jw_end_obj(&j);
	jw_u64(&j, "constraint_violations", r->constraint_violations);
	jw_u64(&j, "descriptor_errors", r->descriptor_errors);
	jw_u64(&j, "overlaps", r->overlaps);
	jw_u64(&j, "corruptions", r->corruptions);
	jw_u64(&j, "peak_live_pages", r->peak_live_pages);
	jw_u64(&j, "end_live_pages", r->end_live_pages);
	jw_u64(&j, "managed_pages", r->managed_pages);
	jw_u64(&j, "start_free_pages", r->start_free_pages);
	jw_u64(&j, "final_free_pages", r->final_free_pages);
	jw_u64(&j, "elapsed_ns", r->elapsed_ns);
	jw_u64(&j, "teardown_ns", r->teardown_ns);
	jw_u64(&j, "checks_run", r->checks_run);
	jw_u64(&j, "checks_failed", r->checks_failed);
	jw_int(&j, "page_check_end", r->page_check_end);
	jw_int(&j, "range_check_end", r->range_check_end);
	jw_int(&j, "page_check_final", r->page_check_final);
	jw_int(&j, "range_check_final", r->range_check_final);
	if (strcmp(r->workload, "lowmem") == 0) {
		const struct dmm_workload_lowmem *l = &r->lowmem;

		jw_obj(&j, "lowmem");
		jw_str(&j, "low_zone", dmm_zone_name((enum dmm_zone_type)l->low_zone));
		jw_hex(&j, "limit", l->limit);
		jw_u64(&j, "low_zone_managed", l->low_zone_managed);
		jw_u64(&j, "prefill_pages", l->prefill_pages);
		jw_u64(&j, "pressure_blocks", l->pressure_blocks);
		jw_u64(&j, "pressure_pages", l->pressure_pages);
		jw_u64(&j, "low_zone_taken", l->low_zone_taken);
		jw_u64(&j, "low_zone_free", l->low_zone_free);
		jw_u64(&j, "requests", l->requests);
		jw_u64(&j, "requests_ok", l->requests_ok);
		jw_str(&j, "first_error", l->first_error ? dmm_errname(l->first_error) : NULL);
		jw_end_obj(&j);
	}
	if (strcmp(r->workload, "fragment") == 0) {
		const struct dmm_workload_fragment *f = &r->fragment;

		jw_obj(&j, "fragment");
		jw_u64(&j, "fill_pages", f->fill_pages);
		jw_u64(&j, "held_pages", f->held_pages);
		jw_u64(&j, "free_pages", f->free_pages);
		jw_u64(&j, "largest_range", f->largest_range);
		jw_u64_array(&j, "largest_range_zone", f->largest_range_zone, r->nr_zones);
		jw_u64(&j, "order9_blocks", f->order_blocks[9]);
		jw_u64(&j, "order10_blocks", f->order_blocks[10]);
		jw_end_obj(&j);
	}
	jw_int(&j, "cma_check_end", r->cma_check_end);
	jw_int(&j, "cma_check_final", r->cma_check_final);
	if (strcmp(r->workload, "camera") == 0)
		json_camera(&j, r);
	if (strcmp(r->workload, "dma") == 0)
		json_dma(&j, r);
	jw_bool(&j, "ok", dmm_workload_result_ok(r) != 0);
	jw_end_obj(&j);
	jw_arr(&j, "zones");
	for (unsigned z = 0; z < r->nr_zones; z++)
		json_zone(&j, &r->zone[z]);
	jw_end_arr(&j);
	jw_arr(&j, "cma");
	for (unsigned a = 0; a < r->nr_cma; a++)
		json_cma_area(&j, &r->cma[a], r->cma_zone[a] >= 0 ? r->zone[r->cma_zone[a]].name : NULL,
			      true);
	jw_end_arr(&j);
	jw_end_obj(&j);
}

static int cmd_run(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "workload", required_argument, NULL, 'w' },
		{ "seed", required_argument, NULL, 's' },
		{ "ops", required_argument, NULL, 'n' },
		{ "threads", required_argument, NULL, 't' },
		{ "check-every", required_argument, NULL, 'C' },
		{ "requests", required_argument, NULL, 'r' },
		{ "cma-area", required_argument, NULL, OPT_CMA_AREA },
		{ "frames", required_argument, NULL, OPT_FRAMES },
		{ "frame-size", required_argument, NULL, OPT_FRAME_SIZE },
		{ "queue", required_argument, NULL, OPT_QUEUE },
		{ "churn", required_argument, NULL, OPT_CHURN },
		{ "pin", required_argument, NULL, OPT_PIN },
		{ "uncached", required_argument, NULL, OPT_UNCACHED },
		{ "page-cache", required_argument, NULL, OPT_PAGE_CACHE },
		{ "iommu", required_argument, NULL, OPT_IOMMU },
		{ "iommu-flush", required_argument, NULL, OPT_IOMMU_FLUSH },
		{ "iova-align", required_argument, NULL, OPT_IOVA_ALIGN },
		MACHINE_LONG_OPTIONS,
		{ NULL, 0, NULL, 0 },
	};
	struct machine_opts mo;
	struct dmm_workload_opts wo;
	struct dmm_workload_result *r;
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_hw *hw = NULL;
	struct dmm_mem *mem;
	const char *workload = dmm_workload_names()[0];
	const char *camera_opt = NULL;  /* a camera-only option given */
	const char *dma_opt = NULL;     /* a dma-only option given */
	const char *lowmem_opt = NULL;  /* a lowmem-only option given */
	const char *iommu_opt = NULL;   /* an option of the dma workload's IOMMU variant given */
	bool is_camera, is_dma;
	char path[4096], descr[160];
	int c, rc, status;

	machine_opts_init(&mo);
	dmm_workload_opts_init(&wo);
	argv[0] = "dmamem run";
	help_hint = "dmamem run --help";
	optind = 1;
	while ((c = getopt_long(argc, argv, "p:w:s:n:t:C:r:P:R:c:jvh", lo, NULL)) != -1) {
		int k = machine_option(c, optarg, &mo);

		if (k < 0)
			return EXIT_USAGE;
		if (k)
			continue;
		switch (c) {
		case 'w':
			if (!dmm_workload_describe(optarg)) {
				usage_error("--workload: unknown workload '%s'", optarg);
				return EXIT_USAGE;
			}
			workload = optarg;
			break;
		case 's':
			if (!parse_u64(optarg, &wo.seed)) {
				usage_error("--seed: '%s' is not a non-negative integer", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'n':
			if (!parse_u64(optarg, &wo.ops) || !wo.ops) {
				usage_error("--ops: '%s' is not a positive integer", optarg);
				return EXIT_USAGE;
			}
			break;
		case 't':
			if (!parse_uint(optarg, 64, &wo.threads) || !wo.threads) {
				usage_error("--threads: '%s' is not a number in 1..64", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'C':
			if (!parse_u64(optarg, &wo.check_every)) {
				usage_error("--check-every: '%s' is not a non-negative integer", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'r':
			if (!parse_uint(optarg, 100000, &wo.requests) || !wo.requests) {
				usage_error("--requests: '%s' is not a number in 1..100000", optarg);
				return EXIT_USAGE;
			}
			lowmem_opt = "--requests";
			break;
		case OPT_CMA_AREA:
			wo.cma_area = optarg;
			camera_opt = "--cma-area";
			break;
		case OPT_FRAMES:
			if (!parse_u64(optarg, &wo.frames) || !wo.frames || wo.frames > 1000000) {
				usage_error("--frames: '%s' is not a number in 1..1000000", optarg);
				return EXIT_USAGE;
			}
			camera_opt = "--frames";
			break;
		case OPT_FRAME_SIZE: {
			unsigned long long v;

			if (dmm_parse_size(optarg, &v) || v == 0 || v > (1ULL << 40)) {
				usage_error("--frame-size: '%s' is not a size such as 16M", optarg);
				return EXIT_USAGE;
			}
			wo.frame_bytes = v;
			camera_opt = "--frame-size";
			break;
		}
		case OPT_QUEUE:
			if (!parse_uint(optarg, 64, &wo.queue) || !wo.queue) {
				usage_error("--queue: '%s' is not a number in 1..64", optarg);
				return EXIT_USAGE;
			}
			camera_opt = "--queue";
			break;
		case OPT_CHURN:
			if (!parse_u64(optarg, &wo.churn) || !wo.churn || wo.churn > 100000000) {
				usage_error("--churn: '%s' is not a number in 1..100000000", optarg);
				return EXIT_USAGE;
			}
			camera_opt = "--churn";
			break;
		case OPT_PIN:
			if (!parse_decimal(optarg, &wo.pin_pct) || !(wo.pin_pct > 0 && wo.pin_pct <= 50)) {
				usage_error("--pin: '%s' is not a percentage in (0, 50]", optarg);
				return EXIT_USAGE;
			}
			camera_opt = "--pin";
			break;
		case OPT_PAGE_CACHE: {
			unsigned long long v;

			if (strcmp(optarg, "all") == 0) {
				wo.cache_bytes = UINT64_MAX;
			} else if (dmm_parse_size(optarg, &v) || v < DMM_PAGE_SIZE) {
				usage_error("--page-cache: '%s' is not a size such as 512M, or 'all'", optarg);
				return EXIT_USAGE;
			} else {
				wo.cache_bytes = v;
			}
			camera_opt = "--page-cache";
			break;
		}
		case OPT_UNCACHED:
			if (strcmp(optarg, "auto") == 0)
				wo.uncached = -1;
			else if (strcmp(optarg, "yes") == 0)
				wo.uncached = 1;
			else if (strcmp(optarg, "no") == 0)
				wo.uncached = 0;
			else {
				usage_error("--uncached: '%s' is not 'yes', 'no' or 'auto'", optarg);
				return EXIT_USAGE;
			}
			camera_opt = "--uncached";
			break;
		case OPT_IOMMU:
			if (strcmp(optarg, "both") == 0)
				wo.iommu = DMM_WL_IOMMU_BOTH;
			else if (strcmp(optarg, "off") == 0)
				wo.iommu = DMM_WL_IOMMU_OFF;
			else if (strcmp(optarg, "on") == 0)
				wo.iommu = DMM_WL_IOMMU_ON;
			else {
				usage_error("--iommu: '%s' is not 'off', 'on' or 'both'", optarg);
				return EXIT_USAGE;
			}
			dma_opt = "--iommu";
			break;
		case OPT_IOMMU_FLUSH:
			if (strcmp(optarg, "strict") == 0)
				wo.iommu_flush = DMM_IOMMU_STRICT;
			else if (strcmp(optarg, "deferred") == 0)
				wo.iommu_flush = DMM_IOMMU_DEFERRED;
			else {
				usage_error("--iommu-flush: '%s' is not 'strict' or 'deferred'", optarg);
				return EXIT_USAGE;
			}
			dma_opt = iommu_opt = "--iommu-flush";
			break;
		case OPT_IOVA_ALIGN:
			if (strcmp(optarg, "pow2") == 0)
				wo.iova_align = DMM_IOVA_ALIGN_POW2;
			else if (strcmp(optarg, "page") == 0)
				wo.iova_align = DMM_IOVA_ALIGN_PAGE;
			else {
				usage_error("--iova-align: '%s' is not 'pow2' or 'page'", optarg);
				return EXIT_USAGE;
			}
			dma_opt = iommu_opt = "--iova-align";
			break;
		case 'h':
			run_help();
			return 0;
		default:
			fprintf(stderr, "Try '%s'.\n", help_hint);
			return EXIT_USAGE;
		}
	}
	if (optind < argc) {
		usage_error("run: unexpected argument '%s'", argv[optind]);
		return EXIT_USAGE;
	}
	is_camera = strcmp(workload, "camera") == 0;
	is_dma = dmm_workload_needs_hw(workload) != 0;
	if (wo.threads > 1 && strcmp(workload, "mixed") != 0 && !(is_camera && wo.threads == 2)) {
		usage_error("--threads: only mixed runs on several threads (camera on 1 or 2)");
		return EXIT_USAGE;
	}
	if (camera_opt && !is_camera) {
		usage_error("%s: only for the camera workload", camera_opt);
		return EXIT_USAGE;
	}
	if (is_camera && wo.ops) {
		usage_error("--ops: the camera workload is sized by --frames and --churn");
		return EXIT_USAGE;
	}
	if (dma_opt && !is_dma) {
		usage_error("%s: only for the dma workload", dma_opt);
		return EXIT_USAGE;
	}
	if (iommu_opt && is_dma && wo.iommu == DMM_WL_IOMMU_OFF) {
		usage_error("%s: only for the IOMMU variant, which --iommu off does not run", iommu_opt);
		return EXIT_USAGE;
	}
	if (lowmem_opt && strcmp(workload, "lowmem") != 0) {
		usage_error("%s: only for the lowmem workload", lowmem_opt);
		return EXIT_USAGE;
	}

	rc = build_machine(&mo, &m, &h, is_dma ? &hw : NULL, wo.seed, &mem);
	if (rc)
		return rc == -DMM_ENOENT ? EXIT_USAGE : 1;
	profile_path(mo.profile, path, sizeof(path));
	profile_description(path, descr, sizeof(descr));

	r = malloc(sizeof(*r));
	if (!r) {
		fail("out of memory");
		if (hw)
			dmm_hw_mem_destroy(hw, mem);
		else
			dmm_hosted_mem_destroy(h, mem);
		return 1;
	}
	if (is_dma)
		rc = dmm_workload_run_dma(hw, mem, &wo, r);
	else
		rc = dmm_workload_run(mem, workload, &wo, r);
	if (rc && rc != -DMM_ENOMEM) {
		if (rc == -DMM_ENOTSUP)
			fail("workload '%s' cannot run on '%s': %s", workload, m.name,
			     strcmp(workload, "lowmem") == 0
				     ? "it needs a low zone (DMA or DMA32) below a higher zone"
			     : is_camera ? "it needs a contiguous memory area ([cma NAME] in the profile)"
					 : dmm_strerror(rc));
		else if (rc == -DMM_ENOENT && is_camera)
			fail("workload 'camera': '%s' has no contiguous area called '%s'", m.name,
			     wo.cma_area);
		else if (rc == -DMM_EINVAL && is_camera)
			fail("workload 'camera': --frame-size is larger than the area");
		else
			fail("workload '%s' failed: %s", workload, dmm_strerror(rc));
		status = is_camera && (rc == -DMM_ENOENT || rc == -DMM_EINVAL) ? EXIT_USAGE : 1;
	} else {
		if (rc)
			fail("host memory ran out during the run; results are partial");
		if (mo.json)
			print_run_json(path, &m, descr, r);
		else
			print_run_text(&m, r);
		status = rc || !dmm_workload_result_ok(r) ? 1 : 0;
	}
	free(r);
	if (hw)
		dmm_hw_mem_destroy(hw, mem);
	else
		dmm_hosted_mem_destroy(h, mem);
	return status;
}

/* ------------------------------------------------------------------------ */
/* profiles                                                                  */

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmd_profiles(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *dir = dmm_profile_dir();
	char *names[256];
	unsigned n = 0;
	bool json = false;
	struct dirent *e;
	DIR *d;
	int c, status = 0;

	argv[0] = "dmamem profiles";
	help_hint = "dmamem profiles --help";
	optind = 1;
	while ((c = getopt_long(argc, argv, "jh", lo, NULL)) != -1) {
		if (c == 'j') {
			json = true;
		} else if (c == 'h') {
			printf("Usage: dmamem profiles [--json]\n\n"
			       "List the machine profiles in %s\n"
			       "(set DMAMEM_PROFILE_DIR to use another directory), with their\n"
			       "RAM size and description. The format is described in docs/PROFILES.md.\n",
			       dir);
			return 0;
		} else {
			fprintf(stderr, "Try '%s'.\n", help_hint);
			return EXIT_USAGE;
		}
	}
	if (optind < argc) {
		usage_error("profiles: unexpected argument '%s'", argv[optind]);
		return EXIT_USAGE;
	}
	d = opendir(dir);
	if (!d) {
		fail("cannot open the profile directory %s: %s", dir, strerror(errno));
		return 1;
	}
	while ((e = readdir(d)) && n < 256) {
		size_t len = strlen(e->d_name);

		if (len > 4 && strcmp(e->d_name + len - 4, ".ini") == 0 && e->d_name[0] != '.') {
			names[n] = strndup(e->d_name, len - 4);
			if (names[n])
				n++;
		}
	}
	closedir(d);
	qsort(names, n, sizeof(names[0]), name_cmp);

	{
		struct jw j = { .f = stdout };

		if (json) {
			jw_obj(&j, NULL);
			jw_str(&j, "directory", dir);
			jw_arr(&j, "profiles");
		} else {
			printf("%-18s %10s  %s\n", "profile", "RAM", "description");
		}
		for (unsigned i = 0; i < n; i++) {
			struct dmm_machine m;
			char err[512], path[4096], descr[160], b[32];
			int rc = dmm_profile_load(names[i], &m, err, sizeof(err));

			profile_path(names[i], path, sizeof(path));
			profile_description(path, descr, sizeof(descr));
			if (json) {
				jw_obj(&j, NULL);
				jw_str(&j, "name", names[i]);
				jw_str(&j, "path", path);
				jw_str(&j, "description", descr);
				if (rc) {
					jw_str(&j, "error", err);
				} else {
					jw_u64(&j, "ram_bytes", dmm_machine_ram_bytes(&m));
					jw_hex(&j, "dma_limit", m.dma_limit);
					jw_hex(&j, "dma32_limit", m.dma32_limit);
					jw_u64(&j, "cma_areas", m.nr_cma);
				}
				jw_end_obj(&j);
			} else if (rc) {
				printf("%-18s %10s  INVALID: %s\n", names[i], "-", err);
			} else {
				printf("%-18s %10s  %s\n", names[i],
				       human(dmm_machine_ram_bytes(&m), b, sizeof(b)), descr);
			}
			if (rc)
				status = 1;
			free(names[i]);
		}
		if (json) {
			jw_end_arr(&j);
			jw_end_obj(&j);
		}
	}
	return status;
}

/* ------------------------------------------------------------------------ */
/* main                                                                      */

static const char main_help[] =
	"Usage: dmamem COMMAND [OPTIONS]\n"
	"\n"
	"DMA-aware memory management on a simulated machine.\n"
	"\n"
	"Commands:\n"
	"  info       print a machine's memory map, zones, watermarks and free lists\n"
	"  run        run a seeded page-allocator workload and print a summary\n"
	"  profiles   list the machine profiles\n"
	"  help CMD   the options of a command (same as 'dmamem CMD --help')\n"
	"\n"
	"Examples:\n"
	"  dmamem info --profile rpi4\n"
	"  dmamem run --profile pc --workload mixed --seed 7 --ops 200000\n"
	"  dmamem run --profile rpi4 --workload lowmem --lowmem-policy reserved\n"
	"  dmamem run --workload fragment --json\n"
	"\n"
	"Profiles are read from DMAMEM_PROFILE_DIR, else the source tree's\n"
	"profiles/ directory; --profile also accepts a path to an .ini file.\n"
	"Exit status: 0 ok, 1 error (or a run that found an error), 2 bad usage.\n";

int main(int argc, char **argv)
{
	const char *cmd;

	if (argc < 2) {
		fputs(main_help, stderr);
		return EXIT_USAGE;
	}
	cmd = argv[1];
	if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0) {
		fputs(main_help, stdout);
		return 0;
	}
	if (strcmp(cmd, "help") == 0) {
		if (argc < 3) {
			fputs(main_help, stdout);
			return 0;
		}
		cmd = argv[2];
		argv[2] = "--help";
		if (strcmp(cmd, "info") == 0)
			return cmd_info(2, argv + 1);
		if (strcmp(cmd, "run") == 0)
			return cmd_run(2, argv + 1);
		if (strcmp(cmd, "profiles") == 0)
			return cmd_profiles(2, argv + 1);
		usage_error("help: unknown command '%s'", cmd);
		return EXIT_USAGE;
	}
	if (strcmp(cmd, "info") == 0)
		return cmd_info(argc - 1, argv + 1);
	if (strcmp(cmd, "run") == 0)
		return cmd_run(argc - 1, argv + 1);
	if (strcmp(cmd, "profiles") == 0)
		return cmd_profiles(argc - 1, argv + 1);
	usage_error("unknown command '%s'", cmd);
	return EXIT_USAGE;
}

/* SPDX-License-Identifier: MIT */
/*
 * Machine profiles: INI files parsed with inih into a struct dmm_machine.
 *
 * The format is documented in docs/PROFILES.md. In short:
 *
 *   [machine]                    scalar settings, each at most once
 *   name = pc
 *   dma_limit = 16M
 *   lowmem_reserve_ratio = 256 256 32
 *   ...
 *   [ram]                        repeated: one line per RAM region
 *   range = 0x100000-0xbfffffff  START-END, END inclusive (/proc/iomem style)
 *   region = 0x100000000 12G     BASE SIZE
 *   [reserved]                   same syntax, ranges inside RAM
 *   [cma camera]                 one section per contiguous memory area
 *   size = 256M                  required
 *   limit = 4G                   optional: place below (or base = fixed)
 *   default = yes                optional: the area devices use by default
 *
 * Parsing starts from dmm_machine_defaults(), applies every key, then
 * dmm_machine_validate(). The first error wins and is reported as
 * "file:line: what"; unknown sections and keys are errors.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include <dmamem/error.h>
#include <dmamem/machine.h>

#include "profile.h"

#ifndef DMM_PROFILE_DIR
#define DMM_PROFILE_DIR "profiles"
#endif

#define PROFILE_ERR_MAX 256
#define PROFILE_PAGEBLOCK_BYTES ((uint64_t)DMM_PAGE_SIZE << 9)
#define PROFILE_MAX_SPAN ((uint64_t)1 << 43) /* 8 TiB, dmm_machine_validate() */

/* [machine] keys; a bit per key catches duplicates. */
enum profile_key {
	PK_NAME,
	PK_DESCRIPTION,
	PK_PAGE_SIZE,
	PK_CACHE_LINE,
	PK_DMA_MIN_ALIGN,
	PK_DMA_LIMIT,
	PK_DMA32_LIMIT,
	PK_LOWMEM_POLICY,
	PK_MIN_FREE_KBYTES,
	PK_WATERMARK_SCALE_FACTOR,
	PK_LOWMEM_RESERVE_RATIO,
	PK_PCP_BATCH,
	PK_PCP_HIGH,
	PK_CMA_POLICY,
	PK_LONGTERM_PIN_MIGRATE,
	PK_KMALLOC_POLICY,
	PK__NR
};

static const char *const profile_key_names[PK__NR] = {
	[PK_NAME] = "name",
	[PK_DESCRIPTION] = "description",
	[PK_PAGE_SIZE] = "page_size",
	[PK_CACHE_LINE] = "cache_line",
	[PK_DMA_MIN_ALIGN] = "dma_min_align",
	[PK_DMA_LIMIT] = "dma_limit",
	[PK_DMA32_LIMIT] = "dma32_limit",
	[PK_LOWMEM_POLICY] = "lowmem_policy",
	[PK_MIN_FREE_KBYTES] = "min_free_kbytes",
	[PK_WATERMARK_SCALE_FACTOR] = "watermark_scale_factor",
	[PK_LOWMEM_RESERVE_RATIO] = "lowmem_reserve_ratio",
	[PK_PCP_BATCH] = "pcp_batch",
	[PK_PCP_HIGH] = "pcp_high",
	[PK_CMA_POLICY] = "cma_policy",
	[PK_LONGTERM_PIN_MIGRATE] = "longterm_pin_migrate",
	[PK_KMALLOC_POLICY] = "kmalloc_policy",
};

/* [cma NAME] keys. */
enum cma_key { CK_SIZE, CK_BASE, CK_LIMIT, CK_ALIGN, CK_DEFAULT, CK__NR };

static const char *const cma_key_names[CK__NR] = {
	[CK_SIZE] = "size",
	[CK_BASE] = "base",
	[CK_LIMIT] = "limit",
	[CK_ALIGN] = "align",
	[CK_DEFAULT] = "default",
};

struct profile_ctx {
	struct dmm_machine *m;
	unsigned seen;          /* bit per enum profile_key */
	bool failed;
	int err;                /* first error code */
	int err_line;           /* line of the first error */
	char msg[PROFILE_ERR_MAX];
	/* input: a FILE or a string, read line by line */
	FILE *file;
	const char *text;
	int newlines;           /* line feeds consumed so far */
	int line;               /* line being parsed (1-based) */
	/* Section headers, seen by the reader (inih reports only keys). */
	int hdr_seq;            /* headers read so far */
	int hdr_line;           /* line of the latest header */
	bool hdr_is_cma;        /* the latest header is [cma ...] */
	unsigned hdr_keys;      /* keys handled under the latest header */
	/* The [cma NAME] section being filled. */
	int area_seq;           /* hdr_seq of its header (0 = none open) */
	unsigned area_seen;     /* bit per enum cma_key */
	int area_line[DMM_MAX_CMA_AREAS]; /* header line of each area */
};

static __attribute__((format(printf, 3, 4))) int profile_fail(struct profile_ctx *pc, int err,
							       const char *fmt, ...)
{
	va_list ap;

	if (!pc->failed) {
		pc->failed = true;
		pc->err = err;
		pc->err_line = pc->line;
		va_start(ap, fmt);
		vsnprintf(pc->msg, sizeof(pc->msg), fmt, ap);
		va_end(ap);
	}
	return 0; /* inih: handler error */
}

/* The same, for an error that belongs to an earlier line (a section header). */
static __attribute__((format(printf, 4, 5))) int profile_fail_at(struct profile_ctx *pc, int line,
								  int err, const char *fmt, ...)
{
	va_list ap;

	if (!pc->failed) {
		pc->failed = true;
		pc->err = err;
		pc->err_line = line;
		va_start(ap, fmt);
		vsnprintf(pc->msg, sizeof(pc->msg), fmt, ap);
		va_end(ap);
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Values                                                                    */

/*
 * dmm_parse_size() - parse a byte count or address.
 *
 * Accepts decimal or 0x-prefixed hexadecimal digits followed by an optional
 * binary suffix K, M, G or T (case-insensitive, optionally followed by "B"
 * or "iB"): "4096", "0x1000", "16M", "4GiB". Leading and trailing blanks
 * are ignored. Fails with -DMM_EINVAL on NULL arguments, an empty string,
 * a sign, stray characters or overflow of 64 bits.
 */
int dmm_parse_size(const char *s, unsigned long long *out)
{
	unsigned long long v = 0, mul = 1;
	unsigned base = 10;
	const char *p;
	bool digits = false;

	if (!s || !out)
		return -DMM_EINVAL;
	while (isspace((unsigned char)*s))
		s++;
	p = s;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		base = 16;
		p += 2;
	}
	for (;; p++) {
		unsigned d;

		if (*p >= '0' && *p <= '9')
			d = (unsigned)(*p - '0');
		else if (base == 16 && *p >= 'a' && *p <= 'f')
			d = (unsigned)(*p - 'a' + 10);
		else if (base == 16 && *p >= 'A' && *p <= 'F')
			d = (unsigned)(*p - 'A' + 10);
		else
			break;
		if (v > (~0ULL - d) / base)
			return -DMM_EINVAL;
		v = v * base + d;
		digits = true;
	}
	if (!digits)
		return -DMM_EINVAL;
	switch (*p) {
	case 'k': case 'K': mul = 1ULL << 10; p++; break;
	case 'm': case 'M': mul = 1ULL << 20; p++; break;
	case 'g': case 'G': mul = 1ULL << 30; p++; break;
	case 't': case 'T': mul = 1ULL << 40; p++; break;
	default: break;
	}
	if (mul > 1) {
		if ((p[0] == 'i' || p[0] == 'I') && (p[1] == 'b' || p[1] == 'B'))
			p += 2;
		else if (p[0] == 'b' || p[0] == 'B')
			p++;
	}
	while (isspace((unsigned char)*p))
		p++;
	if (*p)
		return -DMM_EINVAL;
	if (v > ~0ULL / mul)
		return -DMM_EINVAL;
	*out = v * mul;
	return 0;
}

/* A size that must fit in 32 bits. */
static int parse_u32(const char *s, uint32_t *out)
{
	unsigned long long v;

	if (dmm_parse_size(s, &v) || v > UINT32_MAX)
		return -DMM_EINVAL;
	*out = (uint32_t)v;
	return 0;
}

static bool is_word(const char *s, const char *w)
{
	return strcmp(s, w) == 0;
}

/* "yes" -> 1, "no" -> 0, anything else -> -1. */
static int parse_yes_no(const char *s)
{
	if (is_word(s, "yes"))
		return 1;
	if (is_word(s, "no"))
		return 0;
	return -1;
}

/* "START-END" (END inclusive) or "BASE SIZE" into @r. */
static int parse_region(struct profile_ctx *pc, const char *key, const char *val,
			struct dmm_region *r)
{
	char buf[128];
	char *sep, *a, *b;
	unsigned long long x, y;
	bool is_range = is_word(key, "range");

	if (strlen(val) >= sizeof(buf))
		return profile_fail(pc, -DMM_EINVAL, "%s: value too long", key);
	strcpy(buf, val);
	if (is_range) {
		sep = strchr(buf, '-');
		if (!sep)
			return profile_fail(pc, -DMM_EINVAL,
					    "range '%s': expected START-END (END inclusive)", val);
	} else {
		sep = buf;
		while (*sep && !isspace((unsigned char)*sep))
			sep++;
		if (!*sep)
			return profile_fail(pc, -DMM_EINVAL, "region '%s': expected BASE SIZE", val);
	}
	*sep = '\0';
	a = buf;
	b = sep + 1;
	if (dmm_parse_size(a, &x))
		return profile_fail(pc, -DMM_EINVAL, "%s '%s': bad address '%s'", key, val, a);
	if (dmm_parse_size(b, &y))
		return profile_fail(pc, -DMM_EINVAL, "%s '%s': bad %s '%s'", key, val,
				    is_range ? "address" : "size", b);
	if (is_range) {
		if (y < x)
			return profile_fail(pc, -DMM_EINVAL, "range '%s': END below START", val);
		if (y == ~0ULL)
			return profile_fail(pc, -DMM_EINVAL, "range '%s': END too large", val);
		r->base = x;
		r->size = y - x + 1;
	} else {
		if (y == 0)
			return profile_fail(pc, -DMM_EINVAL, "region '%s': empty", val);
		if (x + y < x)
			return profile_fail(pc, -DMM_EINVAL, "region '%s': wraps around", val);
		r->base = x;
		r->size = y;
	}
	return 1;
}

/* ------------------------------------------------------------------------ */
/* Sections                                                                  */

static int handle_regions(struct profile_ctx *pc, const char *section, const char *name,
			  const char *value, unsigned *nr, struct dmm_region *tab)
{
	struct dmm_region r;

	if (!is_word(name, "region") && !is_word(name, "range"))
		return profile_fail(pc, -DMM_EINVAL,
				    "unknown key '%s' in [%s] (expected 'region' or 'range')", name,
				    section);
	if (!parse_region(pc, name, value, &r))
		return 0;
	if (*nr >= DMM_MAX_REGIONS)
		return profile_fail(pc, -DMM_ENOSPC, "too many [%s] entries (at most %d)", section,
				    DMM_MAX_REGIONS);
	tab[(*nr)++] = r;
	return 1;
}

static int handle_machine(struct profile_ctx *pc, const char *name, const char *value)
{
	struct dmm_machine *m = pc->m;
	unsigned long long v;
	int k;

	for (k = 0; k < PK__NR; k++)
		if (is_word(name, profile_key_names[k]))
			break;
	if (k == PK__NR)
		return profile_fail(pc, -DMM_EINVAL, "unknown key '%s' in [machine]", name);
	if (pc->seen & (1u << k))
		return profile_fail(pc, -DMM_EINVAL, "duplicate key '%s' in [machine]", name);
	pc->seen |= 1u << k;

	switch ((enum profile_key)k) {
	case PK_NAME:
		if (!*value)
			return profile_fail(pc, -DMM_EINVAL, "name: empty");
		if (strlen(value) >= sizeof(m->name))
			return profile_fail(pc, -DMM_EINVAL, "name: longer than %zu characters",
					    sizeof(m->name) - 1);
		strcpy(m->name, value);
		return 1;
	case PK_DESCRIPTION:
		return 1; /* for people and `dmamem profiles`; not part of the machine */
	case PK_PAGE_SIZE:
		if (parse_u32(value, &m->page_size) || m->page_size != DMM_PAGE_SIZE)
			return profile_fail(pc, -DMM_EINVAL, "page_size '%s': only 4096 is supported",
					    value);
		return 1;
	case PK_CACHE_LINE:
		if (parse_u32(value, &m->cache_line) || !m->cache_line ||
		    (m->cache_line & (m->cache_line - 1)))
			return profile_fail(pc, -DMM_EINVAL,
					    "cache_line '%s': expected a power of two", value);
		return 1;
	case PK_DMA_MIN_ALIGN:
		if (parse_u32(value, &m->dma_min_align) || !m->dma_min_align ||
		    (m->dma_min_align & (m->dma_min_align - 1)))
			return profile_fail(pc, -DMM_EINVAL,
					    "dma_min_align '%s': expected a power of two", value);
		return 1;
	case PK_DMA_LIMIT:
	case PK_DMA32_LIMIT:
		if (is_word(value, "none")) {
			v = 0;
		} else if (dmm_parse_size(value, &v)) {
			return profile_fail(pc, -DMM_EINVAL,
					    "%s '%s': expected an address or 'none'", name, value);
		}
		/* Zones meet on pageblock boundaries (see dmm_machine_validate()). */
		if (v & (PROFILE_PAGEBLOCK_BYTES - 1))
			return profile_fail(pc, -DMM_EINVAL, "%s '%s': not a multiple of 2 MiB",
					    name, value);
		if (k == PK_DMA_LIMIT)
			m->dma_limit = v;
		else
			m->dma32_limit = v;
		return 1;
	case PK_LOWMEM_POLICY:
		if (is_word(value, "fallback"))
			m->lowmem_policy = DMM_LOWMEM_FALLBACK;
		else if (is_word(value, "reserved"))
			m->lowmem_policy = DMM_LOWMEM_RESERVED;
		else
			return profile_fail(pc, -DMM_EINVAL,
					    "lowmem_policy '%s': expected 'fallback' or 'reserved'",
					    value);
		return 1;
	case PK_MIN_FREE_KBYTES:
		/* Linux's vm.min_free_kbytes is an int; more would also overflow
		 * the watermark arithmetic (pages x managed pages). */
		if (is_word(value, "auto"))
			v = 0;
		else if (dmm_parse_size(value, &v) || v > INT32_MAX)
			return profile_fail(pc, -DMM_EINVAL,
					    "min_free_kbytes '%s': expected 'auto' or a number up to 2147483647",
					    value);
		m->min_free_kbytes = v;
		return 1;
	case PK_WATERMARK_SCALE_FACTOR:
		/* Linux accepts 1..3000 (0.01 % .. 30 % of the zone). */
		if (parse_u32(value, &m->watermark_scale_factor) || m->watermark_scale_factor < 1 ||
		    m->watermark_scale_factor > 3000)
			return profile_fail(pc, -DMM_EINVAL,
					    "watermark_scale_factor '%s': expected 1..3000", value);
		return 1;
	case PK_LOWMEM_RESERVE_RATIO: {
		char buf[128];
		char *tok, *save = NULL;
		unsigned n = 0;
		uint32_t r[DMM_NR_ZONE_TYPES];

		if (strlen(value) >= sizeof(buf))
			return profile_fail(pc, -DMM_EINVAL, "lowmem_reserve_ratio: value too long");
		strcpy(buf, value);
		for (tok = strtok_r(buf, " \t,", &save); tok; tok = strtok_r(NULL, " \t,", &save)) {
			if (n == DMM_NR_ZONE_TYPES || parse_u32(tok, &r[n]))
				break;
			n++;
		}
		if (tok || n != DMM_NR_ZONE_TYPES)
			return profile_fail(pc, -DMM_EINVAL,
					    "lowmem_reserve_ratio '%s': expected %d numbers (DMA DMA32 Normal)",
					    value, DMM_NR_ZONE_TYPES);
		memcpy(m->lowmem_reserve_ratio, r, sizeof(r));
		return 1;
	}
	case PK_PCP_BATCH:
	case PK_PCP_HIGH: {
		uint32_t x = 0;

		if (!is_word(value, "auto") && parse_u32(value, &x))
			return profile_fail(pc, -DMM_EINVAL, "%s '%s': expected 'auto' or a number",
					    name, value);
		if (x > (k == PK_PCP_BATCH ? DMM_PCP_BATCH_MAX : DMM_PCP_HIGH_MAX))
			return profile_fail(pc, -DMM_EINVAL, "%s '%s': at most %u pages", name, value,
					    k == PK_PCP_BATCH ? DMM_PCP_BATCH_MAX : DMM_PCP_HIGH_MAX);
		if (k == PK_PCP_BATCH)
			m->pcp_batch = x;
		else
			m->pcp_high = x;
		return 1;
	}
	case PK_CMA_POLICY:
		if (is_word(value, "half"))
			m->cma_policy = DMM_CMA_POLICY_HALF;
		else if (is_word(value, "first"))
			m->cma_policy = DMM_CMA_POLICY_FIRST;
		else if (is_word(value, "last"))
			m->cma_policy = DMM_CMA_POLICY_LAST;
		else if (is_word(value, "never"))
			m->cma_policy = DMM_CMA_POLICY_NEVER;
		else
			return profile_fail(pc, -DMM_EINVAL,
					    "cma_policy '%s': expected 'half', 'first', 'last' or 'never'",
					    value);
		return 1;
	case PK_KMALLOC_POLICY:
		if (is_word(value, "aligned"))
			m->kmalloc_policy = DMM_KMALLOC_ALIGNED;
		else if (is_word(value, "packed-on-request"))
			m->kmalloc_policy = DMM_KMALLOC_PACKED_ON_REQUEST;
		else if (is_word(value, "packed"))
			m->kmalloc_policy = DMM_KMALLOC_PACKED;
		else
			return profile_fail(pc, -DMM_EINVAL,
					    "kmalloc_policy '%s': expected 'aligned', 'packed-on-request' or 'packed'",
					    value);
		return 1;
	case PK_LONGTERM_PIN_MIGRATE: {
		int b = parse_yes_no(value);

		if (b < 0)
			return profile_fail(pc, -DMM_EINVAL,
					    "longterm_pin_migrate '%s': expected 'yes' or 'no'", value);
		m->longterm_pin_migrate = b;
		return 1;
	}
	case PK__NR:
		break;
	}
	return profile_fail(pc, -DMM_EINVAL, "unknown key '%s' in [machine]", name);
}

/*
 * [cma NAME]: one contiguous memory area per section. inih hands over keys
 * only; the reader counts section headers (hdr_seq), so the first key under
 * a new header opens a new area even if an earlier section had the same name.
 */
static bool cma_section(const char *section)
{
	return strncmp(section, "cma", 3) == 0 && (section[3] == '\0' || isspace((unsigned char)section[3]));
}

static bool cma_name_char(char c)
{
	return isalnum((unsigned char)c) || c == '_' || c == '-' || c == '.';
}

/* Open the area of the current header: check its name and the count. */
static int cma_open(struct profile_ctx *pc, const char *section)
{
	struct dmm_machine *m = pc->m;
	struct dmm_cma_decl *d;
	const char *n = section + 3;
	size_t len;

	while (isspace((unsigned char)*n))
		n++;
	len = strlen(n);
	while (len && isspace((unsigned char)n[len - 1]))
		len--;
	if (!len)
		return profile_fail_at(pc, pc->hdr_line, -DMM_EINVAL,
				       "[%s]: expected [cma NAME], NAME the area's name", section);
	if (len >= DMM_CMA_NAME_MAX)
		return profile_fail_at(pc, pc->hdr_line, -DMM_EINVAL,
				       "[%s]: area name longer than %d characters", section,
				       DMM_CMA_NAME_MAX - 1);
	for (size_t i = 0; i < len; i++)
		if (!cma_name_char(n[i]))
			return profile_fail_at(pc, pc->hdr_line, -DMM_EINVAL,
					       "[%s]: area names are letters, digits, '_', '-' and '.'",
					       section);
	for (unsigned i = 0; i < m->nr_cma; i++)
		if (strlen(m->cma[i].name) == len && strncmp(m->cma[i].name, n, len) == 0)
			return profile_fail_at(pc, pc->hdr_line, -DMM_EINVAL,
					       "[%s]: duplicate area name (first declared on line %d)",
					       section, pc->area_line[i]);
	if (m->nr_cma >= DMM_MAX_CMA_AREAS)
		return profile_fail_at(pc, pc->hdr_line, -DMM_ENOSPC,
				       "[%s]: too many contiguous areas (at most %d)", section,
				       DMM_MAX_CMA_AREAS);
	d = &m->cma[m->nr_cma];
	memset(d, 0, sizeof(*d));
	memcpy(d->name, n, len);
	pc->area_line[m->nr_cma] = pc->hdr_line;
	m->nr_cma++;
	pc->area_seq = pc->hdr_seq;
	pc->area_seen = 0;
	return 1;
}

static int handle_cma(struct profile_ctx *pc, const char *section, const char *name,
		      const char *value)
{
	struct dmm_machine *m = pc->m;
	struct dmm_cma_decl *d;
	unsigned long long v;
	int k;

	if (pc->area_seq != pc->hdr_seq && !cma_open(pc, section))
		return 0;
	d = &m->cma[m->nr_cma - 1];
	for (k = 0; k < CK__NR; k++)
		if (is_word(name, cma_key_names[k]))
			break;
	if (k == CK__NR)
		return profile_fail(pc, -DMM_EINVAL,
				    "unknown key '%s' in [%s] (expected size, base, limit, align or default)",
				    name, section);
	if (pc->area_seen & (1u << k))
		return profile_fail(pc, -DMM_EINVAL, "duplicate key '%s' in [%s]", name, section);
	pc->area_seen |= 1u << k;

	switch ((enum cma_key)k) {
	case CK_SIZE:
		if (dmm_parse_size(value, &v) || v == 0)
			return profile_fail(pc, -DMM_EINVAL, "size '%s': expected a size such as 64M",
					    value);
		if (v > PROFILE_MAX_SPAN)
			return profile_fail(pc, -DMM_EINVAL, "size '%s': larger than 8 TiB", value);
		d->size = v;
		return 1;
	case CK_BASE:
		if (dmm_parse_size(value, &v))
			return profile_fail(pc, -DMM_EINVAL, "base '%s': expected an address", value);
		if (v == 0)
			return profile_fail(pc, -DMM_EINVAL,
					    "base '%s': 0 is not a fixed placement; leave base out to "
					    "let the area be placed (limit = ... bounds it)",
					    value);
		if (v & (PROFILE_PAGEBLOCK_BYTES - 1))
			return profile_fail(pc, -DMM_EINVAL, "base '%s': not a multiple of 2 MiB",
					    value);
		d->base = v;
		return 1;
	case CK_LIMIT:
		if (is_word(value, "none"))
			v = 0;
		else if (dmm_parse_size(value, &v) || v == 0)
			return profile_fail(pc, -DMM_EINVAL,
					    "limit '%s': expected an address or 'none'", value);
		if (v & (DMM_PAGE_SIZE - 1))
			return profile_fail(pc, -DMM_EINVAL, "limit '%s': not a multiple of 4 KiB",
					    value);
		d->limit = v;
		return 1;
	case CK_ALIGN:
		if (dmm_parse_size(value, &v) || v == 0 || (v & (v - 1)))
			return profile_fail(pc, -DMM_EINVAL, "align '%s': expected a power of two",
					    value);
		d->align = v;
		return 1;
	case CK_DEFAULT: {
		int b = parse_yes_no(value);

		if (b < 0)
			return profile_fail(pc, -DMM_EINVAL, "default '%s': expected 'yes' or 'no'",
					    value);
		if (b)
			for (unsigned i = 0; i + 1 < m->nr_cma; i++)
				if (m->cma[i].is_default)
					return profile_fail(pc, -DMM_EINVAL,
							    "default: area '%s' (line %d) is already the default",
							    m->cma[i].name, pc->area_line[i]);
		d->is_default = b;
		return 1;
	}
	case CK__NR:
		break;
	}
	return profile_fail(pc, -DMM_EINVAL, "unknown key '%s' in [%s]", name, section);
}

/*
 * Called at each section header and at the end: an area section must not be
 * empty and must give a size; base, limit and align must agree.
 */
static void finish_section(struct profile_ctx *pc)
{
	if (pc->hdr_is_cma && pc->hdr_keys == 0 && !pc->failed)
		profile_fail_at(pc, pc->hdr_line, -DMM_EINVAL,
				"empty contiguous area section (size = ... is required)");
	if (pc->area_seq && !pc->failed) {
		const struct dmm_cma_decl *d = &pc->m->cma[pc->m->nr_cma - 1];
		int line = pc->area_line[pc->m->nr_cma - 1];
		uint64_t bytes = (d->size + PROFILE_PAGEBLOCK_BYTES - 1) & ~(PROFILE_PAGEBLOCK_BYTES - 1);

		if (!(pc->area_seen & (1u << CK_SIZE)))
			profile_fail_at(pc, line, -DMM_EINVAL, "[cma %s]: size = ... is required",
					d->name);
		else if (d->base && d->limit && d->base + bytes > d->limit)
			profile_fail_at(pc, line, -DMM_EINVAL,
					"[cma %s]: base + size (0x%llx) lies above its limit (0x%llx)",
					d->name, (unsigned long long)(d->base + bytes),
					(unsigned long long)d->limit);
		else if (d->base && d->align && (d->base & (d->align - 1)))
			profile_fail_at(pc, line, -DMM_EINVAL,
					"[cma %s]: base 0x%llx is not aligned to align (0x%llx)", d->name,
					(unsigned long long)d->base, (unsigned long long)d->align);
	}
	pc->area_seq = 0;
}

static int profile_handler(void *user, const char *section, const char *name, const char *value)
{
	struct profile_ctx *pc = user;

	if (pc->failed)
		return 1; /* keep the first error's message and line */
	if (!*section)
		return profile_fail(pc, -DMM_EINVAL, "key '%s' outside a section", name);
	pc->hdr_keys++;
	if (is_word(section, "machine"))
		return handle_machine(pc, name, value);
	if (is_word(section, "ram"))
		return handle_regions(pc, section, name, value, &pc->m->nr_ram, pc->m->ram);
	if (is_word(section, "reserved"))
		return handle_regions(pc, section, name, value, &pc->m->nr_reserved,
				      pc->m->reserved);
	if (cma_section(section))
		return handle_cma(pc, section, name, value);
	return profile_fail(pc, -DMM_EINVAL,
			    "unknown section [%s] (expected [machine], [ram], [reserved] or [cma NAME])",
			    section);
}

/*
 * inih reader over a FILE or a string that tracks the line number, so a
 * handler error can name its line, and rejects lines inih would split.
 */
static char *profile_reader(char *str, int num, void *stream)
{
	struct profile_ctx *pc = stream;
	size_t n = 0;

	if (num < 2)
		return NULL;
	if (pc->file) {
		if (!fgets(str, num, pc->file))
			return NULL;
		n = strlen(str);
	} else {
		if (!*pc->text)
			return NULL;
		while (n < (size_t)num - 1 && pc->text[n]) {
			str[n] = pc->text[n];
			if (pc->text[n++] == '\n')
				break;
		}
		str[n] = '\0';
		pc->text += n;
	}
	pc->line = pc->newlines + 1;
	{
		const char *t = str;

		while (isspace((unsigned char)*t))
			t++;
		if (*t == '[') {
			/* A section header: close the previous section first. */
			finish_section(pc);
			pc->hdr_seq++;
			pc->hdr_line = pc->line;
			pc->hdr_keys = 0;
			/* as inih reads it: the name starts right after '[' */
			pc->hdr_is_cma = strncmp(t + 1, "cma", 3) == 0 &&
					 (isspace((unsigned char)t[4]) || t[4] == ']');
		}
	}
	if (n && str[n - 1] == '\n') {
		pc->newlines++;
	} else if (n == (size_t)num - 1) {
		/* Longer than inih's line buffer: it would parse the rest as a
		 * line of its own. Report it and skip what follows. A line of
		 * num - 2 characters still fits with its newline. */
		profile_fail(pc, -DMM_EINVAL, "line longer than %d characters", num - 2);
		str[0] = '\0';
	}
	return str;
}

/* Say which rule of dmm_machine_validate() a parsed machine breaks. */
static void explain_invalid(const struct dmm_machine *m, char *buf, size_t len)
{
	if (m->nr_ram == 0) {
		snprintf(buf, len, "no [ram] regions");
		return;
	}
	if (m->dma_min_align < m->cache_line) {
		snprintf(buf, len, "dma_min_align (%u) is smaller than cache_line (%u)",
			 m->dma_min_align, m->cache_line);
		return;
	}
	if (m->dma_limit && m->dma32_limit && m->dma32_limit < m->dma_limit) {
		snprintf(buf, len, "dma32_limit is below dma_limit");
		return;
	}
	for (unsigned i = 0; i < m->nr_ram; i++) {
		const struct dmm_region *r = &m->ram[i];

		if (r->base + r->size > (1ULL << 52)) {
			snprintf(buf, len, "RAM region %u ends above the 52-bit physical space", i + 1);
			return;
		}
		for (unsigned j = 0; j < i; j++) {
			const struct dmm_region *o = &m->ram[j];

			if (r->base < o->base + o->size && o->base < r->base + r->size) {
				snprintf(buf, len, "RAM regions %u and %u overlap", j + 1, i + 1);
				return;
			}
		}
	}
	{
		dmm_phys_t lo = ~(dmm_phys_t)0, hi = 0;

		for (unsigned i = 0; i < m->nr_ram; i++) {
			if (m->ram[i].base < lo)
				lo = m->ram[i].base;
			if (m->ram[i].base + m->ram[i].size > hi)
				hi = m->ram[i].base + m->ram[i].size;
		}
		if (hi - lo > PROFILE_MAX_SPAN) {
			snprintf(buf, len, "RAM spans more than 8 TiB from its lowest to its highest address");
			return;
		}
	}
	if (dmm_machine_ram_bytes(m) == 0) {
		snprintf(buf, len, "RAM holds no whole 4 KiB page");
		return;
	}
	for (unsigned i = 0; i < m->nr_reserved; i++) {
		const struct dmm_region *r = &m->reserved[i];
		bool inside = false;

		for (unsigned j = 0; j < m->nr_ram; j++)
			if (r->base >= m->ram[j].base &&
			    r->base + r->size <= m->ram[j].base + m->ram[j].size)
				inside = true;
		if (!inside) {
			snprintf(buf, len, "reserved range %u [0x%llx-0x%llx] is not inside one RAM region",
				 i + 1, (unsigned long long)r->base,
				 (unsigned long long)(r->base + r->size - 1));
			return;
		}
	}
	snprintf(buf, len, "the machine description is invalid");
}

/* RAM bytes (whole pages) in [lo, hi). */
static uint64_t ram_between(const struct dmm_machine *m, uint64_t lo, uint64_t hi)
{
	uint64_t sum = 0;

	for (unsigned i = 0; i < m->nr_ram; i++) {
		uint64_t s = (m->ram[i].base + DMM_PAGE_SIZE - 1) & ~(uint64_t)(DMM_PAGE_SIZE - 1);
		uint64_t e = (m->ram[i].base + m->ram[i].size) & ~(uint64_t)(DMM_PAGE_SIZE - 1);

		if (s < lo)
			s = lo;
		if (e > hi)
			e = hi;
		if (e > s)
			sum += e - s;
	}
	return sum;
}

/*
 * Contiguous areas against the RAM map, once every section is read: an area
 * must fit in RAM (below its limit; a fixed one inside one RAM region).
 * Whether it also avoids the reserved ranges and stays in one zone is
 * decided when the memory map is built (dmm_mem_create() says why not).
 */
static int check_areas(const struct dmm_machine *m, const int *lines, char *buf, size_t len,
		       int *line)
{
	for (unsigned i = 0; i < m->nr_cma; i++) {
		const struct dmm_cma_decl *d = &m->cma[i];
		uint64_t bytes = (d->size + PROFILE_PAGEBLOCK_BYTES - 1) & ~(PROFILE_PAGEBLOCK_BYTES - 1);

		*line = lines[i];
		if (bytes > ram_between(m, 0, ~0ULL)) {
			snprintf(buf, len, "[cma %s]: %llu MiB is more than the machine's RAM", d->name,
				 (unsigned long long)(bytes >> 20));
			return -DMM_EINVAL;
		}
		if (d->limit && !d->base && bytes > ram_between(m, 0, d->limit)) {
			snprintf(buf, len, "[cma %s]: %llu MiB do not fit in the RAM below its limit 0x%llx",
				 d->name, (unsigned long long)(bytes >> 20),
				 (unsigned long long)d->limit);
			return -DMM_EINVAL;
		}
		if (d->base) {
			bool inside = false;

			for (unsigned j = 0; j < m->nr_ram; j++)
				if (d->base >= m->ram[j].base &&
				    d->base + bytes <= m->ram[j].base + m->ram[j].size)
					inside = true;
			if (!inside) {
				snprintf(buf, len, "[cma %s]: [0x%llx-0x%llx] is not inside one RAM region",
					 d->name, (unsigned long long)d->base,
					 (unsigned long long)(d->base + bytes - 1));
				return -DMM_EINVAL;
			}
		}
	}
	return 0;
}

/*
 * Run inih over @file or @text, then validate. @where names the source in
 * messages; @default_name is used when the profile sets no name.
 */
static int profile_parse(FILE *file, const char *text, const char *where, const char *default_name,
			 struct dmm_machine *m, char *err, size_t errlen)
{
	struct profile_ctx pc;
	struct dmm_machine tmp;
	char why[PROFILE_ERR_MAX];
	int line, rc;

	memset(&pc, 0, sizeof(pc));
	dmm_machine_defaults(&tmp);
	pc.m = &tmp;
	pc.file = file;
	pc.text = text;
	if (default_name) {
		size_t n = strlen(default_name);

		if (n >= sizeof(tmp.name))
			n = sizeof(tmp.name) - 1;
		memcpy(tmp.name, default_name, n);
		tmp.name[n] = '\0';
	}

	line = ini_parse_stream(profile_reader, &pc, profile_handler, &pc);
	if (line >= 0)
		finish_section(&pc);
	if (line == -2) {
		snprintf(err, errlen, "%s: out of memory", where);
		return -DMM_ENOMEM;
	}
	if (file && ferror(file)) {
		snprintf(err, errlen, "%s: read error", where);
		return -DMM_EINVAL;
	}
	if (line > 0 && (!pc.failed || line < pc.err_line)) {
		/* inih found a malformed line before any value error. */
		snprintf(err, errlen, "%s:%d: syntax error (expected [section], key = value or a comment)",
			 where, line);
		return -DMM_EINVAL;
	}
	if (pc.failed) {
		snprintf(err, errlen, "%s:%d: %s", where, pc.err_line, pc.msg);
		return pc.err;
	}
	rc = check_areas(&tmp, pc.area_line, why, sizeof(why), &line);
	if (rc) {
		snprintf(err, errlen, "%s:%d: %s", where, line, why);
		return rc;
	}
	rc = dmm_machine_validate(&tmp);
	if (rc) {
		explain_invalid(&tmp, why, sizeof(why));
		snprintf(err, errlen, "%s: %s", where, why);
		return rc;
	}
	*m = tmp;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Public interface                                                          */

/* $DMAMEM_PROFILE_DIR if set and non-empty, else the build-time directory. */
const char *dmm_profile_dir(void)
{
	const char *d = getenv("DMAMEM_PROFILE_DIR");

	return d && *d ? d : DMM_PROFILE_DIR;
}

/*
 * dmm_profile_parse_string() - parse profile @text into *@m.
 *
 * *@m is written only on success. Fails with -DMM_EINVAL (NULL text or
 * machine, a syntax error, an unknown section or key, a bad value, or a
 * machine dmm_machine_validate() rejects), -DMM_ENOSPC (more than
 * DMM_MAX_REGIONS regions in a section) or -DMM_ENOMEM; a one-line reason
 * ("<string>:LINE: what") is written into @err when @err is not NULL.
 */
int dmm_profile_parse_string(const char *text, struct dmm_machine *m, char *err, size_t errlen)
{
	char dummy[1];

	if (!err || !errlen) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	err[0] = '\0';
	if (!text || !m) {
		snprintf(err, errlen, "no profile text");
		return -DMM_EINVAL;
	}
	return profile_parse(NULL, text, "<string>", "custom", m, err, errlen);
}

/*
 * dmm_profile_load() - load a profile by name or path.
 *
 * A name ("pc") is looked up as <dmm_profile_dir()>/pc.ini; anything with a
 * '/' or ending in ".ini" is a path. The machine's name defaults to the
 * file's base name. Fails with -DMM_EINVAL (NULL or empty name, a bad
 * profile: see dmm_profile_parse_string()), -DMM_ENOENT (file cannot be
 * opened), -DMM_ENOSPC or -DMM_ENOMEM. *@m is written only on success.
 */
int dmm_profile_load(const char *name_or_path, struct dmm_machine *m, char *err, size_t errlen)
{
	char path[4096], base[DMM_MACHINE_NAME_MAX];
	const char *slash, *b;
	size_t n, len;
	char dummy[1];
	FILE *f;
	int rc;

	if (!err || !errlen) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	err[0] = '\0';
	if (!name_or_path || !*name_or_path || !m) {
		snprintf(err, errlen, "no profile name given");
		return -DMM_EINVAL;
	}
	len = strlen(name_or_path);
	if (strchr(name_or_path, '/') || (len > 4 && strcmp(name_or_path + len - 4, ".ini") == 0))
		n = (size_t)snprintf(path, sizeof(path), "%s", name_or_path);
	else
		n = (size_t)snprintf(path, sizeof(path), "%s/%s.ini", dmm_profile_dir(),
				     name_or_path);
	if (n >= sizeof(path)) {
		snprintf(err, errlen, "profile path too long");
		return -DMM_EINVAL;
	}

	slash = strrchr(path, '/');
	b = slash ? slash + 1 : path;
	n = strlen(b);
	if (n > 4 && strcmp(b + n - 4, ".ini") == 0)
		n -= 4;
	if (n >= sizeof(base))
		n = sizeof(base) - 1;
	memcpy(base, b, n);
	base[n] = '\0';

	f = fopen(path, "r");
	if (!f) {
		int e = errno;

		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(e));
		return e == ENOENT || e == ENOTDIR ? -DMM_ENOENT : -DMM_EINVAL;
	}
	rc = profile_parse(f, NULL, path, base, m, err, errlen);
	fclose(f);
	return rc;
}

/* SPDX-License-Identifier: MIT */
/*
 * What every fuzz target's operation interpreter provides: libFuzzer's entry
 * point, and the one-line summary of its counters that replay_main.c prints
 * after replaying (so the same main drives fuzz_alloc.c, fuzz_iova.c and
 * fuzz_dma.c); and the input reader they all use.
 */
#ifndef DMM_FUZZ_TARGET_H
#define DMM_FUZZ_TARGET_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Print the counters of every input run so far on stdout, one line,
 * prefixed with "@prog: ". */
void dmm_fuzz_print_summary(const char *prog);

/* The operation log on stderr when DMM_FUZZ_TRACE is set (to reproduce a
 * failure the fuzzer or a replay found), each line prefixed with the step
 * number @step. Each target wraps it as trace(fmt, ...). */
__attribute__((format(printf, 2, 3))) static inline void dmm_fuzz_trace(uint64_t step, const char *fmt, ...)
{
	static int on = -1;
	va_list ap;

	if (on < 0)
		on = getenv("DMM_FUZZ_TRACE") != NULL;
	if (!on)
		return;
	fprintf(stderr, "[%llu] ", (unsigned long long)step);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* The input read as a byte stream: past its end every read is 0. */
struct rd {
	const uint8_t *p;
	size_t n;
};

static inline uint64_t u8(struct rd *r)
{
	if (!r->n)
		return 0;
	r->n--;
	return *r->p++;
}

/* Little-endian, the reads sequenced (in "u8(r) | u8(r) << 8" the compiler
 * picks the order: an input would mean one thing to gcc, another to clang). */
static inline uint64_t u16(struct rd *r)
{
	uint64_t lo = u8(r);
	return lo | u8(r) << 8;
}

static inline uint64_t u32(struct rd *r)
{
	uint64_t lo = u16(r);
	return lo | u16(r) << 16;
}

#endif

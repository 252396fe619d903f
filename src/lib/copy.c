/* SPDX-License-Identifier: MIT */
/* Bulk copies of DMA bytes: the x86-64 vector loop (lib/copy.h). */
#include "lib/copy.h"

#if DMM_COPY_HAVE_WIDE

#include <stdint.h>

static void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

bool dmm__cpu_copy_wide(void)
{
	uint32_t r[4], lo, hi;

	cpuid(0, 0, r);
	if (r[0] < 7)
		return false;
	cpuid(1, 0, r);
	/* ECX: OSXSAVE (27) and AVX (28) */
	if ((r[2] & (3u << 27)) != (3u << 27))
		return false;
	/* XCR0: the OS saves the SSE (1) and AVX (2) register state */
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	(void)hi;
	if ((lo & 6u) != 6u)
		return false;
	cpuid(7, 0, r);
	return (r[1] >> 5) & 1u; /* EBX: AVX2 */
}

/* 32 bytes, any alignment, any type (the copy's bytes are the caller's) */
typedef unsigned char dmm_v32 __attribute__((vector_size(32), aligned(1), may_alias));

#define LD(p) (*(const dmm_v32 *)(const void *)(p))
#define ST(p, v) (*(dmm_v32 *)(void *)(p) = (v))

/* Four vectors a step, stored to 32-byte aligned addresses (a store that
 * splits a cache line costs about twice as much, and a copy with a
 * misaligned destination would split every other one). The first 32 bytes
 * and the last 128 are loaded first and stored apart, unaligned: they
 * cover the head before the first aligned address and the tail of any
 * length without a byte loop. */
__attribute__((target("avx2"))) void dmm__copy_wide(void *d, const void *s, size_t n)
{
	const unsigned char *src = s, *se = src + n;
	unsigned char *dst = d, *de = dst + n;
	dmm_v32 h = LD(src), t0 = LD(se - 128), t1 = LD(se - 96), t2 = LD(se - 64), t3 = LD(se - 32);
	size_t i = 32 - ((uintptr_t)dst & 31); /* 1..32: dst + i is aligned */

	ST(dst, h);
	for (; i < n - 128; i += 128) {
		dmm_v32 a = LD(src + i), b = LD(src + i + 32), c = LD(src + i + 64), e = LD(src + i + 96);

		ST(dst + i, a);
		ST(dst + i + 32, b);
		ST(dst + i + 64, c);
		ST(dst + i + 96, e);
	}
	ST(de - 128, t0);
	ST(de - 96, t1);
	ST(de - 64, t2);
	ST(de - 32, t3);
}

#endif

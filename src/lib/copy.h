/* SPDX-License-Identifier: MIT */
/*
 * Bulk copies of DMA bytes (bounce buffers, page migration).
 *
 * On x86-64 a bounce map's copy is followed by the mapping's bookkeeping
 * (or preceded by the unmap's). The C library's memcpy copies a few KiB
 * with `rep movsb`, one microcoded instruction: a 4 KiB bounce pair with
 * it cost the copy, the bookkeeping and 5-10 ns more. With a loop of
 * 32-byte vector moves it costs the copy and the bookkeeping, no more (not
 * less: they do not measurably overlap), and the loop alone runs at
 * 0.8-1.12x memcpy's time (docs/BENCHMARKS.md, bench_swiotlb). The
 * loop needs AVX2: dmm__cpu_copy_wide() says whether this CPU and its OS
 * have it, once per memory map (struct dmm_mem's copy_wide), so the core
 * still runs on any x86-64 and on every other architecture with plain
 * memcpy. It also needs the right to touch vector registers, which a
 * kernel's own code does not have without saving the interrupted task's
 * state first: the platform grants it (struct dmm_platform's vector_copy,
 * the hosted platform's), or the copies stay memcpy.
 */
#ifndef DMM_LIB_COPY_H
#define DMM_LIB_COPY_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/bits.h"

/* The sizes the vector loop copies: from four vectors (it stores the last
 * 128 bytes apart) up to where the copy outgrows the L2 cache and memcpy's
 * own large-copy strategies win. */
#define DMM_COPY_WIDE_MIN 128u
#define DMM_COPY_WIDE_MAX 65536u

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DMM_COPY_HAVE_WIDE 1
/* Does this CPU run the vector loop: AVX2, with the OS saving the 256-bit
 * registers (CPUID and XGETBV, as an OS kernel asks before using them)? */
bool dmm__cpu_copy_wide(void);
/* Copy @n bytes, DMM_COPY_WIDE_MIN <= @n, from @s to @d (not
 * overlapping) with 32-byte vector moves. Only where dmm__cpu_copy_wide(). */
void dmm__copy_wide(void *d, const void *s, size_t n);
#else
#define DMM_COPY_HAVE_WIDE 0
static inline bool dmm__cpu_copy_wide(void) { return false; }
#endif

/* Copy @n bytes from @s to @d (not overlapping): the vector loop when
 * @wide (the memory map's copy_wide) and @n is in its range, else memcpy. */
static inline void dmm__copy(bool wide, void *d, const void *s, size_t n)
{
#if DMM_COPY_HAVE_WIDE
	if (wide && n - DMM_COPY_WIDE_MIN <= DMM_COPY_WIDE_MAX - DMM_COPY_WIDE_MIN) {
		dmm__copy_wide(d, s, n);
		return;
	}
#else
	(void)wide;
#endif
	dmm_memcpy(d, s, n);
}

#endif

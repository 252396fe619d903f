/* SPDX-License-Identifier: MIT */
/* Small freestanding helpers shared by the core. */
#ifndef DMM_LIB_BITS_H
#define DMM_LIB_BITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

static inline bool dmm_is_pow2(uint64_t x) { return x && !(x & (x - 1)); }
static inline uint64_t dmm_align_up(uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }
static inline uint64_t dmm_align_down(uint64_t x, uint64_t a) { return x & ~(a - 1); }
static inline uint64_t dmm_min64(uint64_t a, uint64_t b) { return a < b ? a : b; }
static inline uint64_t dmm_max64(uint64_t a, uint64_t b) { return a > b ? a : b; }
static inline unsigned dmm_ctz64(uint64_t x) { return (unsigned)__builtin_ctzll(x); }
static inline unsigned dmm_clz64(uint64_t x) { return (unsigned)__builtin_clzll(x); }
static inline unsigned dmm_ilog2(uint64_t x) { return 63u - dmm_clz64(x); }

/* The compiler lowers these to memset/memcpy, which a freestanding C
 * environment must provide; the core never calls any other libc function. */
static inline void dmm_memset(void *d, int c, size_t n) { __builtin_memset(d, c, n); }
static inline void dmm_memcpy(void *d, const void *s, size_t n) { __builtin_memcpy(d, s, n); }

/*
 * Exact division by a constant d = odd * 2^shift without a divide
 * (Granlund and Montgomery). dmm_odd_inverse(odd) is odd's inverse modulo
 * 2^32 (Newton's iteration: each step doubles the correct low bits, from 3
 * for odd itself). dmm_quot_exact(x, inv, shift), for x < 2^32, is x / d
 * when d divides x, and at least 2^32 / d otherwise (low bits that are not
 * zero rotate to the top, or the odd part's multiple test fails): for any
 * n with n * d <= 2^32 - 2^shift, "dmm_quot_exact(x, inv, shift) < n" says
 * in one compare that d divides x and that x / d < n.
 */
static inline uint32_t dmm_odd_inverse(uint32_t odd)
{
	uint32_t x = odd;

	for (int i = 0; i < 4; i++)
		x *= 2 - odd * x;
	return x;
}

static inline uint32_t dmm_quot_exact(uint32_t x, uint32_t inv, unsigned shift)
{
	uint32_t y = x * inv;

	return (y >> shift) | (y << ((32 - shift) & 31));
}

#define DMM_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define dmm_likely(x) __builtin_expect(!!(x), 1)
#define dmm_unlikely(x) __builtin_expect(!!(x), 0)

#endif

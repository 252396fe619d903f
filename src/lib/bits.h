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

#define DMM_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define dmm_likely(x) __builtin_expect(!!(x), 1)
#define dmm_unlikely(x) __builtin_expect(!!(x), 0)

#endif

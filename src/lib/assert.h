/* SPDX-License-Identifier: MIT */
/*
 * Assertion tiers, chosen by DMM_ASSERT_LEVEL at build time:
 *   0  none
 *   1  cheap:     O(1) argument-independent sanity checks (DMM_ASSERT)
 *   2  internal:  O(1) checks of internal state on every path (DMM_ASSERT_INT)
 *   3  expensive: full invariant walks after every mutation (DMM_ASSERT_EXP)
 * A failed assertion calls the platform's panic hook (never returns).
 * Kernels have no <assert.h>; this is the whole mechanism.
 */
#ifndef DMM_LIB_ASSERT_H
#define DMM_LIB_ASSERT_H

#ifndef DMM_ASSERT_LEVEL
#define DMM_ASSERT_LEVEL 1
#endif

struct dmm_mem;
__attribute__((noreturn)) void dmm_assert_fail(const struct dmm_mem *mem, const char *expr,
					       const char *file, int line);

#define DMM_ASSERT__(mem, e) \
	((e) ? (void)0 : dmm_assert_fail((mem), #e, __FILE__, __LINE__))

#if DMM_ASSERT_LEVEL >= 1
#define DMM_ASSERT(mem, e) DMM_ASSERT__(mem, e)
#else
#define DMM_ASSERT(mem, e) ((void)0)
#endif
#if DMM_ASSERT_LEVEL >= 2
#define DMM_ASSERT_INT(mem, e) DMM_ASSERT__(mem, e)
#else
#define DMM_ASSERT_INT(mem, e) ((void)0)
#endif
#if DMM_ASSERT_LEVEL >= 3
#define DMM_ASSERT_EXP(mem, e) DMM_ASSERT__(mem, e)
#else
#define DMM_ASSERT_EXP(mem, e) ((void)0)
#endif

#endif

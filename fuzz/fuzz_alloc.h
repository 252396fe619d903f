/* SPDX-License-Identifier: MIT */
/* The allocator fuzz target's entry points (libFuzzer's and the replay
 * summary, fuzz_target.h) and its counters. */
#ifndef DMM_FUZZ_ALLOC_H
#define DMM_FUZZ_ALLOC_H

#include "fuzz_target.h"

struct dmm_fuzz_counts {
	uint64_t inputs, ops, page_ok, page_fail, range_ok, range_fail, frees, bad_calls,
		oracle_checks;
};

void dmm_fuzz_get_counts(struct dmm_fuzz_counts *out);

#endif

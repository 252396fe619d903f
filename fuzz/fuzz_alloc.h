/* SPDX-License-Identifier: MIT */
/* The allocator fuzz target's entry points (libFuzzer's, and the counters
 * replay_main.c prints). */
#ifndef DMM_FUZZ_ALLOC_H
#define DMM_FUZZ_ALLOC_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct dmm_fuzz_counts {
	uint64_t inputs, ops, page_ok, page_fail, range_ok, range_fail, frees, bad_calls,
		oracle_checks;
};

void dmm_fuzz_get_counts(struct dmm_fuzz_counts *out);

#endif

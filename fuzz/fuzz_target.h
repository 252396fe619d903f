/* SPDX-License-Identifier: MIT */
/*
 * What every fuzz target's operation interpreter provides: libFuzzer's entry
 * point, and the one-line summary of its counters that replay_main.c prints
 * after replaying (so the same main drives fuzz_alloc.c and fuzz_iova.c).
 */
#ifndef DMM_FUZZ_TARGET_H
#define DMM_FUZZ_TARGET_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Print the counters of every input run so far on stdout, one line,
 * prefixed with "@prog: ". */
void dmm_fuzz_print_summary(const char *prog);

#endif

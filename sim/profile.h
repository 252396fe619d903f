/* SPDX-License-Identifier: MIT */
/*
 * Machine profiles: INI files in profiles/ describing a machine (parsed with
 * inih). Hosted code, not part of the freestanding core.
 */
#ifndef DMM_SIM_PROFILE_H
#define DMM_SIM_PROFILE_H

#include <stddef.h>

#include <dmamem/machine.h>

/* Directory searched for NAME.ini (env DMAMEM_PROFILE_DIR overrides). */
const char *dmm_profile_dir(void);

/*
 * Load a profile by name ("pc" -> <dir>/pc.ini) or by path (anything with a
 * '/' or ending in ".ini"). On failure returns a negative DMM_E* code and
 * writes a one-line reason (file:line: what) into @err.
 */
int dmm_profile_load(const char *name_or_path, struct dmm_machine *m, char *err, size_t errlen);

/* Parse profile text (same format) from a string. */
int dmm_profile_parse_string(const char *text, struct dmm_machine *m, char *err, size_t errlen);

/* Parse "16M", "4G", "0x1000", "123" (K/M/G/T suffixes, binary). 0 on success. */
int dmm_parse_size(const char *s, unsigned long long *out);

#endif

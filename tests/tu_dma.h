/* SPDX-License-Identifier: MIT */
/* Shared helpers of the DMA-layer tests: a memory map from a machine
 * profile, and a device description. Everything static. */
#ifndef DMM_TESTS_TU_DMA_H
#define DMM_TESTS_TU_DMA_H

#include "tu.h"

#include "profile.h"

/* Load the machine profile @name into *@m (the test fails if it cannot). */
static inline void tu_profile(const char *name, struct dmm_machine *m)
{
	char err[256];
	if (dmm_profile_load(name, m, err, sizeof(err)))
		fail_msg("profile %s: %s", name, err);
}

/* A hosted memory map (2 CPU slots) of the machine profile @name. */
static inline struct tu_env *tu_env_profile(const char *name)
{
	struct dmm_machine m;
	tu_profile(name, &m);
	return tu_env_create(&m, 2);
}

/* A device driving @bits address bits, coherent or not, with area @cma_area
 * (DMM_DEVICE_CMA_DEFAULT, DMM_DEVICE_CMA_NONE or an index). */
static inline struct dmm_device_desc tu_desc(const char *name, unsigned bits, int coherent, int cma_area)
{
	struct dmm_device_desc d;
	memset(&d, 0, sizeof(d));
	d.name = name;
	d.dma_mask = DMM_DMA_BIT_MASK(bits);
	d.coherent = coherent;
	d.cma_area = cma_area;
	return d;
}

#endif

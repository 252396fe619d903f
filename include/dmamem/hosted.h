/* SPDX-License-Identifier: MIT */
/*
 * Hosted platform: the dmm_platform hooks implemented with pthreads and host
 * memory. RAM is one mapping (MAP_NORESERVE) of a memory file (memfd;
 * anonymous memory where the host has none) spanning the machine's physical
 * address range, so a 64 GiB machine costs only the pages touched; vmap maps
 * pages of the file a second time. Locks are spinlocks with back-off;
 * deferred and delayed work runs on one worker thread;
 * cache maintenance and attribute changes are counted no-ops (a coherent
 * host). Not part of the freestanding core.
 */
#ifndef DMAMEM_HOSTED_H
#define DMAMEM_HOSTED_H

#include <stdint.h>

#include "machine.h"
#include "mem.h"
#include "platform.h"

struct dmm_hosted;

struct dmm_hosted_stats {
	uint64_t deferred_run;
	uint64_t cache_ops;
	uint64_t cache_bytes;
	uint64_t memattr_calls;
	uint64_t memattr_bytes;
	int membarrier;             /* 1: cpu_fence is membarrier(2): slot owners enter sections without a fence */
};

/*
 * Create the hosted platform for @m: map its RAM, start the worker.
 * @nr_cpus: per-CPU cache slots (0 = number of online CPUs). Threads are
 * assigned slots round-robin on first use. @log_level: messages above it
 * are dropped.
 */
int dmm_hosted_create(const struct dmm_machine *m, unsigned nr_cpus, int log_level,
		      struct dmm_hosted **out);
void dmm_hosted_destroy(struct dmm_hosted *h);
const struct dmm_platform *dmm_hosted_platform(struct dmm_hosted *h);
void dmm_hosted_get_stats(struct dmm_hosted *h, struct dmm_hosted_stats *st);

/* Convenience: hosted platform + memory map in one call (and teardown). */
int dmm_hosted_mem_create(const struct dmm_machine *m, unsigned nr_cpus,
			  struct dmm_hosted **hosted, struct dmm_mem **mem);
void dmm_hosted_mem_destroy(struct dmm_hosted *hosted, struct dmm_mem *mem);

#endif

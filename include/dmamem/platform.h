/* SPDX-License-Identifier: MIT */
/*
 * Platform hooks: everything the freestanding core needs from its embedder.
 *
 * The core never calls libc allocation, stdio or threads. An embedder (a
 * kernel, a hypervisor, an RTOS, a user-space driver framework, the hosted
 * implementation in src/platform/hosted.c, or the simulator's hardware model)
 * fills a struct dmm_platform and hands it to dmm_mem_create().
 *
 * Contract, hook by hook (context: "atomic" means the caller may hold a
 * spinlock and must not sleep):
 *
 *  lock_init/lock_destroy  Prepare/retire the opaque storage of a lock.
 *                          Called from process context only.
 *  lock/unlock             Mutual exclusion usable from atomic context (a
 *                          spinlock, or a mutex on a host where nothing is
 *                          atomic). Never recursive. Required.
 *  defer                   Queue fn(arg) to run later on a worker, outside
 *                          every dmamem lock. Callable from atomic context.
 *                          Returns 0 or -DMM_ENOMEM. May be NULL: then the
 *                          features that need background work report
 *                          -DMM_ENOTSUP.
 *  defer_after             Like defer, but not before @delay_ns have passed
 *                          (a timer). defer_flush runs such work at once.
 *                          May be NULL: then timeouts are only checked when
 *                          the library is next called.
 *  defer_flush             Wait until every queued function has run.
 *                          Process context. May be NULL.
 *  now_ns                  Monotonic time in nanoseconds. Atomic context.
 *  log                     Print one message (printf-style format, va_list).
 *                          Atomic context. May be NULL (silent).
 *  panic                   Called when an assertion fails; must not return.
 *                          May be NULL (the core then traps).
 *  phys_to_virt            CPU pointer to managed physical memory at @pa, or
 *                          NULL if @pa is not RAM. Atomic context. Required:
 *                          the core keeps its own metadata in managed RAM.
 *  virt_to_phys            Inverse of phys_to_virt for pointers into managed
 *                          RAM: 0 or -DMM_ERANGE. May be NULL (then
 *                          dmm_dma_map_single reports -DMM_EINVAL).
 *  cache_clean/invalidate/flush
 *                          Cache maintenance by physical range (write back,
 *                          discard, both). No-ops on a coherent host. May be
 *                          NULL (treated as no-op).
 *  set_memattr             Change the CPU memory attribute of the linear
 *                          mapping of a physical range (write-back, write-
 *                          combine, uncached). Returns 0 or a negative code.
 *                          May be NULL (treated as success: coherent host).
 *  phys_fill/phys_copy     Write or copy physical memory the way the CPU
 *                          does (through its caches). The core uses them for
 *                          zeroing, migration and bouncing. May be NULL:
 *                          then phys_to_virt + memset/memcpy (a coherent host;
 *                          with vector_copy, some copies take a vector loop).
 *  vector_copy             Set (1) by a host whose code may use the CPU's
 *                          vector registers at any moment (user space: the OS
 *                          saves them at every switch). Copies of 128 B to
 *                          64 KiB through the linear map (bouncing, migration)
 *                          then take the core's AVX2 loop on an x86-64 CPU
 *                          that has it (src/lib/copy.h). 0 (a kernel or
 *                          hypervisor, whose own code must save a task's
 *                          vector state before touching it and may be called
 *                          from interrupts; a build with -mgeneral-regs-only):
 *                          memcpy only. Ignored with phys_copy.
 *  cpu_id                  Index of the current CPU in [0, nr_cpus). Used to
 *                          pick a per-CPU cache that has its own lock (page
 *                          lists, IOVA magazines, bounce areas), so a thread
 *                          that migrates between CPUs is safe; the caches
 *                          behind CPU-local sections (below) use the index
 *                          cpu_enter returns instead. May be NULL (CPU 0).
 *  iotlb_inval             Invalidate the IOMMU's cached translations (IOTLB)
 *                          of domain @domain_id for IOVAs [iova, iova + size)
 *                          (size 0: the whole domain) and return once the
 *                          invalidation is complete. Atomic context. May be
 *                          NULL (no IOMMU hardware caches translations).
 *  cpu_enter/cpu_exit     A CPU-local section: cpu_enter returns an index in
 *                          [0, nr_cpus) that the caller holds until the
 *                          matching cpu_exit. No other section with that
 *                          index, and no cpu_sync of it, runs in between, so
 *                          the core touches that CPU's caches with plain loads
 *                          and stores: no lock, no atomic read-modify-write.
 *                          Sections are short, never nest and never sleep.
 *                          A kernel implements them as preempt_disable() (or
 *                          local_irq_save() where the core is called from
 *                          interrupts) plus smp_processor_id(); an RTOS by
 *                          locking its scheduler. Atomic context.
 *  cpu_sync                Run fn(arg) at a moment when no section of CPU
 *                          @cpu is running, and return once it has run (a
 *                          kernel: smp_call_function_single(cpu, fn, arg, 1)).
 *                          The core uses it to drain or inspect another CPU's
 *                          caches and as a grace period before it frees
 *                          something sections may still be reading. Process
 *                          context, outside any section; the core may hold
 *                          one of its own locks (not a section) meanwhile, so
 *                          an implementation must not need interrupts of this
 *                          CPU enabled to wait for another. fn may call
 *                          cpu_sync for a higher-numbered CPU: the core holds
 *                          all CPUs at once that way, in increasing order, to
 *                          see every cache in one consistent state (a kernel:
 *                          stop_machine()).
 *                          cpu_enter, cpu_exit and cpu_sync come together or
 *                          not at all.
 *  cpu_thread_slots        Set (1) by a host whose callers are threads that
 *                          the OS may preempt or move at any moment (user
 *                          space). The core then runs CPU-local sections
 *                          itself, inline: each slot is biased to an owner
 *                          thread, found by its thread pointer (one register
 *                          read); that thread enters with plain stores, any
 *                          other takes the slot's lock. Only where
 *                          DMM_HAVE_THREAD_POINTER is defined; exclusive with
 *                          cpu_enter. cpu_id picks a new thread's slot.
 *                          Requires every thread to have its own thread
 *                          pointer (threads of the C library; not raw clone()
 *                          without CLONE_SETTLS), no call into dmamem from a
 *                          signal handler (sections would nest), and no use
 *                          of a memory map from both sides of a fork().
 *  cpu_fence               With cpu_thread_slots: a barrier that makes every
 *                          thread of the process execute a full memory fence
 *                          (Linux: membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)).
 *                          The thread that owns a slot then needs no fence of
 *                          its own; a thread taking a slot from its owner
 *                          calls this. May be NULL: both sides use a full
 *                          fence (slower sections).
 *  cpu_yield               With cpu_thread_slots: let other threads run (a
 *                          thread waits for a slot owner the OS preempted
 *                          inside a section). May be NULL (busy wait).
 *                          Without cpu_enter or cpu_thread_slots the core takes
 *                          one lock per CPU slot (chosen with cpu_id) instead.
 *  linear_virt/linear_phys/linear_size
 *                          Optional linear mapping: RAM at physical
 *                          [linear_phys, linear_phys + linear_size) appears at
 *                          CPU addresses [linear_virt, linear_virt +
 *                          linear_size). phys_to_virt and virt_to_phys must
 *                          agree with it; the core then translates inside it
 *                          with an addition instead of a call (the fast paths
 *                          of kfree and of bouncing). All three page-aligned
 *                          (dmm_platform_validate refuses a map of part
 *                          pages). linear_size 0: none.
 *  vmap/vunmap             Map @n pages (physical addresses @pages) at
 *                          consecutive CPU addresses with attribute @attr
 *                          (uncached for a non-coherent device's buffer),
 *                          and undo it; the mapping must be visible to
 *                          virt_to_phys. Process context. May be NULL: then
 *                          IOMMU coherent allocations need physically
 *                          contiguous pages.
 */
#ifndef DMAMEM_PLATFORM_H
#define DMAMEM_PLATFORM_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "constraint.h"

/* The compiler reads the thread pointer in one instruction: the core can run
 * CPU-local sections for threads itself (cpu_thread_slots). */
#if defined(__has_builtin)
#if __has_builtin(__builtin_thread_pointer) && (defined(__x86_64__) || defined(__aarch64__))
#define DMM_HAVE_THREAD_POINTER 1
#endif
#endif

/* Opaque lock storage, large enough for a pthread mutex or a ticket lock. */
struct dmm_lock {
	_Alignas(16) unsigned char opaque[64];
};

enum dmm_log_level { DMM_LOG_ERR = 0, DMM_LOG_WARN, DMM_LOG_INFO, DMM_LOG_DEBUG };

enum dmm_memattr {
	DMM_MEMATTR_WB = 0,   /* normal cacheable write-back */
	DMM_MEMATTR_WC,       /* write-combining (bufferable, not cacheable) */
	DMM_MEMATTR_UC,       /* uncached */
};

enum dmm_cache_op { DMM_CACHE_CLEAN = 0, DMM_CACHE_INVALIDATE, DMM_CACHE_FLUSH };

struct dmm_platform {
	void *ctx;
	void (*lock_init)(void *ctx, struct dmm_lock *l);
	void (*lock_destroy)(void *ctx, struct dmm_lock *l);
	void (*lock)(void *ctx, struct dmm_lock *l);
	void (*unlock)(void *ctx, struct dmm_lock *l);
	int (*defer)(void *ctx, void (*fn)(void *arg), void *arg);
	int (*defer_after)(void *ctx, void (*fn)(void *arg), void *arg, uint64_t delay_ns);
	void (*defer_flush)(void *ctx);
	uint64_t (*now_ns)(void *ctx);
	void (*log)(void *ctx, int level, const char *fmt, va_list ap);
	void (*panic)(void *ctx, const char *msg);
	void *(*phys_to_virt)(void *ctx, dmm_phys_t pa);
	int (*virt_to_phys)(void *ctx, const void *va, dmm_phys_t *pa);
	void (*cache_maint)(void *ctx, enum dmm_cache_op op, dmm_phys_t pa, size_t len);
	int (*set_memattr)(void *ctx, dmm_phys_t pa, size_t len, enum dmm_memattr attr);
	void (*phys_fill)(void *ctx, dmm_phys_t pa, int c, size_t len);
	void (*phys_copy)(void *ctx, dmm_phys_t dst, dmm_phys_t src, size_t len);
	unsigned (*cpu_id)(void *ctx);
	void (*iotlb_inval)(void *ctx, uint32_t domain_id, uint64_t iova, uint64_t size);
	int (*vmap)(void *ctx, const dmm_phys_t *pages, size_t n, enum dmm_memattr attr, void **va);
	void (*vunmap)(void *ctx, void *va, size_t n);
	unsigned (*cpu_enter)(void *ctx);
	void (*cpu_exit)(void *ctx, unsigned cpu);
	void (*cpu_sync)(void *ctx, unsigned cpu, void (*fn)(void *arg), void *arg);
	unsigned cpu_thread_slots;
	void (*cpu_fence)(void *ctx);
	void (*cpu_yield)(void *ctx);
	unsigned char *linear_virt;
	dmm_phys_t linear_phys;
	uint64_t linear_size;
	unsigned nr_cpus;      /* number of per-CPU caches to create (>= 1) */
	unsigned vector_copy;  /* bulk copies may use vector registers (above) */
};

/* Returns 0 if the required hooks are present and nr_cpus is sane. */
int dmm_platform_validate(const struct dmm_platform *p);

#endif

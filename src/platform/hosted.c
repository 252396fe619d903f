/* SPDX-License-Identifier: MIT */
/*
 * Hosted platform: the struct dmm_platform hooks on an ordinary POSIX host.
 *
 *   physical address space            host virtual memory (one mapping)
 *
 *   span_start                        h->ram
 *   |  RAM 0  | hole |  RAM 1  |  ... |  RAM 0  | hole |  RAM 1  |  ...
 *   +---------+------+---------+      +---------+------+---------+
 *                                     PROT_READ|PROT_WRITE, MAP_SHARED |
 *                                     MAP_NORESERVE of a memory file
 *
 * RAM is one mapping of a memory file (memfd_create; anonymous memory on a
 * host without it) spanning [lowest RAM base rounded down to a page,
 * highest RAM end rounded up to a page). vmap maps pages of the file a
 * second time at consecutive addresses (IOMMU coherent buffers made of
 * scattered pages); virt_to_phys knows those mappings. Holes are mapped but never
 * touched, and the kernel backs only the pages that are written, so a 64 GiB
 * machine costs what its metadata and workload touch, not 64 GiB.
 * phys_to_virt() is therefore one subtraction once the address is known to
 * be RAM; the RAM regions are kept sorted so that test stops early.
 *
 * Locks are ticket spinlocks (two 16-bit C11 atomics in the opaque struct
 * dmm_lock): one atomic add when uncontended (the per-CPU page allocation
 * path takes one per call), a release store to unlock, first come first
 * served when contended (read-only spinning with a pause hint), and
 * sched_yield() after a while so a host with more threads than CPUs does
 * not burn a whole time slice on a holder that was preempted.
 *
 * Deferred work runs on one worker thread fed by a mutex/condvar queue of
 * malloc'd nodes; delayed work (defer_after) waits in a list sorted by due
 * time, the worker sleeping until the first is due. Cache maintenance and memory attribute changes are counted
 * no-ops: the host is cache-coherent and its mapping attributes are fixed.
 *
 * CPU ids: every host thread gets a slot number on its first call, handed
 * out round-robin from one process-wide counter; cpu_id() returns that slot
 * modulo the platform's nr_cpus. Caches with their own locks are merely
 * slower, not wrong, when two threads share a slot.
 *
 * CPU-local sections: the core runs them itself for threads
 * (cpu_thread_slots); the platform gives it the process-wide barrier
 * (membarrier(2), MEMBARRIER_CMD_PRIVATE_EXPEDITED, registered once) that
 * lets the thread owning a slot enter without a fence, and sched_yield()
 * for a thread waiting on one that was preempted inside a section.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <dmamem/error.h>
#include <dmamem/hosted.h>

/* Spins on a contended lock before yielding the CPU. */
#define HOSTED_SPINS_BEFORE_YIELD 128u
/* Upper bound on nr_cpus, as dmm_platform_validate() enforces. */
#define HOSTED_MAX_CPUS 1024u
/* Longest log line; longer messages are truncated. */
#define HOSTED_LOG_LINE 512

struct hosted_work {
	struct hosted_work *next;
	void (*fn)(void *arg);
	void *arg;
	uint64_t due_ns;         /* delayed work: monotonic time it becomes due */
	uint64_t seq;            /* order of queueing (defer_flush waits for older work) */
};

/* A vmap: @n pages of the RAM file mapped at consecutive addresses. */
struct hosted_vmap {
	struct hosted_vmap *next;
	unsigned char *va;
	size_t n;
	dmm_phys_t pa[];
};

struct hosted_ram {
	dmm_phys_t start; /* inclusive */
	dmm_phys_t end;   /* exclusive */
};

struct dmm_hosted {
	struct dmm_platform plat;

	/* RAM: one mapping covering [span_start, span_end), of a memory file
	 * (ram_fd) when the host has memfd_create, so that vmap can map its
	 * pages a second time; else anonymous memory and no vmap. */
	unsigned char *ram;
	size_t ram_len;
	int ram_fd;
	pthread_mutex_t vm_lock;
	struct hosted_vmap *vmaps;
	dmm_phys_t span_start;
	dmm_phys_t span_end;
	unsigned nr_ram;
	struct hosted_ram rg[DMM_MAX_REGIONS]; /* sorted by start, disjoint */

	int log_level;

	/* Deferred work queue and its worker. */
	pthread_mutex_t q_lock;
	pthread_cond_t q_wake;   /* worker: work queued or stop requested */
	pthread_cond_t q_idle;   /* flushers: queue empty and worker idle */
	struct hosted_work *q_head;
	struct hosted_work *q_tail;
	struct hosted_work *q_delayed; /* defer_after: sorted by due_ns */
	uint64_t q_seq;          /* next work's seq */
	uint64_t q_flush_seq;    /* delayed work queued before this is due now (a
				  * flush waits for it); UINT64_MAX when stopping */
	unsigned q_flushers;
	bool q_busy;             /* worker is running a function */
	bool q_stop;
	bool worker_started;
	pthread_t worker;

	/* Statistics (relaxed atomics: counters only). */
	atomic_uint_fast64_t deferred_run;
	atomic_uint_fast64_t cache_ops;
	atomic_uint_fast64_t cache_bytes;
	atomic_uint_fast64_t memattr_calls;
	atomic_uint_fast64_t memattr_bytes;
};

/* ------------------------------------------------------------------------ */
/* Locks                                                                     */

_Static_assert(sizeof(atomic_uint) <= sizeof(((struct dmm_lock *)0)->opaque),
	       "dmm_lock storage too small for the hosted spinlock");
_Static_assert(_Alignof(atomic_ushort) <= 16, "dmm_lock storage under-aligned");

static inline atomic_ushort *lock_owner(struct dmm_lock *l)
{
	return (atomic_ushort *)(void *)l->opaque;
}

static inline atomic_ushort *lock_next(struct dmm_lock *l)
{
	return (atomic_ushort *)(void *)(l->opaque + sizeof(atomic_ushort));
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
	__asm__ __volatile__("yield" ::: "memory");
#else
	atomic_signal_fence(memory_order_seq_cst);
#endif
}

static void hosted_lock_init(void *ctx, struct dmm_lock *l)
{
	(void)ctx;
	memset(l->opaque, 0, sizeof(l->opaque));
	atomic_init(lock_owner(l), 0);
	atomic_init(lock_next(l), 0);
}

static void hosted_lock_destroy(void *ctx, struct dmm_lock *l)
{
	struct dmm_hosted *h = ctx;

	if (atomic_load_explicit(lock_owner(l), memory_order_relaxed) !=
	    atomic_load_explicit(lock_next(l), memory_order_relaxed))
		h->plat.panic(ctx, "lock destroyed while held");
}

/*
 * Ticket lock: two 16-bit counters in the lock's storage, the ticket being
 * served and the next ticket. Fair: a thread that just released the lock
 * cannot take it again ahead of one already waiting (a test-and-set lock let
 * the releasing CPU win most hand-offs, so a waiter could spin through many
 * critical sections). One atomic add to take it uncontended, a plain
 * release store to give it back.
 */
static __attribute__((noinline)) void hosted_lock_slow(atomic_ushort *owner, unsigned short ticket)
{
	unsigned spins = 0;

	while (atomic_load_explicit(owner, memory_order_acquire) != ticket) {
		if (++spins < HOSTED_SPINS_BEFORE_YIELD) {
			cpu_relax();
		} else {
			spins = 0;
			sched_yield();
		}
	}
}

static void hosted_lock(void *ctx, struct dmm_lock *l)
{
	unsigned short ticket = atomic_fetch_add_explicit(lock_next(l), 1, memory_order_relaxed);

	(void)ctx;
	if (__builtin_expect(atomic_load_explicit(lock_owner(l), memory_order_acquire) == ticket, 1))
		return;
	hosted_lock_slow(lock_owner(l), ticket);
}

static void hosted_unlock(void *ctx, struct dmm_lock *l)
{
	atomic_ushort *owner = lock_owner(l);

	(void)ctx;
	atomic_store_explicit(owner, (unsigned short)(atomic_load_explicit(owner, memory_order_relaxed) + 1u),
			      memory_order_release);
}

/* ------------------------------------------------------------------------ */
/* CPU ids                                                                   */

static atomic_uint hosted_next_slot;
static _Thread_local unsigned hosted_slot; /* 0 = unassigned, else slot + 1 */

static unsigned hosted_cpu_id(void *ctx)
{
	const struct dmm_hosted *h = ctx;
	unsigned s = hosted_slot;

	if (__builtin_expect(s == 0, 0)) {
		s = atomic_fetch_add_explicit(&hosted_next_slot, 1u, memory_order_relaxed) %
			    HOSTED_MAX_CPUS + 1u;
		hosted_slot = s;
	}
	return (s - 1u) % h->plat.nr_cpus;
}

/* ------------------------------------------------------------------------ */
/* CPU-local sections                                                        */

#ifndef MEMBARRIER_CMD_PRIVATE_EXPEDITED
#define MEMBARRIER_CMD_PRIVATE_EXPEDITED (1 << 3)
#define MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED (1 << 4)
#endif

static pthread_once_t hosted_mb_once = PTHREAD_ONCE_INIT;
static bool hosted_mb_ok; /* membarrier registered */

static void hosted_mb_init(void)
{
#ifdef SYS_membarrier
	hosted_mb_ok = syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
#endif
}

/* Every running thread of the process executes a full memory barrier. */
static void hosted_cpu_fence(void *ctx)
{
	(void)ctx;
#ifdef SYS_membarrier
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0)
		return;
#endif
	/* registered, then refused (a seccomp filter installed later?): the
	 * slot owners run without a fence of their own, so nothing can stand
	 * in for this one */
	fprintf(stderr, "dmamem hosted: membarrier failed after registration: %s\n", strerror(errno));
	abort();
}

static void hosted_cpu_yield(void *ctx)
{
	(void)ctx;
	sched_yield();
}

/* ------------------------------------------------------------------------ */
/* Deferred work                                                             */

static uint64_t hosted_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void hosted_enqueue_locked(struct dmm_hosted *h, struct hosted_work *w)
{
	w->next = NULL;
	if (h->q_tail)
		h->q_tail->next = w;
	else
		h->q_head = w;
	h->q_tail = w;
}

/* Move delayed work that is due to the queue: due by time, or queued
 * before a waiting flush began (work it queues again is not waited for, so
 * a timer that re-arms itself cannot keep a flush waiting). */
static void hosted_promote_locked(struct dmm_hosted *h)
{
	uint64_t now = h->q_delayed ? hosted_mono_ns() : 0;

	for (struct hosted_work **pp = &h->q_delayed; *pp;) {
		struct hosted_work *w = *pp;
		if (w->due_ns <= now || w->seq < h->q_flush_seq) {
			*pp = w->next;
			hosted_enqueue_locked(h, w);
		} else {
			pp = &w->next;
		}
	}
}

/* Delayed work older than @seq still waiting? */
static bool hosted_delayed_before(const struct dmm_hosted *h, uint64_t seq)
{
	for (const struct hosted_work *w = h->q_delayed; w; w = w->next)
		if (w->seq < seq)
			return true;
	return false;
}

static void *hosted_worker(void *arg)
{
	struct dmm_hosted *h = arg;

	pthread_mutex_lock(&h->q_lock);
	for (;;) {
		struct hosted_work *w;

		hosted_promote_locked(h);
		w = h->q_head;
		if (!w) {
			if (h->q_stop && !h->q_delayed)
				break;
			if (h->q_stop) {
				h->q_flush_seq = UINT64_MAX; /* stopping: run the delayed work now */
				continue;
			}
			pthread_cond_broadcast(&h->q_idle);
			if (h->q_delayed) {
				uint64_t due = h->q_delayed->due_ns;
				struct timespec ts = { (time_t)(due / 1000000000ull), (long)(due % 1000000000ull) };
				pthread_cond_timedwait(&h->q_wake, &h->q_lock, &ts);
			} else {
				pthread_cond_wait(&h->q_wake, &h->q_lock);
			}
			continue;
		}
		h->q_head = w->next;
		if (!h->q_head)
			h->q_tail = NULL;
		h->q_busy = true;
		pthread_mutex_unlock(&h->q_lock);

		w->fn(w->arg);
		free(w);
		atomic_fetch_add_explicit(&h->deferred_run, 1u, memory_order_relaxed);

		pthread_mutex_lock(&h->q_lock);
		h->q_busy = false;
	}
	pthread_cond_broadcast(&h->q_idle);
	pthread_mutex_unlock(&h->q_lock);
	return NULL;
}

/* Queue fn(arg): to run now (@delayed false), or once @delay_ns have passed. */
static int hosted_queue(struct dmm_hosted *h, void (*fn)(void *arg), void *arg, bool delayed, uint64_t delay_ns)
{
	struct hosted_work *w, **pp;

	if (!fn)
		return -DMM_EINVAL;
	w = malloc(sizeof(*w));
	if (!w)
		return -DMM_ENOMEM;
	w->fn = fn;
	w->arg = arg;
	w->due_ns = delayed ? hosted_mono_ns() + delay_ns : 0;
	pthread_mutex_lock(&h->q_lock);
	w->seq = h->q_seq++;
	if (delayed) {
		for (pp = &h->q_delayed; *pp && (*pp)->due_ns <= w->due_ns; pp = &(*pp)->next)
			;
		w->next = *pp;
		*pp = w;
	} else {
		hosted_enqueue_locked(h, w);
	}
	pthread_cond_signal(&h->q_wake);
	pthread_mutex_unlock(&h->q_lock);
	return 0;
}

static int hosted_defer_after(void *ctx, void (*fn)(void *arg), void *arg, uint64_t delay_ns)
{
	return hosted_queue(ctx, fn, arg, true, delay_ns);
}

static int hosted_defer(void *ctx, void (*fn)(void *arg), void *arg)
{
	return hosted_queue(ctx, fn, arg, false, 0);
}

/*
 * Wait until the queue is empty, the worker idle and every delayed function
 * queued before the call has run (it is run at once). Called from the worker
 * itself (a deferred function flushing) it cannot wait for its own caller,
 * so it returns at once.
 */
static void hosted_defer_flush(void *ctx)
{
	struct dmm_hosted *h = ctx;

	if (!h->worker_started || pthread_equal(pthread_self(), h->worker))
		return;
	uint64_t target;

	pthread_mutex_lock(&h->q_lock);
	target = h->q_seq;
	if (h->q_flush_seq < target)
		h->q_flush_seq = target;
	h->q_flushers++;
	pthread_cond_signal(&h->q_wake);
	while (h->q_head || h->q_busy || hosted_delayed_before(h, target))
		pthread_cond_wait(&h->q_idle, &h->q_lock);
	if (--h->q_flushers == 0 && h->q_flush_seq != UINT64_MAX)
		h->q_flush_seq = 0;
	pthread_mutex_unlock(&h->q_lock);
}

/* ------------------------------------------------------------------------ */
/* Time, logging, panic                                                      */

static uint64_t hosted_now_ns(void *ctx)
{
	struct timespec ts;

	(void)ctx;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static const char *const hosted_level_prefix[] = {
	[DMM_LOG_ERR] = "error: ",
	[DMM_LOG_WARN] = "warning: ",
	[DMM_LOG_INFO] = "",
	[DMM_LOG_DEBUG] = "debug: ",
};

static void hosted_log(void *ctx, int level, const char *fmt, va_list ap)
{
	const struct dmm_hosted *h = ctx;
	char line[HOSTED_LOG_LINE];
	const char *pfx;
	size_t n;
	int r;

	if (level > h->log_level || !fmt)
		return;
	pfx = level >= 0 && level <= DMM_LOG_DEBUG ? hosted_level_prefix[level] : "";
	r = snprintf(line, sizeof(line), "dmamem: %s", pfx);
	n = r > 0 ? (size_t)r : 0;
	if (n < sizeof(line)) {
		r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
		if (r > 0)
			n += (size_t)r;
	}
	if (n >= sizeof(line) - 1)
		n = sizeof(line) - 2;
	if (n == 0 || line[n - 1] != '\n')
		line[n++] = '\n';
	line[n] = '\0';
	/* One write per message, so concurrent messages do not interleave. */
	fputs(line, stderr);
}

static void hosted_panic(void *ctx, const char *msg)
{
	(void)ctx;
	fprintf(stderr, "dmamem: panic: %s\n", msg ? msg : "(no message)");
	fflush(stderr);
	abort();
}

/* ------------------------------------------------------------------------ */
/* Physical memory                                                           */

static void *hosted_phys_to_virt(void *ctx, dmm_phys_t pa)
{
	const struct dmm_hosted *h = ctx;

	for (unsigned i = 0; i < h->nr_ram; i++) {
		if (pa < h->rg[i].start)
			return NULL; /* sorted: in a hole below region i */
		if (pa < h->rg[i].end)
			return h->ram + (pa - h->span_start);
	}
	return NULL;
}

/* Physical address behind a vmap'ed pointer: 0 or -DMM_ERANGE. */
static int hosted_vmap_lookup(struct dmm_hosted *h, const unsigned char *p, dmm_phys_t *pa)
{
	int err = -DMM_ERANGE;

	pthread_mutex_lock(&h->vm_lock);
	for (const struct hosted_vmap *v = h->vmaps; v; v = v->next)
		if (p >= v->va && p < v->va + v->n * DMM_PAGE_SIZE) {
			size_t off = (size_t)(p - v->va);
			*pa = v->pa[off / DMM_PAGE_SIZE] + off % DMM_PAGE_SIZE;
			err = 0;
			break;
		}
	pthread_mutex_unlock(&h->vm_lock);
	return err;
}

/* The host is cache-coherent: @attr needs nothing (set_memattr only counts). */
static int hosted_vmap(void *ctx, const dmm_phys_t *pages, size_t n, enum dmm_memattr attr, void **va)
{
	struct dmm_hosted *h = ctx;
	struct hosted_vmap *v;
	unsigned char *base;

	(void)attr;
	if (!pages || !n || !va || n > SIZE_MAX / DMM_PAGE_SIZE / 2)
		return -DMM_EINVAL;
	for (size_t i = 0; i < n; i++)
		if ((pages[i] & (DMM_PAGE_SIZE - 1)) || !hosted_phys_to_virt(h, pages[i]))
			return -DMM_EINVAL;
	v = malloc(sizeof(*v) + n * sizeof(dmm_phys_t));
	if (!v)
		return -DMM_ENOMEM;
	base = mmap(NULL, n * DMM_PAGE_SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (base == MAP_FAILED) {
		free(v);
		return -DMM_ENOMEM;
	}
	/* each run of consecutive pages with one mapping of the file */
	for (size_t i = 0; i < n;) {
		size_t j = i + 1;
		while (j < n && pages[j] == pages[j - 1] + DMM_PAGE_SIZE)
			j++;
		if (mmap(base + i * DMM_PAGE_SIZE, (j - i) * DMM_PAGE_SIZE, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_FIXED, h->ram_fd, (off_t)(pages[i] - h->span_start)) == MAP_FAILED) {
			munmap(base, n * DMM_PAGE_SIZE);
			free(v);
			return -DMM_ENOMEM;
		}
		i = j;
	}
	v->va = base;
	v->n = n;
	memcpy(v->pa, pages, n * sizeof(dmm_phys_t));
	pthread_mutex_lock(&h->vm_lock);
	v->next = h->vmaps;
	h->vmaps = v;
	pthread_mutex_unlock(&h->vm_lock);
	*va = base;
	return 0;
}

static void hosted_vunmap(void *ctx, void *va, size_t n)
{
	struct dmm_hosted *h = ctx;
	struct hosted_vmap **pp, *v = NULL;

	pthread_mutex_lock(&h->vm_lock);
	for (pp = &h->vmaps; *pp; pp = &(*pp)->next)
		if ((*pp)->va == va && (*pp)->n == n) {
			v = *pp;
			*pp = v->next;
			break;
		}
	pthread_mutex_unlock(&h->vm_lock);
	if (!v)
		return;
	munmap(v->va, v->n * DMM_PAGE_SIZE);
	free(v);
}

static int hosted_virt_to_phys(void *ctx, const void *va, dmm_phys_t *pa)
{
	const struct dmm_hosted *h = ctx;
	const unsigned char *p = va;
	dmm_phys_t x;

	if (p < h->ram || p >= h->ram + h->ram_len)
		return h->vmaps ? hosted_vmap_lookup((struct dmm_hosted *)ctx, p, pa) : -DMM_ERANGE;
	x = h->span_start + (dmm_phys_t)(p - h->ram);
	if (!hosted_phys_to_virt(ctx, x))
		return -DMM_ERANGE;
	*pa = x;
	return 0;
}

static void hosted_cache_maint(void *ctx, enum dmm_cache_op op, dmm_phys_t pa, size_t len)
{
	struct dmm_hosted *h = ctx;

	(void)op;
	(void)pa;
	atomic_fetch_add_explicit(&h->cache_ops, 1u, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->cache_bytes, len, memory_order_relaxed);
}

static int hosted_set_memattr(void *ctx, dmm_phys_t pa, size_t len, enum dmm_memattr attr)
{
	struct dmm_hosted *h = ctx;

	(void)pa;
	if ((unsigned)attr > (unsigned)DMM_MEMATTR_UC)
		return -DMM_EINVAL;
	atomic_fetch_add_explicit(&h->memattr_calls, 1u, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->memattr_bytes, len, memory_order_relaxed);
	return 0;
}

/* Copy the machine's RAM regions into h->rg, sorted by base. */
static void hosted_sort_ram(struct dmm_hosted *h, const struct dmm_machine *m)
{
	h->nr_ram = m->nr_ram;
	for (unsigned i = 0; i < m->nr_ram; i++) {
		struct hosted_ram r = { m->ram[i].base, m->ram[i].base + m->ram[i].size };
		unsigned j = i;

		while (j > 0 && h->rg[j - 1].start > r.start) {
			h->rg[j] = h->rg[j - 1];
			j--;
		}
		h->rg[j] = r;
	}
}

/* ------------------------------------------------------------------------ */
/* Public interface                                                          */

/*
 * dmm_hosted_create() - build the hosted platform for machine @m.
 *
 * Maps the machine's RAM span (MAP_NORESERVE, nothing touched) and starts
 * the deferred-work worker. Threads are given per-CPU slots round-robin on
 * first use; @nr_cpus == 0 means the number of online host CPUs (capped at
 * 1024). Log messages with a level above @log_level are dropped (-1
 * silences everything).
 *
 * Fails with -DMM_EINVAL if @m or @out is NULL, @m does not validate, or
 * @nr_cpus > 1024; -DMM_ENOMEM if the span does not fit the host address
 * space, the mapping fails or memory for the handle is short; -DMM_EAGAIN
 * if the worker thread cannot be started. *@out is NULL on failure.
 * Context: process context.
 */
int dmm_hosted_create(const struct dmm_machine *m, unsigned nr_cpus, int log_level,
		      struct dmm_hosted **out)
{
	struct dmm_hosted *h;
	uint64_t span;
	void *ram;
	int err;

	if (out)
		*out = NULL;
	if (!m || !out || dmm_machine_validate(m) != 0 || nr_cpus > HOSTED_MAX_CPUS)
		return -DMM_EINVAL;
	if (nr_cpus == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		nr_cpus = n < 1 ? 1u : n > (long)HOSTED_MAX_CPUS ? HOSTED_MAX_CPUS : (unsigned)n;
	}

	h = calloc(1, sizeof(*h));
	if (!h)
		return -DMM_ENOMEM;
	hosted_sort_ram(h, m);
	h->span_start = h->rg[0].start & ~(DMM_PAGE_SIZE - 1);
	h->span_end = h->rg[0].end;
	for (unsigned i = 1; i < h->nr_ram; i++)
		if (h->rg[i].end > h->span_end)
			h->span_end = h->rg[i].end;
	h->span_end = (h->span_end + DMM_PAGE_SIZE - 1) & ~(DMM_PAGE_SIZE - 1);
	span = h->span_end - h->span_start;
	if (span == 0 || span > (uint64_t)SIZE_MAX) {
		free(h);
		return -DMM_ENOMEM;
	}
	h->ram_fd = memfd_create("dmamem-ram", MFD_CLOEXEC);
	if (h->ram_fd >= 0 && ftruncate(h->ram_fd, (off_t)span) != 0) {
		close(h->ram_fd);
		h->ram_fd = -1;
	}
	if (h->ram_fd >= 0)
		ram = mmap(NULL, (size_t)span, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, h->ram_fd, 0);
	else
		ram = mmap(NULL, (size_t)span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			   -1, 0);
	if (ram == MAP_FAILED) {
		if (h->ram_fd >= 0)
			close(h->ram_fd);
		free(h);
		return -DMM_ENOMEM;
	}
	pthread_once(&hosted_mb_once, hosted_mb_init);
	pthread_mutex_init(&h->vm_lock, NULL);
	h->ram = ram;
	h->ram_len = (size_t)span;
	h->log_level = log_level;

	atomic_init(&h->deferred_run, 0u);
	atomic_init(&h->cache_ops, 0u);
	atomic_init(&h->cache_bytes, 0u);
	atomic_init(&h->memattr_calls, 0u);
	atomic_init(&h->memattr_bytes, 0u);

	h->plat = (struct dmm_platform){
		.ctx = h,
		.lock_init = hosted_lock_init,
		.lock_destroy = hosted_lock_destroy,
		.lock = hosted_lock,
		.unlock = hosted_unlock,
		.defer = hosted_defer,
		.defer_after = hosted_defer_after,
		.defer_flush = hosted_defer_flush,
		.now_ns = hosted_now_ns,
		.log = hosted_log,
		.panic = hosted_panic,
		.phys_to_virt = hosted_phys_to_virt,
		.virt_to_phys = hosted_virt_to_phys,
		.cache_maint = hosted_cache_maint,
		.set_memattr = hosted_set_memattr,
		.cpu_id = hosted_cpu_id,
#ifdef DMM_HAVE_THREAD_POINTER
		.cpu_thread_slots = 1,
#endif
		.cpu_fence = hosted_mb_ok ? hosted_cpu_fence : NULL,
		.cpu_yield = hosted_cpu_yield,
		.linear_virt = ram,
		.linear_phys = h->span_start,
		.linear_size = (uint64_t)span,
		.vmap = h->ram_fd >= 0 ? hosted_vmap : NULL,
		.vunmap = h->ram_fd >= 0 ? hosted_vunmap : NULL,
		.nr_cpus = nr_cpus,
		.vector_copy = 1, /* user space: the OS saves vector registers */
	};

	if (pthread_mutex_init(&h->q_lock, NULL) != 0) {
		err = -DMM_ENOMEM;
		goto out_unmap;
	}
	pthread_condattr_t ca;
	if (pthread_condattr_init(&ca) != 0 || pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
	    pthread_cond_init(&h->q_wake, &ca) != 0) {
		err = -DMM_ENOMEM;
		goto out_mutex;
	}
	pthread_condattr_destroy(&ca);
	if (pthread_cond_init(&h->q_idle, NULL) != 0) {
		err = -DMM_ENOMEM;
		goto out_wake;
	}
	if (pthread_create(&h->worker, NULL, hosted_worker, h) != 0) {
		err = -DMM_EAGAIN;
		goto out_idle;
	}
	h->worker_started = true;
	*out = h;
	return 0;

out_idle:
	pthread_cond_destroy(&h->q_idle);
out_wake:
	pthread_cond_destroy(&h->q_wake);
out_mutex:
	pthread_mutex_destroy(&h->q_lock);
out_unmap:
	munmap(h->ram, h->ram_len);
	if (h->ram_fd >= 0)
		close(h->ram_fd);
	pthread_mutex_destroy(&h->vm_lock);
	free(h);
	return err;
}

/*
 * dmm_hosted_destroy() - run the deferred work still queued, stop the
 * worker, unmap the RAM and free the handle. Anything built on the
 * platform (a struct dmm_mem) must be destroyed first. NULL is ignored.
 */
void dmm_hosted_destroy(struct dmm_hosted *h)
{
	if (!h)
		return;
	if (h->worker_started) {
		pthread_mutex_lock(&h->q_lock);
		h->q_stop = true;
		pthread_cond_signal(&h->q_wake);
		pthread_mutex_unlock(&h->q_lock);
		pthread_join(h->worker, NULL);
	}
	pthread_cond_destroy(&h->q_idle);
	pthread_cond_destroy(&h->q_wake);
	pthread_mutex_destroy(&h->q_lock);
	while (h->vmaps) {
		struct hosted_vmap *v = h->vmaps;
		h->vmaps = v->next;
		munmap(v->va, v->n * DMM_PAGE_SIZE);
		free(v);
	}
	pthread_mutex_destroy(&h->vm_lock);
	munmap(h->ram, h->ram_len);
	if (h->ram_fd >= 0)
		close(h->ram_fd);
	free(h);
}

/* The hook table (valid until dmm_hosted_destroy()), or NULL if @h is NULL. */
const struct dmm_platform *dmm_hosted_platform(struct dmm_hosted *h)
{
	return h ? &h->plat : NULL;
}

/* Snapshot the counters. Either argument NULL: nothing happens. */
void dmm_hosted_get_stats(struct dmm_hosted *h, struct dmm_hosted_stats *st)
{
	if (!h || !st)
		return;
	st->deferred_run = atomic_load_explicit(&h->deferred_run, memory_order_relaxed);
	st->cache_ops = atomic_load_explicit(&h->cache_ops, memory_order_relaxed);
	st->cache_bytes = atomic_load_explicit(&h->cache_bytes, memory_order_relaxed);
	st->memattr_calls = atomic_load_explicit(&h->memattr_calls, memory_order_relaxed);
	st->memattr_bytes = atomic_load_explicit(&h->memattr_bytes, memory_order_relaxed);
	st->membarrier = hosted_mb_ok;
}

/*
 * dmm_hosted_mem_create() - hosted platform plus memory map in one call.
 *
 * Messages at warning level and above are printed. On success *@hosted and
 * *@mem are set; release both with dmm_hosted_mem_destroy().
 * Fails with -DMM_EINVAL (a NULL argument or an invalid machine) or any
 * error of dmm_hosted_create() and dmm_mem_create(); nothing is left
 * allocated and both outputs are NULL on failure.
 */
int dmm_hosted_mem_create(const struct dmm_machine *m, unsigned nr_cpus,
			  struct dmm_hosted **hosted, struct dmm_mem **mem)
{
	struct dmm_hosted *h;
	int err;

	if (hosted)
		*hosted = NULL;
	if (mem)
		*mem = NULL;
	if (!m || !hosted || !mem)
		return -DMM_EINVAL;
	err = dmm_hosted_create(m, nr_cpus, DMM_LOG_WARN, &h);
	if (err)
		return err;
	err = dmm_mem_create(m, &h->plat, mem);
	if (err) {
		*mem = NULL;
		dmm_hosted_destroy(h);
		return err;
	}
	*hosted = h;
	return 0;
}

/*
 * dmm_hosted_mem_destroy() - undo dmm_hosted_mem_create(): wait for the
 * deferred work, destroy the memory map, then the platform (which unmaps
 * the RAM). Either argument may be NULL.
 */
void dmm_hosted_mem_destroy(struct dmm_hosted *hosted, struct dmm_mem *mem)
{
	if (hosted)
		hosted_defer_flush(hosted);
	if (mem)
		dmm_mem_destroy(mem);
	dmm_hosted_destroy(hosted);
}

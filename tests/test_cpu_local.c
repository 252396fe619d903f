/* SPDX-License-Identifier: MIT */
/*
 * CPU-local sections (src/mm/cpu.c, mm_internal.h), white-box: every way
 * the core runs them (thread slots inline, platform hooks, per-slot locks)
 * must give a caller its CPU's data to itself until it leaves, keep
 * cpu_sync / hold-all / grace periods out of running sections, and survive
 * more threads than slots and threads that come and go.
 *
 * The check: each slot has a plain counter and an "inside" flag, updated
 * with plain loads and stores inside sections. Two sections on one slot at
 * once show up as a flag found set on entry or as lost counter increments.
 */
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tu.h"

#include "mm/mm_internal.h"

#define NSLOTS 2
#define MAXT 8

struct shared {
	struct dmm_mem *mem;
	long iters;
	/* one cache line per slot; plain (non-atomic) on purpose */
	struct {
		_Alignas(64) volatile unsigned inside;
		volatile uint64_t count;
	} slot[NSLOTS];
	uint64_t clashes;   /* atomic: a section found its slot occupied */
	uint64_t done;      /* atomic: sections completed */
	int stop;           /* atomic */
};

static void section_body(struct shared *s, unsigned cpu)
{
	uint64_t v;

	if (s->slot[cpu].inside)
		__atomic_fetch_add(&s->clashes, 1, __ATOMIC_RELAXED);
	s->slot[cpu].inside = 1;
	v = s->slot[cpu].count;
	for (volatile int k = 0; k < 20; k++)
		;
	s->slot[cpu].count = v + 1;
	s->slot[cpu].inside = 0;
}

static void *worker(void *arg)
{
	struct shared *s = arg;

	for (long i = 0; i < s->iters; i++) {
		unsigned cpu = dmm__cpu_enter(s->mem);
		assert_true(cpu < NSLOTS);
		section_body(s, cpu);
		dmm__cpu_exit(s->mem, cpu);
		__atomic_fetch_add(&s->done, 1, __ATOMIC_RELAXED);
		if ((i & 1023) == 0)
			sched_yield(); /* let the OS move threads around */
	}
	return NULL;
}

struct sync_arg {
	struct shared *s;
	unsigned cpu;
};

/* Inside a cpu_sync of one slot: no section of it runs, and none starts. */
static void sync_fn(void *arg)
{
	struct sync_arg *a = arg;
	section_body(a->s, a->cpu);
}

/* Inside a hold of every slot: all flags clear. */
static void hold_fn(void *arg)
{
	struct shared *s = arg;
	for (unsigned c = 0; c < NSLOTS; c++) {
		if (s->slot[c].inside)
			__atomic_fetch_add(&s->clashes, 1, __ATOMIC_RELAXED);
		s->slot[c].inside = 1;
	}
	for (volatile int k = 0; k < 200; k++)
		;
	for (unsigned c = 0; c < NSLOTS; c++)
		s->slot[c].inside = 0;
}

static void *syncer(void *arg)
{
	struct shared *s = arg;
	unsigned n = 0;

	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		struct sync_arg a = { s, n % NSLOTS };
		if (n % 3 == 2)
			dmm__cpu_hold_all(s->mem, hold_fn, s);
		else
			dmm__cpu_sync(s->mem, a.cpu, sync_fn, &a);
		if (n % 7 == 0)
			dmm__cpu_sync_all(s->mem);
		n++;
	}
	return NULL;
}

/* @nthreads workers and one syncer on @mem: no clash, no lost update. */
static void hammer(struct dmm_mem *mem, unsigned nthreads, long iters)
{
	struct shared *s = calloc(1, sizeof(*s));
	pthread_t t[MAXT], sy;
	uint64_t total = 0;
	unsigned syncs_done;

	assert_non_null(s);
	s->mem = mem;
	s->iters = iters;
	assert_int_equal(pthread_create(&sy, NULL, syncer, s), 0);
	for (unsigned i = 0; i < nthreads; i++)
		assert_int_equal(pthread_create(&t[i], NULL, worker, s), 0);
	for (unsigned i = 0; i < nthreads; i++)
		pthread_join(t[i], NULL);
	__atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
	pthread_join(sy, NULL);
	for (unsigned c = 0; c < NSLOTS; c++)
		total += s->slot[c].count;
	syncs_done = 0;
	(void)syncs_done;
	assert_int_equal(s->clashes, 0);
	assert_int_equal(s->done, (uint64_t)nthreads * (uint64_t)iters);
	/* the syncer's sync_fn also counts: at least every worker section */
	assert_true(total >= s->done);
	free(s);
}

static struct dmm_mem *make_mem(struct dmm_hosted **h, struct dmm_platform *p, int mode)
{
	struct dmm_machine m;
	struct dmm_mem *mem = NULL;

	tu_hosted_platform(&m, "cpu-local", NSLOTS, h, p);
	if (mode == DMM_CPU_LOCKS) {
		p->cpu_thread_slots = 0;
		p->cpu_fence = NULL;
	}
	assert_ok(dmm_mem_create(&m, p, &mem));
	return mem;
}

static void destroy(struct dmm_hosted *h, struct dmm_mem *mem)
{
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(h);
}

static void test_threads_more_than_slots(void **state)
{
	struct dmm_hosted *h;
	struct dmm_platform p;
	struct dmm_mem *mem = make_mem(&h, &p, DMM_CPU_THREADS);
	struct dmm_mem_info info;

	(void)state;
	dmm_mem_get_info(mem, &info);
#ifdef DMM_HAVE_THREAD_POINTER
	assert_string_equal(info.cpu_sections, "threads");
#endif
	hammer(mem, 1, 200000);
	hammer(mem, 2, 100000);
	hammer(mem, 6, 20000); /* three threads per slot: ownership moves */
	dmm_mem_get_info(mem, &info);
	assert_true(info.cpu_syncs > 0);
	destroy(h, mem);
}

static void test_locks_mode(void **state)
{
	struct dmm_hosted *h;
	struct dmm_platform p;
	struct dmm_mem *mem = make_mem(&h, &p, DMM_CPU_LOCKS);
	struct dmm_mem_info info;

	(void)state;
	dmm_mem_get_info(mem, &info);
	assert_string_equal(info.cpu_sections, "locks");
	hammer(mem, 4, 30000);
	destroy(h, mem);
}

/* ---- platform hooks: a mutex per slot, the slot named by cpu_id ---------- */

static pthread_mutex_t hook_mu[NSLOTS] = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER };
static unsigned (*hook_cpu_id)(void *ctx);
static uint64_t hook_enters; /* atomic */

static unsigned hook_enter(void *ctx)
{
	unsigned cpu = hook_cpu_id(ctx) % NSLOTS;
	pthread_mutex_lock(&hook_mu[cpu]);
	__atomic_fetch_add(&hook_enters, 1, __ATOMIC_RELAXED);
	return cpu;
}

static void hook_exit(void *ctx, unsigned cpu)
{
	(void)ctx;
	pthread_mutex_unlock(&hook_mu[cpu]);
}

static void hook_sync(void *ctx, unsigned cpu, void (*fn)(void *arg), void *arg)
{
	(void)ctx;
	pthread_mutex_lock(&hook_mu[cpu]);
	fn(arg);
	pthread_mutex_unlock(&hook_mu[cpu]);
}

static void test_hooks_mode(void **state)
{
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_platform p;
	struct dmm_mem *mem = NULL;
	struct dmm_mem_info info;

	(void)state;
	tu_hosted_platform(&m, "cpu-hooks", NSLOTS, &h, &p);
	hook_cpu_id = p.cpu_id;
	p.cpu_thread_slots = 0;
	p.cpu_enter = hook_enter;
	p.cpu_exit = hook_exit;
	p.cpu_sync = hook_sync;
	assert_ok(dmm_mem_create(&m, &p, &mem));
	dmm_mem_get_info(mem, &info);
	assert_string_equal(info.cpu_sections, "hooks");
	hammer(mem, 3, 20000);
	assert_true(__atomic_load_n(&hook_enters, __ATOMIC_RELAXED) >= 60000);
	/* the allocators above sections work through the hooks too */
	{
		void *a;
		assert_ok(dmm_kmalloc(mem, 100, 0, &a));
		assert_ok(dmm_kfree(mem, a));
		assert_ok(dmm_slab_check(mem));
	}
	destroy(h, mem);
}

/* A section without its exit or its sync, or two kinds at once: refused. */
static void test_platform_validation(void **state)
{
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_platform p;
	struct dmm_mem *mem = NULL;

	(void)state;
	tu_hosted_platform(&m, "cpu-bad", NSLOTS, &h, &p);
	p.cpu_thread_slots = 0;
	p.cpu_enter = hook_enter;
	assert_rc(dmm_platform_validate(&p), -DMM_EINVAL); /* no exit, no sync */
	p.cpu_exit = hook_exit;
	assert_rc(dmm_platform_validate(&p), -DMM_EINVAL); /* no sync */
	p.cpu_sync = hook_sync;
	assert_ok(dmm_platform_validate(&p));
	p.cpu_thread_slots = 1;
	assert_rc(dmm_platform_validate(&p), -DMM_EINVAL); /* both kinds */
	p.cpu_enter = NULL;
	p.cpu_exit = NULL;
	p.cpu_sync = NULL;
	p.cpu_thread_slots = 2;
	assert_rc(dmm_platform_validate(&p), -DMM_EINVAL);
	p.cpu_thread_slots = 1;
#ifdef DMM_HAVE_THREAD_POINTER
	assert_ok(dmm_platform_validate(&p));
#else
	assert_rc(dmm_platform_validate(&p), -DMM_ENOTSUP);
#endif
	p.linear_size = 4096;
	p.linear_virt = NULL;
	assert_rc(dmm_platform_validate(&p), -DMM_EINVAL); /* a linear map nowhere */
	/* a linear map of part pages */
	p = *dmm_hosted_platform(h);
	assert_ok(dmm_platform_validate(&p));
	p.linear_size -= 8;
	assert_rc(dmm_platform_validate(&p), -DMM_EINVAL);
	p = *dmm_hosted_platform(h);
	p.linear_phys += 8;
	p.linear_virt += 8;
	p.linear_size -= 8;
	assert_rc(dmm_platform_validate(&p), -DMM_EINVAL);
	p = *dmm_hosted_platform(h);
	p.linear_virt += 8;
	assert_rc(dmm_platform_validate(&p), -DMM_EINVAL);
	p = *dmm_hosted_platform(h);
	p.cpu_enter = hook_enter;
	assert_rc(dmm_mem_create(&m, &p, &mem), -DMM_EINVAL);
	assert_null(mem);
	dmm_hosted_destroy(h);
}

/* Threads that come and go: each new thread gets a record (or reuses the
 * one its thread pointer had); sections stay exclusive throughout. */
static void *short_worker(void *arg)
{
	struct shared *s = arg;
	for (int i = 0; i < 500; i++) {
		unsigned cpu = dmm__cpu_enter(s->mem);
		section_body(s, cpu);
		dmm__cpu_exit(s->mem, cpu);
		__atomic_fetch_add(&s->done, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void test_thread_churn(void **state)
{
	struct dmm_hosted *h;
	struct dmm_platform p;
	struct dmm_mem *mem = make_mem(&h, &p, DMM_CPU_THREADS);
	struct shared *s = calloc(1, sizeof(*s));
	uint64_t total = 0;

	(void)state;
	assert_non_null(s);
	s->mem = mem;
	for (int round = 0; round < 100; round++) {
		pthread_t t[3];
		for (int i = 0; i < 3; i++)
			assert_int_equal(pthread_create(&t[i], NULL, short_worker, s), 0);
		for (int i = 0; i < 3; i++)
			pthread_join(t[i], NULL);
	}
	for (unsigned c = 0; c < NSLOTS; c++)
		total += s->slot[c].count;
	assert_int_equal(s->clashes, 0);
	assert_int_equal(total, s->done);
	assert_int_equal(s->done, 100u * 3u * 500u);
	free(s);
	destroy(h, mem);
}

/* Two threads taking turns on one slot: the slot stops having an owner
 * (lock only) instead of paying the process-wide barrier at every turn. */
static void (*real_fence)(void *ctx);
static uint64_t fences; /* atomic */

static void counting_fence(void *ctx)
{
	__atomic_fetch_add(&fences, 1, __ATOMIC_RELAXED);
	real_fence(ctx);
}

static void test_contended_slot_unbiased(void **state)
{
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_platform p;
	struct dmm_mem *mem = NULL;
	struct dmm_mem_info info;

	(void)state;
	tu_hosted_platform(&m, "cpu-contended", 1, &h, &p);
	if (!p.cpu_thread_slots || !p.cpu_fence) {
		dmm_hosted_destroy(h);
		skip();
	}
	real_fence = p.cpu_fence;
	p.cpu_fence = counting_fence;
	assert_ok(dmm_mem_create(&m, &p, &mem));
	{
		/* the hammer's slots are NSLOTS wide; this memory map has one */
		struct shared *s = calloc(1, sizeof(*s));
		pthread_t t[2];
		assert_non_null(s);
		s->mem = mem;
		s->iters = 100000;
		for (int i = 0; i < 2; i++)
			assert_int_equal(pthread_create(&t[i], NULL, worker, s), 0);
		for (int i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
		assert_int_equal(s->clashes, 0);
		assert_int_equal(s->slot[0].count, 200000u);
		free(s);
	}
	dmm_mem_get_info(mem, &info);
	assert_string_equal(info.cpu_sections, "threads");
	assert_true(info.cpu_slow_enters > 0); /* the slot ran on its lock */
	/* far fewer barriers than turns (2 x 100000 sections) */
	assert_true(__atomic_load_n(&fences, __ATOMIC_RELAXED) < 2000);
	dmm_mem_destroy(mem);
	dmm_hosted_destroy(h);
}

/* ---- hooks and locks: the thread pointer is none of the core's business --
 *
 * Outside threads mode (a kernel's hooks, per-slot locks) the caller's
 * thread pointer need not name anything readable: on x86-64 reading it
 * loads from %fs:0, and a kernel, or a thread of a runtime without TLS, has
 * no such block there. The allocators' short ways in must not look at it.
 * A child process points its %fs at an inaccessible page and frees and
 * allocates small objects through hooks (spinlocks: no C library call) and
 * through the core's locks; it restores %fs before it exits. */
#if defined(__x86_64__) && defined(__linux__) && defined(DMM_HAVE_THREAD_POINTER)
static long raw_arch_prctl(long code, unsigned long addr)
{
	long ret;
	__asm__ __volatile__("syscall" : "=a"(ret) : "a"(158L), "D"(code), "S"(addr) : "rcx", "r11", "memory");
	return ret;
}

static __attribute__((noreturn)) void raw_exit(long status)
{
	__asm__ __volatile__("syscall" : : "a"(231L), "D"(status) : "rcx", "r11", "memory");
	__builtin_unreachable();
}

static unsigned spin_mu[NSLOTS]; /* atomic */

static unsigned spin_enter(void *ctx)
{
	(void)ctx;
	while (__atomic_exchange_n(&spin_mu[0], 1u, __ATOMIC_ACQUIRE))
		;
	return 0;
}

static void spin_exit(void *ctx, unsigned cpu)
{
	(void)ctx;
	__atomic_store_n(&spin_mu[cpu], 0u, __ATOMIC_RELEASE);
}

static void spin_sync(void *ctx, unsigned cpu, void (*fn)(void *arg), void *arg)
{
	while (__atomic_exchange_n(&spin_mu[cpu], 1u, __ATOMIC_ACQUIRE))
		;
	fn(arg);
	spin_exit(ctx, cpu);
}

static unsigned cpu_zero(void *ctx)
{
	(void)ctx;
	return 0;
}

/* In the child, %fs unreadable: free @a and allocate it back (the hosted
 * RAM, metadata included, may be shared with the parent: the child leaves
 * it as it found it). */
static __attribute__((noinline)) long without_thread_pointer(struct dmm_mem *mem, void *a, unsigned long bad_fs)
{
	unsigned long fs = 0;
	void *b = NULL;
	long rc = 0;

	if (raw_arch_prctl(0x1003 /* ARCH_GET_FS */, (unsigned long)&fs) || raw_arch_prctl(0x1002, bad_fs))
		return 10;
	if (dmm_kfree(mem, a))
		rc = 11;
	else if (dmm_kmalloc(mem, 64, 0, &b) || b != a)
		rc = 12;
	raw_arch_prctl(0x1002 /* ARCH_SET_FS */, fs);
	return rc;
}

static void run_without_thread_pointer(struct dmm_mem *mem)
{
	void *bad = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	void *a = NULL;
	int status = 0;
	pid_t pid;

	assert_true(bad != MAP_FAILED);
	/* a magazine with objects and room, filled the ordinary way */
	assert_ok(dmm_kmalloc(mem, 64, 0, &a));
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		raw_exit(without_thread_pointer(mem, a, (unsigned long)bad));
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFSIGNALED(status))
		print_error("child killed by signal %d\n", WTERMSIG(status));
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_ok(dmm_kfree(mem, a));
	assert_ok(dmm_slab_check(mem));
	munmap(bad, 4096);
}

static void test_no_thread_pointer_outside_threads_mode(void **state)
{
	struct dmm_machine m;
	struct dmm_hosted *h;
	struct dmm_platform p;
	struct dmm_mem *mem = NULL;
	struct dmm_mem_info info;

	(void)state;
	tu_hosted_platform(&m, "cpu-no-tp-hooks", NSLOTS, &h, &p);
	p.cpu_thread_slots = 0;
	p.cpu_fence = NULL;
	p.cpu_id = cpu_zero;
	p.cpu_enter = spin_enter;
	p.cpu_exit = spin_exit;
	p.cpu_sync = spin_sync;
	assert_ok(dmm_mem_create(&m, &p, &mem));
	dmm_mem_get_info(mem, &info);
	assert_string_equal(info.cpu_sections, "hooks");
	run_without_thread_pointer(mem);
	destroy(h, mem);

	tu_hosted_platform(&m, "cpu-no-tp-locks", NSLOTS, &h, &p);
	p.cpu_thread_slots = 0;
	p.cpu_fence = NULL;
	p.cpu_id = cpu_zero;
	assert_ok(dmm_mem_create(&m, &p, &mem));
	dmm_mem_get_info(mem, &info);
	assert_string_equal(info.cpu_sections, "locks");
	run_without_thread_pointer(mem);
	destroy(h, mem);
}
#else
static void test_no_thread_pointer_outside_threads_mode(void **state)
{
	(void)state;
	skip();
}
#endif

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_threads_more_than_slots),
		cmocka_unit_test(test_locks_mode),
		cmocka_unit_test(test_hooks_mode),
		cmocka_unit_test(test_platform_validation),
		cmocka_unit_test(test_thread_churn),
		cmocka_unit_test(test_contended_slot_unbiased),
		cmocka_unit_test(test_no_thread_pointer_outside_threads_mode),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: MIT */
/*
 * CPU-local sections: the slow paths and the cross-CPU operations. The
 * design and the three implementations are described in mm_internal.h,
 * next to the inline fast paths (dmm__cpu_enter, dmm__cpu_exit).
 */
#include "mm/mm_internal.h"

void dmm__cpu_init(struct dmm_mem *mem)
{
	mem->cpu_mode = mem->plat.cpu_enter ? DMM_CPU_HOOKS : DMM_CPU_LOCKS;
	mem->cpu_thread_fence = 0;
#ifdef DMM_HAVE_THREAD_POINTER
	if (mem->plat.cpu_thread_slots) {
		mem->cpu_mode = DMM_CPU_THREADS;
		mem->cpu_thread_fence = mem->plat.cpu_fence ? 1 : 2;
		mem->plat.lock_init(mem->plat.ctx, &mem->cpu_threads_lock);
	}
#endif
	for (unsigned i = 0; i < mem->plat.nr_cpus; i++)
		mem->plat.lock_init(mem->plat.ctx, &mem->cpu_slots[i].lock);
}

void dmm__cpu_fini(struct dmm_mem *mem)
{
	for (unsigned i = 0; i < mem->plat.nr_cpus; i++)
		mem->plat.lock_destroy(mem->plat.ctx, &mem->cpu_slots[i].lock);
	if (mem->cpu_mode == DMM_CPU_THREADS)
		mem->plat.lock_destroy(mem->plat.ctx, &mem->cpu_threads_lock);
}

static unsigned cpu_of_caller(const struct dmm_mem *mem)
{
	return mem->plat.cpu_id ? mem->plat.cpu_id(mem->plat.ctx) % mem->plat.nr_cpus : 0;
}

#ifdef DMM_HAVE_THREAD_POINTER
/* The record of thread pointer @tp: found, or made in a free place among
 * the DMM_CPU_PROBE after its hash; NULL if they are all taken by others
 * (that thread then always takes the slow path). A record stays with its
 * thread pointer: a thread that ends leaves it to the next thread the C
 * library gives the same pointer (it reuses thread control blocks). */
static struct dmm_cpu_thread *thread_record(const struct dmm_mem *mem, uintptr_t tp)
{
	struct dmm_mem *m = (struct dmm_mem *)mem;
	struct dmm_cpu_thread *r = (struct dmm_cpu_thread *)0;
	unsigned h = dmm__cpu_hash(tp);

	for (unsigned i = 0; i < DMM_CPU_PROBE; i++) {
		struct dmm_cpu_thread *q = &mem->cpu_threads[(h + i) & (DMM_CPU_NR_THREADS - 1)];
		if (__atomic_load_n(&q->tp, __ATOMIC_ACQUIRE) == tp)
			return q;
	}
	m->plat.lock(m->plat.ctx, &m->cpu_threads_lock);
	for (unsigned i = 0; i < DMM_CPU_PROBE && !r; i++) {
		struct dmm_cpu_thread *q = &mem->cpu_threads[(h + i) & (DMM_CPU_NR_THREADS - 1)];
		uintptr_t t = __atomic_load_n(&q->tp, __ATOMIC_RELAXED);
		if (t == tp)
			r = q;
		else if (!t) {
			q->cpu = cpu_of_caller(mem);
			__atomic_store_n(&q->busy, 0, __ATOMIC_RELAXED);
			__atomic_store_n(&q->tp, tp, __ATOMIC_RELEASE);
			r = q;
		}
	}
	m->plat.unlock(m->plat.ctx, &m->cpu_threads_lock);
	return r;
}
#endif

/* Hold slot @c against its owner and everyone else: its lock, and (threads)
 * the owner's fast flag cleared and no owner section left running. */
static void slot_hold(const struct dmm_mem *mem, struct dmm_cpu_slot *c, const struct dmm_cpu_thread *self)
{
	struct dmm_cpu_thread *o;
	unsigned spins = 0;

	mem->plat.lock(mem->plat.ctx, &c->lock);
	if (mem->cpu_mode != DMM_CPU_THREADS || !(o = c->owner))
		return;
	if (o == self) {
		/* the owner itself, back through the lock (someone held the
		 * slot meanwhile): not inside a section, nothing to wait for */
		__atomic_store_n(&o->fast, 0, __ATOMIC_RELAXED);
		return;
	}
	__atomic_store_n(&o->fast, 0, __ATOMIC_RELAXED);
	if (mem->plat.cpu_fence)
		mem->plat.cpu_fence(mem->plat.ctx);
	else
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
	while (__atomic_load_n(&o->busy, __ATOMIC_ACQUIRE)) {
		/* the owner is inside a short section (or preempted there) */
		if (++spins >= 128 && mem->plat.cpu_yield) {
			spins = 0;
			mem->plat.cpu_yield(mem->plat.ctx);
		}
	}
}

/* Give the slot back: its owner (maybe a new one) enters fast again. */
static void slot_release(const struct dmm_mem *mem, struct dmm_cpu_slot *c)
{
	if (mem->cpu_mode == DMM_CPU_THREADS && c->owner)
		__atomic_store_n(&c->owner->fast, 1, __ATOMIC_RELEASE);
	mem->plat.unlock(mem->plat.ctx, &c->lock);
}

#ifdef DMM_HAVE_THREAD_POINTER
/* Who owns slot @c (held) after record @r entered it through the lock. */
static void bias(const struct dmm_mem *mem, struct dmm_cpu_slot *c, struct dmm_cpu_thread *r)
{
	uint64_t now;

	if (c->owner == r)
		return;
	if (!c->owner && c->biased_ns) {
		/* contended: everyone takes the lock for a while */
		if (++c->locked_enters < DMM_CPU_REBIAS_ENTERS)
			return;
	} else if (c->owner && mem->plat.now_ns &&
		   (now = dmm__now(mem)) - c->biased_ns < DMM_CPU_REBIAS_NS) {
		/* the owner lost it soon after getting it: two threads on one
		 * slot. The newcomer tries the other slots in turn (its record
		 * is its own: it changes it outside its sections only); once it
		 * has been round them all, the slot goes without an owner */
		if (r->moves + 1 < mem->plat.nr_cpus) {
			r->moves++;
			r->cpu = r->cpu + 1 < mem->plat.nr_cpus ? r->cpu + 1 : 0;
			return; /* this section still runs on @c, held */
		}
		r->moves = 0;
		c->owner = (struct dmm_cpu_thread *)0;
		c->locked_enters = 0;
		c->biased_ns = now;
		return;
	}
	c->owner = r;
	c->locked_enters = 0;
	c->biased_ns = dmm__now(mem) | 1; /* nonzero: biased once */
	r->moves = 0;
}
#endif

unsigned dmm__cpu_enter_slow(const struct dmm_mem *mem)
{
	struct dmm_mem *m = (struct dmm_mem *)mem;
	unsigned cpu = cpu_of_caller(mem);
	struct dmm_cpu_slot *c;

#ifdef DMM_HAVE_THREAD_POINTER
	if (mem->cpu_mode == DMM_CPU_THREADS) {
		uintptr_t tp = (uintptr_t)__builtin_thread_pointer();
		struct dmm_cpu_thread *r = thread_record(mem, tp);
		if (r)
			cpu = r->cpu;
		c = &m->cpu_slots[cpu];
		/* not the owner, or someone holds the slot: take it through the
		 * lock and become its owner, so the next section is fast */
		slot_hold(mem, c, r);
		if (r && r == &m->cpu_threads[dmm__cpu_hash(tp)]) {
			bias(mem, c, r);
		} else if (c->owner) {
			/* a thread the fast path cannot find (no record, or one
			 * away from its hash position) would pay the barrier at
			 * every entry: the slot goes without an owner instead */
			c->owner = (struct dmm_cpu_thread *)0;
			c->locked_enters = 0;
			c->biased_ns = dmm__now(mem) | 1;
		}
		c->held = 1;
		__atomic_fetch_add(&m->cpu_slow_enters, 1, __ATOMIC_RELAXED);
		return cpu;
	}
#endif
	c = &m->cpu_slots[cpu];
	slot_hold(mem, c, (const struct dmm_cpu_thread *)0);
	return cpu;
}

void dmm__cpu_exit_slow(const struct dmm_mem *mem, unsigned cpu)
{
	struct dmm_cpu_slot *c = &((struct dmm_mem *)mem)->cpu_slots[cpu];

	c->held = 0;
	slot_release(mem, c);
}

void dmm__cpu_sync(const struct dmm_mem *mem, unsigned cpu, void (*fn)(void *arg), void *arg)
{
	struct dmm_cpu_slot *c = &((struct dmm_mem *)mem)->cpu_slots[cpu];

	__atomic_fetch_add(&((struct dmm_mem *)mem)->cpu_syncs, 1, __ATOMIC_RELAXED);
	if (mem->cpu_mode == DMM_CPU_HOOKS) {
		mem->plat.cpu_sync(mem->plat.ctx, cpu, fn, arg);
		return;
	}
	slot_hold(mem, c, (const struct dmm_cpu_thread *)0);
	fn(arg);
	slot_release(mem, c);
}

struct hold_all {
	const struct dmm_mem *mem;
	unsigned next;
	void (*fn)(void *arg);
	void *arg;
};

static void hold_next(void *arg)
{
	struct hold_all *h = arg;
	unsigned cpu = h->next++;

	if (cpu == h->mem->plat.nr_cpus)
		h->fn(h->arg);
	else
		dmm__cpu_sync(h->mem, cpu, hold_next, h);
}

void dmm__cpu_hold_all(const struct dmm_mem *mem, void (*fn)(void *arg), void *arg)
{
	struct hold_all h = { mem, 0, fn, arg };

	hold_next(&h);
}

static void sync_nothing(void *arg)
{
	(void)arg;
}

void dmm__cpu_sync_all(const struct dmm_mem *mem)
{
	for (unsigned cpu = 0; cpu < mem->plat.nr_cpus; cpu++)
		dmm__cpu_sync(mem, cpu, sync_nothing, (void *)0);
}

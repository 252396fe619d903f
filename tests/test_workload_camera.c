/* SPDX-License-Identifier: MIT */
/*
 * The camera workload (sim/workload.c) on the rpi4 profile, kept small (a
 * 32 MiB page cache, little churn): it makes exactly the frame allocations
 * asked for, whether or not they fill whole sessions, and check_every runs
 * the allocator checks during the streaming, not only around it.
 */
#include "tu_dma.h"

#include "workload.h"

static void small_opts(struct dmm_workload_opts *o)
{
	dmm_workload_opts_init(o);
	o->cache_bytes = 32 * MiB;
	o->churn = 16;
}

/* --frames that is not a multiple of --queue: the last session is short. */
static void test_frames_not_multiple_of_queue(void **state)
{
	static const struct { uint64_t frames; unsigned queue; uint64_t sessions; } cases[] = {
		{ 5, 4, 2 }, { 3, 4, 1 }, { 8, 4, 2 }, { 7, 3, 3 },
	};
	struct dmm_workload_result *r = malloc(sizeof(*r));
	struct tu_env *e = tu_env_profile("rpi4");
	(void)state;

	assert_non_null(r);
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct dmm_workload_opts o;

		small_opts(&o);
		o.frames = cases[i].frames;
		o.queue = cases[i].queue;
		assert_ok(dmm_workload_run(e->mem, "camera", &o, r));
		assert_true(dmm_workload_result_ok(r));
		assert_int_equal(r->camera.sessions, cases[i].sessions);
		assert_int_equal(r->camera.cma_tried, cases[i].frames);
		assert_int_equal(r->camera.cma_ok, cases[i].frames);
		assert_int_equal(r->camera.frame_checks, cases[i].frames);
	}
	tu_env_destroy(e);
	free(r);
}

/* check_every counts the page cache's and the camera's operations. */
static void test_check_every_during_streaming(void **state)
{
	struct dmm_workload_opts o;
	struct dmm_workload_result *r = malloc(sizeof(*r));
	struct tu_env *e = tu_env_profile("rpi4");
	(void)state;

	assert_non_null(r);
	small_opts(&o);
	o.frames = 4;
	o.check_every = 1000;
	assert_ok(dmm_workload_run(e->mem, "camera", &o, r));
	assert_true(dmm_workload_result_ok(r));
	assert_true(r->ops > 10 * o.check_every);
	/* every thousandth operation of the run (teardown frees come on top) */
	assert_true(r->checks_run >= r->ops / o.check_every);
	assert_int_equal(r->checks_failed, 0);
	tu_env_destroy(e);
	free(r);
}

/* The churn's counts are its own: each operation frees at most one page
 * and allocates at most one; the run's totals also hold the fill. */
static void test_churn_counts(void **state)
{
	struct dmm_workload_opts o;
	struct dmm_workload_result *r = malloc(sizeof(*r));
	struct tu_env *e = tu_env_profile("rpi4");
	const struct dmm_workload_camera *c = &r->camera;
	(void)state;

	assert_non_null(r);
	small_opts(&o);
	o.cache_bytes = 64 * MiB; /* above the queue: the churn never runs dry */
	o.frames = 2;
	o.churn = 3;
	assert_ok(dmm_workload_run(e->mem, "camera", &o, r));
	assert_true(dmm_workload_result_ok(r));
	assert_true(c->churn_ops > 0);
	assert_int_equal(c->churn_allocs, c->churn_ops);
	assert_int_equal(c->churn_allocs_ok, c->churn_ops);
	assert_int_equal(c->churn_frees, c->churn_ops);
	assert_true(c->handle_allocs_ok >= c->fill_handles + c->churn_allocs_ok);
	assert_true(c->handle_frees >= c->churn_frees);
	tu_env_destroy(e);
	free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frames_not_multiple_of_queue),
		cmocka_unit_test(test_check_every_during_streaming),
		cmocka_unit_test(test_churn_counts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

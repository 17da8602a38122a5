/* test_threadpool.c - every task runs exactly once per loop, results written by workers are
 * visible to the caller after threadpool_run returns, and loops back to back (spinning workers)
 * and after idle periods (sleeping workers) both work. Run under TSan in CI. */
#include "common/threadpool.h"

/* cmocka needs these four headers first, in this order */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

struct count_ctx {
    atomic_int *hits;
    int64_t *values; /* plain writes, read by the caller after the loop */
    int n_threads;
    atomic_int bad_worker;
};

static void count_task(void *ctx_, size_t i, int worker)
{
    struct count_ctx *c = ctx_;
    atomic_fetch_add(&c->hits[i], 1);
    c->values[i] = (int64_t)i * (int64_t)i;
    if (worker < 0 || worker >= c->n_threads) {
        atomic_store(&c->bad_worker, 1);
    }
}

static void run_loops(int n_threads, int n_loops, size_t n_tasks, long idle_ns)
{
    struct threadpool *p;
    assert_int_equal(threadpool_create(n_threads, &p), 0);
    assert_int_equal(threadpool_size(p), n_threads);
    struct count_ctx c = { .n_threads = n_threads };
    c.hits = calloc(n_tasks, sizeof(*c.hits));
    c.values = calloc(n_tasks, sizeof(*c.values));
    atomic_init(&c.bad_worker, 0);
    for (int loop = 0; loop < n_loops; loop++) {
        for (size_t i = 0; i < n_tasks; i++) {
            atomic_store(&c.hits[i], 0);
            c.values[i] = -1;
        }
        threadpool_run(p, n_tasks, count_task, &c);
        for (size_t i = 0; i < n_tasks; i++) {
            assert_int_equal(atomic_load(&c.hits[i]), 1);
            assert_int_equal(c.values[i], (int64_t)i * (int64_t)i);
        }
        if (idle_ns) {
            struct timespec ts = { 0, idle_ns };
            nanosleep(&ts, NULL);
        }
    }
    assert_int_equal(atomic_load(&c.bad_worker), 0);
    free(c.hits);
    free(c.values);
    threadpool_destroy(p);
}

static void test_threadpool_each_task_once_back_to_back(void **state)
{
    (void)state;
    run_loops(4, 2000, 37, 0);
    run_loops(2, 500, 1000, 0);
    run_loops(1, 10, 100, 0);
}

static void test_threadpool_wakes_sleeping_workers(void **state)
{
    (void)state;
    /* 30 ms idle lets workers pass the spin phase and block on the condition variable */
    run_loops(3, 5, 64, 30 * 1000 * 1000);
}

static void test_threadpool_zero_and_one_task(void **state)
{
    (void)state;
    run_loops(4, 10, 0, 0);
    run_loops(4, 10, 1, 0);
    threadpool_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threadpool_each_task_once_back_to_back),
        cmocka_unit_test(test_threadpool_wakes_sleeping_workers),
        cmocka_unit_test(test_threadpool_zero_and_one_task),
    };
    return cmocka_run_group_tests_name("threadpool", tests, NULL, NULL);
}

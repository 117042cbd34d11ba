/* test_pool.c - the thread pool: every task runs, groups report their first error and can be
 * waited on down to a bound, groups are independent, and destroy finishes the queue. */
#include "unit.h"

#include <stdatomic.h>
#include <time.h>

#include "core/core.h"

/* Any test that deadlocks fails (SIGALRM) instead of hanging. */
static int watchdog_on(void **state)
{
    (void)state;
    alarm(60);
    return 0;
}

static int watchdog_off(void **state)
{
    (void)state;
    alarm(0);
    return 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- counting tasks ---- */

struct counting {
    _Atomic unsigned runs;
    _Atomic unsigned hits[1000]; /* runs of task i */
};

struct counting_arg {
    struct counting *c;
    unsigned i;
};

static int count_task(void *arg)
{
    struct counting_arg *a = arg;
    atomic_fetch_add(&a->c->hits[a->i], 1);
    atomic_fetch_add(&a->c->runs, 1);
    return 0;
}

static void thousand_tasks_all_run(void **state)
{
    (void)state;
    for (unsigned nthreads = 1; nthreads <= 8; nthreads *= 2) {
        struct sl_pool *pool = NULL;
        assert_int_equal(sl__pool_create(nthreads, &pool), 0);
        assert_non_null(pool);
        struct counting *c = calloc(1, sizeof(*c));
        struct counting_arg *args = calloc(1000, sizeof(*args));
        assert_non_null(c);
        assert_non_null(args);
        struct sl_task_group g;
        sl__group_init(&g);
        for (unsigned i = 0; i < 1000; i++) {
            args[i] = (struct counting_arg){c, i};
            assert_int_equal(sl__pool_submit(pool, &g, count_task, &args[i]), 0);
        }
        assert_int_equal(sl__group_wait(&g), 0);
        /* All done when the wait returns, each exactly once. */
        assert_int_equal(atomic_load(&c->runs), 1000);
        for (unsigned i = 0; i < 1000; i++) assert_int_equal(atomic_load(&c->hits[i]), 1);
        assert_int_equal(g.pending, 0);
        /* A group can be reused, and waiting on an empty group returns at once. */
        assert_int_equal(sl__group_wait(&g), 0);
        for (unsigned i = 0; i < 10; i++)
            assert_int_equal(sl__pool_submit(pool, &g, count_task, &args[i]), 0);
        assert_int_equal(sl__group_wait(&g), 0);
        assert_int_equal(atomic_load(&c->runs), 1010);
        sl__group_destroy(&g);
        sl__pool_destroy(pool);
        free(args);
        free(c);
    }
    sl__pool_destroy(NULL);
}

/* ---- errors ---- */

static int return_value_task(void *arg)
{
    return (int)(intptr_t)arg;
}

static void wait_returns_first_error(void **state)
{
    (void)state;
    /* One worker: tasks run in the order queued, so "first" is well defined. */
    struct sl_pool *pool = NULL;
    assert_int_equal(sl__pool_create(1, &pool), 0);
    struct sl_task_group g;
    sl__group_init(&g);
    static const int results[] = {0, 0, -EIO, 0, -ENOENT, SL_E_CHANGED, 0};
    for (size_t i = 0; i < SL_ARRAY_LEN(results); i++)
        assert_int_equal(
            sl__pool_submit(pool, &g, return_value_task, (void *)(intptr_t)results[i]), 0);
    assert_int_equal(sl__group_wait(&g), -EIO);
    assert_int_equal(g.pending, 0);
    sl__group_destroy(&g);

    /* All succeed: 0. */
    sl__group_init(&g);
    for (int i = 0; i < 50; i++)
        assert_int_equal(sl__pool_submit(pool, &g, return_value_task, (void *)(intptr_t)0), 0);
    assert_int_equal(sl__group_wait(&g), 0);
    sl__group_destroy(&g);
    sl__pool_destroy(pool);

    /* Many workers: one of the errors comes back, never 0, and every task still ran. */
    assert_int_equal(sl__pool_create(8, &pool), 0);
    sl__group_init(&g);
    for (int i = 0; i < 500; i++) {
        int rc = i % 100 == 37 ? -(i / 100 + 1) : 0; /* -1 .. -5 */
        assert_int_equal(sl__pool_submit(pool, &g, return_value_task, (void *)(intptr_t)rc), 0);
    }
    int rc = sl__group_wait(&g);
    assert_true(rc <= -1 && rc >= -5);
    assert_int_equal(g.pending, 0);
    sl__group_destroy(&g);
    sl__pool_destroy(pool);
}

/* ---- gated tasks: they finish only when the test lets them ---- */

struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned released; /* how many tasks may finish */
    unsigned started, finished;
};

static void gate_init(struct gate *g)
{
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->released = g->started = g->finished = 0;
}

static void gate_destroy(struct gate *g)
{
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
}

static int gated_task(void *arg)
{
    struct gate *g = arg;
    pthread_mutex_lock(&g->lock);
    g->started++;
    pthread_cond_broadcast(&g->cond);
    while (g->released == 0) pthread_cond_wait(&g->cond, &g->lock);
    g->released--;
    g->finished++;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
    return 0;
}

static void gate_release(struct gate *g, unsigned n)
{
    pthread_mutex_lock(&g->lock);
    g->released += n;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

static void gate_wait_started(struct gate *g, unsigned n)
{
    pthread_mutex_lock(&g->lock);
    while (g->started < n) pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

static void gate_wait_finished(struct gate *g, unsigned n)
{
    pthread_mutex_lock(&g->lock);
    while (g->finished < n) pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

static unsigned gate_finished(struct gate *g)
{
    pthread_mutex_lock(&g->lock);
    unsigned n = g->finished;
    pthread_mutex_unlock(&g->lock);
    return n;
}

static size_t pending(struct sl_task_group *g)
{
    pthread_mutex_lock(&g->lock);
    size_t n = g->pending;
    pthread_mutex_unlock(&g->lock);
    return n;
}

struct below_waiter {
    struct sl_task_group *g;
    size_t max;
    _Atomic bool returned;
    size_t pending_at_return;
};

static void *below_thread(void *arg)
{
    struct below_waiter *w = arg;
    sl__group_wait_below(w->g, w->max);
    w->pending_at_return = pending(w->g);
    atomic_store(&w->returned, true);
    return NULL;
}

static void wait_below(void **state)
{
    (void)state;
    enum { TASKS = 8 };
    struct sl_pool *pool = NULL;
    assert_int_equal(sl__pool_create(4, &pool), 0);
    struct gate gate;
    gate_init(&gate);
    struct sl_task_group g;
    sl__group_init(&g);

    /* Already below: returns at once. */
    sl__group_wait_below(&g, 0);
    sl__group_wait_below(&g, 5);

    for (int i = 0; i < TASKS; i++) assert_int_equal(sl__pool_submit(pool, &g, gated_task, &gate), 0);
    gate_wait_started(&gate, 4); /* all workers busy, 4 queued */
    assert_int_equal(pending(&g), TASKS);
    sl__group_wait_below(&g, TASKS);     /* at the bound: at once */
    sl__group_wait_below(&g, TASKS + 3); /* above it: at once */

    struct below_waiter w = {.g = &g, .max = 5};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, below_thread, &w), 0);

    /* Two of eight done: 6 pending, still above 5. */
    gate_release(&gate, 2);
    gate_wait_finished(&gate, 2);
    sleep_ms(50);
    assert_false(atomic_load(&w.returned));

    /* The third: 5 pending, the waiter is let go. */
    gate_release(&gate, 1);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_true(atomic_load(&w.returned));
    assert_true(w.pending_at_return <= 5);
    assert_true(gate_finished(&gate) >= 3);

    /* Down to 0 is the same as a full wait. */
    gate_release(&gate, TASKS - 3);
    sl__group_wait_below(&g, 0);
    assert_int_equal(pending(&g), 0);
    assert_int_equal(gate_finished(&gate), TASKS);
    assert_int_equal(sl__group_wait(&g), 0);

    sl__group_destroy(&g);
    sl__pool_destroy(pool);
    gate_destroy(&gate);
}

static void groups_are_independent(void **state)
{
    (void)state;
    struct sl_pool *pool = NULL;
    assert_int_equal(sl__pool_create(4, &pool), 0);
    struct gate gate;
    gate_init(&gate);
    struct sl_task_group slow, fast;
    sl__group_init(&slow);
    sl__group_init(&fast);

    /* Two workers held by the slow group, which fails. */
    assert_int_equal(sl__pool_submit(pool, &slow, gated_task, &gate), 0);
    assert_int_equal(sl__pool_submit(pool, &slow, gated_task, &gate), 0);
    assert_int_equal(sl__pool_submit(pool, &slow, return_value_task, (void *)(intptr_t)-EIO), 0);
    gate_wait_started(&gate, 2);
    sl__group_wait_below(&slow, 2); /* the failing one is done; the two held ones are not */
    assert_int_equal(pending(&slow), 2);

    /* The fast group's tasks run on the other workers; its wait does not wait for slow's. */
    struct counting *c = calloc(1, sizeof(*c));
    struct counting_arg *args = calloc(200, sizeof(*args));
    for (unsigned i = 0; i < 200; i++) {
        args[i] = (struct counting_arg){c, i};
        assert_int_equal(sl__pool_submit(pool, &fast, count_task, &args[i]), 0);
    }
    assert_int_equal(sl__group_wait(&fast), 0); /* and not slow's error */
    assert_int_equal(atomic_load(&c->runs), 200);
    assert_int_equal(pending(&slow), 2);
    assert_int_equal(gate_finished(&gate), 0);

    /* A second fast round with the slow group still held. */
    for (unsigned i = 0; i < 200; i++)
        assert_int_equal(sl__pool_submit(pool, &fast, count_task, &args[i]), 0);
    sl__group_wait_below(&fast, 0);
    assert_int_equal(atomic_load(&c->runs), 400);

    gate_release(&gate, 2);
    assert_int_equal(sl__group_wait(&slow), -EIO);
    assert_int_equal(gate_finished(&gate), 2);
    assert_int_equal(sl__group_wait(&fast), 0);

    sl__group_destroy(&slow);
    sl__group_destroy(&fast);
    sl__pool_destroy(pool);
    gate_destroy(&gate);
    free(args);
    free(c);
}

/* ---- destroy ---- */

struct slow_counter {
    _Atomic unsigned done;
};

static int slow_task(void *arg)
{
    struct slow_counter *c = arg;
    sleep_ms(1);
    atomic_fetch_add(&c->done, 1);
    return 0;
}

/* A pool without workers would queue tasks forever and hang their waiters: refused. */
static void zero_threads_refused(void **state)
{
    (void)state;
    struct sl_pool *pool = (struct sl_pool *)0x1;
    assert_int_equal(sl__pool_create(0, &pool), -EINVAL);
    assert_ptr_equal(pool, (struct sl_pool *)0x1);
}

static void destroy_waits_for_queued_tasks(void **state)
{
    (void)state;
    for (unsigned nthreads = 1; nthreads <= 4; nthreads *= 4) {
        struct sl_pool *pool = NULL;
        assert_int_equal(sl__pool_create(nthreads, &pool), 0);
        struct slow_counter c = {0};
        /* Fire and forget (no group): nobody waits but destroy. */
        for (int i = 0; i < 100; i++) assert_int_equal(sl__pool_submit(pool, NULL, slow_task, &c), 0);
        sl__pool_destroy(pool);
        assert_int_equal(atomic_load(&c.done), 100);
    }

    /* Tasks in a group, still queued behind a held worker when destroy is called. */
    struct sl_pool *pool = NULL;
    assert_int_equal(sl__pool_create(1, &pool), 0);
    struct gate gate;
    gate_init(&gate);
    struct sl_task_group g;
    sl__group_init(&g);
    struct slow_counter c = {0};
    assert_int_equal(sl__pool_submit(pool, &g, gated_task, &gate), 0);
    for (int i = 0; i < 20; i++) assert_int_equal(sl__pool_submit(pool, &g, slow_task, &c), 0);
    gate_wait_started(&gate, 1);
    gate_release(&gate, 1);
    sl__pool_destroy(pool);
    assert_int_equal(atomic_load(&c.done), 20);
    assert_int_equal(pending(&g), 0);
    assert_int_equal(sl__group_wait(&g), 0);
    sl__group_destroy(&g);
    gate_destroy(&gate);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(thousand_tasks_all_run, watchdog_on, watchdog_off),
        cmocka_unit_test_setup_teardown(wait_returns_first_error, watchdog_on, watchdog_off),
        cmocka_unit_test_setup_teardown(wait_below, watchdog_on, watchdog_off),
        cmocka_unit_test_setup_teardown(groups_are_independent, watchdog_on, watchdog_off),
        cmocka_unit_test(zero_threads_refused),
        cmocka_unit_test_setup_teardown(destroy_waits_for_queued_tasks, watchdog_on,
                                        watchdog_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * pool.c - a small fixed-size thread pool: one FIFO of tasks, N workers.
 *
 * Tasks belong to an optional group; a caller waits for its own group, so a `load` of many
 * files and a read-ahead of one file share the workers without waiting for each other.
 * Locks: pool->lock guards the queue and the stop flag; a group's lock guards its counters.
 * A worker never holds both (it finishes the task, then takes the group's lock).
 */
#include <stdlib.h>

#include "core/core.h"

struct task {
    struct task *next;
    sl_task_fn fn;
    void *arg;
    struct sl_task_group *group;
};

struct sl_pool {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct task *head, *tail; /* guarded by lock */
    bool stopping;            /* guarded by lock */
    unsigned nthreads;
    pthread_t threads[];
};

static void *worker(void *arg)
{
    struct sl_pool *pool = arg;

    for (;;) {
        pthread_mutex_lock(&pool->lock);
        while (!pool->head && !pool->stopping) pthread_cond_wait(&pool->wake, &pool->lock);
        struct task *t = pool->head;
        if (!t) {
            pthread_mutex_unlock(&pool->lock);
            return NULL;
        }
        pool->head = t->next;
        if (!pool->head) pool->tail = NULL;
        pthread_mutex_unlock(&pool->lock);

        sl__err_clear(); /* a task's failure must not be described by an earlier task's */
        int rc = t->fn(t->arg);
        struct sl_task_group *g = t->group;
        free(t);
        if (g) {
            pthread_mutex_lock(&g->lock);
            if (rc && !g->first_err) g->first_err = rc;
            g->pending--;
            pthread_cond_broadcast(&g->done);
            pthread_mutex_unlock(&g->lock);
        }
    }
}

int sl__pool_create(unsigned nthreads, struct sl_pool **out)
{
    if (nthreads == 0) return -EINVAL; /* tasks would never run, and their waiters never wake */
    struct sl_pool *pool = calloc(1, sizeof(*pool) + nthreads * sizeof(pthread_t));
    if (!pool) return -ENOMEM;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    for (unsigned i = 0; i < nthreads; i++) {
        int rc = pthread_create(&pool->threads[i], NULL, worker, pool);
        if (rc) {
            pool->nthreads = i;
            sl__pool_destroy(pool);
            return -rc;
        }
        pool->nthreads = i + 1;
    }
    *out = pool;
    return 0;
}

void sl__pool_destroy(struct sl_pool *pool)
{
    if (!pool) return;
    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    for (unsigned i = 0; i < pool->nthreads; i++) pthread_join(pool->threads[i], NULL);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
}

void sl__group_init(struct sl_task_group *g)
{
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->done, NULL);
    g->pending = 0;
    g->first_err = 0;
}

void sl__group_destroy(struct sl_task_group *g)
{
    pthread_cond_destroy(&g->done);
    pthread_mutex_destroy(&g->lock);
}

int sl__pool_submit(struct sl_pool *pool, struct sl_task_group *g, sl_task_fn fn, void *arg)
{
    struct task *t = malloc(sizeof(*t));
    if (!t) return -ENOMEM;
    *t = (struct task){.fn = fn, .arg = arg, .group = g};
    if (g) {
        pthread_mutex_lock(&g->lock);
        g->pending++;
        pthread_mutex_unlock(&g->lock);
    }
    pthread_mutex_lock(&pool->lock);
    if (pool->tail)
        pool->tail->next = t;
    else
        pool->head = t;
    pool->tail = t;
    pthread_cond_signal(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    return 0;
}

void sl__group_wait_below(struct sl_task_group *g, size_t max)
{
    pthread_mutex_lock(&g->lock);
    while (g->pending > max) pthread_cond_wait(&g->done, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

int sl__group_wait(struct sl_task_group *g)
{
    pthread_mutex_lock(&g->lock);
    while (g->pending > 0) pthread_cond_wait(&g->done, &g->lock);
    int rc = g->first_err;
    pthread_mutex_unlock(&g->lock);
    return rc;
}

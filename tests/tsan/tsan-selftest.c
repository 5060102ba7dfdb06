/*
 * Self-test of the TSan build and of tests/tsan/glib-tsan.c: each mode
 * (argv[1]) does one thing between threads; test-tsan-shim.py runs every
 * mode and checks that TSan reports exactly the deliberate bugs (a race, a
 * race under two different mutexes, a lock-order inversion) and nothing for
 * data handed over by GMutex, GCond, g_once_init, the main loop, GThreadPool
 * or GAsyncQueue.
 */
#include <glib.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    int value;
    char text[32];
} Payload;

static int counter;
static GMutex mutex_a, mutex_b;

/* The racing modes meet here first, so that the two accesses really are
 * concurrent, and race for RACE_ROUNDS rounds: TSan (clang 14) misses a
 * single racing pair in about one run in five, ten rounds it always
 * reports (the first report ends the run: halt_on_error). */
#define RACE_ROUNDS 10
static pthread_barrier_t start_line;

static void race_begin(void)
{
    pthread_barrier_init(&start_line, NULL, 2);
}

static void race_end(void)
{
    pthread_barrier_destroy(&start_line);
}

static Payload *payload_new(int value)
{
    Payload *p = g_new0(Payload, 1);
    p->value = value;
    snprintf(p->text, sizeof p->text, "payload %d", value);
    return p;
}

static void payload_check(const Payload *p, int value)
{
    if (p->value != value)
        g_error("payload %d, expected %d", p->value, value);
}

/* ---- race: a plain counter bumped by two threads without a lock ---- */

static gpointer bump_unlocked(gpointer unused)
{
    pthread_barrier_wait(&start_line);
    counter++;
    return NULL;
}

static void mode_race(void)
{
    for (int round = 0; round < RACE_ROUNDS; round++) {
        race_begin();
        GThread *a = g_thread_new("a", bump_unlocked, NULL);
        GThread *b = g_thread_new("b", bump_unlocked, NULL);
        g_thread_join(a);
        g_thread_join(b);
        race_end();
    }
}

/* ---- two-mutexes: each thread holds a lock, but not the same one ---- */

static gpointer bump_under(gpointer mutex)
{
    pthread_barrier_wait(&start_line);
    g_mutex_lock(mutex);
    counter++;
    g_mutex_unlock(mutex);
    return NULL;
}

static void mode_two_mutexes(void)
{
    for (int round = 0; round < RACE_ROUNDS; round++) {
        race_begin();
        GThread *a = g_thread_new("a", bump_under, &mutex_a);
        GThread *b = g_thread_new("b", bump_under, &mutex_b);
        g_thread_join(a);
        g_thread_join(b);
        race_end();
    }
}

/* ---- mutex: the same GMutex (static, g_mutex_init'ed, trylock) ---- */

static gpointer bump_many(gpointer mutex)
{
    for (int i = 0; i < 1000; i++) {
        if (i % 2 == 0 || !g_mutex_trylock(mutex))
            g_mutex_lock(mutex);
        counter++;
        g_mutex_unlock(mutex);
    }
    return NULL;
}

static void mode_mutex(void)
{
    GMutex heap_mutex;
    g_mutex_init(&heap_mutex);
    for (int round = 0; round < 2; round++) {
        GMutex *m = round ? &heap_mutex : &mutex_a;
        GThread *a = g_thread_new("a", bump_many, m);
        GThread *b = g_thread_new("b", bump_many, m);
        g_thread_join(a);
        g_thread_join(b);
    }
    g_mutex_clear(&heap_mutex);
    g_assert_cmpint(counter, ==, 4000);
}

/* ---- lock-order: A then B in one thread, B then A in another ---- */

static gpointer lock_b_then_a(gpointer unused)
{
    g_mutex_lock(&mutex_b);
    g_mutex_lock(&mutex_a);
    g_mutex_unlock(&mutex_a);
    g_mutex_unlock(&mutex_b);
    return NULL;
}

static void mode_lock_order(void)
{
    g_mutex_lock(&mutex_a);
    g_mutex_lock(&mutex_b);
    g_mutex_unlock(&mutex_b);
    g_mutex_unlock(&mutex_a);
    g_thread_join(g_thread_new("b-a", lock_b_then_a, NULL));
}

/* ---- cond: a payload written outside the lock, handed over by a flag
 * under the mutex and a GCond (g_cond_wait and g_cond_wait_until) ---- */

static GCond cond;
static Payload *shared;
static gboolean ready;

static gpointer produce(gpointer value)
{
    Payload *p = payload_new(GPOINTER_TO_INT(value));
    g_mutex_lock(&mutex_a);
    shared = p;
    ready = TRUE;
    g_cond_broadcast(&cond);
    g_mutex_unlock(&mutex_a);
    return NULL;
}

static Payload *consume(gboolean until)
{
    g_mutex_lock(&mutex_a);
    while (!ready) {
        if (until)
            g_cond_wait_until(&cond, &mutex_a, g_get_monotonic_time() + G_TIME_SPAN_SECOND);
        else
            g_cond_wait(&cond, &mutex_a);
    }
    Payload *p = shared;
    ready = FALSE;
    g_mutex_unlock(&mutex_a);
    return p;
}

static void mode_cond(void)
{
    for (int until = 0; until < 2; until++) {
        GThread *t = g_thread_new("producer", produce, GINT_TO_POINTER(7 + until));
        Payload *p = consume(until);
        payload_check(p, 7 + until);
        p->value = 0;
        g_free(p);
        g_thread_join(t);
    }
}

/* ---- once: g_once_init_enter/leave from several threads ---- */

static Payload *once_payload(void)
{
    static Payload *p;
    if (g_once_init_enter(&p)) {
        Payload *made = payload_new(42);
        g_usleep(1000);                 /* let the others wait in GLib */
        g_once_init_leave(&p, made);
    }
    return p;
}

static gpointer read_once(gpointer unused)
{
    payload_check(once_payload(), 42);
    return NULL;
}

static void mode_once(void)
{
    GThread *t[4];
    for (int i = 0; i < 4; i++)
        t[i] = g_thread_new("once", read_once, NULL);
    for (int i = 0; i < 4; i++)
        g_thread_join(t[i]);
    read_once(NULL);
}

/* ---- idle / timeout / invoke: a payload made by a thread, used by the
 * main loop; the source's destroy notify frees it.  One at a time (the
 * poster waits for each), so the main loop frees GLib's GSource of one
 * before any later post. ---- */

static GMainLoop *loop;
static GCond seen_cond;
static int main_loop_seen;

static gboolean use_payload(gpointer data)
{
    Payload *p = data;
    payload_check(p, 5);
    p->value = 6;
    g_mutex_lock(&mutex_b);
    if (++main_loop_seen == 4)
        g_main_loop_quit(loop);
    g_cond_signal(&seen_cond);
    g_mutex_unlock(&mutex_b);
    return G_SOURCE_REMOVE;
}

static void free_payload(gpointer data)
{
    Payload *p = data;
    payload_check(p, 6);
    g_free(p);
}

static void wait_seen(int n)
{
    g_mutex_lock(&mutex_b);
    while (main_loop_seen < n)
        g_cond_wait(&seen_cond, &mutex_b);
    g_mutex_unlock(&mutex_b);
}

static Payload *leaked[2];

static gpointer post_to_main_loop(gpointer unused)
{
    /* Sources without a destroy notify: the main loop frees nothing, the
     * payloads are checked and freed at the end. */
    leaked[0] = payload_new(5);
    g_idle_add(use_payload, leaked[0]);
    wait_seen(1);
    leaked[1] = payload_new(5);
    g_timeout_add(1, use_payload, leaked[1]);
    wait_seen(2);
    g_idle_add_full(G_PRIORITY_DEFAULT, use_payload, payload_new(5), free_payload);
    wait_seen(3);
    g_main_context_invoke_full(NULL, G_PRIORITY_DEFAULT, use_payload, payload_new(5), free_payload);
    return NULL;
}

static void mode_main_loop(void)
{
    loop = g_main_loop_new(NULL, FALSE);
    GThread *t = g_thread_new("poster", post_to_main_loop, NULL);
    g_main_loop_run(loop);
    g_thread_join(t);
    g_main_loop_unref(loop);
    for (int i = 0; i < 2; i++) {
        payload_check(leaked[i], 6);
        g_free(leaked[i]);
    }
}

/* ---- pool: tasks made by the pusher, results read after the pool.  One
 * task at a time (the pusher waits for each), so GLib's queue link for a
 * task is freed by the worker before any later push. ---- */

static GCond task_done;
static int tasks_done;

static void pool_task(gpointer data, gpointer user_data)
{
    Payload *p = data;
    int *results = user_data;
    results[p->value] = p->value * 2;
    g_free(p);
    g_mutex_lock(&mutex_b);
    tasks_done++;
    g_cond_signal(&task_done);
    g_mutex_unlock(&mutex_b);
}

static void mode_pool(void)
{
    int results[16] = {0};
    GThreadPool *pool = g_thread_pool_new(pool_task, results, 4, FALSE, NULL);
    for (int i = 0; i < 16; i++) {
        g_thread_pool_push(pool, payload_new(i), NULL);
        if (i < 8) {
            g_mutex_lock(&mutex_b);
            while (tasks_done <= i)
                g_cond_wait(&task_done, &mutex_b);
            g_mutex_unlock(&mutex_b);
        }
    }
    g_thread_pool_free(pool, FALSE, TRUE);
    for (int i = 0; i < 16; i++)
        g_assert_cmpint(results[i], ==, i * 2);
}

/* ---- queue: GAsyncQueue push/pop in both directions, ping-pong ---- */

static gpointer echo(gpointer queues)
{
    GAsyncQueue **q = queues;
    for (int i = 0; i < 8; i++) {
        Payload *p = i % 2 ? g_async_queue_pop(q[0])
                           : g_async_queue_timeout_pop(q[0], 10 * G_TIME_SPAN_SECOND);
        p->value++;
        g_async_queue_push(q[1], p);
    }
    return NULL;
}

static void mode_queue(void)
{
    GAsyncQueue *q[2] = {g_async_queue_new(), g_async_queue_new()};
    GThread *t = g_thread_new("echo", echo, q);
    for (int i = 0; i < 8; i++) {
        g_async_queue_push(q[0], payload_new(i));
        Payload *p = g_async_queue_pop(q[1]);
        payload_check(p, i + 1);
        g_free(p);
    }
    g_thread_join(t);
    g_async_queue_unref(q[0]);
    g_async_queue_unref(q[1]);
}

static const struct {
    const char *name;
    void (*run)(void);
} modes[] = {
    {"race", mode_race},
    {"two-mutexes", mode_two_mutexes},
    {"lock-order", mode_lock_order},
    {"mutex", mode_mutex},
    {"cond", mode_cond},
    {"once", mode_once},
    {"main-loop", mode_main_loop},
    {"pool", mode_pool},
    {"queue", mode_queue},
};

int main(int argc, char **argv)
{
    for (size_t i = 0; argc == 2 && i < G_N_ELEMENTS(modes); i++) {
        if (strcmp(argv[1], modes[i].name) == 0) {
            modes[i].run();
            printf("%s: done\n", argv[1]);
            return 0;
        }
    }
    fprintf(stderr, "usage: %s MODE\n", argv[0]);
    return 2;
}

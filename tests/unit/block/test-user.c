/* Users of nodes (block/user.c) over memory nodes: a drain holds the users
 * of the node and of the nodes above it, waits for their requests, nests;
 * a user made during a drain starts drained; node_replace moves users
 * and parent edges (skipping the new node's own edge to the old one),
 * refuses size changes, parents that cannot change their child and a
 * read-only child under a writable parent, and under concurrent
 * requests never lets one run on a node while it is being replaced. */
#include <string.h>
#include <glib.h>
#include <json-glib/json-glib.h>

#include "block/node.h"
#include "tests/unit/node-json.h"
#include "block/user.h"

static BlockNode *create(const char *json)
{
    GError *err = NULL;
    BlockNode *n = test_node_create_text(json, &err);
    g_assert_no_error(err);
    return n;
}

typedef struct Req {
    BlockUser *user;
    gint started, done;
    GMutex lock;
    GCond cond;
    bool hold;      /* stay in flight until released */
} Req;

/* One request: begin, (hold,) end. */
static gpointer one_request(gpointer opaque)
{
    Req *r = opaque;
    block_user_begin(r->user);
    g_atomic_int_set(&r->started, 1);
    g_mutex_lock(&r->lock);
    while (r->hold)
        g_cond_wait(&r->cond, &r->lock);
    g_mutex_unlock(&r->lock);
    block_user_end(r->user, 0);
    g_atomic_int_set(&r->done, 1);
    return NULL;
}

static void req_release(Req *r)
{
    g_mutex_lock(&r->lock);
    r->hold = false;
    g_cond_broadcast(&r->cond);
    g_mutex_unlock(&r->lock);
}

/* True if the flag becomes set within ms milliseconds. */
static bool becomes(gint *flag, int ms)
{
    for (int i = 0; i < ms; i++) {
        if (g_atomic_int_get(flag))
            return true;
        g_usleep(1000);
    }
    return g_atomic_int_get(flag);
}

static void test_drain_holds_users_above(void)
{
    BlockNode *m = create("{\"driver\": \"memory\", \"node-name\": \"d-m\", \"size\": 1048576}");
    BlockNode *r = create("{\"driver\": \"raw\", \"node-name\": \"d-r\", \"file\": \"d-m\"}");
    BlockUser *on_raw = block_user_new(r, "user of raw", 0, BLOCK_PERM_ALL, NULL);
    BlockUser *on_mem = block_user_new(m, "user of memory", 0, BLOCK_PERM_ALL, NULL);
    g_assert_cmpuint(node_user_count(r), ==, 1);

    node_drain_begin(m);
    node_drain_begin(m); /* nested */
    Req a = { .user = on_raw }, b = { .user = on_mem };
    GThread *ta = g_thread_new("a", one_request, &a);
    GThread *tb = g_thread_new("b", one_request, &b);
    g_assert_false(becomes(&a.started, 50)); /* raw is above the drained node */
    g_assert_false(becomes(&b.started, 1));
    node_drain_end(m);
    g_assert_false(becomes(&a.done, 50));    /* one drain still holds them */
    /* A user made now starts drained. */
    BlockUser *late = block_user_new(r, "late user", 0, BLOCK_PERM_ALL, NULL);
    Req c = { .user = late };
    GThread *tc = g_thread_new("c", one_request, &c);
    g_assert_false(becomes(&c.started, 20));
    node_drain_end(m);
    g_assert_true(becomes(&a.done, 5000) && becomes(&b.done, 5000) && becomes(&c.done, 5000));
    g_thread_join(ta);
    g_thread_join(tb);
    g_thread_join(tc);

    /* A drain of the raw node does not hold the memory node's own user. */
    node_drain_begin(r);
    Req d = { .user = on_mem };
    GThread *td = g_thread_new("d", one_request, &d);
    g_assert_true(becomes(&d.done, 5000));
    g_thread_join(td);
    node_drain_end(r);

    block_user_free(late);
    block_user_free(on_raw);
    block_user_free(on_mem);
    g_assert_true(node_delete("d-r", NULL));
    g_assert_true(node_delete("d-m", NULL));
}

typedef struct Drainer {
    BlockNode *node;
    gint drained;
} Drainer;

static gpointer drain_thread(gpointer opaque)
{
    Drainer *d = opaque;
    node_drain_begin(d->node);
    g_atomic_int_set(&d->drained, 1);
    return NULL;
}

static void test_drain_waits_for_requests(void)
{
    BlockNode *m = create("{\"driver\": \"memory\", \"node-name\": \"w-m\", \"size\": 1048576}");
    BlockUser *u = block_user_new(m, "user", 0, BLOCK_PERM_ALL, NULL);
    Req a = { .user = u, .hold = true };
    g_mutex_init(&a.lock);
    g_cond_init(&a.cond);
    GThread *ta = g_thread_new("a", one_request, &a);
    g_assert_true(becomes(&a.started, 5000));
    Drainer dr = { .node = m };
    GThread *td = g_thread_new("drain", drain_thread, &dr);
    g_assert_false(becomes(&dr.drained, 50)); /* the request is in flight */
    req_release(&a);
    g_assert_true(becomes(&dr.drained, 5000));
    g_thread_join(ta);
    g_thread_join(td);
    node_drain_end(m);
    g_mutex_clear(&a.lock);
    g_cond_clear(&a.cond);
    block_user_free(u);
    g_assert_true(node_delete("w-m", NULL));
}

/* Reads one byte of `node` at `offset`. */
static char byte_at(BlockNode *node, uint64_t offset)
{
    char c = 0;
    g_assert_cmpint(node_pread(node, &c, 1, offset), ==, 0);
    return c;
}

static void test_replace_refusals(void)
{
    BlockNode *a = create("{\"driver\": \"memory\", \"node-name\": \"r-a\", \"size\": 1048576}");
    BlockNode *small = create("{\"driver\": \"memory\", \"node-name\": \"r-s\", \"size\": 65536}");
    BlockNode *r = create("{\"driver\": \"raw\", \"node-name\": \"r-r\", \"file\": \"r-a\"}");
    BlockNode *b = create("{\"driver\": \"memory\", \"node-name\": \"r-b\", \"size\": 1048576}");
    BlockNode *ro = create("{\"driver\": \"memory\", \"node-name\": \"r-ro\", \"size\": 1048576, \"read-only\": true}");
    create("{\"driver\": \"overlay\", \"node-name\": \"r-ov\", \"backing\": \"r-b\"}");
    BlockUser *u = block_user_new(r, "user", 0, BLOCK_PERM_ALL, NULL);
    GError *err = NULL;
    g_assert_false(node_replace(r, small, &err));
    g_assert_cmpstr(err->message, ==, "Cannot replace node 'r-r' by 'r-s': their sizes differ");
    g_clear_error(&err);
    g_assert_false(node_replace(a, ro, &err));
    g_assert_cmpstr(err->message, ==, "Cannot replace node 'r-a' by read-only node 'r-ro' under writable node 'r-r'");
    g_clear_error(&err);
    g_assert_false(node_replace(b, a, &err));
    g_assert_cmpstr(err->message, ==, "Cannot replace node 'r-b': its parent 'r-ov' (driver 'overlay') cannot change its child");
    g_clear_error(&err);
    g_assert_true(block_user_node(u) == r);
    g_assert_true(node_replace(r, b, &err));
    g_assert_no_error(err);
    g_assert_true(block_user_node(u) == b);
    g_assert_cmpuint(node_user_count(r), ==, 0);
    g_assert_cmpuint(node_user_count(b), ==, 1);
    block_user_free(u);
    g_assert_true(node_delete("r-ov", NULL));
    g_assert_true(node_delete("r-r", NULL));
    g_assert_true(node_delete("r-a", NULL));
    g_assert_true(node_delete("r-s", NULL));
    g_assert_true(node_delete("r-b", NULL));
    g_assert_true(node_delete("r-ro", NULL));
}

/* A parent edge moves: raw over A reads B afterwards; A no longer has a
 * parent.  Then, as a snapshot does, a new raw node over B replaces B: the
 * top raw node's edge moves to it, its own edge to B stays (no cycle). */
static void test_replace_parent_edges(void)
{
    BlockNode *a = create("{\"driver\": \"memory\", \"node-name\": \"p-a\", \"size\": 1048576}");
    BlockNode *b = create("{\"driver\": \"memory\", \"node-name\": \"p-b\", \"size\": 1048576}");
    BlockNode *top = create("{\"driver\": \"raw\", \"node-name\": \"p-top\", \"file\": \"p-a\"}");
    char ca = 'a', cb = 'b';
    g_assert_cmpint(node_pwrite(a, &ca, 1, 4096, 0), ==, 0);
    g_assert_cmpint(node_pwrite(b, &cb, 1, 4096, 0), ==, 0);
    BlockUser *u = block_user_new(top, "user", BLOCK_PERM_CONSISTENT_READ | BLOCK_PERM_WRITE, BLOCK_PERM_ALL, NULL);
    g_assert_cmpint(byte_at(top, 4096), ==, 'a');
    GError *err = NULL;
    g_assert_true(node_replace(a, b, &err));
    g_assert_no_error(err);
    g_assert_cmpint(byte_at(top, 4096), ==, 'b');
    g_assert_false(node_has_parent(a));
    g_assert_true(node_has_parent(b));
    g_assert_true(block_user_node(u) == top);   /* users above stay where they are */
    char cw = 'w';
    g_assert_cmpint(node_pwrite(top, &cw, 1, 8192, 0), ==, 0);
    g_assert_cmpint(byte_at(b, 8192), ==, 'w');
    g_assert_cmpint(byte_at(a, 8192), ==, 0);

    BlockNode *mid = create("{\"driver\": \"raw\", \"node-name\": \"p-mid\", \"file\": \"p-b\"}");
    g_assert_true(node_replace(b, mid, &err));
    g_assert_no_error(err);
    GPtrArray *above = node_ancestors(b);    /* b, mid, top */
    g_assert_cmpuint(above->len, ==, 3);
    g_ptr_array_unref(above);
    above = node_ancestors(mid);              /* mid, top */
    g_assert_cmpuint(above->len, ==, 2);
    g_ptr_array_unref(above);
    g_assert_cmpint(byte_at(top, 4096), ==, 'b');
    block_user_free(u);
    g_assert_true(node_delete("p-top", NULL));
    g_assert_true(node_delete("p-mid", NULL));
    g_assert_true(node_delete("p-a", NULL));
    g_assert_true(node_delete("p-b", NULL));
}

/* Requests count themselves on the node they got; replace checks none is
 * in flight on either node while it moves the users. */
static gint on_node[2];
static BlockNode *nodes[2];
static gint stop_flag;

typedef struct Worker {
    BlockUser *user;
    unsigned requests;
} Worker;

static gpointer worker(gpointer opaque)
{
    Worker *w = opaque;
    char buf[4096];
    memset(buf, 0x5a, sizeof buf);
    while (!g_atomic_int_get(&stop_flag)) {
        BlockNode *n = block_user_begin(w->user);
        int i = n == nodes[1];
        g_assert_true(n == nodes[0] || n == nodes[1]);
        g_atomic_int_inc(&on_node[i]);
        g_assert_cmpint(node_pwrite(n, buf, sizeof buf, (w->requests % 256) * 4096, 0), ==, 0);
        g_atomic_int_add(&on_node[i], -1);
        block_user_end(w->user, 0);
        w->requests++;
    }
    return NULL;
}

static void test_replace_under_load(void)
{
    nodes[0] = create("{\"driver\": \"memory\", \"node-name\": \"l-a\", \"size\": 1048576}");
    nodes[1] = create("{\"driver\": \"memory\", \"node-name\": \"l-b\", \"size\": 1048576}");
    Worker w[4];
    GThread *t[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (Worker){ .user = block_user_new(nodes[0], "worker", 0, BLOCK_PERM_ALL, NULL) };
        t[i] = g_thread_new("worker", worker, &w[i]);
    }
    for (int k = 0; k < 200; k++) {
        int from = k % 2;
        node_drain_begin(nodes[from]);
        g_assert_cmpint(g_atomic_int_get(&on_node[from]), ==, 0);
        GError *err = NULL;
        g_assert_true(node_replace(nodes[from], nodes[!from], &err));
        g_assert_no_error(err);
        g_assert_cmpuint(node_user_count(nodes[from]), ==, 0);
        g_assert_cmpuint(node_user_count(nodes[!from]), ==, 4);
        node_drain_end(nodes[from]);
        g_usleep(200);
    }
    g_atomic_int_set(&stop_flag, 1);
    unsigned total = 0;
    for (int i = 0; i < 4; i++) {
        g_thread_join(t[i]);
        total += w[i].requests;
        g_assert_true(block_user_node(w[i].user) == nodes[0]);
        block_user_free(w[i].user);
    }
    g_assert_cmpuint(total, >, 0);
    g_assert_true(node_delete("l-a", NULL));
    g_assert_true(node_delete("l-b", NULL));
}

/* Parent edges under load: readers through a raw node whose child flips
 * between two memory nodes holding different bytes; every read sees one
 * node's byte or the other's (never a torn or failed request), and after
 * an even number of flips the raw node reads the first again. */
static gpointer edge_reader(gpointer opaque)
{
    Worker *w = opaque;
    while (!g_atomic_int_get(&stop_flag)) {
        BlockNode *n = block_user_begin(w->user);
        char buf[512];
        g_assert_cmpint(node_pread(n, buf, sizeof buf, 0), ==, 0);
        g_assert_true(buf[0] == 'a' || buf[0] == 'b');
        g_assert_cmpint(buf[511], ==, buf[0]);
        block_user_end(w->user, 0);
        w->requests++;
    }
    return NULL;
}

static void test_replace_parent_edges_under_load(void)
{
    BlockNode *a = create("{\"driver\": \"memory\", \"node-name\": \"e-a\", \"size\": 1048576}");
    BlockNode *b = create("{\"driver\": \"memory\", \"node-name\": \"e-b\", \"size\": 1048576}");
    BlockNode *top = create("{\"driver\": \"raw\", \"node-name\": \"e-top\", \"file\": \"e-a\"}");
    char fill[512];
    memset(fill, 'a', sizeof fill);
    g_assert_cmpint(node_pwrite(a, fill, sizeof fill, 0, 0), ==, 0);
    memset(fill, 'b', sizeof fill);
    g_assert_cmpint(node_pwrite(b, fill, sizeof fill, 0, 0), ==, 0);
    g_atomic_int_set(&stop_flag, 0);
    Worker w[3];
    GThread *t[3];
    for (int i = 0; i < 3; i++) {
        w[i] = (Worker){ .user = block_user_new(top, "reader", BLOCK_PERM_CONSISTENT_READ, BLOCK_PERM_ALL, NULL) };
        t[i] = g_thread_new("reader", edge_reader, &w[i]);
    }
    BlockNode *pair[2] = { a, b };
    for (int k = 0; k < 200; k++) {
        GError *err = NULL;
        g_assert_true(node_replace(pair[k % 2], pair[!(k % 2)], &err));
        g_assert_no_error(err);
        g_usleep(200);
    }
    g_atomic_int_set(&stop_flag, 1);
    unsigned total = 0;
    for (int i = 0; i < 3; i++) {
        g_thread_join(t[i]);
        total += w[i].requests;
        block_user_free(w[i].user);
    }
    g_assert_cmpuint(total, >, 0);
    char c = 0;
    g_assert_cmpint(node_pread(top, &c, 1, 0), ==, 0);
    g_assert_cmpint(c, ==, 'a');
    g_assert_true(node_delete("e-top", NULL));
    g_assert_true(node_delete("e-a", NULL));
    g_assert_true(node_delete("e-b", NULL));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/user/drain-holds-users-above", test_drain_holds_users_above);
    g_test_add_func("/user/drain-waits-for-requests", test_drain_waits_for_requests);
    g_test_add_func("/user/replace-refusals", test_replace_refusals);
    g_test_add_func("/user/replace-parent-edges", test_replace_parent_edges);
    g_test_add_func("/user/replace-under-load", test_replace_under_load);
    g_test_add_func("/user/replace-parent-edges-under-load", test_replace_parent_edges_under_load);
    int r = g_test_run();
    node_graph_shutdown();
    return r;
}

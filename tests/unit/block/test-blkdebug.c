/* The blkdebug driver through the node layer, over a memory node: a
 * `once` rule fails exactly one of many concurrent reads, and the rule and
 * state lists survive close. */
#include <errno.h>
#include <string.h>
#include <glib.h>
#include <json-glib/json-glib.h>

#include "block/node.h"
#include "tests/unit/node-json.h"
#include "block/debug-event.h"
#include "qapi/qapi-types.h"

static BlockNode *create(const char *json)
{
    GError *err = NULL;
    BlockNode *n = test_node_create_text(json, &err);
    g_assert_no_error(err);
    return n;
}

typedef struct Reader {
    BlockNode *node;
    int failures;
} Reader;

static gpointer read_many(gpointer opaque)
{
    Reader *r = opaque;
    char buf[512];
    for (int i = 0; i < 200; i++) {
        int ret = node_pread(r->node, buf, sizeof buf, (uint64_t)(i % 64) * 512);
        g_assert_true(ret == 0 || ret == -ENOSPC);
        r->failures += ret != 0;
    }
    return NULL;
}

static void test_once_concurrent(void)
{
    create("{\"driver\": \"memory\", \"node-name\": \"m\", \"size\": 1048576}");
    create("{\"driver\": \"blkdebug\", \"node-name\": \"d\", \"image\": \"m\","
           " \"inject-error\": [{\"event\": \"read_aio\", \"once\": true, \"errno\": 28}]}");
    BlockNode *raw = create("{\"driver\": \"raw\", \"node-name\": \"r\", \"file\": \"d\"}");
    Reader readers[4] = { { raw, 0 }, { raw, 0 }, { raw, 0 }, { raw, 0 } };
    GThread *threads[4];
    for (int i = 0; i < 4; i++)
        threads[i] = g_thread_new("reader", read_many, &readers[i]);
    int failures = 0;
    for (int i = 0; i < 4; i++) {
        g_thread_join(threads[i]);
        failures += readers[i].failures;
    }
    g_assert_cmpint(failures, ==, 1);
    /* The rule is gone: later events do not bring it back. */
    char buf[512];
    g_assert_cmpint(node_pread(raw, buf, sizeof buf, 0), ==, 0);
    g_assert_true(node_delete("r", NULL));
    g_assert_true(node_delete("d", NULL));
    g_assert_true(node_delete("m", NULL));
}

static void test_state_machine(void)
{
    create("{\"driver\": \"memory\", \"node-name\": \"m2\", \"size\": 1048576}");
    /* Writes fail with EPERM in state 2, which the first write enters. */
    create("{\"driver\": \"blkdebug\", \"node-name\": \"d2\", \"image\": \"m2\","
           " \"inject-error\": [{\"event\": \"pwritev\", \"state\": 2, \"errno\": 1, \"iotype\": \"write\"}],"
           " \"set-state\": [{\"event\": \"pwritev_done\", \"state\": 1, \"new_state\": 2}]}");
    BlockNode *d = node_find("d2");
    char buf[512] = { 0 };
    g_assert_cmpint(node_pwrite(d, buf, sizeof buf, 0, 0), ==, 0);
    g_assert_cmpint(node_pwrite(d, buf, sizeof buf, 0, 0), ==, -EPERM);
    g_assert_cmpint(node_pread(d, buf, sizeof buf, 0), ==, 0);
    g_assert_cmpint(node_zero(d, 4096, 0, 0), ==, 0); /* iotype write only */
    g_assert_true(node_delete("d2", NULL));
    g_assert_true(node_delete("m2", NULL));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    block_drivers_init();
    g_test_add_func("/blkdebug/once-concurrent", test_once_concurrent);
    g_test_add_func("/blkdebug/state-machine", test_state_machine);
    int rc = g_test_run();
    node_graph_shutdown();
    return rc;
}

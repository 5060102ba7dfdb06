/* Fuzz target "qmp": the QMP monitor (server/qmp/) as a client sees it:
 * framing (json-stream.c), the envelope, capabilities negotiation,
 * argument parsing by the generated code and the command handlers.
 *
 * Input: the bytes a client sends after the greeting, over a real
 * connection to a real monitor socket, while the harness reads every
 * reply.  The daemon has a 1 MiB memory node "mem0", a 1 GiB null-co node
 * "null0", a 1 MiB file node "file0" (an image in the harness's directory,
 * so persistent bitmaps get a sidecar file) and a running NBD server
 * without listeners, so blockdev-add, bitmaps, exports and transactions
 * really run; everything the input created (sidecar included) is torn
 * down after each input.
 *
 * Inputs that would act outside the process are rejected before they
 * are sent (found with the monitor's own splitter and json-glib, so the
 * check sees exactly the messages the monitor will): quit,
 * nbd-server-start, block jobs (threads, files, NBD connections, also as
 * transaction actions), drivers other than memory/null-co/raw/qcow2/overlay/
 * blkdebug (file, nbd, nbdkit reach files, sockets and programs), and the
 * members dir/filename/path/config (blkdebug's config is a file to read).  A new command that acts outside the process must be
 * added to forbidden_commands. */
#include "tests/fuzz/fuzz.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <glib.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include "block/node.h"
#include "jobs/job.h"
#include "block/driver.h"
#include "server/export.h"
#include "server/keyval.h"
#include "server/nbd/nbd-server.h"
#include "server/nbd-control.h"
#include "objects/objects.h"
#include "server/qmp/commands.h"
#include "server/qmp/json-stream.h"
#include "server/qmp/monitor.h"

static char *socket_path, *image_path, *sidecar_path;
static bool verbose;   /* FUZZ_VERBOSE=1: print the replies (to debug a finding) */

/* ---- the input filter ---- */

/* Commands that leave the process: quit ends it, nbd-server-start listens
 * on sockets, block jobs start threads that write files and connect to NBD
 * servers.  Everything else (unknown names included) is sent. */
static const char *const forbidden_commands[] = {
    "quit", "nbd-server-start", "blockdev-backup", "drive-backup", "blockdev-mirror", "drive-mirror", NULL,
};
static const char *const allowed_drivers[] = { "memory", "null-co", "raw", "qcow2", "overlay", "blkdebug", NULL };
static const char *const forbidden_types[] = { "blockdev-backup", "drive-backup", NULL };
static const char *const forbidden_members[] = { "dir", "filename", "path", "config", NULL };

static bool listed(const char *const list[], const char *s)
{
    for (int i = 0; list[i]; i++)
        if (strcmp(list[i], s) == 0)
            return true;
    return false;
}

static const char *string_member(JsonObject *o, const char *name)
{
    JsonNode *n = json_object_get_member(o, name);
    return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
               ? json_node_get_string(n) : NULL;
}

static bool node_is_safe(JsonNode *node);

static bool object_is_safe(JsonObject *o)
{
    const char *driver = string_member(o, "driver");
    const char *type = string_member(o, "type");
    if ((driver && !listed(allowed_drivers, driver)) || (type && listed(forbidden_types, type)))
        return false;
    g_autoptr(GList) members = json_object_get_members(o);
    for (GList *l = members; l; l = l->next)
        if (listed(forbidden_members, l->data) || !node_is_safe(json_object_get_member(o, l->data)))
            return false;
    return true;
}

static bool node_is_safe(JsonNode *node)
{
    if (JSON_NODE_HOLDS_OBJECT(node))
        return object_is_safe(json_node_get_object(node));
    if (JSON_NODE_HOLDS_ARRAY(node)) {
        JsonArray *a = json_node_get_array(node);
        for (guint i = 0; i < json_array_get_length(a); i++)
            if (!node_is_safe(json_array_get_element(a, i)))
                return false;
    }
    return true;
}

static void check_message(const char *text, size_t len, const char *error, void *opaque)
{
    bool *safe = opaque;
    if (!text || !*safe)
        return;
    g_autoptr(JsonParser) parser = json_parser_new_immutable();
    if (!json_parser_load_from_data(parser, text, (gssize)len, NULL))
        return;
    JsonNode *root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root))
        return;
    const char *cmd = string_member(json_node_get_object(root), "execute");
    if ((cmd && listed(forbidden_commands, cmd)) || !node_is_safe(root))
        *safe = false;
}

static bool input_is_safe(const uint8_t *data, size_t size)
{
    bool safe = true;
    JsonStream *js = json_stream_new(check_message, &safe);
    json_stream_feed(js, (const char *)data, size);
    json_stream_free(js);
    return safe;
}

/* ---- the daemon's state ---- */

static void add_from_keyval(bool (*add)(JsonObject *, GError **), const char *text)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonObject) opts = keyval_parse(text, &err);
    if (!opts || !add(opts, &err))
        g_error("fuzz: %s: %s", text, err->message);
}

static void pump(void)
{
    while (g_main_context_iteration(NULL, FALSE))
        ;
}

static void state_create(void)
{
    add_from_keyval(qmp_cli_blockdev, "driver=memory,node-name=mem0,size=1M");
    add_from_keyval(qmp_cli_blockdev, "driver=null-co,node-name=null0,size=1073741824");
    g_autofree char *file = g_strdup_printf("driver=file,node-name=file0,filename=%s", image_path);
    add_from_keyval(qmp_cli_blockdev, file);
    if (!nbd_control_running())
        nbd_control_adopt(nbd_server_new(0, 0)); /* no handshake limit: no main loop runs */
}

static void state_destroy(void)
{
    pump();
    job_shutdown_all();
    export_remove_all();
    pump();
    qmp_block_forget_all();
    node_graph_shutdown();
    objects_remove_all();
    pump();
    /* Persistent bitmaps were written out when file0 closed. */
    g_unlink(sidecar_path);
}

/* ---- one session ---- */

typedef struct Client {
    const uint8_t *data;
    size_t left;
    bool sent_all;    /* the input is sent and the stream ended */
    bool done;        /* the monitor closed the session */
} Client;

/* Reads (and drops) every reply, sends the input as the socket takes it. */
static gboolean on_client(gint fd, GIOCondition cond, gpointer opaque)
{
    Client *c = opaque;
    char buf[65536];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0 && verbose)
            fwrite(buf, 1, (size_t)n, stderr);
        if (n > 0 || (n < 0 && errno == EINTR))
            continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            c->done = true;
            return G_SOURCE_REMOVE;
        }
        break;
    }
    if (c->sent_all)
        return G_SOURCE_CONTINUE;
    while (c->left > 0) {
        ssize_t n = send(fd, c->data, c->left, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return G_SOURCE_CONTINUE;
        if (n < 0)
            break; /* the monitor is gone; its close arrives as end of stream */
        c->data += n;
        c->left -= (size_t)n;
    }
    c->sent_all = true;
    shutdown(fd, SHUT_WR);
    /* From now on only replies and the hang-up matter. */
    g_unix_fd_add(fd, G_IO_IN | G_IO_HUP | G_IO_ERR, on_client, c);
    return G_SOURCE_REMOVE;
}

static int qmp_one(const uint8_t *data, size_t size)
{
    if (!input_is_safe(data, size))
        return -1;
    Client c = { .data = data, .left = size };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    g_strlcpy(addr.sun_path, socket_path, sizeof addr.sun_path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        g_error("fuzz: cannot connect to the monitor: %s", g_strerror(errno));
    g_unix_fd_add(fd, G_IO_IN | G_IO_OUT | G_IO_HUP | G_IO_ERR, on_client, &c);
    while (!c.done)
        g_main_context_iteration(NULL, TRUE);
    close(fd);
    state_destroy();
    state_create();
    return 0;
}

static void qmp_init(void)
{
    block_drivers_init();
    verbose = g_getenv("FUZZ_VERBOSE") != NULL;
    socket_path = g_build_filename(fuzz_tmpdir(), "qmp.sock", NULL);
    image_path = g_build_filename(fuzz_tmpdir(), "disk.img", NULL);
    sidecar_path = g_strconcat(image_path, ".bitmaps", NULL);
    int fd = open(image_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, 1 << 20) < 0)
        g_error("fuzz: %s: %s", image_path, g_strerror(errno));
    close(fd);
    g_autofree char *chardev = g_strdup_printf("socket,id=fuzz,path=%s,server=on,wait=off", socket_path);
    g_autoptr(GError) err = NULL;
    if (!qmp_chardev_add(chardev, &err) || !qmp_monitor_add("chardev=fuzz", &err))
        g_error("fuzz: cannot start the monitor: %s", err->message);
    state_create();
}

static void qmp_cleanup(void)
{
    qmp_monitors_shutdown();
    nbd_control_shutdown();
    state_destroy();
    g_clear_pointer(&socket_path, g_free);
    g_clear_pointer(&image_path, g_free);
    g_clear_pointer(&sidecar_path, g_free);
    fuzz_tmpdir_remove();
}

const FuzzTarget fuzz_target_qmp = {
    .name = "qmp",
    .init = qmp_init,
    .one = qmp_one,
    .cleanup = qmp_cleanup,
};

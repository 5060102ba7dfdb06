/* blockctl: a command-line QMP client for blockd (and qemu-storage-daemon).
 *
 *   blockctl [-s SOCKET] [--json] nodes|exports|add-file|export|unexport|qmp|events|
 *                                 backup|mirror|jobs|job ...
 *
 * Prints tables for people by default and raw JSON with --json. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include "block/nbd-uri.h"
#include "block/options.h"

typedef struct Client {
    int fd;
    GString *in;   /* bytes received, not yet split into lines */
} Client;

static const char *socket_path;
static gboolean json_output;

/* The usage of the command being run (for usage_error). */
static const char *current_usage;

/* Prints "blockctl: MESSAGE" (and with `usage`, the command's usage), exits. */
static void G_GNUC_NORETURN vexit_with(int status, bool usage, const char *fmt, va_list ap)
{
    fputs("blockctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    if (usage && current_usage)
        fprintf(stderr, "usage: blockctl %s\n", current_usage);
    exit(status);
}

static void die(const char *fmt, ...) G_GNUC_PRINTF(1, 2) G_GNUC_NORETURN;
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vexit_with(EXIT_FAILURE, false, fmt, ap);
}

/* A mistake on the command line: the message and the usage, exit status 2. */
static void usage_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2) G_GNUC_NORETURN;
static void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vexit_with(2, true, fmt, ap);
}

/* --speed: bytes per second, with k/M/G suffixes (1024-based, as QEMU's sizes). */
static gint64 parse_speed(const char *text)
{
    uint64_t bytes;
    if (!block_parse_size(text, &bytes) || bytes > G_MAXINT64)
        usage_error("bad --speed '%s': bytes per second, optionally with k, M or G", text);
    return (gint64)bytes;
}

/* The next message from the daemon (one JSON object per line). */
static JsonNode *client_recv(Client *c)
{
    for (;;) {
        char *nl = memchr(c->in->str, '\n', c->in->len);
        if (nl) {
            size_t len = (size_t)(nl - c->in->str);
            g_autoptr(JsonParser) p = json_parser_new();
            GError *err = NULL;
            if (!json_parser_load_from_data(p, c->in->str, (gssize)len, &err))
                die("bad reply from the daemon: %s", err->message);
            g_string_erase(c->in, 0, (gssize)len + 1);
            return json_node_copy(json_parser_get_root(p));
        }
        char buf[65536];
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            die("the daemon closed the connection");
        g_string_append_len(c->in, buf, n);
    }
}

static void client_send(Client *c, const char *text)
{
    size_t len = strlen(text);
    while (len > 0) {
        ssize_t n = write(c->fd, text, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("cannot write to %s: %s", socket_path, g_strerror(errno));
        text += n;
        len -= (size_t)n;
    }
}

/* Runs one command; returns the "return" value or exits with the QMP error. */
static JsonNode *client_execute(Client *c, const char *name, JsonObject *args)
{
    JsonObject *msg = json_object_new();
    json_object_set_string_member(msg, "execute", name);
    if (args)
        json_object_set_object_member(msg, "arguments", json_object_ref(args));
    JsonNode *node = json_node_init_object(json_node_alloc(), msg);
    g_autofree char *text = json_to_string(node, FALSE);
    json_node_unref(node);
    json_object_unref(msg);
    client_send(c, text);
    for (;;) {
        JsonNode *reply = client_recv(c);
        JsonObject *r = json_node_get_object(reply);
        if (json_object_has_member(r, "return")) {
            JsonNode *ret = json_node_copy(json_object_get_member(r, "return"));
            json_node_unref(reply);
            return ret;
        }
        if (json_object_has_member(r, "error")) {
            JsonObject *e = json_object_get_object_member(r, "error");
            fprintf(stderr, "blockctl: %s: %s (%s)\n", name, json_object_get_string_member(e, "desc"),
                    json_object_get_string_member(e, "class"));
            exit(EXIT_FAILURE);
        }
        json_node_unref(reply);  /* an event: not for us */
    }
}

static Client *client_connect(void)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen(socket_path) >= sizeof addr.sun_path)
        die("socket path too long: %s", socket_path);
    strcpy(addr.sun_path, socket_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("cannot connect to %s: %s\n"
            "Is blockd running with --chardev socket,id=m0,path=%s,server=on,wait=off --monitor chardev=m0?",
            socket_path, g_strerror(errno), socket_path);
    static Client client;  /* lives until exit */
    Client *c = &client;
    c->fd = fd;
    c->in = g_string_new(NULL);
    JsonNode *greeting = client_recv(c);
    if (!JSON_NODE_HOLDS_OBJECT(greeting) || !json_object_has_member(json_node_get_object(greeting), "QMP"))
        die("%s does not speak QMP", socket_path);
    json_node_unref(greeting);
    json_node_unref(client_execute(c, "qmp_capabilities", NULL));
    return c;
}

static void print_json(JsonNode *node)
{
    g_autofree char *text = json_to_string(node, TRUE);
    printf("%s\n", text);
}

static const char *str_member(JsonObject *o, const char *key)
{
    JsonNode *n = json_object_get_member(o, key);
    return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
               ? json_node_get_string(n) : "-";
}

static int cmd_nodes(Client *c)
{
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_boolean_member(args, "flat", TRUE);
    JsonNode *ret = client_execute(c, "query-named-block-nodes", args);
    if (json_output) {
        print_json(ret);
    } else {
        printf("%-20s %-10s %16s %-3s %s\n", "NODE", "DRIVER", "SIZE", "RO", "FILE");
        JsonArray *a = json_node_get_array(ret);
        for (guint i = 0; i < json_array_get_length(a); i++) {
            JsonObject *n = json_array_get_object_element(a, i);
            JsonObject *img = json_object_get_object_member(n, "image");
            printf("%-20s %-10s %16" G_GINT64_FORMAT " %-3s %s\n", str_member(n, "node-name"),
                   str_member(n, "drv"), img ? json_object_get_int_member(img, "virtual-size") : 0,
                   json_object_get_boolean_member(n, "ro") ? "yes" : "no", str_member(n, "file"));
        }
    }
    json_node_unref(ret);
    return 0;
}

static int cmd_exports(Client *c)
{
    JsonNode *ret = client_execute(c, "query-block-exports", NULL);
    if (json_output) {
        print_json(ret);
    } else {
        printf("%-20s %-6s %-20s %s\n", "ID", "TYPE", "NODE", "SHUTTING-DOWN");
        JsonArray *a = json_node_get_array(ret);
        for (guint i = 0; i < json_array_get_length(a); i++) {
            JsonObject *e = json_array_get_object_element(a, i);
            printf("%-20s %-6s %-20s %s\n", str_member(e, "id"), str_member(e, "type"),
                   str_member(e, "node-name"), json_object_get_boolean_member(e, "shutting-down") ? "yes" : "no");
        }
    }
    json_node_unref(ret);
    return 0;
}

/* Prints {} results as "OK" for people, or the JSON. */
static int print_done(JsonNode *ret, const char *what)
{
    if (json_output)
        print_json(ret);
    else
        printf("%s\n", what);
    json_node_unref(ret);
    return 0;
}

static int cmd_add_file(Client *c, int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[2], "read-only") != 0)
        usage_error("unexpected '%s'", argv[2]);
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "driver", "file");
    json_object_set_string_member(args, "node-name", argv[0]);
    json_object_set_string_member(args, "filename", argv[1]);
    if (argc > 2)
        json_object_set_boolean_member(args, "read-only", TRUE);
    return print_done(client_execute(c, "blockdev-add", args), "added node");
}

static int cmd_export(Client *c, int argc, char **argv)
{
    /* NODE [NAME] [writable]: the last word may only be "writable". */
    bool writable = argc > 1 && strcmp(argv[argc - 1], "writable") == 0;
    int words = argc - writable;
    if (words > 2)
        usage_error("unexpected '%s'", argv[2]);
    const char *name = words > 1 ? argv[1] : argv[0];
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "type", "nbd");
    json_object_set_string_member(args, "id", name);
    json_object_set_string_member(args, "node-name", argv[0]);
    json_object_set_string_member(args, "name", name);
    if (writable)
        json_object_set_boolean_member(args, "writable", TRUE);
    return print_done(client_execute(c, "block-export-add", args), "exported");
}

static int cmd_unexport(Client *c, int argc, char **argv)
{
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "id", argv[0]);
    return print_done(client_execute(c, "block-export-del", args), "removed export");
}

/* qmp '{"execute": ...}' or qmp COMMAND ['{ARGS}']: prints the return value as JSON. */
static int cmd_qmp(Client *c, int argc, char **argv)
{
    g_autoptr(JsonParser) p = json_parser_new();
    const char *name = argv[0];
    JsonObject *args = NULL;
    if (argv[0][0] == '{') {
        GError *err = NULL;
        if (!json_parser_load_from_data(p, argv[0], -1, &err))
            die("invalid JSON: %s", err->message);
        JsonObject *o = json_node_get_object(json_parser_get_root(p));
        if (!o || !json_object_has_member(o, "execute"))
            die("the message needs \"execute\"");
        name = json_object_get_string_member(o, "execute");
        args = json_object_has_member(o, "arguments") ? json_object_get_object_member(o, "arguments") : NULL;
    } else if (argc > 1) {
        GError *err = NULL;
        if (!json_parser_load_from_data(p, argv[1], -1, &err) || !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)))
            die("arguments must be a JSON object");
        args = json_node_get_object(json_parser_get_root(p));
    }
    JsonNode *ret = client_execute(c, name, args);
    print_json(ret);
    json_node_unref(ret);
    return 0;
}

/* Prints events as they arrive until the daemon goes away (then exits). */
static G_GNUC_NORETURN void cmd_events(Client *c)
{
    for (;;) {
        JsonNode *msg = client_recv(c);
        JsonObject *o = json_node_get_object(msg);
        if (json_object_has_member(o, "event")) {
            if (json_output) {
                g_autofree char *text = json_to_string(msg, FALSE);
                printf("%s\n", text);
            } else {
                JsonObject *ts = json_object_get_object_member(o, "timestamp");
                JsonNode *data = json_object_get_member(o, "data");
                g_autofree char *d = data ? json_to_string(data, FALSE) : g_strdup("");
                printf("%" G_GINT64_FORMAT ".%06" G_GINT64_FORMAT " %s %s\n",
                       json_object_get_int_member(ts, "seconds"),
                       json_object_get_int_member(ts, "microseconds"),
                       json_object_get_string_member(o, "event"), d);
            }
            fflush(stdout);
        }
        json_node_unref(msg);
    }
}

/* --- Block jobs: backup, jobs, job pause|resume|cancel --- */

static const char *human_size(double bytes, char *buf, size_t len)
{
    const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    int u = 0;
    while (bytes >= 1024 && u < 4) {
        bytes /= 1024;
        u++;
    }
    snprintf(buf, len, "%.1f %s", bytes, units[u]);
    return buf;
}

static int cmd_jobs(Client *c)
{
    JsonNode *ret = client_execute(c, "query-block-jobs", NULL);
    if (json_output) {
        print_json(ret);
    } else {
        printf("%-16s %-8s %-10s %8s %22s %12s %s\n", "ID", "TYPE", "STATUS", "DONE", "BYTES", "SPEED", "IO");
        JsonArray *a = json_node_get_array(ret);
        for (guint i = 0; i < json_array_get_length(a); i++) {
            JsonObject *j = json_array_get_object_element(a, i);
            gint64 len = json_object_get_int_member(j, "len"), off = json_object_get_int_member(j, "offset");
            char b1[32], b2[32], sp[32];
            g_autofree char *bytes = g_strdup_printf("%s/%s", human_size((double)off, b1, sizeof b1),
                                                     human_size((double)len, b2, sizeof b2));
            gint64 speed = json_object_get_int_member(j, "speed");
            printf("%-16s %-8s %-10s %7.1f%% %22s %12s %s\n", str_member(j, "device"), str_member(j, "type"),
                   str_member(j, "status"), len ? 100.0 * (double)off / (double)len : 0.0, bytes,
                   speed ? human_size((double)speed, sp, sizeof sp) : "unlimited", str_member(j, "io-status"));
        }
    }
    json_node_unref(ret);
    return 0;
}

static int cmd_job(Client *c, int argc, char **argv)
{
    if (strcmp(argv[0], "pause") && strcmp(argv[0], "resume") && strcmp(argv[0], "cancel") &&
        strcmp(argv[0], "finalize") && strcmp(argv[0], "dismiss") && strcmp(argv[0], "complete"))
        usage_error("unknown job verb '%s'", argv[0]);
    g_autofree char *name = g_strdup_printf("job-%s", argv[0]);
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "id", argv[1]);
    return print_done(client_execute(c, name, args), "OK");
}

/* A target given as an NBD URI becomes a new driver=nbd node (its name is
 * returned, to delete afterwards); anything else names an existing node. */
static char *backup_target_node(Client *c, const char *to, const char *prefix, bool *created)
{
    *created = false;
    if (!nbd_uri_is(to))
        return g_strdup(to);
    GError *err = NULL;
    g_autoptr(JsonObject) args = nbd_uri_to_options(to, &err);
    if (!args)
        die("%s", err->message);
    char *node = g_strdup_printf("%s-target-%d", prefix, (int)getpid());
    json_object_set_string_member(args, "node-name", node);
    json_node_unref(client_execute(c, "blockdev-add", args));
    *created = true;
    return node;
}

/* Redraws the progress line; returns the job's status. */
static void draw_progress(JsonObject *job, gint64 start_us)
{
    gint64 len = json_object_get_int_member(job, "total-progress");
    gint64 off = json_object_get_int_member(job, "current-progress");
    double secs = (double)(g_get_monotonic_time() - start_us) / 1e6;
    double rate = secs > 0 ? (double)off / secs : 0;
    int width = 30, fill = len ? (int)((double)width * (double)off / (double)len) : 0;
    char bar[64], b1[32], b2[32], b3[32];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    double eta = rate > 0 ? (double)(len - off) / rate : 0;
    fprintf(stderr, "\r[%s] %5.1f%% %s / %s  %s/s  ETA %.0fs   ", bar,
            len ? 100.0 * (double)off / (double)len : 0.0, human_size((double)off, b1, sizeof b1),
            human_size((double)len, b2, sizeof b2), human_size(rate, b3, sizeof b3), eta);
    fflush(stderr);
}

/* Waits for the job (auto-dismiss off) to conclude; prints the outcome; 0 on success. */
static int wait_job(Client *c, const char *id)
{
    gint64 start = g_get_monotonic_time();
    bool tty = isatty(STDERR_FILENO);
    for (;;) {
        JsonNode *ret = client_execute(c, "query-jobs", NULL);
        JsonArray *a = json_node_get_array(ret);
        JsonObject *job = NULL;
        for (guint i = 0; i < json_array_get_length(a); i++)
            if (strcmp(str_member(json_array_get_object_element(a, i), "id"), id) == 0)
                job = json_array_get_object_element(a, i);
        if (!job)
            die("job %s disappeared", id);
        if (tty)
            draw_progress(job, start);
        if (strcmp(str_member(job, "status"), "concluded") == 0) {
            if (tty)
                fputc('\n', stderr);
            gint64 len = json_object_get_int_member(job, "total-progress");
            double secs = (double)(g_get_monotonic_time() - start) / 1e6;
            char b1[32], b2[32];
            int rc = 0;
            if (json_object_has_member(job, "error")) {
                fprintf(stderr, "blockctl: backup %s failed: %s\n", id, str_member(job, "error"));
                rc = 1;
            } else {
                printf("backup %s done: %s in %.2f s (%s/s)\n", id, human_size((double)len, b1, sizeof b1), secs,
                       human_size(secs > 0 ? (double)len / secs : 0, b2, sizeof b2));
            }
            json_node_unref(ret);
            g_autoptr(JsonObject) args = json_object_new();
            json_object_set_string_member(args, "id", id);
            json_node_unref(client_execute(c, "job-dismiss", args));
            return rc;
        }
        json_node_unref(ret);
        g_usleep(200 * 1000);
    }
}

/* backup NODE --to URI|NODE [--bitmap B] [--incremental] [--speed BYTES] [--job ID] [--wait] */
static int cmd_backup(Client *c, int argc, char **argv)
{
    const char *node = NULL, *to = NULL, *bitmap = NULL, *job_id = NULL, *speed = NULL;
    bool incremental = false, wait = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--to") == 0 && i + 1 < argc)
            to = argv[++i];
        else if (strcmp(a, "--bitmap") == 0 && i + 1 < argc)
            bitmap = argv[++i];
        else if (strcmp(a, "--speed") == 0 && i + 1 < argc)
            speed = argv[++i];
        else if (strcmp(a, "--job") == 0 && i + 1 < argc)
            job_id = argv[++i];
        else if (strcmp(a, "--incremental") == 0)
            incremental = true;
        else if (strcmp(a, "--wait") == 0)
            wait = true;
        else if (a[0] != '-' && !node)
            node = a;
        else
            usage_error(a[0] == '-' ? "unknown or incomplete option '%s'" : "unexpected '%s'", a);
    }
    if (!node || !to)
        usage_error("NODE and --to are required");
    if (incremental && !bitmap)
        usage_error("--incremental needs --bitmap");
    bool created;
    g_autofree char *target = backup_target_node(c, to, "backup", &created);
    g_autofree char *id = job_id ? g_strdup(job_id) : g_strdup_printf("backup-%s", node);
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "job-id", id);
    json_object_set_string_member(args, "device", node);
    json_object_set_string_member(args, "target", target);
    json_object_set_string_member(args, "sync", incremental ? "incremental" : "full");
    if (bitmap) {
        json_object_set_string_member(args, "bitmap", bitmap);
        if (!incremental)  /* a full backup that also starts the bitmap afresh */
            json_object_set_string_member(args, "bitmap-mode", "on-success");
    }
    if (speed)
        json_object_set_int_member(args, "speed", parse_speed(speed));
    if (wait)
        json_object_set_boolean_member(args, "auto-dismiss", FALSE);
    json_node_unref(client_execute(c, "blockdev-backup", args));
    if (!wait) {
        printf("started job %s (target node %s)\n", id, target);
        return 0;
    }
    int rc = wait_job(c, id);
    if (created) {
        g_autoptr(JsonObject) del = json_object_new();
        json_object_set_string_member(del, "node-name", target);
        json_node_unref(client_execute(c, "blockdev-del", del));
    }
    return rc;
}

/* The block job `id` from query-block-jobs (a new reference in *ret), or NULL. */
static JsonObject *find_block_job(Client *c, const char *id, JsonNode **ret)
{
    *ret = client_execute(c, "query-block-jobs", NULL);
    JsonArray *a = json_node_get_array(*ret);
    for (guint i = 0; i < json_array_get_length(a); i++)
        if (strcmp(str_member(json_array_get_object_element(a, i), "device"), id) == 0)
            return json_array_get_object_element(a, i);
    return NULL;
}

/* The mirror's progress line: what is still dirty (len - offset) and what was copied. */
static void draw_mirror_progress(JsonObject *job, gint64 start_us)
{
    gint64 len = json_object_get_int_member(job, "len"), off = json_object_get_int_member(job, "offset");
    double secs = (double)(g_get_monotonic_time() - start_us) / 1e6;
    int width = 30, fill = len ? (int)((double)width * (double)off / (double)len) : 0;
    char bar[64], b1[32], b2[32], b3[32];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "\r[%s] %s dirty, %s copied, %s/s  %-8s ", bar, human_size((double)(len - off), b1, sizeof b1),
            human_size((double)off, b2, sizeof b2), human_size(secs > 0 ? (double)off / secs : 0, b3, sizeof b3),
            str_member(job, "status"));
    fflush(stderr);
}

/* Polls the mirror until its status is `until` (or it concluded); returns the status reached. */
static char *wait_mirror(Client *c, const char *id, const char *until, gint64 start)
{
    bool tty = isatty(STDERR_FILENO);
    for (;;) {
        JsonNode *ret;
        JsonObject *job = find_block_job(c, id, &ret);
        if (!job)
            die("job %s disappeared", id);
        if (tty)
            draw_mirror_progress(job, start);
        char *status = g_strdup(str_member(job, "status"));
        json_node_unref(ret);
        if (strcmp(status, until) == 0 || strcmp(status, "concluded") == 0) {
            if (tty)
                fputc('\n', stderr);
            return status;
        }
        g_free(status);
        g_usleep(200 * 1000);
    }
}

/* mirror NODE --to URI|NODE [--speed B] [--job ID] [--write-blocking] [--wait] [--complete] */
static int cmd_mirror(Client *c, int argc, char **argv)
{
    const char *node = NULL, *to = NULL, *job_id = NULL, *speed = NULL;
    bool wait = false, complete = false, blocking = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--to") == 0 && i + 1 < argc)
            to = argv[++i];
        else if (strcmp(a, "--speed") == 0 && i + 1 < argc)
            speed = argv[++i];
        else if (strcmp(a, "--job") == 0 && i + 1 < argc)
            job_id = argv[++i];
        else if (strcmp(a, "--write-blocking") == 0)
            blocking = true;
        else if (strcmp(a, "--wait") == 0)
            wait = true;
        else if (strcmp(a, "--complete") == 0)
            complete = true;
        else if (a[0] != '-' && !node)
            node = a;
        else
            usage_error(a[0] == '-' ? "unknown or incomplete option '%s'" : "unexpected '%s'", a);
    }
    if (!node || !to)
        usage_error("NODE and --to are required");
    bool created;
    g_autofree char *target = backup_target_node(c, to, "mirror", &created);
    g_autofree char *id = job_id ? g_strdup(job_id) : g_strdup_printf("mirror-%s", node);
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "job-id", id);
    json_object_set_string_member(args, "device", node);
    json_object_set_string_member(args, "target", target);
    json_object_set_string_member(args, "sync", "full");
    if (blocking)
        json_object_set_string_member(args, "copy-mode", "write-blocking");
    if (speed)
        json_object_set_int_member(args, "speed", parse_speed(speed));
    if (complete)
        json_object_set_boolean_member(args, "auto-dismiss", FALSE);
    json_node_unref(client_execute(c, "blockdev-mirror", args));
    if (!wait && !complete) {
        printf("started job %s (target node %s)\n", id, target);
        return 0;
    }
    gint64 start = g_get_monotonic_time();
    g_autofree char *status = wait_mirror(c, id, "ready", start);
    if (strcmp(status, "ready") != 0)
        die("mirror %s failed before it was ready", id);
    if (!complete) {
        printf("mirror %s ready: %s and %s are in sync (complete with: blockctl job complete %s)\n",
               id, node, target, id);
        return 0;
    }
    g_autoptr(JsonObject) cargs = json_object_new();
    json_object_set_string_member(cargs, "id", id);
    json_node_unref(client_execute(c, "job-complete", cargs));
    g_free(wait_mirror(c, id, "concluded", start));
    JsonNode *ret;
    JsonObject *job = find_block_job(c, id, &ret);
    int rc = 0;
    if (job && json_object_has_member(job, "error")) {
        fprintf(stderr, "blockctl: mirror %s failed: %s\n", id, str_member(job, "error"));
        rc = 1;
    } else {
        printf("mirror %s completed in %.2f s: %s's users now use %s\n", id,
               (double)(g_get_monotonic_time() - start) / 1e6, node, target);
    }
    json_node_unref(ret);
    g_autoptr(JsonObject) dargs = json_object_new();
    json_object_set_string_member(dargs, "id", id);
    json_node_unref(client_execute(c, "job-dismiss", dargs));
    return rc;
}

/* Uniform entry points for the command table. */
static int run_nodes(Client *c, int argc, char **argv) { return cmd_nodes(c); }
static int run_exports(Client *c, int argc, char **argv) { return cmd_exports(c); }
static int run_events(Client *c, int argc, char **argv) { cmd_events(c); }
static int run_jobs(Client *c, int argc, char **argv) { return cmd_jobs(c); }

typedef struct Command {
    const char *name;
    const char *usage;    /* after "blockctl " */
    const char *help;
    int min_args, max_args; /* words after the command; max -1: checked by the command */
    int (*run)(Client *c, int argc, char **argv);
} Command;

static const Command commands[] = {
    { "nodes", "nodes", "list block nodes", 0, 0, run_nodes },
    { "exports", "exports", "list exports", 0, 0, run_exports },
    { "add-file", "add-file NODE FILE [read-only]", "add a file node", 2, 3, cmd_add_file },
    { "export", "export NODE [NAME] [writable]", "export a node over NBD", 1, 3, cmd_export },
    { "unexport", "unexport ID", "remove an export", 1, 1, cmd_unexport },
    { "qmp", "qmp '{\"execute\": NAME, \"arguments\": {...}}' | qmp COMMAND ['{ARGS}']",
      "run any QMP command, print its return value", 1, 2, cmd_qmp },
    { "events", "events", "print events as they arrive", 0, 0, run_events },
    { "backup", "backup NODE --to URI|NODE [--bitmap B] [--incremental] [--speed BYTES/S] [--job ID] [--wait]",
      "back NODE up to an NBD server or a node (progress bar with --wait); --speed takes k/M/G", 1, -1, cmd_backup },
    { "mirror", "mirror NODE --to URI|NODE [--speed BYTES/S] [--job ID] [--write-blocking] [--wait] [--complete]",
      "live-copy NODE until in sync (--wait), then switch its users (--complete)", 1, -1, cmd_mirror },
    { "jobs", "jobs", "list block jobs", 0, 0, run_jobs },
    { "job", "job pause|resume|cancel|complete|finalize|dismiss ID", "control a job", 2, 2, cmd_job },
};

static const Command *find_command(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

int main(int argc, char **argv)
{
    gboolean version = FALSE;
    GOptionEntry entries[] = {
        { "socket", 's', 0, G_OPTION_ARG_FILENAME, &socket_path, "QMP socket (default $BLOCKCTL_SOCKET)", "PATH" },
        { "json", 'j', 0, G_OPTION_ARG_NONE, &json_output, "Print JSON instead of tables", NULL },
        { "version", 'V', 0, G_OPTION_ARG_NONE, &version, "Print the version", NULL },
        { NULL },
    };
    GString *summary = g_string_new("Commands (blockctl COMMAND --help for one):\n");
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
        g_string_append_printf(summary, "  %s\n      %s\n", commands[i].usage, commands[i].help);
    GOptionContext *ctx = g_option_context_new("COMMAND [ARGS] - control blockd over QMP");
    g_option_context_add_main_entries(ctx, entries, NULL);
    /* Global options come before the command; everything after it is the
     * command's own (backup --to ...). */
    g_option_context_set_strict_posix(ctx, TRUE);
    g_option_context_set_summary(ctx, summary->str);
    GError *err = NULL;
    if (!g_option_context_parse(ctx, &argc, &argv, &err))
        usage_error("%s", err->message);
    g_option_context_free(ctx);
    g_string_free(summary, TRUE);
    if (version) {
        printf("blockctl %s\n", BLOCKD_VERSION);
        return 0;
    }
    if (argc < 2)
        usage_error("no command (try --help)");
    const Command *cmd = find_command(argv[1]);
    if (!cmd)
        usage_error("unknown command '%s' (try --help)", argv[1]);
    current_usage = cmd->usage;
    int n = argc - 2;
    char **rest = argv + 2;
    for (int i = 0; i < n; i++) {
        if (strcmp(rest[i], "--help") == 0 || strcmp(rest[i], "-h") == 0) {
            printf("usage: blockctl %s\n  %s\n", cmd->usage, cmd->help);
            return 0;
        }
    }
    if (n < cmd->min_args)
        usage_error("%s needs %s", cmd->name, cmd->min_args == 1 ? "an argument" : "more arguments");
    if (cmd->max_args >= 0 && n > cmd->max_args)
        usage_error("unexpected '%s'", rest[cmd->max_args]);
    if (!socket_path)
        socket_path = g_getenv("BLOCKCTL_SOCKET");
    if (!socket_path)
        die("no socket: use -s PATH (the --chardev path of blockd's monitor) or set BLOCKCTL_SOCKET");
    return cmd->run(client_connect(), n, rest);
}

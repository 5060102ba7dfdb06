/* nodes, exports, jobs, events. */
#include "tools/blockctl/commands.h"
#include "tools/blockctl/cli.h"
#include "tools/blockctl/nodes.h"
#include "tools/blockctl/output.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

int cmd_nodes(int argc, char **argv)
{
    int n;
    cli_parse(argc, argv, NULL, 0, 0, &n);
    g_autoptr(JsonNode) ret = nodes_query(connect_daemon());
    if (cli_json) {
        output_json(ret);
        return 0;
    }
    printf("%-20s %-10s %16s %-3s %s\n", "NODE", "DRIVER", "SIZE", "RO", "FILE");
    JsonArray *a = json_node_get_array(ret);
    for (guint i = 0; i < json_array_get_length(a); i++) {
        JsonObject *node = json_array_get_object_element(a, i);
        JsonObject *img = json_object_has_member(node, "image") ? json_object_get_object_member(node, "image") : NULL;
        printf("%-20s %-10s %16" G_GINT64_FORMAT " %-3s %s\n", output_str(node, "node-name"),
               output_str(node, "drv"), output_int(img, "virtual-size"), output_bool(node, "ro") ? "yes" : "no",
               output_str(node, "file"));
    }
    return 0;
}

int cmd_exports(int argc, char **argv)
{
    int n;
    cli_parse(argc, argv, NULL, 0, 0, &n);
    g_autoptr(JsonNode) ret = qmp_run(connect_daemon(), "query-block-exports", NULL);
    if (cli_json) {
        output_json(ret);
        return 0;
    }
    printf("%-20s %-6s %-20s %s\n", "ID", "TYPE", "NODE", "SHUTTING-DOWN");
    JsonArray *a = json_node_get_array(ret);
    for (guint i = 0; i < json_array_get_length(a); i++) {
        JsonObject *e = json_array_get_object_element(a, i);
        printf("%-20s %-6s %-20s %s\n", output_str(e, "id"), output_str(e, "type"), output_str(e, "node-name"),
               output_bool(e, "shutting-down") ? "yes" : "no");
    }
    return 0;
}

int cmd_jobs(int argc, char **argv)
{
    int n;
    cli_parse(argc, argv, NULL, 0, 0, &n);
    g_autoptr(JsonNode) ret = qmp_run(connect_daemon(), "query-block-jobs", NULL);
    if (cli_json) {
        output_json(ret);
        return 0;
    }
    printf("%-16s %-8s %-10s %8s %22s %12s %s\n", "ID", "TYPE", "STATUS", "DONE", "BYTES", "SPEED", "IO");
    JsonArray *a = json_node_get_array(ret);
    for (guint i = 0; i < json_array_get_length(a); i++) {
        JsonObject *j = json_array_get_object_element(a, i);
        gint64 len = output_int(j, "len"), off = output_int(j, "offset"), speed = output_int(j, "speed");
        char b1[32], b2[32], sp[32];
        g_autofree char *bytes = g_strdup_printf("%s/%s", output_size((double)off, b1, sizeof b1),
                                                 output_size((double)len, b2, sizeof b2));
        printf("%-16s %-8s %-10s %7.1f%% %22s %12s %s\n", output_str(j, "device"), output_str(j, "type"),
               output_str(j, "status"), len ? 100.0 * (double)off / (double)len : 0.0, bytes,
               speed ? output_size((double)speed, sp, sizeof sp) : "unlimited", output_str(j, "io-status"));
    }
    return 0;
}

/* "2025-06-01 14:03:07.123456" in local time, from an event's {seconds, microseconds}. */
static void format_timestamp(JsonObject *ts, char *buf, size_t len)
{
    time_t secs = (time_t)output_int(ts, "seconds");
    struct tm tm;
    char day[40];
    if (!ts || !localtime_r(&secs, &tm) || !strftime(day, sizeof day, "%Y-%m-%d %H:%M:%S", &tm))
        g_strlcpy(day, "(no time)", sizeof day);
    snprintf(buf, len, "%s.%06" G_GINT64_FORMAT, day, output_int(ts, "microseconds"));
}

/* Prints events as they arrive until the daemon goes away (then exits 1). */
int cmd_events(int argc, char **argv)
{
    int n;
    cli_parse(argc, argv, NULL, 0, 0, &n);
    QmpClient *c = connect_daemon();
    for (;;) {
        g_autoptr(JsonNode) msg = qmp_receive(c);
        JsonObject *o = json_node_get_object(msg);
        if (!json_object_has_member(o, "event"))
            continue;
        if (cli_json) {
            g_autofree char *text = json_to_string(msg, FALSE);
            printf("%s\n", text);
        } else {
            JsonObject *ts = json_object_has_member(o, "timestamp") ? json_object_get_object_member(o, "timestamp")
                                                                    : NULL;
            JsonNode *data = json_object_get_member(o, "data");
            g_autofree char *d = data ? json_to_string(data, FALSE) : g_strdup("");
            char when[64];
            format_timestamp(ts, when, sizeof when);
            printf("%s %s %s\n", when, output_str(o, "event"), d);
        }
        fflush(stdout);
    }
}

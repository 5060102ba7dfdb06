/* bitmap add|list|remove|clear|enable|disable|merge: dirty bitmaps
 * (block-dirty-bitmap-* and the dirty-bitmaps of query-named-block-nodes). */
#include "tools/blockctl/commands.h"
#include "tools/blockctl/cli.h"
#include "tools/blockctl/nodes.h"
#include "tools/blockctl/output.h"

#include <stdio.h>
#include <string.h>

/* bitmap add NODE NAME [--persistent] [--granularity SIZE] [--disabled] */
int cmd_bitmap_add(int argc, char **argv)
{
    bool persistent = false, disabled = false;
    const char *granularity = NULL;
    const CliOption options[] = {
        { "--persistent", NULL, &persistent },
        { "--disabled", NULL, &disabled },
        { "--granularity", &granularity, NULL },
        { NULL },
    };
    int n;
    const char *const *w = cli_parse(argc, argv, options, 2, 2, &n);
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "node", w[0]);
    json_object_set_string_member(args, "name", w[1]);
    if (granularity) {
        uint64_t g = cli_parse_size("--granularity", granularity, "bytes per bit");
        if (g > G_MAXUINT32)
            usage_error("bad --granularity '%s': at most 2G", granularity);
        json_object_set_int_member(args, "granularity", (gint64)g);
    }
    if (persistent)
        json_object_set_boolean_member(args, "persistent", TRUE);
    if (disabled)
        json_object_set_boolean_member(args, "disabled", TRUE);
    return output_done(qmp_run(connect_daemon(), "block-dirty-bitmap-add", args), "added bitmap");
}

/* Appends the named bitmaps of node entry `node` to `out` as {node, name, ...} objects. */
static void collect_bitmaps(JsonObject *node, JsonArray *out)
{
    JsonArray *a = json_object_has_member(node, "dirty-bitmaps")
                       ? json_object_get_array_member(node, "dirty-bitmaps") : NULL;
    for (guint i = 0; a && i < json_array_get_length(a); i++) {
        JsonObject *b = json_array_get_object_element(a, i);
        if (!json_object_has_member(b, "name"))
            continue;  /* a job's internal bitmap */
        JsonObject *row = json_object_new();
        json_object_set_string_member(row, "node", output_str(node, "node-name"));
        GList *members = json_object_get_members(b);
        for (GList *m = members; m; m = m->next)
            json_object_set_member(row, m->data, json_node_copy(json_object_get_member(b, m->data)));
        g_list_free(members);
        json_array_add_object_element(out, row);
    }
}

/* "recording", "disabled", then busy, persistent, inconsistent when they hold. */
static char *bitmap_state(JsonObject *b)
{
    GString *s = g_string_new(output_bool(b, "recording") ? "recording" : "disabled");
    if (output_bool(b, "busy"))
        g_string_append(s, ",busy");
    if (output_bool(b, "persistent"))
        g_string_append(s, ",persistent");
    if (output_bool(b, "inconsistent"))
        g_string_append(s, ",inconsistent");
    return g_string_free(s, FALSE);
}

/* bitmap list [NODE] */
int cmd_bitmap_list(int argc, char **argv)
{
    int n;
    const char *const *w = cli_parse(argc, argv, NULL, 0, 1, &n);
    g_autoptr(JsonNode) nodes = nodes_query(connect_daemon());
    g_autoptr(JsonArray) rows = json_array_new();
    if (n) {
        JsonObject *node = nodes_find(nodes, w[0]);
        if (!node)
            die("Cannot find device='%s' nor node-name='%s'", w[0], w[0]);
        collect_bitmaps(node, rows);
    } else {
        JsonArray *a = json_node_get_array(nodes);
        for (guint i = 0; i < json_array_get_length(a); i++)
            collect_bitmaps(json_array_get_object_element(a, i), rows);
    }
    if (cli_json) {
        g_autoptr(JsonNode) out = json_node_init_array(json_node_alloc(), rows);
        output_json(out);
        return 0;
    }
    printf("%-16s %-20s %11s %16s %s\n", "NODE", "NAME", "GRANULARITY", "DIRTY", "STATE");
    for (guint i = 0; i < json_array_get_length(rows); i++) {
        JsonObject *b = json_array_get_object_element(rows, i);
        g_autofree char *state = bitmap_state(b);
        printf("%-16s %-20s %11" G_GINT64_FORMAT " %16" G_GINT64_FORMAT " %s\n", output_str(b, "node"),
               output_str(b, "name"), output_int(b, "granularity"), output_int(b, "count"), state);
    }
    return 0;
}

/* bitmap VERB NODE NAME for block-dirty-bitmap-VERB. */
static int node_and_name(int argc, char **argv, const char *verb, const char *done)
{
    int n;
    const char *const *w = cli_parse(argc, argv, NULL, 2, 2, &n);
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "node", w[0]);
    json_object_set_string_member(args, "name", w[1]);
    g_autofree char *command = g_strdup_printf("block-dirty-bitmap-%s", verb);
    return output_done(qmp_run(connect_daemon(), command, args), done);
}

int cmd_bitmap_remove(int argc, char **argv) { return node_and_name(argc, argv, "remove", "removed bitmap"); }
int cmd_bitmap_clear(int argc, char **argv) { return node_and_name(argc, argv, "clear", "cleared bitmap"); }
int cmd_bitmap_enable(int argc, char **argv) { return node_and_name(argc, argv, "enable", "enabled bitmap"); }
int cmd_bitmap_disable(int argc, char **argv) { return node_and_name(argc, argv, "disable", "disabled bitmap"); }

/* bitmap merge NODE TARGET SOURCE... (all on NODE) */
int cmd_bitmap_merge(int argc, char **argv)
{
    int n;
    const char *const *w = cli_parse(argc, argv, NULL, 3, -1, &n);
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "node", w[0]);
    json_object_set_string_member(args, "target", w[1]);
    JsonArray *sources = json_array_new();
    for (int i = 2; i < n; i++)
        json_array_add_string_element(sources, w[i]);
    json_object_set_array_member(args, "bitmaps", sources);
    return output_done(qmp_run(connect_daemon(), "block-dirty-bitmap-merge", args), "merged");
}

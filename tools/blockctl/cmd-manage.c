/* add-file, export, unexport, qmp, job. */
#include "tools/blockctl/commands.h"
#include "tools/blockctl/cli.h"
#include "tools/blockctl/output.h"

#include <string.h>

/* add-file NODE FILE [read-only] */
int cmd_add_file(int argc, char **argv)
{
    int n;
    const char *const *w = cli_parse(argc, argv, NULL, 2, 3, &n);
    if (n > 2 && strcmp(w[2], "read-only") != 0)
        usage_error("unexpected '%s'", w[2]);
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "driver", "file");
    json_object_set_string_member(args, "node-name", w[0]);
    json_object_set_string_member(args, "filename", w[1]);
    if (n > 2)
        json_object_set_boolean_member(args, "read-only", TRUE);
    return output_done(qmp_run(connect_daemon(), "blockdev-add", args), "added node");
}

/* export NODE [NAME] [writable]: the last word may only be "writable". */
int cmd_export(int argc, char **argv)
{
    int n;
    const char *const *w = cli_parse(argc, argv, NULL, 1, 3, &n);
    bool writable = n > 1 && strcmp(w[n - 1], "writable") == 0;
    int words = n - writable;
    if (words > 2)
        usage_error("unexpected '%s'", w[2]);
    const char *name = words > 1 ? w[1] : w[0];
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "type", "nbd");
    json_object_set_string_member(args, "id", name);
    json_object_set_string_member(args, "node-name", w[0]);
    json_object_set_string_member(args, "name", name);
    if (writable)
        json_object_set_boolean_member(args, "writable", TRUE);
    return output_done(qmp_run(connect_daemon(), "block-export-add", args), "exported");
}

/* unexport ID */
int cmd_unexport(int argc, char **argv)
{
    int n;
    const char *const *w = cli_parse(argc, argv, NULL, 1, 1, &n);
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "id", w[0]);
    return output_done(qmp_run(connect_daemon(), "block-export-del", args), "removed export");
}

/* qmp '{"execute": ...}' or qmp COMMAND ['{ARGS}']: prints the return value as JSON. */
int cmd_qmp(int argc, char **argv)
{
    int n;
    const char *const *w = cli_parse(argc, argv, NULL, 1, 2, &n);
    g_autoptr(JsonParser) p = json_parser_new();
    const char *name = w[0];
    JsonObject *args = NULL;
    g_autoptr(GError) err = NULL;
    if (w[0][0] == '{') {
        if (n > 1)
            usage_error("unexpected '%s'", w[1]);
        if (!json_parser_load_from_data(p, w[0], -1, &err))
            usage_error("invalid JSON: %s", err->message);
        JsonNode *root = json_parser_get_root(p);
        JsonObject *o = JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
        if (!o || !json_object_has_member(o, "execute"))
            usage_error("the message needs \"execute\"");
        name = output_str(o, "execute");
        args = json_object_has_member(o, "arguments") ? json_object_get_object_member(o, "arguments") : NULL;
    } else if (n > 1) {
        if (!json_parser_load_from_data(p, w[1], -1, &err) || !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)))
            usage_error("arguments must be a JSON object");
        args = json_node_get_object(json_parser_get_root(p));
    }
    g_autoptr(JsonNode) ret = qmp_run(connect_daemon(), name, args);
    output_json(ret);
    return 0;
}

/* job pause|resume|cancel|complete|finalize|dismiss ID */
int cmd_job(int argc, char **argv)
{
    static const char *const verbs[] = { "pause", "resume", "cancel", "complete", "finalize", "dismiss", NULL };
    int n;
    const char *const *w = cli_parse(argc, argv, NULL, 2, 2, &n);
    if (!g_strv_contains(verbs, w[0]))
        usage_error("unknown job verb '%s'", w[0]);
    g_autofree char *name = g_strdup_printf("job-%s", w[0]);
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "id", w[1]);
    return output_done(qmp_run(connect_daemon(), name, args), "OK");
}

/* create and resize: new images made by the daemon (blockdev-create jobs,
 * followed to their end) and nodes resized (block_resize). */
#include "tools/blockctl/commands.h"
#include "tools/blockctl/cli.h"
#include "tools/blockctl/job-wait.h"
#include "tools/blockctl/output.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Runs blockdev-create with `options` as job `id` and waits for it; dies with the job's error. */
static void create_and_wait(QmpClient *c, const char *id, JsonObject *options)
{
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "job-id", id);
    json_object_set_object_member(args, "options", json_object_ref(options));
    json_node_unref(qmp_run(c, "blockdev-create", args));
    JobOutcome out;
    bool ok = job_wait(c, id, "concluded", false, &out);
    if (!ok) {
        g_autofree char *why = g_strdup(out.error ? out.error : out.status);
        job_outcome_clear(&out);
        die("creating the image failed: %s", why);
    }
    job_outcome_clear(&out);
}

/* create FILE SIZE [--format raw|qcow2] [--backing FILE [--backing-format FMT]]
 *        [--cluster-size SIZE] [--preallocation off|falloc|full] [--job ID] */
int cmd_create(int argc, char **argv)
{
    const char *format = "raw", *backing = NULL, *backing_format = NULL, *cluster = NULL, *prealloc = NULL;
    const char *job = NULL;
    const CliOption options[] = {
        { "--format", &format, NULL },
        { "--backing", &backing, NULL },
        { "--backing-format", &backing_format, NULL },
        { "--cluster-size", &cluster, NULL },
        { "--preallocation", &prealloc, NULL },
        { "--job", &job, NULL },
        { NULL },
    };
    int n;
    const char *const *w = cli_parse(argc, argv, options, 2, 2, &n);
    uint64_t size = cli_parse_size("SIZE", w[1], "the image's size");
    bool qcow2 = strcmp(format, "qcow2") == 0;
    if (!qcow2 && strcmp(format, "raw") != 0)
        usage_error("--format takes raw or qcow2, not '%s'", format);
    if (!qcow2 && (backing || backing_format || cluster))
        usage_error("--backing, --backing-format and --cluster-size need --format qcow2");
    if (qcow2 && prealloc && strcmp(prealloc, "off") != 0)
        usage_error("--preallocation of a qcow2 image can only be off");
    if (backing_format && !backing)
        usage_error("--backing-format needs --backing");
    uint64_t cluster_size = cluster ? cli_parse_size("--cluster-size", cluster, "the qcow2 cluster size") : 0;
    /* The daemon resolves relative names against its own directory: send an absolute one. */
    g_autofree char *cwd = g_get_current_dir();
    g_autofree char *file = g_path_is_absolute(w[0]) ? g_strdup(w[0]) : g_build_filename(cwd, w[0], NULL);
    g_autofree char *id = g_strdup(job ? job : "create");
    QmpClient *c = connect_daemon();

    job_dismiss_stale(c, id);
    /* The file first (empty for qcow2, which then writes its metadata into it). */
    g_autoptr(JsonObject) fo = json_object_new();
    json_object_set_string_member(fo, "driver", "file");
    json_object_set_string_member(fo, "filename", file);
    json_object_set_int_member(fo, "size", qcow2 ? 0 : (gint64)size);
    if (prealloc && !qcow2)
        json_object_set_string_member(fo, "preallocation", prealloc);
    create_and_wait(c, id, fo);
    if (qcow2) {
        g_autoptr(JsonObject) qo = json_object_new();
        json_object_set_string_member(qo, "driver", "qcow2");
        JsonObject *ref = json_object_new();
        json_object_set_string_member(ref, "driver", "file");
        json_object_set_string_member(ref, "filename", file);
        json_object_set_object_member(qo, "file", ref);
        json_object_set_int_member(qo, "size", (gint64)size);
        if (backing)
            json_object_set_string_member(qo, "backing-file", backing);
        if (backing_format)
            json_object_set_string_member(qo, "backing-fmt", backing_format);
        if (cluster)
            json_object_set_int_member(qo, "cluster-size", (gint64)cluster_size);
        create_and_wait(c, id, qo);
    }
    char buf[32];
    g_autofree char *done = g_strdup_printf("created %s (%s, %s)", file, format, output_size((double)size, buf,
                                                                                              sizeof buf));
    JsonNode *ret = json_node_new(JSON_NODE_OBJECT);   /* --json: {} as the commands return */
    json_node_take_object(ret, json_object_new());
    return output_done(ret, done);
}

/* resize NODE SIZE */
int cmd_resize(int argc, char **argv)
{
    int n;
    const CliOption options[] = { { NULL } };
    const char *const *w = cli_parse(argc, argv, options, 2, 2, &n);
    uint64_t size = cli_parse_size("SIZE", w[1], "the node's new size");
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "node-name", w[0]);
    json_object_set_int_member(args, "size", (gint64)size);
    char buf[32];
    g_autofree char *done = g_strdup_printf("%s is now %s (%" G_GUINT64_FORMAT " bytes)", w[0],
                                            output_size((double)size, buf, sizeof buf), size);
    return output_done(qmp_run(connect_daemon(), "block_resize", args), done);
}

/* QMP control commands: qmp_capabilities, query-version, query-commands,
 * query-qmp-schema, quit. */
#include "server/qmp/monitor.h"
#include "qapi/qapi-commands.h"

bool qmp_qmp_capabilities(QmpSession *session, q_obj_qmp_capabilities_arg *args, GError **errp)
{
    if (qmp_session_negotiated(session)) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_COMMAND_NOT_FOUND,
                    "Capabilities negotiation is already complete, command ignored");
        return false;
    }
    /* blockd offers no capabilities, so any requested one is unavailable. */
    if (args->has_enable && args->enable) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Capability '%s' not available",
                    QMPCapability_str[args->enable->value]);
        return false;
    }
    qmp_session_set_negotiated(session);
    return true;
}

bool qmp_query_version(QmpSession *session, VersionInfo **ret, GError **errp)
{
    VersionInfo *info = g_new0(VersionInfo, 1);
    info->qemu = g_new0(VersionTriple, 1);
    /* The QEMU release whose storage-daemon QMP interface blockd mirrors. */
    info->qemu->major = 7;
    info->qemu->minor = 2;
    info->qemu->micro = 0;
    info->package = g_strdup_printf("blockd %s", BLOCKD_VERSION);
    *ret = info;
    return true;
}

bool qmp_query_commands(QmpSession *session, CommandInfoList **ret, GError **errp)
{
    CommandInfoList *head = NULL, **tail = &head;
    for (const QmpCommand *c = qmp_commands; c->name; c++) {
        CommandInfoList *e = g_new0(CommandInfoList, 1);
        e->value = g_new0(CommandInfo, 1);
        e->value->name = g_strdup(c->name);
        *tail = e;
        tail = &e->next;
    }
    *ret = head;
    return true;
}

void qmp_marshal_query_qmp_schema(QmpSession *session, JsonObject *args, JsonNode **ret, GError **errp)
{
    static JsonNode *schema;  /* parsed once; main thread only */
    if (!qapi_check_no_args(args, errp))
        return;
    if (!schema) {
        g_autoptr(JsonParser) parser = json_parser_new();
        if (!json_parser_load_from_data(parser, qapi_introspection_json, -1, errp))
            return;
        schema = json_node_copy(json_parser_get_root(parser));
    }
    *ret = json_node_copy(schema);
}

bool qmp_quit(QmpSession *session, GError **errp)
{
    qmp_request_quit();
    return true;
}

/* QMP object-add / object-del and the --object option: thin front ends
 * over the object registry (objects.h). */
#include "server/objects/objects.h"
#include "qapi/qapi-commands.h"
#include "server/qmp/qapi-runtime.h"

bool qmp_object_add(QmpSession *session, ObjectOptions *args, GError **errp)
{
    return object_add(args, errp);
}

bool qmp_object_del(QmpSession *session, q_obj_object_del_arg *args, GError **errp)
{
    return object_del(args->id, errp);
}

bool qmp_cli_object(JsonObject *opts, GError **errp)
{
    QapiIn in = { .keyval = true };
    g_autoptr(ObjectOptions) o = NULL;
    JsonNode *node = json_node_init_object(json_node_alloc(), opts);
    bool ok = qapi_in_ObjectOptions(&in, "", node, &o, errp) && object_add(o, errp);
    json_node_unref(node);
    return ok;
}

/* Node queries (see nodes.h). */
#include "tools/blockctl/nodes.h"
#include "tools/blockctl/cli.h"
#include "tools/blockctl/output.h"

#include <string.h>

JsonNode *nodes_query(QmpClient *c)
{
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_boolean_member(args, "flat", TRUE);
    return qmp_run(c, "query-named-block-nodes", args);
}

JsonObject *nodes_find(JsonNode *nodes, const char *name)
{
    JsonArray *a = json_node_get_array(nodes);
    for (guint i = 0; a && i < json_array_get_length(a); i++) {
        JsonObject *n = json_array_get_object_element(a, i);
        if (strcmp(output_str(n, "node-name"), name) == 0)
            return n;
    }
    return NULL;
}

JsonObject *nodes_find_bitmap(JsonObject *node, const char *name)
{
    JsonArray *a = json_object_has_member(node, "dirty-bitmaps")
                       ? json_object_get_array_member(node, "dirty-bitmaps") : NULL;
    for (guint i = 0; a && i < json_array_get_length(a); i++) {
        JsonObject *b = json_array_get_object_element(a, i);
        /* Nameless entries are a job's internal bitmaps (QEMU lists them). */
        if (json_object_has_member(b, "name") && strcmp(output_str(b, "name"), name) == 0)
            return b;
    }
    return NULL;
}

uint64_t nodes_size(QmpClient *c, const char *name)
{
    g_autoptr(JsonNode) nodes = nodes_query(c);
    JsonObject *n = nodes_find(nodes, name);
    if (!n)
        die("Cannot find device='%s' nor node-name='%s'", name, name);
    JsonObject *img = json_object_has_member(n, "image") ? json_object_get_object_member(n, "image") : NULL;
    return (uint64_t)output_int(img, "virtual-size");
}

/* x-debug-query-block-graph: the node graph as QEMU 7.2 reports it.
 *
 * Nodes are the graph's nodes ("block-driver", by node name) and the
 * holders of users' claims: exports and a mirror's target writer as
 * anonymous "block-backend"s (QEMU's BlockBackends), jobs as "block-job"s
 * named by their id.  Edges carry the permissions each holder has in force
 * and those it shares, listed from the highest bit down as QEMU lists
 * them.  Difference from QEMU: blockd's jobs act through write hooks, not
 * filter nodes, so a backup or a mirror shows its claims on the source and
 * target directly instead of a copy-before-write or mirror_top node. */
#include "server/qmp/commands.h"
#include "block/node.h"
#include "qapi/qapi-commands.h"

#include <string.h>

static BlockPermissionList *perm_list(uint64_t bits)
{
    BlockPermissionList *head = NULL;
    for (int i = 0; i < BLOCK_PERMISSION__MAX; i++) {   /* prepended: highest first */
        if (!(bits & (1ull << i)))
            continue;
        BlockPermissionList *e = g_new0(BlockPermissionList, 1);
        e->value = (BlockPermission)i;
        e->next = head;
        head = e;
    }
    return head;
}

typedef struct Graph {
    XDbgBlockGraphNodeList **nodes_tail;
    XDbgBlockGraphEdgeList **edges_tail;
    GHashTable *ids;   /* "driver:NAME" / "job:ID" -> id */
    uint64_t next_id;
} Graph;

/* The id of a graph node of `type` named `name`; `key` makes it unique
 * (each anonymous block backend is its own node). */
static uint64_t add_node(Graph *g, const char *key, XDbgBlockGraphNodeType type, const char *name)
{
    gpointer id;
    if (key && g_hash_table_lookup_extended(g->ids, key, NULL, &id))
        return GPOINTER_TO_SIZE(id);
    XDbgBlockGraphNode *n = g_new0(XDbgBlockGraphNode, 1);
    n->id = ++g->next_id;
    n->type = type;
    n->name = g_strdup(name);
    *g->nodes_tail = g_new0(XDbgBlockGraphNodeList, 1);
    (*g->nodes_tail)->value = n;
    g->nodes_tail = &(*g->nodes_tail)->next;
    if (key)
        g_hash_table_insert(g->ids, g_strdup(key), GSIZE_TO_POINTER(n->id));
    return n->id;
}

static void add_edge(Graph *g, uint64_t parent, uint64_t child, const char *name, uint64_t perm,
                     uint64_t shared)
{
    XDbgBlockGraphEdge *e = g_new0(XDbgBlockGraphEdge, 1);
    e->parent = parent;
    e->child = child;
    e->name = g_strdup(name);
    e->perm = perm_list(perm);
    e->shared_perm = perm_list(shared);
    *g->edges_tail = g_new0(XDbgBlockGraphEdgeList, 1);
    (*g->edges_tail)->value = e;
    g->edges_tail = &(*g->edges_tail)->next;
}

static uint64_t driver_node(Graph *g, BlockNode *node)
{
    g_autofree char *key = g_strconcat("driver:", node_name(node), NULL);
    return add_node(g, key, X_DBG_BLOCK_GRAPH_NODE_TYPE_BLOCK_DRIVER, node_name(node));
}

bool qmp_x_debug_query_block_graph(QmpSession *session, XDbgBlockGraph **ret, GError **errp)
{
    XDbgBlockGraph *graph = g_new0(XDbgBlockGraph, 1);
    Graph g = { &graph->nodes, &graph->edges,
                g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL), 0 };
    g_autoptr(GPtrArray) nodes = node_list();
    for (guint i = 0; i < nodes->len; i++)
        driver_node(&g, nodes->pdata[i]);
    for (guint i = 0; i < nodes->len; i++) {
        BlockNode *node = nodes->pdata[i];
        uint64_t child = driver_node(&g, node);
        g_autoptr(GPtrArray) claims = node_perm_claims_of(node);
        for (guint j = 0; j < claims->len; j++) {
            NodeClaimInfo *c = claims->pdata[j];
            uint64_t parent;
            const char *name;
            if (c->parent) {
                parent = driver_node(&g, c->parent);
                name = node_perm_edge_name(c->parent, c->role);
            } else if (c->owner_kind && strcmp(c->owner_kind, "block-job") == 0) {
                g_autofree char *key = g_strconcat("job:", c->owner_name, NULL);
                parent = add_node(&g, key, X_DBG_BLOCK_GRAPH_NODE_TYPE_BLOCK_JOB, c->owner_name);
                name = c->edge;
            } else {
                parent = add_node(&g, NULL, X_DBG_BLOCK_GRAPH_NODE_TYPE_BLOCK_BACKEND,
                                  c->owner_name ? c->owner_name : "");
                name = c->edge ? c->edge : "root";
            }
            add_edge(&g, parent, child, name, c->perm, c->shared);
        }
    }
    g_hash_table_destroy(g.ids);
    *ret = graph;
    return true;
}

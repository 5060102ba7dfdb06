/* The registry of nodes claimed by jobs (see jobs/node-claims.h). */
#include "jobs/node-claims.h"

#include <glib.h>

static GMutex claims_lock;
static GHashTable *claims; /* node names */

bool job_node_claimed(const char *node_name)
{
    g_mutex_lock(&claims_lock);
    bool used = claims && g_hash_table_contains(claims, node_name);
    g_mutex_unlock(&claims_lock);
    return used;
}

void job_node_claim(const char *node_name)
{
    g_mutex_lock(&claims_lock);
    if (!claims)
        claims = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_hash_table_add(claims, g_strdup(node_name));
    g_mutex_unlock(&claims_lock);
}

void job_node_release(const char *node_name)
{
    g_mutex_lock(&claims_lock);
    if (claims)
        g_hash_table_remove(claims, node_name);
    g_mutex_unlock(&claims_lock);
}

/* The daemon's block nodes and their dirty bitmaps, from query-named-block-nodes. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <json-glib/json-glib.h>
#include "tools/blockctl/qmp-client.h"

/* query-named-block-nodes with flat=true: an array of BlockDeviceInfo (caller unrefs). */
JsonNode *nodes_query(QmpClient *c);
/* The entry of node `name` in a nodes_query reply, NULL if there is none. */
JsonObject *nodes_find(JsonNode *nodes, const char *name);
/* The dirty bitmap `name` of a node entry (BlockDirtyInfo), NULL if it has none of that name. */
JsonObject *nodes_find_bitmap(JsonObject *node, const char *name);
/* The size in bytes of node `name`; dies if the daemon has no such node. */
uint64_t nodes_size(QmpClient *c, const char *name);

/* Children of format and filter nodes named by a BlockdevRef: the name of
 * an existing node, or the nested options of a new one (QEMU's
 * BlockdevRef), shared by the raw, qcow2 and blkdebug drivers. */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include "block/node.h"
#include "block/options.h"

/* The existing node called `name`, or NULL with QEMU's "Cannot find device=... nor node-name=...". */
BlockNode *node_find_reference(const char *name, GError **errp);
/* Creates a node from `nested` for `parent`; without a node-name it is
 * called "<parent><suffix>" (or a free generated name), and with
 * `read_only` it is opened read-only unless `nested` sets read-only. */
BlockNode *node_create_child(BlockNode *parent, const BlockdevOptions *nested, const char *suffix, bool read_only,
                             GError **errp);
/* The child `ref` names: an existing node, or a new implicit one (*created
 * is then true; add it with node_add_implicit_child), read-only if the
 * parent is, unless its options say otherwise. */
BlockNode *node_open_child(BlockNode *parent, const BlockdevRef *ref, const char *suffix, bool *created,
                           GError **errp);

/* Until every driver takes its options struct: the same from JSON options. */
/* Creates a node from `nested` (JSON, parsed first) as node_create_child does. */
BlockNode *node_create_implicit(BlockNode *parent, JsonObject *nested, const char *suffix, bool read_only,
                                GError **errp);
/* The existing node named by option `key` (a string) of `opts`, or NULL
 * with QEMU's "Cannot find device=..." error (or the option's own). */
BlockNode *node_find_ref(BlockOptions *opts, const char *key, bool required, GError **errp);
/* The child named by option `key` of `opts`: an existing node, or a new
 * implicit one (*created is then true; add it with node_add_implicit_child),
 * read-only if the parent is or `key` is "backing", unless set otherwise. */
BlockNode *node_open_child_ref(BlockNode *parent, BlockOptions *opts, const char *key, const char *suffix,
                               bool *created, GError **errp);

/* Children of format and filter nodes named by a BlockdevRef: the name of
 * an existing node, or the nested options of a new one (QEMU's
 * BlockdevRef), shared by the raw, qcow2, blkdebug and overlay drivers. */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include "block/node.h"

/* The existing node called `name`, or NULL with QEMU's "Cannot find device=... nor node-name=...". */
BlockNode *node_find_reference(const char *name, GError **errp);
/* Creates a node from `nested` for `parent`; without a node-name it is
 * called "<parent><suffix>" (or a free generated name), and with
 * `read_only` it is opened read-only unless `nested` sets read-only. */
BlockNode *node_create_child(BlockNode *parent, const BlockdevOptions *nested, const char *suffix, bool read_only,
                             GError **errp);
/* Creates a node from `nested` that no parent owns (blockdev-create's
 * inline file definition); without a node-name it is called "<base>" or a
 * free generated name.  The caller deletes it when done. */
BlockNode *node_create_anonymous(const BlockdevOptions *nested, const char *base, GError **errp);
/* The child `ref` names: an existing node, or a new implicit one (*created
 * is then true; add it with node_add_implicit_child), read-only if the
 * parent is, unless its options say otherwise. */
BlockNode *node_open_child(BlockNode *parent, const BlockdevRef *ref, const char *suffix, bool *created,
                           GError **errp);

/* External snapshots (QEMU's blockdev-snapshot): an overlay image goes on
 * top of a node while its users keep working.  The overlay gets the node as
 * its backing node, then takes the node's place for every user and parent
 * (node_replace, which leaves the overlay's own edge alone). */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include "block/node.h"

/* Puts `overlay` on top of `node`, with QEMU 7.2's checks and messages
 * (the overlay in use, without backing support or with a backing node
 * already; the node busy or a backing node); false, changing nothing, on
 * failure. */
bool node_snapshot_append(BlockNode *node, BlockNode *overlay, GError **errp);
/* Undoes a successful node_snapshot_append (a transaction that failed
 * later): the users and parents go back to `node`, the overlay loses its
 * backing node. */
void node_snapshot_undo(BlockNode *node, BlockNode *overlay);

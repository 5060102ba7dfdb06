/* Entry points shared by the QMP handlers and the command line, so that
 * --blockdev/--export/--nbd-server are thin front ends over the same code. */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include "qapi/qapi-types.h"

/* Creates a node from validated blockdev-add options. */
bool qmp_blockdev_add_options(BlockdevOptions *options, GError **errp);
/* Creates an export from validated block-export-add options (no server check). */
bool qmp_block_export_add_options(BlockExportOptions *options, GError **errp);
/* Forgets what the block commands remember about nodes (at exit). */
void qmp_block_forget_all(void);

/* --blockdev: keyval or JSON options checked against the blockdev-add schema. */
bool qmp_cli_blockdev(JsonObject *opts, GError **errp);
/* --export: keyval or JSON options checked against the block-export-add schema. */
bool qmp_cli_export(JsonObject *opts, GError **errp);
/* --nbd-server: addr (flat SocketAddress) and max-connections; adds a listener. */
bool qmp_cli_nbd_server(JsonObject *opts, GError **errp);

/* Internal snapshots (server/qmp/cmd-snapshot.c): QEMU's SnapshotInfo of
 * a snapshot, for query-named-block-nodes too. */
struct BlockSnapshot;
SnapshotInfo *qmp_snapshot_info(const struct BlockSnapshot *sn);

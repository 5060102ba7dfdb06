/* The commands of blockctl, one function each, listed with their usage in
 * main.c.  Each parses its own arguments (cli_parse) before it contacts the
 * daemon, so usage errors change nothing; each returns the exit status. */
#pragma once

#include "tools/blockctl/qmp-client.h"

/* Connects to the daemon named by -s or $BLOCKCTL_SOCKET; dies if neither is given or it does not answer. */
QmpClient *connect_daemon(void);

/* cmd-query.c: nodes, exports, jobs (tables or --json); events as they arrive. */
int cmd_nodes(int argc, char **argv);
int cmd_exports(int argc, char **argv);
int cmd_jobs(int argc, char **argv);
int cmd_events(int argc, char **argv);
/* cmd-manage.c: add-file, export, unexport, qmp, job VERB ID. */
int cmd_add_file(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_unexport(int argc, char **argv);
int cmd_qmp(int argc, char **argv);
int cmd_job(int argc, char **argv);
/* cmd-bitmap.c: bitmap add|list|remove|clear|enable|disable|merge. */
int cmd_bitmap_add(int argc, char **argv);
int cmd_bitmap_list(int argc, char **argv);
int cmd_bitmap_remove(int argc, char **argv);
int cmd_bitmap_clear(int argc, char **argv);
int cmd_bitmap_enable(int argc, char **argv);
int cmd_bitmap_disable(int argc, char **argv);
int cmd_bitmap_merge(int argc, char **argv);
/* cmd-backup.c: full and incremental backups. */
int cmd_backup(int argc, char **argv);
/* cmd-mirror.c: live copy and switch-over. */
int cmd_mirror(int argc, char **argv);
/* cmd-commit.c: merge a backing chain down (block-commit). */
int cmd_commit(int argc, char **argv);
/* cmd-stream.c: pull a chain's layers into a node, as a job or in increments. */
int cmd_stream(int argc, char **argv);
int cmd_pull(int argc, char **argv);
/* cmd-snapshot.c: a new qcow2 overlay on top of a node. */
int cmd_snapshot(int argc, char **argv);
/* cmd-restore.c: an image rebuilt from a full backup and its increments. */
int cmd_restore(int argc, char **argv);
/* cmd-image.c: new images (blockdev-create) and resized nodes (block_resize). */
int cmd_create(int argc, char **argv);
int cmd_resize(int argc, char **argv);

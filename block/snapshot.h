/* Internal snapshots of a node (QEMU's bdrv_snapshot_*): a format driver
 * that keeps them (qcow2) offers BlockDriver.snapshot; the QMP commands and
 * the snapshot jobs reach them through these functions.  Data-path style:
 * 0 or -errno; the callers word the errors as QEMU does. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>

typedef struct BlockNode BlockNode;

/* One snapshot as QEMU's QEMUSnapshotInfo describes it. */
typedef struct BlockSnapshot {
    char *id, *name;
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size;
    uint64_t disk_size;
    int64_t icount;   /* -1: none */
} BlockSnapshot;

typedef struct BlockSnapshotOps {
    /* Every snapshot in table order: a GArray of BlockSnapshot (free with block_snapshot_list_free). */
    GArray *(*list)(void *opaque);
    /* Snapshots the current contents; sn->id NULL or "" takes the next free
     * number.  -EEXIST for an ID in use, -EFBIG when the table is full. */
    int (*create)(void *opaque, const BlockSnapshot *sn);
    /* Deletes the snapshot matching id and name (either NULL: any); -ENOENT. */
    int (*delete)(void *opaque, const char *id, const char *name);
    /* Makes the current contents those of the snapshot with this ID, else
     * this name; -ENOENT, -ENOTSUP (another disk size). */
    int (*revert)(void *opaque, const char *id_or_name);
} BlockSnapshotOps;

/* Whether the node's driver keeps internal snapshots. */
bool node_snapshot_supported(BlockNode *node);
/* The node's snapshots (NULL when unsupported). */
GArray *node_snapshot_list(BlockNode *node);
/* The first snapshot matching id and name (either NULL: any), copied into
 * *out (clear with block_snapshot_clear); false when none. */
bool node_snapshot_find(BlockNode *node, const char *id, const char *name, BlockSnapshot *out);
int node_snapshot_create(BlockNode *node, const BlockSnapshot *sn);
int node_snapshot_delete(BlockNode *node, const char *id, const char *name);
int node_snapshot_revert(BlockNode *node, const char *id_or_name);

void block_snapshot_clear(BlockSnapshot *sn);
void block_snapshot_list_free(GArray *list);

/* The qcow2 driver's private state and the functions its files share
 * (qcow2.h is the public part: image creation and the probe).
 *
 *   qcow2.c           driver table, open/close: header, extensions, feature
 *                     bits, backing; the file child's I/O helpers
 *   qcow2-io.c        the data path: read, write, write-zeroes, trim,
 *                     flush, block status
 *   qcow2-cluster.c   guest cluster -> L2 entry: lookups, L1/L2 updates,
 *                     zero and discard of whole clusters
 *   qcow2-cache.c     the L2 table cache
 *   qcow2-refcount.c  refcounts, cluster allocation (the reservation) and
 *                     deferred freeing
 *   qcow2-snapshot.c  internal snapshots: the snapshot table, create,
 *                     delete and revert as one atomic header update
 *   qcow2-compress.c  compressed cluster writes (deflate)
 *   qcow2-bitmap.c    persistent dirty bitmaps: the bitmaps extension, its
 *                     directory and tables, blockd's crash-safe marks
 *   qcow2-image.c     resize, backing file name rewrite, creation on a node
 *
 * Every function here except the byte-order and entry helpers expects
 * s->lock held, unless it says otherwise. */
#pragma once

#include "block/drivers/qcow2.h"
#include "block/driver.h"
#include "block/node.h"
#include "block/debug-event.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <glib.h>

#define QCOW2_MAGIC 0x514649fbu
#define MIN_CLUSTER_BITS 9
#define MAX_CLUSTER_BITS 21

#define L1E_OFFSET_MASK 0x00fffffffffffe00ULL
#define L2E_OFFSET_MASK 0x00fffffffffffe00ULL
#define RT_OFFSET_MASK 0xfffffffffffffe00ULL
#define OFLAG_COPIED (1ULL << 63)
#define OFLAG_COMPRESSED (1ULL << 62)
#define OFLAG_ZERO 1ULL

#define INCOMPAT_DIRTY (1ULL << 0)
#define INCOMPAT_CORRUPT (1ULL << 1)
#define INCOMPAT_DATA_FILE (1ULL << 2)
#define INCOMPAT_COMPRESSION (1ULL << 3)
#define INCOMPAT_EXTL2 (1ULL << 4)

#define EXT_END 0
#define EXT_BACKING_FORMAT 0xe2792acau
#define EXT_FEATURE_TABLE 0x6803f857u
#define EXT_BITMAPS 0x23852875u
#define EXT_CRYPTO 0x0537be77u
#define EXT_DATA_FILE 0x44415441u

#define HDR_V2_LENGTH 72
#define HDR_V3_LENGTH 104
#define MAX_L1_BYTES (32u << 20)       /* QEMU's limits */
#define MAX_REFTABLE_BYTES (8u << 20)
#define MAX_BACKING_NAME 1023
#define MAX_RUN_BYTES (32u << 20)      /* clusters handled per step */
#define LOOKUP_BATCH 512               /* L2 entries copied per lock hold */

typedef enum ClusterType { CT_UNALLOC, CT_ZERO_PLAIN, CT_ZERO_ALLOC, CT_NORMAL, CT_COMPRESSED } ClusterType;

typedef struct L2Table {
    uint64_t offset;   /* key */
    uint64_t *e;       /* host byte order */
    uint64_t used;     /* clock of the last use */
} L2Table;

typedef struct FreeRange {
    uint64_t offset, length;
} FreeRange;

/* One entry of the snapshot table (QEMU's QCowSnapshot). */
typedef struct Qcow2Snapshot {
    uint64_t l1_offset;
    uint32_t l1_size;
    char *id, *name;
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size;
    uint64_t disk_size;
    uint64_t icount;             /* UINT64_MAX: none (-1 on disk) */
    uint32_t extra_size;         /* extra data as read (>= 24 once written here) */
    uint8_t *extra_unknown;      /* extra data past the known 24 bytes, kept as is */
} Qcow2Snapshot;
typedef struct Qcow2Bitmaps Qcow2Bitmaps; /* qcow2-bitmap.c */

typedef struct Qcow2 {
    BlockNode *file, *backing;
    GMutex lock;
    bool read_only;
    BlockFlushGen flush_gen; /* for flush_to_disk events (a blkdebug file counts them) */
    bool broken;                 /* metadata I/O failed midway: no more writes */
    bool file_can_trim;

    uint32_t version, cluster_bits, cs, header_length, refcount_order;
    uint64_t size;
    uint64_t incompat, compat, autoclear;
    uint32_t l2_entries;         /* per L2 table */
    uint64_t rb_entries;         /* per refcount block */
    uint32_t csize_shift;
    uint64_t csize_mask, coffset_mask;

    uint32_t l1_size;
    uint64_t l1_offset;
    uint64_t *l1;                /* host byte order */

    uint64_t rt_offset;
    uint32_t rt_clusters;
    uint64_t rt_entries;
    uint64_t *rt;                /* host byte order */
    GHashTable *rblocks;         /* block index (gint64 *) -> cluster bytes, on-disk format */

    GHashTable *l2;              /* offset -> L2Table */
    guint l2_max;
    uint64_t l2_clock;

    uint64_t end;                /* first cluster index past everything allocated */
    uint64_t res_start, res_end; /* reserved clusters: refcount 1, unused */
    uint64_t reserve_chunk;
    GArray *pending_free;        /* FreeRange, dropped after the next flush */

    char *backing_name, *backing_full, *backing_fmt;

    /* Internal snapshots (qcow2-snapshot.c). */
    uint32_t nb_snapshots;          /* entries in snapshots[] */
    uint32_t header_nb_snapshots;   /* the header's count, until the table is read at open */
    Qcow2Snapshot *snapshots;
    uint64_t snapshots_offset, snapshots_size;
    /* Guest I/O holds it for reading, snapshot operations for writing:
     * reads and in-place writes touch data outside s->lock, and a snapshot
     * changes which clusters may be written in place. */
    GRWLock io_lock;

    /* Allocating writes in flight (qcow2-io.c), QEMU's l2meta dependencies:
     * guest cluster runs whose new clusters are being written outside
     * s->lock and whose L2 entries are not set yet.  Under s->lock; a
     * request that would change an entry in such a run waits on
     * alloc_cond until it is done. */
    GArray *allocs;              /* Qcow2Alloc */
    GCond alloc_cond;

    /* Compressed writes (qcow2-compress.c): the host cluster being filled, bytes used. */
    uint64_t comp_host, comp_used;
    Qcow2Bitmaps *bitmaps;       /* the bitmap directory (qcow2-bitmap.c) */
} Qcow2;

/* An allocating write in flight: guest clusters [c0, c0 + n). */
typedef struct Qcow2Alloc {
    uint64_t c0, n;
} Qcow2Alloc;

/* Waits (s->lock held, released while waiting) until no allocating write in
 * flight overlaps guest clusters [c0, c0 + n); true if it had to wait, so
 * the caller's view of those entries is stale. */
bool qcow2_wait_allocs(Qcow2 *s, uint64_t c0, uint64_t n);

/* ---- byte order ---- */

static inline uint64_t be64_at(const void *p) { uint64_t v; memcpy(&v, p, 8); return GUINT64_FROM_BE(v); }
static inline uint32_t be32_at(const void *p) { uint32_t v; memcpy(&v, p, 4); return GUINT32_FROM_BE(v); }
static inline uint16_t be16_at(const void *p) { uint16_t v; memcpy(&v, p, 2); return GUINT16_FROM_BE(v); }
static inline void put_be64(void *p, uint64_t v) { v = GUINT64_TO_BE(v); memcpy(p, &v, 8); }
static inline void put_be32(void *p, uint32_t v) { v = GUINT32_TO_BE(v); memcpy(p, &v, 4); }
static inline void put_be16(void *p, uint16_t v) { v = GUINT16_TO_BE(v); memcpy(p, &v, 2); }

#define DIV_UP(a, b) (((a) + (b) - 1) / (b))

/* ---- file I/O (qcow2.c; no lock needed) ---- */

/* Reads from `node` (may be NULL: nothing); bytes past its end read as zeroes. */
int qcow2_read_zero_padded(BlockNode *node, void *buf, uint64_t len, uint64_t off);
/* Writes to the file, growing it (to a cluster boundary) when needed. */
int qcow2_file_write(Qcow2 *s, const void *buf, uint64_t len, uint64_t off);

/* Reads from the file; bytes past its end read as zeroes. */
static inline int file_read(Qcow2 *s, void *buf, uint64_t len, uint64_t off)
{
    return qcow2_read_zero_padded(s->file, buf, len, off);
}

/* Writes one big-endian 64-bit value to the file. */
static inline int write_be64(Qcow2 *s, uint64_t v, uint64_t off)
{
    uint8_t b[8];
    put_be64(b, v);
    return qcow2_file_write(s, b, 8, off);
}

/* ---- L2 entries (pure) ---- */

/* What an L2 entry describes. */
static inline ClusterType classify(const Qcow2 *s, uint64_t e)
{
    if (e & OFLAG_COMPRESSED)
        return CT_COMPRESSED;
    if (s->version >= 3 && (e & OFLAG_ZERO))
        return (e & L2E_OFFSET_MASK) ? CT_ZERO_ALLOC : CT_ZERO_PLAIN;
    return (e & L2E_OFFSET_MASK) ? CT_NORMAL : CT_UNALLOC;
}

/* The host byte range a compressed cluster's entry points at. */
static inline void compressed_range(const Qcow2 *s, uint64_t e, uint64_t *off, uint64_t *len)
{
    *off = e & s->coffset_mask;
    uint64_t sectors = ((e >> s->csize_shift) & s->csize_mask) + 1;
    *len = sectors * 512 - (*off & 511);
}

/* Whether a cluster (entry e of type t) can be overwritten where it is:
 * OFLAG_COPIED says its refcount is 1 (no snapshot shares it). */
static inline bool in_place(uint64_t e, ClusterType t)
{
    return t == CT_NORMAL && (e & OFLAG_COPIED);
}

/* ---- guest clusters (qcow2-cluster.c) ---- */

/* The L2 entry of guest cluster c (0 when its table is unallocated). */
int qcow2_get_entry(Qcow2 *s, uint64_t c, uint64_t *e);
/* Up to LOOKUP_BATCH entries for [offset, offset+count), taking s->lock itself: their number, or -errno. */
int64_t qcow2_lookup_entries(Qcow2 *s, uint64_t offset, uint32_t count, uint64_t *entries, uint64_t *first);
/* Sets the entries of guest clusters [c0, c0+n) to (host ? host + i*cs : 0) | flags, freeing old allocations later. */
int qcow2_set_entries(Qcow2 *s, uint64_t c0, uint64_t n, uint64_t host, uint64_t flags);
/* Whether guest bytes from `off` in a cluster with entry e read as zeroes without reading data. */
bool qcow2_reads_zero_cheaply(Qcow2 *s, uint64_t e, uint64_t off);
/* Write-zeroes of whole guest clusters [a, b): zero flags, or unallocated entries. */
int qcow2_zero_clusters(Qcow2 *s, uint64_t a, uint64_t b, bool may_trim);
/* Discard of whole guest clusters [a, b): unallocated, or zero over a backing node. */
int qcow2_discard_clusters(Qcow2 *s, uint64_t a, uint64_t b);

/* ---- the L2 table cache (qcow2-cache.c) ---- */

/* The L2 table at `off`, read from the file unless cached. */
int qcow2_l2_load(Qcow2 *s, uint64_t off, L2Table **out);
/* Whether the cache holds a table at `off`. */
bool qcow2_l2_cached(Qcow2 *s, uint64_t off);
/* Caches a new, all-zero L2 table for the cluster at `off` (just allocated) and returns it. */
int qcow2_l2_new(Qcow2 *s, uint64_t off, L2Table **out);

/* Frees a cached table: the cache's value destructor (its key is &t->offset). */
static inline void l2_table_free(gpointer p)
{
    L2Table *t = p;
    g_free(t->e);
    g_free(t);
}

/* ---- refcounts and allocation (qcow2-refcount.c) ---- */

/* The refcount of host cluster `cluster` (0 where no refcount block exists). */
int qcow2_refcount_of(Qcow2 *s, uint64_t cluster, uint64_t *out);
/* n contiguous new clusters with refcount 1; their offset in *off. */
int qcow2_alloc_clusters(Qcow2 *s, uint64_t n, uint64_t *off);
/* Drops a reference to the clusters overlapping [off, off+len) after the next flush. */
void qcow2_free_later(Qcow2 *s, uint64_t off, uint64_t len);
/* Applies the frees queued by qcow2_free_later (the caller has flushed the file). */
int qcow2_apply_pending_frees(Qcow2 *s);
/* Returns the unused rest of the reservation (refcounts back to 0). */
int qcow2_release_reservation(Qcow2 *s);
/* Refcount of every cluster of [c0, c0+n) plus delta (-1 or +1), written through. */
int qcow2_refcount_add(Qcow2 *s, uint64_t c0, uint64_t n, int delta);
/* Loads every refcount block (cached from then on); -errno. */
int qcow2_refcount_load_all(Qcow2 *s);
/* The cached refcount block `bi` in on-disk format, or NULL (none allocated / not loaded). */
uint8_t *qcow2_refblock_cached(Qcow2 *s, uint64_t bi);
/* Refcount entry i of an on-disk refcount block, and setting it (v <= the maximum). */
uint64_t qcow2_rc_get(const Qcow2 *s, const uint8_t *b, uint64_t i);
void qcow2_rc_set(const Qcow2 *s, uint8_t *b, uint64_t i, uint64_t v);
uint64_t qcow2_rc_max(const Qcow2 *s);
/* For assertions: [off, off + n*cs) is whole clusters in the file, outside the header, L1 and refcount table, each with a refcount >= 1 (no I/O). */
bool qcow2_clusters_allocated(Qcow2 *s, uint64_t off, uint64_t n);

/* ---- the image as a whole (qcow2-image.c): BlockDriver callbacks, taking s->lock themselves ---- */

/* block_resize: grows the L1 table or crops the clusters past the new end; the header's size follows. */
bool qcow2_truncate(void *o, uint64_t size, GError **errp);
/* change-backing-file: rewrites the header's backing file name and format extension. */
bool qcow2_change_backing_file(void *o, const char *name, const char *fmt, GError **errp);
/* blockdev-create driver=qcow2: writes a new image to the `file` node the options name. */
bool qcow2_create_on_node(const BlockdevCreateOptions *options, GError **errp);

/* ---- the data path (qcow2-io.c): BlockDriver callbacks, taking s->lock themselves ---- */

/* Reads guest bytes: data clusters, compressed ones, zeroes, the backing node. */
int qcow2_pread(void *o, void *buf, uint32_t count, uint64_t offset, uint32_t flags);
/* Writes guest bytes: in place where allocated and not shared, else into new clusters. */
int qcow2_pwrite(void *o, const void *buf, uint32_t count, uint64_t offset, uint32_t flags);
/* Write-zeroes: whole clusters by their entries, partial ones by writing zeroes. */
int qcow2_zero(void *o, uint32_t count, uint64_t offset, uint32_t flags);
/* Trim: whole clusters are deallocated (or zero over a backing node). */
int qcow2_trim(void *o, uint32_t count, uint64_t offset, uint32_t flags);
/* Flushes the file, then drops the references freed since the last flush. */
int qcow2_flush(void *o, uint32_t flags);
/* BlockDriver.read_fd: the file's descriptor when the range is one run of
 * data clusters contiguous in the file (sendfile), else -ENOTSUP. */
int qcow2_read_fd(void *o, uint32_t count, uint64_t offset, int *fd, uint64_t *fd_offset);
/* Block status: allocation in this layer, the backing node's below it. */
int qcow2_extents(void *o, uint32_t count, uint64_t offset, uint32_t flags, BlockExtents *out);

/* ---- internal snapshots (qcow2-snapshot.c) ---- */

/* Reads the snapshot table the header names (at open). */
bool qcow2_read_snapshots(Qcow2 *s, uint32_t nb, uint64_t offset, GError **errp);
/* Frees the in-memory snapshot list. */
void qcow2_free_snapshots(Qcow2 *s);
/* BlockDriver.pwrite_compressed (qcow2-compress.c): whole clusters, raw
 * deflate; a cluster that does not shrink is written normally. */
int qcow2_pwrite_compressed(void *o, const void *buf, uint32_t count, uint64_t offset);
/* BlockDriver.snapshot (qcow2-snapshot.c). */
extern const struct BlockSnapshotOps qcow2_snapshot_ops;
/* ---- persistent dirty bitmaps (qcow2-bitmap.c) ---- */

/* Reads the bitmaps extension and directory of header cluster `h` (hlen
 * bytes) after the tables are loaded; writing, marks every bitmap in use
 * and clears the autoclear bits blockd does not maintain (taking s->lock).
 * False with QEMU's error for a directory QEMU would refuse. */
bool qcow2_bitmaps_open(Qcow2 *s, BlockNode *self, const uint8_t *h, uint64_t hlen, GError **errp);
/* What writing to the image starts with (at a read-write open, and a
 * reopen read-write): every bitmap marked in use, nothing claimed
 * crash-safe and the autoclear bits blockd does not maintain cleared,
 * until the bitmap layer stores the bitmaps (taking s->lock).  `me` names
 * the node in the error. */
bool qcow2_bitmaps_start_writing(Qcow2 *s, const char *me, GError **errp);
/* Frees what qcow2_bitmaps_open read (writes nothing). */
void qcow2_bitmaps_free(Qcow2 *s);
/* The BlockDriver.bitmaps_* callbacks (block/image-bitmaps.h), taking s->lock themselves. */
bool qcow2_bitmaps_can_add(void *o, const char *name, uint32_t granularity, const char *const *names, guint n,
                           GError **errp);
bool qcow2_bitmaps_load(void *o, GPtrArray *out, GError **errp);
bool qcow2_bitmaps_store(void *o, GPtrArray *entries, bool clean, GError **errp);
int qcow2_bitmaps_write(void *o, uint64_t loc, uint64_t first_word, uint64_t nwords, const void *buf);
int qcow2_bitmaps_sync(void *o);

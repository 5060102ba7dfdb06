/* Exports: named, shareable views of a node for the NBD server (see server/export.h). */
#include "server/export.h"
#include "block/allocation-depth.h"
#include "bitmaps/dirty-bitmap.h"
#include "block/user.h"

#include <errno.h>
#include <string.h>

struct Export {
    gint refcount;
    char *id;
    char *name;
    char *description;
    BlockUser *user;     /* the node, reached through the graph (node_replace may move it) */
    bool read_only;
    NodeCaps caps;
    GPtrArray *contexts; /* ExportMetaContext * */
    GPtrArray *bitmaps;  /* DirtyBitmap * held busy by this export */

    /* Under registry_lock. */
    bool shutting_down;  /* deleted: no longer named, listed until freed */
    GPtrArray *clients;  /* ExportClient * in transmission */
    ExportDeletedFn on_deleted;
    void *deleted_opaque;
};

struct ExportClient {
    void (*disconnect)(void *opaque);
    bool (*peer_gone)(void *opaque);
    void *opaque;
};

static GMutex registry_lock;
static GCond registry_cond; /* a client left or an export was freed */
/* Export *, creation order.  Live exports hold the registry's reference;
 * exports shutting down stay listed without it until export_free. */
static GPtrArray *registry;

/* How long a hard delete waits for its clients to leave. */
#define HARD_DELETE_WAIT_US (2 * G_TIME_SPAN_SECOND)

/* Node calls take 32-bit counts; larger effect lengths are split on this boundary. */
#define EXPORT_SPLIT (1u << 30)

/* Starts a request: waits while the node is drained; returns the node. */
static BlockNode *io_begin(Export *exp)
{
    return block_user_begin(exp->user);
}

/* Ends a request started with io_begin; returns r. */
static int io_end(Export *exp, int r)
{
    return block_user_end(exp->user, r);
}

static int base_allocation_status(Export *exp, const ExportMetaContext *ctx, uint64_t length,
                                  uint64_t offset, uint32_t flags, BlockExtents *out)
{
    uint64_t end = offset + length;
    uint64_t pos = offset;
    while (pos < end) {
        uint32_t n = (uint32_t)MIN(end - pos, EXPORT_SPLIT);
        int r = io_end(exp, node_block_status(io_begin(exp), n, pos, flags, out));
        if (r < 0)
            return r;
        uint64_t next = extents_next_offset(out);
        /* One call is enough for REQ_ONE, and a driver that stopped early
         * has told us all it cheaply knows. */
        if ((flags & BLOCK_FLAG_REQ_ONE) || next < pos + n || next <= pos)
            break;
        pos = next;
    }
    return 0;
}

/* qemu:dirty-bitmap:NAME: runs of dirty (1) and clean (0) granules. */
static int dirty_bitmap_status(Export *exp, const ExportMetaContext *ctx, uint64_t length,
                               uint64_t offset, uint32_t flags, BlockExtents *out)
{
    DirtyBitmap *bm = ctx->opaque;
    uint64_t end = offset + length;
    uint64_t pos = offset;
    while (pos < end) {
        int64_t dirty = dirty_bitmap_next_dirty(bm, pos, end);
        uint64_t run_end;
        uint32_t type;
        if (dirty == (int64_t)pos) {
            int64_t clean = dirty_bitmap_next_clean(bm, pos, end);
            run_end = clean < 0 ? end : (uint64_t)clean;
            type = 1;
        } else {
            run_end = dirty < 0 ? end : (uint64_t)dirty;
            type = 0;
        }
        int r = extents_add(out, pos, run_end - pos, type);
        if (r < 0)
            return r;
        if ((flags & BLOCK_FLAG_REQ_ONE) || extents_count(out) >= BLOCK_EXTENTS_MAX)
            break;
        pos = run_end;
    }
    return 0;
}

/* qemu:allocation-depth: the layer of the node's backing chain holding each
 * byte (block/allocation-depth.h). */
static int allocation_depth_status(Export *exp, const ExportMetaContext *ctx, uint64_t length,
                                   uint64_t offset, uint32_t flags, BlockExtents *out)
{
    uint64_t end = offset + length;
    for (uint64_t pos = offset; pos < end;) {
        uint32_t n = (uint32_t)MIN(end - pos, EXPORT_SPLIT);
        int r = io_end(exp, node_allocation_depth(io_begin(exp), n, pos, flags, out));
        if (r < 0 || (flags & BLOCK_FLAG_REQ_ONE) || extents_count(out) >= BLOCK_EXTENTS_MAX)
            return r;
        pos += n;
    }
    return 0;
}

bool export_check_bitmap(DirtyBitmap *bm, const char *node_name, bool writable, GError **errp)
{
    if (!dirty_bitmap_check(bm, DIRTY_BITMAP_ALLOW_RO, errp))
        return false;
    BlockNode *node = node_find(node_name);
    if (!writable && node && !node_read_only(node) && dirty_bitmap_recording(bm)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Enabled bitmap '%s' incompatible with readonly export", dirty_bitmap_name(bm));
        return false;
    }
    return true;
}

static void context_free(ExportMetaContext *ctx)
{
    g_free(ctx->name);
    g_free(ctx);
}

static void export_free(Export *exp)
{
    g_ptr_array_free(exp->clients, TRUE);
    g_ptr_array_free(exp->contexts, TRUE);
    for (guint i = 0; i < exp->bitmaps->len; i++)
        dirty_bitmap_set_busy(exp->bitmaps->pdata[i], false);
    g_ptr_array_free(exp->bitmaps, TRUE);
    block_user_free(exp->user);
    /* The node and bitmaps are released: only now does the export leave
     * query-block-exports, so a client that saw it go can resize or
     * delete the node at once (it did the other way round, and a
     * block_resize right after met the export's claim). */
    g_mutex_lock(&registry_lock);
    if (registry)
        g_ptr_array_remove(registry, exp);
    g_cond_broadcast(&registry_cond);
    g_mutex_unlock(&registry_lock);
    if (exp->on_deleted)
        exp->on_deleted(exp->id, exp->deleted_opaque);
    g_free(exp->id);
    g_free(exp->name);
    g_free(exp->description);
    g_free(exp);
}

/* QEMU's NBD export reads (and writes, if writable) and lets others do
 * anything but resize the node (block/export/export.c, nbd/server.c). */
static BlockUser *new_user(BlockNode *node, const char *desc, bool read_only, GError **errp)
{
    BlockUser *u = block_user_new(node, desc, BLOCK_PERM_CONSISTENT_READ | (read_only ? 0 : BLOCK_PERM_WRITE),
                                  BLOCK_PERM_ALL & ~BLOCK_PERM_RESIZE, errp);
    /* As QEMU's graph shows it: an anonymous BlockBackend, edge "root". */
    if (u)
        block_user_describe(u, "block-backend", "", "root");
    return u;
}

/* By id (exports shutting down included: QEMU keeps their id taken) or by
 * NBD name (exports shutting down excluded: their name is free at once). */
static Export *find_locked(const char *id, const char *name)
{
    for (guint i = 0; registry && i < registry->len; i++) {
        Export *e = registry->pdata[i];
        if ((id && strcmp(e->id, id) == 0) || (name && !e->shutting_down && strcmp(e->name, name) == 0))
            return e;
    }
    return NULL;
}

Export *export_add(const ExportConfig *cfg, GError **errp)
{
    const char *name = cfg->name ? cfg->name : cfg->node_name;
    if (strlen(name) > 4096) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "export name '%.32s...' is too long (NBD limits names to 4096 bytes)", name);
        return NULL;
    }
    if (cfg->description && strlen(cfg->description) > 4096) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "export description is too long (NBD limits it to 4096 bytes)");
        return NULL;
    }
    BlockNode *node = node_find(cfg->node_name);
    if (!node) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                    "Cannot find device='' nor node-name='%s'", cfg->node_name);
        return NULL;
    }
    if (cfg->writable && node_read_only(node)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_READ_ONLY, "Cannot export read-only node as writable");
        return NULL;
    }
    g_autofree char *desc = g_strdup_printf("block export '%s'", cfg->id);
    BlockUser *user = new_user(node, desc, !cfg->writable, errp);
    if (!user)
        return NULL;

    Export *exp = g_new0(Export, 1);
    exp->user = user;
    exp->refcount = 1;
    exp->id = g_strdup(cfg->id);
    exp->name = g_strdup(name);
    exp->description = g_strdup(cfg->description);
    exp->read_only = !cfg->writable;
    exp->caps = *node_caps(node);
    if (exp->read_only) {
        exp->caps.can_write = false;
        exp->caps.can_trim = false;
        exp->caps.can_zero = false;
        exp->caps.can_fast_zero = false;
        exp->caps.fua = BLOCK_SUPPORT_NONE;
    }
    exp->contexts = g_ptr_array_new_with_free_func((GDestroyNotify)context_free);
    ExportMetaContext *base = g_new0(ExportMetaContext, 1);
    base->name = g_strdup("base:allocation");
    base->block_status = base_allocation_status;
    g_ptr_array_add(exp->contexts, base);
    if (cfg->allocation_depth) {
        ExportMetaContext *depth = g_new0(ExportMetaContext, 1);
        depth->name = g_strdup("qemu:allocation-depth");
        depth->block_status = allocation_depth_status;
        g_ptr_array_add(exp->contexts, depth);
    }
    exp->clients = g_ptr_array_new_with_free_func(g_free);
    exp->bitmaps = g_ptr_array_new();
    for (size_t i = 0; i < cfg->nbitmaps; i++) {
        DirtyBitmap *bm = cfg->bitmaps[i];
        ExportMetaContext *c = g_new0(ExportMetaContext, 1);
        c->name = g_strconcat("qemu:dirty-bitmap:", dirty_bitmap_name(bm), NULL);
        c->block_status = dirty_bitmap_status;
        c->opaque = bm;
        g_ptr_array_add(exp->contexts, c);
        dirty_bitmap_set_busy(bm, true);
        g_ptr_array_add(exp->bitmaps, bm);
    }

    g_mutex_lock(&registry_lock);
    if (!registry)
        registry = g_ptr_array_new();
    Export *clash = find_locked(cfg->id, NULL);
    Export *clash_name = find_locked(NULL, name);
    if (clash || clash_name) {
        g_mutex_unlock(&registry_lock);
        if (clash)
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_EXISTS,
                        "Block export id '%s' is already in use", cfg->id);
        else
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_EXISTS,
                        "NBD server already has export named '%s'", name);
        export_free(exp);
        return NULL;
    }
    g_ptr_array_add(registry, exp);
    g_mutex_unlock(&registry_lock);
    return exp;
}

/* Marks a live export deleted and asks its clients to leave; the caller then
 * drops the registry's reference. */
static void begin_shutdown_locked(Export *exp, ExportDeletedFn on_deleted, void *opaque)
{
    exp->shutting_down = true;
    exp->on_deleted = on_deleted;
    exp->deleted_opaque = opaque;
    for (guint i = 0; i < exp->clients->len; i++) {
        ExportClient *client = exp->clients->pdata[i];
        client->disconnect(client->opaque);
    }
}

/* True when `exp` has no clients, after waiting (bounded) for those whose peer
 * has already hung up: QEMU's single thread has always seen such an EOF
 * before the next QMP command, so a client that just quit must not make a
 * safe delete fail.  False as soon as one client is still connected. */
static bool wait_for_leaving_clients_locked(Export *exp)
{
    gint64 deadline = g_get_monotonic_time() + HARD_DELETE_WAIT_US;
    while (exp->clients->len > 0) {
        for (guint i = 0; i < exp->clients->len; i++) {
            ExportClient *client = exp->clients->pdata[i];
            if (!client->peer_gone(client->opaque))
                return false;
        }
        if (!g_cond_wait_until(&registry_cond, &registry_lock, deadline))
            return exp->clients->len == 0;
    }
    return true;
}

bool export_delete(const char *id, BlockExportRemoveMode mode, ExportDeletedFn on_deleted,
                   void *opaque, GError **errp)
{
    g_mutex_lock(&registry_lock);
    Export *exp = find_locked(id, NULL);
    if (!exp) {
        g_mutex_unlock(&registry_lock);
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "Export '%s' is not found", id);
        return false;
    }
    if (exp->shutting_down) {
        g_mutex_unlock(&registry_lock);
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_BUSY, "Export '%s' is already shutting down", id);
        return false;
    }
    /* With clients, wait below until they and their references are gone. */
    bool had_clients = exp->clients->len > 0;
    if (mode == BLOCK_EXPORT_REMOVE_MODE_SAFE && !wait_for_leaving_clients_locked(exp)) {
        g_mutex_unlock(&registry_lock);
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_BUSY, "export '%s' still in use", id);
        return false;
    }
    begin_shutdown_locked(exp, on_deleted, opaque);
    /* The registry's reference becomes ours: `exp` stays valid to test below. */
    g_mutex_unlock(&registry_lock);
    if (!had_clients) {
        export_unref(exp);
        return true;
    }

    /* As in QEMU, where disconnected clients are gone before the next command
     * runs: wait for them (bounded: a request may be stuck in a node). */
    gint64 deadline = g_get_monotonic_time() + HARD_DELETE_WAIT_US;
    g_mutex_lock(&registry_lock);
    while (exp->clients->len > 0 && g_cond_wait_until(&registry_cond, &registry_lock, deadline))
        ;
    g_mutex_unlock(&registry_lock);
    export_unref(exp);
    /* A client that just left may hold its reference for an instant more;
     * `exp` may be freed now, so look for the id (only this thread adds). */
    g_mutex_lock(&registry_lock);
    Export *left;
    while ((left = find_locked(id, NULL)) && left->shutting_down &&
           g_cond_wait_until(&registry_cond, &registry_lock, deadline))
        ;
    g_mutex_unlock(&registry_lock);
    return true;
}

bool export_remove(const char *id, GError **errp)
{
    return export_delete(id, BLOCK_EXPORT_REMOVE_MODE_HARD, NULL, NULL, errp);
}

void export_remove_all(void)
{
    g_mutex_lock(&registry_lock);
    GPtrArray *all = registry;
    registry = NULL;
    GPtrArray *live = g_ptr_array_new();
    for (guint i = 0; all && i < all->len; i++) {
        Export *exp = all->pdata[i];
        if (!exp->shutting_down) {
            begin_shutdown_locked(exp, NULL, NULL);
            g_ptr_array_add(live, exp);
        }
    }
    g_mutex_unlock(&registry_lock);
    for (guint i = 0; i < live->len; i++)
        export_unref(live->pdata[i]);
    g_ptr_array_free(live, TRUE);
    if (all)
        g_ptr_array_free(all, TRUE);
}

ExportClient *export_client_register(Export *exp, void (*disconnect)(void *opaque),
                                     bool (*peer_gone)(void *opaque), void *opaque)
{
    ExportClient *client = g_new0(ExportClient, 1);
    client->disconnect = disconnect;
    client->peer_gone = peer_gone;
    client->opaque = opaque;
    g_mutex_lock(&registry_lock);
    g_ptr_array_add(exp->clients, client);
    /* Raced with a delete that looked for clients before this one came. */
    if (exp->shutting_down)
        disconnect(opaque);
    g_mutex_unlock(&registry_lock);
    return client;
}

void export_client_unregister(Export *exp, ExportClient *client)
{
    g_mutex_lock(&registry_lock);
    g_ptr_array_remove(exp->clients, client);
    g_cond_broadcast(&registry_cond);
    g_mutex_unlock(&registry_lock);
}

static void status_free(ExportStatus *st)
{
    g_free(st->id);
    g_free(st->node_name);
    g_free(st);
}

GPtrArray *export_status_list(void)
{
    GPtrArray *list = g_ptr_array_new_with_free_func((GDestroyNotify)status_free);
    g_mutex_lock(&registry_lock);
    /* Copied under the lock: an export shutting down may be freed any time. */
    for (guint i = 0; registry && i < registry->len; i++) {
        Export *exp = registry->pdata[i];
        ExportStatus *st = g_new0(ExportStatus, 1);
        st->id = g_strdup(exp->id);
        st->node_name = g_strdup(node_name(block_user_node(exp->user)));
        st->shutting_down = exp->shutting_down;
        g_ptr_array_add(list, st);
    }
    g_mutex_unlock(&registry_lock);
    return list;
}

Export *export_lookup(const char *name)
{
    if (!name)
        name = "";
    g_mutex_lock(&registry_lock);
    Export *exp = find_locked(NULL, name);
    /* The empty name is the default export: the first one, as with nbdkit. */
    for (guint i = 0; !exp && name[0] == '\0' && registry && i < registry->len; i++) {
        Export *e = registry->pdata[i];
        if (!e->shutting_down)
            exp = e;
    }
    if (exp)
        export_ref(exp);
    g_mutex_unlock(&registry_lock);
    return exp;
}

GPtrArray *export_list(void)
{
    GPtrArray *list = g_ptr_array_new_with_free_func((GDestroyNotify)export_unref);
    g_mutex_lock(&registry_lock);
    for (guint i = 0; registry && i < registry->len; i++) {
        Export *exp = registry->pdata[i];
        if (!exp->shutting_down)
            g_ptr_array_add(list, export_ref(exp));
    }
    g_mutex_unlock(&registry_lock);
    return list;
}

Export *export_ref(Export *exp)
{
    g_atomic_int_inc(&exp->refcount);
    return exp;
}

void export_unref(Export *exp)
{
    if (exp && g_atomic_int_dec_and_test(&exp->refcount))
        export_free(exp);
}

const char *export_id(Export *exp) { return exp->id; }
const char *export_node_name(Export *exp)
{
    return node_name(block_user_node(exp->user));
}
const char *export_name(Export *exp) { return exp->name; }
const char *export_description(Export *exp) { return exp->description; }
/* A replacement node has the same size (node_replace checks it). */
uint64_t export_size(Export *exp) { return node_size(block_user_node(exp->user)); }
bool export_read_only(Export *exp) { return exp->read_only; }
const NodeCaps *export_caps(Export *exp) { return &exp->caps; }
GPtrArray *export_meta_contexts(Export *exp) { return exp->contexts; }

int export_pread(Export *exp, void *buf, uint32_t count, uint64_t offset)
{
    return io_end(exp, node_pread(io_begin(exp), buf, count, offset));
}

int export_pwrite(Export *exp, const void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    g_assert(!exp->read_only);
    return io_end(exp, node_pwrite(io_begin(exp), buf, count, offset, flags));
}

/* An asynchronous request's completion: the request ends (io_end) before
 * the caller hears of it. */
typedef struct ExportAsync {
    Export *exp;
    void (*done)(void *opaque, int r);
    void *opaque;
} ExportAsync;

static void export_async_done(void *opaque, int r)
{
    ExportAsync *a = opaque;
    a->done(a->opaque, io_end(a->exp, r));
    g_free(a);
}

static ExportAsync *export_async_new(Export *exp, void (*done)(void *opaque, int r), void *opaque)
{
    ExportAsync *a = g_new(ExportAsync, 1);
    *a = (ExportAsync){ exp, done, opaque };
    return a;
}

/* Both run at once (no allocation) on a node that has no asynchronous
 * path, the usual case. */
void export_pread_async(Export *exp, void *buf, uint32_t count, uint64_t offset,
                        void (*done)(void *opaque, int r), void *opaque)
{
    BlockNode *node = io_begin(exp);
    if (node_async_possible(node, false))
        node_pread_async(node, buf, count, offset, export_async_done, export_async_new(exp, done, opaque));
    else
        done(opaque, io_end(exp, node_pread(node, buf, count, offset)));
}

void export_pwrite_async(Export *exp, const void *buf, uint32_t count, uint64_t offset, uint32_t flags,
                         void (*done)(void *opaque, int r), void *opaque)
{
    g_assert(!exp->read_only);
    BlockNode *node = io_begin(exp);
    if (node_async_possible(node, true))
        node_pwrite_async(node, buf, count, offset, flags, export_async_done, export_async_new(exp, done, opaque));
    else
        done(opaque, io_end(exp, node_pwrite(node, buf, count, offset, flags)));
}

int export_flush(Export *exp)
{
    return io_end(exp, node_flush(io_begin(exp)));
}

/* Runs a 32-bit node operation over a 64-bit range in pieces. */
typedef int (*RangeOp)(BlockNode *node, uint32_t count, uint64_t offset, uint32_t flags);

static int split_range(Export *exp, RangeOp op, uint64_t count, uint64_t offset, uint32_t flags)
{
    BlockNode *node = io_begin(exp);
    while (count > 0) {
        uint32_t n = (uint32_t)MIN(count, EXPORT_SPLIT);
        int r = op(node, n, offset, flags);
        if (r < 0)
            return io_end(exp, r);
        count -= n;
        offset += n;
    }
    return io_end(exp, 0);
}

int export_trim(Export *exp, uint64_t count, uint64_t offset, uint32_t flags)
{
    g_assert(!exp->read_only);
    return split_range(exp, node_trim, count, offset, flags);
}

int export_zero(Export *exp, uint64_t count, uint64_t offset, uint32_t flags)
{
    g_assert(!exp->read_only);
    return split_range(exp, node_zero, count, offset, flags);
}

static int cache_op(BlockNode *node, uint32_t count, uint64_t offset, uint32_t flags)
{
    return node_cache(node, count, offset);
}

int export_cache(Export *exp, uint64_t count, uint64_t offset)
{
    return split_range(exp, cache_op, count, offset, 0);
}

int export_read_fd(Export *exp, uint32_t count, uint64_t offset, int *fd, uint64_t *fd_offset)
{
    return io_end(exp, node_read_fd(io_begin(exp), count, offset, fd, fd_offset));
}

/* The node graph and the node I/O entry points (see block/node.h). */
#define G_LOG_DOMAIN "blockd-block"
#include "block/node.h"
#include "block/io-defer.h"
#include "block/io-log.h"
#include "block/node-internal.h"
#include "block/user.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>

struct NodeWriteHook {
    int order;
    NodeBeforeWriteFn fn;   /* NULL for an after-write hook */
    NodeAfterWriteFn after; /* NULL for a before-write hook */
    void *opaque;
};

static GMutex graph_lock;
static GHashTable *graph_by_name; /* name -> BlockNode * (graph's reference) */
static GPtrArray *graph_order;    /* creation order, same references */

/* Zero buffer for emulated write-zeroes; allocated once, never written. */
#define ZERO_BUFFER_SIZE (4u << 20)
static const void *zero_buffer(void)
{
    static void *buf;
    static gsize done;
    if (g_once_init_enter(&done)) {
        buf = g_malloc0(ZERO_BUFFER_SIZE);
        g_once_init_leave(&done, 1);
    }
    return buf;
}

static void graph_init_locked(void)
{
    if (!graph_by_name) {
        graph_by_name = g_hash_table_new(g_str_hash, g_str_equal);
        graph_order = g_ptr_array_new();
    }
}

/* QEMU's rule: a letter first, then letters, digits, '-', '.', '_'; at most 31 chars. */
static bool node_name_valid(const char *name)
{
    if (!g_ascii_isalpha(name[0]) || strlen(name) > 31)
        return false;
    for (const char *p = name; *p; p++)
        if (!g_ascii_isalnum(*p) && !strchr("-._", *p))
            return false;
    return true;
}

/* A driver's optional boolean callback, or `fallback` when absent. */
static int ask(int (*cb)(void *), void *opaque, int fallback)
{
    return cb ? cb(opaque) : fallback;
}

int node_compute_caps(BlockNode *node)
{
    const BlockDriver *d = node->drv;
    void *op = node->opaque;
    NodeCaps *c = &node->caps;
    int r;

    int64_t size = d->get_size(op);
    if (size < 0)
        return (int)size;
    node->size = (uint64_t)size;

#define ASK(field, cb, fallback)                                                      \
    do {                                                                             \
        if ((r = ask(d->cb, op, (fallback))) < 0)                                    \
            return r;                                                                \
        field = r;                                                                   \
    } while (0)

    int can_write;
    ASK(can_write, can_write, d->pwrite != NULL);
    c->can_write = !node->read_only && can_write;
    if (!c->can_write)
        node->read_only = true;
    ASK(c->can_flush, can_flush, d->flush != NULL);
    ASK(c->is_rotational, is_rotational, 0);
    ASK(c->can_extents, can_extents, d->extents != NULL);
    ASK(c->can_multi_conn, can_multi_conn, 0);
    ASK(c->cache, can_cache, d->cache ? BLOCK_SUPPORT_NATIVE : BLOCK_SUPPORT_NONE);
    if (c->can_write) {
        ASK(c->can_trim, can_trim, d->trim != NULL);
        int native;
        ASK(native, can_zero, d->zero != NULL);
        node->native_zero = native && d->zero;
        c->can_zero = true; /* emulated with zero buffers when not native */
        /* Without a native zero every FAST_ZERO request fails at once, which is fast. */
        ASK(c->can_fast_zero, can_fast_zero, d->zero == NULL);
        ASK(c->fua, can_fua, d->flush ? BLOCK_SUPPORT_EMULATE : BLOCK_SUPPORT_NONE);
        if (c->fua == BLOCK_SUPPORT_EMULATE && !d->flush)
            c->fua = BLOCK_SUPPORT_NONE;
    }
#undef ASK
    c->can_flush = c->can_flush && d->flush;
    if (d->block_size) {
        r = d->block_size(op, &c->block_min, &c->block_preferred, &c->block_max);
        if (r < 0)
            return r;
    }
    return 0;
}

BlockNode *node_create(const BlockdevOptions *options, GError **errp)
{
    if (!options->has_node_name) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "Parameter 'node-name' is missing");
        return NULL;
    }
    const char *name = options->node_name;
    if (!node_name_valid(name)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "Invalid node-name: '%s'", name);
        return NULL;
    }
    g_mutex_lock(&graph_lock);
    graph_init_locked();
    bool duplicate = g_hash_table_contains(graph_by_name, name);
    g_mutex_unlock(&graph_lock);
    if (duplicate) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_EXISTS,
                    "Duplicate nodes with node-name='%s'", name);
        return NULL;
    }
    const char *driver = BlockdevDriver_str[options->driver];
    const BlockDriver *drv = block_driver_find(driver);
    if (!drv) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Parameter 'driver' does not accept value '%s'", driver);
        return NULL;
    }
    bool read_only = options->has_read_only && options->read_only;
    /* "discard": QEMU ignores trims unless discard=unmap; blockd passes them
     * on by default (like nbdkit) and lets discard=ignore turn them off. */
    bool trim_off = options->has_discard && options->discard == BLOCKDEV_DISCARD_OPTIONS_IGNORE;

    BlockNode *node = g_new0(BlockNode, 1);
    node->name = g_strdup(name);
    node->drv = drv;
    node->read_only = read_only;
    node->refcount = 1;
    node->children = g_ptr_array_new_with_free_func((GDestroyNotify)node_unref);
    node->implicit = g_ptr_array_new_with_free_func(g_free);
    node->filename = g_strdup(options->driver == BLOCKDEV_DRIVER_FILE ? options->u.file.filename : NULL);
    g_rw_lock_init(&node->hooks_lock);
    node->hooks = g_ptr_array_new_with_free_func(g_free);
    node->close_notifiers = g_ptr_array_new_with_free_func(g_free);
    node->resize_notifiers = g_ptr_array_new_with_free_func(g_free);
    node->reopen_notifiers = g_ptr_array_new_with_free_func(g_free);
    node_perm_init(node);
    node->opaque = block_driver_open(drv, node, options, read_only, errp);
    if (!node->opaque)
        goto fail;
    int r = node_compute_caps(node);
    if (r < 0) {
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(-r),
                    "Could not open node '%s': %s", name, g_strerror(-r));
        goto fail;
    }
    node->trim_off = trim_off;
    if (trim_off)
        node->caps.can_trim = false;
    if (node->read_only && !read_only)
        node_perm_refresh(node);   /* the driver cannot write after all */

    g_mutex_lock(&graph_lock);
    if (g_hash_table_contains(graph_by_name, name)) {
        g_mutex_unlock(&graph_lock);
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_EXISTS,
                    "Duplicate nodes with node-name='%s'", name);
        goto fail;
    }
    g_hash_table_insert(graph_by_name, node->name, node);
    g_ptr_array_add(graph_order, node);
    g_mutex_unlock(&graph_lock);
    return node;

fail:
    node_unref(node);
    return NULL;
}

BlockNode *node_find(const char *name)
{
    g_mutex_lock(&graph_lock);
    graph_init_locked();
    BlockNode *node = g_hash_table_lookup(graph_by_name, name);
    g_mutex_unlock(&graph_lock);
    return node;
}

GPtrArray *node_list(void)
{
    g_mutex_lock(&graph_lock);
    graph_init_locked();
    GPtrArray *list = g_ptr_array_new();
    for (guint i = 0; i < graph_order->len; i++)
        g_ptr_array_add(list, graph_order->pdata[i]);
    g_mutex_unlock(&graph_lock);
    return list;
}

bool node_delete(const char *name, GError **errp)
{
    g_mutex_lock(&graph_lock);
    graph_init_locked();
    BlockNode *node = g_hash_table_lookup(graph_by_name, name);
    if (!node) {
        g_mutex_unlock(&graph_lock);
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                    "Failed to find node with node-name='%s'", name);
        return false;
    }
    /* QEMU's qmp_blockdev_del checks, in its order: a BlockBackend on it
     * (an export, a mirror's target), op blockers (a job), any other
     * reference (a parent).  A blocked node is always referenced. */
    if (node_users(node) > 0) {
        g_autofree char *blocker = g_strdup(node->blocker);
        g_mutex_unlock(&graph_lock);
        if (node_user_count(node) > 0)
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_BUSY, "Node %s is in use", name);
        else if (blocker)
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_BUSY, "Node '%s' is busy: %s", name, blocker);
        else
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_BUSY, "Block device %s is in use", name);
        return false;
    }
    g_hash_table_remove(graph_by_name, name);
    g_ptr_array_remove(graph_order, node);
    g_mutex_unlock(&graph_lock);
    node_unref(node);
    return true;
}

bool node_block_ops(BlockNode *node, const char *reason, GError **errp)
{
    g_mutex_lock(&graph_lock);
    if (node->blocker) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_BUSY, "Node '%s' is busy: %s", node->name, node->blocker);
        g_mutex_unlock(&graph_lock);
        return false;
    }
    node->blocker = g_strdup(reason);
    g_mutex_unlock(&graph_lock);
    return true;
}

bool node_check_ops(BlockNode *node, GError **errp)
{
    g_mutex_lock(&graph_lock);
    if (node->blocker)
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_BUSY, "Node '%s' is busy: %s", node->name, node->blocker);
    bool free = !node->blocker;
    g_mutex_unlock(&graph_lock);
    return free;
}

void node_unblock_ops(BlockNode *node)
{
    g_mutex_lock(&graph_lock);
    g_clear_pointer(&node->blocker, g_free);
    g_mutex_unlock(&graph_lock);
}

void node_job_filter(BlockNode *node, bool add)
{
    g_mutex_lock(&graph_lock);
    node->job_filters += add ? 1 : -1;
    g_assert(node->job_filters >= 0);
    g_mutex_unlock(&graph_lock);
}

bool node_has_parent(BlockNode *node)
{
    g_mutex_lock(&graph_lock);
    graph_init_locked();
    bool found = node->job_filters > 0;
    for (guint i = 0; i < graph_order->len && !found; i++) {
        BlockNode *parent = graph_order->pdata[i];
        found = g_ptr_array_find(parent->children, node, NULL);
    }
    g_mutex_unlock(&graph_lock);
    return found;
}

GPtrArray *node_ancestors(BlockNode *node)
{
    GPtrArray *set = g_ptr_array_new_with_free_func((GDestroyNotify)node_unref);
    g_ptr_array_add(set, node_ref(node));
    g_mutex_lock(&graph_lock);
    graph_init_locked();
    /* Breadth first over parent edges; the set grows as it is walked. */
    for (guint k = 0; k < set->len; k++) {
        BlockNode *n = set->pdata[k];
        for (guint i = 0; i < graph_order->len; i++) {
            BlockNode *parent = graph_order->pdata[i];
            if (g_ptr_array_find(parent->children, n, NULL) && !g_ptr_array_find(set, parent, NULL))
                g_ptr_array_add(set, node_ref(parent));
        }
    }
    g_mutex_unlock(&graph_lock);
    return set;
}

void node_graph_shutdown(void)
{
    g_mutex_lock(&graph_lock);
    graph_init_locked();
    GPtrArray *order = graph_order;
    graph_order = g_ptr_array_new();
    g_hash_table_remove_all(graph_by_name);
    g_mutex_unlock(&graph_lock);
    /* Newest first: parents were created after their children. */
    for (guint i = order->len; i > 0; i--)
        node_unref(order->pdata[i - 1]);
    g_ptr_array_free(order, TRUE);
}

BlockNode *node_ref(BlockNode *node)
{
    g_atomic_int_inc(&node->refcount);
    return node;
}

void node_unref(BlockNode *node)
{
    if (!node || !g_atomic_int_dec_and_test(&node->refcount))
        return;
    for (guint i = 0; i < node->close_notifiers->len; i++) {
        NodeNotifier *n = node->close_notifiers->pdata[i];
        n->fn(node, n->opaque);
    }
    if (node->opaque && node->drv->close)
        node->drv->close(node->opaque);
    node_perm_detach_all(node);
    g_ptr_array_free(node->children, TRUE);
    /* Implicit children leave the graph with their parent (unless in use;
     * at shutdown the graph is already empty and drops them itself). */
    for (guint i = 0; i < node->implicit->len; i++)
        node_delete(node->implicit->pdata[i], NULL);
    g_ptr_array_free(node->implicit, TRUE);
    g_ptr_array_free(node->hooks, TRUE);
    g_ptr_array_free(node->close_notifiers, TRUE);
    g_ptr_array_free(node->resize_notifiers, TRUE);
    g_ptr_array_free(node->reopen_notifiers, TRUE);
    g_rw_lock_clear(&node->hooks_lock);
    g_free(node->blocker);
    node_perm_clear(node);
    g_free(node->filename);
    g_free(node->name);
    g_free(node);
}

unsigned node_users(BlockNode *node)
{
    return (unsigned)g_atomic_int_get(&node->refcount) - 1;
}

bool node_add_child(BlockNode *parent, BlockNode *child, NodeChildRole role, GError **errp)
{
    if (!node_perm_attach(parent, child, role, errp))
        return false;
    g_ptr_array_add(parent->children, node_ref(child));
    return true;
}

/* True if `node` is `top` or one of its descendants (under graph_lock). */
static bool reaches_locked(BlockNode *top, BlockNode *node)
{
    if (top == node)
        return true;
    for (guint i = 0; i < top->children->len; i++) {
        if (reaches_locked(top->children->pdata[i], node))
            return true;
    }
    return false;
}

bool node_replace_parent_edges(BlockNode *old_node, BlockNode *new_node, GError **errp)
{
    /* The parents to move, as QEMU's should_update_child picks them: not
     * new_node itself nor anything below it (a snapshot overlay keeps the
     * old node as its backing), which would make a cycle. */
    g_autoptr(GPtrArray) parents = g_ptr_array_new_with_free_func((GDestroyNotify)node_unref);
    g_mutex_lock(&graph_lock);
    graph_init_locked();
    for (guint i = 0; i < graph_order->len; i++) {
        BlockNode *p = graph_order->pdata[i];
        if (g_ptr_array_find(p->children, old_node, NULL) && !reaches_locked(new_node, p))
            g_ptr_array_add(parents, node_ref(p));
    }
    g_mutex_unlock(&graph_lock);
    for (guint i = 0; i < parents->len; i++) {
        BlockNode *p = parents->pdata[i];
        if (!p->drv->replace_child) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                        "Cannot replace node '%s': its parent '%s' (driver '%s') cannot change its child",
                        old_node->name, p->name, p->drv->name);
            return false;
        }
        if (!p->read_only && new_node->read_only) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED,
                        "Cannot replace node '%s' by read-only node '%s' under writable node '%s'",
                        old_node->name, new_node->name, p->name);
            return false;
        }
    }
    guint moved = 0;
    for (; moved < parents->len; moved++) {
        if (!node_perm_move_edges(parents->pdata[moved], old_node, new_node, errp))
            break;
    }
    if (moved < parents->len) {
        /* Put back the edges already moved; giving back is never refused. */
        while (moved-- > 0)
            node_perm_move_edges(parents->pdata[moved], new_node, old_node, NULL);
        return false;
    }
    g_mutex_lock(&graph_lock);
    for (guint i = 0; i < parents->len; i++) {
        BlockNode *p = parents->pdata[i];
        p->drv->replace_child(p->opaque, old_node, new_node);
        for (guint k = 0; k < p->children->len; k++) {
            if (p->children->pdata[k] == old_node) {
                p->children->pdata[k] = node_ref(new_node);
                node_unref(old_node);   /* not the last reference: the caller holds one */
            }
        }
    }
    g_mutex_unlock(&graph_lock);
    return true;
}

bool node_set_backing(BlockNode *node, BlockNode *backing, GError **errp)
{
    g_assert(node->drv->set_backing && node->drv->image_info);
    BlockImageInfo info = { 0 };
    node->drv->image_info(node->opaque, &info);
    BlockNode *old = info.backing;
    if (old == backing)
        return true;
    /* The new edge first: its claim may be refused, and then nothing changed. */
    if (backing && !node_add_child(node, backing, NODE_CHILD_COW, errp))
        return false;
    node->drv->set_backing(node->opaque, backing);
    if (old) {
        node_perm_detach(node, old);
        g_mutex_lock(&graph_lock);
        g_ptr_array_remove(node->children, old);   /* drops the edge's reference */
        g_mutex_unlock(&graph_lock);
    }
    return true;
}

void node_drop_backing(BlockNode *node, BlockNode *backing)
{
    node->drv->set_backing(node->opaque, NULL);
    node_perm_detach(node, backing);
    g_mutex_lock(&graph_lock);
    g_ptr_array_remove(node->children, backing);   /* drops the edge's reference */
    g_mutex_unlock(&graph_lock);
}

static gboolean name_equal(gconstpointer a, gconstpointer b) { return strcmp(a, b) == 0; }

bool node_is_implicit_child(BlockNode *parent, BlockNode *child)
{
    g_mutex_lock(&graph_lock);
    bool found = g_ptr_array_find_with_equal_func(parent->implicit, child->name, name_equal, NULL);
    g_mutex_unlock(&graph_lock);
    return found;
}

void node_adopt_implicit_child(BlockNode *from, BlockNode *to, BlockNode *child)
{
    guint i;
    g_mutex_lock(&graph_lock);
    if (g_ptr_array_find_with_equal_func(from->implicit, child->name, name_equal, &i)) {
        g_ptr_array_add(to->implicit, g_ptr_array_steal_index(from->implicit, i));
    }
    g_mutex_unlock(&graph_lock);
}

bool node_release_implicit_child(BlockNode *parent, BlockNode *child)
{
    guint i;
    g_mutex_lock(&graph_lock);
    bool found = g_ptr_array_find_with_equal_func(parent->implicit, child->name, name_equal, &i);
    if (found)
        g_ptr_array_remove_index(parent->implicit, i);
    g_mutex_unlock(&graph_lock);
    return found && node_delete(child->name, NULL);
}

bool node_add_implicit_child(BlockNode *parent, BlockNode *child, NodeChildRole role, GError **errp)
{
    if (!node_add_child(parent, child, role, errp))
        return false;
    g_ptr_array_add(parent->implicit, g_strdup(child->name));
    return true;
}

const char *node_name(BlockNode *node) { return node->name; }
const char *node_driver_name(BlockNode *node) { return node->drv->name; }
/* It changes by node_grow (growing only) and node_truncate (under a drain of
 * every user, so no request in flight can see it move). */
uint64_t node_size(BlockNode *node) { return __atomic_load_n(&node->size, __ATOMIC_ACQUIRE); }
bool node_read_only(BlockNode *node) { return node->read_only; }
const NodeCaps *node_caps(BlockNode *node) { return &node->caps; }
const char *node_filename(BlockNode *node) { return node->filename; }

/* Inserts a hook after those of the same or a lower order. */
static NodeWriteHook *add_hook(BlockNode *node, int order, NodeBeforeWriteFn fn, NodeAfterWriteFn after,
                               void *opaque)
{
    NodeWriteHook *hook = g_new0(NodeWriteHook, 1);
    hook->order = order;
    hook->fn = fn;
    hook->after = after;
    hook->opaque = opaque;
    g_rw_lock_writer_lock(&node->hooks_lock);
    guint i = 0;
    while (i < node->hooks->len && ((NodeWriteHook *)node->hooks->pdata[i])->order <= order)
        i++;
    g_ptr_array_insert(node->hooks, (gint)i, hook);
    g_atomic_int_inc(&node->nhooks);
    g_rw_lock_writer_unlock(&node->hooks_lock);
    return hook;
}

NodeWriteHook *node_add_before_write_hook(BlockNode *node, int order, NodeBeforeWriteFn fn, void *opaque)
{
    return add_hook(node, order, fn, NULL, opaque);
}

NodeWriteHook *node_add_after_write_hook(BlockNode *node, int order, NodeAfterWriteFn fn, void *opaque)
{
    return add_hook(node, order, NULL, fn, opaque);
}

void node_remove_before_write_hook(BlockNode *node, NodeWriteHook *hook)
{
    g_rw_lock_writer_lock(&node->hooks_lock);
    if (g_ptr_array_remove(node->hooks, hook))
        g_atomic_int_add(&node->nhooks, -1);
    g_rw_lock_writer_unlock(&node->hooks_lock);
}

void node_add_close_notifier(BlockNode *node, void (*fn)(BlockNode *node, void *opaque), void *opaque)
{
    NodeNotifier *n = g_new0(NodeNotifier, 1);
    n->fn = fn;
    n->opaque = opaque;
    g_ptr_array_add(node->close_notifiers, n);
}

/* Runs the before-write hooks; costs one atomic read when there are none. */
static int run_before_write_hooks(BlockNode *node, uint64_t offset, uint64_t count, NodeWriteKind kind)
{
    if (count == 0 || g_atomic_int_get(&node->nhooks) == 0)
        return 0;
    int r = 0;
    g_rw_lock_reader_lock(&node->hooks_lock);
    for (guint i = 0; i < node->hooks->len && r == 0; i++) {
        NodeWriteHook *h = node->hooks->pdata[i];
        if (h->fn)
            r = h->fn(node, offset, count, kind, h->opaque);
    }
    g_rw_lock_reader_unlock(&node->hooks_lock);
    return r;
}

/* Runs the after-write hooks with the write's result; returns it unchanged. */
static int run_after_write_hooks(BlockNode *node, const void *buf, uint64_t offset, uint64_t count,
                                 NodeWriteKind kind, int result)
{
    if (count == 0 || g_atomic_int_get(&node->nhooks) == 0)
        return result;
    g_rw_lock_reader_lock(&node->hooks_lock);
    for (guint i = 0; i < node->hooks->len; i++) {
        NodeWriteHook *h = node->hooks->pdata[i];
        if (h->after)
            h->after(node, buf, offset, count, kind, result, h->opaque);
    }
    g_rw_lock_reader_unlock(&node->hooks_lock);
    return result;
}

static void assert_range(BlockNode *node, uint64_t count, uint64_t offset)
{
    uint64_t size = node_size(node);
    g_assert(offset <= size && count <= size - offset);
}

static int pread_unlogged(BlockNode *node, void *buf, uint32_t count, uint64_t offset)
{
    assert_range(node, count, offset);
    if (count == 0)
        return 0;
    return node->drv->pread(node->opaque, buf, count, offset, 0);
}

/* Strips FUA the driver cannot do natively; true if a flush must follow. */
static bool fua_needs_flush(BlockNode *node, uint32_t *flags)
{
    if (!(*flags & BLOCK_FLAG_FUA) || node->caps.fua == BLOCK_SUPPORT_NATIVE)
        return false;
    *flags &= ~BLOCK_FLAG_FUA;
    return node->caps.fua == BLOCK_SUPPORT_EMULATE;
}

static int flush_after(BlockNode *node, int r, bool needed)
{
    if (r == 0 && needed)
        r = node->drv->flush(node->opaque, 0);
    return r;
}

static int pwrite_unlogged(BlockNode *node, const void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    assert_range(node, count, offset);
    g_assert(!node->read_only);
    bool flush = fua_needs_flush(node, &flags);
    int r = run_before_write_hooks(node, offset, count, NODE_WRITE_DATA);
    if (r < 0)
        return run_after_write_hooks(node, buf, offset, count, NODE_WRITE_DATA, r);
    r = count ? node->drv->pwrite(node->opaque, buf, count, offset, flags) : 0;
    r = flush_after(node, r, flush);
    return run_after_write_hooks(node, buf, offset, count, NODE_WRITE_DATA, r);
}

static int flush_unlogged(BlockNode *node)
{
    if (!node->drv->flush)
        return 0;
    return node->drv->flush(node->opaque, 0);
}

static int trim_unlogged(BlockNode *node, uint32_t count, uint64_t offset, uint32_t flags)
{
    assert_range(node, count, offset);
    g_assert(!node->read_only);
    bool flush = fua_needs_flush(node, &flags);
    int r = 0;
    bool hooked = count && node->caps.can_trim && node->drv->trim;
    if (hooked)
        r = run_before_write_hooks(node, offset, count, NODE_WRITE_TRIM);
    if (r < 0)
        return run_after_write_hooks(node, NULL, offset, count, NODE_WRITE_TRIM, r);
    if (hooked)
        r = node->drv->trim(node->opaque, count, offset, flags);
    r = flush_after(node, r, flush);
    return hooked ? run_after_write_hooks(node, NULL, offset, count, NODE_WRITE_TRIM, r) : r;
}

static int node_zero_driver(BlockNode *node, uint32_t count, uint64_t offset, uint32_t flags, bool flush);

static int zero_unlogged(BlockNode *node, uint32_t count, uint64_t offset, uint32_t flags)
{
    assert_range(node, count, offset);
    g_assert(!node->read_only);
    bool flush = fua_needs_flush(node, &flags);
    if (count == 0)
        return flush_after(node, 0, flush);
    int r = run_before_write_hooks(node, offset, count, NODE_WRITE_ZERO);
    if (r == 0)
        r = node_zero_driver(node, count, offset, flags, flush);
    return run_after_write_hooks(node, NULL, offset, count, NODE_WRITE_ZERO, r);
}

/* node_zero once the hooks let it through: native, else zero buffers. */
static int node_zero_driver(BlockNode *node, uint32_t count, uint64_t offset, uint32_t flags, bool flush)
{
    if (node->native_zero) {
        int r = node->drv->zero(node->opaque, count, offset, flags);
        if (r != -ENOTSUP && r != -EOPNOTSUPP)
            return flush_after(node, r, flush);
    }
    if (flags & BLOCK_FLAG_FAST_ZERO)
        return -ENOTSUP;
    /* Fallback: write zero buffers (never punches holes). */
    const void *zeroes = zero_buffer();
    while (count > 0) {
        uint32_t n = MIN(count, ZERO_BUFFER_SIZE);
        int r = node->drv->pwrite(node->opaque, zeroes, n, offset, 0);
        if (r < 0)
            return r;
        count -= n;
        offset += n;
    }
    return flush_after(node, 0, flush);
}

static int cache_unlogged(BlockNode *node, uint32_t count, uint64_t offset)
{
    assert_range(node, count, offset);
    if (count == 0)
        return 0;
    if (node->caps.cache == BLOCK_SUPPORT_NATIVE)
        return node->drv->cache ? node->drv->cache(node->opaque, count, offset, 0) : 0;
    /* Emulate by reading into a scratch buffer and dropping it. */
    enum { SCRATCH = 1u << 20 };
    g_autofree void *scratch = g_malloc(MIN(count, SCRATCH));
    while (count > 0) {
        uint32_t n = MIN(count, SCRATCH);
        int r = node->drv->pread(node->opaque, scratch, n, offset, 0);
        if (r < 0)
            return r;
        count -= n;
        offset += n;
    }
    return 0;
}

static int block_status_unlogged(BlockNode *node, uint32_t count, uint64_t offset, uint32_t flags,
                                 BlockExtents *extents)
{
    assert_range(node, count, offset);
    g_assert(count > 0);
    if (node->caps.can_extents) {
        size_t before = extents_count(extents);
        uint64_t next = extents_next_offset(extents);
        int r = node->drv->extents(node->opaque, count, offset, flags, extents);
        if (r < 0)
            return r;
        if (extents_count(extents) > before || extents_next_offset(extents) > next)
            return 0;
        return -EINVAL; /* the driver must describe at least one extent */
    }
    /* No extent information: everything is data. */
    return extents_add(extents, offset, count, 0);
}

/* The public entry points: each failed request is logged once (block/io-log.h). */

int node_pread(BlockNode *node, void *buf, uint32_t count, uint64_t offset)
{
    io_log_enter();
    return io_log_leave(node->name, "read", offset, count, pread_unlogged(node, buf, count, offset));
}

int node_pwrite(BlockNode *node, const void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    io_log_enter();
    return io_log_leave(node->name, "write", offset, count, pwrite_unlogged(node, buf, count, offset, flags));
}

/* A read or write started on a driver's asynchronous path. */
typedef struct AsyncIo {
    const char *node_name;
    const char *what;   /* "read" or "write", for the I/O log */
    bool log;           /* the outermost node of the request: its failure is logged */
    IoDefer *scope;
    uint64_t offset;
    uint32_t count;
    void (*done)(void *opaque, int r);
    void *opaque;
} AsyncIo;

/* Inside a driver's pread_async/pwrite_async on this thread: a node there
 * (raw over nbd) starts its child's part of the same request. */
static __thread unsigned async_nesting;

static void async_io_done(void *opaque, int r)
{
    AsyncIo *w = opaque;
    /* Only the outermost node logs, as for synchronous calls; a lost
     * connection is the caller's to retry synchronously (node.h), which
     * logs what still fails. */
    if (w->log && r != -ENOTCONN)
        r = io_log_result(w->node_name, w->what, w->offset, w->count, r);
    /* The node may go once done returned. */
    w->done(w->opaque, r);
    io_defer_done(w->scope);
    g_free(w);
}

/* Starts op on the driver's asynchronous path, counted in the calling
 * thread's deferral scope; false (done not called) if it could not start. */
static bool async_io_start(BlockNode *node, IoDefer *scope, bool write, void *buf, uint32_t count,
                           uint64_t offset, uint32_t flags, void (*done)(void *opaque, int r), void *opaque)
{
    assert_range(node, count, offset);
    g_assert(!write || !node->read_only);
    const char *what = write ? "write" : "read";
    AsyncIo *w = g_new(AsyncIo, 1);
    *w = (AsyncIo){ node->name, what, async_nesting == 0, scope, offset, count, done, opaque };
    io_defer_add(scope);
    /* What the driver does synchronously for its children is not logged
     * there: this request's completion logs it once, as this node's. */
    async_nesting++;
    io_log_enter();
    int r = write ? node->drv->pwrite_async(node->opaque, buf, count, offset, flags, async_io_done, w)
                  : node->drv->pread_async(node->opaque, buf, count, offset, flags, async_io_done, w);
    io_log_leave(node->name, what, offset, count, 0); /* w may be gone: done may have run */
    async_nesting--;
    if (r == 0)
        return true;
    io_defer_done(scope);
    g_free(w);
    return false;
}

bool node_async_possible(BlockNode *node, bool write)
{
    const BlockDriver *drv = node->drv;
    if (!(write ? drv->pwrite_async != NULL : drv->pread_async != NULL))
        return false;
    return !drv->async_possible || drv->async_possible(node->opaque, write);
}

void node_pwrite_async(BlockNode *node, const void *buf, uint32_t count, uint64_t offset, uint32_t flags,
                       void (*done)(void *opaque, int r), void *opaque)
{
    IoDefer *scope = io_defer_current();
    uint32_t f = flags;
    /* Hooks expect the data on the node when the after-write hooks run,
     * and emulated FUA needs a flush after the write. */
    if (scope && count && node_async_possible(node, true) && g_atomic_int_get(&node->nhooks) == 0 &&
        !fua_needs_flush(node, &f) && async_io_start(node, scope, true, (void *)buf, count, offset, f, done, opaque))
        return;
    done(opaque, node_pwrite(node, buf, count, offset, flags));
}

void node_pread_async(BlockNode *node, void *buf, uint32_t count, uint64_t offset,
                      void (*done)(void *opaque, int r), void *opaque)
{
    IoDefer *scope = io_defer_current();
    if (scope && count && node_async_possible(node, false) && async_io_start(node, scope, false, buf, count, offset, 0, done, opaque))
        return;
    done(opaque, node_pread(node, buf, count, offset));
}

bool node_can_write_compressed(BlockNode *node)
{
    return node->drv->pwrite_compressed != NULL;
}

/* A compressed write runs the write hooks like node_pwrite (no FUA). */
static int pwrite_compressed_unlogged(BlockNode *node, const void *buf, uint32_t count, uint64_t offset)
{
    assert_range(node, count, offset);
    g_assert(!node->read_only);
    if (!node->drv->pwrite_compressed)
        return -ENOTSUP;
    int r = run_before_write_hooks(node, offset, count, NODE_WRITE_DATA);
    if (r == 0)
        r = count ? node->drv->pwrite_compressed(node->opaque, buf, count, offset) : 0;
    return run_after_write_hooks(node, buf, offset, count, NODE_WRITE_DATA, r);
}

int node_pwrite_compressed(BlockNode *node, const void *buf, uint32_t count, uint64_t offset)
{
    io_log_enter();
    return io_log_leave(node->name, "write", offset, count, pwrite_compressed_unlogged(node, buf, count, offset));
}

int node_flush(BlockNode *node)
{
    io_log_enter();
    return io_log_leave(node->name, "flush", 0, 0, flush_unlogged(node));
}

int node_trim(BlockNode *node, uint32_t count, uint64_t offset, uint32_t flags)
{
    io_log_enter();
    return io_log_leave(node->name, "trim", offset, count, trim_unlogged(node, count, offset, flags));
}

int node_zero(BlockNode *node, uint32_t count, uint64_t offset, uint32_t flags)
{
    io_log_enter();
    return io_log_leave(node->name, "write-zeroes", offset, count, zero_unlogged(node, count, offset, flags));
}

int node_cache(BlockNode *node, uint32_t count, uint64_t offset)
{
    io_log_enter();
    return io_log_leave(node->name, "cache", offset, count, cache_unlogged(node, count, offset));
}

int node_block_status(BlockNode *node, uint32_t count, uint64_t offset, uint32_t flags, BlockExtents *extents)
{
    io_log_enter();
    return io_log_leave(node->name, "block-status", offset, count,
                        block_status_unlogged(node, count, offset, flags, extents));
}

int node_read_fd(BlockNode *node, uint32_t count, uint64_t offset, int *fd, uint64_t *fd_offset)
{
    assert_range(node, count, offset);
    if (!node->drv->read_fd)
        return -ENOTSUP;
    int drv_fd;
    int r = node->drv->read_fd(node->opaque, count, offset, &drv_fd, fd_offset);
    if (r < 0)
        return r;
    /* The caller sends from it after the request has left the node (and a
     * pivot or blockdev-del may close the node meanwhile): its own copy
     * keeps the bytes those of this node's file, never of whatever file is
     * opened next under the same number. */
    *fd = fcntl(drv_fd, F_DUPFD_CLOEXEC, 0);
    return *fd < 0 ? -errno : 0;
}

int node_grow(BlockNode *node, uint64_t size)
{
    uint64_t cur = node_size(node);
    if (size <= cur)
        return 0;
    if (node->read_only)
        return -EROFS;
    if (!node->drv->grow)
        return -ENOTSUP;
    int r = node->drv->grow(node->opaque, size);
    if (r < 0)
        return r;
    while (cur < size &&
           !__atomic_compare_exchange_n(&node->size, &cur, size, false, __ATOMIC_RELEASE, __ATOMIC_ACQUIRE))
        ;
    return 0;
}

bool node_image_info(BlockNode *node, BlockImageInfo *info)
{
    memset(info, 0, sizeof *info);
    if (!node->drv->image_info)
        return false;
    node->drv->image_info(node->opaque, info);
    return true;
}

void node_debug_event(BlockNode *node, BlkdebugEvent event)
{
    if (node->drv->debug_event)
        node->drv->debug_event(node->opaque, event);
}

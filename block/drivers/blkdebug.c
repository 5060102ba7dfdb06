/* blkdebug: QEMU's fault-injection filter.  I/O passes through to the
 * `image` child; inject-error rules fail requests once an event activated
 * them, set-state rules move a small state machine (state 1 at start).
 *
 * As in QEMU, an event (raised by a parent on its way through this node,
 * by this node's own write path, or "none" at open) makes the inject-error
 * rules of that event that match the current state the active set, in
 * place of the previous one; each request then fails with the first
 * active rule whose sector and iotype match.  Never offers read_fd, so
 * every read passes the rules. */
#include "block/driver.h"
#include "block/node.h"
#include "block/child-ref.h"
#include "block/drivers/blkdebug.h"

#include <errno.h>
#include <string.h>

typedef struct BlkdebugState {
    BlockNode *self, *child;
    uint64_t align, max_transfer, opt_write_zero, max_write_zero, opt_discard, max_discard;
    uint32_t request_alignment; /* MAX(align, the child's minimum block size, 1) */
    BlockFlushGen flush_gen;

    GMutex lock; /* protects what follows */
    int state;
    BlkdebugRules rules;
    GPtrArray *active; /* BlkdebugRule *, borrowed from rules */
} BlkdebugState;

static void blkdebug_event(void *opaque, BlkdebugEvent event)
{
    BlkdebugState *s = opaque;
    g_assert((unsigned)event < BLKDBG__MAX);
    g_mutex_lock(&s->lock);
    int new_state = s->state;
    unsigned injected = 0;
    GPtrArray *rules = s->rules.by_event[event];
    for (guint i = 0; i < rules->len; i++) {
        BlkdebugRule *rule = rules->pdata[i];
        if (rule->state && rule->state != s->state)
            continue;
        if (rule->action == BLKDEBUG_SET_STATE) {
            new_state = rule->new_state;
        } else {
            if (injected++ == 0)
                g_ptr_array_set_size(s->active, 0);
            g_ptr_array_insert(s->active, 0, rule);
        }
    }
    s->state = new_state;
    g_mutex_unlock(&s->lock);
}

/* 0 to let the request through, else what it returns: -errno, or a
 * positive value for a rule with a negative errno (QEMU then completes the
 * request without doing it). */
static int rule_check(BlkdebugState *s, uint64_t offset, uint64_t bytes, BlkdebugIOType kind)
{
    g_mutex_lock(&s->lock);
    BlkdebugRule *rule = NULL;
    for (guint i = 0; i < s->active->len && !rule; i++) {
        BlkdebugRule *r = s->active->pdata[i];
        /* QEMU's test: the sector's first byte lies inside the request. */
        bool where = r->offset == -1 ||
                     (bytes && (uint64_t)r->offset >= offset && (uint64_t)r->offset < offset + bytes);
        if (where && (r->iotype_mask & (1ull << kind)))
            rule = r;
    }
    int error = rule ? rule->error : 0;
    if (error && rule->once) {
        g_ptr_array_remove(s->active, rule);
        g_ptr_array_remove(s->rules.by_event[rule->event], rule); /* frees it */
    }
    g_mutex_unlock(&s->lock);
    return -error;
}

static void blkdebug_close(void *opaque)
{
    BlkdebugState *s = opaque;
    blkdebug_rules_clear(&s->rules);
    g_ptr_array_free(s->active, TRUE);
    g_mutex_clear(&s->lock);
    g_free(s);
}

/* QEMU reads these as sizes: a negative number is refused by name. */
static bool get_limit(const char *key, bool has, int64_t v, uint64_t *out, GError **errp)
{
    if (!has)
        return true;
    if (v < 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Parameter '%s' expects a non-negative number below 2^64", key);
        return false;
    }
    *out = (uint64_t)v;
    return true;
}

/* QEMU's checks, in its order: each limit a multiple of what it refines. */
static bool check_limits(BlkdebugState *s, GError **errp)
{
    const char *bad = NULL;
    uint64_t value = 0;
    uint64_t a = s->request_alignment;
#define CHECK(name, v, multiple_of)                                                 \
    if (!bad && (v) && ((v) >= G_MAXINT || (v) % (multiple_of) != 0)) {             \
        bad = name;                                                                 \
        value = (v);                                                                \
    }
    if (s->align && (s->align >= G_MAXINT || (s->align & (s->align - 1)))) {
        bad = "align";
        value = s->align;
    }
    CHECK("max-transfer", s->max_transfer, a);
    CHECK("opt-write-zero", s->opt_write_zero, a);
    CHECK("max-write-zero", s->max_write_zero, MAX(s->opt_write_zero, a));
    CHECK("opt-discard", s->opt_discard, a);
    CHECK("max-discard", s->max_discard, MAX(s->opt_discard, a));
#undef CHECK
    if (bad)
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Cannot meet constraints with %s %" G_GUINT64_FORMAT, bad, (guint64)value);
    return !bad;
}

static void *blkdebug_open(BlockNode *self, const BlockdevOptionsBlkdebug *opts, bool read_only, GError **errp)
{
    BlkdebugState *s = g_new0(BlkdebugState, 1);
    g_mutex_init(&s->lock);
    s->active = g_ptr_array_new();
    s->self = self;
    bool created = false;
    /* QEMU's order: option types, the rules, the image, the limits. */
    if (!get_limit("align", opts->has_align, opts->align, &s->align, errp) ||
        !get_limit("max-transfer", opts->has_max_transfer, opts->max_transfer, &s->max_transfer, errp) ||
        !get_limit("opt-write-zero", opts->has_opt_write_zero, opts->opt_write_zero, &s->opt_write_zero, errp) ||
        !get_limit("max-write-zero", opts->has_max_write_zero, opts->max_write_zero, &s->max_write_zero, errp) ||
        !get_limit("opt-discard", opts->has_opt_discard, opts->opt_discard, &s->opt_discard, errp) ||
        !get_limit("max-discard", opts->has_max_discard, opts->max_discard, &s->max_discard, errp))
        goto fail;
    if (!blkdebug_rules_parse(&s->rules, opts, errp))
        goto fail;
    s->child = node_open_child(self, opts->image, "-image", &created, errp);
    if (!s->child)
        goto fail;
    if (!read_only && node_read_only(s->child)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_READ_ONLY, "Node '%s' is read-only; open '%s' with read-only=on",
                    node_name(s->child), node_name(self));
        goto fail;
    }
    s->request_alignment = MAX(MAX(s->align, node_caps(s->child)->block_min), 1);
    if (!check_limits(s, errp))
        goto fail;
    if (!(created ? node_add_implicit_child : node_add_child)(self, s->child, NODE_CHILD_FILTERED, errp))
        goto fail;
    s->state = 1;
    blkdebug_event(s, BLKDBG_NONE);
    return s;
fail:
    if (created)
        node_delete(node_name(s->child), NULL);
    blkdebug_close(s);
    return NULL;
}

static int64_t blkdebug_get_size(void *o) { return (int64_t)node_size(((BlkdebugState *)o)->child); }
static const NodeCaps *child_caps(void *o) { return node_caps(((BlkdebugState *)o)->child); }
static int blkdebug_can_write(void *o) { return !node_read_only(((BlkdebugState *)o)->child); }
static int blkdebug_yes(void *o) { return 1; }
static int blkdebug_can_trim(void *o) { return child_caps(o)->can_trim; }
static int blkdebug_can_fast_zero(void *o) { return child_caps(o)->can_fast_zero; }
/* FUA is a flush after the write, as QEMU does over a file: the flush rules see it. */
static int blkdebug_can_fua(void *o) { return BLOCK_SUPPORT_EMULATE; }
static int blkdebug_can_cache(void *o) { return BLOCK_SUPPORT_EMULATE; } /* by reads, which the rules see */
static int blkdebug_can_multi_conn(void *o) { return child_caps(o)->can_multi_conn; }
static int blkdebug_is_rotational(void *o) { return child_caps(o)->is_rotational; }

static int blkdebug_block_size(void *o, uint32_t *min, uint32_t *pref, uint32_t *max)
{
    BlkdebugState *s = o;
    const NodeCaps *c = child_caps(o);
    *min = s->align ? (uint32_t)s->align : c->block_min;
    *max = s->max_transfer ? (uint32_t)s->max_transfer : c->block_max;
    *pref = MAX(c->block_preferred, *min);
    if (*max && *pref > *max)
        *pref = *max;
    return 0;
}

/* Requests longer than max-transfer are split, each piece checked, as
 * QEMU's block layer does before calling the driver. */
static uint32_t piece(BlkdebugState *s, uint32_t count)
{
    return s->max_transfer && count > s->max_transfer ? (uint32_t)s->max_transfer : count;
}

static int blkdebug_pread(void *o, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    BlkdebugState *s = o;
    for (uint32_t done = 0, n; done < count; done += n) {
        n = piece(s, count - done);
        int r = rule_check(s, offset + done, n, BLKDEBUG_IO_TYPE_READ);
        if (r > 0)
            memset((char *)buf + done, 0, n);
        else if (r == 0)
            r = node_pread(s->child, (char *)buf + done, n, offset + done);
        if (r < 0)
            return r;
    }
    return 0;
}

static int blkdebug_pwrite(void *o, const void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    BlkdebugState *s = o;
    int r = 0;
    blkdebug_event(s, BLKDBG_PWRITEV);
    for (uint32_t done = 0, n; done < count && r == 0; done += n) {
        n = piece(s, count - done);
        r = rule_check(s, offset + done, n, BLKDEBUG_IO_TYPE_WRITE);
        if (r == 0)
            r = node_pwrite(s->child, (const char *)buf + done, n, offset + done, flags);
    }
    blkdebug_event(s, BLKDBG_PWRITEV_DONE);
    block_flush_gen_write(&s->flush_gen);
    return r > 0 ? 0 : r;
}

/* The length of the next piece of a zero or discard request, as QEMU's
 * block layer splits it: up to the next multiple of `align`, then whole
 * multiples of it, at most `max` (0: no limit). */
static uint64_t split(uint64_t offset, uint64_t bytes, uint64_t align, uint64_t max)
{
    uint64_t head = offset % align, tail = (offset + bytes) % align, num = bytes;
    max = max ? max / align * align : 0;
    if (head)
        num = MIN(bytes, align - head);
    else if (tail && num > align)
        num -= tail;
    return max && num > max ? max : num;
}

/* QEMU's fallback when write-zeroes is "not supported": plain writes. */
static int zero_by_writes(BlkdebugState *s, uint32_t count, uint64_t offset, uint32_t flags)
{
    if (flags & BLOCK_FLAG_FAST_ZERO)
        return -ENOTSUP;
    for (uint32_t done = 0, n; done < count; done += n) {
        n = piece(s, count - done);
        int r = rule_check(s, offset + done, n, BLKDEBUG_IO_TYPE_WRITE);
        if (r == 0)
            r = node_zero(s->child, n, offset + done, flags & BLOCK_FLAG_FUA);
        if (r < 0)
            return r;
    }
    return 0;
}

static int blkdebug_zero(void *o, uint32_t count, uint64_t offset, uint32_t flags)
{
    BlkdebugState *s = o;
    uint64_t align = MAX(s->request_alignment, s->opt_write_zero);
    int r = 0;
    blkdebug_event(s, BLKDBG_PWRITEV_ZERO);
    for (uint32_t done = 0, n; done < count && r == 0; done += n) {
        n = (uint32_t)split(offset + done, count - done, align, s->max_write_zero);
        /* blkdebug refuses pieces below the alignment: the fallback writes them. */
        r = n < align ? -ENOTSUP : rule_check(s, offset + done, n, BLKDEBUG_IO_TYPE_WRITE_ZEROES);
        if (r == 0)
            r = node_zero(s->child, n, offset + done, flags);
        if (r == -ENOTSUP)
            r = zero_by_writes(s, n, offset + done, flags);
        if (r > 0)
            r = 0;
    }
    blkdebug_event(s, BLKDBG_PWRITEV_DONE);
    block_flush_gen_write(&s->flush_gen);
    return r;
}

static int blkdebug_trim(void *o, uint32_t count, uint64_t offset, uint32_t flags)
{
    BlkdebugState *s = o;
    uint64_t align = MAX(s->request_alignment, s->opt_discard);
    int r = 0;
    for (uint32_t done = 0, n; done < count; done += n) {
        n = (uint32_t)split(offset + done, count - done, align, s->max_discard);
        if (n < s->request_alignment)
            continue; /* blkdebug says "not supported", which a discard ignores */
        r = rule_check(s, offset + done, n, BLKDEBUG_IO_TYPE_DISCARD);
        if (r == 0)
            r = node_trim(s->child, n, offset + done, 0);
        if (r < 0 && r != -ENOTSUP)
            break;
        r = 0;
    }
    block_flush_gen_write(&s->flush_gen);
    return r;
}

/* QEMU's bdrv_co_flush: events for the child, then the flush rules, but
 * only when something was written since the last successful flush. */
static int blkdebug_flush(void *o, uint32_t flags)
{
    BlkdebugState *s = o;
    if (node_read_only(s->self))
        return 0;
    bool needed;
    node_debug_event(s->child, BLKDBG_FLUSH_TO_OS);
    unsigned gen = block_flush_gen_begin(&s->flush_gen, &needed);
    if (needed) {
        node_debug_event(s->child, BLKDBG_FLUSH_TO_DISK);
        int r = rule_check(s, 0, 0, BLKDEBUG_IO_TYPE_FLUSH);
        if (r)
            return r > 0 ? 0 : r;
    }
    int r = node_flush(s->child);
    if (r == 0)
        block_flush_gen_done(&s->flush_gen, gen);
    return r;
}

static int blkdebug_extents(void *o, uint32_t count, uint64_t offset, uint32_t flags, BlockExtents *extents)
{
    BlkdebugState *s = o;
    int r = rule_check(s, offset, count, BLKDEBUG_IO_TYPE_BLOCK_STATUS);
    if (r > 0)
        return extents_add(extents, offset, count, 0);
    return r ? r : node_block_status(s->child, count, offset, flags, extents);
}

static int blkdebug_grow(void *o, uint64_t size) { return node_grow(((BlkdebugState *)o)->child, size); }

static void blkdebug_replace_child(void *o, BlockNode *old_child, BlockNode *new_child)
{
    BlkdebugState *s = o;
    g_assert(s->child == old_child);
    s->child = new_child;
}

/* block_resize passes through to the image (QEMU's blkdebug_co_truncate). */
static bool blkdebug_truncate(void *o, uint64_t size, GError **errp)
{
    return node_truncate(((BlkdebugState *)o)->child, size, errp);
}

const BlockDriver block_driver_blkdebug = {
    .name = "blkdebug",
    .type = BLOCKDEV_DRIVER_BLKDEBUG,
    .open.blkdebug = blkdebug_open,
    .close = blkdebug_close,
    .reopen = block_driver_reopen_passthrough,
    .get_size = blkdebug_get_size,
    .truncate = blkdebug_truncate,
    .can_write = blkdebug_can_write,
    .can_flush = blkdebug_yes,
    .can_trim = blkdebug_can_trim,
    .can_zero = blkdebug_yes,
    .can_fast_zero = blkdebug_can_fast_zero,
    .can_fua = blkdebug_can_fua,
    .can_cache = blkdebug_can_cache,
    .can_extents = blkdebug_yes,
    .can_multi_conn = blkdebug_can_multi_conn,
    .is_rotational = blkdebug_is_rotational,
    .block_size = blkdebug_block_size,
    .pread = blkdebug_pread,
    .pwrite = blkdebug_pwrite,
    .flush = blkdebug_flush,
    .trim = blkdebug_trim,
    .zero = blkdebug_zero,
    .extents = blkdebug_extents,
    .grow = blkdebug_grow,
    .debug_event = blkdebug_event,
    /* no read_fd: a zero-copy read would bypass the rules */
    .replace_child = blkdebug_replace_child,
};

/* The backing file recorded in a qcow2 header (QEMU's
 * qcow2_change_backing_file): block-stream and block-commit rewrite it when
 * they take layers out of a chain.
 *
 * The header cluster is rebuilt from what is on disk: the header fields as
 * they are, every extension kept in its order except the backing format,
 * which goes first (where QEMU puts it) or away, then the end marker and
 * the name.  It is written in one write, then flushed, so the image names
 * either the old backing file or the new one. */
#include "block/drivers/qcow2-internal.h"

#include <errno.h>
#include <stdlib.h>

/* Appends an extension (type, length, data padded to 8 bytes) at *off; false if it does not fit. */
static bool put_ext(uint8_t *h, uint32_t cs, uint64_t *off, uint32_t type, const void *data, uint32_t len)
{
    uint64_t padded = ((uint64_t)len + 7) / 8 * 8;
    if (*off + 8 + padded > cs)
        return false;
    put_be32(h + *off, type);
    put_be32(h + *off + 4, len);
    memset(h + *off + 8, 0, padded);
    memcpy(h + *off + 8, data, len);
    *off += 8 + padded;
    return true;
}

/* Builds the new header cluster `out` from the current one `h`; -ENOSPC if it does not fit. */
static int rebuild(const Qcow2 *s, const uint8_t *h, uint8_t *out, const char *name, const char *fmt)
{
    uint64_t old_name_off = be64_at(h + 8);
    uint64_t ext_end = old_name_off ? MIN(old_name_off, (uint64_t)s->cs) : s->cs;
    memcpy(out, h, s->header_length);
    memset(out + s->header_length, 0, s->cs - s->header_length);
    uint64_t off = s->header_length;
    if (fmt && !put_ext(out, s->cs, &off, EXT_BACKING_FORMAT, fmt, (uint32_t)strlen(fmt)))
        return -ENOSPC;
    /* Open checked the extensions' bounds; keep every other one as it is. */
    for (uint64_t in = s->header_length; in + 8 <= ext_end;) {
        uint32_t type = be32_at(h + in), len = be32_at(h + in + 4);
        if (type == EXT_END)
            break;
        if (type != EXT_BACKING_FORMAT && !put_ext(out, s->cs, &off, type, h + in + 8, len))
            return -ENOSPC;
        in += 8 + ((uint64_t)len + 7) / 8 * 8;
    }
    if (off + 8 > s->cs)
        return -ENOSPC;
    put_be32(out + off, EXT_END);
    put_be32(out + off + 4, 0);
    off += 8;
    size_t nlen = name ? strlen(name) : 0;
    if (nlen > MAX_BACKING_NAME || off + nlen > s->cs)
        return -ENOSPC;
    if (nlen)
        memcpy(out + off, name, nlen);
    put_be64(out + 8, name ? off : 0);
    put_be32(out + 16, (uint32_t)nlen);
    return 0;
}

/* Resolves a relative name against the image's directory, as open does. */
static char *full_name(Qcow2 *s, const char *name)
{
    const char *me = node_filename(s->file);
    if (!name || g_path_is_absolute(name) || strstr(name, "://") || !me)
        return g_strdup(name);
    g_autofree char *dir = g_path_get_dirname(me);
    return g_build_filename(dir, name, NULL);
}

int qcow2_write_backing_file(void *o, const char *name, const char *fmt)
{
    Qcow2 *s = o;
    if (s->read_only)
        return -EROFS;
    g_autofree uint8_t *h = g_malloc(s->cs);
    g_autofree uint8_t *out = g_malloc(s->cs);
    g_mutex_lock(&s->lock);
    int r = s->broken ? -EIO : file_read(s, h, s->cs, 0);
    if (r == 0)
        r = rebuild(s, h, out, name, name ? fmt : NULL);
    /* The data the header's new name leads to must be there first (QEMU
     * flushes before it updates the header too). */
    if (r == 0)
        r = node_flush(s->file);
    if (r == 0)
        r = qcow2_file_write(s, out, s->cs, 0);
    if (r == 0)
        r = node_flush(s->file);
    if (r == 0) {
        g_free(s->backing_name);
        g_free(s->backing_full);
        g_free(s->backing_fmt);
        s->backing_name = g_strdup(name);
        s->backing_full = full_name(s, name);
        s->backing_fmt = name ? g_strdup(fmt) : NULL;
    }
    g_mutex_unlock(&s->lock);
    return r;
}

/* qcow2 compressed cluster writes (backups with compress=true).
 *
 * The format is QEMU's: raw deflate, no zlib or gzip header.  zlib is used
 * directly rather than GLib's GZlibCompressor because the window must be
 * 4 KiB (windowBits -12): QEMU inflates compressed clusters with
 * windowBits -12, so data deflated with the default 32 KiB window may
 * refer back further than QEMU's inflater can reach.  GZlibCompressor
 * offers no way to set the window.
 *
 * Compressed clusters are packed into host clusters byte by byte, as QEMU
 * packs them: a host cluster's refcount counts the compressed clusters in
 * it (raised before the L2 entry points there, so a crash leaks at most).
 * A compressed cluster never spans two host clusters here.  A cluster that
 * does not shrink below the cluster size is written uncompressed, and one
 * of zeroes becomes a zero cluster.  The data is written before the L2
 * entry that points at it; the entry goes through qcow2_set_entries, which
 * copies a table a snapshot shares and frees the old allocation after the
 * next flush. */
#include "block/drivers/qcow2-internal.h"

#include <errno.h>
#include <zlib.h>

/* Deflates `in` (len bytes) into out (at most out_max bytes): the
 * compressed length, or -ENOSPC when it does not fit. */
static int64_t deflate_cluster(const void *in, uint64_t len, uint8_t *out, uint64_t out_max)
{
    z_stream z = { 0 };
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK)
        return -ENOMEM;
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)out_max;
    int zr = deflate(&z, Z_FINISH);
    int64_t n = zr == Z_STREAM_END ? (int64_t)(out_max - z.avail_out) : -ENOSPC;
    deflateEnd(&z);
    return n;
}

static bool buffer_zero(const uint8_t *p, uint64_t len)
{
    return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

/* Room for `len` compressed bytes: in the host cluster being filled when
 * they fit (its refcount goes up by one), else in a new one. */
static int place(Qcow2 *s, uint64_t len, uint64_t *host)
{
    if (s->comp_host && s->comp_used + len <= s->cs) {
        int r = qcow2_refcount_add(s, s->comp_host >> s->cluster_bits, 1, 1);
        if (r < 0)
            return r;
    } else {
        int r = qcow2_alloc_clusters(s, 1, &s->comp_host);
        if (r < 0) {
            s->comp_host = 0;
            return r;
        }
        g_assert(qcow2_clusters_allocated(s, s->comp_host, 1));
        s->comp_used = 0;
    }
    *host = s->comp_host + s->comp_used;
    s->comp_used += len;
    return 0;
}

int qcow2_pwrite_compressed(void *o, const void *buf, uint32_t count, uint64_t offset)
{
    Qcow2 *s = o;
    const uint64_t cs = s->cs;
    int r = 0;
    g_autofree uint8_t *padded = NULL;
    g_autofree uint8_t *out = g_malloc(cs);
    while (count > 0 && r == 0) {
        uint64_t n = MIN((uint64_t)count, cs);
        /* Whole clusters only; the image's last cluster may be partial. */
        if ((offset & (cs - 1)) || (n < cs && offset + n != s->size))
            return -EINVAL;
        const uint8_t *data = buf;
        if (n < cs) {
            if (!padded)
                padded = g_malloc0(cs);
            memcpy(padded, buf, n);
            memset(padded + n, 0, cs - n);
            data = padded;
        }
        int64_t len = buffer_zero(data, cs) ? 0 : deflate_cluster(data, cs, out, cs - 1);
        if (len == 0) {
            r = qcow2_zero(s, (uint32_t)n, offset, BLOCK_FLAG_MAY_TRIM);
        } else if (len == -ENOSPC) {
            r = qcow2_pwrite(s, buf, (uint32_t)n, offset, 0); /* does not shrink */
        } else if (len < 0) {
            r = (int)len;
        } else {
            block_flush_gen_write(&s->flush_gen);
            g_rw_lock_reader_lock(&s->io_lock);
            g_mutex_lock(&s->lock);
            qcow2_wait_allocs(s, offset >> s->cluster_bits, 1);
            uint64_t host = 0;
            r = s->broken ? -EIO : place(s, (uint64_t)len, &host);
            if (r == 0) {
                /* Additional 512-byte sectors past the one holding `host`. */
                uint64_t extra = ((host + (uint64_t)len - 1) >> 9) - (host >> 9);
                g_assert(extra <= s->csize_mask);
                node_debug_event(s->file, BLKDBG_WRITE_COMPRESSED);
                uint64_t desc = OFLAG_COMPRESSED | (extra << s->csize_shift) | host;
                if ((r = qcow2_file_write(s, out, (uint64_t)len, host)) == 0)
                    r = qcow2_set_entries(s, offset >> s->cluster_bits, 1, 0, desc);
            }
            g_mutex_unlock(&s->lock);
            g_rw_lock_reader_unlock(&s->io_lock);
        }
        buf = (const uint8_t *)buf + n;
        offset += n;
        count -= (uint32_t)n;
    }
    return r;
}

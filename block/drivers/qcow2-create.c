/* qcow2 image creation and format probing (see qcow2.h): plain POSIX I/O,
 * no node, so that blockctl links it too. */
#include "block/drivers/qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>
#include <gio/gio.h>

/* The format's values (qcow2-internal.h has the same). */
#define QCOW2_MAGIC 0x514649fbu
#define MAX_CLUSTER_BITS 21
#define MAX_L1_BYTES (32u << 20)       /* QEMU's limits */
#define MAX_BACKING_NAME 1023
#define EXT_BACKING_FORMAT 0xe2792acau

#define DIV_UP(a, b) (((a) + (b) - 1) / (b))

static uint32_t be32_at(const void *p) { uint32_t v; memcpy(&v, p, 4); return GUINT32_FROM_BE(v); }
static void put_be64(void *p, uint64_t v) { v = GUINT64_TO_BE(v); memcpy(p, &v, 8); }
static void put_be32(void *p, uint32_t v) { v = GUINT32_TO_BE(v); memcpy(p, &v, 4); }
static void put_be16(void *p, uint16_t v) { v = GUINT16_TO_BE(v); memcpy(p, &v, 2); }

void qcow2_set_error(GError **errp, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(errp, G_IO_ERROR, code, msg);
}

const char *qcow2_probe_format(const char *path, int *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *err = errno;
        return NULL;
    }
    uint8_t magic[4] = { 0 };
    ssize_t n = read(fd, magic, sizeof magic);
    close(fd);
    return n == 4 && be32_at(magic) == QCOW2_MAGIC ? "qcow2" : "raw";
}

static bool pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, buf, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        buf = (const char *)buf + n;
        len -= (size_t)n;
        off += n;
    }
    return true;
}

/* Sets refcount entry `i` of a refcount block to 1 (entries of `bits` bits;
 * below a byte they are packed from the least significant bit, as QEMU does). */
static void refcount_one(uint8_t *block, uint64_t i, uint32_t bits)
{
    switch (bits) {
    case 64: put_be64(block + 8 * i, 1); break;
    case 32: put_be32(block + 4 * i, 1); break;
    case 16: put_be16(block + 2 * i, 1); break;
    case 8: block[i] = 1; break;
    default: block[i * bits / 8] |= (uint8_t)(1u << (i * bits % 8)); break;
    }
}

uint8_t *qcow2_create_metadata(const Qcow2CreateParams *p, size_t *len_out, GError **errp)
{
    const uint32_t cluster_size = p->cluster_size ? p->cluster_size : 65536;
    const uint32_t version = p->version ? p->version : 3;
    const uint32_t rbits = p->refcount_bits ? p->refcount_bits : 16;
    const uint64_t size = p->size;
    g_assert(version == 2 || version == 3);
    g_assert(rbits <= 64 && (rbits & (rbits - 1)) == 0 && (version == 3 || rbits == 16));
    g_assert(version == 3 || !p->lazy_refcounts);
    if (cluster_size < 512 || cluster_size > (1u << MAX_CLUSTER_BITS) || (cluster_size & (cluster_size - 1))) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_ARGUMENT,
                "Cluster size must be a power of two between 512 and 2048k, not %u", cluster_size);
        return NULL;
    }
    const uint64_t cs = cluster_size;
    const uint32_t bits = (uint32_t)g_bit_nth_lsf(cluster_size, -1);
    const uint64_t l2_entries = cs / 8, per_l1 = l2_entries * cs;
    uint64_t l1_size = DIV_UP(size, per_l1);
    if (l1_size * 8 > MAX_L1_BYTES) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_ARGUMENT, "Image size %" PRIu64 " is too big for cluster size %u",
                size, cluster_size);
        return NULL;
    }
    const char *backing_file = p->backing_file, *backing_format = p->backing_format;
    size_t blen = backing_file ? strlen(backing_file) : 0;
    size_t flen = backing_format && backing_file ? strlen(backing_format) : 0;
    if (blen > MAX_BACKING_NAME) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_ARGUMENT, "Backing file name too long");
        return NULL;
    }
    /* Cluster 0: header (112 bytes in v3, 72 in v2), extensions, backing name. */
    const uint32_t header_length = version == 3 ? 112 : 72;
    uint64_t ext_len = (flen ? 8 + DIV_UP(flen, 8) * 8 : 0) + 8;
    uint64_t backing_off = blen ? header_length + ext_len : 0;
    if (header_length + ext_len + blen > cs) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_ARGUMENT,
                "Backing file name too long for a cluster size of %u", cluster_size);
        return NULL;
    }
    /* Layout: header, refcount table, refcount blocks, L1 table. */
    const uint64_t rbe = cs * 8 / rbits, l1c = DIV_UP(l1_size * 8, cs);
    uint64_t rtc = 1, rbc = 1;
    for (;;) {
        uint64_t total = 1 + rtc + rbc + l1c;
        uint64_t nrbc = DIV_UP(total, rbe), nrtc = DIV_UP(nrbc * 8, cs);
        if (nrbc == rbc && nrtc == rtc)
            break;
        rbc = MAX(rbc, nrbc);
        rtc = MAX(rtc, nrtc);
    }
    const uint64_t total = 1 + rtc + rbc + l1c;
    const uint64_t rt_off = cs, rb_off = (1 + rtc) * cs, l1_off = (1 + rtc + rbc) * cs;

    uint8_t *meta = g_malloc0(total * cs);
    uint8_t *h = meta;
    put_be32(h, QCOW2_MAGIC);
    put_be32(h + 4, version);
    put_be64(h + 8, backing_off);
    put_be32(h + 16, (uint32_t)blen);
    put_be32(h + 20, bits);
    put_be64(h + 24, size);
    put_be32(h + 32, 0);
    put_be32(h + 36, (uint32_t)l1_size);
    put_be64(h + 40, l1_size ? l1_off : 0);
    put_be64(h + 48, rt_off);
    put_be32(h + 56, (uint32_t)rtc);
    put_be32(h + 60, 0);
    put_be64(h + 64, 0);
    if (version == 3) {
        put_be64(h + 72, 0);
        put_be64(h + 80, p->lazy_refcounts ? 1 : 0); /* compatible feature bit 0: lazy refcounts */
        put_be64(h + 88, 0);
        put_be32(h + 96, (uint32_t)g_bit_nth_lsf(rbits, -1));
        put_be32(h + 100, header_length);
    }
    uint64_t off = header_length;
    if (flen) {
        put_be32(h + off, EXT_BACKING_FORMAT);
        put_be32(h + off + 4, (uint32_t)flen);
        memcpy(h + off + 8, backing_format, flen);
        off += 8 + DIV_UP(flen, 8) * 8;
    }
    off += 8; /* end of extensions: already zero */
    if (blen)
        memcpy(h + backing_off, backing_file, blen);
    for (uint64_t i = 0; i < rbc; i++)
        put_be64(meta + rt_off + 8 * i, rb_off + i * cs);
    for (uint64_t c = 0; c < total; c++)
        refcount_one(meta + rb_off + (c / rbe) * cs, c % rbe, rbits);
    /* Up to the L1 table's last entry, as QEMU writes it (the rest reads as zeroes). */
    *len_out = l1_size ? l1_off + l1_size * 8 : total * cs;
    return meta;
}

bool qcow2_create_image(const char *path, uint64_t size, const char *backing_file,
                        const char *backing_format, uint32_t cluster_size, GError **errp)
{
    const Qcow2CreateParams p = { .size = size, .backing_file = backing_file, .backing_format = backing_format,
                                  .cluster_size = cluster_size };
    size_t len;
    g_autofree uint8_t *meta = qcow2_create_metadata(&p, &len, errp);
    if (!meta)
        return false;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int err = errno;
        qcow2_set_error(errp, g_io_error_from_errno(err), "Could not create '%s': %s", path, g_strerror(err));
        return false;
    }
    bool ok = pwrite_all(fd, meta, len, 0) && fsync(fd) == 0;
    int err = errno;
    if (close(fd) < 0 && ok) {
        ok = false;
        err = errno;
    }
    if (!ok) {
        qcow2_set_error(errp, g_io_error_from_errno(err), "Could not write '%s': %s", path, g_strerror(err));
        return false;
    }
    return true;
}

/* Image reading (see image-reader.h). */
#include "tools/blockctl/image-reader.h"
#include "block/nbd-uri.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <libnbd.h>

struct ImageReader {
    char *name;
    int fd;            /* a file, or -1 */
    struct nbd_handle *nbd;
    uint64_t size;
};

G_DEFINE_QUARK(blockctl-image-error-quark, image_error)

ImageReader *image_reader_open(const char *name, GError **errp)
{
    ImageReader *r = g_new0(ImageReader, 1);
    r->name = g_strdup(name);
    r->fd = -1;
    if (nbd_uri_is(name)) {
        r->nbd = nbd_create();
        int64_t size;
        if (!r->nbd || nbd_connect_uri(r->nbd, name) < 0 || (size = nbd_get_size(r->nbd)) < 0) {
            g_set_error(errp, image_error_quark(), 0, "cannot read %s: %s", name, nbd_get_error());
            image_reader_close(r);
            return NULL;
        }
        r->size = (uint64_t)size;
        return r;
    }
    struct stat st;
    r->fd = open(name, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0 || fstat(r->fd, &st) < 0) {
        g_set_error(errp, image_error_quark(), 0, "cannot read %s: %s", name, g_strerror(errno));
        image_reader_close(r);
        return NULL;
    }
    r->size = (uint64_t)st.st_size;
    return r;
}

uint64_t image_reader_size(ImageReader *r)
{
    return r->size;
}

bool image_reader_pread(ImageReader *r, void *buf, size_t len, uint64_t offset, GError **errp)
{
    if (r->nbd) {
        if (nbd_pread(r->nbd, buf, len, offset, 0) < 0) {
            g_set_error(errp, image_error_quark(), 0, "cannot read %s: %s", r->name, nbd_get_error());
            return false;
        }
        return true;
    }
    while (len > 0) {
        ssize_t n = pread(r->fd, buf, len, (off_t)offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            g_set_error(errp, image_error_quark(), 0, "cannot read %s: %s", r->name,
                        n < 0 ? g_strerror(errno) : "unexpected end of file");
            return false;
        }
        buf = (char *)buf + n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return true;
}

void image_reader_close(ImageReader *r)
{
    if (!r)
        return;
    if (r->nbd) {
        nbd_shutdown(r->nbd, 0);
        nbd_close(r->nbd);
    }
    if (r->fd >= 0)
        close(r->fd);
    g_free(r->name);
    g_free(r);
}

const char *image_reader_probe(ImageReader *r, GError **errp)
{
    static const unsigned char magic[4] = { 'Q', 'F', 'I', 0xfb };
    unsigned char head[4];
    if (r->size < sizeof head)
        return "raw";
    if (!image_reader_pread(r, head, sizeof head, 0, errp))
        return NULL;
    return memcmp(head, magic, sizeof magic) == 0 ? "qcow2" : "raw";
}

/* Byte-for-byte comparison (see verify.h). */
#include "tools/blockctl/verify.h"
#include "tools/blockctl/image-reader.h"
#include "tools/blockctl/interrupt.h"
#include "tools/blockctl/progress.h"

#include <inttypes.h>
#include <string.h>

enum { CHUNK = 4 << 20 };

G_DEFINE_QUARK(blockctl-verify-error-quark, verify_error)

static bool compare(ImageReader *ra, ImageReader *rb, const char *a, const char *b, GError **errp)
{
    uint64_t size = image_reader_size(ra);
    if (size != image_reader_size(rb)) {
        g_set_error(errp, verify_error_quark(), 0, "%s has %" PRIu64 " bytes, %s %" PRIu64, a, size, b,
                    image_reader_size(rb));
        return false;
    }
    g_autofree char *ba = g_malloc(CHUNK), *bb = g_malloc(CHUNK);
    Progress progress;
    progress_start(&progress);
    bool same = true;
    for (uint64_t off = 0; same && off < size; off += CHUNK) {
        if (interrupt_signal()) {
            g_set_error(errp, verify_error_quark(), 0, "interrupted");
            same = false;
            break;
        }
        size_t len = (size_t)MIN((uint64_t)CHUNK, size - off);
        if (!image_reader_pread(ra, ba, len, off, errp) || !image_reader_pread(rb, bb, len, off, errp)) {
            same = false;
            break;
        }
        if (memcmp(ba, bb, len) != 0) {
            size_t i = 0;
            while (ba[i] == bb[i])
                i++;
            g_set_error(errp, verify_error_quark(), 0, "%s differs from %s at offset %" PRIu64, a, b,
                        off + (uint64_t)i);
            same = false;
        }
        progress_copy(&progress, (gint64)(off + len), (gint64)size);
    }
    progress_end(&progress);
    return same;
}

bool verify_same(const char *a, const char *b, GError **errp)
{
    ImageReader *ra = image_reader_open(a, errp);
    if (!ra)
        return false;
    ImageReader *rb = image_reader_open(b, errp);
    if (!rb) {
        image_reader_close(ra);
        return false;
    }
    bool same = compare(ra, rb, a, b, errp);
    image_reader_close(ra);
    image_reader_close(rb);
    return same;
}

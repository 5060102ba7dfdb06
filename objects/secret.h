/* secret: a password or key given to blockd once and looked up by id
 * (QEMU's qom-type `secret`: data= or file=, format=raw|base64; the
 * AES-encrypted form with keyid/iv is not supported).  The bytes are
 * decoded when the object is created, so a bad value is reported by
 * object-add / --object. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <glib.h>

typedef struct Secret Secret;

/* A secret from `data` or the contents of `file` (exactly one of them),
 * base64-decoded when `base64`; NULL with QEMU's error texts. */
Secret *secret_new(const char *data, const char *file, bool base64, GError **errp);
/* Frees the secret, wiping its bytes. */
void secret_free(Secret *secret);
/* The secret's bytes, base64-encoded (a new string the caller frees). */
char *secret_to_base64(const Secret *secret);

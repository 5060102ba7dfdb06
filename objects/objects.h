/* User-creatable objects: --object, object-add and object-del.
 *
 * Objects live in one registry by id.  A user (the NBD server, an NBD
 * target node) acquires an object for as long as it needs it; object-del
 * refuses an object that is acquired, so credentials never vanish under a
 * running server (QEMU 7.2 deletes them).  Acquire and release are
 * thread-safe; add and delete run on the main thread.  Plain C types: the
 * QMP layer (server/qmp/cmd-object.c) converts object-add's arguments. */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include "qapi/qapi-types.h"
#include "objects/authz-simple.h"
#include "objects/secret.h"
#include "objects/tls-creds.h"

/* Adds tls-creds-x509 or tls-creds-psk object `id` (kind says which: the
 * generated ObjectType, QEMU's qom-type). */
bool object_add_tls_creds(const char *id, ObjectType kind, const TlsCredsConfig *cfg, GError **errp);
/* Adds authz-simple object `id` allowing `identity`. */
bool object_add_authz_simple(const char *id, const char *identity, GError **errp);
/* Adds secret object `id` (see secret_new for the arguments). */
bool object_add_secret(const char *id, const char *data, const char *file, bool base64, GError **errp);
/* Deletes an object; fails if it does not exist or is in use. */
bool object_del(const char *id, GError **errp);
/* Deletes every object (at exit, after their users are gone). */
void objects_remove_all(void);

/* The tls-creds-x509/psk object `id`, marked in use until released;
 * `server` says which endpoint the caller needs. */
TlsCreds *object_acquire_tls_creds(const char *id, bool server, GError **errp);
/* Ends a use started by object_acquire_tls_creds (NULL is ignored). */
void object_release_tls_creds(TlsCreds *creds);
/* The authz-simple object `id`, marked in use until released. */
AuthzSimple *object_acquire_authz(const char *id, GError **errp);
/* Ends a use started by object_acquire_authz (NULL is ignored). */
void object_release_authz(AuthzSimple *authz);
/* The value of secret object `id`, base64-encoded (a new string), or NULL
 * with QEMU's error texts.  Users copy the value, so the secret need not stay. */
char *object_secret_base64(const char *id, GError **errp);
/* The id of an acquired object (for log lines). */
const char *object_id_of(const void *impl);

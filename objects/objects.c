/* The object registry (see objects.h). */
#define G_LOG_DOMAIN "blockd-objects"
#include "objects/objects.h"

#include <gio/gio.h>

#include <string.h>

typedef struct UserObject {
    char *id;
    ObjectType type;
    int users;          /* acquisitions not yet released (under registry_lock) */
    void *impl;         /* TlsCreds *, AuthzSimple * or Secret * */
} UserObject;

static GMutex registry_lock;
static GPtrArray *registry;  /* UserObject *, in creation order */

static UserObject *find_locked(const char *id)
{
    for (guint i = 0; registry && i < registry->len; i++) {
        UserObject *o = registry->pdata[i];
        if (strcmp(o->id, id) == 0)
            return o;
    }
    return NULL;
}

static UserObject *find_impl_locked(const void *impl)
{
    for (guint i = 0; registry && i < registry->len; i++) {
        UserObject *o = registry->pdata[i];
        if (o->impl == impl)
            return o;
    }
    return NULL;
}

static void user_object_free(UserObject *o)
{
    if (o->type == OBJECT_TYPE_AUTHZ_SIMPLE)
        authz_simple_free(o->impl);
    else if (o->type == OBJECT_TYPE_SECRET)
        secret_free(o->impl);
    else
        tls_creds_free(o->impl);
    g_free(o->id);
    g_free(o);
}

/* Registers `impl` (made by the caller) as object `id` of kind `type`;
 * frees it if the id is taken. */
static bool add(const char *id, ObjectType type, void *impl, GError **errp)
{
    UserObject *o = g_new0(UserObject, 1);
    o->id = g_strdup(id);
    o->type = type;
    o->impl = impl;
    g_mutex_lock(&registry_lock);
    if (find_locked(id)) {
        g_mutex_unlock(&registry_lock);
        user_object_free(o);
        /* QEMU 7.2's words for a duplicate id. */
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_EXISTS,
                    "attempt to add duplicate property '%s' to object (type 'container')", id);
        return false;
    }
    if (!registry)
        registry = g_ptr_array_new();
    g_ptr_array_add(registry, o);
    g_mutex_unlock(&registry_lock);
    return true;
}

/* QEMU checks the id before loading anything. */
static bool id_free(const char *id, GError **errp)
{
    g_mutex_lock(&registry_lock);
    bool exists = find_locked(id) != NULL;
    g_mutex_unlock(&registry_lock);
    if (exists)
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_EXISTS,
                    "attempt to add duplicate property '%s' to object (type 'container')", id);
    return !exists;
}

bool object_add_tls_creds(const char *id, ObjectType kind, const TlsCredsConfig *cfg, GError **errp)
{
    g_assert(kind == OBJECT_TYPE_TLS_CREDS_PSK || kind == OBJECT_TYPE_TLS_CREDS_X509);
    if (!id_free(id, errp))
        return false;
    TlsCreds *creds = kind == OBJECT_TYPE_TLS_CREDS_PSK ? tls_creds_new_psk(cfg, errp)
                                                        : tls_creds_new_x509(cfg, errp);
    return creds && add(id, kind, creds, errp);
}

bool object_add_authz_simple(const char *id, const char *identity, GError **errp)
{
    return id_free(id, errp) && add(id, OBJECT_TYPE_AUTHZ_SIMPLE, authz_simple_new(identity), errp);
}

bool object_add_secret(const char *id, const char *data, const char *file, bool base64, GError **errp)
{
    if (!id_free(id, errp))
        return false;
    Secret *secret = secret_new(data, file, base64, errp);
    return secret && add(id, OBJECT_TYPE_SECRET, secret, errp);
}

bool object_del(const char *id, GError **errp)
{
    g_mutex_lock(&registry_lock);
    UserObject *o = find_locked(id);
    if (!o) {
        g_mutex_unlock(&registry_lock);
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "object '%s' not found", id);
        return false;
    }
    if (o->users > 0) {
        g_mutex_unlock(&registry_lock);
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "object '%s' is in use (by the NBD server or a block node) and cannot be deleted",
                    id);
        return false;
    }
    g_ptr_array_remove(registry, o);
    g_mutex_unlock(&registry_lock);
    user_object_free(o);
    return true;
}

void objects_remove_all(void)
{
    g_mutex_lock(&registry_lock);
    GPtrArray *all = g_steal_pointer(&registry);
    g_mutex_unlock(&registry_lock);
    if (!all)
        return;
    for (guint i = 0; i < all->len; i++) {
        UserObject *o = all->pdata[i];
        if (o->users > 0)
            g_warning("object '%s' still in use at exit", o->id);
        else
            user_object_free(o);
    }
    g_ptr_array_unref(all);
}

TlsCreds *object_acquire_tls_creds(const char *id, bool server, GError **errp)
{
    g_mutex_lock(&registry_lock);
    UserObject *o = find_locked(id);
    TlsCreds *creds = NULL;
    if (!o) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "No TLS credentials with id '%s'", id);
    } else if (o->type != OBJECT_TYPE_TLS_CREDS_X509 && o->type != OBJECT_TYPE_TLS_CREDS_PSK) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "Object with id '%s' is not TLS credentials", id);
    } else if (tls_creds_is_server(o->impl) != server) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "Expecting TLS credentials with a %s endpoint",
                    server ? "server" : "client");
    } else {
        o->users++;
        creds = o->impl;
    }
    g_mutex_unlock(&registry_lock);
    return creds;
}

AuthzSimple *object_acquire_authz(const char *id, GError **errp)
{
    g_mutex_lock(&registry_lock);
    UserObject *o = find_locked(id);
    AuthzSimple *authz = NULL;
    if (!o) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "Authorization object '%s' not found", id);
    } else if (o->type != OBJECT_TYPE_AUTHZ_SIMPLE) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "Object '%s' is not a QAuthZ subclass", id);
    } else {
        o->users++;
        authz = o->impl;
    }
    g_mutex_unlock(&registry_lock);
    return authz;
}

char *object_secret_base64(const char *id, GError **errp)
{
    g_mutex_lock(&registry_lock);
    UserObject *o = find_locked(id);
    char *value = NULL;
    if (!o)
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "No secret with id '%s'", id);
    else if (o->type != OBJECT_TYPE_SECRET)
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "Object with id '%s' is not a secret", id);
    else
        value = secret_to_base64(o->impl);
    g_mutex_unlock(&registry_lock);
    return value;
}

static void release(const void *impl)
{
    if (!impl)
        return;
    g_mutex_lock(&registry_lock);
    UserObject *o = find_impl_locked(impl);
    g_assert(o && o->users > 0);
    o->users--;
    g_mutex_unlock(&registry_lock);
}

void object_release_tls_creds(TlsCreds *creds)
{
    release(creds);
}

void object_release_authz(AuthzSimple *authz)
{
    release(authz);
}

const char *object_id_of(const void *impl)
{
    g_mutex_lock(&registry_lock);
    UserObject *o = find_impl_locked(impl);
    /* An acquired object cannot be deleted, so its id stays valid. */
    const char *id = o ? o->id : "?";
    g_mutex_unlock(&registry_lock);
    return id;
}

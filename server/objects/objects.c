/* The object registry (see objects.h). */
#define G_LOG_DOMAIN "blockd-main"
#include "server/objects/objects.h"
#include "server/qmp/qapi-runtime.h"

#include <string.h>

typedef struct UserObject {
    char *id;
    ObjectType type;
    int users;          /* acquisitions not yet released (under registry_lock) */
    void *impl;         /* TlsCreds * or AuthzSimple * */
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
    else
        tls_creds_free(o->impl);
    g_free(o->id);
    g_free(o);
}

bool object_add(const ObjectOptions *options, GError **errp)
{
    g_mutex_lock(&registry_lock);
    bool exists = find_locked(options->id) != NULL;
    g_mutex_unlock(&registry_lock);
    if (exists) {
        /* QEMU 7.2's words for a duplicate id. */
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "attempt to add duplicate property '%s' to object (type 'container')",
                    options->id);
        return false;
    }
    void *impl = NULL;
    switch (options->qom_type) {
    case OBJECT_TYPE_AUTHZ_SIMPLE:
        impl = authz_simple_new(options->u.authz_simple.identity);
        break;
    case OBJECT_TYPE_TLS_CREDS_PSK:
        impl = tls_creds_new_psk(&options->u.tls_creds_psk, errp);
        break;
    case OBJECT_TYPE_TLS_CREDS_X509:
        impl = tls_creds_new_x509(&options->u.tls_creds_x509, errp);
        break;
    default:
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "unsupported object type");
        break;
    }
    if (!impl)
        return false;
    UserObject *o = g_new0(UserObject, 1);
    o->id = g_strdup(options->id);
    o->type = options->qom_type;
    o->impl = impl;
    g_mutex_lock(&registry_lock);
    if (!registry)
        registry = g_ptr_array_new();
    g_ptr_array_add(registry, o);
    g_mutex_unlock(&registry_lock);
    return true;
}

bool object_del(const char *id, GError **errp)
{
    g_mutex_lock(&registry_lock);
    UserObject *o = find_locked(id);
    if (!o) {
        g_mutex_unlock(&registry_lock);
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "object '%s' not found", id);
        return false;
    }
    if (o->users > 0) {
        g_mutex_unlock(&registry_lock);
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
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
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "No TLS credentials with id '%s'", id);
    } else if (o->type != OBJECT_TYPE_TLS_CREDS_X509 && o->type != OBJECT_TYPE_TLS_CREDS_PSK) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Object with id '%s' is not TLS credentials", id);
    } else if (tls_creds_is_server(o->impl) != server) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Expecting TLS credentials with a %s endpoint",
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
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Authorization object '%s' not found", id);
    } else if (o->type != OBJECT_TYPE_AUTHZ_SIMPLE) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Object '%s' is not a QAuthZ subclass", id);
    } else {
        o->users++;
        authz = o->impl;
    }
    g_mutex_unlock(&registry_lock);
    return authz;
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

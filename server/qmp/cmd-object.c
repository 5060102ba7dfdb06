/* QMP object-add / object-del and the --object option: they convert the
 * generated ObjectOptions into the object part's plain C types (QEMU's
 * property defaults applied here) and call objects/objects.h. */
#include "objects/objects.h"
#include "qapi/qapi-commands.h"
#include "server/qmp/cmd-object.h"
#include "server/qmp/qapi-runtime.h"

/* tls-creds-x509 and tls-creds-psk share QEMU's base properties. */
static TlsCredsConfig tls_config(bool has_dir, const char *dir, bool has_endpoint,
                                 QCryptoTLSCredsEndpoint endpoint, bool has_verify_peer,
                                 bool verify_peer, bool has_priority, const char *priority)
{
    return (TlsCredsConfig){
        .dir = has_dir ? dir : NULL,
        .server = has_endpoint && endpoint == QCRYPTO_TLS_CREDS_ENDPOINT_SERVER,
        .verify_peer = !has_verify_peer || verify_peer,
        .sanity_check = true,
        .priority = has_priority ? priority : NULL,
    };
}

static bool object_add_options(const ObjectOptions *o, GError **errp)
{
    switch (o->qom_type) {
    case OBJECT_TYPE_AUTHZ_SIMPLE:
        return object_add_authz_simple(o->id, o->u.authz_simple.identity, errp);
    case OBJECT_TYPE_TLS_CREDS_X509: {
        const TlsCredsX509Properties *p = &o->u.tls_creds_x509;
        TlsCredsConfig cfg = tls_config(p->has_dir, p->dir, p->has_endpoint, p->endpoint,
                                        p->has_verify_peer, p->verify_peer, p->has_priority, p->priority);
        cfg.sanity_check = !p->has_sanity_check || p->sanity_check;
        return object_add_tls_creds(o->id, OBJECT_TYPE_TLS_CREDS_X509, &cfg, errp);
    }
    case OBJECT_TYPE_TLS_CREDS_PSK: {
        const TlsCredsPskProperties *p = &o->u.tls_creds_psk;
        TlsCredsConfig cfg = tls_config(p->has_dir, p->dir, p->has_endpoint, p->endpoint,
                                        p->has_verify_peer, p->verify_peer, p->has_priority, p->priority);
        cfg.username = p->has_username ? p->username : NULL;
        return object_add_tls_creds(o->id, OBJECT_TYPE_TLS_CREDS_PSK, &cfg, errp);
    }
    case OBJECT_TYPE_SECRET: {
        const SecretProperties *p = &o->u.secret;
        return object_add_secret(o->id, p->has_data ? p->data : NULL, p->has_file ? p->file : NULL,
                                 p->has_format && p->format == QCRYPTO_SECRET_FORMAT_BASE64, errp);
    }
    default:
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "unsupported object type");
        return false;
    }
}

bool qmp_object_add(QmpSession *session, ObjectOptions *args, GError **errp)
{
    return object_add_options(args, errp);
}

bool qmp_object_del(QmpSession *session, q_obj_object_del_arg *args, GError **errp)
{
    return object_del(args->id, errp);
}

bool qmp_cli_object(JsonObject *opts, GError **errp)
{
    QapiIn in = { .keyval = true };
    g_autoptr(ObjectOptions) o = NULL;
    JsonNode *node = json_node_init_object(json_node_alloc(), opts);
    bool ok = qapi_in_ObjectOptions(&in, "", node, &o, errp) && object_add_options(o, errp);
    json_node_unref(node);
    return ok;
}

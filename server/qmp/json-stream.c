/* Splitting a QMP byte stream into JSON texts (see json-stream.h). */
#include "server/qmp/json-stream.h"

#include <string.h>

struct JsonStream {
    JsonStreamFn fn;
    void *opaque;
    GString *buf;     /* the message being collected */
    int depth;        /* bracket nesting */
    bool in_string;
    bool escape;      /* previous char was a backslash inside a string */
    bool skipping;    /* an oversized message is being discarded */
};

JsonStream *json_stream_new(JsonStreamFn fn, void *opaque)
{
    JsonStream *js = g_new0(JsonStream, 1);
    js->fn = fn;
    js->opaque = opaque;
    js->buf = g_string_new(NULL);
    return js;
}

void json_stream_free(JsonStream *js)
{
    if (!js)
        return;
    g_string_free(js->buf, TRUE);
    g_free(js);
}

bool json_stream_pending(JsonStream *js)
{
    return js->buf->len > 0 || js->skipping;
}

static void emit(JsonStream *js)
{
    if (js->buf->len > 0)
        js->fn(js->buf->str, js->buf->len, NULL, js->opaque);
    g_string_truncate(js->buf, 0);
    js->depth = 0;
}

static void reject(JsonStream *js, const char *why)
{
    g_string_truncate(js->buf, 0);
    js->skipping = true;
    js->fn(NULL, 0, why, js->opaque);
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

void json_stream_feed(JsonStream *js, const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = data[i];
        if (js->in_string) {
            if (js->escape)
                js->escape = false;
            else if (c == '\\')
                js->escape = true;
            else if (c == '"')
                js->in_string = false;
        } else if (c == '"') {
            /* A bare scalar followed directly by a string ends there. */
            if (js->depth == 0 && js->buf->len > 0 && !js->skipping)
                emit(js);
            js->in_string = true;
        } else if (c == '{' || c == '[') {
            if (js->depth == 0 && js->buf->len > 0 && !js->skipping)
                emit(js);
            js->depth++;
        } else if (c == '}' || c == ']') {
            js->depth--;
        } else if (js->depth == 0 && is_space(c)) {
            if (js->skipping) {
                js->skipping = false;
                continue;
            }
            emit(js); /* ends a bare scalar, if any */
            continue;
        }

        if (js->skipping) {
            if (js->depth <= 0 && !js->in_string) {
                js->skipping = false;
                js->depth = 0;
            }
            continue;
        }
        g_string_append_c(js->buf, c);
        if (js->buf->len > JSON_STREAM_MAX_SIZE) {
            reject(js, "message too large (limit 1048576 bytes)");
            if (js->depth <= 0 && !js->in_string)
                js->skipping = false, js->depth = 0;
            continue;
        }
        if (js->depth > JSON_STREAM_MAX_DEPTH) {
            reject(js, "nesting too deep");
            continue;
        }
        /* A value closes at depth 0: brackets, or a string that began there. */
        if (js->depth <= 0 && !js->in_string && (c == '}' || c == ']' || c == '"'))
            emit(js);
    }
}

bool json_text_has_nul_escape(const char *text, size_t len)
{
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        if (!in_string) {
            in_string = text[i] == '"';
        } else if (text[i] == '"') {
            in_string = false;
        } else if (text[i] == '\\' && i + 1 < len) {
            if (text[i + 1] == 'u' && len - i >= 6 && memcmp(text + i + 2, "0000", 4) == 0)
                return true;
            i++; /* the escaped character */
        }
    }
    return false;
}

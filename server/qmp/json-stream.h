/* Splits a QMP byte stream into complete JSON texts.
 *
 * QMP messages need not be newline-terminated and several may arrive in one
 * read, or one may span many reads; this tracks brackets and strings (like
 * QEMU's json-streamer) and hands each complete top-level value to a
 * callback.  Oversized or too deeply nested input is reported once and then
 * skipped up to the end of the offending value, so the stream recovers. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <glib.h>

/* Longest message accepted, in bytes. */
#define JSON_STREAM_MAX_SIZE (1u << 20)
/* Deepest bracket nesting accepted. */
#define JSON_STREAM_MAX_DEPTH 1024

typedef struct JsonStream JsonStream;

/* Called with one complete JSON text (not NUL-terminated), or with text NULL
 * and `error` set when a message was rejected before parsing. */
typedef void (*JsonStreamFn)(const char *text, size_t len, const char *error, void *opaque);

/* A new splitter that calls fn(…, opaque) for each message. */
JsonStream *json_stream_new(JsonStreamFn fn, void *opaque);
/* Feeds bytes; complete messages are delivered before this returns. */
void json_stream_feed(JsonStream *js, const char *data, size_t len);
/* True while a partial message is buffered. */
bool json_stream_pending(JsonStream *js);
/* Frees the splitter and any partial message. */
void json_stream_free(JsonStream *js);
/* True if a string in the JSON text holds the escape \u0000: C strings
 * would silently end there (a node name "n0\u0000zz" would name "n0"). */
bool json_text_has_nul_escape(const char *text, size_t len);

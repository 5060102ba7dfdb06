/* The QMP stream splitter: message boundaries, strings with brackets,
 * split input, size and nesting limits with recovery. */
#include "server/qmp/json-stream.h"

#include <string.h>

typedef struct Seen {
    GPtrArray *msgs;  /* char *: the texts, or "ERROR: why" */
} Seen;

static void collect(const char *text, size_t len, const char *error, void *opaque)
{
    Seen *s = opaque;
    g_ptr_array_add(s->msgs, text ? g_strndup(text, len) : g_strdup_printf("ERROR: %s", error));
}

static GPtrArray *split(const char *const parts[])
{
    Seen s = { g_ptr_array_new_with_free_func(g_free) };
    JsonStream *js = json_stream_new(collect, &s);
    for (int i = 0; parts[i]; i++)
        json_stream_feed(js, parts[i], strlen(parts[i]));
    json_stream_free(js);
    return s.msgs;
}

static void test_boundaries(void)
{
    const char *const parts[] = { " {\"a\": \"}{\"}{\"b\"", ": [1, {\"c\": \"\\\"]\"}]}\r\n", "[1]  7 \"s\"", NULL };
    g_autoptr(GPtrArray) m = split(parts);
    g_assert_cmpuint(m->len, ==, 5);
    g_assert_cmpstr(m->pdata[0], ==, "{\"a\": \"}{\"}");
    g_assert_cmpstr(m->pdata[1], ==, "{\"b\": [1, {\"c\": \"\\\"]\"}]}");
    g_assert_cmpstr(m->pdata[2], ==, "[1]");
    g_assert_cmpstr(m->pdata[3], ==, "7");
    g_assert_cmpstr(m->pdata[4], ==, "\"s\"");
}

static void test_limits(void)
{
    GString *big = g_string_new("{\"pad\": \"");
    for (size_t i = 0; i < JSON_STREAM_MAX_SIZE; i++)
        g_string_append_c(big, 'x');
    g_string_append(big, "\"}{\"after\": 1}");
    GString *deep = g_string_new(NULL);
    for (int i = 0; i < 2000; i++)
        g_string_append_c(deep, '[');
    for (int i = 0; i < 2000; i++)
        g_string_append_c(deep, ']');
    g_string_append(deep, "{\"ok\": 2}");
    const char *const parts[] = { big->str, deep->str, NULL };
    g_autoptr(GPtrArray) m = split(parts);
    g_assert_cmpuint(m->len, ==, 4);
    g_assert_true(g_str_has_prefix(m->pdata[0], "ERROR: message too large"));
    g_assert_cmpstr(m->pdata[1], ==, "{\"after\": 1}");
    g_assert_cmpstr(m->pdata[2], ==, "ERROR: nesting too deep");
    g_assert_cmpstr(m->pdata[3], ==, "{\"ok\": 2}");
    g_string_free(big, TRUE);
    g_string_free(deep, TRUE);
}

static bool has_nul(const char *text)
{
    return json_text_has_nul_escape(text, strlen(text));
}

static void test_nul_escape(void)
{
    g_assert_true(has_nul("{\"node-name\": \"n0\\u0000zz\"}"));
    g_assert_true(has_nul("{\"a\": \"\\\\\\u0000\"}"));   /* \\ then \u0000 */
    g_assert_false(has_nul("{\"a\": \"\\\\u0000\"}"));      /* \\ then the text u0000 */
    g_assert_false(has_nul("{\"a\": \"\\u0001\", \"b\": \"u0000\"}"));
    g_assert_false(has_nul("{\"a\": \"\\u000\"}"));
    g_assert_true(has_nul("{\"a\\u0000\": 1}"));                /* in a key too */
    g_assert_true(json_text_has_nul_escape("\"\\u0000\"", 7));
    g_assert_false(json_text_has_nul_escape("\"\\u0000\"", 6)); /* cut inside the escape */
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qmp/json-stream/nul-escape", test_nul_escape);
    g_test_add_func("/qmp/json-stream/boundaries", test_boundaries);
    g_test_add_func("/qmp/json-stream/limits", test_limits);
    return g_test_run();
}

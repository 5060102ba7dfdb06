/* Output helpers (see output.h). */
#include "tools/blockctl/output.h"
#include "tools/blockctl/cli.h"

#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

void output_json(JsonNode *node)
{
    g_autofree char *text = json_to_string(node, TRUE);
    printf("%s\n", text);
}

int output_done(JsonNode *ret, const char *what)
{
    if (cli_json)
        output_json(ret);
    else
        printf("%s\n", what);
    json_node_unref(ret);
    return 0;
}

const char *output_str(JsonObject *o, const char *key)
{
    JsonNode *n = o ? json_object_get_member(o, key) : NULL;
    return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
               ? json_node_get_string(n) : "-";
}

gint64 output_int(JsonObject *o, const char *key)
{
    JsonNode *n = o ? json_object_get_member(o, key) : NULL;
    return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_INT64 ? json_node_get_int(n) : 0;
}

bool output_bool(JsonObject *o, const char *key)
{
    JsonNode *n = o ? json_object_get_member(o, key) : NULL;
    return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_BOOLEAN && json_node_get_boolean(n);
}

const char *output_size(double bytes, char *buf, size_t len)
{
    const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
    int u = 0;
    while (bytes >= 1024 && u < 5) {
        bytes /= 1024;
        u++;
    }
    snprintf(buf, len, "%.1f %s", bytes, units[u]);
    return buf;
}

int output_columns(int fd)
{
    struct winsize ws;
    if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    const char *env = getenv("COLUMNS");
    char *end;
    long n = env ? strtol(env, &end, 10) : 0;
    return env && *end == '\0' && n > 0 && n < 100000 ? (int)n : 0;
}

/* Prints one line of `text` (no newline in it), broken at spaces to fit `width`. */
static void fit_line(FILE *f, const char *line, size_t len, size_t width)
{
    size_t indent = 0;
    while (len > 0) {
        size_t room = width > indent + 10 ? width - indent : width;
        if (room == width)
            indent = 0;
        size_t take = len;
        if (len > room) {
            take = room;
            while (take > 0 && line[take] != ' ')
                take--;
            if (take == 0)
                take = room;  /* one word longer than the line: cut it */
        }
        fprintf(f, "%*s%.*s\n", (int)indent, "", (int)take, line);
        line += take;
        len -= take;
        while (len > 0 && *line == ' ') {
            line++;
            len--;
        }
        indent = 2;
    }
}

void output_fitted(FILE *f, const char *text)
{
    int columns = isatty(fileno(f)) ? output_columns(fileno(f)) : 0;
    fflush(stdout);
    if (columns <= 1) {
        fprintf(f, "%s\n", text);
        return;
    }
    /* The last column is left free: some terminals wrap as soon as it is written. */
    size_t width = (size_t)columns - 1;
    for (const char *p = text;;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len == 0)
            fputc('\n', f);
        else
            fit_line(f, p, len, width);
        if (!nl)
            break;
        p = nl + 1;
    }
    fflush(f);
}

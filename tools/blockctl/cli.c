/* Error exits and option parsing (see cli.h). */
#include "tools/blockctl/cli.h"
#include "tools/blockctl/cleanup.h"
#include "tools/blockctl/output.h"
#include "block/options.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

gboolean cli_json;
static const char *command_name;
static const char *command_usage;

void cli_set_command(const char *name, const char *usage)
{
    command_name = name;
    command_usage = usage;
}

static void vreport(const char *fmt, va_list ap)
{
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    g_autofree char *line = g_strconcat("blockctl: ", msg, NULL);
    output_fitted(stderr, line);
}

void warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(fmt, ap);
    va_end(ap);
}

void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(fmt, ap);
    va_end(ap);
    cleanup_run();
    exit(EXIT_FAILURE);
}

void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(fmt, ap);
    va_end(ap);
    if (command_usage)
        fprintf(stderr, "usage: blockctl %s\n", command_usage);
    cleanup_run();
    exit(2);
}

uint64_t cli_parse_size(const char *option, const char *text, const char *meaning)
{
    uint64_t bytes;
    if (!block_parse_size(text, &bytes) || bytes > G_MAXINT64)
        usage_error("bad %s '%s': %s, optionally with k, M or G", option, text, meaning);
    return bytes;
}

static const CliOption *find_option(const CliOption *options, const char *name, size_t len)
{
    for (const CliOption *o = options; o && o->name; o++)
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
            return o;
    return NULL;
}

const char *const *cli_parse(int argc, char **argv, const CliOption *options, int min, int max, int *count)
{
    /* Static: a usage error below exits with the array still referenced. */
    static const char **words;
    g_free(words);
    words = g_new0(const char *, argc + 1);
    int n = 0;
    bool options_end = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (options_end || a[0] != '-' || a[1] == '\0') {
            if (max >= 0 && n >= max)
                usage_error("unexpected '%s'", a);
            words[n++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            options_end = true;
            continue;
        }
        if (strcmp(a, "--json") == 0 || strcmp(a, "-j") == 0) {
            cli_json = TRUE;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const CliOption *o = find_option(options, a, len);
        if (!o || (o->flag && eq) || (o->value && !eq && i + 1 >= argc))
            usage_error("unknown or incomplete option '%s'", a);
        if (o->flag)
            *o->flag = true;
        else
            *o->value = eq ? eq + 1 : argv[++i];
    }
    if (n < min)
        usage_error("%s needs %s", command_name ? command_name : "the command",
                    min - n == 1 && n == 0 ? "an argument" : "more arguments");
    *count = n;
    return words;
}

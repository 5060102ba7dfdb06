/* blockctl's command-line plumbing: error exits, usage errors, option
 * parsing shared by every command.
 *
 * cli_parse takes options anywhere among the words, also as --name=VALUE;
 * "--" ends them; --json and -j are accepted by every command.  Unknown or
 * incomplete options, fewer than `min` or more than `max` (-1: any) words
 * are usage errors (status 2), before anything reaches the daemon. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>

/* --json (or -j, before or after the command): JSON instead of tables and sentences. */
extern gboolean cli_json;

/* Names the command being run, for "needs an argument" and the usage line of usage errors. */
void cli_set_command(const char *name, const char *usage);
/* Prints "blockctl: MESSAGE", undoes what the command made (cleanup.h), exits with status 1. */
void die(const char *fmt, ...) G_GNUC_PRINTF(1, 2) G_GNUC_NORETURN;
/* Prints "blockctl: MESSAGE" and the command's usage, exits with status 2. */
void usage_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2) G_GNUC_NORETURN;
/* Prints "blockctl: MESSAGE" on stderr and carries on. */
void warn(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
/* Bytes from `text` with an optional k, M, G, T suffix (1024-based); a usage error naming `option` otherwise. */
uint64_t cli_parse_size(const char *option, const char *text, const char *meaning);

/* One option of a command: `--name VALUE` sets *value, `--name` alone sets *flag. */
typedef struct CliOption {
    const char *name;
    const char **value;
    bool *flag;
} CliOption;

/* The words of a command line (NULL-terminated, count in *count) after setting its `options`; anything else is a usage error. */
const char *const *cli_parse(int argc, char **argv, const CliOption *options, int min, int max, int *count);

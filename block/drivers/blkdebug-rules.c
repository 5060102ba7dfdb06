/* blkdebug rules from options and config files, parsed as QEMU 7.2 does
 * (see blkdebug.h).  Config files use QEMU's -readconfig syntax: "[group]"
 * or '[group "id"]' lines, then 'key = "value"' lines; the sscanf patterns
 * below are QEMU's, so its quirks (an unquoted value reads as "") and its
 * messages are reproduced. */
#include "block/drivers/blkdebug.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { OPT_EVENT, OPT_STATE, OPT_IOTYPE, OPT_ERRNO, OPT_SECTOR, OPT_ONCE, OPT_IMMEDIATELY, OPT_NEW_STATE, OPT__MAX };
enum { TYPE_STRING, TYPE_NUMBER, TYPE_BOOL };

static const struct {
    const char *name;
    int type;
    unsigned actions; /* 1 << BlkdebugAction */
} option_table[OPT__MAX] = {
    [OPT_EVENT] = { "event", TYPE_STRING, 3 },
    [OPT_STATE] = { "state", TYPE_NUMBER, 3 },
    [OPT_IOTYPE] = { "iotype", TYPE_STRING, 1 },
    [OPT_ERRNO] = { "errno", TYPE_NUMBER, 1 },
    [OPT_SECTOR] = { "sector", TYPE_NUMBER, 1 },
    [OPT_ONCE] = { "once", TYPE_BOOL, 1 },
    [OPT_IMMEDIATELY] = { "immediately", TYPE_BOOL, 1 },
    [OPT_NEW_STATE] = { "new_state", TYPE_NUMBER, 2 },
};

/* One [inject-error] or [set-state] section (QEMU's QemuOpts). */
typedef struct RuleOpts {
    BlkdebugAction action;
    char *id;
    bool has[OPT__MAX];
    char *str[OPT__MAX];
    uint64_t num[OPT__MAX]; /* numbers; booleans as 0/1 */
} RuleOpts;

static void rule_opts_free(RuleOpts *o)
{
    for (int i = 0; i < OPT__MAX; i++)
        g_free(o->str[i]);
    g_free(o->id);
    g_free(o);
}

/* QEMU's qemu_opt_set: known key, value parsed by its type; the last one wins. */
static bool rule_opts_set(RuleOpts *o, const char *name, const char *value, GError **errp)
{
    int i = 0;
    while (i < OPT__MAX && !(strcmp(option_table[i].name, name) == 0 &&
                             (option_table[i].actions & (1u << o->action))))
        i++;
    if (i == OPT__MAX) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "Invalid parameter '%s'", name);
        return false;
    }
    switch (option_table[i].type) {
    case TYPE_STRING:
        g_free(o->str[i]);
        o->str[i] = g_strdup(value);
        break;
    case TYPE_BOOL:
        if (!strcmp(value, "on") || !strcmp(value, "yes") || !strcmp(value, "true") || !strcmp(value, "y")) {
            o->num[i] = 1;
        } else if (!strcmp(value, "off") || !strcmp(value, "no") || !strcmp(value, "false") ||
                   !strcmp(value, "n")) {
            o->num[i] = 0;
        } else {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "Parameter '%s' expects 'on' or 'off'", name);
            return false;
        }
        break;
    case TYPE_NUMBER: {
        /* qemu_strtou64: base 0, negative values wrap, no trailing text. */
        char *end;
        errno = 0;
        unsigned long long v = strtoull(value, &end, 0);
        if (errno == ERANGE) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "Value '%s' is too large for parameter '%s'", value, name);
            return false;
        }
        if (errno || end == value || *end) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "Parameter '%s' expects a number", name);
            return false;
        }
        o->num[i] = v;
        break;
    }
    }
    o->has[i] = true;
    return true;
}

/* QEMU's id_wellformed. */
static bool id_wellformed(const char *id)
{
    if (!g_ascii_isalpha(id[0]))
        return false;
    for (const char *p = id; *p; p++)
        if (!g_ascii_isalnum(*p) && !strchr("-._", *p))
            return false;
    return true;
}

static RuleOpts *rule_opts_new(GPtrArray *sections, BlkdebugAction action, const char *id)
{
    if (id) {
        if (!id_wellformed(id))
            return NULL;
        for (guint i = 0; i < sections->len; i++) {
            RuleOpts *o = sections->pdata[i];
            if (o->action == action && o->id && strcmp(o->id, id) == 0)
                return NULL;
        }
    }
    RuleOpts *o = g_new0(RuleOpts, 1);
    o->action = action;
    o->id = g_strdup(id);
    g_ptr_array_add(sections, o);
    return o;
}

static bool find_group(const char *group, BlkdebugAction *action, GError **errp)
{
    if (strcmp(group, "inject-error") == 0) {
        *action = BLKDEBUG_INJECT_ERROR;
    } else if (strcmp(group, "set-state") == 0) {
        *action = BLKDEBUG_SET_STATE;
    } else {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "There is no option group '%s'", group);
        return false;
    }
    return true;
}

/* QEMU's qemu_config_parse over the two blkdebug groups. */
static bool parse_config_file(FILE *fp, GPtrArray *sections, GError **errp)
{
    char line[1024], group[64], id[64], arg[64], value[1024];
    RuleOpts *opts = NULL;
    BlkdebugAction action;

    while (fgets(line, sizeof line, fp)) {
        if (strlen(line) == sizeof line - 1) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "line too long");
            return false;
        }
        if (line[0] == '\n' || line[0] == '#')
            continue;
        if (sscanf(line, "[%63s \"%63[^\"]\"]", group, id) == 2) {
            if (!find_group(group, &action, errp))
                return false;
            opts = rule_opts_new(sections, action, id); /* NULL for a bad or duplicate id, as QEMU */
            continue;
        }
        if (sscanf(line, "[%63[^]]]", group) == 1) {
            if (!find_group(group, &action, errp))
                return false;
            opts = rule_opts_new(sections, action, NULL);
            continue;
        }
        value[0] = '\0';
        if (sscanf(line, " %63s = \"%1023[^\"]\"", arg, value) == 2 || sscanf(line, " %63s = \"\"", arg) == 1) {
            if (!opts) {
                g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "no group defined");
                return false;
            }
            if (!rule_opts_set(opts, arg, value, errp))
                return false;
            continue;
        }
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "parse error");
        return false;
    }
    if (ferror(fp)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "Cannot read config file: %s", g_strerror(errno));
        return false;
    }
    return true;
}

/* Sets option `i` of a section made from the options' structs (QEMU turns
 * them into QemuOpts too). */
static void rule_opts_take_str(RuleOpts *o, int i, const char *value)
{
    o->str[i] = g_strdup(value);
    o->has[i] = true;
}

static void rule_opts_take_num(RuleOpts *o, int i, bool has, uint64_t value)
{
    o->num[i] = value;
    o->has[i] = has;
}

/* The sections of the inject-error and set-state options, in their order. */
static void take_option_rules(GPtrArray *sections, const BlockdevOptionsBlkdebug *opts)
{
    for (const BlkdebugInjectErrorOptionsList *l = opts->has_inject_error ? opts->inject_error : NULL; l;
         l = l->next) {
        const BlkdebugInjectErrorOptions *r = l->value;
        RuleOpts *o = rule_opts_new(sections, BLKDEBUG_INJECT_ERROR, NULL);
        rule_opts_take_str(o, OPT_EVENT, BlkdebugEvent_str[r->event]);
        rule_opts_take_num(o, OPT_STATE, r->has_state, (uint64_t)r->state);
        if (r->has_iotype)
            rule_opts_take_str(o, OPT_IOTYPE, BlkdebugIOType_str[r->iotype]);
        rule_opts_take_num(o, OPT_ERRNO, r->has_q_errno, (uint64_t)r->q_errno);
        rule_opts_take_num(o, OPT_SECTOR, r->has_sector, (uint64_t)r->sector);
        rule_opts_take_num(o, OPT_ONCE, r->has_once, r->once);
        rule_opts_take_num(o, OPT_IMMEDIATELY, r->has_immediately, r->immediately);
    }
    for (const BlkdebugSetStateOptionsList *l = opts->has_set_state ? opts->set_state : NULL; l; l = l->next) {
        const BlkdebugSetStateOptions *r = l->value;
        RuleOpts *o = rule_opts_new(sections, BLKDEBUG_SET_STATE, NULL);
        rule_opts_take_str(o, OPT_EVENT, BlkdebugEvent_str[r->event]);
        rule_opts_take_num(o, OPT_STATE, r->has_state, (uint64_t)r->state);
        rule_opts_take_num(o, OPT_NEW_STATE, true, (uint64_t)r->new_state);
    }
}

/* The index of `name` in a generated enum's names, or -1. */
static int lookup(const char *const names[], int max, const char *name)
{
    for (int i = 0; i < max; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}

/* QEMU's add_rule. */
static bool add_rule(BlkdebugRules *rules, RuleOpts *o, GError **errp)
{
    if (!o->has[OPT_EVENT]) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "Missing event name for rule");
        return false;
    }
    int event = lookup(BlkdebugEvent_str, BLKDBG__MAX, o->str[OPT_EVENT]);
    if (event < 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "invalid parameter value: %s",
                    o->str[OPT_EVENT]);
        return false;
    }
    BlkdebugRule rule = {
        .event = event,
        .action = o->action,
        .state = o->has[OPT_STATE] ? (int)o->num[OPT_STATE] : 0,
    };
    if (o->action == BLKDEBUG_INJECT_ERROR) {
        rule.error = o->has[OPT_ERRNO] ? (int)o->num[OPT_ERRNO] : EIO;
        rule.once = o->has[OPT_ONCE] && o->num[OPT_ONCE];
        int64_t sector = o->has[OPT_SECTOR] ? (int64_t)o->num[OPT_SECTOR] : -1;
        rule.offset = sector == -1 ? -1 : (int64_t)((uint64_t)sector * 512);
        if (o->has[OPT_IOTYPE]) {
            int t = lookup(BlkdebugIOType_str, BLKDEBUG_IO_TYPE__MAX, o->str[OPT_IOTYPE]);
            if (t < 0) {
                g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "invalid parameter value: %s",
                            o->str[OPT_IOTYPE]);
                return false;
            }
            rule.iotype_mask = 1ull << t;
        } else {
            /* QEMU's default leaves block-status out. */
            rule.iotype_mask = (1ull << BLKDEBUG_IO_TYPE_READ) | (1ull << BLKDEBUG_IO_TYPE_WRITE) |
                               (1ull << BLKDEBUG_IO_TYPE_WRITE_ZEROES) | (1ull << BLKDEBUG_IO_TYPE_DISCARD) |
                               (1ull << BLKDEBUG_IO_TYPE_FLUSH);
        }
    } else {
        rule.new_state = o->has[OPT_NEW_STATE] ? (int)o->num[OPT_NEW_STATE] : 0;
    }
    g_ptr_array_insert(rules->by_event[event], 0, g_memdup2(&rule, sizeof rule));
    return true;
}

bool blkdebug_rules_parse(BlkdebugRules *rules, const BlockdevOptionsBlkdebug *opts, GError **errp)
{
    const char *config = opts->has_config ? opts->config : NULL;
    for (int e = 0; e < BLKDBG__MAX; e++)
        if (!rules->by_event[e])
            rules->by_event[e] = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GPtrArray) sections = g_ptr_array_new_with_free_func((GDestroyNotify)rule_opts_free);
    if (config) {
        FILE *fp = fopen(config, "r");
        if (!fp) {
            g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(errno),
                        "Could not read blkdebug config file: %s", g_strerror(errno));
            return false;
        }
        bool ok = parse_config_file(fp, sections, errp);
        fclose(fp);
        if (!ok)
            return false;
    }
    take_option_rules(sections, opts);
    /* As QEMU: every inject-error rule, then every set-state rule. */
    for (int action = BLKDEBUG_INJECT_ERROR; action <= BLKDEBUG_SET_STATE; action++)
        for (guint i = 0; i < sections->len; i++) {
            RuleOpts *o = sections->pdata[i];
            if (o->action == (BlkdebugAction)action && !add_rule(rules, o, errp))
                return false;
        }
    return true;
}

void blkdebug_rules_clear(BlkdebugRules *rules)
{
    for (int e = 0; e < BLKDBG__MAX; e++)
        if (rules->by_event[e]) {
            g_ptr_array_free(rules->by_event[e], TRUE);
            rules->by_event[e] = NULL;
        }
}

#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mm_cli_help(const mm_cli *cli)
{
    printf("usage: %s\n\n%s\n\noptions:\n", cli->usage, cli->summary);
    for (int i = 0; i < cli->nopts; i++) {
        const mm_cli_opt *o = &cli->opts[i];
        char left[64];
        if (o->kind == MM_OPT_FLAG)
            snprintf(left, sizeof left, "--%s", o->name);
        else
            snprintf(left, sizeof left, "--%s %s", o->name, o->metavar ? o->metavar : "VALUE");
        printf("  %-28s %s%s\n", left, o->help, o->kind == MM_OPT_LIST ? " (repeatable)" : "");
    }
    printf("  %-28s %s\n", "--help", "show this help and exit");
}

__attribute__((format(printf, 2, 3))) static int usage_error(const mm_cli *cli, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "murmur %s: ", cli->command);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry 'murmur %s --help'.\n", cli->command);
    va_end(ap);
    return MM_EXIT_USAGE;
}

static int set_value(const mm_cli *cli, const mm_cli_opt *o, const char *v)
{
    char *end = NULL;
    errno = 0;
    switch (o->kind) {
    case MM_OPT_FLAG:
        *(bool *)o->dst = true;
        return 0;
    case MM_OPT_STRING:
        if (!*v) return usage_error(cli, "--%s needs a non-empty value", o->name);
        *(const char **)o->dst = v;
        return 0;
    case MM_OPT_LIST: {
        mm_cli_list *l = o->dst;
        if (!*v) return usage_error(cli, "--%s needs a non-empty value", o->name);
        if (l->n == MM_CLI_LIST_MAX) return usage_error(cli, "--%s given more than %d times", o->name, MM_CLI_LIST_MAX);
        l->v[l->n++] = v;
        return 0;
    }
    case MM_OPT_CHOICE:
        for (const char *const *c = o->choices; *c; c++)
            if (strcmp(*c, v) == 0) {
                *(const char **)o->dst = *c;
                return 0;
            }
        return usage_error(cli, "--%s: '%s' is not one of the allowed values (see --help)", o->name, v);
    case MM_OPT_INT:
    case MM_OPT_U64: {
        if (*v == '-' && o->kind == MM_OPT_U64) return usage_error(cli, "--%s: '%s' is not a non-negative integer", o->name, v);
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end) return usage_error(cli, "--%s: '%s' is not an integer", o->name, v);
        if (o->min != o->max && ((double)x < o->min || (double)x > o->max)) {
            return usage_error(cli, "--%s: %s is out of range %.0f..%.0f", o->name, v, o->min, o->max);
        }
        if (o->kind == MM_OPT_INT) {
            if (x < -2147483647LL || x > 2147483647LL) return usage_error(cli, "--%s: '%s' is too large", o->name, v);
            *(int *)o->dst = (int)x;
        } else {
            *(uint64_t *)o->dst = (uint64_t)x;
        }
        return 0;
    }
    case MM_OPT_FLOAT: {
        double x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x)) return usage_error(cli, "--%s: '%s' is not a number", o->name, v);
        if (o->min != o->max && (x < o->min || x > o->max)) {
            return usage_error(cli, "--%s: %s is out of range %g..%g", o->name, v, o->min, o->max);
        }
        *(float *)o->dst = (float)x;
        return 0;
    }
    }
    return MM_EXIT_USAGE;
}

int mm_cli_parse(const mm_cli *cli, int argc, char **argv)
{
    int npos = 0;
    bool only_pos = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (only_pos || arg[0] != '-' || arg[1] == '\0') {
            if (npos >= cli->max_pos)
                return usage_error(cli, "unexpected argument '%s'", arg);
            cli->pos[npos++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            mm_cli_help(cli);
            return 1;
        }
        if (strncmp(arg, "--", 2) != 0) return usage_error(cli, "unknown option '%s'", arg);
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const mm_cli_opt *o = NULL;
        for (int j = 0; j < cli->nopts; j++)
            if (strlen(cli->opts[j].name) == len && strncmp(cli->opts[j].name, name, len) == 0) o = &cli->opts[j];
        if (!o) return usage_error(cli, "unknown option '%s'", arg);
        const char *value = NULL;
        if (o->kind == MM_OPT_FLAG) {
            if (eq) return usage_error(cli, "--%s takes no value", o->name);
        } else if (eq) {
            value = eq + 1;
        } else {
            if (i + 1 >= argc) return usage_error(cli, "--%s needs a value", o->name);
            value = argv[++i];
        }
        int rc = set_value(cli, o, value);
        if (rc) return rc;
    }
    if (npos < cli->min_pos) return usage_error(cli, "missing %s", cli->pos_name ? cli->pos_name : "argument");
    return 0;
}

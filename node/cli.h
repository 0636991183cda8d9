/* A table-driven command-line parser shared by every subcommand.
 *
 * Each subcommand lists its options once; the same table parses argv, checks
 * every value (type, range) and prints --help. A bad flag or value is a clear
 * message on stderr and exit status 2 (MM_EXIT_USAGE). */
#ifndef MM_CLI_H
#define MM_CLI_H

#include <stdbool.h>
#include <stdint.h>

#define MM_EXIT_USAGE 2

typedef enum { MM_OPT_FLAG, MM_OPT_INT, MM_OPT_U64, MM_OPT_FLOAT, MM_OPT_STRING, MM_OPT_CHOICE, MM_OPT_LIST } mm_cli_kind;

/* MM_OPT_LIST: a repeatable string option. */
#define MM_CLI_LIST_MAX 16
typedef struct {
    const char *v[MM_CLI_LIST_MAX];
    int n;
} mm_cli_list;

typedef struct {
    const char *name;    /* long name without "--" */
    mm_cli_kind kind;
    void *dst;           /* bool*, int*, uint64_t*, float*, const char**, const char**, mm_cli_list* */
    const char *metavar; /* shown in help, e.g. "N" */
    const char *help;
    double min, max;     /* numeric range (inclusive); ignored when min == max */
    const char *const *choices; /* MM_OPT_CHOICE: NULL-terminated */
} mm_cli_opt;

typedef struct {
    const char *command; /* "train" */
    const char *usage;   /* "murmur train [options]" */
    const char *summary; /* one paragraph */
    const mm_cli_opt *opts;
    int nopts;
    /* Positional arguments: at most max_pos, at least min_pos. */
    int min_pos, max_pos;
    const char *pos_name;
    const char **pos; /* filled, max_pos entries */
} mm_cli;

/* Parse argv (argv[0] is the subcommand). Returns 0 to go on, 1 if help was
 * printed (caller exits 0), or MM_EXIT_USAGE after printing the error. */
int mm_cli_parse(const mm_cli *cli, int argc, char **argv);
void mm_cli_help(const mm_cli *cli);

#endif

/* murmur: one executable, one subcommand per job. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"train", mm_cmd_train, "train a model: a node of a network, or alone with --solo"},
    {"demo", mm_cmd_demo, "start a local network of nodes on 127.0.0.1 and report on it"},
    {"eval", mm_cmd_eval, "test accuracy of a checkpoint"},
    {"inspect", mm_cmd_inspect, "layout, metadata and statistics of a checkpoint"},
    {"keygen", mm_cmd_keygen, "create a node identity key file"},
    {"netkey", mm_cmd_netkey, "create a network key file"},
    {"owner-keygen", mm_cmd_owner_keygen, "create a network owner's key (certs mode)"},
    {"cert", mm_cmd_cert, "issue membership certificates, revoke them (certs mode)"},
    {"status", mm_cmd_status, "show a running node's peers and counters"},
    {"sim", mm_cmd_sim, "run a simulated network from a scenario file"},
    {"exchange-bench", mm_cmd_xbench, "time exchanges between two nodes on 127.0.0.1 (a benchmark)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: murmur COMMAND [options]   (murmur COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return MM_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "murmur: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return MM_EXIT_USAGE;
}

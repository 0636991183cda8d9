/* murmur keygen / netkey / status. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "keys.h"

static int write_cmd(int argc, char **argv, const char *name, const char *what,
                     int (*writer)(const char *, mm_error *))
{
    const char *out = NULL;
    const mm_cli_opt opts[] = {
        {"out", MM_OPT_STRING, &out, "FILE", "where to write the key (mode 0600; refuses to overwrite)", 0, 0, NULL},
    };
    char usage[64];
    snprintf(usage, sizeof usage, "murmur %s --out FILE", name);
    mm_cli cli = {.command = name, .usage = usage, .summary = what, .opts = opts, .nopts = 1};
    int rc = mm_cli_parse(&cli, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (!out) {
        fprintf(stderr, "murmur %s: --out FILE is required\n", name);
        return MM_EXIT_USAGE;
    }
    mm_error err = {0};
    if (writer(out, &err) != 0) {
        fprintf(stderr, "murmur %s: %s\n", name, err.msg);
        return 1;
    }
    printf("%s written to %s\n", strcmp(name, "keygen") == 0 ? "identity" : "network key", out);
    return 0;
}

int mm_cmd_keygen(int argc, char **argv)
{
    return write_cmd(argc, argv, "keygen", "Create a node identity (an Ed25519 key pair).", mm_key_write_identity);
}

int mm_cmd_netkey(int argc, char **argv)
{
    return write_cmd(argc, argv, "netkey",
                     "Create a network key. Nodes that share it form one network; give it only to members.",
                     mm_key_write_netkey);
}

int mm_cmd_status(int argc, char **argv)
{
    const char *pos[1] = {NULL};
    mm_cli cli = {.command = "status",
                  .usage = "murmur status CHECKPOINT_DIR",
                  .summary = "Show a running node's state, peers and counters (it rewrites\n"
                             "CHECKPOINT_DIR/status.json every second).",
                  .min_pos = 1,
                  .max_pos = 1,
                  .pos_name = "CHECKPOINT_DIR",
                  .pos = pos};
    int rc = mm_cli_parse(&cli, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    char path[4200], line[2048];
    snprintf(path, sizeof path, "%s/status.json", pos[0]);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "murmur status: no status at %s (is a node running with --checkpoint-dir %s?)\n", path, pos[0]);
        return 1;
    }
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = '\0';
    fputs(line, stdout);
    return 0;
}

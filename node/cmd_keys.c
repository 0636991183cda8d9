/* murmur keygen / netkey / status. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    if (strcmp(name, "netkey") == 0) {
        printf("network key written to %s\n", out);
        return 0;
    }
    uint8_t sk[64];
    char hex[65];
    if (mm_key_read_identity(out, sk, &err) != 0) {
        fprintf(stderr, "murmur %s: %s\n", name, err.msg);
        return 1;
    }
    sodium_bin2hex(hex, sizeof hex, sk + 32, 32);
    sodium_memzero(sk, sizeof sk);
    if (strcmp(name, "keygen") == 0)
        printf("identity written to %s\npublic key: %s\n", out, hex);
    else
        printf("owner key written to %s (keep it offline)\nowner public key (members run with --owner-pub): %s\n", out,
               hex);
    return 0;
}

int mm_cmd_keygen(int argc, char **argv)
{
    return write_cmd(argc, argv, "keygen", "Create a node identity (an Ed25519 key pair).", mm_key_write_identity);
}

int mm_cmd_owner_keygen(int argc, char **argv)
{
    return write_cmd(argc, argv, "owner-keygen",
                     "Create a network owner's key (Ed25519) for certs mode: it signs membership\n"
                     "certificates and revocation lists (murmur cert). Keep it offline.",
                     mm_key_write_identity);
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

/* ------------------------------------------------------------ murmur cert */

static int cert_issue(int argc, char **argv)
{
    const char *owner = NULL, *member_pub = NULL, *member_key = NULL, *out = NULL;
    int days = MM_CERT_LIFETIME_DEFAULT_S / 86400;
    uint64_t serial = 0;
    const mm_cli_opt opts[] = {
        {"owner", MM_OPT_STRING, &owner, "FILE", "the network owner's key (murmur owner-keygen)", 0, 0, NULL},
        {"member-pub", MM_OPT_STRING, &member_pub, "HEX", "the member's public key (murmur keygen prints it)", 0, 0, NULL},
        {"member-key", MM_OPT_STRING, &member_key, "FILE", "or the member's identity file, to take its public key", 0, 0, NULL},
        {"days", MM_OPT_INT, &days, "N", "valid for N days from now (default 7, at most 30)", 1, MM_CERT_LIFETIME_MAX_S / 86400, NULL},
        {"serial", MM_OPT_U64, &serial, "S", "serial number, for revocation (default: random)", 1, 9.2e18, NULL},
        {"out", MM_OPT_STRING, &out, "FILE", "where to write the certificate (replaced if it exists)", 0, 0, NULL},
    };
    mm_cli cli = {.command = "cert issue",
                  .usage = "murmur cert issue --owner FILE (--member-pub HEX | --member-key FILE) [--days N] --out FILE",
                  .summary = "Issue a membership certificate of a certs-mode network: the owner's signature\n"
                             "that the member may join, from now for --days days.",
                  .opts = opts,
                  .nopts = (int)(sizeof opts / sizeof opts[0])};
    int rc = mm_cli_parse(&cli, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (!owner || !out || (!member_pub == !member_key)) {
        fprintf(stderr, "murmur cert issue: --owner FILE, --out FILE and one of --member-pub HEX or --member-key FILE "
                        "are required\nTry 'murmur cert issue --help'.\n");
        return MM_EXIT_USAGE;
    }
    mm_cert c;
    memset(&c, 0, sizeof c);
    if (member_pub && mm_key_parse_pub(member_pub, c.member_pk) != 0) {
        fprintf(stderr, "murmur cert issue: --member-pub '%s' is not a public key (64 hex digits)\n", member_pub);
        return MM_EXIT_USAGE;
    }
    mm_error err = {0};
    uint8_t sk[64];
    if (sodium_init() < 0) return 1;
    if (member_key) {
        if (mm_key_read_identity(member_key, sk, &err) != 0) {
            fprintf(stderr, "murmur cert issue: %s\n", err.msg);
            return 1;
        }
        memcpy(c.member_pk, sk + 32, 32);
    }
    if (mm_key_read_identity(owner, sk, &err) != 0) {
        fprintf(stderr, "murmur cert issue: %s\n", err.msg);
        return 1;
    }
    uint64_t now = (uint64_t)time(NULL);
    c.ver = MM_CERT_VERSION;
    mm_cert_network_id(sk + 32, c.network_id);
    c.not_before = now;
    c.not_after = now + (uint64_t)days * 86400u;
    c.serial = serial ? serial : (randombytes_random() | (uint64_t)randombytes_random() << 32) >> 1;
    mm_cert_sign(&c, sk);
    sodium_memzero(sk, sizeof sk);
    uint8_t bytes[MM_CERT_BYTES];
    mm_cert_encode(&c, bytes);
    if (mm_key_write_cert(out, bytes, &err) != 0) {
        fprintf(stderr, "murmur cert issue: %s\n", err.msg);
        return 1;
    }
    char hex[65];
    sodium_bin2hex(hex, sizeof hex, c.member_pk, 32);
    time_t until = (time_t)c.not_after;
    char date[64];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S UTC", gmtime(&until));
    printf("certificate serial %llu for member %s, valid until %s, written to %s\n", (unsigned long long)c.serial, hex,
           date, out);
    return 0;
}

static int cert_revoke(int argc, char **argv)
{
    const char *owner = NULL, *from = NULL, *out = NULL;
    mm_cli_list serials = {0}, members = {0};
    const mm_cli_opt opts[] = {
        {"owner", MM_OPT_STRING, &owner, "FILE", "the network owner's key (murmur owner-keygen)", 0, 0, NULL},
        {"from", MM_OPT_STRING, &from, "FILE", "the current list: its entries are kept, its version + 1 is used", 0, 0, NULL},
        {"serial", MM_OPT_LIST, &serials, "S", "revoke the certificate with this serial", 0, 0, NULL},
        {"member-pub", MM_OPT_LIST, &members, "HEX", "revoke every certificate of this member", 0, 0, NULL},
        {"out", MM_OPT_STRING, &out, "FILE", "where to write the signed list (replaced if it exists)", 0, 0, NULL},
    };
    mm_cli cli = {.command = "cert revoke",
                  .usage = "murmur cert revoke --owner FILE [--from FILE] (--serial S | --member-pub HEX)... --out FILE",
                  .summary = "Write a signed revocation list. Members pass it on to each other (the highest\n"
                             "version wins), close the sessions of revoked members and refuse them after. Give\n"
                             "it to any one node with --revocations FILE.",
                  .opts = opts,
                  .nopts = (int)(sizeof opts / sizeof opts[0])};
    int rc = mm_cli_parse(&cli, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (!owner || !out || serials.n + members.n == 0) {
        fprintf(stderr, "murmur cert revoke: --owner FILE, --out FILE and at least one --serial or --member-pub are "
                        "required\nTry 'murmur cert revoke --help'.\n");
        return MM_EXIT_USAGE;
    }
    static mm_revlist l;
    memset(&l, 0, sizeof l);
    mm_error err = {0};
    uint8_t sk[64];
    if (sodium_init() < 0) return 1;
    if (mm_key_read_identity(owner, sk, &err) != 0) {
        fprintf(stderr, "murmur cert revoke: %s\n", err.msg);
        return 1;
    }
    if (from) {
        if (mm_key_read_revocations(from, &l, &err) != 0) {
            fprintf(stderr, "murmur cert revoke: %s\n", err.msg);
            sodium_memzero(sk, sizeof sk);
            return 1;
        }
        if (!mm_revlist_sig_ok(&l, sk + 32)) {
            fprintf(stderr, "murmur cert revoke: %s: not signed by this owner key\n", from);
            sodium_memzero(sk, sizeof sk);
            return 1;
        }
    }
    rc = 0;
    if (l.n + (uint32_t)serials.n + (uint32_t)members.n > MM_REVOKE_MAX) {
        fprintf(stderr, "murmur cert revoke: a list holds at most %d entries (drop those whose certificates expired)\n",
                MM_REVOKE_MAX);
        rc = 1;
    }
    for (int i = 0; i < serials.n && !rc; i++) {
        char *end = NULL;
        unsigned long long v = strtoull(serials.v[i], &end, 10);
        if (serials.v[i][0] == '-' || !end || *end || end == serials.v[i]) {
            fprintf(stderr, "murmur cert revoke: --serial '%s' is not a serial number\n", serials.v[i]);
            rc = MM_EXIT_USAGE;
        }
        l.e[l.n++] = (mm_revoke_entry){.kind = MM_REVOKE_SERIAL, .serial = v};
    }
    for (int i = 0; i < members.n && !rc; i++) {
        l.e[l.n].kind = MM_REVOKE_KEY;
        if (mm_key_parse_pub(members.v[i], l.e[l.n++].key) != 0) {
            fprintf(stderr, "murmur cert revoke: --member-pub '%s' is not a public key (64 hex digits)\n", members.v[i]);
            rc = MM_EXIT_USAGE;
        }
    }
    if (!rc) {
        l.version++;
        mm_revlist_sign(&l, sk);
        if (mm_key_write_revocations(out, &l, &err) != 0) {
            fprintf(stderr, "murmur cert revoke: %s\n", err.msg);
            rc = 1;
        } else {
            printf("revocation list version %llu (%u entries) written to %s\n", (unsigned long long)l.version, l.n, out);
        }
    }
    sodium_memzero(sk, sizeof sk);
    return rc;
}

int mm_cmd_cert(int argc, char **argv)
{
    static const char usage[] = "usage: murmur cert issue|revoke [options]   (murmur cert SUBCOMMAND --help)\n\n"
                                "  issue    sign a membership certificate for a member of a certs-mode network\n"
                                "  revoke   sign a revocation list (serials or member keys)\n";
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(usage, stdout);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "issue") == 0) return cert_issue(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "revoke") == 0) return cert_revoke(argc - 1, argv + 1);
    if (argc >= 2) fprintf(stderr, "murmur cert: unknown subcommand '%s'\n", argv[1]);
    fputs(usage, stderr);
    return MM_EXIT_USAGE;
}

/* murmur demo: a local network of nodes on 127.0.0.1, each a real `murmur
 * train` process on its own shard, with a combined progress line and a
 * final report (every node's test accuracy, the spread of their parameters). */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "cli.h"
#include "commands.h"
#include "keys.h"
#include "model.h"
#include "util.h"

#define DEMO_MAX 16

static volatile sig_atomic_t interrupted;
static void on_sigint(int s)
{
    (void)s;
    interrupted = 1;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* Read a whole small file into buf (NUL-terminated); false if missing. */
static bool slurp(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f) return false;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n > 0;
}

/* The value after "key": in a one-line JSON object (numbers and strings). */
static bool json_field(const char *json, const char *key, char *out, size_t cap)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(json, pat);
    if (!p) return false;
    p += strlen(pat);
    if (*p == '"') p++;
    size_t n = strcspn(p, "\",}");
    if (n >= cap) n = cap - 1;
    memcpy(out, p, n);
    out[n] = '\0';
    return true;
}

static pid_t spawn(const char *exe, char *const argv[], const char *out, const char *log)
{
    pid_t pid = fork();
    if (pid != 0) return pid;
    FILE *o = freopen(out, "w", stdout), *e = freopen(log, "w", stderr);
    if (!o || !e) _exit(127);
    execv(exe, argv);
    _exit(127);
}

int mm_cmd_demo(int argc, char **argv)
{
    int nodes = 4, epochs = 10, avg = 20, throttled = -1;
    float throttle = 4.0f;
    uint64_t seed = 0;
    float lr = 0;
    int batch = 0;
    float momentum = -1.0f, skew = 1.0f, avg_s = 0.0f;
    const char *model = "mlp", *partition = "iid", *dir = NULL, *encoding = "f32", *devices = "cpu";
    bool json = false, no_clip = false;
    static const char *const model_choices[] = {"mlp", "cnn", NULL}, *const part_choices[] = {"iid", "label", NULL},
                             *const enc_choices[] = {"f32", "f16", "bf16", "q8", NULL};
    const mm_cli_opt opts[] = {
        {"nodes", MM_OPT_INT, &nodes, "N", "nodes to start (default 4)", 1, DEMO_MAX, NULL},
        {"model", MM_OPT_CHOICE, &model, "mlp|cnn", "model (default mlp)", 0, 0, model_choices},
        {"epochs", MM_OPT_INT, &epochs, "E", "epochs each node makes over its shard (default 10)", 1, 1000, NULL},
        {"partition", MM_OPT_CHOICE, &partition, "iid|label", "how the training set is cut (default iid)", 0, 0, part_choices},
        {"skew", MM_OPT_FLOAT, &skew, "F", "with --partition label: the share of a shard from its 2-3 classes (default 1)", 0.01, 1, NULL},
        {"average-every", MM_OPT_INT, &avg, "STEPS", "steps between exchanges (default 20)", 1, 1000000, NULL},
        {"average-seconds", MM_OPT_FLOAT, &avg_s, "T", "also average every T seconds (default 0: by steps only)", 0, 86400, NULL},
        {"encoding", MM_OPT_CHOICE, &encoding, "f32|f16|bf16|q8", "wire encoding (default f32)", 0, 0, enc_choices},
        {"throttle-node", MM_OPT_INT, &throttled, "I", "make node I slower (see --throttle)", 0, DEMO_MAX - 1, NULL},
        {"throttle", MM_OPT_FLOAT, &throttle, "FACTOR", "slow-down of --throttle-node (default 4)", 1, 1000, NULL},
        {"devices", MM_OPT_STRING, &devices, "D[,D...]", "compute device of each node, cpu|cuda:N|auto, the list repeated over the nodes (default cpu)", 0, 0, NULL},
        {"seed", MM_OPT_U64, &seed, "S", "seed (default 0)", 0, 9.2e18, NULL},
        {"lr", MM_OPT_FLOAT, &lr, "X", "peak learning rate (default: train's)", 1e-9, 100, NULL},
        {"batch", MM_OPT_INT, &batch, "B", "batch size of every node (default: train's)", 1, 65536, NULL},
        {"momentum", MM_OPT_FLOAT, &momentum, "M", "SGD momentum of every node (default: train's)", 0, 0.9999, NULL},
        {"dir", MM_OPT_STRING, &dir, "DIR", "where nodes keep checkpoints, logs, metrics (default: a new temp dir)", 0, 0, NULL},
        {"json", MM_OPT_FLAG, &json, NULL, "print one JSON line per node and a summary line", 0, 0, NULL},
        {"no-clip", MM_OPT_FLAG, &no_clip, NULL, "nodes accept peers' vectors unclipped", 0, 0, NULL},
    };
    mm_cli cli = {.command = "demo",
                  .usage = "murmur demo [options]",
                  .summary = "Start a local network of nodes on 127.0.0.1, each on its own shard of\n"
                             "Fashion-MNIST, show their progress, and report every node's test accuracy\n"
                             "and the spread between their parameters.",
                  .opts = opts,
                  .nopts = (int)(sizeof opts / sizeof opts[0])};
    int rc = mm_cli_parse(&cli, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    /* --devices: node i trains on item i mod count; each item is checked here, before any node starts. */
    char devbuf[256], *dev[DEMO_MAX];
    int ndev = 0;
    if (strlen(devices) >= sizeof devbuf) {
        fprintf(stderr, "murmur demo: --devices: too long\n");
        return 2;
    }
    snprintf(devbuf, sizeof devbuf, "%s", devices);
    for (char *save = NULL, *tok = strtok_r(devbuf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        bool ok = strcmp(tok, "cpu") == 0 || strcmp(tok, "auto") == 0 || strcmp(tok, "cpu-staged") == 0;
        if (!ok && strncmp(tok, "cuda:", 5) == 0 && tok[5] >= '0' && tok[5] <= '9') {
            char *end = NULL;
            ok = strtol(tok + 5, &end, 10) <= 1024 && !*end;
        }
        if (!ok || ndev == DEMO_MAX) {
            fprintf(stderr, "murmur demo: --devices '%s': expected up to %d of cpu, cuda:N, auto, separated by commas\n",
                    devices, DEMO_MAX);
            return 2;
        }
        dev[ndev++] = tok;
    }
    if (ndev == 0) {
        fprintf(stderr, "murmur demo: --devices '%s': expected up to %d of cpu, cuda:N, auto, separated by commas\n",
                devices, DEMO_MAX);
        return 2;
    }

    char exe[4096], tmpl[] = "/tmp/murmur-demo-XXXXXX", path[4600];
    ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (el <= 0) {
        fprintf(stderr, "murmur demo: cannot find my own executable\n");
        return 1;
    }
    exe[el] = '\0';
    if (!dir) {
        dir = mkdtemp(tmpl);
        if (!dir) {
            fprintf(stderr, "murmur demo: cannot create a temp dir: %s\n", strerror(errno));
            return 1;
        }
    } else if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "murmur demo: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    mm_error err = {0};
    char netkey[4400];
    snprintf(netkey, sizeof netkey, "%s/network.key", dir);
    if (access(netkey, F_OK) != 0 && mm_key_write_netkey(netkey, &err) != 0) {
        fprintf(stderr, "murmur demo: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "murmur demo: %d nodes training %s on %s shards of Fashion-MNIST, %d epochs each; files in %s\n",
            nodes, model, partition, epochs, dir);

    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    pid_t pids[DEMO_MAX] = {0};
    int status[DEMO_MAX];
    bool done[DEMO_MAX] = {false};
    char bootstrap[64] = "";
    double t0 = mm_now_s();
    for (int i = 0; i < nodes; i++) {
        char ndir[4300], shard[32], ep[16], av[16], sd[32], th[32], met[4500], out[4500], log[4500];
        snprintf(ndir, sizeof ndir, "%s/node-%d", dir, i);
        snprintf(shard, sizeof shard, "%d/%d", i, nodes);
        snprintf(ep, sizeof ep, "%d", epochs);
        snprintf(av, sizeof av, "%d", avg);
        snprintf(sd, sizeof sd, "%llu", (unsigned long long)seed);
        snprintf(th, sizeof th, "%g", (double)(i == throttled ? throttle : 1.0f));
        snprintf(met, sizeof met, "%s/metrics.jsonl", ndir);
        snprintf(out, sizeof out, "%s/node-%d.out", dir, i);
        snprintf(log, sizeof log, "%s/node-%d.log", dir, i);
        mkdir(ndir, 0700);
        char model_s[16], part_s[16], enc_s[16];
        snprintf(model_s, sizeof model_s, "%s", model);
        snprintf(part_s, sizeof part_s, "%s", partition);
        snprintf(enc_s, sizeof enc_s, "%s", encoding);
        char *args[48];
        int k = 0;
        args[k++] = exe, args[k++] = "train", args[k++] = "--model", args[k++] = model_s;
        args[k++] = "--epochs", args[k++] = ep, args[k++] = "--shard", args[k++] = shard;
        args[k++] = "--partition", args[k++] = part_s, args[k++] = "--seed", args[k++] = sd;
        args[k++] = "--listen", args[k++] = "127.0.0.1:0", args[k++] = "--network-key", args[k++] = netkey;
        args[k++] = "--checkpoint-dir", args[k++] = ndir, args[k++] = "--metrics", args[k++] = met;
        args[k++] = "--average-every", args[k++] = av, args[k++] = "--encoding", args[k++] = enc_s;
        args[k++] = "--throttle", args[k++] = th, args[k++] = "--json";
        args[k++] = "--device", args[k++] = dev[i % ndev];
        char lr_s[32];
        snprintf(lr_s, sizeof lr_s, "%g", (double)lr);
        if (lr > 0) args[k++] = "--lr", args[k++] = lr_s;
        char batch_s[16];
        snprintf(batch_s, sizeof batch_s, "%d", batch);
        if (batch > 0) args[k++] = "--batch", args[k++] = batch_s;
        char mom_s[32];
        snprintf(mom_s, sizeof mom_s, "%g", (double)momentum);
        if (momentum >= 0) args[k++] = "--momentum", args[k++] = mom_s;
        if (no_clip) args[k++] = "--no-clip";
        char avs_s[32];
        snprintf(avs_s, sizeof avs_s, "%g", (double)avg_s);
        if (avg_s > 0) args[k++] = "--average-seconds", args[k++] = avs_s;
        char skew_s[32];
        snprintf(skew_s, sizeof skew_s, "%g", (double)skew);
        if (skew < 1.0f) args[k++] = "--skew", args[k++] = skew_s;
        if (i > 0) args[k++] = "--bootstrap", args[k++] = bootstrap;
        args[k] = NULL;
        pids[i] = spawn(exe, args, out, log);
        if (pids[i] < 0) {
            fprintf(stderr, "murmur demo: fork failed: %s\n", strerror(errno));
            break;
        }
        if (i == 0) { /* the others join through node 0: learn its port from its status file */
            snprintf(path, sizeof path, "%s/status.json", ndir);
            char js[2048], listen[64];
            for (int w = 0; w < 200 && !bootstrap[0]; w++) {
                if (slurp(path, js, sizeof js) && json_field(js, "listen", listen, sizeof listen))
                    snprintf(bootstrap, sizeof bootstrap, "%s", listen);
                else
                    sleep_s(0.05);
            }
            if (!bootstrap[0]) {
                fprintf(stderr, "murmur demo: node 0 did not start (see %s)\n", log);
                kill(pids[0], SIGTERM);
                waitpid(pids[0], NULL, 0);
                return 1;
            }
        }
    }

    /* Progress until every node has exited. */
    int left = nodes;
    bool tty = isatty(STDERR_FILENO);
    double last = 0;
    while (left > 0) {
        for (int i = 0; i < nodes; i++) {
            if (done[i] || pids[i] <= 0) continue;
            pid_t r = waitpid(pids[i], &status[i], WNOHANG);
            if (r == pids[i]) done[i] = true, left--;
        }
        if (interrupted == 1) {
            fprintf(stderr, "\nmurmur demo: interrupted; asking the nodes to leave\n");
            for (int i = 0; i < nodes; i++)
                if (!done[i] && pids[i] > 0) kill(pids[i], SIGTERM);
            interrupted = 2;
        }
        if (mm_now_s() - last >= (tty ? 0.5 : 5.0)) {
            last = mm_now_s();
            char line[2048];
            int off = snprintf(line, sizeof line, "%6.1fs", last - t0);
            for (int i = 0; i < nodes && off < (int)sizeof line - 64; i++) {
                char js[2048], step[32] = "-", loss[32] = "-", peers[16] = "-", ok[32] = "-";
                snprintf(path, sizeof path, "%s/node-%d/status.json", dir, i);
                if (slurp(path, js, sizeof js)) {
                    json_field(js, "step", step, sizeof step);
                    json_field(js, "loss", loss, sizeof loss);
                    json_field(js, "peers", peers, sizeof peers);
                    json_field(js, "exchanges_ok", ok, sizeof ok);
                }
                off += snprintf(line + off, sizeof line - (size_t)off, " | n%d %s step %s loss %.6s peers %s exch %s",
                                i, done[i] ? "done" : "", step, loss, peers, ok);
            }
            fprintf(stderr, tty ? "\r%s " : "%s\n", line);
        }
        if (left) sleep_s(0.1);
    }
    if (tty) fputc('\n', stderr);

    /* Report: each node's final line, then the spread of the parameters. */
    mm_layout layout;
    mm_model_layout(&layout, model, &err);
    float *params[DEMO_MAX] = {NULL};
    double accs[DEMO_MAX], lo = 1, hi = 0;
    int nok = 0, failures = 0;
    for (int i = 0; i < nodes; i++) {
        char out[4500], js[4096], acc[32] = "";
        snprintf(out, sizeof out, "%s/node-%d.out", dir, i);
        bool exited_ok = WIFEXITED(status[i]) && WEXITSTATUS(status[i]) == 0;
        if (!slurp(out, js, sizeof js) || !json_field(js, "test_acc", acc, sizeof acc) || !exited_ok) {
            fprintf(stderr, "node %d: failed (exit status %d); see %s/node-%d.log\n", i,
                    WIFEXITED(status[i]) ? WEXITSTATUS(status[i]) : -1, dir, i);
            failures++;
            continue;
        }
        accs[i] = atof(acc);
        lo = accs[i] < lo ? accs[i] : lo;
        hi = accs[i] > hi ? accs[i] : hi;
        if (json) fputs(js, stdout);
        else printf("node %d: test accuracy %.2f %%\n", i, accs[i] * 100);
        snprintf(path, sizeof path, "%s/node-%d/node.safetensors", dir, i);
        params[i] = calloc(layout.total, sizeof(float));
        mm_ckpt_meta meta;
        if (params[i] && mm_checkpoint_load(path, &layout, params[i], &meta, &err) == 0) nok++;
        else {
            free(params[i]);
            params[i] = NULL;
        }
    }
    /* Spread: the largest distance between two nodes' parameters, relative
     * to the mean norm (0 = identical replicas). */
    double spread = 0, norm = 0;
    for (int i = 0; i < nodes; i++) {
        if (!params[i]) continue;
        double s = 0;
        for (size_t k = 0; k < layout.total; k++) s += (double)params[i][k] * (double)params[i][k];
        norm += sqrt(s) / nok;
        for (int j = i + 1; j < nodes; j++) {
            if (!params[j]) continue;
            double d = 0;
            for (size_t k = 0; k < layout.total; k++) {
                double x = (double)params[i][k] - (double)params[j][k];
                d += x * x;
            }
            spread = sqrt(d) > spread ? sqrt(d) : spread;
        }
    }
    double rel = norm > 0 ? spread / norm : 0;
    double wall = mm_now_s() - t0;
    if (json)
        printf("{\"event\":\"demo\",\"nodes\":%d,\"failed\":%d,\"min_acc\":%.4f,\"max_acc\":%.4f,"
               "\"param_spread\":%.6f,\"param_spread_rel\":%.6f,\"wall_s\":%.1f,\"dir\":\"%s\"}\n",
               nodes, failures, nodes - failures ? lo : 0.0, nodes - failures ? hi : 0.0, spread, rel, wall, dir);
    else if (nodes - failures > 0)
        printf("test accuracy from %.2f %% to %.2f %% across %d nodes; parameter spread %.4f (%.4f %% of the norm); "
               "%.1f s\n",
               lo * 100, hi * 100, nodes - failures, spread, rel * 100, wall);
    for (int i = 0; i < nodes; i++) free(params[i]);
    return failures ? 1 : 0;
}

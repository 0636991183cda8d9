/* murmur train: training, alone (--solo) for now. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "netnode.h"
#include "cli.h"
#include "commands.h"
#include "trainer.h"
#include "util.h"

static const char *const *const model_choices = mm_model_names;
static const char *const opt_choices[] = {"sgd", "adamw", NULL};
static const char *const part_choices[] = {"iid", "label", NULL};

static const char *const enc_choices[] = {"f32", "f16", "bf16", "q8", NULL};

typedef struct {
    bool solo, json, no_nesterov, quiet, weight_equal;
    mm_node_config nc;
    int bench_batches, bench_reps;
    const char *checkpoint, *partition, *shard;
    mm_train_config tc;
} train_args;

/* "I/N" with 0 <= I < N. */
static int parse_shard(const char *s, uint32_t *i, uint32_t *n)
{
    char *end;
    unsigned long a = strtoul(s, &end, 10);
    if (end == s || *end != '/') return -1;
    const char *b_str = end + 1;
    unsigned long b = strtoul(b_str, &end, 10);
    if (end == b_str || *end || b == 0 || a >= b || b > 100000) return -1;
    *i = (uint32_t)a, *n = (uint32_t)b;
    return 0;
}

static int save_checkpoint(const mm_trainer *t, const char *path)
{
    mm_ckpt_meta meta = {.step = t->step, .samples = t->samples, .seed = t->cfg.seed, .version = MM_CKPT_VERSION};
    mm_error err = {0};
    const mm_model *m = t->model;
    float *host = malloc(m->layout.total * sizeof *host);
    if (!host) {
        fprintf(stderr, "murmur train: out of memory writing checkpoint\n");
        return -1;
    }
    m->be->ops->to_host(m->be, host, m->params, m->layout.total * sizeof *host);
    int rc = mm_checkpoint_save(path, &m->layout, host, &meta, &err);
    free(host);
    if (rc) fprintf(stderr, "murmur train: %s\n", err.msg);
    return rc;
}

/* Throughput only: warm-up, then reps windows of `batches` batches each. */
static int run_bench(mm_trainer *t, const train_args *a)
{
    double rates[64];
    int reps = a->bench_reps;
    for (int i = 0; i < 10; i++)
        if (!mm_trainer_step(t)) i--;
    for (int r = 0; r < reps; r++) {
        uint64_t s0 = t->samples;
        t->be.ops->sync(&t->be);
        double t0 = mm_now_s();
        for (int i = 0; i < a->bench_batches; i++)
            if (!mm_trainer_step(t)) i--; /* epoch boundary: not a batch */
        t->be.ops->sync(&t->be);
        rates[r] = (double)(t->samples - s0) / (mm_now_s() - t0);
        if (!a->quiet) fprintf(stderr, "  window %d: %.0f samples/s\n", r + 1, rates[r]);
    }
    /* median */
    for (int i = 1; i < reps; i++)
        for (int j = i; j > 0 && rates[j] < rates[j - 1]; j--) {
            double x = rates[j];
            rates[j] = rates[j - 1];
            rates[j - 1] = x;
        }
    double med = reps % 2 ? rates[reps / 2] : 0.5 * (rates[reps / 2 - 1] + rates[reps / 2]);
    printf("{\"event\":\"bench\",\"peer\":\"murmur\",\"model\":\"%s\",\"threads\":%d,\"batch\":%d,"
           "\"bench_samples_per_s\":%.0f,\"min\":%.0f,\"max\":%.0f,\"peak_rss_kib\":%ld}\n",
           t->cfg.model, t->cfg.threads, t->cfg.batch, med, rates[0], rates[reps - 1], mm_peak_rss_kib());
    return 0;
}

int mm_cmd_train(int argc, char **argv)
{
    train_args a = {.bench_reps = 5, .partition = "iid"};
    mm_train_config *c = &a.tc;
    c->model = "mlp";
    c->data_dir = MM_DATA_DEFAULT_DIR;
    c->optimizer = "sgd";
    c->epochs = 10;
    c->batch = 128;
    c->threads = 1;
    c->device = "cpu";
    c->momentum = 0.9f;
    c->weight_decay = -1.0f;
    c->warmup_epochs = -1.0f;
    c->clip_norm = -1.0f; /* default: decided by the mode below */
    const mm_cli_opt opts[] = {
        {"solo", MM_OPT_FLAG, &a.solo, NULL, "train alone, without a network", 0, 0, NULL},
        {"model", MM_OPT_CHOICE, &c->model, "mlp|cnn|mlp4k", "model to train (default mlp)", 0, 0, model_choices},
        {"epochs", MM_OPT_INT, &c->epochs, "N", "passes over the (shard of the) training set (default 10)", 1, 10000, NULL},
        {"data", MM_OPT_STRING, &c->data_dir, "DIR", "Fashion-MNIST directory (default " MM_DATA_DEFAULT_DIR ")", 0, 0, NULL},
        {"seed", MM_OPT_U64, &c->seed, "S", "seed of initialisation and shuffling (default 0)", 0, 9.2e18, NULL},
        {"threads", MM_OPT_INT, &c->threads, "T", "compute threads (default 1)", 1, 256, NULL},
        {"tf32", MM_OPT_FLAG, &c->tf32, NULL, "with a GPU: matrix products on TF32 tensor cores (faster; about 1e-3 relative error, default full fp32)", 0, 0, NULL},
        {"device", MM_OPT_STRING, &c->device, "cpu|cuda:N|auto", "compute device (default cpu; auto: a GPU if usable, else the CPU; cpu-staged: the CPU behind a GPU's interface, for tests)", 0, 0, NULL},
        {"batch", MM_OPT_INT, &c->batch, "B", "examples per step (default 128)", 1, 65536, NULL},
        {"lr", MM_OPT_FLOAT, &c->lr, "X", "peak learning rate (default: sgd 0.1 mlp / 0.05 cnn, adamw 0.001)", 1e-9, 100, NULL},
        {"optimizer", MM_OPT_CHOICE, &c->optimizer, "sgd|adamw", "optimizer (default sgd, Nesterov momentum 0.9)", 0, 0, opt_choices},
        {"momentum", MM_OPT_FLOAT, &c->momentum, "M", "SGD momentum (default 0.9)", 0, 0.9999, NULL},
        {"no-nesterov", MM_OPT_FLAG, &a.no_nesterov, NULL, "plain (heavy-ball) momentum instead of Nesterov", 0, 0, NULL},
        {"weight-decay", MM_OPT_FLOAT, &c->weight_decay, "W", "weight decay (default sgd 5e-4, adamw 0.05)", 0, 10, NULL},
        {"clip-grad", MM_OPT_FLOAT, &c->clip_norm, "N", "clip the gradient's global L2 norm to N (default: off alone, 5 in a network)", 0, 1e9, NULL},
        {"warmup", MM_OPT_FLOAT, &c->warmup_epochs, "E", "epochs of linear warm-up before the cosine decay (default 0.5)", 0, 1000, NULL},
        {"shard", MM_OPT_STRING, &a.shard, "I/N", "train on shard I of N of the training set", 0, 0, NULL},
        {"partition", MM_OPT_CHOICE, &a.partition, "iid|label", "how shards are cut (default iid)", 0, 0, part_choices},
        {"skew", MM_OPT_FLOAT, &c->skew, "F", "with --partition label: the share of a shard from its 2-3 classes, the rest from all (default 1)", 0.01, 1, NULL},
        {"checkpoint", MM_OPT_STRING, &a.checkpoint, "FILE", "write a checkpoint after every epoch (atomically)", 0, 0, NULL},
        {"json", MM_OPT_FLAG, &a.json, NULL, "print a final JSON line", 0, 0, NULL},
        {"quiet", MM_OPT_FLAG, &a.quiet, NULL, "no progress line, no per-epoch lines", 0, 0, NULL},
        {"bench-batches", MM_OPT_INT, &a.bench_batches, "N", "measure throughput over windows of N batches, then exit", 1, 1000000, NULL},
        {"bench-reps", MM_OPT_INT, &a.bench_reps, "R", "windows for --bench-batches (default 5)", 1, 64, NULL},
        /* networked training */
        {"listen", MM_OPT_STRING, &a.nc.listen, "HOST:PORT", "address to listen on, IPV4:PORT or [IPV6]:PORT (default 127.0.0.1:0, any free port)", 0, 0, NULL},
        {"advertise", MM_OPT_STRING, &a.nc.advertise, "HOST:PORT", "the address other nodes reach this one at (needed with --listen 0.0.0.0 or [::]; port 0: the listening port)", 0, 0, NULL},
        {"bootstrap", MM_OPT_LIST, &a.nc.bootstrap, "HOST:PORT", "join the network through this member", 0, 0, NULL},
        {"key", MM_OPT_STRING, &a.nc.key_file, "FILE", "node identity (murmur keygen); default: CHECKPOINT_DIR/identity.key", 0, 0, NULL},
        {"network-key", MM_OPT_LIST, &a.nc.netkey_files, "FILE", "the network's key (murmur netkey); default: the open network. Up to 4: the first is the primary (we dial with it), the others are also accepted (key rotation)", 0, 0, NULL},
        {"network-id", MM_OPT_STRING, &a.nc.network_id, "HEX", "keep this network id (logged at start) when the primary key changes in a key rotation", 0, 0, NULL},
        {"owner-pub", MM_OPT_STRING, &a.nc.owner_pub, "HEX", "certs mode: members need certificates signed by this owner key", 0, 0, NULL},
        {"cert", MM_OPT_STRING, &a.nc.cert_file, "FILE", "certs mode: this node's certificate (murmur cert issue)", 0, 0, NULL},
        {"revocations", MM_OPT_STRING, &a.nc.revocations_file, "FILE", "certs mode: a revocation list (murmur cert revoke)", 0, 0, NULL},
        {"average-every", MM_OPT_INT, &a.nc.average_every, "STEPS", "average with a random peer every STEPS steps (default 20)", 1, 1000000, NULL},
        {"average-seconds", MM_OPT_FLOAT, &a.nc.average_seconds, "T", "also average every T seconds (default 0: by steps only)", 0, 86400, NULL},
        {"encoding", MM_OPT_CHOICE, &a.nc.encoding, "f32|f16|bf16|q8", "parameter encoding on the wire (default f32)", 0, 0, enc_choices},
        {"weight-equal", MM_OPT_FLAG, &a.weight_equal, NULL, "average with weight 1/2 (default: by samples seen, capped at 1/2)", 0, 0, NULL},
        {"no-clip", MM_OPT_FLAG, &a.nc.no_clip, NULL, "accept peers' vectors unclipped (no poisoning defence)", 0, 0, NULL},
        {"checkpoint-dir", MM_OPT_STRING, &a.nc.checkpoint_dir, "DIR", "checkpoints, identity and status; resumes from it", 0, 0, NULL},
        {"checkpoint-seconds", MM_OPT_FLOAT, &a.nc.checkpoint_seconds, "T", "checkpoint every T seconds too (default 10)", 0, 86400, NULL},
        {"metrics", MM_OPT_STRING, &a.nc.metrics_file, "FILE", "append JSON-lines metrics to FILE", 0, 0, NULL},
        {"throttle", MM_OPT_FLOAT, &a.nc.throttle, "FACTOR", "run FACTOR times slower (emulates a slower machine)", 1, 1000, NULL},
        {"linger", MM_OPT_FLOAT, &a.nc.linger, "T", "after the last epoch, keep averaging while partners still train, at most T seconds (default 120; 0: three last exchanges only)", 0, 86400, NULL},
        {"join-timeout", MM_OPT_FLOAT, &a.nc.join_timeout, "T", "seconds to reach a bootstrap peer (default 10)", 0.1, 3600, NULL},
        {"crypto-threads", MM_OPT_INT, &a.nc.crypto_threads, "T", "extra threads that encrypt outgoing parameters (default 0)", 0, 64, NULL},
        {"view-per-prefix", MM_OPT_INT, &a.nc.view_per_prefix, "N", "peers kept in the view per IPv4 /24 or IPv6 /48 (default 2; raise it where many nodes share a subnet)", 1, 32, NULL},
        {"conns-per-prefix", MM_OPT_INT, &a.nc.conns_per_prefix, "N", "connections per IPv4 /24 or IPv6 /48 (default 8; raise it behind a NAT or in one data center)", 1, 128, NULL},
    };
    mm_cli cli = {.command = "train",
                  .usage = "murmur train [--solo] [options]",
                  .summary = "Train a model on Fashion-MNIST. With --solo the node trains alone; otherwise it\n"
                             "listens on --listen, joins the network through --bootstrap members, trains on\n"
                             "its --shard and averages its parameters with random peers as it goes. It prints\n"
                             "a progress line on a terminal, the test accuracy after every epoch and, with\n"
                             "--json, one final JSON line.",
                  .opts = opts,
                  .nopts = (int)(sizeof opts / sizeof opts[0])};
    a.nc.listen = "127.0.0.1:0";
    a.nc.average_every = 20;
    a.nc.encoding = "f32";
    a.nc.throttle = 1.0f;
    a.nc.checkpoint_seconds = 10.0f;
    a.nc.join_timeout = 10.0f;
    a.nc.linger = 120.0f;
    int rc = mm_cli_parse(&cli, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    c->nesterov = !a.no_nesterov;
    c->partition = strcmp(a.partition, "label") == 0 ? MM_PART_LABEL : MM_PART_IID;
    if (a.shard && parse_shard(a.shard, &c->shard, &c->nshards) != 0) {
        fprintf(stderr, "murmur train: --shard '%s' must be I/N with 0 <= I < N\n", a.shard);
        return MM_EXIT_USAGE;
    }

    if (!a.solo) {
        if ((a.nc.cert_file || a.nc.revocations_file) && !a.nc.owner_pub) {
            fprintf(stderr, "murmur train: --cert and --revocations are for certs mode: give --owner-pub HEX too\n");
            return MM_EXIT_USAGE;
        }
        if (a.nc.owner_pub && !a.nc.cert_file) {
            fprintf(stderr, "murmur train: --owner-pub needs --cert FILE, this node's certificate (murmur cert issue)\n");
            return MM_EXIT_USAGE;
        }
        if (a.checkpoint || a.bench_batches) {
            fprintf(stderr, "murmur train: --checkpoint and --bench-batches are for --solo; a node uses --checkpoint-dir\n");
            return MM_EXIT_USAGE;
        }
        if (c->clip_norm < 0) c->clip_norm = 5.0f;
        a.nc.weight_samples = !a.weight_equal;
        a.nc.tc = *c;
        a.nc.json = a.json;
        a.nc.quiet = a.quiet;
        return mm_node_run(&a.nc);
    }
    if (c->clip_norm < 0) c->clip_norm = 0.0f;
    mm_trainer t;
    mm_error err = {0};
    if (mm_trainer_init(&t, c, &err) != 0) {
        fprintf(stderr, "murmur train: %s\n", err.msg);
        return 1;
    }
    if (a.bench_batches) {
        rc = run_bench(&t, &a);
        mm_trainer_free(&t);
        return rc;
    }
    char fp[2 * MM_FINGERPRINT_BYTES + 1];
    mm_layout_fingerprint_hex(&t.model->layout, fp);
    if (!a.quiet)
        printf("murmur: model %s (%zu parameters, fingerprint %.16s), %u training examples, %s lr %g, batch %d, "
               "%d thread(s)\n",
               t.cfg.model, t.model->layout.total, fp, t.loader.count, t.cfg.optimizer, (double)t.cfg.lr,
               t.cfg.batch, t.cfg.threads);
    fflush(stdout);
    const bool tty = !a.quiet && isatty(STDERR_FILENO);
    double train_s = 0, start = mm_now_s(), acc = 0, last_print = 0;
    int status = 0;
    for (int ep = 0; ep < c->epochs; ep++) {
        double e0 = mm_now_s();
        uint64_t s0 = t.samples;
        double loss_sum = 0;
        uint64_t loss_n = 0;
        while (mm_trainer_step(&t)) {
            if (tty && mm_now_s() - last_print > 0.25) {
                uint64_t n;
                double l = mm_trainer_take_loss(&t, &n);
                loss_sum += l * (double)n, loss_n += n;
                last_print = mm_now_s();
                fprintf(stderr, "\r  epoch %d/%d  step %llu  loss %.4f  %.0f samples/s   ", ep + 1, c->epochs,
                        (unsigned long long)t.step, l, (double)(t.samples - s0) / (last_print - e0));
            }
        }
        double dt = mm_now_s() - e0;
        train_s += dt;
        mm_error berr = {0};
        if (mm_trainer_backend_error(&t, &berr) != 0) {
            fprintf(stderr, "murmur train: %s\n", berr.msg);
            status = 1;
            break;
        }
        uint64_t n;
        double l = mm_trainer_take_loss(&t, &n);
        loss_sum += l * (double)n, loss_n += n;
        double test_loss = 0;
        acc = mm_trainer_evaluate(&t, &t.test, &test_loss);
        if (tty) fprintf(stderr, "\r%78s\r", "");
        if (!a.quiet)
            printf("epoch %d/%d: train loss %.4f, test loss %.4f, test accuracy %.2f %%, %.0f samples/s\n", ep + 1,
                   c->epochs, loss_n ? loss_sum / (double)loss_n : 0.0, test_loss, acc * 100, (double)(t.samples - s0) / dt);
        fflush(stdout);
        if (a.checkpoint && save_checkpoint(&t, a.checkpoint) != 0) {
            status = 1;
            break;
        }
    }
    double wall = mm_now_s() - start;
    if (a.json)
        printf("{\"event\":\"final\",\"model\":\"%s\",\"backend\":\"%s\",\"test_acc\":%.4f,\"epochs\":%d,"
               "\"samples\":%llu,\"steps\":%llu,\"wall_s\":%.2f,\"train_samples_per_s\":%.0f,\"peak_rss_kib\":%ld}\n",
               t.cfg.model, t.be.ops->name, acc, c->epochs, (unsigned long long)t.samples, (unsigned long long)t.step, wall,
               train_s > 0 ? (double)t.samples / train_s : 0.0, mm_peak_rss_kib());
    else if (!a.quiet)
        printf("final: test accuracy %.2f %% after %d epochs, %llu samples, %.1f s\n", acc * 100, c->epochs,
               (unsigned long long)t.samples, wall);
    mm_trainer_free(&t);
    return status;
}

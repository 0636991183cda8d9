/* murmur sim: run the scenarios of a file (docs/simulator.md). The JSON lines
 * go to stdout or --out DIR/results.jsonl and depend only on the scenario
 * and its seed; the progress line, the one place wall time appears, goes to
 * stderr. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "commands.h"
#include "scenario.h"
#include "sim.h"
#include "util.h"
#include "workload_train.h"

typedef struct {
    bool tty, quiet;
    double start, last;
} progress_state;

static void on_progress(void *ctx, const mm_scenario *s, double t, uint64_t events)
{
    progress_state *p = ctx;
    double now = mm_now_s();
    if (p->quiet || now - p->last < (p->tty ? 0.5 : 10.0)) return;
    p->last = now;
    double wall = now - p->start;
    fprintf(stderr, "%ssim: run %d '%s': t = %.1f / %.0f s virtual, %.1f s wall, %.0f events/s%s", p->tty ? "\r" : "",
            s->run, s->name, t, s->duration, wall, wall > 0 ? (double)events / wall : 0.0, p->tty ? "   " : "\n");
}

static int parse_seed(const char *v, uint64_t *seed)
{
    char *end;
    errno = 0;
    unsigned long long x = v && *v != '-' ? strtoull(v, &end, 10) : 0;
    if (!v || !*v || *v == '-' || errno || *end) {
        fprintf(stderr, "murmur sim: --seed: '%s' is not a non-negative integer\nTry 'murmur sim --help'.\n",
                v ? v : "");
        return MM_EXIT_USAGE;
    }
    *seed = x;
    return 0;
}

/* A fault campaign over the seeds first .. first + count - 1 of scenario s:
 * one verdict per failing seed on stderr with the command that replays it,
 * a one-line JSON summary on out. With one seed, that run's JSON lines too.
 * Returns 0 if every seed passed, 1 if not. */
static int run_campaign(const mm_scenario *base, const char *file, bool from_file, uint64_t first, uint64_t count,
                        FILE *out, bool quiet, FILE *trace)
{
    uint64_t failed = 0, first_failed = 0, merges = 0, violations = 0, events = 0;
    double var_max = 0, t0 = mm_now_s();
    for (uint64_t k = 0; k < count; k++) {
        mm_scenario s;
        mm_sim_campaign_draw(base, first + k, &s);
        mm_sim_opts o = {.out = count == 1 ? out : NULL, .trace = trace};
        mm_sim_result r;
        mm_error err = {0};
        char why[600];
        if (mm_sim_run(&s, &o, &r, &err) != 0) {
            snprintf(why, sizeof why, "%s", err.msg);
        } else {
            merges += r.merges;
            violations += r.violations;
            events += r.events;
            if (r.last.consensus_var > var_max) var_max = r.last.consensus_var;
            if (mm_sim_campaign_verdict(&s, &r, why, sizeof why)) {
                if (!quiet && count > 1 && (k + 1) % 100 == 0)
                    fprintf(stderr, "sim: campaign: %llu of %llu seeds, %llu failed, %.1f s\n",
                            (unsigned long long)(k + 1), (unsigned long long)count, (unsigned long long)failed,
                            mm_now_s() - t0);
                continue;
            }
        }
        if (!failed++) first_failed = s.seed;
        fprintf(stderr, "murmur sim: campaign: seed %llu FAILED: %s\n  replay: murmur sim %s%s --seed %llu\n",
                (unsigned long long)s.seed, why, file, from_file ? "" : " --campaign 1", (unsigned long long)s.seed);
    }
    fprintf(out,
            "{\"event\":\"campaign\",\"scenario\":\"%s\",\"first_seed\":%llu,\"seeds\":%llu,\"failed\":%llu,"
            "\"first_failed\":%llu,\"merges\":%llu,\"violations\":%llu,\"events\":%llu,\"var_max\":%.3e,"
            "\"wall_s\":%.1f}\n",
            base->name, (unsigned long long)first, (unsigned long long)count, (unsigned long long)failed,
            (unsigned long long)(failed ? first_failed : 0), (unsigned long long)merges,
            (unsigned long long)violations, (unsigned long long)events, var_max, mm_now_s() - t0);
    return failed ? 1 : 0;
}

int mm_cmd_sim(int argc, char **argv)
{
    const char *seed_s = NULL, *out_dir = NULL, *file = NULL, *campaign_s = NULL;
    bool trace = false, quiet = false, no_sig_cache = false;
    const mm_cli_opt opts[] = {
        {"seed", MM_OPT_STRING, &seed_s, "N", "replace every scenario's seed with N (to replay or vary a run)", 0, 0,
         NULL},
        {"out", MM_OPT_STRING, &out_dir, "DIR", "write DIR/results.jsonl instead of stdout (DIR is created)", 0, 0,
         NULL},
        {"campaign", MM_OPT_STRING, &campaign_s, "N",
         "fault campaign: run N seeds (from --seed, else the scenario's), each with faults drawn from it", 0, 0,
         NULL},
        {"trace", MM_OPT_FLAG, &trace, NULL, "print every core's log lines on stderr (slow)", 0, 0, NULL},
        {"quiet", MM_OPT_FLAG, &quiet, NULL, "no progress lines on stderr", 0, 0, NULL},
        {"no-sig-cache", MM_OPT_FLAG, &no_sig_cache, NULL,
         "every core checks every signature itself (the same results, slower)", 0, 0, NULL},
    };
    const mm_cli cli = {
        .command = "sim",
        .usage = "murmur sim SCENARIO.yaml [options]",
        .summary = "Run a simulated network: every node is the real gossip core, in virtual time over a\n"
                   "modeled network (latency, bandwidth, loss, partitions, churn). Writes JSON lines: a\n"
                   "start line, a report every report_every virtual seconds and a summary, per run.\n"
                   "The same scenario and seed give byte-identical output. See docs/simulator.md.",
        .opts = opts,
        .nopts = (int)(sizeof opts / sizeof opts[0]),
        .min_pos = 1,
        .max_pos = 1,
        .pos_name = "SCENARIO.yaml",
        .pos = &file,
    };
    int rc = mm_cli_parse(&cli, argc, argv);
    if (rc == 1) return 0;
    if (rc) return rc;
    uint64_t seed = 0;
    if (seed_s && parse_seed(seed_s, &seed) != 0) return MM_EXIT_USAGE;
    uint64_t campaign = 0;
    if (campaign_s && (parse_seed(campaign_s, &campaign) != 0 || campaign == 0)) {
        fprintf(stderr, "murmur sim: --campaign: give a number of seeds (1 or more)\n");
        return MM_EXIT_USAGE;
    }

    mm_scenario_list runs = {0};
    mm_error err = {0};
    if (mm_scenario_load(file, &runs, &err) != 0) {
        fprintf(stderr, "murmur sim: %s\n", err.msg);
        mm_scenario_list_free(&runs);
        return 1;
    }
    FILE *out = stdout;
    if (out_dir) {
        char path[4096];
        if (mkdir(out_dir, 0777) != 0 && errno != EEXIST) {
            fprintf(stderr, "murmur sim: cannot create %s: %s\n", out_dir, strerror(errno));
            mm_scenario_list_free(&runs);
            return 1;
        }
        snprintf(path, sizeof path, "%s/results.jsonl", out_dir);
        if (!(out = fopen(path, "w"))) {
            fprintf(stderr, "murmur sim: cannot write %s: %s\n", path, strerror(errno));
            mm_scenario_list_free(&runs);
            return 1;
        }
    }
    progress_state ps = {.tty = isatty(STDERR_FILENO) != 0, .quiet = quiet};
    mm_sim_opts o = {.out = out, .trace = trace ? stderr : NULL, .ctx = &ps, .progress = on_progress,
                     .no_sig_cache = no_sig_cache};
    rc = 0;
    mm_dataset train = {0}, test = {0};
    char data_dir[sizeof runs.v[0].data + 1] = "";
    for (size_t i = 0; i < runs.n && rc == 0; i++) {
        mm_scenario *s = &runs.v[i];
        if (seed_s && strcmp(s->sweep_key, "seed") != 0) s->seed = seed;
        if (campaign && s->workload != MM_SIM_WL_SURROGATE) {
            fprintf(stderr, "murmur sim: --campaign: run %zu '%s' trains a model; campaigns run the surrogate\n", i,
                    s->name);
            rc = MM_EXIT_USAGE;
            break;
        }
        if (campaign || s->campaign) { /* --seed S with a file's campaign: replay seed S alone */
            uint64_t count = campaign ? campaign : seed_s ? 1 : s->campaign;
            rc = run_campaign(s, file, !campaign, s->seed, count, out, quiet, trace ? stderr : NULL);
            fflush(out);
            continue;
        }
        ps.start = ps.last = mm_now_s();
        mm_sim_train *wl = NULL;
        o.workload = NULL;
        if (s->workload != MM_SIM_WL_SURROGATE) { /* trainers over the data, loaded once for every run */
            const char *dir = s->data[0] ? s->data : MM_DATA_DEFAULT_DIR;
            if (strcmp(dir, data_dir) != 0) {
                mm_dataset_free(&train);
                mm_dataset_free(&test);
                data_dir[0] = '\0';
                if (mm_dataset_load(&train, dir, "train", &err) != 0 || mm_dataset_load(&test, dir, "t10k", &err) != 0) {
                    fprintf(stderr, "murmur sim: run %zu '%s': %s\n", i, s->name, err.msg);
                    rc = 1;
                    break;
                }
                snprintf(data_dir, sizeof data_dir, "%s", dir);
            }
            if (mm_sim_train_new(s, &train, &test, &wl, &err) != 0) {
                fprintf(stderr, "murmur sim: run %zu '%s': %s\n", i, s->name, err.msg);
                rc = 1;
                break;
            }
            o.workload = mm_sim_train_workload(wl);
        }
        mm_sim_result r;
        int run_rc = mm_sim_run(s, &o, &r, &err);
        mm_sim_train_free(wl);
        if (run_rc != 0) {
            fprintf(stderr, "%smurmur sim: run %zu '%s': %s\n", ps.tty && !quiet ? "\n" : "", i, s->name, err.msg);
            rc = 1;
            break;
        }
        double wall = mm_now_s() - ps.start;
        if (!quiet)
            fprintf(stderr,
                    "%ssim: run %zu '%s' (seed %llu): %.0f virtual s in %.1f s wall, %llu events (%.0f events/s), "
                    "consensus variance %.3g, %u of %u nodes up\n",
                    ps.tty ? "\r" : "", i, s->name, (unsigned long long)s->seed, s->duration, wall,
                    (unsigned long long)r.events, wall > 0 ? (double)r.events / wall : 0.0, r.last.consensus_var,
                    r.last.alive, s->nodes);
        if (r.stuck || r.leaked)
            fprintf(stderr, "murmur sim: run %zu: %llu stuck timer(s), %ld allocation(s) of the cores not freed\n", i,
                    (unsigned long long)r.stuck, r.leaked);
        fflush(out);
    }
    mm_dataset_free(&train);
    mm_dataset_free(&test);
    if (out != stdout && fclose(out) != 0) {
        fprintf(stderr, "murmur sim: writing %s/results.jsonl failed\n", out_dir);
        rc = 1;
    }
    mm_scenario_list_free(&runs);
    return rc;
}

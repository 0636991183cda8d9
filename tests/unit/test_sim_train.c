/* The simulator's training workload (sim/workload_train.c, docs/simulator.md,
 * "Training workloads"): node/'s trainer on every virtual node, deterministic
 * to the byte, learning above chance; and the scenario checks around it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the headers above first. */
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data.h"
#include "scenario.h"
#include "sim.h"
#include "workload_train.h"

static mm_dataset train, test;
static bool have_data;

static int load_data(void **state)
{
    (void)state;
    mm_error err = {0};
    have_data = mm_dataset_load(&train, MM_DATA_DEFAULT_DIR, "train", &err) == 0 &&
                mm_dataset_load(&test, MM_DATA_DEFAULT_DIR, "t10k", &err) == 0;
    return 0;
}

static int free_data(void **state)
{
    (void)state;
    mm_dataset_free(&train);
    mm_dataset_free(&test);
    return 0;
}

/* 4 nodes on 1000-example shards of 4000, batch 32 (32 steps an epoch), 3
 * epochs, an exchange every 10 steps, a step 20 ms of virtual time. */
static const char tiny[] = "name: tiny-train\n"
                           "nodes: 4\n"
                           "workload: mlp\n"
                           "train_samples: 4000\n"
                           "eval_samples: 1000\n"
                           "batch: 32\n"
                           "epochs: 3\n"
                           "average_every: 10\n"
                           "step_ms: 20\n"
                           "eval_ms: 50\n"
                           "eval_every: 1\n"
                           "latency: 0.05\n"
                           "bandwidth: {up: 1000, down: 1000}\n"
                           "duration: 3\n";

/* Run text's one scenario; its JSON lines into *out (malloc'd). */
static void run(const char *text, char **out, size_t *len, mm_sim_result *res)
{
    mm_scenario_list l = {0};
    mm_error err = {0};
    assert_int_equal(mm_scenario_parse(text, strlen(text), "tiny.yaml", &l, &err), 0);
    assert_int_equal(l.n, 1);
    mm_sim_train *w = NULL;
    assert_int_equal(mm_sim_train_new(&l.v[0], &train, &test, &w, &err), 0);
    assert_int_equal(l.v[0].dim, 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10 + 6); /* mlp, tensors 16-byte aligned */
    FILE *f = open_memstream(out, len);
    assert_non_null(f);
    mm_sim_opts o = {.out = f, .workload = mm_sim_train_workload(w)};
    int rc = mm_sim_run(&l.v[0], &o, res, &err);
    if (rc) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(rc, 0);
    fclose(f);
    mm_sim_train_free(w);
    mm_scenario_list_free(&l);
}

static double field(const char *line, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    assert_non_null(p);
    return atof(p + strlen(pat));
}

static void test_train_deterministic_and_learns(void **state)
{
    (void)state;
    if (!have_data) skip();
    char *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;
    mm_sim_result ra, rb;
    run(tiny, &a, &la, &ra);
    run(tiny, &b, &lb, &rb);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la); /* byte-identical */
    assert_int_equal(ra.leaked, 0);
    assert_int_equal(ra.violations, 0);
    assert_int_equal(ra.last.nonfinite, 0);
    assert_true(ra.last.exchanges_ok >= 2 * 20); /* 3 x 32 / 10 exchanges started by each node, two ends each */
    /* Every node evaluated after each of its 3 epochs: node 0 at 32 x 20 ms + 50 ms = 0.69 s, 1.38 s,
     * 2.07 s; the newcomers a little later, after their state sync (node/ checks it every 100 ms). */
    int epochs = 0;
    double first = 0, last = 0;
    for (char *p = a; (p = strstr(p, "\"event\":\"epoch\"")) != NULL; p++) {
        char *eol = strchr(p, '\n');
        *eol = '\0';
        epochs++;
        if (field(p, "epoch") == 1) first += field(p, "acc") / 4;
        if (field(p, "epoch") == 3) {
            last += field(p, "acc") / 4;
            if (field(p, "node") == 0)
                assert_true(fabs(field(p, "t") - 2.07) < 1e-6);
            else
                assert_true(field(p, "t") > 2.07 && field(p, "t") <= 2.07 + 0.2 + 1e-6);
        }
        *eol = '\n';
    }
    assert_int_equal(epochs, 12);
    /* Chance is 10 %: the mean accuracy after 3 epochs is well above it, and above the first epoch's. */
    assert_true(last > 0.6);
    assert_true(last > first);
    /* The aggregate evaluations: one per virtual second, with the consensus distance. */
    int evals = 0;
    for (char *p = a; (p = strstr(p, "\"event\":\"eval\"")) != NULL; p++) evals++;
    assert_int_equal(evals, 3);
    /* Exchanges keep the replicas close: after training they differ by little. */
    assert_true(ra.last.consensus_var < 1e-4);
    free(a);
    free(b);
}

/* The last eval line's key (the honest nodes' accuracy). */
static double last_eval(char *out, const char *key)
{
    char *p = NULL;
    for (char *q = out; (q = strstr(q, "\"event\":\"eval\"")) != NULL; q++) p = q;
    assert_non_null(p);
    return field(p, key);
}

/* SECURITY.md P1 and P12 (docs/simulator.md, "Parameter poisoning"): 2 of
 * 12 nodes lend x0 - 1000 (x - x0) (their progress reversed, x1000) from the
 * start. With the cores' clipping the honest nodes end within 3 points of
 * the attack-free run; without it (the control) they end near chance. No
 * honest node breaks the merge invariants either way. */
static void test_p1_signflip(void **state)
{
    (void)state;
    if (!have_data) skip();
    static const char base[] = "nodes: 12\nworkload: mlp\ntrain_samples: 12000\neval_samples: 1000\nbatch: 32\n"
                               "epochs: 2\naverage_every: 2\nstep_ms: 20\neval_every: 3\nlatency: 1\n"
                               "bandwidth: {up: 1000, down: 1000}\nduration: 3\n";
    char text[1024];
    double acc[3], lo[3];
    for (int k = 0; k < 3; k++) {
        snprintf(text, sizeof text, "name: p1-%d\n%s%s%s", k, base,
                 k ? "attack: {kind: signflip, nodes: [4, 9]}\n" : "", k == 2 ? "clip: false\n" : "");
        char *out = NULL;
        size_t len = 0;
        mm_sim_result r;
        run(text, &out, &len, &r);
        acc[k] = last_eval(out, "acc_mean");
        lo[k] = last_eval(out, "acc_min");
        assert_int_equal((int)field(strstr(out, "\"event\":\"eval\""), "alive"), k ? 10 : 12); /* honest nodes only */
        if (r.violations) fail_msg("run %d: %s", k, r.violation);
        assert_int_equal(r.leaked, 0);
        free(out);
    }
    print_message("honest accuracy: no attack %.3f (min %.3f), clipped %.3f (%.3f), control %.3f (%.3f)\n", acc[0],
                  lo[0], acc[1], lo[1], acc[2], lo[2]);
    assert_true(acc[0] > 0.7);
    assert_true(acc[1] >= acc[0] - 0.03);
    assert_true(lo[1] >= lo[0] - 0.05);
    assert_true(acc[2] < 0.3);
}

static void test_train_scenario_checks(void **state)
{
    (void)state;
    const char *bad[] = {
        "workload: mlp\n",                                  /* no step_ms */
        "workload: mlp\nstep_ms: 10\ntopology: ring\n",      /* a fixed topology runs no core */
        "workload: resnet\nstep_ms: 10\n",                  /* unknown */
        "workload: mlp\nstep_ms: 10\npartition: dirichlet\n", /* unknown */
        "workload: mlp\nstep_ms: 10\nskew: 0\n",            /* out of range */
        "workload: mlp\nstep_ms: 10\nnodes: 1001\n",        /* too many trainers */
        "workload: mlp\nstep_ms: 10\ncampaign: 3\n",        /* campaigns run the surrogate */
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        mm_scenario_list l = {0};
        mm_error err = {0};
        assert_int_not_equal(mm_scenario_parse(bad[k], strlen(bad[k]), "bad.yaml", &l, &err), 0);
        mm_scenario_list_free(&l);
    }
    /* A training scenario without its trainers is refused, not run as the surrogate. */
    const char *ok = "workload: mlp\nstep_ms: 10\npartition: label\nskew: 0.8\nsweep: {key: average_every, values: [5, 50]}\n";
    mm_scenario_list l = {0};
    mm_error err = {0};
    assert_int_equal(mm_scenario_parse(ok, strlen(ok), "ok.yaml", &l, &err), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.v[1].average_every, 50);
    assert_int_equal(l.v[0].partition, 1);
    assert_true(l.v[0].skew == 0.8);
    assert_true(l.v[0].clip); /* node/'s default for a training workload */
    assert_true(l.v[0].join_sync);
    mm_sim_result r;
    assert_int_not_equal(mm_sim_run(&l.v[0], NULL, &r, &err), 0);
    assert_non_null(strstr(err.msg, "trainers"));
    mm_scenario_list_free(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train_scenario_checks),
        cmocka_unit_test(test_p1_signflip),
        cmocka_unit_test(test_train_deterministic_and_learns),
    };
    return cmocka_run_group_tests(tests, load_data, free_data);
}

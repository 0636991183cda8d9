/* The node's device code paths without a device: the CPU backend behind a device's interface
 * (`cpu-staged`: buffers not host-visible, the training set held by the backend and gathered by
 * gather_u8, merges through device buffers) must train, merge and evaluate exactly as the plain
 * CPU backend does. On a GPU the same paths run with the CUDA backend (docs/gpu.md). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mm_rng.h"
#include "trainer.h"

enum { TRAIN_N = 500, TEST_N = 200, PX = 28 * 28 };

static mm_dataset train_set, test_set;

/* Images with a learnable signal: class k brightens row band k. */
static void make_set(mm_dataset *ds, uint32_t n, uint64_t seed)
{
    mm_rng r;
    mm_rng_seed(&r, seed);
    ds->n = n;
    ds->rows = ds->cols = 28;
    ds->images = malloc((size_t)n * PX);
    ds->labels = malloc(n);
    assert_non_null(ds->images);
    assert_non_null(ds->labels);
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t k = (uint8_t)mm_rng_below(&r, 10);
        ds->labels[i] = k;
        for (uint32_t p = 0; p < PX; p++) {
            uint32_t v = (uint32_t)mm_rng_below(&r, 96);
            if (p / 28 / 3 == k) v += 150;
            ds->images[(size_t)i * PX + p] = (uint8_t)v;
        }
    }
}

static int setup(void **state)
{
    (void)state;
    make_set(&train_set, TRAIN_N, 1);
    make_set(&test_set, TEST_N, 2);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(train_set.images);
    free(train_set.labels);
    free(test_set.images);
    free(test_set.labels);
    return 0;
}

typedef struct {
    float *params;
    size_t total;
    double acc, loss, train_loss;
    uint64_t steps;
} outcome;

/* Two epochs of `model` on `device` (shard 1 of 2, partial last batch), a merge, an evaluation. */
static outcome run(const char *device, const char *model, int batch)
{
    mm_train_config c = {.model = model, .optimizer = "sgd", .epochs = 2, .batch = batch, .threads = 1,
                         .device = device, .seed = 11, .momentum = 0.9f, .nesterov = true, .weight_decay = -1.0f,
                         .warmup_epochs = -1.0f, .clip_norm = 1.0f, .shard = 1, .nshards = 2};
    mm_train_config_defaults(&c);
    mm_trainer t;
    mm_error err = {0};
    if (mm_trainer_init_data(&t, &c, &train_set, &test_set, &err) != MM_OK) fail_msg("%s: %s", device, err.msg);
    const bool staged = strcmp(device, "cpu-staged") == 0;
    assert_int_equal(t.be.ops->host_visible, !staged);
    if (staged) assert_non_null(t.d_images); /* the training set is held by the backend */
    else assert_null(t.d_images);
    outcome o = {0};
    while (t.epoch < 2) mm_trainer_step(&t);
    uint64_t count = 0;
    o.train_loss = mm_trainer_take_loss(&t, &count);
    assert_true(count > 0);
    o.steps = t.step;
    o.total = t.model->layout.total;
    /* A merge, as an exchange would: x += 0.3 (peer - snap), host vectors. */
    float *peer = malloc(o.total * sizeof *peer), *snap = malloc(o.total * sizeof *snap);
    o.params = malloc(o.total * sizeof *o.params);
    assert_non_null(peer);
    assert_non_null(snap);
    assert_non_null(o.params);
    t.be.ops->to_host(&t.be, snap, t.model->params, o.total * sizeof *snap);
    for (size_t i = 0; i < o.total; i++) peer[i] = snap[i] * 0.5f + (float)(i % 7) * 1e-3f;
    assert_int_equal(mm_trainer_merge(&t, peer, snap, 0.3f), 0);
    o.acc = mm_trainer_evaluate(&t, &test_set, &o.loss);
    t.be.ops->to_host(&t.be, o.params, t.model->params, o.total * sizeof *o.params);
    free(peer);
    free(snap);
    mm_trainer_free(&t);
    return o;
}

static void same(const char *model, int batch)
{
    outcome a = run("cpu", model, batch), b = run("cpu-staged", model, batch);
    assert_int_equal(a.total, b.total);
    assert_int_equal(a.steps, b.steps);
    assert_true(a.acc > 0.5); /* it learnt the bands */
    assert_memory_equal(a.params, b.params, a.total * sizeof *a.params);
    assert_true(a.acc == b.acc);
    assert_true(a.loss == b.loss);
    assert_true(a.train_loss == b.train_loss);
    print_message("%s batch %d: %llu steps, accuracy %.3f on both, parameters bit-identical\n", model, batch,
                  (unsigned long long)a.steps, a.acc);
    free(a.params);
    free(b.params);
}

static void test_mlp_staged(void **state)
{
    (void)state;
    same("mlp", 32); /* 250 examples: 7 full batches and one of 26 an epoch */
}

static void test_cnn_staged(void **state)
{
    (void)state;
    same("cnn", 64);
}

/* The merge of a trainer is x += w (peer - snap) on either backend, in place. */
static void test_merge_values(void **state)
{
    (void)state;
    mm_train_config c = {.model = "mlp", .optimizer = "sgd", .epochs = 1, .batch = 16, .threads = 1,
                         .device = "cpu-staged", .seed = 3, .weight_decay = -1.0f, .warmup_epochs = -1.0f};
    mm_train_config_defaults(&c);
    mm_trainer t;
    mm_error err = {0};
    assert_int_equal(mm_trainer_init_data(&t, &c, &train_set, &test_set, &err), MM_OK);
    const size_t n = t.model->layout.total;
    float *x0 = malloc(n * sizeof *x0), *x1 = malloc(n * sizeof *x1), *peer = malloc(n * sizeof *peer);
    float *snap = malloc(n * sizeof *snap);
    assert_non_null(x0);
    assert_non_null(x1);
    assert_non_null(peer);
    assert_non_null(snap);
    t.be.ops->to_host(&t.be, x0, t.model->params, n * sizeof *x0);
    for (size_t i = 0; i < n; i++) peer[i] = 1.0f, snap[i] = 0.5f;
    assert_int_equal(mm_trainer_merge(&t, peer, snap, 0.25f), 0);
    assert_int_equal(mm_trainer_merge(&t, peer, snap, 0.25f), 0); /* the device buffers are reused */
    t.be.ops->to_host(&t.be, x1, t.model->params, n * sizeof *x1);
    for (size_t i = 0; i < n; i++) assert_true(x1[i] == (x0[i] + 0.25f * 0.5f) + 0.25f * 0.5f);
    free(x0);
    free(x1);
    free(peer);
    free(snap);
    mm_trainer_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mlp_staged),
        cmocka_unit_test(test_cnn_staged),
        cmocka_unit_test(test_merge_values),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

/* Tests of tensor/model.c on the CPU backend: the layouts of the built-in
 * models, parameter initialisation, the forward pass and the gradients
 * (against finite differences of an independent double-precision forward
 * pass written here), and one SGD step. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "layout.h"
#include "model.h"
#include "mm_rng.h"
#include "optim.h"

static mm_backend be;

static int setup(void **state)
{
    (void)state;
    return mm_backend_cpu_init(&be, 1);
}

static int teardown(void **state)
{
    (void)state;
    mm_backend_free(&be);
    return 0;
}

static mm_model *create(const char *name, int batch)
{
    mm_model *m = NULL;
    mm_error err = {0};
    if (mm_model_create(&m, name, &be, batch, &err) != MM_OK) fail_msg("mm_model_create(%s): %s", name, err.msg);
    assert_non_null(m);
    return m;
}

/* Random inputs in [0, 1) and random labels for the first n examples. */
static void random_batch(mm_model *m, mm_rng *r, int n)
{
    for (size_t i = 0; i < (size_t)n * (size_t)m->in_size; i++) m->x[i] = (float)mm_rng_uniform(r);
    for (int i = 0; i < n; i++) m->y[i] = (int32_t)mm_rng_below(r, (uint64_t)m->classes);
}

/* ---- layouts ---- */

typedef struct {
    const char *name;
    uint32_t ndim, shape[4];
} tensor_spec;

static const tensor_spec mlp_tensors[] = {
    {"fc1.weight", 2, {784, 512}}, {"fc1.bias", 1, {512}}, {"fc2.weight", 2, {512, 256}},
    {"fc2.bias", 1, {256}},        {"fc3.weight", 2, {256, 10}}, {"fc3.bias", 1, {10}},
};
static const tensor_spec cnn_tensors[] = {
    {"conv1.weight", 4, {5, 5, 1, 32}}, {"conv1.bias", 1, {32}}, {"conv2.weight", 4, {5, 5, 32, 64}},
    {"conv2.bias", 1, {64}},            {"fc1.weight", 2, {3136, 128}}, {"fc1.bias", 1, {128}},
    {"fc2.weight", 2, {128, 10}},       {"fc2.bias", 1, {10}},
};

static void check_layout(const mm_layout *l, const char *model, const tensor_spec *want, uint32_t n, size_t real)
{
    assert_string_equal(l->model, model);
    assert_int_equal(l->n, n);
    size_t sum = 0, end = 0;
    for (uint32_t i = 0; i < n; i++) {
        const mm_tensor_info *t = &l->t[i];
        assert_string_equal(t->name, want[i].name);
        assert_int_equal(t->ndim, want[i].ndim);
        size_t count = 1;
        for (uint32_t d = 0; d < t->ndim; d++) {
            assert_int_equal(t->shape[d], want[i].shape[d]);
            count *= want[i].shape[d];
        }
        assert_int_equal(t->count, count);
        /* Each tensor starts on an aligned offset right after the previous one's padding. */
        assert_int_equal(t->offset % MM_LAYOUT_ALIGN, 0);
        assert_true(t->offset >= end);
        assert_true(t->offset - end < MM_LAYOUT_ALIGN);
        assert_int_equal(mm_layout_find(l, t->name), (int)i);
        end = t->offset + t->count;
        sum += count;
    }
    assert_int_equal(sum, real);
    assert_int_equal(l->total % MM_LAYOUT_ALIGN, 0);
    assert_true(l->total >= end && l->total - end < MM_LAYOUT_ALIGN);
    /* Each tensor occupies its count rounded up to a multiple of MM_LAYOUT_ALIGN. */
    size_t padded = 0;
    for (uint32_t i = 0; i < n; i++)
        padded += (l->t[i].count + MM_LAYOUT_ALIGN - 1) / MM_LAYOUT_ALIGN * MM_LAYOUT_ALIGN;
    assert_int_equal(padded, l->total);
    assert_int_equal(mm_layout_find(l, "nope"), -1);
}

static void test_layouts(void **state)
{
    (void)state;
    mm_layout a, b, c;
    mm_error err = {0};
    assert_int_equal(mm_model_layout(&a, "mlp", &err), MM_OK);
    check_layout(&a, "mlp", mlp_tensors, 6, 535818);
    assert_int_equal(mm_model_layout(&c, "cnn", &err), MM_OK);
    check_layout(&c, "cnn", cnn_tensors, 8,
                 5 * 5 * 1 * 32 + 32 + 5 * 5 * 32 * 64 + 64 + 3136 * 128 + 128 + 128 * 10 + 10);

    /* Fingerprints: stable across builds, different between models. */
    assert_int_equal(mm_model_layout(&b, "mlp", &err), MM_OK);
    assert_memory_equal(a.fingerprint, b.fingerprint, MM_FINGERPRINT_BYTES);
    assert_memory_not_equal(a.fingerprint, c.fingerprint, MM_FINGERPRINT_BYTES);
    char ha[2 * MM_FINGERPRINT_BYTES + 1], hb[2 * MM_FINGERPRINT_BYTES + 1];
    mm_layout_fingerprint_hex(&a, ha);
    mm_layout_fingerprint_hex(&b, hb);
    assert_int_equal(strlen(ha), 2 * MM_FINGERPRINT_BYTES);
    assert_string_equal(ha, hb);
    for (size_t i = 0; ha[i]; i++) assert_non_null(strchr("0123456789abcdef", ha[i]));

    /* A created model carries the same layout. */
    mm_model *m = create("cnn", 2);
    assert_memory_equal(m->layout.fingerprint, c.fingerprint, MM_FINGERPRINT_BYTES);
    assert_int_equal(m->layout.total, c.total);
    assert_int_equal(m->in_size, 784);
    assert_int_equal(m->classes, 10);
    mm_model_free(m);

    /* The wide MLP for GPU benchmarks: 784-4096-4096-4096-4096-10. */
    mm_layout wide;
    assert_int_equal(mm_model_layout(&wide, "mlp4k", &err), MM_OK);
    assert_int_equal(wide.n, 10);
    size_t wide_sum = 0;
    for (uint32_t i = 0; i < wide.n; i++) wide_sum += wide.t[i].count;
    assert_int_equal(wide_sum, 784 * 4096 + 4096 + 3 * (4096 * 4096 + 4096) + 4096 * 10 + 10);

    /* The list of names. */
    assert_string_equal(mm_model_names[0], "mlp");
    assert_string_equal(mm_model_names[1], "cnn");
    assert_string_equal(mm_model_names[2], "mlp4k");
    assert_null(mm_model_names[3]);

    assert_int_equal(mm_model_layout(&b, "resnet", &err), MM_ERR_INVALID);
    assert_non_null(strstr(err.msg, "resnet"));
}

static void test_create_errors(void **state)
{
    (void)state;
    static mm_model dummy;
    mm_model *m = &dummy; /* must be reset to NULL */
    mm_error err = {0};
    assert_int_equal(mm_model_create(&m, "transformer", &be, 4, &err), MM_ERR_INVALID);
    assert_null(m);
    assert_non_null(strstr(err.msg, "unknown model"));
    assert_non_null(strstr(err.msg, "transformer"));
    memset(&err, 0, sizeof err);
    assert_int_equal(mm_model_create(&m, "mlp", &be, 0, &err), MM_ERR_INVALID);
    assert_null(m);
    assert_non_null(strstr(err.msg, "batch"));
    memset(&err, 0, sizeof err);
    assert_int_equal(mm_model_create(&m, "cnn", &be, -3, &err), MM_ERR_INVALID);
    assert_non_null(strstr(err.msg, "batch"));
    assert_int_equal(mm_model_create(&m, "cnn", &be, 65537, &err), MM_ERR_INVALID);
    assert_null(m);
    assert_int_equal(mm_model_create(&m, "mlp", &be, 1, NULL), MM_OK); /* err may be NULL */
    mm_model_free(m);
    mm_model_free(NULL);
}

/* ---- initialisation ---- */

static void init_case(const char *name)
{
    mm_model *a = create(name, 1), *b = create(name, 1);
    const size_t total = a->layout.total, bytes = total * sizeof(float);
    mm_model_init_params(a, 42);
    mm_model_init_params(b, 42);
    assert_memory_equal(a->params, b->params, bytes);
    mm_model_init_params(b, 43);
    assert_memory_not_equal(a->params, b->params, bytes);

    /* Gaps between tensors stay zero. */
    size_t end = 0;
    for (uint32_t i = 0; i < a->layout.n; i++) {
        const mm_tensor_info *t = &a->layout.t[i];
        for (size_t j = end; j < t->offset; j++) assert_true(a->params[j] == 0.0f);
        end = t->offset + t->count;
    }
    for (size_t j = end; j < total; j++) assert_true(a->params[j] == 0.0f);

    int last = -1;
    for (int i = 0; i < a->nlayers; i++)
        if (a->layers[i].w >= 0) last = i;
    for (int i = 0; i < a->nlayers; i++) {
        const mm_layer *l = &a->layers[i];
        if (l->w < 0) continue;
        const mm_tensor_info *bt = &a->layout.t[l->b], *wt = &a->layout.t[l->w];
        for (size_t j = 0; j < bt->count; j++) assert_true(a->params[bt->offset + j] == 0.0f);
        const float *w = a->params + wt->offset;
        const double n = (double)wt->count, fan_in = n / l->out_c;
        double s = 0.0, s2 = 0.0, mx = 0.0;
        for (size_t j = 0; j < wt->count; j++) {
            s += (double)w[j];
            s2 += (double)w[j] * (double)w[j];
            if (fabs((double)w[j]) > mx) mx = fabs((double)w[j]);
        }
        const double mean = s / n, sd = sqrt(s2 / n - mean * mean);
        double want_sd;
        if (i == last) { /* Xavier-uniform on [-limit, limit] */
            double limit = sqrt(6.0 / (fan_in + l->out_c));
            assert_true(mx <= limit);
            assert_true(mx > 0.9 * limit);
            want_sd = limit / sqrt(3.0);
        } else { /* He-normal */
            want_sd = sqrt(2.0 / fan_in);
        }
        /* The sample sd has relative standard error ~ 1/sqrt(2n) (a little more for the uniform); 5 of those. */
        if (fabs(sd / want_sd - 1.0) > 5.0 / sqrt(2.0 * n))
            fail_msg("%s %s: sd %.5g, want %.5g (n %.0f)", name, wt->name, sd, want_sd, n);
        if (fabs(mean) > 5.0 * want_sd / sqrt(n)) fail_msg("%s %s: mean %.5g", name, wt->name, mean);
    }
    mm_model_free(a);
    mm_model_free(b);
}

static void test_init_params(void **state)
{
    (void)state;
    init_case("mlp");
    init_case("cnn");
}

/* ---- an independent forward pass in double ----
 *
 * Written from the architecture's description (model.h) and the layer
 * geometry in mm_model.layers, not from model.c's code: linear weights are
 * [in, out], conv weights HWIO, images NHWC, zero padding, 2x2 max-pool with
 * the first maximum winning. It records every ReLU's on/off state and every
 * pool's argmax, so a caller can tell whether a perturbation crossed a kink. */

typedef struct {
    const mm_model *m;
    int n;
    const float *x;
    double *base[MM_MODEL_MAX_LAYERS], *work[MM_MODEL_MAX_LAYERS]; /* layer outputs */
    uint8_t *mask_base[MM_MODEL_MAX_LAYERS], *mask_work[MM_MODEL_MAX_LAYERS];   /* ReLU: pre-activation > 0 */
    uint32_t *arg_base[MM_MODEL_MAX_LAYERS], *arg_work[MM_MODEL_MAX_LAYERS];    /* maxpool argmax */
    double *logits;                                                              /* = last layer's output */
} ref_net;

static void ref_init(ref_net *r, const mm_model *m, int n)
{
    memset(r, 0, sizeof *r);
    r->m = m;
    r->n = n;
    r->x = m->x;
    for (int i = 0; i < m->nlayers; i++) {
        size_t sz = (size_t)n * m->layers[i].out_size;
        r->base[i] = calloc(sz, sizeof(double));
        r->work[i] = calloc(sz, sizeof(double));
        r->mask_base[i] = calloc(sz, 1);
        r->mask_work[i] = calloc(sz, 1);
        r->arg_base[i] = calloc(sz, sizeof(uint32_t));
        r->arg_work[i] = calloc(sz, sizeof(uint32_t));
        assert_true(r->base[i] && r->work[i] && r->mask_base[i] && r->mask_work[i] && r->arg_base[i] && r->arg_work[i]);
    }
}

static void ref_free(ref_net *r)
{
    for (int i = 0; i < r->m->nlayers; i++) {
        free(r->base[i]);
        free(r->work[i]);
        free(r->mask_base[i]);
        free(r->mask_work[i]);
        free(r->arg_base[i]);
        free(r->arg_work[i]);
    }
}

static void ref_layer(const mm_model *m, const mm_layer *l, const double *p, const double *in, double *out,
                      uint8_t *mask, uint32_t *arg, int n)
{
    const double *W = l->w >= 0 ? p + m->layout.t[l->w].offset : NULL;
    const double *b = l->b >= 0 ? p + m->layout.t[l->b].offset : NULL;
    const int oc = l->out_c;
    switch (l->kind) {
    case MM_LAYER_LINEAR:
        for (int e = 0; e < n; e++) {
            double *o = out + (size_t)e * oc;
            const double *x = in + (size_t)e * l->in_c;
            for (int j = 0; j < oc; j++) o[j] = b[j];
            for (int i = 0; i < l->in_c; i++) {
                const double xv = x[i], *wr = W + (size_t)i * oc;
                if (xv != 0.0)
                    for (int j = 0; j < oc; j++) o[j] += xv * wr[j];
            }
        }
        break;
    case MM_LAYER_CONV:
        for (int e = 0; e < n; e++)
            for (int oy = 0; oy < l->out_h; oy++)
                for (int ox = 0; ox < l->out_w; ox++) {
                    double *o = out + (((size_t)e * l->out_h + oy) * l->out_w + ox) * oc;
                    for (int j = 0; j < oc; j++) o[j] = b[j];
                    for (int ky = 0; ky < l->k; ky++) {
                        const int iy = oy + ky - l->pad;
                        if (iy < 0 || iy >= l->in_h) continue;
                        for (int kx = 0; kx < l->k; kx++) {
                            const int ix = ox + kx - l->pad;
                            if (ix < 0 || ix >= l->in_w) continue;
                            const double *x = in + (((size_t)e * l->in_h + iy) * l->in_w + ix) * l->in_c;
                            for (int ci = 0; ci < l->in_c; ci++) {
                                const double xv = x[ci], *wr = W + (((size_t)ky * l->k + kx) * l->in_c + ci) * oc;
                                if (xv != 0.0)
                                    for (int j = 0; j < oc; j++) o[j] += xv * wr[j];
                            }
                        }
                    }
                }
        break;
    case MM_LAYER_MAXPOOL:
        for (int e = 0; e < n; e++)
            for (int oy = 0; oy < l->out_h; oy++)
                for (int ox = 0; ox < l->out_w; ox++)
                    for (int c = 0; c < oc; c++) {
                        size_t best = 0;
                        for (int d = 0; d < 4; d++) {
                            size_t idx = (((size_t)e * l->in_h + 2 * oy + d / 2) * l->in_w + 2 * ox + d % 2) * l->in_c +
                                         (size_t)c;
                            if (d == 0 || in[idx] > in[best]) best = idx;
                        }
                        size_t o = (((size_t)e * l->out_h + oy) * l->out_w + ox) * oc + (size_t)c;
                        out[o] = in[best];
                        arg[o] = (uint32_t)best;
                    }
        break;
    }
    if (l->relu)
        for (size_t i = 0; i < (size_t)n * l->out_size; i++) {
            mask[i] = out[i] > 0.0;
            if (!mask[i]) out[i] = 0.0;
        }
}

static double ref_loss(const ref_net *r, const double *z)
{
    const int C = r->m->classes;
    double loss = 0.0;
    for (int e = 0; e < r->n; e++) {
        const double *ze = z + (size_t)e * C;
        double mx = ze[0], s = 0.0;
        for (int c = 1; c < C; c++) mx = ze[c] > mx ? ze[c] : mx;
        for (int c = 0; c < C; c++) s += exp(ze[c] - mx);
        loss += log(s) + mx - ze[r->m->y[e]];
    }
    return loss / r->n;
}

/* The mean loss with parameters p, recomputing from layer `from` on (the
 * earlier layers' outputs are taken from the base pass). into_base: this is
 * the base pass, store it there. */
static double ref_eval(ref_net *r, const double *p, int from, bool into_base)
{
    const mm_model *m = r->m;
    double *in_first = NULL;
    double *xin = NULL;
    if (from == 0) {
        xin = malloc((size_t)r->n * m->in_size * sizeof *xin);
        assert_non_null(xin);
        for (size_t i = 0; i < (size_t)r->n * m->in_size; i++) xin[i] = (double)r->x[i];
        in_first = xin;
    } else {
        in_first = r->base[from - 1];
    }
    const double *in = in_first;
    for (int i = from; i < m->nlayers; i++) {
        double *out = into_base ? r->base[i] : r->work[i];
        ref_layer(m, &m->layers[i], p, in, out, into_base ? r->mask_base[i] : r->mask_work[i],
                  into_base ? r->arg_base[i] : r->arg_work[i], r->n);
        in = out;
    }
    free(xin);
    if (into_base) r->logits = r->base[m->nlayers - 1];
    return ref_loss(r, in);
}

/* Did the last work pass (from layer `from`) keep every ReLU state and pool argmax of the base pass? */
static bool ref_same_kinks(const ref_net *r, int from)
{
    for (int i = from; i < r->m->nlayers; i++) {
        const mm_layer *l = &r->m->layers[i];
        const size_t sz = (size_t)r->n * l->out_size;
        if (l->relu && memcmp(r->mask_base[i], r->mask_work[i], sz) != 0) return false;
        if (l->kind == MM_LAYER_MAXPOOL && memcmp(r->arg_base[i], r->arg_work[i], sz * sizeof(uint32_t)) != 0)
            return false;
    }
    return true;
}

/* The layer that owns layout tensor t. */
static int layer_of(const mm_model *m, int t)
{
    for (int i = 0; i < m->nlayers; i++)
        if (m->layers[i].w == t || m->layers[i].b == t) return i;
    fail_msg("tensor %d has no layer", t);
    return -1;
}

/* ---- the gradient check ----
 *
 * The analytic gradient is the engine's (float: mm_model_forward +
 * mm_model_backward, gradient of the mean loss). The numeric one is a
 * central difference of the mean loss computed by the double-precision
 * forward above, with the parameter perturbed in double. Doing the finite
 * difference in double rather than through the float engine removes the
 * dilemma of float finite differences (a small eps drowns in rounding noise,
 * a large one crosses ReLU kinks): with h = 1e-5 the rounding error of the
 * quotient is ~1e-10 and the truncation error negligible.
 *
 * Kinks: with every ReLU state and pool argmax fixed, the network is affine
 * in any single parameter, so if the states at p - h and p + h both equal
 * those at p, no kink lies in between (by induction over the layers) and the
 * loss is smooth on [p - h, p + h]. A parameter for which that fails is
 * skipped and another one drawn; the test asserts this is rare.
 *
 * What remains is the float engine's own error, and the rare pre-activation
 * so close to 0 (~1e-6) that float and double disagree on its sign, which
 * changes that unit's share of the gradient. Hence the tolerance:
 * |analytic - numeric| <= 1e-2 * max(|analytic|, |numeric|) + 1e-6 * scale
 * (scale = the largest |gradient| in the model), with at most one of the ~40
 * parameters allowed to miss (none does with the seeds used here). */
static void gradcheck_case(const char *name, uint64_t seed)
{
    enum { N = 3, WANT = 40 };
    mm_rng r;
    mm_rng_seed(&r, seed);
    mm_model *m = create(name, N + 1); /* a partial batch: n < max_batch */
    mm_model_init_params(m, seed);
    /* Non-zero biases, so the test also sees them used in the forward pass. */
    for (uint32_t t = 0; t < m->layout.n; t++)
        if (m->layout.t[t].ndim == 1)
            for (size_t j = 0; j < m->layout.t[t].count; j++)
                m->params[m->layout.t[t].offset + j] = (float)(0.1 * (mm_rng_uniform(&r) - 0.5));
    random_batch(m, &r, N);

    const size_t total = m->layout.total;
    be.ops->fill(&be, m->grads, total, 0.0f);
    const float *logits = mm_model_forward(m, N);
    m->stats[0] = m->stats[1] = 0.0f;
    mm_model_backward(m, N);

    double *p = malloc(total * sizeof *p);
    assert_non_null(p);
    for (size_t i = 0; i < total; i++) p[i] = (double)m->params[i];
    ref_net rn;
    ref_init(&rn, m, N);
    const double loss = ref_eval(&rn, p, 0, true);

    /* The forward pass and the loss agree with the double reference. */
    for (int i = 0; i < N * m->classes; i++) {
        double want = rn.logits[i];
        if (!(fabs((double)logits[i] - want) <= 1e-4 * (1.0 + fabs(want))))
            fail_msg("%s logit %d: %.7g, want %.7g", name, i, (double)logits[i], want);
    }
    if (!(fabs((double)m->stats[0] / N - loss) <= 1e-5 * loss))
        fail_msg("%s: mean loss %.7g, want %.7g", name, (double)m->stats[0] / N, loss);
    /* Gradients in the padding between tensors are zero. */
    size_t end = 0;
    double scale = 0.0;
    for (uint32_t t = 0; t < m->layout.n; t++) {
        const mm_tensor_info *ti = &m->layout.t[t];
        for (size_t j = end; j < ti->offset; j++) assert_true(m->grads[j] == 0.0f);
        end = ti->offset + ti->count;
        for (size_t j = 0; j < ti->count; j++)
            if (fabs((double)m->grads[ti->offset + j]) > scale) scale = fabs((double)m->grads[ti->offset + j]);
    }
    assert_true(scale > 0.0);

    const int per = (WANT + (int)m->layout.n - 1) / (int)m->layout.n;
    int checked = 0, kinks = 0, misses = 0;
    double worst = 0.0;
    for (uint32_t t = 0; t < m->layout.n; t++) {
        const mm_tensor_info *ti = &m->layout.t[t];
        const int from = layer_of(m, (int)t);
        for (int s = 0; s < per; s++) {
            /* Prefer a parameter with a non-zero gradient (not one of a dead unit). */
            size_t idx = 0;
            for (int tries = 0; tries < 30; tries++) {
                idx = ti->offset + (size_t)mm_rng_below(&r, ti->count);
                if (m->grads[idx] != 0.0f) break;
            }
            const double h = 1e-5, p0 = p[idx];
            p[idx] = p0 + h;
            const double lp = ref_eval(&rn, p, from, false);
            bool smooth = ref_same_kinks(&rn, from);
            p[idx] = p0 - h;
            const double lm = ref_eval(&rn, p, from, false);
            smooth = smooth && ref_same_kinks(&rn, from);
            p[idx] = p0;
            if (!smooth) {
                kinks++;
                s--; /* draw another */
                assert_true(kinks <= 10);
                continue;
            }
            const double num = (lp - lm) / (2.0 * h), ana = (double)m->grads[idx];
            const double diff = fabs(ana - num), mag = fmax(fabs(ana), fabs(num));
            const double tol = 1e-2 * mag + 1e-6 * scale;
            if (diff > tol) {
                misses++;
                print_message("%s %s[%zu]: analytic %.7g, numeric %.7g\n", name, ti->name, idx - ti->offset, ana,
                              num);
            }
            if (mag > 1e-3 * scale && diff / mag > worst) worst = diff / mag;
            checked++;
        }
    }
    print_message("%s: %d parameters checked, %d redrawn at kinks, %d missed, worst relative error %.2g\n", name,
                  checked, kinks, misses, worst);
    assert_true(checked >= WANT);
    assert_true(misses <= 1);
    ref_free(&rn);
    free(p);
    mm_model_free(m);
}

static void test_gradcheck_mlp(void **state)
{
    (void)state;
    gradcheck_case("mlp", 11);
}

static void test_gradcheck_cnn(void **state)
{
    (void)state;
    gradcheck_case("cnn", 12);
}

/* ---- batches ----
 *
 * The gradient of the mean loss over a batch is the mean of the per-example
 * gradients. A batch of 13 takes the cnn's chunked input-gradient path
 * (conv2's chunk is 10 images) which single examples do not. */
static void batch_case(const char *name)
{
    enum { N = 13 };
    mm_rng r;
    mm_rng_seed(&r, 21);
    mm_model *m = create(name, N);
    mm_model_init_params(m, 5);
    random_batch(m, &r, N);
    const size_t total = m->layout.total, in = (size_t)m->in_size;
    mm_model_forward(m, N);
    m->stats[0] = m->stats[1] = 0.0f;
    mm_model_backward(m, N);
    float *g = malloc(total * sizeof *g), *x = malloc(N * in * sizeof *x);
    double *sum = calloc(total, sizeof *sum), *mag = calloc(total, sizeof *mag);
    int32_t y[N];
    assert_true(g && x && sum && mag);
    memcpy(g, m->grads, total * sizeof *g);
    memcpy(x, m->x, N * in * sizeof *x);
    memcpy(y, m->y, sizeof y);
    const double batch_loss = (double)m->stats[0], batch_correct = (double)m->stats[1];

    /* Evaluation gives the same loss and count. */
    m->stats[0] = m->stats[1] = 0.0f;
    mm_model_eval_batch(m, N);
    assert_true(fabs((double)m->stats[0] - batch_loss) <= 1e-6 * batch_loss);
    assert_true((double)m->stats[1] == batch_correct);

    double loss = 0.0;
    for (int e = 0; e < N; e++) {
        memcpy(m->x, x + (size_t)e * in, in * sizeof *x);
        m->y[0] = y[e];
        mm_model_forward(m, 1);
        m->stats[0] = 0.0f;
        mm_model_backward(m, 1);
        loss += (double)m->stats[0];
        for (size_t i = 0; i < total; i++) {
            sum[i] += (double)m->grads[i];
            mag[i] += fabs((double)m->grads[i]);
        }
    }
    assert_true(fabs(loss - batch_loss) <= 1e-5 * batch_loss);
    /* Float rounding in the two computations differs (different GEMM shapes,
     * and cancellation inside the back-propagated deltas), so the tolerance is
     * relative to the per-example magnitudes plus a small fraction of the
     * tensor's largest gradient. */
    double worst = 0.0;
    for (uint32_t t = 0; t < m->layout.n; t++) {
        const mm_tensor_info *ti = &m->layout.t[t];
        double tmax = 0.0;
        for (size_t j = 0; j < ti->count; j++) tmax = fmax(tmax, fabs(sum[ti->offset + j]) / N);
        for (size_t j = 0; j < ti->count; j++) {
            const size_t i = ti->offset + j;
            const double want = sum[i] / N, d = fabs((double)g[i] - want);
            if (!(d <= 1e-4 * mag[i] / N + 1e-5 * tmax))
                fail_msg("%s %s[%zu]: batch %.7g, mean of examples %.7g (tensor max %.3g)", name, ti->name, j,
                         (double)g[i], want, tmax);
            if (tmax > 0.0) worst = fmax(worst, d / tmax);
        }
    }
    print_message("%s: batch gradient vs mean of per-example gradients: worst |diff| / tensor max %.2g\n", name, worst);
    free(g);
    free(x);
    free(sum);
    free(mag);
    mm_model_free(m);
}

static void test_batch_mean(void **state)
{
    (void)state;
    batch_case("mlp");
    batch_case("cnn");
}

/* ---- one SGD step ----
 *
 * Plain SGD with a small lr lowers the loss on the same batch, by about
 * lr |g|^2 (first order; we allow 0.5x .. 1.5x of that). */
static void sgd_case(const char *name)
{
    enum { N = 8 };
    mm_rng r;
    mm_rng_seed(&r, 31);
    mm_model *m = create(name, N);
    mm_model_init_params(m, 9);
    random_batch(m, &r, N);
    mm_model_forward(m, N);
    m->stats[0] = m->stats[1] = 0.0f;
    mm_model_backward(m, N);
    const double l0 = (double)m->stats[0] / N;
    double g2 = 0.0;
    for (size_t i = 0; i < m->layout.total; i++) g2 += (double)m->grads[i] * (double)m->grads[i];
    assert_true(g2 > 0.0);

    mm_opt_config cfg = mm_opt_defaults();
    cfg.kind = MM_OPT_SGD;
    cfg.momentum = 0.0f;
    cfg.nesterov = false;
    cfg.weight_decay = 0.0f;
    cfg.lr = (float)(0.02 * l0 / g2); /* a first-order drop of 2% of the loss: small enough to be first order */
    mm_optimizer o;
    mm_error err;
    assert_int_equal(mm_optimizer_init(&o, &cfg, &be, m->layout.total, &err), MM_OK);
    mm_optimizer_step(&o, m->params, m->grads);
    m->stats[0] = m->stats[1] = 0.0f;
    mm_model_eval_batch(m, N);
    const double l1 = (double)m->stats[0] / N, drop = l0 - l1, expect = (double)cfg.lr * g2;
    print_message("%s: loss %.6f -> %.6f (first-order drop %.6f)\n", name, l0, l1, expect);
    assert_true(l1 < l0);
    assert_true(drop > 0.5 * expect && drop < 1.5 * expect);
    /* The padding of the parameters is still zero. */
    size_t end = 0;
    for (uint32_t t = 0; t < m->layout.n; t++) {
        for (size_t j = end; j < m->layout.t[t].offset; j++) assert_true(m->params[j] == 0.0f);
        end = m->layout.t[t].offset + m->layout.t[t].count;
    }
    mm_optimizer_free(&o);
    mm_model_free(m);
}

static void test_sgd_lowers_loss(void **state)
{
    (void)state;
    sgd_case("mlp");
    sgd_case("cnn");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layouts),
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_init_params),
        cmocka_unit_test(test_gradcheck_mlp),
        cmocka_unit_test(test_gradcheck_cnn),
        cmocka_unit_test(test_batch_mean),
        cmocka_unit_test(test_sgd_lowers_loss),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

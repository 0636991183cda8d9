#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm_rng.h"

const char *const mm_model_names[] = {"mlp", "cnn", "mlp4k", NULL};

/* The architecture as a list of layer specs; geometry is derived from these. */
typedef struct {
    mm_layer_kind kind;
    const char *name; /* tensor name prefix */
    int out_c, k, pad;
    bool relu;
} layer_spec;

typedef struct {
    const char *name;
    int h, w, c; /* input example */
    int classes;
    int n;
    layer_spec layers[MM_MODEL_MAX_LAYERS];
} model_spec;

static const model_spec specs[] = {
    {"mlp", 1, 1, 784, 10, 3,
     {{MM_LAYER_LINEAR, "fc1", 512, 0, 0, true},
      {MM_LAYER_LINEAR, "fc2", 256, 0, 0, true},
      {MM_LAYER_LINEAR, "fc3", 10, 0, 0, false}}},
    {"cnn", 28, 28, 1, 10, 6,
     {{MM_LAYER_CONV, "conv1", 32, 5, 2, true},
      {MM_LAYER_MAXPOOL, NULL, 0, 0, 0, false},
      {MM_LAYER_CONV, "conv2", 64, 5, 2, true},
      {MM_LAYER_MAXPOOL, NULL, 0, 0, 0, false},
      {MM_LAYER_LINEAR, "fc1", 128, 0, 0, true},
      {MM_LAYER_LINEAR, "fc2", 10, 0, 0, false}}},
    /* 53.6 M parameters: large enough that a GPU, not the host, is the bottleneck (docs/gpu.md). */
    {"mlp4k", 1, 1, 784, 10, 5,
     {{MM_LAYER_LINEAR, "fc1", 4096, 0, 0, true},
      {MM_LAYER_LINEAR, "fc2", 4096, 0, 0, true},
      {MM_LAYER_LINEAR, "fc3", 4096, 0, 0, true},
      {MM_LAYER_LINEAR, "fc4", 4096, 0, 0, true},
      {MM_LAYER_LINEAR, "fc5", 10, 0, 0, false}}},
};

static const model_spec *find_spec(const char *name)
{
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++)
        if (strcmp(specs[i].name, name) == 0) return &specs[i];
    return NULL;
}

/* Derive every layer's geometry and add its tensors to the layout. */
static int build(const model_spec *s, mm_layout *layout, mm_layer *layers, mm_error *err)
{
    mm_layout_init(layout, s->name);
    int h = s->h, w = s->w, c = s->c;
    for (int i = 0; i < s->n; i++) {
        const layer_spec *ls = &s->layers[i];
        mm_layer *l = &layers[i];
        memset(l, 0, sizeof *l);
        l->kind = ls->kind;
        l->relu = ls->relu;
        l->in_h = h, l->in_w = w, l->in_c = c;
        l->w = l->b = -1;
        char name[MM_LAYOUT_NAME];
        switch (ls->kind) {
        case MM_LAYER_LINEAR: {
            uint32_t ws[2] = {(uint32_t)(h * w * c), (uint32_t)ls->out_c}, bs[1] = {(uint32_t)ls->out_c};
            snprintf(name, sizeof name, "%s.weight", ls->name);
            l->w = mm_layout_add(layout, name, 2, ws);
            snprintf(name, sizeof name, "%s.bias", ls->name);
            l->b = mm_layout_add(layout, name, 1, bs);
            l->in_h = l->in_w = 1, l->in_c = h * w * c;
            h = w = 1, c = ls->out_c;
            break;
        }
        case MM_LAYER_CONV: {
            uint32_t ws[4] = {(uint32_t)ls->k, (uint32_t)ls->k, (uint32_t)c, (uint32_t)ls->out_c};
            uint32_t bs[1] = {(uint32_t)ls->out_c};
            snprintf(name, sizeof name, "%s.weight", ls->name);
            l->w = mm_layout_add(layout, name, 4, ws);
            snprintf(name, sizeof name, "%s.bias", ls->name);
            l->b = mm_layout_add(layout, name, 1, bs);
            l->k = ls->k, l->pad = ls->pad;
            h = h + 2 * ls->pad - ls->k + 1, w = w + 2 * ls->pad - ls->k + 1, c = ls->out_c;
            break;
        }
        case MM_LAYER_MAXPOOL:
            h /= 2, w /= 2;
            break;
        }
        if (l->w < 0 && ls->kind != MM_LAYER_MAXPOOL)
            return mm_error_set(err, MM_ERR_INVALID, "model %s: layout table full", s->name);
        l->out_h = h, l->out_w = w, l->out_c = c;
        l->in_size = (size_t)l->in_h * l->in_w * l->in_c;
        l->out_size = (size_t)h * w * c;
    }
    mm_layout_finish(layout);
    return MM_OK;
}

int mm_model_layout(mm_layout *layout, const char *name, mm_error *err)
{
    const model_spec *s = find_spec(name);
    if (!s) return mm_error_set(err, MM_ERR_INVALID, "unknown model '%s' (known: mlp, cnn)", name);
    mm_layer scratch[MM_MODEL_MAX_LAYERS];
    return build(s, layout, scratch, err);
}

static mm_conv_geom conv_geom(const mm_layer *l, int n)
{
    return (mm_conv_geom){.n = n, .h = l->in_h, .w = l->in_w, .c = l->in_c, .k = l->k, .pad = l->pad,
                          .oh = l->out_h, .ow = l->out_w};
}

/* Images per chunk of the conv input-gradient pass: about 2048 rows of dcols,
 * so the scratch stays in cache and small whatever the batch. */
static int dcols_chunk(const mm_layer *l) { return l->out_h * l->out_w >= 2048 ? 1 : 2048 / (l->out_h * l->out_w); }

void mm_model_free(mm_model *m)
{
    if (!m) return;
    mm_backend *be = m->be;
    for (int i = 0; i < m->nlayers; i++) {
        mm_layer *l = &m->layers[i];
        be->ops->release(be, l->out);
        be->ops->release(be, l->dout);
        be->ops->release(be, l->cols);
        be->ops->release(be, l->arg);
    }
    be->ops->release(be, m->params);
    be->ops->release(be, m->grads);
    be->ops->release(be, m->x);
    be->ops->release(be, m->y);
    be->ops->release(be, m->dcols);
    be->ops->release(be, m->conv_scratch);
    be->ops->release(be, m->stats);
    free(m);
}

int mm_model_create(mm_model **out, const char *name, mm_backend *be, int max_batch, mm_error *err)
{
    *out = NULL;
    const model_spec *s = find_spec(name);
    if (!s) return mm_error_set(err, MM_ERR_INVALID, "unknown model '%s' (known: mlp, cnn)", name);
    if (max_batch < 1 || max_batch > 65536)
        return mm_error_set(err, MM_ERR_INVALID, "batch size %d out of range 1..65536", max_batch);
    mm_model *m = calloc(1, sizeof *m);
    if (!m) return mm_error_set(err, MM_ERR_NOMEM, "out of memory");
    snprintf(m->name, sizeof m->name, "%s", name);
    m->be = be;
    m->max_batch = max_batch;
    m->in_size = s->h * s->w * s->c;
    m->classes = s->classes;
    int rc = build(s, &m->layout, m->layers, err);
    if (rc) {
        free(m);
        return rc;
    }
    m->nlayers = s->n;
    const size_t B = (size_t)max_batch;
    bool ok = true;
#define ALLOC(ptr, bytes) ok = ok && ((ptr) = be->ops->alloc(be, (bytes))) != NULL
    ALLOC(m->params, m->layout.total * sizeof(float));
    ALLOC(m->grads, m->layout.total * sizeof(float));
    ALLOC(m->x, B * (size_t)m->in_size * sizeof(float));
    ALLOC(m->y, B * sizeof(int32_t));
    ALLOC(m->stats, 2 * sizeof(float));
    size_t dcols = 0, scratch = 0;
    for (int i = 0; i < m->nlayers; i++) {
        mm_layer *l = &m->layers[i];
        ALLOC(l->out, B * l->out_size * sizeof(float));
        ALLOC(l->dout, B * l->out_size * sizeof(float));
        if (l->kind == MM_LAYER_CONV && be->ops->conv_fwd) {
            mm_conv_geom g = conv_geom(l, max_batch);
            size_t need = be->ops->conv_scratch(be, &g, l->out_c);
            if (need > scratch) scratch = need;
        } else if (l->kind == MM_LAYER_CONV) {
            size_t K = (size_t)l->k * l->k * l->in_c, rows = (size_t)l->out_h * l->out_w;
            ALLOC(l->cols, B * rows * K * sizeof(float));
            if (i > 0 && (size_t)dcols_chunk(l) * rows * K > dcols) dcols = (size_t)dcols_chunk(l) * rows * K;
        }
        if (l->kind == MM_LAYER_MAXPOOL) ALLOC(l->arg, B * l->out_size * sizeof(uint32_t));
    }
    if (dcols) ALLOC(m->dcols, dcols * sizeof(float));
    if (scratch) ALLOC(m->conv_scratch, scratch * sizeof(float));
#undef ALLOC
    if (!ok) {
        mm_model_free(m);
        return mm_error_set(err, MM_ERR_NOMEM, "out of memory allocating model %s for batch %d", name, max_batch);
    }
    *out = m;
    return MM_OK;
}

void mm_model_init_params(mm_model *m, uint64_t seed)
{
    float *host = calloc(m->layout.total, sizeof *host);
    if (!host) return;
    mm_rng rng;
    mm_rng_seed(&rng, seed);
    for (int i = 0; i < m->nlayers; i++) {
        const mm_layer *l = &m->layers[i];
        if (l->w < 0) continue;
        const mm_tensor_info *t = &m->layout.t[l->w];
        double fan_in = (double)t->count / l->out_c;
        float *w = host + t->offset;
        if (i == m->nlayers - 1) { /* Xavier-uniform: no ReLU follows the last layer */
            double limit = sqrt(6.0 / (fan_in + l->out_c));
            for (size_t j = 0; j < t->count; j++) w[j] = (float)((2.0 * mm_rng_uniform(&rng) - 1.0) * limit);
        } else { /* He-normal */
            double std = sqrt(2.0 / fan_in);
            for (size_t j = 0; j < t->count; j++) w[j] = (float)(mm_rng_normal(&rng) * std);
        }
    }
    m->be->ops->to_device(m->be, m->params, host, m->layout.total * sizeof *host);
    free(host);
}

const float *mm_model_forward(mm_model *m, int n)
{
    mm_backend *be = m->be;
    const float *in = m->x;
    for (int i = 0; i < m->nlayers; i++) {
        mm_layer *l = &m->layers[i];
        const float *W = l->w >= 0 ? m->params + m->layout.t[l->w].offset : NULL;
        const float *b = l->b >= 0 ? m->params + m->layout.t[l->b].offset : NULL;
        switch (l->kind) {
        case MM_LAYER_LINEAR:
            if (be->ops->linear_fwd) {
                be->ops->linear_fwd(be, l->out, in, W, b, n, l->in_c, l->out_c, l->relu);
                break;
            }
            be->ops->gemm(be, false, false, n, l->out_c, l->in_c, 1.0f, in, l->in_c, W, l->out_c, 0.0f, l->out,
                          l->out_c);
            be->ops->bias_act(be, l->out, b, n, l->out_c, l->relu);
            break;
        case MM_LAYER_CONV: {
            mm_conv_geom g = conv_geom(l, n);
            if (be->ops->conv_fwd) {
                be->ops->conv_fwd(be, l->out, in, W, b, l->relu, &g, l->out_c, m->conv_scratch);
                break;
            }
            int rows = n * l->out_h * l->out_w, K = l->k * l->k * l->in_c;
            be->ops->im2col(be, l->cols, in, &g);
            be->ops->gemm(be, false, false, rows, l->out_c, K, 1.0f, l->cols, K, W, l->out_c, 0.0f, l->out,
                          l->out_c);
            be->ops->bias_act(be, l->out, b, rows, l->out_c, l->relu);
            break;
        }
        case MM_LAYER_MAXPOOL:
            be->ops->maxpool_fwd(be, l->out, l->arg, in, n, l->in_h, l->in_w, l->in_c);
            break;
        }
        in = l->out;
    }
    return in;
}

void mm_model_backward(mm_model *m, int n)
{
    mm_backend *be = m->be;
    mm_layer *last = &m->layers[m->nlayers - 1];
    be->ops->softmax_xent(be, last->dout, m->stats, last->out, m->y, n, m->classes);
    for (int i = m->nlayers - 1; i >= 0; i--) {
        mm_layer *l = &m->layers[i];
        const float *in = i > 0 ? m->layers[i - 1].out : m->x;
        float *din = i > 0 ? m->layers[i - 1].dout : NULL; /* no input gradient for the first layer */
        /* A ReLU that a maxpool follows is applied to the pooled gradient instead (see the maxpool case). */
        const bool pooled = i + 1 < m->nlayers && m->layers[i + 1].kind == MM_LAYER_MAXPOOL;
        /* A fused linear layer above applied it already, as it computed this gradient (linear_bwd's mask). */
        const bool masked = i + 1 < m->nlayers && m->layers[i + 1].kind == MM_LAYER_LINEAR && be->ops->linear_bwd;
        if (l->relu && !pooled && !masked) be->ops->relu_bwd(be, l->dout, l->out, (size_t)n * l->out_size);
        const float *W = l->w >= 0 ? m->params + m->layout.t[l->w].offset : NULL;
        float *dW = l->w >= 0 ? m->grads + m->layout.t[l->w].offset : NULL;
        float *db = l->b >= 0 ? m->grads + m->layout.t[l->b].offset : NULL;
        switch (l->kind) {
        case MM_LAYER_LINEAR:
            if (be->ops->linear_bwd) {
                be->ops->linear_bwd(be, dW, db, din, l->dout, in, W, n, l->in_c, l->out_c,
                                    i > 0 && m->layers[i - 1].relu);
                break;
            }
            /* dW[in,out] = in^T dout; db = column sums; din[n,in] = dout W^T */
            be->ops->gemm(be, true, false, l->in_c, l->out_c, n, 1.0f, in, l->in_c, l->dout, l->out_c, 0.0f, dW,
                          l->out_c);
            be->ops->col_sum(be, db, l->dout, n, l->out_c);
            if (din)
                be->ops->gemm(be, false, true, n, l->in_c, l->out_c, 1.0f, l->dout, l->out_c, W, l->out_c, 0.0f, din,
                              l->in_c);
            break;
        case MM_LAYER_CONV: {
            if (be->ops->conv_bwd) {
                mm_conv_geom g = conv_geom(l, n);
                be->ops->conv_bwd(be, dW, db, din, l->dout, in, W, &g, l->out_c, m->conv_scratch);
                break;
            }
            const int per = l->out_h * l->out_w, rows = n * per, K = l->k * l->k * l->in_c;
            be->ops->gemm(be, true, false, K, l->out_c, rows, 1.0f, l->cols, K, l->dout, l->out_c, 0.0f, dW,
                          l->out_c);
            be->ops->col_sum(be, db, l->dout, rows, l->out_c);
            if (!din) break;
            /* Input gradient in chunks of images: dcols = dout W^T, then scatter-add. */
            const int chunk = dcols_chunk(l);
            for (int s = 0; s < n; s += chunk) {
                const int cn = n - s < chunk ? n - s : chunk;
                mm_conv_geom g = conv_geom(l, cn);
                be->ops->gemm(be, false, true, cn * per, K, l->out_c, 1.0f, l->dout + (size_t)s * per * l->out_c,
                              l->out_c, W, l->out_c, 0.0f, m->dcols, K);
                be->ops->col2im(be, din + (size_t)s * l->in_size, m->dcols, &g);
            }
            break;
        }
        case MM_LAYER_MAXPOOL:
            /* The previous layer's ReLU backward, on 4 times fewer elements: the pool routes each gradient to
             * its window's argmax, whose ReLU output is the pooled value itself, and zeros the rest, so masking
             * by (pooled > 0) before routing gives what masking by (ReLU output > 0) after would, to the bit. */
            if (i > 0 && m->layers[i - 1].relu) be->ops->relu_bwd(be, l->dout, l->out, (size_t)n * l->out_size);
            be->ops->maxpool_bwd(be, din, l->dout, l->arg, (size_t)n * l->out_size, (size_t)n * l->in_size);
            break;
        }
    }
}

void mm_model_eval_batch(mm_model *m, int n)
{
    const float *logits = mm_model_forward(m, n);
    m->be->ops->softmax_xent(m->be, NULL, m->stats, logits, m->y, n, m->classes);
}

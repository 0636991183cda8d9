/* Models: a sequence of layers over one flat parameter vector.
 *
 * A model owns its parameters, gradients and activations, all allocated from
 * its backend. The two built-in models match ../shared/bench/torch_train.py:
 *   mlp: linear 784-512, ReLU, linear 512-256, ReLU, linear 256-10
 *   cnn: conv 1->32 5x5 pad 2, ReLU, maxpool 2; conv 32->64 5x5 pad 2, ReLU,
 *        maxpool 2; linear 3136->128, ReLU; linear 128->10
 * Weights are stored input-major: linear "W" is [in, out], conv "W" is
 * [k, k, in, out] (HWIO), so the forward pass is one row-major GEMM. */
#ifndef MM_MODEL_H
#define MM_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "layout.h"
#include "mm_error.h"

#define MM_MODEL_MAX_LAYERS 16

/* Both models take pixels standardised with the training set's statistics:
 * x = (pixel/255 - MM_INPUT_MEAN) / MM_INPUT_STD. */
#define MM_INPUT_MEAN 0.2860f
#define MM_INPUT_STD 0.3530f

typedef enum { MM_LAYER_LINEAR, MM_LAYER_CONV, MM_LAYER_MAXPOOL } mm_layer_kind;

typedef struct {
    mm_layer_kind kind;
    bool relu;             /* ReLU fused after this layer */
    int in_h, in_w, in_c;  /* input per example (linear: in_c features, h = w = 1) */
    int out_h, out_w, out_c;
    int k, pad;            /* conv only */
    int w, b;              /* layout indices of weight and bias (-1 if none) */
    size_t in_size, out_size; /* floats per example */
    /* Buffers, max_batch examples each. */
    float *out, *dout;
    float *cols;     /* conv without the backend's conv_fwd: im2col of the input, whole batch */
    uint32_t *arg;   /* maxpool: argmax indices */
} mm_layer;

typedef struct {
    char name[16];
    mm_backend *be;
    mm_layout layout;
    int nlayers;
    mm_layer layers[MM_MODEL_MAX_LAYERS];
    int max_batch;
    int in_size, classes;
    float *params, *grads; /* layout.total floats each, on the backend */
    float *x;              /* input batch [max_batch, in_size] */
    int32_t *y;            /* labels [max_batch] */
    float *dcols;          /* conv backward scratch (without the backend's conv_bwd) */
    float *conv_scratch;   /* the backend's conv_fwd/conv_bwd scratch (with them) */
    size_t dcols_rows;     /* rows of dcols, per chunk */
    float *stats;          /* [2]: loss sum, correct count (see softmax_xent) */
} mm_model;

/* Names of the built-in models, NULL-terminated. */
extern const char *const mm_model_names[];

/* Build the layout of a named model without allocating anything. */
int mm_model_layout(mm_layout *layout, const char *name, mm_error *err);

/* Create a model for batches of up to max_batch examples; parameters zero. */
int mm_model_create(mm_model **out, const char *name, mm_backend *be, int max_batch, mm_error *err);
void mm_model_free(mm_model *m);

/* He-normal weights for layers followed by ReLU, Xavier-uniform for the last
 * layer, zero biases; deterministic in seed. */
void mm_model_init_params(mm_model *m, uint64_t seed);

/* Forward n examples from m->x; returns the logits buffer [n, classes]. */
const float *mm_model_forward(mm_model *m, int n);
/* After mm_model_forward(m, n) and with labels in m->y: loss, then every
 * gradient into m->grads (overwritten). Adds loss sum and correct count to
 * m->stats. */
void mm_model_backward(mm_model *m, int n);
/* Evaluation only: forward, and loss/correct into m->stats. */
void mm_model_eval_batch(mm_model *m, int n);

#endif

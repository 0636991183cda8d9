/* The simulator's training workload (docs/simulator.md, "Training
 * workloads"): every virtual node owns an mm_trainer (node/trainer.c) on its
 * shard of one dataset that all nodes share; the simulator calls it through
 * mm_sim_workload. No I/O here: the caller loads the datasets. */
#ifndef MM_SIM_WORKLOAD_TRAIN_H
#define MM_SIM_WORKLOAD_TRAIN_H

#include "data.h"
#include "scenario.h"
#include "sim.h"

typedef struct mm_sim_train mm_sim_train;

/* The trainers of scenario s (workload mlp or cnn) over train and test, which
 * the caller keeps until mm_sim_train_free; sets s->dim to the model's
 * parameter count. Node i trains on shard i of s->nodes (of the first
 * s->train_samples examples) and is evaluated on the first s->eval_samples
 * test examples. */
int mm_sim_train_new(mm_scenario *s, const mm_dataset *train, const mm_dataset *test, mm_sim_train **out,
                     mm_error *err);
const mm_sim_workload *mm_sim_train_workload(const mm_sim_train *w);
void mm_sim_train_free(mm_sim_train *w);

#endif

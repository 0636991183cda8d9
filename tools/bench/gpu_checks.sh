#!/bin/bash
# Every GPU measurement of docs/gpu.md in one time-boxed run, for a lent GPU machine whose minutes are
# few: parity, compute-sanitizer, merge bandwidth, throughput against PyTorch, GPU training accuracy,
# and a mixed GPU + CPU network. Each step has its own time limit and a failing step does not stop the
# next; the log of each lands in OUTDIR and a summary table is printed last.
#
# Usage: tools/bench/gpu_checks.sh BUILD_DIR OUTDIR [--quick]
#
#   BUILD_DIR  a build with CUDA (murmur, libmurmur_cuda.so, tests/test_gpu_parity,
#              gpu/mm_gpu_merge_bench), e.g. build-gpu/ from docs/gpu.md
#   OUTDIR     where the logs go (created)
#   --quick    parity and the sanitizers only
#
# Environment: MM_GPU_SKIP (step names to leave out, e.g. "racecheck initcheck"), MM_GPU_MODELS
# (gpu_bench.sh --models, default mlp,cnn,mlp4k), MM_GPU_TF32 (gpu_bench.sh --tf32, default mlp4k;
# set and empty: no TF32 rows).
#
# The CPU references for the accuracy steps (`murmur train --solo --device cpu`, same seed and epochs)
# need no GPU and are taken on any machine; docs/gpu.md records both sides.
set -uo pipefail

build="${1:?usage: gpu_checks.sh BUILD_DIR OUTDIR [--quick]}"
out="${2:?usage: gpu_checks.sh BUILD_DIR OUTDIR [--quick]}"
quick="${3:-}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mkdir -p "$out"
summary="$out/summary.txt"
: >"$summary"
t_start=$(date +%s)

# step NAME LIMIT_S CMD...: run CMD with a time limit, its output in OUTDIR/NAME.log; one summary line.
step() {
    local name=$1 limit=$2
    shift 2
    case " ${MM_GPU_SKIP:-} " in *" $name "*) echo "== $name: skipped (MM_GPU_SKIP)" >&2; return 0 ;; esac
    local t0=$(date +%s) rc=0
    echo "== $name (limit ${limit}s): $*" >&2
    timeout -k 5 "$limit" "$@" >"$out/$name.log" 2>&1 || rc=$?
    local dt=$(($(date +%s) - t0))
    printf '%-22s rc=%-3s %4ss  (at %ss)\n' "$name" "$rc" "$dt" "$(($(date +%s) - t_start))" | tee -a "$summary" >&2
    return 0
}

# conv_ways MURMUR: cnn training throughput with each convolution path, batch 128 and 4096 (JSON lines).
conv_ways() {
    local conv b
    for conv in im2col cudnn; do
        for b in 128 4096; do
            MM_CUDA_CONV=$conv "$1" train --solo --model cnn --device cuda:0 --batch "$b" \
                --bench-batches $((102400 / b)) --bench-reps 5 --quiet | grep '^{' | sed "s/^{/{\"conv\":\"$conv\",/"
        done
    done
}
export -f conv_ways

export OPENBLAS_NUM_THREADS=1
tf32="${MM_GPU_TF32-mlp4k}"
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
    nproc
    python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.is_available())'
    command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer
} >"$out/env.log" 2>&1
cat "$out/env.log" >&2
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)

step parity 90 "$build/tests/test_gpu_parity"
if [ "$quick" != --quick ]; then
    step merge_bw 30 "$build/gpu/mm_gpu_merge_bench" 0 256 50
    step throughput 200 "$root/tools/bench/gpu_bench.sh" --build "$build" --no-build --skip-parity \
        --models "${MM_GPU_MODELS:-mlp,cnn,mlp4k}" ${tf32:+--tf32 "$tf32"}
    # The cnn's convolutions both ways: im2col + cuBLAS (the default) and cuDNN (MM_CUDA_CONV=cudnn).
    step conv_ways 120 bash -c 'conv_ways "$1"' _ "$build/murmur"
    step acc_mlp 90 "$build/murmur" train --solo --device cuda:0 --model mlp --epochs 10 --json
    step acc_cnn 120 "$build/murmur" train --solo --device cuda:0 --model cnn --epochs 5 --json
    step acc_cnn_cudnn 120 env MM_CUDA_CONV=cudnn "$build/murmur" train --solo --device cuda:0 --model cnn --epochs 5 --json
    step mixed 150 "$build/murmur" demo --nodes 3 --devices cuda:0,cpu,cpu --json --dir "$out/mixed"
fi
# test_copies asks for an impossible allocation on purpose: that API error is not a memory error.
step memcheck 150 "$sanitizer" --tool memcheck --report-api-errors no --error-exitcode 99 "$build/tests/test_gpu_parity"
step racecheck 60 "$sanitizer" --tool racecheck --error-exitcode 99 "$build/tests/test_gpu_parity"
step initcheck 60 "$sanitizer" --tool initcheck --error-exitcode 99 "$build/tests/test_gpu_parity"

echo "== results" >&2
grep -h '"event"' "$out/throughput.log" "$out/merge_bw.log" "$out/conv_ways.log" 2>/dev/null
grep -h '"event":"final"\|"event":"demo"' "$out"/acc_*.log "$out/mixed.log" 2>/dev/null
grep -h 'ERROR SUMMARY\|RACECHECK SUMMARY' "$out"/*check.log 2>/dev/null
grep -h '^\[  FAILED\|^\[  PASSED\|^\[  SKIPPED' "$out/parity.log" 2>/dev/null
cat "$summary"

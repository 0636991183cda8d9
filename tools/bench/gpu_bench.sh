#!/bin/bash
# The CUDA backend on a GPU machine, in one run: build with CUDA, the parity test, the merge op's
# bandwidth against a device-to-device cudaMemcpy, then murmur's training throughput side by side
# with PyTorch (eager, torch.cuda) on the same GPU. docs/gpu.md says what each line means.
#
# Usage: tools/bench/gpu_bench.sh [--device N] [--models mlp,cnn,mlp4k] [--large B] [--data DIR] [--no-build]
#                                 [--build DIR] [--skip-parity] [--tf32 MODELS]
#
#   --device   CUDA device index (default 0): murmur --device cuda:N, torch cuda:N
#   --models   comma-separated subset of mlp,cnn,mlp4k (default all three; mlp4k is
#              784-4096-4096-4096-4096-10, 53.6 M parameters, where the GPU is the bottleneck)
#   --large    the large batch size measured after 128 (default 4096)
#   --data     Fashion-MNIST IDX directory (default /usr/share/datasets/fashion-mnist); when it is
#              missing, a synthetic set of the same shape is written to a temporary directory
#              (throughput does not depend on pixel values) and the lines say "data":"synthetic"
#   --no-build use the build directory as it is
#   --build    the build directory (default build-gpu/)
#   --skip-parity  do not run the parity test first (a caller that has just run it)
#   --tf32     also measure these models (comma-separated) with TF32 tensor cores on both sides
#              (murmur --tf32; torch allow_tf32), in rows marked "math":"tf32"
#
# Prints JSON lines on stdout, progress on stderr:
#   {"event":"parity","ok",...}                    test_gpu_parity (the run stops if it fails or skips)
#   {"event":"merge_bw","gpu","merge_gb_s","memcpy_gb_s","ratio",...}
#   {"event":"throughput","model","batch","gpu","murmur_samples_per_s","torch_samples_per_s","ratio",...}
# Throughput needs `murmur train --device`; until node/ has it, one line says so instead.
# The peer scripts live in ../shared relative to the repository root; set MM_SHARED to override,
# PYTHON to pick the interpreter whose torch has CUDA (default /usr/bin/python3; without CUDA in
# torch the torch columns are null).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
shared="${MM_SHARED:-$root/../shared}"
py="${PYTHON:-/usr/bin/python3}"
build="$root/build-gpu"

device=0
models=mlp,cnn,mlp4k
large=4096
parity=1
tf32_models=
data=/usr/share/datasets/fashion-mnist
do_build=1
while [ $# -gt 0 ]; do
    case "$1" in
    --device) device="${2:?--device needs a value}"; shift 2 ;;
    --models) models="${2:?--models needs a value}"; shift 2 ;;
    --large) large="${2:?--large needs a value}"; shift 2 ;;
    --data) data="${2:?--data needs a value}"; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --build) build="${2:?--build needs a value}"; shift 2 ;;
    --skip-parity) parity=0; shift ;;
    --tf32) tf32_models="${2:?--tf32 needs a value}"; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_bench.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
done
for v in "$device" "$large"; do
    if ! [[ "$v" =~ ^[0-9]+$ ]]; then echo "gpu_bench.sh: '$v' is not a number" >&2; exit 2; fi
done
IFS=, read -r -a model_list <<<"$models"
IFS=, read -r -a tf32_check <<<"$tf32_models"
for m in "${model_list[@]}" ${tf32_check[@]+"${tf32_check[@]}"}; do
    case "$m" in mlp|cnn|mlp4k) ;; *) echo "gpu_bench.sh: unknown model '$m' (mlp, cnn, mlp4k)" >&2; exit 2 ;; esac
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# ---- build

if [ "$do_build" = 1 ]; then
    echo "== configuring $build" >&2
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$tmp/configure.log" 2>&1 ||
        { cat "$tmp/configure.log" >&2; exit 1; }
    if ! grep -q 'murmur: CUDA backend ON' "$tmp/configure.log"; then
        cat "$tmp/configure.log" >&2
        echo "gpu_bench.sh: CUDA was not enabled (no nvcc found? MM_SANITIZE set?)" >&2; exit 1
    fi
    echo "== building murmur, test_gpu_parity, mm_gpu_merge_bench" >&2
    cmake --build "$build" -j"$(nproc)" --target murmur test_gpu_parity mm_gpu_merge_bench >&2
fi

# ---- parity

if [ "$parity" = 1 ]; then
echo "== parity test ($build/tests/test_gpu_parity)" >&2
status=0
OPENBLAS_NUM_THREADS=1 "$build/tests/test_gpu_parity" >"$tmp/parity.log" 2>&1 || status=$?
cat "$tmp/parity.log" >&2
skipped="$( { grep '^\[  SKIPPED \] test_' "$tmp/parity.log" || true; } | sort -u | wc -l)"
if [ "$status" != 0 ] || [ "$skipped" != 0 ]; then
    echo "{\"event\":\"parity\",\"ok\":false,\"exit\":$status,\"skipped\":$skipped}"
    echo "gpu_bench.sh: the parity test failed or skipped (is a GPU visible?): stopping" >&2
    exit 1
fi
inexact="$(awk '/ inexact$/ && $(NF-1) != 0 {n++} END {print n + 0}' "$tmp/parity.log")"
echo "{\"event\":\"parity\",\"ok\":true,\"elementwise_lines_not_exact\":$inexact}"
fi

# ---- merge bandwidth

echo "== merge vs cudaMemcpy (256 MiB vectors)" >&2
"$build/gpu/mm_gpu_merge_bench" "$device" 256 50

# ---- training throughput

help="$("$build/murmur" train --help 2>&1 || true)"
if ! grep -q -- '^ *--device' <<<"$help"; then
    echo '{"event":"throughput","skipped":"murmur train has no --device option yet (docs/gpu.md, node/)"}'
    exit 0
fi
if [ ! -f "$shared/bench/torch_train.py" ]; then
    echo "gpu_bench.sh: no peer benchmarks in $shared/bench (set MM_SHARED)" >&2; exit 1
fi

datakind=fashion-mnist
if [ ! -f "$data/train-images-idx3-ubyte.gz" ]; then
    echo "== no Fashion-MNIST in $data: writing a synthetic set of the same shape" >&2
    data="$tmp/fmnist" datakind=synthetic
    mkdir -p "$data"
    "$py" - "$data" <<'EOF'
import gzip, os, struct, sys
d = sys.argv[1]
for split, n in (("train", 60000), ("t10k", 10000)):
    with gzip.open(os.path.join(d, f"{split}-images-idx3-ubyte.gz"), "wb", compresslevel=1) as f:
        f.write(struct.pack(">IIII", 2051, n, 28, 28) + os.urandom(n * 784))
    with gzip.open(os.path.join(d, f"{split}-labels-idx1-ubyte.gz"), "wb", compresslevel=1) as f:
        f.write(struct.pack(">II", 2049, n) + bytes(b % 10 for b in os.urandom(n)))
EOF
fi

# last_json TEXT: the last line of TEXT that starts with '{'.
last_json() {
    printf '%s\n' "$1" | grep '^{' | tail -n 1
}

# The PyTorch side: python3 torch_gpu.py BENCH_DIR DEVICE MODEL BATCH BATCHES REPS. Eager mode on
# cuda:DEVICE, fp32 (no TF32), the models and training step of torch_train.py, the training set
# resident on the GPU, torch.cuda.synchronize() around every timed window; one JSON line.
cat >"$tmp/torch_gpu.py" <<'EOF'
import json, statistics, sys, time
bench_dir, device, name, batch, batches, reps, tf32 = sys.argv[1], int(sys.argv[2]), sys.argv[3], *map(int, sys.argv[4:8])
sys.path.insert(0, bench_dir)
import torch
import torch.nn as nn
import fmnist_data
from torch_train import MODELS, as_input, build, train_step

if name == "mlp4k":  # not in torch_train.py: the same 784-4096x4-10 as murmur's mlp4k
    MODELS = dict(MODELS, mlp4k=MODELS["mlp"])
    def build(name):
        dims = [784, 4096, 4096, 4096, 4096]
        layers = []
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(4096, 10))
    as_input = lambda name, x: x

if not torch.cuda.is_available():
    print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "error": "this torch has no CUDA"}), flush=True)
    sys.exit(0)
torch.backends.cuda.matmul.allow_tf32 = bool(tf32)  # full fp32 unless asked, as murmur's cuBLAS GEMMs
torch.backends.cudnn.allow_tf32 = bool(tf32)
dev = torch.device(f"cuda:{device}")
torch.manual_seed(0)
x, y = (torch.from_numpy(v) for v in fmnist_data.load("train"))
x, y = as_input(name, x.to(dev)), y.to(dev)
model = build(name).to(dev)
opt = torch.optim.SGD(model.parameters(), lr=MODELS[name], momentum=0.9)
nb = x.shape[0] // batch
k = 0

def run(count):
    global k
    for _ in range(count):
        i = (k % nb) * batch
        train_step(model, opt, x[i:i + batch], y[i:i + batch])
        k += 1

run(10)  # warm-up
rates = []
for _ in range(reps):
    torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    run(batches)
    torch.cuda.synchronize(dev)
    rates.append(batches * batch / (time.perf_counter() - t0))
print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "gpu": torch.cuda.get_device_name(dev),
                  "model": name, "batch": batch, "bench_samples_per_s": round(statistics.median(rates)),
                  "min": round(min(rates)), "max": round(max(rates))}), flush=True)
EOF

IFS=, read -r -a tf32_list <<<"$tf32_models"
runs=()
for m in "${model_list[@]}"; do runs+=("$m:0"); done
for m in "${tf32_list[@]}"; do runs+=("$m:1"); done
for run in "${runs[@]}"; do
    m=${run%:*} tf32=${run#*:}
    flag=()
    [ "$tf32" = 1 ] && flag=(--tf32)
    for b in 128 "$large"; do
        # Windows of about 256k (mlp), 100k (cnn) or 64k (mlp4k) examples, 4 batches at least.
        case "$m" in mlp) nb=$((256000 / b)) ;; cnn) nb=$((102400 / b)) ;; *) nb=$((65536 / b)) ;; esac
        [ "$nb" -ge 4 ] || nb=4
        reps=5
        echo "== $m, batch $b, tf32 $tf32: murmur ($nb batches x $reps)" >&2
        out="$(OPENBLAS_NUM_THREADS=1 timeout 1800 "$build/murmur" train --solo --model "$m" --device "cuda:$device" \
            --batch "$b" --data "$data" --bench-batches "$nb" --bench-reps "$reps" --quiet ${flag[@]+"${flag[@]}"})"
        mm="$(last_json "$out")"
        echo "   $mm" >&2
        echo "== $m, batch $b: torch ($nb batches x $reps)" >&2
        out="$(FMNIST_DIR="$data" timeout 1800 "$py" "$tmp/torch_gpu.py" "$shared/bench" "$device" "$m" "$b" "$nb" \
            "$reps" "$tf32")"
        pt="$(last_json "$out")"
        echo "   $pt" >&2
        "$py" - "$m" "$b" "$datakind" "$mm" "$pt" "$tf32" <<'EOF'
import json, sys
m, b, datakind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
mm, pt = json.loads(sys.argv[4]), json.loads(sys.argv[5])
math = "tf32" if sys.argv[6] == "1" else "fp32"
a, t = mm["bench_samples_per_s"], pt.get("bench_samples_per_s")
print(json.dumps({"event": "throughput", "model": m, "batch": b, "math": math, "gpu": pt.get("gpu"), "data": datakind,
                  "murmur_samples_per_s": a, "torch_samples_per_s": t, "ratio": round(a / t, 3) if t else None,
                  "murmur_peak_rss_kib": mm.get("peak_rss_kib"), "torch": pt["torch"]}), flush=True)
EOF
    done
done

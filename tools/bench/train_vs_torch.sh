#!/bin/bash
# murmur training throughput against PyTorch (and the OpenBLAS matmul ceiling), side by side in one run.
#
# Usage: tools/bench/train_vs_torch.sh [--regime env|unset|haswell|both|all] [--models mlp,cnn] [--batches N]
#
#   --regime   env:   the environment as it is (this machine sets OPENBLAS_CORETYPE=Haswell, OPENBLAS_L2_SIZE=512)
#              unset: every command runs under `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`
#              haswell: every command runs with OPENBLAS_CORETYPE=Haswell OPENBLAS_L2_SIZE=512 (the
#                     setting the bench machines' environment carries; for machines whose environment lacks it)
#              both:  env, then unset (default); all: env, unset, haswell
#   --models   comma-separated subset of mlp,cnn (default both)
#   --batches  batches per measuring window (default mlp 200, cnn 20; reps stay mlp 5, cnn 3)
#
# For each regime: the sgemm ceiling once (build/peers/sgemm_bench, 1 thread), then for each model
# murmur and torch interleaved, murmur, torch, murmur, torch, all with 1 thread. Each run reports the
# median over its windows; of the two rounds we keep the better (higher) median for each peer, since
# the machine is shared and interference only ever slows a run down. Peak RSS is the larger of the
# two rounds.
#
# Prints one JSON line per (regime, model) on stdout; progress goes to stderr:
#   {"model","regime","openblas_coretype","openblas_core","murmur_samples_per_s","torch_samples_per_s",
#    "ratio" (murmur/torch),"ceiling_samples_per_s","fraction_of_ceiling" (murmur/ceiling),
#    "murmur_peak_rss_kib","torch_peak_rss_kib","rss_ratio" (murmur/torch)}
# openblas_coretype is OPENBLAS_CORETYPE as the commands see it (null when unset); openblas_core is
# the kernel OpenBLAS reported using in the sgemm run. The ceiling is that of mlp's 8 GEMMs: for cnn
# it is reported as the machine's matmul figure only, and fraction_of_ceiling is null.
#
# The peer scripts live in ../shared relative to the repository root; set MM_SHARED to override.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
shared="${MM_SHARED:-$root/../shared}"
py=/usr/bin/python3

regime=both
models=mlp,cnn
batches=
while [ $# -gt 0 ]; do
    case "$1" in
    --regime) regime="${2:?--regime needs a value}"; shift 2 ;;
    --models) models="${2:?--models needs a value}"; shift 2 ;;
    --batches) batches="${2:?--batches needs a value}"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "train_vs_torch.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
done
case "$regime" in
env|unset|haswell) regimes=("$regime") ;;
both) regimes=(env unset) ;;
all) regimes=(env unset haswell) ;;
*) echo "train_vs_torch.sh: --regime must be env, unset, haswell, both or all" >&2; exit 2 ;;
esac
IFS=, read -r -a model_list <<<"$models"
for m in "${model_list[@]}"; do
    case "$m" in mlp|cnn) ;; *) echo "train_vs_torch.sh: unknown model '$m' (mlp, cnn)" >&2; exit 2 ;; esac
done
if [ -n "$batches" ] && ! [[ "$batches" =~ ^[1-9][0-9]*$ ]]; then
    echo "train_vs_torch.sh: --batches must be a positive integer" >&2; exit 2
fi
if [ ! -f "$shared/bench/torch_train.py" ]; then
    echo "train_vs_torch.sh: no peer benchmarks in $shared/bench (set MM_SHARED)" >&2; exit 1
fi

murmur="$root/build/murmur"
peers="$root/build/peers"
if [ ! -x "$murmur" ]; then
    echo "== building build/murmur" >&2
    cmake -S "$root" -B "$root/build" >&2
    cmake --build "$root/build" --target murmur -j2 >&2
fi
echo "== building peers into build/peers" >&2
make -s -C "$shared/bench" O="$peers" "$peers/sgemm_bench" >&2

# run REGIME CMD...: the command in that regime, 1 BLAS thread.
run() {
    local r="$1"; shift
    if [ "$r" = unset ]; then
        env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 "$@"
    elif [ "$r" = haswell ]; then
        OPENBLAS_CORETYPE=Haswell OPENBLAS_L2_SIZE=512 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 "$@"
    else
        OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 "$@"
    fi
}

# field JSON_LINE KEY: one numeric field of a JSON object.
field() {
    "$py" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"
}

# last_json TEXT: the last line of TEXT that starts with '{'.
last_json() {
    printf '%s\n' "$1" | grep '^{' | tail -n 1
}

for r in "${regimes[@]}"; do
    echo "== regime $r: sgemm ceiling (1 thread, ~30 s)" >&2
    out="$(run "$r" "$peers/sgemm_bench")"
    ceiling="$(printf '%s\n' "$out" | sed -n 's/.*matmul-only ceiling \([0-9][0-9]*\) samples\/s.*/\1/p' | tail -n 1)"
    core="$(printf '%s\n' "$out" | sed -n 's/^OpenBLAS core: *//p' | tail -n 1)"
    if [ -z "$ceiling" ]; then
        echo "train_vs_torch.sh: no 'matmul-only ceiling' line in sgemm_bench's output" >&2; exit 1
    fi
    echo "   ceiling $ceiling samples/s, OpenBLAS core ${core:-?}" >&2
    if [ "$r" = env ] && [ -n "${OPENBLAS_CORETYPE+x}" ]; then coretype="$OPENBLAS_CORETYPE"; else coretype=; fi

    for m in "${model_list[@]}"; do
        if [ "$m" = mlp ]; then nb="${batches:-200}"; reps=5; else nb="${batches:-20}"; reps=3; fi
        mm_rates=() mm_rss=() pt_rates=() pt_rss=()
        for round in 1 2; do
            echo "== regime $r, $m, round $round: murmur ($nb batches x $reps)" >&2
            out="$(run "$r" timeout 1800 "$murmur" train --solo --model "$m" --bench-batches "$nb" \
                --bench-reps "$reps" --threads 1 --quiet)"
            j="$(last_json "$out")"
            mm_rates+=("$(field "$j" bench_samples_per_s)") mm_rss+=("$(field "$j" peak_rss_kib)")
            echo "   murmur ${mm_rates[-1]} samples/s, ${mm_rss[-1]} KiB" >&2
            echo "== regime $r, $m, round $round: torch ($nb batches x $reps)" >&2
            out="$(run "$r" timeout 1800 "$py" "$shared/bench/torch_train.py" --model "$m" --threads 1 \
                --bench-batches "$nb" --bench-reps "$reps" --json)"
            j="$(last_json "$out")"
            pt_rates+=("$(field "$j" bench_samples_per_s)") pt_rss+=("$(field "$j" peak_rss_kib)")
            echo "   torch ${pt_rates[-1]} samples/s, ${pt_rss[-1]} KiB" >&2
        done
        "$py" - "$m" "$r" "$coretype" "$core" "$ceiling" "${mm_rates[*]}" "${pt_rates[*]}" "${mm_rss[*]}" \
            "${pt_rss[*]}" <<'EOF'
import json, sys
m, r, coretype, core, ceiling = sys.argv[1:6]
best = lambda s: max(float(x) for x in s.split())
mm, pt, mm_rss, pt_rss = (best(s) for s in sys.argv[6:10])
ceiling = float(ceiling)
print(json.dumps({
    "model": m, "regime": r,
    "openblas_coretype": coretype or None, "openblas_core": core or None,
    "murmur_samples_per_s": round(mm), "torch_samples_per_s": round(pt),
    "ratio": round(mm / pt, 3),
    "ceiling_samples_per_s": round(ceiling),
    "fraction_of_ceiling": round(mm / ceiling, 3) if m == "mlp" else None,
    "murmur_peak_rss_kib": round(mm_rss), "torch_peak_rss_kib": round(pt_rss),
    "rss_ratio": round(mm_rss / pt_rss, 3),
}), flush=True)
EOF
    done
done

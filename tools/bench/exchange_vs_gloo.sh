#!/bin/bash
# The exchange between two nodes over loopback, side by side with PyTorch
# gloo's all_reduce between two processes, in one run.
#
# For each size (Mi elements, default 1,16,100): `murmur exchange-bench` with
# float32 and with 8-bit (q8) transfer encoding, then ../shared/bench/torch_gloo.py
# on the same sizes. murmur's figure is elements / time of a complete exchange
# (both directions, encrypted, validated, merged); gloo's is elements / time of
# an unencrypted float32 all_reduce. The crypto-bound ceiling is measured by
# murmur in the same process: per core 1/(1/seal + 1/open), in float32
# elements/s. Prints a table and one JSON line per size.
# Usage: tools/bench/exchange_vs_gloo.sh [--sizes 1,16,100] [--rounds 5]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
shared="${MM_SHARED:-$root/../shared}"
sizes=1,16,100 rounds=5
while [ $# -gt 0 ]; do
    case "$1" in
    --sizes) sizes=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: $0 [--sizes 1,16,100] [--rounds R]" >&2; exit 2 ;;
    esac
done
if [ ! -f "$shared/bench/torch_gloo.py" ]; then
    echo "exchange_vs_gloo.sh: no peer benchmarks in $shared/bench (set MM_SHARED)" >&2; exit 1
fi
murmur="$root/build/murmur"
if [ ! -x "$murmur" ]; then
    cmake -S "$root" -B "$root/build" >&2
    cmake --build "$root/build" --target murmur -j2 >&2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for s in ${sizes//,/ }; do
    n=$((s << 20))
    for enc in f32 q8; do
        echo "== murmur exchange-bench: $s Mi elements, $enc" >&2
        "$murmur" exchange-bench --params "$n" --rounds "$rounds" --encoding "$enc" > "$work/m_${s}_$enc.json"
    done
done
echo "== gloo all_reduce: $sizes Mi elements" >&2
/usr/bin/python3 "$shared/bench/torch_gloo.py" --ddp-epochs 0 --json --sizes "$sizes" 2>/dev/null |
    grep '^{' > "$work/gloo.json"

/usr/bin/python3 - "$work" "$sizes" <<'PY'
import json, sys
work, sizes = sys.argv[1], [int(s) for s in sys.argv[2].split(",")]
gloo = {j["elements"]: j for j in map(json.loads, open(f"{work}/gloo.json"))}
print("| elements | murmur f32 (Melem/s) | of crypto ceiling | murmur q8 (Melem/s) | gloo f32 (Melem/s) | q8 / gloo | f32 / gloo | peak RSS (client, server) MiB | RSS bound 4x+64 MiB |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for s in sizes:
    n = s << 20
    f = [json.loads(l) for l in open(f"{work}/m_{s}_f32.json")]
    q = [json.loads(l) for l in open(f"{work}/m_{s}_q8.json")]
    fc = next(j for j in f if j["event"] == "exchange_bench")
    fs = next(j for j in f if j["event"] == "exchange_bench_server")
    qc = next(j for j in q if j["event"] == "exchange_bench")
    g = gloo[n]["elements"] / gloo[n]["median_s"]
    rss = max(fc["peak_rss_kib"], fs["peak_rss_kib"]) / 1024
    bound = 4 * n * 4 / 2**20 + 64
    print(f"| {s} Mi | {fc['elements_per_s']/1e6:.1f} | {fc['of_ceiling']*100:.0f} % | {qc['elements_per_s']/1e6:.1f} | "
          f"{g/1e6:.1f} | {qc['elements_per_s']/g:.2f} | {fc['elements_per_s']/g:.2f} | "
          f"{fc['peak_rss_kib']/1024:.0f}, {fs['peak_rss_kib']/1024:.0f} | {bound:.0f} |")
    print(json.dumps({"bench": "exchange_vs_gloo", "elements": n, "murmur_f32_elem_s": round(fc["elements_per_s"]),
                      "ceiling_elem_s": round(fc["ceiling_elements_per_s"]), "of_ceiling": fc["of_ceiling"],
                      "murmur_q8_elem_s": round(qc["elements_per_s"]), "gloo_elem_s": round(g),
                      "q8_over_gloo": round(qc["elements_per_s"] / g, 3), "peak_rss_mib": round(rss, 1),
                      "rss_bound_mib": round(bound, 1), "cipher": fc["cipher"]}))
PY

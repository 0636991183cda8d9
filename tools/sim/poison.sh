#!/bin/bash
# Parameter poisoning in the simulator (SECURITY.md P1-P7, P12): 32 nodes
# train the mlp (iid shards, 2 epochs, an exchange every 2 steps), f of them
# byzantine from the start, lending what `attack.kind` says instead of their
# snapshot (docs/simulator.md, "Parameter poisoning"). Every attack runs
# twice: with the cores' defences (per-tensor clipping, the default) and as
# the control, clip: false. Prints one JSON line per run and a table of the
# honest nodes' test accuracy at the end against the baseline (f = 0).
#
#   tools/sim/poison.sh [--f 3,6] [--kinds signflip,noise,...] [--seed N]
#
# The attackers are spread over the node indices (not the first nodes: those
# are every newcomer's bootstrap and sync sources; docs/simulator.md says
# what happens when attackers hold all of them).
set -euo pipefail
top="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
murmur="${MURMUR:-$top/build/murmur}"
fs="3,6"
kinds="signflip,noise,constant,alie,ipm,stale"
seed=1
while [ $# -gt 0 ]; do
    case "$1" in
    --f) fs="$2"; shift 2 ;;
    --kinds) kinds="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "poison.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ -x "$murmur" ] || { cmake -S "$top" -B "$top/build" >&2 && cmake --build "$top/build" -j"$(nproc)" --target murmur >&2; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

scenario() { # name, extra YAML lines
    cat <<YAML
name: $1
seed: $seed
nodes: 32
workload: mlp
batch: 64
epochs: 2
average_every: 2
step_ms: 100
eval_every: 20
eval_samples: 2000
latency: 20
bandwidth: {up: 100, down: 100}
duration: 20
report_every: 20
$2
YAML
}
attackers() { # f -> a YAML list of f node indices spread over 5..31
    python3 -c "import sys; f = int(sys.argv[1]); print([5 + (26 * k) // f for k in range(f)])" "$1"
}

{
    scenario baseline ""
    for f in ${fs//,/ }; do
        for k in ${kinds//,/ }; do
            echo "---"
            scenario "$k-f$f" "attack: {kind: $k, nodes: $(attackers "$f")}"
            echo "---"
            scenario "$k-f$f-noclip" "attack: {kind: $k, nodes: $(attackers "$f")}
clip: false"
        done
    done
} > "$tmp/poison.yaml"
echo "poison.sh: $(grep -c '^name:' "$tmp/poison.yaml") runs" >&2
"$murmur" sim "$tmp/poison.yaml" --quiet > "$tmp/out.jsonl"
grep '"event":"eval"' "$tmp/out.jsonl" | grep '"t":20,'
python3 - "$tmp/out.jsonl" <<'PY'
import json, sys
ev = {}
summ = {}
for line in open(sys.argv[1]):
    j = json.loads(line)
    if j["event"] == "eval": ev[j["scenario"]] = j
    if j["event"] == "summary": summ[j["scenario"]] = j
base = ev["baseline"]["acc_mean"]
print(f"baseline: honest accuracy {base*100:.1f} % (min {ev['baseline']['acc_min']*100:.1f} %)")
print("| attack | f | clipping: mean (min) | vs baseline | control, no clipping: mean (min) | violations |")
print("|---|---:|---:|---:|---:|---:|")
for name, j in ev.items():
    if name == "baseline" or name.endswith("-noclip"): continue
    kind, f = name.rsplit("-f", 1)
    c = ev.get(name + "-noclip")
    print(f"| {kind} | {f} | {j['acc_mean']*100:.1f} ({j['acc_min']*100:.1f}) | {(j['acc_mean']-base)*100:+.1f} | "
          f"{c['acc_mean']*100:.1f} ({c['acc_min']*100:.1f}) | {summ[name]['violations']} |")
PY

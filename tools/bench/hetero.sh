#!/bin/bash
# Heterogeneity: does one slow node slow the others down?
# Runs `murmur demo` twice in one invocation, 4 nodes on mlp: once with every
# node at full speed, once with node 3 throttled to 1/FACTOR of its speed
# (--throttle), and prints one JSON line comparing the other three nodes'
# training rate (median samples/s over their progress reports while all four
# were training) and every node's final test accuracy.
# Usage: tools/bench/hetero.sh [--factor 4] [--epochs 10] [--partition iid|label]
set -euo pipefail
top="$(cd "$(dirname "$0")/../.." && pwd)"
factor=4 epochs=10 partition=iid
while [ $# -gt 0 ]; do
    case "$1" in
    --factor) factor=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --partition) partition=$2; shift 2 ;;
    *) echo "usage: $0 [--factor F] [--epochs E] [--partition iid|label]" >&2; exit 2 ;;
    esac
done
[ -x "$top/build/murmur" ] || cmake --build "$top/build" --target murmur >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run() { # $1 = dir, rest = extra demo args
    local d=$1; shift
    "$top/build/murmur" demo --nodes 4 --epochs "$epochs" --partition "$partition" --dir "$d" --json "$@" \
        > "$d.json" 2> "$d.log" || true
}
echo "hetero: 4 nodes at full speed ..." >&2
run "$work/even"
echo "hetero: node 3 throttled x$factor ..." >&2
run "$work/slow" --throttle-node 3 --throttle "$factor"
/usr/bin/python3 - "$work" "$factor" <<'PY'
import json, statistics, sys, glob, os
work, factor = sys.argv[1], float(sys.argv[2])
def node_rates(d):
    """median samples/s per node, over the window when all nodes were training"""
    ev = {}
    for i in range(4):
        f = f"{d}/node-{i}/metrics.jsonl"
        ev[i] = [json.loads(l) for l in open(f)] if os.path.exists(f) else []
    steps = {i: [e for e in ev[i] if e.get("event") == "step"] for i in ev}
    start = max((s[0]["t"] for s in steps.values() if s), default=0)
    end = min((s[-1]["t"] for s in steps.values() if s), default=0)
    out = {}
    for i, s in steps.items():
        r = [e["samples_per_s"] for e in s if start <= e["t"] <= end] or [e["samples_per_s"] for e in s]
        out[i] = statistics.median(r) if r else 0.0
    return out
def accs(d):
    a = {}
    for i in range(4):
        try:
            for l in open(f"{d}/node-{i}.out"):
                j = json.loads(l)
                if j.get("event") == "final": a[i] = j["test_acc"]
        except (OSError, ValueError): pass
    return a
even, slow = node_rates(f"{work}/even"), node_rates(f"{work}/slow")
others_even = statistics.mean(even[i] for i in range(3))
others_slow = statistics.mean(slow[i] for i in range(3))
print(json.dumps({"factor": factor, "others_samples_per_s_even": round(others_even),
                  "others_samples_per_s_with_slow_node": round(others_slow),
                  "others_drop": round(1 - others_slow / others_even, 4) if others_even else None,
                  "slow_node_samples_per_s": round(slow[3]), "acc_even": accs(f"{work}/even"),
                  "acc_with_slow_node": accs(f"{work}/slow")}))
PY

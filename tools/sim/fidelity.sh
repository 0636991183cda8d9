#!/bin/bash
# Fidelity of the simulator's training workload (docs/simulator.md, "Fidelity"):
# a real 4-node run (`murmur demo --nodes 4`: 4 processes on 127.0.0.1, mlp,
# iid shards, averaging every 20 steps, 10 epochs) against `murmur sim` on
# sim/scenarios/fidelity_4node.yaml, the same setup in virtual time.
#
# Time to 85 %: the first epoch E at which the mean of the nodes' epoch-E test
# accuracies (node/'s per-epoch evaluation on the 10k test images) is >= 0.85,
# at the mean of the times the nodes logged it. Times are on node 0's clock
# (seconds from its process start; the demo starts nodes 1-3 when node 0
# listens, its "start" line, so their metrics' times are shifted by that); the
# simulator's virtual time is the same clock. The granularity is one epoch
# (4 to 5 s here): the metrics hold no finer test accuracy, so the crossing is
# also given interpolated linearly between the two epochs around it.
#
# The real run's per-step time (from its "step" metrics), evaluation time and
# start-up delay are measured and printed. By default the simulator runs the
# committed scenario (calibrated on an earlier run of this machine: a
# prediction); --calibrate runs it with this run's own measurements instead.
#
# --real DIR compares with a real run already made (murmur demo --nodes 4 --dir DIR)
# instead of making one.
# usage: tools/sim/fidelity.sh [--calibrate] [--keep DIR] [--real DIR]   (MURMUR=path/to/murmur)
# Prints a table and one JSON line; exits 0 whether or not the 20 % target is met.
set -u
calibrate=0; keep=""; real=""
while [ $# -gt 0 ]; do
    case "$1" in
    --calibrate) calibrate=1 ;;
    --keep) keep="$2"; shift ;;
    --real) real="$2"; shift ;;
    *) echo "usage: $0 [--calibrate] [--keep DIR] [--real DIR]" >&2; exit 2 ;;
    esac
    shift
done
root=$(cd "$(dirname "$0")/../.." && pwd)
murmur=${MURMUR:-$root/build/murmur}
scenario=$root/sim/scenarios/fidelity_4node.yaml
if [ -n "$keep" ]; then mkdir -p "$keep"; tmp=$keep; else tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT; fi
export OPENBLAS_NUM_THREADS=1

if [ -z "$real" ]; then
    real=$tmp/real
    echo "fidelity: real run (murmur demo --nodes 4, about a minute) in $real" >&2
    rm -rf "$real"
    timeout 900 "$murmur" demo --nodes 4 --json --dir "$real" >"$tmp/demo.jsonl" 2>"$tmp/demo.err" ||
        { echo "fidelity: the real run failed (see $tmp/demo.err)" >&2; exit 1; }
fi

# The real run's measurements, and the scenario the simulator runs.
python3 - "$real" "$scenario" "$tmp/scenario.yaml" "$calibrate" >"$tmp/measured.json" <<'PY' || exit 1
import json, re, statistics, sys
real, scen, out, calibrate = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
step_ms, spacing, delay = [], [], []
def start_t(i):
    return next(json.loads(l)["t"] for l in open(f"{real}/node-{i}/metrics.jsonl") if '"event":"start"' in l)
d0 = start_t(0)
for i in range(4):
    rows = [json.loads(l) for l in open(f"{real}/node-{i}/metrics.jsonl")]
    steps = [r for r in rows if r["event"] == "step" and r["samples_per_s"] > 0]
    # Time per step while all nodes train (the first window, before the others join, is left out).
    step_ms.append(statistics.median(128e3 / r["samples_per_s"] for r in steps[2:]))
    ep = [r for r in rows if r["event"] == "epoch"]
    spacing.append((ep[-1]["t"] - ep[0]["t"]) / (len(ep) - 1) / (ep[1]["step"] - ep[0]["step"]) * 1e3)
    if i: delay.append(d0 + start_t(i))
steps_per_epoch = 118
m = {"step_ms": statistics.mean(step_ms), "epoch_ms_per_step": statistics.mean(spacing),
     "delay_first": d0, "delay_newcomers": statistics.mean(delay)}
m["eval_ms"] = max(0.0, (m["epoch_ms_per_step"] - m["step_ms"]) * steps_per_epoch)
text = open(scen).read()
if calibrate:
    for k, v in (("step_ms", m["step_ms"]), ("eval_ms", m["eval_ms"])):
        text = re.sub(rf"^{k}:.*$", f"{k}: {v:.3f}", text, flags=re.M)
    for k, v in (("first", m["delay_first"]), ("newcomers", m["delay_newcomers"])):
        text = re.sub(rf"(name: {k}, nodes: \d+, train_delay: )[0-9.]+", rf"\g<1>{v:.3f}", text)
open(out, "w").write(text)
print(json.dumps({k: round(v, 3) for k, v in m.items()}))
PY
echo "fidelity: measured $(cat "$tmp/measured.json"); simulating $( [ $calibrate = 1 ] && echo 'with them' || echo "$scenario")" >&2
timeout 900 "$murmur" sim "$tmp/scenario.yaml" --quiet >"$tmp/sim.jsonl" ||
    { echo "fidelity: murmur sim failed" >&2; exit 1; }

python3 - "$real" "$tmp/sim.jsonl" "$tmp/scenario.yaml" "$tmp/measured.json" <<'PY'
import json, re, statistics, sys
real, simf, scen, measured = sys.argv[1:5]
THR = 0.85
def t85(by_node):  # by_node: {node: [(epoch, t, acc)]}
    epochs = sorted(set.intersection(*(set(e for e, _, _ in v) for v in by_node.values())))
    curve = []
    for e in epochs:
        pts = [next(p for p in v if p[0] == e) for v in by_node.values()]
        curve.append((e, statistics.mean(p[1] for p in pts), statistics.mean(p[2] for p in pts)))
    hit = next((c for c in curve if c[2] >= THR), None)
    # Interpolated: where the line between the last epoch below and the first at or above crosses THR.
    interp = None
    if hit:
        k = curve.index(hit)
        interp = hit[1] if k == 0 else curve[k - 1][1] + (THR - curve[k - 1][2]) / (hit[2] - curve[k - 1][2]) * (hit[1] - curve[k - 1][1])
    firsts = [next((p[1] for p in v if p[2] >= THR), None) for v in by_node.values()]
    return hit, curve, firsts, interp
real_by = {}
d0 = None
for i in range(4):
    rows = [json.loads(l) for l in open(f"{real}/node-{i}/metrics.jsonl")]
    if i == 0: d0 = next(r["t"] for r in rows if r["event"] == "start")
    real_by[i] = [(r["epoch"], r["t"] + (d0 if i else 0), r["test_acc"]) for r in rows if r["event"] == "epoch"]
sim_by = {}
for l in open(simf):
    r = json.loads(l)
    if r["event"] == "epoch":
        sim_by.setdefault(r["node"], []).append((r["epoch"], r["t"], r["acc"]))
rh, rc, rf, ri = t85(real_by)
sh, sc, sf, si = t85(sim_by)
print("epoch | real: mean t (s), mean acc | sim: mean t (s), mean acc")
for k in range(max(len(rc), len(sc))):
    a = rc[k] if k < len(rc) else None
    b = sc[k] if k < len(sc) else None
    print(f"{k + 1:5d} | " + (f"{a[1]:7.2f} {a[2]:.4f}" if a else "      -      -") + " | " +
          (f"{b[1]:7.2f} {b[2]:.4f}" if b else "      -      -"))
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
res = {"threshold": THR, "real_t85": rh[1] if rh else None, "real_epoch": rh[0] if rh else None,
       "sim_t85": sh[1] if sh else None, "sim_epoch": sh[0] if sh else None,
       "real_t85_interp": ri, "sim_t85_interp": si,
       "real_first_median": med(rf), "sim_first_median": med(sf)}
if rh and sh:
    res["error"] = (sh[1] - rh[1]) / rh[1]
    res["error_interp"] = (si - ri) / ri
    res["within_20pct"] = abs(res["error"]) <= 0.20
    res["within_20pct_interp"] = abs(res["error_interp"]) <= 0.20
res["measured"] = json.load(open(measured))
res["scenario"] = {k: float(v) for k, v in re.findall(r"^(step_ms|eval_ms):\s*([0-9.]+)", open(scen).read(), re.M)}
res["scenario"].update({"delay_" + k: float(v) for k, v in re.findall(r"name: (\w+), nodes: \d+, train_delay: ([0-9.]+)", open(scen).read())})
r = lambda x: round(x, 3) if isinstance(x, float) else x
print(f"time to {THR:.0%} (mean accuracy over the nodes, per epoch): real {r(res['real_t85'])} s (epoch {res['real_epoch']}), "
      f"simulated {r(res['sim_t85'])} s (epoch {res['sim_epoch']})" +
      (f", error {res['error']:+.1%}" if "error" in res else ""))
if "error" in res:
    print(f"interpolated between epochs: real {ri:.2f} s, simulated {si:.2f} s, error {res['error_interp']:+.1%}")
print(json.dumps({k: (r(v) if not isinstance(v, dict) else v) for k, v in res.items()}))
PY

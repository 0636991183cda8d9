#!/bin/bash
# Plots of a `murmur sim --out DIR` run (docs/simulator.md, "Plots"): one line
# per run of the file (a sweep's values, or the documents), SVG by gnuplot.
#   DIR/consensus.svg  consensus variance against virtual time (log scale)
#   DIR/accuracy.svg   training workloads: mean test accuracy of the nodes up
#                      against virtual time ("eval" lines, from eval_every; else
#                      the mean of each epoch's "epoch" lines)
#   DIR/alive.svg      with churn or crashes: nodes up against time
# usage: tools/sim/plot.sh DIR [TITLE]
# Needs gnuplot (Debian: apt-get install gnuplot-nox) and python3.
set -euo pipefail
dir=${1:?usage: tools/sim/plot.sh DIR [TITLE]}
title=${2:-}
res=$dir/results.jsonl
[ -r "$res" ] || { echo "plot: no $res (run murmur sim FILE --out $dir)" >&2; exit 1; }
command -v gnuplot >/dev/null || { echo "plot: needs gnuplot (apt-get install gnuplot-nox)" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# One data file per run and series: "t value" lines; labels.txt: run<TAB>label.
python3 - "$res" "$tmp" <<'PY'
import json, sys, collections
res, tmp = sys.argv[1], sys.argv[2]
runs, rep, ev, ep = {}, collections.defaultdict(list), collections.defaultdict(list), collections.defaultdict(dict)
for line in open(res):
    r = json.loads(line)
    k = r.get("run", 0)
    if r["event"] == "start":
        runs[k] = (f"{r['sweep_key']} = {r['sweep_value']}" if r.get("sweep_key") else r["scenario"])
    elif r["event"] == "report":
        rep[k].append((r["t"], r["consensus_var"], r["alive"]))
    elif r["event"] == "eval":
        ev[k].append((r["t"], r["acc_mean"]))
    elif r["event"] == "epoch":
        ep[k].setdefault(r["epoch"], []).append((r["t"], r["acc"]))
with open(f"{tmp}/labels.txt", "w") as f:
    for k in sorted(runs):
        f.write(f"{k}\t{runs[k]}\n")
        with open(f"{tmp}/cons{k}.dat", "w") as g:
            g.writelines(f"{t} {v:.6e}\n" for t, v, _ in rep[k] if v > 0)
        with open(f"{tmp}/alive{k}.dat", "w") as g:
            g.writelines(f"{t} {a}\n" for t, _, a in rep[k])
        acc = ev[k] or [(sum(t for t, _ in v) / len(v), sum(a for _, a in v) / len(v)) for _, v in sorted(ep[k].items())]
        with open(f"{tmp}/acc{k}.dat", "w") as g:
            g.writelines(f"{t} {a}\n" for t, a in acc)
PY

plot() { # name ylabel logscale prefix key-position
    local name=$1 ylabel=$2 log=$3 prefix=$4 key=$5 cmd="" sep=""
    while IFS=$'\t' read -r k label; do
        [ -s "$tmp/$prefix$k.dat" ] || continue
        cmd+="$sep'$tmp/$prefix$k.dat' using 1:2 with lines lw 2 title '${label//\'/}' noenhanced"
        sep=", "
    done <"$tmp/labels.txt"
    [ -n "$cmd" ] || return 0
    gnuplot <<GP
set terminal svg size 720,420 dynamic font 'Helvetica,12' background '#ffffff'
set output '$dir/$name.svg'
set title '${title//\'/}' noenhanced
set xlabel 'virtual time (s)'
set ylabel '$ylabel'
set key $key
set grid
$( [ "$log" = 1 ] && echo "set logscale y; set format y '%.0e'" )
plot $cmd
GP
    echo "$dir/$name.svg"
}
plot consensus "consensus variance" 1 cons "top right"
plot accuracy "mean test accuracy" 0 acc "bottom right"
# Nodes up only when it changes.
if awk '{print $2}' "$tmp"/alive*.dat | sort -u | awk 'END { exit NR <= 1 }'; then plot alive "nodes up" 0 alive "bottom right"; fi

#!/bin/bash
# Soak test (not in CI): NODES nodes train together for MINUTES minutes under
# AddressSanitizer+UBSan while a random node is SIGKILLed every 10-30 s and
# restarted 1-3 s later from its checkpoint directory (same identity). Then
# every node is stopped with SIGTERM and its last checkpoint evaluated.
#
# Reports (one JSON line at the end):
#   crashes            nodes that died without being killed by us
#   sanitizer_reports  ASan/UBSan/LSan reports in the nodes' logs
#   corrupt_ckpts      checkpoints `murmur inspect` refused, checked after every kill and at the end
#   rss_*              mean RSS of a running node: median over the 2nd minute vs over the last minute
#   min_acc, max_acc   test accuracy of the final checkpoints
# Each node trains EPOCHS epochs over its shard (the cosine schedule ends
# there), then leaves; one that ends by itself with status 0 after printing
# its final line has finished, and is not restarted. Size EPOCHS so the nodes
# finish near the end of the soak (60 suits 8 ASan nodes on 2 cores).
# Usage: tools/soak.sh [--minutes 10] [--nodes 8] [--epochs 60] [--no-asan] [--seed S]
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
minutes=10 nodes=8 asan=1 seed=$$ epochs=60
while [ $# -gt 0 ]; do
    case "$1" in
    --minutes) minutes=$2; shift 2 ;;
    --nodes) nodes=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --no-asan) asan=0; shift ;;
    --seed) seed=$2; shift 2 ;;
    *) echo "usage: $0 [--minutes M] [--nodes N] [--epochs E] [--no-asan] [--seed S]" >&2; exit 2 ;;
    esac
done
RANDOM=$seed
if [ $asan = 1 ]; then
    build="$root/build-asan"
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMM_SANITIZE=address >/dev/null || exit 1
else
    build="$root/build"
    cmake -S "$root" -B "$build" >/dev/null || exit 1
fi
cmake --build "$build" --target murmur -j2 >/dev/null || exit 1
murmur="$build/murmur"
work=$(mktemp -d /tmp/murmur-soak-XXXXXX)
echo "soak: $nodes nodes, $minutes min, asan=$asan, seed $seed, in $work" >&2
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:log_path=$work/asan"
export UBSAN_OPTIONS="print_stacktrace=1:log_path=$work/ubsan"

base=$((20000 + RANDOM % 20000))
declare -a pid finished
start_node() { # $1 = index
    local i=$1 boots=()
    for j in 0 1 2; do [ $j -ne "$i" ] && [ $j -lt "$nodes" ] && boots+=(--bootstrap "127.0.0.1:$((base + j))"); done
    "$murmur" train --model mlp --epochs "$epochs" --shard "$i/$nodes" --listen "127.0.0.1:$((base + i))" \
        "${boots[@]}" --checkpoint-dir "$work/n$i" --checkpoint-seconds 5 --join-timeout 30 --quiet --json \
        >> "$work/n$i.out" 2>> "$work/n$i.log" &
    pid[$i]=$!
}
corrupt=0
check_ckpt() { # $1 = index
    local f="$work/n$1/node.safetensors"
    if [ -f "$f" ] && ! "$murmur" inspect "$f" > /dev/null 2>> "$work/corrupt.log"; then
        corrupt=$((corrupt + 1))
        echo "soak: node $1: checkpoint refused" >&2
    fi
}
crashes=0
reap_unexpected() { # nodes that exited although we did not kill them
    for i in $(seq 0 $((nodes - 1))); do
        if [ -z "${finished[$i]:-}" ] && ! kill -0 "${pid[$i]}" 2>/dev/null; then
            wait "${pid[$i]}"; local st=$?
            if [ $st = 0 ] && grep -q '"event":"final"' "$work/n$i.out"; then
                echo "soak: node $i finished its epochs" >&2
                finished[$i]=1
                continue
            fi
            echo "soak: node $i (pid ${pid[$i]}) exited by itself with status $st; restarting" >&2
            crashes=$((crashes + 1))
            start_node "$i"
        fi
    done
}
rss_per_node() { # mean RSS of the running nodes, KiB
    local sum=0 cnt=0
    for i in $(seq 0 $((nodes - 1))); do
        [ -n "${finished[$i]:-}" ] && continue
        local kb; kb=$(awk '/^VmRSS/ {print $2}' "/proc/${pid[$i]}/status" 2>/dev/null)
        [ -n "$kb" ] && { sum=$((sum + kb)); cnt=$((cnt + 1)); }
    done
    echo $((cnt ? sum / cnt : 0))
}

for i in $(seq 0 $((nodes - 1))); do
    start_node "$i"
    [ "$i" = 0 ] && sleep 1
done
t0=$(date +%s)
end=$((t0 + minutes * 60))
next_kill=$((t0 + 10 + RANDOM % 21))
kills=0
: > "$work/rss.txt"
running() { for i in $(seq 0 $((nodes - 1))); do [ -z "${finished[$i]:-}" ] && echo "$i"; done; }
while [ "$(date +%s)" -lt $end ] && [ -n "$(running)" ]; do
    sleep 1
    now=$(date +%s)
    reap_unexpected
    echo "$((now - t0)) $(rss_per_node)" >> "$work/rss.txt"
    if [ "$now" -ge $next_kill ]; then
        live=($(running))
        v=${live[$((RANDOM % ${#live[@]}))]}
        kill -KILL "${pid[$v]}" 2>/dev/null
        wait "${pid[$v]}" 2>/dev/null
        kills=$((kills + 1))
        check_ckpt "$v"
        sleep $((1 + RANDOM % 3))
        start_node "$v"
        echo "soak: t=$((now - t0)) s: killed and restarted node $v (kill $kills)" >&2
        next_kill=$((now + 10 + RANDOM % 21))
    fi
done
echo "soak: stopping every node with SIGTERM" >&2
for i in $(running); do kill -TERM "${pid[$i]}" 2>/dev/null; done
for i in $(running); do
    for _ in $(seq 1 300); do kill -0 "${pid[$i]}" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "${pid[$i]}" 2>/dev/null; then
        echo "soak: node $i did not stop within 30 s of SIGTERM" >&2
        kill -KILL "${pid[$i]}"; crashes=$((crashes + 1))
    fi
    wait "${pid[$i]}"; st=$?
    [ $st -ne 0 ] && { echo "soak: node $i exited with status $st after SIGTERM" >&2; crashes=$((crashes + 1)); }
done
accs=()
for i in $(seq 0 $((nodes - 1))); do
    check_ckpt "$i"
    a=$("$murmur" eval "$work/n$i/node.safetensors" --json 2>/dev/null | sed -n 's/.*"test_acc":\([0-9.]*\).*/\1/p')
    accs+=("${a:-0}")
done
san=$(cat "$work"/asan.* "$work"/ubsan.* 2>/dev/null | grep -c -E "ERROR: (Address|Leak)Sanitizer|runtime error:")
san=$((san + $(cat "$work"/n*.log | grep -c -E "ERROR: (Address|Leak)Sanitizer|runtime error:")))
/usr/bin/python3 - "$work" "$minutes" "$nodes" "$kills" "$crashes" "$san" "$corrupt" "${accs[@]}" <<'PY'
import json, statistics, sys
work, minutes, nodes, kills, crashes, san, corrupt = sys.argv[1:8]
accs = [float(a) for a in sys.argv[8:]]
rows = [tuple(map(int, l.split())) for l in open(f"{work}/rss.txt") if l.strip()]
second = [r for t, r in rows if 60 <= t < 120]
last = [r for t, r in rows if t >= rows[-1][0] - 60]
m2, ml = (statistics.median(second) / 1024 if second else 0), (statistics.median(last) / 1024 if last else 0)
print(json.dumps({"soak": True, "minutes": int(minutes), "nodes": int(nodes), "kills": int(kills),
                  "crashes": int(crashes), "sanitizer_reports": int(san), "corrupt_ckpts": int(corrupt),
                  "rss_per_node_minute2_mib": round(m2, 1), "rss_per_node_last_minute_mib": round(ml, 1),
                  "rss_growth": round(ml / m2 - 1, 3) if m2 else None,
                  "min_acc": min(accs), "max_acc": max(accs), "dir": work}))
PY

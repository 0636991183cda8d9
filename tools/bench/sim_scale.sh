#!/bin/bash
# Simulator scale: the surrogate workload (dim 16, one exchange per node per
# 1 s cycle, 30 cycles) at 10^4, 10^5 (and 10^6 with --big) nodes, every node
# a real gossip core (Noise sessions, AEAD frames, msgpack, bandwidth and
# latency model). Reports wall time, peak RSS, RSS per node, events,
# events/s and handshakes next to PeerSim 1.0.5's averaging examples, as
# measured on this machine (../shared/bench/README.md, "What they measured
# here"; quoted below as constants).
#
#   tools/bench/sim_scale.sh [--sizes 10000,100000] [--big] [--timeout S] [--no-sig-cache]
#
# One JSON line per size on stdout; progress on stderr. Each run is bounded
# by --timeout seconds (default 900); a run cut off reports "timed_out".
# The machine's state is measured in the same invocation: libsodium's
# Ed25519 verifications/s (../shared/bench/sodium_bench, built into
# build/peers if missing) next to the 24,000/s the peers' README measured on
# a quiet machine, and the session set-up cost (build/tools/session_bench),
# from which the CPU time of the run's handshakes is estimated.
set -euo pipefail
top="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
murmur="$top/build/murmur"
sizes="10000,100000"
limit=900
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
    --sizes) sizes="$2"; shift 2 ;;
    --big) sizes="$sizes,1000000"; shift ;;
    --timeout) limit="$2"; shift 2 ;;
    --no-sig-cache) extra+=(--no-sig-cache); shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "sim_scale.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ -x "$murmur" ] && [ -x "$top/build/tools/session_bench" ] ||
    cmake --build "$top/build" -j"$(nproc)" --target murmur session_bench >&2
shared="${MM_SHARED:-$top/../shared}/bench"
[ -x "$top/build/peers/sodium_bench" ] || make -s -C "$shared" O="$top/build/peers" >&2 || true
verify=null
if [ -x "$top/build/peers/sodium_bench" ]; then
    verify=$("$top/build/peers/sodium_bench" 2>/dev/null | awk -F'|' '/crypto_sign_verify_detached/ {gsub(/ /, "", $3); print $3}')
    verify=${verify:-null}
fi
setup=$("$top/build/tools/session_bench" --sessions 300)
us_side=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["us_per_handshake_side_sig_cached"])' "$setup")
echo "sim_scale: Ed25519 verify $verify/s now (24000/s on a quiet machine); $setup" >&2

# PeerSim 1.0.5, averaging example, 30 cycles (../shared/bench/README.md).
peersim() { # nodes -> JSON fragment
    case "$1" in
    100000) echo '"peersim_ed_s":8.4,"peersim_ed_mib":140,"peersim_cd_s":1.7,"peersim_cd_mib":82' ;;
    1000000) echo '"peersim_ed_s":180,"peersim_ed_mib":610,"peersim_cd_s":27,"peersim_cd_mib":448' ;;
    *) echo '"peersim_ed_s":null,"peersim_ed_mib":null,"peersim_cd_s":null,"peersim_cd_mib":null' ;;
    esac
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
IFS=, read -r -a list <<< "$sizes"
for n in "${list[@]}"; do
    f="$tmp/scale_$n.yaml"
    cat > "$f" <<YAML
name: scale-$n
nodes: $n
dim: 16
duration: 30
period: 1
latency: 20
jitter: 2
report_every: 10
bootstrap: random
YAML
    echo "sim_scale: $n nodes, 30 cycles (limit ${limit} s)" >&2
    rc=0
    timeout "$limit" /usr/bin/time -v "$murmur" sim "$f" --quiet "${extra[@]}" > "$tmp/out.jsonl" 2> "$tmp/err" || rc=$?
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, a, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + a[i]; print s}' "$tmp/err")
    cpu=$(awk -F': ' '/User time/ {u = $2} /System time/ {s = $2} END {print u + s}' "$tmp/err")
    rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tmp/err")
    sum=$(grep '"event":"summary"' "$tmp/out.jsonl" || true)
    if [ "$rc" -ne 0 ] || [ -z "$sum" ]; then
        echo "{\"bench\":\"sim_scale\",\"nodes\":$n,\"timed_out\":true,\"rc\":$rc,\"limit_s\":$limit,$(peersim "$n")}"
        continue
    fi
    python3 - "$n" "${wall:-0}" "${cpu:-0}" "${rss_kb:-0}" "$sum" "$(peersim "$n")" "${#extra[@]}" "$verify" "$us_side" <<'PY'
import json, sys
n, wall, cpu, rss_kb = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
s = json.loads(sys.argv[5])
peer = json.loads("{" + sys.argv[6] + "}")
out = {"bench": "sim_scale", "nodes": n, "cycles": 30, "dim": 16, "sig_cache": sys.argv[7] == "0",
       "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mib": round(rss_kb / 1024, 1),
       "rss_bytes_per_node": round(rss_kb * 1024 / n), "core_mib_peak": s["core_mib_peak"],
       "events": s["events"], "events_per_s": round(s["events"] / wall) if wall else None,
       "handshakes": s.get("handshakes"), "handshakes_failed": s.get("handshakes_failed"),
       "connects": s["connects"], "exchanges_ok": s["exchanges_ok"], "sessions_per_node": s["sessions"],
       "view": s["view"], "consensus_var": s["consensus_var"]}
hs = s.get("handshakes") or 0
out["handshake_cpu_s_est"] = round(hs * float(sys.argv[9]) / 1e6, 1)  # sides x session_bench's cost per side
out["us_per_handshake_side"] = float(sys.argv[9])
out["ed25519_verify_per_s_now"] = None if sys.argv[8] == "null" else int(sys.argv[8])
out["ed25519_verify_per_s_quiet"] = 24000
out.update(peer)
if peer["peersim_ed_s"]:
    out["vs_peersim_ed_time"] = round(wall / peer["peersim_ed_s"], 2)
    out["vs_peersim_ed_rss"] = round(rss_kb / 1024 / peer["peersim_ed_mib"], 2)
print(json.dumps(out))
PY
done

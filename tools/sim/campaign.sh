#!/bin/bash
# A long fault campaign (docs/simulator.md, "Fault campaigns"): N seeds
# (default 10000) of tests/sim/campaign.yaml from FIRST (default 1000000),
# split over JOBS processes (default: the CPUs). Prints one JSON line:
# {"seeds":..,"failed":..,"failed_seeds":[..],"wall_s":..}; each failing seed's
# replay command goes to stderr. Exits 1 if any seed failed.
# usage: tools/sim/campaign.sh [N] [FIRST] [JOBS]   (MURMUR=path/to/murmur)
set -u
n=${1:-10000}; first=${2:-1000000}; jobs=${3:-$(nproc)}
root=$(cd "$(dirname "$0")/../.." && pwd)
murmur=${MURMUR:-$root/build/murmur}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
start=$(date +%s.%N)
per=$(( (n + jobs - 1) / jobs ))
for ((j = 0; j < jobs; j++)); do
    lo=$((first + j * per)); cnt=$per
    (( lo + cnt > first + n )) && cnt=$((first + n - lo))
    (( cnt <= 0 )) && continue
    "$murmur" sim "$root/tests/sim/campaign.yaml" --campaign "$cnt" --seed "$lo" --quiet >"$tmp/$j.json" 2>"$tmp/$j.err" &
done
wait
cat "$tmp"/*.err >&2
end=$(date +%s.%N)
failed_seeds=$(grep -ho 'seed [0-9]* FAILED' "$tmp"/*.err | awk '{print $2}' | sort -n | paste -sd, -)
awk -v wall="$(echo "$end - $start" | bc)" -v fs="$failed_seeds" '
    /"event":"campaign"/ { match($0, /"seeds":[0-9]+/); s += substr($0, RSTART + 8, RLENGTH - 8)
                           match($0, /"failed":[0-9]+/); f += substr($0, RSTART + 9, RLENGTH - 9)
                           match($0, /"violations":[0-9]+/); v += substr($0, RSTART + 13, RLENGTH - 13) }
    END { printf "{\"seeds\":%d,\"failed\":%d,\"violations\":%d,\"failed_seeds\":[%s],\"wall_s\":%.1f}\n", s, f, v, fs, wall
          exit f > 0 }' "$tmp"/*.json

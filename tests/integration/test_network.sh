#!/bin/bash
# Multi-process integration tests: real `murmur train` nodes on 127.0.0.1 that join, average,
# crash, restart, refuse strangers and finish. Every scenario prints PASS or FAIL with a reason;
# the script exits 1 if any failed.
# Usage: tests/integration/test_network.sh PATH/TO/murmur   (ctest runs it as "integration_network")
#
# Rules kept here: ports are never fixed (--listen 127.0.0.1:0, the real port is read from
# CHECKPOINT_DIR/status.json); every wait is bounded; only the processes this script started are
# killed (by PID, in the EXIT trap too); runs are small (a shard of the data, --throttle to make a
# run last some seconds without more data) so the whole script takes about a minute on 2 cores.
set -uo pipefail

if [ $# -ne 1 ] || [ ! -x "$1" ]; then
    echo "usage: $0 PATH/TO/murmur (an executable)" >&2
    exit 2
fi
murmur="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
data_dir="${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}"
export OPENBLAS_NUM_THREADS=1

if ! ls "$data_dir" 2>/dev/null | grep -q '^t10k-images'; then
    echo "SKIP: no Fashion-MNIST at $data_dir (set FMNIST_DIR)"
    exit 0
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/murmur-net.XXXXXX")"
declare -A live=() # pid -> log prefix, for every process started and not yet reaped

cleanup() { # (stderr: not bash's "Killed" notices)
    local pid
    for pid in "${!live[@]}"; do
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ -n "${MM_TEST_KEEP:-}" ]; then echo "logs kept in $tmp" >&2; else rm -rf "$tmp"; fi
} 2>/dev/null
trap cleanup EXIT
trap 'exit 130' INT TERM

t_script=$SECONDS
failed=0
passed=0
reason=
logs=()

# ------------------------------------------------------------------ helpers

# why MSG: record the reason a scenario failed (returns 1, so `cond || why "..." || return 1`).
why() {
    reason="$*"
    return 1
}

# spawn LOG ARGS...: start `murmur ARGS...` in the background, stdout to LOG.out, stderr appended to
# LOG.err; its PID is left in $spawned.
spawn() {
    local log="$1"
    shift
    "$murmur" "$@" >"$log.out" 2>>"$log.err" &
    spawned=$!
    live[$spawned]="$log"
    logs+=("$log")
}

# node NAME ARGS...: `murmur train` with checkpoint dir $tmp/NAME, metrics $tmp/NAME.jsonl, logs
# $tmp/NAME.{out,err}. PID in $spawned.
node() {
    local name="$1"
    shift
    spawn "$tmp/$name" train --listen 127.0.0.1:0 --checkpoint-dir "$tmp/$name" \
        --metrics "$tmp/$name.jsonl" --data "$data_dir" "$@"
}

# exited PID: true once the process is gone or a zombie (waiting to be reaped).
exited() {
    local st
    st="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 0
    [ -z "$st" ] || [ "$st" = Z ] || [ "$st" = X ]
}

# reap PID SECONDS: wait at most SECONDS for PID to exit; its exit status is left in $rc
# (124 when it did not exit in time: then it is killed with SIGKILL).
reap() {
    local pid="$1" deadline=$((SECONDS + $2))
    while ! exited "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    if exited "$pid"; then
        wait "$pid" 2>/dev/null
        rc=$?
    else
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        rc=124
    fi
    unset "live[$pid]"
} 2>/dev/null # not bash's "Killed" notice for a node killed on purpose

# stop PID [SECONDS]: SIGTERM, then reap (SIGKILL after SECONDS, default 20).
stop() {
    kill -TERM "$1" 2>/dev/null
    reap "$1" "${2:-20}"
}

# wait_until SECONDS CMD...: run CMD every 0.2 s until it succeeds; false after SECONDS.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    while ! "$@"; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.2
    done
}

# field FILE KEY: a number or string value of "KEY" in a one-line JSON file.
field() {
    grep -o "\"$2\":\"\\?[^,\"}]*" "$1" 2>/dev/null | head -1 | sed 's/^"[^"]*":"\?//'
}

have_status() { [ -s "$1/status.json" ] && grep -q '"listen":"127.0.0.1:[1-9]' "$1/status.json"; }

# addr_of DIR: the address a running node listens on (from DIR/status.json; waits up to 60 s).
addr_of() {
    wait_until 60 have_status "$1" || return 1
    field "$1/status.json" listen
}

step_of() { field "$1/status.json" step; }

has_ok_exchange() { grep -q '"event":"exchange".*"ok":true' "$1" 2>/dev/null; }
has_file() { [ -s "$1" ]; }
has_text() { grep -qiE -- "$2" "$1" 2>/dev/null; }

# After line number N of FILE: a line matching RE?
after_line() { tail -n "+$(($2 + 1))" "$1" 2>/dev/null | grep -qE -- "$3"; }

# scenario NAME FUNCTION: run one scenario, print PASS/FAIL, then kill what it left running.
scenario() {
    local name="$1" fn="$2" t0=$SECONDS pid
    # MM_TEST_ONLY=N runs scenario N alone (a debugging aid; 8 needs 6's files).
    [ -z "${MM_TEST_ONLY:-}" ] || [[ "$name" == "$MM_TEST_ONLY "* ]] || return 0
    reason=
    logs=()
    if "$fn"; then
        passed=$((passed + 1))
        echo "PASS: $name${reason:+ ($reason)} [$((SECONDS - t0)) s]"
    else
        failed=$((failed + 1))
        echo "FAIL: $name: ${reason:-failed} [$((SECONDS - t0)) s]"
        local l
        for l in "${logs[@]}"; do
            [ -s "$l.err" ] && { echo "  --- ${l#"$tmp"/}.err (tail)"; tail -n 8 "$l.err" | sed 's/^/  | /'; }
            [ -s "$l.out" ] && { echo "  --- ${l#"$tmp"/}.out (tail)"; tail -n 3 "$l.out" | sed 's/^/  | /'; }
        done
    fi
    for pid in "${!live[@]}"; do reap "$pid" 0; done
}

# Largest L2 distance between the parameters of the given checkpoints, relative to their mean
# norm (murmur demo's "param_spread_rel"); plain python3, no numpy.
spread() {
    python3 - "$@" <<'EOF'
import array, json, math, struct, sys
def load(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    data, a = blob[8 + n:], array.array("f")
    for name in sorted(header):
        t = header[name]
        assert t["dtype"] == "F32", t["dtype"]
        b, e = t["data_offsets"]
        a.frombytes(data[b:e])
    if sys.byteorder != "little":
        a.byteswap()
    return a
ps = [load(p) for p in sys.argv[1:]]
zero = array.array("f", bytes(4 * len(ps[0])))
norm = sum(math.dist(p, zero) for p in ps) / len(ps)
d = max(math.dist(ps[i], ps[j]) for i in range(len(ps)) for j in range(i + 1, len(ps)))
print(f"{d / norm:.6f}")
EOF
}

# spread_below BOUND NOTE CHECKPOINTS...: their parameter spread is under BOUND (NOTE ends the failure
# message); the figure is appended to $reason. Without python3 it says so and passes.
spread_below() {
    local bound="$1" note="$2" rel
    shift 2
    if ! command -v python3 >/dev/null; then
        reason="${reason:+$reason; }spread not checked: no python3"
        return 0
    fi
    rel="$(spread "$@")" || why "could not read the checkpoints" || return 1
    awk -v r="$rel" -v b="$bound" 'BEGIN{exit !(r < b)}' ||
        why "parameter spread $rel of the norm (expected < $bound$note)" || return 1
    reason="${reason:+$reason, }parameter spread $rel of the norm"
}

# ---------------------------------------------------------------- scenarios

"$murmur" netkey --out "$tmp/net1.key" >/dev/null || { echo "FAIL: murmur netkey"; exit 1; }
"$murmur" netkey --out "$tmp/net2.key" >/dev/null || { echo "FAIL: murmur netkey"; exit 1; }
K1=(--network-key "$tmp/net1.key")

# 1. A, then B and C bootstrapping to A: all finish, agree on accuracy and parameters.
s_converge() {
    local a pa pb pc n acc lo=2 hi=-1
    node c1a --model mlp --epochs 2 --shard 0/3 --throttle 4 --json --quiet "${K1[@]}"
    pa=$spawned
    a="$(addr_of "$tmp/c1a")" || why "A wrote no status.json with its address" || return 1
    # B trains on the CPU behind a device's interface: snapshots and merges take the GPU's paths.
    node c1b --model mlp --epochs 2 --shard 1/3 --throttle 4 --json --quiet --device cpu-staged --bootstrap "$a" \
        "${K1[@]}"
    pb=$spawned
    node c1c --model mlp --epochs 2 --shard 2/3 --throttle 4 --json --quiet --bootstrap "$a" "${K1[@]}"
    pc=$spawned
    reap "$pa" 120 && [ "$rc" = 0 ] || why "A exited with status $rc" || return 1
    reap "$pb" 60 && [ "$rc" = 0 ] || why "B exited with status $rc" || return 1
    reap "$pc" 60 && [ "$rc" = 0 ] || why "C exited with status $rc" || return 1
    for n in c1a c1b c1c; do
        grep -q '^{"event":"final".*"test_acc":' "$tmp/$n.out" || why "$n printed no final JSON line" || return 1
        acc="$(grep '^{"event":"final"' "$tmp/$n.out" | tail -1 | grep -o '"test_acc":[0-9.]*' | cut -d: -f2)"
        has_ok_exchange "$tmp/$n.jsonl" || why "$n logged no successful exchange" || return 1
        lo="$(awk -v a="$acc" -v b="$lo" 'BEGIN{print (a<b)?a:b}')"
        hi="$(awk -v a="$acc" -v b="$hi" 'BEGIN{print (a>b)?a:b}')"
    done
    awk -v l="$lo" -v h="$hi" 'BEGIN{exit !(h - l <= 0.01)}' ||
        why "test accuracies differ by more than 1 point: $lo .. $hi" || return 1
    reason="accuracy $lo .. $hi"
    spread_below 0.05 "" "$tmp"/c1{a,b,c}/node.safetensors
}

# 2. B is killed (-9) mid-run: A trains on; B restarts from its checkpoint dir, rejoins, both finish.
s_restart() {
    local a pa pb s1 s2 mark
    node c2a --model mlp --epochs 2 --shard 0/2 --throttle 8 --checkpoint-seconds 1 --quiet "${K1[@]}"
    pa=$spawned
    a="$(addr_of "$tmp/c2a")" || why "A wrote no status.json with its address" || return 1
    node c2b --model mlp --epochs 2 --shard 1/4 --throttle 8 --checkpoint-seconds 1 --bootstrap "$a" "${K1[@]}"
    pb=$spawned
    wait_until 60 has_ok_exchange "$tmp/c2b.jsonl" || why "B made no successful exchange" || return 1
    wait_until 30 has_file "$tmp/c2b/node.safetensors" || why "B wrote no checkpoint" || return 1
    exited "$pa" && why "A finished before B was killed: make A's run longer" && return 1
    exited "$pb" && why "B finished before it could be killed: make B's run longer" && return 1
    kill -9 "$pb"
    reap "$pb" 10
    s1="$(step_of "$tmp/c2a")"
    sleep 2.5
    s2="$(step_of "$tmp/c2a")"
    exited "$pa" && why "A exited while B was dead" && return 1
    [ -n "$s1" ] && [ -n "$s2" ] && [ "$s2" -gt "$s1" ] ||
        why "A's step did not increase while B was dead ($s1 -> $s2)" || return 1
    mark="$(wc -l <"$tmp/c2a.jsonl")"
    node c2b --model mlp --epochs 2 --shard 1/4 --throttle 8 --checkpoint-seconds 1 --bootstrap "$a" "${K1[@]}"
    pb=$spawned
    wait_until 30 has_text "$tmp/c2b.err" "resumed from" ||
        why "restarted B did not say 'resumed from'" || return 1
    wait_until 60 after_line "$tmp/c2a.jsonl" "$mark" '"event":"(peer_up|exchange",.*"ok":true)' ||
        why "A saw no peer_up or successful exchange after B restarted" || return 1
    reap "$pa" 120
    [ "$rc" = 0 ] || why "A exited with status $rc" || return 1
    reap "$pb" 120
    [ "$rc" = 0 ] || why "restarted B exited with status $rc" || return 1
    reason="A: step $s1 -> $s2 while B was dead"
}

# 9. A peer that stops reading (SIGSTOP: SECURITY.md L4 with real processes): A's exchange with
#    it fails (progress rule or deadline), A's memory stays bounded, A trains on and finishes.
s_stalled_peer() {
    local a pa pb s1 s2 mark rss1 rss2
    node c9a --model mlp --epochs 2 --shard 0/2 --throttle 8 --quiet "${K1[@]}"
    pa=$spawned
    a="$(addr_of "$tmp/c9a")" || why "A wrote no status.json with its address" || return 1
    node c9b --model mlp --epochs 3 --shard 1/2 --throttle 8 --quiet --bootstrap "$a" "${K1[@]}"
    pb=$spawned
    wait_until 60 has_ok_exchange "$tmp/c9a.jsonl" || why "A made no successful exchange with B" || return 1
    exited "$pa" && why "A finished before B was stopped: make A's run longer" && return 1
    mark="$(wc -l <"$tmp/c9a.jsonl")"
    kill -STOP "$pb"
    rss1="$(awk '/^VmRSS/ {print $2}' "/proc/$pa/status")"
    s1="$(step_of "$tmp/c9a")"
    wait_until 60 after_line "$tmp/c9a.jsonl" "$mark" '"event":"(exchange",.*"ok":false|peer_down")' ||
        { kill -CONT "$pb"; why "A logged no failed exchange or peer_down within 60 s of B stopping"; return 1; }
    s2="$(step_of "$tmp/c9a")"
    rss2="$(awk '/^VmRSS/ {print $2}' "/proc/$pa/status")"
    kill -KILL "$pb"
    kill -CONT "$pb" 2>/dev/null
    reap "$pb" 10
    [ -n "$s1" ] && [ -n "$s2" ] && [ "$s2" -gt "$s1" ] ||
        why "A's step did not increase while B was stopped ($s1 -> $s2)" || return 1
    [ -n "$rss1" ] && [ -n "$rss2" ] && [ $((rss2 - rss1)) -lt 65536 ] ||
        why "A's RSS grew from ${rss1:-?} to ${rss2:-?} KiB while B was stopped" || return 1
    reap "$pa" 120
    [ "$rc" = 0 ] || why "A exited with status $rc" || return 1
    reason="A: step $s1 -> $s2, RSS $rss1 -> $rss2 KiB while B was stopped"
}

# 3. Wrong network key: both sides show the refusal; B gives up with a clear message.
s_wrong_key() {
    local a pa pb
    node c3a --model mlp --epochs 3 --shard 0/2 --throttle 8 "${K1[@]}"
    pa=$spawned
    a="$(addr_of "$tmp/c3a")" || why "A wrote no status.json with its address" || return 1
    node c3b --model mlp --epochs 1 --shard 1/30 --bootstrap "$a" --join-timeout 3 \
        --network-key "$tmp/net2.key"
    pb=$spawned
    reap "$pb" 30
    [ "$rc" != 124 ] || why "B did not give up within 30 s (--join-timeout 3): hung, killed" || return 1
    [ "$rc" != 0 ] || why "B exited 0 with the wrong network key" || return 1
    has_text "$tmp/c3b.err" "network.key|could not join" ||
        why "B's message mentions neither the network key nor 'could not join'" || return 1
    reason="B exited with status $rc"
    wait_until 10 has_text "$tmp/c3a.err" "refused:" || wait_until 1 has_text "$tmp/c3a.jsonl" '"event":"refused"' ||
        why "A shows no refusal (no 'refused:' line, no refused event)" || return 1
    stop "$pa"
    [ "$rc" = 0 ] || why "A exited with status $rc after SIGTERM" || return 1
}

# 4. Different model (mlp vs cnn) on one network key: both sides refuse, naming the fingerprint.
s_other_model() {
    local a pa pb
    node c4a --model mlp --epochs 3 --shard 0/2 --throttle 8 "${K1[@]}"
    pa=$spawned
    a="$(addr_of "$tmp/c4a")" || why "A wrote no status.json with its address" || return 1
    node c4b --model cnn --epochs 1 --shard 0/50 --bootstrap "$a" --join-timeout 3 "${K1[@]}"
    pb=$spawned
    wait_until 40 has_text "$tmp/c4a.err" "refused.*(fingerprint|different model)" ||
        why "A logged no refusal naming the fingerprint or a different model" || return 1
    wait_until 20 has_text "$tmp/c4b.err" "refused.*(fingerprint|different model)" ||
        why "B (cnn) logged no refusal naming the fingerprint or a different model" || return 1
    stop "$pb" 5 # B's own fate (gives up, or trains alone) is not checked here
    stop "$pa"
    [ "$rc" = 0 ] || why "A exited with status $rc after SIGTERM" || return 1
}

# 5. A late joiner first syncs the network's parameters, then trains.
s_late_join() {
    local a pa pc sync_line step_line
    node c5a --model mlp --epochs 2 --shard 0/2 --throttle 8 --quiet "${K1[@]}"
    pa=$spawned
    a="$(addr_of "$tmp/c5a")" || why "A wrote no status.json with its address" || return 1
    sleep 3
    exited "$pa" && why "A finished before C joined" && return 1
    node c5c --model mlp --epochs 1 --shard 1/10 --throttle 4 --quiet --bootstrap "$a" "${K1[@]}"
    pc=$spawned
    reap "$pc" 90
    [ "$rc" = 0 ] || why "C exited with status $rc" || return 1
    sync_line="$(grep -n '"event":"synced"' "$tmp/c5c.jsonl" | head -1 | cut -d: -f1)"
    step_line="$(grep -n '"event":"step"' "$tmp/c5c.jsonl" | head -1 | cut -d: -f1)"
    [ -n "$sync_line" ] || why "C's metrics have no synced event" || return 1
    [ -n "$step_line" ] || why "C's metrics have no step event" || return 1
    if [ "$sync_line" -gt "$step_line" ]; then # say what C saw meanwhile, for the next one to debug
        why "C's first step (line $step_line) came before synced (line $sync_line); C's events before it:" \
            "$(head -n "$step_line" "$tmp/c5c.jsonl" | grep -o '"event":"[a-z_]*"\|"text":"[^"]*"' | cut -c1-60 |
                sort | uniq -c | sort -rn | head -6 | tr -s ' \n' ' ')"
        return 1
    fi
    stop "$pa"
    [ "$rc" = 0 ] || why "A exited with status $rc after SIGTERM" || return 1
}

# 6. SIGTERM: a clean exit (0) within 15 s, with a checkpoint that eval and inspect accept.
s_sigterm() {
    local pa
    node c6a --model mlp --epochs 50 --shard 0/4 --throttle 2 --quiet "${K1[@]}"
    pa=$spawned
    addr_of "$tmp/c6a" >/dev/null || why "A wrote no status.json" || return 1
    sleep 3
    exited "$pa" && why "A exited before SIGTERM" && return 1
    kill -TERM "$pa"
    reap "$pa" 15
    [ "$rc" != 124 ] || why "no exit within 15 s of SIGTERM" || return 1
    [ "$rc" = 0 ] || why "exit status $rc after SIGTERM" || return 1
    timeout 120 "$murmur" eval --data "$data_dir" "$tmp/c6a/node.safetensors" >"$tmp/c6.eval" 2>&1 ||
        why "murmur eval of the checkpoint failed: $(head -c 300 "$tmp/c6.eval")" || return 1
    timeout 60 "$murmur" inspect "$tmp/c6a/node.safetensors" >"$tmp/c6.inspect" 2>&1 ||
        why "murmur inspect of the checkpoint failed: $(head -c 300 "$tmp/c6.inspect")" || return 1
}

# 7. A truncated checkpoint is refused, by the node and by eval.
s_corrupt() {
    [ -s "$tmp/c6a/node.safetensors" ] || why "needs scenario 6's checkpoint" || return 1
    cp -a "$tmp/c6a" "$tmp/c7"
    rm -f "$tmp/c7/status.json"
    truncate -s 100 "$tmp/c7/node.safetensors"
    local pid
    node c7 --model mlp --epochs 1 --shard 0/30 "${K1[@]}"
    pid=$spawned
    reap "$pid" 60
    [ "$rc" != 124 ] || why "the node did not exit within 60 s" || return 1
    [ "$rc" != 0 ] || why "the node started on a truncated checkpoint (exit 0)" || return 1
    has_text "$tmp/c7.err" "node\.safetensors" || why "the message does not name the file" || return 1
    rc=0
    timeout 60 "$murmur" eval --data "$data_dir" "$tmp/c7/node.safetensors" >"$tmp/c7.eval" 2>&1 || rc=$?
    [ "$rc" = 1 ] || why "murmur eval of the truncated file exited $rc, expected 1" || return 1
}

# 8. An identity key readable by others is refused.
s_key_mode() {
    [ -s "$tmp/c6a/identity.key" ] || why "needs scenario 6's checkpoint dir" || return 1
    cp -a "$tmp/c6a" "$tmp/c8"
    rm -f "$tmp/c8/status.json"
    chmod 644 "$tmp/c8/identity.key"
    local pid
    node c8 --model mlp --epochs 1 --shard 0/30 "${K1[@]}"
    pid=$spawned
    reap "$pid" 60
    [ "$rc" != 124 ] || why "the node did not exit within 60 s" || return 1
    [ "$rc" != 0 ] || why "the node started with a 0644 identity key (exit 0)" || return 1
    has_text "$tmp/c8.err" "readable by others" || why "the message does not say 'readable by others'" || return 1
}

# 10. A fast node and a slow one (a GPU among CPUs): the fast one, its epochs done, keeps averaging
#     while the slow one still trains (--linger), so both end at the same parameters. With
#     MM_TEST_LINGER=0 in the environment, A runs --linger 0 instead: the control, which must fail.
s_linger() {
    local a pa pb
    node c10a --model mlp --epochs 3 --shard 0/2 --throttle 1 --linger "${MM_TEST_LINGER:-60}" "${K1[@]}"
    pa=$spawned
    a="$(addr_of "$tmp/c10a")" || why "A wrote no status.json with its address" || return 1
    node c10b --model mlp --epochs 1 --shard 1/2 --throttle 12 --quiet --bootstrap "$a" "${K1[@]}"
    pb=$spawned
    reap "$pa" 120 && [ "$rc" = 0 ] || why "A exited with status $rc" || return 1
    reap "$pb" 120 && [ "$rc" = 0 ] || why "B exited with status $rc" || return 1
    spread_below 0.01 ": A should end at B's final parameters" "$tmp"/c10{a,b}/node.safetensors || return 1
    has_text "$tmp/c10a.err" "trained: averaging while 1 partner" ||
        why "A did not say it was averaging while its partner still trained" || return 1
}

scenario "1 three nodes converge" s_converge
scenario "2 kill -9 and restart" s_restart
scenario "3 wrong network key refused" s_wrong_key
scenario "4 different model refused" s_other_model
scenario "5 late joiner syncs first" s_late_join
scenario "6 graceful SIGTERM" s_sigterm
scenario "7 corrupt checkpoint refused" s_corrupt
scenario "8 key file mode 0644 refused" s_key_mode
scenario "9 a peer that stops reading" s_stalled_peer
scenario "10 a fast node lingers for a slow one" s_linger

echo "$passed passed, $failed failed, $((SECONDS - t_script)) s"
[ "$failed" = 0 ]

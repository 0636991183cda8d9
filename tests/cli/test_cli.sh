#!/bin/bash
# End-to-end checks of murmur's command line: exit codes (0 ok, 1 failure, 2 usage error), the
# messages users see, and a short real training run -> eval -> inspect -> corrupted checkpoint.
# Usage: tests/cli/test_cli.sh PATH/TO/murmur      (ctest runs it as the test "cli")
set -euo pipefail

if [ $# -ne 1 ] || [ ! -x "$1" ]; then
    echo "usage: $0 PATH/TO/murmur (an executable)" >&2
    exit 2
fi
murmur="$1"
# Each command gets this long (MM_CLI_TIMEOUT: sanitizer builds run several times slower).
limit="${MM_CLI_TIMEOUT:-120}"
data_dir="${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/murmur-cli.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

failures=0
checks=0
out=
err=
rc=0

# run ARGS...: run murmur (bounded), capturing stdout in $out, stderr in $err, the status in $rc.
run() {
    rc=0
    timeout "$limit" "$murmur" "$@" >"$tmp/stdout" 2>"$tmp/stderr" || rc=$?
    out="$(cat "$tmp/stdout")"
    err="$(cat "$tmp/stderr")"
}

fail() {
    failures=$((failures + 1))
    echo "FAIL: $*" >&2
    echo "      stdout: $(printf '%s' "$out" | head -c 400)" >&2
    echo "      stderr: $(printf '%s' "$err" | head -c 400)" >&2
}

# expect CODE [TEXT] -- ARGS...: murmur ARGS exits with CODE and, if TEXT is given, prints it
# (case-insensitive) on stdout or stderr.
expect() {
    local code="$1" text=""
    shift
    if [ "$1" != -- ]; then
        text="$1"
        shift
    fi
    shift # --
    checks=$((checks + 1))
    run "$@"
    if [ "$rc" = 124 ]; then
        fail "murmur $* timed out after $limit s"
    elif [ "$rc" != "$code" ]; then
        fail "murmur $* exited $rc, expected $code"
    elif [ -n "$text" ] && ! printf '%s\n%s\n' "$out" "$err" | grep -qiF -- "$text"; then
        fail "murmur $* exited $rc as expected but did not print '$text'"
    fi
}

# expect_err CODE TEXT -- ARGS...: as expect, but TEXT must be on stderr.
expect_err() {
    local code="$1" text="$2"
    shift 3
    checks=$((checks + 1))
    run "$@"
    if [ "$rc" = 124 ]; then
        fail "murmur $* timed out after $limit s"
    elif [ "$rc" != "$code" ]; then
        fail "murmur $* exited $rc, expected $code"
    elif ! printf '%s\n' "$err" | grep -qiF -- "$text"; then
        fail "murmur $* exited $rc as expected but its stderr does not mention '$text'"
    fi
}

# --- top level
expect 2 --
expect 0 usage -- --help
expect_err 2 "unknown command" -- frobnicate

# --- per command help
for cmd in train eval inspect; do
    expect 0 usage -- "$cmd" --help
done

# --- argument errors (exit 2)
expect_err 2 "unknown option" -- train --solo --bogus
expect_err 2 "out of range" -- train --solo --epochs 0
expect_err 2 "not an integer" -- train --solo --epochs abc
expect 2 -- train --solo --model resnet
expect 2 -- train --solo --lr -1
expect 2 -- train --solo --shard 3/2
expect_err 1 "expected cpu, cuda:N, auto or cpu-staged" -- train --solo --device tpu --bench-batches 1
expect_err 1 "needs --device cuda:N" -- train --solo --tf32 --bench-batches 1
expect_err 2 "expected up to 16 of cpu, cuda:N, auto" -- demo --devices cpu,tpu
expect_err 2 "expected up to 16 of cpu, cuda:N, auto" -- demo --devices ,
expect_err 2 "out of range" -- train --solo --linger -1
expect_err 2 "out of range" -- demo --average-seconds -1
# The GPU benchmark's wide model and the CPU behind a device's interface train on any machine.
expect 0 '"model":"mlp4k"' -- train --solo --model mlp4k --bench-batches 1 --bench-reps 1 --batch 16
expect 0 '"backend":"cpu-staged"' -- train --solo --device cpu-staged --epochs 1 --json --shard 0/20
expect_err 2 "out of range" -- exchange-bench --rounds 0
expect 0 '"event":"exchange_bench"' -- exchange-bench --params 4096 --rounds 6 --encoding q8
# IPv6: two nodes on [::1], in a network namespace of our own (tests touch no
# other interface); skipped where namespaces cannot be made (no root, no ip)
if unshare -n true 2>/dev/null && command -v ip >/dev/null; then
    checks=$((checks + 1))
    rc=0
    out="$(timeout "$limit" unshare -n sh -c 'ip link set lo up && "$0" exchange-bench --listen "[::1]:0" --params 4096 --rounds 2' "$murmur" 2>"$tmp/stderr")" || rc=$?
    err="$(cat "$tmp/stderr")"
    if [ "$rc" != 0 ] || [[ "$out" != *'"event":"exchange_bench"'* ]]; then
        fail "exchange-bench over [::1] in a network namespace: status $rc"
    fi
else
    echo "test_cli: no network namespace here; the IPv6 check is skipped" >&2
fi
expect_err 2 "[IPV6]:PORT" -- train --listen "[::1:0" --epochs 1
expect_err 2 "add --advertise" -- train --listen 0.0.0.0:0 --epochs 1
expect_err 2 "--advertise 'nope'" -- train --advertise nope --epochs 1
# --device auto: the GPU where there is one, else the CPU with a message saying why
checks=$((checks + 1))
run train --solo --device auto --bench-batches 2 --bench-reps 1 --quiet
if [ "$rc" != 0 ] || { ! nvidia-smi -L >/dev/null 2>&1 && [[ "$err" != *"no usable GPU"* ]]; }; then
    fail "train --device auto: status $rc, expected 0 and (without a GPU) 'no usable GPU'"
fi
expect_err 2 "missing" -- eval

# --- runtime errors (exit 1), naming what failed
expect_err 1 /nonexistent -- train --solo --data /nonexistent
expect_err 1 /nonexistent.safetensors -- eval /nonexistent.safetensors
head -c 4096 /dev/urandom >"$tmp/garbage.safetensors"
printf 'this is not a checkpoint' | dd of="$tmp/garbage.safetensors" conv=notrunc status=none
checks=$((checks + 1))
run inspect "$tmp/garbage.safetensors"
if [ "$rc" != 1 ]; then
    fail "murmur inspect <garbage> exited $rc, expected 1"
elif [ -z "$err" ]; then
    fail "murmur inspect <garbage> exited 1 without a message on stderr"
fi

# --- certs mode: owner key, certificates, revocation lists, and what train says of bad ones
expect 0 "owner public key" -- owner-keygen --out "$tmp/owner.key"
owner_pub="$(printf '%s\n' "$out" | sed -n 's/^owner public key.*: \([0-9a-f]\{64\}\)$/\1/p')"
expect 0 "public key" -- keygen --out "$tmp/member.key"
expect 0 -- keygen --out "$tmp/other.key"
expect 0 -- owner-keygen --out "$tmp/owner2.key"
expect_err 2 "unknown subcommand" -- cert frobnicate
expect_err 2 "required" -- cert issue --member-key "$tmp/member.key" --out "$tmp/m.cert"
expect_err 2 "not a public key" -- cert issue --owner "$tmp/owner.key" --member-pub 1234 --out "$tmp/m.cert"
expect_err 2 "out of range" -- cert issue --owner "$tmp/owner.key" --member-key "$tmp/member.key" --days 31 --out "$tmp/m.cert"
expect_err 1 "/nonexistent.key" -- cert issue --owner /nonexistent.key --member-key "$tmp/member.key" --out "$tmp/m.cert"
expect 0 "certificate serial 42" -- cert issue --owner "$tmp/owner.key" --member-key "$tmp/member.key" --serial 42 --out "$tmp/m.cert"
expect 0 -- cert issue --owner "$tmp/owner2.key" --member-key "$tmp/member.key" --out "$tmp/foreign.cert"
expect_err 2 "at least one" -- cert revoke --owner "$tmp/owner.key" --out "$tmp/rev.lst"
expect 0 "version 1 (1 entries)" -- cert revoke --owner "$tmp/owner.key" --serial 7 --out "$tmp/rev.lst"
expect 0 "version 2 (2 entries)" -- cert revoke --owner "$tmp/owner.key" --from "$tmp/rev.lst" --serial 42 --out "$tmp/rev2.lst"
expect_err 1 "not signed by this owner key" -- cert revoke --owner "$tmp/owner2.key" --from "$tmp/rev.lst" --serial 1 --out "$tmp/x.lst"
expect_err 1 "not a murmur-revocations-v1 file" -- cert revoke --owner "$tmp/owner.key" --from "$tmp/m.cert" --serial 1 --out "$tmp/x.lst"
if [ ${#owner_pub} != 64 ]; then
    fail "murmur owner-keygen printed no 64-digit public key"
else
    expect_err 2 "--owner-pub needs --cert" -- train --owner-pub "$owner_pub" --key "$tmp/member.key"
    expect_err 2 "give --owner-pub" -- train --cert "$tmp/m.cert" --key "$tmp/member.key"
    expect_err 1 "not a public key" -- train --owner-pub xyz --cert "$tmp/m.cert" --key "$tmp/member.key"
    expect_err 1 "not a murmur-cert-v1 file" -- train --owner-pub "$owner_pub" --cert "$tmp/rev.lst" --key "$tmp/member.key"
    expect_err 1 "is the certificate of member" -- train --owner-pub "$owner_pub" --cert "$tmp/m.cert" --key "$tmp/other.key"
    expect_err 1 "not signed by the network owner" -- train --owner-pub "$owner_pub" --cert "$tmp/foreign.cert" --key "$tmp/member.key"
    expect_err 1 "revokes this node's certificate (serial 42)" -- train --owner-pub "$owner_pub" --cert "$tmp/m.cert" --key "$tmp/member.key" --revocations "$tmp/rev2.lst"
fi

# --- a short real run: train 1 epoch, eval, inspect, then a truncated checkpoint
if [ -d "$data_dir" ]; then
    ckpt="$tmp/m.safetensors"
    checks=$((checks + 1))
    run train --solo --model mlp --epochs 1 --batch 256 --data "$data_dir" --checkpoint "$ckpt" --json --quiet
    final="$(printf '%s\n' "$out" | grep '^{' | tail -n 1 || true)"
    acc="$(printf '%s\n' "$final" | sed -n 's/.*"test_acc":\([0-9.]*\).*/\1/p')"
    if [ "$rc" != 0 ]; then
        fail "murmur train (1 epoch) exited $rc"
    elif ! printf '%s' "$final" | grep -qF '"event":"final"'; then
        fail "murmur train --json: no final JSON line with \"event\":\"final\""
    elif [ -z "$acc" ] || ! awk -v a="$acc" 'BEGIN { exit !(a > 0.8) }'; then
        fail "murmur train (1 epoch mlp): test_acc '$acc' is not above 0.8"
    elif [ ! -s "$ckpt" ]; then
        fail "murmur train --checkpoint did not write $ckpt"
    else
        checks=$((checks + 1))
        run eval "$ckpt" --data "$data_dir" --json
        eacc="$(printf '%s\n' "$out" | sed -n 's/.*"test_acc":\([0-9.]*\).*/\1/p' | tail -n 1)"
        if [ "$rc" != 0 ]; then
            fail "murmur eval <checkpoint> exited $rc"
        elif [ "$eacc" != "$acc" ]; then
            fail "murmur eval reports test_acc '$eacc', training's final line said '$acc'"
        fi

        expect 0 fc1.weight -- inspect "$ckpt"

        truncate -s 100 "$ckpt"
        expect_err 1 "$ckpt" -- eval "$ckpt" --data "$data_dir"
    fi
else
    echo "note: $data_dir not found, skipping the training run" >&2
fi

if [ "$failures" -gt 0 ]; then
    echo "test_cli: $failures of $checks checks failed" >&2
    exit 1
fi
echo "test_cli: all $checks checks passed"

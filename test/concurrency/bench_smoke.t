#!/usr/bin/env bash
# The benchmarks (bench/) are not tests and assert no timing, but they must
# keep running: each runs here in a tiny size and must finish and print its
# figures, with its own consistency checks passing.  (bench/codes.sh broke
# once unnoticed when the code key derivation changed.)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/test/lib.sh"
TMP=$(mktemp -d /tmp/wallet-bench-smoke.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
plan 8
cd "$ROOT"
# WALLET_SKIP_INSTALL: the benches use the install this test run already made
run() { local name=$1; shift; env WALLET_SKIP_INSTALL=1 "$@" > "$TMP/$name.out" 2>&1; }

run codes BENCH_PORT=$((${PGPORT:-55432} + 31)) bash bench/codes.sh 2000
ok $? "bench/codes.sh runs (2,000 rows)" "$(tail -n 5 "$TMP/codes.out")"
grep -qE '^  code_authentic / PL/pgSQL +[0-9.]+x' "$TMP/codes.out"
ok $? "it prints its ratios (its PL/pgSQL reference agreed with code_authentic)" "$(tail -n 5 "$TMP/codes.out")"

run ledger BENCH_PORT=$((${PGPORT:-55432} + 32)) DURATION=1 HOT_POSTINGS=4000 HISTORY=2000 bash bench/ledger.sh
ok $? "bench/ledger.sh runs (1 s runs, 4,000 hot postings, 2,000-entry history)" "$(tail -n 5 "$TMP/ledger.out")"
[ "$(grep -c 'verify_ledger.*: 0 rows' "$TMP/ledger.out")" -ge 2 ] && grep -q 'disagree at 0 of' "$TMP/ledger.out"
ok $? "its ledgers verify and balance_at agrees with the replay" "$(grep -E 'verify_ledger|disagree' "$TMP/ledger.out")"

run redeem BENCH_PORT=$((${PGPORT:-55432} + 33)) bash bench/redeem.sh 1 2
ok $? "bench/redeem.sh runs (1 s runs, 2 clients)" "$(tail -n 5 "$TMP/redeem.out")"
grep -qE '^redeem +[0-9.]+ tps +[0-9.]+x baseline' "$TMP/redeem.out"
ok $? "it prints the redemption ratio" "$(tail -n 5 "$TMP/redeem.out")"
run push BENCH_PORT=$((${PGPORT:-55432} + 34)) MEMBERS=50 QUEUE=3000 DECAY_SECONDS=2 bash bench/push.sh 1 2
ok $? "bench/push.sh runs (1 s runs, 2 clients, 50 members, a 2 s decay run)" "$(tail -n 5 "$TMP/push.out")"
grep -qE '^enqueue +[0-9.]+ tps +[0-9.]+x insert' "$TMP/push.out" && grep -qE '^claim 100 +[0-9.]+ tps +[0-9.]+x delete 100' "$TMP/push.out" \
    && grep -q 'delivery records agree: t' "$TMP/push.out"
ok $? "it prints its ratios, and its sent messages agree with the delivery records" "$(tail -n 12 "$TMP/push.out")"
finish

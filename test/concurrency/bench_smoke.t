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
plan 18
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

run campaigns BENCH_PORT=$((${PGPORT:-55432} + 34)) DURATION=1 CLIENTS=2 CODES=20000 bash bench/campaigns.sh
ok $? "bench/campaigns.sh runs (1 s runs, 2 clients, 20,000 codes)" "$(tail -n 8 "$TMP/campaigns.out")"
grep -qE '^checkout with budget / without +[0-9.]+x' "$TMP/campaigns.out" && grep -qE '^redeem_code public code / plain insert +[0-9.]+x' "$TMP/campaigns.out" \
    && grep -qE '^budget: [0-9]+ budgeted checkouts, [0-9]+ units granted, consistent$' "$TMP/campaigns.out"
ok $? "it prints its ratios, and the budget granted exactly 1,000 units per budgeted checkout (record_purchase with an offer)" "$(tail -n 8 "$TMP/campaigns.out")"
run loyalty BENCH_PORT=$((${PGPORT:-55432} + 35)) DURATION=1 ROUNDS=1 MEMBERS=200 CLIENTS=2 bash bench/loyalty.sh
ok $? "bench/loyalty.sh runs (1 s runs, 200 members, 2 clients)" "$(tail -n 5 "$TMP/loyalty.out")"
grep -qE '^ratio record_purchase / accrue: [0-9.]+x' "$TMP/loyalty.out" && grep -q 'without their entry: 0$' "$TMP/loyalty.out" \
    && grep -q 'verify_ledger after the runs: 0 rows' "$TMP/loyalty.out"
ok $? "it prints the ratio; every purchase that earned has its entry and the ledgers verify" "$(tail -n 6 "$TMP/loyalty.out")"
run analytics BENCH_PORT=$((${PGPORT:-55432} + 36)) MEMBERS=2000 PURCHASES=20000 RUNS=1 bash bench/analytics.sh
ok $? "bench/analytics.sh runs (2,000 members, 20,000 purchases)" "$(tail -n 5 "$TMP/analytics.out")"
grep -qE '^report +[0-9.]+ ms +[0-9.]+x baseline' "$TMP/analytics.out" && grep -q 'plain sum over everyone: 0\.00$' "$TMP/analytics.out"
ok $? "it prints the report's time and ratio, and the report's revenue equals the plain sum" "$(grep -E '^(baseline|report)|plain sum' "$TMP/analytics.out")"
run referrals BENCH_PORT=$((${PGPORT:-55432} + 37)) MEMBERS=2000 REFERRALS=1000 ROUNDS=1 bash bench/referrals.sh 1 2
ok $? "bench/referrals.sh runs (1 s runs, 2 clients, 2,000 members, 1,000 referrals)" "$(tail -n 5 "$TMP/referrals.out")"
grep -qE '^others +[0-9.]+ tps +[0-9.]+x baseline' "$TMP/referrals.out" && grep -q '^consistency: 0 rewarded referrals without' "$TMP/referrals.out"
ok $? "it prints the trigger's ratio, and every rewarded referral has its two entries" "$(tail -n 8 "$TMP/referrals.out")"
run tiers BENCH_PORT=$((${PGPORT:-55432} + 38)) ACCOUNTS=2000 ENTRIES=4 bash bench/tiers.sh
ok $? "bench/tiers.sh runs (2,000 accounts, 4 accruals each)" "$(tail -n 5 "$TMP/tiers.out")"
grep -q 'evaluate_tiers and the plain SQL agree' "$TMP/tiers.out" && grep -qE '^ratio plain SQL / evaluate_tiers: +[0-9.]+x' "$TMP/tiers.out"
ok $? "its evaluation agrees with the plain SQL and it prints the ratio" "$(tail -n 12 "$TMP/tiers.out")"
run push BENCH_PORT=$((${PGPORT:-55432} + 39)) MEMBERS=50 QUEUE_PER_MEMBER=60 PLAIN_QUEUE=3000 DECAY_SECONDS=2 bash bench/push.sh 1 2
ok $? "bench/push.sh runs (1 s runs, 2 clients, 50 members, 3,000-message queues, a 2 s decay run, the floors)" "$(tail -n 5 "$TMP/push.out")"
grep -qE '^enqueue +[0-9.]+ tps +[0-9.]+x insert' "$TMP/push.out" && grep -qE '^claim 100 +[0-9.]+ tps +[0-9.]+x delete 100' "$TMP/push.out" \
    && grep -q 'delivery records agree: t' "$TMP/push.out" \
    && grep -qE '^enqueue floor +[0-9.]+ tps +[0-9.]+x insert' "$TMP/push.out" && grep -qE '^two rows +[0-9.]+ tps +[0-9.]+x insert' "$TMP/push.out" \
    && grep -qE '^claim floor 100 +[0-9.]+ tps +[0-9.]+x delete 100' "$TMP/push.out" \
    && grep -qE '^leased floor 1 +[0-9.]+ tps +[0-9.]+x delete 1 ' "$TMP/push.out" \
    && grep -qE '^leased floor 100 +[0-9.]+ tps +[0-9.]+x delete 100' "$TMP/push.out"
ok $? "it prints its ratios and floors, and its sent messages agree with the delivery records" "$(tail -n 12 "$TMP/push.out")"
finish

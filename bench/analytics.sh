#!/usr/bin/env bash
# Benchmark of the campaign analytics (not a test: it prints figures, asserts
# nothing but its own consistency check).
#
#   MEMBERS=100000 PURCHASES=1000000 RUNS=3 bench/analytics.sh
#
# Starts its own throwaway cluster and builds one merchant with MEMBERS
# members and PURCHASES purchases spread over a year (6% refunded in part or
# in full), a 30-day campaign for everyone with a 10% holdout, code
# redemptions, message events and feedback.  Then times, as bench_reader (a
# login role holding wallet_reader that acts for the merchant), the best of
# RUNS calls of
#   report    wallet.campaign_report (every figure, one call)
#   cohorts   wallet.campaign_cohorts (6 months)
#   rfm       wallet.rfm over every member
# next to the baseline measured in the same run: one plain aggregate reading
# the same purchases (the before, during and after windows, grouped by
# member), the least any report must read.  Checks that the report's revenue
# equals the plain sum over its audience.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/cluster.sh
. test/root_key.sh

MEMBERS=${MEMBERS:-100000}
PURCHASES=${PURCHASES:-1000000}
RUNS=${RUNS:-3}
PORT=${BENCH_PORT:-55434}
TMPD=$(mktemp -d /tmp/wallet-bench-analytics.XXXXXX)
chmod 755 "$TMPD"
DATA="$TMPD/data"
cleanup() { cluster_stop "$DATA"; rm -rf "$TMPD"; }
trap cleanup EXIT

cluster_install >/dev/null
root_key_random "$TMPD/root.key"
cluster_start "$DATA" "$PORT" -c shared_preload_libraries=wallet -c wallet.root_key_file="$TMPD/root.key" \
    -c synchronous_commit=off -c work_mem=64MB
export PGHOST="$DATA" PGPORT="$PORT" PGUSER=postgres
PATH="$PGBIN:$PATH"
q() { psql -XAtq -v ON_ERROR_STOP=1 -d bench "$@"; }
psql -XAtq -c "CREATE DATABASE bench"

echo "machine: $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "data: $MEMBERS members, $PURCHASES purchases over a year"
start=$(date +%s)
q >/dev/null <<SQL
CREATE EXTENSION wallet;
SELECT wallet.create_merchant('bench');
SELECT setseed(0.5);
INSERT INTO wallet.members (merchant_id, member_ref) SELECT 1, 'm' || g FROM generate_series(1, $MEMBERS) g;
-- purchases: members drawn with a skew (some buy often), amounts 5 to 300, over 2026
INSERT INTO wallet.purchases (merchant_id, member_id, order_ref, amount, currency, occurred_at)
SELECT 1, 1 + floor(power(random(), 1.5) * $MEMBERS)::bigint, 'o' || g, round((5 + random() * 295)::numeric, 2), 'CNY',
       timestamptz '2026-01-01' + random() * interval '365 days'
  FROM generate_series(1, $PURCHASES) g;
UPDATE wallet.purchases SET refunded_amount = CASE WHEN random() < 0.5 THEN amount ELSE round(amount / 2, 2) END
 WHERE random() < 0.06;
INSERT INTO wallet.refunds (merchant_id, member_id, purchase_id, refund_ref, amount, created_at)
SELECT 1, member_id, purchase_id, 'r' || purchase_id, refunded_amount, occurred_at + interval '2 days'
  FROM wallet.purchases WHERE refunded_amount > 0;
-- the campaign: June, everyone, 10% held out; codes, events and feedback of a tenth of the members
SELECT wallet.create_campaign(1, 'summer', starts_at => '2026-06-01', max_redemptions_per_code => NULL, max_redemptions_per_member => 1);
SELECT wallet.set_campaign_audience(1, 'everyone', 10);
CREATE TABLE public_code AS SELECT g::text AS code FROM wallet.generate_codes(1, 1) g;
SELECT count(wallet.redeem_code((SELECT code FROM public_code), 'm' || g, 'k' || g)) FROM generate_series(1, $MEMBERS, 10) g;
UPDATE wallet.campaigns SET ends_at = '2026-07-01';
UPDATE wallet.code_redemptions SET redeemed_at = timestamptz '2026-06-01' + random() * interval '30 days';
INSERT INTO wallet.member_events (merchant_id, member_id, kind, occurred_at, attributes)
SELECT 1, g, 'push_opened', timestamptz '2026-06-01' + random() * interval '30 days', '{"campaign_id": 1}'
  FROM generate_series(1, $MEMBERS, 7) g;
INSERT INTO wallet.campaign_feedback (merchant_id, campaign_id, member_id, score, category, created_at)
SELECT 1, 1, g, 1 + floor(random() * 5)::int, CASE WHEN random() < 0.2 THEN 'complaint' ELSE 'praise' END,
       timestamptz '2026-06-01' + random() * interval '30 days'
  FROM generate_series(1, $MEMBERS, 50) g;
CREATE ROLE bench_reader LOGIN;
GRANT wallet_reader TO bench_reader;
SELECT wallet.grant_merchant(1, 'bench_reader');
VACUUM ANALYZE;
SQL
echo "load: $(( $(date +%s) - start )) s"

# best of RUNS: milliseconds of one statement, as bench_reader
best() {
    local sql=$1 i t min=
    for ((i = 0; i < RUNS; i++)); do
        t=$(PGUSER=bench_reader psql -XAtq -d bench -c '\timing on' -c "$sql" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n 1)
        if [ -z "$min" ] || awk -v a="$t" -v b="$min" 'BEGIN { exit !(a < b) }'; then min=$t; fi
    done
    echo "$min"
}
baseline_sql="SELECT count(*) FROM (SELECT p.member_id, sum(p.amount - p.refunded_amount) FILTER (WHERE p.occurred_at < '2026-06-01'),
                 sum(p.amount - p.refunded_amount) FILTER (WHERE p.occurred_at >= '2026-06-01' AND p.occurred_at < '2026-07-01'),
                 sum(p.amount - p.refunded_amount) FILTER (WHERE p.occurred_at >= '2026-07-01')
            FROM wallet.purchases p WHERE p.merchant_id = 1 AND p.occurred_at >= '2026-05-02' AND p.occurred_at < '2026-07-31'
             AND p.amount > p.refunded_amount GROUP BY p.member_id) x"
base=$(best "$baseline_sql")
report=$(best "SELECT * FROM wallet.campaign_report(1)")
cohorts=$(best "SELECT count(*) FROM wallet.campaign_cohorts(1)")
rfm=$(best "SELECT count(*) FROM wallet.rfm(1, '2027-01-01')")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }
printf '%-9s %10.1f ms\n' baseline "$base"
printf '%-9s %10.1f ms  %sx baseline\n' report "$report" "$(ratio "$report" "$base")"
printf '%-9s %10.1f ms  %sx baseline\n' cohorts "$cohorts" "$(ratio "$cohorts" "$base")"
printf '%-9s %10.1f ms  %sx baseline\n' rfm "$rfm" "$(ratio "$rfm" "$base")"

echo "the report:"
PGUSER=bench_reader psql -Xq -d bench -x -c "SELECT * FROM wallet.campaign_report(1)" | sed 's/^/  /'
# consistency: the report's revenue is the plain sum over its audience (each member's group by campaign_group)
diff=$(q -c "SELECT (SELECT target_revenue + control_revenue FROM wallet.campaign_report(1))
                    - (SELECT coalesce(sum(p.amount - p.refunded_amount), 0) FROM wallet.purchases p
                        WHERE p.merchant_id = 1 AND p.occurred_at >= '2026-06-01' AND p.occurred_at < '2026-07-01')")
echo "report revenue minus the plain sum over everyone: $diff"

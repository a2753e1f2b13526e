#!/usr/bin/env bash
# Benchmark of purchases (not a test: it prints figures, asserts nothing).
#
#   bench/loyalty.sh           (DURATION=20 seconds per run, ROUNDS=3, MEMBERS=10000, CLIENTS=8)
#
# Starts its own throwaway cluster and prints, measured in this one run:
#   wallet.record_purchase in a tiered program with 5 active earning rules
#   (per unit, a category multiplier, a minimum-amount bonus, a first-purchase
#   bonus, a channel bonus capped per member and day) vs plain wallet.accrue,
#   both on uniformly random members out of MEMBERS, CLIENTS clients, -M
#   prepared, as bench_app (a role holding wallet_app acting for the
#   merchant), alternating ROUNDS times; target: record_purchase >= 0.8x accrue.
# Then checks what it posted: every purchase that earned has its entry, and
# every ledger replays from its journal.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/cluster.sh

DURATION=${DURATION:-20}
MEMBERS=${MEMBERS:-10000}
CLIENTS=${CLIENTS:-8}
ROUNDS=${ROUNDS:-3}
PORT=${BENCH_PORT:-55434}
TMPD=$(mktemp -d /tmp/wallet-bench.XXXXXX)
chmod 755 "$TMPD"
DATA="$TMPD/data"
cleanup() { cluster_stop "$DATA"; rm -rf "$TMPD"; }
trap cleanup EXIT

cluster_install >/dev/null
cluster_start "$DATA" "$PORT" -c shared_preload_libraries=wallet
export PGHOST="$DATA" PGPORT="$PORT" PGUSER=postgres
PATH="$PGBIN:$PATH"
q() { psql -XAtq -v ON_ERROR_STOP=1 "$@"; }

echo "machine: $(nproc) cores; $(uname -sr); other processes may be running (see load below)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

createdb bench_loyalty
q -d bench_loyalty -v members="$MEMBERS" >/dev/null <<'SQL'
CREATE EXTENSION wallet;
SELECT wallet.create_merchant('bench') AS m \gset
SELECT wallet.create_program(:m, 'bench points', '12 months', 'month') AS p \gset
SELECT wallet.set_program_earning(:p, 'CNY');
-- three tiers; a third of the members hold one of them
INSERT INTO wallet.tiers (merchant_id, program_id, rank, name, min_points, multiplier)
VALUES (:m, :p, 1, 'Silver', 1000, 1.2), (:m, :p, 2, 'Gold', 5000, 1.5), (:m, :p, 3, 'Platinum', 20000, 2);
-- 5 active rules
SELECT wallet.create_earning_rule(:p, 'base', 'per_unit', 1, valid_from => now() - interval '1 day');
SELECT wallet.create_earning_rule(:p, 'food double', 'multiplier', 2, '{"categories": ["food"]}', valid_from => now() - interval '1 day');
SELECT wallet.create_earning_rule(:p, 'big basket', 'fixed', 20, '{"min_amount": 200}', valid_from => now() - interval '1 day');
SELECT wallet.create_earning_rule(:p, 'welcome', 'fixed', 50, '{"first_purchase": true}', valid_from => now() - interval '1 day');
SELECT wallet.create_earning_rule(:p, 'app bonus', 'fixed', 5, '{"channels": ["app"]}', '{"per_member_day": 20}',
                                  valid_from => now() - interval '1 day', priority => 1);
SELECT count(*) FROM generate_series(1, :members) i, LATERAL wallet.open_account(:p, 'member-' || i);
INSERT INTO wallet.account_tiers (account_id, merchant_id, member_id, program_id, tier_id, rank)
SELECT a.account_id, a.merchant_id, a.member_id, a.program_id, t.tier_id, t.rank
  FROM wallet.accounts a JOIN wallet.tiers t ON t.program_id = a.program_id AND t.rank = a.account_id % 3 + 1
 WHERE a.account_id % 3 = 0 OR a.account_id % 7 = 0;
CREATE ROLE bench_app LOGIN;
GRANT wallet_app TO bench_app;
SELECT wallet.grant_merchant(:m, 'bench_app');
VACUUM ANALYZE;
SQL
read -r amin amax <<< "$(q -d bench_loyalty -F ' ' -c "SELECT min(account_id), max(account_id) FROM wallet.accounts")"

cat > "$TMPD/accrue.sql" <<'SQL'
\set aid random(:amin, :amax)
\set pts random(1, 300)
\set k random(1, 1000000000000000)
SELECT balance_after FROM wallet.accrue(:aid, :pts, 'a' || (:client_id)::text || '-' || (:k)::text, 'purchase');
SQL
# a member, an amount of 1.00 to 300.00, a category and channel mix
cat > "$TMPD/purchase.sql" <<'SQL'
\set mem random(1, :members)
\set cents random(100, 30000)
\set k random(1, 1000000000000000)
\set c random(0, 2)
SELECT points FROM wallet.record_purchase(1, 'member-' || :mem, 'o' || (:client_id)::text || '-' || (:k)::text,
                                          :cents / 100.0, 'CNY', now(),
                                          jsonb_build_object('channel', (ARRAY['app', 'web', 'pos'])[:c + 1],
                                                             'categories', CASE WHEN :c = 0 THEN '["food"]'::jsonb ELSE '["toys"]' END));
SQL

tps() {
    local out
    out=$(pgbench -n -M prepared -c "$CLIENTS" -j "$(( CLIENTS < 2 ? 1 : 2 ))" -T "$DURATION" -U bench_app \
                  -D amin="$amin" -D amax="$amax" -D members="$MEMBERS" -f "$1" bench_loyalty 2>&1) || { echo "$out" >&2; return 1; }
    if echo "$out" | grep -qiE 'aborted|deadlock'; then echo "$out" >&2; return 1; fi
    echo "$out" | sed -n 's/^tps = \([0-9]*\)\.[0-9]* .*/\1/p'
}
ratio() {
    awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { if (b > 0) printf "%.2fx   (target >= %.1fx: %s)", a / b, t, (a / b >= t ? "met" : "missed"); else print "n/a" }'
}

echo
echo "== record_purchase (5 rules, tiered program) vs accrue (${DURATION}s runs, $CLIENTS clients, -M prepared, $MEMBERS members)"
# warm-up, not counted: purchases and counters start empty, and plans made
# on empty tables (a sequential scan is cheapest there) would slow the first
# round until autovacuum analyzes them
tps "$TMPD/purchase.sql" >/dev/null
q -d bench_loyalty -c "ANALYZE wallet.purchases; ANALYZE wallet.earning_counters; ANALYZE wallet.entries"
# the two alternate ROUNDS times, so that a change of the machine's load
# during the run weighs on both alike; the ratio is of the mean TPS
sum_accrue=0; sum_purchase=0
for round in $(seq 1 "$ROUNDS"); do
    t=$(tps "$TMPD/accrue.sql"); sum_accrue=$((sum_accrue + t))
    printf '%-62s %10s TPS\n' "round $round: wallet.accrue" "$t"
    t=$(tps "$TMPD/purchase.sql"); sum_purchase=$((sum_purchase + t))
    printf '%-62s %10s TPS\n' "round $round: wallet.record_purchase" "$t"
done
echo "ratio record_purchase / accrue: $(ratio "$sum_purchase" "$sum_accrue" 0.8)"

echo
q -d bench_loyalty -c "SELECT format('purchases: %s, points %s; purchases that earned without their entry: %s', count(*), sum(points),
                                     count(*) FILTER (WHERE points > 0 AND NOT EXISTS (SELECT FROM wallet.entries e
                                                                                    WHERE e.entry_id = p.entry_id AND e.points = p.points)))
                         FROM wallet.purchases p"
echo "verify_ledger after the runs: $(q -d bench_loyalty -c "SELECT count(*) FROM wallet.verify_ledger()") rows (0 = consistent)"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

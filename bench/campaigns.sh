#!/usr/bin/env bash
# Benchmark of campaigns (issue 11; not a test: it prints figures, asserts
# only its own consistency).  Starts its own throwaway cluster and prints,
# measured in this one run, transactions per second of:
#   baseline   INSERT of one row into a table with two unique indexes (code,
#              idempotency key): the least an exactly-once redemption writes
#   redeem     wallet.redeem_code on distinct single-use codes
#   public     wallet.redeem_code on ONE public code (one use per member)
#              raced by distinct members
#   checkout   a checkout: wallet.record_purchase of a basket of 100 CNY by a
#              random member out of 1,000, naming one offer (10% off) of a
#              campaign without a budget
#   budgeted   the same checkout naming the same offer of a campaign with a
#              money budget (escrow slices, taken in the same transaction)
# with CLIENTS (8) sessions for DURATION (5) seconds each, and the ratios
# redeem/baseline, public/baseline (target >= 0.6) and budgeted/checkout
# (target >= 0.7), after a 1 s warm-up of both checkouts and ANALYZE.  The
# wallet runs log in as bench_app (wallet_app, acting
# for the merchant).  Consistency: the budget's granted units equal 1,000
# (10.00 in hundredths) times the budgeted checkouts that got the offer, and
# none was refused.
#
#   DURATION=5 CLIENTS=8 CODES=400000 bench/campaigns.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
CLIENTS=${CLIENTS:-8}
CODES=${CODES:-400000}
. test/cluster.sh
. test/root_key.sh

TMPD=$(mktemp -d /tmp/wallet-bench-campaigns.XXXXXX)
chmod 755 "$TMPD"
trap 'cluster_stop "$TMPD/data"; rm -rf "$TMPD"' EXIT
cluster_install >/dev/null
root_key_random "$TMPD/root.key"
cluster_start "$TMPD/data" "${BENCH_PORT:-55498}" -c shared_preload_libraries=wallet \
    -c wallet.root_key_file="$TMPD/root.key" -c synchronous_commit=off
export PGHOST="$TMPD/data" PGPORT="${BENCH_PORT:-55498}" PGUSER=postgres
PATH="$PGBIN:$PATH"
q() { psql -qXAt -v ON_ERROR_STOP=1 -d bench "$@"; }
psql -qX -c "CREATE DATABASE bench" >/dev/null

echo "machine: $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg); $CLIENTS clients, $DURATION s each"
q >/dev/null <<SQL
CREATE EXTENSION wallet;
SELECT wallet.create_merchant('bench');
SELECT wallet.create_campaign(1, 'single use');
SELECT wallet.create_campaign(1, 'public', max_redemptions_per_code => NULL, max_redemptions_per_member => 1);
SELECT wallet.create_campaign(1, 'festival');
SELECT wallet.set_campaign_budget(3, 'money', 1000000000000);
SELECT wallet.create_campaign(1, 'festival, no budget');
SELECT wallet.create_program(1, 'bench points');
SELECT wallet.set_program_earning(1, 'CNY');
SELECT wallet.create_offer(3, 'ten percent', 'percent', 10, 'CNY');
SELECT wallet.create_offer(4, 'ten percent', 'percent', 10, 'CNY');
SELECT count(wallet.open_account(1, 'member-' || i)) FROM generate_series(1, 1000) i;
CREATE TABLE codes (i bigint PRIMARY KEY, code text NOT NULL);
INSERT INTO codes SELECT row_number() OVER (), g::text FROM wallet.generate_codes(1, $CODES) g;
CREATE TABLE public_code AS SELECT g::text AS code FROM wallet.generate_codes(2, 1) g;
CREATE TABLE baseline (code text UNIQUE, member_ref text, idempotency_key text UNIQUE, at timestamptz DEFAULT clock_timestamp());
CREATE SEQUENCE s_baseline; CREATE SEQUENCE s_redeem; CREATE SEQUENCE s_public; CREATE SEQUENCE s_checkout;
CREATE ROLE bench_app LOGIN;
GRANT wallet_app TO bench_app;
SELECT wallet.grant_merchant(1, 'bench_app');
GRANT SELECT ON codes, public_code TO bench_app;
GRANT USAGE ON SEQUENCE s_redeem, s_public, s_checkout TO bench_app;
VACUUM ANALYZE;
SQL

cat >"$TMPD/baseline.sql" <<'SQL'
INSERT INTO baseline (code, member_ref, idempotency_key) SELECT code, 'm' || i, 'b' || i FROM codes WHERE i = (SELECT nextval('s_baseline'));
SQL
cat >"$TMPD/redeem.sql" <<'SQL'
SELECT wallet.redeem_code(code, 'm' || i, 'r' || i) FROM codes WHERE i = (SELECT nextval('s_redeem'));
SQL
cat >"$TMPD/public.sql" <<'SQL'
SELECT wallet.redeem_code(p.code, 'm' || n, 'p' || n) FROM public_code p, nextval('s_public') n;
SQL
cat >"$TMPD/checkout.sql" <<'SQL'
\set a random(1, 1000)
SELECT wallet.record_purchase(1, 'member-' || :a, 'c' || nextval('s_checkout'), 100, 'CNY', offers => '{2}');
SQL
cat >"$TMPD/budgeted.sql" <<'SQL'
\set a random(1, 1000)
SELECT wallet.record_purchase(1, 'member-' || :a, 'b' || nextval('s_checkout'), 100, 'CNY', offers => '{1}');
SQL

run() {   # run SCRIPT [pgbench args]: tps
    local script=$1; shift
    pgbench -n -c "$CLIENTS" -j 2 -T "$DURATION" "$@" -f "$TMPD/$script.sql" bench 2>&1 |
        sed -n -E 's/^tps = ([0-9.]+).*/\1/p'
}
# a warm-up of both checkouts (caches, the members' accounts and first
# purchases), then ANALYZE, so that neither measured run pays for it
for b in checkout budgeted; do
    pgbench -n -c "$CLIENTS" -j 2 -T 1 -U bench_app -f "$TMPD/$b.sql" bench >/dev/null 2>&1
done
q -c "ANALYZE"
declare -A T
for b in baseline redeem public checkout budgeted; do
    if [ "$b" = baseline ]; then T[$b]=$(run "$b"); else T[$b]=$(run "$b" -U bench_app); fi
    printf '%-10s %10.1f tps\n' "$b" "${T[$b]}"
done
ratio() { echo "${T[$1]} / ${T[$2]}" | bc -l; }
printf 'redeem_code single-use / plain insert   %5.2fx (target >= 0.6)\n' "$(ratio redeem baseline)"
printf 'redeem_code public code / plain insert  %5.2fx (target >= 0.6)\n' "$(ratio public baseline)"
printf 'checkout with budget / without          %5.2fx (target >= 0.7)\n' "$(ratio budgeted checkout)"

# consistency: every budgeted checkout committed got the offer and took exactly 1,000 units
q -c "SELECT format('budget: %s budgeted checkouts, %s units granted, %s', n, g, CASE WHEN g = 1000 * n AND r = 0 THEN 'consistent' ELSE 'INCONSISTENT' END)
        FROM (SELECT (SELECT count(*) FROM wallet.purchase_offers WHERE offer_id = 1 AND status = 'ok') AS n,
                     (SELECT count(*) FROM wallet.purchase_offers WHERE offer_id = 1 AND status <> 'ok') AS r,
                     (SELECT granted FROM wallet.campaign_budget(3)) AS g) x"
q -c "SELECT format('campaign %s: %s redemptions, %s distinct codes, %s distinct members', campaign_id, count(*), count(DISTINCT serial), count(DISTINCT member_ref)) FROM wallet.code_redemptions GROUP BY campaign_id ORDER BY campaign_id"

#!/usr/bin/env bash
# Benchmark of referrals and sharing (not a test): transactions per second of
#   baseline  INSERT of a purchase into wallet.purchases with the referral
#             trigger disabled: what a checkout writes without referrals
#   no_refs   the same with the trigger, the merchant having no referral at
#             all (the trigger's probe finds nothing)
#   others    the same with REFERRALS pending referrals of other members
#             (the probe finds nothing: the common checkout)
#   reward    the first qualifying purchase of a pending referee: the
#             trigger posts both rewards (two accruals, two events)
#   refer     wallet.refer of a new referee, as the app (bench_app)
#   share     wallet.record_share, as the app
# each with CLIENTS sessions for SECONDS seconds, and ratios to the baseline
# measured in the same run.  Starts its own throwaway cluster.  Purchases
# are inserted as the superuser, as record_purchase (owner) inserts them.
#
# The trigger's cost is measured once more in ROUNDS back-to-back pairs
# (trigger off, on), whose median ratio is the figure to quote.
#
#   bench/referrals.sh [SECONDS=5] [CLIENTS=4]     env: MEMBERS (100000), REFERRALS (50000), ROUNDS (3)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-5}
CLIENTS=${2:-4}
MEMBERS=${MEMBERS:-100000}
REFERRALS=${REFERRALS:-50000}
. test/cluster.sh
. test/root_key.sh

TMPD=$(mktemp -d /tmp/wallet-bench-referrals.XXXXXX)
chmod 755 "$TMPD"
trap 'cluster_stop "$TMPD/data"; rm -rf "$TMPD"' EXIT
cluster_install >/dev/null
root_key_random "$TMPD/root.key"
cluster_start "$TMPD/data" "${BENCH_PORT:-56650}" -c shared_preload_libraries=wallet \
    -c wallet.root_key_file="$TMPD/root.key" -c synchronous_commit=off
export PGHOST="$TMPD/data" PGPORT="${BENCH_PORT:-56650}" PGUSER=postgres
psql -qX -c "CREATE DATABASE bench" >/dev/null

psql -qX -d bench -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION wallet;
SELECT wallet.create_merchant('bench');
SELECT wallet.create_program(1, 'points', interval '1 year');
SELECT wallet.create_campaign(1, 'bring a friend');
SELECT wallet.set_referral_program(1, 1, 100, 50, 30);
SELECT wallet.set_share_reward(1, 1, 5, max_per_member => 1000000, max_per_day => 1000000);
-- buyers who are no referees, and their member ids by number
INSERT INTO wallet.members (merchant_id, member_ref) SELECT 1, 'buyer-' || g FROM generate_series(1, $MEMBERS) g;
CREATE TABLE buyers (i int PRIMARY KEY, member_id bigint NOT NULL);
INSERT INTO buyers SELECT row_number() OVER (ORDER BY member_id), member_id FROM wallet.members;
CREATE SEQUENCE s_order; CREATE SEQUENCE s_referee; CREATE SEQUENCE s_refer; CREATE SEQUENCE s_share;
CREATE ROLE bench_app LOGIN;
GRANT wallet_app TO bench_app;
SELECT wallet.grant_merchant(1, 'bench_app');
GRANT USAGE ON SEQUENCE s_refer, s_share TO bench_app;
VACUUM ANALYZE;
SQL

cat >"$TMPD/buy.sql" <<SQL
\set b random(1, $MEMBERS)
INSERT INTO wallet.purchases (merchant_id, member_id, order_ref, amount, currency, occurred_at)
SELECT 1, member_id, 'o' || nextval('s_order'), 20, 'CNY', now() FROM buyers WHERE i = :b;
SQL
cat >"$TMPD/reward.sql" <<'SQL'
INSERT INTO wallet.purchases (merchant_id, member_id, order_ref, amount, currency, occurred_at)
SELECT 1, member_id, 'o' || nextval('s_order'), 20, 'CNY', now() FROM referees WHERE i = (SELECT nextval('s_referee'));
SQL
cat >"$TMPD/refer.sql" <<SQL
\set b random(1, $MEMBERS)
SELECT status FROM wallet.refer(1, 'buyer-' || :b, 'newcomer-' || nextval('s_refer'), 'link', 1);
SQL
cat >"$TMPD/share.sql" <<SQL
\set b random(1, $MEMBERS)
SELECT status FROM wallet.record_share(1, 'buyer-' || :b, 1, 'wechat');
SQL

run() {   # run SCRIPT [pgbench args]
    local script=$1; shift
    pgbench -n -c "$CLIENTS" -j 2 -T "$SECONDS_EACH" "$@" -f "$TMPD/$script.sql" bench 2>&1 |
        sed -n -E 's/^tps = ([0-9.]+).*/\1/p'
}
line() { printf '%-9s %10s tps   %5.2fx baseline\n' "$1" "$2" "$(echo "$2 / $base" | bc -l)"; }

psql -qX -d bench -c "ALTER TABLE wallet.purchases DISABLE TRIGGER referral_purchase"
base=$(run buy)
psql -qX -d bench -c "ALTER TABLE wallet.purchases ENABLE TRIGGER referral_purchase"
printf '%-9s %10s tps\n' baseline "$base"
line no_refs "$(run buy)"

# pending referrals of other members: referred by buyers, never buying here.
# In chunks, each its own session after an ANALYZE: one session making them
# all would keep the plans it made while the table was nearly empty.
for ((from = 1; from <= REFERRALS; from += 5000)); do
    to=$((from + 4999 < REFERRALS ? from + 4999 : REFERRALS))
    psql -qX -d bench -v ON_ERROR_STOP=1 >/dev/null \
        -c "SELECT count(*) FROM generate_series($from, $to) g, wallet.refer(1, 'buyer-' || (1 + g % $MEMBERS), 'referee-' || g, 'link', 1) r" \
        -c "ANALYZE wallet.referrals"
done
psql -qX -d bench -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE TABLE referees (i int PRIMARY KEY, member_id bigint NOT NULL);
INSERT INTO referees SELECT row_number() OVER (ORDER BY r.referral_id), r.referee_id FROM wallet.referrals r WHERE r.status = 'pending';
VACUUM ANALYZE;
SQL
line others "$(run buy)"
# the trigger's cost again, in pairs run back to back (the machine's load
# moves between runs far apart): ROUNDS pairs, their ratios and the median
ratios=()
for ((i = 0; i < ${ROUNDS:-3}; i++)); do
    psql -qX -d bench -c "ALTER TABLE wallet.purchases DISABLE TRIGGER referral_purchase"
    off=$(run buy)
    psql -qX -d bench -c "ALTER TABLE wallet.purchases ENABLE TRIGGER referral_purchase"
    on=$(run buy)
    ratios+=("$(echo "$on / $off" | bc -l | xargs printf '%.2f')")
done
printf 'others/baseline in pairs: %s   median %s\n' "${ratios[*]}" "$(printf '%s\n' "${ratios[@]}" | sort -n | sed -n "$(( (${#ratios[@]} + 1) / 2 ))p")"
line reward "$(run reward)"
line refer "$(run refer -U bench_app)"
line share "$(run share -U bench_app)"

psql -qXAt -d bench <<'SQL'
SELECT format('referrals: %s rewarded, %s pending, %s refused; reward entries: %s; shares rewarded: %s',
              count(*) FILTER (WHERE status = 'rewarded'), count(*) FILTER (WHERE status = 'pending'),
              count(*) FILTER (WHERE status = 'refused'),
              (SELECT count(*) FROM wallet.entries WHERE idempotency_key LIKE 'referral:%'),
              (SELECT count(*) FROM wallet.shares WHERE status = 'rewarded'))
  FROM wallet.referrals;
SELECT format('consistency: %s rewarded referrals without exactly two entries', count(*))
  FROM wallet.referrals r
 WHERE r.status = 'rewarded'
   AND (SELECT count(*) FROM wallet.entries e WHERE e.idempotency_key IN ('referral:' || r.referral_id || ':referrer', 'referral:' || r.referral_id || ':referee')) <> 2;
SQL

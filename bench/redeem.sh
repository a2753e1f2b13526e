#!/usr/bin/env bash
# Benchmark of the redemption layer (not a test): transactions per second of
#   baseline  INSERT of one row into a table with unique indexes on the code
#             and the idempotency key: the least an exactly-once redemption
#             must write
#   redeem    wallet.redeem_code on distinct single-use codes
#   public    wallet.redeem_code on ONE public code (no per-code cap, one use
#             per member) by distinct members: no counter row to queue on
#   reserve   wallet.reserve_code + wallet.redeem_code (convert) per checkout
#   check     wallet.check_code of a genuine code (read-only path plus guard)
# the wallet runs log in as bench_app, a role holding wallet_app that acts for
# the merchant (SECURITY DEFINER functions, merchant checks, row-level security);
# each with CLIENTS sessions for SECONDS seconds, and ratios to the baseline
# measured in the same run.  Starts its own throwaway cluster.
#
#   bench/redeem.sh [SECONDS=5] [CLIENTS=4]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-5}
CLIENTS=${2:-4}
. test/cluster.sh
. test/root_key.sh

TMPD=$(mktemp -d /tmp/wallet-bench-redeem.XXXXXX)
chmod 755 "$TMPD"
trap 'cluster_stop "$TMPD/data"; rm -rf "$TMPD"' EXIT
cluster_install >/dev/null
root_key_random "$TMPD/root.key"
cluster_start "$TMPD/data" "${BENCH_PORT:-55499}" -c shared_preload_libraries=wallet \
    -c wallet.root_key_file="$TMPD/root.key" -c synchronous_commit=off
export PGHOST="$TMPD/data" PGPORT="${BENCH_PORT:-55499}" PGUSER=postgres
psql -qX -c "CREATE DATABASE bench" >/dev/null
N=400000   # enough codes for every run

psql -qX -d bench -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION wallet;
SELECT wallet.create_merchant('bench');
SELECT wallet.create_campaign(1, 'single use');
SELECT wallet.create_campaign(1, 'public', max_redemptions_per_code => NULL, max_redemptions_per_member => 1);
CREATE TABLE codes (i bigint PRIMARY KEY, code text NOT NULL);
INSERT INTO codes SELECT row_number() OVER (), g::text FROM wallet.generate_codes(1, $N) g;
CREATE TABLE public_code AS SELECT g::text AS code FROM wallet.generate_codes(2, 1) g;
CREATE TABLE baseline (code text UNIQUE, member_ref text, idempotency_key text UNIQUE, at timestamptz DEFAULT clock_timestamp());
CREATE SEQUENCE s_baseline; CREATE SEQUENCE s_redeem; CREATE SEQUENCE s_public; CREATE SEQUENCE s_reserve; CREATE SEQUENCE s_check;
-- the application's login role (README "Roles and privileges"): the wallet
-- runs below log in as it, with SECURITY DEFINER functions, merchant checks
-- and row-level security in force; the baseline stays the superuser's
CREATE ROLE bench_app LOGIN;
GRANT wallet_app TO bench_app;
SELECT wallet.grant_merchant(1, 'bench_app');
GRANT SELECT ON codes, public_code TO bench_app;
GRANT USAGE ON SEQUENCE s_redeem, s_public, s_reserve, s_check TO bench_app;
VACUUM ANALYZE;
SQL

cat >"$TMPD/baseline.sql" <<'SQL'
INSERT INTO baseline (code, member_ref, idempotency_key) SELECT code, 'm' || i, 'b' || i FROM codes WHERE i = (SELECT nextval('s_baseline'));
SQL
cat >"$TMPD/redeem.sql" <<'SQL'
SELECT wallet.redeem_code(code, 'm' || i, 'r' || i) FROM codes WHERE i = (SELECT nextval('s_redeem') + 100000);
SQL
cat >"$TMPD/public.sql" <<'SQL'
SELECT wallet.redeem_code(p.code, 'm' || n, 'p' || n) FROM public_code p, nextval('s_public') n;
SQL
# (reserve then convert, in one script: two round trips per checkout)
cat >"$TMPD/reserve.sql" <<'SQL'
SELECT nextval('s_reserve') + 200000 AS i \gset
SELECT wallet.reserve_code(code, 'm' || i, 'v' || i, '5 minutes') FROM codes WHERE i = :i;
SELECT wallet.redeem_code(code, 'm' || i, 'v' || i) FROM codes WHERE i = :i;
SQL
cat >"$TMPD/check.sql" <<'SQL'
SELECT wallet.check_code(code, 'm' || i) FROM codes WHERE i = (SELECT 300000 + nextval('s_check') % 50000);
SQL

run() {   # run SCRIPT [pgbench args]
    local script=$1; shift
    pgbench -n -c "$CLIENTS" -j 2 -T "$SECONDS_EACH" "$@" -f "$TMPD/$script.sql" bench 2>&1 |
        sed -n -E 's/^tps = ([0-9.]+).*/\1/p'
}
base=$(run baseline)
printf '%-10s %10s tps\n' baseline "$base"
for b in redeem public reserve check; do
    t=$(run "$b" -U bench_app)
    printf '%-10s %10s tps   %5.2fx baseline\n' "$b" "$t" "$(echo "$t / $base" | bc -l)"
done
psql -qXAt -d bench -c "SELECT format('campaign %s: %s redemptions, %s distinct codes, %s distinct members', campaign_id, count(*), count(DISTINCT serial), count(DISTINCT member_ref)) FROM wallet.code_redemptions GROUP BY campaign_id ORDER BY campaign_id"

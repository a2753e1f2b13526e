#!/usr/bin/env bash
# Benchmark of tier evaluation (issue 10; not a test: it prints figures, asserts nothing).
#
#   bench/tiers.sh                 (ACCOUNTS=1000000 ENTRIES=24 by default)
#   ACCOUNTS=2000 ENTRIES=4 bench/tiers.sh      (what bench_smoke.t runs)
#   SHARED_BUFFERS=128MB bench/tiers.sh         (the server's buffer pool; 256MB by default)
#
# Starts its own throwaway cluster (test/cluster.sh) and loads, without the
# API (COPY-speed INSERT ... SELECT, not a million calls): ACCOUNTS members
# and accounts of one program, each with ENTRIES accruals spread over the
# last 11 UTC months, in the journal (wallet.entries) and in the ledger
# value (its monthly buckets) alike.  1% of the accounts earn enough for
# Silver, 0.1% for Gold.  The tiers are made after the load, so the program
# has a sweep pending: every account must be looked at.  Then, in this one run:
#   1. wallet.evaluate_tiers over every account (CALL evaluate_tiers_batched,
#      10,000 accounts per transaction): the points in the window from each
#      ledger's monthly buckets (C), the missed upgrades made (history and
#      events written); target: under 60 s for 1,000,000 accounts;
#      the accounts are read in C batch by batch, the 1% that move up are
#      upgraded set-based (one statement per batch), as are the holders
#      whose next review date changes;
#   2. the plain SQL a DBA would write over wallet.entries: the accruals in the
#      window per account, and the tier they reach (reading only, writing
#      nothing); ratio 2 / 1 (target >= 10x).  Conservative: step 1 also
#      writes 10,000 upgrades (30,000 rows: account_tiers, tier_history,
#      member_events), step 2 only reads; both use the same as_of and the
#      same window (the last 12 UTC months, to as_of);
#   3. a second sweep (after a policy change): every account looked at again,
#      the 1% holding a tier reviewed (nothing to upgrade); ratio 2 / 3.
# The tiers evaluate_tiers gave must be those the DBA's SQL finds ("agree").
# A CHECKPOINT before each timed step: no step pays for writing out the
# buffers an earlier one (the load, the first sweep) left dirty.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/cluster.sh

ACCOUNTS=${ACCOUNTS:-1000000}
ENTRIES=${ENTRIES:-24}
BATCH=${BATCH:-10000}
PORT=${BENCH_PORT:-55434}
TMPD=$(mktemp -d /tmp/wallet-bench.XXXXXX)
chmod 755 "$TMPD"
DATA="$TMPD/data"
cleanup() { cluster_stop "$DATA"; rm -rf "$TMPD"; }
trap cleanup EXIT

cluster_install >/dev/null
# shared_buffers (as bench/codes.sh): the buffer pool holds wallet.accounts
# and its program index (about 160 MB at 1,000,000 accounts), as on a server
# sized for its accounts; with the default 128 MB every sweep would re-read
# them through the kernel.  The plain SQL's parallel scan of wallet.entries
# (about 4.4 GB) reads through a small ring of buffers with either setting.
cluster_start "$DATA" "$PORT" -c shared_preload_libraries=wallet -c max_wal_size=8GB -c checkpoint_timeout=30min \
    -c shared_buffers=${SHARED_BUFFERS:-256MB}
export PGHOST="$DATA" PGPORT="$PORT" PGUSER=postgres PGDATABASE=postgres
PATH="$PGBIN:$PATH"
q() { psql -XAtq -v ON_ERROR_STOP=1 "$@"; }
now_s() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

echo "machine: $(nproc) cores; $(uname -sr); other processes may be running (see load below)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "accounts: $ACCOUNTS, accruals per account: $ENTRIES (over the last 11 months), batch: $BATCH, shared_buffers: ${SHARED_BUFFERS:-256MB}"

t0=$(now_s)
q <<SQL
CREATE EXTENSION wallet;
SELECT wallet.create_merchant('bench') AS m \gset
SELECT wallet.create_program(:m, 'bench tiers') AS p \gset
-- points of account i per accrual: 100 for 0.1%, 50 for 1%, else 1..7
CREATE FUNCTION pg_temp.pts(i bigint) RETURNS bigint IMMUTABLE LANGUAGE sql
    AS 'SELECT CASE WHEN i % 1000 = 0 THEN 100 WHEN i % 100 = 0 THEN 50 ELSE 1 + i % 7 END';
-- accrual j (0 .. ENTRIES-1) is made in month M0 - k, k = 1 + j % 11, on day 1 + j / 11
CREATE TEMP TABLE m0 AS SELECT date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS m0;
-- the ledger value of each points-per-accrual figure: the same accruals, in buckets
CREATE TEMP TABLE lt AS
SELECT v.pts, format('lots={%s@never} earned=%s months={%s}', v.pts * $ENTRIES, v.pts * $ENTRIES,
                     (SELECT string_agg(to_char((SELECT m0 FROM m0) - make_interval(months => k), 'YYYY-MM') || ':' || v.pts * c, ',')
                        FROM (SELECT 1 + j % 11 AS k, count(*) AS c FROM generate_series(0, $ENTRIES - 1) j GROUP BY 1) x))::wallet.points_ledger AS ledger
  FROM (SELECT DISTINCT pg_temp.pts(i) AS pts FROM generate_series(1, 1000) i) v;
INSERT INTO wallet.members (merchant_id, member_ref)
SELECT :m, 'member-' || lpad(i::text, 8, '0') FROM generate_series(1, $ACCOUNTS) i;
INSERT INTO wallet.accounts (program_id, member_ref, ledger, member_id, merchant_id)
SELECT :p, x.member_ref, lt.ledger, x.member_id, :m
  FROM wallet.members x JOIN lt ON lt.pts = pg_temp.pts(substr(x.member_ref, 8)::bigint)
 WHERE x.merchant_id = :m ORDER BY x.member_id;
INSERT INTO wallet.entries (account_id, kind, amount, balance_after, reason, created_at, points, expires_at, merchant_id)
SELECT a.account_id, 'accrue', pg_temp.pts(substr(a.member_ref, 8)::bigint), pg_temp.pts(substr(a.member_ref, 8)::bigint) * (j + 1),
       'purchase', (SELECT m0 FROM m0) - make_interval(months => 1 + j % 11, days => -(j / 11)),
       pg_temp.pts(substr(a.member_ref, 8)::bigint), 'infinity', :m
  FROM wallet.accounts a CROSS JOIN generate_series(0, $ENTRIES - 1) j
 WHERE a.program_id = :p;
VACUUM ANALYZE wallet.members, wallet.accounts, wallet.entries;
SQL
echo "load: $(secs "$t0" "$(now_s)") s ($(q -c "SELECT count(*) FROM wallet.entries") entries, $(q -c "SELECT pg_size_pretty(pg_total_relation_size('wallet.entries'))"))"
p=$(q -c "SELECT program_id FROM wallet.programs WHERE name = 'bench tiers'")
m=$(q -c "SELECT merchant_id FROM wallet.programs WHERE program_id = $p")
q -c "SELECT wallet.create_tier($p, 1, 'Silver', 50 * $ENTRIES), wallet.create_tier($p, 2, 'Gold', 100 * $ENTRIES)" >/dev/null
# one instant for every step: the same window on both sides
asof=$(q -c "SELECT now()")
echo "as_of: $asof"

echo
echo "== 1. wallet.evaluate_tiers over every account (a sweep: the tiers are new)"
q -c "CHECKPOINT"
t1=$(now_s)
q -c "CALL wallet.evaluate_tiers_batched($p, '$asof', $BATCH)"
e1=$(secs "$t1" "$(now_s)")
printf '%-58s %10s s\n' "evaluate_tiers, $ACCOUNTS accounts" "$e1"
echo "time: $(awk -v t="$e1" -v n="$ACCOUNTS" 'BEGIN { printf "%.2f s for %d accounts, %.1f s per million (target < 60 s per million: %s)", t, n, t * 1e6 / n, (t * 1e6 / n < 60 ? "met" : "missed") }')"
held=$(q -c "SELECT coalesce(string_agg(rank || ':' || n, ' ' ORDER BY rank), '') FROM (SELECT rank, count(*) n FROM wallet.account_tiers WHERE program_id = $p AND rank > 0 GROUP BY rank) x")
echo "tiers held after it (rank:accounts): $held"

echo
echo "== 2. the plain SQL a DBA would write: accruals in the window per account, over wallet.entries"
q -c "CHECKPOINT"
t2=$(now_s)
dba=$(q <<SQL
SELECT coalesce(string_agg(rank || ':' || n, ' ' ORDER BY rank), '') FROM (
  SELECT x.rank, count(*) AS n FROM (
    SELECT s.account_id, (SELECT max(t.rank) FROM wallet.tiers t WHERE t.program_id = $p AND t.min_points <= s.earned) AS rank
      FROM (SELECT e.account_id, sum(e.points) AS earned FROM wallet.entries e
             WHERE e.merchant_id = $m AND e.kind = 'accrue'
               AND e.created_at >= (date_trunc('month', '$asof'::timestamptz AT TIME ZONE 'UTC') - interval '11 months') AT TIME ZONE 'UTC'
               AND e.created_at <= '$asof'::timestamptz
             GROUP BY e.account_id) s) x
   WHERE x.rank IS NOT NULL GROUP BY x.rank) y;
SQL
)
e2=$(secs "$t2" "$(now_s)")
printf '%-58s %10s s\n' "plain SQL over wallet.entries" "$e2"
echo "tiers it finds (rank:accounts): $dba"
[ "$dba" = "$held" ] && echo "evaluate_tiers and the plain SQL agree" || echo "evaluate_tiers and the plain SQL DISAGREE"
echo "ratio plain SQL / evaluate_tiers: $(awk -v a="$e2" -v b="$e1" 'BEGIN { printf "%.2fx   (target >= 10x: %s)", a / b, (a / b >= 10 ? "met" : "missed") }')"

echo
echo "== 3. a second sweep (a policy change): every account again, the holders reviewed"
q -c "SELECT wallet.set_tier_policy($p, tier_grace_days => 60)" >/dev/null
q -c "CHECKPOINT"
t3=$(now_s)
q -c "CALL wallet.evaluate_tiers_batched($p, '$asof', $BATCH)"
e3=$(secs "$t3" "$(now_s)")
printf '%-58s %10s s\n' "evaluate_tiers again, $ACCOUNTS accounts" "$e3"
echo "ratio plain SQL / evaluate_tiers (second sweep): $(awk -v a="$e2" -v b="$e3" 'BEGIN { printf "%.2fx   (target >= 10x: %s)", a / b, (a / b >= 10 ? "met" : "missed") }')"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

#!/usr/bin/env bash
# Benchmark of the points ledger (not a test: it prints figures, asserts nothing).
#
#   bench/ledger.sh            (DURATION=20 seconds per run by default; HOT_POSTINGS=200000 in part 4)
#
# Starts its own throwaway cluster (test/cluster.sh, shared_preload_libraries=wallet)
# and prints, measured in this one run on this machine:
#   1. ledger TPS: 8 clients (-M prepared) calling wallet.accrue or wallet.redeem
#      (one operation = one transaction) on uniformly random accounts out of 10,000,
#      next to pgbench's built-in tpcb-like at scale 10 with 8 clients; the
#      ledger's clients log in as bench_app, a role holding wallet_app that acts
#      for the merchant (README "Roles and privileges"): SECURITY DEFINER
#      functions, merchant checks and row-level security in force;
#      target: ledger >= 1.0x tpcb-like;
#   2. one hot account: the same mix with all 8 clients on one account vs 1 client;
#      target: hot >= 0.7x single-client (no collapse, no deadlock under contention);
#   3. the stored ledger size (pg_column_size) of an account with 2 years of daily
#      activity under a 12-month, month-granularity policy; target <= 512 bytes;
#   4. a long hot-account run: HOT_POSTINGS (200,000) postings by 8 clients on one
#      fresh account, in five equal parts; TPS of the first and the last fifth
#      (target: last >= 0.9x first: no slowdown as the account's journal grows);
#   5. balance_at on an account with 100,000 entries: the journal replay it used
#      to do vs what it does now, milliseconds per call at random instants.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/cluster.sh

DURATION=${DURATION:-20}
HOT_POSTINGS=${HOT_POSTINGS:-200000}
HISTORY=${HISTORY:-100000}   # entries of the account of part 5 (two postings per loop)
CLIENTS=8
ACCOUNTS=10000
PORT=${BENCH_PORT:-55433}
TMPD=$(mktemp -d /tmp/wallet-bench.XXXXXX)
chmod 755 "$TMPD"
DATA="$TMPD/data"
cleanup() { cluster_stop "$DATA"; rm -rf "$TMPD"; }   # the cluster goes, and the role bench_app with it
trap cleanup EXIT

cluster_install >/dev/null
cluster_start "$DATA" "$PORT" -c shared_preload_libraries=wallet
export PGHOST="$DATA" PGPORT="$PORT" PGUSER=postgres
PATH="$PGBIN:$PATH"
q() { psql -XAtq -v ON_ERROR_STOP=1 "$@"; }

echo "machine: $(nproc) cores; $(uname -sr); other processes may be running (see load below)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------
createdb bench_tpcb
pgbench -i -q -s 10 bench_tpcb >/dev/null 2>&1

createdb bench_ledger
q -d bench_ledger >/dev/null <<SQL
CREATE EXTENSION wallet;
SELECT wallet.create_program(wallet.create_merchant('bench'), 'bench points', '12 months', 'month') AS program \gset
-- Every account starts rich enough that random redemptions never run out.
SELECT count(*) FROM generate_series(1, $ACCOUNTS) i,
       LATERAL wallet.accrue(wallet.open_account(:program, 'member-' || i), 100000000, 'seed-' || i, 'seed');
VACUUM ANALYZE;
SQL
read -r amin amax <<< "$(q -d bench_ledger -F ' ' -c "SELECT min(account_id), max(account_id) FROM wallet.accounts")"
# The application's login role, as README "Roles and privileges" makes it.
q -d bench_ledger >/dev/null <<'SQL'
CREATE ROLE bench_app LOGIN;
GRANT wallet_app TO bench_app;
SELECT wallet.grant_merchant(1, 'bench_app');
SQL
APP=(-U bench_app)

# One script per operation (one operation = one transaction); keys are random and unique.
for op in accrue:a:purchase redeem:r:coupon; do
    IFS=: read -r fn tag why <<< "$op"
    cat > "$TMPD/$fn.sql" <<SQL
\\set aid random(:amin, :amax)
\\set pts random(1, 100)
\\set k random(1, 1000000000000000)
SELECT balance_after FROM wallet.$fn(:aid, :pts, '$tag' || (:client_id)::text || '-' || (:k)::text, '$why');
SQL
done

# run NAME DB CLIENTS [pgbench args...]: prints and returns the TPS.
tps() {
    local name=$1 db=$2 c=$3; shift 3
    local out
    # the ledger runs as the application's role; tpcb-like as the superuser
    out=$(pgbench -n -M prepared -c "$c" -j "$(( c < 2 ? 1 : 2 ))" -T "$DURATION" \
                  $([ "$db" = bench_ledger ] && echo "${APP[@]}") "$@" "$db" 2>&1) || { echo "$out" >&2; return 1; }
    if echo "$out" | grep -qiE 'aborted|deadlock'; then echo "$out" >&2; return 1; fi
    echo "$out" | sed -n 's/^tps = \([0-9]*\)\.[0-9]* .*/\1/p'
}
# ratio A B TARGET: "A/B x (target >= TARGET x: met|missed)"
ratio() {
    awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { if (b > 0) printf "%.2fx   (target >= %.1fx: %s)", a / b, t, (a / b >= t ? "met" : "missed"); else print "n/a" }'
}

echo
echo "== 1. ledger operations vs tpcb-like (${DURATION}s each, $CLIENTS clients, -M prepared)"
t_tpcb=$(tps tpcb bench_tpcb $CLIENTS)
printf '%-58s %10s TPS\n' "pgbench tpcb-like, scale 10, $CLIENTS clients" "$t_tpcb"
t_ledger=$(tps ledger bench_ledger $CLIENTS -D amin="$amin" -D amax="$amax" -f "$TMPD/accrue.sql@1" -f "$TMPD/redeem.sql@1")
printf '%-58s %10s TPS\n' "wallet.accrue/redeem, random of $ACCOUNTS accounts, $CLIENTS clients" "$t_ledger"
echo "ratio ledger / tpcb-like: $(ratio "$t_ledger" "$t_tpcb" 1.0)"

echo
echo "== 2. one hot account (${DURATION}s each)"
# Each run gets its own account, so that neither starts with the other's history.
hot1=$amin; hot8=$((amin + 1))
t_one=$(tps hot1 bench_ledger 1 -D amin="$hot1" -D amax="$hot1" -f "$TMPD/accrue.sql@1" -f "$TMPD/redeem.sql@1")
printf '%-58s %10s TPS\n' "wallet.accrue/redeem, one account, 1 client" "$t_one"
t_hot=$(tps hot8 bench_ledger $CLIENTS -D amin="$hot8" -D amax="$hot8" -f "$TMPD/accrue.sql@1" -f "$TMPD/redeem.sql@1")
printf '%-58s %10s TPS\n' "wallet.accrue/redeem, one account, $CLIENTS clients" "$t_hot"
echo "ratio hot ($CLIENTS clients) / single client: $(ratio "$t_hot" "$t_one" 0.7)"
bad=$(q -d bench_ledger -c "SELECT count(*) FROM wallet.verify_ledger($hot1)")
bad=$((bad + $(q -d bench_ledger -c "SELECT count(*) FROM wallet.verify_ledger($hot8)")))
echo "verify_ledger of the two hot accounts after the runs: $bad rows (0 = consistent)"

echo
echo "== 3. ledger value size: 2 years of daily activity, 12-month policy, month granularity"
# Two years of days, simulated ahead of today (an accrual cannot be dated in the
# past): each day earns 20..119 points with the policy's expiry (the end of the
# month 12 months later) and spends about half of them; then the expiry as of
# the last day is applied to the value.
q -d bench_ledger <<'SQL'
SELECT wallet.create_program(m.merchant_id, 'size points', '12 months', 'month') AS program
  FROM wallet.merchants m WHERE m.name = 'bench' \gset
SELECT wallet.open_account(:program, 'two-years') AS acct \gset
DO $$
DECLARE
    acct bigint := (SELECT account_id FROM wallet.accounts WHERE member_ref = 'two-years');
    d timestamptz;
    i int;
    pts bigint;
BEGIN
    FOR i IN 0 .. 729 LOOP
        d := now() + make_interval(days => i);
        pts := 20 + (i * 37) % 100;
        PERFORM wallet.accrue(acct, pts, 'size-a-' || i, 'purchase', NULL,
                              date_trunc('month', d + interval '12 months') + interval '1 month');
        PERFORM wallet.redeem(acct, pts / 2, 'size-r-' || i, 'coupon');
    END LOOP;
END $$;
-- expire_points refuses an instant in the future: apply the expiry as of the
-- last day to the value directly (what the expiry job will post then)
UPDATE wallet.accounts SET ledger = (wallet.ledger_apply(ledger, 'expire', now() + interval '729 days', NULL)).ledger
 WHERE account_id = :acct;
SELECT format('stored value after the simulation:        %s bytes  (%s lots)', pg_column_size(ledger),
              (SELECT count(*) FROM regexp_matches(ledger::text, '@', 'g')))
  FROM wallet.accounts WHERE account_id = :acct;
-- The simulation runs in one day, so its monthly earned buckets fill one month;
-- the same state with all 24 monthly buckets filled (as two real years leave it):
SELECT format('with all 24 monthly earned buckets filled: %s bytes  (target <= 512: %s)', size,
              CASE WHEN size <= 512 THEN 'met' ELSE 'missed' END)
  FROM (SELECT pg_column_size(regexp_replace(ledger::text, 'months=\{[^}]*\}',
                  'months={' || (SELECT string_agg(to_char(date_trunc('month', now()) - make_interval(months => m), 'YYYY-MM') || ':' || (1500 + m * 7), ',' ORDER BY m)
                                   FROM generate_series(0, 23) m) || '}')::wallet.points_ledger) AS size
          FROM wallet.accounts WHERE account_id = :acct) s;
SQL
echo
echo "== 4. long hot-account run: $HOT_POSTINGS postings on one fresh account, $CLIENTS clients, in five parts"
# One account, the same accrue/redeem mix, five consecutive runs of a fifth
# each: a slowdown as the account's journal and row versions grow shows as a
# falling TPS from part to part.
hotl=$((amin + 2))
per_client=$((HOT_POSTINGS / 5 / CLIENTS))
parts=()
for part in 1 2 3 4 5; do
    out=$(pgbench -n -M prepared -c "$CLIENTS" -j 2 -t "$per_client" "${APP[@]}" -D amin="$hotl" -D amax="$hotl" \
                  -f "$TMPD/accrue.sql@1" -f "$TMPD/redeem.sql@1" bench_ledger 2>&1) || { echo "$out" >&2; exit 1; }
    t=$(echo "$out" | sed -n 's/^tps = \([0-9]*\)\.[0-9]* .*/\1/p')
    parts+=("$t")
    printf '%-58s %10s TPS\n' "part $part: postings $(( (part - 1) * per_client * CLIENTS + 1 ))..$(( part * per_client * CLIENTS ))" "$t"
done
echo "ratio last fifth / first fifth: $(ratio "${parts[4]}" "${parts[0]}" 0.9)"
q -d bench_ledger -F ' ' -c "SELECT 'account row: ' || n_tup_upd || ' updates, ' || n_tup_hot_upd || ' HOT; journal of the account: '
                               || (SELECT count(*) FROM wallet.entries WHERE account_id = $hotl) || ' entries'
                               FROM pg_stat_user_tables WHERE relid = 'wallet.accounts'::regclass"
echo "verify_ledger of the account: $(q -d bench_ledger -c "SELECT count(*) FROM wallet.verify_ledger($hotl)") rows (0 = consistent)"

echo
echo "== 5. balance_at on an account with $HISTORY entries: journal replay (before) vs now"
q -d bench_ledger -v history="$HISTORY" <<'SQL'
SELECT set_config('bench.history', :'history', false) AS _history \gset
SELECT wallet.create_program(m.merchant_id, 'history points', '12 months', 'month') AS program
  FROM wallet.merchants m WHERE m.name = 'bench' \gset
SELECT wallet.open_account(:program, 'long-history') AS acct \gset
-- committed every 1,000 postings: thousands of updates of one row in one
-- transaction leave row versions that nothing can prune until it ends
DO $$
DECLARE
    acct bigint := (SELECT account_id FROM wallet.accounts WHERE member_ref = 'long-history');
BEGIN
    FOR i IN 1 .. current_setting('bench.history')::int / 2 LOOP
        PERFORM wallet.accrue(acct, 10, 'h-a-' || i, 'purchase');
        PERFORM wallet.redeem(acct, 5, 'h-r-' || i, 'coupon');
        IF i % 500 = 0 THEN COMMIT; END IF;
    END LOOP;
END $$;
CREATE TEMP TABLE span AS
    SELECT min(created_at) AS lo, max(created_at) AS hi, count(*) AS n FROM wallet.entries WHERE account_id = :acct;
CREATE TEMP TABLE instants AS SELECT i, lo + random() * (hi - lo) AS ts FROM span, generate_series(1, 1000) i;
CREATE TEMP TABLE timing (what text, calls int, ms double precision, mismatches bigint);
DO $$
DECLARE
    acct bigint := (SELECT account_id FROM wallet.accounts WHERE member_ref = 'long-history');
    t0 timestamptz;
    b bigint;
    bad bigint := 0;
    r record;
BEGIN
    t0 := clock_timestamp();
    FOR r IN SELECT ts FROM instants WHERE i <= 3 LOOP
        b := wallet.ledger_balance((wallet.replay_ledger(acct, r.ts)).ledger, r.ts);
        IF b IS DISTINCT FROM wallet.balance_at(acct, r.ts) THEN bad := bad + 1; END IF;
    END LOOP;
    INSERT INTO timing VALUES ('replay', 3, extract(epoch FROM clock_timestamp() - t0) * 1000 / 3, bad);
    t0 := clock_timestamp();
    FOR r IN SELECT ts FROM instants LOOP
        b := wallet.balance_at(acct, r.ts);
    END LOOP;
    INSERT INTO timing VALUES ('balance_at', 1000, extract(epoch FROM clock_timestamp() - t0) * 1000 / 1000, NULL);
END $$;
SELECT format('account with %s entries', n) FROM span;
SELECT format('%-58s %10s ms/call', CASE what WHEN 'replay' THEN 'before: journal replay up to ts (3 random instants)'
                                            ELSE 'now: wallet.balance_at (1,000 random instants)' END, round(ms::numeric, 3))
  FROM timing ORDER BY what DESC;
SELECT format('speed-up: %sx; replay and balance_at disagree at %s of the 3 instants (0 = equal)',
              round((SELECT ms FROM timing WHERE what = 'replay') / (SELECT ms FROM timing WHERE what = 'balance_at')),
              (SELECT mismatches FROM timing WHERE what = 'replay'));
SQL
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

#!/usr/bin/env bash
# wallet.run_maintenance scheduled by pg_cron, as README "Maintenance" says,
# on a throwaway cluster of its own (shared_preload_libraries = 'wallet,pg_cron',
# cron.database_name): the job runs, succeeds, posts the expire entry of a lot
# that expired, and calls wallet.purge_code_attempts.  pg_cron (Debian package
# postgresql-15-cron) is installed by test/deps.sh.  pg_cron before 1.5 runs a
# job at most once a minute, so this test may wait up to about 62 seconds; with
# 1.5 or later it schedules the job every 2 seconds.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d /tmp/wallet-maint-cron.XXXXXX)
. "$ROOT/test/concurrency/codes_lib.sh"
own_cluster 21
echo "1..7"

cq() { psql -X -qAt -h "$DATA" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

# pg_cron runs jobs through a libpq connection to cron.host: the socket
# directory here (the cluster listens on no TCP port).  track_functions shows
# which functions the job called.
cluster_start "$DATA" "$PORT" -c shared_preload_libraries=wallet,pg_cron -c cron.database_name=postgres \
    -c cron.host="$DATA" -c track_functions=all >/dev/null 2>&1
ok $? "a cluster with shared_preload_libraries = 'wallet,pg_cron' and cron.database_name starts"
[ -f "$DATA/postmaster.pid" ] || { tail -n 20 "$DATA/server.log" | sed 's/^/# /'; exit 1; }

cq >/dev/null 2>"$TMP/setup.err" <<'SQL'
CREATE EXTENSION wallet;
CREATE EXTENSION pg_cron;
SELECT wallet.create_program(wallet.create_merchant('cron'), 'cron points') AS p \gset
SELECT wallet.open_account(:p, 'ada') AS a \gset
SELECT (wallet.accrue(:a, 30, 'keeps', 'purchase')).balance_after;
SELECT (wallet.accrue(:a, 70, 'expires', 'purchase', NULL, clock_timestamp() + interval '1 second')).balance_after;
CREATE TABLE public.expiry AS SELECT expires_at AS at FROM wallet.entries WHERE idempotency_key = 'expires';
SQL
ok $? "CREATE EXTENSION wallet and pg_cron; an account with 70 points expiring in a second" "$(cat "$TMP/setup.err")"

version=$(cq -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'")
# interval schedules ('2 seconds') came with pg_cron 1.5
if [ "$(printf '1.5\n%s\n' "$version" | sort -V | head -n 1)" = 1.5 ]; then schedule='2 seconds'; else schedule='* * * * *'; fi
echo "# pg_cron $version: schedule '$schedule'"
job=$(cq -c "SELECT cron.schedule('wallet-maintenance', '$schedule', 'CALL wallet.run_maintenance()')")
ok $? "cron.schedule('wallet-maintenance', '$schedule', 'CALL wallet.run_maintenance()') makes job $job"

# Wait (at most 150 s) for a finished run of the job that started after the lot expired.
status=
for i in $(seq 1 300); do
    status=$(cq -c "SELECT string_agg(DISTINCT status, ',') FROM cron.job_run_details
                     WHERE jobid = $job AND status IN ('succeeded', 'failed') AND start_time > (SELECT at FROM public.expiry)")
    [ -n "$status" ] && break
    sleep 0.5
done
is "$status" succeeded "the job ran and succeeded (cron.job_run_details)"
[ "$status" = succeeded ] || cq -c "SELECT status, return_message FROM cron.job_run_details WHERE jobid = $job" | sed 's/^/# /'
is "$(cq -c "SELECT string_agg(amount || '/' || balance_after, ',') FROM wallet.entries WHERE kind = 'expire'")" "-70/30" \
   "the run posted the expire entry of the lot: -70, leaving 30"
is "$(cq -c "SELECT coalesce(sum(calls), 0) > 0 FROM pg_stat_user_functions WHERE schemaname = 'wallet' AND funcname = 'purge_code_attempts'")" t \
   "the run called wallet.purge_code_attempts"
is "$(cq -c "SELECT count(*) FROM wallet.verify_ledger()")" 0 "the ledger verifies after the run"
cq -c "SELECT cron.unschedule($job)" >/dev/null
exit $((T_FAILED > 0))

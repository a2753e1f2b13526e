#!/usr/bin/env bash
# A crash never makes generate_codes hand out a serial twice.  The codes of a
# transaction that rolled back may already be printed, yet its WAL is not
# flushed at rollback; so generate_codes puts the reservation on disk before
# the first code leaves.  On a throwaway cluster of its own whose WAL writer
# waits 10 s (so only generate_codes itself can have written the WAL), a
# transaction generates codes and rolls back, the server is killed at once
# (immediate stop: no shutdown checkpoint), and after recovery the next codes
# must come after the rolled-back ones.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d /tmp/wallet-codes-crash.XXXXXX)
. "$ROOT/test/lib.sh"
own_cluster 19
plan 5

root_key_test "$TMP/root.key"
SETTINGS=(-c shared_preload_libraries=wallet -c wallet.root_key_file="$TMP/root.key" -c wal_writer_delay=10000ms)
cluster_start "$DATA" "$PORT" "${SETTINGS[@]}" >/dev/null 2>&1; ok $? "a throwaway cluster with a lazy WAL writer starts"
crash_restart() {
    as_pg "$PGBIN/pg_ctl" -D "$DATA" -m immediate -w -t 60 stop >/dev/null 2>&1
    cluster_start "$DATA" "$PORT" "${SETTINGS[@]}" >/dev/null 2>&1
}

cq -c "CREATE EXTENSION wallet" -c "SELECT wallet.create_campaign(wallet.create_merchant('crash'), 'c')" -c "CHECKPOINT" >/dev/null
# a block of many codes (nextval and setval) ...
is "$(cq -c "BEGIN" -c "SELECT min(wallet.code_serial(x)) || ' ' || max(wallet.code_serial(x)) FROM wallet.generate_codes(1, 1000) x" -c "ROLLBACK")" \
   "1 1000" "a transaction got serials 1..1000 and rolled back"
crash_restart
is "$(cq -c "SELECT min(wallet.code_serial(x)) >= 1001 FROM wallet.generate_codes(1, 1) x")" t \
   "after a crash right after the rollback, the next code comes after serial 1000"
# ... and single codes (nextval alone, as wallet.issue_code makes them)
s=$(cq -c "CHECKPOINT" -c "BEGIN" -c "SELECT max(wallet.code_serial(x)) FROM wallet.generate_codes(1, 1) x" -c "ROLLBACK")
crash_restart
is "$(cq -c "SELECT min(wallet.code_serial(x)) > $s FROM wallet.generate_codes(1, 1) x")" t \
   "a single code after a checkpoint, rolled back, then a crash: the next code comes after it ($s)"
is "$(cq -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walwriter'")" 1 "(the server recovered and runs normally)"
finish

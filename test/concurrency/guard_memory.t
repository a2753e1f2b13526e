#!/usr/bin/env bash
# The brute-force guard's counters are bounded (wallet.guard_max_entries):
# on a throwaway cluster of its own with the smallest table (64 counters),
# a full table refuses failing checks that need a new counter (answered
# throttled, never forgotten) while genuine codes pass; counters whose window
# has passed are reused; and, as documented, a restart starts them afresh.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d /tmp/wallet-guard-memory.XXXXXX)
. "$ROOT/test/lib.sh"
own_cluster 23
plan 10

root_key_test "$TMP/root.key"
SETTINGS=(-c shared_preload_libraries=wallet -c wallet.root_key_file="$TMP/root.key" -c wallet.guard_max_entries=64)
cluster_start "$DATA" "$PORT" "${SETTINGS[@]}" >/dev/null 2>&1; ok $? "a throwaway cluster with wallet.guard_max_entries = 64 starts"
export PGHOST="$DATA" PGPORT="$PORT" PGUSER=postgres; DB=postgres   # for forge_function

cq -c "CREATE EXTENSION wallet" >/dev/null
forge_function
cq >/dev/null <<'SQL'
SELECT wallet.create_campaign(wallet.create_merchant('m'), 'c', max_redemptions_per_code => NULL);
CREATE TABLE codes AS SELECT g::text AS code FROM wallet.generate_codes(1, 1) g;
CREATE TABLE forgery AS SELECT forge(code) AS code FROM codes;
SQL
CODE=$(cq -c "SELECT code FROM codes")
FORGED=$(cq -c "SELECT code FROM forgery")

# 64 members fail once each within a 6-second window: the table is full.
cq -c "SELECT wallet.set_code_guard(2, NULL, '6 seconds')" >/dev/null
is "$(cq -c "SELECT count(*) FILTER (WHERE wallet.check_code('$FORGED', 'm' || i) = 'forged') FROM generate_series(1, 64) i")" 64 \
   "64 members fail once each: every failure judged"
is "$(cq -c "SELECT wallet.check_code('$FORGED', 'm65')")" throttled "a 65th failing member finds the table full: throttled, not forgotten"
is "$(cq -c "SELECT count(*) FROM wallet.code_failed_attempts WHERE member_ref = 'm65'")" 0 "(and not recorded as a judged failure)"
is "$(cq -c "SELECT wallet.check_code('$CODE', 'm66')")" ok "a genuine code needs no counter: it passes while the table is full"
is "$(cq -c "SELECT wallet.check_code('$FORGED', 'm1') || '/' || wallet.check_code('$CODE', 'm1')")" forged/throttled \
   "a member with a counter is still counted: second failure, then throttled"
grep -q "brute-force guard counters are full" "$DATA/server.log"; ok $? "the server log says the counters are full"
sleep 6.2
is "$(cq -c "SELECT wallet.check_code('$FORGED', 'm65')")" forged "once the window has passed, expired counters make room"

# A restart starts the counters afresh (documented; the history table keeps
# committed failures for forensics).
cq -c "SELECT wallet.set_code_guard(2, NULL, '1 hour')" -c "SELECT wallet.check_code('$FORGED', 'zed') FROM generate_series(1, 2)" >/dev/null
is "$(cq -c "SELECT wallet.check_code('$CODE', 'zed')")" throttled "zed is throttled"
cluster_stop "$DATA"; cluster_start "$DATA" "$PORT" "${SETTINGS[@]}" >/dev/null 2>&1
is "$(cq -c "SELECT wallet.check_code('$CODE', 'zed') || '/' || (SELECT count(*) FROM wallet.code_failed_attempts WHERE member_ref = 'zed')")" ok/2 \
   "after a restart zed is judged again; his 2 failures stay in the history table"
finish

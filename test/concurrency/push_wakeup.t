#!/usr/bin/env bash
# The wake-up NOTIFY of the push queue goes to the merchant's secret name of
# the channel, wallet.push_channel(merchant, channel), printing TAP.  LISTEN
# needs no privilege: a NOTIFY named after the channel alone would tell any
# role when another merchant enqueues and on which channels.
#
# A listener session LISTENs on the names of two merchants A and B for two
# channels, and on the old names wallet_push_<channel>; another session
# enqueues for A through both paths: wallet.enqueue_push (C,
# src/push_enqueue.c) on channel sms and wallet.enqueue_push_audience
# (PL/pgSQL, wallet_internal.push_notify) on channel bulk.  A's two names get
# their NOTIFY; B's names and the old names get none.
#
# Needs PGHOST/PGPORT/PGUSER of a running cluster with wallet installable.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DB=conc_push_wakeup
TMP=$(mktemp -d /tmp/push_wakeup.XXXXXX)
chmod 755 "$TMP"
LISTENER_PID=
trap '[ -n "$LISTENER_PID" ] && kill "$LISTENER_PID" 2>/dev/null; rm -rf "$TMP"; dropdb --if-exists "$DB" >/dev/null 2>&1' EXIT
. "$ROOT/test/lib.sh"
Q_TIMEOUT=60

plan 6

timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
timeout 30 createdb "$DB" || { echo "Bail out! createdb $DB failed"; exit 1; }
q -c "CREATE EXTENSION wallet" >/dev/null || { echo "Bail out! CREATE EXTENSION failed"; exit 1; }
A=$(q -c "SELECT wallet.create_merchant('wake A')")
B=$(q -c "SELECT wallet.create_merchant('wake B')")
q -c "SELECT wallet.set_push_settings($A, NULL, NULL)" -c "SELECT wallet.set_push_settings($B, NULL, NULL)" \
  -c "SELECT wallet.upsert_member($A, 'u2')" >/dev/null
A_SMS=$(q -c "SELECT wallet.push_channel($A, 'sms')")
A_BULK=$(q -c "SELECT wallet.push_channel($A, 'bulk')")
B_SMS=$(q -c "SELECT wallet.push_channel($B, 'sms')")
B_BULK=$(q -c "SELECT wallet.push_channel($B, 'bulk')")

# the listener: LISTEN, say ready, wait; the notifications that came in are
# printed by psql after the commands that follow the wait
mkfifo "$TMP/listener.fifo"
psql -X -qAt -d "$DB" < "$TMP/listener.fifo" > "$TMP/listener.out" 2>&1 &
LISTENER_PID=$!
exec {LFD}> "$TMP/listener.fifo"
cat >&$LFD <<SQL
LISTEN "$A_SMS";
LISTEN "$A_BULK";
LISTEN "$B_SMS";
LISTEN "$B_BULK";
LISTEN wallet_push_sms;
LISTEN wallet_push_bulk;
SELECT 'ready';
SQL
for i in $(seq 1 100); do grep -q '^ready$' "$TMP/listener.out" && break; sleep 0.1; done

q -c "SELECT status FROM wallet.enqueue_push($A, 'u1', 'sms', 'service', '{}')" \
  -c "SELECT string_agg(status, ',') FROM wallet.enqueue_push_audience($A, '{u2}', 'bulk', 'service', '{}')" > "$TMP/enqueue.out" 2>&1
is "$(tr '\n' ' ' < "$TMP/enqueue.out")" "queued queued " "fixture: A enqueues a message due now on sms (enqueue_push) and on bulk (enqueue_push_audience)"

# let the notifications arrive, then two more commands for psql to print them
sleep 1
echo "SELECT pg_sleep(0.5);" >&$LFD
echo "SELECT 'done';" >&$LFD
exec {LFD}>&-
wait "$LISTENER_PID"
LISTENER_PID=
out=$(cat "$TMP/listener.out")

got() { grep -c "notification \"$1\" received" "$TMP/listener.out"; }
ok $([ "$(got "$A_SMS")" -ge 1 ]; echo $?) "enqueue_push (C) NOTIFYs A's name of sms, wallet.push_channel($A, 'sms')" "$out"
ok $([ "$(got "$A_BULK")" -ge 1 ]; echo $?) "enqueue_push_audience (PL/pgSQL) NOTIFYs A's name of bulk, wallet.push_channel($A, 'bulk')" "$out"
is "$(got "$B_SMS")/$(got "$B_BULK")" "0/0" "B's names of the same channels hear nothing of A's messages"
is "$(got wallet_push_sms)/$(got wallet_push_bulk)" "0/0" "the channel's bare name wallet_push_<channel> is not notified any more"
is "$(grep -c 'notification "' "$TMP/listener.out")" "2" "nothing else was notified"

finish

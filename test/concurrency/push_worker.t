#!/usr/bin/env bash
# The example push worker (examples/push_worker.c, C with libpq) against a
# cluster, printing TAP: it is built, delivers 200 queued messages through
# its stub provider that fails a fifth of the sends (retried with backoff, or
# dead letters), wakes up on NOTIFY for a message enqueued while it idles
# (its poll interval is 30 s, so only the NOTIFY can wake it in time: it
# listens on wallet.push_channel(merchant, channel) only), and
# stops cleanly on SIGTERM with nothing left claimed.
#
# Needs PGHOST/PGPORT/PGUSER of a running cluster with wallet installable.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DB=conc_push_worker
TMP=$(mktemp -d /tmp/push_worker.XXXXXX)
chmod 755 "$TMP"
WORKER_PID=
trap '[ -n "$WORKER_PID" ] && kill "$WORKER_PID" 2>/dev/null; rm -rf "$TMP"' EXIT
. "$ROOT/test/lib.sh"
Q_TIMEOUT=60

plan 8

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
cc -Wall -Wextra -Werror -o "$TMP/push_worker" "$ROOT/examples/push_worker.c" \
   -I"$("$PG_CONFIG" --includedir)" -L"$("$PG_CONFIG" --libdir)" -lpq 2> "$TMP/cc.err"
ok $? "examples/push_worker.c builds with -Wall -Wextra -Werror against libpq" "$(cat "$TMP/cc.err")"

timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
timeout 30 createdb "$DB" || { echo "Bail out! createdb $DB failed"; exit 1; }
M=$(q -c "CREATE EXTENSION wallet" -c "SELECT wallet.create_merchant('worker merchant')")
q -c "SELECT wallet.set_push_settings($M, NULL, NULL, 'UTC', 3, '1 second')" \
  -c "SELECT count(*) FROM generate_series(1, 200) i, LATERAL wallet.enqueue_push($M, 'w' || (i % 20), 'worker_t', 'service', jsonb_build_object('n', i)) e WHERE e.status = 'queued'" > "$TMP/setup" 2>&1
is "$(tail -n 1 "$TMP/setup")" "200" "fixture: 200 service messages queued on channel worker_t"

"$TMP/push_worker" -c worker_t -n 20 -l 30 -p 30 -f 0.2 -s 42 "dbname=$DB" > "$TMP/worker.out" 2>&1 &
WORKER_PID=$!
# done: nothing queued or being sent any more (retries wait their backoff of 1-4 s)
for i in $(seq 1 300); do
    left=$(q -c "SELECT count(*) FROM wallet.push_messages WHERE channel = 'worker_t' AND status IN ('queued', 'sending')")
    [ "$left" = 0 ] && break
    sleep 0.1
    # a retry whose backoff passed is picked up by the poll (30 s) or the next NOTIFY: nudge with a NOTIFY
    # on the merchant's wake-up name of the channel (the only name the worker listens on)
    [ $((i % 10)) -eq 0 ] && q -c "SELECT pg_notify(wallet.push_channel($M, 'worker_t'), '')" >/dev/null
done
counts=$(q -c "SELECT count(*) FILTER (WHERE status = 'sent') || '/' || count(*) FILTER (WHERE status = 'dead') || '/' || count(*)
                 FROM wallet.push_messages WHERE channel = 'worker_t'")
IFS=/ read -r n_sent n_dead n_all <<< "$counts"
ok $([ "$left" = 0 ] && [ $((n_sent + n_dead)) -eq 200 ] && [ "$n_sent" -gt 100 ] && [ "$n_dead" -gt 0 ]; echo $?) \
   "the worker delivered every message: $n_sent sent, $n_dead dead letters (permanent failures or 3 attempts)" "$(cat "$TMP/worker.out")"
retried=$(q -c "SELECT count(DISTINCT push_id) FROM wallet.push_attempts a WHERE a.outcome = 'failed'
                   AND EXISTS (SELECT FROM wallet.push_attempts b WHERE b.push_id = a.push_id AND b.outcome = 'sent')")
ok $([ "$retried" -gt 0 ]; echo $?) "$retried messages failed first and were sent on a later attempt (backoff and retry)"

# idle now, with a 30 s poll: only the NOTIFY of enqueue_push can wake it within 5 s
sleep 1
id=$(q -c "SELECT push_id FROM wallet.enqueue_push($M, 'w1', 'worker_t', 'service', '{\"n\": \"late\"}')")
for i in $(seq 1 50); do
    st=$(q -c "SELECT status FROM wallet.push_messages WHERE push_id = $id")
    [ "$st" != queued ] && [ "$st" != sending ] && break
    sleep 0.1
done
ok $([ "$st" = sent ] || [ "$st" = dead ] || [ "$(q -c "SELECT attempts FROM wallet.push_messages WHERE push_id = $id")" -gt 0 ]; echo $?) \
   "a message enqueued while the worker idles is taken within 5 s: woken by NOTIFY (status $st)"

kill -TERM "$WORKER_PID"
wait "$WORKER_PID"; rc=$?
WORKER_PID=
is "$rc" "0" "SIGTERM: the worker exits 0"
grep -q 'stopped cleanly' "$TMP/worker.out"
ok $? "and says it stopped cleanly" "$(cat "$TMP/worker.out")"
is "$(q -c "SELECT count(*) FROM wallet.push_messages WHERE status = 'sending'")" "0" "nothing is left claimed by the stopped worker"

timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
finish

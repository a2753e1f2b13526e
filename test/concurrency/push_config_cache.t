#!/usr/bin/env bash
# The per-backend cache of merchants' push settings, topics and caps
# (src/push_decide.c, used by the C wallet.enqueue_push) follows every change,
# printing TAP: a long-lived session enqueues (its cache is loaded), another
# session changes a cap, a topic and the settings, and the first session's
# next enqueue decides by the new values; a change and an enqueue in one
# transaction, and a change rolled back, too.
#
# Needs PGHOST/PGPORT/PGUSER of a running cluster with wallet installable.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DB=conc_push_config_cache
TMP=$(mktemp -d /tmp/push_config_cache.XXXXXX)
chmod 755 "$TMP"
trap 'for s in a; do sess_close $s; done; rm -rf "$TMP"' EXIT
. "$ROOT/test/lib.sh"

plan 7

timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
timeout 30 createdb "$DB" || { echo "Bail out! createdb $DB failed"; exit 1; }
M=$(q -c "CREATE EXTENSION wallet" -c "SELECT wallet.create_merchant('cache merchant')")
q -c "SELECT wallet.set_push_settings($M, NULL, NULL, 'UTC')" \
  -c "SELECT wallet.upsert_member($M, 'c' || i, 'UTC') FROM generate_series(1, 6) i" \
  -c "SELECT wallet.record_consent($M, 'c' || i, 'cc', 'marketing', true, 'test') FROM generate_series(1, 6) i" >/dev/null

enq() {   # enq SESSION MEMBER [TOPIC]: status/reason of an enqueue in the session
    sess_run "$1" "SELECT status || '/' || coalesce(reason, '') FROM wallet.enqueue_push($M, '$2', 'cc', '${3:-marketing}', '{}')"
}
sess_open a
is "$(enq a c1)" "queued/" "session a: queued (no cap; its cache now holds the merchant)"

q -c "SELECT wallet.set_push_cap($M, 'cc', 'marketing', 'day', 1, NULL, 'drop')" >/dev/null
is "$(enq a c1)" "suppressed/frequency_cap" "a cap set by another session decides session a's next enqueue"

q -c "SELECT wallet.set_push_topic($M, 'marketing', true)" >/dev/null
is "$(enq a c1)" "queued/" "a topic made a service topic (no cap group) by another session: no cap any more"

q -c "SELECT wallet.set_push_topic($M, 'marketing', false, 'marketing')" \
  -c "SELECT wallet.set_push_settings($M, (now() - interval '1 hour')::time, (now() + interval '1 hour')::time, 'UTC')" >/dev/null
is "$(enq a c2)" "deferred/quiet_hours" "quiet hours set by another session defer session a's next enqueue"

is "$(sess_run a "BEGIN; SELECT wallet.set_push_settings($M, NULL, NULL, 'UTC'); SELECT status FROM wallet.enqueue_push($M, 'c3', 'cc', 'marketing', '{}'); COMMIT" | tail -n 1)" \
   "queued" "a change and an enqueue in one transaction: the enqueue sees the change"

sess_run a "BEGIN; SELECT wallet.set_push_cap($M, 'cc', 'marketing', 'day', NULL); SELECT wallet.enqueue_push($M, 'c4', 'cc', 'marketing', '{}'); ROLLBACK" >/dev/null
is "$(enq a c4)" "queued/" "session a after a rolled-back cap removal: c4's first message is under the cap"
is "$(enq a c4)" "suppressed/frequency_cap" "and its second is dropped by the cap that was never removed"

sess_close a
timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
finish

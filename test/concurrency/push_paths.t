#!/usr/bin/env bash
# enqueue_push and claim_pushes decide the same under READ COMMITTED, where
# their usual case runs by direct reads and writes (src/push_write.c and
# push_claim_check in src/push_decide.c), and under REPEATABLE READ, where
# their statements run: two channels get the same fixture (a message that
# passes, one that expires, one whose consent is withdrawn, two under a cap
# of one a day, one in the member's quiet hours, one without consent, a
# dedup key used twice), one enqueued and claimed under each isolation
# level, and every message ends the same, as expected.  Printing TAP.
#
# Needs PGHOST/PGPORT/PGUSER of a running cluster with wallet installable.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DB=conc_push_paths
. "$ROOT/test/lib.sh"

plan 9

timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
timeout 30 createdb "$DB" || { echo "Bail out! createdb $DB failed"; exit 1; }
M=$(q -c "CREATE EXTENSION wallet" -c "SELECT wallet.create_merchant('paths merchant')")
for ch in rc rr; do
    q -c "SELECT wallet.set_push_settings($M, NULL, NULL, 'UTC')" \
      -c "SELECT wallet.set_push_cap($M, '$ch', 'marketing', 'day', 1)" \
      -c "SELECT wallet.upsert_member($M, '$ch-' || r, 'UTC') FROM unnest('{ok,exp,wd,cap,quiet,nocons,dup}'::text[]) r" \
      -c "SELECT wallet.record_consent($M, '$ch-' || r, '$ch', 'marketing', true, 'test') FROM unnest('{ok,exp,wd,cap,quiet,dup}'::text[]) r" \
      -c "SELECT wallet.set_push_preferences($M, '$ch-quiet', quiet_start => (now() - interval '1 hour')::time, quiet_end => (now() + interval '1 hour')::time)" \
      >/dev/null || echo "# fixture of $ch failed"
done

# enqueue and claim on a channel in one isolation level; prints the outcomes
run() {   # run CHANNEL ISOLATION
    local ch=$1 iso=$2
    q -c "BEGIN ISOLATION LEVEL $iso" \
      -c "SELECT r || ' ' || e.status || ' ' || coalesce(e.reason, '-')
            FROM unnest('{ok,exp,wd,cap,cap,quiet,nocons,dup,dup}'::text[]) WITH ORDINALITY AS u(r, i),
                 wallet.enqueue_push($M, '$ch-' || r, '$ch', 'marketing', '{}', NULL, CASE WHEN r = 'dup' THEN 'key-$ch' END,
                                     now(), CASE WHEN r = 'exp' THEN now() + interval '1 day' END) e
           ORDER BY i" \
      -c "COMMIT"
    # between enqueue and claim: the expiry passes, the consent is withdrawn behind the API's back (so
    # that only the claim's check sees it), and the deferred messages fall due
    q -c "UPDATE wallet.push_messages x SET expires_at = now() - interval '1 second'
            FROM wallet.members w WHERE w.member_id = x.member_id AND w.member_ref = '$ch-exp'" \
      -c "UPDATE wallet.push_consents c SET granted = false
            FROM wallet.members w WHERE w.member_id = c.member_id AND w.member_ref = '$ch-wd'" \
      -c "UPDATE wallet.push_messages SET due_at = now() - interval '1 second' WHERE channel = '$ch' AND status = 'queued'" >/dev/null
    q -c "BEGIN ISOLATION LEVEL $iso" \
      -c "SELECT 'claimed ' || string_agg(c.member_ref || '/' || c.attempts, ' ' ORDER BY c.member_ref)
            FROM wallet.claim_pushes('$ch', 100, '1 minute') c" \
      -c "COMMIT"
    q -c "SELECT w.member_ref || ' ' || x.status || ' ' || coalesce(x.reason, '-') || ' ' || coalesce((x.due_at > now() + interval '30 minutes')::text, '-')
            FROM wallet.push_messages x JOIN wallet.members w USING (member_id)
           WHERE x.channel = '$ch' ORDER BY w.member_ref, x.push_id"
}
rc=$(run rc "READ COMMITTED")
rr=$(run rr "REPEATABLE READ")
enq_rc=$(echo "$rc" | head -9)
enq_rr=$(echo "$rr" | head -9)
is "$enq_rc" "ok queued -
exp queued -
wd queued -
cap queued -
cap deferred frequency_cap
quiet deferred quiet_hours
nocons suppressed no_consent
dup queued -
dup duplicate dedup_key" "READ COMMITTED: every enqueue status and reason as expected"
is "$enq_rr" "$enq_rc" "REPEATABLE READ: the same enqueue outcomes"
claimed_rc=$(echo "$rc" | grep '^claimed')
is "$claimed_rc" "claimed rc-cap/1 rc-dup/1 rc-ok/1" "READ COMMITTED: the claim returns the messages that pass, one per member"
is "$(echo "$rr" | grep '^claimed')" "${claimed_rc//rc-/rr-}" "REPEATABLE READ: the same claim"
final_rc=$(echo "$rc" | sed -n '/^claimed/,$p' | tail -n +2)
final_rr=$(echo "$rr" | sed -n '/^claimed/,$p' | tail -n +2)
echo "$final_rc" | grep -qx 'rc-exp suppressed expired -' ; ok $? "the message expired between enqueue and claim is suppressed (expired)"
echo "$final_rc" | grep -qx 'rc-wd suppressed consent_withdrawn -' ; ok $? "the one whose consent was withdrawn is suppressed (consent_withdrawn)"
echo "$final_rc" | grep -qx 'rc-quiet queued quiet_hours true' ; ok $? "the one in the member's quiet hours stays queued, moved past them"
echo "$final_rc" | grep -c '^rc-cap ' | grep -qx 2 && echo "$final_rc" | grep -qx 'rc-cap sending - false' && echo "$final_rc" | grep -qx 'rc-cap queued frequency_cap true'
ok $? "of the two under the cap of one a day, one is being sent and the other waits for tomorrow" "$final_rc"
is "$final_rr" "${final_rc//rc-/rr-}" "REPEATABLE READ: every message ends as under READ COMMITTED"

dropdb "$DB" >/dev/null 2>&1
finish

#!/usr/bin/env bash
# Concurrency of the push queue (issue 12), printing TAP.
#
# 1. Dedup: 32 sessions enqueue with the same dedup key behind a barrier:
#    exactly one is queued, 31 are duplicates.
# 2. Leases in real time: a message claimed with a 1 s lease is not claimed
#    again at once, and is claimed again (attempt 2) once the lease lapsed.
# 3. Exactness: 16 sessions enqueue marketing pushes for the same 50 members
#    (in 25 time zones) for 15 s while 4 workers claim and acknowledge them;
#    meanwhile 10 members withdraw their consent one by one, and the quiet
#    hours of 10 others begin (both sets have their own quiet hours, so the
#    result does not depend on the time of day the test runs).  From the delivery records (push_attempts)
#    afterwards, computed here independently of the extension's code: no
#    member got more than 2 pushes in any 5-second window (the rolling cap)
#    or more than 40 a local day (the calendar cap), none was sent in the
#    member's quiet hours, and none after the member's withdrawal committed.
#
# Needs PGHOST/PGPORT/PGUSER of a running cluster with wallet installable.
set -uo pipefail

DB=conc_push
TMP=$(mktemp -d /tmp/push_race.XXXXXX)
chmod 755 "$TMP"
trap 'rm -rf "$TMP"' EXIT
. "$(dirname "$0")/../lib.sh"
Q_TIMEOUT=120

plan 15

timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
if ! timeout 30 createdb "$DB"; then echo "Bail out! createdb $DB failed"; exit 1; fi

setup=$(q 2>&1 <<'SQL'
CREATE EXTENSION wallet;
SELECT wallet.create_merchant('push race') AS m \gset
SELECT wallet.set_push_settings(:m, '22:00', '08:00', 'UTC');
SELECT wallet.set_push_cap(:m, 'race', 'marketing', 'rolling', 2, '5 seconds');
SELECT wallet.set_push_cap(:m, 'race', 'marketing', 'day', 40);
-- 50 members over 25 whole-hour zones, consent to marketing on channel race
CREATE TABLE race_members (k int PRIMARY KEY, ref text, tz text);
INSERT INTO race_members
SELECT k, 'r' || k, CASE WHEN o = 0 THEN 'Etc/GMT' WHEN o > 0 THEN 'Etc/GMT+' || o ELSE 'Etc/GMT' || o END
  FROM generate_series(1, 50) k, LATERAL (SELECT (k % 25) - 12 AS o) x;
SELECT count(wallet.upsert_member(:m, ref, tz)) FROM race_members \g /dev/null
SELECT count(wallet.record_consent(:m, ref, 'race', 'marketing', true, 'race setup')) FROM race_members \g /dev/null
-- withdrawals: logged once committed
CREATE TABLE race_withdrawn (ref text PRIMARY KEY, committed_at timestamptz);
GRANT ALL ON race_members, race_withdrawn TO PUBLIC;
SELECT :m;
SQL
)
M=$(printf '%s\n' "$setup" | tail -n 1)
ok $([[ "$M" =~ ^[0-9]+$ ]]; echo $?) "fixture: merchant, caps, 50 members with consent" "$setup"

# ---------------------------------------------------------------- 1. dedup, 32 sessions
race dedup 32 "SELECT status FROM wallet.enqueue_push($M, 'r@I@', 'race_dedup', 'service', '{}', dedup_key => 'the-same-key')"
is "$(count dedup queued)/$(count dedup duplicate)" "1/31" "32 sessions enqueue with one dedup key at once: one queued, 31 duplicates"
is "$(q -c "SELECT count(*) FROM wallet.push_dedup WHERE dedup_key = 'the-same-key'")/$(q -c "SELECT count(*) FROM wallet.push_messages WHERE dedup_key = 'the-same-key' AND outcome = 'duplicate'")" \
   "1/31" "one key recorded; the 31 duplicates recorded as such"

# ---------------------------------------------------------------- 2. leases in real time
id=$(q -c "SELECT push_id FROM wallet.enqueue_push($M, 'r1', 'lease_t', 'service', '{}')")
first=$(q -c "SELECT push_id || '/' || attempts FROM wallet.claim_pushes('lease_t', 10, '1 second')")
again=$(q -c "SELECT count(*) FROM wallet.claim_pushes('lease_t', 10, '1 second')")
sleep 1.5
later=$(q -c "SELECT push_id || '/' || attempts FROM wallet.claim_pushes('lease_t', 10, '1 minute')")
is "$first $again $later" "$id/1 0 $id/2" "a claimed message is leased: not claimed again within its 1 s lease, claimed again (attempt 2) after it"
is "$(q -c "SELECT wallet.ack_push($id, 'late-ack')")" "t" "the acknowledgement of the redelivered message is recorded"

# ---------------------------------------------------------------- 3. exactness
# the quiet hours of members 41-50 begin 8 s into the run (their own, local);
# members 1-10, who withdraw, get quiet hours outside the run, so that they can
# be sent to before they withdraw at any time of day (under the merchant's
# 22:00-08:00, all ten are in their quiet hours from 20:00 to 22:00 UTC);
# members 11-40 keep the merchant's default, quiet or not by the time of day
q -c "SELECT count(wallet.set_push_preferences($M, ref, ((now() + interval '10 seconds') AT TIME ZONE tz)::time,
                                                ((now() + interval '2 hours') AT TIME ZONE tz)::time))
        FROM race_members WHERE k > 40" >/dev/null
q -c "SELECT count(wallet.set_push_preferences($M, ref, ((now() + interval '3 hours') AT TIME ZONE tz)::time,
                                                ((now() + interval '4 hours') AT TIME ZONE tz)::time))
        FROM race_members WHERE k <= 10" >/dev/null
enqueuer="DO \$\$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '15 seconds';
BEGIN
    WHILE clock_timestamp() < deadline LOOP
        PERFORM wallet.enqueue_push($M, 'r' || (1 + floor(random() * 50))::int, 'race', 'marketing', '{\"t\": 1}',
                                    priority => floor(random() * 3)::int);
        COMMIT;
    END LOOP;
END
\$\$"
worker="DO \$\$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '17 seconds';
    ids bigint[];
    i bigint;
BEGIN
    WHILE clock_timestamp() < deadline LOOP
        SELECT array_agg(c.push_id) INTO ids FROM wallet.claim_pushes('race', 5, '30 seconds') c;
        COMMIT;
        IF ids IS NULL THEN
            PERFORM pg_sleep(0.02);
            CONTINUE;
        END IF;
        FOREACH i IN ARRAY ids LOOP
            PERFORM wallet.ack_push(i, 'provider-' || i);
        END LOOP;
        COMMIT;
    END LOOP;
END
\$\$"
# members 1-10 withdraw, one about every 1.3 s; the time is logged after the commit
withdrawer="DO \$\$
DECLARE
    k int;
BEGIN
    PERFORM pg_sleep(1);
    FOR k IN 1 .. 10 LOOP
        PERFORM wallet.record_consent($M, 'r' || k, 'race', 'marketing', false, 'unsubscribe link');
        COMMIT;
        INSERT INTO race_withdrawn VALUES ('r' || k, clock_timestamp());
        COMMIT;
        PERFORM pg_sleep(1.3);
    END LOOP;
END
\$\$"
stmts=()
for i in $(seq 1 16); do stmts+=("$enqueuer"); done
for i in $(seq 1 4); do stmts+=("$worker"); done
stmts+=("$withdrawer")
race_each run "${stmts[@]}"
errs=$(cat "$TMP"/run.* | grep -E 'ERROR|FATAL' | sort | uniq -c | head -n 5)
ok $([ -z "$errs" ]; echo $?) "16 enqueuers, 4 workers and the withdrawals ran without an error (no deadlock)" "$errs"

stats=$(q -c "SELECT (SELECT count(*) FROM wallet.push_messages WHERE channel = 'race'),
                     (SELECT count(*) FROM wallet.push_attempts a JOIN wallet.push_messages m USING (push_id) WHERE m.channel = 'race' AND a.outcome = 'sent'),
                     (SELECT count(*) FROM wallet.push_messages WHERE channel = 'race' AND outcome = 'deferred'),
                     (SELECT count(*) FROM race_withdrawn)")
IFS='|' read -r n_msg n_sent n_deferred n_withdrawn <<< "$stats"
ok $([ "$n_msg" -gt 200 ] && [ "$n_sent" -gt 50 ] && [ "$n_deferred" -gt 0 ] && [ "$n_withdrawn" -eq 10 ]; echo $?) \
   "the run did real work: $n_msg messages enqueued, $n_sent sent, $n_deferred deferred, $n_withdrawn withdrawals"

# the delivery records, with each member's zone and quiet hours
SENT="SELECT a.push_id, x.member_ref AS ref, coalesce(x.time_zone, 'UTC') AS tz, a.claimed_at,
             coalesce(p.quiet_start, '22:00') AS qs, coalesce(p.quiet_end, '08:00') AS qe
        FROM wallet.push_attempts a JOIN wallet.push_messages m USING (push_id)
        JOIN wallet.members x ON x.member_id = m.member_id
        LEFT JOIN wallet.push_preferences p ON p.member_id = m.member_id
       WHERE m.channel = 'race' AND a.outcome = 'sent'"
over=$(q -c "WITH s AS ($SENT)
             SELECT s1.ref || ' at ' || s1.claimed_at || ': ' || count(*) FROM s s1 JOIN s s2 ON s2.ref = s1.ref
                 AND s2.claimed_at > s1.claimed_at - interval '5 seconds' AND s2.claimed_at <= s1.claimed_at
              GROUP BY s1.push_id, s1.ref, s1.claimed_at HAVING count(*) > 2 LIMIT 5")
ok $([ -z "$over" ]; echo $?) "no member got more than 2 pushes in any 5-second window (the rolling cap)" "$over"
over=$(q -c "WITH s AS ($SENT)
             SELECT ref || ' ' || (claimed_at AT TIME ZONE tz)::date || ': ' || count(*) FROM s
              GROUP BY ref, (claimed_at AT TIME ZONE tz)::date HAVING count(*) > 40 LIMIT 5")
ok $([ -z "$over" ]; echo $?) "no member got more than 40 pushes in a local day (the calendar cap)" "$over"
quiet=$(q -c "WITH s AS ($SENT), l AS (SELECT *, (claimed_at AT TIME ZONE tz)::time AS lt FROM s)
              SELECT ref || ' at local ' || lt || ' (quiet ' || qs || '-' || qe || ')' FROM l
               WHERE CASE WHEN qs < qe THEN lt >= qs AND lt < qe ELSE lt >= qs OR lt < qe END LIMIT 5")
ok $([ -z "$quiet" ]; echo $?) "no push was sent in the member's quiet hours" "$quiet"
late=$(q -c "WITH s AS ($SENT)
             SELECT s.ref || ' sent ' || s.claimed_at || ', withdrawn ' || w.committed_at FROM s JOIN race_withdrawn w ON w.ref = s.ref
              WHERE s.claimed_at > w.committed_at LIMIT 5")
ok $([ -z "$late" ]; echo $?) "no push was sent after the member's withdrawal had committed" "$late"
# the checks above had something to catch
q -c "SELECT count(*) FROM ($SENT) s JOIN race_members r ON r.ref = s.ref WHERE r.k > 40" > "$TMP/quiet_sent"
q -c "SELECT count(*) FROM ($SENT) s JOIN race_withdrawn w ON w.ref = s.ref WHERE s.claimed_at <= w.committed_at" > "$TMP/before_withdrawal"
ok $([ "$(cat "$TMP/quiet_sent")" -gt 0 ] && [ "$(cat "$TMP/before_withdrawal")" -gt 0 ]; echo $?) \
   "members whose quiet hours began, and members who withdrew, got pushes before ($(cat "$TMP/quiet_sent"), $(cat "$TMP/before_withdrawal"))"
busy=$(q -c "WITH s AS ($SENT) SELECT count(*) FROM (SELECT ref FROM s GROUP BY ref HAVING count(*) >= 3) x")
ok $([ "$busy" -gt 10 ]; echo $?) "$busy members reached the rolling cap more than once (the cap was exercised)"
left=$(q -c "SELECT count(*) FROM wallet.push_messages WHERE channel = 'race' AND status = 'queued'
                AND member_id IN (SELECT member_id FROM wallet.members WHERE member_ref IN (SELECT ref FROM race_withdrawn))")
is "$left" "0" "no message of a member who withdrew is left queued"
ok $([ -z "$BARRIER_MISSED" ]; echo $?) "every race started behind its barrier" "missed:$BARRIER_MISSED"

[ -n "${KEEP_DB:-}" ] || timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
finish

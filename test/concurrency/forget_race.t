#!/usr/bin/env bash
# Erasures racing the hot path, printed as TAP.  8 sessions redeem one public
# code (one use per member) for two member references while an admin erases
# those members again and again; then 4 workers acknowledge and fail
# messages of members an admin erases meanwhile.  From the stored rows: no
# reference redeemed more than once between two erasures (each erasure
# starts a new member), every counter equals the live redemptions it counts,
# no call failed (no deadlock), and after the maintenance no erased member's
# message or event keeps its payload, provider text or attributes.  Last, 6
# sessions record purchases (in a currency with an earning program and in one
# without, with an e-mail among their attributes) and partial refunds for
# five member references while an admin erases them again and again: no
# call fails but for a rare deadlock (README "Personal data and erasure"),
# and after a final erasure and the maintenance no purchase keeps the
# e-mail, the ledgers verify and no refund exceeds its purchase.
#
# Needs PGHOST/PGPORT/PGUSER (make test sets them).  Creates its own database.
set -uo pipefail

DB=conc_forget_race
TMP=$(mktemp -d /tmp/forget_race.XXXXXX)
trap '[ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"; [ -n "${KEEP_DB:-}" ] || dropdb --if-exists "$DB" >/dev/null 2>&1' EXIT
export PGOPTIONS="${PGOPTIONS:-} -c statement_timeout=60s"
. "$(dirname "$0")/../lib.sh"

plan 14

dropdb --if-exists "$DB" >/dev/null 2>&1
createdb "$DB" || { echo "Bail out! cannot create database $DB"; exit 1; }
q -c "CREATE EXTENSION wallet" >/dev/null || { echo "Bail out! cannot create extension wallet"; exit 1; }
q >/dev/null <<'SQL'
SELECT wallet.create_merchant('m');
-- a per-member cap of 1 and a total cap (the statement path), and one with the per-member cap only (the direct path)
SELECT wallet.create_campaign(1, 'c', max_redemptions_per_code => NULL, max_redemptions_per_member => 1, max_redemptions_total => 1000000);
SELECT wallet.create_campaign(1, 'd', max_redemptions_per_code => NULL, max_redemptions_per_member => 1);
CREATE TABLE race_code (campaign text, code text);
INSERT INTO race_code SELECT 'c', g::text FROM wallet.generate_codes(1, 1) g;
INSERT INTO race_code SELECT 'd', g::text FROM wallet.generate_codes(2, 1) g;
SQL

# ---------------------------------------------------------------- redemptions
pids=()
for s in $(seq 8); do
    for g in $(seq 300); do
        echo "SELECT (wallet.redeem_code((SELECT code FROM race_code WHERE campaign = '$( [ $((g % 3)) = 0 ] && echo d || echo c )'), 'fq$((g % 2))', 'k-$s-$g')).status;"
    done > "$TMP/r$s.sql"
    psql -X -qAt -d "$DB" -f "$TMP/r$s.sql" > "$TMP/out$s" 2>&1 &
    pids+=($!)
done
for g in $(seq 160); do echo "SELECT wallet.forget_member(1, 'fq$((g % 2))', 'erasure request');"; done > "$TMP/f.sql"
psql -X -qAt -d "$DB" -f "$TMP/f.sql" > "$TMP/outf" 2>&1 &
pids+=($!)
wait "${pids[@]}"
errors=$(cat "$TMP"/out* | grep -c 'ERROR')
check "no redemption or erasure failed (no deadlock) while erasures raced 2,400 redemptions" "$errors" 0
check "the races did redeem and erase: some ok, some refused, erasures found the members" \
    "$(cat "$TMP"/out[1-8] | grep -c '^ok$' | awk '{ print ($1 > 0) }')$(cat "$TMP"/out[1-8] | grep -c '^member_limit_reached$' | awk '{ print ($1 > 0) }')$(grep -c '^t$' "$TMP/outf" | awk '{ print ($1 > 0) }')" "111"
# each member (a reference between two erasures: its redemptions carry one
# pseudonym, or the live reference for the last) used each campaign at most once
check "no member redeemed a campaign more than once (cap 1 per member)" \
    "$(q -c "SELECT count(*) FROM (SELECT campaign_id, member_ref FROM wallet.code_redemptions WHERE undone_at IS NULL
                                    GROUP BY 1, 2 HAVING count(*) > 1) x")" 0
# A member's counter and its redemption are re-keyed by the erasure's
# statements one after the other: a redemption that commits between them
# may carry another pseudonym than its counter.  Erased members' counters
# gate nothing (a pseudonym is refused as a reference); what must hold is
# every live reference's counter and every campaign's total.
check "every live member's counter equals its live redemptions" \
    "$(q -c "SELECT count(*) FROM wallet.member_use_counts u
              WHERE u.member_ref NOT LIKE 'forgotten:%'
                AND u.redeemed <> (SELECT count(*) FROM wallet.code_redemptions r
                                    WHERE r.campaign_id = u.campaign_id AND r.member_ref = u.member_ref AND r.undone_at IS NULL)")" 0
check "each campaign's counters add up to its live redemptions" \
    "$(q -c "SELECT count(*) FROM wallet.campaigns c
              WHERE (SELECT coalesce(sum(u.redeemed), 0) FROM wallet.member_use_counts u WHERE u.campaign_id = c.campaign_id)
                    <> (SELECT count(*) FROM wallet.code_redemptions r WHERE r.campaign_id = c.campaign_id AND r.undone_at IS NULL)")" 0

# ---------------------------------------------------------------- push
q >/dev/null <<'SQL'
SELECT wallet.set_push_settings(1, NULL, NULL);
SELECT wallet.record_consent(1, 'p' || i, 'sms', 'service', true, 'signup') FROM generate_series(1, 200) i;
SELECT count(*) FROM generate_series(1, 200) i, wallet.enqueue_push(1, 'p' || i, 'sms', 'service', jsonb_build_object('to', '+41 79 555 ' || i)) x;
SELECT count(wallet.track_event(1, 'p' || i, 'location', '{"latitude": 47.37, "longitude": 8.54}')) FROM generate_series(1, 200) i;
SQL
check "fixture: 200 members with a queued message and a location event each" \
    "$(q -c "SELECT (SELECT count(*) FROM wallet.push_messages WHERE status = 'queued') || ' ' || (SELECT count(*) FROM wallet.member_events WHERE kind = 'location')")" "200 200"
# the workers have claimed every message; they fail (odd ids, with the
# provider's text) or acknowledge (even ids) them five at a time, each
# batch in a transaction held for 0.2 s, while the admin erases the
# members in the same order
q -c "CREATE TABLE claimed AS SELECT push_id, attempts FROM wallet.claim_pushes('sms', 1000, '10 minutes')" >/dev/null
pids=()
for w in $(seq 4); do
    q -c "SELECT push_id FROM claimed WHERE push_id % 4 = $w - 1 ORDER BY push_id" | paste -d, - - - - - | while read -r ids; do
        echo "BEGIN;
SELECT wallet.fail_push(push_id, 'number unreachable: +41 79 555 ' || push_id, false, attempts) FROM claimed WHERE push_id IN ($ids) AND push_id % 2 = 1;
SELECT wallet.ack_pushes(coalesce(array_agg(push_id), '{}'), NULL, coalesce(array_agg(attempts), '{}')) FROM claimed WHERE push_id IN ($ids) AND push_id % 2 = 0;
SELECT pg_sleep(0.2); COMMIT;"
    done > "$TMP/w$w.sql"
    psql -X -qAt -d "$DB" -f "$TMP/w$w.sql" > "$TMP/wout$w" 2>&1 &
    pids+=($!)
done
for i in $(seq 1 200); do echo "SELECT wallet.forget_member(1, 'p$i', 'erasure request');"; done > "$TMP/pf.sql"
sleep 0.1   # the erasures trail the workers: they meet the batches in flight
psql -X -qAt -d "$DB" -f "$TMP/pf.sql" > "$TMP/pfout" 2>&1 &
pids+=($!)
wait "${pids[@]}"
check "no worker call or erasure failed" "$(cat "$TMP"/wout* "$TMP/pfout" | grep -c ERROR)" 0
check "the workers sent and failed messages while the erasures ran" \
    "$(q -c "SELECT count(*) FILTER (WHERE status = 'sent') > 0 AND count(*) FILTER (WHERE status = 'dead') > 0 FROM wallet.push_messages")" t
q -c "CALL wallet.run_maintenance()" >/dev/null
check "after run_maintenance no erased member's message, delivery record or event keeps personal data" \
    "$(q -c "SELECT (SELECT count(*) FROM wallet.push_messages x JOIN wallet.members m USING (member_id)
                      WHERE m.status = 'forgotten' AND (x.payload <> '{}' OR x.last_error IS NOT NULL))
                  + (SELECT count(*) FROM wallet.push_attempts a JOIN wallet.members m USING (member_id)
                      WHERE m.status = 'forgotten' AND a.error IS NOT NULL)
                  + (SELECT count(*) FROM wallet.member_events e JOIN wallet.members m USING (member_id)
                      WHERE m.status = 'forgotten' AND e.attributes <> '{}')")" 0
check "and every one of the 200 members is erased" "$(q -c "SELECT count(*) FROM wallet.members WHERE status = 'forgotten' AND member_ref LIKE 'forgotten:%'")" \
    "$(q -c "SELECT count(*) FROM wallet.members WHERE status = 'forgotten'")"

# ---------------------------------------------------------------- checkouts
q >/dev/null <<'SQL'
SELECT wallet.create_program(1, 'race points');
SELECT wallet.set_program_earning((SELECT max(program_id) FROM wallet.programs), 'EUR');
SELECT wallet.create_earning_rule((SELECT max(program_id) FROM wallet.programs), 'base', 'per_unit', 1, valid_from => '2020-01-01');
SQL
pids=()
for s in $(seq 6); do
    for g in $(seq 100); do
        echo "SELECT points FROM wallet.record_purchase(1, 'c$((g % 5))', 'o-$s-$g', 100, '$( [ $((g % 2)) = 0 ] && echo EUR || echo USD )', now(), jsonb_build_object('store', 's1', 'email', 'c$((g % 5))@example.com'));"
        [ $((g % 3)) = 0 ] && echo "SELECT amount FROM wallet.record_refund(1, 'o-$s-$((g - 1))', 1, 'r-$s-$g');"
    done > "$TMP/c$s.sql"
    psql -X -qAt -d "$DB" -f "$TMP/c$s.sql" > "$TMP/cout$s" 2>&1 &
    pids+=($!)
done
for i in $(seq 100); do echo "SELECT wallet.forget_member(1, 'c$((i % 5))', 'erasure request');"; done > "$TMP/cf.sql"
psql -X -qAt -d "$DB" -f "$TMP/cf.sql" > "$TMP/cfout" 2>&1 &
pids+=($!)
wait "${pids[@]}"
check "no checkout, refund or erasure failed (but for a rare deadlock, 40P01)" \
    "$(cat "$TMP"/cout* "$TMP/cfout" | grep 'ERROR' | grep -vc 'deadlock detected')" 0
for i in 0 1 2 3 4; do q -c "SELECT wallet.forget_member(1, 'c$i', 'final erasure')" >/dev/null; done
q -c "CALL wallet.run_maintenance()" >/dev/null
check "after a final erasure and run_maintenance no purchase keeps the e-mail (none filed under an erased member out of reach)" \
    "$(q -c "SELECT count(*) FROM wallet.purchases WHERE attributes ? 'email'")" 0
check "every ledger verifies" "$(q -c "SELECT count(*) FROM wallet.verify_ledger()")" 0
check "the race recorded purchases and refunds, and no refund exceeds its purchase" \
    "$(q -c "SELECT (SELECT count(*) > 300 FROM wallet.purchases) AND (SELECT count(*) > 50 FROM wallet.refunds)
                    AND NOT EXISTS (SELECT FROM wallet.purchases WHERE refunded_amount > amount)")" t
finish

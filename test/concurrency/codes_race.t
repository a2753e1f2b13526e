#!/usr/bin/env bash
# Races on code redemption (issue 3), printed as TAP.  Every race starts N
# sessions behind the barrier of test/lib.sh: each blocks on
# pg_advisory_lock_shared while the controller holds the lock exclusively;
# once pg_locks shows all N waiting, the controller lets go and they all run
# at once.
#
# Needs PGHOST/PGPORT/PGUSER (make test sets them).  Creates its own database.
set -uo pipefail

DB=conc_codes_redeem
TMP=$(mktemp -d /tmp/codes_race.XXXXXX)
trap '[ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"; dropdb --if-exists "$DB" >/dev/null 2>&1' EXIT
# Nothing may hang: a stuck session fails its statement instead.
export PGOPTIONS="${PGOPTIONS:-} -c statement_timeout=60s"
. "$(dirname "$0")/../lib.sh"

plan 28

dropdb --if-exists "$DB" >/dev/null 2>&1
createdb "$DB" || { echo "Bail out! cannot create database $DB"; exit 1; }
q -c "CREATE EXTENSION wallet" >/dev/null || { echo "Bail out! cannot create extension wallet"; exit 1; }


q -c "
SELECT wallet.set_code_guard(NULL, NULL, '1 hour');
SELECT wallet.create_merchant('race merchant');
CREATE TABLE race_codes (name text, i int, code text);
-- Campaigns first: generate_codes must see them committed (own statements).
SELECT wallet.create_campaign(1, 'single');
SELECT wallet.create_campaign(1, 'five', max_redemptions_per_code => 5);
SELECT wallet.create_campaign(1, 'member', max_redemptions_per_code => NULL, max_redemptions_per_member => 3);
SELECT wallet.create_campaign(1, 'total', max_redemptions_total => 7);
SELECT wallet.create_campaign(1, 'key', max_redemptions_per_code => NULL);
SELECT wallet.create_campaign(1, 'late', max_redemptions_per_code => NULL);
SELECT wallet.create_campaign(1, 'reserve', max_redemptions_per_code => 5);
SELECT wallet.create_campaign(1, 'undo');
SELECT wallet.create_campaign(1, 'expire');
SELECT wallet.create_campaign(1, 'public', max_redemptions_per_code => NULL, max_redemptions_per_member => 1);
CREATE FUNCTION race_campaign(n text) RETURNS bigint LANGUAGE sql AS \$\$ SELECT campaign_id FROM wallet.campaigns WHERE name = n \$\$;
-- single use, and a cap of 5 per code
INSERT INTO race_codes SELECT 'single', 0, g::text FROM wallet.generate_codes(race_campaign('single'), 1) g;
INSERT INTO race_codes SELECT 'five', 0, g::text FROM wallet.generate_codes(race_campaign('five'), 1) g;
-- 3 per member, 20 codes for one member
INSERT INTO race_codes SELECT 'member', row_number() OVER (), g::text
  FROM wallet.generate_codes(race_campaign('member'), 20) g;
-- 7 in all, 20 single-use codes
INSERT INTO race_codes SELECT 'total', row_number() OVER (), g::text
  FROM wallet.generate_codes(race_campaign('total'), 20) g;
-- one key sent by 10 sessions; codes unlimited so only the key can stop a double record
INSERT INTO race_codes SELECT 'key', 0, g::text FROM wallet.generate_codes(race_campaign('key'), 1) g;
-- no caps at all, until one is set during a race
INSERT INTO race_codes SELECT 'late', row_number() OVER (), g::text
  FROM wallet.generate_codes(race_campaign('late'), 20) g;
-- undo racing redemptions
INSERT INTO race_codes SELECT 'undo', 0, g::text FROM wallet.generate_codes(race_campaign('undo'), 1) g;
-- a reservation that expires before a race
INSERT INTO race_codes SELECT 'expire', 0, g::text FROM wallet.generate_codes(race_campaign('expire'), 1) g;
-- one public code, one use per member (redeem_code's direct path: the member's counter row)
INSERT INTO race_codes SELECT 'public', 0, g::text FROM wallet.generate_codes(race_campaign('public'), 1) g;
-- reservations on a cap of 5
INSERT INTO race_codes SELECT 'reserve', 0, g::text FROM wallet.generate_codes(race_campaign('reserve'), 1) g;
" >/dev/null || { echo "Bail out! setup failed"; exit 1; }

start=$(date +%s)

# 1. 50 sessions, one single-use code, 50 members.
race single 50 "SELECT status FROM wallet.redeem_code((SELECT code FROM race_codes WHERE name = 'single'), 'm' || @I@, 'single-' || @I@)"
is "$(count single ok)" 1 "50 sessions race on a single-use code: exactly one ok"
is "$(count single exhausted)" 49 "the other 49 are told exhausted"
is "$(q -c "SELECT count(*) FROM wallet.code_redemptions r JOIN race_codes c ON c.code = r.code::text WHERE c.name = 'single'")" 1 \
      "one redemption row recorded"

# 2. 20 sessions, a code with a cap of 5.
race five 20 "SELECT status FROM wallet.redeem_code((SELECT code FROM race_codes WHERE name = 'five'), 'm' || @I@, 'five-' || @I@)"
is "$(count five ok)" 5 "20 sessions race on a code with cap 5: exactly 5 ok"
is "$(count five exhausted)" 15 "the other 15 are told exhausted"

# 3. 20 sessions, one member, 20 different codes, 3 per member.
race member 20 "SELECT status FROM wallet.redeem_code((SELECT code FROM race_codes WHERE name = 'member' AND i = @I@), 'erin', 'member-' || @I@)"
is "$(count member ok)" 3 "20 sessions redeem different codes for one member with cap 3: exactly 3 ok"
is "$(count member member_limit_reached)" 17 "the other 17 are told member_limit_reached"

# 4. 20 sessions, 20 codes, 7 in the whole campaign.
# 3b. One public code (one use per member): 20 sessions for one member, then
# 20 sessions for 20 members.  Under READ COMMITTED the first use inserts the
# member's counter row by speculative insertion (src/redeem_direct.c); the
# others wait for it and are refused.
race public_one 20 "SELECT status FROM wallet.redeem_code((SELECT code FROM race_codes WHERE name = 'public'), 'pat', 'public-pat-' || @I@)"
is "$(count public_one ok)" 1 "20 sessions redeem one public code for one member (one use each): exactly 1 ok"
is "$(count public_one member_limit_reached)" 19 "the other 19 are told member_limit_reached"
race public_many 20 "SELECT status FROM wallet.redeem_code((SELECT code FROM race_codes WHERE name = 'public'), 'pm' || @I@, 'public-pm-' || @I@)"
is "$(count public_many ok)" 20 "20 sessions redeem it for 20 other members: all 20 ok"
is "$(q -c "SELECT count(*) || ' ' || sum(u.redeemed) FROM wallet.member_use_counts u WHERE u.campaign_id = race_campaign('public')")" "21 21" \
   "21 member counter rows, each counting its member's one redemption"

race total 20 "SELECT status FROM wallet.redeem_code((SELECT code FROM race_codes WHERE name = 'total' AND i = @I@), 'm' || @I@, 'total-' || @I@)"
is "$(count total ok)" 7 "20 sessions race on a campaign with a total cap of 7: exactly 7 ok"
is "$(q -c "SELECT redeemed FROM wallet.campaign_use_counts u JOIN wallet.campaigns c USING (campaign_id) WHERE c.name = 'total'")" 7 \
      "the campaign counter says 7"

# 5. The same idempotency key from 10 sessions at once.
race key 10 "SELECT status || ' ' || redemption_id FROM wallet.redeem_code((SELECT code FROM race_codes WHERE name = 'key'), 'kim', 'the-one-key')"
is "$(cat "$TMP"/key.[0-9]* | grep -E '^ok [0-9]+$' | sort -u | wc -l)" 1 "10 sessions with one key all get the same redemption"
is "$(count key 'ok [0-9]+')" 10 "all 10 answered ok"
is "$(q -c "SELECT count(*) FROM wallet.code_redemptions WHERE idempotency_key = 'the-one-key'")" 1 "one redemption recorded"

# 6. 20 sessions reserve a code with cap 5.
race reserve 20 "SELECT status FROM wallet.reserve_code((SELECT code FROM race_codes WHERE name = 'reserve'), 'm' || @I@, 'reserve-' || @I@, '1 hour')"
is "$(count reserve ok)" 5 "20 sessions reserve a code with cap 5: exactly 5 reservations"

# 7. A total cap set while 19 sessions redeem in a campaign that had none:
#    the counter it starts must match the live redemptions exactly, and the
#    redemptions decided under the new cap must respect it.
q -c "CREATE FUNCTION race_cap_step(i int) RETURNS text LANGUAGE plpgsql AS \$\$
BEGIN
    IF i = 10 THEN
        UPDATE wallet.campaigns SET max_redemptions_total = 12 WHERE name = 'late';
        RETURN 'cap set';
    END IF;
    RETURN (wallet.redeem_code((SELECT code FROM race_codes WHERE name = 'late' AND race_codes.i = race_cap_step.i),
                               'm' || i, 'late-' || i)).status;
END \$\$" >/dev/null
race late 20 "SELECT race_cap_step(@I@)"
is "$(count late 'cap set')" 1 "the cap was set during the race"
is "$(q -c "SELECT redeemed FROM wallet.campaign_use_counts u JOIN wallet.campaigns c USING (campaign_id) WHERE c.name = 'late'")" \
      "$(q -c "SELECT count(*) FROM wallet.code_redemptions d JOIN wallet.campaigns c USING (campaign_id) WHERE c.name = 'late' AND d.undone_at IS NULL")" \
      "the new campaign counter equals the live redemptions"
live=$(q -c "SELECT count(*) FROM wallet.code_redemptions d JOIN wallet.campaigns c USING (campaign_id) WHERE c.name = 'late'")
refused=$(count late campaign_limit_reached)
# Each redeemer either redeemed or was refused for the cap, and a refusal
# only happened once 12 were live.
if [ $((live + refused)) -eq 19 ] && { [ "$refused" -eq 0 ] || [ "$live" -ge 12 ]; }; then
    ok 0 "every redeemer was served or refused by the cap ($live live, $refused refused)"
else
    ok 1 "every redeemer was served or refused by the cap ($live live, $refused refused)"
fi

# 8. Undo against redemptions: a single-use code is redeemed; then one session
#    undoes that while 14 others try to redeem the code.  At most one of them
#    gets the freed use, and the counter matches the live redemptions.
q -c "SELECT wallet.redeem_code((SELECT code FROM race_codes WHERE name = 'undo'), 'first', 'undo-0')" >/dev/null
q -c "CREATE FUNCTION race_undo_step(i int) RETURNS text LANGUAGE plpgsql AS \$\$
BEGIN
    IF i = 8 THEN
        PERFORM wallet.undo_redemption((SELECT redemption_id FROM wallet.code_redemptions WHERE idempotency_key = 'undo-0'), 'cancelled');
        RETURN 'undone';
    END IF;
    RETURN (wallet.redeem_code((SELECT code FROM race_codes WHERE name = 'undo'), 'm' || i, 'undo-' || i)).status;
END \$\$" >/dev/null
race undo 15 "SELECT race_undo_step(@I@)"
is "$(count undo undone)/$(( $(count undo ok) <= 1 ))/$(( $(count undo ok) + $(count undo exhausted) ))" 1/1/14 \
      "one undo among 14 redeemers: at most one redeemer gets the freed use, the rest are exhausted"
is "$(q -c "SELECT u.redeemed || '/' || (SELECT count(*) FROM wallet.code_redemptions d WHERE d.campaign_id = u.campaign_id AND d.serial = u.serial AND d.undone_at IS NULL)
            FROM wallet.code_use_counts u JOIN wallet.campaigns c USING (campaign_id) WHERE c.name = 'undo'")" "$(count undo ok)/$(count undo ok)" \
      "the per-code counter equals the live redemptions after the race"

# 9. An expired reservation stops counting at once, also under a race: the
#    single-use code is reserved for 1 s; once that has passed (no cleanup
#    job runs), 20 sessions race for it and exactly one wins.
is "$(q -c "SELECT status FROM wallet.reserve_code((SELECT code FROM race_codes WHERE name = 'expire'), 'holder', 'expire-hold', '1 second')")" ok \
      "a 1-second reservation of a single-use code"
sleep 1.2
race expire 20 "SELECT status FROM wallet.redeem_code((SELECT code FROM race_codes WHERE name = 'expire'), 'm' || @I@, 'expire-' || @I@)"
is "$(count expire ok)/$(count expire exhausted)" 1/19 "after it expired, 20 sessions race for the code: exactly one ok"

# 10. The guard is exact too: one member fires 20 bad codes at once with a
#    threshold of 5: exactly 5 are judged (and recorded), 15 are throttled.
q -c "SELECT wallet.set_code_guard(5, NULL, '1 hour')" >/dev/null
race guard 20 "SELECT status FROM wallet.redeem_code('no such code ' || @I@, 'mallory', 'guard-' || @I@)"
is "$(count guard malformed)/$(count guard throttled)" 5/15 "20 bad codes from one member at once, threshold 5: 5 judged, 15 throttled"
is "$(q -c "SELECT count(*) FROM wallet.code_failed_attempts WHERE member_ref = 'mallory'")" 5 "exactly 5 failures recorded"

# No session anywhere failed with an error (deadlock, serialization, ...).
is "$(cat "$TMP"/*.[0-9]* | grep -c ERROR)" 0 "no session raised an error (no deadlock)"
is "$BARRIER_MISSED" "" "every race started with all its sessions waiting at the barrier"
elapsed=$(( $(date +%s) - start ))
echo "# races took ${elapsed}s"

finish

#!/usr/bin/env bash
# The brute-force guard (security review, issue 7), printed as TAP: failed
# code checks count whether or not the caller's transaction commits, per
# merchant, and exactly up to the threshold however many sessions race; and
# a role with only the rights redemption needs redeems under REPEATABLE READ
# and READ COMMITTED (no UPDATE on wallet.campaigns).
#
# Needs PGHOST/PGPORT/PGUSER (make test sets them).  Creates its own database.
set -uo pipefail

DB=conc_guard
TMP=$(mktemp -d /tmp/guard.XXXXXX)
chmod 755 "$TMP"
cleanup() {
    for s in "${!SESS_FD[@]}"; do sess_close "$s"; done
    [ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"
    dropdb --if-exists "$DB" >/dev/null 2>&1
    psql -X -qAt -d postgres -c "DROP ROLE IF EXISTS guard_redeemer" >/dev/null 2>&1
}
trap cleanup EXIT
export PGOPTIONS="${PGOPTIONS:-} -c statement_timeout=60s"
. "$(dirname "$0")/../lib.sh"

plan 14

dropdb --if-exists "$DB" >/dev/null 2>&1
psql -X -qAt -d postgres -c "DROP ROLE IF EXISTS guard_redeemer" >/dev/null 2>&1
createdb "$DB" || { echo "Bail out! cannot create database $DB"; exit 1; }
q -c "CREATE EXTENSION wallet" >/dev/null || { echo "Bail out! cannot create extension wallet"; exit 1; }


# Two merchants, one campaign each, a genuine and a forged code of each (a
# forgery: two symbols changed until the check symbol is right but the MAC
# is not; parse_code is the oracle).
forge_function
q >/dev/null <<'SQL'
SELECT wallet.create_merchant('merchant A'), wallet.create_merchant('merchant B');
SELECT wallet.create_campaign(1, 'A', max_redemptions_per_code => NULL), wallet.create_campaign(2, 'B', max_redemptions_per_code => NULL);
CREATE TABLE codes (name text PRIMARY KEY, code text);
INSERT INTO codes SELECT 'A', g::text FROM wallet.generate_codes(1, 1) g;
INSERT INTO codes SELECT 'B', g::text FROM wallet.generate_codes(2, 1) g;
INSERT INTO codes SELECT name || '-forged', forge(code) FROM codes;
GRANT SELECT ON codes TO PUBLIC;
SQL
CODE_A=$(q -c "SELECT code FROM codes WHERE name = 'A'")
FORGED_A=$(q -c "SELECT code FROM codes WHERE name = 'A-forged'")
FORGED_B=$(q -c "SELECT code FROM codes WHERE name = 'B-forged'")

# 1. 300 forged guesses, each in its own transaction rolled back: the guard
#    counts them though no failure row survives, and throttles after 10.
q -c "SELECT wallet.set_code_guard(10, NULL, '1 hour')" >/dev/null
for i in $(seq 1 300); do
    echo "BEGIN; SELECT status FROM wallet.redeem_code('$FORGED_A', 'eve', 'tx-$i'); ROLLBACK;"
done | q > "$TMP/tx.out" 2>&1
is "$(grep -cx forged "$TMP/tx.out")/$(grep -cx throttled "$TMP/tx.out")" 10/290 \
   "300 forged guesses, each in a rolled-back transaction: 10 judged, 290 throttled"
is "$(q -c "SELECT count(*) FROM wallet.code_failed_attempts WHERE member_ref = 'eve'")" 0 \
   "(no failure row survived the rollbacks)"
is "$(q -c "SELECT wallet.check_code('$CODE_A', 'eve')")" throttled "afterwards even eve's genuine code is throttled"
is "$(q -c "SELECT wallet.check_code('$FORGED_B', 'eve')")" forged "while eve at merchant B is someone else: judged"

# 2. 20 sessions at once guess for one member, each in a transaction that
#    rolls back, threshold 5: exactly 5 are judged, 15 throttled.
q -c "SELECT wallet.set_code_guard(5, NULL, '1 hour')" >/dev/null
race rb 20 "BEGIN; SELECT status FROM wallet.redeem_code('$FORGED_A', 'mallory', 'rb-@I@'); ROLLBACK;"
is "$(count rb forged)/$(count rb throttled)" 5/15 "20 racing rolled-back guesses for one member, threshold 5: exactly 5 judged"

# 3. 40 sessions at once, half guessing at merchant A and half at merchant B
#    under the same member_ref and source: each merchant judges exactly 5.
race ab 40 "SELECT CASE WHEN @I@ % 2 = 0 THEN 'A:' || wallet.check_code('$FORGED_A', 'trudy', '{\"source\": \"10.0.0.1\"}')
                         ELSE 'B:' || wallet.check_code('$FORGED_B', 'trudy', '{\"source\": \"10.0.0.1\"}') END"
is "$(count ab A:forged)/$(count ab A:throttled)/$(count ab B:forged)/$(count ab B:throttled)" 5/15/5/15 \
   "40 racing guesses by one member_ref and source at two merchants: exactly 5 judged at each"

# 4. Clearing lifts the throttle at one merchant only, at once, even if the
#    clearing transaction rolls back (the counters are not transactional).
is "$(q -c "BEGIN" -c "SELECT wallet.clear_code_failures('trudy', '10.0.0.1', 1) >= 0" -c "ROLLBACK")" t "clear_code_failures at merchant A (rolled back)"
is "$(q -c "SELECT wallet.check_code('$FORGED_A', 'trudy', '{\"source\": \"10.0.0.1\"}') || '/' || wallet.check_code('$FORGED_B', 'trudy', '{\"source\": \"10.0.0.1\"}')")" \
   forged/throttled "trudy is judged again at A, still throttled at B"

# 5. An application's role (wallet_app, acting for the merchant: README
#    "Roles and privileges") redeems under READ COMMITTED and REPEATABLE READ.
q -c "SELECT wallet.set_code_guard(NULL, NULL, '1 hour')" >/dev/null
q >/dev/null <<'SQL'
SELECT wallet.create_campaign(1, 'capped', max_redemptions_per_code => 5, max_redemptions_per_member => 3, max_redemptions_total => 100);
INSERT INTO codes SELECT 'capped', g::text FROM wallet.generate_codes(3, 1) g;
CREATE ROLE guard_redeemer LOGIN;
GRANT wallet_app TO guard_redeemer;
SELECT wallet.grant_merchant(1, 'guard_redeemer');
SQL
CAPPED=$(q -c "SELECT code FROM codes WHERE name = 'capped'")
is "$(q -c "SELECT has_table_privilege('guard_redeemer', 'wallet.campaigns', 'UPDATE')")" f "(the role has no UPDATE on wallet.campaigns)"
rr() { psql -X -qAt -d "$DB" -U guard_redeemer -c "BEGIN ISOLATION LEVEL $1" -c "SELECT status FROM wallet.redeem_code('$CAPPED', 'rory', '$2')" -c "COMMIT" 2>&1; }
is "$(rr 'READ COMMITTED' rc-1)" ok "it redeems a capped code under READ COMMITTED"
is "$(rr 'REPEATABLE READ' rr-1)" ok "and under REPEATABLE READ"

# 6. Under REPEATABLE READ a cap changed after the snapshot is still caught:
#    a serialization failure to retry, not a redemption under the old caps.
sess_open s1
sess_run s1 "SET ROLE guard_redeemer; BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM wallet.code_redemptions" >/dev/null
q -c "UPDATE wallet.campaigns SET max_redemptions_per_code = 4 WHERE campaign_id = 3" >/dev/null
out=$(sess_run s1 "SELECT status FROM wallet.redeem_code('$CAPPED', 'rory', 'rr-2')")
sess_run s1 "ROLLBACK" >/dev/null
grep -q "could not serialize access due to a concurrent change of campaign 3" <<<"$out"; ok $? "a cap changed after a REPEATABLE READ snapshot: serialization failure"
is "$(rr 'REPEATABLE READ' rr-2)" ok "the retry redeems under the new caps"
sess_close s1

is "$BARRIER_MISSED" "" "every race started with all its sessions waiting at the barrier"
finish

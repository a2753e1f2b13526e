#!/usr/bin/env bash
# Concurrent wallet.generate_codes on one campaign: generators released
# together behind a barrier hand out disjoint serials, with no gap, and every
# code is distinct and authentic.  Serials are reserved outside the caller's
# transaction: a rolled-back block is never handed out again, a generator
# whose transaction stays open makes neither other generators nor anyone
# locking the campaign row wait, and a role holding wallet_admin (not only
# the extension's owner) creates campaigns and generates codes, while one
# holding wallet_app may not.
set -uo pipefail
DB=conc_codes_generate
TMP=$(mktemp -d /tmp/wallet-codes-gen.XXXXXX)
trap 'sess_close A 2>/dev/null; rm -rf "$TMP"' EXIT
. "$(dirname "$0")/../lib.sh"

WORKERS=4 CALLS=5 PER_CALL=10000
TOTAL=$((WORKERS * CALLS * PER_CALL))
plan 21

dropdb --if-exists "$DB" >/dev/null 2>&1; createdb "$DB" || exit 1
q -c "CREATE EXTENSION wallet" || exit 1
CID=$(q -c "SELECT wallet.create_campaign(wallet.create_merchant('gen'), 'race', 'GEN')")
q -c "CREATE TABLE out (worker int, call int, code wallet.marketing_code)"

barrier_hold || exit 1
for w in $(seq 1 "$WORKERS"); do
    {
        args=(-c "$BARRIER_SQL")
        for c in $(seq 1 "$CALLS"); do
            # each call is its own transaction, so the workers' calls interleave
            args+=(-c "INSERT INTO out SELECT $w, $c, x FROM wallet.generate_codes($CID, $PER_CALL) x")
        done
        timeout 120 psql -X -qAt -v ON_ERROR_STOP=1 -d "$DB" "${args[@]}" > "$TMP/w$w.out" 2>&1
        echo $? > "$TMP/w$w.rc"
    } &
done
barrier_wait_for "$WORKERS"; ok $? "all $WORKERS generators wait at the barrier"
barrier_release
wait

fails=0
for w in $(seq 1 "$WORKERS"); do [ "$(cat "$TMP/w$w.rc")" = 0 ] || { fails=$((fails + 1)); sed 's/^/# /' "$TMP/w$w.out"; }; done
is "$fails" 0 "every generator finished without error"
is "$(q -c "SELECT count(*) FROM out")" "$TOTAL" "$TOTAL codes emitted in all"
is "$(q -c "SELECT count(DISTINCT wallet.code_serial(code)) FROM out")" "$TOTAL" "no serial was emitted twice"
is "$(q -c "SELECT min(wallet.code_serial(code)) || '..' || max(wallet.code_serial(code)) FROM out")" "1..$TOTAL" "the serials are exactly 1..$TOTAL (no gap, no overlap)"
is "$(q -c "SELECT count(DISTINCT code) FROM out")" "$TOTAL" "all codes are distinct"
is "$(q -c "SELECT count(*) FROM (SELECT worker, call FROM out GROUP BY worker, call HAVING max(wallet.code_serial(code)) - min(wallet.code_serial(code)) = $PER_CALL - 1) s")" \
   "$((WORKERS * CALLS))" "each call got one contiguous block of $PER_CALL serials"
is "$(q -c "SELECT count(*) FILTER (WHERE NOT wallet.code_authentic(code)) || '/' || wallet.campaign_next_serial($CID) FROM out")" \
   "0/$((TOTAL + 1))" "every code is authentic and campaign_next_serial is past the last block"

# A transaction that streamed codes to its client and then rolled back: those
# codes may be printed already, so their serials must never come again.
CID2=$(q -c "SELECT wallet.create_campaign(1, 'rollback', 'RB')")
rolled=$(q -c "BEGIN" -c "SELECT min(wallet.code_serial(x)) || ' ' || max(wallet.code_serial(x)) FROM wallet.generate_codes($CID2, 1000) x" -c "ROLLBACK")
is "$rolled" "1 1000" "a transaction got serials 1..1000, then rolled back"
is "$(q -c "SELECT min(wallet.code_serial(x)) || ' ' || max(wallet.code_serial(x)) FROM wallet.generate_codes($CID2, 10) x")" "1001 1010" \
   "the next call gets 1001..1010: nothing of the rolled-back block again, and no gap"
# the same when the generating statement itself fails after codes went out
q -c "SELECT wallet.code_serial(x), 1 / (1013 - wallet.code_serial(x)) FROM wallet.generate_codes($CID2, 5) x" >/dev/null 2>&1
is "$(q -c "SELECT min(wallet.code_serial(x)) FROM wallet.generate_codes($CID2, 1) x")" 1016 \
   "after a statement that failed at serial 1013 of its block 1011..1015, the next code is 1016"

# A generator holding its transaction open: others neither wait for it nor
# find the campaign row locked (lock_timeout turns any wait into an error).
sess_open A
sess_run A "BEGIN" >/dev/null
a=$(sess_run A "SELECT min(wallet.code_serial(x)) || ' ' || max(wallet.code_serial(x)) FROM wallet.generate_codes($CID2, 100) x")
is "$a" "1017 1116" "generator A reserved 1017..1116 and keeps its transaction open"
b=$(q -c "SET lock_timeout = '2s'" -c "SELECT min(wallet.code_serial(x)) || ' ' || max(wallet.code_serial(x)) FROM wallet.generate_codes($CID2, 100) x" 2>&1)
is "$b" "1117 1216" "generator B, with lock_timeout 2s, did not wait for A and got 1117..1216"
c=$(q -c "SET lock_timeout = '2s'" -c "BEGIN" -c "SELECT campaign_id FROM wallet.campaigns WHERE campaign_id = $CID2 FOR UPDATE" -c "ROLLBACK" 2>&1)
is "$c" "$CID2" "with lock_timeout 2s, the campaign row can be locked FOR UPDATE (as a redemption would) while A is open"
sess_run A "ROLLBACK" >/dev/null
sess_close A
is "$(q -c "SELECT min(wallet.code_serial(x)) FROM wallet.generate_codes($CID2, 1) x")" 1217 "after A rolled back, its block stays used: the next code is 1217"

# Roles of the privilege model (README "Roles and privileges"), not owning
# the extension: an admin of merchant 1, and an app of it.
q >/dev/null 2>&1 <<SQL
DROP ROLE IF EXISTS codes_gen_admin;
DROP ROLE IF EXISTS codes_gen_reader;
SQL
q >/dev/null <<SQL || echo "# could not set up the roles"
CREATE ROLE codes_gen_admin;
CREATE ROLE codes_gen_reader;
GRANT wallet_admin TO codes_gen_admin;
GRANT wallet_app TO codes_gen_reader;
SELECT wallet.grant_merchant(1, 'codes_gen_admin'), wallet.grant_merchant(1, 'codes_gen_reader');
SQL
CID3=$(q -c "SET ROLE codes_gen_admin" -c "SELECT wallet.create_campaign(1, 'by a role')" 2>&1)
is "$(q -c "SELECT pg_get_userbyid(relowner) = pg_get_userbyid((SELECT relowner FROM pg_class WHERE oid = 'wallet.campaigns'::regclass)) FROM pg_class WHERE oid = 'wallet.campaign_${CID3}_serials'::regclass" 2>&1)" t \
   "a role holding wallet_admin creates a campaign; its sequence belongs to the owner of wallet.campaigns"
is "$(q -c "SET ROLE codes_gen_admin" -c "SELECT count(*) FROM wallet.generate_codes($CID3, 50) x WHERE wallet.code_authentic(x)" 2>&1)" 50 \
   "that role generates codes (no grant on a table or the sequence: generate_codes runs as the owner)"
out=$(q -v VERBOSITY=verbose -c "SET ROLE codes_gen_reader" -c "SELECT wallet.generate_codes($CID3, 1)" 2>&1)
grep -q "ERROR:  42501: permission denied for function generate_codes" <<<"$out"; ok $? "a role holding wallet_app may not generate codes (42501)" "$out"
is "$(q -c "SELECT wallet.campaign_next_serial($CID3)")" 51 "and its refused call used up no serial"

# DROP EXTENSION (no CASCADE) takes every campaign's sequence with it.
q -c "DROP TABLE out" -c "DROP OWNED BY codes_gen_admin, codes_gen_reader" -c "DROP EXTENSION wallet" >/dev/null
ok $? "DROP EXTENSION wallet succeeds without CASCADE while campaigns have sequences"
is "$(q -c "SELECT count(*) FROM pg_class WHERE relname LIKE 'campaign\_%\_serials'")" 0 "and no campaign sequence is left"
q -c "DROP ROLE codes_gen_admin" -c "DROP ROLE codes_gen_reader" >/dev/null

dropdb "$DB" >/dev/null 2>&1
finish

#!/usr/bin/env bash
# pg_dump and pg_restore keep marketing codes working: campaigns, key versions
# (with retirements), serial positions (the campaigns' sequences) and stored
# codes come back, and the restored database authenticates the same codes.
set -uo pipefail
DB=conc_codes_dump
TMP=$(mktemp -d /tmp/wallet-codes-dump.XXXXXX)
trap 'rm -rf "$TMP"; dropdb --if-exists "$DB" >/dev/null 2>&1; dropdb --if-exists "${DB}_restored" >/dev/null 2>&1' EXIT
. "$(dirname "$0")/../lib.sh"
plan 8

dropdb --if-exists "$DB" >/dev/null 2>&1; dropdb --if-exists "${DB}_restored" >/dev/null 2>&1
createdb "$DB" && createdb "${DB}_restored" || exit 1
q <<SQL >/dev/null || exit 1
CREATE EXTENSION wallet;
SELECT wallet.create_campaign(wallet.create_merchant('dump'), 'kept', 'SHOP', 48);
CREATE TABLE issued (code wallet.marketing_code PRIMARY KEY);
INSERT INTO issued SELECT wallet.generate_codes(1, 100);
SELECT wallet.rotate_code_key(1);
INSERT INTO issued SELECT wallet.generate_codes(1, 100);
SELECT wallet.retire_code_key(1, 1);
-- a rolled-back block stays used up, in the dump too
BEGIN;
SELECT count(*) FROM wallet.generate_codes(1, 50);
ROLLBACK;
SQL
before=$(q -c "SELECT string_agg(st || ':' || n, ',' ORDER BY st) FROM (SELECT (wallet.parse_code(code::text)).status st, count(*) n FROM issued GROUP BY 1) x")
is "$before" "ok:100,retired_key:100" "before the dump: 100 codes ok, 100 of the retired version"

pg_dump -Fc -d "$DB" -f "$TMP/dump" && pg_restore -d "${DB}_restored" "$TMP/dump"; ok $? "pg_dump and pg_restore succeed"
DB=${DB}_restored
is "$(q -c "SELECT string_agg(st || ':' || n, ',' ORDER BY st) FROM (SELECT (wallet.parse_code(code::text)).status st, count(*) n FROM issued GROUP BY 1) x")" \
   "$before" "after the restore the same codes are ok and retired"
is "$(q -c "SELECT prefix || ' ' || mac_bits || ' ' || current_key_version || ' ' || wallet.campaign_next_serial(campaign_id) FROM wallet.campaigns")" "SHOP 48 2 251" \
   "the campaign keeps its prefix, MAC length, key version and next serial (its sequence's position)"
is "$(q -c "SELECT min(wallet.code_serial(c)) FROM wallet.generate_codes(1, 5) c")" 251 "generation continues after the last serial handed out (rolled-back ones included)"
is "$(q -c "SELECT count(*) FROM pg_depend WHERE objid = 'wallet.campaign_1_serials'::regclass AND deptype IN ('a', 'e')")" 1 \
   "the restored sequence is owned by wallet.campaigns.campaign_id again (pg_dump leaves that out; loading the campaign restores it), and no member of the extension"
is "$(q -c "SELECT wallet.create_campaign(1, 'new one')")" 2 "new campaigns continue the id sequence"
q -c "DROP TABLE issued" -c "DROP EXTENSION wallet" >/dev/null
ok $? "DROP EXTENSION wallet (no CASCADE) works on the restored database, taking the campaigns' sequences along"
finish

#!/usr/bin/env bash
# Code keys bound to the installation (security review, issue 7).
#
# The root key is server-wide and campaign ids start at 1 in every database:
# with keys derived from (root key, campaign, key version) alone, a campaign
# with the same id, prefix and MAC length in a second database minted the
# first one's codes.  Here database A starts on 0.1.0 (run by the 0.2.0
# library until ALTER EXTENSION UPDATE), issues and redeems codes, upgrades;
# database B is a fresh 0.2.0 with the same campaign.  Codes never cross.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
A=conc_codes_upgrade_a
B=conc_codes_upgrade_b
TMP=$(mktemp -d /tmp/wallet-codes-upgrade.XXXXXX)
trap 'rm -rf "$TMP"; dropdb --if-exists "$A" >/dev/null 2>&1; dropdb --if-exists "$B" >/dev/null 2>&1' EXIT
. "$ROOT/test/lib.sh"
. "$ROOT/test/root_key.sh"   # the cluster of make test runs with this TEST-ONLY key
plan 22
# "authentic redeemable" counts of the codes in a table: every code is checked
# and redeemed (a member and idempotency key per code: the brute-force guard
# counts failures per member)
verdicts() {   # verdicts DB TABLE
    qdb "$1" -c "SELECT count(*) FILTER (WHERE wallet.code_authentic(c::wallet.marketing_code)) || ' '
        || count(*) FILTER (WHERE (wallet.redeem_code(c, 'm-' || c, 'x-' || c)).status = 'ok') FROM $2"
}

dropdb --if-exists "$A" >/dev/null 2>&1; dropdb --if-exists "$B" >/dev/null 2>&1
createdb "$A" && createdb "$B" || exit 1

# --- A on 0.1.0, run by the 0.2.0 library --------------------------------
qdb "$A" >/dev/null <<'SQL' || exit 1
CREATE EXTENSION wallet VERSION '0.1.0';
SELECT wallet.create_merchant('victim');
SELECT wallet.create_campaign(1, 'victim campaign', 'VIC', 40, max_redemptions_per_code => 1);
SELECT wallet.create_campaign(1, 'rotated', 'ROT', 48);
SELECT wallet.rotate_code_key(2);
CREATE TABLE old_codes (c text);
INSERT INTO old_codes SELECT wallet.generate_codes(1, 20)::text;
INSERT INTO old_codes SELECT wallet.generate_codes(2, 20)::text;
SQL
is "$(qdb "$A" -c "SELECT extversion FROM pg_extension WHERE extname = 'wallet'")" 0.1.0 "A runs the 0.1.0 SQL"
is "$(qdb "$A" -c "SELECT count(*) FILTER (WHERE wallet.code_authentic(c::wallet.marketing_code)) FROM old_codes")" 40 \
   "the 0.2.0 library generates and validates codes of a 0.1.0 database (no installation id yet)"
qdb "$A" -c "COPY (SELECT c FROM old_codes WHERE wallet.code_campaign(c::wallet.marketing_code) = 1 ORDER BY wallet.code_serial(c::wallet.marketing_code) LIMIT 1) TO STDOUT" > "$TMP/first"
is "$(cat "$TMP/first")" "$(python3 "$ROOT/docs/code_reference.py" "$WALLET_TEST_ROOT_KEY" legacy 1 1 1 VIC 40)" \
   "a 0.1.0 database keeps making codes of the legacy derivation (docs/code_reference.py, installation legacy)"
is "$(qdb "$A" -c "SELECT (wallet.redeem_code(c, 'alice', 'before-upgrade')).status FROM old_codes ORDER BY c LIMIT 1")" ok \
   "a code is redeemed before the upgrade"

# --- ALTER EXTENSION UPDATE ------------------------------------------------
qdb "$A" -c "ALTER EXTENSION wallet UPDATE" >/dev/null 2>"$TMP/update.err"; ok $? "ALTER EXTENSION wallet UPDATE from 0.1.0 succeeds"
sed 's/^/# /' "$TMP/update.err"
is "$(qdb "$A" -c "SELECT extversion FROM pg_extension WHERE extname = 'wallet'")" 0.2.0 "A now runs 0.2.0"
is "$(qdb "$A" -c "SELECT count(*) || ' ' || (installation_id = wallet.installation_id()) FROM wallet.installation GROUP BY installation_id")" "1 true" \
   "the upgrade made an installation id"
is "$(qdb "$A" -c "SELECT string_agg(campaign_id || ':' || key_version || ':' || (installation_id IS NOT NULL), ' ' ORDER BY campaign_id, key_version) FROM wallet.code_keys")" \
   "1:1:false 1:2:true 2:1:false 2:2:false 2:3:true" \
   "the key versions of 0.1.0 are marked legacy (no installation id) and every campaign moved to a new, bound version"
is "$(qdb "$A" -c "SELECT string_agg(campaign_id || ':' || current_key_version, ' ' ORDER BY campaign_id) FROM wallet.campaigns")" "1:2 2:3" \
   "the new versions are current"
is "$(qdb "$A" -c "SELECT count(*) FILTER (WHERE wallet.code_authentic(c::wallet.marketing_code)) FROM old_codes")" 40 \
   "every code issued before the upgrade is still authentic"
is "$(qdb "$A" -c "SELECT (wallet.redeem_code(c, 'bob', 'after-upgrade')).status FROM old_codes ORDER BY c OFFSET 1 LIMIT 1")" ok \
   "a code issued before the upgrade is redeemable after it"
isnt "$(qdb "$A" -c "SELECT (wallet.redeem_code(c, 'bob', 'again')).status FROM old_codes ORDER BY c LIMIT 1")" ok \
   "the code redeemed before the upgrade keeps its redemption (not redeemable again)"
qdb "$A" >/dev/null <<'SQL' || exit 1
CREATE TABLE new_codes (c text);
INSERT INTO new_codes SELECT wallet.generate_codes(1, 20)::text;
SQL
is "$(qdb "$A" -c "SELECT string_agg(DISTINCT wallet.code_key_version(c::wallet.marketing_code)::text, ',') || ' ' || count(*) FILTER (WHERE wallet.code_authentic(c::wallet.marketing_code)) FROM new_codes")" "2 20" \
   "codes issued after the upgrade carry the new key version and are authentic"
INST_A=$(qdb "$A" -c "SELECT wallet.installation_id()")
qdb "$A" -c "COPY (SELECT c FROM new_codes ORDER BY wallet.code_serial(c::wallet.marketing_code) LIMIT 1) TO STDOUT" > "$TMP/first_new"
is "$(cat "$TMP/first_new")" "$(python3 "$ROOT/docs/code_reference.py" "$WALLET_TEST_ROOT_KEY" "$INST_A" 1 21 2 VIC 40)" \
   "they are bound to A's installation id (docs/code_reference.py)"

# --- B: a fresh 0.2.0 with the same campaign id, prefix, MAC length, key version and serials
qdb "$B" >/dev/null <<'SQL' || exit 1
CREATE EXTENSION wallet;
SELECT wallet.create_merchant('attacker');
SELECT wallet.create_campaign(1, 'copy of the victim''s', 'VIC', 40);
CREATE TABLE b_codes (c text);
INSERT INTO b_codes SELECT wallet.generate_codes(1, 20)::text;   -- version 1, serials 1..20
SELECT wallet.rotate_code_key(1);
INSERT INTO b_codes SELECT wallet.generate_codes(1, 20)::text;   -- version 2, serials 21..40
SQL
is "$(qdb "$B" -c "SELECT count(*) FILTER (WHERE wallet.code_authentic(c::wallet.marketing_code)) FROM b_codes")" 40 "B's own codes are authentic in B"
qdb "$B" -c "COPY b_codes TO STDOUT" > "$TMP/b_codes"
qdb "$A" -c "CREATE TABLE b_codes (c text)" -c "COPY b_codes FROM STDIN" < "$TMP/b_codes"
is "$(qdb "$A" -c "SELECT count(*) FROM b_codes JOIN (SELECT c FROM old_codes UNION ALL SELECT c FROM new_codes) a USING (c)")" 0 \
   "B makes none of A's codes, issued before or after the upgrade, for the same campaign, prefix, version and serials"
is "$(verdicts "$A" b_codes)" "0 0" "A refuses every code minted in B: none authentic, none redeemable"
is "$(qdb "$A" -c "SELECT string_agg(DISTINCT (wallet.redeem_code(c, 'n-' || c, 'y-' || c)).status, ',') FROM b_codes")" forged \
   "redeem_code in A says forged for B's codes"
qdb "$A" -c "COPY (SELECT c FROM old_codes UNION ALL SELECT c FROM new_codes) TO STDOUT" > "$TMP/a_codes"
qdb "$B" -c "CREATE TABLE a_codes (c text)" -c "COPY a_codes FROM STDIN" < "$TMP/a_codes"
is "$(verdicts "$B" a_codes)" "0 0" "and B refuses every code of A"
is "$(qdb "$B" -c "SELECT string_agg(DISTINCT (wallet.redeem_code(c, 'n-' || c, 'y-' || c)).status, ',') FROM a_codes WHERE wallet.code_campaign(c::wallet.marketing_code) = 1")" forged \
   "redeem_code in B says forged for A's codes of campaign 1"

# A downgrade: whoever may insert key versions in B (a hand-granted table
# right, which the roles of README "Roles and privileges" never give) cannot make an unbound one
# (it would mint A's legacy codes of the same campaign and version).
qdb "$B" >/dev/null 2>&1 <<'SQL'
CREATE ROLE codes_upgrade_app;
GRANT USAGE ON SCHEMA wallet TO codes_upgrade_app;
GRANT SELECT, INSERT, UPDATE ON wallet.code_keys, wallet.campaigns TO codes_upgrade_app;
-- past row-level security (its policies call wallet.acts_for), to the trigger
GRANT wallet_reader TO codes_upgrade_app;
SELECT wallet.grant_merchant(1, 'codes_upgrade_app');
SQL
is "$(sqlstate -d "$B" -c "SET ROLE codes_upgrade_app; INSERT INTO wallet.code_keys (campaign_id, key_version, installation_id, merchant_id) VALUES (1, 3, NULL, 1)")" WL121 \
   "a non-owner cannot add an unbound (legacy) key version: WL121"
is "$(sqlstate -d "$B" -c "UPDATE wallet.code_keys SET installation_id = NULL WHERE campaign_id = 1 AND key_version = 2")" WL121 \
   "nobody can unbind a key version: WL121"
qdb "$B" -c "DROP OWNED BY codes_upgrade_app" -c "DROP ROLE codes_upgrade_app" >/dev/null 2>&1
finish

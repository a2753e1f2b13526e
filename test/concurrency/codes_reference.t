#!/usr/bin/env bash
# docs/code-format.md is the contract for point-of-sale apps: its reference
# implementation (docs/code_reference.py, standard-library Python) must make
# exactly the codes the server makes, for campaigns with every kind of
# prefix, MAC length, key version and serial width, and read them back; the
# server must read the reference's 0.1.0 texts of the same codes; and the
# choice of check symbols must never fail (docs/code-format.md 3.2).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DB=conc_codes_reference
TMP=$(mktemp -d /tmp/wallet-codes-ref.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
. "$ROOT/test/lib.sh"
. "$ROOT/test/root_key.sh"   # the cluster of make test runs with this TEST-ONLY key
plan 5
command -v python3 >/dev/null || { for i in 1 2 3 4 5; do echo "ok $i # SKIP python3 not installed"; done; exit 0; }

dropdb --if-exists "$DB" >/dev/null 2>&1; createdb "$DB" || exit 1
q <<'SQL' >/dev/null || exit 1
CREATE EXTENSION wallet;
SELECT setseed(0.42);
SELECT wallet.create_merchant('reference');
-- 64 campaigns: every prefix shape, MAC lengths 32..64, 0..3 rotations,
-- serials from 1 up to 2^38 - 1 (all four width classes)
SELECT wallet.create_campaign(1, 'c' || k,
         (ARRAY[NULL, 'SHOP', 'UOIL', 'A', 'ABCDEFGH', 'Z9', '0000', 'LIO'])[1 + k % 8],
         (ARRAY[40, 32, 64, 33, 48, 63, 41, 56])[1 + (k / 8) % 8])
  FROM generate_series(1, 60) k;
-- and campaign ids of every width class
ALTER TABLE wallet.campaigns ALTER COLUMN campaign_id RESTART WITH 300;
SELECT wallet.create_campaign(1, 'w16', 'SHOP');
ALTER TABLE wallet.campaigns ALTER COLUMN campaign_id RESTART WITH 70000;
SELECT wallet.create_campaign(1, 'w20', NULL, 36);
ALTER TABLE wallet.campaigns ALTER COLUMN campaign_id RESTART WITH 1048577;
SELECT wallet.create_campaign(1, 'w32', 'OIL', 64);
ALTER TABLE wallet.campaigns ALTER COLUMN campaign_id RESTART WITH 4294967290;
SELECT wallet.create_campaign(1, 'w32max', 'ZZZZZZZZ', 32);
SELECT wallet.rotate_code_key(campaign_id) FROM wallet.campaigns, generate_series(1, 3) r WHERE r <= campaign_id % 4;
CREATE TABLE pos AS
  SELECT campaign_id, 1 + floor(random() * (ARRAY[2^16, 2^24, 2^32, 2^38 - 1000])[1 + campaign_id % 4])::bigint AS serial
    FROM wallet.campaigns;
SELECT count(setval(format('wallet.campaign_%s_serials', campaign_id)::regclass, serial, false)) FROM pos;
CREATE TABLE made AS
  SELECT c.campaign_id, p.serial, c.current_key_version AS version, coalesce(c.prefix, '') AS prefix, c.mac_bits,
         (SELECT x::text FROM wallet.generate_codes(c.campaign_id, 1) x) AS code
    FROM wallet.campaigns c JOIN pos p USING (campaign_id);
SQL
q -c "COPY (SELECT campaign_id, serial, version, prefix, mac_bits, code FROM made ORDER BY 1) TO STDOUT" > "$TMP/made.tsv"
INST=$(q -c "SELECT wallet.installation_id()")

python3 - "$ROOT/docs" "$WALLET_TEST_ROOT_KEY" "$TMP/made.tsv" "$INST" "$TMP/old.tsv" > "$TMP/py.out" 2>&1 <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
from code_reference import encode, decode, mac, installation_id
root = bytes.fromhex(sys.argv[2])
inst = installation_id(sys.argv[4])   # the database's own, random id
enc_bad = dec_bad = 0
n = 0
old = open(sys.argv[5], "w")
for line in open(sys.argv[3]):
    campaign, serial, version, prefix, mac_bits, code = line.rstrip("\n").split("\t")
    campaign, serial, version, mac_bits = int(campaign), int(serial), int(version), int(mac_bits)
    n += 1
    mine = encode(root, inst, campaign, serial, version, prefix, mac_bits)
    if mine != code:
        enc_bad += 1
        print("# encode differs: server %s, reference %s (%s)" % (code, mine, line.strip()))
    old.write("%s\t%s\n" % (code, encode(root, inst, campaign, serial, version, prefix, mac_bits, text_0_1_0=True)))
    status, f = decode(code)
    if status != "ok" or (f["campaign"], f["serial"], f["version"], f["prefix"], f["mac_bits"]) != (campaign, serial, version, prefix, mac_bits) \
            or f["mac"] != mac(root, inst, campaign, serial, version, prefix, mac_bits):
        dec_bad += 1
        print("# decode differs for %s: %s %s" % (code, status, f))
print("rows %d encode_bad %d decode_bad %d" % (n, enc_bad, dec_bad))
PY
grep '^#' "$TMP/py.out"
summary=$(grep '^rows' "$TMP/py.out")
is "$(echo "$summary" | awk '{print $2}')" 64 "64 codes made by the server, one per campaign"
is "$(echo "$summary" | awk '{print $4}')" 0 "the reference implementation makes the same text for every one"
is "$(echo "$summary" | awk '{print $6}')" 0 "and reads back the same campaign, serial, key version, prefix, MAC length and MAC"
is "$(q -c "CREATE TEMP TABLE old (code text, old text)" -c "\\copy old FROM '$TMP/old.tsv'" \
        -c "SELECT count(*) FILTER (WHERE (wallet.parse_code(old)).status = 'ok' AND old::wallet.marketing_code::text = code) FROM old")" 64 \
   "the server reads the reference's 0.1.0 text of every one (one check symbol) as the same code"
is "$(python3 "$ROOT/docs/code_reference.py" --prove)" "every code has its check pair" \
   "every code has its two check symbols: the choice of docs/code-format.md 3.2 never fails (all 37 x 32 x 32 x 27 cases)"
dropdb "$DB" >/dev/null 2>&1
finish

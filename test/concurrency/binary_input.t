#!/usr/bin/env bash
# Binary input (COPY ... FORMAT binary, as pg_restore and drivers use it) of
# wallet.marketing_code and wallet.points_ledger: tampered data is refused with
# a specific SQLSTATE and a clear message, and the rows already stored stay.
set -uo pipefail
DB=conc_binary_input_$$
TMP=$(mktemp -d /tmp/wallet-binary.XXXXXX)
trap 'dropdb --if-exists "$DB" 2>/dev/null; rm -rf "$TMP"' EXIT
. "$(dirname "$0")/../lib.sh"
# copy_in TABLE FILE: the verbose error of COPY FROM, or "loaded"
copy_in() {
    local out
    if out=$(psql -qXAt -v VERBOSITY=verbose -d "$DB" -c "\\copy $1 FROM '$2' WITH (FORMAT binary)" 2>&1); then
        echo loaded
    else
        echo "$out" | grep -m1 '^ERROR'
    fi
}
# tamper IN OUT OFFSET BYTE: copy IN to OUT with one byte of the first field replaced.
# A one-column binary COPY file: 19-byte header, then per row a 2-byte field
# count and a 4-byte length, so the first field's data starts at offset 25.
tamper() {
    python3 - "$@" <<'PY'
import sys
src, dst, off, byte = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
b = bytearray(open(src, 'rb').read())
b[25 + off] = byte
open(dst, 'wb').write(b)
PY
}
# truncate_field IN OUT KEEP: the first field cut to its first KEEP bytes.
truncate_field() {
    python3 - "$@" <<'PY'
import sys, struct
src, dst, keep = sys.argv[1], sys.argv[2], int(sys.argv[3])
b = open(src, 'rb').read()
(length,) = struct.unpack('>i', b[21:25])
open(dst, 'wb').write(b[:21] + struct.pack('>i', keep) + b[25:25 + keep] + b[25 + length:])
PY
}

plan 9
createdb "$DB" || { echo "Bail out! cannot create database"; exit 1; }
q -c "CREATE EXTENSION wallet" >/dev/null
q -c "SELECT wallet.create_merchant('m'); SELECT wallet.create_campaign(1, 'c', 'SHOP');
   CREATE TABLE codes (code wallet.marketing_code);
   INSERT INTO codes SELECT wallet.generate_codes(1, 1);
   CREATE TABLE ledgers (l wallet.points_ledger);
   INSERT INTO ledgers VALUES ('lots={100@2030-01-01T00:00:00+00:00,5@never} earned=105 months={2026-11:105}');" >/dev/null
codes_before=$(q -c "SELECT string_agg(code::text, ',') FROM codes")
ledgers_before=$(q -c "SELECT string_agg(l::text, ',') FROM ledgers")
psql -qX -d "$DB" -c "\\copy codes TO '$TMP/code.bin' WITH (FORMAT binary)"
psql -qX -d "$DB" -c "\\copy ledgers TO '$TMP/ledger.bin' WITH (FORMAT binary)"

check "an untouched binary code loads back" "$(copy_in codes "$TMP/code.bin")" loaded
q -c "DELETE FROM codes WHERE ctid = (SELECT max(ctid) FROM codes)" >/dev/null

tamper "$TMP/code.bin" "$TMP/code_v9.bin" 0 9
check "a code in an unknown binary format version is refused with 22P03" \
    "$(copy_in codes "$TMP/code_v9.bin")" \
    "ERROR:  22P03: unsupported binary format version 9 of type wallet.marketing_code"
# after the version byte: campaign (4), serial (8), key version (2), then the MAC length
tamper "$TMP/code.bin" "$TMP/code_mac.bin" 15 99
check "a code with a 99-bit MAC is refused with 22P03" \
    "$(copy_in codes "$TMP/code_mac.bin")" "ERROR:  22P03: invalid binary value of type wallet.marketing_code"
check "the stored codes are untouched by the refused loads" "$(q -c "SELECT string_agg(code::text, ',') FROM codes")" "$codes_before"

check "an untouched binary ledger loads back" "$(copy_in ledgers "$TMP/ledger.bin")" loaded
q -c "DELETE FROM ledgers WHERE ctid = (SELECT max(ctid) FROM ledgers)" >/dev/null
tamper "$TMP/ledger.bin" "$TMP/ledger_v9.bin" 0 9
check "a ledger in an unknown binary format version is refused with 22P03" \
    "$(copy_in ledgers "$TMP/ledger_v9.bin")" "ERROR:  22P03: unsupported points_ledger binary format version 9"
truncate_field "$TMP/ledger.bin" "$TMP/ledger_short.bin" 5
got=$(copy_in ledgers "$TMP/ledger_short.bin")
check "a truncated ledger is refused, not read past its end" "$(echo "$got" | grep -cE '^ERROR:  (22P03|08P01):')" 1
echo "# $got"
truncate_field "$TMP/code.bin" "$TMP/code_short.bin" 6
got=$(copy_in codes "$TMP/code_short.bin")
check "a truncated code is refused, not read past its end" "$(echo "$got" | grep -cE '^ERROR:  (22P03|08P01):')" 1
echo "# $got"
check "the stored ledgers are untouched by the refused loads" "$(q -c "SELECT string_agg(l::text, ',') FROM ledgers")" "$ledgers_before"
finish

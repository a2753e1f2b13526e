#!/usr/bin/env bash
# No single wallet.points_ledger value can pin a CPU: a value of 300,000 lots
# (text, binary COPY, ledger_apply('restore')) is refused within a second of
# statement_timeout = 2s, and a long query over many values at the bound
# (2,000 lots) stops within a second of pg_cancel_backend or
# pg_terminate_backend sent from a second session.
set -uo pipefail
DB=conc_ledger_limits_$$
TMP=$(mktemp -d /tmp/wallet-limits.XXXXXX)
chmod 755 "$TMP"
trap 'dropdb --if-exists "$DB" 2>/dev/null; rm -rf "$TMP"' EXIT
. "$(dirname "$0")/codes_lib.sh"   # is, q
check() { is "$2" "$3" "$1"; }   # check NAME GOT WANT
now_ms() { date +%s%3N; }
# timed SQL: prints "SQLSTATE within|late MS" for a statement run under statement_timeout = 2s
timed() {
    local t0 t1 out state
    t0=$(now_ms)
    out=$(PGOPTIONS="-c statement_timeout=2s" psql -qXAt -v VERBOSITY=verbose -d "$DB" "$@" 2>&1 >/dev/null)
    t1=$(now_ms)
    state=$(echo "$out" | sed -n -E 's/^ERROR:  ([0-9A-Z]{5}):.*/\1/p' | head -1)
    echo "# $(echo "$out" | head -1) ($((t1 - t0)) ms)" >&2
    if [ $((t1 - t0)) -lt 3000 ]; then echo "${state:-none} within"; else echo "${state:-none} late"; fi
}

echo "1..7"
createdb "$DB" || { echo "Bail out! cannot create database"; exit 1; }
q -c "CREATE EXTENSION wallet" >/dev/null
# 300,000 lots with distinct expiries, as text (about 10 MB) and as binary COPY
q -c "CREATE TABLE big AS SELECT 'lots={' || string_agg(format('1@%s', to_char(timestamptz '2030-01-01 00:00+00' + i * interval '1 second', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')), ',') || '}' AS t
     FROM generate_series(1, 300000) i" >/dev/null
python3 - "$TMP/big.bin" <<'PY'
import struct, sys
lots = 300000
v = struct.pack('>b', 1) + struct.pack('>qqqqi', 0, 0, 0, 0, -2**31) + struct.pack('>24q', *([0] * 24))
v += struct.pack('>i', lots) + b''.join(struct.pack('>qq', 1, 946684800000000 + i * 1000000) for i in range(lots))
v += struct.pack('>i', 0)
row = struct.pack('>h', 1) + struct.pack('>i', len(v)) + v
open(sys.argv[1], 'wb').write(b'PGCOPY\n\xff\r\n\x00' + struct.pack('>ii', 0, 0) + row + struct.pack('>h', -1))
PY
q -c "CREATE TABLE ledgers (l wallet.points_ledger)" >/dev/null

check "text input of 300,000 lots is refused (22P02) within a second of statement_timeout" \
    "$(timed -c "SELECT t::wallet.points_ledger FROM big")" "22P02 within"
check "binary input of 300,000 lots is refused (22P03) within a second of statement_timeout" \
    "$(timed -c "\\copy ledgers FROM '$TMP/big.bin' WITH (FORMAT binary)")" "22P03 within"
check "ledger_apply('restore') of 300,000 lots is refused (54000) within a second of statement_timeout" \
    "$(timed -c "SELECT wallet.ledger_apply('', 'restore', '2026-01-01', NULL, NULL, NULL,
                   array_fill(1::bigint, ARRAY[300000]), ARRAY(SELECT timestamptz '2030-01-01' + i * interval '1 second' FROM generate_series(1, 300000) i))")" \
    "54000 within"

# values at the bound, and a query over them that would run for minutes
q -c "CREATE TABLE v AS SELECT ('lots={' || string_agg(format('1@%s', to_char(timestamptz '2030-01-01 00:00+00' + i * interval '1 day', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')), ',') || '}')::wallet.points_ledger AS l
     FROM generate_series(1, 2000) i" >/dev/null
LONG="SELECT count(*) FROM v, generate_series(1, 10000000) g
       WHERE (wallet.ledger_apply(l, 'expire', timestamptz '2040-01-01' + g * interval '1 day', NULL)).amount < 0"
# stop_long FUNCTION: start the long query in one session, stop it from a second one after
# 1.5 s; prints "SQLSTATE-or-FATAL within|late" (within: the query ended within 1 s of the signal)
stop_long() {
    local fn=$1 pid t0 t1 out
    psql -qXAt -v VERBOSITY=verbose -d "$DB" -c "SET application_name = 'ledger_limits_long'" -c "$LONG" > "$TMP/long.out" 2>&1 &
    pid=$!
    for _ in $(seq 1 50); do
        [ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ledger_limits_long' AND state = 'active' AND query LIKE '%generate_series%'")" = 1 ] && break
        sleep 0.1
    done
    sleep 1.5
    t0=$(now_ms)
    q -c "SELECT $fn(pid) FROM pg_stat_activity WHERE application_name = 'ledger_limits_long' AND state = 'active'" >/dev/null
    wait "$pid"
    t1=$(now_ms)
    out=$(grep -m1 -oE '^(ERROR|FATAL):  [0-9A-Z]{5}' "$TMP/long.out" | sed 's/:  /-/')
    echo "# $fn: $(head -1 "$TMP/long.out") ($((t1 - t0)) ms after the signal)" >&2
    if [ $((t1 - t0)) -lt 1000 ]; then echo "${out:-none} within"; else echo "${out:-none} late"; fi
}
# Its speed is bench material, not a test assertion: printed, never asserted.
at_bound=$(q -c "SELECT count(*) FROM v, generate_series(1, 200) g WHERE (wallet.ledger_apply(l, 'expire', timestamptz '2040-01-01' + g * interval '1 day', NULL)).amount = -2000;
                 SELECT round((extract(epoch FROM clock_timestamp() - now()) * 1000 / 200)::numeric, 2)")
echo "# one expire of all 2,000 lots at the bound: $(echo "$at_bound" | tail -1) ms a call" >&2
check "a value at the bound works: each of 200 expiries takes back all 2,000 lots" "$(echo "$at_bound" | head -1)" 200
check "pg_cancel_backend stops a long query over values at the bound within a second (57014)" \
    "$(stop_long pg_cancel_backend)" "ERROR-57014 within"
check "pg_terminate_backend stops it within a second too" \
    "$(stop_long pg_terminate_backend)" "FATAL-57P01 within"
check "no ledger was stored by the refused inputs" "$(q -c "SELECT count(*) FROM ledgers")" 0

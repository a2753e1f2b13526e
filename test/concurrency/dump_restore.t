#!/usr/bin/env bash
# pg_dump / pg_restore keeps every merchant, program, account and journal entry,
# the sequences' positions, and a ledger that still verifies against its journal.
set -uo pipefail
BIN=$("${PG_CONFIG:-pg_config}" --bindir)
SRC=dump_src_$$ DST=dump_dst_$$
. "$(dirname "$0")/../lib.sh"
cleanup() { dropdb --if-exists "$SRC" 2>/dev/null; dropdb --if-exists "$DST" 2>/dev/null; rm -f "/tmp/$SRC.dump"; }
trap cleanup EXIT

plan 7
createdb "$SRC" && createdb "$DST" || { echo "Bail out! cannot create databases"; exit 1; }
qdb "$SRC" -c "CREATE EXTENSION wallet" >/dev/null
qdb "$SRC" -c "
    SELECT wallet.create_merchant('Dump Coffee');
    SELECT wallet.create_program(1, 'Dump Rewards', interval '1 year', 'month');
    SELECT wallet.open_account(1, 'm-1');
    SELECT wallet.accrue(1, 500, 'k1', 'purchase', 'order-1');
    SELECT wallet.redeem(1, 120, 'k2', 'coupon', 'order-2');
    SELECT wallet.hold(1, 30, 'k3', interval '1 day', 'checkout', 'order-3');" >/dev/null
before=$(qdb "$SRC" -c "SELECT wallet.balance(1) || '/' || (SELECT count(*) FROM wallet.entries) || '/' || wallet.accounts.ledger::text FROM wallet.accounts")

"$BIN/pg_dump" -Fc -f "/tmp/$SRC.dump" "$SRC" 2>&1 | sed 's/^/# /'
"$BIN/pg_restore" --exit-on-error -d "$DST" "/tmp/$SRC.dump" 2>&1 | sed 's/^/# /'
check "pg_restore succeeds" "${PIPESTATUS[0]}" 0

after=$(qdb "$DST" -c "SELECT wallet.balance(1) || '/' || (SELECT count(*) FROM wallet.entries) || '/' || wallet.accounts.ledger::text FROM wallet.accounts")
check "balance, journal length and stored ledger are restored" "$after" "$before"
check "merchants are restored" "$(qdb "$DST" -c "SELECT string_agg(name, ',') FROM wallet.merchants")" "Dump Coffee"
check "the restored journal replays to the stored ledgers" "$(qdb "$DST" -c "SELECT count(*) FROM wallet.verify_ledger()")" 0
check "a restored hold can still be captured" \
    "$(qdb "$DST" -c "SELECT kind || ' ' || balance_after FROM wallet.capture((SELECT entry_id FROM wallet.entries WHERE kind = 'hold'))")" "capture 350"
check "ids continue after the restored ones (sequences restored)" \
    "$(qdb "$DST" -c "SELECT wallet.create_merchant('Second') > 1 AND (wallet.accrue(1, 1, 'k9', 'after restore')).entry_id > 4")" t
check "the restored journal is still append-only" \
    "$(psql -qXAt -d "$DST" -c "DELETE FROM wallet.entries" 2>&1 | grep -c 'append-only')" 1
finish

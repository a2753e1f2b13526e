#!/usr/bin/env bash
# Idempotency keys (issue 8), printed as TAP:
#   1. keys stored by 0.1.0 (redemptions, reservations, postings of every
#      kind) replay as before after ALTER EXTENSION wallet UPDATE, and a
#      reused one is still WL002;
#   2. races: sessions sending the same key at once (capture, release, a
#      redemption whose context differs per session, a key shared by a
#      capture and an accrual) leave one row, and every session gets its
#      result or WL002.
#
# Needs PGHOST/PGPORT/PGUSER (make test sets them).  Creates its own databases.
set -uo pipefail

DB=conc_idempotency
OLD=conc_idempotency_old
TMP=$(mktemp -d /tmp/idempotency.XXXXXX)
trap '[ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"; dropdb --if-exists "$DB" >/dev/null 2>&1; dropdb --if-exists "$OLD" >/dev/null 2>&1' EXIT
export PGOPTIONS="${PGOPTIONS:-} -c statement_timeout=60s"
. "$(dirname "$0")/../lib.sh"
qo() { psql -X -qAt -v ON_ERROR_STOP=1 -d "$OLD" "$@"; }
# the SQLSTATE a statement raises in $OLD, or "ok"
state_of() { psql -X -qAt -d "$OLD" -c "\\set VERBOSITY sqlstate" -c "$1" >/dev/null 2>"$TMP/err" && echo ok || sed -n 's/^.*ERROR: *//p' "$TMP/err"; }

echo "1..15"

# 1. Keys stored by 0.1.0 --------------------------------------------------------
dropdb --if-exists "$OLD" >/dev/null 2>&1
createdb "$OLD" || { echo "Bail out! cannot create database $OLD"; exit 1; }
qo >"$TMP/fill.out" 2>&1 <<'SQL'
CREATE EXTENSION wallet VERSION '0.1.0';
SELECT wallet.create_merchant('idem');
SELECT wallet.create_campaign(1, 'idem', max_redemptions_per_code => 3);
CREATE TABLE kept (name text PRIMARY KEY, v text);
INSERT INTO kept SELECT 'code' || n, g::text FROM wallet.generate_codes(1, 2) WITH ORDINALITY x(g, n);
INSERT INTO kept SELECT 'redemption', redemption_id FROM wallet.redeem_code((SELECT v FROM kept WHERE name = 'code1'), 'm-1', 'old-r',
                                                                           '{"source": "app", "ip": "10.0.0.1"}');
INSERT INTO kept SELECT 'reservation', reservation_id FROM wallet.reserve_code((SELECT v FROM kept WHERE name = 'code2'), 'm-2', 'old-v', '1 day');
SELECT wallet.create_program(1, 'idem', interval '12 months', 'month');
SELECT wallet.open_account(1, 'm-1');
INSERT INTO kept SELECT 'accrue', entry_id FROM wallet.accrue(1, 500, 'old-a', 'purchase', 'order-1');
INSERT INTO kept SELECT 'redeem', entry_id FROM wallet.redeem(1, 20, 'old-d', 'coupon');
INSERT INTO kept SELECT 'hold', entry_id FROM wallet.hold(1, 30, 'old-h', '1 day', 'cart');
INSERT INTO kept SELECT 'capture', entry_id FROM wallet.capture((SELECT v::bigint FROM kept WHERE name = 'hold'), 10);
INSERT INTO kept SELECT 'hold2', entry_id FROM wallet.hold(1, 30, 'old-h2', '1 day', 'cart 2');
INSERT INTO kept SELECT 'release', entry_id FROM wallet.release((SELECT v::bigint FROM kept WHERE name = 'hold2'));
INSERT INTO kept SELECT 'reverse', entry_id FROM wallet.reverse((SELECT v::bigint FROM kept WHERE name = 'redeem'), 'old-rv', 'refund');
INSERT INTO kept SELECT 'adjust', entry_id FROM wallet.adjust(1, 15, 'old-j', 'goodwill');
ALTER EXTENSION wallet UPDATE;
SQL
ok $? "a 0.1.0 database with a redemption, a reservation and postings of every kind is updated"
kept() { qo -c "SELECT v FROM kept WHERE name = '$1'"; }
code1=$(kept code1) code2=$(kept code2) hold=$(kept hold) hold2=$(kept hold2)
is "$(qo -c "SELECT redemption_id || ':' || replayed FROM wallet.redeem_code('$code1', 'm-1', 'old-r', '{\"source\": \"app\", \"ip\": \"10.0.0.1\"}')")" \
   "$(kept redemption):true" "an old redemption's key replays after the update"
is "$(qo -c "SELECT redemption_id || ':' || replayed FROM wallet.redeem_code(lower('$code1'), 'm-1', 'old-r', '{\"source\": \"app\"}')")" \
   "$(kept redemption):true" "and its retry without the ip is a retry too"
is "$(state_of "SELECT wallet.redeem_code('$code1', 'm-9', 'old-r')")" WL002 "the old key for another member is WL002"
is "$(qo -c "SELECT reservation_id || ':' || replayed FROM wallet.reserve_code('$code2', 'm-2', 'old-v', '24 hours')")" \
   "$(kept reservation):true" "an old reservation's key replays"
is "$(qo -c "SELECT string_agg(x, ',') FROM (VALUES
        ((wallet.accrue(1, 500, 'old-a', 'purchase', 'order-1')).entry_id::text),
        ((wallet.redeem(1, 20, 'old-d', 'coupon')).entry_id::text),
        ((wallet.hold(1, 30, 'old-h', '1 day', 'cart')).entry_id::text),
        ((wallet.capture($hold, 10)).entry_id::text),
        ((wallet.release($hold2)).entry_id::text),
        ((wallet.reverse($(kept redeem), 'old-rv', 'refund')).entry_id::text),
        ((wallet.adjust(1, 15, 'old-j', 'goodwill')).entry_id::text)) v(x)")" \
   "$(kept accrue),$(kept redeem),$(kept hold),$(kept capture),$(kept release),$(kept reverse),$(kept adjust)" \
   "every old posting replays to its entry (accrue, redeem, hold, capture, release, reverse, adjust)"
is "$(state_of "SELECT wallet.accrue(1, 501, 'old-a', 'purchase', 'order-1')")/$(state_of "SELECT wallet.adjust(1, 16, 'old-j', 'goodwill')")" \
   WL002/WL002 "an old posting's key with other points is WL002"
is "$(qo -c "SELECT count(*) FROM wallet.entries")/$(qo -c "SELECT count(*) FROM wallet.verify_ledger()")" "8/0" \
   "the retries posted nothing and the ledger verifies"

# 2. Races ------------------------------------------------------------------------
dropdb --if-exists "$DB" >/dev/null 2>&1
createdb "$DB" || { echo "Bail out! cannot create database $DB"; exit 1; }
q >/dev/null <<'SQL' || { echo "Bail out! setup failed"; exit 1; }
CREATE EXTENSION wallet;
SELECT wallet.set_code_guard(NULL, NULL, '1 hour');
SELECT wallet.create_merchant('idem race');
SELECT wallet.create_campaign(1, 'idem race', max_redemptions_per_code => 100);
CREATE TABLE kept (name text PRIMARY KEY, v text);
SQL
q >/dev/null <<'SQL' || { echo "Bail out! setup failed"; exit 1; }
INSERT INTO kept SELECT 'code', g::text FROM wallet.generate_codes(1, 1) g;
SELECT wallet.create_program(1, 'idem race');
INSERT INTO kept SELECT 'account', wallet.open_account(1, 'racer');
SELECT wallet.accrue(1, 1000, 'seed', 'seed');
INSERT INTO kept SELECT 'h1', entry_id FROM wallet.hold(1, 50, 'h1', '1 hour', 'cart 1');
INSERT INTO kept SELECT 'h2', entry_id FROM wallet.hold(1, 50, 'h2', '1 hour', 'cart 2');
INSERT INTO kept SELECT 'h3', entry_id FROM wallet.hold(1, 50, 'h3', '1 hour', 'cart 3');
SQL
v() { q -c "SELECT v FROM kept WHERE name = '$1'"; }
h1=$(v h1) h2=$(v h2) h3=$(v h3) code=$(v code)
N=16
race cap $N "SELECT 'entry ' || entry_id FROM wallet.capture($h1, 20, 'race-cap')"
is "$(count cap 'entry [0-9]+')/$(cat "$TMP"/cap.* | sort -u | grep -c '^entry')/$(q -c "SELECT count(*) FROM wallet.entries WHERE hold_id = $h1 AND kind = 'capture'")" \
   "$N/1/1" "$N sessions capture a hold with one key at once: each gets the same entry, one capture is posted"
race rel $N "SELECT 'entry ' || entry_id FROM wallet.release($h2, 'race-rel')"
is "$(count rel 'entry [0-9]+')/$(cat "$TMP"/rel.* | sort -u | grep -c '^entry')/$(q -c "SELECT count(*) FROM wallet.entries WHERE hold_id = $h2 AND kind = 'release'")" \
   "$N/1/1" "$N sessions release a hold with one key at once: each gets the same entry, one release is posted"
race red $N "SELECT 'redemption ' || redemption_id FROM wallet.redeem_code('$code', 'racer', 'race-red', '{\"ip\": \"10.0.0.@I@\"}')"
is "$(count red 'redemption [0-9]+')/$(cat "$TMP"/red.* | sort -u | grep -c '^redemption')/$(q -c "SELECT count(*) FROM wallet.code_redemptions WHERE idempotency_key = 'race-red'")" \
   "$N/1/1" "$N sessions redeem with one key, each from another ip: one redemption, every session gets it"
# one key, two operations: odd sessions capture, even ones accrue
race mix $N "SELECT CASE WHEN @I@ % 2 = 1 THEN (SELECT 'entry ' || entry_id || ' ' || kind FROM wallet.capture($h3, NULL, 'race-mix'))
                          ELSE (SELECT 'entry ' || entry_id || ' ' || kind FROM wallet.accrue(1, 5, 'race-mix', 'r')) END"
winner=$(q -c "SELECT kind FROM wallet.entries WHERE idempotency_key = 'race-mix'")
is "$(q -c "SELECT count(*) FROM wallet.entries WHERE idempotency_key = 'race-mix'")" 1 "capture and accrual racing with one key: one entry"
is "$(count mix "entry [0-9]+ $winner")/$(count mix '.*ERROR: +WL002: idempotency key "race-mix" was already used with different arguments')" \
   "$((N / 2))/$((N / 2))" "the winner's kind is returned to its $((N / 2)) sessions, the other $((N / 2)) get WL002"
is "$(q -c "SELECT count(*) FROM wallet.verify_ledger()")" 0 "the ledger verifies after the races"
is "$BARRIER_MISSED" "" "every race started with all its sessions waiting at the barrier"

exit $((T_FAILED > 0))

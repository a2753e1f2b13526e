#!/usr/bin/env bash
# ALTER EXTENSION wallet UPDATE from 0.1.0, the released version, against a
# database filled with every kind of object the 0.1.0 API makes, leaves:
#   - exactly the objects of a fresh install (test/upgrade/describe.sql: every
#     object with its definition, comment and privileges, compared line by line),
#   - every code authenticating as it did, every ledger verifying,
#   - a database that takes new postings and redemptions.
# Filling it runs the frozen 0.1.0 SQL against the current library, so that
# mismatch is exercised too.  Any change to the install script's parts that
# the upgrade script lacks makes this test fail.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OLD=upgrade_old_$$ NEW=upgrade_new_$$
TMP=$(mktemp -d /tmp/wallet-upgrade.XXXXXX)
. "$ROOT/test/lib.sh"
cleanup() { dropdb --if-exists "$OLD" 2>/dev/null; dropdb --if-exists "$NEW" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

plan 13
createdb "$OLD" && createdb "$NEW" || { echo "Bail out! cannot create databases"; exit 1; }

# 1. A 0.1.0 database with codes generated, issued, redeemed, reserved,
#    converted, released and undone, rotated and retired key versions, failed
#    attempts, and points postings of every kind.
qdb "$OLD" >"$TMP/fill.out" 2>&1 <<'SQL'
CREATE EXTENSION wallet VERSION '0.1.0';
CREATE TABLE public.kept_codes (code text PRIMARY KEY, authentic boolean);
SELECT wallet.create_merchant('Upgrade Coffee');
SELECT wallet.create_merchant('Upgrade Tea');
SELECT wallet.create_campaign(1, 'single use', prefix => 'UPG');
SELECT wallet.create_campaign(1, 'public', max_redemptions_per_code => 100, max_redemptions_total => 1000);
SELECT wallet.create_campaign(2, 'rotated', prefix => 'ROT', mac_bits => 48);
INSERT INTO public.kept_codes (code) SELECT c::text FROM wallet.generate_codes(1, 40) AS c;
INSERT INTO public.kept_codes (code) SELECT c::text FROM wallet.generate_codes(2, 3) AS c;
INSERT INTO public.kept_codes (code) SELECT c::text FROM wallet.generate_codes(3, 5) AS c;
SELECT wallet.rotate_code_key(3);
INSERT INTO public.kept_codes (code) SELECT c::text FROM wallet.generate_codes(3, 5) AS c;
SELECT wallet.retire_code_key(3, 1);
-- issued and redeemed; reserved then converted; reserved then released; redeemed then undone
INSERT INTO public.kept_codes (code) SELECT wallet.issue_code(1, 'm-1')::text;
SELECT status FROM wallet.redeem_code((SELECT max(code) FROM public.kept_codes WHERE code LIKE 'UPG%'), 'm-1', 'r-1');
INSERT INTO public.kept_codes (code) SELECT wallet.issue_code(1, 'm-2')::text RETURNING code \gset c2_
SELECT status FROM wallet.reserve_code(:'c2_code', 'm-2', 'res-1', interval '1 hour');
SELECT status FROM wallet.redeem_code(:'c2_code', 'm-2', 'res-1');
INSERT INTO public.kept_codes (code) SELECT wallet.issue_code(1, 'm-3')::text RETURNING code \gset c3_
SELECT reservation_id FROM wallet.reserve_code(:'c3_code', 'm-3', 'res-2', interval '1 hour') \gset
SELECT state FROM wallet.release_reservation(:reservation_id);
INSERT INTO public.kept_codes (code) SELECT wallet.issue_code(1, 'm-4')::text RETURNING code \gset c4_
SELECT redemption_id FROM wallet.redeem_code(:'c4_code', 'm-4', 'r-4') \gset
SELECT undone_at IS NOT NULL FROM wallet.undo_redemption(:redemption_id, 'customer returned the goods');
SELECT c.code, s.status FROM (SELECT code FROM public.kept_codes WHERE code NOT LIKE 'UPG%' LIMIT 1) c,
       LATERAL wallet.redeem_code(c.code, 'm-5', 'r-5') s;
SELECT status FROM wallet.redeem_code('UPG-0000-0000-0000-0000', 'm-9', 'guess-1', '{"source": "device-x"}');
SELECT wallet.set_code_guard(5, 20, interval '10 minutes', 1);
UPDATE public.kept_codes SET authentic = wallet.code_authentic(code::wallet.marketing_code);
-- points: accrue, redeem, hold+capture, hold+release, reverse, adjust, expire, a closed program
SELECT wallet.create_program(1, 'Upgrade Rewards', interval '12 months', 'month');
SELECT wallet.create_program(2, 'Tea Points');
SELECT wallet.open_account(1, 'm-1'), wallet.open_account(1, 'm-2'), wallet.open_account(2, 'm-1');
SELECT (wallet.accrue(1, 500, 'a-1', 'purchase', 'order-1')).balance_after;
SELECT (wallet.accrue(2, 70, 'a-2', 'purchase', 'order-2', clock_timestamp() + interval '1 second')).balance_after;
SELECT (wallet.redeem(1, 120, 'a-3', 'coupon')).balance_after;
SELECT entry_id AS h1 FROM wallet.hold(1, 50, 'a-4', interval '1 hour', 'checkout') \gset
SELECT (wallet.capture(:h1, 30)).balance_after;
SELECT entry_id AS h2 FROM wallet.hold(1, 40, 'a-5', interval '1 hour', 'checkout') \gset
SELECT (wallet.release(:h2)).balance_after;
SELECT (wallet.reverse(1, 'a-6', 'order cancelled')).balance_after;
SELECT (wallet.adjust(3, 15, 'a-7', 'goodwill')).balance_after;
SELECT pg_sleep(1.2);
SELECT wallet.expire_points();
SELECT wallet.close_program(2);
-- what 0.1.0 accepted and 0.2.0 refuses: an expiry of 200 years, a 300-character member reference
SELECT wallet.create_program(1, 'Forever Points', interval '200 years');
SELECT wallet.open_account(1, repeat('L', 300));
SELECT (wallet.accrue(1, 5, 'purchase:order-9', 'goodwill')).balance_after;
SQL
rc=$?
check "a 0.1.0 database is filled through the 0.1.0 API running on the current library" "$rc" 0
[ $rc -eq 0 ] || sed 's/^/#   /' "$TMP/fill.out"

state() { # what must survive the upgrade unchanged
    qdb "$1" -c "SELECT (SELECT string_agg(code || '=' || authentic, ',' ORDER BY code) FROM public.kept_codes),
                      (SELECT string_agg(account_id || ':' || wallet.balance(account_id), ',' ORDER BY account_id) FROM wallet.accounts),
                      (SELECT count(*) FROM wallet.entries), (SELECT count(*) FROM wallet.code_redemptions),
                      (SELECT count(*) FROM wallet.code_failed_attempts)"
}
before=$(state "$OLD")
check "the filled database has authentic and retired codes and journal entries of every kind" \
    "$(qdb "$OLD" -c "SELECT bool_or(authentic) AND NOT bool_and(authentic) FROM public.kept_codes")/$(qdb "$OLD" -c "SELECT string_agg(DISTINCT kind, ',' ORDER BY kind) FROM wallet.entries")" \
    "t/accrue,adjust,capture,expire,hold,redeem,release,reverse"

# 2. The update.
qdb "$OLD" -c "ALTER EXTENSION wallet UPDATE" >"$TMP/update.out" 2>&1
rc=$?
check "ALTER EXTENSION wallet UPDATE succeeds" "$rc" 0
[ $rc -eq 0 ] || sed 's/^/#   /' "$TMP/update.out"
check "the update warns about what 0.2.0 refuses (a 200-year expiry, a 300-character reference, a posting key of the extension's), changing nothing" \
    "$(grep -c '^WARNING:' "$TMP/update.out")/$(qdb "$OLD" -c "SELECT count(*) FROM wallet.programs WHERE expiry = interval '200 years'")/$(qdb "$OLD" -c "SELECT count(*) FROM wallet.entries WHERE idempotency_key = 'purchase:order-9'")" "3/1/1"
check "the updated database runs the default version" \
    "$(qdb "$OLD" -c "SELECT extversion FROM pg_extension WHERE extname = 'wallet'")" \
    "$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$ROOT/wallet.control")"

# 3. Equal to a fresh install, object by object.
qdb "$NEW" -c "CREATE EXTENSION wallet" >/dev/null
qdb "$OLD" -f "$ROOT/test/upgrade/describe.sql" >"$TMP/old.txt" 2>&1
qdb "$NEW" -f "$ROOT/test/upgrade/describe.sql" >"$TMP/new.txt" 2>&1
diff -u "$TMP/new.txt" "$TMP/old.txt" >"$TMP/objects.diff"
check "the upgraded database has exactly the objects and definitions of a fresh install ($(grep -c '' "$TMP/new.txt") lines)" "$?" 0
grep -E '^[-+][^-+]' "$TMP/objects.diff" | head -n 60 | sed 's/^/#   /'
check "the description covers functions, tables, columns, indexes, triggers and comments" \
    "$(grep -cE '^(function|relation|column|index|trigger|operator|opclass|cast|type|schema) ' "$TMP/new.txt" | awk '{print ($1 > 200)}')" 1

# 4. What was there still works.
check "every code authenticates as before, balances, journal, redemptions and attempts unchanged" "$(state "$OLD")" "$before"
check "every ledger verifies against its journal after the update" "$(qdb "$OLD" -c "SELECT count(*) FROM wallet.verify_ledger()")" 0
bal=$(qdb "$OLD" -c "SELECT wallet.balance(1)")
check "the updated database takes new postings" \
    "$(qdb "$OLD" -c "SELECT (wallet.accrue(1, 25, 'after-1', 'purchase')).balance_after")/$(qdb "$OLD" -c "SELECT count(*) FROM wallet.verify_ledger()")" "$((bal + 25))/0"
old_code=$(qdb "$OLD" -c "SELECT min(code) FROM public.kept_codes WHERE code LIKE 'UPG%' AND authentic
                          AND code NOT IN (SELECT code FROM public.kept_codes ORDER BY code DESC LIMIT 5)")
check "codes issued before the update are still redeemed, once" \
    "$(qdb "$OLD" -c "SELECT (wallet.redeem_code('$old_code', 'm-20', 'after-r1')).status")/$(qdb "$OLD" -c "SELECT (wallet.redeem_code('$old_code', 'm-21', 'after-r2')).status")" \
    "ok/exhausted"
check "codes issued after the update are authentic and redeemed" \
    "$(qdb "$OLD" -c "SELECT (wallet.redeem_code(wallet.issue_code(1, 'm-22'), 'm-22', 'after-r3')).status")" ok
check "forget_member erases the member 0.1.0 accepted with a 300-character reference" \
    "$(qdb "$OLD" -c "SELECT wallet.forget_member(1, repeat('L', 300), 'erasure request')")/$(qdb "$OLD" -c "SELECT count(*) FROM wallet.members WHERE length(member_ref) = 300")" "t/0"
finish

#!/usr/bin/env bash
# record_purchase's C fast path and its per-session compiled earning rules
# (src/purchase.c), printing TAP:
#   1. the fast path and the PL/pgSQL path (wallet_internal.record_purchase_full)
#      record the same purchase, counters, entry and ledger for two members in
#      the same state, and a retry of each returns its first result (another
#      amount: WL002);
#   2. a session that compiled a program's rules sees a change another
#      session commits (a rule's value, a new rule, an ended rule) from its
#      next purchase on;
#   3. a change made in the session counts at once, and a rolled-back one is
#      forgotten;
#   4. an accrual the ledger refuses (points out of range) is left to the
#      full path: a retry of a recorded order still returns its result;
#   5. a trigger that fires on insert into wallet.purchases fires for a
#      purchase of the fast path too, and a CHECK constraint holds (its
#      direct insert leaves such a table to the statement).
#
# Needs PGHOST/PGPORT/PGUSER of a running cluster with wallet installable.
set -uo pipefail

DB=conc_purchase_fast_path
TMP=$(mktemp -d /tmp/purchase_fast_path.XXXXXX)
chmod 755 "$TMP"
trap 'sess_close a; rm -rf "$TMP"' EXIT

. "$(dirname "$0")/../lib.sh"

plan 21

timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
if ! timeout 30 createdb "$DB"; then echo "Bail out! createdb $DB failed"; exit 1; fi

setup_out=$(q 2>&1 <<'SQL'
CREATE EXTENSION wallet;
SELECT wallet.create_merchant('fast') AS m \gset
SELECT wallet.create_program(:m, 'fast points', '12 months', 'month') AS p \gset
SELECT 1 FROM wallet.set_program_earning(:p, 'CNY', 'nearest');
INSERT INTO wallet.tiers (merchant_id, program_id, rank, name, min_points, multiplier) VALUES (:m, :p, 1, 'Silver', 100000, 1.5);
SELECT wallet.create_earning_rule(:p, 'base', 'per_unit', 1.5, valid_from => now() - interval '1 day') AS r1 \gset
SELECT 1 FROM wallet.create_earning_rule(:p, 'food', 'multiplier', 2, '{"categories": ["food"]}', valid_from => now() - interval '1 day');
SELECT 1 FROM wallet.create_earning_rule(:p, 'welcome', 'fixed', 50, '{"first_purchase": true}', valid_from => now() - interval '1 day');
SELECT 1 FROM wallet.create_earning_rule(:p, 'app', 'fixed', 7, '{"channels": ["app"]}', '{"per_member_day": 10, "per_member": 12}',
                                          valid_from => now() - interval '1 day', priority => 1);
SELECT count(wallet.open_account(:p, r)) FROM unnest(ARRAY['x', 'y', 'z']) r;
INSERT INTO wallet.account_tiers (account_id, merchant_id, member_id, program_id, tier_id, rank)
SELECT a.account_id, a.merchant_id, a.member_id, a.program_id, t.tier_id, 1
  FROM wallet.accounts a JOIN wallet.tiers t ON t.program_id = a.program_id WHERE a.member_ref IN ('x', 'y');
\echo m :m
\echo p :p
\echo r1 :r1
SQL
)
val() { printf '%s\n' "$setup_out" | sed -n "s/^$1 //p"; }
M=$(val m); P=$(val p); R1=$(val r1)
if [ -z "$M" ] || [ -z "$P" ] || [ -z "$R1" ]; then echo "Bail out! setup failed: $setup_out"; exit 1; fi

ATTRS='{"channel": "app", "categories": ["food", "toys"]}'
TS=$(q -c "SELECT now() - interval '1 hour'")   # one instant for both paths, inside the rules' validity
# what a purchase left, member-independent: the purchase, its counters, its entry, the ledger after it
state() {   # state MEMBER ORDER
    q -c "SELECT concat_ws(' | ', p.points, p.rules::text, p.amount, p.currency, p.occurred_at, p.attributes::text,
                 (SELECT string_agg(c.rule_id || ':' || coalesce(c.day::text, 'all') || ':' || c.points, ',' ORDER BY c.rule_id, c.day)
                    FROM wallet.earning_counters c WHERE c.member_id = p.member_id),
                 concat_ws(',', e.kind, e.amount, e.balance_after, e.idempotency_key = 'purchase:' || p.order_ref, e.reason, e.reference = p.order_ref, e.lots::text,
                           e.points, e.expires_at, e.actor, e.merchant_id, e.created_at >= p.created_at, e.entry_id = p.entry_id),
                 a.ledger::text, a.next_event, t.rank)
            FROM wallet.purchases p JOIN wallet.entries e ON e.entry_id = p.entry_id
            JOIN wallet.accounts a ON a.account_id = p.account_id
            LEFT JOIN wallet.account_tiers t ON t.account_id = a.account_id
           WHERE p.merchant_id = $M AND p.order_ref = '$2' AND a.member_ref = '$1'"
}

# 1. fast path and full path agree
fast=$(q -c "SELECT concat_ws(',', points, rules::text) FROM wallet.record_purchase($M, 'x', 'o-x', 123.45, 'CNY', '$TS', '$ATTRS')")
full=$(q -c "SELECT concat_ws(',', points, rules::text) FROM wallet_internal.record_purchase_full($M, 'y', 'o-y', 123.45, 'CNY', '$TS', '$ATTRS', NULL, NULL, NULL)")
check "the fast path returns what the full path returns for a member in the same state" "$fast" "$full"
ok $([ -n "$fast" ] && printf '%s' "$fast" | grep -q '"tier Silver'; echo $?) "the purchase earned by every rule and the tier ($fast)"
check "and records the same purchase, counters, entry and ledger" "$(state x o-x)" "$(state y o-y)"
fast=$(q -c "SELECT concat_ws(',', points, rules::text) FROM wallet.record_purchase($M, 'x', 'o-x2', 10, 'CNY', '$TS', '$ATTRS')")
full=$(q -c "SELECT concat_ws(',', points, rules::text) FROM wallet_internal.record_purchase_full($M, 'y', 'o-y2', 10, 'CNY', '$TS', '$ATTRS', NULL, NULL, NULL)")
check "a second purchase (no first-purchase bonus, the day cap reached) agrees too" "$fast" "$full"
check "and so does what it recorded" "$(state x o-x2)" "$(state y o-y2)"
check "a retry returns the first result" \
      "$(q -c "SELECT purchase_id || ',' || points FROM wallet.record_purchase($M, 'x', 'o-x', 123.45, 'CNY', now(), '{}')")" \
      "$(q -c "SELECT purchase_id || ',' || points FROM wallet.purchases WHERE order_ref = 'o-x'")"
check "a retry with another amount is WL002" \
      "$(sqlstate -d "$DB" -c "SELECT wallet.record_purchase($M, 'x', 'o-x', 99, 'CNY')")" WL002
check "nothing more was posted by the retries" "$(q -c "SELECT count(*) FROM wallet.entries WHERE reference IN ('o-x', 'o-x2')")" 2

# 2. session a compiles the rules; another session changes them
sess_open a
check "session a earns by the rules it compiled" \
      "$(sess_run a "SELECT points FROM wallet.record_purchase($M, 'z', 'o-z1', 100, 'CNY', now(), '{}')")" 200
q -c "SELECT wallet.update_earning_rule($R1, value => 3)" >/dev/null
check "a rule's new value committed elsewhere counts from session a's next purchase" \
      "$(sess_run a "SELECT points FROM wallet.record_purchase($M, 'z', 'o-z2', 100, 'CNY', now(), '{}')")" 300
q -c "SELECT 1 FROM wallet.create_earning_rule($P, 'late', 'fixed', 4, valid_from => now() - interval '1 hour')" >/dev/null
check "a new rule committed elsewhere counts too" \
      "$(sess_run a "SELECT points FROM wallet.record_purchase($M, 'z', 'o-z3', 100, 'CNY', now(), '{}')")" 304
q -c "SELECT wallet.end_earning_rule($R1)" >/dev/null
check "an ended rule stops counting" \
      "$(sess_run a "SELECT points FROM wallet.record_purchase($M, 'z', 'o-z4', 100, 'CNY', now(), '{}')")" 4

# 3. in session a itself
check "a change in the session counts at once; a rolled-back one is forgotten" \
      "$(sess_run a "BEGIN; SELECT points FROM wallet.preview_purchase($M, 'z', 'o-z5', 100, 'CNY'); SELECT 1 FROM wallet.create_earning_rule($P, 'rolled back', 'fixed', 1000, valid_from => now() - interval '1 hour'); SELECT points FROM wallet.preview_purchase($M, 'z', 'o-z5', 100, 'CNY'); ROLLBACK; SELECT points FROM wallet.preview_purchase($M, 'z', 'o-z5', 100, 'CNY')" | tr '\n' ' ')" "4 1 1004 4 "
check "preview and record agree" \
      "$(sess_run a "SELECT points || rules::text FROM wallet.preview_purchase($M, 'z', 'o-z6', 55.5, 'CNY', now(), '$ATTRS')")" \
      "$(sess_run a "SELECT points || rules::text FROM wallet.record_purchase($M, 'z', 'o-z6', 55.5, 'CNY', now(), '$ATTRS')")"

# 4. an accrual out of range: the full path decides, as without the fast path
check "an order of 30,000,000 CNY earns by the fixed rule alone" \
      "$(sess_run a "SELECT points FROM wallet.record_purchase($M, 'z', 'o-z9', 30000000, 'CNY', now(), '{}')")" 4
q -c "SELECT 1 FROM wallet.create_earning_rule($P, 'huge', 'per_unit', 1000000000, valid_from => now() - interval '1 hour')" >/dev/null
check "an order earning 9.2e18 points fills the ledger" \
      "$(sess_run a "SELECT points FROM wallet.record_purchase($M, 'z', 'o-z7', 9200000000, 'CNY', now(), '{}')")" 9200000000000000004
check "a retry of the earlier order returns its result though its accrual now would overflow" \
      "$(sess_run a "SELECT points FROM wallet.record_purchase($M, 'z', 'o-z9', 30000000, 'CNY', now(), '{}')")" 4
check "a new order whose accrual would overflow is refused by the ledger (WL205)" \
      "$(sqlstate -d "$DB" -c "SELECT wallet.record_purchase($M, 'z', 'o-z8', 30000000, 'CNY')")" WL205

# 5. the purchase row is written without the executor's INSERT on the fast
# path: a trigger that fires on insert leaves the write to the statement
q >/dev/null <<'SQL'
CREATE TABLE purchase_log (order_ref text);
CREATE FUNCTION purchase_logged() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN INSERT INTO public.purchase_log VALUES (NEW.order_ref); RETURN NULL; END$$;
CREATE TRIGGER purchase_logged AFTER INSERT ON wallet.purchases FOR EACH ROW EXECUTE FUNCTION purchase_logged();
SQL
check "a trigger on wallet.purchases fires for a purchase of the usual case" \
      "$(sess_run a "SELECT points FROM wallet.record_purchase($M, 'x', 'o-t1', 10, 'CNY', now(), '{}')" >/dev/null; q -c "SELECT string_agg(order_ref, ',') FROM purchase_log")" o-t1
q -c "DROP TRIGGER purchase_logged ON wallet.purchases" >/dev/null
check "and once it is dropped, the next purchase is written directly (no log) and recorded once" \
      "$(sess_run a "SELECT points FROM wallet.record_purchase($M, 'x', 'o-t2', 10, 'CNY', now(), '{}')" >/dev/null; q -c "SELECT count(*) FROM purchase_log")-$(q -c "SELECT count(*) FROM wallet.purchases WHERE order_ref IN ('o-t1', 'o-t2')")" 1-2
q -c "ALTER TABLE wallet.purchases ADD CONSTRAINT purchase_small CHECK (amount < 1000) NOT VALID" >/dev/null
check "a CHECK constraint on wallet.purchases holds for a purchase of the usual case (23514)" \
      "$(sqlstate -d "$DB" -c "SELECT wallet.record_purchase($M, 'x', 'o-t3', 5000, 'CNY')")" 23514
q -c "ALTER TABLE wallet.purchases DROP CONSTRAINT purchase_small" >/dev/null

sess_close a
finish

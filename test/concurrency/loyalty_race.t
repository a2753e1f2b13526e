#!/usr/bin/env bash
# Concurrency test of purchases and refunds (issue 10), printing TAP.
#
# 16 pgbench clients for LOYALTY_RACE_SECONDS (15) call race_step(), a
# PL/pgSQL driver that records a purchase, retries one, refunds part of an
# order, retries a refund or redeems points, for 20 members of one program
# with 5 earning rules (per unit, a category multiplier, a first-purchase
# bonus, a channel bonus capped per member and day, an exclusive big-basket
# rule).  Every argument is a function of the key (order k, refund j), so a
# key that comes round again (by chance in another session at the same
# moment, or as a deliberate retry) is an identical retry, which must return
# the first result.  Expected refusals (WL500 order not recorded yet, WL501
# refund beyond the order, WL203 not enough points to redeem) are caught in
# the driver; any other error is recorded and fails the test.  Afterwards:
# every order earned and was posted exactly once, refunds never took back
# more than the order earned, the daily caps held, and every ledger replays
# from its journal.
#
# Needs PGHOST/PGPORT/PGUSER of a running cluster with wallet installable.
set -uo pipefail

DB=conc_loyalty
CLIENTS=16
SECONDS_RACE=${LOYALTY_RACE_SECONDS:-15}
MEMBERS=20
TMP=$(mktemp -d /tmp/loyalty_race.XXXXXX)
chmod 755 "$TMP"
trap 'rm -rf "$TMP"' EXIT

. "$(dirname "$0")/../lib.sh"
Q_TIMEOUT=120

plan 21

timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
if ! timeout 30 createdb "$DB"; then echo "Bail out! createdb $DB failed"; exit 1; fi

setup_out=$(q 2>&1 <<SQL
CREATE EXTENSION wallet;
SELECT wallet.create_merchant('race merchant') AS m \gset
SELECT wallet.create_program(:m, 'race points') AS p \gset
SELECT wallet.set_program_earning(:p, 'CNY') IS NULL AS x \gset
SELECT wallet.create_earning_rule(:p, 'base', 'per_unit', 1, valid_from => '2020-01-01') AS x \gset
SELECT wallet.create_earning_rule(:p, 'food double', 'multiplier', 2, '{"categories": ["food"]}', valid_from => '2020-01-01') AS x \gset
SELECT wallet.create_earning_rule(:p, 'welcome', 'fixed', 30, '{"first_purchase": true}', valid_from => '2020-01-01') AS x \gset
SELECT wallet.create_earning_rule(:p, 'app bonus', 'fixed', 5, '{"channels": ["app"]}', '{"per_member_day": 20}', valid_from => '2020-01-01') AS x \gset
SELECT wallet.create_earning_rule(:p, 'big basket', 'fixed', 1000, '{"min_amount": 490}', valid_from => '2020-01-01',
                                  priority => 10, exclusive => true) AS x \gset
SELECT count(*) FROM generate_series(0, $MEMBERS - 1) i, LATERAL wallet.upsert_member(:m, 'member-' || i, 'Asia/Shanghai') \g /dev/null
-- tiers, low enough that members cross them while the race runs (grace
-- downgrades: none falls due during it)
SELECT wallet.create_tier(:p, 1, 'Silver', 500) AS x \gset
SELECT wallet.create_tier(:p, 2, 'Gold', 5000, multiplier => 1.5) AS x \gset
SELECT wallet.create_tier(:p, 3, 'Platinum', 20000, multiplier => 2) AS x \gset

CREATE TABLE race_seen (kind text, k bigint, id bigint NOT NULL, points bigint NOT NULL, PRIMARY KEY (kind, k));
CREATE TABLE race_log (op text, outcome text);
CREATE TABLE race_unexpected (op text, k bigint, sqlstate text, message text, at timestamptz DEFAULT clock_timestamp());

-- the arguments of order k and refund j
CREATE FUNCTION race_purchase(k bigint) RETURNS wallet.purchase_result LANGUAGE sql AS \$\$
    SELECT * FROM wallet.record_purchase(1, 'member-' || (k % $MEMBERS), 'o-' || k, 1 + ((k * 7919) % 50000) / 100.0, 'CNY',
                                         '2026-11-11 12:00+08'::timestamptz + (k % 7) * interval '5 hours',
                                         jsonb_build_object('channel', (ARRAY['app', 'web'])[1 + k % 2],
                                                            'categories', CASE WHEN k % 3 = 0 THEN '["food"]'::jsonb ELSE '["toys"]' END))
\$\$;
CREATE FUNCTION race_refund(j bigint) RETURNS wallet.refund_result LANGUAGE sql AS \$\$
    SELECT * FROM wallet.record_refund(1, 'o-' || (j % 3000), round((1 + (((j % 3000) * 7919) % 50000) / 100.0) / 3, 2), 'rf-' || j)
\$\$;

CREATE FUNCTION race_step() RETURNS text LANGUAGE plpgsql AS \$\$
DECLARE
    r float8 := random();
    op text;
    v_k bigint;
    id bigint;
    pts bigint;
    prev record;
BEGIN
    IF r < 0.10 THEN
        op := 'redeem';
        v_k := floor(random() * $MEMBERS);
        BEGIN
            PERFORM wallet.redeem(wallet.find_account(1, 'member-' || v_k), 1 + floor(random() * 60)::int, 'red-' || random(), 'race');
        EXCEPTION WHEN OTHERS THEN
            IF SQLSTATE NOT IN ('WL203', '22004') THEN   -- 22004: the member has no account yet
                INSERT INTO race_unexpected (op, k, sqlstate, message) VALUES (op, v_k, SQLSTATE, SQLERRM);
                RETURN 'unexpected';
            END IF;
        END;
        RETURN 'redeem';
    ELSIF r < 0.20 THEN
        op := 'purchase';   -- a deliberate retry of a recorded order
        SELECT s.k INTO v_k FROM race_seen s WHERE s.kind = 'purchase' ORDER BY random() LIMIT 1;
    ELSIF r < 0.30 THEN
        op := 'refund';     -- a deliberate retry of a recorded refund
        SELECT s.k INTO v_k FROM race_seen s WHERE s.kind = 'refund' ORDER BY random() LIMIT 1;
    ELSIF r < 0.55 THEN
        op := 'refund';
    ELSE
        op := 'purchase';
    END IF;
    IF v_k IS NULL THEN
        v_k := floor(random() * CASE op WHEN 'purchase' THEN 3000 ELSE 12000 END);   -- keys come round again by chance too
    END IF;
    BEGIN
        IF op = 'purchase' THEN
            SELECT x.purchase_id, x.points INTO id, pts FROM race_purchase(v_k) x;
        ELSE
            SELECT x.refund_id, x.points INTO id, pts FROM race_refund(v_k) x;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        IF op = 'refund' AND SQLSTATE IN ('WL500', 'WL501') THEN
            INSERT INTO race_log VALUES (op, SQLSTATE);
            RETURN SQLSTATE;
        END IF;
        INSERT INTO race_unexpected (op, k, sqlstate, message) VALUES (op, v_k, SQLSTATE, SQLERRM);
        RETURN 'unexpected';
    END;
    SELECT * INTO prev FROM race_seen s WHERE s.kind = op AND s.k = v_k;
    IF FOUND THEN
        IF (prev.id, prev.points) IS DISTINCT FROM (id, pts) THEN
            INSERT INTO race_unexpected (op, k, sqlstate, message)
            VALUES (op, v_k, 'RETRY', format('a retry returned %s/%s, the first call %s/%s', id, pts, prev.id, prev.points));
        END IF;
        INSERT INTO race_log VALUES (op, 'repeat');
        RETURN 'repeat';
    END IF;
    INSERT INTO race_seen VALUES (op, v_k, id, pts) ON CONFLICT DO NOTHING;
    INSERT INTO race_log VALUES (op, 'new');
    RETURN 'new';
END \$\$;
SQL
)
st=$?
ok $st "fixture: a program with 5 rules, 20 members, the driver" "$setup_out"
[ $st -eq 0 ] || { echo "Bail out! fixture failed"; exit 1; }

echo 'SELECT race_step();' > "$TMP/race.sql"
timeout $((SECONDS_RACE + 90)) pgbench -n -c $CLIENTS -j 2 -T "$SECONDS_RACE" -f "$TMP/race.sql" "$DB" > "$TMP/pgbench.out" 2>&1
st=$?
processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$TMP/pgbench.out")
failed_tx=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$TMP/pgbench.out")
echo "# race: $CLIENTS clients for ${SECONDS_RACE}s, ${processed:-?} driver calls"
echo "# outcomes: $(q -c "SELECT string_agg(op || ' ' || outcome || ': ' || n, ', ' ORDER BY op, outcome) FROM (SELECT op, outcome, count(*) n FROM race_log GROUP BY 1, 2) x")"
ok $(( st != 0 || ${failed_tx:-0} != 0 )) "pgbench: $CLIENTS clients ran ${SECONDS_RACE}s with no client aborted" \
   "$(grep -iE 'abort|error|fail' "$TMP/pgbench.out" | head -n 20)"
ok $(( ${processed:-0} < 300 )) "the race made at least 300 calls (made ${processed:-0})"
is "$(q -c "SELECT count(*) FROM race_log WHERE outcome = 'repeat'" | awk '{print ($1 > 0)}')$(q -c "SELECT count(*) FROM race_log WHERE op = 'refund' AND outcome = 'new'" | awk '{print ($1 > 0)}')" 11 \
   "the race retried calls and recorded refunds"
unexpected=$(q -c "SELECT op || ' ' || k || ': ' || sqlstate || ' ' || message FROM race_unexpected ORDER BY at LIMIT 20")
is "$(q -c 'SELECT count(*) FROM race_unexpected')" 0 \
   "no unexpected error (deadlock, unique violation, WL002) and every retry returned the first result"
[ -n "$unexpected" ] && printf '%s\n' "$unexpected" | sed 's/^/#   /'

# bursts behind the barrier: 16 sessions record the same new order, then 16 the same new refund of it
race burst_order 16 "SELECT purchase_id || ':' || points FROM wallet.record_purchase(1, 'member-3', 'burst-order', 300, 'CNY', '2026-11-12 12:00+08')"
is "$(cat "$TMP"/burst_order.* | grep -E "^[0-9]+:[0-9]+$" | sort | uniq -c | awk "{print \$1}")" 16 "16 sessions recording the same order at once all get one and the same result"
is "$(q -c "SELECT count(*) FROM wallet.entries WHERE reference = 'burst-order' AND kind = 'accrue'")" 1 "the burst posted the order once"
race burst_refund 16 "SELECT refund_id || ':' || points FROM wallet.record_refund(1, 'burst-order', 100, 'burst-refund-@I@')"
is "$(grep -c '^[0-9]*:[0-9]*$' "$TMP"/burst_refund.* | awk -F: '{s += $2} END {print s}')-$(grep -l 'WL501' "$TMP"/burst_refund.* | wc -l)" "3-13" \
   "16 different refunds of a third of the order at once: 3 succeed, 13 get WL501"
is "$(q -c "SELECT refunded_amount = amount AND refunded_points = points FROM wallet.purchases WHERE order_ref = 'burst-order'")" t \
   "the order is refunded exactly in full: all its points back, no more"

# 16 sessions record one new order for 16 different members at once: their
# accounts' locks do not order them, the order's unique key does (the fast
# path's look-up and speculative insertion): one records it, the others get
# WL002, none a unique violation
race burst_shared 16 "SELECT purchase_id || ':' || points FROM wallet.record_purchase(1, 'member-@I@', 'burst-shared', 120, 'CNY', '2026-11-12 12:00+08')"
is "$(grep -c '^[0-9]*:[0-9]*$' "$TMP"/burst_shared.* | awk -F: '{s += $2} END {print s}')-$(grep -l 'WL002' "$TMP"/burst_shared.* | wc -l)-$(grep -l '23505' "$TMP"/burst_shared.* | wc -l)" "1-15-0" \
   "16 members recording the same new order at once: one records it, 15 get WL002, no unique violation"
is "$(q -c "SELECT count(*) FROM wallet.purchases WHERE order_ref = 'burst-shared'")-$(q -c "SELECT count(*) FROM wallet.entries WHERE reference = 'burst-shared' AND kind = 'accrue'")" "1-1" \
   "the shared order is recorded and posted once"

# every order posted once: one accrue entry per purchase that earned, with its points, and none for the others
is "$(q -c "SELECT count(*) FROM wallet.purchases p
             WHERE (SELECT count(*) FROM wallet.entries e WHERE e.reference = p.order_ref AND e.kind = 'accrue')
                   <> (p.points > 0)::int
                OR (p.points > 0 AND NOT EXISTS (SELECT FROM wallet.entries e WHERE e.entry_id = p.entry_id AND e.kind = 'accrue'
                                                  AND e.points = p.points AND e.idempotency_key = 'purchase:' || p.order_ref))")" 0 \
   "every order that earned was posted exactly once, with its points; no other order posted"
is "$(q -c "SELECT count(*) FROM wallet.purchases p
             WHERE p.points <> (SELECT coalesce(sum((r ->> 'points')::bigint), 0) FROM jsonb_array_elements(p.rules) r)")" 0 \
   "every purchase's points are the sum of its explained rules"
# refunds: never beyond what the order earned, and the purchase's totals are its refunds'
is "$(q -c "SELECT count(*) FROM wallet.purchases p
              LEFT JOIN LATERAL (SELECT coalesce(sum(f.amount), 0) AS amount, coalesce(sum(f.points), 0) AS points, count(*) AS n
                                   FROM wallet.refunds f WHERE f.purchase_id = p.purchase_id) f ON true
             WHERE f.amount <> p.refunded_amount OR f.points <> p.refunded_points
                OR p.refunded_amount > p.amount OR p.refunded_points > p.points")" 0 \
   "refunds of each order add up to its refunded amount and points, never beyond its amount or the points it earned"
is "$(q -c "SELECT count(*) FROM wallet.refunds f
             WHERE f.points <> coalesce((SELECT -e.amount FROM wallet.entries e WHERE e.entry_id = f.entry_id AND e.kind = 'refund'), 0)")" 0 \
   "every refund took back exactly what its refund entry did"
is "$(q -c "SELECT count(*) FROM (SELECT 1 FROM wallet.refunds GROUP BY merchant_id, refund_ref HAVING count(*) > 1) x")$(q -c "SELECT count(*) FROM (SELECT 1 FROM wallet.entries WHERE idempotency_key IS NOT NULL GROUP BY account_id, idempotency_key HAVING count(*) > 1) x")" 00 \
   "no refund and no entry twice"
# the daily cap of 'app bonus', recomputed from the purchases' explanations, per member and local day
is "$(q -c "WITH fired AS (
                SELECT p.member_id, (p.occurred_at AT TIME ZONE 'Asia/Shanghai')::date AS day, sum((r ->> 'points')::bigint) AS points
                  FROM wallet.purchases p, jsonb_array_elements(p.rules) r, wallet.earning_rules x
                 WHERE x.name = 'app bonus' AND (r ->> 'rule_id')::bigint = x.rule_id
                 GROUP BY 1, 2)
            SELECT count(*) FROM fired f FULL JOIN (SELECT c.member_id, c.day, c.points FROM wallet.earning_counters c
                                                      JOIN wallet.earning_rules x USING (rule_id) WHERE x.name = 'app bonus' AND c.day IS NOT NULL) c
                                  USING (member_id, day)
             WHERE f.points IS DISTINCT FROM c.points OR f.points > 20")" 0 \
   "the capped rule earned at most 20 per member and local day, exactly as its counters say"
is "$(q -c "WITH fired AS (SELECT p.member_id, p.purchase_id, x.name FROM wallet.purchases p, jsonb_array_elements(p.rules) r, wallet.earning_rules x
                            WHERE (r ->> 'rule_id')::bigint = x.rule_id),
                 firsts AS (SELECT p.member_id, min(p.purchase_id) AS purchase_id FROM wallet.purchases p GROUP BY 1)
            SELECT (SELECT count(*) FROM fired f WHERE f.name = 'welcome' AND f.purchase_id NOT IN (SELECT purchase_id FROM firsts))
                 + (SELECT count(*) FROM firsts x WHERE NOT EXISTS (SELECT FROM fired f WHERE f.purchase_id = x.purchase_id AND f.name IN ('welcome', 'big basket')))")" 0 \
   "the first-purchase bonus went to each member's first purchase only (or the exclusive big-basket rule fired alone there)"
is "$(q -c 'SELECT count(*) FROM wallet.verify_ledger()')" 0 "every ledger replays from its journal (purchases, refunds, redemptions)"

# Tiers: upgrades are immediate and no downgrade falls due while the race
# runs (grace policy), so each account holds the highest tier its points
# earned ever reached, replayed here from the journal alone: accruals less
# the points refunds took back, in entry order (every posting of the race is
# inside the 12-month window).
mismatch=$(q -At <<'SQL'
WITH run AS (
    SELECT e.account_id, sum(CASE e.kind WHEN 'accrue' THEN e.points WHEN 'refund' THEN -e.points ELSE 0 END)
                         OVER (PARTITION BY e.account_id ORDER BY e.entry_id) AS earned
      FROM wallet.entries e WHERE e.kind IN ('accrue', 'refund')
), peak AS (SELECT account_id, max(earned) AS earned FROM run GROUP BY account_id)
SELECT a.account_id || ': held ' || coalesce(t.rank, 0) || ', replay ' || coalesce(w.rank, 0)
  FROM wallet.accounts a JOIN peak p USING (account_id)
  LEFT JOIN wallet.account_tiers t ON t.account_id = a.account_id
  LEFT JOIN LATERAL (SELECT max(x.rank) AS rank FROM wallet.tiers x
                      WHERE x.program_id = a.program_id AND x.min_points <= p.earned) w ON true
 WHERE coalesce(t.rank, 0) <> coalesce(w.rank, 0)
SQL
)
is "$mismatch" "" "every account's tier equals the highest one its journal ever qualified it for"
ok $([ "$(q -At -c 'SELECT count(*) FROM wallet.tier_history WHERE entry_id IS NOT NULL AND to_rank > from_rank')" -gt 0 ]; echo $?) \
   "postings of the race upgraded members (the check above is not vacuous)" \
   "$(q -At -c 'SELECT rank, count(*) FROM wallet.account_tiers GROUP BY rank ORDER BY rank')"

timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
finish

#!/usr/bin/env bash
# Offers against a campaign budget under races (issue 11), printing TAP.
#
# 32 sessions, released together behind the barrier, check out against one
# offer (10% off, all or nothing) of a campaign whose money budget is exactly
# 1,000 units (10.00 in hundredths).  Baskets are random (0.10 to 1.00), so
# each discount is 1 to 10 units.  Each session, transaction after
# transaction: quotes with a hold and records the purchase with the quote;
# records a purchase naming the offer; records one and rolls back; quotes
# with a hold and rolls back (an aborted quote); quotes with a 200 ms hold and
# walks away (an expired quote); quotes and releases the quote.  Sessions stop
# when the budget shows nothing remaining and nothing held, or after 60 s (a
# bound for a loaded machine).  Demand far exceeds the budget, so:
#   - granted <= 1,000: never exceeded, not by one unit;
#   - granted >= 990: no budget lost to aborted or expired quotes;
#   - nothing lost at all: once the race is over, one session's purchases of
#     one unit each get exactly what is left, and the committed purchases
#     then hold the whole budget, 1,000 units;
#   - what the committed purchases got (wallet.purchase_offers, and the
#     discounts booked in wallet.campaign_costs) is exactly what the budget
#     says it granted; no session saw an error.
#
# Needs PGHOST/PGPORT/PGUSER of a running cluster with wallet installable.
set -uo pipefail

DB=conc_offers
TMP=$(mktemp -d /tmp/offers_race.XXXXXX)
chmod 755 "$TMP"
trap 'rm -rf "$TMP"' EXIT

. "$(dirname "$0")/../lib.sh"
Q_TIMEOUT=120

plan 10

timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
if ! timeout 30 createdb "$DB"; then echo "Bail out! createdb $DB failed"; exit 1; fi

setup_out=$(q 2>&1 <<'SQL'
CREATE EXTENSION wallet;
SELECT wallet.create_merchant('offers race') AS m \gset
SELECT wallet.create_campaign(:m, 'festival', starts_at => now() - interval '1 day') AS c \gset
SELECT wallet.set_campaign_budget(:c, 'money', 1000) \g /dev/null
SELECT wallet.create_offer(:c, 'ten percent', 'percent', 10, 'CNY', valid_from => now() - interval '1 day') AS o \gset
CREATE TABLE ids (k text PRIMARY KEY, v bigint NOT NULL);
INSERT INTO ids VALUES ('m', :m), ('c', :c), ('o', :o);
CREATE TABLE actions_log (sess int NOT NULL, action text NOT NULL, n int NOT NULL DEFAULT 1, PRIMARY KEY (sess, action));

CREATE PROCEDURE race_run(p_sess int) LANGUAGE plpgsql AS $$
DECLARE
    m bigint := (SELECT v FROM ids WHERE k = 'm');
    c bigint := (SELECT v FROM ids WHERE k = 'c');
    o bigint := (SELECT v FROM ids WHERE k = 'o');
    started timestamptz := clock_timestamp();
    st wallet.budget_status;
    a float8;
    amt numeric;
    qid bigint;
    n int := 0;
    act text;
    ref text := 'member-' || p_sess;
BEGIN
    LOOP
        st := wallet.campaign_budget(c);
        EXIT WHEN st.remaining + st.held = 0 OR clock_timestamp() > started + interval '60 seconds';
        a := random();
        amt := (1 + floor(random() * 10)) / 10;   -- 0.10 .. 1.00: a discount of 1 to 10 hundredths
        n := n + 1;
        IF a < 0.30 THEN
            act := 'quote_record';
            SELECT q.quote_id INTO qid FROM wallet.quote_offers(m, ref, amt, 'CNY', hold_ttl => interval '10 seconds') q;
            PERFORM wallet.record_purchase(m, ref, format('s%s-%s', p_sess, n), amt, 'CNY', quote_id => qid);
            COMMIT;
        ELSIF a < 0.55 THEN
            act := 'record';
            PERFORM wallet.record_purchase(m, ref, format('s%s-%s', p_sess, n), amt, 'CNY', offers => ARRAY[o]);
            COMMIT;
        ELSIF a < 0.65 THEN
            act := 'record_rolled_back';
            PERFORM wallet.record_purchase(m, ref, format('s%s-%s', p_sess, n), amt, 'CNY', offers => ARRAY[o]);
            ROLLBACK;
        ELSIF a < 0.75 THEN
            act := 'quote_rolled_back';
            PERFORM wallet.quote_offers(m, ref, amt, 'CNY', hold_ttl => interval '10 seconds');
            ROLLBACK;
        ELSIF a < 0.90 THEN
            act := 'quote_expired';
            PERFORM wallet.quote_offers(m, ref, amt, 'CNY', hold_ttl => interval '200 milliseconds');
            COMMIT;
        ELSE
            act := 'quote_released';
            SELECT q.quote_id INTO qid FROM wallet.quote_offers(m, ref, amt, 'CNY', hold_ttl => interval '10 seconds') q;
            PERFORM wallet.release_quote(qid);
            COMMIT;
        END IF;
        INSERT INTO actions_log AS l (sess, action) VALUES (p_sess, act) ON CONFLICT (sess, action) DO UPDATE SET n = l.n + 1;
        COMMIT;
    END LOOP;
END
$$;
SQL
)
ok $? "fixture: a campaign with a money budget of 1,000 units, a 10% offer, the race driver" "$setup_out"
C=$(q -c "SELECT v FROM ids WHERE k = 'c'")

race drain 32 "CALL race_run(@I@)"
ok $? "32 sessions started together"
errors=$(cat "$TMP"/drain.* | grep -E 'ERROR|FATAL' | sort | uniq -c | head -5)
is "$errors" "" "no session saw an error (no deadlock, no check violation)"

granted=$(q -c "SELECT coalesce(sum(units), 0) FROM wallet.purchase_offers WHERE campaign_id = $C AND status = 'ok'")
ok $(( granted <= 1000 ? 0 : 1 )) "granted to committed purchases ($granted) never exceeds the budget of 1,000"
ok $(( granted >= 990 ? 0 : 1 )) "granted ($granted) >= 990: no budget lost to aborted or expired quotes" \
   "$(q -c "SELECT format('%s', b) FROM wallet.campaign_budget($C) b")"
demand=$(q -c "SELECT coalesce(sum(n), 0) FROM actions_log")
ok $(( demand > 300 ? 0 : 1 )) "demand exceeded the budget: $demand checkouts of 1 to 10 units" \
   "$(q -c "SELECT action || ': ' || sum(n) FROM actions_log GROUP BY action ORDER BY action")"
is "$(q -c "SELECT count(DISTINCT action) FROM actions_log")" 6 "every kind of checkout ran"
sleep 0.3   # a 200 ms quote of a session's last call stops counting
is "$(q -c "SELECT format('%s %s', granted, held) FROM wallet.campaign_budget($C)")" "$granted 0" \
   "the budget's own account agrees: granted = what committed purchases got, nothing held"
is "$(q -c "SELECT (sum(amount) * 100)::bigint FROM wallet.campaign_costs WHERE campaign_id = $C AND kind = 'discount'")" "$granted" \
   "the discounts booked in campaign_costs add up to the same"

M=$(q -c "SELECT v FROM ids WHERE k = 'm'")
O=$(q -c "SELECT v FROM ids WHERE k = 'o'")
left=$(q -c "SELECT remaining FROM wallet.campaign_budget($C)")
drained=$(q -c "DO \$\$
DECLARE i int := 0;
BEGIN
    LOOP
        i := i + 1;
        PERFORM wallet.record_purchase($M, 'drainer', 'drain-' || i, 0.10, 'CNY', offers => ARRAY[$O::bigint]);
        EXIT WHEN NOT EXISTS (SELECT FROM wallet.purchase_offers po JOIN wallet.purchases p USING (purchase_id)
                               WHERE p.merchant_id = $M AND p.order_ref = 'drain-' || i AND po.status = 'ok');
        IF i > 1000 THEN RAISE EXCEPTION 'the drain did not end'; END IF;
    END LOOP;
END \$\$;
SELECT format('%s %s', sum(units), count(*) FILTER (WHERE p.order_ref LIKE 'drain-%' AND po.status = 'ok'))
  FROM wallet.purchase_offers po JOIN wallet.purchases p USING (purchase_id)
 WHERE po.campaign_id = $C AND po.status = 'ok'")
is "$drained" "1000 $left" \
   "nothing lost at all: after the race, purchases of one unit get exactly the $left left, and the committed purchases hold the whole budget"
timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
finish

-- pgTAP: offers of campaigns (issue 11): each kind, each condition, the
-- stacking rules, the caps, the code requirement, the control group, the
-- budget (refused, partial, held by a quote, expired), and what a checkout
-- records (wallet.purchase_offers, wallet.campaign_costs, cashback entries).
-- Expected figures are worked out by hand in the comments.
BEGIN;
SET LOCAL timezone = 'UTC';
SELECT plan(101);

SELECT wallet.create_merchant('offers merchant') AS m \gset
SELECT wallet.create_merchant('offers quote merchant') AS mq \gset
SELECT wallet.create_program(:m, 'offer points', interval '1 year') AS p \gset
SELECT wallet.set_program_earning(:p, 'CNY', point_value => 0.01) \g /dev/null
SELECT wallet.create_program(:mq, 'quote points', interval '1 year') AS pq \gset
SELECT wallet.set_program_earning(:pq, 'CNY') \g /dev/null
SELECT wallet.create_campaign(:m, 'kinds', starts_at => '2026-01-01') AS c \gset

-- A checkout: record_purchase with offers (and codes, a quote); returns what
-- each offer named got: "status discount points", in offer order.
CREATE FUNCTION pg_temp.buy(m bigint, ref text, ord text, amount numeric, offers bigint[], attrs jsonb DEFAULT '{}',
                            codes text[] DEFAULT NULL, at timestamptz DEFAULT now(), quote bigint DEFAULT NULL)
    RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    r text;
BEGIN
    PERFORM wallet.record_purchase(m, ref, ord, amount, 'CNY', at, attrs, offers, codes, quote);
    SELECT string_agg(format('%s %s %s', o.status, o.discount, o.points), ', ' ORDER BY o.offer_id) INTO r
      FROM wallet.purchase_offers o JOIN wallet.purchases x USING (purchase_id)
     WHERE x.merchant_id = m AND x.order_ref = ord;
    RETURN r;
END
$$;
-- A quote: "name status discount points", in priority order.
CREATE FUNCTION pg_temp.quote(m bigint, ref text, amount numeric, attrs jsonb DEFAULT '{}', codes text[] DEFAULT NULL)
    RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg(format('%s %s %s %s', q.name, q.status, q.discount, q.points), ', '), '')
      FROM wallet.quote_offers(m, ref, amount, 'CNY', now(), attrs, codes) q
$$;

-- ---------------------------------------------------------------- kinds
SELECT wallet.create_offer(:c, 'ten percent', 'percent', 10, 'CNY') AS o_pct \gset
SELECT wallet.create_offer(:c, 'ten percent max 20', 'percent', 10, 'CNY', max_value => 20) AS o_pct_max \gset
SELECT wallet.create_offer(:c, 'fifteen off', 'fixed', 15, 'CNY') AS o_fix \gset
SELECT wallet.create_offer(:c, 'two points per yuan', 'cashback', 2, 'CNY') AS o_cb \gset
SELECT wallet.create_offer(:c, 'cashback max 80', 'cashback', 2, 'CNY', max_value => 80) AS o_cb_max \gset
SELECT is(pg_temp.buy(:m, 'kim', 'k1', 250, ARRAY[:o_pct]), 'ok 25.00 0', 'percent: 10% of 250 = 25.00');
SELECT is(pg_temp.buy(:m, 'kim', 'k2', 250, ARRAY[:o_pct_max]), 'ok 20.00 0', 'percent with a maximum: 25 capped at 20.00');
SELECT is(pg_temp.buy(:m, 'kim', 'k3', 99.99, ARRAY[:o_pct]), 'ok 9.99 0', 'percent: 9.999 rounds down to 9.99');
SELECT is(pg_temp.buy(:m, 'kim', 'k4', 100, ARRAY[:o_fix]), 'ok 15.00 0', 'fixed: 15 off');
SELECT is(pg_temp.buy(:m, 'kim', 'k5', 10, ARRAY[:o_fix]), 'ok 10.00 0', 'fixed: never more than the amount (10)');
SELECT wallet.balance(wallet.find_account(:p, 'kim')) AS bal0 \gset
SELECT is(pg_temp.buy(:m, 'kim', 'k6', 50, ARRAY[:o_cb]), 'ok 0 100', 'cashback: 2 points x 50 = 100 points');
SELECT is(wallet.balance(wallet.find_account(:p, 'kim')) - :bal0, 100::bigint, 'the cashback is posted to the member''s account');
SELECT is((SELECT (e.kind, e.reason, e.reference, e.points)::text FROM wallet.entries e
            JOIN wallet.purchase_offers o ON o.entry_id = e.entry_id JOIN wallet.purchases x USING (purchase_id) WHERE x.order_ref = 'k6'),
          '(accrue,"offer cashback",k6,100)', 'as an accrue entry referencing the order');
SELECT is(pg_temp.buy(:m, 'kim', 'k7', 50, ARRAY[:o_cb_max]), 'ok 0 80', 'cashback with a maximum: 100 capped at 80 points');
-- the cost: discounts as booked, cashback at the point value (0.01)
SELECT is((SELECT string_agg(format('%s %s', k.kind, k.amount), ', ' ORDER BY k.cost_id) FROM wallet.campaign_costs k WHERE k.campaign_id = :c),
          'discount 25.00, discount 20.00, discount 9.99, discount 15.00, discount 10.00, cashback 1.00, cashback 0.80',
          'campaign_costs: each discount, and cashback at the program''s point value (100 x 0.01, 80 x 0.01)');
SELECT is((SELECT other_cost FROM wallet.campaign_report(:c, '2026-01-01', now() + interval '1 day')),
          (SELECT sum(o.discount) + sum(o.points) * 0.01 FROM wallet.purchase_offers o WHERE o.campaign_id = :c),
          'campaign_report counts the offers'' cost (sum of discounts + points x point value, computed from purchase_offers)');
SELECT is(pg_temp.buy(:m, 'kim', 'k1', 250, ARRAY[:o_pct]), 'ok 25.00 0', 'a retried order returns its result and consumes nothing again');
SELECT is((SELECT count(*) FROM wallet.campaign_costs k WHERE k.campaign_id = :c), 7::bigint, '... no second cost row');
SELECT is((SELECT p.amount FROM wallet.purchases p WHERE p.order_ref = 'k1'), 250::numeric, 'the purchase keeps the basket amount (before discounts)');
SELECT is(pg_temp.buy(:m, 'kim', 'k8', 10, NULL), NULL, 'record_purchase without offers applies none (the old call shape)');

-- ---------------------------------------------------------------- conditions
SELECT wallet.create_campaign(:m, 'conditions', starts_at => '2026-01-01') AS cc \gset
SELECT wallet.create_offer(:cc, 'min 100', 'fixed', 1, 'CNY', conditions => '{"min_amount": 100}') AS o_min \gset
SELECT wallet.create_offer(:cc, 'store s1', 'fixed', 1, 'CNY', conditions => '{"stores": ["s1"]}') AS o_store \gset
SELECT wallet.create_offer(:cc, 'app', 'fixed', 1, 'CNY', conditions => '{"channels": ["app"]}') AS o_chan \gset
SELECT wallet.create_offer(:cc, 'wallet pay', 'fixed', 1, 'CNY', conditions => '{"payment_methods": ["wallet"]}') AS o_pay \gset
SELECT wallet.create_offer(:cc, 'food', 'fixed', 1, 'CNY', conditions => '{"categories": ["food"]}') AS o_cat \gset
SELECT wallet.create_offer(:cc, 'gold', 'fixed', 1, 'CNY', conditions => '{"min_tier_rank": 2}') AS o_tier \gset
SELECT wallet.create_offer(:cc, 'first', 'fixed', 1, 'CNY', conditions => '{"first_purchase": true}') AS o_first \gset
SELECT wallet.create_offer(:cc, 'monday', 'fixed', 1, 'CNY', conditions => '{"days_of_week": [1]}', valid_from => '2026-01-01') AS o_dow \gset
SELECT wallet.create_offer(:cc, 'happy hour', 'fixed', 1, 'CNY', conditions => '{"time_from": "17:00", "time_until": "19:00"}',
                           valid_from => '2026-01-01') AS o_time \gset
SELECT is(pg_temp.buy(:m, 'cy', 'c1', 99, ARRAY[:o_min]), 'not_eligible 0 0', 'min_amount 100: 99 is not eligible');
SELECT is(pg_temp.buy(:m, 'cy', 'c2', 100, ARRAY[:o_min]), 'ok 1.00 0', 'min_amount 100: 100 is');
SELECT is(pg_temp.buy(:m, 'cy', 'c3', 10, ARRAY[:o_store], '{"store": "s2"}'), 'not_eligible 0 0', 'store s1: s2 is not');
SELECT is(pg_temp.buy(:m, 'cy', 'c4', 10, ARRAY[:o_store], '{"store": "s1"}'), 'ok 1.00 0', 'store s1: s1 is');
SELECT is(pg_temp.buy(:m, 'cy', 'c5', 10, ARRAY[:o_chan], '{"channel": "pos"}'), 'not_eligible 0 0', 'channel app: pos is not');
SELECT is(pg_temp.buy(:m, 'cy', 'c6', 10, ARRAY[:o_chan], '{"channel": "app"}'), 'ok 1.00 0', 'channel app: app is');
SELECT is(pg_temp.buy(:m, 'cy', 'c7', 10, ARRAY[:o_pay], '{"payment_method": "card"}'), 'not_eligible 0 0', 'payment wallet: card is not');
SELECT is(pg_temp.buy(:m, 'cy', 'c8', 10, ARRAY[:o_pay], '{"payment_method": "wallet"}'), 'ok 1.00 0', 'payment wallet: wallet is');
SELECT is(pg_temp.buy(:m, 'cy', 'c9', 10, ARRAY[:o_cat], '{"categories": ["toys"]}'), 'not_eligible 0 0', 'category food: toys is not');
SELECT is(pg_temp.buy(:m, 'cy', 'c10', 10, ARRAY[:o_cat], '{"categories": ["toys", "food"]}'), 'ok 1.00 0', 'category food: toys and food is');
SELECT is(pg_temp.buy(:m, 'cy', 'c11', 10, ARRAY[:o_tier]), 'not_eligible 0 0', 'tier rank 2: a member without a tier is not eligible');
INSERT INTO wallet.tiers (merchant_id, program_id, rank, name, min_points) VALUES (:m, :p, 2, 'Gold', 1000) RETURNING tier_id AS t_gold \gset
INSERT INTO wallet.account_tiers (account_id, merchant_id, member_id, program_id, tier_id, rank)
SELECT account_id, merchant_id, member_id, program_id, :t_gold, 2 FROM wallet.accounts WHERE account_id = wallet.find_account(:p, 'cy');
SELECT is(pg_temp.buy(:m, 'cy', 'c12', 10, ARRAY[:o_tier]), 'ok 1.00 0', 'tier rank 2: a Gold member is');
SELECT is(pg_temp.buy(:m, 'newbie', 'c13', 10, ARRAY[:o_first]), 'ok 1.00 0', 'first purchase: the member''s first is eligible');
SELECT is(pg_temp.buy(:m, 'newbie', 'c14', 10, ARRAY[:o_first]), 'not_eligible 0 0', 'first purchase: the second is not');
SELECT wallet.upsert_member(:m, 'tokyo', 'Asia/Tokyo') \g /dev/null
-- 2026-03-01 23:30 UTC is Monday 2026-03-02 08:30 in Tokyo; 2026-03-02 23:30 UTC is Tuesday there
SELECT is(pg_temp.buy(:m, 'tokyo', 'c15', 10, ARRAY[:o_dow], at => '2026-03-01 23:30+00'), 'ok 1.00 0',
          'Mondays: Sunday 23:30 UTC is Monday in the member''s time zone (Tokyo)');
SELECT is(pg_temp.buy(:m, 'tokyo', 'c16', 10, ARRAY[:o_dow], at => '2026-03-02 23:30+00'), 'not_eligible 0 0',
          'Mondays: Monday 23:30 UTC is Tuesday in Tokyo');
SELECT is(pg_temp.buy(:m, 'tokyo', 'c17', 10, ARRAY[:o_time], at => '2026-03-03 09:00+00'), 'ok 1.00 0',
          '17:00-19:00 local: 09:00 UTC is 18:00 in Tokyo');
SELECT is(pg_temp.buy(:m, 'tokyo', 'c18', 10, ARRAY[:o_time], at => '2026-03-03 18:00+00'), 'not_eligible 0 0',
          '17:00-19:00 local: 18:00 UTC is 03:00 in Tokyo');
SELECT throws_ok(format($$SELECT wallet.create_offer(%s, 'bad', 'fixed', 1, 'CNY', conditions => '{"weather": "sunny"}')$$, :cc),
                 '22023', NULL, 'an unknown condition is refused, as for earning rules');

-- ---------------------------------------------------------------- stacking
SELECT wallet.create_campaign(:m, 'stacking', starts_at => '2026-01-01') AS cs \gset
SELECT wallet.create_offer(:cs, 'first 10%', 'percent', 10, 'CNY', priority => 10) AS s_pct \gset
SELECT wallet.create_offer(:cs, 'then 5 off', 'fixed', 5, 'CNY', priority => 5) AS s_fix \gset
SELECT wallet.create_offer(:cs, 'vip alone', 'fixed', 30, 'CNY', priority => 20, exclusive => true, valid_from => '2026-01-01') AS s_excl_hi \gset
SELECT wallet.create_offer(:cs, 'lone low', 'fixed', 30, 'CNY', priority => 1, exclusive => true, valid_from => '2026-01-01') AS s_excl_lo \gset
SELECT is(pg_temp.buy(:m, 'sam', 's1', 100, ARRAY[:s_fix, :s_pct]), 'ok 10.00 0, ok 5.00 0',
          'two offers stack in priority order: 10% of 100 = 10, then 5 off');
SELECT wallet.create_offer(:cs, 'then 50%', 'percent', 50, 'CNY', priority => 4) AS s_half \gset
SELECT is(pg_temp.buy(:m, 'sam', 's2', 100, ARRAY[:s_pct, :s_fix, :s_half]), 'ok 10.00 0, ok 5.00 0, ok 42.50 0',
          'each discount applies to what is left to pay: 50% of (100 - 10 - 5) = 42.50');
SELECT is(pg_temp.buy(:m, 'sam', 's3', 100, ARRAY[:s_pct, :s_fix, :s_excl_hi]), 'not_combinable 0 0, not_combinable 0 0, ok 30.00 0',
          'an exclusive offer of the highest priority applies alone');
SELECT is(pg_temp.buy(:m, 'sam', 's4', 100, ARRAY[:s_pct, :s_excl_lo]), 'ok 10.00 0, not_combinable 0 0',
          'an exclusive offer does not apply after one of higher priority did');
SELECT is(pg_temp.buy(:m, 'sam', 's5', 100, ARRAY[:s_excl_lo]), 'ok 30.00 0', 'alone, it applies');

-- ---------------------------------------------------------------- caps
SELECT wallet.create_campaign(:m, 'caps', starts_at => '2026-01-01') AS ck \gset
SELECT wallet.create_offer(:ck, 'twice', 'fixed', 1, 'CNY', caps => '{"per_member": 2}') AS k_two \gset
SELECT wallet.create_offer(:ck, 'daily', 'fixed', 1, 'CNY', caps => '{"per_period": 1, "period": "day"}', valid_from => '2026-01-01') AS k_day \gset
SELECT is(pg_temp.buy(:m, 'cap', 'q1', 10, ARRAY[:k_two]) || ' / ' || pg_temp.buy(:m, 'cap', 'q2', 10, ARRAY[:k_two]) || ' / '
          || pg_temp.buy(:m, 'cap', 'q3', 10, ARRAY[:k_two]), 'ok 1.00 0 / ok 1.00 0 / capped 0 0', 'per member 2: the third purchase is capped');
SELECT is(pg_temp.buy(:m, 'cap2', 'q4', 10, ARRAY[:k_two]), 'ok 1.00 0', '... per member: another member still gets it');
SELECT is(pg_temp.buy(:m, 'cap', 'q5', 10, ARRAY[:k_day], at => '2026-04-01 10:00+00') || ' / '
          || pg_temp.buy(:m, 'cap', 'q6', 10, ARRAY[:k_day], at => '2026-04-01 20:00+00') || ' / '
          || pg_temp.buy(:m, 'cap', 'q7', 10, ARRAY[:k_day], at => '2026-04-02 08:00+00'),
          'ok 1.00 0 / capped 0 0 / ok 1.00 0', 'once a day: the second that day is capped, the next day it applies again');
SELECT wallet.end_offer(:s_excl_hi) \g /dev/null
SELECT wallet.end_offer(:s_excl_lo, now() - interval '1 day') \g /dev/null
SELECT is((SELECT count(*) FROM wallet.quote_offers(:m, 'cap', 10, 'CNY') q WHERE q.offer_id IN (:s_excl_hi, :s_excl_lo)), 0::bigint,
          'ended offers are no longer quoted');
SELECT is((SELECT q.status FROM wallet.quote_offers(:m, 'cap', 10, 'CNY') q WHERE q.offer_id = :k_two), 'capped',
          'quote_offers shows the capped offer as capped');
SELECT is((SELECT uses FROM wallet.offer_counters k JOIN wallet.members x USING (member_id) WHERE k.offer_id = :k_two AND x.member_ref = 'cap' AND period IS NULL),
          2::bigint, 'the counter stops at the cap (a refused use is not counted)');

-- ---------------------------------------------------------------- codes
SELECT wallet.create_campaign(:m, 'code offer', starts_at => '2026-01-01') AS cd \gset
SELECT wallet.create_campaign(:m, 'other codes', starts_at => '2026-01-01') AS cd2 \gset
SELECT wallet.create_offer(:cd, 'with a code', 'fixed', 8, 'CNY', code_required => true) AS d_code \gset
SELECT g::text AS code1 FROM wallet.generate_codes(:cd, 1) g \gset
SELECT g::text AS code_other FROM wallet.generate_codes(:cd2, 1) g \gset
SELECT is(pg_temp.buy(:m, 'cody', 'd1', 50, ARRAY[:d_code]), 'code_needed 0 0', 'a code_required offer without a code: code_needed');
SELECT is(pg_temp.buy(:m, 'cody', 'd2', 50, ARRAY[:d_code], codes => ARRAY[:'code_other']), 'code_needed 0 0', 'a code of another campaign does not count');
SELECT is(pg_temp.buy(:m, 'cody', 'd3', 50, ARRAY[:d_code], codes => ARRAY[:'code_other', :'code1']), 'ok 8.00 0', 'with a code of the campaign: ok');
SELECT is((SELECT count(*) FROM wallet.code_redemptions r JOIN wallet.purchase_offers o ON o.redemption_id = r.redemption_id
            WHERE r.campaign_id = :cd AND r.member_ref = 'cody'), 1::bigint, 'the code is redeemed through redeem_code, with the purchase');
SELECT is(pg_temp.buy(:m, 'cody', 'd4', 50, ARRAY[:d_code], codes => ARRAY[:'code1']), 'code_needed 0 0', 'the single-use code cannot serve twice');

-- ---------------------------------------------------------------- audience and holdout
SELECT wallet.create_campaign(:m, 'holdout', starts_at => '2026-01-01') AS ch \gset
SELECT count(wallet_internal.member_ensure(:m, 'h' || i)) FROM generate_series(1, 40) i \g /dev/null
SELECT wallet.set_campaign_audience(:ch, 'everyone', 50) \g /dev/null
SELECT wallet.create_offer(:ch, 'not for control', 'fixed', 2, 'CNY') AS h_off \gset
CREATE TEMP TABLE grp AS SELECT 'h' || i AS ref, wallet.campaign_group(:ch, 'h' || i) AS g FROM generate_series(1, 40) i;
SELECT ok((SELECT count(*) FROM grp WHERE g = 'control') BETWEEN 5 AND 35, 'the holdout puts some members in control, others in target');
SELECT is((SELECT count(*) FROM grp WHERE g = 'control' AND pg_temp.buy(:m, ref, 'hc-' || ref, 10, ARRAY[:h_off]) <> 'not_eligible 0 0'),
          0::bigint, 'no member of the control group gets the offer');
SELECT is((SELECT count(*) FROM grp WHERE g = 'target' AND pg_temp.buy(:m, ref, 'ht-' || ref, 10, ARRAY[:h_off]) <> 'ok 2.00 0'),
          0::bigint, 'every member of the target group gets it');

-- ---------------------------------------------------------------- budget
SELECT wallet.create_campaign(:m, 'budgeted', starts_at => '2026-01-01') AS cb \gset
-- 10.00 in hundredths
SELECT wallet.set_campaign_budget(:cb, 'money', 1000) \g /dev/null
SELECT wallet.create_offer(:cb, 'four off', 'fixed', 4, 'CNY') AS b_all \gset
SELECT wallet.create_offer(:cb, 'four off, or less', 'fixed', 4, 'CNY', allow_partial => true) AS b_part \gset
SELECT is(pg_temp.buy(:m, 'bo', 'b1', 20, ARRAY[:b_all]) || ' / ' || pg_temp.buy(:m, 'bo', 'b2', 20, ARRAY[:b_all]) || ' / '
          || pg_temp.buy(:m, 'bo', 'b3', 20, ARRAY[:b_all]), 'ok 4.00 0 / ok 4.00 0 / no_budget 0 0',
          'a budget of 10.00: two discounts of 4, the third is refused with a status (2.00 left)');
SELECT is(pg_temp.buy(:m, 'bo', 'b4', 20, ARRAY[:b_part]), 'partial 2.00 0', 'an offer allowing it gets what is left: 2.00');
SELECT is((SELECT (granted, held, remaining)::text FROM wallet.campaign_budget(:cb)), '(1000,0,0)', 'the budget is spent exactly');
SELECT is((SELECT sum(units) FROM wallet.purchase_offers WHERE campaign_id = :cb), 1000::numeric, 'purchase_offers accounts for every unit');
SELECT throws_ok(format($$SELECT wallet.create_offer(%s, 'cashback on money', 'cashback', 1, 'CNY')$$, :cb), 'WL609', NULL,
                 'cashback cannot draw on a money budget: WL609');
SELECT wallet.create_campaign(:m, 'points budget', starts_at => '2026-01-01') AS cpb \gset
SELECT wallet.set_campaign_budget(:cpb, 'points', 150) \g /dev/null
SELECT wallet.create_offer(:cpb, 'cashback 1/yuan', 'cashback', 1, 'CNY', allow_partial => true) AS b_cb \gset
SELECT is(pg_temp.buy(:m, 'bo', 'b5', 100, ARRAY[:b_cb]) || ' / ' || pg_temp.buy(:m, 'bo', 'b6', 100, ARRAY[:b_cb]),
          'ok 0 100 / partial 0 50', 'cashback draws on a points budget: 100, then the 50 left');
-- refunds give nothing back: the budget stays spent, the cap use stays counted
SELECT wallet.record_refund(:m, 'b1', 20, 'refund-b1') \g /dev/null
SELECT is((SELECT granted FROM wallet.campaign_budget(:cb)), 1000::bigint, 'a refund does not return the discount to the budget');
SELECT wallet.record_refund(:m, 'q1', 10, 'refund-q1') \g /dev/null
SELECT is(pg_temp.buy(:m, 'cap', 'q8', 10, ARRAY[:k_two]), 'capped 0 0', 'a refund does not give the member a cap use back');

-- ---------------------------------------------------------------- quotes
SELECT wallet.create_campaign(:mq, 'quoted', starts_at => '2026-01-01') AS cq \gset
SELECT wallet.set_campaign_budget(:cq, 'money', 1000) \g /dev/null
SELECT wallet.create_offer(:cq, 'six off', 'fixed', 6, 'CNY') AS q_six \gset
SELECT is(pg_temp.quote(:mq, 'quinn', 50), 'six off ok 6.00 0', 'quote_offers: the offer and its worth');
SELECT is((SELECT (granted, held)::text FROM wallet.campaign_budget(:cq)), '(0,0)', 'a quote without hold_ttl consumes nothing');
SELECT wallet.upsert_member(:mq, 'quinn-tokyo', 'Asia/Tokyo') IS NOT NULL AS x \gset
SELECT throws_ok(format($$SELECT * FROM wallet.quote_offers(%s, 'quinn-tokyo', 50, 'CNY', '294276-12-31 23:00:00+00')$$, :mq), '22023',
                 'occurred_at must be within 100 years of now', 'quote_offers: an occurred_at at the end of the range in Asia/Tokyo is 22023, not 22008');
SELECT quote_id AS qid1 FROM wallet.quote_offers(:mq, 'quinn', 50, 'CNY', hold_ttl => '10 minutes') \gset
SELECT is((SELECT (granted, held, remaining)::text FROM wallet.campaign_budget(:cq)), '(0,600,400)', 'a quote with hold_ttl holds 6.00 at once');
SELECT is(pg_temp.quote(:mq, 'rita', 50), 'six off no_budget 0 0', 'held units count: another checkout is refused (4.00 left)');
SELECT is(pg_temp.buy(:mq, 'quinn', 'qq1', 50, NULL, quote => :qid1), 'ok 6.00 0', 'record_purchase with the quote converts its hold');
SELECT is((SELECT (granted, held, remaining)::text FROM wallet.campaign_budget(:cq)), '(600,0,400)', '... the held units are granted');
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'quinn', 'qq2', 50, 'CNY', quote_id => %s)$$, :mq, :qid1), 'WL608', NULL,
                 'a quote is used once: WL608');
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'quinn', 'qq3', 50, 'CNY', quote_id => -1)$$, :mq), 'WL607', NULL, 'unknown quote: WL607');
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'quinn', 'qq4', 50, 'CNY', offers => ARRAY[-1]::bigint[])$$, :mq), 'WL606', NULL,
                 'unknown offer: WL606');
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'quinn', 'qq5', 50, 'CNY', offers => ARRAY[%s]::bigint[])$$, :mq, :o_pct), 'WL606', NULL,
                 'another merchant''s offer looks unknown: WL606');
SELECT wallet.set_campaign_budget(:cq, 'money', 2000) \g /dev/null
SELECT quote_id AS qid3 FROM wallet.quote_offers(:mq, 'rex', 20, 'CNY', hold_ttl => '10 minutes') \gset
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'rex', 'qq6', 30, 'CNY', quote_id => %s)$$, :mq, :qid3), 'WL608', NULL,
                 'a quote for another amount: WL608');
SELECT is(wallet.release_quote(:qid3), true, 'release_quote gives an abandoned quote''s budget back');
SELECT is((SELECT (granted, held, remaining)::text FROM wallet.campaign_budget(:cq)), '(600,0,1400)', '... nothing held any more');
-- an expired quote stops counting; recording it then takes from the budget afresh
SELECT quote_id AS qid4 FROM wallet.quote_offers(:mq, 'sue', 50, 'CNY', hold_ttl => '1 millisecond') \gset
SELECT pg_sleep(0.01) \g /dev/null
SELECT is((SELECT (held, remaining)::text FROM wallet.campaign_budget(:cq)), '(0,1400)', 'an expired quote''s hold no longer counts');
SELECT is(pg_temp.buy(:mq, 'sue', 'qq7', 50, NULL, quote => :qid4), 'ok 6.00 0', 'an expired quote is honoured while the budget covers it');
SELECT is((SELECT (granted, held, remaining)::text FROM wallet.campaign_budget(:cq)), '(1200,0,800)',
          '... granted 12.00 of 20.00, nothing held, nothing lost');

-- maintenance: quotes long expired are deleted (qid4 expired, the others are not yet)
SELECT is(wallet.purge_offer_quotes(interval '0'), 1::bigint, 'purge_offer_quotes deletes the quote that expired');
SELECT is((SELECT count(*) FROM wallet.offer_quotes WHERE quote_id IN (:qid1, :qid3, :qid4)), 2::bigint, '... and keeps the others');
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'sue', 'qq8', 50, 'CNY', quote_id => %s)$$, :mq, :qid4), 'WL607', NULL,
                 'a purged quote is unknown: WL607');

-- ---------------------------------------------------------------- arguments out of their domain
-- numeric NaN compares above every number: refused by the bounds, as Infinity
SELECT throws_ok(format($$SELECT wallet.create_offer(%s, 'nan max', 'fixed', 1, 'CNY', max_value => 'NaN')$$, :c), '22023',
                 'invalid max_value for a fixed offer', 'create_offer: a NaN max_value is 22023');
SELECT throws_ok(format($$SELECT wallet.create_offer(%s, 'inf max', 'cashback', 1, 'CNY', max_value => 'Infinity')$$, :c), '22023',
                 'invalid max_value for a cashback offer', 'create_offer: an infinite max_value is 22023');
SELECT is(error_of(format($$SELECT wallet.create_offer(%s, 'neg max', 'fixed', 1, 'CNY', max_value => -1)$$, :c)),
          '22023 invalid max_value for a fixed offer / A maximum is above 0 and at most 10^12, or none (NULL).',
          'create_offer: a negative max_value is 22023 naming max_value (the value is fine)');
SELECT throws_ok(format($$SELECT wallet.create_offer(%s, 'forever', 'fixed', 1, 'CNY', valid_until => 'infinity')$$, :c), '22023',
                 'valid_until must be finite', 'create_offer: an infinite valid_until is 22023 (NULL is open-ended)');
SELECT throws_ok($$SELECT wallet.purge_offer_quotes(older_than => '100000 years')$$, '22023', 'older_than must be at most 100 years',
                 'purge_offer_quotes older than 100000 years: 22023, not a timestamp out of range');
-- the codes, like every text argument
SELECT throws_ok(format($$SELECT wallet.quote_offers(%s, 'coder', 10, 'CNY', codes => ARRAY['X', NULL])$$, :m), '22004',
                 'codes must not contain null', 'quote_offers: a NULL code is 22004');
SELECT throws_ok(format($$SELECT wallet.quote_offers(%s, 'coder', 10, 'CNY', codes => ARRAY[' '])$$, :m), '22023',
                 'codes must not contain a blank code or one longer than 256 characters', 'quote_offers: a blank code is 22023');
SELECT throws_ok(format($$SELECT wallet.quote_offers(%s, 'coder', 10, 'CNY', codes => ARRAY[repeat('x', 300)])$$, :m), '22023',
                 'codes must not contain a blank code or one longer than 256 characters', 'quote_offers: a code of 300 characters is 22023');
SELECT throws_ok(format($$SELECT wallet.quote_offers(%s, 'coder', 10, 'CNY', codes => ARRAY[['X'], ['Y']])$$, :m), '22023',
                 'codes must be a one-dimensional array', 'quote_offers: a 2-D array of codes is 22023, not flattened');
-- cashback beyond bigint: WL205, nothing recorded
SELECT wallet.create_merchant('offers overflow merchant') AS mo \gset
SELECT wallet.create_program(:mo, 'overflow points') AS po \gset
SELECT wallet.set_program_earning(:po, 'CNY') \g /dev/null
SELECT wallet.create_campaign(:mo, 'overflow', starts_at => '2026-01-01') AS co \gset
SELECT wallet.create_offer(:co, 'huge cashback', 'cashback', 1e12, 'CNY') AS o_huge \gset
SELECT throws_ok(format($$SELECT wallet.quote_offers(%s, 'whale', 1e15, 'CNY')$$, :mo), 'WL205', 'points out of range',
                 'quote_offers: cashback of 10^27 points is WL205');
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'whale', 'whale-1', 1e15, 'CNY', offers => ARRAY[%s]::bigint[])$$, :mo, :o_huge),
                 'WL205', 'points out of range', 'record_purchase: cashback of 10^27 points is WL205');
SELECT is((SELECT count(*) FROM wallet.purchases WHERE merchant_id = :mo), 0::bigint, 'the refused checkout recorded nothing');

-- a first-purchase offer quoted twice before the member's first purchase:
-- the first quote used gets it, the second finds a purchase before it
-- (not_eligible, its hold released: the budget granted once)
SELECT wallet.create_merchant('offers first merchant') AS mf \gset
SELECT wallet.create_program(:mf, 'first points') AS pf \gset
SELECT wallet.set_program_earning(:pf, 'CNY') \g /dev/null
SELECT wallet.create_campaign(:mf, 'welcome', starts_at => '2026-01-01') AS cf \gset
SELECT wallet.set_campaign_budget(:cf, 'money', 100000) \g /dev/null
SELECT wallet.create_offer(:cf, 'first order 10 off', 'fixed', 10, 'CNY', conditions => '{"first_purchase": true}') AS o_f1 \gset
SELECT max(quote_id) AS qf1 FROM wallet.quote_offers(:mf, 'newbie', 100, 'CNY', hold_ttl => interval '10 minutes') \gset
SELECT max(quote_id) AS qf2 FROM wallet.quote_offers(:mf, 'newbie', 100, 'CNY', hold_ttl => interval '10 minutes') \gset
SELECT is((SELECT held FROM wallet.campaign_budget(:cf)), 2000::bigint, 'two quotes before the first purchase hold the offer twice');
SELECT is(pg_temp.buy(:mf, 'newbie', 'nb-1', 100, NULL, quote => :qf1), 'ok 10.00 0', 'the first quote used: the first purchase gets the offer');
SELECT is(pg_temp.buy(:mf, 'newbie', 'nb-2', 100, NULL, quote => :qf2), 'not_eligible 0 0',
          'the second quote used: no longer the first purchase, not_eligible');
SELECT is((SELECT (granted, held)::text FROM wallet.campaign_budget(:cf)), '(1000,0)', 'granted once, the second hold released');

-- a checkout naming some of its quote's offers: the holds of the others go
-- back at once (the quote is used); a named offer outside the quote gets its
-- not_eligible row and an unknown one is WL606, as without a quote
SELECT wallet.create_merchant('offers subset merchant') AS msub \gset
SELECT wallet.create_program(:msub, 'subset points') AS psub \gset
SELECT wallet.set_program_earning(:psub, 'CNY') \g /dev/null
SELECT wallet.create_campaign(:msub, 'subset', starts_at => '2026-01-01') AS csub \gset
SELECT wallet.set_campaign_budget(:csub, 'money', 100000) \g /dev/null
SELECT wallet.create_offer(:csub, '10 off', 'fixed', 10, 'CNY') AS o_s10 \gset
SELECT wallet.create_offer(:csub, '5 off', 'fixed', 5, 'CNY') AS o_s5 \gset
SELECT wallet.create_offer(:csub, 'store S1 only', 'fixed', 3, 'CNY', conditions => '{"stores": ["S1"]}') AS o_s1 \gset
SELECT max(quote_id) AS qsub FROM wallet.quote_offers(:msub, 'subber', 100, 'CNY', hold_ttl => interval '1 day') \gset
SELECT is((SELECT held FROM wallet.campaign_budget(:csub)), 1500::bigint, 'fixture: the quote holds 10.00 and 5.00');
SELECT is(pg_temp.buy(:msub, 'subber', 'sub-1', 100, ARRAY[:o_s5, :o_s1]::bigint[], quote => :qsub), 'ok 5.00 0, not_eligible 0 0',
          'the checkout names 5 off (from the quote) and the S1 offer (not in it): ok, and a not_eligible row');
SELECT is((SELECT (granted, held)::text FROM wallet.campaign_budget(:csub)), '(500,0)', 'the unnamed 10 off''s hold went back at once');
SELECT max(quote_id) AS qsub2 FROM wallet.quote_offers(:msub, 'subber', 100, 'CNY', hold_ttl => interval '1 day') \gset
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'subber', 'sub-2', 100, 'CNY', offers => ARRAY[%s, 999999]::bigint[], quote_id => %s)$$,
                        :msub, :o_s5, :qsub2), 'WL606', NULL, 'an unknown offer named with a quote is WL606, as without one');

SELECT * FROM finish();
ROLLBACK;

-- pgTAP: purchases, earning rules, preview and refunds (issue 10, part A).
-- Every figure is worked out by hand in the comment beside it.
BEGIN;
SET LOCAL timezone = 'UTC';
SELECT plan(120);

SELECT wallet.create_merchant('purchases merchant') AS m \gset
-- one program per currency, one currency per section
SELECT wallet.create_program(:m, 'cny points') AS p_cny \gset
SELECT wallet.create_program(:m, 'eur points') AS p_eur \gset
SELECT wallet.create_program(:m, 'usd points') AS p_usd \gset
SELECT wallet.create_program(:m, 'jpy points') AS p_jpy \gset
SELECT wallet.create_program(:m, 'gbp points') AS p_gbp \gset
SELECT wallet.create_program(:m, 'chf points') AS p_chf \gset
SELECT wallet.set_program_earning(:p_cny, 'CNY') IS NULL AS x \gset
SELECT wallet.set_program_earning(:p_eur, 'EUR') IS NULL AS x \gset
SELECT wallet.set_program_earning(:p_usd, 'USD') IS NULL AS x \gset
SELECT wallet.set_program_earning(:p_jpy, 'JPY') IS NULL AS x \gset
SELECT wallet.set_program_earning(:p_gbp, 'GBP') IS NULL AS x \gset
SELECT wallet.set_program_earning(:p_chf, 'CHF', refund_debt => true, point_value => 0.01) IS NULL AS x \gset

-- ---------------------------------------------------------------- settings
SELECT is((SELECT (currency, rounding, refund_debt, point_value)::text FROM wallet.programs WHERE program_id = :p_chf),
          '(CHF,floor,t,0.01)', 'set_program_earning sets currency, rounding, refund policy and point value');
SELECT throws_ok(format($$SELECT wallet.set_program_earning(%s, 'CNY')$$, :p_eur), '23505', NULL,
                 'a second open program earning in the same currency: 23505');
SELECT throws_ok(format($$SELECT wallet.set_program_earning(%s, 'cny')$$, :p_eur), '22023', NULL, 'a currency not ISO 4217 shaped: 22023');
SELECT throws_ok(format($$SELECT wallet.set_program_earning(%s, 'EUR', 'up')$$, :p_eur), '22023', NULL, 'an unknown rounding: 22023');

-- ---------------------------------------------------------------- rule kinds, rounding, tier (CNY)
SELECT wallet.upsert_member(:m, 'ann', 'Asia/Shanghai') IS NOT NULL AS x \gset
SELECT wallet.create_earning_rule(:p_cny, 'base', 'per_unit', 1, valid_from => '2026-01-01') AS r_base \gset
SELECT is((SELECT (points, rules)::text FROM wallet.record_purchase(:m, 'ann', 'cny-1', 99.90, 'CNY', '2026-03-02 12:00+08')),
          format('(99,"[{""why"": ""base: 1 points per CNY on 99.90 CNY"", ""points"": 99, ""rule_id"": %s}]")', :r_base),
          'per_unit: 99.90 CNY at 1 point per unit, floored: 99 points, explained');
SELECT is((SELECT e.points FROM wallet.purchases p JOIN wallet.entries e ON e.entry_id = p.entry_id WHERE p.order_ref = 'cny-1'),
          99::bigint, 'the purchase''s entry is the accrual of its points');
SELECT is((SELECT (e.kind, e.reference, e.account_id = p.account_id)::text FROM wallet.purchases p JOIN wallet.entries e ON e.entry_id = p.entry_id
            WHERE p.order_ref = 'cny-1'), '(accrue,cny-1,t)', 'posted as an accrue entry on the member''s account, the order as reference');
SELECT wallet.set_program_earning(:p_cny, 'CNY', 'nearest') IS NULL AS x \gset
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'ann', 'cny-2', 10.5, 'CNY', '2026-03-02 12:00+08')), 11::bigint, 'nearest: 10.5 rounds up to 11');
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'ann', 'cny-3', 10.49, 'CNY', '2026-03-02 12:00+08')), 10::bigint, 'nearest: 10.49 rounds to 10');
SELECT wallet.set_program_earning(:p_cny, 'CNY', 'ceiling') IS NULL AS x \gset
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'ann', 'cny-4', 10.01, 'CNY', '2026-03-02 12:00+08')), 11::bigint, 'ceiling: 10.01 gives 11');
SELECT wallet.set_program_earning(:p_cny, 'CNY', 'floor') IS NULL AS x \gset

-- fixed bonus on the first purchase in the program
SELECT wallet.create_earning_rule(:p_cny, 'welcome', 'fixed', 50, '{"first_purchase": true}', valid_from => '2026-01-01') AS r_welcome \gset
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'ben', 'cny-ben-1', 20, 'CNY', '2026-03-02 12:00+08')), 70::bigint,
          'first purchase of a new member: 20 + fixed 50 = 70');
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'ben', 'cny-ben-2', 20, 'CNY', '2026-03-02 12:00+08')), 20::bigint,
          'second purchase: no welcome bonus, 20');
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'ann', 'cny-5', 20, 'CNY', '2026-03-02 12:00+08')), 20::bigint,
          'a member who bought before the rule existed is not on a first purchase: 20');
SELECT is(wallet.balance(wallet.find_account(:p_cny, 'ben')), 90::bigint, 'ben''s balance: 70 + 20');

-- 双十一: double points on 11 November in Shanghai, [00:00, 24:00) local
SELECT wallet.create_earning_rule(:p_cny, '双十一', 'multiplier', 2, valid_from => '2026-11-11 00:00+08', valid_until => '2026-11-12 00:00+08') AS r_1111 \gset
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'ann', 'cny-1111-a', 100, 'CNY', '2026-11-11 00:00+08')), 200::bigint,
          '双十一 at its first instant: 100 + 100 extra = 200');
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'ann', 'cny-1111-b', 100, 'CNY', '2026-11-11 23:59:59.999999+08')), 200::bigint,
          '双十一 at its last microsecond: 200');
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'ann', 'cny-1111-c', 100, 'CNY', '2026-11-12 00:00+08')), 100::bigint,
          'at valid_until (exclusive): 100');
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'ann', 'cny-1111-d', 100, 'CNY', '2026-11-10 23:59:59.999999+08')), 100::bigint,
          'just before valid_from: 100');
SELECT is((SELECT rules FROM wallet.purchases WHERE order_ref = 'cny-1111-a'),
          format('[{"why": "base: 1 points per CNY on 100 CNY", "points": 100, "rule_id": %s}, {"why": "双十一: x2 on 100 base points", "points": 100, "rule_id": %s}]',
                 :r_base, :r_1111)::jsonb, 'the explanation lists the base rule and the multiplier with their points');

-- tier multiplier (rows of the tiers data model, inserted directly)
INSERT INTO wallet.tiers (merchant_id, program_id, rank, name, min_points, multiplier) VALUES (:m, :p_cny, 2, 'Gold', 1000, 1.5) RETURNING tier_id AS t_gold \gset
INSERT INTO wallet.account_tiers (account_id, merchant_id, member_id, program_id, tier_id, rank)
SELECT account_id, merchant_id, member_id, program_id, :t_gold, 2 FROM wallet.accounts WHERE account_id = wallet.find_account(:p_cny, 'ann');
SELECT wallet.create_earning_rule(:p_cny, 'gold extra', 'fixed', 30, '{"min_tier_rank": 2}', valid_from => '2026-01-01') AS r_gold \gset
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'ann', 'cny-gold', 101, 'CNY', '2026-03-03 12:00+08')), 181::bigint,
          'Gold (x1.5, rank 2): 101 + floor(101 x 0.5) = 50 + min-rank bonus 30 = 181');
SELECT is((SELECT r FROM wallet.purchases, jsonb_array_elements(rules) r WHERE order_ref = 'cny-gold' AND r -> 'rule_id' = 'null'),
          '{"why": "tier Gold: x1.5 on 101 base points", "points": 50, "rule_id": null}'::jsonb, 'the tier''s part is explained without a rule id');
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'ben', 'cny-ben-3', 101, 'CNY', '2026-03-03 12:00+08')), 101::bigint,
          'no tier (rank 0): neither the multiplier nor the min-rank rule: 101');

-- ---------------------------------------------------------------- conditions (EUR), in the member's time zone
-- each rule a distinct power of two, so the sum tells which fired
SELECT wallet.upsert_member(:m, 'dee', 'America/New_York') IS NOT NULL AS x \gset
SELECT wallet.create_earning_rule(:p_eur, 'c_min', 'fixed', 1, '{"min_amount": 50}', valid_from => '2026-01-01') IS NOT NULL AS x \gset
SELECT wallet.create_earning_rule(:p_eur, 'c_store', 'fixed', 2, '{"stores": ["s1"]}', valid_from => '2026-01-01') IS NOT NULL AS x \gset
SELECT wallet.create_earning_rule(:p_eur, 'c_channel', 'fixed', 4, '{"channels": ["app"]}', valid_from => '2026-01-01') IS NOT NULL AS x \gset
SELECT wallet.create_earning_rule(:p_eur, 'c_pay', 'fixed', 8, '{"payment_methods": ["alipay"]}', valid_from => '2026-01-01') IS NOT NULL AS x \gset
SELECT wallet.create_earning_rule(:p_eur, 'c_cat', 'fixed', 16, '{"categories": ["food"]}', valid_from => '2026-01-01') IS NOT NULL AS x \gset
SELECT wallet.create_earning_rule(:p_eur, 'c_dow', 'fixed', 32, '{"days_of_week": [6, 7]}', valid_from => '2026-01-01') IS NOT NULL AS x \gset
SELECT wallet.create_earning_rule(:p_eur, 'c_time', 'fixed', 64, '{"time_from": "22:00", "time_until": "02:00"}', valid_from => '2026-01-01') IS NOT NULL AS x \gset
SELECT wallet.create_earning_rule(:p_eur, 'c_first', 'fixed', 128, '{"first_purchase": true}', valid_from => '2026-01-01') IS NOT NULL AS x \gset
SELECT wallet.create_earning_rule(:p_eur, 'c_tier', 'fixed', 256, '{"min_tier_rank": 1}', valid_from => '2026-01-01') IS NOT NULL AS x \gset
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'dee', 'eur-1', 50, 'EUR', '2026-03-07 23:30 America/New_York',
                                                     '{"store": "s1", "channel": "app", "payment_method": "alipay", "categories": ["toys", "food"]}')),
          255::bigint, 'Saturday 23:30 in New York (Sunday in UTC), every condition but the tier: 1+2+4+8+16+32+64+128 = 255');
SELECT is((SELECT jsonb_array_length(rules) FROM wallet.purchases WHERE order_ref = 'eur-1'), 8, 'eight rules fired, eight explained');
SELECT is((SELECT (points, entry_id IS NULL, rules)::text FROM wallet.record_purchase(:m, 'dee', 'eur-2', 49.99, 'EUR', '2026-03-09 02:00 America/New_York',
                                                     '{"store": "s2", "channel": "web", "payment_method": "card", "categories": ["toys"]}')),
          '(0,t,[])', 'Monday 02:00 local (time_until is exclusive), nothing matching: 0 points, nothing posted');
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'dee', 'eur-3', 10, 'EUR', '2026-03-09 01:59:59 America/New_York')), 64::bigint,
          'Monday 01:59:59 local: inside the window past midnight: 64');
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'dee', 'eur-4', 10, 'EUR', '2026-03-08 00:00 America/New_York')), 96::bigint,
          'Sunday 00:00 local: weekend 32 + time window 64 = 96');
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'dee', 'eur-5', 10, 'EUR', '2026-03-06 20:00 America/New_York')), 0::bigint,
          'Friday 20:00 in New York is Saturday 01:00 in UTC: the member''s day counts, 0');
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'dee', 'eur-6', 10, 'EUR', '2026-03-06 22:00 America/New_York')), 64::bigint,
          'Friday 22:00 local: the window''s first instant: 64');
UPDATE wallet.members SET time_zone = NULL WHERE member_ref = 'dee' AND merchant_id = :m;
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'dee', 'eur-7', 10, 'EUR', '2026-03-06 20:00 America/New_York')), 96::bigint,
          'no time zone known: UTC, where that instant is Saturday 01:00: weekend 32 + night window 64 = 96');
INSERT INTO wallet.tiers (merchant_id, program_id, rank, name, min_points) VALUES (:m, :p_eur, 1, 'Silver', 100) RETURNING tier_id AS t_silver \gset
INSERT INTO wallet.account_tiers (account_id, merchant_id, member_id, program_id, tier_id, rank)
SELECT account_id, merchant_id, member_id, program_id, :t_silver, 1 FROM wallet.accounts WHERE account_id = wallet.find_account(:p_eur, 'dee');
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'dee', 'eur-8', 10, 'EUR', '2026-03-10 12:00+00')), 256::bigint,
          'a member of rank 1: the min_tier_rank 1 rule: 256');

-- ---------------------------------------------------------------- stacking and priority (USD)
SELECT wallet.create_earning_rule(:p_usd, 's_base', 'per_unit', 1, valid_from => '2026-01-01') AS s_base \gset
SELECT wallet.create_earning_rule(:p_usd, 's_excl', 'fixed', 500, '{"min_amount": 1000}', valid_from => '2026-01-01', priority => 10, exclusive => true) AS s_excl \gset
SELECT wallet.create_earning_rule(:p_usd, 's_bonus', 'fixed', 10, valid_from => '2026-01-01', priority => 5) AS s_bonus \gset
SELECT wallet.create_earning_rule(:p_usd, 's_low', 'fixed', 777, valid_from => '2026-01-01', priority => -1, exclusive => true) AS s_low \gset
SELECT is((SELECT (points, ARRAY(SELECT (r ->> 'rule_id')::bigint FROM jsonb_array_elements(rules) r))::text
             FROM wallet.record_purchase(:m, 'gus', 'usd-1', 100, 'USD', '2026-03-02 12:00+00')),
          format('(110,"{%s,%s}")', :s_bonus, :s_base), 'stackable rules stack in priority order; a lower exclusive rule is skipped: 10 + 100');
SELECT is((SELECT (points, rules -> 0 ->> 'rule_id')::text FROM wallet.record_purchase(:m, 'gus', 'usd-2', 1000, 'USD', '2026-03-02 12:00+00')),
          format('(500,%s)', :s_excl), 'an exclusive rule of the highest priority fires alone: 500, not 500 + 10 + 1000');
SELECT lives_ok(format($$SELECT wallet.update_earning_rule(%s, conditions => '{"min_amount": 5000}')$$, :s_bonus), 'update a rule''s conditions');
SELECT lives_ok(format($$SELECT wallet.end_earning_rule(%s, '2026-03-03 00:00+00')$$, :s_base), 'end a rule');
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'gus', 'usd-3', 100, 'USD', '2026-03-04 12:00+00')), 777::bigint,
          'nothing of higher priority fires: the low exclusive rule alone, 777');
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'gus', 'usd-4', 100, 'USD', '2026-03-02 23:59:59+00')), 100::bigint,
          'a purchase made before the end of the ended rule still earns by it; the bonus now needs 5000: 100');
SELECT is((SELECT array_agg(points ORDER BY order_ref)::text FROM wallet.purchases WHERE order_ref IN ('usd-1', 'usd-2')), '{110,500}',
          'changing and ending rules changed no recorded purchase');
SELECT is(wallet.balance(wallet.find_account(:p_usd, 'gus')), 110 + 500 + 777 + 100::bigint, 'nor any posted point: 1487');
SELECT wallet.update_earning_rule(:s_low, value => 7) IS NULL AS x \gset
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'gus', 'usd-5', 100, 'USD', '2026-03-04 12:00+00')), 7::bigint, 'a new value applies from now on');
SELECT is((SELECT points FROM wallet.purchases WHERE order_ref = 'usd-3'), 777::bigint, 'and not to what was recorded');

-- ---------------------------------------------------------------- caps (JPY), days in the member's time zone
SELECT wallet.upsert_member(:m, 'eve', 'Asia/Tokyo') IS NOT NULL AS x \gset
SELECT wallet.create_earning_rule(:p_jpy, 'capped', 'per_unit', 1, caps => '{"per_purchase": 100, "per_member_day": 150, "per_member": 250}',
                                  valid_from => '2026-01-01') AS r_cap \gset
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'eve', 'jpy-1', 500, 'JPY', '2026-05-01 10:00 Asia/Tokyo')), 100::bigint, 'per purchase cap: 100 of 500');
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'eve', 'jpy-2', 80, 'JPY', '2026-05-01 23:59:59 Asia/Tokyo')), 50::bigint, 'per day cap: 150 - 100 = 50 of 80');
SELECT is((SELECT rules -> 0 ->> 'why' FROM wallet.purchases WHERE order_ref = 'jpy-2'), 'capped: 1 points per JPY on 80 JPY, capped at 150 per day (2026-05-01)',
          'the cap is explained');
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'eve', 'jpy-3', 80, 'JPY', '2026-05-02 00:00 Asia/Tokyo')), 80::bigint,
          'midnight in Tokyo (still 1 May in UTC) starts a new day: 80');
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'eve', 'jpy-4', 80, 'JPY', '2026-05-02 01:00 Asia/Tokyo')), 20::bigint,
          'per member cap: 250 - 230 = 20');
SELECT is((SELECT (points, entry_id IS NULL)::text FROM wallet.record_purchase(:m, 'eve', 'jpy-5', 80, 'JPY', '2026-06-01 01:00 Asia/Tokyo')), '(0,t)',
          'member cap reached: 0, nothing posted');
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'fox', 'jpy-fox', 120, 'JPY', '2026-05-01 10:00 Asia/Tokyo')), 100::bigint,
          'caps are per member: another member earns 100');
SELECT is((SELECT array_agg((day, points)::text ORDER BY day NULLS LAST) FROM wallet.earning_counters c JOIN wallet.members m USING (member_id)
            WHERE m.member_ref = 'eve' AND c.rule_id = :r_cap)::text,
          '{"(2026-05-01,150)","(2026-05-02,100)","(,250)"}', 'the counters: 150 on 1 May, 100 on 2 May (local days), 250 in all');
SELECT is((SELECT sum(points) FROM wallet.purchases p JOIN wallet.members m USING (member_id) WHERE m.member_ref = 'eve' AND p.program_id = :p_jpy),
          250::numeric, 'eve''s purchases earned 250 in all');

-- ---------------------------------------------------------------- preview
SELECT is((SELECT (purchase_id IS NULL, entry_id IS NULL, points)::text FROM wallet.preview_purchase(:m, 'ann', 'cny-preview', 100, 'CNY', '2026-11-11 12:00+08')),
          '(t,t,280)', 'preview: 100 + 100 (双十一) + 30 (Gold bonus) + 50 (Gold x1.5 on 100) = 280, no purchase, no entry');
SELECT is((SELECT count(*) FROM wallet.purchases WHERE order_ref = 'cny-preview'), 0::bigint, 'preview records no purchase');
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'ann', 'cny-preview', 100, 'CNY', '2026-11-11 12:00+08')), 280::bigint,
          'record_purchase then earns exactly what the preview said');
SELECT is((SELECT (points, member_id IS NULL, account_id IS NULL)::text FROM wallet.preview_purchase(:m, 'newcomer', 'cny-new', 10, 'CNY', '2026-03-02 12:00+08')),
          '(60,t,t)', 'preview for an unknown member: first purchase 10 + 50, creating no member');
SELECT is((SELECT count(*) FROM wallet.members WHERE member_ref = 'newcomer'), 0::bigint, 'no member was created');
SELECT is((SELECT purchase_id FROM wallet.preview_purchase(:m, 'ann', 'cny-1', 99.90, 'CNY')),
          (SELECT purchase_id FROM wallet.purchases WHERE order_ref = 'cny-1'), 'preview of a recorded order: its recorded result');

-- ---------------------------------------------------------------- idempotency
SELECT is((SELECT (r.purchase_id, r.points, r.entry_id)::text FROM wallet.record_purchase(:m, 'ann', 'cny-1', 99.9, 'CNY', '2027-01-01') r),
          (SELECT (purchase_id, points, entry_id)::text FROM wallet.purchases WHERE order_ref = 'cny-1'),
          'a retry (other instant, 99.9 = 99.90) returns the first result');
SELECT is((SELECT count(*) FROM wallet.entries WHERE reference = 'cny-1'), 1::bigint, 'and posts nothing more');
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'ann', 'cny-1', 100, 'CNY')$$, :m), 'WL002', NULL, 'the same order with another amount: WL002');
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'ben', 'cny-1', 99.90, 'CNY')$$, :m), 'WL002', NULL, 'the same order for another member: WL002');
SELECT is((SELECT (program_id IS NULL, account_id IS NULL, points)::text FROM wallet.record_purchase(:m, 'ann', 'sek-1', 100, 'SEK')),
          '(t,t,0)', 'a currency no program earns in: the purchase is recorded, 0 points');

-- ---------------------------------------------------------------- refunds (GBP: within the balance)
SELECT wallet.create_earning_rule(:p_gbp, 'gbp base', 'per_unit', 1, valid_from => '2026-01-01') IS NOT NULL AS x \gset
SELECT wallet.record_purchase(:m, 'fay', 'gbp-1', 100, 'GBP', '2026-03-02 12:00+00') IS NOT NULL AS x \gset
SELECT wallet.find_account(:p_gbp, 'fay') AS a_fay \gset
SELECT is((SELECT points FROM wallet.record_refund(:m, 'gbp-1', 30, 'gbp-r1')), 30::bigint, 'partial refund of 30 of 100: 30 points back');
SELECT is((SELECT points FROM wallet.record_refund(:m, 'gbp-1', 33.33, 'gbp-r2')), 33::bigint, 'another of 33.33: floor(100 x 63.33 / 100) - 30 = 33');
SELECT is((SELECT (points, amount)::text FROM wallet.record_refund(:m, 'gbp-1', 30, 'gbp-r1')), '(30,30)', 'a retry of a refund returns its first result');
SELECT throws_ok(format($$SELECT wallet.record_refund(%s, 'gbp-1', 31, 'gbp-r1')$$, :m), 'WL002', NULL, 'the same refund_ref with another amount: WL002');
SELECT is(wallet.balance(:a_fay), 37::bigint, 'balance 100 - 30 - 33 = 37 (the retry took nothing)');
SELECT is((SELECT points FROM wallet.record_refund(:m, 'gbp-1', 36.67, 'gbp-r3')), 37::bigint, 'the rest of the order: exactly the 37 left of what it earned');
SELECT is((SELECT (refunded_amount, refunded_points)::text FROM wallet.purchases WHERE order_ref = 'gbp-1'), '(100.00,100)', 'the purchase is fully refunded, 100 points back');
SELECT throws_ok(format($$SELECT wallet.record_refund(%s, 'gbp-1', 0.01, 'gbp-r4')$$, :m), 'WL501', NULL, 'beyond the amount paid: WL501');
SELECT throws_ok(format($$SELECT wallet.record_refund(%s, 'gbp-nothing', 1, 'gbp-r5')$$, :m), 'WL500', NULL, 'an order never recorded: WL500');
-- spent points: within the balance, a refund takes back what is left
SELECT wallet.record_purchase(:m, 'fay', 'gbp-2', 100, 'GBP', '2026-03-02 12:00+00') IS NOT NULL AS x \gset
SELECT wallet.redeem(:a_fay, 80, 'fay-spend', 'reward') IS NOT NULL AS x \gset
SELECT is((SELECT points FROM wallet.record_refund(:m, 'gbp-2', 100, 'gbp-r6')), 20::bigint, 'full refund after 80 were spent: only the 20 left come back');
SELECT is((SELECT (wallet.balance(:a_fay), (wallet.ledger_totals(ledger)).debt)::text FROM wallet.accounts WHERE account_id = :a_fay), '(0,0)',
          'balance 0, no debt');
-- never more than the order earned, however much the member has
SELECT wallet.record_purchase(:m, 'fay', 'gbp-3', 10, 'GBP', '2026-03-02 12:00+00') IS NOT NULL AS x \gset
SELECT wallet.accrue(:a_fay, 1000, 'fay-gift', 'gift') IS NOT NULL AS x \gset
SELECT is((SELECT points FROM wallet.record_refund(:m, 'gbp-3', 10, 'gbp-r7')), 10::bigint, 'full refund of a 10-point order: 10, not more');
SELECT is(wallet.balance(:a_fay), 1000::bigint, 'the gift stays');
SELECT is((SELECT kind FROM wallet.entries e JOIN wallet.refunds r USING (entry_id) WHERE r.refund_ref = 'gbp-r7'), 'refund', 'posted as a refund entry');
SELECT throws_ok(format($$SELECT wallet.reverse((SELECT entry_id FROM wallet.purchases WHERE order_ref = 'gbp-3'), 'rev-gbp-3', 'chargeback')$$),
                 'WL210', NULL, 'a refunded accrual cannot be reversed on top: WL210');

-- ---------------------------------------------------------------- refunds (CHF: into debt)
SELECT wallet.create_earning_rule(:p_chf, 'chf base', 'per_unit', 2, valid_from => '2026-01-01') IS NOT NULL AS x \gset
SELECT wallet.record_purchase(:m, 'gia', 'chf-1', 50, 'CHF', '2026-03-02 12:00+00') IS NOT NULL AS x \gset
SELECT wallet.find_account(:p_chf, 'gia') AS a_gia \gset
SELECT wallet.redeem(:a_gia, 100, 'gia-spend', 'reward') IS NOT NULL AS x \gset
SELECT is((SELECT points FROM wallet.record_refund(:m, 'chf-1', 25, 'chf-r1')), 50::bigint, 'half refunded after everything was spent: 50 taken back');
SELECT is((SELECT (wallet.balance(:a_gia), (wallet.ledger_totals(ledger)).debt)::text FROM wallet.accounts WHERE account_id = :a_gia), '(-50,50)',
          'refund_debt: they become a debt of 50');
SELECT is((SELECT points FROM wallet.record_refund(:m, 'chf-1', 25, 'chf-r2')), 50::bigint, 'the other half: 50 more');
SELECT is((SELECT (refunded_points, points)::text FROM wallet.purchases WHERE order_ref = 'chf-1'), '(100,100)', 'never more than the 100 it earned');

SELECT is((SELECT count(*) FROM wallet.verify_ledger()), 0::bigint, 'every ledger replays from its journal, refund entries included');

-- ---------------------------------------------------------------- rule administration
SELECT throws_ok(format($$SELECT wallet.create_earning_rule(%s, 'bad', 'fixed', 1, '{"colour": "red"}')$$, :p_usd), '22023', NULL, 'unknown condition: 22023');
SELECT throws_ok(format($$SELECT wallet.create_earning_rule(%s, 'bad', 'multiplier', 1)$$, :p_usd), '22023', NULL, 'a multiplier of 1: 22023');
SELECT throws_ok(format($$SELECT wallet.create_earning_rule(%s, 'bad', 'fixed', 1.5)$$, :p_usd), '22023', NULL, 'fractional fixed points: 22023');
SELECT throws_ok(format($$SELECT wallet.create_earning_rule(%s, 'bad', 'fixed', 1, '{"days_of_week": [0]}')$$, :p_usd), '22023', NULL, 'day of week 0: 22023');
SELECT throws_ok(format($$SELECT wallet.create_earning_rule(%s, 'bad', 'fixed', 1, '{"time_from": "25:00", "time_until": "02:00"}')$$, :p_usd), '22023', NULL, 'hour 25: 22023');
SELECT throws_ok(format($$SELECT wallet.create_earning_rule(%s, 'bad', 'fixed', 1, '{"time_from": "22:00"}')$$, :p_usd), '22023', NULL, 'half a time window: 22023');
SELECT throws_ok(format($$SELECT wallet.create_earning_rule(%s, 'bad', 'fixed', 1, caps => '{"per_purchase": 0}')$$, :p_usd), '22023', NULL, 'a cap of 0: 22023');
SELECT throws_ok(format($$SELECT wallet.create_earning_rule(%s, 's_base', 'fixed', 1)$$, :p_usd), '23505', NULL, 'a rule name taken in the program: 23505');
SELECT throws_ok('SELECT wallet.update_earning_rule(999999999, value => 2)', 'WL502', NULL, 'unknown rule: WL502');

-- ---------------------------------------------------------------- arguments out of their domain
SELECT wallet.create_program(:m, 'sek points') AS p_sek \gset
SELECT throws_ok(format($$SELECT wallet.set_program_earning(%s, 'SEK', point_value => 'NaN')$$, :p_sek), '22023',
                 'point value must be finite and not negative', 'a NaN point value: 22023');
SELECT throws_ok(format($$SELECT wallet.set_program_earning(%s, 'SEK', point_value => 'Infinity')$$, :p_sek), '22023',
                 'point value must be finite and not negative', 'an infinite point value: 22023');
SELECT wallet.set_program_earning(:p_sek, 'SEK') IS NULL AS x \gset
SELECT throws_ok(format($$SELECT wallet.create_earning_rule(%s, 'forever', 'fixed', 1, valid_until => 'infinity')$$, :p_sek), '22023',
                 'valid_until must be finite', 'a rule valid until infinity: 22023 (NULL is open-ended)');
SELECT throws_ok(format($$SELECT wallet.create_earning_rule(%s, 'rank', 'fixed', 1, '{"min_tier_rank": 3000000000}')$$, :p_sek), '22023',
                 'min_tier_rank must be a tier rank', 'a min_tier_rank beyond int: 22023, not 22003');
-- points beyond bigint: WL205 in the preview, the full path (a new member) and the C fast path (a member with an account)
SELECT wallet.create_earning_rule(:p_sek, 'bigunit', 'per_unit', 1000000, valid_from => '2026-01-01') IS NOT NULL AS x \gset
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'ivy', 'sek-ivy-1', 1, 'SEK', '2026-03-02 12:00+00')), 1000000::bigint,
          'a million points per krona: 1 SEK earns 1000000');
SELECT throws_ok(format($$SELECT wallet.preview_purchase(%s, 'ivy', 'sek-big', 999999999999999, 'SEK', '2026-03-02 12:00+00')$$, :m),
                 'WL205', 'points out of range', 'preview_purchase of points beyond bigint: WL205, not 22003');
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'ivy', 'sek-big', 999999999999999, 'SEK', '2026-03-02 12:00+00')$$, :m),
                 'WL205', 'points out of range', 'record_purchase (fast path) of points beyond bigint: WL205');
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'jon', 'sek-big', 999999999999999, 'SEK', '2026-03-02 12:00+00')$$, :m),
                 'WL205', 'points out of range', 'record_purchase (full path, a new member) of points beyond bigint: WL205');
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'ivy', 'sek-big', 999999999999999, 'SEK', '2026-03-02 12:00+00', offers => '{}')$$, :m),
                 'WL205', 'points out of range', 'record_purchase (full path, offers) of points beyond bigint: WL205');
SELECT is((SELECT count(*) FROM wallet.purchases WHERE order_ref = 'sek-big'), 0::bigint, 'nothing of the refused purchases is stored');
SELECT is(wallet.balance(wallet.find_account(:p_sek, 'ivy')), 1000000::bigint, 'ivy''s balance is untouched');
-- a refund of NaN is out of domain, as a purchase of NaN
SELECT throws_ok(format($$SELECT wallet.record_refund(%s, 'sek-ivy-1', 'NaN', 'sek-r1')$$, :m), '22023', 'invalid refund amount',
                 'a refund of NaN: 22023, not WL501');
SELECT throws_ok(format($$SELECT wallet.record_refund(%s, 'sek-ivy-1', 'Infinity', 'sek-r1')$$, :m), '22023', 'invalid refund amount',
                 'an infinite refund: 22023');
-- the bound is 10^15 inclusive, as the detail says
SELECT is(error_of(format($$SELECT wallet.record_purchase(%s, 'ivy', 'sek-huge', 1e15 + 0.01, 'SEK')$$, :m)),
          '22023 invalid purchase amount / A purchase amount is positive and at most 10^15.',
          'a purchase over 10^15: 22023, its detail naming the bound (10^15 itself is a purchase)');
SELECT is(error_of(format($$SELECT wallet.record_refund(%s, 'sek-ivy-1', 1e15 + 0.01, 'sek-r1')$$, :m)),
          '22023 invalid refund amount / A refund amount is positive and at most 10^15.',
          'a refund over 10^15: 22023, its detail naming the bound');
-- the codes of a checkout, like every text argument
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'ivy', 'sek-c1', 1, 'SEK', codes => ARRAY[NULL]::text[])$$, :m), '22004',
                 'codes must not contain null', 'record_purchase: a NULL code is 22004');
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'ivy', 'sek-c1', 1, 'SEK', codes => ARRAY[''])$$, :m), '22023',
                 'codes must not contain a blank code or one longer than 256 characters', 'record_purchase: a blank code is 22023');
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'ivy', 'sek-c1', 1, 'SEK', codes => ARRAY[repeat('x', 300)])$$, :m), '22023',
                 'codes must not contain a blank code or one longer than 256 characters', 'record_purchase: a code of 300 characters is 22023');
-- a 2-D array is refused, not flattened
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'ivy', 'sek-c1', 1, 'SEK', codes => ARRAY[['a'], ['b']])$$, :m), '22023',
                 'codes must be a one-dimensional array', 'record_purchase: a 2-D array of codes is 22023');
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'ivy', 'sek-c1', 1, 'SEK', offers => ARRAY[[1], [2]]::bigint[])$$, :m), '22023',
                 'offers must be a one-dimensional array', 'record_purchase: a 2-D array of offers is 22023');
-- occurred_at within 100 years of now: the local time in the member's zone
-- stays a timestamp (was a raw 22008 from timestamptz_zone)
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'eve', 'jpy-end', 10, 'JPY', '294276-12-31 23:00:00+00')$$, :m), '22023',
                 'occurred_at must be within 100 years of now', 'record_purchase (fast path): an occurred_at at the end of the range in Asia/Tokyo is 22023, not 22008');
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'dee', 'eur-start', 10, 'EUR', '4714-11-24 00:30:00+00 BC')$$, :m), '22023',
                 'occurred_at must be within 100 years of now', 'record_purchase: an occurred_at at the start of the range in America/New_York is 22023, not 22008');
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'eve', 'jpy-end', 10, 'JPY', '294276-12-31 23:00:00+00', offers => '{}')$$, :m), '22023',
                 'occurred_at must be within 100 years of now', 'record_purchase (full path): the same, 22023');
SELECT throws_ok(format($$SELECT wallet.preview_purchase(%s, 'eve', 'jpy-end', 10, 'JPY', '294276-12-31 23:00:00+00')$$, :m), '22023',
                 'occurred_at must be within 100 years of now', 'preview_purchase: the same, 22023');
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'eve', 'jpy-far', 10, 'JPY', now() + interval '101 years')$$, :m), '22023',
                 'occurred_at must be within 100 years of now', 'record_purchase: an occurred_at 101 years ahead is 22023');
SELECT throws_ok(format($$SELECT wallet.record_purchase(%s, 'eve', 'jpy-far', 10, 'JPY', now() - interval '101 years')$$, :m), '22023',
                 'occurred_at must be within 100 years of now', 'record_purchase: an occurred_at 101 years ago is 22023');
SELECT is((SELECT count(*) FROM wallet.purchases WHERE order_ref IN ('jpy-end', 'eur-start', 'jpy-far')), 0::bigint, 'nothing of them is stored');
SELECT is((SELECT points FROM wallet.record_purchase(:m, 'fox', 'jpy-old', 120, 'JPY', now() - interval '99 years')), 0::bigint,
          'record_purchase: an occurred_at 99 years ago is recorded (no rule was valid then: 0 points)');

-- ---------------------------------------------------------------- erasure
SELECT wallet.record_purchase(:m, 'hal', 'cny-hal', 10, 'CNY', '2026-03-02 12:00+08',
                              '{"store": "s1", "channel": "app", "payment_method": "card", "categories": ["food"], "email": "hal@example.com", "phone": "123"}') IS NOT NULL AS x \gset
SELECT ok(wallet.forget_member(:m, 'hal', 'request'), 'forget_member erases a member with purchases');
SELECT is((SELECT (attributes, amount, points)::text FROM wallet.purchases WHERE order_ref = 'cny-hal'),
          '("{""store"": ""s1"", ""channel"": ""app"", ""categories"": [""food""], ""payment_method"": ""card""}",10,60)',
          'the purchase keeps its amount, points, store, channel, payment method and categories; the rest of its attributes is gone');

SELECT * FROM finish();
ROLLBACK;

-- examples/demo.sql: a short walkthrough of what wallet does, run by make run.
\pset footer off
\set QUIET on

\echo '== wallet: digital-wallet marketing inside PostgreSQL'
CREATE EXTENSION wallet;
\echo 'Installed. Which build is this?'
SELECT wallet.version();

\echo
\echo '== Merchants own everything else (campaigns, points programs).'
SELECT wallet.create_merchant('Demo Coffee') AS merchant_id;
SELECT merchant_id, name FROM wallet.merchants;

\echo
\echo '== Marketing codes: HMAC-signed, checked offline, minted by the million.'
SELECT wallet.create_campaign(1, 'Spring coupons', prefix => 'CAFE', max_redemptions_per_code => 1) AS campaign_id \gset
\echo 'Five codes of the campaign (nothing is stored per code):'
SELECT code FROM wallet.generate_codes(:campaign_id, 5) AS code;
\echo 'A million more, counted but not printed:'
SELECT count(*) AS minted FROM wallet.generate_codes(:campaign_id, 1000000);
SELECT code::text AS good FROM wallet.generate_codes(:campaign_id, 1) AS code \gset
\echo 'Each code carries its campaign, serial and key version; the MAC proves it is genuine:'
SELECT wallet.code_campaign(:'good') AS campaign, wallet.code_serial(:'good') AS serial,
       wallet.code_key_version(:'good') AS key_version, wallet.code_authentic(:'good') AS authentic;
\echo 'A typed-in code with one wrong symbol is caught by the check symbols (the last two):'
SELECT input, (wallet.parse_code(input)).status
  FROM (VALUES (:'good'), (lower(:'good')), (replace(:'good', '-', ' ')),
               (overlay(:'good' placing CASE WHEN substr(:'good', 8, 1) = '7' THEN '8' ELSE '7' END from 8 for 1))) AS t(input);
\echo 'A forger who changes that symbol and tries all 1,024 pairs of check symbols:'
\echo 'the check sum and the structure stop most pairs, the MAC the rest.'
SELECT status, count(*) AS pairs
  FROM (SELECT left(replace(overlay(:'good' placing CASE WHEN substr(:'good', 8, 1) = '7' THEN '8' ELSE '7' END from 8 for 1), '-', ''), -2)
               || c1 || c0 AS input
          FROM regexp_split_to_table('0123456789ABCDEFGHJKMNPQRSTVWXYZ', '') AS c1,
               regexp_split_to_table('0123456789ABCDEFGHJKMNPQRSTVWXYZ', '') AS c0) AS t,
       LATERAL wallet.parse_code(input) AS p
 GROUP BY status ORDER BY status DESC;

\echo
\echo '== Redemption: each code as often as the campaign allows, however many checkouts race.'
SELECT wallet.issue_code(:campaign_id, 'member-42')::text AS mine \gset
\echo 'A code issued to member-42. Another member cannot use it; member-42 can, once:'
SELECT wallet.check_code(:'mine', 'member-7') AS for_member_7, wallet.check_code(:'mine', 'member-42') AS for_member_42;
SELECT status, redemption_id, replayed FROM wallet.redeem_code(:'mine', 'member-42', 'pos-1/txn-1');
\echo 'The point-of-sale retries after a timeout (same idempotency key): the first result, nothing recorded again.'
SELECT status, redemption_id, replayed FROM wallet.redeem_code(:'mine', 'member-42', 'pos-1/txn-1');
\echo 'A second purchase tries the same single-use code:'
SELECT status FROM wallet.redeem_code(:'mine', 'member-42', 'pos-1/txn-2');
\echo 'Someone guessing codes from one device is throttled after 10 failures:'
WITH attempts AS MATERIALIZED (
    SELECT n, (wallet.redeem_code('CAFE-0000-0000-' || lpad(n::text, 4, '0'), 'member-99', 'guess-' || n,
                                  '{"source": "device-abc"}')).status
      FROM generate_series(1, 12) AS n)
SELECT n AS attempt, status FROM attempts WHERE n IN (1, 10, 11, 12);

\echo
\echo '== Points ledger: a program whose points expire 12 months after earning (end of month).'
SELECT wallet.create_program(1, 'Demo Rewards', interval '12 months', 'month') AS program_id \gset
SELECT wallet.open_account(:program_id, 'member-42') AS account_id \gset
\echo 'Member member-42 pays twice and earns points; a retry of the first payment posts nothing.'
SELECT kind, amount, balance_after FROM wallet.accrue(:account_id, 120, 'order-1001', 'purchase', 'order-1001');
SELECT kind, amount, balance_after FROM wallet.accrue(:account_id, 80, 'order-1002', 'purchase', 'order-1002');
SELECT kind, amount, balance_after FROM wallet.accrue(:account_id, 120, 'order-1001', 'purchase', 'order-1001');
\echo 'Checkout holds 50 points while the card payment completes, then captures 30 of them.'
SELECT entry_id AS hold_id FROM wallet.hold(:account_id, 50, 'checkout-7', interval '15 minutes', 'checkout', 'order-1003') \gset
SELECT kind, amount, balance_after FROM wallet.capture(:hold_id, 30);
\echo 'The journal explains every balance:'
SELECT entry_id, kind, amount, balance_after, reference FROM wallet.history(:account_id);
SELECT wallet.balance(:account_id) AS balance;
\echo 'Finance: outstanding points by expiry month, and a replay of every ledger (no rows = all consistent).'
SELECT * FROM wallet.program_liability(:program_id);
SELECT * FROM wallet.verify_ledger();

\echo
\echo '== Purchases and earning rules: 1 point per yuan, double points on 双十一 in Shanghai, 50 for a first purchase.'
SELECT wallet.set_program_earning(:program_id, 'CNY') IS NULL AS set \gset
SELECT wallet.create_earning_rule(:program_id, 'base', 'per_unit', 1, valid_from => '2026-01-01') AS rule_base \gset
SELECT wallet.create_earning_rule(:program_id, '双十一', 'multiplier', 2, '{"categories": ["food"]}',
       valid_from => '2026-11-11 00:00+08', valid_until => '2026-11-12 00:00+08') AS rule_1111 \gset
SELECT wallet.create_earning_rule(:program_id, 'welcome', 'fixed', 50, '{"first_purchase": true}', valid_from => '2026-01-01') AS rule_welcome \gset
SELECT member_id FROM wallet.upsert_member(1, 'member-88', 'Asia/Shanghai') \gset
\echo 'The app shows what a basket will earn, then records the purchase at checkout (11 November, 10:02 in Shanghai):'
SELECT points AS you_will_earn FROM wallet.preview_purchase(1, 'member-88', 'T1111-001', 120.50, 'CNY', '2026-11-11 10:02+08',
                                                            '{"categories": ["food"]}');
SELECT points, jsonb_pretty(rules) AS why FROM wallet.record_purchase(1, 'member-88', 'T1111-001', 120.50, 'CNY', '2026-11-11 10:02+08',
                                                                       '{"store": "SH-01", "channel": "app", "categories": ["food"]}');
\echo 'The same basket a day later earns single points:'
SELECT points FROM wallet.record_purchase(1, 'member-88', 'T1112-001', 120.50, 'CNY', '2026-11-12 10:02+08', '{"categories": ["food"]}');
\echo 'Half of the first order is refunded: half its points come back.'
SELECT amount, points FROM wallet.record_refund(1, 'T1111-001', 60.25, 'R-1');
SELECT wallet.balance(wallet.find_account(:program_id, 'member-88')) AS balance;
\echo '== Campaign analytics: a Double 11 campaign for everyone with 20% held out, measured against the control group.'
\echo 'Its offer: 10% off (at most 15 CNY) on baskets of 30 or more, from a discount budget of 1,500 CNY, in part when it runs low.'
SELECT wallet.create_campaign(1, 'Double 11', starts_at => '2025-11-01', ends_at => '2025-11-12') AS d11 \gset
SELECT setseed(0.11) \gset
INSERT INTO wallet.members (merchant_id, member_ref) SELECT 1, 'shopper-' || g FROM generate_series(1, 500) g
    ON CONFLICT DO NOTHING;
SELECT wallet.set_campaign_audience(:d11, 'everyone', 20) AS audience;
SELECT total, remaining FROM wallet.set_campaign_budget(:d11, 'money', 150000);   -- 1,500.00 CNY in hundredths
SELECT wallet.create_offer(:d11, '10% off', 'percent', 10, 'CNY', max_value => 15, conditions => '{"min_amount": 30}',
                           allow_partial => true, valid_from => '2025-11-01') AS d11_offer \gset
\echo 'A checkout quotes a basket of 120 CNY (no row when shopper-1 is in the control group), holds it for 10 minutes, then is abandoned:'
SELECT name, status, discount FROM wallet.quote_offers(1, 'shopper-1', 120, 'CNY', '2025-11-05 12:00+08', hold_ttl => interval '10 minutes');
SELECT wallet.release_quote(max(quote_id)) AS quote_released FROM wallet.offer_quotes WHERE merchant_id = 1;
-- checkouts through record_purchase, each naming the offer: target members
-- spend a little more during the campaign; the control group never gets the offer
CREATE TEMP TABLE d11_baskets AS
SELECT m.member_ref, 'd11-' || m.member_id || '-' || g AS order_ref,
       round((20 + random() * 80 * CASE WHEN wallet.campaign_group(:d11, m.member_ref) = 'target' AND d BETWEEN 11 AND 21 THEN 1.3 ELSE 1 END)::numeric, 2) AS amount,
       timestamptz '2025-10-21' + d * interval '1 day' AS at
  FROM wallet.members m, generate_series(1, 4) g, LATERAL (SELECT floor(random() * 33)::int + 0 * g AS d) x
 WHERE m.merchant_id = 1 AND m.member_ref LIKE 'shopper-%' AND random() < 0.5;
SELECT count(wallet.record_purchase(1, b.member_ref, b.order_ref, b.amount, 'CNY', b.at, '{}', offers => ARRAY[:d11_offer]::bigint[])) AS checkouts
  FROM (SELECT * FROM d11_baskets ORDER BY at, order_ref) b;
SELECT status, count(*), sum(discount) AS discounts FROM wallet.purchase_offers WHERE offer_id = :d11_offer GROUP BY status ORDER BY status;
SELECT unit, total, granted, held, remaining FROM wallet.campaign_budget(:d11);
SELECT wallet.campaign_group(:d11, 'shopper-1') AS shopper_1, wallet.campaign_group(:d11, 'shopper-2') AS shopper_2;
SELECT wallet.record_feedback(:d11, 'shopper-3', 5, 'praise', 'great deals') AS feedback_id;
\x on
SELECT target_members, control_members, target_arpu_before, target_arpu, control_arpu, arpu_lift, lift_percent,
       lift_ci_low, lift_ci_high, incremental_sales, target_repeat_rate, target_retention, participants, other_cost, cost, roi
  FROM wallet.campaign_report(:d11);
\x off
SELECT grp, cohort, members, month_offset, retention FROM wallet.campaign_cohorts(:d11, months => 1);
SELECT segment, count(*) FROM wallet.rfm(1, '2025-12-01') GROUP BY segment ORDER BY count(*) DESC;
\echo '== Referrals and sharing: bring a friend, 500 points for the referrer, 200 for the friend.'
SELECT wallet.create_campaign(1, 'Bring a friend') AS referral_campaign \gset
SELECT campaign_id FROM wallet.set_referral_program(:referral_campaign, :program_id, 500, 200, 30,
       min_amount => 50, currency => 'CNY', max_per_referrer => 10, cap_period => 'month');
SELECT campaign_id FROM wallet.set_share_reward(:referral_campaign, :program_id, 20, max_per_member => 5, max_per_day => 1);
\echo 'member-42 refers member-77; member-77 is referred again by someone else, and member-42 tries to refer itself:'
SELECT status, reason FROM wallet.refer(1, 'member-42', 'member-77', 'wechat', :referral_campaign, 'dev:42aa', 'dev:77bb');
SELECT status, reason FROM wallet.refer(1, 'member-13', 'member-77', 'link', :referral_campaign);
SELECT status, reason FROM wallet.refer(1, 'member-42', 'member-42', 'link', :referral_campaign);
\echo 'member-77 pays 80 CNY at checkout (the purchase row record_purchase writes): both get their reward, once.'
INSERT INTO wallet.purchases (merchant_id, member_id, order_ref, amount, currency, occurred_at)
SELECT 1, member_id, 'order-2001', 80, 'CNY', now() FROM wallet.members WHERE merchant_id = 1 AND member_ref = 'member-77';
SELECT status, referrer_points, referee_points FROM wallet.referrals WHERE status = 'rewarded';
SELECT wallet.balance(wallet.find_account(:program_id, 'member-77')) AS member_77_points;
\echo 'member-42 shares the campaign twice today: the second share is capped.'
SELECT status, reason, points FROM wallet.record_share(1, 'member-42', :referral_campaign, 'weibo', 'share-1');
SELECT status, reason, points FROM wallet.record_share(1, 'member-42', :referral_campaign, 'weibo', 'share-2');
\echo '== Tiers: Silver at 150 points earned in a rolling 12 months, Gold at 1,000.'
SELECT wallet.create_tier(:program_id, 1, 'Silver', 150) IS NOT NULL AS silver,
       wallet.create_tier(:program_id, 2, 'Gold', 1000, multiplier => 1.5, benefits => '{"lounge": true}') IS NOT NULL AS gold;
\echo 'member-42 earned 200 before the tiers existed: the evaluation (run_maintenance) finds the missed upgrade.'
SELECT looked_at, upgraded FROM wallet.evaluate_tiers(:program_id);
SELECT rank, name FROM wallet.member_tier(:account_id, clock_timestamp());
\echo 'Two large orders: the second crosses 1,000 and moves the member up to Gold in its own transaction.'
SELECT kind, amount FROM wallet.accrue(:account_id, 500, 'order-1004', 'purchase', 'order-1004');
SELECT kind, amount FROM wallet.accrue(:account_id, 400, 'order-1005', 'purchase', 'order-1005');
SELECT from_rank, to_rank, reason, entry_id FROM wallet.tier_history WHERE account_id = :account_id ORDER BY change_id;
SELECT kind, attributes->>'reason' AS reason, attributes->>'to_rank' AS to_rank FROM wallet.member_events
 WHERE kind = 'tier_changed' ORDER BY event_id;
\echo 'Where member-42 stands: points earned in the window, and what keeps Gold (grace of 30 days).'
SELECT tier_name, earned, next_tier_name, keep_points, keep_by FROM wallet.tier_progress(:account_id);

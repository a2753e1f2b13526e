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

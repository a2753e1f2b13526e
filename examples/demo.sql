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

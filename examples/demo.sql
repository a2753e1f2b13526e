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

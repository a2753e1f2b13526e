-- wallet 0.1.0 -> 0.2.0 upgrade script.
--
-- Every change that 0.2.0 makes to the install script's parts (sql/ext/*.sql)
-- is made here too, so that ALTER EXTENSION wallet UPDATE leaves a database
-- equal to a fresh CREATE EXTENSION wallet (test/concurrency/upgrade.t proves
-- it: same objects, same definitions, comments and privileges).  New columns
-- go at the end of their table in the parts as well, since ALTER TABLE ADD
-- COLUMN can put them nowhere else.
--
-- One section per area, in dependency order; each section changes only what
-- its area owns.
\echo Use "ALTER EXTENSION wallet UPDATE TO '0.2.0'" to load this file. \quit

-- == 1. search_path pinned on every function (security review, issue 7)

-- == 2. brute-force guard and redemption (issue 7)

-- == 3. code keys bound to the installation; campaigns never deleted (issue 7)

-- == 4. points_ledger values (issue 7)
-- C only (src/points_ledger.c, src/ledger_ops.c): no SQL definition changes.

-- == 5. groundwork (issue 8)

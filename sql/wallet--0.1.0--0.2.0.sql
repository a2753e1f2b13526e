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
-- 0.1.0 left search_path unpinned on these SQL and PL/pgSQL functions: an
-- unqualified name in them (nextval, =, ...) resolved through the caller's
-- search_path, so a function or operator planted in public or another schema
-- the caller searches first ran with the caller's privileges.  Only the pin
-- changes; their bodies are those of 0.1.0.
ALTER FUNCTION wallet.code_guard_thresholds(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.code_guard_throttled(bigint, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.code_check_args(text, text, jsonb, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.code_precheck(text, text, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.code_lock_counters(bigint, bigint, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.code_bump_counters(bigint, bigint, text, int, boolean, boolean, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.code_caps_recount() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.code_caps_status(bigint, bigint, text, int, int, bigint, bigint, bigint, bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.code_same_input(wallet.marketing_code, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.code_key_mismatch(text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.check_code(text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.check_code(wallet.marketing_code, text, jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.redeem_code(wallet.marketing_code, text, text, jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.reserve_code(wallet.marketing_code, text, text, interval, jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.policy_expiry(timestamptz, interval, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.check_posting(bigint, text, text, text, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.key_mismatch(wallet.entries) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.unknown_account(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.program_closed(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.entry_step(wallet.points_ledger, wallet.entries) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.post_entry(wallet.points_ledger, wallet.entries) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.settle_account(bigint, timestamptz, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.lock_account(bigint, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.post_once(wallet.locked_account, boolean, wallet.entries, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.create_program(bigint, text, interval, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.close_program(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.open_account(bigint, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.accrue(bigint, bigint, text, text, text, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.redeem(bigint, bigint, text, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.hold(bigint, bigint, text, interval, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.lock_hold(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.hold_not_open(bigint, wallet.entries) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.capture(bigint, bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.release(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.reverse(bigint, text, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.adjust(bigint, bigint, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.expire_points(timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.balance(bigint, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.replay_ledger(bigint, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.balance_at(bigint, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.history(bigint, timestamptz, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.program_liability(bigint, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.verify_ledger(bigint) SET search_path = pg_catalog, pg_temp;

-- == 2. brute-force guard and redemption (issue 7)

-- == 3. code keys bound to the installation; campaigns never deleted (issue 7)

-- == 4. points_ledger values (issue 7)

-- == 5. groundwork (issue 8)

-- pgTAP: one error vocabulary (issue 8).  The same fault raises the same
-- SQLSTATE in every function: a NULL required argument 22004, a blank or
-- oversized text 22023, an id naming no object the WL code of that object.
-- Functions of a value (accessors, operators, the ledger_* readers) take a
-- NULL through as NULL, as SQL's own scalar functions do (README "Errors").
--
-- The table pg_temp.vocab holds one row per expectation.  Every function of
-- the extension (but type I/O and trigger functions) must have a row, so a
-- function added later fails this file until its expectations are written
-- down; a STRICT function must be declared a value function (expect 'null').
BEGIN;
SET LOCAL timezone = 'UTC';

-- Fixtures: one object of every kind, by name, for the {name} placeholders.
CREATE TEMP TABLE fx (k text PRIMARY KEY, v text NOT NULL);
INSERT INTO fx VALUES ('m', wallet.create_merchant('vocab merchant'));
INSERT INTO fx SELECT 'c', wallet.create_campaign((SELECT v::bigint FROM fx WHERE k = 'm'), 'vocab', max_redemptions_per_code => NULL);
INSERT INTO fx SELECT 'code' || row_number() OVER (), g::text
  FROM wallet.generate_codes((SELECT v::bigint FROM fx WHERE k = 'c'), 3) g;
INSERT INTO fx SELECT 'r', redemption_id FROM wallet.redeem_code((SELECT v FROM fx WHERE k = 'code1'), 'vocab member', 'vocab-r1');
INSERT INTO fx SELECT 'v', reservation_id FROM wallet.reserve_code((SELECT v FROM fx WHERE k = 'code2'), 'vocab member', 'vocab-v1', interval '1 hour');
INSERT INTO fx SELECT 'p', wallet.create_program((SELECT v::bigint FROM fx WHERE k = 'm'), 'vocab program', interval '1 year');
INSERT INTO fx SELECT 'a', wallet.open_account((SELECT v::bigint FROM fx WHERE k = 'p'), 'vocab member');
INSERT INTO fx SELECT 'e', entry_id FROM wallet.accrue((SELECT v::bigint FROM fx WHERE k = 'a'), 100, 'vocab-k1', 'welcome');
INSERT INTO fx SELECT 'h', entry_id FROM wallet.hold((SELECT v::bigint FROM fx WHERE k = 'a'), 10, 'vocab-h1', interval '1 hour', 'cart');
INSERT INTO fx SELECT 'rule', wallet.create_earning_rule((SELECT v::bigint FROM fx WHERE k = 'p'), 'vocab rule', 'fixed', 1);
INSERT INTO fx VALUES ('unknown', '999999999'), ('long', repeat('x', 257));

CREATE FUNCTION pg_temp.sub(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT * FROM fx ORDER BY length(k) DESC LOOP
        sql := replace(sql, '{' || f.k || '}', f.v);
    END LOOP;
    RETURN sql;
END
$$;
-- Whether a query's one value is NULL (no row counts as NULL).
CREATE FUNCTION pg_temp.yields_null(sql text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    r boolean;
BEGIN
    EXECUTE format('SELECT (%s) IS NULL', sql) INTO r;
    RETURN r;
END
$$;

-- expect: a SQLSTATE the call must raise; 'null': the call returns NULL (a
-- function of a value); 'internal': a helper of the extension's own
-- functions, checked through them; 'no arguments'.
CREATE TEMP TABLE vocab (n serial, fn text NOT NULL, what text NOT NULL, expect text NOT NULL, call text);
INSERT INTO vocab (fn, what, expect, call) VALUES
-- core
('wallet.version()', '-', 'no arguments', NULL),
('wallet.create_merchant(text)', 'name NULL', '22004', 'SELECT wallet.create_merchant(NULL)'),
('wallet.create_merchant(text)', 'name blank', '22023', $$SELECT wallet.create_merchant('  ')$$),
-- roles and merchants (issue 9)
('wallet.acts_for(bigint)', 'merchant_id NULL', 'null', 'SELECT wallet.acts_for(NULL)'),
('wallet.my_merchants()', '-', 'no arguments', NULL),
('wallet.grant_merchant(bigint,regrole)', 'merchant_id NULL', '22004', $$SELECT wallet.grant_merchant(NULL, 'wallet_app')$$),
('wallet.grant_merchant(bigint,regrole)', 'role NULL', '22004', 'SELECT wallet.grant_merchant({m}, NULL)'),
('wallet.grant_merchant(bigint,regrole)', 'unknown merchant', 'WL102', $$SELECT wallet.grant_merchant({unknown}, 'wallet_app')$$),
('wallet.revoke_merchant(bigint,regrole)', 'merchant_id NULL', '22004', $$SELECT wallet.revoke_merchant(NULL, 'wallet_app')$$),
('wallet.revoke_merchant(bigint,regrole)', 'role NULL', '22004', 'SELECT wallet.revoke_merchant({m}, NULL)'),
('wallet.revoke_merchant(bigint,regrole)', 'unknown merchant', 'WL102', $$SELECT wallet.revoke_merchant({unknown}, 'wallet_app')$$),
('wallet_internal.caller()', '-', 'no arguments', NULL),
('wallet_internal.check_merchant(bigint)', '-', 'internal', NULL),
('wallet_internal.sees_program(bigint)', '-', 'internal', NULL),
('wallet_internal.sees_account(bigint)', '-', 'internal', NULL),
('wallet_internal.sees_campaign(bigint)', '-', 'internal', NULL),
('wallet_internal.code_merchant(text)', '-', 'internal', NULL),
('wallet_internal.key_scope(bigint,bigint)', '-', 'internal', NULL),
-- marketing codes: values
('wallet.marketing_code_eq(wallet.marketing_code,wallet.marketing_code)', 'NULL operand', 'null', $$SELECT wallet.marketing_code_eq(NULL, '{code1}')$$),
('wallet.marketing_code_ne(wallet.marketing_code,wallet.marketing_code)', 'NULL operand', 'null', $$SELECT wallet.marketing_code_ne(NULL, '{code1}')$$),
('wallet.marketing_code_lt(wallet.marketing_code,wallet.marketing_code)', 'NULL operand', 'null', $$SELECT wallet.marketing_code_lt(NULL, '{code1}')$$),
('wallet.marketing_code_le(wallet.marketing_code,wallet.marketing_code)', 'NULL operand', 'null', $$SELECT wallet.marketing_code_le(NULL, '{code1}')$$),
('wallet.marketing_code_gt(wallet.marketing_code,wallet.marketing_code)', 'NULL operand', 'null', $$SELECT wallet.marketing_code_gt(NULL, '{code1}')$$),
('wallet.marketing_code_ge(wallet.marketing_code,wallet.marketing_code)', 'NULL operand', 'null', $$SELECT wallet.marketing_code_ge(NULL, '{code1}')$$),
('wallet.marketing_code_cmp(wallet.marketing_code,wallet.marketing_code)', 'NULL operand', 'null', $$SELECT wallet.marketing_code_cmp(NULL, '{code1}')$$),
('wallet.marketing_code_sortsupport(internal)', '-', 'internal', NULL),
('wallet.marketing_code_hash(wallet.marketing_code)', 'NULL code', 'null', 'SELECT wallet.marketing_code_hash(NULL)'),
('wallet.marketing_code_hash_extended(wallet.marketing_code,bigint)', 'NULL code', 'null', 'SELECT wallet.marketing_code_hash_extended(NULL, 0)'),
('wallet.code_campaign(wallet.marketing_code)', 'NULL code', 'null', 'SELECT wallet.code_campaign(NULL)'),
('wallet.code_serial(wallet.marketing_code)', 'NULL code', 'null', 'SELECT wallet.code_serial(NULL)'),
('wallet.code_key_version(wallet.marketing_code)', 'NULL code', 'null', 'SELECT wallet.code_key_version(NULL)'),
('wallet.code_mac_bits(wallet.marketing_code)', 'NULL code', 'null', 'SELECT wallet.code_mac_bits(NULL)'),
('wallet.code_prefix(wallet.marketing_code)', 'NULL code', 'null', 'SELECT wallet.code_prefix(NULL)'),
('wallet.code_authentic(wallet.marketing_code)', 'NULL code', 'null', 'SELECT wallet.code_authentic(NULL)'),
('wallet.code_status(wallet.marketing_code)', 'NULL code', 'null', 'SELECT wallet.code_status(NULL)'),
-- marketing codes: campaigns and keys
('wallet.installation_id()', '-', 'no arguments', NULL),
('wallet.campaign_next_serial(bigint)', 'campaign_id NULL', '22004', 'SELECT wallet.campaign_next_serial(NULL)'),
('wallet.campaign_next_serial(bigint)', 'unknown campaign', 'WL101', 'SELECT wallet.campaign_next_serial({unknown})'),
('wallet.create_campaign(bigint,text,text,integer,timestamp with time zone,timestamp with time zone,integer,integer,bigint)', 'merchant_id NULL', '22004', $$SELECT wallet.create_campaign(NULL, 'x')$$),
('wallet.create_campaign(bigint,text,text,integer,timestamp with time zone,timestamp with time zone,integer,integer,bigint)', 'name NULL', '22004', 'SELECT wallet.create_campaign({m}, NULL)'),
('wallet.create_campaign(bigint,text,text,integer,timestamp with time zone,timestamp with time zone,integer,integer,bigint)', 'name blank', '22023', $$SELECT wallet.create_campaign({m}, ' ')$$),
('wallet.create_campaign(bigint,text,text,integer,timestamp with time zone,timestamp with time zone,integer,integer,bigint)', 'prefix blank', '22023', $$SELECT wallet.create_campaign({m}, 'x', '')$$),
('wallet.create_campaign(bigint,text,text,integer,timestamp with time zone,timestamp with time zone,integer,integer,bigint)', 'prefix oversized', '22023', $$SELECT wallet.create_campaign({m}, 'x', 'ABCDEFGHI')$$),
('wallet.create_campaign(bigint,text,text,integer,timestamp with time zone,timestamp with time zone,integer,integer,bigint)', 'mac_bits NULL', '22004', $$SELECT wallet.create_campaign({m}, 'x', mac_bits => NULL)$$),
('wallet.create_campaign(bigint,text,text,integer,timestamp with time zone,timestamp with time zone,integer,integer,bigint)', 'starts_at NULL', '22004', $$SELECT wallet.create_campaign({m}, 'x', starts_at => NULL)$$),
('wallet.create_campaign(bigint,text,text,integer,timestamp with time zone,timestamp with time zone,integer,integer,bigint)', 'unknown merchant', 'WL102', $$SELECT wallet.create_campaign({unknown}, 'x')$$),
('wallet.rotate_code_key(bigint)', 'campaign_id NULL', '22004', 'SELECT wallet.rotate_code_key(NULL)'),
('wallet.rotate_code_key(bigint)', 'unknown campaign', 'WL101', 'SELECT wallet.rotate_code_key({unknown})'),
('wallet.retire_code_key(bigint,integer)', 'campaign_id NULL', '22004', 'SELECT wallet.retire_code_key(NULL, 1)'),
('wallet.retire_code_key(bigint,integer)', 'key_version NULL', '22004', 'SELECT wallet.retire_code_key({c}, NULL)'),
('wallet.retire_code_key(bigint,integer)', 'unknown campaign', 'WL101', 'SELECT wallet.retire_code_key({unknown}, 1)'),
('wallet.retire_code_key(bigint,integer)', 'unknown key version', 'WL103', 'SELECT wallet.retire_code_key({c}, 77)'),
('wallet.generate_codes(bigint,integer)', 'campaign_id NULL', '22004', 'SELECT wallet.generate_codes(NULL, 1)'),
('wallet.generate_codes(bigint,integer)', 'n NULL', '22004', 'SELECT wallet.generate_codes({c}, NULL)'),
('wallet.generate_codes(bigint,integer)', 'unknown campaign', 'WL101', 'SELECT wallet.generate_codes({unknown}, 1)'),
('wallet.parse_code(text)', 'input NULL', '22004', 'SELECT wallet.parse_code(NULL)'),
-- redemption
('wallet_internal.code_guard_thresholds(bigint)', '-', 'internal', NULL),
('wallet.set_code_guard(integer,integer,interval,bigint)', 'failure_window NULL', '22004', 'SELECT wallet.set_code_guard(10, 30, NULL, {m})'),
('wallet.set_code_guard(integer,integer,interval,bigint)', 'unknown merchant', 'WL102', $$SELECT wallet.set_code_guard(10, 30, '1 hour', {unknown})$$),
('wallet_internal.code_guard_attempt(bigint,text,text,boolean,integer,integer,interval)', '-', 'internal', NULL),
('wallet_internal.code_guard_forget(bigint,text,text)', '-', 'internal', NULL),
('wallet.clear_code_failures(text,text,bigint)', 'member_ref and source NULL', '22004', 'SELECT wallet.clear_code_failures(NULL, NULL, {m})'),
('wallet.clear_code_failures(text,text,bigint)', 'unknown merchant', 'WL102', $$SELECT wallet.clear_code_failures('vocab member', NULL, {unknown})$$),
('wallet.purge_code_attempts(interval)', 'older_than NULL', '22004', 'SELECT wallet.purge_code_attempts(NULL)'),
('wallet_internal.code_check_args(text,text,jsonb,boolean)', '-', 'internal', NULL),
('wallet_internal.code_precheck(text,text,text,text)', '-', 'internal', NULL),
('wallet_internal.code_caps_unchanged(bigint,integer,integer,bigint)', '-', 'internal', NULL),
('wallet_internal.code_lock_counters(bigint,bigint,text)', '-', 'internal', NULL),
('wallet_internal.code_bump_counters(bigint,bigint,text,integer,boolean,boolean,boolean)', '-', 'internal', NULL),
('wallet_internal.code_caps_status(bigint,bigint,text,integer,integer,bigint,bigint,bigint,bigint)', '-', 'internal', NULL),
('wallet_internal.idem_code(text,text,text,interval)', '-', 'internal', NULL),
('wallet_internal.idem_check(text,text,jsonb,jsonb)', '-', 'internal', NULL),
('wallet.issue_code(bigint,text)', 'campaign_id NULL', '22004', $$SELECT wallet.issue_code(NULL, 'vocab member')$$),
('wallet.issue_code(bigint,text)', 'member_ref NULL', '22004', 'SELECT wallet.issue_code({c}, NULL)'),
('wallet.issue_code(bigint,text)', 'member_ref blank', '22023', $$SELECT wallet.issue_code({c}, '')$$),
('wallet.issue_code(bigint,text)', 'member_ref oversized', '22023', $$SELECT wallet.issue_code({c}, '{long}')$$),
('wallet.issue_code(bigint,text)', 'unknown campaign', 'WL101', $$SELECT wallet.issue_code({unknown}, 'vocab member')$$),
('wallet.check_code(text,text,jsonb)', 'code NULL', '22004', $$SELECT wallet.check_code(NULL::text, 'vocab member', '{}'::jsonb)$$),
('wallet.check_code(text,text,jsonb)', 'member_ref NULL', '22004', $$SELECT wallet.check_code('{code3}'::text, NULL, '{}'::jsonb)$$),
('wallet.check_code(text,text,jsonb)', 'member_ref blank', '22023', $$SELECT wallet.check_code('{code3}'::text, ' ', '{}'::jsonb)$$),
('wallet.check_code(text,text,jsonb)', 'member_ref oversized', '22023', $$SELECT wallet.check_code('{code3}'::text, '{long}', '{}'::jsonb)$$),
('wallet.check_code(text,text)', 'code NULL', '22004', $$SELECT wallet.check_code(NULL::text, 'vocab member'::text)$$),
('wallet.check_code(text,text)', 'member_ref NULL', '22004', $$SELECT wallet.check_code('{code3}'::text, NULL::text)$$),
('wallet.check_code(wallet.marketing_code,text,jsonb)', 'code NULL', '22004', $$SELECT wallet.check_code(NULL::wallet.marketing_code, 'vocab member')$$),
('wallet.check_code(wallet.marketing_code,text,jsonb)', 'member_ref NULL', '22004', $$SELECT wallet.check_code('{code3}'::wallet.marketing_code, NULL)$$),
('wallet.redeem_code(text,text,text,jsonb)', 'code NULL', '22004', $$SELECT wallet.redeem_code(NULL::text, 'vocab member', 'vocab-k')$$),
('wallet.redeem_code(text,text,text,jsonb)', 'code NULL, key of a redemption', '22004', $$SELECT wallet.redeem_code(NULL::text, 'vocab member', 'vocab-r1')$$),
('wallet.redeem_code(text,text,text,jsonb)', 'member_ref NULL', '22004', $$SELECT wallet.redeem_code('{code3}'::text, NULL, 'vocab-k')$$),
('wallet.redeem_code(text,text,text,jsonb)', 'idempotency_key NULL', '22004', $$SELECT wallet.redeem_code('{code3}'::text, 'vocab member', NULL)$$),
('wallet.redeem_code(text,text,text,jsonb)', 'member_ref blank', '22023', $$SELECT wallet.redeem_code('{code3}'::text, '', 'vocab-k')$$),
('wallet.redeem_code(text,text,text,jsonb)', 'idempotency_key blank', '22023', $$SELECT wallet.redeem_code('{code3}'::text, 'vocab member', ' ')$$),
('wallet.redeem_code(text,text,text,jsonb)', 'idempotency_key oversized', '22023', $$SELECT wallet.redeem_code('{code3}'::text, 'vocab member', '{long}')$$),
('wallet.redeem_code(wallet.marketing_code,text,text,jsonb)', 'code NULL', '22004', $$SELECT wallet.redeem_code(NULL::wallet.marketing_code, 'vocab member', 'vocab-k')$$),
('wallet.redeem_code(wallet.marketing_code,text,text,jsonb)', 'member_ref NULL', '22004', $$SELECT wallet.redeem_code('{code3}'::wallet.marketing_code, NULL, 'vocab-k')$$),
('wallet.redeem_code(wallet.marketing_code,text,text,jsonb)', 'idempotency_key NULL', '22004', $$SELECT wallet.redeem_code('{code3}'::wallet.marketing_code, 'vocab member', NULL)$$),
('wallet.undo_redemption(bigint,text)', 'redemption_id NULL', '22004', $$SELECT wallet.undo_redemption(NULL, 'cancelled')$$),
('wallet.undo_redemption(bigint,text)', 'reason NULL', '22004', 'SELECT wallet.undo_redemption({r}, NULL)'),
('wallet.undo_redemption(bigint,text)', 'reason blank', '22023', $$SELECT wallet.undo_redemption({r}, ' ')$$),
('wallet.undo_redemption(bigint,text)', 'unknown redemption', 'WL150', $$SELECT wallet.undo_redemption({unknown}, 'cancelled')$$),
('wallet.reserve_code(text,text,text,interval,jsonb)', 'code NULL', '22004', $$SELECT wallet.reserve_code(NULL::text, 'vocab member', 'vocab-k', '1 hour')$$),
('wallet.reserve_code(text,text,text,interval,jsonb)', 'member_ref NULL', '22004', $$SELECT wallet.reserve_code('{code3}'::text, NULL, 'vocab-k', '1 hour')$$),
('wallet.reserve_code(text,text,text,interval,jsonb)', 'idempotency_key NULL', '22004', $$SELECT wallet.reserve_code('{code3}'::text, 'vocab member', NULL, '1 hour')$$),
('wallet.reserve_code(text,text,text,interval,jsonb)', 'ttl NULL', '22004', $$SELECT wallet.reserve_code('{code3}'::text, 'vocab member', 'vocab-k', NULL)$$),
('wallet.reserve_code(text,text,text,interval,jsonb)', 'member_ref blank', '22023', $$SELECT wallet.reserve_code('{code3}'::text, ' ', 'vocab-k', '1 hour')$$),
('wallet.reserve_code(text,text,text,interval,jsonb)', 'idempotency_key blank', '22023', $$SELECT wallet.reserve_code('{code3}'::text, 'vocab member', '', '1 hour')$$),
('wallet.reserve_code(text,text,text,interval,jsonb)', 'member_ref oversized', '22023', $$SELECT wallet.reserve_code('{code3}'::text, '{long}', 'vocab-k', '1 hour')$$),
('wallet.reserve_code(wallet.marketing_code,text,text,interval,jsonb)', 'code NULL', '22004', $$SELECT wallet.reserve_code(NULL::wallet.marketing_code, 'vocab member', 'vocab-k', '1 hour')$$),
('wallet.reserve_code(wallet.marketing_code,text,text,interval,jsonb)', 'ttl NULL', '22004', $$SELECT wallet.reserve_code('{code3}'::wallet.marketing_code, 'vocab member', 'vocab-k', NULL)$$),
('wallet.release_reservation(bigint)', 'reservation_id NULL', '22004', 'SELECT wallet.release_reservation(NULL)'),
('wallet.release_reservation(bigint)', 'unknown reservation', 'WL152', 'SELECT wallet.release_reservation({unknown})'),
-- points ledger: values
('wallet.ledger_balance(wallet.points_ledger,timestamp with time zone)', 'NULL ledger', 'null', $$SELECT wallet.ledger_balance(NULL, '2030-01-01')$$),
('wallet.ledger_expiring(wallet.points_ledger,timestamp with time zone,interval)', 'NULL ledger', 'null', $$SELECT wallet.ledger_expiring(NULL, '2030-01-01', '1 day')$$),
('wallet.ledger_earned(wallet.points_ledger,timestamp with time zone,timestamp with time zone)', 'NULL ledger', 'null', $$SELECT wallet.ledger_earned(NULL, '-infinity', 'infinity')$$),
('wallet.ledger_lots(wallet.points_ledger)', 'NULL ledger', 'null', 'SELECT wallet.ledger_lots(NULL)'),
('wallet.ledger_totals(wallet.points_ledger)', 'NULL ledger', 'null', 'SELECT wallet.ledger_totals(NULL)'),
('wallet.ledger_diff(wallet.points_ledger,wallet.points_ledger)', 'NULL ledger (NULL would mean "equal")', '22004', $$SELECT wallet.ledger_diff(NULL, '')$$),
('wallet.ledger_apply(wallet.points_ledger,text,timestamp with time zone,bigint,timestamp with time zone,bigint,bigint[],timestamp with time zone[],text,timestamp with time zone)', 'kind NULL', '22004', $$SELECT wallet.ledger_apply('', NULL, '2030-01-01', 1)$$),
('wallet.ledger_apply(wallet.points_ledger,text,timestamp with time zone,bigint,timestamp with time zone,bigint,bigint[],timestamp with time zone[],text,timestamp with time zone)', 'at NULL', '22004', $$SELECT wallet.ledger_apply('', 'accrue', NULL, 1)$$),
('wallet.ledger_apply(wallet.points_ledger,text,timestamp with time zone,bigint,timestamp with time zone,bigint,bigint[],timestamp with time zone[],text,timestamp with time zone)', 'points NULL', '22004', $$SELECT wallet.ledger_apply('', 'accrue', '2030-01-01', NULL)$$),
('wallet.ledger_apply(wallet.points_ledger,text,timestamp with time zone,bigint,timestamp with time zone,bigint,bigint[],timestamp with time zone[],text,timestamp with time zone)', 'points NULL (adjust)', '22004', $$SELECT wallet.ledger_apply('', 'adjust', '2030-01-01', NULL)$$),
('wallet.ledger_apply(wallet.points_ledger,text,timestamp with time zone,bigint,timestamp with time zone,bigint,bigint[],timestamp with time zone[],text,timestamp with time zone)', 'kind blank', '22023', $$SELECT wallet.ledger_apply('', '', '2030-01-01', 1)$$),
('wallet.policy_expiry(timestamp with time zone,interval,text)', 'NULL instant', 'null', $$SELECT wallet.policy_expiry(NULL, '1 year', 'day')$$),
-- points ledger: helpers
('wallet_internal.check_posting(bigint,text,text,text,boolean)', '-', 'internal', NULL),
('wallet_internal.idem_entry(wallet.entries)', '-', 'internal', NULL),
('wallet_internal.entry_by_key(bigint,text)', '-', 'internal', NULL),
('wallet_internal.unknown_account(bigint)', '-', 'internal', NULL),
('wallet_internal.program_closed(bigint)', '-', 'internal', NULL),
('wallet_internal.entry_step(wallet.points_ledger,wallet.entries)', '-', 'internal', NULL),
('wallet_internal.post_entry(wallet.points_ledger,wallet.entries)', '-', 'internal', NULL),
('wallet_internal.settle_account(bigint,timestamp with time zone,timestamp with time zone)', '-', 'internal', NULL),
('wallet_internal.lock_account(bigint,text)', '-', 'internal', NULL),
('wallet_internal.post_once(wallet_internal.locked_account,wallet.entries,boolean)', '-', 'internal', NULL),
('wallet_internal.lock_hold(bigint)', '-', 'internal', NULL),
('wallet_internal.hold_not_open(bigint,wallet.entries)', '-', 'internal', NULL),
-- points ledger: programs and accounts
('wallet.create_program(bigint,text,interval,text)', 'merchant_id NULL', '22004', $$SELECT wallet.create_program(NULL, 'x')$$),
('wallet.create_program(bigint,text,interval,text)', 'name NULL', '22004', 'SELECT wallet.create_program({m}, NULL)'),
('wallet.create_program(bigint,text,interval,text)', 'granularity NULL', '22004', $$SELECT wallet.create_program({m}, 'x', NULL, NULL)$$),
('wallet.create_program(bigint,text,interval,text)', 'name blank', '22023', $$SELECT wallet.create_program({m}, '')$$),
('wallet.create_program(bigint,text,interval,text)', 'granularity blank', '22023', $$SELECT wallet.create_program({m}, 'x', NULL, '')$$),
('wallet.create_program(bigint,text,interval,text)', 'unknown merchant', 'WL102', $$SELECT wallet.create_program({unknown}, 'x')$$),
('wallet.close_program(bigint)', 'program_id NULL', '22004', 'SELECT wallet.close_program(NULL)'),
('wallet.close_program(bigint)', 'unknown program', 'WL214', 'SELECT wallet.close_program({unknown})'),
('wallet.open_account(bigint,text)', 'program_id NULL', '22004', $$SELECT wallet.open_account(NULL, 'vocab member')$$),
('wallet.open_account(bigint,text)', 'member_ref NULL', '22004', 'SELECT wallet.open_account({p}, NULL)'),
('wallet.open_account(bigint,text)', 'member_ref blank', '22023', $$SELECT wallet.open_account({p}, ' ')$$),
('wallet.open_account(bigint,text)', 'member_ref oversized', '22023', $$SELECT wallet.open_account({p}, '{long}')$$),
('wallet.open_account(bigint,text)', 'unknown program', 'WL214', $$SELECT wallet.open_account({unknown}, 'vocab member')$$),
-- points ledger: postings
('wallet.accrue(bigint,bigint,text,text,text,timestamp with time zone)', 'account_id NULL', '22004', $$SELECT wallet.accrue(NULL, 5, 'vocab-k', 'why')$$),
('wallet.accrue(bigint,bigint,text,text,text,timestamp with time zone)', 'points NULL', '22004', $$SELECT wallet.accrue({a}, NULL, 'vocab-k', 'why')$$),
('wallet.accrue(bigint,bigint,text,text,text,timestamp with time zone)', 'idempotency_key NULL', '22004', $$SELECT wallet.accrue({a}, 5, NULL, 'why')$$),
('wallet.accrue(bigint,bigint,text,text,text,timestamp with time zone)', 'reason NULL', '22004', $$SELECT wallet.accrue({a}, 5, 'vocab-k', NULL)$$),
('wallet.accrue(bigint,bigint,text,text,text,timestamp with time zone)', 'idempotency_key blank', '22023', $$SELECT wallet.accrue({a}, 5, ' ', 'why')$$),
('wallet.accrue(bigint,bigint,text,text,text,timestamp with time zone)', 'idempotency_key oversized', '22023', $$SELECT wallet.accrue({a}, 5, '{long}', 'why')$$),
('wallet.accrue(bigint,bigint,text,text,text,timestamp with time zone)', 'reason blank', '22023', $$SELECT wallet.accrue({a}, 5, 'vocab-k', '')$$),
('wallet.accrue(bigint,bigint,text,text,text,timestamp with time zone)', 'unknown account', 'WL201', $$SELECT wallet.accrue({unknown}, 5, 'vocab-k', 'why')$$),
('wallet.redeem(bigint,bigint,text,text,text)', 'account_id NULL', '22004', $$SELECT wallet.redeem(NULL, 5, 'vocab-k', 'why')$$),
('wallet.redeem(bigint,bigint,text,text,text)', 'points NULL', '22004', $$SELECT wallet.redeem({a}, NULL, 'vocab-k', 'why')$$),
('wallet.redeem(bigint,bigint,text,text,text)', 'idempotency_key NULL', '22004', $$SELECT wallet.redeem({a}, 5, NULL, 'why')$$),
('wallet.redeem(bigint,bigint,text,text,text)', 'reason NULL', '22004', $$SELECT wallet.redeem({a}, 5, 'vocab-k', NULL)$$),
('wallet.redeem(bigint,bigint,text,text,text)', 'idempotency_key blank', '22023', $$SELECT wallet.redeem({a}, 5, '', 'why')$$),
('wallet.redeem(bigint,bigint,text,text,text)', 'reason blank', '22023', $$SELECT wallet.redeem({a}, 5, 'vocab-k', ' ')$$),
('wallet.redeem(bigint,bigint,text,text,text)', 'unknown account', 'WL201', $$SELECT wallet.redeem({unknown}, 5, 'vocab-k', 'why')$$),
('wallet.hold(bigint,bigint,text,interval,text,text)', 'account_id NULL', '22004', $$SELECT wallet.hold(NULL, 5, 'vocab-k', '1 hour', 'why')$$),
('wallet.hold(bigint,bigint,text,interval,text,text)', 'points NULL', '22004', $$SELECT wallet.hold({a}, NULL, 'vocab-k', '1 hour', 'why')$$),
('wallet.hold(bigint,bigint,text,interval,text,text)', 'idempotency_key NULL', '22004', $$SELECT wallet.hold({a}, 5, NULL, '1 hour', 'why')$$),
('wallet.hold(bigint,bigint,text,interval,text,text)', 'ttl NULL', '22004', $$SELECT wallet.hold({a}, 5, 'vocab-k', NULL, 'why')$$),
('wallet.hold(bigint,bigint,text,interval,text,text)', 'reason NULL', '22004', $$SELECT wallet.hold({a}, 5, 'vocab-k', '1 hour', NULL)$$),
('wallet.hold(bigint,bigint,text,interval,text,text)', 'idempotency_key blank', '22023', $$SELECT wallet.hold({a}, 5, ' ', '1 hour', 'why')$$),
('wallet.hold(bigint,bigint,text,interval,text,text)', 'reason blank', '22023', $$SELECT wallet.hold({a}, 5, 'vocab-k', '1 hour', '')$$),
('wallet.hold(bigint,bigint,text,interval,text,text)', 'unknown account', 'WL201', $$SELECT wallet.hold({unknown}, 5, 'vocab-k', '1 hour', 'why')$$),
('wallet.capture(bigint,bigint,text)', 'hold_id NULL', '22004', 'SELECT wallet.capture(NULL)'),
('wallet.capture(bigint,bigint,text)', 'unknown hold', 'WL206', 'SELECT wallet.capture({unknown})'),
('wallet.capture(bigint,bigint,text)', 'idempotency_key blank', '22023', $$SELECT wallet.capture({h}, NULL, ' ')$$),
('wallet.release(bigint,text)', 'hold_id NULL', '22004', 'SELECT wallet.release(NULL)'),
('wallet.release(bigint,text)', 'unknown hold', 'WL206', 'SELECT wallet.release({unknown})'),
('wallet.release(bigint,text)', 'idempotency_key blank', '22023', $$SELECT wallet.release({h}, '')$$),
('wallet.reverse(bigint,text,text,text)', 'entry_id NULL', '22004', $$SELECT wallet.reverse(NULL, 'vocab-k', 'why')$$),
('wallet.reverse(bigint,text,text,text)', 'idempotency_key NULL', '22004', $$SELECT wallet.reverse({e}, NULL, 'why')$$),
('wallet.reverse(bigint,text,text,text)', 'reason NULL', '22004', $$SELECT wallet.reverse({e}, 'vocab-k', NULL)$$),
('wallet.reverse(bigint,text,text,text)', 'policy NULL', '22004', $$SELECT wallet.reverse({e}, 'vocab-k', 'why', NULL)$$),
('wallet.reverse(bigint,text,text,text)', 'idempotency_key blank', '22023', $$SELECT wallet.reverse({e}, '', 'why')$$),
('wallet.reverse(bigint,text,text,text)', 'reason blank', '22023', $$SELECT wallet.reverse({e}, 'vocab-k', ' ')$$),
('wallet.reverse(bigint,text,text,text)', 'policy blank', '22023', $$SELECT wallet.reverse({e}, 'vocab-k', 'why', '')$$),
('wallet.reverse(bigint,text,text,text)', 'unknown entry', 'WL212', $$SELECT wallet.reverse({unknown}, 'vocab-k', 'why')$$),
('wallet.adjust(bigint,bigint,text,text)', 'account_id NULL', '22004', $$SELECT wallet.adjust(NULL, 5, 'vocab-k', 'why')$$),
('wallet.adjust(bigint,bigint,text,text)', 'points NULL', '22004', $$SELECT wallet.adjust({a}, NULL, 'vocab-k', 'why')$$),
('wallet.adjust(bigint,bigint,text,text)', 'idempotency_key NULL', '22004', $$SELECT wallet.adjust({a}, 5, NULL, 'why')$$),
('wallet.adjust(bigint,bigint,text,text)', 'reason NULL', '22004', $$SELECT wallet.adjust({a}, 5, 'vocab-k', NULL)$$),
('wallet.adjust(bigint,bigint,text,text)', 'idempotency_key blank', '22023', $$SELECT wallet.adjust({a}, 5, ' ', 'why')$$),
('wallet.adjust(bigint,bigint,text,text)', 'reason blank', '22023', $$SELECT wallet.adjust({a}, 5, 'vocab-k', '')$$),
('wallet.adjust(bigint,bigint,text,text)', 'unknown account', 'WL201', $$SELECT wallet.adjust({unknown}, 5, 'vocab-k', 'why')$$),
('wallet.expire_points(timestamp with time zone)', 'as_of NULL', '22004', 'SELECT wallet.expire_points(NULL)'),
('wallet.expire_points(timestamp with time zone)', 'as_of in the future', '22023', $$SELECT wallet.expire_points('infinity')$$),
('wallet_internal.check_expiry_as_of(timestamp with time zone)', '-', 'internal', NULL),
('wallet_internal.expire_due_accounts(timestamp with time zone,integer)', '-', 'internal', NULL),
('wallet.expire_points_batched(timestamp with time zone,integer,integer)', 'as_of NULL', '22004', 'CALL wallet.expire_points_batched(NULL)'),
('wallet.run_maintenance()', '-', 'no arguments', NULL),
('wallet.find_account(bigint,text)', 'program_id NULL', '22004', $$SELECT wallet.find_account(NULL, 'm')$$),
('wallet.find_account(bigint,text)', 'member_ref NULL', '22004', 'SELECT wallet.find_account({p}, NULL)'),
('wallet.find_account(bigint,text)', 'member_ref blank', '22023', $$SELECT wallet.find_account({p}, ' ')$$),
('wallet.find_account(bigint,text)', 'unknown program', 'WL214', $$SELECT wallet.find_account({unknown}, 'm')$$),
-- points ledger: reading
('wallet.balance(bigint,timestamp with time zone)', 'account_id NULL', '22004', 'SELECT wallet.balance(NULL)'),
('wallet.balance(bigint,timestamp with time zone)', 'as_of NULL', '22004', 'SELECT wallet.balance({a}, NULL)'),
('wallet.balance(bigint,timestamp with time zone)', 'unknown account', 'WL201', 'SELECT wallet.balance({unknown})'),
('wallet.replay_ledger(bigint,timestamp with time zone)', 'account_id NULL', '22004', 'SELECT wallet.replay_ledger(NULL)'),
('wallet.replay_ledger(bigint,timestamp with time zone)', 'upto NULL', '22004', 'SELECT wallet.replay_ledger({a}, NULL)'),
('wallet.replay_ledger(bigint,timestamp with time zone)', 'unknown account', 'WL201', 'SELECT wallet.replay_ledger({unknown})'),
('wallet.balance_at(bigint,timestamp with time zone)', 'account_id NULL', '22004', $$SELECT wallet.balance_at(NULL, '2030-01-01')$$),
('wallet.balance_at(bigint,timestamp with time zone)', 'ts NULL', '22004', 'SELECT wallet.balance_at({a}, NULL)'),
('wallet.balance_at(bigint,timestamp with time zone)', 'unknown account', 'WL201', $$SELECT wallet.balance_at({unknown}, '2030-01-01')$$),
('wallet.history(bigint,timestamp with time zone,timestamp with time zone)', 'account_id NULL', '22004', 'SELECT wallet.history(NULL)'),
('wallet.history(bigint,timestamp with time zone,timestamp with time zone)', 'from_ts NULL', '22004', 'SELECT wallet.history({a}, NULL)'),
('wallet.history(bigint,timestamp with time zone,timestamp with time zone)', 'to_ts NULL', '22004', $$SELECT wallet.history({a}, '-infinity', NULL)$$),
('wallet.history(bigint,timestamp with time zone,timestamp with time zone)', 'unknown account', 'WL201', 'SELECT wallet.history({unknown})'),
('wallet.program_liability(bigint,timestamp with time zone)', 'program_id NULL', '22004', 'SELECT wallet.program_liability(NULL)'),
('wallet.program_liability(bigint,timestamp with time zone)', 'as_of NULL', '22004', 'SELECT wallet.program_liability({p}, NULL)'),
('wallet.program_liability(bigint,timestamp with time zone)', 'unknown program', 'WL214', 'SELECT wallet.program_liability({unknown})'),
('wallet.verify_ledger(bigint)', 'unknown account (NULL: every account)', 'WL201', 'SELECT wallet.verify_ledger({unknown})'),
-- members, erasure, audit
('wallet_internal.member_check(bigint,text)', '-', 'internal', NULL),
('wallet_internal.member_ensure(bigint,text)', '-', 'internal', NULL),
('wallet_internal.audit_record(bigint,text,jsonb,jsonb,jsonb)', '-', 'internal', NULL),
('wallet.upsert_member(bigint,text,text,text)', 'merchant_id NULL', '22004', $$SELECT wallet.upsert_member(NULL, 'vocab member')$$),
('wallet.upsert_member(bigint,text,text,text)', 'member_ref NULL', '22004', 'SELECT wallet.upsert_member({m}, NULL)'),
('wallet.upsert_member(bigint,text,text,text)', 'member_ref blank', '22023', $$SELECT wallet.upsert_member({m}, ' ')$$),
('wallet.upsert_member(bigint,text,text,text)', 'member_ref oversized', '22023', $$SELECT wallet.upsert_member({m}, '{long}')$$),
('wallet.upsert_member(bigint,text,text,text)', 'time_zone unknown', '22023', $$SELECT wallet.upsert_member({m}, 'vocab member', 'Nowhere/Nothing')$$),
('wallet.upsert_member(bigint,text,text,text)', 'locale malformed', '22023', $$SELECT wallet.upsert_member({m}, 'vocab member', NULL, '{long}')$$),
('wallet.upsert_member(bigint,text,text,text)', 'unknown merchant', 'WL102', $$SELECT wallet.upsert_member({unknown}, 'vocab member')$$),
('wallet.forget_member(bigint,text,text)', 'merchant_id NULL', '22004', $$SELECT wallet.forget_member(NULL, 'vocab member', 'test')$$),
('wallet.forget_member(bigint,text,text)', 'member_ref NULL', '22004', $$SELECT wallet.forget_member({m}, NULL, 'test')$$),
('wallet.forget_member(bigint,text,text)', 'reason NULL', '22004', $$SELECT wallet.forget_member({m}, 'vocab member', NULL)$$),
('wallet.forget_member(bigint,text,text)', 'member_ref blank', '22023', $$SELECT wallet.forget_member({m}, ' ', 'test')$$),
('wallet.forget_member(bigint,text,text)', 'member_ref oversized', '22023', $$SELECT wallet.forget_member({m}, '{long}', 'test')$$),
('wallet.forget_member(bigint,text,text)', 'reason blank', '22023', $$SELECT wallet.forget_member({m}, 'vocab member', ' ')$$),
('wallet.forget_member(bigint,text,text)', 'unknown merchant', 'WL102', $$SELECT wallet.forget_member({unknown}, 'vocab member', 'test')$$),
-- campaign budgets (issue 11)
('wallet.set_campaign_budget(bigint,text,bigint,integer)', 'campaign_id NULL', '22004', $$SELECT wallet.set_campaign_budget(NULL, 'points', 10)$$),
('wallet.set_campaign_budget(bigint,text,bigint,integer)', 'unit NULL', '22004', 'SELECT wallet.set_campaign_budget({c}, NULL, 10)'),
('wallet.set_campaign_budget(bigint,text,bigint,integer)', 'total NULL', '22004', $$SELECT wallet.set_campaign_budget({c}, 'points', NULL)$$),
('wallet.set_campaign_budget(bigint,text,bigint,integer)', 'unit blank', '22023', $$SELECT wallet.set_campaign_budget({c}, ' ', 10)$$),
('wallet.set_campaign_budget(bigint,text,bigint,integer)', 'unit unknown', '22023', $$SELECT wallet.set_campaign_budget({c}, 'euros', 10)$$),
('wallet.set_campaign_budget(bigint,text,bigint,integer)', 'total negative', '22023', $$SELECT wallet.set_campaign_budget({c}, 'points', -1)$$),
('wallet.set_campaign_budget(bigint,text,bigint,integer)', 'slices out of range', '22023', $$SELECT wallet.set_campaign_budget({c}, 'points', 10, 0)$$),
('wallet.set_campaign_budget(bigint,text,bigint,integer)', 'unknown campaign', 'WL101', $$SELECT wallet.set_campaign_budget({unknown}, 'points', 10)$$),
('wallet.campaign_budget(bigint)', 'campaign_id NULL', '22004', 'SELECT wallet.campaign_budget(NULL)'),
('wallet.campaign_budget(bigint)', 'unknown campaign', 'WL101', 'SELECT wallet.campaign_budget({unknown})'),
('wallet.campaign_budget(bigint)', 'campaign without a budget', 'WL601', 'SELECT wallet.campaign_budget({c})'),
('wallet.reclaim_budget_holds(integer)', 'max_holds NULL', '22004', 'SELECT wallet.reclaim_budget_holds(NULL)'),
('wallet.reclaim_budget_holds(integer)', 'max_holds zero', '22023', 'SELECT wallet.reclaim_budget_holds(0)'),
('wallet_internal.budget_units_check(bigint)', '-', 'internal', NULL),
('wallet_internal.budget_take(bigint,bigint,boolean)', '-', 'internal', NULL),
('wallet_internal.budget_give_back(bigint,bigint)', '-', 'internal', NULL),
('wallet_internal.budget_hold(bigint,bigint,interval,boolean)', '-', 'internal', NULL),
('wallet_internal.budget_convert(bigint)', '-', 'internal', NULL),
('wallet_internal.budget_release(bigint)', '-', 'internal', NULL),
('wallet_internal.budget_status(bigint)', '-', 'internal', NULL),
('wallet_internal.budget_lock_hold(bigint)', '-', 'internal', NULL),
('wallet_internal.budget_expire_holds(bigint)', '-', 'internal', NULL),
-- purchases and earning rules (issue 10)
('wallet_internal.rule_texts(jsonb,text)', '-', 'internal', NULL),
('wallet_internal.rule_number(jsonb,text,boolean)', '-', 'internal', NULL),
('wallet_internal.rule_apply_conditions(wallet.earning_rules,jsonb,jsonb)', '-', 'internal', NULL),
('wallet_internal.rule_check(wallet.earning_rules)', '-', 'internal', NULL),
('wallet_internal.unknown_rule(bigint)', '-', 'internal', NULL),
('wallet_internal.purchase_check(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', '-', 'internal', NULL),
('wallet_internal.purchase_points(bigint,bigint,text,bigint,bigint,text,numeric,text,timestamp with time zone,jsonb)', '-', 'internal', NULL),
('wallet_internal.purchase_retry(wallet.purchases,text,numeric,text)', '-', 'internal', NULL),
('wallet_internal.purchase_context(bigint,text,text)', '-', 'internal', NULL),
('wallet_internal.refund_retry(wallet.refunds,text,numeric)', '-', 'internal', NULL),
('wallet.set_program_earning(bigint,text,text,boolean,numeric)', 'program_id NULL', '22004', $$SELECT wallet.set_program_earning(NULL, 'CNY')$$),
('wallet.set_program_earning(bigint,text,text,boolean,numeric)', 'rounding NULL', '22004', $$SELECT wallet.set_program_earning({p}, 'CNY', NULL)$$),
('wallet.set_program_earning(bigint,text,text,boolean,numeric)', 'currency malformed', '22023', $$SELECT wallet.set_program_earning({p}, '{long}')$$),
('wallet.set_program_earning(bigint,text,text,boolean,numeric)', 'unknown program', 'WL214', $$SELECT wallet.set_program_earning({unknown}, 'CNY')$$),
('wallet.create_earning_rule(bigint,text,text,numeric,jsonb,jsonb,timestamp with time zone,timestamp with time zone,integer,boolean,bigint)', 'program_id NULL', '22004', $$SELECT wallet.create_earning_rule(NULL, 'x', 'fixed', 1)$$),
('wallet.create_earning_rule(bigint,text,text,numeric,jsonb,jsonb,timestamp with time zone,timestamp with time zone,integer,boolean,bigint)', 'name NULL', '22004', $$SELECT wallet.create_earning_rule({p}, NULL, 'fixed', 1)$$),
('wallet.create_earning_rule(bigint,text,text,numeric,jsonb,jsonb,timestamp with time zone,timestamp with time zone,integer,boolean,bigint)', 'effect NULL', '22004', $$SELECT wallet.create_earning_rule({p}, 'x', NULL, 1)$$),
('wallet.create_earning_rule(bigint,text,text,numeric,jsonb,jsonb,timestamp with time zone,timestamp with time zone,integer,boolean,bigint)', 'value NULL', '22004', $$SELECT wallet.create_earning_rule({p}, 'x', 'fixed', NULL)$$),
('wallet.create_earning_rule(bigint,text,text,numeric,jsonb,jsonb,timestamp with time zone,timestamp with time zone,integer,boolean,bigint)', 'conditions NULL', '22004', $$SELECT wallet.create_earning_rule({p}, 'x', 'fixed', 1, NULL)$$),
('wallet.create_earning_rule(bigint,text,text,numeric,jsonb,jsonb,timestamp with time zone,timestamp with time zone,integer,boolean,bigint)', 'name blank', '22023', $$SELECT wallet.create_earning_rule({p}, ' ', 'fixed', 1)$$),
('wallet.create_earning_rule(bigint,text,text,numeric,jsonb,jsonb,timestamp with time zone,timestamp with time zone,integer,boolean,bigint)', 'name oversized', '22023', $$SELECT wallet.create_earning_rule({p}, '{long}', 'fixed', 1)$$),
('wallet.create_earning_rule(bigint,text,text,numeric,jsonb,jsonb,timestamp with time zone,timestamp with time zone,integer,boolean,bigint)', 'unknown program', 'WL214', $$SELECT wallet.create_earning_rule({unknown}, 'x', 'fixed', 1)$$),
('wallet.create_earning_rule(bigint,text,text,numeric,jsonb,jsonb,timestamp with time zone,timestamp with time zone,integer,boolean,bigint)', 'unknown campaign', 'WL101', $$SELECT wallet.create_earning_rule({p}, 'x', 'fixed', 1, campaign_id => {unknown})$$),
('wallet.update_earning_rule(bigint,text,numeric,jsonb,jsonb,timestamp with time zone,integer,boolean)', 'rule_id NULL', '22004', $$SELECT wallet.update_earning_rule(NULL, 'x')$$),
('wallet.update_earning_rule(bigint,text,numeric,jsonb,jsonb,timestamp with time zone,integer,boolean)', 'name blank', '22023', $$SELECT wallet.update_earning_rule({rule}, ' ')$$),
('wallet.update_earning_rule(bigint,text,numeric,jsonb,jsonb,timestamp with time zone,integer,boolean)', 'unknown rule', 'WL502', $$SELECT wallet.update_earning_rule({unknown}, 'x')$$),
('wallet.end_earning_rule(bigint,timestamp with time zone)', 'rule_id NULL', '22004', $$SELECT wallet.end_earning_rule(NULL)$$),
('wallet.end_earning_rule(bigint,timestamp with time zone)', 'at NULL', '22004', $$SELECT wallet.end_earning_rule({rule}, NULL)$$),
('wallet.end_earning_rule(bigint,timestamp with time zone)', 'unknown rule', 'WL502', $$SELECT wallet.end_earning_rule({unknown})$$),
('wallet.record_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'merchant_id NULL', '22004', $$SELECT wallet.record_purchase(NULL, 'vocab member', 'o1', 10, 'CNY')$$),
('wallet.record_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'member_ref NULL', '22004', $$SELECT wallet.record_purchase({m}, NULL, 'o1', 10, 'CNY')$$),
('wallet.record_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'order_ref NULL', '22004', $$SELECT wallet.record_purchase({m}, 'vocab member', NULL, 10, 'CNY')$$),
('wallet.record_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'amount NULL', '22004', $$SELECT wallet.record_purchase({m}, 'vocab member', 'o1', NULL, 'CNY')$$),
('wallet.record_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'currency NULL', '22004', $$SELECT wallet.record_purchase({m}, 'vocab member', 'o1', 10, NULL)$$),
('wallet.record_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'occurred_at NULL', '22004', $$SELECT wallet.record_purchase({m}, 'vocab member', 'o1', 10, 'CNY', NULL)$$),
('wallet.record_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'attributes NULL', '22004', $$SELECT wallet.record_purchase({m}, 'vocab member', 'o1', 10, 'CNY', now(), NULL)$$),
('wallet.record_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'member_ref blank', '22023', $$SELECT wallet.record_purchase({m}, ' ', 'o1', 10, 'CNY')$$),
('wallet.record_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'member_ref oversized', '22023', $$SELECT wallet.record_purchase({m}, '{long}', 'o1', 10, 'CNY')$$),
('wallet.record_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'order_ref blank', '22023', $$SELECT wallet.record_purchase({m}, 'vocab member', ' ', 10, 'CNY')$$),
('wallet.record_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'order_ref oversized', '22023', $$SELECT wallet.record_purchase({m}, 'vocab member', '{long}', 10, 'CNY')$$),
('wallet.record_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'currency malformed', '22023', $$SELECT wallet.record_purchase({m}, 'vocab member', 'o1', 10, 'yuan')$$),
('wallet.record_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'unknown merchant', 'WL102', $$SELECT wallet.record_purchase({unknown}, 'vocab member', 'o1', 10, 'CNY')$$),
('wallet.preview_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'merchant_id NULL', '22004', $$SELECT wallet.preview_purchase(NULL, 'vocab member', 'o1', 10, 'CNY')$$),
('wallet.preview_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'member_ref NULL', '22004', $$SELECT wallet.preview_purchase({m}, NULL, 'o1', 10, 'CNY')$$),
('wallet.preview_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'order_ref NULL', '22004', $$SELECT wallet.preview_purchase({m}, 'vocab member', NULL, 10, 'CNY')$$),
('wallet.preview_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'amount NULL', '22004', $$SELECT wallet.preview_purchase({m}, 'vocab member', 'o1', NULL, 'CNY')$$),
('wallet.preview_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'currency NULL', '22004', $$SELECT wallet.preview_purchase({m}, 'vocab member', 'o1', 10, NULL)$$),
('wallet.preview_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'occurred_at NULL', '22004', $$SELECT wallet.preview_purchase({m}, 'vocab member', 'o1', 10, 'CNY', NULL)$$),
('wallet.preview_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'attributes NULL', '22004', $$SELECT wallet.preview_purchase({m}, 'vocab member', 'o1', 10, 'CNY', now(), NULL)$$),
('wallet.preview_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'member_ref blank', '22023', $$SELECT wallet.preview_purchase({m}, ' ', 'o1', 10, 'CNY')$$),
('wallet.preview_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'member_ref oversized', '22023', $$SELECT wallet.preview_purchase({m}, '{long}', 'o1', 10, 'CNY')$$),
('wallet.preview_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'order_ref blank', '22023', $$SELECT wallet.preview_purchase({m}, 'vocab member', ' ', 10, 'CNY')$$),
('wallet.preview_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'order_ref oversized', '22023', $$SELECT wallet.preview_purchase({m}, 'vocab member', '{long}', 10, 'CNY')$$),
('wallet.preview_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'currency malformed', '22023', $$SELECT wallet.preview_purchase({m}, 'vocab member', 'o1', 10, 'yuan')$$),
('wallet.preview_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', 'unknown merchant', 'WL102', $$SELECT wallet.preview_purchase({unknown}, 'vocab member', 'o1', 10, 'CNY')$$),
('wallet.record_refund(bigint,text,numeric,text)', 'merchant_id NULL', '22004', $$SELECT wallet.record_refund(NULL, 'o1', 1, 'r1')$$),
('wallet.record_refund(bigint,text,numeric,text)', 'order_ref NULL', '22004', $$SELECT wallet.record_refund({m}, NULL, 1, 'r1')$$),
('wallet.record_refund(bigint,text,numeric,text)', 'amount NULL', '22004', $$SELECT wallet.record_refund({m}, 'o1', NULL, 'r1')$$),
('wallet.record_refund(bigint,text,numeric,text)', 'refund_ref NULL', '22004', $$SELECT wallet.record_refund({m}, 'o1', 1, NULL)$$),
('wallet.record_refund(bigint,text,numeric,text)', 'order_ref blank', '22023', $$SELECT wallet.record_refund({m}, ' ', 1, 'r1')$$),
('wallet.record_refund(bigint,text,numeric,text)', 'refund_ref blank', '22023', $$SELECT wallet.record_refund({m}, 'o1', 1, ' ')$$),
('wallet.record_refund(bigint,text,numeric,text)', 'refund_ref oversized', '22023', $$SELECT wallet.record_refund({m}, 'o1', 1, '{long}')$$),
('wallet.record_refund(bigint,text,numeric,text)', 'unknown merchant', 'WL102', $$SELECT wallet.record_refund({unknown}, 'o1', 1, 'r1')$$),
('wallet.record_refund(bigint,text,numeric,text)', 'unknown order', 'WL500', $$SELECT wallet.record_refund({m}, 'no such order', 1, 'r1')$$),
-- campaign audience, analytics, segments, feedback (issue 11)
('wallet.campaign_group(bigint,text)', 'campaign_id NULL', '22004', $$SELECT wallet.campaign_group(NULL, 'vocab member')$$),
('wallet.campaign_group(bigint,text)', 'member_ref NULL', '22004', 'SELECT wallet.campaign_group({c}, NULL)'),
('wallet.campaign_group(bigint,text)', 'member_ref blank', '22023', $$SELECT wallet.campaign_group({c}, ' ')$$),
('wallet.campaign_group(bigint,text)', 'member_ref oversized', '22023', $$SELECT wallet.campaign_group({c}, '{long}')$$),
('wallet.campaign_group(bigint,text)', 'unknown campaign', 'WL101', $$SELECT wallet.campaign_group({unknown}, 'vocab member')$$),
('wallet.set_campaign_audience(bigint,text,numeric,bigint,integer,text[],text[],timestamp with time zone)', 'campaign_id NULL', '22004', $$SELECT wallet.set_campaign_audience(NULL, 'everyone')$$),
('wallet.set_campaign_audience(bigint,text,numeric,bigint,integer,text[],text[],timestamp with time zone)', 'audience NULL', '22004', 'SELECT wallet.set_campaign_audience({c}, NULL)'),
('wallet.set_campaign_audience(bigint,text,numeric,bigint,integer,text[],text[],timestamp with time zone)', 'holdout_percent NULL', '22004', $$SELECT wallet.set_campaign_audience({c}, 'everyone', NULL)$$),
('wallet.set_campaign_audience(bigint,text,numeric,bigint,integer,text[],text[],timestamp with time zone)', 'audience blank', '22023', $$SELECT wallet.set_campaign_audience({c}, ' ')$$),
('wallet.set_campaign_audience(bigint,text,numeric,bigint,integer,text[],text[],timestamp with time zone)', 'member_refs NULL (list)', '22004', $$SELECT wallet.set_campaign_audience({c}, 'list', 0)$$),
('wallet.set_campaign_audience(bigint,text,numeric,bigint,integer,text[],text[],timestamp with time zone)', 'member_ref blank (list)', '22023', $$SELECT wallet.set_campaign_audience({c}, 'list', 0, member_refs => '{" "}')$$),
('wallet.set_campaign_audience(bigint,text,numeric,bigint,integer,text[],text[],timestamp with time zone)', 'member_ref oversized (list)', '22023', $$SELECT wallet.set_campaign_audience({c}, 'list', 0, member_refs => ARRAY['{long}'])$$),
('wallet.set_campaign_audience(bigint,text,numeric,bigint,integer,text[],text[],timestamp with time zone)', 'program_id NULL (tiers)', '22004', $$SELECT wallet.set_campaign_audience({c}, 'tiers', 0, min_rank => 1)$$),
('wallet.set_campaign_audience(bigint,text,numeric,bigint,integer,text[],text[],timestamp with time zone)', 'unknown program (tiers)', 'WL214', $$SELECT wallet.set_campaign_audience({c}, 'tiers', 0, program_id => {unknown}, min_rank => 1)$$),
('wallet.set_campaign_audience(bigint,text,numeric,bigint,integer,text[],text[],timestamp with time zone)', 'segments NULL (segment)', '22004', $$SELECT wallet.set_campaign_audience({c}, 'segment', 0)$$),
('wallet.set_campaign_audience(bigint,text,numeric,bigint,integer,text[],text[],timestamp with time zone)', 'unknown campaign', 'WL101', $$SELECT wallet.set_campaign_audience({unknown}, 'everyone')$$),
('wallet.record_feedback(bigint,text,integer,text,text,text)', 'campaign_id NULL', '22004', $$SELECT wallet.record_feedback(NULL, 'vocab member', 5, 'praise', NULL)$$),
('wallet.record_feedback(bigint,text,integer,text,text,text)', 'member_ref NULL', '22004', $$SELECT wallet.record_feedback({c}, NULL, 5, 'praise', NULL)$$),
('wallet.record_feedback(bigint,text,integer,text,text,text)', 'category NULL', '22004', $$SELECT wallet.record_feedback({c}, 'vocab member', 5, NULL, NULL)$$),
('wallet.record_feedback(bigint,text,integer,text,text,text)', 'member_ref blank', '22023', $$SELECT wallet.record_feedback({c}, ' ', 5, 'praise', NULL)$$),
('wallet.record_feedback(bigint,text,integer,text,text,text)', 'member_ref oversized', '22023', $$SELECT wallet.record_feedback({c}, '{long}', 5, 'praise', NULL)$$),
('wallet.record_feedback(bigint,text,integer,text,text,text)', 'category blank', '22023', $$SELECT wallet.record_feedback({c}, 'vocab member', 5, ' ', NULL)$$),
('wallet.record_feedback(bigint,text,integer,text,text,text)', 'comment oversized', '22023', $$SELECT wallet.record_feedback({c}, 'vocab member', 5, 'praise', repeat('{long}', 20))$$),
('wallet.record_feedback(bigint,text,integer,text,text,text)', 'idempotency_key blank', '22023', $$SELECT wallet.record_feedback({c}, 'vocab member', 5, 'praise', NULL, ' ')$$),
('wallet.record_feedback(bigint,text,integer,text,text,text)', 'unknown campaign', 'WL101', $$SELECT wallet.record_feedback({unknown}, 'vocab member', 5, 'praise', NULL)$$),
('wallet.rfm(bigint,timestamp with time zone,text)', 'merchant_id NULL', '22004', 'SELECT count(*) FROM wallet.rfm(NULL)'),
('wallet.rfm(bigint,timestamp with time zone,text)', 'as_of NULL', '22004', 'SELECT count(*) FROM wallet.rfm({m}, NULL)'),
('wallet.rfm(bigint,timestamp with time zone,text)', 'currency blank', '22023', $$SELECT count(*) FROM wallet.rfm({m}, now(), ' ')$$),
('wallet.rfm(bigint,timestamp with time zone,text)', 'unknown merchant', 'WL102', 'SELECT count(*) FROM wallet.rfm({unknown})'),
('wallet.campaign_report(bigint,timestamp with time zone,timestamp with time zone,text)', 'campaign_id NULL', '22004', 'SELECT count(*) FROM wallet.campaign_report(NULL)'),
('wallet.campaign_report(bigint,timestamp with time zone,timestamp with time zone,text)', 'currency blank', '22023', $$SELECT count(*) FROM wallet.campaign_report({c}, currency => ' ')$$),
('wallet.campaign_report(bigint,timestamp with time zone,timestamp with time zone,text)', 'unknown campaign', 'WL101', 'SELECT count(*) FROM wallet.campaign_report({unknown})'),
('wallet.campaign_cohorts(bigint,timestamp with time zone,timestamp with time zone,integer,text)', 'campaign_id NULL', '22004', 'SELECT count(*) FROM wallet.campaign_cohorts(NULL)'),
('wallet.campaign_cohorts(bigint,timestamp with time zone,timestamp with time zone,integer,text)', 'months NULL', '22004', 'SELECT count(*) FROM wallet.campaign_cohorts({c}, months => NULL)'),
('wallet.campaign_cohorts(bigint,timestamp with time zone,timestamp with time zone,integer,text)', 'currency blank', '22023', $$SELECT count(*) FROM wallet.campaign_cohorts({c}, currency => ' ')$$),
('wallet.campaign_cohorts(bigint,timestamp with time zone,timestamp with time zone,integer,text)', 'unknown campaign', 'WL101', 'SELECT count(*) FROM wallet.campaign_cohorts({unknown})'),
('wallet_internal.campaign_group(bigint,bigint)', '-', 'internal', NULL),
('wallet_internal.campaign_members(bigint)', '-', 'internal', NULL),
('wallet_internal.campaign_seen(bigint)', '-', 'internal', NULL),
('wallet_internal.holdout_bucket(bytea,bigint,bigint)', '-', 'internal', NULL),
('wallet_internal.rfm_scores(bigint,timestamp with time zone,text)', '-', 'internal', NULL),
('wallet_internal.rfm_args(bigint,timestamp with time zone,text)', '-', 'internal', NULL),
('wallet_internal.t_quantile_975(numeric)', '-', 'internal', NULL),
('wallet_internal.report_period(wallet.campaigns,timestamp with time zone,timestamp with time zone,text)', '-', 'internal', NULL),
-- referrals and sharing (issue 11)
('wallet_internal.check_label(text,text,integer,boolean)', '-', 'internal', NULL),
('wallet_internal.merchant_refers(bigint)', '-', 'internal', NULL),
('wallet_internal.reward_setup_check(bigint,bigint)', '-', 'internal', NULL),
('wallet_internal.reward_points(bigint,bigint,bigint,text,text,text)', '-', 'internal', NULL),
('wallet_internal.campaign_running(bigint,bigint)', '-', 'internal', NULL),
('wallet_internal.idem_share(wallet.shares)', '-', 'internal', NULL),
('wallet.set_referral_program(bigint,bigint,bigint,bigint,integer,numeric,text,integer,text)', 'campaign_id NULL', '22004', 'SELECT wallet.set_referral_program(NULL, {p}, 1, 1, 30)'),
('wallet.set_referral_program(bigint,bigint,bigint,bigint,integer,numeric,text,integer,text)', 'program_id NULL', '22004', 'SELECT wallet.set_referral_program({c}, NULL, 1, 1, 30)'),
('wallet.set_referral_program(bigint,bigint,bigint,bigint,integer,numeric,text,integer,text)', 'referrer_points NULL', '22004', 'SELECT wallet.set_referral_program({c}, {p}, NULL, 1, 30)'),
('wallet.set_referral_program(bigint,bigint,bigint,bigint,integer,numeric,text,integer,text)', 'qualify_days NULL', '22004', 'SELECT wallet.set_referral_program({c}, {p}, 1, 1, NULL)'),
('wallet.set_referral_program(bigint,bigint,bigint,bigint,integer,numeric,text,integer,text)', 'cap_period blank', '22023', $$SELECT wallet.set_referral_program({c}, {p}, 1, 1, 30, cap_period => '')$$),
('wallet.set_referral_program(bigint,bigint,bigint,bigint,integer,numeric,text,integer,text)', 'points negative', 'WL204', 'SELECT wallet.set_referral_program({c}, {p}, -1, 1, 30)'),
('wallet.set_referral_program(bigint,bigint,bigint,bigint,integer,numeric,text,integer,text)', 'unknown campaign', 'WL101', 'SELECT wallet.set_referral_program({unknown}, {p}, 1, 1, 30)'),
('wallet.set_referral_program(bigint,bigint,bigint,bigint,integer,numeric,text,integer,text)', 'unknown program', 'WL214', 'SELECT wallet.set_referral_program({c}, {unknown}, 1, 1, 30)'),
('wallet.set_share_reward(bigint,bigint,bigint,integer,integer)', 'campaign_id NULL', '22004', 'SELECT wallet.set_share_reward(NULL, {p}, 1)'),
('wallet.set_share_reward(bigint,bigint,bigint,integer,integer)', 'points NULL', '22004', 'SELECT wallet.set_share_reward({c}, {p}, NULL)'),
('wallet.set_share_reward(bigint,bigint,bigint,integer,integer)', 'points zero', 'WL204', 'SELECT wallet.set_share_reward({c}, {p}, 0)'),
('wallet.set_share_reward(bigint,bigint,bigint,integer,integer)', 'unknown campaign', 'WL101', 'SELECT wallet.set_share_reward({unknown}, {p}, 1)'),
('wallet.set_share_reward(bigint,bigint,bigint,integer,integer)', 'unknown program', 'WL214', 'SELECT wallet.set_share_reward({c}, {unknown}, 1)'),
('wallet.refer(bigint,text,text,text,bigint,text,text)', 'merchant_id NULL', '22004', $$SELECT wallet.refer(NULL, 'a', 'b', 'link', {c})$$),
('wallet.refer(bigint,text,text,text,bigint,text,text)', 'referrer_ref NULL', '22004', $$SELECT wallet.refer({m}, NULL, 'b', 'link', {c})$$),
('wallet.refer(bigint,text,text,text,bigint,text,text)', 'referee_ref NULL', '22004', $$SELECT wallet.refer({m}, 'a', NULL, 'link', {c})$$),
('wallet.refer(bigint,text,text,text,bigint,text,text)', 'channel NULL', '22004', $$SELECT wallet.refer({m}, 'a', 'b', NULL, {c})$$),
('wallet.refer(bigint,text,text,text,bigint,text,text)', 'campaign_id NULL', '22004', $$SELECT wallet.refer({m}, 'a', 'b', 'link', NULL)$$),
('wallet.refer(bigint,text,text,text,bigint,text,text)', 'referrer_ref blank', '22023', $$SELECT wallet.refer({m}, ' ', 'b', 'link', {c})$$),
('wallet.refer(bigint,text,text,text,bigint,text,text)', 'referee_ref oversized', '22023', $$SELECT wallet.refer({m}, 'a', '{long}', 'link', {c})$$),
('wallet.refer(bigint,text,text,text,bigint,text,text)', 'channel blank', '22023', $$SELECT wallet.refer({m}, 'a', 'b', '', {c})$$),
('wallet.refer(bigint,text,text,text,bigint,text,text)', 'fingerprint blank', '22023', $$SELECT wallet.refer({m}, 'a', 'b', 'link', {c}, ' ')$$),
('wallet.refer(bigint,text,text,text,bigint,text,text)', 'fingerprint oversized', '22023', $$SELECT wallet.refer({m}, 'a', 'b', 'link', {c}, NULL, '{long}')$$),
('wallet.refer(bigint,text,text,text,bigint,text,text)', 'unknown merchant', 'WL102', $$SELECT wallet.refer({unknown}, 'a', 'b', 'link', {c})$$),
('wallet.refer(bigint,text,text,text,bigint,text,text)', 'unknown campaign', 'WL101', $$SELECT wallet.refer({m}, 'a', 'b', 'link', {unknown})$$),
('wallet.refer(bigint,text,text,text,bigint,text,text)', 'campaign without referral program', 'WL670', $$SELECT wallet.refer({m}, 'a', 'b', 'link', {c})$$),
('wallet.record_share(bigint,text,bigint,text,text)', 'merchant_id NULL', '22004', $$SELECT wallet.record_share(NULL, 'a', {c}, 'wechat')$$),
('wallet.record_share(bigint,text,bigint,text,text)', 'member_ref NULL', '22004', $$SELECT wallet.record_share({m}, NULL, {c}, 'wechat')$$),
('wallet.record_share(bigint,text,bigint,text,text)', 'campaign_id NULL', '22004', $$SELECT wallet.record_share({m}, 'a', NULL, 'wechat')$$),
('wallet.record_share(bigint,text,bigint,text,text)', 'channel NULL', '22004', $$SELECT wallet.record_share({m}, 'a', {c}, NULL)$$),
('wallet.record_share(bigint,text,bigint,text,text)', 'member_ref blank', '22023', $$SELECT wallet.record_share({m}, ' ', {c}, 'wechat')$$),
('wallet.record_share(bigint,text,bigint,text,text)', 'channel oversized', '22023', $$SELECT wallet.record_share({m}, 'a', {c}, '{long}')$$),
('wallet.record_share(bigint,text,bigint,text,text)', 'idempotency key blank', '22023', $$SELECT wallet.record_share({m}, 'a', {c}, 'wechat', ' ')$$),
('wallet.record_share(bigint,text,bigint,text,text)', 'unknown merchant', 'WL102', $$SELECT wallet.record_share({unknown}, 'a', {c}, 'wechat')$$),
('wallet.record_share(bigint,text,bigint,text,text)', 'unknown campaign', 'WL101', $$SELECT wallet.record_share({m}, 'a', {unknown}, 'wechat')$$),
('wallet.record_share(bigint,text,bigint,text,text)', 'campaign without share reward', 'WL671', $$SELECT wallet.record_share({m}, 'a', {c}, 'wechat')$$),
('wallet.expire_referrals(timestamp with time zone,integer)', 'as_of NULL', '22004', 'SELECT wallet.expire_referrals(NULL)'),
('wallet.expire_referrals(timestamp with time zone,integer)', 'batch_size NULL', '22004', $$SELECT wallet.expire_referrals('-infinity', NULL)$$),
('wallet.expire_referrals(timestamp with time zone,integer)', 'as_of in the future', '22023', $$SELECT wallet.expire_referrals('infinity')$$);

SELECT plan(7 + (SELECT count(*)::int FROM vocab WHERE call IS NOT NULL));

-- Every function of the extension has its expectations here, but type I/O
-- (NULL never reaches it) and trigger functions (they take no arguments).
CREATE TEMP VIEW ext_fn AS
SELECT p.oid, p.proisstrict, p.pronargs, p.proargtypes
  FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
 WHERE d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT e.oid FROM pg_extension e WHERE e.extname = 'wallet')
   AND p.prorettype <> 'trigger'::regtype
   AND NOT EXISTS (SELECT FROM pg_type t WHERE p.oid IN (t.typinput, t.typoutput, t.typreceive, t.typsend));
SELECT is_empty($$SELECT f.oid::regprocedure::text FROM ext_fn f
                   WHERE f.oid NOT IN (SELECT to_regprocedure(v.fn) FROM vocab v WHERE to_regprocedure(v.fn) IS NOT NULL)$$,
                'every function of the extension (but type I/O and triggers) has a row in the table of expectations');
SELECT is_empty($$SELECT DISTINCT v.fn FROM vocab v WHERE to_regprocedure(v.fn) IS NULL$$,
                'every row of the table names a function that exists');
SELECT is_empty($$SELECT f.oid::regprocedure::text FROM ext_fn f
                   WHERE f.proisstrict AND f.pronargs > 0 AND NOT 'internal'::regtype = ANY (f.proargtypes::oid[])
                     AND f.oid NOT IN (SELECT to_regprocedure(v.fn) FROM vocab v WHERE v.expect = 'null')$$,
                'only functions of a value are STRICT (no API function turns a missing argument into NULL)');

SELECT throws_ok(pg_temp.sub(v.call), v.expect, NULL, format('%s, %s: %s', v.fn, v.what, v.expect))
  FROM vocab v WHERE v.expect ~ '^[0-9A-Z]{5}$' ORDER BY v.n;
SELECT ok(pg_temp.yields_null(pg_temp.sub(v.call)), format('%s, %s: NULL (a function of a value)', v.fn, v.what))
  FROM vocab v WHERE v.expect = 'null' ORDER BY v.n;

-- A code's text is input, judged rather than refused: blank is malformed.
SELECT is((wallet.parse_code('')).status, 'malformed', 'parse_code: a blank text is malformed, not an error');
SELECT is(wallet.check_code('  '::text, 'vocab member'), 'malformed', 'check_code: a blank code is malformed, not an error');

-- Campaign ids end at 2^32 - 1 (a code carries 32 bits): then WL110, not
-- the identity's raw sequence error.  RESTART is transactional.
ALTER TABLE wallet.campaigns ALTER COLUMN campaign_id RESTART WITH 4294967295;
SELECT is(wallet.create_campaign((SELECT v::bigint FROM fx WHERE k = 'm'), 'the last'), 4294967295::bigint,
          'the campaign id 4294967295 is handed out');
SELECT throws_ok(pg_temp.sub($$SELECT wallet.create_campaign({m}, 'one too many')$$), 'WL110', 'campaign ids are exhausted',
                 'past campaign id 2^32 - 1: WL110 campaign ids are exhausted');

SELECT * FROM finish();
ROLLBACK;

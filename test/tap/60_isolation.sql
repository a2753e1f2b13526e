-- pgTAP: roles, privileges and merchant isolation (issue 9).
--
-- Two merchants, A and B, each with one object of every kind.  Roles of A:
-- iso_a_app (wallet_app), iso_a_admin (wallet_admin), iso_a_reader
-- (wallet_reader); iso_b_reader reads B.
--   1. privileges: nothing for PUBLIC, no table written by any of the three
--      roles (every table of the extension, from the catalog), what each role
--      may call;
--   2. row-level security: A's reader and app see every row of A and none of
--      B, in every table of the extension (from the catalog);
--   3. every function of schema wallet (from the catalog, so that a function
--      added later fails here until it has a row) called as A's role with
--      B's ids behaves exactly as with ids that do not exist: the same
--      SQLSTATE and message (or the same result, for the code checks, which
--      answer with a status), and B's data, as B's reader sees it, is
--      unchanged.
BEGIN;
SET LOCAL timezone = 'UTC';
SELECT * FROM no_plan();

\set forge_schema pg_temp
\ir ../forge.sql

CREATE ROLE iso_a_app;
CREATE ROLE iso_a_admin;
CREATE ROLE iso_a_reader;
CREATE ROLE iso_b_reader;
CREATE ROLE iso_b_app;
GRANT wallet_app TO iso_a_app, iso_b_app;
GRANT wallet_admin TO iso_a_admin;
GRANT wallet_reader TO iso_a_reader, iso_b_reader;

-- One object of every kind for merchant t, ids in fx as t.name.
CREATE TEMP TABLE fx (k text PRIMARY KEY, v text NOT NULL);
CREATE FUNCTION pg_temp.loyalty_rows(m bigint, p bigint, a bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    mem bigint := (SELECT member_id FROM wallet.accounts WHERE account_id = a);
    ti bigint;
BEGIN
    -- purchases, refunds, earning rules and their counters through their API
    PERFORM wallet.set_program_earning(p, 'CNY');
    PERFORM wallet.create_earning_rule(p, 'iso rule', 'per_unit', 1, caps => '{"per_member_day": 1000}', valid_from => now() - interval '1 day');
    PERFORM wallet.record_purchase(m, 'iso-member', 'iso-order', 10, 'CNY');
    PERFORM wallet.record_refund(m, 'iso-order', 1, 'iso-refund');
    PERFORM wallet.track_event(m, (SELECT w.member_ref FROM wallet.members w WHERE w.member_id = mem), 'cart_updated');
    -- tiers through their API: the account (100 points) moves up when the
    -- tier is evaluated (account_tiers, tier_history, a tier_changed event);
    -- a policy change leaves a sweep pending (tier_sweeps)
    ti := wallet.create_tier(p, 1, 'Gold', 50);
    PERFORM wallet.evaluate_tiers(p);
    PERFORM wallet.set_tier_policy(p, tier_downgrade => 'grace');
END
$$;

-- referrals and sharing (issue 11), through the API; the purchase of the
-- referee (written directly, as loyalty_rows) rewards the first referral
CREATE FUNCTION pg_temp.referral_rows(m bigint, c bigint, p bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM wallet.set_referral_program(c, p, 10, 5, 30, max_per_referrer => 5);
    PERFORM wallet.set_share_reward(c, p, 3, 10, 5);
    PERFORM wallet.refer(m, 'iso-member', 'iso-friend', 'link', c, 'iso-fp-1', 'iso-fp-2');
    PERFORM wallet.refer(m, 'iso-member', 'iso-friend-2', 'link', c);
    INSERT INTO wallet.purchases (merchant_id, member_id, order_ref, amount, currency, occurred_at)
    VALUES (m, wallet_internal.member_ensure(m, 'iso-friend'), 'iso-friend-order', 10, 'CNY', now());
    PERFORM wallet.record_share(m, 'iso-member', c, 'wechat', 'iso-s');
END
$$;

CREATE FUNCTION pg_temp.fixture(t text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    m bigint;
    c bigint;
    p bigint;
    a bigint;
    codes text[];
BEGIN
    m := wallet.create_merchant('iso ' || t);
    c := wallet.create_campaign(m, 'iso campaign', max_redemptions_per_code => 2, max_redemptions_per_member => 5,
                                max_redemptions_total => 100);
    SELECT array_agg(g::text ORDER BY g) INTO codes FROM wallet.generate_codes(c, 4) g;
    INSERT INTO fx VALUES (t || '.m', m), (t || '.c', c), (t || '.code', codes[1]), (t || '.code2', codes[2]);
    INSERT INTO fx SELECT t || '.r', redemption_id FROM wallet.redeem_code(codes[3], 'iso-member', 'iso-r');
    INSERT INTO fx SELECT t || '.v', reservation_id FROM wallet.reserve_code(codes[4], 'iso-member', 'iso-v', interval '1 hour');
    INSERT INTO fx SELECT t || '.bound', wallet.issue_code(c, 'iso-member')::text;
    PERFORM wallet.check_code(pg_temp.forge(codes[1]), 'iso-member', '{"source": "iso-device"}');   -- a failed attempt
    PERFORM wallet.set_code_guard(50, 200, interval '10 minutes', m);
    PERFORM wallet.rotate_code_key(c);
    p := wallet.create_program(m, 'iso program', interval '1 year');
    a := wallet.open_account(p, 'iso-member');
    INSERT INTO fx VALUES (t || '.p', p), (t || '.a', a);
    INSERT INTO fx SELECT t || '.e', entry_id FROM wallet.accrue(a, 100, 'iso-k1', 'welcome');
    INSERT INTO fx SELECT t || '.h', entry_id FROM wallet.hold(a, 10, 'iso-h1', interval '1 hour', 'cart');
    -- loyalty rows (written directly: the data model landed before its API)
    PERFORM pg_temp.loyalty_rows(m, p, a);
    PERFORM wallet.set_campaign_budget(c, 'money', 10000);
    PERFORM wallet_internal.budget_hold(c, 500, interval '1 hour');
    INSERT INTO fx SELECT t || '.rule', r.rule_id FROM wallet.earning_rules r WHERE r.program_id = p;
    -- campaign audience, feedback and costs (issue 11)
    PERFORM wallet.set_campaign_audience(c, 'list', 0, member_refs => '{iso-member}');
    PERFORM wallet.record_feedback(c, 'iso-member', 4, 'praise', 'iso comment');
    INSERT INTO wallet.campaign_costs (merchant_id, campaign_id, kind, amount, currency) VALUES (m, c, 'discount', 1, 'CNY');
    PERFORM pg_temp.referral_rows(m, c, p);
    INSERT INTO fx SELECT t || '.t', x.tier_id FROM wallet.tiers x WHERE x.program_id = p;
    -- push queue (issue 12): a row in every push table; the channel is the merchant's own here
    PERFORM wallet.set_push_settings(m, NULL, NULL);
    PERFORM wallet.set_push_topic(m, 'orders', true);
    PERFORM wallet.set_push_cap(m, 'iso_' || lower(t), 'marketing', 'day', 3);
    PERFORM wallet.record_consent(m, 'iso-member', 'iso_' || lower(t), 'marketing', true, 'app', 'v1', 'iso-device');
    PERFORM wallet.set_push_preferences(m, 'iso-member', topics => ARRAY['marketing']);
    PERFORM wallet.enqueue_push(m, 'iso-member', 'iso_' || lower(t), 'marketing', '{"title": "hello"}', dedup_key => 'iso-push');
    PERFORM wallet.enqueue_push(m, 'iso-member', 'iso_' || lower(t), 'orders', '{"title": "shipped"}', priority => 9);
    PERFORM wallet.enqueue_push(m, 'iso-member', 'iso_' || lower(t), 'orders', '{"title": "delivered"}', priority => 8);
    INSERT INTO fx SELECT t || '.push', c.push_id FROM wallet.claim_pushes('iso_' || lower(t), 1, interval '1 minute') c;
    PERFORM wallet.ack_push((SELECT v::bigint FROM fx WHERE k = t || '.push'), 'provider-1');
    INSERT INTO fx SELECT t || '.dead', c.push_id FROM wallet.claim_pushes('iso_' || lower(t), 1, interval '1 minute') c;
    PERFORM wallet.fail_push((SELECT v::bigint FROM fx WHERE k = t || '.dead'), 'invalid token', false);
    PERFORM wallet.record_push_event((SELECT v::bigint FROM fx WHERE k = t || '.push'), 'opened');
    PERFORM wallet.set_push_store(m, 'iso store', 47.0, 8.0, 100);
    PERFORM wallet.create_push_trigger(m, 'tier_changed', 'iso_' || lower(t), 'marketing', '{}');
    INSERT INTO fx VALUES (t || '.ch', 'iso_' || lower(t));
    -- offers (issue 11): an offer with a cap, a quote holding budget, a purchase that used the offer
    INSERT INTO fx VALUES (t || '.offer', wallet.create_offer(c, 'iso offer', 'fixed', 1, 'CNY', caps => '{"per_member": 5}'));
    INSERT INTO fx SELECT t || '.quote', q.quote_id FROM wallet.quote_offers(m, 'iso-member', 10, 'CNY', hold_ttl => '1 hour') q LIMIT 1;
    PERFORM wallet.record_purchase(m, 'iso-member', 'iso-offer-order', 10, 'CNY',
                                   offers => ARRAY[(SELECT v::bigint FROM fx WHERE k = t || '.offer')]);
    -- a first-purchase offer on a member's first purchase (wallet.first_purchases)
    PERFORM wallet.record_purchase(m, 'iso-first', 'iso-first-order', 10, 'CNY',
                                   offers => ARRAY[wallet.create_offer(c, 'iso first', 'fixed', 1, 'CNY', conditions => '{"first_purchase": true}')]);
END
$$;

CREATE TEMP TABLE tables AS
SELECT c.oid::regclass AS t FROM pg_class c
 WHERE c.relnamespace IN ('wallet'::regnamespace, 'wallet_internal'::regnamespace) AND c.relkind IN ('r', 'p');
SELECT ok((SELECT count(*) FROM tables WHERE t IN ('wallet.members'::regclass, 'wallet.audit_log'::regclass)) = 2,
          'the tables of members and the audit log are among them');

-- A first: every row there is then is A's.
SELECT pg_temp.fixture('A');
SELECT wallet.grant_merchant((SELECT v::bigint FROM fx WHERE k = 'A.m'), r)
  FROM unnest('{iso_a_app,iso_a_admin,iso_a_reader}'::regrole[]) r;
CREATE TEMP TABLE a_rows (t regclass, r text);
DO $$
DECLARE
    t regclass;
BEGIN
    FOR t IN SELECT x.t FROM tables x LOOP
        EXECUTE format('INSERT INTO a_rows SELECT %L, x::text FROM %s x', t, t);
    END LOOP;
END
$$;
SELECT pg_temp.fixture('B');
-- The calls below fail many checks for one member: no throttling here (the
-- guard's counts of failures are in shared memory and outlive this transaction).
SELECT wallet.set_code_guard(NULL, NULL, interval '1 second');
SELECT wallet.grant_merchant((SELECT v::bigint FROM fx WHERE k = 'B.m'), r)
  FROM unnest('{iso_b_reader,iso_b_app}'::regrole[]) r;

-- A code of a campaign that does not exist: made, then rolled back.
SAVEPOINT vanish;
SELECT wallet.create_campaign((SELECT v::bigint FROM fx WHERE k = 'A.m'), 'vanishing') AS vanishing \gset
SELECT g::text AS unknown_code FROM wallet.generate_codes(:vanishing, 1) g \gset
ROLLBACK TO SAVEPOINT vanish;
INSERT INTO fx VALUES ('U.code', :'unknown_code'), ('U.code2', :'unknown_code'), ('U.bound', :'unknown_code');
INSERT INTO fx SELECT 'U.' || k, '999999999' FROM unnest('{m,c,r,v,p,a,e,h,rule,t}'::text[]) k;
INSERT INTO fx SELECT 'U.' || k, '999999999' FROM unnest('{push,dead}'::text[]) k;
INSERT INTO fx VALUES ('U.ch', 'iso_u');
INSERT INTO fx SELECT 'U.' || k, '999999999' FROM unnest('{offer,quote}'::text[]) k;
SELECT is((SELECT count(DISTINCT merchant_id) FROM wallet.code_redemptions WHERE idempotency_key = 'iso-r')
          + (SELECT count(DISTINCT merchant_id) FROM wallet.code_reservations WHERE idempotency_key = 'iso-v'), 4::bigint,
          'A and B redeem and reserve with the same idempotency keys: one redemption and one reservation each');
SELECT is(wallet.check_code(:'unknown_code'::text, 'iso-member'), 'unknown_campaign',
          'fixture: the code of the rolled-back campaign is of an unknown campaign');

-- Rows of a table as a role sees them.
CREATE FUNCTION pg_temp.visible(t regclass, r text) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    rows text[];
BEGIN
    EXECUTE format('SET ROLE %I', r);
    EXECUTE format('SELECT coalesce(array_agg(x::text), ''{}'') FROM %s x', t) INTO rows;
    RESET ROLE;
    RETURN rows;
END
$$;

-- ------------------------------------------------------------ 1. privileges

SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc p
                   WHERE p.pronamespace IN ('wallet'::regnamespace, 'wallet_internal'::regnamespace)
                     AND (p.proacl IS NULL OR EXISTS (SELECT FROM aclexplode(p.proacl) a WHERE a.grantee = 0))$$,
                'no function or procedure of the extension is executable by PUBLIC');
SELECT is_empty($$SELECT r FROM unnest('{wallet_admin,wallet_app,wallet_reader}'::text[]) r
                   WHERE has_schema_privilege(r, 'wallet_internal', 'USAGE') <> (r = 'wallet_admin') OR NOT has_schema_privilege(r, 'wallet', 'USAGE')$$,
                'the three roles use schema wallet; of wallet_internal only wallet_admin (for the maintenance procedures)');
SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc p
                   WHERE p.pronamespace = 'wallet_internal'::regnamespace
                     AND (has_function_privilege('wallet_admin', p.oid, 'EXECUTE') OR has_function_privilege('wallet_app', p.oid, 'EXECUTE')
                          OR has_function_privilege('wallet_reader', p.oid, 'EXECUTE'))
                     AND p.oid NOT IN ('wallet_internal.check_expiry_as_of(timestamptz)'::regprocedure,
                                       'wallet_internal.expire_due_accounts(timestamptz,integer)'::regprocedure,
                                       'wallet_internal.tier_programs_due(bigint,timestamptz)'::regprocedure,
                                       'wallet_internal.forget_sweep(interval,integer)'::regprocedure)$$,
                'no internal helper is executable by the roles but those the maintenance procedures call');
SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc p
                   WHERE p.pronamespace IN ('wallet'::regnamespace, 'wallet_internal'::regnamespace)
                     AND 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig) AND p.prokind = 'f'
                     AND p.prorettype <> 'trigger'::regtype AND NOT p.prosecdef$$,
                'every function that pins search_path (every one that reads or writes a table) is SECURITY DEFINER');

SET ROLE iso_a_app;
SELECT throws_ok($$UPDATE wallet.accounts SET ledger = 'lots={1000000@never}'$$, '42501', NULL,
                 'the app cannot rewrite a ledger');
RESET ROLE;
CREATE FUNCTION pg_temp.refused(t regclass, r text, stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('SET ROLE %I', r);
    EXECUTE format(stmt, t);
    RESET ROLE;
    RETURN 'allowed';
EXCEPTION WHEN insufficient_privilege THEN
    RETURN 'refused';
END
$$;
SELECT is_empty($$SELECT x.t::text || ': ' || s || ' as ' || r
                   FROM tables x, unnest('{iso_a_app,iso_a_admin,iso_a_reader}'::text[]) r,
                        unnest(ARRAY['INSERT INTO %s DEFAULT VALUES', 'UPDATE %s x SET ctid = x.ctid WHERE false',
                                     'DELETE FROM %s WHERE false', 'TRUNCATE %s']) s
                  WHERE pg_temp.refused(x.t, r, replace(s, 'SET ctid = x.ctid',
                          'SET ' || (SELECT quote_ident(a.attname) FROM pg_attribute a
                                      WHERE a.attrelid = x.t AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity = ''
                                        AND a.attgenerated = '' ORDER BY a.attnum LIMIT 1)
                          || ' = x.' || (SELECT quote_ident(a.attname) FROM pg_attribute a
                                      WHERE a.attrelid = x.t AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity = ''
                                        AND a.attgenerated = '' ORDER BY a.attnum LIMIT 1))) <> 'refused'$$,
                'INSERT, UPDATE, DELETE and TRUNCATE of every table of the extension are refused to each of the three roles');
SELECT ok((SELECT count(*) FROM tables) >= 15, 'the tables are enumerated from the catalog');

SELECT is_empty($$SELECT f FROM unnest(ARRAY['wallet.code_authentic(wallet.marketing_code)', 'wallet.code_status(wallet.marketing_code)', 'wallet.parse_code(text)', 'wallet.generate_codes(bigint,integer)', 'wallet.rotate_code_key(bigint)', 'wallet.create_campaign(bigint,text,text,integer,timestamp with time zone,timestamp with time zone,integer,integer,bigint)']) f
                   WHERE has_function_privilege('wallet_app', f, 'EXECUTE')$$,
                'the app gets neither the unthrottled verifiers nor the right to mint codes');
SELECT is_empty($$SELECT f FROM unnest(ARRAY['wallet.redeem_code(text,text,text,jsonb)', 'wallet.reserve_code(text,text,text,interval,jsonb)', 'wallet.check_code(text,text)', 'wallet.issue_code(bigint,text)', 'wallet.accrue(bigint,bigint,text,text,text,timestamp with time zone)', 'wallet.hold(bigint,bigint,text,interval,text,text)', 'wallet.capture(bigint,bigint,text)']) f
                   WHERE NOT has_function_privilege('wallet_app', f, 'EXECUTE')$$,
                'the app checks, reserves and redeems codes, issues bound ones and posts points');
SELECT is_empty($$SELECT r || ' ' || f FROM unnest('{wallet_admin,wallet_reader}'::text[]) r,
                   unnest(ARRAY['wallet.code_authentic(wallet.marketing_code)', 'wallet.code_status(wallet.marketing_code)', 'wallet.parse_code(text)']) f
                   WHERE NOT has_function_privilege(r, f, 'EXECUTE')$$,
                'admin and reader may use the unthrottled verifiers');
SELECT is_empty($$SELECT f FROM unnest(ARRAY['wallet.accrue(bigint,bigint,text,text,text,timestamp with time zone)', 'wallet.redeem_code(text,text,text,jsonb)', 'wallet.create_program(bigint,text,interval,text)', 'wallet.grant_merchant(bigint,regrole)']) f
                   WHERE has_function_privilege('wallet_reader', f, 'EXECUTE')$$,
                'the reader changes nothing');
SET ROLE iso_a_app;
SELECT is((SELECT array_agg(name ORDER BY name) FROM wallet.my_merchants()), '{"iso A"}', 'my_merchants: A''s app acts for A only');
RESET ROLE;

-- ------------------------------------------------------------ 2. row-level security

CREATE TEMP TABLE b_count AS
SELECT x.t, (SELECT count(*) FROM unnest(pg_temp.visible(x.t, current_user::text)) r
              WHERE r NOT IN (SELECT a.r FROM a_rows a WHERE a.t = x.t)) AS n
  FROM tables x;
-- (of the push queue slots only the current one has rows until the queue turns)
SELECT is_empty($$SELECT t::text FROM b_count WHERE n = 0 AND t <> 'wallet.installation'::regclass
                     AND t::text !~ '^wallet\.push_messages_q[0-2]$'$$,
                'fixture: B has rows in every table of merchant data');
SELECT is_empty($$SELECT x.t::text || ' as ' || r || ': ' || v
                   FROM tables x, unnest('{iso_a_app,iso_a_reader}'::text[]) r, unnest(pg_temp.visible(x.t, r)) v
                  WHERE x.t <> 'wallet.installation'::regclass
                    AND v NOT IN (SELECT a.r FROM a_rows a WHERE a.t = x.t)$$,
                'A''s app and reader see none of B''s rows, in every table');
SELECT is_empty($$SELECT x.t::text || ' as ' || r
                   FROM tables x, unnest('{iso_a_app,iso_a_reader}'::text[]) r
                  WHERE (SELECT count(*) FROM a_rows a WHERE a.t = x.t) <> cardinality(pg_temp.visible(x.t, r))$$,
                'A''s app and reader see every row of A, in every table');

-- ------------------------------------------------------------ 3. every function, with B's ids

-- call: one query returning one value, {name} standing for B's (or unknown) ids;
-- NULL with why: 'no object' (names no merchant's object) or 'internal'
-- (none of the three roles may execute it).
CREATE TEMP TABLE iso (n serial, fn text NOT NULL, call text, why text);
INSERT INTO iso (fn, call, why) VALUES
('wallet.create_program(bigint,text,interval,text)', $$SELECT wallet.create_program({m}, 'iso new')$$, NULL),
('wallet.close_program(bigint)', 'SELECT wallet.close_program({p})', NULL),
('wallet.open_account(bigint,text)', $$SELECT wallet.open_account({p}, 'iso newcomer')$$, NULL),
('wallet.find_account(bigint,text)', $$SELECT wallet.find_account({p}, 'iso-member')$$, NULL),
('wallet.accrue(bigint,bigint,text,text,text,timestamp with time zone)', $$SELECT entry_id FROM wallet.accrue({a}, 5, 'iso-new', 'why')$$, NULL),
('wallet.redeem(bigint,bigint,text,text,text)', $$SELECT entry_id FROM wallet.redeem({a}, 5, 'iso-new', 'why')$$, NULL),
('wallet.hold(bigint,bigint,text,interval,text,text)', $$SELECT entry_id FROM wallet.hold({a}, 5, 'iso-new', '1 hour', 'why')$$, NULL),
('wallet.capture(bigint,bigint,text)', 'SELECT entry_id FROM wallet.capture({h})', NULL),
('wallet.release(bigint,text)', 'SELECT entry_id FROM wallet.release({h})', NULL),
('wallet.reverse(bigint,text,text,text)', $$SELECT entry_id FROM wallet.reverse({e}, 'iso-new', 'why')$$, NULL),
('wallet.adjust(bigint,bigint,text,text)', $$SELECT entry_id FROM wallet.adjust({a}, 5, 'iso-new', 'why')$$, NULL),
('wallet.balance(bigint,timestamp with time zone)', 'SELECT wallet.balance({a})', NULL),
('wallet.balance_at(bigint,timestamp with time zone)', 'SELECT wallet.balance_at({a}, now())', NULL),
('wallet.history(bigint,timestamp with time zone,timestamp with time zone)', 'SELECT count(*) FROM wallet.history({a})', NULL),
('wallet.replay_ledger(bigint,timestamp with time zone)', 'SELECT wallet.replay_ledger({a})::text', NULL),
('wallet.program_liability(bigint,timestamp with time zone)', 'SELECT count(*) FROM wallet.program_liability({p})', NULL),
('wallet.verify_ledger(bigint)', 'SELECT count(*) FROM wallet.verify_ledger({a})', NULL),
('wallet.create_campaign(bigint,text,text,integer,timestamp with time zone,timestamp with time zone,integer,integer,bigint)', $$SELECT wallet.create_campaign({m}, 'iso new')$$, NULL),
('wallet.rotate_code_key(bigint)', 'SELECT wallet.rotate_code_key({c})', NULL),
('wallet.retire_code_key(bigint,integer)', 'SELECT wallet.retire_code_key({c}, 1)', NULL),
('wallet.generate_codes(bigint,integer)', 'SELECT count(*) FROM wallet.generate_codes({c}, 1)', NULL),
('wallet.issue_code(bigint,text)', $$SELECT wallet.issue_code({c}, 'iso-member')$$, NULL),
('wallet.code_authentic(wallet.marketing_code)', $$SELECT wallet.code_authentic('{code}')$$, NULL),
('wallet.code_status(wallet.marketing_code)', $$SELECT wallet.code_status('{code}')$$, NULL),
('wallet.parse_code(text)', $$SELECT status FROM wallet.parse_code('{code}')$$, NULL),
('wallet.check_code(text,text)', $$SELECT wallet.check_code('{code}'::text, 'iso-member'::text)$$, NULL),
('wallet.check_code(text,text,jsonb)', $$SELECT wallet.check_code('{bound}'::text, 'iso-member', '{}')$$, NULL),
('wallet.check_code(wallet.marketing_code,text,jsonb)', $$SELECT wallet.check_code('{code2}'::wallet.marketing_code, 'iso-member')$$, NULL),
('wallet.redeem_code(text,text,text,jsonb)', $$SELECT (r.status, r.replayed)::text FROM wallet.redeem_code('{code}'::text, 'iso-member', 'iso-r') r$$, NULL),
('wallet.redeem_code(wallet.marketing_code,text,text,jsonb)', $$SELECT (r.status, r.replayed)::text FROM wallet.redeem_code('{bound}'::wallet.marketing_code, 'iso-member', 'iso-new') r$$, NULL),
('wallet.reserve_code(text,text,text,interval,jsonb)', $$SELECT (r.status, r.replayed)::text FROM wallet.reserve_code('{code}'::text, 'iso-member', 'iso-v', '1 hour') r$$, NULL),
('wallet.reserve_code(wallet.marketing_code,text,text,interval,jsonb)', $$SELECT (r.status, r.replayed)::text FROM wallet.reserve_code('{code2}'::wallet.marketing_code, 'iso-member', 'iso-new', '1 hour') r$$, NULL),
('wallet.undo_redemption(bigint,text)', $$SELECT redemption_id FROM wallet.undo_redemption({r}, 'why')$$, NULL),
('wallet.release_reservation(bigint)', 'SELECT reservation_id FROM wallet.release_reservation({v})', NULL),
('wallet.set_code_guard(integer,integer,interval,bigint)', $$SELECT wallet.set_code_guard(1, 1, '1 minute', {m})$$, NULL),
('wallet.clear_code_failures(text,text,bigint)', $$SELECT wallet.clear_code_failures('iso-member', 'iso-device', {m})$$, NULL),
('wallet.grant_merchant(bigint,regrole)', $$SELECT wallet.grant_merchant({m}, 'iso_a_app')$$, NULL),
('wallet.revoke_merchant(bigint,regrole)', $$SELECT wallet.revoke_merchant({m}, 'iso_b_app')$$, NULL),
('wallet.upsert_member(bigint,text,text,text)', $$SELECT member_id FROM wallet.upsert_member({m}, 'iso-member', 'Europe/Zurich')$$, NULL),
('wallet.forget_member(bigint,text,text)', $$SELECT wallet.forget_member({m}, 'iso-member', 'erasure request')$$, NULL),
('wallet.set_campaign_budget(bigint,text,bigint,integer)', $$SELECT (b.total, b.remaining)::text FROM wallet.set_campaign_budget({c}, 'money', 20000) b$$, NULL),
('wallet.campaign_budget(bigint)', 'SELECT (b.total, b.granted)::text FROM wallet.campaign_budget({c}) b', NULL),
('wallet.reclaim_budget_holds(integer)', NULL, 'no object'),
-- purchases and earning rules (issue 10)
('wallet.set_program_earning(bigint,text,text,boolean,numeric)', $$SELECT wallet.set_program_earning({p}, 'CNY')$$, NULL),
('wallet.create_earning_rule(bigint,text,text,numeric,jsonb,jsonb,timestamp with time zone,timestamp with time zone,integer,boolean,bigint)', $$SELECT wallet.create_earning_rule({p}, 'iso new', 'fixed', 1)$$, NULL),
('wallet.update_earning_rule(bigint,text,numeric,jsonb,jsonb,timestamp with time zone,integer,boolean)', $$SELECT wallet.update_earning_rule({rule}, 'iso new')$$, NULL),
('wallet.end_earning_rule(bigint,timestamp with time zone)', 'SELECT wallet.end_earning_rule({rule})', NULL),
('wallet.record_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb,bigint[],text[],bigint)', $$SELECT points FROM wallet.record_purchase({m}, 'iso-member', 'iso-new-order', 10, 'CNY')$$, NULL),
('wallet.preview_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)', $$SELECT points FROM wallet.preview_purchase({m}, 'iso-member', 'iso-order', 10, 'CNY')$$, NULL),
('wallet.record_refund(bigint,text,numeric,text)', $$SELECT points FROM wallet.record_refund({m}, 'iso-order', 1, 'iso-new')$$, NULL),
('wallet.campaign_group(bigint,text)', $$SELECT wallet.campaign_group({c}, 'iso-member')$$, NULL),
('wallet.set_campaign_audience(bigint,text,numeric,bigint,integer,text[],text[],timestamp with time zone)', $$SELECT wallet.set_campaign_audience({c}, 'list', 0, member_refs => '{iso-member,iso-new}')$$, NULL),
('wallet.record_feedback(bigint,text,integer,text,text,text)', $$SELECT wallet.record_feedback({c}, 'iso-member', 1, 'complaint', 'iso')$$, NULL),
('wallet.rfm(bigint,timestamp with time zone,text)', 'SELECT count(*) FROM wallet.rfm({m})', NULL),
('wallet.campaign_report(bigint,timestamp with time zone,timestamp with time zone,text)', 'SELECT audience_members FROM wallet.campaign_report({c})', NULL),
('wallet.campaign_cohorts(bigint,timestamp with time zone,timestamp with time zone,integer,text)', 'SELECT count(*) FROM wallet.campaign_cohorts({c})', NULL),
('wallet.set_campaign_redemption_value(bigint,numeric)', 'SELECT wallet.set_campaign_redemption_value({c}, 2)', NULL),
('wallet.record_campaign_cost(bigint,numeric,text,timestamp with time zone)', $$SELECT wallet.record_campaign_cost({c}, 5, 'CNY')$$, NULL),
('wallet.set_referral_program(bigint,bigint,bigint,bigint,integer,numeric,text,integer,text)', 'SELECT campaign_id FROM wallet.set_referral_program({c}, {p}, 1, 1, 30)', NULL),
('wallet.set_share_reward(bigint,bigint,bigint,integer,integer)', 'SELECT campaign_id FROM wallet.set_share_reward({c}, {p}, 1)', NULL),
('wallet.refer(bigint,text,text,text,bigint,text,text)', $$SELECT status FROM wallet.refer({m}, 'iso-member', 'iso-newcomer', 'link', {c})$$, NULL),
('wallet.record_share(bigint,text,bigint,text,text)', $$SELECT status FROM wallet.record_share({m}, 'iso-member', {c}, 'wechat', 'iso-s')$$, NULL),
('wallet.expire_referrals(timestamp with time zone,integer)', NULL, 'no object'),
('wallet.create_tier(bigint,integer,text,bigint,numeric,numeric,jsonb)', $$SELECT wallet.create_tier({p}, 2, 'iso new', 1000)$$, NULL),
('wallet.update_tier(bigint,text,bigint,numeric,numeric,jsonb,boolean)', $$SELECT (wallet.update_tier({t}, 'iso renamed')).tier_id$$, NULL),
('wallet.drop_tier(bigint)', 'SELECT wallet.drop_tier({t})', NULL),
('wallet.set_tier_policy(bigint,text,integer,text,integer,text)', $$SELECT (wallet.set_tier_policy({p}, 'calendar_year')).program_id$$, NULL),
('wallet.member_tier(bigint,timestamp with time zone)', 'SELECT rank FROM wallet.member_tier({a})', NULL),
('wallet.tier_progress(bigint)', 'SELECT earned FROM wallet.tier_progress({a})', NULL),
('wallet.evaluate_tiers(bigint,timestamp with time zone,integer)', 'SELECT looked_at FROM wallet.evaluate_tiers({p})', NULL),
('wallet.evaluate_tiers_batched(bigint,timestamp with time zone,integer,integer)', 'CALL wallet.evaluate_tiers_batched({p})', NULL),
-- push queue (issue 12)
('wallet.set_push_settings(bigint,time without time zone,time without time zone,text,integer,interval,interval)', $$SELECT wallet.set_push_settings({m})$$, NULL),
('wallet.set_push_topic(bigint,text,boolean,text)', $$SELECT wallet.set_push_topic({m}, 'news', false)$$, NULL),
('wallet.set_push_cap(bigint,text,text,text,integer,interval,text)', $$SELECT wallet.set_push_cap({m}, 'push', 'marketing', 'week', 2)$$, NULL),
('wallet.record_consent(bigint,text,text,text,boolean,text,text,text,timestamp with time zone)', $$SELECT wallet.record_consent({m}, 'iso-member', '{ch}', 'marketing', false, 'app')$$, NULL),
('wallet.set_push_preferences(bigint,text,time without time zone,time without time zone,text[],integer,integer)', $$SELECT wallet.set_push_preferences({m}, 'iso-member', max_per_day => 0)$$, NULL),
('wallet.enqueue_push(bigint,text,text,text,jsonb,bigint,text,timestamp with time zone,timestamp with time zone,integer)', $$SELECT status FROM wallet.enqueue_push({m}, 'iso-member', '{ch}', 'orders', '{}')$$, NULL),
('wallet.enqueue_push_audience(bigint,text[],text,text,jsonb,bigint,text,timestamp with time zone,timestamp with time zone,integer)', $$SELECT count(*) FROM wallet.enqueue_push_audience({m}, NULL, '{ch}', 'orders', '{}')$$, NULL),
('wallet.push_channel(bigint,text)', $$SELECT wallet.push_channel({m}, '{ch}')$$, NULL),
('wallet.extend_lease(bigint,interval)', $$SELECT wallet.extend_lease({push}, '1 minute')$$, NULL),
('wallet.ack_push(bigint,text)', $$SELECT wallet.ack_push({push}, 'provider-2')$$, NULL),
('wallet.ack_pushes(bigint[],text[])', $$SELECT wallet.ack_pushes(ARRAY[{push}]::bigint[], '{provider-3}')$$, NULL),
('wallet.fail_push(bigint,text,boolean)', $$SELECT wallet.fail_push({push}, 'timeout')$$, NULL),
('wallet.extend_lease(bigint,interval,integer)', $$SELECT wallet.extend_lease({push}, '1 minute', 1)$$, NULL),
('wallet.ack_push(bigint,text,integer)', $$SELECT wallet.ack_push({push}, 'provider-2', 1)$$, NULL),
('wallet.ack_pushes(bigint[],text[],integer[])', $$SELECT wallet.ack_pushes(ARRAY[{push}]::bigint[], '{provider-3}', '{1}')$$, NULL),
('wallet.fail_push(bigint,text,boolean,integer)', $$SELECT wallet.fail_push({push}, 'timeout', true, 1)$$, NULL),
('wallet.requeue_push(bigint)', $$SELECT wallet.requeue_push({dead})$$, NULL),
('wallet.record_push_event(bigint,text,timestamp with time zone)', $$SELECT wallet.record_push_event({push}, 'clicked')$$, NULL),
('wallet.push_stats(bigint,bigint,interval,interval)', $$SELECT count(*) FROM wallet.push_stats({m}, {c})$$, NULL),
('wallet.push_funnel(bigint,bigint,interval,interval)', $$SELECT count(*) FROM wallet.push_funnel({m}, {c})$$, NULL),
('wallet.push_retention(bigint,bigint,integer)', $$SELECT count(*) FROM wallet.push_retention({m}, {c})$$, NULL),
('wallet.set_push_store(bigint,text,double precision,double precision,double precision,interval)', $$SELECT wallet.set_push_store({m}, 'iso store', 46.0, 7.0, 50)$$, NULL),
('wallet.track_event(bigint,text,text,jsonb,timestamp with time zone)', $$SELECT wallet.track_event({m}, 'iso-member', 'cart_updated')$$, NULL),
('wallet.create_push_trigger(bigint,text,text,text,jsonb,jsonb,bigint)', $$SELECT wallet.create_push_trigger({m}, 'tier_changed', 'push', 'marketing', '{}')$$, NULL),
('wallet.enqueue_push_local(bigint,text[],text,text,jsonb,timestamp without time zone,bigint,text,timestamp with time zone,integer)', $$SELECT count(*) FROM wallet.enqueue_push_local({m}, NULL, '{ch}', 'orders', '{}', '2030-12-24 09:00')$$, NULL),
('wallet.run_push_triggers(integer)', NULL, 'no object'),
('wallet.claim_pushes(text,integer,interval)', NULL, 'no object'),
('wallet.purge_pushes(integer)', NULL, 'no object'),
('wallet.rotate_push_queue(interval,integer)', NULL, 'no object'),
('wallet.create_offer(bigint,text,text,numeric,text,numeric,jsonb,jsonb,boolean,integer,boolean,boolean,timestamp with time zone,timestamp with time zone)', $$SELECT wallet.create_offer({c}, 'iso new offer', 'fixed', 1, 'CNY')$$, NULL),
('wallet.end_offer(bigint,timestamp with time zone)', 'SELECT wallet.end_offer({offer})', NULL),
('wallet.quote_offers(bigint,text,numeric,text,timestamp with time zone,jsonb,text[],interval)', $$SELECT count(*) FROM wallet.quote_offers({m}, 'iso-member', 10, 'CNY', hold_ttl => '1 hour')$$, NULL),
('wallet.release_quote(bigint)', 'SELECT wallet.release_quote({quote})', NULL),
('wallet.purge_offer_quotes(interval,integer)', NULL, 'no object'),
-- names no merchant's object
('wallet.version()', NULL, 'no object'),
('wallet.create_merchant(text)', NULL, 'no object'),
('wallet.acts_for(bigint)', NULL, 'no object'),
('wallet.my_merchants()', NULL, 'no object'),
('wallet.installation_id()', NULL, 'no object'),
('wallet.campaign_next_serial(bigint)', 'SELECT wallet.campaign_next_serial({c})', NULL),
('wallet.purge_code_attempts(interval)', NULL, 'no object'),
('wallet.expire_points(timestamp with time zone)', NULL, 'no object'),
('wallet.expire_points_batched(timestamp with time zone,integer,integer)', NULL, 'no object'),
('wallet.run_maintenance()', NULL, 'no object'),
('wallet.code_campaign(wallet.marketing_code)', NULL, 'no object'),
('wallet.code_serial(wallet.marketing_code)', NULL, 'no object'),
('wallet.code_key_version(wallet.marketing_code)', NULL, 'no object'),
('wallet.code_mac_bits(wallet.marketing_code)', NULL, 'no object'),
('wallet.code_prefix(wallet.marketing_code)', NULL, 'no object'),
('wallet.ledger_balance(wallet.points_ledger,timestamp with time zone)', NULL, 'no object'),
('wallet.ledger_expiring(wallet.points_ledger,timestamp with time zone,interval)', NULL, 'no object'),
('wallet.ledger_earned(wallet.points_ledger,timestamp with time zone,timestamp with time zone)', NULL, 'no object'),
('wallet.ledger_lots(wallet.points_ledger)', NULL, 'no object'),
('wallet.ledger_totals(wallet.points_ledger)', NULL, 'no object'),
('wallet.ledger_diff(wallet.points_ledger,wallet.points_ledger)', NULL, 'no object'),
('wallet.policy_expiry(timestamp with time zone,interval,text)', NULL, 'no object');
-- type input/output and operator support: values only
INSERT INTO iso (fn, why)
SELECT p.oid::regprocedure::text, 'no object' FROM pg_proc p
 WHERE p.pronamespace = 'wallet'::regnamespace AND p.proname ~ '^(marketing_code|points_ledger)_';
-- everything else of schema wallet is an internal helper (asserted below)
INSERT INTO iso (fn, why)
SELECT p.oid::regprocedure::text, 'internal' FROM pg_proc p
 WHERE p.pronamespace = 'wallet'::regnamespace AND p.prorettype <> 'trigger'::regtype
   AND p.oid NOT IN (SELECT to_regprocedure(i.fn) FROM iso i WHERE to_regprocedure(i.fn) IS NOT NULL)
   AND NOT has_function_privilege('wallet_admin', p.oid, 'EXECUTE')
   AND NOT has_function_privilege('wallet_app', p.oid, 'EXECUTE')
   AND NOT has_function_privilege('wallet_reader', p.oid, 'EXECUTE');

SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc p
                   WHERE p.pronamespace = 'wallet'::regnamespace AND p.prorettype <> 'trigger'::regtype
                     AND p.oid NOT IN (SELECT to_regprocedure(i.fn) FROM iso i WHERE to_regprocedure(i.fn) IS NOT NULL)$$,
                'every function of schema wallet that one of the three roles may execute has a row (call or why not)');
SELECT is_empty($$SELECT i.fn FROM iso i WHERE to_regprocedure(i.fn) IS NULL$$, 'every row names a function that exists');
SELECT is_empty($$SELECT i.fn FROM iso i WHERE i.why = 'internal'
                     AND (has_function_privilege('wallet_admin', i.fn, 'EXECUTE') OR has_function_privilege('wallet_app', i.fn, 'EXECUTE')
                          OR has_function_privilege('wallet_reader', i.fn, 'EXECUTE'))$$,
                'no role may execute a function marked internal');

-- The role that calls: A's app where wallet_app may execute the function, else A's admin, else A's reader.
CREATE FUNCTION pg_temp.caller_for(fn text) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN has_function_privilege('wallet_app', fn, 'EXECUTE') THEN 'iso_a_app'
                WHEN has_function_privilege('wallet_admin', fn, 'EXECUTE') THEN 'iso_a_admin'
                WHEN has_function_privilege('wallet_reader', fn, 'EXECUTE') THEN 'iso_a_reader' END
$$;
CREATE FUNCTION pg_temp.sub(sql text, t text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT split_part(k, '.', 2) AS name, v FROM fx WHERE k LIKE t || '.%' ORDER BY length(k) DESC LOOP
        sql := replace(sql, '{' || f.name || '}', f.v);
    END LOOP;
    RETURN sql;
END
$$;
-- What a call does: its result or its error (SQLSTATE and message), with
-- numbers and codes masked (ids differ between B's objects and unknown ones).
CREATE FUNCTION pg_temp.outcome(sql text, r text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    res text;
    st text;
    msg text;
BEGIN
    EXECUTE format('SET ROLE %I', r);
    EXECUTE sql INTO res;
    RESET ROLE;
    RETURN regexp_replace('result: ' || coalesce(res, 'NULL'), '[0-9A-Z]{4}(-[0-9A-Z]+)+|[0-9]+', '#', 'g');
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
    RETURN 'error ' || st || ': ' || regexp_replace(msg, '[0-9]+', '#', 'g');
END
$$;
-- B's data as B's reader sees it (row-level security, tested above).
CREATE FUNCTION pg_temp.snap() RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    t regclass;
    h text;
    acc text := '';
BEGIN
    FOR t IN SELECT x.t FROM tables x ORDER BY x.t::text LOOP
        SELECT md5(string_agg(r, ',' ORDER BY r)) INTO h FROM unnest(pg_temp.visible(t, 'iso_b_reader')) r;
        acc := acc || t::text || '=' || coalesce(h, '-') || ' ';
    END LOOP;
    RETURN acc;
END
$$;

CREATE TEMP TABLE results (n int, fn text, who text, b_outcome text, u_outcome text, before text, after text);
DO $$
DECLARE
    i record;
    who text;
    before text;
    b text;
BEGIN
    FOR i IN SELECT * FROM iso WHERE call IS NOT NULL ORDER BY n LOOP
        who := pg_temp.caller_for(i.fn);
        before := pg_temp.snap();
        b := pg_temp.outcome(pg_temp.sub(i.call, 'B'), who);
        INSERT INTO results VALUES (i.n, i.fn, who, b, pg_temp.outcome(pg_temp.sub(i.call, 'U'), who), before, pg_temp.snap());
    END LOOP;
END
$$;
SELECT is(r.b_outcome, r.u_outcome, format('%s as %s with B''s ids: as with unknown ids (%s)', r.fn, r.who, r.u_outcome))
  FROM results r ORDER BY r.n;
SELECT is(r.after, r.before, format('%s as %s with B''s ids: B''s data unchanged', r.fn, r.who))
  FROM results r ORDER BY r.n;
SELECT is_empty($$SELECT fn FROM results WHERE who IS NULL OR u_outcome NOT LIKE 'error %' AND fn !~ 'code'$$,
                'every call was made by a role allowed to, and with unknown ids is refused (the code checks answer with a status)');
-- the same calls with A's own ids are not refused as unknown: the isolation is not a blanket refusal
SELECT is_empty($$SELECT i.fn || ': ' || pg_temp.outcome(pg_temp.sub(i.call, 'A'), pg_temp.caller_for(i.fn))
                    FROM iso i WHERE i.call IS NOT NULL
                     AND pg_temp.outcome(pg_temp.sub(i.call, 'A'), pg_temp.caller_for(i.fn)) ~ '^error (WL101|WL102|WL150|WL152|WL201|WL206|WL212|WL214)'$$,
                'with A''s own ids no call says the object is unknown');

-- claim_pushes names no merchant: it claims only the merchants' messages the caller acts for
SELECT pg_temp.snap() AS before_claim, (SELECT v FROM fx WHERE k = 'B.ch') AS b_channel \gset
SET ROLE iso_a_app;
SELECT is((SELECT count(*) FROM wallet.claim_pushes(:'b_channel', 100, interval '1 minute')), 0::bigint,
          'claim_pushes as A''s app claims none of B''s due messages');
RESET ROLE;
SET ROLE iso_a_admin;
SELECT wallet.purge_pushes(100000) AS purged \gset
SELECT wallet.run_push_triggers() AS fired \gset
RESET ROLE;
SELECT is(pg_temp.snap(), :'before_claim', 'claim_pushes, purge_pushes and run_push_triggers as A leave B''s data unchanged');
SELECT ok((SELECT count(*) FROM wallet.push_messages WHERE merchant_id = (SELECT v::bigint FROM fx WHERE k = 'B.m')
            AND status = 'queued' AND due_at <= now() AND channel = 'iso_b') > 0,
          'fixture: B has due messages on its channel');

-- ------------------------------------------------------------ 4. calls naming no merchant, as login roles
-- A per-merchant admin and one app per merchant, LOGIN roles as in
-- production; each call runs under SET SESSION AUTHORIZATION (the caches of
-- src/privileges.c are per outer role), optionally with SET ROLE on top.
CREATE ROLE iso_login_admin_a LOGIN;
CREATE ROLE iso_login_app_a LOGIN;
CREATE ROLE iso_login_app_b LOGIN;
GRANT wallet_admin TO iso_login_admin_a;
GRANT wallet_app TO iso_login_app_a, iso_login_app_b;
SELECT v AS am FROM fx WHERE k = 'A.m' \gset
SELECT v AS bm FROM fx WHERE k = 'B.m' \gset
SELECT v AS aa FROM fx WHERE k = 'A.a' \gset
SELECT v AS ba FROM fx WHERE k = 'B.a' \gset
SELECT wallet.grant_merchant(:am, 'iso_login_admin_a'), wallet.grant_merchant(:am, 'iso_login_app_a'),
       wallet.grant_merchant(:bm, 'iso_login_app_b');
SELECT pg_temp.forge(v) AS a_forged FROM fx WHERE k = 'A.code' \gset
SELECT pg_temp.forge(v) AS b_forged FROM fx WHERE k = 'B.code' \gset
-- (the guard's counters outlive the transaction: fresh member_refs)
SELECT 'iso-thr-' || md5(random()::text) AS thr, 'iso-x-' || md5(random()::text) AS xref,
       'iso-y-' || md5(random()::text) AS yref \gset
CREATE FUNCTION pg_temp.as_login(who text, sql text, act_as text DEFAULT NULL) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    res text;
    st text;
    msg text;
    det text;
BEGIN
    EXECUTE format('SET SESSION AUTHORIZATION %I', who);
    IF act_as IS NOT NULL THEN
        EXECUTE format('SET ROLE %I', act_as);
    END IF;
    EXECUTE sql INTO res;
    RESET ROLE;
    RESET SESSION AUTHORIZATION;
    RETURN coalesce(res, 'NULL');
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
    RETURN format('error %s: %s; detail: %s', st, msg, det);
END
$$;
-- every scope throttles a member at 2 failures an hour
SELECT wallet.set_code_guard(2, NULL, interval '1 hour');
SELECT wallet.set_code_guard(2, NULL, interval '1 hour', :am);
SELECT wallet.set_code_guard(2, NULL, interval '1 hour', :bm);

-- set_code_guard: the global row is the owner's
SELECT is(pg_temp.as_login('iso_login_admin_a', $$SELECT wallet.set_code_guard(NULL, NULL, '15 minutes')$$),
          'error 42501: permission denied to set the guard thresholds of every merchant; detail: Only the extension''s owner or a superuser sets the defaults of every merchant.',
          'set_code_guard without a merchant as A''s admin: 42501 (it would set the guard of every merchant)');
SELECT is((SELECT (max_failures_per_member, failure_window)::text FROM wallet.code_guard_settings WHERE merchant_id IS NULL),
          '(2,01:00:00)', 'the global guard is unchanged');
SELECT is(pg_temp.as_login('iso_login_admin_a', format($$SELECT wallet.set_code_guard(2, NULL, '1 hour', %s)$$, :am)), '',
          'A''s admin still sets A''s guard');
SELECT is(regexp_replace(pg_temp.as_login('iso_login_admin_a', format($$SELECT wallet.set_code_guard(1, NULL, '1 hour', %s)$$, :bm)), '[0-9]+', '#', 'g'),
          regexp_replace(pg_temp.as_login('iso_login_admin_a', $$SELECT wallet.set_code_guard(1, NULL, '1 hour', 999999999)$$), '[0-9]+', '#', 'g'),
          'and B''s guard as an unknown merchant''s');

-- clear_code_failures without a merchant: the caller's merchants only
SELECT is(ARRAY[pg_temp.as_login('iso_login_app_b', format($$SELECT wallet.check_code(%L, %L)$$, :'b_forged', :'thr')),
                pg_temp.as_login('iso_login_app_b', format($$SELECT wallet.check_code(%L, %L)$$, :'b_forged', :'thr')),
                pg_temp.as_login('iso_login_app_b', format($$SELECT wallet.check_code(%L, %L)$$, :'b_forged', :'thr')),
                pg_temp.as_login('iso_login_app_a', format($$SELECT wallet.check_code(%L, %L)$$, :'a_forged', :'thr')),
                pg_temp.as_login('iso_login_app_a', format($$SELECT wallet.check_code(%L, %L)$$, :'a_forged', :'thr')),
                pg_temp.as_login('iso_login_app_a', format($$SELECT wallet.check_code(%L, %L)$$, :'a_forged', :'thr'))],
          '{forged,forged,throttled,forged,forged,throttled}', 'fixture: the member is throttled at A and at B');
SELECT is(pg_temp.as_login('iso_login_admin_a', format($$SELECT wallet.clear_code_failures(%L)$$, :'thr')), '2',
          'clear_code_failures without a merchant as A''s admin removes A''s 2 failed attempts');
SELECT is(ARRAY[pg_temp.as_login('iso_login_app_b', format($$SELECT wallet.check_code(%L, %L)$$, :'b_forged', :'thr')),
                pg_temp.as_login('iso_login_app_a', format($$SELECT wallet.check_code(%L, %L)$$, :'a_forged', :'thr'))],
          '{throttled,forged}', 'and lifts the throttle at A only');
SELECT is((SELECT count(*) FROM wallet.code_failed_attempts WHERE member_ref = :'thr' AND merchant_id = :bm), 2::bigint,
          'B''s failed attempts stay');

-- a text naming no campaign counts at the merchant of an app acting for one
-- (the global thresholds, set again by the owner, would count it for all)
SELECT wallet.set_code_guard(2, NULL, interval '1 hour');
SELECT is(ARRAY[pg_temp.as_login('iso_login_app_b', format($$SELECT wallet.check_code('NOT-A-CODE', %L)$$, :'xref')),
                pg_temp.as_login('iso_login_app_b', format($$SELECT wallet.check_code('NOT-A-CODE', %L)$$, :'xref')),
                pg_temp.as_login('iso_login_app_b', format($$SELECT wallet.check_code('NOT-A-CODE', %L)$$, :'xref'))],
          '{malformed,malformed,throttled}', 'B''s app guessing for a member_ref is throttled at B');
SELECT is(pg_temp.as_login('iso_login_app_a', format($$SELECT wallet.check_code('NOT-A-CODE', %L)$$, :'xref')), 'malformed',
          'A''s calls for the same member_ref are not throttled by B''s guesses');
SELECT is((SELECT array_agg(merchant_id::text ORDER BY attempt_id) FROM wallet.code_failed_attempts WHERE member_ref = :'xref'),
          ARRAY[:'bm', :'bm', :'am'], 'each failed attempt is recorded with the merchant of the app that made it');
SELECT is(pg_temp.as_login('iso_login_app_a', format($$SELECT wallet.check_code(%L, %L)$$, :'b_forged', :'yref')), 'unknown_campaign',
          'a code of B''s campaign checked by A''s app is of an unknown campaign');
SELECT is((SELECT array_agg(coalesce(merchant_id::text, 'NULL') ORDER BY attempt_id) FROM wallet.code_failed_attempts WHERE member_ref = :'yref'),
          ARRAY[:'am'], 'and counts at A, as any text naming no campaign of A');
SELECT is(wallet.check_code('NOT-A-CODE', :'yref'), 'malformed', 'the superuser (acts for all) checks a malformed text');
SELECT is((SELECT array_agg(coalesce(merchant_id::text, 'NULL') ORDER BY attempt_id) FROM wallet.code_failed_attempts WHERE member_ref = :'yref'),
          ARRAY[:'am', 'NULL'], 'which names no merchant');

-- purge_code_attempts: the caller's merchants only
INSERT INTO wallet.code_failed_attempts (attempted_at, member_ref, status, input, operation, merchant_id)
VALUES (now() - interval '2 days', 'iso-old', 'malformed', 'x', 'check', :am),
       (now() - interval '2 days', 'iso-old', 'malformed', 'x', 'check', :bm),
       (now() - interval '2 days', 'iso-old', 'malformed', 'x', 'check', NULL);
-- rows of no merchant are no reader's (acts_for(NULL) is 22004: their policies test for NULL first)
SELECT is(pg_temp.as_login('iso_login_app_a', $$SELECT count(*) FROM wallet.code_failed_attempts WHERE member_ref = 'iso-old'$$), '1',
          'A''s app reads A''s failed attempt, not B''s nor the one of no merchant (and no error for it)');
SELECT is(pg_temp.as_login('iso_login_app_a', $$SELECT count(*) FROM wallet.code_guard_settings$$), '1',
          'A''s app reads A''s guard settings, not B''s nor the global row (merchant NULL)');
SELECT is(pg_temp.as_login('iso_login_admin_a', $$SELECT wallet.purge_code_attempts()$$), '1',
          'purge_code_attempts as A''s admin deletes A''s old attempts only');
SELECT is((SELECT array_agg(coalesce(merchant_id::text, 'NULL') ORDER BY attempt_id) FROM wallet.code_failed_attempts WHERE member_ref = 'iso-old'),
          ARRAY[:'bm', 'NULL'], 'B''s and those of no merchant stay');
SELECT is(wallet.purge_code_attempts(), 2::bigint, 'the owner''s purge deletes every merchant''s and those of no merchant');

-- expire_points and the batched procedure's helper: the caller's merchants only
-- (on accounts of programs of their own: the calls above closed A's)
SELECT wallet.open_account(wallet.create_program(:am, 'iso expiring'), 'iso-member') AS aa,
       wallet.open_account(wallet.create_program(:bm, 'iso expiring'), 'iso-member') AS ba \gset
SELECT wallet.accrue(:aa, 5, 'iso-exp-1', 'short', NULL, clock_timestamp() + interval '100 milliseconds') IS NOT NULL AS x,
       wallet.accrue(:ba, 5, 'iso-exp-1', 'short', NULL, clock_timestamp() + interval '100 milliseconds') IS NOT NULL AS x \gset
SELECT pg_sleep(0.3);
SELECT is(pg_temp.as_login('iso_login_admin_a', $$SELECT (wallet_internal.expire_due_accounts(clock_timestamp(), 100)).accounts$$), '1',
          'expire_due_accounts (expire_points_batched) as A''s admin settles A''s due account only');
SELECT is((SELECT array_agg(account_id::text ORDER BY account_id) FROM wallet.entries WHERE kind = 'expire' AND account_id IN (:aa, :ba)),
          ARRAY[:'aa'], 'B''s account is not expired');
SELECT wallet.accrue(:aa, 5, 'iso-exp-2', 'short', NULL, clock_timestamp() + interval '100 milliseconds') IS NOT NULL AS x \gset
SELECT pg_sleep(0.3);
SELECT is(pg_temp.as_login('iso_login_admin_a', $$SELECT wallet.expire_points(clock_timestamp())$$), '1',
          'expire_points as A''s admin expires A''s lots only');
SELECT is((SELECT count(*) FROM wallet.entries WHERE kind = 'expire' AND account_id = :ba), 0::bigint, 'B''s account is still not expired');
SELECT is(wallet.expire_points(clock_timestamp()), 1::bigint, 'the owner''s expire_points expires B''s lots');

-- the other tidying calls of run_maintenance: the caller's merchants only
UPDATE wallet.budget_holds SET expires_at = clock_timestamp() - interval '1 minute'
 WHERE state = 'active' AND merchant_id IN (:am, :bm);
UPDATE wallet.referrals SET expires_at = now() - interval '1 day' WHERE status = 'pending' AND merchant_id IN (:am, :bm);
UPDATE wallet.offer_quotes SET expires_at = now() - interval '2 days' WHERE merchant_id IN (:am, :bm);
SELECT ok((SELECT count(DISTINCT merchant_id) FROM wallet.budget_holds WHERE state = 'active' AND merchant_id IN (:am, :bm)) = 2
          AND (SELECT count(DISTINCT merchant_id) FROM wallet.referrals WHERE status = 'pending' AND merchant_id IN (:am, :bm)) = 2
          AND (SELECT count(DISTINCT merchant_id) FROM wallet.offer_quotes WHERE merchant_id IN (:am, :bm)) = 2,
          'fixture: A and B each have an expired budget hold, a pending referral past its window and an expired quote');
SELECT count(*) FILTER (WHERE merchant_id = :am) AS a_holds, count(*) FILTER (WHERE merchant_id = :bm) AS b_holds
  FROM wallet.budget_holds WHERE state = 'active' \gset
SELECT count(*) FILTER (WHERE merchant_id = :am) AS a_refs, count(*) FILTER (WHERE merchant_id = :bm) AS b_refs
  FROM wallet.referrals WHERE status = 'pending' \gset
SELECT count(*) FILTER (WHERE merchant_id = :am) AS a_quotes, count(*) FILTER (WHERE merchant_id = :bm) AS b_quotes
  FROM wallet.offer_quotes \gset
SELECT is(pg_temp.as_login('iso_login_admin_a', $$SELECT wallet.reclaim_budget_holds()$$), :'a_holds',
          'reclaim_budget_holds as A''s admin reclaims A''s expired holds only');
SELECT is((SELECT count(*) FROM wallet.budget_holds WHERE state = 'active' AND merchant_id = :bm), :'b_holds'::bigint, 'B''s stay');
SELECT is(pg_temp.as_login('iso_login_admin_a', $$SELECT wallet.expire_referrals()$$), :'a_refs',
          'expire_referrals as A''s admin expires A''s referrals only');
SELECT is((SELECT count(*) FROM wallet.referrals WHERE status = 'pending' AND merchant_id = :bm), :'b_refs'::bigint, 'B''s stay pending');
SELECT is(pg_temp.as_login('iso_login_admin_a', $$SELECT wallet.purge_offer_quotes()$$), :'a_quotes',
          'purge_offer_quotes as A''s admin deletes A''s expired quotes only');
SELECT is((SELECT count(*) FROM wallet.offer_quotes WHERE merchant_id = :bm), :'b_quotes'::bigint, 'B''s stay');
SELECT is(wallet.reclaim_budget_holds() + wallet.expire_referrals() + wallet.purge_offer_quotes(),
          (:'b_holds'::int + :'b_refs'::int + :'b_quotes'::int)::bigint, 'the owner''s calls then tidy B''s');

-- a merchant is never held by one of the three group roles
SELECT matches(pg_temp.as_login('iso_login_admin_a', $$SELECT wallet.create_merchant('iso held by a group')$$, 'wallet_admin'),
               '^error 22023: role wallet_admin cannot act for a merchant; detail: Every member of wallet_admin would act for it: .*\.$',
               'create_merchant under SET ROLE wallet_admin: 22023 (every admin would act for it)');
SELECT is((SELECT count(*) FROM wallet.merchants WHERE name = 'iso held by a group'), 0::bigint, 'and no merchant is made');
SELECT matches(pg_temp.as_login('iso_login_admin_a', format($$SELECT wallet.grant_merchant(%s, 'wallet_app')$$, :am)),
               '^error 22023: role wallet_app cannot act for a merchant', 'grant_merchant to wallet_app: 22023');
SELECT throws_ok(format($$SELECT wallet.grant_merchant(%s, 'wallet_reader')$$, :am), '22023', 'role wallet_reader cannot act for a merchant',
                 'grant_merchant to wallet_reader, even by the owner: 22023');
CREATE ROLE iso_group_parent NOLOGIN;
GRANT iso_group_parent TO wallet_app;
SELECT throws_ok(format($$SELECT wallet.grant_merchant(%s, 'iso_group_parent')$$, :am), '22023', NULL,
                 'grant_merchant to a role wallet_app is a member of: 22023');
REVOKE iso_group_parent FROM wallet_app;
SELECT is((SELECT count(*) FROM wallet.merchant_roles WHERE role IN ('wallet_admin'::regrole, 'wallet_app'::regrole, 'wallet_reader'::regrole)),
          0::bigint, 'no group role holds a merchant');
SELECT pg_temp.as_login('iso_login_admin_a', $$SELECT wallet.create_merchant('iso held by a login')$$) AS held \gset
SELECT is((SELECT array_agg(role::text) FROM wallet.merchant_roles WHERE merchant_id = :'held'::bigint),
          '{iso_login_admin_a}', 'a login role that creates a merchant holds it');

-- A grant counts only while its role is the role it was made to, under its
-- name, and no wallet group is a member of it: checked at every use, not
-- only by grant_merchant.
SELECT wallet.create_merchant('iso grants') AS gm \gset
CREATE ROLE iso_grp NOLOGIN;
CREATE ROLE iso_grp_member;
GRANT iso_grp, wallet_reader TO iso_grp_member;
SELECT is(wallet.grant_merchant(:gm, 'iso_grp'), true, 'fixture: a merchant granted to a group of its own');
CREATE FUNCTION pg_temp.acts(r text, m bigint) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    a boolean;
BEGIN
    EXECUTE format('SET LOCAL ROLE %I', r);
    a := wallet.acts_for(m) AND EXISTS (SELECT FROM wallet.my_merchants() x WHERE x.merchant_id = m);
    RESET ROLE;
    RETURN a;
END
$$;
SELECT is(pg_temp.acts('iso_grp_member', :gm), true, 'a member of the group acts for the merchant');
-- a wallet group made a member of the holder afterwards: the grant is void for everyone
GRANT iso_grp TO wallet_app;
SELECT is(ARRAY[pg_temp.acts('iso_b_app', :gm), pg_temp.acts('iso_a_app', :gm), pg_temp.acts('iso_grp_member', :gm)], '{f,f,f}',
          'wallet_app made a member of the holder since: no app acts for the merchant, nor does the group''s own member');
REVOKE iso_grp FROM wallet_app;
SELECT is(ARRAY[pg_temp.acts('iso_b_app', :gm), pg_temp.acts('iso_grp_member', :gm)], '{f,t}',
          'the membership revoked: the grant counts again, for the group''s member only');
-- a renamed holder: the grant waits for grant_merchant again
ALTER ROLE iso_grp RENAME TO iso_grp_renamed;
SELECT is(pg_temp.acts('iso_grp_member', :gm), false, 'the holder renamed: the grant no longer counts');
SELECT is(wallet.grant_merchant(:gm, 'iso_grp_renamed'), true, 'grant_merchant under the new name renews it: true');
SELECT is(wallet.grant_merchant(:gm, 'iso_grp_renamed'), false, 'and again: false');
SELECT is(pg_temp.acts('iso_grp_member', :gm), true, 'the member acts again');
-- a row naming another role's id, as pg_restore writes a dropped holder's
-- bare id onto whatever role has it in the target cluster
CREATE ROLE iso_unrelated;
GRANT wallet_reader TO iso_unrelated;
UPDATE wallet.merchant_roles SET role = 'iso_unrelated'::regrole WHERE merchant_id = :gm AND role = 'iso_grp_renamed'::regrole;
SELECT is(pg_temp.acts('iso_unrelated', :gm), false, 'a grant row naming another role''s id (a restored dropped holder): that role does not act');
-- a dropped holder: its row stays, inert
CREATE ROLE iso_gone;
SELECT wallet.grant_merchant(:gm, 'iso_gone') AS x \gset
SELECT oid AS gone FROM pg_roles WHERE rolname = 'iso_gone' \gset
DROP ROLE iso_gone;
SELECT is((SELECT wallet_internal.grant_counts(r.role, r.role_name) FROM wallet.merchant_roles r WHERE r.merchant_id = :gm AND r.role = :gone),
          false, 'a dropped holder''s row counts for nothing (a role that takes its id later does not inherit it)');

SELECT * FROM finish();
ROLLBACK;

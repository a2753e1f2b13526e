-- pgTAP: members, erasure and the audit log (issue 9).
BEGIN;
SET LOCAL timezone = 'UTC';
SELECT plan(69);

SELECT wallet.create_merchant('members merchant') AS m \gset
SELECT wallet.create_merchant('members other merchant') AS m2 \gset

-- ---------------------------------------------------------------- members
SELECT is((SELECT (r.member_ref, r.time_zone, r.locale, r.status)::text FROM wallet.upsert_member(:m, 'ann', 'Europe/Zurich', 'de-CH') r),
          '(ann,Europe/Zurich,de-CH,active)', 'upsert_member creates a member with its time zone and locale');
SELECT is((SELECT (r.time_zone, r.locale)::text FROM wallet.upsert_member(:m, 'ann', NULL, 'fr-CH') r),
          '(Europe/Zurich,fr-CH)', 'a NULL time zone keeps the current one, a locale given replaces it');
SELECT is((SELECT (r.time_zone, r.locale)::text FROM wallet.upsert_member(:m, 'ann') r),
          '(Europe/Zurich,fr-CH)', 'NULL time zone and locale keep both');
SELECT is((SELECT count(*) FROM wallet.members WHERE member_ref = 'ann'), 1::bigint, 'one row per merchant and member_ref');
SELECT isnt((SELECT r.member_id FROM wallet.upsert_member(:m2, 'ann') r),
            (SELECT r.member_id FROM wallet.upsert_member(:m, 'ann') r), 'the same member_ref at another merchant is another member');
SELECT throws_ok(format($$SELECT wallet.upsert_member(%s, 'ann', 'Mars/Olympus')$$, :m), '22023', NULL, 'an unknown time zone: 22023');
SELECT throws_ok(format($$SELECT wallet.upsert_member(%s, 'ann', 'EST5EDT-ish')$$, :m), '22023', NULL, 'a POSIX-style zone spec is no IANA name: 22023');
SELECT throws_ok(format($$SELECT wallet.upsert_member(%s, 'ann', 'europe/zurich')$$, :m), '22023', NULL, 'a time zone name in the wrong case: 22023 (names are case-sensitive, as in pg_timezone_names)');
-- time zone names are checked against a per-backend copy of pg_timezone_names
-- (src/time_zones.c): it answers exactly as the view
SELECT is((SELECT count(*) FROM pg_catalog.pg_timezone_names z WHERE NOT wallet_internal.time_zone_known(z.name)), 0::bigint,
          'every name of pg_timezone_names is known');
SELECT is((SELECT array_agg(n ORDER BY n) FROM unnest(ARRAY['Europe/Zurich', 'europe/zurich', 'EUROPE/ZURICH', 'EST5', 'EST5EDT', 'UTC', 'utc',
                                                          'Factory', 'posixrules', 'Mars/Olympus', '', '<+03>-3', 'Asia/Shanghai ', 'Etc/GMT+5']) n
            WHERE wallet_internal.time_zone_known(n)),
          (SELECT array_agg(n ORDER BY n) FROM unnest(ARRAY['Europe/Zurich', 'europe/zurich', 'EUROPE/ZURICH', 'EST5', 'EST5EDT', 'UTC', 'utc',
                                                          'Factory', 'posixrules', 'Mars/Olympus', '', '<+03>-3', 'Asia/Shanghai ', 'Etc/GMT+5']) n
            WHERE EXISTS (SELECT FROM pg_catalog.pg_timezone_names z WHERE z.name = n)),
          'names in other cases, POSIX specs, zic''s Factory and posixrules are known exactly when pg_timezone_names lists them');
SELECT throws_ok(format($$SELECT wallet.upsert_member(%s, 'ann', NULL, 'german please')$$, :m), '22023', NULL, 'a locale not shaped like BCP 47: 22023');
SELECT lives_ok(format($$SELECT wallet.upsert_member(%s, 'ann', 'America/Argentina/Buenos_Aires', 'zh-Hant-TW')$$, :m), 'a deep IANA name and a script subtag are accepted');
SELECT throws_ok('SELECT wallet.upsert_member(NULL, $$ann$$)', '22004', NULL, 'NULL merchant: 22004');
SELECT throws_ok(format('SELECT wallet.upsert_member(%s, NULL)', :m), '22004', NULL, 'NULL member_ref: 22004');
SELECT throws_ok(format($$SELECT wallet.upsert_member(%s, ' ')$$, :m), '22023', NULL, 'blank member_ref: 22023');
SELECT throws_ok(format($$SELECT wallet.upsert_member(%s, repeat('x', 257))$$, :m), '22023', NULL, 'oversized member_ref: 22023');
SELECT throws_ok(format($$SELECT wallet.upsert_member(%s, 'forgotten:abc')$$, :m), '22023', NULL, 'a pseudonym of an erased member cannot be named: 22023');
SELECT throws_ok($$SELECT wallet.upsert_member(999999999, 'ann')$$, 'WL102', NULL, 'unknown merchant: WL102');

-- Opening an account and issuing a code create the member.
SELECT wallet.create_program(:m, 'members program', interval '1 year') AS p \gset
SELECT wallet.create_campaign(:m, 'members campaign', max_redemptions_per_code => 2, max_redemptions_per_member => 5,
                              max_redemptions_total => 100) AS c \gset
SELECT wallet.open_account(:p, 'bea') AS a_bea \gset
SELECT is((SELECT m.member_ref FROM wallet.accounts a JOIN wallet.members m USING (member_id) WHERE a.account_id = :a_bea),
          'bea', 'open_account creates the member and the account refers to it');
SELECT wallet.issue_code(:c, 'cid') AS code_cid \gset
SELECT is((SELECT m.member_ref FROM wallet.code_bindings b JOIN wallet.members m USING (member_id) WHERE b.code::text = :'code_cid'),
          'cid', 'issue_code creates the member and the binding refers to it');
SELECT is((SELECT m.merchant_id FROM wallet.members m WHERE m.member_ref = 'cid'), :m::bigint, 'the member belongs to the campaign''s merchant');

-- ---------------------------------------------------------------- erasure
-- A member with activity of every kind, beside a member who stays.
SELECT wallet.open_account(:p, 'zed-erase-me') AS a \gset
SELECT wallet.open_account(:p, 'stays') AS a_stays \gset
SELECT lives_ok(format($$SELECT wallet.upsert_member(%s, 'zed-erase-me', 'Asia/Tokyo', 'ja-JP')$$, :m), 'member with time zone and locale');
SELECT entry_id AS acc FROM wallet.accrue(:a, 500, 'acc-1', 'welcome bonus', 'order-1') \gset
SELECT wallet.accrue(:a_stays, 70, 'acc-s', 'welcome bonus') IS NOT NULL AS x \gset
SELECT wallet.redeem(:a, 50, 'red-1', 'reward', 'order-2') IS NOT NULL AS x \gset
SELECT entry_id AS h1 FROM wallet.hold(:a, 40, 'hold-1', interval '1 hour', 'cart') \gset
SELECT entry_id AS h2 FROM wallet.hold(:a, 30, 'hold-2', interval '1 hour', 'cart') \gset
SELECT wallet.capture(:h1, 20, 'cap-1') IS NOT NULL AS x \gset
SELECT wallet.reverse(:acc, 'rev-1', 'refund', 'unlimited') IS NOT NULL AS x \gset
SELECT wallet.issue_code(:c, 'zed-erase-me') AS bound1 \gset
SELECT wallet.issue_code(:c, 'zed-erase-me') AS bound2 \gset
SELECT g::text AS pub1 FROM wallet.generate_codes(:c, 1) g \gset
SELECT is((SELECT status FROM wallet.redeem_code(:'bound1', 'zed-erase-me', 'rc-1',
                                                 '{"ip": "203.0.113.9", "device": "zed-erase-me phone", "source": "pos-7"}')),
          'ok', 'redemption with context');
SELECT is((SELECT status FROM wallet.reserve_code(:'bound2', 'zed-erase-me', 'rs-1', interval '1 hour')), 'ok', 'reservation');
SELECT is((SELECT status FROM wallet.redeem_code(:'pub1', 'zed-erase-me', 'rc-2', '{"ip": "203.0.113.9"}')), 'ok', 'second redemption');
-- (failed checks as the merchant's app, which acts for it alone: they count at the merchant)
CREATE ROLE members_tap_app LOGIN;
GRANT wallet_app TO members_tap_app;
SELECT wallet.grant_merchant(:m, 'members_tap_app') AS x \gset
SET SESSION AUTHORIZATION members_tap_app;
SELECT wallet.check_code('NOT-A-CODE', 'zed-erase-me', '{"source": "203.0.113.9"}') AS fail1,
       wallet.check_code('zed-erase-me', 'zed-erase-me', '{"source": "zed-erase-me laptop"}') AS fail2 \gset
RESET SESSION AUTHORIZATION;
SELECT is(:'fail1'::text, 'malformed', 'failed attempt');
SELECT isnt(:'fail2'::text, 'ok', 'another failed attempt, the member_ref as input');
SELECT is((SELECT status FROM wallet.redeem_code(:'pub1', 'stays', 'rc-s', '{}')), 'ok', 'the other member redeems too');

-- Every text and jsonb column of every table of the extension, from the catalog.
CREATE TEMP TABLE text_cols AS
SELECT c.oid::regclass AS tbl, a.attname
  FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e' AND c.relkind IN ('r', 'p')
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'wallet')
   AND a.atttypid IN ('text'::regtype, 'jsonb'::regtype, 'json'::regtype, 'varchar'::regtype, 'name'::regtype, 'bpchar'::regtype);
CREATE FUNCTION pg_temp.occurrences(needle text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    t record;
    n bigint;
BEGIN
    FOR t IN SELECT * FROM text_cols LOOP
        EXECUTE format('SELECT count(*) FROM %s WHERE strpos(%I::text, $1) > 0', t.tbl, t.attname) INTO n USING needle;
        IF n > 0 THEN
            RETURN NEXT format('%s.%s: %s rows', t.tbl, t.attname, n);
        END IF;
    END LOOP;
END
$$;
SELECT ok((SELECT count(*) FROM text_cols) >= 20, 'the scan covers the text and jsonb columns of every table');
SELECT isnt_empty($$SELECT * FROM pg_temp.occurrences('zed-erase-me')$$, 'before the erasure the member_ref is stored');

CREATE TEMP TABLE before AS
SELECT (SELECT array_agg(x ORDER BY x) FROM (SELECT l::text AS x FROM wallet.program_liability(:p, now()) l) s) AS liability,
       (SELECT array_agg((campaign_id, serial, redeemed)::text ORDER BY campaign_id, serial) FROM wallet.code_use_counts) AS code_counts,
       (SELECT array_agg(redeemed ORDER BY redeemed) FROM wallet.member_use_counts) AS member_counts,
       (SELECT redeemed FROM wallet.campaign_use_counts WHERE campaign_id = :c) AS total,
       (SELECT count(*) FROM wallet.code_redemptions WHERE undone_at IS NULL) AS redemptions,
       (SELECT count(*) FROM wallet.code_reservations WHERE state = 'active') AS reservations,
       wallet.balance(:a) AS balance, wallet.balance(:a_stays) AS balance_stays;

SELECT audit_before AS audit_before FROM (SELECT max(id) AS audit_before FROM wallet.audit_log) s \gset
SELECT ok(wallet.forget_member(:m, 'zed-erase-me', 'erasure request #42'), 'forget_member erases the member');

SELECT is_empty($$SELECT * FROM pg_temp.occurrences('zed-erase-me')$$, 'after the erasure no text or jsonb column of any table holds the member_ref');
SELECT is_empty($$SELECT * FROM pg_temp.occurrences('203.0.113.9')$$, 'nor the ip of its contexts and failed attempts');
SELECT is_empty($$SELECT * FROM wallet.verify_ledger()$$, 'every ledger still verifies');
SELECT is((SELECT array_agg(x ORDER BY x) FROM (SELECT l::text AS x FROM wallet.program_liability(:p, now()) l) s),
          (SELECT liability FROM before), 'the program liability is unchanged');
SELECT is((SELECT (array_agg((campaign_id, serial, redeemed)::text ORDER BY campaign_id, serial),
                   (SELECT array_agg(redeemed ORDER BY redeemed) FROM wallet.member_use_counts),
                   (SELECT redeemed FROM wallet.campaign_use_counts WHERE campaign_id = :c),
                   (SELECT count(*) FROM wallet.code_redemptions WHERE undone_at IS NULL),
                   (SELECT count(*) FROM wallet.code_reservations WHERE state = 'active'))::text FROM wallet.code_use_counts),
          (SELECT (code_counts, member_counts, total, redemptions, reservations)::text FROM before),
          'campaign totals (per code, per member, per campaign, redemptions, reservations) are unchanged');
SELECT is((wallet.balance(:a), wallet.balance(:a_stays))::text, (SELECT (balance, balance_stays)::text FROM before),
          'balances are unchanged');
SELECT is((SELECT (m.status, m.time_zone, m.locale, m.member_ref LIKE 'forgotten:%')::text FROM wallet.members m
            JOIN wallet.accounts x USING (member_id) WHERE x.account_id = :a),
          '(forgotten,,,t)', 'the member row is kept, pseudonymised, without time zone or locale');
SELECT is((SELECT x.member_ref FROM wallet.accounts x WHERE x.account_id = :a),
          (SELECT m.member_ref FROM wallet.members m JOIN wallet.accounts x USING (member_id) WHERE x.account_id = :a),
          'the account carries the same pseudonym as its member');
SELECT is((SELECT (merchant_id, action, session_role = session_user, acting_role = session_user, old_values IS NULL,
                   new_values ->> 'reason', new_values ->> 'pseudonym' LIKE 'forgotten:%', (new_values -> 'rows' ->> 'accounts')::int)::text
             FROM wallet.audit_log WHERE id > :audit_before AND action = 'forget_member'),
          format('(%s,forget_member,t,t,t,"erasure request #42",t,1)', :m), 'the erasure is recorded: who, reason, pseudonym, rows');
SELECT ok(NOT wallet.forget_member(:m, 'zed-erase-me', 'erasure request #42 again'), 'erasing twice: no error, nothing left to erase');
SELECT is((SELECT count(*) FROM wallet.audit_log WHERE id > :audit_before), 1::bigint, 'the second erasure, which found nothing, is not recorded');
SELECT is((SELECT (r.status, r.time_zone)::text FROM wallet.upsert_member(:m, 'zed-erase-me') r), '(active,)',
          'naming the member again starts a fresh member');
SELECT is(wallet.find_account(:p, 'zed-erase-me'), NULL, 'with no account');
SELECT is(wallet.check_code(:'bound2', 'zed-erase-me'), 'bound_to_other_member', 'and no code bound to it');
SELECT throws_ok(format($$SELECT wallet.forget_member(%s, 'x', NULL)$$, :m), '22004', NULL, 'forget_member: NULL reason 22004');
SELECT throws_ok(format($$SELECT wallet.forget_member(%s, 'x', ' ')$$, :m), '22023', NULL, 'forget_member: blank reason 22023');

-- ---------------------------------------------------------------- audit
SELECT max(id) AS audit_before FROM wallet.audit_log \gset
CREATE ROLE members_tap_admin SUPERUSER NOLOGIN;
SET LOCAL ROLE members_tap_admin;    -- an acting role other than the session user
SELECT wallet.close_program(:p);
RESET ROLE;
UPDATE wallet.campaigns SET max_redemptions_total = 200 WHERE campaign_id = :c;
SELECT wallet.rotate_code_key(:c) AS kv \gset
SELECT wallet.retire_code_key(:c, 1);
SELECT wallet.set_code_guard(3, 9, interval '5 minutes', :m);
SELECT is((SELECT array_agg((action, object ->> 'table', merchant_id = :m)::text ORDER BY id) FROM wallet.audit_log WHERE id > :audit_before),
          ARRAY['(update,programs,t)', '(update,campaigns,t)', '(insert,code_keys,t)', '(update,campaigns,t)',
                '(update,code_keys,t)', '(insert,code_guard_settings,t)'],
          'program closing, campaign caps, key rotation and retirement, guard settings are recorded');
SELECT is((SELECT (old_values ->> 'max_redemptions_total', new_values ->> 'max_redemptions_total')::text FROM wallet.audit_log
            WHERE id > :audit_before AND object ->> 'table' = 'campaigns' ORDER BY id LIMIT 1),
          '(100,200)', 'old and new values of a cap');
SELECT is((SELECT object::text FROM wallet.audit_log WHERE id > :audit_before AND object ->> 'table' = 'code_keys' AND action = 'update'),
          format('{"key": {"campaign_id": %s, "key_version": 1}, "table": "code_keys"}', :c), 'the object names the table and the key');
SELECT is((SELECT (session_role = session_user, acting_role)::text FROM wallet.audit_log WHERE id = :audit_before + 1),
          '(t,members_tap_admin)', 'the session user and the acting role (SET ROLE) are recorded');
SELECT throws_ok('UPDATE wallet.audit_log SET action = action', 'WL401', NULL, 'UPDATE on the audit log: WL401');
SELECT throws_ok('DELETE FROM wallet.audit_log', 'WL401', NULL, 'DELETE on the audit log: WL401');
SELECT throws_ok('TRUNCATE wallet.audit_log', 'WL401', NULL, 'TRUNCATE on the audit log: WL401');

-- ---------------------------------------------------------------- erasure and failed checks of no merchant
-- Two merchants' apps and the first's admin, LOGIN roles; the guard's
-- counters outlive the transaction, so the member_refs are fresh.
SELECT wallet.create_merchant('members fa') AS fa, wallet.create_merchant('members fb') AS fb \gset
CREATE ROLE members_fa_app LOGIN;
CREATE ROLE members_fb_app LOGIN;
CREATE ROLE members_fa_admin LOGIN;
GRANT wallet_app TO members_fa_app, members_fb_app;
GRANT wallet_admin TO members_fa_admin;
SELECT wallet.grant_merchant(:fa, 'members_fa_app'), wallet.grant_merchant(:fb, 'members_fb_app'),
       wallet.grant_merchant(:fa, 'members_fa_admin') AS x \gset
SELECT wallet.set_code_guard(3, NULL, interval '1 hour');
SELECT wallet.set_code_guard(3, NULL, interval '1 hour', :fa);
SELECT wallet.set_code_guard(3, NULL, interval '1 hour', :fb);
SELECT 'only-b-' || md5(random()::text) AS ref_b, 'fa-' || md5(random()::text) AS ref_a \gset
-- a member_ref only B's app used (and a check by the superuser, of no merchant)
SET SESSION AUTHORIZATION members_fb_app;
SELECT wallet.check_code('NOT-A-CODE', :'ref_b') AS x, wallet.check_code('NOT-A-CODE', :'ref_b') AS x \gset
RESET SESSION AUTHORIZATION;
SELECT wallet.check_code('NOT-A-CODE', :'ref_b') AS x \gset
SET SESSION AUTHORIZATION members_fa_admin;
SELECT wallet.forget_member(:fa, :'ref_b', 'erasure request') AS forgot_b \gset
RESET SESSION AUTHORIZATION;
SELECT is(:'forgot_b'::text, 'f', 'forget_member at A of a member_ref only B''s app used finds nothing');
SELECT is((SELECT array_agg(coalesce(merchant_id::text, 'NULL') ORDER BY attempt_id) FROM wallet.code_failed_attempts WHERE member_ref = :'ref_b'),
          ARRAY[:'fb', :'fb', 'NULL'], 'B''s failed attempts and those of no merchant stay');
SELECT is((SELECT count(*) FROM wallet.audit_log WHERE action = 'forget_member' AND merchant_id = :fa), 0::bigint, 'and nothing is recorded');
-- a member throttled at A: forgotten, no longer throttled
SET SESSION AUTHORIZATION members_fa_app;
SELECT wallet.check_code('NOT-A-CODE', :'ref_a') AS a1, wallet.check_code('NOT-A-CODE', :'ref_a') AS a2,
       wallet.check_code('NOT-A-CODE', :'ref_a') AS a3, wallet.check_code('NOT-A-CODE', :'ref_a') AS a4 \gset
RESET SESSION AUTHORIZATION;
SELECT is(ARRAY[:'a1', :'a2', :'a3', :'a4']::text[], '{malformed,malformed,malformed,throttled}', 'A''s app guessing for a member is throttled');
SET SESSION AUTHORIZATION members_fa_admin;
SELECT wallet.forget_member(:fa, :'ref_a', 'erasure request') AS forgot_a \gset
RESET SESSION AUTHORIZATION;
SELECT is(:'forgot_a'::text, 't', 'forget_member at A finds the member''s failed attempts');
SELECT is((SELECT count(*) FROM wallet.code_failed_attempts WHERE member_ref = :'ref_a'), 0::bigint, 'and deletes them');
SET SESSION AUTHORIZATION members_fa_app;
SELECT wallet.check_code('NOT-A-CODE', :'ref_a') AS a5 \gset
RESET SESSION AUTHORIZATION;
SELECT is(:'a5'::text, 'malformed', 'after forget_member the member_ref is no longer throttled at A');

-- references 0.1.0 accepted (over 256 characters, "forgotten:...") that the
-- update registered as members: still erasable
SELECT wallet.create_merchant('members legacy') AS lg \gset
INSERT INTO wallet.members (merchant_id, member_ref) VALUES (:lg, repeat('L', 300)), (:lg, 'forgotten:abc');
SELECT is(wallet.forget_member(:lg, repeat('L', 300), 'erasure request'), true, 'a 300-character reference of a 0.1.0 member is erased');
SELECT is(wallet.forget_member(:lg, 'forgotten:abc', 'erasure request'), true, 'a 0.1.0 member named "forgotten:abc" is erased');
SELECT is((SELECT array_agg(status) FROM wallet.members WHERE merchant_id = :lg), '{forgotten,forgotten}', 'both are forgotten');
SELECT is((SELECT count(*) FROM wallet.members WHERE merchant_id = :lg AND (member_ref = repeat('L', 300) OR member_ref = 'forgotten:abc')), 0::bigint,
          'and their references are gone');
SELECT throws_ok(format($$SELECT wallet.forget_member(%s, %L, 'again')$$, :lg, repeat('M', 300)), '22023', NULL,
                 'a 300-character reference naming no member is still 22023');
SELECT throws_ok(format($$SELECT wallet.forget_member(%s, %L, 'again')$$, :lg, (SELECT member_ref FROM wallet.members WHERE merchant_id = :lg LIMIT 1)),
                 '22023', 'member reference must not start with "forgotten:"', 'the pseudonym of an erased member is still 22023');

-- forget_sweep (run_maintenance): what calls committing during an erasure
-- wrote under the erased member's id is cleared by member id, in every table
-- forget_member clears (written back here directly, as such a call would)
SELECT wallet.create_merchant('sweep merchant') AS sw \gset
SELECT wallet.create_campaign(:sw, 'sweep campaign') AS swc \gset
SELECT wallet.create_program(:sw, 'sweep points') AS swp \gset
SELECT wallet.set_referral_program(:swc, :swp, 10, 5, 30) \g /dev/null
SELECT wallet.record_purchase(:sw, 'sweeper', 'sw-1', 10, 'EUR') \g /dev/null
SELECT wallet.record_feedback(:swc, 'sweeper', 4, 'praise', 'love it') \g /dev/null
SELECT wallet.refer(:sw, 'sweeper', 'sweepee', 'link', :swc, 'dev:a', 'dev:b') \g /dev/null
SELECT wallet.record_consent(:sw, 'sweeper', 'push', 'marketing', true, 'app', device => 'ip 10.0.0.1') \g /dev/null
SELECT wallet.forget_member(:sw, 'sweeper', 'erasure request') \g /dev/null
SELECT member_id AS swm FROM wallet.members WHERE merchant_id = :sw AND status = 'forgotten' \gset
UPDATE wallet.purchases SET attributes = '{"store": "s1", "email": "sweeper@example.com"}' WHERE member_id = :swm;
UPDATE wallet.campaign_feedback SET comment = 'late comment' WHERE member_id = :swm;
UPDATE wallet.referrals SET referrer_fingerprint = 'dev:late' WHERE referrer_id = :swm;
UPDATE wallet.push_consent_log SET device = 'ip 10.0.0.2' WHERE member_id = :swm;
INSERT INTO wallet.push_preferences (merchant_id, member_id, topics) VALUES (:sw, :swm, '{marketing}');
SELECT is(wallet_internal.forget_sweep('1 day', 100), 5::bigint, 'forget_sweep clears what was written back: a purchase''s attributes, a comment, a fingerprint, a device, a preference');
SELECT is((SELECT format('%s|%s|%s|%s|%s', (SELECT attributes FROM wallet.purchases WHERE member_id = :swm),
                         (SELECT comment FROM wallet.campaign_feedback WHERE member_id = :swm),
                         (SELECT referrer_fingerprint FROM wallet.referrals WHERE referrer_id = :swm),
                         (SELECT device FROM wallet.push_consent_log WHERE member_id = :swm),
                         (SELECT count(*) FROM wallet.push_preferences WHERE member_id = :swm))),
          '{"store": "s1"}||||0', 'only what describes the sale is left, as forget_member leaves it');

SELECT * FROM finish();
ROLLBACK;

-- pgTAP: referrals and sharing (issue 11).  Purchases are inserted into
-- wallet.purchases directly, as a checkout would (the reward trigger fires
-- on any insert).  Time is simulated by moving a referral's window back.
BEGIN;
SET LOCAL timezone = 'UTC';
SELECT plan(104);

SELECT wallet.create_merchant('referrals merchant') AS m \gset
SELECT wallet.create_merchant('referrals other merchant') AS m2 \gset
SELECT wallet.create_program(:m, 'referral points', interval '1 year') AS p \gset
SELECT wallet.create_program(:m2, 'other points') AS p_other \gset
SELECT wallet.create_campaign(:m, 'bring a friend') AS c \gset
SELECT wallet.create_campaign(:m, 'no referral program') AS c_bare \gset
SELECT wallet.create_campaign(:m, 'next month', starts_at => now() + interval '1 month') AS c_future \gset

-- A purchase as a checkout records it.
CREATE FUNCTION pg_temp.buy(m bigint, ref text, order_ref text, amount numeric, currency text DEFAULT 'CNY',
                            at timestamptz DEFAULT now()) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO wallet.purchases (merchant_id, member_id, order_ref, amount, currency, occurred_at)
    VALUES (m, wallet_internal.member_ensure(m, ref), order_ref, amount, currency, at)
    RETURNING purchase_id
$$;
CREATE FUNCTION pg_temp.points(p bigint, ref text) RETURNS bigint LANGUAGE sql AS $$
    SELECT coalesce((SELECT wallet.balance(a) FROM wallet.find_account(p, ref) a WHERE a IS NOT NULL), 0)
$$;
CREATE FUNCTION pg_temp.referral(m bigint, referee text) RETURNS wallet.referrals LANGUAGE sql AS $$
    SELECT r.* FROM wallet.referrals r JOIN wallet.members x ON x.member_id = r.referee_id
     WHERE r.merchant_id = m AND x.member_ref = referee AND r.status <> 'refused'
$$;
-- Moves a referral back in time: made `ago`, its window as long as before.
CREATE FUNCTION pg_temp.age_referral(id bigint, ago interval) RETURNS void LANGUAGE sql AS $$
    UPDATE wallet.referrals SET referred_at = referred_at - ago, expires_at = expires_at - ago WHERE referral_id = id
$$;

-- ---------------------------------------------------------------- set-up
SELECT is((SELECT (r.referrer_points, r.referee_points, r.qualify_days, r.min_amount, r.currency, r.max_per_referrer, r.cap_period)::text
             FROM wallet.set_referral_program(:c, :p, 100, 50, 30, min_amount => 10, currency => 'CNY',
                                              max_per_referrer => 3, cap_period => 'month') r),
          '(100,50,30,10,CNY,3,month)', 'set_referral_program stores the terms');
SELECT throws_ok(format('SELECT wallet.set_referral_program(%s, %s, 1, 1, 30)', :c, :p_other), 'WL214', NULL,
                 'a program of another merchant: WL214, as an unknown one');
SELECT throws_ok(format('SELECT wallet.set_referral_program(%s, %s, -1, 1, 30)', :c, :p), 'WL204', NULL, 'negative points: WL204');
SELECT throws_ok(format('SELECT wallet.set_referral_program(%s, %s, 0, 0, 30)', :c, :p), 'WL204', NULL, 'no points on either side: WL204');
SELECT throws_ok(format('SELECT wallet.set_referral_program(%s, %s, 1, 1, 30, min_amount => 10)', :c, :p), '22023', NULL,
                 'a minimum amount without a currency: 22023');
SELECT throws_ok(format($$SELECT wallet.set_referral_program(%s, %s, 1, 1, 30, cap_period => 'fortnight')$$, :c, :p), '22023', NULL,
                 'an unknown cap period: 22023');
SELECT throws_ok(format('SELECT wallet.set_referral_program(999999999, %s, 1, 1, 30)', :p), 'WL101', NULL, 'an unknown campaign: WL101');
-- arguments out of their domain: the code of the other bad values, never a raw 22003
SELECT throws_ok(format('SELECT wallet.set_referral_program(%s, %s, 9223372036854775807, 9223372036854775807, 30)', :c, :p), 'WL204',
                 'invalid amount of points', 'points of both sides adding up beyond bigint: WL204, not 22003');
SELECT throws_ok(format($$SELECT wallet.set_referral_program(%s, %s, 1, 1, 30, min_amount => 'NaN', currency => 'CNY')$$, :c, :p), '22023',
                 'invalid referral terms', 'a NaN min_amount: 22023');
SELECT throws_ok(format($$SELECT wallet.set_referral_program(%s, %s, 1, 1, 30, min_amount => 'Infinity', currency => 'CNY')$$, :c, :p), '22023',
                 'invalid referral terms', 'an infinite min_amount: 22023');
SELECT throws_ok($$SELECT wallet.expire_referrals('-infinity')$$, '22023', 'as_of must be finite', 'expiring as of -infinity: 22023');
-- every WL error carries a detail (README "Errors")
SELECT is(error_of(format('SELECT wallet.set_referral_program(999999999, %s, 1, 1, 30)', :p)),
          'WL101 campaign 999999999 does not exist / There is no campaign 999999999.',
          'WL101 of set_referral_program has a detail');
SELECT is(error_of(format($$SELECT wallet.refer(%s, 'x', 'y', 'link', 999999999)$$, :m)),
          format('WL101 campaign 999999999 does not exist / Merchant %s has no campaign 999999999.', :m),
          'WL101 of refer has a detail');
SELECT is(error_of(format($$SELECT wallet.refer(%s, 'x', 'y', 'link', %s)$$, :m, :c_bare)),
          format('WL670 campaign %s has no referral program / A referral earns the rewards of its campaign''s referral program.', :c_bare),
          'WL670 has a detail');
SELECT lives_ok(format('SELECT wallet.set_referral_program(%s, %s, 10, 10, 7)', :c_future, :p), 'a second campaign gets its own program');
SELECT throws_ok(format($$SELECT wallet.refer(%s, 'x', 'y', 'link', %s)$$, :m, :c_bare), 'WL670', NULL,
                 'refer under a campaign without referral program: WL670');
SELECT throws_ok(format($$SELECT wallet.refer(%s, 'x', 'y', 'link', %s)$$, :m2, :c), 'WL101', NULL,
                 'refer naming another merchant''s campaign: WL101');
SELECT throws_ok(format($$SELECT wallet.refer(%s, 'x', 'y', ' ', %s)$$, :m, :c), '22023', NULL, 'a blank channel: 22023');
SELECT throws_ok(format($$SELECT wallet.refer(%s, 'x', 'y', 'link', %s, repeat('f', 257))$$, :m, :c), '22023', NULL,
                 'an oversized fingerprint: 22023');

-- ---------------------------------------------------------------- referring
SELECT wallet.refer(:m, 'alice', 'bob', 'wechat', :c, 'dev-alice', 'dev-bob') AS r_bob \gset
SELECT is((SELECT (status, reason, channel, referrer_points, referee_points, min_amount, currency, program_id = :p,
                   expires_at = referred_at + interval '30 days')::text
             FROM wallet.referrals WHERE referral_id = (:'r_bob'::wallet.referrals).referral_id),
          '(pending,,wechat,100,50,10,CNY,t,t)', 'a referral is pending, with the program''s terms and a 30-day window');
SELECT is((wallet.refer(:m, 'alice', 'bob', 'wechat', :c, 'dev-alice', 'dev-bob')).referral_id, (:'r_bob'::wallet.referrals).referral_id,
          'the same referral again returns the first (a retry)');
SELECT is((SELECT count(*) FROM wallet.referrals WHERE merchant_id = :m), 1::bigint, 'the retry wrote nothing');
SELECT is((SELECT (r.status, r.reason)::text FROM wallet.refer(:m, 'carol', 'bob', 'link', :c) r), '(refused,already_referred)',
          'another referrer for the same referee: refused, already_referred');
SELECT is((SELECT x.member_ref FROM wallet.members x WHERE x.member_id = (pg_temp.referral(:m, 'bob')).referrer_id), 'alice',
          'the referee keeps its first referrer');
SELECT is((SELECT (r.status, r.reason)::text FROM wallet.refer(:m, 'alice', 'alice', 'link', :c) r), '(refused,self_referral)',
          'referring oneself: refused, self_referral');
SELECT pg_temp.buy(:m, 'dora', 'dora-1', 20) \g /dev/null
SELECT is((SELECT (r.status, r.reason)::text FROM wallet.refer(:m, 'alice', 'dora', 'link', :c) r), '(refused,referee_already_purchased)',
          'a referee who already bought: refused, referee_already_purchased');
SELECT is((SELECT (r.status, r.reason)::text FROM wallet.refer(:m, 'alice', 'eve', 'link', :c, NULL, 'dev-alice') r), '(refused,shared_fingerprint)',
          'the referee''s fingerprint was the referrer''s on an earlier referral: refused, shared_fingerprint');
SELECT is((SELECT (r.status, r.reason)::text FROM wallet.refer(:m, 'gus', 'hal', 'link', :c, 'dev-x', 'dev-x') r), '(refused,shared_fingerprint)',
          'one fingerprint given for both sides: refused, shared_fingerprint');
SELECT is((SELECT (r.status, r.reason)::text FROM wallet.refer(:m, 'ivy', 'hal', 'link', :c, 'dev-x') r), '(refused,shared_fingerprint)',
          'the referrer''s fingerprint was seen on the referee before (an earlier attempt naming it): refused, shared_fingerprint');
SELECT is((SELECT (r.status, r.reason)::text FROM wallet.refer(:m, 'ivy', 'hal2', 'link', :c, 'dev-ivy', 'dev-hal2') r), '(pending,)',
          'distinct fingerprints: pending');
SELECT is((SELECT (r.status, r.reason)::text FROM wallet.refer(:m, 'alice', 'zed', 'link', :c_future) r), '(refused,campaign_inactive)',
          'a campaign that has not started: refused, campaign_inactive');

-- the cap: 3 a month for alice (bob is one); refusals do not count
SELECT is((SELECT string_agg((r.status || coalesce(':' || r.reason, '')), ',' ORDER BY g)
             FROM generate_series(1, 3) g, wallet.refer(:m, 'alice', 'friend' || g, 'link', :c) r),
          'pending,pending,refused:referrer_cap', 'alice''s cap of 3 a month: two more pending, then refused, referrer_cap');
SELECT is((SELECT referrals FROM wallet.referral_counts k JOIN wallet.members x ON x.member_id = k.member_id
            WHERE x.member_ref = 'alice' AND k.campaign_id = :c),
          3, 'the counter holds the 3 referrals taken (refused attempts not counted)');
SELECT is((SELECT period_start FROM wallet.referral_counts k WHERE k.campaign_id = :c LIMIT 1),
          date_trunc('month', now()), 'the period is the UTC calendar month');
SELECT is((SELECT (r.status)::text FROM wallet.refer(:m, 'ivy', 'friend9', 'link', :c) r), 'pending', 'another referrer has a cap of its own');
SELECT is((SELECT (r.status, r.reason)::text FROM wallet.refer(:m, 'alice', 'friend1', 'link', :c) r), '(pending,)',
          'a retry of a pending referral still returns it at the cap');

-- ---------------------------------------------------------------- rewards
SELECT pg_temp.buy(:m, 'bob', 'bob-1', 5) \g /dev/null
SELECT is((pg_temp.referral(:m, 'bob')).status, 'pending', 'a purchase below the minimum amount: still pending');
SELECT pg_temp.buy(:m, 'bob', 'bob-2', 50, 'USD') \g /dev/null
SELECT is((pg_temp.referral(:m, 'bob')).status, 'pending', 'a purchase in another currency: still pending');
SELECT is(pg_temp.points(:p, 'alice') + pg_temp.points(:p, 'bob'), 0::bigint, 'no points for unqualified purchases');

SAVEPOINT checkout;
SELECT pg_temp.buy(:m, 'bob', 'bob-4', 12) AS bob4_rolled_back \gset
SELECT is((pg_temp.referral(:m, 'bob')).status, 'rewarded', 'inside the checkout''s transaction, rewarded');
ROLLBACK TO SAVEPOINT checkout;
SELECT is((pg_temp.referral(:m, 'bob')).status, 'pending', 'the checkout rolled back: the reward with it, pending again');
SELECT is((SELECT count(*) FROM wallet.entries e WHERE e.idempotency_key LIKE 'referral:%'), 0::bigint, 'and no entry stays');

SELECT pg_temp.buy(:m, 'bob', 'bob-5', 12) AS bob5 \gset
SELECT is((SELECT (r.status, r.purchase_id = :bob5, r.referrer_entry_id IS NOT NULL, r.referee_entry_id IS NOT NULL, r.settled_at IS NOT NULL)::text
             FROM pg_temp.referral(:m, 'bob') r),
          '(rewarded,t,t,t,t)', 'the first qualifying purchase rewards the referral, naming the purchase and both entries');
SELECT is(pg_temp.points(:p, 'alice'), 100::bigint, 'the referrer got 100 points');
SELECT is(pg_temp.points(:p, 'bob'), 50::bigint, 'the referee got 50 points');
SELECT is((SELECT string_agg(e.idempotency_key || '=' || e.points, ',' ORDER BY e.idempotency_key) FROM wallet.entries e
            WHERE e.entry_id IN ((pg_temp.referral(:m, 'bob')).referrer_entry_id, (pg_temp.referral(:m, 'bob')).referee_entry_id)),
          format('referral:%s:referee=50,referral:%s:referrer=100', (:'r_bob'::wallet.referrals).referral_id, (:'r_bob'::wallet.referrals).referral_id),
          'the accruals carry keys derived from the referral');
SELECT is((SELECT e.expires_at FROM wallet.entries e WHERE e.entry_id = (pg_temp.referral(:m, 'bob')).referee_entry_id),
          wallet.policy_expiry((SELECT e.created_at FROM wallet.entries e WHERE e.entry_id = (pg_temp.referral(:m, 'bob')).referee_entry_id),
                               interval '1 year', 'day'),
          'reward points expire per the program''s policy');
SELECT is((SELECT string_agg(x.member_ref || ':' || (ev.attributes ->> 'side') || ':' || (ev.attributes ->> 'points'), ',' ORDER BY x.member_ref)
             FROM wallet.member_events ev JOIN wallet.members x ON x.member_id = ev.member_id
            WHERE ev.merchant_id = :m AND ev.kind = 'referral_rewarded'),
          'alice:referrer:100,bob:referee:50', 'one referral_rewarded event per side');
SELECT pg_temp.buy(:m, 'bob', 'bob-6', 99) \g /dev/null
SELECT is(pg_temp.points(:p, 'alice') + pg_temp.points(:p, 'bob'), 150::bigint, 'a later purchase rewards nothing more: once');
SELECT is((SELECT (r.status, r.reason)::text FROM wallet.refer(:m, 'alice', 'bob', 'wechat', :c) r), '(rewarded,)',
          'the referral again: the first, rewarded');

-- late, and late but made within the window (recorded afterwards)
SELECT pg_temp.age_referral((pg_temp.referral(:m, 'friend1')).referral_id, interval '40 days') \g /dev/null
SELECT pg_temp.buy(:m, 'friend1', 'f1-1', 20) \g /dev/null
SELECT is((SELECT (r.status, r.reason, r.referrer_entry_id)::text FROM pg_temp.referral(:m, 'friend1') r), '(expired,window_passed,)',
          'a purchase after the window: expired, window_passed, nothing rewarded');
SELECT pg_temp.age_referral((pg_temp.referral(:m, 'friend2')).referral_id, interval '40 days') \g /dev/null
SELECT pg_temp.buy(:m, 'friend2', 'f2-1', 20, 'CNY', now() - interval '20 days') \g /dev/null
SELECT is((pg_temp.referral(:m, 'friend2')).status, 'rewarded', 'a purchase made within the window, recorded later: rewarded');
SELECT is(pg_temp.points(:p, 'friend1'), 0::bigint, 'the late referee got nothing');
SELECT is(pg_temp.points(:p, 'friend2'), 50::bigint, 'the referee within the window got its points');
SELECT is(pg_temp.points(:p, 'alice'), 200::bigint, 'and its referrer too');

-- a purchase made before the referral, recorded late: a customer already
SELECT is((wallet.refer(:m, 'ivy', 'pia', 'link', :c)).status, 'pending', 'fixture: pia is referred');
SELECT pg_temp.buy(:m, 'pia', 'pia-1', 50, 'CNY', now() - interval '1 day') \g /dev/null
SELECT is((SELECT (r.status, r.reason)::text FROM pg_temp.referral(:m, 'pia') r), '(expired,referee_already_purchased)',
          'a purchase made before the referral turns up: the referee was a customer, expired (referee_already_purchased)');
SELECT pg_temp.buy(:m, 'pia', 'pia-2', 50) \g /dev/null
SELECT is(pg_temp.points(:p, 'pia') + pg_temp.points(:p, 'ivy'), 0::bigint, 'and a later purchase rewards nothing');

-- a referee-only program whose points program gets closed
SELECT wallet.create_program(:m, 'closing points') AS p_closing \gset
SELECT wallet.create_campaign(:m, 'closing') AS c_closing \gset
SELECT is((SELECT (r.referrer_points, r.referee_points)::text FROM wallet.set_referral_program(:c_closing, :p_closing, 0, 30, 10) r), '(0,30)',
          'a program rewarding the referee only');
SELECT wallet.refer(:m, 'kim', 'lou', 'link', :c_closing) \g /dev/null
SELECT wallet.refer(:m, 'kim', 'max', 'link', :c_closing) \g /dev/null
SELECT pg_temp.buy(:m, 'lou', 'lou-1', 1) \g /dev/null
SELECT is((SELECT (r.status, r.referrer_entry_id IS NULL, r.referee_entry_id IS NOT NULL)::text FROM pg_temp.referral(:m, 'lou') r),
          '(rewarded,t,t)', 'referee only: rewarded with one entry');
SELECT is(pg_temp.points(:p_closing, 'lou'), 30::bigint, 'the referee got 30 points');
SELECT is(wallet.find_account(:p_closing, 'kim'), NULL, 'the referrer got nothing, not even an account');
SELECT wallet.close_program(:p_closing) \g /dev/null
SELECT pg_temp.buy(:m, 'max', 'max-1', 1) \g /dev/null
SELECT is((SELECT (r.status, r.reason)::text FROM pg_temp.referral(:m, 'max') r), '(expired,program_closed)',
          'a closed program: the purchase expires the referral (program_closed), the checkout goes through');
SELECT throws_ok(format('SELECT wallet.set_referral_program(%s, %s, 1, 1, 30)', :c_closing, :p_closing), 'WL202', NULL,
                 'setting up a referral program in a closed program: WL202');

-- expiry
SELECT pg_temp.age_referral((pg_temp.referral(:m, 'hal2')).referral_id, interval '31 days') \g /dev/null
SELECT pg_temp.age_referral((pg_temp.referral(:m, 'friend9')).referral_id, interval '31 days') \g /dev/null
SELECT throws_ok('SELECT wallet.expire_referrals(now() + interval ''1 day'')', '22023', NULL, 'expiring as of a future instant: 22023');
SELECT is(wallet.expire_referrals(now(), 1), 1, 'expire_referrals works in batches: 1 of 2');
SELECT is(wallet.expire_referrals(now(), 10), 1, 'then the other');
SELECT is(wallet.expire_referrals(now(), 10), 0, 'then none');
SELECT is((SELECT string_agg(r.status || ':' || r.reason, ',') FROM (SELECT (pg_temp.referral(:m, 'hal2')).*
                                                                    UNION ALL SELECT (pg_temp.referral(:m, 'friend9')).*) r),
          'expired:window_passed,expired:window_passed', 'both expired, window_passed');
SELECT is((pg_temp.referral(:m, 'friend3')).status, NULL, 'fixture: friend3 was refused (the cap), no referral');
SELECT pg_temp.buy(:m, 'hal2', 'hal2-1', 20) \g /dev/null
SELECT is(pg_temp.points(:p, 'hal2'), 0::bigint, 'an expired referral rewards nothing');
SELECT is((SELECT (r.status, r.reason)::text FROM wallet.refer(:m, 'gus', 'hal2', 'link', :c) r), '(refused,already_referred)',
          'an expired referral still names the referee''s referrer');

-- ---------------------------------------------------------------- sharing
SELECT throws_ok(format($$SELECT wallet.record_share(%s, 'alice', %s, 'weibo')$$, :m, :c), 'WL671', NULL,
                 'a campaign without share reward: WL671');
SELECT is((SELECT (r.points, r.max_per_member, r.max_per_day)::text FROM wallet.set_share_reward(:c, :p, 5, 3, 2) r), '(5,3,2)',
          'set_share_reward stores the terms');
SELECT throws_ok(format('SELECT wallet.set_share_reward(%s, %s, 0)', :c, :p), 'WL204', NULL, 'zero points: WL204');
SELECT wallet.upsert_member(:m, 'nia', 'Asia/Shanghai') \g /dev/null
SELECT is((SELECT string_agg(r.status || coalesce(':' || r.reason, '') || ':' || r.points, ',' ORDER BY g)
             FROM generate_series(1, 3) g, wallet.record_share(:m, 'nia', :c, 'weibo-' || g) r),
          'rewarded:5,rewarded:5,refused:daily_cap:0', 'two shares a day are rewarded, the third refused: daily_cap');
SELECT is((SELECT day FROM wallet.share_counts k JOIN wallet.members x ON x.member_id = k.member_id WHERE x.member_ref = 'nia'),
          (now() AT TIME ZONE 'Asia/Shanghai')::date, 'the day is the member''s, in its time zone');
UPDATE wallet.share_counts k SET day = day - 1 FROM wallet.members x WHERE x.member_id = k.member_id AND x.member_ref = 'nia';
SELECT is((SELECT string_agg(r.status || coalesce(':' || r.reason, ''), ',' ORDER BY g)
             FROM generate_series(1, 2) g, wallet.record_share(:m, 'nia', :c, 'weibo-' || g) r),
          'rewarded,refused:member_cap', 'the next day: one more, then the cap of 3 per member and campaign');
SELECT is(pg_temp.points(:p, 'nia'), 15::bigint, '3 rewarded shares of 5 points');
SELECT is((SELECT count(*) FROM wallet.member_events ev JOIN wallet.members x ON x.member_id = ev.member_id
            WHERE x.member_ref = 'nia' AND ev.kind = 'shared'), 5::bigint, 'every share is a member event shared, refused ones too');
SELECT is((SELECT string_agg(ev.attributes ->> 'status', ',' ORDER BY ev.event_id) FROM wallet.member_events ev JOIN wallet.members x ON x.member_id = ev.member_id
            WHERE x.member_ref = 'nia' AND ev.kind = 'shared'),
          'rewarded,rewarded,refused,rewarded,refused', 'with its outcome');
-- the day counted only moves forward: after the member's time zone moves
-- west (UTC+14 to UTC-11, always another date), a share of the earlier local
-- day counts against the later day already rewarded, and moving back does
-- not reset it (max_per_day 1: one reward on the Kiritimati day)
SELECT wallet.create_campaign(:m, 'share across time zones') AS c_tz \gset
SELECT wallet.set_share_reward(:c_tz, :p, 5, NULL, 1) \g /dev/null
SELECT wallet.upsert_member(:m, 'tove', 'Pacific/Kiritimati') \g /dev/null
SELECT wallet.record_share(:m, 'tove', :c_tz, 'weibo', 'tove-1') \g /dev/null
SELECT wallet.upsert_member(:m, 'tove', 'Pacific/Pago_Pago') \g /dev/null
SELECT wallet.record_share(:m, 'tove', :c_tz, 'weibo', 'tove-2') \g /dev/null
SELECT wallet.upsert_member(:m, 'tove', 'Pacific/Kiritimati') \g /dev/null
SELECT wallet.record_share(:m, 'tove', :c_tz, 'weibo', 'tove-3') \g /dev/null
SELECT is((SELECT string_agg(x.status || coalesce(':' || x.reason, ''), ',' ORDER BY x.share_id) FROM wallet.shares x
            WHERE x.campaign_id = :c_tz),
          'rewarded,refused:daily_cap,refused:daily_cap',
          'a share of an earlier local day (time zone moved west) counts against the later day: no second reward on the Kiritimati day');
SELECT wallet.record_share(:m, 'olga', :c, 'wechat', 'share-k1') AS s1 \gset
SELECT is((wallet.record_share(:m, 'olga', :c, 'wechat', 'share-k1')).share_id, (:'s1'::wallet.shares).share_id,
          'a retry with the same key returns the first share');
SELECT is(pg_temp.points(:p, 'olga'), 5::bigint, 'and posts nothing more');
SELECT throws_ok(format($$SELECT wallet.record_share(%s, 'olga', %s, 'weibo', 'share-k1')$$, :m, :c), 'WL002', NULL,
                 'the same key for another share: WL002');
SELECT is((SELECT e.idempotency_key FROM wallet.entries e WHERE e.entry_id = (:'s1'::wallet.shares).entry_id),
          'share:' || (:'s1'::wallet.shares).share_id, 'the reward''s key is derived from the share');
SELECT lives_ok(format('SELECT wallet.set_share_reward(%s, %s, 1)', :c_future, :p), 'a share reward for the campaign of next month');
SELECT is((SELECT (r.status, r.reason)::text FROM wallet.record_share(:m, 'olga', :c_future, 'wechat') r),
          '(refused,campaign_inactive)', 'a campaign that has not started: refused, campaign_inactive');
SELECT throws_ok(format($$SELECT wallet.record_share(%s, 'olga', %s, 'wechat', ' ')$$, :m, :c), '22023', NULL, 'a blank key: 22023');

-- ---------------------------------------------------------------- erasure
SELECT count(*) AS alice_fp FROM wallet.referrals r JOIN wallet.members x ON x.member_ref = 'alice' AND x.merchant_id = :m
 WHERE (r.referrer_id = x.member_id AND r.referrer_fingerprint IS NOT NULL) OR (r.referee_id = x.member_id AND r.referee_fingerprint IS NOT NULL) \gset
SELECT is(:alice_fp::int, 1, 'fixture: one referral holds a fingerprint of alice''s side');
SELECT ok(wallet.forget_member(:m, 'alice', 'erasure request'), 'forget_member finds alice');
SELECT is((SELECT count(*) FROM wallet.referrals r JOIN wallet.members x ON x.member_id = r.referrer_id
            WHERE x.status = 'forgotten' AND r.referrer_fingerprint IS NOT NULL), 0::bigint,
          'her fingerprints are gone from every referral she made');
SELECT is((SELECT count(*) FROM wallet.referrals WHERE referrer_fingerprint = 'dev-alice'), 0::bigint,
          'her device''s hash is gone from her side');
SELECT is((SELECT referee_fingerprint FROM wallet.referrals WHERE referral_id = (:'r_bob'::wallet.referrals).referral_id), 'dev-bob',
          'the other side''s fingerprint stays');
SELECT is((SELECT (new_values -> 'rows' ->> 'referrals')::int FROM wallet.audit_log WHERE action = 'forget_member' ORDER BY id DESC LIMIT 1),
          :alice_fp::int, 'the audit log counts the referrals changed');
SELECT is((SELECT (status, referrer_points)::text FROM wallet.referrals WHERE referral_id = (:'r_bob'::wallet.referrals).referral_id), '(rewarded,100)',
          'the referral and its reward stay');

-- ---------------------------------------------------------------- through record_purchase, into the program it earns in
-- The reward trigger fires inside record_purchase, on the account the
-- purchase is about to post to: both postings stay, in journal order.
SELECT wallet.create_merchant('referrals checkout') AS mc \gset
SELECT wallet.create_program(:mc, 'checkout points') AS pc \gset
SELECT wallet.set_program_earning(:pc, 'CNY');
SELECT wallet.create_earning_rule(:pc, 'base', 'per_unit', 1, valid_from => now() - interval '1 day');
SELECT wallet.create_campaign(:mc, 'bring a friend to the till') AS cc \gset
SELECT wallet.set_referral_program(:cc, :pc, 500, 200, 30, min_amount => 50, currency => 'CNY');
SELECT wallet.open_account(:pc, 'ra');
SELECT is((wallet.refer(:mc, 'ra', 'rb', 'link', :cc)).status, 'pending', 'checkout: ra refers rb, who has no account yet');
SELECT is((SELECT (r.status, r.reason)::text FROM wallet.refer(:mc, 'rb', 'ra', 'link', :cc) r), '(refused,referral_loop)',
          'rb refers ra, who referred rb: refused, referral_loop');
SELECT is((wallet.refer(:mc, 'rb', 'rc', 'link', :cc)).status, 'pending', 'rb refers rc: pending (a chain, no loop)');
SELECT is((SELECT (r.status, r.reason)::text FROM wallet.refer(:mc, 'rc', 'ra', 'link', :cc) r), '(refused,referral_loop)',
          'rc refers ra, up rc''s chain of referrers (rb, ra): refused, referral_loop');
SELECT is((SELECT points FROM wallet.record_purchase(:mc, 'rb', 'rb-1', 40, 'CNY')), 40::bigint, 'rb''s first purchase of 40 earns 40 (below min_amount: no reward yet)');
SELECT is((SELECT points FROM wallet.record_purchase(:mc, 'rb', 'rb-2', 60, 'CNY')), 60::bigint, 'rb''s purchase of 60 earns 60 and qualifies');
SELECT is(pg_temp.points(:pc, 'rb') || '/' || pg_temp.points(:pc, 'ra'), '300/500',
          'rb holds 40 + 60 + the reward of 200, ra the reward of 500: no posting lost');
SELECT is((SELECT count(*) FROM wallet.verify_ledger() v JOIN wallet.accounts a ON a.account_id = v.account_id WHERE a.program_id = :pc), 0::bigint,
          'every account of the program replays from its journal (the purchase''s entry follows the reward)');

SELECT * FROM finish();
ROLLBACK;

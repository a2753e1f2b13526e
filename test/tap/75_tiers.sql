-- pgTAP: tiers (issue 10).  Upgrades on the posting that crosses a
-- threshold; each downgrade policy, with grace, by moving as_of; windows at
-- their boundaries; tier_progress figures worked out by hand; sweeps after a
-- change of tiers; batches.
--
-- One transaction: now() is frozen, postings are stamped with the clock (the
-- same UTC month, but for a run straddling midnight at a month's end).
-- M0 is the start of the current UTC month; the figures below follow from
-- the rule "a window is whole UTC months ending with the month of as_of".
BEGIN;
SET LOCAL timezone = 'UTC';
SELECT plan(146);
\ir ../tiers_expected.sql

CREATE TEMP TABLE v (k text PRIMARY KEY, id bigint);
CREATE FUNCTION pg_temp.id(k text) RETURNS bigint LANGUAGE sql AS $$ SELECT id FROM v WHERE v.k = $1 $$;
CREATE FUNCTION pg_temp.rank(a bigint) RETURNS int LANGUAGE sql AS $$
    SELECT coalesce((SELECT rank FROM wallet.account_tiers t WHERE t.account_id = a), 0) $$;
CREATE FUNCTION pg_temp.m0() RETURNS timestamptz LANGUAGE sql AS $$
    SELECT date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' $$;
CREATE FUNCTION pg_temp.y1() RETURNS timestamptz LANGUAGE sql AS $$
    SELECT (date_trunc('year', now() AT TIME ZONE 'UTC') + interval '1 year') AT TIME ZONE 'UTC' $$;
CREATE FUNCTION pg_temp.acc(a bigint, pts bigint, k text) RETURNS bigint LANGUAGE sql AS $$
    SELECT entry_id FROM wallet.accrue(a, pts, k, 'test') $$;
CREATE FUNCTION pg_temp.program(name text, tiers bigint[], w text DEFAULT 'rolling', n int DEFAULT 12,
        down text DEFAULT 'grace', grace int DEFAULT 30, step text DEFAULT 'qualified') RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    p bigint := wallet.create_program(pg_temp.id('m'), name);
    i int;
BEGIN
    PERFORM wallet.set_tier_policy(p, w, n, down, grace, step);
    FOR i IN 1 .. cardinality(tiers) LOOP
        PERFORM wallet.create_tier(p, i, CASE i WHEN 1 THEN 'Silver' WHEN 2 THEN 'Gold' ELSE 'Tier ' || i END, tiers[i]);
    END LOOP;
    PERFORM wallet.evaluate_tiers(p);   -- the sweep of a program without accounts
    RETURN p;
END
$$;

INSERT INTO v VALUES ('m', wallet.create_merchant('tiers merchant'));

-- ------------------------------------------------------------ 1. upgrade on the crossing posting
INSERT INTO v VALUES ('p1', pg_temp.program('p1', '{100,500}'));
INSERT INTO v VALUES ('a1', wallet.open_account(pg_temp.id('p1'), 'alice'));
INSERT INTO v VALUES ('e1', pg_temp.acc(pg_temp.id('a1'), 90, 'a1-1'));
SELECT is(pg_temp.rank(pg_temp.id('a1')), 0, '90 points earned: below Silver (100)');
SELECT is((SELECT count(*) FROM wallet.account_tiers WHERE account_id = pg_temp.id('a1')), 0::bigint, 'no tier, no row');
INSERT INTO v VALUES ('e2', pg_temp.acc(pg_temp.id('a1'), 20, 'a1-2'));
SELECT is(pg_temp.rank(pg_temp.id('a1')), 1, 'the posting of 20 more crosses 100: Silver, in the same transaction');
SELECT is((SELECT (reason, entry_id, from_rank, to_rank, from_tier) FROM wallet.tier_history WHERE account_id = pg_temp.id('a1')),
          ('upgrade'::text, pg_temp.id('e2'), 0, 1, NULL::bigint), 'tier_history: an upgrade by that very posting, from no tier');
SELECT is((SELECT changed_at FROM wallet.tier_history WHERE account_id = pg_temp.id('a1')),
          (SELECT created_at FROM wallet.entries WHERE entry_id = pg_temp.id('e2')), 'the change takes effect at the posting''s instant');
SELECT is((SELECT attributes FROM wallet.member_events WHERE kind = 'tier_changed' AND member_id = (SELECT member_id FROM wallet.accounts WHERE account_id = pg_temp.id('a1'))),
          jsonb_build_object('program_id', pg_temp.id('p1'), 'account_id', pg_temp.id('a1'), 'from_tier', NULL, 'to_tier',
                             (SELECT tier_id FROM wallet.tiers WHERE program_id = pg_temp.id('p1') AND rank = 1),
                             'from_rank', 0, 'to_rank', 1, 'reason', 'upgrade'),
          'a tier_changed event for the push queue, with program, account, tiers, ranks and reason');
SELECT is((SELECT review_at FROM wallet.account_tiers WHERE account_id = pg_temp.id('a1')), pg_temp.m0() + interval '12 months',
          'review_at: the 110 points of this month leave a 12-month window at the start of the 12th month from now');
INSERT INTO v VALUES ('e3', pg_temp.acc(pg_temp.id('a1'), 400, 'a1-3'));
SELECT is(pg_temp.rank(pg_temp.id('a1')), 2, '510 earned: Gold');
SELECT is((SELECT array_agg(to_rank ORDER BY change_id) FROM wallet.tier_history WHERE account_id = pg_temp.id('a1')), '{1,2}'::int[],
          'two changes recorded');
SELECT is(pg_temp.tier_expected(pg_temp.id('a1')), 2, 'the from-scratch recomputation from the journal agrees');
SELECT is((SELECT count(*) FROM wallet.member_events WHERE kind = 'tier_changed' AND attributes->>'account_id' = pg_temp.id('a1')::text),
          2::bigint, 'one event per change');
SELECT lives_ok($$SELECT wallet.redeem(pg_temp.id('a1'), 500, 'a1-r', 'spend')$$, 'spending 500 points');
SELECT is(pg_temp.rank(pg_temp.id('a1')), 2, 'spending does not lower the tier: points earned count, not the balance');
-- member_tier in the past, from the history
SELECT is((wallet.member_tier(pg_temp.id('a1'), (SELECT created_at FROM wallet.entries WHERE entry_id = pg_temp.id('e2')) - interval '1 microsecond')).rank,
          0, 'member_tier just before the crossing posting: none');
SELECT is((SELECT (t.rank, t.name) FROM wallet.member_tier(pg_temp.id('a1'), (SELECT created_at FROM wallet.entries WHERE entry_id = pg_temp.id('e2'))) t),
          (1, 'Silver'::text), 'member_tier at the crossing posting: Silver');
SELECT is((SELECT (t.rank, t.name) FROM wallet.member_tier(pg_temp.id('a1'), clock_timestamp()) t), (2, 'Gold'::text), 'member_tier now (the clock: now() is the transaction''s start): Gold');

INSERT INTO v VALUES ('a2', wallet.open_account(pg_temp.id('p1'), 'bob'));
SELECT lives_ok($$SELECT pg_temp.acc(pg_temp.id('a2'), 600, 'a2-1')$$, 'one posting of 600');
SELECT is((SELECT array_agg(to_rank) FROM wallet.tier_history WHERE account_id = pg_temp.id('a2')), '{2}'::int[],
          'one posting crossing both thresholds: straight to Gold, one change');

-- an untiered program: nothing written
INSERT INTO v VALUES ('p0', wallet.create_program(pg_temp.id('m'), 'untiered'));
INSERT INTO v VALUES ('a0', wallet.open_account(pg_temp.id('p0'), 'alice'));
SELECT lives_ok($$SELECT pg_temp.acc(pg_temp.id('a0'), 100000, 'a0-1')$$, 'an accrual in a program without tiers');
SELECT is((SELECT count(*) FROM wallet.account_tiers WHERE program_id = pg_temp.id('p0')), 0::bigint, 'no tier row for it');

-- ------------------------------------------------------------ 2. tier_progress of a1, by hand
-- Gold (500) held, 510 earned this month, grace 30 days: the points leave the
-- window at M0 + 12 months, the grace ends 30 days later; by then all 510
-- are out of the window, so 500 must be earned before it.
SELECT is((SELECT (tier_name, rank, earned, next_tier_id, points_to_next, keep_points, keep_by, below_since, window_start)
             FROM wallet.tier_progress(pg_temp.id('a1'))),
          ('Gold'::text, 2, 510::bigint, NULL::bigint, NULL::bigint, 500::bigint, pg_temp.m0() + interval '12 months' + interval '30 days',
           NULL::timestamptz, pg_temp.m0() - interval '11 months'),
          'tier_progress: Gold, 510 earned since M0 - 11 months, top tier, 500 to earn before M0 + 12 months + 30 days');

-- ------------------------------------------------------------ 3. grace, straight to the qualified tier
SELECT is((SELECT (looked_at, upgraded, downgraded) FROM wallet.evaluate_tiers(pg_temp.id('p1'), pg_temp.m0() + interval '12 months' - interval '1 second')),
          (0, 0, 0), 'evaluate_tiers a second before the points leave the window: nothing due');
SELECT is((SELECT (looked_at, downgraded) FROM wallet.evaluate_tiers(pg_temp.id('p1'), pg_temp.m0() + interval '12 months' + interval '1 day')),
          (2, 0), 'a day after: both accounts looked at, none downgraded (grace)');
SELECT is((SELECT (rank, below_since, review_at) FROM wallet.account_tiers WHERE account_id = pg_temp.id('a1')),
          (2, pg_temp.m0() + interval '12 months', pg_temp.m0() + interval '12 months' + interval '30 days'),
          'below since the instant the points left the window; due at the end of the grace');
SELECT is((SELECT downgraded FROM wallet.evaluate_tiers(pg_temp.id('p1'), pg_temp.m0() + interval '12 months' + interval '30 days' - interval '1 second')),
          0, 'a second before the grace ends: kept');
SELECT is((SELECT downgraded FROM wallet.evaluate_tiers(pg_temp.id('p1'), pg_temp.m0() + interval '12 months' + interval '30 days')),
          2, 'when the grace ends: both downgraded');
SELECT is((SELECT (from_rank, to_rank, reason, changed_at, entry_id) FROM wallet.tier_history WHERE account_id = pg_temp.id('a1') ORDER BY change_id DESC LIMIT 1),
          (2, 0, 'grace_ended'::text, pg_temp.m0() + interval '12 months' + interval '30 days', NULL::bigint),
          'straight to the qualified tier (none), reason grace_ended, at as_of');
SELECT is((SELECT (rank, review_at) FROM wallet.account_tiers WHERE account_id = pg_temp.id('a1')), (0, NULL::timestamptz),
          'no tier: nothing more due');
SELECT is((wallet.member_tier(pg_temp.id('a1'), pg_temp.m0() + interval '12 months' + interval '30 days' - interval '1 microsecond')).rank, 2,
          'member_tier: Gold until the downgrade');

-- ------------------------------------------------------------ 4. grace, one level at a time
INSERT INTO v VALUES ('p2', pg_temp.program('p2', '{100,500}', grace => 10, step => 'one_level'));
INSERT INTO v VALUES ('a3', wallet.open_account(pg_temp.id('p2'), 'carol'));
SELECT lives_ok($$SELECT pg_temp.acc(pg_temp.id('a3'), 600, 'a3-1')$$, 'p2 (grace 10 days, one level): 600 earned');
SELECT is(pg_temp.rank(pg_temp.id('a3')), 2, 'Gold');
SELECT is((SELECT downgraded FROM wallet.evaluate_tiers(pg_temp.id('p2'), pg_temp.m0() + interval '12 months' + interval '10 days')),
          1, 'the grace of 10 days over: downgraded');
SELECT is((SELECT (rank, below_since, review_at) FROM wallet.account_tiers WHERE account_id = pg_temp.id('a3')),
          (1, pg_temp.m0() + interval '12 months' + interval '10 days', pg_temp.m0() + interval '12 months' + interval '20 days'),
          'one level down (Silver), still below it: a new grace starts');
SELECT is((SELECT downgraded FROM wallet.evaluate_tiers(pg_temp.id('p2'), pg_temp.m0() + interval '12 months' + interval '19 days')),
          0, 'during the second grace: kept');
SELECT is((SELECT downgraded FROM wallet.evaluate_tiers(pg_temp.id('p2'), pg_temp.m0() + interval '12 months' + interval '20 days')),
          1, 'at its end: down again');
SELECT is((SELECT array_agg(from_rank || '>' || to_rank || ' ' || reason ORDER BY change_id) FROM wallet.tier_history WHERE account_id = pg_temp.id('a3')),
          '{"0>2 upgrade","2>1 grace_ended","1>0 grace_ended"}'::text[], 'history: up to Gold, then one level at a time');

-- ------------------------------------------------------------ 5. never
INSERT INTO v VALUES ('p3', pg_temp.program('p3', '{100,500}', down => 'never'));
INSERT INTO v VALUES ('a4', wallet.open_account(pg_temp.id('p3'), 'dave'));
SELECT lives_ok($$SELECT pg_temp.acc(pg_temp.id('a4'), 600, 'a4-1')$$, 'p3 (never): 600 earned');
SELECT is((SELECT review_at FROM wallet.account_tiers WHERE account_id = pg_temp.id('a4')), NULL::timestamptz, 'nothing ever due');
SELECT is((SELECT downgraded FROM wallet.evaluate_tiers(pg_temp.id('p3'), pg_temp.m0() + interval '30 months')), 0,
          'evaluated 30 months on: nothing');
SELECT is(pg_temp.rank(pg_temp.id('a4')), 2, 'Gold for good');
SELECT is((SELECT (keep_points, keep_by) FROM wallet.tier_progress(pg_temp.id('a4'))), (0::bigint, NULL::timestamptz),
          'tier_progress: nothing to do to keep it');

-- ------------------------------------------------------------ 6. period end, calendar year
INSERT INTO v VALUES ('p4', pg_temp.program('p4', '{100,500}', w => 'calendar_year', down => 'period_end'));
INSERT INTO v VALUES ('a5', wallet.open_account(pg_temp.id('p4'), 'erin'));
SELECT lives_ok($$SELECT pg_temp.acc(pg_temp.id('a5'), 200, 'a5-1')$$, 'p4 (calendar year, period end): 200 earned');
SELECT is((SELECT (rank, review_at) FROM wallet.account_tiers WHERE account_id = pg_temp.id('a5')), (1, pg_temp.y1()),
          'Silver, reviewed at the next 1 January');
SELECT is((SELECT (keep_points, keep_by) FROM wallet.tier_progress(pg_temp.id('a5'))), (0::bigint, pg_temp.y1()),
          'tier_progress: kept at the year end, nothing more to earn (200 >= 100)');
SELECT is((SELECT (looked_at, downgraded) FROM wallet.evaluate_tiers(pg_temp.id('p4'), pg_temp.y1() + interval '1 day')), (1, 0),
          'the year that ended had 200 points: Silver kept');
SELECT is((SELECT (rank, review_at) FROM wallet.account_tiers WHERE account_id = pg_temp.id('a5')), (1, pg_temp.y1() + interval '1 year'),
          'next look at the end of the following year');
SELECT is((SELECT (keep_points, keep_by) FROM wallet.tier_progress(pg_temp.id('a5'))), (100::bigint, pg_temp.y1() + interval '1 year'),
          'tier_progress: 100 to earn in the following year to keep Silver');
SELECT is((SELECT downgraded FROM wallet.evaluate_tiers(pg_temp.id('p4'), pg_temp.y1() + interval '1 year' - interval '1 second')), 0,
          'not before that year ends');
SELECT is((SELECT downgraded FROM wallet.evaluate_tiers(pg_temp.id('p4'), pg_temp.y1() + interval '1 year' + interval '1 day')), 1,
          'the following year earned nothing: down at its end');
SELECT is((SELECT (to_rank, reason) FROM wallet.tier_history WHERE account_id = pg_temp.id('a5') ORDER BY change_id DESC LIMIT 1),
          (0, 'period_ended'::text), 'reason period_ended');

-- ------------------------------------------------------------ 7. period end, rolling 3 months
INSERT INTO v VALUES ('p5', pg_temp.program('p5', '{100}', n => 3, down => 'period_end'));
INSERT INTO v VALUES ('a6', wallet.open_account(pg_temp.id('p5'), 'frank'));
SELECT lives_ok($$SELECT pg_temp.acc(pg_temp.id('a6'), 150, 'a6-1')$$, 'p5 (rolling 3 months, period end): 150 earned');
SELECT is((SELECT review_at FROM wallet.account_tiers WHERE account_id = pg_temp.id('a6')), pg_temp.m0() + interval '3 months',
          'periods of 3 months from the month the tier was reached');
SELECT is((SELECT downgraded FROM wallet.evaluate_tiers(pg_temp.id('p5'), pg_temp.m0() + interval '3 months' + interval '1 day')), 0,
          'the period that ended (M0 .. M0+2) holds the 150: kept');
SELECT is((SELECT review_at FROM wallet.account_tiers WHERE account_id = pg_temp.id('a6')), pg_temp.m0() + interval '6 months', 'next period end');
SELECT is((SELECT downgraded FROM wallet.evaluate_tiers(pg_temp.id('p5'), pg_temp.m0() + interval '6 months')), 1,
          'the next period (M0+3 .. M0+5) earned nothing: down at its end');

-- ------------------------------------------------------------ 8. a reversal takes the account below
INSERT INTO v VALUES ('a7', wallet.open_account(pg_temp.id('p1'), 'grace'));
INSERT INTO v VALUES ('e7', pg_temp.acc(pg_temp.id('a7'), 120, 'a7-1'));
SELECT is(pg_temp.rank(pg_temp.id('a7')), 1, 'Silver on 120');
INSERT INTO v SELECT 'r7', entry_id FROM wallet.reverse(pg_temp.id('e7'), 'a7-rev', 'refund', 'unlimited');
SELECT is((SELECT (rank, below_since, review_at) FROM wallet.account_tiers WHERE account_id = pg_temp.id('a7')),
          (1, (SELECT created_at FROM wallet.entries WHERE entry_id = pg_temp.id('r7')),
           (SELECT created_at FROM wallet.entries WHERE entry_id = pg_temp.id('r7')) + interval '30 days'),
          'the reversal takes the earned points back: below since then, Silver kept for the grace');
SELECT is((SELECT (earned, keep_points, keep_by) FROM wallet.tier_progress(pg_temp.id('a7'))),
          (0::bigint, 100::bigint, (SELECT created_at FROM wallet.entries WHERE entry_id = pg_temp.id('r7')) + interval '30 days'),
          'tier_progress: 100 to earn within the grace');
SELECT lives_ok($$SELECT pg_temp.acc(pg_temp.id('a7'), 100, 'a7-2')$$, 'earning 100 again');
SELECT is((SELECT (rank, below_since) FROM wallet.account_tiers WHERE account_id = pg_temp.id('a7')), (1, NULL::timestamptz),
          'back at the threshold: no longer below');

-- ------------------------------------------------------------ 9. a spend threshold
INSERT INTO v VALUES ('p6', pg_temp.program('p6', '{}'));
UPDATE wallet.programs SET currency = 'CNY' WHERE program_id = pg_temp.id('p6');
SELECT lives_ok($$SELECT wallet.create_tier(pg_temp.id('p6'), 1, 'VIP', 100, min_spend => 1000)$$, 'a tier of 100 points and 1000 spent');
SELECT throws_ok($$SELECT wallet.create_tier(pg_temp.id('p6'), 2, repeat('x', 201), 200)$$, '22023', 'invalid tier name',
                 'a tier name of 201 characters is 22023 (names have at most 200, as programs and campaigns)');
SELECT lives_ok($$SELECT wallet.drop_tier(wallet.create_tier(pg_temp.id('p6'), 2, repeat('x', 200), 200, min_spend => 2000))$$, 'a tier name of 200 characters is accepted');
INSERT INTO v VALUES ('a8', wallet.open_account(pg_temp.id('p6'), 'heidi'));
INSERT INTO wallet.purchases (merchant_id, member_id, order_ref, amount, currency, occurred_at, program_id, account_id)
SELECT pg_temp.id('m'), member_id, 'o-1', 800, 'CNY', now(), pg_temp.id('p6'), account_id FROM wallet.accounts WHERE account_id = pg_temp.id('a8');
SELECT lives_ok($$SELECT pg_temp.acc(pg_temp.id('a8'), 150, 'a8-1')$$, '150 points on a purchase of 800');
SELECT is(pg_temp.rank(pg_temp.id('a8')), 0, 'enough points, not enough spend: no tier');
SELECT is((SELECT (spend, spend_to_next, points_to_next) FROM wallet.tier_progress(pg_temp.id('a8'))), (800::numeric, 200::numeric, 0::bigint),
          'tier_progress: 800 spent, 200 to spend, no points to earn');
INSERT INTO wallet.purchases (merchant_id, member_id, order_ref, amount, currency, occurred_at, program_id, account_id)
SELECT pg_temp.id('m'), member_id, 'o-2', 300, 'CNY', now(), pg_temp.id('p6'), account_id FROM wallet.accounts WHERE account_id = pg_temp.id('a8');
SELECT lives_ok($$SELECT pg_temp.acc(pg_temp.id('a8'), 1, 'a8-2')$$, 'the next purchase (300) posts 1 point');
SELECT is(pg_temp.rank(pg_temp.id('a8')), 1, 'spend 1100: VIP, on that posting');
SELECT is(pg_temp.tier_expected(pg_temp.id('a8')), 1, 'the from-scratch recomputation agrees');

-- ------------------------------------------------------------ 10. several months, a sweep, tier_progress by hand
INSERT INTO v VALUES ('p7', wallet.create_program(pg_temp.id('m'), 'p7'));
INSERT INTO v VALUES ('a9', wallet.open_account(pg_temp.id('p7'), 'ivan'));
-- a ledger with 60 points earned 11 months ago, 30 two months ago and 20 this month
UPDATE wallet.accounts SET ledger = format('lots={110@never} earned=110 months={%s:20,%s:30,%s:60}',
        to_char(pg_temp.m0(), 'YYYY-MM'), to_char(pg_temp.m0() - interval '2 months', 'YYYY-MM'),
        to_char(pg_temp.m0() - interval '11 months', 'YYYY-MM'))::wallet.points_ledger
 WHERE account_id = pg_temp.id('a9');
SELECT lives_ok($$SELECT wallet.create_tier(pg_temp.id('p7'), 1, 'Silver', 100)$$, 'p7: Silver 100, made after the points were earned');
SELECT lives_ok($$SELECT wallet.create_tier(pg_temp.id('p7'), 2, 'Gold', 200)$$, 'Gold 200');
SELECT is(pg_temp.rank(pg_temp.id('a9')), 0, 'no posting yet: no tier');
SELECT is((SELECT count(*) FROM wallet.tier_sweeps WHERE program_id = pg_temp.id('p7')), 1::bigint, 'a sweep is pending');
SELECT is((SELECT (looked_at, upgraded, more) FROM wallet.evaluate_tiers(pg_temp.id('p7'))), (1, 1, false),
          'evaluate_tiers sweeps the program: the missed upgrade');
SELECT is((SELECT (to_rank, reason, entry_id) FROM wallet.tier_history WHERE account_id = pg_temp.id('a9')), (1, 'upgrade'::text, NULL::bigint),
          'an upgrade without a posting');
SELECT is((SELECT count(*) FROM wallet.tier_sweeps WHERE program_id = pg_temp.id('p7')), 0::bigint, 'the sweep is done');
-- 110 earned in the window; Gold needs 90 more.  In a month the 60 of
-- 11 months ago leave the window: 50 left, below 100, from M0 + 1 month;
-- the grace (30 days) ends 30 days later, when the 30 and 20 still count:
-- 50 more are needed by then.
SELECT is((SELECT (earned, next_tier_name, points_to_next, keep_points, keep_by) FROM wallet.tier_progress(pg_temp.id('a9'))),
          (110::bigint, 'Gold'::text, 90::bigint, 50::bigint, pg_temp.m0() + interval '1 month' + interval '30 days'),
          'tier_progress: 110 earned, 90 to Gold, 50 to earn before M0 + 1 month + 30 days to keep Silver');
SELECT is((SELECT review_at FROM wallet.account_tiers WHERE account_id = pg_temp.id('a9')), pg_temp.m0() + interval '1 month',
          'review_at: when it falls below');
SELECT is(wallet_internal.tier_earned(ledger, 'rolling', 12, pg_temp.m0() + interval '1 month' - interval '1 microsecond'), 110::bigint,
          'window boundary: the last instant of this month still counts the 60')
  FROM wallet.accounts WHERE account_id = pg_temp.id('a9');
SELECT is(wallet_internal.tier_earned(ledger, 'rolling', 12, pg_temp.m0() + interval '1 month'), 50::bigint,
          'window boundary: the first instant of next month does not')
  FROM wallet.accounts WHERE account_id = pg_temp.id('a9');

-- ------------------------------------------------------------ 11. the window arithmetic at its boundaries (fixed instants)
CREATE TEMP TABLE l AS SELECT 'lots={100@never} earned=100 months={2025-01:60,2025-12:40}'::wallet.points_ledger AS l;
SELECT is((SELECT wallet_internal.tier_earned(l, 'rolling', 12, '2025-12-31 23:59:59.999999+00') FROM l), 100::bigint,
          'rolling 12 months at the last instant of 2025-12: 2025-01 .. 2025-12');
SELECT is((SELECT wallet_internal.tier_earned(l, 'rolling', 12, '2026-01-01 00:00:00+00') FROM l), 40::bigint,
          'rolling 12 months at 2026-01-01: 2025-02 .. 2026-01');
SELECT is((SELECT wallet_internal.tier_earned(l, 'rolling', 1, '2025-12-01 00:00:00+00') FROM l), 40::bigint,
          'rolling 1 month: this month only');
SELECT is((SELECT wallet_internal.tier_earned(l, 'calendar_year', 12, '2025-12-31 23:59:59.999999+00') FROM l), 100::bigint,
          'calendar year at its last instant: the whole of 2025');
SELECT is((SELECT wallet_internal.tier_earned(l, 'calendar_year', 12, '2026-01-01 00:00:00+00') FROM l), 0::bigint,
          'calendar year at 2026-01-01: nothing yet');
SELECT is((SELECT wallet_internal.tier_earned(l, 'calendar_year', 12, '2025-06-30 00:00:00+00') FROM l), 60::bigint,
          'calendar year in June: January to June');
SELECT is(wallet_internal.tier_window_start('rolling', 12, '2025-12-31 23:59:59+00'), '2025-01-01 00:00:00+00'::timestamptz, 'window start, rolling');
SELECT is(wallet_internal.tier_window_start('calendar_year', 12, '2025-12-31 23:59:59+00'), '2025-01-01 00:00:00+00'::timestamptz, 'window start, calendar year');
SELECT is((SELECT wallet_internal.tier_falls_below(l, 'rolling', 12, '2025-12-15 00:00:00+00', 100) FROM l), '2026-01-01 00:00:00+00'::timestamptz,
          'falls below 100 when 2025-01 leaves the window');
SELECT is((SELECT wallet_internal.tier_falls_below(l, 'rolling', 12, '2025-12-15 00:00:00+00', 40) FROM l), '2026-12-01 00:00:00+00'::timestamptz,
          'falls below 40 when 2025-12 leaves it');
SELECT is((SELECT wallet_internal.tier_falls_below(l, 'rolling', 12, '2025-12-15 00:00:00+00', 101) FROM l), '2025-12-15 00:00:00+00'::timestamptz,
          'already below: as_of');
SELECT is((SELECT wallet_internal.tier_falls_below(l, 'calendar_year', 12, '2025-03-15 00:00:00+00', 10) FROM l), '2026-01-01 00:00:00+00'::timestamptz,
          'calendar year: the next 1 January');
SELECT is((SELECT wallet_internal.tier_falls_below(l, 'rolling', 12, '2025-12-15 00:00:00+00', 0) FROM l), NULL::timestamptz,
          'a threshold of 0 is never missed');
SELECT is(wallet_internal.tier_period_end('rolling', 12, '2025-03-10 00:00:00+00', '2026-02-28 23:59:59+00'), '2026-03-01 00:00:00+00'::timestamptz,
          'period end: 12 months from the month reached');
SELECT is(wallet_internal.tier_period_end('rolling', 12, '2025-03-10 00:00:00+00', '2026-03-01 00:00:00+00'), '2027-03-01 00:00:00+00'::timestamptz,
          'at a period end the next period begins');
SELECT is(wallet_internal.tier_period_end('calendar_year', 12, '2025-03-10 00:00:00+00', '2025-12-31 23:59:59+00'), '2026-01-01 00:00:00+00'::timestamptz,
          'period end, calendar year');

-- ------------------------------------------------------------ 12. administration
SELECT throws_ok($$SELECT wallet.update_tier((SELECT tier_id FROM wallet.tiers WHERE program_id = pg_temp.id('p7') AND rank = 1), min_points => 300)$$,
                 'WL542', NULL, 'update_tier: Silver above Gold refused');
SELECT throws_ok($$SELECT wallet.create_tier(pg_temp.id('p7'), 3, 'Platinum', 200)$$, 'WL542', NULL,
                 'create_tier: the same points as Gold and no more spend refused');
SELECT lives_ok($$SELECT wallet.create_tier(pg_temp.id('p7'), 3, 'Platinum', 200, min_spend => 5000)$$,
                'the same points and more spend is a higher tier');
SELECT throws_ok($$SELECT wallet.drop_tier((SELECT tier_id FROM wallet.tiers WHERE program_id = pg_temp.id('p7') AND rank = 1))$$,
                 'WL543', NULL, 'drop_tier of a tier held: refused');
SELECT ok(wallet.drop_tier((SELECT tier_id FROM wallet.tiers WHERE program_id = pg_temp.id('p7') AND rank = 3)), 'drop_tier of a tier never held');
SELECT is((SELECT (min_points, name) FROM wallet.update_tier((SELECT tier_id FROM wallet.tiers WHERE program_id = pg_temp.id('p7') AND rank = 1),
                                                             min_points => 150)), (150::bigint, 'Silver'::text),
          'update_tier: Silver now needs 150');
SELECT is((SELECT looked_at FROM wallet.evaluate_tiers(pg_temp.id('p7'))), 1, 'the change is swept');
SELECT is((SELECT (rank, below_since, review_at) FROM wallet.account_tiers WHERE account_id = pg_temp.id('a9')),
          (1, now(), now() + interval '30 days'), 'the holder is now below: its grace starts');
SELECT is((SELECT (tier_window, tier_window_months, tier_downgrade, tier_grace_days, tier_downgrade_step)
             FROM wallet.set_tier_policy(pg_temp.id('p7'), tier_grace_days => 5)),
          ('rolling'::text, 12, 'grace'::text, 5, 'qualified'::text), 'set_tier_policy: NULL keeps, the grace becomes 5 days');
SELECT lives_ok($$SELECT wallet.evaluate_tiers(pg_temp.id('p7'))$$, 'swept');
SELECT is((SELECT review_at FROM wallet.account_tiers WHERE account_id = pg_temp.id('a9')), now() + interval '5 days', 'the new grace applies');

-- ------------------------------------------------------------ 13. bounded batches
INSERT INTO v VALUES ('p8', pg_temp.program('p8', '{10}'));
SELECT lives_ok($$SELECT pg_temp.acc(wallet.open_account(pg_temp.id('p8'), 'b' || i), 10, 'b' || i) FROM generate_series(1, 5) i$$,
                'five members reach the tier');
SELECT is((SELECT (looked_at, downgraded, more) FROM wallet.evaluate_tiers(pg_temp.id('p8'), pg_temp.m0() + interval '3 years', 2)), (2, 2, true),
          'max_accounts 2: two looked at, more to do');
SELECT is((SELECT (looked_at, downgraded, more) FROM wallet.evaluate_tiers(pg_temp.id('p8'), pg_temp.m0() + interval '3 years', 2)), (2, 2, true),
          'then two more');
SELECT is((SELECT (looked_at, downgraded, more) FROM wallet.evaluate_tiers(pg_temp.id('p8'), pg_temp.m0() + interval '3 years', 2)), (1, 1, false),
          'then the last');

-- ------------------------------------------------------------ 11. a sweep, set-based, equals the review of each account
-- A sweep (no spend threshold) upgrades and re-dates accounts set-based; the
-- state it leaves (tiers, history, events) must be what the review of each
-- account, one by one in account order, leaves.  Each policy; the tiers are
-- made after the points were earned (missed upgrades), then Silver is raised
-- (holders below it, holders whose review date moves).
CREATE FUNCTION pg_temp.tier_state(p bigint) RETURNS text LANGUAGE sql AS $$
    SELECT concat_ws(' / ',
        (SELECT string_agg(concat_ws(',', t.account_id, t.tier_id, t.rank, t.since, t.below_since, t.review_at), ';' ORDER BY t.account_id)
           FROM wallet.account_tiers t WHERE t.program_id = p),
        (SELECT string_agg(concat_ws(',', h.account_id, h.from_tier, h.to_tier, h.from_rank, h.to_rank, h.reason, h.changed_at, h.entry_id),
                           ';' ORDER BY h.account_id, h.change_id)
           FROM wallet.tier_history h WHERE h.program_id = p),
        (SELECT string_agg(concat_ws(',', e.member_id, e.occurred_at, e.attributes), ';' ORDER BY e.member_id, e.event_id)
           FROM wallet.member_events e WHERE e.kind = 'tier_changed' AND (e.attributes ->> 'program_id')::bigint = p)) $$;
CREATE FUNCTION pg_temp.review_each(p bigint, as_of timestamptz) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    a bigint;
    r text;
    up int := 0;
    down int := 0;
BEGIN
    FOR a IN SELECT x.account_id FROM wallet.accounts x WHERE x.program_id = p ORDER BY x.account_id LOOP
        r := wallet_internal.tier_review(a, as_of);
        up := up + (r IS NOT DISTINCT FROM 'upgraded')::int;
        down := down + (r IS NOT DISTINCT FROM 'downgraded')::int;
    END LOOP;
    DELETE FROM wallet.tier_sweeps s WHERE s.program_id = p;
    RETURN up || ' up ' || down || ' down: ' || pg_temp.tier_state(p);
END
$$;
CREATE FUNCTION pg_temp.sweep(p bigint, as_of timestamptz) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    r record;
    up int := 0;
    down int := 0;
BEGIN
    LOOP
        r := wallet.evaluate_tiers(p, as_of, 3);   -- batches of 3: holders and candidates across batch bounds
        up := up + r.upgraded;
        down := down + r.downgraded;
        EXIT WHEN NOT r.more;
    END LOOP;
    RETURN up || ' up ' || down || ' down: ' || pg_temp.tier_state(p);
END
$$;
CREATE FUNCTION pg_temp.sweep_program(name text, down text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    p bigint := wallet.create_program(pg_temp.id('m'), name);
    pts int;
    cur int;
    acct bigint;
    i int := 0;
BEGIN
    PERFORM wallet.set_tier_policy(p, 'rolling', 12, down, 30, 'qualified');
    -- earned this month (cur) and 11 months ago (pts + 1: leaves the window next month)
    FOREACH pts IN ARRAY '{0,50,100,120,150,250,400,700}'::int[] LOOP
        i := i + 1;
        cur := CASE WHEN i % 2 = 0 THEN pts / 2 + 1 ELSE 1 END;
        acct := wallet.open_account(p, name || '-' || i);
        UPDATE wallet.accounts x
           SET ledger = format('lots={%s@never} earned=%s months={%s:%s,%s:%s}', cur + pts + 1, cur + pts + 1,
                               to_char(pg_temp.m0(), 'YYYY-MM'), cur,
                               to_char(pg_temp.m0() - interval '11 months', 'YYYY-MM'), pts + 1)::wallet.points_ledger
         WHERE x.account_id = acct;
    END LOOP;
    PERFORM wallet.create_tier(p, 1, 'Silver', 100);
    PERFORM wallet.create_tier(p, 2, 'Gold', 300);
    RETURN p;
END
$$;
SELECT pg_temp.sweep_program('sweep grace', 'grace') AS sp1, pg_temp.sweep_program('sweep period', 'period_end') AS sp2,
       pg_temp.sweep_program('sweep never', 'never') AS sp3 \gset
SAVEPOINT sweep;
SELECT pg_temp.sweep(:sp1, now()) AS set1, pg_temp.sweep(:sp2, now()) AS set2, pg_temp.sweep(:sp3, now()) AS set3 \gset
ROLLBACK TO SAVEPOINT sweep;
SELECT is(pg_temp.review_each(:sp1, now()), :'set1', 'sweep after new tiers (grace): set-based = the review of each account');
SELECT is(pg_temp.review_each(:sp2, now()), :'set2', 'sweep after new tiers (period_end): the same');
SELECT is(pg_temp.review_each(:sp3, now()), :'set3', 'sweep after new tiers (never): the same');
SELECT is(split_part(:'set1', ':', 1), '6 up 0 down', 'six accounts moved up (3 to Silver, 3 to Gold)');
-- Silver raised to 200: holders of Silver below it, Gold holders re-dated; a month on
SELECT count(wallet.update_tier(t.tier_id, min_points => 200)) AS raised FROM wallet.tiers t
 WHERE t.program_id IN (:sp1, :sp2, :sp3) AND t.rank = 1 \gset
SAVEPOINT sweep2;
SELECT pg_temp.sweep(:sp1, pg_temp.m0() + interval '1 month 3 days') AS set1, pg_temp.sweep(:sp2, pg_temp.m0() + interval '1 month 3 days') AS set2,
       pg_temp.sweep(:sp3, pg_temp.m0() + interval '1 month 3 days') AS set3 \gset
ROLLBACK TO SAVEPOINT sweep2;
SELECT is(pg_temp.review_each(:sp1, pg_temp.m0() + interval '1 month 3 days'), :'set1', 'sweep after a raised threshold (grace): the same');
SELECT is(pg_temp.review_each(:sp2, pg_temp.m0() + interval '1 month 3 days'), :'set2', 'sweep after a raised threshold (period_end): the same');
SELECT is(pg_temp.review_each(:sp3, pg_temp.m0() + interval '1 month 3 days'), :'set3', 'sweep after a raised threshold (never): the same');

-- ------------------------------------------------------------ 12. a sweep upgrades an account whose tier row says "no tier"
-- An account that lost its tier keeps its account_tiers row (rank 0); a
-- later sweep that finds it qualifying again rewrites that row (not a new
-- one): the same state as the review of each account, and still one row.
INSERT INTO v VALUES ('p12', pg_temp.program('p12', '{100}'));
INSERT INTO v VALUES ('a12', wallet.open_account(pg_temp.id('p12'), 'again'));
SELECT pg_temp.acc(pg_temp.id('a12'), 150, 'a12-1') IS NOT NULL AS posted \gset
SELECT is(pg_temp.rank(pg_temp.id('a12')), 1, '150 points: Silver');
SELECT count(wallet.update_tier(t.tier_id, min_points => 200)) AS raised FROM wallet.tiers t WHERE t.program_id = pg_temp.id('p12') \gset
SELECT is((SELECT (looked_at, downgraded) FROM wallet.evaluate_tiers(pg_temp.id('p12'))), (1, 0),
          'Silver raised to 200: the sweep finds the holder below it (grace starts)');
SELECT is((SELECT downgraded FROM wallet.evaluate_tiers(pg_temp.id('p12'), now() + interval '31 days')), 1,
          'grace over: no tier');
SELECT is((SELECT (rank, tier_id) FROM wallet.account_tiers WHERE account_id = pg_temp.id('a12')), (0, NULL::bigint),
          'the tier row stays, at rank 0');
SELECT count(wallet.update_tier(t.tier_id, min_points => 100)) AS lowered FROM wallet.tiers t WHERE t.program_id = pg_temp.id('p12') \gset
SAVEPOINT sweep3;
SELECT pg_temp.review_each(pg_temp.id('p12'), now() + interval '32 days') AS each12 \gset
ROLLBACK TO SAVEPOINT sweep3;
SELECT pg_temp.sweep(pg_temp.id('p12'), now() + interval '32 days') AS set12 \gset
SELECT is(:'set12'::text, :'each12', 'Silver back at 100: the sweep upgrades it as the review of the account does');
SELECT is(split_part(:'set12', ':', 1), '1 up 0 down', 'one account moved up');
SELECT is((SELECT (count(*), min(rank)) FROM wallet.account_tiers WHERE account_id = pg_temp.id('a12')), (1::bigint, 1),
          'after the sweep: one tier row, Silver');

-- ------------------------------------------------------------ 13. arguments out of their domain
-- a NaN or huge multiplier would make every purchase of the tier's members
-- fail (no points are NaN); numeric NaN compares above every number
INSERT INTO v VALUES ('p13', pg_temp.program('p13', '{100}'));
SELECT wallet.set_program_earning(pg_temp.id('p13'), 'SEK') IS NULL AS x \gset
SELECT wallet.create_earning_rule(pg_temp.id('p13'), 'sek base', 'per_unit', 1, valid_from => '2020-01-01') IS NULL AS x \gset
INSERT INTO v VALUES ('a13', wallet.open_account(pg_temp.id('p13'), 'nina'));
INSERT INTO v VALUES ('e13', pg_temp.acc(pg_temp.id('a13'), 100, 'a13-1'));
INSERT INTO v SELECT 't13', tier_id FROM wallet.tiers WHERE program_id = pg_temp.id('p13') AND rank = 1;
SELECT throws_ok($$SELECT wallet.update_tier(pg_temp.id('t13'), multiplier => 'NaN')$$, '22023', 'invalid tier',
                 'update_tier: a NaN multiplier is 22023');
SELECT throws_ok($$SELECT wallet.update_tier(pg_temp.id('t13'), multiplier => 1e30)$$, '22023', 'invalid tier',
                 'update_tier: a multiplier of 10^30 is 22023 (at most 100)');
SELECT throws_ok($$SELECT wallet.update_tier(pg_temp.id('t13'), multiplier => 'Infinity')$$, '22023', 'invalid tier',
                 'update_tier: an infinite multiplier is 22023');
SELECT throws_ok($$SELECT wallet.update_tier(pg_temp.id('t13'), min_spend => 'NaN')$$, '22023', 'invalid tier',
                 'update_tier: a NaN min_spend is 22023');
SELECT throws_ok($$SELECT wallet.create_tier(pg_temp.id('p13'), 2, 'NaN gold', 200, multiplier => 'NaN')$$, '22023', 'invalid tier',
                 'create_tier: a NaN multiplier is 22023');
SELECT throws_ok($$SELECT wallet.create_tier(pg_temp.id('p13'), 2, 'NaN gold', 200, min_spend => 'NaN')$$, '22023', 'invalid tier',
                 'create_tier: a NaN min_spend is 22023');
SELECT throws_ok($$SELECT wallet.create_tier(pg_temp.id('p13'), 2, 'Inf gold', 200, min_spend => 'Infinity')$$, '22023', 'invalid tier',
                 'create_tier: an infinite min_spend is 22023');
SELECT is((SELECT (multiplier, min_spend) FROM wallet.update_tier(pg_temp.id('t13'), multiplier => 100)), (100::numeric, NULL::numeric),
          'update_tier: a multiplier of 100, the bound, is taken');
-- nina holds the tier: her purchases still earn, fast path and preview alike
SELECT is(pg_temp.rank(pg_temp.id('a13')), 1, 'nina holds the tier with the refused updates');
SELECT is((SELECT points FROM wallet.record_purchase(pg_temp.id('m'), 'nina', 'sek-1', 10, 'SEK')), 1000::bigint,
          'record_purchase after the refused updates: 10 base + 990 of the tier''s x100');
SELECT is((SELECT points FROM wallet.preview_purchase(pg_temp.id('m'), 'nina', 'sek-2', 10, 'SEK')), 1000::bigint,
          'preview_purchase after the refused updates: 1000');
-- as_of is a real instant
SELECT throws_ok($$SELECT wallet.evaluate_tiers(pg_temp.id('p13'), 'infinity')$$, '22023', 'as_of must be finite',
                 'evaluate_tiers as of infinity: 22023');
SELECT throws_ok($$SELECT wallet.member_tier(pg_temp.id('a13'), '-infinity')$$, '22023', 'as_of must be finite',
                 'member_tier as of -infinity: 22023');
SELECT throws_ok($$CALL wallet.evaluate_tiers_batched(pg_temp.id('p13'), 'infinity')$$, '22023', 'as_of must be finite',
                 'evaluate_tiers_batched as of infinity: 22023');

-- a simulation does not use up the sweep after a change of tiers
SELECT wallet.create_program(wallet.create_merchant('tiers simulation'), 'sim points', interval '1 year') AS psim \gset
SELECT wallet.accrue(wallet.open_account(:psim, 'w1'), 100, 'sim-k1', 'welcome') AS sim_entry \gset
SELECT wallet.create_tier(:psim, 1, 'Top', 50);
SELECT is((SELECT upgraded || ' ' || more FROM wallet.evaluate_tiers(:psim, now() + interval '2 years')), '0 false',
          'evaluate_tiers two years ahead: w1''s points have left the window, no upgrade, nothing more to do for the simulation');
SELECT is((SELECT after_account FROM wallet.tier_sweeps WHERE program_id = :psim), 0::bigint,
          'the sweep after the new tier is still to be done, from the first account');
SELECT is((SELECT upgraded || ' ' || more FROM wallet.evaluate_tiers(:psim)), '1 false',
          'evaluate_tiers now: the sweep was left for it, and w1 is upgraded');
SELECT is((SELECT name FROM wallet.member_tier((SELECT a FROM wallet.find_account(:psim, 'w1') a))), 'Top', 'w1 holds Top');
SELECT throws_ok(format('SELECT wallet.set_tier_policy(%s, tier_grace_days => 2147483647)', :psim), '22023', 'invalid tier policy',
                 'set_tier_policy: a grace of over 100 years is 22023 (no later call raises 22008)');

-- a refund reviews the tier as a reversal does: an order that bought Gold,
-- refunded in full, loses it (grace 0) like the same order reversed
SELECT wallet.create_merchant('tier refund merchant') AS mrf \gset
SELECT wallet.create_program(:mrf, 'tier refund points') AS prf \gset
SELECT wallet.set_program_earning(:prf, 'EUR', refund_debt => true) \g /dev/null
SELECT wallet.create_earning_rule(:prf, 'base', 'per_unit', 1, valid_from => '2020-01-01') \g /dev/null
SELECT wallet.create_tier(:prf, 1, 'Gold', 1000) \g /dev/null
SELECT wallet.set_tier_policy(:prf, tier_grace_days => 0) \g /dev/null
SELECT count(*) FROM wallet.evaluate_tiers(:prf) \g /dev/null
SELECT account_id AS arf FROM wallet.record_purchase(:mrf, 'refunder', 'rf-1', 1000, 'EUR') \gset
SELECT account_id AS brf, entry_id AS erf FROM wallet.record_purchase(:mrf, 'reverser', 'rv-1', 1000, 'EUR') \gset
SELECT is((SELECT string_agg((wallet.member_tier(x, clock_timestamp())).name, ',') FROM unnest(ARRAY[:arf, :brf]::bigint[]) x), 'Gold,Gold',
          'fixture: both orders bought Gold');
SELECT wallet.record_refund(:mrf, 'rf-1', 1000, 'rf-1-back') \g /dev/null
SELECT wallet.reverse(:erf, 'rv-1-back', 'chargeback') \g /dev/null
SELECT count(*) FROM wallet.evaluate_tiers(:prf) \g /dev/null
SELECT is((SELECT coalesce((wallet.member_tier(:arf, clock_timestamp())).name, 'none') || ',' || coalesce((wallet.member_tier(:brf, clock_timestamp())).name, 'none')), 'none,none',
          'a full refund of the order loses the tier it bought, as its reversal does');

SELECT * FROM finish();
ROLLBACK;

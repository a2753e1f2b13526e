-- pgTAP: campaign budgets (issue 11), one session: setting, growing and
-- shrinking, takes all or nothing and partial, holds converted, released and
-- expired (counting at once, then not, without any cleanup job), giving
-- back, and the tidy-up of run_maintenance.  Races are
-- in test/concurrency/budget_race.t, the order of two sessions in
-- specs/budget_hold_expiry.spec.
--
-- Every status is checked against an independent sum over the tables:
-- granted = total - slices - active holds.
BEGIN;
SET LOCAL timezone = 'UTC';
SELECT plan(45);

SELECT wallet.create_merchant('tap budgets') AS m \gset
SELECT wallet.create_campaign(:m, 'festival') AS c \gset
SELECT wallet.create_campaign(:m, 'no budget') AS c_none \gset

CREATE FUNCTION pg_temp.st(c bigint) RETURNS text LANGUAGE sql AS $$
    SELECT format('%s/%s/%s/%s', total, granted, held, remaining) FROM wallet.campaign_budget(c)
$$;
-- granted worked out from the tables, not by the extension's status
CREATE FUNCTION pg_temp.granted_by_tables(c bigint) RETURNS bigint LANGUAGE sql AS $$
    SELECT b.total - (SELECT sum(s.remaining) FROM wallet.budget_slices s WHERE s.campaign_id = c)
                   - (SELECT coalesce(sum(h.units), 0) FROM wallet.budget_holds h WHERE h.campaign_id = c AND h.state = 'active')
      FROM wallet.campaign_budgets b WHERE b.campaign_id = c
$$;

-- ---------------------------------------------------------------- setting
SELECT is((SELECT format('%s %s %s/%s/%s/%s', unit, slices, total, granted, held, remaining)
             FROM wallet.set_campaign_budget(:c, 'money', 1000, 4)),
          'money 4 1000/0/0/1000', 'a new budget: 1,000 in 4 slices, all remaining');
SELECT is((SELECT array_agg(remaining ORDER BY slice) FROM wallet.budget_slices WHERE campaign_id = :c),
          '{250,250,250,250}'::bigint[], 'split evenly over the slices');
SELECT throws_ok(format($$SELECT wallet.set_campaign_budget(%s, 'points', 1000)$$, :c), 'WL605', NULL,
                 'the unit is fixed: WL605');
SELECT throws_ok(format($$SELECT wallet.set_campaign_budget(%s, 'money', 1000, 8)$$, :c), 'WL605', NULL,
                 'the number of slices is fixed: WL605');
SELECT throws_ok(format('SELECT wallet.campaign_budget(%s)', :c_none), 'WL601', NULL,
                 'a campaign without a budget: WL601');
SELECT throws_ok(format('SELECT wallet_internal.budget_take(%s, 1)', :c_none), 'WL601', NULL,
                 'taking from a campaign without a budget: WL601');
SELECT throws_ok(format('SELECT wallet_internal.budget_take(%s, 0)', :c), '22023', NULL, 'a take of 0 units: 22023');
SELECT throws_ok(format('SELECT wallet_internal.budget_take(%s, NULL)', :c), '22004', NULL, 'a take of NULL units: 22004');

-- ---------------------------------------------------------------- takes
SELECT is(wallet_internal.budget_take(:c, 100), 100::bigint, 'a take within a slice gets its units');
SELECT is(wallet_internal.budget_take(:c, 600), 600::bigint, 'a take larger than any slice gathers from several');
SELECT is(pg_temp.st(:c), '1000/700/0/300', 'status: 700 granted, 300 remaining');
SELECT is(pg_temp.granted_by_tables(:c), 700::bigint, 'the tables agree: 700 granted');
SELECT is(wallet_internal.budget_take(:c, 301), 0::bigint, 'all or nothing: 301 of 300 is refused with 0, not an error');
SELECT is(pg_temp.st(:c), '1000/700/0/300', 'a refused take changes nothing');
SELECT is(wallet_internal.budget_take(:c, 301, true), 300::bigint, 'partial allowed: the 300 left');
SELECT is(wallet_internal.budget_take(:c, 1, true), 0::bigint, 'partial allowed from an empty budget: 0');
SELECT is(pg_temp.st(:c), '1000/1000/0/0', 'the budget is spent, not by one unit more');

-- ---------------------------------------------------------------- growing and shrinking
SELECT is((SELECT format('%s/%s/%s/%s', total, granted, held, remaining) FROM wallet.set_campaign_budget(:c, 'money', 1500)),
          '1500/1000/0/500', 'growing adds the difference at once');
SELECT throws_ok(format($$SELECT wallet.set_campaign_budget(%s, 'money', 999)$$, :c), 'WL602',
                 format('budget of campaign %s cannot shrink to 999', :c), 'shrinking below what was granted: WL602');
SELECT is((SELECT format('%s/%s/%s/%s', total, granted, held, remaining) FROM wallet.set_campaign_budget(:c, 'money', 1200)),
          '1200/1000/0/200', 'shrinking takes from what is left');
SELECT is((SELECT sum(remaining) FROM wallet.budget_slices WHERE campaign_id = :c), 200::numeric, 'the slices hold the 200 left');
SELECT ok((SELECT bool_and(remaining >= 0) FROM wallet.budget_slices WHERE campaign_id = :c), 'no slice is negative');

-- ---------------------------------------------------------------- holds
SELECT hold_id AS h1, held AS h1_units FROM wallet_internal.budget_hold(:c, 50, interval '1 hour') \gset
SELECT is(:h1_units::bigint, 50::bigint, 'a hold of 50');
SELECT is(pg_temp.st(:c), '1200/1000/50/150', 'it counts at once: 50 held, 150 remaining');
SELECT is(wallet_internal.budget_convert(:h1), 50::bigint, 'converting it grants its 50');
SELECT is(pg_temp.st(:c), '1200/1050/0/150', 'granted 1,050, nothing held');
SELECT is(wallet_internal.budget_convert(:h1), 50::bigint, 'converting again returns the same units, granting nothing more');
SELECT is(pg_temp.st(:c), '1200/1050/0/150', 'still 1,050 granted');
SELECT throws_ok(format('SELECT wallet_internal.budget_release(%s)', :h1), 'WL604', NULL, 'releasing a converted hold: WL604');

SELECT hold_id AS h2 FROM wallet_internal.budget_hold(:c, 40, interval '1 hour') \gset
SELECT is(wallet_internal.budget_release(:h2), 40::bigint, 'releasing a hold returns its 40');
SELECT is(pg_temp.st(:c), '1200/1050/0/150', 'back to 150 remaining');
SELECT is(wallet_internal.budget_release(:h2), 0::bigint, 'releasing it again is harmless: 0');
SELECT throws_ok(format('SELECT wallet_internal.budget_convert(%s)', :h2), 'WL604', NULL, 'converting a released hold: WL604');
SELECT throws_ok('SELECT wallet_internal.budget_convert(-1)', 'WL603', NULL, 'an unknown hold: WL603');

SELECT is((SELECT format('%s %s', h.held, (h.hold_id IS NULL)::text::char) FROM wallet_internal.budget_hold(:c, 151, interval '1 hour') h),
          '0 t', 'a hold the budget cannot cover: no hold, 0 units');
SELECT is((SELECT h.held FROM wallet_internal.budget_hold(:c, 151, interval '1 hour', true) h), 150::bigint,
          'with partial allowed: the 150 left');
SELECT is(pg_temp.st(:c), '1200/1050/150/0', 'held 150, nothing remaining');

-- an expiring hold: counts, then not, without any cleanup job
SELECT wallet_internal.budget_release(hold_id) FROM wallet.budget_holds WHERE campaign_id = :c AND state = 'active' \g /dev/null
SELECT hold_id AS h3 FROM wallet_internal.budget_hold(:c, 150, interval '200 milliseconds') \gset
SELECT is(wallet_internal.budget_take(:c, 150), 0::bigint, 'while the hold lives, its units are not taken');
SELECT pg_sleep(0.3);
SELECT is(pg_temp.st(:c), '1200/1050/0/150', 'once it expired, it counts as remaining');
SELECT is(wallet_internal.budget_take(:c, 150), 150::bigint, 'and a take gets its units back (no cleanup job ran)');
SELECT is((SELECT state FROM wallet.budget_holds WHERE hold_id = :h3), 'expired', 'the hold is marked expired');
SELECT is(wallet_internal.budget_convert(:h3), 0::bigint, 'converting it late: taken afresh, nothing left, 0');

-- giving back, and the tidy-up of run_maintenance
SELECT wallet_internal.budget_give_back(:c, 30);
SELECT is(pg_temp.st(:c), '1200/1170/0/30', 'units given back (a refund) are remaining again');
SELECT hold_id AS h4 FROM wallet_internal.budget_hold(:c, 30, interval '100 milliseconds') \gset
SELECT pg_sleep(0.2);
SELECT is(wallet.reclaim_budget_holds(1000), 1::bigint, 'reclaim_budget_holds returns the one expired hold');
SELECT is(format('%s %s', (SELECT state FROM wallet.budget_holds WHERE hold_id = :h4), pg_temp.st(:c)),
          'expired 1200/1170/0/30', 'its units are in the slices again');

SELECT * FROM finish();
ROLLBACK;

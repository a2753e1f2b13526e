-- The tier an account should hold, computed from scratch from the journal
-- (wallet.entries) and the purchases, without the ledger's monthly buckets or
-- anything the tier code wrote: for tests (test/tap/75_tiers.sql, and the
-- purchases race test: \ir or \i this file, then compare
-- pg_temp.tier_expected(account_id) with wallet.account_tiers).
--
-- The journal is replayed in entry order.  After each entry: the points
-- earned in the window at that entry's instant (accruals of the window's UTC
-- months, less what reversals took back from the accruals of those months:
-- the negated amount of a reverse entry whose reversed entry is an accrual),
-- and the spend (purchases whose accrual entry is at or before it, less the
-- refunds whose entry is), give the tier qualified then.  Upgrades are
-- immediate and no downgrade is due while a test runs (no as_of moved past a
-- grace period), so the tier held is the highest qualified at any entry.
-- Purchases that posted no entry (0 points) have no place in the journal's
-- order and count from the start.
CREATE FUNCTION pg_temp.tier_expected(account_id bigint) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    p record;
    e record;
    best int := 0;
    earned bigint;
    spend numeric;
    q int;
    lo timestamptz;
BEGIN
    SELECT x.* INTO p FROM wallet.programs x JOIN wallet.accounts a ON a.program_id = x.program_id
     WHERE a.account_id = tier_expected.account_id;
    FOR e IN SELECT x.entry_id, x.created_at FROM wallet.entries x
              WHERE x.account_id = tier_expected.account_id AND x.kind IN ('accrue', 'reverse')
              ORDER BY x.entry_id LOOP
        -- the window: whole UTC months ending with the entry's month
        lo := CASE p.tier_window
                WHEN 'calendar_year' THEN date_trunc('year', e.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                ELSE (date_trunc('month', e.created_at AT TIME ZONE 'UTC') - make_interval(months => p.tier_window_months - 1)) AT TIME ZONE 'UTC' END;
        SELECT coalesce(sum(CASE WHEN x.kind = 'accrue' THEN x.points ELSE -x.amount END), 0) INTO earned
          FROM wallet.entries x LEFT JOIN wallet.entries o ON o.entry_id = x.reverses
         WHERE x.account_id = tier_expected.account_id AND x.entry_id <= e.entry_id
           AND (x.kind = 'accrue' AND x.created_at >= lo OR x.kind = 'reverse' AND o.kind = 'accrue' AND o.created_at >= lo);
        SELECT coalesce(sum(u.amount), 0)
               - coalesce((SELECT sum(r.amount) FROM wallet.refunds r JOIN wallet.purchases v ON v.purchase_id = r.purchase_id
                            WHERE v.account_id = tier_expected.account_id AND v.occurred_at >= lo
                              AND (r.entry_id IS NULL OR r.entry_id <= e.entry_id)), 0)
          INTO spend
          FROM wallet.purchases u
         WHERE u.account_id = tier_expected.account_id AND u.occurred_at >= lo AND u.occurred_at <= e.created_at
           AND (u.entry_id IS NULL OR u.entry_id <= e.entry_id);
        SELECT coalesce(max(t.rank), 0) INTO q FROM wallet.tiers t
         WHERE t.program_id = p.program_id AND t.min_points <= earned AND (t.min_spend IS NULL OR t.min_spend <= spend);
        best := greatest(best, q);
    END LOOP;
    RETURN best;
END
$$;


-- ======================================================================
-- Tiers (issue 10): VIP levels won by points earned in a window, kept or
-- lost per program policy.  Tables in loyalty.sql (wallet.tiers,
-- account_tiers, tier_history, member_events, the tier_* program columns);
-- the window arithmetic on the ledger's monthly buckets in src/tiers.c.
--
-- Upgrades are immediate: wallet_internal.post_entry reviews the account's
-- tier after every accrual (and reversal) of a tiered program, under the
-- account's row lock.  Downgrades are due at account_tiers.review_at and
-- made by wallet.evaluate_tiers (run_maintenance).  README "Tiers".
-- ======================================================================

-- ---------------------------------------------------------------- window arithmetic (C, O(24))

CREATE FUNCTION wallet_internal.tier_earned(l wallet.points_ledger, tier_window text, window_months int, as_of timestamptz)
    RETURNS bigint
    LANGUAGE C IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'tier_earned';
COMMENT ON FUNCTION wallet_internal.tier_earned(wallet.points_ledger, text, int, timestamptz) IS 'internal: points earned in the qualification window at as_of (whole UTC months: the last window_months, or January on for calendar_year), from the ledger''s monthly buckets';

CREATE FUNCTION wallet_internal.tier_points_rank(l wallet.points_ledger, tier_window text, window_months int,
        as_of timestamptz, min_points bigint[])
    RETURNS int
    LANGUAGE C IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'tier_points_rank';
COMMENT ON FUNCTION wallet_internal.tier_points_rank(wallet.points_ledger, text, int, timestamptz, bigint[]) IS 'internal: how many of the ascending point thresholds the points earned in the window at as_of meet';

CREATE FUNCTION wallet_internal.tier_window_start(tier_window text, window_months int, as_of timestamptz)
    RETURNS timestamptz
    LANGUAGE C IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'tier_window_start';
COMMENT ON FUNCTION wallet_internal.tier_window_start(text, int, timestamptz) IS 'internal: first instant of the qualification window at as_of';

CREATE FUNCTION wallet_internal.tier_falls_below(l wallet.points_ledger, tier_window text, window_months int,
        as_of timestamptz, threshold bigint)
    RETURNS timestamptz
    LANGUAGE C IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'tier_falls_below';
COMMENT ON FUNCTION wallet_internal.tier_falls_below(wallet.points_ledger, text, int, timestamptz, bigint) IS 'internal: first instant from as_of on at which, earning nothing more, the points earned in the window are below threshold (NULL: never)';

CREATE FUNCTION wallet_internal.tier_period_end(tier_window text, window_months int, since timestamptz, as_of timestamptz)
    RETURNS timestamptz
    LANGUAGE C IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'tier_period_end';
COMMENT ON FUNCTION wallet_internal.tier_period_end(text, int, timestamptz, timestamptz) IS 'internal: end of the qualification period holding as_of: the next 1 January (calendar_year), or the next multiple of window_months months from the month of since (rolling)';

-- Whether a posting may change the account's tier: asked by every accrual
-- and reversal (post_entry), answered in C from a per-backend cache of each
-- program's tier policy and thresholds (reset by the triggers below) and the
-- account's row of wallet.account_tiers.
CREATE FUNCTION wallet_internal.tier_posting_review(program_id bigint, account_id bigint, l wallet.points_ledger,
        at timestamptz) RETURNS boolean
    LANGUAGE C STABLE
    AS 'MODULE_PATHNAME', 'tier_posting_review';
COMMENT ON FUNCTION wallet_internal.tier_posting_review(bigint, bigint, wallet.points_ledger, timestamptz) IS 'internal: whether the posting that left the account''s ledger at l may change its tier (the program has tiers, and the account is below its tier, qualifies by points for another, or a spend threshold is involved)';
CREATE FUNCTION wallet_internal.tiers_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'tiers_changed' LANGUAGE C;
COMMENT ON FUNCTION wallet_internal.tiers_changed() IS 'trigger: tells every backend to drop its cache of the programs'' tier policies and thresholds';
CREATE TRIGGER tiers_changed AFTER INSERT OR DELETE OR UPDATE
    ON wallet.tiers FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.tiers_changed();
CREATE TRIGGER tiers_changed_truncate AFTER TRUNCATE
    ON wallet.tiers FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.tiers_changed();
CREATE TRIGGER tier_policy_changed AFTER UPDATE OF tier_window, tier_window_months
    ON wallet.programs FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.tiers_changed();
COMMENT ON TRIGGER tiers_changed ON wallet.tiers IS 'drops every backend''s cache of tier thresholds (wallet_internal.tier_posting_review)';
COMMENT ON TRIGGER tiers_changed_truncate ON wallet.tiers IS 'drops every backend''s cache of tier thresholds on TRUNCATE';
COMMENT ON TRIGGER tier_policy_changed ON wallet.programs IS 'drops every backend''s cache of tier windows (wallet_internal.tier_posting_review)';

-- ---------------------------------------------------------------- sweeps

-- A change of a program's tiers or policy can move any of its accounts: a
-- sweep row makes wallet.evaluate_tiers look at every account of the
-- program once, in account order, a bounded batch per call.
-- The sweep reads a program's accounts in account_id order, a batch at a
-- time (the unique (program_id, member_ref) index orders by text).
CREATE INDEX accounts_program_account_idx ON wallet.accounts (program_id, account_id);
COMMENT ON INDEX wallet.accounts_program_account_idx IS 'a program''s accounts in account order: the batches of a tier sweep (wallet.evaluate_tiers)';

CREATE TABLE wallet.tier_sweeps (
    program_id       bigint PRIMARY KEY REFERENCES wallet.programs,
    merchant_id      bigint NOT NULL REFERENCES wallet.merchants,
    after_account    bigint NOT NULL DEFAULT 0,
    requested_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE wallet.tier_sweeps IS 'programs whose tiers or tier policy changed: wallet.evaluate_tiers still has to look at every account (missed upgrades, new review dates); the row goes when the sweep is done';
COMMENT ON COLUMN wallet.tier_sweeps.program_id IS 'the program to sweep';
COMMENT ON COLUMN wallet.tier_sweeps.merchant_id IS 'merchant of the program: the key to distribute by';
COMMENT ON COLUMN wallet.tier_sweeps.after_account IS 'the sweep has looked at every account of the program up to this account_id (0: none yet); negative: only a simulation (evaluate_tiers at a past or future as_of) has, up to minus this id, and the sweep itself starts from 0';
COMMENT ON COLUMN wallet.tier_sweeps.requested_at IS 'when the last change asked for the sweep';
SELECT pg_catalog.pg_extension_config_dump('wallet.tier_sweeps', '');
ALTER TABLE wallet.tier_sweeps ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.tier_sweeps USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.tier_sweeps IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE FUNCTION wallet_internal.tier_sweep_request(program_id bigint) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    INSERT INTO wallet.tier_sweeps AS s (program_id, merchant_id)
    SELECT p.program_id, p.merchant_id FROM wallet.programs p WHERE p.program_id = tier_sweep_request.program_id
    ON CONFLICT ON CONSTRAINT tier_sweeps_pkey DO UPDATE SET after_account = 0, requested_at = now();
END
$$;
COMMENT ON FUNCTION wallet_internal.tier_sweep_request(bigint) IS 'internal: (re)starts the sweep of a program''s accounts after its tiers or policy changed';

-- One batch of a sweep in C: the next accounts of the program in account
-- order, and those that qualify for a tier by points (their ledgers' buckets).
CREATE FUNCTION wallet_internal.tier_sweep_scan(program_id bigint, after_account bigint, max_accounts int,
        tier_window text, window_months int, as_of timestamptz, min_points bigint[],
        OUT looked_at int, OUT last_account bigint, OUT qualified bigint[])
    LANGUAGE C STABLE
    AS 'MODULE_PATHNAME', 'tier_sweep_scan';
COMMENT ON FUNCTION wallet_internal.tier_sweep_scan(bigint, bigint, int, text, int, timestamptz, bigint[]) IS 'internal: one batch of a tier sweep: how many of the program''s next max_accounts accounts after after_account were looked at, the last one, and those whose points earned in the window at as_of meet a threshold';

-- ---------------------------------------------------------------- the review of one account

-- The tier the account qualifies for at as_of: the highest whose point
-- threshold (points earned in the window) and spend threshold (purchases
-- less refunds in the window, if the tier has one) it meets.  Rank 0: none.
CREATE FUNCTION wallet_internal.tier_qualified(program_id bigint, account_id bigint, as_of timestamptz,
        OUT tier_id bigint, OUT rank int, OUT earned bigint, OUT spend numeric)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    p record;
    a record;
    t record;
    k int;
    w_start timestamptz;
BEGIN
    SELECT x.tier_window, x.tier_window_months INTO p FROM wallet.programs x WHERE x.program_id = tier_qualified.program_id;
    SELECT x.ledger, x.merchant_id, x.member_id INTO a FROM wallet.accounts x WHERE x.account_id = tier_qualified.account_id;
    SELECT array_agg(x.min_points ORDER BY x.rank) AS pts, array_agg(x.tier_id ORDER BY x.rank) AS ids,
           array_agg(x.rank ORDER BY x.rank) AS ranks, array_agg(x.min_spend ORDER BY x.rank) AS spends,
           bool_or(x.min_spend IS NOT NULL) AS by_spend
      INTO t FROM wallet.tiers x WHERE x.program_id = tier_qualified.program_id;
    earned := wallet_internal.tier_earned(a.ledger, p.tier_window, p.tier_window_months, as_of);
    k := wallet_internal.tier_points_rank(a.ledger, p.tier_window, p.tier_window_months, as_of, t.pts);
    IF t.by_spend THEN
        w_start := wallet_internal.tier_window_start(p.tier_window, p.tier_window_months, as_of);
        SELECT coalesce(sum(u.amount - u.refunded_amount), 0) INTO spend FROM wallet.purchases u
         WHERE u.merchant_id = a.merchant_id AND u.member_id = a.member_id
           AND u.program_id = tier_qualified.program_id AND u.occurred_at >= w_start AND u.occurred_at <= as_of;
        WHILE k > 0 AND t.spends[k] > spend LOOP
            k := k - 1;
        END LOOP;
    END IF;
    rank := coalesce(t.ranks[k], 0);
    tier_id := t.ids[k];
END
$$;
COMMENT ON FUNCTION wallet_internal.tier_qualified(bigint, bigint, timestamptz) IS 'internal: the highest tier of the program whose point and spend thresholds the account meets in the window at as_of, with the points earned and the spend in it';

-- Record a change: the account's tier, its history and the tier_changed
-- event the push queue triggers on.
CREATE FUNCTION wallet_internal.tier_set(account_id bigint, program_id bigint, to_tier bigint, to_rank int,
        reason text, at timestamptz, entry_id bigint, below_since timestamptz) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    a record;
    cur record;
BEGIN
    SELECT x.merchant_id, x.member_id INTO a FROM wallet.accounts x WHERE x.account_id = tier_set.account_id;
    SELECT x.tier_id, x.rank INTO cur FROM wallet.account_tiers x WHERE x.account_id = tier_set.account_id;
    INSERT INTO wallet.account_tiers AS t (account_id, merchant_id, member_id, program_id, tier_id, rank, since, below_since, review_at)
    VALUES (account_id, a.merchant_id, a.member_id, program_id, to_tier, to_rank, at, below_since, NULL)
    ON CONFLICT ON CONSTRAINT account_tiers_pkey DO UPDATE
       SET tier_id = excluded.tier_id, rank = excluded.rank, since = excluded.since,
           below_since = excluded.below_since, review_at = NULL;
    INSERT INTO wallet.tier_history (merchant_id, member_id, account_id, program_id, from_tier, to_tier,
                                     from_rank, to_rank, reason, changed_at, entry_id)
    VALUES (a.merchant_id, a.member_id, account_id, program_id, cur.tier_id, to_tier,
            coalesce(cur.rank, 0), to_rank, reason, at, entry_id);
    INSERT INTO wallet.member_events (merchant_id, member_id, kind, occurred_at, attributes)
    VALUES (a.merchant_id, a.member_id, 'tier_changed', at,
            jsonb_build_object('program_id', program_id, 'account_id', account_id,
                               'from_tier', cur.tier_id, 'to_tier', to_tier,
                               'from_rank', coalesce(cur.rank, 0), 'to_rank', to_rank, 'reason', reason));
END
$$;
COMMENT ON FUNCTION wallet_internal.tier_set(bigint, bigint, bigint, int, text, timestamptz, bigint, timestamptz) IS 'internal: moves an account to a tier, records the change in wallet.tier_history and a tier_changed event in wallet.member_events';

-- When evaluate_tiers must look next at an account holding a tier: never
-- (policy never, or no tier); the end of its period (period_end); the end
-- of its grace (below its threshold), else the instant it would fall below
-- by points, or the next month start when the tier also has a spend
-- threshold (purchases leave the window at month starts too).
CREATE FUNCTION wallet_internal.tier_next_review(account_id bigint, as_of timestamptz) RETURNS timestamptz
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r record;
    d timestamptz;
BEGIN
    SELECT t.rank, t.since, t.below_since, x.min_points, x.min_spend, a.ledger,
           p.tier_window, p.tier_window_months, p.tier_downgrade, p.tier_grace_days
      INTO r
      FROM wallet.account_tiers t JOIN wallet.tiers x ON x.tier_id = t.tier_id
      JOIN wallet.accounts a ON a.account_id = t.account_id JOIN wallet.programs p ON p.program_id = t.program_id
     WHERE t.account_id = tier_next_review.account_id;
    IF NOT FOUND OR r.rank = 0 OR r.tier_downgrade = 'never' THEN
        RETURN NULL;
    END IF;
    IF r.tier_downgrade = 'period_end' THEN
        RETURN wallet_internal.tier_period_end(r.tier_window, r.tier_window_months, r.since, as_of);
    END IF;
    IF r.below_since IS NOT NULL THEN
        RETURN r.below_since + make_interval(days => r.tier_grace_days);
    END IF;
    d := wallet_internal.tier_falls_below(r.ledger, r.tier_window, r.tier_window_months, as_of, r.min_points);
    IF r.min_spend IS NOT NULL THEN
        d := least(d, wallet_internal.tier_window_start('rolling', 1, as_of) + interval '1 month');
    END IF;
    RETURN d;
END
$$;
COMMENT ON FUNCTION wallet_internal.tier_next_review(bigint, timestamptz) IS 'internal: when wallet.evaluate_tiers must look at an account again (its period end, the end of its grace, the instant it would fall below its threshold), NULL for nothing due';

-- The review of one account at as_of, its row locked by the caller (a
-- posting, or evaluate_tiers): an upgrade when it qualifies for a higher
-- tier; below its tier, the program's downgrade policy; then the next
-- review date.  Returns 'upgraded', 'downgraded' or NULL.
CREATE FUNCTION wallet_internal.tier_review(account_id bigint, as_of timestamptz, entry_id bigint DEFAULT NULL)
    RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    pid bigint;
    p record;
    cur record;
    q record;
    target record;
    bs timestamptz;
    changed text;
BEGIN
    SELECT a.program_id INTO pid FROM wallet.accounts a WHERE a.account_id = tier_review.account_id;
    SELECT x.tier_window, x.tier_window_months, x.tier_downgrade, x.tier_grace_days, x.tier_downgrade_step
      INTO p FROM wallet.programs x WHERE x.program_id = pid;
    SELECT t.tier_id, t.rank, t.since, t.below_since, t.review_at INTO cur
      FROM wallet.account_tiers t WHERE t.account_id = tier_review.account_id;
    q := wallet_internal.tier_qualified(pid, account_id, as_of);
    IF q.rank > coalesce(cur.rank, 0) THEN
        PERFORM wallet_internal.tier_set(account_id, pid, q.tier_id, q.rank, 'upgrade', as_of, entry_id, NULL);
        changed := 'upgraded';
    ELSIF coalesce(cur.rank, 0) = 0 THEN
        RETURN NULL;   -- no tier, none won: nothing to keep, nothing due
    ELSIF p.tier_downgrade = 'period_end' THEN
        -- at the end of a period, the period that ended decides
        IF cur.review_at <= as_of THEN
            q := wallet_internal.tier_qualified(pid, account_id, cur.review_at - interval '1 microsecond');
        END IF;
        IF cur.review_at <= as_of AND q.rank < cur.rank THEN
            changed := 'downgraded';
        ELSE
            UPDATE wallet.account_tiers t
               SET below_since = CASE WHEN q.rank < cur.rank THEN coalesce(t.below_since, as_of) END
             WHERE t.account_id = tier_review.account_id;
        END IF;
    ELSIF q.rank >= cur.rank THEN
        UPDATE wallet.account_tiers t SET below_since = NULL
         WHERE t.account_id = tier_review.account_id AND t.below_since IS NOT NULL;
    ELSE
        -- below: since the instant foreseen (review_at), or now
        bs := coalesce(cur.below_since, least(cur.review_at, as_of));
        IF p.tier_downgrade = 'grace' AND as_of >= bs + make_interval(days => p.tier_grace_days) THEN
            changed := 'downgraded';
        ELSE
            UPDATE wallet.account_tiers t SET below_since = bs WHERE t.account_id = tier_review.account_id;
        END IF;
    END IF;
    IF changed = 'downgraded' THEN
        IF p.tier_downgrade_step = 'one_level' THEN
            SELECT x.tier_id, x.rank INTO target FROM wallet.tiers x
             WHERE x.program_id = pid AND x.rank < cur.rank ORDER BY x.rank DESC LIMIT 1;
        ELSE
            SELECT q.tier_id, q.rank INTO target;
        END IF;
        PERFORM wallet_internal.tier_set(account_id, pid, target.tier_id, coalesce(target.rank, 0),
                                         CASE p.tier_downgrade WHEN 'grace' THEN 'grace_ended' ELSE 'period_ended' END,
                                         as_of, NULL,
                                         -- one level down and still below: a new grace period starts
                                         CASE WHEN coalesce(target.rank, 0) > q.rank THEN as_of END);
    END IF;
    UPDATE wallet.account_tiers t SET review_at = wallet_internal.tier_next_review(tier_review.account_id, as_of)
     WHERE t.account_id = tier_review.account_id;
    RETURN changed;
END
$$;
COMMENT ON FUNCTION wallet_internal.tier_review(bigint, timestamptz, bigint) IS 'internal: reviews the tier of a locked account at as_of (upgrade when it qualifies higher, the program''s downgrade policy when below), sets its next review date; returns upgraded, downgraded or NULL';

-- ---------------------------------------------------------------- administration

CREATE FUNCTION wallet_internal.tier_check(program_id bigint, rank int, name text, min_points bigint,
        min_spend numeric, multiplier numeric, benefits jsonb, tier_id bigint) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    o record;
BEGIN
    IF rank IS NULL OR name IS NULL OR min_points IS NULL OR multiplier IS NULL OR benefits IS NULL THEN
        RAISE EXCEPTION '% must not be null',
              CASE WHEN rank IS NULL THEN 'rank' WHEN name IS NULL THEN 'name' WHEN min_points IS NULL THEN 'min_points'
                   WHEN multiplier IS NULL THEN 'multiplier' ELSE 'benefits' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A tier has a rank, a name, a point threshold, a multiplier and benefits.';
    END IF;
    IF btrim(name) = '' OR length(name) > 200 THEN
        RAISE EXCEPTION 'invalid tier name'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A tier''s name has 1 to 200 characters, not all blank.';
    END IF;
    -- numeric NaN compares above every number, and Infinity is a numeric:
    -- both are refused by name (an earning multiplied by them has no points)
    IF rank < 1 OR min_points < 0 OR min_spend < 0 OR min_spend IN ('NaN', 'Infinity')
       OR multiplier <= 0 OR multiplier > 100 OR multiplier = 'NaN' OR jsonb_typeof(benefits) <> 'object' THEN
        RAISE EXCEPTION 'invalid tier'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A tier''s rank is positive, its thresholds are finite and not negative, its multiplier is above 0 and at most 100, and its benefits are a JSON object.';
    END IF;
    SELECT x.tier_id INTO o FROM wallet.tiers x
     WHERE x.program_id = tier_check.program_id AND x.tier_id IS DISTINCT FROM tier_check.tier_id
       AND (x.rank = tier_check.rank OR x.name = tier_check.name);
    IF FOUND THEN
        RAISE EXCEPTION 'tier already exists'
            USING ERRCODE = 'WL541', DETAIL = format('Tier %s of program %s has the same rank or name.', o.tier_id, program_id);
    END IF;
    -- a higher rank asks for at least as much, and more of something
    SELECT x.tier_id, x.rank INTO o FROM wallet.tiers x
     WHERE x.program_id = tier_check.program_id AND x.tier_id IS DISTINCT FROM tier_check.tier_id
       AND CASE WHEN x.rank < tier_check.rank
                THEN x.min_points > tier_check.min_points OR coalesce(x.min_spend, 0) > coalesce(tier_check.min_spend, 0)
                  OR (x.min_points = tier_check.min_points AND coalesce(x.min_spend, 0) = coalesce(tier_check.min_spend, 0))
                ELSE x.min_points < tier_check.min_points OR coalesce(x.min_spend, 0) < coalesce(tier_check.min_spend, 0)
                  OR (x.min_points = tier_check.min_points AND coalesce(x.min_spend, 0) = coalesce(tier_check.min_spend, 0)) END
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'tier thresholds out of order'
            USING ERRCODE = 'WL542',
                  DETAIL = format('Tier %s (rank %s) conflicts: a higher rank must ask for at least the points and spend of every lower one, and more of one of them.', o.tier_id, o.rank);
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.tier_check(bigint, int, text, bigint, numeric, numeric, jsonb, bigint) IS 'internal: validates a tier (22004, 22023, WL541 rank or name taken, WL542 thresholds not increasing with rank)';

CREATE FUNCTION wallet_internal.lock_tier_program(program_id bigint) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    m bigint;
BEGIN
    IF program_id IS NULL THEN
        RAISE EXCEPTION 'program_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Tiers belong to a points program, named by its id.';
    END IF;
    -- one change of a program's tiers at a time: the checks see the others
    SELECT p.merchant_id INTO m FROM wallet.programs p
     WHERE p.program_id = lock_tier_program.program_id AND wallet.acts_for(p.merchant_id) FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
    RETURN m;
END
$$;
COMMENT ON FUNCTION wallet_internal.lock_tier_program(bigint) IS 'internal: locks a program for a change of its tiers or policy; 22004 for NULL, WL214 for an unknown program (or another merchant''s)';

CREATE FUNCTION wallet_internal.tier_lock(tier_id bigint) RETURNS wallet.tiers
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t wallet.tiers;
BEGIN
    IF tier_id IS NULL THEN
        RAISE EXCEPTION 'tier_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A tier is named by its id.';
    END IF;
    SELECT * INTO t FROM wallet.tiers x WHERE x.tier_id = tier_lock.tier_id AND wallet.acts_for(x.merchant_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown tier'
            USING ERRCODE = 'WL540', DETAIL = format('There is no tier %s.', tier_id);
    END IF;
    PERFORM wallet_internal.lock_tier_program(t.program_id);
    SELECT * INTO t FROM wallet.tiers x WHERE x.tier_id = tier_lock.tier_id FOR UPDATE;
    RETURN t;
END
$$;
COMMENT ON FUNCTION wallet_internal.tier_lock(bigint) IS 'internal: finds and locks a tier and its program; 22004 for NULL, WL540 for an unknown tier (or another merchant''s)';

CREATE FUNCTION wallet.create_tier(program_id bigint, rank int, name text, min_points bigint,
        min_spend numeric DEFAULT NULL, multiplier numeric DEFAULT 1, benefits jsonb DEFAULT '{}') RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    m bigint;
    id bigint;
BEGIN
    m := wallet_internal.lock_tier_program(program_id);
    PERFORM wallet_internal.tier_check(program_id, rank, name, min_points, min_spend, multiplier, benefits, NULL);
    INSERT INTO wallet.tiers (merchant_id, program_id, rank, name, min_points, min_spend, multiplier, benefits)
    VALUES (m, program_id, rank, name, min_points, min_spend, multiplier, benefits)
    RETURNING tier_id INTO id;
    PERFORM wallet_internal.tier_sweep_request(program_id);
    RETURN id;
END
$$;
COMMENT ON FUNCTION wallet.create_tier(bigint, int, text, bigint, numeric, numeric, jsonb) IS 'adds a tier to a program: rank (1 the lowest), name, points earned in the window (and optionally spend) that qualify, earning multiplier, benefits for the app; thresholds must increase with rank (WL542); accounts already qualifying move up at the next wallet.evaluate_tiers';

CREATE FUNCTION wallet.update_tier(tier_id bigint, name text DEFAULT NULL, min_points bigint DEFAULT NULL,
        min_spend numeric DEFAULT NULL, multiplier numeric DEFAULT NULL, benefits jsonb DEFAULT NULL,
        clear_min_spend boolean DEFAULT false) RETURNS wallet.tiers
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t wallet.tiers;
BEGIN
    t := wallet_internal.tier_lock(tier_id);
    IF clear_min_spend IS NULL THEN
        RAISE EXCEPTION 'clear_min_spend must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The flag clear_min_spend is true to remove the spend threshold, false to keep or set it.';
    END IF;
    IF clear_min_spend AND min_spend IS NOT NULL THEN
        RAISE EXCEPTION 'min_spend given with clear_min_spend'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A spend threshold is either set or removed.';
    END IF;
    t.name := coalesce(update_tier.name, t.name);
    t.min_points := coalesce(update_tier.min_points, t.min_points);
    t.min_spend := CASE WHEN clear_min_spend THEN NULL ELSE coalesce(update_tier.min_spend, t.min_spend) END;
    t.multiplier := coalesce(update_tier.multiplier, t.multiplier);
    t.benefits := coalesce(update_tier.benefits, t.benefits);
    PERFORM wallet_internal.tier_check(t.program_id, t.rank, t.name, t.min_points, t.min_spend, t.multiplier, t.benefits, t.tier_id);
    UPDATE wallet.tiers x SET name = t.name, min_points = t.min_points, min_spend = t.min_spend,
                              multiplier = t.multiplier, benefits = t.benefits
     WHERE x.tier_id = t.tier_id
    RETURNING * INTO t;
    PERFORM wallet_internal.tier_sweep_request(t.program_id);
    RETURN t;
END
$$;
COMMENT ON FUNCTION wallet.update_tier(bigint, text, bigint, numeric, numeric, jsonb, boolean) IS 'changes a tier''s name, thresholds, multiplier or benefits (NULL keeps; clear_min_spend removes the spend threshold); validated like create_tier; accounts are reviewed at the next wallet.evaluate_tiers; returns the tier';

CREATE FUNCTION wallet.drop_tier(tier_id bigint) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t wallet.tiers;
BEGIN
    t := wallet_internal.tier_lock(tier_id);
    IF EXISTS (SELECT FROM wallet.tier_history h WHERE h.program_id = t.program_id AND (h.to_tier = t.tier_id OR h.from_tier = t.tier_id)) THEN
        RAISE EXCEPTION 'tier in use'
            USING ERRCODE = 'WL543',
                  DETAIL = format('Tier %s has been held by accounts; their history refers to it.', tier_id),
                  HINT = 'Rename it or change its thresholds with wallet.update_tier.';
    END IF;
    DELETE FROM wallet.tiers x WHERE x.tier_id = t.tier_id;
    PERFORM wallet_internal.tier_sweep_request(t.program_id);
    RETURN true;
END
$$;
COMMENT ON FUNCTION wallet.drop_tier(bigint) IS 'removes a tier no account ever held (WL543 otherwise: its history refers to it)';

CREATE FUNCTION wallet.set_tier_policy(program_id bigint, tier_window text DEFAULT NULL, tier_window_months int DEFAULT NULL,
        tier_downgrade text DEFAULT NULL, tier_grace_days int DEFAULT NULL, tier_downgrade_step text DEFAULT NULL)
    RETURNS wallet.programs
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.programs;
BEGIN
    PERFORM wallet_internal.lock_tier_program(program_id);
    IF tier_window NOT IN ('rolling', 'calendar_year') OR tier_window_months NOT BETWEEN 1 AND 24
       OR tier_downgrade NOT IN ('never', 'period_end', 'grace') OR tier_grace_days NOT BETWEEN 0 AND 36525
       OR tier_downgrade_step NOT IN ('one_level', 'qualified') THEN
        RAISE EXCEPTION 'invalid tier policy'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'The tier_window is rolling or calendar_year, tier_window_months 1 to 24, tier_downgrade never, period_end or grace, tier_grace_days 0 to 36525 (100 years), tier_downgrade_step one_level or qualified.';
    END IF;
    UPDATE wallet.programs p
       SET tier_window = coalesce(set_tier_policy.tier_window, p.tier_window),
           tier_window_months = coalesce(set_tier_policy.tier_window_months, p.tier_window_months),
           tier_downgrade = coalesce(set_tier_policy.tier_downgrade, p.tier_downgrade),
           tier_grace_days = coalesce(set_tier_policy.tier_grace_days, p.tier_grace_days),
           tier_downgrade_step = coalesce(set_tier_policy.tier_downgrade_step, p.tier_downgrade_step)
     WHERE p.program_id = set_tier_policy.program_id
    RETURNING * INTO r;
    PERFORM wallet_internal.tier_sweep_request(program_id);
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet.set_tier_policy(bigint, text, int, text, int, text) IS 'sets a program''s tier policy (NULL keeps): qualification window (rolling tier_window_months months or calendar_year), downgrade (never, period_end, grace after tier_grace_days days below) and step (one_level or qualified); every account is reviewed at the next wallet.evaluate_tiers; returns the program';

-- ---------------------------------------------------------------- reading

CREATE FUNCTION wallet.member_tier(account_id bigint, as_of timestamptz DEFAULT now(),
        OUT tier_id bigint, OUT rank int, OUT name text, OUT since timestamptz)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NOT wallet_internal.sees_account(account_id) THEN
        PERFORM wallet_internal.unknown_account(account_id);
    END IF;
    IF as_of IS NULL THEN
        RAISE EXCEPTION 'as_of must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The tier is read as of an instant, now() by default.';
    END IF;
    IF NOT isfinite(as_of) THEN
        RAISE EXCEPTION 'as_of must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The tier is read as of a real instant.';
    END IF;
    SELECT h.to_tier, h.to_rank, x.name, h.changed_at INTO tier_id, rank, name, since
      FROM wallet.tier_history h LEFT JOIN wallet.tiers x ON x.tier_id = h.to_tier
     WHERE h.account_id = member_tier.account_id AND h.changed_at <= as_of
     ORDER BY h.changed_at DESC, h.change_id DESC LIMIT 1;
    rank := coalesce(rank, 0);
    IF rank = 0 THEN
        since := NULL;
    END IF;
END
$$;
COMMENT ON FUNCTION wallet.member_tier(bigint, timestamptz) IS 'the tier an account held at as_of (from wallet.tier_history): id, rank (0 = none), name, since when';

CREATE FUNCTION wallet.tier_progress(account_id bigint,
        OUT program_id bigint, OUT tier_id bigint, OUT tier_name text, OUT rank int, OUT since timestamptz,
        OUT window_start timestamptz, OUT earned bigint, OUT spend numeric,
        OUT next_tier_id bigint, OUT next_tier_name text, OUT points_to_next bigint, OUT spend_to_next numeric,
        OUT keep_points bigint, OUT keep_by timestamptz, OUT below_since timestamptz)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    now_ts timestamptz := now();
    a record;
    p record;
    t record;
    n record;
    q record;
    d timestamptz;
BEGIN
    IF NOT wallet_internal.sees_account(account_id) THEN
        PERFORM wallet_internal.unknown_account(account_id);
    END IF;
    SELECT x.ledger, x.program_id INTO a FROM wallet.accounts x WHERE x.account_id = tier_progress.account_id;
    program_id := a.program_id;
    SELECT x.tier_window, x.tier_window_months, x.tier_downgrade, x.tier_grace_days INTO p
      FROM wallet.programs x WHERE x.program_id = a.program_id;
    SELECT x.tier_id, x.name, x.min_points, x.min_spend, s.rank, s.since, s.below_since, s.review_at INTO t
      FROM wallet.account_tiers s JOIN wallet.tiers x ON x.tier_id = s.tier_id
     WHERE s.account_id = tier_progress.account_id;
    tier_id := t.tier_id;
    tier_name := t.name;
    rank := coalesce(t.rank, 0);
    since := t.since;
    below_since := t.below_since;
    window_start := wallet_internal.tier_window_start(p.tier_window, p.tier_window_months, now_ts);
    q := wallet_internal.tier_qualified(a.program_id, account_id, now_ts);
    earned := q.earned;
    spend := q.spend;
    SELECT x.tier_id, x.name, x.min_points, x.min_spend INTO n FROM wallet.tiers x
     WHERE x.program_id = a.program_id AND x.rank > coalesce(t.rank, 0) ORDER BY x.rank LIMIT 1;
    next_tier_id := n.tier_id;
    next_tier_name := n.name;
    points_to_next := CASE WHEN n.tier_id IS NOT NULL THEN greatest(n.min_points - earned, 0) END;
    IF n.min_spend IS NOT NULL THEN
        spend_to_next := greatest(n.min_spend - coalesce(spend, 0), 0);
    END IF;
    -- keeping the tier: the instant it would be lost, and the points to
    -- earn before it (counted in the window as it will be then)
    keep_points := 0;
    IF t.tier_id IS NULL OR p.tier_downgrade = 'never' THEN
        RETURN;
    END IF;
    IF p.tier_downgrade = 'period_end' THEN
        keep_by := coalesce(t.review_at, wallet_internal.tier_period_end(p.tier_window, p.tier_window_months, t.since, now_ts));
        keep_points := greatest(t.min_points - wallet_internal.tier_earned(a.ledger, p.tier_window, p.tier_window_months,
                                                                          keep_by - interval '1 microsecond'), 0);
    ELSE
        d := coalesce(t.below_since,
                      wallet_internal.tier_falls_below(a.ledger, p.tier_window, p.tier_window_months, now_ts, t.min_points));
        keep_by := d + make_interval(days => p.tier_grace_days);
        IF keep_by IS NOT NULL THEN
            keep_points := greatest(t.min_points - wallet_internal.tier_earned(a.ledger, p.tier_window, p.tier_window_months, keep_by), 0);
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION wallet.tier_progress(bigint) IS 'where an account stands: its tier, the points earned (and spend) in the window, the points (and spend) needed for the next tier, and the points to earn before keep_by not to lose the current one (0 and NULL: nothing to do)';

-- ---------------------------------------------------------------- evaluation

CREATE FUNCTION wallet.evaluate_tiers(program_id bigint, as_of timestamptz DEFAULT now(), max_accounts int DEFAULT 10000,
        OUT looked_at int, OUT upgraded int, OUT downgraded int, OUT more boolean)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    p record;
    t record;
    s wallet.tier_sweeps;
    r text;
    id bigint;
    due int := 0;
    chunk record;
    chunk2 record;
    ids bigint[];
    present boolean := as_of >= now() AND as_of <= clock_timestamp();
    start bigint;
    swept boolean;
BEGIN
    IF program_id IS NULL OR as_of IS NULL OR max_accounts IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN program_id IS NULL THEN 'program_id' WHEN as_of IS NULL THEN 'as_of' ELSE 'max_accounts' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Tiers are evaluated for a program, as of an instant, a bounded number of accounts at a time.';
    END IF;
    IF NOT isfinite(as_of) THEN
        RAISE EXCEPTION 'as_of must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Tiers are evaluated as of a real instant.';
    END IF;
    IF max_accounts < 1 THEN
        RAISE EXCEPTION 'max_accounts must be positive'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Each call looks at up to max_accounts accounts; call again while more is true.';
    END IF;
    SELECT x.tier_window, x.tier_window_months, x.tier_downgrade INTO p FROM wallet.programs x
     WHERE x.program_id = evaluate_tiers.program_id AND wallet.acts_for(x.merchant_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
    looked_at := 0;
    upgraded := 0;
    downgraded := 0;
    -- 1. accounts due (a downgrade, a period end, a fall below), soonest
    -- first; an account a posting holds is skipped: it is reviewed anyway
    FOR id IN SELECT x.account_id FROM wallet.account_tiers x
               WHERE x.program_id = evaluate_tiers.program_id AND x.review_at <= as_of
               ORDER BY x.review_at, x.account_id LIMIT max_accounts LOOP
        looked_at := looked_at + 1;
        due := due + 1;
        PERFORM FROM wallet.accounts a WHERE a.account_id = id FOR NO KEY UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        r := wallet_internal.tier_review(id, as_of);
        upgraded := upgraded + (r IS NOT DISTINCT FROM 'upgraded')::int;
        downgraded := downgraded + (r IS NOT DISTINCT FROM 'downgraded')::int;
    END LOOP;
    -- 2. the sweep after a change of tiers or policy: the points of every
    -- account are read from its ledger's buckets (C), and only accounts that
    -- may move up, or hold a tier whose review date may have changed, are
    -- reviewed
    SELECT * INTO s FROM wallet.tier_sweeps x WHERE x.program_id = evaluate_tiers.program_id FOR UPDATE;
    swept := NOT FOUND;
    start := CASE WHEN present THEN greatest(s.after_account, 0) ELSE abs(s.after_account) END;
    IF FOUND AND looked_at < max_accounts THEN
        SELECT array_agg(x.min_points ORDER BY x.rank) AS pts, array_agg(x.rank ORDER BY x.rank) AS ranks,
               array_agg(x.tier_id ORDER BY x.rank) AS ids, coalesce(bool_or(x.min_spend IS NOT NULL), false) AS by_spend
          INTO t FROM wallet.tiers x WHERE x.program_id = evaluate_tiers.program_id;
        -- accounts that qualify for a tier by points (an upper bound: spend can only lower it)
        SELECT x.looked_at AS n, x.last_account AS last, x.qualified AS ids INTO chunk
          FROM wallet_internal.tier_sweep_scan(evaluate_tiers.program_id, start, max_accounts - looked_at,
                                               p.tier_window, p.tier_window_months, as_of, coalesce(t.pts, '{}')) x;
        looked_at := looked_at + chunk.n;
        -- and those holding a tier, in the same range of accounts
        SELECT array_agg(DISTINCT x.id ORDER BY x.id) INTO ids
          FROM (SELECT unnest(chunk.ids) AS id
                UNION ALL
                SELECT h.account_id FROM wallet.account_tiers h
                 WHERE h.program_id = evaluate_tiers.program_id AND h.rank > 0
                   AND h.account_id > start AND h.account_id <= chunk.last) x;
        IF ids IS NOT NULL AND NOT t.by_spend THEN
            -- points alone decide: the accounts are locked in account order
            -- (as the loop below would), then reviewed set-based in what
            -- tier_review would do for them: an upgrade (tier_set and the
            -- next review), or, still at their tier, the next review date
            -- (written only where it changes); the others (below their
            -- tier, a period end due) go through tier_review
            PERFORM FROM wallet.accounts a WHERE a.account_id = ANY (ids) ORDER BY a.account_id FOR NO KEY UPDATE;
            -- (the tier row of each account by its key: a join would hash
            -- the program's whole account_tiers for a batch of ~100)
            WITH c AS (
                SELECT a.account_id, a.merchant_id, a.member_id, a.ledger, h.tier_id AS held_tier,
                       h.account_id IS NOT NULL AS has_row,
                       coalesce(h.rank, 0) AS held_rank, h.since, h.below_since, h.review_at, ht.min_points AS held_min,
                       coalesce(t.ranks[k.k], 0) AS q_rank, t.ids[k.k] AS q_tier, t.pts[k.k] AS q_min
                  FROM wallet.accounts a
                  LEFT JOIN LATERAL (SELECT x.account_id, x.tier_id, x.rank, x.since, x.below_since, x.review_at
                                       FROM wallet.account_tiers x WHERE x.account_id = a.account_id OFFSET 0) h ON true
                  LEFT JOIN wallet.tiers ht ON ht.tier_id = h.tier_id
                 CROSS JOIN LATERAL (SELECT wallet_internal.tier_points_rank(a.ledger, p.tier_window, p.tier_window_months,
                                                                            as_of, t.pts) AS k) k
                 WHERE a.account_id = ANY (ids)
            ), up AS (
                SELECT c.*,
                       CASE p.tier_downgrade WHEN 'never' THEN NULL::timestamptz
                            WHEN 'period_end' THEN wallet_internal.tier_period_end(p.tier_window, p.tier_window_months, as_of, as_of)
                            ELSE wallet_internal.tier_falls_below(c.ledger, p.tier_window, p.tier_window_months, as_of, c.q_min) END AS next_review
                  FROM c WHERE c.q_rank > c.held_rank
            ), kept AS (
                SELECT c.account_id,
                       CASE p.tier_downgrade WHEN 'never' THEN NULL::timestamptz
                            WHEN 'period_end' THEN wallet_internal.tier_period_end(p.tier_window, p.tier_window_months, c.since, as_of)
                            ELSE wallet_internal.tier_falls_below(c.ledger, p.tier_window, p.tier_window_months, as_of, c.held_min) END AS review_at
                  FROM c
                 WHERE c.held_rank > 0 AND c.q_rank = c.held_rank
                   AND NOT (p.tier_downgrade = 'period_end' AND coalesce(c.review_at <= as_of, false))
            ), set_tier AS (
                -- the accounts are locked: a row seen missing stays missing
                -- (a plain insert, no speculative insertion per row)
                INSERT INTO wallet.account_tiers (account_id, merchant_id, member_id, program_id, tier_id, rank, since, below_since, review_at)
                SELECT u.account_id, u.merchant_id, u.member_id, evaluate_tiers.program_id, u.q_tier, u.q_rank, as_of, NULL, u.next_review
                  FROM up u WHERE NOT u.has_row ORDER BY u.account_id
            ), reset_tier AS (
                UPDATE wallet.account_tiers x
                   SET tier_id = u.q_tier, rank = u.q_rank, since = as_of, below_since = NULL, review_at = u.next_review
                  FROM up u
                 WHERE u.has_row AND x.account_id = u.account_id
            ), history AS (
                INSERT INTO wallet.tier_history (merchant_id, member_id, account_id, program_id, from_tier, to_tier,
                                                 from_rank, to_rank, reason, changed_at, entry_id)
                SELECT u.merchant_id, u.member_id, u.account_id, evaluate_tiers.program_id, u.held_tier, u.q_tier,
                       u.held_rank, u.q_rank, 'upgrade', as_of, NULL
                  FROM up u ORDER BY u.account_id
            ), events AS (
                INSERT INTO wallet.member_events (merchant_id, member_id, kind, occurred_at, attributes)
                SELECT u.merchant_id, u.member_id, 'tier_changed', as_of,
                       jsonb_build_object('program_id', evaluate_tiers.program_id, 'account_id', u.account_id,
                                          'from_tier', u.held_tier, 'to_tier', u.q_tier,
                                          'from_rank', u.held_rank, 'to_rank', u.q_rank, 'reason', 'upgrade'::text)
                  FROM up u ORDER BY u.account_id
            ), kept_set AS (
                UPDATE wallet.account_tiers x SET below_since = NULL, review_at = k.review_at
                  FROM kept k
                 WHERE x.account_id = k.account_id
                   AND (x.below_since IS NOT NULL OR x.review_at IS DISTINCT FROM k.review_at)
            )
            SELECT count(*) FILTER (WHERE c.q_rank > c.held_rank)::int AS up,
                   array_agg(c.account_id ORDER BY c.account_id)
                       FILTER (WHERE c.held_rank > 0
                                 AND (c.q_rank < c.held_rank
                                      OR (p.tier_downgrade = 'period_end' AND coalesce(c.review_at <= as_of, false)
                                          AND c.q_rank = c.held_rank))) AS rest
              INTO chunk2 FROM c;
            upgraded := upgraded + chunk2.up;
            ids := chunk2.rest;
        END IF;
        IF ids IS NOT NULL THEN
            FOREACH id IN ARRAY ids LOOP
                PERFORM FROM wallet.accounts a WHERE a.account_id = id FOR NO KEY UPDATE;
                r := wallet_internal.tier_review(id, as_of);
                upgraded := upgraded + (r IS NOT DISTINCT FROM 'upgraded')::int;
                downgraded := downgraded + (r IS NOT DISTINCT FROM 'downgraded')::int;
            END LOOP;
        END IF;
        -- only an evaluation as of the present moves the sweep on: one in
        -- the future or the past (a simulation) counts other points in the
        -- window, and an account it passed over would never be looked at.
        -- A simulation keeps its own progress as a negative after_account
        -- (so that its calls end), and leaves the sweep to start again.
        IF chunk.n < max_accounts - (looked_at - chunk.n) THEN
            IF present THEN
                DELETE FROM wallet.tier_sweeps x WHERE x.program_id = evaluate_tiers.program_id;
            ELSE
                UPDATE wallet.tier_sweeps x SET after_account = 0 WHERE x.program_id = evaluate_tiers.program_id;
            END IF;
            swept := true;
        ELSE
            UPDATE wallet.tier_sweeps x SET after_account = CASE WHEN present THEN chunk.last ELSE -chunk.last END
             WHERE x.program_id = evaluate_tiers.program_id;
            swept := false;
        END IF;
    END IF;
    -- more: the batch was full (an account a posting held stays due, for the
    -- next call), or the sweep goes on
    more := due = max_accounts OR NOT swept;
END
$$;
COMMENT ON FUNCTION wallet.evaluate_tiers(bigint, timestamptz, int) IS 'makes the due tier changes of a program at as_of (downgrades after grace or at a period end, and upgrades missed after a change of its tiers or policy), looking at up to max_accounts accounts; points in the window come from each ledger''s monthly buckets, not the journal; only an evaluation as of the present moves that sweep on (a past or future as_of is a simulation); more: call again';

-- The programs a scheduled evaluation has work in (tiers and something due
-- or a sweep pending), of the merchants the caller acts for.
CREATE FUNCTION wallet_internal.tier_programs_due(program_id bigint, as_of timestamptz) RETURNS bigint[]
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF program_id IS NOT NULL AND NOT wallet_internal.sees_program(program_id) THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
    RETURN ARRAY(SELECT p.program_id FROM wallet.programs p
                  WHERE (tier_programs_due.program_id IS NULL OR p.program_id = tier_programs_due.program_id)
                    AND wallet.acts_for(p.merchant_id)
                    AND (EXISTS (SELECT FROM wallet.tier_sweeps s WHERE s.program_id = p.program_id)
                         OR EXISTS (SELECT FROM wallet.account_tiers t WHERE t.program_id = p.program_id AND t.review_at <= as_of))
                  ORDER BY p.program_id);
END
$$;
COMMENT ON FUNCTION wallet_internal.tier_programs_due(bigint, timestamptz) IS 'internal: programs (one, or NULL = all the caller acts for) with tier reviews due at as_of or a sweep pending; WL214 for a program_id the caller does not see';

-- Procedures carry no SET search_path (they commit): every name qualified.
CREATE PROCEDURE wallet.evaluate_tiers_batched(program_id bigint DEFAULT NULL, as_of timestamptz DEFAULT now(),
        batch_size int DEFAULT 1000, max_batches int DEFAULT NULL)
    LANGUAGE plpgsql
    AS $$
DECLARE
    batches int := 0;
    p bigint;
    r record;
BEGIN
    IF as_of IS NULL OR batch_size IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN as_of IS NULL THEN 'as_of' ELSE 'batch_size' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Tiers are evaluated as of an instant, batch_size accounts per transaction.';
    END IF;
    IF NOT pg_catalog.isfinite(as_of) THEN
        RAISE EXCEPTION 'as_of must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Tiers are evaluated as of a real instant.';
    END IF;
    IF batch_size OPERATOR(pg_catalog.<) 1 OR max_batches OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'batch_size and max_batches must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Accounts are evaluated batch_size at a time, at most max_batches times (NULL: until none is due).';
    END IF;
    FOREACH p IN ARRAY wallet_internal.tier_programs_due(program_id, as_of) LOOP
        LOOP
            r := wallet.evaluate_tiers(p, as_of, batch_size);
            COMMIT;
            batches := batches OPERATOR(pg_catalog.+) 1;
            EXIT WHEN NOT r.more OR batches OPERATOR(pg_catalog.=) max_batches;
        END LOOP;
        EXIT WHEN batches OPERATOR(pg_catalog.=) max_batches;
    END LOOP;
END
$$;
COMMENT ON PROCEDURE wallet.evaluate_tiers_batched(bigint, timestamptz, int, int) IS 'what wallet.evaluate_tiers does, for one program or every one (NULL) with work due, batch_size accounts per transaction (at most max_batches, NULL = until none is due); CALL it outside a transaction block';

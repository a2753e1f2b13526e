
-- ======================================================================
-- Campaign budgets (issue 11): a campaign's budget in money (discount value,
-- in minor units), points or redemptions, that is never exceeded however
-- many checkouts race, without serialising them on one row.
--
-- Escrow slices: the unspent part of a budget is split over N rows of
-- wallet.budget_slices, each with CHECK (remaining >= 0).  A take goes to the
-- slice of its backend (pg_backend_pid() % N) with one conditional UPDATE; when
-- that slice cannot cover it, the take gathers from the other slices and
-- spreads what is left evenly over the slices it locked (rebalancing).
--
--   Invariant: total = sum(slices.remaining) + sum(units of holds in state
--   'active') + granted.  Granted is not stored (no hot counter): it is
--   total minus the rest.
--
-- Holds: a take with a time to live.  Its units leave the slices at once (it
-- counts at once); once expires_at <= clock_timestamp() it stops counting:
-- the status reports it as remaining, and the first take that would
-- otherwise fall short returns its units to the slices (state 'expired').
-- No cleanup job is needed for correctness; wallet.reclaim_budget_holds (run
-- by wallet.run_maintenance) only tidies up in bounded batches.
--
-- Deadlock freedom: a transaction waits for one slice only, its own, and
-- only while it holds no other slice of the same budget (the fast path); the
-- gather then only tries the other slices (pg_try_advisory_xact_lock never
-- waits) and skips those another take holds at that moment.  A take that
-- waited for higher slices while holding lower ones (the former gather)
-- never deadlocked, but near exhaustion it built convoys: takes whose own
-- slice was low waited for every slice above it in turn, each held by takes
-- waiting above, and 32 racing sessions stalled for 40 s with the last units
-- locked in the low slices of the waiting takes.  Each slice is taken
-- through a transaction advisory lock of its own before its row (key: 'WB'
-- in the top 16 bits, then the campaign id, at most 2^32 - 1, and the
-- slice, at most 255): row locks alone cannot keep to that, because SELECT
-- ... FOR UPDATE SKIP LOCKED can still wait when it follows a row's update
-- chain.
-- Hold rows are locked with SKIP LOCKED by takers, under a lock_timeout
-- (the same wait could hit them; a take that times out there reclaims
-- nothing, as if the holds were locked), and whoever locks a hold row first
-- (convert, release, reclaim) holds no slice then.  A caller taking from
-- several budgets in one transaction takes them in campaign_id order.
-- ======================================================================

CREATE TABLE wallet.campaign_budgets (
    campaign_id bigint PRIMARY KEY REFERENCES wallet.campaigns,
    merchant_id bigint NOT NULL,
    unit        text NOT NULL CHECK (unit IN ('money', 'points', 'redemptions')),
    total       bigint NOT NULL CHECK (total >= 0),
    slices      int NOT NULL CHECK (slices BETWEEN 1 AND 256),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE wallet.campaign_budgets IS 'a campaign''s budget (wallet.set_campaign_budget): its unit and total; the unspent part lives in wallet.budget_slices';
COMMENT ON COLUMN wallet.campaign_budgets.campaign_id IS 'the campaign';
COMMENT ON COLUMN wallet.campaign_budgets.merchant_id IS 'merchant of the campaign (copied from it): the key to distribute by';
COMMENT ON COLUMN wallet.campaign_budgets.unit IS 'what the budget counts: money (discount value in minor units, e.g. cents), points or redemptions';
COMMENT ON COLUMN wallet.campaign_budgets.total IS 'the whole budget: granted + held + remaining';
COMMENT ON COLUMN wallet.campaign_budgets.slices IS 'number of escrow slices the unspent part is split over (fixed once set)';
COMMENT ON COLUMN wallet.campaign_budgets.created_at IS 'when the budget was first set';
COMMENT ON COLUMN wallet.campaign_budgets.updated_at IS 'when the total was last set';

CREATE TABLE wallet.budget_slices (
    campaign_id bigint NOT NULL REFERENCES wallet.campaign_budgets,
    slice       int NOT NULL,
    remaining   bigint NOT NULL CHECK (remaining >= 0),
    merchant_id bigint NOT NULL,
    PRIMARY KEY (campaign_id, slice)
);
COMMENT ON TABLE wallet.budget_slices IS 'escrow slices of a budget: the unspent units, split over several rows so that concurrent takes lock different rows';
COMMENT ON COLUMN wallet.budget_slices.campaign_id IS 'the campaign whose budget this is a slice of';
COMMENT ON COLUMN wallet.budget_slices.slice IS 'slice number, 0 to slices - 1';
COMMENT ON COLUMN wallet.budget_slices.remaining IS 'unspent units in this slice (never negative)';
COMMENT ON COLUMN wallet.budget_slices.merchant_id IS 'merchant of the campaign (copied from it): the key to distribute by';

CREATE TABLE wallet.budget_holds (
    hold_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id bigint NOT NULL REFERENCES wallet.campaign_budgets,
    units       bigint NOT NULL CHECK (units > 0),
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    state       text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'converted', 'released', 'expired')),
    closed_at   timestamptz,
    CHECK ((state = 'active') = (closed_at IS NULL)),
    merchant_id bigint NOT NULL
);
CREATE INDEX budget_holds_active_idx ON wallet.budget_holds (campaign_id, expires_at) WHERE state = 'active';
CREATE INDEX budget_holds_expiry_idx ON wallet.budget_holds (expires_at) WHERE state = 'active';
COMMENT ON TABLE wallet.budget_holds IS 'units of a budget held for a checkout with a time to live: they count at once, and stop counting when converted (then granted), released or expired';
COMMENT ON COLUMN wallet.budget_holds.hold_id IS 'hold id';
COMMENT ON COLUMN wallet.budget_holds.campaign_id IS 'the campaign whose budget the units are held from';
COMMENT ON COLUMN wallet.budget_holds.units IS 'units held';
COMMENT ON COLUMN wallet.budget_holds.created_at IS 'when the hold was made (clock time)';
COMMENT ON COLUMN wallet.budget_holds.expires_at IS 'when it stops counting unless converted (compared with clock_timestamp())';
COMMENT ON COLUMN wallet.budget_holds.state IS 'active (counts while expires_at is in the future), converted (granted), released, or expired (its units returned to the slices)';
COMMENT ON COLUMN wallet.budget_holds.closed_at IS 'when it was converted, released or its units returned; NULL while active';
COMMENT ON COLUMN wallet.budget_holds.merchant_id IS 'merchant of the campaign (copied from it): the key to distribute by';

SELECT pg_catalog.pg_extension_config_dump('wallet.campaign_budgets', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.budget_slices', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.budget_holds', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.budget_holds', 'hold_id'), '');
ALTER TABLE wallet.campaign_budgets ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.campaign_budgets USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.campaign_budgets IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
ALTER TABLE wallet.budget_slices ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.budget_slices USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.budget_slices IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
ALTER TABLE wallet.budget_holds ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.budget_holds USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.budget_holds IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TYPE wallet.budget_status AS (
    campaign_id bigint,
    unit        text,
    total       bigint,
    granted     bigint,
    held        bigint,
    remaining   bigint,
    slices      int
);
COMMENT ON TYPE wallet.budget_status IS 'a campaign budget as of the call: total = granted + held + remaining';
COMMENT ON COLUMN wallet.budget_status.campaign_id IS 'the campaign';
COMMENT ON COLUMN wallet.budget_status.unit IS 'money (minor units), points or redemptions';
COMMENT ON COLUMN wallet.budget_status.total IS 'the whole budget';
COMMENT ON COLUMN wallet.budget_status.granted IS 'units taken for good (takes and converted holds, less units given back)';
COMMENT ON COLUMN wallet.budget_status.held IS 'units of active holds that have not expired';
COMMENT ON COLUMN wallet.budget_status.remaining IS 'units still available (expired holds count here)';
COMMENT ON COLUMN wallet.budget_status.slices IS 'number of escrow slices';

------------------------------------------------------------------------------
-- Internal API for checkouts (offers call it; the caller has checked that
-- the caller acts for the campaign's merchant)
------------------------------------------------------------------------------

CREATE FUNCTION wallet_internal.budget_units_check(units bigint)
    RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF $1 IS NULL THEN
        RAISE EXCEPTION 'units must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A budget is taken from in a positive number of units.';
    END IF;
    IF $1 <= 0 THEN
        RAISE EXCEPTION 'units must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A budget is taken from in a positive number of units; %s was given.', $1);
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.budget_units_check(bigint) IS
    'internal: raise 22004 for NULL units, 22023 for zero or negative units';

-- Expired holds stop counting: marks a budget's expired active holds
-- expired and returns their units, for the caller (which holds slices of the
-- budget) to put back.  SKIP LOCKED: a hold locked by its converter or
-- releaser is theirs, and a taker must never wait for a hold row.
CREATE FUNCTION wallet_internal.budget_expire_holds(campaign_id bigint)
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET lock_timeout = '100ms'
    AS $$
DECLARE
    _back bigint;
BEGIN
    WITH x AS (
        SELECT h.hold_id FROM wallet.budget_holds h
         WHERE h.campaign_id = $1 AND h.state = 'active' AND h.expires_at <= clock_timestamp()
         FOR UPDATE SKIP LOCKED),
    y AS (
        UPDATE wallet.budget_holds h SET state = 'expired', closed_at = clock_timestamp()
          FROM x WHERE h.hold_id = x.hold_id
        RETURNING h.units)
    SELECT coalesce(sum(y.units), 0) INTO _back FROM y;
    RETURN _back;
EXCEPTION WHEN lock_not_available THEN
    -- SKIP LOCKED waited after all (see the top): nothing reclaimed
    RETURN 0;
END
$$;
COMMENT ON FUNCTION wallet_internal.budget_expire_holds(bigint) IS
    'internal: mark a budget''s expired active holds (not locked by others) expired and return the sum of their units, which the caller puts back into slices it holds';

CREATE FUNCTION wallet_internal.budget_lock_hold(hold_id bigint)
    RETURNS wallet.budget_holds
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    _h wallet.budget_holds;
BEGIN
    IF $1 IS NULL THEN
        RAISE EXCEPTION 'hold_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A budget hold is converted or released by its id.';
    END IF;
    SELECT * INTO _h FROM wallet.budget_holds h WHERE h.hold_id = $1 FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown budget hold %', $1
            USING ERRCODE = 'WL603', DETAIL = 'No row of wallet.budget_holds has this hold_id.';
    END IF;
    RETURN _h;
END
$$;
COMMENT ON FUNCTION wallet_internal.budget_lock_hold(bigint) IS
    'internal: lock a budget hold''s row and return it (22004 for a NULL id, WL603 for an unknown hold)';

-- The core: take up to units from a campaign's budget, now.
CREATE FUNCTION wallet_internal.budget_take(campaign_id bigint, units bigint, allow_partial boolean DEFAULT false)
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    _c bigint := $1;
    _u bigint := $2;
    _n int;
    _s int;
    _r bigint;
    _sl int[];
    _sum bigint;
    _take bigint;
    _left bigint;
    _cnt int;
    k int;
BEGIN
    PERFORM wallet_internal.budget_units_check(_u);
    SELECT b.slices INTO _n FROM wallet.campaign_budgets b WHERE b.campaign_id = _c;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % has no budget', _c
            USING ERRCODE = 'WL601', DETAIL = 'Set one with wallet.set_campaign_budget before taking from it.';
    END IF;
    _s := pg_backend_pid() % _n;
    -- Fast path: this backend's slice covers the take.
    PERFORM pg_advisory_xact_lock((x'5742000000000000'::bigint | (_c << 8) | _s));
    UPDATE wallet.budget_slices s SET remaining = s.remaining - _u
     WHERE s.campaign_id = _c AND s.slice = _s AND s.remaining >= _u;
    IF FOUND THEN
        RETURN _u;
    END IF;
    -- Gather: own slice first (waiting for it holds no other slice), then
    -- the others that no other take holds now, none waited for.
    SELECT s.remaining INTO _r FROM wallet.budget_slices s WHERE s.campaign_id = _c AND s.slice = _s FOR UPDATE;
    _sl := ARRAY[_s];
    _sum := _r;
    FOR k IN 0 .. _n - 1 LOOP
        EXIT WHEN _sum >= _u;
        CONTINUE WHEN k = _s;
        CONTINUE WHEN NOT pg_try_advisory_xact_lock((x'5742000000000000'::bigint | (_c << 8) | k));
        SELECT s.remaining INTO _r FROM wallet.budget_slices s WHERE s.campaign_id = _c AND s.slice = k FOR UPDATE;
        _sl := _sl || k;
        _sum := _sum + _r;
    END LOOP;
    IF _sum < _u THEN
        -- Expired holds stop counting: their units come back before a refusal.
        _sum := _sum + wallet_internal.budget_expire_holds(_c);
    END IF;
    _take := CASE WHEN _sum >= _u THEN _u WHEN allow_partial THEN _sum ELSE 0 END;
    -- What is left goes evenly over the slices locked (a dry slice is
    -- refilled), the odd units to the highest-numbered ones.
    _cnt := cardinality(_sl);
    _left := _sum - _take;
    IF _take < _u THEN
        -- Short (the budget nearly spent): what is left gathers whole in the
        -- own slice, where one later take can find it in one place.
        UPDATE wallet.budget_slices s
           SET remaining = CASE WHEN s.slice = _s THEN _left ELSE 0 END
         WHERE s.campaign_id = _c AND s.slice = ANY (_sl);
        RETURN _take;
    END IF;
    UPDATE wallet.budget_slices s
       SET remaining = _left / _cnt + CASE WHEN v.rk <= _left % _cnt THEN 1 ELSE 0 END
      FROM (SELECT x.sl, row_number() OVER (ORDER BY x.sl DESC) AS rk FROM unnest(_sl) x(sl)) v
     WHERE s.campaign_id = _c AND s.slice = v.sl;
    RETURN _take;
END
$$;
COMMENT ON FUNCTION wallet_internal.budget_take(bigint, bigint, boolean) IS
    'internal: take units from a campaign''s budget now; returns the units granted: all of them, or 0 when the budget cannot cover them (a status, not an error), or with allow_partial what is left if less; WL601 when the campaign has no budget';

-- Units back into the budget: a released or expired hold, an undone grant.
CREATE FUNCTION wallet_internal.budget_give_back(campaign_id bigint, units bigint)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    _n int;
BEGIN
    PERFORM wallet_internal.budget_units_check($2);
    SELECT b.slices INTO _n FROM wallet.campaign_budgets b WHERE b.campaign_id = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % has no budget', $1
            USING ERRCODE = 'WL601', DETAIL = 'Units can only be given back to a budget set with wallet.set_campaign_budget.';
    END IF;
    PERFORM pg_advisory_xact_lock((x'5742000000000000'::bigint | ($1 << 8) | pg_backend_pid() % _n));
    UPDATE wallet.budget_slices s SET remaining = s.remaining + $2
     WHERE s.campaign_id = $1 AND s.slice = pg_backend_pid() % _n;
END
$$;
COMMENT ON FUNCTION wallet_internal.budget_give_back(bigint, bigint) IS
    'internal: return units to a campaign''s budget (a grant undone, e.g. a refunded checkout; the caller gives back no more than it was granted)';

CREATE FUNCTION wallet_internal.budget_hold(campaign_id bigint, units bigint, ttl interval, allow_partial boolean DEFAULT false,
        OUT hold_id bigint, OUT held bigint, OUT expires_at timestamptz)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    _now timestamptz;
BEGIN
    PERFORM wallet_internal.budget_units_check($2);
    IF $3 IS NULL THEN
        RAISE EXCEPTION 'hold ttl must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A budget hold lasts a given time.';
    END IF;
    IF $3 <= interval '0' THEN
        RAISE EXCEPTION 'hold ttl must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A budget hold lasts a positive time; %s was given.', $3);
    END IF;
    held := wallet_internal.budget_take($1, $2, coalesce($4, false));
    IF held > 0 THEN
        _now := clock_timestamp();
        INSERT INTO wallet.budget_holds (campaign_id, units, created_at, expires_at, merchant_id)
        SELECT $1, held, _now, _now + $3, b.merchant_id FROM wallet.campaign_budgets b WHERE b.campaign_id = $1
        RETURNING budget_holds.hold_id, budget_holds.expires_at INTO hold_id, expires_at;
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.budget_hold(bigint, bigint, interval, boolean) IS
    'internal: hold units of a campaign''s budget for ttl (they count at once); returns the hold and the units held, or no hold and 0 units when the budget cannot cover them (with allow_partial: what is left)';

CREATE FUNCTION wallet_internal.budget_convert(hold_id bigint)
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    _h wallet.budget_holds;
    _got bigint;
BEGIN
    _h := wallet_internal.budget_lock_hold($1);
    IF _h.state = 'converted' THEN
        RETURN _h.units;
    END IF;
    IF _h.state = 'released' THEN
        RAISE EXCEPTION 'budget hold % was released', _h.hold_id
            USING ERRCODE = 'WL604', DETAIL = format('It was released at %s; take from the budget again instead.', _h.closed_at);
    END IF;
    IF _h.state = 'active' AND _h.expires_at > clock_timestamp() THEN
        UPDATE wallet.budget_holds h SET state = 'converted', closed_at = clock_timestamp() WHERE h.hold_id = _h.hold_id;
        RETURN _h.units;
    END IF;
    -- Expired: it no longer counts, so the budget decides afresh.
    IF _h.state = 'active' THEN
        UPDATE wallet.budget_holds h SET state = 'expired', closed_at = clock_timestamp() WHERE h.hold_id = _h.hold_id;
        PERFORM wallet_internal.budget_give_back(_h.campaign_id, _h.units);
    END IF;
    _got := wallet_internal.budget_take(_h.campaign_id, _h.units, false);
    IF _got > 0 THEN
        UPDATE wallet.budget_holds h SET state = 'converted', closed_at = clock_timestamp() WHERE h.hold_id = _h.hold_id;
    END IF;
    RETURN _got;
END
$$;
COMMENT ON FUNCTION wallet_internal.budget_convert(bigint) IS
    'internal: make a hold''s units granted; returns them (again, harmlessly, for a converted hold); an expired hold is taken afresh, all or nothing (0 when the budget no longer covers it); WL603 unknown hold, WL604 released hold';

CREATE FUNCTION wallet_internal.budget_release(hold_id bigint)
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    _h wallet.budget_holds;
BEGIN
    _h := wallet_internal.budget_lock_hold($1);
    IF _h.state = 'converted' THEN
        RAISE EXCEPTION 'budget hold % was converted', _h.hold_id
            USING ERRCODE = 'WL604', DETAIL = 'Its units are granted; give them back with the grant''s undo instead.';
    END IF;
    IF _h.state <> 'active' THEN
        RETURN 0;
    END IF;
    UPDATE wallet.budget_holds h SET state = 'released', closed_at = clock_timestamp() WHERE h.hold_id = _h.hold_id;
    PERFORM wallet_internal.budget_give_back(_h.campaign_id, _h.units);
    RETURN _h.units;
END
$$;
COMMENT ON FUNCTION wallet_internal.budget_release(bigint) IS
    'internal: release a hold, returning its units to the budget; returns the units returned (0 for a hold already released or expired); WL603 unknown hold, WL604 converted hold';

------------------------------------------------------------------------------
-- Admin API
------------------------------------------------------------------------------

CREATE FUNCTION wallet_internal.budget_status(campaign_id bigint)
    RETURNS wallet.budget_status
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    _now timestamptz := clock_timestamp();
    r wallet.budget_status;
    _slices bigint;
    _held bigint;
    _expired bigint;
BEGIN
    SELECT b.campaign_id, b.unit, b.total, b.slices INTO r.campaign_id, r.unit, r.total, r.slices
      FROM wallet.campaign_budgets b WHERE b.campaign_id = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % has no budget', $1
            USING ERRCODE = 'WL601', DETAIL = 'Set one with wallet.set_campaign_budget.';
    END IF;
    SELECT coalesce(sum(s.remaining), 0) INTO _slices FROM wallet.budget_slices s WHERE s.campaign_id = $1;
    SELECT coalesce(sum(h.units) FILTER (WHERE h.expires_at > _now), 0),
           coalesce(sum(h.units) FILTER (WHERE h.expires_at <= _now), 0)
      INTO _held, _expired
      FROM wallet.budget_holds h WHERE h.campaign_id = $1 AND h.state = 'active';
    r.held := _held;
    r.remaining := _slices + _expired;
    r.granted := r.total - r.remaining - r.held;
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet_internal.budget_status(bigint) IS
    'internal: a budget''s total, granted, held and remaining units as of now (WL601 when the campaign has none)';

CREATE FUNCTION wallet.campaign_budget(campaign_id bigint)
    RETURNS wallet.budget_status
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF $1 IS NULL THEN
        RAISE EXCEPTION 'campaign_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A budget is that of a campaign, named by its id.';
    END IF;
    IF NOT wallet_internal.sees_campaign($1) THEN
        RAISE EXCEPTION 'campaign % does not exist', $1
            USING ERRCODE = 'WL101', DETAIL = format('There is no campaign %s of a merchant the caller acts for.', $1), HINT = 'Create it with wallet.create_campaign.';
    END IF;
    RETURN wallet_internal.budget_status($1);
END
$$;
COMMENT ON FUNCTION wallet.campaign_budget(bigint) IS
    'a campaign''s budget as of now: unit, total, granted, held (active holds not expired), remaining; WL601 when it has none';

CREATE FUNCTION wallet.set_campaign_budget(campaign_id bigint, unit text, total bigint, slices int DEFAULT NULL)
    RETURNS wallet.budget_status
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    _c bigint := campaign_id;
    _unit text := unit;
    _total bigint := total;
    _b wallet.campaign_budgets;
    _merchant bigint;
    _sum bigint;
    _need bigint;
    _n int;
    _slices int := set_campaign_budget.slices;
    st wallet.budget_status;
BEGIN
    IF _c IS NULL OR _unit IS NULL OR _total IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN _c IS NULL THEN 'campaign_id' WHEN _unit IS NULL THEN 'unit' ELSE 'total' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A budget is set for a campaign, in a unit, to a total.';
    END IF;
    IF _unit NOT IN ('money', 'points', 'redemptions') THEN
        RAISE EXCEPTION 'unknown budget unit "%"', left(_unit, 64)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A budget counts money (minor units), points or redemptions.';
    END IF;
    IF _total < 0 THEN
        RAISE EXCEPTION 'budget total must not be negative'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('A budget is zero or more units; %s was given.', _total);
    END IF;
    IF _slices NOT BETWEEN 1 AND 256 THEN
        RAISE EXCEPTION 'budget slices must be between 1 and 256'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('A budget is split over 1 to 256 escrow slices; %s was given.', _slices);
    END IF;
    SELECT k.merchant_id INTO _merchant FROM wallet.campaigns k WHERE k.campaign_id = _c AND wallet.acts_for(k.merchant_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', _c
            USING ERRCODE = 'WL101', DETAIL = format('There is no campaign %s of a merchant the caller acts for.', _c), HINT = 'Create it with wallet.create_campaign.';
    END IF;
    -- Setters run one at a time per budget (the budget row's lock).
    INSERT INTO wallet.campaign_budgets AS b (campaign_id, merchant_id, unit, total, slices)
    VALUES (_c, _merchant, _unit, 0, coalesce(_slices, 16))
    ON CONFLICT (campaign_id) DO NOTHING;
    IF FOUND THEN
        INSERT INTO wallet.budget_slices (campaign_id, slice, remaining, merchant_id)
        SELECT _c, g, 0, _merchant FROM generate_series(0, coalesce(_slices, 16) - 1) g;
    END IF;
    SELECT * INTO _b FROM wallet.campaign_budgets b WHERE b.campaign_id = _c FOR UPDATE;
    IF _b.unit <> _unit OR _b.slices <> coalesce(_slices, _b.slices) THEN
        RAISE EXCEPTION 'the % of a budget is fixed', CASE WHEN _b.unit <> _unit THEN 'unit' ELSE 'number of slices' END
            USING ERRCODE = 'WL605',
                  DETAIL = format('Campaign %s''s budget counts %s over %s slices; only its total can change.', _c, _b.unit, _b.slices);
    END IF;
    _n := _b.slices;
    -- Every slice, in order (no slice of this budget is held here before).
    PERFORM pg_advisory_xact_lock((x'5742000000000000'::bigint | (_c << 8) | g)) FROM generate_series(0, _n - 1) g ORDER BY g;
    SELECT sum(s.remaining) INTO _sum FROM (
        SELECT s.remaining FROM wallet.budget_slices s WHERE s.campaign_id = _c ORDER BY s.slice FOR UPDATE) s;
    IF _total < _b.total THEN
        _need := _b.total - _total;
        IF _sum < _need THEN
            _sum := _sum + wallet_internal.budget_expire_holds(_c);
        END IF;
        IF _sum < _need THEN
            st := wallet_internal.budget_status(_c);
            RAISE EXCEPTION 'budget of campaign % cannot shrink to %', _c, _total
                USING ERRCODE = 'WL602',
                      DETAIL = format('%s units are granted and %s held; the total cannot go below %s.',
                                      st.granted, st.held, st.granted + st.held);
        END IF;
        _sum := _sum - _need;
    ELSE
        _sum := _sum + (_total - _b.total);
    END IF;
    UPDATE wallet.budget_slices s SET remaining = _sum / _n + CASE WHEN s.slice >= _n - _sum % _n THEN 1 ELSE 0 END
     WHERE s.campaign_id = _c;
    UPDATE wallet.campaign_budgets b SET total = _total, updated_at = now() WHERE b.campaign_id = _c;
    RETURN wallet_internal.budget_status(_c);
END
$$;
COMMENT ON FUNCTION wallet.set_campaign_budget(bigint, text, bigint, int) IS
    'set a campaign''s budget (unit money in minor units, points or redemptions; total; slices, default 16, fixed once set): growing adds units at once, shrinking takes them from what is left and is refused (WL602) below granted + held; returns the status';

CREATE FUNCTION wallet.reclaim_budget_holds(max_holds int DEFAULT 1000)
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n bigint := 0;
    r record;
    _mine bigint[] := wallet_internal.caller_merchants();   -- NULL: acts for all
BEGIN
    IF $1 IS NULL OR $1 < 1 THEN
        RAISE EXCEPTION 'max_holds must %', CASE WHEN $1 IS NULL THEN 'not be null' ELSE 'be positive' END
            USING ERRCODE = CASE WHEN $1 IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'Expired holds are tidied up at most max_holds per call.';
    END IF;
    -- Hold rows first (SKIP LOCKED: a take reclaiming them has them), then
    -- each budget's slice, budgets in campaign order.
    FOR r IN
        WITH x AS (
            SELECT h.hold_id FROM wallet.budget_holds h
             WHERE h.state = 'active' AND h.expires_at <= clock_timestamp()
               AND (_mine IS NULL OR h.merchant_id = ANY (_mine))
             ORDER BY h.expires_at LIMIT $1
             FOR UPDATE SKIP LOCKED),
        y AS (
            UPDATE wallet.budget_holds h SET state = 'expired', closed_at = clock_timestamp()
              FROM x WHERE h.hold_id = x.hold_id
            RETURNING h.campaign_id, h.units)
        SELECT y.campaign_id, sum(y.units)::bigint AS units, count(*) AS holds FROM y GROUP BY y.campaign_id ORDER BY y.campaign_id
    LOOP
        PERFORM wallet_internal.budget_give_back(r.campaign_id, r.units);
        n := n + r.holds;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet.reclaim_budget_holds(int) IS
    'return the units of up to max_holds expired budget holds (of the merchants the caller acts for; every merchant''s for the extension''s owner or a superuser) to their budgets (tidying only: takes reclaim expired holds themselves before refusing); returns the number of holds reclaimed; run by wallet.run_maintenance';

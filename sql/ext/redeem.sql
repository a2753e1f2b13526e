-- Marketing codes, redemption layer: binding codes to members, checking,
-- reserving, redeeming and undoing, with caps that hold under concurrency and
-- a brute-force guard.  Builds on sql/ext/codes.sql (type, campaigns, keys).
--
-- Concurrency design (why it is exact):
--   * Every call carrying an idempotency key first takes a transaction-level
--     advisory lock on the key, so two sessions sending the same key run one
--     after the other and the second sees the first's committed row.
--   * The brute-force guard counts failed checks in shared memory (see
--     src/guard.c), outside every transaction, so a rolled-back guess counts
--     too; deciding "throttled?" and counting the failure is one critical
--     section, so concurrent guesses cannot slip past the threshold.
--   * Caps: one counter row per code, per (campaign, member) and per campaign
--     holds the number of live redemptions, kept only while that cap is set
--     (no hot row for an uncapped public code or campaign).  Reserve, redeem
--     and undo lock these rows in that fixed order (code, member, campaign),
--     so they never deadlock with each other; under those locks they count
--     the active reservations (expires_at > clock_timestamp()), which is why
--     an expired reservation stops counting at once without a cleanup job.
--   * Lock order overall: idempotency key, reservation
--     row, ROW EXCLUSIVE on code_redemptions and code_reservations (so that
--     setting a cap, which rebuilds its counter, waits for calls that read
--     the old caps), code counter, member counter, campaign counter.
--   * Time is clock_timestamp() (the moment of the call), not now(): a long
--     transaction must not keep a reservation alive or a campaign open.

-- Advisory lock class ids (first argument of the two-int4 form), so that the
-- extension's locks do not collide with an application's bigint-keyed ones.
-- 0x574C0001.. spells "WL" 1, 2, 3.

------------------------------------------------------------------------------
-- Brute-force guard settings and failed attempts
------------------------------------------------------------------------------

CREATE TABLE wallet.code_guard_settings (
    merchant_id             bigint UNIQUE NULLS NOT DISTINCT
                            REFERENCES wallet.merchants ON DELETE CASCADE,
    max_failures_per_member int CHECK (max_failures_per_member > 0),
    max_failures_per_source int CHECK (max_failures_per_source > 0),
    failure_window          interval NOT NULL CHECK (failure_window > interval '0'),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE wallet.code_guard_settings IS
    'brute-force guard thresholds: one row per merchant overriding the global row (merchant_id NULL); without any row the built-in defaults apply (10 per member, 30 per source, 15 minutes)';
COMMENT ON COLUMN wallet.code_guard_settings.merchant_id IS 'merchant the thresholds apply to; NULL = the global default';
COMMENT ON COLUMN wallet.code_guard_settings.max_failures_per_member IS 'failed checks a member may make within the window before being throttled; NULL = no limit per member';
COMMENT ON COLUMN wallet.code_guard_settings.max_failures_per_source IS 'failed checks one source (context->>''source'') may make within the window before being throttled; NULL = no limit per source';
COMMENT ON COLUMN wallet.code_guard_settings.failure_window IS 'window over which failed checks are counted: a count starts at a member''s (or source''s) first failure and lasts this long';
COMMENT ON COLUMN wallet.code_guard_settings.updated_at IS 'when the thresholds were last set';

CREATE TABLE wallet.code_failed_attempts (
    attempt_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    attempted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    member_ref   text NOT NULL,
    source       text,
    status       text NOT NULL CHECK (status IN ('malformed', 'mistyped', 'unknown_campaign', 'forged')),
    input        text NOT NULL,
    campaign_id  bigint,
    operation    text NOT NULL CHECK (operation IN ('check', 'redeem', 'reserve')),
    merchant_id  bigint
);
CREATE INDEX code_failed_attempts_member_idx ON wallet.code_failed_attempts (member_ref, attempted_at);
CREATE INDEX code_failed_attempts_source_idx ON wallet.code_failed_attempts (source, attempted_at) WHERE source IS NOT NULL;
CREATE INDEX code_failed_attempts_at_idx ON wallet.code_failed_attempts (attempted_at);
COMMENT ON TABLE wallet.code_failed_attempts IS 'failed code checks (malformed, mistyped, unknown_campaign, forged), for forensics: written in the caller''s transaction, so a rolled-back check leaves no row (the guard counts it anyway, in shared memory); purge old rows with wallet.purge_code_attempts';
COMMENT ON COLUMN wallet.code_failed_attempts.attempt_id IS 'attempt id';
COMMENT ON COLUMN wallet.code_failed_attempts.attempted_at IS 'when the attempt was made (clock time)';
COMMENT ON COLUMN wallet.code_failed_attempts.member_ref IS 'member who made the attempt';
COMMENT ON COLUMN wallet.code_failed_attempts.source IS 'caller-supplied source (context->>''source'', first 256 characters), e.g. a device id or IP address; NULL when none was given';
COMMENT ON COLUMN wallet.code_failed_attempts.status IS 'why the check failed: malformed, mistyped, unknown_campaign or forged';
COMMENT ON COLUMN wallet.code_failed_attempts.input IS 'the text that was tried (first 64 characters), for forensics';
COMMENT ON COLUMN wallet.code_failed_attempts.campaign_id IS 'campaign id the text claimed when it decoded (forged codes, unknown campaigns), else NULL; not a foreign key since such ids need not exist';
COMMENT ON COLUMN wallet.code_failed_attempts.operation IS 'check_code, redeem_code or reserve_code';
COMMENT ON COLUMN wallet.code_failed_attempts.merchant_id IS 'the guard''s scope: the merchant whose campaign the text named, else (a text naming no campaign the caller acts for) the one merchant the caller acts for, NULL when it acts for several or all; not a foreign key, history outlives merchants';

-- The public functions run with enable_seqscan off, and so do the helpers
-- they call: every lookup here is by key, and the tables start empty; a plan
-- cached by a session while a table was small would otherwise keep scanning
-- it whole as it grows, until the next ANALYZE.
--
-- Internal helpers (their comments start with "internal:") pin search_path
-- too: anyone allowed to EXECUTE them can call them directly, with a
-- search_path of their own choosing.

-- Thresholds that apply to a merchant: its own row, else the global row, else the defaults.
CREATE FUNCTION wallet_internal.code_guard_thresholds(merchant_id bigint,
        OUT max_failures_per_member int, OUT max_failures_per_source int, OUT failure_window interval)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
BEGIN
    -- PL/pgSQL rather than SQL: its plan is cached for the session, and this
    -- runs on every check.
    SELECT g.max_failures_per_member, g.max_failures_per_source, g.failure_window
      INTO max_failures_per_member, max_failures_per_source, failure_window
      FROM wallet.code_guard_settings g
     WHERE g.merchant_id = $1 OR g.merchant_id IS NULL
     ORDER BY g.merchant_id NULLS LAST
     LIMIT 1;
    IF NOT FOUND THEN
        max_failures_per_member := 10;
        max_failures_per_source := 30;
        failure_window := interval '15 minutes';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.code_guard_thresholds(bigint) IS
    'internal (and handy for a DBA): brute-force guard thresholds in force for a merchant (its own settings, else the global ones, else the built-in defaults)';

CREATE FUNCTION wallet.set_code_guard(max_failures_per_member int, max_failures_per_source int,
                                      failure_window interval, merchant_id bigint DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    _merchant bigint := merchant_id;
BEGIN
    IF failure_window IS NULL THEN
        RAISE EXCEPTION 'failure window must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The brute-force guard counts failures over a window.';
    END IF;
    IF failure_window <= interval '0' OR failure_window > interval '100 years' THEN
        RAISE EXCEPTION 'failure window must be %', CASE WHEN failure_window <= interval '0' THEN 'positive' ELSE 'at most 100 years' END
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The brute-force guard counts failures over a positive window of at most 100 years; %s is not one.', failure_window);
    END IF;
    IF max_failures_per_member <= 0 OR max_failures_per_source <= 0 THEN
        RAISE EXCEPTION 'failure thresholds must be positive or NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A threshold is the number of failed checks allowed within the window; NULL turns that limit off.';
    END IF;
    IF _merchant IS NOT NULL AND NOT EXISTS (SELECT 1 FROM wallet.merchants m WHERE m.merchant_id = _merchant AND wallet.acts_for(m.merchant_id)) THEN
        RAISE EXCEPTION 'merchant % does not exist', _merchant
            USING ERRCODE = 'WL102',   -- as create_campaign says it
                  DETAIL = 'Guard settings can only be set for a merchant registered in wallet.merchants.';
    END IF;
    -- the global row applies to every merchant (and to texts naming none)
    IF _merchant IS NULL AND NOT wallet_internal.sees_all() THEN
        RAISE EXCEPTION 'permission denied to set the guard thresholds of every merchant'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Only the extension''s owner or a superuser sets the defaults of every merchant.',
                  HINT = 'Pass the merchant_id of a merchant you act for.';
    END IF;
    INSERT INTO wallet.code_guard_settings AS g
           (merchant_id, max_failures_per_member, max_failures_per_source, failure_window)
    VALUES (_merchant, set_code_guard.max_failures_per_member, set_code_guard.max_failures_per_source, set_code_guard.failure_window)
    ON CONFLICT (merchant_id) DO UPDATE
       SET max_failures_per_member = EXCLUDED.max_failures_per_member,
           max_failures_per_source = EXCLUDED.max_failures_per_source,
           failure_window = EXCLUDED.failure_window,
           updated_at = now();
END
$$;
COMMENT ON FUNCTION wallet.set_code_guard(int, int, interval, bigint) IS
    'set the brute-force guard thresholds (failed checks per member and per source within a window of at most 100 years; NULL = no limit) for a merchant, or globally when merchant_id is NULL (the extension''s owner or a superuser only: 42501)';

-- The guard's counters live in shared memory (src/guard.c): they are not
-- transactional, so a failed check counts even when the caller rolls back.
CREATE FUNCTION wallet_internal.code_guard_attempt(merchant_id bigint, member_ref text, source text, failed boolean,
                                          max_failures_per_member int, max_failures_per_source int,
                                          failure_window interval)
    RETURNS boolean
    AS 'MODULE_PATHNAME', 'code_guard_attempt' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION wallet_internal.code_guard_attempt(bigint, text, text, boolean, int, int, interval) IS
    'internal: whether the member or the source has reached its failed-check threshold in the merchant''s scope (throttled); if not and failed, counts one failure for both, atomically and outside the transaction';

CREATE FUNCTION wallet_internal.code_guard_forget(merchant_id bigint, member_ref text, source text)
    RETURNS bigint
    AS 'MODULE_PATHNAME', 'code_guard_forget' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION wallet_internal.code_guard_forget(bigint, text, text) IS
    'internal: drop the guard''s counters of a member and/or a source in a merchant''s scope (every scope when merchant_id is NULL), at once and outside the transaction; returns the number of counters dropped';

CREATE FUNCTION wallet.clear_code_failures(member_ref text DEFAULT NULL, source text DEFAULT NULL,
                                           merchant_id bigint DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n bigint;
    m bigint;
    -- the merchant given, else those the caller acts for (NULL: every scope)
    _mine bigint[] := CASE WHEN $3 IS NOT NULL THEN ARRAY[$3] ELSE wallet_internal.caller_merchants() END;
BEGIN
    IF $1 IS NULL AND $2 IS NULL THEN
        RAISE EXCEPTION 'member_ref and source must not both be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The failed checks of a member, of a source or of both are forgotten.';
    END IF;
    -- (as every member_ref argument; a source is stored as given, blank
    -- included, but never longer than 256 characters)
    IF btrim($1) = '' OR length($1) > 256 THEN
        RAISE EXCEPTION 'member reference must not be %', CASE WHEN btrim($1) = '' THEN 'blank' ELSE 'longer than 256 characters' END
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A member reference is a non-blank text of at most 256 characters; this one has %s.', length($1));
    END IF;
    IF $1 LIKE 'forgotten:%' THEN
        RAISE EXCEPTION 'member reference must not start with "forgotten:"'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'References starting with "forgotten:" are the pseudonyms of erased members.';
    END IF;
    IF length($2) > 256 THEN
        RAISE EXCEPTION 'source must not be longer than 256 characters'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A source is recorded with at most 256 characters; this one has %s.', length($2));
    END IF;
    IF $3 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM wallet.merchants m WHERE m.merchant_id = $3 AND wallet.acts_for(m.merchant_id)) THEN
        RAISE EXCEPTION 'merchant % does not exist', $3
            USING ERRCODE = 'WL102', DETAIL = 'Failed checks are counted per merchant registered in wallet.merchants.';
    END IF;
    IF _mine IS NULL THEN
        PERFORM wallet_internal.code_guard_forget(NULL, $1, $2);
    ELSE
        FOREACH m IN ARRAY _mine LOOP
            PERFORM wallet_internal.code_guard_forget(m, $1, $2);
        END LOOP;
    END IF;
    WITH d AS (
        DELETE FROM wallet.code_failed_attempts a
         WHERE (a.member_ref = $1 OR a.source = $2)
           AND (_mine IS NULL OR a.merchant_id = ANY (_mine))
        RETURNING 1)
    SELECT count(*) INTO n FROM d;
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet.clear_code_failures(text, text, bigint) IS
    'forget the failed checks of a member and/or a source at one merchant (when merchant_id is NULL: at every merchant the caller acts for; for the extension''s owner or a superuser, every merchant and texts naming none), e.g. after support verified them: lifts a throttle at once, even if the calling transaction rolls back; returns the number of recorded attempts removed; a blank, oversized or "forgotten:" member_ref, or a source over 256 characters, is 22023';

CREATE FUNCTION wallet.purge_code_attempts(older_than interval DEFAULT interval '1 day')
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n bigint;
    _mine bigint[] := wallet_internal.caller_merchants();
BEGIN
    IF $1 IS NULL THEN
        RAISE EXCEPTION 'older_than must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Failed attempts older than a given age are deleted; the default is one day.';
    END IF;
    IF $1 < interval '0' OR $1 > interval '100 years' THEN
        RAISE EXCEPTION 'older_than must not be negative nor longer than 100 years'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Failed attempts older than a given age, 0 to 100 years, are deleted; %s is not.', $1);
    END IF;
    WITH d AS (
        DELETE FROM wallet.code_failed_attempts a
         WHERE a.attempted_at < clock_timestamp() - $1
           AND (_mine IS NULL OR a.merchant_id = ANY (_mine))   -- a role's own merchants (NULL: acts for all)
        RETURNING 1)
    SELECT count(*) INTO n FROM d;
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet.purge_code_attempts(interval) IS
    'delete failed attempts older than the given age, 0 to 100 years (keep it longer than every failure window), of the merchants the caller acts for (every merchant''s, and those naming none, for the extension''s owner or a superuser); returns the number deleted';

------------------------------------------------------------------------------
-- Bindings, reservations, redemptions, counters
------------------------------------------------------------------------------

CREATE TABLE wallet.code_bindings (
    campaign_id bigint NOT NULL REFERENCES wallet.campaigns ON DELETE CASCADE,
    serial      bigint NOT NULL,
    code        wallet.marketing_code NOT NULL UNIQUE,
    member_ref  text NOT NULL,
    bound_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, serial)
);
CREATE INDEX code_bindings_member_idx ON wallet.code_bindings (member_ref);
COMMENT ON TABLE wallet.code_bindings IS 'codes minted by wallet.issue_code for one member: only that member can redeem them';
COMMENT ON COLUMN wallet.code_bindings.campaign_id IS 'campaign of the code';
COMMENT ON COLUMN wallet.code_bindings.serial IS 'serial of the code within its campaign';
COMMENT ON COLUMN wallet.code_bindings.code IS 'the bound code';
COMMENT ON COLUMN wallet.code_bindings.member_ref IS 'the only member who may redeem the code';
COMMENT ON COLUMN wallet.code_bindings.bound_at IS 'when the code was issued';

-- No foreign key from the redemption layer's tables (reservations,
-- redemptions, counters) to wallet.campaigns: its check would take a KEY
-- SHARE lock on the campaign's one row for every reservation and redemption,
-- and these locks (multixacts once sessions overlap) serialised a campaign's
-- redemptions.  Campaigns are never deleted (wallet_internal.campaigns_keep),
-- and every writer of these tables has read the campaign first.
CREATE TABLE wallet.code_reservations (
    reservation_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id     bigint NOT NULL,
    serial          bigint NOT NULL,
    code            wallet.marketing_code NOT NULL,
    member_ref      text NOT NULL,
    idempotency_key text NOT NULL,
    ttl             interval NOT NULL,
    reserved_at     timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    state           text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'released', 'converted')),
    closed_at       timestamptz,
    CHECK ((state = 'active') = (closed_at IS NULL)),
    merchant_id     bigint NOT NULL
);
CREATE UNIQUE INDEX code_reservations_idempotency_key_idx ON wallet.code_reservations (idempotency_key, merchant_id);
-- Active reservations are counted against each cap under that cap's lock.
CREATE INDEX code_reservations_active_code_idx ON wallet.code_reservations (campaign_id, serial, expires_at) WHERE state = 'active';
CREATE INDEX code_reservations_active_member_idx ON wallet.code_reservations (campaign_id, member_ref, expires_at) WHERE state = 'active';
CREATE INDEX code_reservations_active_campaign_idx ON wallet.code_reservations (campaign_id, expires_at) WHERE state = 'active';
COMMENT ON TABLE wallet.code_reservations IS 'code reservations: an active, unexpired reservation counts against every cap until it is converted by redeem_code, released, or expires';
COMMENT ON COLUMN wallet.code_reservations.reservation_id IS 'reservation id';
COMMENT ON COLUMN wallet.code_reservations.campaign_id IS 'campaign of the reserved code';
COMMENT ON COLUMN wallet.code_reservations.serial IS 'serial of the reserved code';
COMMENT ON COLUMN wallet.code_reservations.code IS 'the reserved code';
COMMENT ON COLUMN wallet.code_reservations.member_ref IS 'member holding the reservation';
COMMENT ON COLUMN wallet.code_reservations.idempotency_key IS 'key of reserve_code; redeem_code given the same key converts the reservation';
COMMENT ON COLUMN wallet.code_reservations.ttl IS 'time to live asked for';
COMMENT ON COLUMN wallet.code_reservations.reserved_at IS 'when the reservation was made (clock time)';
COMMENT ON COLUMN wallet.code_reservations.expires_at IS 'when it stops counting against the caps (compared with clock_timestamp())';
COMMENT ON COLUMN wallet.code_reservations.state IS 'active (counts while expires_at is in the future), released or converted';
COMMENT ON COLUMN wallet.code_reservations.closed_at IS 'when it was released or converted; NULL while active';
COMMENT ON COLUMN wallet.code_reservations.merchant_id IS 'merchant of the campaign: idempotency keys are unique per merchant';

CREATE TABLE wallet.code_redemptions (
    redemption_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id     bigint NOT NULL,
    serial          bigint NOT NULL,
    code            wallet.marketing_code NOT NULL,
    member_ref      text NOT NULL,
    idempotency_key text NOT NULL,
    context         jsonb NOT NULL DEFAULT '{}',
    reservation_id  bigint REFERENCES wallet.code_reservations,
    redeemed_at     timestamptz NOT NULL,
    undone_at       timestamptz,
    undo_reason     text,
    CHECK ((undone_at IS NULL) = (undo_reason IS NULL)),
    merchant_id     bigint NOT NULL
);
CREATE UNIQUE INDEX code_redemptions_idempotency_key_idx ON wallet.code_redemptions (idempotency_key, merchant_id);
CREATE INDEX code_redemptions_code_idx ON wallet.code_redemptions (campaign_id, serial);
-- A reservation is converted once.  Partial: the NULLs of direct redemptions
-- would all go to one leaf page, which every redemption would then lock.
CREATE UNIQUE INDEX code_redemptions_reservation_id_key ON wallet.code_redemptions (reservation_id)
    WHERE reservation_id IS NOT NULL;
CREATE INDEX code_redemptions_member_idx ON wallet.code_redemptions (member_ref, redeemed_at);
COMMENT ON TABLE wallet.code_redemptions IS 'code redemptions, one row per successful redeem_code; undo_redemption marks a row undone and frees its use';
COMMENT ON COLUMN wallet.code_redemptions.redemption_id IS 'redemption id';
COMMENT ON COLUMN wallet.code_redemptions.campaign_id IS 'campaign of the redeemed code';
COMMENT ON COLUMN wallet.code_redemptions.serial IS 'serial of the redeemed code';
COMMENT ON COLUMN wallet.code_redemptions.code IS 'the redeemed code';
COMMENT ON COLUMN wallet.code_redemptions.member_ref IS 'member who redeemed it';
COMMENT ON COLUMN wallet.code_redemptions.idempotency_key IS 'idempotency key of the call (unique per merchant): a retry with it returns this row';
COMMENT ON COLUMN wallet.code_redemptions.context IS 'caller context (e.g. source, order id), as the first call gave it: request metadata, which a retry with the same key may send otherwise';
COMMENT ON COLUMN wallet.code_redemptions.reservation_id IS 'the reservation this redemption converted, if any';
COMMENT ON COLUMN wallet.code_redemptions.redeemed_at IS 'when it was redeemed (clock time)';
COMMENT ON COLUMN wallet.code_redemptions.undone_at IS 'when it was undone; NULL while it stands';
COMMENT ON COLUMN wallet.code_redemptions.undo_reason IS 'why it was undone (e.g. order cancelled)';
COMMENT ON COLUMN wallet.code_redemptions.merchant_id IS 'merchant of the campaign: idempotency keys are unique per merchant';

-- Counters of live (not undone) redemptions.  Their rows are also the locks
-- that make each cap exact; reservations are counted beside them.
CREATE TABLE wallet.code_use_counts (
    campaign_id bigint NOT NULL,
    serial      bigint NOT NULL,
    redeemed    int NOT NULL DEFAULT 0 CHECK (redeemed >= 0),
    PRIMARY KEY (campaign_id, serial),
    merchant_id bigint NOT NULL
);
COMMENT ON TABLE wallet.code_use_counts IS 'live redemptions per code; the row is locked while a use of the code is decided';
COMMENT ON COLUMN wallet.code_use_counts.campaign_id IS 'campaign of the code';
COMMENT ON COLUMN wallet.code_use_counts.serial IS 'serial of the code';
COMMENT ON COLUMN wallet.code_use_counts.redeemed IS 'redemptions of the code not undone';
COMMENT ON COLUMN wallet.code_use_counts.merchant_id IS 'merchant of the campaign (copied from it): the key to distribute by';

CREATE TABLE wallet.member_use_counts (
    campaign_id bigint NOT NULL,
    member_ref  text NOT NULL,
    redeemed    int NOT NULL DEFAULT 0 CHECK (redeemed >= 0),
    PRIMARY KEY (campaign_id, member_ref),
    merchant_id bigint NOT NULL
);
COMMENT ON TABLE wallet.member_use_counts IS 'live redemptions per member and campaign; the row is locked while a use by the member is decided';
COMMENT ON COLUMN wallet.member_use_counts.campaign_id IS 'campaign';
COMMENT ON COLUMN wallet.member_use_counts.member_ref IS 'member';
COMMENT ON COLUMN wallet.member_use_counts.redeemed IS 'redemptions by the member in the campaign not undone';
COMMENT ON COLUMN wallet.member_use_counts.merchant_id IS 'merchant of the campaign (copied from it): the key to distribute by';

CREATE TABLE wallet.campaign_use_counts (
    campaign_id bigint PRIMARY KEY,
    redeemed    bigint NOT NULL DEFAULT 0 CHECK (redeemed >= 0),
    merchant_id bigint NOT NULL
);
COMMENT ON TABLE wallet.campaign_use_counts IS 'live redemptions per campaign; the row is locked while a use in the campaign is decided';
COMMENT ON COLUMN wallet.campaign_use_counts.campaign_id IS 'campaign';
COMMENT ON COLUMN wallet.campaign_use_counts.redeemed IS 'redemptions in the campaign not undone';
COMMENT ON COLUMN wallet.campaign_use_counts.merchant_id IS 'merchant of the campaign (copied from it): the key to distribute by';

-- pg_dump must keep the state of an extension's tables (they are user data).
SELECT pg_catalog.pg_extension_config_dump('wallet.code_guard_settings', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.code_failed_attempts', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.code_bindings', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.code_reservations', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.code_redemptions', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.code_use_counts', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.member_use_counts', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.campaign_use_counts', '');
-- ... and the identity sequences, or a restored database would hand out ids again.
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.code_failed_attempts', 'attempt_id'), '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.code_reservations', 'reservation_id'), '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.code_redemptions', 'redemption_id'), '');

------------------------------------------------------------------------------
-- Result types
------------------------------------------------------------------------------

CREATE TYPE wallet.redemption_result AS (
    status        text,
    redemption_id bigint,
    campaign_id   bigint,
    serial        bigint,
    member_ref    text,
    redeemed_at   timestamptz,
    reservation_id bigint,
    replayed      boolean
);
COMMENT ON TYPE wallet.redemption_result IS 'result of wallet.redeem_code: a status, and the redemption when the status is ok';
COMMENT ON COLUMN wallet.redemption_result.status IS 'ok, or why the code was refused (see wallet.check_code)';
COMMENT ON COLUMN wallet.redemption_result.redemption_id IS 'the redemption (wallet.code_redemptions) when ok, else NULL';
COMMENT ON COLUMN wallet.redemption_result.campaign_id IS 'campaign of the code when it is authentic and known, else NULL';
COMMENT ON COLUMN wallet.redemption_result.serial IS 'serial of the code when it is authentic and known, else NULL';
COMMENT ON COLUMN wallet.redemption_result.member_ref IS 'the member';
COMMENT ON COLUMN wallet.redemption_result.redeemed_at IS 'when it was redeemed, when ok';
COMMENT ON COLUMN wallet.redemption_result.reservation_id IS 'the reservation converted by this redemption, if any';
COMMENT ON COLUMN wallet.redemption_result.replayed IS 'true when this is the stored result of an earlier call with the same idempotency key';

CREATE TYPE wallet.reservation_result AS (
    status         text,
    reservation_id bigint,
    campaign_id    bigint,
    serial         bigint,
    member_ref     text,
    expires_at     timestamptz,
    replayed       boolean
);
COMMENT ON TYPE wallet.reservation_result IS 'result of wallet.reserve_code: a status, and the reservation when the status is ok';
COMMENT ON COLUMN wallet.reservation_result.status IS 'ok, or why the code was refused (see wallet.check_code)';
COMMENT ON COLUMN wallet.reservation_result.reservation_id IS 'the reservation (wallet.code_reservations) when ok, else NULL';
COMMENT ON COLUMN wallet.reservation_result.campaign_id IS 'campaign of the code when it is authentic and known, else NULL';
COMMENT ON COLUMN wallet.reservation_result.serial IS 'serial of the code when it is authentic and known, else NULL';
COMMENT ON COLUMN wallet.reservation_result.member_ref IS 'the member';
COMMENT ON COLUMN wallet.reservation_result.expires_at IS 'when the reservation stops counting, when ok';
COMMENT ON COLUMN wallet.reservation_result.replayed IS 'true when this is the stored result of an earlier call with the same idempotency key';

------------------------------------------------------------------------------
-- Internal helpers
------------------------------------------------------------------------------

-- Misuse (as opposed to a bad code) is an error: NULL or blank member or key,
-- a context that is not a JSON object.
CREATE FUNCTION wallet_internal.code_check_args(member_ref text, idempotency_key text, context jsonb, need_key boolean)
    RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
BEGIN
    IF member_ref IS NULL OR btrim(member_ref) = '' THEN
        RAISE EXCEPTION 'member_ref must not be null or blank'
            USING ERRCODE = CASE WHEN member_ref IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'Codes are checked and redeemed on behalf of a member, named by a non-blank reference.';
    END IF;
    IF need_key AND (idempotency_key IS NULL OR btrim(idempotency_key) = '') THEN
        RAISE EXCEPTION 'idempotency_key must not be null or blank'
            USING ERRCODE = CASE WHEN idempotency_key IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'Every redemption and reservation needs a key unique to the request, so that a retry is recognised.';
    END IF;
    -- Both are keys of btree indexes (whose entries must stay small) and come
    -- from the merchant's backend, not from the person typing a code.
    IF length(member_ref) > 256 THEN
        RAISE EXCEPTION 'member_ref is too long'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A member reference has at most 256 characters; this one has %s.', length(member_ref));
    END IF;
    IF need_key AND length(idempotency_key) > 256 THEN
        RAISE EXCEPTION 'idempotency_key is too long'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('An idempotency key has at most 256 characters; this one has %s.', length(idempotency_key));
    END IF;
    IF context IS NOT NULL AND jsonb_typeof(context) <> 'object' THEN
        RAISE EXCEPTION 'context must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The context carries named values such as "source"; a JSON %s was given.', jsonb_typeof(context));
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.code_check_args(text, text, jsonb, boolean) IS
    'internal: raise on misuse of the redemption API (NULL, blank or over 256 characters member_ref or idempotency_key, non-object context)';

-- Every check but the caps, in the documented precedence order.  Counts a
-- failed check (malformed, mistyped, unknown_campaign, forged) for the guard
-- and records it for forensics.
CREATE FUNCTION wallet_internal.code_precheck(input text, member_ref text, source text, operation text,
        OUT status text, OUT code wallet.marketing_code, OUT campaign_id bigint, OUT serial bigint,
        OUT max_per_code int, OUT max_per_member int, OUT max_total bigint)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    _pstatus text;
    _code wallet.marketing_code;
    _c record;
    _known boolean := false;
    _merchant bigint;
    _now timestamptz;
    _bound text;
    t record;
BEGIN
    IF input IS NOT NULL THEN
        SELECT p.status, p.code INTO _pstatus, _code FROM wallet.parse_code(input) p;
    END IF;
    _pstatus := coalesce(_pstatus, 'malformed');
    IF _code IS NOT NULL THEN
        -- The merchant is the guard's scope; its campaign's fields are used
        -- only once the guard has passed.
        SELECT c.merchant_id, c.starts_at, c.ends_at, c.max_redemptions_per_code,
               c.max_redemptions_per_member, c.max_redemptions_total
          INTO _c
          FROM wallet.campaigns c WHERE c.campaign_id = wallet.code_campaign(_code) AND wallet.acts_for(c.merchant_id);
        _known := FOUND;
        _merchant := _c.merchant_id;
    END IF;
    -- A text naming no campaign the caller acts for is the caller's guess:
    -- it counts at the caller's merchant when it acts for exactly one (an
    -- app), so that it neither throttles nor is forgotten at other merchants;
    -- only a caller acting for several or all counts it in the shared scope.
    IF NOT _known THEN
        _merchant := wallet_internal.sole_merchant();
    END IF;
    -- Codes are self-describing (anyone can read the campaign id out of one),
    -- so saying that a campaign does not exist gives nothing away; it is
    -- still a guess at a code that cannot exist, and counts as a failure.
    IF _pstatus IN ('ok', 'retired_key', 'forged') AND NOT _known THEN
        _pstatus := 'unknown_campaign';
    END IF;

    -- One atomic step in shared memory: throttled answers without judging
    -- the code (the answer is the same whether the MAC is right or not) and
    -- counts nothing; otherwise a failure is counted before anything else
    -- happens, and no rollback of the caller takes it back.
    SELECT * INTO t FROM wallet_internal.code_guard_thresholds(_merchant);
    IF wallet_internal.code_guard_attempt(_merchant, member_ref, source,
                                 _pstatus IN ('malformed', 'mistyped', 'unknown_campaign', 'forged'),
                                 t.max_failures_per_member, t.max_failures_per_source, t.failure_window) THEN
        status := 'throttled';
        RETURN;
    END IF;
    IF _pstatus IN ('malformed', 'mistyped', 'unknown_campaign', 'forged') THEN
        INSERT INTO wallet.code_failed_attempts (member_ref, source, status, input, campaign_id, operation, merchant_id)
        VALUES (member_ref, source, _pstatus, left(coalesce(input, ''), 64),
                CASE WHEN _code IS NOT NULL THEN wallet.code_campaign(_code) END, operation, _merchant);
        status := _pstatus;
        RETURN;
    END IF;
    code := _code;
    campaign_id := wallet.code_campaign(_code);
    serial := wallet.code_serial(_code);
    IF _pstatus <> 'ok' THEN
        status := _pstatus;   -- retired_key
        RETURN;
    END IF;
    _now := clock_timestamp();
    IF _now < _c.starts_at THEN
        status := 'not_started';
        RETURN;
    END IF;
    IF _c.ends_at IS NOT NULL AND _now >= _c.ends_at THEN
        status := 'ended';
        RETURN;
    END IF;
    SELECT b.member_ref INTO _bound FROM wallet.code_bindings b
     WHERE b.campaign_id = code_precheck.campaign_id AND b.serial = code_precheck.serial;
    IF _bound IS NOT NULL AND _bound <> member_ref THEN
        status := 'bound_to_other_member';
        RETURN;
    END IF;
    max_per_code := _c.max_redemptions_per_code;
    max_per_member := _c.max_redemptions_per_member;
    max_total := _c.max_redemptions_total;
    status := 'ok';
END
$$;
COMMENT ON FUNCTION wallet_internal.code_precheck(text, text, text, text) IS
    'internal: every check of a code but the caps (guard, format, MAC, campaign, key, window, binding), in precedence order; counts failed checks for the guard (outside the transaction) and records them for forensics';

-- Under REPEATABLE READ: did the caps change since the snapshot (src/redeem.c)?
CREATE FUNCTION wallet_internal.code_caps_unchanged(campaign_id bigint, max_per_code int, max_per_member int, max_total bigint)
    RETURNS void
    AS 'MODULE_PATHNAME', 'code_caps_unchanged' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION wallet_internal.code_caps_unchanged(bigint, int, int, bigint) IS
    'internal: raise a serialization failure (40001) unless the campaign''s latest committed caps are the given ones (for REPEATABLE READ and SERIALIZABLE, whose snapshot may predate a change)';

-- The caps of a campaign, read so that they cannot change unseen, and the
-- counter rows of the caps that are set, locked in the fixed order (code,
-- member, campaign) and created on first use.
--
-- A counter is kept only while its cap is set, so that a public code with no
-- per-code cap, or a campaign with no total cap, is not one hot row that
-- every redemption queues on.  When a cap is set on a campaign that had none,
-- the trigger wallet_internal.code_caps_recount rebuilds its counters; the ROW
-- EXCLUSIVE locks taken here first make that trigger (which takes SHARE on
-- both tables) wait for every call that read the old caps, and make every
-- later call wait for it, so no redemption is counted under the wrong caps.
CREATE FUNCTION wallet_internal.code_lock_counters(campaign_id bigint, serial bigint, member_ref text,
        OUT max_per_code int, OUT max_per_member int, OUT max_total bigint,
        OUT code_redeemed int, OUT member_redeemed int, OUT total_redeemed bigint)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    merchant bigint;
BEGIN
    LOCK TABLE wallet.code_redemptions, wallet.code_reservations IN ROW EXCLUSIVE MODE;
    IF current_setting('transaction_isolation') = 'read committed' THEN
        -- A new snapshot: sees any cap change committed before our lock.
        SELECT c.max_redemptions_per_code, c.max_redemptions_per_member, c.max_redemptions_total, c.merchant_id
          INTO max_per_code, max_per_member, max_total, merchant
          FROM wallet.campaigns c WHERE c.campaign_id = $1;
    ELSE
        -- A transaction snapshot may predate a cap change: comparing with
        -- the latest committed caps makes such a change a serialization
        -- failure instead of going unseen (without FOR SHARE, which would
        -- need UPDATE on wallet.campaigns).
        SELECT c.max_redemptions_per_code, c.max_redemptions_per_member, c.max_redemptions_total, c.merchant_id
          INTO max_per_code, max_per_member, max_total, merchant
          FROM wallet.campaigns c WHERE c.campaign_id = $1;
        PERFORM wallet_internal.code_caps_unchanged($1, max_per_code, max_per_member, max_total);
    END IF;
    IF max_per_code IS NOT NULL THEN
        SELECT u.redeemed INTO code_redeemed FROM wallet.code_use_counts u
         WHERE u.campaign_id = $1 AND u.serial = $2 FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO wallet.code_use_counts AS u (campaign_id, serial, merchant_id) VALUES ($1, $2, merchant) ON CONFLICT DO NOTHING;
            SELECT u.redeemed INTO code_redeemed FROM wallet.code_use_counts u
             WHERE u.campaign_id = $1 AND u.serial = $2 FOR UPDATE;
        END IF;
    END IF;
    IF max_per_member IS NOT NULL THEN
        -- a loop: forget_member may re-key the row we waited for to its
        -- pseudonym; the member_ref then names a new member, whose counter
        -- is created (or locked, if another call created it meanwhile)
        LOOP
            SELECT u.redeemed INTO member_redeemed FROM wallet.member_use_counts u
             WHERE u.campaign_id = $1 AND u.member_ref = $3 FOR UPDATE;
            EXIT WHEN FOUND;
            INSERT INTO wallet.member_use_counts AS u (campaign_id, member_ref, merchant_id) VALUES ($1, $3, merchant) ON CONFLICT DO NOTHING;
        END LOOP;
    END IF;
    IF max_total IS NOT NULL THEN
        SELECT u.redeemed INTO total_redeemed FROM wallet.campaign_use_counts u
         WHERE u.campaign_id = $1 FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO wallet.campaign_use_counts AS u (campaign_id, merchant_id) VALUES ($1, merchant) ON CONFLICT DO NOTHING;
            SELECT u.redeemed INTO total_redeemed FROM wallet.campaign_use_counts u
             WHERE u.campaign_id = $1 FOR UPDATE;
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.code_lock_counters(bigint, bigint, text) IS
    'internal: read a campaign''s caps safely and lock (creating on first use) the counter rows of the caps that are set, per code, per member, per campaign, in that order';

-- Add delta to the counters of the caps that are set (rows already locked).
CREATE FUNCTION wallet_internal.code_bump_counters(campaign_id bigint, serial bigint, member_ref text, delta int,
                                          per_code boolean, per_member boolean, total boolean)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
BEGIN
    IF per_code THEN
        UPDATE wallet.code_use_counts u SET redeemed = u.redeemed + $4 WHERE u.campaign_id = $1 AND u.serial = $2;
    END IF;
    IF per_member THEN
        UPDATE wallet.member_use_counts u SET redeemed = u.redeemed + $4 WHERE u.campaign_id = $1 AND u.member_ref = $3;
    END IF;
    IF total THEN
        UPDATE wallet.campaign_use_counts u SET redeemed = u.redeemed + $4 WHERE u.campaign_id = $1;
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.code_bump_counters(bigint, bigint, text, int, boolean, boolean, boolean) IS
    'internal: add delta to the per-code, per-member and per-campaign counters of live redemptions, for the caps that are set';

-- Setting a cap on a campaign that had none: rebuild that counter from the
-- redemptions, after every call that read the old caps has finished.
CREATE FUNCTION wallet_internal.code_caps_recount()
    RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
BEGIN
    LOCK TABLE wallet.code_redemptions, wallet.code_reservations IN SHARE MODE;
    IF OLD.max_redemptions_per_code IS NULL AND NEW.max_redemptions_per_code IS NOT NULL THEN
        DELETE FROM wallet.code_use_counts u WHERE u.campaign_id = NEW.campaign_id;
        INSERT INTO wallet.code_use_counts (campaign_id, serial, redeemed, merchant_id)
        SELECT d.campaign_id, d.serial, count(*), NEW.merchant_id FROM wallet.code_redemptions d
         WHERE d.campaign_id = NEW.campaign_id AND d.undone_at IS NULL
         GROUP BY d.campaign_id, d.serial;
    END IF;
    IF OLD.max_redemptions_per_member IS NULL AND NEW.max_redemptions_per_member IS NOT NULL THEN
        DELETE FROM wallet.member_use_counts u WHERE u.campaign_id = NEW.campaign_id;
        INSERT INTO wallet.member_use_counts (campaign_id, member_ref, redeemed, merchant_id)
        SELECT d.campaign_id, d.member_ref, count(*), NEW.merchant_id FROM wallet.code_redemptions d
         WHERE d.campaign_id = NEW.campaign_id AND d.undone_at IS NULL
         GROUP BY d.campaign_id, d.member_ref;
    END IF;
    IF OLD.max_redemptions_total IS NULL AND NEW.max_redemptions_total IS NOT NULL THEN
        INSERT INTO wallet.campaign_use_counts AS u (campaign_id, redeemed, merchant_id)
        SELECT NEW.campaign_id, count(*), NEW.merchant_id FROM wallet.code_redemptions d
         WHERE d.campaign_id = NEW.campaign_id AND d.undone_at IS NULL
        ON CONFLICT (campaign_id) DO UPDATE SET redeemed = EXCLUDED.redeemed;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION wallet_internal.code_caps_recount() IS
    'internal trigger: when a campaign gets a cap it did not have, rebuild that cap''s counters from the live redemptions';

CREATE TRIGGER code_caps_recount
    AFTER UPDATE OF max_redemptions_per_code, max_redemptions_per_member, max_redemptions_total ON wallet.campaigns
    FOR EACH ROW
    WHEN ((OLD.max_redemptions_per_code IS NULL AND NEW.max_redemptions_per_code IS NOT NULL)
       OR (OLD.max_redemptions_per_member IS NULL AND NEW.max_redemptions_per_member IS NOT NULL)
       OR (OLD.max_redemptions_total IS NULL AND NEW.max_redemptions_total IS NOT NULL))
    EXECUTE FUNCTION wallet_internal.code_caps_recount();
COMMENT ON TRIGGER code_caps_recount ON wallet.campaigns IS
    'counters of live redemptions are kept only while a cap is set; this rebuilds them when a cap is set';

-- The caps, given the live redemptions: counts active reservations beside
-- them.  Exact when the caller holds the counter locks (wallet_internal.code_lock_counters).
CREATE FUNCTION wallet_internal.code_caps_status(campaign_id bigint, serial bigint, member_ref text,
        max_per_code int, max_per_member int, max_total bigint,
        code_redeemed bigint, member_redeemed bigint, total_redeemed bigint)
    RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    _now timestamptz := clock_timestamp();
    _n bigint;
BEGIN
    IF max_per_code IS NOT NULL THEN
        SELECT count(*) INTO _n FROM wallet.code_reservations v
         WHERE v.state = 'active' AND v.campaign_id = $1 AND v.serial = $2 AND v.expires_at > _now;
        IF coalesce(code_redeemed, 0) + _n >= max_per_code THEN
            RETURN 'exhausted';
        END IF;
    END IF;
    IF max_per_member IS NOT NULL THEN
        SELECT count(*) INTO _n FROM wallet.code_reservations v
         WHERE v.state = 'active' AND v.campaign_id = $1 AND v.member_ref = $3 AND v.expires_at > _now;
        IF coalesce(member_redeemed, 0) + _n >= max_per_member THEN
            RETURN 'member_limit_reached';
        END IF;
    END IF;
    IF max_total IS NOT NULL THEN
        SELECT count(*) INTO _n FROM wallet.code_reservations v
         WHERE v.state = 'active' AND v.campaign_id = $1 AND v.expires_at > _now;
        IF coalesce(total_redeemed, 0) + _n >= max_total THEN
            RETURN 'campaign_limit_reached';
        END IF;
    END IF;
    RETURN 'ok';
END
$$;
COMMENT ON FUNCTION wallet_internal.code_caps_status(bigint, bigint, text, int, int, bigint, bigint, bigint, bigint) IS
    'internal: exhausted, member_limit_reached, campaign_limit_reached or ok, counting live redemptions and active unexpired reservations';

-- The idempotency fingerprint of a redemption or reservation (see
-- wallet_internal.idem_check): the operation, the code (the text in any accepted
-- spelling, canonical; NULL when it names no code) and the member, and a
-- reservation's ttl (justified: '1 day' equals '24 hours' as intervals do).
-- Not the context: a client retrying with other request metadata (source,
-- ip, device) is still retrying.
CREATE FUNCTION wallet_internal.idem_code(operation text, code text, member_ref text, ttl interval)
    RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT jsonb_build_object('operation', $1, 'code', (SELECT p.code::text FROM wallet.parse_code($2) p),
                              'member_ref', $3, 'ttl', justify_interval($4))
$$;
COMMENT ON FUNCTION wallet_internal.idem_code(text, text, text, interval) IS
    'internal: idempotency fingerprint of a redemption or reservation (operation, code in canonical form, member, ttl; not the context)';

------------------------------------------------------------------------------
-- Public API
------------------------------------------------------------------------------

CREATE FUNCTION wallet.issue_code(campaign_id bigint, member_ref text)
    RETURNS wallet.marketing_code
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    _code wallet.marketing_code;
    merchant bigint;
BEGIN
    PERFORM wallet_internal.code_check_args(member_ref, NULL, NULL, false);
    IF campaign_id IS NULL THEN
        RAISE EXCEPTION 'campaign_id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  DETAIL = 'A code is issued in a campaign, named by its id.';
    END IF;
    SELECT g INTO _code FROM wallet.generate_codes(issue_code.campaign_id, 1) g;
    merchant := (SELECT k.merchant_id FROM wallet.campaigns k WHERE k.campaign_id = issue_code.campaign_id);
    INSERT INTO wallet.code_bindings (campaign_id, serial, code, member_ref, member_id, merchant_id)
    VALUES (issue_code.campaign_id, wallet.code_serial(_code), _code, issue_code.member_ref,
            wallet_internal.member_ensure(merchant, issue_code.member_ref), merchant);
    RETURN _code;
END
$$;
COMMENT ON FUNCTION wallet.issue_code(bigint, text) IS
    'mint one code of the campaign bound to a member (created if needed, see wallet.members): only that member can redeem it (others get bound_to_other_member)';

CREATE FUNCTION wallet.check_code(code text, member_ref text, context jsonb)
    RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET enable_seqscan = off
    AS $$
#variable_conflict use_column
DECLARE
    pc record;
    _code_n int; _member_n int; _total_n bigint;
BEGIN
    -- Never throws for a bad code; misuse (no code or member) is still an error.
    IF code IS NULL THEN
        RAISE EXCEPTION 'code must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  DETAIL = 'A code is judged from the text a person typed: an empty text is malformed, a NULL is no text at all.';
    END IF;
    PERFORM wallet_internal.code_check_args(member_ref, NULL, context, false);
    SELECT * INTO pc FROM wallet_internal.code_precheck(check_code.code, check_code.member_ref, left(context->>'source', 256), 'check');
    IF pc.status <> 'ok' THEN
        RETURN pc.status;
    END IF;
    -- No locks: the answer is what redeem_code would say right now.
    SELECT u.redeemed INTO _code_n FROM wallet.code_use_counts u WHERE u.campaign_id = pc.campaign_id AND u.serial = pc.serial;
    SELECT u.redeemed INTO _member_n FROM wallet.member_use_counts u WHERE u.campaign_id = pc.campaign_id AND u.member_ref = check_code.member_ref;
    SELECT u.redeemed INTO _total_n FROM wallet.campaign_use_counts u WHERE u.campaign_id = pc.campaign_id;
    RETURN wallet_internal.code_caps_status(pc.campaign_id, pc.serial, check_code.member_ref,
                                   pc.max_per_code, pc.max_per_member, pc.max_total, _code_n, _member_n, _total_n);
END
$$;
COMMENT ON FUNCTION wallet.check_code(text, text, jsonb) IS
    'status of a code for a member, without redeeming it; never throws for a bad code (see the README for the statuses and their precedence); failed checks count for the brute-force guard';

-- The two-argument form of the interface, as its own function (a DEFAULT on
-- the context would make wallet.check_code(text, text) unresolvable as such).
CREATE FUNCTION wallet.check_code(code text, member_ref text)
    RETURNS text
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT wallet.check_code($1, $2, '{}'::jsonb)
$$;
COMMENT ON FUNCTION wallet.check_code(text, text) IS
    'check_code without a context (no source for the brute-force guard)';

CREATE FUNCTION wallet.check_code(code wallet.marketing_code, member_ref text, context jsonb DEFAULT '{}')
    RETURNS text
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT wallet.check_code($1::text, $2, $3)
$$;
COMMENT ON FUNCTION wallet.check_code(wallet.marketing_code, text, jsonb) IS
    'check_code for a value of type wallet.marketing_code (same behaviour as the text form)';

-- The whole of wallet.redeem_code(text, ...): the C function of that name
-- (src/redeem.c) runs the common case itself and hands every other call
-- (misuse, a refused code, a replay, a reservation's key) to this one.
CREATE FUNCTION wallet_internal.redeem_code_full(code text, member_ref text, idempotency_key text, context jsonb DEFAULT '{}')
    RETURNS wallet.redemption_result
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET enable_seqscan = off
    AS $$
#variable_conflict use_column
DECLARE
    _input text := code;
    _member text := member_ref;
    _key text := idempotency_key;
    _ctx jsonb := coalesce(context, '{}');
    _red wallet.code_redemptions;
    _res wallet.code_reservations;
    _convert boolean := false;
    _merchant bigint;
    _pstatus text;
    _code wallet.marketing_code;
    pc record;
    cnt record;
    _st text;
    r wallet.redemption_result;
BEGIN
    IF _input IS NULL THEN
        RAISE EXCEPTION 'code must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  DETAIL = 'A code is judged from the text a person typed: an empty text is malformed, a NULL is no text at all.';
    END IF;
    PERFORM wallet_internal.code_check_args(_member, _key, _ctx, true);
    r.member_ref := _member;
    r.replayed := false;
    _merchant := wallet_internal.code_merchant(_input);

    -- Same key: one session at a time; the later one sees the earlier's row.
    PERFORM pg_advisory_xact_lock(1464598529, hashtext(_key));
    SELECT * INTO _red FROM wallet.code_redemptions d WHERE d.idempotency_key = _key AND wallet_internal.key_scope(d.merchant_id, _merchant);
    IF FOUND THEN
        PERFORM wallet_internal.idem_check(_key, format('redemption %s', _red.redemption_id),
                                  wallet_internal.idem_code('redeem', _red.code::text, _red.member_ref, NULL),
                                  wallet_internal.idem_code('redeem', _input, _member, NULL));
        r.status := 'ok';
        r.redemption_id := _red.redemption_id;
        r.campaign_id := _red.campaign_id;
        r.serial := _red.serial;
        r.redeemed_at := _red.redeemed_at;
        r.reservation_id := _red.reservation_id;
        r.replayed := true;
        RETURN r;
    END IF;

    SELECT * INTO _res FROM wallet.code_reservations v WHERE v.idempotency_key = _key AND wallet_internal.key_scope(v.merchant_id, _merchant) FOR UPDATE;
    IF FOUND THEN
        -- the key of a reservation: redeeming it converts the reservation,
        -- so the call repeats the reservation's code and member
        PERFORM wallet_internal.idem_check(_key, format('reservation %s', _res.reservation_id),
                                  wallet_internal.idem_code('reserve', _res.code::text, _res.member_ref, _res.ttl),
                                  wallet_internal.idem_code('reserve', _input, _member, _res.ttl));
        _convert := _res.state = 'active' AND _res.expires_at > clock_timestamp();
    END IF;

    IF _convert THEN
        -- The reservation already holds its place under every cap and was
        -- made inside the campaign window; only a key retired since then
        -- (e.g. compromised) stops it.
        SELECT p.status INTO _pstatus FROM wallet.parse_code(_input) p;
        IF _pstatus <> 'ok' THEN
            r.status := _pstatus;
            RETURN r;
        END IF;
        SELECT * INTO cnt FROM wallet_internal.code_lock_counters(_res.campaign_id, _res.serial, _member);
        IF _res.expires_at <= clock_timestamp() THEN
            -- It expired while we waited for the locks: others may have taken
            -- its place meanwhile, so the caps decide (it no longer counts).
            _st := wallet_internal.code_caps_status(_res.campaign_id, _res.serial, _member, cnt.max_per_code,
                                           cnt.max_per_member, cnt.max_total,
                                           cnt.code_redeemed, cnt.member_redeemed, cnt.total_redeemed);
            IF _st <> 'ok' THEN
                r.status := _st;
                RETURN r;
            END IF;
        END IF;
        r.campaign_id := _res.campaign_id;
        r.serial := _res.serial;
        r.reservation_id := _res.reservation_id;
        _code := _res.code;
        UPDATE wallet.code_reservations v SET state = 'converted', closed_at = clock_timestamp()
         WHERE v.reservation_id = _res.reservation_id;
    ELSE
        -- A fresh redemption (or one whose reservation expired or was released):
        -- every check, then the caps under the counter locks.
        SELECT * INTO pc FROM wallet_internal.code_precheck(_input, _member, left(_ctx->>'source', 256), 'redeem');
        r.campaign_id := pc.campaign_id;
        r.serial := pc.serial;
        IF pc.status <> 'ok' THEN
            r.status := pc.status;
            RETURN r;
        END IF;
        SELECT * INTO cnt FROM wallet_internal.code_lock_counters(pc.campaign_id, pc.serial, _member);
        _st := wallet_internal.code_caps_status(pc.campaign_id, pc.serial, _member, cnt.max_per_code, cnt.max_per_member,
                                       cnt.max_total, cnt.code_redeemed, cnt.member_redeemed, cnt.total_redeemed);
        IF _st <> 'ok' THEN
            r.status := _st;
            RETURN r;
        END IF;
        _code := pc.code;
    END IF;

    -- ON CONFLICT: under REPEATABLE READ, a call with the same key that
    -- committed after the snapshot (invisible above) is a serialization
    -- failure (40001, to retry: the retry replays), not a unique violation
    INSERT INTO wallet.code_redemptions (campaign_id, serial, code, member_ref, idempotency_key, context,
                                         reservation_id, redeemed_at, merchant_id)
    VALUES (r.campaign_id, r.serial, _code, _member, _key, _ctx,
            r.reservation_id, clock_timestamp(), _merchant)
    ON CONFLICT (idempotency_key, merchant_id) DO NOTHING
    RETURNING redemption_id, redeemed_at INTO r.redemption_id, r.redeemed_at;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'could not serialize access due to a concurrent call with idempotency key "%"', _key
            USING ERRCODE = 'serialization_failure',
                  DETAIL = 'A call with the same key committed after this transaction''s snapshot was taken.',
                  HINT = 'Retry the transaction: the retry returns the first call''s result.';
    END IF;
    PERFORM wallet_internal.code_bump_counters(r.campaign_id, r.serial, _member, 1, cnt.max_per_code IS NOT NULL,
                                      cnt.max_per_member IS NOT NULL, cnt.max_total IS NOT NULL);
    r.status := 'ok';
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet_internal.redeem_code_full(text, text, text, jsonb) IS
    'internal: wallet.redeem_code in PL/pgSQL, every case: redeem a code for a member, atomically and exactly once per idempotency key; returns status ok with the redemption, or the refusal status of check_code (nothing recorded but failed checks); a retry with the same key returns the first result (replayed), the same key with other arguments is WL002; the key of an active reservation converts it';

-- In C: one pass of plans kept per session for an authentic code and a new
-- key (the common case), the PL/pgSQL function above for everything else.
CREATE FUNCTION wallet.redeem_code(code text, member_ref text, idempotency_key text, context jsonb DEFAULT '{}')
    RETURNS wallet.redemption_result
    AS 'MODULE_PATHNAME', 'redeem_code' LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET enable_seqscan = off;
COMMENT ON FUNCTION wallet.redeem_code(text, text, text, jsonb) IS
    'redeem a code for a member, atomically and exactly once per idempotency key; returns status ok with the redemption, or the refusal status of check_code (nothing recorded but failed checks); a retry with the same key returns the first result (replayed), the same key with other arguments is WL002; the key of an active reservation converts it';

CREATE FUNCTION wallet.redeem_code(code wallet.marketing_code, member_ref text, idempotency_key text, context jsonb DEFAULT '{}')
    RETURNS wallet.redemption_result
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT wallet.redeem_code($1::text, $2, $3, $4)
$$;
COMMENT ON FUNCTION wallet.redeem_code(wallet.marketing_code, text, text, jsonb) IS
    'redeem_code for a value of type wallet.marketing_code (same behaviour as the text form)';

CREATE FUNCTION wallet.undo_redemption(redemption_id bigint, reason text)
    RETURNS wallet.code_redemptions
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET enable_seqscan = off
    AS $$
#variable_conflict use_column
DECLARE
    _red wallet.code_redemptions;
    cnt record;
BEGIN
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'reason must not be null or blank'
            USING ERRCODE = CASE WHEN reason IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'An undone redemption keeps the reason for the audit trail.';
    END IF;
    IF redemption_id IS NULL THEN
        RAISE EXCEPTION 'redemption_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A redemption is undone by its id.';
    END IF;
    SELECT * INTO _red FROM wallet.code_redemptions d WHERE d.redemption_id = undo_redemption.redemption_id AND wallet_internal.sees_campaign(d.campaign_id) FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown redemption %', undo_redemption.redemption_id
            USING ERRCODE = 'WL150',
                  DETAIL = 'No row of wallet.code_redemptions has this redemption_id.';
    END IF;
    IF _red.undone_at IS NOT NULL THEN
        RAISE EXCEPTION 'redemption % is already undone', _red.redemption_id
            USING ERRCODE = 'WL151',
                  DETAIL = format('It was undone at %s (reason: %s); a use can be freed only once.', _red.undone_at, _red.undo_reason);
    END IF;
    SELECT * INTO cnt FROM wallet_internal.code_lock_counters(_red.campaign_id, _red.serial, _red.member_ref);
    PERFORM wallet_internal.code_bump_counters(_red.campaign_id, _red.serial, _red.member_ref, -1, cnt.max_per_code IS NOT NULL,
                                      cnt.max_per_member IS NOT NULL, cnt.max_total IS NOT NULL);
    UPDATE wallet.code_redemptions d SET undone_at = clock_timestamp(), undo_reason = undo_redemption.reason
     WHERE d.redemption_id = _red.redemption_id
    RETURNING * INTO _red;
    RETURN _red;
END
$$;
COMMENT ON FUNCTION wallet.undo_redemption(bigint, text) IS
    'undo a redemption (e.g. cancelled order), freeing its use under every cap; returns the undone row; undoing twice is WL151';

CREATE FUNCTION wallet.reserve_code(code text, member_ref text, idempotency_key text, ttl interval, context jsonb DEFAULT '{}')
    RETURNS wallet.reservation_result
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET enable_seqscan = off
    AS $$
#variable_conflict use_column
DECLARE
    _input text := code;
    _member text := member_ref;
    _key text := idempotency_key;
    _ttl interval := ttl;
    _ctx jsonb := coalesce(context, '{}');
    _res wallet.code_reservations;
    _red wallet.code_redemptions;
    _merchant bigint;
    pc record;
    cnt record;
    _st text;
    _now timestamptz;
    r wallet.reservation_result;
BEGIN
    IF _input IS NULL THEN
        RAISE EXCEPTION 'code must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  DETAIL = 'A code is judged from the text a person typed: an empty text is malformed, a NULL is no text at all.';
    END IF;
    PERFORM wallet_internal.code_check_args(_member, _key, _ctx, true);
    -- (offer:<order_ref>:<offer_id> names the redemptions of offers' codes at checkout)
    IF _key LIKE 'offer:%' THEN
        RAISE EXCEPTION 'idempotency key must not start with "offer:"'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Keys starting with offer: name the redemptions of offers'' codes at checkout (offer:<order_ref>:<offer_id>).';
    END IF;
    IF _ttl IS NULL THEN
        RAISE EXCEPTION 'reservation ttl must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A reservation holds a code for a given time.';
    END IF;
    IF _ttl <= interval '0' OR _ttl > interval '100 years' THEN
        RAISE EXCEPTION 'reservation ttl must be %', CASE WHEN _ttl <= interval '0' THEN 'positive' ELSE 'at most 100 years' END
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A reservation holds a code for a positive time of at most 100 years; %s was given.', _ttl);
    END IF;
    r.member_ref := _member;
    r.replayed := false;
    _merchant := wallet_internal.code_merchant(_input);

    PERFORM pg_advisory_xact_lock(1464598529, hashtext(_key));
    SELECT * INTO _res FROM wallet.code_reservations v WHERE v.idempotency_key = _key AND wallet_internal.key_scope(v.merchant_id, _merchant);
    IF FOUND THEN
        PERFORM wallet_internal.idem_check(_key, format('reservation %s', _res.reservation_id),
                                  wallet_internal.idem_code('reserve', _res.code::text, _res.member_ref, _res.ttl),
                                  wallet_internal.idem_code('reserve', _input, _member, _ttl));
        r.status := 'ok';
        r.reservation_id := _res.reservation_id;
        r.campaign_id := _res.campaign_id;
        r.serial := _res.serial;
        r.expires_at := _res.expires_at;
        r.replayed := true;
        RETURN r;
    END IF;
    SELECT * INTO _red FROM wallet.code_redemptions d WHERE d.idempotency_key = _key AND wallet_internal.key_scope(d.merchant_id, _merchant);
    IF FOUND THEN   -- a redemption's key: never a reservation's (raises)
        PERFORM wallet_internal.idem_check(_key, format('redemption %s', _red.redemption_id),
                                  wallet_internal.idem_code('redeem', _red.code::text, _red.member_ref, NULL),
                                  wallet_internal.idem_code('reserve', _input, _member, _ttl));
    END IF;

    SELECT * INTO pc FROM wallet_internal.code_precheck(_input, _member, left(_ctx->>'source', 256), 'reserve');
    r.campaign_id := pc.campaign_id;
    r.serial := pc.serial;
    IF pc.status <> 'ok' THEN
        r.status := pc.status;
        RETURN r;
    END IF;
    SELECT * INTO cnt FROM wallet_internal.code_lock_counters(pc.campaign_id, pc.serial, _member);
    _st := wallet_internal.code_caps_status(pc.campaign_id, pc.serial, _member, cnt.max_per_code, cnt.max_per_member,
                                   cnt.max_total, cnt.code_redeemed, cnt.member_redeemed, cnt.total_redeemed);
    IF _st <> 'ok' THEN
        r.status := _st;
        RETURN r;
    END IF;
    _now := clock_timestamp();
    -- ON CONFLICT: as in redeem_code_full (40001 under REPEATABLE READ)
    INSERT INTO wallet.code_reservations (campaign_id, serial, code, member_ref, idempotency_key, ttl, reserved_at, expires_at,
                                          merchant_id)
    VALUES (pc.campaign_id, pc.serial, pc.code, _member, _key, _ttl, _now, _now + _ttl, _merchant)
    ON CONFLICT (idempotency_key, merchant_id) DO NOTHING
    RETURNING reservation_id, expires_at INTO r.reservation_id, r.expires_at;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'could not serialize access due to a concurrent call with idempotency key "%"', _key
            USING ERRCODE = 'serialization_failure',
                  DETAIL = 'A call with the same key committed after this transaction''s snapshot was taken.',
                  HINT = 'Retry the transaction: the retry returns the first call''s result.';
    END IF;
    -- Touch the counters: in REPEATABLE READ a concurrent change of them then
    -- fails with a serialization error instead of going unseen.
    PERFORM wallet_internal.code_bump_counters(pc.campaign_id, pc.serial, _member, 0, cnt.max_per_code IS NOT NULL,
                                      cnt.max_per_member IS NOT NULL, cnt.max_total IS NOT NULL);
    r.status := 'ok';
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet.reserve_code(text, text, text, interval, jsonb) IS
    'reserve a code for a member for ttl (at most 100 years): the reservation counts against every cap until redeem_code with the same idempotency key converts it, release_reservation releases it, or it expires (at once, by clock time); returns the refusal status of check_code otherwise';

CREATE FUNCTION wallet.reserve_code(code wallet.marketing_code, member_ref text, idempotency_key text, ttl interval, context jsonb DEFAULT '{}')
    RETURNS wallet.reservation_result
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT wallet.reserve_code($1::text, $2, $3, $4, $5)
$$;
COMMENT ON FUNCTION wallet.reserve_code(wallet.marketing_code, text, text, interval, jsonb) IS
    'reserve_code for a value of type wallet.marketing_code (same behaviour as the text form)';

CREATE FUNCTION wallet.release_reservation(reservation_id bigint)
    RETURNS wallet.code_reservations
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET enable_seqscan = off
    AS $$
#variable_conflict use_column
DECLARE
    _res wallet.code_reservations;
BEGIN
    IF reservation_id IS NULL THEN
        RAISE EXCEPTION 'reservation_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A reservation is released by its id.';
    END IF;
    SELECT * INTO _res FROM wallet.code_reservations v WHERE v.reservation_id = release_reservation.reservation_id AND wallet_internal.sees_campaign(v.campaign_id) FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown reservation %', release_reservation.reservation_id
            USING ERRCODE = 'WL152',
                  DETAIL = 'No row of wallet.code_reservations has this reservation_id.';
    END IF;
    IF _res.state = 'converted' THEN
        RAISE EXCEPTION 'reservation % was already redeemed', _res.reservation_id
            USING ERRCODE = 'WL153',
                  DETAIL = 'A converted reservation is a redemption now; undo that with wallet.undo_redemption.';
    END IF;
    IF _res.state = 'active' THEN
        -- Releasing only lowers the counts, so no counter lock is needed.
        UPDATE wallet.code_reservations v SET state = 'released', closed_at = clock_timestamp()
         WHERE v.reservation_id = _res.reservation_id
        RETURNING * INTO _res;
    END IF;
    RETURN _res;
END
$$;
COMMENT ON FUNCTION wallet.release_reservation(bigint) IS
    'release a reservation so that it stops counting against the caps; releasing again (or an expired one) is harmless and returns the row; a converted one is WL153';

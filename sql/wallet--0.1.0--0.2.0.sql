-- wallet 0.1.0 -> 0.2.0 upgrade script.
--
-- Every change that 0.2.0 makes to the install script's parts (sql/ext/*.sql)
-- is made here too, so that ALTER EXTENSION wallet UPDATE leaves a database
-- equal to a fresh CREATE EXTENSION wallet (test/concurrency/upgrade.t proves
-- it: same objects, same definitions, comments and privileges).  New columns
-- go at the end of their table in the parts as well, since ALTER TABLE ADD
-- COLUMN can put them nowhere else.
--
-- One section per area, in dependency order; each section changes only what
-- its area owns.
\echo Use "ALTER EXTENSION wallet UPDATE TO '0.2.0'" to load this file. \quit

-- == 1. search_path pinned on every function (security review, issue 7)

-- == 2. brute-force guard and redemption (issue 7)
-- The guard counts failed checks in shared memory (src/guard.c), per
-- merchant, so that a rolled-back guess counts too; the history table keeps
-- the merchant for forensics and for clearing per merchant.  Redeeming under
-- REPEATABLE READ no longer locks the campaign row (which needed UPDATE on
-- wallet.campaigns).
ALTER TABLE wallet.code_failed_attempts ADD COLUMN merchant_id bigint;
COMMENT ON TABLE wallet.code_failed_attempts IS 'failed code checks (malformed, mistyped, unknown_campaign, forged), for forensics: written in the caller''s transaction, so a rolled-back check leaves no row (the guard counts it anyway, in shared memory); purge old rows with wallet.purge_code_attempts';
COMMENT ON COLUMN wallet.code_failed_attempts.merchant_id IS 'merchant whose campaign the text named (the guard''s scope), NULL when it named no campaign of this database; not a foreign key, history outlives merchants';
COMMENT ON COLUMN wallet.code_guard_settings.failure_window IS 'window over which failed checks are counted: a count starts at a member''s (or source''s) first failure and lasts this long';

DROP FUNCTION wallet.code_guard_throttled(bigint, text, text);
DROP FUNCTION wallet.clear_code_failures(text, text);

CREATE FUNCTION wallet.code_guard_attempt(merchant_id bigint, member_ref text, source text, failed boolean,
                                          max_failures_per_member int, max_failures_per_source int,
                                          failure_window interval)
    RETURNS boolean
    AS 'MODULE_PATHNAME', 'code_guard_attempt' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION wallet.code_guard_attempt(bigint, text, text, boolean, int, int, interval) IS
    'internal: whether the member or the source has reached its failed-check threshold in the merchant''s scope (throttled); if not and failed, counts one failure for both, atomically and outside the transaction';

CREATE FUNCTION wallet.code_guard_forget(merchant_id bigint, member_ref text, source text)
    RETURNS bigint
    AS 'MODULE_PATHNAME', 'code_guard_forget' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION wallet.code_guard_forget(bigint, text, text) IS
    'internal: drop the guard''s counters of a member and/or a source in a merchant''s scope (every scope when merchant_id is NULL), at once and outside the transaction; returns the number of counters dropped';

CREATE FUNCTION wallet.clear_code_failures(member_ref text DEFAULT NULL, source text DEFAULT NULL,
                                           merchant_id bigint DEFAULT NULL)
    RETURNS bigint
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT wallet.code_guard_forget($3, $1, $2);
    WITH d AS (
        DELETE FROM wallet.code_failed_attempts a
         WHERE (a.member_ref = $1 OR a.source = $2)
           AND ($3 IS NULL OR a.merchant_id = $3)
        RETURNING 1)
    SELECT count(*) FROM d
$$;
COMMENT ON FUNCTION wallet.clear_code_failures(text, text, bigint) IS
    'forget the failed checks of a member and/or a source at one merchant (every merchant, and texts naming none, when merchant_id is NULL), e.g. after support verified them: lifts a throttle at once, even if the calling transaction rolls back; returns the number of recorded attempts removed';

CREATE OR REPLACE FUNCTION wallet.code_precheck(input text, member_ref text, source text, operation text,
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
          FROM wallet.campaigns c WHERE c.campaign_id = wallet.code_campaign(_code);
        _known := FOUND;
        _merchant := _c.merchant_id;
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
    SELECT * INTO t FROM wallet.code_guard_thresholds(_merchant);
    IF wallet.code_guard_attempt(_merchant, member_ref, source,
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
COMMENT ON FUNCTION wallet.code_precheck(text, text, text, text) IS
    'internal: every check of a code but the caps (guard, format, MAC, campaign, key, window, binding), in precedence order; counts failed checks for the guard (outside the transaction) and records them for forensics';

CREATE FUNCTION wallet.code_caps_unchanged(campaign_id bigint, max_per_code int, max_per_member int, max_total bigint)
    RETURNS void
    AS 'MODULE_PATHNAME', 'code_caps_unchanged' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION wallet.code_caps_unchanged(bigint, int, int, bigint) IS
    'internal: raise a serialization failure (40001) unless the campaign''s latest committed caps are the given ones (for REPEATABLE READ and SERIALIZABLE, whose snapshot may predate a change)';

CREATE OR REPLACE FUNCTION wallet.code_lock_counters(campaign_id bigint, serial bigint, member_ref text,
        OUT max_per_code int, OUT max_per_member int, OUT max_total bigint,
        OUT code_redeemed int, OUT member_redeemed int, OUT total_redeemed bigint)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
BEGIN
    LOCK TABLE wallet.code_redemptions, wallet.code_reservations IN ROW EXCLUSIVE MODE;
    IF current_setting('transaction_isolation') = 'read committed' THEN
        -- A new snapshot: sees any cap change committed before our lock.
        SELECT c.max_redemptions_per_code, c.max_redemptions_per_member, c.max_redemptions_total
          INTO max_per_code, max_per_member, max_total
          FROM wallet.campaigns c WHERE c.campaign_id = $1;
    ELSE
        -- A transaction snapshot may predate a cap change: comparing with
        -- the latest committed caps makes such a change a serialization
        -- failure instead of going unseen (without FOR SHARE, which would
        -- need UPDATE on wallet.campaigns).
        SELECT c.max_redemptions_per_code, c.max_redemptions_per_member, c.max_redemptions_total
          INTO max_per_code, max_per_member, max_total
          FROM wallet.campaigns c WHERE c.campaign_id = $1;
        PERFORM wallet.code_caps_unchanged($1, max_per_code, max_per_member, max_total);
    END IF;
    IF max_per_code IS NOT NULL THEN
        SELECT u.redeemed INTO code_redeemed FROM wallet.code_use_counts u
         WHERE u.campaign_id = $1 AND u.serial = $2 FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO wallet.code_use_counts AS u (campaign_id, serial) VALUES ($1, $2) ON CONFLICT DO NOTHING;
            SELECT u.redeemed INTO code_redeemed FROM wallet.code_use_counts u
             WHERE u.campaign_id = $1 AND u.serial = $2 FOR UPDATE;
        END IF;
    END IF;
    IF max_per_member IS NOT NULL THEN
        SELECT u.redeemed INTO member_redeemed FROM wallet.member_use_counts u
         WHERE u.campaign_id = $1 AND u.member_ref = $3 FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO wallet.member_use_counts AS u (campaign_id, member_ref) VALUES ($1, $3) ON CONFLICT DO NOTHING;
            SELECT u.redeemed INTO member_redeemed FROM wallet.member_use_counts u
             WHERE u.campaign_id = $1 AND u.member_ref = $3 FOR UPDATE;
        END IF;
    END IF;
    IF max_total IS NOT NULL THEN
        SELECT u.redeemed INTO total_redeemed FROM wallet.campaign_use_counts u
         WHERE u.campaign_id = $1 FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO wallet.campaign_use_counts AS u (campaign_id) VALUES ($1) ON CONFLICT DO NOTHING;
            SELECT u.redeemed INTO total_redeemed FROM wallet.campaign_use_counts u
             WHERE u.campaign_id = $1 FOR UPDATE;
        END IF;
    END IF;
END
$$;

-- == 3. code keys bound to the installation; campaigns never deleted (issue 7)

-- == 4. points_ledger values (issue 7)

-- == 5. groundwork (issue 8)

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
-- 0.1.0 left search_path unpinned on these SQL and PL/pgSQL functions: an
-- unqualified name in them (nextval, =, ...) resolved through the caller's
-- search_path, so a function or operator planted in public or another schema
-- the caller searches first ran with the caller's privileges.  Only the pin
-- changes; their bodies are those of 0.1.0.
ALTER FUNCTION wallet.code_guard_thresholds(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.code_guard_throttled(bigint, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.code_check_args(text, text, jsonb, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.code_precheck(text, text, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.code_lock_counters(bigint, bigint, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.code_bump_counters(bigint, bigint, text, int, boolean, boolean, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.code_caps_recount() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.code_caps_status(bigint, bigint, text, int, int, bigint, bigint, bigint, bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.code_same_input(wallet.marketing_code, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.code_key_mismatch(text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.check_code(text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.check_code(wallet.marketing_code, text, jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.redeem_code(wallet.marketing_code, text, text, jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.reserve_code(wallet.marketing_code, text, text, interval, jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.policy_expiry(timestamptz, interval, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.check_posting(bigint, text, text, text, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.key_mismatch(wallet.entries) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.unknown_account(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.program_closed(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.entry_step(wallet.points_ledger, wallet.entries) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.post_entry(wallet.points_ledger, wallet.entries) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.settle_account(bigint, timestamptz, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.lock_account(bigint, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.post_once(wallet.locked_account, boolean, wallet.entries, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.create_program(bigint, text, interval, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.close_program(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.open_account(bigint, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.accrue(bigint, bigint, text, text, text, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.redeem(bigint, bigint, text, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.hold(bigint, bigint, text, interval, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.lock_hold(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.hold_not_open(bigint, wallet.entries) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.capture(bigint, bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.release(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.reverse(bigint, text, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.adjust(bigint, bigint, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.expire_points(timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.balance(bigint, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.replay_ledger(bigint, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.balance_at(bigint, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.history(bigint, timestamptz, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.program_liability(bigint, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION wallet.verify_ledger(bigint) SET search_path = pg_catalog, pg_temp;

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
-- The installation id (issue 7).  The root key is server-wide and campaign
-- ids start at 1 in every database, so keys derived from them alone would be
-- the same in every database of the server: a campaign 7 with this one's
-- prefix and MAC length, created in another database, would mint this
-- database's codes.  So every key version made since 0.2.0 is bound to the
-- database's installation id, a random uuid made by CREATE EXTENSION (or by
-- ALTER EXTENSION UPDATE from 0.1.0); docs/code-format.md has the derivation.
-- pg_dump keeps it, so a restored copy validates the same codes, and shares
-- the id: a copy that must not accept the original's codes needs a root key
-- of its own.
CREATE TABLE wallet.installation (
    installation_id uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX installation_one_row ON wallet.installation ((true));
COMMENT ON TABLE wallet.installation IS 'the one row holding this database''s installation id, bound into every code key made since 0.2.0';
COMMENT ON COLUMN wallet.installation.installation_id IS 'random id made when wallet 0.2.0 was installed here; never changes (not a secret)';
COMMENT ON COLUMN wallet.installation.created_at IS 'when the id was made';
COMMENT ON INDEX wallet.installation_one_row IS 'keeps wallet.installation to one row';
INSERT INTO wallet.installation DEFAULT VALUES;
SELECT pg_catalog.pg_extension_config_dump('wallet.installation', '');

CREATE FUNCTION wallet.installation_id() RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT i.installation_id FROM wallet.installation i $$;
COMMENT ON FUNCTION wallet.installation_id()
    IS 'this database''s installation id, bound into every code key made since 0.2.0 (no secret: with the root key it derives the keys, docs/code-format.md)';

-- UPDATE, DELETE and TRUNCATE are refused.  An INSERT replaces the id only
-- while no key version is bound to it: pg_restore loads the dumped id right
-- after CREATE EXTENSION made a new one (wallet.code_keys references this
-- table, so pg_dump loads this table's rows before the key versions).
CREATE FUNCTION wallet.installation_guard() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF EXISTS (SELECT 1 FROM wallet.code_keys k WHERE k.installation_id IS NOT NULL) THEN
            RAISE EXCEPTION 'wallet already has an installation id'
                USING ERRCODE = 'WL120',
                      DETAIL = 'Key versions are bound to the installation id, so replacing it would void every code they signed.';
        END IF;
        DELETE FROM wallet.installation;
        RETURN NEW;
    END IF;
    -- the DELETE just above, from this trigger's INSERT branch
    IF TG_OP = 'DELETE' AND pg_trigger_depth() > 1 THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the installation id of wallet cannot change'
        USING ERRCODE = 'WL120',
              DETAIL = 'Every code key made since 0.2.0 is derived from it, so changing or deleting it would void the codes they signed.',
              HINT = 'A copy of the database that must not accept the original''s codes needs a root key of its own.';
END
$$;
COMMENT ON FUNCTION wallet.installation_guard()
    IS 'trigger: refuses UPDATE, DELETE and TRUNCATE of wallet.installation; an INSERT (pg_restore) replaces the id while no key version is bound to it';
CREATE TRIGGER installation_guard BEFORE INSERT OR UPDATE OR DELETE ON wallet.installation
    FOR EACH ROW EXECUTE FUNCTION wallet.installation_guard();
CREATE TRIGGER installation_guard_truncate BEFORE TRUNCATE ON wallet.installation
    FOR EACH STATEMENT EXECUTE FUNCTION wallet.installation_guard();
COMMENT ON TRIGGER installation_guard ON wallet.installation IS 'keeps the installation id from changing once key versions are bound to it';
COMMENT ON TRIGGER installation_guard_truncate ON wallet.installation IS 'refuses TRUNCATE of the installation id';

-- The key versions made by 0.1.0 keep their legacy derivation (installation_id
-- NULL: added without default, so no row gets one); new ones are bound.
ALTER TABLE wallet.code_keys ADD COLUMN installation_id uuid REFERENCES wallet.installation;
ALTER TABLE wallet.code_keys ALTER COLUMN installation_id SET DEFAULT wallet.installation_id();
COMMENT ON COLUMN wallet.code_keys.installation_id IS 'installation id the version''s key is bound to (every version made since 0.2.0); NULL = the legacy key of a version made by 0.1.0, the same in every database';

-- A key version without installation id uses the legacy derivation of 0.1.0,
-- which is the same in every database of the server: only the table's owner
-- may create one (pg_restore of an upgraded database does), and no key
-- version's binding can change.
CREATE FUNCTION wallet.code_keys_guard() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.installation_id IS DISTINCT FROM OLD.installation_id THEN
            RAISE EXCEPTION 'the key binding of key version % of campaign % cannot change', OLD.key_version, OLD.campaign_id
                USING ERRCODE = 'WL121',
                      DETAIL = 'Every code of the version is signed with the key of its binding.',
                      HINT = 'Use wallet.rotate_code_key to make a new key version.';
        END IF;
    ELSIF NEW.installation_id IS NULL
          AND NOT pg_has_role((SELECT c.relowner FROM pg_class c WHERE c.oid = TG_RELID), 'USAGE') THEN
        RAISE EXCEPTION 'key version % of campaign % must be bound to the installation', NEW.key_version, NEW.campaign_id
            USING ERRCODE = 'WL121',
                  DETAIL = 'An unbound key version (made by wallet 0.1.0) has the same key in every database of the server; only the owner of wallet.code_keys may load one.',
                  HINT = 'Leave installation_id to its default.';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION wallet.code_keys_guard()
    IS 'trigger: new key versions are bound to the installation (unbound ones only by the table''s owner), and no binding changes';
CREATE TRIGGER code_keys_guard BEFORE INSERT OR UPDATE OF installation_id ON wallet.code_keys
    FOR EACH ROW EXECUTE FUNCTION wallet.code_keys_guard();
COMMENT ON TRIGGER code_keys_guard ON wallet.code_keys IS 'binds new key versions to the installation and keeps every binding fixed';

-- A campaign that has issued codes must never go: deleting it would cascade
-- away its key versions and redemptions, and a campaign inserted again with
-- its id would accept all its codes as never redeemed.  So no campaign is
-- deleted (end it instead), and an id given explicitly must be one the
-- identity has not handed out yet.
CREATE FUNCTION wallet.campaigns_keep() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION 'campaigns cannot be truncated'
            USING ERRCODE = 'WL122',
                  DETAIL = 'Deleting campaigns would delete their key versions and redemptions, and a campaign created again with the same id would accept their codes as never redeemed.',
                  HINT = 'End a campaign by setting its ends_at, and retire its key versions if its codes must stop validating.';
    END IF;
    RAISE EXCEPTION 'campaign % cannot be deleted', OLD.campaign_id
        USING ERRCODE = 'WL122',
              DETAIL = 'Deleting it would delete its key versions and redemptions, and a campaign created again with its id would accept its codes as never redeemed.',
              HINT = 'End the campaign by setting its ends_at, and retire its key versions if its codes must stop validating.';
END
$$;
COMMENT ON FUNCTION wallet.campaigns_keep() IS 'trigger: refuses DELETE and TRUNCATE of campaigns';
CREATE TRIGGER campaigns_keep BEFORE DELETE ON wallet.campaigns
    FOR EACH ROW EXECUTE FUNCTION wallet.campaigns_keep();
CREATE TRIGGER campaigns_keep_truncate BEFORE TRUNCATE ON wallet.campaigns
    FOR EACH STATEMENT EXECUTE FUNCTION wallet.campaigns_keep();
COMMENT ON TRIGGER campaigns_keep ON wallet.campaigns IS 'campaigns are never deleted (end them instead)';
COMMENT ON TRIGGER campaigns_keep_truncate ON wallet.campaigns IS 'campaigns are never truncated';

-- An id drawn from the identity by this insert equals the session's currval.
-- pg_restore loads the dumped ids while the identity is still fresh, or (in a
-- parallel restore) after its position but always after the campaign's
-- serial sequence, which is then not yet tied to the table (only the owner
-- can make such a sequence).  SECURITY DEFINER: reading the identity's
-- sequence belongs to the owner, not to whoever may insert campaigns.
CREATE FUNCTION wallet.campaigns_fresh_id() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    last bigint;
    called boolean;
    drawn bigint;
BEGIN
    SELECT s.last_value, s.is_called INTO last, called FROM wallet.campaigns_campaign_id_seq s;
    IF called AND NEW.campaign_id <= last THEN
        BEGIN
            drawn := currval('wallet.campaigns_campaign_id_seq'::regclass);
        EXCEPTION WHEN object_not_in_prerequisite_state THEN
            drawn := NULL;      -- this session drew none
        END;
        IF drawn IS DISTINCT FROM NEW.campaign_id
           AND NOT EXISTS (SELECT 1 FROM pg_class s
                            WHERE s.oid = to_regclass(format('wallet.%I', 'campaign_' || NEW.campaign_id || '_serials'))
                              AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                               WHERE d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.deptype = 'a'
                                                 AND d.refclassid = 'pg_class'::regclass
                                                 AND d.refobjid = 'wallet.campaigns'::regclass)) THEN
            RAISE EXCEPTION 'campaign id % was already handed out', NEW.campaign_id
                USING ERRCODE = 'WL123',
                      DETAIL = format('Campaign ids up to %s have been handed out; a campaign created again with an earlier id would accept that campaign''s codes.', last),
                      HINT = 'Leave campaign_id to its identity, as wallet.create_campaign does.';
        END IF;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION wallet.campaigns_fresh_id()
    IS 'trigger: refuses a new campaign whose explicit id the identity has already handed out';
CREATE TRIGGER campaigns_fresh_id BEFORE INSERT ON wallet.campaigns
    FOR EACH ROW EXECUTE FUNCTION wallet.campaigns_fresh_id();
COMMENT ON TRIGGER campaigns_fresh_id ON wallet.campaigns IS 'campaign ids are never reused';

-- Every campaign moves to a new key version, bound to the installation: codes
-- issued before keep validating under their legacy versions (until retired,
-- see README "Installation binding"), codes issued from now on are bound.  A
-- campaign whose 1023 key versions are used up cannot move: a warning names it.
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT k.campaign_id, max(k.key_version) AS top FROM wallet.code_keys k
              GROUP BY k.campaign_id ORDER BY k.campaign_id LOOP
        IF c.top >= 1023 THEN
            RAISE WARNING 'campaign % keeps signing codes with its unbound key version', c.campaign_id
                USING DETAIL = 'It has used all 1023 key versions.',
                      HINT = 'Create a new campaign for new codes.';
        ELSE
            INSERT INTO wallet.code_keys (campaign_id, key_version) VALUES (c.campaign_id, c.top + 1);
            UPDATE wallet.campaigns SET current_key_version = c.top + 1 WHERE campaign_id = c.campaign_id;
        END IF;
    END LOOP;
END
$$;

-- == 4. points_ledger values (issue 7)
-- C only (src/points_ledger.c, src/ledger_ops.c): no SQL definition changes.

-- == 5. groundwork (issue 8)

-- -- 5d. code text, operators, extension schema
-- Codes print two base32 check symbols and still read the one check symbol
-- of 0.1.0 (C library, docs/code-format.md 3.2); the comments say so.
COMMENT ON FUNCTION wallet.marketing_code_in(cstring) IS 'text input of wallet.marketing_code: checks the symbols, length and check symbols, also of 0.1.0 texts (not the MAC)';
COMMENT ON FUNCTION wallet.marketing_code_out(wallet.marketing_code) IS 'text output of wallet.marketing_code: prefix, base32 body and two check symbols in groups of 4';
COMMENT ON TYPE wallet.marketing_code IS 'HMAC-signed marketing code: campaign, serial, key version, prefix and truncated MAC in 24 bytes; text form like SHOP-XXXX-XXXX-XXXX-XXCC';
-- The comments promise only what exists.
COMMENT ON SCHEMA wallet IS 'digital-wallet marketing: marketing codes and points ledger';
COMMENT ON EXTENSION wallet IS 'digital-wallet marketing in the database: signed marketing codes and a points ledger';

-- 0.1.0's control file named no schema, so CREATE EXTENSION recorded the
-- extension in whatever schema was first on the creator's search_path (say
-- public), with a dependency on it: the owner of that schema could drop the
-- extension, and all its data, with DROP SCHEMA ... CASCADE.  0.2.0 records
-- it in pg_catalog (wallet.control: schema = pg_catalog), which no one can
-- drop.  ALTER EXTENSION ... SET SCHEMA refuses a non-relocatable extension,
-- so the update moves the record itself: pg_extension.extnamespace, and the
-- dependency row on the old schema goes (pg_catalog is pinned, so CREATE
-- EXTENSION records no dependency on it either).  Every object stays in
-- schema wallet.  Only a superuser may write the catalogs; the extension is
-- not trusted, so whoever updates it is one.
DO $$
DECLARE
    ext oid;
    old_schema oid;
BEGIN
    SELECT e.oid, e.extnamespace INTO ext, old_schema FROM pg_catalog.pg_extension e
     WHERE e.extname OPERATOR(pg_catalog.=) 'wallet';
    IF old_schema OPERATOR(pg_catalog.<>) 'pg_catalog'::pg_catalog.regnamespace::pg_catalog.oid THEN
        IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER) THEN
            RAISE EXCEPTION 'only a superuser can update extension wallet to 0.2.0'
                USING ERRCODE = '42501',
                      DETAIL = 'The update moves the extension''s record from schema ' || old_schema::pg_catalog.regnamespace::pg_catalog.text
                               || ' to pg_catalog, which takes writing the system catalogs.';
        END IF;
        DELETE FROM pg_catalog.pg_depend d
         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass::pg_catalog.oid
           AND d.objid OPERATOR(pg_catalog.=) ext
           AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass::pg_catalog.oid;
        UPDATE pg_catalog.pg_extension e
           SET extnamespace = 'pg_catalog'::pg_catalog.regnamespace::pg_catalog.oid
         WHERE e.oid OPERATOR(pg_catalog.=) ext;
    END IF;
END
$$;

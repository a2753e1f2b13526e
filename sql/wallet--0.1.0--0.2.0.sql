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

-- -- 5a. maintenance, expiry, balance_at, find_account
-- expire_points refuses a future as_of and settles through expire_due_accounts,
-- which expire_points_batched and run_maintenance share; balance_at no longer
-- replays the whole journal; find_account is new.  Definitions as in
-- sql/ext/ledger.sql and sql/ext/maintenance.sql.

-- as_of of an expiry run: an expire entry cannot be undone, so expiring as of
-- a future instant would take lots that are still valid for good.  "Now" is
-- the clock, which postings are stamped with (the transaction's now() is
-- never later, so the default always passes).
CREATE FUNCTION wallet.check_expiry_as_of(as_of timestamptz) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF as_of IS NULL THEN
        RAISE EXCEPTION 'as_of must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Points are expired as of a given instant, now() by default.';
    END IF;
    IF as_of > clock_timestamp() THEN
        RAISE EXCEPTION 'cannot expire points as of a future instant'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The instant %s is later than the current time; lots still valid until then would be expired for good.', as_of),
                  HINT = 'Omit as_of (it defaults to now()) or pass an instant that has passed.';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet.check_expiry_as_of(timestamptz) IS 'raises 22004 for a NULL as_of and 22023 for an as_of later than the current time (an expire entry cannot be undone)';

-- Settles due accounts as of as_of: at most batch_size of them, soonest due
-- first (all when NULL), each locked and settled in account order, so that
-- concurrent runs lock in the same order.  Returns how many accounts it
-- looked at and how many expire entries it posted.
CREATE FUNCTION wallet.expire_due_accounts(as_of timestamptz, batch_size int,
        OUT accounts int, OUT expired bigint)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    acc bigint;
    due timestamptz;
BEGIN
    accounts := 0;
    expired := 0;
    FOR acc IN SELECT d.account_id
                 FROM (SELECT a.account_id FROM wallet.accounts a WHERE a.next_event <= as_of
                        ORDER BY a.next_event LIMIT batch_size) d
                ORDER BY d.account_id LOOP
        SELECT a.next_event INTO due FROM wallet.accounts a WHERE a.account_id = acc FOR NO KEY UPDATE;
        accounts := accounts + 1;
        IF due <= as_of THEN   -- a concurrent posting may have settled it meanwhile
            expired := expired + wallet.settle_account(acc, as_of, clock_timestamp());
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION wallet.expire_due_accounts(timestamptz, int) IS 'settles at most batch_size (NULL = all) accounts due at as_of, in account order; returns the accounts looked at and the expire entries posted';

CREATE OR REPLACE FUNCTION wallet.expire_points(as_of timestamptz DEFAULT now()) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet.check_expiry_as_of(as_of);
    RETURN (wallet.expire_due_accounts(as_of, NULL)).expired;
END
$$;
COMMENT ON FUNCTION wallet.expire_points(timestamptz) IS 'posts an expire entry per account with lots expired at as_of (and a release for each lapsed hold) in the caller''s transaction; returns the number of expire entries; a second run posts nothing; as_of in the future is refused (22023); CALL wallet.expire_points_batched for many accounts';

CREATE FUNCTION wallet.find_account(program_id bigint, member_ref text) RETURNS bigint
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
BEGIN
    IF program_id IS NULL OR member_ref IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN program_id IS NULL THEN 'program_id' ELSE 'member_ref' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'An account is found by its program and the merchant app''s own user id.';
    END IF;
    IF btrim(member_ref) = '' THEN
        RAISE EXCEPTION 'member reference must not be blank'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An account is found by the merchant app''s own user id.';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.programs p WHERE p.program_id = find_account.program_id) THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
    SELECT a.account_id INTO id FROM wallet.accounts a
     WHERE a.program_id = find_account.program_id AND a.member_ref = find_account.member_ref;
    RETURN id;
END
$$;
COMMENT ON FUNCTION wallet.find_account(bigint, text) IS 'the account of member_ref in the program, or NULL when the member has none (never opens one; read-only)';

-- The balance at ts is that of the ledger after the last entry created at or
-- before ts, evaluated at ts (what replaying the journal up to ts gives).
-- Entries of an account are in time order (each is stamped after its account
-- was locked), so that entry is found by a binary search on entry_id.  Its
-- ledger changes no more until the next entry unless a lot expires or a hold
-- lapses, and the next entry tells whether one did: a posting (anything but
-- the expire and release entries of a settlement) locked the account after
-- ts and found nothing due, so nothing happened in between and the balance
-- is the last entry's balance_after.  With no entry after ts the ledger is
-- the stored one (verify_ledger proves it equals the journal's).  Only when
-- the next entry is a settlement is the journal replayed up to ts.
CREATE OR REPLACE FUNCTION wallet.balance_at(account_id bigint, ts timestamptz) RETURNS bigint
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    l wallet.points_ledger;
    lo bigint := 0;     -- last entry known to be created at or before ts (0: none)
    hi bigint;          -- first entry known to be created after ts
    p bigint;
    pt timestamptz;
    b bigint;
    nxt wallet.entries;
BEGIN
    IF ts IS NULL THEN
        RAISE EXCEPTION 'ts must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The balance is taken at a given instant.';
    END IF;
    SELECT a.ledger INTO l FROM wallet.accounts a WHERE a.account_id = balance_at.account_id;
    IF NOT FOUND THEN
        PERFORM wallet.unknown_account(account_id);
    END IF;
    SELECT x.entry_id, x.created_at INTO hi, pt FROM wallet.entries x
     WHERE x.account_id = balance_at.account_id ORDER BY x.entry_id DESC LIMIT 1;
    IF NOT FOUND OR pt <= ts THEN
        RETURN wallet.ledger_balance(l, ts);
    END IF;
    LOOP
        SELECT x.entry_id, x.created_at INTO p, pt FROM wallet.entries x
         WHERE x.account_id = balance_at.account_id AND x.entry_id > lo AND x.entry_id < hi
           AND x.entry_id >= lo + (hi - lo) / 2
         ORDER BY x.entry_id LIMIT 1;
        IF NOT FOUND THEN
            SELECT x.entry_id, x.created_at INTO p, pt FROM wallet.entries x
             WHERE x.account_id = balance_at.account_id AND x.entry_id > lo AND x.entry_id < lo + (hi - lo) / 2
             ORDER BY x.entry_id DESC LIMIT 1;
            EXIT WHEN NOT FOUND;
        END IF;
        IF pt <= ts THEN lo := p; ELSE hi := p; END IF;
    END LOOP;
    IF lo = 0 THEN
        RETURN 0;   -- before the first entry the ledger is empty
    END IF;
    SELECT * INTO nxt FROM wallet.entries x WHERE x.entry_id = hi;
    IF nxt.kind = 'expire' OR (nxt.kind = 'release' AND nxt.expires_at IS NOT NULL) THEN
        RETURN wallet.ledger_balance((wallet.replay_ledger(account_id, ts)).ledger, ts);
    END IF;
    SELECT x.balance_after INTO b FROM wallet.entries x WHERE x.entry_id = lo;
    RETURN b;
END
$$;
COMMENT ON FUNCTION wallet.balance_at(bigint, timestamptz) IS 'spendable balance at instant ts, as the journal up to ts gives it (from the last entry''s balance_after; replayed only when a lot expired or a hold lapsed between that entry and the next)';

CREATE PROCEDURE wallet.expire_points_batched(as_of timestamptz DEFAULT now(), batch_size int DEFAULT 1000,
        max_batches int DEFAULT NULL)
    LANGUAGE plpgsql
    AS $$
DECLARE
    batches int := 0;
    r record;
BEGIN
    PERFORM wallet.check_expiry_as_of(as_of);
    IF batch_size IS NULL OR batch_size OPERATOR(pg_catalog.<) 1 OR max_batches OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'batch_size and max_batches must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Due accounts are settled batch_size at a time, at most max_batches times (NULL: until none is due).';
    END IF;
    LOOP
        r := wallet.expire_due_accounts(as_of, batch_size);
        -- each batch is its own transaction (an error here when CALLed inside a transaction block)
        COMMIT;
        batches := batches OPERATOR(pg_catalog.+) 1;
        EXIT WHEN r.accounts OPERATOR(pg_catalog.<) batch_size OR batches OPERATOR(pg_catalog.=) max_batches;
    END LOOP;
END
$$;
COMMENT ON PROCEDURE wallet.expire_points_batched(timestamptz, int, int) IS 'what wallet.expire_points does, batch_size accounts per transaction (at most max_batches, NULL = until none is due); CALL it outside a transaction block; as_of in the future is refused (22023)';

-- The one entry point of every periodic job: schedule it (every minute) and
-- nothing else.  Later issues add their jobs here.  Each call does bounded
-- work; what is left over is done by the next call.
CREATE PROCEDURE wallet.run_maintenance()
    LANGUAGE plpgsql
    AS $$
BEGIN
    -- 1. expiry: at most 100 batches of 1,000 due accounts, each committed
    CALL wallet.expire_points_batched(pg_catalog.now(), 1000, 100);
    -- 2. failed code attempts older than a day (the guard's default window is 15 minutes)
    PERFORM wallet.purge_code_attempts(interval '1 day');
    COMMIT;
END
$$;
COMMENT ON PROCEDURE wallet.run_maintenance() IS 'runs every periodic job with bounded work per call, committing as it goes: expiry (up to 100,000 due accounts, 1,000 per transaction), purge of failed code attempts older than a day; later issues add their jobs here; schedule it every minute (README "Maintenance")';

-- -- 5b. one error vocabulary
-- The same fault raises the same SQLSTATE in every function: a NULL required
-- argument 22004 (STRICT dropped where it turned one into a NULL result), a
-- blank or oversized text 22023, an id naming no object the WL code of that
-- object (an unknown merchant of create_program is WL102 as in
-- create_campaign, no longer 23503; a NULL reason of a posting is 22004 and a
-- blank one 22023, no longer WL215).  Member references and idempotency keys
-- of the ledger are bounded to 256 characters like those of the redemption
-- API; a campaign id past 2^32 - 1 is WL110.  README "Upgrading" lists every
-- change.  Each function below is the definition of sql/ext/*.sql.
CREATE OR REPLACE FUNCTION wallet.create_merchant(name text) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'merchant name must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  DETAIL = 'A merchant needs a name that people can recognise.';
    END IF;
    IF btrim(name) = '' THEN
        RAISE EXCEPTION 'merchant name must not be blank'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A merchant needs a name that people can recognise.';
    END IF;
    INSERT INTO wallet.merchants (name) VALUES (name) RETURNING merchant_id INTO id;
    RETURN id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'merchant "%" already exists', name
        USING ERRCODE = 'unique_violation',
              DETAIL = 'Merchant names are unique; look the existing merchant up in wallet.merchants.';
END
$$;
COMMENT ON FUNCTION wallet.create_merchant(text) IS 'register a merchant and return its id';

CREATE OR REPLACE FUNCTION wallet.campaign_next_serial(campaign_id bigint) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    seq regclass;
    last bigint;
    called boolean;
BEGIN
    IF campaign_id IS NULL THEN
        RAISE EXCEPTION 'campaign_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The next serial is read from the sequence of a campaign, named by its id.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM wallet.campaigns c WHERE c.campaign_id = campaign_next_serial.campaign_id) THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'WL101', HINT = 'Create it with wallet.create_campaign.';
    END IF;
    seq := to_regclass(format('wallet.%I', 'campaign_' || campaign_id || '_serials'));
    IF seq IS NULL THEN
        RAISE EXCEPTION 'campaign % has no serial number sequence', campaign_id
            USING ERRCODE = 'WL109',
                  DETAIL = format('The sequence wallet.campaign_%s_serials that hands out the campaign''s serial numbers does not exist.', campaign_id);
    END IF;
    EXECUTE format('SELECT last_value, is_called FROM %s', seq) INTO last, called;
    RETURN CASE WHEN called THEN last + 1 ELSE last END;
END
$$;
COMMENT ON FUNCTION wallet.campaign_next_serial(bigint)
    IS 'first serial number of the campaign not yet handed out by wallet.generate_codes (2^38 when none is left); reads the campaign''s sequence';

CREATE OR REPLACE FUNCTION wallet.create_campaign(
    merchant_id bigint,
    name text,
    prefix text DEFAULT NULL,
    mac_bits int DEFAULT 40,
    starts_at timestamptz DEFAULT now(),
    ends_at timestamptz DEFAULT NULL,
    max_redemptions_per_code int DEFAULT 1,
    max_redemptions_per_member int DEFAULT NULL,
    max_redemptions_total bigint DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
    pfx text := upper(prefix);
BEGIN
    IF merchant_id IS NULL THEN
        RAISE EXCEPTION 'merchant_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Every campaign belongs to a merchant.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM wallet.merchants m WHERE m.merchant_id = create_campaign.merchant_id) THEN
        RAISE EXCEPTION 'merchant % does not exist', merchant_id
            USING ERRCODE = 'WL102', HINT = 'Register the merchant with wallet.create_merchant first.';
    END IF;
    IF name IS NULL THEN
        RAISE EXCEPTION 'campaign name must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A campaign needs a name that people can recognise.';
    END IF;
    IF btrim(name) = '' THEN
        RAISE EXCEPTION 'campaign name must not be blank'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A campaign needs a name that people can recognise.';
    END IF;
    IF pfx IS NOT NULL AND pfx !~ '^[A-Z0-9]{1,8}$' THEN
        RAISE EXCEPTION 'invalid campaign prefix "%"', prefix
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A prefix has 1 to 8 characters, each a letter A to Z or a digit 0 to 9.',
                  HINT = 'Pass NULL for codes without a prefix.';
    END IF;
    IF mac_bits IS NULL THEN
        RAISE EXCEPTION 'mac_bits must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Every code of a campaign carries a MAC of its length; the default is 40 bits.';
    END IF;
    IF mac_bits NOT BETWEEN 32 AND 64 THEN
        RAISE EXCEPTION 'mac_bits must be between 32 and 64, not %', mac_bits
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'The MAC length sets how hard codes are to guess: one random code in 2^mac_bits is accepted.';
    END IF;
    IF starts_at IS NULL THEN
        RAISE EXCEPTION 'starts_at must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A campaign needs a start time; the default is now().';
    END IF;
    IF ends_at IS NOT NULL AND ends_at <= starts_at THEN
        RAISE EXCEPTION 'ends_at must be after starts_at'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The campaign would start at %s and end at %s.', starts_at, ends_at);
    END IF;
    IF max_redemptions_per_code <= 0 THEN
        RAISE EXCEPTION 'max_redemptions_per_code must be positive, not %', max_redemptions_per_code
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Pass NULL for no limit per code.';
    END IF;
    IF max_redemptions_per_member <= 0 THEN
        RAISE EXCEPTION 'max_redemptions_per_member must be positive, not %', max_redemptions_per_member
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Pass NULL for no limit per member.';
    END IF;
    IF max_redemptions_total <= 0 THEN
        RAISE EXCEPTION 'max_redemptions_total must be positive, not %', max_redemptions_total
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Pass NULL for no limit on the whole campaign.';
    END IF;

    BEGIN
        INSERT INTO wallet.campaigns AS c (merchant_id, name, prefix, mac_bits, starts_at, ends_at,
                                           max_redemptions_per_code, max_redemptions_per_member, max_redemptions_total)
        VALUES (create_campaign.merchant_id, create_campaign.name, pfx, create_campaign.mac_bits,
                create_campaign.starts_at, create_campaign.ends_at, create_campaign.max_redemptions_per_code,
                create_campaign.max_redemptions_per_member, create_campaign.max_redemptions_total)
        RETURNING c.campaign_id INTO id;
    EXCEPTION WHEN sequence_generator_limit_exceeded THEN
        -- the identity stops at 2^32 - 1, the largest id a code can carry
        RAISE EXCEPTION 'campaign ids are exhausted'
            USING ERRCODE = 'WL110',
                  DETAIL = 'A code carries its campaign id in 32 bits, and every id up to 4294967295 has been handed out.',
                  HINT = 'Campaign ids are never reused; keep using the campaigns that exist.';
    END;
    INSERT INTO wallet.code_keys (campaign_id, key_version) VALUES (id, 1);
    RETURN id;
END
$$;
COMMENT ON FUNCTION wallet.create_campaign(bigint, text, text, int, timestamptz, timestamptz, int, int, bigint)
    IS 'create a campaign of a merchant (with key version 1) and return its id';

CREATE OR REPLACE FUNCTION wallet.rotate_code_key(campaign_id bigint) RETURNS int
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v int;
BEGIN
    IF campaign_id IS NULL THEN
        RAISE EXCEPTION 'campaign_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A key is rotated in a campaign, named by its id.';
    END IF;
    SELECT c.current_key_version INTO v FROM wallet.campaigns c
     WHERE c.campaign_id = rotate_code_key.campaign_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'WL101', HINT = 'Create it with wallet.create_campaign.';
    END IF;
    IF v >= 1023 THEN
        RAISE EXCEPTION 'campaign % has used all 1023 key versions', campaign_id
            USING ERRCODE = 'WL105', DETAIL = 'A code carries its key version in 10 bits.',
                  HINT = 'Create a new campaign.';
    END IF;
    v := v + 1;
    INSERT INTO wallet.code_keys (campaign_id, key_version) VALUES (rotate_code_key.campaign_id, v);
    UPDATE wallet.campaigns c SET current_key_version = v WHERE c.campaign_id = rotate_code_key.campaign_id;
    RETURN v;
END
$$;
COMMENT ON FUNCTION wallet.rotate_code_key(bigint)
    IS 'make the next key version sign new codes; codes of older versions keep validating until retired; returns the new version';

CREATE OR REPLACE FUNCTION wallet.retire_code_key(campaign_id bigint, key_version int) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v int;
BEGIN
    IF campaign_id IS NULL OR key_version IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN campaign_id IS NULL THEN 'campaign_id' ELSE 'key_version' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A key version is retired in a campaign, both named by number.';
    END IF;
    SELECT c.current_key_version INTO v FROM wallet.campaigns c
     WHERE c.campaign_id = retire_code_key.campaign_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'WL101', HINT = 'Create it with wallet.create_campaign.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM wallet.code_keys k
                    WHERE k.campaign_id = retire_code_key.campaign_id AND k.key_version = retire_code_key.key_version) THEN
        RAISE EXCEPTION 'campaign % has no key version %', campaign_id, key_version
            USING ERRCODE = 'WL103', DETAIL = format('Its versions are 1 to %s.', v);
    END IF;
    IF key_version = v THEN
        RAISE EXCEPTION 'key version % is the current one of campaign %', key_version, campaign_id
            USING ERRCODE = 'WL104', DETAIL = 'New codes are signed with the current version, so it cannot be retired.',
                  HINT = 'Call wallet.rotate_code_key first.';
    END IF;
    -- retiring twice keeps the first retirement time
    UPDATE wallet.code_keys k SET retired_at = now()
     WHERE k.campaign_id = retire_code_key.campaign_id AND k.key_version = retire_code_key.key_version
       AND k.retired_at IS NULL;
END
$$;
COMMENT ON FUNCTION wallet.retire_code_key(bigint, int)
    IS 'retire a key version of a campaign: its codes stop validating (status retired_key); not the current version';

CREATE OR REPLACE FUNCTION wallet.generate_codes(campaign_id bigint, n int) RETURNS SETOF wallet.marketing_code
    AS 'MODULE_PATHNAME', 'generate_codes' LANGUAGE C VOLATILE ROWS 1000;
COMMENT ON FUNCTION wallet.generate_codes(bigint, int)
    IS 'n new codes of a campaign; its serials are reserved from the campaign''s sequence, never handed out again even if the transaction rolls back; nothing is stored per code';

CREATE OR REPLACE FUNCTION wallet.parse_code(input text, OUT status text, OUT code wallet.marketing_code)
    AS 'MODULE_PATHNAME', 'parse_code' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION wallet.parse_code(text)
    IS 'reads and authenticates a code without raising for bad input: status ok, malformed, mistyped, forged or retired_key; code set unless malformed or mistyped';

CREATE OR REPLACE FUNCTION wallet.set_code_guard(max_failures_per_member int, max_failures_per_source int,
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
    IF failure_window <= interval '0' THEN
        RAISE EXCEPTION 'failure window must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The brute-force guard counts failures over a window; %s is not a positive interval.', failure_window);
    END IF;
    IF max_failures_per_member <= 0 OR max_failures_per_source <= 0 THEN
        RAISE EXCEPTION 'failure thresholds must be positive or NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A threshold is the number of failed checks allowed within the window; NULL turns that limit off.';
    END IF;
    IF _merchant IS NOT NULL AND NOT EXISTS (SELECT 1 FROM wallet.merchants m WHERE m.merchant_id = _merchant) THEN
        RAISE EXCEPTION 'merchant % does not exist', _merchant
            USING ERRCODE = 'WL102',   -- as create_campaign says it
                  DETAIL = 'Guard settings can only be set for a merchant registered in wallet.merchants.';
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
    'set the brute-force guard thresholds (failed checks per member and per source within a window; NULL = no limit) for a merchant, or globally when merchant_id is NULL';

CREATE OR REPLACE FUNCTION wallet.clear_code_failures(member_ref text DEFAULT NULL, source text DEFAULT NULL,
                                           merchant_id bigint DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n bigint;
BEGIN
    IF $1 IS NULL AND $2 IS NULL THEN
        RAISE EXCEPTION 'member_ref and source must not both be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The failed checks of a member, of a source or of both are forgotten.';
    END IF;
    IF $3 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM wallet.merchants m WHERE m.merchant_id = $3) THEN
        RAISE EXCEPTION 'merchant % does not exist', $3
            USING ERRCODE = 'WL102', DETAIL = 'Failed checks are counted per merchant registered in wallet.merchants.';
    END IF;
    PERFORM wallet.code_guard_forget($3, $1, $2);
    WITH d AS (
        DELETE FROM wallet.code_failed_attempts a
         WHERE (a.member_ref = $1 OR a.source = $2)
           AND ($3 IS NULL OR a.merchant_id = $3)
        RETURNING 1)
    SELECT count(*) INTO n FROM d;
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet.clear_code_failures(text, text, bigint) IS
    'forget the failed checks of a member and/or a source at one merchant (every merchant, and texts naming none, when merchant_id is NULL), e.g. after support verified them: lifts a throttle at once, even if the calling transaction rolls back; returns the number of recorded attempts removed';

CREATE OR REPLACE FUNCTION wallet.purge_code_attempts(older_than interval DEFAULT interval '1 day')
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n bigint;
BEGIN
    IF $1 IS NULL THEN
        RAISE EXCEPTION 'older_than must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Failed attempts older than a given age are deleted; the default is one day.';
    END IF;
    WITH d AS (
        DELETE FROM wallet.code_failed_attempts a
         WHERE a.attempted_at < clock_timestamp() - $1
        RETURNING 1)
    SELECT count(*) INTO n FROM d;
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet.purge_code_attempts(interval) IS
    'delete failed attempts older than the given age (keep it longer than every failure window); returns the number deleted';

CREATE OR REPLACE FUNCTION wallet.check_code(code text, member_ref text, context jsonb)
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
    PERFORM wallet.code_check_args(member_ref, NULL, context, false);
    SELECT * INTO pc FROM wallet.code_precheck(check_code.code, check_code.member_ref, left(context->>'source', 256), 'check');
    IF pc.status <> 'ok' THEN
        RETURN pc.status;
    END IF;
    -- No locks: the answer is what redeem_code would say right now.
    SELECT u.redeemed INTO _code_n FROM wallet.code_use_counts u WHERE u.campaign_id = pc.campaign_id AND u.serial = pc.serial;
    SELECT u.redeemed INTO _member_n FROM wallet.member_use_counts u WHERE u.campaign_id = pc.campaign_id AND u.member_ref = check_code.member_ref;
    SELECT u.redeemed INTO _total_n FROM wallet.campaign_use_counts u WHERE u.campaign_id = pc.campaign_id;
    RETURN wallet.code_caps_status(pc.campaign_id, pc.serial, check_code.member_ref,
                                   pc.max_per_code, pc.max_per_member, pc.max_total, _code_n, _member_n, _total_n);
END
$$;
COMMENT ON FUNCTION wallet.check_code(text, text, jsonb) IS
    'status of a code for a member, without redeeming it; never throws for a bad code (see the README for the statuses and their precedence); failed checks count for the brute-force guard';

CREATE OR REPLACE FUNCTION wallet.redeem_code(code text, member_ref text, idempotency_key text, context jsonb DEFAULT '{}')
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
    PERFORM wallet.code_check_args(_member, _key, _ctx, true);
    r.member_ref := _member;
    r.replayed := false;

    -- Same key: one session at a time; the later one sees the earlier's row.
    PERFORM pg_advisory_xact_lock(1464598529, hashtext(_key));
    SELECT * INTO _red FROM wallet.code_redemptions d WHERE d.idempotency_key = _key;
    IF FOUND THEN
        IF _red.member_ref <> _member OR _red.context <> _ctx OR NOT wallet.code_same_input(_red.code, _input) THEN
            PERFORM wallet.code_key_mismatch(_key, 'redemption');
        END IF;
        RETURN ROW('ok', _red.redemption_id, _red.campaign_id, _red.serial, _red.member_ref,
                   _red.redeemed_at, _red.reservation_id, true)::wallet.redemption_result;
    END IF;

    SELECT * INTO _res FROM wallet.code_reservations v WHERE v.idempotency_key = _key FOR UPDATE;
    IF FOUND THEN
        IF _res.member_ref <> _member OR NOT wallet.code_same_input(_res.code, _input) THEN
            PERFORM wallet.code_key_mismatch(_key, 'reservation');
        END IF;
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
        SELECT * INTO cnt FROM wallet.code_lock_counters(_res.campaign_id, _res.serial, _member);
        IF _res.expires_at <= clock_timestamp() THEN
            -- It expired while we waited for the locks: others may have taken
            -- its place meanwhile, so the caps decide (it no longer counts).
            _st := wallet.code_caps_status(_res.campaign_id, _res.serial, _member, cnt.max_per_code,
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
        SELECT * INTO pc FROM wallet.code_precheck(_input, _member, left(_ctx->>'source', 256), 'redeem');
        r.campaign_id := pc.campaign_id;
        r.serial := pc.serial;
        IF pc.status <> 'ok' THEN
            r.status := pc.status;
            RETURN r;
        END IF;
        SELECT * INTO cnt FROM wallet.code_lock_counters(pc.campaign_id, pc.serial, _member);
        _st := wallet.code_caps_status(pc.campaign_id, pc.serial, _member, cnt.max_per_code, cnt.max_per_member,
                                       cnt.max_total, cnt.code_redeemed, cnt.member_redeemed, cnt.total_redeemed);
        IF _st <> 'ok' THEN
            r.status := _st;
            RETURN r;
        END IF;
        _code := pc.code;
    END IF;

    INSERT INTO wallet.code_redemptions (campaign_id, serial, code, member_ref, idempotency_key, context,
                                         reservation_id, redeemed_at)
    VALUES (r.campaign_id, r.serial, _code, _member, _key, _ctx,
            r.reservation_id, clock_timestamp())
    RETURNING redemption_id, redeemed_at INTO r.redemption_id, r.redeemed_at;
    PERFORM wallet.code_bump_counters(r.campaign_id, r.serial, _member, 1, cnt.max_per_code IS NOT NULL,
                                      cnt.max_per_member IS NOT NULL, cnt.max_total IS NOT NULL);
    r.status := 'ok';
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet.redeem_code(text, text, text, jsonb) IS
    'redeem a code for a member, atomically and exactly once per idempotency key; returns status ok with the redemption, or the refusal status of check_code (nothing recorded but failed checks); a retry with the same key returns the first result (replayed), the same key with other arguments is WL002; the key of an active reservation converts it';

CREATE OR REPLACE FUNCTION wallet.undo_redemption(redemption_id bigint, reason text)
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
    SELECT * INTO _red FROM wallet.code_redemptions d WHERE d.redemption_id = undo_redemption.redemption_id FOR UPDATE;
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
    SELECT * INTO cnt FROM wallet.code_lock_counters(_red.campaign_id, _red.serial, _red.member_ref);
    PERFORM wallet.code_bump_counters(_red.campaign_id, _red.serial, _red.member_ref, -1, cnt.max_per_code IS NOT NULL,
                                      cnt.max_per_member IS NOT NULL, cnt.max_total IS NOT NULL);
    UPDATE wallet.code_redemptions d SET undone_at = clock_timestamp(), undo_reason = undo_redemption.reason
     WHERE d.redemption_id = _red.redemption_id
    RETURNING * INTO _red;
    RETURN _red;
END
$$;
COMMENT ON FUNCTION wallet.undo_redemption(bigint, text) IS
    'undo a redemption (e.g. cancelled order), freeing its use under every cap; returns the undone row; undoing twice is WL151';

CREATE OR REPLACE FUNCTION wallet.reserve_code(code text, member_ref text, idempotency_key text, ttl interval, context jsonb DEFAULT '{}')
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
    PERFORM wallet.code_check_args(_member, _key, _ctx, true);
    IF _ttl IS NULL THEN
        RAISE EXCEPTION 'reservation ttl must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A reservation holds a code for a given time.';
    END IF;
    IF _ttl <= interval '0' THEN
        RAISE EXCEPTION 'reservation ttl must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A reservation holds a code for a positive time; %s was given.', _ttl);
    END IF;
    r.member_ref := _member;
    r.replayed := false;

    PERFORM pg_advisory_xact_lock(1464598529, hashtext(_key));
    SELECT * INTO _res FROM wallet.code_reservations v WHERE v.idempotency_key = _key;
    IF FOUND THEN
        IF _res.member_ref <> _member OR _res.ttl <> _ttl OR NOT wallet.code_same_input(_res.code, _input) THEN
            PERFORM wallet.code_key_mismatch(_key, 'reservation');
        END IF;
        RETURN ROW('ok', _res.reservation_id, _res.campaign_id, _res.serial, _res.member_ref,
                   _res.expires_at, true)::wallet.reservation_result;
    END IF;
    IF EXISTS (SELECT 1 FROM wallet.code_redemptions d WHERE d.idempotency_key = _key) THEN
        PERFORM wallet.code_key_mismatch(_key, 'redemption');
    END IF;

    SELECT * INTO pc FROM wallet.code_precheck(_input, _member, left(_ctx->>'source', 256), 'reserve');
    r.campaign_id := pc.campaign_id;
    r.serial := pc.serial;
    IF pc.status <> 'ok' THEN
        r.status := pc.status;
        RETURN r;
    END IF;
    SELECT * INTO cnt FROM wallet.code_lock_counters(pc.campaign_id, pc.serial, _member);
    _st := wallet.code_caps_status(pc.campaign_id, pc.serial, _member, cnt.max_per_code, cnt.max_per_member,
                                   cnt.max_total, cnt.code_redeemed, cnt.member_redeemed, cnt.total_redeemed);
    IF _st <> 'ok' THEN
        r.status := _st;
        RETURN r;
    END IF;
    _now := clock_timestamp();
    INSERT INTO wallet.code_reservations (campaign_id, serial, code, member_ref, idempotency_key, ttl, reserved_at, expires_at)
    VALUES (pc.campaign_id, pc.serial, pc.code, _member, _key, _ttl, _now, _now + _ttl)
    RETURNING reservation_id, expires_at INTO r.reservation_id, r.expires_at;
    -- Touch the counters: in REPEATABLE READ a concurrent change of them then
    -- fails with a serialization error instead of going unseen.
    PERFORM wallet.code_bump_counters(pc.campaign_id, pc.serial, _member, 0, cnt.max_per_code IS NOT NULL,
                                      cnt.max_per_member IS NOT NULL, cnt.max_total IS NOT NULL);
    r.status := 'ok';
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet.reserve_code(text, text, text, interval, jsonb) IS
    'reserve a code for a member for ttl: the reservation counts against every cap until redeem_code with the same idempotency key converts it, release_reservation releases it, or it expires (at once, by clock time); returns the refusal status of check_code otherwise';

CREATE OR REPLACE FUNCTION wallet.release_reservation(reservation_id bigint)
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
    SELECT * INTO _res FROM wallet.code_reservations v WHERE v.reservation_id = release_reservation.reservation_id FOR UPDATE;
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

CREATE OR REPLACE FUNCTION wallet.ledger_diff(a wallet.points_ledger, b wallet.points_ledger) RETURNS text
    AS 'MODULE_PATHNAME', 'ledger_diff' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION wallet.ledger_diff(wallet.points_ledger, wallet.points_ledger) IS 'NULL when both ledgers hold the same state, else a sentence naming the first difference';

CREATE OR REPLACE FUNCTION wallet.check_posting(points bigint, reason text, idempotency_key text, verb text,
        signed boolean DEFAULT false) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF verb IS NOT NULL AND points IS NULL THEN
        RAISE EXCEPTION 'points must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = format('The points to %s must be given.', verb);
    END IF;
    IF verb IS NOT NULL AND (points = 0 OR (points < 0 AND NOT signed)) THEN
        RAISE EXCEPTION 'invalid amount of points'
            USING ERRCODE = 'WL204',
                  DETAIL = CASE WHEN signed THEN format('The points to %s must be a non-zero number.', verb)
                                ELSE format('The points to %s must be a positive number.', verb) END;
    END IF;
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'reason must not be %', CASE WHEN reason IS NULL THEN 'null' ELSE 'blank' END
            USING ERRCODE = CASE WHEN reason IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'Every posting needs a non-blank reason, so the journal explains it.';
    END IF;
    IF idempotency_key IS NULL OR btrim(idempotency_key) = '' THEN
        RAISE EXCEPTION 'idempotency key must not be %', CASE WHEN idempotency_key IS NULL THEN 'null' ELSE 'blank' END
            USING ERRCODE = CASE WHEN idempotency_key IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'Every posting needs a non-blank idempotency key, so that a retry cannot post twice.';
    END IF;
    -- a key of a unique index, like the idempotency keys of the redemption API
    IF length(idempotency_key) > 256 THEN
        RAISE EXCEPTION 'idempotency key is too long'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('An idempotency key has at most 256 characters; this one has %s.', length(idempotency_key));
    END IF;
END
$$;
COMMENT ON FUNCTION wallet.check_posting(bigint, text, text, text, boolean) IS 'raises 22004 for NULL points, reason or idempotency key, WL204 for a zero or (unless signed) negative amount, 22023 for a blank reason or a blank or over-long idempotency key';

CREATE OR REPLACE FUNCTION wallet.unknown_account(account_id bigint) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF account_id IS NULL THEN
        RAISE EXCEPTION 'account_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A points account is named by its id.';
    END IF;
    RAISE EXCEPTION 'unknown account'
        USING ERRCODE = 'WL201', DETAIL = format('There is no points account %s.', account_id);
END
$$;
COMMENT ON FUNCTION wallet.unknown_account(bigint) IS 'raises WL201 for an account id that does not exist, 22004 for a NULL one';

CREATE OR REPLACE FUNCTION wallet.create_program(merchant_id bigint, name text, expiry interval DEFAULT NULL,
        granularity text DEFAULT 'day') RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
BEGIN
    IF merchant_id IS NULL OR name IS NULL OR granularity IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN merchant_id IS NULL THEN 'merchant_id' WHEN name IS NULL THEN 'program name' ELSE 'granularity' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A points program belongs to a merchant and has a name and an expiry granularity.';
    END IF;
    IF btrim(name) = '' THEN
        RAISE EXCEPTION 'program name must not be blank'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A points program needs a name that people can recognise.';
    END IF;
    IF expiry IS NOT NULL AND expiry <= interval '0' THEN
        RAISE EXCEPTION 'expiry must be positive'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Points expire a positive time after they are earned, or never (NULL).';
    END IF;
    IF granularity NOT IN ('day', 'month') THEN
        RAISE EXCEPTION 'unknown granularity "%"', granularity
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Expiry is rounded up to the end of a ''day'' or a ''month''.';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.merchants m WHERE m.merchant_id = create_program.merchant_id) THEN
        RAISE EXCEPTION 'merchant % does not exist', merchant_id
            USING ERRCODE = 'WL102', HINT = 'Register the merchant with wallet.create_merchant first.';
    END IF;
    INSERT INTO wallet.programs (merchant_id, name, expiry, granularity)
    VALUES (create_program.merchant_id, create_program.name, create_program.expiry, create_program.granularity)
    RETURNING program_id INTO id;
    RETURN id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'program "%" already exists', name
        USING ERRCODE = 'unique_violation', DETAIL = 'Program names are unique per merchant.';
END
$$;
COMMENT ON FUNCTION wallet.create_program(bigint, text, interval, text) IS 'creates a points program with its expiry policy (NULL = never; rounded up to the end of the UTC day or month) and returns its id';

CREATE OR REPLACE FUNCTION wallet.close_program(program_id bigint) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF program_id IS NULL THEN
        RAISE EXCEPTION 'program_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A points program is named by its id.';
    END IF;
    UPDATE wallet.programs p SET closed_at = coalesce(p.closed_at, now())
     WHERE p.program_id = close_program.program_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
END
$$;
COMMENT ON FUNCTION wallet.close_program(bigint) IS 'closes a program: no new accounts, accruals, redemptions, holds or adjustments; open holds can still be captured or released, postings reversed, points expired (idempotent)';

CREATE OR REPLACE FUNCTION wallet.open_account(program_id bigint, member_ref text) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
    is_closed boolean;
BEGIN
    IF program_id IS NULL OR member_ref IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN program_id IS NULL THEN 'program_id' ELSE 'member reference' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'An account is opened in a points program for the merchant app''s own user id.';
    END IF;
    IF btrim(member_ref) = '' THEN
        RAISE EXCEPTION 'member reference must not be blank'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An account is opened for the merchant app''s own user id.';
    END IF;
    -- a key of a unique index, like the member references of the redemption API
    IF length(member_ref) > 256 THEN
        RAISE EXCEPTION 'member reference is too long'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A member reference has at most 256 characters; this one has %s.', length(member_ref));
    END IF;
    SELECT p.closed_at IS NOT NULL INTO is_closed FROM wallet.programs p WHERE p.program_id = open_account.program_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
    SELECT a.account_id INTO id FROM wallet.accounts a
     WHERE a.program_id = open_account.program_id AND a.member_ref = open_account.member_ref;
    IF FOUND THEN
        RETURN id;
    END IF;
    IF is_closed THEN
        PERFORM wallet.program_closed(program_id);
    END IF;
    -- a concurrent open of the same member waits on the unique index, then finds the row
    INSERT INTO wallet.accounts (program_id, member_ref) VALUES (open_account.program_id, open_account.member_ref)
    ON CONFLICT ON CONSTRAINT accounts_program_id_member_ref_key DO NOTHING
    RETURNING account_id INTO id;
    IF id IS NULL THEN
        SELECT a.account_id INTO id FROM wallet.accounts a
         WHERE a.program_id = open_account.program_id AND a.member_ref = open_account.member_ref;
    END IF;
    RETURN id;
END
$$;
COMMENT ON FUNCTION wallet.open_account(bigint, text) IS 'returns the account of member_ref in the program, opening it if needed (idempotent, race-safe)';

CREATE OR REPLACE FUNCTION wallet.hold(account_id bigint, points bigint, idempotency_key text, ttl interval, reason text,
        reference text DEFAULT NULL) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    at timestamptz;
    a wallet.locked_account;
    id bigint;
BEGIN
    PERFORM wallet.check_posting(points, reason, idempotency_key, 'hold');
    IF ttl IS NULL THEN
        RAISE EXCEPTION 'time to live must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A hold lasts a given time, after which it stops holding.';
    END IF;
    IF ttl <= interval '0' THEN
        RAISE EXCEPTION 'time to live must be positive'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A hold lasts a positive time, after which it stops holding.';
    END IF;
    a := wallet.lock_account(account_id, idempotency_key);
    at := a.at;
    -- the hold id is the entry id, known before the ledger changes
    id := CASE WHEN (a.prior).entry_id IS NULL THEN nextval('wallet.entries_entry_id_seq') END;
    RETURN wallet.post_once(a,
        (a.prior).kind = 'hold' AND (a.prior).points = points AND (a.prior).reason = reason
            AND (a.prior).reference IS NOT DISTINCT FROM reference AND (a.prior).expires_at = (a.prior).created_at + ttl,
        ROW(id, account_id, 'hold', 0, 0, idempotency_key, reason, reference, '[]', id, NULL, NULL, at,
            points, at + ttl, NULL));
END
$$;
COMMENT ON FUNCTION wallet.hold(bigint, bigint, text, interval, text, text) IS 'takes points out of the spendable balance for ttl; the returned entry_id is the hold id; idempotent on idempotency_key';

CREATE OR REPLACE FUNCTION wallet.lock_hold(hold_id bigint,
        OUT h wallet.entries, OUT closing wallet.entries, OUT ledger wallet.points_ledger, OUT at timestamptz)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF hold_id IS NULL THEN
        RAISE EXCEPTION 'hold_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A hold is named by its id, the entry_id of its hold entry.';
    END IF;
    SELECT * INTO h FROM wallet.entries x WHERE x.entry_id = lock_hold.hold_id AND x.kind = 'hold';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown hold'
            USING ERRCODE = 'WL206', DETAIL = format('There is no hold %s.', hold_id);
    END IF;
    SELECT * INTO closing FROM wallet.entries x
     WHERE x.hold_id = lock_hold.hold_id AND x.kind IN ('capture', 'release');
    at := clock_timestamp();
    IF closing.entry_id IS NULL THEN
        SELECT x.ledger, x.at INTO ledger, at FROM wallet.lock_account(h.account_id) x;
        -- look again under the lock: a concurrent capture or release may have closed it
        SELECT * INTO closing FROM wallet.entries x
         WHERE x.hold_id = lock_hold.hold_id AND x.kind IN ('capture', 'release');
    END IF;
END
$$;
COMMENT ON FUNCTION wallet.lock_hold(bigint) IS 'finds hold hold_id (WL206 if none, 22004 if NULL), locks its account unless already closed, returns the closing capture or release entry if any';

CREATE OR REPLACE FUNCTION wallet.reverse(entry_id bigint, idempotency_key text, reason text,
        policy text DEFAULT 'within_balance') RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    at timestamptz;
    o wallet.entries;
    a wallet.locked_account;
    r bigint;
BEGIN
    IF entry_id IS NULL OR policy IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN entry_id IS NULL THEN 'entry_id' ELSE 'policy' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A reversal names the entry it undoes and a policy, ''within_balance'' by default.';
    END IF;
    IF policy NOT IN ('within_balance', 'unlimited') THEN
        RAISE EXCEPTION 'unknown reversal policy "%"', policy
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The policy is ''within_balance'' or ''unlimited''.';
    END IF;
    PERFORM wallet.check_posting(NULL, reason, idempotency_key, NULL);
    SELECT * INTO o FROM wallet.entries x WHERE x.entry_id = reverse.entry_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown entry'
            USING ERRCODE = 'WL212', DETAIL = format('There is no journal entry %s.', entry_id);
    END IF;
    a := wallet.lock_account(o.account_id, idempotency_key);
    at := a.at;
    IF (a.prior).entry_id IS NULL THEN
        IF o.kind NOT IN ('accrue', 'redeem', 'capture') THEN
            RAISE EXCEPTION 'entry not reversible'
                USING ERRCODE = 'WL211',
                      DETAIL = format('Entry %s is a %s entry; only accrue, redeem and capture entries can be reversed.', entry_id, o.kind),
                      HINT = 'Correct other postings with wallet.adjust.';
        END IF;
        SELECT x.entry_id INTO r FROM wallet.entries x WHERE x.reverses = reverse.entry_id;
        IF FOUND THEN
            RAISE EXCEPTION 'entry already reversed'
                USING ERRCODE = 'WL210', DETAIL = format('Entry %s was reversed by entry %s.', entry_id, r);
        END IF;
    END IF;
    -- refunds and chargebacks must work after a program closed
    RETURN wallet.post_once(a,
        (a.prior).kind = 'reverse' AND (a.prior).reverses = entry_id AND (a.prior).reason = reason
            AND (a.prior).policy = policy,
        ROW(NULL, o.account_id, 'reverse', 0, 0, idempotency_key, reason, o.reference, '[]', NULL, entry_id, NULL, at,
            NULL, NULL, policy),
        check_closed => false);
END
$$;
COMMENT ON FUNCTION wallet.reverse(bigint, text, text, text) IS 'undoes an accrual (takes back its unspent points; unlimited: all of it, into debt if need be) or a redemption/capture (restores the lots with their original expiry); at most once per entry';

CREATE OR REPLACE FUNCTION wallet.balance(account_id bigint, as_of timestamptz DEFAULT now()) RETURNS bigint
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    b bigint;
BEGIN
    IF as_of IS NULL THEN
        RAISE EXCEPTION 'as_of must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The balance is taken at a given instant, now() by default.';
    END IF;
    SELECT wallet.ledger_balance(a.ledger, as_of) INTO b FROM wallet.accounts a WHERE a.account_id = balance.account_id;
    IF NOT FOUND THEN
        PERFORM wallet.unknown_account(account_id);
    END IF;
    RETURN b;
END
$$;
COMMENT ON FUNCTION wallet.balance(bigint, timestamptz) IS 'points spendable at as_of (expired lots never count, whether or not expire_points ran)';

CREATE OR REPLACE FUNCTION wallet.replay_ledger(account_id bigint, upto timestamptz DEFAULT 'infinity',
        OUT ledger wallet.points_ledger, OUT problem text)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    e wallet.entries;
    s wallet.ledger_step;
BEGIN
    IF upto IS NULL THEN
        RAISE EXCEPTION 'upto must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The journal is replayed up to a given instant, infinity by default.';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.accounts a WHERE a.account_id = replay_ledger.account_id) THEN
        PERFORM wallet.unknown_account(account_id);
    END IF;
    ledger := '';
    FOR e IN SELECT * FROM wallet.entries x WHERE x.account_id = replay_ledger.account_id AND x.created_at <= upto
              ORDER BY x.entry_id LOOP
        BEGIN
            s := wallet.entry_step(ledger, e);
        EXCEPTION WHEN OTHERS THEN
            problem := format('Entry %s (%s) does not replay: %s.', e.entry_id, e.kind, SQLERRM);
            RETURN;
        END;
        IF problem IS NULL AND (s.amount <> e.amount OR s.balance_after <> e.balance_after) THEN
            problem := format('Entry %s (%s) replays to amount %s and balance %s, the journal says %s and %s.',
                              e.entry_id, e.kind, s.amount, s.balance_after, e.amount, e.balance_after);
        END IF;
        ledger := s.ledger;
    END LOOP;
END
$$;
COMMENT ON FUNCTION wallet.replay_ledger(bigint, timestamptz) IS 'rebuilds an account''s ledger from its journal entries created up to upto; problem names the first entry that disagrees';

CREATE OR REPLACE FUNCTION wallet.history(account_id bigint, from_ts timestamptz DEFAULT '-infinity',
        to_ts timestamptz DEFAULT 'infinity') RETURNS SETOF wallet.entries
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF from_ts IS NULL OR to_ts IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN from_ts IS NULL THEN 'from_ts' ELSE 'to_ts' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The history covers [from_ts, to_ts), by default all of it (-infinity to infinity).';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.accounts a WHERE a.account_id = history.account_id) THEN
        PERFORM wallet.unknown_account(account_id);
    END IF;
    RETURN QUERY SELECT * FROM wallet.entries x
                  WHERE x.account_id = history.account_id AND x.created_at >= from_ts AND x.created_at < to_ts
                  ORDER BY x.entry_id;
END
$$;
COMMENT ON FUNCTION wallet.history(bigint, timestamptz, timestamptz) IS 'journal entries of an account created in [from_ts, to_ts), oldest first';

CREATE OR REPLACE FUNCTION wallet.program_liability(program_id bigint, as_of timestamptz DEFAULT now())
    RETURNS TABLE (expiry_month date, points bigint)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF program_id IS NULL OR as_of IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN program_id IS NULL THEN 'program_id' ELSE 'as_of' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The liability of a points program is taken at a given instant, now() by default.';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.programs p WHERE p.program_id = program_liability.program_id) THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
    -- the month (UTC) holding the last instant the points are spendable
    RETURN QUERY
    SELECT date_trunc('month', (x.expires_at - interval '1 microsecond') AT TIME ZONE 'UTC')::date AS m,
           sum(x.points)::bigint
      FROM wallet.accounts a CROSS JOIN LATERAL wallet.ledger_lots(a.ledger) x
     WHERE a.program_id = program_liability.program_id
       AND (x.expires_at IS NULL OR x.expires_at > as_of)
     GROUP BY m ORDER BY m NULLS LAST;
END
$$;
COMMENT ON FUNCTION wallet.program_liability(bigint, timestamptz) IS 'outstanding (spendable or held, unexpired at as_of) points of a program by month of expiry; NULL month = never expires';

-- -- 5e. structure
-- Nothing: C (ledger_apply handler table, prefixed helper symbols) and tests only.

-- -- 5d. code text, operators, extension schema
-- Codes print two base32 check symbols and still read the one check symbol
-- of 0.1.0 (C library, docs/code-format.md 3.2); the comments say so.
COMMENT ON FUNCTION wallet.marketing_code_in(cstring) IS 'text input of wallet.marketing_code: checks the symbols, length and check symbols, also of 0.1.0 texts (not the MAC)';
COMMENT ON FUNCTION wallet.marketing_code_out(wallet.marketing_code) IS 'text output of wallet.marketing_code: prefix, base32 body and two check symbols in groups of 4';
COMMENT ON TYPE wallet.marketing_code IS 'HMAC-signed marketing code: campaign, serial, key version, prefix and truncated MAC in 24 bytes; text form like SHOP-XXXX-XXXX-XXXX-XXCC';
-- The comments promise only what exists.
COMMENT ON SCHEMA wallet IS 'digital-wallet marketing: marketing codes, points ledger, loyalty (purchases, earning rules, tiers), campaigns, push queue';
COMMENT ON EXTENSION wallet IS 'digital-wallet marketing in the database: signed marketing codes, a points ledger, loyalty tiers, campaigns and a consent-aware push queue';

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

-- -- 5c. idempotency and one-statement calls
-- One idempotency mechanism for redemptions, reservations and postings:
-- wallet.idem_check compares fingerprints (jsonb objects of what decides a
-- call's outcome) derived alike from the stored row of the first call and
-- from a retry's arguments, so rows stored by 0.1.0 replay as before.  A
-- redemption's fingerprint no longer covers its context (request metadata),
-- and every WL002 has the same message.  It replaces wallet.key_mismatch,
-- wallet.code_key_mismatch and wallet.code_same_input.

CREATE FUNCTION wallet.idem_check(idempotency_key text, earlier text, stored jsonb, given jsonb) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    diff text;
BEGIN
    IF stored = given THEN
        RETURN;
    END IF;
    SELECT string_agg(k, ', ' ORDER BY k) INTO diff
      FROM jsonb_object_keys(stored || given) AS k
     WHERE stored -> k IS DISTINCT FROM given -> k;
    RAISE EXCEPTION 'idempotency key "%" was already used with different arguments', idempotency_key
        USING ERRCODE = 'WL002',
              DETAIL = format('The key belongs to %s; this call differs in %s.', earlier, diff),
              HINT = 'A retry repeats the arguments of the first call; use a new key for a new request.';
END
$$;
COMMENT ON FUNCTION wallet.idem_check(text, text, jsonb, jsonb) IS 'internal: returns when the fingerprint given by a call equals the stored one of the earlier call with its idempotency key (a retry), else raises WL002 naming the fields that differ';

CREATE FUNCTION wallet.idem_code(operation text, code text, member_ref text, ttl interval)
    RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT jsonb_build_object('operation', $1, 'code', (SELECT p.code::text FROM wallet.parse_code($2) p),
                              'member_ref', $3, 'ttl', justify_interval($4))
$$;
COMMENT ON FUNCTION wallet.idem_code(text, text, text, interval) IS
    'internal: idempotency fingerprint of a redemption or reservation (operation, code in canonical form, member, ttl; not the context)';

CREATE FUNCTION wallet.idem_entry(e wallet.entries) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT jsonb_build_object('operation', e.kind, 'points', e.points, 'reason', e.reason, 'reference', e.reference,
                              'expires_at', e.expires_at, 'reverses', e.reverses, 'policy', e.policy,
                              'hold_id', CASE WHEN e.kind IN ('capture', 'release') THEN e.hold_id END)
$$;
COMMENT ON FUNCTION wallet.idem_entry(wallet.entries) IS 'internal: idempotency fingerprint of a posting (operation, points, reason, reference, expires_at, reversed entry, policy, captured or released hold)';

CREATE FUNCTION wallet.entry_by_key(account_id bigint, idempotency_key text) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    e wallet.entries;
BEGIN
    IF btrim(idempotency_key) = '' THEN
        RAISE EXCEPTION 'idempotency key must not be blank'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'An idempotency key names one request; pass NULL to go without one.';
    END IF;
    IF idempotency_key IS NOT NULL THEN
        SELECT * INTO e FROM wallet.entries x
         WHERE x.account_id = entry_by_key.account_id AND x.idempotency_key = entry_by_key.idempotency_key;
    END IF;
    RETURN e;
END
$$;
COMMENT ON FUNCTION wallet.entry_by_key(bigint, text) IS 'internal: the entry posted on the account with an optional idempotency key (22023 for a blank one)';


-- Positional ROW(...) and VALUES (e.*) give way to named columns, and a
-- retry is compared by fingerprint.

CREATE OR REPLACE FUNCTION wallet.post_entry(l wallet.points_ledger, e wallet.entries) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    s wallet.ledger_step;
BEGIN
    IF e.entry_id IS NULL THEN
        e.entry_id := nextval('wallet.entries_entry_id_seq');
    END IF;
    s := wallet.entry_step(l, e);
    e.amount := s.amount;
    e.balance_after := s.balance_after;
    e.lots := s.lots;
    e.actor := current_user;
    UPDATE wallet.accounts SET ledger = s.ledger, next_event = s.next_event WHERE account_id = e.account_id;
    INSERT INTO wallet.entries (entry_id, account_id, kind, amount, balance_after, idempotency_key, reason, reference,
                                lots, hold_id, reverses, actor, created_at, points, expires_at, policy)
    VALUES (e.entry_id, e.account_id, e.kind, e.amount, e.balance_after, e.idempotency_key, e.reason, e.reference,
            e.lots, e.hold_id, e.reverses, e.actor, e.created_at, e.points, e.expires_at, e.policy)
    RETURNING * INTO e;
    RETURN e;
END
$$;
COMMENT ON FUNCTION wallet.post_entry(wallet.points_ledger, wallet.entries) IS 'applies entry e to the locked account''s ledger l, stores the result and journals e';

CREATE OR REPLACE FUNCTION wallet.settle_account(account_id bigint, as_of timestamptz, at timestamptz) RETURNS int
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    l wallet.points_ledger;
    h record;
    e wallet.entries;
    n int := 0;
BEGIN
    SELECT a.ledger INTO l FROM wallet.accounts a WHERE a.account_id = settle_account.account_id;
    IF EXISTS (SELECT FROM wallet.ledger_lots(l) x WHERE x.hold_id IS NULL AND x.expires_at <= as_of) THEN
        e.account_id := settle_account.account_id;
        e.kind := 'expire';
        e.reason := 'points expired';
        e.created_at := at;
        e.expires_at := as_of;
        PERFORM wallet.post_entry(l, e);
        SELECT a.ledger INTO l FROM wallet.accounts a WHERE a.account_id = settle_account.account_id;
        n := 1;
    END IF;
    FOR h IN SELECT DISTINCT x.hold_id FROM wallet.ledger_lots(l) x
              WHERE x.hold_expires_at <= as_of ORDER BY x.hold_id LOOP
        e := NULL;
        e.account_id := settle_account.account_id;
        e.kind := 'release';
        e.reason := 'hold expired';
        e.reference := (SELECT x.reference FROM wallet.entries x WHERE x.entry_id = h.hold_id);
        e.hold_id := h.hold_id;
        e.created_at := at;
        e.expires_at := as_of;
        PERFORM wallet.post_entry(l, e);
        SELECT a.ledger INTO l FROM wallet.accounts a WHERE a.account_id = settle_account.account_id;
    END LOOP;
    -- FOUND: the loop released a hold
    IF NOT FOUND AND n = 0 THEN
        -- nothing was due after all: keep next_event exact anyway
        UPDATE wallet.accounts a SET next_event = (wallet.ledger_apply(l, 'expire', as_of, NULL)).next_event
         WHERE a.account_id = settle_account.account_id;
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet.settle_account(bigint, timestamptz, timestamptz) IS 'journals lapsed holds (release) and expired lots (expire) of a locked account up to as_of';

DROP FUNCTION wallet.post_once(wallet.locked_account, boolean, wallet.entries, boolean);

CREATE FUNCTION wallet.post_once(a wallet.locked_account, e wallet.entries, check_closed boolean DEFAULT true)
    RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF (a.prior).entry_id IS NOT NULL THEN
        PERFORM wallet.idem_check((a.prior).idempotency_key,
                                  format('%s entry %s on account %s', (a.prior).kind, (a.prior).entry_id, (a.prior).account_id),
                                  wallet.idem_entry(a.prior), wallet.idem_entry(e));
        RETURN a.prior;
    END IF;
    IF check_closed AND a.closed THEN
        PERFORM wallet.program_closed(a.program_id);
    END IF;
    RETURN wallet.post_entry(a.ledger, e);
END
$$;
COMMENT ON FUNCTION wallet.post_once(wallet.locked_account, wallet.entries, boolean) IS 'after lock_account: returns the prior entry of a retry with the same fingerprint, raises WL002 for a reused key or WL202 for a closed program, else posts e';

CREATE OR REPLACE FUNCTION wallet.accrue(account_id bigint, points bigint, idempotency_key text, reason text,
        reference text DEFAULT NULL, expires_at timestamptz DEFAULT NULL) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    at timestamptz;
    a wallet.locked_account;
    e wallet.entries;
BEGIN
    PERFORM wallet.check_posting(points, reason, idempotency_key, 'accrue');
    a := wallet.lock_account(account_id, idempotency_key);
    at := coalesce((a.prior).created_at, a.at);   -- a retry is compared as made when the first call was
    e.account_id := account_id;
    e.kind := 'accrue';
    e.idempotency_key := idempotency_key;
    e.reason := reason;
    e.reference := reference;
    e.created_at := at;
    e.points := points;
    e.expires_at := coalesce(expires_at, wallet.policy_expiry(at, a.expiry, a.granularity));
    RETURN wallet.post_once(a, e);
END
$$;
COMMENT ON FUNCTION wallet.accrue(bigint, bigint, text, text, text, timestamptz) IS 'credits points (a debt is paid off first) expiring at expires_at or per the program policy; idempotent on idempotency_key';

CREATE OR REPLACE FUNCTION wallet.redeem(account_id bigint, points bigint, idempotency_key text, reason text,
        reference text DEFAULT NULL) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    a wallet.locked_account;
    e wallet.entries;
BEGIN
    PERFORM wallet.check_posting(points, reason, idempotency_key, 'redeem');
    a := wallet.lock_account(account_id, idempotency_key);
    e.account_id := account_id;
    e.kind := 'redeem';
    e.idempotency_key := idempotency_key;
    e.reason := reason;
    e.reference := reference;
    e.created_at := a.at;
    e.points := points;
    RETURN wallet.post_once(a, e);
END
$$;
COMMENT ON FUNCTION wallet.redeem(bigint, bigint, text, text, text) IS 'spends points, soonest-expiring lots first (WL203 when not enough are spendable); idempotent on idempotency_key';

CREATE OR REPLACE FUNCTION wallet.hold(account_id bigint, points bigint, idempotency_key text, ttl interval, reason text,
        reference text DEFAULT NULL) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    at timestamptz;
    a wallet.locked_account;
    e wallet.entries;
BEGIN
    PERFORM wallet.check_posting(points, reason, idempotency_key, 'hold');
    IF ttl IS NULL THEN
        RAISE EXCEPTION 'time to live must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A hold lasts a given time, after which it stops holding.';
    END IF;
    IF ttl <= interval '0' THEN
        RAISE EXCEPTION 'time to live must be positive'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A hold lasts a positive time, after which it stops holding.';
    END IF;
    a := wallet.lock_account(account_id, idempotency_key);
    at := coalesce((a.prior).created_at, a.at);   -- a retry is compared as made when the first call was
    -- the hold id is the entry id, known before the ledger changes
    e.entry_id := CASE WHEN (a.prior).entry_id IS NULL THEN nextval('wallet.entries_entry_id_seq') END;
    e.hold_id := e.entry_id;
    e.account_id := account_id;
    e.kind := 'hold';
    e.idempotency_key := idempotency_key;
    e.reason := reason;
    e.reference := reference;
    e.created_at := at;
    e.points := points;
    e.expires_at := at + ttl;
    RETURN wallet.post_once(a, e);
END
$$;
COMMENT ON FUNCTION wallet.hold(bigint, bigint, text, interval, text, text) IS 'takes points out of the spendable balance for ttl; the returned entry_id is the hold id; idempotent on idempotency_key';

CREATE OR REPLACE FUNCTION wallet.reverse(entry_id bigint, idempotency_key text, reason text,
        policy text DEFAULT 'within_balance') RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    o wallet.entries;
    a wallet.locked_account;
    e wallet.entries;
    r bigint;
BEGIN
    IF entry_id IS NULL OR policy IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN entry_id IS NULL THEN 'entry_id' ELSE 'policy' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A reversal names the entry it undoes and a policy, ''within_balance'' by default.';
    END IF;
    IF policy NOT IN ('within_balance', 'unlimited') THEN
        RAISE EXCEPTION 'unknown reversal policy "%"', policy
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The policy is ''within_balance'' or ''unlimited''.';
    END IF;
    PERFORM wallet.check_posting(NULL, reason, idempotency_key, NULL);
    SELECT * INTO o FROM wallet.entries x WHERE x.entry_id = reverse.entry_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown entry'
            USING ERRCODE = 'WL212', DETAIL = format('There is no journal entry %s.', entry_id);
    END IF;
    a := wallet.lock_account(o.account_id, idempotency_key);
    IF (a.prior).entry_id IS NULL THEN
        IF o.kind NOT IN ('accrue', 'redeem', 'capture') THEN
            RAISE EXCEPTION 'entry not reversible'
                USING ERRCODE = 'WL211',
                      DETAIL = format('Entry %s is a %s entry; only accrue, redeem and capture entries can be reversed.', entry_id, o.kind),
                      HINT = 'Correct other postings with wallet.adjust.';
        END IF;
        SELECT x.entry_id INTO r FROM wallet.entries x WHERE x.reverses = reverse.entry_id;
        IF FOUND THEN
            RAISE EXCEPTION 'entry already reversed'
                USING ERRCODE = 'WL210', DETAIL = format('Entry %s was reversed by entry %s.', entry_id, r);
        END IF;
    END IF;
    -- refunds and chargebacks must work after a program closed
    e.account_id := o.account_id;
    e.kind := 'reverse';
    e.idempotency_key := idempotency_key;
    e.reason := reason;
    e.reference := o.reference;
    e.reverses := entry_id;
    e.created_at := a.at;
    e.policy := policy;
    RETURN wallet.post_once(a, e, check_closed => false);
END
$$;
COMMENT ON FUNCTION wallet.reverse(bigint, text, text, text) IS 'undoes an accrual (takes back its unspent points; unlimited: all of it, into debt if need be) or a redemption/capture (restores the lots with their original expiry); at most once per entry';

CREATE OR REPLACE FUNCTION wallet.adjust(account_id bigint, points bigint, idempotency_key text, reason text) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    at timestamptz;
    a wallet.locked_account;
    e wallet.entries;
BEGIN
    PERFORM wallet.check_posting(points, reason, idempotency_key, 'adjust', signed => true);
    a := wallet.lock_account(account_id, idempotency_key);
    at := coalesce((a.prior).created_at, a.at);   -- a retry is compared as made when the first call was
    e.account_id := account_id;
    e.kind := 'adjust';
    e.idempotency_key := idempotency_key;
    e.reason := reason;
    e.created_at := at;
    e.points := points;
    e.expires_at := CASE WHEN points > 0 THEN wallet.policy_expiry(at, a.expiry, a.granularity) END;
    RETURN wallet.post_once(a, e);
END
$$;
COMMENT ON FUNCTION wallet.adjust(bigint, bigint, text, text) IS 'manual correction: adds points (expiring per policy) or removes them (soonest-expiring first, within the balance); reason required';


-- capture and release take an optional idempotency key.

DROP FUNCTION wallet.capture(bigint, bigint);

CREATE FUNCTION wallet.capture(hold_id bigint, points bigint DEFAULT NULL, idempotency_key text DEFAULT NULL)
    RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    at timestamptz;
    k record;
    a wallet.locked_account;
    e wallet.entries;
BEGIN
    IF points IS NOT NULL AND points <= 0 THEN
        RAISE EXCEPTION 'invalid amount of points'
            USING ERRCODE = 'WL204', DETAIL = 'The points to capture must be a positive number, or NULL for the whole hold.';
    END IF;
    k := wallet.lock_hold(hold_id);
    at := k.at;
    e.account_id := (k.h).account_id;
    e.kind := 'capture';
    e.idempotency_key := idempotency_key;
    e.reason := (k.h).reason;
    e.reference := (k.h).reference;
    e.hold_id := hold_id;
    e.points := points;
    a.prior := wallet.entry_by_key((k.h).account_id, idempotency_key);
    IF (a.prior).entry_id IS NOT NULL THEN
        RETURN wallet.post_once(a, e);   -- a retry (or WL002)
    END IF;
    IF idempotency_key IS NULL AND (k.closing).kind = 'capture' AND (k.closing).points IS NOT DISTINCT FROM capture.points THEN
        RETURN k.closing;   -- the identical call without a key, repeated
    END IF;
    IF at >= (k.h).expires_at THEN
        RAISE EXCEPTION 'hold expired'
            USING ERRCODE = 'WL208',
                  DETAIL = format('Hold %s stopped holding its points when its time to live ran out.', hold_id);
    END IF;
    IF (k.closing).entry_id IS NOT NULL THEN
        PERFORM wallet.hold_not_open(hold_id, k.closing);
    END IF;
    e.created_at := at;
    RETURN wallet.post_entry(k.ledger, e);
END
$$;
COMMENT ON FUNCTION wallet.capture(bigint, bigint, text) IS 'redeems all (points NULL) or part of a hold within its time to live; the rest becomes spendable again; idempotent on the optional idempotency_key';

DROP FUNCTION wallet.release(bigint);

CREATE FUNCTION wallet.release(hold_id bigint, idempotency_key text DEFAULT NULL) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    k record;
    a wallet.locked_account;
    e wallet.entries;
BEGIN
    k := wallet.lock_hold(hold_id);
    e.account_id := (k.h).account_id;
    e.kind := 'release';
    e.idempotency_key := idempotency_key;
    e.reason := (k.h).reason;
    e.reference := (k.h).reference;
    e.hold_id := hold_id;
    a.prior := wallet.entry_by_key((k.h).account_id, idempotency_key);
    IF (a.prior).entry_id IS NOT NULL THEN
        RETURN wallet.post_once(a, e);   -- a retry (or WL002)
    END IF;
    IF (k.closing).kind = 'release' THEN
        RETURN k.closing;   -- released already (by this call before, or when the hold lapsed)
    ELSIF (k.closing).entry_id IS NOT NULL THEN
        PERFORM wallet.hold_not_open(hold_id, k.closing);
    END IF;
    e.created_at := k.at;
    RETURN wallet.post_entry(k.ledger, e);
END
$$;
COMMENT ON FUNCTION wallet.release(bigint, text) IS 'returns a hold''s points to the spendable balance; repeating it (or calling it after the hold lapsed) returns the release entry; idempotent on the optional idempotency_key';

COMMENT ON COLUMN wallet.entries.idempotency_key IS 'caller''s key, unique per account forever (NULL for expire, and for a capture or release made without one)';

CREATE OR REPLACE FUNCTION wallet.redeem_code(code text, member_ref text, idempotency_key text, context jsonb DEFAULT '{}')
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
    PERFORM wallet.code_check_args(_member, _key, _ctx, true);
    r.member_ref := _member;
    r.replayed := false;

    -- Same key: one session at a time; the later one sees the earlier's row.
    PERFORM pg_advisory_xact_lock(1464598529, hashtext(_key));
    SELECT * INTO _red FROM wallet.code_redemptions d WHERE d.idempotency_key = _key;
    IF FOUND THEN
        PERFORM wallet.idem_check(_key, format('redemption %s', _red.redemption_id),
                                  wallet.idem_code('redeem', _red.code::text, _red.member_ref, NULL),
                                  wallet.idem_code('redeem', _input, _member, NULL));
        r.status := 'ok';
        r.redemption_id := _red.redemption_id;
        r.campaign_id := _red.campaign_id;
        r.serial := _red.serial;
        r.redeemed_at := _red.redeemed_at;
        r.reservation_id := _red.reservation_id;
        r.replayed := true;
        RETURN r;
    END IF;

    SELECT * INTO _res FROM wallet.code_reservations v WHERE v.idempotency_key = _key FOR UPDATE;
    IF FOUND THEN
        -- the key of a reservation: redeeming it converts the reservation,
        -- so the call repeats the reservation's code and member
        PERFORM wallet.idem_check(_key, format('reservation %s', _res.reservation_id),
                                  wallet.idem_code('reserve', _res.code::text, _res.member_ref, _res.ttl),
                                  wallet.idem_code('reserve', _input, _member, _res.ttl));
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
        SELECT * INTO cnt FROM wallet.code_lock_counters(_res.campaign_id, _res.serial, _member);
        IF _res.expires_at <= clock_timestamp() THEN
            -- It expired while we waited for the locks: others may have taken
            -- its place meanwhile, so the caps decide (it no longer counts).
            _st := wallet.code_caps_status(_res.campaign_id, _res.serial, _member, cnt.max_per_code,
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
        SELECT * INTO pc FROM wallet.code_precheck(_input, _member, left(_ctx->>'source', 256), 'redeem');
        r.campaign_id := pc.campaign_id;
        r.serial := pc.serial;
        IF pc.status <> 'ok' THEN
            r.status := pc.status;
            RETURN r;
        END IF;
        SELECT * INTO cnt FROM wallet.code_lock_counters(pc.campaign_id, pc.serial, _member);
        _st := wallet.code_caps_status(pc.campaign_id, pc.serial, _member, cnt.max_per_code, cnt.max_per_member,
                                       cnt.max_total, cnt.code_redeemed, cnt.member_redeemed, cnt.total_redeemed);
        IF _st <> 'ok' THEN
            r.status := _st;
            RETURN r;
        END IF;
        _code := pc.code;
    END IF;

    INSERT INTO wallet.code_redemptions (campaign_id, serial, code, member_ref, idempotency_key, context,
                                         reservation_id, redeemed_at)
    VALUES (r.campaign_id, r.serial, _code, _member, _key, _ctx,
            r.reservation_id, clock_timestamp())
    RETURNING redemption_id, redeemed_at INTO r.redemption_id, r.redeemed_at;
    PERFORM wallet.code_bump_counters(r.campaign_id, r.serial, _member, 1, cnt.max_per_code IS NOT NULL,
                                      cnt.max_per_member IS NOT NULL, cnt.max_total IS NOT NULL);
    r.status := 'ok';
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet.redeem_code(text, text, text, jsonb) IS
    'redeem a code for a member, atomically and exactly once per idempotency key; returns status ok with the redemption, or the refusal status of check_code (nothing recorded but failed checks); a retry with the same key returns the first result (replayed), the same key with other arguments is WL002; the key of an active reservation converts it';

CREATE OR REPLACE FUNCTION wallet.reserve_code(code text, member_ref text, idempotency_key text, ttl interval, context jsonb DEFAULT '{}')
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
    PERFORM wallet.code_check_args(_member, _key, _ctx, true);
    IF _ttl IS NULL THEN
        RAISE EXCEPTION 'reservation ttl must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A reservation holds a code for a given time.';
    END IF;
    IF _ttl <= interval '0' THEN
        RAISE EXCEPTION 'reservation ttl must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A reservation holds a code for a positive time; %s was given.', _ttl);
    END IF;
    r.member_ref := _member;
    r.replayed := false;

    PERFORM pg_advisory_xact_lock(1464598529, hashtext(_key));
    SELECT * INTO _res FROM wallet.code_reservations v WHERE v.idempotency_key = _key;
    IF FOUND THEN
        PERFORM wallet.idem_check(_key, format('reservation %s', _res.reservation_id),
                                  wallet.idem_code('reserve', _res.code::text, _res.member_ref, _res.ttl),
                                  wallet.idem_code('reserve', _input, _member, _ttl));
        r.status := 'ok';
        r.reservation_id := _res.reservation_id;
        r.campaign_id := _res.campaign_id;
        r.serial := _res.serial;
        r.expires_at := _res.expires_at;
        r.replayed := true;
        RETURN r;
    END IF;
    SELECT * INTO _red FROM wallet.code_redemptions d WHERE d.idempotency_key = _key;
    IF FOUND THEN   -- a redemption's key: never a reservation's (raises)
        PERFORM wallet.idem_check(_key, format('redemption %s', _red.redemption_id),
                                  wallet.idem_code('redeem', _red.code::text, _red.member_ref, NULL),
                                  wallet.idem_code('reserve', _input, _member, _ttl));
    END IF;

    SELECT * INTO pc FROM wallet.code_precheck(_input, _member, left(_ctx->>'source', 256), 'reserve');
    r.campaign_id := pc.campaign_id;
    r.serial := pc.serial;
    IF pc.status <> 'ok' THEN
        r.status := pc.status;
        RETURN r;
    END IF;
    SELECT * INTO cnt FROM wallet.code_lock_counters(pc.campaign_id, pc.serial, _member);
    _st := wallet.code_caps_status(pc.campaign_id, pc.serial, _member, cnt.max_per_code, cnt.max_per_member,
                                   cnt.max_total, cnt.code_redeemed, cnt.member_redeemed, cnt.total_redeemed);
    IF _st <> 'ok' THEN
        r.status := _st;
        RETURN r;
    END IF;
    _now := clock_timestamp();
    INSERT INTO wallet.code_reservations (campaign_id, serial, code, member_ref, idempotency_key, ttl, reserved_at, expires_at)
    VALUES (pc.campaign_id, pc.serial, pc.code, _member, _key, _ttl, _now, _now + _ttl)
    RETURNING reservation_id, expires_at INTO r.reservation_id, r.expires_at;
    -- Touch the counters: in REPEATABLE READ a concurrent change of them then
    -- fails with a serialization error instead of going unseen.
    PERFORM wallet.code_bump_counters(pc.campaign_id, pc.serial, _member, 0, cnt.max_per_code IS NOT NULL,
                                      cnt.max_per_member IS NOT NULL, cnt.max_total IS NOT NULL);
    r.status := 'ok';
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet.reserve_code(text, text, text, interval, jsonb) IS
    'reserve a code for a member for ttl: the reservation counts against every cap until redeem_code with the same idempotency key converts it, release_reservation releases it, or it expires (at once, by clock time); returns the refusal status of check_code otherwise';

COMMENT ON COLUMN wallet.code_redemptions.context IS 'caller context (e.g. source, order id), as the first call gave it: request metadata, which a retry with the same key may send otherwise';


DROP FUNCTION wallet.key_mismatch(wallet.entries);
DROP FUNCTION wallet.code_key_mismatch(text, text);
DROP FUNCTION wallet.code_same_input(wallet.marketing_code, text);

-- Read functions a caller nests around an open_account or a posting in one
-- statement: VOLATILE, so that they read with a snapshot of their own that
-- sees what the inner call wrote.
ALTER FUNCTION wallet.balance(bigint, timestamptz) VOLATILE;
ALTER FUNCTION wallet.balance_at(bigint, timestamptz) VOLATILE;
ALTER FUNCTION wallet.find_account(bigint, text) VOLATILE;
ALTER FUNCTION wallet.replay_ledger(bigint, timestamptz) VOLATILE;
ALTER FUNCTION wallet.history(bigint, timestamptz, timestamptz) VOLATILE;
ALTER FUNCTION wallet.program_liability(bigint, timestamptz) VOLATILE;
ALTER FUNCTION wallet.verify_ledger(bigint) VOLATILE;


-- == 6. internal helpers in schema wallet_internal (issues 8, 9)
-- The helpers move out of the API schema into a member schema of their own;
-- SET SCHEMA keeps each one's definition, comment, privileges and every
-- trigger that calls it (triggers name their function by oid).  Then every
-- function that calls a moved helper by name is replaced with its 0.2.0
-- definition, and wallet.error_codes lists the WL SQLSTATEs.
CREATE SCHEMA wallet_internal;
REVOKE ALL ON SCHEMA wallet_internal FROM PUBLIC;
COMMENT ON SCHEMA wallet_internal IS 'internal helpers of the wallet extension (not an API: they change between versions)';

ALTER TYPE wallet.locked_account SET SCHEMA wallet_internal;
COMMENT ON TYPE wallet_internal.locked_account IS 'what wallet_internal.lock_account returns to a posting';

ALTER FUNCTION wallet.installation_guard() SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.code_cache_invalidate() SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.campaigns_guard() SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.code_keys_guard() SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.campaigns_keep() SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.campaigns_fresh_id() SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.campaigns_create_serials() SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.idem_check(text, text, jsonb, jsonb) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.entries_append_only() SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.check_posting(bigint, text, text, text, boolean) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.idem_entry(wallet.entries) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.entry_by_key(bigint, text) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.unknown_account(bigint) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.program_closed(bigint) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.entry_step(wallet.points_ledger, wallet.entries) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.post_entry(wallet.points_ledger, wallet.entries) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.settle_account(bigint, timestamptz, timestamptz) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.lock_account(bigint, text) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.post_once(wallet_internal.locked_account, wallet.entries, boolean) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.lock_hold(bigint) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.hold_not_open(bigint, wallet.entries) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.check_expiry_as_of(timestamptz) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.expire_due_accounts(timestamptz, int) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.code_guard_thresholds(bigint) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.code_guard_attempt(bigint, text, text, boolean, int, int, interval) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.code_guard_forget(bigint, text, text) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.code_check_args(text, text, jsonb, boolean) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.code_precheck(text, text, text, text) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.code_caps_unchanged(bigint, int, int, bigint) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.code_lock_counters(bigint, bigint, text) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.code_bump_counters(bigint, bigint, text, int, boolean, boolean, boolean) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.code_caps_recount() SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.code_caps_status(bigint, bigint, text, int, int, bigint, bigint, bigint, bigint) SET SCHEMA wallet_internal;
ALTER FUNCTION wallet.idem_code(text, text, text, interval) SET SCHEMA wallet_internal;

CREATE OR REPLACE FUNCTION wallet.clear_code_failures(member_ref text DEFAULT NULL, source text DEFAULT NULL,
                                           merchant_id bigint DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n bigint;
BEGIN
    IF $1 IS NULL AND $2 IS NULL THEN
        RAISE EXCEPTION 'member_ref and source must not both be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The failed checks of a member, of a source or of both are forgotten.';
    END IF;
    IF $3 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM wallet.merchants m WHERE m.merchant_id = $3) THEN
        RAISE EXCEPTION 'merchant % does not exist', $3
            USING ERRCODE = 'WL102', DETAIL = 'Failed checks are counted per merchant registered in wallet.merchants.';
    END IF;
    PERFORM wallet_internal.code_guard_forget($3, $1, $2);
    WITH d AS (
        DELETE FROM wallet.code_failed_attempts a
         WHERE (a.member_ref = $1 OR a.source = $2)
           AND ($3 IS NULL OR a.merchant_id = $3)
        RETURNING 1)
    SELECT count(*) INTO n FROM d;
    RETURN n;
END
$$;
CREATE OR REPLACE FUNCTION wallet_internal.code_precheck(input text, member_ref text, source text, operation text,
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
CREATE OR REPLACE FUNCTION wallet_internal.code_lock_counters(campaign_id bigint, serial bigint, member_ref text,
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
        PERFORM wallet_internal.code_caps_unchanged($1, max_per_code, max_per_member, max_total);
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
CREATE OR REPLACE FUNCTION wallet.issue_code(campaign_id bigint, member_ref text)
    RETURNS wallet.marketing_code
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    _code wallet.marketing_code;
BEGIN
    PERFORM wallet_internal.code_check_args(member_ref, NULL, NULL, false);
    IF campaign_id IS NULL THEN
        RAISE EXCEPTION 'campaign_id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  DETAIL = 'A code is issued in a campaign, named by its id.';
    END IF;
    SELECT g INTO _code FROM wallet.generate_codes(issue_code.campaign_id, 1) g;
    INSERT INTO wallet.code_bindings (campaign_id, serial, code, member_ref)
    VALUES (issue_code.campaign_id, wallet.code_serial(_code), _code, issue_code.member_ref);
    RETURN _code;
END
$$;
CREATE OR REPLACE FUNCTION wallet.check_code(code text, member_ref text, context jsonb)
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
CREATE OR REPLACE FUNCTION wallet.redeem_code(code text, member_ref text, idempotency_key text, context jsonb DEFAULT '{}')
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

    -- Same key: one session at a time; the later one sees the earlier's row.
    PERFORM pg_advisory_xact_lock(1464598529, hashtext(_key));
    SELECT * INTO _red FROM wallet.code_redemptions d WHERE d.idempotency_key = _key;
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

    SELECT * INTO _res FROM wallet.code_reservations v WHERE v.idempotency_key = _key FOR UPDATE;
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

    INSERT INTO wallet.code_redemptions (campaign_id, serial, code, member_ref, idempotency_key, context,
                                         reservation_id, redeemed_at)
    VALUES (r.campaign_id, r.serial, _code, _member, _key, _ctx,
            r.reservation_id, clock_timestamp())
    RETURNING redemption_id, redeemed_at INTO r.redemption_id, r.redeemed_at;
    PERFORM wallet_internal.code_bump_counters(r.campaign_id, r.serial, _member, 1, cnt.max_per_code IS NOT NULL,
                                      cnt.max_per_member IS NOT NULL, cnt.max_total IS NOT NULL);
    r.status := 'ok';
    RETURN r;
END
$$;
CREATE OR REPLACE FUNCTION wallet.undo_redemption(redemption_id bigint, reason text)
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
    SELECT * INTO _red FROM wallet.code_redemptions d WHERE d.redemption_id = undo_redemption.redemption_id FOR UPDATE;
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
CREATE OR REPLACE FUNCTION wallet.reserve_code(code text, member_ref text, idempotency_key text, ttl interval, context jsonb DEFAULT '{}')
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
    IF _ttl IS NULL THEN
        RAISE EXCEPTION 'reservation ttl must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A reservation holds a code for a given time.';
    END IF;
    IF _ttl <= interval '0' THEN
        RAISE EXCEPTION 'reservation ttl must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A reservation holds a code for a positive time; %s was given.', _ttl);
    END IF;
    r.member_ref := _member;
    r.replayed := false;

    PERFORM pg_advisory_xact_lock(1464598529, hashtext(_key));
    SELECT * INTO _res FROM wallet.code_reservations v WHERE v.idempotency_key = _key;
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
    SELECT * INTO _red FROM wallet.code_redemptions d WHERE d.idempotency_key = _key;
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
    INSERT INTO wallet.code_reservations (campaign_id, serial, code, member_ref, idempotency_key, ttl, reserved_at, expires_at)
    VALUES (pc.campaign_id, pc.serial, pc.code, _member, _key, _ttl, _now, _now + _ttl)
    RETURNING reservation_id, expires_at INTO r.reservation_id, r.expires_at;
    -- Touch the counters: in REPEATABLE READ a concurrent change of them then
    -- fails with a serialization error instead of going unseen.
    PERFORM wallet_internal.code_bump_counters(pc.campaign_id, pc.serial, _member, 0, cnt.max_per_code IS NOT NULL,
                                      cnt.max_per_member IS NOT NULL, cnt.max_total IS NOT NULL);
    r.status := 'ok';
    RETURN r;
END
$$;
CREATE OR REPLACE FUNCTION wallet_internal.post_entry(l wallet.points_ledger, e wallet.entries) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    s wallet.ledger_step;
BEGIN
    IF e.entry_id IS NULL THEN
        e.entry_id := nextval('wallet.entries_entry_id_seq');
    END IF;
    s := wallet_internal.entry_step(l, e);
    e.amount := s.amount;
    e.balance_after := s.balance_after;
    e.lots := s.lots;
    e.actor := current_user;
    UPDATE wallet.accounts SET ledger = s.ledger, next_event = s.next_event WHERE account_id = e.account_id;
    INSERT INTO wallet.entries (entry_id, account_id, kind, amount, balance_after, idempotency_key, reason, reference,
                                lots, hold_id, reverses, actor, created_at, points, expires_at, policy)
    VALUES (e.entry_id, e.account_id, e.kind, e.amount, e.balance_after, e.idempotency_key, e.reason, e.reference,
            e.lots, e.hold_id, e.reverses, e.actor, e.created_at, e.points, e.expires_at, e.policy)
    RETURNING * INTO e;
    RETURN e;
END
$$;
CREATE OR REPLACE FUNCTION wallet_internal.settle_account(account_id bigint, as_of timestamptz, at timestamptz) RETURNS int
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    l wallet.points_ledger;
    h record;
    e wallet.entries;
    n int := 0;
BEGIN
    SELECT a.ledger INTO l FROM wallet.accounts a WHERE a.account_id = settle_account.account_id;
    IF EXISTS (SELECT FROM wallet.ledger_lots(l) x WHERE x.hold_id IS NULL AND x.expires_at <= as_of) THEN
        e.account_id := settle_account.account_id;
        e.kind := 'expire';
        e.reason := 'points expired';
        e.created_at := at;
        e.expires_at := as_of;
        PERFORM wallet_internal.post_entry(l, e);
        SELECT a.ledger INTO l FROM wallet.accounts a WHERE a.account_id = settle_account.account_id;
        n := 1;
    END IF;
    FOR h IN SELECT DISTINCT x.hold_id FROM wallet.ledger_lots(l) x
              WHERE x.hold_expires_at <= as_of ORDER BY x.hold_id LOOP
        e := NULL;
        e.account_id := settle_account.account_id;
        e.kind := 'release';
        e.reason := 'hold expired';
        e.reference := (SELECT x.reference FROM wallet.entries x WHERE x.entry_id = h.hold_id);
        e.hold_id := h.hold_id;
        e.created_at := at;
        e.expires_at := as_of;
        PERFORM wallet_internal.post_entry(l, e);
        SELECT a.ledger INTO l FROM wallet.accounts a WHERE a.account_id = settle_account.account_id;
    END LOOP;
    -- FOUND: the loop released a hold
    IF NOT FOUND AND n = 0 THEN
        -- nothing was due after all: keep next_event exact anyway
        UPDATE wallet.accounts a SET next_event = (wallet.ledger_apply(l, 'expire', as_of, NULL)).next_event
         WHERE a.account_id = settle_account.account_id;
    END IF;
    RETURN n;
END
$$;
CREATE OR REPLACE FUNCTION wallet_internal.lock_account(account_id bigint, idempotency_key text DEFAULT NULL)
    RETURNS wallet_internal.locked_account
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    due timestamptz;
    r wallet_internal.locked_account;
    prior wallet.entries;
BEGIN
    SELECT a.ledger, a.program_id, a.next_event, p.closed_at IS NOT NULL, p.expiry, p.granularity
      INTO r.ledger, r.program_id, due, r.closed, r.expiry, r.granularity
      FROM wallet.accounts a JOIN wallet.programs p ON p.program_id = a.program_id
     WHERE a.account_id = lock_account.account_id
       FOR NO KEY UPDATE OF a;
    IF NOT FOUND THEN
        PERFORM wallet_internal.unknown_account(lock_account.account_id);
    END IF;
    r.at := clock_timestamp();
    IF idempotency_key IS NOT NULL THEN
        SELECT * INTO prior FROM wallet.entries x
         WHERE x.account_id = lock_account.account_id AND x.idempotency_key = lock_account.idempotency_key;
        IF FOUND THEN
            r.prior := prior;
            RETURN r;   -- a retry: nothing will be posted, nothing to settle
        END IF;
    END IF;
    IF due <= r.at THEN
        PERFORM wallet_internal.settle_account(lock_account.account_id, r.at, r.at);
        SELECT a.ledger INTO r.ledger FROM wallet.accounts a WHERE a.account_id = lock_account.account_id;
    END IF;
    RETURN r;
END
$$;
CREATE OR REPLACE FUNCTION wallet_internal.post_once(a wallet_internal.locked_account, e wallet.entries, check_closed boolean DEFAULT true)
    RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF (a.prior).entry_id IS NOT NULL THEN
        PERFORM wallet_internal.idem_check((a.prior).idempotency_key,
                                  format('%s entry %s on account %s', (a.prior).kind, (a.prior).entry_id, (a.prior).account_id),
                                  wallet_internal.idem_entry(a.prior), wallet_internal.idem_entry(e));
        RETURN a.prior;
    END IF;
    IF check_closed AND a.closed THEN
        PERFORM wallet_internal.program_closed(a.program_id);
    END IF;
    RETURN wallet_internal.post_entry(a.ledger, e);
END
$$;
CREATE OR REPLACE FUNCTION wallet.open_account(program_id bigint, member_ref text) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
    is_closed boolean;
BEGIN
    IF program_id IS NULL OR member_ref IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN program_id IS NULL THEN 'program_id' ELSE 'member reference' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'An account is opened in a points program for the merchant app''s own user id.';
    END IF;
    IF btrim(member_ref) = '' THEN
        RAISE EXCEPTION 'member reference must not be blank'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An account is opened for the merchant app''s own user id.';
    END IF;
    -- a key of a unique index, like the member references of the redemption API
    IF length(member_ref) > 256 THEN
        RAISE EXCEPTION 'member reference is too long'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A member reference has at most 256 characters; this one has %s.', length(member_ref));
    END IF;
    SELECT p.closed_at IS NOT NULL INTO is_closed FROM wallet.programs p WHERE p.program_id = open_account.program_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
    SELECT a.account_id INTO id FROM wallet.accounts a
     WHERE a.program_id = open_account.program_id AND a.member_ref = open_account.member_ref;
    IF FOUND THEN
        RETURN id;
    END IF;
    IF is_closed THEN
        PERFORM wallet_internal.program_closed(program_id);
    END IF;
    -- a concurrent open of the same member waits on the unique index, then finds the row
    INSERT INTO wallet.accounts (program_id, member_ref) VALUES (open_account.program_id, open_account.member_ref)
    ON CONFLICT ON CONSTRAINT accounts_program_id_member_ref_key DO NOTHING
    RETURNING account_id INTO id;
    IF id IS NULL THEN
        SELECT a.account_id INTO id FROM wallet.accounts a
         WHERE a.program_id = open_account.program_id AND a.member_ref = open_account.member_ref;
    END IF;
    RETURN id;
END
$$;
CREATE OR REPLACE FUNCTION wallet.accrue(account_id bigint, points bigint, idempotency_key text, reason text,
        reference text DEFAULT NULL, expires_at timestamptz DEFAULT NULL) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    at timestamptz;
    a wallet_internal.locked_account;
    e wallet.entries;
BEGIN
    PERFORM wallet_internal.check_posting(points, reason, idempotency_key, 'accrue');
    a := wallet_internal.lock_account(account_id, idempotency_key);
    at := coalesce((a.prior).created_at, a.at);   -- a retry is compared as made when the first call was
    e.account_id := account_id;
    e.kind := 'accrue';
    e.idempotency_key := idempotency_key;
    e.reason := reason;
    e.reference := reference;
    e.created_at := at;
    e.points := points;
    e.expires_at := coalesce(expires_at, wallet.policy_expiry(at, a.expiry, a.granularity));
    RETURN wallet_internal.post_once(a, e);
END
$$;
CREATE OR REPLACE FUNCTION wallet.redeem(account_id bigint, points bigint, idempotency_key text, reason text,
        reference text DEFAULT NULL) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    a wallet_internal.locked_account;
    e wallet.entries;
BEGIN
    PERFORM wallet_internal.check_posting(points, reason, idempotency_key, 'redeem');
    a := wallet_internal.lock_account(account_id, idempotency_key);
    e.account_id := account_id;
    e.kind := 'redeem';
    e.idempotency_key := idempotency_key;
    e.reason := reason;
    e.reference := reference;
    e.created_at := a.at;
    e.points := points;
    RETURN wallet_internal.post_once(a, e);
END
$$;
CREATE OR REPLACE FUNCTION wallet.hold(account_id bigint, points bigint, idempotency_key text, ttl interval, reason text,
        reference text DEFAULT NULL) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    at timestamptz;
    a wallet_internal.locked_account;
    e wallet.entries;
BEGIN
    PERFORM wallet_internal.check_posting(points, reason, idempotency_key, 'hold');
    IF ttl IS NULL THEN
        RAISE EXCEPTION 'time to live must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A hold lasts a given time, after which it stops holding.';
    END IF;
    IF ttl <= interval '0' THEN
        RAISE EXCEPTION 'time to live must be positive'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A hold lasts a positive time, after which it stops holding.';
    END IF;
    a := wallet_internal.lock_account(account_id, idempotency_key);
    at := coalesce((a.prior).created_at, a.at);   -- a retry is compared as made when the first call was
    -- the hold id is the entry id, known before the ledger changes
    e.entry_id := CASE WHEN (a.prior).entry_id IS NULL THEN nextval('wallet.entries_entry_id_seq') END;
    e.hold_id := e.entry_id;
    e.account_id := account_id;
    e.kind := 'hold';
    e.idempotency_key := idempotency_key;
    e.reason := reason;
    e.reference := reference;
    e.created_at := at;
    e.points := points;
    e.expires_at := at + ttl;
    RETURN wallet_internal.post_once(a, e);
END
$$;
CREATE OR REPLACE FUNCTION wallet_internal.lock_hold(hold_id bigint,
        OUT h wallet.entries, OUT closing wallet.entries, OUT ledger wallet.points_ledger, OUT at timestamptz)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF hold_id IS NULL THEN
        RAISE EXCEPTION 'hold_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A hold is named by its id, the entry_id of its hold entry.';
    END IF;
    SELECT * INTO h FROM wallet.entries x WHERE x.entry_id = lock_hold.hold_id AND x.kind = 'hold';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown hold'
            USING ERRCODE = 'WL206', DETAIL = format('There is no hold %s.', hold_id);
    END IF;
    SELECT * INTO closing FROM wallet.entries x
     WHERE x.hold_id = lock_hold.hold_id AND x.kind IN ('capture', 'release');
    at := clock_timestamp();
    IF closing.entry_id IS NULL THEN
        SELECT x.ledger, x.at INTO ledger, at FROM wallet_internal.lock_account(h.account_id) x;
        -- look again under the lock: a concurrent capture or release may have closed it
        SELECT * INTO closing FROM wallet.entries x
         WHERE x.hold_id = lock_hold.hold_id AND x.kind IN ('capture', 'release');
    END IF;
END
$$;
CREATE OR REPLACE FUNCTION wallet.capture(hold_id bigint, points bigint DEFAULT NULL, idempotency_key text DEFAULT NULL)
    RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    at timestamptz;
    k record;
    a wallet_internal.locked_account;
    e wallet.entries;
BEGIN
    IF points IS NOT NULL AND points <= 0 THEN
        RAISE EXCEPTION 'invalid amount of points'
            USING ERRCODE = 'WL204', DETAIL = 'The points to capture must be a positive number, or NULL for the whole hold.';
    END IF;
    k := wallet_internal.lock_hold(hold_id);
    at := k.at;
    e.account_id := (k.h).account_id;
    e.kind := 'capture';
    e.idempotency_key := idempotency_key;
    e.reason := (k.h).reason;
    e.reference := (k.h).reference;
    e.hold_id := hold_id;
    e.points := points;
    a.prior := wallet_internal.entry_by_key((k.h).account_id, idempotency_key);
    IF (a.prior).entry_id IS NOT NULL THEN
        RETURN wallet_internal.post_once(a, e);   -- a retry (or WL002)
    END IF;
    IF idempotency_key IS NULL AND (k.closing).kind = 'capture' AND (k.closing).points IS NOT DISTINCT FROM capture.points THEN
        RETURN k.closing;   -- the identical call without a key, repeated
    END IF;
    IF at >= (k.h).expires_at THEN
        RAISE EXCEPTION 'hold expired'
            USING ERRCODE = 'WL208',
                  DETAIL = format('Hold %s stopped holding its points when its time to live ran out.', hold_id);
    END IF;
    IF (k.closing).entry_id IS NOT NULL THEN
        PERFORM wallet_internal.hold_not_open(hold_id, k.closing);
    END IF;
    e.created_at := at;
    RETURN wallet_internal.post_entry(k.ledger, e);
END
$$;
CREATE OR REPLACE FUNCTION wallet.release(hold_id bigint, idempotency_key text DEFAULT NULL) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    k record;
    a wallet_internal.locked_account;
    e wallet.entries;
BEGIN
    k := wallet_internal.lock_hold(hold_id);
    e.account_id := (k.h).account_id;
    e.kind := 'release';
    e.idempotency_key := idempotency_key;
    e.reason := (k.h).reason;
    e.reference := (k.h).reference;
    e.hold_id := hold_id;
    a.prior := wallet_internal.entry_by_key((k.h).account_id, idempotency_key);
    IF (a.prior).entry_id IS NOT NULL THEN
        RETURN wallet_internal.post_once(a, e);   -- a retry (or WL002)
    END IF;
    IF (k.closing).kind = 'release' THEN
        RETURN k.closing;   -- released already (by this call before, or when the hold lapsed)
    ELSIF (k.closing).entry_id IS NOT NULL THEN
        PERFORM wallet_internal.hold_not_open(hold_id, k.closing);
    END IF;
    e.created_at := k.at;
    RETURN wallet_internal.post_entry(k.ledger, e);
END
$$;
CREATE OR REPLACE FUNCTION wallet.reverse(entry_id bigint, idempotency_key text, reason text,
        policy text DEFAULT 'within_balance') RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    o wallet.entries;
    a wallet_internal.locked_account;
    e wallet.entries;
    r bigint;
BEGIN
    IF entry_id IS NULL OR policy IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN entry_id IS NULL THEN 'entry_id' ELSE 'policy' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A reversal names the entry it undoes and a policy, ''within_balance'' by default.';
    END IF;
    IF policy NOT IN ('within_balance', 'unlimited') THEN
        RAISE EXCEPTION 'unknown reversal policy "%"', policy
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The policy is ''within_balance'' or ''unlimited''.';
    END IF;
    PERFORM wallet_internal.check_posting(NULL, reason, idempotency_key, NULL);
    SELECT * INTO o FROM wallet.entries x WHERE x.entry_id = reverse.entry_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown entry'
            USING ERRCODE = 'WL212', DETAIL = format('There is no journal entry %s.', entry_id);
    END IF;
    a := wallet_internal.lock_account(o.account_id, idempotency_key);
    IF (a.prior).entry_id IS NULL THEN
        IF o.kind NOT IN ('accrue', 'redeem', 'capture') THEN
            RAISE EXCEPTION 'entry not reversible'
                USING ERRCODE = 'WL211',
                      DETAIL = format('Entry %s is a %s entry; only accrue, redeem and capture entries can be reversed.', entry_id, o.kind),
                      HINT = 'Correct other postings with wallet.adjust.';
        END IF;
        SELECT x.entry_id INTO r FROM wallet.entries x WHERE x.reverses = reverse.entry_id;
        IF FOUND THEN
            RAISE EXCEPTION 'entry already reversed'
                USING ERRCODE = 'WL210', DETAIL = format('Entry %s was reversed by entry %s.', entry_id, r);
        END IF;
    END IF;
    -- refunds and chargebacks must work after a program closed
    e.account_id := o.account_id;
    e.kind := 'reverse';
    e.idempotency_key := idempotency_key;
    e.reason := reason;
    e.reference := o.reference;
    e.reverses := entry_id;
    e.created_at := a.at;
    e.policy := policy;
    RETURN wallet_internal.post_once(a, e, check_closed => false);
END
$$;
CREATE OR REPLACE FUNCTION wallet.adjust(account_id bigint, points bigint, idempotency_key text, reason text) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    at timestamptz;
    a wallet_internal.locked_account;
    e wallet.entries;
BEGIN
    PERFORM wallet_internal.check_posting(points, reason, idempotency_key, 'adjust', signed => true);
    a := wallet_internal.lock_account(account_id, idempotency_key);
    at := coalesce((a.prior).created_at, a.at);   -- a retry is compared as made when the first call was
    e.account_id := account_id;
    e.kind := 'adjust';
    e.idempotency_key := idempotency_key;
    e.reason := reason;
    e.created_at := at;
    e.points := points;
    e.expires_at := CASE WHEN points > 0 THEN wallet.policy_expiry(at, a.expiry, a.granularity) END;
    RETURN wallet_internal.post_once(a, e);
END
$$;
CREATE OR REPLACE FUNCTION wallet_internal.expire_due_accounts(as_of timestamptz, batch_size int,
        OUT accounts int, OUT expired bigint)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    acc bigint;
    due timestamptz;
BEGIN
    accounts := 0;
    expired := 0;
    FOR acc IN SELECT d.account_id
                 FROM (SELECT a.account_id FROM wallet.accounts a WHERE a.next_event <= as_of
                        ORDER BY a.next_event LIMIT batch_size) d
                ORDER BY d.account_id LOOP
        SELECT a.next_event INTO due FROM wallet.accounts a WHERE a.account_id = acc FOR NO KEY UPDATE;
        accounts := accounts + 1;
        IF due <= as_of THEN   -- a concurrent posting may have settled it meanwhile
            expired := expired + wallet_internal.settle_account(acc, as_of, clock_timestamp());
        END IF;
    END LOOP;
END
$$;
CREATE OR REPLACE FUNCTION wallet.expire_points(as_of timestamptz DEFAULT now()) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.check_expiry_as_of(as_of);
    RETURN (wallet_internal.expire_due_accounts(as_of, NULL)).expired;
END
$$;
CREATE OR REPLACE FUNCTION wallet.balance(account_id bigint, as_of timestamptz DEFAULT now()) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    b bigint;
BEGIN
    IF as_of IS NULL THEN
        RAISE EXCEPTION 'as_of must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The balance is taken at a given instant, now() by default.';
    END IF;
    SELECT wallet.ledger_balance(a.ledger, as_of) INTO b FROM wallet.accounts a WHERE a.account_id = balance.account_id;
    IF NOT FOUND THEN
        PERFORM wallet_internal.unknown_account(account_id);
    END IF;
    RETURN b;
END
$$;
CREATE OR REPLACE FUNCTION wallet.replay_ledger(account_id bigint, upto timestamptz DEFAULT 'infinity',
        OUT ledger wallet.points_ledger, OUT problem text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    e wallet.entries;
    s wallet.ledger_step;
BEGIN
    IF upto IS NULL THEN
        RAISE EXCEPTION 'upto must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The journal is replayed up to a given instant, infinity by default.';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.accounts a WHERE a.account_id = replay_ledger.account_id) THEN
        PERFORM wallet_internal.unknown_account(account_id);
    END IF;
    ledger := '';
    FOR e IN SELECT * FROM wallet.entries x WHERE x.account_id = replay_ledger.account_id AND x.created_at <= upto
              ORDER BY x.entry_id LOOP
        BEGIN
            s := wallet_internal.entry_step(ledger, e);
        EXCEPTION WHEN OTHERS THEN
            problem := format('Entry %s (%s) does not replay: %s.', e.entry_id, e.kind, SQLERRM);
            RETURN;
        END;
        IF problem IS NULL AND (s.amount <> e.amount OR s.balance_after <> e.balance_after) THEN
            problem := format('Entry %s (%s) replays to amount %s and balance %s, the journal says %s and %s.',
                              e.entry_id, e.kind, s.amount, s.balance_after, e.amount, e.balance_after);
        END IF;
        ledger := s.ledger;
    END LOOP;
END
$$;
CREATE OR REPLACE FUNCTION wallet.balance_at(account_id bigint, ts timestamptz) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    l wallet.points_ledger;
    lo bigint := 0;     -- last entry known to be created at or before ts (0: none)
    hi bigint;          -- first entry known to be created after ts
    p bigint;
    pt timestamptz;
    b bigint;
    nxt wallet.entries;
BEGIN
    IF ts IS NULL THEN
        RAISE EXCEPTION 'ts must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The balance is taken at a given instant.';
    END IF;
    SELECT a.ledger INTO l FROM wallet.accounts a WHERE a.account_id = balance_at.account_id;
    IF NOT FOUND THEN
        PERFORM wallet_internal.unknown_account(account_id);
    END IF;
    SELECT x.entry_id, x.created_at INTO hi, pt FROM wallet.entries x
     WHERE x.account_id = balance_at.account_id ORDER BY x.entry_id DESC LIMIT 1;
    IF NOT FOUND OR pt <= ts THEN
        RETURN wallet.ledger_balance(l, ts);
    END IF;
    LOOP
        SELECT x.entry_id, x.created_at INTO p, pt FROM wallet.entries x
         WHERE x.account_id = balance_at.account_id AND x.entry_id > lo AND x.entry_id < hi
           AND x.entry_id >= lo + (hi - lo) / 2
         ORDER BY x.entry_id LIMIT 1;
        IF NOT FOUND THEN
            SELECT x.entry_id, x.created_at INTO p, pt FROM wallet.entries x
             WHERE x.account_id = balance_at.account_id AND x.entry_id > lo AND x.entry_id < lo + (hi - lo) / 2
             ORDER BY x.entry_id DESC LIMIT 1;
            EXIT WHEN NOT FOUND;
        END IF;
        IF pt <= ts THEN lo := p; ELSE hi := p; END IF;
    END LOOP;
    IF lo = 0 THEN
        RETURN 0;   -- before the first entry the ledger is empty
    END IF;
    SELECT * INTO nxt FROM wallet.entries x WHERE x.entry_id = hi;
    IF nxt.kind = 'expire' OR (nxt.kind = 'release' AND nxt.expires_at IS NOT NULL) THEN
        RETURN wallet.ledger_balance((wallet.replay_ledger(account_id, ts)).ledger, ts);
    END IF;
    SELECT x.balance_after INTO b FROM wallet.entries x WHERE x.entry_id = lo;
    RETURN b;
END
$$;
CREATE OR REPLACE FUNCTION wallet.history(account_id bigint, from_ts timestamptz DEFAULT '-infinity',
        to_ts timestamptz DEFAULT 'infinity') RETURNS SETOF wallet.entries
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF from_ts IS NULL OR to_ts IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN from_ts IS NULL THEN 'from_ts' ELSE 'to_ts' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The history covers [from_ts, to_ts), by default all of it (-infinity to infinity).';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.accounts a WHERE a.account_id = history.account_id) THEN
        PERFORM wallet_internal.unknown_account(account_id);
    END IF;
    RETURN QUERY SELECT * FROM wallet.entries x
                  WHERE x.account_id = history.account_id AND x.created_at >= from_ts AND x.created_at < to_ts
                  ORDER BY x.entry_id;
END
$$;
CREATE OR REPLACE FUNCTION wallet.verify_ledger(bigint DEFAULT NULL)
    RETURNS TABLE (account_id bigint, stored_balance bigint, replayed_balance bigint, detail text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    a record;
    r record;
    d text;
BEGIN
    IF $1 IS NOT NULL
       AND NOT EXISTS (SELECT FROM wallet.accounts x WHERE x.account_id = $1) THEN
        PERFORM wallet_internal.unknown_account($1);
    END IF;
    FOR a IN SELECT x.account_id, x.ledger FROM wallet.accounts x
              WHERE $1 IS NULL OR x.account_id = $1
              ORDER BY x.account_id LOOP
        r := wallet.replay_ledger(a.account_id);
        d := coalesce(r.problem, wallet.ledger_diff(a.ledger, r.ledger));
        IF d IS NOT NULL THEN
            account_id := a.account_id;
            stored_balance := wallet.ledger_balance(a.ledger, now());
            replayed_balance := wallet.ledger_balance(r.ledger, now());
            detail := d;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;
CREATE OR REPLACE PROCEDURE wallet.expire_points_batched(as_of timestamptz DEFAULT now(), batch_size int DEFAULT 1000,
        max_batches int DEFAULT NULL)
    LANGUAGE plpgsql
    AS $$
DECLARE
    batches int := 0;
    r record;
BEGIN
    PERFORM wallet_internal.check_expiry_as_of(as_of);
    IF batch_size IS NULL OR batch_size OPERATOR(pg_catalog.<) 1 OR max_batches OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'batch_size and max_batches must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Due accounts are settled batch_size at a time, at most max_batches times (NULL: until none is due).';
    END IF;
    LOOP
        r := wallet_internal.expire_due_accounts(as_of, batch_size);
        -- each batch is its own transaction (an error here when CALLed inside a transaction block)
        COMMIT;
        batches := batches OPERATOR(pg_catalog.+) 1;
        EXIT WHEN r.accounts OPERATOR(pg_catalog.<) batch_size OR batches OPERATOR(pg_catalog.=) max_batches;
    END LOOP;
END
$$;

-- The project's own SQLSTATEs (class WL), for applications and DBAs:
-- SELECT * FROM wallet.error_codes.  The same codes and names as
-- src/errcodes.h and README's error table, the meaning as README gives it
-- (test/checks/sqlstates_documented.t holds the three together).  A view of
-- constants: nothing to update, nothing for pg_dump to keep.
CREATE VIEW wallet.error_codes (sqlstate, name, description) AS VALUES
    ('WL001', 'root_key_not_loaded', 'a function that needs the root key runs on a server started without one (hint: the settings to configure)'),
    ('WL002', 'idempotency_key_reused', 'an idempotency key is sent again with a different fingerprint (see Idempotency): a posting with other points, reason, reference, expiry, hold or operation on the same account; a redemption or reservation with another code, member or ttl, or a redemption''s key for a reservation'),
    ('WL101', 'unknown_campaign', 'generate_codes, rotate_code_key, retire_code_key on a campaign that does not exist'),
    ('WL102', 'unknown_merchant', 'create_campaign, create_program, set_code_guard or clear_code_failures for a merchant that does not exist'),
    ('WL103', 'unknown_key_version', 'retire_code_key of a version the campaign does not have'),
    ('WL104', 'retire_current_key', 'retire_code_key of the version that signs new codes (rotate first)'),
    ('WL105', 'key_versions_exhausted', 'rotate_code_key past version 1023'),
    ('WL106', 'serials_exhausted', 'generate_codes past serial 2^38 − 1 (the refused call uses up no serial)'),
    ('WL107', 'campaign_field_fixed', 'an UPDATE changing a campaign''s prefix or mac_bits, or lowering its current_key_version'),
    ('WL108', 'current_key_retired', 'generate_codes when the campaign''s current key version was retired by hand'),
    ('WL109', 'serial_sequence_missing', 'generate_codes, campaign_next_serial when the campaign''s sequence wallet.campaign_<id>_serials was dropped by hand (it is not recreated: that would repeat serials)'),
    ('WL110', 'campaign_ids_exhausted', 'create_campaign once every campaign id up to 2^32 − 1 (the largest a code carries) has been handed out'),
    ('WL120', 'installation_id_fixed', 'UPDATE, DELETE or TRUNCATE of wallet.installation, or a new installation id once key versions are bound to the current one'),
    ('WL121', 'key_binding_fixed', 'an unbound (legacy) key version inserted by anyone but the owner of wallet.code_keys, or a key version''s installation_id changed'),
    ('WL122', 'campaign_not_deletable', 'DELETE or TRUNCATE of wallet.campaigns (end a campaign instead)'),
    ('WL123', 'campaign_id_reused', 'an INSERT into wallet.campaigns with an explicit campaign_id the identity has already handed out'),
    ('WL150', 'unknown_redemption', 'undo_redemption names no redemption'),
    ('WL151', 'redemption_already_undone', 'undo_redemption on a redemption that is already undone'),
    ('WL152', 'unknown_reservation', 'release_reservation names no reservation'),
    ('WL153', 'reservation_converted', 'release_reservation on a reservation that was already redeemed (undo the redemption instead)'),
    ('WL201', 'unknown_account', 'no points account with that id'),
    ('WL202', 'program_closed', 'a posting or a new account in a closed program'),
    ('WL203', 'insufficient_points', 'a redemption, hold or negative adjustment exceeds the spendable balance; nothing is posted'),
    ('WL204', 'invalid_amount', 'points missing, zero or negative where a positive number is required (zero for adjust)'),
    ('WL205', 'amount_out_of_range', 'a balance, lot or lifetime total would exceed bigint'),
    ('WL206', 'unknown_hold', 'no hold with that id'),
    ('WL207', 'hold_not_open', 'the hold was already captured or released (and this is not the identical repeated call)'),
    ('WL208', 'hold_expired', 'capture after the hold''s time to live ran out'),
    ('WL209', 'capture_exceeds_hold', 'capture of more points than the hold holds'),
    ('WL210', 'entry_already_reversed', 'the entry was already reversed'),
    ('WL211', 'entry_not_reversible', 'only accrue, redeem and capture entries can be reversed'),
    ('WL212', 'unknown_entry', 'no journal entry with that id'),
    ('WL213', 'journal_append_only', 'UPDATE, DELETE or TRUNCATE on wallet.entries'),
    ('WL214', 'unknown_program', 'no points program with that id');
COMMENT ON VIEW wallet.error_codes IS 'every SQLSTATE of class WL the extension raises: code, name and when it is raised';
COMMENT ON COLUMN wallet.error_codes.sqlstate IS 'the five-character SQLSTATE, WL followed by three digits';
COMMENT ON COLUMN wallet.error_codes.name IS 'the code''s name (src/errcodes.h: ERRCODE_WL_<NAME>)';
COMMENT ON COLUMN wallet.error_codes.description IS 'when the extension raises it';

-- Index names follow one pattern, <table>_<what>_idx (README "Naming").
ALTER INDEX wallet.installation_one_row RENAME TO installation_one_row_idx;
ALTER INDEX wallet.code_failed_attempts_member RENAME TO code_failed_attempts_member_idx;
ALTER INDEX wallet.code_failed_attempts_source RENAME TO code_failed_attempts_source_idx;
ALTER INDEX wallet.code_failed_attempts_at RENAME TO code_failed_attempts_at_idx;
ALTER INDEX wallet.code_bindings_member RENAME TO code_bindings_member_idx;
ALTER INDEX wallet.code_reservations_active_code RENAME TO code_reservations_active_code_idx;
ALTER INDEX wallet.code_reservations_active_member RENAME TO code_reservations_active_member_idx;
ALTER INDEX wallet.code_reservations_active_campaign RENAME TO code_reservations_active_campaign_idx;
ALTER INDEX wallet.code_redemptions_code RENAME TO code_redemptions_code_idx;
ALTER INDEX wallet.code_redemptions_member RENAME TO code_redemptions_member_idx;

-- == 8. members, erasure, audit (issue 9)
-- The part sql/ext/members.sql, with the member_id columns of accounts and
-- code bindings backfilled, the functions that now create members, and
-- WL401 in wallet.error_codes.

-- Members, erasure and the audit log (issue 9).
--
-- A member is the merchant app's own user reference (member_ref) at one
-- merchant.  Accounts and code bindings refer to their member by member_id
-- (a surrogate key, so the reference does not depend on a merchant_id column
-- of accounts, and erasing a member changes no key that other rows point
-- at); they keep their member_ref too (the lookups of the hot path use it),
-- and wallet.forget_member pseudonymises it there in the same transaction.

------------------------------------------------------------------------------
-- Members
------------------------------------------------------------------------------

CREATE TABLE wallet.members (
    member_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    member_ref  text NOT NULL,
    time_zone   text,
    locale      text,
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'forgotten')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (merchant_id, member_ref)
);
COMMENT ON TABLE wallet.members IS 'members of each merchant: the app''s own user reference with the member''s time zone and locale; accounts and code bindings refer to them';
COMMENT ON COLUMN wallet.members.member_id IS 'member id, referenced by accounts and code bindings';
COMMENT ON COLUMN wallet.members.merchant_id IS 'merchant the member belongs to';
COMMENT ON COLUMN wallet.members.member_ref IS 'the merchant app''s own user id (personal data), unique per merchant; forgotten: followed by a random pseudonym once erased';
COMMENT ON COLUMN wallet.members.time_zone IS 'the member''s IANA time zone (a name of pg_timezone_names); NULL = unknown';
COMMENT ON COLUMN wallet.members.locale IS 'the member''s locale as a BCP 47 tag (e.g. de-CH); NULL = unknown';
COMMENT ON COLUMN wallet.members.status IS 'active, or forgotten once wallet.forget_member erased the member''s personal data';
COMMENT ON COLUMN wallet.members.created_at IS 'when the member was first named';
COMMENT ON COLUMN wallet.members.updated_at IS 'when the member''s time zone, locale or status last changed';
SELECT pg_catalog.pg_extension_config_dump('wallet.members', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.members', 'member_id'), '');

-- Accounts and code bindings refer to their member (added at the end of the
-- tables, as the upgrade script adds them).
-- Every member_ref of an account or a code binding becomes a member of the
-- merchant of its program or campaign, first named when its earliest
-- account or binding was made.
INSERT INTO wallet.members (merchant_id, member_ref, created_at, updated_at)
SELECT merchant_id, member_ref, min(at), min(at)
  FROM (SELECT p.merchant_id, a.member_ref, a.opened_at AS at
          FROM wallet.accounts a JOIN wallet.programs p ON p.program_id = a.program_id
        UNION ALL
        SELECT k.merchant_id, b.member_ref, b.bound_at
          FROM wallet.code_bindings b JOIN wallet.campaigns k ON k.campaign_id = b.campaign_id) s
 GROUP BY merchant_id, member_ref
 ORDER BY min(at), merchant_id, member_ref;
ALTER TABLE wallet.accounts ADD COLUMN member_id bigint REFERENCES wallet.members;
UPDATE wallet.accounts a SET member_id = m.member_id
  FROM wallet.programs p, wallet.members m
 WHERE p.program_id = a.program_id AND m.merchant_id = p.merchant_id AND m.member_ref = a.member_ref;
ALTER TABLE wallet.accounts ALTER COLUMN member_id SET NOT NULL;
COMMENT ON COLUMN wallet.accounts.member_id IS 'the member owning the account (wallet.members)';
ALTER TABLE wallet.code_bindings ADD COLUMN member_id bigint REFERENCES wallet.members;
UPDATE wallet.code_bindings b SET member_id = m.member_id
  FROM wallet.campaigns k, wallet.members m
 WHERE k.campaign_id = b.campaign_id AND m.merchant_id = k.merchant_id AND m.member_ref = b.member_ref;
ALTER TABLE wallet.code_bindings ALTER COLUMN member_id SET NOT NULL;
COMMENT ON COLUMN wallet.code_bindings.member_id IS 'the member the code is bound to (wallet.members)';

-- Argument checks shared by the member functions.
CREATE FUNCTION wallet_internal.member_check(merchant_id bigint, member_ref text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF merchant_id IS NULL OR member_ref IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN merchant_id IS NULL THEN 'merchant_id' ELSE 'member reference' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A member is named by its merchant and the merchant app''s own user id.';
    END IF;
    IF btrim(member_ref) = '' OR length(member_ref) > 256 THEN
        RAISE EXCEPTION 'member reference must not be %', CASE WHEN btrim(member_ref) = '' THEN 'blank' ELSE 'longer than 256 characters' END
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A member reference is a non-blank text of at most 256 characters; this one has %s.', length(member_ref));
    END IF;
    IF member_ref LIKE 'forgotten:%' THEN
        RAISE EXCEPTION 'member reference must not start with "forgotten:"'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'References starting with "forgotten:" are the pseudonyms of erased members.';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.merchants m WHERE m.merchant_id = member_check.merchant_id) THEN
        RAISE EXCEPTION 'merchant % does not exist', merchant_id
            USING ERRCODE = 'WL102', DETAIL = 'Members belong to a merchant registered in wallet.merchants.';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.member_check(bigint, text) IS 'internal: raises 22004 for a NULL merchant or member reference, 22023 for a blank, oversized or forgotten: reference, WL102 for an unknown merchant';

-- The member of a reference, created if needed (race-safe): what opening an
-- account and issuing a code call.
CREATE FUNCTION wallet_internal.member_ensure(merchant_id bigint, member_ref text) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
BEGIN
    PERFORM wallet_internal.member_check(merchant_id, member_ref);
    SELECT m.member_id INTO id FROM wallet.members m
     WHERE m.merchant_id = member_ensure.merchant_id AND m.member_ref = member_ensure.member_ref;
    IF FOUND THEN
        RETURN id;
    END IF;
    -- a concurrent insert of the same member waits on the unique index, then finds the row
    INSERT INTO wallet.members (merchant_id, member_ref) VALUES (member_ensure.merchant_id, member_ensure.member_ref)
    ON CONFLICT ON CONSTRAINT members_merchant_id_member_ref_key DO NOTHING
    RETURNING member_id INTO id;
    IF id IS NULL THEN
        SELECT m.member_id INTO id FROM wallet.members m
         WHERE m.merchant_id = member_ensure.merchant_id AND m.member_ref = member_ensure.member_ref;
    END IF;
    RETURN id;
END
$$;
COMMENT ON FUNCTION wallet_internal.member_ensure(bigint, text) IS 'internal: the member_id of member_ref at the merchant, creating the member if needed (race-safe)';

CREATE FUNCTION wallet.upsert_member(merchant_id bigint, member_ref text, time_zone text DEFAULT NULL,
        locale text DEFAULT NULL) RETURNS wallet.members
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
    r wallet.members;
BEGIN
    IF time_zone IS NOT NULL
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_timezone_names z WHERE z.name = upsert_member.time_zone) THEN
        RAISE EXCEPTION 'unknown time zone "%"', left(time_zone, 64)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A member''s time zone is an IANA name such as Europe/Zurich (see pg_timezone_names).';
    END IF;
    IF locale IS NOT NULL
       AND (length(locale) > 35
            OR locale !~ '^[A-Za-z]{2,3}(-[A-Za-z]{4})?(-([A-Za-z]{2}|[0-9]{3}))?(-([A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*$') THEN
        RAISE EXCEPTION 'invalid locale "%"', left(locale, 64)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A member''s locale is a BCP 47 language tag such as de-CH, pt-BR or zh-Hant-TW.';
    END IF;
    id := wallet_internal.member_ensure(merchant_id, member_ref);
    UPDATE wallet.members m
       SET time_zone = coalesce(upsert_member.time_zone, m.time_zone),
           locale = coalesce(upsert_member.locale, m.locale),
           updated_at = now()
     WHERE m.member_id = id
       AND (m.time_zone IS DISTINCT FROM coalesce(upsert_member.time_zone, m.time_zone)
            OR m.locale IS DISTINCT FROM coalesce(upsert_member.locale, m.locale));
    SELECT * INTO r FROM wallet.members m WHERE m.member_id = id;
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet.upsert_member(bigint, text, text, text) IS 'returns the member of member_ref at the merchant, creating it if needed and setting its IANA time zone and BCP 47 locale when given (NULL keeps the current value)';

------------------------------------------------------------------------------
-- Audit log
------------------------------------------------------------------------------

CREATE TABLE wallet.audit_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id  bigint,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    session_role name NOT NULL DEFAULT session_user,
    acting_role  name NOT NULL,
    action       text NOT NULL CHECK (action IN ('insert', 'update', 'delete', 'forget_member')),
    object       jsonb NOT NULL,
    old_values   jsonb,
    new_values   jsonb
);
CREATE INDEX audit_log_merchant_idx ON wallet.audit_log (merchant_id, at);
COMMENT ON TABLE wallet.audit_log IS 'append-only log of administrative changes: merchants, programs, campaigns and their caps, key versions, guard settings, merchant grants, erasures; UPDATE, DELETE and TRUNCATE raise WL401';
COMMENT ON COLUMN wallet.audit_log.id IS 'audit record id, increasing';
COMMENT ON COLUMN wallet.audit_log.merchant_id IS 'merchant the change concerns; NULL for a global setting; not a foreign key, the log outlives merchants';
COMMENT ON COLUMN wallet.audit_log.at IS 'when the change was made (clock time)';
COMMENT ON COLUMN wallet.audit_log.session_role IS 'session_user that made the change';
COMMENT ON COLUMN wallet.audit_log.acting_role IS 'role the session acted as (SET ROLE, else the session user); a SECURITY DEFINER function does not change it';
COMMENT ON COLUMN wallet.audit_log.action IS 'insert, update or delete (of the table named in object), or forget_member';
COMMENT ON COLUMN wallet.audit_log.object IS 'what changed: {"table": name, "key": {primary key columns}}';
COMMENT ON COLUMN wallet.audit_log.old_values IS 'the row before the change (NULL for insert); for forget_member NULL';
COMMENT ON COLUMN wallet.audit_log.new_values IS 'the row after the change (NULL for delete); for forget_member the reason, the pseudonym and the rows changed per table, never the erased data';
SELECT pg_catalog.pg_extension_config_dump('wallet.audit_log', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.audit_log', 'id'), '');

CREATE FUNCTION wallet_internal.audit_log_append_only() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RAISE EXCEPTION 'audit log is append-only'
        USING ERRCODE = 'WL401',
              DETAIL = format('%s on wallet.audit_log is refused: every administrative change stays on record.', TG_OP);
END
$$;
COMMENT ON FUNCTION wallet_internal.audit_log_append_only() IS 'trigger function refusing UPDATE, DELETE and TRUNCATE on wallet.audit_log';
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON wallet.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.audit_log_append_only();

-- One record.  The acting role is the role GUC (set by SET ROLE, not by a
-- SECURITY DEFINER call), else the session user.
CREATE FUNCTION wallet_internal.audit_record(merchant_id bigint, action text, object jsonb, old_values jsonb, new_values jsonb)
    RETURNS bigint
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
    AS $$
    INSERT INTO wallet.audit_log (merchant_id, acting_role, action, object, old_values, new_values)
    VALUES (merchant_id,
            CASE WHEN current_setting('role') = 'none' THEN session_user ELSE current_setting('role')::name END,
            action, object, old_values, new_values)
    RETURNING id
$$;
COMMENT ON FUNCTION wallet_internal.audit_record(bigint, text, jsonb, jsonb, jsonb) IS 'internal: appends one record to wallet.audit_log with the session user and the acting role';

-- Row trigger of the audited tables; its arguments name the key columns.
-- The merchant is the row's merchant_id, or its campaign's (code_keys).
-- SECURITY DEFINER: whoever may change an audited table gets it recorded,
-- without any right on the log.  A restore (pg_restore, or a pg_dump script:
-- both set check_function_bodies off) by a superuser loads rows the dumped
-- log already records, and the log itself: not recorded again (a superuser
-- could disable the trigger anyway; no other role can skip it this way).
CREATE FUNCTION wallet_internal.audit_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    o jsonb := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END;
    n jsonb := CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END;
    r jsonb := coalesce(n, o);
    k jsonb := '{}';
    merchant bigint;
    i int;
BEGIN
    IF o = n THEN
        RETURN NULL;    -- nothing changed
    END IF;
    IF current_setting('check_function_bodies') = 'off'
       AND (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user) THEN
        RETURN NULL;    -- a restore
    END IF;
    FOR i IN 0 .. TG_NARGS - 1 LOOP
        k := k || jsonb_build_object(TG_ARGV[i], r -> TG_ARGV[i]);
    END LOOP;
    IF r ? 'merchant_id' THEN
        merchant := (r ->> 'merchant_id')::bigint;
    ELSIF r ? 'campaign_id' THEN
        SELECT c.merchant_id INTO merchant FROM wallet.campaigns c WHERE c.campaign_id = (r ->> 'campaign_id')::bigint;
    END IF;
    PERFORM wallet_internal.audit_record(merchant, lower(TG_OP), jsonb_build_object('table', TG_TABLE_NAME, 'key', k), o, n);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION wallet_internal.audit_change() IS 'trigger function recording an insert, update or delete of an administrative table in wallet.audit_log (arguments: the key columns)';

CREATE TRIGGER audit_change AFTER INSERT OR UPDATE OR DELETE ON wallet.merchants
    FOR EACH ROW EXECUTE FUNCTION wallet_internal.audit_change('merchant_id');
CREATE TRIGGER audit_change AFTER INSERT OR UPDATE OR DELETE ON wallet.programs
    FOR EACH ROW EXECUTE FUNCTION wallet_internal.audit_change('program_id');
CREATE TRIGGER audit_change AFTER INSERT OR UPDATE OR DELETE ON wallet.campaigns
    FOR EACH ROW EXECUTE FUNCTION wallet_internal.audit_change('campaign_id');
CREATE TRIGGER audit_change AFTER INSERT OR UPDATE OR DELETE ON wallet.code_keys
    FOR EACH ROW EXECUTE FUNCTION wallet_internal.audit_change('campaign_id', 'key_version');
CREATE TRIGGER audit_change AFTER INSERT OR UPDATE OR DELETE ON wallet.code_guard_settings
    FOR EACH ROW EXECUTE FUNCTION wallet_internal.audit_change('merchant_id');
COMMENT ON TRIGGER audit_change ON wallet.merchants IS 'records merchant changes in wallet.audit_log';
COMMENT ON TRIGGER audit_change ON wallet.programs IS 'records program changes (settings, closing) in wallet.audit_log';
COMMENT ON TRIGGER audit_change ON wallet.campaigns IS 'records campaign changes (settings, caps) in wallet.audit_log';
COMMENT ON TRIGGER audit_change ON wallet.code_keys IS 'records key rotations and retirements in wallet.audit_log';
COMMENT ON TRIGGER audit_change ON wallet.code_guard_settings IS 'records guard settings in wallet.audit_log';
-- Merchant grants are recorded too: the trigger on wallet.merchant_roles is
-- made with that table (section 7).

------------------------------------------------------------------------------
-- Erasure
------------------------------------------------------------------------------

-- Pseudonymises the member's reference everywhere with one random pseudonym
-- (sha256 of a random salt and the reference; the salt is not kept, so it is
-- irreversible and links nothing across merchants or erasures), clears the
-- member's time zone, locale and request contexts, deletes its failed
-- attempts and guard counters.  Rows are kept (not deleted) where they carry
-- amounts or counts, so ledgers, liabilities and campaign totals stay as
-- they were.  The journal (wallet.entries) holds no member_ref: its texts
-- are the app's (see README "Personal data and erasure").
CREATE FUNCTION wallet.forget_member(merchant_id bigint, member_ref text, reason text) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    _merchant bigint := merchant_id;
    _ref text := member_ref;
    pseudonym text;
    _member bigint;
    n jsonb := '{}';
    c bigint;
    t text;
    also text;
BEGIN
    PERFORM wallet_internal.member_check(_merchant, _ref);
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'reason must not be %', CASE WHEN reason IS NULL THEN 'null' ELSE 'blank' END
            USING ERRCODE = CASE WHEN reason IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'An erasure is recorded with the reason it was made for.';
    END IF;
    pseudonym := 'forgotten:' || encode(sha256(convert_to(gen_random_uuid()::text || _ref, 'UTF8')), 'hex');

    UPDATE wallet.members m SET member_ref = pseudonym, time_zone = NULL, locale = NULL, status = 'forgotten', updated_at = now()
     WHERE m.merchant_id = _merchant AND m.member_ref = _ref
    RETURNING m.member_id INTO _member;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('members', c);
    UPDATE wallet.accounts a SET member_ref = pseudonym
      FROM wallet.programs p
     WHERE p.program_id = a.program_id AND p.merchant_id = _merchant AND a.member_ref = _ref;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('accounts', c);
    -- the tables of a campaign's codes: the member_ref, and what else they hold of the member
    FOR t, also IN VALUES ('code_bindings', ''), ('code_reservations', ''),
                          ('code_redemptions', ', context = ''{}'''), ('member_use_counts', '') LOOP
        EXECUTE format('UPDATE wallet.%I x SET member_ref = $1%s FROM wallet.campaigns k
                         WHERE k.campaign_id = x.campaign_id AND k.merchant_id = $2 AND x.member_ref = $3', t, also)
          USING pseudonym, _merchant, _ref;
        GET DIAGNOSTICS c = ROW_COUNT;
        n := n || jsonb_build_object(t, c);
    END LOOP;
    -- failed attempts are forensics, not totals: deleted, with those that
    -- named no merchant (they cannot be told apart by merchant)
    DELETE FROM wallet.code_failed_attempts f
     WHERE f.member_ref = _ref AND (f.merchant_id = _merchant OR f.merchant_id IS NULL);
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('code_failed_attempts', c);
    PERFORM wallet_internal.code_guard_forget(_merchant, _ref, NULL);

    IF NOT EXISTS (SELECT FROM jsonb_each(n) e WHERE e.value <> '0') THEN
        RETURN false;   -- nothing names the member (e.g. erased before): nothing to record
    END IF;
    PERFORM wallet_internal.audit_record(_merchant, 'forget_member',
                                jsonb_build_object('table', 'members', 'key', jsonb_build_object('member_id', _member)),
                                NULL, jsonb_build_object('reason', reason, 'pseudonym', pseudonym, 'rows', n));
    RETURN true;
END
$$;
COMMENT ON FUNCTION wallet.forget_member(bigint, text, text) IS 'erases a member''s personal data at a merchant: pseudonymises its member_ref in every table, clears its time zone, locale and request contexts, deletes its failed attempts; ledgers and totals are unchanged; recorded in wallet.audit_log; returns false (and records nothing) when nothing names the member';

-- Opening an account and issuing a code create the member.
CREATE OR REPLACE FUNCTION wallet.open_account(program_id bigint, member_ref text) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
    is_closed boolean;
    merchant bigint;
    member bigint;
BEGIN
    IF program_id IS NULL OR member_ref IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN program_id IS NULL THEN 'program_id' ELSE 'member reference' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'An account is opened in a points program for the merchant app''s own user id.';
    END IF;
    IF btrim(member_ref) = '' THEN
        RAISE EXCEPTION 'member reference must not be blank'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An account is opened for the merchant app''s own user id.';
    END IF;
    -- a key of a unique index, like the member references of the redemption API
    IF length(member_ref) > 256 THEN
        RAISE EXCEPTION 'member reference is too long'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A member reference has at most 256 characters; this one has %s.', length(member_ref));
    END IF;
    SELECT p.closed_at IS NOT NULL, p.merchant_id INTO is_closed, merchant FROM wallet.programs p WHERE p.program_id = open_account.program_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
    member := wallet_internal.member_ensure(merchant, member_ref);   -- the member exists afterwards, whatever follows
    SELECT a.account_id INTO id FROM wallet.accounts a
     WHERE a.program_id = open_account.program_id AND a.member_ref = open_account.member_ref;
    IF FOUND THEN
        RETURN id;
    END IF;
    IF is_closed THEN
        PERFORM wallet_internal.program_closed(program_id);
    END IF;
    -- a concurrent open of the same member waits on the unique index, then finds the row
    INSERT INTO wallet.accounts (program_id, member_ref, member_id) VALUES (open_account.program_id, open_account.member_ref, member)
    ON CONFLICT ON CONSTRAINT accounts_program_id_member_ref_key DO NOTHING
    RETURNING account_id INTO id;
    IF id IS NULL THEN
        SELECT a.account_id INTO id FROM wallet.accounts a
         WHERE a.program_id = open_account.program_id AND a.member_ref = open_account.member_ref;
    END IF;
    RETURN id;
END
$$;
COMMENT ON FUNCTION wallet.open_account(bigint, text) IS 'returns the account of member_ref in the program, opening it (and creating the member, see wallet.members) if needed (idempotent, race-safe)';

CREATE OR REPLACE FUNCTION wallet.issue_code(campaign_id bigint, member_ref text)
    RETURNS wallet.marketing_code
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    _code wallet.marketing_code;
BEGIN
    PERFORM wallet_internal.code_check_args(member_ref, NULL, NULL, false);
    IF campaign_id IS NULL THEN
        RAISE EXCEPTION 'campaign_id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  DETAIL = 'A code is issued in a campaign, named by its id.';
    END IF;
    SELECT g INTO _code FROM wallet.generate_codes(issue_code.campaign_id, 1) g;
    INSERT INTO wallet.code_bindings (campaign_id, serial, code, member_ref, member_id)
    VALUES (issue_code.campaign_id, wallet.code_serial(_code), _code, issue_code.member_ref,
            wallet_internal.member_ensure((SELECT k.merchant_id FROM wallet.campaigns k WHERE k.campaign_id = issue_code.campaign_id),
                                 issue_code.member_ref));
    RETURN _code;
END
$$;
COMMENT ON FUNCTION wallet.issue_code(bigint, text) IS
    'mint one code of the campaign bound to a member (created if needed, see wallet.members): only that member can redeem it (others get bound_to_other_member)';

CREATE OR REPLACE VIEW wallet.error_codes (sqlstate, name, description) AS VALUES
    ('WL001', 'root_key_not_loaded', 'a function that needs the root key runs on a server started without one (hint: the settings to configure)'),
    ('WL002', 'idempotency_key_reused', 'an idempotency key is sent again with a different fingerprint (see Idempotency): a posting with other points, reason, reference, expiry, hold or operation on the same account; a redemption or reservation with another code, member or ttl, or a redemption''s key for a reservation'),
    ('WL101', 'unknown_campaign', 'generate_codes, rotate_code_key, retire_code_key on a campaign that does not exist'),
    ('WL102', 'unknown_merchant', 'create_campaign, create_program, set_code_guard or clear_code_failures for a merchant that does not exist'),
    ('WL103', 'unknown_key_version', 'retire_code_key of a version the campaign does not have'),
    ('WL104', 'retire_current_key', 'retire_code_key of the version that signs new codes (rotate first)'),
    ('WL105', 'key_versions_exhausted', 'rotate_code_key past version 1023'),
    ('WL106', 'serials_exhausted', 'generate_codes past serial 2^38 − 1 (the refused call uses up no serial)'),
    ('WL107', 'campaign_field_fixed', 'an UPDATE changing a campaign''s prefix or mac_bits, or lowering its current_key_version'),
    ('WL108', 'current_key_retired', 'generate_codes when the campaign''s current key version was retired by hand'),
    ('WL109', 'serial_sequence_missing', 'generate_codes, campaign_next_serial when the campaign''s sequence wallet.campaign_<id>_serials was dropped by hand (it is not recreated: that would repeat serials)'),
    ('WL110', 'campaign_ids_exhausted', 'create_campaign once every campaign id up to 2^32 − 1 (the largest a code carries) has been handed out'),
    ('WL120', 'installation_id_fixed', 'UPDATE, DELETE or TRUNCATE of wallet.installation, or a new installation id once key versions are bound to the current one'),
    ('WL121', 'key_binding_fixed', 'an unbound (legacy) key version inserted by anyone but the owner of wallet.code_keys, or a key version''s installation_id changed'),
    ('WL122', 'campaign_not_deletable', 'DELETE or TRUNCATE of wallet.campaigns (end a campaign instead)'),
    ('WL123', 'campaign_id_reused', 'an INSERT into wallet.campaigns with an explicit campaign_id the identity has already handed out'),
    ('WL150', 'unknown_redemption', 'undo_redemption names no redemption'),
    ('WL151', 'redemption_already_undone', 'undo_redemption on a redemption that is already undone'),
    ('WL152', 'unknown_reservation', 'release_reservation names no reservation'),
    ('WL153', 'reservation_converted', 'release_reservation on a reservation that was already redeemed (undo the redemption instead)'),
    ('WL201', 'unknown_account', 'no points account with that id'),
    ('WL202', 'program_closed', 'a posting or a new account in a closed program'),
    ('WL203', 'insufficient_points', 'a redemption, hold or negative adjustment exceeds the spendable balance; nothing is posted'),
    ('WL204', 'invalid_amount', 'points missing, zero or negative where a positive number is required (zero for adjust)'),
    ('WL205', 'amount_out_of_range', 'a balance, lot or lifetime total would exceed bigint'),
    ('WL206', 'unknown_hold', 'no hold with that id'),
    ('WL207', 'hold_not_open', 'the hold was already captured or released (and this is not the identical repeated call)'),
    ('WL208', 'hold_expired', 'capture after the hold''s time to live ran out'),
    ('WL209', 'capture_exceeds_hold', 'capture of more points than the hold holds'),
    ('WL210', 'entry_already_reversed', 'the entry was already reversed'),
    ('WL211', 'entry_not_reversible', 'only accrue, redeem and capture entries can be reversed'),
    ('WL212', 'unknown_entry', 'no journal entry with that id'),
    ('WL213', 'journal_append_only', 'UPDATE, DELETE or TRUNCATE on wallet.entries'),
    ('WL214', 'unknown_program', 'no points program with that id'),
    ('WL401', 'audit_append_only', 'UPDATE, DELETE or TRUNCATE on wallet.audit_log');

-- == 7. privileges and isolation (issue 9)
-- The roles, wallet.merchant_roles and its functions, wallet.acts_for and
-- row-level security, as sql/ext/privileges.sql makes them; then every
-- function that now treats another merchant's object as unknown, as its
-- part defines it.  The grants are in section 9, last.

-- Idempotency keys of redemptions and reservations become unique per
-- merchant (the merchant of the campaign, backfilled).
ALTER TABLE wallet.code_reservations ADD COLUMN merchant_id bigint;
UPDATE wallet.code_reservations v SET merchant_id = c.merchant_id FROM wallet.campaigns c WHERE c.campaign_id = v.campaign_id;
ALTER TABLE wallet.code_reservations ALTER COLUMN merchant_id SET NOT NULL;
ALTER TABLE wallet.code_reservations DROP CONSTRAINT code_reservations_idempotency_key_key;
CREATE UNIQUE INDEX code_reservations_idempotency_key_idx ON wallet.code_reservations (idempotency_key, merchant_id);
COMMENT ON COLUMN wallet.code_reservations.merchant_id IS 'merchant of the campaign: idempotency keys are unique per merchant';
ALTER TABLE wallet.code_redemptions ADD COLUMN merchant_id bigint;
UPDATE wallet.code_redemptions d SET merchant_id = c.merchant_id FROM wallet.campaigns c WHERE c.campaign_id = d.campaign_id;
ALTER TABLE wallet.code_redemptions ALTER COLUMN merchant_id SET NOT NULL;
ALTER TABLE wallet.code_redemptions DROP CONSTRAINT code_redemptions_idempotency_key_key;
CREATE UNIQUE INDEX code_redemptions_idempotency_key_idx ON wallet.code_redemptions (idempotency_key, merchant_id);
COMMENT ON COLUMN wallet.code_redemptions.merchant_id IS 'merchant of the campaign: idempotency keys are unique per merchant';
COMMENT ON COLUMN wallet.code_redemptions.idempotency_key IS 'idempotency key of the call (unique per merchant): a retry with it returns this row';

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'wallet_admin') THEN
        CREATE ROLE wallet_admin NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'wallet_app') THEN
        CREATE ROLE wallet_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'wallet_reader') THEN
        CREATE ROLE wallet_reader NOLOGIN;
    END IF;
END
$$;

CREATE TABLE wallet.merchant_roles (
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    role        regrole NOT NULL,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, role)
);
COMMENT ON TABLE wallet.merchant_roles IS 'which roles act for which merchant (wallet.grant_merchant): members of such a role see and change that merchant''s objects';
COMMENT ON COLUMN wallet.merchant_roles.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.merchant_roles.role IS 'role acting for the merchant, with every role that is a member of it';
COMMENT ON COLUMN wallet.merchant_roles.granted_at IS 'when the merchant was granted to the role';
SELECT pg_catalog.pg_extension_config_dump('wallet.merchant_roles', '');
CREATE TRIGGER audit_change AFTER INSERT OR UPDATE OR DELETE ON wallet.merchant_roles
    FOR EACH ROW EXECUTE FUNCTION wallet_internal.audit_change('merchant_id', 'role');
COMMENT ON TRIGGER audit_change ON wallet.merchant_roles IS 'records merchant grants in wallet.audit_log';

CREATE FUNCTION wallet_internal.caller() RETURNS regrole
    AS 'MODULE_PATHNAME', 'wallet_caller'
    LANGUAGE C STABLE;
COMMENT ON FUNCTION wallet_internal.caller() IS 'the role calling (session user or SET ROLE), unchanged by SECURITY DEFINER functions and by any argument';

CREATE FUNCTION wallet.acts_for(merchant_id bigint) RETURNS boolean
    AS 'MODULE_PATHNAME', 'wallet_acts_for'
    LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION wallet.acts_for(bigint) IS 'whether the calling role acts for the merchant: a superuser, the extension''s owner, or a member of a role granted the merchant (cached in the session until a grant, membership or role changes)';

CREATE FUNCTION wallet_internal.merchant_roles_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'wallet_merchant_roles_changed'
    LANGUAGE C;
COMMENT ON FUNCTION wallet_internal.merchant_roles_changed() IS 'trigger: a change of wallet.merchant_roles counts for wallet.acts_for from the next call on';
CREATE TRIGGER merchant_roles_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON wallet.merchant_roles
    FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.merchant_roles_changed();

-- WL102 exactly as for a merchant that does not exist.
CREATE FUNCTION wallet_internal.check_merchant(merchant_id bigint) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF merchant_id IS NULL THEN
        RAISE EXCEPTION 'merchant_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Every campaign and program belongs to a merchant.';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.merchants m WHERE m.merchant_id = check_merchant.merchant_id)
       OR NOT wallet.acts_for(merchant_id) THEN
        RAISE EXCEPTION 'merchant % does not exist', merchant_id
            USING ERRCODE = 'WL102', HINT = 'Register the merchant with wallet.create_merchant first.';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.check_merchant(bigint) IS 'raises 22004 for a NULL merchant id, WL102 for a merchant that does not exist or that the caller does not act for';

CREATE FUNCTION wallet.grant_merchant(merchant_id bigint, role regrole) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n int;
BEGIN
    PERFORM wallet_internal.check_merchant(merchant_id);
    IF role IS NULL THEN
        RAISE EXCEPTION 'role must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A merchant is granted to a role named by its name.';
    END IF;
    INSERT INTO wallet.merchant_roles AS r (merchant_id, role) VALUES (grant_merchant.merchant_id, grant_merchant.role)
        ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n > 0;
END
$$;
COMMENT ON FUNCTION wallet.grant_merchant(bigint, regrole) IS 'let a role (and its members) act for a merchant the caller acts for; returns false when it already did';

CREATE FUNCTION wallet.revoke_merchant(merchant_id bigint, role regrole) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n int;
BEGIN
    PERFORM wallet_internal.check_merchant(merchant_id);
    IF role IS NULL THEN
        RAISE EXCEPTION 'role must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A merchant is revoked from a role named by its name.';
    END IF;
    DELETE FROM wallet.merchant_roles r WHERE r.merchant_id = revoke_merchant.merchant_id AND r.role = revoke_merchant.role;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n > 0;
END
$$;
COMMENT ON FUNCTION wallet.revoke_merchant(bigint, regrole) IS 'stop a role (and its members) acting for a merchant the caller acts for; returns false when it did not';

CREATE FUNCTION wallet.my_merchants() RETURNS TABLE (merchant_id bigint, name text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT m.merchant_id, m.name FROM wallet.merchants m WHERE wallet.acts_for(m.merchant_id) ORDER BY m.merchant_id
$$;
COMMENT ON FUNCTION wallet.my_merchants() IS 'the merchants the calling role acts for';

-- Whether the caller acts for the merchant of a program, account or campaign
-- (false when there is none): each API function adds it to the lookup of
-- the object it names, so another merchant's object is not found.
CREATE FUNCTION wallet_internal.sees_program(program_id bigint) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT coalesce((SELECT wallet.acts_for(p.merchant_id) FROM wallet.programs p WHERE p.program_id = $1), false)
$$;
COMMENT ON FUNCTION wallet_internal.sees_program(bigint) IS 'whether the program exists and the caller acts for its merchant';

CREATE FUNCTION wallet_internal.sees_account(account_id bigint) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT coalesce((SELECT wallet.acts_for(p.merchant_id)
                       FROM wallet.accounts a JOIN wallet.programs p ON p.program_id = a.program_id
                      WHERE a.account_id = $1), false)
$$;
COMMENT ON FUNCTION wallet_internal.sees_account(bigint) IS 'whether the account exists and the caller acts for its merchant';

CREATE FUNCTION wallet_internal.sees_campaign(campaign_id bigint) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT coalesce((SELECT wallet.acts_for(c.merchant_id) FROM wallet.campaigns c WHERE c.campaign_id = $1), false)
$$;
COMMENT ON FUNCTION wallet_internal.sees_campaign(bigint) IS 'whether the campaign exists and the caller acts for its merchant';

-- Idempotency keys of redemptions and reservations are unique per merchant:
-- the merchant of the code's campaign, when the caller acts for it (else
-- NULL: no key of another merchant is ever looked up).
CREATE FUNCTION wallet_internal.code_merchant(input text) RETURNS bigint
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT c.merchant_id FROM wallet.parse_code($1) p JOIN wallet.campaigns c ON c.campaign_id = wallet.code_campaign(p.code)
     WHERE wallet.acts_for(c.merchant_id)
$$;
COMMENT ON FUNCTION wallet_internal.code_merchant(text) IS 'merchant of the campaign of a code text, when the caller acts for it; NULL otherwise (malformed, unknown or another merchant''s)';

-- Whether a stored key of merchant stored is the key a call means: the
-- code's merchant when the call names one the caller acts for, else (a
-- malformed or unknown code) any merchant the caller acts for, so that a
-- retry with a mistyped code still meets its key (WL002).
CREATE FUNCTION wallet_internal.key_scope(stored bigint, code_merchant bigint) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN $2 IS NOT NULL THEN $1 = $2 ELSE wallet.acts_for($1) END
$$;
COMMENT ON FUNCTION wallet_internal.key_scope(bigint, bigint) IS 'whether a key stored for merchant stored is in the scope of a call whose code is of merchant code_merchant (NULL: malformed, unknown or another merchant''s; then every merchant the caller acts for)';

-- Row-level security: readers and apps see their merchants' rows.  ENABLE,
-- not FORCE: the owner, whose SECURITY DEFINER functions do every write,
-- checks objects itself and is not filtered.
ALTER TABLE wallet.merchants ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.merchants USING (wallet.acts_for(merchant_id));
ALTER TABLE wallet.merchant_roles ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.merchant_roles USING (wallet.acts_for(merchant_id));
ALTER TABLE wallet.programs ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.programs USING (wallet.acts_for(merchant_id));
ALTER TABLE wallet.campaigns ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.campaigns USING (wallet.acts_for(merchant_id));
ALTER TABLE wallet.code_guard_settings ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.code_guard_settings USING (wallet.acts_for(merchant_id));
ALTER TABLE wallet.code_failed_attempts ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.code_failed_attempts USING (wallet.acts_for(merchant_id));
ALTER TABLE wallet.members ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.members USING (wallet.acts_for(merchant_id));
ALTER TABLE wallet.audit_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.audit_log USING (wallet.acts_for(merchant_id));
-- Tables whose rows belong to a program or campaign: the parent's merchant
-- (the subquery is itself filtered by the parent's policy).
ALTER TABLE wallet.accounts ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.accounts
    USING (EXISTS (SELECT FROM wallet.programs p WHERE p.program_id = accounts.program_id));
ALTER TABLE wallet.entries ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.entries
    USING (EXISTS (SELECT FROM wallet.accounts a WHERE a.account_id = entries.account_id));
ALTER TABLE wallet.code_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.code_keys
    USING (EXISTS (SELECT FROM wallet.campaigns c WHERE c.campaign_id = code_keys.campaign_id));
ALTER TABLE wallet.code_bindings ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.code_bindings
    USING (EXISTS (SELECT FROM wallet.campaigns c WHERE c.campaign_id = code_bindings.campaign_id));
ALTER TABLE wallet.code_reservations ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.code_reservations
    USING (EXISTS (SELECT FROM wallet.campaigns c WHERE c.campaign_id = code_reservations.campaign_id));
ALTER TABLE wallet.code_redemptions ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.code_redemptions
    USING (EXISTS (SELECT FROM wallet.campaigns c WHERE c.campaign_id = code_redemptions.campaign_id));
ALTER TABLE wallet.code_use_counts ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.code_use_counts
    USING (EXISTS (SELECT FROM wallet.campaigns c WHERE c.campaign_id = code_use_counts.campaign_id));
ALTER TABLE wallet.member_use_counts ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.member_use_counts
    USING (EXISTS (SELECT FROM wallet.campaigns c WHERE c.campaign_id = member_use_counts.campaign_id));
ALTER TABLE wallet.campaign_use_counts ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.campaign_use_counts
    USING (EXISTS (SELECT FROM wallet.campaigns c WHERE c.campaign_id = campaign_use_counts.campaign_id));
COMMENT ON POLICY merchant_rows ON wallet.merchants IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
COMMENT ON POLICY merchant_rows ON wallet.merchant_roles IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
COMMENT ON POLICY merchant_rows ON wallet.programs IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
COMMENT ON POLICY merchant_rows ON wallet.campaigns IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
COMMENT ON POLICY merchant_rows ON wallet.code_guard_settings IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
COMMENT ON POLICY merchant_rows ON wallet.code_failed_attempts IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
COMMENT ON POLICY merchant_rows ON wallet.accounts IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
COMMENT ON POLICY merchant_rows ON wallet.entries IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
COMMENT ON POLICY merchant_rows ON wallet.code_keys IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
COMMENT ON POLICY merchant_rows ON wallet.code_bindings IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
COMMENT ON POLICY merchant_rows ON wallet.code_reservations IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
COMMENT ON POLICY merchant_rows ON wallet.code_redemptions IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
COMMENT ON POLICY merchant_rows ON wallet.code_use_counts IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
COMMENT ON POLICY merchant_rows ON wallet.member_use_counts IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
COMMENT ON POLICY merchant_rows ON wallet.campaign_use_counts IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
COMMENT ON POLICY merchant_rows ON wallet.members IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
COMMENT ON POLICY merchant_rows ON wallet.audit_log IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE OR REPLACE FUNCTION wallet.create_merchant(name text) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'merchant name must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  DETAIL = 'A merchant needs a name that people can recognise.';
    END IF;
    IF btrim(name) = '' THEN
        RAISE EXCEPTION 'merchant name must not be blank'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A merchant needs a name that people can recognise.';
    END IF;
    INSERT INTO wallet.merchants (name) VALUES (name) RETURNING merchant_id INTO id;
    -- the role that registers a merchant acts for it (README "Merchants and isolation")
    IF NOT wallet.acts_for(id) THEN
        INSERT INTO wallet.merchant_roles (merchant_id, role) VALUES (id, wallet_internal.caller());
    END IF;
    RETURN id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'merchant "%" already exists', name
        USING ERRCODE = 'unique_violation',
              DETAIL = 'Merchant names are unique; look the existing merchant up in wallet.merchants.';
END
$$;

CREATE OR REPLACE FUNCTION wallet_internal.member_check(merchant_id bigint, member_ref text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF merchant_id IS NULL OR member_ref IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN merchant_id IS NULL THEN 'merchant_id' ELSE 'member reference' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A member is named by its merchant and the merchant app''s own user id.';
    END IF;
    IF btrim(member_ref) = '' OR length(member_ref) > 256 THEN
        RAISE EXCEPTION 'member reference must not be %', CASE WHEN btrim(member_ref) = '' THEN 'blank' ELSE 'longer than 256 characters' END
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A member reference is a non-blank text of at most 256 characters; this one has %s.', length(member_ref));
    END IF;
    IF member_ref LIKE 'forgotten:%' THEN
        RAISE EXCEPTION 'member reference must not start with "forgotten:"'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'References starting with "forgotten:" are the pseudonyms of erased members.';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.merchants m WHERE m.merchant_id = member_check.merchant_id AND wallet.acts_for(m.merchant_id)) THEN
        RAISE EXCEPTION 'merchant % does not exist', merchant_id
            USING ERRCODE = 'WL102', DETAIL = 'Members belong to a merchant registered in wallet.merchants.';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION wallet.close_program(program_id bigint) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF program_id IS NULL THEN
        RAISE EXCEPTION 'program_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A points program is named by its id.';
    END IF;
    UPDATE wallet.programs p SET closed_at = coalesce(p.closed_at, now())
     WHERE p.program_id = close_program.program_id AND wallet.acts_for(p.merchant_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION wallet.open_account(program_id bigint, member_ref text) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
    is_closed boolean;
    merchant bigint;
    member bigint;
BEGIN
    IF program_id IS NULL OR member_ref IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN program_id IS NULL THEN 'program_id' ELSE 'member reference' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'An account is opened in a points program for the merchant app''s own user id.';
    END IF;
    IF btrim(member_ref) = '' THEN
        RAISE EXCEPTION 'member reference must not be blank'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An account is opened for the merchant app''s own user id.';
    END IF;
    -- a key of a unique index, like the member references of the redemption API
    IF length(member_ref) > 256 THEN
        RAISE EXCEPTION 'member reference is too long'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A member reference has at most 256 characters; this one has %s.', length(member_ref));
    END IF;
    SELECT p.closed_at IS NOT NULL, p.merchant_id INTO is_closed, merchant FROM wallet.programs p WHERE p.program_id = open_account.program_id AND wallet.acts_for(p.merchant_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
    member := wallet_internal.member_ensure(merchant, member_ref);   -- the member exists afterwards, whatever follows
    SELECT a.account_id INTO id FROM wallet.accounts a
     WHERE a.program_id = open_account.program_id AND a.member_ref = open_account.member_ref;
    IF FOUND THEN
        RETURN id;
    END IF;
    IF is_closed THEN
        PERFORM wallet_internal.program_closed(program_id);
    END IF;
    -- a concurrent open of the same member waits on the unique index, then finds the row
    INSERT INTO wallet.accounts (program_id, member_ref, member_id) VALUES (open_account.program_id, open_account.member_ref, member)
    ON CONFLICT ON CONSTRAINT accounts_program_id_member_ref_key DO NOTHING
    RETURNING account_id INTO id;
    IF id IS NULL THEN
        SELECT a.account_id INTO id FROM wallet.accounts a
         WHERE a.program_id = open_account.program_id AND a.member_ref = open_account.member_ref;
    END IF;
    RETURN id;
END
$$;

CREATE OR REPLACE FUNCTION wallet.find_account(program_id bigint, member_ref text) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
BEGIN
    IF program_id IS NULL OR member_ref IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN program_id IS NULL THEN 'program_id' ELSE 'member_ref' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'An account is found by its program and the merchant app''s own user id.';
    END IF;
    IF btrim(member_ref) = '' THEN
        RAISE EXCEPTION 'member reference must not be blank'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An account is found by the merchant app''s own user id.';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.programs p WHERE p.program_id = find_account.program_id AND wallet.acts_for(p.merchant_id)) THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
    SELECT a.account_id INTO id FROM wallet.accounts a
     WHERE a.program_id = find_account.program_id AND a.member_ref = find_account.member_ref;
    RETURN id;
END
$$;

CREATE OR REPLACE FUNCTION wallet_internal.lock_account(account_id bigint, idempotency_key text DEFAULT NULL)
    RETURNS wallet_internal.locked_account
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    due timestamptz;
    r wallet_internal.locked_account;
    prior wallet.entries;
BEGIN
    SELECT a.ledger, a.program_id, a.next_event, p.closed_at IS NOT NULL, p.expiry, p.granularity
      INTO r.ledger, r.program_id, due, r.closed, r.expiry, r.granularity
      FROM wallet.accounts a JOIN wallet.programs p ON p.program_id = a.program_id
     WHERE a.account_id = lock_account.account_id AND wallet.acts_for(p.merchant_id)
       FOR NO KEY UPDATE OF a;
    IF NOT FOUND THEN
        PERFORM wallet_internal.unknown_account(lock_account.account_id);
    END IF;
    r.at := clock_timestamp();
    IF idempotency_key IS NOT NULL THEN
        SELECT * INTO prior FROM wallet.entries x
         WHERE x.account_id = lock_account.account_id AND x.idempotency_key = lock_account.idempotency_key;
        IF FOUND THEN
            r.prior := prior;
            RETURN r;   -- a retry: nothing will be posted, nothing to settle
        END IF;
    END IF;
    IF due <= r.at THEN
        PERFORM wallet_internal.settle_account(lock_account.account_id, r.at, r.at);
        SELECT a.ledger INTO r.ledger FROM wallet.accounts a WHERE a.account_id = lock_account.account_id;
    END IF;
    RETURN r;
END
$$;

CREATE OR REPLACE FUNCTION wallet_internal.lock_hold(hold_id bigint,
        OUT h wallet.entries, OUT closing wallet.entries, OUT ledger wallet.points_ledger, OUT at timestamptz)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF hold_id IS NULL THEN
        RAISE EXCEPTION 'hold_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A hold is named by its id, the entry_id of its hold entry.';
    END IF;
    SELECT * INTO h FROM wallet.entries x WHERE x.entry_id = lock_hold.hold_id AND x.kind = 'hold' AND wallet_internal.sees_account(x.account_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown hold'
            USING ERRCODE = 'WL206', DETAIL = format('There is no hold %s.', hold_id);
    END IF;
    SELECT * INTO closing FROM wallet.entries x
     WHERE x.hold_id = lock_hold.hold_id AND x.kind IN ('capture', 'release');
    at := clock_timestamp();
    IF closing.entry_id IS NULL THEN
        SELECT x.ledger, x.at INTO ledger, at FROM wallet_internal.lock_account(h.account_id) x;
        -- look again under the lock: a concurrent capture or release may have closed it
        SELECT * INTO closing FROM wallet.entries x
         WHERE x.hold_id = lock_hold.hold_id AND x.kind IN ('capture', 'release');
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION wallet.reverse(entry_id bigint, idempotency_key text, reason text,
        policy text DEFAULT 'within_balance') RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    o wallet.entries;
    a wallet_internal.locked_account;
    e wallet.entries;
    r bigint;
BEGIN
    IF entry_id IS NULL OR policy IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN entry_id IS NULL THEN 'entry_id' ELSE 'policy' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A reversal names the entry it undoes and a policy, ''within_balance'' by default.';
    END IF;
    IF policy NOT IN ('within_balance', 'unlimited') THEN
        RAISE EXCEPTION 'unknown reversal policy "%"', policy
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The policy is ''within_balance'' or ''unlimited''.';
    END IF;
    PERFORM wallet_internal.check_posting(NULL, reason, idempotency_key, NULL);
    SELECT * INTO o FROM wallet.entries x WHERE x.entry_id = reverse.entry_id AND wallet_internal.sees_account(x.account_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown entry'
            USING ERRCODE = 'WL212', DETAIL = format('There is no journal entry %s.', entry_id);
    END IF;
    a := wallet_internal.lock_account(o.account_id, idempotency_key);
    IF (a.prior).entry_id IS NULL THEN
        IF o.kind NOT IN ('accrue', 'redeem', 'capture') THEN
            RAISE EXCEPTION 'entry not reversible'
                USING ERRCODE = 'WL211',
                      DETAIL = format('Entry %s is a %s entry; only accrue, redeem and capture entries can be reversed.', entry_id, o.kind),
                      HINT = 'Correct other postings with wallet.adjust.';
        END IF;
        SELECT x.entry_id INTO r FROM wallet.entries x WHERE x.reverses = reverse.entry_id;
        IF FOUND THEN
            RAISE EXCEPTION 'entry already reversed'
                USING ERRCODE = 'WL210', DETAIL = format('Entry %s was reversed by entry %s.', entry_id, r);
        END IF;
    END IF;
    -- refunds and chargebacks must work after a program closed
    e.account_id := o.account_id;
    e.kind := 'reverse';
    e.idempotency_key := idempotency_key;
    e.reason := reason;
    e.reference := o.reference;
    e.reverses := entry_id;
    e.created_at := a.at;
    e.policy := policy;
    RETURN wallet_internal.post_once(a, e, check_closed => false);
END
$$;

CREATE OR REPLACE FUNCTION wallet.balance(account_id bigint, as_of timestamptz DEFAULT now()) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    b bigint;
BEGIN
    IF as_of IS NULL THEN
        RAISE EXCEPTION 'as_of must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The balance is taken at a given instant, now() by default.';
    END IF;
    SELECT wallet.ledger_balance(a.ledger, as_of) INTO b FROM wallet.accounts a WHERE a.account_id = balance.account_id AND wallet_internal.sees_program(a.program_id);
    IF NOT FOUND THEN
        PERFORM wallet_internal.unknown_account(account_id);
    END IF;
    RETURN b;
END
$$;

CREATE OR REPLACE FUNCTION wallet.replay_ledger(account_id bigint, upto timestamptz DEFAULT 'infinity',
        OUT ledger wallet.points_ledger, OUT problem text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    e wallet.entries;
    s wallet.ledger_step;
BEGIN
    IF upto IS NULL THEN
        RAISE EXCEPTION 'upto must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The journal is replayed up to a given instant, infinity by default.';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.accounts a WHERE a.account_id = replay_ledger.account_id AND wallet_internal.sees_program(a.program_id)) THEN
        PERFORM wallet_internal.unknown_account(account_id);
    END IF;
    ledger := '';
    FOR e IN SELECT * FROM wallet.entries x WHERE x.account_id = replay_ledger.account_id AND x.created_at <= upto
              ORDER BY x.entry_id LOOP
        BEGIN
            s := wallet_internal.entry_step(ledger, e);
        EXCEPTION WHEN OTHERS THEN
            problem := format('Entry %s (%s) does not replay: %s.', e.entry_id, e.kind, SQLERRM);
            RETURN;
        END;
        IF problem IS NULL AND (s.amount <> e.amount OR s.balance_after <> e.balance_after) THEN
            problem := format('Entry %s (%s) replays to amount %s and balance %s, the journal says %s and %s.',
                              e.entry_id, e.kind, s.amount, s.balance_after, e.amount, e.balance_after);
        END IF;
        ledger := s.ledger;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION wallet.balance_at(account_id bigint, ts timestamptz) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    l wallet.points_ledger;
    lo bigint := 0;     -- last entry known to be created at or before ts (0: none)
    hi bigint;          -- first entry known to be created after ts
    p bigint;
    pt timestamptz;
    b bigint;
    nxt wallet.entries;
BEGIN
    IF ts IS NULL THEN
        RAISE EXCEPTION 'ts must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The balance is taken at a given instant.';
    END IF;
    SELECT a.ledger INTO l FROM wallet.accounts a WHERE a.account_id = balance_at.account_id AND wallet_internal.sees_program(a.program_id);
    IF NOT FOUND THEN
        PERFORM wallet_internal.unknown_account(account_id);
    END IF;
    SELECT x.entry_id, x.created_at INTO hi, pt FROM wallet.entries x
     WHERE x.account_id = balance_at.account_id ORDER BY x.entry_id DESC LIMIT 1;
    IF NOT FOUND OR pt <= ts THEN
        RETURN wallet.ledger_balance(l, ts);
    END IF;
    LOOP
        SELECT x.entry_id, x.created_at INTO p, pt FROM wallet.entries x
         WHERE x.account_id = balance_at.account_id AND x.entry_id > lo AND x.entry_id < hi
           AND x.entry_id >= lo + (hi - lo) / 2
         ORDER BY x.entry_id LIMIT 1;
        IF NOT FOUND THEN
            SELECT x.entry_id, x.created_at INTO p, pt FROM wallet.entries x
             WHERE x.account_id = balance_at.account_id AND x.entry_id > lo AND x.entry_id < lo + (hi - lo) / 2
             ORDER BY x.entry_id DESC LIMIT 1;
            EXIT WHEN NOT FOUND;
        END IF;
        IF pt <= ts THEN lo := p; ELSE hi := p; END IF;
    END LOOP;
    IF lo = 0 THEN
        RETURN 0;   -- before the first entry the ledger is empty
    END IF;
    SELECT * INTO nxt FROM wallet.entries x WHERE x.entry_id = hi;
    IF nxt.kind = 'expire' OR (nxt.kind = 'release' AND nxt.expires_at IS NOT NULL) THEN
        RETURN wallet.ledger_balance((wallet.replay_ledger(account_id, ts)).ledger, ts);
    END IF;
    SELECT x.balance_after INTO b FROM wallet.entries x WHERE x.entry_id = lo;
    RETURN b;
END
$$;

CREATE OR REPLACE FUNCTION wallet.history(account_id bigint, from_ts timestamptz DEFAULT '-infinity',
        to_ts timestamptz DEFAULT 'infinity') RETURNS SETOF wallet.entries
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF from_ts IS NULL OR to_ts IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN from_ts IS NULL THEN 'from_ts' ELSE 'to_ts' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The history covers [from_ts, to_ts), by default all of it (-infinity to infinity).';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.accounts a WHERE a.account_id = history.account_id AND wallet_internal.sees_program(a.program_id)) THEN
        PERFORM wallet_internal.unknown_account(account_id);
    END IF;
    RETURN QUERY SELECT * FROM wallet.entries x
                  WHERE x.account_id = history.account_id AND x.created_at >= from_ts AND x.created_at < to_ts
                  ORDER BY x.entry_id;
END
$$;

CREATE OR REPLACE FUNCTION wallet.program_liability(program_id bigint, as_of timestamptz DEFAULT now())
    RETURNS TABLE (expiry_month date, points bigint)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF program_id IS NULL OR as_of IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN program_id IS NULL THEN 'program_id' ELSE 'as_of' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The liability of a points program is taken at a given instant, now() by default.';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.programs p WHERE p.program_id = program_liability.program_id AND wallet.acts_for(p.merchant_id)) THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
    -- the month (UTC) holding the last instant the points are spendable
    RETURN QUERY
    SELECT date_trunc('month', (x.expires_at - interval '1 microsecond') AT TIME ZONE 'UTC')::date AS m,
           sum(x.points)::bigint
      FROM wallet.accounts a CROSS JOIN LATERAL wallet.ledger_lots(a.ledger) x
     WHERE a.program_id = program_liability.program_id
       AND (x.expires_at IS NULL OR x.expires_at > as_of)
     GROUP BY m ORDER BY m NULLS LAST;
END
$$;

CREATE OR REPLACE FUNCTION wallet.verify_ledger(bigint DEFAULT NULL)
    RETURNS TABLE (account_id bigint, stored_balance bigint, replayed_balance bigint, detail text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    a record;
    r record;
    d text;
BEGIN
    IF $1 IS NOT NULL
       AND NOT EXISTS (SELECT FROM wallet.accounts x WHERE x.account_id = $1 AND wallet_internal.sees_program(x.program_id)) THEN
        PERFORM wallet_internal.unknown_account($1);
    END IF;
    FOR a IN SELECT x.account_id, x.ledger FROM wallet.accounts x
              WHERE ($1 IS NULL OR x.account_id = $1) AND wallet_internal.sees_program(x.program_id)
              ORDER BY x.account_id LOOP
        r := wallet.replay_ledger(a.account_id);
        d := coalesce(r.problem, wallet.ledger_diff(a.ledger, r.ledger));
        IF d IS NOT NULL THEN
            account_id := a.account_id;
            stored_balance := wallet.ledger_balance(a.ledger, now());
            replayed_balance := wallet.ledger_balance(r.ledger, now());
            detail := d;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION wallet.create_program(merchant_id bigint, name text, expiry interval DEFAULT NULL,
        granularity text DEFAULT 'day') RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
BEGIN
    IF merchant_id IS NULL OR name IS NULL OR granularity IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN merchant_id IS NULL THEN 'merchant_id' WHEN name IS NULL THEN 'program name' ELSE 'granularity' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A points program belongs to a merchant and has a name and an expiry granularity.';
    END IF;
    IF btrim(name) = '' THEN
        RAISE EXCEPTION 'program name must not be blank'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A points program needs a name that people can recognise.';
    END IF;
    IF expiry IS NOT NULL AND expiry <= interval '0' THEN
        RAISE EXCEPTION 'expiry must be positive'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Points expire a positive time after they are earned, or never (NULL).';
    END IF;
    IF granularity NOT IN ('day', 'month') THEN
        RAISE EXCEPTION 'unknown granularity "%"', granularity
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Expiry is rounded up to the end of a ''day'' or a ''month''.';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.merchants m WHERE m.merchant_id = create_program.merchant_id AND wallet.acts_for(m.merchant_id)) THEN
        RAISE EXCEPTION 'merchant % does not exist', merchant_id
            USING ERRCODE = 'WL102', HINT = 'Register the merchant with wallet.create_merchant first.';
    END IF;
    INSERT INTO wallet.programs (merchant_id, name, expiry, granularity)
    VALUES (create_program.merchant_id, create_program.name, create_program.expiry, create_program.granularity)
    RETURNING program_id INTO id;
    RETURN id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'program "%" already exists', name
        USING ERRCODE = 'unique_violation', DETAIL = 'Program names are unique per merchant.';
END
$$;

CREATE OR REPLACE FUNCTION wallet.create_campaign(
    merchant_id bigint,
    name text,
    prefix text DEFAULT NULL,
    mac_bits int DEFAULT 40,
    starts_at timestamptz DEFAULT now(),
    ends_at timestamptz DEFAULT NULL,
    max_redemptions_per_code int DEFAULT 1,
    max_redemptions_per_member int DEFAULT NULL,
    max_redemptions_total bigint DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
    pfx text := upper(prefix);
BEGIN
    IF merchant_id IS NULL THEN
        RAISE EXCEPTION 'merchant_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Every campaign belongs to a merchant.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM wallet.merchants m WHERE m.merchant_id = create_campaign.merchant_id AND wallet.acts_for(m.merchant_id)) THEN
        RAISE EXCEPTION 'merchant % does not exist', merchant_id
            USING ERRCODE = 'WL102', HINT = 'Register the merchant with wallet.create_merchant first.';
    END IF;
    IF name IS NULL THEN
        RAISE EXCEPTION 'campaign name must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A campaign needs a name that people can recognise.';
    END IF;
    IF btrim(name) = '' THEN
        RAISE EXCEPTION 'campaign name must not be blank'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A campaign needs a name that people can recognise.';
    END IF;
    IF pfx IS NOT NULL AND pfx !~ '^[A-Z0-9]{1,8}$' THEN
        RAISE EXCEPTION 'invalid campaign prefix "%"', prefix
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A prefix has 1 to 8 characters, each a letter A to Z or a digit 0 to 9.',
                  HINT = 'Pass NULL for codes without a prefix.';
    END IF;
    IF mac_bits IS NULL THEN
        RAISE EXCEPTION 'mac_bits must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Every code of a campaign carries a MAC of its length; the default is 40 bits.';
    END IF;
    IF mac_bits NOT BETWEEN 32 AND 64 THEN
        RAISE EXCEPTION 'mac_bits must be between 32 and 64, not %', mac_bits
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'The MAC length sets how hard codes are to guess: one random code in 2^mac_bits is accepted.';
    END IF;
    IF starts_at IS NULL THEN
        RAISE EXCEPTION 'starts_at must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A campaign needs a start time; the default is now().';
    END IF;
    IF ends_at IS NOT NULL AND ends_at <= starts_at THEN
        RAISE EXCEPTION 'ends_at must be after starts_at'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The campaign would start at %s and end at %s.', starts_at, ends_at);
    END IF;
    IF max_redemptions_per_code <= 0 THEN
        RAISE EXCEPTION 'max_redemptions_per_code must be positive, not %', max_redemptions_per_code
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Pass NULL for no limit per code.';
    END IF;
    IF max_redemptions_per_member <= 0 THEN
        RAISE EXCEPTION 'max_redemptions_per_member must be positive, not %', max_redemptions_per_member
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Pass NULL for no limit per member.';
    END IF;
    IF max_redemptions_total <= 0 THEN
        RAISE EXCEPTION 'max_redemptions_total must be positive, not %', max_redemptions_total
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Pass NULL for no limit on the whole campaign.';
    END IF;

    BEGIN
        INSERT INTO wallet.campaigns AS c (merchant_id, name, prefix, mac_bits, starts_at, ends_at,
                                           max_redemptions_per_code, max_redemptions_per_member, max_redemptions_total)
        VALUES (create_campaign.merchant_id, create_campaign.name, pfx, create_campaign.mac_bits,
                create_campaign.starts_at, create_campaign.ends_at, create_campaign.max_redemptions_per_code,
                create_campaign.max_redemptions_per_member, create_campaign.max_redemptions_total)
        RETURNING c.campaign_id INTO id;
    EXCEPTION WHEN sequence_generator_limit_exceeded THEN
        -- the identity stops at 2^32 - 1, the largest id a code can carry
        RAISE EXCEPTION 'campaign ids are exhausted'
            USING ERRCODE = 'WL110',
                  DETAIL = 'A code carries its campaign id in 32 bits, and every id up to 4294967295 has been handed out.',
                  HINT = 'Campaign ids are never reused; keep using the campaigns that exist.';
    END;
    INSERT INTO wallet.code_keys (campaign_id, key_version) VALUES (id, 1);
    RETURN id;
END
$$;

CREATE OR REPLACE FUNCTION wallet.campaign_next_serial(campaign_id bigint) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    seq regclass;
    last bigint;
    called boolean;
BEGIN
    IF campaign_id IS NULL THEN
        RAISE EXCEPTION 'campaign_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The next serial is read from the sequence of a campaign, named by its id.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM wallet.campaigns c WHERE c.campaign_id = campaign_next_serial.campaign_id AND wallet.acts_for(c.merchant_id)) THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'WL101', HINT = 'Create it with wallet.create_campaign.';
    END IF;
    seq := to_regclass(format('wallet.%I', 'campaign_' || campaign_id || '_serials'));
    IF seq IS NULL THEN
        RAISE EXCEPTION 'campaign % has no serial number sequence', campaign_id
            USING ERRCODE = 'WL109',
                  DETAIL = format('The sequence wallet.campaign_%s_serials that hands out the campaign''s serial numbers does not exist.', campaign_id);
    END IF;
    EXECUTE format('SELECT last_value, is_called FROM %s', seq) INTO last, called;
    RETURN CASE WHEN called THEN last + 1 ELSE last END;
END
$$;

CREATE OR REPLACE FUNCTION wallet.rotate_code_key(campaign_id bigint) RETURNS int
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v int;
BEGIN
    IF campaign_id IS NULL THEN
        RAISE EXCEPTION 'campaign_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A key is rotated in a campaign, named by its id.';
    END IF;
    SELECT c.current_key_version INTO v FROM wallet.campaigns c
     WHERE c.campaign_id = rotate_code_key.campaign_id AND wallet.acts_for(c.merchant_id) FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'WL101', HINT = 'Create it with wallet.create_campaign.';
    END IF;
    IF v >= 1023 THEN
        RAISE EXCEPTION 'campaign % has used all 1023 key versions', campaign_id
            USING ERRCODE = 'WL105', DETAIL = 'A code carries its key version in 10 bits.',
                  HINT = 'Create a new campaign.';
    END IF;
    v := v + 1;
    INSERT INTO wallet.code_keys (campaign_id, key_version) VALUES (rotate_code_key.campaign_id, v);
    UPDATE wallet.campaigns c SET current_key_version = v WHERE c.campaign_id = rotate_code_key.campaign_id;
    RETURN v;
END
$$;

CREATE OR REPLACE FUNCTION wallet.retire_code_key(campaign_id bigint, key_version int) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v int;
BEGIN
    IF campaign_id IS NULL OR key_version IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN campaign_id IS NULL THEN 'campaign_id' ELSE 'key_version' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A key version is retired in a campaign, both named by number.';
    END IF;
    SELECT c.current_key_version INTO v FROM wallet.campaigns c
     WHERE c.campaign_id = retire_code_key.campaign_id AND wallet.acts_for(c.merchant_id) FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'WL101', HINT = 'Create it with wallet.create_campaign.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM wallet.code_keys k
                    WHERE k.campaign_id = retire_code_key.campaign_id AND k.key_version = retire_code_key.key_version) THEN
        RAISE EXCEPTION 'campaign % has no key version %', campaign_id, key_version
            USING ERRCODE = 'WL103', DETAIL = format('Its versions are 1 to %s.', v);
    END IF;
    IF key_version = v THEN
        RAISE EXCEPTION 'key version % is the current one of campaign %', key_version, campaign_id
            USING ERRCODE = 'WL104', DETAIL = 'New codes are signed with the current version, so it cannot be retired.',
                  HINT = 'Call wallet.rotate_code_key first.';
    END IF;
    -- retiring twice keeps the first retirement time
    UPDATE wallet.code_keys k SET retired_at = now()
     WHERE k.campaign_id = retire_code_key.campaign_id AND k.key_version = retire_code_key.key_version
       AND k.retired_at IS NULL;
END
$$;

CREATE OR REPLACE FUNCTION wallet.set_code_guard(max_failures_per_member int, max_failures_per_source int,
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
    IF failure_window <= interval '0' THEN
        RAISE EXCEPTION 'failure window must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The brute-force guard counts failures over a window; %s is not a positive interval.', failure_window);
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

CREATE OR REPLACE FUNCTION wallet.clear_code_failures(member_ref text DEFAULT NULL, source text DEFAULT NULL,
                                           merchant_id bigint DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n bigint;
BEGIN
    IF $1 IS NULL AND $2 IS NULL THEN
        RAISE EXCEPTION 'member_ref and source must not both be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The failed checks of a member, of a source or of both are forgotten.';
    END IF;
    IF $3 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM wallet.merchants m WHERE m.merchant_id = $3 AND wallet.acts_for(m.merchant_id)) THEN
        RAISE EXCEPTION 'merchant % does not exist', $3
            USING ERRCODE = 'WL102', DETAIL = 'Failed checks are counted per merchant registered in wallet.merchants.';
    END IF;
    PERFORM wallet_internal.code_guard_forget($3, $1, $2);
    WITH d AS (
        DELETE FROM wallet.code_failed_attempts a
         WHERE (a.member_ref = $1 OR a.source = $2)
           AND ($3 IS NULL OR a.merchant_id = $3)
        RETURNING 1)
    SELECT count(*) INTO n FROM d;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION wallet_internal.code_precheck(input text, member_ref text, source text, operation text,
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

CREATE OR REPLACE FUNCTION wallet.undo_redemption(redemption_id bigint, reason text)
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

CREATE OR REPLACE FUNCTION wallet.release_reservation(reservation_id bigint)
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

CREATE OR REPLACE FUNCTION wallet.redeem_code(code text, member_ref text, idempotency_key text, context jsonb DEFAULT '{}')
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

    INSERT INTO wallet.code_redemptions (campaign_id, serial, code, member_ref, idempotency_key, context,
                                         reservation_id, redeemed_at, merchant_id)
    VALUES (r.campaign_id, r.serial, _code, _member, _key, _ctx,
            r.reservation_id, clock_timestamp(), _merchant)
    RETURNING redemption_id, redeemed_at INTO r.redemption_id, r.redeemed_at;
    PERFORM wallet_internal.code_bump_counters(r.campaign_id, r.serial, _member, 1, cnt.max_per_code IS NOT NULL,
                                      cnt.max_per_member IS NOT NULL, cnt.max_total IS NOT NULL);
    r.status := 'ok';
    RETURN r;
END
$$;

CREATE OR REPLACE FUNCTION wallet.reserve_code(code text, member_ref text, idempotency_key text, ttl interval, context jsonb DEFAULT '{}')
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
    IF _ttl IS NULL THEN
        RAISE EXCEPTION 'reservation ttl must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A reservation holds a code for a given time.';
    END IF;
    IF _ttl <= interval '0' THEN
        RAISE EXCEPTION 'reservation ttl must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A reservation holds a code for a positive time; %s was given.', _ttl);
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
    INSERT INTO wallet.code_reservations (campaign_id, serial, code, member_ref, idempotency_key, ttl, reserved_at, expires_at,
                                          merchant_id)
    VALUES (pc.campaign_id, pc.serial, pc.code, _member, _key, _ttl, _now, _now + _ttl, _merchant)
    RETURNING reservation_id, expires_at INTO r.reservation_id, r.expires_at;
    -- Touch the counters: in REPEATABLE READ a concurrent change of them then
    -- fails with a serialization error instead of going unseen.
    PERFORM wallet_internal.code_bump_counters(pc.campaign_id, pc.serial, _member, 0, cnt.max_per_code IS NOT NULL,
                                      cnt.max_per_member IS NOT NULL, cnt.max_total IS NOT NULL);
    r.status := 'ok';
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet.create_merchant(text) IS 'register a merchant and return its id; the calling role acts for it from then on';

-- == 8b. merchant_id on every merchant table (conventions)
-- Every table holding merchant data carries merchant_id, the key to
-- distribute it by: added at the end of the tables that lacked it, backfilled
-- from the parent program or campaign (accounts before entries), then NOT
-- NULL; the functions that insert rows fill it, and the row-level security
-- policies read the row's own merchant_id.  The append-only trigger of
-- wallet.entries, and the audit trigger of wallet.code_keys (a backfill is
-- no change of a key), are disabled around the backfill here only.
ALTER TABLE wallet.accounts ADD COLUMN merchant_id bigint;
UPDATE wallet.accounts a SET merchant_id = p.merchant_id FROM wallet.programs p WHERE p.program_id = a.program_id;
ALTER TABLE wallet.accounts ALTER COLUMN merchant_id SET NOT NULL;
COMMENT ON COLUMN wallet.accounts.merchant_id IS 'merchant of the program (copied from it when opened): the key to distribute by';
ALTER TABLE wallet.entries ADD COLUMN merchant_id bigint;
ALTER TABLE wallet.entries DISABLE TRIGGER entries_append_only;
UPDATE wallet.entries e SET merchant_id = a.merchant_id FROM wallet.accounts a WHERE a.account_id = e.account_id;
ALTER TABLE wallet.entries ENABLE TRIGGER entries_append_only;
ALTER TABLE wallet.entries ALTER COLUMN merchant_id SET NOT NULL;
COMMENT ON COLUMN wallet.entries.merchant_id IS 'merchant of the account (copied from it when posted): the key to distribute by';
ALTER TABLE wallet.code_keys ADD COLUMN merchant_id bigint;
ALTER TABLE wallet.code_keys DISABLE TRIGGER audit_change;
UPDATE wallet.code_keys k SET merchant_id = c.merchant_id FROM wallet.campaigns c WHERE c.campaign_id = k.campaign_id;
ALTER TABLE wallet.code_keys ENABLE TRIGGER audit_change;
ALTER TABLE wallet.code_keys ALTER COLUMN merchant_id SET NOT NULL;
COMMENT ON COLUMN wallet.code_keys.merchant_id IS 'merchant of the campaign (copied from it): the key to distribute by';
ALTER TABLE wallet.code_bindings ADD COLUMN merchant_id bigint;
UPDATE wallet.code_bindings x SET merchant_id = c.merchant_id FROM wallet.campaigns c WHERE c.campaign_id = x.campaign_id;
ALTER TABLE wallet.code_bindings ALTER COLUMN merchant_id SET NOT NULL;
COMMENT ON COLUMN wallet.code_bindings.merchant_id IS 'merchant of the campaign (copied from it when issued): the key to distribute by';
ALTER TABLE wallet.code_use_counts ADD COLUMN merchant_id bigint;
UPDATE wallet.code_use_counts x SET merchant_id = c.merchant_id FROM wallet.campaigns c WHERE c.campaign_id = x.campaign_id;
ALTER TABLE wallet.code_use_counts ALTER COLUMN merchant_id SET NOT NULL;
COMMENT ON COLUMN wallet.code_use_counts.merchant_id IS 'merchant of the campaign (copied from it): the key to distribute by';
ALTER TABLE wallet.member_use_counts ADD COLUMN merchant_id bigint;
UPDATE wallet.member_use_counts x SET merchant_id = c.merchant_id FROM wallet.campaigns c WHERE c.campaign_id = x.campaign_id;
ALTER TABLE wallet.member_use_counts ALTER COLUMN merchant_id SET NOT NULL;
COMMENT ON COLUMN wallet.member_use_counts.merchant_id IS 'merchant of the campaign (copied from it): the key to distribute by';
ALTER TABLE wallet.campaign_use_counts ADD COLUMN merchant_id bigint;
UPDATE wallet.campaign_use_counts x SET merchant_id = c.merchant_id FROM wallet.campaigns c WHERE c.campaign_id = x.campaign_id;
ALTER TABLE wallet.campaign_use_counts ALTER COLUMN merchant_id SET NOT NULL;
COMMENT ON COLUMN wallet.campaign_use_counts.merchant_id IS 'merchant of the campaign (copied from it): the key to distribute by';
-- policies: the row's own merchant
DROP POLICY merchant_rows ON wallet.accounts;
CREATE POLICY merchant_rows ON wallet.accounts USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.accounts IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
DROP POLICY merchant_rows ON wallet.entries;
CREATE POLICY merchant_rows ON wallet.entries USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.entries IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
DROP POLICY merchant_rows ON wallet.code_keys;
CREATE POLICY merchant_rows ON wallet.code_keys USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.code_keys IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
DROP POLICY merchant_rows ON wallet.code_bindings;
CREATE POLICY merchant_rows ON wallet.code_bindings USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.code_bindings IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
DROP POLICY merchant_rows ON wallet.code_reservations;
CREATE POLICY merchant_rows ON wallet.code_reservations USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.code_reservations IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
DROP POLICY merchant_rows ON wallet.code_redemptions;
CREATE POLICY merchant_rows ON wallet.code_redemptions USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.code_redemptions IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
DROP POLICY merchant_rows ON wallet.code_use_counts;
CREATE POLICY merchant_rows ON wallet.code_use_counts USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.code_use_counts IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
DROP POLICY merchant_rows ON wallet.member_use_counts;
CREATE POLICY merchant_rows ON wallet.member_use_counts USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.member_use_counts IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
DROP POLICY merchant_rows ON wallet.campaign_use_counts;
CREATE POLICY merchant_rows ON wallet.campaign_use_counts USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.campaign_use_counts IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
-- the functions that insert rows into these tables (exactly as in the parts;
-- section 9 makes them SECURITY DEFINER again)
CREATE OR REPLACE FUNCTION wallet.create_campaign(
    merchant_id bigint,
    name text,
    prefix text DEFAULT NULL,
    mac_bits int DEFAULT 40,
    starts_at timestamptz DEFAULT now(),
    ends_at timestamptz DEFAULT NULL,
    max_redemptions_per_code int DEFAULT 1,
    max_redemptions_per_member int DEFAULT NULL,
    max_redemptions_total bigint DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
    pfx text := upper(prefix);
BEGIN
    IF merchant_id IS NULL THEN
        RAISE EXCEPTION 'merchant_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Every campaign belongs to a merchant.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM wallet.merchants m WHERE m.merchant_id = create_campaign.merchant_id AND wallet.acts_for(m.merchant_id)) THEN
        RAISE EXCEPTION 'merchant % does not exist', merchant_id
            USING ERRCODE = 'WL102', HINT = 'Register the merchant with wallet.create_merchant first.';
    END IF;
    IF name IS NULL THEN
        RAISE EXCEPTION 'campaign name must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A campaign needs a name that people can recognise.';
    END IF;
    IF btrim(name) = '' THEN
        RAISE EXCEPTION 'campaign name must not be blank'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A campaign needs a name that people can recognise.';
    END IF;
    IF pfx IS NOT NULL AND pfx !~ '^[A-Z0-9]{1,8}$' THEN
        RAISE EXCEPTION 'invalid campaign prefix "%"', prefix
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A prefix has 1 to 8 characters, each a letter A to Z or a digit 0 to 9.',
                  HINT = 'Pass NULL for codes without a prefix.';
    END IF;
    IF mac_bits IS NULL THEN
        RAISE EXCEPTION 'mac_bits must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Every code of a campaign carries a MAC of its length; the default is 40 bits.';
    END IF;
    IF mac_bits NOT BETWEEN 32 AND 64 THEN
        RAISE EXCEPTION 'mac_bits must be between 32 and 64, not %', mac_bits
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'The MAC length sets how hard codes are to guess: one random code in 2^mac_bits is accepted.';
    END IF;
    IF starts_at IS NULL THEN
        RAISE EXCEPTION 'starts_at must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A campaign needs a start time; the default is now().';
    END IF;
    IF ends_at IS NOT NULL AND ends_at <= starts_at THEN
        RAISE EXCEPTION 'ends_at must be after starts_at'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The campaign would start at %s and end at %s.', starts_at, ends_at);
    END IF;
    IF max_redemptions_per_code <= 0 THEN
        RAISE EXCEPTION 'max_redemptions_per_code must be positive, not %', max_redemptions_per_code
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Pass NULL for no limit per code.';
    END IF;
    IF max_redemptions_per_member <= 0 THEN
        RAISE EXCEPTION 'max_redemptions_per_member must be positive, not %', max_redemptions_per_member
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Pass NULL for no limit per member.';
    END IF;
    IF max_redemptions_total <= 0 THEN
        RAISE EXCEPTION 'max_redemptions_total must be positive, not %', max_redemptions_total
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Pass NULL for no limit on the whole campaign.';
    END IF;

    BEGIN
        INSERT INTO wallet.campaigns AS c (merchant_id, name, prefix, mac_bits, starts_at, ends_at,
                                           max_redemptions_per_code, max_redemptions_per_member, max_redemptions_total)
        VALUES (create_campaign.merchant_id, create_campaign.name, pfx, create_campaign.mac_bits,
                create_campaign.starts_at, create_campaign.ends_at, create_campaign.max_redemptions_per_code,
                create_campaign.max_redemptions_per_member, create_campaign.max_redemptions_total)
        RETURNING c.campaign_id INTO id;
    EXCEPTION WHEN sequence_generator_limit_exceeded THEN
        -- the identity stops at 2^32 - 1, the largest id a code can carry
        RAISE EXCEPTION 'campaign ids are exhausted'
            USING ERRCODE = 'WL110',
                  DETAIL = 'A code carries its campaign id in 32 bits, and every id up to 4294967295 has been handed out.',
                  HINT = 'Campaign ids are never reused; keep using the campaigns that exist.';
    END;
    INSERT INTO wallet.code_keys (campaign_id, key_version, merchant_id) VALUES (id, 1, create_campaign.merchant_id);
    RETURN id;
END
$$;
CREATE OR REPLACE FUNCTION wallet.rotate_code_key(campaign_id bigint) RETURNS int
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v int;
    merchant bigint;
BEGIN
    IF campaign_id IS NULL THEN
        RAISE EXCEPTION 'campaign_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A key is rotated in a campaign, named by its id.';
    END IF;
    SELECT c.current_key_version, c.merchant_id INTO v, merchant FROM wallet.campaigns c
     WHERE c.campaign_id = rotate_code_key.campaign_id AND wallet.acts_for(c.merchant_id) FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'WL101', HINT = 'Create it with wallet.create_campaign.';
    END IF;
    IF v >= 1023 THEN
        RAISE EXCEPTION 'campaign % has used all 1023 key versions', campaign_id
            USING ERRCODE = 'WL105', DETAIL = 'A code carries its key version in 10 bits.',
                  HINT = 'Create a new campaign.';
    END IF;
    v := v + 1;
    INSERT INTO wallet.code_keys (campaign_id, key_version, merchant_id) VALUES (rotate_code_key.campaign_id, v, merchant);
    UPDATE wallet.campaigns c SET current_key_version = v WHERE c.campaign_id = rotate_code_key.campaign_id;
    RETURN v;
END
$$;
CREATE OR REPLACE FUNCTION wallet_internal.code_lock_counters(campaign_id bigint, serial bigint, member_ref text,
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
        SELECT u.redeemed INTO member_redeemed FROM wallet.member_use_counts u
         WHERE u.campaign_id = $1 AND u.member_ref = $3 FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO wallet.member_use_counts AS u (campaign_id, member_ref, merchant_id) VALUES ($1, $3, merchant) ON CONFLICT DO NOTHING;
            SELECT u.redeemed INTO member_redeemed FROM wallet.member_use_counts u
             WHERE u.campaign_id = $1 AND u.member_ref = $3 FOR UPDATE;
        END IF;
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
CREATE OR REPLACE FUNCTION wallet_internal.code_caps_recount()
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
CREATE OR REPLACE FUNCTION wallet.issue_code(campaign_id bigint, member_ref text)
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
CREATE OR REPLACE FUNCTION wallet_internal.post_entry(l wallet.points_ledger, e wallet.entries) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    s wallet.ledger_step;
BEGIN
    IF e.entry_id IS NULL THEN
        e.entry_id := nextval('wallet.entries_entry_id_seq');
    END IF;
    s := wallet_internal.entry_step(l, e);
    e.amount := s.amount;
    e.balance_after := s.balance_after;
    e.lots := s.lots;
    e.actor := current_user;
    -- the merchant comes from the locked account row the update writes anyway
    UPDATE wallet.accounts SET ledger = s.ledger, next_event = s.next_event WHERE account_id = e.account_id
    RETURNING merchant_id INTO e.merchant_id;
    INSERT INTO wallet.entries (entry_id, account_id, kind, amount, balance_after, idempotency_key, reason, reference,
                                lots, hold_id, reverses, actor, created_at, points, expires_at, policy, merchant_id)
    VALUES (e.entry_id, e.account_id, e.kind, e.amount, e.balance_after, e.idempotency_key, e.reason, e.reference,
            e.lots, e.hold_id, e.reverses, e.actor, e.created_at, e.points, e.expires_at, e.policy, e.merchant_id)
    RETURNING * INTO e;
    RETURN e;
END
$$;
CREATE OR REPLACE FUNCTION wallet.open_account(program_id bigint, member_ref text) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
    is_closed boolean;
    merchant bigint;
    member bigint;
BEGIN
    IF program_id IS NULL OR member_ref IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN program_id IS NULL THEN 'program_id' ELSE 'member reference' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'An account is opened in a points program for the merchant app''s own user id.';
    END IF;
    IF btrim(member_ref) = '' THEN
        RAISE EXCEPTION 'member reference must not be blank'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An account is opened for the merchant app''s own user id.';
    END IF;
    -- a key of a unique index, like the member references of the redemption API
    IF length(member_ref) > 256 THEN
        RAISE EXCEPTION 'member reference is too long'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A member reference has at most 256 characters; this one has %s.', length(member_ref));
    END IF;
    SELECT p.closed_at IS NOT NULL, p.merchant_id INTO is_closed, merchant FROM wallet.programs p WHERE p.program_id = open_account.program_id AND wallet.acts_for(p.merchant_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
    member := wallet_internal.member_ensure(merchant, member_ref);   -- the member exists afterwards, whatever follows
    SELECT a.account_id INTO id FROM wallet.accounts a
     WHERE a.program_id = open_account.program_id AND a.member_ref = open_account.member_ref;
    IF FOUND THEN
        RETURN id;
    END IF;
    IF is_closed THEN
        PERFORM wallet_internal.program_closed(program_id);
    END IF;
    -- a concurrent open of the same member waits on the unique index, then finds the row
    INSERT INTO wallet.accounts (program_id, member_ref, member_id, merchant_id)
    VALUES (open_account.program_id, open_account.member_ref, member, merchant)
    ON CONFLICT ON CONSTRAINT accounts_program_id_member_ref_key DO NOTHING
    RETURNING account_id INTO id;
    IF id IS NULL THEN
        SELECT a.account_id INTO id FROM wallet.accounts a
         WHERE a.program_id = open_account.program_id AND a.member_ref = open_account.member_ref;
    END IF;
    RETURN id;
END
$$;

-- == 8c. SQL-language helpers become PL/pgSQL (speed)
-- A LANGUAGE sql function with a SET clause is never inlined, and then runs
-- through the SQL-function executor, which plans its body again on every
-- call from PL/pgSQL: policy_expiry alone cost accrue about a third of its
-- speed.  PL/pgSQL keeps its plans for the session and keeps the pinned path.
CREATE OR REPLACE FUNCTION wallet.policy_expiry(at timestamptz, expiry interval, granularity text) RETURNS timestamptz
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN CASE WHEN expiry IS NULL THEN 'infinity'::timestamptz
                   WHEN granularity = 'month'
                   THEN (date_trunc('month', (at AT TIME ZONE 'UTC') + expiry) + interval '1 month') AT TIME ZONE 'UTC'
                   ELSE (date_trunc('day', (at AT TIME ZONE 'UTC') + expiry) + interval '1 day') AT TIME ZONE 'UTC'
              END;
END
$$;

CREATE OR REPLACE FUNCTION wallet_internal.idem_entry(e wallet.entries) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN jsonb_build_object('operation', e.kind, 'points', e.points, 'reason', e.reason, 'reference', e.reference,
                                 'expires_at', e.expires_at, 'reverses', e.reverses, 'policy', e.policy,
                                 'hold_id', CASE WHEN e.kind IN ('capture', 'release') THEN e.hold_id END);
END
$$;

CREATE OR REPLACE FUNCTION wallet_internal.sees_program(program_id bigint) RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN (SELECT coalesce((SELECT wallet.acts_for(p.merchant_id) FROM wallet.programs p WHERE p.program_id = $1), false));
END
$$;

CREATE OR REPLACE FUNCTION wallet_internal.sees_account(account_id bigint) RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN (SELECT coalesce((SELECT wallet.acts_for(p.merchant_id)
                               FROM wallet.accounts a JOIN wallet.programs p ON p.program_id = a.program_id
                              WHERE a.account_id = $1), false));
END
$$;

CREATE OR REPLACE FUNCTION wallet_internal.sees_campaign(campaign_id bigint) RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN (SELECT coalesce((SELECT wallet.acts_for(c.merchant_id) FROM wallet.campaigns c WHERE c.campaign_id = $1), false));
END
$$;

CREATE OR REPLACE FUNCTION wallet_internal.code_merchant(input text) RETURNS bigint
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN (SELECT c.merchant_id FROM wallet.parse_code($1) p JOIN wallet.campaigns c ON c.campaign_id = wallet.code_campaign(p.code)
             WHERE wallet.acts_for(c.merchant_id));
END
$$;

CREATE OR REPLACE FUNCTION wallet_internal.key_scope(stored bigint, code_merchant bigint) RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN CASE WHEN $2 IS NOT NULL THEN $1 = $2 ELSE wallet.acts_for($1) END;
END
$$;


-- == 10a. loyalty data model (issue 10)
-- Exactly what sql/ext/loyalty.sql creates (every object is new).

-- A program that earns from purchases has a currency and a rounding rule;
-- a merchant has at most one open earning program per currency, the one
-- wallet.record_purchase posts to.  Tier qualification is per program.
ALTER TABLE wallet.programs ADD COLUMN currency text CHECK (currency ~ '^[A-Z]{3}$');
ALTER TABLE wallet.programs ADD COLUMN rounding text NOT NULL DEFAULT 'floor' CHECK (rounding IN ('floor', 'nearest', 'ceiling'));
ALTER TABLE wallet.programs ADD COLUMN refund_debt boolean NOT NULL DEFAULT false;
ALTER TABLE wallet.programs ADD COLUMN point_value numeric CHECK (point_value >= 0);
ALTER TABLE wallet.programs ADD COLUMN tier_window text NOT NULL DEFAULT 'rolling' CHECK (tier_window IN ('rolling', 'calendar_year'));
ALTER TABLE wallet.programs ADD COLUMN tier_window_months int NOT NULL DEFAULT 12 CHECK (tier_window_months BETWEEN 1 AND 24);
ALTER TABLE wallet.programs ADD COLUMN tier_downgrade text NOT NULL DEFAULT 'grace' CHECK (tier_downgrade IN ('never', 'period_end', 'grace'));
ALTER TABLE wallet.programs ADD COLUMN tier_grace_days int NOT NULL DEFAULT 30 CHECK (tier_grace_days >= 0);
ALTER TABLE wallet.programs ADD COLUMN tier_downgrade_step text NOT NULL DEFAULT 'qualified' CHECK (tier_downgrade_step IN ('one_level', 'qualified'));
COMMENT ON COLUMN wallet.programs.currency IS 'ISO 4217 code of the money the program earns from (wallet.record_purchase); NULL = the program earns from no purchase';
COMMENT ON COLUMN wallet.programs.rounding IS 'how fractional points of a purchase are rounded to whole points: floor, nearest (half up) or ceiling';
COMMENT ON COLUMN wallet.programs.refund_debt IS 'whether a refund may take back more points than the member still has (the rest becomes a debt); false = within the balance';
COMMENT ON COLUMN wallet.programs.point_value IS 'money value of one point in the program''s currency (for campaign cost and ROI); NULL = unknown';
COMMENT ON COLUMN wallet.programs.tier_window IS 'window of the points earned that qualify for a tier: rolling (the last tier_window_months months) or calendar_year';
COMMENT ON COLUMN wallet.programs.tier_window_months IS 'length of a rolling qualification window in months (1 to 24: the ledger keeps 24 monthly buckets)';
COMMENT ON COLUMN wallet.programs.tier_downgrade IS 'when a member below its tier''s threshold moves down: never, at the end of the qualification period (period_end) or after tier_grace_days days below it (grace)';
COMMENT ON COLUMN wallet.programs.tier_grace_days IS 'days a member may stay below its tier''s threshold before moving down (tier_downgrade grace)';
COMMENT ON COLUMN wallet.programs.tier_downgrade_step IS 'a downgrade moves one_level down at a time or straight to the qualified tier';
CREATE UNIQUE INDEX programs_earning_currency_idx ON wallet.programs (merchant_id, currency)
    WHERE currency IS NOT NULL AND closed_at IS NULL;
COMMENT ON INDEX wallet.programs_earning_currency_idx IS 'a merchant has at most one open program earning from purchases in each currency';

------------------------------------------------------------------------------
-- Purchases and refunds
------------------------------------------------------------------------------

-- No foreign keys and no CHECK constraints, as wallet.entries: a foreign
-- key would lock the merchant's row on every purchase (FOR KEY SHARE, a
-- MultiXact once checkouts overlap), and each insert would plan the CHECK
-- expressions anew (together about a sixth of record_purchase).  The rows
-- are written only by wallet.record_purchase, from the rows it just read
-- and arguments it checked (amount > 0, an ISO currency, points >= 0), and
-- wallet.record_refund, which keeps refunded_amount <= amount and
-- refunded_points <= points under the account's and the purchase's lock.
CREATE TABLE wallet.purchases (
    purchase_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id     bigint NOT NULL,
    member_id       bigint NOT NULL,
    order_ref       text NOT NULL,
    amount          numeric NOT NULL,
    currency        text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    attributes      jsonb NOT NULL DEFAULT '{}',
    program_id      bigint,
    account_id      bigint,
    points          bigint NOT NULL DEFAULT 0,
    entry_id        bigint,
    rules           jsonb NOT NULL DEFAULT '[]',
    refunded_amount numeric NOT NULL DEFAULT 0,
    refunded_points bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (merchant_id, order_ref)
);
CREATE INDEX purchases_member_idx ON wallet.purchases (merchant_id, member_id, occurred_at);
CREATE INDEX purchases_time_idx ON wallet.purchases (merchant_id, occurred_at);
COMMENT ON TABLE wallet.purchases IS 'purchases recorded at checkout (wallet.record_purchase): the base of every later measure (ARPU, lift, churn, conversions); one per order_ref and merchant';
COMMENT ON COLUMN wallet.purchases.purchase_id IS 'purchase id';
COMMENT ON COLUMN wallet.purchases.merchant_id IS 'merchant the purchase was made at: the key to distribute by';
COMMENT ON COLUMN wallet.purchases.member_id IS 'the member who paid (wallet.members)';
COMMENT ON COLUMN wallet.purchases.order_ref IS 'the merchant''s own order reference, unique per merchant (the idempotency key of record_purchase)';
COMMENT ON COLUMN wallet.purchases.amount IS 'amount paid, in currency';
COMMENT ON COLUMN wallet.purchases.currency IS 'ISO 4217 code of the amount';
COMMENT ON COLUMN wallet.purchases.occurred_at IS 'when the purchase was made';
COMMENT ON COLUMN wallet.purchases.attributes IS 'what the earning rules and analytics read: store, channel, payment_method, categories (an array), and the app''s own keys';
COMMENT ON COLUMN wallet.purchases.program_id IS 'the program that earned from it (NULL: none in that currency)';
COMMENT ON COLUMN wallet.purchases.account_id IS 'the member''s account in that program';
COMMENT ON COLUMN wallet.purchases.points IS 'points earned by the purchase';
COMMENT ON COLUMN wallet.purchases.entry_id IS 'the accrue entry that posted them (NULL when none were earned)';
COMMENT ON COLUMN wallet.purchases.rules IS 'the rules that fired, as an array of {rule_id, points, why}: the explanation of points';
COMMENT ON COLUMN wallet.purchases.refunded_amount IS 'total refunded so far';
COMMENT ON COLUMN wallet.purchases.refunded_points IS 'points taken back by refunds so far (never more than points)';
COMMENT ON COLUMN wallet.purchases.created_at IS 'when it was recorded';
SELECT pg_catalog.pg_extension_config_dump('wallet.purchases', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.purchases', 'purchase_id'), '');
ALTER TABLE wallet.purchases ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.purchases USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.purchases IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TABLE wallet.refunds (
    refund_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    member_id   bigint NOT NULL REFERENCES wallet.members,
    purchase_id bigint NOT NULL REFERENCES wallet.purchases,
    refund_ref  text NOT NULL,
    amount      numeric NOT NULL CHECK (amount > 0),
    points      bigint NOT NULL DEFAULT 0 CHECK (points >= 0),
    entry_id    bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (merchant_id, refund_ref)
);
CREATE INDEX refunds_purchase_idx ON wallet.refunds (purchase_id);
COMMENT ON TABLE wallet.refunds IS 'refunds of purchases (wallet.record_refund), full or partial, several per purchase; one per refund_ref and merchant';
COMMENT ON COLUMN wallet.refunds.refund_id IS 'refund id';
COMMENT ON COLUMN wallet.refunds.merchant_id IS 'merchant of the purchase: the key to distribute by';
COMMENT ON COLUMN wallet.refunds.member_id IS 'the member of the purchase';
COMMENT ON COLUMN wallet.refunds.purchase_id IS 'the purchase refunded';
COMMENT ON COLUMN wallet.refunds.refund_ref IS 'the merchant''s own refund reference, unique per merchant (the idempotency key of record_refund)';
COMMENT ON COLUMN wallet.refunds.amount IS 'amount refunded, in the purchase''s currency';
COMMENT ON COLUMN wallet.refunds.points IS 'points taken back';
COMMENT ON COLUMN wallet.refunds.entry_id IS 'the entry that took them back (NULL when none)';
COMMENT ON COLUMN wallet.refunds.created_at IS 'when it was recorded';
SELECT pg_catalog.pg_extension_config_dump('wallet.refunds', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.refunds', 'refund_id'), '');
ALTER TABLE wallet.refunds ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.refunds USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.refunds IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

------------------------------------------------------------------------------
-- The member event stream
------------------------------------------------------------------------------

CREATE TABLE wallet.member_events (
    event_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    member_id   bigint NOT NULL REFERENCES wallet.members,
    kind        text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{0,62}$'),
    occurred_at timestamptz NOT NULL DEFAULT now(),
    attributes  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX member_events_member_idx ON wallet.member_events (merchant_id, member_id, kind, occurred_at);
CREATE INDEX member_events_kind_idx ON wallet.member_events (merchant_id, kind, occurred_at);
COMMENT ON TABLE wallet.member_events IS 'what happened to members that triggers and analytics read: tier changes (tier_changed), and the app''s events (wallet.track_event: cart_updated, location, shared, ...)';
COMMENT ON COLUMN wallet.member_events.event_id IS 'event id';
COMMENT ON COLUMN wallet.member_events.merchant_id IS 'merchant of the member: the key to distribute by';
COMMENT ON COLUMN wallet.member_events.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.member_events.kind IS 'what happened: a lower-case word (tier_changed, cart_updated, location, shared, ...)';
COMMENT ON COLUMN wallet.member_events.occurred_at IS 'when it happened';
COMMENT ON COLUMN wallet.member_events.attributes IS 'what the kind carries (tier_changed: program_id, account_id, from_tier, to_tier, from_rank, to_rank, reason)';
SELECT pg_catalog.pg_extension_config_dump('wallet.member_events', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.member_events', 'event_id'), '');
ALTER TABLE wallet.member_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.member_events USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.member_events IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

------------------------------------------------------------------------------
-- Tiers
------------------------------------------------------------------------------

CREATE TABLE wallet.tiers (
    tier_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    program_id  bigint NOT NULL REFERENCES wallet.programs,
    rank        int NOT NULL CHECK (rank > 0),
    name        text NOT NULL CHECK (btrim(name) <> ''),
    min_points  bigint NOT NULL CHECK (min_points >= 0),
    min_spend   numeric CHECK (min_spend >= 0),
    multiplier  numeric NOT NULL DEFAULT 1 CHECK (multiplier > 0),
    benefits    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (program_id, rank),
    UNIQUE (program_id, name)
);
COMMENT ON TABLE wallet.tiers IS 'tiers (VIP levels) of a program: a member holds the highest rank whose thresholds it meets in the qualification window (below every tier: no tier)';
COMMENT ON COLUMN wallet.tiers.tier_id IS 'tier id';
COMMENT ON COLUMN wallet.tiers.merchant_id IS 'merchant of the program: the key to distribute by';
COMMENT ON COLUMN wallet.tiers.program_id IS 'the program';
COMMENT ON COLUMN wallet.tiers.rank IS 'order of the tiers, 1 the lowest; higher ranks have higher thresholds';
COMMENT ON COLUMN wallet.tiers.name IS 'the tier''s name (e.g. Gold), unique in the program';
COMMENT ON COLUMN wallet.tiers.min_points IS 'points earned in the window (not the balance) that qualify';
COMMENT ON COLUMN wallet.tiers.min_spend IS 'spend in the window (purchases less refunds, in the program''s currency) that qualifies too; NULL = no spend threshold';
COMMENT ON COLUMN wallet.tiers.multiplier IS 'earning multiplier of the tier (1 = none)';
COMMENT ON COLUMN wallet.tiers.benefits IS 'the tier''s benefits, for the app';
COMMENT ON COLUMN wallet.tiers.created_at IS 'when the tier was made';
SELECT pg_catalog.pg_extension_config_dump('wallet.tiers', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.tiers', 'tier_id'), '');
ALTER TABLE wallet.tiers ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.tiers USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.tiers IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TABLE wallet.account_tiers (
    account_id  bigint PRIMARY KEY REFERENCES wallet.accounts,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    member_id   bigint NOT NULL REFERENCES wallet.members,
    program_id  bigint NOT NULL REFERENCES wallet.programs,
    tier_id     bigint REFERENCES wallet.tiers,
    rank        int NOT NULL DEFAULT 0,
    since       timestamptz NOT NULL DEFAULT now(),
    below_since timestamptz,
    review_at   timestamptz
);
CREATE INDEX account_tiers_review_idx ON wallet.account_tiers (program_id, review_at) WHERE review_at IS NOT NULL;
COMMENT ON TABLE wallet.account_tiers IS 'the current tier of each account of a tiered program (no row, or tier_id NULL: no tier)';
COMMENT ON COLUMN wallet.account_tiers.account_id IS 'the account (wallet.accounts)';
COMMENT ON COLUMN wallet.account_tiers.merchant_id IS 'merchant of the program: the key to distribute by';
COMMENT ON COLUMN wallet.account_tiers.member_id IS 'the member of the account';
COMMENT ON COLUMN wallet.account_tiers.program_id IS 'the program of the account';
COMMENT ON COLUMN wallet.account_tiers.tier_id IS 'the tier held (NULL = none)';
COMMENT ON COLUMN wallet.account_tiers.rank IS 'rank of the tier held (0 = none)';
COMMENT ON COLUMN wallet.account_tiers.since IS 'when the account reached the tier it holds';
COMMENT ON COLUMN wallet.account_tiers.below_since IS 'since when the account has been below its tier''s threshold (NULL = it qualifies): starts the grace period';
COMMENT ON COLUMN wallet.account_tiers.review_at IS 'when wallet.evaluate_tiers must look at the account next (a due downgrade); NULL = nothing due';
SELECT pg_catalog.pg_extension_config_dump('wallet.account_tiers', '');
ALTER TABLE wallet.account_tiers ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.account_tiers USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.account_tiers IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TABLE wallet.tier_history (
    change_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    member_id   bigint NOT NULL REFERENCES wallet.members,
    account_id  bigint NOT NULL,
    program_id  bigint NOT NULL REFERENCES wallet.programs,
    from_tier   bigint REFERENCES wallet.tiers,
    to_tier     bigint REFERENCES wallet.tiers,
    from_rank   int NOT NULL,
    to_rank     int NOT NULL,
    reason      text NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    entry_id    bigint
);
CREATE INDEX tier_history_account_idx ON wallet.tier_history (account_id, changed_at);
COMMENT ON TABLE wallet.tier_history IS 'every tier change of an account, and why';
COMMENT ON COLUMN wallet.tier_history.change_id IS 'change id';
COMMENT ON COLUMN wallet.tier_history.merchant_id IS 'merchant of the program: the key to distribute by';
COMMENT ON COLUMN wallet.tier_history.member_id IS 'the member of the account';
COMMENT ON COLUMN wallet.tier_history.account_id IS 'the account';
COMMENT ON COLUMN wallet.tier_history.program_id IS 'the program';
COMMENT ON COLUMN wallet.tier_history.from_tier IS 'tier before (NULL = none)';
COMMENT ON COLUMN wallet.tier_history.to_tier IS 'tier after (NULL = none)';
COMMENT ON COLUMN wallet.tier_history.from_rank IS 'rank before (0 = none)';
COMMENT ON COLUMN wallet.tier_history.to_rank IS 'rank after (0 = none)';
COMMENT ON COLUMN wallet.tier_history.reason IS 'why: upgrade (with the posting that crossed the threshold), grace ended, period ended, ...';
COMMENT ON COLUMN wallet.tier_history.changed_at IS 'when the change took effect';
COMMENT ON COLUMN wallet.tier_history.entry_id IS 'the posting that crossed the threshold (upgrades), else NULL';
SELECT pg_catalog.pg_extension_config_dump('wallet.tier_history', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.tier_history', 'change_id'), '');
ALTER TABLE wallet.tier_history ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.tier_history USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.tier_history IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

-- == 10b. budgets and code redemption speed (issue 11)
-- The part sql/ext/budgets.sql as it stands (with its row-level security),
-- the SQLSTATEs WL601-WL605 in wallet.error_codes, and run_maintenance
-- reclaiming expired budget holds.
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
-- Deadlock freedom: a transaction waits for a slice only when that slice is
-- numbered higher than every slice of the same budget it holds.  The fast
-- path waits for its own slice s holding none (or only s itself); the gather
-- locks slices below s with SKIP LOCKED (never waiting) and slices above s
-- in ascending order.  Hold rows are locked with SKIP LOCKED by takers, and
-- whoever locks a hold row first (convert, release, reclaim) holds no slice
-- then.  A caller taking from several budgets in one transaction takes them
-- in campaign_id order.
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
    UPDATE wallet.budget_slices s SET remaining = s.remaining - _u
     WHERE s.campaign_id = _c AND s.slice = _s AND s.remaining >= _u;
    IF FOUND THEN
        RETURN _u;
    END IF;
    -- Gather: own slice first (waiting for it holds no other slice), then the
    -- lower ones without waiting, the higher ones in order.
    SELECT s.remaining INTO _r FROM wallet.budget_slices s WHERE s.campaign_id = _c AND s.slice = _s FOR UPDATE;
    _sl := ARRAY[_s];
    _sum := _r;
    FOR k IN 0 .. _n - 1 LOOP
        EXIT WHEN _sum >= _u;
        CONTINUE WHEN k = _s;
        IF k < _s THEN
            SELECT s.remaining INTO _r FROM wallet.budget_slices s WHERE s.campaign_id = _c AND s.slice = k FOR UPDATE SKIP LOCKED;
            CONTINUE WHEN NOT FOUND;
        ELSE
            SELECT s.remaining INTO _r FROM wallet.budget_slices s WHERE s.campaign_id = _c AND s.slice = k FOR UPDATE;
        END IF;
        _sl := _sl || k;
        _sum := _sum + _r;
    END LOOP;
    IF _sum < _u THEN
        -- Expired holds stop counting: their units come back before a refusal.
        _sum := _sum + wallet_internal.budget_expire_holds(_c);
    END IF;
    _take := CASE WHEN _sum >= _u THEN _u WHEN allow_partial THEN _sum ELSE 0 END;
    -- What is left goes evenly over the slices locked (a dry slice is
    -- refilled); the odd units to the highest-numbered ones, which every
    -- take below them waits for rather than skips: scarce units stay
    -- reachable by all.
    _left := _sum - _take;
    _cnt := cardinality(_sl);
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
            USING ERRCODE = 'WL101', HINT = 'Create it with wallet.create_campaign.';
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
            USING ERRCODE = 'WL101', HINT = 'Create it with wallet.create_campaign.';
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
BEGIN
    IF $1 IS NULL OR $1 < 1 THEN
        RAISE EXCEPTION 'max_holds must be positive'
            USING ERRCODE = CASE WHEN $1 IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'Expired holds are tidied up at most max_holds per call.';
    END IF;
    -- Hold rows first (SKIP LOCKED: a take reclaiming them has them), then
    -- each budget's slice, budgets in campaign order.
    FOR r IN
        WITH x AS (
            SELECT h.hold_id FROM wallet.budget_holds h
             WHERE h.state = 'active' AND h.expires_at <= clock_timestamp()
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
    'return the units of up to max_holds expired budget holds to their budgets (tidying only: takes reclaim expired holds themselves before refusing); returns the number of holds reclaimed; run by wallet.run_maintenance';

CREATE OR REPLACE VIEW wallet.error_codes (sqlstate, name, description) AS VALUES
    ('WL001', 'root_key_not_loaded', 'a function that needs the root key runs on a server started without one (hint: the settings to configure)'),
    ('WL002', 'idempotency_key_reused', 'an idempotency key is sent again with a different fingerprint (see Idempotency): a posting with other points, reason, reference, expiry, hold or operation on the same account; a redemption or reservation with another code, member or ttl, or a redemption''s key for a reservation'),
    ('WL101', 'unknown_campaign', 'generate_codes, rotate_code_key, retire_code_key on a campaign that does not exist'),
    ('WL102', 'unknown_merchant', 'create_campaign, create_program, set_code_guard or clear_code_failures for a merchant that does not exist'),
    ('WL103', 'unknown_key_version', 'retire_code_key of a version the campaign does not have'),
    ('WL104', 'retire_current_key', 'retire_code_key of the version that signs new codes (rotate first)'),
    ('WL105', 'key_versions_exhausted', 'rotate_code_key past version 1023'),
    ('WL106', 'serials_exhausted', 'generate_codes past serial 2^38 − 1 (the refused call uses up no serial)'),
    ('WL107', 'campaign_field_fixed', 'an UPDATE changing a campaign''s prefix or mac_bits, or lowering its current_key_version'),
    ('WL108', 'current_key_retired', 'generate_codes when the campaign''s current key version was retired by hand'),
    ('WL109', 'serial_sequence_missing', 'generate_codes, campaign_next_serial when the campaign''s sequence wallet.campaign_<id>_serials was dropped by hand (it is not recreated: that would repeat serials)'),
    ('WL110', 'campaign_ids_exhausted', 'create_campaign once every campaign id up to 2^32 − 1 (the largest a code carries) has been handed out'),
    ('WL120', 'installation_id_fixed', 'UPDATE, DELETE or TRUNCATE of wallet.installation, or a new installation id once key versions are bound to the current one'),
    ('WL121', 'key_binding_fixed', 'an unbound (legacy) key version inserted by anyone but the owner of wallet.code_keys, or a key version''s installation_id changed'),
    ('WL122', 'campaign_not_deletable', 'DELETE or TRUNCATE of wallet.campaigns (end a campaign instead)'),
    ('WL123', 'campaign_id_reused', 'an INSERT into wallet.campaigns with an explicit campaign_id the identity has already handed out'),
    ('WL150', 'unknown_redemption', 'undo_redemption names no redemption'),
    ('WL151', 'redemption_already_undone', 'undo_redemption on a redemption that is already undone'),
    ('WL152', 'unknown_reservation', 'release_reservation names no reservation'),
    ('WL153', 'reservation_converted', 'release_reservation on a reservation that was already redeemed (undo the redemption instead)'),
    ('WL201', 'unknown_account', 'no points account with that id'),
    ('WL202', 'program_closed', 'a posting or a new account in a closed program'),
    ('WL203', 'insufficient_points', 'a redemption, hold or negative adjustment exceeds the spendable balance; nothing is posted'),
    ('WL204', 'invalid_amount', 'points missing, zero or negative where a positive number is required (zero for adjust)'),
    ('WL205', 'amount_out_of_range', 'a balance, lot or lifetime total would exceed bigint'),
    ('WL206', 'unknown_hold', 'no hold with that id'),
    ('WL207', 'hold_not_open', 'the hold was already captured or released (and this is not the identical repeated call)'),
    ('WL208', 'hold_expired', 'capture after the hold''s time to live ran out'),
    ('WL209', 'capture_exceeds_hold', 'capture of more points than the hold holds'),
    ('WL210', 'entry_already_reversed', 'the entry was already reversed'),
    ('WL211', 'entry_not_reversible', 'only accrue, redeem and capture entries can be reversed'),
    ('WL212', 'unknown_entry', 'no journal entry with that id'),
    ('WL213', 'journal_append_only', 'UPDATE, DELETE or TRUNCATE on wallet.entries'),
    ('WL214', 'unknown_program', 'no points program with that id'),
    ('WL601', 'budget_not_set', 'a budget take, hold or status for a campaign that has no budget (wallet.set_campaign_budget)'),
    ('WL602', 'budget_below_committed', 'set_campaign_budget shrinking a budget below the units granted plus held'),
    ('WL603', 'unknown_budget_hold', 'no budget hold with that id'),
    ('WL604', 'budget_hold_closed', 'converting a released budget hold, or releasing a converted one'),
    ('WL605', 'budget_field_fixed', 'set_campaign_budget changing a budget''s unit or number of slices'),
    ('WL401', 'audit_append_only', 'UPDATE, DELETE or TRUNCATE on wallet.audit_log');

CREATE OR REPLACE PROCEDURE wallet.run_maintenance()
    LANGUAGE plpgsql
    AS $$
BEGIN
    -- 1. expiry: at most 100 batches of 1,000 due accounts, each committed
    CALL wallet.expire_points_batched(pg_catalog.now(), 1000, 100);
    -- 2. failed code attempts older than a day (the guard's default window is 15 minutes)
    PERFORM wallet.purge_code_attempts(interval '1 day');
    COMMIT;
    -- 3. expired budget holds: their units back to the slices, 1,000 per call
    --    (tidying only: a take reclaims expired holds itself before refusing)
    PERFORM wallet.reclaim_budget_holds(1000);
    COMMIT;
END
$$;
COMMENT ON PROCEDURE wallet.run_maintenance() IS 'runs every periodic job with bounded work per call, committing as it goes: expiry (up to 100,000 due accounts, 1,000 per transaction), purge of failed code attempts older than a day, units of up to 1,000 expired budget holds returned; later issues add their jobs here; schedule it every minute (README "Maintenance")';

-- == 10d. purchases and earning rules (issue 10)
-- What sql/ext/purchases.sql creates (every object is new), and what it
-- changes elsewhere: refund entries in the journal (entry_step, the unique
-- index of reversals), the error codes WL500-WL502, forget_member trimming
-- purchase attributes.

-- A refund entry takes back part of an accrual, several times per accrual.
DROP INDEX wallet.entries_reverses_idx;
CREATE UNIQUE INDEX entries_reverses_idx ON wallet.entries (reverses) WHERE kind = 'reverse';
COMMENT ON COLUMN wallet.entries.kind IS 'accrue, redeem, hold, capture, release, expire, reverse, adjust or refund (part of a purchase''s accrual taken back)';
COMMENT ON COLUMN wallet.entries.reverses IS 'entry undone by a reverse entry, or the accrual a refund entry takes part of back';
COMMENT ON COLUMN wallet.entries.policy IS 'reverse and refund: within_balance or unlimited';

CREATE OR REPLACE FUNCTION wallet_internal.entry_step(l wallet.points_ledger, e wallet.entries) RETURNS wallet.ledger_step
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    o wallet.entries;
BEGIN
    CASE e.kind
    WHEN 'accrue', 'redeem', 'adjust' THEN
        RETURN wallet.ledger_apply(l, e.kind, e.created_at, e.points, e.expires_at);
    WHEN 'hold' THEN
        RETURN wallet.ledger_apply(l, 'hold', e.created_at, e.points, e.expires_at, e.entry_id);
    WHEN 'capture' THEN
        RETURN wallet.ledger_apply(l, 'capture', e.created_at, e.points, NULL, e.hold_id);
    WHEN 'release' THEN
        -- a lapsed hold settled by expire_points takes effect at its as_of
        RETURN wallet.ledger_apply(l, 'release', coalesce(e.expires_at, e.created_at), NULL, NULL, e.hold_id);
    WHEN 'expire' THEN
        RETURN wallet.ledger_apply(l, 'expire', e.expires_at, NULL);
    WHEN 'reverse' THEN
        SELECT * INTO o FROM wallet.entries WHERE entry_id = e.reverses;
        IF o.kind = 'accrue' THEN
            RETURN wallet.ledger_apply(l, 'reverse_accrual', e.created_at, o.points, o.expires_at,
                                       policy => e.policy, earned_at => o.created_at);
        END IF;
        RETURN wallet.ledger_apply(l, 'restore', e.created_at, NULL,
            lot_points => ARRAY(SELECT (x->>'points')::bigint FROM jsonb_array_elements(o.lots) WITH ORDINALITY AS j(x, n) ORDER BY n),
            lot_expiries => ARRAY(SELECT (x->>'expires_at')::timestamptz FROM jsonb_array_elements(o.lots) WITH ORDINALITY AS j(x, n) ORDER BY n));
    WHEN 'refund' THEN
        -- a purchase refund (wallet.record_refund): part of an accrual taken back
        SELECT * INTO o FROM wallet.entries WHERE entry_id = e.reverses;
        RETURN wallet.ledger_apply(l, 'reverse_accrual', e.created_at, e.points, o.expires_at,
                                   policy => e.policy, earned_at => o.created_at);
    END CASE;
END
$$;
COMMENT ON FUNCTION wallet_internal.entry_step(wallet.points_ledger, wallet.entries) IS 'applies journal entry e to ledger l (the single mapping used by posting and by replay)';

CREATE OR REPLACE VIEW wallet.error_codes (sqlstate, name, description) AS VALUES
    ('WL001', 'root_key_not_loaded', 'a function that needs the root key runs on a server started without one (hint: the settings to configure)'),
    ('WL002', 'idempotency_key_reused', 'an idempotency key is sent again with a different fingerprint (see Idempotency): a posting with other points, reason, reference, expiry, hold or operation on the same account; a redemption or reservation with another code, member or ttl, or a redemption''s key for a reservation'),
    ('WL101', 'unknown_campaign', 'generate_codes, rotate_code_key, retire_code_key on a campaign that does not exist'),
    ('WL102', 'unknown_merchant', 'create_campaign, create_program, set_code_guard or clear_code_failures for a merchant that does not exist'),
    ('WL103', 'unknown_key_version', 'retire_code_key of a version the campaign does not have'),
    ('WL104', 'retire_current_key', 'retire_code_key of the version that signs new codes (rotate first)'),
    ('WL105', 'key_versions_exhausted', 'rotate_code_key past version 1023'),
    ('WL106', 'serials_exhausted', 'generate_codes past serial 2^38 − 1 (the refused call uses up no serial)'),
    ('WL107', 'campaign_field_fixed', 'an UPDATE changing a campaign''s prefix or mac_bits, or lowering its current_key_version'),
    ('WL108', 'current_key_retired', 'generate_codes when the campaign''s current key version was retired by hand'),
    ('WL109', 'serial_sequence_missing', 'generate_codes, campaign_next_serial when the campaign''s sequence wallet.campaign_<id>_serials was dropped by hand (it is not recreated: that would repeat serials)'),
    ('WL110', 'campaign_ids_exhausted', 'create_campaign once every campaign id up to 2^32 − 1 (the largest a code carries) has been handed out'),
    ('WL120', 'installation_id_fixed', 'UPDATE, DELETE or TRUNCATE of wallet.installation, or a new installation id once key versions are bound to the current one'),
    ('WL121', 'key_binding_fixed', 'an unbound (legacy) key version inserted by anyone but the owner of wallet.code_keys, or a key version''s installation_id changed'),
    ('WL122', 'campaign_not_deletable', 'DELETE or TRUNCATE of wallet.campaigns (end a campaign instead)'),
    ('WL123', 'campaign_id_reused', 'an INSERT into wallet.campaigns with an explicit campaign_id the identity has already handed out'),
    ('WL150', 'unknown_redemption', 'undo_redemption names no redemption'),
    ('WL151', 'redemption_already_undone', 'undo_redemption on a redemption that is already undone'),
    ('WL152', 'unknown_reservation', 'release_reservation names no reservation'),
    ('WL153', 'reservation_converted', 'release_reservation on a reservation that was already redeemed (undo the redemption instead)'),
    ('WL201', 'unknown_account', 'no points account with that id'),
    ('WL202', 'program_closed', 'a posting or a new account in a closed program'),
    ('WL203', 'insufficient_points', 'a redemption, hold or negative adjustment exceeds the spendable balance; nothing is posted'),
    ('WL204', 'invalid_amount', 'points missing, zero or negative where a positive number is required (zero for adjust)'),
    ('WL205', 'amount_out_of_range', 'a balance, lot or lifetime total would exceed bigint'),
    ('WL206', 'unknown_hold', 'no hold with that id'),
    ('WL207', 'hold_not_open', 'the hold was already captured or released (and this is not the identical repeated call)'),
    ('WL208', 'hold_expired', 'capture after the hold''s time to live ran out'),
    ('WL209', 'capture_exceeds_hold', 'capture of more points than the hold holds'),
    ('WL210', 'entry_already_reversed', 'the entry was already reversed'),
    ('WL211', 'entry_not_reversible', 'only accrue, redeem and capture entries can be reversed'),
    ('WL212', 'unknown_entry', 'no journal entry with that id'),
    ('WL213', 'journal_append_only', 'UPDATE, DELETE or TRUNCATE on wallet.entries'),
    ('WL214', 'unknown_program', 'no points program with that id'),
    ('WL401', 'audit_append_only', 'UPDATE, DELETE or TRUNCATE on wallet.audit_log'),
    ('WL500', 'unknown_purchase', 'record_refund names an order the merchant never recorded'),
    ('WL501', 'refund_exceeds_purchase', 'record_refund of more than is left unrefunded of the order'),
    ('WL502', 'unknown_earning_rule', 'no earning rule with that id');

CREATE OR REPLACE FUNCTION wallet.forget_member(merchant_id bigint, member_ref text, reason text) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    _merchant bigint := merchant_id;
    _ref text := member_ref;
    pseudonym text;
    _member bigint;
    n jsonb := '{}';
    c bigint;
    t text;
    also text;
BEGIN
    PERFORM wallet_internal.member_check(_merchant, _ref);
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'reason must not be %', CASE WHEN reason IS NULL THEN 'null' ELSE 'blank' END
            USING ERRCODE = CASE WHEN reason IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'An erasure is recorded with the reason it was made for.';
    END IF;
    pseudonym := 'forgotten:' || encode(sha256(convert_to(gen_random_uuid()::text || _ref, 'UTF8')), 'hex');

    UPDATE wallet.members m SET member_ref = pseudonym, time_zone = NULL, locale = NULL, status = 'forgotten', updated_at = now()
     WHERE m.merchant_id = _merchant AND m.member_ref = _ref
    RETURNING m.member_id INTO _member;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('members', c);
    UPDATE wallet.accounts a SET member_ref = pseudonym
      FROM wallet.programs p
     WHERE p.program_id = a.program_id AND p.merchant_id = _merchant AND a.member_ref = _ref;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('accounts', c);
    -- the tables of a campaign's codes: the member_ref, and what else they hold of the member
    FOR t, also IN VALUES ('code_bindings', ''), ('code_reservations', ''),
                          ('code_redemptions', ', context = ''{}'''), ('member_use_counts', '') LOOP
        EXECUTE format('UPDATE wallet.%I x SET member_ref = $1%s FROM wallet.campaigns k
                         WHERE k.campaign_id = x.campaign_id AND k.merchant_id = $2 AND x.member_ref = $3', t, also)
          USING pseudonym, _merchant, _ref;
        GET DIAGNOSTICS c = ROW_COUNT;
        n := n || jsonb_build_object(t, c);
    END LOOP;
    -- failed attempts are forensics, not totals: deleted, with those that
    -- named no merchant (they cannot be told apart by merchant)
    DELETE FROM wallet.code_failed_attempts f
     WHERE f.member_ref = _ref AND (f.merchant_id = _merchant OR f.merchant_id IS NULL);
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('code_failed_attempts', c);
    PERFORM wallet_internal.code_guard_forget(_merchant, _ref, NULL);
    -- purchases stay in the books (amounts, points); of their attributes only
    -- what describes the sale, not the buyer, is kept
    UPDATE wallet.purchases x
       SET attributes = (SELECT coalesce(jsonb_object_agg(k, v), '{}') FROM jsonb_each(x.attributes) j(k, v)
                          WHERE k IN ('store', 'channel', 'payment_method', 'categories'))
     WHERE x.merchant_id = _merchant AND x.member_id = _member
       AND EXISTS (SELECT FROM jsonb_object_keys(x.attributes) k WHERE k NOT IN ('store', 'channel', 'payment_method', 'categories'));
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('purchases', c);

    IF NOT EXISTS (SELECT FROM jsonb_each(n) e WHERE e.value <> '0') THEN
        RETURN false;   -- nothing names the member (e.g. erased before): nothing to record
    END IF;
    PERFORM wallet_internal.audit_record(_merchant, 'forget_member',
                                jsonb_build_object('table', 'members', 'key', jsonb_build_object('member_id', _member)),
                                NULL, jsonb_build_object('reason', reason, 'pseudonym', pseudonym, 'rows', n));
    RETURN true;
END
$$;
COMMENT ON FUNCTION wallet.forget_member(bigint, text, text) IS 'erases a member''s personal data at a merchant: pseudonymises its member_ref in every table, clears its time zone, locale and request contexts, keeps only store, channel, payment_method and categories of its purchases'' attributes, deletes its failed attempts; ledgers and totals are unchanged; recorded in wallet.audit_log; returns false (and records nothing) when nothing names the member';

-- ======================================================================
-- Purchases, refunds and earning rules (issue 10, part A).
--
-- wallet.record_purchase records a purchase in wallet.purchases, evaluates
-- the program's earning rules and posts the points through the ledger's own
-- posting path (lock_account + post_once, as wallet.accrue does), so every
-- accrual hook (tier upgrades) sees it.  The purchase row is written before
-- the posting, so that anything reading purchases in that transaction (the
-- spend threshold of tiers) sees it.  Rules are data (wallet.earning_rules);
-- a purchase keeps the points and the explanation it got, so changing a rule
-- never changes what was posted.  Per-member caps are counted in
-- wallet.earning_counters, written only under the member's account lock:
-- exact under concurrency.  README "Loyalty".
-- ======================================================================

------------------------------------------------------------------------------
-- Earning rules
------------------------------------------------------------------------------

CREATE TABLE wallet.earning_rules (
    rule_id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id        bigint NOT NULL REFERENCES wallet.merchants,
    program_id         bigint NOT NULL REFERENCES wallet.programs,
    campaign_id        bigint REFERENCES wallet.campaigns,
    name               text NOT NULL CHECK (btrim(name) <> ''),
    effect             text NOT NULL CHECK (effect IN ('per_unit', 'multiplier', 'fixed')),
    value              numeric NOT NULL CHECK (value > 0),
    priority           int NOT NULL DEFAULT 0,
    exclusive          boolean NOT NULL DEFAULT false,
    valid_from         timestamptz NOT NULL DEFAULT now(),
    valid_until        timestamptz CHECK (valid_until > valid_from),
    min_amount         numeric CHECK (min_amount >= 0),
    stores             text[],
    channels           text[],
    payment_methods    text[],
    categories         text[],
    min_tier_rank      int CHECK (min_tier_rank > 0),
    first_purchase     boolean,
    days_of_week       int[] CHECK (days_of_week <@ ARRAY[1, 2, 3, 4, 5, 6, 7]),
    time_from          time,
    time_until         time,
    cap_per_purchase   bigint CHECK (cap_per_purchase > 0),
    cap_per_member_day bigint CHECK (cap_per_member_day > 0),
    cap_per_member     bigint CHECK (cap_per_member > 0),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((time_from IS NULL) = (time_until IS NULL) AND time_from IS DISTINCT FROM time_until OR time_from IS NULL),
    UNIQUE (program_id, name)
);
CREATE INDEX earning_rules_program_idx ON wallet.earning_rules (program_id, valid_from);
COMMENT ON TABLE wallet.earning_rules IS 'earning rules of programs: conditions on a purchase and an effect in points (wallet.create_earning_rule); evaluated by wallet.record_purchase and wallet.preview_purchase';
COMMENT ON COLUMN wallet.earning_rules.rule_id IS 'rule id';
COMMENT ON COLUMN wallet.earning_rules.merchant_id IS 'merchant of the program: the key to distribute by';
COMMENT ON COLUMN wallet.earning_rules.program_id IS 'the program whose purchases the rule earns on';
COMMENT ON COLUMN wallet.earning_rules.campaign_id IS 'the campaign the rule belongs to (NULL = none)';
COMMENT ON COLUMN wallet.earning_rules.name IS 'the rule''s name, unique in the program; starts every explanation';
COMMENT ON COLUMN wallet.earning_rules.effect IS 'per_unit: value points per currency unit of the amount; multiplier: the per_unit points of the purchase times value (the extra part); fixed: value points';
COMMENT ON COLUMN wallet.earning_rules.value IS 'the effect''s figure: points per unit, multiplier (> 1) or whole fixed points';
COMMENT ON COLUMN wallet.earning_rules.priority IS 'evaluation order, highest first (ties: lowest rule_id first)';
COMMENT ON COLUMN wallet.earning_rules.exclusive IS 'an exclusive rule fires alone: only when no rule of higher priority fired, and then no other rule fires';
COMMENT ON COLUMN wallet.earning_rules.valid_from IS 'first instant of a purchase (occurred_at) the rule applies to';
COMMENT ON COLUMN wallet.earning_rules.valid_until IS 'end of the validity, exclusive (NULL = open-ended); wallet.end_earning_rule sets it';
COMMENT ON COLUMN wallet.earning_rules.min_amount IS 'condition: amount at least this (NULL = any)';
COMMENT ON COLUMN wallet.earning_rules.stores IS 'condition: attributes.store is one of these (NULL = any)';
COMMENT ON COLUMN wallet.earning_rules.channels IS 'condition: attributes.channel is one of these (NULL = any)';
COMMENT ON COLUMN wallet.earning_rules.payment_methods IS 'condition: attributes.payment_method is one of these (NULL = any)';
COMMENT ON COLUMN wallet.earning_rules.categories IS 'condition: one of attributes.categories is one of these (NULL = any)';
COMMENT ON COLUMN wallet.earning_rules.min_tier_rank IS 'condition: the member''s tier has at least this rank (wallet.account_tiers; NULL = any)';
COMMENT ON COLUMN wallet.earning_rules.first_purchase IS 'condition: true = only the member''s first purchase in the program (NULL = any)';
COMMENT ON COLUMN wallet.earning_rules.days_of_week IS 'condition: ISO day of week (1 = Monday) of the purchase in the member''s time zone (NULL = any)';
COMMENT ON COLUMN wallet.earning_rules.time_from IS 'condition: local time of day of the purchase at or after this (with time_until; wraps past midnight when later than it)';
COMMENT ON COLUMN wallet.earning_rules.time_until IS 'condition: local time of day of the purchase before this (exclusive)';
COMMENT ON COLUMN wallet.earning_rules.cap_per_purchase IS 'cap: at most this many points of the rule per purchase (NULL = none)';
COMMENT ON COLUMN wallet.earning_rules.cap_per_member_day IS 'cap: at most this many points of the rule per member and day in the member''s time zone (NULL = none)';
COMMENT ON COLUMN wallet.earning_rules.cap_per_member IS 'cap: at most this many points of the rule per member in all (NULL = none)';
COMMENT ON COLUMN wallet.earning_rules.created_at IS 'when the rule was made';
COMMENT ON COLUMN wallet.earning_rules.updated_at IS 'when the rule last changed';
SELECT pg_catalog.pg_extension_config_dump('wallet.earning_rules', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.earning_rules', 'rule_id'), '');
ALTER TABLE wallet.earning_rules ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.earning_rules USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.earning_rules IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

-- One row per capped rule, member and local day (day NULL: the member's
-- total of the rule).  Written only under the member's account lock.
-- No foreign key to merchants or rules: every purchase would lock the same
-- merchant and rule rows (FOR KEY SHARE, a MultiXact once sessions overlap);
-- the rows are written only by record_purchase, from the rules it just read.
CREATE TABLE wallet.earning_counters (
    merchant_id bigint NOT NULL,
    member_id   bigint NOT NULL REFERENCES wallet.members,
    rule_id     bigint NOT NULL,
    day         date,
    points      bigint NOT NULL CHECK (points >= 0),
    CONSTRAINT earning_counters_key UNIQUE NULLS NOT DISTINCT (rule_id, member_id, day)
);
COMMENT ON TABLE wallet.earning_counters IS 'points earned per capped rule and member, per day and in all: what the per-member caps of wallet.earning_rules count';
COMMENT ON COLUMN wallet.earning_counters.merchant_id IS 'merchant of the rule (a wallet.merchants.merchant_id): the key to distribute by';
COMMENT ON COLUMN wallet.earning_counters.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.earning_counters.rule_id IS 'the rule (a wallet.earning_rules.rule_id)';
COMMENT ON COLUMN wallet.earning_counters.day IS 'the day in the member''s time zone; NULL = the member''s total';
COMMENT ON COLUMN wallet.earning_counters.points IS 'points the rule earned the member that day (or in all)';
SELECT pg_catalog.pg_extension_config_dump('wallet.earning_counters', '');
ALTER TABLE wallet.earning_counters ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.earning_counters USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.earning_counters IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

------------------------------------------------------------------------------
-- Results
------------------------------------------------------------------------------

CREATE TYPE wallet.purchase_result AS (
    purchase_id bigint,
    order_ref   text,
    member_id   bigint,
    program_id  bigint,
    account_id  bigint,
    amount      numeric,
    currency    text,
    occurred_at timestamptz,
    points      bigint,
    entry_id    bigint,
    rules       jsonb
);
COMMENT ON TYPE wallet.purchase_result IS 'result of wallet.record_purchase and wallet.preview_purchase';
COMMENT ON COLUMN wallet.purchase_result.purchase_id IS 'the purchase (NULL in a preview of a new order)';
COMMENT ON COLUMN wallet.purchase_result.order_ref IS 'the merchant''s order reference';
COMMENT ON COLUMN wallet.purchase_result.member_id IS 'the member (NULL in a preview for a member not yet known)';
COMMENT ON COLUMN wallet.purchase_result.program_id IS 'the program that earns from the purchase (NULL: none in that currency)';
COMMENT ON COLUMN wallet.purchase_result.account_id IS 'the member''s account in it (NULL in a preview when it has none yet)';
COMMENT ON COLUMN wallet.purchase_result.amount IS 'amount paid';
COMMENT ON COLUMN wallet.purchase_result.currency IS 'ISO 4217 code of the amount';
COMMENT ON COLUMN wallet.purchase_result.occurred_at IS 'when the purchase was made';
COMMENT ON COLUMN wallet.purchase_result.points IS 'points earned (a preview: would earn)';
COMMENT ON COLUMN wallet.purchase_result.entry_id IS 'the accrue entry that posted them (NULL: none, or a preview)';
COMMENT ON COLUMN wallet.purchase_result.rules IS 'the rules that fired, as [{rule_id, points, why}] (rule_id NULL: the tier multiplier)';

CREATE TYPE wallet.refund_result AS (
    refund_id   bigint,
    purchase_id bigint,
    order_ref   text,
    refund_ref  text,
    amount      numeric,
    points      bigint,
    entry_id    bigint
);
COMMENT ON TYPE wallet.refund_result IS 'result of wallet.record_refund';
COMMENT ON COLUMN wallet.refund_result.refund_id IS 'the refund';
COMMENT ON COLUMN wallet.refund_result.purchase_id IS 'the purchase refunded';
COMMENT ON COLUMN wallet.refund_result.order_ref IS 'its order reference';
COMMENT ON COLUMN wallet.refund_result.refund_ref IS 'the merchant''s refund reference';
COMMENT ON COLUMN wallet.refund_result.amount IS 'amount refunded';
COMMENT ON COLUMN wallet.refund_result.points IS 'points taken back';
COMMENT ON COLUMN wallet.refund_result.entry_id IS 'the refund entry that took them back (NULL when none)';

------------------------------------------------------------------------------
-- Program settings
------------------------------------------------------------------------------

CREATE FUNCTION wallet.set_program_earning(program_id bigint, currency text, rounding text DEFAULT 'floor',
        refund_debt boolean DEFAULT false, point_value numeric DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF program_id IS NULL OR rounding IS NULL OR refund_debt IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN program_id IS NULL THEN 'program_id' WHEN rounding IS NULL THEN 'rounding' ELSE 'refund_debt' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A program earns from purchases in a currency, with a rounding rule and a refund policy.';
    END IF;
    IF currency IS NOT NULL AND currency !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'invalid currency "%"', left(currency, 16)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A currency is an ISO 4217 code of three capital letters, such as CNY or EUR; NULL stops earning from purchases.';
    END IF;
    IF rounding NOT IN ('floor', 'nearest', 'ceiling') THEN
        RAISE EXCEPTION 'unknown rounding "%"', left(rounding, 32)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Fractional points are rounded by ''floor'', ''nearest'' (half up) or ''ceiling''.';
    END IF;
    IF point_value < 0 THEN
        RAISE EXCEPTION 'point value must not be negative'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A point is worth zero or more in the program''s currency (NULL = unknown).';
    END IF;
    UPDATE wallet.programs p
       SET currency = set_program_earning.currency, rounding = set_program_earning.rounding,
           refund_debt = set_program_earning.refund_debt, point_value = set_program_earning.point_value
     WHERE p.program_id = set_program_earning.program_id AND wallet.acts_for(p.merchant_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'another open program of the merchant earns in %', currency
        USING ERRCODE = 'unique_violation', DETAIL = 'A merchant has at most one open program earning from purchases in each currency.';
END
$$;
COMMENT ON FUNCTION wallet.set_program_earning(bigint, text, text, boolean, numeric) IS 'makes a program earn from purchases in currency (NULL: from none), with its rounding (floor, nearest, ceiling), refund policy (refund_debt: a refund may leave a debt) and point value';

------------------------------------------------------------------------------
-- Rule administration
------------------------------------------------------------------------------

-- Text arrays of a condition: non-blank strings.
CREATE FUNCTION wallet_internal.rule_texts(conditions jsonb, key text) RETURNS text[]
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NOT conditions ? key THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(conditions -> key) <> 'array' OR jsonb_array_length(conditions -> key) = 0
       OR EXISTS (SELECT FROM jsonb_array_elements(conditions -> key) x WHERE jsonb_typeof(x) <> 'string' OR btrim(x #>> '{}') = '') THEN
        RAISE EXCEPTION 'condition % must be a non-empty array of non-blank strings', key
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The rule condition "%s" lists the values a purchase attribute may have.', key);
    END IF;
    RETURN ARRAY(SELECT x FROM jsonb_array_elements_text(conditions -> key) x);
END
$$;
COMMENT ON FUNCTION wallet_internal.rule_texts(jsonb, text) IS 'internal: the text array of a rule condition (NULL when absent); 22023 unless a non-empty array of non-blank strings';

-- A non-negative number of a rule's conditions or caps (whole: integral).
CREATE FUNCTION wallet_internal.rule_number(o jsonb, key text, whole boolean) RETURNS numeric
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v numeric;
BEGIN
    IF NOT o ? key THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(o -> key) = 'number' THEN
        v := (o ->> key)::numeric;
    END IF;
    IF v IS NULL OR v < 0 OR (whole AND (v <> trunc(v) OR v < 1 OR v > 9223372036854775807)) THEN
        RAISE EXCEPTION '% must be a %', key, CASE WHEN whole THEN 'positive whole number' ELSE 'number of at least 0' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The rule''s "%s" is a figure.', key);
    END IF;
    RETURN v;
END
$$;
COMMENT ON FUNCTION wallet_internal.rule_number(jsonb, text, boolean) IS 'internal: a number of a rule''s conditions or caps (NULL when absent); 22023 unless a number >= 0 (whole: a positive integer)';

-- Conditions and caps of a rule from their jsonb form, into the row.
CREATE FUNCTION wallet_internal.rule_apply_conditions(r wallet.earning_rules, conditions jsonb, caps jsonb)
    RETURNS wallet.earning_rules
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    k text;
    d jsonb;
BEGIN
    IF conditions IS NOT NULL THEN
        IF jsonb_typeof(conditions) <> 'object' THEN
            RAISE EXCEPTION 'conditions must be a json object'
                USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Conditions are an object such as {"min_amount": 100, "channels": ["app"]}.';
        END IF;
        SELECT min(x) INTO k FROM jsonb_object_keys(conditions) x
         WHERE x NOT IN ('min_amount', 'stores', 'channels', 'payment_methods', 'categories', 'min_tier_rank',
                         'first_purchase', 'days_of_week', 'time_from', 'time_until');
        IF k IS NOT NULL THEN
            RAISE EXCEPTION 'unknown condition "%"', left(k, 64)
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'The conditions are min_amount, stores, channels, payment_methods, categories, min_tier_rank, first_purchase, days_of_week, time_from and time_until.';
        END IF;
        r.min_amount := wallet_internal.rule_number(conditions, 'min_amount', false);
        r.stores := wallet_internal.rule_texts(conditions, 'stores');
        r.channels := wallet_internal.rule_texts(conditions, 'channels');
        r.payment_methods := wallet_internal.rule_texts(conditions, 'payment_methods');
        r.categories := wallet_internal.rule_texts(conditions, 'categories');
        r.min_tier_rank := wallet_internal.rule_number(conditions, 'min_tier_rank', true);
        r.first_purchase := NULL;
        IF conditions ? 'first_purchase' THEN
            IF conditions -> 'first_purchase' <> 'true' THEN
                RAISE EXCEPTION 'first_purchase must be true'
                    USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Leave the condition out to earn on every purchase.';
            END IF;
            r.first_purchase := true;
        END IF;
        r.days_of_week := NULL;
        IF conditions ? 'days_of_week' THEN
            d := conditions -> 'days_of_week';
            IF jsonb_typeof(d) <> 'array' OR jsonb_array_length(d) = 0
               OR EXISTS (SELECT FROM jsonb_array_elements(d) x WHERE x NOT IN ('1', '2', '3', '4', '5', '6', '7')) THEN
                RAISE EXCEPTION 'days_of_week must be a non-empty array of days 1 to 7'
                    USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Days of the week are ISO numbers: 1 = Monday to 7 = Sunday.';
            END IF;
            r.days_of_week := ARRAY(SELECT DISTINCT x::int FROM jsonb_array_elements_text(d) x ORDER BY 1);
        END IF;
        r.time_from := NULL;
        r.time_until := NULL;
        IF conditions ? 'time_from' OR conditions ? 'time_until' THEN
            IF jsonb_typeof(conditions -> 'time_from') IS DISTINCT FROM 'string' OR jsonb_typeof(conditions -> 'time_until') IS DISTINCT FROM 'string'
               OR conditions ->> 'time_from' !~ '^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$'
               OR conditions ->> 'time_until' !~ '^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$'
               OR conditions ->> 'time_from' = conditions ->> 'time_until' THEN
                RAISE EXCEPTION 'time_from and time_until must be two different times of day'
                    USING ERRCODE = 'invalid_parameter_value',
                          DETAIL = 'A time window is given by both ends as "HH:MM" in the member''s time zone; time_until is exclusive and may be past midnight.';
            END IF;
            r.time_from := (conditions ->> 'time_from')::time;
            r.time_until := (conditions ->> 'time_until')::time;
        END IF;
    END IF;
    IF caps IS NOT NULL THEN
        IF jsonb_typeof(caps) <> 'object' THEN
            RAISE EXCEPTION 'caps must be a json object'
                USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Caps are an object such as {"per_purchase": 500, "per_member_day": 1000}.';
        END IF;
        SELECT min(x) INTO k FROM jsonb_object_keys(caps) x WHERE x NOT IN ('per_purchase', 'per_member_day', 'per_member');
        IF k IS NOT NULL THEN
            RAISE EXCEPTION 'unknown cap "%"', left(k, 64)
                USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The caps are per_purchase, per_member_day and per_member.';
        END IF;
        r.cap_per_purchase := wallet_internal.rule_number(caps, 'per_purchase', true);
        r.cap_per_member_day := wallet_internal.rule_number(caps, 'per_member_day', true);
        r.cap_per_member := wallet_internal.rule_number(caps, 'per_member', true);
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet_internal.rule_apply_conditions(wallet.earning_rules, jsonb, jsonb) IS 'internal: a rule row with its conditions and caps replaced by the given jsonb objects (NULL: kept); 22023 for an unknown key or a bad value';

-- What every rule row must satisfy beyond its conditions.
CREATE FUNCTION wallet_internal.rule_check(r wallet.earning_rules) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF r.name IS NULL OR r.effect IS NULL OR r.value IS NULL OR r.valid_from IS NULL OR r.priority IS NULL OR r.exclusive IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN r.name IS NULL THEN 'name' WHEN r.effect IS NULL THEN 'effect'
                                                   WHEN r.value IS NULL THEN 'value' WHEN r.valid_from IS NULL THEN 'valid_from'
                                                   WHEN r.priority IS NULL THEN 'priority' ELSE 'exclusive' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'An earning rule has a name, an effect with its value, a start, a priority and a stacking mode.';
    END IF;
    IF btrim(r.name) = '' OR length(r.name) > 200 THEN
        RAISE EXCEPTION 'rule name must not be %', CASE WHEN btrim(r.name) = '' THEN 'blank' ELSE 'longer than 200 characters' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A rule''s name starts the explanation of the points it earns.';
    END IF;
    IF r.effect NOT IN ('per_unit', 'multiplier', 'fixed') THEN
        RAISE EXCEPTION 'unknown effect "%"', left(r.effect, 32)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An effect is ''per_unit'' (points per currency unit), ''multiplier'' or ''fixed'' (bonus points).';
    END IF;
    IF r.value <= 0 OR (r.effect = 'multiplier' AND r.value <= 1) OR (r.effect = 'fixed' AND r.value <> trunc(r.value))
       OR r.value > 1000000000 THEN
        RAISE EXCEPTION 'invalid value for effect %', r.effect
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'per_unit takes points per unit above 0, multiplier a factor above 1, fixed a whole number of points above 0 (at most 10^9).';
    END IF;
    IF NOT isfinite(r.valid_from) OR r.valid_until <= r.valid_from THEN
        RAISE EXCEPTION 'invalid validity window'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A rule is valid from a finite instant until a later one (exclusive) or open-ended (NULL).';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.rule_check(wallet.earning_rules) IS 'internal: 22004/22023 for a rule row with a missing or invalid name, effect, value or validity window';

CREATE FUNCTION wallet_internal.unknown_rule(rule_id bigint) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF rule_id IS NULL THEN
        RAISE EXCEPTION 'rule_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'An earning rule is named by its id.';
    END IF;
    RAISE EXCEPTION 'unknown earning rule'
        USING ERRCODE = 'WL502', DETAIL = format('There is no earning rule %s.', rule_id);
END
$$;
COMMENT ON FUNCTION wallet_internal.unknown_rule(bigint) IS 'raises WL502 for an earning rule that does not exist (or of another merchant), 22004 for a NULL id';

CREATE FUNCTION wallet.create_earning_rule(program_id bigint, name text, effect text, value numeric,
        conditions jsonb DEFAULT '{}', caps jsonb DEFAULT '{}', valid_from timestamptz DEFAULT now(),
        valid_until timestamptz DEFAULT NULL, priority int DEFAULT 0, exclusive boolean DEFAULT false,
        campaign_id bigint DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.earning_rules;
BEGIN
    IF program_id IS NULL OR conditions IS NULL OR caps IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN program_id IS NULL THEN 'program_id' WHEN conditions IS NULL THEN 'conditions' ELSE 'caps' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A rule belongs to a program; conditions and caps are json objects ({} = none).';
    END IF;
    SELECT p.merchant_id INTO r.merchant_id FROM wallet.programs p
     WHERE p.program_id = create_earning_rule.program_id AND wallet.acts_for(p.merchant_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
    IF campaign_id IS NOT NULL AND NOT EXISTS (SELECT FROM wallet.campaigns k
                                                WHERE k.campaign_id = create_earning_rule.campaign_id AND k.merchant_id = r.merchant_id) THEN
        RAISE EXCEPTION 'unknown campaign'
            USING ERRCODE = 'WL101', DETAIL = format('The merchant of program %s has no campaign %s.', program_id, campaign_id);
    END IF;
    r.program_id := program_id;
    r.campaign_id := campaign_id;
    r.name := name;
    r.effect := effect;
    r.value := value;
    r.valid_from := valid_from;
    r.valid_until := valid_until;
    r.priority := priority;
    r.exclusive := exclusive;
    PERFORM wallet_internal.rule_check(r);
    r := wallet_internal.rule_apply_conditions(r, conditions, caps);
    INSERT INTO wallet.earning_rules (merchant_id, program_id, campaign_id, name, effect, value, priority, exclusive,
                                      valid_from, valid_until, min_amount, stores, channels, payment_methods, categories,
                                      min_tier_rank, first_purchase, days_of_week, time_from, time_until,
                                      cap_per_purchase, cap_per_member_day, cap_per_member)
    VALUES (r.merchant_id, r.program_id, r.campaign_id, r.name, r.effect, r.value, r.priority, r.exclusive,
            r.valid_from, r.valid_until, r.min_amount, r.stores, r.channels, r.payment_methods, r.categories,
            r.min_tier_rank, r.first_purchase, r.days_of_week, r.time_from, r.time_until,
            r.cap_per_purchase, r.cap_per_member_day, r.cap_per_member)
    RETURNING rule_id INTO r.rule_id;
    RETURN r.rule_id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'earning rule "%" already exists', name
        USING ERRCODE = 'unique_violation', DETAIL = 'Rule names are unique per program.';
END
$$;
COMMENT ON FUNCTION wallet.create_earning_rule(bigint, text, text, numeric, jsonb, jsonb, timestamptz, timestamptz, int, boolean, bigint) IS 'creates an earning rule of a program (effect per_unit, multiplier or fixed; conditions and caps as json objects, validated) and returns its id';

CREATE FUNCTION wallet.update_earning_rule(rule_id bigint, name text DEFAULT NULL, value numeric DEFAULT NULL,
        conditions jsonb DEFAULT NULL, caps jsonb DEFAULT NULL, valid_until timestamptz DEFAULT NULL,
        priority int DEFAULT NULL, exclusive boolean DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.earning_rules;
BEGIN
    SELECT * INTO r FROM wallet.earning_rules x
     WHERE x.rule_id = update_earning_rule.rule_id AND wallet.acts_for(x.merchant_id)
       FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM wallet_internal.unknown_rule(rule_id);
    END IF;
    r.name := coalesce(name, r.name);
    r.value := coalesce(value, r.value);
    r.valid_until := coalesce(valid_until, r.valid_until);
    r.priority := coalesce(priority, r.priority);
    r.exclusive := coalesce(exclusive, r.exclusive);
    PERFORM wallet_internal.rule_check(r);
    r := wallet_internal.rule_apply_conditions(r, conditions, caps);
    UPDATE wallet.earning_rules x
       SET name = r.name, value = r.value, valid_until = r.valid_until, priority = r.priority, exclusive = r.exclusive,
           min_amount = r.min_amount, stores = r.stores, channels = r.channels, payment_methods = r.payment_methods,
           categories = r.categories, min_tier_rank = r.min_tier_rank, first_purchase = r.first_purchase,
           days_of_week = r.days_of_week, time_from = r.time_from, time_until = r.time_until,
           cap_per_purchase = r.cap_per_purchase, cap_per_member_day = r.cap_per_member_day, cap_per_member = r.cap_per_member,
           updated_at = now()
     WHERE x.rule_id = r.rule_id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'earning rule "%" already exists', name
        USING ERRCODE = 'unique_violation', DETAIL = 'Rule names are unique per program.';
END
$$;
COMMENT ON FUNCTION wallet.update_earning_rule(bigint, text, numeric, jsonb, jsonb, timestamptz, int, boolean) IS 'changes an earning rule for the purchases recorded from now on (NULL arguments: kept; conditions and caps replace the whole set); points already posted never change';

CREATE FUNCTION wallet.end_earning_rule(rule_id bigint, at timestamptz DEFAULT now()) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.earning_rules;
BEGIN
    IF at IS NULL OR NOT isfinite(at) THEN
        RAISE EXCEPTION 'end of rule must be %', CASE WHEN at IS NULL THEN 'given' ELSE 'finite' END
            USING ERRCODE = CASE WHEN at IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'A rule ends at an instant: purchases made from then on no longer earn by it.';
    END IF;
    SELECT * INTO r FROM wallet.earning_rules x
     WHERE x.rule_id = end_earning_rule.rule_id AND wallet.acts_for(x.merchant_id)
       FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM wallet_internal.unknown_rule(rule_id);
    END IF;
    -- never later than it already ends; a rule ended before it starts ends when it starts
    UPDATE wallet.earning_rules x
       SET valid_until = greatest(least(coalesce(x.valid_until, 'infinity'), at), x.valid_from + interval '1 microsecond'),
           updated_at = now()
     WHERE x.rule_id = r.rule_id;
END
$$;
COMMENT ON FUNCTION wallet.end_earning_rule(bigint, timestamptz) IS 'ends an earning rule at an instant (default now; never later than it already ends): purchases made from then on no longer earn by it (idempotent)';

------------------------------------------------------------------------------
-- Evaluation
------------------------------------------------------------------------------

-- Checks of record_purchase and preview_purchase's arguments.
CREATE FUNCTION wallet_internal.purchase_check(merchant_id bigint, member_ref text, order_ref text, amount numeric,
        currency text, occurred_at timestamptz, attributes jsonb) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.member_check(merchant_id, member_ref);
    IF order_ref IS NULL OR amount IS NULL OR currency IS NULL OR occurred_at IS NULL OR attributes IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN order_ref IS NULL THEN 'order_ref' WHEN amount IS NULL THEN 'amount'
                                                   WHEN currency IS NULL THEN 'currency' WHEN occurred_at IS NULL THEN 'occurred_at'
                                                   ELSE 'attributes' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A purchase has an order reference, an amount in a currency, an instant and attributes ({} = none).';
    END IF;
    IF btrim(order_ref) = '' OR length(order_ref) > 200 THEN
        RAISE EXCEPTION 'order reference must not be %', CASE WHEN btrim(order_ref) = '' THEN 'blank' ELSE 'longer than 200 characters' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An order reference is the merchant''s own non-blank order id of at most 200 characters.';
    END IF;
    IF amount <= 0 OR amount > 1e15 THEN
        RAISE EXCEPTION 'invalid purchase amount'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A purchase amount is positive (and below 10^15).';
    END IF;
    IF currency !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'invalid currency "%"', left(currency, 16)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A currency is an ISO 4217 code of three capital letters, such as CNY or EUR.';
    END IF;
    IF NOT isfinite(occurred_at) THEN
        RAISE EXCEPTION 'occurred_at must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A purchase is made at a real instant.';
    END IF;
    IF jsonb_typeof(attributes) <> 'object'
       OR jsonb_typeof(attributes -> 'store') NOT IN ('string')
       OR jsonb_typeof(attributes -> 'channel') NOT IN ('string')
       OR jsonb_typeof(attributes -> 'payment_method') NOT IN ('string')
       OR jsonb_typeof(attributes -> 'categories') NOT IN ('array')
       OR jsonb_path_exists(attributes, '$.categories[*] ? (@.type() != "string")') THEN
        RAISE EXCEPTION 'invalid purchase attributes'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Attributes are a json object; store, channel and payment_method are strings, categories an array of strings.';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.purchase_check(bigint, text, text, numeric, text, timestamptz, jsonb) IS 'internal: 22004/22023/WL102 for the arguments of record_purchase and preview_purchase';

-- The points a purchase earns in a program, and why: the rules valid at
-- occurred_at whose conditions hold, in priority order (highest first, then
-- lowest id), an exclusive one alone.  per_unit rules make the base; the
-- tier multiplier and multiplier rules add to it (base times factor - 1);
-- fixed rules add their points.  Each rule's points are rounded per the
-- program, then capped.  counters: the increments of the capped rules'
-- counters, as [{rule_id, day, points}] (day null: the member's total).
-- Deterministic: the same purchase, rules and counters give the same result.
CREATE FUNCTION wallet_internal.purchase_points(merchant_id bigint, program_id bigint, rounding text, member_id bigint,
        account_id bigint, time_zone text, amount numeric, currency text, occurred_at timestamptz, attributes jsonb,
        OUT points bigint, OUT rules jsonb, OUT counters jsonb)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    -- the rules that hold, in priority order, as parallel arrays, with what
    -- their caps have counted for the member so far
    ids bigint[];
    names text[];
    effects text[];
    vals numeric[];
    exclusives boolean[];
    cap_purchase bigint[];
    cap_day bigint[];
    cap_member bigint[];
    used_day bigint[];
    used_member bigint[];
    n int := 0;
    pts bigint[] := '{}';
    whys text[] := '{}';
    lt timestamp := occurred_at AT TIME ZONE coalesce(time_zone, 'UTC');
    dow int := extract(isodow FROM lt);
    tod time := lt::time;
    lday date := lt::date;
    store text := attributes ->> 'store';
    channel text := attributes ->> 'channel';
    pay text := attributes ->> 'payment_method';
    tier_rank int;
    tier_name text;
    tier_mult numeric;
    base bigint := 0;
    raw numeric;
    p bigint;
    i int;
    why text;
BEGIN
    points := 0;
    rules := '[]';
    counters := '[]';
    IF program_id IS NULL THEN
        RETURN;
    END IF;
    -- One query: the member's tier, whether this is its first purchase in
    -- the program, and the rules whose conditions hold with their counters.
    SELECT k.rank, k.name, k.multiplier, r.ids, r.names, r.effects, r.vals, r.exclusives, r.cap_purchase, r.cap_day,
           r.cap_member, r.used_day, r.used_member
      INTO tier_rank, tier_name, tier_mult, ids, names, effects, vals, exclusives, cap_purchase, cap_day, cap_member,
           used_day, used_member
      FROM (SELECT coalesce(t.rank, 0) AS rank, t.name, coalesce(t.multiplier, 1) AS multiplier,
                   purchase_points.member_id IS NULL
                   OR NOT EXISTS (SELECT FROM wallet.purchases x
                                   WHERE x.merchant_id = purchase_points.merchant_id AND x.member_id = purchase_points.member_id
                                     AND x.program_id = purchase_points.program_id) AS first
              FROM (SELECT) o
              LEFT JOIN wallet.account_tiers a ON a.account_id = purchase_points.account_id
              LEFT JOIN wallet.tiers t ON t.tier_id = a.tier_id) k
     CROSS JOIN LATERAL (
            SELECT array_agg(x.rule_id ORDER BY x.priority DESC, x.rule_id) AS ids,
                   array_agg(x.name ORDER BY x.priority DESC, x.rule_id) AS names,
                   array_agg(x.effect ORDER BY x.priority DESC, x.rule_id) AS effects,
                   array_agg(x.value ORDER BY x.priority DESC, x.rule_id) AS vals,
                   array_agg(x.exclusive ORDER BY x.priority DESC, x.rule_id) AS exclusives,
                   array_agg(x.cap_per_purchase ORDER BY x.priority DESC, x.rule_id) AS cap_purchase,
                   array_agg(x.cap_per_member_day ORDER BY x.priority DESC, x.rule_id) AS cap_day,
                   array_agg(x.cap_per_member ORDER BY x.priority DESC, x.rule_id) AS cap_member,
                   array_agg(CASE WHEN x.cap_per_member_day IS NOT NULL THEN
                                 (SELECT c.points FROM wallet.earning_counters c
                                   WHERE c.rule_id = x.rule_id AND c.member_id = purchase_points.member_id AND c.day = lday) END
                             ORDER BY x.priority DESC, x.rule_id) AS used_day,
                   array_agg(CASE WHEN x.cap_per_member IS NOT NULL THEN
                                 (SELECT c.points FROM wallet.earning_counters c
                                   WHERE c.rule_id = x.rule_id AND c.member_id = purchase_points.member_id AND c.day IS NULL) END
                             ORDER BY x.priority DESC, x.rule_id) AS used_member
              FROM wallet.earning_rules x
             WHERE x.program_id = purchase_points.program_id AND x.valid_from <= purchase_points.occurred_at
               AND (x.valid_until IS NULL OR x.valid_until > purchase_points.occurred_at)
               AND (x.min_amount > purchase_points.amount
                    OR (x.stores IS NOT NULL AND (store IS NULL OR NOT store = ANY (x.stores)))
                    OR (x.channels IS NOT NULL AND (channel IS NULL OR NOT channel = ANY (x.channels)))
                    OR (x.payment_methods IS NOT NULL AND (pay IS NULL OR NOT pay = ANY (x.payment_methods)))
                    OR (x.categories IS NOT NULL AND NOT coalesce(purchase_points.attributes -> 'categories' ?| x.categories, false))
                    OR x.min_tier_rank > k.rank
                    OR (x.first_purchase AND NOT k.first)
                    OR (x.days_of_week IS NOT NULL AND NOT dow = ANY (x.days_of_week))
                    OR (x.time_from < x.time_until AND NOT (tod >= x.time_from AND tod < x.time_until))
                    OR (x.time_from > x.time_until AND NOT (tod >= x.time_from OR tod < x.time_until))) IS NOT TRUE) r;
    -- stacking: an exclusive rule fires alone, and only when no rule of higher priority fired
    FOR i IN 1..coalesce(cardinality(ids), 0) LOOP
        IF exclusives[i] THEN
            n := CASE WHEN i = 1 THEN 1 ELSE i - 1 END;
            EXIT;
        END IF;
        n := i;
    END LOOP;
    IF n = 0 AND tier_mult = 1 THEN
        RETURN;
    END IF;
    -- per_unit rules first: the others build on their base
    FOR pass IN 1..2 LOOP
        FOR i IN 1..n LOOP
            CONTINUE WHEN (pass = 1) <> (effects[i] = 'per_unit');
            raw := CASE effects[i] WHEN 'per_unit' THEN amount * vals[i]
                                   WHEN 'multiplier' THEN base * (vals[i] - 1)
                                   ELSE vals[i] END;
            p := CASE rounding WHEN 'ceiling' THEN ceil(raw) WHEN 'nearest' THEN round(raw) ELSE floor(raw) END;
            why := CASE effects[i] WHEN 'per_unit' THEN format('%s: %s points per %s on %s %s', names[i], vals[i], currency, amount, currency)
                                   WHEN 'multiplier' THEN format('%s: x%s on %s base points', names[i], vals[i], base)
                                   ELSE format('%s: %s bonus points', names[i], vals[i]) END;
            IF p > cap_purchase[i] THEN
                p := cap_purchase[i];
                why := why || format(', capped at %s per purchase', cap_purchase[i]);
            END IF;
            IF p > 0 AND p > cap_day[i] - coalesce(used_day[i], 0) THEN
                p := greatest(cap_day[i] - coalesce(used_day[i], 0), 0);
                why := why || format(', capped at %s per day (%s)', cap_day[i], lday);
            END IF;
            IF p > 0 AND p > cap_member[i] - coalesce(used_member[i], 0) THEN
                p := greatest(cap_member[i] - coalesce(used_member[i], 0), 0);
                why := why || format(', capped at %s per member', cap_member[i]);
            END IF;
            IF pass = 1 THEN
                base := base + p;
            END IF;
            pts[i] := p;
            whys[i] := why;
            IF p > 0 AND cap_day[i] IS NOT NULL THEN
                counters := counters || jsonb_build_object('rule_id', ids[i], 'day', lday, 'points', p);
            END IF;
            IF p > 0 AND cap_member[i] IS NOT NULL THEN
                counters := counters || jsonb_build_object('rule_id', ids[i], 'day', NULL, 'points', p);
            END IF;
        END LOOP;
    END LOOP;
    FOR i IN 1..n LOOP
        rules := rules || jsonb_build_object('rule_id', ids[i], 'points', pts[i], 'why', whys[i]);
        points := points + pts[i];
    END LOOP;
    -- the tier's multiplier, on the base like a multiplier rule
    IF tier_mult <> 1 AND base > 0 THEN
        raw := base * (tier_mult - 1);
        p := CASE rounding WHEN 'ceiling' THEN ceil(raw) WHEN 'nearest' THEN round(raw) ELSE floor(raw) END;
        rules := rules || jsonb_build_object('rule_id', NULL, 'points', p,
                                             'why', format('tier %s: x%s on %s base points', tier_name, tier_mult, base));
        points := points + p;
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.purchase_points(bigint, bigint, text, bigint, bigint, text, numeric, text, timestamptz, jsonb) IS 'internal: the points a purchase earns by the program''s rules, the member''s tier and whether it is its first purchase in the program (read in one query; called under the account''s lock), the rules that fired ({rule_id, points, why}) and the cap counter increments; reads, writes nothing';

-- The result of a recorded purchase; a retry (same order_ref) must name the
-- same member, amount and currency (WL002 otherwise).
CREATE FUNCTION wallet_internal.purchase_retry(p wallet.purchases, member_ref text, amount numeric, currency text)
    RETURNS wallet.purchase_result
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    stored_ref text;
    res wallet.purchase_result;
BEGIN
    SELECT m.member_ref INTO stored_ref FROM wallet.members m WHERE m.member_id = p.member_id;
    PERFORM wallet_internal.idem_check(p.order_ref, format('purchase %s', p.purchase_id),
                                       jsonb_build_object('member_ref', stored_ref, 'amount', p.amount, 'currency', p.currency),
                                       jsonb_build_object('member_ref', member_ref, 'amount', amount, 'currency', currency));
    res := (p.purchase_id, p.order_ref, p.member_id, p.program_id, p.account_id, p.amount, p.currency, p.occurred_at,
            p.points, p.entry_id, p.rules);
    RETURN res;
END
$$;
COMMENT ON FUNCTION wallet_internal.purchase_retry(wallet.purchases, text, numeric, text) IS 'internal: the result of an order already recorded, after checking the retry names the same member, amount and currency (WL002)';

-- The member (NULL: not known yet) and its time zone, the program earning
-- in the currency (NULL: none) with its rounding, and the member's account in
-- it (NULL: none yet), in one query.
CREATE FUNCTION wallet_internal.purchase_context(merchant_id bigint, member_ref text, currency text,
        OUT member_id bigint, OUT time_zone text, OUT program_id bigint, OUT rounding text, OUT account_id bigint)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    SELECT m.member_id, m.time_zone, x.program_id, x.rounding, y.account_id
      INTO purchase_context.member_id, purchase_context.time_zone, purchase_context.program_id, purchase_context.rounding,
           purchase_context.account_id
      FROM (SELECT) o
      LEFT JOIN wallet.members m ON m.merchant_id = purchase_context.merchant_id AND m.member_ref = purchase_context.member_ref
      LEFT JOIN wallet.programs x ON x.merchant_id = purchase_context.merchant_id AND x.currency = purchase_context.currency
                                 AND x.closed_at IS NULL
      LEFT JOIN wallet.accounts y ON y.program_id = x.program_id AND y.member_ref = purchase_context.member_ref;
END
$$;
COMMENT ON FUNCTION wallet_internal.purchase_context(bigint, text, text) IS 'internal: the member and its time zone, the merchant''s open program earning in the currency with its rounding, and the member''s account in it (each NULL when there is none)';

CREATE FUNCTION wallet.record_purchase(merchant_id bigint, member_ref text, order_ref text, amount numeric, currency text,
        occurred_at timestamptz DEFAULT now(), attributes jsonb DEFAULT '{}') RETURNS wallet.purchase_result
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    p wallet.purchases;
    member bigint;
    tz text;
    prog bigint;
    rnd text;
    acct bigint;
    a wallet_internal.locked_account;
    due timestamptz;
    e wallet.entries;
    ev record;
BEGIN
    PERFORM wallet_internal.purchase_check(merchant_id, member_ref, order_ref, amount, currency, occurred_at, attributes);
    -- A retry is found by the insert of the purchase below (ON CONFLICT), not
    -- by a lookup first: retries are rare, a lookup would cost every call.
    -- The usual case in one statement: a known member with an account in the
    -- merchant's open program earning in the currency, locked (what
    -- wallet_internal.lock_account does, but for the idempotency lookup: the
    -- order's unique key stands for it).  The member's postings, counters and
    -- first purchase are decided under this lock.
    SELECT m.member_id, m.time_zone, x.program_id, x.rounding, y.account_id, y.ledger, y.next_event, x.expiry, x.granularity
      INTO member, tz, prog, rnd, acct, a.ledger, due, a.expiry, a.granularity
      FROM wallet.members m
      JOIN wallet.programs x ON x.merchant_id = m.merchant_id AND x.currency = record_purchase.currency AND x.closed_at IS NULL
      JOIN wallet.accounts y ON y.program_id = x.program_id AND y.member_ref = m.member_ref
     WHERE m.merchant_id = record_purchase.merchant_id AND m.member_ref = record_purchase.member_ref
       FOR NO KEY UPDATE OF y;
    IF FOUND THEN
        a.program_id := prog;
        a.closed := false;
        a.at := clock_timestamp();
        IF due <= a.at THEN
            PERFORM wallet_internal.settle_account(acct, a.at, a.at);
            SELECT y.ledger INTO a.ledger FROM wallet.accounts y WHERE y.account_id = acct;
        END IF;
    ELSE
        -- a new member, a member without an account yet, or no program earning in the currency
        SELECT * INTO member, tz, prog, rnd, acct FROM wallet_internal.purchase_context(merchant_id, member_ref, currency);
        IF member IS NULL THEN
            member := wallet_internal.member_ensure(merchant_id, member_ref);
        END IF;
        IF prog IS NOT NULL THEN
            IF acct IS NULL THEN
                acct := wallet.open_account(prog, member_ref);
            END IF;
            a := wallet_internal.lock_account(acct);
        END IF;
    END IF;
    -- the member's tier and first purchase are read after the lock: a posting
    -- that changed the tier, a purchase of the member, have committed by now
    ev := wallet_internal.purchase_points(merchant_id, prog, rnd, member, acct, tz, amount, currency, occurred_at, attributes);
    -- the purchase first (tiers read spend in the window), with the entry's id to come
    INSERT INTO wallet.purchases (merchant_id, member_id, order_ref, amount, currency, occurred_at, attributes,
                                  program_id, account_id, points, entry_id, rules)
    VALUES (merchant_id, member, order_ref, amount, currency, occurred_at, attributes, prog, acct, ev.points,
            CASE WHEN ev.points > 0 THEN nextval('wallet.entries_entry_id_seq') END, ev.rules)
    ON CONFLICT ON CONSTRAINT purchases_merchant_id_order_ref_key DO NOTHING
    RETURNING * INTO p;
    IF p.purchase_id IS NULL THEN
        -- a retry, or a concurrent call recorded the order first (committed by now)
        SELECT * INTO p FROM wallet.purchases x WHERE x.merchant_id = record_purchase.merchant_id AND x.order_ref = record_purchase.order_ref;
        RETURN wallet_internal.purchase_retry(p, member_ref, amount, currency);
    END IF;
    IF ev.counters <> '[]' THEN
        INSERT INTO wallet.earning_counters AS c (merchant_id, member_id, rule_id, day, points)
        SELECT record_purchase.merchant_id, member, x.rule_id, x.day, x.points
          FROM jsonb_to_recordset(ev.counters) AS x(rule_id bigint, day date, points bigint)
        ON CONFLICT ON CONSTRAINT earning_counters_key DO UPDATE SET points = c.points + excluded.points;
    END IF;
    IF p.points > 0 THEN
        -- what wallet_internal.post_once does for a posting without a prior entry
        IF a.closed THEN
            PERFORM wallet_internal.program_closed(prog);
        END IF;
        e.entry_id := p.entry_id;
        e.account_id := acct;
        e.kind := 'accrue';
        e.idempotency_key := 'purchase:' || order_ref;
        e.reason := 'purchase';
        e.reference := order_ref;
        e.created_at := a.at;
        e.points := p.points;
        e.expires_at := wallet.policy_expiry(a.at, a.expiry, a.granularity);
        PERFORM wallet_internal.post_entry(a.ledger, e);
    END IF;
    RETURN (p.purchase_id, p.order_ref, p.member_id, p.program_id, p.account_id, p.amount, p.currency, p.occurred_at,
            p.points, p.entry_id, p.rules)::wallet.purchase_result;
END
$$;
COMMENT ON FUNCTION wallet.record_purchase(bigint, text, text, numeric, text, timestamptz, jsonb) IS 'records a purchase at checkout (creating the member and its account as needed), applies the earning rules of the merchant''s program in that currency, posts the points (accrue entry, reference order_ref) and returns the points and the rules that fired; idempotent on (merchant, order_ref): another member, amount or currency is WL002';

CREATE FUNCTION wallet.preview_purchase(merchant_id bigint, member_ref text, order_ref text, amount numeric, currency text,
        occurred_at timestamptz DEFAULT now(), attributes jsonb DEFAULT '{}') RETURNS wallet.purchase_result
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    p wallet.purchases;
    member bigint;
    tz text;
    prog bigint;
    rnd text;
    acct bigint;
    ev record;
BEGIN
    PERFORM wallet_internal.purchase_check(merchant_id, member_ref, order_ref, amount, currency, occurred_at, attributes);
    SELECT * INTO p FROM wallet.purchases x WHERE x.merchant_id = preview_purchase.merchant_id AND x.order_ref = preview_purchase.order_ref;
    IF FOUND THEN
        RETURN wallet_internal.purchase_retry(p, member_ref, amount, currency);   -- what record_purchase would return
    END IF;
    SELECT * INTO member, tz, prog, rnd, acct FROM wallet_internal.purchase_context(merchant_id, member_ref, currency);
    ev := wallet_internal.purchase_points(merchant_id, prog, rnd, member, acct, tz, amount, currency, occurred_at, attributes);
    RETURN (NULL, order_ref, member, prog, acct, amount, currency, occurred_at, ev.points, NULL, ev.rules)::wallet.purchase_result;
END
$$;
COMMENT ON FUNCTION wallet.preview_purchase(bigint, text, text, numeric, text, timestamptz, jsonb) IS 'what wallet.record_purchase would earn for the purchase ("you will earn 240 points"), posting and recording nothing; an order already recorded returns its result';

------------------------------------------------------------------------------
-- Refunds
------------------------------------------------------------------------------

CREATE FUNCTION wallet_internal.refund_retry(f wallet.refunds, order_ref text, amount numeric) RETURNS wallet.refund_result
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    stored_order text;
    res wallet.refund_result;
BEGIN
    SELECT p.order_ref INTO stored_order FROM wallet.purchases p WHERE p.purchase_id = f.purchase_id;
    PERFORM wallet_internal.idem_check(f.refund_ref, format('refund %s', f.refund_id),
                                       jsonb_build_object('order_ref', stored_order, 'amount', f.amount),
                                       jsonb_build_object('order_ref', order_ref, 'amount', amount));
    res := (f.refund_id, f.purchase_id, stored_order, f.refund_ref, f.amount, f.points, f.entry_id);
    RETURN res;
END
$$;
COMMENT ON FUNCTION wallet_internal.refund_retry(wallet.refunds, text, numeric) IS 'internal: the result of a refund already recorded, after checking the retry names the same order and amount (WL002)';

CREATE FUNCTION wallet.record_refund(merchant_id bigint, order_ref text, amount numeric, refund_ref text) RETURNS wallet.refund_result
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    p wallet.purchases;
    f wallet.refunds;
    a wallet_internal.locked_account;
    e wallet.entries;
    rnd text;
    debt boolean;
    target numeric;
    due bigint := 0;
    taken bigint := 0;
BEGIN
    PERFORM wallet_internal.check_merchant(merchant_id);
    IF order_ref IS NULL OR amount IS NULL OR refund_ref IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN order_ref IS NULL THEN 'order_ref' WHEN amount IS NULL THEN 'amount' ELSE 'refund_ref' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A refund names the order, the amount refunded and the merchant''s own refund reference.';
    END IF;
    IF btrim(order_ref) = '' OR btrim(refund_ref) = '' OR length(refund_ref) > 200 THEN
        RAISE EXCEPTION '% must not be %', CASE WHEN btrim(order_ref) = '' THEN 'order reference' ELSE 'refund reference' END,
                         CASE WHEN btrim(order_ref) = '' OR btrim(refund_ref) = '' THEN 'blank' ELSE 'longer than 200 characters' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Order and refund references are non-blank texts of at most 200 characters.';
    END IF;
    IF amount <= 0 THEN
        RAISE EXCEPTION 'invalid refund amount'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A refund amount is positive.';
    END IF;
    SELECT * INTO f FROM wallet.refunds x WHERE x.merchant_id = record_refund.merchant_id AND x.refund_ref = record_refund.refund_ref;
    IF FOUND THEN
        RETURN wallet_internal.refund_retry(f, order_ref, amount);
    END IF;
    SELECT * INTO p FROM wallet.purchases x WHERE x.merchant_id = record_refund.merchant_id AND x.order_ref = record_refund.order_ref;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown purchase'
            USING ERRCODE = 'WL500', DETAIL = format('Merchant %s recorded no purchase with order reference "%s".', merchant_id, left(order_ref, 200));
    END IF;
    -- the account first (as record_purchase), then the purchase: refunds of an order take turns
    IF p.account_id IS NOT NULL THEN
        a := wallet_internal.lock_account(p.account_id);
    END IF;
    SELECT * INTO p FROM wallet.purchases x WHERE x.purchase_id = p.purchase_id FOR UPDATE;
    SELECT * INTO f FROM wallet.refunds x WHERE x.merchant_id = record_refund.merchant_id AND x.refund_ref = record_refund.refund_ref;
    IF FOUND THEN
        RETURN wallet_internal.refund_retry(f, order_ref, amount);   -- a concurrent retry came first
    END IF;
    IF amount > p.amount - p.refunded_amount THEN
        RAISE EXCEPTION 'refund exceeds purchase'
            USING ERRCODE = 'WL501',
                  DETAIL = format('Order "%s" was %s %s, of which %s is refunded; %s more cannot be.', left(order_ref, 200),
                                  p.amount, p.currency, p.refunded_amount, amount);
    END IF;
    IF p.entry_id IS NOT NULL
       AND NOT EXISTS (SELECT FROM wallet.entries x WHERE x.reverses = p.entry_id AND x.kind = 'reverse') THEN
        SELECT x.rounding, x.refund_debt INTO rnd, debt FROM wallet.programs x WHERE x.program_id = p.program_id;
        -- in proportion of everything refunded so far, so that a full refund takes back exactly what was earned
        target := p.points * (p.refunded_amount + amount) / p.amount;
        due := CASE rnd WHEN 'ceiling' THEN ceil(target) WHEN 'nearest' THEN round(target) ELSE floor(target) END - p.refunded_points;
        due := least(greatest(due, 0), p.points - p.refunded_points);
    END IF;
    f.entry_id := NULL;
    IF due > 0 THEN
        e.account_id := p.account_id;
        e.kind := 'refund';
        e.idempotency_key := 'refund:' || refund_ref;
        e.reason := 'refund';
        e.reference := p.order_ref;
        e.reverses := p.entry_id;
        e.created_at := a.at;
        e.points := due;
        e.policy := CASE WHEN debt THEN 'unlimited' ELSE 'within_balance' END;
        -- refunds must work after a program closed
        e := wallet_internal.post_once(a, e, check_closed => false);
        taken := -e.amount;
        f.entry_id := e.entry_id;
    END IF;
    INSERT INTO wallet.refunds (merchant_id, member_id, purchase_id, refund_ref, amount, points, entry_id)
    VALUES (merchant_id, p.member_id, p.purchase_id, refund_ref, amount, taken, f.entry_id)
    RETURNING * INTO f;
    UPDATE wallet.purchases x SET refunded_amount = x.refunded_amount + record_refund.amount, refunded_points = x.refunded_points + taken
     WHERE x.purchase_id = p.purchase_id;
    RETURN (f.refund_id, f.purchase_id, p.order_ref, f.refund_ref, f.amount, f.points, f.entry_id)::wallet.refund_result;
EXCEPTION WHEN unique_violation THEN
    -- the same refund_ref for another order, recorded concurrently
    SELECT * INTO f FROM wallet.refunds x WHERE x.merchant_id = record_refund.merchant_id AND x.refund_ref = record_refund.refund_ref;
    IF NOT FOUND THEN
        RAISE;
    END IF;
    RETURN wallet_internal.refund_retry(f, order_ref, amount);
END
$$;
COMMENT ON FUNCTION wallet.record_refund(bigint, text, numeric, text) IS 'records a full or partial refund of an order and takes back the points it earned in proportion (within the balance, or into debt when the program has refund_debt), never more in total than the order earned; idempotent on (merchant, refund_ref)';

-- == 10f. audience, analytics, segments (issue 11)
-- Exactly what sql/ext/analytics.sql creates (every object is new), the
-- new WL640 in wallet.error_codes, and forget_member clearing feedback
-- comments (its full definition, as sql/ext/members.sql has it).

CREATE OR REPLACE VIEW wallet.error_codes (sqlstate, name, description) AS VALUES
    ('WL001', 'root_key_not_loaded', 'a function that needs the root key runs on a server started without one (hint: the settings to configure)'),
    ('WL002', 'idempotency_key_reused', 'an idempotency key is sent again with a different fingerprint (see Idempotency): a posting with other points, reason, reference, expiry, hold or operation on the same account; a redemption or reservation with another code, member or ttl, or a redemption''s key for a reservation'),
    ('WL101', 'unknown_campaign', 'generate_codes, rotate_code_key, retire_code_key on a campaign that does not exist'),
    ('WL102', 'unknown_merchant', 'create_campaign, create_program, set_code_guard or clear_code_failures for a merchant that does not exist'),
    ('WL103', 'unknown_key_version', 'retire_code_key of a version the campaign does not have'),
    ('WL104', 'retire_current_key', 'retire_code_key of the version that signs new codes (rotate first)'),
    ('WL105', 'key_versions_exhausted', 'rotate_code_key past version 1023'),
    ('WL106', 'serials_exhausted', 'generate_codes past serial 2^38 − 1 (the refused call uses up no serial)'),
    ('WL107', 'campaign_field_fixed', 'an UPDATE changing a campaign''s prefix or mac_bits, or lowering its current_key_version'),
    ('WL108', 'current_key_retired', 'generate_codes when the campaign''s current key version was retired by hand'),
    ('WL109', 'serial_sequence_missing', 'generate_codes, campaign_next_serial when the campaign''s sequence wallet.campaign_<id>_serials was dropped by hand (it is not recreated: that would repeat serials)'),
    ('WL110', 'campaign_ids_exhausted', 'create_campaign once every campaign id up to 2^32 − 1 (the largest a code carries) has been handed out'),
    ('WL120', 'installation_id_fixed', 'UPDATE, DELETE or TRUNCATE of wallet.installation, or a new installation id once key versions are bound to the current one'),
    ('WL121', 'key_binding_fixed', 'an unbound (legacy) key version inserted by anyone but the owner of wallet.code_keys, or a key version''s installation_id changed'),
    ('WL122', 'campaign_not_deletable', 'DELETE or TRUNCATE of wallet.campaigns (end a campaign instead)'),
    ('WL123', 'campaign_id_reused', 'an INSERT into wallet.campaigns with an explicit campaign_id the identity has already handed out'),
    ('WL150', 'unknown_redemption', 'undo_redemption names no redemption'),
    ('WL151', 'redemption_already_undone', 'undo_redemption on a redemption that is already undone'),
    ('WL152', 'unknown_reservation', 'release_reservation names no reservation'),
    ('WL153', 'reservation_converted', 'release_reservation on a reservation that was already redeemed (undo the redemption instead)'),
    ('WL201', 'unknown_account', 'no points account with that id'),
    ('WL202', 'program_closed', 'a posting or a new account in a closed program'),
    ('WL203', 'insufficient_points', 'a redemption, hold or negative adjustment exceeds the spendable balance; nothing is posted'),
    ('WL204', 'invalid_amount', 'points missing, zero or negative where a positive number is required (zero for adjust)'),
    ('WL205', 'amount_out_of_range', 'a balance, lot or lifetime total would exceed bigint'),
    ('WL206', 'unknown_hold', 'no hold with that id'),
    ('WL207', 'hold_not_open', 'the hold was already captured or released (and this is not the identical repeated call)'),
    ('WL208', 'hold_expired', 'capture after the hold''s time to live ran out'),
    ('WL209', 'capture_exceeds_hold', 'capture of more points than the hold holds'),
    ('WL210', 'entry_already_reversed', 'the entry was already reversed'),
    ('WL211', 'entry_not_reversible', 'only accrue, redeem and capture entries can be reversed'),
    ('WL212', 'unknown_entry', 'no journal entry with that id'),
    ('WL213', 'journal_append_only', 'UPDATE, DELETE or TRUNCATE on wallet.entries'),
    ('WL214', 'unknown_program', 'no points program with that id'),
    ('WL401', 'audit_append_only', 'UPDATE, DELETE or TRUNCATE on wallet.audit_log'),
    ('WL640', 'campaign_holdout_fixed', 'set_campaign_audience changing the holdout percentage of a campaign that has started, once a holdout was set');

CREATE OR REPLACE FUNCTION wallet.forget_member(merchant_id bigint, member_ref text, reason text) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    _merchant bigint := merchant_id;
    _ref text := member_ref;
    pseudonym text;
    _member bigint;
    n jsonb := '{}';
    c bigint;
    t text;
    also text;
BEGIN
    PERFORM wallet_internal.member_check(_merchant, _ref);
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'reason must not be %', CASE WHEN reason IS NULL THEN 'null' ELSE 'blank' END
            USING ERRCODE = CASE WHEN reason IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'An erasure is recorded with the reason it was made for.';
    END IF;
    pseudonym := 'forgotten:' || encode(sha256(convert_to(gen_random_uuid()::text || _ref, 'UTF8')), 'hex');

    UPDATE wallet.members m SET member_ref = pseudonym, time_zone = NULL, locale = NULL, status = 'forgotten', updated_at = now()
     WHERE m.merchant_id = _merchant AND m.member_ref = _ref
    RETURNING m.member_id INTO _member;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('members', c);
    UPDATE wallet.accounts a SET member_ref = pseudonym
      FROM wallet.programs p
     WHERE p.program_id = a.program_id AND p.merchant_id = _merchant AND a.member_ref = _ref;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('accounts', c);
    -- the tables of a campaign's codes: the member_ref, and what else they hold of the member
    FOR t, also IN VALUES ('code_bindings', ''), ('code_reservations', ''),
                          ('code_redemptions', ', context = ''{}'''), ('member_use_counts', '') LOOP
        EXECUTE format('UPDATE wallet.%I x SET member_ref = $1%s FROM wallet.campaigns k
                         WHERE k.campaign_id = x.campaign_id AND k.merchant_id = $2 AND x.member_ref = $3', t, also)
          USING pseudonym, _merchant, _ref;
        GET DIAGNOSTICS c = ROW_COUNT;
        n := n || jsonb_build_object(t, c);
    END LOOP;
    -- failed attempts are forensics, not totals: deleted, with those that
    -- named no merchant (they cannot be told apart by merchant)
    DELETE FROM wallet.code_failed_attempts f
     WHERE f.member_ref = _ref AND (f.merchant_id = _merchant OR f.merchant_id IS NULL);
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('code_failed_attempts', c);
    PERFORM wallet_internal.code_guard_forget(_merchant, _ref, NULL);
    -- campaign feedback: the member's own words go, the score and category stay
    UPDATE wallet.campaign_feedback f SET comment = NULL
     WHERE f.merchant_id = _merchant AND f.member_id = _member AND f.comment IS NOT NULL;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('campaign_feedback', c);

    IF NOT EXISTS (SELECT FROM jsonb_each(n) e WHERE e.value <> '0') THEN
        RETURN false;   -- nothing names the member (e.g. erased before): nothing to record
    END IF;
    PERFORM wallet_internal.audit_record(_merchant, 'forget_member',
                                jsonb_build_object('table', 'members', 'key', jsonb_build_object('member_id', _member)),
                                NULL, jsonb_build_object('reason', reason, 'pseudonym', pseudonym, 'rows', n));
    RETURN true;
END
$$;
COMMENT ON FUNCTION wallet.forget_member(bigint, text, text) IS 'erases a member''s personal data at a merchant: pseudonymises its member_ref in every table, clears its time zone, locale, request contexts and feedback comments, deletes its failed attempts; ledgers and totals are unchanged; recorded in wallet.audit_log; returns false (and records nothing) when nothing names the member';

-- ======================================================================
-- Campaign audience and holdout, RFM segments, feedback and the measured
-- effect of a campaign (issue 11).  README "Campaigns".
--
-- A campaign's audience is everyone, the members of a tier or higher, RFM
-- segments (snapshotted when set) or a list; inside it a holdout (control
-- group) of a set percentage is chosen per (campaign, member) by a keyed
-- hash, so the same member always falls in the same group.  The report
-- compares target and control from wallet.purchases (net of refunds).
-- ======================================================================

------------------------------------------------------------------------------
-- Audience and holdout: columns of the campaign (no parallel concept)
------------------------------------------------------------------------------

ALTER TABLE wallet.campaigns ADD COLUMN audience text NOT NULL DEFAULT 'everyone'
    CHECK (audience IN ('everyone', 'tiers', 'segment', 'list'));
ALTER TABLE wallet.campaigns ADD COLUMN audience_program_id bigint REFERENCES wallet.programs;
ALTER TABLE wallet.campaigns ADD COLUMN audience_min_rank int CHECK (audience_min_rank > 0);
ALTER TABLE wallet.campaigns ADD COLUMN audience_segments text[];
ALTER TABLE wallet.campaigns ADD COLUMN holdout_percent numeric NOT NULL DEFAULT 0
    CHECK (holdout_percent >= 0 AND holdout_percent < 100);
ALTER TABLE wallet.campaigns ADD COLUMN holdout_key bytea NOT NULL DEFAULT pg_catalog.uuid_send(pg_catalog.gen_random_uuid())
    CHECK (length(holdout_key) >= 16);
ALTER TABLE wallet.campaigns ADD COLUMN redemption_value numeric CHECK (redemption_value >= 0);
ALTER TABLE wallet.campaigns ADD COLUMN audience_set_at timestamptz;
ALTER TABLE wallet.campaigns ADD CONSTRAINT campaigns_audience_tiers_check
    CHECK ((audience = 'tiers') = (audience_program_id IS NOT NULL AND audience_min_rank IS NOT NULL)
           AND (audience = 'segment') = (audience_segments IS NOT NULL));
COMMENT ON COLUMN wallet.campaigns.audience IS 'who the campaign is for: everyone (every member of the merchant), tiers (rank audience_min_rank or higher in audience_program_id), segment (the members of audience_segments when set, see wallet.campaign_audience_members) or list (wallet.campaign_audience_members)';
COMMENT ON COLUMN wallet.campaigns.audience_program_id IS 'audience tiers: the program whose tiers count';
COMMENT ON COLUMN wallet.campaigns.audience_min_rank IS 'audience tiers: the lowest tier rank in the audience';
COMMENT ON COLUMN wallet.campaigns.audience_segments IS 'audience segment: the RFM segment names (wallet.rfm_segments) the audience was taken from';
COMMENT ON COLUMN wallet.campaigns.holdout_percent IS 'share of the audience, in percent (0 to under 100), held out as the control group that never gets the campaign';
COMMENT ON COLUMN wallet.campaigns.holdout_key IS 'random key of the hash that puts each member in the target or the control group (wallet.campaign_group): fixed, so a member''s group never changes, and secret, so no member can predict it';
COMMENT ON COLUMN wallet.campaigns.audience_set_at IS 'when wallet.set_campaign_audience last set the audience and holdout (NULL = never: everyone, no holdout); once set, the holdout is fixed from the start on';
COMMENT ON COLUMN wallet.campaigns.redemption_value IS 'money each redemption of the campaign''s codes costs the merchant, for the campaign''s cost and ROI (e.g. a voucher''s face value); NULL = none counted';

-- The members of a list audience, or of the segments of a segment audience
-- as they were when it was set: membership must not change under the
-- campaign's feet as quintiles shift, or the groups would not compare.
CREATE TABLE wallet.campaign_audience_members (
    campaign_id bigint NOT NULL REFERENCES wallet.campaigns,
    member_id   bigint NOT NULL REFERENCES wallet.members,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, member_id)
);
COMMENT ON TABLE wallet.campaign_audience_members IS 'members of a campaign''s list or segment audience (wallet.set_campaign_audience replaces them)';
COMMENT ON COLUMN wallet.campaign_audience_members.campaign_id IS 'the campaign';
COMMENT ON COLUMN wallet.campaign_audience_members.member_id IS 'a member in its audience (wallet.members)';
COMMENT ON COLUMN wallet.campaign_audience_members.merchant_id IS 'merchant of the campaign: the key to distribute by';
COMMENT ON COLUMN wallet.campaign_audience_members.added_at IS 'when the audience was set';
SELECT pg_catalog.pg_extension_config_dump('wallet.campaign_audience_members', '');
ALTER TABLE wallet.campaign_audience_members ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.campaign_audience_members USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.campaign_audience_members IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

------------------------------------------------------------------------------
-- Feedback and costs
------------------------------------------------------------------------------

CREATE TABLE wallet.campaign_feedback (
    feedback_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id     bigint NOT NULL REFERENCES wallet.merchants,
    campaign_id     bigint NOT NULL REFERENCES wallet.campaigns,
    member_id       bigint NOT NULL REFERENCES wallet.members,
    score           int CHECK (score BETWEEN 1 AND 5),
    category        text NOT NULL CHECK (category ~ '^[a-z][a-z0-9_]{0,62}$'),
    comment         text CHECK (length(comment) <= 4000),
    idempotency_key text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (merchant_id, idempotency_key)
);
CREATE INDEX campaign_feedback_campaign_idx ON wallet.campaign_feedback (campaign_id, created_at);
COMMENT ON TABLE wallet.campaign_feedback IS 'members'' feedback on campaigns (wallet.record_feedback): a score, a category (complaint counts as a complaint) and a comment';
COMMENT ON COLUMN wallet.campaign_feedback.feedback_id IS 'feedback id';
COMMENT ON COLUMN wallet.campaign_feedback.merchant_id IS 'merchant of the campaign: the key to distribute by';
COMMENT ON COLUMN wallet.campaign_feedback.campaign_id IS 'the campaign';
COMMENT ON COLUMN wallet.campaign_feedback.member_id IS 'the member who gave it (wallet.members)';
COMMENT ON COLUMN wallet.campaign_feedback.score IS 'satisfaction from 1 (worst) to 5 (best); NULL = none given';
COMMENT ON COLUMN wallet.campaign_feedback.category IS 'what it is: a lower-case word (praise, question, suggestion, complaint, ...); complaint is counted in the complaint rate';
COMMENT ON COLUMN wallet.campaign_feedback.comment IS 'the member''s own words (personal data: cleared by wallet.forget_member); NULL = none';
COMMENT ON COLUMN wallet.campaign_feedback.idempotency_key IS 'the app''s key for the call, unique per merchant: a retry returns the first feedback; NULL = none';
COMMENT ON COLUMN wallet.campaign_feedback.created_at IS 'when it was recorded';
SELECT pg_catalog.pg_extension_config_dump('wallet.campaign_feedback', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.campaign_feedback', 'feedback_id'), '');
ALTER TABLE wallet.campaign_feedback ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.campaign_feedback USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.campaign_feedback IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

-- What a campaign cost beyond points and code redemptions (which the report
-- reads from purchases and redemptions): the discounts of its offers, written
-- by the checkout that applies them, and what else the merchant books on it.
CREATE TABLE wallet.campaign_costs (
    cost_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    campaign_id bigint NOT NULL REFERENCES wallet.campaigns,
    kind        text NOT NULL CHECK (kind IN ('discount', 'cashback', 'other')),
    amount      numeric NOT NULL,
    currency    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    member_id   bigint REFERENCES wallet.members,
    purchase_id bigint REFERENCES wallet.purchases,
    occurred_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX campaign_costs_campaign_idx ON wallet.campaign_costs (campaign_id, occurred_at);
COMMENT ON TABLE wallet.campaign_costs IS 'money a campaign cost besides points (from purchases.rules) and code redemptions (campaigns.redemption_value): offer discounts applied at checkout and other costs; summed by wallet.campaign_report';
COMMENT ON COLUMN wallet.campaign_costs.cost_id IS 'cost id';
COMMENT ON COLUMN wallet.campaign_costs.merchant_id IS 'merchant of the campaign: the key to distribute by';
COMMENT ON COLUMN wallet.campaign_costs.campaign_id IS 'the campaign';
COMMENT ON COLUMN wallet.campaign_costs.kind IS 'discount (an offer''s discount on a purchase), cashback (paid out in money) or other';
COMMENT ON COLUMN wallet.campaign_costs.amount IS 'money, in currency; negative takes back an earlier cost (a refunded discounted purchase)';
COMMENT ON COLUMN wallet.campaign_costs.currency IS 'ISO 4217 code of the amount';
COMMENT ON COLUMN wallet.campaign_costs.member_id IS 'the member who got it (counts as taking part in the campaign); NULL = none';
COMMENT ON COLUMN wallet.campaign_costs.purchase_id IS 'the purchase it was granted on; NULL = none';
COMMENT ON COLUMN wallet.campaign_costs.occurred_at IS 'when it was granted';
SELECT pg_catalog.pg_extension_config_dump('wallet.campaign_costs', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.campaign_costs', 'cost_id'), '');
ALTER TABLE wallet.campaign_costs ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.campaign_costs USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.campaign_costs IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

------------------------------------------------------------------------------
-- RFM segments
------------------------------------------------------------------------------

-- R is the recency quintile, FM the rounded-up mean of the frequency and
-- monetary quintiles: ceil((F + M) / 2).  Every one of the 25 cells has
-- exactly one segment.
CREATE VIEW wallet.rfm_segments (r_score, fm_score, segment) AS VALUES
    (5, 5, 'champions'), (5, 4, 'champions'), (4, 5, 'champions'), (4, 4, 'champions'),
    (3, 5, 'loyal'), (3, 4, 'loyal'), (3, 3, 'loyal'),
    (5, 3, 'potential'), (5, 2, 'potential'), (4, 3, 'potential'), (4, 2, 'potential'), (4, 1, 'potential'),
    (5, 1, 'new'),
    (2, 4, 'at_risk'), (2, 3, 'at_risk'), (1, 4, 'at_risk'), (1, 3, 'at_risk'),
    (2, 5, 'cannot_lose'), (1, 5, 'cannot_lose'),
    (3, 2, 'hibernating'), (3, 1, 'hibernating'), (2, 2, 'hibernating'), (2, 1, 'hibernating'),
    (1, 2, 'lost'), (1, 1, 'lost');
COMMENT ON VIEW wallet.rfm_segments IS 'the named RFM segment of each recency score and combined frequency-monetary score (ceil((F + M) / 2)), used by wallet.rfm';
COMMENT ON COLUMN wallet.rfm_segments.r_score IS 'recency quintile, 5 = bought most recently';
COMMENT ON COLUMN wallet.rfm_segments.fm_score IS 'ceil((frequency quintile + monetary quintile) / 2), 5 = buys most often and most';
COMMENT ON COLUMN wallet.rfm_segments.segment IS 'segment name: champions, loyal, potential, new, at_risk, cannot_lose, hibernating, lost';

-- The scores, unchecked (callers check the merchant).  A purchase counts net
-- of the refunds recorded up to as_of; one refunded in full does not count.
-- Quintile = 1 + floor(5 * percent_rank), at most 5: ties share the lower.
CREATE FUNCTION wallet_internal.rfm_scores(merchant_id bigint, as_of timestamptz, currency text)
    RETURNS TABLE (member_id bigint, last_purchase_at timestamptz, frequency bigint, monetary numeric,
                   r_score int, f_score int, m_score int, segment text)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN QUERY
    WITH refunded AS (
        SELECT f.purchase_id, sum(f.amount) AS amount
          FROM wallet.refunds f
         WHERE f.merchant_id = rfm_scores.merchant_id AND f.created_at <= rfm_scores.as_of
         GROUP BY f.purchase_id
    ), net AS (
        SELECT p.member_id, p.occurred_at, p.amount - coalesce(x.amount, 0) AS amount
          FROM wallet.purchases p LEFT JOIN refunded x ON x.purchase_id = p.purchase_id
         WHERE p.merchant_id = rfm_scores.merchant_id AND p.occurred_at <= rfm_scores.as_of
           AND (rfm_scores.currency IS NULL OR p.currency = rfm_scores.currency)
    ), per_member AS (
        SELECT n.member_id, max(n.occurred_at) AS last_at, count(*) AS freq, sum(n.amount) AS money
          FROM net n WHERE n.amount > 0
         GROUP BY n.member_id
    ), scored AS (
        SELECT pm.*,
               LEAST(5, 1 + floor(5 * percent_rank() OVER (ORDER BY pm.last_at)))::int AS r,
               LEAST(5, 1 + floor(5 * percent_rank() OVER (ORDER BY pm.freq)))::int AS f,
               LEAST(5, 1 + floor(5 * percent_rank() OVER (ORDER BY pm.money)))::int AS m
          FROM per_member pm
    )
    SELECT s.member_id, s.last_at, s.freq, s.money, s.r, s.f, s.m, g.segment
      FROM scored s JOIN wallet.rfm_segments g ON g.r_score = s.r AND g.fm_score = (s.f + s.m + 1) / 2;
END
$$;
COMMENT ON FUNCTION wallet_internal.rfm_scores(bigint, timestamptz, text) IS 'internal: RFM quintiles and segment of every member of the merchant with a purchase (net of refunds) up to as_of, without checks';

CREATE FUNCTION wallet_internal.rfm_args(merchant_id bigint, as_of timestamptz, currency text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.check_merchant(merchant_id);
    IF as_of IS NULL THEN
        RAISE EXCEPTION 'as_of must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Scores are computed from the purchases up to a point in time.';
    END IF;
    IF NOT isfinite(as_of) THEN
        RAISE EXCEPTION 'as_of must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Recency is counted in days up to as_of.';
    END IF;
    IF currency IS NOT NULL AND currency !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'invalid currency "%"', left(currency, 16)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A currency is an ISO 4217 code of three capital letters, such as CNY.';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.rfm_args(bigint, timestamptz, text) IS 'internal: checks the arguments of wallet.rfm (22004, 22023 for an infinite as_of or a malformed currency, WL102)';

CREATE FUNCTION wallet.rfm(merchant_id bigint, as_of timestamptz DEFAULT now(), currency text DEFAULT NULL)
    RETURNS TABLE (member_id bigint, member_ref text, last_purchase_at timestamptz, recency_days numeric,
                   frequency bigint, monetary numeric, r_score int, f_score int, m_score int, segment text)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.rfm_args(merchant_id, as_of, currency);
    RETURN QUERY
    SELECT s.member_id, m.member_ref, s.last_purchase_at,
           round((extract(epoch FROM rfm.as_of - s.last_purchase_at) / 86400)::numeric, 3),
           s.frequency, s.monetary, s.r_score, s.f_score, s.m_score, s.segment
      FROM wallet_internal.rfm_scores(rfm.merchant_id, rfm.as_of, rfm.currency) s
      JOIN wallet.members m ON m.member_id = s.member_id
     ORDER BY s.member_id;
END
$$;
COMMENT ON FUNCTION wallet.rfm(bigint, timestamptz, text) IS 'recency, frequency and monetary quintiles (1 to 5) and the named segment (wallet.rfm_segments) of every member of the merchant with purchases up to as_of, net of refunds; currency NULL = every currency';

------------------------------------------------------------------------------
-- Groups
------------------------------------------------------------------------------

-- Where a member falls in [0, 100): the first 56 bits of
-- sha256(holdout_key || campaign id || member id) as a fraction of 2^56.
-- sha256 under a secret random key is a keyed hash (the input has a fixed
-- length, so no extension attack applies); uniform, and the same on every
-- call, in every session and after every restart.
CREATE FUNCTION wallet_internal.holdout_bucket(holdout_key bytea, campaign_id bigint, member_id bigint) RETURNS numeric
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN ('x' || encode(substr(sha256(holdout_key || int8send(campaign_id) || int8send(member_id)), 1, 7), 'hex'))::bit(56)::bigint
           * 100::numeric / 72057594037927936;
END
$$;
COMMENT ON FUNCTION wallet_internal.holdout_bucket(bytea, bigint, bigint) IS 'internal: the member''s place in [0, 100) for the campaign''s holdout, from a keyed hash of campaign and member id';

-- The fast variant for other areas (push audience send, offers): the group
-- of a member, by ids, without argument checks.
CREATE FUNCTION wallet_internal.campaign_group(campaign_id bigint, member_id bigint) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    c record;
    inside boolean;
BEGIN
    SELECT k.merchant_id, k.audience, k.audience_program_id, k.audience_min_rank, k.holdout_percent, k.holdout_key INTO c
      FROM wallet.campaigns k WHERE k.campaign_id = campaign_group.campaign_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF c.audience = 'everyone' THEN
        inside := EXISTS (SELECT FROM wallet.members m WHERE m.member_id = campaign_group.member_id AND m.merchant_id = c.merchant_id);
    ELSIF c.audience = 'tiers' THEN
        inside := EXISTS (SELECT FROM wallet.members m
                            JOIN wallet.accounts a ON a.program_id = c.audience_program_id AND a.member_ref = m.member_ref
                            JOIN wallet.account_tiers t ON t.account_id = a.account_id
                           WHERE m.member_id = campaign_group.member_id AND m.merchant_id = c.merchant_id
                             AND t.rank >= c.audience_min_rank);
    ELSE
        inside := EXISTS (SELECT FROM wallet.campaign_audience_members x
                           WHERE x.campaign_id = campaign_group.campaign_id AND x.member_id = campaign_group.member_id);
    END IF;
    IF NOT inside THEN
        RETURN 'outside';
    END IF;
    RETURN CASE WHEN wallet_internal.holdout_bucket(c.holdout_key, campaign_group.campaign_id, campaign_group.member_id) < c.holdout_percent
                THEN 'control' ELSE 'target' END;
END
$$;
COMMENT ON FUNCTION wallet_internal.campaign_group(bigint, bigint) IS 'internal (fast, unchecked): target, control or outside for a member id; NULL for no campaign';

-- The whole audience with its groups, set-based (the report, a send to the
-- campaign's audience): every member inside, target or control.
CREATE FUNCTION wallet_internal.campaign_members(campaign_id bigint)
    RETURNS TABLE (member_id bigint, grp text)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    c record;
BEGIN
    SELECT k.merchant_id, k.audience, k.audience_program_id, k.audience_min_rank, k.holdout_percent, k.holdout_key INTO c
      FROM wallet.campaigns k WHERE k.campaign_id = campaign_members.campaign_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- holdout_bucket's expression, inline: a call per member (a function
    -- with a SET clause) would cost more than the hash
    RETURN QUERY
    SELECT i.member_id,
           CASE WHEN ('x' || encode(substr(sha256(c.holdout_key || int8send(campaign_members.campaign_id) || int8send(i.member_id)), 1, 7), 'hex'))::bit(56)::bigint
                     < c.holdout_percent * 720575940379279.36
                THEN 'control' ELSE 'target' END
      FROM (SELECT m.member_id FROM wallet.members m WHERE c.audience = 'everyone' AND m.merchant_id = c.merchant_id
            UNION ALL
            SELECT DISTINCT t.member_id FROM wallet.account_tiers t
             WHERE c.audience = 'tiers' AND t.program_id = c.audience_program_id AND t.rank >= c.audience_min_rank
            UNION ALL
            SELECT x.member_id FROM wallet.campaign_audience_members x
             WHERE c.audience IN ('segment', 'list') AND x.campaign_id = campaign_members.campaign_id) i;
END
$$;
COMMENT ON FUNCTION wallet_internal.campaign_members(bigint) IS 'internal (unchecked): every member of the campaign''s audience with its group, target or control';

-- The campaign the caller acts for, locked or not, else WL101.
CREATE FUNCTION wallet_internal.campaign_seen(campaign_id bigint) RETURNS wallet.campaigns
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    c wallet.campaigns;
BEGIN
    IF campaign_id IS NULL THEN
        RAISE EXCEPTION 'campaign_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A campaign is named by its id.';
    END IF;
    SELECT * INTO c FROM wallet.campaigns k WHERE k.campaign_id = campaign_seen.campaign_id AND wallet.acts_for(k.merchant_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'WL101', HINT = 'Create it with wallet.create_campaign.';
    END IF;
    RETURN c;
END
$$;
COMMENT ON FUNCTION wallet_internal.campaign_seen(bigint) IS 'internal: the campaign row when it exists and the caller acts for its merchant; 22004 for NULL, WL101 otherwise';

CREATE FUNCTION wallet.campaign_group(campaign_id bigint, member_ref text) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    c wallet.campaigns;
    id bigint;
BEGIN
    c := wallet_internal.campaign_seen(campaign_id);
    PERFORM wallet_internal.member_check(c.merchant_id, member_ref);
    SELECT m.member_id INTO id FROM wallet.members m WHERE m.merchant_id = c.merchant_id AND m.member_ref = campaign_group.member_ref;
    IF id IS NULL THEN
        RETURN 'outside';   -- not a member (yet): in no audience
    END IF;
    RETURN wallet_internal.campaign_group(campaign_id, id);
END
$$;
COMMENT ON FUNCTION wallet.campaign_group(bigint, text) IS 'target (gets the campaign), control (held out, never gets it) or outside (not in the audience) for a member; the same answer on every call: the holdout is a keyed hash of campaign and member';

CREATE FUNCTION wallet.set_campaign_audience(campaign_id bigint, audience text, holdout_percent numeric DEFAULT 0,
        program_id bigint DEFAULT NULL, min_rank int DEFAULT NULL, segments text[] DEFAULT NULL,
        member_refs text[] DEFAULT NULL, as_of timestamptz DEFAULT now())
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    _campaign bigint := campaign_id;
    c wallet.campaigns;
    bad text;
    n bigint;
BEGIN
    c := wallet_internal.campaign_seen(_campaign);
    IF audience IS NULL OR holdout_percent IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN audience IS NULL THEN 'audience' ELSE 'holdout_percent' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'An audience is everyone, tiers, segment or list, with a holdout percentage (0 for none).';
    END IF;
    IF audience NOT IN ('everyone', 'tiers', 'segment', 'list') THEN
        RAISE EXCEPTION 'unknown audience "%"', left(audience, 32)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An audience is everyone, tiers, segment or list.';
    END IF;
    IF NOT (holdout_percent >= 0 AND holdout_percent < 100) THEN
        RAISE EXCEPTION 'holdout_percent must be at least 0 and under 100'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The holdout is a percentage of the audience; %s is not.', holdout_percent);
    END IF;
    IF (audience <> 'tiers' AND (program_id IS NOT NULL OR min_rank IS NOT NULL))
       OR (audience <> 'segment' AND segments IS NOT NULL) OR (audience <> 'list' AND member_refs IS NOT NULL) THEN
        RAISE EXCEPTION 'arguments do not fit audience %', audience
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'program_id and min_rank are for audience tiers, segments for audience segment, member_refs for audience list.';
    END IF;
    -- the campaign row is locked from here: concurrent changes of one audience queue
    SELECT * INTO c FROM wallet.campaigns k WHERE k.campaign_id = _campaign FOR UPDATE;
    -- the first setting may come after create_campaign (whose start defaults
    -- to now); a change after the start would move members between groups
    IF holdout_percent <> c.holdout_percent AND c.starts_at <= now() AND c.audience_set_at IS NOT NULL THEN
        RAISE EXCEPTION 'holdout of campaign % cannot change after it started', _campaign
            USING ERRCODE = 'WL640',
                  DETAIL = format('The campaign started at %s; changing its holdout from %s%% to %s%% would move members between target and control and void the measurement.',
                                  c.starts_at, c.holdout_percent, holdout_percent),
                  HINT = 'Create a new campaign for a different holdout.';
    END IF;
    IF audience = 'tiers' THEN
        IF program_id IS NULL OR min_rank IS NULL THEN
            RAISE EXCEPTION '% must not be null', CASE WHEN program_id IS NULL THEN 'program_id' ELSE 'min_rank' END
                USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A tier audience is the members of a program''s tier of min_rank or higher.';
        END IF;
        IF min_rank < 1 THEN
            RAISE EXCEPTION 'min_rank must be positive'
                USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Tier ranks start at 1.';
        END IF;
        IF NOT EXISTS (SELECT FROM wallet.programs p WHERE p.program_id = set_campaign_audience.program_id AND p.merchant_id = c.merchant_id) THEN
            RAISE EXCEPTION 'program % does not exist', program_id
                USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
        END IF;
    ELSIF audience = 'segment' THEN
        IF segments IS NULL THEN
            RAISE EXCEPTION 'segments must not be null'
                USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A segment audience names one or more RFM segments.';
        END IF;
        SELECT s INTO bad FROM unnest(segments) s WHERE s IS NULL OR s NOT IN (SELECT g.segment FROM wallet.rfm_segments g) LIMIT 1;
        IF FOUND OR cardinality(segments) = 0 THEN
            RAISE EXCEPTION 'unknown segment "%"', coalesce(left(bad, 32), '')
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'Segments are champions, loyal, potential, new, at_risk, cannot_lose, hibernating and lost (wallet.rfm_segments).';
        END IF;
        IF as_of IS NULL THEN
            RAISE EXCEPTION 'as_of must not be null'
                USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A segment audience is taken from the RFM scores at a point in time.';
        END IF;
    ELSIF audience = 'list' THEN
        IF member_refs IS NULL THEN
            RAISE EXCEPTION 'member_refs must not be null'
                USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A list audience names its members.';
        END IF;
        SELECT r INTO bad FROM unnest(member_refs) r
         WHERE r IS NULL OR btrim(r) = '' OR length(r) > 256 OR r LIKE 'forgotten:%' LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'member reference must be a non-blank text of at most 256 characters'
                USING ERRCODE = CASE WHEN bad IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                      DETAIL = 'Every element of member_refs names a member; "forgotten:" references are the pseudonyms of erased members.';
        END IF;
    END IF;

    UPDATE wallet.campaigns k
       SET audience = set_campaign_audience.audience,
           audience_program_id = set_campaign_audience.program_id, audience_min_rank = set_campaign_audience.min_rank,
           audience_segments = (SELECT array_agg(DISTINCT s ORDER BY s) FROM unnest(set_campaign_audience.segments) s),
           holdout_percent = set_campaign_audience.holdout_percent,
           audience_set_at = now()
     WHERE k.campaign_id = _campaign;
    DELETE FROM wallet.campaign_audience_members x WHERE x.campaign_id = _campaign;
    IF audience = 'segment' THEN
        INSERT INTO wallet.campaign_audience_members (campaign_id, member_id, merchant_id)
        SELECT _campaign, s.member_id, c.merchant_id
          FROM wallet_internal.rfm_scores(c.merchant_id, set_campaign_audience.as_of, NULL) s
         WHERE s.segment = ANY (set_campaign_audience.segments);
    ELSIF audience = 'list' THEN
        -- members named for the first time are created, as issuing them a code would
        INSERT INTO wallet.members (merchant_id, member_ref)
        SELECT DISTINCT c.merchant_id, r FROM unnest(member_refs) r
        ON CONFLICT ON CONSTRAINT members_merchant_id_member_ref_key DO NOTHING;
        INSERT INTO wallet.campaign_audience_members (campaign_id, member_id, merchant_id)
        SELECT DISTINCT _campaign, m.member_id, c.merchant_id
          FROM wallet.members m
         WHERE m.merchant_id = c.merchant_id AND m.member_ref = ANY (set_campaign_audience.member_refs);
    END IF;
    SELECT count(*) INTO n FROM wallet_internal.campaign_members(_campaign);
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet.set_campaign_audience(bigint, text, numeric, bigint, integer, text[], text[], timestamptz) IS 'sets a campaign''s audience (everyone; tiers: program_id and min_rank; segment: RFM segments as of as_of, snapshotted; list: member_refs) and its holdout percentage (a change after the start, once set, is WL640); returns the audience''s size';

------------------------------------------------------------------------------
-- Feedback
------------------------------------------------------------------------------

CREATE FUNCTION wallet.record_feedback(campaign_id bigint, member_ref text, score int, category text, comment text,
        idempotency_key text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    c wallet.campaigns;
    mid bigint;
    f wallet.campaign_feedback;
    given jsonb;
BEGIN
    c := wallet_internal.campaign_seen(campaign_id);
    PERFORM wallet_internal.member_check(c.merchant_id, member_ref);
    IF category IS NULL THEN
        RAISE EXCEPTION 'category must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Feedback has a category: praise, question, suggestion, complaint or another lower-case word.';
    END IF;
    IF category !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid category "%"', left(category, 64)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A category is a lower-case word of letters, digits and underscores, at most 63 long.';
    END IF;
    IF score IS NOT NULL AND score NOT BETWEEN 1 AND 5 THEN
        RAISE EXCEPTION 'score must be from 1 to 5'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('A score is 1 (worst) to 5 (best), or NULL for none; %s is not.', score);
    END IF;
    IF length(comment) > 4000 THEN
        RAISE EXCEPTION 'comment must not be longer than 4000 characters'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('This comment has %s characters.', length(comment));
    END IF;
    IF idempotency_key IS NOT NULL AND (btrim(idempotency_key) = '' OR length(idempotency_key) > 256) THEN
        RAISE EXCEPTION 'idempotency key must not be %', CASE WHEN btrim(idempotency_key) = '' THEN 'blank' ELSE 'longer than 256 characters' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An idempotency key is a non-blank text of at most 256 characters, or NULL.';
    END IF;
    mid := wallet_internal.member_ensure(c.merchant_id, member_ref);
    given := jsonb_build_object('campaign_id', campaign_id, 'member_id', mid, 'score', score, 'category', category,
                                'comment', nullif(btrim(comment), ''));
    IF idempotency_key IS NOT NULL THEN
        INSERT INTO wallet.campaign_feedback AS x (merchant_id, campaign_id, member_id, score, category, comment, idempotency_key)
        VALUES (c.merchant_id, campaign_id, mid, score, category, nullif(btrim(comment), ''), idempotency_key)
        ON CONFLICT ON CONSTRAINT campaign_feedback_merchant_id_idempotency_key_key DO NOTHING
        RETURNING x.* INTO f;
        IF f.feedback_id IS NULL THEN
            SELECT * INTO f FROM wallet.campaign_feedback x
             WHERE x.merchant_id = c.merchant_id AND x.idempotency_key = record_feedback.idempotency_key;
            PERFORM wallet_internal.idem_check(idempotency_key, format('feedback %s', f.feedback_id),
                jsonb_build_object('campaign_id', f.campaign_id, 'member_id', f.member_id, 'score', f.score,
                                   'category', f.category, 'comment', f.comment), given);
        END IF;
        RETURN f.feedback_id;
    END IF;
    INSERT INTO wallet.campaign_feedback AS x (merchant_id, campaign_id, member_id, score, category, comment)
    VALUES (c.merchant_id, campaign_id, mid, score, category, nullif(btrim(comment), ''))
    RETURNING x.feedback_id INTO f.feedback_id;
    RETURN f.feedback_id;
END
$$;
COMMENT ON FUNCTION wallet.record_feedback(bigint, text, integer, text, text, text) IS 'records a member''s feedback on a campaign: score 1 to 5 (or NULL), category (complaint counts as a complaint), comment (personal data, erased by forget_member); with an idempotency key a retry returns the first feedback id';

------------------------------------------------------------------------------
-- Measured effect
------------------------------------------------------------------------------

-- The two-sided 95% quantile of Student's t with df degrees of freedom (the
-- Welch interval's multiplier): the table below 30 (df rounded down, so the
-- interval is never too narrow), above it the Cornish-Fisher expansion of
-- the t quantile around the normal one (error under 1e-5 from df 30 on).
CREATE FUNCTION wallet_internal.t_quantile_975(df numeric) RETURNS numeric
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    z constant numeric := 1.959963984540054;
    t constant numeric[] := '{12.7062,4.3027,3.1824,2.7764,2.5706,2.4469,2.3646,2.3060,2.2622,2.2281,2.2010,2.1788,2.1604,2.1448,2.1314,2.1199,2.1098,2.1009,2.0930,2.0860,2.0796,2.0739,2.0687,2.0639,2.0595,2.0555,2.0518,2.0484,2.0452,2.0423}';
BEGIN
    IF df IS NULL OR df < 1 THEN
        RETURN NULL;
    END IF;
    IF df < 30 THEN
        RETURN t[floor(df)::int];
    END IF;
    RETURN z + (z ^ 3 + z) / (4 * df)
             + (5 * z ^ 5 + 16 * z ^ 3 + 3 * z) / (96 * df ^ 2)
             + (3 * z ^ 7 + 19 * z ^ 5 + 17 * z ^ 3 - 15 * z) / (384 * df ^ 3)
             + (79 * z ^ 9 + 776 * z ^ 7 + 1482 * z ^ 5 - 1920 * z ^ 3 - 945 * z) / (92160 * df ^ 4);
END
$$;
COMMENT ON FUNCTION wallet_internal.t_quantile_975(numeric) IS 'internal: the 97.5% quantile of Student''s t with df degrees of freedom (table below 30, Cornish-Fisher above); NULL below 1';

-- The period of a report: [start, end) defaulting to the campaign's window
-- (an open campaign: up to now).
CREATE FUNCTION wallet_internal.report_period(c wallet.campaigns, period_start timestamptz, period_end timestamptz, currency text)
    RETURNS tstzrange
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    s timestamptz := coalesce(period_start, c.starts_at);
    e timestamptz := coalesce(period_end, c.ends_at, now());
BEGIN
    IF currency IS NOT NULL AND currency !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'invalid currency "%"', left(currency, 16)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A currency is an ISO 4217 code of three capital letters, such as CNY.';
    END IF;
    IF NOT (isfinite(s) AND isfinite(e)) THEN
        RAISE EXCEPTION 'period must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The windows before and after the period are as long as the period.';
    END IF;
    IF e <= s THEN
        RAISE EXCEPTION 'period must end after it starts'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The period from %s to %s is empty.', s, e);
    END IF;
    RETURN tstzrange(s, e, '[)');
END
$$;
COMMENT ON FUNCTION wallet_internal.report_period(wallet.campaigns, timestamptz, timestamptz, text) IS 'internal: the period [start, end) of a campaign report (default: the campaign''s window up to now); 22023 for an empty or infinite period or a malformed currency';

CREATE FUNCTION wallet.campaign_report(campaign_id bigint, period_start timestamptz DEFAULT NULL,
        period_end timestamptz DEFAULT NULL, currency text DEFAULT NULL)
    RETURNS TABLE (
        before_start timestamptz, during_start timestamptz, during_end timestamptz, after_end timestamptz,
        audience_members bigint, target_members bigint, control_members bigint,
        reach bigint, reach_rate numeric, participants bigint, participation_rate numeric,
        redemptions bigint, redeemers bigint, redemption_rate numeric,
        target_buyers bigint, control_buyers bigint, target_revenue numeric, control_revenue numeric,
        target_arpu_before numeric, target_arpu numeric, target_arpu_after numeric,
        control_arpu_before numeric, control_arpu numeric, control_arpu_after numeric,
        target_arppu_before numeric, target_arppu numeric, target_arppu_after numeric,
        control_arppu_before numeric, control_arppu numeric, control_arppu_after numeric,
        target_repeat_rate numeric, control_repeat_rate numeric,
        target_retention numeric, control_retention numeric, target_churn numeric, control_churn numeric,
        arpu_lift numeric, lift_percent numeric, lift_ci_low numeric, lift_ci_high numeric, lift_df numeric,
        incremental_sales numeric, incremental_sales_ci_low numeric, incremental_sales_ci_high numeric,
        points_granted numeric, points_cost numeric, redemption_cost numeric, other_cost numeric, cost numeric, roi numeric,
        feedback_count bigint, average_score numeric, feedback_rate numeric, complaint_rate numeric)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    c wallet.campaigns;
    _cid bigint := campaign_report.campaign_id;
    _cur text := campaign_report.currency;
    per tstzrange;
    s timestamptz;
    e timestamptz;
    b0 timestamptz;
    a1 timestamptz;
    rule_ids bigint[];
    g record;
    t_mean numeric; t_var numeric; c_mean numeric; c_var numeric;
    se numeric; df numeric; tq numeric;
    v_reached bigint; v_part bigint; v_redeemers bigint; v_fb_members bigint; v_complainers bigint;
BEGIN
    c := wallet_internal.campaign_seen(_cid);
    per := wallet_internal.report_period(c, campaign_report.period_start, campaign_report.period_end, _cur);
    s := lower(per);
    e := upper(per);
    b0 := s - (e - s);
    a1 := e + (e - s);
    during_start := s;
    during_end := e;
    before_start := b0;
    after_end := a1;
    -- the campaign's earning rules
    rule_ids := coalesce((SELECT array_agg(r.rule_id) FROM wallet.earning_rules r WHERE r.campaign_id = _cid), '{}');

    -- 1. sales per group and window: every audience member counts, buyer or not
    target_members := 0; control_members := 0; target_buyers := 0; control_buyers := 0;
    FOR g IN
        WITH pur AS (
            SELECT p.member_id,
                   sum(p.amount - p.refunded_amount) FILTER (WHERE p.occurred_at < s) AS rev_b,
                   count(*) FILTER (WHERE p.occurred_at < s) AS n_b,
                   sum(p.amount - p.refunded_amount) FILTER (WHERE p.occurred_at >= s AND p.occurred_at < e) AS rev_d,
                   count(*) FILTER (WHERE p.occurred_at >= s AND p.occurred_at < e) AS n_d,
                   sum(p.amount - p.refunded_amount) FILTER (WHERE p.occurred_at >= e) AS rev_a,
                   count(*) FILTER (WHERE p.occurred_at >= e) AS n_a
              FROM wallet.purchases p
             WHERE p.merchant_id = c.merchant_id AND p.occurred_at >= b0 AND p.occurred_at < a1
               AND p.amount > p.refunded_amount AND (_cur IS NULL OR p.currency = _cur)
             GROUP BY p.member_id
        ), pm AS (
            SELECT m.grp, coalesce(x.rev_b, 0) AS rev_b, coalesce(x.n_b, 0) AS n_b, coalesce(x.rev_d, 0) AS rev_d,
                   coalesce(x.n_d, 0) AS n_d, coalesce(x.rev_a, 0) AS rev_a, coalesce(x.n_a, 0) AS n_a
              FROM wallet_internal.campaign_members(_cid) m LEFT JOIN pur x ON x.member_id = m.member_id
        )
        SELECT pm.grp, count(*) AS n,
               sum(pm.rev_b) AS rev_b, count(*) FILTER (WHERE pm.n_b > 0) AS buyers_b,
               sum(pm.rev_d) AS rev_d, count(*) FILTER (WHERE pm.n_d > 0) AS buyers_d,
               avg(pm.rev_d) AS mean_d, var_samp(pm.rev_d) AS var_d,
               count(*) FILTER (WHERE pm.n_d >= 2) AS repeat_d,
               sum(pm.rev_a) AS rev_a, count(*) FILTER (WHERE pm.n_a > 0) AS buyers_a,
               count(*) FILTER (WHERE pm.n_d > 0 AND pm.n_a > 0) AS retained
          FROM pm GROUP BY pm.grp
    LOOP
        IF g.grp = 'target' THEN
            target_members := g.n; target_buyers := g.buyers_d; target_revenue := g.rev_d;
            target_arpu_before := round(g.rev_b / g.n, 4); target_arpu := round(g.rev_d / g.n, 4);
            target_arpu_after := round(g.rev_a / g.n, 4);
            target_arppu_before := round(g.rev_b / nullif(g.buyers_b, 0), 4); target_arppu := round(g.rev_d / nullif(g.buyers_d, 0), 4);
            target_arppu_after := round(g.rev_a / nullif(g.buyers_a, 0), 4);
            target_repeat_rate := round(g.repeat_d::numeric / nullif(g.buyers_d, 0), 4);
            target_retention := round(g.retained::numeric / nullif(g.buyers_d, 0), 4);
            t_mean := g.mean_d; t_var := g.var_d;
        ELSE
            control_members := g.n; control_buyers := g.buyers_d; control_revenue := g.rev_d;
            control_arpu_before := round(g.rev_b / g.n, 4); control_arpu := round(g.rev_d / g.n, 4);
            control_arpu_after := round(g.rev_a / g.n, 4);
            control_arppu_before := round(g.rev_b / nullif(g.buyers_b, 0), 4); control_arppu := round(g.rev_d / nullif(g.buyers_d, 0), 4);
            control_arppu_after := round(g.rev_a / nullif(g.buyers_a, 0), 4);
            control_repeat_rate := round(g.repeat_d::numeric / nullif(g.buyers_d, 0), 4);
            control_retention := round(g.retained::numeric / nullif(g.buyers_d, 0), 4);
            c_mean := g.mean_d; c_var := g.var_d;
        END IF;
    END LOOP;
    audience_members := target_members + control_members;
    target_churn := 1 - target_retention;
    control_churn := 1 - control_retention;

    -- 2. lift: difference of the mean revenue per member during the period,
    -- Welch's t interval (unequal variances, Welch-Satterthwaite df)
    IF target_members > 0 AND control_members > 0 THEN
        arpu_lift := round(t_mean - c_mean, 4);
        lift_percent := round(100 * (t_mean - c_mean) / nullif(c_mean, 0), 2);
        incremental_sales := round((t_mean - c_mean) * target_members, 2);
    END IF;
    IF target_members > 1 AND control_members > 1 THEN
        se := sqrt(t_var / target_members + c_var / control_members);
        IF se > 0 THEN
            df := (t_var / target_members + c_var / control_members) ^ 2
                  / ((t_var / target_members) ^ 2 / (target_members - 1) + (c_var / control_members) ^ 2 / (control_members - 1));
            tq := wallet_internal.t_quantile_975(df);
            lift_df := round(df, 1);
            lift_ci_low := round(t_mean - c_mean - tq * se, 4);
            lift_ci_high := round(t_mean - c_mean + tq * se, 4);
            incremental_sales_ci_low := round((t_mean - c_mean - tq * se) * target_members, 2);
            incremental_sales_ci_high := round((t_mean - c_mean + tq * se) * target_members, 2);
        END IF;
    END IF;

    -- 3. reach, participation, redemption, feedback: target members in the period
    WITH tgt AS MATERIALIZED (
        SELECT m.member_id FROM wallet_internal.campaign_members(_cid) m WHERE m.grp = 'target'
    ), redeemed AS (
        SELECT DISTINCT mm.member_id
          FROM wallet.code_redemptions r JOIN wallet.members mm ON mm.merchant_id = c.merchant_id AND mm.member_ref = r.member_ref
         WHERE r.campaign_id = _cid AND r.undone_at IS NULL AND r.redeemed_at >= s AND r.redeemed_at < e
    ), took_part AS (
        SELECT d.member_id FROM redeemed d
        UNION
        SELECT k.member_id FROM wallet.campaign_costs k
         WHERE k.campaign_id = _cid AND k.member_id IS NOT NULL AND k.occurred_at >= s AND k.occurred_at < e
        UNION
        SELECT p.member_id FROM wallet.purchases p
         WHERE cardinality(rule_ids) > 0 AND p.merchant_id = c.merchant_id AND p.occurred_at >= s AND p.occurred_at < e
           AND p.rules <> '[]' AND EXISTS (SELECT FROM jsonb_array_elements(p.rules) x WHERE (x ->> 'rule_id')::bigint = ANY (rule_ids))
    ), touched AS (
        SELECT t.member_id FROM took_part t
        UNION
        SELECT v.member_id FROM wallet.member_events v
         WHERE v.merchant_id = c.merchant_id AND v.occurred_at >= s AND v.occurred_at < e AND v.attributes ->> 'campaign_id' = _cid::text
        UNION
        SELECT mm.member_id
          FROM wallet.code_bindings b JOIN wallet.members mm ON mm.merchant_id = c.merchant_id AND mm.member_ref = b.member_ref
         WHERE b.campaign_id = _cid AND b.bound_at >= s AND b.bound_at < e
    ), fb AS (
        SELECT f.member_id, bool_or(f.category = 'complaint') AS complained
          FROM wallet.campaign_feedback f
         WHERE f.campaign_id = _cid AND f.created_at >= s AND f.created_at < e
         GROUP BY f.member_id
    )
    SELECT (SELECT count(*) FROM touched x JOIN tgt USING (member_id)),
           (SELECT count(*) FROM took_part x JOIN tgt USING (member_id)),
           (SELECT count(*) FROM redeemed x JOIN tgt USING (member_id)),
           (SELECT count(*) FROM fb x JOIN tgt USING (member_id)),
           (SELECT count(*) FROM fb x JOIN tgt USING (member_id) WHERE x.complained)
      INTO v_reached, v_part, v_redeemers, v_fb_members, v_complainers;
    reach := v_reached;
    reach_rate := round(v_reached::numeric / nullif(target_members, 0), 4);
    participants := v_part;
    participation_rate := round(v_part::numeric / nullif(target_members, 0), 4);
    redeemers := v_redeemers;
    redemption_rate := round(v_redeemers::numeric / nullif(v_reached, 0), 4);
    feedback_rate := round(v_fb_members::numeric / nullif(v_reached, 0), 4);
    complaint_rate := round(v_complainers::numeric / nullif(v_reached, 0), 4);
    SELECT count(*), round(avg(f.score), 2) INTO feedback_count, average_score
      FROM wallet.campaign_feedback f WHERE f.campaign_id = _cid AND f.created_at >= s AND f.created_at < e;

    -- 4. cost: points of the campaign's rules (net of the share refunds took
    -- back) at the program's point value, redemptions at redemption_value,
    -- and wallet.campaign_costs
    SELECT count(*) INTO redemptions FROM wallet.code_redemptions r
     WHERE r.campaign_id = _cid AND r.undone_at IS NULL AND r.redeemed_at >= s AND r.redeemed_at < e;
    redemption_cost := redemptions * coalesce(c.redemption_value, 0);
    SELECT coalesce(sum(k.amount), 0) INTO other_cost FROM wallet.campaign_costs k
     WHERE k.campaign_id = _cid AND k.occurred_at >= s AND k.occurred_at < e AND (_cur IS NULL OR k.currency = _cur);
    SELECT coalesce(sum(q.pts), 0),
           CASE WHEN bool_or(q.pts > 0 AND q.point_value IS NULL) THEN NULL ELSE coalesce(sum(q.pts * coalesce(q.point_value, 0)), 0) END
      INTO points_granted, points_cost
      FROM (SELECT x.pts * (p.points - p.refunded_points) / p.points AS pts, pr.point_value
              FROM wallet.purchases p
              JOIN LATERAL (SELECT sum((j ->> 'points')::numeric) AS pts FROM jsonb_array_elements(p.rules) j
                             WHERE (j ->> 'rule_id')::bigint = ANY (rule_ids)) x ON x.pts IS NOT NULL
              LEFT JOIN wallet.programs pr ON pr.program_id = p.program_id
             WHERE cardinality(rule_ids) > 0 AND p.merchant_id = c.merchant_id AND p.occurred_at >= s AND p.occurred_at < e
               AND p.points > 0 AND p.rules <> '[]' AND (_cur IS NULL OR p.currency = _cur)) q;
    points_granted := round(points_granted, 2);
    points_cost := round(points_cost, 2);
    cost := points_cost + redemption_cost + other_cost;
    roi := round((incremental_sales - cost) / nullif(cost, 0), 4);
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION wallet.campaign_report(bigint, timestamptz, timestamptz, text) IS 'the measured effect of a campaign in a period (default its window): group sizes, reach, participation, redemption, revenue, ARPU and ARPPU before, during and after, repeat purchases, retention and churn, lift against the control group with a 95% Welch interval, incremental sales, cost and ROI, feedback and complaint rates (README "Analytics")';

-- Monthly cohorts (UTC months) of the audience's buyers: a member's cohort
-- is the month of its first purchase in the period; retention at month k is
-- the share of the cohort buying in the k-th calendar month after it.
CREATE FUNCTION wallet.campaign_cohorts(campaign_id bigint, period_start timestamptz DEFAULT NULL,
        period_end timestamptz DEFAULT NULL, months int DEFAULT 6, currency text DEFAULT NULL)
    RETURNS TABLE (grp text, cohort date, members bigint, month_offset int, active bigint, retention numeric, churn numeric)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    c wallet.campaigns;
    _cid bigint := campaign_cohorts.campaign_id;
    _cur text := campaign_cohorts.currency;
    _months int := campaign_cohorts.months;
    per tstzrange;
BEGIN
    c := wallet_internal.campaign_seen(_cid);
    IF _months IS NULL THEN
        RAISE EXCEPTION 'months must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Cohorts are followed for a number of months.';
    END IF;
    IF _months NOT BETWEEN 0 AND 36 THEN
        RAISE EXCEPTION 'months must be from 0 to 36'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('Cohorts are followed for 0 to 36 months; %s is not.', _months);
    END IF;
    per := wallet_internal.report_period(c, campaign_cohorts.period_start, campaign_cohorts.period_end, _cur);
    RETURN QUERY
    WITH g AS MATERIALIZED (
        SELECT m.member_id, m.grp FROM wallet_internal.campaign_members(_cid) m
    ), buys AS (
        SELECT p.member_id, p.occurred_at, date_trunc('month', p.occurred_at AT TIME ZONE 'UTC')::date AS mon
          FROM wallet.purchases p
         WHERE p.merchant_id = c.merchant_id AND p.occurred_at >= lower(per)
           AND p.occurred_at < (date_trunc('month', upper(per) AT TIME ZONE 'UTC') + make_interval(months => _months + 1)) AT TIME ZONE 'UTC'
           AND p.amount > p.refunded_amount AND (_cur IS NULL OR p.currency = _cur)
    ), firsts AS (
        SELECT b.member_id, min(b.mon) AS cohort FROM buys b WHERE b.occurred_at < upper(per) GROUP BY b.member_id
    ), sizes AS (
        SELECT g.grp, f.cohort, count(*) AS n FROM firsts f JOIN g ON g.member_id = f.member_id GROUP BY g.grp, f.cohort
    ), act AS (
        SELECT g.grp, f.cohort,
               ((extract(year FROM b.mon) - extract(year FROM f.cohort)) * 12 + extract(month FROM b.mon) - extract(month FROM f.cohort))::int AS k,
               count(DISTINCT b.member_id) AS n
          FROM firsts f JOIN g ON g.member_id = f.member_id JOIN buys b ON b.member_id = f.member_id AND b.mon >= f.cohort
         GROUP BY 1, 2, 3
    )
    SELECT z.grp, z.cohort, z.n, k.k, coalesce(a.n, 0), round(coalesce(a.n, 0)::numeric / z.n, 4),
           1 - round(coalesce(a.n, 0)::numeric / z.n, 4)
      FROM sizes z CROSS JOIN generate_series(0, _months) AS k(k)
      LEFT JOIN act a ON a.grp = z.grp AND a.cohort = z.cohort AND a.k = k.k
     WHERE (z.cohort + make_interval(months => k.k)) <= now() AT TIME ZONE 'UTC'
     ORDER BY z.grp DESC, z.cohort, k.k;
END
$$;
COMMENT ON FUNCTION wallet.campaign_cohorts(bigint, timestamptz, timestamptz, integer, text) IS 'retention and churn by monthly cohort (UTC) of the audience''s buyers, target and control: cohort = month of the first purchase in the period; month_offset k: the share of the cohort buying in the k-th month after (months up to now only)';

-- == 10g. referrals and sharing (issue 11)
-- Exactly what sql/ext/referrals.sql creates (every object is new), then
-- the objects it changes elsewhere, re-created whole: wallet.forget_member
-- (members.sql: clears referral fingerprints), wallet.run_maintenance
-- (maintenance.sql: expires pending referrals) and wallet.error_codes
-- (core.sql: WL670, WL671).

------------------------------------------------------------------------------
-- Tables
------------------------------------------------------------------------------

CREATE TABLE wallet.referral_programs (
    campaign_id      bigint PRIMARY KEY REFERENCES wallet.campaigns,
    merchant_id      bigint NOT NULL REFERENCES wallet.merchants,
    program_id       bigint NOT NULL REFERENCES wallet.programs,
    referrer_points  bigint NOT NULL CHECK (referrer_points >= 0),
    referee_points   bigint NOT NULL CHECK (referee_points >= 0),
    qualify_days     int NOT NULL CHECK (qualify_days BETWEEN 1 AND 3650),
    min_amount       numeric NOT NULL DEFAULT 0 CHECK (min_amount >= 0),
    currency         text CHECK (currency ~ '^[A-Z]{3}$'),
    max_per_referrer int CHECK (max_per_referrer > 0),
    cap_period       text NOT NULL DEFAULT 'month' CHECK (cap_period IN ('day', 'week', 'month', 'year', 'campaign')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (referrer_points + referee_points > 0),
    CHECK (min_amount = 0 OR currency IS NOT NULL)
);
COMMENT ON TABLE wallet.referral_programs IS 'the referral program of a campaign (wallet.set_referral_program): points for both sides when the referee''s first qualifying purchase comes within qualify_days of the referral, and the cap per referrer';
COMMENT ON COLUMN wallet.referral_programs.campaign_id IS 'the campaign (one referral program each): its window bounds when referrals are taken';
COMMENT ON COLUMN wallet.referral_programs.merchant_id IS 'merchant of the campaign: the key to distribute by';
COMMENT ON COLUMN wallet.referral_programs.program_id IS 'the points program both rewards are posted in (same merchant)';
COMMENT ON COLUMN wallet.referral_programs.referrer_points IS 'points for the referrer (0 = none)';
COMMENT ON COLUMN wallet.referral_programs.referee_points IS 'points for the referee (0 = none)';
COMMENT ON COLUMN wallet.referral_programs.qualify_days IS 'the referee''s qualifying purchase must be made within this many days of the referral';
COMMENT ON COLUMN wallet.referral_programs.min_amount IS 'least amount of a qualifying purchase, in currency (0 = any amount)';
COMMENT ON COLUMN wallet.referral_programs.currency IS 'ISO 4217 code a qualifying purchase must be paid in (NULL = any; required with a min_amount)';
COMMENT ON COLUMN wallet.referral_programs.max_per_referrer IS 'referrals one referrer may make per cap_period (refused ones do not count); NULL = unlimited';
COMMENT ON COLUMN wallet.referral_programs.cap_period IS 'period of max_per_referrer: day, week, month, year (UTC calendar periods) or campaign (the whole campaign)';
COMMENT ON COLUMN wallet.referral_programs.created_at IS 'when the program was set up';
COMMENT ON COLUMN wallet.referral_programs.updated_at IS 'when its terms last changed (referrals keep the terms they were made under)';
SELECT pg_catalog.pg_extension_config_dump('wallet.referral_programs', '');
ALTER TABLE wallet.referral_programs ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.referral_programs USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.referral_programs IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TABLE wallet.referrals (
    referral_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id          bigint NOT NULL REFERENCES wallet.merchants,
    campaign_id          bigint NOT NULL REFERENCES wallet.campaigns,
    referrer_id          bigint NOT NULL REFERENCES wallet.members,
    referee_id           bigint NOT NULL REFERENCES wallet.members,
    channel              text NOT NULL,
    status               text NOT NULL CHECK (status IN ('pending', 'rewarded', 'expired', 'refused')),
    reason               text CHECK (reason IN ('self_referral', 'already_referred', 'referrer_cap', 'shared_fingerprint',
                                                'referee_already_purchased', 'campaign_inactive', 'window_passed', 'program_closed')),
    referrer_fingerprint text,
    referee_fingerprint  text,
    referred_at          timestamptz NOT NULL DEFAULT now(),
    expires_at           timestamptz,
    program_id           bigint REFERENCES wallet.programs,
    referrer_points      bigint,
    referee_points       bigint,
    min_amount           numeric,
    currency             text,
    purchase_id          bigint,
    referrer_entry_id    bigint,
    referee_entry_id     bigint,
    settled_at           timestamptz,
    CHECK ((status IN ('refused', 'expired')) = (reason IS NOT NULL)),
    CHECK (status = 'refused' OR (expires_at IS NOT NULL AND program_id IS NOT NULL))
);
-- one referrer per referee and merchant: refused attempts do not count
CREATE UNIQUE INDEX referrals_referee_idx ON wallet.referrals (merchant_id, referee_id) WHERE status <> 'refused';
CREATE INDEX referrals_referrer_idx ON wallet.referrals (merchant_id, referrer_id);
CREATE INDEX referrals_referee_all_idx ON wallet.referrals (merchant_id, referee_id);
CREATE INDEX referrals_due_idx ON wallet.referrals (expires_at) WHERE status = 'pending';
COMMENT ON INDEX wallet.referrals_referee_idx IS 'one referrer per referee and merchant (refused attempts aside); also the probe of the purchase trigger';
COMMENT ON INDEX wallet.referrals_referrer_idx IS 'a referrer''s referrals (fingerprints, erasure)';
COMMENT ON INDEX wallet.referrals_referee_all_idx IS 'every attempt naming a referee, refused ones too (fingerprints, erasure)';
COMMENT ON INDEX wallet.referrals_due_idx IS 'pending referrals by the end of their window, for wallet.expire_referrals';
COMMENT ON TABLE wallet.referrals IS 'every wallet.refer call: pending until the referee''s first qualifying purchase (rewarded) or the end of its window (expired), or refused by an abuse guard with its reason';
COMMENT ON COLUMN wallet.referrals.referral_id IS 'referral id';
COMMENT ON COLUMN wallet.referrals.merchant_id IS 'merchant of the campaign: the key to distribute by';
COMMENT ON COLUMN wallet.referrals.campaign_id IS 'the campaign whose referral program it was made under';
COMMENT ON COLUMN wallet.referrals.referrer_id IS 'the member who referred (wallet.members)';
COMMENT ON COLUMN wallet.referrals.referee_id IS 'the member referred (wallet.members)';
COMMENT ON COLUMN wallet.referrals.channel IS 'how the referral was made, as the app names it (link, qr, wechat, ...)';
COMMENT ON COLUMN wallet.referrals.status IS 'pending, rewarded, expired (window passed, program closed) or refused (an abuse guard: see reason)';
COMMENT ON COLUMN wallet.referrals.reason IS 'why refused (self_referral, already_referred, referrer_cap, shared_fingerprint, referee_already_purchased, campaign_inactive) or expired (window_passed, program_closed, referee_already_purchased: a purchase made before the referral turned up); NULL otherwise';
COMMENT ON COLUMN wallet.referrals.referrer_fingerprint IS 'the app''s opaque device or payment fingerprint hash of the referrer side (personal data: cleared by forget_member); NULL = none given';
COMMENT ON COLUMN wallet.referrals.referee_fingerprint IS 'the app''s opaque device or payment fingerprint hash of the referee side (personal data: cleared by forget_member); NULL = none given';
COMMENT ON COLUMN wallet.referrals.referred_at IS 'when the referral was made; a qualifying purchase is made at or after it';
COMMENT ON COLUMN wallet.referrals.expires_at IS 'a qualifying purchase is made before this instant (referred_at + qualify_days); NULL when refused';
COMMENT ON COLUMN wallet.referrals.program_id IS 'the points program of the rewards (the terms below are those of the referral program when the referral was made)';
COMMENT ON COLUMN wallet.referrals.referrer_points IS 'points promised to the referrer';
COMMENT ON COLUMN wallet.referrals.referee_points IS 'points promised to the referee';
COMMENT ON COLUMN wallet.referrals.min_amount IS 'least amount of the qualifying purchase';
COMMENT ON COLUMN wallet.referrals.currency IS 'currency of the qualifying purchase (NULL = any)';
COMMENT ON COLUMN wallet.referrals.purchase_id IS 'the qualifying purchase (rewarded), else NULL';
COMMENT ON COLUMN wallet.referrals.referrer_entry_id IS 'the accrue entry of the referrer''s reward (NULL when none)';
COMMENT ON COLUMN wallet.referrals.referee_entry_id IS 'the accrue entry of the referee''s reward (NULL when none)';
COMMENT ON COLUMN wallet.referrals.settled_at IS 'when it was rewarded or expired';
SELECT pg_catalog.pg_extension_config_dump('wallet.referrals', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.referrals', 'referral_id'), '');
ALTER TABLE wallet.referrals ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.referrals USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.referrals IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

-- The cap per referrer: one counter per referrer and period, bumped under
-- its row lock only while below the cap, so racing referrals stop exactly
-- at it.
CREATE TABLE wallet.referral_counts (
    campaign_id  bigint NOT NULL REFERENCES wallet.campaigns,
    member_id    bigint NOT NULL REFERENCES wallet.members,
    period_start timestamptz NOT NULL,
    merchant_id  bigint NOT NULL REFERENCES wallet.merchants,
    referrals    int NOT NULL CHECK (referrals >= 0),
    PRIMARY KEY (campaign_id, member_id, period_start)
);
COMMENT ON TABLE wallet.referral_counts IS 'referrals taken per referrer, campaign and cap period (the cap of wallet.referral_programs.max_per_referrer)';
COMMENT ON COLUMN wallet.referral_counts.campaign_id IS 'the campaign';
COMMENT ON COLUMN wallet.referral_counts.member_id IS 'the referrer (wallet.members)';
COMMENT ON COLUMN wallet.referral_counts.period_start IS 'start of the cap period (UTC; -infinity for the period campaign)';
COMMENT ON COLUMN wallet.referral_counts.merchant_id IS 'merchant of the campaign: the key to distribute by';
COMMENT ON COLUMN wallet.referral_counts.referrals IS 'referrals taken (not refused) in the period';
SELECT pg_catalog.pg_extension_config_dump('wallet.referral_counts', '');
ALTER TABLE wallet.referral_counts ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.referral_counts USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.referral_counts IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TABLE wallet.share_rewards (
    campaign_id    bigint PRIMARY KEY REFERENCES wallet.campaigns,
    merchant_id    bigint NOT NULL REFERENCES wallet.merchants,
    program_id     bigint NOT NULL REFERENCES wallet.programs,
    points         bigint NOT NULL CHECK (points > 0),
    max_per_member int CHECK (max_per_member > 0),
    max_per_day    int CHECK (max_per_day > 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE wallet.share_rewards IS 'the share reward of a campaign (wallet.set_share_reward): points for a member who shares it, within caps per member';
COMMENT ON COLUMN wallet.share_rewards.campaign_id IS 'the campaign shared (one share reward each): its window bounds when shares are rewarded';
COMMENT ON COLUMN wallet.share_rewards.merchant_id IS 'merchant of the campaign: the key to distribute by';
COMMENT ON COLUMN wallet.share_rewards.program_id IS 'the points program the reward is posted in (same merchant)';
COMMENT ON COLUMN wallet.share_rewards.points IS 'points per rewarded share';
COMMENT ON COLUMN wallet.share_rewards.max_per_member IS 'rewarded shares per member over the whole campaign; NULL = unlimited';
COMMENT ON COLUMN wallet.share_rewards.max_per_day IS 'rewarded shares per member and day (the member''s time zone, else UTC); NULL = unlimited';
COMMENT ON COLUMN wallet.share_rewards.created_at IS 'when the reward was set up';
COMMENT ON COLUMN wallet.share_rewards.updated_at IS 'when its terms last changed';
SELECT pg_catalog.pg_extension_config_dump('wallet.share_rewards', '');
ALTER TABLE wallet.share_rewards ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.share_rewards USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.share_rewards IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TABLE wallet.shares (
    share_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id     bigint NOT NULL REFERENCES wallet.merchants,
    campaign_id     bigint NOT NULL REFERENCES wallet.campaigns,
    member_id       bigint NOT NULL REFERENCES wallet.members,
    channel         text NOT NULL,
    status          text NOT NULL CHECK (status IN ('rewarded', 'refused')),
    reason          text CHECK (reason IN ('member_cap', 'daily_cap', 'campaign_inactive', 'program_closed')),
    points          bigint NOT NULL DEFAULT 0 CHECK (points >= 0),
    entry_id        bigint,
    idempotency_key text,
    shared_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'refused') = (reason IS NOT NULL)),
    UNIQUE (merchant_id, idempotency_key)
);
CREATE INDEX shares_member_idx ON wallet.shares (merchant_id, member_id);
COMMENT ON INDEX wallet.shares_member_idx IS 'a member''s shares';
COMMENT ON TABLE wallet.shares IS 'every share recorded by wallet.record_share: rewarded, or refused by a cap with its reason';
COMMENT ON COLUMN wallet.shares.share_id IS 'share id';
COMMENT ON COLUMN wallet.shares.merchant_id IS 'merchant of the campaign: the key to distribute by';
COMMENT ON COLUMN wallet.shares.campaign_id IS 'the campaign shared';
COMMENT ON COLUMN wallet.shares.member_id IS 'the member who shared (wallet.members)';
COMMENT ON COLUMN wallet.shares.channel IS 'where it was shared, as the app names it (wechat, weibo, link, ...)';
COMMENT ON COLUMN wallet.shares.status IS 'rewarded, or refused (see reason)';
COMMENT ON COLUMN wallet.shares.reason IS 'why refused: member_cap, daily_cap, campaign_inactive, program_closed; NULL when rewarded';
COMMENT ON COLUMN wallet.shares.points IS 'points rewarded (0 when refused)';
COMMENT ON COLUMN wallet.shares.entry_id IS 'the accrue entry of the reward (NULL when refused)';
COMMENT ON COLUMN wallet.shares.idempotency_key IS 'the app''s key of the call, unique per merchant (a retry returns this row); NULL = none given';
COMMENT ON COLUMN wallet.shares.shared_at IS 'when it was recorded';
SELECT pg_catalog.pg_extension_config_dump('wallet.shares', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.shares', 'share_id'), '');
ALTER TABLE wallet.shares ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.shares USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.shares IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

-- The share caps: one counter row per member and campaign (the total and
-- the current day's count), bumped under its row lock only while below
-- both caps.
CREATE TABLE wallet.share_counts (
    campaign_id  bigint NOT NULL REFERENCES wallet.campaigns,
    member_id    bigint NOT NULL REFERENCES wallet.members,
    merchant_id  bigint NOT NULL REFERENCES wallet.merchants,
    rewarded     int NOT NULL CHECK (rewarded >= 0),
    day          date NOT NULL,
    day_rewarded int NOT NULL CHECK (day_rewarded >= 0),
    PRIMARY KEY (campaign_id, member_id)
);
COMMENT ON TABLE wallet.share_counts IS 'rewarded shares per member and campaign, in all and on the member''s current day (the caps of wallet.share_rewards)';
COMMENT ON COLUMN wallet.share_counts.campaign_id IS 'the campaign';
COMMENT ON COLUMN wallet.share_counts.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.share_counts.merchant_id IS 'merchant of the campaign: the key to distribute by';
COMMENT ON COLUMN wallet.share_counts.rewarded IS 'rewarded shares of the campaign by the member';
COMMENT ON COLUMN wallet.share_counts.day IS 'the member''s day of the last rewarded share (its time zone, else UTC)';
COMMENT ON COLUMN wallet.share_counts.day_rewarded IS 'rewarded shares on that day';
SELECT pg_catalog.pg_extension_config_dump('wallet.share_counts', '');
ALTER TABLE wallet.share_counts ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.share_counts USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.share_counts IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

------------------------------------------------------------------------------
-- Helpers
------------------------------------------------------------------------------

-- Optional or required short texts of the app (channel, fingerprint, key).
CREATE FUNCTION wallet_internal.check_label(what text, value text, max_length int, required boolean) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF value IS NULL THEN
        IF required THEN
            RAISE EXCEPTION '% must not be null', what
                USING ERRCODE = 'null_value_not_allowed', DETAIL = format('The %s must be given.', what);
        END IF;
        RETURN;
    END IF;
    IF btrim(value) = '' OR length(value) > max_length THEN
        RAISE EXCEPTION '% must not be %', what, CASE WHEN btrim(value) = '' THEN 'blank' ELSE format('longer than %s characters', max_length) END
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The %s is a non-blank text of at most %s characters%s.', what, max_length,
                                  CASE WHEN required THEN '' ELSE ' (NULL: none)' END);
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.check_label(text, text, int, boolean) IS 'internal: raises 22004 for a required text that is NULL, 22023 for a blank or over-long one';

-- The campaign of a referral program or share reward being set up, with the
-- program it pays in: both the caller's and the same merchant's, the
-- program open.  Returns the merchant.
CREATE FUNCTION wallet_internal.reward_setup_check(campaign_id bigint, program_id bigint) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    merchant bigint;
    closed boolean;
BEGIN
    IF campaign_id IS NULL OR program_id IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN campaign_id IS NULL THEN 'campaign_id' ELSE 'program_id' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A reward belongs to a campaign and is paid in a points program, both named by their ids.';
    END IF;
    SELECT c.merchant_id INTO merchant FROM wallet.campaigns c
     WHERE c.campaign_id = reward_setup_check.campaign_id AND wallet.acts_for(c.merchant_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'WL101', HINT = 'Create it with wallet.create_campaign.';
    END IF;
    SELECT p.closed_at IS NOT NULL INTO closed FROM wallet.programs p
     WHERE p.program_id = reward_setup_check.program_id AND p.merchant_id = merchant;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s of the campaign''s merchant.', program_id);
    END IF;
    IF closed THEN
        PERFORM wallet_internal.program_closed(program_id);
    END IF;
    RETURN merchant;
END
$$;
COMMENT ON FUNCTION wallet_internal.reward_setup_check(bigint, bigint) IS 'internal: the merchant of a campaign and program a reward is set up for; 22004 for NULL ids, WL101 for an unknown campaign, WL214 for a program not of its merchant, WL202 for a closed one';

-- The campaign a referral or share names: the merchant's (else WL101, as
-- an unknown one, whoever's it is); returns whether it runs now.
CREATE FUNCTION wallet_internal.campaign_running(merchant_id bigint, campaign_id bigint) RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    starts timestamptz;
    ends timestamptz;
BEGIN
    IF campaign_id IS NULL THEN
        RAISE EXCEPTION 'campaign_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Referrals and shares are of a campaign, named by its id.';
    END IF;
    SELECT c.starts_at, c.ends_at INTO starts, ends FROM wallet.campaigns c
     WHERE c.campaign_id = campaign_running.campaign_id AND c.merchant_id = campaign_running.merchant_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'WL101', HINT = 'Create it with wallet.create_campaign.';
    END IF;
    RETURN now() >= starts AND now() < coalesce(ends, 'infinity');
END
$$;
COMMENT ON FUNCTION wallet_internal.campaign_running(bigint, bigint) IS 'internal: whether the merchant''s campaign runs now; 22004 for a NULL campaign id, WL101 for one that is not the merchant''s';

-- Posts reward points to a member's account in a program (opened if the
-- member has none) with wallet.accrue: locked, settled, idempotent on the
-- key derived from what is rewarded.
CREATE FUNCTION wallet_internal.reward_points(program_id bigint, member_id bigint, points bigint, idempotency_key text,
        reason text, reference text) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    merchant bigint;
    ref text;
    account bigint;
BEGIN
    SELECT m.merchant_id, m.member_ref INTO merchant, ref FROM wallet.members m WHERE m.member_id = reward_points.member_id;
    SELECT x.account_id INTO account FROM wallet.accounts x
     WHERE x.program_id = reward_points.program_id AND x.member_ref = ref;
    IF NOT FOUND THEN
        INSERT INTO wallet.accounts (program_id, member_ref, member_id, merchant_id)
        VALUES (reward_points.program_id, ref, reward_points.member_id, merchant)
        ON CONFLICT ON CONSTRAINT accounts_program_id_member_ref_key DO NOTHING
        RETURNING accounts.account_id INTO account;
        IF account IS NULL THEN
            SELECT x.account_id INTO account FROM wallet.accounts x
             WHERE x.program_id = reward_points.program_id AND x.member_ref = ref;
        END IF;
    END IF;
    RETURN wallet.accrue(account, points, idempotency_key, reason, reference);
END
$$;
COMMENT ON FUNCTION wallet_internal.reward_points(bigint, bigint, bigint, text, text, text) IS 'internal: accrues reward points to the member''s account in the program (opening it if needed), expiring per the program''s policy; idempotent on idempotency_key';

------------------------------------------------------------------------------
-- Set-up (wallet_admin)
------------------------------------------------------------------------------

CREATE FUNCTION wallet.set_referral_program(campaign_id bigint, program_id bigint, referrer_points bigint,
        referee_points bigint, qualify_days int, min_amount numeric DEFAULT 0, currency text DEFAULT NULL,
        max_per_referrer int DEFAULT NULL, cap_period text DEFAULT 'month') RETURNS wallet.referral_programs
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    merchant bigint;
    r wallet.referral_programs;
BEGIN
    merchant := wallet_internal.reward_setup_check(campaign_id, program_id);
    IF referrer_points IS NULL OR referee_points IS NULL OR qualify_days IS NULL OR min_amount IS NULL OR cap_period IS NULL THEN
        RAISE EXCEPTION '% must not be null',
              CASE WHEN referrer_points IS NULL THEN 'referrer_points' WHEN referee_points IS NULL THEN 'referee_points'
                   WHEN qualify_days IS NULL THEN 'qualify_days' WHEN min_amount IS NULL THEN 'min_amount' ELSE 'cap_period' END
            USING ERRCODE = 'null_value_not_allowed',
                  DETAIL = 'A referral program gives points to each side (0 for none) for a purchase within qualify_days, of at least min_amount (0: any), capped per cap_period.';
    END IF;
    IF referrer_points < 0 OR referee_points < 0 OR referrer_points + referee_points = 0 THEN
        RAISE EXCEPTION 'invalid amount of points'
            USING ERRCODE = 'WL204', DETAIL = 'The points of each side are zero or positive, and not both zero.';
    END IF;
    IF qualify_days NOT BETWEEN 1 AND 3650 OR min_amount < 0 OR max_per_referrer < 1
       OR cap_period NOT IN ('day', 'week', 'month', 'year', 'campaign')
       OR (currency IS NOT NULL AND currency !~ '^[A-Z]{3}$') OR (min_amount > 0 AND currency IS NULL) THEN
        RAISE EXCEPTION 'invalid referral terms'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'qualify_days is 1 to 3650, min_amount zero or positive (with a currency, an ISO 4217 code, when positive), max_per_referrer positive or NULL, cap_period day, week, month, year or campaign.';
    END IF;
    INSERT INTO wallet.referral_programs AS x (campaign_id, merchant_id, program_id, referrer_points, referee_points,
                                               qualify_days, min_amount, currency, max_per_referrer, cap_period)
    VALUES (set_referral_program.campaign_id, merchant, set_referral_program.program_id, set_referral_program.referrer_points,
            set_referral_program.referee_points, set_referral_program.qualify_days, set_referral_program.min_amount,
            set_referral_program.currency, set_referral_program.max_per_referrer, set_referral_program.cap_period)
    ON CONFLICT ON CONSTRAINT referral_programs_pkey DO UPDATE
       SET program_id = EXCLUDED.program_id, referrer_points = EXCLUDED.referrer_points, referee_points = EXCLUDED.referee_points,
           qualify_days = EXCLUDED.qualify_days, min_amount = EXCLUDED.min_amount, currency = EXCLUDED.currency,
           max_per_referrer = EXCLUDED.max_per_referrer, cap_period = EXCLUDED.cap_period, updated_at = now()
    RETURNING x.* INTO r;
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet.set_referral_program(bigint, bigint, bigint, bigint, int, numeric, text, int, text) IS 'sets (or changes) the referral program of a campaign: points for referrer and referee in a program of the merchant, the qualifying purchase (within qualify_days, at least min_amount in currency) and the cap per referrer per period; pending referrals keep their terms';

CREATE FUNCTION wallet.set_share_reward(campaign_id bigint, program_id bigint, points bigint,
        max_per_member int DEFAULT NULL, max_per_day int DEFAULT NULL) RETURNS wallet.share_rewards
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    merchant bigint;
    r wallet.share_rewards;
BEGIN
    merchant := wallet_internal.reward_setup_check(campaign_id, program_id);
    IF points IS NULL THEN
        RAISE EXCEPTION 'points must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A share reward gives a number of points per rewarded share.';
    END IF;
    IF points <= 0 THEN
        RAISE EXCEPTION 'invalid amount of points'
            USING ERRCODE = 'WL204', DETAIL = 'The points of a share reward must be a positive number.';
    END IF;
    IF max_per_member < 1 OR max_per_day < 1 THEN
        RAISE EXCEPTION 'caps must be positive'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'max_per_member and max_per_day are positive, or NULL for no cap.';
    END IF;
    INSERT INTO wallet.share_rewards AS x (campaign_id, merchant_id, program_id, points, max_per_member, max_per_day)
    VALUES (set_share_reward.campaign_id, merchant, set_share_reward.program_id, set_share_reward.points,
            set_share_reward.max_per_member, set_share_reward.max_per_day)
    ON CONFLICT ON CONSTRAINT share_rewards_pkey DO UPDATE
       SET program_id = EXCLUDED.program_id, points = EXCLUDED.points, max_per_member = EXCLUDED.max_per_member,
           max_per_day = EXCLUDED.max_per_day, updated_at = now()
    RETURNING x.* INTO r;
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet.set_share_reward(bigint, bigint, bigint, int, int) IS 'sets (or changes) the share reward of a campaign: points per share in a program of the merchant, capped per member over the campaign and per day';

------------------------------------------------------------------------------
-- Referrals
------------------------------------------------------------------------------

-- The campaign names the referral program: a merchant may run several at
-- once, with their own rewards, windows and caps, and each referral counts
-- for its campaign's report.
CREATE FUNCTION wallet.refer(merchant_id bigint, referrer_ref text, referee_ref text, channel text, campaign_id bigint,
        referrer_fingerprint text DEFAULT NULL, referee_fingerprint text DEFAULT NULL) RETURNS wallet.referrals
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    rp wallet.referral_programs;
    running boolean;
    referrer bigint;
    referee bigint;
    verdict text;
    period timestamptz;
    bumped boolean := false;
    n int;
    r wallet.referrals;
BEGIN
    PERFORM wallet_internal.member_check(merchant_id, referrer_ref);
    PERFORM wallet_internal.member_check(merchant_id, referee_ref);
    PERFORM wallet_internal.check_label('channel', channel, 64, true);
    PERFORM wallet_internal.check_label('referrer fingerprint', referrer_fingerprint, 256, false);
    PERFORM wallet_internal.check_label('referee fingerprint', referee_fingerprint, 256, false);
    running := wallet_internal.campaign_running(merchant_id, campaign_id);
    SELECT * INTO rp FROM wallet.referral_programs x WHERE x.campaign_id = refer.campaign_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % has no referral program', campaign_id
            USING ERRCODE = 'WL670', HINT = 'Set one up with wallet.set_referral_program.';
    END IF;
    referrer := wallet_internal.member_ensure(merchant_id, referrer_ref);
    referee := wallet_internal.member_ensure(merchant_id, referee_ref);

    -- the abuse guards, cheapest first; each refusal is a row with its reason
    SELECT * INTO r FROM wallet.referrals x
     WHERE x.merchant_id = refer.merchant_id AND x.referee_id = referee AND x.status <> 'refused';
    IF NOT running THEN
        verdict := 'campaign_inactive';
    ELSIF referrer = referee THEN
        verdict := 'self_referral';
    ELSIF r.referral_id IS NOT NULL THEN
        IF r.referrer_id = referrer AND r.campaign_id = refer.campaign_id THEN
            RETURN r;   -- the same referral again: a retry
        END IF;
        verdict := 'already_referred';
    ELSIF EXISTS (SELECT FROM wallet.purchases p WHERE p.merchant_id = refer.merchant_id AND p.member_id = referee) THEN
        verdict := 'referee_already_purchased';
    ELSIF EXISTS (
            -- a fingerprint seen on the referrer's side (given now, or on an
            -- earlier referral of the referrer's) that is also on the referee's
            WITH mine AS (
                SELECT referrer_fingerprint AS f WHERE referrer_fingerprint IS NOT NULL
                UNION SELECT x.referrer_fingerprint FROM wallet.referrals x
                       WHERE x.merchant_id = refer.merchant_id AND x.referrer_id = referrer AND x.referrer_fingerprint IS NOT NULL
                UNION SELECT x.referee_fingerprint FROM wallet.referrals x
                       WHERE x.merchant_id = refer.merchant_id AND x.referee_id = referrer AND x.referee_fingerprint IS NOT NULL),
            theirs AS (
                SELECT referee_fingerprint AS f WHERE referee_fingerprint IS NOT NULL
                UNION SELECT x.referrer_fingerprint FROM wallet.referrals x
                       WHERE x.merchant_id = refer.merchant_id AND x.referrer_id = referee AND x.referrer_fingerprint IS NOT NULL
                UNION SELECT x.referee_fingerprint FROM wallet.referrals x
                       WHERE x.merchant_id = refer.merchant_id AND x.referee_id = referee AND x.referee_fingerprint IS NOT NULL)
            SELECT FROM mine JOIN theirs USING (f)) THEN
        verdict := 'shared_fingerprint';
    ELSIF rp.max_per_referrer IS NOT NULL THEN
        period := CASE WHEN rp.cap_period = 'campaign' THEN '-infinity'::timestamptz
                       ELSE date_trunc(rp.cap_period, now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' END;
        -- waits for a concurrent referral of the same referrer; below the cap only
        INSERT INTO wallet.referral_counts AS k (campaign_id, member_id, period_start, merchant_id, referrals)
        VALUES (refer.campaign_id, referrer, period, refer.merchant_id, 1)
        ON CONFLICT ON CONSTRAINT referral_counts_pkey DO UPDATE SET referrals = k.referrals + 1
         WHERE k.referrals < rp.max_per_referrer
        RETURNING k.referrals INTO n;
        IF n IS NULL THEN
            verdict := 'referrer_cap';
        ELSE
            bumped := true;
        END IF;
    END IF;

    IF verdict IS NULL THEN
        -- a concurrent referral of the same referee waits here on the unique index
        INSERT INTO wallet.referrals AS x (merchant_id, campaign_id, referrer_id, referee_id, channel, status,
                                           referrer_fingerprint, referee_fingerprint, expires_at, program_id,
                                           referrer_points, referee_points, min_amount, currency)
        VALUES (refer.merchant_id, refer.campaign_id, referrer, referee, refer.channel, 'pending',
                refer.referrer_fingerprint, refer.referee_fingerprint, now() + make_interval(days => rp.qualify_days), rp.program_id,
                rp.referrer_points, rp.referee_points, rp.min_amount, rp.currency)
        ON CONFLICT (merchant_id, referee_id) WHERE status <> 'refused' DO NOTHING
        RETURNING x.* INTO r;
        IF r.referral_id IS NOT NULL THEN
            RETURN r;
        END IF;
        -- the other one committed first: this one takes no place in the cap
        IF bumped THEN
            UPDATE wallet.referral_counts k SET referrals = k.referrals - 1
             WHERE k.campaign_id = refer.campaign_id AND k.member_id = referrer AND k.period_start = period;
        END IF;
        SELECT * INTO r FROM wallet.referrals x
         WHERE x.merchant_id = refer.merchant_id AND x.referee_id = referee AND x.status <> 'refused';
        IF r.referrer_id = referrer AND r.campaign_id = refer.campaign_id THEN
            RETURN r;   -- a concurrent retry of this same referral
        END IF;
        verdict := 'already_referred';
    END IF;
    INSERT INTO wallet.referrals AS x (merchant_id, campaign_id, referrer_id, referee_id, channel, status, reason,
                                       referrer_fingerprint, referee_fingerprint)
    VALUES (refer.merchant_id, refer.campaign_id, referrer, referee, refer.channel, 'refused', verdict,
            refer.referrer_fingerprint, refer.referee_fingerprint)
    RETURNING x.* INTO r;
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet.refer(bigint, text, text, text, bigint, text, text) IS 'records that referrer_ref referred referee_ref under the referral program of campaign_id (members created if needed) and returns the referral: pending, or refused with the abuse guard''s reason (self_referral, already_referred, referrer_cap, shared_fingerprint, referee_already_purchased, campaign_inactive); the same referral again returns the first (a retry)';

-- The reward, in the transaction of the purchase: fired by every insert
-- into wallet.purchases.  Without a pending referral of the member it costs
-- one probe of a unique index.  The pending referral is locked, so a second
-- purchase racing the first waits and then finds it rewarded; the postings'
-- keys are derived from the referral, so nothing can post twice anyway.
CREATE FUNCTION wallet_internal.referral_purchase() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.referrals;
    closed boolean;
    first_member bigint;
    e_referrer wallet.entries;
    e_referee wallet.entries;
    side text;
BEGIN
    -- the probe (the unique index of the referee's one referral), unlocked:
    -- a referee rewarded long ago costs no row lock on every purchase
    SELECT * INTO r FROM wallet.referrals x
     WHERE x.merchant_id = NEW.merchant_id AND x.referee_id = NEW.member_id AND x.status <> 'refused';
    IF r.status IS DISTINCT FROM 'pending' THEN
        RETURN NULL;
    END IF;
    SELECT * INTO r FROM wallet.referrals x WHERE x.referral_id = r.referral_id AND x.status = 'pending' FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;   -- a concurrent purchase rewarded it (or the expiry job expired it) first
    END IF;
    SELECT p.closed_at IS NOT NULL INTO closed FROM wallet.programs p WHERE p.program_id = r.program_id;
    -- a purchase made before the referral (this one, recorded late, or one
    -- committed while the referral was being made): the referee was a
    -- customer already
    IF EXISTS (SELECT FROM wallet.purchases p
                WHERE p.merchant_id = NEW.merchant_id AND p.member_id = NEW.member_id AND p.occurred_at < r.referred_at) THEN
        closed := NULL;
    END IF;
    IF closed IS NOT false OR NEW.occurred_at >= r.expires_at THEN
        UPDATE wallet.referrals x
           SET status = 'expired', settled_at = now(),
               reason = CASE WHEN closed IS NULL THEN 'referee_already_purchased' WHEN closed THEN 'program_closed' ELSE 'window_passed' END
         WHERE x.referral_id = r.referral_id;
        RETURN NULL;
    END IF;
    IF NEW.amount < r.min_amount OR NEW.currency IS DISTINCT FROM coalesce(r.currency, NEW.currency) THEN
        RETURN NULL;   -- not a qualifying purchase: the referral stays pending
    END IF;
    -- both accounts are locked in member order, so that two referrals
    -- rewarded at once cannot wait for each other
    first_member := least(r.referrer_id, r.referee_id);
    FOREACH side IN ARRAY CASE WHEN first_member = r.referrer_id THEN ARRAY['referrer', 'referee'] ELSE ARRAY['referee', 'referrer'] END LOOP
        IF side = 'referrer' AND r.referrer_points > 0 THEN
            e_referrer := wallet_internal.reward_points(r.program_id, r.referrer_id, r.referrer_points,
                                                        format('referral:%s:referrer', r.referral_id), 'referral reward (referrer)',
                                                        format('referral %s', r.referral_id));
        ELSIF side = 'referee' AND r.referee_points > 0 THEN
            e_referee := wallet_internal.reward_points(r.program_id, r.referee_id, r.referee_points,
                                                       format('referral:%s:referee', r.referral_id), 'referral reward (referee)',
                                                       format('referral %s', r.referral_id));
        END IF;
    END LOOP;
    UPDATE wallet.referrals x SET status = 'rewarded', purchase_id = NEW.purchase_id, referrer_entry_id = e_referrer.entry_id,
           referee_entry_id = e_referee.entry_id, settled_at = now()
     WHERE x.referral_id = r.referral_id;
    INSERT INTO wallet.member_events (merchant_id, member_id, kind, attributes)
    VALUES (r.merchant_id, r.referrer_id, 'referral_rewarded',
            jsonb_build_object('campaign_id', r.campaign_id, 'referral_id', r.referral_id, 'side', 'referrer',
                               'points', r.referrer_points, 'entry_id', e_referrer.entry_id, 'purchase_id', NEW.purchase_id)),
           (r.merchant_id, r.referee_id, 'referral_rewarded',
            jsonb_build_object('campaign_id', r.campaign_id, 'referral_id', r.referral_id, 'side', 'referee',
                               'points', r.referee_points, 'entry_id', e_referee.entry_id, 'purchase_id', NEW.purchase_id));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION wallet_internal.referral_purchase() IS 'trigger: a purchase of a referee with a pending referral, made in its window and qualifying (amount, currency), rewards referrer and referee once, in the purchase''s transaction (member events referral_rewarded); a late one, one in a closed program or a referee with a purchase made before the referral expires it';
-- The trigger fires only for merchants that run a referral program: for
-- the others a purchase costs a lookup in a per-session cache (C), not a
-- PL/pgSQL call and a query.
CREATE FUNCTION wallet_internal.merchant_refers(merchant_id bigint) RETURNS boolean
    LANGUAGE c STABLE
    AS 'MODULE_PATHNAME', 'merchant_refers';
COMMENT ON FUNCTION wallet_internal.merchant_refers(bigint) IS 'internal: whether the merchant has a referral program (wallet.referral_programs), cached per session until that table changes (NULL: false); the condition of the trigger referral_purchase';
CREATE FUNCTION wallet_internal.referral_programs_changed() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'referral_programs_changed';
COMMENT ON FUNCTION wallet_internal.referral_programs_changed() IS 'trigger: a change of wallet.referral_programs counts for wallet_internal.merchant_refers from the next call on (this session) or the next transaction (the others)';
CREATE TRIGGER referral_programs_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON wallet.referral_programs
    FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.referral_programs_changed();
COMMENT ON TRIGGER referral_programs_changed ON wallet.referral_programs IS 'resets the per-session cache of wallet_internal.merchant_refers';
CREATE TRIGGER referral_purchase AFTER INSERT ON wallet.purchases
    FOR EACH ROW WHEN (wallet_internal.merchant_refers(NEW.merchant_id)) EXECUTE FUNCTION wallet_internal.referral_purchase();
COMMENT ON TRIGGER referral_purchase ON wallet.purchases IS 'rewards a pending referral on the referee''s first qualifying purchase (wallet_internal.referral_purchase)';

-- Expiry of pending referrals whose window has passed, in bounded batches
-- (wallet.run_maintenance): every merchant's, like wallet.expire_points.
CREATE FUNCTION wallet.expire_referrals(as_of timestamptz DEFAULT now(), batch_size int DEFAULT 1000) RETURNS int
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n int;
BEGIN
    IF as_of IS NULL OR batch_size IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN as_of IS NULL THEN 'as_of' ELSE 'batch_size' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Referrals are expired as of an instant (now() by default), batch_size at a time.';
    END IF;
    IF as_of > clock_timestamp() OR batch_size < 1 THEN
        RAISE EXCEPTION '%', CASE WHEN batch_size < 1 THEN 'batch_size must be positive' ELSE 'cannot expire referrals as of a future instant' END
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A referral still in its window would lose its reward for good; batch_size is at least 1.';
    END IF;
    -- SKIP LOCKED: a referral being rewarded right now is left to its purchase
    WITH due AS MATERIALIZED (
        SELECT x.referral_id FROM wallet.referrals x
         WHERE x.status = 'pending' AND x.expires_at <= as_of
         ORDER BY x.expires_at, x.referral_id LIMIT batch_size
           FOR NO KEY UPDATE SKIP LOCKED)
    UPDATE wallet.referrals r SET status = 'expired', reason = 'window_passed', settled_at = now()
      FROM due WHERE r.referral_id = due.referral_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet.expire_referrals(timestamptz, int) IS 'expires up to batch_size pending referrals (every merchant''s) whose window ended by as_of (not in the future: 22023) and returns how many; run by wallet.run_maintenance';

------------------------------------------------------------------------------
-- Sharing
------------------------------------------------------------------------------

-- The idempotency fingerprint of a share (wallet_internal.idem_check): what
-- the app asked for, not what the caps made of it.
CREATE FUNCTION wallet_internal.idem_share(s wallet.shares) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN jsonb_build_object('member_id', s.member_id, 'campaign_id', s.campaign_id, 'channel', s.channel);
END
$$;
COMMENT ON FUNCTION wallet_internal.idem_share(wallet.shares) IS 'internal: idempotency fingerprint of a share (member, campaign, channel)';

-- A retry with the same idempotency key returns the first share.
CREATE FUNCTION wallet.record_share(merchant_id bigint, member_ref text, campaign_id bigint, channel text,
        idempotency_key text DEFAULT NULL) RETURNS wallet.shares
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    sr wallet.share_rewards;
    running boolean;
    closed boolean;
    given jsonb;
    member bigint;
    tz text;
    today date;
    k wallet.share_counts;
    bumped boolean := false;
    verdict text;
    s wallet.shares;
    e wallet.entries;
BEGIN
    PERFORM wallet_internal.member_check(merchant_id, member_ref);
    PERFORM wallet_internal.check_label('channel', channel, 64, true);
    PERFORM wallet_internal.check_label('idempotency key', idempotency_key, 256, false);
    running := wallet_internal.campaign_running(merchant_id, campaign_id);
    SELECT * INTO sr FROM wallet.share_rewards x WHERE x.campaign_id = record_share.campaign_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % has no share reward', campaign_id
            USING ERRCODE = 'WL671', HINT = 'Set one up with wallet.set_share_reward.';
    END IF;
    member := wallet_internal.member_ensure(merchant_id, member_ref);
    given := jsonb_build_object('member_id', member, 'campaign_id', campaign_id, 'channel', channel);
    IF idempotency_key IS NOT NULL THEN
        SELECT * INTO s FROM wallet.shares x WHERE x.merchant_id = record_share.merchant_id AND x.idempotency_key = record_share.idempotency_key;
        IF FOUND THEN
            PERFORM wallet_internal.idem_check(idempotency_key, format('share %s', s.share_id), wallet_internal.idem_share(s), given);
            RETURN s;
        END IF;
    END IF;
    SELECT p.closed_at IS NOT NULL INTO closed FROM wallet.programs p WHERE p.program_id = sr.program_id;
    IF NOT running THEN
        verdict := 'campaign_inactive';
    ELSIF closed THEN
        verdict := 'program_closed';
    ELSE
        SELECT m.time_zone INTO tz FROM wallet.members m WHERE m.member_id = member;
        today := (now() AT TIME ZONE coalesce(tz, 'UTC'))::date;
        -- the member's counter row, locked: bumped only while below both caps
        INSERT INTO wallet.share_counts AS c (campaign_id, member_id, merchant_id, rewarded, day, day_rewarded)
        VALUES (record_share.campaign_id, member, record_share.merchant_id, 1, today, 1)
        ON CONFLICT ON CONSTRAINT share_counts_pkey DO UPDATE
           SET rewarded = c.rewarded + 1, day = EXCLUDED.day,
               day_rewarded = CASE WHEN c.day = EXCLUDED.day THEN c.day_rewarded + 1 ELSE 1 END
         WHERE (sr.max_per_member IS NULL OR c.rewarded < sr.max_per_member)
           AND (sr.max_per_day IS NULL OR c.day <> EXCLUDED.day OR c.day_rewarded < sr.max_per_day)
        RETURNING c.* INTO k;
        IF k.member_id IS NOT NULL THEN
            bumped := true;
        ELSE
            SELECT * INTO k FROM wallet.share_counts c WHERE c.campaign_id = record_share.campaign_id AND c.member_id = member;
            verdict := CASE WHEN k.rewarded >= sr.max_per_member THEN 'member_cap' ELSE 'daily_cap' END;
        END IF;
    END IF;
    INSERT INTO wallet.shares AS x (merchant_id, campaign_id, member_id, channel, status, reason, idempotency_key)
    VALUES (record_share.merchant_id, record_share.campaign_id, member, record_share.channel,
            CASE WHEN verdict IS NULL THEN 'rewarded' ELSE 'refused' END, verdict, record_share.idempotency_key)
    ON CONFLICT ON CONSTRAINT shares_merchant_id_idempotency_key_key DO NOTHING
    RETURNING x.* INTO s;
    IF s.share_id IS NULL THEN
        -- a concurrent call with the same key committed first: its result
        IF bumped THEN
            UPDATE wallet.share_counts c SET rewarded = c.rewarded - 1, day_rewarded = c.day_rewarded - 1
             WHERE c.campaign_id = record_share.campaign_id AND c.member_id = member;
        END IF;
        SELECT * INTO s FROM wallet.shares x WHERE x.merchant_id = record_share.merchant_id AND x.idempotency_key = record_share.idempotency_key;
        PERFORM wallet_internal.idem_check(idempotency_key, format('share %s', s.share_id), wallet_internal.idem_share(s), given);
        RETURN s;
    END IF;
    IF verdict IS NULL THEN
        e := wallet_internal.reward_points(sr.program_id, member, sr.points, format('share:%s', s.share_id),
                                           'share reward', format('share %s of campaign %s', s.share_id, campaign_id));
        UPDATE wallet.shares x SET points = sr.points, entry_id = e.entry_id WHERE x.share_id = s.share_id
        RETURNING x.* INTO s;
    END IF;
    INSERT INTO wallet.member_events (merchant_id, member_id, kind, attributes)
    VALUES (record_share.merchant_id, member, 'shared',
            jsonb_build_object('campaign_id', campaign_id, 'channel', channel, 'share_id', s.share_id, 'status', s.status,
                               'reason', s.reason, 'points', s.points, 'entry_id', s.entry_id));
    RETURN s;
END
$$;
COMMENT ON FUNCTION wallet.record_share(bigint, text, bigint, text, text) IS 'records that a member shared a campaign (member event shared) and rewards it with the campaign''s share points, or refuses the reward with a reason (member_cap, daily_cap, campaign_inactive, program_closed); exact under races; idempotent on an optional idempotency_key';

CREATE OR REPLACE FUNCTION wallet.forget_member(merchant_id bigint, member_ref text, reason text) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    _merchant bigint := merchant_id;
    _ref text := member_ref;
    pseudonym text;
    _member bigint;
    n jsonb := '{}';
    c bigint;
    t text;
    also text;
BEGIN
    PERFORM wallet_internal.member_check(_merchant, _ref);
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'reason must not be %', CASE WHEN reason IS NULL THEN 'null' ELSE 'blank' END
            USING ERRCODE = CASE WHEN reason IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'An erasure is recorded with the reason it was made for.';
    END IF;
    pseudonym := 'forgotten:' || encode(sha256(convert_to(gen_random_uuid()::text || _ref, 'UTF8')), 'hex');

    UPDATE wallet.members m SET member_ref = pseudonym, time_zone = NULL, locale = NULL, status = 'forgotten', updated_at = now()
     WHERE m.merchant_id = _merchant AND m.member_ref = _ref
    RETURNING m.member_id INTO _member;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('members', c);
    UPDATE wallet.accounts a SET member_ref = pseudonym
      FROM wallet.programs p
     WHERE p.program_id = a.program_id AND p.merchant_id = _merchant AND a.member_ref = _ref;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('accounts', c);
    -- the tables of a campaign's codes: the member_ref, and what else they hold of the member
    FOR t, also IN VALUES ('code_bindings', ''), ('code_reservations', ''),
                          ('code_redemptions', ', context = ''{}'''), ('member_use_counts', '') LOOP
        EXECUTE format('UPDATE wallet.%I x SET member_ref = $1%s FROM wallet.campaigns k
                         WHERE k.campaign_id = x.campaign_id AND k.merchant_id = $2 AND x.member_ref = $3', t, also)
          USING pseudonym, _merchant, _ref;
        GET DIAGNOSTICS c = ROW_COUNT;
        n := n || jsonb_build_object(t, c);
    END LOOP;
    -- failed attempts are forensics, not totals: deleted, with those that
    -- named no merchant (they cannot be told apart by merchant)
    DELETE FROM wallet.code_failed_attempts f
     WHERE f.member_ref = _ref AND (f.merchant_id = _merchant OR f.merchant_id IS NULL);
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('code_failed_attempts', c);
    PERFORM wallet_internal.code_guard_forget(_merchant, _ref, NULL);
    -- referrals (issue 11): the app's device or payment fingerprints of either
    -- side; referrals and shares name the member by member_id only
    UPDATE wallet.referrals r
       SET referrer_fingerprint = CASE WHEN r.referrer_id = _member THEN NULL ELSE r.referrer_fingerprint END,
           referee_fingerprint = CASE WHEN r.referee_id = _member THEN NULL ELSE r.referee_fingerprint END
     WHERE r.merchant_id = _merchant AND (r.referrer_id = _member OR r.referee_id = _member)
       AND ((r.referrer_id = _member AND r.referrer_fingerprint IS NOT NULL)
            OR (r.referee_id = _member AND r.referee_fingerprint IS NOT NULL));
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('referrals', c);

    IF NOT EXISTS (SELECT FROM jsonb_each(n) e WHERE e.value <> '0') THEN
        RETURN false;   -- nothing names the member (e.g. erased before): nothing to record
    END IF;
    PERFORM wallet_internal.audit_record(_merchant, 'forget_member',
                                jsonb_build_object('table', 'members', 'key', jsonb_build_object('member_id', _member)),
                                NULL, jsonb_build_object('reason', reason, 'pseudonym', pseudonym, 'rows', n));
    RETURN true;
END
$$;
COMMENT ON FUNCTION wallet.forget_member(bigint, text, text) IS 'erases a member''s personal data at a merchant: pseudonymises its member_ref in every table, clears its time zone, locale and request contexts, deletes its failed attempts; ledgers and totals are unchanged; recorded in wallet.audit_log; returns false (and records nothing) when nothing names the member';

CREATE OR REPLACE PROCEDURE wallet.run_maintenance()
    LANGUAGE plpgsql
    AS $$
BEGIN
    -- 1. expiry: at most 100 batches of 1,000 due accounts, each committed
    CALL wallet.expire_points_batched(pg_catalog.now(), 1000, 100);
    -- 2. failed code attempts older than a day (the guard's default window is 15 minutes)
    PERFORM wallet.purge_code_attempts(interval '1 day');
    COMMIT;
    -- 3. pending referrals past their window (issue 11): at most 100 batches of 1,000, each committed
    FOR i IN 1..100 LOOP
        EXIT WHEN wallet.expire_referrals(pg_catalog.now(), 1000) OPERATOR(pg_catalog.<) 1000;
        COMMIT;
    END LOOP;
    COMMIT;
END
$$;
COMMENT ON PROCEDURE wallet.run_maintenance() IS 'runs every periodic job with bounded work per call, committing as it goes: expiry (up to 100,000 due accounts, 1,000 per transaction), purge of failed code attempts older than a day, expiry of pending referrals past their window (up to 100,000, 1,000 per transaction); later issues add their jobs here; schedule it every minute (README "Maintenance")';

CREATE OR REPLACE VIEW wallet.error_codes (sqlstate, name, description) AS VALUES
    ('WL001', 'root_key_not_loaded', 'a function that needs the root key runs on a server started without one (hint: the settings to configure)'),
    ('WL002', 'idempotency_key_reused', 'an idempotency key is sent again with a different fingerprint (see Idempotency): a posting with other points, reason, reference, expiry, hold or operation on the same account; a redemption or reservation with another code, member or ttl, or a redemption''s key for a reservation'),
    ('WL101', 'unknown_campaign', 'generate_codes, rotate_code_key, retire_code_key on a campaign that does not exist'),
    ('WL102', 'unknown_merchant', 'create_campaign, create_program, set_code_guard or clear_code_failures for a merchant that does not exist'),
    ('WL103', 'unknown_key_version', 'retire_code_key of a version the campaign does not have'),
    ('WL104', 'retire_current_key', 'retire_code_key of the version that signs new codes (rotate first)'),
    ('WL105', 'key_versions_exhausted', 'rotate_code_key past version 1023'),
    ('WL106', 'serials_exhausted', 'generate_codes past serial 2^38 − 1 (the refused call uses up no serial)'),
    ('WL107', 'campaign_field_fixed', 'an UPDATE changing a campaign''s prefix or mac_bits, or lowering its current_key_version'),
    ('WL108', 'current_key_retired', 'generate_codes when the campaign''s current key version was retired by hand'),
    ('WL109', 'serial_sequence_missing', 'generate_codes, campaign_next_serial when the campaign''s sequence wallet.campaign_<id>_serials was dropped by hand (it is not recreated: that would repeat serials)'),
    ('WL110', 'campaign_ids_exhausted', 'create_campaign once every campaign id up to 2^32 − 1 (the largest a code carries) has been handed out'),
    ('WL120', 'installation_id_fixed', 'UPDATE, DELETE or TRUNCATE of wallet.installation, or a new installation id once key versions are bound to the current one'),
    ('WL121', 'key_binding_fixed', 'an unbound (legacy) key version inserted by anyone but the owner of wallet.code_keys, or a key version''s installation_id changed'),
    ('WL122', 'campaign_not_deletable', 'DELETE or TRUNCATE of wallet.campaigns (end a campaign instead)'),
    ('WL123', 'campaign_id_reused', 'an INSERT into wallet.campaigns with an explicit campaign_id the identity has already handed out'),
    ('WL150', 'unknown_redemption', 'undo_redemption names no redemption'),
    ('WL151', 'redemption_already_undone', 'undo_redemption on a redemption that is already undone'),
    ('WL152', 'unknown_reservation', 'release_reservation names no reservation'),
    ('WL153', 'reservation_converted', 'release_reservation on a reservation that was already redeemed (undo the redemption instead)'),
    ('WL201', 'unknown_account', 'no points account with that id'),
    ('WL202', 'program_closed', 'a posting or a new account in a closed program'),
    ('WL203', 'insufficient_points', 'a redemption, hold or negative adjustment exceeds the spendable balance; nothing is posted'),
    ('WL204', 'invalid_amount', 'points missing, zero or negative where a positive number is required (zero for adjust)'),
    ('WL205', 'amount_out_of_range', 'a balance, lot or lifetime total would exceed bigint'),
    ('WL206', 'unknown_hold', 'no hold with that id'),
    ('WL207', 'hold_not_open', 'the hold was already captured or released (and this is not the identical repeated call)'),
    ('WL208', 'hold_expired', 'capture after the hold''s time to live ran out'),
    ('WL209', 'capture_exceeds_hold', 'capture of more points than the hold holds'),
    ('WL210', 'entry_already_reversed', 'the entry was already reversed'),
    ('WL211', 'entry_not_reversible', 'only accrue, redeem and capture entries can be reversed'),
    ('WL212', 'unknown_entry', 'no journal entry with that id'),
    ('WL213', 'journal_append_only', 'UPDATE, DELETE or TRUNCATE on wallet.entries'),
    ('WL214', 'unknown_program', 'no points program with that id'),
    ('WL401', 'audit_append_only', 'UPDATE, DELETE or TRUNCATE on wallet.audit_log'),
    ('WL670', 'no_referral_program', 'refer under a campaign that has no referral program (set one up with set_referral_program)'),
    ('WL671', 'no_share_reward', 'record_share of a campaign that has no share reward (set one up with set_share_reward)');
COMMENT ON VIEW wallet.error_codes IS 'every SQLSTATE of class WL the extension raises: code, name and when it is raised';
COMMENT ON COLUMN wallet.error_codes.sqlstate IS 'the five-character SQLSTATE, WL followed by three digits';
COMMENT ON COLUMN wallet.error_codes.name IS 'the code''s name (src/errcodes.h: ERRCODE_WL_<NAME>)';
COMMENT ON COLUMN wallet.error_codes.description IS 'when the extension raises it';

-- == 10e. tiers (issue 10)
-- Exactly what sql/ext/tiers.sql creates, and its changes to other parts:
-- post_entry reviews the tier of a tiered program's account after an
-- accrual or reversal; wallet.error_codes lists WL540-WL543;
-- run_maintenance evaluates tiers.

CREATE OR REPLACE FUNCTION wallet_internal.post_entry(l wallet.points_ledger, e wallet.entries) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    s wallet.ledger_step;
    pid bigint;
BEGIN
    IF e.entry_id IS NULL THEN
        e.entry_id := nextval('wallet.entries_entry_id_seq');
    END IF;
    s := wallet_internal.entry_step(l, e);
    e.amount := s.amount;
    e.balance_after := s.balance_after;
    e.lots := s.lots;
    e.actor := current_user;
    -- the merchant comes from the locked account row the update writes anyway
    UPDATE wallet.accounts SET ledger = s.ledger, next_event = s.next_event WHERE account_id = e.account_id
    RETURNING merchant_id, program_id INTO e.merchant_id, pid;
    INSERT INTO wallet.entries (entry_id, account_id, kind, amount, balance_after, idempotency_key, reason, reference,
                                lots, hold_id, reverses, actor, created_at, points, expires_at, policy, merchant_id)
    VALUES (e.entry_id, e.account_id, e.kind, e.amount, e.balance_after, e.idempotency_key, e.reason, e.reference,
            e.lots, e.hold_id, e.reverses, e.actor, e.created_at, e.points, e.expires_at, e.policy, e.merchant_id)
    RETURNING * INTO e;
    -- tiers (README "Tiers"): points earned change only by accruals and
    -- their reversals; the posting that crosses a threshold upgrades
    IF e.kind IN ('accrue', 'reverse') AND wallet_internal.tier_posting_review(pid, e.account_id, s.ledger, e.created_at) THEN
        PERFORM wallet_internal.tier_review(e.account_id, e.created_at, e.entry_id);
    END IF;
    RETURN e;
END
$$;
COMMENT ON FUNCTION wallet_internal.post_entry(wallet.points_ledger, wallet.entries) IS 'applies entry e to the locked account''s ledger l, stores the result and journals e; an accrual or reversal in a tiered program reviews the account''s tier when it may change (wallet_internal.tier_posting_review, tier_review)';

CREATE OR REPLACE VIEW wallet.error_codes (sqlstate, name, description) AS VALUES
    ('WL001', 'root_key_not_loaded', 'a function that needs the root key runs on a server started without one (hint: the settings to configure)'),
    ('WL002', 'idempotency_key_reused', 'an idempotency key is sent again with a different fingerprint (see Idempotency): a posting with other points, reason, reference, expiry, hold or operation on the same account; a redemption or reservation with another code, member or ttl, or a redemption''s key for a reservation'),
    ('WL101', 'unknown_campaign', 'generate_codes, rotate_code_key, retire_code_key on a campaign that does not exist'),
    ('WL102', 'unknown_merchant', 'create_campaign, create_program, set_code_guard or clear_code_failures for a merchant that does not exist'),
    ('WL103', 'unknown_key_version', 'retire_code_key of a version the campaign does not have'),
    ('WL104', 'retire_current_key', 'retire_code_key of the version that signs new codes (rotate first)'),
    ('WL105', 'key_versions_exhausted', 'rotate_code_key past version 1023'),
    ('WL106', 'serials_exhausted', 'generate_codes past serial 2^38 − 1 (the refused call uses up no serial)'),
    ('WL107', 'campaign_field_fixed', 'an UPDATE changing a campaign''s prefix or mac_bits, or lowering its current_key_version'),
    ('WL108', 'current_key_retired', 'generate_codes when the campaign''s current key version was retired by hand'),
    ('WL109', 'serial_sequence_missing', 'generate_codes, campaign_next_serial when the campaign''s sequence wallet.campaign_<id>_serials was dropped by hand (it is not recreated: that would repeat serials)'),
    ('WL110', 'campaign_ids_exhausted', 'create_campaign once every campaign id up to 2^32 − 1 (the largest a code carries) has been handed out'),
    ('WL120', 'installation_id_fixed', 'UPDATE, DELETE or TRUNCATE of wallet.installation, or a new installation id once key versions are bound to the current one'),
    ('WL121', 'key_binding_fixed', 'an unbound (legacy) key version inserted by anyone but the owner of wallet.code_keys, or a key version''s installation_id changed'),
    ('WL122', 'campaign_not_deletable', 'DELETE or TRUNCATE of wallet.campaigns (end a campaign instead)'),
    ('WL123', 'campaign_id_reused', 'an INSERT into wallet.campaigns with an explicit campaign_id the identity has already handed out'),
    ('WL150', 'unknown_redemption', 'undo_redemption names no redemption'),
    ('WL151', 'redemption_already_undone', 'undo_redemption on a redemption that is already undone'),
    ('WL152', 'unknown_reservation', 'release_reservation names no reservation'),
    ('WL153', 'reservation_converted', 'release_reservation on a reservation that was already redeemed (undo the redemption instead)'),
    ('WL201', 'unknown_account', 'no points account with that id'),
    ('WL202', 'program_closed', 'a posting or a new account in a closed program'),
    ('WL203', 'insufficient_points', 'a redemption, hold or negative adjustment exceeds the spendable balance; nothing is posted'),
    ('WL204', 'invalid_amount', 'points missing, zero or negative where a positive number is required (zero for adjust)'),
    ('WL205', 'amount_out_of_range', 'a balance, lot or lifetime total would exceed bigint'),
    ('WL206', 'unknown_hold', 'no hold with that id'),
    ('WL207', 'hold_not_open', 'the hold was already captured or released (and this is not the identical repeated call)'),
    ('WL208', 'hold_expired', 'capture after the hold''s time to live ran out'),
    ('WL209', 'capture_exceeds_hold', 'capture of more points than the hold holds'),
    ('WL210', 'entry_already_reversed', 'the entry was already reversed'),
    ('WL211', 'entry_not_reversible', 'only accrue, redeem and capture entries can be reversed'),
    ('WL212', 'unknown_entry', 'no journal entry with that id'),
    ('WL213', 'journal_append_only', 'UPDATE, DELETE or TRUNCATE on wallet.entries'),
    ('WL214', 'unknown_program', 'no points program with that id'),
    ('WL401', 'audit_append_only', 'UPDATE, DELETE or TRUNCATE on wallet.audit_log'),
    ('WL540', 'unknown_tier', 'update_tier, drop_tier of a tier that does not exist'),
    ('WL541', 'tier_exists', 'create_tier, update_tier with a rank or name another tier of the program has'),
    ('WL542', 'tier_thresholds_out_of_order', 'create_tier, update_tier leaving a higher rank asking for fewer points or less spend than a lower one (or the same of both)'),
    ('WL543', 'tier_in_use', 'drop_tier of a tier an account has held (its history refers to it)');

CREATE OR REPLACE PROCEDURE wallet.run_maintenance()
    LANGUAGE plpgsql
    AS $$
BEGIN
    -- 1. expiry: at most 100 batches of 1,000 due accounts, each committed
    CALL wallet.expire_points_batched(pg_catalog.now(), 1000, 100);
    -- 2. failed code attempts older than a day (the guard's default window is 15 minutes)
    PERFORM wallet.purge_code_attempts(interval '1 day');
    COMMIT;
    -- 3. tiers (issue 10): due downgrades and sweeps, at most 100 batches of 1,000 accounts
    CALL wallet.evaluate_tiers_batched(NULL, pg_catalog.now(), 1000, 100);
END
$$;
COMMENT ON PROCEDURE wallet.run_maintenance() IS 'runs every periodic job with bounded work per call, committing as it goes: expiry (up to 100,000 due accounts, 1,000 per transaction), purge of failed code attempts older than a day, tier evaluation (up to 100,000 accounts, 1,000 per transaction); later issues add their jobs here; schedule it every minute (README "Maintenance")';

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
COMMENT ON COLUMN wallet.tier_sweeps.after_account IS 'the sweep has looked at every account of the program up to this account_id (0: none yet)';
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
    IF btrim(name) = '' OR length(name) > 256 THEN
        RAISE EXCEPTION 'invalid tier name'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A tier''s name has 1 to 256 characters, not all blank.';
    END IF;
    IF rank < 1 OR min_points < 0 OR min_spend < 0 OR multiplier <= 0 OR jsonb_typeof(benefits) <> 'object' THEN
        RAISE EXCEPTION 'invalid tier'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A tier''s rank is positive, its thresholds are not negative, its multiplier is positive and its benefits are a JSON object.';
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
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'clear_min_spend is true to remove the spend threshold, false to keep or set it.';
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
       OR tier_downgrade NOT IN ('never', 'period_end', 'grace') OR tier_grace_days < 0
       OR tier_downgrade_step NOT IN ('one_level', 'qualified') THEN
        RAISE EXCEPTION 'invalid tier policy'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'tier_window is rolling or calendar_year, tier_window_months 1 to 24, tier_downgrade never, period_end or grace, tier_grace_days not negative, tier_downgrade_step one_level or qualified.';
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
BEGIN
    IF program_id IS NULL OR as_of IS NULL OR max_accounts IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN program_id IS NULL THEN 'program_id' WHEN as_of IS NULL THEN 'as_of' ELSE 'max_accounts' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Tiers are evaluated for a program, as of an instant, a bounded number of accounts at a time.';
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
    IF FOUND AND looked_at < max_accounts THEN
        SELECT array_agg(x.min_points ORDER BY x.rank) AS pts, array_agg(x.rank ORDER BY x.rank) AS ranks,
               array_agg(x.tier_id ORDER BY x.rank) AS ids, coalesce(bool_or(x.min_spend IS NOT NULL), false) AS by_spend
          INTO t FROM wallet.tiers x WHERE x.program_id = evaluate_tiers.program_id;
        -- accounts that qualify for a tier by points (an upper bound: spend can only lower it)
        SELECT x.looked_at AS n, x.last_account AS last, x.qualified AS ids INTO chunk
          FROM wallet_internal.tier_sweep_scan(evaluate_tiers.program_id, s.after_account, max_accounts - looked_at,
                                               p.tier_window, p.tier_window_months, as_of, coalesce(t.pts, '{}')) x;
        looked_at := looked_at + chunk.n;
        -- and those holding a tier, in the same range of accounts
        SELECT array_agg(DISTINCT x.id ORDER BY x.id) INTO ids
          FROM (SELECT unnest(chunk.ids) AS id
                UNION ALL
                SELECT h.account_id FROM wallet.account_tiers h
                 WHERE h.program_id = evaluate_tiers.program_id AND h.rank > 0
                   AND h.account_id > s.after_account AND h.account_id <= chunk.last) x;
        IF ids IS NOT NULL AND NOT t.by_spend THEN
            -- points alone decide: the accounts are locked in account order
            -- (as the loop below would), then reviewed set-based in what
            -- tier_review would do for them: an upgrade (tier_set and the
            -- next review), or, still at their tier, the next review date
            -- (written only where it changes); the others (below their
            -- tier, a period end due) go through tier_review
            PERFORM FROM wallet.accounts a WHERE a.account_id = ANY (ids) ORDER BY a.account_id FOR NO KEY UPDATE;
            WITH c AS (
                SELECT a.account_id, a.merchant_id, a.member_id, a.ledger, h.tier_id AS held_tier,
                       coalesce(h.rank, 0) AS held_rank, h.since, h.below_since, h.review_at, ht.min_points AS held_min,
                       coalesce(t.ranks[k.k], 0) AS q_rank, t.ids[k.k] AS q_tier, t.pts[k.k] AS q_min
                  FROM wallet.accounts a
                  LEFT JOIN wallet.account_tiers h ON h.account_id = a.account_id
                  LEFT JOIN wallet.tiers ht ON ht.tier_id = h.tier_id
                 CROSS JOIN LATERAL (SELECT wallet_internal.tier_points_rank(a.ledger, p.tier_window, p.tier_window_months,
                                                                            as_of, t.pts) AS k) k
                 WHERE a.account_id = ANY (ids)
            ), up AS (
                SELECT c.* FROM c WHERE c.q_rank > c.held_rank
            ), kept AS (
                SELECT c.account_id,
                       CASE p.tier_downgrade WHEN 'never' THEN NULL::timestamptz
                            WHEN 'period_end' THEN wallet_internal.tier_period_end(p.tier_window, p.tier_window_months, c.since, as_of)
                            ELSE wallet_internal.tier_falls_below(c.ledger, p.tier_window, p.tier_window_months, as_of, c.held_min) END AS review_at
                  FROM c
                 WHERE c.held_rank > 0 AND c.q_rank = c.held_rank
                   AND NOT (p.tier_downgrade = 'period_end' AND coalesce(c.review_at <= as_of, false))
            ), set_tier AS (
                INSERT INTO wallet.account_tiers AS x (account_id, merchant_id, member_id, program_id, tier_id, rank, since, below_since, review_at)
                SELECT u.account_id, u.merchant_id, u.member_id, evaluate_tiers.program_id, u.q_tier, u.q_rank, as_of, NULL,
                       CASE p.tier_downgrade WHEN 'never' THEN NULL::timestamptz
                            WHEN 'period_end' THEN wallet_internal.tier_period_end(p.tier_window, p.tier_window_months, as_of, as_of)
                            ELSE wallet_internal.tier_falls_below(u.ledger, p.tier_window, p.tier_window_months, as_of, u.q_min) END
                  FROM up u ORDER BY u.account_id
                ON CONFLICT ON CONSTRAINT account_tiers_pkey DO UPDATE
                   SET tier_id = excluded.tier_id, rank = excluded.rank, since = excluded.since,
                       below_since = excluded.below_since, review_at = excluded.review_at
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
        IF chunk.n < max_accounts - (looked_at - chunk.n) THEN
            DELETE FROM wallet.tier_sweeps x WHERE x.program_id = evaluate_tiers.program_id;
        ELSE
            UPDATE wallet.tier_sweeps x SET after_account = chunk.last WHERE x.program_id = evaluate_tiers.program_id;
        END IF;
    END IF;
    -- more: the batch was full (an account a posting held stays due, for the next call)
    more := due = max_accounts OR EXISTS (SELECT FROM wallet.tier_sweeps x WHERE x.program_id = evaluate_tiers.program_id);
END
$$;
COMMENT ON FUNCTION wallet.evaluate_tiers(bigint, timestamptz, int) IS 'makes the due tier changes of a program at as_of (downgrades after grace or at a period end, and upgrades missed after a change of its tiers or policy), looking at up to max_accounts accounts; points in the window come from each ledger''s monthly buckets, not the journal; more: call again';

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

-- == 10c. push queue (issue 12)
-- Exactly sql/ext/push.sql, then wallet.error_codes with WL701-WL703, wallet.forget_member
-- and wallet.run_maintenance re-created with their push steps.
-- ======================================================================
-- Push queue (issue 12): consent, preferences, frequency caps, quiet hours,
-- the queue of messages and its delivery by sending workers.
--
-- One table holds every message with its outcome (wallet.push_messages):
-- enqueue_push decides queued / deferred / suppressed / duplicate and
-- records it with its reason; claim_pushes re-checks consent, quiet hours,
-- caps and expiry under the member's lock before handing a message out.
-- The claim-time check is the one that guarantees the caps: the plan made at
-- enqueue only chooses when a message should become due.
-- README "Push".
-- ======================================================================

------------------------------------------------------------------------------
-- Merchant settings, topics and caps
------------------------------------------------------------------------------

CREATE TABLE wallet.push_settings (
    merchant_id  bigint PRIMARY KEY REFERENCES wallet.merchants,
    quiet_start  time,
    quiet_end    time,
    time_zone    text NOT NULL DEFAULT 'UTC',
    max_attempts int NOT NULL DEFAULT 5 CHECK (max_attempts BETWEEN 1 AND 100),
    backoff      interval NOT NULL DEFAULT '30 seconds' CHECK (backoff > '0'),
    retention    interval NOT NULL DEFAULT '90 days' CHECK (retention > '0'),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL) AND quiet_start <> quiet_end)
);
COMMENT ON TABLE wallet.push_settings IS 'push settings per merchant (wallet.set_push_settings); a merchant without a row has the defaults: quiet hours 22:00-08:00 UTC, 5 attempts, 30 s backoff, 90 days retention';
COMMENT ON COLUMN wallet.push_settings.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_settings.quiet_start IS 'default quiet hours start (member local time); NULL with quiet_end = no quiet hours';
COMMENT ON COLUMN wallet.push_settings.quiet_end IS 'default quiet hours end (member local time, exclusive); may be before quiet_start (over midnight)';
COMMENT ON COLUMN wallet.push_settings.time_zone IS 'IANA time zone of members without one';
COMMENT ON COLUMN wallet.push_settings.max_attempts IS 'delivery attempts before a message goes to the dead letters';
COMMENT ON COLUMN wallet.push_settings.backoff IS 'delay after the first failed attempt; doubled per attempt, with jitter';
COMMENT ON COLUMN wallet.push_settings.retention IS 'finished messages (sent, suppressed, duplicate, dead) older than this are purged by wallet.purge_pushes';
COMMENT ON COLUMN wallet.push_settings.updated_at IS 'when the settings last changed';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_settings', '');
ALTER TABLE wallet.push_settings ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_settings USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_settings IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TABLE wallet.push_topics (
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    topic       text NOT NULL,
    service     boolean NOT NULL,
    cap_group   text,
    PRIMARY KEY (merchant_id, topic)
);
COMMENT ON TABLE wallet.push_topics IS 'a merchant''s topics (wallet.set_push_topic); a topic without a row is a marketing topic of cap group marketing, except topic service (a service topic, no cap group)';
COMMENT ON COLUMN wallet.push_topics.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_topics.topic IS 'topic name as enqueue_push and record_consent take it';
COMMENT ON COLUMN wallet.push_topics.service IS 'true: a service topic (no opt-in needed, can be muted, no quiet hours); false: marketing (explicit opt-in)';
COMMENT ON COLUMN wallet.push_topics.cap_group IS 'the frequency caps (wallet.push_caps) the topic counts against; NULL = exempt from caps';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_topics', '');
ALTER TABLE wallet.push_topics ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_topics USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_topics IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TABLE wallet.push_caps (
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    channel     text NOT NULL,
    cap_group   text NOT NULL,
    period      text NOT NULL CHECK (period IN ('rolling', 'day', 'week')),
    max_count   int NOT NULL CHECK (max_count > 0),
    window_size interval CHECK ((period = 'rolling') = (window_size IS NOT NULL) AND window_size > '0'),
    policy      text NOT NULL DEFAULT 'defer' CHECK (policy IN ('defer', 'drop')),
    PRIMARY KEY (merchant_id, channel, cap_group, period)
);
COMMENT ON TABLE wallet.push_caps IS 'frequency caps per merchant, channel and cap group: at most max_count messages per rolling window or per calendar day or week (Monday) in the member''s time zone';
COMMENT ON COLUMN wallet.push_caps.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_caps.channel IS 'delivery channel (push, sms, email, in_app, ...)';
COMMENT ON COLUMN wallet.push_caps.cap_group IS 'cap group of the topics counted (wallet.push_topics.cap_group)';
COMMENT ON COLUMN wallet.push_caps.period IS 'rolling (window_size), day or week (calendar, member local time)';
COMMENT ON COLUMN wallet.push_caps.max_count IS 'most messages sent per period';
COMMENT ON COLUMN wallet.push_caps.window_size IS 'length of the rolling window; NULL for calendar periods';
COMMENT ON COLUMN wallet.push_caps.policy IS 'over the cap: defer (to the first allowed slot) or drop (suppressed)';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_caps', '');
ALTER TABLE wallet.push_caps ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_caps USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_caps IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

------------------------------------------------------------------------------
-- Consent and member preferences
------------------------------------------------------------------------------

CREATE TABLE wallet.push_consent_log (
    consent_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id    bigint NOT NULL REFERENCES wallet.merchants,
    member_id      bigint NOT NULL REFERENCES wallet.members,
    channel        text NOT NULL,
    topic          text NOT NULL,
    granted        boolean NOT NULL,
    at             timestamptz NOT NULL,
    source         text NOT NULL,
    policy_version text,
    device         text,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX push_consent_log_member_idx ON wallet.push_consent_log (merchant_id, member_id, channel, topic, at);
COMMENT ON TABLE wallet.push_consent_log IS 'evidence of every consent given or withdrawn (wallet.record_consent), append-only; wallet.push_consents holds the state derived from it';
COMMENT ON COLUMN wallet.push_consent_log.consent_id IS 'evidence record id, increasing';
COMMENT ON COLUMN wallet.push_consent_log.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_consent_log.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.push_consent_log.channel IS 'channel consented to (push, sms, email, in_app, ...)';
COMMENT ON COLUMN wallet.push_consent_log.topic IS 'topic consented to (marketing, offers, points, service, ...)';
COMMENT ON COLUMN wallet.push_consent_log.granted IS 'true: granted (opt-in); false: withdrawn (opt-out, or a muted service topic)';
COMMENT ON COLUMN wallet.push_consent_log.at IS 'when the member gave or withdrew it';
COMMENT ON COLUMN wallet.push_consent_log.source IS 'where it was given (app screen, web form, support, ...)';
COMMENT ON COLUMN wallet.push_consent_log.policy_version IS 'the consent text or policy version shown to the member';
COMMENT ON COLUMN wallet.push_consent_log.device IS 'IP address or device id it came from (personal data: cleared by wallet.forget_member)';
COMMENT ON COLUMN wallet.push_consent_log.recorded_at IS 'when it was recorded';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_consent_log', '');
ALTER TABLE wallet.push_consent_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_consent_log USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_consent_log IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.push_consent_log', 'consent_id'), '');

CREATE TABLE wallet.push_consents (
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    member_id   bigint NOT NULL REFERENCES wallet.members,
    channel     text NOT NULL,
    topic       text NOT NULL,
    granted     boolean NOT NULL,
    at          timestamptz NOT NULL,
    consent_id  bigint NOT NULL REFERENCES wallet.push_consent_log,
    PRIMARY KEY (merchant_id, member_id, channel, topic)
);
COMMENT ON TABLE wallet.push_consents IS 'current consent per member, channel and topic: the latest evidence (by when it was given) of wallet.push_consent_log';
COMMENT ON COLUMN wallet.push_consents.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_consents.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.push_consents.channel IS 'channel';
COMMENT ON COLUMN wallet.push_consents.topic IS 'topic';
COMMENT ON COLUMN wallet.push_consents.granted IS 'whether consent is currently given';
COMMENT ON COLUMN wallet.push_consents.at IS 'when the member gave or withdrew it';
COMMENT ON COLUMN wallet.push_consents.consent_id IS 'the evidence record the state comes from';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_consents', '');
ALTER TABLE wallet.push_consents ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_consents USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_consents IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TABLE wallet.push_preferences (
    merchant_id  bigint NOT NULL REFERENCES wallet.merchants,
    member_id    bigint PRIMARY KEY REFERENCES wallet.members,
    quiet_start  time,
    quiet_end    time,
    topics       text[],
    max_per_day  int CHECK (max_per_day >= 0),
    max_per_week int CHECK (max_per_week >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL) AND quiet_start <> quiet_end)
);
COMMENT ON TABLE wallet.push_preferences IS 'a member''s own push preferences (wallet.set_push_preferences): quiet hours, topics, caps below the merchant''s';
COMMENT ON COLUMN wallet.push_preferences.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_preferences.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.push_preferences.quiet_start IS 'the member''s quiet hours start (local time); NULL = the merchant''s default';
COMMENT ON COLUMN wallet.push_preferences.quiet_end IS 'the member''s quiet hours end (local time, exclusive)';
COMMENT ON COLUMN wallet.push_preferences.topics IS 'marketing topics the member chose; NULL = every topic consented to';
COMMENT ON COLUMN wallet.push_preferences.max_per_day IS 'the member''s cap per local calendar day on every capped group (only lowers the merchant''s)';
COMMENT ON COLUMN wallet.push_preferences.max_per_week IS 'the member''s cap per local calendar week on every capped group (only lowers the merchant''s)';
COMMENT ON COLUMN wallet.push_preferences.updated_at IS 'when the preferences last changed';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_preferences', '');
ALTER TABLE wallet.push_preferences ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_preferences USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_preferences IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

------------------------------------------------------------------------------
-- Messages
------------------------------------------------------------------------------

CREATE TABLE wallet.push_messages (
    push_id        bigint GENERATED ALWAYS AS IDENTITY,
    merchant_id    bigint NOT NULL REFERENCES wallet.merchants,
    member_id      bigint NOT NULL REFERENCES wallet.members,
    channel        text NOT NULL,
    topic          text NOT NULL,
    cap_group      text,
    service        boolean NOT NULL,
    payload        jsonb NOT NULL,
    campaign_id    bigint REFERENCES wallet.campaigns,
    dedup_key      text,
    priority       int NOT NULL,
    not_before     timestamptz NOT NULL,
    expires_at     timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    outcome        text NOT NULL CHECK (outcome IN ('queued', 'deferred', 'suppressed', 'duplicate')),
    outcome_reason text,
    status         text NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'suppressed', 'duplicate', 'dead')),
    reason         text,
    due_at         timestamptz,
    slot_at        timestamptz,
    attempts       int NOT NULL DEFAULT 0,
    claimed_at     timestamptz,
    sent_at        timestamptz,
    provider_message_id text,
    last_error     text,
    finished_at    timestamptz,
    part           smallint NOT NULL,
    PRIMARY KEY (push_id, part),
    CHECK ((part = 3) = (status IN ('sent', 'suppressed', 'duplicate', 'dead')))
) PARTITION BY LIST (part);
-- the claim path: due messages per channel, highest priority first
CREATE INDEX push_messages_due_idx ON wallet.push_messages (channel, priority DESC, due_at) WHERE status IN ('queued', 'sending');
-- the caps: a member's messages by slot, those sent (or being sent) apart
-- from those planned (the claim-time check counts only the former)
CREATE INDEX push_messages_member_idx ON wallet.push_messages (member_id, slot_at) WHERE status = 'queued';
CREATE INDEX push_messages_member_sent_idx ON wallet.push_messages (member_id, slot_at) WHERE status IN ('sending', 'sent');
CREATE INDEX push_messages_finished_idx ON wallet.push_messages (merchant_id, finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX push_messages_member_all_idx ON wallet.push_messages (merchant_id, member_id);
COMMENT ON TABLE wallet.push_messages IS 'every message enqueued with the outcome of enqueue_push and its delivery state, partitioned by part: queued and sending ones in three rotating queue slots (wallet.push_messages_q0..q2, emptied by TRUNCATE in turn: wallet.rotate_push_queue), finished ones in wallet.push_messages_done (insert-only on the hot path), purged after the merchant''s retention';
COMMENT ON COLUMN wallet.push_messages.push_id IS 'message id';
COMMENT ON COLUMN wallet.push_messages.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_messages.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.push_messages.channel IS 'delivery channel';
COMMENT ON COLUMN wallet.push_messages.topic IS 'topic';
COMMENT ON COLUMN wallet.push_messages.cap_group IS 'cap group the message counts against (NULL = exempt), fixed at enqueue';
COMMENT ON COLUMN wallet.push_messages.service IS 'a service message (no opt-in needed, no quiet hours), fixed at enqueue';
COMMENT ON COLUMN wallet.push_messages.payload IS 'what the worker sends (personal data: cleared by wallet.forget_member)';
COMMENT ON COLUMN wallet.push_messages.campaign_id IS 'campaign the message belongs to (NULL = none)';
COMMENT ON COLUMN wallet.push_messages.dedup_key IS 'deduplication key, unique per merchant for ever (wallet.push_dedup)';
COMMENT ON COLUMN wallet.push_messages.priority IS 'higher first when claimed; a higher priority does not wait for queued messages of lower priority';
COMMENT ON COLUMN wallet.push_messages.not_before IS 'earliest send time asked for';
COMMENT ON COLUMN wallet.push_messages.expires_at IS 'never sent after this (NULL = no expiry)';
COMMENT ON COLUMN wallet.push_messages.created_at IS 'when it was enqueued';
COMMENT ON COLUMN wallet.push_messages.outcome IS 'what enqueue_push returned: queued, deferred, suppressed or duplicate';
COMMENT ON COLUMN wallet.push_messages.outcome_reason IS 'why it was deferred or suppressed at enqueue (quiet_hours, frequency_cap, no_consent, ...)';
COMMENT ON COLUMN wallet.push_messages.status IS 'queued (waiting for due_at), sending (claimed, leased until due_at), sent, suppressed, duplicate or dead (attempts exhausted)';
COMMENT ON COLUMN wallet.push_messages.reason IS 'why of the current status (the last deferral, suppression or failure)';
COMMENT ON COLUMN wallet.push_messages.due_at IS 'queued: when it may be claimed; sending: when the lease lapses';
COMMENT ON COLUMN wallet.push_messages.slot_at IS 'the send time it counts against the caps at: planned (queued) or claimed (sending, sent)';
COMMENT ON COLUMN wallet.push_messages.attempts IS 'times claimed';
COMMENT ON COLUMN wallet.push_messages.claimed_at IS 'when last claimed';
COMMENT ON COLUMN wallet.push_messages.sent_at IS 'when acknowledged as sent';
COMMENT ON COLUMN wallet.push_messages.provider_message_id IS 'the provider''s id of the delivery';
COMMENT ON COLUMN wallet.push_messages.last_error IS 'the last failure reported by fail_push';
COMMENT ON COLUMN wallet.push_messages.finished_at IS 'when it reached sent, suppressed, duplicate or dead (retention counts from here)';
COMMENT ON COLUMN wallet.push_messages.part IS 'the partition: 0, 1, 2 = the rotating queue slots (queued, sending), 3 = finished (wallet.push_messages_done)';
ALTER TABLE wallet.push_messages ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_messages USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_messages IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.push_messages', 'push_id'), '');

-- The queue does not decay: a message is written once into the current of
-- three queue slots; claims update it there, and when it is finished it is
-- deleted there and written once into push_messages_done.  Every dead tuple
-- of the hot path is thus in a queue slot, and a slot is emptied by TRUNCATE
-- (wallet.rotate_push_queue: the few live rows carried forward), which
-- neither vacuum nor a transaction holding back the xmin horizon delays.
CREATE TABLE wallet.push_messages_q0 PARTITION OF wallet.push_messages FOR VALUES IN (0);
COMMENT ON TABLE wallet.push_messages_q0 IS 'queue slot 0 of wallet.push_messages (queued and sending messages): current in turn, emptied by TRUNCATE when its turn comes again (wallet.rotate_push_queue)';
COMMENT ON COLUMN wallet.push_messages_q0.push_id IS 'message id';
COMMENT ON COLUMN wallet.push_messages_q0.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_messages_q0.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.push_messages_q0.channel IS 'delivery channel';
COMMENT ON COLUMN wallet.push_messages_q0.topic IS 'topic';
COMMENT ON COLUMN wallet.push_messages_q0.cap_group IS 'cap group the message counts against (NULL = exempt), fixed at enqueue';
COMMENT ON COLUMN wallet.push_messages_q0.service IS 'a service message (no opt-in needed, no quiet hours), fixed at enqueue';
COMMENT ON COLUMN wallet.push_messages_q0.payload IS 'what the worker sends (personal data: cleared by wallet.forget_member)';
COMMENT ON COLUMN wallet.push_messages_q0.campaign_id IS 'campaign the message belongs to (NULL = none)';
COMMENT ON COLUMN wallet.push_messages_q0.dedup_key IS 'deduplication key, unique per merchant for ever (wallet.push_dedup)';
COMMENT ON COLUMN wallet.push_messages_q0.priority IS 'higher first when claimed; a higher priority does not wait for queued messages of lower priority';
COMMENT ON COLUMN wallet.push_messages_q0.not_before IS 'earliest send time asked for';
COMMENT ON COLUMN wallet.push_messages_q0.expires_at IS 'never sent after this (NULL = no expiry)';
COMMENT ON COLUMN wallet.push_messages_q0.created_at IS 'when it was enqueued';
COMMENT ON COLUMN wallet.push_messages_q0.outcome IS 'what enqueue_push returned: queued, deferred, suppressed or duplicate';
COMMENT ON COLUMN wallet.push_messages_q0.outcome_reason IS 'why it was deferred or suppressed at enqueue (quiet_hours, frequency_cap, no_consent, ...)';
COMMENT ON COLUMN wallet.push_messages_q0.status IS 'queued (waiting for due_at), sending (claimed, leased until due_at), sent, suppressed, duplicate or dead (attempts exhausted)';
COMMENT ON COLUMN wallet.push_messages_q0.reason IS 'why of the current status (the last deferral, suppression or failure)';
COMMENT ON COLUMN wallet.push_messages_q0.due_at IS 'queued: when it may be claimed; sending: when the lease lapses';
COMMENT ON COLUMN wallet.push_messages_q0.slot_at IS 'the send time it counts against the caps at: planned (queued) or claimed (sending, sent)';
COMMENT ON COLUMN wallet.push_messages_q0.attempts IS 'times claimed';
COMMENT ON COLUMN wallet.push_messages_q0.claimed_at IS 'when last claimed';
COMMENT ON COLUMN wallet.push_messages_q0.sent_at IS 'when acknowledged as sent';
COMMENT ON COLUMN wallet.push_messages_q0.provider_message_id IS 'the provider''s id of the delivery';
COMMENT ON COLUMN wallet.push_messages_q0.last_error IS 'the last failure reported by fail_push';
COMMENT ON COLUMN wallet.push_messages_q0.finished_at IS 'when it reached sent, suppressed, duplicate or dead (retention counts from here)';
COMMENT ON COLUMN wallet.push_messages_q0.part IS 'the partition: 0, 1, 2 = the rotating queue slots (queued, sending), 3 = finished (wallet.push_messages_done)';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_messages_q0', '');
ALTER TABLE wallet.push_messages_q0 ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_messages_q0 USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_messages_q0 IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
CREATE TABLE wallet.push_messages_q1 PARTITION OF wallet.push_messages FOR VALUES IN (1);
COMMENT ON TABLE wallet.push_messages_q1 IS 'queue slot 1 of wallet.push_messages (queued and sending messages): current in turn, emptied by TRUNCATE when its turn comes again (wallet.rotate_push_queue)';
COMMENT ON COLUMN wallet.push_messages_q1.push_id IS 'message id';
COMMENT ON COLUMN wallet.push_messages_q1.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_messages_q1.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.push_messages_q1.channel IS 'delivery channel';
COMMENT ON COLUMN wallet.push_messages_q1.topic IS 'topic';
COMMENT ON COLUMN wallet.push_messages_q1.cap_group IS 'cap group the message counts against (NULL = exempt), fixed at enqueue';
COMMENT ON COLUMN wallet.push_messages_q1.service IS 'a service message (no opt-in needed, no quiet hours), fixed at enqueue';
COMMENT ON COLUMN wallet.push_messages_q1.payload IS 'what the worker sends (personal data: cleared by wallet.forget_member)';
COMMENT ON COLUMN wallet.push_messages_q1.campaign_id IS 'campaign the message belongs to (NULL = none)';
COMMENT ON COLUMN wallet.push_messages_q1.dedup_key IS 'deduplication key, unique per merchant for ever (wallet.push_dedup)';
COMMENT ON COLUMN wallet.push_messages_q1.priority IS 'higher first when claimed; a higher priority does not wait for queued messages of lower priority';
COMMENT ON COLUMN wallet.push_messages_q1.not_before IS 'earliest send time asked for';
COMMENT ON COLUMN wallet.push_messages_q1.expires_at IS 'never sent after this (NULL = no expiry)';
COMMENT ON COLUMN wallet.push_messages_q1.created_at IS 'when it was enqueued';
COMMENT ON COLUMN wallet.push_messages_q1.outcome IS 'what enqueue_push returned: queued, deferred, suppressed or duplicate';
COMMENT ON COLUMN wallet.push_messages_q1.outcome_reason IS 'why it was deferred or suppressed at enqueue (quiet_hours, frequency_cap, no_consent, ...)';
COMMENT ON COLUMN wallet.push_messages_q1.status IS 'queued (waiting for due_at), sending (claimed, leased until due_at), sent, suppressed, duplicate or dead (attempts exhausted)';
COMMENT ON COLUMN wallet.push_messages_q1.reason IS 'why of the current status (the last deferral, suppression or failure)';
COMMENT ON COLUMN wallet.push_messages_q1.due_at IS 'queued: when it may be claimed; sending: when the lease lapses';
COMMENT ON COLUMN wallet.push_messages_q1.slot_at IS 'the send time it counts against the caps at: planned (queued) or claimed (sending, sent)';
COMMENT ON COLUMN wallet.push_messages_q1.attempts IS 'times claimed';
COMMENT ON COLUMN wallet.push_messages_q1.claimed_at IS 'when last claimed';
COMMENT ON COLUMN wallet.push_messages_q1.sent_at IS 'when acknowledged as sent';
COMMENT ON COLUMN wallet.push_messages_q1.provider_message_id IS 'the provider''s id of the delivery';
COMMENT ON COLUMN wallet.push_messages_q1.last_error IS 'the last failure reported by fail_push';
COMMENT ON COLUMN wallet.push_messages_q1.finished_at IS 'when it reached sent, suppressed, duplicate or dead (retention counts from here)';
COMMENT ON COLUMN wallet.push_messages_q1.part IS 'the partition: 0, 1, 2 = the rotating queue slots (queued, sending), 3 = finished (wallet.push_messages_done)';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_messages_q1', '');
ALTER TABLE wallet.push_messages_q1 ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_messages_q1 USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_messages_q1 IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
CREATE TABLE wallet.push_messages_q2 PARTITION OF wallet.push_messages FOR VALUES IN (2);
COMMENT ON TABLE wallet.push_messages_q2 IS 'queue slot 2 of wallet.push_messages (queued and sending messages): current in turn, emptied by TRUNCATE when its turn comes again (wallet.rotate_push_queue)';
COMMENT ON COLUMN wallet.push_messages_q2.push_id IS 'message id';
COMMENT ON COLUMN wallet.push_messages_q2.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_messages_q2.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.push_messages_q2.channel IS 'delivery channel';
COMMENT ON COLUMN wallet.push_messages_q2.topic IS 'topic';
COMMENT ON COLUMN wallet.push_messages_q2.cap_group IS 'cap group the message counts against (NULL = exempt), fixed at enqueue';
COMMENT ON COLUMN wallet.push_messages_q2.service IS 'a service message (no opt-in needed, no quiet hours), fixed at enqueue';
COMMENT ON COLUMN wallet.push_messages_q2.payload IS 'what the worker sends (personal data: cleared by wallet.forget_member)';
COMMENT ON COLUMN wallet.push_messages_q2.campaign_id IS 'campaign the message belongs to (NULL = none)';
COMMENT ON COLUMN wallet.push_messages_q2.dedup_key IS 'deduplication key, unique per merchant for ever (wallet.push_dedup)';
COMMENT ON COLUMN wallet.push_messages_q2.priority IS 'higher first when claimed; a higher priority does not wait for queued messages of lower priority';
COMMENT ON COLUMN wallet.push_messages_q2.not_before IS 'earliest send time asked for';
COMMENT ON COLUMN wallet.push_messages_q2.expires_at IS 'never sent after this (NULL = no expiry)';
COMMENT ON COLUMN wallet.push_messages_q2.created_at IS 'when it was enqueued';
COMMENT ON COLUMN wallet.push_messages_q2.outcome IS 'what enqueue_push returned: queued, deferred, suppressed or duplicate';
COMMENT ON COLUMN wallet.push_messages_q2.outcome_reason IS 'why it was deferred or suppressed at enqueue (quiet_hours, frequency_cap, no_consent, ...)';
COMMENT ON COLUMN wallet.push_messages_q2.status IS 'queued (waiting for due_at), sending (claimed, leased until due_at), sent, suppressed, duplicate or dead (attempts exhausted)';
COMMENT ON COLUMN wallet.push_messages_q2.reason IS 'why of the current status (the last deferral, suppression or failure)';
COMMENT ON COLUMN wallet.push_messages_q2.due_at IS 'queued: when it may be claimed; sending: when the lease lapses';
COMMENT ON COLUMN wallet.push_messages_q2.slot_at IS 'the send time it counts against the caps at: planned (queued) or claimed (sending, sent)';
COMMENT ON COLUMN wallet.push_messages_q2.attempts IS 'times claimed';
COMMENT ON COLUMN wallet.push_messages_q2.claimed_at IS 'when last claimed';
COMMENT ON COLUMN wallet.push_messages_q2.sent_at IS 'when acknowledged as sent';
COMMENT ON COLUMN wallet.push_messages_q2.provider_message_id IS 'the provider''s id of the delivery';
COMMENT ON COLUMN wallet.push_messages_q2.last_error IS 'the last failure reported by fail_push';
COMMENT ON COLUMN wallet.push_messages_q2.finished_at IS 'when it reached sent, suppressed, duplicate or dead (retention counts from here)';
COMMENT ON COLUMN wallet.push_messages_q2.part IS 'the partition: 0, 1, 2 = the rotating queue slots (queued, sending), 3 = finished (wallet.push_messages_done)';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_messages_q2', '');
ALTER TABLE wallet.push_messages_q2 ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_messages_q2 USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_messages_q2 IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
CREATE TABLE wallet.push_messages_done PARTITION OF wallet.push_messages FOR VALUES IN (3);
COMMENT ON TABLE wallet.push_messages_done IS 'finished messages of wallet.push_messages (sent, suppressed, duplicate, dead): written once when they finish, deleted by wallet.purge_pushes after the retention';
COMMENT ON COLUMN wallet.push_messages_done.push_id IS 'message id';
COMMENT ON COLUMN wallet.push_messages_done.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_messages_done.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.push_messages_done.channel IS 'delivery channel';
COMMENT ON COLUMN wallet.push_messages_done.topic IS 'topic';
COMMENT ON COLUMN wallet.push_messages_done.cap_group IS 'cap group the message counts against (NULL = exempt), fixed at enqueue';
COMMENT ON COLUMN wallet.push_messages_done.service IS 'a service message (no opt-in needed, no quiet hours), fixed at enqueue';
COMMENT ON COLUMN wallet.push_messages_done.payload IS 'what the worker sends (personal data: cleared by wallet.forget_member)';
COMMENT ON COLUMN wallet.push_messages_done.campaign_id IS 'campaign the message belongs to (NULL = none)';
COMMENT ON COLUMN wallet.push_messages_done.dedup_key IS 'deduplication key, unique per merchant for ever (wallet.push_dedup)';
COMMENT ON COLUMN wallet.push_messages_done.priority IS 'higher first when claimed; a higher priority does not wait for queued messages of lower priority';
COMMENT ON COLUMN wallet.push_messages_done.not_before IS 'earliest send time asked for';
COMMENT ON COLUMN wallet.push_messages_done.expires_at IS 'never sent after this (NULL = no expiry)';
COMMENT ON COLUMN wallet.push_messages_done.created_at IS 'when it was enqueued';
COMMENT ON COLUMN wallet.push_messages_done.outcome IS 'what enqueue_push returned: queued, deferred, suppressed or duplicate';
COMMENT ON COLUMN wallet.push_messages_done.outcome_reason IS 'why it was deferred or suppressed at enqueue (quiet_hours, frequency_cap, no_consent, ...)';
COMMENT ON COLUMN wallet.push_messages_done.status IS 'queued (waiting for due_at), sending (claimed, leased until due_at), sent, suppressed, duplicate or dead (attempts exhausted)';
COMMENT ON COLUMN wallet.push_messages_done.reason IS 'why of the current status (the last deferral, suppression or failure)';
COMMENT ON COLUMN wallet.push_messages_done.due_at IS 'queued: when it may be claimed; sending: when the lease lapses';
COMMENT ON COLUMN wallet.push_messages_done.slot_at IS 'the send time it counts against the caps at: planned (queued) or claimed (sending, sent)';
COMMENT ON COLUMN wallet.push_messages_done.attempts IS 'times claimed';
COMMENT ON COLUMN wallet.push_messages_done.claimed_at IS 'when last claimed';
COMMENT ON COLUMN wallet.push_messages_done.sent_at IS 'when acknowledged as sent';
COMMENT ON COLUMN wallet.push_messages_done.provider_message_id IS 'the provider''s id of the delivery';
COMMENT ON COLUMN wallet.push_messages_done.last_error IS 'the last failure reported by fail_push';
COMMENT ON COLUMN wallet.push_messages_done.finished_at IS 'when it reached sent, suppressed, duplicate or dead (retention counts from here)';
COMMENT ON COLUMN wallet.push_messages_done.part IS 'the partition: 0, 1, 2 = the rotating queue slots (queued, sending), 3 = finished (wallet.push_messages_done)';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_messages_done', '');
ALTER TABLE wallet.push_messages_done ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_messages_done USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_messages_done IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

-- The rotation state, in a sequence rather than a row: read by every
-- enqueue without a lock, written by the rotation without waiting for
-- anyone (a sequence is not transactional: a rotation that rolls back after
-- setting it leaves the new slot current with its old rows, losing nothing).
-- Its value is epoch seconds of the last rotation * 4 + the current slot.
CREATE SEQUENCE wallet_internal.push_queue_slot MINVALUE 0 START 0;
COMMENT ON SEQUENCE wallet_internal.push_queue_slot IS 'rotation state of the push queue slots: (epoch seconds of the last rotation) * 4 + the current slot (0-2); set by wallet.rotate_push_queue';

CREATE TABLE wallet.push_dedup (
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    dedup_key   text NOT NULL,
    push_id     bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, dedup_key)
);
COMMENT ON TABLE wallet.push_dedup IS 'every deduplication key a merchant used, for ever (outlives the purge of its message)';
COMMENT ON COLUMN wallet.push_dedup.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_dedup.dedup_key IS 'the key';
COMMENT ON COLUMN wallet.push_dedup.push_id IS 'the message that used it first (it may have been purged since)';
COMMENT ON COLUMN wallet.push_dedup.created_at IS 'when it was first used';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_dedup', '');
ALTER TABLE wallet.push_dedup ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_dedup USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_dedup IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TABLE wallet.push_attempts (
    attempt_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    member_id   bigint NOT NULL REFERENCES wallet.members,
    push_id     bigint NOT NULL,
    claimed_at  timestamptz NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('sent', 'failed')),
    at          timestamptz NOT NULL DEFAULT now(),
    provider_message_id text,
    error       text
);
CREATE INDEX push_attempts_push_idx ON wallet.push_attempts (push_id);
CREATE INDEX push_attempts_member_idx ON wallet.push_attempts (merchant_id, member_id, claimed_at);
COMMENT ON TABLE wallet.push_attempts IS 'delivery records: every acknowledged or failed attempt (ack_push, fail_push), kept while the message is';
COMMENT ON COLUMN wallet.push_attempts.attempt_id IS 'record id';
COMMENT ON COLUMN wallet.push_attempts.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_attempts.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.push_attempts.push_id IS 'the message (wallet.push_messages)';
COMMENT ON COLUMN wallet.push_attempts.claimed_at IS 'when the attempt was claimed (the send time counted by the caps)';
COMMENT ON COLUMN wallet.push_attempts.outcome IS 'sent or failed';
COMMENT ON COLUMN wallet.push_attempts.at IS 'when the worker reported it';
COMMENT ON COLUMN wallet.push_attempts.provider_message_id IS 'the provider''s id (sent)';
COMMENT ON COLUMN wallet.push_attempts.error IS 'the error reported (failed)';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_attempts', '');
ALTER TABLE wallet.push_attempts ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_attempts USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_attempts IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.push_attempts', 'attempt_id'), '');

CREATE VIEW wallet.push_dead_letters WITH (security_invoker = true) AS
SELECT m.push_id, m.merchant_id, m.member_id, m.channel, m.topic, m.campaign_id, m.attempts, m.last_error, m.finished_at
  FROM wallet.push_messages m
 WHERE m.status = 'dead';
COMMENT ON VIEW wallet.push_dead_letters IS 'messages whose delivery failed for good (attempts exhausted or not retryable): wallet.requeue_push sends one again';
COMMENT ON COLUMN wallet.push_dead_letters.push_id IS 'message id';
COMMENT ON COLUMN wallet.push_dead_letters.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_dead_letters.member_id IS 'the member';
COMMENT ON COLUMN wallet.push_dead_letters.channel IS 'delivery channel';
COMMENT ON COLUMN wallet.push_dead_letters.topic IS 'topic';
COMMENT ON COLUMN wallet.push_dead_letters.campaign_id IS 'campaign (NULL = none)';
COMMENT ON COLUMN wallet.push_dead_letters.attempts IS 'attempts made';
COMMENT ON COLUMN wallet.push_dead_letters.last_error IS 'the last error reported';
COMMENT ON COLUMN wallet.push_dead_letters.finished_at IS 'when it was given up';

------------------------------------------------------------------------------
-- Helpers
------------------------------------------------------------------------------

-- Channel and topic names: short identifiers (they name NOTIFY channels).
CREATE FUNCTION wallet_internal.push_check_name(what text, value text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be null', what
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Every message and consent names its channel and topic.';
    END IF;
    IF value !~ '^[a-z][a-z0-9_]{0,39}$' THEN
        RAISE EXCEPTION '% "%" is not a valid name', what, left(value, 64)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Channels and topics are lower-case identifiers of at most 40 characters (letters, digits, underscore), such as push or marketing.';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_check_name(text, text) IS 'internal: raises 22004 for a NULL channel or topic, 22023 for one that is not a lower-case identifier of at most 40 characters';

CREATE FUNCTION wallet_internal.push_check_quiet(quiet_start time, quiet_end time) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF (quiet_start IS NULL) <> (quiet_end IS NULL) OR quiet_start = quiet_end THEN
        RAISE EXCEPTION 'quiet hours need a start and a different end'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Quiet hours run from quiet_start to quiet_end in local time (over midnight when the end is earlier); both NULL means none.';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_check_quiet(time, time) IS 'internal: raises 22023 unless quiet hours are both NULL or a start and a different end';

-- The member of a reference at a merchant, or NULL (an unknown member has
-- given no consent: nothing is created for it).
CREATE FUNCTION wallet_internal.push_member(merchant_id bigint, member_ref text) RETURNS wallet.members
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.members;
BEGIN
    PERFORM wallet_internal.member_check(merchant_id, member_ref);
    SELECT * INTO r FROM wallet.members m WHERE m.merchant_id = $1 AND m.member_ref = $2;
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_member(bigint, text) IS 'internal: the member row of member_ref at the merchant (NULL when there is none), after the checks of member_check';

-- One member's pushes are decided one at a time: enqueue, consent changes
-- and claims take this lock (a transaction lock on the member id).
CREATE FUNCTION wallet_internal.push_lock_member(member_id bigint, wait boolean) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF wait THEN
        PERFORM pg_advisory_xact_lock(2001234512, (member_id % 2147483647)::int);
        RETURN true;
    END IF;
    RETURN pg_try_advisory_xact_lock(2001234512, (member_id % 2147483647)::int);
END
$$;
COMMENT ON FUNCTION wallet_internal.push_lock_member(bigint, boolean) IS 'internal: takes the transaction advisory lock serialising a member''s push decisions (wait = false: only if free, returns whether taken)';

-- Whether local time t is within quiet hours start..end, and when they end.
CREATE FUNCTION wallet_internal.push_quiet_until(t timestamptz, tz text, quiet_start time, quiet_end time) RETURNS timestamptz
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    lt timestamp;
    lo time;
    e timestamptz;
BEGIN
    IF quiet_start IS NULL THEN
        RETURN NULL;
    END IF;
    lt := t AT TIME ZONE tz;
    lo := lt::time;
    IF (quiet_start < quiet_end AND lo >= quiet_start AND lo < quiet_end)
       OR (quiet_start > quiet_end AND (lo >= quiet_start OR lo < quiet_end)) THEN
        -- the next local quiet_end after t (a date's end that falls into a DST gap moves on by the gap)
        e := (lt::date + quiet_end) AT TIME ZONE tz;
        IF e <= t THEN
            e := ((lt::date + 1) + quiet_end) AT TIME ZONE tz;
        END IF;
        RETURN e;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_quiet_until(timestamptz, text, time, time) IS 'internal: when t (in time zone tz) lies in the quiet hours start..end (over midnight when end < start), the time they end; else NULL';

-- The earliest time at or after t when the member may receive a message
-- of the channel and cap group: outside quiet hours (not for service
-- messages) and under every cap (the merchant's, and the member's day and
-- week caps).  Counted: the member's messages of that channel and group
-- that are sending or sent at their claim time, and (planning = true, at
-- enqueue) those queued at their planned slot with a priority at least
-- priority.  Returns the time (NULL: dropped by a cap with policy drop) and
-- the reason of the first move (NULL: t itself is fine).
CREATE FUNCTION wallet_internal.push_slot(merchant_id bigint, member_id bigint, channel text, cap_group text,
        service boolean, priority int, t timestamptz, planning boolean, exclude bigint,
        OUT slot timestamptz, OUT reason text)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    s wallet.push_settings;
    pr wallet.push_preferences;
    tz text;
    qs time;
    qe time;
    c record;
    ws timestamptz;
    we timestamptz;
    n bigint;
    q timestamptz;
    moved boolean;
    i int;
BEGIN
    SELECT * INTO s FROM wallet.push_settings x WHERE x.merchant_id = $1;
    SELECT * INTO pr FROM wallet.push_preferences x WHERE x.member_id = $2;
    SELECT coalesce(m.time_zone, s.time_zone, 'UTC') INTO tz FROM wallet.members m WHERE m.member_id = $2;
    IF pr.quiet_start IS NOT NULL THEN
        qs := pr.quiet_start; qe := pr.quiet_end;
    ELSIF s.merchant_id IS NULL THEN
        qs := '22:00'; qe := '08:00';
    ELSE
        qs := s.quiet_start; qe := s.quiet_end;
    END IF;
    slot := t;
    FOR i IN 1 .. 50 LOOP
        moved := false;
        IF NOT service THEN
            q := wallet_internal.push_quiet_until(slot, tz, qs, qe);
            IF q IS NOT NULL THEN
                slot := q; reason := coalesce(reason, 'quiet_hours');
            END IF;
        END IF;
        IF cap_group IS NOT NULL THEN
            FOR c IN SELECT k.period, k.max_count, k.window_size, k.policy FROM wallet.push_caps k
                      WHERE k.merchant_id = $1 AND k.channel = $3 AND k.cap_group = $4
                     UNION ALL
                     SELECT 'day', pr.max_per_day, NULL::interval, 'defer' WHERE pr.max_per_day IS NOT NULL
                     UNION ALL
                     SELECT 'week', pr.max_per_week, NULL::interval, 'defer' WHERE pr.max_per_week IS NOT NULL LOOP
                IF c.period = 'rolling' THEN
                    ws := slot - c.window_size; we := slot;
                ELSE
                    ws := date_trunc(c.period, slot AT TIME ZONE tz) AT TIME ZONE tz;
                    we := (date_trunc(c.period, slot AT TIME ZONE tz) + CASE c.period WHEN 'day' THEN interval '1 day' ELSE interval '7 days' END) AT TIME ZONE tz;
                END IF;
                -- rolling: (t - window, t]; calendar: [start, end) of the local day or week.  At
                -- claim (not planning) a rolling window counts every later claim too: a claim
                -- that started earlier but took the member's lock later must see it
                SELECT count(*) INTO n FROM wallet.push_messages x
                 WHERE x.member_id = $2 AND x.status IN ('sending', 'sent')
                   AND x.slot_at >= ws AND (x.slot_at <= we OR (c.period = 'rolling' AND NOT planning))
                   AND (x.slot_at > ws OR c.period <> 'rolling') AND (x.slot_at < we OR c.period = 'rolling')
                   AND x.channel = $3 AND x.cap_group = $4 AND x.push_id <> coalesce(exclude, 0);
                IF planning THEN
                    n := n + (SELECT count(*) FROM wallet.push_messages x
                               WHERE x.member_id = $2 AND x.status = 'queued'
                                 AND x.slot_at >= ws AND x.slot_at <= we
                                 AND (x.slot_at > ws OR c.period <> 'rolling') AND (x.slot_at < we OR c.period = 'rolling')
                                 AND x.channel = $3 AND x.cap_group = $4 AND x.push_id <> coalesce(exclude, 0)
                                 AND x.priority >= $6);
                END IF;
                IF n >= c.max_count THEN
                    IF c.policy = 'drop' THEN
                        slot := NULL; reason := 'frequency_cap';
                        RETURN;
                    END IF;
                    IF c.period = 'rolling' THEN
                        -- when the (n - max + 1)-th oldest counted message leaves the window
                        SELECT x.slot_at + c.window_size INTO slot FROM wallet.push_messages x
                         WHERE x.member_id = $2 AND x.status IN ('queued', 'sending', 'sent')
                           AND x.slot_at > ws AND (x.slot_at <= we OR NOT planning)
                           AND x.channel = $3 AND x.cap_group = $4 AND x.push_id <> coalesce(exclude, 0)
                           AND (x.status <> 'queued' OR (planning AND x.priority >= $6))
                         ORDER BY x.slot_at OFFSET n - c.max_count LIMIT 1;
                    ELSE
                        slot := we;
                    END IF;
                    reason := coalesce(reason, 'frequency_cap');
                    moved := true;
                    EXIT;
                END IF;
            END LOOP;
        END IF;
        IF NOT moved AND (service OR wallet_internal.push_quiet_until(slot, tz, qs, qe) IS NULL) THEN
            RETURN;
        END IF;
    END LOOP;
    RETURN;     -- 50 moves: the slot reached so far (checked again at claim)
END
$$;
COMMENT ON FUNCTION wallet_internal.push_slot(bigint, bigint, text, text, boolean, int, timestamptz, boolean, bigint) IS 'internal: the earliest time at or after t outside the member''s quiet hours and under every cap of the channel and cap group (NULL when a cap with policy drop is reached), with the reason of the first move';

-- Whether the member may get the topic on the channel: NULL if yes, else the reason.
CREATE FUNCTION wallet_internal.push_refusal(merchant_id bigint, member_id bigint, channel text, topic text, service boolean)
    RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    g boolean;
    chosen text[];
BEGIN
    IF (SELECT m.status FROM wallet.members m WHERE m.member_id = $2) = 'forgotten' THEN
        RETURN 'member_forgotten';
    END IF;
    SELECT c.granted INTO g FROM wallet.push_consents c
     WHERE c.merchant_id = $1 AND c.member_id = $2 AND c.channel = $3 AND c.topic = $4;
    IF service THEN
        RETURN CASE WHEN g IS FALSE THEN 'muted' END;
    END IF;
    IF g IS NULL THEN
        RETURN 'no_consent';
    ELSIF NOT g THEN
        RETURN 'consent_withdrawn';
    END IF;
    SELECT p.topics INTO chosen FROM wallet.push_preferences p WHERE p.member_id = $2;
    IF chosen IS NOT NULL AND NOT topic = ANY (chosen) THEN
        RETURN 'topic_not_chosen';
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_refusal(bigint, bigint, text, text, boolean) IS 'internal: NULL when the member may get the topic on the channel, else why not (member_forgotten, no_consent, consent_withdrawn, topic_not_chosen, muted)';

-- Wake-up of the workers of a channel: NOTIFY wallet_push_<channel>, at
-- most once per channel per session every 100 ms.  NOTIFY takes a global
-- lock at commit; throttled, a burst of enqueues costs a handful of them.
-- A worker polls as well (a throttled wake-up is late by at most its poll).
CREATE FUNCTION wallet_internal.push_notify(channel text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    k text := 'wallet_push.notified_' || channel;
    last text := current_setting(k, true);
    now_ms bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
BEGIN
    IF last IS NULL OR last = '' OR now_ms - last::bigint >= 100 THEN
        PERFORM pg_notify('wallet_push_' || channel, '');
        PERFORM set_config(k, now_ms::text, false);
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_notify(text) IS 'internal: NOTIFY wallet_push_<channel>, at most once per channel every 100 ms in a session';

-- The decision of enqueue_push for one member, recorded as one row.
CREATE FUNCTION wallet_internal.push_enqueue(merchant_id bigint, member_id bigint, channel text, topic text,
        payload jsonb, campaign_id bigint, dedup_key text, not_before timestamptz, expires_at timestamptz, priority int,
        lock boolean, OUT push_id bigint, OUT status text, OUT reason text, OUT eligible_at timestamptz)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_variable
DECLARE
    _m bigint := merchant_id;
    _member bigint := member_id;
    _topic text := topic;
    _channel text := channel;
    svc boolean;
    grp text;
    m record;
    s record;
    t timestamptz := greatest(not_before, now());
BEGIN
    IF lock THEN
        PERFORM pg_advisory_xact_lock(2001234512, (_member % 2147483647)::int);   -- as push_lock_member
    END IF;
    push_id := nextval('wallet.push_messages_push_id_seq'::regclass);
    IF dedup_key IS NOT NULL THEN
        -- a concurrent first use of the key: waits for it, then finds it
        INSERT INTO wallet.push_dedup AS d (merchant_id, dedup_key, push_id) VALUES (_m, dedup_key, push_id)
            ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            status := 'duplicate'; reason := 'dedup_key';
        END IF;
    END IF;
    -- what the decision needs, in one query: the topic's kind (push_topic),
    -- the member's consent and preferences (push_refusal), quiet hours, and
    -- whether a cap is reached at t (counted as push_slot counts when
    -- planning); only quiet hours or a reached cap need push_slot
    SELECT coalesce(tp.service, _topic = 'service') AS service,
           CASE WHEN tp.merchant_id IS NOT NULL THEN tp.cap_group WHEN _topic = 'service' THEN NULL ELSE 'marketing' END AS cap_group,
           w.status = 'forgotten' AS forgotten, c.granted, p.topics, p.max_per_day, p.max_per_week,
           coalesce(w.time_zone, st.time_zone, 'UTC') AS tz,
           CASE WHEN p.quiet_start IS NOT NULL THEN p.quiet_start WHEN st.merchant_id IS NULL THEN time '22:00' ELSE st.quiet_start END AS qs,
           CASE WHEN p.quiet_start IS NOT NULL THEN p.quiet_end WHEN st.merchant_id IS NULL THEN time '08:00' ELSE st.quiet_end END AS qe
      INTO m
      FROM wallet.members w
      LEFT JOIN wallet.push_topics tp ON tp.merchant_id = _m AND tp.topic = _topic
      LEFT JOIN wallet.push_consents c ON c.merchant_id = _m AND c.member_id = _member AND c.channel = _channel AND c.topic = _topic
      LEFT JOIN wallet.push_preferences p ON p.member_id = _member
      LEFT JOIN wallet.push_settings st ON st.merchant_id = _m
     WHERE w.member_id = _member;
    svc := m.service; grp := m.cap_group;
    IF status IS NULL THEN
        reason := CASE WHEN m.forgotten THEN 'member_forgotten'
                       WHEN svc THEN CASE WHEN m.granted IS FALSE THEN 'muted' END
                       WHEN m.granted IS NULL THEN 'no_consent'
                       WHEN NOT m.granted THEN 'consent_withdrawn'
                       WHEN m.topics IS NOT NULL AND NOT _topic = ANY (m.topics) THEN 'topic_not_chosen' END;
        IF reason IS NOT NULL THEN
            status := 'suppressed';
        ELSIF expires_at IS NOT NULL AND expires_at <= t THEN
            status := 'suppressed'; reason := 'expired';
        ELSIF (svc OR wallet_internal.push_quiet_until(t, m.tz, m.qs, m.qe) IS NULL)
              AND (grp IS NULL OR NOT EXISTS (
                  SELECT FROM (SELECT k.period, k.max_count, k.window_size FROM wallet.push_caps k
                                WHERE k.merchant_id = _m AND k.channel = _channel AND k.cap_group = grp
                               UNION ALL
                               SELECT 'day', m.max_per_day, NULL::interval WHERE m.max_per_day IS NOT NULL
                               UNION ALL
                               SELECT 'week', m.max_per_week, NULL::interval WHERE m.max_per_week IS NOT NULL) k
                  CROSS JOIN LATERAL (
                      SELECT CASE WHEN k.period = 'rolling' THEN t - k.window_size
                                  ELSE date_trunc(k.period, t AT TIME ZONE m.tz) AT TIME ZONE m.tz END AS ws,
                             CASE WHEN k.period = 'rolling' THEN t
                                  ELSE (date_trunc(k.period, t AT TIME ZONE m.tz)
                                        + CASE k.period WHEN 'day' THEN interval '1 day' ELSE interval '7 days' END) AT TIME ZONE m.tz END AS we) b
                  WHERE (SELECT count(*) FROM wallet.push_messages y
                          WHERE y.member_id = _member AND y.channel = _channel AND y.cap_group = grp
                            AND (y.status IN ('sending', 'sent') OR (y.status = 'queued' AND y.priority >= push_enqueue.priority))
                            AND y.slot_at >= b.ws AND y.slot_at <= b.we
                            AND (y.slot_at > b.ws OR k.period <> 'rolling') AND (y.slot_at < b.we OR k.period = 'rolling')) >= k.max_count)) THEN
            -- t itself is fine
            status := 'queued'; eligible_at := t;
        ELSE
            s := wallet_internal.push_slot(_m, _member, _channel, grp, svc, priority, t, true, NULL);
            IF s.slot IS NULL THEN
                status := 'suppressed'; reason := s.reason;
            ELSIF expires_at IS NOT NULL AND s.slot >= expires_at THEN
                status := 'suppressed'; reason := 'expires_before_slot';
            ELSE
                eligible_at := s.slot;
                status := CASE WHEN s.reason IS NULL THEN 'queued' ELSE 'deferred' END;
                reason := s.reason;
            END IF;
        END IF;
    END IF;
    INSERT INTO wallet.push_messages (push_id, merchant_id, member_id, channel, topic, cap_group, service, payload, campaign_id,
                                      dedup_key, priority, not_before, expires_at, outcome, outcome_reason, status, reason,
                                      due_at, slot_at, finished_at, part)
    OVERRIDING SYSTEM VALUE
    VALUES (push_id, _m, _member, _channel, _topic, grp, svc, payload, campaign_id, dedup_key, priority, not_before, expires_at,
            status, reason, CASE WHEN status IN ('queued', 'deferred') THEN 'queued' ELSE status END, reason,
            eligible_at, eligible_at, CASE WHEN status IN ('queued', 'deferred') THEN NULL ELSE now() END,
            CASE WHEN status IN ('queued', 'deferred') THEN (SELECT (q.last_value % 4)::smallint FROM wallet_internal.push_queue_slot q) ELSE 3 END);
    IF status = 'queued' THEN
        PERFORM wallet_internal.push_notify(_channel);
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_enqueue(bigint, bigint, text, text, jsonb, bigint, text, timestamptz, timestamptz, int, boolean) IS 'internal: decides and records one message for one member (queued, deferred, suppressed or duplicate, with the reason), optionally under the member''s lock';

-- A message named by id, locked, when the caller acts for its merchant;
-- else WL701 exactly as for an id that does not exist.
CREATE FUNCTION wallet_internal.push_lock(push_id bigint) RETURNS wallet.push_messages
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.push_messages;
    i int;
BEGIN
    IF push_id IS NULL THEN
        RAISE EXCEPTION 'push_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A message is named by the push_id enqueue_push or claim_pushes returned.';
    END IF;
    -- a row moved meanwhile (finished, or carried to another slot by the
    -- rotation) is gone from this statement's view once its lock is free:
    -- looked up again, it is found where it went
    FOR i IN 1 .. 3 LOOP
        SELECT * INTO r FROM wallet.push_messages x WHERE x.push_id = $1 FOR UPDATE;
        EXIT WHEN FOUND;
    END LOOP;
    IF r.push_id IS NULL OR NOT wallet.acts_for(r.merchant_id) THEN
        RAISE EXCEPTION 'push % does not exist', push_id
            USING ERRCODE = 'WL701', DETAIL = 'Messages are named by the push_id enqueue_push returned; finished ones are purged after the retention.';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_lock(bigint) IS 'internal: the message row, locked; 22004 for a NULL id, WL701 for one that does not exist or is another merchant''s';

-- The queue slot new messages go to (wallet_internal.push_queue_slot).
CREATE FUNCTION wallet_internal.push_current_slot() RETURNS smallint
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN (SELECT (s.last_value % 4)::smallint FROM wallet_internal.push_queue_slot s);
END
$$;
COMMENT ON FUNCTION wallet_internal.push_current_slot() IS 'internal: the current queue slot (0-2) of wallet.push_messages, where new and requeued messages are written';

-- A message leaves its partition as a delete and an insert, never as an
-- UPDATE of part: a row moved by UPDATE makes a concurrent lock of it fail
-- (40001) where a deleted one is just skipped (claims) or looked up again
-- (push_lock).  r carries the new values; it is written into partition to.
CREATE FUNCTION wallet_internal.push_move(r wallet.push_messages, "to" smallint) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    was smallint := r.part;
BEGIN
    DELETE FROM wallet.push_messages x WHERE x.push_id = r.push_id AND x.part = was;
    r.part := "to";
    INSERT INTO wallet.push_messages OVERRIDING SYSTEM VALUE VALUES (r.*);
END
$$;
COMMENT ON FUNCTION wallet_internal.push_move(wallet.push_messages, smallint) IS 'internal: moves a message (locked by the caller) to partition "to" of wallet.push_messages with the values of r, as a delete and an insert';

-- Finishes queued or sending messages at once (a withdrawal, an erasure):
-- deleted from their queue slots, written into push_messages_done as
-- status with the reason (reason_service for service messages, if given).
CREATE FUNCTION wallet_internal.push_finish(ids bigint[], status text, reason text, reason_service text) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n bigint;
BEGIN
    WITH d AS (
        DELETE FROM wallet.push_messages x WHERE x.push_id = ANY (ids) AND x.part < 3 RETURNING x.*)
    INSERT INTO wallet.push_messages OVERRIDING SYSTEM VALUE
    SELECT d.push_id, d.merchant_id, d.member_id, d.channel, d.topic, d.cap_group, d.service, d.payload, d.campaign_id,
           d.dedup_key, d.priority, d.not_before, d.expires_at, d.created_at, d.outcome, d.outcome_reason,
           push_finish.status, CASE WHEN d.service AND reason_service IS NOT NULL THEN reason_service ELSE push_finish.reason END,
           NULL, d.slot_at, d.attempts, d.claimed_at, d.sent_at, d.provider_message_id, d.last_error, now(), 3
      FROM d;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_finish(bigint[], text, text, text) IS 'internal: moves the queued or sending messages of ids to wallet.push_messages_done with status and reason (reason_service for service messages when given); returns how many';

CREATE FUNCTION wallet_internal.push_not_sending(r wallet.push_messages) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RAISE EXCEPTION 'push % is not being sent', r.push_id
        USING ERRCODE = 'WL702',
              DETAIL = format('The message is %s%s; only a claimed message can be acknowledged, failed or have its lease extended.',
                              r.status, coalesce(' (' || r.reason || ')', ''));
END
$$;
COMMENT ON FUNCTION wallet_internal.push_not_sending(wallet.push_messages) IS 'internal: raises WL702 for a message that is not claimed (status sending)';

CREATE FUNCTION wallet_internal.push_check_lease(lease interval) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF lease IS NULL THEN
        RAISE EXCEPTION 'lease must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A claimed message is leased to its worker for a while.';
    END IF;
    IF lease <= interval '0' OR lease > interval '1 day' THEN
        RAISE EXCEPTION 'lease must be positive and at most a day'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'When the lease lapses the message can be claimed again.';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_check_lease(interval) IS 'internal: raises 22004 for a NULL lease, 22023 unless it is positive and at most a day';

------------------------------------------------------------------------------
-- Settings API (wallet_admin)
------------------------------------------------------------------------------

CREATE FUNCTION wallet.set_push_settings(merchant_id bigint, quiet_start time DEFAULT '22:00', quiet_end time DEFAULT '08:00',
        time_zone text DEFAULT 'UTC', max_attempts int DEFAULT 5, backoff interval DEFAULT '30 seconds',
        retention interval DEFAULT '90 days') RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.check_merchant(merchant_id);
    PERFORM wallet_internal.push_check_quiet(quiet_start, quiet_end);
    IF time_zone IS NULL OR max_attempts IS NULL OR backoff IS NULL OR retention IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN time_zone IS NULL THEN 'time_zone' WHEN max_attempts IS NULL THEN 'max_attempts'
                                                   WHEN backoff IS NULL THEN 'backoff' ELSE 'retention' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Every setting has a value; call without it for the default.';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_timezone_names z WHERE z.name = set_push_settings.time_zone) THEN
        RAISE EXCEPTION 'unknown time zone "%"', left(time_zone, 64)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A time zone is an IANA name such as Europe/Zurich (see pg_timezone_names).';
    END IF;
    IF max_attempts NOT BETWEEN 1 AND 100 OR backoff <= interval '0' OR retention <= interval '0' THEN
        RAISE EXCEPTION 'max_attempts, backoff or retention out of range'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'max_attempts is 1 to 100; backoff and retention are positive.';
    END IF;
    INSERT INTO wallet.push_settings AS s (merchant_id, quiet_start, quiet_end, time_zone, max_attempts, backoff, retention)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT ON CONSTRAINT push_settings_pkey DO UPDATE
       SET quiet_start = excluded.quiet_start, quiet_end = excluded.quiet_end, time_zone = excluded.time_zone,
           max_attempts = excluded.max_attempts, backoff = excluded.backoff, retention = excluded.retention, updated_at = now();
END
$$;
COMMENT ON FUNCTION wallet.set_push_settings(bigint, time, time, text, int, interval, interval) IS 'sets a merchant''s push settings: default quiet hours (NULL, NULL: none) and time zone, delivery attempts, backoff and retention';

CREATE FUNCTION wallet.set_push_topic(merchant_id bigint, topic text, service boolean, cap_group text DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.check_merchant(merchant_id);
    PERFORM wallet_internal.push_check_name('topic', topic);
    IF service IS NULL THEN
        RAISE EXCEPTION 'service must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A topic is either a service topic or a marketing topic.';
    END IF;
    IF cap_group IS NOT NULL THEN
        PERFORM wallet_internal.push_check_name('cap_group', cap_group);
    END IF;
    INSERT INTO wallet.push_topics AS t (merchant_id, topic, service, cap_group) VALUES ($1, $2, $3, $4)
    ON CONFLICT ON CONSTRAINT push_topics_pkey DO UPDATE SET service = excluded.service, cap_group = excluded.cap_group;
END
$$;
COMMENT ON FUNCTION wallet.set_push_topic(bigint, text, boolean, text) IS 'declares a topic: service (no opt-in, can be muted, no quiet hours) or marketing (explicit opt-in), and the cap group it counts against (NULL: exempt from caps); applies to messages enqueued from then on';

CREATE FUNCTION wallet.set_push_cap(merchant_id bigint, channel text, cap_group text, period text, max_count int,
        window_size interval DEFAULT NULL, policy text DEFAULT 'defer') RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.check_merchant(merchant_id);
    PERFORM wallet_internal.push_check_name('channel', channel);
    PERFORM wallet_internal.push_check_name('cap_group', cap_group);
    IF period IS NULL OR policy IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN period IS NULL THEN 'period' ELSE 'policy' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A cap counts per rolling window, day or week, and defers or drops.';
    END IF;
    IF period NOT IN ('rolling', 'day', 'week') OR policy NOT IN ('defer', 'drop')
       OR (period = 'rolling') <> (window_size IS NOT NULL) OR window_size <= interval '0' OR max_count < 1 THEN
        RAISE EXCEPTION 'invalid cap'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'period is rolling (with a positive window_size), day or week (without); policy defer or drop; max_count positive (NULL removes the cap).';
    END IF;
    IF max_count IS NULL THEN
        DELETE FROM wallet.push_caps k WHERE k.merchant_id = $1 AND k.channel = $2 AND k.cap_group = $3 AND k.period = $4;
        RETURN;
    END IF;
    INSERT INTO wallet.push_caps AS k (merchant_id, channel, cap_group, period, max_count, window_size, policy)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT ON CONSTRAINT push_caps_pkey DO UPDATE
       SET max_count = excluded.max_count, window_size = excluded.window_size, policy = excluded.policy;
END
$$;
COMMENT ON FUNCTION wallet.set_push_cap(bigint, text, text, text, int, interval, text) IS 'sets (max_count NULL: removes) a frequency cap: at most max_count messages of a cap group on a channel per rolling window_size, local calendar day or week; over it a message is deferred to the first allowed slot or dropped';

------------------------------------------------------------------------------
-- Consent and preferences API (wallet_app)
------------------------------------------------------------------------------

CREATE FUNCTION wallet.record_consent(merchant_id bigint, member_ref text, channel text, topic text, granted boolean,
        source text, policy_version text DEFAULT NULL, device text DEFAULT NULL, at timestamptz DEFAULT now()) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_variable
DECLARE
    _m bigint := merchant_id;
    member bigint;
    id bigint;
BEGIN
    PERFORM wallet_internal.member_check(_m, member_ref);
    PERFORM wallet_internal.push_check_name('channel', channel);
    PERFORM wallet_internal.push_check_name('topic', topic);
    IF granted IS NULL OR source IS NULL OR at IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN granted IS NULL THEN 'granted' WHEN source IS NULL THEN 'source' ELSE 'at' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Consent evidence says what was decided, when and where.';
    END IF;
    IF btrim(source) = '' OR length(source) > 200 OR length(policy_version) > 200 OR length(device) > 200
       OR btrim(policy_version) = '' OR btrim(device) = '' THEN
        RAISE EXCEPTION 'source, policy_version or device blank or longer than 200 characters'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Consent evidence texts are non-blank and at most 200 characters.';
    END IF;
    member := wallet_internal.member_ensure(_m, member_ref);
    PERFORM wallet_internal.push_lock_member(member, true);
    INSERT INTO wallet.push_consent_log AS l (merchant_id, member_id, channel, topic, granted, at, source, policy_version, device)
    VALUES (_m, member, channel, topic, granted, at, source, policy_version, device)
    RETURNING l.consent_id INTO id;
    -- the state is the latest evidence by when it was given (late evidence of an earlier decision changes nothing)
    INSERT INTO wallet.push_consents AS c (merchant_id, member_id, channel, topic, granted, at, consent_id)
    VALUES (_m, member, channel, topic, granted, at, id)
    ON CONFLICT ON CONSTRAINT push_consents_pkey DO UPDATE
       SET granted = excluded.granted, at = excluded.at, consent_id = excluded.consent_id
     WHERE c.at <= excluded.at;
    -- a withdrawal takes effect at once, for queued messages too
    IF NOT (SELECT c.granted FROM wallet.push_consents c
             WHERE c.merchant_id = _m AND c.member_id = member AND c.channel = record_consent.channel AND c.topic = record_consent.topic) THEN
        PERFORM wallet_internal.push_finish(ARRAY(
                    SELECT x.push_id FROM wallet.push_messages x
                     WHERE x.member_id = member AND x.part < 3 AND x.status = 'queued'
                       AND x.channel = record_consent.channel AND x.topic = record_consent.topic),
                'suppressed', 'consent_withdrawn', 'muted');
    END IF;
    RETURN id;
END
$$;
COMMENT ON FUNCTION wallet.record_consent(bigint, text, text, text, boolean, text, text, text, timestamptz) IS 'records evidence of a member granting or withdrawing consent to a topic on a channel (source, policy version, device); the current state follows the latest evidence; a withdrawal suppresses the queued messages of that channel and topic at once; returns the evidence id';

CREATE FUNCTION wallet.set_push_preferences(merchant_id bigint, member_ref text, quiet_start time DEFAULT NULL,
        quiet_end time DEFAULT NULL, topics text[] DEFAULT NULL, max_per_day int DEFAULT NULL, max_per_week int DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_variable
DECLARE
    _m bigint := merchant_id;
    member bigint;
    t text;
BEGIN
    PERFORM wallet_internal.member_check(_m, member_ref);
    PERFORM wallet_internal.push_check_quiet(quiet_start, quiet_end);
    FOREACH t IN ARRAY coalesce(topics, '{}') LOOP
        PERFORM wallet_internal.push_check_name('topic', t);
    END LOOP;
    IF max_per_day < 0 OR max_per_week < 0 THEN
        RAISE EXCEPTION 'caps must not be negative'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A member''s cap is a count of messages per day or week (NULL: none).';
    END IF;
    member := wallet_internal.member_ensure(_m, member_ref);
    PERFORM wallet_internal.push_lock_member(member, true);
    INSERT INTO wallet.push_preferences AS p (merchant_id, member_id, quiet_start, quiet_end, topics, max_per_day, max_per_week)
    VALUES (_m, member, quiet_start, quiet_end, topics, max_per_day, max_per_week)
    ON CONFLICT ON CONSTRAINT push_preferences_pkey DO UPDATE
       SET quiet_start = excluded.quiet_start, quiet_end = excluded.quiet_end, topics = excluded.topics,
           max_per_day = excluded.max_per_day, max_per_week = excluded.max_per_week, updated_at = now();
END
$$;
COMMENT ON FUNCTION wallet.set_push_preferences(bigint, text, time, time, text[], int, int) IS 'sets a member''s own preferences (all of them; NULL: none of its own): quiet hours, the marketing topics chosen, caps per local day and week on every capped group (they only lower the merchant''s)';

------------------------------------------------------------------------------
-- Enqueue (wallet_app)
------------------------------------------------------------------------------

CREATE FUNCTION wallet_internal.push_check_message(merchant_id bigint, channel text, topic text, payload jsonb,
        campaign_id bigint, dedup_key text, not_before timestamptz, priority int) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.push_check_name('channel', channel);
    PERFORM wallet_internal.push_check_name('topic', topic);
    IF payload IS NULL OR not_before IS NULL OR priority IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN payload IS NULL THEN 'payload' WHEN not_before IS NULL THEN 'not_before' ELSE 'priority' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A message has a payload, an earliest send time and a priority (defaults: now(), 0).';
    END IF;
    IF jsonb_typeof(payload) <> 'object' OR length(payload::text) > 65536 THEN
        RAISE EXCEPTION 'payload must be a json object of at most 64 kB'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The payload is what the worker sends, e.g. {"title": ..., "body": ...}.';
    END IF;
    IF btrim(dedup_key) = '' OR length(dedup_key) > 200 THEN
        RAISE EXCEPTION 'dedup_key must not be %', CASE WHEN btrim(dedup_key) = '' THEN 'blank' ELSE 'longer than 200 characters' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A deduplication key is a non-blank text of at most 200 characters (NULL: none).';
    END IF;
    IF campaign_id IS NOT NULL
       AND NOT EXISTS (SELECT FROM wallet.campaigns c WHERE c.campaign_id = $5 AND c.merchant_id = $1 AND wallet.acts_for(c.merchant_id)) THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'WL101', DETAIL = 'A message belongs to a campaign of its merchant, or to none.';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_check_message(bigint, text, text, jsonb, bigint, text, timestamptz, int) IS 'internal: the argument checks of enqueue_push (22004, 22023, WL101 for a campaign that is not the merchant''s)';

CREATE FUNCTION wallet.enqueue_push(merchant_id bigint, member_ref text, channel text, topic text, payload jsonb,
        campaign_id bigint DEFAULT NULL, dedup_key text DEFAULT NULL, not_before timestamptz DEFAULT now(),
        expires_at timestamptz DEFAULT NULL, priority int DEFAULT 0,
        OUT push_id bigint, OUT status text, OUT reason text, OUT eligible_at timestamptz)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r record;
BEGIN
    PERFORM wallet_internal.member_check($1, $2);
    PERFORM wallet_internal.push_check_message($1, $3, $4, $5, $6, $7, $8, $10);
    r := wallet_internal.push_enqueue($1, wallet_internal.member_ensure($1, $2), $3, $4, $5, $6, $7, $8, $9, $10, true);
    push_id := r.push_id; status := r.status; reason := r.reason; eligible_at := r.eligible_at;
END
$$;
COMMENT ON FUNCTION wallet.enqueue_push(bigint, text, text, text, jsonb, bigint, text, timestamptz, timestamptz, int) IS 'enqueues a message for a member: queued (eligible now), deferred (quiet_hours or frequency_cap, with the time it becomes eligible), suppressed (no_consent, consent_withdrawn, topic_not_chosen, muted, member_forgotten, expired, expires_before_slot, frequency_cap with policy drop) or duplicate (dedup_key used before by the merchant); every outcome is recorded in wallet.push_messages';

-- A campaign's audience in one call: every active member (member_refs
-- NULL) or the members named.  The members are read by a cursor (streamed,
-- never all in memory) and each goes through enqueue's decision; the
-- member locks are not taken (a transaction would hold one per member): the
-- claim-time check under the lock keeps the caps.  local_at, when given,
-- is each member's earliest send time in the member's own time zone.
CREATE FUNCTION wallet_internal.push_audience(merchant_id bigint, member_refs text[], channel text, topic text, payload jsonb,
        campaign_id bigint, dedup_key text, not_before timestamptz, local_at timestamp, expires_at timestamptz, priority int)
    RETURNS TABLE (status text, reason text, messages bigint)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_variable
DECLARE
    _m bigint := merchant_id;
    mem record;
    r record;
    counts jsonb := '{}';
    k text;
    tz text := coalesce((SELECT s.time_zone FROM wallet.push_settings s WHERE s.merchant_id = _m), 'UTC');
BEGIN
    PERFORM wallet_internal.check_merchant(_m);
    PERFORM wallet_internal.push_check_message(_m, channel, topic, payload, campaign_id, dedup_key, coalesce(not_before, local_at::timestamptz), priority);
    IF length(dedup_key) > 180 THEN
        RAISE EXCEPTION 'dedup_key must not be longer than 180 characters'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An audience''s key is extended by each member''s id.';
    END IF;
    IF member_refs IS NOT NULL THEN
        FOREACH k IN ARRAY member_refs LOOP
            PERFORM wallet_internal.member_check(_m, k);
        END LOOP;
    END IF;
    FOR mem IN SELECT x.member_id, coalesce(w.time_zone, tz) AS tz
                 FROM (SELECT m.member_id FROM wallet.members m
                        WHERE m.merchant_id = _m AND member_refs IS NULL AND m.status = 'active'
                       UNION ALL
                       SELECT wallet_internal.member_ensure(_m, u.ref) FROM (SELECT DISTINCT x AS ref FROM unnest(member_refs) x) u) x
                 JOIN wallet.members w ON w.member_id = x.member_id LOOP
        r := wallet_internal.push_enqueue(_m, mem.member_id, channel, topic, payload, campaign_id,
                                          dedup_key || ':' || mem.member_id,
                                          coalesce(local_at AT TIME ZONE mem.tz, not_before), expires_at, priority, false);
        k := r.status || '/' || coalesce(r.reason, '');
        counts := jsonb_set(counts, ARRAY[k], to_jsonb(coalesce((counts ->> k)::bigint, 0) + 1));
    END LOOP;
    RETURN QUERY SELECT split_part(e.key, '/', 1), nullif(split_part(e.key, '/', 2), ''), e.value::text::bigint
                   FROM jsonb_each(counts) e ORDER BY 1, 2;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_audience(bigint, text[], text, text, jsonb, bigint, text, timestamptz, timestamp, timestamptz, int) IS 'internal: enqueues for an audience (member_refs NULL: every active member), streaming the members, each decided as enqueue_push does; the earliest send time is not_before, or local_at in each member''s time zone; returns counts per status and reason';

CREATE FUNCTION wallet.enqueue_push_audience(merchant_id bigint, member_refs text[], channel text, topic text, payload jsonb,
        campaign_id bigint DEFAULT NULL, dedup_key text DEFAULT NULL, not_before timestamptz DEFAULT now(),
        expires_at timestamptz DEFAULT NULL, priority int DEFAULT 0)
    RETURNS TABLE (status text, reason text, messages bigint)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN QUERY SELECT * FROM wallet_internal.push_audience($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $10);
END
$$;
COMMENT ON FUNCTION wallet.enqueue_push_audience(bigint, text[], text, text, jsonb, bigint, text, timestamptz, timestamptz, int) IS 'enqueues a message for a campaign''s audience in one call (member_refs NULL: every active member of the merchant), streaming the members, each decided as enqueue_push does (dedup_key, if given, extended by '':<member_id>''); returns the count of messages per status and reason';

CREATE FUNCTION wallet.enqueue_push_local(merchant_id bigint, member_refs text[], channel text, topic text, payload jsonb,
        local_at timestamp, campaign_id bigint DEFAULT NULL, dedup_key text DEFAULT NULL,
        expires_at timestamptz DEFAULT NULL, priority int DEFAULT 0)
    RETURNS TABLE (status text, reason text, messages bigint)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF local_at IS NULL THEN
        RAISE EXCEPTION 'local_at must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A festival send goes out at a local date and time in each member''s time zone.';
    END IF;
    RETURN QUERY SELECT * FROM wallet_internal.push_audience($1, $2, $3, $4, $5, $7, $8, NULL, $6, $9, $10);
END
$$;
COMMENT ON FUNCTION wallet.enqueue_push_local(bigint, text[], text, text, jsonb, timestamp, bigint, text, timestamptz, int) IS 'a campaign send at a local date and time in each member''s own time zone (the merchant''s for members without one), e.g. 09:00 on a festival morning everywhere: as enqueue_push_audience, with each member''s earliest send time local_at in the member''s zone';

------------------------------------------------------------------------------
-- Delivery (wallet_app: the sending workers)
------------------------------------------------------------------------------

CREATE FUNCTION wallet.claim_pushes(channel text, n int, lease interval)
    RETURNS TABLE (push_id bigint, merchant_id bigint, member_ref text, topic text, payload jsonb, campaign_id bigint,
                   attempts int, lease_until timestamptz)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    _ch text := channel;
    cand bigint[];
    mems bigint[];
    firsts bigint[];
    fmems bigint[];
    ok bigint[];
    slow bigint[];
    gone bigint[];
    why text[];
    id bigint;
    refusal text;
    s record;
    r wallet.push_messages;
BEGIN
    PERFORM wallet_internal.push_check_name('channel', _ch);
    PERFORM wallet_internal.push_check_lease(lease);
    IF n IS NULL OR n < 1 OR n > 10000 THEN
        RAISE EXCEPTION 'n must be % ', CASE WHEN n IS NULL THEN 'given' ELSE 'between 1 and 10000' END
            USING ERRCODE = CASE WHEN n IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'A worker claims up to n messages at a time, 1 to 10000.';
    END IF;
    -- 1. the due messages, locked (those locked by other claims are skipped)
    SELECT array_agg(z.push_id), array_agg(z.member_id) INTO cand, mems
      FROM (SELECT x.push_id, x.member_id FROM wallet.push_messages x
             WHERE x.part < 3 AND x.channel = _ch AND x.status IN ('queued', 'sending') AND x.due_at <= now()
               AND wallet.acts_for(x.merchant_id)
             ORDER BY x.priority DESC, x.due_at
             LIMIT n
             FOR UPDATE SKIP LOCKED) z;
    IF cand IS NULL THEN
        RETURN;
    END IF;
    -- 2. the members, each under its lock: a member busy in another session
    -- (enqueue, consent, claim) has its messages wait for the next claim
    SELECT array_agg(u.id ORDER BY u.o), array_agg(u.m ORDER BY u.o) INTO firsts, fmems
      FROM (SELECT DISTINCT ON (u.m) u.id, u.m, u.o FROM unnest(cand, mems) WITH ORDINALITY AS u(id, m, o) ORDER BY u.m, u.o) u
     WHERE pg_try_advisory_xact_lock(2001234512, (u.m % 2147483647)::int);
    IF firsts IS NULL THEN
        RETURN;
    END IF;
    -- 3. each member's first message checked again, all at once: consent,
    -- expiry, and whether quiet hours or a reached cap could move it (then
    -- it is decided below, one by one, as are a member's further messages)
    WITH d AS (
        SELECT x.push_id, x.merchant_id, x.member_id, x.channel, x.cap_group, x.service, p.max_per_day, p.max_per_week,
               coalesce(CASE WHEN w.status = 'forgotten' THEN 'member_forgotten'
                             WHEN x.service THEN CASE WHEN c.granted IS FALSE THEN 'muted' END
                             WHEN c.granted IS NULL THEN 'no_consent'
                             WHEN NOT c.granted THEN 'consent_withdrawn'
                             WHEN p.topics IS NOT NULL AND NOT x.topic = ANY (p.topics) THEN 'topic_not_chosen' END,
                        CASE WHEN x.expires_at <= now() THEN 'expired' END) AS refusal,
               coalesce(w.time_zone, s.time_zone, 'UTC') AS tz,
               CASE WHEN p.quiet_start IS NOT NULL THEN p.quiet_start WHEN s.merchant_id IS NULL THEN time '22:00' ELSE s.quiet_start END AS qs,
               CASE WHEN p.quiet_start IS NOT NULL THEN p.quiet_end WHEN s.merchant_id IS NULL THEN time '08:00' ELSE s.quiet_end END AS qe
          FROM wallet.push_messages x
          JOIN wallet.members w ON w.member_id = x.member_id
          LEFT JOIN wallet.push_consents c
                 ON c.merchant_id = x.merchant_id AND c.member_id = x.member_id AND c.channel = x.channel AND c.topic = x.topic
          LEFT JOIN wallet.push_preferences p ON p.member_id = x.member_id
          LEFT JOIN wallet.push_settings s ON s.merchant_id = x.merchant_id
         WHERE x.push_id = ANY (firsts) AND x.part < 3),
    v AS (
        SELECT d.push_id, d.refusal,
               (NOT d.service AND wallet_internal.push_quiet_until(now(), d.tz, d.qs, d.qe) IS NOT NULL)
               OR (d.cap_group IS NOT NULL AND EXISTS (
                   -- a cap reached: counted as push_slot counts at claim (sending and sent
                   -- messages; a rolling window counts later claims too)
                   SELECT FROM (SELECT k.period, k.max_count, k.window_size FROM wallet.push_caps k
                                 WHERE k.merchant_id = d.merchant_id AND k.channel = d.channel AND k.cap_group = d.cap_group
                                UNION ALL
                                SELECT 'day', d.max_per_day, NULL::interval WHERE d.max_per_day IS NOT NULL
                                UNION ALL
                                SELECT 'week', d.max_per_week, NULL::interval WHERE d.max_per_week IS NOT NULL) k
                   CROSS JOIN LATERAL (
                       SELECT CASE WHEN k.period = 'rolling' THEN now() - k.window_size
                                   ELSE date_trunc(k.period, now() AT TIME ZONE d.tz) AT TIME ZONE d.tz END AS ws,
                              CASE WHEN k.period = 'rolling' THEN 'infinity'::timestamptz
                                   ELSE (date_trunc(k.period, now() AT TIME ZONE d.tz)
                                         + CASE k.period WHEN 'day' THEN interval '1 day' ELSE interval '7 days' END) AT TIME ZONE d.tz END AS we) b
                   WHERE (SELECT count(*) FROM wallet.push_messages y
                           WHERE y.member_id = d.member_id AND y.status IN ('sending', 'sent')
                             AND y.channel = d.channel AND y.cap_group = d.cap_group AND y.push_id <> d.push_id
                             AND y.slot_at >= b.ws AND y.slot_at < b.we AND (y.slot_at > b.ws OR k.period <> 'rolling')) >= k.max_count))
               AS slow
          FROM d)
    SELECT array_agg(v.push_id) FILTER (WHERE v.refusal IS NULL AND NOT v.slow),
           array_agg(v.push_id) FILTER (WHERE v.refusal IS NULL AND v.slow),
           array_agg(v.push_id) FILTER (WHERE v.refusal IS NOT NULL),
           array_agg(v.refusal) FILTER (WHERE v.refusal IS NOT NULL)
      INTO ok, slow, gone, why
      FROM v;
    -- 4. refused: suppressed with the reason, out of the queue
    IF gone IS NOT NULL THEN
        WITH g AS (SELECT * FROM unnest(gone, why) AS g(id, why)),
        dd AS (DELETE FROM wallet.push_messages x USING g WHERE x.push_id = g.id AND x.part < 3 RETURNING x.*, g.why)
        INSERT INTO wallet.push_messages OVERRIDING SYSTEM VALUE
        SELECT dd.push_id, dd.merchant_id, dd.member_id, dd.channel, dd.topic, dd.cap_group, dd.service, dd.payload, dd.campaign_id,
               dd.dedup_key, dd.priority, dd.not_before, dd.expires_at, dd.created_at, dd.outcome, dd.outcome_reason,
               'suppressed', dd.why, NULL, dd.slot_at, dd.attempts, dd.claimed_at, dd.sent_at, dd.provider_message_id,
               dd.last_error, now(), 3
          FROM dd;
    END IF;
    -- 5. the rest claimed, all at once
    IF ok IS NOT NULL THEN
        RETURN QUERY
        WITH u AS (
            UPDATE wallet.push_messages x
               SET status = 'sending', due_at = now() + lease, slot_at = now(), claimed_at = now(), attempts = x.attempts + 1
             WHERE x.push_id = ANY (ok) AND x.part < 3
            RETURNING x.push_id, x.merchant_id, x.member_id, x.topic, x.payload, x.campaign_id, x.attempts, x.due_at)
        SELECT u.push_id, u.merchant_id, w.member_ref, u.topic, u.payload, u.campaign_id, u.attempts, u.due_at
          FROM u JOIN wallet.members w ON w.member_id = u.member_id
         ORDER BY array_position(cand, u.push_id);
    END IF;
    -- 6. one by one: those quiet hours or a cap may move, and the members' further messages
    FOR id IN SELECT u.id FROM unnest(cand, mems) WITH ORDINALITY AS u(id, m, o)
               WHERE u.id = ANY (slow) OR (u.m = ANY (fmems) AND NOT u.id = ANY (firsts))
               ORDER BY u.o LOOP
        SELECT * INTO r FROM wallet.push_messages x WHERE x.push_id = id AND x.part < 3;
        refusal := wallet_internal.push_refusal(r.merchant_id, r.member_id, r.channel, r.topic, r.service);
        IF refusal IS NULL AND r.expires_at <= now() THEN
            refusal := 'expired';
        END IF;
        IF refusal IS NULL AND (r.service IS NOT TRUE OR r.cap_group IS NOT NULL) THEN
            s := wallet_internal.push_slot(r.merchant_id, r.member_id, r.channel, r.cap_group, r.service, r.priority, now(), false, r.push_id);
            IF s.slot IS NULL THEN
                refusal := s.reason;
            ELSIF s.slot >= r.expires_at THEN
                refusal := 'expires_before_slot'; r.slot_at := s.slot;
            ELSIF s.slot > now() THEN
                UPDATE wallet.push_messages x SET status = 'queued', reason = s.reason, due_at = s.slot, slot_at = s.slot
                 WHERE x.push_id = id AND x.part = r.part;
                CONTINUE;
            END IF;
        END IF;
        IF refusal IS NOT NULL THEN
            r.status := 'suppressed'; r.reason := refusal; r.due_at := NULL; r.finished_at := now();
            PERFORM wallet_internal.push_move(r, 3::smallint);
            CONTINUE;
        END IF;
        UPDATE wallet.push_messages x
           SET status = 'sending', due_at = now() + lease, slot_at = now(), claimed_at = now(), attempts = x.attempts + 1
         WHERE x.push_id = id AND x.part = r.part
        RETURNING x.push_id, x.merchant_id, x.topic, x.payload, x.campaign_id, x.attempts, x.due_at
             INTO push_id, merchant_id, topic, payload, campaign_id, attempts, lease_until;
        SELECT m.member_ref INTO member_ref FROM wallet.members m WHERE m.member_id = r.member_id;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION wallet.claim_pushes(text, int, interval) IS 'claims up to n due messages of a channel (of the merchants the caller acts for), highest priority first, leasing them for lease; each is checked again first, under its member''s lock: consent, expiry, quiet hours and caps (a message failing the check is suppressed or deferred, never returned; one per member at once, set-based, the rest one by one); a lapsed lease makes a message claimable again';

CREATE FUNCTION wallet.extend_lease(push_id bigint, lease interval) RETURNS timestamptz
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.push_messages := wallet_internal.push_lock(push_id);
BEGIN
    PERFORM wallet_internal.push_check_lease(lease);
    IF r.status <> 'sending' THEN
        PERFORM wallet_internal.push_not_sending(r);
    END IF;
    UPDATE wallet.push_messages x SET due_at = now() + lease WHERE x.push_id = r.push_id AND x.part = r.part;
    RETURN now() + lease;
END
$$;
COMMENT ON FUNCTION wallet.extend_lease(bigint, interval) IS 'extends the lease of a claimed message to now() + lease and returns when it lapses; WL702 if it is not being sent';

CREATE FUNCTION wallet.ack_push(push_id bigint, provider_message_id text) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.push_messages := wallet_internal.push_lock(push_id);
BEGIN
    IF length(provider_message_id) > 200 OR btrim(provider_message_id) = '' THEN
        RAISE EXCEPTION 'provider_message_id must be non-blank and at most 200 characters'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'It is the provider''s id of the delivery (NULL: none).';
    END IF;
    IF r.status = 'sent' AND r.provider_message_id IS NOT DISTINCT FROM ack_push.provider_message_id THEN
        RETURN false;   -- the same acknowledgement again
    END IF;
    IF r.status <> 'sending' THEN
        PERFORM wallet_internal.push_not_sending(r);
    END IF;
    INSERT INTO wallet.push_attempts (merchant_id, member_id, push_id, claimed_at, outcome, provider_message_id)
    VALUES (r.merchant_id, r.member_id, r.push_id, r.claimed_at, 'sent', ack_push.provider_message_id);
    r.status := 'sent'; r.reason := NULL; r.due_at := NULL; r.sent_at := now(); r.finished_at := now();
    r.provider_message_id := ack_push.provider_message_id;
    PERFORM wallet_internal.push_move(r, 3::smallint);
    RETURN true;
END
$$;
COMMENT ON FUNCTION wallet.ack_push(bigint, text) IS 'records a claimed message as sent (also after its lease lapsed, unless claimed again since) with the provider''s id; true, or false for the same acknowledgement again; WL702 if it is not being sent';

-- Many acknowledgements in one statement (a worker that sent a batch):
-- what ack_push does for each, set-based.
CREATE FUNCTION wallet.ack_pushes(push_ids bigint[], provider_message_ids text[] DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    want bigint[];
    n bigint;
    i int;
    bad wallet.push_messages;
    missing bigint;
BEGIN
    IF push_ids IS NULL OR array_position(push_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'push_ids must not be null nor hold a null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Messages are named by the push_id claim_pushes returned.';
    END IF;
    IF cardinality(push_ids) > 10000 OR cardinality(provider_message_ids) <> cardinality(push_ids)
       OR EXISTS (SELECT FROM unnest(provider_message_ids) p WHERE length(p) > 200 OR btrim(p) = '') THEN
        RAISE EXCEPTION 'at most 10000 push_ids, each with a non-blank provider_message_id of at most 200 characters or none'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'provider_message_ids, when given, has one provider id (or NULL) per push_id, in the same order.';
    END IF;
    SELECT array_agg(DISTINCT u) INTO want FROM unnest(push_ids) u;
    IF want IS NULL THEN
        RETURN 0;
    END IF;
    -- lock them all, in one order (rows moved meanwhile are looked up again, as by push_lock)
    FOR i IN 1 .. 3 LOOP
        PERFORM FROM wallet.push_messages x WHERE x.push_id = ANY (want) ORDER BY x.push_id FOR UPDATE;
        GET DIAGNOSTICS n = ROW_COUNT;
        EXIT WHEN n = cardinality(want);
    END LOOP;
    SELECT u INTO missing FROM unnest(want) u
     WHERE NOT EXISTS (SELECT FROM wallet.push_messages x WHERE x.push_id = u AND wallet.acts_for(x.merchant_id))
     ORDER BY u LIMIT 1;
    IF missing IS NOT NULL THEN
        PERFORM wallet_internal.push_lock(missing);   -- raises WL701 as ack_push does
    END IF;
    SELECT x.* INTO bad FROM wallet.push_messages x
      JOIN unnest(push_ids, coalesce(provider_message_ids, array_fill(NULL::text, ARRAY[cardinality(push_ids)]))) AS a(id, pid)
        ON a.id = x.push_id
     WHERE x.status <> 'sending' AND NOT (x.status = 'sent' AND x.provider_message_id IS NOT DISTINCT FROM a.pid)
     ORDER BY x.push_id LIMIT 1;
    IF bad.push_id IS NOT NULL THEN
        PERFORM wallet_internal.push_not_sending(bad);
    END IF;
    WITH a AS (
        SELECT DISTINCT ON (u.id) u.id, u.pid
          FROM unnest(push_ids, coalesce(provider_message_ids, array_fill(NULL::text, ARRAY[cardinality(push_ids)]))) WITH ORDINALITY AS u(id, pid, o)
         ORDER BY u.id, u.o),
    d AS (
        DELETE FROM wallet.push_messages x USING a
         WHERE x.push_id = a.id AND x.part < 3 AND x.status = 'sending'
        RETURNING x.*, a.pid),
    r AS (
        INSERT INTO wallet.push_attempts (merchant_id, member_id, push_id, claimed_at, outcome, provider_message_id)
        SELECT d.merchant_id, d.member_id, d.push_id, d.claimed_at, 'sent', d.pid FROM d)
    INSERT INTO wallet.push_messages OVERRIDING SYSTEM VALUE
    SELECT d.push_id, d.merchant_id, d.member_id, d.channel, d.topic, d.cap_group, d.service, d.payload, d.campaign_id,
           d.dedup_key, d.priority, d.not_before, d.expires_at, d.created_at, d.outcome, d.outcome_reason, 'sent',
           NULL, NULL, d.slot_at, d.attempts, d.claimed_at, now(), d.pid, d.last_error, now(), 3
      FROM d;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet.ack_pushes(bigint[], text[]) IS 'acknowledges many claimed messages as sent in one statement (at most 10000; provider_message_ids, when given, in the order of push_ids), as ack_push does each; returns how many were recorded (a repeated acknowledgement counts none); WL701 or WL702 as ack_push, for the first offending id, and then none is recorded';

CREATE FUNCTION wallet.fail_push(push_id bigint, error text, retryable boolean DEFAULT true) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.push_messages := wallet_internal.push_lock(push_id);
    s wallet.push_settings;
    d interval;
    dead boolean;
BEGIN
    IF error IS NULL OR retryable IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN error IS NULL THEN 'error' ELSE 'retryable' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A failure says what went wrong and whether a retry may succeed.';
    END IF;
    IF btrim(error) = '' THEN
        RAISE EXCEPTION 'error must not be blank'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A failure says what went wrong.';
    END IF;
    IF r.status <> 'sending' THEN
        PERFORM wallet_internal.push_not_sending(r);
    END IF;
    SELECT * INTO s FROM wallet.push_settings x WHERE x.merchant_id = r.merchant_id;
    dead := NOT retryable OR r.attempts >= coalesce(s.max_attempts, 5);
    -- exponential backoff with jitter: between half and all of backoff * 2^(attempts - 1)
    d := coalesce(s.backoff, interval '30 seconds') * power(2, least(r.attempts - 1, 20)) * (0.5 + random() / 2);
    IF dead THEN
        r.status := 'dead'; r.reason := CASE WHEN retryable THEN 'attempts_exhausted' ELSE 'not_retryable' END;
        r.due_at := NULL; r.slot_at := NULL; r.last_error := left(fail_push.error, 1000); r.finished_at := now();
        PERFORM wallet_internal.push_move(r, 3::smallint);
    ELSE
        UPDATE wallet.push_messages x
           SET status = 'queued', reason = 'retry', due_at = now() + d, slot_at = now() + d, last_error = left(fail_push.error, 1000)
         WHERE x.push_id = r.push_id AND x.part = r.part;
    END IF;
    INSERT INTO wallet.push_attempts (merchant_id, member_id, push_id, claimed_at, outcome, error)
    VALUES (r.merchant_id, r.member_id, r.push_id, r.claimed_at, 'failed', left(fail_push.error, 1000));
    RETURN CASE WHEN dead THEN 'dead' ELSE 'queued' END;
END
$$;
COMMENT ON FUNCTION wallet.fail_push(bigint, text, boolean) IS 'records a failed delivery of a claimed message: retried after an exponential backoff with jitter (returns queued), or, not retryable or out of attempts, a dead letter (returns dead); WL702 if it is not being sent';

CREATE FUNCTION wallet.requeue_push(push_id bigint) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.push_messages := wallet_internal.push_lock(push_id);
BEGIN
    IF r.status <> 'dead' THEN
        RAISE EXCEPTION 'push % is not a dead letter', r.push_id
            USING ERRCODE = 'WL703', DETAIL = format('The message is %s; only dead letters (wallet.push_dead_letters) are requeued.', r.status);
    END IF;
    r.status := 'queued'; r.reason := 'requeued'; r.attempts := 0; r.due_at := now(); r.slot_at := now(); r.finished_at := NULL;
    PERFORM wallet_internal.push_move(r, wallet_internal.push_current_slot());
    RETURN true;
END
$$;
COMMENT ON FUNCTION wallet.requeue_push(bigint) IS 'queues a dead letter again with fresh attempts (checked again at claim); WL703 if it is not a dead letter';

-- Finished messages leave after the merchant's retention (their delivery
-- records with them); the deduplication keys stay.  Bounded per call.
CREATE FUNCTION wallet.purge_pushes(max_rows int DEFAULT 10000) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n bigint;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'max_rows must be positive'
            USING ERRCODE = CASE WHEN max_rows IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'At most max_rows finished messages are purged per call.';
    END IF;
    WITH gone AS (
        DELETE FROM wallet.push_messages x
         WHERE x.part = 3 AND x.push_id IN (SELECT y.push_id FROM wallet.merchants m
                               LEFT JOIN wallet.push_settings s ON s.merchant_id = m.merchant_id
                               CROSS JOIN LATERAL (SELECT z.push_id FROM wallet.push_messages z
                                                    WHERE z.part = 3 AND z.merchant_id = m.merchant_id AND z.finished_at IS NOT NULL
                                                      AND z.finished_at < now() - coalesce(s.retention, interval '90 days')
                                                    LIMIT max_rows) y
                              WHERE wallet.acts_for(m.merchant_id)
                              LIMIT max_rows)
        RETURNING x.push_id),
    attempts AS (DELETE FROM wallet.push_attempts a WHERE a.push_id IN (SELECT g.push_id FROM gone g))
    SELECT count(*) INTO n FROM gone;
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet.purge_pushes(int) IS 'deletes up to max_rows finished messages (sent, suppressed, duplicate, dead) older than their merchant''s retention, with their delivery records, of the merchants the caller acts for; deduplication keys stay; returns the count (run by wallet.run_maintenance)';

-- Carries the messages of queue slot "from" into slot "to" (a delete and
-- an insert each), 10,000 at a time, skipping those locked by others.
CREATE FUNCTION wallet_internal.push_carry("from" smallint, "to" smallint) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n bigint;
    total bigint := 0;
BEGIN
    IF "from" = "to" THEN
        RETURN 0;   -- (what was moved would be met again)
    END IF;
    LOOP
        WITH d AS (
            DELETE FROM wallet.push_messages x
             WHERE x.part = "from" AND x.push_id IN (SELECT y.push_id FROM wallet.push_messages y WHERE y.part = "from"
                                                      LIMIT 10000 FOR UPDATE SKIP LOCKED)
            RETURNING x.*)
        INSERT INTO wallet.push_messages OVERRIDING SYSTEM VALUE
        SELECT d.push_id, d.merchant_id, d.member_id, d.channel, d.topic, d.cap_group, d.service, d.payload, d.campaign_id,
               d.dedup_key, d.priority, d.not_before, d.expires_at, d.created_at, d.outcome, d.outcome_reason, d.status,
               d.reason, d.due_at, d.slot_at, d.attempts, d.claimed_at, d.sent_at, d.provider_message_id, d.last_error,
               d.finished_at, "to"
          FROM d;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
        EXIT WHEN n = 0;
    END LOOP;
    RETURN total;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_carry(smallint, smallint) IS 'internal: moves the messages of queue slot "from" into slot "to" (skipping those locked by other sessions); returns how many';

-- The rotation of the queue slots (no decay): the next slot after the
-- current one that holds at most max_rows live messages (deferred ones,
-- ones being sent, a backlog not yet claimed: a slot holding more waits
-- for its backlog to drain and is passed over) has them carried into the
-- current slot, in batches that wait for nobody (SKIP LOCKED); then it is
-- locked for a moment (waiting at most 100 ms, else the next call tries
-- again), the last few carried, emptied by TRUNCATE and made current.
-- Dead tuples of the hot path thus live a few turns, whatever vacuum and
-- the xmin horizon do.
CREATE FUNCTION wallet.rotate_push_queue(min_age interval DEFAULT '10 seconds', max_rows int DEFAULT 10000) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v bigint;
    cur smallint;
    nxt smallint;
    k int;
    timeout text := current_setting('lock_timeout');
BEGIN
    IF min_age IS NULL OR max_rows IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN min_age IS NULL THEN 'min_age' ELSE 'max_rows' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A slot turns after min_age, carrying at most max_rows live messages.';
    END IF;
    IF min_age < interval '0' OR max_rows < 1 THEN
        RAISE EXCEPTION 'min_age must not be negative and max_rows must be positive'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A slot turns after min_age, carrying at most max_rows live messages.';
    END IF;
    -- one rotation at a time
    IF NOT pg_try_advisory_xact_lock(2001234513, 0) THEN
        RETURN false;
    END IF;
    SELECT s.last_value INTO v FROM wallet_internal.push_queue_slot s;
    cur := v % 4;
    IF now() < to_timestamp(v / 4) + min_age THEN
        RETURN false;
    END IF;
    FOR k IN 1 .. 2 LOOP
        nxt := (cur + k) % 3;
        CONTINUE WHEN (SELECT count(*) FROM (SELECT FROM wallet.push_messages y WHERE y.part = nxt LIMIT max_rows + 1) z) > max_rows;
        -- carry the live messages, without waiting for any
        PERFORM wallet_internal.push_carry(nxt, cur);
        -- then a moment alone with the slot: those locked meanwhile, and TRUNCATE
        BEGIN
            PERFORM set_config('lock_timeout', '100ms', true);
            EXECUTE format('LOCK TABLE wallet.push_messages_q%s IN ACCESS EXCLUSIVE MODE', nxt);
            PERFORM set_config('lock_timeout', timeout, true);
        EXCEPTION WHEN lock_not_available THEN
            RETURN false;   -- busy: the next call tries again (what was carried stays carried)
        END;
        -- (no row of the slot is locked by anyone else now)
        PERFORM wallet_internal.push_carry(nxt, cur);
        EXECUTE format('TRUNCATE wallet.push_messages_q%s', nxt);
        PERFORM setval('wallet_internal.push_queue_slot'::regclass, (extract(epoch FROM now())::bigint) * 4 + nxt);
        RETURN true;
    END LOOP;
    RETURN false;   -- both other slots hold more than max_rows live messages
END
$$;
COMMENT ON FUNCTION wallet.rotate_push_queue(interval, int) IS 'turns the push queue slots when the current one is at least min_age old: the next slot holding at most max_rows live messages has them carried into the current one, is emptied by TRUNCATE (waiting at most 100 ms for its lock) and becomes current; returns whether it turned (run by wallet.run_maintenance; a sending worker may call it every few seconds: the dead tuples of the queue then live only a few turns)';

------------------------------------------------------------------------------
-- Events and metrics
------------------------------------------------------------------------------

CREATE TABLE wallet.push_events (
    event_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    member_id   bigint NOT NULL REFERENCES wallet.members,
    push_id     bigint NOT NULL,
    campaign_id bigint,
    kind        text NOT NULL CHECK (kind IN ('delivered', 'opened', 'clicked', 'dismissed', 'unsubscribed', 'complained')),
    at          timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX push_events_push_idx ON wallet.push_events (push_id, kind);
CREATE INDEX push_events_campaign_idx ON wallet.push_events (merchant_id, campaign_id, kind);
COMMENT ON TABLE wallet.push_events IS 'what members did with the messages sent to them (wallet.record_push_event): delivered, opened, clicked, dismissed, unsubscribed, complained';
COMMENT ON COLUMN wallet.push_events.event_id IS 'event id';
COMMENT ON COLUMN wallet.push_events.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_events.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.push_events.push_id IS 'the message (wallet.push_messages; the event outlives its purge)';
COMMENT ON COLUMN wallet.push_events.campaign_id IS 'the message''s campaign (NULL = none), copied for the campaign figures';
COMMENT ON COLUMN wallet.push_events.kind IS 'delivered, opened, clicked, dismissed, unsubscribed or complained';
COMMENT ON COLUMN wallet.push_events.at IS 'when it happened (as the app or provider reports it)';
COMMENT ON COLUMN wallet.push_events.recorded_at IS 'when it was recorded';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_events', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.push_events', 'event_id'), '');
ALTER TABLE wallet.push_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_events USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_events IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE FUNCTION wallet.record_push_event(push_id bigint, kind text, at timestamptz DEFAULT now()) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.push_messages;
    id bigint;
BEGIN
    IF kind IS NULL OR at IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN kind IS NULL THEN 'kind' ELSE 'at' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'An event says what happened to a message and when.';
    END IF;
    IF kind NOT IN ('delivered', 'opened', 'clicked', 'dismissed', 'unsubscribed', 'complained') THEN
        RAISE EXCEPTION 'unknown push event "%"', left(kind, 64)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A push event is delivered, opened, clicked, dismissed, unsubscribed or complained.';
    END IF;
    SELECT * INTO r FROM wallet.push_messages x WHERE x.push_id = $1;
    IF NOT FOUND OR NOT wallet.acts_for(r.merchant_id) THEN
        PERFORM wallet_internal.push_lock($1);   -- raises 22004 or WL701 as for any other call
    END IF;
    IF r.status <> 'sent' THEN
        RAISE EXCEPTION 'push % was not sent', r.push_id
            USING ERRCODE = 'WL704', DETAIL = format('The message is %s; events are recorded for sent messages.', r.status);
    END IF;
    INSERT INTO wallet.push_events AS e (merchant_id, member_id, push_id, campaign_id, kind, at)
    VALUES (r.merchant_id, r.member_id, r.push_id, r.campaign_id, record_push_event.kind, record_push_event.at)
    RETURNING e.event_id INTO id;
    RETURN id;
END
$$;
COMMENT ON FUNCTION wallet.record_push_event(bigint, text, timestamptz) IS 'records what happened to a sent message (delivered, opened, clicked, dismissed, unsubscribed, complained) and when; returns the event id; WL704 if the message was not sent (an unsubscribe is a figure here: the consent is withdrawn by wallet.record_consent)';

-- The messages sent with the purchases attributed to them, last touch: a
-- purchase counts for the member's latest sent message whose window holds
-- it: open_window after its first open, or delivery_window after its
-- delivery (its first delivered event, else the acknowledgement).
CREATE FUNCTION wallet_internal.push_attribution(merchant_id bigint, campaign_id bigint, open_window interval, delivery_window interval)
    RETURNS TABLE (push_id bigint, purchases bigint, revenue numeric)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN QUERY
    WITH sent AS (
        SELECT m.push_id, m.member_id,
               coalesce((SELECT min(e.at) FROM wallet.push_events e WHERE e.push_id = m.push_id AND e.kind = 'delivered'), m.sent_at) AS delivered_at,
               (SELECT min(e.at) FROM wallet.push_events e WHERE e.push_id = m.push_id AND e.kind = 'opened') AS opened_at
          FROM wallet.push_messages m
         WHERE m.merchant_id = $1 AND m.status = 'sent' AND ($2 IS NULL OR m.campaign_id = $2)),
    touch AS (
        SELECT p.purchase_id, p.amount - p.refunded_amount AS net,
               (SELECT s.push_id FROM sent s
                 WHERE s.member_id = p.member_id
                   AND ((p.occurred_at > s.opened_at AND p.occurred_at <= s.opened_at + $3)
                        OR (p.occurred_at > s.delivered_at AND p.occurred_at <= s.delivered_at + $4))
                 ORDER BY s.delivered_at DESC, s.push_id DESC LIMIT 1) AS push_id
          FROM wallet.purchases p
         WHERE p.merchant_id = $1 AND p.member_id IN (SELECT s.member_id FROM sent s))
    SELECT s.push_id, count(t.purchase_id), coalesce(sum(t.net), 0)
      FROM sent s LEFT JOIN touch t ON t.push_id = s.push_id
     GROUP BY s.push_id;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_attribution(bigint, bigint, interval, interval) IS 'internal: each sent message of the merchant (of the campaign, if given) with the purchases attributed to it (last touch within open_window after its first open or delivery_window after its delivery) and their net revenue';

CREATE FUNCTION wallet.push_stats(merchant_id bigint, campaign_id bigint DEFAULT NULL, open_window interval DEFAULT '24 hours',
        delivery_window interval DEFAULT '72 hours')
    RETURNS TABLE (campaign bigint, topic text, issued bigint, sent bigint, delivered bigint, opened bigint, clicked bigint,
                   unsubscribed bigint, complained bigint, converted bigint, revenue numeric, open_rate numeric,
                   click_rate numeric, conversion_rate numeric, unsubscribe_rate numeric, complaint_rate numeric)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
BEGIN
    PERFORM wallet_internal.check_merchant($1);
    IF $2 IS NOT NULL AND NOT EXISTS (SELECT FROM wallet.campaigns c WHERE c.campaign_id = $2 AND c.merchant_id = $1) THEN
        RAISE EXCEPTION 'campaign % does not exist', $2
            USING ERRCODE = 'WL101', DETAIL = 'Figures are per campaign of the merchant, or of all its messages (NULL).';
    END IF;
    IF $3 IS NULL OR $4 IS NULL OR $3 < interval '0' OR $4 < interval '0' THEN
        RAISE EXCEPTION 'attribution windows must be given and not negative'
            USING ERRCODE = CASE WHEN $3 IS NULL OR $4 IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'A purchase counts for a message within open_window after an open or delivery_window after delivery.';
    END IF;
    RETURN QUERY
    WITH m AS (
        SELECT x.push_id, x.campaign_id, x.topic, x.outcome, x.status,
               EXISTS (SELECT FROM wallet.push_events e WHERE e.push_id = x.push_id AND e.kind = 'delivered') AS delivered,
               EXISTS (SELECT FROM wallet.push_events e WHERE e.push_id = x.push_id AND e.kind = 'opened') AS opened,
               EXISTS (SELECT FROM wallet.push_events e WHERE e.push_id = x.push_id AND e.kind = 'clicked') AS clicked,
               EXISTS (SELECT FROM wallet.push_events e WHERE e.push_id = x.push_id AND e.kind = 'unsubscribed') AS unsubscribed,
               EXISTS (SELECT FROM wallet.push_events e WHERE e.push_id = x.push_id AND e.kind = 'complained') AS complained,
               a.purchases, a.revenue
          FROM wallet.push_messages x
          LEFT JOIN wallet_internal.push_attribution($1, $2, $3, $4) a ON a.push_id = x.push_id
         WHERE x.merchant_id = $1 AND ($2 IS NULL OR x.campaign_id = $2)),
    g AS (
        SELECT m.campaign_id, m.topic,
               count(*) FILTER (WHERE m.outcome IN ('queued', 'deferred')) AS issued,
               count(*) FILTER (WHERE m.status = 'sent') AS sent,
               count(*) FILTER (WHERE m.delivered) AS delivered, count(*) FILTER (WHERE m.opened) AS opened,
               count(*) FILTER (WHERE m.clicked) AS clicked, count(*) FILTER (WHERE m.unsubscribed) AS unsubscribed,
               count(*) FILTER (WHERE m.complained) AS complained, count(*) FILTER (WHERE m.purchases > 0) AS converted,
               coalesce(sum(m.revenue), 0) AS revenue
          FROM m GROUP BY m.campaign_id, m.topic)
    SELECT g.campaign_id, g.topic, g.issued, g.sent, g.delivered, g.opened, g.clicked, g.unsubscribed, g.complained, g.converted,
           g.revenue,
           round(g.opened::numeric / nullif(g.sent, 0), 4), round(g.clicked::numeric / nullif(g.sent, 0), 4),
           round(g.converted::numeric / nullif(g.sent, 0), 4), round(g.unsubscribed::numeric / nullif(g.sent, 0), 4),
           round(g.complained::numeric / nullif(g.sent, 0), 4)
      FROM g ORDER BY g.campaign_id NULLS FIRST, g.topic;
END
$$;
COMMENT ON FUNCTION wallet.push_stats(bigint, bigint, interval, interval) IS 'figures per campaign and topic of a merchant''s messages (one campaign, or all): issued, sent, delivered, opened, clicked, unsubscribed, complained, converted (a purchase attributed, last touch, within open_window after an open or delivery_window after delivery) and net revenue attributed; rates per message sent';

CREATE FUNCTION wallet.push_funnel(merchant_id bigint, campaign_id bigint, open_window interval DEFAULT '24 hours',
        delivery_window interval DEFAULT '72 hours')
    RETURNS TABLE (stage text, members bigint)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.check_merchant($1);
    IF $2 IS NULL OR NOT EXISTS (SELECT FROM wallet.campaigns c WHERE c.campaign_id = $2 AND c.merchant_id = $1) THEN
        IF $2 IS NULL THEN
            RAISE EXCEPTION 'campaign_id must not be null'
                USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The funnel is a campaign''s.';
        END IF;
        RAISE EXCEPTION 'campaign % does not exist', $2
            USING ERRCODE = 'WL101', DETAIL = 'The funnel is of a campaign of the merchant.';
    END IF;
    IF $3 IS NULL OR $4 IS NULL THEN
        RAISE EXCEPTION 'attribution windows must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A purchase counts within open_window after an open or delivery_window after delivery.';
    END IF;
    -- one query: the members at each stage (a member counts at a stage once, whatever it got)
    RETURN QUERY
    WITH m AS (
        SELECT x.push_id, x.member_id, x.status, x.sent_at, a.purchases
          FROM wallet.push_messages x
          LEFT JOIN wallet_internal.push_attribution($1, $2, $3, $4) a ON a.push_id = x.push_id
         WHERE x.merchant_id = $1 AND x.campaign_id = $2 AND x.outcome IN ('queued', 'deferred'))
    SELECT s.stage, s.n FROM (VALUES
        (1, 'issued', (SELECT count(DISTINCT m.member_id) FROM m)),
        (2, 'delivered', (SELECT count(DISTINCT m.member_id) FROM m WHERE m.status = 'sent'
                             AND EXISTS (SELECT FROM wallet.push_events e WHERE e.push_id = m.push_id AND e.kind = 'delivered'))),
        (3, 'opened', (SELECT count(DISTINCT m.member_id) FROM m
                        WHERE EXISTS (SELECT FROM wallet.push_events e WHERE e.push_id = m.push_id AND e.kind = 'opened'))),
        (4, 'code redeemed', (SELECT count(DISTINCT m.member_id) FROM m JOIN wallet.members w ON w.member_id = m.member_id
                               WHERE m.status = 'sent'
                                 AND EXISTS (SELECT FROM wallet.code_redemptions r
                                              WHERE r.campaign_id = $2 AND r.member_ref = w.member_ref AND r.undone_at IS NULL
                                                AND r.redeemed_at >= m.sent_at))),
        (5, 'purchased', (SELECT count(DISTINCT m.member_id) FROM m WHERE m.purchases > 0))) AS s (n_order, stage, n)
     ORDER BY s.n_order;
END
$$;
COMMENT ON FUNCTION wallet.push_funnel(bigint, bigint, interval, interval) IS 'a campaign''s funnel in members: issued (queued or deferred), delivered (a delivered event), opened, code redeemed (a code of the campaign redeemed after a send, not undone), purchased (a purchase attributed as push_stats does)';

CREATE FUNCTION wallet.push_retention(merchant_id bigint, campaign_id bigint, days int DEFAULT 30)
    RETURNS TABLE (audience text, members bigint, purchasers bigint, rate numeric)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    start timestamptz;
BEGIN
    PERFORM wallet_internal.check_merchant($1);
    IF $2 IS NULL OR days IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN $2 IS NULL THEN 'campaign_id' ELSE 'days' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Retention is a campaign''s, over a number of days.';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.campaigns c WHERE c.campaign_id = $2 AND c.merchant_id = $1) THEN
        RAISE EXCEPTION 'campaign % does not exist', $2
            USING ERRCODE = 'WL101', DETAIL = 'Retention is of a campaign of the merchant.';
    END IF;
    IF days < 1 THEN
        RAISE EXCEPTION 'days must be positive'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Members are counted as retained when they purchase within that many days.';
    END IF;
    SELECT min(x.sent_at) INTO start FROM wallet.push_messages x WHERE x.merchant_id = $1 AND x.campaign_id = $2 AND x.status = 'sent';
    RETURN QUERY
    WITH r AS (
        SELECT x.member_id, min(x.sent_at) AS since FROM wallet.push_messages x
         WHERE x.merchant_id = $1 AND x.campaign_id = $2 AND x.status = 'sent' GROUP BY x.member_id),
    n AS (
        SELECT w.member_id, start AS since FROM wallet.members w
         WHERE w.merchant_id = $1 AND w.status = 'active' AND start IS NOT NULL
           AND NOT EXISTS (SELECT FROM r WHERE r.member_id = w.member_id)),
    both_ AS (
        SELECT 'recipients' AS a, 1 AS o, r.member_id, r.since FROM r
        UNION ALL SELECT 'non-recipients', 2, n.member_id, n.since FROM n)
    SELECT b.a, count(*),
           count(*) FILTER (WHERE EXISTS (SELECT FROM wallet.purchases p WHERE p.merchant_id = $1 AND p.member_id = b.member_id
                                            AND p.occurred_at > b.since AND p.occurred_at <= b.since + make_interval(days => $3))),
           round(count(*) FILTER (WHERE EXISTS (SELECT FROM wallet.purchases p WHERE p.merchant_id = $1 AND p.member_id = b.member_id
                                            AND p.occurred_at > b.since AND p.occurred_at <= b.since + make_interval(days => $3)))::numeric
                 / count(*), 4)
      FROM both_ b GROUP BY b.a, b.o ORDER BY b.o;
END
$$;
COMMENT ON FUNCTION wallet.push_retention(bigint, bigint, int) IS 'retention of a campaign''s recipients against non-recipients: the members who purchased within days after their first send (recipients) or after the campaign''s first send (the merchant''s other active members)';

------------------------------------------------------------------------------
-- Triggers: messages enqueued by what happens to members
------------------------------------------------------------------------------

CREATE TABLE wallet.push_stores (
    store_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    name        text NOT NULL,
    latitude    double precision NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude   double precision NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    radius_m    double precision NOT NULL CHECK (radius_m > 0),
    cooldown    interval NOT NULL CHECK (cooldown >= '0'),
    UNIQUE (merchant_id, name)
);
COMMENT ON TABLE wallet.push_stores IS 'store locations of the nearby-store trigger (wallet.set_push_store)';
COMMENT ON COLUMN wallet.push_stores.store_id IS 'store id';
COMMENT ON COLUMN wallet.push_stores.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_stores.name IS 'store name, unique per merchant';
COMMENT ON COLUMN wallet.push_stores.latitude IS 'latitude in degrees (WGS 84)';
COMMENT ON COLUMN wallet.push_stores.longitude IS 'longitude in degrees (WGS 84)';
COMMENT ON COLUMN wallet.push_stores.radius_m IS 'a location ping within this many metres is near the store';
COMMENT ON COLUMN wallet.push_stores.cooldown IS 'at most one nearby message per member and store within this time';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_stores', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.push_stores', 'store_id'), '');
ALTER TABLE wallet.push_stores ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_stores USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_stores IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TABLE wallet.push_triggers (
    trigger_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    kind        text NOT NULL CHECK (kind IN ('points_expiring', 'tier_changed', 'cart_abandoned', 'nearby_store')),
    channel     text NOT NULL,
    topic       text NOT NULL,
    payload     jsonb NOT NULL,
    campaign_id bigint REFERENCES wallet.campaigns,
    params      jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE wallet.push_triggers IS 'messages enqueued by wallet.run_push_triggers when something happens to a member (wallet.create_push_trigger)';
COMMENT ON COLUMN wallet.push_triggers.trigger_id IS 'trigger id';
COMMENT ON COLUMN wallet.push_triggers.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_triggers.kind IS 'points_expiring (within_days), tier_changed (to_tier optional), cart_abandoned (after_minutes), nearby_store (the merchant''s stores)';
COMMENT ON COLUMN wallet.push_triggers.channel IS 'channel of the messages';
COMMENT ON COLUMN wallet.push_triggers.topic IS 'topic of the messages';
COMMENT ON COLUMN wallet.push_triggers.payload IS 'payload of the messages; the trigger adds what fired it under the key "trigger"';
COMMENT ON COLUMN wallet.push_triggers.campaign_id IS 'campaign of the messages (NULL = none)';
COMMENT ON COLUMN wallet.push_triggers.params IS 'the kind''s parameters: {"within_days": n}, {"to_tier": name}, {"after_minutes": n}, {}';
COMMENT ON COLUMN wallet.push_triggers.created_at IS 'when it was created';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_triggers', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.push_triggers', 'trigger_id'), '');
ALTER TABLE wallet.push_triggers ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_triggers USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_triggers IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE FUNCTION wallet.set_push_store(merchant_id bigint, name text, latitude double precision, longitude double precision,
        radius_m double precision, cooldown interval DEFAULT '1 day') RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
BEGIN
    PERFORM wallet_internal.check_merchant($1);
    IF $2 IS NULL OR $3 IS NULL OR $4 IS NULL OR $5 IS NULL OR $6 IS NULL THEN
        RAISE EXCEPTION 'name, latitude, longitude, radius_m and cooldown must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A store is a named point with a radius and a cooldown.';
    END IF;
    IF btrim($2) = '' OR length($2) > 200 OR $3 NOT BETWEEN -90 AND 90 OR $4 NOT BETWEEN -180 AND 180 OR $5 <= 0
       OR $6 < interval '0' THEN
        RAISE EXCEPTION 'invalid store'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A store has a non-blank name of at most 200 characters, a latitude in [-90, 90], a longitude in [-180, 180], a positive radius and a cooldown not negative.';
    END IF;
    INSERT INTO wallet.push_stores AS t (merchant_id, name, latitude, longitude, radius_m, cooldown) VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT ON CONSTRAINT push_stores_merchant_id_name_key DO UPDATE
       SET latitude = excluded.latitude, longitude = excluded.longitude, radius_m = excluded.radius_m, cooldown = excluded.cooldown
    RETURNING t.store_id INTO id;
    RETURN id;
END
$$;
COMMENT ON FUNCTION wallet.set_push_store(bigint, text, double precision, double precision, double precision, interval) IS 'sets a store of the nearby-store trigger (by name): its location, radius in metres and per-member cooldown; returns its id';

CREATE FUNCTION wallet.create_push_trigger(merchant_id bigint, kind text, channel text, topic text, payload jsonb,
        params jsonb DEFAULT '{}', campaign_id bigint DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
BEGIN
    PERFORM wallet_internal.check_merchant($1);
    IF $2 IS NULL OR $6 IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN $2 IS NULL THEN 'kind' ELSE 'params' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A trigger has a kind and its parameters.';
    END IF;
    PERFORM wallet_internal.push_check_message($1, $3, $4, $5, $7, NULL, now(), 0);
    IF $2 NOT IN ('points_expiring', 'tier_changed', 'cart_abandoned', 'nearby_store')
       OR jsonb_typeof($6) <> 'object'
       OR ($2 = 'points_expiring' AND coalesce(($6 ->> 'within_days') ~ '^[0-9]{1,4}$', false) IS NOT TRUE)
       OR ($2 = 'cart_abandoned' AND coalesce(($6 ->> 'after_minutes') ~ '^[0-9]{1,6}$', false) IS NOT TRUE) THEN
        RAISE EXCEPTION 'invalid trigger'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'kind is points_expiring ({"within_days": n}), tier_changed ({} or {"to_tier": name}), cart_abandoned ({"after_minutes": n}) or nearby_store ({}).';
    END IF;
    INSERT INTO wallet.push_triggers AS t (merchant_id, kind, channel, topic, payload, campaign_id, params)
    VALUES ($1, $2, $3, $4, $5, $7, $6)
    RETURNING t.trigger_id INTO id;
    RETURN id;
END
$$;
COMMENT ON FUNCTION wallet.create_push_trigger(bigint, text, text, text, jsonb, jsonb, bigint) IS 'creates a trigger: points_expiring (points expiring within within_days), tier_changed (a member_events tier_changed, optionally to one tier), cart_abandoned (a cart_updated event after_minutes old with no later cart update or purchase), nearby_store (a location event within a store''s radius, once per store cooldown); returns its id';

-- Every trigger of the merchants the caller acts for, once: each message
-- goes through enqueue's decision with a dedup key naming what fired it, so
-- a run repeated (or concurrent) enqueues nothing twice.  Events are looked
-- at for 7 days.
CREATE FUNCTION wallet.run_push_triggers(max_rows int DEFAULT 10000) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t wallet.push_triggers;
    f record;
    r record;
    n bigint := 0;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'max_rows must be positive'
            USING ERRCODE = CASE WHEN max_rows IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'At most max_rows candidates are looked at per trigger and call.';
    END IF;
    FOR t IN SELECT * FROM wallet.push_triggers x WHERE wallet.acts_for(x.merchant_id) ORDER BY x.trigger_id LOOP
        FOR f IN
            -- points expiring within n days: once per account and expiry day
            SELECT a.member_id, format('trigger:%s:account:%s:%s', t.trigger_id, a.account_id, to_char(a.next_event, 'YYYY-MM-DD')) AS k,
                   jsonb_build_object('kind', t.kind, 'account_id', a.account_id,
                                      'points', wallet.ledger_expiring(a.ledger, now(), make_interval(days => (t.params ->> 'within_days')::int))) AS why
              FROM wallet.accounts a
             WHERE t.kind = 'points_expiring' AND a.merchant_id = t.merchant_id
               AND a.next_event <= now() + make_interval(days => (t.params ->> 'within_days')::int)
               AND wallet.ledger_expiring(a.ledger, now(), make_interval(days => (t.params ->> 'within_days')::int)) > 0
            UNION ALL
            -- a tier change (to a given tier, if named)
            SELECT e.member_id, format('trigger:%s:event:%s', t.trigger_id, e.event_id),
                   jsonb_build_object('kind', t.kind, 'event_id', e.event_id) || e.attributes
              FROM wallet.member_events e
             WHERE t.kind = 'tier_changed' AND e.merchant_id = t.merchant_id AND e.kind = 'tier_changed'
               AND e.occurred_at > now() - interval '7 days'
               AND (NOT t.params ? 'to_tier' OR e.attributes ->> 'to_tier' = t.params ->> 'to_tier')
            UNION ALL
            -- the last cart update, after_minutes old, with no later update or purchase
            SELECT e.member_id, format('trigger:%s:event:%s', t.trigger_id, e.event_id),
                   jsonb_build_object('kind', t.kind, 'event_id', e.event_id) || e.attributes
              FROM wallet.member_events e
             WHERE t.kind = 'cart_abandoned' AND e.merchant_id = t.merchant_id AND e.kind = 'cart_updated'
               AND e.occurred_at > now() - interval '7 days'
               AND e.occurred_at <= now() - make_interval(mins => (t.params ->> 'after_minutes')::int)
               AND NOT EXISTS (SELECT FROM wallet.member_events l WHERE l.merchant_id = e.merchant_id AND l.member_id = e.member_id
                                 AND l.kind = 'cart_updated' AND (l.occurred_at, l.event_id) > (e.occurred_at, e.event_id))
               AND NOT EXISTS (SELECT FROM wallet.purchases p WHERE p.merchant_id = e.merchant_id AND p.member_id = e.member_id
                                 AND p.occurred_at > e.occurred_at)
            UNION ALL
            -- a location ping within a store's radius (haversine), once per member and store within its cooldown
            SELECT e.member_id, format('trigger:%s:store:%s:event:%s', t.trigger_id, s.store_id, e.event_id),
                   jsonb_build_object('kind', t.kind, 'event_id', e.event_id, 'store_id', s.store_id, 'store', s.name)
              FROM wallet.member_events e
              JOIN wallet.push_stores s ON s.merchant_id = e.merchant_id
             WHERE t.kind = 'nearby_store' AND e.merchant_id = t.merchant_id AND e.kind = 'location'
               AND e.occurred_at > now() - interval '7 days'
               AND jsonb_typeof(e.attributes -> 'latitude') = 'number' AND jsonb_typeof(e.attributes -> 'longitude') = 'number'
               AND 2 * 6371008.8 * asin(least(1, sqrt(
                       power(sin(radians(((e.attributes ->> 'latitude')::float8 - s.latitude) / 2)), 2)
                       + cos(radians(s.latitude)) * cos(radians((e.attributes ->> 'latitude')::float8))
                         * power(sin(radians(((e.attributes ->> 'longitude')::float8 - s.longitude) / 2)), 2)))) <= s.radius_m
             ORDER BY 1, 2
             LIMIT max_rows LOOP
            CONTINUE WHEN EXISTS (SELECT FROM wallet.push_dedup d WHERE d.merchant_id = t.merchant_id AND d.dedup_key = f.k);
            -- the cooldown of a store: no nearby message of the store for the member since
            CONTINUE WHEN t.kind = 'nearby_store' AND EXISTS (
                SELECT FROM wallet.push_messages x
                 WHERE x.member_id = f.member_id AND x.merchant_id = t.merchant_id
                   AND x.dedup_key LIKE format('trigger:%s:store:%s:%%', t.trigger_id, f.why ->> 'store_id')
                   AND x.created_at > now() - (SELECT s.cooldown FROM wallet.push_stores s WHERE s.store_id = (f.why ->> 'store_id')::bigint));
            r := wallet_internal.push_enqueue(t.merchant_id, f.member_id, t.channel, t.topic, t.payload || jsonb_build_object('trigger', f.why),
                                              t.campaign_id, f.k, now(), NULL, 0, true);
            n := n + 1;
        END LOOP;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet.run_push_triggers(int) IS 'runs every trigger of the merchants the caller acts for once (run by wallet.run_maintenance): each member it fires for gets a message through enqueue''s decision, with a dedup key naming what fired it (never twice); looks at events of the last 7 days; returns the messages recorded';

CREATE OR REPLACE VIEW wallet.error_codes (sqlstate, name, description) AS VALUES
    ('WL001', 'root_key_not_loaded', 'a function that needs the root key runs on a server started without one (hint: the settings to configure)'),
    ('WL002', 'idempotency_key_reused', 'an idempotency key is sent again with a different fingerprint (see Idempotency): a posting with other points, reason, reference, expiry, hold or operation on the same account; a redemption or reservation with another code, member or ttl, or a redemption''s key for a reservation'),
    ('WL101', 'unknown_campaign', 'generate_codes, rotate_code_key, retire_code_key on a campaign that does not exist'),
    ('WL102', 'unknown_merchant', 'create_campaign, create_program, set_code_guard or clear_code_failures for a merchant that does not exist'),
    ('WL103', 'unknown_key_version', 'retire_code_key of a version the campaign does not have'),
    ('WL104', 'retire_current_key', 'retire_code_key of the version that signs new codes (rotate first)'),
    ('WL105', 'key_versions_exhausted', 'rotate_code_key past version 1023'),
    ('WL106', 'serials_exhausted', 'generate_codes past serial 2^38 − 1 (the refused call uses up no serial)'),
    ('WL107', 'campaign_field_fixed', 'an UPDATE changing a campaign''s prefix or mac_bits, or lowering its current_key_version'),
    ('WL108', 'current_key_retired', 'generate_codes when the campaign''s current key version was retired by hand'),
    ('WL109', 'serial_sequence_missing', 'generate_codes, campaign_next_serial when the campaign''s sequence wallet.campaign_<id>_serials was dropped by hand (it is not recreated: that would repeat serials)'),
    ('WL110', 'campaign_ids_exhausted', 'create_campaign once every campaign id up to 2^32 − 1 (the largest a code carries) has been handed out'),
    ('WL120', 'installation_id_fixed', 'UPDATE, DELETE or TRUNCATE of wallet.installation, or a new installation id once key versions are bound to the current one'),
    ('WL121', 'key_binding_fixed', 'an unbound (legacy) key version inserted by anyone but the owner of wallet.code_keys, or a key version''s installation_id changed'),
    ('WL122', 'campaign_not_deletable', 'DELETE or TRUNCATE of wallet.campaigns (end a campaign instead)'),
    ('WL123', 'campaign_id_reused', 'an INSERT into wallet.campaigns with an explicit campaign_id the identity has already handed out'),
    ('WL150', 'unknown_redemption', 'undo_redemption names no redemption'),
    ('WL151', 'redemption_already_undone', 'undo_redemption on a redemption that is already undone'),
    ('WL152', 'unknown_reservation', 'release_reservation names no reservation'),
    ('WL153', 'reservation_converted', 'release_reservation on a reservation that was already redeemed (undo the redemption instead)'),
    ('WL201', 'unknown_account', 'no points account with that id'),
    ('WL202', 'program_closed', 'a posting or a new account in a closed program'),
    ('WL203', 'insufficient_points', 'a redemption, hold or negative adjustment exceeds the spendable balance; nothing is posted'),
    ('WL204', 'invalid_amount', 'points missing, zero or negative where a positive number is required (zero for adjust)'),
    ('WL205', 'amount_out_of_range', 'a balance, lot or lifetime total would exceed bigint'),
    ('WL206', 'unknown_hold', 'no hold with that id'),
    ('WL207', 'hold_not_open', 'the hold was already captured or released (and this is not the identical repeated call)'),
    ('WL208', 'hold_expired', 'capture after the hold''s time to live ran out'),
    ('WL209', 'capture_exceeds_hold', 'capture of more points than the hold holds'),
    ('WL210', 'entry_already_reversed', 'the entry was already reversed'),
    ('WL211', 'entry_not_reversible', 'only accrue, redeem and capture entries can be reversed'),
    ('WL212', 'unknown_entry', 'no journal entry with that id'),
    ('WL213', 'journal_append_only', 'UPDATE, DELETE or TRUNCATE on wallet.entries'),
    ('WL214', 'unknown_program', 'no points program with that id'),
    ('WL401', 'audit_append_only', 'UPDATE, DELETE or TRUNCATE on wallet.audit_log'),
    ('WL701', 'unknown_push', 'extend_lease, ack_push, fail_push, requeue_push name no message (or one purged after its retention)'),
    ('WL702', 'push_not_sending', 'extend_lease, ack_push, fail_push on a message that is not claimed (not status sending)'),
    ('WL703', 'push_not_dead', 'requeue_push of a message that is not a dead letter'),
    ('WL704', 'push_not_sent', 'record_push_event for a message that was not sent');
COMMENT ON VIEW wallet.error_codes IS 'every SQLSTATE of class WL the extension raises: code, name and when it is raised';
COMMENT ON COLUMN wallet.error_codes.sqlstate IS 'the five-character SQLSTATE, WL followed by three digits';
COMMENT ON COLUMN wallet.error_codes.name IS 'the code''s name (src/errcodes.h: ERRCODE_WL_<NAME>)';
COMMENT ON COLUMN wallet.error_codes.description IS 'when the extension raises it';

CREATE OR REPLACE FUNCTION wallet.forget_member(merchant_id bigint, member_ref text, reason text) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    _merchant bigint := merchant_id;
    _ref text := member_ref;
    pseudonym text;
    _member bigint;
    n jsonb := '{}';
    c bigint;
    t text;
    also text;
BEGIN
    PERFORM wallet_internal.member_check(_merchant, _ref);
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'reason must not be %', CASE WHEN reason IS NULL THEN 'null' ELSE 'blank' END
            USING ERRCODE = CASE WHEN reason IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'An erasure is recorded with the reason it was made for.';
    END IF;
    pseudonym := 'forgotten:' || encode(sha256(convert_to(gen_random_uuid()::text || _ref, 'UTF8')), 'hex');

    UPDATE wallet.members m SET member_ref = pseudonym, time_zone = NULL, locale = NULL, status = 'forgotten', updated_at = now()
     WHERE m.merchant_id = _merchant AND m.member_ref = _ref
    RETURNING m.member_id INTO _member;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('members', c);
    UPDATE wallet.accounts a SET member_ref = pseudonym
      FROM wallet.programs p
     WHERE p.program_id = a.program_id AND p.merchant_id = _merchant AND a.member_ref = _ref;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('accounts', c);
    -- the tables of a campaign's codes: the member_ref, and what else they hold of the member
    FOR t, also IN VALUES ('code_bindings', ''), ('code_reservations', ''),
                          ('code_redemptions', ', context = ''{}'''), ('member_use_counts', '') LOOP
        EXECUTE format('UPDATE wallet.%I x SET member_ref = $1%s FROM wallet.campaigns k
                         WHERE k.campaign_id = x.campaign_id AND k.merchant_id = $2 AND x.member_ref = $3', t, also)
          USING pseudonym, _merchant, _ref;
        GET DIAGNOSTICS c = ROW_COUNT;
        n := n || jsonb_build_object(t, c);
    END LOOP;
    -- failed attempts are forensics, not totals: deleted, with those that
    -- named no merchant (they cannot be told apart by merchant)
    DELETE FROM wallet.code_failed_attempts f
     WHERE f.member_ref = _ref AND (f.merchant_id = _merchant OR f.merchant_id IS NULL);
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('code_failed_attempts', c);
    PERFORM wallet_internal.code_guard_forget(_merchant, _ref, NULL);
    -- push (issue 12): consent evidence keeps what was decided and when, not
    -- the device; messages lose their payload, queued ones are suppressed;
    -- the member's own preferences go
    UPDATE wallet.push_consent_log l SET device = NULL
     WHERE l.merchant_id = _merchant AND l.member_id = _member AND l.device IS NOT NULL;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('push_consent_log', c);
    -- (queued ones leave the queue slots for push_messages_done first)
    PERFORM wallet_internal.push_finish(ARRAY(
                SELECT x.push_id FROM wallet.push_messages x
                 WHERE x.merchant_id = _merchant AND x.member_id = _member AND x.part < 3 AND x.status = 'queued'),
            'suppressed', 'member_forgotten', NULL);
    UPDATE wallet.push_messages x SET payload = '{}'
     WHERE x.merchant_id = _merchant AND x.member_id = _member AND x.payload <> '{}';
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('push_messages', c);
    DELETE FROM wallet.push_preferences p WHERE p.merchant_id = _merchant AND p.member_id = _member;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('push_preferences', c);

    IF NOT EXISTS (SELECT FROM jsonb_each(n) e WHERE e.value <> '0') THEN
        RETURN false;   -- nothing names the member (e.g. erased before): nothing to record
    END IF;
    PERFORM wallet_internal.audit_record(_merchant, 'forget_member',
                                jsonb_build_object('table', 'members', 'key', jsonb_build_object('member_id', _member)),
                                NULL, jsonb_build_object('reason', reason, 'pseudonym', pseudonym, 'rows', n));
    RETURN true;
END
$$;
COMMENT ON FUNCTION wallet.forget_member(bigint, text, text) IS 'erases a member''s personal data at a merchant: pseudonymises its member_ref in every table, clears its time zone, locale and request contexts, deletes its failed attempts; push: clears consent devices and message payloads, suppresses queued messages, deletes its push preferences; ledgers and totals are unchanged; recorded in wallet.audit_log; returns false (and records nothing) when nothing names the member';

CREATE OR REPLACE PROCEDURE wallet.run_maintenance()
    LANGUAGE plpgsql
    AS $$
BEGIN
    -- 1. expiry: at most 100 batches of 1,000 due accounts, each committed
    CALL wallet.expire_points_batched(pg_catalog.now(), 1000, 100);
    -- 2. failed code attempts older than a day (the guard's default window is 15 minutes)
    PERFORM wallet.purge_code_attempts(interval '1 day');
    COMMIT;
    -- 3. finished push messages past their merchant's retention (issue 12)
    PERFORM wallet.purge_pushes(10000);
    COMMIT;
    -- 4. push triggers (issue 12): points expiring, tier changes, abandoned carts, nearby stores
    PERFORM wallet.run_push_triggers(10000);
    COMMIT;
    -- 5. the push queue slots turn (issue 12: no decay), when the current one is 10 s old
    PERFORM wallet.rotate_push_queue(interval '10 seconds', 10000);
    COMMIT;
END
$$;
COMMENT ON PROCEDURE wallet.run_maintenance() IS 'runs every periodic job with bounded work per call, committing as it goes: expiry (up to 100,000 due accounts, 1,000 per transaction), purge of failed code attempts older than a day, purge of up to 10,000 finished push messages past their retention, the push triggers, the turn of the push queue slots; later issues add their jobs here; schedule it every minute (README "Maintenance")';

-- == 10h. fast code redemption (issue 11)
-- wallet.redeem_code(text, ...) becomes C (src/redeem.c): its common case in
-- one pass of plans kept per session; the PL/pgSQL body it had moves, as it
-- was, to wallet_internal.redeem_code_full, which the C function calls for
-- every other case.

-- The redemption layer's tables lose their foreign keys to wallet.campaigns
-- (see sql/ext/redeem.sql: the KEY SHARE lock of each check serialised a
-- campaign's redemptions; campaigns are never deleted).
ALTER TABLE wallet.code_reservations DROP CONSTRAINT code_reservations_campaign_id_fkey;
ALTER TABLE wallet.code_redemptions DROP CONSTRAINT code_redemptions_campaign_id_fkey;
ALTER TABLE wallet.code_use_counts DROP CONSTRAINT code_use_counts_campaign_id_fkey;
ALTER TABLE wallet.member_use_counts DROP CONSTRAINT member_use_counts_campaign_id_fkey;
ALTER TABLE wallet.campaign_use_counts DROP CONSTRAINT campaign_use_counts_campaign_id_fkey;
-- A reservation is converted once: a partial unique index instead of the
-- UNIQUE constraint, whose NULLs (every direct redemption) shared one leaf page.
ALTER TABLE wallet.code_redemptions DROP CONSTRAINT code_redemptions_reservation_id_key;
CREATE UNIQUE INDEX code_redemptions_reservation_id_key ON wallet.code_redemptions (reservation_id)
    WHERE reservation_id IS NOT NULL;

-- The PL/pgSQL body moves as it is (renamed, not re-created): the whole of
-- wallet.redeem_code(text, ...), which the C function of that name (src/redeem.c)
-- calls for every call but the common case.
ALTER FUNCTION wallet.redeem_code(text, text, text, jsonb) RENAME TO redeem_code_full;
ALTER FUNCTION wallet.redeem_code_full(text, text, text, jsonb) SET SCHEMA wallet_internal;
REVOKE ALL ON FUNCTION wallet_internal.redeem_code_full(text, text, text, jsonb) FROM wallet_admin, wallet_app, wallet_reader;
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

-- == 10i. offers (issue 11)
-- wallet.record_purchase takes the offers, codes and quote of a checkout
-- (new trailing parameters): the old signature is dropped first.

DROP FUNCTION wallet.record_purchase(bigint, text, text, numeric, text, timestamptz, jsonb);
CREATE FUNCTION wallet.record_purchase(merchant_id bigint, member_ref text, order_ref text, amount numeric, currency text,
        occurred_at timestamptz DEFAULT now(), attributes jsonb DEFAULT '{}',
        offers bigint[] DEFAULT NULL, codes text[] DEFAULT NULL, quote_id bigint DEFAULT NULL) RETURNS wallet.purchase_result
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    p wallet.purchases;
    member bigint;
    tz text;
    prog bigint;
    rnd text;
    acct bigint;
    a wallet_internal.locked_account;
    e wallet.entries;
    ev record;
    first boolean;
BEGIN
    PERFORM wallet_internal.purchase_check(merchant_id, member_ref, order_ref, amount, currency, occurred_at, attributes);
    SELECT * INTO p FROM wallet.purchases x WHERE x.merchant_id = record_purchase.merchant_id AND x.order_ref = record_purchase.order_ref;
    IF FOUND THEN
        RETURN wallet_internal.purchase_retry(p, member_ref, amount, currency);
    END IF;
    SELECT * INTO member, tz, prog, rnd, acct FROM wallet_internal.purchase_context(merchant_id, member_ref, currency);
    IF member IS NULL THEN
        member := wallet_internal.member_ensure(merchant_id, member_ref);
    END IF;
    IF prog IS NOT NULL THEN
        IF acct IS NULL THEN
            acct := wallet.open_account(prog, member_ref);
        END IF;
        -- the member's postings, counters and first purchase are decided under its account's lock
        a := wallet_internal.lock_account(acct);
        first := NOT EXISTS (SELECT FROM wallet.purchases x
                              WHERE x.merchant_id = record_purchase.merchant_id AND x.member_id = member AND x.program_id = prog);
    END IF;
    ev := wallet_internal.purchase_points(prog, rnd, member, acct, tz, first, amount, currency, occurred_at, attributes);
    -- the purchase first (tiers read spend in the window), with the entry's id to come
    INSERT INTO wallet.purchases (merchant_id, member_id, order_ref, amount, currency, occurred_at, attributes,
                                  program_id, account_id, points, entry_id, rules)
    VALUES (merchant_id, member, order_ref, amount, currency, occurred_at, attributes, prog, acct, ev.points,
            CASE WHEN ev.points > 0 THEN nextval('wallet.entries_entry_id_seq') END, ev.rules)
    ON CONFLICT ON CONSTRAINT purchases_merchant_id_order_ref_key DO NOTHING
    RETURNING * INTO p;
    IF p.purchase_id IS NULL THEN
        -- a concurrent call recorded the order first (committed by now)
        SELECT * INTO p FROM wallet.purchases x WHERE x.merchant_id = record_purchase.merchant_id AND x.order_ref = record_purchase.order_ref;
        RETURN wallet_internal.purchase_retry(p, member_ref, amount, currency);
    END IF;
    IF ev.counters <> '[]' THEN
        INSERT INTO wallet.earning_counters AS c (merchant_id, member_id, rule_id, day, points)
        SELECT record_purchase.merchant_id, member, x.rule_id, x.day, x.points
          FROM jsonb_to_recordset(ev.counters) AS x(rule_id bigint, day date, points bigint)
        ON CONFLICT ON CONSTRAINT earning_counters_key DO UPDATE SET points = c.points + excluded.points;
    END IF;
    IF p.points > 0 THEN
        e.entry_id := p.entry_id;
        e.account_id := acct;
        e.kind := 'accrue';
        e.idempotency_key := 'purchase:' || order_ref;
        e.reason := 'purchase';
        e.reference := order_ref;
        e.created_at := a.at;
        e.points := p.points;
        e.expires_at := wallet.policy_expiry(a.at, a.expiry, a.granularity);
        PERFORM wallet_internal.post_once(a, e);
    END IF;
    -- the offers named (issue 11: offers.sql), after the purchase's own posting
    IF offers IS NOT NULL OR quote_id IS NOT NULL THEN
        PERFORM wallet_internal.offers_consume(p, member_ref, tz, offers, codes, quote_id);
    END IF;
    RETURN (p.purchase_id, p.order_ref, p.member_id, p.program_id, p.account_id, p.amount, p.currency, p.occurred_at,
            p.points, p.entry_id, p.rules)::wallet.purchase_result;
END
$$;
COMMENT ON FUNCTION wallet.record_purchase(bigint, text, text, numeric, text, timestamptz, jsonb, bigint[], text[], bigint) IS 'records a purchase at checkout (creating the member and its account as needed), applies the earning rules of the merchant''s program in that currency, posts the points (accrue entry, reference order_ref) and returns the points and the rules that fired; consumes the offers named (offers, or the quote_id of wallet.quote_offers) with the codes given, recording each in wallet.purchase_offers; idempotent on (merchant, order_ref): another member, amount or currency is WL002';
-- ======================================================================
-- Offers of campaigns (issue 11): a discount (percent or fixed, with a
-- maximum) or cashback in points on a purchase, with conditions like the
-- earning rules, an optional code of the campaign, per-member caps, stacking
-- by priority or exclusivity, the campaign's audience and holdout, and the
-- campaign's budget (wallet.campaign_budgets: money for discounts, points for
-- cashback, or redemptions) through the escrow budget API of budgets.sql.
--
-- wallet.quote_offers says which offers apply to a basket and what they are
-- worth, consuming nothing; with a hold_ttl it holds their budget for the
-- checkout (a quote, wallet.offer_quotes): the units count at once and stop
-- counting when the holds expire.  wallet.record_purchase takes the offers
-- (by id, or the quote) and codes and consumes them in its own transaction:
-- caps counted, budget taken (or the quote's holds converted), codes
-- redeemed, the outcome in wallet.purchase_offers, the discount in
-- wallet.campaign_costs, cashback posted as an accrue entry.
--
-- Amounts: a purchase's amount is the basket before its discounts; a
-- discount is in the purchase's currency, rounded down to hundredths; a money
-- budget counts hundredths (minor units).  README "Offers".
-- ======================================================================

CREATE TABLE wallet.offers (
    offer_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id      bigint NOT NULL REFERENCES wallet.merchants,
    campaign_id      bigint NOT NULL REFERENCES wallet.campaigns,
    name             text NOT NULL CHECK (btrim(name) <> ''),
    kind             text NOT NULL CHECK (kind IN ('percent', 'fixed', 'cashback')),
    value            numeric NOT NULL CHECK (value > 0),
    max_value        numeric CHECK (max_value > 0),
    currency         text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    allow_partial    boolean NOT NULL DEFAULT false,
    code_required    boolean NOT NULL DEFAULT false,
    priority         int NOT NULL DEFAULT 0,
    exclusive        boolean NOT NULL DEFAULT false,
    valid_from       timestamptz NOT NULL DEFAULT now(),
    valid_until      timestamptz CHECK (valid_until > valid_from),
    min_amount       numeric CHECK (min_amount >= 0),
    stores           text[],
    channels         text[],
    payment_methods  text[],
    categories       text[],
    min_tier_rank    int CHECK (min_tier_rank > 0),
    first_purchase   boolean,
    days_of_week     int[] CHECK (days_of_week <@ ARRAY[1, 2, 3, 4, 5, 6, 7]),
    time_from        time,
    time_until       time,
    cap_per_member   bigint CHECK (cap_per_member > 0),
    cap_per_period   bigint CHECK (cap_per_period > 0),
    cap_period       text CHECK (cap_period IN ('day', 'week', 'month')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((cap_per_period IS NULL) = (cap_period IS NULL)),
    CHECK (kind <> 'percent' OR value <= 100),
    CHECK ((time_from IS NULL) = (time_until IS NULL)),
    UNIQUE (campaign_id, name)
);
CREATE INDEX offers_merchant_idx ON wallet.offers (merchant_id, currency, valid_from);
COMMENT ON TABLE wallet.offers IS 'offers of campaigns (wallet.create_offer): a discount or cashback on a purchase, with conditions, caps, stacking, a code requirement and the campaign''s audience, holdout and budget';
COMMENT ON COLUMN wallet.offers.offer_id IS 'offer id';
COMMENT ON COLUMN wallet.offers.merchant_id IS 'merchant of the campaign: the key to distribute by';
COMMENT ON COLUMN wallet.offers.campaign_id IS 'the campaign the offer belongs to (its window, audience, holdout, codes and budget apply)';
COMMENT ON COLUMN wallet.offers.name IS 'the offer''s name, unique in the campaign';
COMMENT ON COLUMN wallet.offers.kind IS 'percent: value percent off the amount; fixed: value off, in currency; cashback: value points per currency unit of the amount';
COMMENT ON COLUMN wallet.offers.value IS 'the percentage (0 to 100), the amount off, or the points per currency unit';
COMMENT ON COLUMN wallet.offers.max_value IS 'at most this discount (in currency) or cashback (in points) per purchase; NULL = no maximum';
COMMENT ON COLUMN wallet.offers.currency IS 'ISO 4217 code: the offer applies to purchases in this currency';
COMMENT ON COLUMN wallet.offers.allow_partial IS 'when the campaign''s budget cannot cover the whole offer, grant what is left (true) or refuse it (false)';
COMMENT ON COLUMN wallet.offers.code_required IS 'the offer applies only with a code of the campaign, redeemed with the purchase';
COMMENT ON COLUMN wallet.offers.priority IS 'evaluation order, highest first (ties: lowest offer_id first); discounts apply in this order, each on what is left to pay';
COMMENT ON COLUMN wallet.offers.exclusive IS 'an exclusive offer applies alone: only when no offer of higher priority applied, and then no other offer applies';
COMMENT ON COLUMN wallet.offers.valid_from IS 'first instant of a purchase (occurred_at) the offer applies to (the campaign''s window applies too)';
COMMENT ON COLUMN wallet.offers.valid_until IS 'end of the validity, exclusive (NULL = open-ended); wallet.end_offer sets it';
COMMENT ON COLUMN wallet.offers.min_amount IS 'condition: amount at least this (NULL = any)';
COMMENT ON COLUMN wallet.offers.stores IS 'condition: attributes.store is one of these (NULL = any)';
COMMENT ON COLUMN wallet.offers.channels IS 'condition: attributes.channel is one of these (NULL = any)';
COMMENT ON COLUMN wallet.offers.payment_methods IS 'condition: attributes.payment_method is one of these (NULL = any)';
COMMENT ON COLUMN wallet.offers.categories IS 'condition: one of attributes.categories is one of these (NULL = any)';
COMMENT ON COLUMN wallet.offers.min_tier_rank IS 'condition: the member''s tier in the program earning in the currency has at least this rank (NULL = any)';
COMMENT ON COLUMN wallet.offers.first_purchase IS 'condition: true = only the member''s first purchase at the merchant (NULL = any)';
COMMENT ON COLUMN wallet.offers.days_of_week IS 'condition: ISO day of week (1 = Monday) of the purchase in the member''s time zone (NULL = any)';
COMMENT ON COLUMN wallet.offers.time_from IS 'condition: local time of day of the purchase at or after this (with time_until; wraps past midnight when later than it)';
COMMENT ON COLUMN wallet.offers.time_until IS 'condition: local time of day of the purchase before this (exclusive)';
COMMENT ON COLUMN wallet.offers.cap_per_member IS 'cap: at most this many purchases of a member get the offer, in all (NULL = none)';
COMMENT ON COLUMN wallet.offers.cap_per_period IS 'cap: at most this many purchases of a member get the offer per cap_period (NULL = none)';
COMMENT ON COLUMN wallet.offers.cap_period IS 'the period of cap_per_period: day, week (ISO, from Monday) or month, in the member''s time zone';
COMMENT ON COLUMN wallet.offers.created_at IS 'when the offer was made';
COMMENT ON COLUMN wallet.offers.updated_at IS 'when the offer last changed';
SELECT pg_catalog.pg_extension_config_dump('wallet.offers', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.offers', 'offer_id'), '');
ALTER TABLE wallet.offers ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.offers USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.offers IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

-- Uses per capped offer, member and period (period NULL: the member's
-- total).  A use is counted by a conditional upsert (uses < cap), which the
-- row lock makes exact under concurrency without any other lock.  No foreign
-- key to the offer (here and in purchase_offers): every checkout would lock
-- the same offer row FOR KEY SHARE (a MultiXact once sessions overlap); the
-- rows are written only by the checkout, from the offer it just read.
CREATE TABLE wallet.offer_counters (
    merchant_id bigint NOT NULL,
    member_id   bigint NOT NULL REFERENCES wallet.members,
    offer_id    bigint NOT NULL,
    period      date,
    uses        bigint NOT NULL CHECK (uses >= 0),
    CONSTRAINT offer_counters_key UNIQUE NULLS NOT DISTINCT (offer_id, member_id, period)
);
COMMENT ON TABLE wallet.offer_counters IS 'purchases that got a capped offer, per member and period and in all: what the caps of wallet.offers count';
COMMENT ON COLUMN wallet.offer_counters.merchant_id IS 'merchant of the offer: the key to distribute by';
COMMENT ON COLUMN wallet.offer_counters.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.offer_counters.offer_id IS 'the offer (a wallet.offers.offer_id)';
COMMENT ON COLUMN wallet.offer_counters.period IS 'first day of the period (day, week or month of the offer''s cap_period) in the member''s time zone; NULL = the member''s total';
COMMENT ON COLUMN wallet.offer_counters.uses IS 'purchases that got the offer in the period (or in all)';
SELECT pg_catalog.pg_extension_config_dump('wallet.offer_counters', '');
ALTER TABLE wallet.offer_counters ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.offer_counters USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.offer_counters IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

-- A quote with a hold: the offers a checkout was shown and the budget holds
-- that keep them available until expires_at.
CREATE TABLE wallet.offer_quotes (
    quote_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    member_id   bigint NOT NULL REFERENCES wallet.members,
    amount      numeric NOT NULL,
    currency    text NOT NULL,
    items       jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at  timestamptz NOT NULL,
    state       text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'used', 'released')),
    purchase_id bigint REFERENCES wallet.purchases
);
CREATE INDEX offer_quotes_expiry_idx ON wallet.offer_quotes (expires_at);
COMMENT ON TABLE wallet.offer_quotes IS 'quotes of wallet.quote_offers made with a hold_ttl: the offers quoted and the budget holds (wallet.budget_holds) keeping them for the checkout';
COMMENT ON COLUMN wallet.offer_quotes.quote_id IS 'quote id, passed to wallet.record_purchase';
COMMENT ON COLUMN wallet.offer_quotes.merchant_id IS 'merchant: the key to distribute by';
COMMENT ON COLUMN wallet.offer_quotes.member_id IS 'the member quoted for';
COMMENT ON COLUMN wallet.offer_quotes.amount IS 'the basket amount quoted (record_purchase must name the same)';
COMMENT ON COLUMN wallet.offer_quotes.currency IS 'ISO 4217 code of the amount';
COMMENT ON COLUMN wallet.offer_quotes.items IS 'the offers quoted: [{offer_id, campaign_id, status, discount, points, units, hold_id, code}]';
COMMENT ON COLUMN wallet.offer_quotes.created_at IS 'when the quote was made';
COMMENT ON COLUMN wallet.offer_quotes.expires_at IS 'when its holds stop counting (a later record_purchase takes from the budget afresh)';
COMMENT ON COLUMN wallet.offer_quotes.state IS 'open, used (by the purchase purchase_id) or released (wallet.release_quote)';
COMMENT ON COLUMN wallet.offer_quotes.purchase_id IS 'the purchase that used the quote';
SELECT pg_catalog.pg_extension_config_dump('wallet.offer_quotes', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.offer_quotes', 'quote_id'), '');
ALTER TABLE wallet.offer_quotes ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.offer_quotes USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.offer_quotes IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

-- What a purchase asked for and got: one row per offer named at checkout.
CREATE TABLE wallet.purchase_offers (
    merchant_id bigint NOT NULL,
    purchase_id bigint NOT NULL REFERENCES wallet.purchases,
    offer_id    bigint NOT NULL,
    campaign_id bigint NOT NULL,
    member_id   bigint NOT NULL REFERENCES wallet.members,
    status      text NOT NULL,
    discount    numeric NOT NULL DEFAULT 0 CHECK (discount >= 0),
    points      bigint NOT NULL DEFAULT 0 CHECK (points >= 0),
    units       bigint NOT NULL DEFAULT 0 CHECK (units >= 0),
    redemption_id bigint,
    entry_id    bigint,
    PRIMARY KEY (purchase_id, offer_id)
);
CREATE INDEX purchase_offers_offer_idx ON wallet.purchase_offers (offer_id);
COMMENT ON TABLE wallet.purchase_offers IS 'the offers a purchase named (by id or quote) and what each got: applied (ok, partial) or refused with a status';
COMMENT ON COLUMN wallet.purchase_offers.merchant_id IS 'merchant: the key to distribute by';
COMMENT ON COLUMN wallet.purchase_offers.purchase_id IS 'the purchase';
COMMENT ON COLUMN wallet.purchase_offers.offer_id IS 'the offer (a wallet.offers.offer_id)';
COMMENT ON COLUMN wallet.purchase_offers.campaign_id IS 'the offer''s campaign';
COMMENT ON COLUMN wallet.purchase_offers.member_id IS 'the member';
COMMENT ON COLUMN wallet.purchase_offers.status IS 'ok, partial (the budget covered part), or why it was refused: no_budget, capped, code_needed, code_refused, not_combinable, no_program, not_eligible';
COMMENT ON COLUMN wallet.purchase_offers.discount IS 'discount granted, in the purchase''s currency';
COMMENT ON COLUMN wallet.purchase_offers.points IS 'cashback points granted';
COMMENT ON COLUMN wallet.purchase_offers.units IS 'units taken from the campaign''s budget (0 when it has none)';
COMMENT ON COLUMN wallet.purchase_offers.redemption_id IS 'the code redemption (wallet.code_redemptions) of a code_required offer';
COMMENT ON COLUMN wallet.purchase_offers.entry_id IS 'the accrue entry that posted the cashback';
SELECT pg_catalog.pg_extension_config_dump('wallet.purchase_offers', '');
ALTER TABLE wallet.purchase_offers ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.purchase_offers USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.purchase_offers IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TYPE wallet.offer_quote AS (
    quote_id    bigint,
    offer_id    bigint,
    campaign_id bigint,
    name        text,
    kind        text,
    status      text,
    discount    numeric,
    points      bigint,
    expires_at  timestamptz
);
COMMENT ON TYPE wallet.offer_quote IS 'a row of wallet.quote_offers: an offer whose conditions hold for the basket, and what it is worth';
COMMENT ON COLUMN wallet.offer_quote.quote_id IS 'the quote holding the budget (with a hold_ttl; NULL without)';
COMMENT ON COLUMN wallet.offer_quote.offer_id IS 'the offer';
COMMENT ON COLUMN wallet.offer_quote.campaign_id IS 'its campaign';
COMMENT ON COLUMN wallet.offer_quote.name IS 'its name';
COMMENT ON COLUMN wallet.offer_quote.kind IS 'percent, fixed or cashback';
COMMENT ON COLUMN wallet.offer_quote.status IS 'ok, partial (the budget covers part), or why not: no_budget, capped, code_needed, not_combinable, no_program';
COMMENT ON COLUMN wallet.offer_quote.discount IS 'discount it is worth, in the basket''s currency';
COMMENT ON COLUMN wallet.offer_quote.points IS 'cashback points it is worth';
COMMENT ON COLUMN wallet.offer_quote.expires_at IS 'until when the quote''s budget is held (NULL without a hold)';

------------------------------------------------------------------------------
-- Administration
------------------------------------------------------------------------------

CREATE FUNCTION wallet_internal.unknown_offer(offer_id bigint) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF offer_id IS NULL THEN
        RAISE EXCEPTION 'offer_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'An offer is named by its id.';
    END IF;
    RAISE EXCEPTION 'unknown offer'
        USING ERRCODE = 'WL606', DETAIL = format('There is no offer %s.', offer_id);
END
$$;
COMMENT ON FUNCTION wallet_internal.unknown_offer(bigint) IS 'internal: raises WL606 for an offer that does not exist (or of another merchant), 22004 for a NULL id';

-- The budget unit an offer's kind is counted in (besides redemptions).
CREATE FUNCTION wallet_internal.offer_unit_check(campaign_id bigint, kind text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    u text;
BEGIN
    SELECT b.unit INTO u FROM wallet.campaign_budgets b WHERE b.campaign_id = offer_unit_check.campaign_id;
    IF u IS NOT NULL AND u <> 'redemptions' AND u <> (CASE WHEN kind = 'cashback' THEN 'points' ELSE 'money' END) THEN
        RAISE EXCEPTION 'a % offer cannot draw on a budget in %', kind, u
            USING ERRCODE = 'WL609',
                  DETAIL = format('Campaign %s''s budget counts %s; discounts draw on money or redemptions, cashback on points or redemptions.', campaign_id, u);
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.offer_unit_check(bigint, text) IS 'internal: WL609 when the campaign''s budget counts a unit the offer''s kind cannot draw on (discounts: money or redemptions; cashback: points or redemptions)';

CREATE FUNCTION wallet.create_offer(campaign_id bigint, name text, kind text, value numeric, currency text,
        max_value numeric DEFAULT NULL, conditions jsonb DEFAULT '{}', caps jsonb DEFAULT '{}',
        code_required boolean DEFAULT false, priority int DEFAULT 0, exclusive boolean DEFAULT false,
        allow_partial boolean DEFAULT false, valid_from timestamptz DEFAULT now(), valid_until timestamptz DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    c wallet.campaigns;
    r wallet.earning_rules;
    k text;
    o bigint;
BEGIN
    IF name IS NULL OR kind IS NULL OR value IS NULL OR currency IS NULL OR conditions IS NULL OR caps IS NULL
       OR code_required IS NULL OR priority IS NULL OR exclusive IS NULL OR allow_partial IS NULL OR valid_from IS NULL THEN
        RAISE EXCEPTION '% must not be null',
              CASE WHEN name IS NULL THEN 'name' WHEN kind IS NULL THEN 'kind' WHEN value IS NULL THEN 'value'
                   WHEN currency IS NULL THEN 'currency' WHEN conditions IS NULL THEN 'conditions' WHEN caps IS NULL THEN 'caps'
                   WHEN code_required IS NULL THEN 'code_required' WHEN priority IS NULL THEN 'priority'
                   WHEN exclusive IS NULL THEN 'exclusive' WHEN allow_partial IS NULL THEN 'allow_partial' ELSE 'valid_from' END
            USING ERRCODE = 'null_value_not_allowed',
                  DETAIL = 'An offer has a name, a kind with its value and currency, conditions and caps ({} = none), a stacking mode and a start.';
    END IF;
    c := wallet_internal.campaign_seen(campaign_id);
    IF btrim(name) = '' OR length(name) > 200 THEN
        RAISE EXCEPTION 'offer name must not be %', CASE WHEN btrim(name) = '' THEN 'blank' ELSE 'longer than 200 characters' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An offer''s name is a non-blank text of at most 200 characters.';
    END IF;
    IF kind NOT IN ('percent', 'fixed', 'cashback') THEN
        RAISE EXCEPTION 'unknown offer kind "%"', left(kind, 32)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An offer is a ''percent'' or ''fixed'' discount, or ''cashback'' in points.';
    END IF;
    IF value <= 0 OR value > 1e12 OR (kind = 'percent' AND value > 100) OR max_value <= 0 THEN
        RAISE EXCEPTION 'invalid value for a % offer', kind
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'percent takes 0 to 100, fixed an amount above 0, cashback points per currency unit above 0; a maximum is above 0.';
    END IF;
    IF currency !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'invalid currency "%"', left(currency, 16)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A currency is an ISO 4217 code of three capital letters, such as CNY or EUR.';
    END IF;
    IF NOT isfinite(valid_from) OR valid_until <= valid_from THEN
        RAISE EXCEPTION 'invalid validity window'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An offer is valid from a finite instant until a later one (exclusive) or open-ended (NULL).';
    END IF;
    -- the conditions of the earning rules, validated by their own code
    r := wallet_internal.rule_apply_conditions(r, conditions, NULL);
    IF jsonb_typeof(caps) <> 'object' THEN
        RAISE EXCEPTION 'caps must be a json object'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Caps are an object such as {"per_member": 3, "per_period": 1, "period": "day"}.';
    END IF;
    SELECT min(x) INTO k FROM jsonb_object_keys(caps) x WHERE x NOT IN ('per_member', 'per_period', 'period');
    IF k IS NOT NULL OR (caps ? 'per_period') <> (caps ? 'period')
       OR (caps ? 'period' AND coalesce(caps ->> 'period' NOT IN ('day', 'week', 'month'), true)) THEN
        RAISE EXCEPTION 'invalid caps'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'The caps are per_member (uses in all) and per_period with period (day, week or month), in purchases per member.';
    END IF;
    PERFORM wallet_internal.offer_unit_check(c.campaign_id, kind);
    INSERT INTO wallet.offers (merchant_id, campaign_id, name, kind, value, max_value, currency, allow_partial, code_required,
                               priority, exclusive, valid_from, valid_until, min_amount, stores, channels, payment_methods,
                               categories, min_tier_rank, first_purchase, days_of_week, time_from, time_until,
                               cap_per_member, cap_per_period, cap_period)
    VALUES (c.merchant_id, c.campaign_id, name, kind, value, max_value, currency, allow_partial, code_required,
            priority, exclusive, valid_from, valid_until, r.min_amount, r.stores, r.channels, r.payment_methods,
            r.categories, r.min_tier_rank, r.first_purchase, r.days_of_week, r.time_from, r.time_until,
            wallet_internal.rule_number(caps, 'per_member', true), wallet_internal.rule_number(caps, 'per_period', true),
            caps ->> 'period')
    RETURNING offer_id INTO o;
    RETURN o;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'offer "%" already exists', name
        USING ERRCODE = 'unique_violation', DETAIL = 'Offer names are unique per campaign.';
END
$$;
COMMENT ON FUNCTION wallet.create_offer(bigint, text, text, numeric, text, numeric, jsonb, jsonb, boolean, int, boolean, boolean, timestamptz, timestamptz) IS 'creates an offer of a campaign (kind percent, fixed or cashback; conditions as for earning rules; caps per_member and per_period with period) and returns its id; WL609 when the campaign''s budget counts a unit the kind cannot draw on';

CREATE FUNCTION wallet.end_offer(offer_id bigint, at timestamptz DEFAULT now()) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF at IS NULL OR NOT isfinite(at) THEN
        RAISE EXCEPTION 'end of offer must be %', CASE WHEN at IS NULL THEN 'given' ELSE 'finite' END
            USING ERRCODE = CASE WHEN at IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'An offer ends at an instant: purchases made from then on no longer get it.';
    END IF;
    UPDATE wallet.offers x
       SET valid_until = greatest(least(coalesce(x.valid_until, 'infinity'), at), x.valid_from + interval '1 microsecond'),
           updated_at = now()
     WHERE x.offer_id = end_offer.offer_id AND wallet.acts_for(x.merchant_id);
    IF NOT FOUND THEN
        PERFORM wallet_internal.unknown_offer(offer_id);
    END IF;
END
$$;
COMMENT ON FUNCTION wallet.end_offer(bigint, timestamptz) IS 'ends an offer at an instant (default now; never later than it already ends): purchases made from then on no longer get it (idempotent)';

------------------------------------------------------------------------------
-- Evaluation
------------------------------------------------------------------------------

-- The offers whose conditions hold for a purchase, in priority order, with
-- what each is worth before the budget: the campaign's window and audience
-- (the control group never gets an offer; those outside the audience
-- neither), the conditions, the caps as counted now, the code (one of codes
-- of the campaign that check_code accepts), stacking.  only_offers: just
-- these offers (NULL: all of the merchant in the currency).  Reads only.
CREATE FUNCTION wallet_internal.offers_eval(merchant_id bigint, member_id bigint, member_ref text, time_zone text,
        account_id bigint, first_purchase boolean, amount numeric, currency text, occurred_at timestamptz,
        attributes jsonb, codes text[], only_offers bigint[])
    RETURNS TABLE (offer_id bigint, campaign_id bigint, name text, kind text, status text, discount numeric,
                   points bigint, allow_partial boolean, code text, cap_per_member bigint, cap_per_period bigint, period date)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    o record;
    lt timestamp := occurred_at AT TIME ZONE coalesce(time_zone, 'UTC');
    dow int := extract(isodow FROM lt);
    tod time := lt::time;
    store text := attributes ->> 'store';
    channel text := attributes ->> 'channel';
    pay text := attributes ->> 'payment_method';
    rank int := 0;
    left_to_pay numeric := amount;
    chosen int := 0;
    closed boolean := false;
    used bigint;
    x text;
    pc record;
BEGIN
    IF account_id IS NOT NULL THEN
        SELECT t.rank INTO rank FROM wallet.account_tiers t WHERE t.account_id = offers_eval.account_id;
        rank := coalesce(rank, 0);
    END IF;
    FOR o IN SELECT f.*, k.starts_at, k.ends_at FROM wallet.offers f JOIN wallet.campaigns k ON k.campaign_id = f.campaign_id
              WHERE f.merchant_id = offers_eval.merchant_id AND f.currency = offers_eval.currency
                AND (only_offers IS NULL OR f.offer_id = ANY (only_offers))
                AND f.valid_from <= offers_eval.occurred_at AND (f.valid_until IS NULL OR f.valid_until > offers_eval.occurred_at)
                AND k.starts_at <= offers_eval.occurred_at AND (k.ends_at IS NULL OR k.ends_at > offers_eval.occurred_at)
                AND (f.min_amount > offers_eval.amount) IS NOT TRUE
                AND (f.stores IS NULL OR store = ANY (f.stores))
                AND (f.channels IS NULL OR channel = ANY (f.channels))
                AND (f.payment_methods IS NULL OR pay = ANY (f.payment_methods))
                AND (f.categories IS NULL OR coalesce(offers_eval.attributes -> 'categories' ?| f.categories, false))
                AND (f.min_tier_rank > rank) IS NOT TRUE
                AND (f.first_purchase AND NOT offers_eval.first_purchase) IS NOT TRUE
                AND (f.days_of_week IS NULL OR dow = ANY (f.days_of_week))
                AND (f.time_from IS NULL
                     OR (f.time_from < f.time_until AND tod >= f.time_from AND tod < f.time_until)
                     OR (f.time_from > f.time_until AND (tod >= f.time_from OR tod < f.time_until)))
              ORDER BY f.priority DESC, f.offer_id LOOP
        -- the audience: the control group and those outside never get it
        CONTINUE WHEN wallet_internal.campaign_group(o.campaign_id, offers_eval.member_id) IS DISTINCT FROM 'target';
        offer_id := o.offer_id;
        campaign_id := o.campaign_id;
        name := o.name;
        kind := o.kind;
        allow_partial := o.allow_partial;
        cap_per_member := o.cap_per_member;
        cap_per_period := o.cap_per_period;
        period := CASE WHEN o.cap_period IS NOT NULL THEN date_trunc(o.cap_period, lt)::date END;
        code := NULL;
        discount := 0;
        points := 0;
        status := 'ok';
        IF closed OR (o.exclusive AND chosen > 0) THEN
            status := 'not_combinable';
        END IF;
        IF status = 'ok' AND o.cap_per_member IS NOT NULL THEN
            SELECT c.uses INTO used FROM wallet.offer_counters c
             WHERE c.offer_id = o.offer_id AND c.member_id = offers_eval.member_id AND c.period IS NULL;
            IF used >= o.cap_per_member THEN
                status := 'capped';
            END IF;
        END IF;
        IF status = 'ok' AND o.cap_per_period IS NOT NULL THEN
            SELECT c.uses INTO used FROM wallet.offer_counters c
             WHERE c.offer_id = o.offer_id AND c.member_id = offers_eval.member_id AND c.period = offers_eval.period;
            IF used >= o.cap_per_period THEN
                status := 'capped';
            END IF;
        END IF;
        IF status = 'ok' AND o.code_required THEN
            status := 'code_needed';
            FOREACH x IN ARRAY coalesce(codes, '{}') LOOP
                SELECT * INTO pc FROM wallet.parse_code(x);
                CONTINUE WHEN pc.code IS NULL OR wallet.code_campaign(pc.code) <> o.campaign_id;
                IF wallet.check_code(x, member_ref) = 'ok' THEN
                    status := 'ok';
                    code := x;
                    EXIT;
                END IF;
            END LOOP;
        END IF;
        IF status = 'ok' THEN
            IF o.kind = 'cashback' THEN
                points := floor(least(amount * o.value, coalesce(o.max_value, amount * o.value)));
                IF account_id IS NULL AND NOT EXISTS (SELECT FROM wallet.programs p
                                                       WHERE p.merchant_id = offers_eval.merchant_id
                                                         AND p.currency = offers_eval.currency AND p.closed_at IS NULL) THEN
                    status := 'no_program';
                    points := 0;
                END IF;
            ELSE
                discount := CASE o.kind WHEN 'percent' THEN left_to_pay * o.value / 100 ELSE o.value END;
                discount := least(discount, coalesce(o.max_value, discount), left_to_pay);
                discount := trunc(discount, 2);
                left_to_pay := left_to_pay - discount;
            END IF;
        END IF;
        IF status = 'ok' THEN
            chosen := chosen + 1;
            closed := o.exclusive;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION wallet_internal.offers_eval(bigint, bigint, text, text, bigint, boolean, numeric, text, timestamptz, jsonb, text[], bigint[]) IS 'internal: the offers whose window, audience (target group only) and conditions hold for a purchase, in priority order, each with a status (ok, capped, code_needed, not_combinable, no_program) and its worth before the budget; reads only';

-- Units of the campaign's budget an offer's worth takes (NULL: no budget),
-- and the worth that a grant of fewer units leaves.
CREATE FUNCTION wallet_internal.offer_units(campaign_id bigint, kind text, discount numeric, points bigint, OUT unit text, OUT units bigint)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    SELECT b.unit INTO unit FROM wallet.campaign_budgets b WHERE b.campaign_id = offer_units.campaign_id;
    units := CASE WHEN unit IS NULL THEN NULL
                  WHEN unit = 'redemptions' THEN 1
                  WHEN unit = 'points' AND kind = 'cashback' THEN points
                  WHEN unit = 'money' AND kind <> 'cashback' THEN (discount * 100)::bigint
                  ELSE -1 END;   -- -1: a unit the kind cannot draw on (budget set after the offer)
END
$$;
COMMENT ON FUNCTION wallet_internal.offer_units(bigint, text, numeric, bigint) IS 'internal: the unit of a campaign''s budget and the units an offer worth discount (money: hundredths) or points takes; NULL units when the campaign has no budget, -1 when the unit does not fit the kind';

------------------------------------------------------------------------------
-- Quotes
------------------------------------------------------------------------------

CREATE FUNCTION wallet.quote_offers(merchant_id bigint, member_ref text, amount numeric, currency text,
        occurred_at timestamptz DEFAULT now(), attributes jsonb DEFAULT '{}', codes text[] DEFAULT NULL,
        hold_ttl interval DEFAULT NULL)
    RETURNS SETOF wallet.offer_quote
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    member bigint;
    tz text;
    prog bigint;
    rnd text;
    acct bigint;
    e record;
    u record;
    hid bigint;
    hexp timestamptz;
    st wallet.budget_status;
    got bigint;
    items jsonb := '[]';
    res wallet.offer_quote[] := '{}';
    q wallet.offer_quote;
    qid bigint;
    exp timestamptz;
    i int;
BEGIN
    PERFORM wallet_internal.purchase_check(merchant_id, member_ref, 'quote', amount, currency, occurred_at, attributes);
    IF hold_ttl <= interval '0' OR hold_ttl > interval '1 day' THEN
        RAISE EXCEPTION 'hold_ttl must be between 0 and 1 day'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A quote holds its budget for a checkout: a positive time of at most a day.';
    END IF;
    SELECT * INTO member, tz, prog, rnd, acct FROM wallet_internal.purchase_context(merchant_id, member_ref, currency);
    IF member IS NULL THEN
        -- the holdout group is drawn by member id: the member is registered as its purchase would
        member := wallet_internal.member_ensure(merchant_id, member_ref);
    END IF;
    IF hold_ttl IS NOT NULL THEN
        exp := clock_timestamp() + hold_ttl;
    END IF;
    -- budgets in campaign order (the budget API's deadlock rule)
    FOR e IN SELECT * FROM wallet_internal.offers_eval(merchant_id, member, member_ref, tz, acct,
                                                       NOT EXISTS (SELECT FROM wallet.purchases x
                                                                    WHERE x.merchant_id = quote_offers.merchant_id AND x.member_id = member),
                                                       amount, currency, occurred_at, attributes, codes, NULL) v
              ORDER BY v.campaign_id, v.offer_id LOOP
        q := (NULL, e.offer_id, e.campaign_id, e.name, e.kind, e.status, e.discount, e.points, exp);
        hid := NULL;
        got := 0;
        IF e.status = 'ok' THEN
            u := wallet_internal.offer_units(e.campaign_id, e.kind, e.discount, e.points);
            IF u.units = -1 THEN
                q.status := 'no_budget';
            ELSIF u.units > 0 THEN
                IF hold_ttl IS NOT NULL THEN
                    SELECT * INTO hid, got, hexp
                      FROM wallet_internal.budget_hold(e.campaign_id, u.units, hold_ttl, e.allow_partial AND u.unit <> 'redemptions');
                ELSE
                    st := wallet_internal.budget_status(e.campaign_id);
                    got := CASE WHEN st.remaining >= u.units THEN u.units WHEN e.allow_partial AND u.unit <> 'redemptions' THEN st.remaining ELSE 0 END;
                END IF;
                IF got = 0 THEN
                    q.status := 'no_budget';
                ELSIF got < u.units THEN
                    q.status := 'partial';
                    IF e.kind = 'cashback' THEN q.points := got; ELSE q.discount := round(got / 100.0, 2); END IF;
                END IF;
            END IF;
        END IF;
        IF q.status NOT IN ('ok', 'partial') THEN
            q.discount := 0;
            q.points := 0;
        END IF;
        res := res || q;
        items := items || jsonb_build_object('offer_id', e.offer_id, 'campaign_id', e.campaign_id, 'status', q.status,
                                             'discount', q.discount, 'points', q.points, 'units', CASE WHEN hid IS NOT NULL THEN got ELSE 0 END,
                                             'hold_id', hid, 'code', e.code);
    END LOOP;
    IF hold_ttl IS NOT NULL THEN
        INSERT INTO wallet.offer_quotes (merchant_id, member_id, amount, currency, items, expires_at)
        VALUES (merchant_id, member, amount, currency, items, exp)
        RETURNING quote_id INTO qid;
    END IF;
    FOR i IN 1..cardinality(res) LOOP
        q := res[i];
        q.quote_id := qid;
        RETURN NEXT q;
    END LOOP;
END
$$;
COMMENT ON FUNCTION wallet.quote_offers(bigint, text, numeric, text, timestamptz, jsonb, text[], interval) IS 'the offers whose conditions hold for a basket (the member''s target group only) and what each is worth given caps, codes, stacking and the campaign''s budget; consumes nothing, but with hold_ttl holds the budget for the checkout (the rows carry a quote_id for wallet.record_purchase; the holds stop counting at expires_at); registers an unknown member';

CREATE FUNCTION wallet.release_quote(quote_id bigint) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    q wallet.offer_quotes;
    it jsonb;
BEGIN
    IF quote_id IS NULL THEN
        RAISE EXCEPTION 'quote_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A quote is named by its id.';
    END IF;
    SELECT * INTO q FROM wallet.offer_quotes x WHERE x.quote_id = release_quote.quote_id AND wallet.acts_for(x.merchant_id) FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown quote'
            USING ERRCODE = 'WL607', DETAIL = format('There is no offer quote %s.', quote_id);
    END IF;
    IF q.state <> 'open' THEN
        RETURN false;
    END IF;
    FOR it IN SELECT j FROM jsonb_array_elements(q.items) j WHERE j ->> 'hold_id' IS NOT NULL ORDER BY (j ->> 'campaign_id')::bigint LOOP
        PERFORM wallet_internal.budget_release((it ->> 'hold_id')::bigint);
    END LOOP;
    UPDATE wallet.offer_quotes x SET state = 'released' WHERE x.quote_id = q.quote_id;
    RETURN true;
END
$$;
COMMENT ON FUNCTION wallet.release_quote(bigint) IS 'gives a quote''s held budget back at once (an abandoned checkout); returns false for a quote already used or released; WL607 unknown quote';

------------------------------------------------------------------------------
-- Consumption at checkout (wallet.record_purchase calls it)
------------------------------------------------------------------------------

-- One offer of a purchase, consumed: the caps counted, the budget taken
-- (hold_id: the quote's hold converted), the code redeemed, cashback posted,
-- the discount booked; what fails on the way is undone and the offer
-- recorded refused with its status.
CREATE FUNCTION wallet_internal.offer_consume(p wallet.purchases, member_ref text, time_zone text, e jsonb)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    o wallet.offers;
    st text := e ->> 'status';
    disc numeric := coalesce((e ->> 'discount')::numeric, 0);
    pts bigint := coalesce((e ->> 'points')::bigint, 0);
    hold bigint := (e ->> 'hold_id')::bigint;
    u record;
    want bigint;
    got bigint := 0;
    per date;
    n bigint;
    counted_all boolean := false;
    counted_per boolean := false;
    red wallet.redemption_result;
    ent wallet.entries;
    pv numeric;
BEGIN
    SELECT * INTO o FROM wallet.offers x WHERE x.offer_id = (e ->> 'offer_id')::bigint;
    per := CASE WHEN o.cap_period IS NOT NULL THEN date_trunc(o.cap_period, p.occurred_at AT TIME ZONE coalesce(time_zone, 'UTC'))::date END;
    -- caps: a use counted only while under the cap (exact under concurrency)
    IF st IN ('ok', 'partial') AND o.cap_per_member IS NOT NULL THEN
        INSERT INTO wallet.offer_counters AS c (merchant_id, member_id, offer_id, period, uses)
        VALUES (p.merchant_id, p.member_id, o.offer_id, NULL, 1)
        ON CONFLICT ON CONSTRAINT offer_counters_key DO UPDATE SET uses = c.uses + 1 WHERE c.uses < o.cap_per_member
        RETURNING c.uses INTO n;
        IF n IS NULL THEN st := 'capped'; ELSE counted_all := true; END IF;
    END IF;
    IF st IN ('ok', 'partial') AND o.cap_per_period IS NOT NULL THEN
        n := NULL;
        INSERT INTO wallet.offer_counters AS c (merchant_id, member_id, offer_id, period, uses)
        VALUES (p.merchant_id, p.member_id, o.offer_id, per, 1)
        ON CONFLICT ON CONSTRAINT offer_counters_key DO UPDATE SET uses = c.uses + 1 WHERE c.uses < o.cap_per_period
        RETURNING c.uses INTO n;
        IF n IS NULL THEN st := 'capped'; ELSE counted_per := true; END IF;
    END IF;
    -- the budget
    IF st IN ('ok', 'partial') THEN
        u := wallet_internal.offer_units(o.campaign_id, o.kind, disc, pts);
        IF hold IS NOT NULL THEN
            got := wallet_internal.budget_convert(hold);
        ELSIF u.units = -1 THEN
            got := 0;
        ELSIF u.units > 0 THEN
            got := wallet_internal.budget_take(o.campaign_id, u.units, o.allow_partial AND u.unit <> 'redemptions');
        END IF;
        want := u.units;
        IF u.units IS NOT NULL AND (got = 0 OR u.units = -1) THEN
            st := 'no_budget';
        ELSIF got > 0 AND hold IS NULL AND got < want THEN
            st := 'partial';
            IF o.kind = 'cashback' THEN pts := got; ELSE disc := round(got / 100.0, 2); END IF;
        END IF;
    ELSIF hold IS NOT NULL THEN
        PERFORM wallet_internal.budget_release(hold);
    END IF;
    -- the code, through the redemption path (its caps, its guard)
    IF st IN ('ok', 'partial') AND o.code_required THEN
        red := wallet.redeem_code(e ->> 'code', member_ref, format('offer:%s:%s', p.order_ref, o.offer_id));
        IF red.status <> 'ok' THEN
            st := 'code_refused';
        END IF;
    END IF;
    IF st NOT IN ('ok', 'partial') THEN
        -- undo what was counted or taken on the way
        IF got > 0 THEN
            PERFORM wallet_internal.budget_give_back(o.campaign_id, got);
            got := 0;
        END IF;
        IF counted_all THEN
            UPDATE wallet.offer_counters c SET uses = c.uses - 1 WHERE c.offer_id = o.offer_id AND c.member_id = p.member_id AND c.period IS NULL;
        END IF;
        IF counted_per THEN
            UPDATE wallet.offer_counters c SET uses = c.uses - 1 WHERE c.offer_id = o.offer_id AND c.member_id = p.member_id AND c.period = per;
        END IF;
        disc := 0;
        pts := 0;
    END IF;
    IF pts > 0 THEN
        ent := wallet.accrue(p.account_id, pts, format('offer:%s:%s', p.order_ref, o.offer_id), 'offer cashback', p.order_ref);
        SELECT x.point_value INTO pv FROM wallet.programs x WHERE x.program_id = p.program_id;
        INSERT INTO wallet.campaign_costs (merchant_id, campaign_id, kind, amount, currency, member_id, purchase_id, occurred_at)
        VALUES (p.merchant_id, o.campaign_id, 'cashback', round(pts * coalesce(pv, 0), 2), p.currency, p.member_id, p.purchase_id, p.occurred_at);
    END IF;
    IF disc > 0 THEN
        INSERT INTO wallet.campaign_costs (merchant_id, campaign_id, kind, amount, currency, member_id, purchase_id, occurred_at)
        VALUES (p.merchant_id, o.campaign_id, 'discount', disc, p.currency, p.member_id, p.purchase_id, p.occurred_at);
    END IF;
    INSERT INTO wallet.purchase_offers (merchant_id, purchase_id, offer_id, campaign_id, member_id, status, discount, points,
                                        units, redemption_id, entry_id)
    VALUES (p.merchant_id, p.purchase_id, o.offer_id, o.campaign_id, p.member_id, st, disc, pts, got, red.redemption_id, ent.entry_id)
    ON CONFLICT DO NOTHING;
END
$$;
COMMENT ON FUNCTION wallet_internal.offer_consume(wallet.purchases, text, text, jsonb) IS 'internal: consume one offer of a purchase (caps, budget or the quote''s hold, code, cashback, cost) and record the outcome in wallet.purchase_offers, undoing what a refusal on the way had counted';

CREATE FUNCTION wallet_internal.offers_consume(p wallet.purchases, member_ref text, time_zone text,
        offers bigint[], codes text[], quote_id bigint)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    q wallet.offer_quotes;
    e jsonb;
    r record;
    x bigint;
BEGIN
    IF quote_id IS NOT NULL THEN
        SELECT * INTO q FROM wallet.offer_quotes k WHERE k.quote_id = offers_consume.quote_id AND k.merchant_id = p.merchant_id FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown quote'
                USING ERRCODE = 'WL607', DETAIL = format('There is no offer quote %s.', quote_id);
        END IF;
        IF q.state <> 'open' OR q.member_id <> p.member_id OR q.amount <> p.amount OR q.currency <> p.currency THEN
            RAISE EXCEPTION 'quote % cannot be used for this purchase', quote_id
                USING ERRCODE = 'WL608',
                      DETAIL = CASE WHEN q.state <> 'open' THEN format('The quote is %s.', q.state)
                                    ELSE 'A quote is used by a purchase of the same member, amount and currency.' END;
        END IF;
        FOR e IN SELECT j FROM jsonb_array_elements(q.items) j ORDER BY (j ->> 'campaign_id')::bigint, (j ->> 'offer_id')::bigint LOOP
            CONTINUE WHEN e ->> 'status' NOT IN ('ok', 'partial') AND e ->> 'hold_id' IS NULL;
            CONTINUE WHEN offers IS NOT NULL AND NOT (e ->> 'offer_id')::bigint = ANY (offers);
            PERFORM wallet_internal.offer_consume(p, member_ref, time_zone, e);
        END LOOP;
        UPDATE wallet.offer_quotes k SET state = 'used', purchase_id = p.purchase_id WHERE k.quote_id = q.quote_id;
        RETURN;
    END IF;
    FOR r IN SELECT * FROM wallet_internal.offers_eval(p.merchant_id, p.member_id, member_ref, time_zone, p.account_id,
                                                      NOT EXISTS (SELECT FROM wallet.purchases y WHERE y.merchant_id = p.merchant_id
                                                                    AND y.member_id = p.member_id AND y.purchase_id <> p.purchase_id),
                                                      p.amount, p.currency, p.occurred_at, p.attributes, codes, offers) v
              ORDER BY v.campaign_id, v.offer_id LOOP
        PERFORM wallet_internal.offer_consume(p, member_ref, time_zone, to_jsonb(r));
    END LOOP;
    -- offers named that do not apply to this purchase at all
    FOR x IN SELECT DISTINCT y FROM unnest(offers) y
              WHERE NOT EXISTS (SELECT FROM wallet.purchase_offers z WHERE z.purchase_id = p.purchase_id AND z.offer_id = y) ORDER BY 1 LOOP
        INSERT INTO wallet.purchase_offers (merchant_id, purchase_id, offer_id, campaign_id, member_id, status)
        SELECT p.merchant_id, p.purchase_id, f.offer_id, f.campaign_id, p.member_id, 'not_eligible'
          FROM wallet.offers f WHERE f.offer_id = x AND f.merchant_id = p.merchant_id;
        IF NOT FOUND THEN
            PERFORM wallet_internal.unknown_offer(x);
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION wallet_internal.offers_consume(wallet.purchases, text, text, bigint[], text[], bigint) IS 'internal: consume at checkout the offers a purchase names (by id, evaluated now, or by its quote, whose holds it converts) with its codes; every offer named gets a row of wallet.purchase_offers; WL606 unknown offer, WL607 unknown quote, WL608 quote used, released or for another basket';

------------------------------------------------------------------------------
-- Maintenance
------------------------------------------------------------------------------

-- Quotes are pointers to budget holds (which expire by themselves): a quote
-- long past its expiry is of no use to any checkout, and is deleted.
CREATE FUNCTION wallet.purge_offer_quotes(older_than interval DEFAULT interval '1 day', max_quotes int DEFAULT 10000)
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n bigint;
BEGIN
    IF older_than IS NULL OR max_quotes IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN older_than IS NULL THEN 'older_than' ELSE 'max_quotes' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Quotes expired longer ago than older_than are deleted, at most max_quotes per call.';
    END IF;
    IF older_than < interval '0' OR max_quotes < 1 THEN
        RAISE EXCEPTION 'older_than must not be negative and max_quotes must be positive'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Quotes expired longer ago than older_than are deleted, at most max_quotes per call.';
    END IF;
    DELETE FROM wallet.offer_quotes q
     WHERE q.quote_id IN (SELECT x.quote_id FROM wallet.offer_quotes x
                           WHERE x.expires_at < clock_timestamp() - older_than ORDER BY x.expires_at LIMIT max_quotes
                             FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet.purge_offer_quotes(interval, int) IS 'deletes up to max_quotes offer quotes that expired longer ago than older_than (a checkout naming one then gets WL607); their budget holds are not touched (they expired with them); returns the number deleted; run by wallet.run_maintenance';

-- == 10j. budget slices without deadlocks (issue 11)
-- Every slice is taken through an advisory lock of its own before its row,
-- and the take's reclaim of expired holds never waits long (sql/ext/budgets.sql).

CREATE OR REPLACE FUNCTION wallet_internal.budget_expire_holds(campaign_id bigint)
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

CREATE OR REPLACE FUNCTION wallet_internal.budget_take(campaign_id bigint, units bigint, allow_partial boolean DEFAULT false)
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
    -- Gather: own slice first (waiting for it holds no other slice), then the
    -- lower ones without waiting, the higher ones in order.
    SELECT s.remaining INTO _r FROM wallet.budget_slices s WHERE s.campaign_id = _c AND s.slice = _s FOR UPDATE;
    _sl := ARRAY[_s];
    _sum := _r;
    FOR k IN 0 .. _n - 1 LOOP
        EXIT WHEN _sum >= _u;
        CONTINUE WHEN k = _s;
        IF k < _s THEN
            CONTINUE WHEN NOT pg_try_advisory_xact_lock((x'5742000000000000'::bigint | (_c << 8) | k));
        ELSE
            PERFORM pg_advisory_xact_lock((x'5742000000000000'::bigint | (_c << 8) | k));
        END IF;
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
    -- refilled); the odd units to the highest-numbered ones, which every
    -- take below them waits for rather than skips: scarce units stay
    -- reachable by all.
    _left := _sum - _take;
    _cnt := cardinality(_sl);
    UPDATE wallet.budget_slices s
       SET remaining = _left / _cnt + CASE WHEN v.rk <= _left % _cnt THEN 1 ELSE 0 END
      FROM (SELECT x.sl, row_number() OVER (ORDER BY x.sl DESC) AS rk FROM unnest(_sl) x(sl)) v
     WHERE s.campaign_id = _c AND s.slice = v.sl;
    RETURN _take;
END
$$;
COMMENT ON FUNCTION wallet_internal.budget_take(bigint, bigint, boolean) IS
    'internal: take units from a campaign''s budget now; returns the units granted: all of them, or 0 when the budget cannot cover them (a status, not an error), or with allow_partial what is left if less; WL601 when the campaign has no budget';

CREATE OR REPLACE FUNCTION wallet_internal.budget_give_back(campaign_id bigint, units bigint)
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

CREATE OR REPLACE FUNCTION wallet.set_campaign_budget(campaign_id bigint, unit text, total bigint, slices int DEFAULT NULL)
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
            USING ERRCODE = 'WL101', HINT = 'Create it with wallet.create_campaign.';
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

-- == 10y. app events (issue 12)
-- wallet.track_event: the app's events that the push triggers read.

-- The app's own events, which the triggers read (cart_abandoned,
-- nearby_store) and analytics may: one row of wallet.member_events.  The
-- kinds the extension writes itself are refused, so that a tier change or a
-- reward in the table is always the extension's.
CREATE FUNCTION wallet.track_event(merchant_id bigint, member_ref text, kind text, attributes jsonb DEFAULT '{}',
        occurred_at timestamptz DEFAULT now()) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    _member bigint;
    id bigint;
BEGIN
    PERFORM wallet_internal.member_check($1, $2);
    IF $3 IS NULL OR $4 IS NULL OR $5 IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN $3 IS NULL THEN 'kind' WHEN $4 IS NULL THEN 'attributes' ELSE 'occurred_at' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'An event has a kind, attributes (an object, may be empty) and a time.';
    END IF;
    IF $3 !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid event kind %', left($3, 100)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'An event kind is a lower-case word of at most 63 letters, digits and underscores, starting with a letter.';
    END IF;
    IF $3 IN ('tier_changed', 'referral_rewarded', 'shared') THEN
        RAISE EXCEPTION 'event kind % is written by the extension', $3
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Tier changes, referral rewards and shares are recorded by the functions that make them, not by the app.';
    END IF;
    IF jsonb_typeof($4) <> 'object' OR pg_column_size($4) > 8192 THEN
        RAISE EXCEPTION 'invalid event attributes'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'An event''s attributes are a JSON object of at most 8 kB.';
    END IF;
    IF $3 = 'location' AND NOT (jsonb_typeof($4 -> 'latitude') = 'number' AND jsonb_typeof($4 -> 'longitude') = 'number'
                                AND ($4 ->> 'latitude')::numeric BETWEEN -90 AND 90 AND ($4 ->> 'longitude')::numeric BETWEEN -180 AND 180) THEN
        RAISE EXCEPTION 'invalid location event'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A location event carries a numeric latitude in [-90, 90] and longitude in [-180, 180].';
    END IF;
    _member := wallet_internal.member_ensure($1, $2);
    INSERT INTO wallet.member_events AS e (merchant_id, member_id, kind, occurred_at, attributes)
    VALUES ($1, _member, $3, $5, $4)
    RETURNING e.event_id INTO id;
    RETURN id;
END
$$;
COMMENT ON FUNCTION wallet.track_event(bigint, text, text, jsonb, timestamptz) IS 'records an event of the app about a member (created if new) in wallet.member_events: cart_updated (read by the cart_abandoned trigger), location with numeric latitude and longitude (nearby_store), or any other lower-case kind; the kinds the extension writes (tier_changed, referral_rewarded, shared) are refused; returns the event id';

-- == 10m. record_purchase in C (issue 10)
-- The earning rules are evaluated in C (wallet_internal.purchase_points,
-- shared by preview_purchase and record_purchase), from per-session compiled
-- copies dropped by a trigger on every change of wallet.earning_rules;
-- wallet.record_purchase becomes a C fast path (its final definition is in
-- 10z) over the former PL/pgSQL, now wallet_internal.record_purchase_full.

-- wallet.record_purchase and wallet.preview_purchase evaluate compiled
-- copies of the rules kept per session (src/purchase.c); every change drops them.
CREATE FUNCTION wallet_internal.purchase_rules_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'purchase_rules_changed' LANGUAGE C;
COMMENT ON FUNCTION wallet_internal.purchase_rules_changed() IS 'trigger: tells every backend to drop its compiled earning rules (wallet_internal.purchase_points)';
CREATE TRIGGER earning_rules_changed AFTER INSERT OR DELETE OR UPDATE
    ON wallet.earning_rules FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.purchase_rules_changed();
CREATE TRIGGER earning_rules_changed_truncate AFTER TRUNCATE
    ON wallet.earning_rules FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.purchase_rules_changed();
COMMENT ON TRIGGER earning_rules_changed ON wallet.earning_rules IS 'drops every backend''s compiled earning rules (wallet_internal.purchase_points)';
COMMENT ON TRIGGER earning_rules_changed_truncate ON wallet.earning_rules IS 'drops every backend''s compiled earning rules on TRUNCATE';

CREATE OR REPLACE FUNCTION wallet_internal.purchase_points(merchant_id bigint, program_id bigint, rounding text, member_id bigint,
        account_id bigint, time_zone text, amount numeric, currency text, occurred_at timestamptz, attributes jsonb,
        OUT points bigint, OUT rules jsonb, OUT counters jsonb)
    AS 'MODULE_PATHNAME', 'purchase_points' LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION wallet_internal.purchase_points(bigint, bigint, text, bigint, bigint, text, numeric, text, timestamptz, jsonb) IS 'internal: the points a purchase earns by the program''s rules, the member''s tier and whether it is its first purchase in the program (read in one query; called under the account''s lock), the rules that fired ({rule_id, points, why}) and the cap counter increments; reads, writes nothing';

-- The whole of wallet.record_purchase in PL/pgSQL: what its C fast path
-- (src/purchase.c) leaves to it (offers and codes, a new member or account,
-- no program earning in the currency, any argument it would refuse), with
-- the same results and errors.
CREATE FUNCTION wallet_internal.record_purchase_full(merchant_id bigint, member_ref text, order_ref text, amount numeric,
        currency text, occurred_at timestamptz, attributes jsonb, offers bigint[], codes text[], quote_id bigint)
        RETURNS wallet.purchase_result
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    p wallet.purchases;
    member bigint;
    tz text;
    prog bigint;
    rnd text;
    acct bigint;
    a wallet_internal.locked_account;
    due timestamptz;
    e wallet.entries;
    ev record;
BEGIN
    PERFORM wallet_internal.purchase_check(merchant_id, member_ref, order_ref, amount, currency, occurred_at, attributes);
    -- A retry is found by the insert of the purchase below (ON CONFLICT), not
    -- by a lookup first: retries are rare, a lookup would cost every call.
    -- The usual case in one statement: a known member with an account in the
    -- merchant's open program earning in the currency, locked (what
    -- wallet_internal.lock_account does, but for the idempotency lookup: the
    -- order's unique key stands for it).  The member's postings, counters and
    -- first purchase are decided under this lock.
    SELECT m.member_id, m.time_zone, x.program_id, x.rounding, y.account_id, y.ledger, y.next_event, x.expiry, x.granularity
      INTO member, tz, prog, rnd, acct, a.ledger, due, a.expiry, a.granularity
      FROM wallet.members m
      JOIN wallet.programs x ON x.merchant_id = m.merchant_id AND x.currency = record_purchase_full.currency AND x.closed_at IS NULL
      JOIN wallet.accounts y ON y.program_id = x.program_id AND y.member_ref = m.member_ref
     WHERE m.merchant_id = record_purchase_full.merchant_id AND m.member_ref = record_purchase_full.member_ref
       FOR NO KEY UPDATE OF y;
    IF FOUND THEN
        a.program_id := prog;
        a.closed := false;
        a.at := clock_timestamp();
        IF due <= a.at THEN
            PERFORM wallet_internal.settle_account(acct, a.at, a.at);
            SELECT y.ledger INTO a.ledger FROM wallet.accounts y WHERE y.account_id = acct;
        END IF;
    ELSE
        -- a new member, a member without an account yet, or no program earning in the currency
        SELECT * INTO member, tz, prog, rnd, acct FROM wallet_internal.purchase_context(merchant_id, member_ref, currency);
        IF member IS NULL THEN
            member := wallet_internal.member_ensure(merchant_id, member_ref);
        END IF;
        IF prog IS NOT NULL THEN
            IF acct IS NULL THEN
                acct := wallet.open_account(prog, member_ref);
            END IF;
            a := wallet_internal.lock_account(acct);
        END IF;
    END IF;
    -- the member's tier and first purchase are read after the lock: a posting
    -- that changed the tier, a purchase of the member, have committed by now
    ev := wallet_internal.purchase_points(merchant_id, prog, rnd, member, acct, tz, amount, currency, occurred_at, attributes);
    -- the purchase first (tiers read spend in the window), with the entry's id to come
    INSERT INTO wallet.purchases (merchant_id, member_id, order_ref, amount, currency, occurred_at, attributes,
                                  program_id, account_id, points, entry_id, rules)
    VALUES (merchant_id, member, order_ref, amount, currency, occurred_at, attributes, prog, acct, ev.points,
            CASE WHEN ev.points > 0 THEN nextval('wallet.entries_entry_id_seq') END, ev.rules)
    ON CONFLICT ON CONSTRAINT purchases_merchant_id_order_ref_key DO NOTHING
    RETURNING * INTO p;
    IF p.purchase_id IS NULL THEN
        -- a retry, or a concurrent call recorded the order first (committed by now)
        SELECT * INTO p FROM wallet.purchases x WHERE x.merchant_id = record_purchase_full.merchant_id AND x.order_ref = record_purchase_full.order_ref;
        RETURN wallet_internal.purchase_retry(p, member_ref, amount, currency);
    END IF;
    IF ev.counters <> '[]' THEN
        INSERT INTO wallet.earning_counters AS c (merchant_id, member_id, rule_id, day, points)
        SELECT record_purchase_full.merchant_id, member, x.rule_id, x.day, x.points
          FROM jsonb_to_recordset(ev.counters) AS x(rule_id bigint, day date, points bigint)
        ON CONFLICT ON CONSTRAINT earning_counters_key DO UPDATE SET points = c.points + excluded.points;
    END IF;
    IF p.points > 0 THEN
        -- what wallet_internal.post_once does for a posting without a prior entry
        IF a.closed THEN
            PERFORM wallet_internal.program_closed(prog);
        END IF;
        e.entry_id := p.entry_id;
        e.account_id := acct;
        e.kind := 'accrue';
        e.idempotency_key := 'purchase:' || order_ref;
        e.reason := 'purchase';
        e.reference := order_ref;
        e.created_at := a.at;
        e.points := p.points;
        e.expires_at := wallet.policy_expiry(a.at, a.expiry, a.granularity);
        PERFORM wallet_internal.post_entry(a.ledger, e);
    END IF;
    -- the offers named (issue 11: offers.sql), after the purchase's own posting
    IF offers IS NOT NULL OR quote_id IS NOT NULL THEN
        PERFORM wallet_internal.offers_consume(p, member_ref, tz, offers, codes, quote_id);
    END IF;
    RETURN (p.purchase_id, p.order_ref, p.member_id, p.program_id, p.account_id, p.amount, p.currency, p.occurred_at,
            p.points, p.entry_id, p.rules)::wallet.purchase_result;
END
$$;
COMMENT ON FUNCTION wallet_internal.record_purchase_full(bigint, text, text, numeric, text, timestamptz, jsonb, bigint[], text[], bigint) IS 'internal: wallet.record_purchase in PL/pgSQL, for every case its C fast path leaves to it (offers, codes, quotes, a new member or account, no earning program, invalid arguments)';

-- == 10k. push delivery in C (issue 12)
-- wallet.claim_pushes, wallet.ack_push and wallet.ack_pushes become C
-- (src/push_claim.c): their common case in a few plans kept per session.
-- What the C functions hand over (a member's further messages in a claim,
-- those quiet hours or a cap may move; every unusual acknowledgement and
-- every error) goes to PL/pgSQL helpers holding the logic the functions had.

-- The part of a claim decided one message at a time (wallet.claim_pushes,
-- src/push_claim.c, hands it the messages, locked, their members locked):
-- a member's messages after its first in one claim, and those that quiet
-- hours or a reached cap may move.  Each is checked again as push_slot
-- decides at claim: suppressed, deferred to its slot, or leased.
CREATE FUNCTION wallet_internal.push_claim_each(ids bigint[], lease interval)
    RETURNS TABLE (push_id bigint, merchant_id bigint, member_ref text, topic text, payload jsonb, campaign_id bigint,
                   attempts int, lease_until timestamptz)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    id bigint;
    refusal text;
    s record;
    r wallet.push_messages;
BEGIN
    FOREACH id IN ARRAY ids LOOP
        SELECT * INTO r FROM wallet.push_messages x WHERE x.push_id = id AND x.part < 3;
        refusal := wallet_internal.push_refusal(r.merchant_id, r.member_id, r.channel, r.topic, r.service);
        IF refusal IS NULL AND r.expires_at <= now() THEN
            refusal := 'expired';
        END IF;
        IF refusal IS NULL AND (r.service IS NOT TRUE OR r.cap_group IS NOT NULL) THEN
            s := wallet_internal.push_slot(r.merchant_id, r.member_id, r.channel, r.cap_group, r.service, r.priority, now(), false, r.push_id);
            IF s.slot IS NULL THEN
                refusal := s.reason;
            ELSIF s.slot >= r.expires_at THEN
                refusal := 'expires_before_slot'; r.slot_at := s.slot;
            ELSIF s.slot > now() THEN
                UPDATE wallet.push_messages x SET status = 'queued', reason = s.reason, due_at = s.slot, slot_at = s.slot
                 WHERE x.push_id = id AND x.part = r.part;
                CONTINUE;
            END IF;
        END IF;
        IF refusal IS NOT NULL THEN
            r.status := 'suppressed'; r.reason := refusal; r.due_at := NULL; r.finished_at := now();
            PERFORM wallet_internal.push_move(r, 3::smallint);
            CONTINUE;
        END IF;
        UPDATE wallet.push_messages x
           SET status = 'sending', due_at = now() + lease, slot_at = now(), claimed_at = now(), attempts = x.attempts + 1
         WHERE x.push_id = id AND x.part = r.part
        RETURNING x.push_id, x.merchant_id, x.topic, x.payload, x.campaign_id, x.attempts, x.due_at
             INTO push_id, merchant_id, topic, payload, campaign_id, attempts, lease_until;
        SELECT m.member_ref INTO member_ref FROM wallet.members m WHERE m.member_id = r.member_id;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_claim_each(bigint[], interval) IS 'internal: the messages of ids (locked, their members locked by the caller), in order, checked again one by one (consent, expiry, quiet hours, caps as push_slot counts at claim): suppressed, deferred to their slot, or leased for lease and returned';

-- In C (src/push_claim.c): the due messages chosen and locked in one query,
-- the members' locks, and each member's first message checked again and
-- leased (or suppressed) in one statement, set-based; the rest by
-- wallet_internal.push_claim_each.
CREATE OR REPLACE FUNCTION wallet.claim_pushes(channel text, n int, lease interval)
    RETURNS TABLE (push_id bigint, merchant_id bigint, member_ref text, topic text, payload jsonb, campaign_id bigint,
                   attempts int, lease_until timestamptz)
    AS 'MODULE_PATHNAME', 'claim_pushes' LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET enable_seqscan = off;
COMMENT ON FUNCTION wallet.claim_pushes(text, int, interval) IS 'claims up to n due messages of a channel (of the merchants the caller acts for), highest priority first, leasing them for lease; each is checked again first, under its member''s lock: consent, expiry, quiet hours and caps (a message failing the check is suppressed or deferred, never returned; one per member at once, set-based, the rest one by one); a lapsed lease makes a message claimable again';

-- wallet.ack_push in PL/pgSQL, every case (the C function calls it for all
-- but the common one).
CREATE FUNCTION wallet_internal.push_ack_one(push_id bigint, provider_message_id text) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.push_messages := wallet_internal.push_lock(push_id);
BEGIN
    IF length(provider_message_id) > 200 OR btrim(provider_message_id) = '' THEN
        RAISE EXCEPTION 'provider_message_id must be non-blank and at most 200 characters'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'It is the provider''s id of the delivery (NULL: none).';
    END IF;
    IF r.status = 'sent' AND r.provider_message_id IS NOT DISTINCT FROM push_ack_one.provider_message_id THEN
        RETURN false;   -- the same acknowledgement again
    END IF;
    IF r.status <> 'sending' THEN
        PERFORM wallet_internal.push_not_sending(r);
    END IF;
    INSERT INTO wallet.push_attempts (merchant_id, member_id, push_id, claimed_at, outcome, provider_message_id)
    VALUES (r.merchant_id, r.member_id, r.push_id, r.claimed_at, 'sent', push_ack_one.provider_message_id);
    r.status := 'sent'; r.reason := NULL; r.due_at := NULL; r.sent_at := now(); r.finished_at := now();
    r.provider_message_id := push_ack_one.provider_message_id;
    PERFORM wallet_internal.push_move(r, 3::smallint);
    RETURN true;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_ack_one(bigint, text) IS 'internal: wallet.ack_push, every case: records a claimed message as sent (also after its lease lapsed, unless claimed again since) with the provider''s id; true, or false for the same acknowledgement again; WL702 if it is not being sent';

-- In C (src/push_claim.c): a message being sent moved into the finished
-- partition with its delivery record in one statement; every other case by
-- wallet_internal.push_ack_one.
CREATE OR REPLACE FUNCTION wallet.ack_push(push_id bigint, provider_message_id text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'ack_push' LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET enable_seqscan = off;
COMMENT ON FUNCTION wallet.ack_push(bigint, text) IS 'records a claimed message as sent (also after its lease lapsed, unless claimed again since) with the provider''s id; true, or false for the same acknowledgement again; WL702 if it is not being sent';

-- wallet.ack_pushes in PL/pgSQL, every case (the C function calls it for
-- all but the common one): what ack_push does for each, set-based.
CREATE FUNCTION wallet_internal.push_ack_many(push_ids bigint[], provider_message_ids text[]) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    want bigint[];
    n bigint;
    i int;
    bad wallet.push_messages;
    missing bigint;
BEGIN
    IF push_ids IS NULL OR array_position(push_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'push_ids must not be null nor hold a null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Messages are named by the push_id claim_pushes returned.';
    END IF;
    IF cardinality(push_ids) > 10000 OR cardinality(provider_message_ids) <> cardinality(push_ids)
       OR EXISTS (SELECT FROM unnest(provider_message_ids) p WHERE length(p) > 200 OR btrim(p) = '') THEN
        RAISE EXCEPTION 'at most 10000 push_ids, each with a non-blank provider_message_id of at most 200 characters or none'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'provider_message_ids, when given, has one provider id (or NULL) per push_id, in the same order.';
    END IF;
    SELECT array_agg(DISTINCT u) INTO want FROM unnest(push_ids) u;
    IF want IS NULL THEN
        RETURN 0;
    END IF;
    -- lock them all, in one order (rows moved meanwhile are looked up again, as by push_lock)
    FOR i IN 1 .. 3 LOOP
        PERFORM FROM wallet.push_messages x WHERE x.push_id = ANY (want) ORDER BY x.push_id FOR UPDATE;
        GET DIAGNOSTICS n = ROW_COUNT;
        EXIT WHEN n = cardinality(want);
    END LOOP;
    SELECT u INTO missing FROM unnest(want) u
     WHERE NOT EXISTS (SELECT FROM wallet.push_messages x WHERE x.push_id = u AND wallet.acts_for(x.merchant_id))
     ORDER BY u LIMIT 1;
    IF missing IS NOT NULL THEN
        PERFORM wallet_internal.push_lock(missing);   -- raises WL701 as ack_push does
    END IF;
    SELECT x.* INTO bad FROM wallet.push_messages x
      JOIN unnest(push_ids, coalesce(provider_message_ids, array_fill(NULL::text, ARRAY[cardinality(push_ids)]))) AS a(id, pid)
        ON a.id = x.push_id
     WHERE x.status <> 'sending' AND NOT (x.status = 'sent' AND x.provider_message_id IS NOT DISTINCT FROM a.pid)
     ORDER BY x.push_id LIMIT 1;
    IF bad.push_id IS NOT NULL THEN
        PERFORM wallet_internal.push_not_sending(bad);
    END IF;
    WITH a AS (
        SELECT DISTINCT ON (u.id) u.id, u.pid
          FROM unnest(push_ids, coalesce(provider_message_ids, array_fill(NULL::text, ARRAY[cardinality(push_ids)]))) WITH ORDINALITY AS u(id, pid, o)
         ORDER BY u.id, u.o),
    d AS (
        DELETE FROM wallet.push_messages x USING a
         WHERE x.push_id = a.id AND x.part < 3 AND x.status = 'sending'
        RETURNING x.*, a.pid),
    r AS (
        INSERT INTO wallet.push_attempts (merchant_id, member_id, push_id, claimed_at, outcome, provider_message_id)
        SELECT d.merchant_id, d.member_id, d.push_id, d.claimed_at, 'sent', d.pid FROM d)
    INSERT INTO wallet.push_messages OVERRIDING SYSTEM VALUE
    SELECT d.push_id, d.merchant_id, d.member_id, d.channel, d.topic, d.cap_group, d.service, d.payload, d.campaign_id,
           d.dedup_key, d.priority, d.not_before, d.expires_at, d.created_at, d.outcome, d.outcome_reason, 'sent',
           NULL, NULL, d.slot_at, d.attempts, d.claimed_at, now(), d.pid, d.last_error, now(), 3
      FROM d;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_ack_many(bigint[], text[]) IS 'internal: wallet.ack_pushes, every case: acknowledges many claimed messages as sent in one statement (at most 10000; provider_message_ids, when given, in the order of push_ids), as ack_push does each; returns how many were recorded (a repeated acknowledgement counts none); WL701 or WL702 as ack_push, for the first offending id, and then none is recorded';

-- Many acknowledgements in one statement (a worker that sent a batch), in
-- C (src/push_claim.c): the messages moved as ack_push moves one, in one
-- statement; unusual arguments, or messages not all being sent, by
-- wallet_internal.push_ack_many.
CREATE OR REPLACE FUNCTION wallet.ack_pushes(push_ids bigint[], provider_message_ids text[] DEFAULT NULL) RETURNS bigint
    AS 'MODULE_PATHNAME', 'ack_pushes' LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET enable_seqscan = off;
COMMENT ON FUNCTION wallet.ack_pushes(bigint[], text[]) IS 'acknowledges many claimed messages as sent in one statement (at most 10000; provider_message_ids, when given, in the order of push_ids), as ack_push does each; returns how many were recorded (a repeated acknowledgement counts none); WL701 or WL702 as ack_push, for the first offending id, and then none is recorded';

-- == 10n. tier evaluation speed (issue 10)
-- No foreign keys on the tables the tier functions write (see loyalty.sql):
-- only the API writes them, from rows it just read, and the rows they
-- named are never deleted; the checks were about 40% of a tier sweep.
ALTER TABLE wallet.member_events DROP CONSTRAINT member_events_merchant_id_fkey,
                                 DROP CONSTRAINT member_events_member_id_fkey;
ALTER TABLE wallet.account_tiers DROP CONSTRAINT account_tiers_account_id_fkey,
                                 DROP CONSTRAINT account_tiers_merchant_id_fkey,
                                 DROP CONSTRAINT account_tiers_member_id_fkey,
                                 DROP CONSTRAINT account_tiers_program_id_fkey,
                                 DROP CONSTRAINT account_tiers_tier_id_fkey;
ALTER TABLE wallet.tier_history DROP CONSTRAINT tier_history_merchant_id_fkey,
                                DROP CONSTRAINT tier_history_member_id_fkey,
                                DROP CONSTRAINT tier_history_program_id_fkey,
                                DROP CONSTRAINT tier_history_from_tier_fkey,
                                DROP CONSTRAINT tier_history_to_tier_fkey;

-- evaluate_tiers: the sweep writes a batch without speculative insertion
-- and reads each tier row by its key.
CREATE OR REPLACE FUNCTION wallet.evaluate_tiers(program_id bigint, as_of timestamptz DEFAULT now(), max_accounts int DEFAULT 10000,
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
BEGIN
    IF program_id IS NULL OR as_of IS NULL OR max_accounts IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN program_id IS NULL THEN 'program_id' WHEN as_of IS NULL THEN 'as_of' ELSE 'max_accounts' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Tiers are evaluated for a program, as of an instant, a bounded number of accounts at a time.';
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
    IF FOUND AND looked_at < max_accounts THEN
        SELECT array_agg(x.min_points ORDER BY x.rank) AS pts, array_agg(x.rank ORDER BY x.rank) AS ranks,
               array_agg(x.tier_id ORDER BY x.rank) AS ids, coalesce(bool_or(x.min_spend IS NOT NULL), false) AS by_spend
          INTO t FROM wallet.tiers x WHERE x.program_id = evaluate_tiers.program_id;
        -- accounts that qualify for a tier by points (an upper bound: spend can only lower it)
        SELECT x.looked_at AS n, x.last_account AS last, x.qualified AS ids INTO chunk
          FROM wallet_internal.tier_sweep_scan(evaluate_tiers.program_id, s.after_account, max_accounts - looked_at,
                                               p.tier_window, p.tier_window_months, as_of, coalesce(t.pts, '{}')) x;
        looked_at := looked_at + chunk.n;
        -- and those holding a tier, in the same range of accounts
        SELECT array_agg(DISTINCT x.id ORDER BY x.id) INTO ids
          FROM (SELECT unnest(chunk.ids) AS id
                UNION ALL
                SELECT h.account_id FROM wallet.account_tiers h
                 WHERE h.program_id = evaluate_tiers.program_id AND h.rank > 0
                   AND h.account_id > s.after_account AND h.account_id <= chunk.last) x;
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
        IF chunk.n < max_accounts - (looked_at - chunk.n) THEN
            DELETE FROM wallet.tier_sweeps x WHERE x.program_id = evaluate_tiers.program_id;
        ELSE
            UPDATE wallet.tier_sweeps x SET after_account = chunk.last WHERE x.program_id = evaluate_tiers.program_id;
        END IF;
    END IF;
    -- more: the batch was full (an account a posting held stays due, for the next call)
    more := due = max_accounts OR EXISTS (SELECT FROM wallet.tier_sweeps x WHERE x.program_id = evaluate_tiers.program_id);
END
$$;
COMMENT ON FUNCTION wallet.evaluate_tiers(bigint, timestamptz, int) IS 'makes the due tier changes of a program at as_of (downgrades after grace or at a period end, and upgrades missed after a change of its tiers or policy), looking at up to max_accounts accounts; points in the window come from each ledger''s monthly buckets, not the journal; more: call again';

-- == 10q. push enqueue in C (issue 12)
-- wallet.enqueue_push becomes a C function (src/push_enqueue.c) deciding with
-- the C core of src/push_decide.c, whose per-backend cache of merchants'
-- settings, topics and caps is dropped by statement triggers; the cap
-- indexes of wallet.push_messages become covering (index-only counts), and
-- push_messages and push_dedup lose their foreign key to merchants.

-- no foreign key to merchants on push_messages and push_dedup (a MultiXact on
-- the merchant's row once enqueues overlap; see sql/ext/push.sql)
ALTER TABLE wallet.push_messages DROP CONSTRAINT push_messages_merchant_id_fkey;
ALTER TABLE wallet.push_dedup DROP CONSTRAINT push_dedup_merchant_id_fkey;
DROP INDEX wallet.push_messages_member_idx;
DROP INDEX wallet.push_messages_member_sent_idx;
-- the caps: a member's messages by channel, cap group and slot, those sent
-- (or being sent, at their claim time) apart from those queued (at their
-- planned slot: the claim-time check counts only the former); covering, so
-- that a count reads the index only (issue 12)
CREATE INDEX push_messages_member_idx ON wallet.push_messages (member_id, channel, cap_group, slot_at) INCLUDE (priority)
    WHERE status = 'queued';
CREATE INDEX push_messages_member_sent_idx ON wallet.push_messages (member_id, channel, cap_group, slot_at)
    WHERE status IN ('sending', 'sent');

-- enqueue_push caches each merchant's settings, topics and caps per backend
-- (src/push_decide.c): a change of them drops every backend's cache
CREATE FUNCTION wallet_internal.push_config_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'push_config_changed' LANGUAGE C;
COMMENT ON FUNCTION wallet_internal.push_config_changed() IS 'internal: statement trigger on wallet.push_settings, push_topics and push_caps: every backend drops its cache of merchants'' push settings, topics and caps';
CREATE TRIGGER push_config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON wallet.push_settings
    FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.push_config_changed();
COMMENT ON TRIGGER push_config_changed ON wallet.push_settings IS 'drops the per-backend cache of push settings (enqueue_push)';
CREATE TRIGGER push_config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON wallet.push_topics
    FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.push_config_changed();
COMMENT ON TRIGGER push_config_changed ON wallet.push_topics IS 'drops the per-backend cache of push topics (enqueue_push)';
CREATE TRIGGER push_config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON wallet.push_caps
    FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.push_config_changed();
COMMENT ON TRIGGER push_config_changed ON wallet.push_caps IS 'drops the per-backend cache of push caps (enqueue_push)';

-- In C (src/push_enqueue.c, issue 12): the checks of member_check and
-- push_check_message, member_ensure, and the decision of push_enqueue with
-- saved plans and cached merchant settings (src/push_decide.c).
CREATE OR REPLACE FUNCTION wallet.enqueue_push(merchant_id bigint, member_ref text, channel text, topic text, payload jsonb,
        campaign_id bigint DEFAULT NULL, dedup_key text DEFAULT NULL, not_before timestamptz DEFAULT now(),
        expires_at timestamptz DEFAULT NULL, priority int DEFAULT 0,
        OUT push_id bigint, OUT status text, OUT reason text, OUT eligible_at timestamptz)
    LANGUAGE C
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'enqueue_push';
COMMENT ON FUNCTION wallet.enqueue_push(bigint, text, text, text, jsonb, bigint, text, timestamptz, timestamptz, int) IS 'enqueues a message for a member: queued (eligible now), deferred (quiet_hours or frequency_cap, with the time it becomes eligible), suppressed (no_consent, consent_withdrawn, topic_not_chosen, muted, member_forgotten, expired, expires_before_slot, frequency_cap with policy drop) or duplicate (dedup_key used before by the merchant); every outcome is recorded in wallet.push_messages';

-- == 10t. time zone names read once per backend
-- pg_timezone_names loads every file of the time zone database per scan
-- (tens of milliseconds per call): upsert_member and set_push_settings check
-- a name with wallet_internal.time_zone_known (src/time_zones.c) instead.

CREATE FUNCTION wallet_internal.time_zone_known(name text) RETURNS boolean
    LANGUAGE C STRICT STABLE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'time_zone_known';
COMMENT ON FUNCTION wallet_internal.time_zone_known(text) IS 'internal: whether name is a time zone name of pg_timezone_names (case-sensitive), from a sorted copy of the names read once per backend';

CREATE OR REPLACE FUNCTION wallet.upsert_member(merchant_id bigint, member_ref text, time_zone text DEFAULT NULL,
        locale text DEFAULT NULL) RETURNS wallet.members
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
    r wallet.members;
BEGIN
    IF time_zone IS NOT NULL
       AND NOT wallet_internal.time_zone_known(upsert_member.time_zone) THEN
        RAISE EXCEPTION 'unknown time zone "%"', left(time_zone, 64)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A member''s time zone is an IANA name such as Europe/Zurich (see pg_timezone_names).';
    END IF;
    IF locale IS NOT NULL
       AND (length(locale) > 35
            OR locale !~ '^[A-Za-z]{2,3}(-[A-Za-z]{4})?(-([A-Za-z]{2}|[0-9]{3}))?(-([A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*$') THEN
        RAISE EXCEPTION 'invalid locale "%"', left(locale, 64)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A member''s locale is a BCP 47 language tag such as de-CH, pt-BR or zh-Hant-TW.';
    END IF;
    id := wallet_internal.member_ensure(merchant_id, member_ref);
    UPDATE wallet.members m
       SET time_zone = coalesce(upsert_member.time_zone, m.time_zone),
           locale = coalesce(upsert_member.locale, m.locale),
           updated_at = now()
     WHERE m.member_id = id
       AND (m.time_zone IS DISTINCT FROM coalesce(upsert_member.time_zone, m.time_zone)
            OR m.locale IS DISTINCT FROM coalesce(upsert_member.locale, m.locale));
    SELECT * INTO r FROM wallet.members m WHERE m.member_id = id;
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet.upsert_member(bigint, text, text, text) IS 'returns the member of member_ref at the merchant, creating it if needed and setting its IANA time zone and BCP 47 locale when given (NULL keeps the current value)';

CREATE OR REPLACE FUNCTION wallet.set_push_settings(merchant_id bigint, quiet_start time DEFAULT '22:00', quiet_end time DEFAULT '08:00',
        time_zone text DEFAULT 'UTC', max_attempts int DEFAULT 5, backoff interval DEFAULT '30 seconds',
        retention interval DEFAULT '90 days') RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.check_merchant(merchant_id);
    PERFORM wallet_internal.push_check_quiet(quiet_start, quiet_end);
    IF time_zone IS NULL OR max_attempts IS NULL OR backoff IS NULL OR retention IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN time_zone IS NULL THEN 'time_zone' WHEN max_attempts IS NULL THEN 'max_attempts'
                                                   WHEN backoff IS NULL THEN 'backoff' ELSE 'retention' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Every setting has a value; call without it for the default.';
    END IF;
    IF NOT wallet_internal.time_zone_known(set_push_settings.time_zone) THEN
        RAISE EXCEPTION 'unknown time zone "%"', left(time_zone, 64)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A time zone is an IANA name such as Europe/Zurich (see pg_timezone_names).';
    END IF;
    IF max_attempts NOT BETWEEN 1 AND 100 OR backoff <= interval '0' OR retention <= interval '0' THEN
        RAISE EXCEPTION 'max_attempts, backoff or retention out of range'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'max_attempts is 1 to 100; backoff and retention are positive.';
    END IF;
    INSERT INTO wallet.push_settings AS s (merchant_id, quiet_start, quiet_end, time_zone, max_attempts, backoff, retention)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT ON CONSTRAINT push_settings_pkey DO UPDATE
       SET quiet_start = excluded.quiet_start, quiet_end = excluded.quiet_end, time_zone = excluded.time_zone,
           max_attempts = excluded.max_attempts, backoff = excluded.backoff, retention = excluded.retention, updated_at = now();
END
$$;
COMMENT ON FUNCTION wallet.set_push_settings(bigint, time, time, text, int, interval, interval) IS 'sets a merchant''s push settings: default quiet hours (NULL, NULL: none) and time zone, delivery attempts, backoff and retention';

-- == 10u. a member's push lock is a row lock
-- One member's push decisions were serialised by a transaction advisory lock
-- per member: one shared lock-table entry each, so that a transaction
-- deciding for many members (consents recorded in bulk, a claim of up to
-- 10,000 messages) ran out of shared memory.  The lock is now the member's
-- row, FOR NO KEY UPDATE (src/push_enqueue.c and src/push_claim.c take it
-- in their look-ups).

CREATE OR REPLACE FUNCTION wallet_internal.push_lock_member(member_id bigint, wait boolean) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF wait THEN
        PERFORM FROM wallet.members m WHERE m.member_id = push_lock_member.member_id FOR NO KEY UPDATE;
        RETURN true;
    END IF;
    PERFORM FROM wallet.members m WHERE m.member_id = push_lock_member.member_id FOR NO KEY UPDATE SKIP LOCKED;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_lock_member(bigint, boolean) IS 'internal: locks the member''s row (FOR NO KEY UPDATE), serialising the member''s push decisions without a lock-table entry (wait = false: only if free, returns whether taken)';

CREATE OR REPLACE FUNCTION wallet_internal.push_enqueue(merchant_id bigint, member_id bigint, channel text, topic text,
        payload jsonb, campaign_id bigint, dedup_key text, not_before timestamptz, expires_at timestamptz, priority int,
        lock boolean, OUT push_id bigint, OUT status text, OUT reason text, OUT eligible_at timestamptz)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_variable
DECLARE
    _m bigint := merchant_id;
    _member bigint := member_id;
    _topic text := topic;
    _channel text := channel;
    svc boolean;
    grp text;
    m record;
    s record;
    t timestamptz := greatest(not_before, now());
BEGIN
    IF lock THEN
        PERFORM FROM wallet.members w WHERE w.member_id = _member FOR NO KEY UPDATE;   -- as push_lock_member
    END IF;
    push_id := nextval('wallet.push_messages_push_id_seq'::regclass);
    IF dedup_key IS NOT NULL THEN
        -- a concurrent first use of the key: waits for it, then finds it
        INSERT INTO wallet.push_dedup AS d (merchant_id, dedup_key, push_id) VALUES (_m, dedup_key, push_id)
            ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            status := 'duplicate'; reason := 'dedup_key';
        END IF;
    END IF;
    -- what the decision needs, in one query: the topic's kind (push_topic),
    -- the member's consent and preferences (push_refusal), quiet hours, and
    -- whether a cap is reached at t (counted as push_slot counts when
    -- planning); only quiet hours or a reached cap need push_slot
    SELECT coalesce(tp.service, _topic = 'service') AS service,
           CASE WHEN tp.merchant_id IS NOT NULL THEN tp.cap_group WHEN _topic = 'service' THEN NULL ELSE 'marketing' END AS cap_group,
           w.status = 'forgotten' AS forgotten, c.granted, p.topics, p.max_per_day, p.max_per_week,
           coalesce(w.time_zone, st.time_zone, 'UTC') AS tz,
           CASE WHEN p.quiet_start IS NOT NULL THEN p.quiet_start WHEN st.merchant_id IS NULL THEN time '22:00' ELSE st.quiet_start END AS qs,
           CASE WHEN p.quiet_start IS NOT NULL THEN p.quiet_end WHEN st.merchant_id IS NULL THEN time '08:00' ELSE st.quiet_end END AS qe
      INTO m
      FROM wallet.members w
      LEFT JOIN wallet.push_topics tp ON tp.merchant_id = _m AND tp.topic = _topic
      LEFT JOIN wallet.push_consents c ON c.merchant_id = _m AND c.member_id = _member AND c.channel = _channel AND c.topic = _topic
      LEFT JOIN wallet.push_preferences p ON p.member_id = _member
      LEFT JOIN wallet.push_settings st ON st.merchant_id = _m
     WHERE w.member_id = _member;
    svc := m.service; grp := m.cap_group;
    IF status IS NULL THEN
        reason := CASE WHEN m.forgotten THEN 'member_forgotten'
                       WHEN svc THEN CASE WHEN m.granted IS FALSE THEN 'muted' END
                       WHEN m.granted IS NULL THEN 'no_consent'
                       WHEN NOT m.granted THEN 'consent_withdrawn'
                       WHEN m.topics IS NOT NULL AND NOT _topic = ANY (m.topics) THEN 'topic_not_chosen' END;
        IF reason IS NOT NULL THEN
            status := 'suppressed';
        ELSIF expires_at IS NOT NULL AND expires_at <= t THEN
            status := 'suppressed'; reason := 'expired';
        ELSIF (svc OR wallet_internal.push_quiet_until(t, m.tz, m.qs, m.qe) IS NULL)
              AND (grp IS NULL OR NOT EXISTS (
                  SELECT FROM (SELECT k.period, k.max_count, k.window_size FROM wallet.push_caps k
                                WHERE k.merchant_id = _m AND k.channel = _channel AND k.cap_group = grp
                               UNION ALL
                               SELECT 'day', m.max_per_day, NULL::interval WHERE m.max_per_day IS NOT NULL
                               UNION ALL
                               SELECT 'week', m.max_per_week, NULL::interval WHERE m.max_per_week IS NOT NULL) k
                  CROSS JOIN LATERAL (
                      SELECT CASE WHEN k.period = 'rolling' THEN t - k.window_size
                                  ELSE date_trunc(k.period, t AT TIME ZONE m.tz) AT TIME ZONE m.tz END AS ws,
                             CASE WHEN k.period = 'rolling' THEN t
                                  ELSE (date_trunc(k.period, t AT TIME ZONE m.tz)
                                        + CASE k.period WHEN 'day' THEN interval '1 day' ELSE interval '7 days' END) AT TIME ZONE m.tz END AS we) b
                  WHERE (SELECT count(*) FROM wallet.push_messages y
                          WHERE y.member_id = _member AND y.channel = _channel AND y.cap_group = grp
                            AND (y.status IN ('sending', 'sent') OR (y.status = 'queued' AND y.priority >= push_enqueue.priority))
                            AND y.slot_at >= b.ws AND y.slot_at <= b.we
                            AND (y.slot_at > b.ws OR k.period <> 'rolling') AND (y.slot_at < b.we OR k.period = 'rolling')) >= k.max_count)) THEN
            -- t itself is fine
            status := 'queued'; eligible_at := t;
        ELSE
            s := wallet_internal.push_slot(_m, _member, _channel, grp, svc, priority, t, true, NULL);
            IF s.slot IS NULL THEN
                status := 'suppressed'; reason := s.reason;
            ELSIF expires_at IS NOT NULL AND s.slot >= expires_at THEN
                status := 'suppressed'; reason := 'expires_before_slot';
            ELSE
                eligible_at := s.slot;
                status := CASE WHEN s.reason IS NULL THEN 'queued' ELSE 'deferred' END;
                reason := s.reason;
            END IF;
        END IF;
    END IF;
    INSERT INTO wallet.push_messages (push_id, merchant_id, member_id, channel, topic, cap_group, service, payload, campaign_id,
                                      dedup_key, priority, not_before, expires_at, outcome, outcome_reason, status, reason,
                                      due_at, slot_at, finished_at, part)
    OVERRIDING SYSTEM VALUE
    VALUES (push_id, _m, _member, _channel, _topic, grp, svc, payload, campaign_id, dedup_key, priority, not_before, expires_at,
            status, reason, CASE WHEN status IN ('queued', 'deferred') THEN 'queued' ELSE status END, reason,
            eligible_at, eligible_at, CASE WHEN status IN ('queued', 'deferred') THEN NULL ELSE now() END,
            CASE WHEN status IN ('queued', 'deferred') THEN (SELECT (q.last_value % 4)::smallint FROM wallet_internal.push_queue_slot q) ELSE 3 END);
    IF status = 'queued' THEN
        PERFORM wallet_internal.push_notify(_channel);
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_enqueue(bigint, bigint, text, text, jsonb, bigint, text, timestamptz, timestamptz, int, boolean) IS 'internal: decides and records one message for one member (queued, deferred, suppressed or duplicate, with the reason), optionally under the member''s lock';

-- == 10v. budget takes wait only for their own slice
-- A gather waited for the slices above its own while holding those below:
-- never a deadlock, but near exhaustion a convoy (32 racing sessions stalled
-- for 40 s, the last units locked in the low slices of the waiting takes).
-- A take now waits only for its own slice and only tries the others; a take
-- that falls short keeps what it gathered in its own slice.

CREATE OR REPLACE FUNCTION wallet_internal.budget_take(campaign_id bigint, units bigint, allow_partial boolean DEFAULT false)
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

-- == 10w. a same-key call under REPEATABLE READ is a serialization failure
-- Under REPEATABLE READ a redemption or reservation whose key another call
-- used and committed after the snapshot met that row only at the key's
-- unique index: 23505, which says "duplicate merchant name" elsewhere and
-- which clients do not retry.  The inserts are ON CONFLICT DO NOTHING now,
-- which PostgreSQL turns into 40001 for a row the snapshot cannot see (the C
-- statement path of wallet.redeem_code does the same).

CREATE OR REPLACE FUNCTION wallet_internal.redeem_code_full(code text, member_ref text, idempotency_key text, context jsonb DEFAULT '{}')
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

CREATE OR REPLACE FUNCTION wallet.reserve_code(code text, member_ref text, idempotency_key text, ttl interval, context jsonb DEFAULT '{}')
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
    IF _ttl IS NULL THEN
        RAISE EXCEPTION 'reservation ttl must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A reservation holds a code for a given time.';
    END IF;
    IF _ttl <= interval '0' THEN
        RAISE EXCEPTION 'reservation ttl must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A reservation holds a code for a positive time; %s was given.', _ttl);
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
    'reserve a code for a member for ttl: the reservation counts against every cap until redeem_code with the same idempotency key converts it, release_reservation releases it, or it expires (at once, by clock time); returns the refusal status of check_code otherwise';

-- == 10x. no foreign keys on the push queue's hot tables
-- Each check locked the member's and the campaign's row FOR KEY SHARE for
-- every message written, moved or acknowledged (MultiXacts on the rows every
-- worker of a campaign send touches); the push functions write these rows
-- only for a member and campaign they checked, and neither is ever deleted.

ALTER TABLE wallet.push_messages DROP CONSTRAINT push_messages_member_id_fkey,
                                 DROP CONSTRAINT push_messages_campaign_id_fkey;
ALTER TABLE wallet.push_attempts DROP CONSTRAINT push_attempts_merchant_id_fkey,
                                 DROP CONSTRAINT push_attempts_member_id_fkey;

-- == 10z. shared objects, final (issues 10-12)
-- Objects that several sections above re-create (each with what its area
-- added): their final definitions, exactly as the parts have them.

CREATE OR REPLACE VIEW wallet.error_codes (sqlstate, name, description) AS VALUES
    ('WL001', 'root_key_not_loaded', 'a function that needs the root key runs on a server started without one (hint: the settings to configure)'),
    ('WL002', 'idempotency_key_reused', 'an idempotency key is sent again with a different fingerprint (see Idempotency): a posting with other points, reason, reference, expiry, hold or operation on the same account; a redemption or reservation with another code, member or ttl, or a redemption''s key for a reservation'),
    ('WL101', 'unknown_campaign', 'generate_codes, rotate_code_key, retire_code_key on a campaign that does not exist'),
    ('WL102', 'unknown_merchant', 'create_campaign, create_program, set_code_guard or clear_code_failures for a merchant that does not exist'),
    ('WL103', 'unknown_key_version', 'retire_code_key of a version the campaign does not have'),
    ('WL104', 'retire_current_key', 'retire_code_key of the version that signs new codes (rotate first)'),
    ('WL105', 'key_versions_exhausted', 'rotate_code_key past version 1023'),
    ('WL106', 'serials_exhausted', 'generate_codes past serial 2^38 − 1 (the refused call uses up no serial)'),
    ('WL107', 'campaign_field_fixed', 'an UPDATE changing a campaign''s prefix or mac_bits, or lowering its current_key_version'),
    ('WL108', 'current_key_retired', 'generate_codes when the campaign''s current key version was retired by hand'),
    ('WL109', 'serial_sequence_missing', 'generate_codes, campaign_next_serial when the campaign''s sequence wallet.campaign_<id>_serials was dropped by hand (it is not recreated: that would repeat serials)'),
    ('WL110', 'campaign_ids_exhausted', 'create_campaign once every campaign id up to 2^32 − 1 (the largest a code carries) has been handed out'),
    ('WL120', 'installation_id_fixed', 'UPDATE, DELETE or TRUNCATE of wallet.installation, or a new installation id once key versions are bound to the current one'),
    ('WL121', 'key_binding_fixed', 'an unbound (legacy) key version inserted by anyone but the owner of wallet.code_keys, or a key version''s installation_id changed'),
    ('WL122', 'campaign_not_deletable', 'DELETE or TRUNCATE of wallet.campaigns (end a campaign instead)'),
    ('WL123', 'campaign_id_reused', 'an INSERT into wallet.campaigns with an explicit campaign_id the identity has already handed out'),
    ('WL150', 'unknown_redemption', 'undo_redemption names no redemption'),
    ('WL151', 'redemption_already_undone', 'undo_redemption on a redemption that is already undone'),
    ('WL152', 'unknown_reservation', 'release_reservation names no reservation'),
    ('WL153', 'reservation_converted', 'release_reservation on a reservation that was already redeemed (undo the redemption instead)'),
    ('WL201', 'unknown_account', 'no points account with that id'),
    ('WL202', 'program_closed', 'a posting or a new account in a closed program'),
    ('WL203', 'insufficient_points', 'a redemption, hold or negative adjustment exceeds the spendable balance; nothing is posted'),
    ('WL204', 'invalid_amount', 'points missing, zero or negative where a positive number is required (zero for adjust)'),
    ('WL205', 'amount_out_of_range', 'a balance, lot or lifetime total would exceed bigint'),
    ('WL206', 'unknown_hold', 'no hold with that id'),
    ('WL207', 'hold_not_open', 'the hold was already captured or released (and this is not the identical repeated call)'),
    ('WL208', 'hold_expired', 'capture after the hold''s time to live ran out'),
    ('WL209', 'capture_exceeds_hold', 'capture of more points than the hold holds'),
    ('WL210', 'entry_already_reversed', 'the entry was already reversed'),
    ('WL211', 'entry_not_reversible', 'only accrue, redeem and capture entries can be reversed'),
    ('WL212', 'unknown_entry', 'no journal entry with that id'),
    ('WL213', 'journal_append_only', 'UPDATE, DELETE or TRUNCATE on wallet.entries'),
    ('WL214', 'unknown_program', 'no points program with that id'),
    ('WL401', 'audit_append_only', 'UPDATE, DELETE or TRUNCATE on wallet.audit_log'),
    ('WL500', 'unknown_purchase', 'record_refund names an order the merchant never recorded'),
    ('WL501', 'refund_exceeds_purchase', 'record_refund of more than is left unrefunded of the order'),
    ('WL502', 'unknown_earning_rule', 'no earning rule with that id'),
    ('WL540', 'unknown_tier', 'update_tier, drop_tier of a tier that does not exist'),
    ('WL541', 'tier_exists', 'create_tier, update_tier with a rank or name another tier of the program has'),
    ('WL542', 'tier_thresholds_out_of_order', 'create_tier, update_tier leaving a higher rank asking for fewer points or less spend than a lower one (or the same of both)'),
    ('WL543', 'tier_in_use', 'drop_tier of a tier an account has held (its history refers to it)'),
    ('WL601', 'budget_not_set', 'a budget take, hold or status for a campaign that has no budget (wallet.set_campaign_budget)'),
    ('WL602', 'budget_below_committed', 'set_campaign_budget shrinking a budget below the units granted plus held'),
    ('WL603', 'unknown_budget_hold', 'no budget hold with that id'),
    ('WL604', 'budget_hold_closed', 'converting a released budget hold, or releasing a converted one'),
    ('WL605', 'budget_field_fixed', 'set_campaign_budget changing a budget''s unit or number of slices'),
    ('WL606', 'unknown_offer', 'no offer with that id'),
    ('WL607', 'unknown_offer_quote', 'no offer quote with that id'),
    ('WL608', 'offer_quote_unusable', 'record_purchase with a quote already used or released, or made for another member, amount or currency'),
    ('WL609', 'offer_budget_unit', 'create_offer of a kind the campaign''s budget unit cannot pay for (discounts: money or redemptions; cashback: points or redemptions)'),
    ('WL640', 'campaign_holdout_fixed', 'set_campaign_audience changing the holdout percentage of a campaign that has started, once a holdout was set'),
    ('WL670', 'no_referral_program', 'refer under a campaign that has no referral program (set one up with set_referral_program)'),
    ('WL671', 'no_share_reward', 'record_share of a campaign that has no share reward (set one up with set_share_reward)'),
    ('WL701', 'unknown_push', 'extend_lease, ack_push, fail_push, requeue_push name no message (or one purged after its retention)'),
    ('WL702', 'push_not_sending', 'extend_lease, ack_push, fail_push on a message that is not claimed (not status sending)'),
    ('WL703', 'push_not_dead', 'requeue_push of a message that is not a dead letter'),
    ('WL704', 'push_not_sent', 'record_push_event for a message that was not sent');
COMMENT ON VIEW wallet.error_codes IS 'every SQLSTATE of class WL the extension raises: code, name and when it is raised';
COMMENT ON COLUMN wallet.error_codes.sqlstate IS 'the five-character SQLSTATE, WL followed by three digits';
COMMENT ON COLUMN wallet.error_codes.name IS 'the code''s name (src/errcodes.h: ERRCODE_WL_<NAME>)';
COMMENT ON COLUMN wallet.error_codes.description IS 'when the extension raises it';

CREATE OR REPLACE PROCEDURE wallet.run_maintenance()
    LANGUAGE plpgsql
    AS $$
BEGIN
    -- 1. expiry: at most 100 batches of 1,000 due accounts, each committed
    CALL wallet.expire_points_batched(pg_catalog.now(), 1000, 100);
    -- 2. failed code attempts older than a day (the guard's default window is 15 minutes)
    PERFORM wallet.purge_code_attempts(interval '1 day');
    COMMIT;
    -- 3. expired budget holds: their units back to the slices, 1,000 per call
    --    (tidying only: a take reclaims expired holds itself before refusing)
    PERFORM wallet.reclaim_budget_holds(1000);
    COMMIT;
    -- 4. pending referrals past their window (issue 11): at most 100 batches of 1,000, each committed
    FOR i IN 1..100 LOOP
        EXIT WHEN wallet.expire_referrals(pg_catalog.now(), 1000) OPERATOR(pg_catalog.<) 1000;
        COMMIT;
    END LOOP;
    COMMIT;
    -- 5. tiers (issue 10): due downgrades and sweeps, at most 100 batches of 1,000 accounts
    CALL wallet.evaluate_tiers_batched(NULL, pg_catalog.now(), 1000, 100);
    -- 6. finished push messages past their merchant's retention (issue 12)
    PERFORM wallet.purge_pushes(10000);
    COMMIT;
    -- 7. push triggers (issue 12): points expiring, tier changes, abandoned carts, nearby stores
    PERFORM wallet.run_push_triggers(10000);
    COMMIT;
    -- 8. the push queue slots turn (issue 12: no decay), when the current one is 10 s old
    PERFORM wallet.rotate_push_queue(interval '10 seconds', 10000);
    COMMIT;
    -- 9. offer quotes expired more than a day ago (issue 11): 10,000 per call
    PERFORM wallet.purge_offer_quotes(interval '1 day', 10000);
    COMMIT;
END
$$;
COMMENT ON PROCEDURE wallet.run_maintenance() IS 'runs every periodic job with bounded work per call, committing as it goes: expiry (up to 100,000 due accounts, 1,000 per transaction), purge of failed code attempts older than a day, units of up to 1,000 expired budget holds returned, expiry of pending referrals past their window (up to 100,000, 1,000 per transaction), tier evaluation (up to 100,000 accounts, 1,000 per transaction), purge of finished push messages past retention, push triggers and the push queue''s rotation (up to 10,000 rows each), purge of offer quotes expired over a day ago (up to 10,000); later issues add their jobs here; schedule it every minute (README "Maintenance")';

CREATE OR REPLACE FUNCTION wallet.forget_member(merchant_id bigint, member_ref text, reason text) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    _merchant bigint := merchant_id;
    _ref text := member_ref;
    pseudonym text;
    _member bigint;
    n jsonb := '{}';
    c bigint;
    t text;
    also text;
BEGIN
    PERFORM wallet_internal.member_check(_merchant, _ref);
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'reason must not be %', CASE WHEN reason IS NULL THEN 'null' ELSE 'blank' END
            USING ERRCODE = CASE WHEN reason IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'An erasure is recorded with the reason it was made for.';
    END IF;
    pseudonym := 'forgotten:' || encode(sha256(convert_to(gen_random_uuid()::text || _ref, 'UTF8')), 'hex');

    UPDATE wallet.members m SET member_ref = pseudonym, time_zone = NULL, locale = NULL, status = 'forgotten', updated_at = now()
     WHERE m.merchant_id = _merchant AND m.member_ref = _ref
    RETURNING m.member_id INTO _member;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('members', c);
    UPDATE wallet.accounts a SET member_ref = pseudonym
      FROM wallet.programs p
     WHERE p.program_id = a.program_id AND p.merchant_id = _merchant AND a.member_ref = _ref;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('accounts', c);
    -- the tables of a campaign's codes: the member_ref, and what else they hold of the member
    FOR t, also IN VALUES ('code_bindings', ''), ('code_reservations', ''),
                          ('code_redemptions', ', context = ''{}'''), ('member_use_counts', '') LOOP
        EXECUTE format('UPDATE wallet.%I x SET member_ref = $1%s FROM wallet.campaigns k
                         WHERE k.campaign_id = x.campaign_id AND k.merchant_id = $2 AND x.member_ref = $3', t, also)
          USING pseudonym, _merchant, _ref;
        GET DIAGNOSTICS c = ROW_COUNT;
        n := n || jsonb_build_object(t, c);
    END LOOP;
    -- failed attempts are forensics, not totals: deleted, with those that
    -- named no merchant (they cannot be told apart by merchant)
    DELETE FROM wallet.code_failed_attempts f
     WHERE f.member_ref = _ref AND (f.merchant_id = _merchant OR f.merchant_id IS NULL);
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('code_failed_attempts', c);
    PERFORM wallet_internal.code_guard_forget(_merchant, _ref, NULL);
    -- purchases stay in the books (amounts, points); of their attributes only
    -- what describes the sale, not the buyer, is kept
    UPDATE wallet.purchases x
       SET attributes = (SELECT coalesce(jsonb_object_agg(k, v), '{}') FROM jsonb_each(x.attributes) j(k, v)
                          WHERE k IN ('store', 'channel', 'payment_method', 'categories'))
     WHERE x.merchant_id = _merchant AND x.member_id = _member
       AND EXISTS (SELECT FROM jsonb_object_keys(x.attributes) k WHERE k NOT IN ('store', 'channel', 'payment_method', 'categories'));
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('purchases', c);
    -- campaign feedback: the member's own words go, the score and category stay
    UPDATE wallet.campaign_feedback f SET comment = NULL
     WHERE f.merchant_id = _merchant AND f.member_id = _member AND f.comment IS NOT NULL;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('campaign_feedback', c);
    -- referrals (issue 11): the app's device or payment fingerprints of either
    -- side; referrals and shares name the member by member_id only
    UPDATE wallet.referrals r
       SET referrer_fingerprint = CASE WHEN r.referrer_id = _member THEN NULL ELSE r.referrer_fingerprint END,
           referee_fingerprint = CASE WHEN r.referee_id = _member THEN NULL ELSE r.referee_fingerprint END
     WHERE r.merchant_id = _merchant AND (r.referrer_id = _member OR r.referee_id = _member)
       AND ((r.referrer_id = _member AND r.referrer_fingerprint IS NOT NULL)
            OR (r.referee_id = _member AND r.referee_fingerprint IS NOT NULL));
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('referrals', c);
    -- push (issue 12): consent evidence keeps what was decided and when, not
    -- the device; messages lose their payload, queued ones are suppressed;
    -- the member's own preferences go
    UPDATE wallet.push_consent_log l SET device = NULL
     WHERE l.merchant_id = _merchant AND l.member_id = _member AND l.device IS NOT NULL;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('push_consent_log', c);
    -- (queued ones leave the queue slots for push_messages_done first)
    PERFORM wallet_internal.push_finish(ARRAY(
                SELECT x.push_id FROM wallet.push_messages x
                 WHERE x.merchant_id = _merchant AND x.member_id = _member AND x.part < 3 AND x.status = 'queued'),
            'suppressed', 'member_forgotten', NULL);
    UPDATE wallet.push_messages x SET payload = '{}'
     WHERE x.merchant_id = _merchant AND x.member_id = _member AND x.payload <> '{}';
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('push_messages', c);
    DELETE FROM wallet.push_preferences p WHERE p.merchant_id = _merchant AND p.member_id = _member;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('push_preferences', c);
    -- the app's own events (wallet.track_event: carts, locations) lose their
    -- attributes; the extension's events (tier changes, rewards, shares) carry
    -- only ids and figures and stay whole
    UPDATE wallet.member_events e SET attributes = '{}'
     WHERE e.merchant_id = _merchant AND e.member_id = _member AND e.attributes <> '{}'
       AND e.kind NOT IN ('tier_changed', 'referral_rewarded', 'shared');
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('member_events', c);

    IF NOT EXISTS (SELECT FROM jsonb_each(n) e WHERE e.value <> '0') THEN
        RETURN false;   -- nothing names the member (e.g. erased before): nothing to record
    END IF;
    PERFORM wallet_internal.audit_record(_merchant, 'forget_member',
                                jsonb_build_object('table', 'members', 'key', jsonb_build_object('member_id', _member)),
                                NULL, jsonb_build_object('reason', reason, 'pseudonym', pseudonym, 'rows', n));
    RETURN true;
END
$$;
COMMENT ON FUNCTION wallet.forget_member(bigint, text, text) IS 'erases a member''s personal data at a merchant: pseudonymises its member_ref in every table, clears its time zone, locale, request contexts and feedback comments, keeps only store, channel, payment_method and categories of its purchases'' attributes, clears referral fingerprints, deletes its failed attempts; push: clears consent devices and message payloads, suppresses queued messages, deletes its push preferences; clears the attributes of the app''s own events (wallet.track_event); ledgers and totals are unchanged; recorded in wallet.audit_log; returns false (and records nothing) when nothing names the member';

CREATE OR REPLACE FUNCTION wallet.record_purchase(merchant_id bigint, member_ref text, order_ref text, amount numeric, currency text,
        occurred_at timestamptz DEFAULT now(), attributes jsonb DEFAULT '{}',
        offers bigint[] DEFAULT NULL, codes text[] DEFAULT NULL, quote_id bigint DEFAULT NULL) RETURNS wallet.purchase_result
    AS 'MODULE_PATHNAME', 'record_purchase' LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION wallet.record_purchase(bigint, text, text, numeric, text, timestamptz, jsonb, bigint[], text[], bigint) IS 'records a purchase at checkout (creating the member and its account as needed), applies the earning rules of the merchant''s program in that currency, posts the points (accrue entry, reference order_ref) and returns the points and the rules that fired; consumes the offers named (offers, or the quote_id of wallet.quote_offers) with the codes given, recording each in wallet.purchase_offers; idempotent on (merchant, order_ref): another member, amount or currency is WL002';

-- == 9. privileges (last: covers every function)
-- Exactly the body of sql/ext/grants.sql (the last part), after every other
-- section, so that functions they re-create are covered too.

-- Privileges.  Nothing for PUBLIC; the three roles get what README "Roles
-- and privileges" lists.  Every function that pins its search_path runs as
-- the owner (SECURITY DEFINER), so the roles get no write privilege on any
-- table; generate_codes, in C, pins it too to run as the owner.  The C
-- verifiers (code_authentic, code_status, parse_code) stay as they are, for
-- speed: the campaign cache they fill reads as the owner (src/code_cache.c).
-- Not SECURITY DEFINER: functions of a value alone (type input/output,
-- operator support, accessors, the ledger_* readers, executable by the three
-- roles: operators check EXECUTE), trigger functions (they run as whoever
-- fires them: the owner, inside the API), and acts_for and caller, which
-- answer for the caller as it is.
REVOKE ALL ON ALL ROUTINES IN SCHEMA wallet FROM PUBLIC;
REVOKE ALL ON ALL ROUTINES IN SCHEMA wallet_internal FROM PUBLIC;
GRANT USAGE ON SCHEMA wallet TO wallet_admin, wallet_app, wallet_reader;
ALTER FUNCTION wallet.generate_codes(bigint, int) SET search_path = pg_catalog, pg_temp;
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_catalog.pg_proc p
              WHERE p.pronamespace IN ('wallet'::regnamespace, 'wallet_internal'::regnamespace)
                AND p.prokind = 'f' AND p.prorettype <> 'trigger'::regtype
                AND 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig)
              ORDER BY p.oid LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SECURITY DEFINER', f);
    END LOOP;
    FOR f IN SELECT p.oid FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'wallet'::regnamespace
                AND p.proname ~ '^(marketing_code|points_ledger)_'
              ORDER BY p.oid LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO wallet_admin, wallet_app, wallet_reader', f);
    END LOOP;
END
$$;
-- No JIT on the request path.  The functions run kept generic plans, made
-- once per session for any size of table: the candidates of claim_pushes
-- (LIMIT $n, estimated as a tenth of the queue) cross jit_above_cost once a
-- channel holds some ten million messages, and a plan above it compiles its
-- expressions at every execution (a claim of one message fell from 2,007 to
-- 43 a second; README "Speed").  The reports, which scan, keep the server's
-- setting.  Procedures cannot carry a SET clause (they commit); the
-- functions they call carry it.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'wallet'::regnamespace AND p.prokind = 'f'
                AND 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig)
                AND p.proname NOT IN ('campaign_cohorts', 'campaign_report', 'program_liability', 'push_funnel',
                                      'push_retention', 'push_stats', 'replay_ledger', 'rfm', 'verify_ledger')
              ORDER BY p.oid LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET jit = off', f);
    END LOOP;
END
$$;
-- values: no table behind them (the installation id is no secret)
GRANT EXECUTE ON FUNCTION wallet.version(), wallet.installation_id(), wallet.acts_for(bigint), wallet.my_merchants(),
    wallet.code_campaign(wallet.marketing_code), wallet.code_serial(wallet.marketing_code),
    wallet.code_key_version(wallet.marketing_code), wallet.code_mac_bits(wallet.marketing_code),
    wallet.code_prefix(wallet.marketing_code),
    wallet.ledger_balance(wallet.points_ledger, timestamptz), wallet.ledger_expiring(wallet.points_ledger, timestamptz, interval),
    wallet.ledger_earned(wallet.points_ledger, timestamptz, timestamptz), wallet.ledger_lots(wallet.points_ledger),
    wallet.ledger_totals(wallet.points_ledger), wallet.ledger_diff(wallet.points_ledger, wallet.points_ledger),
    wallet.policy_expiry(timestamptz, interval, text)
    TO wallet_admin, wallet_app, wallet_reader;
-- reading a merchant's points (and codes: the unthrottled verifiers)
GRANT EXECUTE ON FUNCTION wallet.balance(bigint, timestamptz), wallet.balance_at(bigint, timestamptz),
    wallet.history(bigint, timestamptz, timestamptz), wallet.replay_ledger(bigint, timestamptz),
    wallet.find_account(bigint, text), wallet.program_liability(bigint, timestamptz), wallet.verify_ledger(bigint)
    TO wallet_admin, wallet_app, wallet_reader;
GRANT EXECUTE ON FUNCTION wallet.code_authentic(wallet.marketing_code), wallet.code_status(wallet.marketing_code),
    wallet.parse_code(text), wallet.campaign_next_serial(bigint)
    TO wallet_admin, wallet_reader;
-- the app: accounts, postings, codes issued, checked, reserved, redeemed
GRANT EXECUTE ON FUNCTION wallet.open_account(bigint, text),
    wallet.accrue(bigint, bigint, text, text, text, timestamptz), wallet.redeem(bigint, bigint, text, text, text),
    wallet.hold(bigint, bigint, text, interval, text, text), wallet.capture(bigint, bigint, text),
    wallet.release(bigint, text), wallet.reverse(bigint, text, text, text),
    wallet.issue_code(bigint, text),
    wallet.check_code(text, text), wallet.check_code(text, text, jsonb), wallet.check_code(wallet.marketing_code, text, jsonb),
    wallet.redeem_code(text, text, text, jsonb), wallet.redeem_code(wallet.marketing_code, text, text, jsonb),
    wallet.reserve_code(text, text, text, interval, jsonb), wallet.reserve_code(wallet.marketing_code, text, text, interval, jsonb),
    wallet.release_reservation(bigint), wallet.undo_redemption(bigint, text),
    wallet.upsert_member(bigint, text, text, text)
    TO wallet_app;
-- the admin: merchants, programs, campaigns and keys, guard, maintenance, grants
GRANT EXECUTE ON FUNCTION wallet.create_merchant(text), wallet.grant_merchant(bigint, regrole),
    wallet.revoke_merchant(bigint, regrole),
    wallet.create_program(bigint, text, interval, text), wallet.close_program(bigint),
    wallet.adjust(bigint, bigint, text, text),
    wallet.create_campaign(bigint, text, text, int, timestamptz, timestamptz, int, int, bigint),
    wallet.rotate_code_key(bigint), wallet.retire_code_key(bigint, int), wallet.generate_codes(bigint, int),
    wallet.set_code_guard(int, int, interval, bigint), wallet.clear_code_failures(text, text, bigint),
    wallet.purge_code_attempts(interval), wallet.expire_points(timestamptz),
    wallet.forget_member(bigint, text, text)
    TO wallet_admin;
-- campaign audience, analytics, segments, feedback (issue 11)
GRANT EXECUTE ON FUNCTION wallet.campaign_group(bigint, text) TO wallet_admin, wallet_app, wallet_reader;
GRANT EXECUTE ON FUNCTION wallet.record_feedback(bigint, text, integer, text, text, text) TO wallet_app;
GRANT EXECUTE ON FUNCTION wallet.set_campaign_audience(bigint, text, numeric, bigint, integer, text[], text[], timestamptz) TO wallet_admin;
GRANT EXECUTE ON FUNCTION wallet.rfm(bigint, timestamptz, text),
    wallet.campaign_report(bigint, timestamptz, timestamptz, text),
    wallet.campaign_cohorts(bigint, timestamptz, timestamptz, integer, text)
    TO wallet_admin, wallet_reader;
-- push queue (issue 12): the app records consent and preferences, enqueues and delivers; the admin sets the rules
GRANT EXECUTE ON FUNCTION wallet.record_consent(bigint, text, text, text, boolean, text, text, text, timestamptz),
    wallet.set_push_preferences(bigint, text, time, time, text[], int, int),
    wallet.enqueue_push(bigint, text, text, text, jsonb, bigint, text, timestamptz, timestamptz, int),
    wallet.enqueue_push_audience(bigint, text[], text, text, jsonb, bigint, text, timestamptz, timestamptz, int),
    wallet.claim_pushes(text, int, interval), wallet.extend_lease(bigint, interval), wallet.ack_push(bigint, text),
    wallet.ack_pushes(bigint[], text[]),
    wallet.fail_push(bigint, text, boolean), wallet.record_push_event(bigint, text, timestamptz),
    wallet.enqueue_push_local(bigint, text[], text, text, jsonb, timestamp, bigint, text, timestamptz, int),
    wallet.track_event(bigint, text, text, jsonb, timestamptz)
    TO wallet_app;
-- push figures: for the app, the admin and the analysts
GRANT EXECUTE ON FUNCTION wallet.push_stats(bigint, bigint, interval, interval), wallet.push_funnel(bigint, bigint, interval, interval),
    wallet.push_retention(bigint, bigint, int)
    TO wallet_admin, wallet_app, wallet_reader;
GRANT EXECUTE ON FUNCTION wallet.set_push_settings(bigint, time, time, text, int, interval, interval),
    wallet.set_push_topic(bigint, text, boolean, text), wallet.set_push_cap(bigint, text, text, text, int, interval, text),
    wallet.requeue_push(bigint), wallet.purge_pushes(int),
    wallet.set_push_store(bigint, text, double precision, double precision, double precision, interval),
    wallet.create_push_trigger(bigint, text, text, text, jsonb, jsonb, bigint), wallet.run_push_triggers(int)
    TO wallet_admin;
-- the turn of the push queue slots: the sending workers (the app) and the maintenance (the admin)
GRANT EXECUTE ON FUNCTION wallet.rotate_push_queue(interval, int) TO wallet_admin, wallet_app;
GRANT EXECUTE ON PROCEDURE wallet.expire_points_batched(timestamptz, int, int), wallet.run_maintenance() TO wallet_admin;
-- what those procedures (not SECURITY DEFINER: they commit) call
GRANT USAGE ON SCHEMA wallet_internal TO wallet_admin;
GRANT EXECUTE ON FUNCTION wallet_internal.check_expiry_as_of(timestamptz), wallet_internal.expire_due_accounts(timestamptz, int) TO wallet_admin;
-- campaign budgets (issue 11): the admin sets them, every role reads them;
-- takes and holds are internal (the offers' checkout calls them)
GRANT EXECUTE ON FUNCTION wallet.set_campaign_budget(bigint, text, bigint, int), wallet.reclaim_budget_holds(int) TO wallet_admin;
GRANT EXECUTE ON FUNCTION wallet.campaign_budget(bigint) TO wallet_admin, wallet_app, wallet_reader;
-- purchases and earning rules (issue 10): the app records, the admin sets the rules
GRANT EXECUTE ON FUNCTION wallet.record_purchase(bigint, text, text, numeric, text, timestamptz, jsonb, bigint[], text[], bigint),
    wallet.record_refund(bigint, text, numeric, text)
    TO wallet_app;
GRANT EXECUTE ON FUNCTION wallet.preview_purchase(bigint, text, text, numeric, text, timestamptz, jsonb)
    TO wallet_app, wallet_reader;
GRANT EXECUTE ON FUNCTION wallet.set_program_earning(bigint, text, text, boolean, numeric),
    wallet.create_earning_rule(bigint, text, text, numeric, jsonb, jsonb, timestamptz, timestamptz, int, boolean, bigint),
    wallet.update_earning_rule(bigint, text, numeric, jsonb, jsonb, timestamptz, int, boolean),
    wallet.end_earning_rule(bigint, timestamptz)
    TO wallet_admin;
-- referrals and sharing (issue 11): the app refers and records shares, the admin sets the rewards up
GRANT EXECUTE ON FUNCTION wallet.refer(bigint, text, text, text, bigint, text, text),
    wallet.record_share(bigint, text, bigint, text, text)
    TO wallet_app;
GRANT EXECUTE ON FUNCTION wallet.set_referral_program(bigint, bigint, bigint, bigint, int, numeric, text, int, text),
    wallet.set_share_reward(bigint, bigint, bigint, int, int), wallet.expire_referrals(timestamptz, int)
    TO wallet_admin;
-- tiers (issue 10): the admin configures and evaluates, everyone reads a member's tier
GRANT EXECUTE ON FUNCTION wallet.create_tier(bigint, int, text, bigint, numeric, numeric, jsonb),
    wallet.update_tier(bigint, text, bigint, numeric, numeric, jsonb, boolean), wallet.drop_tier(bigint),
    wallet.set_tier_policy(bigint, text, int, text, int, text), wallet.evaluate_tiers(bigint, timestamptz, int),
    wallet_internal.tier_programs_due(bigint, timestamptz)
    TO wallet_admin;
GRANT EXECUTE ON PROCEDURE wallet.evaluate_tiers_batched(bigint, timestamptz, int, int) TO wallet_admin;
GRANT EXECUTE ON FUNCTION wallet.member_tier(bigint, timestamptz), wallet.tier_progress(bigint)
    TO wallet_admin, wallet_app, wallet_reader;
-- offers (issue 11): the admin makes them, the app quotes and releases quotes
GRANT EXECUTE ON FUNCTION wallet.create_offer(bigint, text, text, numeric, text, numeric, jsonb, jsonb, boolean, int, boolean, boolean, timestamptz, timestamptz),
    wallet.end_offer(bigint, timestamptz), wallet.purge_offer_quotes(interval, int)
    TO wallet_admin;
GRANT EXECUTE ON FUNCTION wallet.quote_offers(bigint, text, numeric, text, timestamptz, jsonb, text[], interval),
    wallet.release_quote(bigint)
    TO wallet_app;
-- tables: read through row-level security; written only by the functions
GRANT SELECT ON ALL TABLES IN SCHEMA wallet TO wallet_app, wallet_reader;


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
-- the members erased lately (wallet_internal.forget_sweep)
CREATE INDEX members_forgotten_idx ON wallet.members (updated_at) WHERE status = 'forgotten';
COMMENT ON INDEX wallet.members_forgotten_idx IS 'the members erased lately, for the sweep of run_maintenance (wallet_internal.forget_sweep)';

-- Accounts and code bindings refer to their member (added at the end of the
-- tables, as the upgrade script adds them).
ALTER TABLE wallet.accounts ADD COLUMN member_id bigint NOT NULL REFERENCES wallet.members;
COMMENT ON COLUMN wallet.accounts.member_id IS 'the member owning the account (wallet.members)';
ALTER TABLE wallet.code_bindings ADD COLUMN member_id bigint NOT NULL REFERENCES wallet.members;
COMMENT ON COLUMN wallet.code_bindings.member_id IS 'the member the code is bound to (wallet.members)';
-- ... and carry their merchant (copied from the program or campaign), the key
-- to distribute them by, after member_id as the upgrade script adds it.
ALTER TABLE wallet.accounts ADD COLUMN merchant_id bigint NOT NULL;
COMMENT ON COLUMN wallet.accounts.merchant_id IS 'merchant of the program (copied from it when opened): the key to distribute by';
ALTER TABLE wallet.code_bindings ADD COLUMN merchant_id bigint NOT NULL;
COMMENT ON COLUMN wallet.code_bindings.merchant_id IS 'merchant of the campaign (copied from it when issued): the key to distribute by';

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
    IF NOT EXISTS (SELECT FROM wallet.merchants m WHERE m.merchant_id = member_check.merchant_id AND wallet.acts_for(m.merchant_id)) THEN
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
    -- FOR KEY SHARE: an erasure (which changes member_ref, a key) waits for
    -- the caller to commit, and so erases what it writes; a caller that
    -- comes after the erasure finds no member under the reference (the
    -- erased row no longer matches) and starts a new one
    SELECT m.member_id INTO id FROM wallet.members m
     WHERE m.merchant_id = member_ensure.merchant_id AND m.member_ref = member_ensure.member_ref FOR KEY SHARE;
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
COMMENT ON FUNCTION wallet_internal.member_ensure(bigint, text) IS 'internal: the member_id of member_ref at the merchant, creating the member if needed (race-safe); the row is locked FOR KEY SHARE, so that an erasure waits for the caller, or the caller after an erasure starts a new member';

-- Whether a name is one of pg_timezone_names, which loads every file of the
-- time zone database per scan: read once per backend (src/time_zones.c).
CREATE FUNCTION wallet_internal.time_zone_known(name text) RETURNS boolean
    LANGUAGE C STRICT STABLE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'time_zone_known';
COMMENT ON FUNCTION wallet_internal.time_zone_known(text) IS 'internal: whether name is a time zone name of pg_timezone_names (case-sensitive), from a sorted copy of the names read once per backend';

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
COMMENT ON TRIGGER audit_log_append_only ON wallet.audit_log IS 'refuses UPDATE, DELETE and TRUNCATE of the audit log (WL401): records are only ever added';

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
-- made with that table (sql/ext/privileges.sql).

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
    locks text[];
BEGIN
    -- a reference 0.1.0 accepted (over 256 characters, or starting with
    -- "forgotten:"), of a member the update registered, can still be erased
    IF _ref IS NOT NULL AND (length(_ref) > 256 OR _ref LIKE 'forgotten:%') AND _merchant IS NOT NULL
       AND wallet.acts_for(_merchant)
       AND EXISTS (SELECT FROM wallet.members m WHERE m.merchant_id = _merchant AND m.member_ref = _ref AND m.status = 'active') THEN
        NULL;
    ELSE
        PERFORM wallet_internal.member_check(_merchant, _ref);
    END IF;
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'reason must not be %', CASE WHEN reason IS NULL THEN 'null' ELSE 'blank' END
            USING ERRCODE = CASE WHEN reason IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'An erasure is recorded with the reason it was made for.';
    END IF;
    pseudonym := 'forgotten:' || encode(sha256(convert_to(gen_random_uuid()::text || _ref, 'UTF8')), 'hex');

    -- The member's row and its accounts at the merchant, taken together
    -- without ever waiting while holding one: calls lock them in either
    -- order (a posting locks the account, then its foreign keys the member's
    -- row; member_ensure's callers the row, then an account), so an erasure
    -- that held one and waited for the other would deadlock with them.  A
    -- try that meets a lock gives both back, waits for each of them in turn
    -- holding nothing else (taken and given back at once), and tries again.
    -- The referrals naming the member go with them (a referee's purchase
    -- locks its pending referral, then the referrer's account for the
    -- reward), and the purchases whose attributes it trims.  Erasures of one
    -- member take turns first, holding nothing else (two waiting at once
    -- would queue other calls behind both); a try that is chosen as the
    -- victim of a deadlock (a lock that follows a row's update chain waits
    -- even with NOWAIT) gives everything back and tries again too.
    PERFORM pg_advisory_xact_lock(x'5746000000000000'::bigint
                                  | (hashtextextended(_merchant::text || ':' || _ref, 0) & x'0000ffffffffffff'::bigint));
    LOOP
        -- the rows, each as the statement that locks it
        SELECT array_agg(format('SELECT FROM wallet.%I x WHERE x.%I = %s FOR UPDATE', w.tab, w.col, w.id) ORDER BY w.o, w.id)
          INTO locks
          FROM (SELECT 1 AS o, 'members' AS tab, 'member_id' AS col, m.member_id AS id
                  FROM wallet.members m WHERE m.merchant_id = _merchant AND m.member_ref = _ref
                UNION ALL
                SELECT 2, 'accounts', 'account_id', a.account_id
                  FROM wallet.accounts a JOIN wallet.programs p ON p.program_id = a.program_id
                 WHERE p.merchant_id = _merchant AND a.member_ref = _ref
                UNION ALL
                SELECT 3, 'referrals', 'referral_id', r.referral_id
                  FROM wallet.referrals r JOIN wallet.members m ON m.member_id IN (r.referrer_id, r.referee_id)
                 WHERE r.merchant_id = _merchant AND m.merchant_id = _merchant AND m.member_ref = _ref
                UNION ALL
                -- a refund of one with no account locks the purchase, then checks the member
                SELECT 4, 'purchases', 'purchase_id', x.purchase_id
                  FROM wallet.purchases x JOIN wallet.members m ON m.member_id = x.member_id
                 WHERE x.merchant_id = _merchant AND m.merchant_id = _merchant AND m.member_ref = _ref
                   AND EXISTS (SELECT FROM jsonb_object_keys(x.attributes) k
                                WHERE k NOT IN ('store', 'channel', 'payment_method', 'categories'))) w;
        BEGIN
            FOREACH t IN ARRAY coalesce(locks, '{}') LOOP
                EXECUTE t || ' NOWAIT';
            END LOOP;
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            NULL;   -- all given back with the subtransaction
        END;
        FOREACH t IN ARRAY locks LOOP
            BEGIN
                EXECUTE t;
                RAISE EXCEPTION 'waited' USING ERRCODE = 'raise_exception';
            EXCEPTION WHEN raise_exception THEN
                NULL;   -- given back at once
            END;
        END LOOP;
    END LOOP;

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
    -- the tables of a campaign's codes: the member_ref, and what else they
    -- hold of the member.  The counters first: their rows are what a
    -- redemption of the member holds until it commits, so that the
    -- redemptions (and reservations) are erased after those in flight
    -- committed, under a snapshot that sees them.  But the member's
    -- reservations and redemptions are locked before: converting a
    -- reservation and undoing a redemption lock their row, then the counter
    -- (one order for all, no deadlock)
    PERFORM FROM wallet.code_reservations x JOIN wallet.campaigns k ON k.campaign_id = x.campaign_id
     WHERE k.merchant_id = _merchant AND x.member_ref = _ref ORDER BY x.reservation_id FOR UPDATE OF x;
    PERFORM FROM wallet.code_redemptions x JOIN wallet.campaigns k ON k.campaign_id = x.campaign_id
     WHERE k.merchant_id = _merchant AND x.member_ref = _ref ORDER BY x.redemption_id FOR UPDATE OF x;
    FOR t, also IN VALUES ('member_use_counts', ''), ('code_bindings', ''), ('code_reservations', ''),
                          ('code_redemptions', ', context = ''{}''') LOOP
        EXECUTE format('UPDATE wallet.%I x SET member_ref = $1%s FROM wallet.campaigns k
                         WHERE k.campaign_id = x.campaign_id AND k.merchant_id = $2 AND x.member_ref = $3', t, also)
          USING pseudonym, _merchant, _ref;
        GET DIAGNOSTICS c = ROW_COUNT;
        n := n || jsonb_build_object(t, c);
    END LOOP;
    -- failed attempts are forensics, not totals: the merchant's are deleted
    -- (never those of no merchant: another merchant's caller may have made
    -- them; they age out through purge_code_attempts), with the guard's
    -- counters of the member in the merchant's scope
    DELETE FROM wallet.code_failed_attempts f
     WHERE f.member_ref = _ref AND f.merchant_id = _merchant;
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
    -- the device; messages lose their payload and failure texts (and their
    -- delivery records theirs), queued ones are suppressed; the member's own
    -- preferences go
    UPDATE wallet.push_consent_log l SET device = NULL
     WHERE l.merchant_id = _merchant AND l.member_id = _member AND l.device IS NOT NULL;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('push_consent_log', c);
    -- the member's messages locked first, in id order: the order a worker's
    -- ack_pushes and fail_push lock them in (an UPDATE would lock them in
    -- partition order, and deadlock with a batch acknowledgement)
    PERFORM FROM wallet.push_messages x WHERE x.merchant_id = _merchant AND x.member_id = _member ORDER BY x.push_id FOR UPDATE;
    -- (queued ones leave the queue slots for push_messages_done first)
    PERFORM wallet_internal.push_finish(ARRAY(
                SELECT x.push_id FROM wallet.push_messages x
                 WHERE x.merchant_id = _merchant AND x.member_id = _member AND x.part < 3 AND x.status = 'queued'),
            'suppressed', 'member_forgotten', NULL);
    -- (the worker's failure texts may name the member's device or address)
    UPDATE wallet.push_messages x SET payload = '{}', last_error = NULL
     WHERE x.merchant_id = _merchant AND x.member_id = _member AND (x.payload <> '{}' OR x.last_error IS NOT NULL);
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('push_messages', c);
    UPDATE wallet.push_attempts a SET error = NULL
     WHERE a.merchant_id = _merchant AND a.member_id = _member AND a.error IS NOT NULL;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n || jsonb_build_object('push_attempts', c);
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
COMMENT ON FUNCTION wallet.forget_member(bigint, text, text) IS 'erases a member''s personal data at a merchant: pseudonymises its member_ref in every table, clears its time zone, locale, request contexts and feedback comments, keeps only store, channel, payment_method and categories of its purchases'' attributes, clears referral fingerprints, deletes its failed attempts; push: clears consent devices, message payloads and the failure texts of messages and delivery records, suppresses queued messages, deletes its push preferences; clears the attributes of the app''s own events (wallet.track_event); ledgers and totals are unchanged; recorded in wallet.audit_log; returns false (and records nothing) when nothing names the member';

-- A safety net: forget_member waits for the calls in flight that write
-- push payloads, failure texts and event attributes (it locks the member
-- and the member's messages first), but a row it did not see names the
-- member by member_id only, and a later forget_member no longer finds the
-- member by its reference: run_maintenance clears such rows for the
-- members erased lately, as forget_member does.
CREATE FUNCTION wallet_internal.forget_sweep(since interval, max_members int) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    merchants bigint[] := wallet_internal.caller_merchants();
    ids bigint[];
    n bigint := 0;
    c bigint;
BEGIN
    -- those that still have such rows (a bulk erasure must not hide the
    -- older ones behind members with nothing left)
    SELECT array_agg(m.member_id) INTO ids
      FROM (SELECT x.member_id FROM wallet.members x
             WHERE x.status = 'forgotten' AND x.updated_at > now() - since
               AND (merchants IS NULL OR x.merchant_id = ANY (merchants))
               AND (EXISTS (SELECT FROM wallet.push_messages p WHERE p.merchant_id = x.merchant_id AND p.member_id = x.member_id
                                                                 AND (p.payload <> '{}' OR p.last_error IS NOT NULL))
                    OR EXISTS (SELECT FROM wallet.push_attempts a WHERE a.merchant_id = x.merchant_id AND a.member_id = x.member_id
                                                                    AND a.error IS NOT NULL)
                    OR EXISTS (SELECT FROM wallet.member_events e WHERE e.merchant_id = x.merchant_id AND e.member_id = x.member_id
                                                                    AND e.attributes <> '{}'
                                                                    AND e.kind NOT IN ('tier_changed', 'referral_rewarded', 'shared'))
                    OR EXISTS (SELECT FROM wallet.purchases u WHERE u.merchant_id = x.merchant_id AND u.member_id = x.member_id
                                                               AND EXISTS (SELECT FROM jsonb_object_keys(u.attributes) k
                                                                            WHERE k NOT IN ('store', 'channel', 'payment_method', 'categories')))
                    OR EXISTS (SELECT FROM wallet.campaign_feedback f WHERE f.merchant_id = x.merchant_id AND f.member_id = x.member_id
                                                                        AND f.comment IS NOT NULL)
                    OR EXISTS (SELECT FROM wallet.referrals r WHERE r.merchant_id = x.merchant_id
                                                                AND ((r.referrer_id = x.member_id AND r.referrer_fingerprint IS NOT NULL)
                                                                     OR (r.referee_id = x.member_id AND r.referee_fingerprint IS NOT NULL)))
                    OR EXISTS (SELECT FROM wallet.push_consent_log l WHERE l.merchant_id = x.merchant_id AND l.member_id = x.member_id
                                                                       AND l.device IS NOT NULL)
                    OR EXISTS (SELECT FROM wallet.push_preferences q WHERE q.member_id = x.member_id))
             ORDER BY x.updated_at DESC LIMIT max_members) m;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    UPDATE wallet.push_messages x SET payload = '{}', last_error = NULL
      FROM wallet.members m
     WHERE m.member_id = ANY (ids) AND x.merchant_id = m.merchant_id AND x.member_id = m.member_id
       AND (x.payload <> '{}' OR x.last_error IS NOT NULL);
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n + c;
    UPDATE wallet.push_attempts a SET error = NULL
      FROM wallet.members m
     WHERE m.member_id = ANY (ids) AND a.merchant_id = m.merchant_id AND a.member_id = m.member_id AND a.error IS NOT NULL;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n + c;
    UPDATE wallet.member_events e SET attributes = '{}'
      FROM wallet.members m
     WHERE m.member_id = ANY (ids) AND e.merchant_id = m.merchant_id AND e.member_id = m.member_id AND e.attributes <> '{}'
       AND e.kind NOT IN ('tier_changed', 'referral_rewarded', 'shared');
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n + c;
    -- what forget_member clears in the loyalty, campaign and consent tables, alike
    UPDATE wallet.purchases u
       SET attributes = (SELECT coalesce(jsonb_object_agg(k, v), '{}') FROM jsonb_each(u.attributes) j(k, v)
                          WHERE k IN ('store', 'channel', 'payment_method', 'categories'))
      FROM wallet.members m
     WHERE m.member_id = ANY (ids) AND u.merchant_id = m.merchant_id AND u.member_id = m.member_id
       AND EXISTS (SELECT FROM jsonb_object_keys(u.attributes) k WHERE k NOT IN ('store', 'channel', 'payment_method', 'categories'));
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n + c;
    UPDATE wallet.campaign_feedback f SET comment = NULL
      FROM wallet.members m
     WHERE m.member_id = ANY (ids) AND f.merchant_id = m.merchant_id AND f.member_id = m.member_id AND f.comment IS NOT NULL;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n + c;
    UPDATE wallet.referrals r
       SET referrer_fingerprint = CASE WHEN r.referrer_id = ANY (ids) THEN NULL ELSE r.referrer_fingerprint END,
           referee_fingerprint = CASE WHEN r.referee_id = ANY (ids) THEN NULL ELSE r.referee_fingerprint END
     WHERE (r.referrer_id = ANY (ids) AND r.referrer_fingerprint IS NOT NULL) OR (r.referee_id = ANY (ids) AND r.referee_fingerprint IS NOT NULL);
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n + c;
    UPDATE wallet.push_consent_log l SET device = NULL
      FROM wallet.members m
     WHERE m.member_id = ANY (ids) AND l.merchant_id = m.merchant_id AND l.member_id = m.member_id AND l.device IS NOT NULL;
    GET DIAGNOSTICS c = ROW_COUNT;
    n := n + c;
    DELETE FROM wallet.push_preferences q WHERE q.member_id = ANY (ids);
    GET DIAGNOSTICS c = ROW_COUNT;
    RETURN n + c;
END
$$;
COMMENT ON FUNCTION wallet_internal.forget_sweep(interval, int) IS 'internal (run_maintenance): clears what forget_member clears by member id (push payloads and failure texts, the app''s event attributes, purchase attributes beyond the sale, feedback comments, referral fingerprints, consent devices, push preferences) of members erased within since (at most max_members that still have such rows, the latest first, of the merchants the caller acts for) that calls committing during the erasure wrote; returns how many rows it cleared';

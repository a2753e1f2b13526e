
-- ===========================================================================
-- Marketing codes (issue 3, codes-core): the type wallet.marketing_code,
-- campaigns and their code keys, generation and authentication.
-- docs/code-format.md specifies the code format.
-- ===========================================================================

CREATE TYPE wallet.marketing_code;

CREATE FUNCTION wallet.marketing_code_in(cstring) RETURNS wallet.marketing_code
    AS 'MODULE_PATHNAME', 'marketing_code_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.marketing_code_in(cstring) IS 'text input of wallet.marketing_code: checks the symbols, length and check symbols, also of 0.1.0 texts (not the MAC)';
CREATE FUNCTION wallet.marketing_code_out(wallet.marketing_code) RETURNS cstring
    AS 'MODULE_PATHNAME', 'marketing_code_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.marketing_code_out(wallet.marketing_code) IS 'text output of wallet.marketing_code: prefix, base32 body and two check symbols in groups of 4';
CREATE FUNCTION wallet.marketing_code_recv(internal) RETURNS wallet.marketing_code
    AS 'MODULE_PATHNAME', 'marketing_code_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.marketing_code_recv(internal) IS 'binary input of wallet.marketing_code (format version byte first)';
CREATE FUNCTION wallet.marketing_code_send(wallet.marketing_code) RETURNS bytea
    AS 'MODULE_PATHNAME', 'marketing_code_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.marketing_code_send(wallet.marketing_code) IS 'binary output of wallet.marketing_code (format version byte first)';

CREATE TYPE wallet.marketing_code (
    INPUT = wallet.marketing_code_in,
    OUTPUT = wallet.marketing_code_out,
    RECEIVE = wallet.marketing_code_recv,
    SEND = wallet.marketing_code_send,
    INTERNALLENGTH = 24,
    ALIGNMENT = double,
    STORAGE = plain
);
COMMENT ON TYPE wallet.marketing_code IS 'HMAC-signed marketing code: campaign, serial, key version, prefix and truncated MAC in 24 bytes; text form like SHOP-XXXX-XXXX-XXXX-XXCC';

-- Comparison: campaign, serial, key version, MAC length, MAC, prefix (as input reads it).
CREATE FUNCTION wallet.marketing_code_eq(wallet.marketing_code, wallet.marketing_code) RETURNS boolean
    AS 'MODULE_PATHNAME', 'marketing_code_eq' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION wallet.marketing_code_eq(wallet.marketing_code, wallet.marketing_code) IS 'implementation of = for marketing codes';
CREATE FUNCTION wallet.marketing_code_ne(wallet.marketing_code, wallet.marketing_code) RETURNS boolean
    AS 'MODULE_PATHNAME', 'marketing_code_ne' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION wallet.marketing_code_ne(wallet.marketing_code, wallet.marketing_code) IS 'implementation of <> for marketing codes';
CREATE FUNCTION wallet.marketing_code_lt(wallet.marketing_code, wallet.marketing_code) RETURNS boolean
    AS 'MODULE_PATHNAME', 'marketing_code_lt' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION wallet.marketing_code_lt(wallet.marketing_code, wallet.marketing_code) IS 'implementation of < for marketing codes';
CREATE FUNCTION wallet.marketing_code_le(wallet.marketing_code, wallet.marketing_code) RETURNS boolean
    AS 'MODULE_PATHNAME', 'marketing_code_le' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION wallet.marketing_code_le(wallet.marketing_code, wallet.marketing_code) IS 'implementation of <= for marketing codes';
CREATE FUNCTION wallet.marketing_code_gt(wallet.marketing_code, wallet.marketing_code) RETURNS boolean
    AS 'MODULE_PATHNAME', 'marketing_code_gt' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION wallet.marketing_code_gt(wallet.marketing_code, wallet.marketing_code) IS 'implementation of > for marketing codes';
CREATE FUNCTION wallet.marketing_code_ge(wallet.marketing_code, wallet.marketing_code) RETURNS boolean
    AS 'MODULE_PATHNAME', 'marketing_code_ge' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION wallet.marketing_code_ge(wallet.marketing_code, wallet.marketing_code) IS 'implementation of >= for marketing codes';
CREATE FUNCTION wallet.marketing_code_cmp(wallet.marketing_code, wallet.marketing_code) RETURNS int
    AS 'MODULE_PATHNAME', 'marketing_code_cmp' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION wallet.marketing_code_cmp(wallet.marketing_code, wallet.marketing_code) IS 'btree support: -1, 0 or 1';
CREATE FUNCTION wallet.marketing_code_sortsupport(internal) RETURNS void
    AS 'MODULE_PATHNAME', 'marketing_code_sortsupport' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.marketing_code_sortsupport(internal) IS 'btree support: fast comparator for sorting';
CREATE FUNCTION wallet.marketing_code_hash(wallet.marketing_code) RETURNS int
    AS 'MODULE_PATHNAME', 'marketing_code_hash' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION wallet.marketing_code_hash(wallet.marketing_code) IS 'hash support, consistent with =';
CREATE FUNCTION wallet.marketing_code_hash_extended(wallet.marketing_code, bigint) RETURNS bigint
    AS 'MODULE_PATHNAME', 'marketing_code_hash_extended' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION wallet.marketing_code_hash_extended(wallet.marketing_code, bigint) IS 'seeded 64-bit hash support, consistent with =';

CREATE OPERATOR wallet.= (
    LEFTARG = wallet.marketing_code, RIGHTARG = wallet.marketing_code, PROCEDURE = wallet.marketing_code_eq,
    COMMUTATOR = OPERATOR(wallet.=), NEGATOR = OPERATOR(wallet.<>),
    RESTRICT = eqsel, JOIN = eqjoinsel, HASHES, MERGES);
COMMENT ON OPERATOR wallet.= (wallet.marketing_code, wallet.marketing_code) IS 'same code (prefix compared as input reads it)';
CREATE OPERATOR wallet.<> (
    LEFTARG = wallet.marketing_code, RIGHTARG = wallet.marketing_code, PROCEDURE = wallet.marketing_code_ne,
    COMMUTATOR = OPERATOR(wallet.<>), NEGATOR = OPERATOR(wallet.=),
    RESTRICT = neqsel, JOIN = neqjoinsel);
COMMENT ON OPERATOR wallet.<> (wallet.marketing_code, wallet.marketing_code) IS 'different codes';
CREATE OPERATOR wallet.< (
    LEFTARG = wallet.marketing_code, RIGHTARG = wallet.marketing_code, PROCEDURE = wallet.marketing_code_lt,
    COMMUTATOR = OPERATOR(wallet.>), NEGATOR = OPERATOR(wallet.>=),
    RESTRICT = scalarltsel, JOIN = scalarltjoinsel);
COMMENT ON OPERATOR wallet.< (wallet.marketing_code, wallet.marketing_code) IS 'sorts before (by campaign, then serial, ...)';
CREATE OPERATOR wallet.<= (
    LEFTARG = wallet.marketing_code, RIGHTARG = wallet.marketing_code, PROCEDURE = wallet.marketing_code_le,
    COMMUTATOR = OPERATOR(wallet.>=), NEGATOR = OPERATOR(wallet.>),
    RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
COMMENT ON OPERATOR wallet.<= (wallet.marketing_code, wallet.marketing_code) IS 'sorts before or equal';
CREATE OPERATOR wallet.> (
    LEFTARG = wallet.marketing_code, RIGHTARG = wallet.marketing_code, PROCEDURE = wallet.marketing_code_gt,
    COMMUTATOR = OPERATOR(wallet.<), NEGATOR = OPERATOR(wallet.<=),
    RESTRICT = scalargtsel, JOIN = scalargtjoinsel);
COMMENT ON OPERATOR wallet.> (wallet.marketing_code, wallet.marketing_code) IS 'sorts after';
CREATE OPERATOR wallet.>= (
    LEFTARG = wallet.marketing_code, RIGHTARG = wallet.marketing_code, PROCEDURE = wallet.marketing_code_ge,
    COMMUTATOR = OPERATOR(wallet.<=), NEGATOR = OPERATOR(wallet.<),
    RESTRICT = scalargesel, JOIN = scalargejoinsel);
COMMENT ON OPERATOR wallet.>= (wallet.marketing_code, wallet.marketing_code) IS 'sorts after or equal';

CREATE OPERATOR CLASS wallet.marketing_code_ops DEFAULT FOR TYPE wallet.marketing_code USING btree AS
    OPERATOR 1 wallet.< ,
    OPERATOR 2 wallet.<= ,
    OPERATOR 3 wallet.= ,
    OPERATOR 4 wallet.>= ,
    OPERATOR 5 wallet.> ,
    FUNCTION 1 wallet.marketing_code_cmp(wallet.marketing_code, wallet.marketing_code),
    FUNCTION 2 wallet.marketing_code_sortsupport(internal);
COMMENT ON OPERATOR CLASS wallet.marketing_code_ops USING btree IS 'btree ordering of marketing codes (unique indexes, merge joins, ORDER BY)';
COMMENT ON OPERATOR FAMILY wallet.marketing_code_ops USING btree IS 'btree operator family of marketing codes';

CREATE OPERATOR CLASS wallet.marketing_code_ops DEFAULT FOR TYPE wallet.marketing_code USING hash AS
    OPERATOR 1 wallet.= ,
    FUNCTION 1 wallet.marketing_code_hash(wallet.marketing_code),
    FUNCTION 2 wallet.marketing_code_hash_extended(wallet.marketing_code, bigint);
COMMENT ON OPERATOR CLASS wallet.marketing_code_ops USING hash IS 'hashing of marketing codes (hash joins, hash indexes, GROUP BY)';
COMMENT ON OPERATOR FAMILY wallet.marketing_code_ops USING hash IS 'hash operator family of marketing codes';

CREATE CAST (wallet.marketing_code AS text) WITH INOUT AS ASSIGNMENT;
COMMENT ON CAST (wallet.marketing_code AS text) IS 'the code''s text form';
CREATE CAST (text AS wallet.marketing_code) WITH INOUT;
COMMENT ON CAST (text AS wallet.marketing_code) IS 'reads a code''s text form (raises 22P02 for bad input; wallet.parse_code never raises)';

-- Accessors: everything comes out of the value, no table lookup.
CREATE FUNCTION wallet.code_campaign(wallet.marketing_code) RETURNS bigint
    AS 'MODULE_PATHNAME', 'code_campaign' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.code_campaign(wallet.marketing_code) IS 'campaign id carried by the code';
CREATE FUNCTION wallet.code_serial(wallet.marketing_code) RETURNS bigint
    AS 'MODULE_PATHNAME', 'code_serial' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.code_serial(wallet.marketing_code) IS 'serial number of the code within its campaign';
CREATE FUNCTION wallet.code_key_version(wallet.marketing_code) RETURNS int
    AS 'MODULE_PATHNAME', 'code_key_version' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.code_key_version(wallet.marketing_code) IS 'version of the campaign code key that signed the code';
CREATE FUNCTION wallet.code_mac_bits(wallet.marketing_code) RETURNS int
    AS 'MODULE_PATHNAME', 'code_mac_bits' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.code_mac_bits(wallet.marketing_code) IS 'length of the code''s MAC in bits (32 to 64)';
CREATE FUNCTION wallet.code_prefix(wallet.marketing_code) RETURNS text
    AS 'MODULE_PATHNAME', 'code_prefix' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.code_prefix(wallet.marketing_code) IS 'merchant prefix of the code as written, NULL when it has none';

-- Campaigns and their code keys.
CREATE TABLE wallet.campaigns (
    campaign_id bigint GENERATED ALWAYS AS IDENTITY (MAXVALUE 4294967295) PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    name text NOT NULL CHECK (btrim(name) <> ''),
    prefix text CHECK (prefix ~ '^[A-Z0-9]{1,8}$'),
    mac_bits int NOT NULL DEFAULT 40 CHECK (mac_bits BETWEEN 32 AND 64),
    starts_at timestamptz NOT NULL DEFAULT now(),
    ends_at timestamptz CHECK (ends_at > starts_at),
    max_redemptions_per_code int DEFAULT 1 CHECK (max_redemptions_per_code > 0),
    max_redemptions_per_member int CHECK (max_redemptions_per_member > 0),
    max_redemptions_total bigint CHECK (max_redemptions_total > 0),
    current_key_version int NOT NULL DEFAULT 1 CHECK (current_key_version BETWEEN 1 AND 1023),
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE wallet.campaigns IS 'marketing campaigns: code parameters, active window and redemption caps; serial numbers come from the sequence wallet.campaign_<id>_serials of each';
COMMENT ON COLUMN wallet.campaigns.campaign_id IS 'campaign id, carried in every code (below 2^32)';
COMMENT ON COLUMN wallet.campaigns.merchant_id IS 'merchant running the campaign';
COMMENT ON COLUMN wallet.campaigns.name IS 'campaign name (non-blank; names may repeat, e.g. a yearly sale)';
COMMENT ON COLUMN wallet.campaigns.prefix IS 'text printed before every code (A-Z, 0-9, up to 8); NULL = none; part of the signed data, so fixed';
COMMENT ON COLUMN wallet.campaigns.mac_bits IS 'MAC length of the codes in bits (32 to 64); fixed once codes exist';
COMMENT ON COLUMN wallet.campaigns.starts_at IS 'codes redeem from this time on';
COMMENT ON COLUMN wallet.campaigns.ends_at IS 'codes redeem before this time; NULL = open-ended';
COMMENT ON COLUMN wallet.campaigns.max_redemptions_per_code IS 'how often one code may be redeemed; NULL = unlimited';
COMMENT ON COLUMN wallet.campaigns.max_redemptions_per_member IS 'how often one member may redeem codes of the campaign; NULL = unlimited';
COMMENT ON COLUMN wallet.campaigns.max_redemptions_total IS 'cap on all redemptions of the campaign; NULL = unlimited';
COMMENT ON COLUMN wallet.campaigns.current_key_version IS 'key version that signs new codes (see wallet.rotate_code_key)';
COMMENT ON COLUMN wallet.campaigns.created_at IS 'when the campaign was created';

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
CREATE UNIQUE INDEX installation_one_row_idx ON wallet.installation ((true));
COMMENT ON TABLE wallet.installation IS 'the one row holding this database''s installation id, bound into every code key made since 0.2.0';
COMMENT ON COLUMN wallet.installation.installation_id IS 'random id made when wallet 0.2.0 was installed here; never changes (not a secret)';
COMMENT ON COLUMN wallet.installation.created_at IS 'when the id was made';
COMMENT ON INDEX wallet.installation_one_row_idx IS 'keeps wallet.installation to one row';
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
CREATE FUNCTION wallet_internal.installation_guard() RETURNS trigger
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
COMMENT ON FUNCTION wallet_internal.installation_guard()
    IS 'trigger: refuses UPDATE, DELETE and TRUNCATE of wallet.installation; an INSERT (pg_restore) replaces the id while no key version is bound to it';
CREATE TRIGGER installation_guard BEFORE INSERT OR UPDATE OR DELETE ON wallet.installation
    FOR EACH ROW EXECUTE FUNCTION wallet_internal.installation_guard();
CREATE TRIGGER installation_guard_truncate BEFORE TRUNCATE ON wallet.installation
    FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.installation_guard();
COMMENT ON TRIGGER installation_guard ON wallet.installation IS 'keeps the installation id from changing once key versions are bound to it';
COMMENT ON TRIGGER installation_guard_truncate ON wallet.installation IS 'refuses TRUNCATE of the installation id';

CREATE TABLE wallet.code_keys (
    campaign_id bigint NOT NULL REFERENCES wallet.campaigns ON DELETE CASCADE,
    key_version int NOT NULL CHECK (key_version BETWEEN 1 AND 1023),
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz,
    installation_id uuid DEFAULT wallet.installation_id() REFERENCES wallet.installation,
    PRIMARY KEY (campaign_id, key_version),
    merchant_id bigint NOT NULL
);
COMMENT ON TABLE wallet.code_keys IS 'key versions of each campaign; the keys themselves are derived from the root key, never stored';
COMMENT ON COLUMN wallet.code_keys.campaign_id IS 'campaign the key version belongs to';
COMMENT ON COLUMN wallet.code_keys.key_version IS 'key version (1 to 1023), carried in every code it signs';
COMMENT ON COLUMN wallet.code_keys.created_at IS 'when the version was created';
COMMENT ON COLUMN wallet.code_keys.retired_at IS 'when the version was retired (its codes no longer validate); NULL = active';
COMMENT ON COLUMN wallet.code_keys.merchant_id IS 'merchant of the campaign (copied from it): the key to distribute by';
COMMENT ON COLUMN wallet.code_keys.installation_id IS 'installation id the version''s key is bound to (every version made since 0.2.0); NULL = the legacy key of a version made by 0.1.0, the same in every database';

-- The tables hold user data: pg_dump must dump their rows (and the identity's position).
SELECT pg_catalog.pg_extension_config_dump('wallet.campaigns', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.campaigns_campaign_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.code_keys', '');

-- Backends cache these tables for wallet.code_authentic; changes invalidate the caches.
CREATE FUNCTION wallet_internal.code_cache_invalidate() RETURNS trigger
    AS 'MODULE_PATHNAME', 'code_cache_invalidate' LANGUAGE C;
COMMENT ON FUNCTION wallet_internal.code_cache_invalidate() IS 'trigger: tells every backend to drop its cache of campaigns and code keys';
CREATE TRIGGER code_cache_invalidate AFTER INSERT OR DELETE OR UPDATE OF campaign_id, prefix, mac_bits, current_key_version
    ON wallet.campaigns FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.code_cache_invalidate();
CREATE TRIGGER code_cache_invalidate_truncate AFTER TRUNCATE
    ON wallet.campaigns FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.code_cache_invalidate();
CREATE TRIGGER code_cache_invalidate AFTER INSERT OR DELETE OR UPDATE
    ON wallet.code_keys FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.code_cache_invalidate();
CREATE TRIGGER code_cache_invalidate_truncate AFTER TRUNCATE
    ON wallet.code_keys FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.code_cache_invalidate();
COMMENT ON TRIGGER code_cache_invalidate ON wallet.campaigns IS 'drops every session''s cache of campaign code parameters when they change';
COMMENT ON TRIGGER code_cache_invalidate_truncate ON wallet.campaigns IS 'drops every session''s cache of campaign code parameters on TRUNCATE';
COMMENT ON TRIGGER code_cache_invalidate ON wallet.code_keys IS 'drops every session''s cache of key versions when they change';
COMMENT ON TRIGGER code_cache_invalidate_truncate ON wallet.code_keys IS 'drops every session''s cache of key versions on TRUNCATE';

-- Every issued code carries its campaign's prefix and MAC length: changing them would void the codes.
CREATE FUNCTION wallet_internal.campaigns_guard() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NEW.prefix IS DISTINCT FROM OLD.prefix OR NEW.mac_bits <> OLD.mac_bits THEN
        RAISE EXCEPTION 'prefix and mac_bits of campaign % cannot change', OLD.campaign_id
            USING ERRCODE = 'WL107',
                  DETAIL = 'Every code of the campaign carries its prefix and MAC length, so changing them would void the codes.',
                  HINT = 'Create a new campaign instead.';
    END IF;
    IF NEW.current_key_version < OLD.current_key_version THEN
        RAISE EXCEPTION 'current_key_version of campaign % cannot go back', OLD.campaign_id
            USING ERRCODE = 'WL107',
                  DETAIL = format('It is %s and was to become %s.', OLD.current_key_version, NEW.current_key_version),
                  HINT = 'Use wallet.rotate_code_key to move to a new key version.';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION wallet_internal.campaigns_guard() IS 'trigger: keeps a campaign''s prefix and MAC length fixed and its key version from going back';
CREATE TRIGGER campaigns_guard BEFORE UPDATE OF prefix, mac_bits, current_key_version ON wallet.campaigns
    FOR EACH ROW EXECUTE FUNCTION wallet_internal.campaigns_guard();
COMMENT ON TRIGGER campaigns_guard ON wallet.campaigns IS 'keeps prefix and mac_bits fixed and current_key_version from going back';

-- A key version without installation id uses the legacy derivation of 0.1.0,
-- which is the same in every database of the server: only the table's owner
-- may create one (pg_restore of an upgraded database does), and no key
-- version's binding can change.
CREATE FUNCTION wallet_internal.code_keys_guard() RETURNS trigger
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
COMMENT ON FUNCTION wallet_internal.code_keys_guard()
    IS 'trigger: new key versions are bound to the installation (unbound ones only by the table''s owner), and no binding changes';
CREATE TRIGGER code_keys_guard BEFORE INSERT OR UPDATE OF installation_id ON wallet.code_keys
    FOR EACH ROW EXECUTE FUNCTION wallet_internal.code_keys_guard();
COMMENT ON TRIGGER code_keys_guard ON wallet.code_keys IS 'binds new key versions to the installation and keeps every binding fixed';

-- A campaign that has issued codes must never go: deleting it would cascade
-- away its key versions and redemptions, and a campaign inserted again with
-- its id would accept all its codes as never redeemed.  So no campaign is
-- deleted (end it instead), and an id given explicitly must be one the
-- identity has not handed out yet.
CREATE FUNCTION wallet_internal.campaigns_keep() RETURNS trigger
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
COMMENT ON FUNCTION wallet_internal.campaigns_keep() IS 'trigger: refuses DELETE and TRUNCATE of campaigns';
CREATE TRIGGER campaigns_keep BEFORE DELETE ON wallet.campaigns
    FOR EACH ROW EXECUTE FUNCTION wallet_internal.campaigns_keep();
CREATE TRIGGER campaigns_keep_truncate BEFORE TRUNCATE ON wallet.campaigns
    FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.campaigns_keep();
COMMENT ON TRIGGER campaigns_keep ON wallet.campaigns IS 'campaigns are never deleted (end them instead)';
COMMENT ON TRIGGER campaigns_keep_truncate ON wallet.campaigns IS 'campaigns are never truncated';

-- An id drawn from the identity by this insert equals the session's currval.
-- pg_restore loads the dumped ids while the identity is still fresh, or (in a
-- parallel restore) after its position but always after the campaign's
-- serial sequence, which is then not yet tied to the table (only the owner
-- can make such a sequence).  SECURITY DEFINER: reading the identity's
-- sequence belongs to the owner, not to whoever may insert campaigns.
CREATE FUNCTION wallet_internal.campaigns_fresh_id() RETURNS trigger
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
COMMENT ON FUNCTION wallet_internal.campaigns_fresh_id()
    IS 'trigger: refuses a new campaign whose explicit id the identity has already handed out';
CREATE TRIGGER campaigns_fresh_id BEFORE INSERT ON wallet.campaigns
    FOR EACH ROW EXECUTE FUNCTION wallet_internal.campaigns_fresh_id();
COMMENT ON TRIGGER campaigns_fresh_id ON wallet.campaigns IS 'campaign ids are never reused';

-- Each campaign's serial numbers come from a sequence of its own, so that
-- generate_codes reserves them outside the caller's transaction and without
-- locking the campaign row.  The sequence is owned by the campaign_id column:
-- DROP EXTENSION drops it with the table, and pg_dump dumps it and its position
-- as an ordinary object (it is no member of the extension).  A trigger rather
-- than create_campaign makes it, so that campaigns inserted by hand get one too;
-- SECURITY DEFINER because CREATE on schema wallet and owning the table (for
-- OWNED BY) belong to the extension's owner, not to whoever may insert campaigns.
-- Campaigns are never deleted (wallet_internal.campaigns_keep); should one be deleted
-- anyway, its sequence stays, so an id reused by hand continues its serials.
-- pg_dump leaves out OWNED BY for a column of an extension's table, so when
-- pg_restore loads the campaigns (the sequence exists by then, at its dumped
-- position) the trigger ties the sequence to the column again.
CREATE FUNCTION wallet_internal.campaigns_create_serials() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    seq text := format('wallet.%I', 'campaign_' || NEW.campaign_id || '_serials');
    seqoid regclass := to_regclass(seq);
BEGIN
    IF seqoid IS NULL THEN
        EXECUTE format('CREATE SEQUENCE %s AS bigint MINVALUE 1 MAXVALUE 274877906943 NO CYCLE CACHE 1'
                       ' OWNED BY wallet.campaigns.campaign_id', seq);
        EXECUTE format('COMMENT ON SEQUENCE %s IS %L', seq,
                       format('serial numbers of the codes of campaign %s: wallet.generate_codes reserves blocks of it;'
                              ' never call nextval on it yourself', NEW.campaign_id));
    ELSIF NOT EXISTS (SELECT 1 FROM pg_depend d
                       WHERE d.classid = 'pg_class'::regclass AND d.objid = seqoid AND d.deptype = 'a'
                         AND d.refclassid = 'pg_class'::regclass AND d.refobjid = 'wallet.campaigns'::regclass)
          -- OWNED BY needs the same owner; a restore that gave it another keeps it as it is
          AND (SELECT c.relowner FROM pg_class c WHERE c.oid = seqoid)
              = (SELECT c.relowner FROM pg_class c WHERE c.oid = 'wallet.campaigns'::regclass) THEN
        EXECUTE format('ALTER SEQUENCE %s OWNED BY wallet.campaigns.campaign_id', seq);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION wallet_internal.campaigns_create_serials()
    IS 'trigger: creates the sequence wallet.campaign_<id>_serials that hands out a new campaign''s serial numbers';
CREATE TRIGGER campaigns_create_serials AFTER INSERT ON wallet.campaigns
    FOR EACH ROW EXECUTE FUNCTION wallet_internal.campaigns_create_serials();
COMMENT ON TRIGGER campaigns_create_serials ON wallet.campaigns IS 'gives every new campaign its serial number sequence';

CREATE FUNCTION wallet.campaign_next_serial(campaign_id bigint) RETURNS bigint
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
            USING ERRCODE = 'WL101', DETAIL = format('There is no campaign %s of a merchant the caller acts for.', campaign_id), HINT = 'Create it with wallet.create_campaign.';
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

CREATE FUNCTION wallet.create_campaign(
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
            USING ERRCODE = 'WL102', DETAIL = 'Campaigns belong to a merchant registered in wallet.merchants.', HINT = 'Register the merchant with wallet.create_merchant first.';
    END IF;
    IF name IS NULL THEN
        RAISE EXCEPTION 'campaign name must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A campaign needs a name that people can recognise.';
    END IF;
    IF btrim(name) = '' OR length(name) > 200 THEN
        RAISE EXCEPTION 'campaign name must not be %', CASE WHEN btrim(name) = '' THEN 'blank' ELSE 'longer than 200 characters' END
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
    IF NOT isfinite(starts_at) OR NOT isfinite(ends_at) THEN
        RAISE EXCEPTION '% must be finite', CASE WHEN NOT isfinite(starts_at) THEN 'starts_at' ELSE 'ends_at' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A campaign starts at a real instant and ends at one, or never (NULL).';
    END IF;
    IF ends_at IS NOT NULL AND ends_at <= starts_at THEN
        RAISE EXCEPTION 'ends_at must be after starts_at'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The campaign would start at %s and end at %s.', starts_at, ends_at);
    END IF;
    -- (its reports compare windows as long as the campaign before and after
    -- it, which must stay within the range of timestamps)
    IF starts_at NOT BETWEEN now() - interval '100 years' AND now() + interval '100 years' THEN
        RAISE EXCEPTION 'starts_at must be within 100 years of now'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The campaign would start at %s.', starts_at);
    END IF;
    IF ends_at > now() + interval '100 years' THEN
        RAISE EXCEPTION 'ends_at must be at most 100 years from now'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The campaign would end at %s.', ends_at);
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
COMMENT ON FUNCTION wallet.create_campaign(bigint, text, text, int, timestamptz, timestamptz, int, int, bigint)
    IS 'create a campaign of a merchant (with key version 1) and return its id; starts_at and ends_at (NULL: no end) must be finite and within 100 years of now (22023)';

CREATE FUNCTION wallet.rotate_code_key(campaign_id bigint) RETURNS int
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
            USING ERRCODE = 'WL101', DETAIL = format('There is no campaign %s of a merchant the caller acts for.', campaign_id), HINT = 'Create it with wallet.create_campaign.';
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
COMMENT ON FUNCTION wallet.rotate_code_key(bigint)
    IS 'make the next key version sign new codes; codes of older versions keep validating until retired; returns the new version';

CREATE FUNCTION wallet.retire_code_key(campaign_id bigint, key_version int) RETURNS void
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
            USING ERRCODE = 'WL101', DETAIL = format('There is no campaign %s of a merchant the caller acts for.', campaign_id), HINT = 'Create it with wallet.create_campaign.';
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

CREATE FUNCTION wallet.generate_codes(campaign_id bigint, n int) RETURNS SETOF wallet.marketing_code
    AS 'MODULE_PATHNAME', 'generate_codes' LANGUAGE C VOLATILE ROWS 1000;
COMMENT ON FUNCTION wallet.generate_codes(bigint, int)
    IS 'n new codes of a campaign; its serials are reserved from the campaign''s sequence, never handed out again even if the transaction rolls back; nothing is stored per code';

CREATE FUNCTION wallet.code_authentic(wallet.marketing_code) RETURNS boolean
    AS 'MODULE_PATHNAME', 'code_authentic' LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.code_authentic(wallet.marketing_code)
    IS 'true when the code''s MAC is right and its key version is not retired (no table read per call)';

CREATE FUNCTION wallet.code_status(wallet.marketing_code) RETURNS text
    AS 'MODULE_PATHNAME', 'code_status' LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.code_status(wallet.marketing_code)
    IS 'authentication status of a code value: ok, forged or retired_key (like wallet.parse_code, without the text step)';

CREATE FUNCTION wallet.parse_code(input text, OUT status text, OUT code wallet.marketing_code)
    AS 'MODULE_PATHNAME', 'parse_code' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION wallet.parse_code(text)
    IS 'reads and authenticates a code without raising for bad input: status ok, malformed, mistyped, forged or retired_key; code set unless malformed or mistyped';

-- wallet 0.1.0 install script: FROZEN as released (commit b0a38ac). Never edit;
-- every change ships in an upgrade script (sql/wallet--0.1.0--0.2.0.sql).
\echo Use "CREATE EXTENSION wallet" to load this file. \quit

-- The script creates the schema itself (wallet.control names none): a schema
-- that CREATE EXTENSION makes from the control file is not a member of the
-- extension, so DROP EXTENSION would leave it behind.  All objects are
-- schema-qualified, so the extension's own (nominal) schema does not matter.
CREATE SCHEMA wallet;
COMMENT ON SCHEMA wallet IS 'digital-wallet marketing: marketing codes, points ledger, tiers, campaigns, push queue';

CREATE FUNCTION wallet.version() RETURNS text
    AS 'MODULE_PATHNAME', 'wallet_version'
    LANGUAGE C STABLE STRICT PARALLEL SAFE;  -- STABLE: the libsodium part changes when the library is upgraded
COMMENT ON FUNCTION wallet.version() IS 'extension version and the libsodium version it runs with';

-- Merchants own every other object (campaigns, programs, ...).
CREATE TABLE wallet.merchants (
    merchant_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (btrim(name) <> ''),
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE wallet.merchants IS 'merchants: every campaign and points program belongs to one';
COMMENT ON COLUMN wallet.merchants.merchant_id IS 'merchant id, referenced by campaigns and programs';
COMMENT ON COLUMN wallet.merchants.name IS 'unique, non-blank merchant name';
COMMENT ON COLUMN wallet.merchants.created_at IS 'when the merchant was registered';
-- Extension tables are not dumped by pg_dump unless marked: keep merchants
-- (and where their ids stand) across a dump and restore.
SELECT pg_catalog.pg_extension_config_dump('wallet.merchants', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.merchants_merchant_id_seq', '');

CREATE FUNCTION wallet.create_merchant(name text) RETURNS bigint
    LANGUAGE plpgsql STRICT
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
BEGIN
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

-- ===========================================================================
-- Marketing codes (issue 3, codes-core): the type wallet.marketing_code,
-- campaigns and their code keys, generation and authentication.
-- docs/code-format.md specifies the code format.
-- ===========================================================================

CREATE TYPE wallet.marketing_code;

CREATE FUNCTION wallet.marketing_code_in(cstring) RETURNS wallet.marketing_code
    AS 'MODULE_PATHNAME', 'marketing_code_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.marketing_code_in(cstring) IS 'text input of wallet.marketing_code: checks the symbols, length and check symbol (not the MAC)';
CREATE FUNCTION wallet.marketing_code_out(wallet.marketing_code) RETURNS cstring
    AS 'MODULE_PATHNAME', 'marketing_code_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.marketing_code_out(wallet.marketing_code) IS 'text output of wallet.marketing_code: prefix, base32 body in groups of 4, check symbol';
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
COMMENT ON TYPE wallet.marketing_code IS 'HMAC-signed marketing code: campaign, serial, key version, prefix and truncated MAC in 24 bytes; text form like SHOP-XXXX-XXXX-XXXX-XXXC';

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

CREATE TABLE wallet.code_keys (
    campaign_id bigint NOT NULL REFERENCES wallet.campaigns ON DELETE CASCADE,
    key_version int NOT NULL CHECK (key_version BETWEEN 1 AND 1023),
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz,
    PRIMARY KEY (campaign_id, key_version)
);
COMMENT ON TABLE wallet.code_keys IS 'key versions of each campaign; the keys themselves are derived from the root key, never stored';
COMMENT ON COLUMN wallet.code_keys.campaign_id IS 'campaign the key version belongs to';
COMMENT ON COLUMN wallet.code_keys.key_version IS 'key version (1 to 1023), carried in every code it signs';
COMMENT ON COLUMN wallet.code_keys.created_at IS 'when the version was created';
COMMENT ON COLUMN wallet.code_keys.retired_at IS 'when the version was retired (its codes no longer validate); NULL = active';

-- The tables hold user data: pg_dump must dump their rows (and the identity's position).
SELECT pg_catalog.pg_extension_config_dump('wallet.campaigns', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.campaigns_campaign_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.code_keys', '');

-- Backends cache these tables for wallet.code_authentic; changes invalidate the caches.
CREATE FUNCTION wallet.code_cache_invalidate() RETURNS trigger
    AS 'MODULE_PATHNAME', 'code_cache_invalidate' LANGUAGE C;
COMMENT ON FUNCTION wallet.code_cache_invalidate() IS 'trigger: tells every backend to drop its cache of campaigns and code keys';
CREATE TRIGGER code_cache_invalidate AFTER INSERT OR DELETE OR UPDATE OF campaign_id, prefix, mac_bits, current_key_version
    ON wallet.campaigns FOR EACH STATEMENT EXECUTE FUNCTION wallet.code_cache_invalidate();
CREATE TRIGGER code_cache_invalidate_truncate AFTER TRUNCATE
    ON wallet.campaigns FOR EACH STATEMENT EXECUTE FUNCTION wallet.code_cache_invalidate();
CREATE TRIGGER code_cache_invalidate AFTER INSERT OR DELETE OR UPDATE
    ON wallet.code_keys FOR EACH STATEMENT EXECUTE FUNCTION wallet.code_cache_invalidate();
CREATE TRIGGER code_cache_invalidate_truncate AFTER TRUNCATE
    ON wallet.code_keys FOR EACH STATEMENT EXECUTE FUNCTION wallet.code_cache_invalidate();
COMMENT ON TRIGGER code_cache_invalidate ON wallet.campaigns IS 'drops every session''s cache of campaign code parameters when they change';
COMMENT ON TRIGGER code_cache_invalidate_truncate ON wallet.campaigns IS 'drops every session''s cache of campaign code parameters on TRUNCATE';
COMMENT ON TRIGGER code_cache_invalidate ON wallet.code_keys IS 'drops every session''s cache of key versions when they change';
COMMENT ON TRIGGER code_cache_invalidate_truncate ON wallet.code_keys IS 'drops every session''s cache of key versions on TRUNCATE';

-- Every issued code carries its campaign's prefix and MAC length: changing them would void the codes.
CREATE FUNCTION wallet.campaigns_guard() RETURNS trigger
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
COMMENT ON FUNCTION wallet.campaigns_guard() IS 'trigger: keeps a campaign''s prefix and MAC length fixed and its key version from going back';
CREATE TRIGGER campaigns_guard BEFORE UPDATE OF prefix, mac_bits, current_key_version ON wallet.campaigns
    FOR EACH ROW EXECUTE FUNCTION wallet.campaigns_guard();
COMMENT ON TRIGGER campaigns_guard ON wallet.campaigns IS 'keeps prefix and mac_bits fixed and current_key_version from going back';

-- Each campaign's serial numbers come from a sequence of its own, so that
-- generate_codes reserves them outside the caller's transaction and without
-- locking the campaign row.  The sequence is owned by the campaign_id column:
-- DROP EXTENSION drops it with the table, and pg_dump dumps it and its position
-- as an ordinary object (it is no member of the extension).  A trigger rather
-- than create_campaign makes it, so that campaigns inserted by hand get one too;
-- SECURITY DEFINER because CREATE on schema wallet and owning the table (for
-- OWNED BY) belong to the extension's owner, not to whoever may insert campaigns.
-- Deleting a campaign keeps its sequence: an id reused by hand then continues
-- its serials instead of repeating codes already handed out.
-- pg_dump leaves out OWNED BY for a column of an extension's table, so when
-- pg_restore loads the campaigns (the sequence exists by then, at its dumped
-- position) the trigger ties the sequence to the column again.
CREATE FUNCTION wallet.campaigns_create_serials() RETURNS trigger
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
COMMENT ON FUNCTION wallet.campaigns_create_serials()
    IS 'trigger: creates the sequence wallet.campaign_<id>_serials that hands out a new campaign''s serial numbers';
CREATE TRIGGER campaigns_create_serials AFTER INSERT ON wallet.campaigns
    FOR EACH ROW EXECUTE FUNCTION wallet.campaigns_create_serials();
COMMENT ON TRIGGER campaigns_create_serials ON wallet.campaigns IS 'gives every new campaign its serial number sequence';

CREATE FUNCTION wallet.campaign_next_serial(campaign_id bigint) RETURNS bigint
    LANGUAGE plpgsql STRICT VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    seq regclass;
    last bigint;
    called boolean;
BEGIN
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
    IF NOT EXISTS (SELECT 1 FROM wallet.merchants m WHERE m.merchant_id = create_campaign.merchant_id) THEN
        RAISE EXCEPTION 'merchant % does not exist', merchant_id
            USING ERRCODE = 'WL102', HINT = 'Register the merchant with wallet.create_merchant first.';
    END IF;
    IF name IS NULL OR btrim(name) = '' THEN
        RAISE EXCEPTION 'campaign name must not be blank'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A campaign needs a name that people can recognise.';
    END IF;
    IF pfx IS NOT NULL AND pfx !~ '^[A-Z0-9]{1,8}$' THEN
        RAISE EXCEPTION 'invalid campaign prefix "%"', prefix
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A prefix has 1 to 8 characters, each a letter A to Z or a digit 0 to 9.',
                  HINT = 'Pass NULL for codes without a prefix.';
    END IF;
    IF mac_bits IS NULL OR mac_bits NOT BETWEEN 32 AND 64 THEN
        RAISE EXCEPTION 'mac_bits must be between 32 and 64, not %', coalesce(mac_bits::text, 'NULL')
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

    INSERT INTO wallet.campaigns AS c (merchant_id, name, prefix, mac_bits, starts_at, ends_at,
                                       max_redemptions_per_code, max_redemptions_per_member, max_redemptions_total)
    VALUES (create_campaign.merchant_id, create_campaign.name, pfx, create_campaign.mac_bits,
            create_campaign.starts_at, create_campaign.ends_at, create_campaign.max_redemptions_per_code,
            create_campaign.max_redemptions_per_member, create_campaign.max_redemptions_total)
    RETURNING c.campaign_id INTO id;
    INSERT INTO wallet.code_keys (campaign_id, key_version) VALUES (id, 1);
    RETURN id;
END
$$;
COMMENT ON FUNCTION wallet.create_campaign(bigint, text, text, int, timestamptz, timestamptz, int, int, bigint)
    IS 'create a campaign of a merchant (with key version 1) and return its id';

CREATE FUNCTION wallet.rotate_code_key(campaign_id bigint) RETURNS int
    LANGUAGE plpgsql STRICT
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v int;
BEGIN
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

CREATE FUNCTION wallet.retire_code_key(campaign_id bigint, key_version int) RETURNS void
    LANGUAGE plpgsql STRICT
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v int;
BEGIN
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

CREATE FUNCTION wallet.generate_codes(campaign_id bigint, n int) RETURNS SETOF wallet.marketing_code
    AS 'MODULE_PATHNAME', 'generate_codes' LANGUAGE C STRICT VOLATILE ROWS 1000;
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
    AS 'MODULE_PATHNAME', 'parse_code' LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.parse_code(text)
    IS 'reads and authenticates a code without raising for bad input: status ok, malformed, mistyped, forged or retired_key; code set unless malformed or mistyped';
-- Marketing codes, redemption layer: binding codes to members, checking,
-- reserving, redeeming and undoing, with caps that hold under concurrency and
-- a brute-force guard.  Builds on sql/ext/codes.sql (type, campaigns, keys).
--
-- Concurrency design (why it is exact):
--   * Every call carrying an idempotency key first takes a transaction-level
--     advisory lock on the key, so two sessions sending the same key run one
--     after the other and the second sees the first's committed row.
--   * The brute-force guard takes an advisory lock per member and per source
--     before counting recent failures, so concurrent guesses cannot all slip
--     under the threshold.
--   * Caps: one counter row per code, per (campaign, member) and per campaign
--     holds the number of live redemptions, kept only while that cap is set
--     (no hot row for an uncapped public code or campaign).  Reserve, redeem
--     and undo lock these rows in that fixed order (code, member, campaign),
--     so they never deadlock with each other; under those locks they count
--     the active reservations (expires_at > clock_timestamp()), which is why
--     an expired reservation stops counting at once without a cleanup job.
--   * Lock order overall: idempotency key, guard (member, source), reservation
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
COMMENT ON COLUMN wallet.code_guard_settings.failure_window IS 'sliding window over which failed checks are counted';
COMMENT ON COLUMN wallet.code_guard_settings.updated_at IS 'when the thresholds were last set';

CREATE TABLE wallet.code_failed_attempts (
    attempt_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    attempted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    member_ref   text NOT NULL,
    source       text,
    status       text NOT NULL CHECK (status IN ('malformed', 'mistyped', 'unknown_campaign', 'forged')),
    input        text NOT NULL,
    campaign_id  bigint,
    operation    text NOT NULL CHECK (operation IN ('check', 'redeem', 'reserve'))
);
CREATE INDEX code_failed_attempts_member ON wallet.code_failed_attempts (member_ref, attempted_at);
CREATE INDEX code_failed_attempts_source ON wallet.code_failed_attempts (source, attempted_at) WHERE source IS NOT NULL;
CREATE INDEX code_failed_attempts_at ON wallet.code_failed_attempts (attempted_at);
COMMENT ON TABLE wallet.code_failed_attempts IS 'failed code checks (malformed, mistyped, unknown_campaign, forged) counted by the brute-force guard; purge old rows with wallet.purge_code_attempts';
COMMENT ON COLUMN wallet.code_failed_attempts.attempt_id IS 'attempt id';
COMMENT ON COLUMN wallet.code_failed_attempts.attempted_at IS 'when the attempt was made (clock time)';
COMMENT ON COLUMN wallet.code_failed_attempts.member_ref IS 'member who made the attempt';
COMMENT ON COLUMN wallet.code_failed_attempts.source IS 'caller-supplied source (context->>''source'', first 256 characters), e.g. a device id or IP address; NULL when none was given';
COMMENT ON COLUMN wallet.code_failed_attempts.status IS 'why the check failed: malformed, mistyped, unknown_campaign or forged';
COMMENT ON COLUMN wallet.code_failed_attempts.input IS 'the text that was tried (first 64 characters), for forensics';
COMMENT ON COLUMN wallet.code_failed_attempts.campaign_id IS 'campaign id the text claimed when it decoded (forged codes, unknown campaigns), else NULL; not a foreign key since such ids need not exist';
COMMENT ON COLUMN wallet.code_failed_attempts.operation IS 'check_code, redeem_code or reserve_code';

-- The public functions run with enable_seqscan off, and so do the helpers
-- they call: every lookup here is by key, and the tables start empty; a plan
-- cached by a session while a table was small would otherwise keep scanning
-- it whole as it grows, until the next ANALYZE.
--
-- Internal helpers (their comments start with "internal:") carry no SET
-- search_path: they are called from the public functions, which pin it, and a
-- SET clause costs a configuration change on every call.  Every name in them
-- is schema-qualified anyway.

-- Thresholds that apply to a merchant: its own row, else the global row, else the defaults.
CREATE FUNCTION wallet.code_guard_thresholds(merchant_id bigint,
        OUT max_failures_per_member int, OUT max_failures_per_source int, OUT failure_window interval)
    LANGUAGE plpgsql STABLE
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
COMMENT ON FUNCTION wallet.code_guard_thresholds(bigint) IS
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
    IF failure_window IS NULL OR failure_window <= interval '0' THEN
        RAISE EXCEPTION 'failure window must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The brute-force guard counts failures over a window; %s is not a positive interval.', coalesce(failure_window::text, 'NULL'));
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

CREATE FUNCTION wallet.clear_code_failures(member_ref text DEFAULT NULL, source text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
    AS $$
    WITH d AS (
        DELETE FROM wallet.code_failed_attempts a
         WHERE (a.member_ref = $1 OR a.source = $2)
        RETURNING 1)
    SELECT count(*) FROM d
$$;
COMMENT ON FUNCTION wallet.clear_code_failures(text, text) IS
    'forget the failed checks of a member and/or a source (e.g. after support verified them), lifting a throttle at once; returns the number of attempts removed';

CREATE FUNCTION wallet.purge_code_attempts(older_than interval DEFAULT interval '1 day')
    RETURNS bigint
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
    AS $$
    WITH d AS (
        DELETE FROM wallet.code_failed_attempts a
         WHERE a.attempted_at < clock_timestamp() - $1
        RETURNING 1)
    SELECT count(*) FROM d
$$;
COMMENT ON FUNCTION wallet.purge_code_attempts(interval) IS
    'delete failed attempts older than the given age (keep it longer than every failure window); returns the number deleted';

-- Throttled?  Takes the guard locks (member, then source) for the rest of the
-- transaction so that the count and the recording of a failure are atomic.
CREATE FUNCTION wallet.code_guard_throttled(merchant_id bigint, member_ref text, source text)
    RETURNS boolean
    LANGUAGE plpgsql
    AS $$
#variable_conflict use_column
DECLARE
    t record;
    _since timestamptz;
    _n int;
BEGIN
    SELECT * INTO t FROM wallet.code_guard_thresholds(code_guard_throttled.merchant_id);
    _since := clock_timestamp() - t.failure_window;
    IF t.max_failures_per_member IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(1464598530, hashtext(code_guard_throttled.member_ref));
        SELECT count(*) INTO _n FROM (
            SELECT 1 FROM wallet.code_failed_attempts a
             WHERE a.member_ref = code_guard_throttled.member_ref AND a.attempted_at > _since
             LIMIT t.max_failures_per_member) x;
        IF _n >= t.max_failures_per_member THEN
            RETURN true;
        END IF;
    END IF;
    IF t.max_failures_per_source IS NOT NULL AND code_guard_throttled.source IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(1464598531, hashtext(code_guard_throttled.source));
        SELECT count(*) INTO _n FROM (
            SELECT 1 FROM wallet.code_failed_attempts a
             WHERE a.source = code_guard_throttled.source AND a.attempted_at > _since
             LIMIT t.max_failures_per_source) x;
        IF _n >= t.max_failures_per_source THEN
            RETURN true;
        END IF;
    END IF;
    RETURN false;
END
$$;
COMMENT ON FUNCTION wallet.code_guard_throttled(bigint, text, text) IS
    'internal: whether a member or source has reached its failed-check threshold; locks the member and source guards until the end of the transaction';

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
CREATE INDEX code_bindings_member ON wallet.code_bindings (member_ref);
COMMENT ON TABLE wallet.code_bindings IS 'codes minted by wallet.issue_code for one member: only that member can redeem them';
COMMENT ON COLUMN wallet.code_bindings.campaign_id IS 'campaign of the code';
COMMENT ON COLUMN wallet.code_bindings.serial IS 'serial of the code within its campaign';
COMMENT ON COLUMN wallet.code_bindings.code IS 'the bound code';
COMMENT ON COLUMN wallet.code_bindings.member_ref IS 'the only member who may redeem the code';
COMMENT ON COLUMN wallet.code_bindings.bound_at IS 'when the code was issued';

CREATE TABLE wallet.code_reservations (
    reservation_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id     bigint NOT NULL REFERENCES wallet.campaigns ON DELETE CASCADE,
    serial          bigint NOT NULL,
    code            wallet.marketing_code NOT NULL,
    member_ref      text NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    ttl             interval NOT NULL,
    reserved_at     timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    state           text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'released', 'converted')),
    closed_at       timestamptz,
    CHECK ((state = 'active') = (closed_at IS NULL))
);
-- Active reservations are counted against each cap under that cap's lock.
CREATE INDEX code_reservations_active_code ON wallet.code_reservations (campaign_id, serial, expires_at) WHERE state = 'active';
CREATE INDEX code_reservations_active_member ON wallet.code_reservations (campaign_id, member_ref, expires_at) WHERE state = 'active';
CREATE INDEX code_reservations_active_campaign ON wallet.code_reservations (campaign_id, expires_at) WHERE state = 'active';
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

CREATE TABLE wallet.code_redemptions (
    redemption_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id     bigint NOT NULL REFERENCES wallet.campaigns ON DELETE CASCADE,
    serial          bigint NOT NULL,
    code            wallet.marketing_code NOT NULL,
    member_ref      text NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    context         jsonb NOT NULL DEFAULT '{}',
    reservation_id  bigint UNIQUE REFERENCES wallet.code_reservations,
    redeemed_at     timestamptz NOT NULL,
    undone_at       timestamptz,
    undo_reason     text,
    CHECK ((undone_at IS NULL) = (undo_reason IS NULL))
);
CREATE INDEX code_redemptions_code ON wallet.code_redemptions (campaign_id, serial);
CREATE INDEX code_redemptions_member ON wallet.code_redemptions (member_ref, redeemed_at);
COMMENT ON TABLE wallet.code_redemptions IS 'code redemptions, one row per successful redeem_code; undo_redemption marks a row undone and frees its use';
COMMENT ON COLUMN wallet.code_redemptions.redemption_id IS 'redemption id';
COMMENT ON COLUMN wallet.code_redemptions.campaign_id IS 'campaign of the redeemed code';
COMMENT ON COLUMN wallet.code_redemptions.serial IS 'serial of the redeemed code';
COMMENT ON COLUMN wallet.code_redemptions.code IS 'the redeemed code';
COMMENT ON COLUMN wallet.code_redemptions.member_ref IS 'member who redeemed it';
COMMENT ON COLUMN wallet.code_redemptions.idempotency_key IS 'idempotency key of the call (unique): a retry with it returns this row';
COMMENT ON COLUMN wallet.code_redemptions.context IS 'caller context (e.g. source, order id), as given';
COMMENT ON COLUMN wallet.code_redemptions.reservation_id IS 'the reservation this redemption converted, if any';
COMMENT ON COLUMN wallet.code_redemptions.redeemed_at IS 'when it was redeemed (clock time)';
COMMENT ON COLUMN wallet.code_redemptions.undone_at IS 'when it was undone; NULL while it stands';
COMMENT ON COLUMN wallet.code_redemptions.undo_reason IS 'why it was undone (e.g. order cancelled)';

-- Counters of live (not undone) redemptions.  Their rows are also the locks
-- that make each cap exact; reservations are counted beside them.
CREATE TABLE wallet.code_use_counts (
    campaign_id bigint NOT NULL REFERENCES wallet.campaigns ON DELETE CASCADE,
    serial      bigint NOT NULL,
    redeemed    int NOT NULL DEFAULT 0 CHECK (redeemed >= 0),
    PRIMARY KEY (campaign_id, serial)
);
COMMENT ON TABLE wallet.code_use_counts IS 'live redemptions per code; the row is locked while a use of the code is decided';
COMMENT ON COLUMN wallet.code_use_counts.campaign_id IS 'campaign of the code';
COMMENT ON COLUMN wallet.code_use_counts.serial IS 'serial of the code';
COMMENT ON COLUMN wallet.code_use_counts.redeemed IS 'redemptions of the code not undone';

CREATE TABLE wallet.member_use_counts (
    campaign_id bigint NOT NULL REFERENCES wallet.campaigns ON DELETE CASCADE,
    member_ref  text NOT NULL,
    redeemed    int NOT NULL DEFAULT 0 CHECK (redeemed >= 0),
    PRIMARY KEY (campaign_id, member_ref)
);
COMMENT ON TABLE wallet.member_use_counts IS 'live redemptions per member and campaign; the row is locked while a use by the member is decided';
COMMENT ON COLUMN wallet.member_use_counts.campaign_id IS 'campaign';
COMMENT ON COLUMN wallet.member_use_counts.member_ref IS 'member';
COMMENT ON COLUMN wallet.member_use_counts.redeemed IS 'redemptions by the member in the campaign not undone';

CREATE TABLE wallet.campaign_use_counts (
    campaign_id bigint PRIMARY KEY REFERENCES wallet.campaigns ON DELETE CASCADE,
    redeemed    bigint NOT NULL DEFAULT 0 CHECK (redeemed >= 0)
);
COMMENT ON TABLE wallet.campaign_use_counts IS 'live redemptions per campaign; the row is locked while a use in the campaign is decided';
COMMENT ON COLUMN wallet.campaign_use_counts.campaign_id IS 'campaign';
COMMENT ON COLUMN wallet.campaign_use_counts.redeemed IS 'redemptions in the campaign not undone';

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
CREATE FUNCTION wallet.code_check_args(member_ref text, idempotency_key text, context jsonb, need_key boolean)
    RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
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
COMMENT ON FUNCTION wallet.code_check_args(text, text, jsonb, boolean) IS
    'internal: raise on misuse of the redemption API (NULL, blank or over 256 characters member_ref or idempotency_key, non-object context)';

-- Every check but the caps, in the documented precedence order.  Records a
-- failed check (malformed, mistyped, unknown_campaign, forged) for the guard.
CREATE FUNCTION wallet.code_precheck(input text, member_ref text, source text, operation text,
        OUT status text, OUT code wallet.marketing_code, OUT campaign_id bigint, OUT serial bigint,
        OUT max_per_code int, OUT max_per_member int, OUT max_total bigint)
    LANGUAGE plpgsql
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
BEGIN
    IF input IS NOT NULL THEN
        SELECT p.status, p.code INTO _pstatus, _code FROM wallet.parse_code(input) p;
    END IF;
    _pstatus := coalesce(_pstatus, 'malformed');
    IF _code IS NOT NULL THEN
        -- Only to pick the merchant's guard thresholds; the answer does not
        -- depend on whether the MAC is right until the guard has passed.
        SELECT c.merchant_id, c.starts_at, c.ends_at, c.max_redemptions_per_code,
               c.max_redemptions_per_member, c.max_redemptions_total
          INTO _c
          FROM wallet.campaigns c WHERE c.campaign_id = wallet.code_campaign(_code);
        _known := FOUND;
        _merchant := _c.merchant_id;
    END IF;

    IF wallet.code_guard_throttled(_merchant, member_ref, source) THEN
        status := 'throttled';
        RETURN;
    END IF;

    -- Codes are self-describing (anyone can read the campaign id out of one),
    -- so saying that a campaign does not exist gives nothing away; it is
    -- still a guess at a code that cannot exist, and counts as a failure.
    IF _pstatus IN ('ok', 'retired_key', 'forged') AND NOT _known THEN
        _pstatus := 'unknown_campaign';
    END IF;
    IF _pstatus IN ('malformed', 'mistyped', 'unknown_campaign', 'forged') THEN
        INSERT INTO wallet.code_failed_attempts (member_ref, source, status, input, campaign_id, operation)
        VALUES (member_ref, source, _pstatus, left(coalesce(input, ''), 64),
                CASE WHEN _code IS NOT NULL THEN wallet.code_campaign(_code) END, operation);
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
    'internal: every check of a code but the caps (guard, format, MAC, campaign, key, window, binding), in precedence order; records failed checks for the guard';

-- The caps of a campaign, read so that they cannot change unseen, and the
-- counter rows of the caps that are set, locked in the fixed order (code,
-- member, campaign) and created on first use.
--
-- A counter is kept only while its cap is set, so that a public code with no
-- per-code cap, or a campaign with no total cap, is not one hot row that
-- every redemption queues on.  When a cap is set on a campaign that had none,
-- the trigger wallet.code_caps_recount rebuilds its counters; the ROW
-- EXCLUSIVE locks taken here first make that trigger (which takes SHARE on
-- both tables) wait for every call that read the old caps, and make every
-- later call wait for it, so no redemption is counted under the wrong caps.
CREATE FUNCTION wallet.code_lock_counters(campaign_id bigint, serial bigint, member_ref text,
        OUT max_per_code int, OUT max_per_member int, OUT max_total bigint,
        OUT code_redeemed int, OUT member_redeemed int, OUT total_redeemed bigint)
    LANGUAGE plpgsql
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
        -- A transaction snapshot may predate a cap change: FOR SHARE makes
        -- such a change a serialization failure instead of going unseen.
        SELECT c.max_redemptions_per_code, c.max_redemptions_per_member, c.max_redemptions_total
          INTO max_per_code, max_per_member, max_total
          FROM wallet.campaigns c WHERE c.campaign_id = $1 FOR SHARE;
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
COMMENT ON FUNCTION wallet.code_lock_counters(bigint, bigint, text) IS
    'internal: read a campaign''s caps safely and lock (creating on first use) the counter rows of the caps that are set, per code, per member, per campaign, in that order';

-- Add delta to the counters of the caps that are set (rows already locked).
CREATE FUNCTION wallet.code_bump_counters(campaign_id bigint, serial bigint, member_ref text, delta int,
                                          per_code boolean, per_member boolean, total boolean)
    RETURNS void
    LANGUAGE plpgsql
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
COMMENT ON FUNCTION wallet.code_bump_counters(bigint, bigint, text, int, boolean, boolean, boolean) IS
    'internal: add delta to the per-code, per-member and per-campaign counters of live redemptions, for the caps that are set';

-- Setting a cap on a campaign that had none: rebuild that counter from the
-- redemptions, after every call that read the old caps has finished.
CREATE FUNCTION wallet.code_caps_recount()
    RETURNS trigger
    LANGUAGE plpgsql
    AS $$
#variable_conflict use_column
BEGIN
    LOCK TABLE wallet.code_redemptions, wallet.code_reservations IN SHARE MODE;
    IF OLD.max_redemptions_per_code IS NULL AND NEW.max_redemptions_per_code IS NOT NULL THEN
        DELETE FROM wallet.code_use_counts u WHERE u.campaign_id = NEW.campaign_id;
        INSERT INTO wallet.code_use_counts (campaign_id, serial, redeemed)
        SELECT d.campaign_id, d.serial, count(*) FROM wallet.code_redemptions d
         WHERE d.campaign_id = NEW.campaign_id AND d.undone_at IS NULL
         GROUP BY d.campaign_id, d.serial;
    END IF;
    IF OLD.max_redemptions_per_member IS NULL AND NEW.max_redemptions_per_member IS NOT NULL THEN
        DELETE FROM wallet.member_use_counts u WHERE u.campaign_id = NEW.campaign_id;
        INSERT INTO wallet.member_use_counts (campaign_id, member_ref, redeemed)
        SELECT d.campaign_id, d.member_ref, count(*) FROM wallet.code_redemptions d
         WHERE d.campaign_id = NEW.campaign_id AND d.undone_at IS NULL
         GROUP BY d.campaign_id, d.member_ref;
    END IF;
    IF OLD.max_redemptions_total IS NULL AND NEW.max_redemptions_total IS NOT NULL THEN
        INSERT INTO wallet.campaign_use_counts AS u (campaign_id, redeemed)
        SELECT NEW.campaign_id, count(*) FROM wallet.code_redemptions d
         WHERE d.campaign_id = NEW.campaign_id AND d.undone_at IS NULL
        ON CONFLICT (campaign_id) DO UPDATE SET redeemed = EXCLUDED.redeemed;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION wallet.code_caps_recount() IS
    'internal trigger: when a campaign gets a cap it did not have, rebuild that cap''s counters from the live redemptions';

CREATE TRIGGER code_caps_recount
    AFTER UPDATE OF max_redemptions_per_code, max_redemptions_per_member, max_redemptions_total ON wallet.campaigns
    FOR EACH ROW
    WHEN ((OLD.max_redemptions_per_code IS NULL AND NEW.max_redemptions_per_code IS NOT NULL)
       OR (OLD.max_redemptions_per_member IS NULL AND NEW.max_redemptions_per_member IS NOT NULL)
       OR (OLD.max_redemptions_total IS NULL AND NEW.max_redemptions_total IS NOT NULL))
    EXECUTE FUNCTION wallet.code_caps_recount();
COMMENT ON TRIGGER code_caps_recount ON wallet.campaigns IS
    'counters of live redemptions are kept only while a cap is set; this rebuilds them when a cap is set';

-- The caps, given the live redemptions: counts active reservations beside
-- them.  Exact when the caller holds the counter locks (wallet.code_lock_counters).
CREATE FUNCTION wallet.code_caps_status(campaign_id bigint, serial bigint, member_ref text,
        max_per_code int, max_per_member int, max_total bigint,
        code_redeemed bigint, member_redeemed bigint, total_redeemed bigint)
    RETURNS text
    LANGUAGE plpgsql
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
COMMENT ON FUNCTION wallet.code_caps_status(bigint, bigint, text, int, int, bigint, bigint, bigint, bigint) IS
    'internal: exhausted, member_limit_reached, campaign_limit_reached or ok, counting live redemptions and active unexpired reservations';

-- Does the text given to a retry name the same code as the stored one?
CREATE FUNCTION wallet.code_same_input(stored wallet.marketing_code, input text)
    RETURNS boolean
    LANGUAGE sql
    AS $$
    SELECT coalesce((SELECT p.code OPERATOR(wallet.=) $1 FROM wallet.parse_code($2) p), false)
$$;
COMMENT ON FUNCTION wallet.code_same_input(wallet.marketing_code, text) IS
    'internal: whether a text (in any accepted spelling) denotes the given code';

CREATE FUNCTION wallet.code_key_mismatch(idempotency_key text, what text)
    RETURNS void
    LANGUAGE plpgsql
    AS $$
#variable_conflict use_column
BEGIN
    RAISE EXCEPTION 'idempotency key "%" was already used with different arguments', idempotency_key
        USING ERRCODE = 'WL002',
              DETAIL = format('The key belongs to an earlier %s; a retry must repeat its code, member and context exactly.', what),
              HINT = 'Use a new idempotency key for a new request.';
END
$$;
COMMENT ON FUNCTION wallet.code_key_mismatch(text, text) IS 'internal: raise WL002 for an idempotency key reused with different arguments';

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
BEGIN
    PERFORM wallet.code_check_args(member_ref, NULL, NULL, false);
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
COMMENT ON FUNCTION wallet.issue_code(bigint, text) IS
    'mint one code of the campaign bound to a member: only that member can redeem it (others get bound_to_other_member)';

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
    -- Never throws for a bad code; misuse (no member) is still an error.
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

-- The two-argument form of the interface, as its own function (a DEFAULT on
-- the context would make wallet.check_code(text, text) unresolvable as such).
CREATE FUNCTION wallet.check_code(code text, member_ref text)
    RETURNS text
    LANGUAGE sql
    AS $$
    SELECT wallet.check_code($1, $2, '{}'::jsonb)
$$;
COMMENT ON FUNCTION wallet.check_code(text, text) IS
    'check_code without a context (no source for the brute-force guard)';

CREATE FUNCTION wallet.check_code(code wallet.marketing_code, member_ref text, context jsonb DEFAULT '{}')
    RETURNS text
    LANGUAGE sql
    AS $$
    SELECT wallet.check_code($1::text, $2, $3)
$$;
COMMENT ON FUNCTION wallet.check_code(wallet.marketing_code, text, jsonb) IS
    'check_code for a value of type wallet.marketing_code (same behaviour as the text form)';

CREATE FUNCTION wallet.redeem_code(code text, member_ref text, idempotency_key text, context jsonb DEFAULT '{}')
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

CREATE FUNCTION wallet.redeem_code(code wallet.marketing_code, member_ref text, idempotency_key text, context jsonb DEFAULT '{}')
    RETURNS wallet.redemption_result
    LANGUAGE sql
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
    SELECT * INTO _red FROM wallet.code_redemptions d WHERE d.redemption_id = undo_redemption.redemption_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown redemption %', coalesce(undo_redemption.redemption_id::text, 'NULL')
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
    pc record;
    cnt record;
    _st text;
    _now timestamptz;
    r wallet.reservation_result;
BEGIN
    PERFORM wallet.code_check_args(_member, _key, _ctx, true);
    IF _ttl IS NULL OR _ttl <= interval '0' THEN
        RAISE EXCEPTION 'reservation ttl must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A reservation holds a code for a positive time; %s was given.', coalesce(_ttl::text, 'NULL'));
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

CREATE FUNCTION wallet.reserve_code(code wallet.marketing_code, member_ref text, idempotency_key text, ttl interval, context jsonb DEFAULT '{}')
    RETURNS wallet.reservation_result
    LANGUAGE sql
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
    SELECT * INTO _res FROM wallet.code_reservations v WHERE v.reservation_id = release_reservation.reservation_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown reservation %', coalesce(release_reservation.reservation_id::text, 'NULL')
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

-- ======================================================================
-- Points ledger (issue 4): the points_ledger type, programs, accounts, the
-- append-only journal and every operation on it.
--
-- Each operation locks its account row (one SELECT ... FOR NO KEY UPDATE),
-- changes the account's points_ledger value with the pure C function
-- wallet.ledger_apply, writes it back (one UPDATE) and journals the change
-- (one INSERT).  verify_ledger replays the journal through the same
-- function, so the journal alone explains every stored ledger.
-- Time convention: a lot expiring at T is spendable strictly before T.
-- ======================================================================

CREATE TYPE wallet.points_ledger;

CREATE FUNCTION wallet.points_ledger_in(cstring) RETURNS wallet.points_ledger
    AS 'MODULE_PATHNAME', 'points_ledger_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.points_ledger_in(cstring) IS 'text input of wallet.points_ledger';
CREATE FUNCTION wallet.points_ledger_out(wallet.points_ledger) RETURNS cstring
    AS 'MODULE_PATHNAME', 'points_ledger_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.points_ledger_out(wallet.points_ledger) IS 'text output of wallet.points_ledger (timestamps in ISO 8601 UTC)';
CREATE FUNCTION wallet.points_ledger_recv(internal) RETURNS wallet.points_ledger
    AS 'MODULE_PATHNAME', 'points_ledger_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.points_ledger_recv(internal) IS 'binary input of wallet.points_ledger (leading format-version byte)';
CREATE FUNCTION wallet.points_ledger_send(wallet.points_ledger) RETURNS bytea
    AS 'MODULE_PATHNAME', 'points_ledger_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.points_ledger_send(wallet.points_ledger) IS 'binary output of wallet.points_ledger (leading format-version byte)';

CREATE TYPE wallet.points_ledger (
    INPUT = wallet.points_ledger_in,
    OUTPUT = wallet.points_ledger_out,
    RECEIVE = wallet.points_ledger_recv,
    SEND = wallet.points_ledger_send,
    INTERNALLENGTH = VARIABLE,
    STORAGE = extended
);
COMMENT ON TYPE wallet.points_ledger IS 'one account''s whole points state: spendable lots by expiry, open holds, debt, lifetime totals, 24 monthly earned buckets';

CREATE FUNCTION wallet.ledger_balance(l wallet.points_ledger, as_of timestamptz) RETURNS bigint
    AS 'MODULE_PATHNAME', 'ledger_balance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.ledger_balance(wallet.points_ledger, timestamptz) IS 'points spendable at as_of: lots not yet expired (expiry is exclusive) plus those of lapsed holds, minus debt';

CREATE FUNCTION wallet.ledger_expiring(l wallet.points_ledger, as_of timestamptz, within interval) RETURNS bigint
    AS 'MODULE_PATHNAME', 'ledger_expiring' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.ledger_expiring(wallet.points_ledger, timestamptz, interval) IS 'spendable points at as_of that expire after as_of and no later than as_of + within (interval added in UTC)';

CREATE FUNCTION wallet.ledger_earned(l wallet.points_ledger, from_ts timestamptz, to_ts timestamptz) RETURNS bigint
    AS 'MODULE_PATHNAME', 'ledger_earned' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.ledger_earned(wallet.points_ledger, timestamptz, timestamptz) IS 'points earned in the months (UTC, last 24 kept) whose first instant lies in [from_ts, to_ts)';

CREATE FUNCTION wallet.ledger_lots(l wallet.points_ledger,
        OUT points bigint, OUT expires_at timestamptz, OUT hold_id bigint, OUT hold_expires_at timestamptz)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'ledger_lots' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE ROWS 8;
COMMENT ON FUNCTION wallet.ledger_lots(wallet.points_ledger) IS 'every lot of a ledger: spendable ones (hold_id NULL), then the lots of each open hold; expires_at NULL = never';

CREATE FUNCTION wallet.ledger_totals(l wallet.points_ledger,
        OUT debt bigint, OUT earned bigint, OUT redeemed bigint, OUT expired bigint, OUT open_holds int)
    AS 'MODULE_PATHNAME', 'ledger_totals' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.ledger_totals(wallet.points_ledger) IS 'debt, lifetime earned / redeemed / expired totals and the number of open holds of a ledger';

CREATE FUNCTION wallet.ledger_diff(a wallet.points_ledger, b wallet.points_ledger) RETURNS text
    AS 'MODULE_PATHNAME', 'ledger_diff' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.ledger_diff(wallet.points_ledger, wallet.points_ledger) IS 'NULL when both ledgers hold the same state, else a sentence naming the first difference';

CREATE TYPE wallet.ledger_step AS (
    ledger        wallet.points_ledger,
    amount        bigint,
    balance_after bigint,
    lots          jsonb,
    next_event    timestamptz
);
COMMENT ON TYPE wallet.ledger_step IS 'result of wallet.ledger_apply: the new ledger and what the change did';
COMMENT ON COLUMN wallet.ledger_step.ledger IS 'the ledger after the change';
COMMENT ON COLUMN wallet.ledger_step.amount IS 'signed change of the spendable balance';
COMMENT ON COLUMN wallet.ledger_step.balance_after IS 'spendable balance at the instant of the change, after it';
COMMENT ON COLUMN wallet.ledger_step.lots IS 'the lots the change created, consumed, held, released, expired or restored';
COMMENT ON COLUMN wallet.ledger_step.next_event IS 'soonest lot expiry or hold lapse of the new ledger (NULL = none)';

CREATE FUNCTION wallet.ledger_apply(l wallet.points_ledger, kind text, at timestamptz, points bigint,
        ts timestamptz DEFAULT NULL, hold_id bigint DEFAULT NULL,
        lot_points bigint[] DEFAULT NULL, lot_expiries timestamptz[] DEFAULT NULL, policy text DEFAULT NULL,
        earned_at timestamptz DEFAULT NULL)
    RETURNS wallet.ledger_step
    AS 'MODULE_PATHNAME', 'ledger_apply' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION wallet.ledger_apply(wallet.points_ledger, text, timestamptz, bigint, timestamptz, bigint, bigint[], timestamptz[], text, timestamptz)
    IS 'pure change of a ledger at instant at: accrue, redeem, adjust, hold, capture, release, expire, reverse_accrual, restore (the only place ledgers change)';

-- Lot expiry of a program's policy: at + expiry, rounded up to the end of its
-- UTC day or month (the exclusive expiry is the start of the next one).
CREATE FUNCTION wallet.policy_expiry(at timestamptz, expiry interval, granularity text) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE WHEN expiry IS NULL THEN 'infinity'::timestamptz
                WHEN granularity = 'month'
                THEN (date_trunc('month', (at AT TIME ZONE 'UTC') + expiry) + interval '1 month') AT TIME ZONE 'UTC'
                ELSE (date_trunc('day', (at AT TIME ZONE 'UTC') + expiry) + interval '1 day') AT TIME ZONE 'UTC'
           END
$$;
COMMENT ON FUNCTION wallet.policy_expiry(timestamptz, interval, text) IS 'expiry of points earned at at under a policy: at + expiry rounded up to the end of the UTC day or month; infinity when expiry is NULL';

-- ---------------------------------------------------------------- tables

CREATE TABLE wallet.programs (
    program_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    name        text NOT NULL CHECK (btrim(name) <> ''),
    expiry      interval CHECK (expiry > interval '0'),
    granularity text NOT NULL DEFAULT 'day' CHECK (granularity IN ('day', 'month')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    closed_at   timestamptz,
    UNIQUE (merchant_id, name)
);
COMMENT ON TABLE wallet.programs IS 'points programs of merchants, each with its expiry policy';
COMMENT ON COLUMN wallet.programs.program_id IS 'program id';
COMMENT ON COLUMN wallet.programs.merchant_id IS 'merchant running the program';
COMMENT ON COLUMN wallet.programs.name IS 'program name, unique per merchant';
COMMENT ON COLUMN wallet.programs.expiry IS 'how long accrued points stay spendable (NULL = they never expire)';
COMMENT ON COLUMN wallet.programs.granularity IS 'expiry rounded up to the end of the UTC day or month: day or month';
COMMENT ON COLUMN wallet.programs.created_at IS 'when the program was created';
COMMENT ON COLUMN wallet.programs.closed_at IS 'when the program was closed (no more accruals, redemptions, holds, adjustments, accounts); NULL = open';

-- fillfactor leaves room on each page so that ledger updates stay HOT.
CREATE TABLE wallet.accounts (
    account_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    program_id bigint NOT NULL REFERENCES wallet.programs,
    member_ref text NOT NULL,   -- non-blank: checked by open_account (a CHECK would cost every ledger UPDATE)
    ledger     wallet.points_ledger NOT NULL DEFAULT '',
    next_event timestamptz,
    opened_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (program_id, member_ref)
) WITH (fillfactor = 80);
CREATE INDEX accounts_next_event_idx ON wallet.accounts (next_event) WHERE next_event IS NOT NULL;
COMMENT ON TABLE wallet.accounts IS 'points accounts: one per member and program, holding the whole state as a points_ledger';
COMMENT ON COLUMN wallet.accounts.account_id IS 'account id';
COMMENT ON COLUMN wallet.accounts.program_id IS 'program of the account';
COMMENT ON COLUMN wallet.accounts.member_ref IS 'the merchant app''s own user id, unique per program';
COMMENT ON COLUMN wallet.accounts.ledger IS 'the account''s state; changed only by the ledger operations, explained by wallet.entries';
COMMENT ON COLUMN wallet.accounts.next_event IS 'soonest lot expiry or hold lapse (NULL = none): lets expire_points find due accounts by index';
COMMENT ON COLUMN wallet.accounts.opened_at IS 'when the account was opened';

CREATE TABLE wallet.entries (
    entry_id        bigint GENERATED BY DEFAULT AS IDENTITY (SEQUENCE NAME wallet.entries_entry_id_seq) PRIMARY KEY,
    -- No FOREIGN KEY and no CHECK: entries are written only by the ledger
    -- functions, which hold the account's row lock; an RI trigger and
    -- constraint evaluation would cost about a fifth of every posting.
    account_id      bigint NOT NULL,
    kind            text NOT NULL,
    amount          bigint NOT NULL,
    balance_after   bigint NOT NULL,
    idempotency_key text,
    reason          text,
    reference       text,
    lots            jsonb NOT NULL DEFAULT '[]',
    hold_id         bigint,
    reverses        bigint,
    actor           name NOT NULL DEFAULT current_user,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    points          bigint,
    expires_at      timestamptz,
    policy          text
);
CREATE INDEX entries_account_idx ON wallet.entries (account_id, entry_id);
CREATE UNIQUE INDEX entries_idempotency_key_idx ON wallet.entries (account_id, idempotency_key);
CREATE INDEX entries_reference_idx ON wallet.entries (reference) WHERE reference IS NOT NULL;
-- a hold is closed at most once, an entry reversed at most once
CREATE UNIQUE INDEX entries_hold_closed_idx ON wallet.entries (hold_id) WHERE kind IN ('capture', 'release');
CREATE UNIQUE INDEX entries_reverses_idx ON wallet.entries (reverses) WHERE reverses IS NOT NULL;
COMMENT ON TABLE wallet.entries IS 'append-only journal: one entry per change of an account''s ledger';
COMMENT ON COLUMN wallet.entries.entry_id IS 'entry id, increasing in the order changes were applied to an account';
COMMENT ON COLUMN wallet.entries.account_id IS 'account changed (a wallet.accounts.account_id)';
COMMENT ON COLUMN wallet.entries.kind IS 'accrue, redeem, hold, capture, release, expire, reverse or adjust';
COMMENT ON COLUMN wallet.entries.amount IS 'signed change of the spendable balance (0 where nothing spendable changed, e.g. a full capture)';
COMMENT ON COLUMN wallet.entries.balance_after IS 'spendable balance right after the change (open holds held): the previous entry''s balance_after plus amount';
COMMENT ON COLUMN wallet.entries.idempotency_key IS 'caller''s key, unique per account forever (NULL for capture, release, expire)';
COMMENT ON COLUMN wallet.entries.reason IS 'why the change was made';
COMMENT ON COLUMN wallet.entries.reference IS 'external reference such as an order id (indexed); capture, release and reverse copy it from their hold or entry';
COMMENT ON COLUMN wallet.entries.lots IS 'lots touched, as [{"points": n, "expires_at": ts or null}]: created, consumed, held, released, expired or restored';
COMMENT ON COLUMN wallet.entries.hold_id IS 'the hold entry for hold, capture and release entries';
COMMENT ON COLUMN wallet.entries.reverses IS 'entry undone by a reverse entry';
COMMENT ON COLUMN wallet.entries.actor IS 'current_user that made the change';
COMMENT ON COLUMN wallet.entries.created_at IS 'instant the change was applied at (taken after the account was locked)';
COMMENT ON COLUMN wallet.entries.points IS 'points the caller asked for (signed for adjust; NULL for a full capture, release, expire, reverse)';
COMMENT ON COLUMN wallet.entries.expires_at IS 'accrue/adjust: expiry of the lot; hold: end of the hold; expire, and release of a lapsed hold: the as_of instant it took effect at';
COMMENT ON COLUMN wallet.entries.policy IS 'reverse: within_balance or unlimited';

-- pg_dump dumps the rows of these extension tables (and where their ids
-- stand), so a dump and restore keeps every program, account and entry.
SELECT pg_catalog.pg_extension_config_dump('wallet.programs', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.programs_program_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.accounts', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.accounts_account_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.entries', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.entries_entry_id_seq', '');

CREATE FUNCTION wallet.entries_append_only() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RAISE EXCEPTION 'journal is append-only'
        USING ERRCODE = 'WL213',
              DETAIL = format('%s on wallet.entries is refused: every change of a ledger stays in the journal.', TG_OP),
              HINT = 'Correct a posting with wallet.reverse or wallet.adjust.';
END
$$;
COMMENT ON FUNCTION wallet.entries_append_only() IS 'trigger function refusing UPDATE, DELETE and TRUNCATE on wallet.entries';
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON wallet.entries
    FOR EACH STATEMENT EXECUTE FUNCTION wallet.entries_append_only();

-- ---------------------------------------------------------------- helpers

-- Argument checks every posting shares.  points NULL = the operation takes
-- none; verb names it in the message; signed: non-zero instead of positive.
CREATE FUNCTION wallet.check_posting(points bigint, reason text, idempotency_key text, verb text,
        signed boolean DEFAULT false) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
BEGIN
    IF verb IS NOT NULL AND (points IS NULL OR points = 0 OR (points < 0 AND NOT signed)) THEN
        RAISE EXCEPTION 'invalid amount of points'
            USING ERRCODE = 'WL204',
                  DETAIL = CASE WHEN signed THEN format('The points to %s must be a non-zero number.', verb)
                                ELSE format('The points to %s must be a positive number.', verb) END;
    END IF;
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'reason required'
            USING ERRCODE = 'WL215', DETAIL = 'Every posting needs a non-blank reason, so the journal explains it.';
    END IF;
    IF idempotency_key IS NULL OR btrim(idempotency_key) = '' THEN
        RAISE EXCEPTION 'idempotency key required'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Every posting needs a non-blank idempotency key, so that a retry cannot post twice.';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet.check_posting(bigint, text, text, text, boolean) IS 'raises WL204 for a missing, zero or (unless signed) negative amount, WL215 for a blank reason, 22023 for a blank idempotency key';

CREATE FUNCTION wallet.key_mismatch(e wallet.entries) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION 'idempotency key reused with different arguments'
        USING ERRCODE = 'WL002',
              DETAIL = format('Key "%s" already posted %s entry %s on account %s with other arguments.',
                              e.idempotency_key, e.kind, e.entry_id, e.account_id),
              HINT = 'Use a new key for a new operation; retry only with the same arguments.';
END
$$;
COMMENT ON FUNCTION wallet.key_mismatch(wallet.entries) IS 'raises WL002 for a key already used by entry e with other arguments';

CREATE FUNCTION wallet.unknown_account(account_id bigint) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION 'unknown account'
        USING ERRCODE = 'WL201', DETAIL = format('There is no points account %s.', account_id);
END
$$;
COMMENT ON FUNCTION wallet.unknown_account(bigint) IS 'raises WL201 for an account id that does not exist';

CREATE FUNCTION wallet.program_closed(program_id bigint) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION 'program closed'
        USING ERRCODE = 'WL202',
              DETAIL = format('Points program %s is closed: it takes no new accounts, accruals, redemptions, holds or adjustments.', program_id);
END
$$;
COMMENT ON FUNCTION wallet.program_closed(bigint) IS 'raises WL202 for a closed program';

-- The one mapping of a journal entry onto wallet.ledger_apply, used both to
-- post (wallet.post_entry) and to replay (wallet.replay_ledger).
CREATE FUNCTION wallet.entry_step(l wallet.points_ledger, e wallet.entries) RETURNS wallet.ledger_step
    LANGUAGE plpgsql STABLE
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
    END CASE;
END
$$;
COMMENT ON FUNCTION wallet.entry_step(wallet.points_ledger, wallet.entries) IS 'applies journal entry e to ledger l (the single mapping used by posting and by replay)';

-- Apply e to the locked account's ledger l, store the new ledger, journal e.
CREATE FUNCTION wallet.post_entry(l wallet.points_ledger, e wallet.entries) RETURNS wallet.entries
    LANGUAGE plpgsql
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
    INSERT INTO wallet.entries VALUES (e.*);
    RETURN e;
END
$$;
COMMENT ON FUNCTION wallet.post_entry(wallet.points_ledger, wallet.entries) IS 'applies entry e to the locked account''s ledger l, stores the result and journals e';

-- Journal what time did to a locked account up to as_of: one expire entry
-- for the spendable lots dead at as_of, then a release (taking effect at
-- as_of, recorded in expires_at) for each lapsed hold.  Returns the number of
-- expire entries posted (0 or 1).
CREATE FUNCTION wallet.settle_account(account_id bigint, as_of timestamptz, at timestamptz) RETURNS int
    LANGUAGE plpgsql
    AS $$
DECLARE
    l wallet.points_ledger;
    h record;
    e wallet.entries;
    n int := 0;
BEGIN
    SELECT a.ledger INTO l FROM wallet.accounts a WHERE a.account_id = settle_account.account_id;
    IF EXISTS (SELECT FROM wallet.ledger_lots(l) x WHERE x.hold_id IS NULL AND x.expires_at <= as_of) THEN
        e := ROW(NULL, settle_account.account_id, 'expire', 0, 0, NULL, 'points expired', NULL, '[]',
                 NULL, NULL, NULL, at, NULL, as_of, NULL);
        PERFORM wallet.post_entry(l, e);
        SELECT a.ledger INTO l FROM wallet.accounts a WHERE a.account_id = settle_account.account_id;
        n := 1;
    END IF;
    FOR h IN SELECT DISTINCT x.hold_id FROM wallet.ledger_lots(l) x
              WHERE x.hold_expires_at <= as_of ORDER BY x.hold_id LOOP
        SELECT * INTO e FROM wallet.entries WHERE entry_id = h.hold_id;
        e := ROW(NULL, settle_account.account_id, 'release', 0, 0, NULL, 'hold expired', e.reference, '[]',
                 h.hold_id, NULL, NULL, at, NULL, as_of, NULL);
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

-- Lock an account and read what every posting needs; settles it first when
-- a lot expired or a hold lapsed since the last change.  prior is the entry
-- already posted with idempotency_key, looked up under the lock so that a
-- concurrent call with the same key has committed (or rolled back) by then.
CREATE TYPE wallet.locked_account AS (
    ledger      wallet.points_ledger,
    program_id  bigint,
    closed      boolean,
    expiry      interval,
    granularity text,
    prior       wallet.entries,
    at          timestamptz
);
COMMENT ON TYPE wallet.locked_account IS 'what wallet.lock_account returns to a posting';
COMMENT ON COLUMN wallet.locked_account.ledger IS 'the account''s ledger, settled up to the posting''s instant';
COMMENT ON COLUMN wallet.locked_account.program_id IS 'program of the account';
COMMENT ON COLUMN wallet.locked_account.closed IS 'whether the program is closed';
COMMENT ON COLUMN wallet.locked_account.expiry IS 'the program''s expiry (NULL = never)';
COMMENT ON COLUMN wallet.locked_account.granularity IS 'the program''s expiry granularity';
COMMENT ON COLUMN wallet.locked_account.prior IS 'entry already posted on the account with the idempotency key, if any';
COMMENT ON COLUMN wallet.locked_account.at IS 'the posting''s instant: the clock right after the lock was granted, so entries of an account are in time order';

CREATE FUNCTION wallet.lock_account(account_id bigint, idempotency_key text DEFAULT NULL)
    RETURNS wallet.locked_account
    LANGUAGE plpgsql
    AS $$
DECLARE
    due timestamptz;
    r wallet.locked_account;
    prior wallet.entries;
BEGIN
    SELECT a.ledger, a.program_id, a.next_event, p.closed_at IS NOT NULL, p.expiry, p.granularity
      INTO r.ledger, r.program_id, due, r.closed, r.expiry, r.granularity
      FROM wallet.accounts a JOIN wallet.programs p ON p.program_id = a.program_id
     WHERE a.account_id = lock_account.account_id
       FOR NO KEY UPDATE OF a;
    IF NOT FOUND THEN
        PERFORM wallet.unknown_account(lock_account.account_id);
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
        PERFORM wallet.settle_account(lock_account.account_id, r.at, r.at);
        SELECT a.ledger INTO r.ledger FROM wallet.accounts a WHERE a.account_id = lock_account.account_id;
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet.lock_account(bigint, text) IS 'locks an account row for a posting, settles due expiries and lapsed holds, returns its ledger, program policy and the entry already posted with idempotency_key';

-- What a posting does once its account is locked: return the earlier entry
-- of an identical retry (same), refuse a reused key (WL002) or a closed
-- program (WL202), else post e.
CREATE FUNCTION wallet.post_once(a wallet.locked_account, same boolean, e wallet.entries, check_closed boolean DEFAULT true)
    RETURNS wallet.entries
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF (a.prior).entry_id IS NOT NULL THEN
        IF same THEN
            RETURN a.prior;
        END IF;
        PERFORM wallet.key_mismatch(a.prior);
    END IF;
    IF check_closed AND a.closed THEN
        PERFORM wallet.program_closed(a.program_id);
    END IF;
    RETURN wallet.post_entry(a.ledger, e);
END
$$;
COMMENT ON FUNCTION wallet.post_once(wallet.locked_account, boolean, wallet.entries, boolean) IS 'after lock_account: returns the prior entry of an identical retry, raises WL002 for a reused key or WL202 for a closed program, else posts e';

-- ---------------------------------------------------------------- programs and accounts

CREATE FUNCTION wallet.create_program(merchant_id bigint, name text, expiry interval DEFAULT NULL,
        granularity text DEFAULT 'day') RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    id bigint;
BEGIN
    IF name IS NULL OR btrim(name) = '' THEN
        RAISE EXCEPTION 'program name must not be blank'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A points program needs a name that people can recognise.';
    END IF;
    IF expiry IS NOT NULL AND expiry <= interval '0' THEN
        RAISE EXCEPTION 'expiry must be positive'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Points expire a positive time after they are earned, or never (NULL).';
    END IF;
    IF granularity IS NULL OR granularity NOT IN ('day', 'month') THEN
        RAISE EXCEPTION 'unknown granularity "%"', granularity
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Expiry is rounded up to the end of a ''day'' or a ''month''.';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.merchants m WHERE m.merchant_id = create_program.merchant_id) THEN
        RAISE EXCEPTION 'unknown merchant'
            USING ERRCODE = 'foreign_key_violation', DETAIL = format('There is no merchant %s.', merchant_id);
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

CREATE FUNCTION wallet.close_program(program_id bigint) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE wallet.programs p SET closed_at = coalesce(p.closed_at, now())
     WHERE p.program_id = close_program.program_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
END
$$;
COMMENT ON FUNCTION wallet.close_program(bigint) IS 'closes a program: no new accounts, accruals, redemptions, holds or adjustments; open holds can still be captured or released, postings reversed, points expired (idempotent)';

CREATE FUNCTION wallet.open_account(program_id bigint, member_ref text) RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    id bigint;
    is_closed boolean;
BEGIN
    IF member_ref IS NULL OR btrim(member_ref) = '' THEN
        RAISE EXCEPTION 'member reference must not be blank'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An account is opened for the merchant app''s own user id.';
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

-- ---------------------------------------------------------------- postings

CREATE FUNCTION wallet.accrue(account_id bigint, points bigint, idempotency_key text, reason text,
        reference text DEFAULT NULL, expires_at timestamptz DEFAULT NULL) RETURNS wallet.entries
    LANGUAGE plpgsql
    AS $$
DECLARE
    at timestamptz;
    a wallet.locked_account;
BEGIN
    PERFORM wallet.check_posting(points, reason, idempotency_key, 'accrue');
    a := wallet.lock_account(account_id, idempotency_key);
    at := a.at;
    RETURN wallet.post_once(a,
        (a.prior).kind = 'accrue' AND (a.prior).points = points AND (a.prior).reason = reason
            AND (a.prior).reference IS NOT DISTINCT FROM reference
            AND (a.prior).expires_at = coalesce(expires_at, wallet.policy_expiry((a.prior).created_at, a.expiry, a.granularity)),
        ROW(NULL, account_id, 'accrue', 0, 0, idempotency_key, reason, reference, '[]', NULL, NULL, NULL, at,
            points, coalesce(expires_at, wallet.policy_expiry(at, a.expiry, a.granularity)), NULL));
END
$$;
COMMENT ON FUNCTION wallet.accrue(bigint, bigint, text, text, text, timestamptz) IS 'credits points (a debt is paid off first) expiring at expires_at or per the program policy; idempotent on idempotency_key';

CREATE FUNCTION wallet.redeem(account_id bigint, points bigint, idempotency_key text, reason text,
        reference text DEFAULT NULL) RETURNS wallet.entries
    LANGUAGE plpgsql
    AS $$
DECLARE
    at timestamptz;
    a wallet.locked_account;
BEGIN
    PERFORM wallet.check_posting(points, reason, idempotency_key, 'redeem');
    a := wallet.lock_account(account_id, idempotency_key);
    at := a.at;
    RETURN wallet.post_once(a,
        (a.prior).kind = 'redeem' AND (a.prior).points = points AND (a.prior).reason = reason
            AND (a.prior).reference IS NOT DISTINCT FROM reference,
        ROW(NULL, account_id, 'redeem', 0, 0, idempotency_key, reason, reference, '[]', NULL, NULL, NULL, at,
            points, NULL, NULL));
END
$$;
COMMENT ON FUNCTION wallet.redeem(bigint, bigint, text, text, text) IS 'spends points, soonest-expiring lots first (WL203 when not enough are spendable); idempotent on idempotency_key';

CREATE FUNCTION wallet.hold(account_id bigint, points bigint, idempotency_key text, ttl interval, reason text,
        reference text DEFAULT NULL) RETURNS wallet.entries
    LANGUAGE plpgsql
    AS $$
DECLARE
    at timestamptz;
    a wallet.locked_account;
    id bigint;
BEGIN
    PERFORM wallet.check_posting(points, reason, idempotency_key, 'hold');
    IF ttl IS NULL OR ttl <= interval '0' THEN
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

-- Find a hold and lock its account; returns the closing entry if there is one.
CREATE FUNCTION wallet.lock_hold(hold_id bigint,
        OUT h wallet.entries, OUT closing wallet.entries, OUT ledger wallet.points_ledger, OUT at timestamptz)
    LANGUAGE plpgsql
    AS $$
BEGIN
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
COMMENT ON FUNCTION wallet.lock_hold(bigint) IS 'finds hold hold_id (WL206 if none), locks its account unless already closed, returns the closing capture or release entry if any';

CREATE FUNCTION wallet.hold_not_open(hold_id bigint, closing wallet.entries) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION 'hold not open'
        USING ERRCODE = 'WL207',
              DETAIL = format('Hold %s was already closed by %s entry %s.', hold_id, closing.kind, closing.entry_id);
END
$$;
COMMENT ON FUNCTION wallet.hold_not_open(bigint, wallet.entries) IS 'raises WL207 for a hold already captured or released';

CREATE FUNCTION wallet.capture(hold_id bigint, points bigint DEFAULT NULL) RETURNS wallet.entries
    LANGUAGE plpgsql
    AS $$
DECLARE
    at timestamptz;
    k record;
    e wallet.entries;
BEGIN
    IF points IS NOT NULL AND points <= 0 THEN
        RAISE EXCEPTION 'invalid amount of points'
            USING ERRCODE = 'WL204', DETAIL = 'The points to capture must be a positive number, or NULL for the whole hold.';
    END IF;
    k := wallet.lock_hold(hold_id);
    at := k.at;
    IF (k.closing).kind = 'capture' AND (k.closing).points IS NOT DISTINCT FROM capture.points THEN
        RETURN k.closing;   -- the identical call, repeated
    END IF;
    IF at >= (k.h).expires_at THEN
        RAISE EXCEPTION 'hold expired'
            USING ERRCODE = 'WL208',
                  DETAIL = format('Hold %s stopped holding its points when its time to live ran out.', hold_id);
    END IF;
    IF (k.closing).entry_id IS NOT NULL THEN
        PERFORM wallet.hold_not_open(hold_id, k.closing);
    END IF;
    e := ROW(NULL, (k.h).account_id, 'capture', 0, 0, NULL, (k.h).reason, (k.h).reference, '[]', hold_id, NULL, NULL, at,
             points, NULL, NULL);
    RETURN wallet.post_entry(k.ledger, e);
END
$$;
COMMENT ON FUNCTION wallet.capture(bigint, bigint) IS 'redeems all (points NULL) or part of a hold within its time to live; the rest becomes spendable again';

CREATE FUNCTION wallet.release(hold_id bigint) RETURNS wallet.entries
    LANGUAGE plpgsql
    AS $$
DECLARE
    at timestamptz;
    k record;
    e wallet.entries;
BEGIN
    k := wallet.lock_hold(hold_id);
    at := k.at;
    IF (k.closing).kind = 'release' THEN
        RETURN k.closing;   -- released already (by this call before, or when the hold lapsed)
    ELSIF (k.closing).entry_id IS NOT NULL THEN
        PERFORM wallet.hold_not_open(hold_id, k.closing);
    END IF;
    e := ROW(NULL, (k.h).account_id, 'release', 0, 0, NULL, (k.h).reason, (k.h).reference, '[]', hold_id, NULL, NULL, at,
             NULL, NULL, NULL);
    RETURN wallet.post_entry(k.ledger, e);
END
$$;
COMMENT ON FUNCTION wallet.release(bigint) IS 'returns a hold''s points to the spendable balance; repeating it (or calling it after the hold lapsed) returns the release entry';

CREATE FUNCTION wallet.reverse(entry_id bigint, idempotency_key text, reason text,
        policy text DEFAULT 'within_balance') RETURNS wallet.entries
    LANGUAGE plpgsql
    AS $$
DECLARE
    at timestamptz;
    o wallet.entries;
    a wallet.locked_account;
    r bigint;
BEGIN
    IF policy IS NULL OR policy NOT IN ('within_balance', 'unlimited') THEN
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

CREATE FUNCTION wallet.adjust(account_id bigint, points bigint, idempotency_key text, reason text) RETURNS wallet.entries
    LANGUAGE plpgsql
    AS $$
DECLARE
    at timestamptz;
    a wallet.locked_account;
BEGIN
    PERFORM wallet.check_posting(points, reason, idempotency_key, 'adjust', signed => true);
    a := wallet.lock_account(account_id, idempotency_key);
    at := a.at;
    RETURN wallet.post_once(a,
        (a.prior).kind = 'adjust' AND (a.prior).points = points AND (a.prior).reason = reason,
        ROW(NULL, account_id, 'adjust', 0, 0, idempotency_key, reason, NULL, '[]', NULL, NULL, NULL, at, points,
            CASE WHEN points > 0 THEN wallet.policy_expiry(at, a.expiry, a.granularity) END, NULL));
END
$$;
COMMENT ON FUNCTION wallet.adjust(bigint, bigint, text, text) IS 'manual correction: adds points (expiring per policy) or removes them (soonest-expiring first, within the balance); reason required';

CREATE FUNCTION wallet.expire_points(as_of timestamptz DEFAULT now()) RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    acc bigint;
    due timestamptz;
    n bigint := 0;
BEGIN
    FOR acc IN SELECT a.account_id FROM wallet.accounts a WHERE a.next_event <= as_of ORDER BY a.account_id LOOP
        SELECT a.next_event INTO due FROM wallet.accounts a WHERE a.account_id = acc FOR NO KEY UPDATE;
        IF due <= as_of THEN   -- a concurrent posting may have settled it meanwhile
            n := n + wallet.settle_account(acc, as_of, clock_timestamp());
        END IF;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet.expire_points(timestamptz) IS 'posts an expire entry per account with lots expired at as_of (and a release for each lapsed hold); returns the number of expire entries; a second run posts nothing';

-- ---------------------------------------------------------------- read side

CREATE FUNCTION wallet.balance(account_id bigint, as_of timestamptz DEFAULT now()) RETURNS bigint
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    b bigint;
BEGIN
    SELECT wallet.ledger_balance(a.ledger, as_of) INTO b FROM wallet.accounts a WHERE a.account_id = balance.account_id;
    IF NOT FOUND THEN
        PERFORM wallet.unknown_account(account_id);
    END IF;
    RETURN b;
END
$$;
COMMENT ON FUNCTION wallet.balance(bigint, timestamptz) IS 'points spendable at as_of (expired lots never count, whether or not expire_points ran)';

-- Replays an account's journal (entries created up to upto) through
-- wallet.entry_step; problem names the first entry whose replay disagrees
-- with what the journal recorded.
CREATE FUNCTION wallet.replay_ledger(account_id bigint, upto timestamptz DEFAULT 'infinity',
        OUT ledger wallet.points_ledger, OUT problem text)
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    e wallet.entries;
    s wallet.ledger_step;
BEGIN
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

CREATE FUNCTION wallet.balance_at(account_id bigint, ts timestamptz) RETURNS bigint
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM wallet.accounts a WHERE a.account_id = balance_at.account_id) THEN
        PERFORM wallet.unknown_account(account_id);
    END IF;
    RETURN wallet.ledger_balance((wallet.replay_ledger(account_id, ts)).ledger, ts);
END
$$;
COMMENT ON FUNCTION wallet.balance_at(bigint, timestamptz) IS 'spendable balance at instant ts, rebuilt from the journal';

CREATE FUNCTION wallet.history(account_id bigint, from_ts timestamptz DEFAULT '-infinity',
        to_ts timestamptz DEFAULT 'infinity') RETURNS SETOF wallet.entries
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM wallet.accounts a WHERE a.account_id = history.account_id) THEN
        PERFORM wallet.unknown_account(account_id);
    END IF;
    RETURN QUERY SELECT * FROM wallet.entries x
                  WHERE x.account_id = history.account_id AND x.created_at >= from_ts AND x.created_at < to_ts
                  ORDER BY x.entry_id;
END
$$;
COMMENT ON FUNCTION wallet.history(bigint, timestamptz, timestamptz) IS 'journal entries of an account created in [from_ts, to_ts), oldest first';

CREATE FUNCTION wallet.program_liability(program_id bigint, as_of timestamptz DEFAULT now())
    RETURNS TABLE (expiry_month date, points bigint)
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
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

-- The input parameter is unnamed: a parameter cannot share the name of the
-- output column account_id.
CREATE FUNCTION wallet.verify_ledger(bigint DEFAULT NULL)
    RETURNS TABLE (account_id bigint, stored_balance bigint, replayed_balance bigint, detail text)
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    a record;
    r record;
    d text;
BEGIN
    IF $1 IS NOT NULL
       AND NOT EXISTS (SELECT FROM wallet.accounts x WHERE x.account_id = $1) THEN
        PERFORM wallet.unknown_account($1);
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
COMMENT ON FUNCTION wallet.verify_ledger(bigint) IS 'replays the journal of one or every account; returns each account whose stored ledger differs from its journal';

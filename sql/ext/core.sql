-- wallet extension install script, assembled from sql/ext/*.sql by the Makefile.
\echo Use "CREATE EXTENSION wallet" to load this file. \quit

-- The script creates the schema itself: a schema that CREATE EXTENSION makes
-- from the control file is not a member of the extension, so DROP EXTENSION
-- would leave it behind.  The extension is recorded in pg_catalog
-- (wallet.control), and all objects are schema-qualified.
CREATE SCHEMA wallet;
COMMENT ON SCHEMA wallet IS 'digital-wallet marketing: marketing codes and points ledger';
-- Internal helpers (trigger functions, checks, locking and posting steps,
-- idempotency fingerprints) live in a schema of their own, outside the API:
-- what is in schema wallet is what a user calls or reads.
CREATE SCHEMA wallet_internal;
REVOKE ALL ON SCHEMA wallet_internal FROM PUBLIC;
COMMENT ON SCHEMA wallet_internal IS 'internal helpers of the wallet extension (not an API: they change between versions)';

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
COMMENT ON FUNCTION wallet.create_merchant(text) IS 'register a merchant and return its id; the calling role acts for it from then on';

-- Idempotency, one mechanism for every call that takes an idempotency key
-- (code redemptions and reservations, ledger postings, and what comes next):
-- a call's fingerprint is a jsonb object of what decides its outcome (never
-- request metadata such as a redemption's context).  It is derived by the
-- same function from the stored row of the first call and from the retry's
-- arguments, so rows stored before a fingerprint existed compare as well.
-- Equal fingerprints make a retry, which returns the first result; different
-- ones raise WL002 here, naming the fields that differ.
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

-- wallet extension install script, assembled from sql/ext/*.sql by the Makefile.
\echo Use "CREATE EXTENSION wallet" to load this file. \quit

-- The script creates the schema itself: a schema that CREATE EXTENSION makes
-- from the control file is not a member of the extension, so DROP EXTENSION
-- would leave it behind.  The extension is recorded in pg_catalog
-- (wallet.control), and all objects are schema-qualified.
CREATE SCHEMA wallet;
COMMENT ON SCHEMA wallet IS 'digital-wallet marketing: marketing codes, points ledger, loyalty (purchases, earning rules, tiers), campaigns, push queue';
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
    IF btrim(name) = '' OR length(name) > 200 THEN
        RAISE EXCEPTION 'merchant name must not be %', CASE WHEN btrim(name) = '' THEN 'blank' ELSE 'longer than 200 characters' END
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A merchant needs a name that people can recognise.';
    END IF;
    INSERT INTO wallet.merchants (name) VALUES (name) RETURNING merchant_id INTO id;
    -- the role that registers a merchant acts for it (README "Merchants and isolation"), never a group role (22023)
    IF NOT wallet.acts_for(id) THEN
        INSERT INTO wallet.merchant_roles (merchant_id, role, role_name)
        SELECT id, a.oid, a.rolname FROM pg_catalog.pg_roles a WHERE a.oid = wallet_internal.check_holder(wallet_internal.caller());
    END IF;
    RETURN id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'merchant "%" already exists', name
        USING ERRCODE = 'unique_violation',
              DETAIL = 'Merchant names are unique; the merchants a role acts for are listed by wallet.my_merchants().';
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
CREATE FUNCTION wallet_internal.idem_check(idempotency_key text, earlier text, stored jsonb, given jsonb) RETURNS void
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
COMMENT ON FUNCTION wallet_internal.idem_check(text, text, jsonb, jsonb) IS 'internal: returns when the fingerprint given by a call equals the stored one of the earlier call with its idempotency key (a retry), else raises WL002 naming the fields that differ';

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
    ('WL702', 'push_not_sending', 'extend_lease, ack_push, ack_pushes, fail_push on a message that is not claimed (not status sending), or, with a claim''s attempt, one claimed again since'),
    ('WL703', 'push_not_dead', 'requeue_push of a message that is not a dead letter'),
    ('WL704', 'push_not_sent', 'record_push_event for a message that was not sent');
COMMENT ON VIEW wallet.error_codes IS 'every SQLSTATE of class WL the extension raises: code, name and when it is raised';
COMMENT ON COLUMN wallet.error_codes.sqlstate IS 'the five-character SQLSTATE, WL followed by three digits';
COMMENT ON COLUMN wallet.error_codes.name IS 'the code''s name (src/errcodes.h: ERRCODE_WL_<NAME>)';
COMMENT ON COLUMN wallet.error_codes.description IS 'when the extension raises it';

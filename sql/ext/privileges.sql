
-- ======================================================================
-- Roles, privileges and merchant isolation (issue 9).
--
-- Three NOLOGIN roles (cluster-wide: created if missing, left behind by DROP
-- EXTENSION): wallet_admin, wallet_app, wallet_reader.  Nothing is usable by
-- PUBLIC; no role but the owner writes a table: every write goes through a
-- SECURITY DEFINER function.  A role acts for the merchants granted to it in
-- wallet.merchant_roles (or to a role it is a member of); every function
-- treats another merchant's object as unknown, and row-level security shows
-- readers and apps only their merchants' rows.  README "Roles and
-- privileges" and "Merchants and isolation".
-- ======================================================================

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
    role_name   name NOT NULL,
    PRIMARY KEY (merchant_id, role)
);
COMMENT ON TABLE wallet.merchant_roles IS 'which roles act for which merchant (wallet.grant_merchant): members of such a role see and change that merchant''s objects';
COMMENT ON COLUMN wallet.merchant_roles.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.merchant_roles.role IS 'role acting for the merchant, with every role that is a member of it';
COMMENT ON COLUMN wallet.merchant_roles.granted_at IS 'when the merchant was granted to the role';
COMMENT ON COLUMN wallet.merchant_roles.role_name IS 'the role''s name when granted: the row counts only while the role has that name (a dropped role''s id taken by another role, or restored onto another cluster''s role, acts for nothing; a renamed role is granted again)';
SELECT pg_catalog.pg_extension_config_dump('wallet.merchant_roles', '');
CREATE TRIGGER audit_change AFTER INSERT OR UPDATE OR DELETE ON wallet.merchant_roles
    FOR EACH ROW EXECUTE FUNCTION wallet_internal.audit_change('merchant_id', 'role');
COMMENT ON TRIGGER audit_change ON wallet.merchant_roles IS 'records merchant grants in wallet.audit_log';

CREATE FUNCTION wallet_internal.caller() RETURNS regrole
    AS 'MODULE_PATHNAME', 'wallet_caller'
    LANGUAGE C STABLE;
COMMENT ON FUNCTION wallet_internal.caller() IS 'the role calling (session user or SET ROLE), unchanged by SECURITY DEFINER functions and by any argument';

CREATE FUNCTION wallet_internal.grant_counts(role regrole, role_name name) RETURNS boolean
    AS 'MODULE_PATHNAME', 'wallet_grant_counts'
    LANGUAGE C STABLE;
COMMENT ON FUNCTION wallet_internal.grant_counts(regrole, name) IS 'internal: whether a row of wallet.merchant_roles counts (false for NULLs): its role exists under role_name, and wallet_admin, wallet_app and wallet_reader are not members of it';

CREATE FUNCTION wallet.acts_for(merchant_id bigint) RETURNS boolean
    AS 'MODULE_PATHNAME', 'wallet_acts_for'
    LANGUAGE C STABLE;
COMMENT ON FUNCTION wallet.acts_for(bigint) IS 'whether the calling role acts for the merchant: a superuser, the extension''s owner, or a member of a role granted the merchant (cached in the session until a grant, membership or role changes); a NULL merchant_id is 22004';

CREATE FUNCTION wallet_internal.sees_all() RETURNS boolean
    AS 'MODULE_PATHNAME', 'wallet_sees_all'
    LANGUAGE C STABLE;
COMMENT ON FUNCTION wallet_internal.sees_all() IS 'internal: whether the calling role acts for every merchant (a superuser or the extension''s owner): only such a role changes what applies to every merchant';

CREATE FUNCTION wallet_internal.sole_merchant() RETURNS bigint
    AS 'MODULE_PATHNAME', 'wallet_sole_merchant'
    LANGUAGE C STABLE;
COMMENT ON FUNCTION wallet_internal.sole_merchant() IS 'internal: the one merchant the calling role acts for; NULL when it acts for none, for several or for every one (cached as acts_for is)';

-- The merchants of a call that names none (purge, expire, clear): those the
-- caller acts for, or NULL (every merchant, and rows of none) for a role
-- that acts for all.
CREATE FUNCTION wallet_internal.caller_merchants() RETURNS bigint[]
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF wallet_internal.sees_all() THEN
        RETURN NULL;
    END IF;
    RETURN ARRAY(SELECT DISTINCT r.merchant_id FROM wallet.merchant_roles r
                  WHERE wallet_internal.grant_counts(r.role, r.role_name) AND pg_has_role(wallet_internal.caller(), r.role, 'MEMBER')
                  ORDER BY 1);
END
$$;
COMMENT ON FUNCTION wallet_internal.caller_merchants() IS 'internal: the merchants the calling role acts for, in order; NULL for a role that acts for every merchant (a superuser or the extension''s owner)';

-- wallet_admin, wallet_app and wallet_reader are the groups of every
-- merchant's roles: a merchant held by one of them (or by a role one of them
-- is a member of) would be acted for by every admin, app or reader.
CREATE FUNCTION wallet_internal.check_holder(role regrole) RETURNS regrole
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    g text;
BEGIN
    SELECT x INTO g FROM unnest(ARRAY['wallet_admin', 'wallet_app', 'wallet_reader']) x
     WHERE EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = x)
       AND pg_has_role(x, role, 'MEMBER')
     LIMIT 1;
    IF g IS NOT NULL THEN
        RAISE EXCEPTION 'role % cannot act for a merchant', role
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Every member of %s would act for it: a merchant is held by login roles (or other roles of its own), never by wallet_admin, wallet_app or wallet_reader.', g),
                  HINT = 'Grant the merchant to the login role (or a role of the merchant''s own) that is granted wallet_admin, wallet_app or wallet_reader.';
    END IF;
    RETURN role;
END
$$;
COMMENT ON FUNCTION wallet_internal.check_holder(regrole) IS 'internal: returns the role, or raises 22023 for a role that must not act for a merchant: wallet_admin, wallet_app, wallet_reader, or a role one of them is a member of';

CREATE FUNCTION wallet_internal.merchant_roles_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'wallet_merchant_roles_changed'
    LANGUAGE C;
COMMENT ON FUNCTION wallet_internal.merchant_roles_changed() IS 'trigger: a change of wallet.merchant_roles counts for wallet.acts_for from the next call on';
CREATE TRIGGER merchant_roles_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON wallet.merchant_roles
    FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.merchant_roles_changed();
COMMENT ON TRIGGER merchant_roles_changed ON wallet.merchant_roles IS 'resets the cache of wallet.acts_for, in this session at once and in the others from their next transaction, when merchant grants change';

-- WL102 exactly as for a merchant that does not exist.
CREATE FUNCTION wallet_internal.check_merchant(merchant_id bigint) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF merchant_id IS NULL THEN
        RAISE EXCEPTION 'merchant_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Every call acts for one merchant, named by its id.';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.merchants m WHERE m.merchant_id = check_merchant.merchant_id)
       OR NOT wallet.acts_for(merchant_id) THEN
        RAISE EXCEPTION 'merchant % does not exist', merchant_id
            USING ERRCODE = 'WL102', DETAIL = format('There is no merchant %s the caller acts for.', merchant_id), HINT = 'Register the merchant with wallet.create_merchant first.';
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
    PERFORM wallet_internal.check_holder(role);
    -- the role's name as of now: a row left by a role renamed since (or
    -- by a dropped role whose id another role took) is made to count again
    INSERT INTO wallet.merchant_roles AS r (merchant_id, role, role_name)
    SELECT grant_merchant.merchant_id, a.oid, a.rolname FROM pg_catalog.pg_roles a WHERE a.oid = grant_merchant.role
        ON CONFLICT ON CONSTRAINT merchant_roles_pkey DO UPDATE SET role_name = excluded.role_name, granted_at = now()
           WHERE r.role_name <> excluded.role_name;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n > 0;
END
$$;
COMMENT ON FUNCTION wallet.grant_merchant(bigint, regrole) IS 'let a role (and its members) act for a merchant the caller acts for; returns false when it already did (a grant made under the role''s former name, before a rename, is renewed: true)';

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
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN (SELECT coalesce((SELECT wallet.acts_for(p.merchant_id) FROM wallet.programs p WHERE p.program_id = $1), false));
END
$$;
COMMENT ON FUNCTION wallet_internal.sees_program(bigint) IS 'whether the program exists and the caller acts for its merchant';

CREATE FUNCTION wallet_internal.sees_account(account_id bigint) RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN (SELECT coalesce((SELECT wallet.acts_for(p.merchant_id)
                               FROM wallet.accounts a JOIN wallet.programs p ON p.program_id = a.program_id
                              WHERE a.account_id = $1), false));
END
$$;
COMMENT ON FUNCTION wallet_internal.sees_account(bigint) IS 'whether the account exists and the caller acts for its merchant';

CREATE FUNCTION wallet_internal.sees_campaign(campaign_id bigint) RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN (SELECT coalesce((SELECT wallet.acts_for(c.merchant_id) FROM wallet.campaigns c WHERE c.campaign_id = $1), false));
END
$$;
COMMENT ON FUNCTION wallet_internal.sees_campaign(bigint) IS 'whether the campaign exists and the caller acts for its merchant';

-- Idempotency keys of redemptions and reservations are unique per merchant:
-- the merchant of the code's campaign, when the caller acts for it (else
-- NULL: no key of another merchant is ever looked up).
CREATE FUNCTION wallet_internal.code_merchant(input text) RETURNS bigint
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN (SELECT c.merchant_id FROM wallet.parse_code($1) p JOIN wallet.campaigns c ON c.campaign_id = wallet.code_campaign(p.code)
             WHERE wallet.acts_for(c.merchant_id));
END
$$;
COMMENT ON FUNCTION wallet_internal.code_merchant(text) IS 'merchant of the campaign of a code text, when the caller acts for it; NULL otherwise (malformed, unknown or another merchant''s)';

-- Whether a stored key of merchant stored is the key a call means: the
-- code's merchant when the call names one the caller acts for, else (a
-- malformed or unknown code) any merchant the caller acts for, so that a
-- retry with a mistyped code still meets its key (WL002).
CREATE FUNCTION wallet_internal.key_scope(stored bigint, code_merchant bigint) RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN CASE WHEN $2 IS NOT NULL THEN $1 = $2 ELSE wallet.acts_for($1) END;
END
$$;
COMMENT ON FUNCTION wallet_internal.key_scope(bigint, bigint) IS 'whether a key stored for merchant stored is in the scope of a call whose code is of merchant code_merchant (NULL: malformed, unknown or another merchant''s; then every merchant the caller acts for)';

-- Row-level security: readers and apps see their merchants' rows.  ENABLE,
-- not FORCE: the owner, whose SECURITY DEFINER functions do every write,
-- checks objects itself and is not filtered.  Three tables have rows of no
-- merchant (merchant_id NULL: the guard's defaults, texts naming no
-- campaign, global audit records), which no reader or app sees; acts_for
-- refuses a NULL (22004), so their policy tests for it first, in a CASE
-- (the order of an AND's operands is the planner's).
ALTER TABLE wallet.merchants ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.merchants USING (wallet.acts_for(merchant_id));
ALTER TABLE wallet.merchant_roles ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.merchant_roles USING (wallet.acts_for(merchant_id));
ALTER TABLE wallet.programs ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.programs USING (wallet.acts_for(merchant_id));
ALTER TABLE wallet.campaigns ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.campaigns USING (wallet.acts_for(merchant_id));
ALTER TABLE wallet.code_guard_settings ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.code_guard_settings USING (CASE WHEN merchant_id IS NULL THEN false ELSE wallet.acts_for(merchant_id) END);
ALTER TABLE wallet.code_failed_attempts ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.code_failed_attempts USING (CASE WHEN merchant_id IS NULL THEN false ELSE wallet.acts_for(merchant_id) END);
ALTER TABLE wallet.members ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.members USING (wallet.acts_for(merchant_id));
ALTER TABLE wallet.audit_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.audit_log USING (CASE WHEN merchant_id IS NULL THEN false ELSE wallet.acts_for(merchant_id) END);
-- Tables whose rows belong to a program or campaign carry its merchant too
-- (conventions): their policy reads their own row, no lookup of the parent.
ALTER TABLE wallet.accounts ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.accounts USING (wallet.acts_for(merchant_id));
ALTER TABLE wallet.entries ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.entries USING (wallet.acts_for(merchant_id));
ALTER TABLE wallet.code_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.code_keys USING (wallet.acts_for(merchant_id));
ALTER TABLE wallet.code_bindings ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.code_bindings USING (wallet.acts_for(merchant_id));
ALTER TABLE wallet.code_reservations ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.code_reservations USING (wallet.acts_for(merchant_id));
ALTER TABLE wallet.code_redemptions ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.code_redemptions USING (wallet.acts_for(merchant_id));
ALTER TABLE wallet.code_use_counts ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.code_use_counts USING (wallet.acts_for(merchant_id));
ALTER TABLE wallet.member_use_counts ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.member_use_counts USING (wallet.acts_for(merchant_id));
ALTER TABLE wallet.campaign_use_counts ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.campaign_use_counts USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.merchants IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
COMMENT ON POLICY merchant_rows ON wallet.merchant_roles IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
COMMENT ON POLICY merchant_rows ON wallet.programs IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
COMMENT ON POLICY merchant_rows ON wallet.campaigns IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
COMMENT ON POLICY merchant_rows ON wallet.code_guard_settings IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for), none of the rows of no merchant (merchant_id NULL)';
COMMENT ON POLICY merchant_rows ON wallet.code_failed_attempts IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for), none of the rows of no merchant (merchant_id NULL)';
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
COMMENT ON POLICY merchant_rows ON wallet.audit_log IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for), none of the rows of no merchant (merchant_id NULL)';

-- pgTAP: the foundation, and rules every object of the extension must keep.
BEGIN;
SELECT plan(18);

SELECT has_schema('wallet', 'schema wallet exists');
SELECT has_function('wallet', 'version', '{}'::name[], 'wallet.version() exists');
SELECT is((SELECT proparallel FROM pg_proc WHERE oid = 'wallet.version()'::regprocedure), 's',
          'wallet.version() is PARALLEL SAFE');
SELECT is_strict('wallet', 'version', '{}'::name[], 'wallet.version() is STRICT');
SELECT isnt(obj_description('wallet.version()'::regprocedure, 'pg_proc'), NULL,
            'wallet.version() has a comment');
SELECT matches(wallet.version(),
               '^wallet ' || replace((SELECT extversion FROM pg_extension WHERE extname = 'wallet'), '.', '\.') || ' \(libsodium ',
               'version() names the installed extension version');

-- Every object the extension owns carries a COMMENT ON (house rule).
SELECT is_empty($$
    SELECT pg_describe_object(d.classid, d.objid, 0)
      FROM pg_depend d
      JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'wallet'
     WHERE d.deptype = 'e'
       AND d.classid IN ('pg_proc'::regclass, 'pg_class'::regclass, 'pg_type'::regclass, 'pg_namespace'::regclass,
                         'pg_operator'::regclass, 'pg_opclass'::regclass)
       AND NOT (d.classid = 'pg_class'::regclass AND (SELECT relkind FROM pg_class WHERE oid = d.objid) = 'S')  -- sequences behind identity columns
       AND obj_description(d.objid, d.classid::regclass::name) IS NULL
$$, 'every function, table, view, type, operator and operator class has a comment');
SELECT is_empty($$
    SELECT c.oid::regclass::text FROM pg_class c
     WHERE c.relkind = 'S' AND c.relnamespace IN ('wallet'::regnamespace, 'wallet_internal'::regnamespace)
       AND obj_description(c.oid, 'pg_class') IS NULL
    UNION ALL
    SELECT t.tgname || ' on ' || t.tgrelid::regclass FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
     WHERE c.relnamespace IN ('wallet'::regnamespace, 'wallet_internal'::regnamespace) AND NOT t.tgisinternal
       AND obj_description(t.oid, 'pg_trigger') IS NULL
    UNION ALL
    SELECT c.oid::regclass::text FROM pg_class c
     WHERE c.relkind IN ('i', 'I') AND c.relnamespace IN ('wallet'::regnamespace, 'wallet_internal'::regnamespace)
       AND obj_description(c.oid, 'pg_class') IS NULL
    UNION ALL
    SELECT k.conname || ' on ' || k.conrelid::regclass FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
     WHERE c.relnamespace IN ('wallet'::regnamespace, 'wallet_internal'::regnamespace)
       AND obj_description(k.oid, 'pg_constraint') IS NULL
$$, 'every sequence (those behind identity columns too), trigger, index and constraint has a comment');

-- Every table column too.
SELECT is_empty($$
    SELECT c.oid::regclass || '.' || a.attname
      FROM pg_depend d
      JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'wallet'
      JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid AND c.relkind IN ('r', 'p', 'v')
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
     WHERE d.deptype = 'e' AND col_description(c.oid, a.attnum) IS NULL
$$, 'every column of every table and view has a comment');

-- SECURITY DEFINER functions pin search_path (otherwise a caller's objects could be run with the owner's rights).
SELECT is_empty($$
    SELECT p.oid::regprocedure::text
      FROM pg_proc p
      JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
      JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'wallet'
     WHERE p.prosecdef
       AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search\_path=%')
$$, 'every SECURITY DEFINER function sets search_path');

-- The request path never JIT-compiles: its kept generic plans cross
-- jit_above_cost with a large enough table and would compile at every call.
-- The reports, which scan, keep the server's setting.
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'wallet'::regnamespace AND p.prokind = 'f'
       AND 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig)
       AND p.proname NOT IN ('campaign_cohorts', 'campaign_report', 'program_liability', 'push_funnel',
                             'push_retention', 'push_stats', 'replay_ledger', 'rfm', 'verify_ledger')
       AND NOT 'jit=off' = ANY (p.proconfig)
$$, 'every API function of the request path runs with jit off');
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'wallet'::regnamespace
       AND p.proname IN ('campaign_cohorts', 'campaign_report', 'program_liability', 'push_funnel',
                         'push_retention', 'push_stats', 'replay_ledger', 'rfm', 'verify_ledger')
       AND 'jit=off' = ANY (p.proconfig)
$$, 'the reports keep the server''s jit setting');

-- Internal helpers live outside the API schema, in a member schema that
-- DROP EXTENSION removes and PUBLIC cannot use.
SELECT has_schema('wallet_internal', 'schema wallet_internal exists');
SELECT ok(EXISTS (SELECT FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'wallet'
                   WHERE d.classid = 'pg_namespace'::regclass AND d.objid = 'wallet_internal'::regnamespace AND d.deptype = 'e'),
          'wallet_internal is a member of the extension');
SELECT ok(NOT has_schema_privilege('public', 'wallet_internal', 'USAGE'), 'PUBLIC has no USAGE on wallet_internal');
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'wallet'::regnamespace
       AND (p.prorettype = 'trigger'::regtype OR obj_description(p.oid, 'pg_proc') ~ '^(internal|trigger)')
$$, 'no trigger function or helper commented internal is in schema wallet');

-- wallet.error_codes: every WL SQLSTATE, once, and nothing can change it.
SELECT is((SELECT count(DISTINCT sqlstate) FILTER (WHERE sqlstate ~ '^WL[0-9]{3}$' AND name ~ '^[a-z0-9_]+$' AND description <> '')
             FROM wallet.error_codes),
          (SELECT count(*) FROM wallet.error_codes), 'wallet.error_codes: one well-formed row per WL code');
SELECT throws_ok($$INSERT INTO wallet.error_codes VALUES ('WL999', 'x', 'y')$$, '55000', NULL,
                 'wallet.error_codes cannot be written');

SELECT * FROM finish();
ROLLBACK;

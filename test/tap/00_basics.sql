-- pgTAP: the foundation, and rules every object of the extension must keep.
BEGIN;
SELECT plan(9);

SELECT has_schema('wallet', 'schema wallet exists');
SELECT has_function('wallet', 'version', '{}'::name[], 'wallet.version() exists');
SELECT is((SELECT proparallel FROM pg_proc WHERE oid = 'wallet.version()'::regprocedure), 's',
          'wallet.version() is PARALLEL SAFE');
SELECT is_strict('wallet', 'version', '{}'::name[], 'wallet.version() is STRICT');
SELECT isnt(obj_description('wallet.version()'::regprocedure, 'pg_proc'), NULL,
            'wallet.version() has a comment');
SELECT matches(wallet.version(), '^wallet 0\.2\.0 \(libsodium ', 'version() names the extension version');

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

SELECT * FROM finish();
ROLLBACK;

-- test/upgrade/describe.sql: every object of the wallet extension, one line
-- each, with its full definition, comment and privileges, in a stable order
-- and free of OIDs.  Two databases whose outputs are equal have the same
-- extension, whatever path (fresh install or upgrade) made it.
\pset format unaligned
\pset tuples_only on
WITH ext AS (
    SELECT oid FROM pg_extension WHERE extname = 'wallet'
), members AS (
    SELECT d.classid, d.objid, d.objsubid
      FROM pg_depend d, ext
     WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
), ext_schemas AS (
    SELECT objid AS oid FROM members WHERE classid = 'pg_namespace'::regclass
), rels AS (
    -- relations of the extension's schemas, less the data they hold: sequences
    -- that are not members (one per campaign, made by a trigger) are data
    SELECT c.* FROM pg_class c
     WHERE c.relnamespace IN (SELECT oid FROM ext_schemas)
       AND (c.relkind <> 'S' OR EXISTS (SELECT 1 FROM members m WHERE m.classid = 'pg_class'::regclass AND m.objid = c.oid))
), lines AS (
    -- the extension itself: version, the schema it is recorded in (\dx) and
    -- the schemas it depends on (DROP SCHEMA ... CASCADE would drop it),
    -- what pg_dump keeps, and its comment
    SELECT 'extension ' || extversion || ' relocatable=' || extrelocatable
           || ' schema=' || extnamespace::regnamespace::text
           || ' depends_on_schemas=' || coalesce((SELECT string_agg(d.refobjid::regnamespace::text, ',' ORDER BY 1)
                                                   FROM pg_depend d
                                                  WHERE d.classid = 'pg_extension'::regclass AND d.objid = e.oid
                                                    AND d.refclassid = 'pg_namespace'::regclass), '')
           || ' config=' || coalesce((SELECT string_agg(c::regclass::text || ' [' || coalesce(w, '') || ']', ', ' ORDER BY c::regclass::text)
                                        FROM unnest(extconfig, extcondition) AS u(c, w)), '')
           || coalesce(' -- ' || obj_description(e.oid, 'pg_extension'), '') AS line
      FROM pg_extension e WHERE extname = 'wallet'
    UNION ALL
    -- every member, with its comment
    SELECT 'member ' || pg_describe_object(classid, objid, objsubid)
           || coalesce(' -- ' || obj_description(objid, (SELECT relname FROM pg_class WHERE oid = classid)), '')
      FROM members
    UNION ALL
    -- functions and procedures: full definition (incl. SET clauses), privileges
    SELECT 'function ' || p.oid::regprocedure::text || ' acl=' || coalesce(p.proacl::text, 'default')
           || E'\n' || CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) ELSE 'kind ' || p.prokind::text END
      FROM pg_proc p WHERE p.pronamespace IN (SELECT oid FROM ext_schemas)
    UNION ALL
    -- relations: kind, options, RLS, privileges, owner-independent
    SELECT 'relation ' || c.oid::regclass::text || ' kind=' || c.relkind::text || ' persistence=' || c.relpersistence::text
           || ' rls=' || c.relrowsecurity || '/' || c.relforcerowsecurity
           || ' options=' || coalesce(c.reloptions::text, '') || ' acl=' || coalesce(c.relacl::text, 'default')
           || ' ext_member=' || EXISTS (SELECT 1 FROM members m WHERE m.classid = 'pg_class'::regclass AND m.objid = c.oid)
           || coalesce(' -- ' || obj_description(c.oid, 'pg_class'), '')
      FROM rels c
    UNION ALL
    -- columns in their order (SELECT * and ROW(...) depend on it), with comments
    SELECT 'column ' || c.oid::regclass::text || ' #' || row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum)
           || ' ' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
           || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '')
           || CASE a.attidentity::text WHEN 'a' THEN ' identity always' WHEN 'd' THEN ' identity by default' ELSE '' END
           || CASE a.attgenerated::text WHEN 's' THEN ' generated stored' ELSE '' END
           || ' acl=' || coalesce(a.attacl::text, 'default')
           || coalesce(' -- ' || col_description(c.oid, a.attnum), '')
      FROM rels c
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
    UNION ALL
    SELECT 'constraint ' || c.conrelid::regclass::text || coalesce(c.contypid::regtype::text, '') || ' ' || c.conname || ' '
           || pg_get_constraintdef(c.oid) || CASE WHEN c.condeferrable THEN ' deferrable' ELSE '' END
           || coalesce(' -- ' || obj_description(c.oid, 'pg_constraint'), '')
      FROM pg_constraint c WHERE c.connamespace IN (SELECT oid FROM ext_schemas)
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
     WHERE c.relnamespace IN (SELECT oid FROM ext_schemas)
    UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
           || coalesce(' -- ' || obj_description(t.oid, 'pg_trigger'), '')
      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
     WHERE NOT t.tgisinternal AND c.relnamespace IN (SELECT oid FROM ext_schemas)
    UNION ALL
    SELECT 'policy ' || p.schemaname || '.' || p.tablename || ' ' || p.policyname || ' ' || p.permissive || ' '
           || p.roles::text || ' ' || p.cmd || ' using=' || coalesce(p.qual, '') || ' check=' || coalesce(p.with_check, '')
      FROM pg_policies p WHERE p.schemaname IN (SELECT nspname FROM pg_namespace WHERE oid IN (SELECT oid FROM ext_schemas))
    UNION ALL
    SELECT 'view ' || c.oid::regclass::text || ' ' || pg_get_viewdef(c.oid)
      FROM pg_class c WHERE c.relkind IN ('v', 'm') AND c.relnamespace IN (SELECT oid FROM ext_schemas)
    UNION ALL
    SELECT 'sequence ' || s.seqrelid::regclass::text || ' ' || format_type(s.seqtypid, NULL) || ' start=' || s.seqstart
           || ' inc=' || s.seqincrement || ' min=' || s.seqmin || ' max=' || s.seqmax || ' cache=' || s.seqcache || ' cycle=' || s.seqcycle
      FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
     WHERE c.relnamespace IN (SELECT oid FROM ext_schemas)
       AND EXISTS (SELECT 1 FROM members m WHERE m.classid = 'pg_class'::regclass AND m.objid = c.oid)
    UNION ALL
    SELECT 'type ' || t.oid::regtype::text || ' kind=' || t.typtype::text || ' len=' || t.typlen || ' align=' || t.typalign::text
           || ' storage=' || t.typstorage::text || ' in=' || t.typinput::text || ' out=' || t.typoutput::text
           || ' recv=' || t.typreceive::text || ' send=' || t.typsend::text || ' acl=' || coalesce(t.typacl::text, 'default')
           || coalesce(' -- ' || obj_description(t.oid, 'pg_type'), '')
      FROM pg_type t WHERE t.typnamespace IN (SELECT oid FROM ext_schemas) AND t.typarray <> 0
    UNION ALL
    SELECT 'operator ' || o.oid::regoperator::text || ' -> ' || o.oprcode::text || ' commutator=' || o.oprcom::regoperator::text
           || ' negator=' || o.oprnegate::regoperator::text || ' restrict=' || o.oprrest::text || ' join=' || o.oprjoin::text
           || ' hashes=' || o.oprcanhash || ' merges=' || o.oprcanmerge
      FROM pg_operator o WHERE o.oprnamespace IN (SELECT oid FROM ext_schemas)
    UNION ALL
    SELECT 'opclass ' || am.amname || ' ' || oc.opcname || ' for ' || oc.opcintype::regtype::text || ' default=' || oc.opcdefault
           || ' members=' || (SELECT string_agg(x, ', ' ORDER BY x) FROM (
                  SELECT 'op' || ao.amopstrategy || ' ' || ao.amopopr::regoperator::text AS x FROM pg_amop ao WHERE ao.amopfamily = oc.opcfamily
                  UNION ALL
                  SELECT 'proc' || ap.amprocnum || ' ' || ap.amproc::regprocedure::text FROM pg_amproc ap WHERE ap.amprocfamily = oc.opcfamily) s)
      FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod WHERE oc.opcnamespace IN (SELECT oid FROM ext_schemas)
    UNION ALL
    SELECT 'cast ' || format_type(c.castsource, NULL) || ' -> ' || format_type(c.casttarget, NULL)
           || ' context=' || c.castcontext::text || ' method=' || c.castmethod::text || ' func=' || c.castfunc::regprocedure::text
      FROM members m JOIN pg_cast c ON m.classid = 'pg_cast'::regclass AND c.oid = m.objid
    UNION ALL
    SELECT 'schema ' || n.nspname || ' acl=' || coalesce(n.nspacl::text, 'default') || coalesce(' -- ' || obj_description(n.oid, 'pg_namespace'), '')
      FROM pg_namespace n WHERE n.oid IN (SELECT oid FROM ext_schemas)
)
SELECT line FROM lines ORDER BY line COLLATE "C";

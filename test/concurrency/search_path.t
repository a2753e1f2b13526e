#!/usr/bin/env bash
# search_path hijacking (security review, issue 7), printing TAP.
#
# A role `hostile` without any privilege but CREATE on public and on a schema
# hostile_first (the PostgreSQL 14 default for public, still common in
# upgraded databases) plants, in both schemas, an object under every name the
# extension's code uses: every pg_catalog function and aggregate whose name is
# called in the extension (scanned from the prosrc of its functions in the
# catalog, and from the install/upgrade scripts and the SPI queries of src/*.c,
# so that a name added later is covered too), every operator whose symbol
# occurs there (on every type pg_catalog and wallet define it for: text,
# bigint, int, timestamptz, interval, jsonb, marketing_code, ...), a domain for
# every built-in type named there and a view for every catalog relation named
# there.  Each has the exact signature of the built-in (for format and the
# other VARIADIC "any" functions, typed overloads that beat it), passes its
# work on to the real one, and first records that it ran, as whoever called
# it: a WARNING, a row in hostile.ran, and an attempt to make hostile a
# superuser.  Casts cannot be planted: CREATE CAST needs ownership of a type
# involved, and casts to and from domains are ignored.
#
# Then a superuser whose search_path puts those schemas first
# (hostile_first, public, pg_catalog: pg_catalog explicitly last, so that the
# planted objects win wherever they can)
#   - runs CREATE EXTENSION wallet, and CREATE EXTENSION wallet VERSION
#     '0.1.0' followed by ALTER EXTENSION wallet UPDATE, in two databases;
#   - calls EVERY function of the extension (enumerated from pg_depend, so a
#     function added later fails the test until it gets a call below), each in
#     a fresh session so that C code loads its caches with SPI under that
#     search_path, each on its main path (or, for helpers that only raise,
#     raising their SQLSTATE);
#   - fires every trigger function of the extension by writing to its tables.
# Nothing hostile may run.
#
# Type I/O functions are left out of the direct calls (they run with every
# value read or written) and so are trigger functions (fired by the writes).
# The SQL and PL/pgSQL functions pin search_path = pg_catalog, pg_temp.  The C
# functions carry no SET clause: a SET clause costs a configuration save and
# restore on every call (and forbids inlining) where code_authentic runs about
# 3 million calls a second, and the C code runs one SQL query only: the SPI
# query of src/code_cache.c that loads a campaign into the session's cache
# (reached by code_authentic, code_status, parse_code, generate_codes, ...),
# which qualifies every name and operator instead (OPERATOR(pg_catalog.=)).
# The others run no SQL (src/codes.c finds a campaign's sequence by the OID of
# schema wallet and calls nextval by OID).  Each call below runs in a fresh
# session, so that the cache is loaded under the hostile search_path.
#
# Needs PGHOST/PGPORT/PGUSER of a running cluster with wallet installable.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DB_FRESH=conc_search_path
DB_UPGRADED=conc_search_path_upgraded
DB_SCAN=conc_search_path_scan
HOSTILE_PATH='hostile_first,public,pg_catalog'
ROLES='admin app reader'   # wallet_admin, wallet_app, wallet_reader: each through a login role sp_<role>
TMP=$(mktemp -d /tmp/search_path.XXXXXX)
chmod 755 "$TMP"

. "$ROOT/test/lib.sh"

# safe: a search_path nothing hostile is on; hostile: the victim's.
q() {   # q DB SQL...: as superuser, safe path
    PGOPTIONS='-c search_path=pg_catalog,pg_temp' qdb "$@"
}
qh() {  # qh DB SQL...: as superuser, hostile path, errors verbose (SQLSTATE)
    PGOPTIONS="-c search_path=$HOSTILE_PATH" qdb "$@" -v VERBOSITY=verbose
}

drop_all() {
    local db
    for db in "$DB_FRESH" "$DB_UPGRADED" "$DB_SCAN"; do
        q postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
    done
    q postgres -c "DROP ROLE IF EXISTS hostile" -c "DROP ROLE IF EXISTS bystander" >/dev/null 2>&1
    for r in $ROLES; do q postgres -c "DROP ROLE IF EXISTS sp_$r" >/dev/null 2>&1; done
}
trap 'drop_all; rm -rf "$TMP"' EXIT
drop_all
q postgres -c "CREATE ROLE hostile NOSUPERUSER NOCREATEDB NOCREATEROLE" \
           -c "CREATE ROLE bystander NOSUPERUSER" >/dev/null || exit 1
for r in $ROLES; do
    # the wallet_* roles exist once an extension script made them (before, in the first database)
    q postgres -c "CREATE ROLE sp_$r LOGIN" >/dev/null || exit 1
done

# ---------------------------------------------------------------- names used
# From the catalog: the prosrc of every SQL and PL/pgSQL function of the
# extension (a scratch database holds it).  From the sources: the scripts
# (run by CREATE/ALTER EXTENSION) and the SQL strings of the C code.
q postgres -c "CREATE DATABASE $DB_SCAN" >/dev/null && q "$DB_SCAN" -c "CREATE EXTENSION wallet" >/dev/null || exit 1
EXT_PROCS="SELECT p.* FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
            WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
              AND d.refobjid = (SELECT e.oid FROM pg_extension e WHERE e.extname = 'wallet')"
catalog_src=$(q "$DB_SCAN" -c "SELECT string_agg(p.prosrc, E'\n') FROM ($EXT_PROCS) p
                               WHERE p.prolang IN (SELECT l.oid FROM pg_language l WHERE l.lanname IN ('sql', 'plpgsql'))")
q postgres -c "DROP DATABASE $DB_SCAN" >/dev/null
file_src=$(cat "$ROOT"/sql/ext/*.sql "$ROOT"/sql/wallet--*.sql; grep -ho '"[^"]*"' "$ROOT"/src/*.c)
all_src=$(printf '%s\n%s\n' "$catalog_src" "$file_src")
# identifiers followed by "(" (functions, aggregates), words (types, relations), operator symbols
printf '%s\n' "$all_src" | grep -oE '[A-Za-z_][A-Za-z_0-9]*[[:space:]]*\(' | tr -d '( \t' | tr 'A-Z' 'a-z' | sort -u > "$TMP/fnames"
printf '%s\n' "$all_src" | grep -oE '[A-Za-z_][A-Za-z_0-9]*' | tr 'A-Z' 'a-z' | sort -u > "$TMP/words"
printf '%s\n' "$all_src" | grep -oE '[-+*/<>=~!@#%^&|`?]+' | sort -u > "$TMP/opnames"
ok $([ "$(grep -cxE 'nextval|format|count|btrim|now' "$TMP/fnames")" -eq 5 ]; echo $?) \
   "the scan finds the built-in names the extension calls ($(wc -l < "$TMP/fnames") identifiers before a parenthesis)"

# ---------------------------------------------------------------- the planting
# Run as hostile in each database, before the extension exists there.
cat > "$TMP/plant.sql" <<'EOF'
SET search_path = pg_catalog, pg_temp;
SET check_function_bodies = off;
SET client_min_messages = warning;
CREATE TEMP TABLE plant_fnames (n text);
CREATE TEMP TABLE plant_words (n text);
CREATE TEMP TABLE plant_opnames (n text);
CREATE TEMP TABLE plant_nsp (n text);
INSERT INTO plant_fnames SELECT unnest(string_to_array(:'fnames', ' '));
INSERT INTO plant_words SELECT unnest(string_to_array(:'words', ' '));
INSERT INTO plant_opnames SELECT unnest(string_to_array(:'opnames', ' '));
INSERT INTO plant_nsp VALUES (:'nsp');
GRANT SELECT ON plant_fnames, plant_words, plant_opnames, plant_nsp TO hostile;
\if :first
GRANT CREATE ON SCHEMA public TO hostile;
CREATE SCHEMA hostile_first AUTHORIZATION hostile;
CREATE SCHEMA hostile AUTHORIZATION hostile;
SET ROLE hostile;
GRANT USAGE ON SCHEMA hostile, hostile_first TO PUBLIC;
CREATE TABLE hostile.ran (what text, by_user name, at timestamptz DEFAULT clock_timestamp());
GRANT INSERT, SELECT ON hostile.ran TO PUBLIC;
CREATE TABLE hostile.planted (schema_name text, kind text, what text);
GRANT SELECT ON hostile.planted TO PUBLIC;
-- The payload: record the run, then what a real attacker does with a superuser.
CREATE FUNCTION hostile.rec(what text) RETURNS boolean
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE WARNING 'HOSTILE RAN: % (as %)', what, current_user;
    INSERT INTO hostile.ran (what, by_user) VALUES (what, current_user);
    BEGIN
        EXECUTE 'ALTER ROLE hostile SUPERUSER';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    RETURN true;
END
$$;
\else
-- the extension's own operators (marketing_code): hostile needs to see the type
GRANT USAGE ON SCHEMA wallet TO hostile;
SET ROLE hostile;
\endif

DO $plant$
DECLARE
    -- argument types tried for the VARIADIC "any" functions (format, concat, ...)
    any_types text[] := ARRAY['text', 'integer', 'bigint', 'numeric', 'boolean', 'timestamp with time zone',
                              'interval', 'jsonb', 'date', 'smallint', 'name', 'regclass', 'double precision',
                              'timestamp without time zone', 'bytea', 'json'];
    sch text;
    r record;
    sig text;
    k int;
    t1 text;
    t2 text;
    body text;
    n_ok int := 0;
    n_bad int := 0;
BEGIN
    FOREACH sch IN ARRAY ARRAY['hostile_first', 'public'] LOOP
        -- functions with the exact signature of a built-in one
        FOR r IN SELECT p.oid, p.proname, p.pronargs, p.provariadic, p.prokind, p.prorettype,
                        pg_get_function_arguments(p.oid) AS args, pg_get_function_result(p.oid) AS res,
                        pg_get_function_identity_arguments(p.oid) AS idargs
                   FROM pg_proc p
                  WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.prokind IN ('f', 'a')
                    AND 'pg_catalog' IN (SELECT n FROM plant_nsp)
                    AND p.proname IN (SELECT n FROM plant_fnames)
                  ORDER BY p.oid LOOP
            sig := format('%s(%s)', r.proname, r.idargs);
            BEGIN
                IF r.prokind = 'a' THEN
                    -- an aggregate: a transition function that records (the result is garbage)
                    EXECUTE format('CREATE FUNCTION hostile.%I(%s) RETURNS %s LANGUAGE sql SET search_path = pg_catalog, pg_temp AS %L',
                                   'agg_' || r.oid || '_' || sch,
                                   concat_ws(', ', format_type(r.prorettype, NULL), nullif(r.idargs, '')),
                                   format_type(r.prorettype, NULL),
                                   format('SELECT hostile.rec(%L); SELECT $1', 'aggregate ' || sch || '.' || sig));
                    EXECUTE format('CREATE AGGREGATE %I.%I(%s) (SFUNC = hostile.%I, STYPE = %s)', sch, r.proname,
                                   coalesce(nullif(r.idargs, ''), '*'), 'agg_' || r.oid || '_' || sch, format_type(r.prorettype, NULL));
                    INSERT INTO hostile.planted VALUES (sch, 'aggregate', sig);
                ELSIF r.provariadic = '"any"'::regtype THEN
                    -- typed overloads: an exact match beats VARIADIC "any"
                    FOR k IN 1..2 LOOP
                        FOREACH t1 IN ARRAY any_types LOOP
                            FOREACH t2 IN ARRAY CASE WHEN k = 1 THEN ARRAY[NULL] ELSE any_types END LOOP
                                body := format('SELECT hostile.rec(%L); SELECT * FROM pg_catalog.%I(%s)',
                                               'function ' || sch || '.' || r.proname || '(' || concat_ws(', ', nullif(regexp_replace(r.idargs, ',?\s*VARIADIC "any"$', ''), ''), t1, t2) || ')',
                                               r.proname,
                                               (SELECT string_agg('$' || i, ', ') FROM generate_series(1, r.pronargs - 1 + k) i));
                                EXECUTE format('CREATE FUNCTION %I.%I(%s) RETURNS %s LANGUAGE sql SET search_path = pg_catalog, pg_temp AS %L',
                                               sch, r.proname,
                                               concat_ws(', ', nullif(regexp_replace(r.idargs, ',?\s*VARIADIC "any"$', ''), ''), t1, t2),
                                               r.res, body);
                            END LOOP;
                        END LOOP;
                    END LOOP;
                    INSERT INTO hostile.planted VALUES (sch, 'function', sig);
                ELSE
                    body := format('SELECT hostile.rec(%L); SELECT * FROM pg_catalog.%I(%s)',
                                   'function ' || sch || '.' || sig, r.proname,
                                   (SELECT string_agg(CASE WHEN i = r.pronargs AND r.provariadic <> 0 THEN 'VARIADIC ' ELSE '' END || '$' || i, ', ')
                                      FROM generate_series(1, r.pronargs) i));
                    EXECUTE format('CREATE FUNCTION %I.%I(%s) RETURNS %s LANGUAGE sql SET search_path = pg_catalog, pg_temp AS %L',
                                   sch, r.proname, r.args, r.res, body);
                    INSERT INTO hostile.planted VALUES (sch, 'function', sig);
                END IF;
                n_ok := n_ok + 1;
            EXCEPTION WHEN OTHERS THEN
                n_bad := n_bad + 1;
                INSERT INTO hostile.planted VALUES (sch, 'unplantable', sig || ': ' || SQLERRM);
            END;
        END LOOP;

        -- operators with the exact signature of a built-in one or of wallet's
        FOR r IN SELECT o.oid, o.oprname, o.oprnamespace::regnamespace::text AS nsp, o.oprleft, o.oprright, o.oprresult
                   FROM pg_operator o
                  WHERE o.oprnamespace IN (SELECT oid FROM pg_namespace WHERE nspname IN (SELECT n FROM plant_nsp))
                    AND o.oprname IN (SELECT n FROM plant_opnames) AND o.oprcode <> 0
                  ORDER BY o.oid LOOP
            sig := format('%s %s %s', coalesce(format_type(nullif(r.oprleft, 0), NULL), 'NONE'), r.oprname, format_type(r.oprright, NULL));
            BEGIN
                IF r.oprleft = 0 THEN
                    EXECUTE format('CREATE FUNCTION hostile.%I(%s) RETURNS %s LANGUAGE sql SET search_path = pg_catalog, pg_temp AS %L',
                                   'op_' || r.oid || '_' || sch, format_type(r.oprright, NULL), format_type(r.oprresult, NULL),
                                   format('SELECT hostile.rec(%L); SELECT OPERATOR(%I.%s) $1', 'operator ' || sch || ': ' || sig, r.nsp, r.oprname));
                    EXECUTE format('CREATE OPERATOR %I.%s (RIGHTARG = %s, FUNCTION = hostile.%I)', sch, r.oprname,
                                   format_type(r.oprright, NULL), 'op_' || r.oid || '_' || sch);
                ELSE
                    EXECUTE format('CREATE FUNCTION hostile.%I(%s, %s) RETURNS %s LANGUAGE sql SET search_path = pg_catalog, pg_temp AS %L',
                                   'op_' || r.oid || '_' || sch, format_type(r.oprleft, NULL), format_type(r.oprright, NULL), format_type(r.oprresult, NULL),
                                   format('SELECT hostile.rec(%L); SELECT $1 OPERATOR(%I.%s) $2', 'operator ' || sch || ': ' || sig, r.nsp, r.oprname));
                    EXECUTE format('CREATE OPERATOR %I.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = hostile.%I)', sch, r.oprname,
                                   format_type(r.oprleft, NULL), format_type(r.oprright, NULL), 'op_' || r.oid || '_' || sch);
                END IF;
                INSERT INTO hostile.planted VALUES (sch, 'operator', sig);
                n_ok := n_ok + 1;
            EXCEPTION WHEN OTHERS THEN
                n_bad := n_bad + 1;
                INSERT INTO hostile.planted VALUES (sch, 'unplantable', 'operator ' || sig || ': ' || SQLERRM);
            END;
        END LOOP;

        -- catalog relations named in the code: a view that records each row
        -- read; built-in types named in the code: a domain whose check
        -- records (last: the functions above name the built-in types)
        FOR r IN SELECT 'relation' AS kind, c.relname::text AS nm,
                        'CREATE VIEW %I.%I AS SELECT * FROM pg_catalog.%I WHERE hostile.rec(%L)' AS ddl
                   FROM pg_class c
                  WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind IN ('r', 'v')
                 UNION ALL
                 SELECT 'type', t.typname::text, 'CREATE DOMAIN %I.%I AS pg_catalog.%I CHECK (hostile.rec(%L))'
                   FROM pg_type t
                  WHERE t.typnamespace = 'pg_catalog'::regnamespace AND t.typtype = 'b' AND t.typname !~ '^_'
                  ORDER BY 1, 2 LOOP
            CONTINUE WHEN r.nm NOT IN (SELECT n FROM plant_words) OR 'pg_catalog' NOT IN (SELECT n FROM plant_nsp);
            EXECUTE format(r.ddl, sch, r.nm, r.nm, r.kind || ' ' || sch || '.' || r.nm);
            INSERT INTO hostile.planted VALUES (sch, r.kind, r.nm);
        END LOOP;
    END LOOP;
    RAISE NOTICE 'planted % objects, % unplantable', n_ok, n_bad;
END
$plant$;
RESET ROLE;
EOF
plant() {   # plant DB pg_catalog|wallet: built-ins' names before the extension exists, its operators' after
    q "$1" -v fnames="$(tr '\n' ' ' < "$TMP/fnames")" -v words="$(tr '\n' ' ' < "$TMP/words")" \
        -v opnames="$(tr '\n' ' ' < "$TMP/opnames")" -v nsp="$2" \
        -v first=$([ "$2" = pg_catalog ] && echo true || echo false) -f "$TMP/plant.sql" 2>&1
}

# hostile.ran and the server's WARNINGs (in each session's stderr) must stay empty
ran_count() { q "$1" -c "SELECT count(*) FROM hostile.ran"; }
ran_list() { q "$1" -c "SELECT string_agg(DISTINCT what || ' as ' || by_user, E'\n') FROM hostile.ran"; }
is_super() { q postgres -c "SELECT rolsuper FROM pg_roles WHERE rolname = 'hostile'"; }

# The trap works: in this setup an unqualified call by a (harmless) role
# runs the planted objects.  Proves that the checks below can fail.
control() {     # control DB
    local out
    out=$(qh "$1" -c "SET ROLE bystander" -c "SELECT now() IS NOT NULL, 1::bigint = 2::bigint, (SELECT count(*) FROM (VALUES (1)) v)" 2>&1)
    local got
    got=$(q "$1" -c "SELECT string_agg(DISTINCT what, ', ' ORDER BY what) FROM hostile.ran WHERE by_user = 'bystander'")
    ok $([ "$got" = "aggregate hostile_first.count(), function hostile_first.now(), operator hostile_first: bigint = bigint" ] && grep -q 'HOSTILE RAN' <<<"$out"; echo $?) \
       "$1: control: an unqualified now(), = and count(*) run the planted objects" "got: $got"
    q "$1" -c "DELETE FROM hostile.ran" >/dev/null
}

# ---------------------------------------------------------------- fixtures
declare -A V
setup() {   # setup DB: as superuser with a safe search_path; fills V
    local out line
    out=$(q "$1" <<'SQL'
SELECT wallet.create_merchant('sp merchant') AS m \gset
SELECT wallet.create_campaign(:m, 'sp capped', 'SP', max_redemptions_per_code => 2,
                              max_redemptions_per_member => 5, max_redemptions_total => 100) AS c \gset
SELECT wallet.create_campaign(:m, 'sp keys') AS c2 \gset
SELECT wallet.create_campaign(:m, 'sp uncapped', max_redemptions_per_code => NULL) AS c4 \gset
SELECT string_agg(g::text, ' ' ORDER BY wallet.code_serial(g)) AS codes FROM wallet.generate_codes(:c, 8) g \gset
SELECT (string_to_array(:'codes', ' '))[3]::wallet.marketing_code AS code3,
       (string_to_array(:'codes', ' '))[7] AS code7, (string_to_array(:'codes', ' '))[8] AS code8 \gset
SELECT wallet.code_serial(:'code3') AS s3 \gset
SELECT redemption_id AS r1 FROM wallet.redeem_code(:'code7'::text, 'm-undo', 'setup-redeem') \gset
SELECT reservation_id AS v1 FROM wallet.reserve_code(:'code8'::text, 'm-res', 'setup-reserve', interval '1 hour') \gset
SELECT wallet.create_program(:m, 'sp program', interval '1 year') AS p \gset
SELECT wallet.create_program(:m, 'sp program closing') AS p2 \gset
SELECT wallet.close_program(:p2);
SELECT wallet.create_program(:m, 'sp program to close') AS p3 \gset
SELECT wallet.open_account(:p, 'member-a') AS a \gset
SELECT entry_id AS e0 FROM wallet.accrue(:a, 1000, 'setup-a1', 'welcome') \gset
SELECT entry_id AS h1 FROM wallet.hold(:a, 10, 'setup-h1', interval '1 hour', 'cart 1') \gset
SELECT entry_id AS h2 FROM wallet.hold(:a, 10, 'setup-h2', interval '1 hour', 'cart 2') \gset
SELECT entry_id AS h3 FROM wallet.hold(:a, 10, 'setup-h3', interval '1 hour', 'cart 3') \gset
SELECT entry_id AS erel FROM wallet.release(:h3) \gset
SELECT entry_id AS eacc FROM wallet.accrue(:a, 50, 'setup-a2', 'order') \gset
-- lots that expire a second from now: one for settle_account, one for expire_points
SELECT wallet.open_account(:p, 'member-b') AS a2 \gset
SELECT wallet.accrue(:a2, 5, 'setup-b1', 'short-lived', expires_at => clock_timestamp() + interval '1 second');
SELECT wallet.open_account(:p, 'member-c') AS a3 \gset
SELECT wallet.accrue(:a3, 5, 'setup-c1', 'short-lived', expires_at => clock_timestamp() + interval '1 second');
-- a purchase for the analytics (rfm, campaign_report)
INSERT INTO wallet.purchases (merchant_id, member_id, order_ref, amount, currency, occurred_at, points, rules)
SELECT :m, member_id, 'sp-order', 10, 'CNY', now(), 5, '[{"rule_id": 1, "points": 5}]' FROM wallet.members WHERE merchant_id = :m AND member_ref = 'member-a';
\echo m :m
\echo c :c
\echo c2 :c2
\echo c4 :c4
\echo codes :codes
\echo s3 :s3
\echo r1 :r1
\echo v1 :v1
\echo p :p
\echo p2 :p2
\echo p3 :p3
\echo a :a
\echo a2 :a2
\echo a3 :a3
\echo e0 :e0
\echo h1 :h1
\echo h2 :h2
\echo h3 :h3
\echo erel :erel
\echo eacc :eacc
SQL
) || { echo "# setup failed: $out"; return 1; }
    while read -r k rest; do V[$k]=$rest; done < <(printf '%s\n' "$out" | grep -E '^[a-z0-9]+ ')
    read -r -a CODES <<< "${V[codes]}"
    [ "${#CODES[@]}" -eq 8 ]
}

# ---------------------------------------------------------------- the calls
# One line per function: signature (as regprocedure prints it with
# search_path = pg_catalog), TAB, what must happen (ok, or the SQLSTATE a
# helper that only raises must raise), TAB, an extended regex stdout must
# match (-: anything), TAB, the call.  The calls use no unqualified
# built-in (literals only, 'now' rather than now()), so that the session's
# hostile search_path can only be reached through the extension's code.
calls() {
    local m=${V[m]} c=${V[c]} c2=${V[c2]} c4=${V[c4]} s3=${V[s3]} r1=${V[r1]} v1=${V[v1]}
    local p=${V[p]} p2=${V[p2]} p3=${V[p3]} a=${V[a]} a2=${V[a2]} a3=${V[a3]}
    local e0=${V[e0]} h1=${V[h1]} h2=${V[h2]} h3=${V[h3]} erel=${V[erel]} eacc=${V[eacc]}
    local c1=${CODES[0]} cc2=${CODES[1]} c3=${CODES[2]} c4c=${CODES[3]} c5=${CODES[4]} c6=${CODES[5]}
    local acct="FROM wallet.accounts x WHERE x.account_id OPERATOR(pg_catalog.=) $a"
    # an entry as a caller would build it; (f(...)).* would call f once per column (robust to columns added at the end of wallet.entries)
    local entry="pg_catalog.jsonb_populate_record(NULL::wallet.entries, '{\"account_id\": $a, \"kind\": \"accrue\", \"amount\": 0, \"balance_after\": 0, \"reason\": \"direct\", \"lots\": [], \"created_at\": \"now\", \"points\": 5, \"expires_at\": \"infinity\", \"idempotency_key\": \"KEY\"}')"
    cat <<CALLS
wallet.version()	ok	-	SELECT wallet.version()
wallet.create_merchant(text)	ok	^[0-9]+$	SELECT wallet.create_merchant('sp merchant 2')
wallet_internal.idem_check(text,text,jsonb,jsonb)	WL002	-	SELECT wallet_internal.idem_check('k', 'a test', '{"a": 1}', '{"a": 2}')
wallet.marketing_code_eq(wallet.marketing_code,wallet.marketing_code)	ok	^f$	SELECT wallet.marketing_code_eq('$c1', '$cc2')
wallet.marketing_code_ne(wallet.marketing_code,wallet.marketing_code)	ok	^t$	SELECT wallet.marketing_code_ne('$c1', '$cc2')
wallet.marketing_code_lt(wallet.marketing_code,wallet.marketing_code)	ok	^t$	SELECT wallet.marketing_code_lt('$c1', '$cc2')
wallet.marketing_code_le(wallet.marketing_code,wallet.marketing_code)	ok	^t$	SELECT wallet.marketing_code_le('$c1', '$cc2')
wallet.marketing_code_gt(wallet.marketing_code,wallet.marketing_code)	ok	^f$	SELECT wallet.marketing_code_gt('$c1', '$cc2')
wallet.marketing_code_ge(wallet.marketing_code,wallet.marketing_code)	ok	^f$	SELECT wallet.marketing_code_ge('$c1', '$cc2')
wallet.marketing_code_cmp(wallet.marketing_code,wallet.marketing_code)	ok	^-1$	SELECT wallet.marketing_code_cmp('$c1', '$cc2')
wallet.marketing_code_sortsupport(internal)	ok	-	SELECT g FROM wallet.generate_codes($c, 20) g ORDER BY g
wallet.marketing_code_hash(wallet.marketing_code)	ok	^-?[0-9]+$	SELECT wallet.marketing_code_hash('$c1')
wallet.marketing_code_hash_extended(wallet.marketing_code,bigint)	ok	^-?[0-9]+$	SELECT wallet.marketing_code_hash_extended('$c1', 42)
wallet.code_campaign(wallet.marketing_code)	ok	^$c$	SELECT wallet.code_campaign('$c1')
wallet.code_serial(wallet.marketing_code)	ok	^$s3$	SELECT wallet.code_serial('$c3')
wallet.code_key_version(wallet.marketing_code)	ok	^1$	SELECT wallet.code_key_version('$c1')
wallet.code_mac_bits(wallet.marketing_code)	ok	^40$	SELECT wallet.code_mac_bits('$c1')
wallet.code_prefix(wallet.marketing_code)	ok	^SP$	SELECT wallet.code_prefix('$c1')
wallet.campaign_next_serial(bigint)	ok	^[0-9]+$	SELECT wallet.campaign_next_serial($c)
wallet.create_campaign(bigint,text,text,integer,timestamp with time zone,timestamp with time zone,integer,integer,bigint)	ok	^[0-9]+$	SELECT wallet.create_campaign($m, 'sp campaign 3', 'SPX')
wallet.rotate_code_key(bigint)	ok	^2$	SELECT wallet.rotate_code_key($c2)
wallet.retire_code_key(bigint,integer)	ok	-	SELECT wallet.retire_code_key($c2, 1)
wallet.generate_codes(bigint,integer)	ok	^SP-	SELECT * FROM wallet.generate_codes($c, 3)
wallet.code_authentic(wallet.marketing_code)	ok	^t$	SELECT wallet.code_authentic('$c1')
wallet.code_status(wallet.marketing_code)	ok	^ok$	SELECT wallet.code_status('$c1')
wallet.parse_code(text)	ok	^ok\|	SELECT * FROM wallet.parse_code('$c1')
wallet_internal.code_guard_thresholds(bigint)	ok	^10\|30\|	SELECT * FROM wallet_internal.code_guard_thresholds($m)
wallet.set_code_guard(integer,integer,interval,bigint)	ok	-	SELECT wallet.set_code_guard(10, 30, '15 minutes', $m)
wallet.clear_code_failures(text,text,bigint)	ok	^[0-9]+$	SELECT wallet.clear_code_failures('nobody', 'nowhere', $m)
wallet.purge_code_attempts(interval)	ok	^[0-9]+$	SELECT wallet.purge_code_attempts('1 day')
wallet_internal.code_guard_attempt(bigint,text,text,boolean,integer,integer,interval)	ok	^f$	SELECT wallet_internal.code_guard_attempt($m, 'm1', 'src1', false, 10, 30, '15 minutes')
wallet_internal.code_guard_forget(bigint,text,text)	ok	^[0-9]+$	SELECT wallet_internal.code_guard_forget($m, 'nobody', 'nowhere')
wallet_internal.code_caps_unchanged(bigint,integer,integer,bigint)	ok	-	SELECT wallet_internal.code_caps_unchanged($c, 2, 5, 100)
wallet.installation_id()	ok	^[0-9a-f-]{36}$	SELECT wallet.installation_id()
wallet_internal.code_check_args(text,text,jsonb,boolean)	ok	-	SELECT wallet_internal.code_check_args('m1', 'k1', '{}', true)
wallet_internal.code_precheck(text,text,text,text)	ok	^ok\|	SELECT * FROM wallet_internal.code_precheck('$c3', 'm1', 'src1', 'check')
wallet_internal.code_lock_counters(bigint,bigint,text)	ok	^2\|5\|100\|	SELECT * FROM wallet_internal.code_lock_counters($c, $s3, 'm1')
wallet_internal.code_bump_counters(bigint,bigint,text,integer,boolean,boolean,boolean)	ok	-	SELECT wallet_internal.code_bump_counters($c, $s3, 'm1', 0, true, true, true)
wallet_internal.code_caps_status(bigint,bigint,text,integer,integer,bigint,bigint,bigint,bigint)	ok	^ok$	SELECT wallet_internal.code_caps_status($c, $s3, 'm1', 2, 5, 100, 0, 0, 0)
wallet_internal.idem_code(text,text,text,interval)	ok	^\{	SELECT wallet_internal.idem_code('reserve', '$c1', 'm1', '1 hour')
wallet.issue_code(bigint,text)	ok	^SP-	SELECT wallet.issue_code($c, 'm-bound')
wallet.check_code(text,text,jsonb)	ok	^ok$	SELECT wallet.check_code('$c3'::pg_catalog.text, 'm1', '{"source": "s1"}')
wallet.check_code(text,text)	ok	^ok$	SELECT wallet.check_code('$c3'::pg_catalog.text, 'm1'::pg_catalog.text)
wallet.check_code(wallet.marketing_code,text,jsonb)	ok	^ok$	SELECT wallet.check_code('$c3'::wallet.marketing_code, 'm1')
wallet.redeem_code(text,text,text,jsonb)	ok	^ok\|	SELECT * FROM wallet.redeem_code('$c3'::pg_catalog.text, 'm1', 'k-redeem-1')
wallet.redeem_code(wallet.marketing_code,text,text,jsonb)	ok	^ok\|	SELECT * FROM wallet.redeem_code('$c4c'::wallet.marketing_code, 'm1', 'k-redeem-2')
wallet_internal.redeem_code_full(text,text,text,jsonb)	ok	^ok\|	SELECT * FROM wallet_internal.redeem_code_full('$c3'::pg_catalog.text, 'm1', 'k-redeem-1', '{}')
wallet.undo_redemption(bigint,text)	ok	^$r1\|	SELECT * FROM wallet.undo_redemption($r1, 'cancelled')
wallet.reserve_code(text,text,text,interval,jsonb)	ok	^ok\|	SELECT * FROM wallet.reserve_code('$c5'::pg_catalog.text, 'm1', 'k-reserve-1', '10 minutes')
wallet.reserve_code(wallet.marketing_code,text,text,interval,jsonb)	ok	^ok\|	SELECT * FROM wallet.reserve_code('$c6'::wallet.marketing_code, 'm1', 'k-reserve-2', '10 minutes')
wallet.release_reservation(bigint)	ok	^$v1\|	SELECT * FROM wallet.release_reservation($v1)
wallet.ledger_balance(wallet.points_ledger,timestamp with time zone)	ok	^[0-9]+$	SELECT wallet.ledger_balance(x.ledger, 'now') $acct
wallet.ledger_expiring(wallet.points_ledger,timestamp with time zone,interval)	ok	^[0-9]+$	SELECT wallet.ledger_expiring(x.ledger, 'now', '30 days') $acct
wallet.ledger_earned(wallet.points_ledger,timestamp with time zone,timestamp with time zone)	ok	^[0-9]+$	SELECT wallet.ledger_earned(x.ledger, '-infinity', 'infinity') $acct
wallet.ledger_lots(wallet.points_ledger)	ok	^[0-9]+\|	SELECT l.* FROM wallet.accounts x CROSS JOIN LATERAL wallet.ledger_lots(x.ledger) l WHERE x.account_id OPERATOR(pg_catalog.=) $a
wallet.ledger_totals(wallet.points_ledger)	ok	^0\|	SELECT t.* FROM wallet.accounts x CROSS JOIN LATERAL wallet.ledger_totals(x.ledger) t WHERE x.account_id OPERATOR(pg_catalog.=) $a
wallet.ledger_diff(wallet.points_ledger,wallet.points_ledger)	ok	^$	SELECT wallet.ledger_diff(x.ledger, x.ledger) $acct
wallet.ledger_apply(wallet.points_ledger,text,timestamp with time zone,bigint,timestamp with time zone,bigint,bigint[],timestamp with time zone[],text,timestamp with time zone)	ok	^\(	SELECT wallet.ledger_apply('', 'accrue', 'now', 10, 'infinity')
wallet.policy_expiry(timestamp with time zone,interval,text)	ok	^2	SELECT wallet.policy_expiry('now', '1 year', 'day')
wallet_internal.check_posting(bigint,text,text,text,boolean)	ok	-	SELECT wallet_internal.check_posting(10, 'r', 'k', 'accrue', false)
wallet_internal.check_app_key(text)	22023	-	SELECT wallet_internal.check_app_key('purchase:o-1')
wallet_internal.accrue_entry(bigint,bigint,text,text,text,timestamp with time zone)	ok	^[0-9]+\|$a\|accrue\|5\|	SELECT * FROM wallet_internal.accrue_entry($a, 5, 'offer:sp:1', 'cashback', NULL, NULL)
wallet_internal.idem_entry(wallet.entries)	ok	^\{	SELECT wallet_internal.idem_entry(e) FROM wallet.entries e WHERE e.entry_id OPERATOR(pg_catalog.=) $e0
wallet_internal.entry_by_key(bigint,text)	ok	^$e0\|	SELECT * FROM wallet_internal.entry_by_key($a, 'setup-a1')
wallet_internal.unknown_account(bigint)	WL201	-	SELECT wallet_internal.unknown_account(-1)
wallet_internal.program_closed(bigint)	WL202	-	SELECT wallet_internal.program_closed($p2)
wallet_internal.entry_step(wallet.points_ledger,wallet.entries)	ok	^\(	SELECT wallet_internal.entry_step('', e) FROM wallet.entries e WHERE e.entry_id OPERATOR(pg_catalog.=) $e0
wallet_internal.post_entry(wallet.points_ledger,wallet.entries)	ok	^[0-9]+\|$a\|accrue\|	SELECT e.* FROM wallet.accounts x CROSS JOIN LATERAL wallet_internal.post_entry(x.ledger, ${entry/KEY/k-post-entry}) e WHERE x.account_id OPERATOR(pg_catalog.=) $a
wallet_internal.settle_account(bigint,timestamp with time zone,timestamp with time zone)	ok	^1$	SELECT wallet_internal.settle_account($a2, 'now', 'now')
wallet_internal.lock_account(bigint,text)	ok	^\(	SELECT wallet_internal.lock_account($a, 'k-lock')
wallet_internal.post_once(wallet_internal.locked_account,wallet.entries,boolean)	ok	^[0-9]+\|$a\|accrue\|	SELECT * FROM wallet_internal.post_once(wallet_internal.lock_account($a, 'k-post-once'), ${entry/KEY/k-post-once}, true)
wallet.create_program(bigint,text,interval,text)	ok	^[0-9]+$	SELECT wallet.create_program($m, 'sp program 4', '1 year', 'month')
wallet.close_program(bigint)	ok	-	SELECT wallet.close_program($p3)
wallet.open_account(bigint,text)	ok	^[0-9]+$	SELECT wallet.open_account($p, 'member-new')
wallet.accrue(bigint,bigint,text,text,text,timestamp with time zone)	ok	^[0-9]+\|$a\|accrue\|100\|	SELECT * FROM wallet.accrue($a, 100, 'k-accrue', 'order 1')
wallet.redeem(bigint,bigint,text,text,text)	ok	^[0-9]+\|$a\|redeem\|-10\|	SELECT * FROM wallet.redeem($a, 10, 'k-redeem', 'reward')
wallet.hold(bigint,bigint,text,interval,text,text)	ok	^[0-9]+\|$a\|hold\|	SELECT * FROM wallet.hold($a, 10, 'k-hold', '1 hour', 'cart 4')
wallet_internal.lock_hold(bigint)	ok	^\($h1,	SELECT * FROM wallet_internal.lock_hold($h1)
wallet_internal.hold_not_open(bigint,wallet.entries)	WL207	-	SELECT wallet_internal.hold_not_open($h3, e) FROM wallet.entries e WHERE e.entry_id OPERATOR(pg_catalog.=) $erel
wallet.capture(bigint,bigint,text)	ok	^[0-9]+\|$a\|capture\|	SELECT * FROM wallet.capture($h1, NULL, 'k-capture')
wallet.release(bigint,text)	ok	^[0-9]+\|$a\|release\|	SELECT * FROM wallet.release($h2, 'k-release')
wallet.reverse(bigint,text,text,text)	ok	^[0-9]+\|$a\|reverse\|-50\|	SELECT * FROM wallet.reverse($eacc, 'k-reverse', 'refund')
wallet.adjust(bigint,bigint,text,text)	ok	^[0-9]+\|$a\|adjust\|5\|	SELECT * FROM wallet.adjust($a, 5, 'k-adjust', 'goodwill')
wallet.expire_points(timestamp with time zone)	ok	^1$	SELECT wallet.expire_points()
wallet.balance(bigint,timestamp with time zone)	ok	^[0-9]+$	SELECT wallet.balance($a)
wallet.replay_ledger(bigint,timestamp with time zone)	ok	^[^|]+\|$	SELECT * FROM wallet.replay_ledger($a)
wallet.balance_at(bigint,timestamp with time zone)	ok	^[0-9]+$	SELECT wallet.balance_at($a, 'now')
wallet.history(bigint,timestamp with time zone,timestamp with time zone)	ok	^$e0\|	SELECT * FROM wallet.history($a)
wallet.program_liability(bigint,timestamp with time zone)	ok	[0-9]	SELECT * FROM wallet.program_liability($p)
wallet.verify_ledger(bigint)	ok	^$	SELECT * FROM wallet.verify_ledger()
wallet.find_account(bigint,text)	ok	^$a$	SELECT wallet.find_account($p, 'member-a')
wallet_internal.check_expiry_as_of(timestamp with time zone)	22023	-	SELECT wallet_internal.check_expiry_as_of('infinity')
wallet_internal.expire_due_accounts(timestamp with time zone,integer)	ok	^[0-9]+\|[0-9]+$	SELECT * FROM wallet_internal.expire_due_accounts('now', 10)
wallet.expire_points_batched(timestamp with time zone,integer,integer)	ok	-	CALL wallet.expire_points_batched('now', 10, 2)
wallet.run_maintenance()	ok	-	CALL wallet.run_maintenance()
wallet_internal.caller()	ok	^postgres$	SELECT wallet_internal.caller()
wallet.acts_for(bigint)	ok	^t$	SELECT wallet.acts_for($m)
wallet.my_merchants()	ok	^$m\|	SELECT * FROM wallet.my_merchants()
wallet.grant_merchant(bigint,regrole)	ok	^t$	SELECT wallet.grant_merchant($m, 'bystander')
wallet.revoke_merchant(bigint,regrole)	ok	^t$	SELECT wallet.revoke_merchant($m, 'bystander')
wallet_internal.check_merchant(bigint)	WL102	-	SELECT wallet_internal.check_merchant(-1)
wallet_internal.sees_program(bigint)	ok	^t$	SELECT wallet_internal.sees_program($p)
wallet_internal.sees_account(bigint)	ok	^t$	SELECT wallet_internal.sees_account($a)
wallet_internal.sees_campaign(bigint)	ok	^t$	SELECT wallet_internal.sees_campaign($c)
wallet_internal.code_merchant(text)	ok	^$m$	SELECT wallet_internal.code_merchant('$c1')
wallet_internal.key_scope(bigint,bigint)	ok	^t$	SELECT wallet_internal.key_scope($m, NULL)
wallet_internal.sees_all()	ok	^t$	SELECT wallet_internal.sees_all()
wallet_internal.sole_merchant()	ok	^$	SELECT wallet_internal.sole_merchant()
wallet_internal.caller_merchants()	ok	^$	SELECT wallet_internal.caller_merchants()
wallet_internal.check_holder(regrole)	22023	-	SELECT wallet_internal.check_holder('wallet_app')
wallet_internal.grant_counts(regrole,name)	ok	^f$	SELECT wallet_internal.grant_counts('wallet_app', 'wallet_app')
wallet_internal.forget_sweep(interval,integer)	ok	^[0-9]+$	SELECT wallet_internal.forget_sweep('1 day', 10)
wallet_internal.member_check(bigint,text)	22023	-	SELECT wallet_internal.member_check($m, 'forgotten:x')
wallet_internal.member_ensure(bigint,text)	ok	^[0-9]+$	SELECT wallet_internal.member_ensure($m, 'member-ensured')
wallet_internal.time_zone_known(text)	ok	^t$	SELECT wallet_internal.time_zone_known('Europe/Zurich')
wallet.upsert_member(bigint,text,text,text)	ok	^[0-9]+\|$m\|member-z\|Europe/Zurich\|de-CH\|active\|	SELECT * FROM wallet.upsert_member($m, 'member-z', 'Europe/Zurich', 'de-CH')
wallet.forget_member(bigint,text,text)	ok	^t$	SELECT wallet.forget_member($m, 'member-c', 'erasure request')
wallet.set_campaign_audience(bigint,text,numeric,bigint,integer,text[],text[],timestamp with time zone)	ok	^[0-9]+$	SELECT wallet.set_campaign_audience($c4, 'list', 10, member_refs => '{member-a,member-b,sp-new}')
wallet.campaign_group(bigint,text)	ok	^(target|control)$	SELECT wallet.campaign_group($c4, 'member-a')
wallet_internal.campaign_group(bigint,bigint)	ok	^(target|control|outside)$	SELECT wallet_internal.campaign_group($c4, 1)
wallet_internal.campaign_members(bigint)	ok	^3$	SELECT pg_catalog.count(*) FROM wallet_internal.campaign_members($c4)
wallet_internal.campaign_seen(bigint)	ok	^sp uncapped$	SELECT (wallet_internal.campaign_seen($c4)).name
wallet_internal.holdout_bucket(bytea,bigint,bigint)	ok	^[0-9.]+$	SELECT wallet_internal.holdout_bucket('\x00112233445566778899aabbccddeeff', 1, 2)
wallet_internal.rfm_scores(bigint,timestamp with time zone,text)	ok	^1$	SELECT pg_catalog.count(*) FROM wallet_internal.rfm_scores($m, 'infinity', NULL)
wallet_internal.rfm_args(bigint,timestamp with time zone,text)	22023	-	SELECT wallet_internal.rfm_args($m, 'now', 'yen')
wallet.rfm(bigint,timestamp with time zone,text)	ok	^member-a\|	SELECT member_ref, segment FROM wallet.rfm($m, '2100-01-01')
wallet.record_feedback(bigint,text,integer,text,text,text)	ok	^[0-9]+$	SELECT wallet.record_feedback($c4, 'member-a', 4, 'praise', 'fine', 'sp-fb')
wallet_internal.t_quantile_975(numeric)	ok	^2\.04	SELECT wallet_internal.t_quantile_975(30)
wallet_internal.report_period(wallet.campaigns,timestamp with time zone,timestamp with time zone,text)	22023	-	SELECT wallet_internal.report_period(x, 'now', 'now', NULL) FROM wallet.campaigns x WHERE x.campaign_id OPERATOR(pg_catalog.=) $c4
wallet.set_campaign_redemption_value(bigint,numeric)	ok	-	SELECT wallet.set_campaign_redemption_value($c4, 2)
wallet.record_campaign_cost(bigint,numeric,text,timestamp with time zone)	ok	^[0-9]+$	SELECT wallet.record_campaign_cost($c4, 5, 'EUR')
wallet.campaign_report(bigint,timestamp with time zone,timestamp with time zone,text)	ok	^3\|	SELECT audience_members, points_granted FROM wallet.campaign_report($c4, '2000-01-01', '2100-01-01')
wallet.campaign_cohorts(bigint,timestamp with time zone,timestamp with time zone,integer,text)	ok	-	SELECT pg_catalog.count(*) FROM wallet.campaign_cohorts($c4, '2000-01-01', '2100-01-01')
wallet_internal.audit_record(bigint,text,jsonb,jsonb,jsonb)	ok	^[0-9]+$	SELECT wallet_internal.audit_record($m, 'update', '{"table": "test"}', NULL, NULL)
wallet.set_campaign_budget(bigint,text,bigint,integer)	ok	^$c2\|points\|100\|[0-9]+\|[0-9]+\|[0-9]+\|16$	SELECT * FROM wallet.set_campaign_budget($c2, 'points', 100)
wallet.campaign_budget(bigint)	ok	^$c2\|points\|100\|	SELECT * FROM wallet.campaign_budget($c2)
wallet_internal.budget_status(bigint)	ok	^$c2\|points\|	SELECT * FROM wallet_internal.budget_status($c2)
wallet_internal.budget_units_check(bigint)	22023	-	SELECT wallet_internal.budget_units_check(0)
wallet_internal.budget_lock_hold(bigint)	WL603	-	SELECT wallet_internal.budget_lock_hold(-1)
wallet_internal.budget_take(bigint,bigint,boolean)	ok	^[0-9]+$	SELECT wallet_internal.budget_take($c2, 50, true)
wallet_internal.budget_give_back(bigint,bigint)	ok	-	SELECT wallet_internal.budget_give_back($c2, 5)
wallet_internal.budget_hold(bigint,bigint,interval,boolean)	ok	^[0-9]+\|[0-9]+\|	SELECT * FROM wallet_internal.budget_hold($c2, 5, '1 millisecond', true)
wallet_internal.budget_convert(bigint)	ok	^[0-9]+$	SELECT wallet_internal.budget_convert(h.hold_id) FROM wallet_internal.budget_hold($c2, 1, '1 hour') h
wallet_internal.budget_release(bigint)	ok	^[0-9]+$	SELECT wallet_internal.budget_release(h.hold_id) FROM wallet_internal.budget_hold($c2, 1, '1 hour') h
wallet.reclaim_budget_holds(integer)	ok	^[1-9][0-9]*$	SELECT wallet.reclaim_budget_holds(10)
wallet_internal.budget_expire_holds(bigint)	ok	^[0-9]+$	SELECT wallet_internal.budget_expire_holds($c2)
wallet.set_program_earning(bigint,text,text,boolean,numeric)	ok	-	SELECT wallet.set_program_earning($p, 'CNY', 'nearest')
wallet_internal.rule_texts(jsonb,text)	ok	^\{a\}$	SELECT wallet_internal.rule_texts('{"stores": ["a"]}', 'stores')
wallet_internal.rule_number(jsonb,text,boolean)	ok	^5$	SELECT wallet_internal.rule_number('{"min_amount": 5}', 'min_amount', false)
wallet_internal.rule_apply_conditions(wallet.earning_rules,jsonb,jsonb)	ok	^\(	SELECT wallet_internal.rule_apply_conditions(NULL::wallet.earning_rules, '{"days_of_week": [1], "time_from": "22:00", "time_until": "02:00", "first_purchase": true, "stores": ["s"]}', '{"per_member": 5}')
wallet_internal.rule_check(wallet.earning_rules)	22023	-	SELECT wallet_internal.rule_check(pg_catalog.jsonb_populate_record(NULL::wallet.earning_rules, '{"name": " ", "effect": "fixed", "value": 1, "valid_from": "now", "priority": 0, "exclusive": false}'))
wallet_internal.unknown_rule(bigint)	WL502	-	SELECT wallet_internal.unknown_rule(-1)
wallet.create_earning_rule(bigint,text,text,numeric,jsonb,jsonb,timestamp with time zone,timestamp with time zone,integer,boolean,bigint)	ok	^[0-9]+$	SELECT wallet.create_earning_rule($p, 'sp rule', 'per_unit', 1, '{"stores": ["s1"], "channels": ["app"], "payment_methods": ["card"], "categories": ["food"], "days_of_week": [1, 2, 3, 4, 5, 6, 7], "time_from": "00:00", "time_until": "23:59:59", "min_amount": 1}', '{"per_purchase": 1000, "per_member_day": 1000, "per_member": 5000}', '2020-01-01') OPERATOR(pg_catalog.+) wallet.create_earning_rule($p, 'sp double', 'multiplier', 2, '{}', '{}', '2020-01-01') OPERATOR(pg_catalog.+) wallet.create_earning_rule($p, 'sp first', 'fixed', 5, '{"first_purchase": true, "min_tier_rank": 1}', '{}', '2020-01-01', NULL, -1, true)
wallet.update_earning_rule(bigint,text,numeric,jsonb,jsonb,timestamp with time zone,integer,boolean)	ok	-	SELECT wallet.update_earning_rule((SELECT r.rule_id FROM wallet.earning_rules r WHERE r.name OPERATOR(pg_catalog.=) 'sp rule'), priority => 1)
wallet_internal.purchase_check(bigint,text,text,numeric,text,timestamp with time zone,jsonb)	ok	-	SELECT wallet_internal.purchase_check($m, 'member-a', 'sp-order-0', 10, 'CNY', 'now', '{"store": "s1", "channel": "app", "payment_method": "card", "categories": ["food"]}')
wallet_internal.purchase_points(bigint,bigint,text,bigint,bigint,text,numeric,text,timestamp with time zone,jsonb)	ok	^20\|	SELECT * FROM wallet_internal.purchase_points($m, $p, 'floor', NULL, $a, 'Europe/Zurich', 10, 'CNY', 'now', '{"store": "s1", "channel": "app", "payment_method": "card", "categories": ["food"]}')
wallet.preview_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb)	ok	^\|sp-order-1\|	SELECT * FROM wallet.preview_purchase($m, 'member-a', 'sp-order-1', 10, 'CNY', 'now', '{"store": "s1", "channel": "app", "payment_method": "card", "categories": ["food"]}')
wallet.record_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb,bigint[],text[],bigint)	ok	^[0-9]+\|sp-order-1\|	SELECT * FROM wallet.record_purchase($m, 'member-a', 'sp-order-1', 10, 'CNY', 'now', '{"store": "s1", "channel": "app", "payment_method": "card", "categories": ["food"]}')
wallet_internal.record_purchase_full(bigint,text,text,numeric,text,timestamp with time zone,jsonb,bigint[],text[],bigint)	ok	^[0-9]+\|sp-order-full\|	SELECT * FROM wallet_internal.record_purchase_full($m, 'member-a', 'sp-order-full', 10, 'CNY', 'now', '{"store": "s1", "channel": "app", "payment_method": "card", "categories": ["food"]}', NULL, NULL, NULL)
wallet_internal.purchase_context(bigint,text,text)	ok	^[0-9]+\|\|[0-9]+\|nearest\|$a$	SELECT * FROM wallet_internal.purchase_context($m, 'member-a', 'CNY')
wallet_internal.purchase_retry(wallet.purchases,text,numeric,text)	ok	^[0-9]+\|sp-order-1\|	SELECT r.* FROM wallet.purchases x CROSS JOIN LATERAL wallet_internal.purchase_retry(x, 'member-a', 10, 'CNY') r WHERE x.order_ref OPERATOR(pg_catalog.=) 'sp-order-1'
wallet.record_refund(bigint,text,numeric,text)	ok	^[0-9]+\|[0-9]+\|sp-order-1\|sp-refund-1\|	SELECT * FROM wallet.record_refund($m, 'sp-order-1', 5, 'sp-refund-1')
wallet_internal.refund_retry(wallet.refunds,text,numeric)	ok	^[0-9]+\|[0-9]+\|sp-order-1\|	SELECT r.* FROM wallet.refunds x CROSS JOIN LATERAL wallet_internal.refund_retry(x, 'sp-order-1', 5) r WHERE x.refund_ref OPERATOR(pg_catalog.=) 'sp-refund-1'
wallet.end_earning_rule(bigint,timestamp with time zone)	ok	-	SELECT wallet.end_earning_rule((SELECT r.rule_id FROM wallet.earning_rules r WHERE r.name OPERATOR(pg_catalog.=) 'sp rule'))
wallet_internal.check_label(text,text,integer,boolean)	22023	-	SELECT wallet_internal.check_label('channel', ' ', 64, true)
wallet_internal.reward_setup_check(bigint,bigint)	ok	^$m$	SELECT wallet_internal.reward_setup_check($c, $p)
wallet_internal.campaign_running(bigint,bigint)	ok	^t$	SELECT wallet_internal.campaign_running($m, $c)
wallet.set_referral_program(bigint,bigint,bigint,bigint,integer,numeric,text,integer,text)	ok	^$c\|$m\|$p\|10\|5\|30\|	SELECT * FROM wallet.set_referral_program($c, $p, 10, 5, 30, 1, 'CNY', 5, 'month')
wallet.set_share_reward(bigint,bigint,bigint,integer,integer)	ok	^$c\|$m\|$p\|3\|	SELECT * FROM wallet.set_share_reward($c, $p, 3, 5, 2)
wallet.refer(bigint,text,text,text,bigint,text,text)	ok	^[0-9]+\|$m\|$c\|[0-9]+\|[0-9]+\|link\|pending\|	SELECT * FROM wallet.refer($m, 'member-a', 'member-friend', 'link', $c, 'fp-1', 'fp-2')
wallet_internal.merchant_refers(bigint)	ok	^t$	SELECT wallet_internal.merchant_refers($m)
wallet.record_share(bigint,text,bigint,text,text)	ok	^[0-9]+\|$m\|$c\|[0-9]+\|wechat\|rewarded\|	SELECT * FROM wallet.record_share($m, 'member-a', $c, 'wechat', 'sp-share')
wallet_internal.idem_share(wallet.shares)	ok	^\{	SELECT wallet_internal.idem_share(s) FROM wallet.shares s LIMIT 1
wallet_internal.reward_points(bigint,bigint,bigint,text,text,text)	ok	^[0-9]+\|$a\|accrue\|7\|	SELECT e.* FROM wallet.accounts x CROSS JOIN LATERAL wallet_internal.reward_points($p, x.member_id, 7, 'sp-reward', 'reward', NULL) e WHERE x.account_id OPERATOR(pg_catalog.=) $a
wallet.expire_referrals(timestamp with time zone,integer)	ok	^[0-9]+$	SELECT wallet.expire_referrals('now', 10)
wallet.create_tier(bigint,integer,text,bigint,numeric,numeric,jsonb)	ok	^[0-9]+$	SELECT wallet.create_tier($p, 1, 'sp silver', 100)
wallet.update_tier(bigint,text,bigint,numeric,numeric,jsonb,boolean)	ok	^[0-9]+\|	SELECT * FROM wallet.update_tier((SELECT t.tier_id FROM wallet.tiers t WHERE t.program_id OPERATOR(pg_catalog.=) $p AND t.rank OPERATOR(pg_catalog.=) 1), min_points => 200)
wallet.drop_tier(bigint)	ok	^t$	SELECT wallet.drop_tier(wallet.create_tier($p, 9, 'sp to drop', 999999))
wallet.set_tier_policy(bigint,text,integer,text,integer,text)	ok	^$p\|	SELECT * FROM wallet.set_tier_policy($p, 'rolling', 12, 'grace', 30, 'one_level')
wallet.member_tier(bigint,timestamp with time zone)	ok	\|	SELECT * FROM wallet.member_tier($a)
wallet.tier_progress(bigint)	ok	^$p\|	SELECT * FROM wallet.tier_progress($a)
wallet.evaluate_tiers(bigint,timestamp with time zone,integer)	ok	^[0-9]+\|	SELECT * FROM wallet.evaluate_tiers($p)
wallet.evaluate_tiers_batched(bigint,timestamp with time zone,integer,integer)	ok	-	CALL wallet.evaluate_tiers_batched($p, 'now', 10, 2)
wallet_internal.tier_earned(wallet.points_ledger,text,integer,timestamp with time zone)	ok	^[0-9]+$	SELECT wallet_internal.tier_earned(x.ledger, 'rolling', 12, 'now') $acct
wallet_internal.tier_points_rank(wallet.points_ledger,text,integer,timestamp with time zone,bigint[])	ok	^[0-9]+$	SELECT wallet_internal.tier_points_rank(x.ledger, 'rolling', 12, 'now', '{1,100}') $acct
wallet_internal.tier_window_start(text,integer,timestamp with time zone)	ok	^2	SELECT wallet_internal.tier_window_start('calendar_year', 12, 'now')
wallet_internal.tier_falls_below(wallet.points_ledger,text,integer,timestamp with time zone,bigint)	ok	^2	SELECT wallet_internal.tier_falls_below(x.ledger, 'rolling', 12, 'now', 1) $acct
wallet_internal.tier_period_end(text,integer,timestamp with time zone,timestamp with time zone)	ok	^2	SELECT wallet_internal.tier_period_end('rolling', 12, 'now', 'now')
wallet_internal.tier_sweep_request(bigint)	ok	-	SELECT wallet_internal.tier_sweep_request($p)
wallet_internal.tier_qualified(bigint,bigint,timestamp with time zone)	ok	\|	SELECT * FROM wallet_internal.tier_qualified($p, $a, 'now')
wallet_internal.tier_set(bigint,bigint,bigint,integer,text,timestamp with time zone,bigint,timestamp with time zone)	ok	-	SELECT wallet_internal.tier_set($a, $p, NULL, 0, 'test', 'now', NULL, NULL)
wallet_internal.tier_next_review(bigint,timestamp with time zone)	ok	-	SELECT wallet_internal.tier_next_review($a, 'now')
wallet_internal.tier_review(bigint,timestamp with time zone,bigint)	ok	-	SELECT wallet_internal.tier_review($a, 'now')
wallet_internal.tier_check(bigint,integer,text,bigint,numeric,numeric,jsonb,bigint)	ok	-	SELECT wallet_internal.tier_check($p, 8, 'sp check', 999999, NULL, 1, '{}', NULL)
wallet_internal.lock_tier_program(bigint)	ok	^$m$	SELECT wallet_internal.lock_tier_program($p)
wallet_internal.tier_lock(bigint)	ok	^[0-9]+\|	SELECT * FROM wallet_internal.tier_lock((SELECT t.tier_id FROM wallet.tiers t WHERE t.program_id OPERATOR(pg_catalog.=) $p AND t.rank OPERATOR(pg_catalog.=) 1))
wallet_internal.tier_programs_due(bigint,timestamp with time zone)	ok	-	SELECT wallet_internal.tier_programs_due(NULL, 'now')
wallet_internal.tier_posting_review(bigint,bigint,wallet.points_ledger,timestamp with time zone)	ok	^[tf]$	SELECT wallet_internal.tier_posting_review($p, $a, x.ledger, 'now') $acct
wallet.set_push_settings(bigint,time without time zone,time without time zone,text,integer,interval,interval)	ok	-	SELECT wallet.set_push_settings($m, NULL, NULL, 'Europe/Zurich')
wallet.set_push_topic(bigint,text,boolean,text)	ok	-	SELECT wallet.set_push_topic($m, 'orders', true)
wallet.set_push_cap(bigint,text,text,text,integer,interval,text)	ok	-	SELECT wallet.set_push_cap($m, 'sp_push', 'marketing', 'rolling', 3, '7 days')
wallet.record_consent(bigint,text,text,text,boolean,text,text,text,timestamp with time zone)	ok	^[0-9]+$	SELECT wallet.record_consent($m, 'member-p', 'sp_push', 'marketing', true, 'app', 'v1', 'device-1')
wallet.set_push_preferences(bigint,text,time without time zone,time without time zone,text[],integer,integer)	ok	-	SELECT wallet.set_push_preferences($m, 'member-p', NULL, NULL, NULL, 2, NULL)
wallet.enqueue_push(bigint,text,text,text,jsonb,bigint,text,timestamp with time zone,timestamp with time zone,integer)	ok	^[0-9]+\|queued\|	SELECT * FROM wallet.enqueue_push($m, 'member-p', 'sp_push', 'marketing', '{"a": 1}', NULL, 'sp-dedup-1')
wallet.enqueue_push_audience(bigint,text[],text,text,jsonb,bigint,text,timestamp with time zone,timestamp with time zone,integer)	ok	^queued\|\|1$	SELECT * FROM wallet.enqueue_push_audience($m, '{member-p}', 'sp_push', 'orders', '{"a": 2}')
wallet_internal.push_enqueue(bigint,bigint,text,text,jsonb,bigint,text,timestamp with time zone,timestamp with time zone,integer,boolean)	ok	^[0-9]+\|queued\|	SELECT * FROM wallet_internal.push_enqueue($m, (SELECT x.member_id FROM wallet.members x WHERE x.member_ref OPERATOR(pg_catalog.=) 'member-p' AND x.merchant_id OPERATOR(pg_catalog.=) $m), 'sp_push', 'orders', '{"a": 3}', NULL, NULL, 'now', NULL, 0, true)
wallet.claim_pushes(text,integer,interval)	ok	^[0-9]+\|$m\|member-p\|	SELECT * FROM wallet.claim_pushes('sp_push', 10, '1 minute')
wallet.push_channel(bigint,text)	ok	^wallet_push_[0-9a-f]{40}$	SELECT wallet.push_channel($m, 'sp_push')
wallet.extend_lease(bigint,interval)	ok	^2	SELECT wallet.extend_lease((SELECT x.push_id FROM wallet.push_messages x WHERE x.status OPERATOR(pg_catalog.=) 'sending' AND x.merchant_id OPERATOR(pg_catalog.=) $m LIMIT 1), '2 minutes')
wallet.extend_lease(bigint,interval,integer)	ok	^2	SELECT wallet.extend_lease((SELECT x.push_id FROM wallet.push_messages x WHERE x.status OPERATOR(pg_catalog.=) 'sending' AND x.merchant_id OPERATOR(pg_catalog.=) $m ORDER BY x.push_id LIMIT 1), '2 minutes', (SELECT x.attempts FROM wallet.push_messages x WHERE x.status OPERATOR(pg_catalog.=) 'sending' AND x.merchant_id OPERATOR(pg_catalog.=) $m ORDER BY x.push_id LIMIT 1))
wallet.ack_push(bigint,text,integer)	WL702	-	SELECT wallet.ack_push((SELECT x.push_id FROM wallet.push_messages x WHERE x.status OPERATOR(pg_catalog.=) 'sending' AND x.merchant_id OPERATOR(pg_catalog.=) $m ORDER BY x.push_id LIMIT 1), 'provider-9', (SELECT x.attempts FROM wallet.push_messages x WHERE x.status OPERATOR(pg_catalog.=) 'sending' AND x.merchant_id OPERATOR(pg_catalog.=) $m ORDER BY x.push_id LIMIT 1) OPERATOR(pg_catalog.+) 1)
wallet.fail_push(bigint,text,boolean,integer)	WL702	-	SELECT wallet.fail_push((SELECT x.push_id FROM wallet.push_messages x WHERE x.status OPERATOR(pg_catalog.=) 'sending' AND x.merchant_id OPERATOR(pg_catalog.=) $m ORDER BY x.push_id LIMIT 1), 'timeout', true, (SELECT x.attempts FROM wallet.push_messages x WHERE x.status OPERATOR(pg_catalog.=) 'sending' AND x.merchant_id OPERATOR(pg_catalog.=) $m ORDER BY x.push_id LIMIT 1) OPERATOR(pg_catalog.+) 1)
wallet.ack_pushes(bigint[],text[],integer[])	ok	^0$	SELECT wallet.ack_pushes('{}', NULL, '{}')
wallet_internal.push_check_attempt(bigint,integer)	WL701	-	SELECT wallet_internal.push_check_attempt(-1, 1)
wallet.ack_push(bigint,text)	ok	^t$	SELECT wallet.ack_push((SELECT x.push_id FROM wallet.push_messages x WHERE x.status OPERATOR(pg_catalog.=) 'sending' AND x.merchant_id OPERATOR(pg_catalog.=) $m LIMIT 1), 'provider-1')
wallet.fail_push(bigint,text,boolean)	ok	^dead$	SELECT wallet.fail_push((SELECT x.push_id FROM wallet.push_messages x WHERE x.status OPERATOR(pg_catalog.=) 'sending' AND x.merchant_id OPERATOR(pg_catalog.=) $m LIMIT 1), 'invalid token', false)
wallet.requeue_push(bigint)	ok	^t$	SELECT wallet.requeue_push((SELECT x.push_id FROM wallet.push_messages x WHERE x.status OPERATOR(pg_catalog.=) 'dead' AND x.merchant_id OPERATOR(pg_catalog.=) $m LIMIT 1))
wallet.purge_pushes(integer)	ok	^[0-9]+$	SELECT wallet.purge_pushes(100)
wallet.ack_pushes(bigint[],text[])	ok	^0$	SELECT wallet.ack_pushes('{}')
wallet.rotate_push_queue(interval,integer)	ok	^t$	SELECT wallet.rotate_push_queue('0', 1000)
wallet_internal.push_current_slot()	ok	^[0-2]$	SELECT wallet_internal.push_current_slot()
wallet_internal.push_carry(smallint,smallint)	ok	^[0-9]+$	SELECT wallet_internal.push_carry(CAST(1 AS smallint), CAST(2 AS smallint))
wallet_internal.push_finish(bigint[],text,text,text)	ok	^0$	SELECT wallet_internal.push_finish('{}', 'suppressed', 'test', NULL)
wallet_internal.push_move(wallet.push_messages,smallint)	ok	-	SELECT wallet_internal.push_move(x, CAST(3 AS smallint)) FROM wallet.push_messages x WHERE x.status OPERATOR(pg_catalog.=) 'sent' AND x.merchant_id OPERATOR(pg_catalog.=) $m LIMIT 1
wallet_internal.push_claim_each(bigint[],interval)	ok	-	SELECT * FROM wallet_internal.push_claim_each('{}', '1 minute')
wallet_internal.push_ack_one(bigint,text)	WL701	-	SELECT wallet_internal.push_ack_one(-1, 'provider-9')
wallet_internal.push_ack_many(bigint[],text[])	ok	^0$	SELECT wallet_internal.push_ack_many('{}', NULL)
wallet_internal.push_check_acks(bigint[],text[])	ok	-	SELECT wallet_internal.push_check_acks(ARRAY[1]::bigint[], NULL)
wallet.set_push_store(bigint,text,double precision,double precision,double precision,interval)	ok	^[0-9]+$	SELECT wallet.set_push_store($m, 'sp store', 47.3779, 8.5403, 100)
wallet.track_event(bigint,text,text,jsonb,timestamp with time zone)	ok	^[0-9]+$	SELECT wallet.track_event($m, 'member-p', 'cart_updated', '{"items": 1}')
wallet.create_push_trigger(bigint,text,text,text,jsonb,jsonb,bigint)	ok	^[0-9]+$	SELECT wallet.create_push_trigger($m, 'points_expiring', 'sp_push', 'marketing', '{"title": "t"}', '{"within_days": 400}')
wallet.run_push_triggers(integer)	ok	^[0-9]+$	SELECT wallet.run_push_triggers(100)
wallet.enqueue_push_local(bigint,text[],text,text,jsonb,timestamp without time zone,bigint,text,timestamp with time zone,integer)	ok	^queued\|\|1$	SELECT * FROM wallet.enqueue_push_local($m, '{member-p}', 'sp_push', 'orders', '{"a": 4}', '2030-12-24 09:00')
wallet_internal.push_audience(bigint,text[],text,text,jsonb,bigint,text,timestamp with time zone,timestamp without time zone,timestamp with time zone,integer)	ok	^queued\|\|1$	SELECT * FROM wallet_internal.push_audience($m, '{member-p}', 'sp_push', 'orders', '{"a": 5}', NULL, NULL, 'now', NULL, NULL, 0)
wallet.record_push_event(bigint,text,timestamp with time zone)	ok	^[0-9]+$	SELECT wallet.record_push_event((SELECT x.push_id FROM wallet.push_messages x WHERE x.status OPERATOR(pg_catalog.=) 'sent' AND x.merchant_id OPERATOR(pg_catalog.=) $m LIMIT 1), 'opened')
wallet.push_stats(bigint,bigint,interval,interval)	ok	^\|	SELECT * FROM wallet.push_stats($m)
wallet.push_funnel(bigint,bigint,interval,interval)	ok	^issued\|	SELECT * FROM wallet.push_funnel($m, $c)
wallet.push_retention(bigint,bigint,integer)	ok	-	SELECT * FROM wallet.push_retention($m, $c)
wallet_internal.push_attribution(bigint,bigint,interval,interval)	ok	^[0-9]+\|0\|0$	SELECT * FROM wallet_internal.push_attribution($m, NULL, '1 day', '3 days')
wallet_internal.push_check_name(text,text)	22023	-	SELECT wallet_internal.push_check_name('channel', 'Bad Name')
wallet_internal.push_check_quiet(time without time zone,time without time zone)	22023	-	SELECT wallet_internal.push_check_quiet('22:00', NULL)
wallet_internal.push_check_lease(interval)	22023	-	SELECT wallet_internal.push_check_lease('-1 minute')
wallet_internal.push_check_windows(interval,interval)	22023	-	SELECT wallet_internal.push_check_windows('-1 hour', '1 hour')
wallet_internal.purchase_check_codes(text[])	22023	-	SELECT wallet_internal.purchase_check_codes(ARRAY[' '])
wallet_internal.push_check_message(bigint,text,text,jsonb,bigint,text,timestamp with time zone,integer)	WL101	-	SELECT wallet_internal.push_check_message($m, 'sp_push', 'marketing', '{}', -1, NULL, 'now', 0)
wallet_internal.push_member(bigint,text)	ok	^[0-9]+\|$m\|member-p\|	SELECT * FROM wallet_internal.push_member($m, 'member-p')
wallet_internal.push_lock_member(bigint,boolean)	ok	^t$	SELECT wallet_internal.push_lock_member(1, false)
wallet_internal.push_quiet_until(timestamp with time zone,text,time without time zone,time without time zone)	ok	^2026-01-01 0	SELECT wallet_internal.push_quiet_until('2025-12-31 23:30+00', 'Europe/Zurich', '22:00', '08:00')
wallet_internal.push_slot(bigint,bigint,text,text,boolean,integer,timestamp with time zone,boolean,bigint)	ok	^2	SELECT * FROM wallet_internal.push_slot($m, (SELECT x.member_id FROM wallet.members x WHERE x.member_ref OPERATOR(pg_catalog.=) 'member-p' AND x.merchant_id OPERATOR(pg_catalog.=) $m), 'sp_push', 'marketing', false, 0, 'now', true, NULL)
wallet_internal.push_refusal(bigint,bigint,text,text,boolean)	ok	^$	SELECT wallet_internal.push_refusal($m, (SELECT x.member_id FROM wallet.members x WHERE x.member_ref OPERATOR(pg_catalog.=) 'member-p' AND x.merchant_id OPERATOR(pg_catalog.=) $m), 'sp_push', 'marketing', false)
wallet_internal.push_channel_name(bigint,text)	ok	^wallet_push_[0-9a-f]{40}$	SELECT wallet_internal.push_channel_name($m, 'sp_push')
wallet_internal.push_notify(bigint,text)	ok	-	SELECT wallet_internal.push_notify($m, 'sp_push')
wallet_internal.push_lock(bigint)	WL701	-	SELECT wallet_internal.push_lock(-1)
wallet_internal.push_not_sending(wallet.push_messages)	WL702	-	SELECT wallet_internal.push_not_sending(x) FROM wallet.push_messages x WHERE x.status OPERATOR(pg_catalog.=) 'sent' AND x.merchant_id OPERATOR(pg_catalog.=) $m LIMIT 1
wallet.create_offer(bigint,text,text,numeric,text,numeric,jsonb,jsonb,boolean,integer,boolean,boolean,timestamp with time zone,timestamp with time zone)	ok	^[0-9]+$	SELECT wallet.create_offer($c, 'sp offer', 'percent', 10, 'CNY', 5, '{"min_amount": 1, "stores": ["s1"], "days_of_week": [1, 2, 3, 4, 5, 6, 7], "time_from": "00:00", "time_until": "23:59:59"}', '{"per_member": 100, "per_period": 50, "period": "day"}', false, 1, false, true, '2020-01-01') OPERATOR(pg_catalog.+) wallet.create_offer($c, 'sp cashback', 'cashback', 1, 'CNY', 10, '{}', '{}', false, 0, false, false, '2020-01-01') OPERATOR(pg_catalog.+) wallet.create_offer($c, 'sp code', 'fixed', 1, 'CNY', NULL, '{}', '{}', true, 0, false, false, '2020-01-01')
wallet_internal.unknown_offer(bigint)	WL606	-	SELECT wallet_internal.unknown_offer(-1)
wallet_internal.offer_unit_check(bigint,text)	WL609	-	SELECT wallet_internal.offer_unit_check($c2, 'fixed')
wallet_internal.offer_units(bigint,text,numeric,bigint)	ok	^points\|5$	SELECT * FROM wallet_internal.offer_units($c2, 'cashback', 0, 5)
wallet_internal.offers_eval(bigint,bigint,text,text,bigint,boolean,numeric,text,timestamp with time zone,jsonb,text[],bigint[])	ok	^[0-9]+\|$c\|	SELECT * FROM wallet_internal.offers_eval($m, (SELECT x.member_id FROM wallet.members x WHERE x.merchant_id OPERATOR(pg_catalog.=) $m AND x.member_ref OPERATOR(pg_catalog.=) 'member-a'), 'member-a', 'UTC', $a, true, 20, 'CNY', 'now', '{"store": "s1"}', ARRAY['$c1'], NULL)
wallet.quote_offers(bigint,text,numeric,text,timestamp with time zone,jsonb,text[],interval)	ok	^[0-9]+\|[0-9]+\|$c\|	SELECT * FROM wallet.quote_offers($m, 'member-a', 20, 'CNY', 'now', '{"store": "s1"}', ARRAY['$c1'], '1 hour')
wallet.record_purchase(bigint,text,text,numeric,text,timestamp with time zone,jsonb,bigint[],text[],bigint)	ok	^[0-9]+\|sp-order-q\|	SELECT * FROM wallet.record_purchase($m, 'member-a', 'sp-order-q', 20, 'CNY', 'now', '{"store": "s1"}', NULL, NULL, (SELECT pg_catalog.max(q.quote_id) FROM wallet.offer_quotes q WHERE q.state OPERATOR(pg_catalog.=) 'open'))
wallet.release_quote(bigint)	ok	^t$	SELECT wallet.release_quote((SELECT q.quote_id FROM wallet.quote_offers($m, 'member-a', 20, 'CNY', 'now', '{"store": "s1"}', NULL, '1 hour') q LIMIT 1))
wallet_internal.offer_consume(wallet.purchases,text,text,jsonb)	ok	-	SELECT wallet_internal.offer_consume(x, 'member-a', 'UTC', pg_catalog.jsonb_build_object('offer_id', (SELECT o.offer_id FROM wallet.offers o WHERE o.name OPERATOR(pg_catalog.=) 'sp cashback'), 'status', 'ok', 'points', 10)) FROM wallet.purchases x WHERE x.order_ref OPERATOR(pg_catalog.=) 'sp-order-1'
wallet_internal.offers_consume(wallet.purchases,text,text,bigint[],text[],bigint)	ok	-	SELECT wallet_internal.offers_consume(x, 'member-a', 'UTC', ARRAY(SELECT o.offer_id FROM wallet.offers o WHERE o.campaign_id OPERATOR(pg_catalog.=) $c), ARRAY['$c1'], NULL) FROM wallet.purchases x WHERE x.order_ref OPERATOR(pg_catalog.=) 'sp-order-1'
wallet.end_offer(bigint,timestamp with time zone)	ok	-	SELECT wallet.end_offer((SELECT o.offer_id FROM wallet.offers o WHERE o.name OPERATOR(pg_catalog.=) 'sp code'))
wallet.purge_offer_quotes(interval,integer)	ok	^[0-9]+$	SELECT wallet.purge_offer_quotes('0', 10)
wallet_internal.tier_sweep_scan(bigint,bigint,integer,text,integer,timestamp with time zone,bigint[])	ok	^[0-9]+\|	SELECT * FROM wallet_internal.tier_sweep_scan($p, 0, 10, 'rolling', 12, 'now', '{1,100}')
CALLS
}
# The triggers, fired by writes to the extension's tables (same format).
triggers() {
    local m=${V[m]} c=${V[c]} c2=${V[c2]} c4=${V[c4]} e0=${V[e0]} p=${V[p]}
    cat <<TRIGGERS
wallet_internal.code_cache_invalidate()	ok	-	UPDATE wallet.code_keys SET retired_at = retired_at WHERE campaign_id OPERATOR(pg_catalog.=) $c
wallet_internal.campaigns_create_serials()	ok	^[0-9]+$	INSERT INTO wallet.campaigns (merchant_id, name) VALUES ($m, 'inserted by hand') RETURNING campaign_id
wallet_internal.campaigns_guard()	WL107	-	UPDATE wallet.campaigns SET current_key_version = 1 WHERE campaign_id OPERATOR(pg_catalog.=) $c2
wallet_internal.code_caps_recount()	ok	-	UPDATE wallet.campaigns SET max_redemptions_per_code = 3, max_redemptions_per_member = 3, max_redemptions_total = 30 WHERE campaign_id OPERATOR(pg_catalog.=) $c4
wallet_internal.entries_append_only()	WL213	-	DELETE FROM wallet.entries WHERE entry_id OPERATOR(pg_catalog.=) $e0
wallet_internal.installation_guard()	WL120	-	DELETE FROM wallet.installation
wallet_internal.code_keys_guard()	WL121	-	UPDATE wallet.code_keys SET installation_id = NULL WHERE campaign_id OPERATOR(pg_catalog.=) $c
wallet_internal.campaigns_keep()	WL122	-	DELETE FROM wallet.campaigns WHERE campaign_id OPERATOR(pg_catalog.=) $c4
wallet_internal.audit_change()	ok	-	UPDATE wallet.programs SET name = 'sp renamed' WHERE program_id OPERATOR(pg_catalog.=) $p
wallet_internal.audit_log_append_only()	WL401	-	DELETE FROM wallet.audit_log
wallet_internal.campaigns_fresh_id()	WL123	-	INSERT INTO wallet.campaigns (campaign_id, merchant_id, name) OVERRIDING SYSTEM VALUE VALUES ($c, $m, 'reused id')
wallet_internal.merchant_roles_changed()	ok	-	UPDATE wallet.merchant_roles SET granted_at = granted_at WHERE merchant_id OPERATOR(pg_catalog.=) $m
wallet_internal.referral_purchase()	ok	-	INSERT INTO wallet.purchases (merchant_id, member_id, order_ref, amount, currency, occurred_at) SELECT $m, x.member_id, 'sp-referral-order', 10, 'CNY', 'now' FROM wallet.members x WHERE x.merchant_id OPERATOR(pg_catalog.=) $m AND x.member_ref OPERATOR(pg_catalog.=) 'member-friend'
wallet_internal.referral_programs_changed()	ok	-	UPDATE wallet.referral_programs SET min_amount = min_amount WHERE campaign_id OPERATOR(pg_catalog.=) $c
wallet_internal.tiers_changed()	ok	-	UPDATE wallet.tiers SET program_id = program_id WHERE program_id OPERATOR(pg_catalog.=) $p
wallet_internal.purchase_rules_changed()	ok	-	UPDATE wallet.earning_rules SET priority = priority WHERE program_id OPERATOR(pg_catalog.=) $p
wallet_internal.push_config_changed()	ok	-	UPDATE wallet.push_caps SET max_count = max_count WHERE merchant_id OPERATOR(pg_catalog.=) $m
TRIGGERS
}

run_map() {     # run_map DB WHAT: runs every line of calls or triggers under the hostile search_path
    local db=$1 what=$2 sig expect pattern sql out err rc good
    while IFS=$'\t' read -r sig expect pattern sql; do
        out=$(qh "$db" -c "$sql" 2> "$TMP/err"); rc=$?
        err=$(cat "$TMP/err")
        good=1
        if [ "$expect" = ok ]; then
            [ $rc -eq 0 ] && { [ "$pattern" = - ] || printf '%s\n' "$out" | head -n 1 | grep -qE "$pattern"; } && good=0
        else
            [ $rc -ne 0 ] && grep -q "ERROR:  $expect:" <<<"$err" && good=0
        fi
        if grep -q 'HOSTILE RAN' <<<"$err"; then good=1; fi
        ok $good "$db: $sig runs ($expect) under the hostile search_path, nothing hostile ran" \
           "$(printf 'call: %s\nstdout: %s\nstderr: %s' "$sql" "$(printf '%s' "$out" | head -n 3)" "$(printf '%s' "$err" | head -n 5)")"
        echo "$sig" >> "$TMP/called.$db"
    done < <($what)
}

# Every function each of the three roles may execute, called again as a login
# role holding that role and acting for the fixtures' merchant, under the
# hostile search_path.  The fixtures have moved on (a hold captured, a key
# retired), so the outcome may differ from the superuser's: what counts is
# that nothing hostile ran and that no call was refused for a privilege the
# role lacks on something the function uses (42501 naming an object the
# call's own text does not name).
run_roles() {   # run_roles DB
    local db=$1 r sig expect pattern sql err n bad denied
    for r in $ROLES; do
        q "$db" -c "SELECT wallet.grant_merchant(${V[m]}, 'sp_$r')" >/dev/null
        n=0; bad=
        while IFS=$'\t' read -r sig expect pattern sql; do
            [ "$(q "$db" -c "SELECT has_function_privilege('sp_$r', '$sig', 'EXECUTE')")" = t ] || continue
            n=$((n + 1))
            PGUSER=sp_$r qh "$db" -c "$sql" >/dev/null 2> "$TMP/err"
            err=$(cat "$TMP/err")
            denied=$(printf '%s\n' "$err" | sed -n 's/.*ERROR:  42501: permission denied for [a-z]* \(.*\)$/\1/p')
            # refused what the call itself names (a fixture read, say): the call's need, not the function's
            case "$sql" in *"wallet.$denied"*) [ -n "$denied" ] && denied= ;; esac
            if grep -q 'HOSTILE RAN' <<<"$err" || [ -n "$denied" ] \
               || { grep -q 'ERROR:  42501:' <<<"$err" && [ -z "$(printf '%s\n' "$err" | sed -n 's/.*ERROR:  42501: permission denied for [a-z]* //p')" ]; }; then
                bad=$(printf '%s\n%s: %s' "$bad" "$sig" "$(printf '%s' "$err" | head -n 3)")
            fi
        done < <(calls)
        ok $([ -z "$bad" ] && [ $n -gt 0 ]; echo $?) \
           "$db: the $n functions wallet_$r may execute, called as a login role holding it: nothing hostile ran, no privilege missing" "$bad"
    done
}

# Every function and trigger function of the extension has a call.
coverage() {    # coverage DB
    local missing
    missing=$(q "$1" -c "SELECT p.oid::regprocedure FROM ($EXT_PROCS) p
                          WHERE p.prokind IN ('f', 'p')
                            AND NOT EXISTS (SELECT FROM pg_type t WHERE p.oid IN (t.typinput, t.typoutput, t.typreceive, t.typsend,
                                                                                   t.typmodin, t.typmodout, t.typanalyze))
                          ORDER BY 1" | grep -vxF -f "$TMP/called.$1")
    ok $([ -z "$missing" ]; echo $?) "$1: every function of the extension (but type I/O) was called or fired" \
       "no call in test/concurrency/search_path.t for:" "$missing"
}

check_clean() {  # check_clean DB WHEN
    local cnt
    cnt=$(ran_count "$1")
    ok $([ "$cnt" = 0 ]; echo $?) "$1: no planted object ran $2" "$(ran_list "$1")"
    ok $([ "$(is_super)" = f ]; echo $?) "$1: hostile is still no superuser $2"
}

ext_step() {    # ext_step DB DESCRIPTION SQL...: DDL on the extension under the hostile search_path
    local db=$1 desc=$2 out; shift 2
    out=$(qh "$db" "$@" 2>&1); local rc=$?
    ok $([ $rc -eq 0 ] && ! grep -q 'HOSTILE RAN' <<<"$out"; echo $?) "$db: $desc under the hostile search_path" "$out"
}

for db in "$DB_FRESH" "$DB_UPGRADED"; do
    q postgres -c "CREATE DATABASE $db" >/dev/null || exit 1
    out=$(plant "$db" pg_catalog)
    cnt=$(q "$db" -c "SELECT count(*) FILTER (WHERE kind = 'function' AND what = 'nextval(regclass)' AND schema_name = 'public')
                             + count(*) FILTER (WHERE kind = 'operator' AND what = 'bigint = bigint' AND schema_name = 'hostile_first'),
                             count(*) FILTER (WHERE kind <> 'unplantable')
                        FROM hostile.planted" 2>&1)
    ok $([ "${cnt%%|*}" = 2 ]; echo $?) "$db: hostile planted ${cnt#*|} objects in public and hostile_first" "$out"
    control "$db"
    if [ "$db" = "$DB_FRESH" ]; then
        ext_step "$db" "CREATE EXTENSION wallet" -c "CREATE EXTENSION wallet"
    else
        ext_step "$db" "CREATE EXTENSION wallet VERSION '0.1.0'; ALTER EXTENSION wallet UPDATE" \
            -c "CREATE EXTENSION wallet VERSION '0.1.0'" -c "ALTER EXTENSION wallet UPDATE"
    fi
    ok $([ "$(q "$db" -c "SELECT extversion FROM pg_extension WHERE extname = 'wallet'")" = "$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$ROOT/wallet.control")" ]; echo $?) \
       "$db: the extension is at the default version"
    check_clean "$db" "during CREATE/ALTER EXTENSION"
    for r in $ROLES; do q "$db" -c "GRANT wallet_$r TO sp_$r" >/dev/null; done
    out=$(plant "$db" wallet)
    ok $([ "$(q "$db" -c "SELECT count(*) FROM hostile.planted WHERE kind = 'operator' AND what = 'wallet.marketing_code = wallet.marketing_code'")" = 2 ]; echo $?) \
       "$db: hostile planted = on marketing_code too" "$out"
    setup "$db" || { ok 1 "$db: fixtures"; continue; }
    sleep 1.2   # the short-lived lots of the fixtures are dead now
    : > "$TMP/called.$db"
    run_map "$db" calls
    run_map "$db" triggers
    coverage "$db"
    check_clean "$db" "while every function ran"
    run_roles "$db"
    check_clean "$db" "while the three roles called their functions"
done

done_testing
finish

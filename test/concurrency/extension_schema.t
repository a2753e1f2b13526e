#!/usr/bin/env bash
# Where the extension is recorded (wallet.control: schema = pg_catalog), and
# why: a superuser who creates the extension while a schema owned by someone
# else is first on their search_path must not hand that owner the power to
# drop the extension and all its data with DROP SCHEMA ... CASCADE.
#  - a fresh install is recorded in pg_catalog (\dx), depends on no schema,
#    and survives the hostile DROP SCHEMA ... CASCADE with its data;
#  - a 0.1.0 install recorded in the hostile schema (as 0.1.0's control file
#    did) is dropped by it; updated to 0.2.0 it is moved to pg_catalog and
#    survives; the updated database then describes like a fresh one.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d /tmp/wallet-ext-schema.XXXXXX)
FRESH=conc_ext_schema_fresh; OLD=conc_ext_schema_old; UPD=conc_ext_schema_updated
ROLE=wallet_test_mallory
. "$ROOT/test/lib.sh"
echo "1..11"

for d in $FRESH $OLD $UPD; do dropdb --if-exists "$d" >/dev/null 2>&1; done
psql -X -qAt -d postgres -c "DROP ROLE IF EXISTS $ROLE" >/dev/null 2>&1
for d in $FRESH $OLD $UPD; do createdb "$d" || { echo "Bail out! cannot create $d"; exit 1; }; done
psql -X -q -d postgres -v ON_ERROR_STOP=1 -c "CREATE ROLE $ROLE LOGIN" >/dev/null || { echo "Bail out! cannot create role"; exit 1; }
trap 'for d in $FRESH $OLD $UPD; do dropdb --if-exists "$d"; done; psql -X -q -d postgres -c "DROP ROLE IF EXISTS $ROLE"; rm -rf "$TMP"' EXIT

sq() { local db=$1; shift; psql -X -qAt -d "$db" -v ON_ERROR_STOP=1 "$@"; }
# the hostile role's schema, first on the superuser's search_path
for d in $FRESH $OLD $UPD; do sq "$d" -c "CREATE SCHEMA evil AUTHORIZATION $ROLE" >/dev/null; done
where() { sq "$1" -c "SELECT e.extnamespace::regnamespace || '|' || coalesce((SELECT string_agg(d.refobjid::regnamespace::text, ',')
                                FROM pg_depend d WHERE d.classid = 'pg_extension'::regclass AND d.objid = e.oid
                                 AND d.refclassid = 'pg_namespace'::regclass), '')
                        FROM pg_extension e WHERE e.extname = 'wallet'"; }
attack() { psql -X -qAt -U "$ROLE" -d "$1" -c "DROP SCHEMA evil CASCADE" 2>&1; }
survives() { sq "$1" -c "SELECT (SELECT count(*) FROM pg_extension WHERE extname = 'wallet') || ',' || (SELECT count(*) FROM pg_namespace WHERE nspname = 'wallet')"; }

# --- fresh install -------------------------------------------------------
sq $FRESH -c "SET search_path = evil, public" -c "CREATE EXTENSION wallet" -c "SELECT wallet.create_merchant('m')" >/dev/null
is "$(where $FRESH)" "pg_catalog|" "CREATE EXTENSION with a hostile schema first on search_path records the extension in pg_catalog, depending on no schema"
sq $FRESH -c '\dx wallet' | sed 's/^/# /'
sq $FRESH -c '\dx wallet' | grep -q '^wallet|0\.2\.0|pg_catalog|'
ok $? "\\dx lists it under schema pg_catalog"
attack $FRESH | sed 's/^/# /'
is "$(survives $FRESH),$(sq $FRESH -c "SELECT count(*) FROM wallet.merchants")" "1,1,1" \
   "the schema owner's DROP SCHEMA evil CASCADE leaves the extension, its schema and its data"

# --- 0.1.0, recorded where 0.1.0's control file (no schema =) put it ---------
old_install() {   # CREATE EXTENSION of 0.1.0 as it recorded itself: in the first schema of search_path
    sq "$1" -c "SET search_path = evil, public" -c "CREATE EXTENSION wallet VERSION '0.1.0'" \
        -c "SELECT wallet.create_merchant('m')" \
        -c "UPDATE pg_extension SET extnamespace = 'evil'::regnamespace WHERE extname = 'wallet'" \
        -c "INSERT INTO pg_depend (classid, objid, objsubid, refclassid, refobjid, refobjsubid, deptype)
            SELECT 'pg_extension'::regclass, oid, 0, 'pg_namespace'::regclass, 'evil'::regnamespace, 0, 'n'
              FROM pg_extension WHERE extname = 'wallet'" >/dev/null
}
old_install $OLD; old_install $UPD
is "$(where $OLD)" "evil|evil" "a 0.1.0 install is recorded in the hostile schema, and depends on it"
attack $OLD | sed 's/^/# /'
is "$(survives $OLD)" "0,0" "there, the schema owner's DROP SCHEMA evil CASCADE drops the extension and all its data (the finding)"

sq $UPD -c "ALTER EXTENSION wallet UPDATE" >/dev/null 2>"$TMP/update.err"; ok $? "ALTER EXTENSION wallet UPDATE to 0.2.0"
sed 's/^/# /' "$TMP/update.err"
is "$(where $UPD)" "pg_catalog|" "the update moves the record to pg_catalog and drops the dependency on the old schema"
sq $UPD -c '\dx wallet' | grep -q '^wallet|0\.2\.0|pg_catalog|'
ok $? "\\dx lists the updated extension under schema pg_catalog"
is "$(sq $UPD -c "SELECT obj_description(oid, 'pg_extension') FROM pg_extension WHERE extname = 'wallet'")" \
   "digital-wallet marketing in the database: signed marketing codes, a points ledger, loyalty tiers, campaigns and a consent-aware push queue" \
   "its comment is 0.2.0's, which promises only what exists"
attack $UPD | sed 's/^/# /'
is "$(survives $UPD),$(sq $UPD -c "SELECT count(*) FROM wallet.merchants")" "1,1,1" \
   "the schema owner's DROP SCHEMA evil CASCADE no longer drops the updated extension or its data"

sq $FRESH -f "$ROOT/test/upgrade/describe.sql" > "$TMP/fresh.txt" 2>&1
sq $UPD -f "$ROOT/test/upgrade/describe.sql" > "$TMP/updated.txt" 2>&1
diff "$TMP/fresh.txt" "$TMP/updated.txt" > "$TMP/diff.txt"; rc=$?
head -n 20 "$TMP/diff.txt" | sed 's/^/# /'
[ $rc -eq 0 ] && grep -q '^extension 0.2.0 relocatable=false schema=pg_catalog depends_on_schemas= ' "$TMP/fresh.txt"
ok $? "the updated database describes exactly like the fresh one (test/upgrade/describe.sql), extension line included"
exit $((T_FAILED > 0))

#!/usr/bin/env bash
# README "Roles and privileges" is the DBA's map of who may call what: its
# table by area lists, per role, the API functions the role may execute.
# This check reads that table and compares it with the catalog of a fresh
# install: for every function and procedure of schema wallet (trigger
# functions aside), the roles holding EXECUTE must be exactly the roles whose
# column names it, in some row; the functions of a value that all three roles
# call (README's sentence under the table) and ledger_apply, which none may
# call, are the only ones left out; every
# name in the table must exist; and overloads of one name must agree.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DB=conc_roles_doc
. "$ROOT/test/lib.sh"
plan 5
cleanup() { dropdb --if-exists "$DB" >/dev/null 2>&1; }
trap cleanup EXIT
cleanup
createdb "$DB" || { echo "Bail out! cannot create $DB"; exit 1; }
q -c "CREATE EXTENSION wallet" >/dev/null || { echo "Bail out! CREATE EXTENSION failed"; exit 1; }

# "role name" per cell of the table (header row: | area | `wallet_admin` | `wallet_app` | `wallet_reader` |)
table=$(awk '/^\| area \| `wallet_admin` \| `wallet_app` \| `wallet_reader` \|$/ {on = 1; next}
             on && /^$/ {exit}
             on && /^\|---/ {next}
             on {print}' "$ROOT/README.md")
ok $([ -n "$table" ] && echo 0 || echo 1) "README has the roles table by area ($(echo "$table" | grep -c .) rows)"
documented=$(echo "$table" | grep -v '^| tables' | awk -F'|' '{
        split("wallet_admin wallet_app wallet_reader", roles, " ");
        for (c = 3; c <= 5; c++) {
            cell = $c;
            while (match(cell, /`[a-z_]+`/)) {
                print roles[c - 2], substr(cell, RSTART + 1, RLENGTH - 2);
                cell = substr(cell, RSTART + RLENGTH);
            }
        }
    }' | LC_ALL=C sort -u)

# the catalog: "role name" for every routine of schema wallet a role may execute
# (the functions of a value, listed in README's sentence, left out)
VALUE_FUNCTIONS="^(version|installation_id|acts_for|my_merchants|policy_expiry|code_(campaign|serial|key_version|mac_bits|prefix)|ledger_(balance|expiring|earned|lots|totals|diff)|marketing_code_.*|points_ledger_.*)$"
# the one function of a value that no role may call (README says so)
OWNER_ONLY="^ledger_apply$"
granted=$(q -F ' ' -c "
    SELECT DISTINCT r.rolname, p.proname
      FROM pg_proc p CROSS JOIN (VALUES ('wallet_admin'), ('wallet_app'), ('wallet_reader')) r(rolname)
     WHERE p.pronamespace = 'wallet'::regnamespace AND p.prorettype <> 'trigger'::regtype
       AND has_function_privilege(r.rolname, p.oid, 'EXECUTE')
       AND p.proname !~ '$VALUE_FUNCTIONS'
     ORDER BY 1, 2" | LC_ALL=C sort -u)
is "$(comm -3 <(echo "$documented") <(echo "$granted") | sed 's/^\t/catalog only: /; s/^\([a-z]\)/README only: \1/' | tr '\n' ';')" "" \
   "every role's EXECUTE privileges on the API are exactly the README table's cells"

# every routine of schema wallet is either in the table (for some role), a
# function of a value, or a trigger function
untabled=$(q -c "
    SELECT DISTINCT p.proname FROM pg_proc p
     WHERE p.pronamespace = 'wallet'::regnamespace AND p.prorettype <> 'trigger'::regtype
       AND p.proname !~ '$VALUE_FUNCTIONS' AND p.proname !~ '$OWNER_ONLY'
     ORDER BY 1" | LC_ALL=C sort -u | comm -23 - <(echo "$documented" | cut -d' ' -f2 | LC_ALL=C sort -u))
is "$untabled" "" "every API function of schema wallet is in the table (none granted to no role)"

# overloads of a name: the same roles
split=$(q -c "
    SELECT p.proname FROM pg_proc p CROSS JOIN (VALUES ('wallet_admin'), ('wallet_app'), ('wallet_reader')) r(rolname)
     WHERE p.pronamespace = 'wallet'::regnamespace AND p.prorettype <> 'trigger'::regtype
     GROUP BY p.proname, r.rolname
    HAVING count(DISTINCT has_function_privilege(r.rolname, p.oid, 'EXECUTE')) > 1
     ORDER BY 1")
is "$split" "" "the overloads of a name are granted alike (the table names functions, not signatures)"

# the functions of a value: all three roles
values_missing=$(q -c "
    SELECT p.oid::regprocedure FROM pg_proc p CROSS JOIN (VALUES ('wallet_admin'), ('wallet_app'), ('wallet_reader')) r(rolname)
     WHERE p.pronamespace = 'wallet'::regnamespace AND p.proname ~ '$VALUE_FUNCTIONS'
       AND NOT has_function_privilege(r.rolname, p.oid, 'EXECUTE')
    UNION ALL
    SELECT p.oid::regprocedure FROM pg_proc p CROSS JOIN (VALUES ('wallet_admin'), ('wallet_app'), ('wallet_reader')) r(rolname)
     WHERE p.pronamespace = 'wallet'::regnamespace AND p.proname ~ '$OWNER_ONLY'
       AND has_function_privilege(r.rolname, p.oid, 'EXECUTE')
     ORDER BY 1")
is "$values_missing" "" "the functions of a value (README's sentence below the table) are executable by all three roles, ledger_apply by none"
finish

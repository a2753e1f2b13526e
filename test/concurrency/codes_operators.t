#!/usr/bin/env bash
# Codes in joins and WHERE clauses, written the everyday way (a.code = b.code,
# JOIN ... USING (code), WHERE code = $1), by a login role with the default
# search_path, in a database set up as README "Installing into an existing
# server" says: the operators live in schema wallet, and the database's
# search_path names it.  Without that step the same queries fail, which is
# why the README has it.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DB=conc_codes_operators
BARE=conc_codes_operators_bare
ROLE=wallet_test_clerk
. "$ROOT/test/lib.sh"
echo "1..9"

for d in "$DB" "$BARE"; do dropdb --if-exists "$d" >/dev/null 2>&1; done
psql -X -qAt -d postgres -c "DROP ROLE IF EXISTS $ROLE" >/dev/null 2>&1
createdb "$DB" && createdb "$BARE" || { echo "Bail out! cannot create databases"; exit 1; }
psql -X -q -d postgres -v ON_ERROR_STOP=1 -c "CREATE ROLE $ROLE LOGIN" >/dev/null || { echo "Bail out! cannot create role"; exit 1; }
trap 'dropdb "$DB"; dropdb "$BARE"; psql -X -q -d postgres -c "DROP ROLE IF EXISTS $ROLE"' EXIT

setup() {   # setup DB: the extension, codes, and two tables of them the role may read
    psql -X -q -d "$1" -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION wallet;
SELECT wallet.create_campaign(wallet.create_merchant('ops'), 'c', 'OPS');
CREATE TABLE issued AS SELECT c AS code FROM wallet.generate_codes(1, 100) c;
CREATE TABLE handed_out AS SELECT code FROM issued ORDER BY wallet.code_serial(code) LIMIT 30;
GRANT SELECT ON issued, handed_out TO $ROLE;
GRANT wallet_reader TO $ROLE;   -- README "Roles and privileges"
SQL
}
setup "$DB" || { echo "Bail out! set-up failed"; exit 1; }
setup "$BARE" || { echo "Bail out! set-up failed"; exit 1; }
# README: "ALTER DATABASE <db> SET search_path = "\$user", public, wallet"
psql -X -q -d postgres -v ON_ERROR_STOP=1 -c "ALTER DATABASE $DB SET search_path = \"\$user\", public, wallet" >/dev/null

# as the role, in a new session: its search_path is the database's
rq() { psql -X -qAt -U "$ROLE" -d "$1" -v ON_ERROR_STOP=1 -c "$2" 2>&1; }
FIRST=$(psql -X -qAt -d "$DB" -c "SELECT code FROM handed_out ORDER BY wallet.code_serial(code) LIMIT 1")

is "$(rq "$DB" "SELECT current_setting('search_path'), (SELECT count(*) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = '$ROLE')")" \
   '"$user", public, wallet|0' "the role has no search_path of its own: it gets the database's, which names wallet"
is "$(rq "$DB" "SELECT count(*) FROM issued JOIN handed_out USING (code)")" 30 "JOIN ... USING (code)"
is "$(rq "$DB" "SELECT count(*) FROM issued i JOIN handed_out h ON i.code = h.code")" 30 "JOIN ... ON a.code = b.code"
is "$(rq "$DB" "SELECT count(*) FROM issued WHERE code = '$FIRST'")" 1 "WHERE code = 'literal'"
is "$(psql -X -qAt -U "$ROLE" -d "$DB" -v ON_ERROR_STOP=1 -c "PREPARE q(wallet.marketing_code) AS SELECT count(*) FROM issued WHERE code = \$1" \
        -c "EXECUTE q('$FIRST')" 2>&1)" 1 "WHERE code = \$1 (a prepared statement's parameter)"
is "$(rq "$DB" "SELECT count(*) FILTER (WHERE code <> '$FIRST') || ',' || count(*) FILTER (WHERE code < '$FIRST') || ',' || count(DISTINCT code)
                || ',' || (SELECT code_serial(code) FROM issued ORDER BY code DESC LIMIT 1) FROM issued")" "99,0,100,100" \
   "<>, <, DISTINCT, ORDER BY and the accessors by their plain names"
is "$(rq "$DB" "SELECT count(*) FROM issued WHERE code IN (SELECT code FROM handed_out) AND code NOT IN ('$FIRST')")" 29 "IN and NOT IN"

# the same role and queries in a database without the step
out=$(rq "$BARE" "SELECT count(*) FROM issued JOIN handed_out USING (code)")
echo "$out" | sed 's/^/# /'
grep -q 'operator does not exist: wallet.marketing_code = wallet.marketing_code' <<<"$out"
ok $? "without the README's search_path step the join fails: operator does not exist"
is "$(rq "$BARE" "SELECT count(*) FROM issued i JOIN handed_out h ON i.code OPERATOR(wallet.=) h.code")" 30 \
   "there, OPERATOR(wallet.=) still works"
exit $((T_FAILED > 0))

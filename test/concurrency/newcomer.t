#!/usr/bin/env bash
# The newcomer path (issue 9): a DBA follows README "Roles and privileges"
# word for word (the SQL block between its "newcomer" markers is what runs
# here), creating a login role for a merchant's app, granting it wallet_app
# and the merchant; the app then logs in as that role and runs a whole
# checkout (member, account, accrual, a code issued and redeemed, a hold captured)
# with no other grant, and can neither touch a table directly nor see
# another merchant's account.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DB=conc_newcomer
. "$ROOT/test/lib.sh"
plan 12
TMP=

sq() { qdb "$DB" "$@"; }
app() { PGUSER=shop_app qdb "$DB" "$@"; }
cleanup() { sess_close app 2>/dev/null; [ -n "$TMP" ] && rm -rf "$TMP"; dropdb --if-exists "$DB" >/dev/null 2>&1; psql -X -q -d postgres -c "DROP ROLE IF EXISTS shop_app" >/dev/null 2>&1; }
trap cleanup EXIT
cleanup
TMP=$(mktemp -d /tmp/wallet-newcomer.XXXXXX)
createdb "$DB" || { echo "Bail out! cannot create $DB"; exit 1; }

# What the merchant has before the app arrives: a program and a campaign.
read -r m p c other < <(sq -F ' ' <<'SQL'
CREATE EXTENSION wallet;
SELECT wallet.create_merchant('Newcomer Shoes') AS m \gset
SELECT wallet.create_merchant('Someone Else') AS m2 \gset
SELECT :m, wallet.create_program(:m, 'Shoe Points', interval '1 year'),
       wallet.create_campaign(:m, 'Welcome', prefix => 'SHOE'),
       wallet.open_account(wallet.create_program(:m2, 'Other Points'), 'alice');
SQL
)
ok $([ -n "$other" ]; echo $?) "the merchant has a program and a campaign"

# The DBA's lines, exactly as README gives them (the merchant's id put in).
dba=$(sed -n '/^<!-- newcomer: dba -->$/,/^<!-- \/newcomer -->$/p' "$ROOT/README.md" | grep -v '^<!--' | grep -v '^```')
ok $(grep -q "GRANT wallet_app TO shop_app" <<<"$dba"; echo $?) "README has the DBA's lines" "$dba"
out=$(printf '%s\n' "${dba//<id>/$m}" | sq 2>&1)
ok $? "the DBA runs README's lines" "$out"

# The app: a whole checkout.
out=$(app -F ' ' 2>&1 <<SQL
SELECT member_id > 0 FROM wallet.upsert_member($m, 'alice', 'Europe/Zurich', 'de-CH');
SELECT wallet.open_account($p, 'alice') AS a \gset
SELECT balance_after FROM wallet.accrue(:a, 500, 'order-1', 'purchase', 'order 1');
SELECT wallet.issue_code($c, 'alice') AS code \gset
SELECT wallet.check_code(:'code'::text, 'alice');
SELECT status FROM wallet.redeem_code(:'code', 'alice', 'order-1-code');
SELECT entry_id AS h FROM wallet.hold(:a, 200, 'order-2-hold', interval '15 minutes', 'cart') \gset
SELECT kind FROM wallet.capture(:h, NULL, 'order-2-capture');
SELECT wallet.balance(:a);
SQL
)
is "$(printf '%s' "$out" | tr '\n' ' ')" "t 500 ok ok capture 300" "the app runs a checkout: member, account, accrual, code issued, checked and redeemed, hold captured"
is "$(app -c "SELECT count(*) FROM wallet.verify_ledger()")" 0 "its ledger verifies (as the app, over what it sees)"

# Nothing granted but what README says.
is "$(sq -c "SELECT string_agg(b.rolname, ',') FROM pg_auth_members x JOIN pg_roles b ON b.oid = x.roleid
              WHERE x.member = 'shop_app'::regrole")" wallet_app "shop_app is a member of wallet_app only"
is "$(sq -c "SELECT count(*) FROM information_schema.role_routine_grants WHERE grantee = 'shop_app'")|$(sq -c "SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = 'shop_app'")" \
   "0|0" "shop_app holds no grant of its own on a function or table"

is "$(app -c "UPDATE wallet.accounts SET ledger = 'lots={1000000@never}'" 2>&1 | grep -o 'permission denied for table accounts')" \
   "permission denied for table accounts" "the app cannot rewrite a ledger"
is "$(app -c "SELECT wallet.balance($other)" 2>&1 | grep -o 'ERROR:  unknown account')" "ERROR:  unknown account" \
   "another merchant's account is unknown to the app"

# Which merchants a role acts for is cached in its session across
# transactions: a revoke and a grant made by the DBA in another session count
# from the app session's next statement (own transaction) on.
PGUSER=shop_app sess_open app
is "$(sess_run app "SELECT count(*) FROM wallet.my_merchants()")" 1 "the app's session acts for the merchant"
sq -c "SELECT wallet.revoke_merchant($m, 'shop_app')" >/dev/null
is "$(sess_run app "SELECT count(*) FROM wallet.my_merchants()")|$(sess_run app "SELECT count(*) FROM wallet.accounts")" "0|0" \
   "after a revoke in another session, its next statement acts for no merchant and sees no row"
sq -c "SELECT wallet.grant_merchant($m, 'shop_app')" >/dev/null
is "$(sess_run app "SELECT wallet.balance(account_id) FROM wallet.accounts WHERE member_ref = 'alice'")" 300 \
   "granted again, its next statement reads the account"
sess_close app
finish

#!/usr/bin/env bash
# A parallel restore (pg_restore -j) of a database using wallet, done as the
# README's "Backup and restore" says: wallet's tables are extension
# configuration tables whose foreign keys exist from CREATE EXTENSION on, so
# their data is restored by one job in dependency order, and everything else
# (the app's own tables, the indexes and constraints of the post-data
# section) by many.  The source holds the demo's data (codes, ledger,
# loyalty, campaigns, referrals) and push consents, messages and events; the
# restored copy must hold every row of every wallet table and the sequences'
# positions, and keep working.
set -uo pipefail
BIN=$("${PG_CONFIG:-pg_config}" --bindir)
SRC=pdump_src_$$ DST=pdump_dst_$$ DIR=/tmp/pdump_$$
. "$(dirname "$0")/../lib.sh"
cleanup() { dropdb --if-exists "$SRC" 2>/dev/null; dropdb --if-exists "$DST" 2>/dev/null; rm -rf "$DIR"; }
trap cleanup EXIT

plan 11
createdb "$SRC" && createdb "$DST" || { echo "Bail out! cannot create databases"; exit 1; }
psql -X -q -v ON_ERROR_STOP=1 -d "$SRC" -f "$(dirname "$0")/../../examples/demo.sql" >/dev/null 2>&1
ok $? "the demo's data is in the source database"
qdb "$SRC" -c "
    SELECT wallet.upsert_member(1, 'p-' || i, 'Europe/Zurich') FROM generate_series(1, 50) i;
    SELECT wallet.record_consent(1, 'p-' || i, 'push', 'marketing', true, 'app', 'v1', '10.0.0.1') FROM generate_series(1, 50) i;
    SELECT wallet.set_push_settings(1, NULL, NULL);
    SELECT wallet.enqueue_push(1, 'p-' || i, 'push', 'marketing', jsonb_build_object('n', i), dedup_key => 'd' || i) FROM generate_series(1, 50) i;
    SELECT wallet.ack_push(c.push_id, 'provider-' || c.push_id) FROM wallet.claim_pushes('push', 20, '1 minute') c;
    SELECT wallet.record_push_event(push_id, 'opened', now()) FROM wallet.push_messages WHERE status = 'sent' LIMIT 5;
    SELECT wallet.track_event(1, 'p-1', 'cart_updated', '{\"items\": 2}');
    -- the app's own tables, one referring to the other
    CREATE TABLE public.app_orders (id int PRIMARY KEY, member_ref text);
    INSERT INTO public.app_orders SELECT i, 'p-' || i FROM generate_series(1, 2000) i;
    CREATE TABLE public.app_lines (id int PRIMARY KEY, order_id int NOT NULL REFERENCES public.app_orders);
    INSERT INTO public.app_lines SELECT i, 1 + i % 2000 FROM generate_series(1, 5000) i;" >/dev/null
ok $? "push consents, messages, deliveries and events, and the app's tables, are in the source database"

# every row of every table of the extension's schemas, and every sequence's position
digest() {
    qdb "$1" -c "
        SELECT string_agg(format('%s %s', c.oid::regclass,
                   (xpath('/row/d/text()', query_to_xml(format(
                       'SELECT count(*) || '' '' || md5(coalesce(string_agg(t::text, '','' ORDER BY t::text), '''')) AS d FROM %s t',
                       c.oid::regclass), false, true, '')))[1]::text), E'\n' ORDER BY c.oid::regclass::text)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ('wallet', 'wallet_internal') AND c.relkind = 'r'
        UNION ALL
        SELECT string_agg(format('%s %s', c.oid::regclass,
                   (xpath('/row/v/text()', query_to_xml(format('SELECT last_value || '' '' || is_called AS v FROM %s', c.oid::regclass),
                                                         false, true, '')))[1]::text), E'\n' ORDER BY c.oid::regclass::text)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ('wallet', 'wallet_internal') AND c.relkind = 'S'"
}
before=$(digest "$SRC")
tables=$(qdb "$SRC" -c "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE n.nspname IN ('wallet', 'wallet_internal') AND c.relkind = 'r'")
filled=$(qdb "$SRC" -c "SELECT count(*) FILTER (WHERE (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %s', c.oid::regclass),
                                                                                       false, true, '')))[1]::text::int > 0)
                          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE n.nspname IN ('wallet', 'wallet_internal') AND c.relkind = 'r'")
ok $(( filled * 2 >= tables ? 0 : 1 )) "rows in most of wallet's tables ($filled of $tables)"

"$BIN/pg_dump" -Fd -j 2 -f "$DIR" "$SRC" 2>&1 | sed 's/^/# /'
check "pg_dump -Fd -j 2" "${PIPESTATUS[0]}" 0
# the README's four steps
"$BIN/pg_restore" --exit-on-error --section=pre-data -d "$DST" "$DIR" 2>&1 | sed 's/^/# /'
check "step 1: pg_restore --section=pre-data (CREATE EXTENSION, the app's tables)" "${PIPESTATUS[0]}" 0
"$BIN/pg_restore" --exit-on-error --section=data -n wallet -n wallet_internal -j 1 -d "$DST" "$DIR" 2>&1 | sed 's/^/# /'
check "step 2: wallet's data by one job, in the order of its foreign keys" "${PIPESTATUS[0]}" 0
"$BIN/pg_restore" --exit-on-error --section=data -N wallet -N wallet_internal -j 4 -d "$DST" "$DIR" 2>&1 | sed 's/^/# /'
check "step 3: every other table's data by four jobs" "${PIPESTATUS[0]}" 0
"$BIN/pg_restore" --exit-on-error --section=post-data -j 4 -d "$DST" "$DIR" 2>&1 | sed 's/^/# /'
check "step 4: the post-data section (the app's keys and constraints) by four jobs" "${PIPESTATUS[0]}" 0

after=$(digest "$DST")
if [ "$after" = "$before" ]; then ok 0 "every row of every wallet table and every sequence's position are restored"
else ok 1 "every row of every wallet table and every sequence's position are restored" "$(diff <(echo "$before") <(echo "$after") | head -n 20)"; fi
check "the restored copy works: the ledger verifies, the app's rows and keys are back, a claim sends what was left" \
    "$(qdb "$DST" -c "SELECT (SELECT count(*) FROM wallet.verify_ledger()) || ' ' || (SELECT count(*) FROM public.app_lines)
                          || ' ' || (SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.app_lines'::regclass AND contype = 'f')
                          || ' ' || (SELECT count(*) FROM wallet.claim_pushes('push', 100, '1 minute'))")" "0 5000 1 30"
# README: the database's search_path is not in the dump; set again, the code
# operators resolve in new sessions
psql -X -q -d "$DST" -c "ALTER DATABASE $DST SET search_path = \"\$user\", public, wallet" >/dev/null
check "with the search_path set again as README says, codes compare by their operators" \
    "$(qdb "$DST" -c "SELECT count(*) > 0 FROM wallet.code_bindings a JOIN wallet.code_bindings b USING (code)")" "t"
finish

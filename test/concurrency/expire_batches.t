#!/usr/bin/env bash
# CALL wallet.expire_points_batched commits after each batch: while it waits
# on an account of its last batch (locked by another session), a third
# session already sees the expire entries of the batches before, and the
# entries of each batch carry their own transaction id (xmin).  The function
# wallet.expire_points does everything in the caller's one transaction.
# Needs PGHOST/PGPORT/PGUSER (set by make test).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d /tmp/wallet-expire-batches.XXXXXX)
chmod 755 "$TMP"
DB=expire_batches_$$
. "$ROOT/test/concurrency/codes_lib.sh"
cleanup() { sess_close locker; sess_close runner; dropdb --if-exists "$DB" >/dev/null 2>&1; rm -rf "$TMP"; }
trap cleanup EXIT
echo "1..8"

createdb "$DB" || { echo "Bail out! createdb $DB failed"; exit 1; }
# 50 accounts whose lots expire one millisecond apart, 2 s from now (so each
# batch of 10, soonest due first, is a known set of accounts), and 10 more for
# the function form.
q >/dev/null <<'SQL'
CREATE EXTENSION wallet;
SELECT wallet.create_program(wallet.create_merchant('batches'), 'batch points') AS p \gset
CREATE TABLE t0 AS SELECT clock_timestamp() AS at;
SELECT count(*) FROM generate_series(1, 60) i,
       LATERAL wallet.accrue(wallet.open_account(:p, 'm-' || i), 10, 'k-' || i, 'purchase', NULL,
                             (SELECT at FROM t0) + interval '2 seconds' + i * interval '1 millisecond');
SQL
last=$(q -c "SELECT account_id FROM wallet.accounts WHERE member_ref = 'm-50'")
sleep 2.2

# The locker holds the account due last among the first 50; the runner's
# fifth batch waits for it.
sess_open locker
sess_run locker "BEGIN; SELECT 1 FROM wallet.accounts WHERE account_id = $last FOR UPDATE" >/dev/null
sess_open runner
as_of=$(q -c "SELECT at + interval '2.0505 seconds' FROM t0")   # due: m-1 .. m-50
printf "CALL wallet.expire_points_batched('%s', 10);\n\\\\echo runner-done\n" "$as_of" >&${SESS_FD[runner]}
waiting=1
for i in $(seq 1 300); do
    [ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'CALL wallet.expire_points_batched%' AND wait_event_type = 'Lock'")" = 1 ] && { waiting=0; break; }
    sleep 0.1
done
ok $waiting "the procedure waits on the locked account of its last batch"
is "$(q -c "SELECT count(*) FROM wallet.entries WHERE kind = 'expire'")" 40 \
   "meanwhile another session sees the expire entries of the 4 batches before: they are committed"
is "$(q -c "SELECT count(DISTINCT xmin::text) FROM wallet.entries WHERE kind = 'expire'")" 4 \
   "each committed batch is its own transaction"
sess_run locker "ROLLBACK" >/dev/null
for i in $(seq 1 300); do grep -qx runner-done "$TMP/sess.runner.out" && break; sleep 0.1; done
grep -qx runner-done "$TMP/sess.runner.out" && ! grep -q ERROR "$TMP/sess.runner.out"
ok $? "the procedure finishes once the lock is gone" "$(cat "$TMP/sess.runner.out")"
is "$(q -c "SELECT count(*) || '/' || count(DISTINCT xmin::text) FROM wallet.entries WHERE kind = 'expire'")" 50/5 \
   "50 accounts expired in 5 transactions of 10"
is "$(q -c "SELECT count(*) FROM wallet.accounts WHERE next_event <= (SELECT at + interval '2.0505 seconds' FROM t0)")" 0 \
   "no account is due any more as of that instant"

# The function form: one transaction, whatever the number of accounts.
is "$(q -c "SELECT wallet.expire_points()")" 10 "expire_points expires the 10 other accounts"
is "$(q -c "SELECT count(DISTINCT e.xmin::text) FROM wallet.entries e JOIN wallet.accounts a USING (account_id)
            WHERE e.kind = 'expire' AND a.member_ref IN (SELECT 'm-' || i FROM generate_series(51, 60) i)")" 1 \
   "in the caller's one transaction"
exit $((T_FAILED > 0))

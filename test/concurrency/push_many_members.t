#!/usr/bin/env bash
# One transaction deciding pushes for many members (issue 12), printing TAP.
#
# A member's push decisions (enqueue, consent changes, claims) are serialised
# by the member's lock.  As a transaction advisory lock per member it took
# one entry of the shared lock table per member (max_locks_per_transaction x
# max_connections: 64 x 120 here), and consents recorded for 20,000 members
# in one statement failed with "out of shared memory".  It is now a row lock
# on the member's row, which lives in the row:
#   - 20,000 consents, 20,000 enqueues, and a claim of 10,000 messages of
#     10,000 members, each in one transaction, succeed;
#   - the lock still serialises: while a transaction holds a member (its
#     consent recorded, not committed), another session's enqueue for that
#     member waits (a lock_timeout of 500 ms runs out: 55P03) and a claim
#     passes over the member's messages, claiming the others; once the
#     holder commits, both go through.
#
# Needs PGHOST/PGPORT/PGUSER of a running cluster with wallet installable.
set -uo pipefail

DB=conc_push_many
TMP=$(mktemp -d /tmp/push_many.XXXXXX)
chmod 755 "$TMP"
trap 'rm -rf "$TMP"' EXIT

. "$(dirname "$0")/../lib.sh"
Q_TIMEOUT=300
N=20000

plan 8

timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
if ! timeout 30 createdb "$DB"; then echo "Bail out! createdb $DB failed"; exit 1; fi

M=$(q 2>&1 <<'SQL'
CREATE EXTENSION wallet;
SELECT wallet.create_merchant('many members') AS m \gset
SELECT wallet.set_push_settings(:m, NULL, NULL, 'UTC') \g /dev/null
SELECT :m;
SQL
)
ok $([[ "$M" =~ ^[0-9]+$ ]]; echo $?) "fixture: a merchant" "$M"

out=$(q -c "SELECT count(wallet.record_consent($M, 'b' || i, 'bulk', 'marketing', true, 'import')) FROM generate_series(1, $N) i" 2>&1)
is "$out" "$N" "consents of $N members recorded in one statement (one transaction)"

out=$(q -c "SELECT count(*) FILTER (WHERE e.status = 'queued')
              FROM generate_series(1, $N) i,
                   LATERAL wallet.enqueue_push($M, 'b' || i, 'bulk', 'marketing', '{\"title\": \"hi\"}') e" 2>&1)
is "$out" "$N" "$N messages enqueued for $N members in one transaction, all queued"

out=$(q -c "SELECT count(*) || ' ' || count(DISTINCT member_ref) FROM wallet.claim_pushes('bulk', 10000, '1 minute')" 2>&1)
is "$out" "10000 10000" "one claim of 10,000 messages of 10,000 members"

# ---------------------------------------------------------------- the lock holds
# members b1, b2, b3 with one message each on channel held; the holder
# changes b3's consent and does not commit for 4 s
q -c "SELECT count(wallet.record_consent($M, 'b' || i, 'held', 'marketing', true, 'held'))
        FROM generate_series(1, 3) i" \
  -c "SELECT count(wallet.enqueue_push($M, 'b' || i, 'held', 'marketing', '{}')) FROM generate_series(1, 3) i" >/dev/null
( q -c "BEGIN" -c "SELECT wallet.record_consent($M, 'b3', 'held', 'marketing', true, 'again') IS NOT NULL" \
    -c "SELECT pg_sleep(4)" -c "COMMIT" > "$TMP/holder.out" 2>&1 ) &
holder=$!
sleep 1.5
st=$(sqlstate -d "$DB" -c "SET lock_timeout = '500ms'" \
                       -c "SELECT wallet.enqueue_push($M, 'b3', 'held', 'marketing', '{}')")
is "$st" "55P03" "while another transaction holds a member, an enqueue for the member waits (lock_timeout: 55P03)"
out=$(q -c "SELECT string_agg(member_ref, ' ' ORDER BY member_ref) FROM wallet.claim_pushes('held', 10, '1 minute')" 2>&1)
is "$out" "b1 b2" "and a claim passes over the member's message, claiming the others"
wait "$holder"
out=$(q -c "SELECT string_agg(member_ref, ' ') FROM wallet.claim_pushes('held', 10, '1 minute')" 2>&1)
is "$out" "b3" "once the holder has committed, the member's message is claimed" "$(cat "$TMP/holder.out")"
out=$(q -c "SELECT status FROM wallet.enqueue_push($M, 'b3', 'held', 'marketing', '{}')" 2>&1)
is "$out" "queued" "and an enqueue for the member goes through"

timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
finish

#!/usr/bin/env bash
# No decay of the push queue (issue 12), printing TAP.  No timings are
# asserted (bench/push.sh prints the throughput ratios); what is asserted:
#
# 1. Bounded size while the xmin horizon is held back: a REPEATABLE READ
#    transaction holds its snapshot while ROUNDS rounds each enqueue
#    PER_ROUND messages, claim and acknowledge them all and turn the queue
#    slots.  The queue slots stay at the size they had after two rounds
#    (each turn empties the slot of two rounds before by TRUNCATE), while a
#    plain table written the same way (insert, update, delete) grows with
#    every round: the held horizon is real, and vacuum could not have helped.
# 2. Nothing lost, nothing twice: a deferred message (an hour away) and a
#    message being sent are carried forward by every turn; the deferred one
#    is still queued afterwards, the one being sent is acknowledged after
#    the turns, in the slot it was carried to.
# 3. A turn never waits long: while another session holds a claim
#    transaction open, rotate_push_queue gives up after its 100 ms lock
#    timeout (returns false, the slot untouched); once that session
#    commits, the same call turns the slots.
# 4. Turns racing the queue: 4 enqueuing and 2 claiming sessions run while
#    a third turns the slots as fast as it can; afterwards every message
#    was sent exactly once (push_attempts), none was lost or left behind,
#    and no session got an error.
#
# Env: PUSH_DECAY_ROUNDS (6), PUSH_DECAY_PER_ROUND (1000).
# Needs PGHOST/PGPORT/PGUSER of a running cluster with wallet installable.
set -uo pipefail

DB=conc_push_decay
TMP=$(mktemp -d /tmp/push_decay.XXXXXX)
chmod 755 "$TMP"
trap 'sess_close holder; sess_close claimer; rm -rf "$TMP"' EXIT
. "$(dirname "$0")/../lib.sh"
Q_TIMEOUT=300
ROUNDS=${PUSH_DECAY_ROUNDS:-6}
PER_ROUND=${PUSH_DECAY_PER_ROUND:-1000}

plan 12

timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
if ! timeout 30 createdb "$DB"; then echo "Bail out! createdb $DB failed"; exit 1; fi

setup=$(q 2>&1 <<'SQL'
CREATE EXTENSION wallet;
SELECT wallet.create_merchant('push decay') AS m \gset
SELECT wallet.set_push_settings(:m, NULL, NULL, 'UTC');
SELECT count(wallet.upsert_member(:m, 'd' || i, 'UTC')) FROM generate_series(1, 100) i \g /dev/null
SELECT count(wallet.record_consent(:m, 'd' || i, 'decay', 'marketing', true, 'decay setup')) FROM generate_series(1, 100) i \g /dev/null
SELECT count(wallet.record_consent(:m, 'd' || i, 'decay_race', 'marketing', true, 'decay setup')) FROM generate_series(1, 100) i \g /dev/null
CREATE TABLE plain_queue (id bigserial PRIMARY KEY, member int, payload jsonb, status text, due_at timestamptz);
CREATE INDEX ON plain_queue (status, due_at);
SELECT :m;
SQL
)
M=$(printf '%s\n' "$setup" | tail -n 1)
ok $([[ "$M" =~ ^[0-9]+$ ]]; echo $?) "fixture: merchant, 100 members with consent" "$setup"

slots() { q -c "SELECT pg_total_relation_size('wallet.push_messages_q0') + pg_total_relation_size('wallet.push_messages_q1')
                       + pg_total_relation_size('wallet.push_messages_q2')"; }
plain() { q -c "SELECT pg_total_relation_size('plain_queue')"; }

# a deferred message and one being sent, to be carried by every turn
DEFERRED=$(q -c "SELECT push_id FROM wallet.enqueue_push($M, 'd1', 'decay', 'marketing', '{\"n\": \"deferred\"}', not_before => now() + interval '1 hour')")
q -c "SELECT e.push_id FROM wallet.enqueue_push($M, 'd2', 'decay', 'marketing', '{\"n\": \"sending\"}') e" >/dev/null
SENDING=$(q -c "SELECT push_id FROM wallet.claim_pushes('decay', 1, '1 hour')")

# ---------------------------------------------------------------- 1. bounded size, xmin held
sess_open holder
sess_run holder "BEGIN ISOLATION LEVEL REPEATABLE READ" >/dev/null
sess_run holder "SELECT count(*) FROM wallet.merchants" >/dev/null
HOLDER_XMIN=$(q -c "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_xmin IS NOT NULL
                      AND state = 'idle in transaction'")
sizes=(); plains=(); sent_ok=0
for r in $(seq 1 "$ROUNDS"); do
    q -c "SELECT count(*) FROM generate_series(1, $PER_ROUND) i,
                 wallet.enqueue_push($M, 'd' || (1 + i % 100), 'decay', 'marketing', '{\"round\": $r}') e
           WHERE e.status = 'queued'" >/dev/null
    # claim and acknowledge them all, 250 at a time
    n=0
    for _ in $(seq 1 $((PER_ROUND / 250 + 3))); do
        got=$(q -c "SELECT coalesce(wallet.ack_pushes(coalesce(array_agg(c.push_id), '{}')), 0) FROM wallet.claim_pushes('decay', 250, '1 minute') c")
        n=$((n + got)); [ "$got" = 0 ] && break
    done
    [ "$n" = "$PER_ROUND" ] && sent_ok=$((sent_ok + 1))
    q -c "INSERT INTO plain_queue (member, payload, status, due_at) SELECT i % 100, '{\"round\": $r}', 'queued', now() FROM generate_series(1, $PER_ROUND) i;
          UPDATE plain_queue SET status = 'sending';
          DELETE FROM plain_queue" >/dev/null
    # (a turn gives up while autovacuum holds a slot, as a worker's turn
    # would and then turn at its next call: tried for up to 5 s here)
    turned=f
    for i in $(seq 1 20); do
        turned=$(q -c "SELECT wallet.rotate_push_queue('0')")
        [ "$turned" = t ] && break
        sleep 0.25
    done
    sizes+=("$(slots)"); plains+=("$(plain)")
    echo "# round $r: turned $turned, queue slots ${sizes[-1]} bytes, plain table ${plains[-1]} bytes"
done
is "$HOLDER_XMIN" "1" "a REPEATABLE READ transaction held the xmin horizon back through the rounds"
is "$sent_ok" "$ROUNDS" "every round: $PER_ROUND messages enqueued, claimed and acknowledged"
bound=$(( ${sizes[1]} * 5 / 4 ))
over=""
for r in $(seq 3 "$ROUNDS"); do [ "${sizes[r - 1]}" -le "$bound" ] || over="$over round $r: ${sizes[r - 1]}"; done
ok $([ -z "$over" ]; echo $?) "queue slots bounded under the held horizon: rounds 3-$ROUNDS within 1.25x of round 2 (${sizes[1]} bytes)" "$over"
ok $([ "${plains[-1]}" -ge $(( ${plains[1]} * (ROUNDS - 1) / 2 )) ]; echo $?) \
   "the plain table written alike grows with the rounds (${plains[1]} after round 2, ${plains[-1]} after round $ROUNDS): the horizon was held"
sess_run holder "COMMIT" >/dev/null
sess_close holder

# ---------------------------------------------------------------- 2. carried forward
is "$(q -c "SELECT status || ' ' || (part < 3) FROM wallet.push_messages WHERE push_id = $DEFERRED")" "queued true" \
   "the deferred message was carried by every turn and is still queued"
is "$(q -c "SELECT wallet.ack_push($SENDING, 'carried'); SELECT status || ' ' || part FROM wallet.push_messages WHERE push_id = $SENDING")" \
   "$(printf 't\nsent 3')" "the message being sent was carried too, and is acknowledged after the turns"

# ---------------------------------------------------------------- 3. a turn never waits long
sess_open claimer
q -c "SELECT e.status FROM wallet.enqueue_push($M, 'd3', 'decay', 'marketing', '{}') e" >/dev/null
sess_run claimer "BEGIN" >/dev/null
claimed=$(sess_run claimer "SELECT count(*) FROM wallet.claim_pushes('decay', 1, '1 minute')")
busy=$(q -c "SELECT wallet.rotate_push_queue('0'), clock_timestamp() - now() < interval '5 seconds'")
is "$claimed|$busy" "1|f|t" "while a claim transaction is open, a turn gives up at once (false, well within 5 s)"
sess_run claimer "COMMIT" >/dev/null
sess_close claimer
# (a turn also gives up while autovacuum holds a slot: tried for up to 5 s)
turned=f
for i in $(seq 1 20); do
    turned=$(q -c "SELECT wallet.rotate_push_queue('0')")
    [ "$turned" = t ] && break
    sleep 0.25
done
is "$turned" "t" "once it committed, the turn is made"

# ---------------------------------------------------------------- 4. turns racing the queue
cat > "$TMP/enqueue.sql" <<SQL
\set m random(1, 100)
SELECT status FROM wallet.enqueue_push($M, 'd' || :m, 'decay_race', 'marketing', '{}');
SQL
cat > "$TMP/claim.sql" <<'SQL'
SELECT wallet.ack_pushes(coalesce(array_agg(c.push_id), '{}')) FROM wallet.claim_pushes('decay_race', 20, '1 minute') c;
SQL
cat > "$TMP/rotate.sql" <<'SQL'
SELECT wallet.rotate_push_queue('0');
SQL
pgbench -n -c 4 -t $((PER_ROUND / 2)) -f "$TMP/enqueue.sql" "$DB" > "$TMP/enq.out" 2>&1 & e=$!
pgbench -n -c 2 -T 5 -f "$TMP/claim.sql" "$DB" > "$TMP/claim.out" 2>&1 & c=$!
pgbench -n -c 1 -T 5 -f "$TMP/rotate.sql" "$DB" > "$TMP/rotate.out" 2>&1 & t=$!
wait $e; st_e=$?; wait $c; st_c=$?; wait $t; st_t=$?
ok $([ $st_e = 0 ] && [ $st_c = 0 ] && [ $st_t = 0 ] && ! grep -qiE 'error|aborted' "$TMP/enq.out" "$TMP/claim.out" "$TMP/rotate.out"; echo $?) \
   "4 enqueuers, 2 claimers and a session turning the slots ran without an error" \
   "$(grep -iE 'error|aborted' "$TMP/enq.out" "$TMP/claim.out" "$TMP/rotate.out" | head -n 5)"
for _ in $(seq 1 50); do
    got=$(q -c "SELECT coalesce(wallet.ack_pushes(coalesce(array_agg(c.push_id), '{}')), 0) FROM wallet.claim_pushes('decay_race', 500, '1 minute') c")
    [ "$got" = 0 ] && break
done
is "$(q -c "SELECT count(*) || ' ' || count(*) FILTER (WHERE m.status = 'sent' AND m.part = 3)
                   || ' ' || (SELECT count(*) FROM wallet.push_attempts a JOIN wallet.push_messages x USING (push_id)
                               WHERE x.channel = 'decay_race' AND a.outcome = 'sent')
                   || ' ' || (SELECT count(*) FROM (SELECT a.push_id FROM wallet.push_attempts a JOIN wallet.push_messages x USING (push_id)
                                                     WHERE x.channel = 'decay_race' GROUP BY 1 HAVING count(*) > 1) z)
              FROM wallet.push_messages m WHERE m.channel = 'decay_race'")" \
   "$((PER_ROUND * 2)) $((PER_ROUND * 2)) $((PER_ROUND * 2)) 0" \
   "every message enqueued meanwhile was sent exactly once: none lost or left behind by the turns"
is "$(q -c "SELECT count(DISTINCT push_id) || ' ' || count(*) FROM wallet.push_messages")" \
   "$(q -c "SELECT count(*) || ' ' || count(*) FROM wallet.push_messages")" "no message is in two partitions"

timeout 30 dropdb "$DB" >/dev/null 2>&1
finish

#!/usr/bin/env bash
# Benchmark of the push queue (issue 12; not a test): transactions per second,
# each with CLIENTS sessions for SECONDS seconds, ratios to baselines measured
# in the same run.  Starts its own throwaway cluster.
#   insert      baseline: a plain INSERT of a message into a table with one index
#   enqueue     wallet.enqueue_push with its consent, quiet-hour, cap and
#               dedup checks (a marketing topic, a cap that is never reached,
#               quiet hours that are not now, a new dedup key per call)
#   delete 1    baseline queue: DELETE ... WHERE id IN (SELECT ... FOR UPDATE
#               SKIP LOCKED LIMIT 1) RETURNING
#   claim 1     wallet.claim_pushes of 1 message (with the re-check of
#               consent, quiet hours, caps and expiry) and its wallet.ack_push,
#               in one statement
#   delete 100, claim 100: the same, 100 messages per transaction (acknowledged
#               together by wallet.ack_pushes)
#   claim N token: the same acknowledged with the claim token (the attempts
#               claim_pushes returned), as README tells workers to
# The wallet runs log in as bench_app (wallet_app, acting for the merchant).
# Then the decay run: DECAY_SECONDS (60) of 4 enqueuers and 4 claimers at
# once, while a REPEATABLE READ transaction holds back the xmin horizon for
# the middle half, and a worker turns the queue slots (wallet.rotate_push_queue
# every second, when the current slot is ROTATE_AGE old); it prints the claim
# throughput of the first and the last 10 s and the size of the queue slots
# and of the finished messages (with their indexes) before and after.
#
# The floors: the same rows written by one plain SQL statement, with no
# check at all (run as the superuser on the wallet's own tables): what any
# implementation of these requirements costs at least.
#   enqueue floor   the member's row locked, the message and its permanent
#                   dedup key inserted
#   two rows        the baseline's row and a key in a table of one index,
#                   nothing else (as the baseline runs: simple protocol)
#   claim floor     the due messages moved into the finished partition with
#                   their delivery records (not even the lease is written: a
#                   bound below the cost of a claim and its ack)
#   leased floor    the same with the lease: the due messages and their
#                   members locked and the messages leased (one statement),
#                   then moved as above (a second), in one PL/pgSQL call with
#                   generic plans (no check, no member state read)
#
# Members: MEMBERS (150,000: the claim runs take up to a third of a million messages) with the merchant's cap of CAP_COUNT (3) a
# CAP_PERIOD (week), the issue's 2-3 a week; the claim runs' queue holds
# QUEUE_PER_MEMBER (3) due messages each, so that every claim passes its cap
# check, and the enqueue run has a channel of its own whose cap it reaches
# seldom; the decay run's channel has no cap (its measure is the queue's
# dead tuples, not messages deferred by a cap).  MEMBERS=1000
# CAP_COUNT=1000000 QUEUE_PER_MEMBER=300 is the heavy case: every decision
# counts a backlog of hundreds of messages.
#
#   bench/push.sh [SECONDS=5] [CLIENTS=8]
#   env: MEMBERS=150000 CAP_PERIOD=week CAP_COUNT=3 QUEUE_PER_MEMBER=3 DECAY_SECONDS=60 ROTATE_AGE=5
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-5}
CLIENTS=${2:-8}
MEMBERS=${MEMBERS:-150000}
CAP_PERIOD=${CAP_PERIOD:-week}
CAP_COUNT=${CAP_COUNT:-3}
QUEUE_PER_MEMBER=${QUEUE_PER_MEMBER:-3}
QUEUE=$((MEMBERS * QUEUE_PER_MEMBER))
# the baseline queue holds more than its runs can take (a queue running dry
# would be measured as empty statements)
PLAIN_QUEUE=${PLAIN_QUEUE:-2000000}
DECAY_SECONDS=${DECAY_SECONDS:-60}
ROTATE_AGE=${ROTATE_AGE:-5}
. test/cluster.sh
. test/root_key.sh

TMPD=$(mktemp -d /tmp/wallet-bench-push.XXXXXX)
chmod 755 "$TMPD"
trap 'cluster_stop "$TMPD/data"; rm -rf "$TMPD"' EXIT
cluster_install >/dev/null
root_key_random "$TMPD/root.key"
cluster_start "$TMPD/data" "${BENCH_PORT:-55498}" -c shared_preload_libraries=wallet \
    -c wallet.root_key_file="$TMPD/root.key" -c synchronous_commit=off
export PGHOST="$TMPD/data" PGPORT="${BENCH_PORT:-55498}" PGUSER=postgres
psql -qX -c "CREATE DATABASE bench" >/dev/null

psql -qX -d bench -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION wallet;
SELECT wallet.create_merchant('bench');
-- quiet hours twelve hours away from now (checked, never hit); the caps
SELECT wallet.set_push_settings(1, (now() + interval '12 hours')::time, (now() + interval '13 hours')::time, 'UTC');
SELECT wallet.set_push_cap(1, c, 'marketing', '$CAP_PERIOD', $CAP_COUNT) FROM unnest(ARRAY['bench', 'enqueue']) c;
SELECT count(wallet.upsert_member(1, 'm' || i, 'Europe/Zurich')) FROM generate_series(1, $MEMBERS) i;
SELECT count(wallet.record_consent(1, 'm' || i, c, 'marketing', true, 'bench'))
  FROM generate_series(1, $MEMBERS) i, unnest(ARRAY['bench', 'enqueue']) c;
-- the claim runs' queue: due marketing messages, written directly (setup, not measured)
INSERT INTO wallet.push_messages (merchant_id, member_id, channel, topic, cap_group, service, payload, priority, not_before,
                                  outcome, status, due_at, slot_at, part)
SELECT 1, 1 + i % $MEMBERS, 'bench', 'marketing', 'marketing', false, '{"title": "hello"}', 0, now(), 'queued', 'queued', now(), now(),
       wallet_internal.push_current_slot()
  FROM generate_series(1, $QUEUE) i;
-- the baselines: a table with one index; a plain queue of as many rows
CREATE TABLE plain (id bigserial PRIMARY KEY, member_ref text, channel text, topic text, payload jsonb, created_at timestamptz DEFAULT now());
CREATE TABLE plain_queue (id bigserial PRIMARY KEY, member_ref text, payload jsonb, due_at timestamptz);
INSERT INTO plain_queue (member_ref, payload, due_at) SELECT 'm' || (1 + i % $MEMBERS), '{"title": "hello"}', now() FROM generate_series(1, $PLAIN_QUEUE) i;
CREATE SEQUENCE s_enqueue;
CREATE ROLE bench_app LOGIN;
GRANT wallet_app TO bench_app;
SELECT wallet.grant_merchant(1, 'bench_app');
GRANT USAGE ON SEQUENCE s_enqueue TO bench_app;
VACUUM ANALYZE;
SQL

cat >"$TMPD/insert.sql" <<SQL
\set m random(1, $MEMBERS)
INSERT INTO plain (member_ref, channel, topic, payload) VALUES ('m' || :m, 'bench', 'marketing', '{"title": "hello"}');
SQL
cat >"$TMPD/enqueue.sql" <<SQL
\set m random(1, $MEMBERS)
SELECT status FROM wallet.enqueue_push(1, 'm' || :m, 'enqueue', 'marketing', '{"title": "hello"}', dedup_key => 'k' || nextval('s_enqueue'));
SQL
cat >"$TMPD/enqueue_floor.sql" <<SQL
\set m random(1, $MEMBERS)
WITH m AS (SELECT m.member_id, nextval('wallet.push_messages_push_id_seq') AS push_id FROM wallet.members m
            WHERE m.merchant_id = 1 AND m.member_ref = 'm' || :m FOR NO KEY UPDATE),
     d AS (INSERT INTO wallet.push_dedup (merchant_id, dedup_key, push_id) SELECT 1, 'f' || m.push_id, m.push_id FROM m)
INSERT INTO wallet.push_messages (push_id, merchant_id, member_id, channel, topic, cap_group, service, payload, dedup_key, priority,
                                  not_before, outcome, status, due_at, slot_at, part) OVERRIDING SYSTEM VALUE
SELECT m.push_id, 1, m.member_id, 'floor', 'marketing', 'marketing', false, '{"title": "hello"}', 'f' || m.push_id, 0, now(),
       'queued', 'queued', now(), now(), (SELECT (q.last_value % 4)::smallint FROM wallet_internal.push_queue_slot q) FROM m;
SQL
for n in 1 100; do
    cat >"$TMPD/delete$n.sql" <<SQL
DELETE FROM plain_queue WHERE id IN (SELECT id FROM plain_queue WHERE due_at <= now() ORDER BY id LIMIT $n FOR UPDATE SKIP LOCKED) RETURNING *;
SQL
    # the floor: the due messages moved into the finished partition as sent
    # with their delivery records, in one statement (the lease not written)
    cat >"$TMPD/claim_floor$n.sql" <<SQL
WITH d AS (DELETE FROM wallet.push_messages x
            WHERE x.part < 3 AND x.push_id IN (SELECT y.push_id FROM wallet.push_messages y
                                                WHERE y.part < 3 AND y.channel = 'floor' AND y.status IN ('queued', 'sending')
                                                  AND y.due_at <= now() ORDER BY y.priority DESC, y.due_at LIMIT $n FOR UPDATE SKIP LOCKED)
           RETURNING x.*),
     r AS (INSERT INTO wallet.push_attempts (merchant_id, member_id, push_id, claimed_at, outcome, provider_message_id)
           SELECT d.merchant_id, d.member_id, d.push_id, now(), 'sent', 'provider' FROM d)
INSERT INTO wallet.push_messages_done OVERRIDING SYSTEM VALUE
SELECT d.push_id, d.merchant_id, d.member_id, d.channel, d.topic, d.cap_group, d.service, d.payload, d.campaign_id, d.dedup_key,
       d.priority, d.not_before, d.expires_at, d.created_at, d.outcome, d.outcome_reason, 'sent', NULL, NULL, d.slot_at,
       d.attempts + 1, now(), now(), 'provider', d.last_error, now(), 3 FROM d;
SQL
    if [ "$n" = 1 ]; then
        cat >"$TMPD/claim$n.sql" <<SQL
SELECT wallet.ack_push(c.push_id, 'provider') FROM wallet.claim_pushes('bench', 1, '1 minute') c;
SQL
        cat >"$TMPD/token$n.sql" <<SQL
SELECT wallet.ack_push(c.push_id, 'provider', c.attempts) FROM wallet.claim_pushes('bench', 1, '1 minute') c;
SQL
    else
        cat >"$TMPD/claim$n.sql" <<SQL
SELECT wallet.ack_pushes(coalesce(array_agg(c.push_id), '{}')) FROM wallet.claim_pushes('bench', $n, '1 minute') c;
SQL
        cat >"$TMPD/token$n.sql" <<SQL
SELECT wallet.ack_pushes(coalesce(array_agg(c.push_id), '{}'), NULL, coalesce(array_agg(c.attempts), '{}'))
  FROM wallet.claim_pushes('bench', $n, '1 minute') c;
SQL
    fi
done

run() {   # run SCRIPT [pgbench args]
    local script=$1; shift
    pgbench -n -c "$CLIENTS" -j 2 -T "$SECONDS_EACH" "$@" -f "$TMPD/$script.sql" bench 2>&1 |
        sed -n -E 's/^tps = ([0-9.]+).*/\1/p'
}
ratio() { echo "$1 / $2" | bc -l; }
left() { psql -qXAt -d bench -c "SELECT format('%s left in the plain queue, %s in the wallet queue', (SELECT count(*) FROM plain_queue),
                                             count(*)) FROM wallet.push_messages WHERE part < 3 AND channel = '$1'"; }
declare -A base
base[insert]=$(run insert)
t=$(run enqueue -U bench_app)
printf '%-15s %10s tps\n' insert "${base[insert]}"
printf '%-15s %10s tps   %5.2fx insert   (target >= 0.8x)\n' enqueue "$t" "$(ratio "$t" "${base[insert]}")"
for n in 1 100; do
    base[$n]=$(run "delete$n")
    t=$(run "claim$n" -U bench_app)
    printf '%-15s %10s tps   (%s messages per transaction)\n' "delete $n" "${base[$n]}" "$n"
    printf '%-15s %10s tps   %5.2fx delete %s   (target >= %s)\n' "claim $n" "$t" "$(ratio "$t" "${base[$n]}")" "$n" \
        "$([ "$n" = 1 ] && echo 0.8x || echo 1.0x)"
    t2=$(run "token$n" -U bench_app)
    printf '%-15s %10s tps   %5.2fx delete %s   (the same acknowledged with the claim token, as workers should: %5.2fx of by id)\n' \
        "claim $n token" "$t2" "$(ratio "$t2" "${base[$n]}")" "$n" "$(ratio "$t2" "$t")"
    printf '                (%s)\n' "$(left bench)"
done
psql -qXAt -d bench -c "SELECT format('after the runs: %s messages sent, %s queued; delivery records agree: %s',
                                      count(*) FILTER (WHERE status = 'sent'), count(*) FILTER (WHERE status = 'queued'),
                                      count(*) FILTER (WHERE status = 'sent') = (SELECT count(*) FROM wallet.push_attempts WHERE outcome = 'sent'))
                          FROM wallet.push_messages"

# ---------------------------------------------------------------- decay run
# Its own channel (the backlog of the runs above stays where it is: a slot
# holding more than 10,000 live messages is passed over by the turns).
size() {
    psql -qXAt -d bench -c "SELECT pg_total_relation_size('wallet.push_messages_q0') + pg_total_relation_size('wallet.push_messages_q1')
                                   + pg_total_relation_size('wallet.push_messages_q2')"
}
mb() { echo "$1" | awk '{ printf "%.1f MB", $1 / 1048576 }'; }
psql -qXAt -d bench -c "SELECT count(wallet.record_consent(1, 'm' || i, 'decay', 'marketing', true, 'bench')) FROM generate_series(1, $MEMBERS) i" >/dev/null
done_before=$(psql -qXAt -d bench -c "SELECT pg_total_relation_size('wallet.push_messages_done')")
before=$(size)
cat >"$TMPD/decay_enqueue.sql" <<SQL
\set m random(1, $MEMBERS)
SELECT status FROM wallet.enqueue_push(1, 'm' || :m, 'decay', 'marketing', '{"title": "hello"}', dedup_key => 'd' || nextval('s_enqueue'));
SQL
cat >"$TMPD/decay_claim.sql" <<'SQL'
SELECT wallet.ack_pushes(coalesce(array_agg(c.push_id), '{}')) FROM wallet.claim_pushes('decay', 10, '1 minute') c;
SQL
hold=$((DECAY_SECONDS / 2))
t0=$(psql -qXAt -d bench -c "SELECT now()")
( sleep $((DECAY_SECONDS / 4)); psql -qX -d bench -c "BEGIN ISOLATION LEVEL REPEATABLE READ" -c "SELECT count(*) FROM wallet.merchants" \
      -c "SELECT pg_sleep($hold)" -c "COMMIT" >/dev/null ) &
holder=$!
# a worker turning the slots (what a sending worker or the maintenance does),
# noting the size of the queue slots every second
( end=$((SECONDS + DECAY_SECONDS)); turns=0; max=0
  while [ $SECONDS -lt $end ]; do
      [ "$(psql -qXAt -d bench -U bench_app -c "SELECT wallet.rotate_push_queue('$ROTATE_AGE seconds')")" = t ] && turns=$((turns + 1))
      s=$(size); [ "$s" -gt "$max" ] && max=$s
      sleep 1
  done; echo "$turns $max" > "$TMPD/turns" ) &
rotator=$!
pgbench -n -c 4 -j 2 -T "$DECAY_SECONDS" -P 10 -U bench_app -f "$TMPD/decay_enqueue.sql" bench > "$TMPD/decay_enqueue.out" 2>&1 &
enq=$!
pgbench -n -c 4 -j 2 -T "$DECAY_SECONDS" -P 10 -U bench_app -f "$TMPD/decay_claim.sql" bench > "$TMPD/decay_claim.out" 2>&1
wait "$enq" "$holder" "$rotator"
progress() { sed -n -E 's/^progress: [0-9.]+ s, ([0-9.]+) tps.*/\1/p' "$1"; }
# messages sent per 10 s, from the delivery records
sent=$(psql -qXAt -d bench -c "SELECT string_agg(coalesce(n, 0)::text, ' ' ORDER BY b)
                                 FROM generate_series(0, $DECAY_SECONDS / 10 - 1) b
                                 LEFT JOIN (SELECT floor(extract(epoch FROM a.at - '$t0') / 10)::int AS b, count(*) AS n
                                              FROM wallet.push_attempts a JOIN wallet.push_messages m USING (push_id)
                                             WHERE m.channel = 'decay' AND a.outcome = 'sent' GROUP BY 1) x USING (b)")
first=$(echo "$sent" | awk '{ print $1 }'); last=$(echo "$sent" | awk '{ print $NF }')
efirst=$(progress "$TMPD/decay_enqueue.out" | head -n 1); elast=$(progress "$TMPD/decay_enqueue.out" | tail -n 1)
read -r turns max < "$TMPD/turns"
printf 'decay run (%s s, 4 enqueuers + 4 claimers of 10, xmin held %s s from %s s, slots turned every %s s: %s turns)\n' \
    "$DECAY_SECONDS" "$hold" "$((DECAY_SECONDS / 4))" "$ROTATE_AGE" "$turns"
printf '  messages sent per 10 s: %s   last/first %5.2fx (target >= 0.9x)\n' "$sent" "$(ratio "${last:-0}" "${first:-1}")"
printf '  enqueue tps per 10 s:   %s  last/first %5.2fx\n' "$(progress "$TMPD/decay_enqueue.out" | tr '\n' ' ')" "$(ratio "${elast:-0}" "${efirst:-1}")"
printf '  claim tps per 10 s:     %s\n' "$(progress "$TMPD/decay_claim.out" | tr '\n' ' ')"
printf '  queue slots with indexes: %s before (the backlog of the runs above), at most %s during, %s after;\n' \
    "$(mb "$before")" "$(mb "$max")" "$(mb "$(size)")"
printf '  finished messages (history, insert-only): %s -> %s\n' "$(mb "$done_before")" \
    "$(mb "$(psql -qXAt -d bench -c "SELECT pg_total_relation_size('wallet.push_messages_done')")")"

# ---------------------------------------------------------------- floors
# Last, so that their rows disturb no other run: the same writes as enqueue
# and claim+ack with no check, as prepared statements (-M prepared: no parse
# or plan per call, as the wallet's kept plans), on a queue of their own.
psql -qX -d bench -v ON_ERROR_STOP=1 >/dev/null <<SQL
INSERT INTO wallet.push_messages (merchant_id, member_id, channel, topic, cap_group, service, payload, priority, not_before,
                                  outcome, status, due_at, slot_at, part)
SELECT 1, 1 + i % $MEMBERS, 'floor', 'marketing', 'marketing', false, '{"title": "hello"}', 0, now(), 'queued', 'queued', now(), now(),
       wallet_internal.push_current_slot()
  FROM generate_series(1, $PLAIN_QUEUE) i;
VACUUM ANALYZE wallet.push_messages;
-- two bare rows: the baseline's table and a key table of one index
CREATE TABLE plain_bare (LIKE plain INCLUDING ALL);
CREATE TABLE bare_keys (merchant_id bigint, k text, PRIMARY KEY (merchant_id, k));
-- the leased floor: the writes of a claim (messages and members locked,
-- messages leased) and of its acknowledgement, in two statements
CREATE FUNCTION leased_floor(n int) RETURNS int LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET jit = off AS \$\$
DECLARE
    _ids bigint[];
BEGIN
    WITH c AS (SELECT y.push_id, y.member_id, y.part FROM wallet.push_messages y
                WHERE y.part < 3 AND y.channel = 'floor' AND y.status IN ('queued', 'sending') AND y.due_at <= now()
                ORDER BY y.priority DESC, y.due_at LIMIT n FOR UPDATE SKIP LOCKED),
         m AS (SELECT w.member_id FROM wallet.members w WHERE w.member_id IN (SELECT c.member_id FROM c)
                 FOR NO KEY UPDATE OF w SKIP LOCKED),
         u AS (UPDATE wallet.push_messages x
                  SET status = 'sending', due_at = now() + interval '1 minute', slot_at = now(), claimed_at = now(),
                      attempts = x.attempts + 1
                WHERE x.part < 3 AND x.push_id = ANY (ARRAY(SELECT c.push_id FROM c WHERE c.member_id IN (SELECT m.member_id FROM m)))
               RETURNING x.push_id)
    SELECT array_agg(u.push_id) INTO _ids FROM u;
    WITH d AS (DELETE FROM wallet.push_messages x WHERE x.part < 3 AND x.push_id = ANY (_ids) RETURNING x.*),
         r AS (INSERT INTO wallet.push_attempts (merchant_id, member_id, push_id, claimed_at, outcome, provider_message_id)
               SELECT d.merchant_id, d.member_id, d.push_id, d.claimed_at, 'sent', 'provider' FROM d)
    INSERT INTO wallet.push_messages_done OVERRIDING SYSTEM VALUE
    SELECT d.push_id, d.merchant_id, d.member_id, d.channel, d.topic, d.cap_group, d.service, d.payload, d.campaign_id, d.dedup_key,
           d.priority, d.not_before, d.expires_at, d.created_at, d.outcome, d.outcome_reason, 'sent', NULL, NULL, d.slot_at,
           d.attempts, d.claimed_at, now(), 'provider', d.last_error, now(), 3 FROM d;
    RETURN cardinality(_ids);
END
\$\$;
SQL
cat >"$TMPD/two_rows.sql" <<SQL
\set m random(1, $MEMBERS)
WITH d AS (INSERT INTO bare_keys VALUES (1, 'k' || nextval('s_enqueue')) RETURNING 1)
INSERT INTO plain_bare (member_ref, channel, topic, payload) SELECT 'm' || :m, 'bench', 'marketing', '{"title": "hello"}' FROM d;
SQL
f=$(run enqueue_floor -M prepared)
t=$(run two_rows)
echo "floors: the writes alone (no check), prepared, against the baselines above"
printf '%-15s %10s tps   %5.2fx insert   (the member locked, the message and its dedup key written)\n' \
    "enqueue floor" "$f" "$(ratio "$f" "${base[insert]}")"
printf '%-15s %10s tps   %5.2fx insert   (two bare rows: the baseline'"'"'s and a key of one index, as the baseline is run)\n' \
    "two rows" "$t" "$(ratio "$t" "${base[insert]}")"
for n in 1 100; do
    f=$(run "claim_floor$n" -M prepared)
    printf '%-15s %10s tps   %5.2fx delete %s   (moved to the finished partition with delivery records; no lease written)\n' \
        "claim floor $n" "$f" "$(ratio "$f" "${base[$n]}")" "$n"
    echo "SELECT leased_floor($n);" > "$TMPD/leased_floor$n.sql"
    f=$(run "leased_floor$n" -M prepared)
    printf '%-15s %10s tps   %5.2fx delete %s   (the same after the lease: locked and leased, then moved; two statements)\n' \
        "leased floor $n" "$f" "$(ratio "$f" "${base[$n]}")" "$n"
done
printf '                (%s)\n' "$(left floor)"

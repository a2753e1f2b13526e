#!/usr/bin/env bash
# Concurrency test of the points ledger (issue 4), printing TAP.
#
# 1. The race: 32 pgbench clients for 20 s call race_step(), a PL/pgSQL driver
#    that runs a random accrue / redeem / hold / capture / release / reverse or
#    a retry of an earlier call on 20 accounts.  The arguments of every keyed
#    call are a function of its key, so a key that comes round again (by chance
#    in another session at the same moment, or as a deliberate retry) is always
#    an identical retry, which must return the original entry.  Expected
#    refusals (insufficient points, hold not open or lapsed, already reversed) are caught
#    in the driver; any other error (deadlock, unique violation, WL002, ...) is
#    recorded and fails the test.  A quarter of the holds lapse after 2 s and
#    the expiry job runs now and then during the race, so lapsed holds are
#    settled concurrently with the postings.  Afterwards the journal, the
#    stored ledgers and the balances must agree.
# 2. Bursts behind an advisory-lock barrier: every session blocks on
#    pg_advisory_lock_shared while the controller holds the lock exclusively;
#    the controller waits until all are queued in pg_locks, then lets them go
#    at the same instant:
#    - 20 sessions send the same idempotency key: exactly one entry is posted
#      and all 20 get it back;
#    - 20 sessions redeem 10 points each from an account holding 100: exactly
#      10 succeed (no double spend), the others get WL203, balance 0;
#    - 10 sessions capture a hold while 10 others release it: exactly one of
#      the two wins, the losers get WL207;
#    - 20 sessions open the account of one new member: one account.
#
# Needs PGHOST/PGPORT/PGUSER of a running cluster with wallet installable.
set -uo pipefail

DB=conc_ledger
CLIENTS=32
SECONDS_RACE=20
ACCOUNTS=20
TMP=$(mktemp -d /tmp/ledger_race.XXXXXX)
chmod 755 "$TMP"
trap 'rm -rf "$TMP"' EXIT

. "$(dirname "$0")/../lib.sh"
Q_TIMEOUT=60

plan 31

timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
if ! timeout 30 createdb "$DB"; then echo "Bail out! createdb $DB failed"; exit 1; fi

# ---------------------------------------------------------------------------
# Fixture and driver
# ---------------------------------------------------------------------------
setup_out=$(q 2>&1 <<SQL
CREATE EXTENSION wallet;
SELECT wallet.create_merchant('race merchant') \gset m_
SELECT wallet.create_program(:m_create_merchant, 'race points') AS program_id \gset
CREATE TABLE race_accounts (n int PRIMARY KEY, account_id bigint NOT NULL);
INSERT INTO race_accounts SELECT i, wallet.open_account(:program_id, 'member-' || i) FROM generate_series(0, $ACCOUNTS - 1) i;
SELECT count(*) FROM race_accounts, LATERAL wallet.accrue(account_id, 1000, 'seed-' || n, 'seed') \g /dev/null

-- Calls that succeeded, by (op, k): a repeated call must return the same entry.
CREATE TABLE race_posted (id bigserial, op text, k bigint, entry_id bigint NOT NULL, account_id bigint, kind text,
                          PRIMARY KEY (op, k));
CREATE INDEX ON race_posted (id);
CREATE INDEX ON race_posted (account_id, entry_id);
CREATE TABLE race_holds (hold_id bigint PRIMARY KEY, account_id bigint NOT NULL);
CREATE INDEX ON race_holds (account_id, hold_id);
CREATE TABLE race_log (op text, outcome text);
CREATE TABLE race_unexpected (op text, k bigint, sqlstate text, message text, at timestamptz DEFAULT clock_timestamp());

-- One call; every argument is a function of (op, k), so equal (op, k) means an identical call.
CREATE FUNCTION race_call(op text, k bigint) RETURNS wallet.entries LANGUAGE plpgsql AS \$\$
DECLARE
    e wallet.entries;
    acct bigint;
    held bigint;
BEGIN
    CASE op
    WHEN 'accrue' THEN
        acct := (SELECT account_id FROM race_accounts WHERE n = k % $ACCOUNTS);
        e := wallet.accrue(acct, 1 + (k * 7919) % 100, 'acc-' || k, 'race');
    WHEN 'redeem' THEN
        acct := (SELECT account_id FROM race_accounts WHERE n = (k / 7) % $ACCOUNTS);
        e := wallet.redeem(acct, 1 + (k * 104729) % 150, 'red-' || k, 'race');
    WHEN 'hold' THEN
        acct := (SELECT account_id FROM race_accounts WHERE n = (k / 3) % $ACCOUNTS);
        -- every fourth hold lapses after 2 s, so lapsed holds are settled while the race goes on
        e := wallet.hold(acct, 1 + (k * 31) % 80, 'hold-' || k,
                         CASE WHEN k % 4 = 0 THEN interval '2 seconds' ELSE interval '1 hour' END, 'race');
    WHEN 'capture_full' THEN
        e := wallet.capture(k);
    WHEN 'capture_part' THEN
        held := (SELECT -amount FROM wallet.entries WHERE entry_id = k);
        e := wallet.capture(k, 1 + k % held);
    WHEN 'release' THEN
        e := wallet.release(k);
    WHEN 'reverse' THEN
        e := wallet.reverse(k, 'rev-' || k, 'race');
    WHEN 'reverse2' THEN   -- a second, different reversal of the same entry
        e := wallet.reverse(k, 'rev2-' || k, 'race');
    END CASE;
    RETURN e;
END \$\$;

CREATE FUNCTION race_step() RETURNS text LANGUAGE plpgsql AS \$\$
DECLARE
    r float8 := random();
    acct bigint;
    v_op text;
    v_k bigint;
    e wallet.entries;
    prev bigint;
BEGIN
    acct := (SELECT account_id FROM race_accounts WHERE n = (SELECT floor(random() * $ACCOUNTS)::int));
    IF r < 0.01 THEN
        -- the expiry job runs now and then, concurrently with the postings
        BEGIN
            PERFORM wallet.expire_points();
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO race_unexpected (op, k, sqlstate, message) VALUES ('expire_points', NULL, SQLSTATE, SQLERRM);
            RETURN 'unexpected';
        END;
        INSERT INTO race_log VALUES ('expire_points', 'ran');
        RETURN 'ran';
    ELSIF r < 0.20 THEN
        -- close a recent hold of the account
        SELECT hold_id INTO v_k FROM race_holds WHERE account_id = acct ORDER BY hold_id DESC LIMIT 1 OFFSET floor(random() * 3)::int;
        v_op := (ARRAY['capture_full', 'capture_part', 'release'])[1 + floor(random() * 3)::int];
    ELSIF r < 0.30 THEN
        -- reverse a recent accrual or redemption of the account
        SELECT entry_id INTO v_k FROM race_posted WHERE account_id = acct AND kind IN ('accrue', 'redeem')
         ORDER BY entry_id DESC LIMIT 1 OFFSET floor(random() * 10)::int;
        v_op := CASE WHEN random() < 0.8 THEN 'reverse' ELSE 'reverse2' END;
    ELSIF r < 0.40 THEN
        -- deliberate retry of a call that succeeded
        SELECT p.op, p.k INTO v_op, v_k FROM race_posted p
         WHERE id >= floor(random() * (SELECT max(id) FROM race_posted)) ORDER BY id LIMIT 1;
    END IF;
    IF v_k IS NULL THEN
        -- new keyed call; keys come round again by chance too
        v_op := (ARRAY['accrue', 'accrue', 'redeem', 'redeem', 'hold'])[1 + floor(random() * 5)::int];
        v_k := floor(random() * 20000)::bigint;
    END IF;

    BEGIN
        e := race_call(v_op, v_k);
    EXCEPTION WHEN OTHERS THEN
        IF SQLSTATE IN ('WL203', 'WL207', 'WL208', 'WL210') THEN
            INSERT INTO race_log VALUES (v_op, SQLSTATE);
            RETURN SQLSTATE;
        END IF;
        INSERT INTO race_unexpected (op, k, sqlstate, message) VALUES (v_op, v_k, SQLSTATE, SQLERRM);
        RETURN 'unexpected';
    END;

    IF e.entry_id IS NULL THEN
        INSERT INTO race_unexpected (op, k, sqlstate, message) VALUES (v_op, v_k, 'NULL', 'the call returned no entry');
        RETURN 'unexpected';
    END IF;
    IF e.balance_after < 0 THEN
        INSERT INTO race_unexpected (op, k, sqlstate, message) VALUES (v_op, v_k, 'NEG', 'balance_after ' || e.balance_after);
    END IF;
    SELECT entry_id INTO prev FROM race_posted p WHERE p.op = v_op AND p.k = v_k;
    IF FOUND THEN
        IF prev <> e.entry_id THEN
            INSERT INTO race_unexpected (op, k, sqlstate, message)
            VALUES (v_op, v_k, 'RETRY', format('a repeated call returned entry %s, the first one returned %s', e.entry_id, prev));
        END IF;
        INSERT INTO race_log VALUES (v_op, 'repeat');
        RETURN 'repeat';
    END IF;
    INSERT INTO race_posted (op, k, entry_id, account_id, kind) VALUES (v_op, v_k, e.entry_id, e.account_id, e.kind)
        ON CONFLICT DO NOTHING;
    IF e.kind = 'hold' THEN
        INSERT INTO race_holds VALUES (e.entry_id, e.account_id) ON CONFLICT DO NOTHING;
    END IF;
    INSERT INTO race_log VALUES (v_op, 'posted');
    RETURN 'posted';
END \$\$;
SQL
)
st=$?
ok $st "fixture: wallet installed, 20 accounts seeded with 1000 points, driver created" "$setup_out"
[ $st -eq 0 ] || { echo "Bail out! fixture failed"; exit 1; }

# ---------------------------------------------------------------------------
# 1. The race
# ---------------------------------------------------------------------------
log_offset=$(q -c "SELECT (pg_stat_file('server.log')).size" 2>/dev/null || echo 0)
echo 'SELECT race_step();' > "$TMP/race.sql"
timeout $((SECONDS_RACE + 60)) pgbench -n -c $CLIENTS -j 2 -T $SECONDS_RACE -f "$TMP/race.sql" "$DB" > "$TMP/pgbench.out" 2>&1
st=$?
processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$TMP/pgbench.out")
failed_tx=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$TMP/pgbench.out")
echo "# race: $CLIENTS clients for ${SECONDS_RACE}s, ${processed:-?} driver calls"
ok $(( st != 0 || ${failed_tx:-0} != 0 )) "pgbench: $CLIENTS clients ran ${SECONDS_RACE}s with no client aborted and no failed call" \
   "$(grep -iE 'abort|error|fail' "$TMP/pgbench.out" | head -n 20)"
ok $(( ${processed:-0} < 1000 )) "the race made at least 1000 calls (made ${processed:-0})"

unexpected=$(q -c "SELECT op || ' ' || k || ': ' || sqlstate || ' ' || message FROM race_unexpected ORDER BY at LIMIT 20")
is "$(q -c 'SELECT count(*) FROM race_unexpected')" 0 \
   "the driver met no unexpected error (deadlock, unique violation, WL002, a retry returning another entry, a negative balance_after)"
[ -n "$unexpected" ] && printf '%s\n' "$unexpected" | sed 's/^/#   /'

echo "# outcomes: $(q -c "SELECT string_agg(op || '/' || outcome || '=' || c, ' ' ORDER BY op, outcome)
                      FROM (SELECT op, outcome, count(*) c FROM race_log GROUP BY 1, 2) s")"
is "$(q -c "SELECT string_agg(kind, ',' ORDER BY kind) FROM (SELECT DISTINCT kind FROM wallet.entries WHERE reason = 'race' OR kind IN ('capture', 'release')) s
            WHERE kind IN ('accrue', 'redeem', 'hold', 'capture', 'release', 'reverse')")" \
   "accrue,capture,hold,redeem,release,reverse" "the race posted every kind: accrue, redeem, hold, capture, release, reverse"
ok $(( $(q -c "SELECT count(*) FROM race_log WHERE outcome = 'repeat'") == 0 )) \
   "repeated calls (same key and arguments) happened and were answered"

deadlocks=$(q -c "SELECT count(*) FROM regexp_matches(pg_read_file('server.log', $log_offset, 100000000), 'deadlock detected', 'g')" 2>&1)
is "$deadlocks" 0 "no deadlock reported in the server log during the race"
logerrs=$(q -c "SELECT string_agg(l, E'\n') FROM (SELECT l FROM regexp_split_to_table(pg_read_file('server.log', $log_offset, 100000000), E'\n') l
                 WHERE l ~ '(ERROR|FATAL|PANIC):' LIMIT 10) s" 2>&1)
ok $([ -z "$logerrs" ]; echo $?) "no error at all in the server log during the race" "$logerrs"

# ---------------------------------------------------------------------------
# Invariants after the race
# ---------------------------------------------------------------------------
# The 2-second holds of the last moments lapse; the expiry job then journals
# their release, after which the journal must explain every balance.
sleep 2.5
ok $(q -c "SELECT wallet.expire_points()" >/dev/null; echo $?) "expire_points after the race settles the lapsed holds"

vl=$(q -c "SELECT account_id || ': stored ' || stored_balance || ' replayed ' || replayed_balance || ' ' || coalesce(detail, '') FROM wallet.verify_ledger()" 2>&1)
st=$?
ok $([ $st -eq 0 ] && [ -z "$vl" ]; echo $?) "verify_ledger() returns nothing: every stored ledger matches its replayed journal" "$vl"
is "$(q -c "SELECT count(*) FROM wallet.accounts WHERE wallet.balance(account_id) < 0")" 0 "no balance is negative"
is "$(q -c "SELECT count(*) FROM wallet.entries WHERE balance_after < 0")" 0 "no entry has a negative balance_after"
mism=$(q -c "SELECT string_agg(format('account %s: balance %s, journal sum %s', r.account_id, wallet.balance(r.account_id), s.total), '; ')
             FROM race_accounts r, LATERAL (SELECT coalesce(sum(amount), 0) total FROM wallet.entries e WHERE e.account_id = r.account_id) s
            WHERE wallet.balance(r.account_id) <> s.total" 2>&1)
ok $([ -z "$mism" ]; echo $?) "for each of the 20 accounts the journal amounts sum to its balance" "$mism"
mism=$(q -c "SELECT string_agg(format('account %s: last balance_after %s, balance %s', r.account_id, last.balance_after, wallet.balance(r.account_id)), '; ')
             FROM race_accounts r, LATERAL (SELECT balance_after FROM wallet.entries e WHERE e.account_id = r.account_id ORDER BY entry_id DESC LIMIT 1) last
            WHERE last.balance_after <> wallet.balance(r.account_id)" 2>&1)
ok $([ -z "$mism" ]; echo $?) "the last entry's balance_after of each account is its balance" "$mism"
mism=$(q -c "SELECT string_agg(format('entry %s (%s %s): balance_after %s, running sum %s', entry_id, kind, amount, balance_after, running), '; ')
             FROM (SELECT entry_id, kind, amount, balance_after, sum(amount) OVER (PARTITION BY account_id ORDER BY entry_id) running
                     FROM wallet.entries) x WHERE balance_after <> running" 2>&1)
ok $([ -z "$mism" ]; echo $?) "every entry's balance_after is the running sum of its account's amounts" "$mism"
dups=$(q -c "SELECT string_agg(idempotency_key || ' x' || c, ', ') FROM (
               SELECT idempotency_key, count(*) c FROM wallet.entries
                WHERE kind IN ('accrue', 'redeem', 'hold', 'reverse', 'adjust') AND idempotency_key IS NOT NULL
                GROUP BY 1 HAVING count(*) > 1 LIMIT 20) d" 2>&1)
ok $([ -z "$dups" ]; echo $?) "every idempotency key posted at most once" "$dups"
dups=$(q -c "SELECT string_agg(reverses || ' x' || c, ', ') FROM (SELECT reverses, count(*) c FROM wallet.entries WHERE kind = 'reverse'
             GROUP BY 1 HAVING count(*) > 1 LIMIT 20) d" 2>&1)
ok $([ -z "$dups" ]; echo $?) "every entry reversed at most once" "$dups"
dups=$(q -c "SELECT string_agg(hold_id || ' ' || kinds, ', ') FROM (SELECT hold_id, string_agg(kind, '+' ORDER BY entry_id) kinds FROM wallet.entries
             WHERE kind IN ('capture', 'release') GROUP BY 1
            HAVING count(*) FILTER (WHERE kind = 'capture') > 1 OR count(*) FILTER (WHERE kind = 'release') > 1 LIMIT 20) d" 2>&1)
ok $([ -z "$dups" ]; echo $?) "every hold closed at most once (one capture, or one release)" "$dups"

# ---------------------------------------------------------------------------
# 2. Bursts behind a barrier
# ---------------------------------------------------------------------------
# one_answer RACE NAME DESCRIPTION: all 20 sessions of RACE printed NAME=<one and the same value>.
one_answer() {
    local got distinct
    got=$(cat "$TMP/$1".[0-9]* | grep -c "^$2=")
    distinct=$(cat "$TMP/$1".[0-9]* | grep "^$2=" | sort -u | wc -l)
    ok $(( got != 20 || distinct != 1 )) "$3 ($got answers, $distinct distinct)" \
       "$(cat "$TMP/$1".[0-9]* | grep -v '^$' | sort | uniq -c | head -n 10)"
}

program=$(q -c "SELECT program_id FROM wallet.accounts a JOIN race_accounts r USING (account_id) WHERE r.n = 0")
acct_same=$(q -c "SELECT wallet.open_account($program, 'burst-same-key')")
acct_ds=$(q -c "SELECT wallet.open_account($program, 'burst-double-spend')")
acct_hold=$(q -c "SELECT wallet.open_account($program, 'burst-hold')")
q -c "SELECT FROM wallet.accrue($acct_same, 1000, 'burst-seed-1', 'seed')" \
  -c "SELECT FROM wallet.accrue($acct_ds, 100, 'burst-seed-2', 'seed')" \
  -c "SELECT FROM wallet.accrue($acct_hold, 100, 'burst-seed-3', 'seed')" >/dev/null

# 20 sessions, one idempotency key, the same instant.
race same 20 "SELECT 'entry=' || entry_id FROM wallet.accrue($acct_same, 10, 'burst-same-key', 'burst')"
ok $? "same key: 20 sessions were queued behind the barrier"
one_answer same entry "same key: all 20 sessions got the entry back, and it is one entry"
is "$(q -c "SELECT count(*) || ' ' || wallet.balance($acct_same) FROM wallet.entries WHERE idempotency_key = 'burst-same-key'")" "1 1010" \
   "same key: exactly one entry posted, balance 1000 + 10"

# 20 sessions redeem 10 each from 100 points: no double spend.
race ds 20 "SELECT 'entry=' || entry_id FROM wallet.redeem($acct_ds, 10, 'burst-ds-@I@', 'burst')"
ok $? "double spend: 20 sessions were queued behind the barrier"
won=$(count ds 'entry=[0-9]+')
refused=$(cat "$TMP"/ds.[0-9]* | grep -c 'ERROR:  WL203')
ok $(( won != 10 || refused != 10 )) "double spend: exactly 10 redemptions of 10 succeed and 10 get WL203 ($won succeeded, $refused WL203)" \
   "$(cat "$TMP"/ds.[0-9]* | grep -v '^$' | sed 's/entry=.*/entry=N/' | sort | uniq -c | head -n 10)"
is "$(q -c "SELECT wallet.balance($acct_ds) || ' ' || count(*) FROM wallet.entries WHERE account_id = $acct_ds AND kind = 'redeem'")" "0 10" \
   "double spend: balance 0 with 10 redeem entries"

# A hold: 10 sessions capture it, 10 release it, at the same instant.
hold_id=$(q -c "SELECT entry_id FROM wallet.hold($acct_hold, 50, 'burst-hold', '1 hour', 'burst')")
stmts=()
for i in $(seq 1 10); do stmts+=("SELECT 'capture=' || entry_id FROM wallet.capture($hold_id, 30)"
                                 "SELECT 'release=' || entry_id FROM wallet.release($hold_id)"); done
race_each hold "${stmts[@]}"
ok $? "capture/release: 20 sessions were queued behind the barrier"
caps=$(count hold 'capture=[0-9]+')
rels=$(count hold 'release=[0-9]+')
wl207=$(cat "$TMP"/hold.[0-9]* | grep -c 'ERROR:  WL207')
winners=$(cat "$TMP"/hold.[0-9]* | grep -E '^(capture|release)=' | sort -u | wc -l)
ok $(( ! ( (caps == 10 && rels == 0) || (rels == 10 && caps == 0) ) || wl207 != 10 || winners != 1 )) \
   "capture vs release: one side wins (all its 10 identical calls get one entry), the other 10 get WL207 ($caps captures, $rels releases, $wl207 WL207)" \
   "$(cat "$TMP"/hold.[0-9]* | grep -v '^$' | sort | uniq -c | head -n 10)"
if [ "$caps" -gt 0 ]; then want=70; else want=100; fi
is "$(q -c "SELECT wallet.balance($acct_hold)")" "$want" "capture vs release: balance matches the winner (70 after capturing 30 of 50, 100 after a release)"

# 20 sessions open the account of one new member at the same instant.
race open 20 "SELECT 'account=' || wallet.open_account($program, 'burst-open')"
ok $? "open_account: 20 sessions were queued behind the barrier"
one_answer open account "open_account: all 20 sessions got one and the same account"
is "$(q -c "SELECT count(*) FROM wallet.accounts WHERE program_id = $program AND member_ref = 'burst-open'")" 1 \
   "open_account: exactly one account row for the member"

vl=$(q -c "SELECT account_id || ': stored ' || stored_balance || ' replayed ' || replayed_balance FROM wallet.verify_ledger()" 2>&1)
ok $([ $? -eq 0 ] && [ -z "$vl" ]; echo $?) "verify_ledger() returns nothing after the bursts" "$vl"

[ "$T_FAILED" -eq 0 ] && timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
finish

#!/usr/bin/env bash
# Campaign budgets under races (issue 11), printing TAP.
#
# 32 sessions, released together behind the barrier, drain a budget of
# exactly 1,000 points.  Each runs a procedure that, transaction after
# transaction, takes 1 to 10 units (all or nothing), takes and then rolls
# back, holds units and converts the hold, holds and releases, or holds with
# a 200 ms time to live and walks away (the hold expires).  Every unit a
# committed take or conversion got is logged in the same transaction, so the
# log is exactly what was granted.  Sessions stop when the budget shows
# nothing remaining and nothing held (or after 10 s).  Demand (several
# thousand units) far exceeds the budget, so:
#   - granted <= 1,000: never exceeded, not by one unit;
#   - granted >= 990: nothing lost to aborted takes or expired holds;
#   - the budget's own status agrees with the log (granted, held 0,
#     remaining = 1,000 - granted), and no session saw an error (deadlock,
#     check violation, ...);
#   - nothing lost to aborted takes or expired holds: takes of one unit
#     afterwards get exactly what is left, and the budget ends granted in full.
# A second burst: 32 sessions each take 40 units at once from a budget of
# 1,000 spread over 16 slices of 62 or 63: each slice covers one take, and
# at most 25 get them (a gathering take skips the slices other takes hold at
# that moment, so fewer may); takes of 40 afterwards get exactly the rest,
# and the budget ends at 0.
# A churn: 32 pgbench clients for 15 s take, give back, hold (expiring) and
# hold-and-convert on a budget of 300 kept nearly empty, so that most takes
# gather across slices while others update them: not one transaction may
# fail (a gather that waited for a lower slice deadlocked here before every
# slice was taken through its advisory lock), and the books still balance.
#
# Needs PGHOST/PGPORT/PGUSER of a running cluster with wallet installable.
set -uo pipefail

DB=conc_budget
TMP=$(mktemp -d /tmp/budget_race.XXXXXX)
chmod 755 "$TMP"
trap 'rm -rf "$TMP"' EXIT

. "$(dirname "$0")/../lib.sh"
Q_TIMEOUT=120

plan 14

timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
if ! timeout 30 createdb "$DB"; then echo "Bail out! createdb $DB failed"; exit 1; fi

setup_out=$(q 2>&1 <<'SQL'
CREATE EXTENSION wallet;
SELECT wallet.create_merchant('budget race') AS m \gset
CREATE TABLE ids (k text PRIMARY KEY, v bigint NOT NULL);
INSERT INTO ids VALUES ('drain', wallet.create_campaign(:m, 'drain')), ('burst', wallet.create_campaign(:m, 'burst'));
SELECT wallet.set_campaign_budget((SELECT v FROM ids WHERE k = 'drain'), 'points', 1000) \g /dev/null
SELECT wallet.set_campaign_budget((SELECT v FROM ids WHERE k = 'burst'), 'points', 1000) \g /dev/null
CREATE TABLE granted_log (id bigserial PRIMARY KEY, sess int NOT NULL, action text NOT NULL, units bigint NOT NULL CHECK (units > 0));
CREATE TABLE actions_log (sess int NOT NULL, action text NOT NULL, n int NOT NULL DEFAULT 1, PRIMARY KEY (sess, action));

CREATE PROCEDURE race_run(p_sess int) LANGUAGE plpgsql AS $$
DECLARE
    c bigint := (SELECT v FROM ids WHERE k = 'drain');
    started timestamptz := clock_timestamp();
    st wallet.budget_status;
    a float8;
    u bigint;
    got bigint;
    h record;
    act text;
BEGIN
    LOOP
        st := wallet_internal.budget_status(c);
        EXIT WHEN st.remaining + st.held = 0 OR clock_timestamp() > started + interval '10 seconds';
        a := random();
        u := 1 + floor(random() * 10)::bigint;
        IF a < 0.45 THEN
            act := 'take';
            got := wallet_internal.budget_take(c, u);
            IF got > 0 THEN INSERT INTO granted_log (sess, action, units) VALUES (p_sess, act, got); END IF;
            COMMIT;
        ELSIF a < 0.60 THEN
            act := 'take_rolled_back';
            got := wallet_internal.budget_take(c, u);
            ROLLBACK;
        ELSIF a < 0.75 THEN
            act := 'hold_convert';
            h := wallet_internal.budget_hold(c, u, interval '10 seconds');
            IF h.hold_id IS NOT NULL THEN
                got := wallet_internal.budget_convert(h.hold_id);
                IF got > 0 THEN INSERT INTO granted_log (sess, action, units) VALUES (p_sess, act, got); END IF;
            END IF;
            COMMIT;
        ELSIF a < 0.85 THEN
            act := 'hold_release';
            h := wallet_internal.budget_hold(c, u, interval '10 seconds');
            IF h.hold_id IS NOT NULL THEN
                PERFORM wallet_internal.budget_release(h.hold_id);
            END IF;
            COMMIT;
        ELSE
            act := 'hold_expire';
            h := wallet_internal.budget_hold(c, u, interval '200 milliseconds');
            COMMIT;
        END IF;
        INSERT INTO actions_log AS l (sess, action) VALUES (p_sess, act) ON CONFLICT (sess, action) DO UPDATE SET n = l.n + 1;
        COMMIT;
    END LOOP;
END
$$;
SQL
)
ok $? "fixture: two campaigns with budgets of 1,000 points, the race driver" "$setup_out"
C_DRAIN=$(q -c "SELECT v FROM ids WHERE k = 'drain'")
C_BURST=$(q -c "SELECT v FROM ids WHERE k = 'burst'")

race drain 32 "CALL race_run(@I@)"
ok $? "32 sessions started together"
errors=$(cat "$TMP"/drain.* | grep -E 'ERROR|FATAL' | sort | uniq -c | head -5)
is "$errors" "" "no session saw an error (no deadlock, no check violation)"

granted=$(q -c "SELECT coalesce(sum(units), 0) FROM granted_log")
ok $(( granted <= 1000 ? 0 : 1 )) "granted ($granted) never exceeds the budget of 1,000"
ok $(( granted >= 990 ? 0 : 1 )) "granted ($granted) >= 990: nothing lost to rolled-back takes or expired holds"
demand=$(q -c "SELECT coalesce(sum(n), 0) FROM actions_log")
ok $(( demand > 300 ? 0 : 1 )) "demand exceeded the budget: $demand calls of 1 to 10 units" \
   "$(q -c "SELECT action || ': ' || sum(n) FROM actions_log GROUP BY action ORDER BY action")"
is "$(q -c "SELECT count(DISTINCT action) FROM actions_log")" 5 "every kind of call ran (take, rolled back, converted, released, expiring holds)"
sleep 0.3   # a 200 ms hold of a session's last call stops counting
is "$(q -c "SELECT format('%s %s %s %s', total, granted, held, remaining) FROM wallet.campaign_budget($C_DRAIN)")" \
   "1000 $granted 0 $((1000 - granted))" "the budget's status agrees with the log: total 1000, granted, held 0, the rest remaining"
is "$(q -c "SELECT (SELECT sum(remaining) FROM wallet.budget_slices WHERE campaign_id = $C_DRAIN)
                 + (SELECT coalesce(sum(units), 0) FROM wallet.budget_holds WHERE campaign_id = $C_DRAIN AND state = 'active')")" \
   "$((1000 - granted))" "slices plus active holds hold exactly the units not granted"

left=$(q -c "SELECT remaining FROM wallet.campaign_budget($C_DRAIN)")
drained=$(q -c "DO \$\$ BEGIN WHILE wallet_internal.budget_take($C_DRAIN, 1) = 1 LOOP END LOOP; END \$\$;
                SELECT granted FROM wallet.campaign_budget($C_DRAIN)")
is "$drained" 1000 "afterwards, takes of one unit get exactly the $left left: none stranded in a slice or an expired hold"

# Burst: every take bigger than any slice (16 slices of 62 or 63).
race burst 32 "SELECT 'got ' || wallet_internal.budget_take($C_BURST, 40)"
got=$(count burst 'got 40'); refused=$(count burst 'got 0')
ok $(( got + refused == 32 && got <= 25 && got >= 1 ? 0 : 1 )) \
   "32 takes of 40 from 1,000 in 16 slices of 62 or 63: $got granted (never more than the 25 the budget covers), $refused refused" \
   "$(cat "$TMP"/burst.* | sort | uniq -c)"
after=$(q -c "DO \$\$ BEGIN WHILE wallet_internal.budget_take($C_BURST, 40) = 40 LOOP END LOOP; END \$\$;
              SELECT format('%s %s', granted, remaining) FROM wallet.campaign_budget($C_BURST)")
is "$after" "1000 0" \
   "a take refused while others held slices lost nothing: takes of 40 afterwards get exactly the rest, the budget ends granted in full"

# Churn
C_CHURN=$(q -c "SELECT wallet.create_campaign((SELECT merchant_id FROM wallet.campaigns WHERE campaign_id = $C_DRAIN), 'churn')")
q -c "SELECT wallet.set_campaign_budget($C_CHURN, 'points', 300)" >/dev/null
cat > "$TMP/take.sql" <<SQL
\\set u random(1, 10)
SELECT wallet_internal.budget_take($C_CHURN, :u);
SQL
cat > "$TMP/give.sql" <<SQL
\\set u random(1, 10)
SELECT wallet_internal.budget_give_back($C_CHURN, :u);
SQL
cat > "$TMP/hold.sql" <<SQL
\\set u random(1, 10)
SELECT wallet_internal.budget_hold($C_CHURN, :u, interval '200 milliseconds');
SQL
cat > "$TMP/convert.sql" <<SQL
\\set u random(1, 10)
BEGIN;
SELECT coalesce(hold_id, 0) AS h FROM wallet_internal.budget_hold($C_CHURN, :u, interval '10 seconds') \\gset
SELECT wallet_internal.budget_convert(:h) WHERE :h > 0;
COMMIT;
SQL
timeout 75 pgbench -n -c 32 -j 2 -T 15 -f "$TMP/take.sql@4" -f "$TMP/give.sql@4" -f "$TMP/hold.sql@1" -f "$TMP/convert.sql@2" "$DB" > "$TMP/churn.out" 2>&1
st=$?
processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$TMP/churn.out")
failed_tx=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$TMP/churn.out")
ok $(( st != 0 || ${failed_tx:-1} != 0 || ${processed:-0} < 300 )) \
   "churn: 32 clients, 15 s, ${processed:-0} transactions of takes, gives, holds and conversions, none failed (no deadlock)" \
   "$(grep -E 'error|ERROR|failed' "$TMP/churn.out" | sort | uniq -c | head -5)"
sleep 0.3   # the churn's last 200 ms holds expire
left=$(q -c "SELECT remaining FROM wallet.campaign_budget($C_CHURN)")
got=$(q -c "DO \$\$ BEGIN WHILE wallet_internal.budget_take($C_CHURN, 1) = 1 LOOP END LOOP; END \$\$;
            SELECT remaining || ' ' || held FROM wallet.campaign_budget($C_CHURN)")
is "$got" "0 0" "churn: afterwards takes of one unit drain exactly the $left remaining (none stranded in a slice or a hold)"

timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
finish

#!/usr/bin/env bash
# Round-trip property of wallet.points_ledger on generated values: every value
# that random sequences of wallet.ledger_apply build (BC and extreme instants,
# 'never', time running backwards at times) and every random valid text must be
# accepted, print to a text that reads back to the same text, and go through
# binary send/recv (COPY ... FORMAT binary) to identical bytes; random
# mutations of valid texts must either be refused with 22P02 or round-trip.
# A ledger_apply step may fail only with the documented SQLSTATEs of a refused
# operation (never with the internal consistency check, XX001).
#   FUZZ_SEED=0.42 test/concurrency/ledger_fuzz.t   replays one run
set -uo pipefail
DB=conc_ledger_fuzz_$$
TMP=$(mktemp -d /tmp/wallet-fuzz.XXXXXX)
trap 'dropdb --if-exists "$DB" 2>/dev/null; rm -rf "$TMP"' EXIT
SEED=${FUZZ_SEED:-0.$RANDOM$RANDOM}
APPLIED=${FUZZ_APPLIED:-70000}   # values built by ledger_apply sequences
TEXTS=${FUZZ_TEXTS:-30000}       # random valid texts
MUTANTS=${FUZZ_MUTANTS:-30000}   # mutations of valid texts
. "$(dirname "$0")/../lib.sh"

plan 7
echo "# seed $SEED (FUZZ_SEED=$SEED replays this run)"
createdb "$DB" || { echo "Bail out! cannot create database"; exit 1; }
start=$(date +%s)
q <<SQL >/dev/null || { echo "Bail out! generator failed"; exit 1; }
CREATE EXTENSION wallet;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SELECT setseed($SEED);
CREATE TABLE vals (id bigserial PRIMARY KEY, src text NOT NULL, v wallet.points_ledger NOT NULL);
CREATE TABLE failures (src text, what text, detail text);

-- a random base instant: near the first or last valid timestamp, around 1 BC, or today
CREATE FUNCTION pg_temp.rts() RETURNS timestamptz LANGUAGE sql VOLATILE AS \$\$
    SELECT CASE floor(random() * 5)::int
        WHEN 0 THEN '4714-11-24 00:00:00+00 BC'::timestamptz + random() * interval '600 days'
        WHEN 1 THEN '294276-12-31 23:59:59.999999+00'::timestamptz - random() * interval '600 days'
        WHEN 2 THEN '0001-01-01 00:00:00+00'::timestamptz + (random() - 0.5) * interval '2000 days'
        ELSE '2020-01-01 00:00:00+00'::timestamptz + random() * interval '15 years' END
\$\$;
-- a random expiry after at: never, the end of a UTC day, or an exact instant; 'infinity' near the end of time
CREATE FUNCTION pg_temp.rexp(at timestamptz) RETURNS timestamptz LANGUAGE sql VOLATILE AS \$\$
    SELECT CASE WHEN r < 0.2 OR at > '294276-12-31 00:00:00+00'::timestamptz - interval '800 days' THEN 'infinity'
                WHEN r < 0.6 THEN date_trunc('day', at + random() * interval '700 days', 'UTC') + interval '1 day'
                ELSE at + interval '1 microsecond' + random() * interval '700 days' END
      FROM (SELECT random() AS r) x
\$\$;

DO \$\$
DECLARE
    l wallet.points_ledger;
    st wallet.ledger_step;
    at timestamptz;
    ex timestamptz;
    nvals int := 0;
    seq int := 0;
    k int;
    op int;
    p bigint;
    bal bigint;
    hid bigint;
    acc_p bigint[];
    acc_e timestamptz[];
    acc_at timestamptz[];
    acc_done bool[];
    spent jsonb[];
    i int;
    ok bool;
BEGIN
    WHILE nvals < $APPLIED LOOP
        seq := seq + 1;
        l := '';
        at := pg_temp.rts();
        acc_p := '{}'; acc_e := '{}'; acc_at := '{}'; acc_done := '{}'; spent := '{}';
        FOR k IN 1..60 LOOP
            -- time moves on, now and then backwards (ledger_apply is a pure function of its arguments)
            IF random() < 0.9 THEN
                IF at < '294276-12-31 00:00:00+00'::timestamptz - interval '900 days' THEN
                    at := at + random() * interval '40 days';
                END IF;
            ELSIF at > '4714-11-24 00:00:00+00 BC'::timestamptz + interval '100 days' THEN
                at := at - random() * interval '60 days';
            END IF;
            op := floor(random() * 11)::int;
            bal := wallet.ledger_balance(l, at);
            ok := true;
            BEGIN
                CASE
                WHEN op <= 2 THEN
                    p := CASE WHEN random() < 0.01 THEN 4611686018427387904 ELSE 1 + floor(random() * 1000)::bigint END;
                    ex := pg_temp.rexp(at);
                    st := wallet.ledger_apply(l, 'accrue', at, p, ex);
                    acc_p := acc_p || p; acc_e := acc_e || ex;
                    acc_at := acc_at || at; acc_done := acc_done || false;
                WHEN op = 3 THEN
                    st := wallet.ledger_apply(l, 'redeem', at, 1 + floor(random() * (greatest(bal, 0) + 5))::bigint);
                    spent := spent || st.lots;
                WHEN op = 4 THEN
                    p := CASE WHEN random() < 0.5 THEN -1 - floor(random() * (greatest(bal, 0) + 5))::bigint
                              ELSE 1 + floor(random() * 500)::bigint END;
                    st := wallet.ledger_apply(l, 'adjust', at, p, CASE WHEN p > 0 THEN pg_temp.rexp(at) END);
                WHEN op = 5 THEN
                    st := wallet.ledger_apply(l, 'hold', at, 1 + floor(random() * (greatest(bal, 0) + 5))::bigint,
                                              CASE WHEN at < '294276-12-28 00:00:00+00' THEN at + interval '1 second' + random() * interval '3 days'
                                                   ELSE at + ('294276-12-31 23:59:59.999999+00'::timestamptz - at) / 2 END, seq * 100 + k);
                WHEN op = 6 THEN
                    SELECT x.hold_id INTO hid FROM wallet.ledger_lots(l) x WHERE x.hold_id IS NOT NULL ORDER BY random() LIMIT 1;
                    IF random() < 0.5 THEN
                        st := wallet.ledger_apply(l, 'release', at, NULL, NULL, coalesce(hid, 1));
                    ELSE
                        st := wallet.ledger_apply(l, 'capture', at, CASE WHEN random() < 0.5 THEN 1 + floor(random() * 50)::bigint END,
                                                  NULL, coalesce(hid, 1));
                    END IF;
                WHEN op = 7 THEN
                    st := wallet.ledger_apply(l, 'expire', at, NULL);
                WHEN op = 8 AND cardinality(acc_p) > 0 THEN
                    i := 1 + floor(random() * cardinality(acc_p))::int;
                    IF acc_done[i] THEN
                        ok := false;
                    ELSE
                        st := wallet.ledger_apply(l, 'reverse_accrual', at, acc_p[i], acc_e[i],
                                                  policy => CASE WHEN random() < 0.5 THEN 'unlimited' ELSE 'within_balance' END,
                                                  earned_at => CASE WHEN random() < 0.9 THEN acc_at[i] END);
                        acc_done[i] := true;
                    END IF;
                WHEN op = 9 AND cardinality(spent) > 0 THEN
                    i := 1 + floor(random() * cardinality(spent))::int;
                    st := wallet.ledger_apply(l, 'restore', at, NULL,
                        lot_points => ARRAY(SELECT (x->>'points')::bigint FROM jsonb_array_elements(spent[i]) x),
                        lot_expiries => ARRAY(SELECT (x->>'expires_at')::timestamptz FROM jsonb_array_elements(spent[i]) x));
                    spent[i] := '[]';
                ELSE
                    ok := false;
                END CASE;
            EXCEPTION WHEN OTHERS THEN
                ok := false;
                -- a refused operation; anything else (e.g. XX001, the consistency check of the result) is a failure
                IF SQLSTATE NOT IN ('WL203', 'WL204', 'WL205', 'WL206', 'WL208', 'WL209', '22023', '54000') THEN
                    INSERT INTO failures VALUES ('ledger_apply', format('op %s on %s at %s', op, l, at), SQLSTATE || ' ' || SQLERRM);
                END IF;
            END;
            IF ok THEN
                l := st.ledger;
                INSERT INTO vals(src, v) VALUES ('apply', l);
                nvals := nvals + 1;
            END IF;
        END LOOP;
    END LOOP;
END
\$\$;

-- random valid texts: any spelling of timestamps (quoted, in several time zones), parts in any order
CREATE FUNCTION pg_temp.rmonth(m int) RETURNS text LANGUAGE sql IMMUTABLE AS \$\$
    SELECT format('%s-%s%s', lpad((CASE WHEN y > 0 THEN y ELSE 1 - y END)::text, greatest(4, length((CASE WHEN y > 0 THEN y ELSE 1 - y END)::text)), '0'), to_char(mo, 'FM00'),
                  CASE WHEN y > 0 THEN '' ELSE ' BC' END)
      FROM (SELECT 2000 + floor(m / 12.0)::int AS y, m - 12 * floor(m / 12.0)::int + 1 AS mo) x
\$\$;
CREATE FUNCTION pg_temp.rtext() RETURNS text LANGUAGE plpgsql VOLATILE AS \$\$
DECLARE
    parts text[] := '{}';
    lots text[] := '{}';
    holds text[] := '{}';
    months text[] := '{}';
    never bool := false;
    e timestamptz;
    m0 int;
    msum bigint := 0;
    v bigint;
    i int;
    j int;
    hl text[];
BEGIN
    PERFORM set_config('TimeZone', (ARRAY['UTC', 'Asia/Kathmandu', 'America/St_Johns', 'Pacific/Kiritimati', 'Europe/Paris'])[1 + floor(random() * 5)::int], true);
    FOR i IN 1..floor(random() * 6)::int LOOP
        e := pg_temp.rexp(pg_temp.rts());
        never := never OR e = 'infinity';
        lots := lots || format('%s@%s', 1 + floor(random() * 1e9)::bigint,
                               CASE WHEN e = 'infinity' THEN (ARRAY['never', 'infinity', 'NEVER'])[1 + floor(random() * 3)::int]
                                    ELSE format('"%s"', e) END);
    END LOOP;
    FOR i IN 1..floor(random() * 3)::int LOOP
        hl := '{}';
        FOR j IN 0..floor(random() * 3)::int LOOP
            e := pg_temp.rexp(pg_temp.rts());
            hl := hl || format('%s@%s', 1 + floor(random() * 1e6)::bigint, CASE WHEN e = 'infinity' THEN 'never' ELSE format('"%s"', e) END);
        END LOOP;
        holds := holds || format('%s@"%s"[%s]', i * 7 + floor(random() * 5)::int, pg_temp.rts(), array_to_string(hl, ','));
    END LOOP;
    IF random() < 0.7 THEN
        m0 := CASE floor(random() * 3)::int
                WHEN 0 THEN (-4713 - 2000) * 12 + 10 + floor(random() * 40)::int
                WHEN 1 THEN (294276 - 2000) * 12 + 11 - floor(random() * 40)::int
                ELSE floor(random() * 600)::int - 24300 END;
        FOR i IN 0..23 LOOP
            IF random() < 0.3 AND m0 - i >= (-4713 - 2000) * 12 + 10 AND m0 - i <= (294276 - 2000) * 12 + 11 THEN
                v := floor(random() * 1e6)::bigint;
                msum := msum + v;
                months := months || format('%s:%s', pg_temp.rmonth(m0 - i), v);
            END IF;
        END LOOP;
    END IF;
    parts := parts || ('lots={' || array_to_string(lots, ',') || '}')
                   || ('holds={' || array_to_string(holds, ',') || '}')
                   || ('months={' || array_to_string(months, ', ') || '}')
                   || ('earned=' || (msum + floor(random() * 1000)::bigint))
                   || ('redeemed=' || floor(random() * 1e12)::bigint)
                   || ('expired=' || floor(random() * 1e12)::bigint);
    IF NOT never THEN
        parts := parts || ('debt=' || floor(random() * 1000)::bigint);
    END IF;
    RETURN array_to_string(ARRAY(SELECT x FROM unnest(parts) x ORDER BY random()), '  ');
END
\$\$;

DO \$\$
DECLARE
    t text;
    v wallet.points_ledger;
BEGIN
    FOR i IN 1..$TEXTS LOOP
        t := pg_temp.rtext();
        BEGIN
            v := t::wallet.points_ledger;
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO failures VALUES ('valid text refused', t, SQLSTATE || ' ' || SQLERRM);
            CONTINUE;
        END;
        INSERT INTO vals(src, v) VALUES ('text', v);
    END LOOP;
END
\$\$;
SET TimeZone = 'UTC';

-- mutations of valid texts: refused with 22P02, or accepted (then they must round-trip like any value)
CREATE TABLE mutants (t text, state text);
DO \$\$
DECLARE
    base text;
    t text;
    v wallet.points_ledger;
    chars text := '0123456789-+@{}[],:=" .TZBCnevrlotsdbhm';
    pos int;
    k int;
    maxid bigint := (SELECT max(id) FROM vals);
    pick bigint;
BEGIN
    FOR i IN 1..$MUTANTS LOOP
        pick := 1 + floor(random() * maxid)::bigint;   -- a variable, so that the lookup uses the index
        SELECT x.v::text INTO base FROM vals x WHERE x.id = pick;
        t := coalesce(base, 'lots={1@never}');
        FOR k IN 0..floor(random() * 3)::int LOOP
            pos := 1 + floor(random() * (length(t) + 1))::int;
            CASE floor(random() * 4)::int
            WHEN 0 THEN t := overlay(t PLACING substr(chars, 1 + floor(random() * length(chars))::int, 1) FROM pos FOR 1);
            WHEN 1 THEN t := overlay(t PLACING '' FROM pos FOR 1 + floor(random() * 3)::int);
            WHEN 2 THEN t := overlay(t PLACING substr(chars, 1 + floor(random() * length(chars))::int, 1) FROM pos FOR 0);
            ELSE t := overlay(t PLACING substr(t, 1 + floor(random() * length(t))::int, 1 + floor(random() * 12)::int) FROM pos FOR 0);
            END CASE;
        END LOOP;
        BEGIN
            v := t::wallet.points_ledger;
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO mutants VALUES (t, SQLSTATE);
            IF SQLSTATE <> '22P02' THEN
                INSERT INTO failures VALUES ('mutant refused with another SQLSTATE', t, SQLSTATE || ' ' || SQLERRM);
            END IF;
            CONTINUE;
        END;
        INSERT INTO mutants VALUES (t, 'accepted');
        INSERT INTO vals(src, v) VALUES ('mutant', v);
    END LOOP;
END
\$\$;
SQL
gen=$(( $(date +%s) - start ))
echo "# generated in ${gen}s: $(q -c "SELECT string_agg(src || ' ' || n, ', ') FROM (SELECT src, count(*) n FROM vals GROUP BY src ORDER BY src) x")"
echo "# mutants: $(q -c "SELECT string_agg(state || ' ' || n, ', ') FROM (SELECT state, count(*) n FROM mutants GROUP BY state ORDER BY state) x")"

check "at least 100,000 valid values generated (ledger_apply sequences and random texts)" \
    "$(q -c "SELECT count(*) >= 100000 FROM vals WHERE src IN ('apply', 'text')")" t
check "ledger_apply fails only with the SQLSTATE of a refused operation, and valid texts are accepted" \
    "$(q -c "SELECT count(*) FROM failures WHERE src <> 'mutant refused with another SQLSTATE'")" 0
q -c "SELECT '#  ' || src || ': ' || what || ' -> ' || detail FROM failures LIMIT 5"
check "every mutation is refused with 22P02 or accepted" \
    "$(q -c "SELECT count(*) FROM failures WHERE src = 'mutant refused with another SQLSTATE'")" 0
check "both outcomes of a mutation occur (the mutations test something)" \
    "$(q -c "SELECT count(DISTINCT state = 'accepted') FROM mutants")" 2
# text -> value -> text is the identity on every value's text
check "text round trip: every value's text reads back to the same text" \
    "$(q -c "SELECT count(*) FROM vals WHERE v::text::wallet.points_ledger::text IS DISTINCT FROM v::text")" 0
# value -> send -> recv -> value: COPY in binary format calls send and recv
q -c "CREATE TABLE vals2 (LIKE vals)"
psql -qX -v ON_ERROR_STOP=1 -d "$DB" -c "\\copy vals TO '$TMP/vals.bin' WITH (FORMAT binary)" &&
got=$(psql -qX -v ON_ERROR_STOP=1 -d "$DB" -c "\\copy vals2 FROM '$TMP/vals.bin' WITH (FORMAT binary)" 2>&1)
check "every value loads back from binary COPY" "$got$(q -c "SELECT (SELECT count(*) FROM vals) - (SELECT count(*) FROM vals2)")" 0
check "binary round trip: identical bytes (ledger_diff NULL) and identical send output" \
    "$(q -c "SELECT count(*) FROM vals a JOIN vals2 b USING (id)
             WHERE wallet.ledger_diff(a.v, b.v) IS NOT NULL OR wallet.points_ledger_send(a.v) <> wallet.points_ledger_send(b.v)")" 0
echo "# total ${SECONDS}s"
finish

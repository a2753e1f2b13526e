-- Points ledger: the wallet.points_ledger type, its pure functions, and each
-- operation's result.  Times are explicit (or masked) so the output is stable.
CREATE EXTENSION wallet;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
\set SHOW_CONTEXT never

-- Runs a statement and shows the error it raises: SQLSTATE, message, detail.
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    d text;
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
    RETURN SQLSTATE || ': ' || SQLERRM || coalesce(' | ' || nullif(d, ''), '');
END
$$;

-- ===================================================== the type: text I/O
-- Canonical form: lots sorted by expiry (never-expiring last), same expiry merged,
-- timestamps in ISO 8601 UTC whatever the session's TimeZone.
SELECT ''::wallet.points_ledger AS empty;
SELECT 'lots={100@2027-02-01T00:00:00+00:00, 50@never, 20@"2026-12-01", 5@"2027-02-01 00:00:00+00"}'::wallet.points_ledger;
SET TimeZone = 'Asia/Shanghai';
SELECT 'lots={20@2026-12-01T08:00:00+08:00}'::wallet.points_ledger AS shanghai_input_utc_output;
SET TimeZone = 'UTC';
SELECT 'months={2026-10:20,2026-11:150} expired=3 redeemed=2 earned=170 debt=0 holds={9@2026-11-23T10:00:00.5+00:00[30@2027-02-01T00:00:00+00:00],7@2026-11-23T10:00:00Z[1@never]} lots={1@infinity}'::wallet.points_ledger AS every_part;
-- round trips: text -> value -> text -> value is the identity
WITH v(t) AS (VALUES
    (''),
    ('lots={1@never}'),
    ('lots={9223372036854775807@never}'),
    ('lots={3@2026-01-31T23:59:59.999999+00:00,4@2026-02-01T00:00:00+00:00} debt=0'),
    ('holds={1@2030-01-01T00:00:00+00:00[5@2031-01-01T00:00:00+00:00,6@never]} debt=7 earned=8 redeemed=9 expired=10'),
    ('months={2025-01:1,2026-12:2} earned=3'),
    ('lots={5@1999-12-31T00:00:00+00:00} earned=5 months={1999-12:5}'),
    -- BC instants are written quoted (they end in " BC"), BC months as YYYY-MM BC
    ('lots={1@"0100-01-01T00:00:00+00:00 BC",2@"4714-11-24 00:00:00+00 BC",3@294276-12-31T23:59:59.999999+00:00} earned=9 months={0001-01 BC:4,0002-12 BC:5}'),
    ('holds={5@"0001-06-30 12:00:00+00 BC"[1@never]} earned=7 months={4714-11 BC:7}'),
    ('earned=7 months={294276-12:3,294275-01:4}'))
SELECT t::wallet.points_ledger::text = t::wallet.points_ledger::text::wallet.points_ledger::text AS round_trip,
       t::wallet.points_ledger AS value
  FROM v;
-- binary send/recv round trip, with a leading format-version byte 1
SELECT substr(wallet.points_ledger_send('lots={1@never}'), 1, 1) AS version_byte;
CREATE TEMP TABLE bin(l wallet.points_ledger);
INSERT INTO bin VALUES ('lots={100@2027-02-01T00:00:00+00:00,50@2028-01-01T00:00:00+00:00} holds={7@2026-11-23T10:00:00+00:00[30@2027-02-01T00:00:00+00:00]} debt=2 earned=170 redeemed=1 expired=3 months={2026-11:150,2026-10:20}');
COPY bin TO '/tmp/wallet_points_ledger_regress.bin' WITH (FORMAT binary);
CREATE TEMP TABLE bin2(l wallet.points_ledger);
COPY bin2 FROM '/tmp/wallet_points_ledger_regress.bin' WITH (FORMAT binary);
SELECT (SELECT l::text FROM bin) = (SELECT l::text FROM bin2) AS binary_round_trip, l FROM bin2;

-- every input error is 22P02, the detail says what is wrong
SELECT q, pg_temp.err(format('SELECT %L::wallet.points_ledger', q)) AS error FROM (VALUES
    ('lots'),
    ('lots=100'),
    ('lots={100}'),
    ('lots={100@}'),
    ('lots={100@tomorrowish}'),
    ('lots={100@-infinity}'),
    ('lots={100@2026-01-01,}'),
    ('lots={-5@never}'),
    ('lots={0@never}'),
    ('lots={9223372036854775808@never}'),
    ('lots={9223372036854775807@never,1@2030-01-01}'),
    ('lots={5@never} debt=-1'),
    ('debt=99999999999999999999'),
    ('earned=1 earned=2'),
    ('balance=5'),
    ('lots={}debt=0'),
    ('holds={0@2030-01-01[1@never]}'),
    ('holds={1@never[1@never]}'),
    ('holds={1@2030-01-01[]}'),
    ('holds={1@2030-01-01[1@never],1@2031-01-01[1@never]}'),
    ('months={2026-13:5}'),
    ('months={2026-01:5,2026-01:6}'),
    ('months={2024-01:5,2026-01:6}'),
    ('months={2026-01:-5}'),
    ('lots={5@294277-01-01}'),
    ('lots={5@"4714-11-23 23:59:59.999999+00 BC"}'),
    ('lots={5@0100-01-01T00:00:00+00:00 BC}'),
    ('lots={1@"2026-01-01 12:00 Mars/Olympus"}'),
    ('earned=1 months={4714-10 BC:1}'),
    ('earned=1 months={0000-01:1}'),
    ('earned=1 months={294277-01:1}'),
    -- values no sequence of operations produces (the detail names the inconsistency)
    ('earned=10 months={2026-01:6,2026-02:5}'),
    ('months={2026-01:1}'),
    ('lots={5@never} debt=1'),
    ('lots={5@2030-01-01,6@never} holds={3@2030-01-01[1@2031-01-01]} debt=1')) AS t(q);
-- a debt with finite-expiry lots (dead when it arose) or with held never-expiring points is a real state
SELECT 'lots={5@2030-01-01T00:00:00+00:00} holds={3@2030-01-01T00:00:00+00:00[1@never]} debt=1'::wallet.points_ledger AS debt_and_lots;
-- lots without any earned total are a real state too: a positive adjustment adds points, not earnings
SELECT (wallet.ledger_apply('', 'adjust', '2026-12-01', 1000000)).ledger AS adjusted;

-- ===================================================== pure functions
-- balance at an instant: expiry is exclusive (a lot expiring at T is gone at T)
SELECT as_of, wallet.ledger_balance('lots={10@2027-01-01T00:00:00+00:00,20@2027-02-01T00:00:00+00:00,5@never}', as_of) AS balance
  FROM unnest(ARRAY['2026-12-31 23:59:59.999999+00', '2027-01-01 00:00:00+00', '2027-01-31 23:59:59+00',
                    '2027-02-01 00:00:00+00', 'infinity']::timestamptz[]) AS as_of;
-- debt is subtracted; held lots count only once their hold has lapsed (no cleanup needed)
SELECT as_of, wallet.ledger_balance('lots={10@2029-01-01T00:00:00+00:00} holds={4@2027-01-01T00:00:00+00:00[30@2028-01-01T00:00:00+00:00]} debt=3', as_of) AS balance
  FROM unnest(ARRAY['2026-12-31 23:59:59+00', '2027-01-01 00:00:00+00', '2028-01-01 00:00:00+00']::timestamptz[]) AS as_of;
SELECT wallet.ledger_expiring('lots={10@2027-01-01T00:00:00+00:00,20@2027-02-01T00:00:00+00:00,5@never}',
                              '2026-12-15', w) AS expiring, w AS within
  FROM unnest(ARRAY['1 day', '17 days', '1 month', '2 months', '100 years']::interval[]) AS w;
SELECT wallet.ledger_earned('earned=177 months={2026-11:150,2026-10:20,2025-12:7}', f, t) AS earned, f, t
  FROM (VALUES ('2026-11-01'::timestamptz, '2026-12-01'::timestamptz), ('2026-10-01', '2026-12-01'),
               ('2025-12-01', '2026-12-01'), ('2025-12-02', '2026-11-01'), ('-infinity', 'infinity')) AS v(f, t);
-- the kept months never add up to more than the lifetime earned total, so their sum cannot overflow
SELECT pg_temp.err($$SELECT wallet.ledger_earned('months={2026-11:9223372036854775807,2026-10:1}', '-infinity', 'infinity')$$) AS earned_overflow;
SELECT * FROM wallet.ledger_lots('lots={10@2027-01-01T00:00:00+00:00,5@never} holds={4@2027-01-01T00:00:00+00:00[30@2028-01-01T00:00:00+00:00]}');
SELECT * FROM wallet.ledger_totals('holds={4@2027-01-01T00:00:00+00:00[30@2028-01-01T00:00:00+00:00]} debt=3 earned=4 redeemed=5 expired=6');
SELECT wallet.policy_expiry('2026-11-22 23:00+00', '12 months', 'month') AS month_policy,
       wallet.policy_expiry('2026-11-22 23:00+00', '30 days', 'day') AS day_policy,
       wallet.policy_expiry('2026-11-30 23:00-05', '1 day', 'day') AS day_policy_utc,
       wallet.policy_expiry('2026-11-22 23:00+00', NULL, 'day') AS never;

-- FIFO: redeem spends the soonest-expiring lots first, never-expiring last
SELECT (s).amount, (s).balance_after, (s).lots, (s).ledger
  FROM (SELECT wallet.ledger_apply('lots={50@2027-03-01T00:00:00+00:00,10@2027-01-01T00:00:00+00:00,100@never,20@2027-02-01T00:00:00+00:00}',
                                   'redeem', '2026-12-01', 45) AS s) x;
-- at the boundary: the lot expiring at 2027-01-01 is spendable 1us before, not at the instant itself
SELECT (s).lots, (s).ledger
  FROM (SELECT wallet.ledger_apply('lots={10@2027-01-01T00:00:00+00:00,20@2027-02-01T00:00:00+00:00}',
                                   'redeem', '2026-12-31 23:59:59.999999', 15) AS s) x;
SELECT (s).lots, (s).ledger
  FROM (SELECT wallet.ledger_apply('lots={10@2027-01-01T00:00:00+00:00,20@2027-02-01T00:00:00+00:00}',
                                   'redeem', '2027-01-01 00:00:00', 15) AS s) x;
SELECT pg_temp.err($$SELECT wallet.ledger_apply('lots={10@2027-01-01T00:00:00+00:00,20@2027-02-01T00:00:00+00:00}', 'redeem', '2027-01-01 00:00:00', 21)$$);
-- expire: only lots dead at the instant, the rest stays
SELECT (s).amount, (s).lots, (s).ledger, (s).next_event
  FROM (SELECT wallet.ledger_apply('lots={10@2027-01-01T00:00:00+00:00,20@2027-02-01T00:00:00+00:00,5@never}',
                                   'expire', '2027-01-01 00:00:00', NULL) AS s) x;
-- accrual pays a debt first; same-expiry lots merge
SELECT (s).amount, (s).balance_after, (s).lots, (s).ledger
  FROM (SELECT wallet.ledger_apply('lots={10@2027-01-01T00:00:00+00:00} debt=4', 'accrue', '2026-06-15', 25, '2027-01-01') AS s) x;
-- hold, partial capture (soonest expiry first, the rest back), release
SELECT (s).amount, (s).lots, (s).ledger, (s).next_event
  FROM (SELECT wallet.ledger_apply('lots={10@2027-01-01T00:00:00+00:00,20@2027-02-01T00:00:00+00:00}',
                                   'hold', '2026-12-01', 25, '2026-12-01 00:15', 77) AS s) x;
SELECT (s).amount, (s).lots, (s).ledger
  FROM (SELECT wallet.ledger_apply('lots={5@2027-02-01T00:00:00+00:00} holds={77@2026-12-01T00:15:00+00:00[10@2027-01-01T00:00:00+00:00,15@2027-02-01T00:00:00+00:00]}',
                                   'capture', '2026-12-01 00:14:59', 12, NULL, 77) AS s) x;
SELECT pg_temp.err($$SELECT wallet.ledger_apply('holds={77@2026-12-01T00:15:00+00:00[10@2027-01-01T00:00:00+00:00]}', 'capture', '2026-12-01 00:15:00', 1, NULL, 77)$$) AS capture_at_hold_end;
SELECT (s).amount, (s).lots, (s).ledger
  FROM (SELECT wallet.ledger_apply('lots={5@2027-02-01T00:00:00+00:00} holds={77@2026-12-01T00:15:00+00:00[10@2027-01-01T00:00:00+00:00,15@2027-02-01T00:00:00+00:00]}',
                                   'release', '2026-12-01 00:20', NULL, NULL, 77) AS s) x;
-- a hold's points stay capturable within its TTL even after their own lot expired
SELECT (s).amount, (s).lots, (s).ledger
  FROM (SELECT wallet.ledger_apply('holds={77@2027-01-02T00:00:00+00:00[10@2027-01-01T00:00:00+00:00]}',
                                   'capture', '2027-01-01 12:00', NULL, NULL, 77) AS s) x;
-- reversal of an accrual: its own lot (same expiry) first; unlimited takes the rest, into debt
SELECT (s).amount, (s).lots, (s).ledger
  FROM (SELECT wallet.ledger_apply('lots={30@2027-01-01T00:00:00+00:00,8@never} earned=100',
                                   'reverse_accrual', '2026-12-01', 100, '2027-01-01', policy => 'within_balance') AS s) x;
SELECT (s).amount, (s).balance_after, (s).lots, (s).ledger
  FROM (SELECT wallet.ledger_apply('lots={30@2027-01-01T00:00:00+00:00,8@never} earned=100',
                                   'reverse_accrual', '2026-12-01', 100, '2027-01-01', policy => 'unlimited') AS s) x;
-- what is taken back also leaves the monthly earned bucket of the accrual's month
SELECT (s).amount, (s).ledger
  FROM (SELECT wallet.ledger_apply('lots={30@2027-01-01T00:00:00+00:00} earned=130 months={2026-11:100,2026-10:30}',
                                   'reverse_accrual', '2026-12-01', 100, '2027-01-01', policy => 'within_balance',
                                   earned_at => '2026-11-15') AS s) x;
SELECT (s).amount, (s).ledger, wallet.ledger_earned((s).ledger, '2026-01-01', '2027-01-01') AS earned_2026
  FROM (SELECT wallet.ledger_apply('lots={100@2027-01-01T00:00:00+00:00} earned=130 months={2026-11:100,2026-10:30}',
                                   'reverse_accrual', '2026-12-01', 100, '2027-01-01', policy => 'within_balance',
                                   earned_at => '2026-11-15') AS s) x;
-- a reversal of more than the ledger earned, or one leaving the kept months above the
-- lifetime total (its accrual's month not given), reverses no accrual of this ledger
SELECT pg_temp.err($$SELECT wallet.ledger_apply('lots={100@2027-01-01T00:00:00+00:00} earned=50', 'reverse_accrual', '2026-12-01', 100, '2027-01-01', policy => 'unlimited')$$) AS more_than_earned;
SELECT pg_temp.err($$SELECT wallet.ledger_apply('lots={100@2027-01-01T00:00:00+00:00} earned=130 months={2026-11:100,2026-10:30}', 'reverse_accrual', '2026-12-01', 100, '2027-01-01')$$) AS month_not_given;
-- restoring a redemption's lots with their original expiries (debt first)
SELECT (s).amount, (s).lots, (s).ledger
  FROM (SELECT wallet.ledger_apply('debt=2 redeemed=40', 'restore', '2026-12-01', NULL, NULL, NULL,
                                   ARRAY[10, 30], ARRAY['2027-01-01', NULL]::timestamptz[]) AS s) x;
-- lots whose expiry passed while they were held or spent do not come back spendable:
-- they count as expired at once, and the amount is what became spendable
SELECT (s).amount, (s).balance_after, (s).lots, (s).ledger
  FROM (SELECT wallet.ledger_apply('lots={5@never} redeemed=30', 'restore', '2027-01-15', NULL, NULL, NULL,
                                   ARRAY[10, 20], ARRAY['2027-01-01', '2027-02-01']::timestamptz[]) AS s) x;
SELECT (s).amount, (s).balance_after, (s).lots, (s).ledger
  FROM (SELECT wallet.ledger_apply('lots={5@never} holds={8@2027-03-01T00:00:00+00:00[10@2027-01-01T00:00:00+00:00,20@2027-02-01T00:00:00+00:00]}',
                                   'release', '2027-01-15', NULL, NULL, 8) AS s) x;
SELECT pg_temp.err($$SELECT wallet.ledger_apply('', 'restore', '2026-12-01', NULL, NULL, NULL, ARRAY[10], ARRAY['-infinity']::timestamptz[])$$) AS restore_minus_infinity;
-- overflow of a balance or total: WL205
SELECT pg_temp.err($$SELECT wallet.ledger_apply('lots={9223372036854775807@never}', 'accrue', '2026-12-01', 1, NULL)$$) AS overflow;
SELECT pg_temp.err($$SELECT wallet.ledger_apply('earned=9223372036854775807', 'accrue', '2026-12-01', 1, NULL)$$) AS earned_overflow;

-- Bounds (README, "limits of a points_ledger value"): at most 2,000 lots (spendable and
-- held together) and 1,000 open holds.  Input over a bound is 22P02; a change that would
-- take a ledger over one is 54000, and the ledger stays as it was.
CREATE TEMP TABLE big(n int, t text);
INSERT INTO big
SELECT n, 'lots={' || string_agg(format('1@"%s"', timestamptz '2030-01-01 00:00+00' + i * interval '1 second'), ',') || '}'
  FROM (VALUES (2000), (2001)) AS v(n), generate_series(1, n) AS i GROUP BY n;
INSERT INTO big
SELECT -n, 'holds={' || string_agg(format('%s@2030-01-01[%s@never]', i, i), ',') || '}'
  FROM (VALUES (1000), (1001)) AS v(n), generate_series(1, n) AS i GROUP BY n;
SELECT n, pg_temp.err(format('SELECT %L::wallet.points_ledger', t)) AS input FROM big ORDER BY n;
SELECT (SELECT count(*) FROM wallet.ledger_lots(t::wallet.points_ledger)) AS lots_at_bound,
       pg_temp.err(format($$SELECT wallet.ledger_apply(%L, 'accrue', '2026-12-01', 5, '2031-01-01')$$, t)) AS new_lot,
       (wallet.ledger_apply(t::wallet.points_ledger, 'accrue', '2026-12-01', 5, '2030-01-01 00:00:01+00')).amount AS same_expiry_merges,
       (wallet.ledger_apply(t::wallet.points_ledger, 'redeem', '2026-12-01', 5)).balance_after AS redeem_at_bound
  FROM big WHERE n = 2000;
SELECT pg_temp.err(format($$SELECT wallet.ledger_apply(%L, 'hold', '2026-12-01', 1, '2027-01-01', 5000)$$, t || ' lots={9@never}')) AS new_hold
  FROM big WHERE n = -1000;
SELECT pg_temp.err($$SELECT wallet.ledger_apply('', 'restore', '2026-12-01', NULL, NULL, NULL,
                                              array_fill(1::bigint, ARRAY[2001]), array_fill(NULL::timestamptz, ARRAY[2001]))$$) AS restore_too_many;
DROP TABLE big;

-- Size: two years of daily activity under a 12-month policy with month granularity.
CREATE TEMP TABLE sized(scenario text, l wallet.points_ledger);
DO $$
DECLARE
    l wallet.points_ledger := '';
    l_never_expired wallet.points_ledger := '';
    d timestamptz;
    i int := 0;
BEGIN
    FOR d IN SELECT generate_series('2024-01-01 12:00+00'::timestamptz, '2025-12-31 12:00+00', '1 day') LOOP
        i := i + 1;
        l := (wallet.ledger_apply(l, 'accrue', d, 100 + i % 50, wallet.policy_expiry(d, '12 months', 'month'))).ledger;
        l_never_expired := (wallet.ledger_apply(l_never_expired, 'accrue', d, 100 + i % 50, wallet.policy_expiry(d, '12 months', 'month'))).ledger;
        IF i % 7 = 0 THEN
            l := (wallet.ledger_apply(l, 'redeem', d, 300)).ledger;
            l_never_expired := (wallet.ledger_apply(l_never_expired, 'redeem', d, 300)).ledger;
        END IF;
        IF extract(day FROM d) = 1 THEN   -- a monthly expiry job
            l := (wallet.ledger_apply(l, 'expire', d, NULL)).ledger;
        END IF;
    END LOOP;
    INSERT INTO sized VALUES ('monthly expiry job', l), ('no expiry job ever', l_never_expired);
END
$$;
SELECT scenario, pg_column_size(l) <= 512 AS fits_512_bytes, pg_column_size(l) AS bytes,
       (SELECT count(*) FROM wallet.ledger_lots(l)) AS lots,
       wallet.ledger_balance(l, '2026-01-01') AS balance,
       wallet.ledger_earned(l, '2025-01-01', '2026-01-01') AS earned_2025
  FROM sized;

-- ===================================================== operations
SELECT wallet.create_merchant('Ledger Coffee') AS m \gset
SELECT wallet.create_program(:m, 'beans', '12 months', 'month') AS p \gset
SELECT wallet.create_program(:m, 'forever') AS p_never \gset
SELECT wallet.create_program(:m, 'century', '100 years', 'month') AS p_century \gset
SELECT pg_temp.err(format('SELECT wallet.create_program(%s, %L)', :m, 'beans')) AS duplicate_program;
SELECT pg_temp.err(format('SELECT wallet.create_program(%s, %L, %L)', :m, 'neg', '-1 day')) AS negative_expiry;
SELECT pg_temp.err(format('SELECT wallet.create_program(%s, %L, %L, %L)', :m, 'wk', '1 day', 'week')) AS bad_granularity;
SELECT pg_temp.err('SELECT wallet.create_program(999999, ''x'')') AS unknown_merchant;
SELECT program_id = :p AS is_p, name, expiry, granularity, closed_at FROM wallet.programs ORDER BY program_id;

SELECT wallet.open_account(:p, 'member-1') AS a \gset
SELECT wallet.open_account(:p, 'member-1') = :a AS open_again_same_account;
SELECT wallet.open_account(:p_century, 'member-2') AS b \gset
SELECT pg_temp.err('SELECT wallet.open_account(999999, ''x'')') AS unknown_program;
SELECT pg_temp.err(format('SELECT wallet.open_account(%s, %L)', :p, ' ')) AS blank_member;

-- accrue: explicit expiries keep the output stable; a retry returns the same entry
SELECT entry_id, kind, amount, balance_after, lots, reference FROM wallet.accrue(:a, 100, 'acc-1', 'purchase', 'order-1', '2030-01-01');
SELECT entry_id, kind, amount, balance_after FROM wallet.accrue(:a, 100, 'acc-1', 'purchase', 'order-1', '2030-01-01') AS retry;
SELECT entry_id, kind, amount, balance_after, lots FROM wallet.accrue(:a, 50, 'acc-2', 'purchase', 'order-2', '2029-06-01');
SELECT entry_id, kind, amount, balance_after, lots FROM wallet.accrue(:a, 25, 'acc-3', 'welcome bonus', NULL, '2031-01-01');
-- per policy: the end of the UTC month 100 years from now (masked: compare with policy_expiry)
SELECT kind, amount, expires_at = wallet.policy_expiry(created_at, '100 years', 'month') AS per_policy,
       expires_at > now() + interval '100 years' AS after_100_years
  FROM wallet.accrue(:b, 10, 'acc-b', 'purchase');
SELECT pg_temp.err(format('SELECT wallet.accrue(%s, 101, %L, %L, %L, %L)', :a, 'acc-1', 'purchase', 'order-1', '2030-01-01')) AS key_other_args;
SELECT pg_temp.err(format('SELECT wallet.redeem(%s, 100, %L, %L, %L)', :a, 'acc-1', 'purchase', 'order-1')) AS key_other_kind;
SELECT pg_temp.err(format('SELECT wallet.accrue(%s, 0, %L, %L)', :a, 'z', 'purchase')) AS zero;
SELECT pg_temp.err(format('SELECT wallet.accrue(%s, -5, %L, %L)', :a, 'z', 'purchase')) AS negative;
SELECT pg_temp.err(format('SELECT wallet.accrue(%s, 5, %L, %L)', :a, 'z', ' ')) AS blank_reason;
SELECT pg_temp.err(format('SELECT wallet.accrue(%s, 5, %L, NULL)', :a, 'z')) AS null_reason;
SELECT pg_temp.err(format('SELECT wallet.accrue(%s, 5, NULL, %L)', :a, 'x')) AS null_key;
SELECT pg_temp.err(format('SELECT wallet.accrue(%s, 5, %L, %L)', 999999, 'z', 'x')) AS unknown_account;
SELECT pg_temp.err(format('SELECT wallet.accrue(%s, 5, %L, %L, NULL, %L)', :a, 'z', 'x', '2001-01-01')) AS expiry_in_past;
SELECT pg_temp.err(format('SELECT wallet.accrue(%s, 9223372036854775807, %L, %L)', :a, 'z', 'x')) AS overflow;

-- redeem: soonest expiry first (2029-06-01 before 2030-01-01)
SELECT entry_id, kind, amount, balance_after, lots FROM wallet.redeem(:a, 70, 'red-1', 'coupon', 'order-3');
SELECT entry_id, kind, amount, balance_after FROM wallet.redeem(:a, 70, 'red-1', 'coupon', 'order-3') AS retry;
SELECT pg_temp.err(format('SELECT wallet.redeem(%s, 1000, %L, %L)', :a, 'red-2', 'coupon')) AS insufficient;
SELECT wallet.balance(:a) AS balance_unchanged;

-- hold / capture / release
SELECT entry_id AS h1 FROM wallet.hold(:a, 30, 'hold-1', '1 hour', 'checkout', 'order-4') \gset
SELECT kind, amount, balance_after, lots, hold_id = :h1 AS own_id, expires_at - created_at AS ttl FROM wallet.entries WHERE entry_id = :h1;
SELECT wallet.balance(:a) AS held_not_spendable;
SELECT pg_temp.err(format('SELECT wallet.capture(%s, 31)', :h1)) AS capture_too_much;
SELECT kind, amount, balance_after, lots, points, reference FROM wallet.capture(:h1, 20);
SELECT kind, amount, balance_after FROM wallet.capture(:h1, 20) AS identical_retry;
SELECT pg_temp.err(format('SELECT wallet.capture(%s, 10)', :h1)) AS capture_again;
SELECT pg_temp.err(format('SELECT wallet.release(%s)', :h1)) AS release_captured;
SELECT pg_temp.err('SELECT wallet.capture(999999)') AS unknown_hold;
SELECT entry_id AS h2 FROM wallet.hold(:a, 10, 'hold-2', '1 hour', 'checkout') \gset
SELECT kind, amount, balance_after, lots FROM wallet.release(:h2);
SELECT kind, amount FROM wallet.release(:h2) AS identical_retry;
SELECT pg_temp.err(format('SELECT wallet.capture(%s)', :h2)) AS capture_released;
SELECT pg_temp.err(format('SELECT wallet.hold(%s, 5, %L, %L, %L)', :a, 'hold-x', '0 seconds', 'checkout')) AS zero_ttl;
-- an expired hold stops holding at once and cannot be captured
SELECT entry_id AS h3 FROM wallet.hold(:a, 40, 'hold-3', '1 millisecond', 'checkout') \gset
SELECT pg_sleep(0.01);
SELECT wallet.balance(:a) AS lapsed_hold_counts_again;
SELECT pg_temp.err(format('SELECT wallet.capture(%s)', :h3)) AS capture_expired;
SELECT kind, amount, reason FROM wallet.entries WHERE hold_id = :h3 ORDER BY entry_id;

-- reverse: a redemption (lots restored with their original expiry), an accrual, at most once
SELECT entry_id AS r1 FROM wallet.entries WHERE idempotency_key = 'red-1' \gset
SELECT kind, amount, balance_after, lots, reverses = :r1 AS reverses_red_1 FROM wallet.reverse(:r1, 'rev-1', 'refund');
SELECT kind, amount FROM wallet.reverse(:r1, 'rev-1', 'refund') AS identical_retry;
SELECT pg_temp.err(format('SELECT wallet.reverse(%s, %L, %L)', :r1, 'rev-1b', 'refund')) AS reversed_twice;
SELECT pg_temp.err(format('SELECT wallet.reverse(%s, %L, %L)', :h1, 'rev-h', 'refund')) AS hold_not_reversible;
SELECT pg_temp.err(format('SELECT wallet.reverse(%s, %L, %L)', 999999, 'rev-u', 'refund')) AS unknown_entry;
SELECT pg_temp.err(format('SELECT wallet.reverse(%s, %L, %L, %L)', :r1, 'rev-p', 'refund', 'sometimes')) AS bad_policy;
-- that posting first journalled the lapsed hold's release
SELECT kind, amount, reason FROM wallet.entries WHERE hold_id = :h3 ORDER BY entry_id;
SELECT entry_id AS c1 FROM wallet.entries WHERE kind = 'capture' AND hold_id = :h1 \gset
SELECT kind, amount, lots FROM wallet.reverse(:c1, 'rev-c', 'refund of a capture');
SELECT entry_id AS acc3 FROM wallet.entries WHERE idempotency_key = 'acc-3' \gset
SELECT kind, amount, lots FROM wallet.reverse(:acc3, 'rev-acc-3', 'bonus withdrawn');

-- an accrual that was spent: within_balance takes back what is left, unlimited goes negative
SELECT wallet.open_account(:p_never, 'member-3') AS c \gset
SELECT amount, lots FROM wallet.accrue(:c, 100, 'c-acc', 'purchase');
SELECT amount, balance_after FROM wallet.redeem(:c, 80, 'c-red', 'coupon');
SELECT entry_id AS cacc FROM wallet.entries WHERE account_id = :c AND idempotency_key = 'c-acc' \gset
SELECT kind, amount, balance_after, policy FROM wallet.reverse(:cacc, 'c-rev', 'chargeback', 'unlimited');
SELECT wallet.balance(:c) AS negative_balance, (wallet.ledger_totals(ledger)).debt FROM wallet.accounts WHERE account_id = :c;
SELECT amount, balance_after, lots FROM wallet.accrue(:c, 50, 'c-acc-2', 'purchase') AS debt_paid_first;

-- adjust
SELECT kind, amount, balance_after, lots FROM wallet.adjust(:a, -10, 'a-adj-1', 'goodwill correction');
SELECT pg_temp.err(format('SELECT wallet.adjust(%s, -1, %L, %L)', :c, 'c-adj-1', 'x')) AS adjust_in_debt;
SELECT pg_temp.err(format('SELECT wallet.adjust(%s, 0, %L, %L)', :c, 'c-adj-0', 'x')) AS zero_adjust;
SELECT pg_temp.err(format('SELECT wallet.adjust(%s, -1000, %L, %L)', :c, 'c-adj-2', 'x')) AS adjust_below_zero;
SELECT kind, amount, balance_after, lots FROM wallet.adjust(:c, 7, 'c-adj-3', 'manual credit');

-- expire_points: an as_of in the future is refused (an expire entry cannot be
-- undone); as of now nothing is due yet (the expiry runs: test/tap)
SELECT pg_temp.err($$SELECT wallet.expire_points('2029-06-01')$$) AS future_as_of;
SELECT wallet.expire_points() AS expired_entries;
SELECT count(*) AS expire_entries FROM wallet.entries WHERE kind = 'expire';
-- expired lots never count, whether or not expire_points ran
SELECT wallet.balance(:a, '2029-06-01') AS balance_then;

-- the read side
SELECT kind, amount, balance_after FROM wallet.history(:a) ORDER BY entry_id;
SELECT count(*) AS accrue_entries_in_range FROM wallet.history(:a, '-infinity', 'infinity') WHERE kind = 'accrue';
SELECT pg_temp.err('SELECT * FROM wallet.history(999999)') AS unknown_account;
SELECT wallet.balance_at(:a, (SELECT created_at FROM wallet.entries WHERE idempotency_key = 'acc-2')) AS after_second_accrual,
       wallet.balance_at(:a, '2000-01-01') AS before_everything;
SELECT * FROM wallet.program_liability(:p, '2026-01-01');
SELECT * FROM wallet.program_liability(:p_never);
SELECT reference, kind, amount FROM wallet.entries WHERE reference = 'order-4' ORDER BY entry_id;
-- every entry's balance_after is the previous one plus its amount
SELECT count(*) AS entries, count(*) FILTER (WHERE balance_after <> coalesce(prev, 0) + amount) AS chain_breaks
  FROM (SELECT amount, balance_after, lag(balance_after) OVER (PARTITION BY account_id ORDER BY entry_id) AS prev
          FROM wallet.entries) x;
SELECT * FROM wallet.verify_ledger();
SELECT sum(amount) = wallet.balance(:a) AS journal_sums_to_balance FROM wallet.entries WHERE account_id = :a;

-- closed program: no new postings, but holds, reversals and expiry still work
SELECT wallet.close_program(:p_never);
SELECT pg_temp.err(format('SELECT wallet.accrue(%s, 1, %L, %L)', :c, 'c-late', 'x')) AS closed_accrue;
SELECT pg_temp.err(format('SELECT wallet.redeem(%s, 1, %L, %L)', :c, 'c-late', 'x')) AS closed_redeem;
SELECT pg_temp.err(format('SELECT wallet.open_account(%s, %L)', :p_never, 'member-9')) AS closed_open;
SELECT wallet.open_account(:p_never, 'member-3') = :c AS existing_account_still_found;
SELECT kind, amount FROM wallet.accrue(:c, 100, 'c-acc', 'purchase') AS retry_after_close;
SELECT pg_temp.err('SELECT wallet.close_program(999999)') AS unknown_program;

-- the journal is append-only; a superuser's tampering is found by verify_ledger
SELECT pg_temp.err('UPDATE wallet.entries SET amount = 0') AS no_update;
SELECT pg_temp.err('DELETE FROM wallet.entries') AS no_delete;
SELECT pg_temp.err('TRUNCATE wallet.entries') AS no_truncate;
UPDATE wallet.accounts SET ledger = 'lots={1000000@never}' WHERE account_id = :b;
SELECT account_id = :b AS is_b, stored_balance, replayed_balance, detail FROM wallet.verify_ledger();
SELECT count(*) AS rows_for_a FROM wallet.verify_ledger(:a);

DROP TABLE bin, bin2, sized;
DROP EXTENSION wallet;

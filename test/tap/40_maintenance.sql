-- pgTAP: maintenance groundwork (issue 8): expire_points refuses a future
-- as_of, the batched procedure's arguments, find_account, and balance_at
-- (which no longer replays the journal) against the journal replay.
--
-- One transaction, so now() is frozen; lots that must expire are given
-- expiries a fraction of a second after the clock, and the file waits.
-- The procedures' commits are tested by test/concurrency/expire_batches.t and
-- test/concurrency/maintenance_cron.t.
BEGIN;
SET LOCAL timezone = 'UTC';
SELECT plan(32);

SELECT wallet.create_merchant('tap maintenance') AS m \gset
SELECT wallet.create_program(:m, 'maint points', '12 months', 'month') AS p \gset
SELECT wallet.create_program(:m, 'maint other') AS p2 \gset
SELECT wallet.open_account(:p, 'nora') AS a \gset
SELECT (wallet.accrue(:a, 100, 'n-1', 'purchase', NULL, now() + interval '6 months')).balance_after \gset

-- ---------------------------------------------------------------------------
-- expire_points: no as_of in the future
-- ---------------------------------------------------------------------------
SELECT throws_ok($$SELECT wallet.expire_points(now() + interval '1 year')$$, '22023',
                 'cannot expire points as of a future instant',
                 'expire_points a year ahead is refused: 22023');
SELECT is(wallet.balance(:a), 100::bigint, 'the lot valid for six more months is still there');
SELECT is((SELECT count(*) FROM wallet.entries WHERE kind = 'expire'), 0::bigint, 'and nothing was expired');
SELECT throws_ok($$SELECT wallet.expire_points(clock_timestamp() + interval '1 second')$$, '22023', NULL,
                 'a second ahead of the clock is refused too (no tolerance)');
CREATE FUNCTION pg_temp.error_detail(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE d text;
BEGIN
    EXECUTE q;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
    RETURN d;
END $$;
SELECT matches(pg_temp.error_detail($$SELECT wallet.expire_points('2099-01-01')$$),
               '^The instant 2099-01-01 00:00:00\+00 is later than the current time; .*\.$',
               'the detail is a sentence naming the refused instant');
SELECT throws_ok($$SELECT wallet.expire_points(NULL)$$, '22004', NULL, 'expire_points(NULL): 22004');
SELECT throws_ok($$SELECT wallet.expire_points('-infinity')$$, '22023', 'as_of must be finite', 'expire_points(''-infinity''): 22023');
SELECT is(wallet.expire_points(), 0::bigint, 'expire_points() (as of now()) is accepted');
SELECT is(wallet.expire_points(clock_timestamp()), 0::bigint, 'expire_points(clock_timestamp()) is accepted');
SELECT throws_ok($$CALL wallet.expire_points_batched(now() + interval '1 day')$$, '22023', NULL,
                 'expire_points_batched refuses a future as_of: 22023');
SELECT throws_ok($$CALL wallet.expire_points_batched(now(), NULL)$$, '22004', 'batch_size must not be null',
                 'expire_points_batched with batch_size NULL: 22004, as evaluate_tiers_batched');
SELECT throws_ok($$CALL wallet.expire_points_batched(now(), 0)$$, '22023', NULL,
                 'expire_points_batched with batch_size 0: 22023');
SELECT throws_ok($$CALL wallet.expire_points_batched(now(), 10, 0)$$, '22023', NULL,
                 'expire_points_batched with max_batches 0: 22023');
-- it commits after each batch, which a transaction block does not allow
SELECT throws_ok($$CALL wallet.expire_points_batched()$$, '2D000', NULL,
                 'expire_points_batched inside a transaction block: 2D000 (use expire_points there)');

-- ---------------------------------------------------------------------------
-- find_account
-- ---------------------------------------------------------------------------
SELECT is(wallet.find_account(:p, 'nora'), :a::bigint, 'find_account finds the member''s account');
SELECT is(wallet.find_account(:p, 'nobody'), NULL::bigint, 'find_account of a member without an account: NULL');
SELECT is((SELECT count(*) FROM wallet.accounts WHERE member_ref = 'nobody'), 0::bigint, 'find_account opens no account');
SELECT is(wallet.find_account(:p2, 'nora'), NULL::bigint, 'find_account looks in the given program only');
SELECT throws_ok($$SELECT wallet.find_account(-1, 'nora')$$, 'WL214', 'unknown program',
                 'find_account in an unknown program: WL214, as the ledger raises');
SELECT throws_ok($$SELECT wallet.find_account(NULL, 'nora')$$, '22004', NULL, 'find_account(NULL, member): 22004');
SELECT throws_ok(format('SELECT wallet.find_account(%s, NULL)', :p), '22004', NULL, 'find_account(program, NULL): 22004');
SELECT throws_ok(format('SELECT wallet.find_account(%s, %L)', :p, '  '), '22023', NULL, 'find_account with a blank member: 22023');
SELECT is((SELECT provolatile FROM pg_proc WHERE oid = 'wallet.find_account(bigint, text)'::regprocedure), 'v',
          'find_account is VOLATILE: it finds an account opened earlier in the same statement (50_api)');
SELECT wallet.close_program(:p2);
SELECT is(wallet.find_account(:p2, 'nora'), NULL::bigint, 'find_account works in a closed program');

-- ---------------------------------------------------------------------------
-- balance_at equals the journal replay
-- ---------------------------------------------------------------------------
SELECT throws_ok(format('SELECT wallet.balance_at(%s, NULL)', :a), '22004', NULL, 'balance_at(account, NULL): 22004');
SELECT throws_ok($$SELECT wallet.balance_at(-1, now())$$, 'WL201', NULL, 'balance_at of an unknown account: WL201');

-- Random postings on 6 accounts for about 3 seconds: lots that expire and
-- holds that lapse within it, captures, releases, reversals, expiry runs as
-- of the clock and as of a moment ago, so that between entries lots expire
-- and holds lapse unsettled.
SELECT setseed(0.4711);
CREATE TEMP TABLE bal_accounts AS
    SELECT wallet.open_account(:p, 'random-' || i) AS account_id FROM generate_series(1, 6) i;
DO $$
DECLARE
    acc bigint;
    r double precision;
    h bigint;
    e bigint;
    i int;
BEGIN
    FOR i IN 1 .. 180 LOOP
        SELECT account_id INTO acc FROM bal_accounts ORDER BY random() LIMIT 1;
        r := random();
        BEGIN
            IF r < 0.3 THEN
                PERFORM wallet.accrue(acc, 1 + (random() * 50)::int, 'r-' || i, 'purchase', NULL,
                    CASE WHEN random() < 0.2 THEN NULL ELSE clock_timestamp() + random() * interval '1.5 seconds' END);
            ELSIF r < 0.45 THEN
                PERFORM wallet.redeem(acc, 1 + (random() * 30)::int, 'r-' || i, 'coupon');
            ELSIF r < 0.6 THEN
                PERFORM wallet.hold(acc, 1 + (random() * 20)::int, 'r-' || i, random() * interval '0.8 seconds' + interval '1 millisecond', 'checkout');
            ELSIF r < 0.75 THEN
                SELECT entry_id INTO h FROM wallet.entries WHERE account_id = acc AND kind = 'hold' ORDER BY random() LIMIT 1;
                IF h IS NOT NULL THEN
                    IF random() < 0.5 THEN PERFORM wallet.capture(h, CASE WHEN random() < 0.5 THEN 1 END);
                    ELSE PERFORM wallet.release(h); END IF;
                END IF;
            ELSIF r < 0.85 THEN
                SELECT entry_id INTO e FROM wallet.entries WHERE account_id = acc AND kind IN ('accrue', 'redeem', 'capture')
                 ORDER BY random() LIMIT 1;
                IF e IS NOT NULL THEN
                    PERFORM wallet.reverse(e, 'r-' || i, 'refund', CASE WHEN random() < 0.5 THEN 'unlimited' ELSE 'within_balance' END);
                END IF;
            ELSIF r < 0.93 THEN
                PERFORM wallet.expire_points(clock_timestamp() - random() * interval '0.3 seconds');
            END IF;
        EXCEPTION WHEN SQLSTATE 'WL203' OR SQLSTATE 'WL207' OR SQLSTATE 'WL208' OR SQLSTATE 'WL209' OR SQLSTATE 'WL210' THEN
            NULL;   -- refusals are part of the game
        END;
        PERFORM pg_sleep(0.015);
    END LOOP;
END $$;
-- And for sure once: an expiry run as of a moment ago, then a posting.
DO $$
DECLARE
    acc bigint := (SELECT min(account_id) FROM bal_accounts);
BEGIN
    PERFORM wallet.accrue(acc, 5, 'late-1', 'purchase', NULL, clock_timestamp() + interval '50 milliseconds');
    PERFORM pg_sleep(0.15);
    PERFORM wallet.expire_points(clock_timestamp() - interval '50 milliseconds');
    PERFORM wallet.accrue(acc, 5, 'late-2', 'purchase');
END $$;
-- Instants to compare at: every entry's created_at and the microsecond before
-- and after it, every lot expiry and hold end around it, 40 random instants.
CREATE TEMP TABLE bal_points AS
    SELECT DISTINCT b.account_id, t.ts
      FROM bal_accounts b
      JOIN LATERAL (
          SELECT x.created_at + d * interval '1 microsecond' AS ts
            FROM wallet.entries x, (VALUES (-1), (0), (1)) v(d) WHERE x.account_id = b.account_id
          UNION ALL
          SELECT x.expires_at + d * interval '1 microsecond'
            FROM wallet.entries x, (VALUES (-1), (0), (1)) v(d)
           WHERE x.account_id = b.account_id AND x.expires_at IS NOT NULL AND x.expires_at < 'infinity'
          UNION ALL
          SELECT s.lo + random() * (s.hi - s.lo)
            FROM (SELECT min(created_at) - interval '10 milliseconds' AS lo, clock_timestamp() AS hi
                    FROM wallet.entries WHERE account_id = b.account_id) s, generate_series(1, 40)
      ) t ON true;
-- which entry follows each instant: a settlement (the slow path) or a posting
CREATE TEMP TABLE bal_next AS
    SELECT p.account_id, p.ts,
           (SELECT x.kind = 'expire' OR (x.kind = 'release' AND x.expires_at IS NOT NULL)
              FROM wallet.entries x WHERE x.account_id = p.account_id AND x.created_at > p.ts
             ORDER BY x.entry_id LIMIT 1) AS settlement_next
      FROM bal_points p;
SELECT cmp_ok((SELECT count(*) FROM bal_next WHERE settlement_next), '>', 10::bigint,
              'the random journals have instants followed by a settlement (lots expired or holds lapsed in between)');
SELECT cmp_ok((SELECT count(*) FROM bal_next WHERE NOT settlement_next), '>', 100::bigint,
              'and instants followed by a posting');
SELECT cmp_ok((SELECT count(*) FROM bal_next WHERE settlement_next IS NULL), '>', 10::bigint,
              'and instants after the last entry');
SELECT cmp_ok((SELECT count(*) FROM wallet.entries x JOIN bal_accounts b USING (account_id)
                WHERE x.kind = 'expire' AND x.expires_at < x.created_at - interval '1 millisecond'), '>', 0::bigint,
              'and expire entries that took effect before they were written');
SELECT is_empty($$
    SELECT p.account_id, p.ts, wallet.balance_at(p.account_id, p.ts) AS balance_at,
           wallet.ledger_balance((wallet.replay_ledger(p.account_id, p.ts)).ledger, p.ts) AS replayed
      FROM bal_points p
     WHERE wallet.balance_at(p.account_id, p.ts)
           IS DISTINCT FROM wallet.ledger_balance((wallet.replay_ledger(p.account_id, p.ts)).ledger, p.ts)
$$, 'balance_at equals the balance of the journal replayed up to the instant, at every instant tried');
SELECT is_empty($$SELECT * FROM wallet.verify_ledger() v JOIN bal_accounts b USING (account_id)$$,
                'the random journals verify');

SELECT * FROM finish();
ROLLBACK;

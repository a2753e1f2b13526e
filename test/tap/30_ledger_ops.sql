-- pgTAP: the points ledger (issue 4), every operation and every error path.
--
-- The whole file is one transaction, so now() is frozen: wherever time matters
-- the tests pass explicit expires_at / as_of instants (years ahead, so that the
-- frozen now() never reaches them) instead of waiting.  Postings are stamped
-- with the clock, though: the capture of a lapsed hold (WL208) is tested with a
-- 1-second hold and a 1.1 s sleep, and balance_at/history with instants taken
-- between postings.
--
-- Operations are run through pg_temp.op(tag, sql), which keeps the returned
-- entry under a tag (or the error, when one was raised), so that one failing
-- call shows up as failed assertions on its values instead of aborting the file.
BEGIN;
SET LOCAL timezone = 'UTC';
SELECT plan(280);

CREATE TEMP TABLE ids (name text PRIMARY KEY, id bigint NOT NULL);
CREATE TEMP TABLE ops (tag text PRIMARY KEY, e wallet.entries NOT NULL);
CREATE TEMP TABLE op_errors (tag text, sqlstate text, message text);
-- Instants taken between postings (postings are stamped with the clock, not the frozen now()).
CREATE TEMP TABLE marks (name text PRIMARY KEY, at timestamptz NOT NULL);

CREATE FUNCTION pg_temp.id(text) RETURNS bigint LANGUAGE sql VOLATILE AS $$ SELECT id FROM ids WHERE name = $1 $$;
CREATE FUNCTION pg_temp.e(text) RETURNS wallet.entries LANGUAGE sql VOLATILE AS $$ SELECT e FROM ops WHERE tag = $1 $$;
CREATE FUNCTION pg_temp.eid(text) RETURNS bigint LANGUAGE sql VOLATILE AS $$ SELECT (e).entry_id FROM ops WHERE tag = $1 $$;
CREATE FUNCTION pg_temp.op(tag text, q text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r wallet.entries;
BEGIN
    EXECUTE q INTO STRICT r;
    INSERT INTO ops VALUES (tag, r);
EXCEPTION WHEN OTHERS THEN
    INSERT INTO op_errors VALUES (tag, SQLSTATE, SQLERRM);
END $$;
-- Entries posted for an account, and the sum of their amounts.
CREATE FUNCTION pg_temp.n_entries(bigint) RETURNS bigint LANGUAGE sql VOLATILE AS
    $$ SELECT count(*) FROM wallet.entries WHERE account_id = $1 $$;
CREATE FUNCTION pg_temp.journal_sum(bigint) RETURNS bigint LANGUAGE sql VOLATILE AS
    $$ SELECT coalesce(sum(amount), 0)::bigint FROM wallet.entries WHERE account_id = $1 $$;
-- Entries whose balance_after is not the running sum of their account's amounts up to them.
CREATE FUNCTION pg_temp.chain_breaks() RETURNS TABLE (account_id bigint, entry_id bigint, kind text, amount bigint, balance_after bigint, running bigint)
    LANGUAGE sql VOLATILE AS $$
    SELECT * FROM (SELECT account_id, entry_id, kind, amount, balance_after,
                          (sum(amount) OVER (PARTITION BY account_id ORDER BY entry_id))::bigint
                     FROM wallet.entries) x
     WHERE x.balance_after <> x.sum
$$;
CREATE FUNCTION pg_temp.ledger(bigint) RETURNS wallet.points_ledger LANGUAGE sql VOLATILE AS
    $$ SELECT ledger FROM wallet.accounts WHERE account_id = $1 $$;

-- ---------------------------------------------------------------------------
-- Programs and accounts
-- ---------------------------------------------------------------------------
INSERT INTO ids VALUES ('m', wallet.create_merchant('ledger tap merchant'));
INSERT INTO ids VALUES ('p', wallet.create_program(pg_temp.id('m'), 'tap points'));  -- points never expire
INSERT INTO ids VALUES ('p12', wallet.create_program(pg_temp.id('m'), 'tap 12 months', '12 months', 'month'));
INSERT INTO ids VALUES ('p30d', wallet.create_program(pg_temp.id('m'), 'tap 30 days', '30 days', 'day'));
INSERT INTO ids VALUES ('a1', wallet.open_account(pg_temp.id('p'), 'alice'));

SELECT isnt(pg_temp.id('p'), pg_temp.id('p12'), 'create_program returns a new id per program');
SELECT is(wallet.open_account(pg_temp.id('p'), 'alice'), pg_temp.id('a1'), 'open_account is idempotent: the same member gets the same account');
SELECT is((SELECT count(*) FROM wallet.accounts WHERE program_id = pg_temp.id('p') AND member_ref = 'alice'), 1::bigint,
          'open_account twice leaves one account row');
SELECT isnt(wallet.open_account(pg_temp.id('p'), 'bob'), pg_temp.id('a1'), 'another member gets another account');
SELECT isnt(wallet.open_account(pg_temp.id('p12'), 'alice'), pg_temp.id('a1'), 'the same member_ref in another program is another account');
SELECT is(wallet.balance(pg_temp.id('a1')), 0::bigint, 'a new account has balance 0');
SELECT throws_ok($$SELECT wallet.open_account(-1, 'nobody')$$, 'WL214', NULL, 'open_account on an unknown program: WL214');
SELECT throws_ok($$SELECT wallet.close_program(-1)$$, 'WL214', NULL, 'close_program of an unknown program: WL214');
SELECT throws_ok($$SELECT wallet.create_program(pg_temp.id('m'), 'weekly', '7 days', 'week')$$, '22023', NULL,
                 'create_program with an unknown granularity: 22023');

INSERT INTO ids SELECT 'a2', wallet.open_account(pg_temp.id('p'), 'bob');

-- ---------------------------------------------------------------------------
-- accrue
-- ---------------------------------------------------------------------------
SELECT pg_temp.op('acc1', $$SELECT * FROM wallet.accrue(pg_temp.id('a1'), 100, 'k-acc1', 'purchase', 'order-1', '2030-01-15 12:00+00')$$);
SELECT is((pg_temp.e('acc1')).kind, 'accrue', 'accrue posts an entry of kind accrue');
SELECT is((pg_temp.e('acc1')).account_id, pg_temp.id('a1'), 'accrue: entry is on the account');
SELECT is((pg_temp.e('acc1')).amount, 100::bigint, 'accrue: amount is the points earned');
SELECT is((pg_temp.e('acc1')).balance_after, 100::bigint, 'accrue: balance_after is the new balance');
SELECT is((pg_temp.e('acc1')).idempotency_key, 'k-acc1', 'accrue: entry keeps the idempotency key');
SELECT is((pg_temp.e('acc1')).reason, 'purchase', 'accrue: entry keeps the reason');
SELECT is((pg_temp.e('acc1')).reference, 'order-1', 'accrue: entry keeps the reference');
SELECT is((pg_temp.e('acc1')).actor, current_user, 'accrue: actor is current_user');
SELECT ok((pg_temp.e('acc1')).hold_id IS NULL AND (pg_temp.e('acc1')).reverses IS NULL, 'accrue: hold_id and reverses are NULL');
SELECT is((SELECT count(*) FROM wallet.entries WHERE entry_id = pg_temp.eid('acc1')), 1::bigint, 'accrue: the returned entry is in the journal');

SELECT pg_temp.op('acc2', $$SELECT * FROM wallet.accrue(pg_temp.id('a1'), 50, 'k-acc2', 'purchase', 'order-2', '2029-06-15 12:00+00')$$);
INSERT INTO marks VALUES ('after acc2', clock_timestamp());
SELECT pg_temp.op('acc3', $$SELECT * FROM wallet.accrue(pg_temp.id('a1'), 30, 'k-acc3', 'signup bonus')$$);
SELECT pg_temp.op('acc4', $$SELECT * FROM wallet.accrue(pg_temp.id('a1'), 20, 'k-acc4', 'purchase', NULL, '2030-01-15 12:00+00')$$);
SELECT is((pg_temp.e('acc4')).balance_after, 200::bigint, 'four accruals: balance_after 200');
SELECT is(wallet.balance(pg_temp.id('a1')), 200::bigint, 'balance() is 200 after accruing 100+50+30+20');
SELECT is(wallet.balance(pg_temp.id('a1'), '2029-06-15 11:59+00'), 200::bigint, 'balance just before the first expiry: all 200');
SELECT is(wallet.balance(pg_temp.id('a1'), '2029-06-16'), 150::bigint, 'balance after 2029-06-15: the 50-point lot has expired');
SELECT is(wallet.balance(pg_temp.id('a1'), '2030-01-16'), 30::bigint, 'balance after 2030-01-15: only the never-expiring 30 remain');
SELECT is(wallet.ledger_balance(pg_temp.ledger(pg_temp.id('a1')), now()), 200::bigint, 'ledger_balance of the stored ledger agrees');
SELECT is(wallet.ledger_expiring(pg_temp.ledger(pg_temp.id('a1')), '2029-01-01', '1 year'), 50::bigint,
          'ledger_expiring: 50 points expire in 2029');
SELECT is(wallet.ledger_expiring(pg_temp.ledger(pg_temp.id('a1')), '2029-01-01', '2 years'), 170::bigint,
          'ledger_expiring: 170 points expire by 2031 (lots of 2030-01-15 merged)');
SELECT is(wallet.ledger_earned(pg_temp.ledger(pg_temp.id('a1')), date_trunc('month', now()), date_trunc('month', now()) + interval '1 month'),
          200::bigint, 'ledger_earned counts the 200 points earned this month');
SELECT is(wallet.ledger_earned(pg_temp.ledger(pg_temp.id('a1')), date_trunc('month', now()) - interval '1 year', date_trunc('month', now())),
          0::bigint, 'ledger_earned: nothing earned in the months before');

-- Amount and account errors
SELECT throws_ok($$SELECT wallet.accrue(pg_temp.id('a1'), 0, 'k-bad1', 'purchase')$$, 'WL204', NULL, 'accrue 0 points: WL204');
SELECT throws_ok($$SELECT wallet.accrue(pg_temp.id('a1'), -5, 'k-bad2', 'purchase')$$, 'WL204', NULL, 'accrue negative points: WL204');
SELECT throws_ok($$SELECT wallet.accrue(pg_temp.id('a1'), 9223372036854775807, 'k-bad3', 'purchase')$$, 'WL205', NULL,
                 'accrue that overflows the balance: WL205');
SELECT throws_ok($$SELECT wallet.accrue(-1, 10, 'k-bad4', 'purchase')$$, 'WL201', NULL, 'accrue on an unknown account: WL201');
SELECT throws_ok($$SELECT wallet.accrue(pg_temp.id('a1'), 10, NULL, 'purchase')$$, '22004', NULL, 'accrue without an idempotency key: 22004');
SELECT throws_ok($$SELECT wallet.accrue(pg_temp.id('a1'), 10, 'k-bad8', NULL)$$, '22004', NULL, 'accrue without a reason: 22004');
SELECT throws_ok($$SELECT wallet.balance(-1)$$, 'WL201', NULL, 'balance of an unknown account: WL201');
SELECT throws_ok($$SELECT * FROM wallet.history(-1)$$, 'WL201', NULL, 'history of an unknown account: WL201');
SELECT is(wallet.balance(pg_temp.id('a1')), 200::bigint, 'failed accruals changed nothing');

-- ---------------------------------------------------------------------------
-- redeem: soonest-expiring lots first
-- ---------------------------------------------------------------------------
INSERT INTO marks VALUES ('before red1', clock_timestamp());
SELECT pg_temp.op('red1', $$SELECT * FROM wallet.redeem(pg_temp.id('a1'), 70, 'k-red1', 'coupon', 'order-3')$$);
SELECT is((pg_temp.e('red1')).kind, 'redeem', 'redeem posts an entry of kind redeem');
SELECT is((pg_temp.e('red1')).amount, -70::bigint, 'redeem: amount is minus the points spent');
SELECT is((pg_temp.e('red1')).balance_after, 130::bigint, 'redeem: balance_after 130');
SELECT is((pg_temp.e('red1')).reference, 'order-3', 'redeem: entry keeps the reference');
SELECT results_eq($$SELECT (x->>'points')::bigint, (x->>'expires_at')::timestamptz FROM jsonb_array_elements((pg_temp.e('red1')).lots) x ORDER BY 2$$,
                  $$VALUES (50::bigint, '2029-06-15 12:00+00'::timestamptz), (20, '2030-01-15 12:00+00')$$,
                  'redeem: the entry records the lots it spent, soonest-expiring first: 50 of 2029-06-15, 20 of 2030-01-15');
SELECT is(wallet.balance(pg_temp.id('a1'), '2029-06-16'), 130::bigint,
          'FIFO: the 50 points expiring 2029-06-15 were spent first (nothing left to expire then)');
SELECT is(wallet.balance(pg_temp.id('a1'), '2030-01-16'), 30::bigint,
          'FIFO: the other 20 came from the 2030-01-15 lot, the never-expiring lot is untouched');
SELECT is(wallet.ledger_expiring(pg_temp.ledger(pg_temp.id('a1')), '2029-01-01', '2 years'), 100::bigint,
          'FIFO: 100 of the 120 points of 2030-01-15 are left');

SELECT throws_ok($$SELECT wallet.redeem(pg_temp.id('a1'), 131, 'k-red2', 'coupon')$$, 'WL203', NULL, 'redeem more than the balance: WL203');
SELECT is(pg_temp.n_entries(pg_temp.id('a1')), 5::bigint, 'insufficient points: nothing posted');
SELECT is((SELECT count(*) FROM wallet.entries WHERE idempotency_key = 'k-red2'), 0::bigint, 'insufficient points: the key was not used');
SELECT is(wallet.balance(pg_temp.id('a1')), 130::bigint, 'insufficient points: balance unchanged');
SELECT throws_ok($$SELECT wallet.redeem(pg_temp.id('a1'), 0, 'k-bad5', 'coupon')$$, 'WL204', NULL, 'redeem 0 points: WL204');
SELECT throws_ok($$SELECT wallet.redeem(pg_temp.id('a1'), -1, 'k-bad6', 'coupon')$$, 'WL204', NULL, 'redeem negative points: WL204');
SELECT throws_ok($$SELECT wallet.redeem(-1, 1, 'k-bad7', 'coupon')$$, 'WL201', NULL, 'redeem on an unknown account: WL201');

-- A redemption refused for insufficient points can be retried with the same key once the points are there.
INSERT INTO ids SELECT 'a8', wallet.open_account(pg_temp.id('p'), 'ivy');
SELECT pg_temp.op('ivy1', $$SELECT * FROM wallet.accrue(pg_temp.id('a8'), 50, 'k-ivy1', 'purchase')$$);
SELECT throws_ok($$SELECT wallet.redeem(pg_temp.id('a8'), 60, 'k-ivy2', 'coupon')$$, 'WL203', NULL, 'redeem 60 of 50: WL203');
SELECT pg_temp.op('ivy3', $$SELECT * FROM wallet.accrue(pg_temp.id('a8'), 10, 'k-ivy3', 'purchase')$$);
SELECT pg_temp.op('ivy2', $$SELECT * FROM wallet.redeem(pg_temp.id('a8'), 60, 'k-ivy2', 'coupon')$$);
SELECT is((pg_temp.e('ivy2')).balance_after, 0::bigint, 'the refused key posts once the points are there: balance 0');

-- ---------------------------------------------------------------------------
-- Idempotency
-- ---------------------------------------------------------------------------
SELECT pg_temp.op('acc1-retry', $$SELECT * FROM wallet.accrue(pg_temp.id('a1'), 100, 'k-acc1', 'purchase', 'order-1', '2030-01-15 12:00+00')$$);
SELECT is((pg_temp.e('acc1-retry')).entry_id, pg_temp.eid('acc1'), 'accrue retried with the same key and arguments returns the original entry');
SELECT is((pg_temp.e('acc1-retry')).balance_after, 100::bigint, 'the retry returns the original balance_after');
SELECT pg_temp.op('red1-retry', $$SELECT * FROM wallet.redeem(pg_temp.id('a1'), 70, 'k-red1', 'coupon', 'order-3')$$);
SELECT is((pg_temp.e('red1-retry')).entry_id, pg_temp.eid('red1'), 'redeem retried with the same key and arguments returns the original entry');
SELECT is(pg_temp.n_entries(pg_temp.id('a1')), 5::bigint, 'retries post nothing');
SELECT is(wallet.balance(pg_temp.id('a1')), 130::bigint, 'retries change no balance');
SELECT throws_ok($$SELECT wallet.accrue(pg_temp.id('a1'), 101, 'k-acc1', 'purchase', 'order-1', '2030-01-15 12:00+00')$$, 'WL002', NULL,
                 'same key, other points: WL002');
SELECT throws_ok($$SELECT wallet.redeem(pg_temp.id('a1'), 100, 'k-acc1', 'purchase')$$, 'WL002', NULL,
                 'same key used for another operation: WL002');
SELECT throws_ok($$SELECT wallet.redeem(pg_temp.id('a1'), 71, 'k-red1', 'coupon', 'order-3')$$, 'WL002', NULL,
                 'redeem with a used key and other points: WL002');
SELECT is(pg_temp.n_entries(pg_temp.id('a1')), 5::bigint, 'rejected key reuse posts nothing');

-- ---------------------------------------------------------------------------
-- Holds: hold / capture (full, partial) / release
-- ---------------------------------------------------------------------------
SELECT pg_temp.op('bob0', $$SELECT * FROM wallet.accrue(pg_temp.id('a2'), 200, 'k-bob0', 'purchase')$$);
SELECT pg_temp.op('h1', $$SELECT * FROM wallet.hold(pg_temp.id('a2'), 80, 'k-h1', '1 hour', 'checkout', 'order-10')$$);
SELECT is((pg_temp.e('h1')).kind, 'hold', 'hold posts an entry of kind hold');
SELECT is((pg_temp.e('h1')).amount, -80::bigint, 'hold: amount is minus the held points (no longer spendable)');
SELECT is((pg_temp.e('h1')).balance_after, 120::bigint, 'hold: balance_after 120');
SELECT is((pg_temp.e('h1')).hold_id, pg_temp.eid('h1'), 'hold: hold_id is the entry''s own id');
SELECT is((pg_temp.e('h1')).reference, 'order-10', 'hold: entry keeps the reference');
SELECT is(wallet.balance(pg_temp.id('a2')), 120::bigint, 'held points are not spendable');
SELECT throws_ok($$SELECT wallet.redeem(pg_temp.id('a2'), 121, 'k-bob1', 'coupon')$$, 'WL203', NULL, 'redeem cannot spend held points: WL203');
SELECT throws_ok($$SELECT wallet.hold(pg_temp.id('a2'), 121, 'k-bob2', '1 hour', 'checkout')$$, 'WL203', NULL, 'hold cannot take held points: WL203');

SELECT pg_temp.op('cap1', $$SELECT * FROM wallet.capture(pg_temp.eid('h1'))$$);
SELECT is((pg_temp.e('cap1')).kind, 'capture', 'capture posts an entry of kind capture');
SELECT is((pg_temp.e('cap1')).hold_id, pg_temp.eid('h1'), 'capture: hold_id names the hold');
SELECT is((pg_temp.e('cap1')).amount, 0::bigint, 'full capture: spendable balance does not change again');
SELECT is((pg_temp.e('cap1')).balance_after, 120::bigint, 'full capture: balance_after 120');
SELECT is(wallet.balance(pg_temp.id('a2')), 120::bigint, 'full capture: the 80 points are gone for good');
SELECT pg_temp.op('cap1-again', $$SELECT * FROM wallet.capture(pg_temp.eid('h1'))$$);
SELECT is((pg_temp.e('cap1-again')).entry_id, pg_temp.eid('cap1'), 'repeating the identical capture returns the original entry');
SELECT throws_ok($$SELECT wallet.capture(pg_temp.eid('h1'), 10)$$, 'WL207', NULL, 'another capture of a captured hold: WL207');
SELECT throws_ok($$SELECT wallet.release(pg_temp.eid('h1'))$$, 'WL207', NULL, 'release of a captured hold: WL207');

SELECT pg_temp.op('h2', $$SELECT * FROM wallet.hold(pg_temp.id('a2'), 50, 'k-h2', '1 hour', 'checkout')$$);
SELECT is((pg_temp.e('h2')).balance_after, 70::bigint, 'second hold: balance_after 70');
SELECT pg_temp.op('cap2', $$SELECT * FROM wallet.capture(pg_temp.eid('h2'), 30)$$);
SELECT is((pg_temp.e('cap2')).kind, 'capture', 'partial capture posts a capture entry');
SELECT is((pg_temp.e('cap2')).hold_id, pg_temp.eid('h2'), 'partial capture: hold_id names the hold');
SELECT is((pg_temp.e('cap2')).balance_after, 90::bigint, 'partial capture of 30 of 50: the other 20 are spendable again');
SELECT is(wallet.balance(pg_temp.id('a2')), 90::bigint, 'partial capture: balance 90');
SELECT pg_temp.op('cap2-again', $$SELECT * FROM wallet.capture(pg_temp.eid('h2'), 30)$$);
SELECT is((pg_temp.e('cap2-again')).entry_id, pg_temp.eid('cap2'), 'repeating the identical partial capture returns the original entry');
SELECT throws_ok($$SELECT wallet.release(pg_temp.eid('h2'))$$, 'WL207', NULL, 'release after a partial capture: WL207 (the rest is already released)');
SELECT throws_ok($$SELECT wallet.capture(pg_temp.eid('h2'), 20)$$, 'WL207', NULL, 'capturing the released rest: WL207');

SELECT pg_temp.op('h3', $$SELECT * FROM wallet.hold(pg_temp.id('a2'), 40, 'k-h3', '1 hour', 'checkout')$$);
SELECT throws_ok($$SELECT wallet.capture(pg_temp.eid('h3'), 41)$$, 'WL209', NULL, 'capture of more than the hold: WL209');
SELECT throws_ok($$SELECT wallet.capture(pg_temp.eid('h3'), 0)$$, 'WL204', NULL, 'capture of 0 points: WL204');
SELECT throws_ok($$SELECT wallet.capture(pg_temp.eid('h3'), -1)$$, 'WL204', NULL, 'capture of negative points: WL204');
SELECT throws_ok($$SELECT wallet.capture(pg_temp.eid('h3'), NULL, repeat('k', 20000))$$, '22023', 'idempotency key is too long',
                 'capture with a key of 20000 characters: 22023, as accrue');
SELECT throws_ok($$SELECT wallet.capture(pg_temp.eid('h3'), 10, repeat('k', 257))$$, '22023', 'idempotency key is too long',
                 'capture with a key of 257 characters: 22023');
SELECT throws_ok($$SELECT wallet.release(pg_temp.eid('h3'), repeat('k', 20000))$$, '22023', 'idempotency key is too long',
                 'release with a key of 20000 characters: 22023, as accrue');
SELECT is((SELECT count(*) FROM wallet.entries WHERE length(idempotency_key) > 256), 0::bigint, 'no over-long key was stored');
SELECT is(wallet.balance(pg_temp.id('a2')), 50::bigint, 'refused captures leave the hold in place');
SELECT pg_temp.op('h3-retry', $$SELECT * FROM wallet.hold(pg_temp.id('a2'), 40, 'k-h3', '1 hour', 'checkout')$$);
SELECT is((pg_temp.e('h3-retry')).entry_id, pg_temp.eid('h3'), 'hold retried with the same key returns the original hold');
SELECT is(wallet.balance(pg_temp.id('a2')), 50::bigint, 'the hold retry holds nothing more');
SELECT throws_ok($$SELECT wallet.hold(pg_temp.id('a2'), 40, 'k-h3', '2 hours', 'checkout')$$, 'WL002', NULL,
                 'hold with a used key and another ttl: WL002');
SELECT pg_temp.op('rel3', $$SELECT * FROM wallet.release(pg_temp.eid('h3'))$$);
SELECT is((pg_temp.e('rel3')).kind, 'release', 'release posts an entry of kind release');
SELECT is((pg_temp.e('rel3')).amount, 40::bigint, 'release: amount gives the 40 points back');
SELECT is((pg_temp.e('rel3')).balance_after, 90::bigint, 'release: balance_after 90');
SELECT is((pg_temp.e('rel3')).hold_id, pg_temp.eid('h3'), 'release: hold_id names the hold');
SELECT pg_temp.op('rel3-again', $$SELECT * FROM wallet.release(pg_temp.eid('h3'))$$);
SELECT is((pg_temp.e('rel3-again')).entry_id, pg_temp.eid('rel3'), 'repeating the release returns the original entry');
SELECT throws_ok($$SELECT wallet.capture(pg_temp.eid('h3'))$$, 'WL207', NULL, 'capture of a released hold: WL207');
SELECT is(wallet.balance(pg_temp.id('a2')), 90::bigint, 'after hold/capture/release: balance 90');

SELECT throws_ok($$SELECT wallet.capture(-1)$$, 'WL206', NULL, 'capture of an unknown hold: WL206');
SELECT throws_ok($$SELECT wallet.release(-1)$$, 'WL206', NULL, 'release of an unknown hold: WL206');
SELECT throws_ok($$SELECT wallet.capture(pg_temp.eid('bob0'))$$, 'WL206', NULL, 'capture of an entry that is not a hold: WL206');
SELECT throws_ok($$SELECT wallet.hold(pg_temp.id('a2'), 0, 'k-bob3', '1 hour', 'checkout')$$, 'WL204', NULL, 'hold of 0 points: WL204');
SELECT throws_ok($$SELECT wallet.hold(pg_temp.id('a2'), -3, 'k-bob4', '1 hour', 'checkout')$$, 'WL204', NULL, 'hold of negative points: WL204');
SELECT throws_ok($$SELECT wallet.hold(pg_temp.id('a2'), 5, 'k-bob5', '0 seconds', 'checkout')$$, '22023', NULL, 'hold with a zero ttl: 22023');
SELECT throws_ok($$SELECT wallet.hold(pg_temp.id('a2'), 5, 'k-bob6', '-1 hour', 'checkout')$$, '22023', NULL, 'hold with a negative ttl: 22023');
SELECT throws_ok($$SELECT wallet.hold(-1, 5, 'k-bob7', '1 hour', 'checkout')$$, 'WL201', NULL, 'hold on an unknown account: WL201');

-- ---------------------------------------------------------------------------
-- Hold expiry: an expired hold stops holding at once, without a cleanup job
-- ---------------------------------------------------------------------------
INSERT INTO ids SELECT 'a3', wallet.open_account(pg_temp.id('p'), 'carol');
SELECT pg_temp.op('carol0', $$SELECT * FROM wallet.accrue(pg_temp.id('a3'), 100, 'k-carol0', 'purchase')$$);
SELECT pg_temp.op('h4', $$SELECT * FROM wallet.hold(pg_temp.id('a3'), 60, 'k-h4', '10 minutes', 'checkout')$$);
SELECT is(wallet.balance(pg_temp.id('a3')), 40::bigint, 'a 10-minute hold of 60 leaves 40 spendable');
SELECT is(wallet.balance(pg_temp.id('a3'), now() + interval '9 minutes'), 40::bigint, 'within its ttl the hold still holds');
SELECT is(wallet.balance(pg_temp.id('a3'), now() + interval '11 minutes'), 100::bigint, 'past its ttl the hold holds nothing, with no job run');
SELECT is(wallet.ledger_balance(pg_temp.ledger(pg_temp.id('a3')), now() + interval '11 minutes'), 100::bigint,
          'ledger_balance of the stored ledger: the expired hold holds nothing');
-- Holds lapse by the clock (clock_timestamp()), so a 1-second hold has lapsed after a 1.1 s sleep even in this transaction.
SELECT pg_temp.op('h5', $$SELECT * FROM wallet.hold(pg_temp.id('a3'), 10, 'k-h5', '1 second', 'checkout')$$);
SELECT is((pg_temp.e('h5')).balance_after, 30::bigint, 'a 1-second hold of 10 more: 30 spendable');
-- A hold once granted can be captured within its ttl even when the lot it holds expires meanwhile.
INSERT INTO ids SELECT 'a10', wallet.open_account(pg_temp.id('p'), 'lou');
SELECT pg_temp.op('lou1', $$SELECT * FROM wallet.accrue(pg_temp.id('a10'), 20, 'k-lou1', 'purchase', NULL, clock_timestamp() + interval '1 second')$$);
SELECT pg_temp.op('h6', $$SELECT * FROM wallet.hold(pg_temp.id('a10'), 20, 'k-h6', '1 hour', 'checkout')$$);
-- Points that expire while they are out of the spendable balance (spent, or held) do not come back
-- spendable when the redemption is reversed or the hold released.
INSERT INTO ids SELECT 'a11', wallet.open_account(pg_temp.id('p'), 'mia');
SELECT pg_temp.op('mia1', $$SELECT * FROM wallet.accrue(pg_temp.id('a11'), 20, 'k-mia1', 'purchase', NULL, clock_timestamp() + interval '1 second')$$);
SELECT pg_temp.op('mia2', $$SELECT * FROM wallet.accrue(pg_temp.id('a11'), 5, 'k-mia2', 'purchase')$$);
SELECT pg_temp.op('mia3', $$SELECT * FROM wallet.redeem(pg_temp.id('a11'), 20, 'k-mia3', 'coupon')$$);
INSERT INTO ids SELECT 'a12', wallet.open_account(pg_temp.id('p'), 'ned');
SELECT pg_temp.op('ned1', $$SELECT * FROM wallet.accrue(pg_temp.id('a12'), 20, 'k-ned1', 'purchase', NULL, clock_timestamp() + interval '1 second')$$);
SELECT pg_temp.op('ned2', $$SELECT * FROM wallet.accrue(pg_temp.id('a12'), 5, 'k-ned2', 'purchase')$$);
SELECT pg_temp.op('h7', $$SELECT * FROM wallet.hold(pg_temp.id('a12'), 20, 'k-h7', '1 hour', 'checkout')$$);
-- Two holds that lapse together are both released (journalled) by the next posting on the account.
INSERT INTO ids SELECT 'a13', wallet.open_account(pg_temp.id('p'), 'olga');
SELECT pg_temp.op('olga1', $$SELECT * FROM wallet.accrue(pg_temp.id('a13'), 100, 'k-olga1', 'purchase')$$);
SELECT pg_temp.op('h8', $$SELECT * FROM wallet.hold(pg_temp.id('a13'), 30, 'k-h8', '1 second', 'checkout')$$);
SELECT pg_temp.op('h9', $$SELECT * FROM wallet.hold(pg_temp.id('a13'), 20, 'k-h9', '1 second', 'checkout')$$);
SELECT pg_sleep(1.1);
SELECT pg_temp.op('olga2', $$SELECT * FROM wallet.accrue(pg_temp.id('a13'), 1, 'k-olga2', 'purchase')$$);
SELECT is((pg_temp.e('olga2')).balance_after, 101::bigint, 'after two holds lapsed, the next accrual finds all 100 points spendable again');
SELECT is((SELECT string_agg(amount::text, ',' ORDER BY amount) FROM wallet.entries WHERE account_id = pg_temp.id('a13') AND kind = 'release'),
          '20,30', 'both lapsed holds are journalled as releases of 30 and 20');
SELECT is_empty($$SELECT * FROM pg_temp.chain_breaks() WHERE account_id = pg_temp.id('a13')$$,
                'the two releases chain: each balance_after is the previous balance_after + its amount');
SELECT pg_temp.op('mia4', $$SELECT * FROM wallet.reverse(pg_temp.eid('mia3'), 'k-mia4', 'order cancelled')$$);
SELECT is(wallet.balance(pg_temp.id('a11'), clock_timestamp()), 5::bigint, 'reversing a redemption whose lot has expired since gives back no spendable points');
SELECT is((pg_temp.e('mia4')).balance_after, (pg_temp.e('mia3')).balance_after + (pg_temp.e('mia4')).amount,
          'that reversal''s amount is the change of the balance (balance_after = previous balance_after + amount)');
SELECT pg_temp.op('rel7', $$SELECT * FROM wallet.release(pg_temp.eid('h7'))$$);
SELECT is(wallet.balance(pg_temp.id('a12'), clock_timestamp()), 5::bigint, 'releasing a hold whose lot has expired since gives back no spendable points');
SELECT is((pg_temp.e('rel7')).balance_after, (pg_temp.e('h7')).balance_after + (pg_temp.e('rel7')).amount,
          'that release''s amount is the change of the balance (balance_after = previous balance_after + amount)');
SELECT pg_temp.op('cap6', $$SELECT * FROM wallet.capture(pg_temp.eid('h6'))$$);
SELECT is((pg_temp.e('cap6')).kind || ' of hold ' || (pg_temp.e('cap6')).hold_id, 'capture of hold ' || pg_temp.eid('h6'),
          'a hold is captured within its ttl although its lot has expired since');
SELECT throws_ok($$SELECT wallet.capture(pg_temp.eid('h5'))$$, 'WL208', NULL, 'capture of a lapsed hold: WL208');
SELECT throws_ok($$SELECT wallet.capture(pg_temp.eid('h5'), 5)$$, 'WL208', NULL, 'partial capture of a lapsed hold: WL208');
SELECT is(wallet.balance(pg_temp.id('a3'), clock_timestamp()), 40::bigint, 'the lapsed hold stopped holding at once: 40 spendable again');
SELECT pg_temp.op('carol1', $$SELECT * FROM wallet.redeem(pg_temp.id('a3'), 40, 'k-carol1', 'coupon')$$);
SELECT is((pg_temp.e('carol1')).balance_after, 0::bigint, 'the points of the lapsed hold can be spent, with no job run');
SELECT pg_temp.op('rel5', $$SELECT * FROM wallet.release(pg_temp.eid('h5'))$$);
SELECT is((pg_temp.e('rel5')).kind || ' ' || (pg_temp.e('rel5')).amount, 'release 10', 'release of a lapsed hold is no error: its release gave back 10');
SELECT is(pg_temp.journal_sum(pg_temp.id('a3')), 0::bigint, 'the journal explains the lapse: carol''s entries sum to her balance 0');
SELECT throws_ok($$SELECT wallet.accrue(pg_temp.id('a3'), 10, 'k-carol2', 'purchase', NULL, now() - interval '1 day')$$, '22023', NULL,
                 'accrue with an expiry in the past: 22023');

-- ---------------------------------------------------------------------------
-- reverse of an accrual
-- ---------------------------------------------------------------------------
-- within_balance takes back what is left of the accrual.
INSERT INTO ids SELECT 'a4', wallet.open_account(pg_temp.id('p'), 'dave');
SELECT pg_temp.op('d1', $$SELECT * FROM wallet.accrue(pg_temp.id('a4'), 100, 'k-d1', 'purchase', 'order-20', '2031-03-15 12:00+00')$$);
SELECT pg_temp.op('d2', $$SELECT * FROM wallet.accrue(pg_temp.id('a4'), 50, 'k-d2', 'purchase', 'order-21', '2030-03-15 12:00+00')$$);
SELECT pg_temp.op('d3', $$SELECT * FROM wallet.redeem(pg_temp.id('a4'), 120, 'k-d3', 'coupon')$$);
SELECT is((pg_temp.e('d3')).balance_after, 30::bigint, 'dave: 150 earned, 120 spent (the 50 of 2030 first, then 70 of the 100)');
SELECT pg_temp.op('rv1', $$SELECT * FROM wallet.reverse(pg_temp.eid('d1'), 'k-rv1', 'refund of order-20')$$);
SELECT is((pg_temp.e('rv1')).kind, 'reverse', 'reverse posts an entry of kind reverse');
SELECT is((pg_temp.e('rv1')).reverses, pg_temp.eid('d1'), 'reverse: reverses names the undone entry');
SELECT is((pg_temp.e('rv1')).amount, -30::bigint, 'reverse of an accrual (within_balance): takes back only the 30 unspent points');
SELECT is((pg_temp.e('rv1')).balance_after, 0::bigint, 'reverse of an accrual: balance_after 0, never negative');
SELECT is(wallet.balance(pg_temp.id('a4')), 0::bigint, 'dave: balance 0 after the reversal');
SELECT throws_ok($$SELECT wallet.reverse(pg_temp.eid('d1'), 'k-rv1b', 'refund again')$$, 'WL210', NULL,
                 'reversing an entry twice (new key): WL210');
SELECT pg_temp.op('rv1-retry', $$SELECT * FROM wallet.reverse(pg_temp.eid('d1'), 'k-rv1', 'refund of order-20')$$);
SELECT is((pg_temp.e('rv1-retry')).entry_id, pg_temp.eid('rv1'), 'reverse retried with its key returns the original reversal');
SELECT throws_ok($$SELECT wallet.reverse(pg_temp.eid('d2'), 'k-rv1', 'refund of order-20')$$, 'WL002', NULL,
                 'reverse with a used key and another entry: WL002');
SELECT is(pg_temp.n_entries(pg_temp.id('a4')), 4::bigint, 'dave: the retry posted nothing');

-- An accrual whose points were all spent (it expired first, so FIFO spent it first) has nothing left to take back.
INSERT INTO ids SELECT 'a5', wallet.open_account(pg_temp.id('p'), 'erin');
SELECT pg_temp.op('e1', $$SELECT * FROM wallet.accrue(pg_temp.id('a5'), 100, 'k-e1', 'purchase', 'order-30', '2030-03-15 12:00+00')$$);
SELECT pg_temp.op('e2', $$SELECT * FROM wallet.accrue(pg_temp.id('a5'), 50, 'k-e2', 'purchase', 'order-31', '2031-03-15 12:00+00')$$);
SELECT pg_temp.op('e3', $$SELECT * FROM wallet.redeem(pg_temp.id('a5'), 120, 'k-e3', 'coupon')$$);
SELECT pg_temp.op('rv2', $$SELECT * FROM wallet.reverse(pg_temp.eid('e1'), 'k-rv2', 'refund of order-30')$$);
SELECT is((pg_temp.e('rv2')).amount, 0::bigint,
          'within_balance reversal of an accrual that was spent in full takes nothing (the 30 left belong to another accrual)');
SELECT is(wallet.balance(pg_temp.id('a5')), 30::bigint, 'erin keeps the 30 points of order-31');

-- 'unlimited' takes back everything, the balance goes negative, and later accruals pay the debt first.
INSERT INTO ids SELECT 'a6', wallet.open_account(pg_temp.id('p'), 'frank');
SELECT pg_temp.op('f1', $$SELECT * FROM wallet.accrue(pg_temp.id('a6'), 100, 'k-f1', 'purchase', 'order-40')$$);
SELECT pg_temp.op('f2', $$SELECT * FROM wallet.redeem(pg_temp.id('a6'), 70, 'k-f2', 'coupon')$$);
SELECT pg_temp.op('rv3', $$SELECT * FROM wallet.reverse(pg_temp.eid('f1'), 'k-rv3', 'chargeback of order-40', 'unlimited')$$);
SELECT is((pg_temp.e('rv3')).amount, -100::bigint, 'unlimited reversal of an accrual takes back all 100 points');
SELECT is((pg_temp.e('rv3')).balance_after, -70::bigint, 'unlimited reversal: balance_after -70');
SELECT is(wallet.balance(pg_temp.id('a6')), -70::bigint, 'frank owes 70 points');
SELECT throws_ok($$SELECT wallet.redeem(pg_temp.id('a6'), 1, 'k-f3', 'coupon')$$, 'WL203', NULL, 'a negative balance cannot redeem: WL203');
SELECT pg_temp.op('f4', $$SELECT * FROM wallet.accrue(pg_temp.id('a6'), 50, 'k-f4', 'purchase')$$);
SELECT is((pg_temp.e('f4')).balance_after, -20::bigint, 'a later accrual pays the debt first: -70 + 50 = -20');
SELECT pg_temp.op('f5', $$SELECT * FROM wallet.accrue(pg_temp.id('a6'), 40, 'k-f5', 'purchase', NULL, '2030-05-15 12:00+00')$$);
SELECT is((pg_temp.e('f5')).balance_after, 20::bigint, 'the next accrual clears the debt: balance 20');
SELECT is(wallet.balance(pg_temp.id('a6'), '2030-05-16'), 0::bigint,
          'the 20 left are what remains of the 40-point lot (expiring 2030-05-15): the debt was paid before a lot was made');
-- A debt made while points were held: once the hold is released, only the points net of the debt are spendable.
INSERT INTO ids SELECT 'a14', wallet.open_account(pg_temp.id('p'), 'pia');
SELECT pg_temp.op('pia1', $$SELECT * FROM wallet.accrue(pg_temp.id('a14'), 100, 'k-pia1', 'purchase', 'order-70')$$);
SELECT pg_temp.op('pia2', $$SELECT * FROM wallet.accrue(pg_temp.id('a14'), 50, 'k-pia2', 'purchase', NULL, '2030-08-15 12:00+00')$$);
SELECT pg_temp.op('h10', $$SELECT * FROM wallet.hold(pg_temp.id('a14'), 120, 'k-h10', '1 hour', 'checkout')$$);
SELECT pg_temp.op('pia3', $$SELECT * FROM wallet.reverse(pg_temp.eid('pia1'), 'k-pia3', 'chargeback of order-70', 'unlimited')$$);
SELECT is((pg_temp.e('pia3')).balance_after, -70::bigint, 'unlimited reversal while 120 are held: 30 taken from the lot, 70 owed');
SELECT pg_temp.op('rel10', $$SELECT * FROM wallet.release(pg_temp.eid('h10'))$$);
SELECT is((pg_temp.e('rel10')).balance_after, 50::bigint, 'the released 120 pay the 70 owed: balance 50');
SELECT throws_ok($$SELECT wallet.redeem(pg_temp.id('a14'), 51, 'k-pia4', 'coupon')$$, 'WL203', NULL,
                 'redeem beyond the balance net of the debt: WL203');
SELECT throws_ok($$SELECT wallet.hold(pg_temp.id('a14'), 51, 'k-pia5', '1 hour', 'checkout')$$, 'WL203', NULL,
                 'hold beyond the balance net of the debt: WL203');
SELECT pg_temp.op('pia6', $$SELECT * FROM wallet.redeem(pg_temp.id('a14'), 50, 'k-pia6', 'coupon')$$);
SELECT is((pg_temp.e('pia6')).balance_after, 0::bigint, 'the 50 net of the debt can be spent: balance 0');
SELECT throws_ok($$SELECT wallet.reverse(pg_temp.eid('acc3'), 'k-rv-bad', 'x', 'sometimes')$$, '22023', NULL, 'reverse with an unknown policy: 22023');

-- ---------------------------------------------------------------------------
-- reverse of a redemption: the lots come back with their original expiry
-- ---------------------------------------------------------------------------
INSERT INTO ids SELECT 'a7', wallet.open_account(pg_temp.id('p'), 'gina');
SELECT pg_temp.op('g1', $$SELECT * FROM wallet.accrue(pg_temp.id('a7'), 50, 'k-g1', 'purchase', NULL, '2030-03-15 12:00+00')$$);
SELECT pg_temp.op('g2', $$SELECT * FROM wallet.accrue(pg_temp.id('a7'), 50, 'k-g2', 'purchase', NULL, '2031-03-15 12:00+00')$$);
SELECT pg_temp.op('g3', $$SELECT * FROM wallet.redeem(pg_temp.id('a7'), 70, 'k-g3', 'coupon', 'order-50')$$);
SELECT is(wallet.balance(pg_temp.id('a7'), '2030-03-16'), 30::bigint, 'gina before the reversal: 30 left, all in the 2031 lot');
SELECT pg_temp.op('rv4', $$SELECT * FROM wallet.reverse(pg_temp.eid('g3'), 'k-rv4', 'order-50 cancelled')$$);
SELECT is((pg_temp.e('rv4')).kind, 'reverse', 'reverse of a redemption posts a reverse entry');
SELECT is((pg_temp.e('rv4')).reverses, pg_temp.eid('g3'), 'reverse of a redemption names it');
SELECT is((pg_temp.e('rv4')).amount, 70::bigint, 'reverse of a redemption gives back all 70 points');
SELECT is((pg_temp.e('rv4')).balance_after, 100::bigint, 'reverse of a redemption: balance_after 100');
SELECT is(wallet.balance(pg_temp.id('a7'), '2030-03-16'), 50::bigint,
          'the restored 50 keep their original expiry 2030-03-15');
SELECT is(wallet.balance(pg_temp.id('a7'), '2031-03-16'), 0::bigint,
          'the restored 20 keep their original expiry 2031-03-15');
SELECT is(wallet.ledger_expiring(pg_temp.ledger(pg_temp.id('a7')), '2030-01-01', '6 months'), 50::bigint,
          'ledger_expiring: the 2030 lot is whole again');
SELECT throws_ok($$SELECT wallet.reverse(pg_temp.eid('g3'), 'k-rv4b', 'cancelled again')$$, 'WL210', NULL, 'reversing a redemption twice: WL210');
SELECT throws_ok($$SELECT wallet.reverse(pg_temp.eid('rv4'), 'k-rv5', 'undo the undo')$$, 'WL211', NULL, 'a reverse entry is not reversible: WL211');
SELECT throws_ok($$SELECT wallet.reverse(pg_temp.eid('h1'), 'k-rv6', 'x')$$, 'WL211', NULL, 'a hold entry is not reversible: WL211');
SELECT throws_ok($$SELECT wallet.reverse(pg_temp.eid('rel3'), 'k-rv7', 'x')$$, 'WL211', NULL, 'a release entry is not reversible: WL211');
SELECT throws_ok($$SELECT wallet.reverse(-1, 'k-rv8', 'x')$$, 'WL212', NULL, 'reverse of an unknown entry: WL212');
-- the lots of a restore: one-dimensional arrays of one length (22023 as for every array argument)
SELECT throws_ok($$SELECT wallet.ledger_apply('', 'restore', '2030-01-01', NULL, NULL, NULL, ARRAY[1, 2]::bigint[], ARRAY['2031-01-01']::timestamptz[])$$,
                 '22023', 'lot arrays differ in length', 'ledger_apply restore with lot arrays of other lengths: 22023');
SELECT throws_ok($$SELECT wallet.ledger_apply('', 'restore', '2030-01-01', NULL, NULL, NULL, ARRAY[[1, 2]]::bigint[], ARRAY[['2031-01-01', '2031-01-01']]::timestamptz[])$$,
                 '22023', 'lot_points and lot_expiries must be one-dimensional arrays', 'ledger_apply restore with 2-D lot arrays: 22023, not flattened');

-- A capture is a redemption too: reversing it restores the captured points.
INSERT INTO ids SELECT 'a9', wallet.open_account(pg_temp.id('p'), 'kim');
SELECT pg_temp.op('k1', $$SELECT * FROM wallet.accrue(pg_temp.id('a9'), 100, 'k-k1', 'purchase', NULL, '2030-06-15 12:00+00')$$);
SELECT pg_temp.op('k2', $$SELECT * FROM wallet.hold(pg_temp.id('a9'), 60, 'k-k2', '1 hour', 'checkout', 'order-60')$$);
SELECT pg_temp.op('k3', $$SELECT * FROM wallet.capture(pg_temp.eid('k2'), 40)$$);
SELECT pg_temp.op('k4', $$SELECT * FROM wallet.reverse(pg_temp.eid('k3'), 'k-k4', 'order-60 refunded')$$);
SELECT is((pg_temp.e('k4')).amount, 40::bigint, 'reverse of a capture gives back the 40 captured points');
SELECT is((pg_temp.e('k4')).balance_after, 100::bigint, 'reverse of a capture: balance_after 100');
SELECT is(wallet.balance(pg_temp.id('a9'), '2030-06-16'), 0::bigint, 'the restored points keep their expiry 2030-06-15');

-- ---------------------------------------------------------------------------
-- adjust
-- ---------------------------------------------------------------------------
SELECT pg_temp.op('adj1', $$SELECT * FROM wallet.adjust(pg_temp.id('a7'), 25, 'k-adj1', 'goodwill')$$);
SELECT is((pg_temp.e('adj1')).kind, 'adjust', 'adjust posts an entry of kind adjust');
SELECT is((pg_temp.e('adj1')).amount, 25::bigint, 'adjust +25: amount 25');
SELECT is((pg_temp.e('adj1')).balance_after, 125::bigint, 'adjust +25: balance_after 125');
SELECT is((pg_temp.e('adj1')).reason, 'goodwill', 'adjust keeps its reason');
SELECT pg_temp.op('adj2', $$SELECT * FROM wallet.adjust(pg_temp.id('a7'), -5, 'k-adj2', 'correction')$$);
SELECT is((pg_temp.e('adj2')).amount, -5::bigint, 'adjust -5: amount -5');
SELECT is((pg_temp.e('adj2')).balance_after, 120::bigint, 'adjust -5: balance_after 120');
SELECT pg_temp.op('adj1-retry', $$SELECT * FROM wallet.adjust(pg_temp.id('a7'), 25, 'k-adj1', 'goodwill')$$);
SELECT is((pg_temp.e('adj1-retry')).entry_id, pg_temp.eid('adj1'), 'adjust retried with its key returns the original entry');
SELECT throws_ok($$SELECT wallet.adjust(pg_temp.id('a7'), 26, 'k-adj1', 'goodwill')$$, 'WL002', NULL,
                 'adjust with a used key and other points: WL002');
SELECT throws_ok($$SELECT wallet.adjust(pg_temp.id('a7'), 0, 'k-adj3', 'nothing')$$, 'WL204', NULL, 'adjust by 0: WL204');
SELECT throws_ok($$SELECT wallet.adjust(pg_temp.id('a7'), -9223372036854775808, 'k-adj8', 'correction')$$, 'WL205', NULL,
                 'adjust by the smallest bigint: WL205');
SELECT throws_ok($$SELECT wallet.adjust(pg_temp.id('a7'), 9223372036854775807, 'k-adj9', 'correction')$$, 'WL205', NULL,
                 'adjust that overflows the balance: WL205');
SELECT throws_ok($$SELECT wallet.adjust(pg_temp.id('a7'), 5, 'k-adj4', NULL)$$, '22004', NULL, 'adjust without a reason: 22004');
SELECT throws_ok($$SELECT wallet.adjust(pg_temp.id('a7'), 5, 'k-adj5', '   ')$$, '22023', NULL, 'adjust with a blank reason: 22023');
SELECT throws_ok($$SELECT wallet.adjust(-1, 5, 'k-adj6', 'goodwill')$$, 'WL201', NULL, 'adjust on an unknown account: WL201');
SELECT throws_ok($$SELECT wallet.adjust(pg_temp.id('a7'), -121, 'k-adj7', 'correction')$$, 'WL203', NULL,
                 'a negative adjustment beyond the balance: WL203');
SELECT is(wallet.balance(pg_temp.id('a7')), 120::bigint, 'gina: balance 120 after the adjustments');

-- ---------------------------------------------------------------------------
-- Closed program
-- ---------------------------------------------------------------------------
INSERT INTO ids SELECT 'pc', wallet.create_program(pg_temp.id('m'), 'tap closing');
INSERT INTO ids SELECT 'c1', wallet.open_account(pg_temp.id('pc'), 'henry');
SELECT pg_temp.op('c1a', $$SELECT * FROM wallet.accrue(pg_temp.id('c1'), 10, 'k-c1a', 'purchase')$$);
SELECT lives_ok($$SELECT wallet.close_program(pg_temp.id('pc'))$$, 'close_program');
SELECT throws_ok($$SELECT wallet.accrue(pg_temp.id('c1'), 10, 'k-c1b', 'purchase')$$, 'WL202', NULL, 'accrue in a closed program: WL202');
SELECT throws_ok($$SELECT wallet.redeem(pg_temp.id('c1'), 5, 'k-c1c', 'coupon')$$, 'WL202', NULL, 'redeem in a closed program: WL202');
SELECT is((SELECT entry_id FROM wallet.accrue(pg_temp.id('c1'), 10, 'k-c1a', 'purchase')), pg_temp.eid('c1a'),
          'a retry of a posting made before the program closed still returns the original entry');
SELECT throws_ok($$SELECT wallet.open_account(pg_temp.id('pc'), 'newcomer')$$, 'WL202', NULL, 'open_account in a closed program: WL202');
SELECT is(wallet.balance(pg_temp.id('c1')), 10::bigint, 'closing a program keeps its balances');

-- ---------------------------------------------------------------------------
-- Expiry policies: expires_at NULL follows the program
-- ---------------------------------------------------------------------------
INSERT INTO ids SELECT 'y1', wallet.open_account(pg_temp.id('p12'), 'yara');
SELECT pg_temp.op('y1', $$SELECT * FROM wallet.accrue(pg_temp.id('y1'), 10, 'k-y1', 'purchase')$$);
SELECT is(wallet.balance(pg_temp.id('y1'), now() + interval '12 months' - interval '1 second'), 10::bigint,
          '12-month policy: still spendable just before 12 months have passed');
SELECT is(wallet.balance(pg_temp.id('y1'), date_trunc('month', now() + interval '12 months') + interval '1 month' + interval '1 hour'), 0::bigint,
          '12-month policy, month granularity: expired once the month 12 months ahead has ended');
SELECT is(wallet.balance(pg_temp.id('y1'), date_trunc('month', now() + interval '12 months') + interval '1 month' - interval '1 hour'), 10::bigint,
          'month granularity: spendable until the end of that month');
SELECT is((SELECT array_agg(date_trunc('month', expiry_month)::date || ':' || points) FROM wallet.program_liability(pg_temp.id('p12'))),
          ARRAY[date_trunc('month', now() + interval '12 months')::date || ':10'],
          'program_liability puts the lot in the month it expires in');
INSERT INTO ids SELECT 'z1', wallet.open_account(pg_temp.id('p30d'), 'zoe');
SELECT pg_temp.op('z1', $$SELECT * FROM wallet.accrue(pg_temp.id('z1'), 7, 'k-z1', 'purchase')$$);
SELECT is(wallet.balance(pg_temp.id('z1'), date_trunc('day', now() + interval '30 days') + interval '23 hours'), 7::bigint,
          '30-day policy, day granularity: spendable until the end of the 30th day');
SELECT is(wallet.balance(pg_temp.id('z1'), date_trunc('day', now() + interval '31 days') + interval '1 hour'), 0::bigint,
          '30-day policy, day granularity: expired the day after');
-- NULL is the policy's expiry (which may be never); an infinite instant is no expiry
SELECT throws_ok($$SELECT wallet.accrue(pg_temp.id('z1'), 1, 'k-z1-inf', 'purchase', NULL, 'infinity')$$, '22023',
                 'expires_at must be finite', 'accrue with expires_at infinity: 22023 (NULL follows the policy)');
SELECT throws_ok($$SELECT wallet.accrue(pg_temp.id('z1'), 1, 'k-z1-inf', 'purchase', NULL, '-infinity')$$, '22023',
                 'expires_at must be finite', 'accrue with expires_at -infinity: 22023');

-- ---------------------------------------------------------------------------
-- Journal: append-only, indexed by reference
-- ---------------------------------------------------------------------------
SELECT throws_ok($$UPDATE wallet.entries SET amount = amount + 1 WHERE entry_id = pg_temp.eid('acc1')$$, 'WL213', NULL, 'UPDATE of the journal: WL213');
SELECT throws_ok($$DELETE FROM wallet.entries WHERE entry_id = pg_temp.eid('acc1')$$, 'WL213', NULL, 'DELETE from the journal: WL213');
SELECT throws_ok($$TRUNCATE wallet.entries CASCADE$$, 'WL213', NULL, 'TRUNCATE of the journal: WL213');
SELECT is((SELECT amount FROM wallet.entries WHERE entry_id = pg_temp.eid('acc1')), 100::bigint, 'the journal entry is unchanged');
SELECT ok(EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                   WHERE i.indrelid = 'wallet.entries'::regclass AND a.attname = 'reference'),
          'wallet.entries.reference is indexed (find every posting of an order)');
SELECT is((SELECT array_agg(kind ORDER BY entry_id) FROM wallet.entries WHERE reference = 'order-20'), ARRAY['accrue', 'reverse'],
          'every posting of an order is found by its reference, the reversal included');

-- ---------------------------------------------------------------------------
-- history and balance_at
-- ---------------------------------------------------------------------------
SELECT is((SELECT array_agg(kind ORDER BY entry_id) FROM wallet.history(pg_temp.id('a1'))),
          ARRAY['accrue', 'accrue', 'accrue', 'accrue', 'redeem'], 'history lists every posting of alice, refused calls and retries excluded');
SELECT is((SELECT array_agg(amount ORDER BY entry_id) FROM wallet.history(pg_temp.id('a1'))),
          ARRAY[100, 50, 30, 20, -70]::bigint[], 'history: amounts');
SELECT is((SELECT array_agg(kind ORDER BY entry_id) FROM wallet.history(pg_temp.id('a2'))),
          ARRAY['accrue', 'hold', 'capture', 'hold', 'capture', 'hold', 'release'], 'history of bob: the hold lifecycle');
SELECT is_empty($$SELECT * FROM wallet.history(pg_temp.id('a1'), now() + interval '1 minute', 'infinity')$$, 'history after the last posting is empty');
SELECT is_empty($$SELECT * FROM wallet.history(pg_temp.id('a1'), '-infinity', now() - interval '1 minute')$$, 'history before the first posting is empty');
SELECT is(wallet.balance_at(pg_temp.id('a1'), now() - interval '1 minute'), 0::bigint, 'balance_at before the first posting: 0');
SELECT is(wallet.balance_at(pg_temp.id('a1'), now() + interval '1 minute'), 130::bigint, 'balance_at after the postings: 130');
SELECT is(wallet.balance_at(pg_temp.id('a1'), (SELECT at FROM marks WHERE name = 'after acc2')), 150::bigint,
          'balance_at an instant between the postings: 150 (after the first two accruals only)');
SELECT is(wallet.balance_at(pg_temp.id('a1'), (SELECT at FROM marks WHERE name = 'before red1')), 200::bigint,
          'balance_at just before the redemption: 200');
SELECT is((SELECT array_agg(kind ORDER BY entry_id) FROM wallet.history(pg_temp.id('a1'), (SELECT at FROM marks WHERE name = 'after acc2'), 'infinity')),
          ARRAY['accrue', 'accrue', 'redeem'], 'history from an instant: only the postings made since');
SELECT is(wallet.balance_at(pg_temp.id('a2'), now() + interval '1 minute'), 90::bigint, 'balance_at of bob: 90');
SELECT throws_ok($$SELECT wallet.balance_at(pg_temp.id('a2'), 'infinity')$$, '22023', 'ts must be finite', 'balance_at at infinity: 22023');
SELECT throws_ok($$SELECT wallet.balance(pg_temp.id('a2'), '-infinity')$$, '22023', 'as_of must be finite', 'balance at -infinity: 22023');
-- The journal explains every balance: the sum of its amounts is the balance of each account.
SELECT is_empty($$
    SELECT a.account_id, wallet.balance(a.account_id), pg_temp.journal_sum(a.account_id)
      FROM wallet.accounts a
     WHERE wallet.balance(a.account_id) IS DISTINCT FROM pg_temp.journal_sum(a.account_id)
$$, 'for every account the journal amounts sum to the balance');

-- ---------------------------------------------------------------------------
-- program_liability
-- ---------------------------------------------------------------------------
INSERT INTO ids SELECT 'pl', wallet.create_program(pg_temp.id('m'), 'tap liability');
INSERT INTO ids SELECT 'l1', wallet.open_account(pg_temp.id('pl'), 'liam');
INSERT INTO ids SELECT 'l2', wallet.open_account(pg_temp.id('pl'), 'lena');
SELECT pg_temp.op('l1a', $$SELECT * FROM wallet.accrue(pg_temp.id('l1'), 100, 'k-l1a', 'purchase', NULL, '2030-01-15 12:00+00')$$);
SELECT pg_temp.op('l1b', $$SELECT * FROM wallet.accrue(pg_temp.id('l1'), 40, 'k-l1b', 'purchase', NULL, '2030-03-10 12:00+00')$$);
SELECT pg_temp.op('l1c', $$SELECT * FROM wallet.accrue(pg_temp.id('l1'), 25, 'k-l1c', 'purchase')$$);
SELECT pg_temp.op('l1d', $$SELECT * FROM wallet.redeem(pg_temp.id('l1'), 20, 'k-l1d', 'coupon')$$);
SELECT pg_temp.op('l2a', $$SELECT * FROM wallet.accrue(pg_temp.id('l2'), 10, 'k-l2a', 'purchase', NULL, '2030-01-20 12:00+00')$$);
SELECT pg_temp.op('l2b', $$SELECT * FROM wallet.accrue(pg_temp.id('l2'), 5, 'k-l2b', 'purchase')$$);
-- held points are still owed to the member: they stay in the liability
SELECT pg_temp.op('l2c', $$SELECT * FROM wallet.hold(pg_temp.id('l2'), 12, 'k-l2c', '1 hour', 'checkout')$$);
SELECT results_eq(
    $$SELECT date_trunc('month', expiry_month)::date, points FROM wallet.program_liability(pg_temp.id('pl')) ORDER BY 1 NULLS LAST$$,
    $$VALUES ('2030-01-01'::date, 90::bigint), ('2030-03-01', 40), (NULL, 30)$$,
    'program_liability: outstanding points by expiry month (NULL = never), spent points excluded, held points included');
SELECT results_eq(
    $$SELECT date_trunc('month', expiry_month)::date, points FROM wallet.program_liability(pg_temp.id('pl'), '2030-02-01') ORDER BY 1 NULLS LAST$$,
    $$VALUES ('2030-03-01'::date, 40::bigint), (NULL, 30)$$,
    'program_liability as of 2030-02-01: expired lots are no liability');
SELECT throws_ok($$SELECT * FROM wallet.program_liability(-1)$$, 'WL214', NULL, 'program_liability of an unknown program: WL214');
SELECT throws_ok($$SELECT * FROM wallet.program_liability(pg_temp.id('pl'), 'infinity')$$, '22023', 'as_of must be finite',
                 'program_liability as of infinity: 22023');

-- ---------------------------------------------------------------------------
-- expire_points
-- ---------------------------------------------------------------------------
-- expire_points refuses an as_of in the future (40_maintenance.sql), so the
-- lots here expire 1 and 3 seconds after t0 and the runs wait for them.
INSERT INTO ids SELECT 'px', wallet.create_program(pg_temp.id('m'), 'tap expiry');
INSERT INTO ids SELECT 'x1', wallet.open_account(pg_temp.id('px'), 'xena');
INSERT INTO marks SELECT 't0', clock_timestamp();
SELECT pg_temp.op('x1a', $$SELECT * FROM wallet.accrue(pg_temp.id('x1'), 40, 'k-x1a', 'purchase', NULL, (SELECT at + interval '1 second' FROM marks WHERE name = 't0'))$$);
SELECT pg_temp.op('x1b', $$SELECT * FROM wallet.accrue(pg_temp.id('x1'), 60, 'k-x1b', 'purchase', NULL, (SELECT at + interval '3 seconds' FROM marks WHERE name = 't0'))$$);
SELECT pg_temp.op('x1c', $$SELECT * FROM wallet.accrue(pg_temp.id('x1'), 25, 'k-x1c', 'purchase')$$);
SELECT pg_temp.op('x1d', $$SELECT * FROM wallet.redeem(pg_temp.id('x1'), 10, 'k-x1d', 'coupon')$$);
SELECT pg_sleep_until((SELECT at + interval '1.1 seconds' FROM marks WHERE name = 't0'));
INSERT INTO marks SELECT 'x run 1', clock_timestamp();
CREATE TEMP TABLE expired_run (run int, posted bigint, entries_before bigint, entries_after bigint);
INSERT INTO expired_run SELECT 1, NULL, (SELECT count(*) FROM wallet.entries WHERE kind = 'expire'), NULL;
UPDATE expired_run SET posted = wallet.expire_points((SELECT at FROM marks WHERE name = 'x run 1')) WHERE run = 1;
UPDATE expired_run SET entries_after = (SELECT count(*) FROM wallet.entries WHERE kind = 'expire') WHERE run = 1;
SELECT is((SELECT posted FROM expired_run WHERE run = 1), (SELECT entries_after - entries_before FROM expired_run WHERE run = 1),
          'expire_points returns the number of expire entries it posted');
SELECT is((SELECT array_agg(amount ORDER BY entry_id) FROM wallet.entries WHERE account_id = pg_temp.id('x1') AND kind = 'expire'),
          ARRAY[-30]::bigint[], 'expire_points posts one expire entry for the 30 points left of the lot expiring at t0 + 1 s');
SELECT is((SELECT balance_after FROM wallet.entries WHERE account_id = pg_temp.id('x1') AND kind = 'expire'), 85::bigint,
          'the expire entry carries the balance after it');
SELECT is(wallet.balance(pg_temp.id('x1'), clock_timestamp()), 85::bigint, 'xena: 125 earned - 10 spent - 30 expired = 85');
SELECT is(pg_temp.journal_sum(pg_temp.id('x1')), 85::bigint, 'the journal explains the balance after expiry');
INSERT INTO expired_run SELECT 2, wallet.expire_points((SELECT at FROM marks WHERE name = 'x run 1')), NULL, (SELECT count(*) FROM wallet.entries WHERE kind = 'expire');
SELECT is((SELECT posted FROM expired_run WHERE run = 2), 0::bigint, 'expire_points run again posts nothing');
-- counted by a statement of its own: the INSERT's subquery cannot see what its expire_points posted
UPDATE expired_run SET entries_after = (SELECT count(*) FROM wallet.entries WHERE kind = 'expire') WHERE run = 2;
SELECT is((SELECT entries_after FROM expired_run WHERE run = 2), (SELECT entries_after FROM expired_run WHERE run = 1),
          'no new expire entries on the second run');
SELECT pg_sleep_until((SELECT at + interval '3.1 seconds' FROM marks WHERE name = 't0'));
SELECT ok(wallet.expire_points(clock_timestamp()) >= 1, 'expire_points after t0 + 3 s posts the next lot');
SELECT is(wallet.balance(pg_temp.id('x1'), clock_timestamp()), 25::bigint, 'xena: only the never-expiring 25 remain');
SELECT is((SELECT array_agg(amount ORDER BY entry_id) FROM wallet.entries WHERE account_id = pg_temp.id('x1') AND kind = 'expire'),
          ARRAY[-30, -60]::bigint[], 'xena: two expire entries, -30 and -60');

-- ---------------------------------------------------------------------------
-- verify_ledger
-- ---------------------------------------------------------------------------
SELECT is_empty($$SELECT * FROM wallet.verify_ledger()$$, 'verify_ledger: every stored ledger matches its journal');
SELECT is_empty($$SELECT * FROM pg_temp.chain_breaks()$$,
                'the journal explains every step: each entry''s balance_after is the running sum of the amounts up to it');
SELECT is_empty($$SELECT * FROM wallet.verify_ledger(pg_temp.id('a1'))$$, 'verify_ledger(alice): nothing');
SELECT throws_ok($$SELECT * FROM wallet.verify_ledger(-1)$$, 'WL201', NULL, 'verify_ledger of an unknown account: WL201');
SELECT is_empty($$
    SELECT a.account_id, wallet.balance(a.account_id), pg_temp.journal_sum(a.account_id)
      FROM wallet.accounts a
     WHERE wallet.balance(a.account_id) IS DISTINCT FROM pg_temp.journal_sum(a.account_id)
$$, 'after everything, the journal amounts still sum to every balance');

-- A superuser forges alice's stored ledger (her journal says 130).
SELECT lives_ok($$UPDATE wallet.accounts SET ledger = 'lots={999999@never} earned=999999'
                   WHERE account_id = pg_temp.id('a1')$$, 'a superuser overwrites a stored ledger with a forged value');
SELECT is(wallet.balance(pg_temp.id('a1')), 999999::bigint, 'the forged ledger claims 999999 points');
SELECT results_eq($$SELECT account_id, stored_balance, replayed_balance FROM wallet.verify_ledger()$$,
                  $$VALUES (pg_temp.id('a1'), 999999::bigint, 130::bigint)$$,
                  'verify_ledger finds exactly the tampered account, with the stored and the replayed balance');
SELECT ok((SELECT detail FROM wallet.verify_ledger(pg_temp.id('a1'))) IS NOT NULL, 'verify_ledger explains the difference');
SELECT is_empty($$SELECT * FROM wallet.verify_ledger(pg_temp.id('a2'))$$, 'verify_ledger(bob): the untouched account is fine');
-- A subtler forgery keeps bob's balance but moves his never-expiring points to an expiry date.
SELECT lives_ok($$UPDATE wallet.accounts SET ledger = replace(ledger::text, '@never', '@2031-01-01T00:00:00+00:00')::wallet.points_ledger
                   WHERE account_id = pg_temp.id('a2')$$, 'a superuser rewrites the expiry of bob''s lots');
SELECT is(wallet.balance(pg_temp.id('a2'), '2031-01-02'), 0::bigint, 'the forged ledger would let bob''s points expire in 2031');
SELECT results_eq($$SELECT account_id, stored_balance, replayed_balance FROM wallet.verify_ledger(pg_temp.id('a2'))$$,
                  $$VALUES (pg_temp.id('a2'), 90::bigint, 90::bigint)$$,
                  'verify_ledger finds a forgery that keeps the balance (the lots differ)');

SELECT is_empty($$SELECT tag, sqlstate, message FROM op_errors$$, 'no operation that should succeed raised an error');


-- create_program: WL102 with a detail
SELECT is(error_of($$SELECT wallet.create_program(999999999, 'nowhere')$$),
          'WL102 merchant 999999999 does not exist / Programs belong to a merchant registered in wallet.merchants.', 'create_program: WL102 with a detail');
-- Bounds (dba audit): intervals at most 100 years, references at most 200
-- characters, policy_expiry's arguments checked: 22023/22004, never a raw
-- 22008 (timestamp out of range) or 54000 (index row too large).
SELECT throws_ok($$SELECT wallet.create_program(pg_temp.id('m'), 'tap 101 years', '101 years')$$, '22023', 'expiry must be at most 100 years',
                 'create_program: an expiry over 100 years is 22023');
SELECT throws_ok($$SELECT wallet.create_program(pg_temp.id('m'), 'tap huge', '292260 years')$$, '22023', 'expiry must be at most 100 years',
                 'create_program: an expiry that would overflow every accrual is 22023 (it was accepted, then accrue raised 22008)');
INSERT INTO ids SELECT 'p100', wallet.create_program(pg_temp.id('m'), 'tap 100 years', '100 years', 'month');
INSERT INTO ids SELECT 'a100', wallet.open_account(pg_temp.id('p100'), 'centenarian');
SELECT pg_temp.op('b-acc', $$SELECT * FROM wallet.accrue(pg_temp.id('a100'), 10, 'k-b-acc', 'purchase', repeat('r', 200))$$);
SELECT is((pg_temp.e('b-acc')).expires_at, date_trunc('month', (pg_temp.e('b-acc')).created_at + interval '100 years', 'UTC') + interval '1 month',
          'a 100-year policy: accrue works (expiry at the end of the month 100 years on) with a reference of 200 characters');
SELECT throws_ok($$SELECT wallet.accrue(pg_temp.id('a100'), 1, 'k-b-ref1', 'purchase', repeat('r', 201))$$, '22023',
                 'reference must not be longer than 200 characters', 'accrue: a reference over 200 characters is 22023');
SELECT throws_ok($$SELECT wallet.accrue(pg_temp.id('a100'), 1, 'k-b-ref2', 'purchase', (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 300) g))$$,
                 '22023', 'reference must not be longer than 200 characters', 'accrue: a 9,600-character reference is 22023, not 54000');
SELECT throws_ok($$SELECT wallet.redeem(pg_temp.id('a100'), 1, 'k-b-ref3', 'coupon', repeat('r', 201))$$, '22023',
                 'reference must not be longer than 200 characters', 'redeem: a reference over 200 characters is 22023');
SELECT throws_ok($$SELECT wallet.hold(pg_temp.id('a100'), 1, 'k-b-ref4', '1 hour', 'cart', repeat('r', 201))$$, '22023',
                 'reference must not be longer than 200 characters', 'hold: a reference over 200 characters is 22023');
SELECT throws_ok($$SELECT wallet.hold(pg_temp.id('a100'), 1, 'k-b-ttl1', '300000 years', 'cart')$$, '22023',
                 'time to live must be at most 100 years', 'hold: a ttl over 100 years is 22023, not 22008');
SELECT pg_temp.op('b-hold', $$SELECT * FROM wallet.hold(pg_temp.id('a100'), 1, 'k-b-ttl2', '100 years', 'cart')$$);
SELECT is((pg_temp.e('b-hold')).expires_at, (pg_temp.e('b-hold')).created_at + interval '100 years', 'hold: a ttl of 100 years is fine');
SELECT throws_ok($$SELECT wallet.policy_expiry('2026-11-15 10:00+00', '1 day', 'xyz')$$, '22023', 'unknown granularity "xyz"',
                 'policy_expiry: an unknown granularity is 22023 (was computed as day)');
SELECT throws_ok($$SELECT wallet.policy_expiry('2026-11-15 10:00+00', '1 day', NULL)$$, '22004', 'granularity must not be null',
                 'policy_expiry: a NULL granularity is 22004 (was computed as day)');
SELECT throws_ok($$SELECT wallet.policy_expiry('2026-11-15 10:00+00', '-1 day', 'day')$$, '22023', 'expiry must be positive',
                 'policy_expiry: a negative expiry is 22023 (was an expiry before the points were earned)');
SELECT throws_ok($$SELECT wallet.policy_expiry('2026-11-15 10:00+00', '0', 'day')$$, '22023', 'expiry must be positive',
                 'policy_expiry: a zero expiry is 22023, as create_program');
SELECT throws_ok($$SELECT wallet.policy_expiry('294276-12-30', '1 month', 'month')$$, '22023', 'expiry out of range',
                 'policy_expiry: a result past the last timestamp is 22023, not 22008');
SELECT throws_ok($$SELECT wallet.policy_expiry('2026-11-15', '300000 years', 'day')$$, '22023', 'expiry out of range',
                 'policy_expiry: an expiry past the last timestamp is 22023, not 22008');
SELECT throws_ok($$SELECT wallet.policy_expiry('infinity', '1 day', 'day')$$, '22023', 'at must be finite',
                 'policy_expiry: an infinite at is 22023');
SELECT is(wallet.policy_expiry('294276-11-01 00:00+00', '29 days', 'day'), '294276-12-01 00:00+00'::timestamptz,
          'policy_expiry: a result just inside the range is computed');
SELECT is(wallet.policy_expiry('2026-11-15 10:00+00', '1 day', 'day'), '2026-11-17 00:00+00'::timestamptz, 'policy_expiry: day granularity');
SELECT is(wallet.policy_expiry('2026-11-15 10:00+00', '1 month', 'month'), '2027-01-01 00:00+00'::timestamptz, 'policy_expiry: month granularity');
SELECT is(wallet.policy_expiry(NULL, '1 day', 'day'), NULL::timestamptz, 'policy_expiry: a NULL at gives NULL');
SELECT is(wallet.policy_expiry('2026-11-15 10:00+00', NULL, 'month'), 'infinity'::timestamptz, 'policy_expiry: a NULL expiry is never');
SELECT throws_ok($$SELECT wallet.ledger_expiring(''::wallet.points_ledger, now(), '300000 years')$$, '22023', 'as_of + within is out of range',
                 'ledger_expiring: as_of + within past the last timestamp is 22023, not 22008');
SELECT throws_ok($$SELECT wallet.ledger_expiring(''::wallet.points_ledger, '4714-11-24 00:00+00 BC', '-1 day')$$, '22023', 'as_of + within is out of range',
                 'ledger_expiring: as_of + within before the first timestamp is 22023, not 22008');
SELECT is(wallet.ledger_expiring(pg_temp.ledger(pg_temp.id('a100')), now(), '100 years 2 months'), 9::bigint,
          'ledger_expiring: a window of 100 years counts the 100-year lot (less the held point)');

SELECT * FROM finish();
ROLLBACK;

-- pgTAP: the API as a whole (issue 8): one idempotency mechanism for
-- redemptions, reservations and postings (same WL002, a fingerprint of what
-- decides the outcome, not of request metadata), idempotency keys for capture
-- and release, and calls nested in one statement seeing what the inner call
-- wrote.
--
-- One transaction: now() is frozen, postings use the clock.
BEGIN;
SET LOCAL timezone = 'UTC';
SELECT plan(70);

CREATE TEMP TABLE ids (name text PRIMARY KEY, id bigint NOT NULL);
CREATE FUNCTION pg_temp.id(text) RETURNS bigint LANGUAGE sql VOLATILE AS $$ SELECT id FROM ids WHERE name = $1 $$;
-- The error a statement raises, as 'SQLSTATE: message | detail', or 'no error'.
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; det text;
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
    RETURN st || ': ' || msg || ' | ' || det;
END $$;
CREATE TEMP TABLE codes (name text PRIMARY KEY, code text NOT NULL);
CREATE FUNCTION pg_temp.c(text) RETURNS text LANGUAGE sql VOLATILE AS $$ SELECT code FROM codes WHERE name = $1 $$;

INSERT INTO ids SELECT 'm', wallet.create_merchant('api merchant');
INSERT INTO ids SELECT 'camp', wallet.create_campaign(pg_temp.id('m'), 'api campaign', max_redemptions_per_code => 5);
INSERT INTO codes SELECT 'c' || n, g::text
  FROM wallet.generate_codes(pg_temp.id('camp'), 4) WITH ORDINALITY AS x(g, n);
INSERT INTO ids SELECT 'p', wallet.create_program(pg_temp.id('m'), 'api program', interval '1 year');
INSERT INTO ids SELECT 'a', wallet.open_account(pg_temp.id('p'), 'api-member');
SELECT wallet.accrue(pg_temp.id('a'), 1000, 'api-seed', 'welcome');

-- 1. Redemptions: the fingerprint is code, member and operation ------------------
CREATE TEMP TABLE r1 AS SELECT * FROM wallet.redeem_code(pg_temp.c('c1'), 'alice', 'red-1',
                                                         '{"source": "app", "ip": "10.0.0.1", "device": "d-7"}');
SELECT is((SELECT status FROM r1), 'ok', 'a redemption with a full context');
SELECT ok((SELECT r.replayed AND r.redemption_id = r1.redemption_id
             FROM r1, wallet.redeem_code(pg_temp.c('c1'), 'alice', 'red-1', '{"source": "app", "device": "d-7"}') r),
          'a retry whose context lost its ip is a retry: the first result, replayed');
SELECT ok((SELECT r.replayed AND r.redemption_id = r1.redemption_id
             FROM r1, wallet.redeem_code(lower(pg_temp.c('c1')), 'alice', 'red-1', '{"source": "web", "ip": "10.9.9.9"}') r),
          'a retry from another source and ip, spelling the code in lower case, is a retry too');
SELECT ok((SELECT r.replayed FROM wallet.redeem_code(pg_temp.c('c1'), 'alice', 'red-1') r),
          'and so is a retry without any context');
SELECT is((SELECT context FROM wallet.code_redemptions WHERE idempotency_key = 'red-1'),
          '{"source": "app", "ip": "10.0.0.1", "device": "d-7"}'::jsonb, 'the stored context stays the first call''s');
SELECT is((SELECT count(*) FROM wallet.code_redemptions WHERE idempotency_key = 'red-1'), 1::bigint, 'retries record nothing');
SELECT is(pg_temp.err($$SELECT wallet.redeem_code(pg_temp.c('c1'), 'bob', 'red-1')$$),
          'WL002: idempotency key "red-1" was already used with different arguments | The key belongs to redemption '
          || (SELECT redemption_id FROM r1) || '; this call differs in member_ref.',
          'the same key for another member: WL002 naming the member');
SELECT is(pg_temp.err($$SELECT wallet.redeem_code(pg_temp.c('c2'), 'alice', 'red-1')$$),
          'WL002: idempotency key "red-1" was already used with different arguments | The key belongs to redemption '
          || (SELECT redemption_id FROM r1) || '; this call differs in code.',
          'the same key for another code: WL002 naming the code');
SELECT is(pg_temp.err($$SELECT wallet.redeem_code('not a code', 'alice', 'red-1')$$),
          'WL002: idempotency key "red-1" was already used with different arguments | The key belongs to redemption '
          || (SELECT redemption_id FROM r1) || '; this call differs in code.',
          'the same key with text that names no code: WL002');
SELECT is(pg_temp.err($$SELECT wallet.reserve_code(pg_temp.c('c1'), 'alice', 'red-1', '1 hour')$$),
          'WL002: idempotency key "red-1" was already used with different arguments | The key belongs to redemption '
          || (SELECT redemption_id FROM r1) || '; this call differs in operation, ttl.',
          'a redemption''s key for a reservation: WL002 naming the operation');

-- Reservations: ttl is part of the fingerprint, compared as intervals compare.
CREATE TEMP TABLE v1 AS SELECT * FROM wallet.reserve_code(pg_temp.c('c2'), 'carol', 'res-1', '1 day', '{"ip": "1.2.3.4"}');
SELECT is((SELECT status FROM v1), 'ok', 'a reservation');
SELECT ok((SELECT r.replayed AND r.reservation_id = v1.reservation_id AND r.expires_at = v1.expires_at
             FROM v1, wallet.reserve_code(pg_temp.c('c2'), 'carol', 'res-1', '24 hours') r),
          'a retry with the same ttl spelled otherwise and no context is a retry');
SELECT is(pg_temp.err($$SELECT wallet.reserve_code(pg_temp.c('c2'), 'carol', 'res-1', '2 days')$$),
          'WL002: idempotency key "res-1" was already used with different arguments | The key belongs to reservation '
          || (SELECT reservation_id FROM v1) || '; this call differs in ttl.',
          'the same key with another ttl: WL002 naming the ttl');
SELECT is(pg_temp.err($$SELECT wallet.redeem_code(pg_temp.c('c3'), 'carol', 'res-1')$$),
          'WL002: idempotency key "res-1" was already used with different arguments | The key belongs to reservation '
          || (SELECT reservation_id FROM v1) || '; this call differs in code.',
          'converting a reservation with another code: WL002');
SELECT ok((SELECT r.status = 'ok' AND r.reservation_id = v1.reservation_id AND NOT r.replayed
             FROM v1, wallet.redeem_code(pg_temp.c('c2'), 'carol', 'res-1', '{"ip": "5.6.7.8"}') r),
          'redeeming with the reservation''s key and another context converts it');

-- 2. Postings: the same message pattern, the fingerprint of the posting ----------
CREATE TEMP TABLE e1 AS SELECT * FROM wallet.accrue(pg_temp.id('a'), 100, 'acc-1', 'purchase', 'order-1');
SELECT is((SELECT entry_id FROM wallet.accrue(pg_temp.id('a'), 100, 'acc-1', 'purchase', 'order-1')), (SELECT entry_id FROM e1),
          'an accrual retried with its key returns the first entry');
SELECT is(pg_temp.err($$SELECT wallet.accrue(pg_temp.id('a'), 101, 'acc-1', 'purchase', 'order-1')$$),
          'WL002: idempotency key "acc-1" was already used with different arguments | The key belongs to accrue entry '
          || (SELECT entry_id FROM e1) || ' on account ' || pg_temp.id('a') || '; this call differs in points.',
          'the same key with other points: WL002, same pattern as a redemption''s, naming the points');
SELECT is(pg_temp.err($$SELECT wallet.redeem(pg_temp.id('a'), 100, 'acc-1', 'purchase', 'order-2')$$),
          'WL002: idempotency key "acc-1" was already used with different arguments | The key belongs to accrue entry '
          || (SELECT entry_id FROM e1) || ' on account ' || pg_temp.id('a') || '; this call differs in expires_at, operation, reference.',
          'the same key for another operation: WL002 naming what differs');

-- 3. capture and release take an optional idempotency key -------------------------
INSERT INTO ids SELECT 'h1', entry_id FROM wallet.hold(pg_temp.id('a'), 50, 'hold-1', '1 hour', 'cart 1');
INSERT INTO ids SELECT 'h2', entry_id FROM wallet.hold(pg_temp.id('a'), 40, 'hold-2', '1 hour', 'cart 2');
INSERT INTO ids SELECT 'h3', entry_id FROM wallet.hold(pg_temp.id('a'), 30, 'hold-3', '1 hour', 'cart 3');
INSERT INTO ids SELECT 'h4', entry_id FROM wallet.hold(pg_temp.id('a'), 20, 'hold-4', '1 hour', 'cart 4');
CREATE TEMP TABLE cap1 AS SELECT * FROM wallet.capture(pg_temp.id('h1'), 30, 'cap-1');
SELECT ok((SELECT kind = 'capture' AND idempotency_key = 'cap-1' AND points = 30 FROM cap1), 'capture with a key journals the key');
SELECT is((SELECT entry_id FROM wallet.capture(pg_temp.id('h1'), 30, 'cap-1')), (SELECT entry_id FROM cap1),
          'a capture retried with its key returns the first entry');
SELECT is(pg_temp.err($$SELECT wallet.capture(pg_temp.id('h1'), 20, 'cap-1')$$),
          'WL002: idempotency key "cap-1" was already used with different arguments | The key belongs to capture entry '
          || (SELECT entry_id FROM cap1) || ' on account ' || pg_temp.id('a') || '; this call differs in points.',
          'the same key with other points: WL002');
SELECT is(pg_temp.err($$SELECT wallet.capture(pg_temp.id('h2'), 30, 'cap-1')$$),
          'WL002: idempotency key "cap-1" was already used with different arguments | The key belongs to capture entry '
          || (SELECT entry_id FROM cap1) || ' on account ' || pg_temp.id('a') || '; this call differs in hold_id, reason.',
          'the same key for another hold: WL002 (the other hold stays open)');
SELECT is(pg_temp.err($$SELECT wallet.capture(pg_temp.id('h2'), NULL, 'acc-1')$$) LIKE 'WL002: %differs in %operation%', true,
          'a key used by an accrual, for a capture: WL002');
SELECT is(pg_temp.err($$SELECT wallet.capture(pg_temp.id('h1'), 30, 'cap-other')$$) LIKE 'WL207:%', true,
          'a new key on a captured hold: WL207, not a retry');
SELECT is(pg_temp.err($$SELECT wallet.capture(pg_temp.id('h2'), NULL, ' ')$$) LIKE '22023:%', true, 'a blank key: 22023');
SELECT is((SELECT state FROM (SELECT count(*) AS state FROM wallet.entries WHERE hold_id = pg_temp.id('h2') AND kind <> 'hold') x),
          0::bigint, 'refused captures closed nothing');

CREATE TEMP TABLE rel2 AS SELECT * FROM wallet.release(pg_temp.id('h2'), 'rel-2');
SELECT ok((SELECT kind = 'release' AND idempotency_key = 'rel-2' AND amount = 40 FROM rel2), 'release with a key journals the key');
SELECT is((SELECT entry_id FROM wallet.release(pg_temp.id('h2'), 'rel-2')), (SELECT entry_id FROM rel2),
          'a release retried with its key returns the first entry');
SELECT is(pg_temp.err($$SELECT wallet.release(pg_temp.id('h3'), 'rel-2')$$),
          'WL002: idempotency key "rel-2" was already used with different arguments | The key belongs to release entry '
          || (SELECT entry_id FROM rel2) || ' on account ' || pg_temp.id('a') || '; this call differs in hold_id, reason.',
          'the same key for another hold: WL002');
SELECT is(pg_temp.err($$SELECT wallet.release(pg_temp.id('h1'), 'cap-1')$$) LIKE 'WL002: %differs in operation%', true,
          'a capture''s key for a release: WL002');
SELECT is((SELECT entry_id FROM wallet.release(pg_temp.id('h2'))), (SELECT entry_id FROM rel2),
          'a release without a key of a released hold still returns its release entry');
SELECT is(pg_temp.err($$SELECT wallet.release(pg_temp.id('h1'), 'rel-new')$$) LIKE 'WL207:%', true,
          'releasing a captured hold with a new key: WL207');
-- the old arity keeps working
SELECT is((wallet.capture(pg_temp.id('h3'), 10)).kind, 'capture', 'capture(hold_id, points) still works');
SELECT is((wallet.capture(pg_temp.id('h3'), 10)).points, 10::bigint, 'and repeating it still returns the capture');
SELECT is((wallet.release(pg_temp.id('h4'))).kind, 'release', 'release(hold_id) still works');
SELECT is((SELECT count(*) FROM wallet.verify_ledger(pg_temp.id('a'))), 0::bigint, 'the journal replays to the stored ledger');
-- a retry returns the first result even after the hold lapsed
INSERT INTO ids SELECT 'h5', entry_id FROM wallet.hold(pg_temp.id('a'), 5, 'hold-5', '1 second', 'short cart');
CREATE TEMP TABLE cap5 AS SELECT * FROM wallet.capture(pg_temp.id('h5'), NULL, 'cap-5');
SELECT pg_sleep(1.1);
SELECT is((SELECT entry_id FROM wallet.capture(pg_temp.id('h5'), NULL, 'cap-5')), (SELECT entry_id FROM cap5),
          'a capture retried after its hold''s time to live returns the first entry (no WL208)');

-- 4. One statement: an outer call sees what the inner call wrote ---------------------
SELECT is(wallet.balance(wallet.open_account(pg_temp.id('p'), 'nest-1')), 0::bigint, 'balance(open_account(...))');
SELECT is(wallet.open_account(pg_temp.id('p'), 'nest-1'), (SELECT account_id FROM wallet.accounts WHERE member_ref = 'nest-1'),
          'and the account it opened is the member''s');
SELECT is((wallet.accrue(wallet.open_account(pg_temp.id('p'), 'nest-2'), 25, 'nest-2', 'first')).balance_after, 25::bigint,
          'accrue(open_account(...))');
SELECT is((SELECT count(*) FROM wallet.history(wallet.open_account(pg_temp.id('p'), 'nest-3'))), 0::bigint,
          'history(open_account(...))');
SELECT is((SELECT count(*) FROM wallet.history((wallet.accrue(wallet.open_account(pg_temp.id('p'), 'nest-4'), 5, 'nest-4', 'r')).account_id)),
          1::bigint, 'history((accrue(open_account(...))).account_id) lists the accrual');
INSERT INTO ids SELECT 'balance before', wallet.balance(pg_temp.id('a'));
SELECT is(wallet.balance((wallet.accrue(pg_temp.id('a'), 7, 'nest-5', 'r')).account_id), pg_temp.id('balance before') + 7,
          'balance((accrue(...)).account_id) counts the accrual');
SELECT ok((SELECT o = f FROM (SELECT wallet.open_account(pg_temp.id('p'), 'nest-8') AS o, wallet.find_account(pg_temp.id('p'), 'nest-8') AS f) x),
          'open_account(p, m), find_account(p, m) in one statement: the account just opened');
SELECT is(wallet.find_account(wallet.create_program(pg_temp.id('m'), 'nest program 3'), 'nobody'), NULL,
          'find_account(create_program(...), ...): the new program, no account');
SELECT is(wallet.balance_at(wallet.open_account(pg_temp.id('p'), 'nest-9'), now()), 0::bigint, 'balance_at(open_account(...))');
SELECT is((SELECT problem FROM wallet.replay_ledger(wallet.open_account(pg_temp.id('p'), 'nest-6'))), NULL,
          'replay_ledger(open_account(...))');
SELECT is((SELECT count(*) FROM wallet.verify_ledger(wallet.open_account(pg_temp.id('p'), 'nest-7'))), 0::bigint,
          'verify_ledger(open_account(...))');
SELECT is((SELECT count(*) FROM wallet.program_liability(wallet.create_program(pg_temp.id('m'), 'nest program'))), 0::bigint,
          'program_liability(create_program(...))');
SELECT isnt(wallet.open_account(wallet.create_program(pg_temp.id('m'), 'nest program 2'), 'x'), NULL,
            'open_account(create_program(...))');
SELECT isnt(wallet.create_campaign(wallet.create_merchant('nest merchant 1'), 'c'), NULL, 'create_campaign(create_merchant(...))');
SELECT isnt(wallet.create_program(wallet.create_merchant('nest merchant 2'), 'p'), NULL, 'create_program(create_merchant(...))');
SELECT is((SELECT count(*) FILTER (WHERE wallet.code_authentic(g))
             FROM wallet.generate_codes(wallet.create_campaign(pg_temp.id('m'), 'nest campaign 1'), 5) g), 5::bigint,
          'generate_codes(create_campaign(...)): five authentic codes');
SELECT is(wallet.code_status(wallet.issue_code(wallet.create_campaign(pg_temp.id('m'), 'nest campaign 2'), 'dora')), 'ok',
          'issue_code(create_campaign(...))');
SELECT is(wallet.rotate_code_key(wallet.create_campaign(pg_temp.id('m'), 'nest campaign 3')), 2, 'rotate_code_key(create_campaign(...))');
SELECT is(wallet.check_code(wallet.issue_code(pg_temp.id('camp'), 'erin'), 'erin'), 'ok', 'check_code(issue_code(...))');
SELECT is((wallet.redeem_code(wallet.issue_code(pg_temp.id('camp'), 'erin'), 'erin', 'nest-r1')).status, 'ok',
          'redeem_code(issue_code(...))');
SELECT is((wallet.reserve_code(wallet.issue_code(pg_temp.id('camp'), 'erin'), 'erin', 'nest-v1', '1 hour')).status, 'ok',
          'reserve_code(issue_code(...))');
SELECT is((wallet.capture((wallet.hold(pg_temp.id('a'), 10, 'nest-h1', '1 hour', 'r')).entry_id)).kind, 'capture',
          'capture((hold(...)).entry_id)');
SELECT is((wallet.capture((wallet.hold(pg_temp.id('a'), 10, 'nest-h2', '1 hour', 'r')).entry_id, 4, 'nest-c2')).points, 4::bigint,
          'capture((hold(...)).entry_id, points, key)');
SELECT is((wallet.release((wallet.hold(pg_temp.id('a'), 10, 'nest-h3', '1 hour', 'r')).entry_id, 'nest-l3')).kind, 'release',
          'release((hold(...)).entry_id, key)');
SELECT is((wallet.reverse((wallet.accrue(pg_temp.id('a'), 10, 'nest-a4', 'r')).entry_id, 'nest-v4', 'refund')).amount, -10::bigint,
          'reverse((accrue(...)).entry_id)');
SELECT is((SELECT count(*) FROM wallet.verify_ledger()), 0::bigint, 'every journal still replays to its stored ledger');

-- 5. Named columns: a column added to a table or result type leaves the API working ---
ALTER TABLE wallet.entries ADD COLUMN note text DEFAULT 'added later';
ALTER TYPE wallet.redemption_result ADD ATTRIBUTE note text;
ALTER TYPE wallet.reservation_result ADD ATTRIBUTE note text;
-- (this session has run every function before: its cached plans must cope too)
CREATE TEMP TABLE after_add AS SELECT * FROM wallet.accrue(pg_temp.id('a'), 3, 'named-1', 'after a new column');
SELECT is((SELECT note FROM wallet.entries WHERE idempotency_key = 'named-1'), 'added later',
          'a posting names its columns: a new column of wallet.entries gets its default');
SELECT is((SELECT entry_id FROM wallet.accrue(pg_temp.id('a'), 3, 'named-1', 'after a new column')), (SELECT entry_id FROM after_add),
          'and a retry still returns the first entry');
INSERT INTO ids SELECT 'h6', entry_id FROM wallet.hold(pg_temp.id('a'), 5, 'named-h', '1 hour', 'cart');
SELECT is((wallet.capture(pg_temp.id('h6'), 2, 'named-c')).note, 'added later', 'capture too');
SELECT is((SELECT count(*) FROM wallet.entries WHERE note IS DISTINCT FROM 'added later'), 0::bigint, 'every entry, old or new, has the default');
SELECT is((wallet.redeem_code(pg_temp.c('c4'), 'frank', 'named-r')).status, 'ok', 'redeem_code returns its result type with a new attribute');
SELECT ok((wallet.redeem_code(pg_temp.c('c4'), 'frank', 'named-r')).replayed, 'and so does its replay');
SELECT ok((wallet.reserve_code(pg_temp.c('c3'), 'gina', 'named-v', '1 hour')).status = 'ok'
          AND (wallet.reserve_code(pg_temp.c('c3'), 'gina', 'named-v', '1 hour')).replayed, 'reserve_code and its replay as well');

SELECT * FROM finish();
ROLLBACK;

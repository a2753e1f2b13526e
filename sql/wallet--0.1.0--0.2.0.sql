-- wallet 0.1.0 -> 0.2.0 upgrade script.
--
-- Every change that 0.2.0 makes to the install script's parts (sql/ext/*.sql)
-- is made here too, so that ALTER EXTENSION wallet UPDATE leaves a database
-- equal to a fresh CREATE EXTENSION wallet (test/concurrency/upgrade.t proves
-- it: same objects, same definitions, comments and privileges).  New columns
-- go at the end of their table in the parts as well, since ALTER TABLE ADD
-- COLUMN can put them nowhere else.
--
-- One section per area, in dependency order; each section changes only what
-- its area owns.
\echo Use "ALTER EXTENSION wallet UPDATE TO '0.2.0'" to load this file. \quit

-- == 1. search_path pinned on every function (security review, issue 7)

-- == 2. brute-force guard and redemption (issue 7)

-- == 3. code keys bound to the installation; campaigns never deleted (issue 7)

-- == 4. points_ledger values (issue 7)

-- == 5. groundwork (issue 8)

-- -- 5a. maintenance, expiry, balance_at, find_account
-- expire_points refuses a future as_of and settles through expire_due_accounts,
-- which expire_points_batched and run_maintenance share; balance_at no longer
-- replays the whole journal; find_account is new.  Definitions as in
-- sql/ext/ledger.sql and sql/ext/maintenance.sql.

-- as_of of an expiry run: an expire entry cannot be undone, so expiring as of
-- a future instant would take lots that are still valid for good.  "Now" is
-- the clock, which postings are stamped with (the transaction's now() is
-- never later, so the default always passes).
CREATE FUNCTION wallet.check_expiry_as_of(as_of timestamptz) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF as_of IS NULL THEN
        RAISE EXCEPTION 'as_of must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Points are expired as of a given instant, now() by default.';
    END IF;
    IF as_of > clock_timestamp() THEN
        RAISE EXCEPTION 'cannot expire points as of a future instant'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The instant %s is later than the current time; lots still valid until then would be expired for good.', as_of),
                  HINT = 'Omit as_of (it defaults to now()) or pass an instant that has passed.';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet.check_expiry_as_of(timestamptz) IS 'raises 22004 for a NULL as_of and 22023 for an as_of later than the current time (an expire entry cannot be undone)';

-- Settles due accounts as of as_of: at most batch_size of them, soonest due
-- first (all when NULL), each locked and settled in account order, so that
-- concurrent runs lock in the same order.  Returns how many accounts it
-- looked at and how many expire entries it posted.
CREATE FUNCTION wallet.expire_due_accounts(as_of timestamptz, batch_size int,
        OUT accounts int, OUT expired bigint)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    acc bigint;
    due timestamptz;
BEGIN
    accounts := 0;
    expired := 0;
    FOR acc IN SELECT d.account_id
                 FROM (SELECT a.account_id FROM wallet.accounts a WHERE a.next_event <= as_of
                        ORDER BY a.next_event LIMIT batch_size) d
                ORDER BY d.account_id LOOP
        SELECT a.next_event INTO due FROM wallet.accounts a WHERE a.account_id = acc FOR NO KEY UPDATE;
        accounts := accounts + 1;
        IF due <= as_of THEN   -- a concurrent posting may have settled it meanwhile
            expired := expired + wallet.settle_account(acc, as_of, clock_timestamp());
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION wallet.expire_due_accounts(timestamptz, int) IS 'settles at most batch_size (NULL = all) accounts due at as_of, in account order; returns the accounts looked at and the expire entries posted';

CREATE OR REPLACE FUNCTION wallet.expire_points(as_of timestamptz DEFAULT now()) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet.check_expiry_as_of(as_of);
    RETURN (wallet.expire_due_accounts(as_of, NULL)).expired;
END
$$;
COMMENT ON FUNCTION wallet.expire_points(timestamptz) IS 'posts an expire entry per account with lots expired at as_of (and a release for each lapsed hold) in the caller''s transaction; returns the number of expire entries; a second run posts nothing; as_of in the future is refused (22023); CALL wallet.expire_points_batched for many accounts';

CREATE FUNCTION wallet.find_account(program_id bigint, member_ref text) RETURNS bigint
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
BEGIN
    IF program_id IS NULL OR member_ref IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN program_id IS NULL THEN 'program_id' ELSE 'member_ref' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'An account is found by its program and the merchant app''s own user id.';
    END IF;
    IF btrim(member_ref) = '' THEN
        RAISE EXCEPTION 'member reference must not be blank'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An account is found by the merchant app''s own user id.';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.programs p WHERE p.program_id = find_account.program_id) THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
    SELECT a.account_id INTO id FROM wallet.accounts a
     WHERE a.program_id = find_account.program_id AND a.member_ref = find_account.member_ref;
    RETURN id;
END
$$;
COMMENT ON FUNCTION wallet.find_account(bigint, text) IS 'the account of member_ref in the program, or NULL when the member has none (never opens one; read-only)';

-- The balance at ts is that of the ledger after the last entry created at or
-- before ts, evaluated at ts (what replaying the journal up to ts gives).
-- Entries of an account are in time order (each is stamped after its account
-- was locked), so that entry is found by a binary search on entry_id.  Its
-- ledger changes no more until the next entry unless a lot expires or a hold
-- lapses, and the next entry tells whether one did: a posting (anything but
-- the expire and release entries of a settlement) locked the account after
-- ts and found nothing due, so nothing happened in between and the balance
-- is the last entry's balance_after.  With no entry after ts the ledger is
-- the stored one (verify_ledger proves it equals the journal's).  Only when
-- the next entry is a settlement is the journal replayed up to ts.
CREATE OR REPLACE FUNCTION wallet.balance_at(account_id bigint, ts timestamptz) RETURNS bigint
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    l wallet.points_ledger;
    lo bigint := 0;     -- last entry known to be created at or before ts (0: none)
    hi bigint;          -- first entry known to be created after ts
    p bigint;
    pt timestamptz;
    b bigint;
    nxt wallet.entries;
BEGIN
    IF ts IS NULL THEN
        RAISE EXCEPTION 'ts must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The balance is taken at a given instant.';
    END IF;
    SELECT a.ledger INTO l FROM wallet.accounts a WHERE a.account_id = balance_at.account_id;
    IF NOT FOUND THEN
        PERFORM wallet.unknown_account(account_id);
    END IF;
    SELECT x.entry_id, x.created_at INTO hi, pt FROM wallet.entries x
     WHERE x.account_id = balance_at.account_id ORDER BY x.entry_id DESC LIMIT 1;
    IF NOT FOUND OR pt <= ts THEN
        RETURN wallet.ledger_balance(l, ts);
    END IF;
    LOOP
        SELECT x.entry_id, x.created_at INTO p, pt FROM wallet.entries x
         WHERE x.account_id = balance_at.account_id AND x.entry_id > lo AND x.entry_id < hi
           AND x.entry_id >= lo + (hi - lo) / 2
         ORDER BY x.entry_id LIMIT 1;
        IF NOT FOUND THEN
            SELECT x.entry_id, x.created_at INTO p, pt FROM wallet.entries x
             WHERE x.account_id = balance_at.account_id AND x.entry_id > lo AND x.entry_id < lo + (hi - lo) / 2
             ORDER BY x.entry_id DESC LIMIT 1;
            EXIT WHEN NOT FOUND;
        END IF;
        IF pt <= ts THEN lo := p; ELSE hi := p; END IF;
    END LOOP;
    IF lo = 0 THEN
        RETURN 0;   -- before the first entry the ledger is empty
    END IF;
    SELECT * INTO nxt FROM wallet.entries x WHERE x.entry_id = hi;
    IF nxt.kind = 'expire' OR (nxt.kind = 'release' AND nxt.expires_at IS NOT NULL) THEN
        RETURN wallet.ledger_balance((wallet.replay_ledger(account_id, ts)).ledger, ts);
    END IF;
    SELECT x.balance_after INTO b FROM wallet.entries x WHERE x.entry_id = lo;
    RETURN b;
END
$$;
COMMENT ON FUNCTION wallet.balance_at(bigint, timestamptz) IS 'spendable balance at instant ts, as the journal up to ts gives it (from the last entry''s balance_after; replayed only when a lot expired or a hold lapsed between that entry and the next)';

CREATE PROCEDURE wallet.expire_points_batched(as_of timestamptz DEFAULT now(), batch_size int DEFAULT 1000,
        max_batches int DEFAULT NULL)
    LANGUAGE plpgsql
    AS $$
DECLARE
    batches int := 0;
    r record;
BEGIN
    PERFORM wallet.check_expiry_as_of(as_of);
    IF batch_size IS NULL OR batch_size OPERATOR(pg_catalog.<) 1 OR max_batches OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'batch_size and max_batches must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Due accounts are settled batch_size at a time, at most max_batches times (NULL: until none is due).';
    END IF;
    LOOP
        r := wallet.expire_due_accounts(as_of, batch_size);
        -- each batch is its own transaction (an error here when CALLed inside a transaction block)
        COMMIT;
        batches := batches OPERATOR(pg_catalog.+) 1;
        EXIT WHEN r.accounts OPERATOR(pg_catalog.<) batch_size OR batches OPERATOR(pg_catalog.=) max_batches;
    END LOOP;
END
$$;
COMMENT ON PROCEDURE wallet.expire_points_batched(timestamptz, int, int) IS 'what wallet.expire_points does, batch_size accounts per transaction (at most max_batches, NULL = until none is due); CALL it outside a transaction block; as_of in the future is refused (22023)';

-- The one entry point of every periodic job: schedule it (every minute) and
-- nothing else.  Later issues add their jobs here.  Each call does bounded
-- work; what is left over is done by the next call.
CREATE PROCEDURE wallet.run_maintenance()
    LANGUAGE plpgsql
    AS $$
BEGIN
    -- 1. expiry: at most 100 batches of 1,000 due accounts, each committed
    CALL wallet.expire_points_batched(pg_catalog.now(), 1000, 100);
    -- 2. failed code attempts older than a day (the guard's default window is 15 minutes)
    PERFORM wallet.purge_code_attempts(interval '1 day');
    COMMIT;
END
$$;
COMMENT ON PROCEDURE wallet.run_maintenance() IS 'runs every periodic job with bounded work per call, committing as it goes: expiry (up to 100,000 due accounts, 1,000 per transaction), purge of failed code attempts older than a day; later issues add their jobs here; schedule it every minute (README "Maintenance")';

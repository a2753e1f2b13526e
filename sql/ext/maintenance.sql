
-- ======================================================================
-- Maintenance (issue 8): the periodic jobs, as procedures that commit as
-- they go, so that a scheduler (pg_cron: see README "Maintenance") can run
-- them every minute without one long transaction.
--
-- Procedures carry no SET search_path: a procedure with a SET clause cannot
-- COMMIT.  Instead every name is schema-qualified, every operator is written
-- OPERATOR(pg_catalog.x), and the work is done by functions that pin it.
-- ======================================================================

CREATE PROCEDURE wallet.expire_points_batched(as_of timestamptz DEFAULT now(), batch_size int DEFAULT 1000,
        max_batches int DEFAULT NULL)
    LANGUAGE plpgsql
    AS $$
DECLARE
    batches int := 0;
    r record;
BEGIN
    PERFORM wallet_internal.check_expiry_as_of(as_of);
    IF batch_size IS NULL THEN
        RAISE EXCEPTION 'batch_size must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  DETAIL = 'Due accounts are settled batch_size at a time, at most max_batches times (NULL: until none is due).';
    END IF;
    IF batch_size OPERATOR(pg_catalog.<) 1 OR max_batches OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'batch_size and max_batches must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Due accounts are settled batch_size at a time, at most max_batches times (NULL: until none is due).';
    END IF;
    LOOP
        r := wallet_internal.expire_due_accounts(as_of, batch_size);
        -- each batch is its own transaction (an error here when CALLed inside a transaction block)
        COMMIT;
        batches := batches OPERATOR(pg_catalog.+) 1;
        EXIT WHEN r.accounts OPERATOR(pg_catalog.<) batch_size OR batches OPERATOR(pg_catalog.=) max_batches;
    END LOOP;
END
$$;
COMMENT ON PROCEDURE wallet.expire_points_batched(timestamptz, int, int) IS 'what wallet.expire_points does, batch_size accounts per transaction (at most max_batches, NULL = until none is due); CALL it outside a transaction block; as_of in the future is refused (22023), a NULL batch_size is 22004';

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
    -- 3. expired budget holds: their units back to the slices, 1,000 per call
    --    (tidying only: a take reclaims expired holds itself before refusing)
    PERFORM wallet.reclaim_budget_holds(1000);
    COMMIT;
    -- 4. pending referrals past their window (issue 11): at most 100 batches of 1,000, each committed
    FOR i IN 1..100 LOOP
        EXIT WHEN wallet.expire_referrals(pg_catalog.now(), 1000) OPERATOR(pg_catalog.<) 1000;
        COMMIT;
    END LOOP;
    COMMIT;
    -- 5. tiers (issue 10): due downgrades and sweeps, at most 100 batches of 1,000 accounts
    CALL wallet.evaluate_tiers_batched(NULL, pg_catalog.now(), 1000, 100);
    -- 6. finished push messages past their merchant's retention (issue 12)
    PERFORM wallet.purge_pushes(10000);
    COMMIT;
    -- 7. push triggers (issue 12): points expiring, tier changes, abandoned carts, nearby stores
    PERFORM wallet.run_push_triggers(10000);
    COMMIT;
    -- 8. the push queue slots turn (issue 12: no decay), when the current one is 10 s old;
    --    under READ COMMITTED whatever the session's default (a turn needs it)
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    PERFORM wallet.rotate_push_queue(interval '10 seconds', 10000);
    COMMIT;
    -- 9. offer quotes expired more than a day ago (issue 11): 10,000 per call
    PERFORM wallet.purge_offer_quotes(interval '1 day', 10000);
    COMMIT;
    -- 10. what calls in flight during an erasure wrote since (push texts, events): members erased in the last day, 1,000 per call
    PERFORM wallet_internal.forget_sweep(interval '1 day', 1000);
    COMMIT;
END
$$;
COMMENT ON PROCEDURE wallet.run_maintenance() IS 'runs every periodic job with bounded work per call, committing as it goes: expiry (up to 100,000 due accounts, 1,000 per transaction), purge of failed code attempts older than a day, units of up to 1,000 expired budget holds returned, expiry of pending referrals past their window (up to 100,000, 1,000 per transaction), tier evaluation (up to 100,000 accounts, 1,000 per transaction), purge of finished push messages past retention, push triggers and the push queue''s rotation (up to 10,000 rows each), purge of offer quotes expired over a day ago (up to 10,000), the erasure of what calls in flight during a forget_member wrote since (members erased in the last day, up to 1,000); later issues add their jobs here; schedule it every minute (README "Maintenance")';

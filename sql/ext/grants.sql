
-- ======================================================================
-- Grants (issue 9), last of the parts: it covers every function before it.
-- ======================================================================

-- Privileges.  Nothing for PUBLIC; the three roles get what README "Roles
-- and privileges" lists.  Every function that pins its search_path runs as
-- the owner (SECURITY DEFINER), so the roles get no write privilege on any
-- table; generate_codes, in C, pins it too to run as the owner.  The C
-- verifiers (code_authentic, code_status, parse_code) stay as they are, for
-- speed: the campaign cache they fill reads as the owner (src/code_cache.c).
-- Not SECURITY DEFINER: functions of a value alone (type input/output,
-- operator support, accessors, the ledger_* readers, executable by the three
-- roles: operators check EXECUTE), trigger functions (they run as whoever
-- fires them: the owner, inside the API), and acts_for and caller, which
-- answer for the caller as it is.
REVOKE ALL ON ALL ROUTINES IN SCHEMA wallet FROM PUBLIC;
REVOKE ALL ON ALL ROUTINES IN SCHEMA wallet_internal FROM PUBLIC;
GRANT USAGE ON SCHEMA wallet TO wallet_admin, wallet_app, wallet_reader;
ALTER FUNCTION wallet.generate_codes(bigint, int) SET search_path = pg_catalog, pg_temp;
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_catalog.pg_proc p
              WHERE p.pronamespace IN ('wallet'::regnamespace, 'wallet_internal'::regnamespace)
                AND p.prokind = 'f' AND p.prorettype <> 'trigger'::regtype
                AND 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig)
              ORDER BY p.oid LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SECURITY DEFINER', f);
    END LOOP;
    FOR f IN SELECT p.oid FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'wallet'::regnamespace
                AND p.proname ~ '^(marketing_code|points_ledger)_'
              ORDER BY p.oid LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO wallet_admin, wallet_app, wallet_reader', f);
    END LOOP;
END
$$;
-- No JIT on the request path.  The functions run kept generic plans, made
-- once per session for any size of table: the candidates of claim_pushes
-- (LIMIT $n, estimated as a tenth of the queue) cross jit_above_cost once a
-- channel holds some ten million messages, and a plan above it compiles its
-- expressions at every execution (a claim of one message fell from 2,007 to
-- 43 a second; README "Speed").  The reports, which scan, keep the server's
-- setting.  Procedures cannot carry a SET clause (they commit); the
-- functions they call carry it.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'wallet'::regnamespace AND p.prokind = 'f'
                AND 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig)
                AND p.proname NOT IN ('campaign_cohorts', 'campaign_report', 'program_liability', 'push_funnel',
                                      'push_retention', 'push_stats', 'replay_ledger', 'rfm', 'verify_ledger')
              ORDER BY p.oid LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET jit = off', f);
    END LOOP;
END
$$;
-- values: no table behind them (the installation id is no secret)
GRANT EXECUTE ON FUNCTION wallet.version(), wallet.installation_id(), wallet.acts_for(bigint), wallet.my_merchants(),
    wallet.code_campaign(wallet.marketing_code), wallet.code_serial(wallet.marketing_code),
    wallet.code_key_version(wallet.marketing_code), wallet.code_mac_bits(wallet.marketing_code),
    wallet.code_prefix(wallet.marketing_code),
    wallet.ledger_balance(wallet.points_ledger, timestamptz), wallet.ledger_expiring(wallet.points_ledger, timestamptz, interval),
    wallet.ledger_earned(wallet.points_ledger, timestamptz, timestamptz), wallet.ledger_lots(wallet.points_ledger),
    wallet.ledger_totals(wallet.points_ledger), wallet.ledger_diff(wallet.points_ledger, wallet.points_ledger),
    wallet.policy_expiry(timestamptz, interval, text)
    TO wallet_admin, wallet_app, wallet_reader;
-- reading a merchant's points (and codes: the unthrottled verifiers)
GRANT EXECUTE ON FUNCTION wallet.balance(bigint, timestamptz), wallet.balance_at(bigint, timestamptz),
    wallet.history(bigint, timestamptz, timestamptz), wallet.replay_ledger(bigint, timestamptz),
    wallet.find_account(bigint, text), wallet.program_liability(bigint, timestamptz), wallet.verify_ledger(bigint)
    TO wallet_admin, wallet_app, wallet_reader;
GRANT EXECUTE ON FUNCTION wallet.code_authentic(wallet.marketing_code), wallet.code_status(wallet.marketing_code),
    wallet.parse_code(text), wallet.campaign_next_serial(bigint)
    TO wallet_admin, wallet_reader;
-- the app: accounts, postings, codes issued, checked, reserved, redeemed
GRANT EXECUTE ON FUNCTION wallet.open_account(bigint, text),
    wallet.accrue(bigint, bigint, text, text, text, timestamptz), wallet.redeem(bigint, bigint, text, text, text),
    wallet.hold(bigint, bigint, text, interval, text, text), wallet.capture(bigint, bigint, text),
    wallet.release(bigint, text), wallet.reverse(bigint, text, text, text),
    wallet.issue_code(bigint, text),
    wallet.check_code(text, text), wallet.check_code(text, text, jsonb), wallet.check_code(wallet.marketing_code, text, jsonb),
    wallet.redeem_code(text, text, text, jsonb), wallet.redeem_code(wallet.marketing_code, text, text, jsonb),
    wallet.reserve_code(text, text, text, interval, jsonb), wallet.reserve_code(wallet.marketing_code, text, text, interval, jsonb),
    wallet.release_reservation(bigint), wallet.undo_redemption(bigint, text),
    wallet.upsert_member(bigint, text, text, text)
    TO wallet_app;
-- the admin: merchants, programs, campaigns and keys, guard, maintenance, grants
GRANT EXECUTE ON FUNCTION wallet.create_merchant(text), wallet.grant_merchant(bigint, regrole),
    wallet.revoke_merchant(bigint, regrole),
    wallet.create_program(bigint, text, interval, text), wallet.close_program(bigint),
    wallet.adjust(bigint, bigint, text, text),
    wallet.create_campaign(bigint, text, text, int, timestamptz, timestamptz, int, int, bigint),
    wallet.rotate_code_key(bigint), wallet.retire_code_key(bigint, int), wallet.generate_codes(bigint, int),
    wallet.set_code_guard(int, int, interval, bigint), wallet.clear_code_failures(text, text, bigint),
    wallet.purge_code_attempts(interval), wallet.expire_points(timestamptz),
    wallet.forget_member(bigint, text, text)
    TO wallet_admin;
-- campaign audience, analytics, segments, feedback (issue 11)
GRANT EXECUTE ON FUNCTION wallet.campaign_group(bigint, text) TO wallet_admin, wallet_app, wallet_reader;
GRANT EXECUTE ON FUNCTION wallet.record_feedback(bigint, text, integer, text, text, text) TO wallet_app;
GRANT EXECUTE ON FUNCTION wallet.set_campaign_audience(bigint, text, numeric, bigint, integer, text[], text[], timestamptz) TO wallet_admin;
GRANT EXECUTE ON FUNCTION wallet.set_campaign_redemption_value(bigint, numeric), wallet.record_campaign_cost(bigint, numeric, text, timestamptz)
    TO wallet_admin;
GRANT EXECUTE ON FUNCTION wallet.rfm(bigint, timestamptz, text),
    wallet.campaign_report(bigint, timestamptz, timestamptz, text),
    wallet.campaign_cohorts(bigint, timestamptz, timestamptz, integer, text)
    TO wallet_admin, wallet_reader;
-- push queue (issue 12): the app records consent and preferences, enqueues and delivers; the admin sets the rules
GRANT EXECUTE ON FUNCTION wallet.record_consent(bigint, text, text, text, boolean, text, text, text, timestamptz),
    wallet.set_push_preferences(bigint, text, time, time, text[], int, int),
    wallet.enqueue_push(bigint, text, text, text, jsonb, bigint, text, timestamptz, timestamptz, int),
    wallet.enqueue_push_audience(bigint, text[], text, text, jsonb, bigint, text, timestamptz, timestamptz, int),
    wallet.claim_pushes(text, int, interval), wallet.extend_lease(bigint, interval), wallet.ack_push(bigint, text),
    wallet.ack_pushes(bigint[], text[]),
    wallet.fail_push(bigint, text, boolean), wallet.record_push_event(bigint, text, timestamptz),
    wallet.ack_push(bigint, text, int), wallet.ack_pushes(bigint[], text[], int[]), wallet.fail_push(bigint, text, boolean, int),
    wallet.extend_lease(bigint, interval, int),
    wallet.enqueue_push_local(bigint, text[], text, text, jsonb, timestamp, bigint, text, timestamptz, int),
    wallet.track_event(bigint, text, text, jsonb, timestamptz)
    TO wallet_app;
-- push figures: for the app, the admin and the analysts
GRANT EXECUTE ON FUNCTION wallet.push_stats(bigint, bigint, interval, interval), wallet.push_funnel(bigint, bigint, interval, interval),
    wallet.push_retention(bigint, bigint, int)
    TO wallet_admin, wallet_app, wallet_reader;
-- the wake-up name of a merchant's channel: for the sending workers (the app), and for
-- the admin and the analysts, who see the same merchants' queues
GRANT EXECUTE ON FUNCTION wallet.push_channel(bigint, text) TO wallet_admin, wallet_app, wallet_reader;
GRANT EXECUTE ON FUNCTION wallet.set_push_settings(bigint, time, time, text, int, interval, interval),
    wallet.set_push_topic(bigint, text, boolean, text), wallet.set_push_cap(bigint, text, text, text, int, interval, text),
    wallet.requeue_push(bigint), wallet.purge_pushes(int),
    wallet.set_push_store(bigint, text, double precision, double precision, double precision, interval),
    wallet.create_push_trigger(bigint, text, text, text, jsonb, jsonb, bigint), wallet.run_push_triggers(int)
    TO wallet_admin;
-- the turn of the push queue slots: the sending workers (the app) and the maintenance (the admin)
GRANT EXECUTE ON FUNCTION wallet.rotate_push_queue(interval, int) TO wallet_admin, wallet_app;
GRANT EXECUTE ON PROCEDURE wallet.expire_points_batched(timestamptz, int, int), wallet.run_maintenance() TO wallet_admin;
-- what those procedures (not SECURITY DEFINER: they commit) call
GRANT USAGE ON SCHEMA wallet_internal TO wallet_admin;
GRANT EXECUTE ON FUNCTION wallet_internal.check_expiry_as_of(timestamptz), wallet_internal.expire_due_accounts(timestamptz, int),
    wallet_internal.forget_sweep(interval, int) TO wallet_admin;
-- campaign budgets (issue 11): the admin sets them, every role reads them;
-- takes and holds are internal (the offers' checkout calls them)
GRANT EXECUTE ON FUNCTION wallet.set_campaign_budget(bigint, text, bigint, int), wallet.reclaim_budget_holds(int) TO wallet_admin;
GRANT EXECUTE ON FUNCTION wallet.campaign_budget(bigint) TO wallet_admin, wallet_app, wallet_reader;
-- purchases and earning rules (issue 10): the app records, the admin sets the rules
GRANT EXECUTE ON FUNCTION wallet.record_purchase(bigint, text, text, numeric, text, timestamptz, jsonb, bigint[], text[], bigint),
    wallet.record_refund(bigint, text, numeric, text)
    TO wallet_app;
GRANT EXECUTE ON FUNCTION wallet.preview_purchase(bigint, text, text, numeric, text, timestamptz, jsonb)
    TO wallet_app, wallet_reader;
GRANT EXECUTE ON FUNCTION wallet.set_program_earning(bigint, text, text, boolean, numeric),
    wallet.create_earning_rule(bigint, text, text, numeric, jsonb, jsonb, timestamptz, timestamptz, int, boolean, bigint),
    wallet.update_earning_rule(bigint, text, numeric, jsonb, jsonb, timestamptz, int, boolean),
    wallet.end_earning_rule(bigint, timestamptz)
    TO wallet_admin;
-- referrals and sharing (issue 11): the app refers and records shares, the admin sets the rewards up
GRANT EXECUTE ON FUNCTION wallet.refer(bigint, text, text, text, bigint, text, text),
    wallet.record_share(bigint, text, bigint, text, text)
    TO wallet_app;
GRANT EXECUTE ON FUNCTION wallet.set_referral_program(bigint, bigint, bigint, bigint, int, numeric, text, int, text),
    wallet.set_share_reward(bigint, bigint, bigint, int, int), wallet.expire_referrals(timestamptz, int)
    TO wallet_admin;
-- tiers (issue 10): the admin configures and evaluates, everyone reads a member's tier
GRANT EXECUTE ON FUNCTION wallet.create_tier(bigint, int, text, bigint, numeric, numeric, jsonb),
    wallet.update_tier(bigint, text, bigint, numeric, numeric, jsonb, boolean), wallet.drop_tier(bigint),
    wallet.set_tier_policy(bigint, text, int, text, int, text), wallet.evaluate_tiers(bigint, timestamptz, int),
    wallet_internal.tier_programs_due(bigint, timestamptz)
    TO wallet_admin;
GRANT EXECUTE ON PROCEDURE wallet.evaluate_tiers_batched(bigint, timestamptz, int, int) TO wallet_admin;
GRANT EXECUTE ON FUNCTION wallet.member_tier(bigint, timestamptz), wallet.tier_progress(bigint)
    TO wallet_admin, wallet_app, wallet_reader;
-- offers (issue 11): the admin makes them, the app quotes and releases quotes
GRANT EXECUTE ON FUNCTION wallet.create_offer(bigint, text, text, numeric, text, numeric, jsonb, jsonb, boolean, int, boolean, boolean, timestamptz, timestamptz),
    wallet.end_offer(bigint, timestamptz), wallet.purge_offer_quotes(interval, int)
    TO wallet_admin;
GRANT EXECUTE ON FUNCTION wallet.quote_offers(bigint, text, numeric, text, timestamptz, jsonb, text[], interval),
    wallet.release_quote(bigint)
    TO wallet_app;
-- tables: read through row-level security; written only by the functions
GRANT SELECT ON ALL TABLES IN SCHEMA wallet TO wallet_app, wallet_reader;
-- What each index serves.
COMMENT ON INDEX wallet.campaign_feedback_campaign_idx IS 'a campaign''s feedback in time order (campaign_report)';
COMMENT ON INDEX wallet.campaign_costs_campaign_idx IS 'a campaign''s costs in time order (campaign_report)';
COMMENT ON INDEX wallet.budget_holds_active_idx IS 'a campaign''s active budget holds by expiry (what still counts against the budget)';
COMMENT ON INDEX wallet.budget_holds_expiry_idx IS 'active budget holds by expiry (reclaim_budget_holds)';
COMMENT ON INDEX wallet.accounts_next_event_idx IS 'accounts with a lot or hold due, by when (expire_points)';
COMMENT ON INDEX wallet.entries_account_idx IS 'an account''s journal in entry order (balances, replay_ledger, verify_ledger)';
COMMENT ON INDEX wallet.entries_idempotency_key_idx IS 'one entry per account and idempotency key, for ever';
COMMENT ON INDEX wallet.entries_reference_idx IS 'entries by the app''s reference (an order, a basket)';
COMMENT ON INDEX wallet.entries_hold_closed_idx IS 'a hold is closed (captured or released) at most once';
COMMENT ON INDEX wallet.entries_reverses_idx IS 'an entry is reversed at most once';
COMMENT ON INDEX wallet.programs_earning_currency_idx IS 'at most one open program of a merchant earns in each currency';
COMMENT ON INDEX wallet.purchases_member_idx IS 'a member''s purchases in time order (earning caps, tiers by spend, attribution, RFM)';
COMMENT ON INDEX wallet.purchases_time_idx IS 'a merchant''s purchases in time order (reports over a period)';
COMMENT ON INDEX wallet.refunds_purchase_idx IS 'an order''s refunds';
COMMENT ON INDEX wallet.member_events_member_idx IS 'a member''s events by kind and time (triggers, abandoned carts, cooldowns)';
COMMENT ON INDEX wallet.member_events_kind_idx IS 'a merchant''s events of one kind in time order (triggers, reports)';
COMMENT ON INDEX wallet.account_tiers_review_idx IS 'tier assignments due for review (downgrades after the grace)';
COMMENT ON INDEX wallet.tier_history_account_idx IS 'an account''s tier changes in time order';
COMMENT ON INDEX wallet.audit_log_merchant_idx IS 'a merchant''s audit records in time order';
COMMENT ON INDEX wallet.offers_merchant_idx IS 'a merchant''s offers by currency and start (quote_offers)';
COMMENT ON INDEX wallet.offer_quotes_expiry_idx IS 'quotes by expiry (purge_offer_quotes)';
COMMENT ON INDEX wallet.purchase_offers_offer_idx IS 'the purchases an offer was applied to (its caps and report)';
COMMENT ON INDEX wallet.earning_rules_program_idx IS 'a program''s earning rules by start of validity';
COMMENT ON INDEX wallet.push_consent_log_member_idx IS 'a member''s consent evidence per channel and topic in time order (the current state is the latest)';
COMMENT ON INDEX wallet.push_messages_due_idx IS 'the claim path: due messages per channel, highest priority first';
COMMENT ON INDEX wallet.push_messages_member_idx IS 'the caps: a member''s queued messages per channel and cap group at their planned slot (covering: a count reads the index only)';
COMMENT ON INDEX wallet.push_messages_member_sent_idx IS 'the caps: a member''s messages sent or being sent per channel and cap group at their claim time';
COMMENT ON INDEX wallet.push_messages_finished_idx IS 'finished messages by when they finished (purge_pushes after the retention)';
COMMENT ON INDEX wallet.push_messages_member_all_idx IS 'a member''s messages (forget_member, conversions)';
COMMENT ON INDEX wallet.push_attempts_push_idx IS 'a message''s delivery records';
COMMENT ON INDEX wallet.push_attempts_member_idx IS 'a member''s delivery records in time order (forget_member, the exactness checks)';
COMMENT ON INDEX wallet.push_events_push_idx IS 'a message''s events by kind (the funnel)';
COMMENT ON INDEX wallet.push_events_campaign_idx IS 'a campaign''s push events by kind (push_stats)';
COMMENT ON INDEX wallet.code_failed_attempts_member_idx IS 'a member''s failed code checks in time order (the brute-force guard)';
COMMENT ON INDEX wallet.code_failed_attempts_source_idx IS 'a source''s failed code checks in time order (the brute-force guard)';
COMMENT ON INDEX wallet.code_failed_attempts_at_idx IS 'failed code checks by age (purge_code_attempts)';
COMMENT ON INDEX wallet.code_bindings_member_idx IS 'the codes bound to a member (forget_member)';
COMMENT ON INDEX wallet.code_reservations_idempotency_key_idx IS 'one reservation per merchant and idempotency key';
COMMENT ON INDEX wallet.code_reservations_active_code_idx IS 'a code''s active reservations, counted against its cap under the cap''s lock';
COMMENT ON INDEX wallet.code_reservations_active_member_idx IS 'a member''s active reservations in a campaign, counted against its per-member cap';
COMMENT ON INDEX wallet.code_reservations_active_campaign_idx IS 'a campaign''s active reservations, counted against its total cap';
COMMENT ON INDEX wallet.code_redemptions_idempotency_key_idx IS 'one redemption per merchant and idempotency key';
COMMENT ON INDEX wallet.code_redemptions_code_idx IS 'a code''s redemptions';
COMMENT ON INDEX wallet.code_redemptions_reservation_id_key IS 'a reservation is converted once (partial: the NULLs of direct redemptions would share one leaf page)';
COMMENT ON INDEX wallet.code_redemptions_member_idx IS 'a member''s redemptions in time order (forget_member, reports)';
COMMENT ON INDEX wallet.referrals_referrer_idx IS 'a referrer''s referrals (its cap, the loop check)';
COMMENT ON INDEX wallet.referrals_referee_all_idx IS 'every referral of a referee, refused ones too (the loop check, forget_member)';
COMMENT ON INDEX wallet.shares_member_idx IS 'a member''s shares (its cap, forget_member)';
COMMENT ON INDEX wallet.accounts_program_account_idx IS 'a program''s accounts in account order (the tier sweep, a batch at a time)';
-- The rest, from the catalog (last, like the grants: whichever section made
-- them): every identity sequence says what it numbers, the indexes of
-- constraints say which, the partitions' indexes name the index they are
-- part of, and every constraint its definition.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT 'SEQUENCE' AS kind, c.oid::regclass AS obj,
                    pg_catalog.format('draws the ids of %s (its identity; kept by pg_dump)',
                                      pg_catalog.pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid)) AS txt
               FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                                          AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype = 'i'
              WHERE c.relkind = 'S' AND c.relnamespace IN ('wallet'::regnamespace, 'wallet_internal'::regnamespace)
             UNION ALL
             SELECT 'INDEX', x.oid::regclass,
                    pg_catalog.format('enforces %s of %s: %s', k.conname, k.conrelid::regclass, pg_catalog.pg_get_constraintdef(k.oid))
               FROM pg_catalog.pg_class x
               JOIN pg_catalog.pg_constraint k ON k.conindid = x.oid
               JOIN pg_catalog.pg_index i ON i.indexrelid = x.oid AND i.indrelid = k.conrelid
              WHERE x.relnamespace IN ('wallet'::regnamespace, 'wallet_internal'::regnamespace)
                AND pg_catalog.obj_description(x.oid, 'pg_class') IS NULL
             UNION ALL
             SELECT 'INDEX', x.oid::regclass, pg_catalog.format('the part of %s on the partition %s', h.inhparent::regclass, i.indrelid::regclass)
               FROM pg_catalog.pg_class x
               JOIN pg_catalog.pg_inherits h ON h.inhrelid = x.oid
               JOIN pg_catalog.pg_index i ON i.indexrelid = x.oid
              WHERE x.relkind = 'i' AND x.relnamespace IN ('wallet'::regnamespace, 'wallet_internal'::regnamespace)
                AND pg_catalog.obj_description(x.oid, 'pg_class') IS NULL
                AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint k WHERE k.conindid = x.oid AND k.conrelid = i.indrelid)
              ORDER BY 1, 2 LOOP
        EXECUTE pg_catalog.format('COMMENT ON %s %s IS %L', r.kind, r.obj, r.txt);
    END LOOP;
    -- and every table constraint says what it holds
    FOR r IN SELECT k.conname, k.conrelid::regclass AS tab, pg_catalog.pg_get_constraintdef(k.oid) AS def
               FROM pg_catalog.pg_constraint k
               JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
              WHERE c.relnamespace IN ('wallet'::regnamespace, 'wallet_internal'::regnamespace)
                AND pg_catalog.obj_description(k.oid, 'pg_constraint') IS NULL
              ORDER BY k.conrelid, k.conname LOOP
        EXECUTE pg_catalog.format('COMMENT ON CONSTRAINT %I ON %s IS %L', r.conname, r.tab,
                                  pg_catalog.format('holds %s', r.def));
    END LOOP;
END
$$;

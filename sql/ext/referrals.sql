
-- ======================================================================
-- Referrals and sharing (issue 11).
--
-- A referral program and a share reward belong to a campaign (one row each,
-- keyed by campaign_id: the campaign gives the window, the program the
-- points).  wallet.refer records who referred whom; the referee's first
-- qualifying purchase (an insert into wallet.purchases, whoever makes it)
-- rewards both sides in the purchase's transaction, once.  Abuse guards and
-- caps answer with a status and a reason, never an error, so the app can
-- tell the member why.  Referrals and shares name members by member_id: the
-- member's reference lives in wallet.members only (forget_member
-- pseudonymises it there); the app's device or payment fingerprints are
-- kept on the referral and cleared by forget_member.  README "Campaigns",
-- "Referrals and sharing".
-- ======================================================================

------------------------------------------------------------------------------
-- Tables
------------------------------------------------------------------------------

CREATE TABLE wallet.referral_programs (
    campaign_id      bigint PRIMARY KEY REFERENCES wallet.campaigns,
    merchant_id      bigint NOT NULL REFERENCES wallet.merchants,
    program_id       bigint NOT NULL REFERENCES wallet.programs,
    referrer_points  bigint NOT NULL CHECK (referrer_points >= 0),
    referee_points   bigint NOT NULL CHECK (referee_points >= 0),
    qualify_days     int NOT NULL CHECK (qualify_days BETWEEN 1 AND 3650),
    min_amount       numeric NOT NULL DEFAULT 0 CHECK (min_amount >= 0),
    currency         text CHECK (currency ~ '^[A-Z]{3}$'),
    max_per_referrer int CHECK (max_per_referrer > 0),
    cap_period       text NOT NULL DEFAULT 'month' CHECK (cap_period IN ('day', 'week', 'month', 'year', 'campaign')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (referrer_points + referee_points > 0),
    CHECK (min_amount = 0 OR currency IS NOT NULL)
);
COMMENT ON TABLE wallet.referral_programs IS 'the referral program of a campaign (wallet.set_referral_program): points for both sides when the referee''s first qualifying purchase comes within qualify_days of the referral, and the cap per referrer';
COMMENT ON COLUMN wallet.referral_programs.campaign_id IS 'the campaign (one referral program each): its window bounds when referrals are taken';
COMMENT ON COLUMN wallet.referral_programs.merchant_id IS 'merchant of the campaign: the key to distribute by';
COMMENT ON COLUMN wallet.referral_programs.program_id IS 'the points program both rewards are posted in (same merchant)';
COMMENT ON COLUMN wallet.referral_programs.referrer_points IS 'points for the referrer (0 = none)';
COMMENT ON COLUMN wallet.referral_programs.referee_points IS 'points for the referee (0 = none)';
COMMENT ON COLUMN wallet.referral_programs.qualify_days IS 'the referee''s qualifying purchase must be made within this many days of the referral';
COMMENT ON COLUMN wallet.referral_programs.min_amount IS 'least amount of a qualifying purchase, in currency (0 = any amount)';
COMMENT ON COLUMN wallet.referral_programs.currency IS 'ISO 4217 code a qualifying purchase must be paid in (NULL = any; required with a min_amount)';
COMMENT ON COLUMN wallet.referral_programs.max_per_referrer IS 'referrals one referrer may make per cap_period (refused ones do not count); NULL = unlimited';
COMMENT ON COLUMN wallet.referral_programs.cap_period IS 'period of max_per_referrer: day, week, month, year (UTC calendar periods) or campaign (the whole campaign)';
COMMENT ON COLUMN wallet.referral_programs.created_at IS 'when the program was set up';
COMMENT ON COLUMN wallet.referral_programs.updated_at IS 'when its terms last changed (referrals keep the terms they were made under)';
SELECT pg_catalog.pg_extension_config_dump('wallet.referral_programs', '');
ALTER TABLE wallet.referral_programs ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.referral_programs USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.referral_programs IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TABLE wallet.referrals (
    referral_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id          bigint NOT NULL REFERENCES wallet.merchants,
    campaign_id          bigint NOT NULL REFERENCES wallet.campaigns,
    referrer_id          bigint NOT NULL REFERENCES wallet.members,
    referee_id           bigint NOT NULL REFERENCES wallet.members,
    channel              text NOT NULL,
    status               text NOT NULL CHECK (status IN ('pending', 'rewarded', 'expired', 'refused')),
    reason               text CHECK (reason IN ('self_referral', 'already_referred', 'referrer_cap', 'shared_fingerprint',
                                                'referee_already_purchased', 'campaign_inactive', 'window_passed', 'program_closed',
                                                'referral_loop')),
    referrer_fingerprint text,
    referee_fingerprint  text,
    referred_at          timestamptz NOT NULL DEFAULT now(),
    expires_at           timestamptz,
    program_id           bigint REFERENCES wallet.programs,
    referrer_points      bigint,
    referee_points       bigint,
    min_amount           numeric,
    currency             text,
    purchase_id          bigint,
    referrer_entry_id    bigint,
    referee_entry_id     bigint,
    settled_at           timestamptz,
    CHECK ((status IN ('refused', 'expired')) = (reason IS NOT NULL)),
    CHECK (status = 'refused' OR (expires_at IS NOT NULL AND program_id IS NOT NULL))
);
-- one referrer per referee and merchant: refused attempts do not count
CREATE UNIQUE INDEX referrals_referee_idx ON wallet.referrals (merchant_id, referee_id) WHERE status <> 'refused';
CREATE INDEX referrals_referrer_idx ON wallet.referrals (merchant_id, referrer_id);
CREATE INDEX referrals_referee_all_idx ON wallet.referrals (merchant_id, referee_id);
CREATE INDEX referrals_due_idx ON wallet.referrals (expires_at) WHERE status = 'pending';
COMMENT ON INDEX wallet.referrals_referee_idx IS 'one referrer per referee and merchant (refused attempts aside); also the probe of the purchase trigger';
COMMENT ON INDEX wallet.referrals_referrer_idx IS 'a referrer''s referrals (fingerprints, erasure)';
COMMENT ON INDEX wallet.referrals_referee_all_idx IS 'every attempt naming a referee, refused ones too (fingerprints, erasure)';
COMMENT ON INDEX wallet.referrals_due_idx IS 'pending referrals by the end of their window, for wallet.expire_referrals';
COMMENT ON TABLE wallet.referrals IS 'every wallet.refer call: pending until the referee''s first qualifying purchase (rewarded) or the end of its window (expired), or refused by an abuse guard with its reason';
COMMENT ON COLUMN wallet.referrals.referral_id IS 'referral id';
COMMENT ON COLUMN wallet.referrals.merchant_id IS 'merchant of the campaign: the key to distribute by';
COMMENT ON COLUMN wallet.referrals.campaign_id IS 'the campaign whose referral program it was made under';
COMMENT ON COLUMN wallet.referrals.referrer_id IS 'the member who referred (wallet.members)';
COMMENT ON COLUMN wallet.referrals.referee_id IS 'the member referred (wallet.members)';
COMMENT ON COLUMN wallet.referrals.channel IS 'how the referral was made, as the app names it (link, qr, wechat, ...)';
COMMENT ON COLUMN wallet.referrals.status IS 'pending, rewarded, expired (window passed, program closed) or refused (an abuse guard: see reason)';
COMMENT ON COLUMN wallet.referrals.reason IS 'why refused (self_referral, already_referred, referral_loop, referrer_cap, shared_fingerprint, referee_already_purchased, campaign_inactive) or expired (window_passed, program_closed, referee_already_purchased: a purchase made before the referral turned up); NULL otherwise';
COMMENT ON COLUMN wallet.referrals.referrer_fingerprint IS 'the app''s opaque device or payment fingerprint hash of the referrer side (personal data: cleared by forget_member); NULL = none given';
COMMENT ON COLUMN wallet.referrals.referee_fingerprint IS 'the app''s opaque device or payment fingerprint hash of the referee side (personal data: cleared by forget_member); NULL = none given';
COMMENT ON COLUMN wallet.referrals.referred_at IS 'when the referral was made; a qualifying purchase is made at or after it';
COMMENT ON COLUMN wallet.referrals.expires_at IS 'a qualifying purchase is made before this instant (referred_at + qualify_days); NULL when refused';
COMMENT ON COLUMN wallet.referrals.program_id IS 'the points program of the rewards (the terms below are those of the referral program when the referral was made)';
COMMENT ON COLUMN wallet.referrals.referrer_points IS 'points promised to the referrer';
COMMENT ON COLUMN wallet.referrals.referee_points IS 'points promised to the referee';
COMMENT ON COLUMN wallet.referrals.min_amount IS 'least amount of the qualifying purchase';
COMMENT ON COLUMN wallet.referrals.currency IS 'currency of the qualifying purchase (NULL = any)';
COMMENT ON COLUMN wallet.referrals.purchase_id IS 'the qualifying purchase (rewarded), else NULL';
COMMENT ON COLUMN wallet.referrals.referrer_entry_id IS 'the accrue entry of the referrer''s reward (NULL when none)';
COMMENT ON COLUMN wallet.referrals.referee_entry_id IS 'the accrue entry of the referee''s reward (NULL when none)';
COMMENT ON COLUMN wallet.referrals.settled_at IS 'when it was rewarded or expired';
SELECT pg_catalog.pg_extension_config_dump('wallet.referrals', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.referrals', 'referral_id'), '');
ALTER TABLE wallet.referrals ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.referrals USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.referrals IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

-- The cap per referrer: one counter per referrer and period, bumped under
-- its row lock only while below the cap, so racing referrals stop exactly
-- at it.
CREATE TABLE wallet.referral_counts (
    campaign_id  bigint NOT NULL REFERENCES wallet.campaigns,
    member_id    bigint NOT NULL REFERENCES wallet.members,
    period_start timestamptz NOT NULL,
    merchant_id  bigint NOT NULL REFERENCES wallet.merchants,
    referrals    int NOT NULL CHECK (referrals >= 0),
    PRIMARY KEY (campaign_id, member_id, period_start)
);
COMMENT ON TABLE wallet.referral_counts IS 'referrals taken per referrer, campaign and cap period (the cap of wallet.referral_programs.max_per_referrer)';
COMMENT ON COLUMN wallet.referral_counts.campaign_id IS 'the campaign';
COMMENT ON COLUMN wallet.referral_counts.member_id IS 'the referrer (wallet.members)';
COMMENT ON COLUMN wallet.referral_counts.period_start IS 'start of the cap period (UTC; -infinity for the period campaign)';
COMMENT ON COLUMN wallet.referral_counts.merchant_id IS 'merchant of the campaign: the key to distribute by';
COMMENT ON COLUMN wallet.referral_counts.referrals IS 'referrals taken (not refused) in the period';
SELECT pg_catalog.pg_extension_config_dump('wallet.referral_counts', '');
ALTER TABLE wallet.referral_counts ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.referral_counts USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.referral_counts IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TABLE wallet.share_rewards (
    campaign_id    bigint PRIMARY KEY REFERENCES wallet.campaigns,
    merchant_id    bigint NOT NULL REFERENCES wallet.merchants,
    program_id     bigint NOT NULL REFERENCES wallet.programs,
    points         bigint NOT NULL CHECK (points > 0),
    max_per_member int CHECK (max_per_member > 0),
    max_per_day    int CHECK (max_per_day > 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE wallet.share_rewards IS 'the share reward of a campaign (wallet.set_share_reward): points for a member who shares it, within caps per member';
COMMENT ON COLUMN wallet.share_rewards.campaign_id IS 'the campaign shared (one share reward each): its window bounds when shares are rewarded';
COMMENT ON COLUMN wallet.share_rewards.merchant_id IS 'merchant of the campaign: the key to distribute by';
COMMENT ON COLUMN wallet.share_rewards.program_id IS 'the points program the reward is posted in (same merchant)';
COMMENT ON COLUMN wallet.share_rewards.points IS 'points per rewarded share';
COMMENT ON COLUMN wallet.share_rewards.max_per_member IS 'rewarded shares per member over the whole campaign; NULL = unlimited';
COMMENT ON COLUMN wallet.share_rewards.max_per_day IS 'rewarded shares per member and day (the member''s time zone, else UTC); NULL = unlimited';
COMMENT ON COLUMN wallet.share_rewards.created_at IS 'when the reward was set up';
COMMENT ON COLUMN wallet.share_rewards.updated_at IS 'when its terms last changed';
SELECT pg_catalog.pg_extension_config_dump('wallet.share_rewards', '');
ALTER TABLE wallet.share_rewards ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.share_rewards USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.share_rewards IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TABLE wallet.shares (
    share_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id     bigint NOT NULL REFERENCES wallet.merchants,
    campaign_id     bigint NOT NULL REFERENCES wallet.campaigns,
    member_id       bigint NOT NULL REFERENCES wallet.members,
    channel         text NOT NULL,
    status          text NOT NULL CHECK (status IN ('rewarded', 'refused')),
    reason          text CHECK (reason IN ('member_cap', 'daily_cap', 'campaign_inactive', 'program_closed')),
    points          bigint NOT NULL DEFAULT 0 CHECK (points >= 0),
    entry_id        bigint,
    idempotency_key text,
    shared_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'refused') = (reason IS NOT NULL)),
    UNIQUE (merchant_id, idempotency_key)
);
CREATE INDEX shares_member_idx ON wallet.shares (merchant_id, member_id);
COMMENT ON INDEX wallet.shares_member_idx IS 'a member''s shares';
COMMENT ON TABLE wallet.shares IS 'every share recorded by wallet.record_share: rewarded, or refused by a cap with its reason';
COMMENT ON COLUMN wallet.shares.share_id IS 'share id';
COMMENT ON COLUMN wallet.shares.merchant_id IS 'merchant of the campaign: the key to distribute by';
COMMENT ON COLUMN wallet.shares.campaign_id IS 'the campaign shared';
COMMENT ON COLUMN wallet.shares.member_id IS 'the member who shared (wallet.members)';
COMMENT ON COLUMN wallet.shares.channel IS 'where it was shared, as the app names it (wechat, weibo, link, ...)';
COMMENT ON COLUMN wallet.shares.status IS 'rewarded, or refused (see reason)';
COMMENT ON COLUMN wallet.shares.reason IS 'why refused: member_cap, daily_cap, campaign_inactive, program_closed; NULL when rewarded';
COMMENT ON COLUMN wallet.shares.points IS 'points rewarded (0 when refused)';
COMMENT ON COLUMN wallet.shares.entry_id IS 'the accrue entry of the reward (NULL when refused)';
COMMENT ON COLUMN wallet.shares.idempotency_key IS 'the app''s key of the call, unique per merchant (a retry returns this row); NULL = none given';
COMMENT ON COLUMN wallet.shares.shared_at IS 'when it was recorded';
SELECT pg_catalog.pg_extension_config_dump('wallet.shares', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.shares', 'share_id'), '');
ALTER TABLE wallet.shares ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.shares USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.shares IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

-- The share caps: one counter row per member and campaign (the total and
-- the current day's count), bumped under its row lock only while below
-- both caps.
CREATE TABLE wallet.share_counts (
    campaign_id  bigint NOT NULL REFERENCES wallet.campaigns,
    member_id    bigint NOT NULL REFERENCES wallet.members,
    merchant_id  bigint NOT NULL REFERENCES wallet.merchants,
    rewarded     int NOT NULL CHECK (rewarded >= 0),
    day          date NOT NULL,
    day_rewarded int NOT NULL CHECK (day_rewarded >= 0),
    PRIMARY KEY (campaign_id, member_id)
);
COMMENT ON TABLE wallet.share_counts IS 'rewarded shares per member and campaign, in all and on the member''s current day (the caps of wallet.share_rewards)';
COMMENT ON COLUMN wallet.share_counts.campaign_id IS 'the campaign';
COMMENT ON COLUMN wallet.share_counts.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.share_counts.merchant_id IS 'merchant of the campaign: the key to distribute by';
COMMENT ON COLUMN wallet.share_counts.rewarded IS 'rewarded shares of the campaign by the member';
COMMENT ON COLUMN wallet.share_counts.day IS 'the latest day of the member with a rewarded share (its time zone, else UTC); a share dated to an earlier day counts against it';
COMMENT ON COLUMN wallet.share_counts.day_rewarded IS 'rewarded shares on that day';
SELECT pg_catalog.pg_extension_config_dump('wallet.share_counts', '');
ALTER TABLE wallet.share_counts ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.share_counts USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.share_counts IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

------------------------------------------------------------------------------
-- Helpers
------------------------------------------------------------------------------

-- Optional or required short texts of the app (channel, fingerprint, key).
CREATE FUNCTION wallet_internal.check_label(what text, value text, max_length int, required boolean) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF value IS NULL THEN
        IF required THEN
            RAISE EXCEPTION '% must not be null', what
                USING ERRCODE = 'null_value_not_allowed', DETAIL = format('The %s must be given.', what);
        END IF;
        RETURN;
    END IF;
    IF btrim(value) = '' OR length(value) > max_length THEN
        RAISE EXCEPTION '% must not be %', what, CASE WHEN btrim(value) = '' THEN 'blank' ELSE format('longer than %s characters', max_length) END
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The %s is a non-blank text of at most %s characters%s.', what, max_length,
                                  CASE WHEN required THEN '' ELSE ' (NULL: none)' END);
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.check_label(text, text, int, boolean) IS 'internal: raises 22004 for a required text that is NULL, 22023 for a blank or over-long one';

-- The campaign of a referral program or share reward being set up, with the
-- program it pays in: both the caller's and the same merchant's, the
-- program open.  Returns the merchant.
CREATE FUNCTION wallet_internal.reward_setup_check(campaign_id bigint, program_id bigint) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    merchant bigint;
    closed boolean;
BEGIN
    IF campaign_id IS NULL OR program_id IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN campaign_id IS NULL THEN 'campaign_id' ELSE 'program_id' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A reward belongs to a campaign and is paid in a points program, both named by their ids.';
    END IF;
    SELECT c.merchant_id INTO merchant FROM wallet.campaigns c
     WHERE c.campaign_id = reward_setup_check.campaign_id AND wallet.acts_for(c.merchant_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'WL101', DETAIL = format('There is no campaign %s.', campaign_id),
                  HINT = 'Create it with wallet.create_campaign.';
    END IF;
    SELECT p.closed_at IS NOT NULL INTO closed FROM wallet.programs p
     WHERE p.program_id = reward_setup_check.program_id AND p.merchant_id = merchant;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s of the campaign''s merchant.', program_id);
    END IF;
    IF closed THEN
        PERFORM wallet_internal.program_closed(program_id);
    END IF;
    RETURN merchant;
END
$$;
COMMENT ON FUNCTION wallet_internal.reward_setup_check(bigint, bigint) IS 'internal: the merchant of a campaign and program a reward is set up for; 22004 for NULL ids, WL101 for an unknown campaign, WL214 for a program not of its merchant, WL202 for a closed one';

-- The campaign a referral or share names: the merchant's (else WL101, as
-- an unknown one, whoever's it is); returns whether it runs now.
CREATE FUNCTION wallet_internal.campaign_running(merchant_id bigint, campaign_id bigint) RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    starts timestamptz;
    ends timestamptz;
BEGIN
    IF campaign_id IS NULL THEN
        RAISE EXCEPTION 'campaign_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Referrals and shares are of a campaign, named by its id.';
    END IF;
    SELECT c.starts_at, c.ends_at INTO starts, ends FROM wallet.campaigns c
     WHERE c.campaign_id = campaign_running.campaign_id AND c.merchant_id = campaign_running.merchant_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'WL101', DETAIL = format('Merchant %s has no campaign %s.', merchant_id, campaign_id),
                  HINT = 'Create it with wallet.create_campaign.';
    END IF;
    RETURN now() >= starts AND now() < coalesce(ends, 'infinity');
END
$$;
COMMENT ON FUNCTION wallet_internal.campaign_running(bigint, bigint) IS 'internal: whether the merchant''s campaign runs now; 22004 for a NULL campaign id, WL101 for one that is not the merchant''s';

-- Posts reward points to a member's account in a program (opened if the
-- member has none) with wallet.accrue: locked, settled, idempotent on the
-- key derived from what is rewarded.
CREATE FUNCTION wallet_internal.reward_points(program_id bigint, member_id bigint, points bigint, idempotency_key text,
        reason text, reference text) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    merchant bigint;
    ref text;
    account bigint;
BEGIN
    SELECT m.merchant_id, m.member_ref INTO merchant, ref FROM wallet.members m WHERE m.member_id = reward_points.member_id;
    SELECT x.account_id INTO account FROM wallet.accounts x
     WHERE x.program_id = reward_points.program_id AND x.member_ref = ref;
    IF NOT FOUND THEN
        INSERT INTO wallet.accounts (program_id, member_ref, member_id, merchant_id)
        VALUES (reward_points.program_id, ref, reward_points.member_id, merchant)
        ON CONFLICT ON CONSTRAINT accounts_program_id_member_ref_key DO NOTHING
        RETURNING accounts.account_id INTO account;
        IF account IS NULL THEN
            SELECT x.account_id INTO account FROM wallet.accounts x
             WHERE x.program_id = reward_points.program_id AND x.member_ref = ref;
        END IF;
    END IF;
    RETURN wallet_internal.accrue_entry(account, points, idempotency_key, reason, reference, NULL);
END
$$;
COMMENT ON FUNCTION wallet_internal.reward_points(bigint, bigint, bigint, text, text, text) IS 'internal: accrues reward points to the member''s account in the program (opening it if needed), expiring per the program''s policy; idempotent on idempotency_key';

------------------------------------------------------------------------------
-- Set-up (wallet_admin)
------------------------------------------------------------------------------

CREATE FUNCTION wallet.set_referral_program(campaign_id bigint, program_id bigint, referrer_points bigint,
        referee_points bigint, qualify_days int, min_amount numeric DEFAULT 0, currency text DEFAULT NULL,
        max_per_referrer int DEFAULT NULL, cap_period text DEFAULT 'month') RETURNS wallet.referral_programs
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    merchant bigint;
    r wallet.referral_programs;
BEGIN
    merchant := wallet_internal.reward_setup_check(campaign_id, program_id);
    IF referrer_points IS NULL OR referee_points IS NULL OR qualify_days IS NULL OR min_amount IS NULL OR cap_period IS NULL THEN
        RAISE EXCEPTION '% must not be null',
              CASE WHEN referrer_points IS NULL THEN 'referrer_points' WHEN referee_points IS NULL THEN 'referee_points'
                   WHEN qualify_days IS NULL THEN 'qualify_days' WHEN min_amount IS NULL THEN 'min_amount' ELSE 'cap_period' END
            USING ERRCODE = 'null_value_not_allowed',
                  DETAIL = 'A referral program gives points to each side (0 for none) for a purchase within qualify_days, of at least min_amount (0: any), capped per cap_period.';
    END IF;
    -- (added as numeric: the sum of two bigints may not be one)
    IF referrer_points < 0 OR referee_points < 0 OR (referrer_points = 0 AND referee_points = 0)
       OR referrer_points::numeric + referee_points > 9223372036854775807 THEN
        RAISE EXCEPTION 'invalid amount of points'
            USING ERRCODE = 'WL204',
                  DETAIL = 'The points of each side are zero or positive, not both zero, and together at most 9223372036854775807.';
    END IF;
    IF qualify_days NOT BETWEEN 1 AND 3650 OR min_amount < 0 OR min_amount IN ('NaN', 'Infinity') OR max_per_referrer < 1
       OR cap_period NOT IN ('day', 'week', 'month', 'year', 'campaign')
       OR (currency IS NOT NULL AND currency !~ '^[A-Z]{3}$') OR (min_amount > 0 AND currency IS NULL) THEN
        RAISE EXCEPTION 'invalid referral terms'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'The qualify_days are 1 to 3650, the min_amount a finite zero or more (with a currency, an ISO 4217 code, when positive), max_per_referrer positive or NULL, cap_period day, week, month, year or campaign.';
    END IF;
    INSERT INTO wallet.referral_programs AS x (campaign_id, merchant_id, program_id, referrer_points, referee_points,
                                               qualify_days, min_amount, currency, max_per_referrer, cap_period)
    VALUES (set_referral_program.campaign_id, merchant, set_referral_program.program_id, set_referral_program.referrer_points,
            set_referral_program.referee_points, set_referral_program.qualify_days, set_referral_program.min_amount,
            set_referral_program.currency, set_referral_program.max_per_referrer, set_referral_program.cap_period)
    ON CONFLICT ON CONSTRAINT referral_programs_pkey DO UPDATE
       SET program_id = EXCLUDED.program_id, referrer_points = EXCLUDED.referrer_points, referee_points = EXCLUDED.referee_points,
           qualify_days = EXCLUDED.qualify_days, min_amount = EXCLUDED.min_amount, currency = EXCLUDED.currency,
           max_per_referrer = EXCLUDED.max_per_referrer, cap_period = EXCLUDED.cap_period, updated_at = now()
    RETURNING x.* INTO r;
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet.set_referral_program(bigint, bigint, bigint, bigint, int, numeric, text, int, text) IS 'sets (or changes) the referral program of a campaign: points for referrer and referee in a program of the merchant, the qualifying purchase (within qualify_days, at least min_amount in currency) and the cap per referrer per period; pending referrals keep their terms';

CREATE FUNCTION wallet.set_share_reward(campaign_id bigint, program_id bigint, points bigint,
        max_per_member int DEFAULT NULL, max_per_day int DEFAULT NULL) RETURNS wallet.share_rewards
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    merchant bigint;
    r wallet.share_rewards;
BEGIN
    merchant := wallet_internal.reward_setup_check(campaign_id, program_id);
    IF points IS NULL THEN
        RAISE EXCEPTION 'points must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A share reward gives a number of points per rewarded share.';
    END IF;
    IF points <= 0 THEN
        RAISE EXCEPTION 'invalid amount of points'
            USING ERRCODE = 'WL204', DETAIL = 'The points of a share reward must be a positive number.';
    END IF;
    IF max_per_member < 1 OR max_per_day < 1 THEN
        RAISE EXCEPTION 'caps must be positive'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The caps max_per_member and max_per_day are positive, or NULL for no cap.';
    END IF;
    INSERT INTO wallet.share_rewards AS x (campaign_id, merchant_id, program_id, points, max_per_member, max_per_day)
    VALUES (set_share_reward.campaign_id, merchant, set_share_reward.program_id, set_share_reward.points,
            set_share_reward.max_per_member, set_share_reward.max_per_day)
    ON CONFLICT ON CONSTRAINT share_rewards_pkey DO UPDATE
       SET program_id = EXCLUDED.program_id, points = EXCLUDED.points, max_per_member = EXCLUDED.max_per_member,
           max_per_day = EXCLUDED.max_per_day, updated_at = now()
    RETURNING x.* INTO r;
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet.set_share_reward(bigint, bigint, bigint, int, int) IS 'sets (or changes) the share reward of a campaign: points per share in a program of the merchant, capped per member over the campaign and per day';

------------------------------------------------------------------------------
-- Referrals
------------------------------------------------------------------------------

-- The campaign names the referral program: a merchant may run several at
-- once, with their own rewards, windows and caps, and each referral counts
-- for its campaign's report.
CREATE FUNCTION wallet.refer(merchant_id bigint, referrer_ref text, referee_ref text, channel text, campaign_id bigint,
        referrer_fingerprint text DEFAULT NULL, referee_fingerprint text DEFAULT NULL) RETURNS wallet.referrals
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    rp wallet.referral_programs;
    running boolean;
    referrer bigint;
    referee bigint;
    verdict text;
    period timestamptz;
    bumped boolean := false;
    n int;
    r wallet.referrals;
BEGIN
    PERFORM wallet_internal.member_check(merchant_id, referrer_ref);
    PERFORM wallet_internal.member_check(merchant_id, referee_ref);
    PERFORM wallet_internal.check_label('channel', channel, 64, true);
    PERFORM wallet_internal.check_label('referrer fingerprint', referrer_fingerprint, 256, false);
    PERFORM wallet_internal.check_label('referee fingerprint', referee_fingerprint, 256, false);
    running := wallet_internal.campaign_running(merchant_id, campaign_id);
    SELECT * INTO rp FROM wallet.referral_programs x WHERE x.campaign_id = refer.campaign_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % has no referral program', campaign_id
            USING ERRCODE = 'WL670', DETAIL = 'A referral earns the rewards of its campaign''s referral program.',
                  HINT = 'Set one up with wallet.set_referral_program.';
    END IF;
    referrer := wallet_internal.member_ensure(merchant_id, referrer_ref);
    referee := wallet_internal.member_ensure(merchant_id, referee_ref);
    -- both members, locked in id order: a referral and one closing a loop
    -- with it, made at once, are decided one after the other
    PERFORM FROM wallet.members m WHERE m.member_id IN (referrer, referee) ORDER BY m.member_id FOR NO KEY UPDATE;

    -- the abuse guards, cheapest first; each refusal is a row with its reason
    SELECT * INTO r FROM wallet.referrals x
     WHERE x.merchant_id = refer.merchant_id AND x.referee_id = referee AND x.status <> 'refused';
    IF NOT running THEN
        verdict := 'campaign_inactive';
    ELSIF referrer = referee THEN
        verdict := 'self_referral';
    ELSIF r.referral_id IS NOT NULL THEN
        IF r.referrer_id = referrer AND r.campaign_id = refer.campaign_id THEN
            RETURN r;   -- the same referral again: a retry
        END IF;
        verdict := 'already_referred';
    ELSIF EXISTS (
            -- the referee up the referrer's chain of referrers (each member
            -- has at most one): rewards would go round in a circle
            WITH RECURSIVE up (member_id, depth) AS (
                SELECT referrer, 0
                UNION ALL
                SELECT x.referrer_id, u.depth + 1 FROM up u JOIN wallet.referrals x
                    ON x.merchant_id = refer.merchant_id AND x.referee_id = u.member_id AND x.status <> 'refused'
                 WHERE u.depth < 1000)
            SELECT FROM up WHERE up.member_id = referee) THEN
        verdict := 'referral_loop';
    ELSIF EXISTS (SELECT FROM wallet.purchases p WHERE p.merchant_id = refer.merchant_id AND p.member_id = referee) THEN
        verdict := 'referee_already_purchased';
    ELSIF EXISTS (
            -- a fingerprint seen on the referrer's side (given now, or on an
            -- earlier referral of the referrer's) that is also on the referee's
            WITH mine AS (
                SELECT referrer_fingerprint AS f WHERE referrer_fingerprint IS NOT NULL
                UNION SELECT x.referrer_fingerprint FROM wallet.referrals x
                       WHERE x.merchant_id = refer.merchant_id AND x.referrer_id = referrer AND x.referrer_fingerprint IS NOT NULL
                UNION SELECT x.referee_fingerprint FROM wallet.referrals x
                       WHERE x.merchant_id = refer.merchant_id AND x.referee_id = referrer AND x.referee_fingerprint IS NOT NULL),
            theirs AS (
                SELECT referee_fingerprint AS f WHERE referee_fingerprint IS NOT NULL
                UNION SELECT x.referrer_fingerprint FROM wallet.referrals x
                       WHERE x.merchant_id = refer.merchant_id AND x.referrer_id = referee AND x.referrer_fingerprint IS NOT NULL
                UNION SELECT x.referee_fingerprint FROM wallet.referrals x
                       WHERE x.merchant_id = refer.merchant_id AND x.referee_id = referee AND x.referee_fingerprint IS NOT NULL)
            SELECT FROM mine JOIN theirs USING (f)) THEN
        verdict := 'shared_fingerprint';
    ELSIF rp.max_per_referrer IS NOT NULL THEN
        period := CASE WHEN rp.cap_period = 'campaign' THEN '-infinity'::timestamptz
                       ELSE date_trunc(rp.cap_period, now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' END;
        -- waits for a concurrent referral of the same referrer; below the cap only
        INSERT INTO wallet.referral_counts AS k (campaign_id, member_id, period_start, merchant_id, referrals)
        VALUES (refer.campaign_id, referrer, period, refer.merchant_id, 1)
        ON CONFLICT ON CONSTRAINT referral_counts_pkey DO UPDATE SET referrals = k.referrals + 1
         WHERE k.referrals < rp.max_per_referrer
        RETURNING k.referrals INTO n;
        IF n IS NULL THEN
            verdict := 'referrer_cap';
        ELSE
            bumped := true;
        END IF;
    END IF;

    IF verdict IS NULL THEN
        -- a concurrent referral of the same referee waits here on the unique index
        INSERT INTO wallet.referrals AS x (merchant_id, campaign_id, referrer_id, referee_id, channel, status,
                                           referrer_fingerprint, referee_fingerprint, expires_at, program_id,
                                           referrer_points, referee_points, min_amount, currency)
        VALUES (refer.merchant_id, refer.campaign_id, referrer, referee, refer.channel, 'pending',
                refer.referrer_fingerprint, refer.referee_fingerprint, now() + make_interval(days => rp.qualify_days), rp.program_id,
                rp.referrer_points, rp.referee_points, rp.min_amount, rp.currency)
        ON CONFLICT (merchant_id, referee_id) WHERE status <> 'refused' DO NOTHING
        RETURNING x.* INTO r;
        IF r.referral_id IS NOT NULL THEN
            RETURN r;
        END IF;
        -- the other one committed first: this one takes no place in the cap
        IF bumped THEN
            UPDATE wallet.referral_counts k SET referrals = k.referrals - 1
             WHERE k.campaign_id = refer.campaign_id AND k.member_id = referrer AND k.period_start = period;
        END IF;
        SELECT * INTO r FROM wallet.referrals x
         WHERE x.merchant_id = refer.merchant_id AND x.referee_id = referee AND x.status <> 'refused';
        IF r.referrer_id = referrer AND r.campaign_id = refer.campaign_id THEN
            RETURN r;   -- a concurrent retry of this same referral
        END IF;
        verdict := 'already_referred';
    END IF;
    INSERT INTO wallet.referrals AS x (merchant_id, campaign_id, referrer_id, referee_id, channel, status, reason,
                                       referrer_fingerprint, referee_fingerprint)
    VALUES (refer.merchant_id, refer.campaign_id, referrer, referee, refer.channel, 'refused', verdict,
            refer.referrer_fingerprint, refer.referee_fingerprint)
    RETURNING x.* INTO r;
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet.refer(bigint, text, text, text, bigint, text, text) IS 'records that referrer_ref referred referee_ref under the referral program of campaign_id (members created if needed) and returns the referral: pending, or refused with the abuse guard''s reason (self_referral, already_referred, referral_loop, referrer_cap, shared_fingerprint, referee_already_purchased, campaign_inactive); the same referral again returns the first (a retry)';

-- The reward, in the transaction of the purchase: fired by every insert
-- into wallet.purchases.  Without a pending referral of the member it costs
-- one probe of a unique index.  The pending referral is locked, so a second
-- purchase racing the first waits and then finds it rewarded; the postings'
-- keys are derived from the referral, so nothing can post twice anyway.
CREATE FUNCTION wallet_internal.referral_purchase() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.referrals;
    closed boolean;
    first_member bigint;
    e_referrer wallet.entries;
    e_referee wallet.entries;
    side text;
BEGIN
    -- the probe (the unique index of the referee's one referral), unlocked:
    -- a referee rewarded long ago costs no row lock on every purchase
    SELECT * INTO r FROM wallet.referrals x
     WHERE x.merchant_id = NEW.merchant_id AND x.referee_id = NEW.member_id AND x.status <> 'refused';
    IF r.status IS DISTINCT FROM 'pending' THEN
        RETURN NULL;
    END IF;
    SELECT * INTO r FROM wallet.referrals x WHERE x.referral_id = r.referral_id AND x.status = 'pending' FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;   -- a concurrent purchase rewarded it (or the expiry job expired it) first
    END IF;
    SELECT p.closed_at IS NOT NULL INTO closed FROM wallet.programs p WHERE p.program_id = r.program_id;
    -- a purchase made before the referral (this one, recorded late, or one
    -- committed while the referral was being made): the referee was a
    -- customer already
    IF EXISTS (SELECT FROM wallet.purchases p
                WHERE p.merchant_id = NEW.merchant_id AND p.member_id = NEW.member_id AND p.occurred_at < r.referred_at) THEN
        closed := NULL;
    END IF;
    IF closed IS NOT false OR NEW.occurred_at >= r.expires_at THEN
        UPDATE wallet.referrals x
           SET status = 'expired', settled_at = now(),
               reason = CASE WHEN closed IS NULL THEN 'referee_already_purchased' WHEN closed THEN 'program_closed' ELSE 'window_passed' END
         WHERE x.referral_id = r.referral_id;
        RETURN NULL;
    END IF;
    IF NEW.amount < r.min_amount OR NEW.currency IS DISTINCT FROM coalesce(r.currency, NEW.currency) THEN
        RETURN NULL;   -- not a qualifying purchase: the referral stays pending
    END IF;
    -- both accounts are locked in member order, so that two referrals
    -- rewarded at once cannot wait for each other
    first_member := least(r.referrer_id, r.referee_id);
    FOREACH side IN ARRAY CASE WHEN first_member = r.referrer_id THEN ARRAY['referrer', 'referee'] ELSE ARRAY['referee', 'referrer'] END LOOP
        IF side = 'referrer' AND r.referrer_points > 0 THEN
            e_referrer := wallet_internal.reward_points(r.program_id, r.referrer_id, r.referrer_points,
                                                        format('referral:%s:referrer', r.referral_id), 'referral reward (referrer)',
                                                        format('referral %s', r.referral_id));
        ELSIF side = 'referee' AND r.referee_points > 0 THEN
            e_referee := wallet_internal.reward_points(r.program_id, r.referee_id, r.referee_points,
                                                       format('referral:%s:referee', r.referral_id), 'referral reward (referee)',
                                                       format('referral %s', r.referral_id));
        END IF;
    END LOOP;
    UPDATE wallet.referrals x SET status = 'rewarded', purchase_id = NEW.purchase_id, referrer_entry_id = e_referrer.entry_id,
           referee_entry_id = e_referee.entry_id, settled_at = now()
     WHERE x.referral_id = r.referral_id;
    INSERT INTO wallet.member_events (merchant_id, member_id, kind, attributes)
    VALUES (r.merchant_id, r.referrer_id, 'referral_rewarded',
            jsonb_build_object('campaign_id', r.campaign_id, 'referral_id', r.referral_id, 'side', 'referrer',
                               'points', r.referrer_points, 'entry_id', e_referrer.entry_id, 'purchase_id', NEW.purchase_id)),
           (r.merchant_id, r.referee_id, 'referral_rewarded',
            jsonb_build_object('campaign_id', r.campaign_id, 'referral_id', r.referral_id, 'side', 'referee',
                               'points', r.referee_points, 'entry_id', e_referee.entry_id, 'purchase_id', NEW.purchase_id));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION wallet_internal.referral_purchase() IS 'trigger: a purchase of a referee with a pending referral, made in its window and qualifying (amount, currency), rewards referrer and referee once, in the purchase''s transaction (member events referral_rewarded); a late one, one in a closed program or a referee with a purchase made before the referral expires it';
-- The trigger fires only for merchants that run a referral program: for
-- the others a purchase costs a lookup in a per-session cache (C), not a
-- PL/pgSQL call and a query.
CREATE FUNCTION wallet_internal.merchant_refers(merchant_id bigint) RETURNS boolean
    LANGUAGE c STABLE
    AS 'MODULE_PATHNAME', 'merchant_refers';
COMMENT ON FUNCTION wallet_internal.merchant_refers(bigint) IS 'internal: whether the merchant has a referral program (wallet.referral_programs), cached per session until that table changes (NULL: false); the condition of the trigger referral_purchase';
CREATE FUNCTION wallet_internal.referral_programs_changed() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'referral_programs_changed';
COMMENT ON FUNCTION wallet_internal.referral_programs_changed() IS 'trigger: a change of wallet.referral_programs counts for wallet_internal.merchant_refers from the next call on (this session) or the next transaction (the others)';
CREATE TRIGGER referral_programs_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON wallet.referral_programs
    FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.referral_programs_changed();
COMMENT ON TRIGGER referral_programs_changed ON wallet.referral_programs IS 'resets the per-session cache of wallet_internal.merchant_refers';
CREATE TRIGGER referral_purchase AFTER INSERT ON wallet.purchases
    FOR EACH ROW WHEN (wallet_internal.merchant_refers(NEW.merchant_id)) EXECUTE FUNCTION wallet_internal.referral_purchase();
COMMENT ON TRIGGER referral_purchase ON wallet.purchases IS 'rewards a pending referral on the referee''s first qualifying purchase (wallet_internal.referral_purchase)';

-- Expiry of pending referrals whose window has passed, in bounded batches
-- (wallet.run_maintenance): every merchant's, like wallet.expire_points.
CREATE FUNCTION wallet.expire_referrals(as_of timestamptz DEFAULT now(), batch_size int DEFAULT 1000) RETURNS int
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n int;
    _mine bigint[] := wallet_internal.caller_merchants();   -- NULL: acts for all
BEGIN
    IF as_of IS NULL OR batch_size IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN as_of IS NULL THEN 'as_of' ELSE 'batch_size' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Referrals are expired as of an instant (now() by default), batch_size at a time.';
    END IF;
    IF NOT isfinite(as_of) THEN
        RAISE EXCEPTION 'as_of must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Referrals are expired as of a real instant.';
    END IF;
    IF as_of > clock_timestamp() OR batch_size < 1 THEN
        RAISE EXCEPTION '%', CASE WHEN batch_size < 1 THEN 'batch_size must be positive' ELSE 'cannot expire referrals as of a future instant' END
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A referral still in its window would lose its reward for good; batch_size is at least 1.';
    END IF;
    -- SKIP LOCKED: a referral being rewarded right now is left to its purchase
    WITH due AS MATERIALIZED (
        SELECT x.referral_id FROM wallet.referrals x
         WHERE x.status = 'pending' AND x.expires_at <= as_of
           AND (_mine IS NULL OR x.merchant_id = ANY (_mine))
         ORDER BY x.expires_at, x.referral_id LIMIT batch_size
           FOR NO KEY UPDATE SKIP LOCKED)
    UPDATE wallet.referrals r SET status = 'expired', reason = 'window_passed', settled_at = now()
      FROM due WHERE r.referral_id = due.referral_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet.expire_referrals(timestamptz, int) IS 'expires up to batch_size pending referrals (of the merchants the caller acts for; every merchant''s for the extension''s owner or a superuser) whose window ended by as_of (not in the future: 22023) and returns how many; run by wallet.run_maintenance';

------------------------------------------------------------------------------
-- Sharing
------------------------------------------------------------------------------

-- The idempotency fingerprint of a share (wallet_internal.idem_check): what
-- the app asked for, not what the caps made of it.
CREATE FUNCTION wallet_internal.idem_share(s wallet.shares) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN jsonb_build_object('member_id', s.member_id, 'campaign_id', s.campaign_id, 'channel', s.channel);
END
$$;
COMMENT ON FUNCTION wallet_internal.idem_share(wallet.shares) IS 'internal: idempotency fingerprint of a share (member, campaign, channel)';

-- A retry with the same idempotency key returns the first share.
CREATE FUNCTION wallet.record_share(merchant_id bigint, member_ref text, campaign_id bigint, channel text,
        idempotency_key text DEFAULT NULL) RETURNS wallet.shares
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    sr wallet.share_rewards;
    running boolean;
    closed boolean;
    given jsonb;
    member bigint;
    tz text;
    today date;
    k wallet.share_counts;
    bumped boolean := false;
    verdict text;
    s wallet.shares;
    e wallet.entries;
BEGIN
    PERFORM wallet_internal.member_check(merchant_id, member_ref);
    PERFORM wallet_internal.check_label('channel', channel, 64, true);
    PERFORM wallet_internal.check_label('idempotency key', idempotency_key, 256, false);
    running := wallet_internal.campaign_running(merchant_id, campaign_id);
    SELECT * INTO sr FROM wallet.share_rewards x WHERE x.campaign_id = record_share.campaign_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % has no share reward', campaign_id
            USING ERRCODE = 'WL671', DETAIL = 'A share earns the reward its campaign sets for shares.',
                  HINT = 'Set one up with wallet.set_share_reward.';
    END IF;
    member := wallet_internal.member_ensure(merchant_id, member_ref);
    given := jsonb_build_object('member_id', member, 'campaign_id', campaign_id, 'channel', channel);
    IF idempotency_key IS NOT NULL THEN
        SELECT * INTO s FROM wallet.shares x WHERE x.merchant_id = record_share.merchant_id AND x.idempotency_key = record_share.idempotency_key;
        IF FOUND THEN
            PERFORM wallet_internal.idem_check(idempotency_key, format('share %s', s.share_id), wallet_internal.idem_share(s), given);
            RETURN s;
        END IF;
    END IF;
    SELECT p.closed_at IS NOT NULL INTO closed FROM wallet.programs p WHERE p.program_id = sr.program_id;
    IF NOT running THEN
        verdict := 'campaign_inactive';
    ELSIF closed THEN
        verdict := 'program_closed';
    ELSE
        SELECT m.time_zone INTO tz FROM wallet.members m WHERE m.member_id = member;
        today := (now() AT TIME ZONE coalesce(tz, 'UTC'))::date;
        -- the member's counter row, locked: bumped only while below both caps.
        -- The day only moves forward: a share dated to an earlier day than
        -- the one counted (the member's time zone moved west, or a call from
        -- before midnight committing after one of the new day) counts against
        -- the later day, never resets it
        INSERT INTO wallet.share_counts AS c (campaign_id, member_id, merchant_id, rewarded, day, day_rewarded)
        VALUES (record_share.campaign_id, member, record_share.merchant_id, 1, today, 1)
        ON CONFLICT ON CONSTRAINT share_counts_pkey DO UPDATE
           SET rewarded = c.rewarded + 1, day = greatest(c.day, EXCLUDED.day),
               day_rewarded = CASE WHEN EXCLUDED.day > c.day THEN 1 ELSE c.day_rewarded + 1 END
         WHERE (sr.max_per_member IS NULL OR c.rewarded < sr.max_per_member)
           AND (sr.max_per_day IS NULL OR EXCLUDED.day > c.day OR c.day_rewarded < sr.max_per_day)
        RETURNING c.* INTO k;
        IF k.member_id IS NOT NULL THEN
            bumped := true;
        ELSE
            SELECT * INTO k FROM wallet.share_counts c WHERE c.campaign_id = record_share.campaign_id AND c.member_id = member;
            verdict := CASE WHEN k.rewarded >= sr.max_per_member THEN 'member_cap' ELSE 'daily_cap' END;
        END IF;
    END IF;
    INSERT INTO wallet.shares AS x (merchant_id, campaign_id, member_id, channel, status, reason, idempotency_key)
    VALUES (record_share.merchant_id, record_share.campaign_id, member, record_share.channel,
            CASE WHEN verdict IS NULL THEN 'rewarded' ELSE 'refused' END, verdict, record_share.idempotency_key)
    ON CONFLICT ON CONSTRAINT shares_merchant_id_idempotency_key_key DO NOTHING
    RETURNING x.* INTO s;
    IF s.share_id IS NULL THEN
        -- a concurrent call with the same key committed first: its result
        IF bumped THEN
            UPDATE wallet.share_counts c SET rewarded = c.rewarded - 1, day_rewarded = c.day_rewarded - 1
             WHERE c.campaign_id = record_share.campaign_id AND c.member_id = member;
        END IF;
        SELECT * INTO s FROM wallet.shares x WHERE x.merchant_id = record_share.merchant_id AND x.idempotency_key = record_share.idempotency_key;
        PERFORM wallet_internal.idem_check(idempotency_key, format('share %s', s.share_id), wallet_internal.idem_share(s), given);
        RETURN s;
    END IF;
    IF verdict IS NULL THEN
        e := wallet_internal.reward_points(sr.program_id, member, sr.points, format('share:%s', s.share_id),
                                           'share reward', format('share %s of campaign %s', s.share_id, campaign_id));
        UPDATE wallet.shares x SET points = sr.points, entry_id = e.entry_id WHERE x.share_id = s.share_id
        RETURNING x.* INTO s;
    END IF;
    INSERT INTO wallet.member_events (merchant_id, member_id, kind, attributes)
    VALUES (record_share.merchant_id, member, 'shared',
            jsonb_build_object('campaign_id', campaign_id, 'channel', channel, 'share_id', s.share_id, 'status', s.status,
                               'reason', s.reason, 'points', s.points, 'entry_id', s.entry_id));
    RETURN s;
END
$$;
COMMENT ON FUNCTION wallet.record_share(bigint, text, bigint, text, text) IS 'records that a member shared a campaign (member event shared) and rewards it with the campaign''s share points, or refuses the reward with a reason (member_cap, daily_cap, campaign_inactive, program_closed); exact under races; idempotent on an optional idempotency_key';

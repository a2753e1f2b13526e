
-- ======================================================================
-- Offers of campaigns (issue 11): a discount (percent or fixed, with a
-- maximum) or cashback in points on a purchase, with conditions like the
-- earning rules, an optional code of the campaign, per-member caps, stacking
-- by priority or exclusivity, the campaign's audience and holdout, and the
-- campaign's budget (wallet.campaign_budgets: money for discounts, points for
-- cashback, or redemptions) through the escrow budget API of budgets.sql.
--
-- wallet.quote_offers says which offers apply to a basket and what they are
-- worth, consuming nothing; with a hold_ttl it holds their budget for the
-- checkout (a quote, wallet.offer_quotes): the units count at once and stop
-- counting when the holds expire.  wallet.record_purchase takes the offers
-- (by id, or the quote) and codes and consumes them in its own transaction:
-- caps counted, budget taken (or the quote's holds converted), codes
-- redeemed, the outcome in wallet.purchase_offers, the discount in
-- wallet.campaign_costs, cashback posted as an accrue entry.
--
-- Amounts: a purchase's amount is the basket before its discounts; a
-- discount is in the purchase's currency, rounded down to hundredths; a money
-- budget counts hundredths (minor units).  README "Offers".
-- ======================================================================

CREATE TABLE wallet.offers (
    offer_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id      bigint NOT NULL REFERENCES wallet.merchants,
    campaign_id      bigint NOT NULL REFERENCES wallet.campaigns,
    name             text NOT NULL CHECK (btrim(name) <> ''),
    kind             text NOT NULL CHECK (kind IN ('percent', 'fixed', 'cashback')),
    value            numeric NOT NULL CHECK (value > 0),
    max_value        numeric CHECK (max_value > 0),
    currency         text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    allow_partial    boolean NOT NULL DEFAULT false,
    code_required    boolean NOT NULL DEFAULT false,
    priority         int NOT NULL DEFAULT 0,
    exclusive        boolean NOT NULL DEFAULT false,
    valid_from       timestamptz NOT NULL DEFAULT now(),
    valid_until      timestamptz CHECK (valid_until > valid_from),
    min_amount       numeric CHECK (min_amount >= 0),
    stores           text[],
    channels         text[],
    payment_methods  text[],
    categories       text[],
    min_tier_rank    int CHECK (min_tier_rank > 0),
    first_purchase   boolean,
    days_of_week     int[] CHECK (days_of_week <@ ARRAY[1, 2, 3, 4, 5, 6, 7]),
    time_from        time,
    time_until       time,
    cap_per_member   bigint CHECK (cap_per_member > 0),
    cap_per_period   bigint CHECK (cap_per_period > 0),
    cap_period       text CHECK (cap_period IN ('day', 'week', 'month')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((cap_per_period IS NULL) = (cap_period IS NULL)),
    CHECK (kind <> 'percent' OR value <= 100),
    CHECK ((time_from IS NULL) = (time_until IS NULL)),
    UNIQUE (campaign_id, name)
);
CREATE INDEX offers_merchant_idx ON wallet.offers (merchant_id, currency, valid_from);
COMMENT ON TABLE wallet.offers IS 'offers of campaigns (wallet.create_offer): a discount or cashback on a purchase, with conditions, caps, stacking, a code requirement and the campaign''s audience, holdout and budget';
COMMENT ON COLUMN wallet.offers.offer_id IS 'offer id';
COMMENT ON COLUMN wallet.offers.merchant_id IS 'merchant of the campaign: the key to distribute by';
COMMENT ON COLUMN wallet.offers.campaign_id IS 'the campaign the offer belongs to (its window, audience, holdout, codes and budget apply)';
COMMENT ON COLUMN wallet.offers.name IS 'the offer''s name, unique in the campaign';
COMMENT ON COLUMN wallet.offers.kind IS 'percent: value percent off the amount; fixed: value off, in currency; cashback: value points per currency unit of the amount';
COMMENT ON COLUMN wallet.offers.value IS 'the percentage (over 0, at most 100), the amount off, or the points per currency unit';
COMMENT ON COLUMN wallet.offers.max_value IS 'at most this discount (in currency) or cashback (in points) per purchase; NULL = no maximum';
COMMENT ON COLUMN wallet.offers.currency IS 'ISO 4217 code: the offer applies to purchases in this currency';
COMMENT ON COLUMN wallet.offers.allow_partial IS 'when the campaign''s budget cannot cover the whole offer, grant what is left (true) or refuse it (false)';
COMMENT ON COLUMN wallet.offers.code_required IS 'the offer applies only with a code of the campaign, redeemed with the purchase';
COMMENT ON COLUMN wallet.offers.priority IS 'evaluation order, highest first (ties: lowest offer_id first); discounts apply in this order, each on what is left to pay';
COMMENT ON COLUMN wallet.offers.exclusive IS 'an exclusive offer applies alone: only when no offer of higher priority applied, and then no other offer applies';
COMMENT ON COLUMN wallet.offers.valid_from IS 'first instant of a purchase (occurred_at) the offer applies to (the campaign''s window applies too)';
COMMENT ON COLUMN wallet.offers.valid_until IS 'end of the validity, exclusive (NULL = open-ended); wallet.end_offer sets it';
COMMENT ON COLUMN wallet.offers.min_amount IS 'condition: amount at least this (NULL = any)';
COMMENT ON COLUMN wallet.offers.stores IS 'condition: attributes.store is one of these (NULL = any)';
COMMENT ON COLUMN wallet.offers.channels IS 'condition: attributes.channel is one of these (NULL = any)';
COMMENT ON COLUMN wallet.offers.payment_methods IS 'condition: attributes.payment_method is one of these (NULL = any)';
COMMENT ON COLUMN wallet.offers.categories IS 'condition: one of attributes.categories is one of these (NULL = any)';
COMMENT ON COLUMN wallet.offers.min_tier_rank IS 'condition: the member''s tier in the program earning in the currency has at least this rank (NULL = any)';
COMMENT ON COLUMN wallet.offers.first_purchase IS 'condition: true = only the member''s first purchase at the merchant (NULL = any)';
COMMENT ON COLUMN wallet.offers.days_of_week IS 'condition: ISO day of week (1 = Monday) of the purchase in the member''s time zone (NULL = any)';
COMMENT ON COLUMN wallet.offers.time_from IS 'condition: local time of day of the purchase at or after this (with time_until; wraps past midnight when later than it)';
COMMENT ON COLUMN wallet.offers.time_until IS 'condition: local time of day of the purchase before this (exclusive)';
COMMENT ON COLUMN wallet.offers.cap_per_member IS 'cap: at most this many purchases of a member get the offer, in all (NULL = none)';
COMMENT ON COLUMN wallet.offers.cap_per_period IS 'cap: at most this many purchases of a member get the offer per cap_period (NULL = none)';
COMMENT ON COLUMN wallet.offers.cap_period IS 'the period of cap_per_period: day, week (ISO, from Monday) or month, in the member''s time zone';
COMMENT ON COLUMN wallet.offers.created_at IS 'when the offer was made';
COMMENT ON COLUMN wallet.offers.updated_at IS 'when the offer last changed';
SELECT pg_catalog.pg_extension_config_dump('wallet.offers', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.offers', 'offer_id'), '');
ALTER TABLE wallet.offers ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.offers USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.offers IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

-- Uses per capped offer, member and period (period NULL: the member's
-- total).  A use is counted by a conditional upsert (uses < cap), which the
-- row lock makes exact under concurrency without any other lock.  No foreign
-- key to the offer (here and in purchase_offers): every checkout would lock
-- the same offer row FOR KEY SHARE (a MultiXact once sessions overlap); the
-- rows are written only by the checkout, from the offer it just read.
CREATE TABLE wallet.offer_counters (
    merchant_id bigint NOT NULL,
    member_id   bigint NOT NULL REFERENCES wallet.members,
    offer_id    bigint NOT NULL,
    period      date,
    uses        bigint NOT NULL CHECK (uses >= 0),
    CONSTRAINT offer_counters_key UNIQUE NULLS NOT DISTINCT (offer_id, member_id, period)
);
COMMENT ON TABLE wallet.offer_counters IS 'purchases that got a capped offer, per member and period and in all: what the caps of wallet.offers count';
COMMENT ON COLUMN wallet.offer_counters.merchant_id IS 'merchant of the offer: the key to distribute by';
COMMENT ON COLUMN wallet.offer_counters.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.offer_counters.offer_id IS 'the offer (a wallet.offers.offer_id)';
COMMENT ON COLUMN wallet.offer_counters.period IS 'first day of the period (day, week or month of the offer''s cap_period) in the member''s time zone; NULL = the member''s total';
COMMENT ON COLUMN wallet.offer_counters.uses IS 'purchases that got the offer in the period (or in all)';
SELECT pg_catalog.pg_extension_config_dump('wallet.offer_counters', '');
ALTER TABLE wallet.offer_counters ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.offer_counters USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.offer_counters IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

-- Which purchase was a member's first at the merchant, for a first-purchase
-- offer: claimed by the checkout that grants one (INSERT ... ON CONFLICT DO
-- NOTHING), so that two first checkouts in flight (in two currencies, or in
-- one with no program: no shared account lock) grant it once; under
-- REPEATABLE READ a claim committed after the snapshot is a serialization
-- failure, not a second grant.
CREATE TABLE wallet.first_purchases (
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    member_id   bigint NOT NULL REFERENCES wallet.members,
    purchase_id bigint NOT NULL REFERENCES wallet.purchases,
    PRIMARY KEY (merchant_id, member_id)
);
COMMENT ON TABLE wallet.first_purchases IS 'the purchase that was a member''s first at the merchant, claimed by the checkout that evaluated a first-purchase offer (wallet.offers.first_purchase): one per member';
COMMENT ON COLUMN wallet.first_purchases.merchant_id IS 'the merchant: the key to distribute by';
COMMENT ON COLUMN wallet.first_purchases.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.first_purchases.purchase_id IS 'the member''s first purchase at the merchant (wallet.purchases)';
SELECT pg_catalog.pg_extension_config_dump('wallet.first_purchases', '');
ALTER TABLE wallet.first_purchases ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.first_purchases USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.first_purchases IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

-- A quote with a hold: the offers a checkout was shown and the budget holds
-- that keep them available until expires_at.
CREATE TABLE wallet.offer_quotes (
    quote_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    member_id   bigint NOT NULL REFERENCES wallet.members,
    amount      numeric NOT NULL,
    currency    text NOT NULL,
    items       jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at  timestamptz NOT NULL,
    state       text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'used', 'released')),
    purchase_id bigint REFERENCES wallet.purchases
);
CREATE INDEX offer_quotes_expiry_idx ON wallet.offer_quotes (expires_at);
COMMENT ON TABLE wallet.offer_quotes IS 'quotes of wallet.quote_offers made with a hold_ttl: the offers quoted and the budget holds (wallet.budget_holds) keeping them for the checkout';
COMMENT ON COLUMN wallet.offer_quotes.quote_id IS 'quote id, passed to wallet.record_purchase';
COMMENT ON COLUMN wallet.offer_quotes.merchant_id IS 'merchant: the key to distribute by';
COMMENT ON COLUMN wallet.offer_quotes.member_id IS 'the member quoted for';
COMMENT ON COLUMN wallet.offer_quotes.amount IS 'the basket amount quoted (record_purchase must name the same)';
COMMENT ON COLUMN wallet.offer_quotes.currency IS 'ISO 4217 code of the amount';
COMMENT ON COLUMN wallet.offer_quotes.items IS 'the offers quoted: [{offer_id, campaign_id, status, discount, points, units, hold_id, code}]';
COMMENT ON COLUMN wallet.offer_quotes.created_at IS 'when the quote was made';
COMMENT ON COLUMN wallet.offer_quotes.expires_at IS 'when its holds stop counting (a later record_purchase takes from the budget afresh)';
COMMENT ON COLUMN wallet.offer_quotes.state IS 'open, used (by the purchase purchase_id) or released (wallet.release_quote)';
COMMENT ON COLUMN wallet.offer_quotes.purchase_id IS 'the purchase that used the quote';
SELECT pg_catalog.pg_extension_config_dump('wallet.offer_quotes', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.offer_quotes', 'quote_id'), '');
ALTER TABLE wallet.offer_quotes ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.offer_quotes USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.offer_quotes IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

-- What a purchase asked for and got: one row per offer named at checkout.
CREATE TABLE wallet.purchase_offers (
    merchant_id bigint NOT NULL,
    purchase_id bigint NOT NULL REFERENCES wallet.purchases,
    offer_id    bigint NOT NULL,
    campaign_id bigint NOT NULL,
    member_id   bigint NOT NULL REFERENCES wallet.members,
    status      text NOT NULL,
    discount    numeric NOT NULL DEFAULT 0 CHECK (discount >= 0),
    points      bigint NOT NULL DEFAULT 0 CHECK (points >= 0),
    units       bigint NOT NULL DEFAULT 0 CHECK (units >= 0),
    redemption_id bigint,
    entry_id    bigint,
    PRIMARY KEY (purchase_id, offer_id)
);
CREATE INDEX purchase_offers_offer_idx ON wallet.purchase_offers (offer_id);
COMMENT ON TABLE wallet.purchase_offers IS 'the offers a purchase named (by id or quote) and what each got: applied (ok, partial) or refused with a status';
COMMENT ON COLUMN wallet.purchase_offers.merchant_id IS 'merchant: the key to distribute by';
COMMENT ON COLUMN wallet.purchase_offers.purchase_id IS 'the purchase';
COMMENT ON COLUMN wallet.purchase_offers.offer_id IS 'the offer (a wallet.offers.offer_id)';
COMMENT ON COLUMN wallet.purchase_offers.campaign_id IS 'the offer''s campaign';
COMMENT ON COLUMN wallet.purchase_offers.member_id IS 'the member';
COMMENT ON COLUMN wallet.purchase_offers.status IS 'ok, partial (the budget covered part), or why it was refused: no_budget, capped, code_needed, code_refused, not_combinable, no_program, not_eligible';
COMMENT ON COLUMN wallet.purchase_offers.discount IS 'discount granted, in the purchase''s currency';
COMMENT ON COLUMN wallet.purchase_offers.points IS 'cashback points granted';
COMMENT ON COLUMN wallet.purchase_offers.units IS 'units taken from the campaign''s budget (0 when it has none)';
COMMENT ON COLUMN wallet.purchase_offers.redemption_id IS 'the code redemption (wallet.code_redemptions) of a code_required offer';
COMMENT ON COLUMN wallet.purchase_offers.entry_id IS 'the accrue entry that posted the cashback';
SELECT pg_catalog.pg_extension_config_dump('wallet.purchase_offers', '');
ALTER TABLE wallet.purchase_offers ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.purchase_offers USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.purchase_offers IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TYPE wallet.offer_quote AS (
    quote_id    bigint,
    offer_id    bigint,
    campaign_id bigint,
    name        text,
    kind        text,
    status      text,
    discount    numeric,
    points      bigint,
    expires_at  timestamptz
);
COMMENT ON TYPE wallet.offer_quote IS 'a row of wallet.quote_offers: an offer whose conditions hold for the basket, and what it is worth';
COMMENT ON COLUMN wallet.offer_quote.quote_id IS 'the quote holding the budget (with a hold_ttl; NULL without)';
COMMENT ON COLUMN wallet.offer_quote.offer_id IS 'the offer';
COMMENT ON COLUMN wallet.offer_quote.campaign_id IS 'its campaign';
COMMENT ON COLUMN wallet.offer_quote.name IS 'its name';
COMMENT ON COLUMN wallet.offer_quote.kind IS 'percent, fixed or cashback';
COMMENT ON COLUMN wallet.offer_quote.status IS 'ok, partial (the budget covers part), or why not: no_budget, capped, code_needed, not_combinable, no_program';
COMMENT ON COLUMN wallet.offer_quote.discount IS 'discount it is worth, in the basket''s currency';
COMMENT ON COLUMN wallet.offer_quote.points IS 'cashback points it is worth';
COMMENT ON COLUMN wallet.offer_quote.expires_at IS 'until when the quote''s budget is held (NULL without a hold)';

------------------------------------------------------------------------------
-- Administration
------------------------------------------------------------------------------

CREATE FUNCTION wallet_internal.unknown_offer(offer_id bigint) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF offer_id IS NULL THEN
        RAISE EXCEPTION 'offer_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'An offer is named by its id.';
    END IF;
    RAISE EXCEPTION 'unknown offer'
        USING ERRCODE = 'WL606', DETAIL = format('There is no offer %s.', offer_id);
END
$$;
COMMENT ON FUNCTION wallet_internal.unknown_offer(bigint) IS 'internal: raises WL606 for an offer that does not exist (or of another merchant), 22004 for a NULL id';

-- The budget unit an offer's kind is counted in (besides redemptions).
CREATE FUNCTION wallet_internal.offer_unit_check(campaign_id bigint, kind text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    u text;
BEGIN
    SELECT b.unit INTO u FROM wallet.campaign_budgets b WHERE b.campaign_id = offer_unit_check.campaign_id;
    IF u IS NOT NULL AND u <> 'redemptions' AND u <> (CASE WHEN kind = 'cashback' THEN 'points' ELSE 'money' END) THEN
        RAISE EXCEPTION 'a % offer cannot draw on a budget in %', kind, u
            USING ERRCODE = 'WL609',
                  DETAIL = format('Campaign %s''s budget counts %s; discounts draw on money or redemptions, cashback on points or redemptions.', campaign_id, u);
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.offer_unit_check(bigint, text) IS 'internal: WL609 when the campaign''s budget counts a unit the offer''s kind cannot draw on (discounts: money or redemptions; cashback: points or redemptions)';

CREATE FUNCTION wallet.create_offer(campaign_id bigint, name text, kind text, value numeric, currency text,
        max_value numeric DEFAULT NULL, conditions jsonb DEFAULT '{}', caps jsonb DEFAULT '{}',
        code_required boolean DEFAULT false, priority int DEFAULT 0, exclusive boolean DEFAULT false,
        allow_partial boolean DEFAULT false, valid_from timestamptz DEFAULT now(), valid_until timestamptz DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    c wallet.campaigns;
    r wallet.earning_rules;
    k text;
    o bigint;
BEGIN
    IF name IS NULL OR kind IS NULL OR value IS NULL OR currency IS NULL OR conditions IS NULL OR caps IS NULL
       OR code_required IS NULL OR priority IS NULL OR exclusive IS NULL OR allow_partial IS NULL OR valid_from IS NULL THEN
        RAISE EXCEPTION '% must not be null',
              CASE WHEN name IS NULL THEN 'name' WHEN kind IS NULL THEN 'kind' WHEN value IS NULL THEN 'value'
                   WHEN currency IS NULL THEN 'currency' WHEN conditions IS NULL THEN 'conditions' WHEN caps IS NULL THEN 'caps'
                   WHEN code_required IS NULL THEN 'code_required' WHEN priority IS NULL THEN 'priority'
                   WHEN exclusive IS NULL THEN 'exclusive' WHEN allow_partial IS NULL THEN 'allow_partial' ELSE 'valid_from' END
            USING ERRCODE = 'null_value_not_allowed',
                  DETAIL = 'An offer has a name, a kind with its value and currency, conditions and caps ({} = none), a stacking mode and a start.';
    END IF;
    c := wallet_internal.campaign_seen(campaign_id);
    IF btrim(name) = '' OR length(name) > 200 THEN
        RAISE EXCEPTION 'offer name must not be %', CASE WHEN btrim(name) = '' THEN 'blank' ELSE 'longer than 200 characters' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An offer''s name is a non-blank text of at most 200 characters.';
    END IF;
    IF kind NOT IN ('percent', 'fixed', 'cashback') THEN
        RAISE EXCEPTION 'unknown offer kind "%"', left(kind, 32)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An offer is a ''percent'' or ''fixed'' discount, or ''cashback'' in points.';
    END IF;
    -- NaN, which numeric compares above every number, and Infinity are over the bounds
    IF value <= 0 OR value > 1e12 OR (kind = 'percent' AND value > 100) THEN
        RAISE EXCEPTION 'invalid value for a % offer', kind
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A percent offer takes over 0 and at most 100, a fixed one an amount above 0, a cashback one points per currency unit above 0; none is over 10^12.';
    END IF;
    IF max_value <= 0 OR max_value > 1e12 THEN
        RAISE EXCEPTION 'invalid max_value for a % offer', kind
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A maximum is above 0 and at most 10^12, or none (NULL).';
    END IF;
    IF currency !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'invalid currency "%"', left(currency, 16)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A currency is an ISO 4217 code of three capital letters, such as CNY or EUR.';
    END IF;
    IF NOT isfinite(valid_from) OR NOT isfinite(valid_until) THEN
        RAISE EXCEPTION '% must be finite', CASE WHEN isfinite(valid_from) THEN 'valid_until' ELSE 'valid_from' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An offer is valid from a finite instant until a later one (exclusive) or open-ended (NULL).';
    END IF;
    IF valid_until <= valid_from THEN
        RAISE EXCEPTION 'invalid validity window'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An offer is valid from a finite instant until a later one (exclusive) or open-ended (NULL).';
    END IF;
    -- the conditions of the earning rules, validated by their own code
    r := wallet_internal.rule_apply_conditions(r, conditions, NULL);
    IF jsonb_typeof(caps) <> 'object' THEN
        RAISE EXCEPTION 'caps must be a json object'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Caps are an object such as {"per_member": 3, "per_period": 1, "period": "day"}.';
    END IF;
    SELECT min(x) INTO k FROM jsonb_object_keys(caps) x WHERE x NOT IN ('per_member', 'per_period', 'period');
    IF k IS NOT NULL OR (caps ? 'per_period') <> (caps ? 'period')
       OR (caps ? 'period' AND coalesce(caps ->> 'period' NOT IN ('day', 'week', 'month'), true)) THEN
        RAISE EXCEPTION 'invalid caps'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'The caps are per_member (uses in all) and per_period with period (day, week or month), in purchases per member.';
    END IF;
    PERFORM wallet_internal.offer_unit_check(c.campaign_id, kind);
    INSERT INTO wallet.offers (merchant_id, campaign_id, name, kind, value, max_value, currency, allow_partial, code_required,
                               priority, exclusive, valid_from, valid_until, min_amount, stores, channels, payment_methods,
                               categories, min_tier_rank, first_purchase, days_of_week, time_from, time_until,
                               cap_per_member, cap_per_period, cap_period)
    VALUES (c.merchant_id, c.campaign_id, name, kind, value, max_value, currency, allow_partial, code_required,
            priority, exclusive, valid_from, valid_until, r.min_amount, r.stores, r.channels, r.payment_methods,
            r.categories, r.min_tier_rank, r.first_purchase, r.days_of_week, r.time_from, r.time_until,
            wallet_internal.rule_number(caps, 'per_member', true), wallet_internal.rule_number(caps, 'per_period', true),
            caps ->> 'period')
    RETURNING offer_id INTO o;
    RETURN o;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'offer "%" already exists', name
        USING ERRCODE = 'unique_violation', DETAIL = 'Offer names are unique per campaign.';
END
$$;
COMMENT ON FUNCTION wallet.create_offer(bigint, text, text, numeric, text, numeric, jsonb, jsonb, boolean, int, boolean, boolean, timestamptz, timestamptz) IS 'creates an offer of a campaign (kind percent, fixed or cashback; conditions as for earning rules; caps per_member and per_period with period) and returns its id; WL609 when the campaign''s budget counts a unit the kind cannot draw on';

CREATE FUNCTION wallet.end_offer(offer_id bigint, at timestamptz DEFAULT now()) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF at IS NULL OR NOT isfinite(at) THEN
        RAISE EXCEPTION 'at must %', CASE WHEN at IS NULL THEN 'not be null' ELSE 'be finite' END
            USING ERRCODE = CASE WHEN at IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'An offer ends at an instant: purchases made from then on no longer get it.';
    END IF;
    UPDATE wallet.offers x
       SET valid_until = greatest(least(coalesce(x.valid_until, 'infinity'), at), x.valid_from + interval '1 microsecond'),
           updated_at = now()
     WHERE x.offer_id = end_offer.offer_id AND wallet.acts_for(x.merchant_id);
    IF NOT FOUND THEN
        PERFORM wallet_internal.unknown_offer(offer_id);
    END IF;
END
$$;
COMMENT ON FUNCTION wallet.end_offer(bigint, timestamptz) IS 'ends an offer at an instant (default now; never later than it already ends): purchases made from then on no longer get it (idempotent)';

------------------------------------------------------------------------------
-- Evaluation
------------------------------------------------------------------------------

-- The offers whose conditions hold for a purchase, in priority order, with
-- what each is worth before the budget: the campaign's window and audience
-- (the control group never gets an offer; those outside the audience
-- neither), the conditions, the caps as counted now, the code (one of codes
-- of the campaign that check_code accepts), stacking.  only_offers: just
-- these offers (NULL: all of the merchant in the currency).  Reads only.
CREATE FUNCTION wallet_internal.offers_eval(merchant_id bigint, member_id bigint, member_ref text, time_zone text,
        account_id bigint, first_purchase boolean, amount numeric, currency text, occurred_at timestamptz,
        attributes jsonb, codes text[], only_offers bigint[])
    RETURNS TABLE (offer_id bigint, campaign_id bigint, name text, kind text, status text, discount numeric,
                   points bigint, allow_partial boolean, code text, cap_per_member bigint, cap_per_period bigint, period date)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    o record;
    lt timestamp := occurred_at AT TIME ZONE coalesce(time_zone, 'UTC');
    dow int := extract(isodow FROM lt);
    tod time := lt::time;
    store text := attributes ->> 'store';
    channel text := attributes ->> 'channel';
    pay text := attributes ->> 'payment_method';
    rank int := 0;
    left_to_pay numeric := amount;
    chosen int := 0;
    closed boolean := false;
    used bigint;
    x text;
    pc record;
BEGIN
    IF account_id IS NOT NULL THEN
        SELECT t.rank INTO rank FROM wallet.account_tiers t WHERE t.account_id = offers_eval.account_id;
        rank := coalesce(rank, 0);
    END IF;
    FOR o IN SELECT f.*, k.starts_at, k.ends_at FROM wallet.offers f JOIN wallet.campaigns k ON k.campaign_id = f.campaign_id
              WHERE f.merchant_id = offers_eval.merchant_id AND f.currency = offers_eval.currency
                AND (only_offers IS NULL OR f.offer_id = ANY (only_offers))
                AND f.valid_from <= offers_eval.occurred_at AND (f.valid_until IS NULL OR f.valid_until > offers_eval.occurred_at)
                AND k.starts_at <= offers_eval.occurred_at AND (k.ends_at IS NULL OR k.ends_at > offers_eval.occurred_at)
                AND (f.min_amount > offers_eval.amount) IS NOT TRUE
                AND (f.stores IS NULL OR store = ANY (f.stores))
                AND (f.channels IS NULL OR channel = ANY (f.channels))
                AND (f.payment_methods IS NULL OR pay = ANY (f.payment_methods))
                AND (f.categories IS NULL OR coalesce(offers_eval.attributes -> 'categories' ?| f.categories, false))
                AND (f.min_tier_rank > rank) IS NOT TRUE
                AND (f.first_purchase AND NOT offers_eval.first_purchase) IS NOT TRUE
                AND (f.days_of_week IS NULL OR dow = ANY (f.days_of_week))
                AND (f.time_from IS NULL
                     OR (f.time_from < f.time_until AND tod >= f.time_from AND tod < f.time_until)
                     OR (f.time_from > f.time_until AND (tod >= f.time_from OR tod < f.time_until)))
              ORDER BY f.priority DESC, f.offer_id LOOP
        -- the audience: the control group and those outside never get it
        CONTINUE WHEN wallet_internal.campaign_group(o.campaign_id, offers_eval.member_id) IS DISTINCT FROM 'target';
        offer_id := o.offer_id;
        campaign_id := o.campaign_id;
        name := o.name;
        kind := o.kind;
        allow_partial := o.allow_partial;
        cap_per_member := o.cap_per_member;
        cap_per_period := o.cap_per_period;
        period := CASE WHEN o.cap_period IS NOT NULL THEN date_trunc(o.cap_period, lt)::date END;
        code := NULL;
        discount := 0;
        points := 0;
        status := 'ok';
        IF closed OR (o.exclusive AND chosen > 0) THEN
            status := 'not_combinable';
        END IF;
        IF status = 'ok' AND o.cap_per_member IS NOT NULL THEN
            SELECT c.uses INTO used FROM wallet.offer_counters c
             WHERE c.offer_id = o.offer_id AND c.member_id = offers_eval.member_id AND c.period IS NULL;
            IF used >= o.cap_per_member THEN
                status := 'capped';
            END IF;
        END IF;
        IF status = 'ok' AND o.cap_per_period IS NOT NULL THEN
            SELECT c.uses INTO used FROM wallet.offer_counters c
             WHERE c.offer_id = o.offer_id AND c.member_id = offers_eval.member_id AND c.period = offers_eval.period;
            IF used >= o.cap_per_period THEN
                status := 'capped';
            END IF;
        END IF;
        IF status = 'ok' AND o.code_required THEN
            status := 'code_needed';
            FOREACH x IN ARRAY coalesce(codes, '{}') LOOP
                SELECT * INTO pc FROM wallet.parse_code(x);
                CONTINUE WHEN pc.code IS NULL OR wallet.code_campaign(pc.code) <> o.campaign_id;
                IF wallet.check_code(x, member_ref) = 'ok' THEN
                    status := 'ok';
                    code := x;
                    EXIT;
                END IF;
            END LOOP;
        END IF;
        IF status = 'ok' THEN
            IF o.kind = 'cashback' THEN
                IF floor(least(amount * o.value, coalesce(o.max_value, amount * o.value))) > 9223372036854775807 THEN
                    RAISE EXCEPTION 'points out of range'
                        USING ERRCODE = 'WL205',
                              DETAIL = format('The cashback of offer %s would exceed 9223372036854775807 points.', o.offer_id);
                END IF;
                points := floor(least(amount * o.value, coalesce(o.max_value, amount * o.value)));
                IF account_id IS NULL AND NOT EXISTS (SELECT FROM wallet.programs p
                                                       WHERE p.merchant_id = offers_eval.merchant_id
                                                         AND p.currency = offers_eval.currency AND p.closed_at IS NULL) THEN
                    status := 'no_program';
                    points := 0;
                END IF;
            ELSE
                discount := CASE o.kind WHEN 'percent' THEN left_to_pay * o.value / 100 ELSE o.value END;
                discount := least(discount, coalesce(o.max_value, discount), left_to_pay);
                discount := trunc(discount, 2);
                left_to_pay := left_to_pay - discount;
            END IF;
        END IF;
        IF status = 'ok' THEN
            chosen := chosen + 1;
            closed := o.exclusive;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION wallet_internal.offers_eval(bigint, bigint, text, text, bigint, boolean, numeric, text, timestamptz, jsonb, text[], bigint[]) IS 'internal: the offers whose window, audience (target group only) and conditions hold for a purchase, in priority order, each with a status (ok, capped, code_needed, not_combinable, no_program) and its worth before the budget; reads only';

-- Units of the campaign's budget an offer's worth takes (NULL: no budget),
-- and the worth that a grant of fewer units leaves.
CREATE FUNCTION wallet_internal.offer_units(campaign_id bigint, kind text, discount numeric, points bigint, OUT unit text, OUT units bigint)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    SELECT b.unit INTO unit FROM wallet.campaign_budgets b WHERE b.campaign_id = offer_units.campaign_id;
    units := CASE WHEN unit IS NULL THEN NULL
                  WHEN unit = 'redemptions' THEN 1
                  WHEN unit = 'points' AND kind = 'cashback' THEN points
                  WHEN unit = 'money' AND kind <> 'cashback' THEN (discount * 100)::bigint
                  ELSE -1 END;   -- -1: a unit the kind cannot draw on (budget set after the offer)
END
$$;
COMMENT ON FUNCTION wallet_internal.offer_units(bigint, text, numeric, bigint) IS 'internal: the unit of a campaign''s budget and the units an offer worth discount (money: hundredths) or points takes; NULL units when the campaign has no budget, -1 when the unit does not fit the kind';

------------------------------------------------------------------------------
-- Quotes
------------------------------------------------------------------------------

CREATE FUNCTION wallet.quote_offers(merchant_id bigint, member_ref text, amount numeric, currency text,
        occurred_at timestamptz DEFAULT now(), attributes jsonb DEFAULT '{}', codes text[] DEFAULT NULL,
        hold_ttl interval DEFAULT NULL)
    RETURNS SETOF wallet.offer_quote
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    member bigint;
    tz text;
    prog bigint;
    rnd text;
    acct bigint;
    e record;
    u record;
    hid bigint;
    hexp timestamptz;
    st wallet.budget_status;
    got bigint;
    items jsonb := '[]';
    res wallet.offer_quote[] := '{}';
    q wallet.offer_quote;
    qid bigint;
    exp timestamptz;
    i int;
BEGIN
    PERFORM wallet_internal.purchase_check(merchant_id, member_ref, 'quote', amount, currency, occurred_at, attributes);
    PERFORM wallet_internal.purchase_check_codes(codes);
    IF hold_ttl <= interval '0' OR hold_ttl > interval '1 day' THEN
        RAISE EXCEPTION 'hold_ttl must be between 0 and 1 day'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A quote holds its budget for a checkout: a positive time of at most a day.';
    END IF;
    -- the holdout group is drawn by member id: the member is registered as
    -- its purchase would be, first and locked (an erasure in flight is waited
    -- for), and the context read after it
    member := wallet_internal.member_ensure(merchant_id, member_ref);
    SELECT * INTO member, tz, prog, rnd, acct FROM wallet_internal.purchase_context(merchant_id, member_ref, currency);
    IF hold_ttl IS NOT NULL THEN
        exp := clock_timestamp() + hold_ttl;
        -- the checkout's first lock, before any budget slice: the member's
        -- account in the currency (opened as the purchase would open it).  A
        -- quote and its purchase in one transaction then never deadlock with
        -- another checkout of the member, which locks the account before the
        -- budget too.
        IF prog IS NOT NULL THEN
            IF acct IS NULL THEN
                acct := wallet.open_account(prog, member_ref);
            END IF;
            PERFORM FROM wallet.accounts y WHERE y.account_id = acct FOR NO KEY UPDATE;
        END IF;
    END IF;
    -- budgets in campaign order (the budget API's deadlock rule)
    FOR e IN SELECT * FROM wallet_internal.offers_eval(merchant_id, member, member_ref, tz, acct,
                                                       NOT EXISTS (SELECT FROM wallet.purchases x
                                                                    WHERE x.merchant_id = quote_offers.merchant_id AND x.member_id = member),
                                                       amount, currency, occurred_at, attributes, codes, NULL) v
              ORDER BY v.campaign_id, v.offer_id LOOP
        q := (NULL, e.offer_id, e.campaign_id, e.name, e.kind, e.status, e.discount, e.points, exp);
        hid := NULL;
        got := 0;
        IF e.status = 'ok' THEN
            u := wallet_internal.offer_units(e.campaign_id, e.kind, e.discount, e.points);
            IF u.units = -1 THEN
                q.status := 'no_budget';
            ELSIF u.units > 0 THEN
                IF hold_ttl IS NOT NULL THEN
                    SELECT * INTO hid, got, hexp
                      FROM wallet_internal.budget_hold(e.campaign_id, u.units, hold_ttl, e.allow_partial AND u.unit <> 'redemptions');
                ELSE
                    st := wallet_internal.budget_status(e.campaign_id);
                    got := CASE WHEN st.remaining >= u.units THEN u.units WHEN e.allow_partial AND u.unit <> 'redemptions' THEN st.remaining ELSE 0 END;
                END IF;
                IF got = 0 THEN
                    q.status := 'no_budget';
                ELSIF got < u.units THEN
                    q.status := 'partial';
                    IF e.kind = 'cashback' THEN q.points := got; ELSE q.discount := round(got / 100.0, 2); END IF;
                END IF;
            END IF;
        END IF;
        IF q.status NOT IN ('ok', 'partial') THEN
            q.discount := 0;
            q.points := 0;
        END IF;
        res := res || q;
        items := items || jsonb_build_object('offer_id', e.offer_id, 'campaign_id', e.campaign_id, 'status', q.status,
                                             'discount', q.discount, 'points', q.points, 'units', CASE WHEN hid IS NOT NULL THEN got ELSE 0 END,
                                             'hold_id', hid, 'code', e.code);
    END LOOP;
    IF hold_ttl IS NOT NULL THEN
        INSERT INTO wallet.offer_quotes (merchant_id, member_id, amount, currency, items, expires_at)
        VALUES (merchant_id, member, amount, currency, items, exp)
        RETURNING quote_id INTO qid;
    END IF;
    FOR i IN 1..cardinality(res) LOOP
        q := res[i];
        q.quote_id := qid;
        RETURN NEXT q;
    END LOOP;
END
$$;
COMMENT ON FUNCTION wallet.quote_offers(bigint, text, numeric, text, timestamptz, jsonb, text[], interval) IS 'the offers whose conditions hold for a basket (the member''s target group only) and what each is worth given caps, codes, stacking and the campaign''s budget; consumes nothing, but with hold_ttl holds the budget for the checkout (the rows carry a quote_id for wallet.record_purchase; the holds stop counting at expires_at); registers an unknown member';

CREATE FUNCTION wallet.release_quote(quote_id bigint) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    q wallet.offer_quotes;
    it jsonb;
BEGIN
    IF quote_id IS NULL THEN
        RAISE EXCEPTION 'quote_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A quote is named by its id.';
    END IF;
    SELECT * INTO q FROM wallet.offer_quotes x WHERE x.quote_id = release_quote.quote_id AND wallet.acts_for(x.merchant_id) FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown quote'
            USING ERRCODE = 'WL607', DETAIL = format('There is no offer quote %s.', quote_id);
    END IF;
    IF q.state <> 'open' THEN
        RETURN false;
    END IF;
    FOR it IN SELECT j FROM jsonb_array_elements(q.items) j WHERE j ->> 'hold_id' IS NOT NULL ORDER BY (j ->> 'campaign_id')::bigint LOOP
        PERFORM wallet_internal.budget_release((it ->> 'hold_id')::bigint);
    END LOOP;
    UPDATE wallet.offer_quotes x SET state = 'released' WHERE x.quote_id = q.quote_id;
    RETURN true;
END
$$;
COMMENT ON FUNCTION wallet.release_quote(bigint) IS 'gives a quote''s held budget back at once (an abandoned checkout); returns false for a quote already used or released; WL607 unknown quote';

------------------------------------------------------------------------------
-- Consumption at checkout (wallet.record_purchase calls it)
------------------------------------------------------------------------------

-- One offer of a purchase, consumed: the caps counted, the budget taken
-- (hold_id: the quote's hold converted), the code redeemed, cashback posted,
-- the discount booked; what fails on the way is undone and the offer
-- recorded refused with its status.
CREATE FUNCTION wallet_internal.offer_consume(p wallet.purchases, member_ref text, time_zone text, e jsonb)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    o wallet.offers;
    st text := e ->> 'status';
    disc numeric := coalesce((e ->> 'discount')::numeric, 0);
    pts bigint := coalesce((e ->> 'points')::bigint, 0);
    hold bigint := (e ->> 'hold_id')::bigint;
    u record;
    want bigint;
    got bigint := 0;
    per date;
    n bigint;
    counted_all boolean := false;
    counted_per boolean := false;
    red wallet.redemption_result;
    ent wallet.entries;
    pv numeric;
BEGIN
    SELECT * INTO o FROM wallet.offers x WHERE x.offer_id = (e ->> 'offer_id')::bigint;
    per := CASE WHEN o.cap_period IS NOT NULL THEN date_trunc(o.cap_period, p.occurred_at AT TIME ZONE coalesce(time_zone, 'UTC'))::date END;
    -- caps: a use counted only while under the cap (exact under concurrency)
    IF st IN ('ok', 'partial') AND o.cap_per_member IS NOT NULL THEN
        INSERT INTO wallet.offer_counters AS c (merchant_id, member_id, offer_id, period, uses)
        VALUES (p.merchant_id, p.member_id, o.offer_id, NULL, 1)
        ON CONFLICT ON CONSTRAINT offer_counters_key DO UPDATE SET uses = c.uses + 1 WHERE c.uses < o.cap_per_member
        RETURNING c.uses INTO n;
        IF n IS NULL THEN st := 'capped'; ELSE counted_all := true; END IF;
    END IF;
    IF st IN ('ok', 'partial') AND o.cap_per_period IS NOT NULL THEN
        n := NULL;
        INSERT INTO wallet.offer_counters AS c (merchant_id, member_id, offer_id, period, uses)
        VALUES (p.merchant_id, p.member_id, o.offer_id, per, 1)
        ON CONFLICT ON CONSTRAINT offer_counters_key DO UPDATE SET uses = c.uses + 1 WHERE c.uses < o.cap_per_period
        RETURNING c.uses INTO n;
        IF n IS NULL THEN st := 'capped'; ELSE counted_per := true; END IF;
    END IF;
    -- the budget
    IF st IN ('ok', 'partial') THEN
        u := wallet_internal.offer_units(o.campaign_id, o.kind, disc, pts);
        IF hold IS NOT NULL THEN
            got := wallet_internal.budget_convert(hold);
        ELSIF u.units = -1 THEN
            got := 0;
        ELSIF u.units > 0 THEN
            got := wallet_internal.budget_take(o.campaign_id, u.units, o.allow_partial AND u.unit <> 'redemptions');
        END IF;
        want := u.units;
        IF u.units IS NOT NULL AND (got = 0 OR u.units = -1) THEN
            st := 'no_budget';
        ELSIF got > 0 AND hold IS NULL AND got < want THEN
            st := 'partial';
            IF o.kind = 'cashback' THEN pts := got; ELSE disc := round(got / 100.0, 2); END IF;
        END IF;
    ELSIF hold IS NOT NULL THEN
        PERFORM wallet_internal.budget_release(hold);
    END IF;
    -- the code, through the redemption path (its caps, its guard)
    IF st IN ('ok', 'partial') AND o.code_required THEN
        -- (the full path: wallet.redeem_code refuses an app's offer: key)
        red := wallet_internal.redeem_code_full(e ->> 'code', member_ref, format('offer:%s:%s', p.order_ref, o.offer_id));
        IF red.status <> 'ok' THEN
            st := 'code_refused';
        END IF;
    END IF;
    IF st NOT IN ('ok', 'partial') THEN
        -- undo what was counted or taken on the way
        IF got > 0 THEN
            PERFORM wallet_internal.budget_give_back(o.campaign_id, got);
            got := 0;
        END IF;
        IF counted_all THEN
            UPDATE wallet.offer_counters c SET uses = c.uses - 1 WHERE c.offer_id = o.offer_id AND c.member_id = p.member_id AND c.period IS NULL;
        END IF;
        IF counted_per THEN
            UPDATE wallet.offer_counters c SET uses = c.uses - 1 WHERE c.offer_id = o.offer_id AND c.member_id = p.member_id AND c.period = per;
        END IF;
        disc := 0;
        pts := 0;
    END IF;
    IF pts > 0 THEN
        ent := wallet_internal.accrue_entry(p.account_id, pts, format('offer:%s:%s', p.order_ref, o.offer_id), 'offer cashback', p.order_ref, NULL);
        SELECT x.point_value INTO pv FROM wallet.programs x WHERE x.program_id = p.program_id;
        INSERT INTO wallet.campaign_costs (merchant_id, campaign_id, kind, amount, currency, member_id, purchase_id, occurred_at)
        VALUES (p.merchant_id, o.campaign_id, 'cashback', round(pts * coalesce(pv, 0), 2), p.currency, p.member_id, p.purchase_id, p.occurred_at);
    END IF;
    IF disc > 0 THEN
        INSERT INTO wallet.campaign_costs (merchant_id, campaign_id, kind, amount, currency, member_id, purchase_id, occurred_at)
        VALUES (p.merchant_id, o.campaign_id, 'discount', disc, p.currency, p.member_id, p.purchase_id, p.occurred_at);
    END IF;
    INSERT INTO wallet.purchase_offers (merchant_id, purchase_id, offer_id, campaign_id, member_id, status, discount, points,
                                        units, redemption_id, entry_id)
    VALUES (p.merchant_id, p.purchase_id, o.offer_id, o.campaign_id, p.member_id, st, disc, pts, got, red.redemption_id, ent.entry_id)
    ON CONFLICT DO NOTHING;
END
$$;
COMMENT ON FUNCTION wallet_internal.offer_consume(wallet.purchases, text, text, jsonb) IS 'internal: consume one offer of a purchase (caps, budget or the quote''s hold, code, cashback, cost) and record the outcome in wallet.purchase_offers, undoing what a refusal on the way had counted';

CREATE FUNCTION wallet_internal.offers_consume(p wallet.purchases, member_ref text, time_zone text,
        offers bigint[], codes text[], quote_id bigint)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    q wallet.offer_quotes;
    e jsonb;
    r record;
    x bigint;
    first boolean;
BEGIN
    -- "first purchase at the merchant": no other purchase of the member seen,
    -- and, when a first-purchase offer is at stake, the member's row of
    -- wallet.first_purchases claimed for this purchase.  The account's lock
    -- alone does not serialise purchases in two currencies, or in one with no
    -- program; the claim does (a concurrent claim waits for the first, then
    -- finds it taken), and takes no lock beyond its own row.
    first := NOT EXISTS (SELECT FROM wallet.purchases y WHERE y.merchant_id = p.merchant_id
                           AND y.member_id = p.member_id AND y.purchase_id <> p.purchase_id);
    IF first AND EXISTS (SELECT FROM wallet.offers f
                          WHERE f.merchant_id = p.merchant_id AND f.first_purchase
                            AND (f.offer_id = ANY (offers)
                                 OR f.offer_id IN (SELECT (j ->> 'offer_id')::bigint FROM wallet.offer_quotes k, jsonb_array_elements(k.items) j
                                                    WHERE k.quote_id = offers_consume.quote_id AND j ->> 'status' IN ('ok', 'partial')))) THEN
        INSERT INTO wallet.first_purchases (merchant_id, member_id, purchase_id) VALUES (p.merchant_id, p.member_id, p.purchase_id)
        ON CONFLICT DO NOTHING;
        first := FOUND;
    END IF;
    IF quote_id IS NOT NULL THEN
        SELECT * INTO q FROM wallet.offer_quotes k WHERE k.quote_id = offers_consume.quote_id AND k.merchant_id = p.merchant_id FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown quote'
                USING ERRCODE = 'WL607', DETAIL = format('There is no offer quote %s.', quote_id);
        END IF;
        IF q.state <> 'open' OR q.member_id <> p.member_id OR q.amount <> p.amount OR q.currency <> p.currency THEN
            RAISE EXCEPTION 'quote % cannot be used for this purchase', quote_id
                USING ERRCODE = 'WL608',
                      DETAIL = CASE WHEN q.state <> 'open' THEN format('The quote is %s.', q.state)
                                    ELSE 'A quote is used by a purchase of the same member, amount and currency.' END;
        END IF;
        FOR e IN SELECT j FROM jsonb_array_elements(q.items) j ORDER BY (j ->> 'campaign_id')::bigint, (j ->> 'offer_id')::bigint LOOP
            CONTINUE WHEN e ->> 'status' NOT IN ('ok', 'partial') AND e ->> 'hold_id' IS NULL;
            -- a quoted offer the checkout does not name: its hold goes back
            -- now (the quote is used: release_quote can no longer reach it)
            IF offers IS NOT NULL AND NOT (e ->> 'offer_id')::bigint = ANY (offers) THEN
                IF e ->> 'hold_id' IS NOT NULL THEN
                    PERFORM wallet_internal.budget_release((e ->> 'hold_id')::bigint);
                END IF;
                CONTINUE;
            END IF;
            -- a quote's first-purchase offer, quoted before another purchase
            -- of the member: no longer its first (the hold is released)
            IF NOT first AND e ->> 'status' IN ('ok', 'partial')
               AND EXISTS (SELECT FROM wallet.offers f WHERE f.offer_id = (e ->> 'offer_id')::bigint AND f.first_purchase) THEN
                e := jsonb_set(e, '{status}', '"not_eligible"');
            END IF;
            PERFORM wallet_internal.offer_consume(p, member_ref, time_zone, e);
        END LOOP;
        UPDATE wallet.offer_quotes k SET state = 'used', purchase_id = p.purchase_id WHERE k.quote_id = q.quote_id;
    ELSE
        FOR r IN SELECT * FROM wallet_internal.offers_eval(p.merchant_id, p.member_id, member_ref, time_zone, p.account_id,
                                                          first, p.amount, p.currency, p.occurred_at, p.attributes, codes, offers) v
                  ORDER BY v.campaign_id, v.offer_id LOOP
            PERFORM wallet_internal.offer_consume(p, member_ref, time_zone, to_jsonb(r));
        END LOOP;
    END IF;
    -- offers named that do not apply to this purchase at all
    FOR x IN SELECT DISTINCT y FROM unnest(offers) y
              WHERE NOT EXISTS (SELECT FROM wallet.purchase_offers z WHERE z.purchase_id = p.purchase_id AND z.offer_id = y) ORDER BY 1 LOOP
        INSERT INTO wallet.purchase_offers (merchant_id, purchase_id, offer_id, campaign_id, member_id, status)
        SELECT p.merchant_id, p.purchase_id, f.offer_id, f.campaign_id, p.member_id, 'not_eligible'
          FROM wallet.offers f WHERE f.offer_id = x AND f.merchant_id = p.merchant_id;
        IF NOT FOUND THEN
            PERFORM wallet_internal.unknown_offer(x);
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION wallet_internal.offers_consume(wallet.purchases, text, text, bigint[], text[], bigint) IS 'internal: consume at checkout the offers a purchase names (by id, evaluated now, or by its quote, whose holds it converts) with its codes; every offer named gets a row of wallet.purchase_offers; WL606 unknown offer, WL607 unknown quote, WL608 quote used, released or for another basket';

------------------------------------------------------------------------------
-- Maintenance
------------------------------------------------------------------------------

-- Quotes are pointers to budget holds (which expire by themselves): a quote
-- long past its expiry is of no use to any checkout, and is deleted.
CREATE FUNCTION wallet.purge_offer_quotes(older_than interval DEFAULT interval '1 day', max_quotes int DEFAULT 10000)
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n bigint;
    _mine bigint[] := wallet_internal.caller_merchants();   -- NULL: acts for all
BEGIN
    IF older_than IS NULL OR max_quotes IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN older_than IS NULL THEN 'older_than' ELSE 'max_quotes' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Quotes expired longer ago than older_than are deleted, at most max_quotes per call.';
    END IF;
    IF older_than < interval '0' OR max_quotes < 1 THEN
        RAISE EXCEPTION 'older_than must not be negative and max_quotes must be positive'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Quotes expired longer ago than older_than are deleted, at most max_quotes per call.';
    END IF;
    IF older_than > interval '100 years' THEN
        RAISE EXCEPTION 'older_than must be at most 100 years'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Quotes expired longer ago than older_than are deleted; older_than is at most 100 years.';
    END IF;
    DELETE FROM wallet.offer_quotes q
     WHERE q.quote_id IN (SELECT x.quote_id FROM wallet.offer_quotes x
                           WHERE x.expires_at < clock_timestamp() - older_than
                             AND (_mine IS NULL OR x.merchant_id = ANY (_mine))
                           ORDER BY x.expires_at LIMIT max_quotes
                             FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet.purge_offer_quotes(interval, int) IS 'deletes up to max_quotes offer quotes (of the merchants the caller acts for; every merchant''s for the extension''s owner or a superuser) that expired longer ago than older_than (a checkout naming one then gets WL607); their budget holds are not touched (they expired with them); returns the number deleted; run by wallet.run_maintenance';


-- ======================================================================
-- Purchases, refunds and earning rules (issue 10, part A).
--
-- wallet.record_purchase records a purchase in wallet.purchases, evaluates
-- the program's earning rules and posts the points through the ledger's own
-- posting path (the account locked and settled as lock_account does, then
-- wallet_internal.post_entry, as wallet.accrue does), so every accrual hook
-- (tier upgrades) sees it.  The purchase row is written before
-- the posting, so that anything reading purchases in that transaction (the
-- spend threshold of tiers) sees it.  Rules are data (wallet.earning_rules);
-- a purchase keeps the points and the explanation it got, so changing a rule
-- never changes what was posted.  Per-member caps are counted in
-- wallet.earning_counters, written only under the member's account lock:
-- exact under concurrency.  README "Loyalty".
-- ======================================================================

------------------------------------------------------------------------------
-- Earning rules
------------------------------------------------------------------------------

CREATE TABLE wallet.earning_rules (
    rule_id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id        bigint NOT NULL REFERENCES wallet.merchants,
    program_id         bigint NOT NULL REFERENCES wallet.programs,
    campaign_id        bigint REFERENCES wallet.campaigns,
    name               text NOT NULL CHECK (btrim(name) <> ''),
    effect             text NOT NULL CHECK (effect IN ('per_unit', 'multiplier', 'fixed')),
    value              numeric NOT NULL CHECK (value > 0),
    priority           int NOT NULL DEFAULT 0,
    exclusive          boolean NOT NULL DEFAULT false,
    valid_from         timestamptz NOT NULL DEFAULT now(),
    valid_until        timestamptz CHECK (valid_until > valid_from),
    min_amount         numeric CHECK (min_amount >= 0),
    stores             text[],
    channels           text[],
    payment_methods    text[],
    categories         text[],
    min_tier_rank      int CHECK (min_tier_rank > 0),
    first_purchase     boolean,
    days_of_week       int[] CHECK (days_of_week <@ ARRAY[1, 2, 3, 4, 5, 6, 7]),
    time_from          time,
    time_until         time,
    cap_per_purchase   bigint CHECK (cap_per_purchase > 0),
    cap_per_member_day bigint CHECK (cap_per_member_day > 0),
    cap_per_member     bigint CHECK (cap_per_member > 0),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((time_from IS NULL) = (time_until IS NULL) AND time_from IS DISTINCT FROM time_until OR time_from IS NULL),
    UNIQUE (program_id, name)
);
CREATE INDEX earning_rules_program_idx ON wallet.earning_rules (program_id, valid_from);
COMMENT ON TABLE wallet.earning_rules IS 'earning rules of programs: conditions on a purchase and an effect in points (wallet.create_earning_rule); evaluated by wallet.record_purchase and wallet.preview_purchase';
COMMENT ON COLUMN wallet.earning_rules.rule_id IS 'rule id';
COMMENT ON COLUMN wallet.earning_rules.merchant_id IS 'merchant of the program: the key to distribute by';
COMMENT ON COLUMN wallet.earning_rules.program_id IS 'the program whose purchases the rule earns on';
COMMENT ON COLUMN wallet.earning_rules.campaign_id IS 'the campaign the rule belongs to (NULL = none)';
COMMENT ON COLUMN wallet.earning_rules.name IS 'the rule''s name, unique in the program; starts every explanation';
COMMENT ON COLUMN wallet.earning_rules.effect IS 'per_unit: value points per currency unit of the amount; multiplier: the per_unit points of the purchase times value (the extra part); fixed: value points';
COMMENT ON COLUMN wallet.earning_rules.value IS 'the effect''s figure: points per unit, multiplier (> 1) or whole fixed points';
COMMENT ON COLUMN wallet.earning_rules.priority IS 'evaluation order, highest first (ties: lowest rule_id first)';
COMMENT ON COLUMN wallet.earning_rules.exclusive IS 'an exclusive rule fires alone: only when no rule of higher priority fired, and then no other rule fires';
COMMENT ON COLUMN wallet.earning_rules.valid_from IS 'first instant of a purchase (occurred_at) the rule applies to';
COMMENT ON COLUMN wallet.earning_rules.valid_until IS 'end of the validity, exclusive (NULL = open-ended); wallet.end_earning_rule sets it';
COMMENT ON COLUMN wallet.earning_rules.min_amount IS 'condition: amount at least this (NULL = any)';
COMMENT ON COLUMN wallet.earning_rules.stores IS 'condition: attributes.store is one of these (NULL = any)';
COMMENT ON COLUMN wallet.earning_rules.channels IS 'condition: attributes.channel is one of these (NULL = any)';
COMMENT ON COLUMN wallet.earning_rules.payment_methods IS 'condition: attributes.payment_method is one of these (NULL = any)';
COMMENT ON COLUMN wallet.earning_rules.categories IS 'condition: one of attributes.categories is one of these (NULL = any)';
COMMENT ON COLUMN wallet.earning_rules.min_tier_rank IS 'condition: the member''s tier has at least this rank (wallet.account_tiers; NULL = any)';
COMMENT ON COLUMN wallet.earning_rules.first_purchase IS 'condition: true = only the member''s first purchase in the program (NULL = any)';
COMMENT ON COLUMN wallet.earning_rules.days_of_week IS 'condition: ISO day of week (1 = Monday) of the purchase in the member''s time zone (NULL = any)';
COMMENT ON COLUMN wallet.earning_rules.time_from IS 'condition: local time of day of the purchase at or after this (with time_until; wraps past midnight when later than it)';
COMMENT ON COLUMN wallet.earning_rules.time_until IS 'condition: local time of day of the purchase before this (exclusive)';
COMMENT ON COLUMN wallet.earning_rules.cap_per_purchase IS 'cap: at most this many points of the rule per purchase (NULL = none)';
COMMENT ON COLUMN wallet.earning_rules.cap_per_member_day IS 'cap: at most this many points of the rule per member and day in the member''s time zone (NULL = none)';
COMMENT ON COLUMN wallet.earning_rules.cap_per_member IS 'cap: at most this many points of the rule per member in all (NULL = none)';
COMMENT ON COLUMN wallet.earning_rules.created_at IS 'when the rule was made';
COMMENT ON COLUMN wallet.earning_rules.updated_at IS 'when the rule last changed';
SELECT pg_catalog.pg_extension_config_dump('wallet.earning_rules', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.earning_rules', 'rule_id'), '');
ALTER TABLE wallet.earning_rules ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.earning_rules USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.earning_rules IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
-- wallet.record_purchase and wallet.preview_purchase evaluate compiled
-- copies of the rules kept per session (src/purchase.c); every change drops them.
CREATE FUNCTION wallet_internal.purchase_rules_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'purchase_rules_changed' LANGUAGE C;
COMMENT ON FUNCTION wallet_internal.purchase_rules_changed() IS 'trigger: tells every backend to drop its compiled earning rules (wallet_internal.purchase_points)';
CREATE TRIGGER earning_rules_changed AFTER INSERT OR DELETE OR UPDATE
    ON wallet.earning_rules FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.purchase_rules_changed();
CREATE TRIGGER earning_rules_changed_truncate AFTER TRUNCATE
    ON wallet.earning_rules FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.purchase_rules_changed();
COMMENT ON TRIGGER earning_rules_changed ON wallet.earning_rules IS 'drops every backend''s compiled earning rules (wallet_internal.purchase_points)';
COMMENT ON TRIGGER earning_rules_changed_truncate ON wallet.earning_rules IS 'drops every backend''s compiled earning rules on TRUNCATE';

-- One row per capped rule, member and local day (day NULL: the member's
-- total of the rule).  Written only under the member's account lock.
-- No foreign key to merchants or rules: every purchase would lock the same
-- merchant and rule rows (FOR KEY SHARE, a MultiXact once sessions overlap);
-- the rows are written only by record_purchase, from the rules it just read.
CREATE TABLE wallet.earning_counters (
    merchant_id bigint NOT NULL,
    member_id   bigint NOT NULL REFERENCES wallet.members,
    rule_id     bigint NOT NULL,
    day         date,
    points      bigint NOT NULL CHECK (points >= 0),
    CONSTRAINT earning_counters_key UNIQUE NULLS NOT DISTINCT (rule_id, member_id, day)
);
COMMENT ON TABLE wallet.earning_counters IS 'points earned per capped rule and member, per day and in all: what the per-member caps of wallet.earning_rules count';
COMMENT ON COLUMN wallet.earning_counters.merchant_id IS 'merchant of the rule (a wallet.merchants.merchant_id): the key to distribute by';
COMMENT ON COLUMN wallet.earning_counters.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.earning_counters.rule_id IS 'the rule (a wallet.earning_rules.rule_id)';
COMMENT ON COLUMN wallet.earning_counters.day IS 'the day in the member''s time zone; NULL = the member''s total';
COMMENT ON COLUMN wallet.earning_counters.points IS 'points the rule earned the member that day (or in all)';
SELECT pg_catalog.pg_extension_config_dump('wallet.earning_counters', '');
ALTER TABLE wallet.earning_counters ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.earning_counters USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.earning_counters IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

------------------------------------------------------------------------------
-- Results
------------------------------------------------------------------------------

CREATE TYPE wallet.purchase_result AS (
    purchase_id bigint,
    order_ref   text,
    member_id   bigint,
    program_id  bigint,
    account_id  bigint,
    amount      numeric,
    currency    text,
    occurred_at timestamptz,
    points      bigint,
    entry_id    bigint,
    rules       jsonb
);
COMMENT ON TYPE wallet.purchase_result IS 'result of wallet.record_purchase and wallet.preview_purchase';
COMMENT ON COLUMN wallet.purchase_result.purchase_id IS 'the purchase (NULL in a preview of a new order)';
COMMENT ON COLUMN wallet.purchase_result.order_ref IS 'the merchant''s order reference';
COMMENT ON COLUMN wallet.purchase_result.member_id IS 'the member (NULL in a preview for a member not yet known)';
COMMENT ON COLUMN wallet.purchase_result.program_id IS 'the program that earns from the purchase (NULL: none in that currency)';
COMMENT ON COLUMN wallet.purchase_result.account_id IS 'the member''s account in it (NULL in a preview when it has none yet)';
COMMENT ON COLUMN wallet.purchase_result.amount IS 'amount paid';
COMMENT ON COLUMN wallet.purchase_result.currency IS 'ISO 4217 code of the amount';
COMMENT ON COLUMN wallet.purchase_result.occurred_at IS 'when the purchase was made';
COMMENT ON COLUMN wallet.purchase_result.points IS 'points earned (a preview: would earn)';
COMMENT ON COLUMN wallet.purchase_result.entry_id IS 'the accrue entry that posted them (NULL: none, or a preview)';
COMMENT ON COLUMN wallet.purchase_result.rules IS 'the rules that fired, as [{rule_id, points, why}] (rule_id NULL: the tier multiplier)';

CREATE TYPE wallet.refund_result AS (
    refund_id   bigint,
    purchase_id bigint,
    order_ref   text,
    refund_ref  text,
    amount      numeric,
    points      bigint,
    entry_id    bigint
);
COMMENT ON TYPE wallet.refund_result IS 'result of wallet.record_refund';
COMMENT ON COLUMN wallet.refund_result.refund_id IS 'the refund';
COMMENT ON COLUMN wallet.refund_result.purchase_id IS 'the purchase refunded';
COMMENT ON COLUMN wallet.refund_result.order_ref IS 'its order reference';
COMMENT ON COLUMN wallet.refund_result.refund_ref IS 'the merchant''s refund reference';
COMMENT ON COLUMN wallet.refund_result.amount IS 'amount refunded';
COMMENT ON COLUMN wallet.refund_result.points IS 'points taken back';
COMMENT ON COLUMN wallet.refund_result.entry_id IS 'the refund entry that took them back (NULL when none)';

------------------------------------------------------------------------------
-- Program settings
------------------------------------------------------------------------------

CREATE FUNCTION wallet.set_program_earning(program_id bigint, currency text, rounding text DEFAULT 'floor',
        refund_debt boolean DEFAULT false, point_value numeric DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF program_id IS NULL OR rounding IS NULL OR refund_debt IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN program_id IS NULL THEN 'program_id' WHEN rounding IS NULL THEN 'rounding' ELSE 'refund_debt' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A program earns from purchases in a currency, with a rounding rule and a refund policy.';
    END IF;
    IF currency IS NOT NULL AND currency !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'invalid currency "%"', left(currency, 16)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A currency is an ISO 4217 code of three capital letters, such as CNY or EUR; NULL stops earning from purchases.';
    END IF;
    IF rounding NOT IN ('floor', 'nearest', 'ceiling') THEN
        RAISE EXCEPTION 'unknown rounding "%"', left(rounding, 32)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Fractional points are rounded by ''floor'', ''nearest'' (half up) or ''ceiling''.';
    END IF;
    IF point_value < 0 OR point_value IN ('NaN', 'Infinity') THEN
        RAISE EXCEPTION 'point value must be finite and not negative'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A point is worth a finite zero or more in the program''s currency (NULL = unknown).';
    END IF;
    UPDATE wallet.programs p
       SET currency = set_program_earning.currency, rounding = set_program_earning.rounding,
           refund_debt = set_program_earning.refund_debt, point_value = set_program_earning.point_value
     WHERE p.program_id = set_program_earning.program_id AND wallet.acts_for(p.merchant_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'another open program of the merchant earns in %', currency
        USING ERRCODE = 'unique_violation', DETAIL = 'A merchant has at most one open program earning from purchases in each currency.';
END
$$;
COMMENT ON FUNCTION wallet.set_program_earning(bigint, text, text, boolean, numeric) IS 'makes a program earn from purchases in currency (NULL: from none), with its rounding (floor, nearest, ceiling), refund policy (refund_debt: a refund may leave a debt) and point value';

------------------------------------------------------------------------------
-- Rule administration
------------------------------------------------------------------------------

-- Text arrays of a condition: non-blank strings.
CREATE FUNCTION wallet_internal.rule_texts(conditions jsonb, key text) RETURNS text[]
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NOT conditions ? key THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(conditions -> key) <> 'array' OR jsonb_array_length(conditions -> key) = 0
       OR EXISTS (SELECT FROM jsonb_array_elements(conditions -> key) x WHERE jsonb_typeof(x) <> 'string' OR btrim(x #>> '{}') = '') THEN
        RAISE EXCEPTION 'condition % must be a non-empty array of non-blank strings', key
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The rule condition "%s" lists the values a purchase attribute may have.', key);
    END IF;
    RETURN ARRAY(SELECT x FROM jsonb_array_elements_text(conditions -> key) x);
END
$$;
COMMENT ON FUNCTION wallet_internal.rule_texts(jsonb, text) IS 'internal: the text array of a rule condition (NULL when absent); 22023 unless a non-empty array of non-blank strings';

-- A non-negative number of a rule's conditions or caps (whole: integral).
CREATE FUNCTION wallet_internal.rule_number(o jsonb, key text, whole boolean) RETURNS numeric
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v numeric;
BEGIN
    IF NOT o ? key THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(o -> key) = 'number' THEN
        v := (o ->> key)::numeric;
    END IF;
    IF v IS NULL OR v < 0 OR (whole AND (v <> trunc(v) OR v < 1 OR v > 9223372036854775807)) THEN
        RAISE EXCEPTION '% must be a %', key, CASE WHEN whole THEN 'positive whole number' ELSE 'number of at least 0' END
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The rule''s "%s" is %s.', key, CASE WHEN whole THEN 'a whole number from 1 to 9223372036854775807' ELSE 'a number of at least 0' END);
    END IF;
    RETURN v;
END
$$;
COMMENT ON FUNCTION wallet_internal.rule_number(jsonb, text, boolean) IS 'internal: a number of a rule''s conditions or caps (NULL when absent); 22023 unless a number >= 0 (whole: a positive integer)';

-- Conditions and caps of a rule from their jsonb form, into the row.
CREATE FUNCTION wallet_internal.rule_apply_conditions(r wallet.earning_rules, conditions jsonb, caps jsonb)
    RETURNS wallet.earning_rules
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    k text;
    d jsonb;
    v numeric;
BEGIN
    IF conditions IS NOT NULL THEN
        IF jsonb_typeof(conditions) <> 'object' THEN
            RAISE EXCEPTION 'conditions must be a json object'
                USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Conditions are an object such as {"min_amount": 100, "channels": ["app"]}.';
        END IF;
        SELECT min(x) INTO k FROM jsonb_object_keys(conditions) x
         WHERE x NOT IN ('min_amount', 'stores', 'channels', 'payment_methods', 'categories', 'min_tier_rank',
                         'first_purchase', 'days_of_week', 'time_from', 'time_until');
        IF k IS NOT NULL THEN
            RAISE EXCEPTION 'unknown condition "%"', left(k, 64)
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'The conditions are min_amount, stores, channels, payment_methods, categories, min_tier_rank, first_purchase, days_of_week, time_from and time_until.';
        END IF;
        r.min_amount := wallet_internal.rule_number(conditions, 'min_amount', false);
        r.stores := wallet_internal.rule_texts(conditions, 'stores');
        r.channels := wallet_internal.rule_texts(conditions, 'channels');
        r.payment_methods := wallet_internal.rule_texts(conditions, 'payment_methods');
        r.categories := wallet_internal.rule_texts(conditions, 'categories');
        v := wallet_internal.rule_number(conditions, 'min_tier_rank', true);
        IF v > 2147483647 THEN
            RAISE EXCEPTION 'min_tier_rank must be a tier rank'
                USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A tier rank is a whole number from 1 to 2147483647.';
        END IF;
        r.min_tier_rank := v;
        r.first_purchase := NULL;
        IF conditions ? 'first_purchase' THEN
            IF conditions -> 'first_purchase' <> 'true' THEN
                RAISE EXCEPTION 'first_purchase must be true'
                    USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Leave the condition out to earn on every purchase.';
            END IF;
            r.first_purchase := true;
        END IF;
        r.days_of_week := NULL;
        IF conditions ? 'days_of_week' THEN
            d := conditions -> 'days_of_week';
            IF jsonb_typeof(d) <> 'array' OR jsonb_array_length(d) = 0
               OR EXISTS (SELECT FROM jsonb_array_elements(d) x WHERE x NOT IN ('1', '2', '3', '4', '5', '6', '7')) THEN
                RAISE EXCEPTION 'days_of_week must be a non-empty array of days 1 to 7'
                    USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Days of the week are ISO numbers: 1 = Monday to 7 = Sunday.';
            END IF;
            r.days_of_week := ARRAY(SELECT DISTINCT x::int FROM jsonb_array_elements_text(d) x ORDER BY 1);
        END IF;
        r.time_from := NULL;
        r.time_until := NULL;
        IF conditions ? 'time_from' OR conditions ? 'time_until' THEN
            IF jsonb_typeof(conditions -> 'time_from') IS DISTINCT FROM 'string' OR jsonb_typeof(conditions -> 'time_until') IS DISTINCT FROM 'string'
               OR conditions ->> 'time_from' !~ '^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$'
               OR conditions ->> 'time_until' !~ '^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$'
               OR conditions ->> 'time_from' = conditions ->> 'time_until' THEN
                RAISE EXCEPTION 'time_from and time_until must be two different times of day'
                    USING ERRCODE = 'invalid_parameter_value',
                          DETAIL = 'A time window is given by both ends as "HH:MM" in the member''s time zone; time_until is exclusive and may be past midnight.';
            END IF;
            r.time_from := (conditions ->> 'time_from')::time;
            r.time_until := (conditions ->> 'time_until')::time;
        END IF;
    END IF;
    IF caps IS NOT NULL THEN
        IF jsonb_typeof(caps) <> 'object' THEN
            RAISE EXCEPTION 'caps must be a json object'
                USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Caps are an object such as {"per_purchase": 500, "per_member_day": 1000}.';
        END IF;
        SELECT min(x) INTO k FROM jsonb_object_keys(caps) x WHERE x NOT IN ('per_purchase', 'per_member_day', 'per_member');
        IF k IS NOT NULL THEN
            RAISE EXCEPTION 'unknown cap "%"', left(k, 64)
                USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The caps are per_purchase, per_member_day and per_member.';
        END IF;
        r.cap_per_purchase := wallet_internal.rule_number(caps, 'per_purchase', true);
        r.cap_per_member_day := wallet_internal.rule_number(caps, 'per_member_day', true);
        r.cap_per_member := wallet_internal.rule_number(caps, 'per_member', true);
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet_internal.rule_apply_conditions(wallet.earning_rules, jsonb, jsonb) IS 'internal: a rule row with its conditions and caps replaced by the given jsonb objects (NULL: kept); 22023 for an unknown key or a bad value';

-- What every rule row must satisfy beyond its conditions.
CREATE FUNCTION wallet_internal.rule_check(r wallet.earning_rules) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF r.name IS NULL OR r.effect IS NULL OR r.value IS NULL OR r.valid_from IS NULL OR r.priority IS NULL OR r.exclusive IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN r.name IS NULL THEN 'name' WHEN r.effect IS NULL THEN 'effect'
                                                   WHEN r.value IS NULL THEN 'value' WHEN r.valid_from IS NULL THEN 'valid_from'
                                                   WHEN r.priority IS NULL THEN 'priority' ELSE 'exclusive' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'An earning rule has a name, an effect with its value, a start, a priority and a stacking mode.';
    END IF;
    IF btrim(r.name) = '' OR length(r.name) > 200 THEN
        RAISE EXCEPTION 'rule name must not be %', CASE WHEN btrim(r.name) = '' THEN 'blank' ELSE 'longer than 200 characters' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A rule''s name starts the explanation of the points it earns.';
    END IF;
    IF r.effect NOT IN ('per_unit', 'multiplier', 'fixed') THEN
        RAISE EXCEPTION 'unknown effect "%"', left(r.effect, 32)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An effect is ''per_unit'' (points per currency unit), ''multiplier'' or ''fixed'' (bonus points).';
    END IF;
    IF r.value <= 0 OR (r.effect = 'multiplier' AND r.value <= 1) OR (r.effect = 'fixed' AND r.value <> trunc(r.value))
       OR r.value > 1000000000 THEN
        RAISE EXCEPTION 'invalid value for effect %', r.effect
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A per_unit rule takes points per unit above 0, a multiplier rule a factor above 1, a fixed rule a whole number of points above 0 (each at most 10^9).';
    END IF;
    IF NOT isfinite(r.valid_from) OR NOT isfinite(r.valid_until) THEN
        RAISE EXCEPTION '% must be finite', CASE WHEN isfinite(r.valid_from) THEN 'valid_until' ELSE 'valid_from' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A rule is valid from a finite instant until a later one (exclusive) or open-ended (NULL).';
    END IF;
    IF r.valid_until <= r.valid_from THEN
        RAISE EXCEPTION 'invalid validity window'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A rule is valid from a finite instant until a later one (exclusive) or open-ended (NULL).';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.rule_check(wallet.earning_rules) IS 'internal: 22004/22023 for a rule row with a missing or invalid name, effect, value or validity window';

CREATE FUNCTION wallet_internal.unknown_rule(rule_id bigint) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF rule_id IS NULL THEN
        RAISE EXCEPTION 'rule_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'An earning rule is named by its id.';
    END IF;
    RAISE EXCEPTION 'unknown earning rule'
        USING ERRCODE = 'WL502', DETAIL = format('There is no earning rule %s.', rule_id);
END
$$;
COMMENT ON FUNCTION wallet_internal.unknown_rule(bigint) IS 'raises WL502 for an earning rule that does not exist (or of another merchant), 22004 for a NULL id';

CREATE FUNCTION wallet.create_earning_rule(program_id bigint, name text, effect text, value numeric,
        conditions jsonb DEFAULT '{}', caps jsonb DEFAULT '{}', valid_from timestamptz DEFAULT now(),
        valid_until timestamptz DEFAULT NULL, priority int DEFAULT 0, exclusive boolean DEFAULT false,
        campaign_id bigint DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.earning_rules;
BEGIN
    IF program_id IS NULL OR conditions IS NULL OR caps IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN program_id IS NULL THEN 'program_id' WHEN conditions IS NULL THEN 'conditions' ELSE 'caps' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A rule belongs to a program; conditions and caps are json objects ({} = none).';
    END IF;
    SELECT p.merchant_id INTO r.merchant_id FROM wallet.programs p
     WHERE p.program_id = create_earning_rule.program_id AND wallet.acts_for(p.merchant_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
    IF campaign_id IS NOT NULL AND NOT EXISTS (SELECT FROM wallet.campaigns k
                                                WHERE k.campaign_id = create_earning_rule.campaign_id AND k.merchant_id = r.merchant_id) THEN
        RAISE EXCEPTION 'unknown campaign'
            USING ERRCODE = 'WL101', DETAIL = format('The merchant of program %s has no campaign %s.', program_id, campaign_id);
    END IF;
    r.program_id := program_id;
    r.campaign_id := campaign_id;
    r.name := name;
    r.effect := effect;
    r.value := value;
    r.valid_from := valid_from;
    r.valid_until := valid_until;
    r.priority := priority;
    r.exclusive := exclusive;
    PERFORM wallet_internal.rule_check(r);
    r := wallet_internal.rule_apply_conditions(r, conditions, caps);
    INSERT INTO wallet.earning_rules (merchant_id, program_id, campaign_id, name, effect, value, priority, exclusive,
                                      valid_from, valid_until, min_amount, stores, channels, payment_methods, categories,
                                      min_tier_rank, first_purchase, days_of_week, time_from, time_until,
                                      cap_per_purchase, cap_per_member_day, cap_per_member)
    VALUES (r.merchant_id, r.program_id, r.campaign_id, r.name, r.effect, r.value, r.priority, r.exclusive,
            r.valid_from, r.valid_until, r.min_amount, r.stores, r.channels, r.payment_methods, r.categories,
            r.min_tier_rank, r.first_purchase, r.days_of_week, r.time_from, r.time_until,
            r.cap_per_purchase, r.cap_per_member_day, r.cap_per_member)
    RETURNING rule_id INTO r.rule_id;
    RETURN r.rule_id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'earning rule "%" already exists', name
        USING ERRCODE = 'unique_violation', DETAIL = 'Rule names are unique per program.';
END
$$;
COMMENT ON FUNCTION wallet.create_earning_rule(bigint, text, text, numeric, jsonb, jsonb, timestamptz, timestamptz, int, boolean, bigint) IS 'creates an earning rule of a program (effect per_unit, multiplier or fixed; conditions and caps as json objects, validated) and returns its id';

CREATE FUNCTION wallet.update_earning_rule(rule_id bigint, name text DEFAULT NULL, value numeric DEFAULT NULL,
        conditions jsonb DEFAULT NULL, caps jsonb DEFAULT NULL, valid_until timestamptz DEFAULT NULL,
        priority int DEFAULT NULL, exclusive boolean DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.earning_rules;
BEGIN
    SELECT * INTO r FROM wallet.earning_rules x
     WHERE x.rule_id = update_earning_rule.rule_id AND wallet.acts_for(x.merchant_id)
       FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM wallet_internal.unknown_rule(rule_id);
    END IF;
    r.name := coalesce(name, r.name);
    r.value := coalesce(value, r.value);
    r.valid_until := coalesce(valid_until, r.valid_until);
    r.priority := coalesce(priority, r.priority);
    r.exclusive := coalesce(exclusive, r.exclusive);
    PERFORM wallet_internal.rule_check(r);
    r := wallet_internal.rule_apply_conditions(r, conditions, caps);
    UPDATE wallet.earning_rules x
       SET name = r.name, value = r.value, valid_until = r.valid_until, priority = r.priority, exclusive = r.exclusive,
           min_amount = r.min_amount, stores = r.stores, channels = r.channels, payment_methods = r.payment_methods,
           categories = r.categories, min_tier_rank = r.min_tier_rank, first_purchase = r.first_purchase,
           days_of_week = r.days_of_week, time_from = r.time_from, time_until = r.time_until,
           cap_per_purchase = r.cap_per_purchase, cap_per_member_day = r.cap_per_member_day, cap_per_member = r.cap_per_member,
           updated_at = now()
     WHERE x.rule_id = r.rule_id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'earning rule "%" already exists', name
        USING ERRCODE = 'unique_violation', DETAIL = 'Rule names are unique per program.';
END
$$;
COMMENT ON FUNCTION wallet.update_earning_rule(bigint, text, numeric, jsonb, jsonb, timestamptz, int, boolean) IS 'changes an earning rule for the purchases recorded from now on (NULL arguments: kept; conditions and caps replace the whole set); points already posted never change';

CREATE FUNCTION wallet.end_earning_rule(rule_id bigint, at timestamptz DEFAULT now()) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.earning_rules;
BEGIN
    IF at IS NULL OR NOT isfinite(at) THEN
        RAISE EXCEPTION 'at must %', CASE WHEN at IS NULL THEN 'not be null' ELSE 'be finite' END
            USING ERRCODE = CASE WHEN at IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'A rule ends at an instant: purchases made from then on no longer earn by it.';
    END IF;
    SELECT * INTO r FROM wallet.earning_rules x
     WHERE x.rule_id = end_earning_rule.rule_id AND wallet.acts_for(x.merchant_id)
       FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM wallet_internal.unknown_rule(rule_id);
    END IF;
    -- never later than it already ends; a rule ended before it starts ends when it starts
    UPDATE wallet.earning_rules x
       SET valid_until = greatest(least(coalesce(x.valid_until, 'infinity'), at), x.valid_from + interval '1 microsecond'),
           updated_at = now()
     WHERE x.rule_id = r.rule_id;
END
$$;
COMMENT ON FUNCTION wallet.end_earning_rule(bigint, timestamptz) IS 'ends an earning rule at an instant (default now; never later than it already ends): purchases made from then on no longer earn by it (idempotent)';

------------------------------------------------------------------------------
-- Evaluation
------------------------------------------------------------------------------

-- Checks of record_purchase and preview_purchase's arguments.
CREATE FUNCTION wallet_internal.purchase_check(merchant_id bigint, member_ref text, order_ref text, amount numeric,
        currency text, occurred_at timestamptz, attributes jsonb) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.member_check(merchant_id, member_ref);
    IF order_ref IS NULL OR amount IS NULL OR currency IS NULL OR occurred_at IS NULL OR attributes IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN order_ref IS NULL THEN 'order_ref' WHEN amount IS NULL THEN 'amount'
                                                   WHEN currency IS NULL THEN 'currency' WHEN occurred_at IS NULL THEN 'occurred_at'
                                                   ELSE 'attributes' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A purchase has an order reference, an amount in a currency, an instant and attributes ({} = none).';
    END IF;
    IF btrim(order_ref) = '' OR length(order_ref) > 200 THEN
        RAISE EXCEPTION 'order reference must not be %', CASE WHEN btrim(order_ref) = '' THEN 'blank' ELSE 'longer than 200 characters' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An order reference is the merchant''s own non-blank order id of at most 200 characters.';
    END IF;
    IF amount <= 0 OR amount > 1e15 THEN
        RAISE EXCEPTION 'invalid purchase amount'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A purchase amount is positive and at most 10^15.';
    END IF;
    IF currency !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'invalid currency "%"', left(currency, 16)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A currency is an ISO 4217 code of three capital letters, such as CNY or EUR.';
    END IF;
    IF NOT isfinite(occurred_at) THEN
        RAISE EXCEPTION 'occurred_at must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A purchase is made at a real instant.';
    END IF;
    -- (the local-time arithmetic of rules and offers stays within the
    -- timestamp range; src/purchase.c's fast path leaves the edges to here)
    IF occurred_at < now() - interval '100 years' OR occurred_at > now() + interval '100 years' THEN
        RAISE EXCEPTION 'occurred_at must be within 100 years of now'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('A purchase is made at a real instant, at most 100 years before or after now; %s is not.', occurred_at);
    END IF;
    IF jsonb_typeof(attributes) <> 'object'
       OR jsonb_typeof(attributes -> 'store') NOT IN ('string')
       OR jsonb_typeof(attributes -> 'channel') NOT IN ('string')
       OR jsonb_typeof(attributes -> 'payment_method') NOT IN ('string')
       OR jsonb_typeof(attributes -> 'categories') NOT IN ('array')
       OR jsonb_path_exists(attributes, '$.categories[*] ? (@.type() != "string")') THEN
        RAISE EXCEPTION 'invalid purchase attributes'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Attributes are a json object; store, channel and payment_method are strings, categories an array of strings.';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.purchase_check(bigint, text, text, numeric, text, timestamptz, jsonb) IS 'internal: 22004/22023/WL102 for the arguments of record_purchase, preview_purchase and quote_offers (occurred_at finite and within 100 years of now)';

-- The points a purchase earns in a program, and why: the rules valid at
-- occurred_at whose conditions hold, in priority order (highest first, then
-- lowest id), an exclusive one alone.  per_unit rules make the base; the
-- tier multiplier and multiplier rules add to it (base times factor - 1);
-- fixed rules add their points.  Each rule's points are rounded per the
-- program, then capped.  counters: the increments of the capped rules'
-- counters, as [{rule_id, day, points}] (day null: the member's total).
-- Deterministic: the same purchase, rules and counters give the same result.
CREATE FUNCTION wallet_internal.purchase_points(merchant_id bigint, program_id bigint, rounding text, member_id bigint,
        account_id bigint, time_zone text, amount numeric, currency text, occurred_at timestamptz, attributes jsonb,
        OUT points bigint, OUT rules jsonb, OUT counters jsonb)
    AS 'MODULE_PATHNAME', 'purchase_points' LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION wallet_internal.purchase_points(bigint, bigint, text, bigint, bigint, text, numeric, text, timestamptz, jsonb) IS 'internal: the points a purchase earns by the program''s rules, the member''s tier and whether it is its first purchase in the program (read in one query; called under the account''s lock), the rules that fired ({rule_id, points, why}) and the cap counter increments; reads, writes nothing';

-- The result of a recorded purchase; a retry (same order_ref) must name the
-- same member, amount and currency (WL002 otherwise).
CREATE FUNCTION wallet_internal.purchase_retry(p wallet.purchases, member_ref text, amount numeric, currency text)
    RETURNS wallet.purchase_result
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    stored_ref text;
    res wallet.purchase_result;
BEGIN
    SELECT m.member_ref INTO stored_ref FROM wallet.members m WHERE m.member_id = p.member_id;
    PERFORM wallet_internal.idem_check(p.order_ref, format('purchase %s', p.purchase_id),
                                       jsonb_build_object('member_ref', stored_ref, 'amount', p.amount, 'currency', p.currency),
                                       jsonb_build_object('member_ref', member_ref, 'amount', amount, 'currency', currency));
    res := (p.purchase_id, p.order_ref, p.member_id, p.program_id, p.account_id, p.amount, p.currency, p.occurred_at,
            p.points, p.entry_id, p.rules);
    RETURN res;
END
$$;
COMMENT ON FUNCTION wallet_internal.purchase_retry(wallet.purchases, text, numeric, text) IS 'internal: the result of an order already recorded, after checking the retry names the same member, amount and currency (WL002)';

-- The member (NULL: not known yet) and its time zone, the program earning
-- in the currency (NULL: none) with its rounding, and the member's account in
-- it (NULL: none yet), in one query.
CREATE FUNCTION wallet_internal.purchase_context(merchant_id bigint, member_ref text, currency text,
        OUT member_id bigint, OUT time_zone text, OUT program_id bigint, OUT rounding text, OUT account_id bigint)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    SELECT m.member_id, m.time_zone, x.program_id, x.rounding, y.account_id
      INTO purchase_context.member_id, purchase_context.time_zone, purchase_context.program_id, purchase_context.rounding,
           purchase_context.account_id
      FROM (SELECT) o
      LEFT JOIN wallet.members m ON m.merchant_id = purchase_context.merchant_id AND m.member_ref = purchase_context.member_ref
      LEFT JOIN wallet.programs x ON x.merchant_id = purchase_context.merchant_id AND x.currency = purchase_context.currency
                                 AND x.closed_at IS NULL
      LEFT JOIN wallet.accounts y ON y.program_id = x.program_id AND y.member_ref = purchase_context.member_ref;
END
$$;
COMMENT ON FUNCTION wallet_internal.purchase_context(bigint, text, text) IS 'internal: the member and its time zone, the merchant''s open program earning in the currency with its rounding, and the member''s account in it (each NULL when there is none)';

-- The codes of a checkout, like every text argument: no NULL (22004), no
-- blank or over-long (22023) one (record_purchase and quote_offers).
CREATE FUNCTION wallet_internal.purchase_check_codes(codes text[]) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF array_ndims(codes) > 1 THEN
        RAISE EXCEPTION 'codes must be a one-dimensional array'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The codes of a checkout are listed one after the other.';
    END IF;
    IF EXISTS (SELECT FROM unnest(codes) c WHERE c IS NULL) THEN
        RAISE EXCEPTION 'codes must not contain null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Every element of codes is the text of a marketing code.';
    END IF;
    IF EXISTS (SELECT FROM unnest(codes) c WHERE btrim(c) = '' OR length(c) > 256) THEN
        RAISE EXCEPTION 'codes must not contain a blank code or one longer than 256 characters'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Every element of codes is a non-blank text of at most 256 characters.';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.purchase_check_codes(text[]) IS 'internal: raises 22004 for a NULL element of a checkout''s codes, 22023 for a 2-D array, a blank one or one longer than 256 characters (record_purchase, quote_offers)';

-- The whole of wallet.record_purchase in PL/pgSQL: what its C fast path
-- (src/purchase.c) leaves to it (offers and codes, a new member or account,
-- no program earning in the currency, any argument it would refuse), with
-- the same results and errors.
CREATE FUNCTION wallet_internal.record_purchase_full(merchant_id bigint, member_ref text, order_ref text, amount numeric,
        currency text, occurred_at timestamptz, attributes jsonb, offers bigint[], codes text[], quote_id bigint)
        RETURNS wallet.purchase_result
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    p wallet.purchases;
    member bigint;
    tz text;
    prog bigint;
    rnd text;
    acct bigint;
    a wallet_internal.locked_account;
    due timestamptz;
    e wallet.entries;
    ev record;
    refers boolean;
BEGIN
    PERFORM wallet_internal.purchase_check(merchant_id, member_ref, order_ref, amount, currency, occurred_at, attributes);
    PERFORM wallet_internal.purchase_check_codes(codes);
    IF array_ndims(offers) > 1 THEN
        RAISE EXCEPTION 'offers must be a one-dimensional array'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The offers of a checkout are listed by id, one after the other.';
    END IF;
    -- A retry is found by the insert of the purchase below (ON CONFLICT), not
    -- by a lookup first: retries are rare, a lookup would cost every call.
    -- The usual case in one statement: a known member with an account in the
    -- merchant's open program earning in the currency, locked (what
    -- wallet_internal.lock_account does, but for the idempotency lookup: the
    -- order's unique key stands for it).  The member's postings, counters and
    -- first purchase are decided under this lock.
    SELECT m.member_id, m.time_zone, x.program_id, x.rounding, y.account_id, y.ledger, y.next_event, x.expiry, x.granularity
      INTO member, tz, prog, rnd, acct, a.ledger, due, a.expiry, a.granularity
      FROM wallet.members m
      JOIN wallet.programs x ON x.merchant_id = m.merchant_id AND x.currency = record_purchase_full.currency AND x.closed_at IS NULL
      JOIN wallet.accounts y ON y.program_id = x.program_id AND y.member_ref = m.member_ref
     WHERE m.merchant_id = record_purchase_full.merchant_id AND m.member_ref = record_purchase_full.member_ref
       FOR NO KEY UPDATE OF y;
    IF FOUND THEN
        a.program_id := prog;
        a.closed := false;
        a.at := clock_timestamp();
        IF due <= a.at THEN
            PERFORM wallet_internal.settle_account(acct, a.at, a.at);
            SELECT y.ledger INTO a.ledger FROM wallet.accounts y WHERE y.account_id = acct;
        END IF;
    ELSE
        -- a new member, a member without an account yet, or no program
        -- earning in the currency.  The member first, locked (member_ensure):
        -- an erasure in flight is waited for, and the reference then names a
        -- new member; the context is read after it, so that its account is
        -- that member's, not the erased one's
        member := wallet_internal.member_ensure(merchant_id, member_ref);
        SELECT * INTO member, tz, prog, rnd, acct FROM wallet_internal.purchase_context(merchant_id, member_ref, currency);
        IF prog IS NOT NULL THEN
            IF acct IS NULL THEN
                acct := wallet.open_account(prog, member_ref);
            END IF;
            a := wallet_internal.lock_account(acct);
        END IF;
    END IF;
    -- the member's tier and first purchase are read after the lock: a posting
    -- that changed the tier, a purchase of the member, have committed by now
    ev := wallet_internal.purchase_points(merchant_id, prog, rnd, member, acct, tz, amount, currency, occurred_at, attributes);
    -- the purchase first (tiers read spend in the window), with the entry's id to come
    -- (a merchant with a referral program: the entry's id is drawn after the
    -- insert, whose trigger may post a reward to the same account first)
    refers := wallet_internal.merchant_refers(merchant_id);
    INSERT INTO wallet.purchases (merchant_id, member_id, order_ref, amount, currency, occurred_at, attributes,
                                  program_id, account_id, points, entry_id, rules)
    VALUES (merchant_id, member, order_ref, amount, currency, occurred_at, attributes, prog, acct, ev.points,
            CASE WHEN ev.points > 0 AND NOT refers THEN nextval('wallet.entries_entry_id_seq') END, ev.rules)
    ON CONFLICT ON CONSTRAINT purchases_merchant_id_order_ref_key DO NOTHING
    RETURNING * INTO p;
    IF p.purchase_id IS NULL THEN
        -- a retry, or a concurrent call recorded the order first (committed by now)
        SELECT * INTO p FROM wallet.purchases x WHERE x.merchant_id = record_purchase_full.merchant_id AND x.order_ref = record_purchase_full.order_ref;
        RETURN wallet_internal.purchase_retry(p, member_ref, amount, currency);
    END IF;
    IF ev.counters <> '[]' THEN
        INSERT INTO wallet.earning_counters AS c (merchant_id, member_id, rule_id, day, points)
        SELECT record_purchase_full.merchant_id, member, x.rule_id, x.day, x.points
          FROM jsonb_to_recordset(ev.counters) AS x(rule_id bigint, day date, points bigint)
        ON CONFLICT ON CONSTRAINT earning_counters_key DO UPDATE SET points = c.points + excluded.points;
    END IF;
    IF p.points > 0 THEN
        -- what wallet_internal.post_once does for a posting without a prior entry
        IF a.closed THEN
            PERFORM wallet_internal.program_closed(prog);
        END IF;
        IF refers THEN
            -- the referee's reward (wallet_internal.referral_purchase) may
            -- have been posted to this account: the purchase's entry follows
            -- it in the journal, posted on the ledger that holds it
            SELECT y.ledger INTO a.ledger FROM wallet.accounts y WHERE y.account_id = acct;
            a.at := greatest(a.at, clock_timestamp());
            p.entry_id := nextval('wallet.entries_entry_id_seq');
            UPDATE wallet.purchases x SET entry_id = p.entry_id WHERE x.purchase_id = p.purchase_id;
        END IF;
        e.entry_id := p.entry_id;
        e.account_id := acct;
        e.kind := 'accrue';
        e.idempotency_key := 'purchase:' || order_ref;
        e.reason := 'purchase';
        e.reference := order_ref;
        e.created_at := a.at;
        e.points := p.points;
        e.expires_at := wallet.policy_expiry(a.at, a.expiry, a.granularity);
        PERFORM wallet_internal.post_entry(a.ledger, e);
    END IF;
    -- the offers named (issue 11: offers.sql), after the purchase's own posting
    IF offers IS NOT NULL OR quote_id IS NOT NULL THEN
        PERFORM wallet_internal.offers_consume(p, member_ref, tz, offers, codes, quote_id);
    END IF;
    RETURN (p.purchase_id, p.order_ref, p.member_id, p.program_id, p.account_id, p.amount, p.currency, p.occurred_at,
            p.points, p.entry_id, p.rules)::wallet.purchase_result;
END
$$;
COMMENT ON FUNCTION wallet_internal.record_purchase_full(bigint, text, text, numeric, text, timestamptz, jsonb, bigint[], text[], bigint) IS 'internal: wallet.record_purchase in PL/pgSQL, for every case its C fast path leaves to it (offers, codes, quotes, a new member or account, no earning program, invalid arguments)';

CREATE FUNCTION wallet.record_purchase(merchant_id bigint, member_ref text, order_ref text, amount numeric, currency text,
        occurred_at timestamptz DEFAULT now(), attributes jsonb DEFAULT '{}',
        offers bigint[] DEFAULT NULL, codes text[] DEFAULT NULL, quote_id bigint DEFAULT NULL) RETURNS wallet.purchase_result
    AS 'MODULE_PATHNAME', 'record_purchase' LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION wallet.record_purchase(bigint, text, text, numeric, text, timestamptz, jsonb, bigint[], text[], bigint) IS 'records a purchase at checkout (creating the member and its account as needed), applies the earning rules of the merchant''s program in that currency, posts the points (accrue entry, reference order_ref) and returns the points and the rules that fired; consumes the offers named (offers, or the quote_id of wallet.quote_offers) with the codes given, recording each in wallet.purchase_offers; idempotent on (merchant, order_ref): another member, amount or currency is WL002';

CREATE FUNCTION wallet.preview_purchase(merchant_id bigint, member_ref text, order_ref text, amount numeric, currency text,
        occurred_at timestamptz DEFAULT now(), attributes jsonb DEFAULT '{}') RETURNS wallet.purchase_result
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    p wallet.purchases;
    member bigint;
    tz text;
    prog bigint;
    rnd text;
    acct bigint;
    ev record;
BEGIN
    PERFORM wallet_internal.purchase_check(merchant_id, member_ref, order_ref, amount, currency, occurred_at, attributes);
    SELECT * INTO p FROM wallet.purchases x WHERE x.merchant_id = preview_purchase.merchant_id AND x.order_ref = preview_purchase.order_ref;
    IF FOUND THEN
        RETURN wallet_internal.purchase_retry(p, member_ref, amount, currency);   -- what record_purchase would return
    END IF;
    SELECT * INTO member, tz, prog, rnd, acct FROM wallet_internal.purchase_context(merchant_id, member_ref, currency);
    ev := wallet_internal.purchase_points(merchant_id, prog, rnd, member, acct, tz, amount, currency, occurred_at, attributes);
    RETURN (NULL, order_ref, member, prog, acct, amount, currency, occurred_at, ev.points, NULL, ev.rules)::wallet.purchase_result;
END
$$;
COMMENT ON FUNCTION wallet.preview_purchase(bigint, text, text, numeric, text, timestamptz, jsonb) IS 'what wallet.record_purchase would earn for the purchase ("you will earn 240 points"), posting and recording nothing; an order already recorded returns its result';

------------------------------------------------------------------------------
-- Refunds
------------------------------------------------------------------------------

CREATE FUNCTION wallet_internal.refund_retry(f wallet.refunds, order_ref text, amount numeric) RETURNS wallet.refund_result
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    stored_order text;
    res wallet.refund_result;
BEGIN
    SELECT p.order_ref INTO stored_order FROM wallet.purchases p WHERE p.purchase_id = f.purchase_id;
    PERFORM wallet_internal.idem_check(f.refund_ref, format('refund %s', f.refund_id),
                                       jsonb_build_object('order_ref', stored_order, 'amount', f.amount),
                                       jsonb_build_object('order_ref', order_ref, 'amount', amount));
    res := (f.refund_id, f.purchase_id, stored_order, f.refund_ref, f.amount, f.points, f.entry_id);
    RETURN res;
END
$$;
COMMENT ON FUNCTION wallet_internal.refund_retry(wallet.refunds, text, numeric) IS 'internal: the result of a refund already recorded, after checking the retry names the same order and amount (WL002)';

CREATE FUNCTION wallet.record_refund(merchant_id bigint, order_ref text, amount numeric, refund_ref text) RETURNS wallet.refund_result
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    p wallet.purchases;
    f wallet.refunds;
    a wallet_internal.locked_account;
    e wallet.entries;
    rnd text;
    debt boolean;
    target numeric;
    due bigint := 0;
    taken bigint := 0;
BEGIN
    PERFORM wallet_internal.check_merchant(merchant_id);
    IF order_ref IS NULL OR amount IS NULL OR refund_ref IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN order_ref IS NULL THEN 'order_ref' WHEN amount IS NULL THEN 'amount' ELSE 'refund_ref' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A refund names the order, the amount refunded and the merchant''s own refund reference.';
    END IF;
    -- (an order reference over the bound is refused as record_purchase
    -- refuses it, not looked up as an unknown purchase)
    IF btrim(order_ref) = '' OR length(order_ref) > 200 OR btrim(refund_ref) = '' OR length(refund_ref) > 200 THEN
        RAISE EXCEPTION '% must not be %',
                         CASE WHEN btrim(order_ref) = '' OR length(order_ref) > 200 THEN 'order reference' ELSE 'refund reference' END,
                         CASE WHEN btrim(order_ref) = '' OR (length(order_ref) <= 200 AND btrim(refund_ref) = '') THEN 'blank'
                              ELSE 'longer than 200 characters' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Order and refund references are non-blank texts of at most 200 characters.';
    END IF;
    -- the bound of a purchase's amount (purchase_check): NaN, which numeric
    -- compares above every number, and Infinity are over it
    IF amount <= 0 OR amount > 1e15 THEN
        RAISE EXCEPTION 'invalid refund amount'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A refund amount is positive and at most 10^15.';
    END IF;
    SELECT * INTO f FROM wallet.refunds x WHERE x.merchant_id = record_refund.merchant_id AND x.refund_ref = record_refund.refund_ref;
    IF FOUND THEN
        RETURN wallet_internal.refund_retry(f, order_ref, amount);
    END IF;
    SELECT * INTO p FROM wallet.purchases x WHERE x.merchant_id = record_refund.merchant_id AND x.order_ref = record_refund.order_ref;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown purchase'
            USING ERRCODE = 'WL500', DETAIL = format('Merchant %s recorded no purchase with order reference "%s".', merchant_id, left(order_ref, 200));
    END IF;
    -- the account first (as record_purchase), then the purchase: refunds of an order take turns
    IF p.account_id IS NOT NULL THEN
        a := wallet_internal.lock_account(p.account_id);
    END IF;
    SELECT * INTO p FROM wallet.purchases x WHERE x.purchase_id = p.purchase_id FOR UPDATE;
    SELECT * INTO f FROM wallet.refunds x WHERE x.merchant_id = record_refund.merchant_id AND x.refund_ref = record_refund.refund_ref;
    IF FOUND THEN
        RETURN wallet_internal.refund_retry(f, order_ref, amount);   -- a concurrent retry came first
    END IF;
    IF amount > p.amount - p.refunded_amount THEN
        RAISE EXCEPTION 'refund exceeds purchase'
            USING ERRCODE = 'WL501',
                  DETAIL = format('Order "%s" was %s %s, of which %s is refunded; %s more cannot be.', left(order_ref, 200),
                                  p.amount, p.currency, p.refunded_amount, amount);
    END IF;
    IF p.entry_id IS NOT NULL
       AND NOT EXISTS (SELECT FROM wallet.entries x WHERE x.reverses = p.entry_id AND x.kind = 'reverse') THEN
        SELECT x.rounding, x.refund_debt INTO rnd, debt FROM wallet.programs x WHERE x.program_id = p.program_id;
        -- in proportion of everything refunded so far, so that a full refund takes back exactly what was earned
        target := p.points * (p.refunded_amount + amount) / p.amount;
        due := CASE rnd WHEN 'ceiling' THEN ceil(target) WHEN 'nearest' THEN round(target) ELSE floor(target) END - p.refunded_points;
        due := least(greatest(due, 0), p.points - p.refunded_points);
    END IF;
    f.entry_id := NULL;
    IF due > 0 THEN
        e.account_id := p.account_id;
        e.kind := 'refund';
        e.idempotency_key := 'refund:' || refund_ref;
        e.reason := 'refund';
        e.reference := p.order_ref;
        e.reverses := p.entry_id;
        e.created_at := a.at;
        e.points := due;
        e.policy := CASE WHEN debt THEN 'unlimited' ELSE 'within_balance' END;
        -- refunds must work after a program closed
        e := wallet_internal.post_once(a, e, check_closed => false);
        taken := -e.amount;
        f.entry_id := e.entry_id;
    END IF;
    INSERT INTO wallet.refunds (merchant_id, member_id, purchase_id, refund_ref, amount, points, entry_id)
    VALUES (merchant_id, p.member_id, p.purchase_id, refund_ref, amount, taken, f.entry_id)
    RETURNING * INTO f;
    UPDATE wallet.purchases x SET refunded_amount = x.refunded_amount + record_refund.amount, refunded_points = x.refunded_points + taken
     WHERE x.purchase_id = p.purchase_id;
    RETURN (f.refund_id, f.purchase_id, p.order_ref, f.refund_ref, f.amount, f.points, f.entry_id)::wallet.refund_result;
EXCEPTION WHEN unique_violation THEN
    -- the same refund_ref for another order, recorded concurrently
    SELECT * INTO f FROM wallet.refunds x WHERE x.merchant_id = record_refund.merchant_id AND x.refund_ref = record_refund.refund_ref;
    IF NOT FOUND THEN
        RAISE;
    END IF;
    RETURN wallet_internal.refund_retry(f, order_ref, amount);
END
$$;
COMMENT ON FUNCTION wallet.record_refund(bigint, text, numeric, text) IS 'records a full or partial refund of an order and takes back the points it earned in proportion (within the balance, or into debt when the program has refund_debt), never more in total than the order earned; idempotent on (merchant, refund_ref)';

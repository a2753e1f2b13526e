
-- ======================================================================
-- Campaign audience and holdout, RFM segments, feedback and the measured
-- effect of a campaign (issue 11).  README "Campaigns".
--
-- A campaign's audience is everyone, the members of a tier or higher, RFM
-- segments (snapshotted when set) or a list; inside it a holdout (control
-- group) of a set percentage is chosen per (campaign, member) by a keyed
-- hash, so the same member always falls in the same group.  The report
-- compares target and control from wallet.purchases (net of refunds).
-- ======================================================================

------------------------------------------------------------------------------
-- Audience and holdout: columns of the campaign (no parallel concept)
------------------------------------------------------------------------------

ALTER TABLE wallet.campaigns ADD COLUMN audience text NOT NULL DEFAULT 'everyone'
    CHECK (audience IN ('everyone', 'tiers', 'segment', 'list'));
ALTER TABLE wallet.campaigns ADD COLUMN audience_program_id bigint REFERENCES wallet.programs;
ALTER TABLE wallet.campaigns ADD COLUMN audience_min_rank int CHECK (audience_min_rank > 0);
ALTER TABLE wallet.campaigns ADD COLUMN audience_segments text[];
ALTER TABLE wallet.campaigns ADD COLUMN holdout_percent numeric NOT NULL DEFAULT 0
    CHECK (holdout_percent >= 0 AND holdout_percent < 100);
ALTER TABLE wallet.campaigns ADD COLUMN holdout_key bytea NOT NULL DEFAULT pg_catalog.uuid_send(pg_catalog.gen_random_uuid())
    CHECK (length(holdout_key) >= 16);
ALTER TABLE wallet.campaigns ADD COLUMN redemption_value numeric CHECK (redemption_value >= 0);
ALTER TABLE wallet.campaigns ADD COLUMN audience_set_at timestamptz;
ALTER TABLE wallet.campaigns ADD CONSTRAINT campaigns_audience_tiers_check
    CHECK ((audience = 'tiers') = (audience_program_id IS NOT NULL AND audience_min_rank IS NOT NULL)
           AND (audience = 'segment') = (audience_segments IS NOT NULL));
COMMENT ON COLUMN wallet.campaigns.audience IS 'who the campaign is for: everyone (every member of the merchant), tiers (rank audience_min_rank or higher in audience_program_id), segment (the members of audience_segments when set, see wallet.campaign_audience_members) or list (wallet.campaign_audience_members)';
COMMENT ON COLUMN wallet.campaigns.audience_program_id IS 'audience tiers: the program whose tiers count';
COMMENT ON COLUMN wallet.campaigns.audience_min_rank IS 'audience tiers: the lowest tier rank in the audience';
COMMENT ON COLUMN wallet.campaigns.audience_segments IS 'audience segment: the RFM segment names (wallet.rfm_segments) the audience was taken from';
COMMENT ON COLUMN wallet.campaigns.holdout_percent IS 'share of the audience, in percent (0 to under 100), held out as the control group that never gets the campaign';
COMMENT ON COLUMN wallet.campaigns.holdout_key IS 'random key of the hash that puts each member in the target or the control group (wallet.campaign_group): fixed, so a member''s group never changes, and drawn by the database, so no member can predict or choose it (the roles acting for the merchant can read it, as they can read every member''s group; the app must not pass it on to members)';
COMMENT ON COLUMN wallet.campaigns.audience_set_at IS 'when wallet.set_campaign_audience last set the audience and holdout (NULL = never: everyone, no holdout); once set, the holdout is fixed from the start on';
COMMENT ON COLUMN wallet.campaigns.redemption_value IS 'money each redemption of the campaign''s codes costs the merchant, for the campaign''s cost and ROI (e.g. a voucher''s face value); NULL = none counted';

-- The members of a list audience, or of the segments of a segment audience
-- as they were when it was set: membership must not change under the
-- campaign's feet as quintiles shift, or the groups would not compare.
CREATE TABLE wallet.campaign_audience_members (
    campaign_id bigint NOT NULL REFERENCES wallet.campaigns,
    member_id   bigint NOT NULL REFERENCES wallet.members,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, member_id)
);
COMMENT ON TABLE wallet.campaign_audience_members IS 'members of a campaign''s list or segment audience (wallet.set_campaign_audience replaces them)';
COMMENT ON COLUMN wallet.campaign_audience_members.campaign_id IS 'the campaign';
COMMENT ON COLUMN wallet.campaign_audience_members.member_id IS 'a member in its audience (wallet.members)';
COMMENT ON COLUMN wallet.campaign_audience_members.merchant_id IS 'merchant of the campaign: the key to distribute by';
COMMENT ON COLUMN wallet.campaign_audience_members.added_at IS 'when the audience was set';
SELECT pg_catalog.pg_extension_config_dump('wallet.campaign_audience_members', '');
ALTER TABLE wallet.campaign_audience_members ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.campaign_audience_members USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.campaign_audience_members IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

------------------------------------------------------------------------------
-- Feedback and costs
------------------------------------------------------------------------------

CREATE TABLE wallet.campaign_feedback (
    feedback_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id     bigint NOT NULL REFERENCES wallet.merchants,
    campaign_id     bigint NOT NULL REFERENCES wallet.campaigns,
    member_id       bigint NOT NULL REFERENCES wallet.members,
    score           int CHECK (score BETWEEN 1 AND 5),
    category        text NOT NULL CHECK (category ~ '^[a-z][a-z0-9_]{0,62}$'),
    comment         text CHECK (length(comment) <= 4000),
    idempotency_key text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (merchant_id, idempotency_key)
);
CREATE INDEX campaign_feedback_campaign_idx ON wallet.campaign_feedback (campaign_id, created_at);
COMMENT ON TABLE wallet.campaign_feedback IS 'members'' feedback on campaigns (wallet.record_feedback): a score, a category (complaint counts as a complaint) and a comment';
COMMENT ON COLUMN wallet.campaign_feedback.feedback_id IS 'feedback id';
COMMENT ON COLUMN wallet.campaign_feedback.merchant_id IS 'merchant of the campaign: the key to distribute by';
COMMENT ON COLUMN wallet.campaign_feedback.campaign_id IS 'the campaign';
COMMENT ON COLUMN wallet.campaign_feedback.member_id IS 'the member who gave it (wallet.members)';
COMMENT ON COLUMN wallet.campaign_feedback.score IS 'satisfaction from 1 (worst) to 5 (best); NULL = none given';
COMMENT ON COLUMN wallet.campaign_feedback.category IS 'what it is: a lower-case word (praise, question, suggestion, complaint, ...); complaint is counted in the complaint rate';
COMMENT ON COLUMN wallet.campaign_feedback.comment IS 'the member''s own words (personal data: cleared by wallet.forget_member); NULL = none';
COMMENT ON COLUMN wallet.campaign_feedback.idempotency_key IS 'the app''s key for the call, unique per merchant: a retry returns the first feedback; NULL = none';
COMMENT ON COLUMN wallet.campaign_feedback.created_at IS 'when it was recorded';
SELECT pg_catalog.pg_extension_config_dump('wallet.campaign_feedback', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.campaign_feedback', 'feedback_id'), '');
ALTER TABLE wallet.campaign_feedback ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.campaign_feedback USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.campaign_feedback IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

-- What a campaign cost beyond points and code redemptions (which the report
-- reads from purchases and redemptions): the discounts of its offers, written
-- by the checkout that applies them, and what else the merchant books on it.
CREATE TABLE wallet.campaign_costs (
    cost_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    campaign_id bigint NOT NULL REFERENCES wallet.campaigns,
    kind        text NOT NULL CHECK (kind IN ('discount', 'cashback', 'other')),
    amount      numeric NOT NULL,
    currency    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    member_id   bigint REFERENCES wallet.members,
    purchase_id bigint REFERENCES wallet.purchases,
    occurred_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX campaign_costs_campaign_idx ON wallet.campaign_costs (campaign_id, occurred_at);
COMMENT ON TABLE wallet.campaign_costs IS 'money a campaign cost besides points (from purchases.rules) and code redemptions (campaigns.redemption_value): offer discounts applied at checkout and other costs; summed by wallet.campaign_report';
COMMENT ON COLUMN wallet.campaign_costs.cost_id IS 'cost id';
COMMENT ON COLUMN wallet.campaign_costs.merchant_id IS 'merchant of the campaign: the key to distribute by';
COMMENT ON COLUMN wallet.campaign_costs.campaign_id IS 'the campaign';
COMMENT ON COLUMN wallet.campaign_costs.kind IS 'discount (an offer''s discount on a purchase), cashback (paid out in money) or other';
COMMENT ON COLUMN wallet.campaign_costs.amount IS 'money, in currency; negative takes back an earlier cost (a refunded discounted purchase)';
COMMENT ON COLUMN wallet.campaign_costs.currency IS 'ISO 4217 code of the amount';
COMMENT ON COLUMN wallet.campaign_costs.member_id IS 'the member who got it (counts as taking part in the campaign); NULL = none';
COMMENT ON COLUMN wallet.campaign_costs.purchase_id IS 'the purchase it was granted on; NULL = none';
COMMENT ON COLUMN wallet.campaign_costs.occurred_at IS 'when it was granted';
SELECT pg_catalog.pg_extension_config_dump('wallet.campaign_costs', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.campaign_costs', 'cost_id'), '');
ALTER TABLE wallet.campaign_costs ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.campaign_costs USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.campaign_costs IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

------------------------------------------------------------------------------
-- RFM segments
------------------------------------------------------------------------------

-- R is the recency quintile, FM the rounded-up mean of the frequency and
-- monetary quintiles: ceil((F + M) / 2).  Every one of the 25 cells has
-- exactly one segment.
CREATE VIEW wallet.rfm_segments (r_score, fm_score, segment) AS VALUES
    (5, 5, 'champions'), (5, 4, 'champions'), (4, 5, 'champions'), (4, 4, 'champions'),
    (3, 5, 'loyal'), (3, 4, 'loyal'), (3, 3, 'loyal'),
    (5, 3, 'potential'), (5, 2, 'potential'), (4, 3, 'potential'), (4, 2, 'potential'), (4, 1, 'potential'),
    (5, 1, 'new'),
    (2, 4, 'at_risk'), (2, 3, 'at_risk'), (1, 4, 'at_risk'), (1, 3, 'at_risk'),
    (2, 5, 'cannot_lose'), (1, 5, 'cannot_lose'),
    (3, 2, 'hibernating'), (3, 1, 'hibernating'), (2, 2, 'hibernating'), (2, 1, 'hibernating'),
    (1, 2, 'lost'), (1, 1, 'lost');
COMMENT ON VIEW wallet.rfm_segments IS 'the named RFM segment of each recency score and combined frequency-monetary score (ceil((F + M) / 2)), used by wallet.rfm';
COMMENT ON COLUMN wallet.rfm_segments.r_score IS 'recency quintile, 5 = bought most recently';
COMMENT ON COLUMN wallet.rfm_segments.fm_score IS 'ceil((frequency quintile + monetary quintile) / 2), 5 = buys most often and most';
COMMENT ON COLUMN wallet.rfm_segments.segment IS 'segment name: champions, loyal, potential, new, at_risk, cannot_lose, hibernating, lost';

-- The scores, unchecked (callers check the merchant).  A purchase counts net
-- of the refunds recorded up to as_of; one refunded in full does not count.
-- Quintile = 1 + floor(5 * percent_rank), at most 5: ties share the lower.
CREATE FUNCTION wallet_internal.rfm_scores(merchant_id bigint, as_of timestamptz, currency text)
    RETURNS TABLE (member_id bigint, last_purchase_at timestamptz, frequency bigint, monetary numeric,
                   r_score int, f_score int, m_score int, segment text)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN QUERY
    WITH refunded AS (
        SELECT f.purchase_id, sum(f.amount) AS amount
          FROM wallet.refunds f
         WHERE f.merchant_id = rfm_scores.merchant_id AND f.created_at <= rfm_scores.as_of
         GROUP BY f.purchase_id
    ), net AS (
        SELECT p.member_id, p.occurred_at, p.amount - coalesce(x.amount, 0) AS amount
          FROM wallet.purchases p LEFT JOIN refunded x ON x.purchase_id = p.purchase_id
         WHERE p.merchant_id = rfm_scores.merchant_id AND p.occurred_at <= rfm_scores.as_of
           AND (rfm_scores.currency IS NULL OR p.currency = rfm_scores.currency)
    ), per_member AS (
        SELECT n.member_id, max(n.occurred_at) AS last_at, count(*) AS freq, sum(n.amount) AS money
          FROM net n WHERE n.amount > 0
         GROUP BY n.member_id
    ), scored AS (
        SELECT pm.*,
               LEAST(5, 1 + floor(5 * percent_rank() OVER (ORDER BY pm.last_at)))::int AS r,
               LEAST(5, 1 + floor(5 * percent_rank() OVER (ORDER BY pm.freq)))::int AS f,
               LEAST(5, 1 + floor(5 * percent_rank() OVER (ORDER BY pm.money)))::int AS m
          FROM per_member pm
    )
    SELECT s.member_id, s.last_at, s.freq, s.money, s.r, s.f, s.m, g.segment
      FROM scored s JOIN wallet.rfm_segments g ON g.r_score = s.r AND g.fm_score = (s.f + s.m + 1) / 2;
END
$$;
COMMENT ON FUNCTION wallet_internal.rfm_scores(bigint, timestamptz, text) IS 'internal: RFM quintiles and segment of every member of the merchant with a purchase (net of refunds) up to as_of, without checks';

CREATE FUNCTION wallet_internal.rfm_args(merchant_id bigint, as_of timestamptz, currency text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.check_merchant(merchant_id);
    IF as_of IS NULL THEN
        RAISE EXCEPTION 'as_of must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Scores are computed from the purchases up to a point in time.';
    END IF;
    IF NOT isfinite(as_of) THEN
        RAISE EXCEPTION 'as_of must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Recency is counted in days up to as_of.';
    END IF;
    IF currency IS NOT NULL AND currency !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'invalid currency "%"', left(currency, 16)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A currency is an ISO 4217 code of three capital letters, such as CNY.';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.rfm_args(bigint, timestamptz, text) IS 'internal: checks the arguments of wallet.rfm (22004, 22023 for an infinite as_of or a malformed currency, WL102)';

CREATE FUNCTION wallet.rfm(merchant_id bigint, as_of timestamptz DEFAULT now(), currency text DEFAULT NULL)
    RETURNS TABLE (member_id bigint, member_ref text, last_purchase_at timestamptz, recency_days numeric,
                   frequency bigint, monetary numeric, r_score int, f_score int, m_score int, segment text)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.rfm_args(merchant_id, as_of, currency);
    RETURN QUERY
    SELECT s.member_id, m.member_ref, s.last_purchase_at,
           round((extract(epoch FROM rfm.as_of - s.last_purchase_at) / 86400)::numeric, 3),
           s.frequency, s.monetary, s.r_score, s.f_score, s.m_score, s.segment
      FROM wallet_internal.rfm_scores(rfm.merchant_id, rfm.as_of, rfm.currency) s
      JOIN wallet.members m ON m.member_id = s.member_id
     ORDER BY s.member_id;
END
$$;
COMMENT ON FUNCTION wallet.rfm(bigint, timestamptz, text) IS 'recency, frequency and monetary quintiles (1 to 5) and the named segment (wallet.rfm_segments) of every member of the merchant with purchases up to as_of, net of refunds; currency NULL = every currency';

------------------------------------------------------------------------------
-- Groups
------------------------------------------------------------------------------

-- Where a member falls in [0, 100): the first 56 bits of
-- sha256(holdout_key || campaign id || member id) as a fraction of 2^56.
-- sha256 under a secret random key is a keyed hash (the input has a fixed
-- length, so no extension attack applies); uniform, and the same on every
-- call, in every session and after every restart.
CREATE FUNCTION wallet_internal.holdout_bucket(holdout_key bytea, campaign_id bigint, member_id bigint) RETURNS numeric
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN ('x' || encode(substr(sha256(holdout_key || int8send(campaign_id) || int8send(member_id)), 1, 7), 'hex'))::bit(56)::bigint
           * 100::numeric / 72057594037927936;
END
$$;
COMMENT ON FUNCTION wallet_internal.holdout_bucket(bytea, bigint, bigint) IS 'internal: the member''s place in [0, 100) for the campaign''s holdout, from a keyed hash of campaign and member id';

-- The fast variant for other areas (push audience send, offers): the group
-- of a member, by ids, without argument checks.
CREATE FUNCTION wallet_internal.campaign_group(campaign_id bigint, member_id bigint) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    c record;
    inside boolean;
BEGIN
    SELECT k.merchant_id, k.audience, k.audience_program_id, k.audience_min_rank, k.holdout_percent, k.holdout_key INTO c
      FROM wallet.campaigns k WHERE k.campaign_id = campaign_group.campaign_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF c.audience = 'everyone' THEN
        inside := EXISTS (SELECT FROM wallet.members m WHERE m.member_id = campaign_group.member_id AND m.merchant_id = c.merchant_id);
    ELSIF c.audience = 'tiers' THEN
        inside := EXISTS (SELECT FROM wallet.members m
                            JOIN wallet.accounts a ON a.program_id = c.audience_program_id AND a.member_ref = m.member_ref
                            JOIN wallet.account_tiers t ON t.account_id = a.account_id
                           WHERE m.member_id = campaign_group.member_id AND m.merchant_id = c.merchant_id
                             AND t.rank >= c.audience_min_rank);
    ELSE
        inside := EXISTS (SELECT FROM wallet.campaign_audience_members x
                           WHERE x.campaign_id = campaign_group.campaign_id AND x.member_id = campaign_group.member_id);
    END IF;
    IF NOT inside THEN
        RETURN 'outside';
    END IF;
    RETURN CASE WHEN wallet_internal.holdout_bucket(c.holdout_key, campaign_group.campaign_id, campaign_group.member_id) < c.holdout_percent
                THEN 'control' ELSE 'target' END;
END
$$;
COMMENT ON FUNCTION wallet_internal.campaign_group(bigint, bigint) IS 'internal (fast, unchecked): target, control or outside for a member id; NULL for no campaign';

-- The whole audience with its groups, set-based (the report, a send to the
-- campaign's audience): every member inside, target or control.
CREATE FUNCTION wallet_internal.campaign_members(campaign_id bigint)
    RETURNS TABLE (member_id bigint, grp text)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    c record;
BEGIN
    SELECT k.merchant_id, k.audience, k.audience_program_id, k.audience_min_rank, k.holdout_percent, k.holdout_key INTO c
      FROM wallet.campaigns k WHERE k.campaign_id = campaign_members.campaign_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- holdout_bucket's expression, inline: a call per member (a function
    -- with a SET clause) would cost more than the hash
    RETURN QUERY
    SELECT i.member_id,
           CASE WHEN ('x' || encode(substr(sha256(c.holdout_key || int8send(campaign_members.campaign_id) || int8send(i.member_id)), 1, 7), 'hex'))::bit(56)::bigint
                     < c.holdout_percent * 720575940379279.36
                THEN 'control' ELSE 'target' END
      FROM (SELECT m.member_id FROM wallet.members m WHERE c.audience = 'everyone' AND m.merchant_id = c.merchant_id
            UNION ALL
            SELECT DISTINCT t.member_id FROM wallet.account_tiers t
             WHERE c.audience = 'tiers' AND t.program_id = c.audience_program_id AND t.rank >= c.audience_min_rank
            UNION ALL
            SELECT x.member_id FROM wallet.campaign_audience_members x
             WHERE c.audience IN ('segment', 'list') AND x.campaign_id = campaign_members.campaign_id) i;
END
$$;
COMMENT ON FUNCTION wallet_internal.campaign_members(bigint) IS 'internal (unchecked): every member of the campaign''s audience with its group, target or control';

-- The campaign the caller acts for, locked or not, else WL101.
CREATE FUNCTION wallet_internal.campaign_seen(campaign_id bigint) RETURNS wallet.campaigns
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    c wallet.campaigns;
BEGIN
    IF campaign_id IS NULL THEN
        RAISE EXCEPTION 'campaign_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A campaign is named by its id.';
    END IF;
    SELECT * INTO c FROM wallet.campaigns k WHERE k.campaign_id = campaign_seen.campaign_id AND wallet.acts_for(k.merchant_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'WL101', DETAIL = format('There is no campaign %s of a merchant the caller acts for.', campaign_id),
                  HINT = 'Create it with wallet.create_campaign.';
    END IF;
    RETURN c;
END
$$;
COMMENT ON FUNCTION wallet_internal.campaign_seen(bigint) IS 'internal: the campaign row when it exists and the caller acts for its merchant; 22004 for NULL, WL101 otherwise';

CREATE FUNCTION wallet.campaign_group(campaign_id bigint, member_ref text) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    c wallet.campaigns;
    id bigint;
BEGIN
    c := wallet_internal.campaign_seen(campaign_id);
    PERFORM wallet_internal.member_check(c.merchant_id, member_ref);
    SELECT m.member_id INTO id FROM wallet.members m WHERE m.merchant_id = c.merchant_id AND m.member_ref = campaign_group.member_ref;
    IF id IS NULL THEN
        RETURN 'outside';   -- not a member (yet): in no audience
    END IF;
    RETURN wallet_internal.campaign_group(campaign_id, id);
END
$$;
COMMENT ON FUNCTION wallet.campaign_group(bigint, text) IS 'target (gets the campaign), control (held out, never gets it) or outside (not in the audience) for a member; the same answer on every call: the holdout is a keyed hash of campaign and member';

CREATE FUNCTION wallet.set_campaign_audience(campaign_id bigint, audience text, holdout_percent numeric DEFAULT 0,
        program_id bigint DEFAULT NULL, min_rank int DEFAULT NULL, segments text[] DEFAULT NULL,
        member_refs text[] DEFAULT NULL, as_of timestamptz DEFAULT now())
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    _campaign bigint := campaign_id;
    c wallet.campaigns;
    bad text;
    n bigint;
BEGIN
    c := wallet_internal.campaign_seen(_campaign);
    IF audience IS NULL OR holdout_percent IS NULL OR as_of IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN audience IS NULL THEN 'audience' WHEN holdout_percent IS NULL THEN 'holdout_percent' ELSE 'as_of' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'An audience is everyone, tiers, segment or list, with a holdout percentage (0 for none), taken as of an instant (now by default).';
    END IF;
    IF audience NOT IN ('everyone', 'tiers', 'segment', 'list') THEN
        RAISE EXCEPTION 'unknown audience "%"', left(audience, 32)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An audience is everyone, tiers, segment or list.';
    END IF;
    IF NOT (holdout_percent >= 0 AND holdout_percent < 100) THEN
        RAISE EXCEPTION 'holdout_percent must be at least 0 and under 100'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The holdout is a percentage of the audience; %s is not.', holdout_percent);
    END IF;
    IF (audience <> 'tiers' AND (program_id IS NOT NULL OR min_rank IS NOT NULL))
       OR (audience <> 'segment' AND segments IS NOT NULL) OR (audience <> 'list' AND member_refs IS NOT NULL) THEN
        RAISE EXCEPTION 'arguments do not fit audience %', audience
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'The arguments program_id and min_rank are for audience tiers, segments for audience segment, member_refs for audience list.';
    END IF;
    IF NOT isfinite(as_of) THEN
        RAISE EXCEPTION 'as_of must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A segment audience is taken from the RFM scores at a real instant.';
    END IF;
    -- the campaign row is locked from here: concurrent changes of one audience queue
    SELECT * INTO c FROM wallet.campaigns k WHERE k.campaign_id = _campaign FOR UPDATE;
    -- the first setting may come after create_campaign (whose start defaults
    -- to now); a change after the start would move members between groups
    IF holdout_percent <> c.holdout_percent AND c.starts_at <= now() AND c.audience_set_at IS NOT NULL THEN
        RAISE EXCEPTION 'holdout of campaign % cannot change after it started', _campaign
            USING ERRCODE = 'WL640',
                  DETAIL = format('The campaign started at %s; changing its holdout from %s%% to %s%% would move members between target and control and void the measurement.',
                                  c.starts_at, c.holdout_percent, holdout_percent),
                  HINT = 'Create a new campaign for a different holdout.';
    END IF;
    IF audience = 'tiers' THEN
        IF program_id IS NULL OR min_rank IS NULL THEN
            RAISE EXCEPTION '% must not be null', CASE WHEN program_id IS NULL THEN 'program_id' ELSE 'min_rank' END
                USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A tier audience is the members of a program''s tier of min_rank or higher.';
        END IF;
        IF min_rank < 1 THEN
            RAISE EXCEPTION 'min_rank must be positive'
                USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Tier ranks start at 1.';
        END IF;
        IF NOT EXISTS (SELECT FROM wallet.programs p WHERE p.program_id = set_campaign_audience.program_id AND p.merchant_id = c.merchant_id) THEN
            RAISE EXCEPTION 'unknown program'
                USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
        END IF;
    ELSIF audience = 'segment' THEN
        IF segments IS NULL THEN
            RAISE EXCEPTION 'segments must not be null'
                USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A segment audience names one or more RFM segments.';
        END IF;
        IF array_ndims(segments) > 1 THEN
            RAISE EXCEPTION 'segments must be a one-dimensional array'
                USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A segment audience names one or more RFM segments, one after the other.';
        END IF;
        IF cardinality(segments) = 0 THEN
            RAISE EXCEPTION 'segments must not be empty'
                USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A segment audience names one or more RFM segments.';
        END IF;
        IF array_position(segments, NULL) IS NOT NULL THEN
            RAISE EXCEPTION 'segments must not contain null'
                USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Every element of segments names an RFM segment.';
        END IF;
        SELECT s INTO bad FROM unnest(segments) s WHERE s NOT IN (SELECT g.segment FROM wallet.rfm_segments g) LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'unknown segment "%"', left(bad, 32)
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'Segments are champions, loyal, potential, new, at_risk, cannot_lose, hibernating and lost (wallet.rfm_segments).';
        END IF;
        IF as_of IS NULL THEN
            RAISE EXCEPTION 'as_of must not be null'
                USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A segment audience is taken from the RFM scores at a point in time.';
        END IF;
    ELSIF audience = 'list' THEN
        IF member_refs IS NULL THEN
            RAISE EXCEPTION 'member_refs must not be null'
                USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A list audience names its members.';
        END IF;
        IF array_ndims(member_refs) > 1 THEN
            RAISE EXCEPTION 'member_refs must be a one-dimensional array'
                USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A list audience names its members, one after the other.';
        END IF;
        SELECT r INTO bad FROM unnest(member_refs) r
         WHERE r IS NULL OR btrim(r) = '' OR length(r) > 256 OR r LIKE 'forgotten:%' LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'member reference must be a non-blank text of at most 256 characters'
                USING ERRCODE = CASE WHEN bad IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                      DETAIL = 'Every element of member_refs names a member; "forgotten:" references are the pseudonyms of erased members.';
        END IF;
    END IF;

    UPDATE wallet.campaigns k
       SET audience = set_campaign_audience.audience,
           audience_program_id = set_campaign_audience.program_id, audience_min_rank = set_campaign_audience.min_rank,
           audience_segments = (SELECT array_agg(DISTINCT s ORDER BY s) FROM unnest(set_campaign_audience.segments) s),
           holdout_percent = set_campaign_audience.holdout_percent,
           audience_set_at = now()
     WHERE k.campaign_id = _campaign;
    DELETE FROM wallet.campaign_audience_members x WHERE x.campaign_id = _campaign;
    IF audience = 'segment' THEN
        INSERT INTO wallet.campaign_audience_members (campaign_id, member_id, merchant_id)
        SELECT _campaign, s.member_id, c.merchant_id
          FROM wallet_internal.rfm_scores(c.merchant_id, set_campaign_audience.as_of, NULL) s
         WHERE s.segment = ANY (set_campaign_audience.segments);
    ELSIF audience = 'list' THEN
        -- members named for the first time are created, as issuing them a code would
        INSERT INTO wallet.members (merchant_id, member_ref)
        SELECT DISTINCT c.merchant_id, r FROM unnest(member_refs) r
        ON CONFLICT ON CONSTRAINT members_merchant_id_member_ref_key DO NOTHING;
        INSERT INTO wallet.campaign_audience_members (campaign_id, member_id, merchant_id)
        SELECT DISTINCT _campaign, m.member_id, c.merchant_id
          FROM wallet.members m
         WHERE m.merchant_id = c.merchant_id AND m.member_ref = ANY (set_campaign_audience.member_refs);
    END IF;
    SELECT count(*) INTO n FROM wallet_internal.campaign_members(_campaign);
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet.set_campaign_audience(bigint, text, numeric, bigint, integer, text[], text[], timestamptz) IS 'sets a campaign''s audience (everyone; tiers: program_id and min_rank; segment: RFM segments as of as_of, snapshotted; list: member_refs) and its holdout percentage (a change after the start, once set, is WL640); returns the audience''s size; segments must be a non-empty one-dimensional array without NULL (22023, 22004 for a NULL element), member_refs one-dimensional (22023)';

------------------------------------------------------------------------------
-- Feedback
------------------------------------------------------------------------------

CREATE FUNCTION wallet.record_feedback(campaign_id bigint, member_ref text, score int, category text, comment text,
        idempotency_key text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    c wallet.campaigns;
    mid bigint;
    f wallet.campaign_feedback;
    given jsonb;
BEGIN
    c := wallet_internal.campaign_seen(campaign_id);
    PERFORM wallet_internal.member_check(c.merchant_id, member_ref);
    IF category IS NULL THEN
        RAISE EXCEPTION 'category must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Feedback has a category: praise, question, suggestion, complaint or another lower-case word.';
    END IF;
    IF category !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid category "%"', left(category, 64)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A category is a lower-case word of letters, digits and underscores, at most 63 long.';
    END IF;
    IF score IS NOT NULL AND score NOT BETWEEN 1 AND 5 THEN
        RAISE EXCEPTION 'score must be from 1 to 5'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('A score is 1 (worst) to 5 (best), or NULL for none; %s is not.', score);
    END IF;
    IF length(comment) > 4000 THEN
        RAISE EXCEPTION 'comment must not be longer than 4000 characters'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('This comment has %s characters.', length(comment));
    END IF;
    IF idempotency_key IS NOT NULL AND (btrim(idempotency_key) = '' OR length(idempotency_key) > 256) THEN
        RAISE EXCEPTION 'idempotency key must not be %', CASE WHEN btrim(idempotency_key) = '' THEN 'blank' ELSE 'longer than 256 characters' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An idempotency key is a non-blank text of at most 256 characters, or NULL.';
    END IF;
    mid := wallet_internal.member_ensure(c.merchant_id, member_ref);
    given := jsonb_build_object('campaign_id', campaign_id, 'member_id', mid, 'score', score, 'category', category,
                                'comment', nullif(btrim(comment), ''));
    IF idempotency_key IS NOT NULL THEN
        INSERT INTO wallet.campaign_feedback AS x (merchant_id, campaign_id, member_id, score, category, comment, idempotency_key)
        VALUES (c.merchant_id, campaign_id, mid, score, category, nullif(btrim(comment), ''), idempotency_key)
        ON CONFLICT ON CONSTRAINT campaign_feedback_merchant_id_idempotency_key_key DO NOTHING
        RETURNING x.* INTO f;
        IF f.feedback_id IS NULL THEN
            SELECT * INTO f FROM wallet.campaign_feedback x
             WHERE x.merchant_id = c.merchant_id AND x.idempotency_key = record_feedback.idempotency_key;
            PERFORM wallet_internal.idem_check(idempotency_key, format('feedback %s', f.feedback_id),
                jsonb_build_object('campaign_id', f.campaign_id, 'member_id', f.member_id, 'score', f.score,
                                   'category', f.category, 'comment', f.comment), given);
        END IF;
        RETURN f.feedback_id;
    END IF;
    INSERT INTO wallet.campaign_feedback AS x (merchant_id, campaign_id, member_id, score, category, comment)
    VALUES (c.merchant_id, campaign_id, mid, score, category, nullif(btrim(comment), ''))
    RETURNING x.feedback_id INTO f.feedback_id;
    RETURN f.feedback_id;
END
$$;
COMMENT ON FUNCTION wallet.record_feedback(bigint, text, integer, text, text, text) IS 'records a member''s feedback on a campaign: score 1 to 5 (or NULL), category (complaint counts as a complaint), comment (personal data, erased by forget_member); with an idempotency key a retry returns the first feedback id';

------------------------------------------------------------------------------
-- Measured effect
------------------------------------------------------------------------------

-- The two-sided 95% quantile of Student's t with df degrees of freedom (the
-- Welch interval's multiplier): the table below 30 (df rounded down, so the
-- interval is never too narrow), above it the Cornish-Fisher expansion of
-- the t quantile around the normal one (error under 1e-5 from df 30 on).
CREATE FUNCTION wallet_internal.t_quantile_975(df numeric) RETURNS numeric
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    z constant numeric := 1.959963984540054;
    t constant numeric[] := '{12.7062,4.3027,3.1824,2.7764,2.5706,2.4469,2.3646,2.3060,2.2622,2.2281,2.2010,2.1788,2.1604,2.1448,2.1314,2.1199,2.1098,2.1009,2.0930,2.0860,2.0796,2.0739,2.0687,2.0639,2.0595,2.0555,2.0518,2.0484,2.0452,2.0423}';
BEGIN
    IF df IS NULL OR df < 1 THEN
        RETURN NULL;
    END IF;
    IF df < 30 THEN
        RETURN t[floor(df)::int];
    END IF;
    RETURN z + (z ^ 3 + z) / (4 * df)
             + (5 * z ^ 5 + 16 * z ^ 3 + 3 * z) / (96 * df ^ 2)
             + (3 * z ^ 7 + 19 * z ^ 5 + 17 * z ^ 3 - 15 * z) / (384 * df ^ 3)
             + (79 * z ^ 9 + 776 * z ^ 7 + 1482 * z ^ 5 - 1920 * z ^ 3 - 945 * z) / (92160 * df ^ 4);
END
$$;
COMMENT ON FUNCTION wallet_internal.t_quantile_975(numeric) IS 'internal: the 97.5% quantile of Student''s t with df degrees of freedom (table below 30, Cornish-Fisher above); NULL below 1';

-- The period of a report: [start, end) defaulting to the campaign's window
-- (an open campaign: up to now).
CREATE FUNCTION wallet_internal.report_period(c wallet.campaigns, period_start timestamptz, period_end timestamptz, currency text)
    RETURNS tstzrange
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    s timestamptz := coalesce(period_start, c.starts_at);
    e timestamptz := coalesce(period_end, c.ends_at, now());
BEGIN
    IF currency IS NOT NULL AND currency !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'invalid currency "%"', left(currency, 16)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A currency is an ISO 4217 code of three capital letters, such as CNY.';
    END IF;
    IF NOT (isfinite(s) AND isfinite(e)) THEN
        RAISE EXCEPTION 'period must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The windows before and after the period are as long as the period.';
    END IF;
    IF e <= s THEN
        RAISE EXCEPTION 'period must end after it starts'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The period from %s to %s is empty.', s, e);
    END IF;
    -- the windows before and after (campaign_report), and the months
    -- followed after it (campaign_cohorts, at most 36), must be timestamps
    BEGIN
        PERFORM s - (e - s), e + (e - s), (date_trunc('month', e AT TIME ZONE 'UTC') + interval '37 months') AT TIME ZONE 'UTC';
    EXCEPTION WHEN datetime_field_overflow OR interval_field_overflow THEN
        RAISE EXCEPTION 'period out of range'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The windows before and after the period from %s to %s, as long as the period, and the 36 months after it must lie within the range of timestamps.', s, e);
    END;
    RETURN tstzrange(s, e, '[)');
END
$$;
COMMENT ON FUNCTION wallet_internal.report_period(wallet.campaigns, timestamptz, timestamptz, text) IS 'internal: the period [start, end) of a campaign report (default: the campaign''s window up to now); 22023 for an empty or infinite period, one whose windows before and after (or 36 months after) leave the range of timestamps, or a malformed currency';

-- What a campaign costs besides points and offers: the admin sets the
-- money a redemption of its codes costs (a voucher's face value) and books
-- other costs (printing, an agency's fee).  campaign_report counts both.
CREATE FUNCTION wallet.set_campaign_redemption_value(campaign_id bigint, redemption_value numeric) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.campaign_seen(campaign_id);
    -- (NaN compares above every number: over the bound)
    IF redemption_value < 0 OR redemption_value > 1e15 THEN
        RAISE EXCEPTION 'redemption_value must be between 0 and 10^15'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A redemption costs the merchant zero or more money in the campaign''s currency (NULL: none counted).';
    END IF;
    UPDATE wallet.campaigns k SET redemption_value = set_campaign_redemption_value.redemption_value
     WHERE k.campaign_id = set_campaign_redemption_value.campaign_id;
END
$$;
COMMENT ON FUNCTION wallet.set_campaign_redemption_value(bigint, numeric) IS 'sets the money each redemption of the campaign''s codes costs the merchant (a voucher''s face value; NULL: none), counted by campaign_report as redemption_cost; 22004 NULL campaign, 22023 below 0 or over 10^15 (NaN too), WL101 unknown campaign';

CREATE FUNCTION wallet.record_campaign_cost(campaign_id bigint, amount numeric, currency text, occurred_at timestamptz DEFAULT now())
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    m bigint := (wallet_internal.campaign_seen(campaign_id)).merchant_id;
    id bigint;
BEGIN
    IF amount IS NULL OR currency IS NULL OR occurred_at IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN amount IS NULL THEN 'amount' WHEN currency IS NULL THEN 'currency' ELSE 'occurred_at' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A cost is an amount in a currency at an instant.';
    END IF;
    -- a negative amount corrects an earlier booking; NaN is over the bound
    IF amount = 0 OR amount < -1e15 OR amount > 1e15 THEN
        RAISE EXCEPTION 'amount must not be 0 nor beyond 10^15'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A cost is an amount of money up to 10^15; a negative one corrects an earlier booking.';
    END IF;
    IF currency !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'invalid currency "%"', left(currency, 16)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A currency is an ISO 4217 code of three capital letters, such as CNY or EUR.';
    END IF;
    IF NOT isfinite(occurred_at) THEN
        RAISE EXCEPTION 'occurred_at must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A cost is booked at a real instant.';
    END IF;
    IF occurred_at < now() - interval '100 years' OR occurred_at > now() + interval '100 years' THEN
        RAISE EXCEPTION 'occurred_at must be within 100 years of now'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A cost is booked at a real instant, at most 100 years before or after now.';
    END IF;
    -- a correction takes back at most what was booked in the currency
    -- (corrections one at a time: a write of the campaign's row, so that
    -- under REPEATABLE READ the second of two is a serialization failure
    -- rather than a sum read from before the first)
    IF amount < 0 THEN
        UPDATE wallet.campaigns k SET redemption_value = k.redemption_value WHERE k.campaign_id = record_campaign_cost.campaign_id;
        IF (SELECT coalesce(sum(c.amount), 0) FROM wallet.campaign_costs c
             WHERE c.campaign_id = record_campaign_cost.campaign_id AND c.kind = 'other' AND c.currency = record_campaign_cost.currency)
           + amount < 0 THEN
            RAISE EXCEPTION 'a correction must not exceed the costs booked'
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('Campaign %s has %s %s of other costs booked; a negative amount corrects them and takes back at most that.',
                                      campaign_id, (SELECT coalesce(sum(c.amount), 0) FROM wallet.campaign_costs c
                                                     WHERE c.campaign_id = record_campaign_cost.campaign_id AND c.kind = 'other'
                                                       AND c.currency = record_campaign_cost.currency), currency);
        END IF;
    END IF;
    INSERT INTO wallet.campaign_costs (merchant_id, campaign_id, kind, amount, currency, occurred_at)
    VALUES (m, campaign_id, 'other', amount, currency, occurred_at)
    RETURNING cost_id INTO id;
    RETURN id;
END
$$;
COMMENT ON FUNCTION wallet.record_campaign_cost(bigint, numeric, text, timestamptz) IS 'books a cost of the campaign (kind other: printing, fees; a negative amount corrects an earlier booking) in wallet.campaign_costs, counted by campaign_report as other_cost in its period and currency; returns the cost_id; 22004 NULL argument, 22023 amount 0 or beyond 10^15 (NaN too), a correction beyond the costs booked in the currency, bad currency, occurred_at infinite or over 100 years from now, WL101 unknown campaign';

CREATE FUNCTION wallet.campaign_report(campaign_id bigint, period_start timestamptz DEFAULT NULL,
        period_end timestamptz DEFAULT NULL, currency text DEFAULT NULL)
    RETURNS TABLE (
        before_start timestamptz, during_start timestamptz, during_end timestamptz, after_end timestamptz,
        audience_members bigint, target_members bigint, control_members bigint,
        reach bigint, reach_rate numeric, participants bigint, participation_rate numeric,
        redemptions bigint, redeemers bigint, redemption_rate numeric,
        target_buyers bigint, control_buyers bigint, target_revenue numeric, control_revenue numeric,
        target_arpu_before numeric, target_arpu numeric, target_arpu_after numeric,
        control_arpu_before numeric, control_arpu numeric, control_arpu_after numeric,
        target_arppu_before numeric, target_arppu numeric, target_arppu_after numeric,
        control_arppu_before numeric, control_arppu numeric, control_arppu_after numeric,
        target_repeat_rate numeric, control_repeat_rate numeric,
        target_retention numeric, control_retention numeric, target_churn numeric, control_churn numeric,
        arpu_lift numeric, lift_percent numeric, lift_ci_low numeric, lift_ci_high numeric, lift_df numeric,
        incremental_sales numeric, incremental_sales_ci_low numeric, incremental_sales_ci_high numeric,
        points_granted numeric, points_cost numeric, redemption_cost numeric, other_cost numeric, cost numeric, roi numeric,
        feedback_count bigint, average_score numeric, feedback_rate numeric, complaint_rate numeric)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    c wallet.campaigns;
    _cid bigint := campaign_report.campaign_id;
    _cur text := campaign_report.currency;
    per tstzrange;
    s timestamptz;
    e timestamptz;
    b0 timestamptz;
    a1 timestamptz;
    rule_ids bigint[];
    g record;
    t_mean numeric; t_var numeric; c_mean numeric; c_var numeric;
    se numeric; df numeric; tq numeric;
    v_reached bigint; v_part bigint; v_redeemers bigint; v_fb_members bigint; v_complainers bigint;
BEGIN
    c := wallet_internal.campaign_seen(_cid);
    per := wallet_internal.report_period(c, campaign_report.period_start, campaign_report.period_end, _cur);
    s := lower(per);
    e := upper(per);
    b0 := s - (e - s);
    a1 := e + (e - s);
    during_start := s;
    during_end := e;
    before_start := b0;
    after_end := a1;
    -- the campaign's earning rules
    rule_ids := coalesce((SELECT array_agg(r.rule_id) FROM wallet.earning_rules r WHERE r.campaign_id = _cid), '{}');

    -- 1. sales per group and window: every audience member counts, buyer or not
    target_members := 0; control_members := 0; target_buyers := 0; control_buyers := 0;
    FOR g IN
        WITH pur AS (
            SELECT p.member_id,
                   sum(p.amount - p.refunded_amount) FILTER (WHERE p.occurred_at < s) AS rev_b,
                   count(*) FILTER (WHERE p.occurred_at < s) AS n_b,
                   sum(p.amount - p.refunded_amount) FILTER (WHERE p.occurred_at >= s AND p.occurred_at < e) AS rev_d,
                   count(*) FILTER (WHERE p.occurred_at >= s AND p.occurred_at < e) AS n_d,
                   sum(p.amount - p.refunded_amount) FILTER (WHERE p.occurred_at >= e) AS rev_a,
                   count(*) FILTER (WHERE p.occurred_at >= e) AS n_a
              FROM wallet.purchases p
             WHERE p.merchant_id = c.merchant_id AND p.occurred_at >= b0 AND p.occurred_at < a1
               AND p.amount > p.refunded_amount AND (_cur IS NULL OR p.currency = _cur)
             GROUP BY p.member_id
        ), pm AS (
            SELECT m.grp, coalesce(x.rev_b, 0) AS rev_b, coalesce(x.n_b, 0) AS n_b, coalesce(x.rev_d, 0) AS rev_d,
                   coalesce(x.n_d, 0) AS n_d, coalesce(x.rev_a, 0) AS rev_a, coalesce(x.n_a, 0) AS n_a
              FROM wallet_internal.campaign_members(_cid) m LEFT JOIN pur x ON x.member_id = m.member_id
        )
        SELECT pm.grp, count(*) AS n,
               sum(pm.rev_b) AS rev_b, count(*) FILTER (WHERE pm.n_b > 0) AS buyers_b,
               sum(pm.rev_d) AS rev_d, count(*) FILTER (WHERE pm.n_d > 0) AS buyers_d,
               avg(pm.rev_d) AS mean_d, var_samp(pm.rev_d) AS var_d,
               count(*) FILTER (WHERE pm.n_d >= 2) AS repeat_d,
               sum(pm.rev_a) AS rev_a, count(*) FILTER (WHERE pm.n_a > 0) AS buyers_a,
               count(*) FILTER (WHERE pm.n_d > 0 AND pm.n_a > 0) AS retained
          FROM pm GROUP BY pm.grp
    LOOP
        IF g.grp = 'target' THEN
            target_members := g.n; target_buyers := g.buyers_d; target_revenue := g.rev_d;
            target_arpu_before := round(g.rev_b / g.n, 4); target_arpu := round(g.rev_d / g.n, 4);
            target_arpu_after := round(g.rev_a / g.n, 4);
            target_arppu_before := round(g.rev_b / nullif(g.buyers_b, 0), 4); target_arppu := round(g.rev_d / nullif(g.buyers_d, 0), 4);
            target_arppu_after := round(g.rev_a / nullif(g.buyers_a, 0), 4);
            target_repeat_rate := round(g.repeat_d::numeric / nullif(g.buyers_d, 0), 4);
            target_retention := round(g.retained::numeric / nullif(g.buyers_d, 0), 4);
            t_mean := g.mean_d; t_var := g.var_d;
        ELSE
            control_members := g.n; control_buyers := g.buyers_d; control_revenue := g.rev_d;
            control_arpu_before := round(g.rev_b / g.n, 4); control_arpu := round(g.rev_d / g.n, 4);
            control_arpu_after := round(g.rev_a / g.n, 4);
            control_arppu_before := round(g.rev_b / nullif(g.buyers_b, 0), 4); control_arppu := round(g.rev_d / nullif(g.buyers_d, 0), 4);
            control_arppu_after := round(g.rev_a / nullif(g.buyers_a, 0), 4);
            control_repeat_rate := round(g.repeat_d::numeric / nullif(g.buyers_d, 0), 4);
            control_retention := round(g.retained::numeric / nullif(g.buyers_d, 0), 4);
            c_mean := g.mean_d; c_var := g.var_d;
        END IF;
    END LOOP;
    audience_members := target_members + control_members;
    target_churn := 1 - target_retention;
    control_churn := 1 - control_retention;

    -- 2. lift: difference of the mean revenue per member during the period,
    -- Welch's t interval (unequal variances, Welch-Satterthwaite df)
    IF target_members > 0 AND control_members > 0 THEN
        arpu_lift := round(t_mean - c_mean, 4);
        lift_percent := round(100 * (t_mean - c_mean) / nullif(c_mean, 0), 2);
        incremental_sales := round((t_mean - c_mean) * target_members, 2);
    END IF;
    IF target_members > 1 AND control_members > 1 THEN
        se := sqrt(t_var / target_members + c_var / control_members);
        IF se > 0 THEN
            df := (t_var / target_members + c_var / control_members) ^ 2
                  / ((t_var / target_members) ^ 2 / (target_members - 1) + (c_var / control_members) ^ 2 / (control_members - 1));
            tq := wallet_internal.t_quantile_975(df);
            lift_df := round(df, 1);
            lift_ci_low := round(t_mean - c_mean - tq * se, 4);
            lift_ci_high := round(t_mean - c_mean + tq * se, 4);
            incremental_sales_ci_low := round((t_mean - c_mean - tq * se) * target_members, 2);
            incremental_sales_ci_high := round((t_mean - c_mean + tq * se) * target_members, 2);
        END IF;
    END IF;

    -- 3. reach, participation, redemption, feedback: target members in the period
    WITH tgt AS MATERIALIZED (
        SELECT m.member_id FROM wallet_internal.campaign_members(_cid) m WHERE m.grp = 'target'
    ), redeemed AS (
        SELECT DISTINCT mm.member_id
          FROM wallet.code_redemptions r JOIN wallet.members mm ON mm.merchant_id = c.merchant_id AND mm.member_ref = r.member_ref
         WHERE r.campaign_id = _cid AND r.undone_at IS NULL AND r.redeemed_at >= s AND r.redeemed_at < e
    ), took_part AS (
        SELECT d.member_id FROM redeemed d
        UNION
        SELECT k.member_id FROM wallet.campaign_costs k
         WHERE k.campaign_id = _cid AND k.member_id IS NOT NULL AND k.occurred_at >= s AND k.occurred_at < e
        UNION
        SELECT p.member_id FROM wallet.purchases p
         WHERE cardinality(rule_ids) > 0 AND p.merchant_id = c.merchant_id AND p.occurred_at >= s AND p.occurred_at < e
           AND p.rules <> '[]' AND EXISTS (SELECT FROM jsonb_array_elements(p.rules) x WHERE (x ->> 'rule_id')::bigint = ANY (rule_ids))
    ), touched AS (
        SELECT t.member_id FROM took_part t
        UNION
        SELECT v.member_id FROM wallet.member_events v
         WHERE v.merchant_id = c.merchant_id AND v.occurred_at >= s AND v.occurred_at < e AND v.attributes ->> 'campaign_id' = _cid::text
        UNION
        SELECT mm.member_id
          FROM wallet.code_bindings b JOIN wallet.members mm ON mm.merchant_id = c.merchant_id AND mm.member_ref = b.member_ref
         WHERE b.campaign_id = _cid AND b.bound_at >= s AND b.bound_at < e
        UNION
        -- the campaign's push messages sent in the period (kept for the merchant's push retention)
        SELECT x.member_id FROM wallet.push_messages x
         WHERE x.merchant_id = c.merchant_id AND x.campaign_id = _cid AND x.status = 'sent' AND x.sent_at >= s AND x.sent_at < e
    ), fb AS (
        SELECT f.member_id, bool_or(f.category = 'complaint') AS complained
          FROM wallet.campaign_feedback f
         WHERE f.campaign_id = _cid AND f.created_at >= s AND f.created_at < e
         GROUP BY f.member_id
    )
    SELECT (SELECT count(*) FROM touched x JOIN tgt USING (member_id)),
           (SELECT count(*) FROM took_part x JOIN tgt USING (member_id)),
           (SELECT count(*) FROM redeemed x JOIN tgt USING (member_id)),
           (SELECT count(*) FROM fb x JOIN tgt USING (member_id)),
           (SELECT count(*) FROM fb x JOIN tgt USING (member_id) WHERE x.complained)
      INTO v_reached, v_part, v_redeemers, v_fb_members, v_complainers;
    reach := v_reached;
    reach_rate := round(v_reached::numeric / nullif(target_members, 0), 4);
    participants := v_part;
    participation_rate := round(v_part::numeric / nullif(target_members, 0), 4);
    redeemers := v_redeemers;
    redemption_rate := round(v_redeemers::numeric / nullif(v_reached, 0), 4);
    feedback_rate := round(v_fb_members::numeric / nullif(v_reached, 0), 4);
    complaint_rate := round(v_complainers::numeric / nullif(v_reached, 0), 4);
    SELECT count(*), round(avg(f.score), 2) INTO feedback_count, average_score
      FROM wallet.campaign_feedback f WHERE f.campaign_id = _cid AND f.created_at >= s AND f.created_at < e;

    -- 4. cost: points of the campaign's rules (net of the share refunds took
    -- back) at the program's point value, redemptions at redemption_value,
    -- and wallet.campaign_costs
    SELECT count(*) INTO redemptions FROM wallet.code_redemptions r
     WHERE r.campaign_id = _cid AND r.undone_at IS NULL AND r.redeemed_at >= s AND r.redeemed_at < e;
    redemption_cost := redemptions * coalesce(c.redemption_value, 0);
    SELECT coalesce(sum(k.amount), 0) INTO other_cost FROM wallet.campaign_costs k
     WHERE k.campaign_id = _cid AND k.occurred_at >= s AND k.occurred_at < e AND (_cur IS NULL OR k.currency = _cur);
    SELECT coalesce(sum(q.pts), 0),
           CASE WHEN bool_or(q.pts > 0 AND q.point_value IS NULL) THEN NULL ELSE coalesce(sum(q.pts * coalesce(q.point_value, 0)), 0) END
      INTO points_granted, points_cost
      FROM (SELECT x.pts * (p.points - p.refunded_points) / p.points AS pts, pr.point_value
              FROM wallet.purchases p
              JOIN LATERAL (SELECT sum((j ->> 'points')::numeric) AS pts FROM jsonb_array_elements(p.rules) j
                             WHERE (j ->> 'rule_id')::bigint = ANY (rule_ids)) x ON x.pts IS NOT NULL
              LEFT JOIN wallet.programs pr ON pr.program_id = p.program_id
             WHERE cardinality(rule_ids) > 0 AND p.merchant_id = c.merchant_id AND p.occurred_at >= s AND p.occurred_at < e
               AND p.points > 0 AND p.rules <> '[]' AND (_cur IS NULL OR p.currency = _cur)) q;
    points_granted := round(points_granted, 2);
    points_cost := round(points_cost, 2);
    cost := points_cost + redemption_cost + other_cost;
    roi := round((incremental_sales - cost) / nullif(cost, 0), 4);
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION wallet.campaign_report(bigint, timestamptz, timestamptz, text) IS 'the measured effect of a campaign in a period (default its window): group sizes, reach, participation, redemption, revenue, ARPU and ARPPU before, during and after, repeat purchases, retention and churn, lift against the control group with a 95% Welch interval, incremental sales, cost and ROI, feedback and complaint rates (README "Analytics")';

-- Monthly cohorts (UTC months) of the audience's buyers: a member's cohort
-- is the month of its first purchase in the period; retention at month k is
-- the share of the cohort buying in the k-th calendar month after it.
CREATE FUNCTION wallet.campaign_cohorts(campaign_id bigint, period_start timestamptz DEFAULT NULL,
        period_end timestamptz DEFAULT NULL, months int DEFAULT 6, currency text DEFAULT NULL)
    RETURNS TABLE (grp text, cohort date, members bigint, month_offset int, active bigint, retention numeric, churn numeric)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    c wallet.campaigns;
    _cid bigint := campaign_cohorts.campaign_id;
    _cur text := campaign_cohorts.currency;
    _months int := campaign_cohorts.months;
    per tstzrange;
BEGIN
    c := wallet_internal.campaign_seen(_cid);
    IF _months IS NULL THEN
        RAISE EXCEPTION 'months must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Cohorts are followed for a number of months.';
    END IF;
    IF _months NOT BETWEEN 0 AND 36 THEN
        RAISE EXCEPTION 'months must be from 0 to 36'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('Cohorts are followed for 0 to 36 months; %s is not.', _months);
    END IF;
    per := wallet_internal.report_period(c, campaign_cohorts.period_start, campaign_cohorts.period_end, _cur);
    RETURN QUERY
    WITH g AS MATERIALIZED (
        SELECT m.member_id, m.grp FROM wallet_internal.campaign_members(_cid) m
    ), buys AS (
        SELECT p.member_id, p.occurred_at, date_trunc('month', p.occurred_at AT TIME ZONE 'UTC')::date AS mon
          FROM wallet.purchases p
         WHERE p.merchant_id = c.merchant_id AND p.occurred_at >= lower(per)
           AND p.occurred_at < (date_trunc('month', upper(per) AT TIME ZONE 'UTC') + make_interval(months => _months + 1)) AT TIME ZONE 'UTC'
           AND p.amount > p.refunded_amount AND (_cur IS NULL OR p.currency = _cur)
    ), firsts AS (
        SELECT b.member_id, min(b.mon) AS cohort FROM buys b WHERE b.occurred_at < upper(per) GROUP BY b.member_id
    ), sizes AS (
        SELECT g.grp, f.cohort, count(*) AS n FROM firsts f JOIN g ON g.member_id = f.member_id GROUP BY g.grp, f.cohort
    ), act AS (
        SELECT g.grp, f.cohort,
               ((extract(year FROM b.mon) - extract(year FROM f.cohort)) * 12 + extract(month FROM b.mon) - extract(month FROM f.cohort))::int AS k,
               count(DISTINCT b.member_id) AS n
          FROM firsts f JOIN g ON g.member_id = f.member_id JOIN buys b ON b.member_id = f.member_id AND b.mon >= f.cohort
         GROUP BY 1, 2, 3
    )
    SELECT z.grp, z.cohort, z.n, k.k, coalesce(a.n, 0), round(coalesce(a.n, 0)::numeric / z.n, 4),
           1 - round(coalesce(a.n, 0)::numeric / z.n, 4)
      FROM sizes z CROSS JOIN generate_series(0, _months) AS k(k)
      LEFT JOIN act a ON a.grp = z.grp AND a.cohort = z.cohort AND a.k = k.k
     WHERE (z.cohort + make_interval(months => k.k)) <= now() AT TIME ZONE 'UTC'
     ORDER BY z.grp DESC, z.cohort, k.k;
END
$$;
COMMENT ON FUNCTION wallet.campaign_cohorts(bigint, timestamptz, timestamptz, integer, text) IS 'retention and churn by monthly cohort (UTC) of the audience''s buyers, target and control: cohort = month of the first purchase in the period; month_offset k: the share of the cohort buying in the k-th month after (months up to now only)';

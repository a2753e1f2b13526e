
-- ======================================================================
-- Loyalty: purchases, refunds, the member event stream and tiers (issue 10).
--
-- Every table carries merchant_id (the key to distribute by) and, for member
-- data, member_id; amounts are numeric in the program's currency, points
-- whole.  README "Loyalty".
-- ======================================================================

-- A program that earns from purchases has a currency and a rounding rule;
-- a merchant has at most one open earning program per currency, the one
-- wallet.record_purchase posts to.  Tier qualification is per program.
ALTER TABLE wallet.programs ADD COLUMN currency text CHECK (currency ~ '^[A-Z]{3}$');
ALTER TABLE wallet.programs ADD COLUMN rounding text NOT NULL DEFAULT 'floor' CHECK (rounding IN ('floor', 'nearest', 'ceiling'));
ALTER TABLE wallet.programs ADD COLUMN refund_debt boolean NOT NULL DEFAULT false;
ALTER TABLE wallet.programs ADD COLUMN point_value numeric CHECK (point_value >= 0);
ALTER TABLE wallet.programs ADD COLUMN tier_window text NOT NULL DEFAULT 'rolling' CHECK (tier_window IN ('rolling', 'calendar_year'));
ALTER TABLE wallet.programs ADD COLUMN tier_window_months int NOT NULL DEFAULT 12 CHECK (tier_window_months BETWEEN 1 AND 24);
ALTER TABLE wallet.programs ADD COLUMN tier_downgrade text NOT NULL DEFAULT 'grace' CHECK (tier_downgrade IN ('never', 'period_end', 'grace'));
ALTER TABLE wallet.programs ADD COLUMN tier_grace_days int NOT NULL DEFAULT 30 CHECK (tier_grace_days >= 0);
ALTER TABLE wallet.programs ADD COLUMN tier_downgrade_step text NOT NULL DEFAULT 'qualified' CHECK (tier_downgrade_step IN ('one_level', 'qualified'));
COMMENT ON COLUMN wallet.programs.currency IS 'ISO 4217 code of the money the program earns from (wallet.record_purchase); NULL = the program earns from no purchase';
COMMENT ON COLUMN wallet.programs.rounding IS 'how fractional points of a purchase are rounded to whole points: floor, nearest (half up) or ceiling';
COMMENT ON COLUMN wallet.programs.refund_debt IS 'whether a refund may take back more points than the member still has (the rest becomes a debt); false = within the balance';
COMMENT ON COLUMN wallet.programs.point_value IS 'money value of one point in the program''s currency (for campaign cost and ROI); NULL = unknown';
COMMENT ON COLUMN wallet.programs.tier_window IS 'window of the points earned that qualify for a tier: rolling (the last tier_window_months months) or calendar_year';
COMMENT ON COLUMN wallet.programs.tier_window_months IS 'length of a rolling qualification window in months (1 to 24: the ledger keeps 24 monthly buckets)';
COMMENT ON COLUMN wallet.programs.tier_downgrade IS 'when a member below its tier''s threshold moves down: never, at the end of the qualification period (period_end) or after tier_grace_days days below it (grace)';
COMMENT ON COLUMN wallet.programs.tier_grace_days IS 'days a member may stay below its tier''s threshold before moving down (tier_downgrade grace)';
COMMENT ON COLUMN wallet.programs.tier_downgrade_step IS 'a downgrade moves one_level down at a time or straight to the qualified tier';
CREATE UNIQUE INDEX programs_earning_currency_idx ON wallet.programs (merchant_id, currency)
    WHERE currency IS NOT NULL AND closed_at IS NULL;
COMMENT ON INDEX wallet.programs_earning_currency_idx IS 'a merchant has at most one open program earning from purchases in each currency';

------------------------------------------------------------------------------
-- Purchases and refunds
------------------------------------------------------------------------------

-- No foreign keys and no CHECK constraints, as wallet.entries: a foreign
-- key would lock the merchant's row on every purchase (FOR KEY SHARE, a
-- MultiXact once checkouts overlap), and each insert would plan the CHECK
-- expressions anew (together about a sixth of record_purchase).  The rows
-- are written only by wallet.record_purchase, from the rows it just read
-- and arguments it checked (amount > 0, an ISO currency, points >= 0), and
-- wallet.record_refund, which keeps refunded_amount <= amount and
-- refunded_points <= points under the account's and the purchase's lock.
CREATE TABLE wallet.purchases (
    purchase_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id     bigint NOT NULL,
    member_id       bigint NOT NULL,
    order_ref       text NOT NULL,
    amount          numeric NOT NULL,
    currency        text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    attributes      jsonb NOT NULL DEFAULT '{}',
    program_id      bigint,
    account_id      bigint,
    points          bigint NOT NULL DEFAULT 0,
    entry_id        bigint,
    rules           jsonb NOT NULL DEFAULT '[]',
    refunded_amount numeric NOT NULL DEFAULT 0,
    refunded_points bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (merchant_id, order_ref)
);
CREATE INDEX purchases_member_idx ON wallet.purchases (merchant_id, member_id, occurred_at);
CREATE INDEX purchases_time_idx ON wallet.purchases (merchant_id, occurred_at);
COMMENT ON TABLE wallet.purchases IS 'purchases recorded at checkout (wallet.record_purchase): the base of every later measure (ARPU, lift, churn, conversions); one per order_ref and merchant';
COMMENT ON COLUMN wallet.purchases.purchase_id IS 'purchase id';
COMMENT ON COLUMN wallet.purchases.merchant_id IS 'merchant the purchase was made at: the key to distribute by';
COMMENT ON COLUMN wallet.purchases.member_id IS 'the member who paid (wallet.members)';
COMMENT ON COLUMN wallet.purchases.order_ref IS 'the merchant''s own order reference, unique per merchant (the idempotency key of record_purchase)';
COMMENT ON COLUMN wallet.purchases.amount IS 'amount paid, in currency';
COMMENT ON COLUMN wallet.purchases.currency IS 'ISO 4217 code of the amount';
COMMENT ON COLUMN wallet.purchases.occurred_at IS 'when the purchase was made';
COMMENT ON COLUMN wallet.purchases.attributes IS 'what the earning rules and analytics read: store, channel, payment_method, categories (an array), and the app''s own keys';
COMMENT ON COLUMN wallet.purchases.program_id IS 'the program that earned from it (NULL: none in that currency)';
COMMENT ON COLUMN wallet.purchases.account_id IS 'the member''s account in that program';
COMMENT ON COLUMN wallet.purchases.points IS 'points earned by the purchase';
COMMENT ON COLUMN wallet.purchases.entry_id IS 'the accrue entry that posted them (NULL when none were earned)';
COMMENT ON COLUMN wallet.purchases.rules IS 'the rules that fired, as an array of {rule_id, points, why}: the explanation of points';
COMMENT ON COLUMN wallet.purchases.refunded_amount IS 'total refunded so far';
COMMENT ON COLUMN wallet.purchases.refunded_points IS 'points taken back by refunds so far (never more than points)';
COMMENT ON COLUMN wallet.purchases.created_at IS 'when it was recorded';
SELECT pg_catalog.pg_extension_config_dump('wallet.purchases', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.purchases', 'purchase_id'), '');
ALTER TABLE wallet.purchases ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.purchases USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.purchases IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TABLE wallet.refunds (
    refund_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    member_id   bigint NOT NULL REFERENCES wallet.members,
    purchase_id bigint NOT NULL REFERENCES wallet.purchases,
    refund_ref  text NOT NULL,
    amount      numeric NOT NULL CHECK (amount > 0),
    points      bigint NOT NULL DEFAULT 0 CHECK (points >= 0),
    entry_id    bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (merchant_id, refund_ref)
);
CREATE INDEX refunds_purchase_idx ON wallet.refunds (purchase_id);
COMMENT ON TABLE wallet.refunds IS 'refunds of purchases (wallet.record_refund), full or partial, several per purchase; one per refund_ref and merchant';
COMMENT ON COLUMN wallet.refunds.refund_id IS 'refund id';
COMMENT ON COLUMN wallet.refunds.merchant_id IS 'merchant of the purchase: the key to distribute by';
COMMENT ON COLUMN wallet.refunds.member_id IS 'the member of the purchase';
COMMENT ON COLUMN wallet.refunds.purchase_id IS 'the purchase refunded';
COMMENT ON COLUMN wallet.refunds.refund_ref IS 'the merchant''s own refund reference, unique per merchant (the idempotency key of record_refund)';
COMMENT ON COLUMN wallet.refunds.amount IS 'amount refunded, in the purchase''s currency';
COMMENT ON COLUMN wallet.refunds.points IS 'points taken back';
COMMENT ON COLUMN wallet.refunds.entry_id IS 'the entry that took them back (NULL when none)';
COMMENT ON COLUMN wallet.refunds.created_at IS 'when it was recorded';
SELECT pg_catalog.pg_extension_config_dump('wallet.refunds', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.refunds', 'refund_id'), '');
ALTER TABLE wallet.refunds ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.refunds USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.refunds IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

------------------------------------------------------------------------------
-- The member event stream
------------------------------------------------------------------------------

-- No foreign keys (as wallet.entries and wallet.purchases): only the API
-- writes events (tier changes, referral steps, the app's events), naming a
-- member it has just found or made, and members and merchants are never
-- deleted; each check would lock the member's row (FOR KEY SHARE) and the
-- merchant's (a MultiXact once writers overlap), and a tier sweep writes
-- thousands of events per batch.
CREATE TABLE wallet.member_events (
    event_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL,
    member_id   bigint NOT NULL,
    kind        text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{0,62}$'),
    occurred_at timestamptz NOT NULL DEFAULT now(),
    attributes  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX member_events_member_idx ON wallet.member_events (merchant_id, member_id, kind, occurred_at);
CREATE INDEX member_events_kind_idx ON wallet.member_events (merchant_id, kind, occurred_at);
COMMENT ON TABLE wallet.member_events IS 'what happened to members that triggers and analytics read: tier changes (tier_changed), and the app''s events (wallet.track_event: cart_updated, location, shared, ...)';
COMMENT ON COLUMN wallet.member_events.event_id IS 'event id';
COMMENT ON COLUMN wallet.member_events.merchant_id IS 'merchant of the member: the key to distribute by';
COMMENT ON COLUMN wallet.member_events.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.member_events.kind IS 'what happened: a lower-case word (tier_changed, cart_updated, location, shared, ...)';
COMMENT ON COLUMN wallet.member_events.occurred_at IS 'when it happened';
COMMENT ON COLUMN wallet.member_events.attributes IS 'what the kind carries (tier_changed: program_id, account_id, from_tier, to_tier, from_rank, to_rank, reason)';
SELECT pg_catalog.pg_extension_config_dump('wallet.member_events', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.member_events', 'event_id'), '');
ALTER TABLE wallet.member_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.member_events USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.member_events IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

------------------------------------------------------------------------------
-- Tiers
------------------------------------------------------------------------------

CREATE TABLE wallet.tiers (
    tier_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    program_id  bigint NOT NULL REFERENCES wallet.programs,
    rank        int NOT NULL CHECK (rank > 0),
    name        text NOT NULL CHECK (btrim(name) <> ''),
    min_points  bigint NOT NULL CHECK (min_points >= 0),
    min_spend   numeric CHECK (min_spend >= 0),
    multiplier  numeric NOT NULL DEFAULT 1 CHECK (multiplier > 0),
    benefits    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (program_id, rank),
    UNIQUE (program_id, name)
);
COMMENT ON TABLE wallet.tiers IS 'tiers (VIP levels) of a program: a member holds the highest rank whose thresholds it meets in the qualification window (below every tier: no tier)';
COMMENT ON COLUMN wallet.tiers.tier_id IS 'tier id';
COMMENT ON COLUMN wallet.tiers.merchant_id IS 'merchant of the program: the key to distribute by';
COMMENT ON COLUMN wallet.tiers.program_id IS 'the program';
COMMENT ON COLUMN wallet.tiers.rank IS 'order of the tiers, 1 the lowest; higher ranks have higher thresholds';
COMMENT ON COLUMN wallet.tiers.name IS 'the tier''s name (e.g. Gold), unique in the program';
COMMENT ON COLUMN wallet.tiers.min_points IS 'points earned in the window (not the balance) that qualify';
COMMENT ON COLUMN wallet.tiers.min_spend IS 'spend in the window (purchases less refunds, in the program''s currency) that qualifies too; NULL = no spend threshold';
COMMENT ON COLUMN wallet.tiers.multiplier IS 'earning multiplier of the tier (1 = none)';
COMMENT ON COLUMN wallet.tiers.benefits IS 'the tier''s benefits, for the app';
COMMENT ON COLUMN wallet.tiers.created_at IS 'when the tier was made';
SELECT pg_catalog.pg_extension_config_dump('wallet.tiers', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.tiers', 'tier_id'), '');
ALTER TABLE wallet.tiers ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.tiers USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.tiers IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

-- No foreign keys on account_tiers and tier_history (as wallet.entries):
-- only the tier functions write them (wallet_internal.tier_set and the
-- sweep of wallet.evaluate_tiers), under the account's row lock, from the
-- account, program and tier rows they just read; accounts, members,
-- merchants and programs are never deleted, and a tier is dropped only
-- when no history row names it (wallet.drop_tier).  The checks cost a
-- tier sweep about 40% of its time (12 per change, each locking the rows
-- it checks) and would lock the merchant's and program's row on every
-- upgrade made by a posting.
CREATE TABLE wallet.account_tiers (
    account_id  bigint PRIMARY KEY,
    merchant_id bigint NOT NULL,
    member_id   bigint NOT NULL,
    program_id  bigint NOT NULL,
    tier_id     bigint,
    rank        int NOT NULL DEFAULT 0,
    since       timestamptz NOT NULL DEFAULT now(),
    below_since timestamptz,
    review_at   timestamptz
);
CREATE INDEX account_tiers_review_idx ON wallet.account_tiers (program_id, review_at) WHERE review_at IS NOT NULL;
COMMENT ON TABLE wallet.account_tiers IS 'the current tier of each account of a tiered program (no row, or tier_id NULL: no tier)';
COMMENT ON COLUMN wallet.account_tiers.account_id IS 'the account (wallet.accounts)';
COMMENT ON COLUMN wallet.account_tiers.merchant_id IS 'merchant of the program: the key to distribute by';
COMMENT ON COLUMN wallet.account_tiers.member_id IS 'the member of the account';
COMMENT ON COLUMN wallet.account_tiers.program_id IS 'the program of the account';
COMMENT ON COLUMN wallet.account_tiers.tier_id IS 'the tier held (NULL = none)';
COMMENT ON COLUMN wallet.account_tiers.rank IS 'rank of the tier held (0 = none)';
COMMENT ON COLUMN wallet.account_tiers.since IS 'when the account reached the tier it holds';
COMMENT ON COLUMN wallet.account_tiers.below_since IS 'since when the account has been below its tier''s threshold (NULL = it qualifies): starts the grace period';
COMMENT ON COLUMN wallet.account_tiers.review_at IS 'when wallet.evaluate_tiers must look at the account next (a due downgrade); NULL = nothing due';
SELECT pg_catalog.pg_extension_config_dump('wallet.account_tiers', '');
ALTER TABLE wallet.account_tiers ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.account_tiers USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.account_tiers IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TABLE wallet.tier_history (
    change_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL,
    member_id   bigint NOT NULL,
    account_id  bigint NOT NULL,
    program_id  bigint NOT NULL,
    from_tier   bigint,
    to_tier     bigint,
    from_rank   int NOT NULL,
    to_rank     int NOT NULL,
    reason      text NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    entry_id    bigint
);
CREATE INDEX tier_history_account_idx ON wallet.tier_history (account_id, changed_at);
COMMENT ON TABLE wallet.tier_history IS 'every tier change of an account, and why';
COMMENT ON COLUMN wallet.tier_history.change_id IS 'change id';
COMMENT ON COLUMN wallet.tier_history.merchant_id IS 'merchant of the program: the key to distribute by';
COMMENT ON COLUMN wallet.tier_history.member_id IS 'the member of the account';
COMMENT ON COLUMN wallet.tier_history.account_id IS 'the account';
COMMENT ON COLUMN wallet.tier_history.program_id IS 'the program';
COMMENT ON COLUMN wallet.tier_history.from_tier IS 'tier before (NULL = none)';
COMMENT ON COLUMN wallet.tier_history.to_tier IS 'tier after (NULL = none)';
COMMENT ON COLUMN wallet.tier_history.from_rank IS 'rank before (0 = none)';
COMMENT ON COLUMN wallet.tier_history.to_rank IS 'rank after (0 = none)';
COMMENT ON COLUMN wallet.tier_history.reason IS 'why: upgrade (with the posting that crossed the threshold), grace ended, period ended, ...';
COMMENT ON COLUMN wallet.tier_history.changed_at IS 'when the change took effect';
COMMENT ON COLUMN wallet.tier_history.entry_id IS 'the posting that crossed the threshold (upgrades), else NULL';
SELECT pg_catalog.pg_extension_config_dump('wallet.tier_history', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.tier_history', 'change_id'), '');
ALTER TABLE wallet.tier_history ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.tier_history USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.tier_history IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

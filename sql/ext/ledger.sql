
-- ======================================================================
-- Points ledger (issue 4): the points_ledger type, programs, accounts, the
-- append-only journal and every operation on it.
--
-- Each operation locks its account row (one SELECT ... FOR NO KEY UPDATE),
-- changes the account's points_ledger value with the pure C function
-- wallet.ledger_apply, writes it back (one UPDATE) and journals the change
-- (one INSERT).  verify_ledger replays the journal through the same
-- function, so the journal alone explains every stored ledger.
-- Time convention: a lot expiring at T is spendable strictly before T.
-- ======================================================================

CREATE TYPE wallet.points_ledger;

CREATE FUNCTION wallet.points_ledger_in(cstring) RETURNS wallet.points_ledger
    AS 'MODULE_PATHNAME', 'points_ledger_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.points_ledger_in(cstring) IS 'text input of wallet.points_ledger';
CREATE FUNCTION wallet.points_ledger_out(wallet.points_ledger) RETURNS cstring
    AS 'MODULE_PATHNAME', 'points_ledger_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.points_ledger_out(wallet.points_ledger) IS 'text output of wallet.points_ledger (timestamps in ISO 8601 UTC)';
CREATE FUNCTION wallet.points_ledger_recv(internal) RETURNS wallet.points_ledger
    AS 'MODULE_PATHNAME', 'points_ledger_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.points_ledger_recv(internal) IS 'binary input of wallet.points_ledger (leading format-version byte)';
CREATE FUNCTION wallet.points_ledger_send(wallet.points_ledger) RETURNS bytea
    AS 'MODULE_PATHNAME', 'points_ledger_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.points_ledger_send(wallet.points_ledger) IS 'binary output of wallet.points_ledger (leading format-version byte)';

CREATE TYPE wallet.points_ledger (
    INPUT = wallet.points_ledger_in,
    OUTPUT = wallet.points_ledger_out,
    RECEIVE = wallet.points_ledger_recv,
    SEND = wallet.points_ledger_send,
    INTERNALLENGTH = VARIABLE,
    STORAGE = extended
);
COMMENT ON TYPE wallet.points_ledger IS 'one account''s whole points state: spendable lots by expiry, open holds, debt, lifetime totals, 24 monthly earned buckets';

CREATE FUNCTION wallet.ledger_balance(l wallet.points_ledger, as_of timestamptz) RETURNS bigint
    AS 'MODULE_PATHNAME', 'ledger_balance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.ledger_balance(wallet.points_ledger, timestamptz) IS 'points spendable at as_of: lots not yet expired (expiry is exclusive) plus those of lapsed holds, minus debt';

CREATE FUNCTION wallet.ledger_expiring(l wallet.points_ledger, as_of timestamptz, within interval) RETURNS bigint
    AS 'MODULE_PATHNAME', 'ledger_expiring' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.ledger_expiring(wallet.points_ledger, timestamptz, interval) IS 'spendable points at as_of that expire after as_of and no later than as_of + within (interval added in UTC)';

CREATE FUNCTION wallet.ledger_earned(l wallet.points_ledger, from_ts timestamptz, to_ts timestamptz) RETURNS bigint
    AS 'MODULE_PATHNAME', 'ledger_earned' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.ledger_earned(wallet.points_ledger, timestamptz, timestamptz) IS 'points earned in the months (UTC, last 24 kept) whose first instant lies in [from_ts, to_ts)';

CREATE FUNCTION wallet.ledger_lots(l wallet.points_ledger,
        OUT points bigint, OUT expires_at timestamptz, OUT hold_id bigint, OUT hold_expires_at timestamptz)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'ledger_lots' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE ROWS 8;
COMMENT ON FUNCTION wallet.ledger_lots(wallet.points_ledger) IS 'every lot of a ledger: spendable ones (hold_id NULL), then the lots of each open hold; expires_at NULL = never';

CREATE FUNCTION wallet.ledger_totals(l wallet.points_ledger,
        OUT debt bigint, OUT earned bigint, OUT redeemed bigint, OUT expired bigint, OUT open_holds int)
    AS 'MODULE_PATHNAME', 'ledger_totals' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION wallet.ledger_totals(wallet.points_ledger) IS 'debt, lifetime earned / redeemed / expired totals and the number of open holds of a ledger';

CREATE FUNCTION wallet.ledger_diff(a wallet.points_ledger, b wallet.points_ledger) RETURNS text
    AS 'MODULE_PATHNAME', 'ledger_diff' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION wallet.ledger_diff(wallet.points_ledger, wallet.points_ledger) IS 'NULL when both ledgers hold the same state, else a sentence naming the first difference';

CREATE TYPE wallet.ledger_step AS (
    ledger        wallet.points_ledger,
    amount        bigint,
    balance_after bigint,
    lots          jsonb,
    next_event    timestamptz
);
COMMENT ON TYPE wallet.ledger_step IS 'result of wallet.ledger_apply: the new ledger and what the change did';
COMMENT ON COLUMN wallet.ledger_step.ledger IS 'the ledger after the change';
COMMENT ON COLUMN wallet.ledger_step.amount IS 'signed change of the spendable balance';
COMMENT ON COLUMN wallet.ledger_step.balance_after IS 'spendable balance at the instant of the change, after it';
COMMENT ON COLUMN wallet.ledger_step.lots IS 'the lots the change created, consumed, held, released, expired or restored';
COMMENT ON COLUMN wallet.ledger_step.next_event IS 'soonest lot expiry or hold lapse of the new ledger (NULL = none)';

CREATE FUNCTION wallet.ledger_apply(l wallet.points_ledger, kind text, at timestamptz, points bigint,
        ts timestamptz DEFAULT NULL, hold_id bigint DEFAULT NULL,
        lot_points bigint[] DEFAULT NULL, lot_expiries timestamptz[] DEFAULT NULL, policy text DEFAULT NULL,
        earned_at timestamptz DEFAULT NULL)
    RETURNS wallet.ledger_step
    AS 'MODULE_PATHNAME', 'ledger_apply' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION wallet.ledger_apply(wallet.points_ledger, text, timestamptz, bigint, timestamptz, bigint, bigint[], timestamptz[], text, timestamptz)
    IS 'pure change of a ledger at instant at: accrue, redeem, adjust, hold, capture, release, expire, reverse_accrual, restore (the only place ledgers change)';

-- Lot expiry of a program's policy: at + expiry, rounded up to the end of its
-- UTC day or month (the exclusive expiry is the start of the next one).  In C
-- (src/points_ledger.c), as record_purchase's fast path computes it: checks
-- its arguments as create_program does, and refuses a result past the last
-- timestamp with 22023 instead of PostgreSQL's 22008.
CREATE FUNCTION wallet.policy_expiry(at timestamptz, expiry interval, granularity text) RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'policy_expiry' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION wallet.policy_expiry(timestamptz, interval, text) IS 'expiry of points earned at at under a policy: at + expiry rounded up to the end of the UTC day or month; infinity when expiry is NULL, NULL when at is; 22004 for a NULL granularity, 22023 for an unknown granularity, an expiry not above 0, an infinite at or a result past the last timestamp';

-- ---------------------------------------------------------------- tables

CREATE TABLE wallet.programs (
    program_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    name        text NOT NULL CHECK (btrim(name) <> ''),
    expiry      interval CHECK (expiry > interval '0'),
    granularity text NOT NULL DEFAULT 'day' CHECK (granularity IN ('day', 'month')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    closed_at   timestamptz,
    UNIQUE (merchant_id, name)
);
COMMENT ON TABLE wallet.programs IS 'points programs of merchants, each with its expiry policy';
COMMENT ON COLUMN wallet.programs.program_id IS 'program id';
COMMENT ON COLUMN wallet.programs.merchant_id IS 'merchant running the program';
COMMENT ON COLUMN wallet.programs.name IS 'program name, unique per merchant';
COMMENT ON COLUMN wallet.programs.expiry IS 'how long accrued points stay spendable (NULL = they never expire)';
COMMENT ON COLUMN wallet.programs.granularity IS 'expiry rounded up to the end of the UTC day or month: day or month';
COMMENT ON COLUMN wallet.programs.created_at IS 'when the program was created';
COMMENT ON COLUMN wallet.programs.closed_at IS 'when the program was closed (no more accruals, redemptions, holds, adjustments, accounts); NULL = open';

-- fillfactor leaves room on each page so that ledger updates stay HOT.
CREATE TABLE wallet.accounts (
    account_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    program_id bigint NOT NULL REFERENCES wallet.programs,
    member_ref text NOT NULL,   -- non-blank: checked by open_account (a CHECK would cost every ledger UPDATE)
    ledger     wallet.points_ledger NOT NULL DEFAULT '',
    next_event timestamptz,
    opened_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (program_id, member_ref)
) WITH (fillfactor = 80);
CREATE INDEX accounts_next_event_idx ON wallet.accounts (next_event) WHERE next_event IS NOT NULL;
COMMENT ON TABLE wallet.accounts IS 'points accounts: one per member and program, holding the whole state as a points_ledger';
COMMENT ON COLUMN wallet.accounts.account_id IS 'account id';
COMMENT ON COLUMN wallet.accounts.program_id IS 'program of the account';
COMMENT ON COLUMN wallet.accounts.member_ref IS 'the merchant app''s own user id, unique per program';
COMMENT ON COLUMN wallet.accounts.ledger IS 'the account''s state; changed only by the ledger operations, explained by wallet.entries';
COMMENT ON COLUMN wallet.accounts.next_event IS 'soonest lot expiry or hold lapse (NULL = none): lets expire_points find due accounts by index';
COMMENT ON COLUMN wallet.accounts.opened_at IS 'when the account was opened';

CREATE TABLE wallet.entries (
    entry_id        bigint GENERATED BY DEFAULT AS IDENTITY (SEQUENCE NAME wallet.entries_entry_id_seq) PRIMARY KEY,
    -- No FOREIGN KEY and no CHECK: entries are written only by the ledger
    -- functions, which hold the account's row lock; an RI trigger and
    -- constraint evaluation would cost about a fifth of every posting.
    account_id      bigint NOT NULL,
    kind            text NOT NULL,
    amount          bigint NOT NULL,
    balance_after   bigint NOT NULL,
    idempotency_key text,
    reason          text,
    reference       text,
    lots            jsonb NOT NULL DEFAULT '[]',
    hold_id         bigint,
    reverses        bigint,
    actor           name NOT NULL DEFAULT current_user,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    points          bigint,
    expires_at      timestamptz,
    policy          text,
    merchant_id     bigint NOT NULL
);
CREATE INDEX entries_account_idx ON wallet.entries (account_id, entry_id);
CREATE UNIQUE INDEX entries_idempotency_key_idx ON wallet.entries (account_id, idempotency_key);
CREATE INDEX entries_reference_idx ON wallet.entries (reference) WHERE reference IS NOT NULL;
-- a hold is closed at most once, an entry reversed at most once (refunds take
-- back parts of an accrual several times)
CREATE UNIQUE INDEX entries_hold_closed_idx ON wallet.entries (hold_id) WHERE kind IN ('capture', 'release');
CREATE UNIQUE INDEX entries_reverses_idx ON wallet.entries (reverses) WHERE kind = 'reverse';
COMMENT ON TABLE wallet.entries IS 'append-only journal: one entry per change of an account''s ledger';
COMMENT ON COLUMN wallet.entries.entry_id IS 'entry id, increasing in the order changes were applied to an account';
COMMENT ON COLUMN wallet.entries.account_id IS 'account changed (a wallet.accounts.account_id)';
COMMENT ON COLUMN wallet.entries.kind IS 'accrue, redeem, hold, capture, release, expire, reverse, adjust or refund (part of a purchase''s accrual taken back)';
COMMENT ON COLUMN wallet.entries.amount IS 'signed change of the spendable balance (0 where nothing spendable changed, e.g. a full capture)';
COMMENT ON COLUMN wallet.entries.balance_after IS 'spendable balance right after the change (open holds held): the previous entry''s balance_after plus amount';
COMMENT ON COLUMN wallet.entries.idempotency_key IS 'caller''s key, unique per account forever (NULL for expire, and for a capture or release made without one)';
COMMENT ON COLUMN wallet.entries.reason IS 'why the change was made';
COMMENT ON COLUMN wallet.entries.reference IS 'external reference such as an order id (indexed); capture, release and reverse copy it from their hold or entry';
COMMENT ON COLUMN wallet.entries.lots IS 'lots touched, as [{"points": n, "expires_at": ts or null}]: created, consumed, held, released, expired or restored';
COMMENT ON COLUMN wallet.entries.hold_id IS 'the hold entry for hold, capture and release entries';
COMMENT ON COLUMN wallet.entries.reverses IS 'entry undone by a reverse entry, or the accrual a refund entry takes part of back';
COMMENT ON COLUMN wallet.entries.actor IS 'current_user that made the change';
COMMENT ON COLUMN wallet.entries.created_at IS 'instant the change was applied at (taken after the account was locked)';
COMMENT ON COLUMN wallet.entries.points IS 'points the caller asked for (signed for adjust; NULL for a full capture, release, expire, reverse)';
COMMENT ON COLUMN wallet.entries.expires_at IS 'accrue/adjust: expiry of the lot; hold: end of the hold; expire, and release of a lapsed hold: the as_of instant it took effect at';
COMMENT ON COLUMN wallet.entries.policy IS 'reverse and refund: within_balance or unlimited';
COMMENT ON COLUMN wallet.entries.merchant_id IS 'merchant of the account (copied from it when posted): the key to distribute by';

-- pg_dump dumps the rows of these extension tables (and where their ids
-- stand), so a dump and restore keeps every program, account and entry.
SELECT pg_catalog.pg_extension_config_dump('wallet.programs', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.programs_program_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.accounts', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.accounts_account_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.entries', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.entries_entry_id_seq', '');

CREATE FUNCTION wallet_internal.entries_append_only() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RAISE EXCEPTION 'journal is append-only'
        USING ERRCODE = 'WL213',
              DETAIL = format('%s on wallet.entries is refused: every change of a ledger stays in the journal.', TG_OP),
              HINT = 'Correct a posting with wallet.reverse or wallet.adjust.';
END
$$;
COMMENT ON FUNCTION wallet_internal.entries_append_only() IS 'trigger function refusing UPDATE, DELETE and TRUNCATE on wallet.entries';
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON wallet.entries
    FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.entries_append_only();
COMMENT ON TRIGGER entries_append_only ON wallet.entries IS 'refuses UPDATE, DELETE and TRUNCATE of the journal (WL213): entries are only ever added';

-- ---------------------------------------------------------------- helpers

-- Argument checks every posting shares.  points NULL = the operation takes
-- none; verb names it in the message; signed: non-zero instead of positive.
CREATE FUNCTION wallet_internal.check_posting(points bigint, reason text, idempotency_key text, verb text,
        signed boolean DEFAULT false) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF verb IS NOT NULL AND points IS NULL THEN
        RAISE EXCEPTION 'points must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = format('The points to %s must be given.', verb);
    END IF;
    IF verb IS NOT NULL AND (points = 0 OR (points < 0 AND NOT signed)) THEN
        RAISE EXCEPTION 'invalid amount of points'
            USING ERRCODE = 'WL204',
                  DETAIL = CASE WHEN signed THEN format('The points to %s must be a non-zero number.', verb)
                                ELSE format('The points to %s must be a positive number.', verb) END;
    END IF;
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'reason must not be %', CASE WHEN reason IS NULL THEN 'null' ELSE 'blank' END
            USING ERRCODE = CASE WHEN reason IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'Every posting needs a non-blank reason, so the journal explains it.';
    END IF;
    IF idempotency_key IS NULL OR btrim(idempotency_key) = '' THEN
        RAISE EXCEPTION 'idempotency key must not be %', CASE WHEN idempotency_key IS NULL THEN 'null' ELSE 'blank' END
            USING ERRCODE = CASE WHEN idempotency_key IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'Every posting needs a non-blank idempotency key, so that a retry cannot post twice.';
    END IF;
    -- a key of a unique index, like the idempotency keys of the redemption API
    IF length(idempotency_key) > 256 THEN
        RAISE EXCEPTION 'idempotency key is too long'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('An idempotency key has at most 256 characters; this one has %s.', length(idempotency_key));
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.check_posting(bigint, text, text, text, boolean) IS 'raises 22004 for NULL points, reason or idempotency key, WL204 for a zero or (unless signed) negative amount, 22023 for a blank reason or a blank or over-long idempotency key';

-- The keys the extension journals its own postings under, on the member's
-- account: a purchase's accrual (purchase:<order_ref>), a refund
-- (refund:<refund_ref>), an offer's cashback (offer:<order_ref>:<offer_id>),
-- referral and share rewards (referral:..., share:...).  An app's posting
-- under one of them would later block that order, refund or reward for good
-- (its key taken), so the posting API refuses them (src/ledger_ops.c).
CREATE FUNCTION wallet_internal.check_app_key(idempotency_key text) RETURNS void
    LANGUAGE C IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'check_app_key';
COMMENT ON FUNCTION wallet_internal.check_app_key(text) IS 'internal: raises 22023 for an app''s idempotency key starting with purchase:, refund:, offer:, referral: or share: (the extension''s own postings are journalled under those)';

-- The idempotency fingerprint of a posting (see wallet_internal.idem_check): what the
-- caller decided, read from a journal entry, or from the entry a retry would
-- post (built with the first entry's instant, so that expiries derived from
-- it compare).  Not what the ledger made of it (amount, lots).
CREATE FUNCTION wallet_internal.idem_entry(e wallet.entries) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN jsonb_build_object('operation', e.kind, 'points', e.points, 'reason', e.reason, 'reference', e.reference,
                                 'expires_at', e.expires_at, 'reverses', e.reverses, 'policy', e.policy,
                                 'hold_id', CASE WHEN e.kind IN ('capture', 'release') THEN e.hold_id END);
END
$$;
COMMENT ON FUNCTION wallet_internal.idem_entry(wallet.entries) IS 'internal: idempotency fingerprint of a posting (operation, points, reason, reference, expires_at, reversed entry, policy, captured or released hold)';

-- The entry posted on an account with an optional idempotency key (no
-- fields set when there is none, or no key); a blank key is refused.
CREATE FUNCTION wallet_internal.entry_by_key(account_id bigint, idempotency_key text) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    e wallet.entries;
BEGIN
    IF btrim(idempotency_key) = '' THEN
        RAISE EXCEPTION 'idempotency key must not be blank'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'An idempotency key names one request; pass NULL to go without one.';
    END IF;
    -- as check_posting: a key of a unique index
    IF length(idempotency_key) > 256 THEN
        RAISE EXCEPTION 'idempotency key is too long'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('An idempotency key has at most 256 characters; this one has %s.', length(idempotency_key));
    END IF;
    IF idempotency_key IS NOT NULL THEN
        SELECT * INTO e FROM wallet.entries x
         WHERE x.account_id = entry_by_key.account_id AND x.idempotency_key = entry_by_key.idempotency_key;
    END IF;
    RETURN e;
END
$$;
COMMENT ON FUNCTION wallet_internal.entry_by_key(bigint, text) IS 'internal: the entry posted on the account with an optional idempotency key (22023 for a blank one or one over 256 characters)';

CREATE FUNCTION wallet_internal.unknown_account(account_id bigint) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF account_id IS NULL THEN
        RAISE EXCEPTION 'account_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A points account is named by its id.';
    END IF;
    RAISE EXCEPTION 'unknown account'
        USING ERRCODE = 'WL201', DETAIL = format('There is no points account %s.', account_id);
END
$$;
COMMENT ON FUNCTION wallet_internal.unknown_account(bigint) IS 'raises WL201 for an account id that does not exist, 22004 for a NULL one';

CREATE FUNCTION wallet_internal.program_closed(program_id bigint) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RAISE EXCEPTION 'program closed'
        USING ERRCODE = 'WL202',
              DETAIL = format('Points program %s is closed: it takes no new accounts, accruals, redemptions, holds or adjustments.', program_id);
END
$$;
COMMENT ON FUNCTION wallet_internal.program_closed(bigint) IS 'raises WL202 for a closed program';

-- The one mapping of a journal entry onto wallet.ledger_apply, used both to
-- post (wallet_internal.post_entry) and to replay (wallet.replay_ledger).
CREATE FUNCTION wallet_internal.entry_step(l wallet.points_ledger, e wallet.entries) RETURNS wallet.ledger_step
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    o wallet.entries;
BEGIN
    CASE e.kind
    WHEN 'accrue', 'redeem', 'adjust' THEN
        RETURN wallet.ledger_apply(l, e.kind, e.created_at, e.points, e.expires_at);
    WHEN 'hold' THEN
        RETURN wallet.ledger_apply(l, 'hold', e.created_at, e.points, e.expires_at, e.entry_id);
    WHEN 'capture' THEN
        RETURN wallet.ledger_apply(l, 'capture', e.created_at, e.points, NULL, e.hold_id);
    WHEN 'release' THEN
        -- a lapsed hold settled by expire_points takes effect at its as_of
        RETURN wallet.ledger_apply(l, 'release', coalesce(e.expires_at, e.created_at), NULL, NULL, e.hold_id);
    WHEN 'expire' THEN
        RETURN wallet.ledger_apply(l, 'expire', e.expires_at, NULL);
    WHEN 'reverse' THEN
        SELECT * INTO o FROM wallet.entries WHERE entry_id = e.reverses;
        IF o.kind = 'accrue' THEN
            RETURN wallet.ledger_apply(l, 'reverse_accrual', e.created_at, o.points, o.expires_at,
                                       policy => e.policy, earned_at => o.created_at);
        END IF;
        RETURN wallet.ledger_apply(l, 'restore', e.created_at, NULL,
            lot_points => ARRAY(SELECT (x->>'points')::bigint FROM jsonb_array_elements(o.lots) WITH ORDINALITY AS j(x, n) ORDER BY n),
            lot_expiries => ARRAY(SELECT (x->>'expires_at')::timestamptz FROM jsonb_array_elements(o.lots) WITH ORDINALITY AS j(x, n) ORDER BY n));
    WHEN 'refund' THEN
        -- a purchase refund (wallet.record_refund): part of an accrual taken back
        SELECT * INTO o FROM wallet.entries WHERE entry_id = e.reverses;
        RETURN wallet.ledger_apply(l, 'reverse_accrual', e.created_at, e.points, o.expires_at,
                                   policy => e.policy, earned_at => o.created_at);
    END CASE;
END
$$;
COMMENT ON FUNCTION wallet_internal.entry_step(wallet.points_ledger, wallet.entries) IS 'applies journal entry e to ledger l (the single mapping used by posting and by replay)';

-- Apply e to the locked account's ledger l, store the new ledger, journal e.
CREATE FUNCTION wallet_internal.post_entry(l wallet.points_ledger, e wallet.entries) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    s wallet.ledger_step;
    pid bigint;
BEGIN
    IF e.entry_id IS NULL THEN
        e.entry_id := nextval('wallet.entries_entry_id_seq');
    END IF;
    s := wallet_internal.entry_step(l, e);
    e.amount := s.amount;
    e.balance_after := s.balance_after;
    e.lots := s.lots;
    e.actor := current_user;
    -- the merchant comes from the locked account row the update writes anyway
    UPDATE wallet.accounts SET ledger = s.ledger, next_event = s.next_event WHERE account_id = e.account_id
    RETURNING merchant_id, program_id INTO e.merchant_id, pid;
    INSERT INTO wallet.entries (entry_id, account_id, kind, amount, balance_after, idempotency_key, reason, reference,
                                lots, hold_id, reverses, actor, created_at, points, expires_at, policy, merchant_id)
    VALUES (e.entry_id, e.account_id, e.kind, e.amount, e.balance_after, e.idempotency_key, e.reason, e.reference,
            e.lots, e.hold_id, e.reverses, e.actor, e.created_at, e.points, e.expires_at, e.policy, e.merchant_id)
    RETURNING * INTO e;
    -- tiers (README "Tiers"): points earned change only by accruals, their
    -- reversals and refunds of purchases; the posting that crosses a
    -- threshold upgrades, one that leaves the account below its tier starts
    -- its grace
    IF e.kind IN ('accrue', 'reverse', 'refund') AND wallet_internal.tier_posting_review(pid, e.account_id, s.ledger, e.created_at) THEN
        PERFORM wallet_internal.tier_review(e.account_id, e.created_at, e.entry_id);
    END IF;
    RETURN e;
END
$$;
COMMENT ON FUNCTION wallet_internal.post_entry(wallet.points_ledger, wallet.entries) IS 'applies entry e to the locked account''s ledger l, stores the result and journals e; an accrual, reversal or refund in a tiered program reviews the account''s tier when it may change (wallet_internal.tier_posting_review, tier_review)';

-- Journal what time did to a locked account up to as_of: one expire entry
-- for the spendable lots dead at as_of, then a release (taking effect at
-- as_of, recorded in expires_at) for each lapsed hold.  Returns the number of
-- expire entries posted (0 or 1).
CREATE FUNCTION wallet_internal.settle_account(account_id bigint, as_of timestamptz, at timestamptz) RETURNS int
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    l wallet.points_ledger;
    h record;
    e wallet.entries;
    n int := 0;
BEGIN
    SELECT a.ledger INTO l FROM wallet.accounts a WHERE a.account_id = settle_account.account_id;
    IF EXISTS (SELECT FROM wallet.ledger_lots(l) x WHERE x.hold_id IS NULL AND x.expires_at <= as_of) THEN
        e.account_id := settle_account.account_id;
        e.kind := 'expire';
        e.reason := 'points expired';
        e.created_at := at;
        e.expires_at := as_of;
        PERFORM wallet_internal.post_entry(l, e);
        SELECT a.ledger INTO l FROM wallet.accounts a WHERE a.account_id = settle_account.account_id;
        n := 1;
    END IF;
    FOR h IN SELECT DISTINCT x.hold_id FROM wallet.ledger_lots(l) x
              WHERE x.hold_expires_at <= as_of ORDER BY x.hold_id LOOP
        e := NULL;
        e.account_id := settle_account.account_id;
        e.kind := 'release';
        e.reason := 'hold expired';
        e.reference := (SELECT x.reference FROM wallet.entries x WHERE x.entry_id = h.hold_id);
        e.hold_id := h.hold_id;
        e.created_at := at;
        e.expires_at := as_of;
        PERFORM wallet_internal.post_entry(l, e);
        SELECT a.ledger INTO l FROM wallet.accounts a WHERE a.account_id = settle_account.account_id;
    END LOOP;
    -- FOUND: the loop released a hold
    IF NOT FOUND AND n = 0 THEN
        -- nothing was due after all: keep next_event exact anyway
        UPDATE wallet.accounts a SET next_event = (wallet.ledger_apply(l, 'expire', as_of, NULL)).next_event
         WHERE a.account_id = settle_account.account_id;
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet_internal.settle_account(bigint, timestamptz, timestamptz) IS 'journals lapsed holds (release) and expired lots (expire) of a locked account up to as_of';

-- Lock an account and read what every posting needs; settles it first when
-- a lot expired or a hold lapsed since the last change.  prior is the entry
-- already posted with idempotency_key, looked up under the lock so that a
-- concurrent call with the same key has committed (or rolled back) by then.
CREATE TYPE wallet_internal.locked_account AS (
    ledger      wallet.points_ledger,
    program_id  bigint,
    closed      boolean,
    expiry      interval,
    granularity text,
    prior       wallet.entries,
    at          timestamptz
);
COMMENT ON TYPE wallet_internal.locked_account IS 'what wallet_internal.lock_account returns to a posting';
COMMENT ON COLUMN wallet_internal.locked_account.ledger IS 'the account''s ledger, settled up to the posting''s instant';
COMMENT ON COLUMN wallet_internal.locked_account.program_id IS 'program of the account';
COMMENT ON COLUMN wallet_internal.locked_account.closed IS 'whether the program is closed';
COMMENT ON COLUMN wallet_internal.locked_account.expiry IS 'the program''s expiry (NULL = never)';
COMMENT ON COLUMN wallet_internal.locked_account.granularity IS 'the program''s expiry granularity';
COMMENT ON COLUMN wallet_internal.locked_account.prior IS 'entry already posted on the account with the idempotency key, if any';
COMMENT ON COLUMN wallet_internal.locked_account.at IS 'the posting''s instant: the clock right after the lock was granted, so entries of an account are in time order';

CREATE FUNCTION wallet_internal.lock_account(account_id bigint, idempotency_key text DEFAULT NULL)
    RETURNS wallet_internal.locked_account
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    due timestamptz;
    r wallet_internal.locked_account;
    prior wallet.entries;
BEGIN
    SELECT a.ledger, a.program_id, a.next_event, p.closed_at IS NOT NULL, p.expiry, p.granularity
      INTO r.ledger, r.program_id, due, r.closed, r.expiry, r.granularity
      FROM wallet.accounts a JOIN wallet.programs p ON p.program_id = a.program_id
     WHERE a.account_id = lock_account.account_id AND wallet.acts_for(p.merchant_id)
       FOR NO KEY UPDATE OF a;
    IF NOT FOUND THEN
        PERFORM wallet_internal.unknown_account(lock_account.account_id);
    END IF;
    r.at := clock_timestamp();
    IF idempotency_key IS NOT NULL THEN
        SELECT * INTO prior FROM wallet.entries x
         WHERE x.account_id = lock_account.account_id AND x.idempotency_key = lock_account.idempotency_key;
        IF FOUND THEN
            r.prior := prior;
            RETURN r;   -- a retry: nothing will be posted, nothing to settle
        END IF;
    END IF;
    IF due <= r.at THEN
        PERFORM wallet_internal.settle_account(lock_account.account_id, r.at, r.at);
        SELECT a.ledger INTO r.ledger FROM wallet.accounts a WHERE a.account_id = lock_account.account_id;
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet_internal.lock_account(bigint, text) IS 'locks an account row for a posting, settles due expiries and lapsed holds, returns its ledger, program policy and the entry already posted with idempotency_key';

-- What a posting does once its account is locked: return the earlier entry
-- of a retry (same fingerprint: the caller built e with the earlier entry's
-- instant), refuse a reused key (WL002) or a closed program (WL202), else
-- post e.
CREATE FUNCTION wallet_internal.post_once(a wallet_internal.locked_account, e wallet.entries, check_closed boolean DEFAULT true)
    RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF (a.prior).entry_id IS NOT NULL THEN
        PERFORM wallet_internal.idem_check((a.prior).idempotency_key,
                                  format('%s entry %s on account %s', (a.prior).kind, (a.prior).entry_id, (a.prior).account_id),
                                  wallet_internal.idem_entry(a.prior), wallet_internal.idem_entry(e));
        RETURN a.prior;
    END IF;
    IF check_closed AND a.closed THEN
        PERFORM wallet_internal.program_closed(a.program_id);
    END IF;
    RETURN wallet_internal.post_entry(a.ledger, e);
END
$$;
COMMENT ON FUNCTION wallet_internal.post_once(wallet_internal.locked_account, wallet.entries, boolean) IS 'after lock_account: returns the prior entry of a retry with the same fingerprint, raises WL002 for a reused key or WL202 for a closed program, else posts e';

-- ---------------------------------------------------------------- programs and accounts

CREATE FUNCTION wallet.create_program(merchant_id bigint, name text, expiry interval DEFAULT NULL,
        granularity text DEFAULT 'day') RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
BEGIN
    IF merchant_id IS NULL OR name IS NULL OR granularity IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN merchant_id IS NULL THEN 'merchant_id' WHEN name IS NULL THEN 'program name' ELSE 'granularity' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A points program belongs to a merchant and has a name and an expiry granularity.';
    END IF;
    IF btrim(name) = '' OR length(name) > 200 THEN
        RAISE EXCEPTION 'program name must not be %', CASE WHEN btrim(name) = '' THEN 'blank' ELSE 'longer than 200 characters' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A points program needs a name that people can recognise.';
    END IF;
    IF expiry <= interval '0' OR expiry > interval '100 years' THEN
        RAISE EXCEPTION 'expiry must be %', CASE WHEN expiry <= interval '0' THEN 'positive' ELSE 'at most 100 years' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Points expire a positive time of at most 100 years after they are earned, or never (NULL).';
    END IF;
    IF granularity NOT IN ('day', 'month') THEN
        RAISE EXCEPTION 'unknown granularity "%"', granularity
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Expiry is rounded up to the end of a ''day'' or a ''month''.';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.merchants m WHERE m.merchant_id = create_program.merchant_id AND wallet.acts_for(m.merchant_id)) THEN
        RAISE EXCEPTION 'merchant % does not exist', merchant_id
            USING ERRCODE = 'WL102', DETAIL = 'Programs belong to a merchant registered in wallet.merchants.',
                  HINT = 'Register the merchant with wallet.create_merchant first.';
    END IF;
    INSERT INTO wallet.programs (merchant_id, name, expiry, granularity)
    VALUES (create_program.merchant_id, create_program.name, create_program.expiry, create_program.granularity)
    RETURNING program_id INTO id;
    RETURN id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'program "%" already exists', name
        USING ERRCODE = 'unique_violation', DETAIL = 'Program names are unique per merchant.';
END
$$;
COMMENT ON FUNCTION wallet.create_program(bigint, text, interval, text) IS 'creates a points program with its expiry policy (0 to 100 years, NULL = never; rounded up to the end of the UTC day or month) and returns its id';

CREATE FUNCTION wallet.close_program(program_id bigint) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF program_id IS NULL THEN
        RAISE EXCEPTION 'program_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A points program is named by its id.';
    END IF;
    UPDATE wallet.programs p SET closed_at = coalesce(p.closed_at, now())
     WHERE p.program_id = close_program.program_id AND wallet.acts_for(p.merchant_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
END
$$;
COMMENT ON FUNCTION wallet.close_program(bigint) IS 'closes a program: no new accounts, accruals, redemptions, holds or adjustments; open holds can still be captured or released, postings reversed, points expired (idempotent)';

CREATE FUNCTION wallet.open_account(program_id bigint, member_ref text) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
    is_closed boolean;
    merchant bigint;
    member bigint;
BEGIN
    IF program_id IS NULL OR member_ref IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN program_id IS NULL THEN 'program_id' ELSE 'member reference' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'An account is opened in a points program for the merchant app''s own user id.';
    END IF;
    IF btrim(member_ref) = '' THEN
        RAISE EXCEPTION 'member reference must not be blank'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An account is opened for the merchant app''s own user id.';
    END IF;
    -- a key of a unique index, like the member references of the redemption API
    IF length(member_ref) > 256 THEN
        RAISE EXCEPTION 'member reference is too long'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A member reference has at most 256 characters; this one has %s.', length(member_ref));
    END IF;
    SELECT p.closed_at IS NOT NULL, p.merchant_id INTO is_closed, merchant FROM wallet.programs p WHERE p.program_id = open_account.program_id AND wallet.acts_for(p.merchant_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
    member := wallet_internal.member_ensure(merchant, member_ref);   -- the member exists afterwards, whatever follows
    SELECT a.account_id INTO id FROM wallet.accounts a
     WHERE a.program_id = open_account.program_id AND a.member_ref = open_account.member_ref;
    IF FOUND THEN
        RETURN id;
    END IF;
    IF is_closed THEN
        PERFORM wallet_internal.program_closed(program_id);
    END IF;
    -- a concurrent open of the same member waits on the unique index, then finds the row
    INSERT INTO wallet.accounts (program_id, member_ref, member_id, merchant_id)
    VALUES (open_account.program_id, open_account.member_ref, member, merchant)
    ON CONFLICT ON CONSTRAINT accounts_program_id_member_ref_key DO NOTHING
    RETURNING account_id INTO id;
    IF id IS NULL THEN
        SELECT a.account_id INTO id FROM wallet.accounts a
         WHERE a.program_id = open_account.program_id AND a.member_ref = open_account.member_ref;
    END IF;
    RETURN id;
END
$$;
COMMENT ON FUNCTION wallet.open_account(bigint, text) IS 'returns the account of member_ref in the program, opening it (and creating the member, see wallet.members) if needed (idempotent, race-safe)';

-- VOLATILE like the read side (see there): it finds an account opened earlier
-- in the same statement.
CREATE FUNCTION wallet.find_account(program_id bigint, member_ref text) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
BEGIN
    IF program_id IS NULL OR member_ref IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN program_id IS NULL THEN 'program_id' ELSE 'member_ref' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'An account is found by its program and the merchant app''s own user id.';
    END IF;
    IF btrim(member_ref) = '' OR length(member_ref) > 256 THEN
        RAISE EXCEPTION 'member reference must not be %', CASE WHEN btrim(member_ref) = '' THEN 'blank' ELSE 'longer than 256 characters' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An account is found by the merchant app''s own user id.';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.programs p WHERE p.program_id = find_account.program_id AND wallet.acts_for(p.merchant_id)) THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
    SELECT a.account_id INTO id FROM wallet.accounts a
     WHERE a.program_id = find_account.program_id AND a.member_ref = find_account.member_ref;
    RETURN id;
END
$$;
COMMENT ON FUNCTION wallet.find_account(bigint, text) IS 'the account of member_ref in the program, or NULL when the member has none (never opens one; read-only)';

-- ---------------------------------------------------------------- postings

-- An accrual as wallet.accrue posts it, also under the extension's own keys
-- (offers' cashback, referral and share rewards call it).
CREATE FUNCTION wallet_internal.accrue_entry(account_id bigint, points bigint, idempotency_key text, reason text,
        reference text, expires_at timestamptz) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    at timestamptz;
    a wallet_internal.locked_account;
    e wallet.entries;
BEGIN
    PERFORM wallet_internal.check_posting(points, reason, idempotency_key, 'accrue');
    IF NOT isfinite(expires_at) THEN
        RAISE EXCEPTION 'expires_at must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Points expire at a real instant, or per the program''s policy (NULL), which may be never.';
    END IF;
    -- an indexed key (wallet.entries_reference_idx), like order_ref
    IF length(reference) > 200 THEN
        RAISE EXCEPTION 'reference must not be longer than 200 characters'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('A reference, such as an order id, has at most 200 characters; this one has %s.', length(reference));
    END IF;
    a := wallet_internal.lock_account(account_id, idempotency_key);
    at := coalesce((a.prior).created_at, a.at);   -- a retry is compared as made when the first call was
    e.account_id := account_id;
    e.kind := 'accrue';
    e.idempotency_key := idempotency_key;
    e.reason := reason;
    e.reference := reference;
    e.created_at := at;
    e.points := points;
    e.expires_at := coalesce(expires_at, wallet.policy_expiry(at, a.expiry, a.granularity));
    RETURN wallet_internal.post_once(a, e);
END
$$;
COMMENT ON FUNCTION wallet_internal.accrue_entry(bigint, bigint, text, text, text, timestamptz) IS 'internal: wallet.accrue without the check of the app''s key (the extension''s own accruals: offers'' cashback, referral and share rewards)';

CREATE FUNCTION wallet.accrue(account_id bigint, points bigint, idempotency_key text, reason text,
        reference text DEFAULT NULL, expires_at timestamptz DEFAULT NULL) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.check_app_key(idempotency_key);
    RETURN wallet_internal.accrue_entry(account_id, points, idempotency_key, reason, reference, expires_at);
END
$$;
COMMENT ON FUNCTION wallet.accrue(bigint, bigint, text, text, text, timestamptz) IS 'credits points (a debt is paid off first) expiring at expires_at or per the program policy (NULL); an infinite expires_at is 22023; idempotent on idempotency_key (22023 for one starting with purchase:, refund:, offer:, referral: or share:, the extension''s own)';

CREATE FUNCTION wallet.redeem(account_id bigint, points bigint, idempotency_key text, reason text,
        reference text DEFAULT NULL) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    a wallet_internal.locked_account;
    e wallet.entries;
BEGIN
    PERFORM wallet_internal.check_posting(points, reason, idempotency_key, 'redeem');
    PERFORM wallet_internal.check_app_key(idempotency_key);
    -- an indexed key (wallet.entries_reference_idx), like order_ref
    IF length(reference) > 200 THEN
        RAISE EXCEPTION 'reference must not be longer than 200 characters'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('A reference, such as an order id, has at most 200 characters; this one has %s.', length(reference));
    END IF;
    a := wallet_internal.lock_account(account_id, idempotency_key);
    e.account_id := account_id;
    e.kind := 'redeem';
    e.idempotency_key := idempotency_key;
    e.reason := reason;
    e.reference := reference;
    e.created_at := a.at;
    e.points := points;
    RETURN wallet_internal.post_once(a, e);
END
$$;
COMMENT ON FUNCTION wallet.redeem(bigint, bigint, text, text, text) IS 'spends points, soonest-expiring lots first (WL203 when not enough are spendable); idempotent on idempotency_key';

CREATE FUNCTION wallet.hold(account_id bigint, points bigint, idempotency_key text, ttl interval, reason text,
        reference text DEFAULT NULL) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    at timestamptz;
    a wallet_internal.locked_account;
    e wallet.entries;
BEGIN
    PERFORM wallet_internal.check_posting(points, reason, idempotency_key, 'hold');
    PERFORM wallet_internal.check_app_key(idempotency_key);
    -- an indexed key (wallet.entries_reference_idx), like order_ref
    IF length(reference) > 200 THEN
        RAISE EXCEPTION 'reference must not be longer than 200 characters'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('A reference, such as an order id, has at most 200 characters; this one has %s.', length(reference));
    END IF;
    IF ttl IS NULL THEN
        RAISE EXCEPTION 'time to live must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A hold lasts a given time, after which it stops holding.';
    END IF;
    IF ttl <= interval '0' OR ttl > interval '100 years' THEN
        RAISE EXCEPTION 'time to live must be %', CASE WHEN ttl <= interval '0' THEN 'positive' ELSE 'at most 100 years' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A hold lasts a positive time of at most 100 years, after which it stops holding.';
    END IF;
    a := wallet_internal.lock_account(account_id, idempotency_key);
    at := coalesce((a.prior).created_at, a.at);   -- a retry is compared as made when the first call was
    -- the hold id is the entry id, known before the ledger changes
    e.entry_id := CASE WHEN (a.prior).entry_id IS NULL THEN nextval('wallet.entries_entry_id_seq') END;
    e.hold_id := e.entry_id;
    e.account_id := account_id;
    e.kind := 'hold';
    e.idempotency_key := idempotency_key;
    e.reason := reason;
    e.reference := reference;
    e.created_at := at;
    e.points := points;
    e.expires_at := at + ttl;
    RETURN wallet_internal.post_once(a, e);
END
$$;
COMMENT ON FUNCTION wallet.hold(bigint, bigint, text, interval, text, text) IS 'takes points out of the spendable balance for ttl (at most 100 years); the returned entry_id is the hold id; idempotent on idempotency_key';

-- Find a hold and lock its account; returns the closing entry if there is one.
CREATE FUNCTION wallet_internal.lock_hold(hold_id bigint,
        OUT h wallet.entries, OUT closing wallet.entries, OUT ledger wallet.points_ledger, OUT at timestamptz)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF hold_id IS NULL THEN
        RAISE EXCEPTION 'hold_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A hold is named by its id, the entry_id of its hold entry.';
    END IF;
    SELECT * INTO h FROM wallet.entries x WHERE x.entry_id = lock_hold.hold_id AND x.kind = 'hold' AND wallet_internal.sees_account(x.account_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown hold'
            USING ERRCODE = 'WL206', DETAIL = format('There is no hold %s.', hold_id);
    END IF;
    SELECT * INTO closing FROM wallet.entries x
     WHERE x.hold_id = lock_hold.hold_id AND x.kind IN ('capture', 'release');
    at := clock_timestamp();
    IF closing.entry_id IS NULL THEN
        SELECT x.ledger, x.at INTO ledger, at FROM wallet_internal.lock_account(h.account_id) x;
        -- look again under the lock: a concurrent capture or release may have closed it
        SELECT * INTO closing FROM wallet.entries x
         WHERE x.hold_id = lock_hold.hold_id AND x.kind IN ('capture', 'release');
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.lock_hold(bigint) IS 'finds hold hold_id (WL206 if none, 22004 if NULL), locks its account unless already closed, returns the closing capture or release entry if any';

CREATE FUNCTION wallet_internal.hold_not_open(hold_id bigint, closing wallet.entries) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RAISE EXCEPTION 'hold not open'
        USING ERRCODE = 'WL207',
              DETAIL = format('Hold %s was already closed by %s entry %s.', hold_id, closing.kind, closing.entry_id);
END
$$;
COMMENT ON FUNCTION wallet_internal.hold_not_open(bigint, wallet.entries) IS 'raises WL207 for a hold already captured or released';

CREATE FUNCTION wallet.capture(hold_id bigint, points bigint DEFAULT NULL, idempotency_key text DEFAULT NULL)
    RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    at timestamptz;
    k record;
    a wallet_internal.locked_account;
    e wallet.entries;
BEGIN
    IF points IS NOT NULL AND points <= 0 THEN
        RAISE EXCEPTION 'invalid amount of points'
            USING ERRCODE = 'WL204', DETAIL = 'The points to capture must be a positive number, or NULL for the whole hold.';
    END IF;
    k := wallet_internal.lock_hold(hold_id);
    at := k.at;
    e.account_id := (k.h).account_id;
    e.kind := 'capture';
    e.idempotency_key := idempotency_key;
    e.reason := (k.h).reason;
    e.reference := (k.h).reference;
    e.hold_id := hold_id;
    e.points := points;
    PERFORM wallet_internal.check_app_key(idempotency_key);
    a.prior := wallet_internal.entry_by_key((k.h).account_id, idempotency_key);
    IF (a.prior).entry_id IS NOT NULL THEN
        RETURN wallet_internal.post_once(a, e);   -- a retry (or WL002)
    END IF;
    IF idempotency_key IS NULL AND (k.closing).kind = 'capture' AND (k.closing).points IS NOT DISTINCT FROM capture.points THEN
        RETURN k.closing;   -- the identical call without a key, repeated
    END IF;
    IF at >= (k.h).expires_at THEN
        RAISE EXCEPTION 'hold expired'
            USING ERRCODE = 'WL208',
                  DETAIL = format('Hold %s stopped holding its points when its time to live ran out.', hold_id);
    END IF;
    IF (k.closing).entry_id IS NOT NULL THEN
        PERFORM wallet_internal.hold_not_open(hold_id, k.closing);
    END IF;
    e.created_at := at;
    RETURN wallet_internal.post_entry(k.ledger, e);
END
$$;
COMMENT ON FUNCTION wallet.capture(bigint, bigint, text) IS 'redeems all (points NULL) or part of a hold within its time to live; the rest becomes spendable again; idempotent on the optional idempotency_key';

CREATE FUNCTION wallet.release(hold_id bigint, idempotency_key text DEFAULT NULL) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    k record;
    a wallet_internal.locked_account;
    e wallet.entries;
BEGIN
    k := wallet_internal.lock_hold(hold_id);
    e.account_id := (k.h).account_id;
    e.kind := 'release';
    e.idempotency_key := idempotency_key;
    e.reason := (k.h).reason;
    e.reference := (k.h).reference;
    e.hold_id := hold_id;
    PERFORM wallet_internal.check_app_key(idempotency_key);
    a.prior := wallet_internal.entry_by_key((k.h).account_id, idempotency_key);
    IF (a.prior).entry_id IS NOT NULL THEN
        RETURN wallet_internal.post_once(a, e);   -- a retry (or WL002)
    END IF;
    IF (k.closing).kind = 'release' THEN
        RETURN k.closing;   -- released already (by this call before, or when the hold lapsed)
    ELSIF (k.closing).entry_id IS NOT NULL THEN
        PERFORM wallet_internal.hold_not_open(hold_id, k.closing);
    END IF;
    e.created_at := k.at;
    RETURN wallet_internal.post_entry(k.ledger, e);
END
$$;
COMMENT ON FUNCTION wallet.release(bigint, text) IS 'returns a hold''s points to the spendable balance; repeating it (or calling it after the hold lapsed) returns the release entry; idempotent on the optional idempotency_key';

CREATE FUNCTION wallet.reverse(entry_id bigint, idempotency_key text, reason text,
        policy text DEFAULT 'within_balance') RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    o wallet.entries;
    a wallet_internal.locked_account;
    e wallet.entries;
    r bigint;
BEGIN
    IF entry_id IS NULL OR policy IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN entry_id IS NULL THEN 'entry_id' ELSE 'policy' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A reversal names the entry it undoes and a policy, ''within_balance'' by default.';
    END IF;
    IF policy NOT IN ('within_balance', 'unlimited') THEN
        RAISE EXCEPTION 'unknown reversal policy "%"', policy
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The policy is ''within_balance'' or ''unlimited''.';
    END IF;
    PERFORM wallet_internal.check_posting(NULL, reason, idempotency_key, NULL);
    PERFORM wallet_internal.check_app_key(idempotency_key);
    SELECT * INTO o FROM wallet.entries x WHERE x.entry_id = reverse.entry_id AND wallet_internal.sees_account(x.account_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown entry'
            USING ERRCODE = 'WL212', DETAIL = format('There is no journal entry %s.', entry_id);
    END IF;
    a := wallet_internal.lock_account(o.account_id, idempotency_key);
    IF (a.prior).entry_id IS NULL THEN
        IF o.kind NOT IN ('accrue', 'redeem', 'capture') THEN
            RAISE EXCEPTION 'entry not reversible'
                USING ERRCODE = 'WL211',
                      DETAIL = format('Entry %s is a %s entry; only accrue, redeem and capture entries can be reversed.', entry_id, o.kind),
                      HINT = 'Correct other postings with wallet.adjust.';
        END IF;
        SELECT x.entry_id INTO r FROM wallet.entries x WHERE x.reverses = reverse.entry_id;
        IF FOUND THEN
            RAISE EXCEPTION 'entry already reversed'
                USING ERRCODE = 'WL210', DETAIL = format('Entry %s was reversed by entry %s.', entry_id, r);
        END IF;
    END IF;
    -- refunds and chargebacks must work after a program closed
    e.account_id := o.account_id;
    e.kind := 'reverse';
    e.idempotency_key := idempotency_key;
    e.reason := reason;
    e.reference := o.reference;
    e.reverses := entry_id;
    e.created_at := a.at;
    e.policy := policy;
    RETURN wallet_internal.post_once(a, e, check_closed => false);
END
$$;
COMMENT ON FUNCTION wallet.reverse(bigint, text, text, text) IS 'undoes an accrual (takes back its unspent points; unlimited: all of it, into debt if need be) or a redemption/capture (restores the lots with their original expiry); at most once per entry';

CREATE FUNCTION wallet.adjust(account_id bigint, points bigint, idempotency_key text, reason text) RETURNS wallet.entries
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    at timestamptz;
    a wallet_internal.locked_account;
    e wallet.entries;
BEGIN
    PERFORM wallet_internal.check_posting(points, reason, idempotency_key, 'adjust', signed => true);
    PERFORM wallet_internal.check_app_key(idempotency_key);
    a := wallet_internal.lock_account(account_id, idempotency_key);
    at := coalesce((a.prior).created_at, a.at);   -- a retry is compared as made when the first call was
    e.account_id := account_id;
    e.kind := 'adjust';
    e.idempotency_key := idempotency_key;
    e.reason := reason;
    e.created_at := at;
    e.points := points;
    e.expires_at := CASE WHEN points > 0 THEN wallet.policy_expiry(at, a.expiry, a.granularity) END;
    RETURN wallet_internal.post_once(a, e);
END
$$;
COMMENT ON FUNCTION wallet.adjust(bigint, bigint, text, text) IS 'manual correction: adds points (expiring per policy) or removes them (soonest-expiring first, within the balance); reason required';

-- as_of of an expiry run: an expire entry cannot be undone, so expiring as of
-- a future instant would take lots that are still valid for good.  "Now" is
-- the clock, which postings are stamped with (the transaction's now() is
-- never later, so the default always passes).
CREATE FUNCTION wallet_internal.check_expiry_as_of(as_of timestamptz) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF as_of IS NULL THEN
        RAISE EXCEPTION 'as_of must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Points are expired as of a given instant, now() by default.';
    END IF;
    IF NOT isfinite(as_of) THEN
        RAISE EXCEPTION 'as_of must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Points are expired as of a real instant, now() by default.';
    END IF;
    IF as_of > clock_timestamp() THEN
        RAISE EXCEPTION 'cannot expire points as of a future instant'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The instant %s is later than the current time; lots still valid until then would be expired for good.', as_of),
                  HINT = 'Omit as_of (it defaults to now()) or pass an instant that has passed.';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.check_expiry_as_of(timestamptz) IS 'raises 22004 for a NULL as_of and 22023 for an infinite as_of or one later than the current time (an expire entry cannot be undone)';

-- Settles due accounts as of as_of: at most batch_size of them, soonest due
-- first (all when NULL), each locked and settled in account order, so that
-- concurrent runs lock in the same order.  Returns how many accounts it
-- looked at and how many expire entries it posted.
CREATE FUNCTION wallet_internal.expire_due_accounts(as_of timestamptz, batch_size int,
        OUT accounts int, OUT expired bigint)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    acc bigint;
    due timestamptz;
    _mine bigint[] := wallet_internal.caller_merchants();   -- NULL: acts for all
BEGIN
    accounts := 0;
    expired := 0;
    FOR acc IN SELECT d.account_id
                 FROM (SELECT a.account_id FROM wallet.accounts a
                        WHERE a.next_event <= as_of AND (_mine IS NULL OR a.merchant_id = ANY (_mine))
                        ORDER BY a.next_event LIMIT batch_size) d
                ORDER BY d.account_id LOOP
        SELECT a.next_event INTO due FROM wallet.accounts a WHERE a.account_id = acc FOR NO KEY UPDATE;
        accounts := accounts + 1;
        IF due <= as_of THEN   -- a concurrent posting may have settled it meanwhile
            expired := expired + wallet_internal.settle_account(acc, as_of, clock_timestamp());
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION wallet_internal.expire_due_accounts(timestamptz, int) IS 'settles at most batch_size (NULL = all) accounts due at as_of of the merchants the caller acts for (every merchant for the extension''s owner or a superuser), in account order; returns the accounts looked at and the expire entries posted';

CREATE FUNCTION wallet.expire_points(as_of timestamptz DEFAULT now()) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.check_expiry_as_of(as_of);
    RETURN (wallet_internal.expire_due_accounts(as_of, NULL)).expired;
END
$$;
COMMENT ON FUNCTION wallet.expire_points(timestamptz) IS 'posts an expire entry per account (of the merchants the caller acts for; every merchant for the extension''s owner or a superuser) with lots expired at as_of (and a release for each lapsed hold) in the caller''s transaction; returns the number of expire entries; a second run posts nothing; as_of in the future is refused (22023); CALL wallet.expire_points_batched for many accounts';

-- ---------------------------------------------------------------- read side

-- The read functions that a caller may nest around a posting or an
-- open_account are VOLATILE, not STABLE: a STABLE function reads with the
-- snapshot of the calling statement, taken before the inner call wrote, so
-- wallet.balance(wallet.open_account(...)) would not find the account.  A
-- VOLATILE one takes a snapshot per query, which costs next to nothing here.

CREATE FUNCTION wallet.balance(account_id bigint, as_of timestamptz DEFAULT now()) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    b bigint;
BEGIN
    IF as_of IS NULL THEN
        RAISE EXCEPTION 'as_of must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The balance is taken at a given instant, now() by default.';
    END IF;
    IF NOT isfinite(as_of) THEN
        RAISE EXCEPTION 'as_of must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The balance is taken at a real instant, now() by default.';
    END IF;
    SELECT wallet.ledger_balance(a.ledger, as_of) INTO b FROM wallet.accounts a WHERE a.account_id = balance.account_id AND wallet_internal.sees_program(a.program_id);
    IF NOT FOUND THEN
        PERFORM wallet_internal.unknown_account(account_id);
    END IF;
    RETURN b;
END
$$;
COMMENT ON FUNCTION wallet.balance(bigint, timestamptz) IS 'points spendable at as_of (expired lots never count, whether or not expire_points ran); an infinite as_of is 22023';

-- Replays an account's journal (entries created up to upto) through
-- wallet_internal.entry_step; problem names the first entry whose replay disagrees
-- with what the journal recorded.
CREATE FUNCTION wallet.replay_ledger(account_id bigint, upto timestamptz DEFAULT 'infinity',
        OUT ledger wallet.points_ledger, OUT problem text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    e wallet.entries;
    s wallet.ledger_step;
BEGIN
    IF upto IS NULL THEN
        RAISE EXCEPTION 'upto must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The journal is replayed up to a given instant, infinity by default.';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.accounts a WHERE a.account_id = replay_ledger.account_id AND wallet_internal.sees_program(a.program_id)) THEN
        PERFORM wallet_internal.unknown_account(account_id);
    END IF;
    ledger := '';
    FOR e IN SELECT * FROM wallet.entries x WHERE x.account_id = replay_ledger.account_id AND x.created_at <= upto
              ORDER BY x.entry_id LOOP
        BEGIN
            s := wallet_internal.entry_step(ledger, e);
        EXCEPTION WHEN OTHERS THEN
            problem := format('Entry %s (%s) does not replay: %s.', e.entry_id, e.kind, SQLERRM);
            RETURN;
        END;
        IF problem IS NULL AND (s.amount <> e.amount OR s.balance_after <> e.balance_after) THEN
            problem := format('Entry %s (%s) replays to amount %s and balance %s, the journal says %s and %s.',
                              e.entry_id, e.kind, s.amount, s.balance_after, e.amount, e.balance_after);
        END IF;
        ledger := s.ledger;
    END LOOP;
END
$$;
COMMENT ON FUNCTION wallet.replay_ledger(bigint, timestamptz) IS 'rebuilds an account''s ledger from its journal entries created up to upto; problem names the first entry that disagrees';

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
CREATE FUNCTION wallet.balance_at(account_id bigint, ts timestamptz) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
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
    IF NOT isfinite(ts) THEN
        RAISE EXCEPTION 'ts must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The balance is taken at a real instant.';
    END IF;
    SELECT a.ledger INTO l FROM wallet.accounts a WHERE a.account_id = balance_at.account_id AND wallet_internal.sees_program(a.program_id);
    IF NOT FOUND THEN
        PERFORM wallet_internal.unknown_account(account_id);
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
COMMENT ON FUNCTION wallet.balance_at(bigint, timestamptz) IS 'spendable balance at instant ts, as the journal up to ts gives it (from the last entry''s balance_after; replayed only when a lot expired or a hold lapsed between that entry and the next); an infinite ts is 22023';

CREATE FUNCTION wallet.history(account_id bigint, from_ts timestamptz DEFAULT '-infinity',
        to_ts timestamptz DEFAULT 'infinity') RETURNS SETOF wallet.entries
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF from_ts IS NULL OR to_ts IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN from_ts IS NULL THEN 'from_ts' ELSE 'to_ts' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The history covers [from_ts, to_ts), by default all of it (-infinity to infinity).';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.accounts a WHERE a.account_id = history.account_id AND wallet_internal.sees_program(a.program_id)) THEN
        PERFORM wallet_internal.unknown_account(account_id);
    END IF;
    RETURN QUERY SELECT * FROM wallet.entries x
                  WHERE x.account_id = history.account_id AND x.created_at >= from_ts AND x.created_at < to_ts
                  ORDER BY x.entry_id;
END
$$;
COMMENT ON FUNCTION wallet.history(bigint, timestamptz, timestamptz) IS 'journal entries of an account created in [from_ts, to_ts), oldest first';

CREATE FUNCTION wallet.program_liability(program_id bigint, as_of timestamptz DEFAULT now())
    RETURNS TABLE (expiry_month date, points bigint)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF program_id IS NULL OR as_of IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN program_id IS NULL THEN 'program_id' ELSE 'as_of' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The liability of a points program is taken at a given instant, now() by default.';
    END IF;
    IF NOT isfinite(as_of) THEN
        RAISE EXCEPTION 'as_of must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The liability of a points program is taken at a real instant, now() by default.';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.programs p WHERE p.program_id = program_liability.program_id AND wallet.acts_for(p.merchant_id)) THEN
        RAISE EXCEPTION 'unknown program'
            USING ERRCODE = 'WL214', DETAIL = format('There is no points program %s.', program_id);
    END IF;
    -- the month (UTC) holding the last instant the points are spendable
    RETURN QUERY
    SELECT date_trunc('month', (x.expires_at - interval '1 microsecond') AT TIME ZONE 'UTC')::date AS m,
           sum(x.points)::bigint
      FROM wallet.accounts a CROSS JOIN LATERAL wallet.ledger_lots(a.ledger) x
     WHERE a.program_id = program_liability.program_id
       AND (x.expires_at IS NULL OR x.expires_at > as_of)
     GROUP BY m ORDER BY m NULLS LAST;
END
$$;
COMMENT ON FUNCTION wallet.program_liability(bigint, timestamptz) IS 'outstanding (spendable or held, unexpired at as_of) points of a program by month of expiry; NULL month = never expires; an infinite as_of is 22023';

-- The input parameter is unnamed: a parameter cannot share the name of the
-- output column account_id.
CREATE FUNCTION wallet.verify_ledger(bigint DEFAULT NULL)
    RETURNS TABLE (account_id bigint, stored_balance bigint, replayed_balance bigint, detail text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    a record;
    r record;
    d text;
BEGIN
    IF $1 IS NOT NULL
       AND NOT EXISTS (SELECT FROM wallet.accounts x WHERE x.account_id = $1 AND wallet_internal.sees_program(x.program_id)) THEN
        PERFORM wallet_internal.unknown_account($1);
    END IF;
    FOR a IN SELECT x.account_id, x.ledger FROM wallet.accounts x
              WHERE ($1 IS NULL OR x.account_id = $1) AND wallet_internal.sees_program(x.program_id)
              ORDER BY x.account_id LOOP
        r := wallet.replay_ledger(a.account_id);
        d := coalesce(r.problem, wallet.ledger_diff(a.ledger, r.ledger));
        IF d IS NOT NULL THEN
            account_id := a.account_id;
            stored_balance := wallet.ledger_balance(a.ledger, now());
            replayed_balance := wallet.ledger_balance(r.ledger, now());
            detail := d;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION wallet.verify_ledger(bigint) IS 'replays the journal of one or every account; returns each account whose stored ledger differs from its journal';

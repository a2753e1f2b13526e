
-- ======================================================================
-- Push queue (issue 12): consent, preferences, frequency caps, quiet hours,
-- the queue of messages and its delivery by sending workers.
--
-- One table holds every message with its outcome (wallet.push_messages):
-- enqueue_push decides queued / deferred / suppressed / duplicate and
-- records it with its reason; claim_pushes re-checks consent, quiet hours,
-- caps and expiry under the member's lock before handing a message out.
-- The claim-time check is the one that guarantees the caps: the plan made at
-- enqueue only chooses when a message should become due.
-- README "Push".
-- ======================================================================

------------------------------------------------------------------------------
-- Merchant settings, topics and caps
------------------------------------------------------------------------------

-- The secret of a merchant's wake-up names (wallet.push_channel): LISTEN
-- needs no privilege, so a NOTIFY named after the channel alone would tell
-- any role when another merchant enqueues and on which channels.  Read only
-- by the roles acting for the merchant (the table's row-level security).
ALTER TABLE wallet.merchants ADD COLUMN push_key bytea NOT NULL DEFAULT pg_catalog.uuid_send(pg_catalog.gen_random_uuid())
    CHECK (length(push_key) >= 16);
COMMENT ON COLUMN wallet.merchants.push_key IS 'random key of the merchant''s push wake-up names (wallet.push_channel): fixed, and secret, so that no role acting for another merchant can name, and so LISTEN to, the merchant''s NOTIFYs';

CREATE TABLE wallet.push_settings (
    merchant_id  bigint PRIMARY KEY REFERENCES wallet.merchants,
    quiet_start  time,
    quiet_end    time,
    time_zone    text NOT NULL DEFAULT 'UTC',
    max_attempts int NOT NULL DEFAULT 5 CHECK (max_attempts BETWEEN 1 AND 100),
    backoff      interval NOT NULL DEFAULT '30 seconds' CHECK (backoff > '0'),
    retention    interval NOT NULL DEFAULT '90 days' CHECK (retention > '0'),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL) AND quiet_start <> quiet_end)
);
COMMENT ON TABLE wallet.push_settings IS 'push settings per merchant (wallet.set_push_settings); a merchant without a row has the defaults: quiet hours 22:00-08:00 UTC, 5 attempts, 30 s backoff, 90 days retention';
COMMENT ON COLUMN wallet.push_settings.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_settings.quiet_start IS 'default quiet hours start (member local time); NULL with quiet_end = no quiet hours';
COMMENT ON COLUMN wallet.push_settings.quiet_end IS 'default quiet hours end (member local time, exclusive); may be before quiet_start (over midnight)';
COMMENT ON COLUMN wallet.push_settings.time_zone IS 'IANA time zone of members without one';
COMMENT ON COLUMN wallet.push_settings.max_attempts IS 'delivery attempts before a message goes to the dead letters';
COMMENT ON COLUMN wallet.push_settings.backoff IS 'delay after the first failed attempt; doubled per attempt, with jitter';
COMMENT ON COLUMN wallet.push_settings.retention IS 'finished messages (sent, suppressed, duplicate, dead) older than this are purged by wallet.purge_pushes';
COMMENT ON COLUMN wallet.push_settings.updated_at IS 'when the settings last changed';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_settings', '');
ALTER TABLE wallet.push_settings ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_settings USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_settings IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TABLE wallet.push_topics (
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    topic       text NOT NULL,
    service     boolean NOT NULL,
    cap_group   text,
    PRIMARY KEY (merchant_id, topic)
);
COMMENT ON TABLE wallet.push_topics IS 'a merchant''s topics (wallet.set_push_topic); a topic without a row is a marketing topic of cap group marketing, except topic service (a service topic, no cap group)';
COMMENT ON COLUMN wallet.push_topics.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_topics.topic IS 'topic name as enqueue_push and record_consent take it';
COMMENT ON COLUMN wallet.push_topics.service IS 'true: a service topic (no opt-in needed, can be muted, no quiet hours); false: marketing (explicit opt-in)';
COMMENT ON COLUMN wallet.push_topics.cap_group IS 'the frequency caps (wallet.push_caps) the topic counts against; NULL = exempt from caps';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_topics', '');
ALTER TABLE wallet.push_topics ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_topics USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_topics IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TABLE wallet.push_caps (
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    channel     text NOT NULL,
    cap_group   text NOT NULL,
    period      text NOT NULL CHECK (period IN ('rolling', 'day', 'week')),
    max_count   int NOT NULL CHECK (max_count > 0),
    window_size interval CHECK ((period = 'rolling') = (window_size IS NOT NULL) AND window_size > '0'),
    policy      text NOT NULL DEFAULT 'defer' CHECK (policy IN ('defer', 'drop')),
    PRIMARY KEY (merchant_id, channel, cap_group, period)
);
COMMENT ON TABLE wallet.push_caps IS 'frequency caps per merchant, channel and cap group: at most max_count messages per rolling window or per calendar day or week (Monday) in the member''s time zone';
COMMENT ON COLUMN wallet.push_caps.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_caps.channel IS 'delivery channel (push, sms, email, in_app, ...)';
COMMENT ON COLUMN wallet.push_caps.cap_group IS 'cap group of the topics counted (wallet.push_topics.cap_group)';
COMMENT ON COLUMN wallet.push_caps.period IS 'rolling (window_size), day or week (calendar, member local time)';
COMMENT ON COLUMN wallet.push_caps.max_count IS 'most messages sent per period';
COMMENT ON COLUMN wallet.push_caps.window_size IS 'length of the rolling window; NULL for calendar periods';
COMMENT ON COLUMN wallet.push_caps.policy IS 'over the cap: defer (to the first allowed slot) or drop (suppressed)';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_caps', '');
ALTER TABLE wallet.push_caps ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_caps USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_caps IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

-- enqueue_push caches each merchant's settings, topics and caps per backend
-- (src/push_decide.c): a change of them drops every backend's cache
CREATE FUNCTION wallet_internal.push_config_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'push_config_changed' LANGUAGE C;
COMMENT ON FUNCTION wallet_internal.push_config_changed() IS 'internal: statement trigger on wallet.push_settings, push_topics and push_caps: every backend drops its cache of merchants'' push settings, topics and caps';
CREATE TRIGGER push_config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON wallet.push_settings
    FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.push_config_changed();
COMMENT ON TRIGGER push_config_changed ON wallet.push_settings IS 'drops the per-backend cache of push settings (enqueue_push)';
CREATE TRIGGER push_config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON wallet.push_topics
    FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.push_config_changed();
COMMENT ON TRIGGER push_config_changed ON wallet.push_topics IS 'drops the per-backend cache of push topics (enqueue_push)';
CREATE TRIGGER push_config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON wallet.push_caps
    FOR EACH STATEMENT EXECUTE FUNCTION wallet_internal.push_config_changed();
COMMENT ON TRIGGER push_config_changed ON wallet.push_caps IS 'drops the per-backend cache of push caps (enqueue_push)';

------------------------------------------------------------------------------
-- Consent and member preferences
------------------------------------------------------------------------------

CREATE TABLE wallet.push_consent_log (
    consent_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id    bigint NOT NULL REFERENCES wallet.merchants,
    member_id      bigint NOT NULL REFERENCES wallet.members,
    channel        text NOT NULL,
    topic          text NOT NULL,
    granted        boolean NOT NULL,
    at             timestamptz NOT NULL,
    source         text NOT NULL,
    policy_version text,
    device         text,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX push_consent_log_member_idx ON wallet.push_consent_log (merchant_id, member_id, channel, topic, at);
COMMENT ON TABLE wallet.push_consent_log IS 'evidence of every consent given or withdrawn (wallet.record_consent), append-only; wallet.push_consents holds the state derived from it';
COMMENT ON COLUMN wallet.push_consent_log.consent_id IS 'evidence record id, increasing';
COMMENT ON COLUMN wallet.push_consent_log.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_consent_log.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.push_consent_log.channel IS 'channel consented to (push, sms, email, in_app, ...)';
COMMENT ON COLUMN wallet.push_consent_log.topic IS 'topic consented to (marketing, offers, points, service, ...)';
COMMENT ON COLUMN wallet.push_consent_log.granted IS 'true: granted (opt-in); false: withdrawn (opt-out, or a muted service topic)';
COMMENT ON COLUMN wallet.push_consent_log.at IS 'when the member gave or withdrew it';
COMMENT ON COLUMN wallet.push_consent_log.source IS 'where it was given (app screen, web form, support, ...)';
COMMENT ON COLUMN wallet.push_consent_log.policy_version IS 'the consent text or policy version shown to the member';
COMMENT ON COLUMN wallet.push_consent_log.device IS 'IP address or device id it came from (personal data: cleared by wallet.forget_member)';
COMMENT ON COLUMN wallet.push_consent_log.recorded_at IS 'when it was recorded';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_consent_log', '');
ALTER TABLE wallet.push_consent_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_consent_log USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_consent_log IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.push_consent_log', 'consent_id'), '');

CREATE TABLE wallet.push_consents (
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    member_id   bigint NOT NULL REFERENCES wallet.members,
    channel     text NOT NULL,
    topic       text NOT NULL,
    granted     boolean NOT NULL,
    at          timestamptz NOT NULL,
    consent_id  bigint NOT NULL REFERENCES wallet.push_consent_log,
    PRIMARY KEY (merchant_id, member_id, channel, topic)
);
COMMENT ON TABLE wallet.push_consents IS 'current consent per member, channel and topic: the latest evidence (by when it was given) of wallet.push_consent_log';
COMMENT ON COLUMN wallet.push_consents.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_consents.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.push_consents.channel IS 'channel';
COMMENT ON COLUMN wallet.push_consents.topic IS 'topic';
COMMENT ON COLUMN wallet.push_consents.granted IS 'whether consent is currently given';
COMMENT ON COLUMN wallet.push_consents.at IS 'when the member gave or withdrew it';
COMMENT ON COLUMN wallet.push_consents.consent_id IS 'the evidence record the state comes from';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_consents', '');
ALTER TABLE wallet.push_consents ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_consents USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_consents IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TABLE wallet.push_preferences (
    merchant_id  bigint NOT NULL REFERENCES wallet.merchants,
    member_id    bigint PRIMARY KEY REFERENCES wallet.members,
    quiet_start  time,
    quiet_end    time,
    topics       text[],
    max_per_day  int CHECK (max_per_day >= 0),
    max_per_week int CHECK (max_per_week >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL) AND quiet_start <> quiet_end)
);
COMMENT ON TABLE wallet.push_preferences IS 'a member''s own push preferences (wallet.set_push_preferences): quiet hours, topics, caps below the merchant''s';
COMMENT ON COLUMN wallet.push_preferences.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_preferences.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.push_preferences.quiet_start IS 'the member''s quiet hours start (local time); NULL = the merchant''s default';
COMMENT ON COLUMN wallet.push_preferences.quiet_end IS 'the member''s quiet hours end (local time, exclusive)';
COMMENT ON COLUMN wallet.push_preferences.topics IS 'marketing topics the member chose; NULL = every topic consented to';
COMMENT ON COLUMN wallet.push_preferences.max_per_day IS 'the member''s cap per local calendar day on every capped group (only lowers the merchant''s)';
COMMENT ON COLUMN wallet.push_preferences.max_per_week IS 'the member''s cap per local calendar week on every capped group (only lowers the merchant''s)';
COMMENT ON COLUMN wallet.push_preferences.updated_at IS 'when the preferences last changed';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_preferences', '');
ALTER TABLE wallet.push_preferences ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_preferences USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_preferences IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

------------------------------------------------------------------------------
-- Messages
------------------------------------------------------------------------------

-- No foreign keys (here, in wallet.push_dedup and wallet.push_attempts):
-- each check locks the referenced row FOR KEY SHARE, so every message
-- written, moved to the finished partition or acknowledged would lock its
-- merchant's, member's and campaign's rows (a MultiXact once sessions
-- overlap: every worker of a campaign send on the campaign's one row), for
-- about a tenth of a claim's time.  Rows are written only by the push
-- functions, for a member they found or created under its lock and a
-- campaign they checked; members and campaigns are never deleted (erasure
-- pseudonymizes the member), as for the redemption tables (issue 12).
CREATE TABLE wallet.push_messages (
    push_id        bigint GENERATED ALWAYS AS IDENTITY,
    merchant_id    bigint NOT NULL,
    member_id      bigint NOT NULL,
    channel        text NOT NULL,
    topic          text NOT NULL,
    cap_group      text,
    service        boolean NOT NULL,
    payload        jsonb NOT NULL,
    campaign_id    bigint,
    dedup_key      text,
    priority       int NOT NULL,
    not_before     timestamptz NOT NULL,
    expires_at     timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    outcome        text NOT NULL CHECK (outcome IN ('queued', 'deferred', 'suppressed', 'duplicate')),
    outcome_reason text,
    status         text NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'suppressed', 'duplicate', 'dead')),
    reason         text,
    due_at         timestamptz,
    slot_at        timestamptz,
    attempts       int NOT NULL DEFAULT 0,
    claimed_at     timestamptz,
    sent_at        timestamptz,
    provider_message_id text,
    last_error     text,
    finished_at    timestamptz,
    part           smallint NOT NULL,
    requeued_attempts int NOT NULL DEFAULT 0,
    PRIMARY KEY (push_id, part),
    CHECK ((part = 3) = (status IN ('sent', 'suppressed', 'duplicate', 'dead')))
) PARTITION BY LIST (part);
-- the claim path: due messages per channel, highest priority first
CREATE INDEX push_messages_due_idx ON wallet.push_messages (channel, priority DESC, due_at) WHERE status IN ('queued', 'sending');
-- the caps: a member's messages by channel, cap group and slot, those sent
-- (or being sent, at their claim time) apart from those queued (at their
-- planned slot: the claim-time check counts only the former); covering, so
-- that a count reads the index only (issue 12)
CREATE INDEX push_messages_member_idx ON wallet.push_messages (member_id, channel, cap_group, slot_at) INCLUDE (priority)
    WHERE status = 'queued';
CREATE INDEX push_messages_member_sent_idx ON wallet.push_messages (member_id, channel, cap_group, slot_at)
    WHERE status IN ('sending', 'sent');
CREATE INDEX push_messages_finished_idx ON wallet.push_messages (merchant_id, finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX push_messages_member_all_idx ON wallet.push_messages (merchant_id, member_id);
COMMENT ON TABLE wallet.push_messages IS 'every message enqueued with the outcome of enqueue_push and its delivery state, partitioned by part: queued and sending ones in three rotating queue slots (wallet.push_messages_q0..q2, emptied by TRUNCATE in turn: wallet.rotate_push_queue), finished ones in wallet.push_messages_done (insert-only on the hot path), purged after the merchant''s retention';
COMMENT ON COLUMN wallet.push_messages.push_id IS 'message id';
COMMENT ON COLUMN wallet.push_messages.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_messages.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.push_messages.channel IS 'delivery channel';
COMMENT ON COLUMN wallet.push_messages.topic IS 'topic';
COMMENT ON COLUMN wallet.push_messages.cap_group IS 'cap group the message counts against (NULL = exempt), fixed at enqueue';
COMMENT ON COLUMN wallet.push_messages.service IS 'a service message (no opt-in needed, no quiet hours), fixed at enqueue';
COMMENT ON COLUMN wallet.push_messages.payload IS 'what the worker sends (personal data: cleared by wallet.forget_member)';
COMMENT ON COLUMN wallet.push_messages.campaign_id IS 'campaign the message belongs to (NULL = none)';
COMMENT ON COLUMN wallet.push_messages.dedup_key IS 'deduplication key, unique per merchant for ever (wallet.push_dedup)';
COMMENT ON COLUMN wallet.push_messages.priority IS 'higher first when claimed; a higher priority does not wait for queued messages of lower priority';
COMMENT ON COLUMN wallet.push_messages.not_before IS 'earliest send time asked for';
COMMENT ON COLUMN wallet.push_messages.expires_at IS 'never sent after this (NULL = no expiry)';
COMMENT ON COLUMN wallet.push_messages.created_at IS 'when it was enqueued';
COMMENT ON COLUMN wallet.push_messages.outcome IS 'what enqueue_push returned: queued, deferred, suppressed or duplicate';
COMMENT ON COLUMN wallet.push_messages.outcome_reason IS 'why it was deferred or suppressed at enqueue (quiet_hours, frequency_cap, no_consent, ...)';
COMMENT ON COLUMN wallet.push_messages.status IS 'queued (waiting for due_at), sending (claimed, leased until due_at), sent, suppressed, duplicate or dead (attempts exhausted)';
COMMENT ON COLUMN wallet.push_messages.reason IS 'why of the current status (the last deferral, suppression or failure)';
COMMENT ON COLUMN wallet.push_messages.due_at IS 'queued: when it may be claimed; sending: when the lease lapses';
COMMENT ON COLUMN wallet.push_messages.slot_at IS 'the send time it counts against the caps at: planned (queued) or claimed (sending, sent)';
COMMENT ON COLUMN wallet.push_messages.attempts IS 'times claimed';
COMMENT ON COLUMN wallet.push_messages.claimed_at IS 'when last claimed';
COMMENT ON COLUMN wallet.push_messages.sent_at IS 'when acknowledged as sent';
COMMENT ON COLUMN wallet.push_messages.provider_message_id IS 'the provider''s id of the delivery';
COMMENT ON COLUMN wallet.push_messages.last_error IS 'the last failure reported by fail_push (may name the member''s device or address: cleared by wallet.forget_member)';
COMMENT ON COLUMN wallet.push_messages.finished_at IS 'when it reached sent, suppressed, duplicate or dead (retention counts from here)';
COMMENT ON COLUMN wallet.push_messages.part IS 'the partition: 0, 1, 2 = the rotating queue slots (queued, sending), 3 = finished (wallet.push_messages_done)';
COMMENT ON COLUMN wallet.push_messages.requeued_attempts IS 'attempts made before the message was last requeued (wallet.requeue_push): max_attempts and the backoff count the attempts after it';
ALTER TABLE wallet.push_messages ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_messages USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_messages IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.push_messages', 'push_id'), '');

-- The queue does not decay: a message is written once into the current of
-- three queue slots; claims update it there, and when it is finished it is
-- deleted there and written once into push_messages_done.  Every dead tuple
-- of the hot path is thus in a queue slot, and a slot is emptied by TRUNCATE
-- (wallet.rotate_push_queue: the few live rows carried forward), which
-- neither vacuum nor a transaction holding back the xmin horizon delays.
CREATE TABLE wallet.push_messages_q0 PARTITION OF wallet.push_messages FOR VALUES IN (0);
COMMENT ON TABLE wallet.push_messages_q0 IS 'queue slot 0 of wallet.push_messages (queued and sending messages): current in turn, emptied by TRUNCATE when its turn comes again (wallet.rotate_push_queue)';
COMMENT ON COLUMN wallet.push_messages_q0.push_id IS 'message id';
COMMENT ON COLUMN wallet.push_messages_q0.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_messages_q0.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.push_messages_q0.channel IS 'delivery channel';
COMMENT ON COLUMN wallet.push_messages_q0.topic IS 'topic';
COMMENT ON COLUMN wallet.push_messages_q0.cap_group IS 'cap group the message counts against (NULL = exempt), fixed at enqueue';
COMMENT ON COLUMN wallet.push_messages_q0.service IS 'a service message (no opt-in needed, no quiet hours), fixed at enqueue';
COMMENT ON COLUMN wallet.push_messages_q0.payload IS 'what the worker sends (personal data: cleared by wallet.forget_member)';
COMMENT ON COLUMN wallet.push_messages_q0.campaign_id IS 'campaign the message belongs to (NULL = none)';
COMMENT ON COLUMN wallet.push_messages_q0.dedup_key IS 'deduplication key, unique per merchant for ever (wallet.push_dedup)';
COMMENT ON COLUMN wallet.push_messages_q0.priority IS 'higher first when claimed; a higher priority does not wait for queued messages of lower priority';
COMMENT ON COLUMN wallet.push_messages_q0.not_before IS 'earliest send time asked for';
COMMENT ON COLUMN wallet.push_messages_q0.expires_at IS 'never sent after this (NULL = no expiry)';
COMMENT ON COLUMN wallet.push_messages_q0.created_at IS 'when it was enqueued';
COMMENT ON COLUMN wallet.push_messages_q0.outcome IS 'what enqueue_push returned: queued, deferred, suppressed or duplicate';
COMMENT ON COLUMN wallet.push_messages_q0.outcome_reason IS 'why it was deferred or suppressed at enqueue (quiet_hours, frequency_cap, no_consent, ...)';
COMMENT ON COLUMN wallet.push_messages_q0.status IS 'queued (waiting for due_at), sending (claimed, leased until due_at), sent, suppressed, duplicate or dead (attempts exhausted)';
COMMENT ON COLUMN wallet.push_messages_q0.reason IS 'why of the current status (the last deferral, suppression or failure)';
COMMENT ON COLUMN wallet.push_messages_q0.due_at IS 'queued: when it may be claimed; sending: when the lease lapses';
COMMENT ON COLUMN wallet.push_messages_q0.slot_at IS 'the send time it counts against the caps at: planned (queued) or claimed (sending, sent)';
COMMENT ON COLUMN wallet.push_messages_q0.attempts IS 'times claimed';
COMMENT ON COLUMN wallet.push_messages_q0.claimed_at IS 'when last claimed';
COMMENT ON COLUMN wallet.push_messages_q0.sent_at IS 'when acknowledged as sent';
COMMENT ON COLUMN wallet.push_messages_q0.provider_message_id IS 'the provider''s id of the delivery';
COMMENT ON COLUMN wallet.push_messages_q0.last_error IS 'the last failure reported by fail_push (may name the member''s device or address: cleared by wallet.forget_member)';
COMMENT ON COLUMN wallet.push_messages_q0.finished_at IS 'when it reached sent, suppressed, duplicate or dead (retention counts from here)';
COMMENT ON COLUMN wallet.push_messages_q0.part IS 'the partition: 0, 1, 2 = the rotating queue slots (queued, sending), 3 = finished (wallet.push_messages_done)';
COMMENT ON COLUMN wallet.push_messages_q0.requeued_attempts IS 'attempts made before the message was last requeued (wallet.requeue_push): max_attempts and the backoff count the attempts after it';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_messages_q0', '');
ALTER TABLE wallet.push_messages_q0 ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_messages_q0 USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_messages_q0 IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
CREATE TABLE wallet.push_messages_q1 PARTITION OF wallet.push_messages FOR VALUES IN (1);
COMMENT ON TABLE wallet.push_messages_q1 IS 'queue slot 1 of wallet.push_messages (queued and sending messages): current in turn, emptied by TRUNCATE when its turn comes again (wallet.rotate_push_queue)';
COMMENT ON COLUMN wallet.push_messages_q1.push_id IS 'message id';
COMMENT ON COLUMN wallet.push_messages_q1.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_messages_q1.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.push_messages_q1.channel IS 'delivery channel';
COMMENT ON COLUMN wallet.push_messages_q1.topic IS 'topic';
COMMENT ON COLUMN wallet.push_messages_q1.cap_group IS 'cap group the message counts against (NULL = exempt), fixed at enqueue';
COMMENT ON COLUMN wallet.push_messages_q1.service IS 'a service message (no opt-in needed, no quiet hours), fixed at enqueue';
COMMENT ON COLUMN wallet.push_messages_q1.payload IS 'what the worker sends (personal data: cleared by wallet.forget_member)';
COMMENT ON COLUMN wallet.push_messages_q1.campaign_id IS 'campaign the message belongs to (NULL = none)';
COMMENT ON COLUMN wallet.push_messages_q1.dedup_key IS 'deduplication key, unique per merchant for ever (wallet.push_dedup)';
COMMENT ON COLUMN wallet.push_messages_q1.priority IS 'higher first when claimed; a higher priority does not wait for queued messages of lower priority';
COMMENT ON COLUMN wallet.push_messages_q1.not_before IS 'earliest send time asked for';
COMMENT ON COLUMN wallet.push_messages_q1.expires_at IS 'never sent after this (NULL = no expiry)';
COMMENT ON COLUMN wallet.push_messages_q1.created_at IS 'when it was enqueued';
COMMENT ON COLUMN wallet.push_messages_q1.outcome IS 'what enqueue_push returned: queued, deferred, suppressed or duplicate';
COMMENT ON COLUMN wallet.push_messages_q1.outcome_reason IS 'why it was deferred or suppressed at enqueue (quiet_hours, frequency_cap, no_consent, ...)';
COMMENT ON COLUMN wallet.push_messages_q1.status IS 'queued (waiting for due_at), sending (claimed, leased until due_at), sent, suppressed, duplicate or dead (attempts exhausted)';
COMMENT ON COLUMN wallet.push_messages_q1.reason IS 'why of the current status (the last deferral, suppression or failure)';
COMMENT ON COLUMN wallet.push_messages_q1.due_at IS 'queued: when it may be claimed; sending: when the lease lapses';
COMMENT ON COLUMN wallet.push_messages_q1.slot_at IS 'the send time it counts against the caps at: planned (queued) or claimed (sending, sent)';
COMMENT ON COLUMN wallet.push_messages_q1.attempts IS 'times claimed';
COMMENT ON COLUMN wallet.push_messages_q1.claimed_at IS 'when last claimed';
COMMENT ON COLUMN wallet.push_messages_q1.sent_at IS 'when acknowledged as sent';
COMMENT ON COLUMN wallet.push_messages_q1.provider_message_id IS 'the provider''s id of the delivery';
COMMENT ON COLUMN wallet.push_messages_q1.last_error IS 'the last failure reported by fail_push (may name the member''s device or address: cleared by wallet.forget_member)';
COMMENT ON COLUMN wallet.push_messages_q1.finished_at IS 'when it reached sent, suppressed, duplicate or dead (retention counts from here)';
COMMENT ON COLUMN wallet.push_messages_q1.part IS 'the partition: 0, 1, 2 = the rotating queue slots (queued, sending), 3 = finished (wallet.push_messages_done)';
COMMENT ON COLUMN wallet.push_messages_q1.requeued_attempts IS 'attempts made before the message was last requeued (wallet.requeue_push): max_attempts and the backoff count the attempts after it';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_messages_q1', '');
ALTER TABLE wallet.push_messages_q1 ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_messages_q1 USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_messages_q1 IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
CREATE TABLE wallet.push_messages_q2 PARTITION OF wallet.push_messages FOR VALUES IN (2);
COMMENT ON TABLE wallet.push_messages_q2 IS 'queue slot 2 of wallet.push_messages (queued and sending messages): current in turn, emptied by TRUNCATE when its turn comes again (wallet.rotate_push_queue)';
COMMENT ON COLUMN wallet.push_messages_q2.push_id IS 'message id';
COMMENT ON COLUMN wallet.push_messages_q2.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_messages_q2.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.push_messages_q2.channel IS 'delivery channel';
COMMENT ON COLUMN wallet.push_messages_q2.topic IS 'topic';
COMMENT ON COLUMN wallet.push_messages_q2.cap_group IS 'cap group the message counts against (NULL = exempt), fixed at enqueue';
COMMENT ON COLUMN wallet.push_messages_q2.service IS 'a service message (no opt-in needed, no quiet hours), fixed at enqueue';
COMMENT ON COLUMN wallet.push_messages_q2.payload IS 'what the worker sends (personal data: cleared by wallet.forget_member)';
COMMENT ON COLUMN wallet.push_messages_q2.campaign_id IS 'campaign the message belongs to (NULL = none)';
COMMENT ON COLUMN wallet.push_messages_q2.dedup_key IS 'deduplication key, unique per merchant for ever (wallet.push_dedup)';
COMMENT ON COLUMN wallet.push_messages_q2.priority IS 'higher first when claimed; a higher priority does not wait for queued messages of lower priority';
COMMENT ON COLUMN wallet.push_messages_q2.not_before IS 'earliest send time asked for';
COMMENT ON COLUMN wallet.push_messages_q2.expires_at IS 'never sent after this (NULL = no expiry)';
COMMENT ON COLUMN wallet.push_messages_q2.created_at IS 'when it was enqueued';
COMMENT ON COLUMN wallet.push_messages_q2.outcome IS 'what enqueue_push returned: queued, deferred, suppressed or duplicate';
COMMENT ON COLUMN wallet.push_messages_q2.outcome_reason IS 'why it was deferred or suppressed at enqueue (quiet_hours, frequency_cap, no_consent, ...)';
COMMENT ON COLUMN wallet.push_messages_q2.status IS 'queued (waiting for due_at), sending (claimed, leased until due_at), sent, suppressed, duplicate or dead (attempts exhausted)';
COMMENT ON COLUMN wallet.push_messages_q2.reason IS 'why of the current status (the last deferral, suppression or failure)';
COMMENT ON COLUMN wallet.push_messages_q2.due_at IS 'queued: when it may be claimed; sending: when the lease lapses';
COMMENT ON COLUMN wallet.push_messages_q2.slot_at IS 'the send time it counts against the caps at: planned (queued) or claimed (sending, sent)';
COMMENT ON COLUMN wallet.push_messages_q2.attempts IS 'times claimed';
COMMENT ON COLUMN wallet.push_messages_q2.claimed_at IS 'when last claimed';
COMMENT ON COLUMN wallet.push_messages_q2.sent_at IS 'when acknowledged as sent';
COMMENT ON COLUMN wallet.push_messages_q2.provider_message_id IS 'the provider''s id of the delivery';
COMMENT ON COLUMN wallet.push_messages_q2.last_error IS 'the last failure reported by fail_push (may name the member''s device or address: cleared by wallet.forget_member)';
COMMENT ON COLUMN wallet.push_messages_q2.finished_at IS 'when it reached sent, suppressed, duplicate or dead (retention counts from here)';
COMMENT ON COLUMN wallet.push_messages_q2.part IS 'the partition: 0, 1, 2 = the rotating queue slots (queued, sending), 3 = finished (wallet.push_messages_done)';
COMMENT ON COLUMN wallet.push_messages_q2.requeued_attempts IS 'attempts made before the message was last requeued (wallet.requeue_push): max_attempts and the backoff count the attempts after it';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_messages_q2', '');
ALTER TABLE wallet.push_messages_q2 ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_messages_q2 USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_messages_q2 IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
CREATE TABLE wallet.push_messages_done PARTITION OF wallet.push_messages FOR VALUES IN (3);
COMMENT ON TABLE wallet.push_messages_done IS 'finished messages of wallet.push_messages (sent, suppressed, duplicate, dead): written once when they finish, deleted by wallet.purge_pushes after the retention';
COMMENT ON COLUMN wallet.push_messages_done.push_id IS 'message id';
COMMENT ON COLUMN wallet.push_messages_done.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_messages_done.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.push_messages_done.channel IS 'delivery channel';
COMMENT ON COLUMN wallet.push_messages_done.topic IS 'topic';
COMMENT ON COLUMN wallet.push_messages_done.cap_group IS 'cap group the message counts against (NULL = exempt), fixed at enqueue';
COMMENT ON COLUMN wallet.push_messages_done.service IS 'a service message (no opt-in needed, no quiet hours), fixed at enqueue';
COMMENT ON COLUMN wallet.push_messages_done.payload IS 'what the worker sends (personal data: cleared by wallet.forget_member)';
COMMENT ON COLUMN wallet.push_messages_done.campaign_id IS 'campaign the message belongs to (NULL = none)';
COMMENT ON COLUMN wallet.push_messages_done.dedup_key IS 'deduplication key, unique per merchant for ever (wallet.push_dedup)';
COMMENT ON COLUMN wallet.push_messages_done.priority IS 'higher first when claimed; a higher priority does not wait for queued messages of lower priority';
COMMENT ON COLUMN wallet.push_messages_done.not_before IS 'earliest send time asked for';
COMMENT ON COLUMN wallet.push_messages_done.expires_at IS 'never sent after this (NULL = no expiry)';
COMMENT ON COLUMN wallet.push_messages_done.created_at IS 'when it was enqueued';
COMMENT ON COLUMN wallet.push_messages_done.outcome IS 'what enqueue_push returned: queued, deferred, suppressed or duplicate';
COMMENT ON COLUMN wallet.push_messages_done.outcome_reason IS 'why it was deferred or suppressed at enqueue (quiet_hours, frequency_cap, no_consent, ...)';
COMMENT ON COLUMN wallet.push_messages_done.status IS 'queued (waiting for due_at), sending (claimed, leased until due_at), sent, suppressed, duplicate or dead (attempts exhausted)';
COMMENT ON COLUMN wallet.push_messages_done.reason IS 'why of the current status (the last deferral, suppression or failure)';
COMMENT ON COLUMN wallet.push_messages_done.due_at IS 'queued: when it may be claimed; sending: when the lease lapses';
COMMENT ON COLUMN wallet.push_messages_done.slot_at IS 'the send time it counts against the caps at: planned (queued) or claimed (sending, sent)';
COMMENT ON COLUMN wallet.push_messages_done.attempts IS 'times claimed';
COMMENT ON COLUMN wallet.push_messages_done.claimed_at IS 'when last claimed';
COMMENT ON COLUMN wallet.push_messages_done.sent_at IS 'when acknowledged as sent';
COMMENT ON COLUMN wallet.push_messages_done.provider_message_id IS 'the provider''s id of the delivery';
COMMENT ON COLUMN wallet.push_messages_done.last_error IS 'the last failure reported by fail_push (may name the member''s device or address: cleared by wallet.forget_member)';
COMMENT ON COLUMN wallet.push_messages_done.finished_at IS 'when it reached sent, suppressed, duplicate or dead (retention counts from here)';
COMMENT ON COLUMN wallet.push_messages_done.part IS 'the partition: 0, 1, 2 = the rotating queue slots (queued, sending), 3 = finished (wallet.push_messages_done)';
COMMENT ON COLUMN wallet.push_messages_done.requeued_attempts IS 'attempts made before the message was last requeued (wallet.requeue_push): max_attempts and the backoff count the attempts after it';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_messages_done', '');
ALTER TABLE wallet.push_messages_done ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_messages_done USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_messages_done IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

-- The rotation state, in a sequence rather than a row: read by every
-- enqueue without a lock, written by the rotation without waiting for
-- anyone (a sequence is not transactional: a rotation that rolls back after
-- setting it leaves the new slot current with its old rows, losing nothing).
-- Its value is epoch seconds of the last rotation * 4 + the current slot.
CREATE SEQUENCE wallet_internal.push_queue_slot MINVALUE 0 START 0;
COMMENT ON SEQUENCE wallet_internal.push_queue_slot IS 'rotation state of the push queue slots: (epoch seconds of the last rotation) * 4 + the current slot (0-2); set by wallet.rotate_push_queue';
-- set from the start, as a rotation sets it: enqueue_push's direct insert
-- (src/push_write.c) reads the last value only of a sequence that was set
SELECT pg_catalog.setval('wallet_internal.push_queue_slot', 0, true);

CREATE TABLE wallet.push_dedup (
    merchant_id bigint NOT NULL,
    dedup_key   text NOT NULL,
    push_id     bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, dedup_key)
);
COMMENT ON TABLE wallet.push_dedup IS 'every deduplication key a merchant used, for ever (outlives the purge of its message)';
COMMENT ON COLUMN wallet.push_dedup.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_dedup.dedup_key IS 'the key';
COMMENT ON COLUMN wallet.push_dedup.push_id IS 'the message that used it first (it may have been purged since)';
COMMENT ON COLUMN wallet.push_dedup.created_at IS 'when it was first used';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_dedup', '');
ALTER TABLE wallet.push_dedup ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_dedup USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_dedup IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TABLE wallet.push_attempts (
    attempt_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL,
    member_id   bigint NOT NULL,
    push_id     bigint NOT NULL,
    claimed_at  timestamptz NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('sent', 'failed')),
    at          timestamptz NOT NULL DEFAULT now(),
    provider_message_id text,
    error       text
);
CREATE INDEX push_attempts_push_idx ON wallet.push_attempts (push_id);
CREATE INDEX push_attempts_member_idx ON wallet.push_attempts (merchant_id, member_id, claimed_at);
COMMENT ON TABLE wallet.push_attempts IS 'delivery records: every acknowledged or failed attempt (ack_push, fail_push), kept while the message is';
COMMENT ON COLUMN wallet.push_attempts.attempt_id IS 'record id';
COMMENT ON COLUMN wallet.push_attempts.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_attempts.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.push_attempts.push_id IS 'the message (wallet.push_messages)';
COMMENT ON COLUMN wallet.push_attempts.claimed_at IS 'when the attempt was claimed (the send time counted by the caps)';
COMMENT ON COLUMN wallet.push_attempts.outcome IS 'sent or failed';
COMMENT ON COLUMN wallet.push_attempts.at IS 'when the worker reported it';
COMMENT ON COLUMN wallet.push_attempts.provider_message_id IS 'the provider''s id (sent)';
COMMENT ON COLUMN wallet.push_attempts.error IS 'the error reported (failed; may name the member''s device or address: cleared by wallet.forget_member)';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_attempts', '');
ALTER TABLE wallet.push_attempts ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_attempts USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_attempts IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.push_attempts', 'attempt_id'), '');

CREATE VIEW wallet.push_dead_letters WITH (security_invoker = true) AS
SELECT m.push_id, m.merchant_id, m.member_id, m.channel, m.topic, m.campaign_id, m.attempts, m.last_error, m.finished_at
  FROM wallet.push_messages m
 WHERE m.status = 'dead';
COMMENT ON VIEW wallet.push_dead_letters IS 'messages whose delivery failed for good (attempts exhausted or not retryable): wallet.requeue_push sends one again';
COMMENT ON COLUMN wallet.push_dead_letters.push_id IS 'message id';
COMMENT ON COLUMN wallet.push_dead_letters.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_dead_letters.member_id IS 'the member';
COMMENT ON COLUMN wallet.push_dead_letters.channel IS 'delivery channel';
COMMENT ON COLUMN wallet.push_dead_letters.topic IS 'topic';
COMMENT ON COLUMN wallet.push_dead_letters.campaign_id IS 'campaign (NULL = none)';
COMMENT ON COLUMN wallet.push_dead_letters.attempts IS 'attempts made';
COMMENT ON COLUMN wallet.push_dead_letters.last_error IS 'the last error reported';
COMMENT ON COLUMN wallet.push_dead_letters.finished_at IS 'when it was given up';

------------------------------------------------------------------------------
-- Helpers
------------------------------------------------------------------------------

-- Channel and topic names: short identifiers (they name NOTIFY channels).
CREATE FUNCTION wallet_internal.push_check_name(what text, value text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be null', what
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Every message and consent names its channel and topic.';
    END IF;
    IF value !~ '^[a-z][a-z0-9_]{0,39}$' THEN
        RAISE EXCEPTION '% "%" is not a valid name', what, left(value, 64)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Channels and topics are lower-case identifiers of at most 40 characters (letters, digits, underscore), such as push or marketing.';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_check_name(text, text) IS 'internal: raises 22004 for a NULL channel or topic, 22023 for one that is not a lower-case identifier of at most 40 characters';

CREATE FUNCTION wallet_internal.push_check_quiet(quiet_start time, quiet_end time) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF (quiet_start IS NULL) <> (quiet_end IS NULL) OR quiet_start = quiet_end THEN
        RAISE EXCEPTION 'quiet hours need a start and a different end'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Quiet hours run from quiet_start to quiet_end in local time (over midnight when the end is earlier); both NULL means none.';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_check_quiet(time, time) IS 'internal: raises 22023 unless quiet hours are both NULL or a start and a different end';

-- The member of a reference at a merchant, or NULL (an unknown member has
-- given no consent: nothing is created for it).
CREATE FUNCTION wallet_internal.push_member(merchant_id bigint, member_ref text) RETURNS wallet.members
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.members;
BEGIN
    PERFORM wallet_internal.member_check(merchant_id, member_ref);
    SELECT * INTO r FROM wallet.members m WHERE m.merchant_id = $1 AND m.member_ref = $2;
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_member(bigint, text) IS 'internal: the member row of member_ref at the merchant (NULL when there is none), after the checks of member_check';

-- One member's pushes are decided one at a time: enqueue, consent changes
-- and claims take this lock, a row lock on the member's row (FOR NO KEY
-- UPDATE: foreign-key checks of other rows naming the member pass).  A row
-- lock lives in the row, not in the shared lock table, so that one
-- transaction may decide for any number of members (an audience of 100,000,
-- a claim of 10,000 messages) where an advisory lock per member ran out of
-- shared memory.  The caller has made sure the member exists.
CREATE FUNCTION wallet_internal.push_lock_member(member_id bigint, wait boolean) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF wait THEN
        PERFORM FROM wallet.members m WHERE m.member_id = push_lock_member.member_id FOR NO KEY UPDATE;
        RETURN true;
    END IF;
    PERFORM FROM wallet.members m WHERE m.member_id = push_lock_member.member_id FOR NO KEY UPDATE SKIP LOCKED;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_lock_member(bigint, boolean) IS 'internal: locks the member''s row (FOR NO KEY UPDATE), serialising the member''s push decisions without a lock-table entry (wait = false: only if free, returns whether taken)';

-- Whether local time t is within quiet hours start..end, and when they end.
CREATE FUNCTION wallet_internal.push_quiet_until(t timestamptz, tz text, quiet_start time, quiet_end time) RETURNS timestamptz
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    lt timestamp;
    lo time;
    e timestamptz;
BEGIN
    IF quiet_start IS NULL THEN
        RETURN NULL;
    END IF;
    lt := t AT TIME ZONE tz;
    lo := lt::time;
    IF (quiet_start < quiet_end AND lo >= quiet_start AND lo < quiet_end)
       OR (quiet_start > quiet_end AND (lo >= quiet_start OR lo < quiet_end)) THEN
        -- the next local quiet_end after t (a date's end that falls into a DST gap moves on by the gap)
        e := (lt::date + quiet_end) AT TIME ZONE tz;
        IF e <= t THEN
            e := ((lt::date + 1) + quiet_end) AT TIME ZONE tz;
        END IF;
        RETURN e;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_quiet_until(timestamptz, text, time, time) IS 'internal: when t (in time zone tz) lies in the quiet hours start..end (over midnight when end < start), the time they end; else NULL';

-- The earliest time at or after t when the member may receive a message
-- of the channel and cap group: outside quiet hours (not for service
-- messages) and under every cap (the merchant's, and the member's day and
-- week caps).  Counted: the member's messages of that channel and group
-- that are sending or sent at their claim time, and (planning = true, at
-- enqueue) those queued at their planned slot with a priority at least
-- priority.  Returns the time (NULL: dropped by a cap with policy drop) and
-- the reason of the first move (NULL: t itself is fine).
CREATE FUNCTION wallet_internal.push_slot(merchant_id bigint, member_id bigint, channel text, cap_group text,
        service boolean, priority int, t timestamptz, planning boolean, exclude bigint,
        OUT slot timestamptz, OUT reason text)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    s wallet.push_settings;
    pr wallet.push_preferences;
    tz text;
    qs time;
    qe time;
    c record;
    ws timestamptz;
    we timestamptz;
    n bigint;
    q timestamptz;
    moved boolean;
    i int;
BEGIN
    SELECT * INTO s FROM wallet.push_settings x WHERE x.merchant_id = $1;
    SELECT * INTO pr FROM wallet.push_preferences x WHERE x.member_id = $2;
    SELECT coalesce(m.time_zone, s.time_zone, 'UTC') INTO tz FROM wallet.members m WHERE m.member_id = $2;
    IF pr.quiet_start IS NOT NULL THEN
        qs := pr.quiet_start; qe := pr.quiet_end;
    ELSIF s.merchant_id IS NULL THEN
        qs := '22:00'; qe := '08:00';
    ELSE
        qs := s.quiet_start; qe := s.quiet_end;
    END IF;
    slot := t;
    FOR i IN 1 .. 50 LOOP
        moved := false;
        IF NOT service THEN
            q := wallet_internal.push_quiet_until(slot, tz, qs, qe);
            IF q IS NOT NULL THEN
                slot := q; reason := coalesce(reason, 'quiet_hours');
            END IF;
        END IF;
        IF cap_group IS NOT NULL THEN
            FOR c IN SELECT k.period, k.max_count, k.window_size, k.policy FROM wallet.push_caps k
                      WHERE k.merchant_id = $1 AND k.channel = $3 AND k.cap_group = $4
                     UNION ALL
                     SELECT 'day', pr.max_per_day, NULL::interval, 'defer' WHERE pr.max_per_day IS NOT NULL
                     UNION ALL
                     SELECT 'week', pr.max_per_week, NULL::interval, 'defer' WHERE pr.max_per_week IS NOT NULL LOOP
                IF c.period = 'rolling' THEN
                    ws := slot - c.window_size; we := slot;
                ELSE
                    ws := date_trunc(c.period, slot AT TIME ZONE tz) AT TIME ZONE tz;
                    we := (date_trunc(c.period, slot AT TIME ZONE tz) + CASE c.period WHEN 'day' THEN interval '1 day' ELSE interval '7 days' END) AT TIME ZONE tz;
                END IF;
                -- rolling: (t - window, t]; calendar: [start, end) of the local day or week.  At
                -- claim (not planning) a rolling window counts every later claim too: a claim
                -- that started earlier but took the member's lock later must see it
                SELECT count(*) INTO n FROM wallet.push_messages x
                 WHERE x.member_id = $2 AND x.status IN ('sending', 'sent')
                   AND x.slot_at >= ws AND (x.slot_at <= we OR (c.period = 'rolling' AND NOT planning))
                   AND (x.slot_at > ws OR c.period <> 'rolling') AND (x.slot_at < we OR c.period = 'rolling')
                   AND x.channel = $3 AND x.cap_group = $4 AND x.push_id <> coalesce(exclude, 0);
                IF planning THEN
                    n := n + (SELECT count(*) FROM wallet.push_messages x
                               WHERE x.member_id = $2 AND x.status = 'queued'
                                 AND x.slot_at >= ws AND x.slot_at <= we
                                 AND (x.slot_at > ws OR c.period <> 'rolling') AND (x.slot_at < we OR c.period = 'rolling')
                                 AND x.channel = $3 AND x.cap_group = $4 AND x.push_id <> coalesce(exclude, 0)
                                 AND x.priority >= $6);
                END IF;
                IF n >= c.max_count THEN
                    IF c.policy = 'drop' THEN
                        slot := NULL; reason := 'frequency_cap';
                        RETURN;
                    END IF;
                    IF c.period = 'rolling' THEN
                        -- when the (n - max + 1)-th oldest counted message leaves the window
                        SELECT x.slot_at + c.window_size INTO slot FROM wallet.push_messages x
                         WHERE x.member_id = $2 AND x.status IN ('queued', 'sending', 'sent')
                           AND x.slot_at > ws AND (x.slot_at <= we OR NOT planning)
                           AND x.channel = $3 AND x.cap_group = $4 AND x.push_id <> coalesce(exclude, 0)
                           AND (x.status <> 'queued' OR (planning AND x.priority >= $6))
                         ORDER BY x.slot_at OFFSET n - c.max_count LIMIT 1;
                    ELSE
                        slot := we;
                    END IF;
                    reason := coalesce(reason, 'frequency_cap');
                    moved := true;
                    EXIT;
                END IF;
            END LOOP;
        END IF;
        IF NOT moved AND (service OR wallet_internal.push_quiet_until(slot, tz, qs, qe) IS NULL) THEN
            RETURN;
        END IF;
    END LOOP;
    RETURN;     -- 50 moves: the slot reached so far (checked again at claim)
END
$$;
COMMENT ON FUNCTION wallet_internal.push_slot(bigint, bigint, text, text, boolean, int, timestamptz, boolean, bigint) IS 'internal: the earliest time at or after t outside the member''s quiet hours and under every cap of the channel and cap group (NULL when a cap with policy drop is reached), with the reason of the first move';

-- Whether the member may get the topic on the channel: NULL if yes, else the reason.
CREATE FUNCTION wallet_internal.push_refusal(merchant_id bigint, member_id bigint, channel text, topic text, service boolean)
    RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    g boolean;
    chosen text[];
BEGIN
    IF (SELECT m.status FROM wallet.members m WHERE m.member_id = $2) = 'forgotten' THEN
        RETURN 'member_forgotten';
    END IF;
    SELECT c.granted INTO g FROM wallet.push_consents c
     WHERE c.merchant_id = $1 AND c.member_id = $2 AND c.channel = $3 AND c.topic = $4;
    IF service THEN
        RETURN CASE WHEN g IS FALSE THEN 'muted' END;
    END IF;
    IF g IS NULL THEN
        RETURN 'no_consent';
    ELSIF NOT g THEN
        RETURN 'consent_withdrawn';
    END IF;
    SELECT p.topics INTO chosen FROM wallet.push_preferences p WHERE p.member_id = $2;
    IF chosen IS NOT NULL AND NOT topic = ANY (chosen) THEN
        RETURN 'topic_not_chosen';
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_refusal(bigint, bigint, text, text, boolean) IS 'internal: NULL when the member may get the topic on the channel, else why not (member_forgotten, no_consent, consent_withdrawn, topic_not_chosen, muted)';

-- The name of the wake-up NOTIFY of a merchant's channel: wallet_push_ and
-- the first 40 hex digits of sha256(push_key || channel), 52 characters (an
-- identifier has at most 63).  Unguessable without the merchant's key, so a
-- role acting for another merchant cannot LISTEN to it.  src/push_enqueue.c
-- computes the same name.  NULL for a merchant that does not exist.
CREATE FUNCTION wallet_internal.push_channel_name(merchant_id bigint, channel text) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT 'wallet_push_' || left(encode(sha256(m.push_key || convert_to($2, 'UTF8')), 'hex'), 40)
      FROM wallet.merchants m WHERE m.merchant_id = $1
$$;
COMMENT ON FUNCTION wallet_internal.push_channel_name(bigint, text) IS 'internal: the NOTIFY name of a merchant''s channel, wallet_push_ and the first 40 hex digits of sha256(push_key || channel); NULL for an unknown merchant';

-- Wake-up of the workers of a merchant's channel: NOTIFY on its secret name
-- (push_channel_name), at most once per merchant and channel per session
-- every 100 ms.  NOTIFY takes a global lock at commit; throttled, a burst of
-- enqueues costs a handful of them.  A worker polls as well (a throttled
-- wake-up is late by at most its poll).
CREATE FUNCTION wallet_internal.push_notify(merchant_id bigint, channel text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    k text := 'wallet_push.notified_' || merchant_id || '_' || channel;
    last text := current_setting(k, true);
    now_ms bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
BEGIN
    IF last IS NULL OR last = '' OR now_ms - last::bigint >= 100 THEN
        PERFORM pg_notify(wallet_internal.push_channel_name(merchant_id, channel), '');
        PERFORM set_config(k, now_ms::text, false);
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_notify(bigint, text) IS 'internal: NOTIFY on the merchant''s channel name (push_channel_name), at most once per merchant and channel every 100 ms in a session';

-- The decision of enqueue_push for one member, recorded as one row.
CREATE FUNCTION wallet_internal.push_enqueue(merchant_id bigint, member_id bigint, channel text, topic text,
        payload jsonb, campaign_id bigint, dedup_key text, not_before timestamptz, expires_at timestamptz, priority int,
        lock boolean, OUT push_id bigint, OUT status text, OUT reason text, OUT eligible_at timestamptz)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_variable
DECLARE
    _m bigint := merchant_id;
    _member bigint := member_id;
    _topic text := topic;
    _channel text := channel;
    svc boolean;
    grp text;
    m record;
    s record;
    t timestamptz := greatest(not_before, now());
BEGIN
    IF lock THEN
        PERFORM FROM wallet.members w WHERE w.member_id = _member FOR NO KEY UPDATE;   -- as push_lock_member
    END IF;
    push_id := nextval('wallet.push_messages_push_id_seq'::regclass);
    IF dedup_key IS NOT NULL THEN
        -- a concurrent first use of the key: waits for it, then finds it
        INSERT INTO wallet.push_dedup AS d (merchant_id, dedup_key, push_id) VALUES (_m, dedup_key, push_id)
            ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            status := 'duplicate'; reason := 'dedup_key';
        END IF;
    END IF;
    -- what the decision needs, in one query: the topic's kind (push_topic),
    -- the member's consent and preferences (push_refusal), quiet hours, and
    -- whether a cap is reached at t (counted as push_slot counts when
    -- planning); only quiet hours or a reached cap need push_slot
    SELECT coalesce(tp.service, _topic = 'service') AS service,
           CASE WHEN tp.merchant_id IS NOT NULL THEN tp.cap_group WHEN _topic = 'service' THEN NULL ELSE 'marketing' END AS cap_group,
           w.status = 'forgotten' AS forgotten, c.granted, p.topics, p.max_per_day, p.max_per_week,
           coalesce(w.time_zone, st.time_zone, 'UTC') AS tz,
           CASE WHEN p.quiet_start IS NOT NULL THEN p.quiet_start WHEN st.merchant_id IS NULL THEN time '22:00' ELSE st.quiet_start END AS qs,
           CASE WHEN p.quiet_start IS NOT NULL THEN p.quiet_end WHEN st.merchant_id IS NULL THEN time '08:00' ELSE st.quiet_end END AS qe
      INTO m
      FROM wallet.members w
      LEFT JOIN wallet.push_topics tp ON tp.merchant_id = _m AND tp.topic = _topic
      LEFT JOIN wallet.push_consents c ON c.merchant_id = _m AND c.member_id = _member AND c.channel = _channel AND c.topic = _topic
      LEFT JOIN wallet.push_preferences p ON p.member_id = _member
      LEFT JOIN wallet.push_settings st ON st.merchant_id = _m
     WHERE w.member_id = _member;
    svc := m.service; grp := m.cap_group;
    -- a campaign's message goes to its target group only (the control
    -- group must stay untouched for the measured lift)
    IF status IS NULL AND campaign_id IS NOT NULL THEN
        reason := CASE wallet_internal.campaign_group(campaign_id, _member)
                       WHEN 'control' THEN 'control_group' WHEN 'outside' THEN 'outside_audience' END;
        IF reason IS NOT NULL THEN
            status := 'suppressed';
        END IF;
    END IF;
    IF status IS NULL THEN
        reason := CASE WHEN m.forgotten THEN 'member_forgotten'
                       WHEN svc THEN CASE WHEN m.granted IS FALSE THEN 'muted' END
                       WHEN m.granted IS NULL THEN 'no_consent'
                       WHEN NOT m.granted THEN 'consent_withdrawn'
                       WHEN m.topics IS NOT NULL AND NOT _topic = ANY (m.topics) THEN 'topic_not_chosen' END;
        IF reason IS NOT NULL THEN
            status := 'suppressed';
        ELSIF expires_at IS NOT NULL AND expires_at <= t THEN
            status := 'suppressed'; reason := 'expired';
        ELSIF (svc OR wallet_internal.push_quiet_until(t, m.tz, m.qs, m.qe) IS NULL)
              AND (grp IS NULL OR NOT EXISTS (
                  SELECT FROM (SELECT k.period, k.max_count, k.window_size FROM wallet.push_caps k
                                WHERE k.merchant_id = _m AND k.channel = _channel AND k.cap_group = grp
                               UNION ALL
                               SELECT 'day', m.max_per_day, NULL::interval WHERE m.max_per_day IS NOT NULL
                               UNION ALL
                               SELECT 'week', m.max_per_week, NULL::interval WHERE m.max_per_week IS NOT NULL) k
                  CROSS JOIN LATERAL (
                      SELECT CASE WHEN k.period = 'rolling' THEN t - k.window_size
                                  ELSE date_trunc(k.period, t AT TIME ZONE m.tz) AT TIME ZONE m.tz END AS ws,
                             CASE WHEN k.period = 'rolling' THEN t
                                  ELSE (date_trunc(k.period, t AT TIME ZONE m.tz)
                                        + CASE k.period WHEN 'day' THEN interval '1 day' ELSE interval '7 days' END) AT TIME ZONE m.tz END AS we) b
                  WHERE (SELECT count(*) FROM wallet.push_messages y
                          WHERE y.member_id = _member AND y.channel = _channel AND y.cap_group = grp
                            AND (y.status IN ('sending', 'sent') OR (y.status = 'queued' AND y.priority >= push_enqueue.priority))
                            AND y.slot_at >= b.ws AND y.slot_at <= b.we
                            AND (y.slot_at > b.ws OR k.period <> 'rolling') AND (y.slot_at < b.we OR k.period = 'rolling')) >= k.max_count)) THEN
            -- t itself is fine
            status := 'queued'; eligible_at := t;
        ELSE
            s := wallet_internal.push_slot(_m, _member, _channel, grp, svc, priority, t, true, NULL);
            IF s.slot IS NULL THEN
                status := 'suppressed'; reason := s.reason;
            ELSIF expires_at IS NOT NULL AND s.slot >= expires_at THEN
                status := 'suppressed'; reason := 'expires_before_slot';
            ELSE
                eligible_at := s.slot;
                status := CASE WHEN s.reason IS NULL THEN 'queued' ELSE 'deferred' END;
                reason := s.reason;
            END IF;
        END IF;
    END IF;
    INSERT INTO wallet.push_messages (push_id, merchant_id, member_id, channel, topic, cap_group, service, payload, campaign_id,
                                      dedup_key, priority, not_before, expires_at, outcome, outcome_reason, status, reason,
                                      due_at, slot_at, finished_at, part)
    OVERRIDING SYSTEM VALUE
    VALUES (push_id, _m, _member, _channel, _topic, grp, svc, payload, campaign_id, dedup_key, priority, not_before, expires_at,
            status, reason, CASE WHEN status IN ('queued', 'deferred') THEN 'queued' ELSE status END, reason,
            eligible_at, eligible_at, CASE WHEN status IN ('queued', 'deferred') THEN NULL ELSE now() END,
            CASE WHEN status IN ('queued', 'deferred') THEN (SELECT (q.last_value % 4)::smallint FROM wallet_internal.push_queue_slot q) ELSE 3 END);
    IF status = 'queued' THEN
        PERFORM wallet_internal.push_notify(_m, _channel);
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_enqueue(bigint, bigint, text, text, jsonb, bigint, text, timestamptz, timestamptz, int, boolean) IS 'internal: decides and records one message for one member (queued, deferred, suppressed or duplicate, with the reason), optionally under the member''s lock';

-- A message named by id, locked, when the caller acts for its merchant;
-- else WL701 exactly as for an id that does not exist.
CREATE FUNCTION wallet_internal.push_lock(push_id bigint) RETURNS wallet.push_messages
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.push_messages;
    i int;
BEGIN
    IF push_id IS NULL THEN
        RAISE EXCEPTION 'push_id must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A message is named by the push_id enqueue_push or claim_pushes returned.';
    END IF;
    -- a row moved meanwhile (finished, or carried to another slot by the
    -- rotation) is gone from this statement's view once its lock is free:
    -- looked up again, it is found where it went
    FOR i IN 1 .. 3 LOOP
        SELECT * INTO r FROM wallet.push_messages x WHERE x.push_id = $1 FOR UPDATE;
        EXIT WHEN FOUND;
    END LOOP;
    IF r.push_id IS NULL OR NOT wallet.acts_for(r.merchant_id) THEN
        RAISE EXCEPTION 'push % does not exist', push_id
            USING ERRCODE = 'WL701', DETAIL = 'Messages are named by the push_id enqueue_push returned; finished ones are purged after the retention.';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_lock(bigint) IS 'internal: the message row, locked; 22004 for a NULL id, WL701 for one that does not exist or is another merchant''s';

-- The queue slot new messages go to (wallet_internal.push_queue_slot).
CREATE FUNCTION wallet_internal.push_current_slot() RETURNS smallint
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN (SELECT (s.last_value % 4)::smallint FROM wallet_internal.push_queue_slot s);
END
$$;
COMMENT ON FUNCTION wallet_internal.push_current_slot() IS 'internal: the current queue slot (0-2) of wallet.push_messages, where new and requeued messages are written';

-- A message leaves its partition as a delete and an insert, never as an
-- UPDATE of part: a row moved by UPDATE makes a concurrent lock of it fail
-- (40001) where a deleted one is just skipped (claims) or looked up again
-- (push_lock).  r carries the new values; it is written into partition to.
CREATE FUNCTION wallet_internal.push_move(r wallet.push_messages, "to" smallint) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    was smallint := r.part;
BEGIN
    DELETE FROM wallet.push_messages x WHERE x.push_id = r.push_id AND x.part = was;
    r.part := "to";
    INSERT INTO wallet.push_messages OVERRIDING SYSTEM VALUE VALUES (r.*);
END
$$;
COMMENT ON FUNCTION wallet_internal.push_move(wallet.push_messages, smallint) IS 'internal: moves a message (locked by the caller) to partition "to" of wallet.push_messages with the values of r, as a delete and an insert';

-- Finishes queued or sending messages at once (a withdrawal, an erasure):
-- deleted from their queue slots, written into push_messages_done as
-- status with the reason (reason_service for service messages, if given).
CREATE FUNCTION wallet_internal.push_finish(ids bigint[], status text, reason text, reason_service text) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n bigint;
BEGIN
    WITH d AS (
        DELETE FROM wallet.push_messages x WHERE x.push_id = ANY (ids) AND x.part < 3 RETURNING x.*)
    INSERT INTO wallet.push_messages OVERRIDING SYSTEM VALUE
    SELECT d.push_id, d.merchant_id, d.member_id, d.channel, d.topic, d.cap_group, d.service, d.payload, d.campaign_id,
           d.dedup_key, d.priority, d.not_before, d.expires_at, d.created_at, d.outcome, d.outcome_reason,
           push_finish.status, CASE WHEN d.service AND reason_service IS NOT NULL THEN reason_service ELSE push_finish.reason END,
           NULL, d.slot_at, d.attempts, d.claimed_at, d.sent_at, d.provider_message_id, d.last_error, now(), 3, d.requeued_attempts
      FROM d;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_finish(bigint[], text, text, text) IS 'internal: moves the queued or sending messages of ids to wallet.push_messages_done with status and reason (reason_service for service messages when given); returns how many';

CREATE FUNCTION wallet_internal.push_not_sending(r wallet.push_messages) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RAISE EXCEPTION 'push % is not being sent', r.push_id
        USING ERRCODE = 'WL702',
              DETAIL = format('The message is %s%s; only a claimed message can be acknowledged, failed or have its lease extended.',
                              r.status, coalesce(' (' || r.reason || ')', ''));
END
$$;
COMMENT ON FUNCTION wallet_internal.push_not_sending(wallet.push_messages) IS 'internal: raises WL702 for a message that is not claimed (status sending)';

CREATE FUNCTION wallet_internal.push_check_lease(lease interval) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF lease IS NULL THEN
        RAISE EXCEPTION 'lease must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A claimed message is leased to its worker for a while.';
    END IF;
    IF lease <= interval '0' OR lease > interval '1 day' THEN
        RAISE EXCEPTION 'lease must be positive and at most a day'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'When the lease lapses the message can be claimed again.';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_check_lease(interval) IS 'internal: raises 22004 for a NULL lease, 22023 unless it is positive and at most a day';

------------------------------------------------------------------------------
-- Settings API (wallet_admin)
------------------------------------------------------------------------------

CREATE FUNCTION wallet.set_push_settings(merchant_id bigint, quiet_start time DEFAULT '22:00', quiet_end time DEFAULT '08:00',
        time_zone text DEFAULT 'UTC', max_attempts int DEFAULT 5, backoff interval DEFAULT '30 seconds',
        retention interval DEFAULT '90 days') RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.check_merchant(merchant_id);
    PERFORM wallet_internal.push_check_quiet(quiet_start, quiet_end);
    IF time_zone IS NULL OR max_attempts IS NULL OR backoff IS NULL OR retention IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN time_zone IS NULL THEN 'time_zone' WHEN max_attempts IS NULL THEN 'max_attempts'
                                                   WHEN backoff IS NULL THEN 'backoff' ELSE 'retention' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Every setting has a value; call without it for the default.';
    END IF;
    IF NOT wallet_internal.time_zone_known(set_push_settings.time_zone) THEN
        RAISE EXCEPTION 'unknown time zone "%"', left(time_zone, 64)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A time zone is an IANA name such as Europe/Zurich (see pg_timezone_names).';
    END IF;
    IF max_attempts NOT BETWEEN 1 AND 100 OR backoff <= interval '0' OR backoff > interval '1 day'
       OR retention <= interval '0' OR retention > interval '100 years' THEN
        RAISE EXCEPTION 'max_attempts, backoff or retention out of range'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A message is tried 1 to 100 times (max_attempts); the backoff is positive and at most a day, the retention positive and at most 100 years.';
    END IF;
    INSERT INTO wallet.push_settings AS s (merchant_id, quiet_start, quiet_end, time_zone, max_attempts, backoff, retention)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT ON CONSTRAINT push_settings_pkey DO UPDATE
       SET quiet_start = excluded.quiet_start, quiet_end = excluded.quiet_end, time_zone = excluded.time_zone,
           max_attempts = excluded.max_attempts, backoff = excluded.backoff, retention = excluded.retention, updated_at = now();
END
$$;
COMMENT ON FUNCTION wallet.set_push_settings(bigint, time, time, text, int, interval, interval) IS 'sets a merchant''s push settings: default quiet hours (NULL, NULL: none) and time zone, delivery attempts, backoff and retention';

CREATE FUNCTION wallet.set_push_topic(merchant_id bigint, topic text, service boolean, cap_group text DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.check_merchant(merchant_id);
    PERFORM wallet_internal.push_check_name('topic', topic);
    IF service IS NULL THEN
        RAISE EXCEPTION 'service must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A topic is either a service topic or a marketing topic.';
    END IF;
    IF cap_group IS NOT NULL THEN
        PERFORM wallet_internal.push_check_name('cap_group', cap_group);
    END IF;
    INSERT INTO wallet.push_topics AS t (merchant_id, topic, service, cap_group) VALUES ($1, $2, $3, $4)
    ON CONFLICT ON CONSTRAINT push_topics_pkey DO UPDATE SET service = excluded.service, cap_group = excluded.cap_group;
END
$$;
COMMENT ON FUNCTION wallet.set_push_topic(bigint, text, boolean, text) IS 'declares a topic: service (no opt-in, can be muted, no quiet hours) or marketing (explicit opt-in), and the cap group it counts against (NULL: exempt from caps); applies to messages enqueued from then on';

CREATE FUNCTION wallet.set_push_cap(merchant_id bigint, channel text, cap_group text, period text, max_count int,
        window_size interval DEFAULT NULL, policy text DEFAULT 'defer') RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.check_merchant(merchant_id);
    PERFORM wallet_internal.push_check_name('channel', channel);
    PERFORM wallet_internal.push_check_name('cap_group', cap_group);
    IF period IS NULL OR policy IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN period IS NULL THEN 'period' ELSE 'policy' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A cap counts per rolling window, day or week, and defers or drops.';
    END IF;
    IF period NOT IN ('rolling', 'day', 'week') OR policy NOT IN ('defer', 'drop')
       OR (period = 'rolling') <> (window_size IS NOT NULL) OR window_size <= interval '0' OR window_size > interval '100 years'
       OR max_count < 1 THEN
        RAISE EXCEPTION 'invalid cap'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A cap counts per rolling window (a positive window_size of at most 100 years), day or week (no window_size), defers or drops, and has a positive max_count (NULL removes the cap).';
    END IF;
    IF max_count IS NULL THEN
        DELETE FROM wallet.push_caps k WHERE k.merchant_id = $1 AND k.channel = $2 AND k.cap_group = $3 AND k.period = $4;
        RETURN;
    END IF;
    INSERT INTO wallet.push_caps AS k (merchant_id, channel, cap_group, period, max_count, window_size, policy)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT ON CONSTRAINT push_caps_pkey DO UPDATE
       SET max_count = excluded.max_count, window_size = excluded.window_size, policy = excluded.policy;
END
$$;
COMMENT ON FUNCTION wallet.set_push_cap(bigint, text, text, text, int, interval, text) IS 'sets (max_count NULL: removes) a frequency cap: at most max_count messages of a cap group on a channel per rolling window_size, local calendar day or week; over it a message is deferred to the first allowed slot or dropped';

------------------------------------------------------------------------------
-- Consent and preferences API (wallet_app)
------------------------------------------------------------------------------

CREATE FUNCTION wallet.record_consent(merchant_id bigint, member_ref text, channel text, topic text, granted boolean,
        source text, policy_version text DEFAULT NULL, device text DEFAULT NULL, at timestamptz DEFAULT now()) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_variable
DECLARE
    _m bigint := merchant_id;
    member bigint;
    id bigint;
    bad text[];   -- the first evidence text out of bounds: its name and value
BEGIN
    PERFORM wallet_internal.member_check(_m, member_ref);
    PERFORM wallet_internal.push_check_name('channel', channel);
    PERFORM wallet_internal.push_check_name('topic', topic);
    IF granted IS NULL OR source IS NULL OR at IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN granted IS NULL THEN 'granted' WHEN source IS NULL THEN 'source' ELSE 'at' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Consent evidence says what was decided, when and where.';
    END IF;
    IF NOT isfinite(at) THEN
        RAISE EXCEPTION 'at must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Consent is given or withdrawn at a real instant.';
    END IF;
    -- the state follows the latest evidence: a future time would outrank
    -- every withdrawal made until then
    IF at > now() THEN
        RAISE EXCEPTION 'at must not be in the future'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('Consent evidence records a decision already taken, at %s or earlier.', now());
    END IF;
    bad := CASE WHEN btrim(source) = '' OR length(source) > 200 THEN ARRAY['source', source]
                WHEN btrim(policy_version) = '' OR length(policy_version) > 200 THEN ARRAY['policy_version', policy_version]
                WHEN btrim(device) = '' OR length(device) > 200 THEN ARRAY['device', device] END;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION '% must not be %', bad[1], CASE WHEN btrim(bad[2]) = '' THEN 'blank' ELSE 'longer than 200 characters' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Consent evidence texts are non-blank and at most 200 characters.';
    END IF;
    member := wallet_internal.member_ensure(_m, member_ref);
    PERFORM wallet_internal.push_lock_member(member, true);
    INSERT INTO wallet.push_consent_log AS l (merchant_id, member_id, channel, topic, granted, at, source, policy_version, device)
    VALUES (_m, member, channel, topic, granted, at, source, policy_version, device)
    RETURNING l.consent_id INTO id;
    -- the state is the latest evidence by when it was given (late evidence of an earlier decision changes nothing)
    INSERT INTO wallet.push_consents AS c (merchant_id, member_id, channel, topic, granted, at, consent_id)
    VALUES (_m, member, channel, topic, granted, at, id)
    ON CONFLICT ON CONSTRAINT push_consents_pkey DO UPDATE
       SET granted = excluded.granted, at = excluded.at, consent_id = excluded.consent_id
     WHERE c.at <= excluded.at;
    -- a withdrawal takes effect at once, for queued messages too
    IF NOT (SELECT c.granted FROM wallet.push_consents c
             WHERE c.merchant_id = _m AND c.member_id = member AND c.channel = record_consent.channel AND c.topic = record_consent.topic) THEN
        PERFORM wallet_internal.push_finish(ARRAY(
                    SELECT x.push_id FROM wallet.push_messages x
                     WHERE x.member_id = member AND x.part < 3 AND x.status = 'queued'
                       AND x.channel = record_consent.channel AND x.topic = record_consent.topic),
                'suppressed', 'consent_withdrawn', 'muted');
    END IF;
    RETURN id;
END
$$;
COMMENT ON FUNCTION wallet.record_consent(bigint, text, text, text, boolean, text, text, text, timestamptz) IS 'records evidence of a member granting or withdrawing consent to a topic on a channel (source, policy version, device); the current state follows the latest evidence; a withdrawal suppresses the queued messages of that channel and topic at once; returns the evidence id';

CREATE FUNCTION wallet.set_push_preferences(merchant_id bigint, member_ref text, quiet_start time DEFAULT NULL,
        quiet_end time DEFAULT NULL, topics text[] DEFAULT NULL, max_per_day int DEFAULT NULL, max_per_week int DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_variable
DECLARE
    _m bigint := merchant_id;
    member bigint;
    t text;
BEGIN
    PERFORM wallet_internal.member_check(_m, member_ref);
    PERFORM wallet_internal.push_check_quiet(quiet_start, quiet_end);
    IF array_ndims(topics) > 1 THEN
        RAISE EXCEPTION 'topics must be a one-dimensional array'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The marketing topics a member chose are listed one after the other (NULL: none of its own).';
    END IF;
    FOREACH t IN ARRAY coalesce(topics, '{}') LOOP
        PERFORM wallet_internal.push_check_name('topic', t);
    END LOOP;
    IF max_per_day < 0 OR max_per_week < 0 THEN
        RAISE EXCEPTION 'caps must not be negative'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A member''s cap is a count of messages per day or week (NULL: none).';
    END IF;
    member := wallet_internal.member_ensure(_m, member_ref);
    PERFORM wallet_internal.push_lock_member(member, true);
    INSERT INTO wallet.push_preferences AS p (merchant_id, member_id, quiet_start, quiet_end, topics, max_per_day, max_per_week)
    VALUES (_m, member, quiet_start, quiet_end, topics, max_per_day, max_per_week)
    ON CONFLICT ON CONSTRAINT push_preferences_pkey DO UPDATE
       SET quiet_start = excluded.quiet_start, quiet_end = excluded.quiet_end, topics = excluded.topics,
           max_per_day = excluded.max_per_day, max_per_week = excluded.max_per_week, updated_at = now();
END
$$;
COMMENT ON FUNCTION wallet.set_push_preferences(bigint, text, time, time, text[], int, int) IS 'sets a member''s own preferences (all of them; NULL: none of its own): quiet hours, the marketing topics chosen, caps per local day and week on every capped group (they only lower the merchant''s)';

------------------------------------------------------------------------------
-- Enqueue (wallet_app)
------------------------------------------------------------------------------

CREATE FUNCTION wallet_internal.push_check_message(merchant_id bigint, channel text, topic text, payload jsonb,
        campaign_id bigint, dedup_key text, not_before timestamptz, priority int) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.push_check_name('channel', channel);
    PERFORM wallet_internal.push_check_name('topic', topic);
    IF payload IS NULL OR not_before IS NULL OR priority IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN payload IS NULL THEN 'payload' WHEN not_before IS NULL THEN 'not_before' ELSE 'priority' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A message has a payload, an earliest send time and a priority (defaults: now(), 0).';
    END IF;
    IF jsonb_typeof(payload) <> 'object' OR length(payload::text) > 65536 THEN
        RAISE EXCEPTION 'payload must be a json object of at most 64 kB'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The payload is what the worker sends, e.g. {"title": ..., "body": ...}.';
    END IF;
    IF btrim(dedup_key) = '' OR length(dedup_key) > 200 THEN
        RAISE EXCEPTION 'dedup_key must not be %', CASE WHEN btrim(dedup_key) = '' THEN 'blank' ELSE 'longer than 200 characters' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A deduplication key is a non-blank text of at most 200 characters (NULL: none).';
    END IF;
    IF campaign_id IS NOT NULL
       AND NOT EXISTS (SELECT FROM wallet.campaigns c WHERE c.campaign_id = $5 AND c.merchant_id = $1 AND wallet.acts_for(c.merchant_id)) THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id
            USING ERRCODE = 'WL101', DETAIL = 'A message belongs to a campaign of its merchant, or to none.';
    END IF;
    IF NOT isfinite(not_before) THEN
        RAISE EXCEPTION 'not_before must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The earliest send time is a real instant (default: now()).';
    END IF;
    -- (far enough for any plan; the local-time arithmetic of quiet hours
    -- and calendar caps stays within the timestamp range)
    IF not_before > now() + interval '100 years' THEN
        RAISE EXCEPTION 'not_before must be at most 100 years from now'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The earliest send time is a real instant (default: now()).';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_check_message(bigint, text, text, jsonb, bigint, text, timestamptz, int) IS 'internal: the argument checks of enqueue_push (22004, 22023 also for an infinite not_before or one over 100 years from now, WL101 for a campaign that is not the merchant''s)';

-- In C (src/push_enqueue.c, issue 12): the checks of member_check and
-- push_check_message, member_ensure, and the decision of push_enqueue with
-- saved plans and cached merchant settings (src/push_decide.c).
CREATE FUNCTION wallet.enqueue_push(merchant_id bigint, member_ref text, channel text, topic text, payload jsonb,
        campaign_id bigint DEFAULT NULL, dedup_key text DEFAULT NULL, not_before timestamptz DEFAULT now(),
        expires_at timestamptz DEFAULT NULL, priority int DEFAULT 0,
        OUT push_id bigint, OUT status text, OUT reason text, OUT eligible_at timestamptz)
    LANGUAGE C
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'enqueue_push';
COMMENT ON FUNCTION wallet.enqueue_push(bigint, text, text, text, jsonb, bigint, text, timestamptz, timestamptz, int) IS 'enqueues a message for a member: queued (eligible now), deferred (quiet_hours or frequency_cap, with the time it becomes eligible), suppressed (no_consent, consent_withdrawn, topic_not_chosen, muted, member_forgotten, control_group or outside_audience of its campaign, expired, expires_before_slot, frequency_cap with policy drop) or duplicate (dedup_key used before by the merchant); every outcome is recorded in wallet.push_messages';

-- A campaign's audience in one call: every active member (member_refs
-- NULL) or the members named.  The members are read by a cursor (streamed,
-- never all in memory) and each goes through enqueue's decision; the
-- member locks are not taken (a transaction would hold one per member): the
-- claim-time check under the lock keeps the caps.  local_at, when given,
-- is each member's earliest send time in the member's own time zone.
CREATE FUNCTION wallet_internal.push_audience(merchant_id bigint, member_refs text[], channel text, topic text, payload jsonb,
        campaign_id bigint, dedup_key text, not_before timestamptz, local_at timestamp, expires_at timestamptz, priority int)
    RETURNS TABLE (status text, reason text, messages bigint)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_variable
DECLARE
    _m bigint := merchant_id;
    mem record;
    r record;
    counts jsonb := '{}';
    k text;
    tz text := coalesce((SELECT s.time_zone FROM wallet.push_settings s WHERE s.merchant_id = _m), 'UTC');
BEGIN
    PERFORM wallet_internal.check_merchant(_m);
    -- (a local send has no not_before: its local_at is checked below)
    PERFORM wallet_internal.push_check_message(_m, channel, topic, payload, campaign_id, dedup_key,
                                               coalesce(not_before, CASE WHEN local_at IS NOT NULL THEN now() END), priority);
    IF NOT isfinite(local_at) THEN
        RAISE EXCEPTION 'local_at must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A festival send goes out at a real local date and time.';
    END IF;
    -- (each member's zone turns it into an instant: it stays in the range)
    IF local_at > localtimestamp + interval '100 years' OR local_at < localtimestamp - interval '100 years' THEN
        RAISE EXCEPTION 'local_at must be at most 100 years %', CASE WHEN local_at > localtimestamp THEN 'from now' ELSE 'before now' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A festival send goes out at a real local date and time.';
    END IF;
    IF NOT isfinite(expires_at) THEN
        RAISE EXCEPTION 'expires_at must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A message expires at a real instant, or never (NULL).';
    END IF;
    IF length(dedup_key) > 180 THEN
        RAISE EXCEPTION 'dedup_key must not be longer than 180 characters'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An audience''s key is extended by each member''s id.';
    END IF;
    IF array_ndims(member_refs) > 1 THEN
        RAISE EXCEPTION 'member_refs must be a one-dimensional array'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An audience''s members are listed one after the other (NULL: the campaign''s audience or every active member).';
    END IF;
    IF member_refs IS NOT NULL THEN
        FOREACH k IN ARRAY member_refs LOOP
            PERFORM wallet_internal.member_check(_m, k);
        END LOOP;
    END IF;
    FOR mem IN SELECT x.member_id, coalesce(w.time_zone, tz) AS tz
                 FROM (SELECT m.member_id FROM wallet.members m
                        WHERE m.merchant_id = _m AND member_refs IS NULL AND campaign_id IS NULL AND m.status = 'active'
                       UNION ALL
                       -- a campaign's send: its audience (the control group
                       -- is recorded as suppressed by push_enqueue)
                       SELECT a.member_id FROM wallet_internal.campaign_members(campaign_id) a
                         JOIN wallet.members m ON m.member_id = a.member_id AND m.status = 'active'
                        WHERE member_refs IS NULL AND campaign_id IS NOT NULL
                       UNION ALL
                       SELECT wallet_internal.member_ensure(_m, u.ref) FROM (SELECT DISTINCT x AS ref FROM unnest(member_refs) x) u) x
                 -- LEFT: a member member_ensure creates is not in this
                 -- statement's snapshot (and has no time zone of its own)
                 LEFT JOIN wallet.members w ON w.member_id = x.member_id LOOP
        r := wallet_internal.push_enqueue(_m, mem.member_id, channel, topic, payload, campaign_id,
                                          dedup_key || ':' || mem.member_id,
                                          coalesce(local_at AT TIME ZONE mem.tz, not_before), expires_at, priority, false);
        k := r.status || '/' || coalesce(r.reason, '');
        counts := jsonb_set(counts, ARRAY[k], to_jsonb(coalesce((counts ->> k)::bigint, 0) + 1));
    END LOOP;
    RETURN QUERY SELECT split_part(e.key, '/', 1), nullif(split_part(e.key, '/', 2), ''), e.value::text::bigint
                   FROM jsonb_each(counts) e ORDER BY 1, 2;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_audience(bigint, text[], text, text, jsonb, bigint, text, timestamptz, timestamp, timestamptz, int) IS 'internal: enqueues for an audience (member_refs NULL: every active member, or the campaign''s audience), streaming the members, each decided as enqueue_push does; the earliest send time is not_before, or local_at in each member''s time zone; returns counts per status and reason';

CREATE FUNCTION wallet.enqueue_push_audience(merchant_id bigint, member_refs text[], channel text, topic text, payload jsonb,
        campaign_id bigint DEFAULT NULL, dedup_key text DEFAULT NULL, not_before timestamptz DEFAULT now(),
        expires_at timestamptz DEFAULT NULL, priority int DEFAULT 0)
    RETURNS TABLE (status text, reason text, messages bigint)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN QUERY SELECT * FROM wallet_internal.push_audience($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $10);
END
$$;
COMMENT ON FUNCTION wallet.enqueue_push_audience(bigint, text[], text, text, jsonb, bigint, text, timestamptz, timestamptz, int) IS 'enqueues a message for a campaign''s audience in one call (member_refs NULL: the campaign''s audience, its control group recorded as suppressed; every active member of the merchant without a campaign), streaming the members, each decided as enqueue_push does (dedup_key, if given, extended by '':<member_id>''); returns the count of messages per status and reason';

CREATE FUNCTION wallet.enqueue_push_local(merchant_id bigint, member_refs text[], channel text, topic text, payload jsonb,
        local_at timestamp, campaign_id bigint DEFAULT NULL, dedup_key text DEFAULT NULL,
        expires_at timestamptz DEFAULT NULL, priority int DEFAULT 0)
    RETURNS TABLE (status text, reason text, messages bigint)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF local_at IS NULL THEN
        RAISE EXCEPTION 'local_at must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A festival send goes out at a local date and time in each member''s time zone.';
    END IF;
    RETURN QUERY SELECT * FROM wallet_internal.push_audience($1, $2, $3, $4, $5, $7, $8, NULL, $6, $9, $10);
END
$$;
COMMENT ON FUNCTION wallet.enqueue_push_local(bigint, text[], text, text, jsonb, timestamp, bigint, text, timestamptz, int) IS 'a campaign send at a local date and time in each member''s own time zone (the merchant''s for members without one), e.g. 09:00 on a festival morning everywhere: as enqueue_push_audience, with each member''s earliest send time local_at (at most 100 years before or after now) in the member''s zone';

------------------------------------------------------------------------------
-- Delivery (wallet_app: the sending workers)
------------------------------------------------------------------------------

-- The part of a claim decided one message at a time (wallet.claim_pushes,
-- src/push_claim.c, hands it the messages, locked, their members locked):
-- a member's messages after its first in one claim, and those that quiet
-- hours or a reached cap may move.  Each is checked again as push_slot
-- decides at claim: suppressed, deferred to its slot, or leased.
CREATE FUNCTION wallet_internal.push_claim_each(ids bigint[], lease interval)
    RETURNS TABLE (push_id bigint, merchant_id bigint, member_ref text, topic text, payload jsonb, campaign_id bigint,
                   attempts int, lease_until timestamptz)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    id bigint;
    refusal text;
    s record;
    r wallet.push_messages;
BEGIN
    FOREACH id IN ARRAY ids LOOP
        SELECT * INTO r FROM wallet.push_messages x WHERE x.push_id = id AND x.part < 3;
        refusal := wallet_internal.push_refusal(r.merchant_id, r.member_id, r.channel, r.topic, r.service);
        IF refusal IS NULL AND r.expires_at <= now() THEN
            refusal := 'expired';
        END IF;
        IF refusal IS NULL AND (r.service IS NOT TRUE OR r.cap_group IS NOT NULL) THEN
            s := wallet_internal.push_slot(r.merchant_id, r.member_id, r.channel, r.cap_group, r.service, r.priority, now(), false, r.push_id);
            IF s.slot IS NULL THEN
                refusal := s.reason;
            ELSIF s.slot >= r.expires_at THEN
                refusal := 'expires_before_slot'; r.slot_at := s.slot;
            ELSIF s.slot > now() THEN
                UPDATE wallet.push_messages x SET status = 'queued', reason = s.reason, due_at = s.slot, slot_at = s.slot
                 WHERE x.push_id = id AND x.part = r.part;
                CONTINUE;
            END IF;
        END IF;
        IF refusal IS NOT NULL THEN
            r.status := 'suppressed'; r.reason := refusal; r.due_at := NULL; r.finished_at := now();
            PERFORM wallet_internal.push_move(r, 3::smallint);
            CONTINUE;
        END IF;
        UPDATE wallet.push_messages x
           SET status = 'sending', due_at = now() + lease, slot_at = now(), claimed_at = now(), attempts = x.attempts + 1
         WHERE x.push_id = id AND x.part = r.part
        RETURNING x.push_id, x.merchant_id, x.topic, x.payload, x.campaign_id, x.attempts, x.due_at
             INTO push_id, merchant_id, topic, payload, campaign_id, attempts, lease_until;
        SELECT m.member_ref INTO member_ref FROM wallet.members m WHERE m.member_id = r.member_id;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_claim_each(bigint[], interval) IS 'internal: the messages of ids (locked, their members locked by the caller), in order, checked again one by one (consent, expiry, quiet hours, caps as push_slot counts at claim): suppressed, deferred to their slot, or leased for lease and returned';

-- In C (src/push_claim.c): the due messages chosen and locked in one query,
-- the members' locks, and each member's first message checked again and
-- leased (or suppressed) in one statement, set-based; the rest by
-- wallet_internal.push_claim_each.
CREATE FUNCTION wallet.claim_pushes(channel text, n int, lease interval)
    RETURNS TABLE (push_id bigint, merchant_id bigint, member_ref text, topic text, payload jsonb, campaign_id bigint,
                   attempts int, lease_until timestamptz)
    AS 'MODULE_PATHNAME', 'claim_pushes' LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET enable_seqscan = off;
COMMENT ON FUNCTION wallet.claim_pushes(text, int, interval) IS 'claims up to n due messages of a channel (of the merchants the caller acts for), highest priority first, leasing them for lease; each is checked again first, under its member''s lock: consent, expiry, quiet hours and caps (a message failing the check is suppressed or deferred, never returned; one per member at once, set-based, the rest one by one); a lapsed lease makes a message claimable again';

-- The name a sending worker LISTENs on to be woken when a message of the
-- merchant's channel is queued (enqueue_push NOTIFYs it).  Secret per
-- merchant: another merchant's looks like an unknown one (WL102).
CREATE FUNCTION wallet.push_channel(merchant_id bigint, channel text) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.check_merchant(merchant_id);
    PERFORM wallet_internal.push_check_name('channel', channel);
    RETURN wallet_internal.push_channel_name(merchant_id, channel);
END
$$;
COMMENT ON FUNCTION wallet.push_channel(bigint, text) IS 'the NOTIFY name a sending worker LISTENs on for the merchant''s channel (quote it as an identifier): wallet_push_ and 40 hex digits derived from the merchant''s secret push_key, so only roles acting for the merchant can name it; enqueue_push NOTIFYs it, throttled, when it queues a message';

CREATE FUNCTION wallet.extend_lease(push_id bigint, lease interval) RETURNS timestamptz
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.push_messages := wallet_internal.push_lock(push_id);
BEGIN
    PERFORM wallet_internal.push_check_lease(lease);
    IF r.status <> 'sending' THEN
        PERFORM wallet_internal.push_not_sending(r);
    END IF;
    UPDATE wallet.push_messages x SET due_at = now() + lease WHERE x.push_id = r.push_id AND x.part = r.part;
    RETURN now() + lease;
END
$$;
COMMENT ON FUNCTION wallet.extend_lease(bigint, interval) IS 'extends the lease of a claimed message to now() + lease and returns when it lapses; WL702 if it is not being sent';

-- wallet.ack_push in PL/pgSQL, every case (the C function calls it for all
-- but the common one).
CREATE FUNCTION wallet_internal.push_ack_one(push_id bigint, provider_message_id text) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.push_messages := wallet_internal.push_lock(push_id);
BEGIN
    IF length(provider_message_id) > 200 OR btrim(provider_message_id) = '' THEN
        RAISE EXCEPTION 'provider_message_id must be non-blank and at most 200 characters'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'It is the provider''s id of the delivery (NULL: none).';
    END IF;
    IF r.status = 'sent' AND r.provider_message_id IS NOT DISTINCT FROM push_ack_one.provider_message_id THEN
        RETURN false;   -- the same acknowledgement again
    END IF;
    IF r.status <> 'sending' THEN
        PERFORM wallet_internal.push_not_sending(r);
    END IF;
    INSERT INTO wallet.push_attempts (merchant_id, member_id, push_id, claimed_at, outcome, provider_message_id)
    VALUES (r.merchant_id, r.member_id, r.push_id, r.claimed_at, 'sent', push_ack_one.provider_message_id);
    r.status := 'sent'; r.reason := NULL; r.due_at := NULL; r.sent_at := now(); r.finished_at := now();
    r.provider_message_id := push_ack_one.provider_message_id;
    PERFORM wallet_internal.push_move(r, 3::smallint);
    RETURN true;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_ack_one(bigint, text) IS 'internal: wallet.ack_push, every case: records a claimed message as sent (also after its lease lapsed, unless claimed again since) with the provider''s id; true, or false for the same acknowledgement again; WL702 if it is not being sent';

-- In C (src/push_claim.c): a message being sent moved into the finished
-- partition with its delivery record in one statement; every other case by
-- wallet_internal.push_ack_one.
CREATE FUNCTION wallet.ack_push(push_id bigint, provider_message_id text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'ack_push' LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET enable_seqscan = off;
COMMENT ON FUNCTION wallet.ack_push(bigint, text) IS 'records a claimed message as sent (also after its lease lapsed, unless claimed again since) with the provider''s id; true, or false for the same acknowledgement again; WL702 if it is not being sent';

CREATE FUNCTION wallet_internal.push_check_acks(push_ids bigint[], provider_message_ids text[]) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF array_ndims(push_ids) > 1 OR array_ndims(provider_message_ids) > 1 THEN
        RAISE EXCEPTION 'push_ids and provider_message_ids must be one-dimensional arrays'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The arrays list the messages, and their provider ids, one after the other.';
    END IF;
    IF push_ids IS NULL OR array_position(push_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'push_ids must not be null nor hold a null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Messages are named by the push_id claim_pushes returned.';
    END IF;
    IF cardinality(push_ids) > 10000 OR cardinality(provider_message_ids) <> cardinality(push_ids)
       OR EXISTS (SELECT FROM unnest(provider_message_ids) p WHERE length(p) > 200 OR btrim(p) = '') THEN
        RAISE EXCEPTION 'at most 10000 push_ids, each with a non-blank provider_message_id of at most 200 characters or none'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'The array provider_message_ids, when given, has one provider id (or NULL) per push_id, in the same order.';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_check_acks(bigint[], text[]) IS 'internal: the arguments of ack_pushes, both forms, checked before anything else (22004 a NULL push_ids or a NULL in it, 22023 a 2-D array, over 10000 ids, provider ids not one per id, a blank or oversized provider id)';

-- wallet.ack_pushes in PL/pgSQL, every case (the C function calls it for
-- all but the common one): what ack_push does for each, set-based.
CREATE FUNCTION wallet_internal.push_ack_many(push_ids bigint[], provider_message_ids text[]) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    want bigint[];
    n bigint;
    i int;
    bad wallet.push_messages;
    missing bigint;
BEGIN
    PERFORM wallet_internal.push_check_acks(push_ids, provider_message_ids);
    SELECT array_agg(DISTINCT u) INTO want FROM unnest(push_ids) u;
    IF want IS NULL THEN
        RETURN 0;
    END IF;
    -- lock them all, in one order (rows moved meanwhile are looked up again, as by push_lock)
    FOR i IN 1 .. 3 LOOP
        PERFORM FROM wallet.push_messages x WHERE x.push_id = ANY (want) ORDER BY x.push_id FOR UPDATE;
        GET DIAGNOSTICS n = ROW_COUNT;
        EXIT WHEN n = cardinality(want);
    END LOOP;
    SELECT u INTO missing FROM unnest(want) u
     WHERE NOT EXISTS (SELECT FROM wallet.push_messages x WHERE x.push_id = u AND wallet.acts_for(x.merchant_id))
     ORDER BY u LIMIT 1;
    IF missing IS NOT NULL THEN
        PERFORM wallet_internal.push_lock(missing);   -- raises WL701 as ack_push does
    END IF;
    SELECT x.* INTO bad FROM wallet.push_messages x
      JOIN unnest(push_ids, coalesce(provider_message_ids, array_fill(NULL::text, ARRAY[cardinality(push_ids)]))) AS a(id, pid)
        ON a.id = x.push_id
     WHERE x.status <> 'sending' AND NOT (x.status = 'sent' AND x.provider_message_id IS NOT DISTINCT FROM a.pid)
     ORDER BY x.push_id LIMIT 1;
    IF bad.push_id IS NOT NULL THEN
        PERFORM wallet_internal.push_not_sending(bad);
    END IF;
    WITH a AS (
        SELECT DISTINCT ON (u.id) u.id, u.pid
          FROM unnest(push_ids, coalesce(provider_message_ids, array_fill(NULL::text, ARRAY[cardinality(push_ids)]))) WITH ORDINALITY AS u(id, pid, o)
         ORDER BY u.id, u.o),
    d AS (
        DELETE FROM wallet.push_messages x USING a
         WHERE x.push_id = a.id AND x.part < 3 AND x.status = 'sending'
        RETURNING x.*, a.pid),
    r AS (
        INSERT INTO wallet.push_attempts (merchant_id, member_id, push_id, claimed_at, outcome, provider_message_id)
        SELECT d.merchant_id, d.member_id, d.push_id, d.claimed_at, 'sent', d.pid FROM d)
    INSERT INTO wallet.push_messages OVERRIDING SYSTEM VALUE
    SELECT d.push_id, d.merchant_id, d.member_id, d.channel, d.topic, d.cap_group, d.service, d.payload, d.campaign_id,
           d.dedup_key, d.priority, d.not_before, d.expires_at, d.created_at, d.outcome, d.outcome_reason, 'sent',
           NULL, NULL, d.slot_at, d.attempts, d.claimed_at, now(), d.pid, d.last_error, now(), 3, d.requeued_attempts
      FROM d;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_ack_many(bigint[], text[]) IS 'internal: wallet.ack_pushes, every case: acknowledges many claimed messages as sent in one statement (at most 10000; provider_message_ids, when given, in the order of push_ids), as ack_push does each; returns how many were recorded (a repeated acknowledgement counts none); WL701 or WL702 as ack_push, for the first offending id, and then none is recorded';

-- Many acknowledgements in one statement (a worker that sent a batch), in
-- C (src/push_claim.c): the messages moved as ack_push moves one, in one
-- statement; unusual arguments, or messages not all being sent, by
-- wallet_internal.push_ack_many.
CREATE FUNCTION wallet.ack_pushes(push_ids bigint[], provider_message_ids text[] DEFAULT NULL) RETURNS bigint
    AS 'MODULE_PATHNAME', 'ack_pushes' LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET enable_seqscan = off;
COMMENT ON FUNCTION wallet.ack_pushes(bigint[], text[]) IS 'acknowledges many claimed messages as sent in one statement (at most 10000; provider_message_ids, when given, in the order of push_ids), as ack_push does each; returns how many were recorded (a repeated acknowledgement counts none); WL701 or WL702 as ack_push, for the first offending id, and then none is recorded';

CREATE FUNCTION wallet.fail_push(push_id bigint, error text, retryable boolean DEFAULT true) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.push_messages := wallet_internal.push_lock(push_id);
    s wallet.push_settings;
    d interval;
    dead boolean;
BEGIN
    IF error IS NULL OR retryable IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN error IS NULL THEN 'error' ELSE 'retryable' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A failure says what went wrong and whether a retry may succeed.';
    END IF;
    IF btrim(error) = '' THEN
        RAISE EXCEPTION 'error must not be blank'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A failure says what went wrong.';
    END IF;
    IF r.status <> 'sending' THEN
        PERFORM wallet_internal.push_not_sending(r);
    END IF;
    -- the member was erased while the message was being sent: no retry, and
    -- the provider's text (which may name a device or a number) is not kept
    IF (SELECT m.status FROM wallet.members m WHERE m.member_id = r.member_id) = 'forgotten' THEN
        PERFORM wallet_internal.push_finish(ARRAY[r.push_id], 'suppressed', 'member_forgotten', NULL);
        INSERT INTO wallet.push_attempts (merchant_id, member_id, push_id, claimed_at, outcome, error)
        VALUES (r.merchant_id, r.member_id, r.push_id, r.claimed_at, 'failed', NULL);
        RETURN 'suppressed';
    END IF;
    SELECT * INTO s FROM wallet.push_settings x WHERE x.merchant_id = r.merchant_id;
    -- the attempts since the last requeue count (attempts itself never goes
    -- back: it is the claim token)
    dead := NOT retryable OR r.attempts - r.requeued_attempts >= coalesce(s.max_attempts, 5);
    -- exponential backoff with jitter: between half and all of backoff * 2^(attempts - 1)
    d := coalesce(s.backoff, interval '30 seconds') * power(2, least(r.attempts - r.requeued_attempts - 1, 20)) * (0.5 + random() / 2);
    IF dead THEN
        r.status := 'dead'; r.reason := CASE WHEN retryable THEN 'attempts_exhausted' ELSE 'not_retryable' END;
        r.due_at := NULL; r.slot_at := NULL; r.last_error := left(fail_push.error, 1000); r.finished_at := now();
        PERFORM wallet_internal.push_move(r, 3::smallint);
    ELSE
        UPDATE wallet.push_messages x
           SET status = 'queued', reason = 'retry', due_at = now() + d, slot_at = now() + d, last_error = left(fail_push.error, 1000)
         WHERE x.push_id = r.push_id AND x.part = r.part;
    END IF;
    INSERT INTO wallet.push_attempts (merchant_id, member_id, push_id, claimed_at, outcome, error)
    VALUES (r.merchant_id, r.member_id, r.push_id, r.claimed_at, 'failed', left(fail_push.error, 1000));
    RETURN CASE WHEN dead THEN 'dead' ELSE 'queued' END;
END
$$;
COMMENT ON FUNCTION wallet.fail_push(bigint, text, boolean) IS 'records a failed delivery of a claimed message: retried after an exponential backoff with jitter (returns queued), or, not retryable or out of attempts, a dead letter (returns dead); a member erased meanwhile: suppressed, the error text not kept (returns suppressed); WL702 if it is not being sent';

-- The claim token: the attempts claim_pushes returned with a message names
-- the claim.  A worker whose lease lapsed cannot be told from the worker
-- that claimed the message again by its id alone; with the token, its late
-- acknowledgement, failure or extension is refused (WL702) and the current
-- claim is left alone.  The message is locked first (as the call it
-- precedes locks it), so that no claim slips in between.
CREATE FUNCTION wallet_internal.push_check_attempt(push_id bigint, attempt int) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.push_messages;
BEGIN
    IF attempt IS NULL THEN
        RAISE EXCEPTION 'attempt must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A claim is named by the attempts claim_pushes returned with the message.';
    END IF;
    -- (a claim's attempt is 1 or more: no message is ever at a lower one)
    IF attempt < 1 THEN
        RAISE EXCEPTION 'attempt must be positive'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('A claim is named by the attempts claim_pushes returned with the message, 1 or more; %s is not.', attempt);
    END IF;
    r := wallet_internal.push_lock(push_id);
    -- (an attempt the message never reached names no claim: the same code,
    -- a message that says so)
    IF r.attempts < attempt THEN
        RAISE EXCEPTION 'push % was never claimed as attempt %', r.push_id, attempt
            USING ERRCODE = 'WL702',
                  DETAIL = format('The message is at attempt %s (%s); a claim is named by the attempts claim_pushes returned with it.',
                                  r.attempts, r.status);
    END IF;
    IF r.attempts <> attempt THEN
        RAISE EXCEPTION 'push % was claimed again', r.push_id
            USING ERRCODE = 'WL702',
                  DETAIL = format('This claim was attempt %s and the message is at attempt %s (%s): its lease lapsed and it was claimed again, so this worker must not acknowledge, fail or extend it.',
                                  attempt, r.attempts, r.status);
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_check_attempt(bigint, int) IS 'internal: locks the message and raises WL702 when it is no longer at the attempt a worker claimed it as (claimed again since) or never reached it, 22004 for a NULL attempt, 22023 for one below 1, WL701 for an unknown message';

-- In C (src/push_claim.c): the statement that moves the message checks the
-- claim token itself (attempts = attempt); anything else goes through
-- push_check_attempt and then ack_push's own path, as before.
CREATE FUNCTION wallet.ack_push(push_id bigint, provider_message_id text, attempt int) RETURNS boolean
    LANGUAGE C
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'ack_push_token';
COMMENT ON FUNCTION wallet.ack_push(bigint, text, int) IS 'ack_push for the claim that attempt names (the attempts claim_pushes returned): WL702 if the message was claimed again since';

CREATE FUNCTION wallet.ack_pushes(push_ids bigint[], provider_message_ids text[], attempts int[]) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    x record;
    locked bigint[];
    at int[];
BEGIN
    -- the arguments of both forms first, then the attempts
    PERFORM wallet_internal.push_check_acks(push_ids, provider_message_ids);
    -- (array_position refuses a 2-D array with a raw 0A000: the shape first)
    IF array_ndims(attempts) > 1 OR array_ndims(push_ids) > 1 THEN
        RAISE EXCEPTION 'push_ids and attempts must be one-dimensional arrays'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The array attempts has the attempt of each message, in the order of push_ids.';
    END IF;
    IF attempts IS NULL OR array_position(attempts, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'attempts must not be null nor hold a null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Each claim is named by the attempts claim_pushes returned with its message.';
    END IF;
    -- (a claim's attempt is 1 or more, as push_check_attempt says)
    IF EXISTS (SELECT FROM unnest(attempts) a WHERE a < 1) THEN
        RAISE EXCEPTION 'attempt must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A claim is named by the attempts claim_pushes returned with the message, 1 or more; %s is not.',
                                  (SELECT min(a) FROM unnest(attempts) a));
    END IF;
    IF cardinality(attempts) <> cardinality(push_ids) THEN
        RAISE EXCEPTION 'attempts must hold one attempt per push_id'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The array attempts has the attempt of each message, in the order of push_ids.';
    END IF;
    -- locked in ascending id order (the order ack_pushes locks in) by one
    -- statement, and compared with the claims
    WITH l AS (SELECT m.push_id, m.attempts FROM wallet.push_messages m
                WHERE m.push_id = ANY (push_ids) AND wallet.acts_for(m.merchant_id) ORDER BY m.push_id FOR UPDATE)
    SELECT array_agg(l.push_id), array_agg(l.attempts) INTO locked, at FROM l;
    IF coalesce(cardinality(locked), 0) = (SELECT count(DISTINCT u) FROM unnest(push_ids) u WHERE u IS NOT NULL) THEN
        SELECT u.id, u.attempt INTO x FROM unnest(push_ids, attempts) AS u(id, attempt) JOIN unnest(locked, at) AS k(id, att) ON k.id = u.id
         WHERE k.att <> u.attempt ORDER BY u.id LIMIT 1;
        IF FOUND THEN
            PERFORM wallet_internal.push_check_attempt(x.id, x.attempt);   -- WL702
        END IF;
    ELSE
        -- an unknown message, or one moved while we waited for its lock:
        -- one by one, in ascending id order, as push_lock finds a moved one
        FOR x IN SELECT u.id, u.attempt FROM unnest(push_ids, attempts) AS u(id, attempt) WHERE u.id IS NOT NULL ORDER BY u.id LOOP
            PERFORM wallet_internal.push_check_attempt(x.id, x.attempt);
        END LOOP;
    END IF;
    RETURN wallet.ack_pushes(push_ids, provider_message_ids);
END
$$;
COMMENT ON FUNCTION wallet.ack_pushes(bigint[], text[], int[]) IS 'ack_pushes for the claims that attempts name (one per push_id): WL702 for the first message claimed again since, and then none is recorded';

CREATE FUNCTION wallet.fail_push(push_id bigint, error text, retryable boolean, attempt int) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.push_check_attempt(push_id, attempt);
    RETURN wallet.fail_push(push_id, error, retryable);
END
$$;
COMMENT ON FUNCTION wallet.fail_push(bigint, text, boolean, int) IS 'fail_push for the claim that attempt names (the attempts claim_pushes returned): WL702 if the message was claimed again since';

CREATE FUNCTION wallet.extend_lease(push_id bigint, lease interval, attempt int) RETURNS timestamptz
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.push_check_attempt(push_id, attempt);
    RETURN wallet.extend_lease(push_id, lease);
END
$$;
COMMENT ON FUNCTION wallet.extend_lease(bigint, interval, int) IS 'extend_lease for the claim that attempt names (the attempts claim_pushes returned): WL702 if the message was claimed again since';

CREATE FUNCTION wallet.requeue_push(push_id bigint) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.push_messages := wallet_internal.push_lock(push_id);
BEGIN
    IF r.status <> 'dead' THEN
        RAISE EXCEPTION 'push % is not a dead letter', r.push_id
            USING ERRCODE = 'WL703', DETAIL = format('The message is %s; only dead letters (wallet.push_dead_letters) are requeued.', r.status);
    END IF;
    -- attempts goes on (a claim from before the requeue must not match a
    -- claim after it); max_attempts counts from here
    r.status := 'queued'; r.reason := 'requeued'; r.requeued_attempts := r.attempts; r.due_at := now(); r.slot_at := now();
    r.finished_at := NULL;
    PERFORM wallet_internal.push_move(r, wallet_internal.push_current_slot());
    RETURN true;
END
$$;
COMMENT ON FUNCTION wallet.requeue_push(bigint) IS 'queues a dead letter again with max_attempts fresh attempts (attempts itself goes on, so that a claim from before cannot match one after; checked again at claim); WL703 if it is not a dead letter';

-- Finished messages leave after the merchant's retention (their delivery
-- records with them); the deduplication keys stay.  Bounded per call.
CREATE FUNCTION wallet.purge_pushes(max_rows int DEFAULT 10000) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n bigint;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'max_rows must %', CASE WHEN max_rows IS NULL THEN 'not be null' ELSE 'be positive' END
            USING ERRCODE = CASE WHEN max_rows IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'At most max_rows finished messages are purged per call.';
    END IF;
    WITH gone AS (
        DELETE FROM wallet.push_messages x
         WHERE x.part = 3 AND x.push_id IN (SELECT y.push_id FROM wallet.merchants m
                               LEFT JOIN wallet.push_settings s ON s.merchant_id = m.merchant_id
                               CROSS JOIN LATERAL (SELECT z.push_id FROM wallet.push_messages z
                                                    WHERE z.part = 3 AND z.merchant_id = m.merchant_id AND z.finished_at IS NOT NULL
                                                      AND z.finished_at < now() - coalesce(s.retention, interval '90 days')
                                                    LIMIT max_rows) y
                              WHERE wallet.acts_for(m.merchant_id)
                              LIMIT max_rows)
        RETURNING x.push_id),
    attempts AS (DELETE FROM wallet.push_attempts a WHERE a.push_id IN (SELECT g.push_id FROM gone g))
    SELECT count(*) INTO n FROM gone;
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet.purge_pushes(int) IS 'deletes up to max_rows finished messages (sent, suppressed, duplicate, dead) older than their merchant''s retention, with their delivery records, of the merchants the caller acts for; deduplication keys stay; returns the count (run by wallet.run_maintenance)';

-- Carries the messages of queue slot "from" into slot "to" (a delete and
-- an insert each), 10,000 at a time, skipping those locked by others.
CREATE FUNCTION wallet_internal.push_carry("from" smallint, "to" smallint) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n bigint;
    total bigint := 0;
BEGIN
    IF "from" = "to" THEN
        RETURN 0;   -- (what was moved would be met again)
    END IF;
    LOOP
        WITH d AS (
            DELETE FROM wallet.push_messages x
             WHERE x.part = "from" AND x.push_id IN (SELECT y.push_id FROM wallet.push_messages y WHERE y.part = "from"
                                                      LIMIT 10000 FOR UPDATE SKIP LOCKED)
            RETURNING x.*)
        INSERT INTO wallet.push_messages OVERRIDING SYSTEM VALUE
        SELECT d.push_id, d.merchant_id, d.member_id, d.channel, d.topic, d.cap_group, d.service, d.payload, d.campaign_id,
               d.dedup_key, d.priority, d.not_before, d.expires_at, d.created_at, d.outcome, d.outcome_reason, d.status,
               d.reason, d.due_at, d.slot_at, d.attempts, d.claimed_at, d.sent_at, d.provider_message_id, d.last_error,
               d.finished_at, "to", d.requeued_attempts
          FROM d;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
        EXIT WHEN n = 0;
    END LOOP;
    RETURN total;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_carry(smallint, smallint) IS 'internal: moves the messages of queue slot "from" into slot "to" (skipping those locked by other sessions); returns how many';

-- The rotation of the queue slots (no decay): the next slot after the
-- current one that holds at most max_rows live messages (deferred ones,
-- ones being sent, a backlog not yet claimed: a slot holding more waits
-- for its backlog to drain and is passed over) has them carried into the
-- current slot, in batches that wait for nobody (SKIP LOCKED); then it is
-- locked for a moment (waiting at most 100 ms in the lock's queue, which
-- under load is the only way to get it; else the next call tries again),
-- the last few carried, emptied by TRUNCATE and made current.  A session
-- waiting for a row the first carry moved, while holding the slot, would
-- close a cycle with that wait: the turn then looks for deadlocks after
-- 20 ms (where its owner may set deadlock_timeout) so that it, not the
-- other session, is the one to give up.  Dead tuples of the hot path thus live a few
-- turns, whatever vacuum and the xmin horizon do.  Only under READ
-- COMMITTED: under a transaction snapshot the carry would miss messages
-- committed after it, and TRUNCATE would remove them.
CREATE FUNCTION wallet.rotate_push_queue(min_age interval DEFAULT '10 seconds', max_rows int DEFAULT 10000) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v bigint;
    cur smallint;
    nxt smallint;
    k int;
    timeout text := current_setting('lock_timeout');
    dtimeout text := current_setting('deadlock_timeout');
BEGIN
    IF min_age IS NULL OR max_rows IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN min_age IS NULL THEN 'min_age' ELSE 'max_rows' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A slot turns after min_age, carrying at most max_rows live messages.';
    END IF;
    IF min_age < interval '0' OR min_age > interval '100 years' OR max_rows < 1 THEN
        RAISE EXCEPTION 'min_age must be 0 to 100 years and max_rows must be positive'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A slot turns after min_age, carrying at most max_rows live messages.';
    END IF;
    IF current_setting('transaction_isolation') NOT IN ('read committed', 'read uncommitted') THEN
        RETURN false;   -- (see above; run_maintenance turns them under READ COMMITTED)
    END IF;
    -- one rotation at a time
    IF NOT pg_try_advisory_xact_lock(2001234513, 0) THEN
        RETURN false;
    END IF;
    SELECT s.last_value INTO v FROM wallet_internal.push_queue_slot s;
    cur := v % 4;
    IF now() < to_timestamp(v / 4) + min_age THEN
        RETURN false;
    END IF;
    FOR k IN 1 .. 2 LOOP
        nxt := (cur + k) % 3;
        CONTINUE WHEN (SELECT count(*) FROM (SELECT FROM wallet.push_messages y WHERE y.part = nxt LIMIT max_rows + 1) z) > max_rows;
        -- carry the live messages, without waiting for any
        PERFORM wallet_internal.push_carry(nxt, cur);
        -- then a moment alone with the slot: those locked meanwhile, and TRUNCATE
        BEGIN
            PERFORM set_config('lock_timeout', '100ms', true);
            BEGIN
                PERFORM set_config('deadlock_timeout', '20ms', true);
            EXCEPTION WHEN insufficient_privilege THEN
                NULL;   -- (an owner that is no superuser: the server's setting)
            END;
            EXECUTE format('LOCK TABLE wallet.push_messages_q%s IN ACCESS EXCLUSIVE MODE', nxt);
            PERFORM set_config('lock_timeout', timeout, true);
            PERFORM set_config('deadlock_timeout', dtimeout, true);
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            RETURN false;   -- busy: the next call tries again (what was carried stays carried)
        END;
        -- (no row of the slot is locked by anyone else now)
        PERFORM wallet_internal.push_carry(nxt, cur);
        EXECUTE format('TRUNCATE wallet.push_messages_q%s', nxt);
        -- (the second rounded up: the next turn comes min_age after this one or later, never earlier)
        PERFORM setval('wallet_internal.push_queue_slot'::regclass, ceil(extract(epoch FROM now()))::bigint * 4 + nxt);
        RETURN true;
    END LOOP;
    RETURN false;   -- both other slots hold more than max_rows live messages
END
$$;
COMMENT ON FUNCTION wallet.rotate_push_queue(interval, int) IS 'turns the push queue slots when the current one is at least min_age old: the next slot holding at most max_rows live messages has them carried into the current one, is emptied by TRUNCATE (waiting at most 100 ms for its lock) and becomes current; returns whether it turned (false under REPEATABLE READ or SERIALIZABLE, where it would miss messages committed after the snapshot) (run by wallet.run_maintenance; a sending worker may call it every few seconds: the dead tuples of the queue then live only a few turns)';

------------------------------------------------------------------------------
-- Events and metrics
------------------------------------------------------------------------------

CREATE TABLE wallet.push_events (
    event_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    member_id   bigint NOT NULL REFERENCES wallet.members,
    push_id     bigint NOT NULL,
    campaign_id bigint,
    kind        text NOT NULL CHECK (kind IN ('delivered', 'opened', 'clicked', 'dismissed', 'unsubscribed', 'complained')),
    at          timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX push_events_push_idx ON wallet.push_events (push_id, kind);
CREATE INDEX push_events_campaign_idx ON wallet.push_events (merchant_id, campaign_id, kind);
COMMENT ON TABLE wallet.push_events IS 'what members did with the messages sent to them (wallet.record_push_event): delivered, opened, clicked, dismissed, unsubscribed, complained';
COMMENT ON COLUMN wallet.push_events.event_id IS 'event id';
COMMENT ON COLUMN wallet.push_events.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_events.member_id IS 'the member (wallet.members)';
COMMENT ON COLUMN wallet.push_events.push_id IS 'the message (wallet.push_messages; the event outlives its purge)';
COMMENT ON COLUMN wallet.push_events.campaign_id IS 'the message''s campaign (NULL = none), copied for the campaign figures';
COMMENT ON COLUMN wallet.push_events.kind IS 'delivered, opened, clicked, dismissed, unsubscribed or complained';
COMMENT ON COLUMN wallet.push_events.at IS 'when it happened (as the app or provider reports it)';
COMMENT ON COLUMN wallet.push_events.recorded_at IS 'when it was recorded';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_events', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.push_events', 'event_id'), '');
ALTER TABLE wallet.push_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_events USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_events IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE FUNCTION wallet.record_push_event(push_id bigint, kind text, at timestamptz DEFAULT now()) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r wallet.push_messages;
    id bigint;
BEGIN
    IF kind IS NULL OR at IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN kind IS NULL THEN 'kind' ELSE 'at' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'An event says what happened to a message and when.';
    END IF;
    IF NOT isfinite(at) THEN
        RAISE EXCEPTION 'at must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An event happens to a message at a real instant.';
    END IF;
    -- (as a purchase's occurred_at: within 100 years of now)
    IF at < now() - interval '100 years' OR at > now() + interval '100 years' THEN
        RAISE EXCEPTION 'at must be within 100 years of now'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('An event happens to a message at a real instant, at most 100 years before or after now; %s is not.', at);
    END IF;
    IF kind NOT IN ('delivered', 'opened', 'clicked', 'dismissed', 'unsubscribed', 'complained') THEN
        RAISE EXCEPTION 'unknown push event "%"', left(kind, 64)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A push event is delivered, opened, clicked, dismissed, unsubscribed or complained.';
    END IF;
    SELECT * INTO r FROM wallet.push_messages x WHERE x.push_id = $1;
    IF NOT FOUND OR NOT wallet.acts_for(r.merchant_id) THEN
        PERFORM wallet_internal.push_lock($1);   -- raises 22004 or WL701 as for any other call
    END IF;
    IF r.status <> 'sent' THEN
        RAISE EXCEPTION 'push % was not sent', r.push_id
            USING ERRCODE = 'WL704', DETAIL = format('The message is %s; events are recorded for sent messages.', r.status);
    END IF;
    INSERT INTO wallet.push_events AS e (merchant_id, member_id, push_id, campaign_id, kind, at)
    VALUES (r.merchant_id, r.member_id, r.push_id, r.campaign_id, record_push_event.kind, record_push_event.at)
    RETURNING e.event_id INTO id;
    RETURN id;
END
$$;
COMMENT ON FUNCTION wallet.record_push_event(bigint, text, timestamptz) IS 'records what happened to a sent message (delivered, opened, clicked, dismissed, unsubscribed, complained) and when; returns the event id; WL704 if the message was not sent (an unsubscribe is a figure here: the consent is withdrawn by wallet.record_consent)';

-- The messages sent with the purchases attributed to them, last touch: a
-- purchase counts for the member's latest sent message whose window holds
-- it: open_window after its first open, or delivery_window after its
-- delivery (its first delivered event, else the acknowledgement).
CREATE FUNCTION wallet_internal.push_attribution(merchant_id bigint, campaign_id bigint, open_window interval, delivery_window interval)
    RETURNS TABLE (push_id bigint, purchases bigint, revenue numeric)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN QUERY
    -- last touch among every message the member was sent, of any campaign
    -- or none: a campaign's figures never claim a purchase that a later
    -- message of another campaign touched (the figures add up)
    WITH reached AS (
        SELECT DISTINCT m.member_id FROM wallet.push_messages m
         WHERE m.merchant_id = $1 AND m.status = 'sent' AND ($2 IS NULL OR m.campaign_id = $2)),
    sent AS (
        SELECT m.push_id, m.member_id, m.campaign_id,
               coalesce((SELECT min(e.at) FROM wallet.push_events e WHERE e.push_id = m.push_id AND e.kind = 'delivered'), m.sent_at) AS delivered_at,
               (SELECT min(e.at) FROM wallet.push_events e WHERE e.push_id = m.push_id AND e.kind = 'opened') AS opened_at
          FROM wallet.push_messages m
         WHERE m.merchant_id = $1 AND m.status = 'sent' AND m.member_id IN (SELECT r.member_id FROM reached r)),
    touch AS (
        SELECT p.purchase_id, p.amount - p.refunded_amount AS net,
               (SELECT s.push_id FROM sent s
                 WHERE s.member_id = p.member_id
                   AND ((p.occurred_at > s.opened_at AND p.occurred_at <= s.opened_at + $3)
                        OR (p.occurred_at > s.delivered_at AND p.occurred_at <= s.delivered_at + $4))
                 ORDER BY s.delivered_at DESC, s.push_id DESC LIMIT 1) AS push_id
          FROM wallet.purchases p
         -- an order refunded in full is no purchase (as campaign_report and rfm count)
         WHERE p.merchant_id = $1 AND p.member_id IN (SELECT s.member_id FROM sent s) AND p.amount > p.refunded_amount)
    SELECT s.push_id, count(t.purchase_id), coalesce(sum(t.net), 0)
      FROM sent s LEFT JOIN touch t ON t.push_id = s.push_id
     WHERE $2 IS NULL OR s.campaign_id = $2
     GROUP BY s.push_id;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_attribution(bigint, bigint, interval, interval) IS 'internal: each sent message of the merchant (of the campaign, if given) with the purchases attributed to it (orders not refunded in full; last touch, among every message the member was sent, within open_window after its first open or delivery_window after its delivery) and their net revenue';

-- The attribution windows of the metrics, checked alike in push_stats and
-- push_funnel.
CREATE FUNCTION wallet_internal.push_check_windows(open_window interval, delivery_window interval) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF open_window IS NULL OR delivery_window IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN open_window IS NULL THEN 'open_window' ELSE 'delivery_window' END
            USING ERRCODE = 'null_value_not_allowed',
                  DETAIL = 'A purchase counts for a message within open_window after an open or delivery_window after delivery.';
    END IF;
    IF open_window < interval '0' OR open_window > interval '100 years'
       OR delivery_window < interval '0' OR delivery_window > interval '100 years' THEN
        RAISE EXCEPTION '% must not be negative nor longer than 100 years',
                        CASE WHEN open_window < interval '0' OR open_window > interval '100 years' THEN 'open_window' ELSE 'delivery_window' END
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A purchase counts for a message within open_window after an open or delivery_window after delivery; each window is 0 to 100 years.';
    END IF;
END
$$;
COMMENT ON FUNCTION wallet_internal.push_check_windows(interval, interval) IS 'internal: raises 22004 for a NULL attribution window, 22023 for one that is negative or longer than 100 years (push_stats, push_funnel)';

CREATE FUNCTION wallet.push_stats(merchant_id bigint, campaign_id bigint DEFAULT NULL, open_window interval DEFAULT '24 hours',
        delivery_window interval DEFAULT '72 hours')
    RETURNS TABLE (campaign bigint, topic text, issued bigint, sent bigint, delivered bigint, opened bigint, clicked bigint,
                   unsubscribed bigint, complained bigint, converted bigint, revenue numeric, open_rate numeric,
                   click_rate numeric, conversion_rate numeric, unsubscribe_rate numeric, complaint_rate numeric)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
BEGIN
    PERFORM wallet_internal.check_merchant($1);
    IF $2 IS NOT NULL AND NOT EXISTS (SELECT FROM wallet.campaigns c WHERE c.campaign_id = $2 AND c.merchant_id = $1) THEN
        RAISE EXCEPTION 'campaign % does not exist', $2
            USING ERRCODE = 'WL101', DETAIL = 'Figures are per campaign of the merchant, or of all its messages (NULL).';
    END IF;
    PERFORM wallet_internal.push_check_windows($3, $4);
    RETURN QUERY
    WITH m AS (
        SELECT x.push_id, x.campaign_id, x.topic, x.outcome, x.status,
               EXISTS (SELECT FROM wallet.push_events e WHERE e.push_id = x.push_id AND e.kind = 'delivered') AS delivered,
               EXISTS (SELECT FROM wallet.push_events e WHERE e.push_id = x.push_id AND e.kind = 'opened') AS opened,
               EXISTS (SELECT FROM wallet.push_events e WHERE e.push_id = x.push_id AND e.kind = 'clicked') AS clicked,
               EXISTS (SELECT FROM wallet.push_events e WHERE e.push_id = x.push_id AND e.kind = 'unsubscribed') AS unsubscribed,
               EXISTS (SELECT FROM wallet.push_events e WHERE e.push_id = x.push_id AND e.kind = 'complained') AS complained,
               a.purchases, a.revenue
          FROM wallet.push_messages x
          LEFT JOIN wallet_internal.push_attribution($1, $2, $3, $4) a ON a.push_id = x.push_id
         WHERE x.merchant_id = $1 AND ($2 IS NULL OR x.campaign_id = $2)),
    g AS (
        SELECT m.campaign_id, m.topic,
               count(*) FILTER (WHERE m.outcome IN ('queued', 'deferred')) AS issued,
               count(*) FILTER (WHERE m.status = 'sent') AS sent,
               count(*) FILTER (WHERE m.delivered) AS delivered, count(*) FILTER (WHERE m.opened) AS opened,
               count(*) FILTER (WHERE m.clicked) AS clicked, count(*) FILTER (WHERE m.unsubscribed) AS unsubscribed,
               count(*) FILTER (WHERE m.complained) AS complained, count(*) FILTER (WHERE m.purchases > 0) AS converted,
               coalesce(sum(m.revenue), 0) AS revenue
          FROM m GROUP BY m.campaign_id, m.topic)
    SELECT g.campaign_id, g.topic, g.issued, g.sent, g.delivered, g.opened, g.clicked, g.unsubscribed, g.complained, g.converted,
           g.revenue,
           round(g.opened::numeric / nullif(g.sent, 0), 4), round(g.clicked::numeric / nullif(g.sent, 0), 4),
           round(g.converted::numeric / nullif(g.sent, 0), 4), round(g.unsubscribed::numeric / nullif(g.sent, 0), 4),
           round(g.complained::numeric / nullif(g.sent, 0), 4)
      FROM g ORDER BY g.campaign_id NULLS FIRST, g.topic;
END
$$;
COMMENT ON FUNCTION wallet.push_stats(bigint, bigint, interval, interval) IS 'figures per campaign and topic of a merchant''s messages (one campaign, or all): issued, sent, delivered, opened, clicked, unsubscribed, complained, converted (a purchase not refunded in full attributed, last touch, within open_window after an open or delivery_window after delivery) and net revenue attributed; rates per message sent';

CREATE FUNCTION wallet.push_funnel(merchant_id bigint, campaign_id bigint, open_window interval DEFAULT '24 hours',
        delivery_window interval DEFAULT '72 hours')
    RETURNS TABLE (stage text, members bigint)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM wallet_internal.check_merchant($1);
    IF $2 IS NULL OR NOT EXISTS (SELECT FROM wallet.campaigns c WHERE c.campaign_id = $2 AND c.merchant_id = $1) THEN
        IF $2 IS NULL THEN
            RAISE EXCEPTION 'campaign_id must not be null'
                USING ERRCODE = 'null_value_not_allowed', DETAIL = 'The funnel is a campaign''s.';
        END IF;
        RAISE EXCEPTION 'campaign % does not exist', $2
            USING ERRCODE = 'WL101', DETAIL = 'The funnel is of a campaign of the merchant.';
    END IF;
    PERFORM wallet_internal.push_check_windows($3, $4);
    -- one query: the members at each stage (a member counts at a stage once, whatever it got)
    RETURN QUERY
    WITH m AS (
        SELECT x.push_id, x.member_id, x.status, x.sent_at, a.purchases
          FROM wallet.push_messages x
          LEFT JOIN wallet_internal.push_attribution($1, $2, $3, $4) a ON a.push_id = x.push_id
         WHERE x.merchant_id = $1 AND x.campaign_id = $2 AND x.outcome IN ('queued', 'deferred'))
    SELECT s.stage, s.n FROM (VALUES
        (1, 'issued', (SELECT count(DISTINCT m.member_id) FROM m)),
        (2, 'delivered', (SELECT count(DISTINCT m.member_id) FROM m WHERE m.status = 'sent'
                             AND EXISTS (SELECT FROM wallet.push_events e WHERE e.push_id = m.push_id AND e.kind = 'delivered'))),
        (3, 'opened', (SELECT count(DISTINCT m.member_id) FROM m
                        WHERE EXISTS (SELECT FROM wallet.push_events e WHERE e.push_id = m.push_id AND e.kind = 'opened'))),
        (4, 'code redeemed', (SELECT count(DISTINCT m.member_id) FROM m JOIN wallet.members w ON w.member_id = m.member_id
                               WHERE m.status = 'sent'
                                 AND EXISTS (SELECT FROM wallet.code_redemptions r
                                              WHERE r.campaign_id = $2 AND r.member_ref = w.member_ref AND r.undone_at IS NULL
                                                AND r.redeemed_at >= m.sent_at))),
        (5, 'purchased', (SELECT count(DISTINCT m.member_id) FROM m WHERE m.purchases > 0))) AS s (n_order, stage, n)
     ORDER BY s.n_order;
END
$$;
COMMENT ON FUNCTION wallet.push_funnel(bigint, bigint, interval, interval) IS 'a campaign''s funnel in members: issued (queued or deferred), delivered (a delivered event), opened, code redeemed (a code of the campaign redeemed after a send, not undone), purchased (a purchase attributed as push_stats does)';

CREATE FUNCTION wallet.push_retention(merchant_id bigint, campaign_id bigint, days int DEFAULT 30)
    RETURNS TABLE (audience text, members bigint, purchasers bigint, rate numeric)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    start timestamptz;
BEGIN
    PERFORM wallet_internal.check_merchant($1);
    IF $2 IS NULL OR days IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN $2 IS NULL THEN 'campaign_id' ELSE 'days' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Retention is a campaign''s, over a number of days.';
    END IF;
    IF NOT EXISTS (SELECT FROM wallet.campaigns c WHERE c.campaign_id = $2 AND c.merchant_id = $1) THEN
        RAISE EXCEPTION 'campaign % does not exist', $2
            USING ERRCODE = 'WL101', DETAIL = 'Retention is of a campaign of the merchant.';
    END IF;
    IF days < 1 OR days > 36500 THEN
        RAISE EXCEPTION 'days must be from 1 to 36500'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Members are counted as retained when they purchase within that many days (at most 100 years).';
    END IF;
    SELECT min(x.sent_at) INTO start FROM wallet.push_messages x WHERE x.merchant_id = $1 AND x.campaign_id = $2 AND x.status = 'sent';
    RETURN QUERY
    WITH r AS (
        SELECT x.member_id, min(x.sent_at) AS since FROM wallet.push_messages x
         WHERE x.merchant_id = $1 AND x.campaign_id = $2 AND x.status = 'sent' GROUP BY x.member_id),
    n AS (
        SELECT w.member_id, start AS since FROM wallet.members w
         WHERE w.merchant_id = $1 AND w.status = 'active' AND start IS NOT NULL
           AND NOT EXISTS (SELECT FROM r WHERE r.member_id = w.member_id)),
    both_ AS (
        SELECT 'recipients' AS a, 1 AS o, r.member_id, r.since FROM r
        UNION ALL SELECT 'non-recipients', 2, n.member_id, n.since FROM n)
    SELECT b.a, count(*),
           count(*) FILTER (WHERE EXISTS (SELECT FROM wallet.purchases p WHERE p.merchant_id = $1 AND p.member_id = b.member_id
                                            AND p.amount > p.refunded_amount
                                            AND p.occurred_at > b.since AND p.occurred_at <= b.since + make_interval(days => $3))),
           round(count(*) FILTER (WHERE EXISTS (SELECT FROM wallet.purchases p WHERE p.merchant_id = $1 AND p.member_id = b.member_id
                                            AND p.amount > p.refunded_amount
                                            AND p.occurred_at > b.since AND p.occurred_at <= b.since + make_interval(days => $3)))::numeric
                 / count(*), 4)
      FROM both_ b GROUP BY b.a, b.o ORDER BY b.o;
END
$$;
COMMENT ON FUNCTION wallet.push_retention(bigint, bigint, int) IS 'retention of a campaign''s recipients against non-recipients: the members who purchased (an order not refunded in full) within days after their first send (recipients) or after the campaign''s first send (the merchant''s other active members)';

------------------------------------------------------------------------------
-- Triggers: messages enqueued by what happens to members
------------------------------------------------------------------------------

CREATE TABLE wallet.push_stores (
    store_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    name        text NOT NULL,
    latitude    double precision NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude   double precision NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    radius_m    double precision NOT NULL CHECK (radius_m > 0),
    cooldown    interval NOT NULL CHECK (cooldown >= '0'),
    UNIQUE (merchant_id, name)
);
COMMENT ON TABLE wallet.push_stores IS 'store locations of the nearby-store trigger (wallet.set_push_store)';
COMMENT ON COLUMN wallet.push_stores.store_id IS 'store id';
COMMENT ON COLUMN wallet.push_stores.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_stores.name IS 'store name, unique per merchant';
COMMENT ON COLUMN wallet.push_stores.latitude IS 'latitude in degrees (WGS 84)';
COMMENT ON COLUMN wallet.push_stores.longitude IS 'longitude in degrees (WGS 84)';
COMMENT ON COLUMN wallet.push_stores.radius_m IS 'a location ping within this many metres is near the store';
COMMENT ON COLUMN wallet.push_stores.cooldown IS 'at most one nearby message per member and store within this time';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_stores', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.push_stores', 'store_id'), '');
ALTER TABLE wallet.push_stores ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_stores USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_stores IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE TABLE wallet.push_triggers (
    trigger_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES wallet.merchants,
    kind        text NOT NULL CHECK (kind IN ('points_expiring', 'tier_changed', 'cart_abandoned', 'nearby_store')),
    channel     text NOT NULL,
    topic       text NOT NULL,
    payload     jsonb NOT NULL,
    campaign_id bigint REFERENCES wallet.campaigns,
    params      jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE wallet.push_triggers IS 'messages enqueued by wallet.run_push_triggers when something happens to a member (wallet.create_push_trigger)';
COMMENT ON COLUMN wallet.push_triggers.trigger_id IS 'trigger id';
COMMENT ON COLUMN wallet.push_triggers.merchant_id IS 'merchant';
COMMENT ON COLUMN wallet.push_triggers.kind IS 'points_expiring (within_days), tier_changed (to_tier optional), cart_abandoned (after_minutes), nearby_store (the merchant''s stores)';
COMMENT ON COLUMN wallet.push_triggers.channel IS 'channel of the messages';
COMMENT ON COLUMN wallet.push_triggers.topic IS 'topic of the messages';
COMMENT ON COLUMN wallet.push_triggers.payload IS 'payload of the messages; the trigger adds what fired it under the key "trigger"';
COMMENT ON COLUMN wallet.push_triggers.campaign_id IS 'campaign of the messages (NULL = none)';
COMMENT ON COLUMN wallet.push_triggers.params IS 'the kind''s parameters: {"within_days": n}, {"to_tier": name} (a tier''s name, in any program of the merchant), {"after_minutes": n}, {}';
COMMENT ON COLUMN wallet.push_triggers.created_at IS 'when it was created';
SELECT pg_catalog.pg_extension_config_dump('wallet.push_triggers', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('wallet.push_triggers', 'trigger_id'), '');
ALTER TABLE wallet.push_triggers ENABLE ROW LEVEL SECURITY;
CREATE POLICY merchant_rows ON wallet.push_triggers USING (wallet.acts_for(merchant_id));
COMMENT ON POLICY merchant_rows ON wallet.push_triggers IS 'readers and apps see the rows of the merchants they act for (wallet.acts_for)';

CREATE FUNCTION wallet.set_push_store(merchant_id bigint, name text, latitude double precision, longitude double precision,
        radius_m double precision, cooldown interval DEFAULT '1 day') RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
BEGIN
    PERFORM wallet_internal.check_merchant($1);
    IF $2 IS NULL OR $3 IS NULL OR $4 IS NULL OR $5 IS NULL OR $6 IS NULL THEN
        RAISE EXCEPTION 'name, latitude, longitude, radius_m and cooldown must not be null'
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A store is a named point with a radius and a cooldown.';
    END IF;
    IF btrim($2) = '' OR length($2) > 200 OR $3 NOT BETWEEN -90 AND 90 OR $4 NOT BETWEEN -180 AND 180
       OR NOT ($5 > 0 AND $5 <= 20000000) OR $6 < interval '0' OR $6 > interval '100 years' THEN
        RAISE EXCEPTION 'invalid store'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A store has a non-blank name of at most 200 characters, a latitude in [-90, 90], a longitude in [-180, 180], a radius over 0 and at most 20,000,000 metres (half the Earth''s circumference) and a cooldown of 0 to 100 years.';
    END IF;
    INSERT INTO wallet.push_stores AS t (merchant_id, name, latitude, longitude, radius_m, cooldown) VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT ON CONSTRAINT push_stores_merchant_id_name_key DO UPDATE
       SET latitude = excluded.latitude, longitude = excluded.longitude, radius_m = excluded.radius_m, cooldown = excluded.cooldown
    RETURNING t.store_id INTO id;
    RETURN id;
END
$$;
COMMENT ON FUNCTION wallet.set_push_store(bigint, text, double precision, double precision, double precision, interval) IS 'sets a store of the nearby-store trigger (by name): its location, radius in metres and per-member cooldown; returns its id';

-- The app's own events, which the triggers read (cart_abandoned,
-- nearby_store) and analytics may: one row of wallet.member_events.  The
-- kinds the extension writes itself are refused, so that a tier change or a
-- reward in the table is always the extension's.
CREATE FUNCTION wallet.track_event(merchant_id bigint, member_ref text, kind text, attributes jsonb DEFAULT '{}',
        occurred_at timestamptz DEFAULT now()) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    _member bigint;
    id bigint;
BEGIN
    PERFORM wallet_internal.member_check($1, $2);
    IF $3 IS NULL OR $4 IS NULL OR $5 IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN $3 IS NULL THEN 'kind' WHEN $4 IS NULL THEN 'attributes' ELSE 'occurred_at' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'An event has a kind, attributes (an object, may be empty) and a time.';
    END IF;
    IF NOT isfinite($5) THEN
        RAISE EXCEPTION 'occurred_at must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'An event happens at a real instant.';
    END IF;
    -- (as a purchase's occurred_at: within 100 years of now; an event dated
    -- far ahead would stay the member's latest, e.g. its last location)
    IF $5 < now() - interval '100 years' OR $5 > now() + interval '100 years' THEN
        RAISE EXCEPTION 'occurred_at must be within 100 years of now'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('An event happens at a real instant, at most 100 years before or after now; %s is not.', $5);
    END IF;
    IF $3 !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid event kind "%"', left($3, 100)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'An event kind is a lower-case word of at most 63 letters, digits and underscores, starting with a letter.';
    END IF;
    IF $3 IN ('tier_changed', 'referral_rewarded', 'shared') THEN
        RAISE EXCEPTION 'event kind % is written by the extension', $3
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Tier changes, referral rewards and shares are recorded by the functions that make them, not by the app.';
    END IF;
    IF jsonb_typeof($4) <> 'object' OR pg_column_size($4) > 8192 THEN
        RAISE EXCEPTION 'invalid event attributes'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'An event''s attributes are a JSON object of at most 8 kB.';
    END IF;
    -- (coalesce: a missing coordinate makes the test NULL, not false)
    IF $3 = 'location' AND NOT coalesce(jsonb_typeof($4 -> 'latitude') = 'number' AND jsonb_typeof($4 -> 'longitude') = 'number'
                                         AND ($4 ->> 'latitude')::numeric BETWEEN -90 AND 90
                                         AND ($4 ->> 'longitude')::numeric BETWEEN -180 AND 180, false) THEN
        RAISE EXCEPTION 'invalid location event'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A location event carries a numeric latitude in [-90, 90] and longitude in [-180, 180].';
    END IF;
    _member := wallet_internal.member_ensure($1, $2);
    INSERT INTO wallet.member_events AS e (merchant_id, member_id, kind, occurred_at, attributes)
    VALUES ($1, _member, $3, $5, $4)
    RETURNING e.event_id INTO id;
    RETURN id;
END
$$;
COMMENT ON FUNCTION wallet.track_event(bigint, text, text, jsonb, timestamptz) IS 'records an event of the app about a member (created if new) in wallet.member_events: cart_updated (read by the cart_abandoned trigger), location with numeric latitude and longitude (nearby_store), or any other lower-case kind; the kinds the extension writes (tier_changed, referral_rewarded, shared) are refused; returns the event id';

CREATE FUNCTION wallet.create_push_trigger(merchant_id bigint, kind text, channel text, topic text, payload jsonb,
        params jsonb DEFAULT '{}', campaign_id bigint DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    id bigint;
    bad text;
BEGIN
    PERFORM wallet_internal.check_merchant($1);
    IF $2 IS NULL OR $6 IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN $2 IS NULL THEN 'kind' ELSE 'params' END
            USING ERRCODE = 'null_value_not_allowed', DETAIL = 'A trigger has a kind and its parameters.';
    END IF;
    PERFORM wallet_internal.push_check_message($1, $3, $4, $5, $7, NULL, now(), 0);
    IF $2 NOT IN ('points_expiring', 'tier_changed', 'cart_abandoned', 'nearby_store')
       OR jsonb_typeof($6) <> 'object'
       OR ($2 = 'points_expiring' AND coalesce(($6 ->> 'within_days') ~ '^[0-9]{1,4}$', false) IS NOT TRUE)
       OR ($2 = 'cart_abandoned' AND coalesce(($6 ->> 'after_minutes') ~ '^[0-9]{1,6}$', false) IS NOT TRUE) THEN
        RAISE EXCEPTION 'invalid trigger'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A trigger''s kind is points_expiring ({"within_days": n}, n from 0 to 9999), tier_changed ({} or {"to_tier": name}), cart_abandoned ({"after_minutes": n}, n from 0 to 999999) or nearby_store ({}), with no other parameters.';
    END IF;
    SELECT k INTO bad FROM jsonb_object_keys($6) k
     WHERE k <> CASE $2 WHEN 'points_expiring' THEN 'within_days' WHEN 'tier_changed' THEN 'to_tier'
                        WHEN 'cart_abandoned' THEN 'after_minutes' ELSE '' END
     ORDER BY k LIMIT 1;
    IF FOUND OR ($2 = 'tier_changed' AND $6 ? 'to_tier' AND (jsonb_typeof($6 -> 'to_tier') <> 'string'
                                                           OR btrim($6 ->> 'to_tier') = '' OR length($6 ->> 'to_tier') > 200)) THEN
        RAISE EXCEPTION 'invalid trigger parameter "%"', left(coalesce(bad, 'to_tier'), 64)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A %s trigger takes %s.', $2, CASE $2 WHEN 'points_expiring' THEN '{"within_days": n}'
                                                                   WHEN 'tier_changed' THEN '{} or {"to_tier": name} (a tier''s name: a non-blank text of at most 200 characters)'
                                                                   WHEN 'cart_abandoned' THEN '{"after_minutes": n}' ELSE '{}' END);
    END IF;
    INSERT INTO wallet.push_triggers AS t (merchant_id, kind, channel, topic, payload, campaign_id, params)
    VALUES ($1, $2, $3, $4, $5, $7, $6)
    RETURNING t.trigger_id INTO id;
    RETURN id;
END
$$;
COMMENT ON FUNCTION wallet.create_push_trigger(bigint, text, text, text, jsonb, jsonb, bigint) IS 'creates a trigger: points_expiring (points expiring within within_days), tier_changed (a member_events tier_changed, optionally to one tier), cart_abandoned (a cart_updated event after_minutes old with no later cart update or purchase), nearby_store (a location event within a store''s radius, once per store cooldown); returns its id';

-- Every trigger of the merchants the caller acts for, once: each message
-- goes through enqueue's decision with a dedup key naming what fired it, so
-- a run repeated (or concurrent) enqueues nothing twice.  Events are looked
-- at for 7 days.
CREATE FUNCTION wallet.run_push_triggers(max_rows int DEFAULT 10000) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t wallet.push_triggers;
    f record;
    r record;
    n bigint := 0;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'max_rows must %', CASE WHEN max_rows IS NULL THEN 'not be null' ELSE 'be positive' END
            USING ERRCODE = CASE WHEN max_rows IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  DETAIL = 'At most max_rows candidates are looked at per trigger and call.';
    END IF;
    FOR t IN SELECT * FROM wallet.push_triggers x WHERE wallet.acts_for(x.merchant_id) ORDER BY x.trigger_id LOOP
        FOR f IN
            -- points expiring within n days: once per account and expiry day
            SELECT a.member_id, format('trigger:%s:account:%s:%s', t.trigger_id, a.account_id, to_char(a.next_event, 'YYYY-MM-DD')) AS k,
                   jsonb_build_object('kind', t.kind, 'account_id', a.account_id,
                                      'points', wallet.ledger_expiring(a.ledger, now(), make_interval(days => (t.params ->> 'within_days')::int))) AS why
              FROM wallet.accounts a
             WHERE t.kind = 'points_expiring' AND a.merchant_id = t.merchant_id
               AND a.next_event <= now() + make_interval(days => (t.params ->> 'within_days')::int)
               AND wallet.ledger_expiring(a.ledger, now(), make_interval(days => (t.params ->> 'within_days')::int)) > 0
            UNION ALL
            -- a tier change (to a given tier, if named)
            SELECT e.member_id, format('trigger:%s:event:%s', t.trigger_id, e.event_id),
                   jsonb_build_object('kind', t.kind, 'event_id', e.event_id) || e.attributes
              FROM wallet.member_events e
             WHERE t.kind = 'tier_changed' AND e.merchant_id = t.merchant_id AND e.kind = 'tier_changed'
               AND e.occurred_at > now() - interval '7 days'
               -- the event names the tier by id; the trigger by its current name
               AND (NOT t.params ? 'to_tier'
                    OR EXISTS (SELECT FROM wallet.tiers x
                                WHERE jsonb_typeof(e.attributes -> 'to_tier') = 'number'
                                  AND x.tier_id = (e.attributes ->> 'to_tier')::bigint
                                  AND x.merchant_id = t.merchant_id AND x.name = t.params ->> 'to_tier'))
            UNION ALL
            -- the last cart update, after_minutes old, with no later update or purchase
            SELECT e.member_id, format('trigger:%s:event:%s', t.trigger_id, e.event_id),
                   jsonb_build_object('kind', t.kind, 'event_id', e.event_id) || e.attributes
              FROM wallet.member_events e
             WHERE t.kind = 'cart_abandoned' AND e.merchant_id = t.merchant_id AND e.kind = 'cart_updated'
               AND e.occurred_at > now() - interval '7 days'
               AND e.occurred_at <= now() - make_interval(mins => (t.params ->> 'after_minutes')::int)
               AND NOT EXISTS (SELECT FROM wallet.member_events l WHERE l.merchant_id = e.merchant_id AND l.member_id = e.member_id
                                 AND l.kind = 'cart_updated' AND (l.occurred_at, l.event_id) > (e.occurred_at, e.event_id))
               AND NOT EXISTS (SELECT FROM wallet.purchases p WHERE p.merchant_id = e.merchant_id AND p.member_id = e.member_id
                                 AND p.occurred_at > e.occurred_at)
            UNION ALL
            -- a location ping within a store's radius (haversine), once per member and store within its cooldown
            SELECT e.member_id, format('trigger:%s:store:%s:event:%s', t.trigger_id, s.store_id, e.event_id),
                   jsonb_build_object('kind', t.kind, 'event_id', e.event_id, 'store_id', s.store_id, 'store', s.name)
              FROM wallet.member_events e
              JOIN wallet.push_stores s ON s.merchant_id = e.merchant_id
             WHERE t.kind = 'nearby_store' AND e.merchant_id = t.merchant_id AND e.kind = 'location'
               AND e.occurred_at > now() - interval '7 days'
               AND jsonb_typeof(e.attributes -> 'latitude') = 'number' AND jsonb_typeof(e.attributes -> 'longitude') = 'number'
               AND 2 * 6371008.8 * asin(least(1, sqrt(
                       power(sin(radians(((e.attributes ->> 'latitude')::float8 - s.latitude) / 2)), 2)
                       + cos(radians(s.latitude)) * cos(radians((e.attributes ->> 'latitude')::float8))
                         * power(sin(radians(((e.attributes ->> 'longitude')::float8 - s.longitude) / 2)), 2)))) <= s.radius_m
             ORDER BY 1, 2
             LIMIT max_rows LOOP
            CONTINUE WHEN EXISTS (SELECT FROM wallet.push_dedup d WHERE d.merchant_id = t.merchant_id AND d.dedup_key = f.k);
            -- the cooldown of a store: no nearby message of the store for the member since
            CONTINUE WHEN t.kind = 'nearby_store' AND EXISTS (
                SELECT FROM wallet.push_messages x
                 WHERE x.member_id = f.member_id AND x.merchant_id = t.merchant_id
                   AND x.dedup_key LIKE format('trigger:%s:store:%s:%%', t.trigger_id, f.why ->> 'store_id')
                   AND x.created_at > now() - (SELECT s.cooldown FROM wallet.push_stores s WHERE s.store_id = (f.why ->> 'store_id')::bigint));
            r := wallet_internal.push_enqueue(t.merchant_id, f.member_id, t.channel, t.topic, t.payload || jsonb_build_object('trigger', f.why),
                                              t.campaign_id, f.k, now(), NULL, 0, true);
            n := n + 1;
        END LOOP;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION wallet.run_push_triggers(int) IS 'runs every trigger of the merchants the caller acts for once (run by wallet.run_maintenance): each member it fires for gets a message through enqueue''s decision, with a dedup key naming what fired it (never twice); looks at events of the last 7 days; returns the messages recorded';

-- pgTAP: every table holding merchant data carries merchant_id (conventions),
-- so that it can be distributed by that key; no table is missed, because the
-- tables are enumerated from the catalog.  Then rows written through the API
-- (every insert path of the tables that copy the key from a parent) carry
-- the merchant of their program or campaign.
BEGIN;
SET LOCAL timezone = 'UTC';
SELECT * FROM no_plan();

-- Tables of schema wallet exempt from "merchant_id bigint NOT NULL":
CREATE TEMP TABLE exempt (tab regclass PRIMARY KEY, has_column boolean NOT NULL) ON COMMIT DROP;
INSERT INTO exempt VALUES
    -- the installation's own id: not data of any merchant
    ('wallet.installation', false),
    -- merchant_id NULL is the global default row, which no merchant owns
    ('wallet.code_guard_settings', true),
    -- changes of global rows (the default guard settings) belong to no merchant
    ('wallet.audit_log', true),
    -- a failed check of a text naming no campaign the caller acts for, made by
    -- a role acting for several merchants or all, names no merchant
    ('wallet.code_failed_attempts', true);
-- (wallet.merchants itself uses merchant_id as its key, so it needs no exception.)

SELECT is(ARRAY(SELECT c.oid::regclass::text FROM pg_class c
                 WHERE c.relnamespace = 'wallet'::regnamespace AND c.relkind IN ('r', 'p')
                   AND c.oid NOT IN (SELECT tab FROM exempt)
                   AND NOT EXISTS (SELECT FROM pg_attribute a
                                    WHERE a.attrelid = c.oid AND a.attname = 'merchant_id' AND NOT a.attisdropped
                                      AND a.atttypid = 'bigint'::regtype AND a.attnotnull)
                 ORDER BY 1),
          '{}'::text[],
          'every table of schema wallet but the exceptions has merchant_id bigint NOT NULL');

SELECT is(ARRAY(SELECT e.tab::text FROM exempt e
                 WHERE e.has_column <> EXISTS (SELECT FROM pg_attribute a
                                                WHERE a.attrelid = e.tab AND a.attname = 'merchant_id'
                                                  AND NOT a.attisdropped AND a.atttypid = 'bigint'::regtype)
                 ORDER BY 1),
          '{}'::text[],
          'each exception is as the list says (installation has no merchant_id, the nullable ones a bigint one)');

SELECT cmp_ok((SELECT count(*) FROM pg_class c WHERE c.relnamespace = 'wallet'::regnamespace AND c.relkind IN ('r', 'p')),
              '>=', 18::bigint, 'the enumeration sees the tables of the extension');

-- Every insert path: accounts (open_account), entries (post_entry, via
-- accrue and redeem), code keys (create_campaign, rotate_code_key),
-- bindings (issue_code), counters (code_lock_counters, and the recount when a
-- cap is set later), for two merchants so that a wrong copy shows.
SELECT wallet.create_merchant('mk one') AS m1 \gset
SELECT wallet.create_merchant('mk two') AS m2 \gset
SELECT wallet.create_program(:m1, 'p1') AS p1 \gset
SELECT wallet.create_program(:m2, 'p2') AS p2 \gset
SELECT wallet.open_account(:p1, 'alice') AS a1 \gset
SELECT wallet.open_account(:p2, 'alice') AS a2 \gset
SELECT ok((wallet.accrue(:a1, 10, 'k1', 'test')).merchant_id = :m1, 'an accrual returns its entry with the account''s merchant');
SELECT ok((wallet.accrue(:a2, 20, 'k2', 'test')).merchant_id = :m2, 'and so in the other merchant');
SELECT ok((wallet.redeem(:a2, 5, 'k3', 'test')).merchant_id = :m2, 'a redemption too');
SELECT wallet.create_campaign(:m1, 'c1', max_redemptions_per_code => 5, max_redemptions_per_member => 5,
                              max_redemptions_total => 5) AS c1 \gset
SELECT wallet.create_campaign(:m2, 'c2') AS c2 \gset
SELECT wallet.rotate_code_key(:c2);
SELECT wallet.issue_code(:c1, 'alice') AS code1 \gset
SELECT wallet.issue_code(:c2, 'alice') AS code2 \gset
SELECT is((wallet.redeem_code(:'code1', 'alice', 'r1')).status, 'ok', 'a code of a capped campaign is redeemed');
SELECT is((wallet.redeem_code(:'code2', 'alice', 'r2')).status, 'ok', 'a code of an uncapped campaign is redeemed');
-- caps set later: the counters are rebuilt by the trigger
UPDATE wallet.campaigns SET max_redemptions_per_code = 3, max_redemptions_per_member = 3, max_redemptions_total = 3
 WHERE campaign_id = :c2;

SELECT is((SELECT count(*) FROM wallet.accounts x JOIN wallet.programs p USING (program_id)
            WHERE x.account_id IN (:a1, :a2) AND x.merchant_id = p.merchant_id), 2::bigint,
          'accounts carry the merchant of their program');
SELECT is((SELECT count(*) FROM wallet.entries x JOIN wallet.accounts a USING (account_id)
            WHERE x.account_id IN (:a1, :a2) AND x.merchant_id = a.merchant_id), 3::bigint,
          'entries carry the merchant of their account');
SELECT is((SELECT array_agg(x.merchant_id = c.merchant_id ORDER BY x.campaign_id, x.key_version)
             FROM wallet.code_keys x JOIN wallet.campaigns c USING (campaign_id) WHERE x.campaign_id IN (:c1, :c2)),
          '{t,t,t}'::boolean[], 'code keys (created and rotated) carry the merchant of their campaign');
SELECT is((SELECT array_agg(x.merchant_id = c.merchant_id ORDER BY x.campaign_id)
             FROM wallet.code_bindings x JOIN wallet.campaigns c USING (campaign_id) WHERE x.campaign_id IN (:c1, :c2)),
          '{t,t}'::boolean[], 'bindings carry the merchant of their campaign');
SELECT is((SELECT array_agg(x.merchant_id = c.merchant_id ORDER BY x.campaign_id)
             FROM wallet.code_use_counts x JOIN wallet.campaigns c USING (campaign_id) WHERE x.campaign_id IN (:c1, :c2)),
          '{t,t}'::boolean[], 'per-code counters (first use, and recount) carry the merchant of their campaign');
SELECT is((SELECT array_agg(x.merchant_id = c.merchant_id ORDER BY x.campaign_id)
             FROM wallet.member_use_counts x JOIN wallet.campaigns c USING (campaign_id) WHERE x.campaign_id IN (:c1, :c2)),
          '{t,t}'::boolean[], 'per-member counters (first use, and recount) carry the merchant of their campaign');
SELECT is((SELECT array_agg(x.merchant_id = c.merchant_id ORDER BY x.campaign_id)
             FROM wallet.campaign_use_counts x JOIN wallet.campaigns c USING (campaign_id) WHERE x.campaign_id IN (:c1, :c2)),
          '{t,t}'::boolean[], 'per-campaign counters (first use, and recount) carry the merchant of their campaign');

SELECT * FROM finish();
ROLLBACK;

-- pgTAP: campaign audience and holdout, RFM segments, feedback and the
-- campaign report (issue 11).
--
-- Purchases, refunds and events are inserted directly (the constructed data
-- set; their API is another area's).  Every figure is checked against an
-- answer worked out here independently: by hand for a small set (section
-- 4), by a second, plain computation for a larger random one (section 6).
BEGIN;
SET LOCAL timezone = 'UTC';
SELECT * FROM no_plan();

SELECT wallet.create_merchant('analytics merchant') AS m \gset
SELECT wallet.create_merchant('analytics other merchant') AS m2 \gset

-- ------------------------------------------------------------ 1. holdout: determinism and split

-- 100,000 members; a campaign for everyone with a 10% holdout.
INSERT INTO wallet.members (merchant_id, member_ref) SELECT :m, 'h' || g FROM generate_series(1, 100000) g;
ANALYZE wallet.members;   -- planner statistics, as autovacuum would have them
SELECT wallet.create_campaign(:m, 'split', starts_at => now() + interval '1 day') AS split \gset
SELECT is(wallet.set_campaign_audience(:split, 'everyone', 10), 100000::bigint, 'set_campaign_audience returns the audience''s size');
CREATE TEMP TABLE split1 AS SELECT member_id, grp FROM wallet_internal.campaign_members(:split);
SELECT cmp_ok((SELECT count(*) FROM split1 WHERE grp = 'control'), '>=', 9500::bigint,
              '10% holdout of 100,000: at least 9,500 in control (expected 10,000, sd 95)');
SELECT cmp_ok((SELECT count(*) FROM split1 WHERE grp = 'control'), '<=', 10500::bigint, '... and at most 10,500');
-- uniform: each tenth of the hash range holds 10,000 +- 5 sd
SELECT is_empty($$SELECT d FROM (SELECT floor(wallet_internal.holdout_bucket(c.holdout_key, c.campaign_id, m.member_id) / 10) AS d, count(*) AS n
                                    FROM wallet.members m, wallet.campaigns c
                                   WHERE m.merchant_id = $$ || :m || $$ AND c.campaign_id = $$ || :split || $$ GROUP BY 1) x
                   WHERE n NOT BETWEEN 9525 AND 10475$$,
                'the hash spreads the members evenly: every tenth of its range holds 10,000 +- 475');
-- the group is a function of the stored key, campaign and member alone: recomputed here from its definition
SELECT is_empty($$SELECT s.member_id FROM split1 s, wallet.campaigns c
                   WHERE c.campaign_id = $$ || :split || $$
                     AND (s.grp = 'control') <> (('x' || encode(substr(sha256(c.holdout_key || int8send(c.campaign_id) || int8send(s.member_id)), 1, 7), 'hex'))::bit(56)::bigint
                                                 < 0.10 * 72057594037927936)$$,
                'control = sha256(holdout key, campaign id, member id) in the lowest 10% of its range, for every member');
SELECT is_empty($$WITH x AS MATERIALIZED (SELECT m.member_ref, s.grp FROM wallet.members m JOIN split1 s USING (member_id) WHERE m.member_id % 97 = 0)
                   SELECT x.member_ref FROM x WHERE wallet.campaign_group($$ || :split || $$, x.member_ref) <> x.grp$$,
                'campaign_group (one member) agrees with the set of the whole audience');
SELECT is((SELECT count(*) FROM wallet_internal.campaign_members(:split) x JOIN split1 s USING (member_id) WHERE x.grp <> s.grp), 0::bigint,
          'a second computation of the whole audience gives every member the same group');
-- a second campaign draws another control group: the key is per campaign
SELECT wallet.create_campaign(:m, 'split 2', starts_at => now() + interval '1 day') AS split2 \gset
SELECT wallet.set_campaign_audience(:split2, 'everyone', 10) AS n \gset
SELECT cmp_ok((SELECT count(*) FROM wallet_internal.campaign_members(:split2) x JOIN split1 s USING (member_id)
                WHERE x.grp = 'control' AND s.grp = 'control'), '<', 1200::bigint,
              'two campaigns'' control groups overlap as independent draws do (about 1,000), not wholly');
-- the audience may change; a member's group does not
SELECT wallet.set_campaign_audience(:split, 'list', 10, member_refs => ARRAY(SELECT 'h' || g FROM generate_series(1, 2000) g)) AS n \gset
SELECT is_empty($$WITH x AS MATERIALIZED (SELECT m.member_ref, s.grp FROM wallet.members m JOIN split1 s USING (member_id)
                                            WHERE m.merchant_id = $$ || :m || $$ AND m.member_ref IN ('h1', 'h2', 'h3', 'h50', 'h1999', 'h2000'))
                   SELECT x.member_ref FROM x WHERE wallet.campaign_group($$ || :split || $$, x.member_ref) <> x.grp$$,
                'narrowing the audience to a list keeps each member''s group');
SELECT is(wallet.campaign_group(:split, 'h2001'), 'outside', 'a member not on the list is outside');
SELECT is(wallet.campaign_group(:split, 'never heard of'), 'outside', 'an unknown member is outside (and is not created)');
SELECT is((SELECT count(*) FROM wallet.members WHERE member_ref = 'never heard of'), 0::bigint, '... nothing created');
-- holdout: free before the start, fixed after it
SELECT lives_ok(format($$SELECT wallet.set_campaign_audience(%s, 'everyone', 20)$$, :split2), 'before the start the holdout may change');
UPDATE wallet.campaigns SET starts_at = now() - interval '1 hour' WHERE campaign_id = :split2;
SELECT throws_ok(format($$SELECT wallet.set_campaign_audience(%s, 'everyone', 10)$$, :split2), 'WL640',
                 format('holdout of campaign %s cannot change after it started', :split2), 'after the start: WL640');
SELECT lives_ok(format($$SELECT wallet.set_campaign_audience(%s, 'list', 20, member_refs => '{h1}')$$, :split2),
                'after the start the audience may change with the same holdout');
SELECT wallet.create_campaign(:m, 'started at once') AS started \gset
SELECT lives_ok(format($$SELECT wallet.set_campaign_audience(%s, 'everyone', 15)$$, :started),
                'a campaign started at creation gets its first holdout');
SELECT is((SELECT holdout_percent FROM wallet.campaigns WHERE campaign_id = :split2), 20::numeric, 'the refused change changed nothing');

-- ------------------------------------------------------------ 2. audience kinds and argument checks

SELECT wallet.create_program(:m, 'tiers program', interval '1 year') AS tp \gset
SELECT wallet.create_program(:m2, 'other program', interval '1 year') AS tp2 \gset
INSERT INTO wallet.tiers (merchant_id, program_id, rank, name, min_points)
VALUES (:m, :tp, 1, 'Silver', 100), (:m, :tp, 2, 'Gold', 500), (:m, :tp, 3, 'Platinum', 1000);
SELECT count(wallet.open_account(:tp, 't' || g)) AS n FROM generate_series(0, 3) g \gset
INSERT INTO wallet.account_tiers (account_id, merchant_id, member_id, program_id, tier_id, rank)
SELECT a.account_id, :m, a.member_id, :tp, t.tier_id, t.rank
  FROM wallet.accounts a JOIN wallet.tiers t ON t.program_id = :tp AND t.rank = substr(a.member_ref, 2)::int
 WHERE a.program_id = :tp AND a.member_ref <> 't0';
SELECT wallet.create_campaign(:m, 'gold and up') AS gold \gset
SELECT is(wallet.set_campaign_audience(:gold, 'tiers', 0, program_id => :tp, min_rank => 2), 2::bigint, 'tiers: Gold and Platinum are the audience');
SELECT is(ARRAY(SELECT wallet.campaign_group(:gold, 't' || g) FROM generate_series(0, 3) g), '{outside,outside,target,target}',
          'no tier and Silver are outside, Gold and Platinum are in (no holdout: target)');
SELECT is(wallet.set_campaign_audience(:gold, 'list', 0, member_refs => '{t1,t1,list-new}'), 2::bigint,
          'list: duplicates count once, a member named for the first time is created');
SELECT is(ARRAY(SELECT wallet.campaign_group(:gold, r) FROM unnest('{t0,t1,t2,list-new}'::text[]) r), '{outside,target,outside,target}',
          'list: exactly its members are in');
SELECT is((SELECT audience || coalesce(audience_program_id::text, '-') FROM wallet.campaigns WHERE campaign_id = :gold), 'list-',
          'changing the kind clears the arguments of the old kind');
SELECT throws_ok(format($$SELECT wallet.set_campaign_audience(%s, 'vip')$$, :gold), '22023', NULL, 'unknown audience kind: 22023');
SELECT throws_ok(format($$SELECT wallet.set_campaign_audience(%s, 'everyone', 100)$$, :gold), '22023', NULL, 'holdout 100%: 22023');
SELECT throws_ok(format($$SELECT wallet.set_campaign_audience(%s, 'everyone', -1)$$, :gold), '22023', NULL, 'negative holdout: 22023');
SELECT throws_ok(format($$SELECT wallet.set_campaign_audience(%s, 'everyone', 0, program_id => %s, min_rank => 1)$$, :gold, :tp), '22023', NULL,
                 'tier arguments for audience everyone: 22023');
SELECT throws_ok(format($$SELECT wallet.set_campaign_audience(%s, 'tiers', 0, program_id => %s)$$, :gold, :tp), '22004', NULL, 'tiers without min_rank: 22004');
SELECT throws_ok(format($$SELECT wallet.set_campaign_audience(%s, 'tiers', 0, program_id => %s, min_rank => 1)$$, :gold, :tp2), 'WL214',
                 'unknown program', 'another merchant''s program: WL214 "unknown program", as every function says it');
SELECT throws_ok(format($$SELECT wallet.set_campaign_audience(%s, 'segment', 0, segments => '{whales}')$$, :gold), '22023', NULL, 'unknown segment: 22023');
SELECT throws_ok(format($$SELECT wallet.set_campaign_audience(%s, 'segment', 0, segments => ARRAY[NULL]::text[])$$, :gold), '22004',
                 'segments must not contain null', 'a NULL segment: 22004, as a NULL element of any array');
SELECT throws_ok(format($$SELECT wallet.set_campaign_audience(%s, 'segment', 0, segments => '{champions,NULL}')$$, :gold), '22004',
                 'segments must not contain null', 'a NULL among known segments: 22004');
SELECT throws_ok(format($$SELECT wallet.set_campaign_audience(%s, 'segment', 0, segments => '{}')$$, :gold), '22023',
                 'segments must not be empty', 'no segment: 22023 (a segment audience names one or more)');
SELECT throws_ok(format($$SELECT wallet.set_campaign_audience(%s, 'segment', 0, segments => ARRAY[['champions'], ['loyal']])$$, :gold), '22023',
                 'segments must be a one-dimensional array', 'a 2-D array of segments: 22023, not flattened');
SELECT throws_ok(format($$SELECT wallet.set_campaign_audience(%s, 'list', 0, member_refs => ARRAY[['a'], ['b']])$$, :gold), '22023',
                 'member_refs must be a one-dimensional array', 'a 2-D array of member_refs: 22023, not flattened');
SELECT throws_ok(format($$SELECT wallet.set_campaign_audience(%s, 'segment', 0, segments => '{champions}', as_of => 'infinity')$$, :gold),
                 '22023', 'as_of must be finite', 'segment as of infinity: 22023');
SELECT throws_ok(format($$SELECT wallet.set_campaign_audience(%s, 'everyone', 0, as_of => '-infinity')$$, :gold),
                 '22023', 'as_of must be finite', 'as_of -infinity: 22023 whatever the audience');
SELECT is((SELECT audience FROM wallet.campaigns WHERE campaign_id = :gold), 'list', 'the refused calls changed nothing');
SELECT throws_ok(format($$SELECT wallet.set_campaign_audience(%s, 'list', 0, member_refs => '{ok, " "}')$$, :gold), '22023', NULL, 'a blank member in the list: 22023');
SELECT throws_ok(format($$SELECT wallet.set_campaign_audience(%s, 'list', 0)$$, :gold), '22004', NULL, 'a list without members: 22004');

-- ------------------------------------------------------------ 3. RFM by hand

-- Five buyers at merchant m2 and a member without purchases; as of 2026-06-30.
--   a: 5 x 100 on 06-29          last 06-29  F 5  M 500
--   b: 4 x  50 on 06-20          last 06-20  F 4  M 200   (one refunded on 07-05: after as_of, still counts)
--   c: 3 x  30 on 05-01          last 05-01  F 3  M  90
--   d: 2 x 400 on 03-01          last 03-01  F 2  M 800
--   e: 1 x  10 on 2025-12-01     last 12-01  F 1  M  10   (and 1000 on 06-25, refunded in full on 06-26: not counted)
--   z: no purchase               not scored
-- Quintile = 1 + floor(5 * percent_rank): with five distinct values 1, 2, 3, 4, 5.
--   R: e 1, d 2, c 3, b 4, a 5;  F: e 1, d 2, c 3, b 4, a 5;  M: e 1, c 2, b 3, a 4, d 5
--   FM = ceil((F + M) / 2): a 5, b 4, c 3, d 4, e 1
--   segments (wallet.rfm_segments): a R5 FM5 champions, b R4 FM4 champions, c R3 FM3 loyal, d R2 FM4 at_risk, e R1 FM1 lost
INSERT INTO wallet.members (merchant_id, member_ref) SELECT :m2, r FROM unnest('{a,b,c,d,e,z}'::text[]) r;
CREATE TEMP TABLE hand_buys (ref text, n int, amount numeric, at timestamptz);
INSERT INTO hand_buys VALUES ('a', 5, 100, '2026-06-29 12:00'), ('b', 4, 50, '2026-06-20 12:00'), ('c', 3, 30, '2026-05-01 12:00'),
                             ('d', 2, 400, '2026-03-01 12:00'), ('e', 1, 10, '2025-12-01 12:00'), ('e', 1, 1000, '2026-06-25 12:00');
INSERT INTO wallet.purchases (merchant_id, member_id, order_ref, amount, currency, occurred_at)
SELECT :m2, m.member_id, 'rfm-' || h.ref || '-' || h.amount || '-' || g, h.amount, 'CNY', h.at
  FROM hand_buys h JOIN wallet.members m ON m.merchant_id = :m2 AND m.member_ref = h.ref, generate_series(1, h.n) g;
INSERT INTO wallet.refunds (merchant_id, member_id, purchase_id, refund_ref, amount, created_at)
SELECT p.merchant_id, p.member_id, p.purchase_id, 'rf-' || p.order_ref, p.amount,
       CASE WHEN p.amount = 1000 THEN timestamptz '2026-06-26' ELSE timestamptz '2026-07-05' END
  FROM wallet.purchases p WHERE p.merchant_id = :m2 AND p.order_ref IN ('rfm-e-1000-1', 'rfm-b-50-1');
UPDATE wallet.purchases SET refunded_amount = amount WHERE merchant_id = :m2 AND order_ref IN ('rfm-e-1000-1', 'rfm-b-50-1');
SELECT results_eq($$SELECT member_ref, frequency, monetary, r_score, f_score, m_score, segment FROM wallet.rfm($$ || :m2 || $$, '2026-06-30') ORDER BY member_ref$$,
                  $$VALUES ('a', 5::bigint, 500::numeric, 5, 5, 4, 'champions'), ('b', 4, 200, 4, 4, 3, 'champions'), ('c', 3, 90, 3, 3, 2, 'loyal'),
                           ('d', 2, 800, 2, 2, 5, 'at_risk'), ('e', 1, 10, 1, 1, 1, 'lost')$$,
                  'rfm by hand: frequency, monetary, the three quintiles and the segment of each buyer; no row for a member without purchases');
SELECT is((SELECT recency_days FROM wallet.rfm(:m2, '2026-06-30') WHERE member_ref = 'a'), 0.5, 'recency in days from as_of (06-29 12:00 to 06-30 00:00)');
SELECT is((SELECT (frequency, monetary, r_score)::text FROM wallet.rfm(:m2, '2026-07-10') WHERE member_ref = 'b'), '(3,150,4)',
          'as of after the refund of 07-05, b''s refunded purchase no longer counts');
SELECT is((SELECT count(*) FROM wallet.rfm(:m2, '2026-06-30', 'EUR')), 0::bigint, 'a currency with no purchases: no buyers');
SELECT is((SELECT count(*) FROM wallet.rfm_segments), 25::bigint, 'the segment table covers the 25 cells of R and FM ...');
SELECT is((SELECT count(DISTINCT (r_score, fm_score)) FROM wallet.rfm_segments WHERE r_score BETWEEN 1 AND 5 AND fm_score BETWEEN 1 AND 5), 25::bigint,
          '... each once');
SELECT is((SELECT array_agg(DISTINCT segment ORDER BY segment) FROM wallet.rfm_segments),
          '{at_risk,cannot_lose,champions,hibernating,lost,loyal,new,potential}', 'with the eight named segments');
SELECT throws_ok(format($$SELECT * FROM wallet.rfm(%s, NULL)$$, :m2), '22004', NULL, 'rfm: NULL as_of: 22004');
SELECT throws_ok(format($$SELECT * FROM wallet.rfm(%s, now(), 'yen')$$, :m2), '22023', NULL, 'rfm: malformed currency: 22023');
SELECT throws_ok(format($$SELECT * FROM wallet.rfm(%s, 'infinity')$$, :m2), '22023', NULL, 'rfm: infinite as_of: 22023');
-- a segment audience: the members of the segments as of a time, kept as they were
SELECT wallet.create_campaign(:m2, 'win back') AS winback \gset
SELECT is(wallet.set_campaign_audience(:winback, 'segment', 0, segments => '{at_risk,lost}', as_of => '2026-06-30'), 2::bigint,
          'segment audience: at_risk and lost as of 06-30 are d and e');
SELECT is(ARRAY(SELECT wallet.campaign_group(:winback, r) FROM unnest('{a,d,e,z}'::text[]) r), '{outside,target,target,outside}',
          'd and e are in, a and z are not');
INSERT INTO wallet.purchases (merchant_id, member_id, order_ref, amount, currency, occurred_at)
SELECT :m2, member_id, 'rfm-e-late-' || g, 900, 'CNY', '2026-06-29' FROM wallet.members, generate_series(1, 9) g WHERE merchant_id = :m2 AND member_ref = 'e';
SELECT is(wallet.campaign_group(:winback, 'e'), 'target', 'the snapshot holds: e stays in after its scores changed');
DELETE FROM wallet.purchases WHERE order_ref LIKE 'rfm-e-late-%';

-- ------------------------------------------------------------ 4. the report by hand

-- Campaign 2026-03-01 to 03-11 (10 days): before = 02-19..03-01, after = 03-11..03-21.
-- Three target members T1-T3 and three control members C1-C3 (picked by the
-- hash from 200 candidates, then made the list: the group does not depend on
-- the audience), and O outside.
SELECT wallet.create_program(:m2, 'report program', interval '1 year') AS rp \gset
UPDATE wallet.programs SET point_value = 0.01 WHERE program_id = :rp;
SELECT wallet.create_campaign(:m2, 'festival', starts_at => '2026-03-01') AS fest \gset
SELECT wallet.set_campaign_redemption_value(:fest, 3);
INSERT INTO wallet.members (merchant_id, member_ref) SELECT :m2, 'cand' || g FROM generate_series(1, 200) g;
SELECT wallet.set_campaign_audience(:fest, 'everyone', 50) AS n \gset
CREATE TEMP TABLE who (k text PRIMARY KEY, ref text, id bigint);
INSERT INTO who SELECT 'T' || row_number() OVER (ORDER BY m.member_id), m.member_ref, m.member_id FROM wallet.members m
 WHERE m.merchant_id = :m2 AND m.member_ref LIKE 'cand%' AND wallet.campaign_group(:fest, m.member_ref) = 'target' ORDER BY m.member_id LIMIT 3;
INSERT INTO who SELECT 'C' || row_number() OVER (ORDER BY m.member_id), m.member_ref, m.member_id FROM wallet.members m
 WHERE m.merchant_id = :m2 AND m.member_ref LIKE 'cand%' AND wallet.campaign_group(:fest, m.member_ref) = 'control' ORDER BY m.member_id LIMIT 3;
INSERT INTO who SELECT 'O', m.member_ref, m.member_id FROM wallet.members m
 WHERE m.merchant_id = :m2 AND m.member_ref LIKE 'cand%' AND m.member_ref NOT IN (SELECT ref FROM who) LIMIT 1;
SELECT is(wallet.set_campaign_audience(:fest, 'list', 50, member_refs => ARRAY(SELECT ref FROM who WHERE k <> 'O')), 6::bigint, 'fixture: six in the list');
SELECT is(ARRAY(SELECT wallet.campaign_group(:fest, ref) FROM who ORDER BY k), '{control,control,control,outside,target,target,target}',
          'fixture: C1-C3 control, O outside, T1-T3 target');
-- purchases (amount, refunded amount, when, points, refunded points, rules)
CREATE TEMP TABLE buys (k text, amount numeric, refunded numeric, at timestamptz, points bigint, rpoints bigint, rules jsonb);
INSERT INTO buys VALUES
    ('T1', 20, 0, '2026-02-25', 0, 0, '[]'),
    ('T1', 100, 0, '2026-03-02', 60, 0, '[{"rule_id": 901, "points": 50, "why": "festival"}, {"rule_id": 902, "points": 10, "why": "base"}]'),
    ('T1', 50, 0, '2026-03-05', 0, 0, '[]'),
    ('T1', 30, 0, '2026-03-15', 0, 0, '[]'),
    ('T1', 25, 0, '2026-04-15', 0, 0, '[]'),
    ('T2', 80, 0, '2026-03-03', 0, 0, '[]'),
    ('C1', 60, 0, '2026-02-20', 0, 0, '[]'),
    ('C1', 40, 0, '2026-03-04', 0, 0, '[]'),
    ('C1', 10, 0, '2026-03-12', 0, 0, '[]'),
    ('C2', 30, 0, '2026-02-28', 0, 0, '[]'),
    ('C3', 20, 5, '2026-03-06', 0, 0, '[]'),
    ('C3', 99, 99, '2026-03-07', 0, 0, '[]'),
    ('O', 1000, 0, '2026-03-05', 40, 20, '[{"rule_id": 901, "points": 40, "why": "festival"}]'),
    ('T2', 70, 0, '2026-03-20', 0, 0, '[]');
-- T2's purchase of 03-20 is in another currency: left out when the report asks for CNY
INSERT INTO wallet.purchases (merchant_id, member_id, order_ref, amount, currency, occurred_at, program_id, points, refunded_amount, refunded_points, rules)
SELECT :m2, w.id, 'fest-' || row_number() OVER (), b.amount, CASE WHEN b.at = '2026-03-20' THEN 'EUR' ELSE 'CNY' END,
       b.at + interval '10 hours', :rp, b.points, b.refunded, b.rpoints, b.rules
  FROM buys b JOIN who w USING (k);
-- the campaign's earning rule 901 (rule 902 is another's), with those ids so
-- that the purchases' explanations above name them
INSERT INTO wallet.earning_rules (rule_id, merchant_id, program_id, campaign_id, name, effect, value)
OVERRIDING SYSTEM VALUE
VALUES (901, :m2, :rp, :fest, 'festival', 'multiplier', 2), (902, :m2, :rp, NULL, 'base', 'per_unit', 1);
-- codes: T1 and C1 redeem during the period, T3 after it; one of T2's is undone
SELECT g::text AS code1 FROM wallet.generate_codes(:fest, 1) g \gset
SELECT g::text AS code2 FROM wallet.generate_codes(:fest, 1) g \gset
SELECT g::text AS code3 FROM wallet.generate_codes(:fest, 1) g \gset
SELECT g::text AS code4 FROM wallet.generate_codes(:fest, 1) g \gset
SELECT is(ARRAY(SELECT (wallet.redeem_code(c, (SELECT ref FROM who WHERE k = w), 'fest-' || w)).status::text
                FROM (VALUES (:'code1', 'T1'), (:'code2', 'C1'), (:'code3', 'T3'), (:'code4', 'T2')) v(c, w)), '{ok,ok,ok,ok}', 'fixture: four redemptions');
SELECT ok((SELECT undone_at IS NOT NULL FROM wallet.undo_redemption((SELECT redemption_id FROM wallet.code_redemptions WHERE idempotency_key = 'fest-T2'), 'test')),
          'fixture: T2''s redemption undone');
UPDATE wallet.campaigns SET ends_at = '2026-03-11' WHERE campaign_id = :fest;   -- ended (its codes were redeemable until now)
UPDATE wallet.code_redemptions SET redeemed_at = CASE idempotency_key WHEN 'fest-T3' THEN timestamptz '2026-03-12' ELSE timestamptz '2026-03-03' END
 WHERE campaign_id = :fest;
-- events: T2 opened the campaign's message; T3 another campaign's
INSERT INTO wallet.member_events (merchant_id, member_id, kind, occurred_at, attributes)
SELECT :m2, id, 'push_opened', '2026-03-02', jsonb_build_object('campaign_id', CASE k WHEN 'T2' THEN :fest ELSE :fest + 1000 END)
  FROM who WHERE k IN ('T2', 'T3');
-- costs: a discount of 12.50 for T2, and one in EUR
INSERT INTO wallet.campaign_costs (merchant_id, campaign_id, kind, amount, currency, member_id, occurred_at)
SELECT :m2, :fest, 'discount', 12.5, 'CNY', id, '2026-03-03' FROM who WHERE k = 'T2';
SELECT wallet.record_campaign_cost(:fest, 10, 'EUR', '2026-03-03') AS cost_wrong \gset
SELECT wallet.record_campaign_cost(:fest, -3, 'EUR', '2026-03-03');   -- a correction: 7 in all
SELECT throws_ok(format($$SELECT wallet.record_campaign_cost(%s, -8, 'EUR', '2026-03-03')$$, :fest), '22023', 'a correction must not exceed the costs booked',
                 'record_campaign_cost: a correction takes back at most the 7 EUR booked');
-- feedback: T1 praise 5, T2 complaint 2, C2 4; T3's of 03-15 is after the period
SELECT count(wallet.record_feedback(:fest, ref, s, cat, 'text')) AS n FROM (VALUES ('T1', 5, 'praise'), ('T2', 2, 'complaint'), ('C2', 4, 'praise'), ('T3', 1, 'complaint')) v(k, s, cat) JOIN who USING (k) \gset
UPDATE wallet.campaign_feedback f SET created_at = CASE WHEN w.k = 'T3' THEN timestamptz '2026-03-15' ELSE timestamptz '2026-03-05' END
  FROM who w WHERE f.member_id = w.id AND f.campaign_id = :fest;

CREATE TEMP TABLE rep AS SELECT * FROM wallet.campaign_report(:fest, currency => 'CNY');
-- by hand (target T1 T2 T3, control C1 C2 C3; net of refunds; CNY only):
--   during:  T 150 + 80 + 0 = 230 (buyers T1 T2; T1 twice)   C 40 + 0 + 15 = 55 (buyers C1 C3; C3's 99 refunded in full)
--   before:  T 20 (T1)                                         C 60 + 30 = 90 (C1 C2)
--   after:   T 30 (T1; T2's 70 is EUR)                         C 10 (C1)
SELECT results_eq($$SELECT before_start, during_start, during_end, after_end FROM rep$$,
                  $$VALUES ('2026-02-19'::timestamptz, '2026-03-01'::timestamptz, '2026-03-11'::timestamptz, '2026-03-21'::timestamptz)$$,
                  'the period defaults to the campaign''s window; before and after are as long');
SELECT results_eq($$SELECT audience_members, target_members, control_members, target_buyers, control_buyers, target_revenue, control_revenue FROM rep$$,
                  $$VALUES (6::bigint, 3::bigint, 3::bigint, 2::bigint, 2::bigint, 230::numeric, 55::numeric)$$,
                  'group sizes, buyers and revenue during the period');
SELECT results_eq($$SELECT target_arpu_before, target_arpu, target_arpu_after, control_arpu_before, control_arpu, control_arpu_after FROM rep$$,
                  $$VALUES (6.6667, 76.6667, 10.0000, 30.0000, 18.3333, 3.3333)$$,
                  'ARPU before, during, after: revenue / group size (20/3, 230/3, 30/3; 90/3, 55/3, 10/3)');
SELECT results_eq($$SELECT target_arppu_before, target_arppu, target_arppu_after, control_arppu_before, control_arppu, control_arppu_after FROM rep$$,
                  $$VALUES (20.0000, 115.0000, 30.0000, 45.0000, 27.5000, 10.0000)$$,
                  'ARPPU: revenue / buyers (20/1, 230/2, 30/1; 90/2, 55/2, 10/1)');
SELECT results_eq($$SELECT target_repeat_rate, control_repeat_rate, target_retention, control_retention, target_churn, control_churn FROM rep$$,
                  $$VALUES (0.5000, 0.0000, 0.5000, 0.5000, 0.5000, 0.5000)$$,
                  'repeat rate (T1 of T1 T2; none), retention into the after window (T1 of T1 T2; C1 of C1 C3) and churn');
SELECT results_eq($$SELECT arpu_lift, lift_percent, incremental_sales FROM rep$$,
                  $$VALUES (58.3333, 318.18, 175.00)$$,
                  'lift = 230/3 - 55/3 per member, +318.18% on control, incremental sales = lift x 3 target members');
-- Welch, computed here from the per-member revenue: t with floor(df) = 2 is 4.3027 (a table of Student's t)
SELECT results_eq($$SELECT lift_ci_low, lift_ci_high, floor(lift_df) FROM rep$$,
                  $$WITH t(x) AS (VALUES (150.0), (80), (0)), c(x) AS (VALUES (40.0), (0), (15)),
                         v AS (SELECT (SELECT avg(x) FROM t) - (SELECT avg(x) FROM c) AS d,
                                      (SELECT var_samp(x) / 3 FROM t) AS a, (SELECT var_samp(x) / 3 FROM c) AS b)
                    SELECT round(d - 4.3027 * sqrt(a + b), 4), round(d + 4.3027 * sqrt(a + b), 4), floor((a + b) ^ 2 / (a ^ 2 / 2 + b ^ 2 / 2)) FROM v$$,
                  '95% interval of the lift: Welch (difference +- t(df) x sqrt(s1²/n1 + s2²/n2)), df by Welch-Satterthwaite');
SELECT results_eq($$SELECT reach, reach_rate, participants, participation_rate, redemptions, redeemers, redemption_rate FROM rep$$,
                  $$VALUES (2::bigint, 0.6667, 2::bigint, 0.6667, 2::bigint, 1::bigint, 0.5000)$$,
                  'reach: T1 (redeemed) and T2 (opened the message; T3''s event is another campaign''s) of 3; participants: T1 (code, rule) and T2 (discount); redemptions: T1 and C1 (T3''s after, T2''s undone); redemption rate: 1 of 2 reached');
SELECT results_eq($$SELECT points_granted, points_cost, redemption_cost, other_cost, cost, roi FROM rep$$,
                  $$VALUES (70.00, 0.70, 6::numeric, 12.5, 19.20, 8.1146)$$,
                  'cost: points of rule 901 (T1 50; O 40 less half refunded: 20) x 0.01, 2 redemptions x 3, the CNY discount; ROI = (175 - 19.20) / 19.20');
SELECT results_eq($$SELECT feedback_count, average_score, feedback_rate, complaint_rate FROM rep$$,
                  $$VALUES (3::bigint, 3.67, 1.0000, 0.5000)$$,
                  'feedback in the period: 3 (mean score (5 + 2 + 4) / 3); of the 2 reached, both gave feedback and 1 complained');
-- a push message of the campaign sent in the period reaches its member: T3
-- (not reached above) is sent one on 03-04; C1's (control) and T3's of
-- another campaign or after the period count for nothing: reach 3 of 3
INSERT INTO wallet.push_messages (merchant_id, member_id, channel, topic, service, payload, campaign_id, priority, not_before,
                                  outcome, status, sent_at, finished_at, part)
SELECT :m2, w.id, 'push', 'marketing', false, '{}', v.campaign_id, 0, v.at, 'queued', 'sent', v.at, v.at, 3
  FROM (VALUES ('T3', :fest, timestamptz '2026-03-04'), ('C1', :fest, '2026-03-04'), ('T3', NULL, '2026-03-05'),
               ('T1', :fest, '2026-03-20')) v (k, campaign_id, at)
  JOIN who w ON w.k = v.k;
SELECT is((SELECT (reach, reach_rate, redemption_rate)::text FROM wallet.campaign_report(:fest, currency => 'CNY')), '(3,1.0000,0.3333)',
          'reach: T1 (redeemed), T2 (opened), T3 (sent the campaign''s push in the period) of 3; redemption rate 1 of 3 reached');
SELECT is((SELECT target_revenue FROM wallet.campaign_report(:fest)), 230::numeric, 'every currency: the EUR purchase is after the period, during is the same');
SELECT is((SELECT (other_cost, target_arpu_after)::text FROM wallet.campaign_report(:fest)), '(19.5,33.3333)', 'every currency: the EUR cost and T2''s EUR purchase count');
SELECT is((SELECT (target_revenue, control_revenue)::text FROM wallet.campaign_report(:fest, '2026-03-03', '2026-03-05', 'CNY')), '(80,40)',
          'a period of its own: 03-03 to 03-05 holds T2''s 80 and C1''s 40');
-- cohorts: every buyer of the period started in March; T1 bought again in April
SELECT results_eq($$SELECT grp, cohort, members, month_offset, active, retention, churn FROM wallet.campaign_cohorts($$ || :fest || $$, months => 2, currency => 'CNY')$$,
                  $$VALUES ('target', '2026-03-01'::date, 2::bigint, 0, 2::bigint, 1.0000, 0.0000), ('target', '2026-03-01', 2, 1, 1, 0.5000, 0.5000),
                           ('target', '2026-03-01', 2, 2, 0, 0.0000, 1.0000),
                           ('control', '2026-03-01', 2, 0, 2, 1.0000, 0.0000), ('control', '2026-03-01', 2, 1, 0, 0.0000, 1.0000),
                           ('control', '2026-03-01', 2, 2, 0, 0.0000, 1.0000)$$,
                  'cohorts: target T1 T2 (T1 back in April), control C1 C3 (none back)');
SELECT throws_ok(format($$SELECT * FROM wallet.campaign_report(%s, '2026-03-05', '2026-03-05')$$, :fest), '22023', NULL, 'an empty period: 22023');
SELECT throws_ok(format($$SELECT * FROM wallet.campaign_report(%s, '2026-03-05', 'infinity')$$, :fest), '22023', NULL, 'an infinite period: 22023');
SELECT throws_ok(format($$SELECT * FROM wallet.campaign_cohorts(%s, months => 99)$$, :fest), '22023', NULL, 'cohorts over 36 months: 22023');
SELECT throws_ok(format($$SELECT * FROM wallet.campaign_report(%s, '4000-01-01 BC', '200000-01-01')$$, :fest), '22023', 'period out of range',
                 'a period whose windows before and after leave the timestamps: 22023, not 22008');
SELECT throws_ok(format($$SELECT * FROM wallet.campaign_cohorts(%s, '2026-03-01', '294276-12-01')$$, :fest), '22023', 'period out of range',
                 'a period whose months after leave the timestamps: 22023, not 22008');
SELECT throws_ok($$SELECT * FROM wallet.campaign_report(999999999)$$, 'WL101', 'campaign 999999999 does not exist', 'unknown campaign: WL101');

-- ------------------------------------------------------------ 5. feedback

SELECT wallet.record_feedback(:fest, 'fb member', 3, 'question', 'is it on?', 'fb-1') AS fb1 \gset
SELECT is(wallet.record_feedback(:fest, 'fb member', 3, 'question', 'is it on?', 'fb-1'), :fb1::bigint, 'a retry with the same key returns the first feedback');
SELECT throws_ok(format($$SELECT wallet.record_feedback(%s, 'fb member', 4, 'question', 'is it on?', 'fb-1')$$, :fest), 'WL002', NULL,
                 'the same key with another score: WL002');
SELECT is((SELECT count(*) FROM wallet.campaign_feedback WHERE idempotency_key = 'fb-1'), 1::bigint, 'one row for the key');
SELECT throws_ok(format($$SELECT wallet.record_feedback(%s, 'fb member', 6, 'praise', NULL)$$, :fest), '22023', NULL, 'score 6: 22023');
SELECT throws_ok(format($$SELECT wallet.record_feedback(%s, 'fb member', 5, 'Praise!', NULL)$$, :fest), '22023', NULL, 'a category that is no lower-case word: 22023');
SELECT throws_ok(format($$SELECT wallet.record_feedback(%s, 'fb member', 5, NULL, NULL)$$, :fest), '22004', NULL, 'no category: 22004');
SELECT throws_ok(format($$SELECT wallet.record_feedback(%s, 'fb member', 5, 'praise', repeat('x', 4001))$$, :fest), '22023', NULL, 'a comment over 4000 characters: 22023');
SELECT lives_ok(format($$SELECT wallet.record_feedback(%s, 'fb member', NULL, 'complaint', NULL)$$, :fest), 'a complaint without score or comment');
SELECT ok(wallet.forget_member(:m2, 'fb member', 'erasure request'), 'forget_member');
SELECT is((SELECT count(*) FROM wallet.campaign_feedback f JOIN wallet.members m USING (member_id) WHERE m.status = 'forgotten' AND f.comment IS NOT NULL), 0::bigint,
          'forget_member clears the member''s feedback comments ...');
SELECT is((SELECT count(*) FROM wallet.campaign_feedback f JOIN wallet.members m USING (member_id) WHERE m.status = 'forgotten'), 2::bigint,
          '... and keeps its feedback (score and category count in the rates)');
SELECT is((SELECT new_values -> 'rows' ->> 'campaign_feedback' FROM wallet.audit_log WHERE action = 'forget_member' ORDER BY id DESC LIMIT 1), '1',
          'the erasure''s record counts the feedback rows changed');

-- ------------------------------------------------------------ 6. a random set against a plain computation

SELECT setseed(0.42) AS n \gset
SELECT wallet.create_merchant('analytics random') AS mr \gset
INSERT INTO wallet.members (merchant_id, member_ref) SELECT :mr, 'r' || g FROM generate_series(1, 2000) g;
INSERT INTO wallet.purchases (merchant_id, member_id, order_ref, amount, currency, occurred_at)
SELECT :mr, m.member_id, 'rnd-' || m.member_id || '-' || g, round((1 + random() * 200)::numeric, 2), 'CNY',
       timestamptz '2026-01-01' + random() * interval '150 days'
  FROM wallet.members m, generate_series(1, 8) g
 WHERE m.merchant_id = :mr AND random() < 0.6;
UPDATE wallet.purchases SET refunded_amount = CASE WHEN random() < 0.5 THEN amount ELSE round(amount / 3, 2) END
 WHERE merchant_id = :mr AND random() < 0.08;
INSERT INTO wallet.refunds (merchant_id, member_id, purchase_id, refund_ref, amount, created_at)
SELECT merchant_id, member_id, purchase_id, 'rr-' || purchase_id, refunded_amount, occurred_at + interval '1 day'
  FROM wallet.purchases WHERE merchant_id = :mr AND refunded_amount > 0;
ANALYZE wallet.members, wallet.purchases, wallet.refunds;
SELECT wallet.create_campaign(:mr, 'random', starts_at => '2026-02-15', ends_at => '2026-03-17') AS rc \gset
SELECT wallet.set_campaign_audience(:rc, 'everyone', 30) AS n \gset
CREATE TEMP TABLE rr AS SELECT * FROM wallet.campaign_report(:rc);
-- the plain computation: each member's group by campaign_group, its revenue by correlated sums
CREATE TEMP TABLE plain AS
SELECT m.member_id, wallet.campaign_group(:rc, m.member_ref) AS grp,
       (SELECT coalesce(sum(p.amount - p.refunded_amount), 0) FROM wallet.purchases p WHERE p.merchant_id = :mr AND p.member_id = m.member_id
           AND p.occurred_at >= '2026-01-16' AND p.occurred_at < '2026-02-15') AS before,
       (SELECT coalesce(sum(p.amount - p.refunded_amount), 0) FROM wallet.purchases p WHERE p.merchant_id = :mr AND p.member_id = m.member_id
           AND p.occurred_at >= '2026-02-15' AND p.occurred_at < '2026-03-17') AS during,
       (SELECT coalesce(sum(p.amount - p.refunded_amount), 0) FROM wallet.purchases p WHERE p.merchant_id = :mr AND p.member_id = m.member_id
           AND p.occurred_at >= '2026-03-17' AND p.occurred_at < '2026-04-16') AS after,
       (SELECT count(*) FROM wallet.purchases p WHERE p.merchant_id = :mr AND p.member_id = m.member_id AND p.refunded_amount < p.amount
           AND p.occurred_at >= '2026-02-15' AND p.occurred_at < '2026-03-17') AS n_during,
       (SELECT count(*) FROM wallet.purchases p WHERE p.merchant_id = :mr AND p.member_id = m.member_id AND p.refunded_amount < p.amount
           AND p.occurred_at >= '2026-03-17' AND p.occurred_at < '2026-04-16') AS n_after,
       (SELECT count(*) FROM wallet.purchases p WHERE p.merchant_id = :mr AND p.member_id = m.member_id AND p.refunded_amount < p.amount
           AND p.occurred_at >= '2026-01-16' AND p.occurred_at < '2026-02-15') AS n_before
  FROM wallet.members m WHERE m.merchant_id = :mr;
SELECT results_eq($$SELECT target_members, control_members, target_buyers, control_buyers, target_revenue, control_revenue FROM rr$$,
                  $$SELECT count(*) FILTER (WHERE grp = 'target'), count(*) FILTER (WHERE grp = 'control'),
                           count(*) FILTER (WHERE grp = 'target' AND n_during > 0), count(*) FILTER (WHERE grp = 'control' AND n_during > 0),
                           sum(during) FILTER (WHERE grp = 'target'), sum(during) FILTER (WHERE grp = 'control') FROM plain$$,
                  'random set: group sizes, buyers and revenue as the plain computation has them');
SELECT results_eq($$SELECT target_arpu_before, target_arpu, target_arpu_after, control_arpu_before, control_arpu, control_arpu_after FROM rr$$,
                  $$SELECT round(avg(before) FILTER (WHERE grp = 'target'), 4), round(avg(during) FILTER (WHERE grp = 'target'), 4),
                           round(avg(after) FILTER (WHERE grp = 'target'), 4), round(avg(before) FILTER (WHERE grp = 'control'), 4),
                           round(avg(during) FILTER (WHERE grp = 'control'), 4), round(avg(after) FILTER (WHERE grp = 'control'), 4) FROM plain$$,
                  'random set: ARPU before, during, after per group');
SELECT results_eq($$SELECT target_arppu_before, target_arppu, target_arppu_after, control_arppu FROM rr$$,
                  $$SELECT round(avg(before) FILTER (WHERE grp = 'target' AND n_before > 0), 4), round(avg(during) FILTER (WHERE grp = 'target' AND n_during > 0), 4),
                           round(avg(after) FILTER (WHERE grp = 'target' AND n_after > 0), 4), round(avg(during) FILTER (WHERE grp = 'control' AND n_during > 0), 4) FROM plain$$,
                  'random set: ARPPU');
SELECT results_eq($$SELECT target_repeat_rate, control_repeat_rate, target_retention, control_retention FROM rr$$,
                  $$SELECT round((count(*) FILTER (WHERE grp = 'target' AND n_during >= 2))::numeric / count(*) FILTER (WHERE grp = 'target' AND n_during > 0), 4),
                           round((count(*) FILTER (WHERE grp = 'control' AND n_during >= 2))::numeric / count(*) FILTER (WHERE grp = 'control' AND n_during > 0), 4),
                           round((count(*) FILTER (WHERE grp = 'target' AND n_during > 0 AND n_after > 0))::numeric / count(*) FILTER (WHERE grp = 'target' AND n_during > 0), 4),
                           round((count(*) FILTER (WHERE grp = 'control' AND n_during > 0 AND n_after > 0))::numeric / count(*) FILTER (WHERE grp = 'control' AND n_during > 0), 4)
                      FROM plain$$,
                  'random set: repeat-purchase rate and retention');
-- the interval: with about 600 control members df is far above 30, where t is 1.960 to 1.963
SELECT ok((SELECT lift_df > 500 FROM rr), 'random set: Welch df is large (so t is within 0.003 of 1.960)');
SELECT ok((SELECT abs((r.lift_ci_high - r.lift_ci_low) / 2 / sqrt(p.vt / p.nt + p.vc / p.nc) - 1.961) < 0.003
                  AND abs((r.lift_ci_high + r.lift_ci_low) / 2 - r.arpu_lift) < 0.0002
                  AND abs(r.arpu_lift - (p.mt - p.mc)) < 0.0001
             FROM rr r, (SELECT avg(during) FILTER (WHERE grp = 'target') AS mt, avg(during) FILTER (WHERE grp = 'control') AS mc,
                                var_samp(during) FILTER (WHERE grp = 'target') AS vt, var_samp(during) FILTER (WHERE grp = 'control') AS vc,
                                count(*) FILTER (WHERE grp = 'target') AS nt, count(*) FILTER (WHERE grp = 'control') AS nc FROM plain) p),
          'random set: the interval is the lift +- 1.96 standard errors of the difference of means (computed here)');
-- RFM: quintile = 1 + floor(5 x (members with a smaller value) / (n - 1)), counted here
CREATE TEMP TABLE plain_rfm AS
WITH net AS (
    SELECT p.member_id, p.occurred_at, p.amount - coalesce((SELECT sum(f.amount) FROM wallet.refunds f WHERE f.purchase_id = p.purchase_id
                                                             AND f.created_at <= '2026-04-01'), 0) AS amount
      FROM wallet.purchases p WHERE p.merchant_id = :mr AND p.occurred_at <= '2026-04-01'
), pm AS (
    SELECT member_id, max(occurred_at) AS last_at, count(*) AS freq, sum(amount) AS money FROM net WHERE amount > 0 GROUP BY member_id
)
SELECT a.member_id, a.freq, a.money,
       LEAST(5, 1 + floor(5.0 * (SELECT count(*) FROM pm b WHERE b.last_at < a.last_at) / ((SELECT count(*) FROM pm) - 1)))::int AS r,
       LEAST(5, 1 + floor(5.0 * (SELECT count(*) FROM pm b WHERE b.freq < a.freq) / ((SELECT count(*) FROM pm) - 1)))::int AS f,
       LEAST(5, 1 + floor(5.0 * (SELECT count(*) FROM pm b WHERE b.money < a.money) / ((SELECT count(*) FROM pm) - 1)))::int AS m
  FROM pm a;
SELECT results_eq($$SELECT member_id, frequency, monetary, r_score, f_score, m_score FROM wallet.rfm($$ || :mr || $$, '2026-04-01') ORDER BY member_id$$,
                  $$SELECT member_id, freq, money, r, f, m FROM plain_rfm ORDER BY member_id$$,
                  'random set: rfm agrees with quintiles counted member by member');
SELECT is_empty($$SELECT 1 FROM wallet.rfm($$ || :mr || $$, '2026-04-01') x
                   WHERE x.segment <> (SELECT g.segment FROM wallet.rfm_segments g WHERE g.r_score = x.r_score AND g.fm_score = ceil((x.f_score + x.m_score) / 2.0))$$,
                'random set: each segment is the table''s for R and ceil((F + M) / 2)');
SELECT cmp_ok((SELECT count(DISTINCT r_score) + count(DISTINCT m_score) FROM wallet.rfm(:mr, '2026-04-01')), '=', 10::bigint,
              'random set: all five recency and monetary quintiles occur');


-- Errors: WL101 with a detail; details are full sentences
SELECT is(error_of($$SELECT wallet.set_campaign_audience(999999999, 'everyone')$$),
          'WL101 campaign 999999999 does not exist / There is no campaign 999999999 of a merchant the caller acts for.', 'set_campaign_audience: WL101 with a detail');
SELECT is(error_of($$SELECT * FROM wallet.campaign_report(999999999)$$),
          'WL101 campaign 999999999 does not exist / There is no campaign 999999999 of a merchant the caller acts for.', 'campaign_report: WL101 with a detail');
SELECT is(error_of(format($$SELECT wallet.set_campaign_audience(%s, 'tiers', 0, program_id => 999999999, min_rank => 1)$$, :gold)),
          'WL214 unknown program / There is no points program 999999999.', 'set_campaign_audience: WL214 says unknown program, as every function');
SELECT is(error_of(format($$SELECT wallet.set_campaign_audience(%s, 'everyone', 0, min_rank => 1)$$, :gold)),
          '22023 arguments do not fit audience everyone / The arguments program_id and min_rank are for audience tiers, segments for audience segment, member_refs for audience list.',
          'set_campaign_audience: the detail is a sentence');
SELECT * FROM finish();
ROLLBACK;

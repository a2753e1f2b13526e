-- pgTAP: campaigns, key rotation and retirement, generation, authentication.
BEGIN;
-- wallet's operators live in schema wallet, like its functions
SET LOCAL search_path = public, wallet;
SELECT plan(108);

SELECT wallet.create_merchant('Keys Coffee') AS m \gset
SELECT wallet.create_campaign(:m, 'spring', 'kc') AS c \gset

-- create_campaign stores what it was given, with key version 1.
SELECT results_eq(
    format('SELECT merchant_id, name, prefix, mac_bits, current_key_version, wallet.campaign_next_serial(campaign_id), max_redemptions_per_code FROM wallet.campaigns WHERE campaign_id = %s', :c),
    format($$VALUES (%s::bigint, 'spring'::text, 'KC'::text, 40, 1, 1::bigint, 1)$$, :m),
    'create_campaign stores the campaign with an upper-cased prefix, 40-bit MAC, key version 1, serial 1');
SELECT results_eq(format('SELECT key_version, retired_at FROM wallet.code_keys WHERE campaign_id = %s', :c),
    $$VALUES (1, NULL::timestamptz)$$, 'a new campaign has key version 1, active');

-- create_campaign validates every argument.
SELECT throws_ok(format('SELECT wallet.create_campaign(%s, %L)', 999999, 'x'), 'WL102', 'merchant 999999 does not exist', 'unknown merchant: WL102');
SELECT throws_ok('SELECT wallet.create_campaign(NULL, ''x'')', '22004', NULL, 'NULL merchant: 22004');
SELECT throws_ok(format('SELECT wallet.create_campaign(%s, %L)', :m, '  '), '22023', 'campaign name must not be blank', 'blank name: 22023');
SELECT throws_ok(format('SELECT wallet.create_campaign(%s, NULL)', :m), '22004', 'campaign name must not be null', 'NULL name: 22004');
SELECT throws_ok(format('SELECT wallet.create_campaign(%s, %L, %L)', :m, 'p1', 'TOOLONG99'), '22023', 'invalid campaign prefix "TOOLONG99"', 'prefix of 9 characters: 22023');
SELECT throws_ok(format('SELECT wallet.create_campaign(%s, %L, %L)', :m, 'p2', 'AB-C'), '22023', 'invalid campaign prefix "AB-C"', 'prefix with a hyphen: 22023');
SELECT throws_ok(format('SELECT wallet.create_campaign(%s, %L, %L)', :m, 'p3', ''), '22023', 'invalid campaign prefix ""', 'empty prefix: 22023');
SELECT throws_ok(format('SELECT wallet.create_campaign(%s, %L, NULL, 31)', :m, 'b1'), '22023', 'mac_bits must be between 32 and 64, not 31', 'mac_bits 31: 22023');
SELECT throws_ok(format('SELECT wallet.create_campaign(%s, %L, NULL, 65)', :m, 'b2'), '22023', 'mac_bits must be between 32 and 64, not 65', 'mac_bits 65: 22023');
SELECT throws_ok(format('SELECT wallet.create_campaign(%s, %L, NULL, NULL)', :m, 'b3'), '22004', 'mac_bits must not be null', 'mac_bits NULL: 22004');
SELECT throws_ok(format('SELECT wallet.create_campaign(%s, %L, starts_at => NULL)', :m, 's1'), '22004', 'starts_at must not be null', 'NULL starts_at: 22004');
SELECT throws_ok(format('SELECT wallet.create_campaign(%s, %L, starts_at => %L, ends_at => %L)', :m, 's2', '2030-01-02', '2030-01-01'),
    '22023', 'ends_at must be after starts_at', 'ends_at before starts_at: 22023');
SELECT throws_ok(format('SELECT wallet.create_campaign(%s, %L, starts_at => %L)', :m, 's3', 'infinity'),
    '22023', 'starts_at must be finite', 'starts_at infinity: 22023');
SELECT throws_ok(format('SELECT wallet.create_campaign(%s, %L, starts_at => %L, ends_at => %L)', :m, 's4', '-infinity', 'infinity'),
    '22023', 'starts_at must be finite', 'starts_at -infinity: 22023');
SELECT throws_ok(format('SELECT wallet.create_campaign(%s, %L, ends_at => %L)', :m, 's5', 'infinity'),
    '22023', 'ends_at must be finite', 'ends_at infinity: 22023 (NULL is no end)');
SELECT throws_ok(format('SELECT wallet.create_campaign(%s, %L, starts_at => %L)', :m, 's6', '4713-01-01 BC'),
    '22023', 'starts_at must be within 100 years of now', 'starts_at in 4713 BC: 22023 (its report''s windows would leave the range of timestamps)');
SELECT throws_ok(format('SELECT wallet.create_campaign(%s, %L, ends_at => now() + interval %L)', :m, 's7', '101 years'),
    '22023', 'ends_at must be at most 100 years from now', 'ends_at over 100 years from now: 22023');
SELECT ok(wallet.create_campaign(:m, 's8', starts_at => now() - interval '99 years', ends_at => now() + interval '99 years') > 0,
    'a campaign from 99 years ago to 99 years ahead is accepted');
SELECT throws_ok(format('SELECT wallet.create_campaign(%s, %L, max_redemptions_per_code => 0)', :m, 'r1'), '22023', 'max_redemptions_per_code must be positive, not 0', 'per-code cap 0: 22023');
SELECT throws_ok(format('SELECT wallet.create_campaign(%s, %L, max_redemptions_per_member => -1)', :m, 'r2'), '22023', 'max_redemptions_per_member must be positive, not -1', 'per-member cap -1: 22023');
SELECT throws_ok(format('SELECT wallet.create_campaign(%s, %L, max_redemptions_total => 0)', :m, 'r3'), '22023', 'max_redemptions_total must be positive, not 0', 'total cap 0: 22023');
SELECT isnt(wallet.create_campaign(:m, 'spring'), :c::bigint, 'a name may repeat (a yearly campaign): a new campaign');
SELECT lives_ok(format('SELECT wallet.create_campaign(%s, %L, max_redemptions_per_code => NULL, mac_bits => 64, prefix => NULL)', :m, 'unlimited'),
    'NULL caps mean unlimited; no prefix; 64-bit MAC');

-- A campaign's prefix and MAC length are part of every code: they cannot change.
SELECT throws_ok(format('UPDATE wallet.campaigns SET prefix = %L WHERE campaign_id = %s', 'XY', :c), 'WL107', format('prefix and mac_bits of campaign %s cannot change', :c), 'prefix is fixed: WL107');
SELECT throws_ok(format('UPDATE wallet.campaigns SET mac_bits = 32 WHERE campaign_id = %s', :c), 'WL107', format('prefix and mac_bits of campaign %s cannot change', :c), 'mac_bits is fixed: WL107');

-- generate_codes: consecutive serials, reserved per call, nothing stored per code.
SELECT results_eq(format('SELECT wallet.code_serial(x) FROM wallet.generate_codes(%s, 5) x', :c),
    'SELECT generate_series(1, 5)::bigint', 'the first call hands out serials 1..5');
SELECT results_eq(format('SELECT wallet.code_serial(x) FROM wallet.generate_codes(%s, 3) x', :c),
    'SELECT generate_series(6, 8)::bigint', 'the next call continues at 6');
SELECT is(wallet.campaign_next_serial(:c), 9::bigint, 'campaign_next_serial moved past the reserved block');
-- A block handed out in a transaction that rolls back is not handed out again
-- (the codes may have reached someone): sequences ignore rollbacks.
SAVEPOINT gen;
SELECT is((SELECT count(*) FROM wallet.generate_codes(:c, 4)), 4::bigint, 'a call of 4 codes in a transaction that then rolls back');
ROLLBACK TO SAVEPOINT gen;
SELECT results_eq(format('SELECT wallet.code_serial(x) FROM wallet.generate_codes(%s, 2) x', :c),
    'SELECT generate_series(13, 14)::bigint', 'after a rolled-back call of 4 codes (9..12) the next call starts at 13');
SELECT is((SELECT count(*) FROM wallet.generate_codes(:c, 0)), 0::bigint, 'n = 0 gives no codes');
SELECT throws_ok('SELECT count(*) FROM wallet.generate_codes(999999, 0)', 'WL101', 'campaign 999999 does not exist',
                 'n = 0 of an unknown campaign: WL101, as for n = 1');
SELECT throws_ok(format('SELECT wallet.generate_codes(%s, -1)', :c), '22023', 'number of codes must not be negative', 'n < 0: 22023');
SELECT throws_ok('SELECT wallet.generate_codes(987654, 1)', 'WL101', 'campaign 987654 does not exist', 'unknown campaign: WL101');
SELECT throws_ok('SELECT wallet.generate_codes(-5, 1)', 'WL101', 'campaign -5 does not exist', 'negative campaign id: WL101');
SELECT is((SELECT count(DISTINCT x) FROM wallet.generate_codes(:c, 1000) x), 1000::bigint, '1000 generated codes are distinct');
SELECT ok((SELECT bool_and(wallet.code_campaign(x) = :c AND wallet.code_key_version(x) = 1 AND wallet.code_prefix(x) = 'KC')
             FROM wallet.generate_codes(:c, 10) x), 'generated codes carry campaign, key version 1 and the prefix');

-- The serial number sequence: one per campaign, owned by wallet.campaigns.campaign_id
-- (dropped with the table), no member of the extension (pg_dump dumps it), up to 2^38 - 1.
SELECT has_sequence('wallet', 'campaign_' || :c || '_serials', 'create_campaign made the sequence wallet.campaign_<id>_serials');
SELECT results_eq(format($$SELECT s.seqmin, s.seqmax, s.seqincrement, s.seqcache, s.seqcycle FROM pg_sequence s WHERE s.seqrelid = 'wallet.campaign_%s_serials'::regclass$$, :c),
    $$VALUES (1::bigint, 274877906943::bigint, 1::bigint, 1::bigint, false)$$, 'it counts from 1 to 2^38 - 1 by one, without cache or cycle');
SELECT results_eq(format($$SELECT d.refobjid = 'wallet.campaigns'::regclass, d.refobjsubid, d.deptype::text FROM pg_depend d
                           WHERE d.classid = 'pg_class'::regclass AND d.objid = 'wallet.campaign_%s_serials'::regclass
                             AND d.refclassid = 'pg_class'::regclass$$, :c),
    $$VALUES (true, 1, 'a')$$, 'it is owned by wallet.campaigns.campaign_id');
SELECT is((SELECT count(*) FROM pg_depend d WHERE d.objid = format('wallet.campaign_%s_serials', :c)::regclass AND d.deptype = 'e'),
    0::bigint, 'it is no member of the extension');

-- Running out: WL106, and a call that cannot be served uses up nothing.
SELECT wallet.create_campaign(:m, 'nearly full') AS full \gset
SELECT setval(format('wallet.campaign_%s_serials', :full), 274877906943 - 9, false) \gset
SELECT throws_ok(format('SELECT wallet.generate_codes(%s, 11)', :full), 'WL106',
    format('campaign %s has not enough serial numbers left for 11 codes', :full), '11 codes with 10 serials left: WL106');
SELECT is(wallet.campaign_next_serial(:full), 274877906943 - 9, 'the refused call gave back the serial it took');
SELECT results_eq(format('SELECT wallet.code_serial(x) FROM wallet.generate_codes(%s, 10) x', :full),
    'SELECT generate_series(274877906943 - 9, 274877906943)', 'the last 10 serials up to 2^38 - 1 are handed out');
SELECT throws_ok(format('SELECT wallet.generate_codes(%s, 1)', :full), 'WL106',
    format('campaign %s has not enough serial numbers left for 1 code', :full), 'then even 1 code: WL106 (not the sequence''s own error)');
SELECT is(wallet.campaign_next_serial(:full), 274877906944, 'campaign_next_serial says 2^38 when none is left');

-- A dropped sequence is reported, not silently recreated (that would repeat serials).
SELECT wallet.create_campaign(:m, 'damaged') AS dmg \gset
SELECT lives_ok(format('DROP SEQUENCE wallet.campaign_%s_serials', :dmg), 'drop a campaign''s sequence by hand');
SELECT throws_ok(format('SELECT wallet.generate_codes(%s, 1)', :dmg), 'WL109', format('campaign %s has no serial number sequence', :dmg),
    'generate_codes without the sequence: WL109');
SELECT throws_ok(format('SELECT wallet.campaign_next_serial(%s)', :dmg), 'WL109', format('campaign %s has no serial number sequence', :dmg),
    'campaign_next_serial without the sequence: WL109');
SELECT throws_ok('SELECT wallet.campaign_next_serial(987654)', 'WL101', 'campaign 987654 does not exist', 'campaign_next_serial of an unknown campaign: WL101');

-- Rotation: new codes use the next version; old codes keep validating.
CREATE TEMP TABLE v1 AS SELECT x AS code FROM wallet.generate_codes(:c, 20) x;
SELECT ok((SELECT bool_and(wallet.code_authentic(code)) FROM v1), 'version-1 codes are authentic');
SELECT is(wallet.rotate_code_key(:c), 2, 'rotate_code_key returns the new version 2');
SELECT is((SELECT current_key_version FROM wallet.campaigns WHERE campaign_id = :c), 2, 'the campaign''s current version is 2');
CREATE TEMP TABLE v2 AS SELECT x AS code FROM wallet.generate_codes(:c, 20) x;
SELECT ok((SELECT bool_and(wallet.code_key_version(code) = 2) FROM v2), 'after rotation new codes carry version 2');
SELECT ok((SELECT bool_and(wallet.code_authentic(code)) FROM v2), 'version-2 codes are authentic');
SELECT ok((SELECT bool_and(wallet.code_authentic(code)) FROM v1), 'version-1 codes still authentic after rotation');
SELECT ok((SELECT bool_and(v1.code <> v2.code) FROM v1, v2), 'the versions'' codes differ');
SELECT is(wallet.rotate_code_key(:c), 3, 'rotating again gives version 3');

-- Retirement: codes of the retired version stop validating (retired_key); others are unaffected.
SELECT lives_ok(format('SELECT wallet.retire_code_key(%s, 1)', :c), 'retire version 1');
SELECT ok((SELECT NOT bool_or(wallet.code_authentic(code)) FROM v1), 'retired version-1 codes are not authentic');
SELECT is((SELECT array_agg(DISTINCT (wallet.parse_code(code::text)).status) FROM v1), ARRAY['retired_key'], 'parse_code says retired_key for them');
SELECT is((SELECT array_agg(DISTINCT wallet.code_status(code)) FROM v1), ARRAY['retired_key'], 'code_status says retired_key for them');
SELECT ok((SELECT bool_and(wallet.code_authentic(code)) FROM v2), 'version-2 codes still authentic');
SELECT is((SELECT array_agg(DISTINCT (wallet.parse_code(code::text)).status) FROM v2), ARRAY['ok'], 'parse_code says ok for them');
SELECT isnt((SELECT retired_at FROM wallet.code_keys WHERE campaign_id = :c AND key_version = 1), NULL, 'retired_at is set');
-- a first retirement time that now() (the same all through this transaction) cannot equal
UPDATE wallet.code_keys SET retired_at = '2020-01-01 00:00+00' WHERE campaign_id = :c AND key_version = 1;
SELECT lives_ok(format('SELECT wallet.retire_code_key(%s, 1)', :c), 'retiring twice is harmless');
SELECT is((SELECT retired_at FROM wallet.code_keys WHERE campaign_id = :c AND key_version = 1), '2020-01-01 00:00+00'::timestamptz, 'and keeps the first retirement time');
SELECT throws_ok(format('SELECT wallet.retire_code_key(%s, 3)', :c), 'WL104', format('key version 3 is the current one of campaign %s', :c), 'the current version cannot be retired: WL104');
SELECT throws_ok(format('SELECT wallet.retire_code_key(%s, 7)', :c), 'WL103', format('campaign %s has no key version 7', :c), 'unknown version: WL103');
SELECT throws_ok('SELECT wallet.retire_code_key(987654, 1)', 'WL101', 'campaign 987654 does not exist', 'retire in unknown campaign: WL101');
SELECT throws_ok('SELECT wallet.rotate_code_key(987654)', 'WL101', 'campaign 987654 does not exist', 'rotate unknown campaign: WL101');
SELECT throws_ok(format('UPDATE wallet.campaigns SET current_key_version = 1 WHERE campaign_id = %s', :c), 'WL107', format('current_key_version of campaign %s cannot go back', :c), 'key version cannot go back: WL107');

-- A code claims the campaign's key version it was signed with: a version that does not exist yet is forged.
SELECT is((wallet.parse_code((SELECT code::text FROM v2 LIMIT 1))).status, 'ok', 'sanity: a version-2 code parses ok');
SELECT is((SELECT count(*) FROM wallet.code_keys WHERE campaign_id = :c), 3::bigint, 'three key rows after two rotations');

-- Deleting key rows (by hand) takes effect at once: codes of a version without a key row are forged.
DELETE FROM wallet.code_keys WHERE campaign_id = :c AND key_version = 2;
SELECT is((SELECT array_agg(DISTINCT (wallet.parse_code(code::text)).status) FROM v2), ARRAY['forged'], 'codes of a version without key row are forged');

-- Unknown campaigns: a structurally valid code of a campaign that does not exist is forged.
SELECT is((wallet.parse_code('0R00-3G6G-QGHK-C0K')).status, 'forged', 'code of a campaign that does not exist: forged');
SELECT is(wallet.code_authentic('0R00-3G6G-QGHK-C0K'), false, 'and not authentic');
SELECT is(wallet.code_status('0R00-3G6G-QGHK-C0K'), 'forged', 'code_status says forged');
SELECT is((SELECT array_agg(DISTINCT wallet.code_status(x)) FROM wallet.generate_codes(:c, 3) x), ARRAY['ok'], 'code_status says ok for good codes');

-- Key rows changed by hand: generate_codes refuses a retired or missing current version.
UPDATE wallet.code_keys SET retired_at = now() WHERE campaign_id = :c AND key_version = 3;
SELECT throws_ok(format('SELECT wallet.generate_codes(%s, 1)', :c), 'WL108', format('the current key version 3 of campaign %s is retired', :c),
    'generate_codes with a retired current version: WL108');
DELETE FROM wallet.code_keys WHERE campaign_id = :c AND key_version = 3;
SELECT throws_ok(format('SELECT wallet.generate_codes(%s, 1)', :c), 'WL103', format('campaign %s has no key row for its current key version 3', :c),
    'generate_codes without a key row for the current version: WL103');
SELECT is(wallet.rotate_code_key(:c), 4, 'rotating repairs it');
SELECT is((SELECT count(*) FROM wallet.generate_codes(:c, 3)), 3::bigint, 'and generation works again');

-- code_authentic and parse_code run in parallel workers (PARALLEL SAFE, cache loaded per worker).
CREATE TABLE pcodes AS SELECT x AS code FROM wallet.generate_codes(:c, 5000) x;
SET LOCAL parallel_setup_cost = 0;
SET LOCAL parallel_tuple_cost = 0;
SET LOCAL min_parallel_table_scan_size = 0;
SET LOCAL max_parallel_workers_per_gather = 2;
SELECT ok((SELECT count(*) FROM (SELECT 1 FROM pg_proc WHERE proname IN ('code_authentic', 'parse_code') AND pronamespace = 'wallet'::regnamespace AND proparallel = 's') s) = 2,
    'code_authentic and parse_code are PARALLEL SAFE');
SELECT is((SELECT count(*) FILTER (WHERE wallet.code_authentic(code) AND (wallet.parse_code(code::text)).status = 'ok') FROM pcodes), 5000::bigint,
    'a parallel scan authenticates all 5000 codes');

-- Key versions are bound to this database's installation id (issue 7): the
-- one row of wallet.installation, kept by pg_dump, never changed.
SELECT is((SELECT count(*) FROM wallet.installation), 1::bigint, 'wallet.installation holds one row');
SELECT is(wallet.installation_id(), (SELECT installation_id FROM wallet.installation), 'wallet.installation_id() returns it');
SELECT is((SELECT count(*) FROM wallet.code_keys WHERE installation_id IS DISTINCT FROM wallet.installation_id()), 0::bigint,
    'every key version made by create_campaign and rotate_code_key is bound to it');
SELECT ok('wallet.installation'::regclass = ANY ((SELECT extconfig FROM pg_extension WHERE extname = 'wallet')::oid[]),
    'pg_dump dumps wallet.installation (pg_extension_config_dump)');
SELECT throws_ok($$UPDATE wallet.installation SET installation_id = gen_random_uuid()$$, 'WL120', 'the installation id of wallet cannot change',
    'UPDATE of the installation id: WL120');
SELECT throws_ok($$UPDATE wallet.installation SET created_at = now()$$, 'WL120', 'the installation id of wallet cannot change',
    'no UPDATE at all: WL120');
SELECT throws_ok($$DELETE FROM wallet.installation$$, 'WL120', 'the installation id of wallet cannot change', 'DELETE: WL120');
SELECT throws_ok($$TRUNCATE wallet.installation CASCADE$$, 'WL120', 'the installation id of wallet cannot change', 'TRUNCATE: WL120');
SELECT throws_ok($$INSERT INTO wallet.installation DEFAULT VALUES$$, 'WL120', 'wallet already has an installation id',
    'a second id once key versions are bound to the first: WL120');
SELECT throws_ok(format('UPDATE wallet.code_keys SET installation_id = NULL WHERE campaign_id = %s', :c), 'WL121',
    format('the key binding of key version 1 of campaign %s cannot change', :c), 'unbinding a key version: WL121');
SELECT is((SELECT count(*) FROM wallet.installation WHERE installation_id = wallet.installation_id()), 1::bigint, 'the id is unchanged');

-- Campaigns are never deleted and their ids never reused (issue 7): deleting
-- one cascaded away its key versions and redemptions, and inserting its id
-- again revived all its codes with no redemption history.
SELECT wallet.create_campaign(:m, 'kept', 'KEPT') AS kept \gset
CREATE TEMP TABLE kept_code AS SELECT x AS code FROM wallet.generate_codes(:kept, 1) x;
SELECT is((wallet.redeem_code((SELECT code::text FROM kept_code), 'alice', 'kept-1')).status, 'ok', 'a code of the campaign is redeemed');
SELECT throws_ok(format('DELETE FROM wallet.campaigns WHERE campaign_id = %s', :kept), 'WL122',
    format('campaign %s cannot be deleted', :kept), 'DELETE of a campaign: WL122');
SELECT throws_ok('TRUNCATE wallet.campaigns CASCADE', 'WL122', 'campaigns cannot be truncated', 'TRUNCATE of the campaigns: WL122');
SELECT is((SELECT count(*) FROM wallet.code_redemptions WHERE campaign_id = :kept), 1::bigint, 'its redemption is still there');
SELECT isnt((wallet.redeem_code((SELECT code::text FROM kept_code), 'alice', 'kept-2')).status, 'ok', 'and the code stays redeemed');
-- Even were the row gone (the owner bypassing the trigger), its id cannot come back.
ALTER TABLE wallet.campaigns DISABLE TRIGGER campaigns_keep;
DELETE FROM wallet.campaigns WHERE campaign_id = :kept;
ALTER TABLE wallet.campaigns ENABLE TRIGGER campaigns_keep;
SELECT wallet.create_campaign(:m, 'later') AS later \gset
SELECT throws_ok(format($$INSERT INTO wallet.campaigns (campaign_id, merchant_id, name, prefix) OVERRIDING SYSTEM VALUE VALUES (%s, %s, 'revived', 'KEPT')$$, :kept, :m),
    'WL123', format('campaign id %s was already handed out', :kept), 'an explicit campaign id already handed out: WL123');
SELECT is((wallet.parse_code((SELECT code::text FROM kept_code))).status, 'forged', 'so the deleted campaign''s code stays dead');
SELECT lives_ok(format($$INSERT INTO wallet.campaigns (campaign_id, merchant_id, name) OVERRIDING SYSTEM VALUE VALUES (%s, %s, 'explicit')$$, :later + 10, :m),
    'an explicit id above every id handed out is accepted');

-- The server has its root key; its settings are superuser-only and never show the key.
SELECT isnt(current_setting('wallet.root_key_file'), '', 'wallet.root_key_file is set on the test cluster');
SELECT is((SELECT count(*) FROM pg_settings WHERE name LIKE 'wallet.root_key%' AND context = 'postmaster'), 2::bigint,
          'wallet.root_key_file and wallet.root_key_command are postmaster-level settings');

SELECT * FROM finish();
ROLLBACK;

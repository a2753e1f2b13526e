-- wallet.marketing_code: test vectors, text and binary round-trips, input
-- errors, accessors, operators and operator classes.
-- The cluster runs with the fixed TEST-ONLY root key of test/root_key.sh
-- and the database gets its TEST-ONLY installation id, so the codes below
-- are the test vectors of docs/code-format.md.
CREATE EXTENSION wallet;
SET search_path = wallet, public;
-- The TEST-ONLY installation id of the vectors (test/root_key.sh): an INSERT
-- replaces the id while no key version is bound to it, as pg_restore does.
INSERT INTO wallet.installation (installation_id) VALUES ('00112233-4455-6677-8899-aabbccddeeff');
SELECT installation_id, wallet.installation_id() = installation_id AS function_agrees FROM wallet.installation;

SELECT wallet.create_merchant('Vector Shop') AS merchant_id \gset

-- Vector 1: campaign 1, serial 1, key version 1, no prefix, 40-bit MAC.
SELECT wallet.create_campaign(:merchant_id, 'vector 1') AS c1;
SELECT code FROM wallet.generate_codes(1, 1) AS code;

-- Vector 2: the largest code of the short class: campaign 2^20 - 1, serial
-- 2^24 - 1, 40-bit MAC: 18 body symbols plus the two check symbols.
ALTER TABLE wallet.campaigns ALTER COLUMN campaign_id RESTART WITH 1048575;
SELECT wallet.create_campaign(:merchant_id, 'vector 2') AS c2;
SELECT setval('wallet.campaign_1048575_serials', 16777215, false);
SELECT code, length(replace(code::text, '-', '')) - 2 AS body_symbols FROM wallet.generate_codes(1048575, 1) AS code;

-- Vector 3: prefix SHOP, 48-bit MAC, key version 2, serial 1000.
ALTER TABLE wallet.campaigns ALTER COLUMN campaign_id RESTART WITH 2;
SELECT wallet.create_campaign(:merchant_id, 'vector 3', 'shop', 48) AS c3;
SELECT wallet.rotate_code_key(2);
SELECT setval('wallet.campaign_2_serials', 1000, false);
SELECT code FROM wallet.generate_codes(2, 1) AS code;

-- Vector 4: every field at its maximum: campaign 2^32 - 1, serial 2^38 - 1,
-- key version 1023, 8-character prefix, 64-bit MAC.
ALTER TABLE wallet.campaigns ALTER COLUMN campaign_id RESTART WITH 4294967295;
SELECT wallet.create_campaign(:merchant_id, 'vector 4', 'ABCDEFGH', 64) AS c4;
INSERT INTO wallet.code_keys (campaign_id, key_version, merchant_id) SELECT 4294967295, v, :merchant_id FROM generate_series(2, 1023) v;
UPDATE wallet.campaigns SET current_key_version = 1023 WHERE campaign_id = 4294967295;
SELECT setval('wallet.campaign_4294967295_serials', 274877906943, false);
SELECT code FROM wallet.generate_codes(4294967295, 1) AS code;
SELECT wallet.generate_codes(4294967295, 1);  -- no serial left
SELECT wallet.campaign_next_serial(4294967295) = 2^38 AS all_handed_out;
SELECT wallet.rotate_code_key(4294967295);    -- no key version left

-- Vector 5: a prefix with the letters O, I and L, 32-bit MAC.
ALTER TABLE wallet.campaigns ALTER COLUMN campaign_id RESTART WITH 3;
SELECT wallet.create_campaign(:merchant_id, 'vector 5', 'OIL9', 32) AS c5;
SELECT setval('wallet.campaign_3_serials', 77, false);
SELECT code FROM wallet.generate_codes(3, 1) AS code;

-- Every vector authenticates, and its fields come back out of the value.
CREATE TABLE vectors (code wallet.marketing_code);
INSERT INTO vectors VALUES ('0400-2P71-0GTW-R01E'), ('ZZZZ-ZZZZ-ZJTP-5KA1-C671'), ('SHOP-040Z-8D1D-PVNP-2WM0-91G0-K'),
    ('ABCDEFGH-1ZZZ-ZZZZ-ZZZZ-ZZYY-SKX2-DPN6-HNHQ-ZY1Z-07'), ('OIL9-0301-6M51-FRNG-0G7X');
SELECT code, code_campaign(code), code_serial(code), code_key_version(code), code_mac_bits(code),
       code_prefix(code), code_authentic(code), (parse_code(code::text)).status
  FROM vectors ORDER BY code;

-- Text input: case, spaces and hyphens do not matter; O reads as 0, I and L as 1.
SELECT 'zzzz zzzz zjtp 5ka1 c671'::wallet.marketing_code = 'ZZZZ-ZZZZ-ZJTP-5KA1-C671' AS spaces_and_case;
SELECT 'O4OO-2P71-OGTW-RO1E'::wallet.marketing_code AS o_reads_as_zero;
SELECT ' 0400 - 2p71 - 0gtw - r01e '::wallet.marketing_code AS hyphens_and_spaces;
SELECT 'SHOP040Z8D1DPVNP2WM091G0K'::wallet.marketing_code AS no_hyphens;
-- The prefix too reads O as 0 and I, L as 1: the same code (equal, authentic) though written as typed.
SELECT c, c = 'OIL9-0301-6M51-FRNG-0G7X' AS same_code, code_authentic(c), code_prefix(c)
  FROM (VALUES ('011-9-0301-6M51-FRNG-0G7X'::wallet.marketing_code), ('oli9 0301 6m51 frng 0g7x')) v(c);

-- Text round-trips: output -> input gives the same value and the same text.
SELECT count(*) AS codes, count(*) FILTER (WHERE c::text::wallet.marketing_code = c AND c::text::wallet.marketing_code::text = c::text) AS round_trips
  FROM (SELECT wallet.generate_codes(1, 200) UNION ALL SELECT wallet.generate_codes(2, 200) UNION ALL SELECT wallet.generate_codes(3, 200)) s(c);

-- Input errors: 22P02 (invalid_text_representation) with a message naming
-- the type and a detail saying what is wrong.
CREATE FUNCTION pg_temp.input_sqlstate(t text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM t::wallet.marketing_code;
    RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
SELECT input, pg_temp.input_sqlstate(input) AS sqlstate FROM (VALUES
    (''),
    ('0400-2P71-0GTW'),
    ('ABCDEFGH-1ZZZ-ZZZZ-ZZZZ-ZZYY-SKX2-DPN6-HNHQ-ZY1Z-07-0'),
    ('0400-2P71-0GTW-R01E!'),
    ('0400-2P_1-0GTW-R01E'),
    ('0400-2P71-0GTW-R*1E'),
    ('0400-2P71-0GTW-R01Eé'),
    ('0400-2P71-0GTX-R01E'),
    ('0400-P271-0GTW-R01E'),
    ('0400-2P71-0GTW-R01F'),
    ('0400-2P71-0GTW-R02C'),
    ('0400-2P71-0GTW-R09='),
    ('0400-U000-0000-001R'),
    ('0000-0000-0003-YG10'),
    ('ABCD-EFGH-J040-0200-0000-0000-Z'),
    ('Z104-8Q00-0000-0004-39'),
    ('0004-0020-0000-0001-1P'),
    ('0400-2000-0000-0030-5Y')) v(input);
SELECT ''::wallet.marketing_code;                                  -- too short
SELECT '0400-2P71-0GTW'::wallet.marketing_code;                    -- too short
SELECT 'ABCDEFGH-1ZZZ-ZZZZ-ZZZZ-ZZYY-SKX2-DPN6-HNHQ-ZY1Z-07-0'::wallet.marketing_code;  -- too long
SELECT '0400-2P71-0GTW-R01E!'::wallet.marketing_code;              -- bad check symbol character
SELECT '0400-2P_1-0GTW-R01E'::wallet.marketing_code;               -- bad symbol
SELECT '0400-2P71-0GTW-R*1E'::wallet.marketing_code;               -- check-only symbol inside
SELECT '0400-2P71-0GTW-R01Eé'::wallet.marketing_code;             -- non-ASCII
SELECT '0400-2P71-0GTX-R01E'::wallet.marketing_code;               -- substitution: check sum mismatch
SELECT '0400-P271-0GTW-R01E'::wallet.marketing_code;               -- transposition: check sum mismatch
SELECT '0400-2P71-0GTW-R01F'::wallet.marketing_code;               -- wrong check symbol
SELECT '0400-2P71-0GTW-R02C'::wallet.marketing_code;               -- check sum right, but not the pair printed: mistyped
SELECT '0400-2P71-0GTW-R09='::wallet.marketing_code;               -- a 0.1.0 check symbol after a 0.2.0 check symbol
SELECT '0400-U000-0000-001R'::wallet.marketing_code;               -- U inside the body
SELECT '0000-0000-0003-YG10'::wallet.marketing_code;               -- header gives an invalid MAC length
SELECT 'ABCD-EFGH-J040-0200-0000-0000-Z'::wallet.marketing_code;   -- prefix longer than 8
SELECT 'Z104-8Q00-0000-0004-39'::wallet.marketing_code;            -- bits beyond the fields
SELECT '0004-0020-0000-0001-1P'::wallet.marketing_code;            -- non-canonical width
SELECT '0400-2000-0000-0030-5Y'::wallet.marketing_code;            -- non-canonical key version flag

-- Texts printed by wallet 0.1.0 (one check symbol, from 37) still read, as
-- the same codes.
SELECT old, old::wallet.marketing_code AS printed_now, old::wallet.marketing_code = new::wallet.marketing_code AS same_code
  FROM (VALUES ('0400-2P71-0GTW-R0=', '0400-2P71-0GTW-R01E'), ('ZZZZ-ZZZZ-ZJTP-5KA1-C66', 'ZZZZ-ZZZZ-ZJTP-5KA1-C671'),
               ('SHOP-040Z-8D1D-PVNP-2WM0-91GS', 'SHOP-040Z-8D1D-PVNP-2WM0-91G0-K'),
               ('ABCDEFGH-1ZZZ-ZZZZ-ZZZZ-ZZYY-SKX2-DPN6-HNHQ-ZY1Z-E', 'ABCDEFGH-1ZZZ-ZZZZ-ZZZZ-ZZYY-SKX2-DPN6-HNHQ-ZY1Z-07'),
               ('oil9 0301 6m51 frng 0g$', 'OIL9-0301-6M51-FRNG-0G7X')) v(old, new);
-- Typos in them are mistyped, as in 0.1.0; a text whose header does not fit
-- the 0.1.0 form (000000000003YGE) is read as a 0.2.0 text, whose check
-- symbols it does not have.
SELECT input, (p).status FROM (SELECT input, wallet.parse_code(input) AS p FROM (VALUES
        ('0400-2P71-0GTX-R0='), ('0400-P271-0GTW-R0='), ('0400-2P71-0GTW-R0*'), ('0400U000000000X'), ('000000000003YGE'),
        ('Z1048Q0000000004C'), ('0004002000000001Z'), ('0400200000000030C')) v(input)) s;

-- parse_code never raises for bad input: it classifies.
SELECT input, (p).status, (p).code
  FROM (SELECT input, wallet.parse_code(input) AS p FROM (VALUES
        ('0400-2P71-0GTW-R01E'), ('0400-2P71-0GTX-R01E'), ('0400-P271-0GTW-R01E'), ('0400-2P_1-0GTW-R01E'),
        (''), ('0004-0020-0000-0001-1P'), ('ABCD-EFGH-J040-0200-0000-0000-Z'),
        ('0400-2P71-DGTW-R01N'),             -- MAC changed, check symbols fixed up: forged
        ('0R00-200X-4AY9-A01P'),             -- right MAC, but campaign 6 does not exist: forged
        ('SH0P-040Z-8D1D-PVNP-2WM0-91G0-K'), -- the prefix read as typed: still the same code
        ('SHOQ-040Z-8F5P-SEZ7-E2G0-91G0-V'), -- right MAC for another prefix: forged
        ('SHOP-020F-MC5S-Z2C0-081G-BY')      -- right MAC, but 32 bits where the campaign has 48: forged
       ) v(input)) s;


-- Binary send/recv: the leading byte is the format version.
SELECT substr(wallet.marketing_code_send('SHOP-040Z-8D1D-PVNP-2WM0-91G0-K'), 1, 1) AS format_version,
       length(wallet.marketing_code_send('SHOP-040Z-8D1D-PVNP-2WM0-91G0-K')) AS bytes;
-- Binary round-trip through COPY (FORMAT binary), via a file in the server's data directory.
CREATE TABLE copy_src (id int, code wallet.marketing_code);
INSERT INTO copy_src SELECT row_number() OVER (), c FROM (SELECT code FROM vectors UNION ALL SELECT wallet.generate_codes(2, 50)) s(c);
SELECT current_setting('data_directory') || '/wallet_marketing_code_regress.bin' AS copy_file \gset
COPY copy_src TO :'copy_file' (FORMAT binary);
CREATE TABLE copy_dst (LIKE copy_src);
COPY copy_dst FROM :'copy_file' (FORMAT binary);
SELECT count(*) AS rows, count(*) FILTER (WHERE d.code = s.code AND d.code::text = s.code::text) AS identical
  FROM copy_src s JOIN copy_dst d USING (id);

-- Operators: = <> < <= > >= agree with wallet.marketing_code_cmp; order is campaign, then serial.
SELECT a.code AS a, b.code AS b, a.code = b.code AS eq, a.code <> b.code AS ne, a.code < b.code AS lt,
       a.code <= b.code AS le, a.code > b.code AS gt, a.code >= b.code AS ge,
       wallet.marketing_code_cmp(a.code, b.code) AS cmp
  FROM (SELECT code FROM vectors WHERE code_campaign(code) IN (1, 2)) a,
       (SELECT code FROM vectors WHERE code_campaign(code) IN (1, 2)) b
 ORDER BY a.code, b.code;
SELECT code_campaign(code), code_serial(code) FROM vectors ORDER BY code DESC;

-- Operator metadata: commutators, negators, selectivity estimators.
SELECT oprname, oprcom::regoperator, oprnegate::regoperator, oprrest, oprjoin, oprcanhash, oprcanmerge
  FROM pg_operator WHERE oprleft = 'wallet.marketing_code'::regtype ORDER BY oprname;

-- Operator classes: btree and hash, both valid and default.
SELECT am.amname, opc.opcname, opc.opcdefault, amvalidate(opc.oid)
  FROM pg_opclass opc JOIN pg_am am ON am.oid = opc.opcmethod
 WHERE opc.opcintype = 'wallet.marketing_code'::regtype ORDER BY am.amname;

-- A unique btree index refuses a second copy of a code, however it is written.
CREATE TABLE issued (code wallet.marketing_code PRIMARY KEY);
INSERT INTO issued SELECT wallet.generate_codes(3, 100);
INSERT INTO issued VALUES ('OIL9-0301-6M51-FRNG-0G7X');
INSERT INTO issued VALUES ('011-9-0301-6M51-FRNG-0G7X');
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT * FROM issued WHERE code = 'OIL9-0301-6M51-FRNG-0G7X';
SELECT * FROM issued WHERE code = 'oil9 0301 6m51 frng 0g7x';
RESET enable_seqscan;

-- Hash: consistent with = (equal codes written differently hash alike), usable in hash joins and hash indexes.
SELECT wallet.marketing_code_hash('OIL9-0301-6M51-FRNG-0G7X') = wallet.marketing_code_hash('0119-0301-6M51-FRNG-0G7X') AS hash_consistent,
       wallet.marketing_code_hash_extended('OIL9-0301-6M51-FRNG-0G7X', 7) = wallet.marketing_code_hash_extended('0IL9-0301-6M51-FRNG-0G7X', 7) AS hash_extended_consistent;
CREATE INDEX issued_hash ON issued USING hash (code);
SET enable_seqscan = off;
SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF) SELECT * FROM issued WHERE code = 'OIL9-0301-6M51-FRNG-0G7X';
SELECT count(*) FROM issued WHERE code = 'OIL9-0301-6M51-FRNG-0G7X';
RESET enable_seqscan;
RESET enable_bitmapscan;
SET enable_mergejoin = off;
SET enable_nestloop = off;
EXPLAIN (COSTS OFF) SELECT count(*) FROM issued i JOIN copy_src s ON s.code = i.code;
SELECT count(*) FROM issued i JOIN (SELECT wallet.generate_codes(3, 0) UNION ALL SELECT code FROM issued) s(code) ON s.code = i.code;
RESET enable_mergejoin;
RESET enable_nestloop;
SELECT count(DISTINCT code) AS distinct_codes FROM (SELECT code FROM issued UNION ALL SELECT code FROM issued) s;

-- Casts to and from text.
SELECT castsource::regtype, casttarget::regtype, castcontext, castmethod
  FROM pg_cast WHERE 'wallet.marketing_code'::regtype IN (castsource, casttarget) ORDER BY 1, 2;
SELECT CAST('SHOP-040Z-8D1D-PVNP-2WM0-91G0-K'::text AS wallet.marketing_code) AS from_text,
       CAST('SHOP-040Z-8D1D-PVNP-2WM0-91G0-K'::wallet.marketing_code AS text) AS to_text;

DROP EXTENSION wallet CASCADE;

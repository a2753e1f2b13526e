-- forge(c text): a forgery of code c, for tests: two body symbols changed
-- until the text is well formed with a right check symbol but a wrong MAC,
-- still of c's campaign (parse_code is the oracle; the search order is fixed,
-- and one in a few dozen candidates passes the check symbol).
-- Included by psql with the variable forge_schema naming the schema: pg_temp
-- in a pgTAP file (\set forge_schema pg_temp, then \ir ../forge.sql),
-- public for the sessions of a shell test (forge_function of test/lib.sh).
CREATE FUNCTION :"forge_schema".forge(c text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    alphabet constant text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    t text;
BEGIN
    FOR i IN REVERSE length(c) - 1 .. 1 LOOP
        CONTINUE WHEN substr(c, i, 1) = '-';
        FOR j IN REVERSE i - 1 .. 1 LOOP
            CONTINUE WHEN substr(c, j, 1) = '-';
            FOR a IN 1 .. 32 LOOP
                FOR b IN 1 .. 32 LOOP
                    t := overlay(overlay(c PLACING substr(alphabet, a, 1) FROM i FOR 1)
                                 PLACING substr(alphabet, b, 1) FROM j FOR 1);
                    -- forged, and still of the same campaign (a code's MAC depends on
                    -- the random installation id, so the search may cross campaigns)
                    IF (SELECT p.status = 'forged' AND wallet.code_campaign(p.code) = wallet.code_campaign(c::wallet.marketing_code)
                          FROM wallet.parse_code(t) p) THEN
                        RETURN t;
                    END IF;
                END LOOP;
            END LOOP;
        END LOOP;
    END LOOP;
    RAISE EXCEPTION 'no forgery found for %', c;
END
$$;

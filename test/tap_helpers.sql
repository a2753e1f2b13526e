-- Helpers shared by the pgTAP files (test/tap/*.sql), installed by
-- test/run-tests.sh in the database they run in, beside pgTAP.

-- The error a statement raises, as 'SQLSTATE message / detail' (or
-- '(no detail)'), or 'no error': so that a test asserts the whole error a
-- caller gets, detail included (pgTAP's throws_ok checks code and message).
CREATE FUNCTION public.error_of(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; msg text; det text;
BEGIN
    EXECUTE sql;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
    RETURN st || ' ' || msg || ' / ' || coalesce(nullif(det, ''), '(no detail)');
END
$$;

-- The whole chain: the install script, the C library, libsodium.
CREATE EXTENSION wallet;

-- libsodium's version depends on the machine; check its shape, then mask it.
SELECT wallet.version() ~ '^wallet [0-9]+\.[0-9]+\.[0-9]+ \(libsodium [0-9]+\.[0-9]+\.[0-9]+\)$' AS version_well_formed;
SELECT regexp_replace(wallet.version(), 'libsodium [0-9.]+', 'libsodium X.Y.Z') AS version;
SELECT extversion FROM pg_extension WHERE extname = 'wallet';

-- The schema exists and holds what the extension made.
SELECT nspname FROM pg_namespace WHERE nspname = 'wallet';

-- A merchant: the owner of every campaign and program.
SELECT wallet.create_merchant('Demo Coffee') AS merchant_id;
SELECT wallet.create_merchant('Demo Coffee');
SELECT wallet.create_merchant(' ');

-- DROP EXTENSION leaves nothing behind: no schema, no objects, no types.
DROP EXTENSION wallet;
SELECT count(*) AS wallet_schemas FROM pg_namespace WHERE nspname = 'wallet';
SELECT count(*) AS wallet_functions FROM pg_proc WHERE proname = 'version' AND pronamespace::regnamespace::text = 'wallet';
SELECT count(*) AS wallet_types FROM pg_type WHERE typname IN ('marketing_code', 'points_ledger');
SELECT count(*) AS wallet_tables FROM pg_class WHERE relname = 'merchants' AND relnamespace::regnamespace::text = 'wallet';

-- A second install after the drop works (nothing left half-dropped).
CREATE EXTENSION wallet;
SELECT count(*) FROM wallet.merchants;
DROP EXTENSION wallet;

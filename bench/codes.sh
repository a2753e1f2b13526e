#!/usr/bin/env bash
# Benchmark of marketing codes (not a test): one run on a throwaway cluster,
# printing rows/s and the ratios against baselines measured in the same run.
#
#   validation: wallet.code_authentic over N codes, vs pgcrypto hmac(..., 'sha256')
#               over N 24-byte messages, vs a PL/pgSQL implementation of the
#               same validation (pgcrypto HMAC, table lookups) over N/20 codes
#   generation: wallet.generate_codes, N codes
#   storing:    N issued codes into a table with a unique index, vs N random
#               16-byte bytea values into a table with a unique index
#
# Single-core figures (max_parallel_workers_per_gather = 0), like for like.
# Usage: bench/codes.sh [N]   (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
test/deps.sh >/dev/null
. test/cluster.sh
. test/root_key.sh
BENCH_PORT=${BENCH_PORT:-55471}
TMPD=$(mktemp -d /tmp/wallet-bench-codes.XXXXXX)
chmod 755 "$TMPD"
DATA="$TMPD/data"
trap 'cluster_stop "$DATA"; rm -rf "$TMPD"' EXIT

cluster_install >/dev/null
root_key_test "$TMPD/root.key"   # the public TEST-ONLY key: the PL/pgSQL reference needs the code key
cluster_start "$DATA" "$BENCH_PORT" -c shared_preload_libraries=wallet -c wallet.root_key_file="$TMPD/root.key" \
    -c max_parallel_workers_per_gather=0 -c shared_buffers=256MB -c work_mem=64MB -c max_wal_size=4GB \
    -c synchronous_commit=off -c checkpoint_timeout=30min
export PGHOST="$DATA" PGPORT="$BENCH_PORT" PGUSER=postgres
q() { psql -X -qAt -v ON_ERROR_STOP=1 -d bench "$@"; }
# seconds (3 decimals) that one SQL statement takes, measured by the server
secs() { q -c '\timing on' -c "$1" | sed -n -E 's/^Time: ([0-9.]+) ms.*/\1/p' | tail -n 1 | awk '{printf "%.3f", $1 / 1000}'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

psql -X -qAt -d postgres -c "CREATE DATABASE bench" >/dev/null
q -c "CREATE EXTENSION wallet" -c "CREATE EXTENSION pgcrypto"
CID=$(q -c "SELECT wallet.create_campaign(wallet.create_merchant('bench'), 'bench', 'BENCH')")
# the campaign's code key, bound to this database's installation id (docs/code-format.md)
INST=$(q -c "SELECT replace(wallet.installation_id()::text, '-', '')")
KEY=$(python3 -c "import sys; sys.path.insert(0, 'docs'); from code_reference import code_key; print(code_key(bytes.fromhex('$WALLET_TEST_ROOT_KEY'), bytes.fromhex('$INST'), $CID, 1).hex())")
echo "wallet: $(q -c 'SELECT wallet.version()'), $N rows per measurement, campaign $CID"

# --- fixtures -------------------------------------------------------------
q <<SQL
CREATE TABLE codes AS SELECT c FROM (SELECT wallet.generate_codes($CID, $N)) s(c);
CREATE TABLE messages AS SELECT substr(wallet.marketing_code_send(c), 1, 24) AS m FROM codes;  -- 24 bytes, as long as a MAC message
CREATE TABLE bytes16 AS SELECT gen_random_bytes(16) AS b FROM generate_series(1, $N);
CREATE TABLE code_key (campaign_id bigint, key_version int, key bytea, PRIMARY KEY (campaign_id, key_version));
INSERT INTO code_key VALUES ($CID, 1, '\\x$KEY');
VACUUM ANALYZE codes; VACUUM ANALYZE messages; VACUUM ANALYZE bytes16;

-- The same validation as wallet.code_authentic, in PL/pgSQL on pgcrypto:
-- fields from the binary form, campaign and key rows from the tables, the
-- 24-byte MAC message, HMAC-SHA-256, truncation, comparison.
CREATE FUNCTION plpgsql_authentic(c wallet.marketing_code) RETURNS boolean LANGUAGE plpgsql STABLE AS \$\$
DECLARE
    b bytea := wallet.marketing_code_send(c);
    camp bigint := ('x' || encode(substr(b, 2, 4), 'hex'))::bit(32)::bigint;
    ser bigint := ('x' || encode(substr(b, 6, 8), 'hex'))::bit(64)::bigint;
    ver int := ('x' || encode(substr(b, 14, 2), 'hex'))::bit(16)::int;
    m int := get_byte(b, 15);
    mac bit(64) := ('x' || encode(substr(b, 17, 8), 'hex'))::bit(64);
    pf text := translate(convert_from(substr(b, 26), 'SQL_ASCII'), 'OIL', '011');
    cmp record;
    k bytea;
    msg bytea;
BEGIN
    SELECT mac_bits, prefix INTO cmp FROM wallet.campaigns WHERE campaign_id = camp;
    IF NOT FOUND OR cmp.mac_bits <> m OR translate(coalesce(cmp.prefix, ''), 'OIL', '011') <> pf THEN
        RETURN false;
    END IF;
    SELECT ck.key INTO k FROM code_key ck JOIN wallet.code_keys w USING (campaign_id, key_version)
     WHERE ck.campaign_id = camp AND ck.key_version = ver AND w.retired_at IS NULL;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    msg := '\\x01'::bytea || set_byte('\\x00'::bytea, 0, m) || convert_to(pf, 'SQL_ASCII')
        || substr('\\x0000000000000000'::bytea, 1, 8 - length(pf))
        || int4send(camp::int) || int8send(ser) || int2send(ver::smallint);
    RETURN (('x' || encode(substr(hmac(msg, k, 'sha256'), 1, 8), 'hex'))::bit(64) >> (64 - m)) = mac;
END
\$\$;
SQL
# the reference must agree with code_authentic before it is timed
agree=$(q -c "SELECT count(*) FILTER (WHERE plpgsql_authentic(c) = wallet.code_authentic(c)) FROM (SELECT c FROM codes LIMIT 1000) s")
[ "$agree" = 1000 ] || { echo "PL/pgSQL reference disagrees with code_authentic ($agree/1000)" >&2; exit 1; }

# --- validation ---------------------------------------------------------------
q -c "SELECT count(*) FROM codes" >/dev/null   # warm the cache and the backend
T_AUTH=$(secs "SELECT count(*) FILTER (WHERE wallet.code_authentic(c)) FROM codes")
T_HMAC=$(secs "SELECT count(hmac(m, '\\x$KEY'::bytea, 'sha256')) FROM messages")
NPL=$((N / 20))
T_PL=$(secs "SELECT count(*) FILTER (WHERE plpgsql_authentic(c)) FROM (SELECT c FROM codes LIMIT $NPL) s")
R_AUTH=$(rate "$N" "$T_AUTH"); R_HMAC=$(rate "$N" "$T_HMAC"); R_PL=$(rate "$NPL" "$T_PL")

# --- generation -----------------------------------------------------------------
T_GEN=$(secs "SELECT count(c) FROM (SELECT wallet.generate_codes($CID, $N)) s(c)")
R_GEN=$(rate "$N" "$T_GEN")

# --- storing ----------------------------------------------------------------------
q -c "CREATE TABLE issued (code wallet.marketing_code PRIMARY KEY)" -c "CREATE TABLE issued_shuffled (code wallet.marketing_code PRIMARY KEY)" \
  -c "CREATE TABLE stored_bytes (b bytea PRIMARY KEY)" -c "CREATE TABLE codes_shuffled AS SELECT c FROM codes ORDER BY random()" -c "CHECKPOINT"
T_STORE=$(secs "INSERT INTO issued SELECT c FROM codes")
q -c "CHECKPOINT"
T_BYTES=$(secs "INSERT INTO stored_bytes SELECT b FROM bytes16")
q -c "CHECKPOINT"
T_STORE_RND=$(secs "INSERT INTO issued_shuffled SELECT c FROM codes_shuffled")

cat <<OUT

validation ($N rows each; PL/pgSQL over $NPL)
  wallet.code_authentic            $(printf '%12s' "$R_AUTH") rows/s   ($T_AUTH s)
  pgcrypto hmac(.., 'sha256')      $(printf '%12s' "$R_HMAC") rows/s   ($T_HMAC s)
  PL/pgSQL reference               $(printf '%12s' "$R_PL") rows/s   ($T_PL s)
  code_authentic / pgcrypto hmac   $(ratio "$R_AUTH" "$R_HMAC")x   (target >= 1.5x)
  code_authentic / PL/pgSQL        $(ratio "$R_AUTH" "$R_PL")x   (target >= 20x)
generation
  wallet.generate_codes            $(printf '%12s' "$R_GEN") codes/s  ($T_GEN s)   (target >= 1000000/s)
storing ($N rows into a table with a unique index)
  issued codes (serial order)      $T_STORE s
  random 16-byte bytea             $T_BYTES s
  codes / bytea time               $(ratio "$T_STORE" "$T_BYTES")x   (target <= 1.2x)
  issued codes (random order)      $T_STORE_RND s   ($(ratio "$T_STORE_RND" "$T_BYTES")x the bytea time)
OUT

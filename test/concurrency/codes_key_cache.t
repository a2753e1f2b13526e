#!/usr/bin/env bash
# code_authentic / parse_code read no table per call: each backend caches
# campaigns and key versions.  Changes committed by another session must
# reach that cache at once: a new key version, a retirement, a new campaign;
# uncommitted changes must not.
set -uo pipefail
DB=conc_codes_cache
TMP=$(mktemp -d /tmp/wallet-codes-cache.XXXXXX)
. "$(dirname "$0")/../lib.sh"
trap 'sess_close a 2>/dev/null; sess_close b 2>/dev/null; [ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"' EXIT
plan 10

dropdb --if-exists "$DB" >/dev/null 2>&1; createdb "$DB" || exit 1
q -c "CREATE EXTENSION wallet" || exit 1
M=$(q -c "SELECT wallet.create_merchant('cache')")
CID=$(q -c "SELECT wallet.create_campaign($M, 'cached')")
V1=$(q -c "SELECT wallet.generate_codes($CID, 1)")

sess_open a     # the validating session, whose cache is under test
sess_open b     # the administrating session
is "$(sess_run a "SELECT wallet.code_authentic('$V1')")" t "session A validates a version-1 code (and caches the campaign)"

sess_run b "SELECT wallet.rotate_code_key($CID)" >/dev/null
V2=$(sess_run b "SELECT wallet.generate_codes($CID, 1)")
is "$(sess_run a "SELECT wallet.code_authentic('$V2')")" t "A accepts a code of key version 2, made after B rotated the key"

sess_run b "SELECT wallet.retire_code_key($CID, 1)" >/dev/null
is "$(sess_run a "SELECT status FROM wallet.parse_code('$V1')")" retired_key "A sees B's retirement of version 1 at once"

sess_run b "SELECT wallet.rotate_code_key($CID)" >/dev/null
sess_run b "BEGIN; SELECT wallet.retire_code_key($CID, 2);" >/dev/null
is "$(sess_run a "SELECT wallet.code_authentic('$V2')")" t "an uncommitted retirement in B does not affect A"
is "$(sess_run b "SELECT wallet.code_authentic('$V2')")" f "but B itself already sees it in its transaction"
sess_run b "COMMIT" >/dev/null
is "$(sess_run a "SELECT wallet.code_authentic('$V2')")" f "once B commits, A rejects version-2 codes"

# A campaign A has looked up before it existed (cached as unknown).
X=$(sess_run b "BEGIN; SELECT wallet.create_campaign($M, 'later');" | tail -n 1)
C=$(sess_run b "SELECT wallet.generate_codes($X, 1)")
sess_run b "ROLLBACK" >/dev/null
is "$(sess_run a "SELECT status FROM wallet.parse_code('$C')")" forged "a code of a campaign that does not exist is forged"
sess_run b "INSERT INTO wallet.campaigns (campaign_id, merchant_id, name) OVERRIDING SYSTEM VALUE VALUES ($X, $M, 'later');
            INSERT INTO wallet.code_keys (campaign_id, key_version, merchant_id) VALUES ($X, 1, $M);" >/dev/null
is "$(sess_run a "SELECT status FROM wallet.parse_code('$C')")" ok "once B creates that campaign, A accepts the code"

# A retirement rolled back leaves the code valid everywhere.
sess_run b "BEGIN; SELECT wallet.rotate_code_key($X); SELECT wallet.retire_code_key($X, 1); ROLLBACK;" >/dev/null
is "$(sess_run b "SELECT wallet.code_authentic('$C')")" t "after a rolled-back retirement B accepts the code again"
is "$(sess_run a "SELECT wallet.code_authentic('$C')")" t "and so does A"

sess_close a; sess_close b
dropdb "$DB" >/dev/null 2>&1
finish

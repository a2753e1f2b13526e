#!/usr/bin/env bash
# Concurrent wallet.generate_codes on one campaign: generators released
# together behind a barrier hand out disjoint serials, with no gap, and every
# code is distinct and authentic.
set -uo pipefail
DB=conc_codes_generate
TMP=$(mktemp -d /tmp/wallet-codes-gen.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
. "$(dirname "$0")/codes_lib.sh"

WORKERS=4 CALLS=5 PER_CALL=10000
TOTAL=$((WORKERS * CALLS * PER_CALL))
echo "1..8"

dropdb --if-exists "$DB" >/dev/null 2>&1; createdb "$DB" || exit 1
q -c "CREATE EXTENSION wallet" || exit 1
CID=$(q -c "SELECT wallet.create_campaign(wallet.create_merchant('gen'), 'race', 'GEN')")
q -c "CREATE TABLE out (worker int, call int, code wallet.marketing_code)"

barrier_hold || exit 1
for w in $(seq 1 "$WORKERS"); do
    {
        args=(-c "$BARRIER_SQL")
        for c in $(seq 1 "$CALLS"); do
            # each call is its own transaction, so the workers' calls interleave
            args+=(-c "INSERT INTO out SELECT $w, $c, x FROM wallet.generate_codes($CID, $PER_CALL) x")
        done
        timeout 120 psql -X -qAt -v ON_ERROR_STOP=1 -d "$DB" "${args[@]}" > "$TMP/w$w.out" 2>&1
        echo $? > "$TMP/w$w.rc"
    } &
done
barrier_wait_for "$WORKERS"; ok $? "all $WORKERS generators wait at the barrier"
barrier_release
wait

fails=0
for w in $(seq 1 "$WORKERS"); do [ "$(cat "$TMP/w$w.rc")" = 0 ] || { fails=$((fails + 1)); sed 's/^/# /' "$TMP/w$w.out"; }; done
is "$fails" 0 "every generator finished without error"
is "$(q -c "SELECT count(*) FROM out")" "$TOTAL" "$TOTAL codes emitted in all"
is "$(q -c "SELECT count(DISTINCT wallet.code_serial(code)) FROM out")" "$TOTAL" "no serial was emitted twice"
is "$(q -c "SELECT min(wallet.code_serial(code)) || '..' || max(wallet.code_serial(code)) FROM out")" "1..$TOTAL" "the serials are exactly 1..$TOTAL (no gap, no overlap)"
is "$(q -c "SELECT count(DISTINCT code) FROM out")" "$TOTAL" "all codes are distinct"
is "$(q -c "SELECT count(*) FROM (SELECT worker, call FROM out GROUP BY worker, call HAVING max(wallet.code_serial(code)) - min(wallet.code_serial(code)) = $PER_CALL - 1) s")" \
   "$((WORKERS * CALLS))" "each call got one contiguous block of $PER_CALL serials"
is "$(q -c "SELECT count(*) FILTER (WHERE NOT wallet.code_authentic(code)) || '/' || (SELECT next_serial FROM wallet.campaigns WHERE campaign_id = $CID) FROM out")" \
   "0/$((TOTAL + 1))" "every code is authentic and next_serial is past the last block"

dropdb "$DB" >/dev/null 2>&1
exit $((T_FAILED > 0))

#!/usr/bin/env bash
# The referral trigger's gate (wallet_internal.merchant_refers, a per-session
# cache of which merchants run a referral program), printing TAP:
#   1. a session that cached "no referral program" for a merchant sees the
#      program another session then made from its next transaction on: the
#      referee's first purchase, recorded in that session, rewards the
#      referral;
#   2. a program made in the session itself counts at once, in the same
#      transaction;
#   3. a merchant without any referral program: a purchase fires no
#      referral trigger, and nothing is rewarded.
#
# Needs PGHOST/PGPORT/PGUSER of a running cluster with wallet installable.
set -uo pipefail

DB=conc_referral_gate
TMP=$(mktemp -d /tmp/referral_gate.XXXXXX)
chmod 755 "$TMP"
trap 'sess_close a; rm -rf "$TMP"' EXIT

. "$(dirname "$0")/../lib.sh"

plan 8

timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
if ! timeout 30 createdb "$DB"; then echo "Bail out! createdb $DB failed"; exit 1; fi

setup_out=$(q 2>&1 <<'SQL'
CREATE EXTENSION wallet;
SELECT wallet.create_merchant('gate one') AS m \gset
SELECT wallet.create_program(:m, 'gate points') AS p \gset
SELECT 1 FROM wallet.set_program_earning(:p, 'CNY');
SELECT wallet.create_campaign(:m, 'gate campaign') AS c \gset
SELECT wallet.create_merchant('gate two') AS m2 \gset
SELECT wallet.create_program(:m2, 'gate points two') AS p2 \gset
SELECT wallet.create_campaign(:m2, 'gate campaign two') AS c2 \gset
\echo m :m
\echo p :p
\echo c :c
\echo m2 :m2
\echo p2 :p2
\echo c2 :c2
SQL
)
val() { printf '%s\n' "$setup_out" | sed -n "s/^$1 //p"; }
M=$(val m); P=$(val p); C=$(val c); M2=$(val m2); P2=$(val p2); C2=$(val c2)
if [ -z "$M" ] || [ -z "$C" ] || [ -z "$M2" ] || [ -z "$C2" ]; then echo "Bail out! setup failed: $setup_out"; exit 1; fi

# 1. session a caches "no referral program" for merchant one
sess_open a
check "a session without referral programs caches false" \
      "$(sess_run a "SELECT wallet_internal.merchant_refers($M)")" f
sess_run a "SELECT points FROM wallet.record_purchase($M, 'someone', 'order-0', 10, 'CNY')" >/dev/null
# another session makes the program and a referral
q -c "SELECT 1 FROM wallet.set_referral_program($C, $P, 100, 50, 30)" >/dev/null
check "another session refers a member" \
      "$(q -c "SELECT r.status FROM wallet.refer($M, 'referrer', 'referee', 'link', $C) r")" pending
check "session a sees the new program from its next transaction on" \
      "$(sess_run a "SELECT wallet_internal.merchant_refers($M)")" t
sess_run a "SELECT points FROM wallet.record_purchase($M, 'referee', 'order-1', 10, 'CNY')" >/dev/null
check "the referee's purchase recorded in session a rewards the referral" \
      "$(q -c "SELECT r.status || ' ' || (r.purchase_id IS NOT NULL) FROM wallet.referrals r WHERE r.campaign_id = $C")" "rewarded true"
check "both sides got their points" \
      "$(q -c "SELECT string_agg(e.points::text, ',' ORDER BY e.points) FROM wallet.entries e WHERE e.reference LIKE 'referral %'")" "50,100"

# 2. a program made in the session counts at once
check "in one transaction: false, then the program, then true" \
      "$(sess_run a "BEGIN; SELECT wallet_internal.merchant_refers($M2); SELECT 1 FROM wallet.set_referral_program($C2, $P2, 10, 5, 30); SELECT wallet_internal.merchant_refers($M2); COMMIT" | tr '\n' ' ')" "f 1 t "

# 3. a merchant without referral programs
q -c "SELECT wallet.create_merchant('gate three')" >/dev/null
M3=$(q -c "SELECT merchant_id FROM wallet.merchants WHERE name = 'gate three'")
q -c "SELECT 1 FROM wallet.set_program_earning(wallet.create_program($M3, 'gate points three'), 'EUR')" >/dev/null
check "a merchant without referral programs: the gate is shut" "$(q -c "SELECT wallet_internal.merchant_refers($M3)")" f
check "its purchases are recorded all the same" \
      "$(q -c "SELECT (wallet.record_purchase($M3, 'x', 'order-3', 20, 'EUR')).purchase_id IS NOT NULL")" t

sess_close a
finish

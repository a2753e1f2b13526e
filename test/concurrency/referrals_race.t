#!/usr/bin/env bash
# Races of referrals and sharing (issue 11), printing TAP.  Every burst
# starts behind the advisory-lock barrier of test/lib.sh, all sessions at
# once:
#   1. 32 referrers refer the same referee: exactly one referral is taken,
#      31 are refused (already_referred), and the referrers' cap counters
#      hold exactly the one taken (the losers' bumps undone);
#   2. one referrer with a cap of 5 a month refers 32 referees: exactly 5
#      pending, 27 refused (referrer_cap);
#   3. one member shares a campaign 32 times with a cap of 3 a day: exactly 3
#      rewarded, 3 rewards' points, 32 shares and 32 events;
#   4. 16 sessions send one share with the same idempotency key: one share,
#      one reward, all 16 get it back;
#   5. 16 checkouts of the same referee at once: the referral is rewarded
#      once (100 + 50 points, two entries);
#   6. wallet.run_maintenance expires a pending referral past its window.
#
# Needs PGHOST/PGPORT/PGUSER of a running cluster with wallet installable.
set -uo pipefail

DB=conc_referrals
TMP=$(mktemp -d /tmp/referrals_race.XXXXXX)
chmod 755 "$TMP"
trap 'rm -rf "$TMP"' EXIT

. "$(dirname "$0")/../lib.sh"
Q_TIMEOUT=60

plan 21

timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
if ! timeout 30 createdb "$DB"; then echo "Bail out! createdb $DB failed"; exit 1; fi

setup_out=$(q 2>&1 <<'SQL'
CREATE EXTENSION wallet;
SELECT wallet.create_merchant('race referrals') AS m \gset
SELECT wallet.create_program(:m, 'race points') AS p \gset
SELECT wallet.create_campaign(:m, 'race campaign') AS c \gset
SELECT 1 FROM wallet.set_referral_program(:c, :p, 100, 50, 30, max_per_referrer => 5, cap_period => 'month');
SELECT 1 FROM wallet.set_share_reward(:c, :p, 7, max_per_member => 100, max_per_day => 3);
\echo m :m
\echo c :c
\echo p :p
SQL
)
M=$(printf '%s\n' "$setup_out" | sed -n 's/^m //p')
C=$(printf '%s\n' "$setup_out" | sed -n 's/^c //p')
P=$(printf '%s\n' "$setup_out" | sed -n 's/^p //p')
if [ -z "$M" ] || [ -z "$C" ] || [ -z "$P" ]; then echo "Bail out! setup failed: $setup_out"; exit 1; fi

verdict() { echo "SELECT r.status || coalesce(':' || r.reason, '') FROM wallet.refer($M, $1, $2, 'link', $C) r"; }

# 1. one referee, 32 referrers
race same_referee 32 "$(verdict "'referrer-@I@'" "'newbie'")" || true
check "same referee: one referral taken" "$(count same_referee 'pending')" 1
check "same referee: 31 refused, already_referred" "$(count same_referee 'refused:already_referred')" 31
check "same referee: one referral of the referee in the table" \
      "$(q -c "SELECT count(*) FROM wallet.referrals r JOIN wallet.members x ON x.member_id = r.referee_id
               WHERE x.member_ref = 'newbie' AND r.status <> 'refused'")" 1
check "same referee: the cap counters count exactly the one taken" \
      "$(q -c "SELECT sum(referrals) FROM wallet.referral_counts WHERE campaign_id = $C")" 1

# 2. one referrer, cap 5, 32 referees
race cap 32 "$(verdict "'bigmouth'" "'friend-@I@'")" || true
check "referrer cap: exactly 5 taken" "$(count cap 'pending')" 5
check "referrer cap: 27 refused, referrer_cap" "$(count cap 'refused:referrer_cap')" 27
check "referrer cap: 5 pending referrals of the referrer" \
      "$(q -c "SELECT count(*) FROM wallet.referrals r JOIN wallet.members x ON x.member_id = r.referrer_id
               WHERE x.member_ref = 'bigmouth' AND r.status = 'pending'")" 5

# 3. one member, 32 shares, 3 a day
race shares 32 "SELECT r.status || coalesce(':' || r.reason, '') FROM wallet.record_share($M, 'sharer', $C, 'wechat') r" || true
check "shares: exactly 3 rewarded" "$(count shares 'rewarded')" 3
check "shares: 29 refused, daily_cap" "$(count shares 'refused:daily_cap')" 29
check "shares: 3 rewards of 7 points on the sharer's account" "$(q -c "SELECT wallet.balance(wallet.find_account($P, 'sharer'))")" 21
check "shares: every share recorded, with its event" \
      "$(q -c "SELECT count(*) || ',' || (SELECT count(*) FROM wallet.member_events WHERE kind = 'shared') FROM wallet.shares")" "32,32"

# 4. one idempotency key, 16 sessions
race same_key 16 "SELECT r.share_id || ':' || r.status FROM wallet.record_share($M, 'keyed', $C, 'weibo', 'share-key-1') r" || true
first=$(head -n 1 "$TMP/same_key.1")
check "same key: all 16 sessions get the one share" "$(count same_key "$first")" 16
check "same key: one share row, one reward" \
      "$(q -c "SELECT count(*) || ',' || coalesce(wallet.balance(wallet.find_account($P, 'keyed')), 0) FROM wallet.shares WHERE idempotency_key = 'share-key-1'")" "1,7"

# 5. 16 checkouts of the referee at once
race checkouts 16 "INSERT INTO wallet.purchases (merchant_id, member_id, order_ref, amount, currency, occurred_at)
                   SELECT $M, x.member_id, 'order-@I@', 20, 'CNY', now() FROM wallet.members x
                    WHERE x.merchant_id = $M AND x.member_ref = 'newbie' RETURNING 'bought'" || true
check "checkouts: all 16 purchases recorded" "$(count checkouts 'bought')" 16
check "checkouts: the referral is rewarded" \
      "$(q -c "SELECT r.status FROM wallet.referrals r JOIN wallet.members x ON x.member_id = r.referee_id
               WHERE x.member_ref = 'newbie' AND r.status <> 'refused'")" rewarded
check "checkouts: the referee got 50 points, once" "$(q -c "SELECT wallet.balance(wallet.find_account($P, 'newbie'))")" 50
check "checkouts: the referrer got 100 points, once" \
      "$(q -c "SELECT sum(wallet.balance(a.account_id)) FROM wallet.accounts a WHERE a.program_id = $P AND a.member_ref LIKE 'referrer-%'")" 100
check "checkouts: two reward entries" "$(q -c "SELECT count(*) FROM wallet.entries WHERE idempotency_key LIKE 'referral:%'")" 2

# 6. the expiry job: one of bigmouth's pending referrals moved 31 days back
aged_id=$(q -c "SELECT min(referral_id) FROM wallet.referrals WHERE status = 'pending'")
q -c "UPDATE wallet.referrals SET referred_at = referred_at - interval '31 days', expires_at = expires_at - interval '31 days'
       WHERE referral_id = $aged_id" >/dev/null
before=$(q -c "SELECT count(*) FROM wallet.referrals WHERE status = 'pending'")
q -c "CALL wallet.run_maintenance()" >/dev/null 2>"$TMP/maint.err"
after=$(q -c "SELECT count(*) FROM wallet.referrals WHERE status = 'pending'")
check "run_maintenance: the one referral past its window expired, the others stay pending ($before pending before)" \
      "$((before - after)):$(q -c "SELECT status || ':' || reason FROM wallet.referrals WHERE referral_id = $aged_id")" "1:expired:window_passed"
check "run_maintenance: it ran without error" "$(cat "$TMP/maint.err")" ""

check "every burst started with all its sessions waiting at the barrier" "$BARRIER_MISSED" ""
timeout 30 dropdb --if-exists "$DB" >/dev/null 2>&1
finish

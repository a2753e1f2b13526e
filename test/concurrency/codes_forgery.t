#!/usr/bin/env bash
# Forgery and typo test of marketing codes (docs/code-format.md):
#  - 1,000,000 random well-formed codes of a real campaign (right campaign,
#    prefix, header and check symbol; random serial and MAC) are all forged;
#  - 200,000 random strings are all rejected (mistyped, malformed or forged);
#  - every single-symbol substitution and every swap of two adjacent symbols
#    of 10,000 real codes is caught by the check symbol or the structure.
set -uo pipefail
DB=conc_codes_forgery
TMP=$(mktemp -d /tmp/wallet-codes-forgery.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
. "$(dirname "$0")/../lib.sh"
plan 8

dropdb --if-exists "$DB" >/dev/null 2>&1; createdb "$DB" || exit 1
q -c "CREATE EXTENSION wallet" || exit 1
M=$(q -c "SELECT wallet.create_merchant('forgery')")
CID=$(q -c "SELECT wallet.create_campaign($M, 'real', 'AB')")
CID2=$(q -c "SELECT wallet.create_campaign($M, 'plain')")
CID3=$(q -c "SELECT wallet.create_campaign($M, 'letters read as digits', 'UOIL')")
q -c "SELECT count(*) FROM wallet.generate_codes($CID, 1)" >/dev/null

# Random well-formed codes, written by an independent encoder (this Perl,
# after docs/code-format.md).  The campaign id is below 2^8 and the serials
# below 2^16, so a body is 14 symbols (70 bits): campaign (8 bits), serial
# (16), MAC (40), header (6, all zero).  With serial and MAC random, body
# symbol 1 is 001xx, symbols 2 to 11 are anything, symbol 12 ends in the
# header's first 0 bit and symbol 13 is the rest of the header.
[ "$CID" -lt 32 ] || { echo "Bail out! campaign id $CID does not fit the layout below"; exit 1; }
perl -e '
use strict; use warnings;
my ($cid, $n, $nrand, $seed, $dir) = @ARGV; srand($seed);
my @B32 = split //, "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
my @CHK = split //, "0123456789ABCDEFGHJKMNPQRSTVWXYZ*~\$=U";
open(my $wf, ">", "$dir/wellformed.txt") or die; open(my $rf, ">", "$dir/random.txt") or die;
for (1 .. $n) {
    # values of prefix "AB" (A = 10, B = 11), then the 14 body symbols
    my @v = (10, 11, $cid >> 3, (($cid & 7) << 2) | int(rand(4)), map({ int(rand(32)) } 1 .. 10), 2 * int(rand(16)), 0);
    my ($sum, $w) = (0, scalar(@v) + 1);
    $sum += (1 + (--$w) % 36) * $_ for @v;
    print $wf "AB", join("", @B32[@v[2 .. $#v]]), $CHK[(37 - $sum % 37) % 37], "\n";
}
my @ALNUM = split //, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
for (1 .. $nrand) {
    my $len = 13 + int(rand(12));
    print $rf join("", map { $ALNUM[int(rand(@ALNUM))] } 1 .. $len), $CHK[int(rand(@CHK))], "\n";
}' "$CID" 1000000 200000 "${FORGERY_SEED:-$$}" "$TMP" 2>&1 || { echo "Bail out! perl encoder failed"; exit 1; }

q -c "CREATE UNLOGGED TABLE wellformed (t text)" -c "\\copy wellformed FROM '$TMP/wellformed.txt'" \
  -c "CREATE UNLOGGED TABLE randoms (t text)" -c "\\copy randoms FROM '$TMP/random.txt'" >/dev/null
q -c "CREATE UNLOGGED TABLE wf_status AS SELECT p.* FROM wellformed, LATERAL wallet.parse_code(t) p" >/dev/null

is "$(q -c "SELECT count(*) FROM wf_status")" 1000000 "1,000,000 random well-formed codes of campaign $CID"
is "$(q -c "SELECT count(*) FROM wf_status WHERE wallet.code_campaign(code) = $CID")" 1000000 \
   "all of them decode (valid check symbol and structure) to codes of the real campaign"
is "$(q -c "SELECT string_agg(status || ':' || n, ',') FROM (SELECT status, count(*) n FROM wf_status GROUP BY 1 ORDER BY 1) s")" \
   "forged:1000000" "every one is rejected as forged"
is "$(q -c "SELECT count(*) FROM wf_status WHERE wallet.code_authentic(code)")" 0 "code_authentic accepts none of them"
is "$(q -c "SELECT count(*) FILTER (WHERE (wallet.parse_code(t)).status = 'ok') || '/' || count(*) FROM randoms")" "0/200000" \
   "200,000 random strings: none is accepted"

# Typos of 10,000 real codes: of a campaign with prefix AB, one without a
# prefix, and one with prefix UOIL (U, and letters that input reads as digits).
q -c "CREATE UNLOGGED TABLE real_codes AS
        SELECT replace(c::text, '-', '') AS t FROM wallet.generate_codes($CID, 4000) c
        UNION ALL SELECT replace(c::text, '-', '') FROM wallet.generate_codes($CID2, 3000) c
        UNION ALL SELECT replace(c::text, '-', '') FROM wallet.generate_codes($CID3, 3000) c" >/dev/null
is "$(q -c "SELECT count(*) FILTER (WHERE p.status = 'ok') FROM real_codes, LATERAL wallet.parse_code(t) p")" 10000 "the 10,000 real codes are ok"

# Substitutions: every position, every other symbol (letters, digits and the
# check-only symbols), except readings of the same symbol (O for 0, I or L for
# 1): the check symbol or the structure must catch each, before the MAC.
SUBS="SELECT overlay(r.t PLACING a FROM i FOR 1) AS v
        FROM real_codes r, generate_series(1, length(r.t)) i,
             unnest(string_to_array('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*~\$=', NULL)) a
       WHERE translate(a, 'OIL', '011') <> translate(substr(r.t, i, 1), 'OIL', '011')"
SWAPS="SELECT overlay(r.t PLACING substr(r.t, i + 1, 1) || substr(r.t, i, 1) FROM i FOR 2) AS v
         FROM real_codes r, generate_series(1, length(r.t) - 1) i
        WHERE translate(substr(r.t, i, 1), 'OIL', '011') <> translate(substr(r.t, i + 1, 1), 'OIL', '011')"
CHECK="SELECT count(*) FILTER (WHERE p.status NOT IN ('mistyped', 'malformed')) || ' of ' || count(*) FROM (%s) s, LATERAL wallet.parse_code(s.v) p"
NSUBS=$(q -c "SELECT count(*) FROM ($SUBS) s")
NSWAPS=$(q -c "SELECT count(*) FROM ($SWAPS) s")
is "$(q -c "$(printf "$CHECK" "$SUBS")")" "0 of $NSUBS" \
   "every single-symbol substitution of the 10,000 codes ($NSUBS) is caught as mistyped or malformed"
is "$(q -c "$(printf "$CHECK" "$SWAPS")")" "0 of $NSWAPS" \
   "every swap of two different adjacent symbols of the 10,000 codes ($NSWAPS) is caught as mistyped or malformed"
dropdb "$DB" >/dev/null 2>&1
finish

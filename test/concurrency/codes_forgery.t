#!/usr/bin/env bash
# Forgery and typo test of marketing codes (docs/code-format.md):
#  - 1,000,000 random well-formed codes of a real campaign (right campaign,
#    prefix, header and check symbols; random serial and MAC), half in the
#    0.2.0 text form and half in the 0.1.0 one, are all forged;
#  - 200,000 random strings are all rejected (mistyped, malformed or forged);
#  - every single-symbol substitution and every swap of two adjacent symbols
#    of 10,000 real codes of every length (15 to 42 symbols), in the 0.2.0
#    text form and the 0.1.0 one, is caught by the check sum before anything
#    else (docs/code-format.md 3.2).
set -uo pipefail
DB=conc_codes_forgery
TMP=$(mktemp -d /tmp/wallet-codes-forgery.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
. "$(dirname "$0")/../lib.sh"
plan 11

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
my @CW = (8, 16, 20, 32); my @SW = (16, 24, 32, 38);
sub sum37 { my ($right, @v) = @_; my ($s, $j) = (0, scalar(@v) + $right); $s += (1 + (--$j) % 36) * $_ for @v; $s % 37 }
# docs 3.3 step 3: the header before the last symbol leaves 0 to 8 prefix symbols
sub reads_as_0_1_0 {
    my @v = @_; my @t = @v[-5 .. -2];
    return 0 if grep { $_ > 31 } @t;
    my $tail = ($t[0] << 15) | ($t[1] << 10) | ($t[2] << 5) | $t[3]; my $h = $tail & 63;
    my ($m, $ver) = (($h >> 4) & 1, ($h >> 5) & 1);
    my $mb = $m ? (($tail >> 6) & 63) + 32 : 40;
    return 0 if $mb > 64 || ($m && $mb == 40);
    my $len = int((6 + 6 * $m + 10 * $ver + $mb + $CW[$h & 3] + $SW[($h >> 2) & 3] + 4) / 5);
    my $plen = @v - 1 - $len; return $plen >= 0 && $plen <= 8;
}
# docs 3.2: the smallest c1 (and its c0) that completes the sum and does not read as 0.1.0
sub check_pair {
    my @v = @_; my $t = (37 - sum37(2, @v)) % 37;
    for my $c1 (0 .. 31) { my $c0 = ($t - 2 * $c1) % 37; next if $c0 > 31; return ($c1, $c0) unless reads_as_0_1_0(@v, $c1, $c0); }
    die "no check pair";
}
open(my $wf, ">", "$dir/wellformed.txt") or die; open(my $rf, ">", "$dir/random.txt") or die;
for my $k (1 .. $n) {
    # values of prefix "AB" (A = 10, B = 11), then the 14 body symbols
    my @v = (10, 11, $cid >> 3, (($cid & 7) << 2) | int(rand(4)), map({ int(rand(32)) } 1 .. 10), 2 * int(rand(16)), 0);
    my $text = "AB" . join("", @B32[@v[2 .. $#v]]);
    if ($k % 2) { $text .= join("", @B32[check_pair(@v)]); }
    else { $text .= $CHK[(37 - sum37(1, @v)) % 37]; }    # 0.1.0: one check symbol
    print $wf "$text\n";
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
   "all of them decode (valid check symbols and structure) to codes of the real campaign"
is "$(q -c "SELECT count(*) FILTER (WHERE t ~ '^AB.{15}\$') || ',' || count(*) FILTER (WHERE t ~ '^AB.{16}\$') FROM wellformed")" "500000,500000" \
   "half of them in the 0.1.0 text form (one check symbol), half in the 0.2.0 one (two)"
is "$(q -c "SELECT string_agg(status || ':' || n, ',') FROM (SELECT status, count(*) n FROM wf_status GROUP BY 1 ORDER BY 1) s")" \
   "forged:1000000" "every one is rejected as forged"
is "$(q -c "SELECT count(*) FROM wf_status WHERE wallet.code_authentic(code)")" 0 "code_authentic accepts none of them"
is "$(q -c "SELECT count(*) FILTER (WHERE (wallet.parse_code(t)).status = 'ok') || '/' || count(*) FROM randoms")" "0/200000" \
   "200,000 random strings: none is accepted"

# Typos of 10,000 real codes of every length: campaigns with prefixes of 0 to
# 8 symbols (U, and letters that input reads as digits, among them) and
# bodies of 14, 20, 26 and 32 symbols (ids and serials of every width, MAC
# lengths 40 to 64, key version 1 or not), 278 codes each.
q <<SQL >/dev/null || { echo "Bail out! typo set-up failed"; exit 1; }
DO \$\$
DECLARE k int; c int; cid bigint;
BEGIN
    FOR k IN 0..35 LOOP
        c := 1 + k / 9;
        EXECUTE format('ALTER TABLE wallet.campaigns ALTER COLUMN campaign_id RESTART WITH %s',
                       (ARRAY[10, 300, 70000, 3000000000])[c] + k);
        cid := wallet.create_campaign($M, 'shape ' || k, nullif(left('UOILZ9AB', k % 9), ''), (ARRAY[40, 40, 52, 64])[c]);
        IF c > 1 THEN PERFORM wallet.rotate_code_key(cid); END IF;
        PERFORM setval(format('wallet.campaign_%s_serials', cid)::regclass, (ARRAY[1, 70000, 20000000, 200000000000])[c], false);
    END LOOP;
END \$\$;
CREATE UNLOGGED TABLE real_codes AS
    SELECT replace(c::text, '-', '') AS t FROM wallet.campaigns, LATERAL wallet.generate_codes(campaign_id, 278) c
     WHERE name LIKE 'shape %';
-- The same codes as wallet 0.1.0 printed them: one check symbol of 37 (docs 3.2).
CREATE FUNCTION pg_temp.text_0_1_0(t text) RETURNS text LANGUAGE sql AS \$\$
    SELECT left(t, -2) || substr(a, 1 + ((37 - sum((1 + (length(t) - 1 - i) % 36)
                                  * (strpos(a, translate(substr(t, i, 1), 'OIL', '011')) - 1)) % 37) % 37)::int, 1)
      FROM (SELECT '0123456789ABCDEFGHJKMNPQRSTVWXYZ*~\$=U' AS a) x, generate_series(1, length(t) - 2) i
     GROUP BY a
\$\$;
-- every fourth code of every campaign
CREATE UNLOGGED TABLE old_codes AS
    SELECT pg_temp.text_0_1_0(t) AS t FROM (SELECT t, row_number() OVER () AS n FROM real_codes) r WHERE n % 4 = 0;
SQL
is "$(q -c "SELECT count(*) FILTER (WHERE p.status = 'ok') FROM real_codes, LATERAL wallet.parse_code(t) p")" 10008 "the 10,008 real codes are ok"
is "$(q -c "SELECT count(*) FILTER (WHERE p.status = 'ok' AND p.code::text = r.t::wallet.marketing_code::text) || ' ' || count(DISTINCT length(o.t))
              FROM real_codes r JOIN old_codes o ON o.t::wallet.marketing_code::text = r.t::wallet.marketing_code::text, LATERAL wallet.parse_code(o.t) p")" "2502 27" \
   "the 0.1.0 texts of 2,502 of them read as the same codes, and they have every length of the 0.1.0 form (15 to 41 symbols)"
is "$(q -c "SELECT string_agg(l::text, ',') FROM (SELECT DISTINCT length(t) l FROM real_codes ORDER BY 1) s")" \
   "$(seq -s, 16 42)" "the real codes have every length of the 0.2.0 form (16 to 42 symbols)"

# Substitutions: every position, every other symbol (letters, digits and the
# check-only symbols of 0.1.0), except readings of the same symbol (O for 0, I
# or L for 1).  Swaps: every two different adjacent symbols.  Each must be
# caught before the MAC; and one made only of letters and digits (every swap,
# and every substitution but by * ~ \$ =, which are malformed as symbols) is
# mistyped: the check sum comes first, whatever the symbols then mean.
VARIANTS="SELECT overlay(r.t PLACING a FROM i FOR 1) AS v
            FROM %s r, generate_series(1, length(r.t)) i,
                 unnest(string_to_array('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*~\$=', NULL)) a
           WHERE translate(a, 'OIL', '011') <> translate(substr(r.t, i, 1), 'OIL', '011')
          UNION ALL
          SELECT overlay(r.t PLACING substr(r.t, i + 1, 1) || substr(r.t, i, 1) FROM i FOR 2)
            FROM %s r, generate_series(1, length(r.t) - 1) i
           WHERE translate(substr(r.t, i, 1), 'OIL', '011') <> translate(substr(r.t, i + 1, 1), 'OIL', '011')"
CHECK="SELECT count(*) FILTER (WHERE p.status NOT IN ('mistyped', 'malformed')) || ' ' ||
              count(*) FILTER (WHERE p.status <> 'mistyped' AND s.v ~ '^[0-9A-Z]*\$') || ' of ' || count(*)
         FROM (%s) s, LATERAL wallet.parse_code(s.v) p"
for form in real_codes old_codes; do
    n=$(q -c "SELECT count(*) FROM ($(printf "$VARIANTS" $form $form)) s")
    label="0.2.0"; [ $form = old_codes ] && label="0.1.0"
    is "$(q -c "$(printf "$CHECK" "$(printf "$VARIANTS" $form $form)")")" "0 0 of $n" \
       "every single-symbol substitution and adjacent swap of the $label texts ($n) is caught, as mistyped when it is letters and digits"
done
dropdb "$DB" >/dev/null 2>&1
finish

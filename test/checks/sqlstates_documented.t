#!/usr/bin/env bash
# The project's own SQLSTATEs (class WL) have one list: src/errcodes.h, one
# macro ERRCODE_WL_<NAME> per code.  README.md's error table must list exactly
# those codes under exactly those names (a DBA handles errors by that table),
# every code the SQL parts or the C sources raise must be in the header, and
# every code of the header must be raised somewhere.  The view
# wallet.error_codes (sql/ext/core.sql, one row per line) must list the same
# codes under the same names, with README's meaning (backticks and links
# taken out).
set -uo pipefail
cd "$(dirname "$0")/../.."
HEADER=src/errcodes.h
VIEW_FILE=sql/ext/core.sql

# "WL101 unknown_campaign" per code of the header
header=$(sed -nE "s/^#define ERRCODE_WL_([A-Z0-9_]+)[[:space:]]+MAKE_SQLSTATE\('W', *'L', *'([0-9])', *'([0-9])', *'([0-9])'\).*/WL\2\3\4 \1/p" "$HEADER" \
         | awk '{print $1, tolower($2)}' | sort -u)
# the same from README's table: | `WL101` | `unknown_campaign` | ...
readme=$(sed -nE 's/^\| `(WL[0-9]{3})` \| `([a-z0-9_]+)` \|.*/\1 \2/p' README.md | sort -u)
# raised in SQL: the literals 'WLnnn'; in C: the macros used outside the header
# (the rows of wallet.error_codes list codes, they raise none)
sql_raised=$(grep -rhE "'WL[0-9]{3}'" sql/ext | grep -vE "^    \('WL[0-9]{3}', '" | grep -oE "'WL[0-9]{3}'" | tr -d "'" | sort -u)
# "WL101|unknown_campaign|meaning" per row of the view, and from README
view_rows=$(sed -nE "s/^    \('(WL[0-9]{3})', '([a-z0-9_]+)', '(.*)'\)[,;]$/\1|\2|\3/p" "$VIEW_FILE" | sed "s/''/'/g" | sort)
readme_rows=$(sed -nE 's/^\| `(WL[0-9]{3})` \| `([a-z0-9_]+)` \| (.*) \|$/\1|\2|\3/p' README.md \
              | sed -E 's/\[([^]]*)\]\([^)]*\)/\1/g; s/`//g' | sort)
c_macros=$(grep -rhoE 'ERRCODE_WL_[A-Z0-9_]+' --include='*.c' --include='*.h' src | sort -u)
c_macros_outside=$(grep -rhoE 'ERRCODE_WL_[A-Z0-9_]+' --include='*.c' --include='*.h' --exclude=errcodes.h src | sort -u)
header_codes=$(echo "$header" | cut -d' ' -f1)
header_macros=$(echo "$header" | awk '{print "ERRCODE_WL_" toupper($2)}' | sort -u)
# codes the C sources raise, through the header's macros
c_raised=$(comm -12 <(echo "$c_macros_outside") <(echo "$header_macros") | sed 's/^ERRCODE_WL_//' | tr 'A-Z' 'a-z' \
           | while read -r name; do echo "$header" | awk -v n="$name" '$2 == n {print $1}'; done | sort -u)
raised=$(printf '%s\n%s\n' "$sql_raised" "$c_raised" | grep . | sort -u)

echo "1..9"
n_header=$(echo "$header" | grep -c .)
[ "$n_header" -gt 0 ] && [ "$n_header" -eq "$(grep -cE '^#define ERRCODE_WL_' "$HEADER")" ] \
    && echo "ok 1 - $HEADER defines $n_header WL SQLSTATEs, each as ERRCODE_WL_<NAME> MAKE_SQLSTATE(...)" \
    || echo "not ok 1 - $HEADER: $n_header codes read, $(grep -cE '^#define ERRCODE_WL_' "$HEADER") macros (a define the check cannot read?)"
dup=$(echo "$header_codes" | uniq -d | tr '\n' ' ')
[ -z "$dup" ] && echo "ok 2 - no code has two names in $HEADER" || echo "not ok 2 - codes defined twice in $HEADER: $dup"
stray=$(grep -rlE "MAKE_SQLSTATE\('W', *'L'" src | grep -vx "$HEADER" | tr '\n' ' ')
[ -z "$stray" ] && echo "ok 3 - no WL SQLSTATE is defined outside $HEADER" || echo "not ok 3 - WL SQLSTATEs defined outside $HEADER in: $stray"
diffs=$(diff <(echo "$header") <(echo "$readme") | grep -E '^[<>]' | sed 's/^</header:/; s/^>/README:/' | tr '\n' ';')
[ -z "$diffs" ] && echo "ok 4 - README's error table lists exactly the codes and names of $HEADER" \
    || echo "not ok 4 - README's error table and $HEADER differ: $diffs"
missing=$(comm -23 <(echo "$sql_raised") <(echo "$header_codes") | tr '\n' ' ')
[ -z "$missing" ] && echo "ok 5 - every WL SQLSTATE the SQL parts raise is in $HEADER" || echo "not ok 5 - raised in sql/ext but not in $HEADER: $missing"
unknown=$(comm -23 <(echo "$c_macros") <(echo "$header_macros") | tr '\n' ' ')
[ -z "$unknown" ] && echo "ok 6 - every ERRCODE_WL_ macro the C sources use is in $HEADER" || echo "not ok 6 - used in src but not defined in $HEADER: $unknown"
unused=$(comm -23 <(echo "$header_codes") <(echo "$raised") | tr '\n' ' ')
[ -z "$unused" ] && echo "ok 7 - every WL SQLSTATE of $HEADER is raised somewhere ($(echo "$raised" | grep -c .) raised)" \
    || echo "not ok 7 - defined but never raised: $unused"
n_view=$(echo "$view_rows" | grep -c .)
diffs=$(diff <(echo "$header" | tr ' ' '|') <(echo "$view_rows" | cut -d'|' -f1,2) | grep -E '^[<>]' | sed 's/^</header:/; s/^>/view:/' | tr '\n' ';')
[ "$n_view" -gt 0 ] && [ -z "$diffs" ] && echo "ok 8 - wallet.error_codes ($VIEW_FILE) lists exactly the $n_view codes and names of $HEADER" \
    || echo "not ok 8 - wallet.error_codes ($n_view rows read from $VIEW_FILE) and $HEADER differ: $diffs"
diffs=$(diff <(echo "$readme_rows") <(echo "$view_rows") | grep -E '^[<>]' | sed 's/^</README:/; s/^>/view:/' | tr '\n' ';')
[ -z "$diffs" ] && echo "ok 9 - wallet.error_codes gives each code README's meaning" \
    || echo "not ok 9 - wallet.error_codes and README's error table differ: $diffs"

#!/usr/bin/env bash
# Every SQLSTATE of the project's class WL that the code can raise is listed in
# README.md's error table, and every listed one is raised somewhere: a DBA
# relies on that table to handle errors.
set -uo pipefail
cd "$(dirname "$0")/../.."
raised=$( { grep -rhoE "'WL[0-9]{3}'" src sql/ext | tr -d "'";
            grep -rhoE "MAKE_SQLSTATE\('W', *'L', *'[0-9]', *'[0-9]', *'[0-9]'\)" src \
              | sed -E "s/.*'([0-9])', *'([0-9])', *'([0-9])'\)/WL\1\2\3/"; } | sort -u)
listed=$(grep -oE '^\| `WL[0-9]{3}`' README.md | grep -oE 'WL[0-9]{3}' | sort -u)
echo "1..3"
[ -n "$raised" ] && echo "ok 1 - the sources raise WL SQLSTATEs ($(echo $raised | wc -w) found)" || echo "not ok 1 - no WL SQLSTATE found in the sources"
missing=$(comm -23 <(echo "$raised") <(echo "$listed") | tr '\n' ' ')
[ -z "$missing" ] && echo "ok 2 - every raised WL SQLSTATE is in README's error table" || echo "not ok 2 - raised but not documented: $missing"
unused=$(comm -13 <(echo "$raised") <(echo "$listed") | tr '\n' ' ')
[ -z "$unused" ] && echo "ok 3 - every documented WL SQLSTATE is raised somewhere" || echo "not ok 3 - documented but never raised: $unused"

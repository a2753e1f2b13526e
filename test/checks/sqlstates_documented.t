#!/usr/bin/env bash
# Every SQLSTATE of the project's class WL that the code can raise is listed in
# README.md's error table, and every listed one is raised somewhere: a DBA
# relies on that table to handle errors.
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/lib.sh
raised=$( { grep -rhoE "'WL[0-9]{3}'" src sql/ext | tr -d "'";
            grep -rhoE "MAKE_SQLSTATE\('W', *'L', *'[0-9]', *'[0-9]', *'[0-9]'\)" src \
              | sed -E "s/.*'([0-9])', *'([0-9])', *'([0-9])'\)/WL\1\2\3/"; } | sort -u)
listed=$(grep -oE '^\| `WL[0-9]{3}`' README.md | grep -oE 'WL[0-9]{3}' | sort -u)
plan 3
ok $([ -n "$raised" ]; echo $?) "the sources raise WL SQLSTATEs ($(echo $raised | wc -w) found)"
missing=$(comm -23 <(echo "$raised") <(echo "$listed") | tr '\n' ' ')
ok $([ -z "$missing" ]; echo $?) "every raised WL SQLSTATE is in README's error table" "raised but not documented: $missing"
unused=$(comm -13 <(echo "$raised") <(echo "$listed") | tr '\n' ' ')
ok $([ -z "$unused" ]; echo $?) "every documented WL SQLSTATE is raised somewhere" "documented but never raised: $unused"
finish

#!/usr/bin/env bash
# make test: deps, -Werror build, private install, throwaway cluster, then
# pg_regress (installcheck), pgTAP (pg_prove) and the concurrency tests, and a
# closing line "N passed, M failed".  Exits non-zero when anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
test/deps.sh || exit 1
. test/cluster.sh
set +e   # cluster.sh turns on -e; here every stage is counted, not aborted

export TEST_PORT=${TEST_PORT:-55432}
TMPD=$(mktemp -d /tmp/wallet-test.XXXXXX)
chmod 755 "$TMPD"
DATA="$TMPD/data"
cleanup() {
    cluster_stop "$DATA"
    rm -rf "$TMPD"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cluster_install || exit 1

# Server settings every test cluster needs; areas add theirs here.
# Marketing codes: the fixed TEST-ONLY root key (test/root_key.sh), so that
# the test vectors of docs/code-format.md come out of pg_regress.
. test/root_key.sh
root_key_test "$TMPD/root.key"
SETTINGS=(-c shared_preload_libraries=wallet -c wallet.root_key_file="$TMPD/root.key")

cluster_start "$DATA" "$TEST_PORT" "${SETTINGS[@]}" || exit 1
export PGHOST="$DATA" PGPORT="$TEST_PORT" PGUSER=postgres PGDATABASE=postgres
echo "cluster: $PGBIN, socket $PGHOST, port $PGPORT"

passed=0; failed=0
log_tail() { echo "---- server log (tail) ----"; tail -n 40 "$DATA/server.log"; }

# 1. pg_regress, then the isolation specs (pg_isolation_regress), each its own
#    installcheck so that a failing pg_regress test does not skip the specs.
count_regress() {   # count_regress LABEL DIFFS MAKE-ARGS...: one installcheck, counted
    local label=$1 diffs=$2 out rc; shift 2
    echo "== $label"
    out=$(make -C . PG_CONFIG="$PG_CONFIG" installcheck "$@" 2>&1); rc=$?
    echo "$out" | grep -E '^(test |     |ok |not ok|=+|.*tests (passed|failed))' | grep -v '^=\+$' || true
    while read -r n; do passed=$((passed + n)); done < <(echo "$out" | sed -n -E 's/^ *All ([0-9]+) tests passed.*/\1/p')
    while read -r f t; do passed=$((passed + t - f)); failed=$((failed + f)); done < <(echo "$out" | sed -n -E 's/^ *([0-9]+) of ([0-9]+) tests failed.*/\1 \2/p')
    if [ $rc -ne 0 ]; then
        if ! echo "$out" | grep -qE 'tests failed'; then failed=$((failed + 1)); echo "$out" | tail -n 30; fi
        [ -f "$diffs" ] && { echo "---- $diffs ----"; cat "$diffs"; }
        log_tail
    fi
}
# ONLY=regex runs only the pgTAP files and TAP scripts whose path matches
# (and pg_regress/isolation only if "regress" matches): for iteration.
only() { [ -z "${ONLY:-}" ] || [[ $1 =~ $ONLY ]]; }
only regress && count_regress "pg_regress" regression.diffs ISOLATION=
only regress && count_regress "isolation" output_iso/regression.diffs REGRESS=

# Count TAP results from a verbose prove/pg_prove run on stdin.
count_tap() {
    local file=$1 ok nok
    ok=$(grep -cE '^[[:space:]]*ok [0-9]+' "$file" || true)
    nok=$(grep -cE '^[[:space:]]*not ok [0-9]+' "$file" || true)
    passed=$((passed + ok)); failed=$((failed + nok))
}

# 2. pgTAP: every file runs in its own transaction in a database with both extensions.
echo "== pgTAP"
tapfiles=(); for f in test/tap/*.sql; do only "$f" && tapfiles+=("$f"); done
if [ ${#tapfiles[@]} -gt 0 ]; then
    psql -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE wallet_tap" >/dev/null &&
    psql -qX -v ON_ERROR_STOP=1 -d wallet_tap -c "CREATE EXTENSION pgtap; CREATE EXTENSION wallet;" -f test/tap_helpers.sql >/dev/null || exit 1
    pg_prove -v -d wallet_tap "${tapfiles[@]}" > "$TMPD/tap.out" 2>&1; rc=$?
    grep -vE '^[[:space:]]*ok [0-9]+' "$TMPD/tap.out"
    count_tap "$TMPD/tap.out"
    if [ $rc -ne 0 ]; then
        grep -qE '^[[:space:]]*not ok' "$TMPD/tap.out" || failed=$((failed + 1))
        log_tail
    fi
fi

# 3. Repository checks, concurrency, crash and dump/restore tests: executables
#    emitting TAP, run by prove.
echo "== checks and concurrency"
conc=(); for f in test/checks/*.t test/concurrency/*.t; do only "$f" && conc+=("$f"); done
if [ ${#conc[@]} -gt 0 ]; then
    prove -v "${conc[@]}" > "$TMPD/conc.out" 2>&1; rc=$?
    cat "$TMPD/conc.out"
    count_tap "$TMPD/conc.out"
    if [ $rc -ne 0 ]; then
        grep -qE '^[[:space:]]*not ok' "$TMPD/conc.out" || failed=$((failed + 1))
        log_tail
    fi
fi

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

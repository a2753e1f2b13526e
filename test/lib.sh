# The one helper library of the shell tests (test/checks/*.t,
# test/concurrency/*.t; sourced, not run): TAP output, psql shortcuts, a
# barrier that releases many sessions at once, long-lived sessions and
# throwaway clusters.  The connection comes from PGHOST/PGPORT/PGUSER (set by
# make test); q and the sessions use the database $DB.

# ---------------------------------------------------------------- TAP
T_NUM=0
T_FAILED=0
plan() { echo "1..$1"; }            # plan N: the plan first
done_testing() { echo "1..$T_NUM"; }  # or the plan last, as many as ran
# finish: the exit status of a test script, non-zero when an assertion failed
finish() { exit $((T_FAILED > 0)); }
ok() {      # ok STATUS DESCRIPTION [DIAGNOSTIC...]: passes when STATUS is 0
    local st=$1 desc=$2 d
    shift 2
    T_NUM=$((T_NUM + 1))
    if [ "$st" -eq 0 ]; then echo "ok $T_NUM - $desc"; return 0; fi
    echo "not ok $T_NUM - $desc"; T_FAILED=$((T_FAILED + 1))
    for d in "$@"; do printf '%s\n' "$d" | sed 's/^/#   /'; done
    return 1
}
is() {      # is GOT EXPECTED DESCRIPTION
    if [ "$1" = "$2" ]; then ok 0 "$3"; else ok 1 "$3" "got:      '$1'" "expected: '$2'"; fi
}
isnt() {    # isnt GOT UNWANTED DESCRIPTION
    if [ "$1" != "$2" ]; then ok 0 "$3"; else ok 1 "$3" "got:      '$1'" "expected anything else"; fi
}
check() { is "$2" "$3" "$1"; }      # check DESCRIPTION GOT EXPECTED: is, named first

# ---------------------------------------------------------------- psql
# Unaligned, tuples only, stopping at the first error; under `timeout
# $Q_TIMEOUT` when a test sets it (so that a hang fails instead of stalling).
qdb() {     # qdb DB PSQL-ARGS...
    local db=$1; shift
    ${Q_TIMEOUT:+timeout "$Q_TIMEOUT"} psql -X -qAt -v ON_ERROR_STOP=1 -d "$db" "$@"
}
q() { qdb "$DB" "$@"; }             # q PSQL-ARGS...: in $DB
# sqlstate PSQL-ARGS...: the SQLSTATE the statements raise, or "none"
sqlstate() {
    local out
    out=$(psql -X -qAt -v ON_ERROR_STOP=1 -v VERBOSITY=verbose "$@" 2>&1) && { echo none; return; }
    echo "$out" | sed -n -E 's/^ERROR:  ([0-9A-Z]{5}): .*/\1/p' | head -n 1
}

# ---------------------------------------------------------------- barrier
# The barrier: the controller holds an exclusive advisory lock; every worker
# first waits for it in shared mode; once all N are waiting (pg_locks, in
# $DB), the controller lets go and they all start together.
BARRIER_KEY=774411
BARRIER_LOCKS="SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 0 AND objid = $BARRIER_KEY
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
barrier_hold() {    # starts the controller session; sets BARRIER_FD
    mkfifo "$TMP/barrier.fifo"
    psql -X -qAt -d "$DB" < "$TMP/barrier.fifo" > "$TMP/barrier.out" 2>&1 &
    BARRIER_PID=$!
    exec {BARRIER_FD}> "$TMP/barrier.fifo"
    echo "SELECT pg_advisory_lock($BARRIER_KEY);" >&$BARRIER_FD
    local i
    for i in $(seq 1 100); do
        [ "$(qdb "$DB" -c "$BARRIER_LOCKS AND granted AND mode = 'ExclusiveLock'")" = 1 ] && return 0
        sleep 0.1
    done
    echo "# barrier: controller did not get the lock"; return 1
}
barrier_wait_for() {    # barrier_wait_for N: until N sessions wait on the barrier (max ~30 s)
    local i
    for i in $(seq 1 300); do
        [ "$(qdb "$DB" -c "$BARRIER_LOCKS AND NOT granted")" -ge "$1" ] && return 0
        sleep 0.1
    done
    echo "# barrier: only $(qdb "$DB" -c "$BARRIER_LOCKS AND NOT granted") of $1 sessions arrived"; return 1
}
barrier_release() {
    echo "SELECT pg_advisory_unlock($BARRIER_KEY);" >&$BARRIER_FD
    echo '\q' >&$BARRIER_FD
    exec {BARRIER_FD}>&-
    wait "$BARRIER_PID" 2>/dev/null || true
}
# SQL a worker runs first to wait at the barrier
BARRIER_SQL="SELECT pg_advisory_lock_shared($BARRIER_KEY); SELECT pg_advisory_unlock_shared($BARRIER_KEY);"

# ---------------------------------------------------------------- clusters
# Tests that run a throwaway cluster of their own: own_cluster OFFSET (after
# setting ROOT and TMP) loads test/cluster.sh and test/root_key.sh, sets DATA
# and PORT (PGPORT + OFFSET: each test its own) and stops the cluster and
# removes TMP on exit.
own_cluster() {
    chmod 755 "$TMP"
    . "$ROOT/test/cluster.sh"
    set +e
    . "$ROOT/test/root_key.sh"
    DATA="$TMP/data"
    PORT=$(( ${PGPORT:-55432} + $1 ))
    trap 'cluster_stop "$DATA"; rm -rf "$TMP"' EXIT
}
# cq PSQL-ARGS...: psql in the throwaway cluster (database postgres), errors included
cq() { psql -X -qAt -h "$DATA" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@" 2>&1; }

# ---------------------------------------------------------------- sessions
# Long-lived sessions: sess_open NAME starts psql reading from a FIFO;
# sess_run NAME SQL runs SQL in it and prints the output (waits up to ~30 s).
declare -A SESS_FD SESS_PID
sess_open() {
    local name=$1
    mkfifo "$TMP/sess.$name.fifo"
    psql -X -qAt -d "$DB" < "$TMP/sess.$name.fifo" > "$TMP/sess.$name.out" 2>&1 &
    SESS_PID[$name]=$!
    exec {fd}> "$TMP/sess.$name.fifo"
    SESS_FD[$name]=$fd
}
sess_run() {
    local name=$1 sql=$2 mark start i
    # runs in $(...) subshells too, so no state kept between calls: the
    # output is what the file gains between sending and the unique marker
    mark="@@done $(date +%s%N)$RANDOM"
    start=$(wc -l < "$TMP/sess.$name.out")
    printf '%s;\n\\echo %s\n' "$sql" "$mark" >&${SESS_FD[$name]}
    for i in $(seq 1 300); do
        grep -qxF "$mark" "$TMP/sess.$name.out" && break
        sleep 0.1
    done
    tail -n +$((start + 1)) "$TMP/sess.$name.out" | awk -v m="$mark" '$0 == m { exit } { print }'
}
sess_close() {
    local name=$1 fd=${SESS_FD[$1]:-}
    [ -n "$fd" ] || return 0
    # \q rather than EOF: sessions opened later inherited this FIFO's writer
    echo '\q' >&$fd
    exec {fd}>&-
    unset "SESS_FD[$name]"
    wait "${SESS_PID[$name]}" 2>/dev/null || true
}

# ---------------------------------------------------------------- races
# Races: race NAME N SQL runs SQL in N sessions at once, behind the barrier;
# SQL may use @I@ (the session number 1..N).  race_each NAME SQL... runs
# each SQL in a session of its own, all at once.  Session I's output (or
# error, with its SQLSTATE) lands in $TMP/NAME.I.  A race that started before
# all its sessions waited returns 1 and is named in BARRIER_MISSED.
BARRIER_MISSED=
race() {
    local name=$1 count=$2 sql=$3 i stmts=()
    for i in $(seq 1 "$count"); do stmts+=("${sql//@I@/$i}"); done
    race_each "$name" "${stmts[@]}"
}
race_each() {
    local name=$1 sql i=0 st=0 pids=()
    shift
    rm -f "$TMP/barrier.fifo"
    barrier_hold || { BARRIER_MISSED="$BARRIER_MISSED $name"; return 1; }
    for sql in "$@"; do
        i=$((i + 1))
        ${Q_TIMEOUT:+timeout "$Q_TIMEOUT"} psql -X -qAt -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -d "$DB" \
            -c "$BARRIER_SQL" -c "$sql" >"$TMP/$name.$i" 2>&1 </dev/null &
        pids+=($!)
    done
    barrier_wait_for $# || { BARRIER_MISSED="$BARRIER_MISSED $name"; st=1; }
    barrier_release
    wait "${pids[@]}"
    return $st
}
# count NAME PATTERN: how many sessions printed a line matching PATTERN exactly.
count() { cat "$TMP/$1".[0-9]* | grep -cxE "$2"; }

# forge_function: creates forge(code text) in $DB (test/forge.sql), a
# forgery of a code: two body symbols changed until the text is well formed
# with a right check symbol but a wrong MAC.
forge_function() {
    q -v forge_schema=public -f "$(dirname "${BASH_SOURCE[0]}")/forge.sql" >/dev/null
}

# Shared by the codes_*.t concurrency tests (sourced, not run): TAP output,
# psql shortcuts and a barrier that releases many sessions at once.
# Needs PGHOST/PGPORT/PGUSER (set by make test) and DB.

T_NUM=0
T_FAILED=0
ok() {      # ok CONDITION-STATUS DESCRIPTION
    T_NUM=$((T_NUM + 1))
    if [ "$1" -eq 0 ]; then echo "ok $T_NUM - $2"; else echo "not ok $T_NUM - $2"; T_FAILED=$((T_FAILED + 1)); fi
}
is() {      # is GOT EXPECTED DESCRIPTION
    T_NUM=$((T_NUM + 1))
    if [ "$1" = "$2" ]; then echo "ok $T_NUM - $3"
    else echo "not ok $T_NUM - $3"; echo "#   got:      '$1'"; echo "#   expected: '$2'"; T_FAILED=$((T_FAILED + 1)); fi
}

q() { psql -X -qAt -v ON_ERROR_STOP=1 -d "$DB" "$@"; }

# The barrier: the controller holds an exclusive advisory lock; every worker
# first waits for it in shared mode; once all N are waiting (pg_locks), the
# controller lets go and they all start together.
BARRIER_KEY=774411
barrier_hold() {    # starts the controller session; sets BARRIER_FD
    mkfifo "$TMP/barrier.fifo"
    psql -X -qAt -d "$DB" < "$TMP/barrier.fifo" > "$TMP/barrier.out" 2>&1 &
    BARRIER_PID=$!
    exec {BARRIER_FD}> "$TMP/barrier.fifo"
    echo "SELECT pg_advisory_lock($BARRIER_KEY);" >&$BARRIER_FD
    local i
    for i in $(seq 1 100); do
        [ "$(q -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $BARRIER_KEY AND granted AND mode = 'ExclusiveLock'")" = 1 ] && return 0
        sleep 0.1
    done
    echo "# barrier: controller did not get the lock"; return 1
}
barrier_wait_for() {    # barrier_wait_for N: until N sessions wait on the barrier (max ~30 s)
    local i
    for i in $(seq 1 300); do
        [ "$(q -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $BARRIER_KEY AND NOT granted")" -ge "$1" ] && return 0
        sleep 0.1
    done
    echo "# barrier: only $(q -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $BARRIER_KEY AND NOT granted") of $1 sessions arrived"; return 1
}
barrier_release() {
    echo "SELECT pg_advisory_unlock($BARRIER_KEY);" >&$BARRIER_FD
    echo '\q' >&$BARRIER_FD
    exec {BARRIER_FD}>&-
    wait "$BARRIER_PID" 2>/dev/null || true
}
# SQL a worker runs first to wait at the barrier
BARRIER_SQL="SELECT pg_advisory_lock_shared($BARRIER_KEY); SELECT pg_advisory_unlock_shared($BARRIER_KEY);"

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

# Races: race NAME N SQL runs SQL in N sessions at once, behind the barrier;
# SQL may use @I@ (the session number 1..N).  Each session's output (or
# error) lands in $TMP/NAME.I; a race that started before all N sessions
# waited is named in BARRIER_MISSED.
BARRIER_MISSED=
race() {
    local name=$1 count=$2 sql=$3 i pids=()
    rm -f "$TMP/barrier.fifo"
    barrier_hold || return 1
    for i in $(seq 1 "$count"); do
        psql -X -qAt -v ON_ERROR_STOP=1 -d "$DB" -c "$BARRIER_SQL" -c "${sql//@I@/$i}" >"$TMP/$name.$i" 2>&1 </dev/null &
        pids+=($!)
    done
    barrier_wait_for "$count" || BARRIER_MISSED="$BARRIER_MISSED $name"
    barrier_release
    wait "${pids[@]}"
}
# count NAME PATTERN: how many sessions printed a line matching PATTERN exactly.
count() { cat "$TMP/$1".[0-9]* | grep -cxE "$2"; }

# forge_function: creates forge(code text) in $DB, a forgery of a code: two
# body symbols changed until the text is well formed with a right check
# symbol but a wrong MAC (parse_code is the oracle; fixed search order).
forge_function() {
    q >/dev/null <<'SQL'
CREATE FUNCTION forge(c text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    alphabet constant text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    t text;
BEGIN
    FOR i IN REVERSE length(c) - 1 .. 1 LOOP
        CONTINUE WHEN substr(c, i, 1) = '-';
        FOR j IN REVERSE i - 1 .. 1 LOOP
            CONTINUE WHEN substr(c, j, 1) = '-';
            FOR a IN 1 .. 32 LOOP
                FOR b IN 1 .. 32 LOOP
                    t := overlay(overlay(c PLACING substr(alphabet, a, 1) FROM i FOR 1)
                                 PLACING substr(alphabet, b, 1) FROM j FOR 1);
                    -- forged, and still of the same campaign (a code's MAC depends on
                    -- the random installation id, so the search may cross campaigns)
                    IF (SELECT p.status = 'forged' AND wallet.code_campaign(p.code) = wallet.code_campaign(c::wallet.marketing_code)
                          FROM wallet.parse_code(t) p) THEN
                        RETURN t;
                    END IF;
                END LOOP;
            END LOOP;
        END LOOP;
    END LOOP;
    RAISE EXCEPTION 'no forgery found for %', c;
END
$$;
SQL
}

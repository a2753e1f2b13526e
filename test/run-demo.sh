#!/usr/bin/env bash
# make run: deps, build, private install, then the persistent demo cluster in
# .pg/demo with a fresh database wallet_demo and examples/demo.sql run in it.
# make stop (this script with "stop") stops the demo cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO_PORT=${DEMO_PORT:-55433}

if [ "${1:-}" = stop ]; then
    . test/cluster.sh
    DEMO="$WALLET_PG/demo"
    if [ -f "$DEMO/postmaster.pid" ]; then cluster_stop "$DEMO"; echo "demo cluster stopped"; else echo "demo cluster is not running"; fi
    exit 0
fi

test/deps.sh
. test/cluster.sh
DEMO="$WALLET_PG/demo"

# Server settings of the demo cluster; areas add theirs here (same helper as make test).
# Marketing codes: a random root key made on the first run and kept beside the
# demo data (mode 0600), so that codes stay valid across runs.
. test/root_key.sh
root_key_random "$WALLET_PG/demo.root.key"
SETTINGS=(-c shared_preload_libraries=wallet -c wallet.root_key_file="$WALLET_PG/demo.root.key")

# Restart so that the freshly built library is the one loaded.
cluster_stop "$DEMO"
cluster_install
cluster_start "$DEMO" "$DEMO_PORT" "${SETTINGS[@]}"

export PGHOST="$DEMO" PGPORT="$DEMO_PORT" PGUSER=postgres
# The demo database is made anew on every run so that the walkthrough is repeatable.
psql -qX -d postgres -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS wallet_demo" -c "CREATE DATABASE wallet_demo" >/dev/null
psql -X -d wallet_demo -v ON_ERROR_STOP=1 -f examples/demo.sql

cat <<MSG

The demo cluster is running (data in $DEMO, log in $DEMO/server.log).
Connect:  psql -h $DEMO -p $DEMO_PORT -U postgres wallet_demo
Stop:     make stop
MSG

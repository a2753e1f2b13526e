#!/usr/bin/env bash
# Throwaway and demo PostgreSQL clusters, shared by make test, make run and bench/.
#
# Source it (". test/cluster.sh") for the functions, or run it:
#   test/cluster.sh install                  build with -Werror, install into the private prefix
#   test/cluster.sh start DIR PORT [-c name=value ...]
#   test/cluster.sh stop DIR
#
# The extension is installed into a private copy of the PostgreSQL tree
# ($WALLET_PG/install) rather than the system one, so that tests never clobber
# a system-wide install and several checkouts can test side by side.  The
# server binaries are copied (not linked): PostgreSQL finds its share and lib
# directories relative to the real path of its own executable.
#
# PostgreSQL refuses to run as root: as root, servers run as the postgres OS user.

set -euo pipefail

WALLET_ROOT=${WALLET_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}

as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Where clusters and the private install live: inside the checkout when the
# server's user can reach it, else under /var/tmp (e.g. a checkout in /root).
wallet_pg_base() {
    local base="$WALLET_ROOT/.pg"
    mkdir -p "$base"
    if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$base"; then
        base="/var/tmp/wallet-$(printf %s "$WALLET_ROOT" | md5sum | cut -c1-12)"
        mkdir -p "$base"
    fi
    chmod 755 "$base"
    printf %s "$base"
}
WALLET_PG=${WALLET_PG:-$(wallet_pg_base)}
PGBIN_SYS=$("$PG_CONFIG" --bindir)
PREFIX="$WALLET_PG/install"
PGBIN="$PREFIX$PGBIN_SYS"

# Build with -Werror and install into $PREFIX, a private PostgreSQL tree.
cluster_install() {
    local sysshare syslib share lib f
    # set by tests that run a bench inside make test, whose cluster runs from
    # this very prefix: reinstalling would pull it from under the server
    if [ -n "${WALLET_SKIP_INSTALL:-}" ] && [ -x "$PGBIN/postgres" ]; then
        echo "install: private prefix $PREFIX (kept)"
        return 0
    fi
    sysshare=$("$PG_CONFIG" --sharedir)
    syslib=$("$PG_CONFIG" --pkglibdir)
    share="$PREFIX$sysshare"; lib="$PREFIX$syslib"
    echo "build: make WERROR=1"
    make -s -C "$WALLET_ROOT" PG_CONFIG="$PG_CONFIG" WERROR=1 >/dev/null
    rm -rf "$PREFIX"
    mkdir -p "$PREFIX$PGBIN_SYS" "$share/extension" "$lib"
    cp -a "$PGBIN_SYS/." "$PREFIX$PGBIN_SYS/"
    make -s -C "$WALLET_ROOT" PG_CONFIG="$PG_CONFIG" install DESTDIR="$PREFIX" >/dev/null
    # Everything else of the system tree by symlink (pgtap, plpgsql, timezones, ...).
    for f in "$sysshare"/*; do
        [ "$(basename "$f")" = extension ] || ln -sfn "$f" "$share/"
    done
    for f in "$sysshare"/extension/*; do
        case "$(basename "$f")" in wallet--*|wallet.control) ;; *) [ -e "$share/extension/$(basename "$f")" ] || ln -s "$f" "$share/extension/" ;; esac
    done
    for f in "$syslib"/*; do
        case "$(basename "$f")" in wallet.so|bitcode) ;; *) ln -sfn "$f" "$lib/" ;; esac
    done
    if [ -d "$syslib/bitcode" ]; then
        mkdir -p "$lib/bitcode"
        for f in "$syslib"/bitcode/*; do
            case "$(basename "$f")" in wallet|wallet.index.bc) ;; *) ln -sfn "$f" "$lib/bitcode/" ;; esac
        done
    fi
    chmod -R a+rX "$PREFIX"
    echo "install: private prefix $PREFIX"
}

# cluster_start DIR PORT [-c name=value ...]: initdb if needed, then start.
# The server listens on a Unix socket in DIR only (no TCP), so the port just
# names the socket and clusters in different directories never clash.
# The log is DIR/server.log.
cluster_start() {
    local dir=$1 port=$2; shift 2
    local opts=() 
    while [ $# -gt 0 ]; do
        case "$1" in
            -c) opts+=("-c" "$2"); shift 2 ;;
            *) echo "cluster_start: unexpected argument $1" >&2; return 2 ;;
        esac
    done
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    chmod 700 "$dir"
    if [ ! -f "$dir/PG_VERSION" ]; then
        as_pg "$PGBIN/initdb" -D "$dir" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >"$dir.initdb.log" 2>&1 \
            || { cat "$dir.initdb.log" >&2; return 1; }
    fi
    # Settings go to a file so that a restart keeps them.
    {
        echo "# written by test/cluster.sh"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$dir'"
        echo "port = $port"
        echo "max_connections = 120"
        echo "fsync = off"
        echo "log_min_messages = warning"
        local i
        for ((i = 1; i < ${#opts[@]}; i += 2)); do
            echo "${opts[i]%%=*} = '${opts[i]#*=}'"
        done
    } | as_pg tee "$dir/postgresql.wallet.conf" >/dev/null
    grep -q "^include_if_exists = 'postgresql.wallet.conf'" "$dir/postgresql.conf" \
        || echo "include_if_exists = 'postgresql.wallet.conf'" | as_pg tee -a "$dir/postgresql.conf" >/dev/null
    as_pg "$PGBIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 start >/dev/null \
        || { echo "server failed to start; log tail:" >&2; tail -n 30 "$dir/server.log" >&2; return 1; }
}

cluster_stop() {
    local dir=$1
    if [ -f "$dir/postmaster.pid" ]; then
        as_pg "$PGBIN/pg_ctl" -D "$dir" -m fast -w -t 60 stop >/dev/null 2>&1 || true
    fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    cmd=${1:-}; shift || true
    case "$cmd" in
        install) cluster_install ;;
        start) cluster_start "$@" ;;
        stop) cluster_stop "$@" ;;
        *) echo "usage: $0 install | start DIR PORT [-c name=value ...] | stop DIR" >&2; exit 2 ;;
    esac
fi

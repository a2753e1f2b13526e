#!/usr/bin/env bash
# The root key settings, on throwaway clusters of their own: without a key
# every function that needs it raises WL001 with a hint naming the settings;
# wallet.root_key_command gives the same key (same test vectors) as the file;
# a key file others can read, or one that is not 64 hex characters, stops the
# server from starting, and the log never shows what the file held; a key
# file made by root is refused with a hint that names its owner and mode
# (not the preload), and the README's recipe makes one the server takes.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d /tmp/wallet-codes-key.XXXXXX)
. "$ROOT/test/lib.sh"
own_cluster 17
plan 18

# psql against the throwaway cluster, going on after errors, which show their SQLSTATE.
kq() { cq -v ON_ERROR_STOP=0 -v VERBOSITY=verbose "$@"; }
sqlstate_of() { sqlstate -h "$DATA" -p "$PORT" -U postgres -d postgres -c "$1"; }   # SQLSTATE raised, or none
restart_with() {   # restart_with -c name=value ...
    cluster_stop "$DATA"
    cluster_start "$DATA" "$PORT" "$@" >/dev/null 2>&1
}

# 1. wallet preloaded, no key configured.
restart_with -c shared_preload_libraries=wallet; ok $? "a server with wallet preloaded but no key setting starts"
# the TEST-ONLY installation id too, so that campaign 1 makes test vector 1
kq -c "CREATE EXTENSION wallet" -c "INSERT INTO wallet.installation (installation_id) VALUES ('$WALLET_TEST_INSTALLATION_ID')" \
   -c "SELECT wallet.create_campaign(wallet.create_merchant('k'), 'c')" >/dev/null
is "$(sqlstate_of "SELECT wallet.generate_codes(1, 1)")" WL001 "generate_codes without root key: WL001"
is "$(sqlstate_of "SELECT wallet.code_authentic('0400-2P71-0GTW-R01E')")" WL001 "code_authentic without root key: WL001"
is "$(sqlstate_of "SELECT wallet.parse_code('0400-2P71-0GTW-R01E')")" WL001 "parse_code without root key: WL001"
out=$(kq -c "SELECT wallet.generate_codes(1, 1)")
grep -q 'ERROR:  WL001: wallet root key is not loaded' <<<"$out" && grep -q 'HINT:  .*shared_preload_libraries.*wallet.root_key_file.*wallet.root_key_command' <<<"$out"
ok $? "the error says the root key is not loaded, and the hint names shared_preload_libraries, wallet.root_key_file and wallet.root_key_command"
echo "$out" | sed 's/^/# /'
# serials are no longer given back by a rollback, so this holds only because
# generate_codes checks for the key before it reserves anything
is "$(kq -c "SELECT wallet.campaign_next_serial(1)")" 1 "the failed generate_codes used up no serials"
is "$(kq -c "SELECT '0400-2P71-0GTW-R0='::wallet.marketing_code::text")" "0400-2P71-0GTW-R01E" "text input (of a 0.1.0 text too) and output need no key"

# 2. The key from a command: the same TEST-ONLY key gives the documented test vector.
root_key_test "$TMP/root.key"
restart_with -c shared_preload_libraries=wallet -c wallet.root_key_command="cat $TMP/root.key"; ok $? "a server with wallet.root_key_command starts"
is "$(kq -c "SELECT status FROM wallet.parse_code('0400-2P71-0GTW-R01E')")" ok "the key from the command validates test vector 1"

# 3. wallet not preloaded: the library loads on demand, without any key.
restart_with; kq -c "SELECT 1" >/dev/null
out=$(kq -c "SELECT wallet.parse_code('0400-2P71-0GTW-R01E')")
grep -q 'WL001' <<<"$out" && grep -q 'DETAIL:  wallet is not in shared_preload_libraries' <<<"$out"
ok $? "without shared_preload_libraries: WL001, saying wallet is not preloaded"

# 4. Bad key files stop the server (the key is not half-loaded).
chmod 644 "$TMP/root.key"
restart_with -c shared_preload_libraries=wallet -c wallet.root_key_file="$TMP/root.key"; rc=$?
[ $rc -ne 0 ] && grep -q 'root key file ".*" has group or world access' "$DATA/server.log"
ok $? "a key file readable by others stops the server, with a clear message"
printf 'this is not a hex key 0123456789abcdef\n' > "$TMP/bad.key"; chmod 600 "$TMP/bad.key"; chown postgres: "$TMP/bad.key" 2>/dev/null
restart_with -c shared_preload_libraries=wallet -c wallet.root_key_file="$TMP/bad.key"; rc=$?
[ $rc -ne 0 ] && grep -q 'the root key from wallet.root_key_file is not 64 hex characters' "$DATA/server.log"
ok $? "a key file without 64 hex characters stops the server, with a clear message"
! grep -q 'this is not a hex key' "$DATA/server.log"
ok $? "the server log does not show what the key file held"
restart_with -c shared_preload_libraries=wallet -c wallet.root_key_file="$TMP/root.key" -c wallet.root_key_command="cat $TMP/root.key"; rc=$?
[ $rc -ne 0 ] && grep -q 'wallet.root_key_file and wallet.root_key_command are both set' "$DATA/server.log"
ok $? "setting both wallet.root_key_file and wallet.root_key_command stops the server"

# 5. Key files made as root (README "Server configuration").
new_log() { tail -n +"$((LOG_LINES + 1))" "$DATA/server.log"; }
mark_log() { LOG_LINES=$(wc -l < "$DATA/server.log"); }
if [ "$(id -u)" -ne 0 ]; then
    for i in 15 16 17 18; do echo "ok $i # SKIP not root"; done
else
    refused_with() {   # refused_with FILE PATTERN...: the server does not start with FILE, and its log has every PATTERN
        local file=$1 rc p; shift
        mark_log; restart_with -c shared_preload_libraries=wallet -c wallet.root_key_file="$file"; rc=$?
        new_log | sed 's/^/# /'
        [ $rc -ne 0 ] || return 1
        for p in "$@"; do grep -q -- "$p" <<<"$(new_log)" || return 1; done
    }
    # made by root with the usual umask: root's file, mode 644
    (umask 022; printf '%s\n' "$WALLET_TEST_ROOT_KEY" > "$TMP/byroot.key")
    refused_with "$TMP/byroot.key" 'has group or world access' \
        "DETAIL:  The file has mode 0644 and belongs to user id 0; it must belong to the server's user \"postgres\"" \
        'HINT:  As root: chown postgres ".*byroot.key" && chmod 600'
    ok $? "a key file root made (mode 644) stops the server; the hint says to chown it to postgres and chmod 600"
    # chmod 600 alone: now the server's user cannot read it at all
    chmod 600 "$TMP/byroot.key"
    refused_with "$TMP/byroot.key" 'could not open root key file ".*byroot.key": Permission denied' \
        "DETAIL:  The file belongs to user id 0, not to the server's user \"postgres\"" \
        'HINT:  As root: chown postgres ".*byroot.key" && chmod 600'
    ok $? "after chmod 600 alone the server cannot open it, and the hint names the owner, not the preload"
    ! grep -q 'shared_preload_libraries' <<<"$(new_log)"
    ok $? "that hint does not talk about shared_preload_libraries"
    # the README's recipe (the TEST-ONLY key written where it writes a random one)
    install -m 600 -o postgres /dev/null "$TMP/wallet-root.key"
    printf '%s' "$WALLET_TEST_ROOT_KEY" > "$TMP/wallet-root.key"
    restart_with -c shared_preload_libraries=wallet -c wallet.root_key_file="$TMP/wallet-root.key" \
        && is "$(kq -c "SELECT status FROM wallet.parse_code('0400-2P71-0GTW-R01E')")" ok \
              "a key file made by the README's recipe (install -m 600 -o postgres, then the key into it) is taken" \
        || ok 1 "a key file made by the README's recipe is taken (server did not start)"
fi

finish

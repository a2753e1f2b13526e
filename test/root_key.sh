#!/usr/bin/env bash
# Root key files for the clusters that make test, make run and bench/ start
# (wallet.root_key_file; see README.md "Server configuration").  Source it.
#
#   root_key_test FILE     writes the FIXED, TEST-ONLY key (below) to FILE
#   root_key_random FILE   writes a fresh random key to FILE unless it exists
#
# Both leave FILE mode 0600 and, as root, owned by postgres: the server
# refuses a key file that others can read.

# TEST-ONLY root key: public (it is in this repository and in
# docs/code-format.md, whose test vectors are computed from it), so codes
# signed with it prove nothing.  Never configure it on a real server.
WALLET_TEST_ROOT_KEY=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f

_root_key_protect() {
    chmod 600 "$1"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$1"; fi
}

root_key_test() {
    local file=$1
    (umask 077; printf '%s\n' "$WALLET_TEST_ROOT_KEY" > "$file")
    _root_key_protect "$file"
}

root_key_random() {
    local file=$1
    if [ ! -s "$file" ]; then
        (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$file"; echo >> "$file")
    fi
    _root_key_protect "$file"
}

# TEST-ONLY installation id: tests that need the test vectors of
# docs/code-format.md give the database this id (an INSERT into
# wallet.installation replaces it while no key version is bound to it).
WALLET_TEST_INSTALLATION_ID=00112233-4455-6677-8899-aabbccddeeff

#!/usr/bin/env bash
# Installs the Debian packages wallet needs to build and test, only those missing.
# Idempotent and quick when everything is present; needs root (or sudo) to install.
set -euo pipefail

PACKAGES=(postgresql-15 postgresql-server-dev-15 libsodium-dev postgresql-15-pgtap
          libtap-parser-sourcehandler-pgtap-perl postgresql-contrib
          python3    # docs/code_reference.py, the offline reference of the code format
          postgresql-15-cron)   # test/concurrency/maintenance_cron.t: wallet.run_maintenance scheduled by pg_cron

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: all ${#PACKAGES[@]} packages present"
    exit 0
fi

echo "deps: installing ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "deps: not root and no sudo; install these packages, then run again: ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: installed ${missing[*]}"

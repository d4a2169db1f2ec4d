#!/bin/sh
# Creates .venv with the gateway installed; `bootstrap.sh test` adds the test tools.
# Works on a fresh Debian with Python 3.11: installs python3-venv with apt-get when missing.
set -eu
cd "$(dirname "$0")/.."
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    else
        echo "python3-venv is missing: run 'sudo apt-get install python3-venv'" >&2
        exit 1
    fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
extras=""
[ "${1:-}" = test ] && extras="[test]"
.venv/bin/pip install --quiet --disable-pip-version-check -e ".$extras"

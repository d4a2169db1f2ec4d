#!/bin/sh
# Creates .venv with the gateway installed; `bootstrap.sh test` adds the test tools.
#   sh deploy/bootstrap.sh             a venv for you: built with the first python3 on PATH
#   sh deploy/bootstrap.sh --system    the service's venv (deploy/README.md): built with /usr/bin/python3, so that a
#                                      service user can run it (a pyenv or ~/.local python under /root cannot be)
# Works on a fresh Debian with Python 3.11: installs python3-venv with apt-get when missing.
set -eu
cd "$(dirname "$0")/.."
python=python3
if [ "${1:-}" = --system ]; then
    python=/usr/bin/python3
    shift
    if [ ! -x "$python" ]; then
        echo "$python is missing: run 'apt-get install python3 python3-venv'" >&2
        exit 1
    fi
fi
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    else
        echo "python3-venv is missing: run 'sudo apt-get install python3-venv'" >&2
        exit 1
    fi
fi
if [ -x .venv/bin/python ] && [ "$python" = /usr/bin/python3 ] && ! grep -qx 'home = /usr/bin' .venv/pyvenv.cfg; then
    echo "rebuilding .venv from $python (it was built from $(sed -n 's/^home = //p' .venv/pyvenv.cfg))" >&2
    rm -rf .venv
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
extras=""
[ "${1:-}" = test ] && extras="[test]"
.venv/bin/pip install --quiet --disable-pip-version-check -e ".$extras"

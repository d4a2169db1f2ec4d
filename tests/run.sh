#!/bin/sh
# The test command: sets up .venv with the test tools, installs the servers some tests start
# (nginx, redis-server), the Chromium the browser tests drive and the Node.js the Vercel AI SDK and
# React tests run when missing, type-checks gateway/ with mypy and runs the whole suite. Extra arguments go to pytest.
set -eu
cd "$(dirname "$0")/.."
sh deploy/bootstrap.sh test
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx >/dev/null
    else
        echo "nginx is missing: the deployment test needs it (sudo apt-get install nginx)" >&2
    fi
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        # Debian's own packages; the test then runs `npm ci` in examples/vercel-ai itself.
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; } ||
            echo "could not install nodejs and npm: the Vercel AI SDK test will skip (fail with CI=true)" >&2
    else
        echo "node or npm is missing: the Vercel AI SDK test needs them (sudo apt-get install nodejs npm)" >&2
    fi
fi
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then
        # Debian's Chromium, which Playwright drives as it is: `playwright install` cannot download here.
        apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null
    else
        echo "chromium is missing: the browser tests need it (sudo apt-get install chromium)" >&2
    fi
fi
if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    else
        echo "redis-server is missing: the Redis limits tests need it (sudo apt-get install redis-server)" >&2
    fi
fi
# Types first: mypy reads its settings from setup.cfg ([mypy]: strict on gateway/); an error fails the run.
.venv/bin/python -m mypy
exec .venv/bin/python -m pytest -q "$@"

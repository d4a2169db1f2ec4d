#!/usr/bin/env bash
# Installs the peers that bench/compare.py measures beside the gateway, outside the repo:
#   LiteLLM's proxy from PyPI in its own venv, Portkey's gateway from npm.
# Usage: bench/peers/setup.sh [DIR]   (default $GATEWAY_BENCH_PEERS or ~/.cache/gateway-bench-peers)
# Idempotent: a peer already installed at its pinned version is left as it is.
# Never run from CI or the test command: it downloads some hundred MB.
set -euo pipefail

LITELLM_VERSION=1.108.7
PORTKEY_VERSION=1.15.2
# Portkey 1.15.2 answers every request with a 500 ("TypeError: immutable") on @hono/node-server
# from 1.14 on (their Response keeps fetch's immutable headers), which its "^1.3.3" lets npm pick: Portkey-AI/gateway issue 1389.
HONO_NODE_SERVER_VERSION=1.13.8
DIR=${1:-${GATEWAY_BENCH_PEERS:-$HOME/.cache/gateway-bench-peers}}
PYTHON=${PYTHON:-python3}

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

installed_litellm() {
    "$DIR/litellm/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || true
}

if [[ "$(installed_litellm)" == "$LITELLM_VERSION" ]]; then
    echo "litellm $LITELLM_VERSION: already in $DIR/litellm"
else
    echo "litellm $LITELLM_VERSION: installing into $DIR/litellm"
    [[ -x "$DIR/litellm/bin/python" ]] || "$PYTHON" -m venv "$DIR/litellm"
    "$DIR/litellm/bin/python" -m pip install --quiet --upgrade pip
    "$DIR/litellm/bin/python" -m pip install --quiet "litellm[proxy]==$LITELLM_VERSION"
    [[ "$(installed_litellm)" == "$LITELLM_VERSION" ]] || { echo "litellm: install failed" >&2; exit 1; }
fi

installed_portkey() {
    node -p "require('$DIR/portkey/node_modules/@portkey-ai/gateway/package.json').version" 2>/dev/null || true
}
installed_hono_node_server() {
    node -p "require('$DIR/portkey/node_modules/@hono/node-server/package.json').version" 2>/dev/null || true
}

if [[ "$(installed_portkey)" == "$PORTKEY_VERSION" && "$(installed_hono_node_server)" == "$HONO_NODE_SERVER_VERSION" ]]; then
    echo "@portkey-ai/gateway $PORTKEY_VERSION: already in $DIR/portkey"
else
    command -v npm >/dev/null || { echo "npm not found: install Node.js 18 or later" >&2; exit 1; }
    echo "@portkey-ai/gateway $PORTKEY_VERSION: installing into $DIR/portkey"
    mkdir -p "$DIR/portkey"
    cat > "$DIR/portkey/package.json" <<JSON
{"name": "gateway-bench-peers", "private": true,
 "dependencies": {"@portkey-ai/gateway": "$PORTKEY_VERSION"},
 "overrides": {"@hono/node-server": "$HONO_NODE_SERVER_VERSION"}}
JSON
    npm install --prefix "$DIR/portkey" --no-audit --no-fund --loglevel=error
    [[ "$(installed_portkey)" == "$PORTKEY_VERSION" && "$(installed_hono_node_server)" == "$HONO_NODE_SERVER_VERSION" ]] \
        || { echo "portkey: install failed" >&2; exit 1; }
fi

printf '{"litellm": "%s", "portkey": "%s", "@hono/node-server": "%s"}\n' \
    "$(installed_litellm)" "$(installed_portkey)" "$(installed_hono_node_server)" > "$DIR/versions.json"
echo "peers ready in $DIR: $(cat "$DIR/versions.json")"

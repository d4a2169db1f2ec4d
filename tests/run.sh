#!/bin/sh
# The test command: sets up .venv with the test tools and runs the whole suite.
# Extra arguments go to pytest.
set -eu
cd "$(dirname "$0")/.."
sh deploy/bootstrap.sh test
exec .venv/bin/python -m pytest -q "$@"

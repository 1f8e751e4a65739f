#!/usr/bin/env bash
# Install everything the test suite needs, then run it. Arguments go to pytest.
# Works on a fresh machine with python3; as root it also installs the system packages
# the browser test needs (Debian's chromium, Node's npm for @segment/analytics-next).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"

if [ -f tests/gateway/browser/setup.sh ]; then
    bash tests/gateway/browser/setup.sh
fi

exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# Install everything the test suite needs, then run it. Arguments go to pytest.
# Works on a fresh machine with python3; as root it also installs the system packages
# some tests need: Debian's prometheus and chromium, and @segment/analytics-next from npm.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"

# System packages for the tests that use real servers: Prometheus (metrics queries) and
# PostgreSQL (the warehouse destination; tests start their own cluster with initdb).
missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -f tests/gateway/browser/setup.sh ]; then
    bash tests/gateway/browser/setup.sh
fi

exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# Installs what tests/gateway/test_browser.py needs: Debian's Chromium and the pinned
# @segment/analytics-next from npm (package-lock.json). Idempotent and non-interactive.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v chromium >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo -n); fi
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

bundle=node_modules/@segment/analytics-next/dist/umd/index.js
installed() {
    node -p "require('./node_modules/@segment/analytics-next/package.json').version" 2>/dev/null || true
}
wanted=$(node -p "require('./package.json').dependencies['@segment/analytics-next']")
if [ ! -f "$bundle" ] || [ "$(installed)" != "$wanted" ]; then
    npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
fi
test -f "$bundle"
echo "browser test setup: $(chromium --version 2>/dev/null | head -1), analytics-next $(installed)"

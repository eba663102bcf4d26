#!/usr/bin/env bash
# Installs what the browser tests need (Debian's Chromium, the npm packages of the lockfile)
# and runs them against the example service. Fails, never skips, when something is missing.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
npm ci --no-audit --no-fund --loglevel=error
npm test

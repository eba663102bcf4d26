#!/usr/bin/env bash
# Installs what the browser tests need (Debian's Chromium, psql, the npm packages of the
# lockfile) and runs them against the example service (two of them on PostgreSQL for the
# Nodes view, at DURABLE_JOBS_PG_URL). Fails, never skips, when something is missing.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
# The Nodes test drops its PostgreSQL schema with psql (the server is .ci/postgres's).
if ! command -v psql >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-client >/dev/null
fi
npm ci --no-audit --no-fund --loglevel=error
npm test

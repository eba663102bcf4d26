#!/usr/bin/env bash
# Fuzzes the HTTP API with schemathesis from its own OpenAPI description: the example service
# with seed data runs with an operator token, every operation but the never-ending streams gets
# generated requests (valid and invalid), and any 5xx answer, or a server that stops answering,
# fails the run.
set -euo pipefail
cd "$(dirname "$0")/../.."

SERVICE="${DURABLE_JOBS_SERVICE:-target/debug/examples/service}"
EXAMPLES="${FUZZ_EXAMPLES:-30}"
TOKEN="fuzz-token"
LOG="$(mktemp)"

"$SERVICE" --addr 127.0.0.1:0 --token "$TOKEN" --seed >"$LOG" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 1 100); do
  grep -q 'listening on' "$LOG" && break
  kill -0 "$PID" 2>/dev/null || { cat "$LOG"; exit 1; }
  sleep 0.1
done
URL="$(sed -n 's/^listening on //p' "$LOG")/api"
[ -n "$URL" ] || { echo "the service did not start"; cat "$LOG"; exit 1; }

# In a folder of its own: schemathesis keeps a cache in the working directory.
WORK="$(mktemp -d)"
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$LOG" "$WORK"' EXIT
(cd "$WORK" && schemathesis run "$URL/openapi.json" \
  --url "$URL" \
  --header "Authorization: Bearer $TOKEN" \
  --checks not_a_server_error \
  --exclude-path-regex 'subscribe' \
  --max-examples "$EXAMPLES" \
  --phases examples,coverage,fuzzing \
  --seed 1 \
  --suppress-health-check all)

# The server is still up and answering.
kill -0 "$PID"
curl -fsS "$URL/health" >/dev/null
echo "fuzzing found no server error"

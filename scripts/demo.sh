#!/usr/bin/env bash
# Start the bundled Airbyte simulator on a free loopback port, point airbyte-fleet at it the way a
# user points it at a real server (the same environment variables), show what it does, stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
out=$(mktemp)
sim_pid=""
cleanup() {
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
    rm -f "$out"
}
trap cleanup EXIT

"$BIN/airbyte-fleet" simulate --host 127.0.0.1 --port 0 --connections 24 --workspaces 2 \
    --sync-seconds 2:6 --failure-rate 0.15 --incomplete-rate 0.2 --inactive 2 \
    --client-id demo-client --client-secret demo-secret --seed 7 >"$out" &
sim_pid=$!
for _ in $(seq 100); do grep -q "^listening on" "$out" && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$out")
[ -n "$url" ] || { echo "the simulator did not start" >&2; exit 1; }
echo "Simulated Airbyte at $url"

export AIRBYTE_BASE_URL="$url" AIRBYTE_CLIENT_ID=demo-client AIRBYTE_CLIENT_SECRET=demo-secret
export USE_SERVER_AUTH=TRUE AIRBYTE_AUTH_TYPE=client_credentials

echo
echo "\$ airbyte-fleet connections"
"$BIN/airbyte-fleet" connections --log-format console 2>/dev/null

echo
echo "\$ airbyte-fleet run --all --max-concurrency 10 --poll-interval 1s --retries 1 --retry-backoff 1s --result-file .airbyte-fleet/demo-result.json"
set +e
"$BIN/airbyte-fleet" run --all --max-concurrency 10 --poll-interval 1s --retries 1 \
    --retry-backoff 1s --result-file .airbyte-fleet/demo-result.json --log-format console --log-level warning
code=$?
set -e
echo
echo "exit code $code (0: all succeeded, 1: some failed). The JSON result is in .airbyte-fleet/demo-result.json."

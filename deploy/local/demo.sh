#!/usr/bin/env bash
# The main job, locally: a worker on the local Kafka + Redis, a POS simulator (60 days of
# history, then a minute of live receipts), the segment-change events and a summary.
# Run through `make demo` (which installs and starts the infrastructure first).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BIN="$ROOT/.venv/bin"
RUN="demo$(date +%s)"
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-$(deploy/local/kafka.sh status)}"
export LOYALTY_APP_ID="$RUN" LOYALTY_RULES="${LOYALTY_RULES:-boostfeel,rfm,netix}"
export LOYALTY_TOPIC_RECEIPTS="$RUN.pos.receipts" LOYALTY_TOPIC_PROFILES="$RUN.crm.client-profiles"
export LOYALTY_TOPIC_CHANGES="$RUN.loyalty.segment-changes" LOYALTY_TOPIC_DLQ="$RUN.loyalty.receipts.dlq"
export LOYALTY_TOPIC_CLIENT_EVENTS="$RUN.loyalty.client-events"
export LOYALTY_DATA_DIR="$ROOT/.local/$RUN" LOYALTY_PARTITIONS=4 LOYALTY_DUE_INTERVAL=2
export LOYALTY_WEB_PORT="${LOYALTY_WEB_PORT:-6066}" LOYALTY_LOG_LEVEL=warning
CLIENTS="${DEMO_CLIENTS:-500}" LIVE_SECONDS="${DEMO_SECONDS:-60}" RATE="${DEMO_RATE:-50}"

echo "== demo run $RUN: topics $RUN.*, rules $LOYALTY_RULES"
"$BIN/loyalty" topics >/dev/null
"$BIN/loyalty" worker > "$ROOT/.local/$RUN.worker.log" 2>&1 &
WORKER=$!
export LOYALTY_LOOKUP_PORT="${LOYALTY_LOOKUP_PORT:-6068}"
"$BIN/loyalty" lookup > "$ROOT/.local/$RUN.lookup.log" 2>&1 &
LOOKUP=$!
trap 'kill $WORKER $LOOKUP 2>/dev/null || true; wait $WORKER $LOOKUP 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$LOYALTY_WEB_PORT/health" >/dev/null 2>&1 && break
  kill -0 $WORKER 2>/dev/null || { tail -30 "$ROOT/.local/$RUN.worker.log"; exit 1; }
  sleep 0.5
done
echo "== worker up (pid $WORKER, http://127.0.0.1:$LOYALTY_WEB_PORT/metrics)"
echo "== POS history: $CLIENTS clients, 60 days up to now"
"$BIN/loyalty" produce --clients "$CLIENTS" --days 60 --end now --seed 7
echo "== live POS traffic: $RATE receipts/s for $LIVE_SECONDS s"
"$BIN/loyalty" produce --live --clients "$CLIENTS" --rate "$RATE" --duration "$LIVE_SECONDS" --seed 7
sleep 5
echo "== a few segment-change events (CloudEvents on $LOYALTY_TOPIC_CHANGES):"
LAST=$("$BIN/loyalty" tail --idle 3 | tail -n 5)
echo "$LAST"
CLIENT=$(echo "$LAST" | tail -n 1 | "$BIN/python" -c 'import json, sys; print(json.loads(sys.stdin.read())["subject"])')
echo "== the POS lookup of $CLIENT (loyalty lookup, http://127.0.0.1:$LOYALTY_LOOKUP_PORT/clients/$CLIENT):"
curl -sf -H "Authorization: Bearer ${LOYALTY_API_TOKEN:-}" "http://127.0.0.1:$LOYALTY_LOOKUP_PORT/clients/$CLIENT" \
  || echo "(lookup failed: see .local/$RUN.lookup.log)"
echo
echo "== summary"
"$BIN/loyalty" summary

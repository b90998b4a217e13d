#!/usr/bin/env bash
# The main job, locally: a worker and the POS lookup server on the local Kafka + Redis, a POS
# simulator (60 days of history: CRM profiles, receipts and the communications of the same
# clients; then live receipts), the segment-change events, a lookup and a summary. Run
# through `make demo` (which installs and starts the infrastructure first); works with a
# Kafka and a Redis that already run (KAFKA_BOOTSTRAP_SERVERS, REDIS_URL).
#   deploy/local/demo.sh          a demo run; DEMO_KEEP=1 leaves the worker and lookup running
#   deploy/local/demo.sh clean    stop kept demo processes, delete every demo run's topics,
#                                 Redis keys, data and logs (`make demo-clean`)
# Env: DEMO_CLIENTS (500), DEMO_SECONDS (60), DEMO_RATE (50), DEMO_KEEP, LOYALTY_WEB_PORT
# (6066), LOYALTY_LOOKUP_PORT (6068), LOYALTY_RULES (boostfeel,rfm,netix,manzana), LOYALTY_API_TOKEN.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BIN="$ROOT/.venv/bin"
STATE="$ROOT/.local/demo"  # one <run>.env per kept run: its pids
mkdir -p "$STATE"
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-$(deploy/local/kafka.sh status 2>/dev/null || echo 127.0.0.1:9092)}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"

# A pid is a kept demo process if it is alive and runs this checkout's `loyalty worker|lookup`
# (a recorded pid may have been reused by something else since).
ours() { kill -0 "$1" 2>/dev/null && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q "$BIN/loyalty \(worker\|lookup\)"; }

alive() { local p; for p in "$@"; do ours "$p" && return 0; done; return 1; }  # (a zombie is not ours)

clean() {
  local f pid i n=0 files=0 pids=()
  for f in "$STATE"/demo*.env; do
    [[ -f "$f" ]] || continue
    for pid in $(sed -n 's/^PIDS=//p' "$f"); do
      if ours "$pid"; then kill "$pid" && pids+=("$pid") && n=$((n + 1)); fi
    done
    rm -f "$f"
  done
  # wait for them to exit (up to 20 s, then SIGKILL): a worker still shutting down would
  # re-create topics (the broker auto-creates them) or write keys after they are deleted
  for ((i = 0; i < 40; i++)); do
    alive ${pids[@]+"${pids[@]}"} || break
    sleep 0.5
  done
  for pid in ${pids[@]+"${pids[@]}"}; do
    if ours "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  for f in "$ROOT"/.local/demo[0-9]*; do
    if [[ -e "$f" ]]; then files=$((files + 1)); fi
  done
  rm -rf "$ROOT"/.local/demo[0-9]*
  "$BIN/python" - "$KAFKA_BOOTSTRAP_SERVERS" "$REDIS_URL" "$n" "$files" <<'PY'
import asyncio, re, sys
from aiokafka.admin import AIOKafkaAdminClient
import redis.asyncio as aioredis

RUN = re.compile(r"^demo\d+[.-]")  # a run's topics and Faust's (prefixed by the app id)


async def topics(boot: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=boot, request_timeout_ms=15000)
    await admin.start()
    try:
        names = sorted(t for t in await admin.list_topics() if RUN.match(t))
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()


async def keys(url: str) -> int:
    r = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
    n = 0
    try:
        async for key in r.scan_iter(match="loyalty:demo*", count=1000):
            if re.match(rb"^loyalty:demo\d+:", key):
                n += await r.unlink(key)
    finally:
        await r.aclose()
    return n


async def main(boot: str, url: str, stopped: int, files: int) -> None:
    notes = []
    try:
        t = len(await asyncio.wait_for(topics(boot), 30))
    except Exception as e:  # no broker: nothing of ours to delete there now
        t, _ = 0, notes.append(f"Kafka {boot} not reachable, topics not checked ({type(e).__name__})")
    try:
        k = await asyncio.wait_for(keys(url), 120)
    except Exception as e:
        k, _ = 0, notes.append(f"Redis not reachable, keys not checked ({type(e).__name__})")
    note = "; " + "; ".join(notes) if notes else ""
    if stopped or t or k or files:
        print(f"demo clean: stopped {stopped} process(es), deleted {t} topic(s), {k} Redis key(s), "
              f"{files} .local/demo* dir(s)/log(s){note}")
    else:
        print(f"demo clean: nothing to clean{note}")


asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
PY
}

if [[ "${1:-}" == "clean" ]]; then clean; exit 0; fi
[[ -z "${1:-}" ]] || { echo "usage: $0 [clean]" >&2; exit 2; }

RUN="demo$(date +%s)"
export LOYALTY_APP_ID="$RUN" LOYALTY_RULES="${LOYALTY_RULES:-boostfeel,rfm,netix,manzana}"
# every topic the service uses, prefixed with the run (Faust's own are prefixed by the app id)
export LOYALTY_TOPIC_RECEIPTS="$RUN.pos.receipts" LOYALTY_TOPIC_PROFILES="$RUN.crm.client-profiles" \
  LOYALTY_TOPIC_COMMUNICATIONS="$RUN.crm.communications"
export LOYALTY_TOPIC_CHANGES="$RUN.loyalty.segment-changes" LOYALTY_TOPIC_DLQ="$RUN.loyalty.receipts.dlq"
export LOYALTY_TOPIC_CLIENT_EVENTS="$RUN.loyalty.client-events" LOYALTY_TOPIC_POPULATION="$RUN.loyalty.population"
export LOYALTY_TOPIC_FACTS="$RUN.loyalty.receipt-facts"
export LOYALTY_TOPIC_ACTIONS="$RUN.loyalty.scenario-actions" LOYALTY_TOPIC_ACTIONS_DLQ="$RUN.loyalty.scenario-actions.dlq"
export LOYALTY_DATA_DIR="$ROOT/.local/$RUN" LOYALTY_PARTITIONS=4 LOYALTY_DUE_INTERVAL=2
export LOYALTY_WEB_PORT="${LOYALTY_WEB_PORT:-6066}" LOYALTY_LOOKUP_PORT="${LOYALTY_LOOKUP_PORT:-6068}"
export LOYALTY_LOG_LEVEL=warning
CLIENTS="${DEMO_CLIENTS:-500}" LIVE_SECONDS="${DEMO_SECONDS:-60}" RATE="${DEMO_RATE:-50}"
WLOG="$ROOT/.local/$RUN.worker.log" LLOG="$ROOT/.local/$RUN.lookup.log"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for var in LOYALTY_WEB_PORT LOYALTY_LOOKUP_PORT; do
  if port_busy "${!var}"; then
    echo "demo: port ${!var} is in use (a kept demo? make demo-clean); or set $var to a free port" >&2
    exit 1
  fi
done

echo "== demo run $RUN: topics $RUN.*, rules $LOYALTY_RULES"
"$BIN/loyalty" topics >/dev/null
"$BIN/loyalty" worker >"$WLOG" 2>&1 &
WORKER=$!
"$BIN/loyalty" lookup >"$LLOG" 2>&1 &
LOOKUP=$!
if [[ -n "${DEMO_KEEP:-}" ]]; then
  # what `demo.sh clean` reads (PIDS) and the operator may want
  printf 'RUN=%s\nPIDS=%s %s\nWORKER_LOG=%s\nLOOKUP_LOG=%s\n' "$RUN" "$WORKER" "$LOOKUP" "$WLOG" "$LLOG" >"$STATE/$RUN.env"
  trap '[[ $? == 0 ]] || echo "demo: failed; worker $WORKER and lookup $LOOKUP still run (DEMO_KEEP): make demo-clean" >&2' EXIT
else
  trap 'kill $WORKER $LOOKUP 2>/dev/null || true; wait $WORKER $LOOKUP 2>/dev/null || true' EXIT
fi
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$LOYALTY_WEB_PORT/health" >/dev/null 2>&1 && break
  kill -0 $WORKER 2>/dev/null || { tail -30 "$WLOG"; exit 1; }
  sleep 0.5
done
curl -sf "http://127.0.0.1:$LOYALTY_WEB_PORT/health" >/dev/null 2>&1 \
  || { tail -30 "$WLOG"; echo "demo: the worker is not healthy after 60 s (log $WLOG)" >&2; exit 1; }
API="http://127.0.0.1:$LOYALTY_WEB_PORT"
echo "== worker up (pid $WORKER)"
echo "   dashboard  $API/dashboard"
echo "   API        $API/openapi.json, $API/segments, $API/reports/sizes"
echo "   metrics    $API/metrics    POS lookup http://127.0.0.1:$LOYALTY_LOOKUP_PORT/clients/<id>"
if [[ -n "${LOYALTY_API_TOKEN:-}" ]]; then  # never in a URL
  echo "   token      paste \$LOYALTY_API_TOKEN into the dashboard's token box; API and lookup:" \
    "curl -H \"Authorization: Bearer \$LOYALTY_API_TOKEN\" ..."
fi
echo "== CRM profiles of those clients (and a few registered lately, no purchase yet)"
"$BIN/loyalty" produce --profiles --clients "$CLIENTS" --days 60 --end now --seed 7 --quiet
echo "== POS history: $CLIENTS clients, 60 days up to now"
"$BIN/loyalty" produce --clients "$CLIENTS" --days 60 --end now --seed 7 --quiet
echo "== communications: mailings, SMS, push, calls and the clients' answers (manzana: active/passive)"
"$BIN/loyalty" produce --communications --clients "$CLIENTS" --days 60 --end now --seed 7 --quiet
echo "== live POS traffic: $RATE receipts/s for $LIVE_SECONDS s"
"$BIN/loyalty" produce --live --clients "$CLIENTS" --rate "$RATE" --duration "$LIVE_SECONDS" --seed 7
sleep 5
echo "== a few segment-change events (CloudEvents on $LOYALTY_TOPIC_CHANGES):"
LAST=$("$BIN/loyalty" tail --idle 3 | tail -n 5)
echo "$LAST"
CLIENT=$(echo "$LAST" | tail -n 1 | "$BIN/python" -c 'import json, sys; print(json.loads(sys.stdin.read())["subject"])')
echo "== the POS lookup of $CLIENT (http://127.0.0.1:$LOYALTY_LOOKUP_PORT/clients/$CLIENT):"
AUTH=()
[[ -z "${LOYALTY_API_TOKEN:-}" ]] || AUTH=(-H "Authorization: Bearer $LOYALTY_API_TOKEN")
curl -sf "${AUTH[@]}" "http://127.0.0.1:$LOYALTY_LOOKUP_PORT/clients/$CLIENT" || echo "(lookup failed: see $LLOG)"
echo
echo "== summary"
"$BIN/loyalty" summary
if [[ -n "${DEMO_KEEP:-}" ]]; then
  echo "== kept running (DEMO_KEEP): worker pid $WORKER (log $WLOG), lookup pid $LOOKUP (log $LLOG)"
  echo "   dashboard $API/dashboard; stop and delete every demo run's topics and keys: make demo-clean"
fi

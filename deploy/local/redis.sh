#!/usr/bin/env bash
# Local Redis, no Docker: Debian's redis-server, run as a daemon from .local/redis.
# Usage: deploy/local/redis.sh start|stop|status
# Env: REDIS_URL (use that server, do nothing), REDIS_PORT (6379)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BASE="$ROOT/.local/redis"
PIDF="$BASE/redis.pid" LOG="$BASE/redis.log"
PORT="${REDIS_PORT:-6379}"
URL="redis://127.0.0.1:$PORT/0"

say() { echo "redis.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# PID of the server this script started, if it is still alive.
our_pid() {
  local pid
  [[ -f "$PIDF" ]] || return 1
  pid="$(cat "$PIDF")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && grep -qa 'redis-server' "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

answers() { [[ "$(redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" == "PONG" ]]; }

install() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
  local sudo=""
  [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
  say "installing Debian's redis-server (apt-get) ..."
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >&2
}

start() {
  local pid i
  install
  if pid="$(our_pid)"; then
    say "already running (pid $pid), reusing"
  elif answers; then
    say "a Redis not started by this script already answers on port $PORT, reusing it"; echo "$URL"; return 0
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && die "port $PORT is in use by something else (set REDIS_PORT)"
    mkdir -p "$BASE"
    rm -f "$BASE"/temp-*.rdb  # a save cut short by SIGKILL
    say "starting redis-server on 127.0.0.1:$PORT (log: $LOG)"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$PORT" --dir "$BASE" \
      --pidfile "$PIDF" --logfile "$LOG" \
      || die "redis-server failed to start (see $LOG)"
  fi
  # 20 s to answer at all; while it answers LOADING (a large dump being read back), up to
  # REDIS_LOAD_TIMEOUT seconds more
  local reply waited=0 loading=0 limit="${REDIS_LOAD_TIMEOUT:-600}"
  for ((i = 0; i < 100; )); do
    reply="$(redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null || true)"
    if [[ "$reply" == "PONG" ]]; then say "ready on $URL"; echo "$URL"; return 0; fi
    if [[ "$reply" == LOADING* ]] && ((waited < limit * 5)); then
      ((loading)) || say "loading its dataset from $BASE/dump.rdb (waiting up to ${limit}s)"
      loading=1; waited=$((waited + 1))
    else
      i=$((i + 1))
    fi
    sleep 0.2
  done
  tail -n 20 "$LOG" >&2 || true
  die "redis did not answer PONG on port $PORT (20s, or ${limit}s while loading)"
}

stop() {
  local pid i
  if ! pid="$(our_pid)"; then rm -f "$PIDF"; say "not running"; return 0; fi
  say "stopping redis-server (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 600; i++)); do  # it saves its dataset first: a large one takes a while
    kill -0 "$pid" 2>/dev/null || { rm -f "$PIDF"; say "stopped"; return 0; }
    sleep 0.2
  done
  say "still alive after 120s, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PIDF"
}

status() {
  local pid
  if pid="$(our_pid)" && answers; then say "running (pid $pid) on $URL"; echo "$URL"; return 0; fi
  if command -v redis-cli >/dev/null && answers; then say "not started by this script, but a Redis answers on port $PORT"; echo "$URL"; return 0; fi
  say "stopped"; return 1
}

cmd="${1:-}"
case "$cmd" in start | stop | status) ;; *) echo "usage: $0 start|stop|status" >&2; exit 2 ;; esac
if [[ -n "${REDIS_URL:-}" ]]; then
  say "REDIS_URL is set, using it; nothing to $cmd"
  echo "$REDIS_URL"; exit 0
fi
"$cmd"

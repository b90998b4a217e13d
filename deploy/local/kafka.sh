#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft), no Docker: broker jars come from Maven Central.
# Usage: deploy/local/kafka.sh start|stop|status|reset
# Env: KAFKA_BOOTSTRAP_SERVERS (use that broker, do nothing), KAFKA_PORT (9092),
#      KAFKA_CONTROLLER_PORT (9093), KAFKA_SASL_PORT (9094), KAFKA_PARTITIONS (4),
#      KAFKA_HEAP_OPTS (-Xms256m -Xmx512m)
# Also a SASL_SSL listener on 127.0.0.1:$KAFKA_SASL_PORT (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512),
# user loyalty / loyalty-secret, TLS with a throw-away CA: .local/kafka/tls/ca.pem
# (client.pem/client.key there too, optional: the broker does not ask for client certs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
POM="$ROOT/deploy/local/pom.xml"
BASE="$ROOT/.local/kafka"
LIBS="$BASE/libs" DATA="$BASE/data" CONF="$BASE/config" TLS="$BASE/tls"
PIDF="$BASE/kafka.pid" PORTF="$BASE/kafka.port" SPORTF="$BASE/kafka.sasl.port" LOG="$BASE/kafka.log"
SCRAMF="$BASE/scram.cluster-id"
PORT="${KAFKA_PORT:-9092}" CPORT="${KAFKA_CONTROLLER_PORT:-9093}" SPORT="${KAFKA_SASL_PORT:-9094}"
SASL_USER=loyalty SASL_PASS=loyalty-secret KS_PASS=kafka-local # throw-away, local only
BOOT="127.0.0.1:$PORT"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}" STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"

say() { echo "kafka.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }
need() { command -v "$1" >/dev/null || die "'$1' not found in PATH ($2)"; }

# PID of the broker this script started, if it is still alive.
our_pid() {
  local pid
  [[ -f "$PIDF" ]] || return 1
  pid="$(cat "$PIDF")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && grep -qa 'kafka.Kafka' "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

# The process we launched is alive. Just after the launch its /proc cmdline can still be the
# forking shell's (exec not done yet on a busy machine), so our_pid's check would fail.
launched_alive() {
  [[ -f "$PIDF" ]] && kill -0 "$(cat "$PIDF")" 2>/dev/null
}

# Real Kafka protocol check: Metadata v4 request; ready when the reply lists >= 1 broker.
answers() {
  python3 - 127.0.0.1 "$PORT" <<'PY'
import socket, struct, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    s.settimeout(3)
    cid = b"kafka.sh"
    body = struct.pack(">hhih", 3, 4, 42, len(cid)) + cid + struct.pack(">ib", 0, 0)
    s.sendall(struct.pack(">i", len(body)) + body)
    buf = b""
    while len(buf) < 16:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    _, corr, _, nbrokers = struct.unpack(">iiii", buf[:16])
    sys.exit(0 if corr == 42 and nbrokers >= 1 else 1)
except Exception:
    sys.exit(1)
PY
}

# SASL_SSL check: TLS handshake verified against our CA, then SaslHandshake v1 (PLAIN);
# prints the broker's enabled mechanisms.
sasl_answers() {
  [[ -f "$TLS/ca.pem" ]] || return 1
  python3 - 127.0.0.1 "$1" "$TLS/ca.pem" <<'PY'
import socket, ssl, struct, sys
try:
    ctx = ssl.create_default_context(cafile=sys.argv[3])
    s = ctx.wrap_socket(socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3),
                        server_hostname=sys.argv[1])
    cid, mech = b"kafka.sh", b"PLAIN"
    body = struct.pack(">hhih", 17, 1, 43, len(cid)) + cid + struct.pack(">h", len(mech)) + mech
    s.sendall(struct.pack(">i", len(body)) + body)
    buf = b""
    while len(buf) < 4 or len(buf) < 4 + struct.unpack(">i", buf[:4])[0]:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    _, corr, err, n = struct.unpack(">iihi", buf[:14])
    mechs, off = [], 14
    for _ in range(n):
        (ln,) = struct.unpack(">h", buf[off:off + 2])
        mechs.append(buf[off + 2:off + 2 + ln].decode())
        off += 2 + ln
    print(",".join(mechs))
    sys.exit(0 if corr == 43 and err == 0 else 1)
except Exception:
    sys.exit(1)
PY
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

fetch_jars() {
  local stamp
  stamp="$(sha1sum "$POM" | cut -d' ' -f1)"
  [[ -f "$LIBS/.fetched" && "$(cat "$LIBS/.fetched")" == "$stamp" ]] && return 0
  need mvn "install Maven, e.g. apt-get install -y maven"
  say "fetching Kafka broker jars from Maven Central into $LIBS (once) ..."
  rm -rf "$LIBS.tmp"
  mvn -q -B -f "$POM" dependency:copy-dependencies -DoutputDirectory="$LIBS.tmp" >"$BASE/mvn.log" 2>&1 \
    || { cat "$BASE/mvn.log" >&2; die "Maven could not fetch the Kafka jars (output above)"; }
  echo "$stamp" >"$LIBS.tmp/.fetched" && rm -f "$BASE/mvn.log"
  rm -rf "$LIBS" && mv "$LIBS.tmp" "$LIBS"
}

# Throw-away CA (kept if present) + broker (PKCS12) and client certs, made once.
gen_tls() {
  local f
  for f in ca.pem ca.key broker.p12 client.pem client.key; do [[ -f "$TLS/$f" ]] || break; done
  [[ -f "$TLS/$f" ]] && return 0
  if ! command -v openssl >/dev/null && command -v apt-get >/dev/null; then
    say "installing openssl (apt-get) for the local TLS certificates"
    local sudo=(); [[ "$(id -u)" == 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq --no-install-recommends openssl >/dev/null
  fi
  need openssl "used to make the local TLS certificates, e.g. apt-get install -y openssl"
  say "generating a throw-away CA and certificates in $TLS (once)"
  rm -rf "$TLS.tmp" && mkdir -p "$TLS.tmp"
  (
    cd "$TLS.tmp" || exit 1
    umask 077
    if [[ -f "$TLS/ca.pem" && -f "$TLS/ca.key" ]]; then cp "$TLS/ca.pem" "$TLS/ca.key" .; else
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kafka.sh local CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout ca.key -out ca.pem
    fi
    for f in broker:localhost:serverAuth "client:$SASL_USER:clientAuth"; do
      IFS=: read -r name cn eku <<<"$f"
      openssl req -new -newkey rsa:2048 -nodes -subj "/CN=$cn" -keyout "$name.key" -out "$name.csr" &&
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=%s\n' "$eku" >"$name.ext" &&
        openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
          -days 3650 -extfile "$name.ext" -out "$name.pem" || exit 1
    done
    openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker \
      -passout "pass:$KS_PASS" -out broker.p12 || exit 1
    rm -f ./*.csr ./*.ext broker.key broker.pem
    chmod 644 ca.pem client.pem
    [[ -s ca.pem && -s ca.key && -s broker.p12 && -s client.pem && -s client.key ]]
  ) >"$BASE/tls.log" 2>&1 || { cat "$BASE/tls.log" >&2; die "TLS certificate generation failed (output above)"; }
  rm -f "$BASE/tls.log" && rm -rf "$TLS" && mv "$TLS.tmp" "$TLS"
}

write_config() {
  mkdir -p "$CONF" "$DATA"
  cat >"$CONF/server.properties" <<EOF
# Generated by deploy/local/kafka.sh on each start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT,SASL_SSL://127.0.0.1:$SPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,SASL_SSL://127.0.0.1:$SPORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER="$SASL_PASS";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$TLS/broker.p12
listener.name.sasl_ssl.ssl.keystore.password=$KS_PASS
listener.name.sasl_ssl.ssl.key.password=$KS_PASS
listener.name.sasl_ssl.ssl.client.auth=none
log.dirs=$DATA
num.partitions=${KAFKA_PARTITIONS:-4}
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  cat >"$CONF/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.Target=System.err
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
EOF
}

kjava() { java -Dlog4j.configuration="file:$CONF/log4j.properties" -cp "$LIBS/*" "$@"; }

cluster_id() { sed -n 's/^cluster.id=//p' "$DATA/meta.properties" 2>/dev/null || true; }

# SCRAM credentials live in the cluster metadata: added at format time, or once here for a
# data dir formatted by an older kafka.sh (marker: the cluster id they were added to).
ensure_scram() {
  local cid m
  cid="$(cluster_id)"
  [[ -n "$cid" && "$(cat "$SCRAMF" 2>/dev/null)" == "$cid" ]] && return 0
  say "adding SCRAM-SHA-256/512 credentials for user $SASL_USER (once per data dir)"
  # One mechanism per call: both in one --add-config fails with DuplicateResourceException.
  for m in SCRAM-SHA-256 SCRAM-SHA-512; do
    kjava kafka.admin.ConfigCommand --bootstrap-server "$BOOT" --alter --entity-type users \
      --entity-name "$SASL_USER" --add-config "$m=[password=$SASL_PASS]" \
      >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; die "could not add the $m credential"; }
  done
  echo "$cid" >"$SCRAMF"
}

# One line about the SASL_SSL listener of the broker that now answers on $BOOT.
report_sasl() {
  local sp i
  if ! sp="$(cat "$SPORTF" 2>/dev/null)"; then
    say "this broker was started by an older kafka.sh, without the SASL_SSL listener; to add it:" \
      "deploy/local/kafka.sh stop && deploy/local/kafka.sh start"
    return 0
  fi
  for ((i = 0; i < 10; i++)); do
    sasl_answers "$sp" >/dev/null && { say "SASL_SSL on 127.0.0.1:$sp (CA ${TLS#"$ROOT"/}/ca.pem, user $SASL_USER)"; return 0; }
    sleep 0.5
  done
  say "WARNING: the SASL_SSL listener on 127.0.0.1:$sp does not answer (see $LOG)"
}

start() {
  local pid p i
  need python3 "used for the readiness check"
  if pid="$(our_pid)"; then
    p="$(cat "$PORTF" 2>/dev/null || echo "$PORT")"
    [[ "$p" == "$PORT" ]] || die "this checkout's broker (pid $pid) runs on port $p; run stop before changing KAFKA_PORT"
    p="$(cat "$SPORTF" 2>/dev/null || echo "$SPORT")"
    [[ "$p" == "$SPORT" ]] || die "this checkout's broker (pid $pid) has SASL_SSL on port $p; run stop before changing KAFKA_SASL_PORT"
    say "already running (pid $pid), reusing"
  elif answers; then
    say "a Kafka broker not started by this script already answers on $BOOT, reusing it"
    sasl_answers "$SPORT" >/dev/null || say "it has no SASL_SSL listener on 127.0.0.1:$SPORT that trusts ${TLS#"$ROOT"/}/ca.pem"
    echo "$BOOT"; return 0
  else
    for p in "$PORT" "$CPORT" "$SPORT"; do
      port_open "$p" && die "port $p is in use by something else (set KAFKA_PORT / KAFKA_CONTROLLER_PORT / KAFKA_SASL_PORT)"
    done
    need java "install a JDK 17, e.g. apt-get install -y openjdk-17-jre-headless"
    mkdir -p "$BASE"
    fetch_jars
    gen_tls
    write_config
    if [[ ! -f "$DATA/meta.properties" ]]; then
      say "formatting storage in $DATA (first start)"
      kjava kafka.tools.StorageTool format -t "$(kjava kafka.tools.StorageTool random-uuid 2>>"$LOG")" \
        -S "SCRAM-SHA-256=[name=$SASL_USER,password=$SASL_PASS]" -S "SCRAM-SHA-512=[name=$SASL_USER,password=$SASL_PASS]" \
        -c "$CONF/server.properties" >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; die "storage format failed"; }
      cluster_id >"$SCRAMF"
    fi
    say "starting broker (log: $LOG)"
    echo "==== $(date -Is) start" >>"$LOG"
    # shellcheck disable=SC2086
    nohup java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC -Djava.awt.headless=true \
      -Dlog4j.configuration="file:$CONF/log4j.properties" -cp "$LIBS/*" \
      kafka.Kafka "$CONF/server.properties" >>"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDF"
    echo "$PORT" >"$PORTF"
    echo "$SPORT" >"$SPORTF"
  fi
  for ((i = 0; i < START_TIMEOUT; i++)); do
    launched_alive || { tail -n 30 "$LOG" >&2; die "broker exited during startup (see $LOG)"; }
    if answers; then
      say "ready on $BOOT (pid $(our_pid))"
      ensure_scram
      report_sasl
      echo "$BOOT"; return 0
    fi
    sleep 1
  done
  tail -n 30 "$LOG" >&2
  die "broker did not answer on $BOOT within ${START_TIMEOUT}s (still running: see $LOG, or run stop)"
}

stop() {
  local pid i
  if ! pid="$(our_pid)"; then rm -f "$PIDF" "$PORTF" "$SPORTF"; say "not running"; return 0; fi
  say "stopping broker (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < STOP_TIMEOUT; i++)); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$PIDF" "$PORTF" "$SPORTF"; say "stopped"; return 0; }
    sleep 1
  done
  say "still alive after ${STOP_TIMEOUT}s, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  sleep 1
  rm -f "$PIDF" "$PORTF" "$SPORTF"
}

# Status line for the SASL_SSL port.
sasl_status() {
  local mechs
  if mechs="$(sasl_answers "$SPORT")"; then say "SASL_SSL answering on 127.0.0.1:$SPORT ($mechs)"
  else say "SASL_SSL not answering on 127.0.0.1:$SPORT"; fi
}

status() {
  local pid
  if pid="$(our_pid)"; then
    PORT="$(cat "$PORTF" 2>/dev/null || echo "$PORT")" BOOT="127.0.0.1:$PORT"
    SPORT="$(cat "$SPORTF" 2>/dev/null || echo "$SPORT")"
    if answers; then say "running (pid $pid), answering on $BOOT"; sasl_status; echo "$BOOT"; return 0; fi
    say "running (pid $pid) but not answering on $BOOT yet"; return 1
  fi
  if answers; then say "not started by this script, but a broker answers on $BOOT"; sasl_status; echo "$BOOT"; return 0; fi
  say "stopped"; return 1
}

reset() { stop; say "wiping $DATA and $CONF"; rm -rf "$DATA" "$CONF" "$LOG" "$SCRAMF"; }

cmd="${1:-}"
case "$cmd" in start | stop | status | reset) ;; *) echo "usage: $0 start|stop|status|reset" >&2; exit 2 ;; esac
if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
  say "KAFKA_BOOTSTRAP_SERVERS is set, using it; nothing to $cmd"
  echo "$KAFKA_BOOTSTRAP_SERVERS"; exit 0
fi
"$cmd"

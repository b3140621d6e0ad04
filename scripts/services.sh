#!/usr/bin/env bash
# Starts and stops the real servers that Quiver's integration tests talk to:
# Apache Kafka 4 (KRaft, one node) and Apache Cassandra 5.0 (the CQL stand-in for ScyllaDB).
#
#   scripts/services.sh up       fetch the jars (cached), start both, wait until each really answers
#   scripts/services.sh down     stop exactly the processes `up` started (pid files), delete their data
#   scripts/services.sh stop NAME   stop one server (kafka or cassandra), keeping its data
#   scripts/services.sh start NAME  start a stopped server again on its kept data, wait until ready
#   scripts/services.sh status   say which are running and ready
#   scripts/services.sh logs     print the tail of each server's log
#
# Settings (environment):
#   QUIVER_KAFKA_PORT        broker port on 127.0.0.1              (default 9092)
#   QUIVER_KAFKA_CONTROLLER_PORT  KRaft controller port            (default 9093)
#   QUIVER_CQL_PORT          CQL native protocol port on 127.0.0.1 (default 9042)
#   QUIVER_CASSANDRA_STORAGE_PORT  Cassandra inter-node port       (default 7000)
#   QUIVER_SERVICES_DIR      pid files, logs and data               (default ${TMPDIR:-/tmp}/quiver-services)
#   QUIVER_JAR_CACHE         downloaded jars, outside the build tree (default ${XDG_CACHE_HOME:-~/.cache}/quiver/jars)
#   QUIVER_SERVICES_TIMEOUT  seconds to wait for each server        (default 180)
#   JAVA_HOME                a JDK 11 or 17 for Cassandra; found under /usr/lib/jvm when unset
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
kafka_port=${QUIVER_KAFKA_PORT:-9092}
controller_port=${QUIVER_KAFKA_CONTROLLER_PORT:-9093}
cql_port=${QUIVER_CQL_PORT:-9042}
storage_port=${QUIVER_CASSANDRA_STORAGE_PORT:-7000}
state_dir=${QUIVER_SERVICES_DIR:-${TMPDIR:-/tmp}/quiver-services}
jar_cache=${QUIVER_JAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/quiver/jars}
timeout_secs=${QUIVER_SERVICES_TIMEOUT:-180}

kafka_main=kafka.Kafka
cassandra_main=org.apache.cassandra.service.CassandraDaemon

log() { printf '[services] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# A JDK whose major version Cassandra 5.0 supports (11 or 17); Kafka 4 runs on it too.
find_java() {
  local candidate
  for candidate in ${JAVA_HOME:+"$JAVA_HOME/bin/java"} "$(command -v java || true)" /usr/lib/jvm/*17*/bin/java /usr/lib/jvm/*11*/bin/java; do
    [ -x "$candidate" ] || continue
    case "$("$candidate" -version 2>&1 | head -n 1)" in
      *'"17.'* | *'"11.'*) echo "$candidate"; return 0 ;;
    esac
  done
  die "no JDK 11 or 17 found; install openjdk-17-jdk-headless or set JAVA_HOME"
}

# Resolves a server's runtime classpath with Maven into the cache; a stamp keyed by the pom's
# checksum makes later runs skip the download.
fetch_jars() {
  local name=$1 pom="$here/services/$1/pom.xml"
  local stamp dir
  stamp=$(sha256sum "$pom" | cut -c1-16)
  dir="$jar_cache/$name-$stamp"
  if [ ! -f "$dir/.complete" ]; then
    command -v mvn >/dev/null || die "mvn is needed to fetch the $name jars"
    log "fetching $name jars into $dir"
    rm -rf "$dir"
    if ! mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$dir" >"$state_dir/mvn-$name.log" 2>&1; then
      cat "$state_dir/mvn-$name.log" >&2
      die "mvn could not resolve $pom"
    fi
    touch "$dir/.complete"
  fi
  echo "$dir"
}

pid_file() { echo "$state_dir/$1.pid"; }

# Prints the pid of a server this script started, if that process is still alive and still the
# server (the main class is checked, so a recycled pid is never mistaken for it).
running_pid() {
  local name=$1 main=$2 file pid
  file=$(pid_file "$name")
  [ -f "$file" ] || return 1
  pid=$(cat "$file")
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$main" || return 1
  echo "$pid"
}

# Succeeds, saying so, when a server this script started is still running.
already_running() {
  local pid
  pid=$(running_pid "$1" "$2") || return 1
  log "$1 already running (pid $pid)"
}

# `up` starts a fresh one-node cluster with an empty data directory; `start` (mode keep) goes on
# with the data a `stop` left.
data_dir() {
  local name=$1 mode=$2
  [ "$mode" = keep ] && [ -d "$state_dir/$name-data" ] && { echo "$state_dir/$name-data"; return; }
  [ "$mode" = keep ] && die "$name has no kept data; run \`$0 up\`"
  rm -rf "$state_dir/$name-data"
  mkdir -p "$state_dir/$name-data"
  echo "$state_dir/$name-data"
}

probe() { python3 "$here/services/probe.py" "$@"; }

wait_ready() {
  local name=$1 kind=$2 address=$3 main=$4 deadline=$((SECONDS + timeout_secs)) started=$SECONDS
  until probe "$kind" "$address" >/dev/null 2>&1; do
    if ! running_pid "$name" "$main" >/dev/null; then
      log "$name exited during start-up; last lines of $state_dir/$name.log:"
      tail -n 40 "$state_dir/$name.log" >&2 || true
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "$name not ready after ${timeout_secs}s; last lines of $state_dir/$name.log:"
      tail -n 40 "$state_dir/$name.log" >&2 || true
      stop_server "$name" "$main"
      return 1
    fi
    sleep 1
  done
  log "$(probe "$kind" "$address") (started in $((SECONDS - started))s)"
}

start_kafka() {
  already_running kafka "$kafka_main" && return 0
  local jars=$1 mode=$2 java data config
  java=$(find_java)
  data=$(data_dir kafka "$mode")
  config="$state_dir/kafka.properties"
  cat >"$config" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$kafka_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$kafka_port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
EOF
  cat >"$state_dir/kafka-log4j2.properties" <<'EOF'
rootLogger.level=INFO
rootLogger.appenderRef.stdout.ref=STDOUT
appender.stdout.type=Console
appender.stdout.name=STDOUT
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
EOF
  if [ "$mode" = fresh ]; then
    log "formatting kafka storage in $data"
    # A random cluster id, base64 of a UUID. One in 64 begins with `-`, which the tool's argument
    # parser takes for an option, so those are drawn again.
    local cluster_id
    cluster_id=$(python3 -c 'import base64,uuid
while True:
    id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not id.startswith("-"):
        print(id)
        break')
    "$java" -Xmx256m -cp "$jars/*" kafka.tools.StorageTool format \
      -t "$cluster_id" \
      -c "$config" >"$state_dir/kafka-format.log" 2>&1 \
      || { cat "$state_dir/kafka-format.log" >&2; die "kafka storage format failed"; }
  fi
  log "starting kafka on 127.0.0.1:$kafka_port"
  setsid nohup "$java" -Xms512m -Xmx512m -XX:+UseG1GC \
    -Dlog4j2.configurationFile="$state_dir/kafka-log4j2.properties" \
    -cp "$jars/*" "$kafka_main" "$config" >"$state_dir/kafka.log" 2>&1 </dev/null &
  echo $! >"$(pid_file kafka)"
  wait_ready kafka kafka "127.0.0.1:$kafka_port" "$kafka_main"
}

start_cassandra() {
  already_running cassandra "$cassandra_main" && return 0
  local jars=$1 mode=$2 java data config
  java=$(find_java)
  data=$(data_dir cassandra "$mode")
  config="$state_dir/cassandra.yaml"
  cat >"$config" <<EOF
cluster_name: quiver-test
num_tokens: 1
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
commitlog_sync: periodic
commitlog_sync_period: 10000ms
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$storage_port"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $storage_port
native_transport_port: $cql_port
start_native_transport: true
auto_snapshot: false
# Small, so that statements are evicted as a busy node evicts them and tests exercise the
# re-preparing of evicted statements.
prepared_statements_cache_size: 1MiB
data_file_directories:
  - $data/data
commitlog_directory: $data/commitlog
saved_caches_directory: $data/saved_caches
hints_directory: $data/hints
cdc_raw_directory: $data/cdc_raw
EOF
  cat >"$state_dir/cassandra-logback.xml" <<'EOF'
<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
EOF
  # The JPMS flags come from Cassandra's conf/jvm17-server.options; without them FileUtils fails
  # at start with IllegalAccessException on JDK 17.
  local jpms=(
    -Djdk.attach.allowAttachSelf=true
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
    --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
    --add-exports java.sql/java.sql=ALL-UNNAMED
    --add-exports java.base/java.lang.ref=ALL-UNNAMED
    --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
    --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
    --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
    --add-opens java.base/java.lang.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
    --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
    --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
    --add-opens java.base/jdk.internal.math=ALL-UNNAMED
    --add-opens java.base/jdk.internal.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
    --add-opens java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens java.base/java.io=ALL-UNNAMED
    --add-opens java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
    --add-opens java.base/java.lang=ALL-UNNAMED
    --add-opens java.base/java.util=ALL-UNNAMED
    -Dio.netty.tryReflectionSetAccessible=true
    -Dio.netty.allocator.useCacheForAllThreads=true
    -Dio.netty.allocator.maxOrder=11
  )
  log "starting cassandra on 127.0.0.1:$cql_port"
  setsid nohup "$java" -Xms1g -Xmx1g -Xss256k -XX:+UseG1GC "${jpms[@]}" \
    -Dcassandra-foreground=yes \
    -Dcassandra.config="file://$config" \
    -Dcassandra.storagedir="$data" \
    -Dcassandra.logdir="$state_dir" \
    -Dlogback.configurationFile="$state_dir/cassandra-logback.xml" \
    -Djava.net.preferIPv4Stack=true \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    -Dcassandra.initial_token=0 \
    -Dcassandra.jmx.local.port=$((storage_port + 199)) \
    -cp "$jars/*" "$cassandra_main" >"$state_dir/cassandra.log" 2>&1 </dev/null &
  echo $! >"$(pid_file cassandra)"
  wait_ready cassandra cql "127.0.0.1:$cql_port" "$cassandra_main"
}

# Stops a server this script started; its data is deleted unless the third argument is `keep`.
stop_server() {
  local name=$1 main=$2 keep=${3:-} pid
  if pid=$(running_pid "$name" "$main"); then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop within 30s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
    fi
  else
    log "$name not running"
  fi
  rm -f "$(pid_file "$name")"
  [ "$keep" = keep ] || rm -rf "$state_dir/$name-data"
}

main_class() {
  case "$1" in
    kafka) echo "$kafka_main" ;;
    cassandra) echo "$cassandra_main" ;;
    *) die "unknown server \`$1\`; name kafka or cassandra" ;;
  esac
}

status() {
  local all_ready=0 pid
  if pid=$(running_pid kafka "$kafka_main"); then
    log "kafka pid $pid: $(probe kafka "127.0.0.1:$kafka_port" 2>&1)"
  else
    log "kafka not running"; all_ready=1
  fi
  if pid=$(running_pid cassandra "$cassandra_main"); then
    log "cassandra pid $pid: $(probe cql "127.0.0.1:$cql_port" 2>&1)"
  else
    log "cassandra not running"; all_ready=1
  fi
  return "$all_ready"
}

logs() {
  local name
  for name in kafka cassandra; do
    if [ -f "$state_dir/$name.log" ]; then
      echo "==> $state_dir/$name.log <=="
      tail -n "${LINES_PER_LOG:-50}" "$state_dir/$name.log"
    fi
  done
}

mkdir -p "$state_dir"
case "${1:-}" in
  up)
    # Maven's local repository is not safe for concurrent writers, so the jars come one set at a
    # time; then both servers start side by side, since Cassandra's start-up is the longer one.
    kafka_jars=$(fetch_jars kafka)
    cassandra_jars=$(fetch_jars cassandra)
    start_cassandra "$cassandra_jars" fresh &
    cassandra_job=$!
    kafka_status=0
    start_kafka "$kafka_jars" fresh || kafka_status=$?
    cassandra_status=0
    wait "$cassandra_job" || cassandra_status=$?
    [ "$kafka_status" -eq 0 ] && [ "$cassandra_status" -eq 0 ] || die "services did not all start"
    log "ready: kafka 127.0.0.1:$kafka_port, cql 127.0.0.1:$cql_port"
    ;;
  down)
    stop_server kafka "$kafka_main"
    stop_server cassandra "$cassandra_main"
    ;;
  stop)
    main=$(main_class "${2:-}")
    stop_server "$2" "$main" keep
    ;;
  start)
    main_class "${2:-}" >/dev/null
    "start_$2" "$(fetch_jars "$2")" keep
    ;;
  status) status ;;
  logs) logs ;;
  *)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac

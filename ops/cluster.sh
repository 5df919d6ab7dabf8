#!/usr/bin/env bash
# A local multi-node KRaft Kafka cluster for fault tests (broker kills, outages), beside
# the default single-node stack of ops/stack.sh. Same broker jars (ensure_kafka_jars).
#
# Every node is a combined broker + controller; the N nodes form an N-voter controller
# quorum (3 by default, so one node down keeps a quorum of 2). Node i (1..N) listens on
# 127.0.0.1:$((CLUSTER_PORT + i - 1)) (broker) and 127.0.0.1:$((CLUSTER_CONTROLLER_PORT + i - 1))
# (controller).
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: ops/cluster.sh up|down|status|reset|bootstrap
       ops/cluster.sh kill N|stop N|start N

  up         start every node that is not running (reuses running ones); wait until each
             node answers a metadata request that lists all N brokers
  down       stop every node (SIGTERM, SIGKILL after OPS_CLUSTER_STOP_TIMEOUT s, default 30)
  status     one line per node; exit 0 when every node answers and lists all N brokers
  reset      down, then delete the cluster's data (logs are kept)
  bootstrap  print the bootstrap servers (127.0.0.1:P1,127.0.0.1:P2,...)
  kill N     SIGKILL node N (no clean shutdown)
  stop N     SIGTERM node N (controlled shutdown), SIGKILL after the bound
  start N    start node N again; wait until it answers and is registered

Environment:
  CLUSTER_NODES            1..9 nodes (default 3)
  CLUSTER_PORT             first broker port (default 19192: 19192, 19193, 19194)
  CLUSTER_CONTROLLER_PORT  first controller port (default CLUSTER_PORT+100: 19292, ...)
  CLUSTER_HEAP_OPTS        heap per node (default -Xms128m -Xmx384m)
  KAFKA_HOME, OPS_READY_TIMEOUT (90) as for ops/stack.sh
Topic defaults: replication factor min(3, N), min.insync.replicas min(2, N), the same for
__consumer_offsets and __transaction_state; auto.create.topics.enable=false.
State: .stack/cluster/<CLUSTER_PORT>/{cluster.id,node-<i>/}; logs .stack/logs/cluster-<CLUSTER_PORT>-<i>/
and .stack/logs/cluster-<CLUSTER_PORT>-<i>.out; pids .stack/run/cluster-<CLUSTER_PORT>-<i>.pid.
USAGE
}

# shellcheck source=ops/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLUSTER_NODES="${CLUSTER_NODES:-3}"
CLUSTER_PORT="${CLUSTER_PORT:-19192}"
CLUSTER_CONTROLLER_PORT="${CLUSTER_CONTROLLER_PORT:-$((CLUSTER_PORT + 100))}"
for _v in CLUSTER_NODES CLUSTER_PORT CLUSTER_CONTROLLER_PORT; do
    [[ "${!_v}" =~ ^[0-9]+$ ]] || ops_die "$_v must be a number, got '${!_v}'"
done
((CLUSTER_NODES >= 1 && CLUSTER_NODES <= 9)) || ops_die "CLUSTER_NODES must be 1..9"
CLUSTER_DIR="$STACK_DIR/cluster/$CLUSTER_PORT"
CLUSTER_RF=$((CLUSTER_NODES < 3 ? CLUSTER_NODES : 3))
CLUSTER_MIN_ISR=$((CLUSTER_NODES < 2 ? CLUSTER_NODES : 2))

_node_port() { printf '%s\n' $((CLUSTER_PORT + $1 - 1)); }
_node_cport() { printf '%s\n' $((CLUSTER_CONTROLLER_PORT + $1 - 1)); }
_node_dir() { printf '%s\n' "$CLUSTER_DIR/node-$1"; }
_node_pidfile() { printf '%s\n' "$STACK_DIR/run/cluster-$CLUSTER_PORT-$1.pid"; }
_node_logdir() { printf '%s\n' "$STACK_DIR/logs/cluster-$CLUSTER_PORT-$1"; }
_node_out() { printf '%s\n' "$STACK_DIR/logs/cluster-$CLUSTER_PORT-$1.out"; }
# the node's pid if alive and it is our broker (the config path is on its command line)
_node_pid() { pid_matches "$(_node_pidfile "$1")" "$(_node_dir "$1")/server.properties"; }

cluster_bootstrap() {
    local i out=()
    for ((i = 1; i <= CLUSTER_NODES; i++)); do out+=("127.0.0.1:$(_node_port "$i")"); done
    (IFS=,; printf '%s\n' "${out[*]}")
}

_check_node_arg() {
    if ! [[ "${1:-}" =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > CLUSTER_NODES)); then
        ops_die "node must be 1..$CLUSTER_NODES, got '${1:-}'"
    fi
}

# _cluster_lock: serialises cluster commands (fd 8, .stack/cluster/<port>.lock).
_cluster_lock() {
    command -v flock >/dev/null 2>&1 || return 0
    mkdir -p "$STACK_DIR/cluster"
    exec 8>"$STACK_DIR/cluster/$CLUSTER_PORT.lock"
    flock -w 300 8 || ops_die "timed out waiting for $STACK_DIR/cluster/$CLUSTER_PORT.lock"
}

# _cluster_jars: KAFKA_CLASSPATH; the ops set-up lock is taken only when the jars must be fetched.
_cluster_jars() {
    find_java || ops_die "no java >= 17 (run ./ops/stack.sh up once, or set JAVA_HOME)"
    if _jars_fresh; then
        ensure_kafka_jars
    else
        ops_lock
        ensure_kafka_jars
        ops_unlock
    fi
}

# _node_answers I WANT: node I answers a metadata request listing at least WANT brokers
# (and, when WANT > 0, itself among them).
_node_answers() {
    local port
    port="$(_node_port "$1")"
    port_open "$port" || return 1
    if [[ -x "$VENV_PY" ]] && "$VENV_PY" -c 'import confluent_kafka' 2>/dev/null; then
        "$VENV_PY" - "127.0.0.1:$port" "$2" "$1" <<'PY' 2>/dev/null
import sys
from confluent_kafka.admin import AdminClient
bs, want, me = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    md = AdminClient({"bootstrap.servers": bs, "socket.connection.setup.timeout.ms": 5000}).list_topics(timeout=5)
except Exception:
    sys.exit(1)
sys.exit(0 if len(md.brokers) >= want and me in md.brokers else 1)
PY
        return
    fi
    kafka_metadata_ok "127.0.0.1:$port" 5
}

_node_write_config() {
    local i="$1" dir logdir voters="" j
    dir="$(_node_dir "$i")"
    logdir="$(_node_logdir "$i")"
    mkdir -p "$dir/data" "$logdir"
    for ((j = 1; j <= CLUSTER_NODES; j++)); do
        voters+="${voters:+,}$j@127.0.0.1:$(_node_cport "$j")"
    done
    cat >"$dir/server.properties" <<EOF
# Generated by ops/cluster.sh on every start; edit ops/cluster.sh instead.
# Node $i of a $CLUSTER_NODES-node local KRaft cluster (combined broker + controller).
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(_node_port "$i"),CONTROLLER://127.0.0.1:$(_node_cport "$i")
advertised.listeners=PLAINTEXT://127.0.0.1:$(_node_port "$i")
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data

auto.create.topics.enable=false
delete.topic.enable=true
num.partitions=6
default.replication.factor=$CLUSTER_RF
min.insync.replicas=$CLUSTER_MIN_ISR
unclean.leader.election.enable=false
offsets.topic.replication.factor=$CLUSTER_RF
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=$CLUSTER_RF
transaction.state.log.min.isr=$CLUSTER_MIN_ISR
transaction.state.log.num.partitions=6
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000

# small machine, several JVMs
num.network.threads=2
num.io.threads=2
num.replica.fetchers=1
num.recovery.threads.per.data.dir=1
background.threads=2
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=8388608
socket.request.max.bytes=104857600
log.segment.bytes=33554432
log.retention.hours=24
log.retention.check.interval.ms=300000
EOF
    kafka_write_log4j "$dir/log4j.properties" "$logdir" 2
}

_node_format_if_needed() {
    local i="$1" dir cid out
    dir="$(_node_dir "$i")"
    out="$(_node_out "$i")"
    [[ -f "$dir/data/meta.properties" ]] && return 0
    cid="$(kafka_cluster_id "$CLUSTER_DIR/cluster.id")"
    ops_log "cluster: formatting node $i storage (cluster id $cid)"
    kafka_format_storage "$dir" "$cid" "$out" "node $i"
}

# _node_launch I: start node I's JVM (config written, storage formatted); does not wait.
_node_launch() {
    local i="$1" dir pidfile out port cport heap jvm k pid
    dir="$(_node_dir "$i")"
    pidfile="$(_node_pidfile "$i")"
    out="$(_node_out "$i")"
    port="$(_node_port "$i")"
    cport="$(_node_cport "$i")"
    if pid="$(_node_pid "$i")"; then
        return 0
    fi
    port_open "$port" && ops_die "cluster: port $port (node $i) is in use by another process"
    port_open "$cport" && ops_die "cluster: controller port $cport (node $i) is in use by another process"
    _node_write_config "$i"
    _node_format_if_needed "$i"
    read -r -a heap <<<"${CLUSTER_HEAP_OPTS:--Xms128m -Xmx384m}"
    read -r -a jvm <<<"-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:TieredStopAtLevel=1 -Djava.awt.headless=true ${KAFKA_JVM_OPTS:-}"
    ops_log "cluster: starting node $i on 127.0.0.1:$port (controller $cport)"
    printf '\n==== %s starting node %s\n' "$(date -u +%FT%TZ)" "$i" >>"$out"
    rm -f "$pidfile"
    # shellcheck disable=SC2016
    (cd "$dir" && exec setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" \
        "$JAVA_BIN" "${heap[@]}" "${jvm[@]}" \
        -Dlog4j.configuration="file:$dir/log4j.properties" -Dkafka.logs.dir="$(_node_logdir "$i")" \
        -cp "$KAFKA_CLASSPATH" kafka.Kafka "$dir/server.properties") \
        </dev/null >>"$out" 2>&1 8>&- 9>&- &
    for ((k = 0; k < 40; k++)); do
        [[ -s "$pidfile" ]] && break
        sleep 0.1
    done
    [[ -s "$pidfile" ]] || ops_die "cluster: node $i did not start (log: $out)"
}

# _nodes_wait_ready WANT NODE...: each node answers metadata listing >= WANT brokers.
_nodes_wait_ready() {
    local want="$1" deadline=$((SECONDS + OPS_READY_TIMEOUT)) i pending
    shift
    pending=("$@")
    while ((SECONDS < deadline)); do
        local left=()
        for i in "${pending[@]}"; do
            if ! _node_pid "$i" >/dev/null; then
                ops_log "cluster: node $i exited during start-up; last log lines:"
                tail -n 20 "$(_node_out "$i")" >&2 2>/dev/null || true
                tail -n 20 "$(_node_logdir "$i")/server.log" >&2 2>/dev/null || true
                return 1
            fi
            _node_answers "$i" "$want" || left+=("$i")
        done
        ((${#left[@]} == 0)) && return 0
        pending=("${left[@]}")
        sleep 0.5
    done
    ops_log "cluster: node(s) ${pending[*]} did not answer within ${OPS_READY_TIMEOUT}s (logs: $STACK_DIR/logs/cluster-$CLUSTER_PORT-*)"
    return 1
}

cluster_up() {
    local t0=$SECONDS i all=()
    ops_mkdirs
    _cluster_jars
    for ((i = 1; i <= CLUSTER_NODES; i++)); do
        _node_launch "$i"
        all+=("$i")
    done
    _nodes_wait_ready "$CLUSTER_NODES" "${all[@]}" || ops_die "cluster did not come up"
    ops_log "cluster: $CLUSTER_NODES node(s) ready after $((SECONDS - t0))s: bootstrap $(cluster_bootstrap)"
}

cluster_start() {
    local i="$1" t0=$SECONDS
    ops_mkdirs
    _cluster_jars
    _node_launch "$i"
    # itself registered; the others may be down (a test can have killed them)
    _nodes_wait_ready 1 "$i" || ops_die "node $i did not come up"
    ops_log "cluster: node $i ready after $((SECONDS - t0))s"
}

# _node_stop I SIGNAL: KILL = SIGKILL now; TERM = controlled shutdown, SIGKILL after the bound.
_node_stop() {
    local i="$1" sig="$2" pid k
    if pid="$(_node_pid "$i")"; then
        if [[ "$sig" == KILL ]]; then
            ops_log "cluster: SIGKILL node $i (pid $pid)"
            kill -KILL "$pid" 2>/dev/null || true
            for ((k = 0; k < 40; k++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.25
            done
        else
            ops_log "cluster: stopping node $i (pid $pid)"
            stop_pid "$pid" "cluster node $i" "${OPS_CLUSTER_STOP_TIMEOUT:-30}"
        fi
    else
        ops_log "cluster: node $i not running"
    fi
    rm -f "$(_node_pidfile "$i")"
}

cluster_down() {
    local i pids=()
    # in parallel: one by one, the last nodes would wait for a lost quorum
    for ((i = 1; i <= CLUSTER_NODES; i++)); do
        _node_stop "$i" TERM &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || true; done
}

cluster_status() {
    local i rc=0 pid state
    for ((i = 1; i <= CLUSTER_NODES; i++)); do
        if pid="$(_node_pid "$i")"; then
            if _node_answers "$i" "$CLUSTER_NODES"; then state=running; else
                state=degraded
                rc=1
            fi
        else
            pid=-
            state=stopped
            rc=1
        fi
        printf 'node %s  %-8s pid %-8s port %s (controller %s)\n' "$i" "$state" "$pid" "$(_node_port "$i")" "$(_node_cport "$i")"
    done
    printf 'bootstrap %s\n' "$(cluster_bootstrap)"
    return "$rc"
}

[[ $# -ge 1 ]] || {
    usage >&2
    exit 2
}
cmd="$1"
shift
case "$cmd" in
up | down | status | reset | bootstrap) [[ $# -eq 0 ]] || {
    usage >&2
    exit 2
} ;;
kill | stop | start)
    [[ $# -eq 1 ]] || {
        usage >&2
        exit 2
    }
    _check_node_arg "$1"
    ;;
esac

case "$cmd" in
up) _cluster_lock && cluster_up ;;
down) _cluster_lock && cluster_down ;;
status) cluster_status ;;
reset)
    _cluster_lock
    cluster_down
    ops_log "cluster: deleting ${CLUSTER_DIR#"$REPO_ROOT"/}"
    rm -rf "$CLUSTER_DIR"
    ;;
bootstrap) cluster_bootstrap ;;
kill) _cluster_lock && _node_stop "$1" KILL ;;
stop) _cluster_lock && _node_stop "$1" TERM ;;
start) _cluster_lock && cluster_start "$1" ;;
-h | --help | help) usage ;;
*)
    usage >&2
    exit 2
    ;;
esac

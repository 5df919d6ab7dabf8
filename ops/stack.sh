#!/usr/bin/env bash
# The local Kafka (single-node KRaft, run with `java -cp`) + Redis, without Docker.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: ops/stack.sh up|down|status|restart|reset

  up       start Kafka and Redis (reuses running ones), wait until both answer
  down     stop both (SIGTERM, then SIGKILL after a bound)
  status   print each component; exit 0 when both answer, 1 otherwise
  restart  down, then up
  reset    down, then delete this stack's Kafka and Redis data (.stack/{kafka,redis}/<port>)

Environment: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (KAFKA_PORT+1), REDIS_PORT (6379),
KAFKA_HOME (use its libs/ instead of Maven), KAFKA_HEAP_OPTS, OPS_READY_TIMEOUT (90).
State, logs and pid files: .stack/ at the repository root.
USAGE
}

# shellcheck source=ops/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 1 ]] || {
    usage >&2
    exit 2
}

case "$1" in
up)
    t0=$SECONDS
    stack_up
    ops_unlock
    ops_log "stack up in $((SECONDS - t0))s: STREAMINFER_KAFKA_BOOTSTRAP=$STREAMINFER_KAFKA_BOOTSTRAP STREAMINFER_REDIS_URL=$STREAMINFER_REDIS_URL"
    ;;
down)
    stack_down
    ;;
status)
    stack_status
    ;;
restart)
    stack_down
    stack_up
    ;;
reset)
    stack_down
    ops_log "deleting ${KAFKA_STATE_DIR#"$REPO_ROOT"/} and ${REDIS_STATE_DIR#"$REPO_ROOT"/}"
    rm -rf "$KAFKA_STATE_DIR" "$REDIS_STATE_DIR"
    ;;
-h | --help | help)
    usage
    ;;
*)
    usage >&2
    exit 2
    ;;
esac

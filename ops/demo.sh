#!/usr/bin/env bash
# Fresh machine -> system packages, .venv, broker jars, SpamAssassin corpus, local Kafka +
# Redis, default models; then both pipelines on generated traffic (streams.demo) and a
# printed summary. Exit status = the demo's. A second run reuses what the first set up.
set -euo pipefail

if [[ $# -ge 1 && ( "$1" == "-h" || "$1" == "--help" ) ]]; then
    cat <<'USAGE'
usage: ops/demo.sh [DEMO_ARGS...]

Sets up (idempotent; leaves Kafka + Redis running), then runs
  .venv/bin/python -m streams.demo DEMO_ARGS...
(`ops/demo.sh -- --help` shows the demo's own options.)
Environment: KAFKA_PORT / REDIS_PORT / STREAMINFER_* as in ops/lib.sh.
USAGE
    exit 0
fi
if [[ $# -ge 1 && "$1" == "--" ]]; then
    shift
fi

# shellcheck source=ops/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

t0=$SECONDS
ops_setup
ops_log "set-up done in $((SECONDS - t0))s; STREAMINFER_KAFKA_BOOTSTRAP=$STREAMINFER_KAFKA_BOOTSTRAP STREAMINFER_REDIS_URL=$STREAMINFER_REDIS_URL"
exec "$VENV_PY" -m streams.demo "$@"

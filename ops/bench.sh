#!/usr/bin/env bash
# The benchmark (issue 5): both pipelines, both baselines, on the local Kafka + Redis.
# Sets up like ops/demo.sh (idempotent; leaves the stack running), then runs
#   .venv/bin/python -m streams.bench [--quick] [--out DIR] [--corpus DIR]
# Writes bench/<UTC time>-<quick|full>.{json,md}; the last stdout line is one JSON object.
set -euo pipefail

if [[ $# -ge 1 && ( "$1" == "-h" || "$1" == "--help" ) ]]; then
    cat <<'USAGE'
usage: ops/bench.sh [--quick] [--out DIR] [--corpus DIR]

--quick: small N and short latency phases (under 5 minutes on a 2-core machine);
without it the full run (about 15 minutes). Progress goes to stderr; the results to
bench/ and stdout (a markdown summary, then one JSON line).
Environment: KAFKA_PORT / REDIS_PORT / STREAMINFER_* as in ops/lib.sh.
USAGE
    exit 0
fi

# shellcheck source=ops/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

t0=$SECONDS
ops_setup >&2
ops_log "set-up done in $((SECONDS - t0))s; STREAMINFER_KAFKA_BOOTSTRAP=$STREAMINFER_KAFKA_BOOTSTRAP STREAMINFER_REDIS_URL=$STREAMINFER_REDIS_URL"
exec "$VENV_PY" -m streams.bench "$@"

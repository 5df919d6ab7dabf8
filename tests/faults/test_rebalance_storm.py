"""Workers join and leave every few seconds for a minute while traffic flows."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from streams.kafka_admin import ensure_topics
from streams.pipelines import topics_for
from tests.faults.harness import Workers, account, paced_feeder, wait_all_decided, worker_env
from tests.integration.test_pipelines import transactions
from tests.kafka_util import committed_offsets, delete_topics, end_offsets
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STORM_S = 60
CHANGE_EVERY_S = 6
RATE_PER_S = 500


def _storm(stack: Stack, prefix: str, model_dir: Path, tmp_path: Path, eos: bool) -> None:
    topics = topics_for("fraud", prefix)
    ensure_topics({"bootstrap.servers": stack.bootstrap}, topics.all(), 6, 1)
    txs = transactions(STORM_S * RATE_PER_S, seed=51)
    workers = Workers(worker_env(stack, prefix, model_dir), logdir=tmp_path)
    mode = ["--exactly-once"] if eos else []
    free = [0, 1, 2]
    live: dict[int, object] = {}

    def add() -> None:
        i = free.pop(0)
        live[i] = workers.start(*mode, "--worker-index", str(i))

    def remove() -> None:
        i = sorted(live)[0]
        p = live.pop(i)
        p.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
        assert p.wait(60) == 0, workers.logs()  # type: ignore[attr-defined]
        free.append(i)

    add()
    feeder = paced_feeder(stack.bootstrap, topics.input, txs, RATE_PER_S)
    changes = 0
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < STORM_S:
            time.sleep(CHANGE_EVERY_S)
            if len(live) == 1 or (len(live) < 3 and changes % 3 != 2):
                add()
            else:
                remove()
            changes += 1
        feeder.join(120)
        wait_all_decided(stack, topics.decisions, len(txs), "read_committed" if eos else "read_uncommitted",
                         workers=workers)
        time.sleep(3)
    finally:
        codes = workers.stop_all()
    assert all(c == 0 for c in codes), workers.logs()
    lag = sum(end_offsets(stack.bootstrap, topics.input).values()) - sum(
        committed_offsets(stack.bootstrap, f"{prefix}streaminfer-fraud", topics.input).values())
    acc = account(stack, topics.decisions, [t["event_id"] for t in txs], "read_committed" if eos else "read_uncommitted")
    acc.report("rebalance-storm" + ("-exactly-once" if eos else ""), membership_changes=changes,
               worker_processes=len(workers.procs), final_lag=lag)
    assert acc.lost == 0 and lag == 0
    if eos:
        assert acc.duplicated == 0
    delete_topics(stack.bootstrap, prefix)


def test_rebalance_storm_at_least_once(stack: Stack, prefix: str, model_dir: Path, tmp_path: Path) -> None:
    _storm(stack, prefix, model_dir, tmp_path, eos=False)


def test_rebalance_storm_exactly_once(stack: Stack, prefix: str, model_dir: Path, tmp_path: Path) -> None:
    _storm(stack, prefix, model_dir, tmp_path, eos=True)

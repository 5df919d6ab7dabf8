"""kill -9 a worker three times mid-stream; at-least-once and exactly-once."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from streams.kafka_admin import ensure_topics
from streams.pipelines import topics_for
from tests.faults.harness import Workers, account, produced, wait_all_decided, wait_progress, worker_env
from tests.integration.test_pipelines import transactions
from tests.kafka_util import delete_topics, produce_all
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_EVENTS = 50_000


def _run_with_kills(stack: Stack, prefix: str, model_dir: Path, tmp_path: Path, partitions: int, n: int,
                    *args: str) -> tuple[list[str], float]:
    topics = topics_for("fraud", prefix)
    ensure_topics({"bootstrap.servers": stack.bootstrap}, topics.all(), partitions, 1)
    txs = transactions(n, seed=21)
    produce_all(stack.bootstrap, topics.input, [(t["card_id"].encode(), orjson.dumps(t)) for t in txs])
    workers = Workers(worker_env(stack, prefix, model_dir, partitions), logdir=tmp_path)
    w = workers.start(*args)
    recovery = []
    try:
        for k in range(3):
            wait_progress(stack, topics.decisions, (k + 1) * n // 5, workers=workers)
            assert produced(stack, topics.decisions) < n, "kill came mid-stream"
            workers.kill9(w)
            t0 = time.monotonic()
            before = produced(stack, topics.decisions)
            w = workers.start(*args)
            wait_progress(stack, topics.decisions, before + 1, timeout_s=120, workers=workers)
            recovery.append(time.monotonic() - t0)
        wait_all_decided(stack, topics.decisions, n,
                         "read_committed" if "--exactly-once" in args else "read_uncommitted", workers=workers)
    finally:
        codes = workers.stop_all()
    assert codes[-1] == 0, workers.logs()
    return [t["event_id"] for t in txs], max(recovery)


def test_kill9_three_times_at_least_once(stack: Stack, prefix: str, model_dir: Path, tmp_path: Path) -> None:
    ids, recovery_s = _run_with_kills(stack, prefix, model_dir, tmp_path, 6, N_EVENTS)
    acc = account(stack, topics_for("fraud", prefix).decisions, ids, "read_uncommitted")
    acc.report("kill9-at-least-once", max_recovery_s=round(recovery_s, 1))
    assert acc.lost == 0
    delete_topics(stack.bootstrap, prefix)


def test_kill9_three_times_exactly_once(stack: Stack, prefix: str, model_dir: Path, tmp_path: Path) -> None:
    ids, recovery_s = _run_with_kills(stack, prefix, model_dir, tmp_path, 6, N_EVENTS, "--exactly-once")
    acc = account(stack, topics_for("fraud", prefix).decisions, ids, "read_committed")
    acc.report("kill9-exactly-once", max_recovery_s=round(recovery_s, 1))
    assert acc.lost == 0 and acc.duplicated == 0
    delete_topics(stack.bootstrap, prefix)


def test_kill9_exactly_once_one_partition_keeps_order(stack: Stack, prefix: str, model_dir: Path,
                                                      tmp_path: Path) -> None:
    ids, recovery_s = _run_with_kills(stack, prefix, model_dir, tmp_path, 1, 20_000, "--exactly-once")
    acc = account(stack, topics_for("fraud", prefix).decisions, ids, "read_committed")
    acc.report("kill9-exactly-once-1p", max_recovery_s=round(recovery_s, 1))
    assert acc.lost == 0 and acc.duplicated == 0 and acc.out_of_order_partitions == 0
    delete_topics(stack.bootstrap, prefix)

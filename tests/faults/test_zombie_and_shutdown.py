"""A zombie worker is fenced (exactly-once); SIGTERM under load leaves nothing pending."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import orjson
import pytest

from streams.kafka_admin import ensure_topics
from streams.pipelines import topics_for
from tests.faults.harness import Workers, account, produced, wait_all_decided, wait_progress, worker_env
from tests.integration.test_pipelines import transactions
from tests.kafka_util import committed_offsets, delete_topics, end_offsets, produce_all
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SESSION_TIMEOUT_S = 10  # streams.worker.consumer_config


def test_zombie_is_fenced_and_its_late_writes_never_show(stack: Stack, prefix: str, model_dir: Path,
                                                         tmp_path: Path) -> None:
    n = 30_000
    topics = topics_for("fraud", prefix)
    ensure_topics({"bootstrap.servers": stack.bootstrap}, topics.all(), 6, 1)
    workers = Workers(worker_env(stack, prefix, model_dir, STREAMINFER_BATCH_MAX="200"), logdir=tmp_path)
    zombie = workers.start("--exactly-once", "--worker-index", "0")
    workers.start("--exactly-once", "--worker-index", "1")
    time.sleep(5)  # both members in the group before traffic
    txs = transactions(n, seed=31)
    produce_all(stack.bootstrap, topics.input, [(t["card_id"].encode(), orjson.dumps(t)) for t in txs])
    try:
        wait_progress(stack, topics.decisions, n // 5, workers=workers)
        zombie.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        time.sleep(SESSION_TIMEOUT_S + 8)  # past the session and the transaction timeout
        zombie.send_signal(signal.SIGCONT)
        print(f"\n[zombie] stopped {time.monotonic() - stopped_at:.1f}s, then continued", flush=True)
        wait_all_decided(stack, topics.decisions, n, "read_committed", workers=workers)
    finally:
        codes = workers.stop_all()
    assert codes == [0, 0], workers.logs()
    acc = account(stack, topics.decisions, [t["event_id"] for t in txs], "read_committed")
    acc.report("zombie-exactly-once")
    assert acc.lost == 0 and acc.duplicated == 0
    delete_topics(stack.bootstrap, prefix)


def test_sigterm_under_load_commits_everything_it_produced(stack: Stack, prefix: str, model_dir: Path,
                                                           tmp_path: Path) -> None:
    n = 40_000
    batch_max = 500
    topics = topics_for("fraud", prefix)
    ensure_topics({"bootstrap.servers": stack.bootstrap}, topics.all(), 6, 1)
    txs = transactions(n, seed=41)
    produce_all(stack.bootstrap, topics.input, [(t["card_id"].encode(), orjson.dumps(t)) for t in txs])
    workers = Workers(worker_env(stack, prefix, model_dir, STREAMINFER_BATCH_MAX=str(batch_max)), logdir=tmp_path)
    first = workers.start()
    wait_progress(stack, topics.decisions, n // 4, workers=workers)
    first.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    code = first.wait(60)
    shutdown_s = time.monotonic() - t0
    assert code == 0, workers.logs()
    committed = {p: max(o, 0) for p, o in  # -1001: nothing committed on that partition yet
                 committed_offsets(stack.bootstrap, f"{prefix}streaminfer-fraud", topics.input).items()}
    decided_before = produced(stack, topics.decisions)
    alerts_before = produced(stack, topics.actions)
    assert 0 < sum(committed.values()) < n, "SIGTERM came mid-stream"
    # Nothing pending: every decision that reached the topic belongs to a committed offset.
    assert decided_before == sum(committed.values())
    workers.start()
    try:
        wait_all_decided(stack, topics.decisions, n, "read_uncommitted", workers=workers)
    finally:
        codes = workers.stop_all()
    assert codes[-1] == 0
    acc = account(stack, topics.decisions, [t["event_id"] for t in txs], "read_uncommitted")
    acc.report("sigterm-under-load", shutdown_s=round(shutdown_s, 2), committed_at_stop=sum(committed.values()),
               alerts_at_stop=alerts_before)
    assert acc.lost == 0
    assert acc.duplicated <= batch_max, "a restart repeats at most the in-flight batch"
    assert committed_offsets(stack.bootstrap, f"{prefix}streaminfer-fraud", topics.input) == \
        end_offsets(stack.bootstrap, topics.input)
    delete_topics(stack.bootstrap, prefix)

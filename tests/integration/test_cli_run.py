"""`streaminfer run` as operators start it: real processes, real signals."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from streams.kafka_admin import ensure_topics
from streams.pipelines import topics_for
from tests.faults.harness import worker_env
from tests.integration.test_pipelines import transactions
from tests.kafka_util import committed_offsets, delete_topics, end_offsets, produce_all, read_topic
from tests.stack import Stack

pytestmark = pytest.mark.integration


def start(stack: Stack, prefix: str, model_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    env = worker_env(stack, prefix, model_dir)
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "run", "fraud", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 60) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"worker did not exit within {timeout_s}s after SIGTERM:\n{out.decode()[-3000:]}")
    return proc.returncode, out.decode()


def test_two_workers_share_partitions_and_exit_cleanly(stack: Stack, prefix: str, model_dir: Path) -> None:
    topics = topics_for("fraud", prefix)
    proc = start(stack, prefix, model_dir, "--workers", "2")
    try:
        time.sleep(3)  # let both join before traffic, so both get partitions
        txs = transactions(3000, seed=9)
        produce_all(stack.bootstrap, topics.input, [(t["card_id"].encode(), orjson.dumps(t)) for t in txs])
        decisions = read_topic(stack.bootstrap, topics.decisions, len(txs), timeout_s=180, grace_s=2)
    finally:
        code, log = stop(proc)
    assert code == 0, log[-3000:]
    ids = Counter(orjson.loads(m.value())["event_id"] for m in decisions)
    assert len(ids) == len(txs) and max(ids.values()) == 1, "one decision per event, no duplicates"
    workers = {line.split()[2] for line in log.splitlines() if "worker stopped" in line}
    assert len(workers) == 2, log[-3000:]  # two processes (pids) each stopped cleanly
    assert committed_offsets(stack.bootstrap, f"{prefix}streaminfer-fraud", topics.input) == \
        end_offsets(stack.bootstrap, topics.input)
    delete_topics(stack.bootstrap, prefix)


def test_sigterm_mid_stream_commits_only_decided_offsets(stack: Stack, prefix: str, model_dir: Path) -> None:
    topics = topics_for("fraud", prefix)
    txs = transactions(20000, seed=11)
    ensure_topics({"bootstrap.servers": stack.bootstrap}, topics.all(), 6, 1)
    produce_all(stack.bootstrap, topics.input, [(t["card_id"].encode(), orjson.dumps(t)) for t in txs])
    proc = start(stack, prefix, model_dir)
    try:
        first = read_topic(stack.bootstrap, topics.decisions, 1, timeout_s=60, grace_s=0)
        assert first, "worker decided nothing"
    finally:
        code, log = stop(proc)
    assert code == 0, log[-3000:]
    committed = committed_offsets(stack.bootstrap, f"{prefix}streaminfer-fraud", topics.input)
    decisions = read_topic(stack.bootstrap, topics.decisions, sum(max(o, 0) for o in committed.values()),
                           timeout_s=30, grace_s=1)
    decided = {(d["source"]["partition"], d["source"]["offset"]) for d in map(lambda m: orjson.loads(m.value()), decisions)}
    # at-least-once: every offset below the committed one has its decision
    for part, off in committed.items():
        assert all((part, o) in decided for o in range(max(off, 0))), f"partition {part} lost decisions"
    assert sum(max(o, 0) for o in committed.values()) < len(txs), "SIGTERM came mid-stream"
    delete_topics(stack.bootstrap, prefix)

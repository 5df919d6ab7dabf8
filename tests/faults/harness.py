"""Fault-test plumbing: real worker processes, real kills, and the accounting.

Each test reports its figures (lost, duplicated, recovery seconds) on stdout
(`pytest -s` shows them) and asserts the promise.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.kafka_util import end_offsets, read_topic
from tests.stack import Stack


def worker_env(stack: Stack, prefix: str, model_dir: Path, partitions: int = 6, **extra: str) -> dict[str, str]:
    return stack.env(prefix, partitions, STREAMINFER_MODEL_DIR=str(model_dir), STREAMINFER_DEVICE="cpu", **extra)


@dataclass
class Workers:
    """Worker processes started with `streaminfer run`; output kept per process."""

    env: dict[str, str]
    pipeline: str = "fraud"
    logdir: Path = field(default_factory=lambda: Path("/tmp"))
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.logdir / f"worker-{len(self.procs)}.log", "wb")
        p = subprocess.Popen([sys.executable, "-m", "streams.cli", "run", self.pipeline, *args], env=self.env,
                             stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def kill9(self, p: subprocess.Popen[bytes]) -> None:
        p.send_signal(signal.SIGKILL)
        p.wait(30)

    def stop_all(self, timeout_s: float = 60) -> list[int]:
        codes = []
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                codes.append(p.wait(timeout_s))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(-9)
        return codes

    def logs(self) -> str:
        return "\n".join((self.logdir / f"worker-{i}.log").read_text(errors="replace")[-2000:]
                         for i in range(len(self.procs)))


def paced_feeder(bootstrap: str, topic: str, txs: list[dict[str, Any]], rate_per_s: float) -> threading.Thread:
    """A started thread producing ``txs`` (keyed by card) at a fixed rate, then flushing."""

    def produce() -> None:
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 1})
        t0 = time.monotonic()
        for k, t in enumerate(txs):
            delay = t0 + k / rate_per_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            p.produce(topic, key=t["card_id"].encode(), value=orjson.dumps(t))
            p.poll(0)
        assert p.flush(30) == 0

    feeder = threading.Thread(target=produce, daemon=True)
    feeder.start()
    return feeder


def produced(stack: Stack, topic: str) -> int:
    return sum(end_offsets(stack.bootstrap, topic).values())


def wait_progress(stack: Stack, topic: str, at_least: int, timeout_s: float = 120,
                  workers: Workers | None = None) -> float:
    """Seconds until ``topic`` holds at least ``at_least`` records (offsets, so control records count).

    Fails at once if a worker process died by itself (exit 0 follows a SIGTERM the
    test sent; -9 a kill it made)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if produced(stack, topic) >= at_least:
            return time.monotonic() - t0
        if workers is not None:
            dead = [p for p in workers.procs if p.poll() not in (None, 0, -9)]
            assert not dead, f"worker exited with {dead[0].returncode}:\n{workers.logs()}"
        time.sleep(0.2)
    raise AssertionError(f"{topic} did not reach {at_least} records in {timeout_s}s")


def wait_all_decided(stack: Stack, topic: str, n: int, isolation: str, timeout_s: float = 300,
                     workers: Workers | None = None) -> float:
    """Seconds until ``n`` distinct events have a decision that a reader with ``isolation``
    sees. Counts decisions, not offsets: in exactly-once mode the topic also holds
    transaction markers, so its end offsets run ahead of its decisions."""
    c = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": f"wait-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest", "isolation.level": isolation})
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    seen: set[str] = set()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout_s:
            for m in c.consume(1000, 0.5):
                if m.error() is None:
                    seen.add(orjson.loads(m.value())["event_id"])
            if len(seen) >= n:
                return time.monotonic() - t0
            if workers is not None:
                dead = [p for p in workers.procs if p.poll() not in (None, 0, -9)]
                assert not dead, f"worker exited with {dead[0].returncode}:\n{workers.logs()}"
    finally:
        c.close()
    raise AssertionError(f"{topic}: {len(seen)} of {n} events decided after {timeout_s}s")


@dataclass
class Accounting:
    expected: int
    decided: int
    lost: int
    duplicated: int
    out_of_order_partitions: int

    def report(self, name: str, **more: Any) -> None:
        print(f"\n[{name}] expected={self.expected} decided={self.decided} lost={self.lost} "
              f"duplicated={self.duplicated} out_of_order_partitions={self.out_of_order_partitions} "
              + " ".join(f"{k}={v}" for k, v in more.items()), flush=True)


def account(stack: Stack, decisions_topic: str, event_ids: list[str], isolation: str, timeout_s: float = 300
            ) -> Accounting:
    """Read every decision; count events without one, extra copies, and per-partition order breaks."""
    msgs = read_topic(stack.bootstrap, decisions_topic, len(event_ids), timeout_s=timeout_s, grace_s=3,
                      isolation=isolation)
    decided = [orjson.loads(m.value()) for m in msgs]
    counts = Counter(d["event_id"] for d in decided)
    lost = sum(1 for e in event_ids if counts[e] == 0)
    dup = sum(c - 1 for c in counts.values() if c > 1)
    # Within one output partition, the decisions of one input partition must follow
    # its offsets (read_topic keeps each partition's order).
    last: dict[tuple[int, int], int] = {}
    broken: set[int] = set()
    for m, d in zip(msgs, decided):
        key = (m.partition(), d["source"]["partition"])
        off = d["source"]["offset"]
        if off < last.get(key, -1):
            broken.add(d["source"]["partition"])
        last[key] = max(last.get(key, -1), off)
    return Accounting(len(event_ids), len(counts), lost, dup, len(broken))

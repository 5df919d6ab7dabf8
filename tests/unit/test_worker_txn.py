"""Exactly-once commit recovery of the worker, with stub producer/consumer instead of a broker.

librdkafka can block in send_offsets_to_transaction past its own timeout when the group
coordinator's broker dies (librdkafka #5456, #5511); the worker must give such a call up,
build a new producer and go back to the committed offsets, within a bounded time.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

import streams.worker as worker_mod
from streams.pipelines import topics_for
from streams.settings import Settings
from streams.worker import TxnCallHung, Worker
from tests.unit.test_worker_batch import AmountScorer


class TxnProducer:
    """Records transactional calls; ``hang`` names a call that blocks until ``release`` is set."""

    def __init__(self, hang: str | None = None, fail: dict[str, KafkaError] | None = None) -> None:
        self.calls: list[tuple[str, float]] = []
        self.hang, self.fail = hang, fail or {}
        self.release = threading.Event()

    def _call(self, name: str, timeout: float) -> None:
        self.calls.append((name, timeout))
        if name == self.hang:
            self.release.wait(30)
        if name in self.fail:
            raise KafkaException(self.fail[name])

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        self._call("send_offsets_to_transaction", timeout)

    def commit_transaction(self, timeout: float) -> None:
        self._call("commit_transaction", timeout)

    def abort_transaction(self, timeout: float) -> None:
        self._call("abort_transaction", timeout)


class TxnConsumer:
    def __init__(self, committed_offset: int = 7) -> None:
        self.seeks: list[tuple[str, int, int]] = []
        self.committed_offset = committed_offset

    def consumer_group_metadata(self) -> object:
        return object()

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(p.topic, p.partition, self.committed_offset) for p in partitions]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


def _worker(producer: Any, consumer: Any) -> Worker:
    return Worker(Settings(), AmountScorer(), topics_for("fraud", ""), "g", transactional_id="g.h.0",
                  consumer=consumer, producer=producer)


def test_txn_call_returns_raises_and_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_mod, "TXN_CALL_GRACE_S", 0.2)
    p = TxnProducer(hang="commit_transaction", fail={"abort_transaction": KafkaError(KafkaError._TIMED_OUT)})
    assert Worker._txn_call(p, "send_offsets_to_transaction", 1.0, [], None) is None
    with pytest.raises(KafkaException):
        Worker._txn_call(p, "abort_transaction", 1.0)
    t0 = time.monotonic()
    with pytest.raises(TxnCallHung):
        Worker._txn_call(p, "commit_transaction", 0.3)
    assert time.monotonic() - t0 < 2.0
    p.release.set()


def test_hung_send_offsets_builds_new_producer_and_rewinds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_mod, "TXN_CALL_TIMEOUT_S", 0.3)
    monkeypatch.setattr(worker_mod, "TXN_CALL_GRACE_S", 0.2)
    hung, fresh = TxnProducer(hang="send_offsets_to_transaction"), TxnProducer()
    deadlines: list[float | None] = []

    def new_producer(self: Worker, deadline: float | None = None) -> Any:
        deadlines.append(deadline)
        return fresh

    monkeypatch.setattr(Worker, "_new_producer", new_producer)
    consumer = TxnConsumer(committed_offset=7)
    w = _worker(hung, consumer)
    t0 = time.monotonic()
    assert w._commit_transaction([TopicPartition("transactions", 2, 12)]) is False
    assert time.monotonic() - t0 < 3.0
    assert w.producer is fresh and deadlines and deadlines[0] is not None
    assert consumer.seeks == [("transactions", 2, 7)]
    assert [c for c, _ in hung.calls] == ["send_offsets_to_transaction"]
    hung.release.set()


def test_abortable_error_aborts_and_rewinds(monkeypatch: pytest.MonkeyPatch) -> None:
    err = KafkaError(KafkaError._TIMED_OUT, txn_requires_abort=True)
    p = TxnProducer(fail={"send_offsets_to_transaction": err})
    monkeypatch.setattr(Worker, "_new_producer", lambda self, deadline=None: pytest.fail("no new producer"))
    consumer = TxnConsumer(committed_offset=-1001)
    w = _worker(p, consumer)
    assert w._commit_transaction([TopicPartition("transactions", 0, 5)]) is False
    assert [c for c, _ in p.calls] == ["send_offsets_to_transaction", "abort_transaction"]
    assert w.producer is p
    assert consumer.seeks == [("transactions", 0, worker_mod.OFFSET_BEGINNING)]


def test_commit_ok() -> None:
    p = TxnProducer()
    w = _worker(p, TxnConsumer())
    assert w._commit_transaction([TopicPartition("transactions", 0, 5)]) is True
    assert [c for c, _ in p.calls] == ["send_offsets_to_transaction", "commit_transaction"]

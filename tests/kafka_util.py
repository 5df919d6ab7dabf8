"""Small helpers for integration tests against the real broker."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Iterable

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient


def produce_all(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    errors: list[Any] = []
    n = 0
    for key, value in records:
        p.produce(topic, key=key, value=value, on_delivery=lambda e, m: errors.append(e) if e else None)
        n += 1
        p.poll(0)
    assert p.flush(30) == 0
    assert not errors, errors
    return n


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0, grace_s: float = 1.0,
               isolation: str = "read_uncommitted") -> list[Any]:
    """Every message of ``topic`` from the beginning: until ``expected`` arrived, then ``grace_s`` more
    (so duplicates beyond ``expected`` are seen too)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest", "isolation.level": isolation})
    md = c.list_topics(topic, timeout=10)
    parts = md.topics[topic].partitions
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    done_at: float | None = None
    try:
        while time.monotonic() < deadline:
            for m in c.consume(500, 0.2):
                if m.error() is None:
                    out.append(m)
            if len(out) >= expected and done_at is None:
                done_at = time.monotonic()
            if done_at is not None and time.monotonic() - done_at >= grace_s:
                break
    finally:
        c.close()
    return out


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        got = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        return {tp.partition: tp.offset for tp in got}
    finally:
        c.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"x-{uuid.uuid4().hex}"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        c.close()


def delete_topics(bootstrap: str, prefix: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    if names:
        for f in admin.delete_topics(names, operation_timeout=30).values():
            try:
                f.result()
            except Exception:
                pass


class WorkerThread:
    """Runs a Worker in a thread; ``stop()`` sets its stop event and joins."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def stop(self, timeout_s: float = 60.0) -> None:
        self.worker.stop_event.set()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "worker did not stop"
        if self.error:
            raise self.error


def decide_all(bootstrap: str, settings: Any, events: list[dict[str, Any]], pipeline: str = "fraud",
               key: str = "card_id", timeout_s: float = 120) -> dict[str, dict[str, Any]]:
    """Run one worker of ``pipeline`` over ``events`` (in order) until each is decided;
    the decisions by event id."""
    from streams.pipelines import topics_for
    from streams.runner import build_worker

    topics = topics_for(pipeline, settings.topic_prefix)
    worker = build_worker(settings, pipeline)
    produce_all(bootstrap, topics.input, [(e[key].encode(), orjson.dumps(e)) for e in events])
    runner = WorkerThread(worker)
    try:
        msgs = read_topic(bootstrap, topics.decisions, len(events), timeout_s=timeout_s, grace_s=0.5)
    finally:
        runner.stop()
    return {d["event_id"]: d for d in (orjson.loads(m.value()) for m in msgs)}

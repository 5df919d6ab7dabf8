"""Backfill: rebuild feature state from a topic's history into a chosen namespace.

Reads the input topic (``transactions`` or ``emails``) from a start position (an
offset for every partition, or a time) up to the end offsets seen at start, with a
plain assigned consumer (no consumer group: nothing is committed anywhere), and
runs every batch through the same ``feature_store.batch`` code as the live
workers, writing only into ``namespace``. Optionally the label topics are folded
in too (``feature_store.labels.materialise``). Production state is never touched
unless the operator names the production namespace itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from feature_store.batch import fraud_batch, spam_batch
from feature_store.labels import materialise
from feature_store.store import FeatureStore
from streams.errors import RecordError
from streams.events import decode_email, decode_transaction, parse_ts

PIPELINE_OF_TOPIC = {"transactions": "fraud", "emails": "spam"}


@dataclass
class BackfillStats:
    events: int = 0
    skipped: int = 0
    batches: int = 0
    round_trips: int = 0
    labels: int = 0
    seconds: float = 0.0
    partitions: dict[int, tuple[int, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "skipped_bad_records": self.skipped, "batches": self.batches,
                "redis_round_trips": self.round_trips, "labels": self.labels, "seconds": round(self.seconds, 3),
                "partitions": {str(p): {"from": a, "to": b} for p, (a, b) in self.partitions.items()}}


def parse_from(value: str) -> tuple[str, int]:
    """``earliest``, an offset (digits), or a time (RFC 3339, or ``ms:<epoch ms>``)."""
    v = value.strip()
    if v in ("earliest", "beginning"):
        return "offset", OFFSET_BEGINNING
    if v.isdigit():
        return "offset", int(v)
    if v.startswith("ms:") and v[3:].isdigit():
        return "time", int(v[3:])
    return "time", int(parse_ts(v) * 1000)


def backfill(kafka_conf: dict[str, Any], topic: str, store: FeatureStore, start: str = "earliest", *,
             pipeline: str | None = None, batch_max: int = 500, labels_topics: dict[str, str] | None = None,
             on_batch: Callable[[list[Any], Any], None] | None = None, timeout_s: float = 600.0) -> BackfillStats:
    """Rebuild ``store.namespace`` from ``topic``; returns what it did.

    ``pipeline`` defaults from the topic's base name (``transactions`` -> fraud).
    ``labels_topics`` ({"fraud": topic, "spam": topic}) also materialises labels.
    ``on_batch(events, rows)`` sees every batch's feature rows (tests, audits).
    """
    base = topic.rsplit(".", 1)[-1] if topic.rsplit(".", 1)[-1] in PIPELINE_OF_TOPIC else topic
    pipeline = pipeline or PIPELINE_OF_TOPIC.get(base) or next(
        (p for t, p in PIPELINE_OF_TOPIC.items() if topic.endswith(t)), None)
    if pipeline not in ("fraud", "spam"):
        raise ValueError(f"cannot tell the pipeline of topic {topic!r}; pass pipeline='fraud' or 'spam'")
    decode = decode_transaction if pipeline == "fraud" else decode_email
    compute = fraud_batch if pipeline == "fraud" else spam_batch
    t0 = time.perf_counter()
    stats = BackfillStats()
    if labels_topics:
        stats.labels = _labels(kafka_conf, store, labels_topics, timeout_s)
    kind, pos = parse_from(start)
    c = Consumer({**kafka_conf, "group.id": f"streaminfer-backfill-{store.namespace}", "enable.auto.commit": False,
                  "enable.auto.offset.store": False, "auto.offset.reset": "earliest", "enable.partition.eof": True})
    try:
        parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        if kind == "time":
            tps = c.offsets_for_times([TopicPartition(topic, p, pos) for p in parts], timeout=10)
            starts = {tp.partition: (tp.offset if tp.offset >= 0 else ends[tp.partition]) for tp in tps}
        elif pos == OFFSET_BEGINNING:
            starts = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[0] for p in parts}
        else:
            starts = {p: min(pos, ends[p]) for p in parts}
        todo = {p for p in parts if starts[p] < ends[p]}
        stats.partitions = {p: (starts[p], ends[p]) for p in parts}
        if todo:
            c.assign([TopicPartition(topic, p, starts[p]) for p in sorted(todo)])
        deadline = time.monotonic() + timeout_s
        rt0 = store.round_trips
        while todo and time.monotonic() < deadline:
            msgs = c.consume(batch_max, 0.5)
            events = []
            for m in msgs:
                if m.error() is not None:
                    continue
                p, off = m.partition(), m.offset()
                if p not in todo or off >= ends[p]:
                    continue
                if off == ends[p] - 1:
                    todo.discard(p)
                try:
                    events.append(decode(m.value()))
                except RecordError:
                    stats.skipped += 1
            if events:
                rows, _, snap = compute(store, events)
                store.write(snap)
                if on_batch is not None:
                    on_batch(events, rows)
                stats.events += len(events)
                stats.batches += 1
        if todo:
            raise TimeoutError(f"backfill did not reach the end of partitions {sorted(todo)} in {timeout_s}s")
        stats.round_trips = store.round_trips - rt0
    finally:
        c.close()
    stats.seconds = time.perf_counter() - t0
    return stats


def _read_all(kafka_conf: dict[str, Any], topic: str, timeout_s: float) -> list[bytes]:
    c = Consumer({**kafka_conf, "group.id": "streaminfer-backfill-labels", "enable.auto.commit": False})
    out: list[bytes] = []
    try:
        md = c.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            return out
        parts = sorted(md.partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts}
        todo = {p for p, (lo, hi) in ends.items() if hi > lo}
        c.assign([TopicPartition(topic, p, ends[p][0]) for p in sorted(todo)])
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error() is None and m.partition() in todo:
                    out.append(m.value())
                    if m.offset() >= ends[m.partition()][1] - 1:
                        todo.discard(m.partition())
    finally:
        c.close()
    return out


def _labels(kafka_conf: dict[str, Any], store: FeatureStore, topics: dict[str, str], timeout_s: float) -> int:
    import orjson

    fraud = [orjson.loads(v) for v in _read_all(kafka_conf, topics["fraud"], timeout_s)] if topics.get("fraud") else []
    spam = [orjson.loads(v) for v in _read_all(kafka_conf, topics["spam"], timeout_s)] if topics.get("spam") else []
    return materialise(store.client, store.namespace, fraud, spam)["records"]

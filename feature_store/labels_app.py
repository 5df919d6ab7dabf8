"""The label-feedback app (faust-streaming): ``streaminfer features run``.

Consumes ``fraud.labels`` and ``spam.feedback``, keeps day-windowed label tables
(faust Tables backed by changelog topics, so a restart recovers them from Kafka
and loses nothing), and materialises them into Redis for the scorers:

- ``terminal_risk``: per terminal and transaction day, labelled and fraudulent
  transactions -> the fraud model's ``term_risk_{1,7,30}d`` (label delay applied
  at scoring time, ``feature_store.fraud.terminal_risk``);
- ``sender_reports`` / ``domain_reports``: per sender / sender domain and day,
  user reports and spam reports.

Each table key is one bucket (view, day, entity) holding ``{event_id: 0|1}``, so a
label delivered twice (faust's at-least-once, a restart) counts once and a corrected
label replaces the old one; buckets older than the view's horizon are dropped. The
streams are re-keyed by the bucket's entity first (``group_by``), so every bucket
lives in exactly one table partition. Redis receives absolute bucket values and the
newest ``label_ts`` seen (the watermark that the views' freshness is measured
against), so re-materialising is harmless.

Configuration (environment, as for the workers): ``STREAMINFER_KAFKA_BOOTSTRAP``,
``STREAMINFER_REDIS_URL``, ``STREAMINFER_TOPIC_PREFIX``, ``STREAMINFER_FEATURE_NAMESPACE``,
``STREAMINFER_PARTITIONS``, plus ``STREAMINFER_LABELS_APP_ID`` (default
``<prefix>streaminfer-features``) and ``STREAMINFER_LABELS_DATA_DIR`` (faust's data
dir, default ``./.faust``). Faust is kept off the decision path (FIELD-NOTES).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import faust

from feature_store.labels import (
    FRAUD_STREAM,
    SPAM_STREAM,
    Label,
    LabelError,
    LabelSink,
    apply_to_bucket,
    bucket_key,
    fraud_label,
    spam_labels,
)
from feature_store.store import connect

log = logging.getLogger(__name__)

_env = os.environ.get
PREFIX = _env("STREAMINFER_TOPIC_PREFIX", "")
NAMESPACE = _env("STREAMINFER_FEATURE_NAMESPACE", "prod")
PARTITIONS = int(_env("STREAMINFER_PARTITIONS", "6"))
APP_ID = _env("STREAMINFER_LABELS_APP_ID", f"{PREFIX}streaminfer-features")
REDIS_URL = _env("STREAMINFER_REDIS_URL", "redis://localhost:6379/0")

app = faust.App(
    APP_ID,
    broker="kafka://" + ",".join(_env("STREAMINFER_KAFKA_BOOTSTRAP", "localhost:9092").split(",")),
    store="memory://",  # tables are rebuilt from their changelog topics on start
    datadir=_env("STREAMINFER_LABELS_DATA_DIR", ".faust"),
    topic_partitions=PARTITIONS,
    topic_replication_factor=int(_env("STREAMINFER_REPLICATION_FACTOR", "1")),
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    table_standby_replicas=0,
    producer_acks=-1,
)

fraud_topic = app.topic(PREFIX + "fraud.labels", key_serializer="raw", value_serializer="raw",
                        partitions=PARTITIONS)
spam_topic = app.topic(PREFIX + "spam.feedback", key_serializer="raw", value_serializer="raw",
                       partitions=PARTITIONS)

#: bucket key -> {event_id: 0|1}; one table per label stream.
fraud_buckets = app.Table("terminal-label-days", default=None, partitions=PARTITIONS)
sender_buckets = app.Table("sender-report-days", default=None, partitions=PARTITIONS)
domain_buckets = app.Table("domain-report-days", default=None, partitions=PARTITIONS)

_sink: LabelSink | None = None
STATS = {"fraud_labels": 0, "spam_reports": 0, "repeats": 0, "bad": 0}


def sink() -> LabelSink:
    global _sink
    if _sink is None:
        _sink = LabelSink(connect(REDIS_URL), NAMESPACE)
    return _sink


def _apply(table: Any, label: Label) -> tuple[Label, dict[str, int]] | None:
    k = bucket_key(label)
    bucket, changed = apply_to_bucket(table.get(k), label)
    if not changed:
        STATS["repeats"] += 1
        return None
    table[k] = bucket
    return label, bucket


def _fraud_entity(value: bytes) -> bytes:
    try:
        return fraud_label(value).entity_id.encode()
    except LabelError:
        return b""


def _sender_entity(value: bytes) -> bytes:
    try:
        return spam_labels(value)[0].entity_id.encode()
    except LabelError:
        return b""


def _domain_entity(value: bytes) -> bytes:
    try:
        return spam_labels(value)[1].entity_id.encode()
    except LabelError:
        return b""


@app.agent(fraud_topic)
async def fraud_labels(stream: Any) -> None:
    # Re-keyed by terminal so a terminal's buckets live in one table partition. One
    # label at a time: faust tables may only change inside the stream iteration, and
    # writing Redis before the offset moves on means a crash re-materialises, never
    # skips (labels arrive at a few per second per terminal population; see README).
    async for value in stream.group_by(_fraud_entity, name="terminal"):
        try:
            label = fraud_label(value)
        except LabelError as exc:
            STATS["bad"] += 1
            log.warning("fraud.labels: skipping a bad label: %s", exc)
            continue
        STATS["fraud_labels"] += 1
        done = _apply(fraud_buckets, label)
        sink().write([done] if done else [], {FRAUD_STREAM: label.label_ts_s})


async def _spam(stream: Any, which: int, table: Any) -> None:
    async for value in stream:
        try:
            label = spam_labels(value)[which]
        except LabelError as exc:
            if which == 0:
                STATS["bad"] += 1
                log.warning("spam.feedback: skipping a bad report: %s", exc)
            continue
        if which == 0:
            STATS["spam_reports"] += 1
        done = _apply(table, label)
        sink().write([done] if done else [], {SPAM_STREAM: label.label_ts_s})


# Two agents on spam.feedback, each re-keyed by its entity, so every sender bucket
# and every domain bucket lives in exactly one table partition.
@app.agent(spam_topic)
async def sender_reports(stream: Any) -> None:
    await _spam(stream.group_by(_sender_entity, name="sender"), 0, sender_buckets)


@app.agent(spam_topic)
async def domain_reports(stream: Any) -> None:
    await _spam(stream.group_by(_domain_entity, name="domain"), 1, domain_buckets)


@app.timer(interval=30.0)
async def report() -> None:
    log.info("labels app %s: %s", APP_ID, STATS)


def main(argv: list[str] | None = None) -> int:
    """Run the app's worker (``argv`` are faust worker options, e.g. ``-l info``)."""
    from streams.kafka_admin import ensure_topics

    conf = {"bootstrap.servers": _env("STREAMINFER_KAFKA_BOOTSTRAP", "localhost:9092")}
    ensure_topics(conf, [fraud_topic.get_topic_name(), spam_topic.get_topic_name()], PARTITIONS,
                  int(_env("STREAMINFER_REPLICATION_FACTOR", "1")))
    sys.argv = [sys.argv[0], "worker", *(argv or ["-l", "info"])]
    app.main()
    return 0


if __name__ == "__main__":  # python -m feature_store.labels_app [faust worker options]
    sys.exit(main(sys.argv[1:]))

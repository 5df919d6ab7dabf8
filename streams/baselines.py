"""Baselines for the benchmark: the same jobs written the way a user would without streaminfer.

Both reuse the project's decoding, feature functions (``feature_store.batch`` through
the ``FeatureStore`` API), models and decision format, so they make the same
decisions as the worker (the bench checks it); what differs is only the shape of
the loop around them.

- ``per-message`` (fraud or spam): a hand-written confluent-kafka loop. Poll one
  message, decode it, read its entity windows from Redis (``fraud_batch`` /
  ``spam_batch`` with a batch of one: one pipelined read), run the model on one row,
  write the windows back (one round trip), produce one decision, ``store_offsets``
  for that message (auto commit every 5 s). It does not wait for the broker's
  acknowledgement before storing the offset, which makes it faster (and weaker)
  than the worker's at-least-once path: a conservative baseline.
- ``faust`` (fraud): a faust-streaming agent taking batches with
  ``stream.take_events(max, within)``, scoring each batch with the same features and
  model (the sync Redis client, called from the agent), and sending each decision
  with ``topic.send``; faust acknowledges and commits offsets itself.

Run as ``python -m streams.baselines per-message fraud|spam`` or
``python -m streams.baselines faust fraud``, configured by the worker's environment
(``STREAMINFER_KAFKA_BOOTSTRAP``, ``STREAMINFER_REDIS_URL``, ``STREAMINFER_TOPIC_PREFIX``,
``STREAMINFER_FEATURE_NAMESPACE``, ``STREAMINFER_MODEL_DIR``, ``STREAMINFER_DEVICE``,
``STREAMINFER_BATCH_MAX``, ``STREAMINFER_BATCH_WAIT_MS``). Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np
import orjson

from streams.settings import Settings

log = logging.getLogger(__name__)


def baseline_group(settings: Settings, kind: str, pipeline: str) -> str:
    """Consumer group (faust: app id) of a baseline; carries the topic prefix."""
    return f"{settings.topic_prefix}baseline-{kind}-{pipeline}"


class OneEventScorer:
    """Decode, features, model, decision for one event at a time (the per-message loop's core)."""

    def __init__(self, settings: Settings, pipeline: str) -> None:
        from feature_store.store import FeatureStore, connect

        self.pipeline = pipeline
        self.store = FeatureStore(connect(settings.redis_url.get(), settings.redis_timeout_s),
                                  settings.feature_namespace)
        if pipeline == "fraud":
            self.model: Any = _fraud_model(settings)
            self._score: Callable[[Any], tuple[float, list[str]]] = self._fraud
            from streams.events import decode_transaction
            from streams.pipelines import model_columns
            from feature_store.fraud import FRAUD_FEATURES

            self.decode: Callable[[bytes | None], Any] = decode_transaction
            self.names, self.cols = model_columns(tuple(self.model.features), FRAUD_FEATURES, "fraud")
        elif pipeline == "spam":
            from models.spam_model import SpamModel
            from streams.events import decode_email

            from feature_store.spam import SPAM_DENSE_FEATURES
            from streams.pipelines import model_columns

            self.model = SpamModel.load(str(settings.model_dir), device=settings.device)
            self.names, self.cols = model_columns(tuple(self.model.dense_features), SPAM_DENSE_FEATURES, "spam")
            norm = self.model.metadata["normalisation"]
            self.mean = np.asarray(norm["mean"], dtype=np.float32)
            self.std = np.asarray(norm["std"], dtype=np.float32)
            self._score = self._spam
            self.decode = decode_email
        else:
            raise ValueError(f"unknown pipeline {pipeline!r}")
        self.thresholds = dict(self.model.thresholds)

    def _fraud(self, e: Any) -> tuple[float, list[str]]:
        from feature_store.batch import fraud_batch
        from streams.decisions import reasons_for

        rows, _defaulted, snap = fraud_batch(self.store, [e])
        x = rows if self.cols is None else rows[:, self.cols]
        score = float(self.model.predict(x)[0])
        self.store.write(snap)
        return score, reasons_for(x, self.names, self.model.mean, self.model.std)[0]

    def _spam(self, e: Any) -> tuple[float, list[str]]:
        from feature_store.batch import spam_batch
        from streams.decisions import reasons_for

        rows, _defaulted, snap = spam_batch(self.store, [e])
        dense = rows if self.cols is None else rows[:, self.cols]
        score = float(self.model.predict([self.model.tokens(e)], dense)[0])
        self.store.write(snap)
        return score, reasons_for(dense, self.names, self.mean, self.std)[0]

    def decide(self, value: bytes | None, topic: str, partition: int, offset: int, ts_ms: int | None) -> tuple[str, bytes]:
        """(action, decision JSON) for one record; raises ``RecordError`` for a bad one."""
        from streams.decisions import action_for, build_decision

        e = self.decode(value)
        score, reasons = self._score(e)
        action = action_for(self.pipeline, score, self.thresholds)
        d = build_decision(event_id=e.event_id, pipeline=self.pipeline, score=score, action=action,
                           model_name=self.model.name, model_version=self.model.version, reasons=reasons,
                           topic=topic, partition=partition, offset=offset, event_ts_s=e.ts_s, input_ts_ms=ts_ms)
        return action, orjson.dumps(d)


def _fraud_model(settings: Settings) -> Any:
    from models.fraud_model import FraudModel

    return FraudModel.load(str(settings.model_dir), device=settings.device)


def _stop_flag() -> list[bool]:
    flag = [False]

    def _stop(_signum: int, _frame: Any) -> None:
        flag[0] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return flag


def run_per_message(settings: Settings, pipeline: str) -> int:
    """The hand-written loop: poll one, decide one, produce one, store its offset."""
    from confluent_kafka import Consumer, Producer

    from streams.decisions import ALERT_ACTIONS
    from streams.dlq import dlq_headers
    from streams.errors import RecordError
    from streams.pipelines import topics_for
    from streams.worker import producer_config

    stop = _stop_flag()
    topics = topics_for(pipeline, settings.topic_prefix)
    scorer = OneEventScorer(settings, pipeline)
    consumer = Consumer({**settings.kafka_config(), "group.id": baseline_group(settings, "per-message", pipeline),
                         "auto.offset.reset": "earliest", "enable.auto.commit": True,
                         "enable.auto.offset.store": False})
    # The worker's producer settings (idempotent, acks=all, linger 2 ms, lz4): only the loop differs.
    producer = Producer(producer_config(settings, f"baseline-per-message-{pipeline}-{os.getpid()}"))
    alerts = ALERT_ACTIONS[pipeline]
    consumer.subscribe([topics.input])
    n = 0
    try:
        while not stop[0]:
            msg = consumer.poll(0.1)
            producer.poll(0)
            if msg is None:
                continue
            if msg.error() is not None:
                continue
            ts_type, ts_ms = msg.timestamp()
            try:
                action, value = scorer.decide(msg.value(), msg.topic(), msg.partition(), msg.offset(),
                                              ts_ms if ts_type else None)
            except RecordError as exc:
                producer.produce(topics.dlq, key=msg.key(), value=msg.value() or b"",
                                 headers=dlq_headers(msg, exc, pipeline, time.time()))
            else:
                producer.produce(topics.decisions, key=msg.key(), value=value)
                if action in alerts:
                    producer.produce(topics.actions, key=msg.key(), value=value)
            consumer.store_offsets(msg)
            n += 1
    finally:
        producer.flush(30)
        consumer.close()
        scorer.store.close()
    log.info("per-message %s baseline: %d records", pipeline, n)
    return 0


def run_faust(settings: Settings, pipeline: str) -> int:
    """A faust-streaming agent scoring ``stream.take_events`` batches (fraud only)."""
    if pipeline != "fraud":
        raise SystemExit("the faust baseline is written for fraud only")
    import faust

    from feature_store.batch import fraud_batch
    from feature_store.fraud import FRAUD_FEATURES
    from feature_store.store import FeatureStore, connect
    from streams.decisions import ALERT_ACTIONS, action_for, build_decision, reasons_for
    from streams.errors import RecordError
    from streams.events import decode_transaction
    from streams.pipelines import model_columns, topics_for

    topics = topics_for(pipeline, settings.topic_prefix)
    app = faust.App(
        baseline_group(settings, "faust", pipeline),
        broker="kafka://" + settings.kafka_bootstrap,
        store="memory://",
        datadir=tempfile.mkdtemp(prefix="streaminfer-faust-baseline-"),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        producer_acks=-1,
    )
    source = app.topic(topics.input, key_serializer="raw", value_serializer="raw", partitions=settings.partitions)
    out = app.topic(topics.decisions, key_serializer="raw", value_serializer="raw", partitions=settings.partitions)
    alerts_topic = app.topic(topics.actions, key_serializer="raw", value_serializer="raw",
                             partitions=settings.partitions)
    store = FeatureStore(connect(settings.redis_url.get(), settings.redis_timeout_s), settings.feature_namespace)
    model = _fraud_model(settings)
    names, cols = model_columns(tuple(model.features), FRAUD_FEATURES, "fraud")
    thresholds = dict(model.thresholds)
    alerts = ALERT_ACTIONS[pipeline]
    batch_max, within = settings.batch_max, max(settings.batch_wait_ms, 1) / 1000.0

    @app.agent(source)
    async def score(stream: Any) -> None:
        async for batch in stream.take_events(batch_max, within=within):
            good, events = [], []
            for ev in batch:
                try:
                    events.append(decode_transaction(ev.value))
                    good.append(ev)
                except RecordError:
                    log.warning("faust baseline: skipping a bad record")  # a user's loop: no DLQ
            if not events:
                continue
            rows, _defaulted, snap = fraud_batch(store, events)
            x = rows if cols is None else rows[:, cols]
            scores = model.predict(x)
            store.write(snap)
            reasons = reasons_for(x, names, model.mean, model.std)
            for ev, e, s, r in zip(good, events, scores, reasons):
                m = ev.message
                action = action_for(pipeline, float(s), thresholds)
                value = orjson.dumps(build_decision(
                    event_id=e.event_id, pipeline=pipeline, score=float(s), action=action,
                    model_name=model.name, model_version=model.version, reasons=r, topic=m.topic,
                    partition=m.partition, offset=m.offset, event_ts_s=e.ts_s,
                    input_ts_ms=int(m.timestamp * 1000) if m.timestamp else None))
                await out.send(key=m.key, value=value)
                if action in alerts:
                    await alerts_topic.send(key=m.key, value=value)

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streams.baselines", description=__doc__.split("\n", 1)[0])
    ap.add_argument("kind", choices=("per-message", "faust"))
    ap.add_argument("pipeline", choices=("fraud", "spam"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    if args.kind == "per-message":
        return run_per_message(settings, args.pipeline)
    return run_faust(settings, args.pipeline)


if __name__ == "__main__":
    sys.exit(main())

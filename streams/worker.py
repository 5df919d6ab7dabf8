"""The consume -> decide -> produce -> commit loop, shared by both pipelines.

At-least-once: a batch's offsets are committed only after the broker has
acknowledged every decision and DLQ record of the batch (idempotent producer,
acks=all). The wait is pipelined: a batch's records are sent, the next batch is
consumed and scored meanwhile, and just before that one produces, the earlier
batches are committed (asynchronously) if their acknowledgements are in, or left
pending (a few batches, half a second at most) and waited for. Shutdown and a
rebalance wait and commit synchronously. A record that cannot be decoded or
scored goes to the DLQ with its original bytes; the batch goes on. If the broker
does not acknowledge, the consumer rewinds to the first offsets of the pending
batches and decides them again, so a decision may repeat but is never lost
(``event_id`` de-duplicates).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from feature_store.store import UNAVAILABLE_ERRORS
from streams.batching import MicroBatcher
from streams.decisions import ALERT_ACTIONS, action_for, build_decision
from streams.dlq import dlq_headers
from streams.errors import RecordError
from streams.kafka_types import KafkaMessage
from streams.pipelines import Scored, Scorer, Topics
from streams.settings import Settings

log = logging.getLogger(__name__)



#: Bound on each transactional call. librdkafka's advice is to wait without a timeout,
#: but an unbounded send_offsets_to_transaction hung a worker past max.poll.interval.ms
#: when the group coordinator's broker was killed (the three-broker fault test). A call
#: that times out is an unclear outcome: a new producer settles the transaction and the
#: consumer goes back to the committed offsets, so nothing is lost or doubled.
TXN_CALL_TIMEOUT_S = 30.0
#: librdkafka does not always honour that timeout: when the group coordinator's broker is
#: killed and drops out of the metadata, the TxnOffsetCommit of send_offsets_to_transaction
#: waits for that broker for good (librdkafka #5456, #5511). So each transactional call runs
#: on a helper thread and is given up this long after its own timeout (``TxnCallHung``).
TXN_CALL_GRACE_S = 5.0
#: Every wait of one failed commit's recovery (the calls, a new producer, reading the
#: committed offsets) comes out of this budget, well below max.poll.interval.ms (120 s).
TXN_RECOVERY_BUDGET_S = 75.0


class TxnCallHung(Exception):
    """A transactional call did not return in time; its producer is given up (outcome unclear)."""


def _call_timeout(deadline: float | None, longest_s: float, shortest_s: float = 2.0) -> float:
    """Timeout for one call: ``longest_s``, cut to what is left until ``deadline`` (not below ``shortest_s``)."""
    if deadline is None:
        return longest_s
    return max(shortest_s, min(longest_s, deadline - time.monotonic()))


#: At-least-once pipelining: how many produced batches may wait for their
#: acknowledgements (uncommitted) while the next is processed, and for how long.
MAX_PENDING_BATCHES = 3
MAX_PENDING_S = 0.5


@dataclass(slots=True)
class _Pending:
    """A produced, uncommitted batch: its commit offsets and first offsets per partition."""

    offsets: dict[tuple[str, int], int]
    first: dict[tuple[str, int], int]
    since: float


class ScoringError(RecordError):
    """The scorer failed on this record alone (isolated by re-scoring it by itself)."""


class DeliveryError(Exception):
    """The broker did not acknowledge every record of a batch."""


@dataclass
class WorkerStats:
    events_in: int = 0
    decisions: int = 0
    dlq: int = 0
    batches: int = 0
    redeliveries: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    #: Seconds spent per stage of the batch path: decode, score, produce (decisions built
    #: and handed to the producer), commit (at-least-once: settling earlier batches;
    #: exactly-once: the transaction's commit).
    stage_s: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"events_in": self.events_in, "decisions": self.decisions, "dlq": self.dlq,
                "batches": self.batches, "redeliveries": self.redeliveries, "actions": dict(self.actions),
                "stage_s": {k: round(v, 3) for k, v in self.stage_s.items()}}


def consumer_config(settings: Settings, group_id: str, client_id: str) -> dict[str, Any]:
    return {
        **settings.kafka_config(),
        "group.id": group_id,
        "client.id": client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        # A new group starts from the beginning: a pipeline must decide what is already there.
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 2_000,
        "max.poll.interval.ms": 120_000,
        "fetch.wait.max.ms": 50,
        # Input written by transactional producers is read only once committed.
        "isolation.level": "read_committed",
    }


def producer_config(settings: Settings, client_id: str, transactional_id: str | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {
        **settings.kafka_config(),
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "lz4",
        "message.timeout.ms": 120_000,
        # Only failures need the Python callback; a callback per decision cost CPU.
        "delivery.report.only.error": True,
    }
    if transactional_id:
        conf["transactional.id"] = transactional_id
        # A crashed worker's open transaction blocks read_committed readers of its
        # output partitions until the coordinator aborts it: keep that short.
        conf["transaction.timeout.ms"] = 15_000
        conf["message.timeout.ms"] = 15_000  # librdkafka requires <= transaction.timeout.ms
    return conf


class Worker:
    """One consumer-group member running one pipeline."""

    def __init__(self, settings: Settings, scorer: Scorer, topics: Topics, group_id: str,
                 client_id: str = "streaminfer", *, transactional_id: str | None = None,
                 stop_event: threading.Event | None = None, consumer: Any = None, producer: Any = None) -> None:
        """``transactional_id`` switches on exactly-once mode; it must be stable for a
        worker across restarts (so a restart fences its predecessor) and unique among
        live workers."""
        self.settings = settings
        self.scorer = scorer
        self.topics = topics
        self.group_id = group_id
        self.client_id = client_id
        self.transactional_id = transactional_id
        self.stats = WorkerStats()
        self.batcher = MicroBatcher(settings.latency_budget_ms / 1000.0, settings.batch_max,
                                    settings.batch_wait_ms / 1000.0)
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self._delivery_errors: list[KafkaError] = []
        #: At-least-once: batches produced but not yet committed, oldest first.
        self._pending: list[_Pending] = []
        # Injectable so unit tests can drive a batch without a broker.
        self.consumer = consumer if consumer is not None else Consumer(
            {**consumer_config(settings, group_id, client_id), "on_commit": self._on_commit})
        self.producer = producer if producer is not None else self._new_producer()

    # -- delivery ---------------------------------------------------------
    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self._delivery_errors.append(err)

    @property
    def exactly_once(self) -> bool:
        return self.transactional_id is not None

    def _new_producer(self, deadline: float | None = None) -> Any:
        """A producer; in exactly-once mode with its transactions initialised.

        ``deadline`` (monotonic) shortens each attempt so a recovery stays within its budget."""
        producer = Producer(producer_config(self.settings, self.client_id, self.transactional_id))
        if self.transactional_id:
            # Fences an older producer with this id and aborts its open transaction (or
            # waits for its commit to complete). Bounded waits, so a stop request is seen
            # while the broker is away.
            while True:
                try:
                    self._txn_call(producer, "init_transactions", _call_timeout(deadline, 10.0, 5.0))
                    break
                except TxnCallHung as exc:
                    if self.stop_event.is_set():
                        raise
                    log.warning("%s; retrying with a new producer", exc)
                    producer = Producer(producer_config(self.settings, self.client_id, self.transactional_id))
                except KafkaException as exc:
                    if exc.args[0].fatal() or self.stop_event.is_set():
                        raise
                    log.warning("init_transactions: %s; retrying", exc)
                    self.stop_event.wait(0.2)
        return producer

    @staticmethod
    def _txn_call(producer: Any, name: str, timeout_s: float, *args: Any) -> Any:
        """``producer.<name>(*args, timeout_s)``, waited for at most ``timeout_s + TXN_CALL_GRACE_S``.

        The call runs on a daemon thread because librdkafka may block past its timeout
        (see ``TXN_CALL_GRACE_S``); then this raises ``TxnCallHung`` and the caller must give
        the producer up: the thread keeps it until the call returns, if ever, and a new
        producer with the same transactional id fences it."""
        fn = getattr(producer, name)
        box: list[tuple[bool, Any]] = []
        done = threading.Event()

        def call() -> None:
            try:
                box.append((True, fn(*args, timeout_s)))
            except BaseException as exc:  # handed to the caller
                box.append((False, exc))
            finally:
                done.set()

        threading.Thread(target=call, name=f"txn-{name}", daemon=True).start()
        if not done.wait(timeout_s + TXN_CALL_GRACE_S):
            raise TxnCallHung(f"{name} did not return within {timeout_s + TXN_CALL_GRACE_S:.0f}s")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def _produce(self, topic: str, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]] | None = None) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery)
                return
            except BufferError:
                self.producer.poll(0.05)

    def _flush(self) -> None:
        """Wait until the broker acknowledged everything produced; raise otherwise."""
        deadline = time.monotonic() + self.settings.shutdown_timeout_s * 4
        while len(self.producer) > 0:
            self.producer.flush(1.0)
            if time.monotonic() > deadline:
                raise DeliveryError(f"{len(self.producer)} records still unacknowledged")
        if self._delivery_errors:
            errs, self._delivery_errors = self._delivery_errors, []
            if any(e.fatal() for e in errs):
                log.error("producer hit a fatal error (%s); building a new one", errs[0])
                self.producer = self._new_producer()
            raise DeliveryError(f"{len(errs)} records not acknowledged: {errs[0]}")

    # -- scoring ----------------------------------------------------------
    def _score(self, msgs: list[KafkaMessage], events: list[Any], failed: list[tuple[KafkaMessage, BaseException]]
               ) -> tuple[list[KafkaMessage], list[Any], Scored | None]:
        """Score the batch; on a record-level failure, find the culprit(s) by scoring one by one."""
        backoff = 0.1
        while True:
            try:
                return msgs, events, self.scorer.score(events) if events else None
            except UNAVAILABLE_ERRORS as exc:  # the store's outage, not the record's fault: retried, never DLQ'd
                if self.stop_event.is_set():
                    raise
                log.warning("%s: feature store unavailable (%s); retrying in %.1fs", self.scorer.pipeline, exc, backoff)
                if self.stop_event.wait(backoff):
                    raise
                backoff = min(backoff * 2, 5.0)
            except Exception as exc:  # a record the model or features cannot handle
                if len(events) == 1:
                    failed.append((msgs[0], ScoringError(f"{type(exc).__name__}: {exc}")))
                    return [], [], None
                break
        ok_msgs, ok_events, parts = [], [], []
        for m, e in zip(msgs, events):
            mm, ee, s = self._score([m], [e], failed)
            if s is not None:
                ok_msgs += mm
                ok_events += ee
                parts.append(s)
        if not parts:
            return [], [], None
        merged = Scored(
            np.concatenate([p.scores for p in parts]),
            [r for p in parts for r in p.reasons],
            None if parts[0].features is None else [f for p in parts for f in (p.features or [])],
            [d for p in parts for d in p.defaulted],
        )
        return ok_msgs, ok_events, merged

    # -- the batch --------------------------------------------------------
    def process_batch(self, msgs: list[KafkaMessage]) -> None:
        t_start = time.perf_counter()
        good: list[KafkaMessage] = []
        events: list[Any] = []
        failed: list[tuple[KafkaMessage, BaseException]] = []
        commit: dict[tuple[str, int], int] = {}
        first: dict[tuple[str, int], int] = {}
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:  # type: ignore[attr-defined]
                    log.warning("%s: consumer error %s", self.scorer.pipeline, err)
                continue
            tp = (m.topic(), m.partition())
            commit[tp] = m.offset() + 1
            first.setdefault(tp, m.offset())
            try:
                events.append(self.scorer.decode(m.value()))
                good.append(m)
            except RecordError as exc:
                failed.append((m, exc))
        if not commit:
            return
        stage = self.stats.stage_s
        t0 = time.perf_counter()
        try:
            good, events, scored = self._score(good, events, failed)
        except UNAVAILABLE_ERRORS as exc:  # only escapes _score when the worker is stopping
            log.warning("%s: stopping during a feature-store outage (%s): the batch is left uncommitted "
                        "and will be decided after a restart", self.scorer.pipeline, exc)
            return
        t1 = time.perf_counter()
        stage["decode"] += t0 - t_start
        stage["score"] += t1 - t0
        settled = self.exactly_once or self._settle(block=False, also_rewind=first)
        t_produce = time.perf_counter()
        stage["commit"] += t_produce - t1
        if not settled:
            # An earlier batch was not acknowledged: everything from its first offsets,
            # this batch included, is decided again.
            self.stats.redeliveries += 1
            return
        now = time.time()
        pipeline = self.scorer.pipeline
        alerts = ALERT_ACTIONS[pipeline]
        actions: Counter[str] = Counter()
        if self.exactly_once:
            self.producer.begin_transaction()
        for i, (m, e) in enumerate(zip(good, events)):
            assert scored is not None
            score = float(scored.scores[i])
            action = action_for(pipeline, score, self.scorer.thresholds)
            ts_type, ts_ms = m.timestamp()
            decision = build_decision(
                event_id=e.event_id, pipeline=pipeline, score=score, action=action,
                model_name=self.scorer.model_name, model_version=self.scorer.model_version,
                reasons=scored.reasons[i], topic=m.topic(), partition=m.partition(), offset=m.offset(),
                event_ts_s=e.ts_s, input_ts_ms=ts_ms if ts_type else None,
                features=scored.features[i] if scored.features is not None else None,
                defaulted=scored.defaulted[i], now_s=now,
            )
            value = orjson.dumps(decision)
            self._produce(self.topics.decisions, m.key(), value)
            if action in alerts:
                self._produce(self.topics.actions, m.key(), value)
            actions[action] += 1
        for m, exc in failed:
            self._produce(self.topics.dlq, m.key(), m.value() or b"", dlq_headers(m, exc, pipeline, now))
        t2 = time.perf_counter()
        if self.exactly_once:
            done = self._commit_transaction([TopicPartition(t, p, o) for (t, p), o in commit.items()])
        else:
            self._pending.append(_Pending(commit, first, time.monotonic()))
            done = True
        stage["produce"] += t2 - t_produce
        stage["commit"] += time.perf_counter() - t2
        if not done:
            self.stats.redeliveries += 1
            return
        self.stats.batches += 1
        self.stats.events_in += len(good) + len(failed)
        self.stats.decisions += len(good)
        self.stats.dlq += len(failed)
        self.stats.actions.update(actions)

    def _settle(self, block: bool, also_rewind: dict[tuple[str, int], int] | None = None) -> bool:
        """At-least-once: commit the offsets of the pending batches once the broker has
        acknowledged every record they produced; returns False if it did not (then the
        consumer is rewound to the first offsets of those batches and of ``also_rewind``,
        the batch in hand, and nothing is committed).

        ``block=False`` is the pipelined path: called before a batch produces, it commits
        the earlier batches if their acknowledgements are already in (they had this
        batch's scoring time to arrive) with an asynchronous commit, and otherwise leaves
        them pending, up to ``MAX_PENDING_BATCHES`` or ``MAX_PENDING_S``, after which it
        waits. ``block=True`` (shutdown, rebalance, tools) waits and commits synchronously.
        """
        if not self._pending:
            return True
        try:
            if not block:
                self.producer.poll(0)
                waiting = len(self.producer) > 0
                if waiting and (len(self._pending) >= MAX_PENDING_BATCHES
                                or time.monotonic() - self._pending[0].since > MAX_PENDING_S):
                    block = True
                elif waiting and not self._delivery_errors:
                    return True
            self._flush()
        except DeliveryError as exc:
            rewind: dict[tuple[str, int], int] = {}
            for b in [*self._pending, _Pending({}, also_rewind or {}, 0.0)]:
                for tp, off in b.first.items():
                    rewind[tp] = min(off, rewind.get(tp, off))
            self._pending.clear()
            log.error("%s: %s; rewinding to decide those batches again", self.scorer.pipeline, exc)
            self._seek(rewind)
            return False
        offsets: dict[tuple[str, int], int] = {}
        for b in self._pending:
            offsets.update(b.offsets)
        self._pending.clear()
        try:
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                 asynchronous=not block)
        except KafkaException as exc:
            # Typically a rebalance took the partitions: their new owner decides
            # the batch again (a repeat, never a loss).
            log.warning("%s: commit failed (%s); the batch may be decided again", self.scorer.pipeline, exc)
        return True

    def settle(self) -> bool:
        """Wait for the pending batches' acknowledgements and commit them (see ``_settle``)."""
        return self._settle(block=True)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None:
            log.warning("%s: asynchronous commit failed (%s); those offsets may be decided again",
                        self.scorer.pipeline, err)

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        """Commit what is acknowledged before the partitions go, so their next owner
        repeats as little as possible."""
        if self.exactly_once or not self._pending:
            return
        if not self._settle(block=True):
            log.warning("%s: pending batches were not acknowledged before a rebalance; their next owner "
                        "decides them again", self.scorer.pipeline)

    def _commit_transaction(self, offsets: list[TopicPartition]) -> bool:
        """Exactly-once: the batch's outputs and its input offsets commit atomically.

        On an abortable error the transaction is aborted; on a fatal error, or when
        the commit's outcome is unclear, the producer is rebuilt (which fences the
        old one and settles its transaction). Either way the consumer goes back to
        the group's committed offsets, so the batch is decided again only if its
        transaction did not commit.
        """
        pipeline = self.scorer.pipeline
        # Every call is bounded (``_txn_call``) and a failure's recovery shares one budget, so
        # the worker is back in consume() well within max.poll.interval.ms.
        deadline = time.monotonic() + TXN_RECOVERY_BUDGET_S
        producer = self.producer
        try:
            self._txn_call(producer, "send_offsets_to_transaction", TXN_CALL_TIMEOUT_S,
                           offsets, self.consumer.consumer_group_metadata())
            self._txn_call(producer, "commit_transaction", _call_timeout(deadline, TXN_CALL_TIMEOUT_S))
            return True
        except TxnCallHung as exc:
            log.error("%s: %s; building a new producer", pipeline, exc)
            self.producer = self._new_producer(deadline)
        except KafkaException as exc:
            err = exc.args[0]
            if err.txn_requires_abort():
                log.warning("%s: transaction aborted (%s); deciding the batch again", pipeline, err)
                try:
                    self._txn_call(producer, "abort_transaction", _call_timeout(deadline, TXN_CALL_TIMEOUT_S))
                except (KafkaException, TxnCallHung) as abort_exc:
                    log.error("%s: abort failed (%s); building a new producer", pipeline, abort_exc)
                    self.producer = self._new_producer(deadline)
            else:
                log.error("%s: transaction failed (%s, fatal=%s); building a new producer", pipeline, err, err.fatal())
                self.producer = self._new_producer(deadline)
        self._seek_committed([TopicPartition(tp.topic, tp.partition) for tp in offsets], deadline)
        return False

    def _seek(self, offsets: dict[tuple[str, int], int]) -> None:
        for (topic, part), off in offsets.items():
            try:
                self.consumer.seek(TopicPartition(topic, part, off))
            except KafkaException as exc:  # no longer assigned: its new owner starts from the commit
                log.info("seek %s[%d] skipped: %s", topic, part, exc)

    def _seek_committed(self, partitions: list[TopicPartition], deadline: float | None = None) -> None:
        """Go back to the group's committed offsets of ``partitions``.

        Only the committed offsets tell whether an unclear transaction committed, so this
        retries (each wait bounded, within ``deadline`` while it lasts) until it reads them
        or the worker is stopping (then it returns: nothing more is committed)."""
        while True:
            try:
                committed = self.consumer.committed(partitions, timeout=_call_timeout(deadline, 10.0))
                break
            except KafkaException as exc:
                if self.stop_event.is_set():
                    return
                log.warning("reading committed offsets failed (%s); retrying", exc)
                self.stop_event.wait(0.2)
        # OFFSET_INVALID (-1001): nothing committed yet, so start from the beginning.
        self._seek({(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                    for tp in committed})

    def run(self, max_idle_s: float | None = None) -> WorkerStats:
        """Consume until ``stop_event`` is set (or, for tools, ``max_idle_s`` without records)."""
        self.consumer.subscribe([self.topics.input], on_revoke=self._on_revoke)
        batcher = self.batcher
        idle_since = time.monotonic()
        last_log = time.monotonic()
        try:
            while not self.stop_event.is_set():
                plan = batcher.plan()
                msgs = self.consumer.consume(num_messages=plan.max_messages, timeout=max(plan.timeout_s, 0.001))
                self.producer.poll(0)
                if msgs:
                    t0 = time.perf_counter()
                    self.process_batch(msgs)
                    batcher.observe(plan.max_messages, len(msgs), time.perf_counter() - t0)
                    idle_since = time.monotonic()
                else:
                    batcher.observe(plan.max_messages, 0, 0.0)
                    self._settle(block=False)
                    if max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                        break
                if time.monotonic() - last_log > 10:
                    log.info("%s %s batching=%s", self.scorer.pipeline, orjson.dumps(self.stats.as_dict()).decode(),
                             orjson.dumps(batcher.as_dict()).decode())
                    last_log = time.monotonic()
        finally:
            self.close()
        return self.stats

    def close(self) -> None:
        try:
            if not self.exactly_once:
                self.settle()
            self.producer.flush(self.settings.shutdown_timeout_s)
        finally:
            self.consumer.close()
            self.scorer.close()

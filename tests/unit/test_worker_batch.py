"""The batch logic of the worker, with a stub message/producer/consumer instead of a broker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import orjson

from streams.events import Transaction, decode_transaction
from streams.pipelines import Scored, topics_for
from streams.settings import Settings
from streams.worker import Worker


@dataclass
class Msg:
    _value: bytes | None
    _offset: int
    _partition: int = 0
    _key: bytes | None = b"c-1"
    _topic: str = "transactions"
    _headers: list[tuple[str, bytes]] | None = None

    def topic(self) -> str: return self._topic
    def partition(self) -> int: return self._partition
    def offset(self) -> int: return self._offset
    def key(self) -> bytes | None: return self._key
    def value(self) -> bytes | None: return self._value
    def headers(self) -> list[tuple[str, bytes]] | None: return self._headers
    def timestamp(self) -> tuple[int, int]: return (1, 1_700_000_000_000)
    def error(self) -> None: return None


@dataclass
class StubProducer:
    sent: list[tuple[str, bytes | None, bytes, Any]] = field(default_factory=list)
    pending: list[Any] = field(default_factory=list)
    fail: bool = False

    def produce(self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None, on_delivery: Any = None) -> None:
        self.sent.append((topic, key, value, headers))
        self.pending.append(on_delivery)

    def flush(self, timeout: float = 0) -> int:
        for cb in self.pending:
            cb(_Err() if self.fail else None, None)
        self.pending.clear()
        return 0

    def poll(self, timeout: float = 0) -> int: return 0
    def __len__(self) -> int: return len(self.pending)


class _Err:
    def fatal(self) -> bool: return False
    def __str__(self) -> str: return "MSG_TIMED_OUT"


@dataclass
class StubConsumer:
    commits: list[list[Any]] = field(default_factory=list)
    seeks: list[Any] = field(default_factory=list)

    asynchronous: list[bool] = field(default_factory=list)

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        self.commits.append([(o.topic, o.partition, o.offset) for o in offsets])
        self.asynchronous.append(asynchronous)

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


class AmountScorer:
    """Scores amount/1000; the event id 'poison' makes the model raise."""

    pipeline = "fraud"
    model_name = "stub"
    model_version = "1"
    thresholds = {"review": 0.5, "block": 0.9}

    def decode(self, value: bytes | None) -> Transaction:
        return decode_transaction(value)

    def score(self, events: Sequence[Transaction]) -> Scored:
        if any(e.event_id == "poison" for e in events):
            raise ValueError("model cannot handle this record")
        s = np.array([min(1.0, e.amount / 1000) for e in events], dtype=np.float32)
        return Scored(s, [[] for _ in events], None, [[] for _ in events])

    def close(self) -> None: pass


def tx(i: int, amount: float, event_id: str | None = None) -> bytes:
    return orjson.dumps({"event_id": event_id or f"tx-{i}", "ts": "2026-11-22T11:32:21Z", "card_id": "c-1",
                         "terminal_id": "t-1", "amount": amount})


def make_worker() -> tuple[Worker, StubProducer, StubConsumer]:
    p, c = StubProducer(), StubConsumer()
    w = Worker(Settings(), AmountScorer(), topics_for("fraud"), "g", consumer=c, producer=p)
    return w, p, c


def test_good_bad_and_poison_records_in_one_batch() -> None:
    w, p, c = make_worker()
    msgs = [Msg(tx(0, 10), 0), Msg(b"{not json", 1), Msg(tx(2, 600), 2), Msg(tx(3, 5, "poison"), 3),
            Msg(tx(4, 950), 4, _headers=[("trace", b"abc")])]
    w.process_batch(msgs)
    assert c.commits == []  # pending until acknowledged
    w.settle()
    by_topic: dict[str, list[Any]] = {}
    for topic, key, value, headers in p.sent:
        by_topic.setdefault(topic, []).append((key, value, headers))
    decisions = [orjson.loads(v) for _, v, _ in by_topic["fraud.decisions"]]
    assert [d["event_id"] for d in decisions] == ["tx-0", "tx-2", "tx-4"]
    assert [d["action"] for d in decisions] == ["allow", "review", "block"]
    assert [orjson.loads(v)["event_id"] for _, v, _ in by_topic["fraud.alerts"]] == ["tx-2", "tx-4"]
    dlq = by_topic["transactions.dlq"]
    assert [v for _, v, _ in dlq] == [b"{not json", tx(3, 5, "poison")]
    h = dict(dlq[0][2])
    assert h["error.class"] == b"DecodeError" and h["source.offset"] == b"1" and h["pipeline"] == b"fraud"
    assert set(h) >= {"error.message", "source.topic", "source.partition", "failed_at"}
    assert dict(dlq[1][2])["error.class"] == b"ScoringError"
    assert c.commits == [[("transactions", 0, 5)]]
    assert w.stats.decisions == 3 and w.stats.dlq == 2


def test_dlq_keeps_original_headers_and_key() -> None:
    w, p, _ = make_worker()
    w.process_batch([Msg(b"[]", 7, _key=None, _headers=[("trace", b"abc")])])
    topic, key, value, headers = p.sent[0]
    assert topic == "transactions.dlq" and key is None and value == b"[]"
    assert headers[0] == ("trace", b"abc")


def test_unacknowledged_batch_is_not_committed_but_rewound() -> None:
    w, p, c = make_worker()
    p.fail = True
    w.process_batch([Msg(tx(0, 10), 40, _partition=2), Msg(tx(1, 10), 41, _partition=2)])
    assert not w.settle()
    assert c.commits == []
    assert c.seeks == [("transactions", 2, 40)]


def test_offsets_committed_per_partition_as_last_plus_one() -> None:
    w, _, c = make_worker()
    w.process_batch([Msg(tx(0, 1), 10, 0), Msg(tx(1, 1), 3, 1), Msg(tx(2, 1), 11, 0)])
    w.settle()
    assert c.asynchronous == [False]
    assert sorted(c.commits[0]) == [("transactions", 0, 12), ("transactions", 1, 4)]


def test_stop_during_a_feature_store_outage_leaves_the_batch_uncommitted_and_exits_cleanly() -> None:
    import redis

    class DownScorer(AmountScorer):
        def __init__(self, w_stop: Any) -> None:
            self.stop = w_stop

        def score(self, events: Sequence[Transaction]) -> Scored:
            self.stop.set()  # SIGTERM arrives while Redis is down (the `pause` policy raises)
            raise redis.ConnectionError("Connection refused")

    p, c = StubProducer(), StubConsumer()
    import threading

    stop = threading.Event()
    w = Worker(Settings(), DownScorer(stop), topics_for("fraud"), "g", consumer=c, producer=p, stop_event=stop)
    w.process_batch([Msg(tx(0, 10), 0), Msg(tx(1, 20), 1)])
    assert p.sent == [] and c.commits == []
    assert w.stats.decisions == 0 and w.stats.dlq == 0


def test_pipelined_commit_of_the_previous_batch_once_acknowledged() -> None:
    """Batch 1 is committed (asynchronously) when batch 2 is about to produce and batch
    1's acknowledgements are in; not before."""
    w, p, c = make_worker()
    w.process_batch([Msg(tx(0, 1), 0), Msg(tx(1, 1), 1)])
    assert c.commits == [] and len(p) == 2
    p.flush()  # the broker acknowledges batch 1 while batch 2 is consumed and scored
    w.process_batch([Msg(tx(2, 1), 2)])
    assert c.commits == [[("transactions", 0, 2)]] and c.asynchronous == [True]
    w.settle()
    assert c.commits[-1] == [("transactions", 0, 3)] and c.asynchronous[-1] is False


def test_unacknowledged_earlier_batch_rewinds_it_and_drops_the_batch_in_hand() -> None:
    """A delivery failure of batch 1 found when batch 2 is about to produce: nothing is
    committed, the consumer goes back to batch 1's first offsets (and batch 2's, for
    partitions only it touched), and batch 2 produces nothing."""
    w, p, c = make_worker()
    w.process_batch([Msg(tx(0, 1), 10, 0)])
    p.fail = True
    p.flush()
    w.process_batch([Msg(tx(1, 1), 11, 0), Msg(tx(2, 1), 5, 3)])
    assert c.commits == []
    assert sorted(c.seeks) == [("transactions", 0, 10), ("transactions", 3, 5)]
    assert len(p.sent) == 1  # only batch 1's decision was ever produced
    assert w.stats.redeliveries == 1


def test_pending_batches_are_bounded() -> None:
    from streams.worker import MAX_PENDING_BATCHES

    w, p, c = make_worker()
    for i in range(MAX_PENDING_BATCHES + 1):
        w.process_batch([Msg(tx(i, 1), i)])
    # acknowledgements never came on their own: the worker waited for them (flush) and committed
    assert c.commits and c.commits[-1] == [("transactions", 0, MAX_PENDING_BATCHES)]

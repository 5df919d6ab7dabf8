"""Both pipelines end to end on the real broker and Redis: one decision per good event,
alerts on the action topic, every bad record in the DLQ with its original bytes."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.decisions import ALERT_ACTIONS
from streams.pipelines import topics_for
from streams.runner import build_worker, group_id_for
from streams.settings import Secret, Settings
from tests.kafka_util import WorkerThread, committed_offsets, delete_topics, end_offsets, produce_all, read_topic
from tests.poison import poison_emails, poison_transactions
from tests.stack import Stack, spam_corpus

pytestmark = pytest.mark.integration


def settings_for(stack: Stack, prefix: str, model_dir: Path, **kw: Any) -> Settings:
    options: dict[str, Any] = {"partitions": 3, "device": "cpu", **kw}
    return Settings(kafka_bootstrap=stack.bootstrap, redis_url=Secret(stack.redis_url), model_dir=model_dir,
                    topic_prefix=prefix, feature_namespace=prefix + "ns", **options)


def transactions(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        amount = rng.choice([rng.uniform(1, 120), rng.uniform(1, 120), rng.uniform(300, 2000)])
        out.append({"event_id": f"tx-{i}", "ts": 1_795_000_000_000 + i * 60_000, "card_id": f"c-{rng.randrange(40)}",
                    "terminal_id": f"t-{rng.randrange(25)}", "amount": round(amount, 2), "currency": "USD",
                    "channel": "pos"})
    return out


def check_run(stack: Stack, settings: Settings, pipeline: str, good: list[tuple[bytes, bytes]],
              poison: list[tuple[str, bytes | None, bytes | None]]) -> list[dict[str, Any]]:
    topics = topics_for(pipeline, settings.topic_prefix)
    worker = build_worker(settings, pipeline)
    mixed: list[tuple[bytes | None, bytes | None]] = list(good)
    for i, (_, k, v) in enumerate(poison):  # bad records spread between good ones
        mixed.insert((i * 7) % (len(mixed) + 1), (k, v))
    produce_all(stack.bootstrap, topics.input, mixed)
    runner = WorkerThread(worker)
    try:
        decisions = read_topic(stack.bootstrap, topics.decisions, len(good), timeout_s=120, grace_s=2)
        dlq = read_topic(stack.bootstrap, topics.dlq, len(poison), timeout_s=30, grace_s=0.5)
        alerts = read_topic(stack.bootstrap, topics.actions, 0, timeout_s=10, grace_s=1)
    finally:
        runner.stop()
    decided = [orjson.loads(m.value()) for m in decisions]
    ids = Counter(d["event_id"] for d in decided)
    expected_ids = {orjson.loads(v)["event_id"] for _, v in good}
    assert set(ids) == expected_ids, "every good event decided"
    assert max(ids.values()) == 1, "a normal run makes no duplicates"
    # keys: decisions carry the input's key
    key_of = {orjson.loads(v)["event_id"]: k for k, v in good}
    assert all(m.key() == key_of[orjson.loads(m.value())["event_id"]] for m in decisions)
    # alerts: exactly the decisions whose action alerts
    want_alerts = sorted(d["event_id"] for d in decided if d["action"] in ALERT_ACTIONS[pipeline])
    assert sorted(orjson.loads(m.value())["event_id"] for m in alerts) == want_alerts
    # DLQ: one record per poison record, original key and bytes, DESIGN headers
    assert len(dlq) == len(poison)
    assert sorted((m.key() or b"", m.value() or b"") for m in dlq) == sorted((k or b"", v or b"") for _, k, v in poison)
    for m in dlq:
        h = dict(m.headers())
        assert {"error.class", "error.message", "source.topic", "source.partition", "source.offset",
                "pipeline", "failed_at"} <= set(h)
        assert h["source.topic"].decode() == topics.input and h["pipeline"].decode() == pipeline
        assert h["error.class"] in {b"DecodeError", b"ValidationError", b"OversizeError"}
    # offsets: everything consumed is committed
    assert committed_offsets(stack.bootstrap, group_id_for(settings, pipeline), topics.input) == \
        end_offsets(stack.bootstrap, topics.input)
    for d in decided:
        assert d["pipeline"] == pipeline and 0.0 <= d["score"] <= 1.0
        assert d["source"]["topic"] == topics.input and d["latency_ms"] is not None
    delete_topics(stack.bootstrap, settings.topic_prefix)
    return decided


def test_fraud_pipeline_end_to_end(stack: Stack, prefix: str, model_dir: Path) -> None:
    txs = transactions(400)
    good = [(t["card_id"].encode(), orjson.dumps(t)) for t in txs]
    decided = check_run(stack, settings_for(stack, prefix, model_dir), "fraud", good, poison_transactions())
    actions = Counter(d["action"] for d in decided)
    assert actions["allow"] > 0 and actions["block"] + actions["review"] > 0, actions
    big = [d for d in decided if d["event_id"] in {t["event_id"] for t in txs if t["amount"] > 300}]
    assert sum(d["action"] != "allow" for d in big) / len(big) > 0.9, "amounts over 220 are the handbook's scenario 1"


def test_spam_pipeline_end_to_end(stack: Stack, prefix: str, model_dir: Path) -> None:
    from models.corpus import load_corpus, split_of
    msgs = [m for m in load_corpus(spam_corpus()) if split_of(m.file_name) == "test"]
    rng = random.Random(5)
    sample = rng.sample(msgs, 120)
    good = [(m.event["to"][0].encode(), orjson.dumps(m.event)) for m in sample]
    decided = check_run(stack, settings_for(stack, prefix, model_dir), "spam", good, poison_emails())
    label = {m.event["event_id"]: m.label for m in sample}
    flagged_spam = sum(1 for d in decided if label[d["event_id"]] == 1 and d["action"] != "deliver")
    n_spam = sum(label.values())
    assert n_spam > 10 and flagged_spam / n_spam > 0.8
    delivered_ham = sum(1 for d in decided if label[d["event_id"]] == 0 and d["action"] == "deliver")
    assert delivered_ham / (len(sample) - n_spam) > 0.95

"""Backfill equals live processing, and a backfill / replay namespace leaves the
production keys byte-identical (real broker, real Redis)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from feature_store.backfill import backfill
from feature_store.fraud import FRAUD_FEATURES
from feature_store.keys import namespace_pattern
from feature_store.labels import materialise
from feature_store.store import FeatureStore, connect
from models.fraud_sim import SimConfig, generate
from streams.kafka_admin import ensure_topics
from streams.pipelines import topics_for
from tests.integration.test_pipelines import settings_for
from tests.kafka_util import decide_all, delete_topics, produce_all
from tests.stack import ROOT, Stack

pytestmark = pytest.mark.integration


def snapshot(client, ns: str) -> dict[bytes, bytes]:
    """DUMP of every key of a namespace (the exact bytes Redis holds)."""
    return {k: client.dump(k) for k in client.scan_iter(match=namespace_pattern(ns), count=1000)}


def contents(client, ns: str) -> dict[bytes, dict[bytes, float]]:
    out = {}
    for k in client.scan_iter(match=namespace_pattern(ns), count=1000):
        if client.type(k) != b"hash":
            continue
        out[k.split(b":", 2)[2]] = {f: round(float(v), 6) for f, v in client.hgetall(k).items()}
    return out


def test_backfill_equals_live_and_leaves_production_untouched(stack: Stack, prefix: str, model_dir: Path) -> None:
    sim = generate(SimConfig(n_customers=40, n_terminals=60, n_days=14, seed=321))
    events = list(sim.events())
    labels = list(sim.labels())
    settings = settings_for(stack, prefix, model_dir, emit_features=True, batch_max=64, partitions=1)
    prod = settings.feature_namespace
    client = connect(stack.redis_url)
    materialise(client, prod, labels)  # what the label app would have written
    topics = topics_for("fraud", prefix)
    ensure_topics({"bootstrap.servers": stack.bootstrap}, [prefix + "fraud.labels"], 1, 1)
    produce_all(stack.bootstrap, prefix + "fraud.labels", [(r["card_id"].encode(), orjson.dumps(r)) for r in labels])
    live = {i: d["features"] for i, d in decide_all(stack.bootstrap, settings, events).items()}
    assert len(live) == len(events)
    before = snapshot(client, prod)
    assert before

    # Backfill over the same events into its own namespace (API, with the labels topic).
    ns = prefix + "backfill"
    store = FeatureStore(connect(stack.redis_url), ns)
    seen: dict[str, np.ndarray] = {}
    stats = backfill({"bootstrap.servers": stack.bootstrap}, topics.input, store, "earliest", batch_max=500,
                     labels_topics={"fraud": prefix + "fraud.labels"},
                     on_batch=lambda evs, rows: seen.update({e.event_id: r for e, r in zip(evs, rows)}))
    assert stats.events == len(events) and stats.labels == len(labels)
    assert stats.round_trips == 2 * stats.batches, stats.as_dict()
    for eid, feats in live.items():
        np.testing.assert_allclose(seen[eid], [feats[f] for f in FRAUD_FEATURES], rtol=1e-6, atol=1e-5, err_msg=eid)
    assert contents(client, ns) == contents(client, prod), "backfilled state differs from the live state"
    store.close()

    # The CLI, from an offset, into a third namespace: production is byte-identical after.
    env = stack.env(prefix, STREAMINFER_FEATURE_NAMESPACE=prod)
    out = subprocess.run([sys.executable, "-m", "feature_store.cli", "features", "backfill", "--topic", "transactions",
                          "--from", "100", "--namespace", prefix + "replay", "--labels"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    report = orjson.loads(out.stdout.strip().splitlines()[-1])
    assert report["events"] == len(events) - 100
    refused = subprocess.run([sys.executable, "-m", "feature_store.cli", "features", "backfill", "--topic",
                              "transactions", "--namespace", prod], env=env, cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 2
    assert snapshot(client, prod) == before, "a backfill changed production keys"

    for n in (prod, ns, prefix + "replay"):
        keys = list(client.scan_iter(match=namespace_pattern(n)))
        if keys:
            client.delete(*keys)
    client.close()
    delete_topics(stack.bootstrap, prefix)

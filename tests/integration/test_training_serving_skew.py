"""No training/serving skew: what the worker computes from Redis for an event equals
the event's training row, and its score equals the model on that row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from feature_store.fraud import FRAUD_FEATURES
from feature_store.labels import materialise
from feature_store.store import connect
from models.fraud_model import FraudModel
from models.fraud_sim import SimConfig, generate
from models.train_fraud import build_features
from tests.integration.test_pipelines import settings_for
from tests.kafka_util import decide_all, delete_topics
from tests.stack import Stack

pytestmark = pytest.mark.integration


def test_serving_features_equal_training_rows(stack: Stack, prefix: str, model_dir: Path) -> None:
    sim = generate(SimConfig(n_customers=40, n_terminals=60, n_days=12, seed=123))
    rows = build_features(sim)
    events = list(sim.events())
    assert len(events) > 300
    # One partition keeps the order the training pass used (time order) for every entity.
    settings = settings_for(stack, prefix, model_dir, emit_features=True, batch_max=64, partitions=1)
    # The label app's output for these transactions (what it materialises from
    # fraud.labels); the risk windows end 8 days before each event, so every label
    # they use had arrived by then, as training assumes.
    client = connect(stack.redis_url)
    materialise(client, settings.feature_namespace, sim.labels())
    client.close()
    by_id = decide_all(stack.bootstrap, settings, events)
    assert len(by_id) == len(events)
    model = FraudModel.load(model_dir, device="cpu")
    expected_scores = model.predict(rows)
    for i, e in enumerate(events):
        d = by_id[e["event_id"]]
        served = np.array([d["features"][f] for f in FRAUD_FEATURES], dtype=np.float32)
        np.testing.assert_allclose(served, rows[i], rtol=1e-6, atol=1e-5, err_msg=e["event_id"])
        assert d["score"] == pytest.approx(float(expected_scores[i]), abs=1e-5)
        assert d["defaulted"] == []
    delete_topics(stack.bootstrap, prefix)

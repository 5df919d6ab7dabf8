"""Fraud MLP artifact round trip, refusal of unsafe weights, quick training and re-evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from feature_store.fraud import FRAUD_FEATURES, fraud_features
from feature_store.windows import DayWindows
from models.artifacts import METADATA_FILE, WEIGHTS_FILE, ArtifactError, save_artifact
from models.fraud_model import FraudModel, build_mlp, default_arch
from models.fraud_sim import SCENARIO_TERMINAL, SimConfig, generate
from models.train_fraud import (
    average_precision,
    build_features,
    card_precision_at_k,
    evaluate,
    roc_auc,
    train,
)

F = len(FRAUD_FEATURES)


def _random_model_metadata(seed: int = 0):
    torch.manual_seed(seed)
    arch = default_arch(F, (16, 8))
    state = build_mlp(arch).state_dict()
    rng = np.random.default_rng(seed)
    meta = {
        "kind": "fraud",
        "model_name": FraudModel.NAME,
        "features": list(FRAUD_FEATURES),
        "normalisation": {"mean": rng.uniform(0, 50, F).tolist(), "std": rng.uniform(1, 30, F).tolist()},
        "arch": arch,
        "thresholds": {"review": 0.4, "block": 0.8},
    }
    return state, meta


def _rows(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 300, size=(n, F)).astype(np.float32)


@pytest.fixture()
def saved(tmp_path):
    state, meta = _random_model_metadata()
    art = save_artifact(tmp_path, FraudModel.NAME, state, meta)
    return tmp_path, art, state, meta


def test_round_trip_identical_scores(saved):
    model_dir, art, state, meta = saved
    x = _rows(257)
    in_memory = FraudModel(state, meta, device="cpu").predict(x)
    loaded = FraudModel.load(model_dir, device="cpu")
    assert (loaded.name, loaded.version) == ("fraud-mlp", art.version)
    assert loaded.features == FRAUD_FEATURES
    assert loaded.thresholds == {"review": 0.4, "block": 0.8}
    assert np.array_equal(loaded.predict(x), in_memory)
    assert np.array_equal(FraudModel.load(model_dir, art.version, device="cpu").predict(x), in_memory)
    # normalisation happens inside: equal to the raw net on standardised input
    net = build_mlp(meta["arch"])
    net.load_state_dict(state)
    z = (x - np.float32(meta["normalisation"]["mean"])) / np.float32(meta["normalisation"]["std"])
    with torch.no_grad():
        ref = torch.sigmoid(net(torch.from_numpy(z))).squeeze(-1).numpy()
    np.testing.assert_allclose(loaded.predict(x), ref, rtol=1e-5, atol=1e-6)
    loaded.close()
    with pytest.raises(RuntimeError):
        loaded.predict(x)


def test_predict_shapes(saved):
    model = FraudModel.load(saved[0], device="cpu")
    for n in (0, 1, 5, 1000):
        out = model.predict(_rows(n))
        assert out.shape == (n,) and out.dtype == np.float32
        assert np.all((out >= 0) & (out <= 1))
    x = _rows(64)
    batch = model.predict(x)
    one_by_one = np.concatenate([model.predict(x[i : i + 1]) for i in range(64)])
    np.testing.assert_allclose(batch, one_by_one, rtol=1e-5, atol=1e-7)
    assert model.predict(x.astype(np.float64).tolist()).shape == (64,)  # lists / float64 are converted
    with pytest.raises(ValueError):
        model.predict(np.zeros((3, F + 1), np.float32))
    with pytest.raises(ValueError):
        model.predict(np.zeros(F, np.float32))
    assert model.action(0.9) == "block" and model.action(0.5) == "review" and model.action(0.1) == "allow"


def test_tampered_weights_refused(saved):
    model_dir, art, _, _ = saved
    weights = art.path / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        FraudModel.load(model_dir, device="cpu")


def test_pickle_weights_refused_even_with_matching_hash(saved, tmp_path):
    model_dir, art, state, _ = saved
    weights = art.path / WEIGHTS_FILE
    torch.save(state, weights)  # a pickle (zip) file in place of safetensors
    with pytest.raises(ArtifactError):
        FraudModel.load(model_dir, device="cpu")
    # even if an attacker also rewrites the hash in the metadata
    import hashlib

    meta_path = art.path / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="safetensors"):
        FraudModel.load(model_dir, device="cpu")


def test_metadata_mismatch_refused(tmp_path):
    state, meta = _random_model_metadata()
    with pytest.raises(ArtifactError, match="features"):
        FraudModel(state, dict(meta, features=list(FRAUD_FEATURES)[::-1]), device="cpu")
    with pytest.raises(ArtifactError):
        FraudModel(state, dict(meta, arch=default_arch(F, (32, 8))), device="cpu")
    with pytest.raises(ArtifactError):
        FraudModel(state, dict(meta, kind="spam"), device="cpu")
    with pytest.raises(ArtifactError, match="no artifact"):
        FraudModel.load(tmp_path / "empty", device="cpu")


def test_metrics_match_definitions():
    rng = np.random.default_rng(3)
    y = (rng.random(5_000) < 0.05).astype(np.int8)
    s = np.round(rng.random(5_000) + y * 0.3, 2)  # ties on purpose
    skm = pytest.importorskip("sklearn.metrics")
    assert roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)


def test_card_precision_at_k_small_example():
    # day 0: cards 1 (fraud, 0.9), 2 (0.8), 3 (0.1, fraud) -> top 2 = {1, 2}: 1 fraud of k=2
    # day 1: card 1 twice (max 0.7, one fraud), card 2 (0.2) -> top 2 = {1, 2}: 1 of 2
    day = np.array([0, 0, 0, 1, 1, 1])
    card = np.array([1, 2, 3, 1, 1, 2])
    y = np.array([1, 0, 1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.1, 0.7, 0.3, 0.2])
    assert card_precision_at_k(day, card, y, s, k=2) == pytest.approx(0.5)
    assert card_precision_at_k(day, card, y, s, k=1) == pytest.approx(1.0)


# ----------------------------------------------------------------- quick training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("fraud-models")
    logs: list[str] = []
    art = train(model_dir, quick=True, seed=7, log=logs.append)
    return model_dir, art, logs


def test_quick_training_learns(trained):
    model_dir, art, logs = trained
    meta = art.metadata
    m = meta["metrics"]
    assert m["roc_auc"] > 0.65, m
    assert m["average_precision"] > 3 * m["n_fraud"] / m["n"], m  # far above the base rate
    assert 0 < meta["thresholds"]["review"] <= meta["thresholds"]["block"] < 1
    for key in ("kind", "model_name", "features", "normalisation", "arch", "threshold_rule", "trained_at", "baselines"):
        assert key in meta, key
    assert meta["features"] == list(FRAUD_FEATURES)
    td = meta["training_data"]
    assert td["generator"] == "fraud-detection-handbook" and len(td["fingerprint"]) == 64
    assert td["config"]["seed"] == 7
    # the split is by time with a label-delay gap before validation and before test
    assert td["validation_days"]["days"][0] - td["train_days"]["days"][1] == 7
    assert td["test_days"]["days"][0] - td["validation_days"]["days"][1] == 7
    assert len(meta["test_set"]["ids"]) == m["n"]
    assert any("torch mlp" in line for line in logs)

    # The detectable scenarios (1: amount, 3: customer x5) are well separated; scenario 2
    # (compromised terminals) has no signal in these features (see the report).
    sim = generate(SimConfig.from_dict(td["config"]))
    rows = np.array([int(i[3:]) for i in meta["test_set"]["ids"]])
    day = sim.day[rows]
    assert day.min() >= td["test_days"]["days"][0] and day.max() < td["test_days"]["days"][1]
    model = FraudModel.load(model_dir, device="cpu")
    X = build_features(sim)
    s = model.predict(X[rows])
    keep = sim.scenario[rows] != SCENARIO_TERMINAL
    assert roc_auc(sim.is_fraud[rows][keep], s[keep]) > 0.9


def test_evaluate_reproduces_stored_metrics(trained):
    model_dir, art, _ = trained
    assert evaluate(art.path) == art.metadata["metrics"]
    assert evaluate(model_dir, art.version) == art.metadata["metrics"]


def test_evaluate_detects_changed_data(trained, tmp_path):
    _, art, _ = trained
    meta = dict(art.metadata)
    meta["training_data"] = dict(meta["training_data"], fingerprint="0" * 64)
    tensors = {k: v.clone() for k, v in art.tensors.items()}
    bad = save_artifact(tmp_path, FraudModel.NAME, tensors, meta)
    with pytest.raises(ArtifactError, match="fingerprint"):
        evaluate(bad.path)


def test_training_rows_equal_shared_feature_function():
    """Rows from build_features equal fraud_features over all earlier events, recomputed naively."""
    sim = generate(SimConfig(n_customers=150, n_terminals=600, n_days=45, seed=5))
    X = build_features(sim)
    rng = np.random.default_rng(0)
    picks = np.r_[0, rng.choice(np.arange(len(sim) // 2, len(sim)), size=12, replace=False)]
    for i in picks:
        c = sim.customer_id[i]
        t = sim.terminal_id[i]
        card, term = DayWindows(), DayWindows()
        for j in np.flatnonzero(sim.customer_id[:i] == c):
            card.add(int(sim.ts_s[j] // 86_400), float(sim.amount[j]))
        for j in np.flatnonzero(sim.terminal_id[:i] == t):
            term.add(int(sim.ts_s[j] // 86_400), float(sim.amount[j]))
        # terminal risk: only labels already arrived (label_ts = ts + 7 days <= the event's ts)
        risk = DayWindows()
        for j in np.flatnonzero((sim.terminal_id == t) & (sim.ts_s + 7 * 86_400 <= sim.ts_s[i])):
            risk.add(int(sim.ts_s[j] // 86_400), float(sim.is_fraud[j]))
        expected = np.asarray(fraud_features(float(sim.ts_s[i]), float(sim.amount[i]), card, term,
                                             risk if risk.counts else None), dtype=np.float32)
        np.testing.assert_array_equal(X[i], expected)
    assert X[picks[1:], FRAUD_FEATURES.index("cust_nb_tx_30d")].max() > 0  # windows are warm
    assert X[:, FRAUD_FEATURES.index("term_risk_30d")].max() > 0  # labels arrived

"""Train, evaluate and save the fraud MLP on simulated Handbook transactions.

Data: :mod:`models.fraud_sim` (the Fraud Detection Handbook simulator) with a
recorded config and seed, so the data set is reproducible from the metadata and
its sha256 fingerprint is checked on re-evaluation.

Features: :func:`feature_store.fraud.fraud_features` and
:func:`~feature_store.fraud.apply_transaction`, exactly as the streaming worker
uses them: transactions in time order, features computed *before* the event is
counted into its card's and terminal's :class:`~feature_store.windows.DayWindows`.
Features are computed over all days so windows are warm; rows are then
selected by day.

Split by time, as in the book (labels arrive 7 days after the transaction):

    [burn-in | fit | gap 7 | validation | gap 7 | test]

The MLP is fit on *fit*; early stopping (best validation average precision) and
the action thresholds use *validation* only; the *test* window is scored once,
by the final model, for the reported metrics. Baselines (scikit-learn, a dev
dependency) are fit on the same fit rows and scored on the same test rows.

``evaluate()`` recomputes the test metrics from an artifact's metadata alone:
it regenerates the data from the recorded config, checks the fingerprint,
recomputes the features, selects the recorded test ids and scores them.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from feature_store.fraud import RISK_HORIZON_DAYS, FRAUD_FEATURES, apply_label, apply_transaction, fraud_features
from feature_store.windows import DAY_S, DayWindows, day_of
from models.artifacts import METADATA_FILE, Artifact, ArtifactError, save_artifact
from models.fraud_model import FraudModel, build_mlp, default_arch, safe_std
from models.fraud_sim import (
    LABEL_DELAY_DAYS,
    SCENARIO_AMOUNT,
    SCENARIO_CUSTOMER,
    SCENARIO_GENUINE,
    SCENARIO_TERMINAL,
    SimConfig,
    SimResult,
    generate,
)

GENERATOR = "fraud-detection-handbook"
CARD_PRECISION_K = 100

# Threshold rule (validation window only): the lowest score threshold whose alerts
# reach the target precision, with at least MIN_ALERTS alerts; fall back to a fixed
# alert rate when the target precision is never reached.
BLOCK_PRECISION = 0.90
REVIEW_PRECISION = 0.50
MIN_ALERTS = 20
BLOCK_FALLBACK_RATE = 0.001
REVIEW_FALLBACK_RATE = 0.01

THRESHOLD_RULE = (
    "Chosen on the validation window (never the test window), alerting when score >= threshold. "
    f"block = the lowest threshold at which the validation alerts have precision >= {BLOCK_PRECISION} "
    f"(at least {MIN_ALERTS} alerts), i.e. the highest recall at that precision; "
    f"review = the same with precision >= {REVIEW_PRECISION}, capped at block. "
    f"If a precision target is never reached, the threshold giving an alert rate of "
    f"{BLOCK_FALLBACK_RATE:.1%} (block) / {REVIEW_FALLBACK_RATE:.0%} (review) of validation transactions is used. "
    "Action: block if score >= block, else review if score >= review, else allow."
)


@dataclass(frozen=True)
class TrainConfig:
    sim: SimConfig
    burn_in_days: int
    fit_days: int
    val_days: int
    test_days: int
    gap_days: int = LABEL_DELAY_DAYS
    hidden: tuple[int, ...] = (64, 64)
    epochs: int = 12
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 1e-5
    pos_weight: float = 1.0
    baselines: tuple[str, ...] = ("logistic_regression", "hist_gradient_boosting")

    def windows(self) -> dict[str, tuple[int, int]]:
        """Day ranges [first, end) of each split, in simulated day numbers."""
        fit0 = self.burn_in_days
        fit1 = fit0 + self.fit_days
        val0 = fit1 + self.gap_days
        val1 = val0 + self.val_days
        test0 = val1 + self.gap_days
        test1 = test0 + self.test_days
        if test1 > self.sim.n_days:
            raise ValueError(f"splits need {test1} days but the simulation has {self.sim.n_days}")
        return {"fit": (fit0, fit1), "validation": (val0, val1), "test": (test0, test1)}


def full_config(seed: int = 7) -> TrainConfig:
    # ~1.1 M transactions; the book's 1:2 customer:terminal ratio (fraud rate ~0.9%).
    return TrainConfig(
        sim=SimConfig(n_customers=4_000, n_terminals=8_000, n_days=142, seed=seed),
        burn_in_days=30, fit_days=63, val_days=14, test_days=21,
    )


def quick_config(seed: int = 7) -> TrainConfig:
    # ~90 k transactions, for tests; many terminals keep compromised-terminal fraud (scenario 2) from dominating.
    return TrainConfig(
        sim=SimConfig(n_customers=800, n_terminals=10_000, n_days=60, seed=seed),
        burn_in_days=8, fit_days=24, val_days=7, test_days=7, epochs=5, batch_size=256,
        baselines=("logistic_regression",),
    )


# --------------------------------------------------------------------------- features


def build_features(sim: SimResult, log: Callable[[str], Any] | None = None,
                   label_delay_days: float = LABEL_DELAY_DAYS) -> np.ndarray:
    """Feature rows ``[n, len(FRAUD_FEATURES)]`` float32 for every transaction, in time order.

    Uses the serving code path: per event ``fraud_features`` on the card's and the
    terminal's windows and the terminal's label buckets, then ``apply_transaction``.
    Labels are point in time: a transaction's label (``is_fraud``) is counted into
    its terminal's label buckets only once ``label_ts = ts + label_delay_days``
    has passed, i.e. before every event with ``ts >= label_ts`` (what the label
    app has materialised by then, with no lag). Windows are pruned to their
    horizon as days pass (a pure speed-up: in time order no pruned bucket is
    ever inside a window).
    """
    n = len(sim)
    X = np.empty((n, len(FRAUD_FEATURES)), dtype=np.float32)
    cards: dict[int, DayWindows] = {}
    terms: dict[int, DayWindows] = {}
    risks: dict[int, DayWindows] = {}
    ts_l = sim.ts_s.astype(np.float64).tolist()
    lab_ts = sim.ts_s.astype(np.float64) + float(label_delay_days) * DAY_S
    lab_order = np.argsort(lab_ts, kind="stable")
    lab_ts_l = lab_ts[lab_order].tolist()
    lab_row_l = lab_order.tolist()
    fraud_l = sim.is_fraud.tolist()
    j = 0
    am_l = sim.amount.tolist()
    cu_l = sim.customer_id.tolist()
    te_l = sim.terminal_id.tolist()
    last_prune = None
    t0 = time.perf_counter()
    for i in range(n):
        ts = ts_l[i]
        d = day_of(ts)
        if last_prune is None or d - last_prune >= 7:
            for w in cards.values():
                w.prune(d)
            for w in terms.values():
                w.prune(d)
            for w in risks.values():
                w.prune(d, RISK_HORIZON_DAYS)
            last_prune = d
        while j < n and lab_ts_l[j] <= ts:
            r = lab_row_l[j]
            rw = risks.get(te_l[r])
            if rw is None:
                rw = risks[te_l[r]] = DayWindows()
            apply_label(ts_l[r], fraud_l[r], rw)
            j += 1
        c = cards.get(cu_l[i])
        if c is None:
            c = cards[cu_l[i]] = DayWindows()
        t = terms.get(te_l[i])
        if t is None:
            t = terms[te_l[i]] = DayWindows()
        X[i] = fraud_features(ts, am_l[i], c, t, risks.get(te_l[i]))
        apply_transaction(ts, am_l[i], c, t)
    if log:
        log(f"features: {n:,} rows in {time.perf_counter() - t0:.1f}s")
    return X


# --------------------------------------------------------------------------- metrics (numpy only)


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ss = s[order]
    # average rank (1-based) of each tie group
    starts = np.r_[0, np.flatnonzero(np.diff(ss)) + 1]
    ends = np.r_[starts[1:], ss.size]
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _pr_points(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds desc, true positives, alerts) at each distinct score, alerting on score >= t."""
    y = np.asarray(y).astype(np.int64)
    s = np.asarray(s, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    ss, yy = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(ss)), ss.size - 1]  # last index of each tie group
    tps = np.cumsum(yy)[last]
    return ss[last], tps, last + 1


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Step-wise average precision, as scikit-learn's ``average_precision_score``."""
    n_pos = int(np.asarray(y).astype(bool).sum())
    if n_pos == 0:
        return float("nan")
    _, tps, alerts = _pr_points(y, s)
    precision = tps / alerts
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def card_precision_at_k(day: np.ndarray, card: np.ndarray, y: np.ndarray, s: np.ndarray, k: int = CARD_PRECISION_K) -> float:
    """Mean over days of: rank the day's cards by their max score, share of the top k with a fraud that day."""
    day = np.asarray(day, dtype=np.int64)
    card = np.asarray(card, dtype=np.int64)
    key = (day - day.min()) * (int(card.max()) + 1) + card
    uniq, inv = np.unique(key, return_inverse=True)
    best = np.full(uniq.size, -np.inf)
    np.maximum.at(best, inv, np.asarray(s, dtype=np.float64))
    fraud = np.zeros(uniq.size, dtype=np.int64)
    np.maximum.at(fraud, inv, np.asarray(y, dtype=np.int64))
    g_day = uniq // (int(card.max()) + 1)
    g_card = uniq % (int(card.max()) + 1)
    out = []
    for d in np.unique(g_day):
        m = np.flatnonzero(g_day == d)
        top = m[np.lexsort((g_card[m], -best[m]))[:k]]  # by score desc, ties by card id
        out.append(fraud[top].sum() / k)
    return float(np.mean(out))


def operating_point(y: np.ndarray, s: np.ndarray, threshold: float) -> dict[str, float]:
    y = np.asarray(y).astype(bool)
    alert = np.asarray(s, dtype=np.float64) >= threshold
    tp = int((alert & y).sum())
    return {
        "threshold": float(threshold),
        "alerts": int(alert.sum()),
        "alert_rate": float(alert.mean()) if alert.size else 0.0,
        "precision": float(tp / alert.sum()) if alert.sum() else None,
        "recall": float(tp / y.sum()) if y.sum() else None,
    }


def test_metrics(sim: SimResult, rows: np.ndarray, scores: np.ndarray, thresholds: dict[str, float] | None = None) -> dict[str, Any]:
    y = sim.is_fraud[rows]
    m: dict[str, Any] = {
        "roc_auc": roc_auc(y, scores),
        "average_precision": average_precision(y, scores),
        "card_precision_at_100": card_precision_at_k(sim.day[rows], sim.customer_id[rows], y, scores),
        "n": int(rows.size),
        "n_fraud": int(y.sum()),
    }
    # Which fraud each model can see: AUC of each scenario's frauds against the genuine rows.
    sc = sim.scenario[rows]
    genuine = sc == SCENARIO_GENUINE
    by = {}
    for code, label in ((SCENARIO_AMOUNT, "amount"), (SCENARIO_TERMINAL, "terminal"), (SCENARIO_CUSTOMER, "customer")):
        sel = genuine | (sc == code)
        by[f"{code}_{label}"] = {"n": int((sc == code).sum()), "roc_auc": roc_auc(sc[sel] == code, np.asarray(scores)[sel]) if (sc == code).any() else None}
    m["by_scenario"] = by
    if thresholds:
        for name in ("review", "block"):
            m[name] = operating_point(y, scores, thresholds[name])
    return m


def pick_thresholds(y: np.ndarray, s: np.ndarray) -> tuple[dict[str, float], dict[str, str]]:
    """Thresholds per THRESHOLD_RULE from validation labels/scores; also how each was found."""
    thr, tps, alerts = _pr_points(y, s)
    precision = tps / alerts
    s64 = np.asarray(s, dtype=np.float64)

    def lowest(target: float, fallback_rate: float) -> tuple[float, str]:
        ok = np.flatnonzero((precision >= target) & (alerts >= MIN_ALERTS))
        if ok.size:
            return float(thr[ok[-1]]), f"precision>={target}"
        q = float(np.quantile(s64, 1.0 - fallback_rate))
        return q, f"alert_rate={fallback_rate}"

    block, how_b = lowest(BLOCK_PRECISION, BLOCK_FALLBACK_RATE)
    review, how_r = lowest(REVIEW_PRECISION, REVIEW_FALLBACK_RATE)
    review = min(review, block)
    return {"review": review, "block": block}, {"review": how_r, "block": how_b}


# --------------------------------------------------------------------------- training


def _rows_in(day: np.ndarray, span: tuple[int, int]) -> np.ndarray:
    return np.flatnonzero((day >= span[0]) & (day < span[1]))


def _fit_mlp(cfg: TrainConfig, Xf: np.ndarray, yf: np.ndarray, Xv: np.ndarray, yv: np.ndarray, mean: np.ndarray, std: np.ndarray, seed: int, log) -> tuple[dict[str, torch.Tensor], dict[str, Any], list[dict[str, float]]]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    arch = default_arch(len(FRAUD_FEATURES), cfg.hidden)
    net = build_mlp(arch)
    xf = torch.from_numpy((Xf - mean) / std)
    tf = torch.from_numpy(yf.astype(np.float32))
    xv = torch.from_numpy((Xv - mean) / std)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(cfg.pos_weight))
    best_ap, best_state, history = -1.0, None, []
    n = xf.shape[0]
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        net.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for lo in range(0, n, cfg.batch_size):
            idx = perm[lo : lo + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xf[idx]).squeeze(-1), tf[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
        net.eval()
        with torch.inference_mode():
            sv = torch.sigmoid(net(xv).squeeze(-1)).numpy()
        ap = average_precision(yv, sv)
        history.append({"epoch": epoch + 1, "loss": total / n, "val_average_precision": ap, "val_roc_auc": roc_auc(yv, sv)})
        log(f"epoch {epoch + 1:2d}: loss {total / n:.4f}  val AP {ap:.4f}  val AUC {history[-1]['val_roc_auc']:.4f}  ({time.perf_counter() - t0:.1f}s)")
        if ap > best_ap:
            best_ap = ap
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    assert best_state is not None
    return best_state, arch, history


def _baselines(cfg: TrainConfig, sim: SimResult, X: np.ndarray, fit: np.ndarray, test: np.ndarray, seed: int, log) -> dict[str, dict[str, Any]]:
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        log("scikit-learn is not installed: skipping the baselines (pip install -e '.[dev]')")
        return {}
    models = {
        "logistic_regression": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "hist_gradient_boosting": lambda: HistGradientBoostingClassifier(max_iter=200, random_state=seed, early_stopping=False),
    }
    out = {}
    for name in cfg.baselines:
        make = models[name]
        t0 = time.perf_counter()
        clf = make().fit(X[fit], sim.is_fraud[fit])
        s = clf.predict_proba(X[test])[:, 1]
        out[name] = test_metrics(sim, test, s)
        out[name]["params"] = repr(clf)
        log(f"baseline {name}: {time.perf_counter() - t0:.1f}s")
    return out


def _day_span(cfg: SimConfig, span: tuple[int, int]) -> dict[str, Any]:
    d0 = date.fromisoformat(cfg.start_date)
    return {
        "days": [span[0], span[1]],
        "first": (d0 + timedelta(days=span[0])).isoformat(),
        "last": (d0 + timedelta(days=span[1] - 1)).isoformat(),
    }


def _table(rows: dict[str, dict[str, Any]]) -> str:
    head = f"{'model':<24} {'ROC AUC':>8} {'AP':>8} {'CP@100':>8}"
    head += "   AUC by scenario (1 amount / 2 terminal / 3 customer)"
    lines = [head, "-" * len(head)]
    for name, m in rows.items():
        by = " / ".join("-" if v["roc_auc"] is None else f"{v['roc_auc']:.3f}" for v in m["by_scenario"].values())
        lines.append(f"{name:<24} {m['roc_auc']:8.4f} {m['average_precision']:8.4f} {m['card_precision_at_100']:8.4f}   {by}")
    return "\n".join(lines)


def train(model_dir: Path | str, *, quick: bool = False, seed: int = 7, log: Callable[[str], Any] = print, config: TrainConfig | None = None) -> Artifact:
    """Generate data, train, pick thresholds, evaluate and save a new ``fraud-mlp`` version."""
    t_start = time.perf_counter()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    cfg = config or (quick_config(seed) if quick else full_config(seed))
    spans = cfg.windows()

    t0 = time.perf_counter()
    sim = generate(cfg.sim)
    fingerprint = sim.fingerprint()
    log(f"data: {len(sim):,} transactions over {cfg.sim.n_days} days, fraud rate {sim.is_fraud.mean():.4%} "
        f"({time.perf_counter() - t0:.1f}s), fingerprint {fingerprint[:16]}")
    X = build_features(sim, log)
    day = sim.day
    fit, val, test = (_rows_in(day, spans[k]) for k in ("fit", "validation", "test"))
    y = sim.is_fraud
    log(f"split: fit {fit.size:,} ({y[fit].sum():,} fraud), validation {val.size:,} ({y[val].sum():,}), "
        f"test {test.size:,} ({y[test].sum():,})")

    mean = X[fit].astype(np.float64).mean(axis=0).astype(np.float32)
    std = safe_std(X[fit].astype(np.float64).std(axis=0))
    state, arch, history = _fit_mlp(cfg, X[fit], y[fit], X[val], y[val], mean, std, seed, log)

    base_meta: dict[str, Any] = {
        "kind": "fraud",
        "model_name": FraudModel.NAME,
        "features": list(FRAUD_FEATURES),
        "normalisation": {"mean": mean.tolist(), "std": std.tolist()},
        "arch": arch,
        "thresholds": {"review": 0.5, "block": 0.9},  # replaced below
    }
    # Score validation and test through the serving wrapper, as evaluate() will.
    scorer = FraudModel(state, base_meta, device="cpu")
    val_scores = scorer.predict(X[val])
    thresholds, how = pick_thresholds(y[val], val_scores)
    scores = scorer.predict(X[test])
    metrics = test_metrics(sim, test, scores, thresholds)
    validation = {name: operating_point(y[val], val_scores, thresholds[name]) for name in ("review", "block")}
    scorer.close()

    baselines = _baselines(cfg, sim, X, fit, test, seed, log)

    metadata = dict(
        base_meta,
        thresholds=thresholds,
        threshold_rule=THRESHOLD_RULE,
        threshold_found_by=how,
        validation_operating_points=validation,
        training_data={
            "generator": GENERATOR,
            "generator_module": "models.fraud_sim",
            "config": cfg.sim.to_dict(),
            "fingerprint": fingerprint,
            "n_transactions": len(sim),
            "fraud_rate": float(y.mean()),
            "label_delay_days": LABEL_DELAY_DAYS,
            "burn_in_days": [0, cfg.burn_in_days],
            "train_days": _day_span(cfg.sim, spans["fit"]),
            "validation_days": _day_span(cfg.sim, spans["validation"]),
            "test_days": _day_span(cfg.sim, spans["test"]),
            "n_train": int(fit.size),
            "n_validation": int(val.size),
        },
        training={
            "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr, "weight_decay": cfg.weight_decay,
            "loss": "BCEWithLogits", "pos_weight": cfg.pos_weight, "optimizer": "Adam", "seed": seed,
            "selection": "epoch with the best validation average precision", "history": history, "quick": quick,
        },
        test_set={"ids": sim.event_ids(test), "n": int(test.size)},
        metrics=metrics,
        baselines=baselines,
        environment={"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__},
        trained_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    artifact = save_artifact(Path(model_dir), FraudModel.NAME, state, metadata)
    log("test window " f"{metadata['training_data']['test_days']['first']}..{metadata['training_data']['test_days']['last']}:\n"
        + _table({"torch mlp": metrics, **baselines}))
    log(f"thresholds: review {thresholds['review']:.4f} ({how['review']}; test precision "
        f"{metrics['review']['precision']:.3f} recall {metrics['review']['recall']:.3f}), block {thresholds['block']:.4f} "
        f"({how['block']}; test precision {metrics['block']['precision']:.3f} recall {metrics['block']['recall']:.3f})")
    log(f"saved {artifact.path} in {time.perf_counter() - t_start:.1f}s")
    return artifact


# --------------------------------------------------------------------------- re-evaluation


def _resolve(path: Path | str, version: str | None) -> tuple[Path, str | None]:
    p = Path(path)
    if (p / METADATA_FILE).is_file():  # an artifact folder <model_dir>/fraud-mlp/<version>
        return p.parent.parent, p.name
    return p, version


def evaluate(path: Path | str, version: str | None = None, device: str = "cpu", log: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Recompute the stored test metrics from the artifact's metadata alone.

    ``path`` is an artifact folder or a model dir (then ``version``, default latest).
    On the machine and library build that trained the model (CPU by default) the
    result equals ``metadata["metrics"]`` exactly. Elsewhere (another CPU type,
    torch build, or CUDA) float32 GEMMs round differently: measured differences
    are ~1e-8 in AUC/AP, none in card precision@100 or the operating points.
    """
    model_dir, version = _resolve(path, version)
    model = FraudModel.load(model_dir, version, device=device)
    try:
        meta = model.metadata
        td = meta["training_data"]
        if td.get("generator") != GENERATOR:
            raise ArtifactError(f"unknown training data generator {td.get('generator')!r}")
        sim = generate(SimConfig.from_dict(td["config"]))
        if sim.fingerprint() != td["fingerprint"]:
            raise ArtifactError("regenerated data does not match the recorded fingerprint (numpy or generator changed?)")
        ids = meta["test_set"]["ids"]
        rows = np.fromiter((int(i.removeprefix("tx-")) for i in ids), dtype=np.int64, count=len(ids))
        if rows.size and (rows.min() < 0 or rows.max() >= len(sim) or not np.array_equal(sim.tx_id[rows], rows)):
            raise ArtifactError("test ids do not name transactions of the regenerated data")
        X = build_features(sim, log)
        return test_metrics(sim, rows, model.predict(X[rows]), model.thresholds)
    finally:
        model.close()


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser(description="train the fraud MLP")
    ap.add_argument("--model-dir", default="artifacts")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--evaluate", metavar="PATH", help="recompute the metrics of an artifact instead")
    a = ap.parse_args()
    if a.evaluate:
        print(json.dumps(evaluate(a.evaluate, log=print), indent=2))
    else:
        train(a.model_dir, quick=a.quick, seed=a.seed)

"""Scores to actions, and the decision payload of DESIGN.md."""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import numpy as np

from streams.events import format_ts

#: Actions from least to most severe; each but the first has a threshold.
ACTIONS: dict[str, tuple[str, ...]] = {
    "fraud": ("allow", "review", "block"),
    "spam": ("deliver", "quarantine", "reject"),
}
#: The first reason of a decision made with default features because Redis was unavailable.
FEATURE_STORE_UNAVAILABLE = "feature_store_unavailable"

#: Actions that also go to the pipeline's action topic.
ALERT_ACTIONS: dict[str, frozenset[str]] = {
    "fraud": frozenset({"review", "block"}),
    "spam": frozenset({"quarantine", "reject"}),
}


def action_for(pipeline: str, score: float, thresholds: Mapping[str, float]) -> str:
    """The most severe action whose threshold the score reaches (``>=``)."""
    ladder = ACTIONS[pipeline]
    chosen = ladder[0]
    for action in ladder[1:]:
        t = thresholds[action]
        if score >= t:
            chosen = action
    return chosen


def check_thresholds(pipeline: str, thresholds: Mapping[str, float]) -> None:
    """Thresholds must exist for every non-default action and rise with severity."""
    ladder = ACTIONS[pipeline]
    missing = [a for a in ladder[1:] if a not in thresholds]
    if missing:
        raise ValueError(f"{pipeline} model lacks thresholds for {missing}")
    values = [float(thresholds[a]) for a in ladder[1:]]
    if values != sorted(values) or not all(0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"{pipeline} thresholds must be in [0,1] and rise with severity: {dict(thresholds)}")


def reasons_for(rows: np.ndarray, names: Sequence[str], mean: np.ndarray, std: np.ndarray, top: int = 3
                ) -> list[list[str]]:
    """Per row, the features furthest from the training population, as ``name:+z.zsd``.

    A cheap, model-agnostic explanation: it says which inputs were unusual (|z| >= 2),
    not how much each moved the score. Vectorised over the whole batch.
    """
    z = (np.atleast_2d(rows) - mean) / np.where(std > 0, std, 1.0)
    k = min(top, z.shape[1])
    idx = np.argsort(-np.abs(z), axis=1)[:, :k]
    picked = np.take_along_axis(z, idx, axis=1)
    out: list[list[str]] = []
    for r in range(z.shape[0]):
        out.append([f"{names[i]}:{v:+.1f}sd" for i, v in zip(idx[r], picked[r]) if abs(v) >= 2.0])
    return out


def build_decision(
    *,
    event_id: str,
    pipeline: str,
    score: float,
    action: str,
    model_name: str,
    model_version: str,
    reasons: list[str],
    topic: str,
    partition: int,
    offset: int,
    event_ts_s: float,
    input_ts_ms: int | None,
    features: Mapping[str, float] | None = None,
    defaulted: list[str] | None = None,
    now_s: float | None = None,
) -> dict[str, Any]:
    """``latency_ms`` runs from the input record's Kafka timestamp to now."""
    now_s = time.time() if now_s is None else now_s
    latency = round(now_s * 1000.0 - input_ts_ms, 3) if input_ts_ms else None
    d: dict[str, Any] = {
        "event_id": event_id,
        "pipeline": pipeline,
        "score": round(float(score), 6),
        "action": action,
        "model": {"name": model_name, "version": model_version},
        "reasons": reasons,
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "event_ts": format_ts(event_ts_s),
        "decided_ts": format_ts(now_s),
        "latency_ms": latency,
    }
    if features is not None:
        d["features"] = dict(features)
        d["defaulted"] = list(defaulted or [])
    return d

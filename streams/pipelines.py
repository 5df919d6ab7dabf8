"""What the worker needs of a pipeline: its topics and a scorer for its batches.

The scorers live in ``fraud_scorer`` and ``spam_scorer``; each reads the batch's
feature windows from Redis in one round trip, computes each event's features
before counting that event in (so features only ever reflect earlier events,
including earlier events of the same batch), runs the model once on the whole
batch, and writes the windows back in one round trip, last, so a batch that
fails anywhere before that changes no feature state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from feature_store.store import FeatureStore
from streams.decisions import FEATURE_STORE_UNAVAILABLE, check_thresholds


@dataclass(frozen=True, slots=True)
class Topics:
    input: str
    decisions: str
    actions: str
    dlq: str

    def all(self) -> tuple[str, ...]:
        return (self.input, self.decisions, self.actions, self.dlq)


def topics_for(pipeline: str, prefix: str = "") -> Topics:
    """DESIGN.md's topic names for a pipeline, with an optional prefix."""
    names = {
        "fraud": ("transactions", "fraud.decisions", "fraud.alerts", "transactions.dlq"),
        "spam": ("emails", "spam.decisions", "spam.quarantine", "emails.dlq"),
    }[pipeline]
    return Topics(*(prefix + n for n in names))


@dataclass(slots=True)
class Scored:
    scores: np.ndarray
    reasons: list[list[str]]
    #: Per event, the feature values the model saw (only when asked for).
    features: list[dict[str, float]] | None
    defaulted: list[list[str]]


class Scorer(Protocol):
    pipeline: str
    model_name: str
    model_version: str
    thresholds: dict[str, float]

    def decode(self, value: bytes | None) -> Any: ...
    def score(self, events: Sequence[Any]) -> Scored: ...
    def close(self) -> None: ...


class ModelScorer:
    """What both scorers share: a loaded model checked for thresholds, and a store."""

    pipeline: str

    def __init__(self, model: Any, store: FeatureStore, emit_features: bool = False) -> None:
        check_thresholds(self.pipeline, model.thresholds)
        self.model = model
        self.store = store
        self.emit_features = emit_features
        self.model_name: str = model.name
        self.model_version: str = model.version
        self.thresholds: dict[str, float] = dict(model.thresholds)

    def close(self) -> None:
        self.model.close()
        self.store.close()

    @staticmethod
    def say_why(reasons: list[list[str]], unavailable: bool) -> list[list[str]]:
        """Decisions made without the feature store say so first in their reasons."""
        return [[FEATURE_STORE_UNAVAILABLE, *r] for r in reasons] if unavailable else reasons


def features_by_name(rows: np.ndarray, names: Sequence[str]) -> list[dict[str, float]]:
    return [dict(zip(names, map(float, row))) for row in rows]


def model_columns(model_features: Sequence[str], computed: Sequence[str], pipeline: str
                  ) -> tuple[tuple[str, ...], np.ndarray | None]:
    """The model's feature names (from its artifact metadata) and their columns in the
    rows this code computes (``None``: the same order). A feature this code cannot
    compute fails here, clearly, instead of scoring with a wrong column."""
    names = tuple(model_features) or tuple(computed)
    missing = [f for f in names if f not in computed]
    if missing:
        raise ValueError(f"{pipeline} model needs features this code does not compute: {missing}; "
                         f"computed: {list(computed)}")
    if names == tuple(computed):
        return names, None
    return names, np.array([list(computed).index(f) for f in names], dtype=np.int64)


def build_scorer(pipeline: str, store: FeatureStore, model_dir: str, device: str, emit_features: bool,
                 version: str | None = None) -> Scorer:
    """Load the pipeline's model (latest version unless named) and wrap it."""
    loaders: dict[str, Callable[[], Scorer]] = {
        "fraud": lambda: _fraud(model_dir, version, device, store, emit_features),
        "spam": lambda: _spam(model_dir, version, device, store, emit_features),
    }
    if pipeline not in loaders:
        raise ValueError(f"unknown pipeline {pipeline!r}; expected one of {sorted(loaders)}")
    return loaders[pipeline]()


def _fraud(model_dir: str, version: str | None, device: str, store: FeatureStore, emit: bool) -> Scorer:
    from models.fraud_model import FraudModel
    from streams.fraud_scorer import FraudScorer

    return FraudScorer(FraudModel.load(model_dir, version=version, device=device), store, emit)


def _spam(model_dir: str, version: str | None, device: str, store: FeatureStore, emit: bool) -> Scorer:
    from models.spam_model import SpamModel
    from streams.spam_scorer import SpamScorer

    return SpamScorer(SpamModel.load(model_dir, version=version, device=device), store, emit)

"""Fraud scoring: card and terminal windows, terminal label risk, the MLP, once per batch."""

from __future__ import annotations

from typing import Any, Sequence

from feature_store.batch import fraud_batch
from feature_store.fraud import FRAUD_FEATURES
from feature_store.store import FeatureStore
from streams.decisions import reasons_for
from streams.events import Transaction, decode_transaction
from streams.pipelines import ModelScorer, Scored, features_by_name, model_columns


class FraudScorer(ModelScorer):
    pipeline = "fraud"

    def __init__(self, model: Any, store: FeatureStore, emit_features: bool = False) -> None:
        super().__init__(model, store, emit_features)
        names = tuple(getattr(model, "features", None) or model.metadata.get("features") or ())
        #: The model's features (from its artifact metadata) and their columns in the computed rows.
        self.feature_names, self._cols = model_columns(names, FRAUD_FEATURES, "fraud")

    def decode(self, value: bytes | None) -> Transaction:
        return decode_transaction(value)

    def score(self, events: Sequence[Transaction]) -> Scored:
        rows, defaulted, snap = fraud_batch(self.store, events)
        x = rows if self._cols is None else rows[:, self._cols]
        scores = self.model.predict(x)
        self.store.write(snap)
        names = set(self.feature_names)
        defaulted = [[f for f in d if f in names] for d in defaulted]
        reasons = self.say_why(reasons_for(x, self.feature_names, self.model.mean, self.model.std), snap.unavailable)
        feats = features_by_name(x, self.feature_names) if self.emit_features else None
        return Scored(scores, reasons, feats, defaulted)

"""Spam scoring: sender and domain windows, hashed text, the classifier, once per batch."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from feature_store.batch import spam_batch
from feature_store.spam import SPAM_DENSE_FEATURES
from feature_store.store import FeatureStore
from streams.decisions import reasons_for
from streams.events import Email, decode_email
from streams.pipelines import ModelScorer, Scored, features_by_name, model_columns


class SpamScorer(ModelScorer):
    pipeline = "spam"

    def __init__(self, model: Any, store: FeatureStore, emit_features: bool = False) -> None:
        super().__init__(model, store, emit_features)
        #: The model's dense features (from its metadata) and their columns in the computed rows.
        names = tuple(getattr(model, "dense_features", None) or model.metadata.get("dense_features") or ())
        self.feature_names, self._cols = model_columns(names, SPAM_DENSE_FEATURES, "spam")
        norm = model.metadata["normalisation"]
        self._mean = np.asarray(norm["mean"], dtype=np.float32)
        self._std = np.asarray(norm["std"], dtype=np.float32)

    def decode(self, value: bytes | None) -> Email:
        return decode_email(value)

    def score(self, events: Sequence[Email]) -> Scored:
        rows, defaulted, snap = spam_batch(self.store, events)
        dense = rows if self._cols is None else rows[:, self._cols]
        # The batched hasher when the model has one (SpamModel does: same ids, a fraction
        # of the cost); stand-in models may only tokenise one email at a time.
        tokens_batch = getattr(self.model, "tokens_batch", None)
        if tokens_batch is not None:
            tokens = tokens_batch(events)
        else:
            tokens = [self.model.tokens(e) for e in events]
        scores = self.model.predict(tokens, dense)
        self.store.write(snap)
        names = set(self.feature_names)
        defaulted = [[f for f in d if f in names] for d in defaulted]
        reasons = self.say_why(reasons_for(dense, self.feature_names, self._mean, self._std), snap.unavailable)
        feats = features_by_name(dense, self.feature_names) if self.emit_features else None
        return Scored(scores, reasons, feats, defaulted)

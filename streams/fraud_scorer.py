"""Fraud scoring: card and terminal windows, the MLP, once per batch."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from feature_store.fraud import FRAUD_FEATURES, apply_transaction, fraud_features
from feature_store.views import CARD_WINDOWS, TERMINAL_WINDOWS
from streams.decisions import reasons_for
from streams.events import Transaction, decode_transaction
from streams.pipelines import ModelScorer, Scored, features_by_name


class FraudScorer(ModelScorer):
    pipeline = "fraud"

    def decode(self, value: bytes | None) -> Transaction:
        return decode_transaction(value)

    def score(self, events: Sequence[Transaction]) -> Scored:
        wanted = [(CARD_WINDOWS, e.card_id) for e in events] + [(TERMINAL_WINDOWS, e.terminal_id) for e in events]
        snap = self.store.read(wanted)
        rows = np.empty((len(events), len(FRAUD_FEATURES)), dtype=np.float32)
        for i, e in enumerate(events):
            card = snap.get(CARD_WINDOWS, e.card_id)
            term = snap.get(TERMINAL_WINDOWS, e.terminal_id)
            rows[i] = fraud_features(e.ts_s, e.amount, card, term)
            apply_transaction(e.ts_s, e.amount, card, term)
        scores = self.model.predict(rows)
        self.store.write(snap)
        reasons = reasons_for(rows, FRAUD_FEATURES, self.model.mean, self.model.std)
        feats = features_by_name(rows, FRAUD_FEATURES) if self.emit_features else None
        return Scored(scores, reasons, feats, [[] for _ in events])

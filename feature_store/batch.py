"""One batch's features, shared by the live scorers and the backfill.

``fraud_batch`` / ``spam_batch`` read the batch's windows in one round trip
(with the applied-event markers, so a redelivered event is taken out of its own
windows), compute each event's features before counting it in, and return the
rows, the per-event defaulted feature names and the snapshot; the caller writes
the snapshot back (``FeatureStore.write``, one round trip) after it has used the
rows, so a batch that fails before that changes no feature state. An event that
appears twice in one batch gets its first occurrence's features and counts once.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from feature_store.fraud import FRAUD_FEATURES, fraud_features
from feature_store.spam import SPAM_DENSE_FEATURES, sender_keys, spam_dense_features
from feature_store.store import FeatureStore, WindowSnapshot
from feature_store.views import (
    CARD_WINDOWS,
    DEFAULTED,
    DOMAIN_REPORTS,
    DOMAIN_WINDOWS,
    SENDER_REPORTS,
    SENDER_WINDOWS,
    TERMINAL_RISK,
    TERMINAL_WINDOWS,
    FeatureView,
)
from feature_store.windows import day_of
from streams.events import Email, Transaction


def _defaulted(snap: WindowSnapshot, views: Sequence[tuple[FeatureView, str]], ts_s: float) -> list[str]:
    out: list[str] = []
    for view, entity in views:
        if snap.status(view, entity, ts_s) == DEFAULTED:
            out += view.field_names
    return out


def fraud_batch(store: FeatureStore, events: Sequence[Transaction]
                ) -> tuple[np.ndarray, list[list[str]], WindowSnapshot]:
    """Rows ``[n, len(FRAUD_FEATURES)]``, defaulted names per event, and the snapshot to write."""
    days = [day_of(e.ts_s) for e in events]
    wanted = ([(CARD_WINDOWS, e.card_id) for e in events] + [(TERMINAL_WINDOWS, e.terminal_id) for e in events]
              + [(TERMINAL_RISK, e.terminal_id) for e in events])
    marks = ([(CARD_WINDOWS, e.card_id, e.event_id, d) for e, d in zip(events, days)]
             + [(TERMINAL_WINDOWS, e.terminal_id, e.event_id, d) for e, d in zip(events, days)])
    snap = store.read(wanted, marks)
    rows = np.empty((len(events), len(FRAUD_FEATURES)), dtype=np.float32)
    defaulted: list[list[str]] = []
    first: dict[str, int] = {}
    for i, (e, d) in enumerate(zip(events, days)):
        j = first.get(e.event_id)
        if j is not None:
            rows[i] = rows[j]
            defaulted.append(list(defaulted[j]))
            continue
        first[e.event_id] = i
        rows[i] = fraud_features(e.ts_s, e.amount, snap.get(CARD_WINDOWS, e.card_id),
                                 snap.get(TERMINAL_WINDOWS, e.terminal_id),
                                 snap.get_present(TERMINAL_RISK, e.terminal_id))
        defaulted.append(_defaulted(snap, ((CARD_WINDOWS, e.card_id), (TERMINAL_WINDOWS, e.terminal_id),
                                           (TERMINAL_RISK, e.terminal_id)), e.ts_s))
        snap.apply(CARD_WINDOWS, e.card_id, e.event_id, d, e.amount)
        snap.apply(TERMINAL_WINDOWS, e.terminal_id, e.event_id, d, e.amount)
    return rows, defaulted, snap


def spam_batch(store: FeatureStore, events: Sequence[Email]) -> tuple[np.ndarray, list[list[str]], WindowSnapshot]:
    """Dense rows ``[n, len(SPAM_DENSE_FEATURES)]``, defaulted names per event, and the snapshot."""
    keys = [sender_keys(e) for e in events]
    days = [day_of(e.ts_s) for e in events]
    wanted = ([(SENDER_WINDOWS, s) for s, _ in keys] + [(DOMAIN_WINDOWS, d) for _, d in keys]
              + [(SENDER_REPORTS, s) for s, _ in keys] + [(DOMAIN_REPORTS, d) for _, d in keys])
    marks = ([(SENDER_WINDOWS, s, e.event_id, day) for e, (s, _), day in zip(events, keys, days)]
             + [(DOMAIN_WINDOWS, d, e.event_id, day) for e, (_, d), day in zip(events, keys, days)])
    snap = store.read(wanted, marks)
    dense = np.empty((len(events), len(SPAM_DENSE_FEATURES)), dtype=np.float32)
    defaulted: list[list[str]] = []
    first: dict[str, int] = {}
    for i, (e, (s, d), day) in enumerate(zip(events, keys, days)):
        j = first.get(e.event_id)
        if j is not None:
            dense[i] = dense[j]
            defaulted.append(list(defaulted[j]))
            continue
        first[e.event_id] = i
        dense[i] = spam_dense_features(e, snap.get(SENDER_WINDOWS, s), snap.get(DOMAIN_WINDOWS, d),
                                       snap.get_present(SENDER_REPORTS, s), snap.get_present(DOMAIN_REPORTS, d))
        defaulted.append(_defaulted(snap, ((SENDER_WINDOWS, s), (DOMAIN_WINDOWS, d), (SENDER_REPORTS, s),
                                           (DOMAIN_REPORTS, d)), e.ts_s))
        snap.apply(SENDER_WINDOWS, s, e.event_id, day)
        snap.apply(DOMAIN_WINDOWS, d, e.event_id, day)
    return dense, defaulted, snap

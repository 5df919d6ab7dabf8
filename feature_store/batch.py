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

from typing import Any, Callable, Sequence

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


Views = tuple[tuple[FeatureView, str], ...]
Counted = tuple[tuple[FeatureView, str, float], ...]


def _batch(store: FeatureStore, events: Sequence[Any], width: int, views_of: Callable[[Any], Views],
           counted: Callable[[Any, Views], Counted], compute: Callable[[Any, WindowSnapshot, Views], list[float]]
           ) -> tuple[np.ndarray, list[list[str]], WindowSnapshot]:
    """The batch path both pipelines share. ``views_of(e)``: the (view, entity) pairs an
    event's features read; ``counted(e, views)``: the stream views it is counted into,
    with its amount; ``compute(e, snap, views)``: its feature row."""
    days = [day_of(e.ts_s) for e in events]
    views = [views_of(e) for e in events]
    counts = [counted(e, v) for e, v in zip(events, views)]
    snap = store.read([ve for v in views for ve in v],
                      [(view, entity, e.event_id, d) for e, c, d in zip(events, counts, days) for view, entity, _ in c])
    rows = np.empty((len(events), width), dtype=np.float32)
    defaulted: list[list[str]] = []
    first: dict[str, int] = {}
    for i, (e, d) in enumerate(zip(events, days)):
        j = first.get(e.event_id)
        if j is not None:
            rows[i] = rows[j]
            defaulted.append(list(defaulted[j]))
            continue
        first[e.event_id] = i
        rows[i] = compute(e, snap, views[i])
        defaulted.append(_defaulted(snap, views[i], e.ts_s))
        for view, entity, amount in counts[i]:
            snap.apply(view, entity, e.event_id, d, amount)
    return rows, defaulted, snap


def _fraud_views(e: Transaction) -> Views:
    return ((CARD_WINDOWS, e.card_id), (TERMINAL_WINDOWS, e.terminal_id), (TERMINAL_RISK, e.terminal_id))


def _fraud_counted(e: Transaction, _views: Views) -> Counted:
    return ((CARD_WINDOWS, e.card_id, e.amount), (TERMINAL_WINDOWS, e.terminal_id, e.amount))


def _fraud_row(e: Transaction, snap: WindowSnapshot, _views: Views) -> list[float]:
    return fraud_features(e.ts_s, e.amount, snap.get(CARD_WINDOWS, e.card_id), snap.get(TERMINAL_WINDOWS, e.terminal_id),
                          snap.get_present(TERMINAL_RISK, e.terminal_id))


def fraud_batch(store: FeatureStore, events: Sequence[Transaction]
                ) -> tuple[np.ndarray, list[list[str]], WindowSnapshot]:
    """Rows ``[n, len(FRAUD_FEATURES)]``, defaulted names per event, and the snapshot to write."""
    return _batch(store, events, len(FRAUD_FEATURES), _fraud_views, _fraud_counted, _fraud_row)


def _spam_views(e: Email) -> Views:
    s, d = sender_keys(e)
    return ((SENDER_WINDOWS, s), (DOMAIN_WINDOWS, d), (SENDER_REPORTS, s), (DOMAIN_REPORTS, d))


def _spam_counted(_e: Email, views: Views) -> Counted:
    return ((SENDER_WINDOWS, views[0][1], 0.0), (DOMAIN_WINDOWS, views[1][1], 0.0))


def _spam_row(e: Email, snap: WindowSnapshot, views: Views) -> list[float]:
    s, d = views[0][1], views[1][1]
    return spam_dense_features(e, snap.get(SENDER_WINDOWS, s), snap.get(DOMAIN_WINDOWS, d),
                               snap.get_present(SENDER_REPORTS, s), snap.get_present(DOMAIN_REPORTS, d))


def spam_batch(store: FeatureStore, events: Sequence[Email]) -> tuple[np.ndarray, list[list[str]], WindowSnapshot]:
    """Dense rows ``[n, len(SPAM_DENSE_FEATURES)]``, defaulted names per event, and the snapshot."""
    return _batch(store, events, len(SPAM_DENSE_FEATURES), _spam_views, _spam_counted, _spam_row)

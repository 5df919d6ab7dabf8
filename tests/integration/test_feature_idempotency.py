"""Feature updates are idempotent per event (DESIGN.md), on a real Redis.

A batch scored twice (a crash between the feature write and the commit, a rewind,
a rebalance) counts each event once in every window, and the redelivered events'
features equal their first features; two workers counting the same event of a
shared entity (a terminal) count it once.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from feature_store.fraud import FRAUD_FEATURES
from feature_store.keys import namespace_pattern
from feature_store.spam import SPAM_DENSE_FEATURES
from feature_store.store import FeatureStore, connect
from feature_store.views import CARD_WINDOWS, DOMAIN_WINDOWS, SENDER_WINDOWS, TERMINAL_WINDOWS
from feature_store.windows import DAY_S
from streams.events import Email, Transaction
from streams.fraud_scorer import FraudScorer
from streams.spam_scorer import SpamScorer
from tests.stack import Stack

pytestmark = pytest.mark.integration

T0 = 20_400 * DAY_S


class StubFraudModel:
    """What the scorer needs of a model; scores are irrelevant here."""

    name, version = "stub", "0"
    thresholds = {"review": 0.5, "block": 0.9}
    features = FRAUD_FEATURES
    metadata: dict[str, Any] = {"features": list(FRAUD_FEATURES)}
    mean = np.zeros(len(FRAUD_FEATURES), np.float32)
    std = np.ones(len(FRAUD_FEATURES), np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.zeros(len(x), np.float32)

    def close(self) -> None:
        pass


class StubSpamModel:
    name, version = "stub", "0"
    thresholds = {"quarantine": 0.5, "reject": 0.9}
    metadata = {"normalisation": {"mean": [0.0] * len(SPAM_DENSE_FEATURES), "std": [1.0] * len(SPAM_DENSE_FEATURES)}}

    def tokens(self, e: Email) -> list[int]:
        return []

    def predict(self, toks: Any, dense: np.ndarray) -> np.ndarray:
        return np.zeros(len(dense), np.float32)

    def close(self) -> None:
        pass


def txs(n: int, seed: int = 0, cards: int = 6, terms: int = 3) -> list[Transaction]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = T0 + i * 3_000 + rng.uniform(0, 100)
        out.append(Transaction(f"tx-{seed}-{i}", ts, f"c-{rng.randrange(cards)}", f"t-{rng.randrange(terms)}",
                               round(rng.uniform(1, 300), 2), {}))
    return out


@pytest.fixture
def ns(stack: Stack, prefix: str):
    client = connect(stack.redis_url)
    yield prefix + "idem"
    keys = list(client.scan_iter(match=namespace_pattern(prefix + "idem")))
    if keys:
        client.delete(*keys)
    client.close()


def fraud_scorer(stack: Stack, ns: str) -> FraudScorer:
    return FraudScorer(StubFraudModel(), FeatureStore(connect(stack.redis_url), ns), emit_features=True)


def state(store: FeatureStore, events: list[Transaction]) -> dict[tuple[str, str], tuple[dict, dict]]:
    wanted = [(CARD_WINDOWS, e.card_id) for e in events] + [(TERMINAL_WINDOWS, e.terminal_id) for e in events]
    snap = store.read(wanted)
    return {k: (dict(v.windows.counts), {d: round(s, 6) for d, s in v.windows.sums.items()})
            for k, v in snap.entries.items()}


def test_same_batch_twice_counts_once_and_repeats_its_features(stack: Stack, ns: str) -> None:
    scorer = fraud_scorer(stack, ns)
    warm, batch = txs(40, seed=1), txs(60, seed=2)
    scorer.score(warm)
    first = scorer.score(batch)
    after_first = state(scorer.store, batch)
    again = scorer.score(batch)  # the whole batch redelivered
    assert state(scorer.store, batch) == after_first, "a redelivered batch changed the windows"
    assert again.features == first.features
    # each card counts its events once: 40 + 60 events in all
    total = sum(sum(c.values()) for (v, _), (c, _) in state(scorer.store, warm + batch).items() if v == "card_tx")
    assert total == 100
    scorer.close()


def test_redelivered_suffix_and_single_event_see_exactly_their_first_state(stack: Stack, ns: str) -> None:
    scorer = fraud_scorer(stack, ns)
    batch = txs(50, seed=3, cards=3, terms=2)
    first = scorer.score(batch)
    assert first.features is not None
    for start in (20, 49):  # the tail of a batch; a single (the last) event
        again = scorer.score(batch[start:])
        assert again.features == first.features[start:]
    # one event from the middle: it does not see itself (its count excludes it)
    mid = 25
    one = scorer.score([batch[mid]])
    assert one.features is not None
    card_n = {e.card_id: 0 for e in batch}
    for e in batch:
        card_n[e.card_id] += 1
    assert one.features[0]["cust_nb_tx_1d"] < card_n[batch[mid].card_id] or card_n[batch[mid].card_id] == 1
    assert state(scorer.store, batch) == state(scorer.store, batch)
    total = sum(sum(c.values()) for (v, _), (c, _) in state(scorer.store, batch).items() if v == "terminal_tx")
    assert total == 50
    scorer.close()


def test_duplicate_inside_one_batch_counts_once(stack: Stack, ns: str) -> None:
    scorer = fraud_scorer(stack, ns)
    batch = txs(10, seed=4)
    out = scorer.score(batch + [batch[3]])
    assert out.features is not None and out.features[10] == out.features[3]
    total = sum(sum(c.values()) for (v, _), (c, _) in state(scorer.store, batch).items() if v == "card_tx")
    assert total == 10
    scorer.close()


def test_two_workers_counting_the_same_shared_event_count_it_once(stack: Stack, ns: str) -> None:
    """A rebalance can have the old and the new owner process one batch at once; the
    terminal (shared) and the card both count each event once."""
    a, b = fraud_scorer(stack, ns), fraud_scorer(stack, ns)
    batch = txs(30, seed=5, terms=1)
    snap_a = a.store.read([(TERMINAL_WINDOWS, "t-0")], [(TERMINAL_WINDOWS, "t-0", e.event_id, int(e.ts_s // DAY_S))
                                                        for e in batch])
    snap_b = b.store.read([(TERMINAL_WINDOWS, "t-0")], [(TERMINAL_WINDOWS, "t-0", e.event_id, int(e.ts_s // DAY_S))
                                                        for e in batch])
    for snap in (snap_a, snap_b):
        for e in batch:
            snap.apply(TERMINAL_WINDOWS, "t-0", e.event_id, int(e.ts_s // DAY_S))
    a.store.write(snap_a)
    assert a.store.last_applied == 30
    b.store.write(snap_b)
    assert b.store.last_applied == 0
    counts = a.store.read([(TERMINAL_WINDOWS, "t-0")]).get(TERMINAL_WINDOWS, "t-0").counts
    assert sum(counts.values()) == 30
    a.close()
    b.close()


def test_spam_batch_twice_counts_once(stack: Stack, ns: str) -> None:
    scorer = SpamScorer(StubSpamModel(), FeatureStore(connect(stack.redis_url), ns), emit_features=True)
    mails = [Email(f"em-{i}", T0 + i * 600, f"s{i % 3}@d{i % 2}.example", ["x@y.example"], "hi", "body", {}, [], [], {})
             for i in range(30)]
    first = scorer.score(mails)
    again = scorer.score(mails)
    assert again.features == first.features
    snap = scorer.store.read([(SENDER_WINDOWS, m.sender) for m in mails]
                             + [(DOMAIN_WINDOWS, "d0.example"), (DOMAIN_WINDOWS, "d1.example")])
    assert sum(sum(e.windows.counts.values()) for (v, _), e in snap.entries.items() if v == "domain_mail") == 30
    assert sum(sum(e.windows.counts.values()) for (v, _), e in snap.entries.items() if v == "sender_mail") == 30
    scorer.close()

"""The Redis online store against a real Redis."""

from __future__ import annotations

import pytest

from feature_store.fraud import FRAUD_FEATURES, apply_transaction, fraud_features
from feature_store.keys import feature_key, namespace_pattern
from feature_store.store import FeatureStore, connect
from feature_store.views import CARD_WINDOWS, TERMINAL_WINDOWS
from feature_store.windows import DAY_S, HORIZON_DAYS, DayWindows
from tests.stack import Stack

pytestmark = pytest.mark.integration

T0 = 20_000 * DAY_S  # a Monday-ish day number, far from epoch edge cases


@pytest.fixture
def store(stack: Stack, prefix: str):
    s = FeatureStore(connect(stack.redis_url), namespace=prefix + "ns")
    yield s
    keys = list(s.client.scan_iter(match=namespace_pattern(s.namespace)))
    if keys:
        s.client.delete(*keys)
    s.close()


def test_batch_costs_one_read_and_one_write_round_trip(store: FeatureStore) -> None:
    wanted = [(CARD_WINDOWS, f"c-{i}") for i in range(500)] + [(TERMINAL_WINDOWS, f"t-{i % 7}") for i in range(500)]
    snap = store.read(wanted)
    for i in range(500):
        apply_transaction(T0 + i, 10.0, snap.get(CARD_WINDOWS, f"c-{i}"), snap.get(TERMINAL_WINDOWS, f"t-{i % 7}"))
    assert store.write(snap) == 507
    assert store.round_trips == 2
    again = store.read(wanted)
    assert again.get(TERMINAL_WINDOWS, "t-0").window(T0 // DAY_S, 1) == (72, 0.0)
    assert again.get(CARD_WINDOWS, "c-3").window(T0 // DAY_S, 1) == (1, 10.0)


def test_keys_get_ttl_and_stale_days_are_pruned(store: FeatureStore) -> None:
    day = T0 // DAY_S
    snap = store.read([(CARD_WINDOWS, "c-1"), (TERMINAL_WINDOWS, "t-1")])
    apply_transaction(T0, 5.0, snap.get(CARD_WINDOWS, "c-1"), snap.get(TERMINAL_WINDOWS, "t-1"))
    store.write(snap)
    key = feature_key(store.namespace, CARD_WINDOWS.name, "c-1")
    assert 0 < store.client.ttl(key) <= CARD_WINDOWS.ttl_s
    later = T0 + (HORIZON_DAYS + 2) * DAY_S
    snap = store.read([(CARD_WINDOWS, "c-1"), (TERMINAL_WINDOWS, "t-1")])
    apply_transaction(later, 7.0, snap.get(CARD_WINDOWS, "c-1"), snap.get(TERMINAL_WINDOWS, "t-1"))
    store.write(snap)
    fields = set(store.client.hkeys(key))
    assert fields == {b"n%d" % (day + HORIZON_DAYS + 2), b"s%d" % (day + HORIZON_DAYS + 2)}


def test_concurrent_writers_never_lose_increments(store: FeatureStore, stack: Stack) -> None:
    """Two workers read the same terminal, both add: Redis sums both increments."""
    other = FeatureStore(connect(stack.redis_url), store.namespace)
    a = store.read([(TERMINAL_WINDOWS, "t-shared")])
    b = other.read([(TERMINAL_WINDOWS, "t-shared")])
    a.get(TERMINAL_WINDOWS, "t-shared").add(T0 // DAY_S)
    for _ in range(3):
        b.get(TERMINAL_WINDOWS, "t-shared").add(T0 // DAY_S)
    store.write(a)
    other.write(b)
    other.close()
    assert store.read([(TERMINAL_WINDOWS, "t-shared")]).get(TERMINAL_WINDOWS, "t-shared").window(T0 // DAY_S, 1)[0] == 4


def test_features_from_redis_equal_in_memory_features(store: FeatureStore) -> None:
    """Serving (windows via Redis, batch by batch) computes what training computes in memory."""
    import random

    rng = random.Random(3)
    events = sorted(((T0 + rng.uniform(0, 40 * DAY_S), f"c-{rng.randrange(5)}", f"t-{rng.randrange(3)}",
                      round(rng.uniform(1, 300), 2)) for _ in range(400)))
    cards: dict[str, DayWindows] = {}
    terms: dict[str, DayWindows] = {}
    expected = []
    for ts, c, t, amt in events:
        cw, tw = cards.setdefault(c, DayWindows()), terms.setdefault(t, DayWindows())
        expected.append(fraud_features(ts, amt, cw, tw))
        apply_transaction(ts, amt, cw, tw)
    got = []
    for start in range(0, len(events), 37):
        batch = events[start:start + 37]
        snap = store.read([(CARD_WINDOWS, c) for _, c, _, _ in batch] + [(TERMINAL_WINDOWS, t) for _, _, t, _ in batch])
        for ts, c, t, amt in batch:
            cw, tw = snap.get(CARD_WINDOWS, c), snap.get(TERMINAL_WINDOWS, t)
            got.append(fraud_features(ts, amt, cw, tw))
            apply_transaction(ts, amt, cw, tw)
        store.write(snap)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g == pytest.approx(e, rel=1e-9, abs=1e-9), dict(zip(FRAUD_FEATURES, zip(g, e)))


def test_namespaces_are_isolated(store: FeatureStore, stack: Stack) -> None:
    replay = FeatureStore(connect(stack.redis_url), store.namespace + "-replay")
    snap = replay.read([(CARD_WINDOWS, "c-9"), (TERMINAL_WINDOWS, "t-9")])
    apply_transaction(T0, 1.0, snap.get(CARD_WINDOWS, "c-9"), snap.get(TERMINAL_WINDOWS, "t-9"))
    replay.write(snap)
    assert store.read([(CARD_WINDOWS, "c-9")]).get(CARD_WINDOWS, "c-9").counts == {}
    for k in replay.client.scan_iter(match=namespace_pattern(replay.namespace)):
        replay.client.delete(k)
    replay.close()


def test_write_survives_a_flushed_script_cache(store: FeatureStore) -> None:
    """After a Redis restart the Lua script is gone; the write reloads it and applies once."""
    snap = store.read([(TERMINAL_WINDOWS, "t-f")])
    snap.get(TERMINAL_WINDOWS, "t-f").add(T0 // DAY_S)
    store.write(snap)
    store.client.script_flush()
    snap = store.read([(TERMINAL_WINDOWS, "t-f")])
    snap.get(TERMINAL_WINDOWS, "t-f").add(T0 // DAY_S)
    store.write(snap)
    assert store.read([(TERMINAL_WINDOWS, "t-f")]).get(TERMINAL_WINDOWS, "t-f").window(T0 // DAY_S, 1)[0] == 2


def test_outage_policy_defaults_answers_without_redis_and_backs_off() -> None:
    """Against a port nothing listens on: defaults, then no further tries until retry_after."""
    import socket

    from feature_store.views import DEFAULTED

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    now = [100.0]
    store = FeatureStore(connect(f"redis://127.0.0.1:{dead}/0", 0.2), "ns", on_unavailable="defaults",
                         retry_after_s=5.0, clock=lambda: now[0])
    snap = store.read([(CARD_WINDOWS, "c-1")])
    assert snap.unavailable and snap.status(CARD_WINDOWS, "c-1", T0) == DEFAULTED
    assert snap.get(CARD_WINDOWS, "c-1").counts == {}
    assert store.write(snap) == 0 and store.round_trips == 0
    calls = []
    store._read = lambda *a, **k: calls.append(1)  # type: ignore[method-assign]
    now[0] += 4.9
    assert store.read([(CARD_WINDOWS, "c-1")]).unavailable and calls == []  # still backing off
    now[0] += 0.2
    store.read([(CARD_WINDOWS, "c-1")])
    assert calls == [1]  # probes Redis again after retry_after_s
    assert store.degraded_batches == 2


def test_outage_policy_pause_raises_for_the_worker_to_retry() -> None:
    import socket

    import redis as redis_lib

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    store = FeatureStore(connect(f"redis://127.0.0.1:{dead}/0", 0.2), "ns")
    with pytest.raises(redis_lib.ConnectionError):
        store.read([(CARD_WINDOWS, "c-1")])
    with pytest.raises(ValueError):
        FeatureStore(store.client, "ns", on_unavailable="ignore")


def test_cluster_shaped_calls_give_the_same_features_and_state(store: FeatureStore, stack: Stack) -> None:
    """On Redis Cluster each script call carries one entity (its keys share a slot); the
    plain client packs up to GROUP_ENTITIES per call. Both shapes, run here on the same
    Redis, must give the same rows, the same redelivery handling and the same keys."""
    from feature_store.batch import fraud_batch
    from streams.events import Transaction

    per_entity = FeatureStore(connect(stack.redis_url), namespace=store.namespace + "-percall")
    per_entity._cluster = True
    try:
        events = [Transaction(event_id=f"e-{i}", ts_s=float(T0 + 60 * i), card_id=f"c-{i % 40}",
                              terminal_id=f"t-{i % 300}", amount=float(i % 17) + 0.5, raw={})
                  for i in range(700)]
        rows = {}
        for s in (store, per_entity):
            out = []
            for lo in range(0, 700, 350):
                r, _, snap = fraud_batch(s, events[lo:lo + 350])
                s.write(snap)
                out.append(r)
            # a redelivery of the second batch recomputes its first pass and counts nothing
            again, _, snap = fraud_batch(s, events[350:])
            s.write(snap)
            assert s.last_applied == 0
            assert (again == out[1]).all()
            rows[s.namespace] = out
        a, b = rows[store.namespace], rows[per_entity.namespace]
        assert all((x == y).all() for x, y in zip(a, b))
        for entity in ("c-3", "t-7"):
            view = CARD_WINDOWS if entity.startswith("c") else TERMINAL_WINDOWS
            assert store.client.hgetall(feature_key(store.namespace, view.name, entity)) == \
                store.client.hgetall(feature_key(per_entity.namespace, view.name, entity))
    finally:
        keys = list(per_entity.client.scan_iter(match=namespace_pattern(per_entity.namespace)))
        if keys:
            per_entity.client.delete(*keys)
        per_entity.close()

"""The Handbook transaction simulator: determinism, statistics, event format."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from models.fraud_sim import (
    DAY_S,
    SCENARIO_AMOUNT,
    SCENARIO_CUSTOMER,
    SCENARIO_GENUINE,
    SCENARIO_TERMINAL,
    SimConfig,
    generate,
    label_records,
)
from streams.events import decode_transaction, parse_ts

CFG = SimConfig(n_customers=500, n_terminals=4_000, n_days=60, start_date="2026-04-01", seed=11)


@pytest.fixture(scope="module")
def sim():
    return generate(CFG)


def test_deterministic_given_seed(sim):
    again = generate(CFG)
    assert again.fingerprint() == sim.fingerprint()
    for col in sim.COLUMNS:
        assert np.array_equal(getattr(again, col), getattr(sim, col)), col
    other = generate(SimConfig(**{**CFG.to_dict(), "seed": 12}))
    assert other.fingerprint() != sim.fingerprint()
    assert SimConfig.from_dict(CFG.to_dict()) == CFG


def test_time_order_ids_and_ranges(sim):
    n = len(sim)
    assert np.array_equal(sim.tx_id, np.arange(n))
    assert np.all(np.diff(sim.ts_s) >= 0)
    day = sim.day
    assert day.min() >= 0 and day.max() < CFG.n_days
    tod = sim.ts_s - CFG.start_s - day * DAY_S
    assert tod.min() >= 0 and tod.max() < DAY_S
    # time of day ~ N(43200, 20000) truncated to the day: mean near noon, sd a bit under 20000
    assert abs(tod.mean() - 43_200) < 1_000
    assert 15_000 < tod.std() < 20_000
    assert np.all(sim.amount >= 0)
    assert np.allclose(sim.amount, np.round(sim.amount, 2))


def test_volume_and_amounts_follow_profiles(sim):
    # Poisson(U(0,4)) a day: ~2 a customer a day, minus ~3% discarded times of day
    per_day = len(sim) / CFG.n_days / CFG.n_customers
    assert 1.6 < per_day < 2.3
    genuine = sim.scenario == SCENARIO_GENUINE
    # amount ~ N(mu, mu/2), mu ~ U(5, 100): genuine amounts stay well below 5x the max mean
    assert 35 < sim.amount[genuine].mean() < 70
    assert sim.amount[genuine].max() <= 220


def test_terminals_within_radius(sim):
    d = np.hypot(*(sim.customer_xy[sim.customer_id] - sim.terminal_xy[sim.terminal_id]).T)
    assert d.max() < CFG.radius
    # customers spread their spending over several terminals
    per_cust = {c: np.unique(sim.terminal_id[sim.customer_id == c]).size for c in np.unique(sim.customer_id)[:50]}
    assert np.median(list(per_cust.values())) > 5


def test_fraud_scenarios(sim):
    sc, fr = sim.scenario, sim.is_fraud
    assert np.array_equal(fr == 1, sc != SCENARIO_GENUINE)
    counts = np.bincount(sc, minlength=4)
    assert counts[SCENARIO_AMOUNT] > 0 and counts[SCENARIO_TERMINAL] > 0 and counts[SCENARIO_CUSTOMER] > 0
    assert 0.002 < fr.mean() < 0.05
    # (1) every amount above 220 is fraud
    assert np.all(fr[sim.amount > 220] == 1)
    # (2) terminal compromise covers whole days: on a (terminal, day) with a
    # scenario-2 fraud, every transaction is fraud
    day = sim.day
    s2 = np.flatnonzero(sc == SCENARIO_TERMINAL)
    keys = set(zip(sim.terminal_id[s2].tolist(), day[s2].tolist()))
    same = np.array([(t, d) in keys for t, d in zip(sim.terminal_id.tolist(), day.tolist())])
    assert np.all(fr[same] == 1)
    # 2 terminals a day for 28 days: at most 56 terminal-days per simulated day, and a
    # compromise is temporary (most such terminals also have genuine days)
    terms = {t for t, _ in keys}
    assert len(terms) <= 2 * CFG.n_days and len(keys) <= 56 * CFG.n_days
    with_genuine = set(sim.terminal_id[sc == SCENARIO_GENUINE].tolist())
    assert len(terms & with_genuine) >= 0.5 * len(terms)
    # (3) compromised customers: about a third of their transactions in the window are
    # fraud with amount x5; their fraud amounts exceed their genuine ones on average
    s3 = sc == SCENARIO_CUSTOMER
    custs = np.unique(sim.customer_id[s3])
    assert len(custs) <= 3 * CFG.n_days
    ratios = []
    for c in custs[:40]:
        mine = sim.customer_id == c
        g = mine & (sc == SCENARIO_GENUINE)
        if g.sum() >= 5:
            ratios.append(sim.amount[mine & s3].mean() / sim.amount[g].mean())
    assert np.median(ratios) > 3


def test_book_defaults_size_speed_and_fraud_rate():
    t0 = time.perf_counter()
    big = generate(SimConfig(seed=0))  # the book's 5,000 customers, 10,000 terminals, 183 days
    elapsed = time.perf_counter() - t0
    assert 1_600_000 < len(big) < 2_000_000  # the book reports 1,754,155
    assert 0.006 < big.is_fraud.mean() < 0.011  # the book: ~0.84%
    assert elapsed < 20, f"generation took {elapsed:.1f}s"


def test_events_pass_decoder_and_match_columns(sim):
    n = 0
    for i, ev in enumerate(sim.events(stop=2_000)):
        tx = decode_transaction(orjson.dumps(ev))
        assert tx.event_id == f"tx-{i}"
        assert tx.ts_s == float(sim.ts_s[i])
        assert tx.card_id == f"c-{sim.customer_id[i]}"
        assert tx.terminal_id == f"t-{sim.terminal_id[i]}"
        assert tx.amount == round(float(sim.amount[i]), 2)
        assert ev["currency"] == "USD" and ev["country"] == "US"
        assert ev["channel"] in ("pos", "ecom", "atm") and isinstance(ev["mcc"], int)
        assert ev["device_id"] is None and ev["ip"] is None
        n += 1
    assert n == 2_000
    # deterministic event stream
    assert list(sim.events(stop=50)) == list(generate(CFG).events(stop=50))
    # a terminal keeps its channel and mcc
    seen: dict[str, tuple] = {}
    for ev in sim.events(stop=5_000):
        assert seen.setdefault(ev["terminal_id"], (ev["channel"], ev["mcc"])) == (ev["channel"], ev["mcc"])


def test_label_records(sim):
    labels = list(sim.labels(stop=3_000))
    assert len(labels) == 3_000
    for i, rec in enumerate(labels):
        assert rec["event_id"] == f"tx-{i}"
        assert rec["card_id"] == f"c-{sim.customer_id[i]}"
        assert rec["is_fraud"] is bool(sim.is_fraud[i])
        assert parse_ts(rec["label_ts"]) - parse_ts(rec["event_ts"]) == 7 * DAY_S
    assert sum(r["is_fraud"] for r in sim.labels()) == int(sim.is_fraud.sum())
    small = SimConfig(n_customers=20, n_terminals=200, n_days=3, seed=1)
    assert list(label_records(small)) == list(generate(small).labels())

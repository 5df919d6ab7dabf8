"""Window expiry, out-of-order events and the label delay, driven by event time.

Every time rule reads the event's own ``ts`` (the pipeline's clock is the stream),
so these tests set time by constructing timestamps: deterministic, no sleeping.
"""

from __future__ import annotations

import orjson
import pytest

from feature_store.fraud import (FRAUD_FEATURES, LABEL_DELAY_DAYS, apply_label, apply_transaction, fraud_features,
                                 terminal_risk)
from feature_store.windows import DAY_S, HORIZON_DAYS, DayWindows

D0 = 20_000  # a day number
NOON = 12 * 3600


def ts(day: int, seconds: int = NOON) -> float:
    return float(day * DAY_S + seconds)


def col(name: str) -> int:
    return FRAUD_FEATURES.index(name)


@pytest.mark.parametrize("k", [1, 7, 30])
def test_an_event_leaves_the_k_day_window_exactly_k_days_later(k: int) -> None:
    w = DayWindows()
    w.add(D0, 10.0)
    assert w.window(D0 + k - 1, k) == (1, 10.0)  # last day inside
    assert w.window(D0 + k, k) == (0, 0.0)  # first day outside


def test_features_expire_with_their_windows() -> None:
    card, term = DayWindows(), DayWindows()
    apply_transaction(ts(D0), 50.0, card, term)
    row = fraud_features(ts(D0 + 6, 23 * 3600), 1.0, card, term)
    assert row[col("cust_nb_tx_7d")] == 1 and row[col("cust_avg_amount_7d")] == 50.0
    row = fraud_features(ts(D0 + 7, 0), 1.0, card, term)
    assert row[col("cust_nb_tx_7d")] == 0 and row[col("cust_nb_tx_30d")] == 1
    row = fraud_features(ts(D0 + 30, 0), 1.0, card, term)
    assert row[col("cust_nb_tx_30d")] == 0 and row[col("term_nb_tx_30d")] == 0


def test_an_event_never_sees_itself_or_later_days() -> None:
    card, term = DayWindows(), DayWindows()
    apply_transaction(ts(D0 + 5), 99.0, card, term)  # arrived first, happened later
    late = fraud_features(ts(D0 + 2), 10.0, card, term)  # an out-of-order event
    assert late[col("cust_nb_tx_30d")] == 0, "windows end at the event's own day"
    apply_transaction(ts(D0 + 2), 10.0, card, term)
    assert card.window(D0 + 2, 1) == (1, 10.0), "a late event is counted in its own day"
    after = fraud_features(ts(D0 + 5, NOON + 1), 1.0, card, term)
    assert after[col("cust_nb_tx_7d")] == 2


def test_pruning_keeps_exactly_the_horizon() -> None:
    w = DayWindows()
    for d in range(D0, D0 + 40):
        w.add(d)
    dropped = w.prune(D0 + 39)
    assert sorted(dropped) == list(range(D0, D0 + 40 - HORIZON_DAYS))
    assert w.window(D0 + 39, 30) == (30, 0.0)


def test_a_label_counts_in_terminal_risk_only_after_the_delay() -> None:
    risk = DayWindows()
    apply_label(ts(D0), True, risk)  # a fraud on day D0, known 7 days later
    apply_label(ts(D0), False, risk)
    first_day_seen = D0 + LABEL_DELAY_DAYS + 1
    for k in (1, 7, 30):
        assert terminal_risk(first_day_seen - 1, risk, k) == 0.0, "not before the delay"
        assert terminal_risk(first_day_seen, risk, k) == pytest.approx(0.5)
    assert terminal_risk(first_day_seen + 1, risk, 1) == 0.0, "the 1-day window has moved past it"
    assert terminal_risk(first_day_seen + 6, risk, 7) == pytest.approx(0.5)
    assert terminal_risk(first_day_seen + 7, risk, 7) == 0.0
    assert terminal_risk(D0 + 100, None, 7) == 0.0, "no labels known: risk 0 (and marked defaulted)"


def test_label_known_by_the_first_event_that_can_use_it() -> None:
    """A label is published LABEL_DELAY_DAYS after its transaction; the earliest event whose
    risk window holds that transaction comes later still, so serving never needs a label
    from the future."""
    tx_ts = ts(D0, 23 * 3600 + 3599)  # latest moment of day D0
    label_ts = tx_ts + LABEL_DELAY_DAYS * DAY_S
    first_event_ts = ts(D0 + LABEL_DELAY_DAYS + 1, 0)
    assert label_ts < first_event_ts


def test_a_user_report_counts_from_the_day_after_it_was_made() -> None:
    from feature_store.spam import SPAM_DENSE_FEATURES, apply_report, spam_dense_features
    from streams.events import decode_email

    def mail(day: int) -> object:
        return decode_email(orjson.dumps({"event_id": f"em-{day}", "ts": int(ts(day) * 1000), "from": "a@b.example",
                                          "to": ["x@y.example"], "subject": "hi", "body": "hello"}))

    share = SPAM_DENSE_FEATURES.index("sender_spam_share_30d")
    reports = DayWindows()
    apply_report(ts(D0, 10), True, reports)
    apply_report(ts(D0, 11), False, reports)
    same_day = spam_dense_features(mail(D0), DayWindows(), DayWindows(), reports, None)
    next_day = spam_dense_features(mail(D0 + 1), DayWindows(), DayWindows(), reports, None)
    month_later = spam_dense_features(mail(D0 + 31), DayWindows(), DayWindows(), reports, None)
    assert same_day[share] == 0.0, "a report made today is not yet in the window"
    assert next_day[share] == pytest.approx(0.5)
    assert month_later[share] == 0.0, "out of the 30-day window"

"""Fraud features, computed by the same code at training and at serving time.

The feature set follows the Fraud Detection Handbook (Le Borgne et al.): the
transaction amount, weekend and night flags, the customer's transaction count and
mean amount over 1/7/30 days, the terminal's transaction count over 1/7/30 days,
and the terminal's fraud risk over 1/7/30 days *with the label delay*
(``TERMINAL_ID_RISK_<k>DAY_WINDOW`` in the book).
Every windowed value comes only from events *before* the scored one: callers
compute features first, then apply the event to the windows.

Terminal risk (point in time). Labels (chargebacks) arrive ``LABEL_DELAY_DAYS``
after the transaction, so for an event on UTC day ``D`` the k-day risk covers the
k whole days ``D-delay-k .. D-delay-1`` (``[t - delay - k days, t - delay)`` at
day granularity): risk = fraudulent labelled transactions / labelled transactions
of the terminal on those days, 0 when none. A transaction of day ``D-delay-1`` has
its label by day ``D-1``, so with the book's constant delay every label in the
window is known when the event is scored. The state is a :class:`DayWindows` per
terminal, keyed by the *transaction's* day, whose ``counts`` are labelled
transactions and ``sums`` fraudulent ones; training fills it from labels in
``label_ts`` order (only labels already arrived), serving reads what the label
app (``feature_store.labels_app``) materialised in Redis.
"""

from __future__ import annotations

import time

from feature_store.windows import DayWindows, day_of

WINDOWS_DAYS = (1, 7, 30)
#: Days between a transaction and its label (the Fraud Detection Handbook's delay).
LABEL_DELAY_DAYS = 7
#: Oldest transaction day a risk window reaches back to, relative to the event's day.
RISK_HORIZON_DAYS = LABEL_DELAY_DAYS + max(WINDOWS_DAYS) + 1

FRAUD_FEATURES: tuple[str, ...] = (
    "amount",
    "is_weekend",
    "is_night",
    "cust_nb_tx_1d",
    "cust_avg_amount_1d",
    "cust_nb_tx_7d",
    "cust_avg_amount_7d",
    "cust_nb_tx_30d",
    "cust_avg_amount_30d",
    "term_nb_tx_1d",
    "term_nb_tx_7d",
    "term_nb_tx_30d",
    "term_risk_1d",
    "term_risk_7d",
    "term_risk_30d",
)

#: The feature list of fraud-mlp versions 1-2 (before the terminal risk features).
FRAUD_FEATURES_V1: tuple[str, ...] = FRAUD_FEATURES[:12]


def calendar_flags(ts_s: float) -> tuple[float, float]:
    """(is_weekend, is_night) in UTC; night is 00:00-06:00 as in the handbook."""
    tm = time.gmtime(ts_s)
    return float(tm.tm_wday >= 5), float(tm.tm_hour < 6)


def terminal_risk(day: int, risk: DayWindows | None, days: int, delay_days: int = LABEL_DELAY_DAYS) -> float:
    """Share of fraudulent labelled transactions on the ``days`` days ending ``delay_days + 1`` before ``day``."""
    if risk is None:
        return 0.0
    n, f = risk.window(day - delay_days - 1, days)
    return f / n if n else 0.0


def fraud_features(ts_s: float, amount: float, card: DayWindows, terminal: DayWindows,
                   risk: DayWindows | None = None) -> list[float]:
    """Feature row for one transaction, in ``FRAUD_FEATURES`` order (``risk``: the
    terminal's label buckets; ``None`` means no labels known, risk 0)."""
    day = day_of(ts_s)
    weekend, night = calendar_flags(ts_s)
    row = [float(amount), weekend, night]
    for k in WINDOWS_DAYS:
        n, s = card.window(day, k)
        row.append(float(n))
        row.append(s / n if n else 0.0)
    for k in WINDOWS_DAYS:
        n, _ = terminal.window(day, k)
        row.append(float(n))
    for k in WINDOWS_DAYS:
        row.append(terminal_risk(day, risk, k))
    return row


def apply_label(tx_ts_s: float, is_fraud: bool, risk: DayWindows) -> None:
    """Count one arrived label into its terminal's label buckets (by transaction day)."""
    risk.add(day_of(tx_ts_s), 1.0 if is_fraud else 0.0)


def apply_transaction(ts_s: float, amount: float, card: DayWindows, terminal: DayWindows) -> None:
    """Count the transaction into its card's and terminal's windows."""
    day = day_of(ts_s)
    card.add(day, amount)
    terminal.add(day, amount)

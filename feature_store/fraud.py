"""Fraud features, computed by the same code at training and at serving time.

The feature set follows the Fraud Detection Handbook (Le Borgne et al.): the
transaction amount, weekend and night flags, the customer's transaction count and
mean amount over 1/7/30 days, and the terminal's transaction count over 1/7/30 days.
Every windowed value comes only from events *before* the scored one: callers
compute features first, then apply the event to the windows.
"""

from __future__ import annotations

import time

from feature_store.windows import DayWindows, day_of

WINDOWS_DAYS = (1, 7, 30)

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
)


def calendar_flags(ts_s: float) -> tuple[float, float]:
    """(is_weekend, is_night) in UTC; night is 00:00-06:00 as in the handbook."""
    tm = time.gmtime(ts_s)
    return float(tm.tm_wday >= 5), float(tm.tm_hour < 6)


def fraud_features(ts_s: float, amount: float, card: DayWindows, terminal: DayWindows) -> list[float]:
    """Feature row for one transaction, in ``FRAUD_FEATURES`` order."""
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
    return row


def apply_transaction(ts_s: float, amount: float, card: DayWindows, terminal: DayWindows) -> None:
    """Count the transaction into its card's and terminal's windows."""
    day = day_of(ts_s)
    card.add(day, amount)
    terminal.add(day, amount)

"""Synthetic card transactions after the Fraud Detection Handbook simulator.

Follows chapter 3 ("Transaction data simulator") of Le Borgne et al.,
*Reproducible Machine Learning for Credit Card Fraud Detection - Practical
Handbook*, vectorised with numpy:

- customers on a 100x100 grid with ``mean_amount ~ U(5, 100)``,
  ``std_amount = mean_amount / 2`` and ``mean_nb_tx_per_day ~ U(0, 4)``;
- terminals uniform on the same grid; a customer uses the terminals within
  ``radius`` of it (customers with none make no transactions, as in the book);
- per customer and day ``Poisson(mean_nb_tx_per_day)`` transactions, each at a
  terminal drawn uniformly from the customer's available ones, with amount
  ``N(mean, std)`` (a negative draw replaced by ``U(0, 2 * mean)``, rounded to
  cents) and time of day ``N(43200, 20000)`` seconds, truncated to whole
  seconds; draws outside ``[0, 86400)`` are discarded (the transaction does not
  happen);
- fraud scenarios, applied in the book's order (a later one overrides the
  scenario code of an earlier one):
  1. every amount > 220 is fraud;
  2. each day 2 random terminals are compromised: all their transactions that
     day and the next 27 (28 days) are fraud;
  3. each day 3 random customers are compromised: of their transactions that day
     and the next 13 (14 days), a random third get ``amount * 5`` and are fraud.

Everything is a deterministic function of :class:`SimConfig` (``seed``
included). The merchant category code and channel of an event are cosmetic
terminal attributes drawn from a separate random stream; they carry no fraud
signal, as in the book.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, timezone
from typing import Any, Iterator

import numpy as np

from streams.events import format_ts

DAY_S = 86_400
LABEL_DELAY_DAYS = 7

#: Scenario codes in :attr:`SimResult.scenario`.
SCENARIO_GENUINE = 0
SCENARIO_AMOUNT = 1
SCENARIO_TERMINAL = 2
SCENARIO_CUSTOMER = 3

_CHANNELS = ("pos", "ecom", "atm")
_CHANNEL_P = (0.75, 0.20, 0.05)
_MCC_BY_CHANNEL = (
    (5411, 5812, 5541, 5311, 5912, 5999, 5732, 5651),  # pos: grocery, restaurants, fuel, ...
    (5964, 5965, 5967, 4899, 5818, 5734),  # ecom: direct marketing, digital goods, ...
    (6011,),  # atm: cash disbursement
)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Generator parameters; the book's defaults are 5,000 / 10,000 / 183 days."""

    n_customers: int = 5_000
    n_terminals: int = 10_000
    n_days: int = 183
    start_date: str = "2026-04-01"  # UTC midnight of simulated day 0
    radius: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_customers < 3 or self.n_terminals < 2 or self.n_days < 1:
            raise ValueError("need at least 3 customers, 2 terminals and 1 day")
        if not self.radius > 0:
            raise ValueError("radius must be > 0")
        date.fromisoformat(self.start_date)

    @property
    def start_s(self) -> int:
        d = date.fromisoformat(self.start_date)
        return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SimConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown SimConfig fields: {sorted(unknown)}")
        return cls(**d)


@dataclass(frozen=True, slots=True)
class SimResult:
    """Transactions as numpy columns, sorted by time; ``tx_id`` is the row number."""

    config: SimConfig
    tx_id: np.ndarray  # int64
    ts_s: np.ndarray  # int64 epoch seconds
    customer_id: np.ndarray  # int32
    terminal_id: np.ndarray  # int32
    amount: np.ndarray  # float64, cents
    is_fraud: np.ndarray  # int8 0/1
    scenario: np.ndarray  # int8, SCENARIO_*
    terminal_channel: np.ndarray  # int8 index into _CHANNELS, per terminal
    terminal_mcc: np.ndarray  # int32, per terminal
    customer_xy: np.ndarray  # float64 [n_customers, 2], profile locations
    terminal_xy: np.ndarray  # float64 [n_terminals, 2]

    COLUMNS = ("tx_id", "ts_s", "customer_id", "terminal_id", "amount", "is_fraud", "scenario")

    def __len__(self) -> int:
        return int(self.tx_id.shape[0])

    @property
    def day(self) -> np.ndarray:
        """Simulated day number (0 = ``config.start_date``) of each transaction."""
        return (self.ts_s - self.config.start_s) // DAY_S

    def fingerprint(self) -> str:
        """sha256 over the transaction columns (name, dtype and little-endian bytes)."""
        h = hashlib.sha256()
        for name in self.COLUMNS:
            col = np.ascontiguousarray(getattr(self, name))
            col = col.astype(col.dtype.newbyteorder("<"), copy=False)
            h.update(name.encode())
            h.update(col.dtype.str.encode())
            h.update(col.tobytes())
        return h.hexdigest()

    def event_id(self, i: int) -> str:
        return f"tx-{int(self.tx_id[i])}"

    def event_ids(self, rows: np.ndarray | None = None) -> list[str]:
        ids = self.tx_id if rows is None else self.tx_id[rows]
        return [f"tx-{int(t)}" for t in ids]

    def events(self, start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
        """Transaction events in the DESIGN.md format, in time order."""
        stop = len(self) if stop is None else min(stop, len(self))
        tx, ts, cu, te, am = self.tx_id, self.ts_s, self.customer_id, self.terminal_id, self.amount
        ch, mcc = self.terminal_channel, self.terminal_mcc
        for i in range(start, stop):
            t = int(te[i])
            yield {
                "event_id": f"tx-{int(tx[i])}",
                "ts": format_ts(float(ts[i])),
                "card_id": f"c-{int(cu[i])}",
                "terminal_id": f"t-{t}",
                "amount": round(float(am[i]), 2),
                "currency": "USD",
                "mcc": int(mcc[t]),
                "country": "US",
                "channel": _CHANNELS[int(ch[t])],
                "device_id": None,
                "ip": None,
            }

    def labels(self, delay_days: float = LABEL_DELAY_DAYS, start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
        """Ground-truth records for ``fraud.labels`` (Kafka key: ``card_id``).

        Each transaction's label becomes known ``delay_days`` after it happened
        (the book's feedback delay). With a constant delay the records come out
        in ``label_ts`` order.
        """
        stop = len(self) if stop is None else min(stop, len(self))
        delay = float(delay_days) * DAY_S
        for i in range(start, stop):
            ts = float(self.ts_s[i])
            yield {
                "event_id": f"tx-{int(self.tx_id[i])}",
                "card_id": f"c-{int(self.customer_id[i])}",
                "terminal_id": f"t-{int(self.terminal_id[i])}",
                "is_fraud": bool(self.is_fraud[i]),
                "scenario": int(self.scenario[i]),
                "event_ts": format_ts(ts),
                "label_ts": format_ts(ts + delay),
            }


def _available_terminals(cust_xy: np.ndarray, term_xy: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """CSR lists (offsets, terminal ids) of the terminals within ``radius`` of each customer."""
    r2 = radius * radius
    idx_parts: list[np.ndarray] = []
    deg = np.zeros(len(cust_xy), dtype=np.int64)
    chunk = max(1, 4_000_000 // max(1, len(term_xy)))
    for lo in range(0, len(cust_xy), chunk):
        c = cust_xy[lo : lo + chunk]
        d2 = (c[:, None, 0] - term_xy[None, :, 0]) ** 2 + (c[:, None, 1] - term_xy[None, :, 1]) ** 2
        rows, cols = np.nonzero(d2 < r2)  # row-major: grouped by customer, terminals ascending
        deg[lo : lo + len(c)] = np.bincount(rows, minlength=len(c))
        idx_parts.append(cols.astype(np.int32))
    offsets = np.zeros(len(cust_xy) + 1, dtype=np.int64)
    np.cumsum(deg, out=offsets[1:])
    return offsets, (np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int32))


def generate(config: SimConfig = SimConfig()) -> SimResult:
    """Generate the transactions for ``config`` (deterministic given the seed)."""
    cfg = config
    rng = np.random.default_rng([cfg.seed, 0])

    # Profiles, drawn in the book's order of attributes.
    cust_xy = rng.uniform(0, 100, size=(cfg.n_customers, 2))
    mean_amount = rng.uniform(5, 100, size=cfg.n_customers)
    std_amount = mean_amount / 2
    mean_nb_tx = rng.uniform(0, 4, size=cfg.n_customers)
    term_xy = rng.uniform(0, 100, size=(cfg.n_terminals, 2))
    offsets, avail = _available_terminals(cust_xy, term_xy, cfg.radius)
    n_avail = np.diff(offsets)

    # Daily counts; customers without a terminal in reach make no transactions.
    counts = rng.poisson(mean_nb_tx[:, None], size=(cfg.n_customers, cfg.n_days))
    counts[n_avail == 0] = 0
    flat = counts.ravel()
    n = int(flat.sum())
    cell = np.repeat(np.arange(flat.size, dtype=np.int64), flat)
    cust = (cell // cfg.n_days).astype(np.int32)
    day = (cell % cfg.n_days).astype(np.int64)

    tod = rng.normal(DAY_S / 2, 20_000, size=n)
    amount = rng.normal(mean_amount[cust], std_amount[cust])
    neg_fill = rng.uniform(0, 2 * mean_amount[cust])
    amount = np.where(amount < 0, neg_fill, amount)
    pick = rng.random(n)
    term = avail[offsets[cust] + np.minimum((pick * n_avail[cust]).astype(np.int64), n_avail[cust] - 1)]

    keep = (tod >= 0) & (tod < DAY_S)
    cust, day, term, amount = cust[keep], day[keep], term[keep], amount[keep]
    ts = cfg.start_s + day * DAY_S + tod[keep].astype(np.int64)  # truncation to whole seconds
    amount = np.round(amount, 2)

    order = np.argsort(ts, kind="stable")
    ts, cust, term, amount, day = ts[order], cust[order], term[order].astype(np.int32), amount[order], day[order]
    n = int(ts.shape[0])
    is_fraud = np.zeros(n, dtype=np.int8)
    scenario = np.zeros(n, dtype=np.int8)

    # Scenario 1: large amounts.
    big = amount > 220
    is_fraud[big] = 1
    scenario[big] = SCENARIO_AMOUNT

    # Scenario 2: compromised terminals, 2 a day for 28 days.
    comp = np.zeros((cfg.n_terminals, cfg.n_days), dtype=bool)
    for d in range(cfg.n_days):
        for t in rng.choice(cfg.n_terminals, size=2, replace=False):
            comp[t, d : d + 28] = True
    hit = comp[term, day]
    is_fraud[hit] = 1
    scenario[hit] = SCENARIO_TERMINAL

    # Scenario 3: compromised customers, 3 a day for 14 days; a third of their
    # transactions in the window get amount x 5.
    by_cust = np.argsort(cust, kind="stable")  # time order within each customer
    cust_sorted = cust[by_cust]
    for d in range(cfg.n_days):
        for c in rng.choice(cfg.n_customers, size=3, replace=False):
            lo, hi = np.searchsorted(cust_sorted, [c, c + 1])
            rows = by_cust[lo:hi]
            rows = rows[(day[rows] >= d) & (day[rows] < d + 14)]
            k = len(rows) // 3
            if k == 0:
                continue
            sel = rng.choice(rows, size=k, replace=False)
            amount[sel] = np.round(amount[sel] * 5, 2)
            is_fraud[sel] = 1
            scenario[sel] = SCENARIO_CUSTOMER

    # Cosmetic terminal attributes from their own stream (no fraud signal).
    rng2 = np.random.default_rng([cfg.seed, 1])
    channel = rng2.choice(len(_CHANNELS), size=cfg.n_terminals, p=_CHANNEL_P).astype(np.int8)
    mcc_pick = rng2.random(cfg.n_terminals)
    mcc = np.array(
        [_MCC_BY_CHANNEL[c][int(u * len(_MCC_BY_CHANNEL[c]))] for c, u in zip(channel, mcc_pick)], dtype=np.int32
    )

    return SimResult(
        config=cfg,
        tx_id=np.arange(n, dtype=np.int64),
        ts_s=ts.astype(np.int64),
        customer_id=cust.astype(np.int32),
        terminal_id=term,
        amount=amount.astype(np.float64),
        is_fraud=is_fraud,
        scenario=scenario,
        terminal_channel=channel,
        terminal_mcc=mcc,
        customer_xy=cust_xy,
        terminal_xy=term_xy,
    )


def transaction_events(config: SimConfig = SimConfig()) -> Iterator[dict[str, Any]]:
    """Convenience: generate and yield the events for ``config``."""
    return generate(config).events()


def label_records(config: SimConfig = SimConfig(), delay_days: float = LABEL_DELAY_DAYS) -> Iterator[dict[str, Any]]:
    """Convenience: generate and yield the ``fraud.labels`` records for ``config``."""
    return generate(config).labels(delay_days)

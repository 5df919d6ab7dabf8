"""Adaptive micro-batching: how many records the next ``consume()`` asks for, and how long it waits.

A batch has a fixed cost (the feature store's round trips, the producer flush, the
offset commit) and a cost per event, so big batches raise throughput and small ones
cut latency. The batcher keeps both costs as an exponentially weighted least-squares
fit of the batches it has seen (``busy_s = overhead_s + per_event_s * n``) and the
arrival rate, then sizes each batch:

- **Within the budget** (the default): an event that arrives just after a batch was
  taken waits for that batch, for the next consume's wait, and for its own batch, so
  the batch size is the largest whose processing time fits ``(budget - wait) / 2``.
- **Behind** (the last batch came back full, or more arrives per cycle than such a
  batch holds): no batch size can keep the budget any more, so the size doubles up to
  ``max_batch`` and throughput rises with the amortised fixed cost; it drops back to the
  budget size once a batch comes back short and the arrival rate fits such batches.

A consume returns as soon as its batch is full or its wait is over, so a large size
costs nothing at low rates: it only lets a backlog go out in big batches.

The clock is injectable so tests drive it deterministically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True, slots=True)
class BatchPlan:
    max_messages: int
    timeout_s: float


class MicroBatcher:
    """Sizes batches from observed costs and arrivals; see the module docstring."""

    def __init__(self, budget_s: float, max_batch: int, max_wait_s: float, *, min_batch: int = 8,
                 decay: float = 0.95, clock: Callable[[], float] = time.monotonic) -> None:
        if budget_s <= 0 or max_batch < 1 or max_wait_s < 0:
            raise ValueError("budget_s and max_batch must be positive, max_wait_s not negative")
        self.budget_s = budget_s
        self.max_batch = max_batch
        self.min_batch = min(min_batch, max_batch)
        # Waiting for a batch to fill is latency too: at most a fifth of the budget.
        self.wait_s = min(max_wait_s, budget_s / 5)
        self.decay = decay
        self._clock = clock
        # Weighted sums for the least-squares fit of busy_s against n.
        self._w = self._sn = self._st = self._snn = self._snt = 0.0
        self.per_event_s = 0.0
        self.overhead_s = 0.0
        #: Records per second arriving, as consumed when not behind (EWMA).
        self.arrival_per_s = 0.0
        self.behind = False
        self._size = max_batch  # until the costs are known, take what is there
        self._last_cycle_start: float | None = None

    def plan(self) -> BatchPlan:
        return BatchPlan(self._size, self.wait_s)

    def budget_size(self) -> int:
        """The largest batch whose processing time keeps an event within the budget."""
        if self.per_event_s <= 0:
            return self.max_batch
        room = (self.budget_s - self.wait_s) / 2 - self.overhead_s
        return max(self.min_batch, min(self.max_batch, int(room / self.per_event_s)))

    def observe(self, requested: int, got: int, busy_s: float) -> None:
        """One consume came back with ``got`` of ``requested`` records, which took ``busy_s`` to process."""
        now = self._clock()
        cycle_s = None if self._last_cycle_start is None else now - self._last_cycle_start
        self._last_cycle_start = now
        if got > 0:
            self._fit(got, busy_s)
        if cycle_s and cycle_s > 0:
            rate = got / cycle_s
            self.arrival_per_s = rate if self.arrival_per_s == 0 else 0.8 * self.arrival_per_s + 0.2 * rate
        size = self.budget_size()
        cycle_at_size = self.wait_s + self.overhead_s + self.per_event_s * size
        self.behind = got >= requested or self.arrival_per_s * cycle_at_size > size
        if self.behind:
            self._size = min(self.max_batch, max(size, requested * 2))
        else:
            self._size = size

    def _fit(self, n: int, t: float) -> None:
        d = self.decay
        self._w = d * self._w + 1.0
        self._sn = d * self._sn + n
        self._st = d * self._st + t
        self._snn = d * self._snn + n * n
        self._snt = d * self._snt + n * t
        den = self._w * self._snn - self._sn * self._sn
        slope = (self._w * self._snt - self._sn * self._st) / den if den > 1e-9 * self._w * self._snn else 0.0
        if slope > 0:
            self.per_event_s = slope
        elif self.per_event_s <= 0:
            # No estimate yet and sizes too alike to separate the costs: charge it all per event.
            self.per_event_s = self._st / self._sn
        # Otherwise (a steady batch size) keep the per-event cost and track the overhead.
        self.overhead_s = max(0.0, (self._st - self.per_event_s * self._sn) / self._w)

    def as_dict(self) -> dict[str, float | int | bool]:
        return {"batch": self._size, "per_event_us": round(self.per_event_s * 1e6, 1),
                "overhead_ms": round(self.overhead_s * 1e3, 2), "arrival_per_s": round(self.arrival_per_s, 1),
                "behind": self.behind}

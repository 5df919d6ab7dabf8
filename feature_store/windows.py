"""Day-bucketed event windows: the state behind every windowed feature.

A window of ``k`` days at event day ``d`` covers the buckets ``d-k+1 .. d``: the
event's own UTC day so far plus the ``k-1`` full days before it. Buckets are keyed
by absolute day number, so an out-of-order event lands in its own day and a window
never sees buckets after the scored event's day. Counts are integers and sums are
floats so that Redis can update them atomically with HINCRBY / HINCRBYFLOAT when
several workers touch one entity (terminals, sender domains).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

DAY_S = 86_400
#: Buckets older than this many days before the newest one are dropped.
HORIZON_DAYS = 30


def day_of(ts_s: float) -> int:
    """UTC day number of an epoch-seconds timestamp."""
    return int(ts_s // DAY_S)


@dataclass(slots=True)
class DayWindows:
    """Counts and amount sums per UTC day for one entity."""

    counts: dict[int, int] = field(default_factory=dict)
    sums: dict[int, float] = field(default_factory=dict)

    def window(self, day: int, days: int) -> tuple[int, float]:
        """(count, sum) over the ``days`` buckets ending at ``day`` inclusive."""
        n = 0
        s = 0.0
        lo = day - days
        for d, c in self.counts.items():
            if lo < d <= day:
                n += c
                s += self.sums.get(d, 0.0)
        return n, s

    def add(self, day: int, amount: float = 0.0) -> None:
        self.counts[day] = self.counts.get(day, 0) + 1
        self.sums[day] = self.sums.get(day, 0.0) + amount

    def prune(self, newest_day: int, horizon_days: int = HORIZON_DAYS) -> list[int]:
        """Drop buckets outside the horizon; return the days dropped."""
        old = [d for d in self.counts if d <= newest_day - horizon_days]
        for d in old:
            self.counts.pop(d, None)
            self.sums.pop(d, None)
        return old

    # Redis hash encoding: field b"n<day>" holds the count, b"s<day>" the sum.
    @classmethod
    def from_hash(cls, mapping: Mapping[bytes, bytes]) -> "DayWindows":
        w = cls()
        for k, v in mapping.items():
            kind = k[:1]
            day = int(k[1:])
            if kind == b"n":
                w.counts[day] = int(v)
            elif kind == b"s":
                w.sums[day] = float(v)
        return w

    @classmethod
    def from_flat(cls, flat: list[bytes]) -> "DayWindows":
        """From an HGETALL reply as a flat ``[field, value, ...]`` list (what a script returns)."""
        w = cls()
        counts = w.counts
        sums = w.sums
        it = iter(flat)
        for k, v in zip(it, it):
            if k[:1] == b"n":
                counts[int(k[1:])] = int(v)
            elif k[:1] == b"s":
                sums[int(k[1:])] = float(v)
        return w


def count_field(day: int) -> bytes:
    return b"n%d" % day


def sum_field(day: int) -> bytes:
    return b"s%d" % day

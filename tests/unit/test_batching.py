"""The adaptive micro-batcher, driven by a fake clock: sizes follow costs and arrivals."""

import pytest

from streams.batching import MicroBatcher


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def drive(b: MicroBatcher, clock: Clock, arrivals_per_s: float, overhead_s: float, per_event_s: float,
          cycles: int) -> list[int]:
    """Simulate a worker: each cycle takes what arrived (up to the plan), processing costs
    overhead + n * per_event; returns the sizes planned."""
    backlog = 0.0
    sizes = []
    for _ in range(cycles):
        plan = b.plan()
        sizes.append(plan.max_messages)
        got = int(min(backlog, plan.max_messages))
        if got < plan.max_messages:  # waited for more
            clock.t += plan.timeout_s
            backlog += arrivals_per_s * plan.timeout_s
            got = int(min(backlog, plan.max_messages))
        backlog -= got
        busy = overhead_s + per_event_s * got if got else 0.0
        clock.t += busy
        backlog += arrivals_per_s * busy
        b.observe(plan.max_messages, got, busy)
    return sizes


def test_learns_costs_and_sizes_batches_inside_the_budget() -> None:
    clock = Clock()
    b = MicroBatcher(0.025, 2000, 0.005, clock=clock)
    sizes = drive(b, clock, arrivals_per_s=2000, overhead_s=0.001, per_event_s=0.0001, cycles=200)
    assert b.per_event_s == pytest.approx(0.0001, rel=0.05)
    assert b.overhead_s == pytest.approx(0.001, rel=0.25)
    # (25 ms - 5 ms wait) / 2 - 1 ms overhead = 9 ms of work = 90 events
    assert b.budget_size() == pytest.approx(90, abs=3)
    assert not b.behind
    assert max(sizes[-50:]) <= b.budget_size()


def test_grows_batches_when_behind_and_shrinks_back_when_caught_up() -> None:
    clock = Clock()
    b = MicroBatcher(0.025, 2000, 0.005, clock=clock)
    drive(b, clock, arrivals_per_s=2000, overhead_s=0.001, per_event_s=0.0001, cycles=100)
    small = b.plan().max_messages
    # 12,000/s cannot be kept up with in 90-event batches (9,000/s at most): grow to amortise the overhead
    sizes = drive(b, clock, arrivals_per_s=12_000, overhead_s=0.004, per_event_s=0.0001, cycles=200)
    assert b.behind and max(sizes) > 4 * small
    drive(b, clock, arrivals_per_s=500, overhead_s=0.001, per_event_s=0.0001, cycles=300)
    assert not b.behind and b.plan().max_messages <= b.budget_size()


def test_wait_is_bounded_by_the_budget_and_sizes_by_the_cap() -> None:
    b = MicroBatcher(0.010, 100, 0.050)
    assert b.plan().timeout_s == pytest.approx(0.002)
    assert b.plan().max_messages == 100  # nothing known yet: take what is there
    b.observe(100, 100, 10.0)  # very slow events: the floor, never zero
    assert 1 <= b.budget_size() <= 8


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(0, 10, 0.001)

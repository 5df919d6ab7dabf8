"""The Redis online store: one pipelined read and one pipelined write per batch.

A worker reads the windows of every entity its batch touches in one round trip,
computes features event by event against that local copy (so an event sees the
earlier events of the same batch), then writes back only the increments in one
round trip. Increments use HINCRBY/HINCRBYFLOAT, which Redis applies atomically,
so entities updated by several workers at once (terminals, sender domains) never
lose an update; a worker sees the others' updates as of its batch's read.

Idempotent per event: each stream view keeps, per entity and day, a hash of the
event ids it has counted (``<view>.applied``, same hash tag, TTL ``dedup_ttl_s``).
The write counts an event only if it can mark it there (HSETNX, inside the same
Lua call as the increments), and the read fetches the markers of the batch's
events so a redelivered event is taken out of its own windows before its features
are recomputed: it never sees itself, and a redelivered batch recomputes exactly
the features of its first pass (unless other events of its entities were counted
in between, which it then sees).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable
from urllib.parse import parse_qs, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from feature_store.keys import applied_key, feature_key, watermark_key
from feature_store.views import DEFAULTED, PRESENT, STALE, VIEWS_BY_NAME, WATERMARK_OF, FeatureView
from feature_store.windows import DayWindows, count_field, sum_field

log = logging.getLogger(__name__)

#: Failures of Redis itself (not of a request): what the outage policy covers.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError,
                                                        redis.BusyLoadingError)
#: What a pipeline does while Redis is unavailable.
ON_UNAVAILABLE = ("pause", "defaults")


#: Applies one entity's batch in a single command (all its keys share one hash tag,
#: so it works on Redis Cluster too). KEYS[1] is the windows hash, KEYS[2..] the
#: entity's per-day "applied" hashes. ARGV: ttl, applied ttl, number of events E,
#: then E (applied key index, day, event id, amount) quadruples, then (field, delta)
#: pairs of anonymous increments (``n``: HINCRBY, ``s``: HINCRBYFLOAT, ``-``: HDEL).
#: An event is counted only if HSETNX marks it applied for this entity, so an event
#: processed twice (crash, rebalance, redrive, two workers at once) counts once.
_APPLY_LUA = """
local key = KEYS[1]
local ne = tonumber(ARGV[3])
local cnt = {}
local amt = {}
local days = {}
local applied = 0
local i = 4
for e = 1, ne do
  local akey = KEYS[tonumber(ARGV[i])]
  local day = ARGV[i + 1]
  if redis.call('HSETNX', akey, ARGV[i + 2], ARGV[i + 3]) == 1 then
    if cnt[day] == nil then
      cnt[day] = 0
      amt[day] = 0
      days[#days + 1] = day
    end
    cnt[day] = cnt[day] + 1
    amt[day] = amt[day] + tonumber(ARGV[i + 3])
    applied = applied + 1
  end
  i = i + 4
end
for _, day in ipairs(days) do
  redis.call('HINCRBY', key, 'n' .. day, cnt[day])
  if amt[day] ~= 0 then
    redis.call('HINCRBYFLOAT', key, 's' .. day, string.format('%.17g', amt[day]))
  end
end
for k = 2, #KEYS do
  redis.call('EXPIRE', KEYS[k], ARGV[2])
end
for j = i, #ARGV, 2 do
  local f = ARGV[j]
  local kind = string.sub(f, 1, 1)
  if kind == 'n' then redis.call('HINCRBY', key, f, ARGV[j + 1])
  elseif kind == 's' then redis.call('HINCRBYFLOAT', key, f, ARGV[j + 1])
  elseif kind == '-' then redis.call('HDEL', key, string.sub(f, 2))
  end
end
redis.call('EXPIRE', key, ARGV[1])
return applied
"""


@dataclass(slots=True)
class _Entry:
    key: bytes
    view: FeatureView
    entity_id: str
    windows: DayWindows
    #: The windows as read, minus the contributions of this batch's events that
    #: were already applied (a redelivery): what the batch starts from.
    base_counts: dict[int, int] = field(default_factory=dict)
    base_sums: dict[int, float] = field(default_factory=dict)
    #: Whether Redis held anything for the entity.
    present: bool = False
    #: This batch's events for the entity, in order: event id -> (day, amount).
    pending: dict[str, tuple[int, float]] = field(default_factory=dict)
    #: Events of this batch that Redis had already counted for the entity.
    already_applied: set[str] = field(default_factory=set)


@dataclass(slots=True)
class WindowSnapshot:
    """The windows one batch works on, and what it started from."""

    entries: dict[tuple[str, str], _Entry] = field(default_factory=dict)
    #: Label-stream watermarks (epoch seconds) read with the batch, by stream name.
    watermarks: dict[str, float | None] = field(default_factory=dict)
    #: Redis was unavailable: every view reads as its defaults and nothing is written.
    unavailable: bool = False

    def get(self, view: FeatureView, entity_id: str) -> DayWindows:
        return self.entries[(view.name, entity_id)].windows

    def get_present(self, view: FeatureView, entity_id: str) -> DayWindows | None:
        """The entity's windows, or ``None`` when Redis held nothing for it."""
        e = self.entries[(view.name, entity_id)]
        return e.windows if e.present else None

    def apply(self, view: FeatureView, entity_id: str, event_id: str, day: int, amount: float = 0.0) -> bool:
        """Count an event into the entity's windows (locally now, in Redis at ``write``).

        Returns False (and changes nothing) if the event is already counted in this batch.
        """
        e = self.entries[(view.name, entity_id)]
        if event_id in e.pending:
            return False
        e.pending[event_id] = (day, float(amount) if view.sums else 0.0)
        e.windows.add(day, amount)
        return True

    def status(self, view: FeatureView, entity_id: str, event_ts_s: float) -> str:
        """``present``, ``defaulted`` (the store knew nothing; the fields' defaults were
        used) or ``stale`` (the view's writer lags the event by more than its freshness)."""
        e = self.entries[(view.name, entity_id)]
        if self.unavailable:
            return DEFAULTED
        if view.freshness_s is not None:
            wm = self.watermarks.get(WATERMARK_OF.get(view.name, view.name))
            if wm is None:
                return DEFAULTED
            if not e.present and view.absent_is_default:
                return DEFAULTED
            if event_ts_s - wm > view.freshness_s:
                return STALE
            return PRESENT
        if not e.present and view.absent_is_default:
            return DEFAULTED
        return PRESENT

    def field_status(self, view: FeatureView, entity_id: str, event_ts_s: float) -> dict[str, str]:
        st = self.status(view, entity_id, event_ts_s)
        return {f: st for f in view.field_names}


def connect(url: str, timeout_s: float = 0.5) -> "redis.Redis | redis.RedisCluster":
    """A client with bounded timeouts and retries; ``?cluster=1`` or a
    ``redis+cluster://`` URL gives a Redis Cluster client."""
    parts = urlsplit(url)
    cluster = parts.scheme.endswith("+cluster") or parse_qs(parts.query).get("cluster", ["0"])[0] in {"1", "true"}
    if parts.scheme.endswith("+cluster"):
        url = url.replace("+cluster", "", 1)
    if cluster:
        url = url.split("?", 1)[0]
        return redis.RedisCluster.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(ExponentialBackoff(cap=0.1, base=0.02), 1),
        )
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(ExponentialBackoff(cap=0.1, base=0.02), 1),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        health_check_interval=30,
    )


class FeatureStore:
    """Window reads and writes for one namespace (``prod``, a replay's, a test's)."""

    def __init__(self, client: "redis.Redis | redis.RedisCluster", namespace: str, *,
                 on_unavailable: str = "pause", retry_after_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``on_unavailable``: ``pause`` lets Redis errors propagate (the worker retries
        the batch and commits nothing meanwhile); ``defaults`` answers reads with
        default features (``WindowSnapshot.unavailable``), skips writes, and does not
        touch Redis again for ``retry_after_s`` (so a frozen Redis costs one timeout
        per interval, not one per batch)."""
        if on_unavailable not in ON_UNAVAILABLE:
            raise ValueError(f"on_unavailable must be one of {ON_UNAVAILABLE}, got {on_unavailable!r}")
        self.client = client
        self.namespace = namespace
        self.on_unavailable = on_unavailable
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._down_until = float("-inf")
        #: Batches answered with defaults because Redis was unavailable.
        self.degraded_batches = 0
        #: Redis round trips made, for benchmarks and tests.
        self.round_trips = 0
        #: Event-entity pairs newly counted by the last write (replays excluded).
        self.last_applied = 0
        self._apply_sha: str | None = None

    def read(self, wanted: Iterable[tuple[FeatureView, str]],
             events: Iterable[tuple[FeatureView, str, str, int]] = ()) -> WindowSnapshot:
        """See ``_read``; under the ``defaults`` policy an unavailable Redis gives a
        snapshot of defaults instead of an error."""
        if self.on_unavailable == "pause":
            return self._read(wanted, events)
        wanted = list(wanted)
        if self._clock() < self._down_until:
            return self._defaults(wanted)
        try:
            return self._read(wanted, events)
        except UNAVAILABLE_ERRORS as exc:
            self._down_until = self._clock() + self.retry_after_s
            log.warning("feature store unavailable (%s): deciding with default features for %.0fs",
                        exc, self.retry_after_s)
            return self._defaults(wanted)

    def _defaults(self, wanted: list[tuple[FeatureView, str]]) -> WindowSnapshot:
        snap = WindowSnapshot(unavailable=True)
        for view, entity_id in wanted:
            snap.entries.setdefault((view.name, entity_id),
                                    _Entry(feature_key(self.namespace, view.name, entity_id), view, entity_id,
                                           DayWindows()))
        self.degraded_batches += 1
        return snap

    def _read(self, wanted: Iterable[tuple[FeatureView, str]],
              events: Iterable[tuple[FeatureView, str, str, int]] = ()) -> WindowSnapshot:
        """One pipelined round trip: every wanted entity's windows, the "applied"
        markers of ``events`` (view, entity, event id, day) and the label watermarks
        of the views that have a freshness. Events Redis already counted for an
        entity (a redelivery) are taken back out of its local windows, so the batch
        recomputes their features from the state before them and counts them once."""
        snap = WindowSnapshot()
        order: list[tuple[str, str]] = []
        pipe = self.client.pipeline(transaction=False)
        for view, entity_id in wanted:
            ident = (view.name, entity_id)
            if ident in snap.entries:
                continue
            key = feature_key(self.namespace, view.name, entity_id)
            snap.entries[ident] = _Entry(key, view, entity_id, DayWindows())
            order.append(ident)
            pipe.hgetall(key)
        marks: dict[tuple[str, str, int], list[str]] = {}
        for view, entity_id, event_id, day in events:
            ids = marks.setdefault((view.name, entity_id, day), [])
            if event_id not in ids:
                ids.append(event_id)
        mark_order = list(marks)
        for vname, entity_id, day in mark_order:
            pipe.hmget(applied_key(self.namespace, vname, entity_id, day), marks[(vname, entity_id, day)])
        streams = sorted({WATERMARK_OF.get(v, v) for v, _ in order if VIEWS_BY_NAME.get(v) is not None
                          and VIEWS_BY_NAME[v].freshness_s is not None})
        for stream in streams:
            pipe.get(watermark_key(self.namespace, stream))
        if not order:
            return snap
        results = pipe.execute()
        self.round_trips += 1
        for ident, mapping in zip(order, results):
            entry = snap.entries[ident]
            entry.windows = DayWindows.from_hash(mapping)
            entry.present = bool(mapping)
        for (vname, entity_id, day), got in zip(mark_order, results[len(order):]):
            entry = snap.entries[(vname, entity_id)]
            w = entry.windows
            for event_id, contrib in zip(marks[(vname, entity_id, day)], got):
                if contrib is None:
                    continue
                entry.already_applied.add(event_id)
                n = w.counts.get(day, 0) - 1
                if n > 0:
                    w.counts[day] = n
                    w.sums[day] = w.sums.get(day, 0.0) - float(contrib)
                else:
                    w.counts.pop(day, None)
                    w.sums.pop(day, None)
        for stream, wm in zip(streams, results[len(order) + len(mark_order):]):
            snap.watermarks[stream] = float(wm) if wm is not None else None
        for entry in snap.entries.values():
            entry.base_counts = dict(entry.windows.counts)
            entry.base_sums = dict(entry.windows.sums)
        return snap

    def _calls(self, snap: WindowSnapshot) -> list[tuple[list[bytes], list[bytes | int | float | str]]]:
        calls = []
        for entry in snap.entries.values():
            view = entry.view
            w = entry.windows
            # Per-event increments (counted once, by HSETNX on the applied marker).
            ev_counts: dict[int, int] = {}
            ev_sums: dict[int, float] = {}
            keys: list[bytes] = [entry.key]
            key_index: dict[int, int] = {}
            ev_args: list[bytes | int | float | str] = []
            for event_id, (day, amount) in entry.pending.items():
                ev_counts[day] = ev_counts.get(day, 0) + 1
                ev_sums[day] = ev_sums.get(day, 0.0) + amount
                ki = key_index.get(day)
                if ki is None:
                    keys.append(applied_key(self.namespace, view.name, entry.entity_id, day))
                    ki = key_index[day] = len(keys)
                ev_args += [ki, day, event_id, repr(amount)]
            # Anything else changed in the local windows (callers that add without an
            # event id): plain increments, not de-duplicated.
            anon: list[bytes | int | float | str] = []
            for day, n in w.counts.items():
                dn = n - entry.base_counts.get(day, 0) - ev_counts.get(day, 0)
                if dn:
                    anon += [count_field(day), dn]
                    if view.sums:
                        ds = w.sums.get(day, 0.0) - entry.base_sums.get(day, 0.0) - ev_sums.get(day, 0.0)
                        anon += [sum_field(day), repr(ds)]
            if not ev_args and not anon:
                continue
            if w.counts:
                newest = max(w.counts)
                for d in entry.base_counts:
                    if d <= newest - view.horizon_days:
                        anon += [b"-" + count_field(d), 0]
                        if view.sums:
                            anon += [b"-" + sum_field(d), 0]
            calls.append((keys, [view.ttl_s, view.dedup_ttl_s, len(entry.pending), *ev_args, *anon]))
        return calls

    def write(self, snap: WindowSnapshot) -> int:
        """Write the batch in one round trip; returns the number of entities written.

        Idempotent per event: an event already counted for an entity is not counted
        again, whoever counted it (this worker before a crash, another worker).
        Under the ``defaults`` policy a batch decided without Redis, or a write that
        finds Redis gone, is not counted in the windows (logged)."""
        if snap.unavailable:
            return 0
        if self.on_unavailable == "pause":
            return self._write(snap)
        try:
            return self._write(snap)
        except UNAVAILABLE_ERRORS as exc:
            self._down_until = self._clock() + self.retry_after_s
            log.warning("feature store unavailable on write (%s): this batch is not counted in the windows", exc)
            return 0

    def _write(self, snap: WindowSnapshot) -> int:
        calls = self._calls(snap)
        if not calls:
            return 0
        if self._apply_sha is None:
            self._apply_sha = self.client.script_load(_APPLY_LUA)
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(self._apply_sha, len(keys), *keys, *args)
            try:
                results = pipe.execute()
                self.round_trips += 1
                self.last_applied = int(sum(int(r) for r in results))
                return len(calls)
            except NoScriptError:
                # Redis restarted and lost its script cache; every call of this
                # pipeline failed alike, so loading the script and redoing it is safe
                # (and would be even if some had run: each event counts once).
                if attempt == 2:
                    raise
                self._apply_sha = self.client.script_load(_APPLY_LUA)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.client.close()

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
from typing import Any, Callable, Iterable
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


#: Reads a group of entities in one command: KEYS are E windows hashes, then M
#: "applied" hashes, then watermark keys; ARGV: E, M, then per applied hash its
#: number of event ids and the ids. Returns E flat HGETALL replies, M HMGET replies
#: and the watermarks, in KEYS order. One command instead of one per key: the
#: client's per-command cost, not Redis, dominated the pipelined version.
_READ_LUA = """
local e = tonumber(ARGV[1])
local m = tonumber(ARGV[2])
local out = {}
for i = 1, e do out[i] = redis.call('HGETALL', KEYS[i]) end
local a = 3
for j = 1, m do
  local c = tonumber(ARGV[a])
  out[e + j] = redis.call('HMGET', KEYS[e + j], unpack(ARGV, a + 1, a + c))
  a = a + c + 1
end
for k = e + m + 1, #KEYS do out[k] = redis.call('GET', KEYS[k]) end
return out
"""

#: Applies a group of entities' batch in one command. Per entity, KEYS holds its
#: windows hash and then its per-day "applied" hashes (all under the entity's hash
#: tag, so a group of one entity works on Redis Cluster too); ARGV holds, per entity:
#: its number of keys, ttl, applied ttl, number of events E, number of anonymous
#: increments A, then E (applied key index within the entity, day, event id, amount)
#: quadruples, then A (field, delta) pairs (``n``: HINCRBY, ``s``: HINCRBYFLOAT,
#: ``-``: HDEL). An event is counted only if HSETNX marks it applied for this entity,
#: so an event processed twice (crash, rebalance, redrive, two workers at once)
#: counts once. Returns the number of event-entity pairs newly counted.
_APPLY_LUA = """
local applied = 0
local kb = 0
local i = 1
while i <= #ARGV do
  local nk = tonumber(ARGV[i])
  local ttl = ARGV[i + 1]
  local attl = ARGV[i + 2]
  local ne = tonumber(ARGV[i + 3])
  local na = tonumber(ARGV[i + 4])
  i = i + 5
  local key = KEYS[kb + 1]
  local cnt = {}
  local amt = {}
  local days = {}
  for e = 1, ne do
    local akey = KEYS[kb + tonumber(ARGV[i])]
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
  for k = kb + 2, kb + nk do
    redis.call('EXPIRE', KEYS[k], attl)
  end
  for j = 1, na do
    local f = ARGV[i]
    local kind = string.sub(f, 1, 1)
    if kind == 'n' then redis.call('HINCRBY', key, f, ARGV[i + 1])
    elseif kind == 's' then redis.call('HINCRBYFLOAT', key, f, ARGV[i + 1])
    elseif kind == '-' then redis.call('HDEL', key, string.sub(f, 2))
    end
    i = i + 2
  end
  redis.call('EXPIRE', key, ttl)
  kb = kb + nk
end
return applied
"""

#: Most entities one script call handles: bounds how long one call holds Redis
#: (a script blocks every other client while it runs).
GROUP_ENTITIES = 256


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
    base_total: int = 0
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
        self._shas: dict[str, str] = {}
        self._cluster = isinstance(client, redis.RedisCluster)

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

    def _groups(self, idents: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
        """Entities per script call: chunks of ``GROUP_ENTITIES``, or one entity per
        call on Redis Cluster (a script's keys must share a slot; an entity's do)."""
        if self._cluster:
            return [[i] for i in idents]
        return [idents[lo:lo + GROUP_ENTITIES] for lo in range(0, len(idents), GROUP_ENTITIES)]

    def _run_script(self, lua: str, calls: list[tuple[list[bytes], list[Any]]]) -> list[Any]:
        """Every call of one script in one pipelined round trip (reloading the script
        once if Redis lost its cache: reads are pure and writes count each event once,
        so redoing the pipeline is safe)."""
        for attempt in (1, 2):
            sha = self._shas.get(lua)
            if sha is None:
                sha = self._shas[lua] = self.client.script_load(lua)
            pipe = self.client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(sha, len(keys), *keys, *args)
            try:
                results = pipe.execute()
                self.round_trips += 1
                return results
            except NoScriptError:
                if attempt == 2:
                    raise
                self._shas.pop(lua, None)
        raise AssertionError("unreachable")

    def _read(self, wanted: Iterable[tuple[FeatureView, str]],
              events: Iterable[tuple[FeatureView, str, str, int]] = ()) -> WindowSnapshot:
        """One round trip: every wanted entity's windows, the "applied" markers of
        ``events`` (view, entity, event id, day) and the label watermarks of the views
        that have a freshness, read by one script call per group of entities. Events
        Redis already counted for an entity (a redelivery) are taken back out of its
        local windows, so the batch recomputes their features from the state before
        them and counts them once."""
        snap = WindowSnapshot()
        order: list[tuple[str, str]] = []
        for view, entity_id in wanted:
            ident = (view.name, entity_id)
            if ident in snap.entries:
                continue
            snap.entries[ident] = _Entry(feature_key(self.namespace, view.name, entity_id), view, entity_id,
                                         DayWindows())
            order.append(ident)
        if not order:
            return snap
        # Ordered sets (dicts): a shared entity (a mail domain) can have hundreds of a
        # batch's events on one day, and a list's membership test made that quadratic.
        marks: dict[tuple[str, str], dict[int, dict[str, None]]] = {}
        for view, entity_id, event_id, day in events:
            marks.setdefault((view.name, entity_id), {}).setdefault(day, {})[event_id] = None
        streams = sorted({WATERMARK_OF.get(v, v) for v, _ in order if VIEWS_BY_NAME.get(v) is not None
                          and VIEWS_BY_NAME[v].freshness_s is not None})
        calls: list[tuple[list[bytes], list[Any]]] = []
        layout: list[tuple[list[tuple[str, str]], list[tuple[tuple[str, str], int, list[str]]]]] = []
        for group in self._groups(order):
            keys = [snap.entries[ident].key for ident in group]
            mkeys: list[bytes] = []
            margs: list[Any] = []
            mref: list[tuple[tuple[str, str], int, list[str]]] = []
            for ident in group:
                for day, id_set in marks.get(ident, {}).items():
                    ids = list(id_set)
                    mkeys.append(applied_key(self.namespace, ident[0], ident[1], day))
                    margs += [len(ids), *ids]
                    mref.append((ident, day, ids))
            calls.append((keys + mkeys, [len(keys), len(mkeys), *margs]))
            layout.append((group, mref))
        wm_groups = [[s] for s in streams] if self._cluster else ([streams] if streams else [])
        for names in wm_groups:
            calls.append(([watermark_key(self.namespace, s) for s in names], [0, 0]))
        results = self._run_script(_READ_LUA, calls)
        for (group, mref), res in zip(layout, results):
            for ident, flat in zip(group, res):
                entry = snap.entries[ident]
                entry.windows = DayWindows.from_flat(flat)
                entry.present = bool(flat)
            for (ident, day, ids), got in zip(mref, res[len(group):]):
                entry = snap.entries[ident]
                w = entry.windows
                for event_id, contrib in zip(ids, got):
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
        for names, res in zip(wm_groups, results[len(layout):]):
            for stream, wm in zip(names, res):
                snap.watermarks[stream] = float(wm) if wm is not None else None
        for entry in snap.entries.values():
            entry.base_counts = dict(entry.windows.counts)
            entry.base_sums = dict(entry.windows.sums)
            entry.base_total = sum(entry.base_counts.values())
        return snap

    def _segments(self, snap: WindowSnapshot) -> list[tuple[list[bytes], list[Any]]]:
        """Per entity with something to write: its keys and its part of ``_APPLY_LUA``'s ARGV."""
        segments = []
        for entry in snap.entries.values():
            view = entry.view
            w = entry.windows
            # Per-event increments (counted once, by HSETNX on the applied marker).
            ev_counts: dict[int, int] = {}
            ev_sums: dict[int, float] = {}
            keys: list[bytes] = [entry.key]
            key_index: dict[int, int] = {}
            ev_args: list[Any] = []
            for event_id, (day, amount) in entry.pending.items():
                ev_counts[day] = ev_counts.get(day, 0) + 1
                ev_sums[day] = ev_sums.get(day, 0.0) + amount
                ki = key_index.get(day)
                if ki is None:
                    keys.append(applied_key(self.namespace, view.name, entry.entity_id, day))
                    ki = key_index[day] = len(keys)
                ev_args += [ki, day, event_id, repr(amount)]
            # Anything else changed in the local windows (callers that add without an
            # event id): plain increments, not de-duplicated. ``add`` only ever raises
            # a count, so equal totals mean there is nothing to look for.
            anon: list[Any] = []
            anon_changed = sum(w.counts.values()) != entry.base_total + len(entry.pending)
            for day, n in (w.counts.items() if anon_changed else ()):
                dn = n - entry.base_counts.get(day, 0) - ev_counts.get(day, 0)
                if dn:
                    anon += [count_field(day), dn]
                    if view.sums:
                        ds = w.sums.get(day, 0.0) - entry.base_sums.get(day, 0.0) - ev_sums.get(day, 0.0)
                        anon += [sum_field(day), repr(ds)]
            if not ev_args and not anon:
                continue
            if w.counts and entry.base_counts and min(entry.base_counts) <= max(w.counts) - view.horizon_days:
                newest = max(w.counts)
                for d in entry.base_counts:
                    if d <= newest - view.horizon_days:
                        anon += [b"-" + count_field(d), 0]
                        if view.sums:
                            anon += [b"-" + sum_field(d), 0]
            segments.append((keys, [len(keys), view.ttl_s, view.dedup_ttl_s, len(entry.pending), len(anon) // 2,
                                    *ev_args, *anon]))
        return segments

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
        segments = self._segments(snap)
        if not segments:
            return 0
        step = 1 if self._cluster else GROUP_ENTITIES
        calls = []
        for lo in range(0, len(segments), step):
            keys: list[bytes] = []
            args: list[Any] = []
            for k, a in segments[lo:lo + step]:
                keys += k
                args += a
            calls.append((keys, args))
        results = self._run_script(_APPLY_LUA, calls)
        self.last_applied = int(sum(int(r) for r in results))
        return len(segments)

    def close(self) -> None:
        self.client.close()

"""The Redis online store: one pipelined read and one pipelined write per batch.

A worker reads the windows of every entity its batch touches in one round trip,
computes features event by event against that local copy (so an event sees the
earlier events of the same batch), then writes back only the increments in one
round trip. Increments use HINCRBY/HINCRBYFLOAT, which Redis applies atomically,
so entities updated by several workers at once (terminals, sender domains) never
lose an update; a worker sees the others' updates as of its batch's read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable
from urllib.parse import parse_qs, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from feature_store.keys import feature_key
from feature_store.views import FeatureView
from feature_store.windows import HORIZON_DAYS, DayWindows, count_field, sum_field


#: Applies one key's increments, prunes its stale days and refreshes its TTL in a
#: single command (one key per call, so it works on Redis Cluster too). ARGV:
#: ttl, then (field, delta) pairs; an ``n`` field is a count (HINCRBY), an ``s``
#: field a sum (HINCRBYFLOAT), and a ``-`` prefix deletes that field.
_APPLY_LUA = """
local key = KEYS[1]
for i = 2, #ARGV, 2 do
  local f = ARGV[i]
  local kind = string.sub(f, 1, 1)
  if kind == 'n' then redis.call('HINCRBY', key, f, ARGV[i + 1])
  elseif kind == 's' then redis.call('HINCRBYFLOAT', key, f, ARGV[i + 1])
  elseif kind == '-' then redis.call('HDEL', key, string.sub(f, 2))
  end
end
redis.call('EXPIRE', key, ARGV[1])
return 1
"""


@dataclass(slots=True)
class _Entry:
    key: bytes
    view: FeatureView
    windows: DayWindows
    initial_counts: dict[int, int]
    initial_sums: dict[int, float]


@dataclass(slots=True)
class WindowSnapshot:
    """The windows one batch works on, and what it started from."""

    entries: dict[tuple[str, str], _Entry] = field(default_factory=dict)

    def get(self, view: FeatureView, entity_id: str) -> DayWindows:
        return self.entries[(view.name, entity_id)].windows


def connect(url: str, timeout_s: float = 2.0) -> "redis.Redis | redis.RedisCluster":
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
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        )
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        health_check_interval=30,
    )


class FeatureStore:
    """Window reads and writes for one namespace (``prod``, a replay's, a test's)."""

    def __init__(self, client: "redis.Redis | redis.RedisCluster", namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        #: Redis round trips made, for benchmarks and tests.
        self.round_trips = 0
        self._apply_sha: str | None = None

    def read(self, wanted: Iterable[tuple[FeatureView, str]]) -> WindowSnapshot:
        snap = WindowSnapshot()
        order: list[tuple[str, str]] = []
        pipe = self.client.pipeline(transaction=False)
        for view, entity_id in wanted:
            ident = (view.name, entity_id)
            if ident in snap.entries:
                continue
            key = feature_key(self.namespace, view.name, entity_id)
            snap.entries[ident] = _Entry(key, view, DayWindows(), {}, {})
            order.append(ident)
            pipe.hgetall(key)
        if not order:
            return snap
        results = pipe.execute()
        self.round_trips += 1
        for ident, mapping in zip(order, results):
            entry = snap.entries[ident]
            w = DayWindows.from_hash(mapping)
            entry.windows = w
            entry.initial_counts = dict(w.counts)
            entry.initial_sums = dict(w.sums)
        return snap

    def write(self, snap: WindowSnapshot) -> int:
        """Write the batch's increments in one round trip; returns the number of keys changed."""
        calls: list[tuple[bytes, list[bytes | int | float]]] = []
        for entry in snap.entries.values():
            w = entry.windows
            args: list[bytes | int | float] = [entry.view.ttl_s]
            for day, n in w.counts.items():
                dn = n - entry.initial_counts.get(day, 0)
                if dn:
                    args += [count_field(day), dn]
                    if entry.view.sums:
                        args += [sum_field(day), repr(w.sums.get(day, 0.0) - entry.initial_sums.get(day, 0.0))]
            if len(args) == 1:
                continue
            newest = max(w.counts)
            for d in entry.initial_counts:
                if d <= newest - HORIZON_DAYS:
                    args += [b"-" + count_field(d), 0]
                    if entry.view.sums:
                        args += [b"-" + sum_field(d), 0]
            calls.append((entry.key, args))
        if not calls:
            return 0
        if self._apply_sha is None:
            self._apply_sha = self.client.script_load(_APPLY_LUA)
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for key, args in calls:
                pipe.evalsha(self._apply_sha, 1, key, *args)
            try:
                pipe.execute()
                self.round_trips += 1
                return len(calls)
            except NoScriptError:
                # Redis restarted and lost its script cache; every call of this
                # pipeline failed alike, so loading the script and redoing it is safe.
                if attempt == 2:
                    raise
                self._apply_sha = self.client.script_load(_APPLY_LUA)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.client.close()

"""Label feedback: parsing label records and materialising label buckets into Redis.

Shared by the faust label app (``feature_store.labels_app``), the backfill tool and
tests, so what the app writes is defined in one place.

- ``fraud.labels`` (key ``card_id``): ``{"event_id", "card_id", "terminal_id",
  "is_fraud", "event_ts", "label_ts"}`` -> per terminal and *transaction* day:
  labelled transactions (``n<day>``) and fraudulent ones (``s<day>``) in the
  ``terminal_risk`` view.
- ``spam.feedback`` (key: sender): ``{"event_id", "sender", "label": "spam"|"ham",
  "ts"}`` -> per sender and per sender domain, per day of the report: reports
  (``n<day>``) and spam reports (``s<day>``) in ``sender_reports`` / ``domain_reports``.

A bucket is the set of labelled event ids of one entity and day with their label
(``{event_id: 0|1}``), so a label delivered twice counts once and a corrected label
replaces the old one. Redis receives the bucket's absolute values (HSET, not
increments), so materialising the same bucket twice is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import orjson
from redis.exceptions import NoScriptError

from feature_store.keys import feature_key, watermark_key
from feature_store.spam import NO_DOMAIN
from feature_store.views import DOMAIN_REPORTS, SENDER_REPORTS, TERMINAL_RISK, FeatureView
from feature_store.windows import day_of
from streams.events import parse_ts

FRAUD_STREAM = "fraud_labels"
SPAM_STREAM = "spam_feedback"

#: Sets absolute bucket values, prunes buckets past the horizon, refreshes the TTL.
#: KEYS[1] the view hash; ARGV: ttl, horizon days, then (day, n, s) triples.
_SET_LUA = """
local key = KEYS[1]
local newest = nil
for i = 3, #ARGV, 3 do
  redis.call('HSET', key, 'n' .. ARGV[i], ARGV[i + 1], 's' .. ARGV[i], ARGV[i + 2])
  local d = tonumber(ARGV[i])
  if newest == nil or d > newest then newest = d end
end
local all = redis.call('HKEYS', key)
for _, f in ipairs(all) do
  local d = tonumber(string.sub(f, 2))
  if d ~= nil and newest ~= nil and d <= newest - tonumber(ARGV[2]) then redis.call('HDEL', key, f) end
end
redis.call('EXPIRE', key, ARGV[1])
return 1
"""

#: Raises a watermark, never lowers it (several app instances, out-of-order labels).
_MAX_LUA = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""


class LabelError(ValueError):
    """A label record that cannot be used."""


@dataclass(frozen=True, slots=True)
class Label:
    """One label for one bucket: view, entity, day, event id, 0/1, and when it arrived."""

    view: FeatureView
    entity_id: str
    day: int
    event_id: str
    positive: int
    label_ts_s: float


def _str(obj: Mapping[str, Any], name: str) -> str:
    v = obj.get(name)
    if not isinstance(v, str) or not v or len(v) > 512:
        raise LabelError(f"label needs a non-empty string {name!r}")
    return v


def _obj(value: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise LabelError(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise LabelError("label must be a JSON object")
    return obj


def fraud_label(value: bytes | str | Mapping[str, Any]) -> Label:
    obj = _obj(value)
    flag = obj.get("is_fraud")
    if not isinstance(flag, (bool, int)) or flag not in (0, 1):
        raise LabelError("is_fraud must be a boolean")
    try:
        tx_ts = parse_ts(obj.get("event_ts"))
        label_ts = parse_ts(obj.get("label_ts")) if obj.get("label_ts") is not None else tx_ts
    except ValueError as exc:
        raise LabelError(str(exc)) from None
    return Label(TERMINAL_RISK, _str(obj, "terminal_id"), day_of(tx_ts), _str(obj, "event_id"), int(bool(flag)),
                 label_ts)


def spam_labels(value: bytes | str | Mapping[str, Any]) -> tuple[Label, Label]:
    """The sender's and the sender domain's label of one user report."""
    obj = _obj(value)
    label = obj.get("label")
    if label not in ("spam", "ham"):
        raise LabelError("label must be 'spam' or 'ham'")
    try:
        ts = parse_ts(obj.get("ts"))
    except ValueError as exc:
        raise LabelError(str(exc)) from None
    addr = _str(obj, "sender").strip().lower()
    domain = (addr.rsplit("@", 1)[1] if "@" in addr else "").strip(". >") or NO_DOMAIN
    eid = _str(obj, "event_id")
    pos = int(label == "spam")
    return (Label(SENDER_REPORTS, addr, day_of(ts), eid, pos, ts), Label(DOMAIN_REPORTS, domain, day_of(ts), eid, pos, ts))


def bucket_key(label: Label) -> str:
    """The label table's key: view, entity and day (the table is windowed by day)."""
    return f"{label.view.name}|{label.day}|{label.entity_id}"


def apply_to_bucket(bucket: Mapping[str, int] | None, label: Label) -> tuple[dict[str, int], bool]:
    """The bucket with the label in it, and whether it changed (False for a repeat)."""
    b = dict(bucket or {})
    if b.get(label.event_id) == label.positive:
        return b, False
    b[label.event_id] = label.positive
    return b, True


class LabelSink:
    """Writes buckets' absolute values and label watermarks into one namespace."""

    def __init__(self, client: Any, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        # Plain EVALSHA in the pipeline: redis-py's Script objects would add a
        # SCRIPT EXISTS round trip to every pipeline they join.
        self._set_sha: str | None = None
        self._max_sha: str | None = None
        self.round_trips = 0

    def write(self, buckets: Iterable[tuple[Label, Mapping[str, int]]], watermarks: Mapping[str, float]) -> None:
        """One pipelined round trip for any number of buckets (grouped per entity key)."""
        per_key: dict[bytes, tuple[FeatureView, dict[int, tuple[int, int]]]] = {}
        for label, bucket in buckets:
            key = feature_key(self.namespace, label.view.name, label.entity_id)
            per_key.setdefault(key, (label.view, {}))[1][label.day] = (len(bucket), sum(bucket.values()))
        if not (per_key or watermarks):
            return
        for attempt in (1, 2):
            if self._set_sha is None or self._max_sha is None:
                self._set_sha = self.client.script_load(_SET_LUA)
                self._max_sha = self.client.script_load(_MAX_LUA)
            pipe = self.client.pipeline(transaction=False)
            for key, (view, days) in per_key.items():
                args: list[Any] = [view.ttl_s, view.horizon_days]
                for d, (n, s) in sorted(days.items()):
                    args += [d, n, s]
                pipe.evalsha(self._set_sha, 1, key, *args)
            for stream, ts in watermarks.items():
                pipe.evalsha(self._max_sha, 1, watermark_key(self.namespace, stream), repr(float(ts)))
            try:
                pipe.execute()
                self.round_trips += 1
                return
            except NoScriptError:
                # Redis lost its script cache (a restart); values are absolute, so redoing is safe.
                if attempt == 2:
                    raise
                self._set_sha = self._max_sha = None


def materialise(client: Any, namespace: str, fraud: Iterable[Mapping[str, Any]] = (),
                spam: Iterable[Mapping[str, Any]] = ()) -> dict[str, int]:
    """Compute every bucket from label records in memory and write them (tests, backfill).

    Gives exactly what the label app materialises from the same records."""
    tables: dict[str, tuple[Label, dict[str, int]]] = {}
    wm: dict[str, float] = {}
    n = 0
    for rec in fraud:
        lab = fraud_label(rec)
        k = bucket_key(lab)
        tables[k] = (lab, apply_to_bucket(tables.get(k, (lab, {}))[1], lab)[0])
        wm[FRAUD_STREAM] = max(wm.get(FRAUD_STREAM, -1.0), lab.label_ts_s)
        n += 1
    for rec in spam:
        for lab in spam_labels(rec):
            k = bucket_key(lab)
            tables[k] = (lab, apply_to_bucket(tables.get(k, (lab, {}))[1], lab)[0])
            wm[SPAM_STREAM] = max(wm.get(SPAM_STREAM, -1.0), lab.label_ts_s)
        n += 1
    sink = LabelSink(client, namespace)
    items = list(tables.values())
    for lo in range(0, max(len(items), 1), 5000):
        sink.write(items[lo:lo + 5000], wm if lo == 0 else {})
    return {"records": n, "buckets": len(items)}

"""Decoding and validation of input events (schemas in DESIGN.md).

Every check that can reject a record lives here, so the worker's hot loop is a
single call per record that either returns a typed event or raises a
``RecordError`` whose message says exactly what was wrong. Sizes are bounded
before parsing, numbers must be finite, and unknown fields are kept in ``raw``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from streams.errors import DecodeError, OversizeError, ValidationError

MAX_TRANSACTION_BYTES = 16 * 1024
#: Below Kafka's default message.max.bytes (1,000,000), so an oversize record still fits the DLQ.
MAX_EMAIL_BYTES = 512 * 1024
MAX_ID_CHARS = 256
MAX_RECIPIENTS = 100
MAX_LIST_ITEMS = 1000
MAX_HEADERS = 200
#: Timestamps outside [1970, 2200) are rejected rather than silently clamped.
MAX_TS_S = 7_258_118_400.0


@dataclass(slots=True)
class Transaction:
    event_id: str
    ts_s: float
    card_id: str
    terminal_id: str
    amount: float
    raw: dict[str, Any]


@dataclass(slots=True)
class Email:
    event_id: str
    ts_s: float
    sender: str
    recipients: list[str]
    subject: str
    body: str
    headers: dict[str, str]
    urls: list[str]
    attachments: list[dict[str, Any]]
    raw: dict[str, Any]


def parse_ts(value: Any) -> float:
    """Epoch seconds from RFC 3339 text or epoch milliseconds (int or float)."""
    if isinstance(value, bool):
        raise ValidationError("ts must be RFC 3339 text or epoch milliseconds, got a boolean")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValidationError("ts must be finite")
        ts = value / 1000.0
    elif isinstance(value, str):
        if len(value) > 64:
            raise ValidationError("ts text is longer than 64 characters")
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError(f"ts is not RFC 3339: {value[:64]!r}") from None
        if dt.tzinfo is None:
            raise ValidationError(f"ts has no UTC offset: {value[:64]!r}")
        ts = dt.timestamp()
    else:
        raise ValidationError(f"ts must be RFC 3339 text or epoch milliseconds, got {type(value).__name__}")
    if not 0.0 <= ts < MAX_TS_S:
        raise ValidationError(f"ts out of range: {value!r}")
    return ts


def format_ts(ts_s: float) -> str:
    """RFC 3339 UTC text with milliseconds, the form decisions carry."""
    whole = int(ts_s)
    ms = int(round((ts_s - whole) * 1000))
    if ms == 1000:
        whole, ms = whole + 1, 0
    # time.gmtime, not datetime.strftime: this runs twice per decision.
    t = time.gmtime(whole)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, ms)


def _load_object(value: bytes | None, limit: int) -> dict[str, Any]:
    if value is None:
        raise DecodeError("record has no value (tombstone)")
    if len(value) > limit:
        raise OversizeError(f"record is {len(value)} bytes; the limit is {limit}")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValidationError(f"event must be a JSON object, got {type(obj).__name__}")
    return obj


def _required_str(obj: dict[str, Any], name: str, limit: int = MAX_ID_CHARS) -> str:
    v = obj.get(name)
    if v is None:
        raise ValidationError(f"missing required field {name!r}")
    if not isinstance(v, str):
        raise ValidationError(f"{name} must be a string, got {type(v).__name__}")
    if not v:
        raise ValidationError(f"{name} must not be empty")
    if len(v) > limit:
        raise ValidationError(f"{name} is longer than {limit} characters")
    return v


def _optional_str(obj: dict[str, Any], name: str, limit: int) -> str:
    v = obj.get(name)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise ValidationError(f"{name} must be a string, got {type(v).__name__}")
    if len(v) > limit:
        raise ValidationError(f"{name} is longer than {limit} characters")
    return v


def _finite_number(obj: dict[str, Any], name: str) -> float:
    v = obj.get(name)
    if v is None:
        raise ValidationError(f"missing required field {name!r}")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValidationError(f"{name} must be a number, got {type(v).__name__}")
    f = float(v)
    if not math.isfinite(f):
        raise ValidationError(f"{name} must be finite")
    return f


def _required_ts(obj: dict[str, Any]) -> float:
    if obj.get("ts") is None:
        raise ValidationError("missing required field 'ts'")
    return parse_ts(obj["ts"])


def decode_transaction(value: bytes | None, max_bytes: int = MAX_TRANSACTION_BYTES) -> Transaction:
    """Parse and validate one transaction event."""
    obj = _load_object(value, max_bytes)
    event_id = _required_str(obj, "event_id")
    ts_s = _required_ts(obj)
    card_id = _required_str(obj, "card_id")
    terminal_id = _required_str(obj, "terminal_id")
    amount = _finite_number(obj, "amount")
    if amount < 0:
        raise ValidationError("amount must be >= 0")
    return Transaction(event_id, ts_s, card_id, terminal_id, amount, obj)


def _str_list(obj: dict[str, Any], name: str, limit: int, item_chars: int) -> list[str]:
    v = obj.get(name)
    if v is None:
        return []
    if not isinstance(v, list):
        raise ValidationError(f"{name} must be a list, got {type(v).__name__}")
    if len(v) > limit:
        raise ValidationError(f"{name} has more than {limit} items")
    for item in v:
        if not isinstance(item, str):
            raise ValidationError(f"{name} items must be strings, got {type(item).__name__}")
        if len(item) > item_chars:
            raise ValidationError(f"an item of {name} is longer than {item_chars} characters")
    return v


def decode_email(value: bytes | None, max_bytes: int = MAX_EMAIL_BYTES) -> Email:
    """Parse and validate one email event."""
    obj = _load_object(value, max_bytes)
    event_id = _required_str(obj, "event_id")
    ts_s = _required_ts(obj)
    sender = _required_str(obj, "from", 512)
    if obj.get("to") is None:
        raise ValidationError("missing required field 'to'")
    recipients = _str_list(obj, "to", MAX_RECIPIENTS, 512)
    if not recipients:
        raise ValidationError("to must list at least one recipient")
    if any(not r for r in recipients):
        raise ValidationError("to must not contain empty addresses")
    subject = _optional_str(obj, "subject", 4096)
    body = _optional_str(obj, "body", max_bytes)
    if not subject and not body:
        raise ValidationError("an email needs a subject or a body")
    headers_v = obj.get("headers")
    headers: dict[str, str] = {}
    if headers_v is not None:
        if not isinstance(headers_v, dict):
            raise ValidationError(f"headers must be an object, got {type(headers_v).__name__}")
        if len(headers_v) > MAX_HEADERS:
            raise ValidationError(f"headers has more than {MAX_HEADERS} entries")
        for k, hv in headers_v.items():
            if not isinstance(hv, str):
                raise ValidationError(f"header {k[:64]!r} must be a string, got {type(hv).__name__}")
            headers[k.lower()] = hv
    urls = _str_list(obj, "urls", MAX_LIST_ITEMS, 8192)
    att_v = obj.get("attachments")
    attachments: list[dict[str, Any]] = []
    if att_v is not None:
        if not isinstance(att_v, list):
            raise ValidationError(f"attachments must be a list, got {type(att_v).__name__}")
        if len(att_v) > MAX_LIST_ITEMS:
            raise ValidationError(f"attachments has more than {MAX_LIST_ITEMS} items")
        for a in att_v:
            if not isinstance(a, dict):
                raise ValidationError("attachments items must be objects")
            size = a.get("size", 0)
            if isinstance(size, bool) or not isinstance(size, (int, float)) or not math.isfinite(size) or size < 0:
                raise ValidationError("attachment size must be a finite number >= 0")
            for key in ("filename", "content_type"):
                if a.get(key) is not None and not isinstance(a[key], str):
                    raise ValidationError(f"attachment {key} must be a string")
            attachments.append(a)
    return Email(event_id, ts_s, sender, recipients, subject, body, headers, urls, attachments, obj)
